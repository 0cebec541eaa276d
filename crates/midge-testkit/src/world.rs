//! The world: the broker core, its connections, the clients and the network between them, and
//! the journal's disk ([`SimJournal`]), on one virtual clock. [`World::step`] moves everything
//! that can move at the current instant, then advances the clock to the next instant at which
//! anything is due (a group commit of the journal too). Everything is visited in a fixed order
//! (links and clients by number), and all randomness comes from the seed, so a seed replays
//! exactly.

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use midge_broker::core::{Connection, Core};
use midge_broker::{AllowAll, BrokerConfig, BrokerStats, Standalone, Store};
use midge_codec::{ByteStr, QoS, SubscribeProperties, SubscriptionOptions};
use midge_proto::client::{Client, ClientConfig, CloseReason, Event as ClientEvent};
use midge_proto::Message;

use crate::journal::{Durability, SimJournal, SimStore};
use crate::log::{ClientIdx, ClientSpec, CloseKind, ConnNo, Counters, Event, Log, MsgId, Payload};
use crate::net::{Chunk, Pipe};
use crate::rng::Rng;

/// How much a broker connection reads into its buffer at a time.
const READ_LIMIT: usize = 16 * 1024;
/// Rounds of one step before the clock must move on: each round lets what the last one did
/// (a delivery routed, room made) reach the next connection.
const MAX_ROUNDS: usize = 64;
/// A group commit comes this many milliseconds after the change that began it.
const COMMIT_DELAY_MS: (u64, u64) = (0, 5);
/// Now and then the disk is slow: a commit takes this long (milliseconds), ...
const SLOW_COMMIT_MS: (u64, u64) = (20, 300);
/// ... this many times in a thousand.
const SLOW_COMMIT_PER_MILLE: u64 = 20;

/// A crash that waits for the journal to hold changes it has not made durable.
#[derive(Clone, Copy, Debug)]
struct ArmedCrash {
    reset: bool,
    downtime: Duration,
    /// It crashes then at the latest.
    until: Instant,
}

/// A flag the journal's waker sets: the held output of a link may go now.
#[derive(Debug, Default)]
struct WakeFlag(AtomicBool);

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What the broker wrote on one connection and the network has not taken yet: as the tokio
/// driver's write buffer, output waits until the journal has made durable what it answers for
/// (a PUBACK once its message is kept), each stretch marked with the ticket it waits for.
#[derive(Debug)]
struct Outbox {
    buf: BytesMut,
    /// Journal tickets, each with where in `buf` the bytes that wait for it end.
    held: VecDeque<(u64, usize)>,
    /// Bytes at the front of `buf` that wait for nothing.
    free: usize,
    /// Set by the journal when it made something durable; the world looks at `held` again.
    woken: Arc<WakeFlag>,
    waker: Waker,
}

impl Default for Outbox {
    fn default() -> Self {
        let woken = Arc::new(WakeFlag::default());
        Self {
            buf: BytesMut::new(),
            held: VecDeque::new(),
            free: 0,
            waker: Waker::from(woken.clone()),
            woken,
        }
    }
}

impl Outbox {
    /// Marks the output added since the last call as waiting for `ticket` (the connection's
    /// [`Connection::output_ticket`]), unless it need not wait.
    fn hold(&mut self, ticket: u64, connection: &Connection) {
        let end = self.buf.len();
        match self.held.back_mut() {
            Some((t, e)) if *t == ticket => *e = end,
            Some(_) => self.held.push_back((ticket, end)),
            None if ticket == 0 || connection.is_durable(ticket) => self.free = end,
            None => self.held.push_back((ticket, end)),
        }
    }

    /// How many bytes at the front of `buf` may go: those whose tickets are durable. The
    /// journal keeps the waker for the first ticket that is not.
    fn sendable(&mut self, connection: &Connection) -> usize {
        let mut cx = Context::from_waker(&self.waker);
        while let Some(&(ticket, end)) = self.held.front() {
            match connection.poll_durable(ticket, &mut cx) {
                Poll::Ready(Ok(())) => {
                    self.held.pop_front();
                    self.free = self.free.max(end);
                }
                // The simulated journal does not fail: nothing held may ever go then.
                Poll::Ready(Err(_)) => return 0,
                Poll::Pending => return self.free,
            }
        }
        self.free = self.buf.len();
        self.free
    }

    /// Takes the `n` bytes at the front, which may go.
    fn take(&mut self, n: usize) -> Bytes {
        self.free -= n;
        for (_, end) in &mut self.held {
            *end = end.saturating_sub(n);
        }
        self.buf.split_to(n).freeze()
    }

    /// Forgets everything: the connection is gone.
    fn clear(&mut self) {
        self.buf = BytesMut::new();
        self.held.clear();
        self.free = 0;
    }
}

/// A direction of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Client to broker.
    Up,
    /// Broker to client.
    Down,
}

/// The network's shape, drawn per connection from these ranges.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// One-way latency, milliseconds.
    pub latency_ms: (u64, u64),
    /// Bytes in flight or unread per direction before the writer waits.
    pub window: (usize, usize),
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            latency_ms: (1, 20),
            window: (512, 8192),
        }
    }
}

/// One client connection: two pipes and the broker's side of it.
#[derive(Debug)]
struct Link {
    client: ClientIdx,
    conn: ConnNo,
    up: Pipe,
    down: Pipe,
    latency: Duration,
    window: usize,
    broker: Option<Connection>,
    /// The broker's output the network has not taken yet.
    out: Outbox,
    /// The broker's side has ended, and that was logged.
    broker_closed: bool,
    /// When the broker's side ended: it is dropped once it has flushed, or at the close
    /// timeout.
    closed_at: Option<Instant>,
    /// Read from `up`, not yet consumed by the broker.
    rx: BytesMut,
    consumed: u64,
    /// The stream of `up` ended; the broker learns it once it has read what came before.
    up_ended: bool,
    /// Where the client's DISCONNECT ends in `up`, and its reason code.
    disconnect: Option<(u64, u8)>,
    /// A cut scheduled at a byte of one direction's stream.
    cut_at: Option<(Dir, u64)>,
    /// The network dropped the connection without a word to either end.
    silent: bool,
}

/// A simulated client: `midge_proto`'s [`Client`] and what its application remembers.
#[derive(Debug)]
pub struct SimClient {
    /// What it is.
    pub spec: ClientSpec,
    /// Its state machine.
    pub client: Client,
    link: Option<u64>,
    conn: ConnNo,
    rx: BytesMut,
    /// It does nothing at all until then: no reading, no timers, no sending.
    pub frozen_until: Option<Instant>,
    /// It does not read until then.
    pub deaf_until: Option<Instant>,
    next_seq: u32,
    inflight: BTreeMap<u16, MsgId>,
    /// The subscriptions the application wants; made again whenever a session is new.
    pub subs: BTreeMap<String, QoS>,
    /// Reconnect this long after a connection ends, unless the application stays away.
    pub reconnect_after: Option<(u64, u64)>,
    /// The application keeps away until then.
    pub away_until: Option<Instant>,
    /// It received CONNACK on its current connection.
    pub connected: bool,
    /// The client identifier the broker assigned, if it assigned one (5.0).
    pub assigned_id: Option<String>,
}

impl SimClient {
    /// Whether it reads now.
    fn reads(&self, now: Instant) -> bool {
        self.frozen_until.is_none_or(|t| t <= now) && self.deaf_until.is_none_or(|t| t <= now)
    }

    fn runs(&self, now: Instant) -> bool {
        self.frozen_until.is_none_or(|t| t <= now)
    }
}

/// Something scheduled at an instant.
#[derive(Clone, Debug)]
pub(crate) enum Action {
    /// Open a new connection, if the client has none.
    Reconnect(ClientIdx),
    /// Something of the seeded run's (see `sim.rs`).
    Run(crate::sim::Step),
}

/// The broker, its clients and the network, on one virtual clock.
#[derive(Debug)]
pub struct World {
    base: Instant,
    now: Instant,
    config: BrokerConfig,
    /// The disk every broker of the run uses in turn.
    journal: Arc<SimJournal>,
    /// A graceful stop is under way: [`World::finish_stop`] ends it, unless a crash came
    /// first.
    stopping: bool,
    /// See [`World::crash_when_pending`].
    armed_crash: Option<ArmedCrash>,
    /// Draws the journal's commit times and what a crash keeps, apart from everything else so
    /// that the network's draws do not depend on the broker's writes.
    journal_rng: Rng,
    /// When the journal commits next, if changes wait.
    next_commit: Option<Instant>,
    /// How long after the change that began it a commit comes (milliseconds), and how often
    /// (per mille) it takes [`SLOW_COMMIT_MS`] instead.
    commit_delay_ms: (u64, u64),
    slow_commits: u64,
    core: Option<Arc<Core>>,
    links: BTreeMap<u64, Link>,
    next_link: u64,
    /// The clients, by [`ClientIdx`].
    pub clients: Vec<SimClient>,
    /// Everything that happened.
    pub log: Log,
    rng: Rng,
    /// Seeds the broker's shared-subscription choices, so that they replay too.
    seed: u64,
    net: NetConfig,
    actions: BTreeMap<(Instant, u64), Action>,
    next_action: u64,
    /// The last instant a client saw something happen (not counting keepalive).
    pub(crate) last_activity: Instant,
    /// Steps taken.
    pub steps: u64,
    /// The seeded run's state, when a seeded run drives the world.
    pub(crate) driver: Option<crate::sim::Driver>,
}

impl World {
    /// A world with a running broker of `config` on an empty store that journals sessions
    /// (see [`SimJournal`]), and no clients. `seed` decides the network's latencies and
    /// windows, and when the journal commits.
    ///
    /// # Panics
    ///
    /// If `config` is not valid.
    pub fn new(config: BrokerConfig, net: NetConfig, seed: u64) -> Self {
        let now = Instant::now();
        let mut world = Self {
            base: now,
            now,
            config,
            journal: Arc::new(SimJournal::new()),
            stopping: false,
            armed_crash: None,
            journal_rng: Rng::new(seed ^ 0x6a6f_7572_6e61_6c00),
            next_commit: None,
            commit_delay_ms: COMMIT_DELAY_MS,
            slow_commits: SLOW_COMMIT_PER_MILLE,
            core: None,
            links: BTreeMap::new(),
            next_link: 1,
            clients: Vec::new(),
            log: Log::default(),
            rng: Rng::new(seed),
            seed,
            net,
            actions: BTreeMap::new(),
            next_action: 0,
            last_activity: now,
            steps: 0,
            driver: None,
        };
        world.start_broker();
        world
    }

    /// Commits come `low..=high` milliseconds after the change that began them, always (no
    /// slow disk now and then).
    pub fn set_commit_delay(&mut self, low: u64, high: u64) {
        self.commit_delay_ms = (low, high);
        self.slow_commits = 0;
    }

    /// The journal's disk.
    pub fn journal(&self) -> &SimJournal {
        &self.journal
    }

    /// Makes the journal keep its promise as `mode` says: anything but
    /// [`Durability::Honest`] breaks it, to show that the checker notices.
    pub fn set_durability(&mut self, mode: Durability) {
        self.journal.set_durability(mode);
    }

    /// The current virtual instant.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.base
    }

    pub(crate) fn record(&mut self, event: Event) {
        let at = self.elapsed();
        self.log.push(at, event);
    }

    /// Whether a broker is running.
    pub fn broker_running(&self) -> bool {
        self.core.is_some()
    }

    /// The running broker's counters.
    pub fn stats(&self) -> Option<BrokerStats> {
        self.core.as_ref().map(|c| c.stats())
    }

    fn start_broker(&mut self) {
        let store: Arc<dyn Store> = Arc::new(SimStore::new(self.journal.clone()));
        let mut config = self.config.clone();
        // The simulated network's addresses are not loopback: anonymous clients are let in
        // unless the test's configuration says otherwise.
        config.auth.allow_anonymous.get_or_insert(true);
        let core = Core::with_seed(
            config,
            Arc::new(AllowAll),
            store,
            Arc::new(Standalone),
            self.now,
            self.seed,
        )
        .expect("the simulation's broker configuration is valid");
        self.core = Some(core);
    }

    /// Logs the running broker's counters (at the end of a run).
    pub fn log_final_counters(&mut self) {
        self.log_counters();
    }

    fn log_counters(&mut self) {
        if let Some(stats) = self.stats() {
            self.record(Event::Counters(Counters {
                // Waited out, or dropped at once for a congested client: both for want of
                // room in an inbox.
                dropped_inbox_full: stats.dropped_inbox_full + stats.dropped_congested,
                dropped_queue_full: stats.dropped_queue_full,
                dropped_memory_budget: stats.dropped_memory_budget,
                dropped_retained: stats.dropped_retained,
                protocol_errors: stats.protocol_errors,
            }));
        }
    }

    /// Adds a client; it connects when told to.
    ///
    /// # Panics
    ///
    /// If the client's CONNECT cannot be encoded.
    pub fn add_client(&mut self, spec: ClientSpec, config: ClientConfig) -> ClientIdx {
        let client = Client::new(Arc::new(config), self.now).expect("the CONNECT encodes");
        self.log.clients.push(spec.clone());
        self.clients.push(SimClient {
            spec,
            client,
            link: None,
            conn: 0,
            rx: BytesMut::new(),
            frozen_until: None,
            deaf_until: None,
            next_seq: 0,
            inflight: BTreeMap::new(),
            subs: BTreeMap::new(),
            reconnect_after: None,
            away_until: None,
            connected: false,
            assigned_id: None,
        });
        self.clients.len() - 1
    }

    pub(crate) fn schedule(&mut self, at: Instant, action: Action) {
        self.next_action += 1;
        self.actions.insert((at, self.next_action), action);
    }

    /// Drops every scheduled action that `keep` refuses.
    pub(crate) fn unschedule(&mut self, mut keep: impl FnMut(&Action) -> bool) {
        self.actions.retain(|_, a| keep(a));
    }

    /// Whether the client has a connection (accepted or not yet).
    pub fn has_link(&self, c: ClientIdx) -> bool {
        self.clients[c].link.is_some()
    }

    /// Opens a new transport for client `c` and queues its CONNECT. A connection it still
    /// has is given up first, without a word to the broker (as when a client decides its
    /// connection is dead): the broker finds out by itself, or when the new connection takes
    /// the session over.
    pub fn connect(&mut self, c: ClientIdx) {
        if self.clients[c].link.is_some() {
            self.abandon(c);
        }
        let id = self.next_link;
        self.next_link += 1;
        let latency = Duration::from_millis(
            self.rng
                .between(self.net.latency_ms.0, self.net.latency_ms.1),
        );
        let window =
            self.rng
                .between(self.net.window.0 as u64, self.net.window.1 as u64) as usize;
        let peer = SocketAddr::from((
            Ipv4Addr::from(0x0a00_0000 | (id as u32 & 0x00ff_ffff)),
            1883,
        ));
        let client = &mut self.clients[c];
        client.conn += 1;
        client.link = Some(id);
        client.rx.clear();
        client.connected = false;
        let conn = client.conn;
        let mut link = Link {
            client: c,
            conn,
            up: Pipe::new(),
            down: Pipe::new(),
            latency,
            window,
            broker: None,
            out: Outbox::default(),
            broker_closed: false,
            closed_at: None,
            rx: BytesMut::new(),
            consumed: 0,
            up_ended: false,
            disconnect: None,
            cut_at: None,
            silent: false,
        };
        match &self.core {
            Some(core) => link.broker = Some(Connection::new(core, peer, self.now)),
            // Nobody listens: the connection is refused.
            None => link.down.close(self.now, latency),
        }
        self.links.insert(id, link);
        self.clients[c].client.connect(self.now);
        self.record(Event::Connect { client: c, conn });
    }

    /// The client gives up its connection without telling anyone: it sees the connection as
    /// lost, and the network drops whatever the connection still carries, both ways.
    pub fn abandon(&mut self, c: ClientIdx) {
        if let Some(id) = self.clients[c].link {
            self.black_hole_link(id);
        }
        self.clients[c].client.connection_lost();
        self.client_events(c);
        self.clients[c].link = None;
    }

    fn black_hole_link(&mut self, id: u64) {
        let now = self.now;
        if let Some(link) = self.links.get_mut(&id) {
            link.up.break_off(now, link.latency, true);
            link.down.break_off(now, link.latency, true);
            link.silent = true;
            let (client, conn) = (link.client, link.conn);
            self.record(Event::TransportDown { client, conn });
        }
    }

    /// The network between client `c` and the broker goes silent both ways, and nobody is
    /// told: each side finds out from its keepalive.
    pub fn black_hole(&mut self, c: ClientIdx) {
        if let Some(id) = self.clients[c].link {
            self.black_hole_link(id);
        }
    }

    /// Breaks client `c`'s connection now: what is in flight is lost, and both sides learn
    /// of it after the latency (a reset).
    pub fn cut(&mut self, c: ClientIdx) {
        let now = self.now;
        if let Some(link) = self.clients[c].link.and_then(|id| self.links.get_mut(&id)) {
            link.up.break_off(now, link.latency, false);
            link.down.break_off(now, link.latency, false);
            let (client, conn) = (link.client, link.conn);
            self.record(Event::TransportDown { client, conn });
        }
    }

    /// Breaks client `c`'s connection after `bytes` more bytes in direction `dir`: in the
    /// middle of whatever packet those bytes belong to. Whatever is already in flight beyond
    /// that byte is lost.
    pub fn cut_at(&mut self, c: ClientIdx, dir: Dir, bytes: u64) {
        let now = self.now;
        let Some(id) = self.clients[c].link else {
            return;
        };
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        let pipe = match dir {
            Dir::Up => &mut link.up,
            Dir::Down => &mut link.down,
        };
        let in_flight = pipe.held() as u64;
        if bytes < in_flight {
            pipe.truncate_after(bytes as usize, now, link.latency);
            let other = match dir {
                Dir::Up => &mut link.down,
                Dir::Down => &mut link.up,
            };
            other.break_off(now, link.latency, false);
            let (client, conn) = (link.client, link.conn);
            self.record(Event::TransportDown { client, conn });
        } else {
            let at = pipe.sent + (bytes - in_flight);
            link.cut_at = Some((dir, at));
        }
    }

    /// Stalls one direction of client `c`'s connection until `until`.
    pub fn stall(&mut self, c: ClientIdx, dir: Dir, until: Instant) {
        if let Some(link) = self.clients[c].link.and_then(|id| self.links.get_mut(&id)) {
            match dir {
                Dir::Up => link.up.stall(until),
                Dir::Down => link.down.stall(until),
            }
        }
    }

    /// Ends every stall, freeze and deafness now, and tells every client whose connection
    /// went silent that it is gone (as its keepalive would, later).
    pub fn heal(&mut self) {
        for link in self.links.values_mut() {
            link.up.unstall();
            link.down.unstall();
        }
        for c in &mut self.clients {
            c.frozen_until = None;
            c.deaf_until = None;
        }
        for c in 0..self.clients.len() {
            let silent = self.clients[c]
                .link
                .and_then(|id| self.links.get(&id))
                .is_some_and(|l| l.silent);
            if silent {
                self.abandon(c);
            }
        }
    }

    /// The broker crashes: it and every connection are dropped as they are, and the journal
    /// loses what it had not made durable (see [`SimJournal::crash`]). Output held for the
    /// journal never goes. Clients learn of it from a reset (`reset`), or from their
    /// keepalive. Returns how many of the journal's changes the crash lost.
    pub fn crash(&mut self, reset: bool) -> usize {
        self.log_counters();
        self.record(Event::Crash);
        let now = self.now;
        let lost = self.journal.crash(&mut self.journal_rng);
        self.next_commit = None;
        self.stopping = false;
        for link in self.links.values_mut() {
            link.broker = None;
            link.broker_closed = true;
            link.out.clear();
            link.rx.clear();
            link.up.break_off(now, link.latency, true);
            link.down.break_off(now, link.latency, !reset);
            link.silent |= !reset;
        }
        self.core = None;
        lost
    }

    /// The broker crashes (see [`World::crash`]) as soon as its journal holds changes it has
    /// not made durable, or after `within` at the latest; a new one starts `downtime` later.
    /// The crash then comes between a change and its commit, where a crash at a random
    /// instant seldom falls.
    pub fn crash_when_pending(&mut self, reset: bool, downtime: Duration, within: Duration) {
        if self.core.is_some() {
            self.armed_crash = Some(ArmedCrash {
                reset,
                downtime,
                until: self.now + within,
            });
        }
    }

    /// Forgets a crash [`World::crash_when_pending`] armed.
    pub fn disarm_crash(&mut self) {
        self.armed_crash = None;
    }

    /// Crashes the broker if an armed crash's time has come. Returns whether it did.
    fn fire_armed_crash(&mut self) -> bool {
        let Some(armed) = self.armed_crash else {
            return false;
        };
        if self.core.is_none() {
            self.armed_crash = None;
            return false;
        }
        if !self.journal.has_pending() && self.now < armed.until {
            return false;
        }
        self.armed_crash = None;
        let _ = self.crash(armed.reset);
        self.schedule(
            self.now + armed.downtime,
            Action::Run(crate::sim::Step::Restart),
        );
        true
    }

    /// Starts a broker on the store of the last one: what its journal made durable.
    pub fn restart(&mut self) {
        if self.core.is_none() {
            self.start_broker();
            self.record(Event::Start);
        }
    }

    /// Begins a graceful stop: every connection is told to shut down. Step until
    /// [`World::connections`] is 0, then [`World::finish_stop`].
    pub fn begin_stop(&mut self) {
        if let Some(core) = &self.core {
            core.stop();
            self.stopping = true;
            self.record(Event::Stop);
        }
    }

    /// Whether a graceful stop is under way (begun, not finished, no crash since).
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// Ends a graceful stop: the broker waits until the journal has made every change
    /// durable, and then it and whatever connections did not close are dropped.
    pub fn finish_stop(&mut self) {
        if !std::mem::take(&mut self.stopping) {
            return;
        }
        let now = self.now;
        // Connections still open lose their transport now, as a stopping broker closes its
        // sockets: their sessions go offline first.
        let ids: Vec<u64> = self.links.keys().copied().collect();
        for &id in &ids {
            if let Some(conn) = self.links.get_mut(&id).and_then(|l| l.broker.as_mut()) {
                if !conn.is_closed() {
                    conn.connection_lost(now);
                }
            }
        }
        // Deliveries that waited for room go to the offline sessions the connections left,
        // as when the tokio broker shuts down.
        if let Some(core) = &self.core {
            core.flush_detached();
        }
        self.journal.commit();
        self.next_commit = None;
        for &id in &ids {
            self.broker_transmit(id);
        }
        self.log_counters();
        for link in self.links.values_mut() {
            if link.broker.take().is_some() {
                link.broker_closed = true;
                link.down.break_off(now, link.latency, false);
            }
        }
        self.core = None;
    }

    /// Bytes written so far in direction `dir` of client `c`'s current connection.
    pub fn bytes_sent(&self, c: ClientIdx, dir: Dir) -> u64 {
        self.clients[c]
            .link
            .and_then(|id| self.links.get(&id))
            .map_or(0, |l| match dir {
                Dir::Up => l.up.sent,
                Dir::Down => l.down.sent,
            })
    }

    /// Steps until `done` holds, at most `max_steps` steps. Returns whether it held.
    pub fn run_until(&mut self, max_steps: u64, mut done: impl FnMut(&Self) -> bool) -> bool {
        for _ in 0..max_steps {
            if done(self) {
                return true;
            }
            if !self.step() {
                return done(self);
            }
        }
        done(self)
    }

    /// Ends the log and checks it.
    pub fn finish(&mut self) -> crate::check::Report {
        self.log_final_counters();
        self.record(Event::End);
        crate::check::check(&self.log)
    }

    /// Broker connections still open.
    pub fn connections(&self) -> usize {
        self.links
            .values()
            .filter(|l| l.broker.as_ref().is_some_and(|b| !b.is_closed()))
            .count()
    }

    /// The clock jumps ahead by `by`, as if the whole process had been paused.
    pub fn jump(&mut self, by: Duration) {
        self.record(Event::ClockJump { by });
        self.now += by;
    }

    /// Publishes from client `c` (queued in its client if not connected). Returns the
    /// message, or `None` if the client refused it (queue full, say).
    pub fn publish(
        &mut self,
        c: ClientIdx,
        topic: &str,
        qos: QoS,
        retain: bool,
        empty: bool,
        expiry: Option<u32>,
    ) -> Option<MsgId> {
        let client = &mut self.clients[c];
        let id = MsgId {
            publisher: c,
            seq: client.next_seq,
        };
        let payload = if empty {
            Vec::new()
        } else {
            Payload::Message(id).encode()
        };
        let mut message = Message::new(topic.to_owned(), payload, qos);
        message.retain = retain;
        message.properties.message_expiry_interval = expiry;
        let packet_id = client.client.publish(message).ok()?;
        client.next_seq += 1;
        if let Some(pid) = packet_id {
            client.inflight.insert(pid.get(), id);
        }
        self.record(Event::Publish {
            msg: id,
            topic: topic.to_owned(),
            qos,
            retain,
            empty,
            expiry,
        });
        Some(id)
    }

    /// Subscribes client `c` to `filters`, and remembers them as wanted.
    pub fn subscribe(&mut self, c: ClientIdx, filters: &[(String, QoS)]) {
        for (f, q) in filters {
            self.clients[c].subs.insert(f.clone(), *q);
        }
        self.send_subscribe(c, filters);
    }

    fn send_subscribe(&mut self, c: ClientIdx, filters: &[(String, QoS)]) {
        if filters.is_empty() {
            return;
        }
        let request = filters
            .iter()
            .map(|(f, q)| (ByteStr::from(f.clone()), SubscriptionOptions::qos(*q)))
            .collect();
        if let Ok(packet) = self.clients[c]
            .client
            .subscribe(request, SubscribeProperties::default())
        {
            self.record(Event::Subscribe {
                client: c,
                packet: packet.get(),
                filters: filters.to_vec(),
            });
        }
    }

    /// Unsubscribes client `c` from `filter`.
    pub fn unsubscribe(&mut self, c: ClientIdx, filter: &str) {
        self.clients[c].subs.remove(filter);
        let filters = vec![ByteStr::from(filter.to_owned())];
        if let Ok(packet) = self.clients[c]
            .client
            .unsubscribe(filters, Default::default())
        {
            self.record(Event::Unsubscribe {
                client: c,
                packet: packet.get(),
                filters: vec![filter.to_owned()],
            });
        }
    }

    /// Client `c` disconnects with `code` (0x00, or 0x04 to have its will published).
    pub fn disconnect(&mut self, c: ClientIdx, code: u8) {
        let client = &mut self.clients[c];
        if client.link.is_none() || !client.client.is_connected() {
            return;
        }
        let conn = client.conn;
        client.client.disconnect(midge_codec::ReasonCode(code));
        self.record(Event::Disconnect {
            client: c,
            conn,
            code,
        });
        self.client_events(c);
    }

    /// Runs one step: what is due now, then the clock moves to the next instant anything is
    /// due. Returns `false` when nothing at all is pending.
    pub fn step(&mut self) -> bool {
        self.steps += 1;
        // Only what was due when the step began, and nothing after a clock jump: the rest
        // waits for the next step, after everything has run once at the new time.
        let began = self.now;
        while let Some(entry) = self.actions.first_entry() {
            if entry.key().0 > began || self.now != began {
                break;
            }
            let action = entry.remove();
            self.act(action);
        }
        for _ in 0..MAX_ROUNDS {
            let moved = self.round();
            // Between the round that wrote a change and the one that commits it.
            let crashed = self.fire_armed_crash();
            if !moved && !crashed {
                break;
            }
        }
        self.advance()
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Reconnect(c) => {
                let client = &self.clients[c];
                let away = client.away_until.is_some_and(|t| t > self.now);
                if client.link.is_none() && !away {
                    self.connect(c);
                }
            }
            Action::Run(step) => crate::sim::act(self, step),
        }
    }

    /// One round: network deliveries, wake-ups, timers, events, transmits. Returns whether
    /// anything moved.
    fn round(&mut self) -> bool {
        let now = self.now;
        let mut moved = self.commit_if_due();
        if let Some(core) = &self.core {
            // Cheap when nothing is due; it also offers the broker's own publishes (wills)
            // waiting for room again.
            core.handle_timeout(now);
        }
        let ids: Vec<u64> = self.links.keys().copied().collect();
        for &id in &ids {
            moved |= self.broker_side(id);
        }
        for c in 0..self.clients.len() {
            moved |= self.client_side(c);
        }
        for &id in &ids {
            moved |= self.broker_transmit(id);
        }
        // A link lives while either end holds it.
        let attached: Vec<u64> = self.clients.iter().filter_map(|c| c.link).collect();
        self.links
            .retain(|id, l| l.broker.is_some() || attached.contains(id));
        moved | self.schedule_commit()
    }

    /// Commits the journal if its time has come. Returns whether it made anything durable.
    fn commit_if_due(&mut self) -> bool {
        match self.next_commit {
            Some(at) if at <= self.now => {
                self.next_commit = None;
                self.journal.commit()
            }
            _ => false,
        }
    }

    /// Schedules the next group commit, if changes wait and none is scheduled: a few
    /// milliseconds on, now and then longer (a slow disk). Returns whether it is due at once.
    fn schedule_commit(&mut self) -> bool {
        if self.next_commit.is_some() || !self.journal.has_pending() {
            return false;
        }
        let rng = &mut self.journal_rng;
        let delay = if rng.chance(self.slow_commits) {
            rng.between(SLOW_COMMIT_MS.0, SLOW_COMMIT_MS.1)
        } else {
            rng.between(self.commit_delay_ms.0, self.commit_delay_ms.1)
        };
        self.next_commit = Some(self.now + Duration::from_millis(delay));
        delay == 0
    }

    /// The broker's side of one connection: input, wake-up, timer.
    fn broker_side(&mut self, id: u64) -> bool {
        let now = self.now;
        let Some(link) = self.links.get_mut(&id) else {
            return false;
        };
        let Some(conn) = link.broker.as_mut() else {
            return false;
        };
        let mut moved = false;
        conn.handle_wakeup(now);
        if conn.poll_timeout().is_some_and(|t| t <= now) {
            conn.handle_timeout(now);
            moved = true;
        }
        while !conn.is_closed() && conn.wants_input() {
            let mut read = false;
            while link.rx.len() < READ_LIMIT && !link.up_ended {
                match link.up.take(now, READ_LIMIT - link.rx.len()) {
                    Some(Chunk::Data(bytes)) => {
                        link.rx.extend_from_slice(&bytes);
                        read = true;
                    }
                    Some(Chunk::Close) => link.up_ended = true,
                    None => break,
                }
            }
            let before = link.rx.len();
            if before > 0 {
                conn.handle_input(now, &mut link.rx);
            }
            let consumed = before - link.rx.len();
            link.consumed += consumed as u64;
            moved |= read || consumed > 0;
            if link.up_ended && conn.wants_input() && !conn.is_closed() {
                // Everything before the end has been read: now the broker sees it.
                conn.connection_lost(now);
                moved = true;
                break;
            }
            if !read && consumed == 0 {
                break;
            }
        }
        moved
    }

    /// The broker's output on one connection, within the window, once the journal has made
    /// durable what it answers for; and its end.
    fn broker_transmit(&mut self, id: u64) -> bool {
        let now = self.now;
        let close_timeout = Duration::from_millis(self.config.limits.close_timeout_ms);
        let Some(link) = self.links.get_mut(&id) else {
            return false;
        };
        let Some(conn) = link.broker.as_mut() else {
            return false;
        };
        let mut moved = false;
        let before = link.out.buf.len();
        let mut drained = false;
        // Output waiting for the journal counts against the window too, as the tokio driver's
        // write buffer does against its limit.
        while link.out.buf.len() < link.down.room(link.window) {
            if !conn.poll_transmit(now, &mut link.out.buf) {
                drained = true;
                break;
            }
        }
        let produced = link.out.buf.len() > before;
        link.out.hold(conn.output_ticket(), conn);
        let woken = link.out.woken.0.swap(false, Ordering::Relaxed);
        if produced || woken || link.out.held.is_empty() {
            let n = link.out.sendable(conn);
            if n > 0 {
                moved = true;
                let bytes = link.out.take(n);
                if send(link, Dir::Down, now, bytes) {
                    let (client, conn) = (link.client, link.conn);
                    self.record(Event::TransportDown { client, conn });
                }
            }
        }
        moved |= produced;
        let Some(link) = self.links.get_mut(&id) else {
            return moved;
        };
        let closed = link.broker.as_ref().is_some_and(Connection::is_closed);
        if closed {
            let closed_at = *link.closed_at.get_or_insert(now);
            if !link.broker_closed {
                link.broker_closed = true;
                let disconnect = link
                    .disconnect
                    .filter(|(end, _)| link.consumed >= *end)
                    .map(|(_, code)| code);
                let (client, conn_no) = (link.client, link.conn);
                self.record(Event::BrokerClosed {
                    client,
                    conn: conn_no,
                    disconnect,
                });
                moved = true;
            }
            let Some(link) = self.links.get_mut(&id) else {
                return moved;
            };
            // Flushed: nothing more to make, nothing held back.
            let flushed = drained && link.out.buf.is_empty();
            if flushed || link.down.is_closed() || now >= closed_at + close_timeout {
                link.broker = None;
                link.out.clear();
                link.down.close(now, link.latency);
                moved = true;
            }
        }
        moved
    }

    /// One client: input, timer, events, output.
    fn client_side(&mut self, c: ClientIdx) -> bool {
        let now = self.now;
        if !self.clients[c].runs(now) {
            return false;
        }
        let mut moved = false;
        let client = &mut self.clients[c];
        if let Some(id) = client.link {
            if client.reads(now) {
                let mut ended = false;
                if let Some(link) = self.links.get_mut(&id) {
                    while let Some(chunk) = link.down.take(now, usize::MAX) {
                        moved = true;
                        match chunk {
                            Chunk::Data(bytes) => client.rx.extend_from_slice(&bytes),
                            Chunk::Close => {
                                ended = true;
                                break;
                            }
                        }
                    }
                }
                if !client.rx.is_empty() {
                    client.client.handle_bytes(now, &mut client.rx);
                }
                if ended {
                    client.client.connection_lost();
                }
            }
        }
        if client.client.poll_timeout().is_some_and(|t| t <= now) {
            client.client.handle_timeout(now);
            moved = true;
        }
        moved |= self.client_events(c);
        moved |= self.client_transmit(c);
        moved
    }

    fn client_transmit(&mut self, c: ClientIdx) -> bool {
        let now = self.now;
        let client = &mut self.clients[c];
        let Some(link) = client.link.and_then(|id| self.links.get_mut(&id)) else {
            return false;
        };
        let mut buf = BytesMut::new();
        while buf.len() < link.up.room(link.window) {
            if !client.client.poll_transmit(now, &mut buf) {
                break;
            }
        }
        if buf.is_empty() {
            return false;
        }
        if send(link, Dir::Up, now, buf.freeze()) {
            let (client, conn) = (link.client, link.conn);
            self.record(Event::TransportDown { client, conn });
        }
        true
    }

    /// Handles client `c`'s events: logs them, and does what its application does.
    fn client_events(&mut self, c: ClientIdx) -> bool {
        let mut moved = false;
        while let Some(event) = self.clients[c].client.poll_event() {
            moved = true;
            self.last_activity = self.now;
            let conn = self.clients[c].conn;
            match event {
                ClientEvent::Connected(ack) => {
                    self.clients[c].connected = true;
                    if let Some(id) = &ack.properties.assigned_client_identifier {
                        self.clients[c].assigned_id = Some(id.as_str().to_owned());
                    }
                    self.record(Event::Connected {
                        client: c,
                        conn,
                        session_present: ack.session_present,
                    });
                    if !ack.session_present {
                        let subs: Vec<(String, QoS)> = self.clients[c]
                            .subs
                            .iter()
                            .map(|(f, q)| (f.clone(), *q))
                            .collect();
                        // One SUBSCRIBE per filter, as an application would make them.
                        for sub in subs {
                            self.send_subscribe(c, &[sub]);
                        }
                    }
                }
                ClientEvent::Message(m) => {
                    self.record(Event::Received {
                        client: c,
                        topic: m.topic.as_str().to_owned(),
                        payload: Payload::decode(&m.payload),
                        qos: m.qos,
                        retain: m.retain,
                        expiry: m.properties.message_expiry_interval,
                    });
                }
                ClientEvent::Published {
                    packet_id,
                    reason_code,
                } => {
                    if let Some(msg) = self.clients[c].inflight.remove(&packet_id.get()) {
                        self.record(Event::Published {
                            msg,
                            code: reason_code.0,
                        });
                    }
                }
                ClientEvent::Subscribed {
                    packet_id,
                    reason_codes,
                } => {
                    self.record(Event::Subscribed {
                        client: c,
                        packet: packet_id.get(),
                        codes: reason_codes.iter().map(|r| r.0).collect(),
                    });
                }
                ClientEvent::Unsubscribed { packet_id, .. } => {
                    self.record(Event::Unsubscribed {
                        client: c,
                        packet: packet_id.get(),
                    });
                }
                ClientEvent::Closed(reason) => {
                    self.clients[c].connected = false;
                    let reason = match reason {
                        CloseReason::DisconnectedByClient => CloseKind::Disconnected,
                        CloseReason::DisconnectedByServer(r) => CloseKind::ServerDisconnect(r.0),
                        CloseReason::ConnectionLost => CloseKind::ConnectionLost,
                        CloseReason::ResponseTimeout => CloseKind::Timeout,
                        CloseReason::ProtocolViolation(r) => CloseKind::ProtocolViolation(r.0),
                        CloseReason::Refused(r) => CloseKind::Rejected(r.0),
                        _ => CloseKind::ProtocolViolation(0),
                    };
                    self.record(Event::Closed {
                        client: c,
                        conn,
                        reason,
                    });
                    self.close_transport(c, reason == CloseKind::Disconnected);
                }
                _ => {}
            }
        }
        moved
    }

    /// The client's connection ended: it flushes what it has (a DISCONNECT) and closes its
    /// side of the transport, then schedules its next connection.
    fn close_transport(&mut self, c: ClientIdx, disconnected: bool) {
        let now = self.now;
        let client = &mut self.clients[c];
        let mut broke = None;
        if let Some(link) = client.link.take().and_then(|id| self.links.get_mut(&id)) {
            let mut buf = BytesMut::new();
            while client.client.poll_transmit(now, &mut buf) {}
            let code = if disconnected {
                last_disconnect_code(&buf, client.spec.version)
            } else {
                None
            };
            // Only a DISCONNECT the network took can reach the broker.
            let open = !link.up.is_closed();
            if send(link, Dir::Up, now, buf.freeze()) {
                broke = Some((link.client, link.conn));
            } else if let Some(code) = code.filter(|_| open) {
                link.disconnect = Some((link.up.sent, code));
            }
            link.up.close(now, link.latency);
        }
        if let Some((client, conn)) = broke {
            self.record(Event::TransportDown { client, conn });
        }
        let (reconnect, away) = (self.clients[c].reconnect_after, self.clients[c].away_until);
        if let Some((low, high)) = reconnect {
            let at = now + Duration::from_millis(self.rng.between(low, high));
            let at = away.map_or(at, |t| t.max(at));
            self.schedule(at, Action::Reconnect(c));
        }
    }

    /// Advances the clock to the next instant anything is due. Returns `false` when nothing
    /// is pending at all.
    fn advance(&mut self) -> bool {
        let now = self.now;
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        consider(self.actions.keys().next().map(|(t, _)| *t));
        consider(self.next_commit);
        consider(self.armed_crash.map(|a| a.until));
        if let Some(core) = &self.core {
            consider(core.poll_timeout());
        }
        let close_timeout = Duration::from_millis(self.config.limits.close_timeout_ms);
        for link in self.links.values() {
            if let Some(conn) = &link.broker {
                consider(conn.poll_timeout());
                if conn.wants_input() && !conn.is_closed() {
                    consider(link.up.next_due());
                }
                consider(link.closed_at.map(|t| t + close_timeout));
            }
        }
        for client in &self.clients {
            if let Some(t) = client.frozen_until.filter(|t| *t > now) {
                consider(Some(t));
                continue;
            }
            consider(client.deaf_until.filter(|t| *t > now));
            consider(client.client.poll_timeout());
            if client.reads(now) {
                if let Some(link) = client.link.and_then(|id| self.links.get(&id)) {
                    consider(link.down.next_due());
                }
            }
        }
        match next {
            None => false,
            Some(t) if t > now => {
                self.now = t;
                true
            }
            // Due now but nothing moved: let a millisecond pass.
            Some(_) => {
                self.now += Duration::from_millis(1);
                true
            }
        }
    }
}

/// Writes to one direction of a link, breaking it at a scheduled byte. Returns whether it
/// broke.
fn send(link: &mut Link, dir: Dir, now: Instant, mut data: Bytes) -> bool {
    let latency = link.latency;
    let (pipe, other) = match dir {
        Dir::Up => (&mut link.up, &mut link.down),
        Dir::Down => (&mut link.down, &mut link.up),
    };
    if let Some((cut_dir, at)) = link.cut_at {
        if cut_dir == dir && pipe.sent + data.len() as u64 >= at {
            data.truncate(at.saturating_sub(pipe.sent) as usize);
            pipe.send(now, latency, data);
            pipe.close(now, latency);
            other.break_off(now, latency, false);
            link.cut_at = None;
            return true;
        }
    }
    pipe.send(now, latency, data);
    false
}

/// The reason code of the DISCONNECT at the end of `buf`, if one is there (3.x: 0).
fn last_disconnect_code(buf: &[u8], version: midge_codec::ProtocolVersion) -> Option<u8> {
    let mut bytes = BytesMut::from(buf);
    let mut code = None;
    while let Ok(Some(packet)) = midge_codec::Packet::decode(&mut bytes, version, u32::MAX) {
        code = match packet {
            midge_codec::Packet::Disconnect(d) => Some(d.reason_code.0),
            _ => None,
        };
    }
    code
}
