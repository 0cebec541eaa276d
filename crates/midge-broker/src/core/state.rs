//! The broker's state, shared by every connection: the subscription index, the client
//! registry, routing, retained messages, and the lifecycle of offline sessions (expiry,
//! delayed wills). No clock is read here and nothing waits: the time comes in as an argument,
//! and deliveries that must wait for room come back as values ([`Blocked`]).
//!
//! An offline session's deadlines (its delayed will and its expiry) are entries in one
//! [`Timers`] queue for the whole broker, not a task each. The session's
//! [`SlotState::Offline`] keeps their keys, and whatever ends that state removes them: the
//! client coming back, or the session ending. So the queue holds at most two entries per
//! offline session, bounded by `limits.max_sessions`, and a deadline 136 years ahead costs
//! nothing once its client is back. The driver sleeps until [`Core::poll_timeout`] and calls
//! [`Core::handle_timeout`].

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use midge_codec::{ByteStr, QoS, ReasonCode, SubscriptionId, SubscriptionOptions, Will};
use midge_proto::server::ServerConfig;
use midge_proto::session::{Delivery, Session};
use midge_proto::splitmix64;
use midge_proto::Message;
use midge_topic::{Match, SubscriptionIndex, TopicFilter, TopicName};
use smallvec::SmallVec;

use super::handover::{Handover, TakeOver};
use super::inbox::{Inbox, InboxLimits, QueueUse, SendError};
use super::live::LiveLimits;
use super::timers::{TimerKey, Timers};
use super::verify::{VerificationJob, Verifications};
use crate::auth::FileAuth;
use crate::config::{BrokerConfig, ConfigError, SharedStrategy};
use crate::hooks::{ClientInfo, Hooks};
use crate::stats::{BrokerStats, Counters};
use crate::store::{
    lock, Change, Cluster, Journal, RestoredMessage, RestoredSession, Retained, SessionRecord,
    Store,
};

/// Where a client's messages go.
#[derive(Debug)]
pub(crate) enum SlotState {
    /// A connection owns the session; deliveries go to its inbox.
    Online {
        conn: u64,
        /// Also where a connecting client with the same identifier asks for the session.
        inbox: Arc<Inbox>,
    },
    /// The client is away; deliveries are queued in the session.
    Offline {
        session: Box<Session>,
        generation: u64,
        will: Option<Box<PendingWill>>,
        /// The session's expiry in [`Core`]'s timers; `None` for a session that never
        /// expires.
        expiry: Option<TimerKey>,
        /// The client as it last connected, whose read access decides what is queued for it
        /// while it is away; `None` for a session restored from the store, whose queue is
        /// checked when it resumes.
        reader: Option<Arc<ClientInfo>>,
        /// Messages queued in the journal rather than in `session` (a journaled session's
        /// queue lives on disk while it is offline): they cost disk, not memory.
        on_disk: QueueUse,
    },
    /// Just created in the registry, with no session yet.
    Vacant,
    /// Removed from the registry; a connecting client must look again.
    Dead,
}

/// A will waiting for its delay.
#[derive(Debug)]
pub(crate) struct PendingWill {
    pub(crate) will: Will,
    pub(crate) info: ClientInfo,
    /// When it is published, in [`Core`]'s timers.
    pub(crate) timer: TimerKey,
}

/// What an offline session's deadline does when it comes: only to the session of
/// `generation`, so that a deadline taken just as its client came back never acts on the
/// client's next session.
#[derive(Debug)]
struct Deadline {
    slot: Arc<Slot>,
    generation: u64,
    kind: DeadlineKind,
}

#[derive(Clone, Copy, Debug)]
enum DeadlineKind {
    /// Publish the delayed will [MQTT-3.1.2-8].
    Will,
    /// End the session [MQTT-4.1.0-2].
    Expiry,
}

/// One client identifier's routing target, stable while its session exists.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) client_id: ByteStr,
    pub(crate) state: Mutex<SlotState>,
    /// Set when a delivery waited the whole backpressure timeout for room in this client's
    /// inbox: later deliveries are dropped at once instead of waiting again, until
    /// the inbox takes one.
    pub(crate) congested: AtomicBool,
    /// The session is persistent and the store journals it: its QoS 1 and 2 deliveries are
    /// written to the journal as they are queued.
    pub(crate) journaled: AtomicBool,
    /// The journal holds a record of this client (a persistent session, or a will), which
    /// must be removed when the session ends.
    pub(crate) recorded: AtomicBool,
    /// Deliveries tagged below this were read back from the journal into the session when
    /// its client returned (0: never). One that still comes through an inbox, or is offered
    /// again, is a copy of what the session holds: it is dropped, and writes nothing to the
    /// journal (a Finished would delete the original's row).
    pub(crate) floor: AtomicU64,
}

impl Slot {
    /// Whether a delivery tagged `tag` is a copy of one read back into the session.
    pub(crate) fn holds_copy_of(&self, tag: u64) -> bool {
        // Acquire: a publisher's thread reads it without the slot's lock, after the
        // returning connection raised it under that lock (Release).
        tag != 0 && tag < self.floor.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl Slot {
    pub(crate) fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_online(&self) -> bool {
        matches!(*self.lock(), SlotState::Online { .. })
    }
}

/// A slot in the registry, hashed and compared by its client identifier: the entry is one
/// pointer, where a map would keep a second copy of the identifier beside it.
#[derive(Clone, Debug)]
pub(crate) struct Registered(pub(crate) Arc<Slot>);

impl Registered {
    /// The slot of `client_id`, made vacant if the client has none.
    // The key is hashed by the slot's client identifier, which never changes; the slot's
    // interior mutability is its state, which the hash does not see.
    #[allow(clippy::mutable_key_type)]
    /// The slot of `client_id`, added if the registry has none and holds fewer than
    /// `max_sessions` slots; `None` when it is full.
    pub(crate) fn find_or_add(
        registry: &mut HashSet<Self>,
        client_id: &ByteStr,
        max_sessions: usize,
    ) -> Option<Arc<Slot>> {
        if let Some(Self(slot)) = registry.get(client_id) {
            return Some(slot.clone());
        }
        if registry.len() >= max_sessions {
            return None;
        }
        let slot = Arc::new(Slot {
            client_id: client_id.clone(),
            state: Mutex::new(SlotState::Vacant),
            congested: AtomicBool::new(false),
            journaled: AtomicBool::new(false),
            recorded: AtomicBool::new(false),
            floor: AtomicU64::new(0),
        });
        registry.insert(Self(slot.clone()));
        Some(slot)
    }
}

impl PartialEq for Registered {
    fn eq(&self, other: &Self) -> bool {
        self.0.client_id == other.0.client_id
    }
}

impl Eq for Registered {}

impl Hash for Registered {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `ByteStr` hashes, so that lookups by `&ByteStr` find the entry.
        self.0.client_id.hash(state);
    }
}

impl Borrow<ByteStr> for Registered {
    fn borrow(&self) -> &ByteStr {
        &self.0.client_id
    }
}

/// One subscription in the index, keyed by client identifier.
#[derive(Clone, Debug)]
pub(crate) struct Sub {
    pub(crate) options: SubscriptionOptions,
    pub(crate) id: Option<SubscriptionId>,
    pub(crate) slot: Arc<Slot>,
}

/// A routing target collected under the index read lock.
struct Target {
    slot: Arc<Slot>,
    qos: QoS,
    rap: bool,
    id: Option<SubscriptionId>,
    shared: bool,
}

/// What routing one message did.
#[derive(Debug, Default)]
pub(crate) struct Routed {
    /// Clients the message was queued for.
    pub(crate) matched: usize,
    /// QoS 1 and 2 deliveries that were refused: a full offline queue, or the memory budget.
    pub(crate) refused: usize,
    /// Deliveries waiting for room in a connected client's inbox: offer them again
    /// ([`Core::offer`]) as room is made, until the backpressure timeout, before acknowledging
    /// the publish.
    pub(crate) blocked: Vec<Blocked>,
    /// Something was written to the journal for this message (a delivery to a persistent
    /// session, the retained value): its acknowledgement waits until that is durable.
    pub(crate) journaled: bool,
}

/// A delivery for a connected client whose inbox was full. Its bytes stay reserved against
/// the memory budget until it is sent or dropped.
#[derive(Debug)]
pub(crate) struct Blocked {
    pub(crate) slot: Arc<Slot>,
    inbox: Arc<Inbox>,
    pub(crate) delivery: Delivery,
    /// The inbox's [`Inbox::room_epoch`] when the delivery was last refused.
    epoch: u64,
}

impl Blocked {
    /// Whether the delivery waits for room in `inbox`.
    pub(crate) fn is_for(&self, inbox: &Arc<Inbox>) -> bool {
        Arc::ptr_eq(&self.inbox, inbox)
    }

    /// Ready once the inbox made room since the delivery was refused, or closed; otherwise
    /// registers the task to be woken then.
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.inbox.poll_room(self.epoch, cx)
    }
}

/// A delivery of a publish from inside the broker (a will, `$SYS`, [`Core::publish`]) that
/// waits for room in a connected client's inbox, until `until`.
#[derive(Debug)]
struct Detached {
    blocked: Blocked,
    until: Instant,
}

/// The outcome of handing one delivery to one client.
enum Handed {
    Queued,
    Refused,
    /// The client's session has ended.
    Gone,
    Blocked(Blocked),
}

/// The outcome of offering a blocked delivery again ([`Core::offer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Offered {
    Queued,
    /// Refused by a limit, which counted it.
    Refused,
    /// The client's session ended meanwhile: nobody to deliver to.
    Gone,
}

/// Routing targets of one publish held on the stack: a publish to this many clients or fewer
/// allocates nothing to find them.
const INLINE_TARGETS: usize = 4;

const RR_SLOTS: usize = 64;

/// The broker without its runtime: the state every connection shares and the decisions made
/// on it. It reads no clock (every call that needs the time takes it), spawns nothing and does
/// no I/O, so a driver can run it on any runtime, or a simulation on a virtual clock.
///
/// Routing runs on the publisher's thread: many connections publish at once, under a
/// read-mostly lock of the subscription index and one lock per receiving client.
pub struct Core {
    /// The configuration the broker started with. The limits that may change while it runs
    /// are read from `live` instead.
    pub(crate) config: BrokerConfig,
    pub(crate) live: LiveLimits,
    pub(crate) server_config: Arc<ServerConfig>,
    /// What bounds every connection's inbox.
    pub(crate) inbox_limits: InboxLimits,
    pub(crate) hooks: Arc<dyn Hooks>,
    /// The broker's own rules from its configuration, asked in front of `hooks`' user part.
    pub(crate) file_auth: Arc<FileAuth>,
    /// The library user's hooks alone, for the paths that ask `file_auth` themselves (and
    /// remember its answers).
    pub(crate) user_hooks: Arc<dyn Hooks>,
    /// Password checks waiting for a thread.
    pub(crate) verifications: Verifications,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) cluster: Arc<dyn Cluster>,
    pub(crate) counters: Counters,
    /// Whether the store has a journal (read on every connection's hot path, where asking
    /// the store would be a virtual call).
    pub(crate) journaled: bool,
    /// Read-mostly: every publish takes the read lock once; SUBSCRIBE and UNSUBSCRIBE take
    /// the write lock for one trie walk.
    pub(crate) index: RwLock<SubscriptionIndex<ByteStr, Sub>>,
    /// Every client's slot, found by client identifier. Locked on CONNECT, close and expiry,
    /// never per publish.
    pub(crate) registry: Mutex<HashSet<Registered>>,
    round_robin: [AtomicUsize; RR_SLOTS],
    random: AtomicU64,
    /// Seeds the shared-subscription choices (round robin's counters, sticky members and
    /// random picks), so that a simulation given the same seed makes the same choices.
    seed: u64,
    pub(crate) started: Instant,
    pub(crate) next_conn: AtomicU64,
    /// Becomes true when the broker stops: offline sessions' deadlines stop firing then, so
    /// that a stopped broker never expires a session in a store a new broker has taken over.
    stopping: AtomicBool,
    /// Every offline session's delayed will and expiry. Locked after the registry and a
    /// slot, never before: nothing else is locked while this is held.
    timers: Mutex<Timers<Deadline>>,
    /// Deliveries of publishes from inside the broker waiting for room. Locked alone.
    detached: Mutex<Vec<Detached>>,
    /// The driver's waker, woken when [`Core::poll_timeout`] moves earlier.
    timers_changed: AtomicWaker,
    /// [`Core::poll_timeout`] moved earlier since the driver last looked.
    timers_moved: AtomicBool,
    /// Each listener's name for the admin view, with the port it is bound to; set by the
    /// driver once it is (until then, the configured addresses are used).
    pub(crate) listener_names: std::sync::OnceLock<Vec<String>>,
    /// The state of each configured bridge, in the configuration's order.
    pub(crate) bridges: Vec<Arc<crate::bridge::BridgeStatus>>,
    /// Every open connection, by connection number: how shutdown reaches them, and what the
    /// admin view lists.
    connections: Mutex<HashMap<u64, OpenConnection>>,
    /// What the store holds in retained messages, checked against the retained limits. Every
    /// retained write goes through [`Core::set_retained`] under this lock, so that the
    /// figures and the store agree.
    retained_usage: Mutex<RetainedUsage>,
}

/// An open connection, as [`Core::stop`] and the admin view find it.
#[derive(Debug)]
pub(crate) struct OpenConnection {
    pub(crate) inbox: Arc<Inbox>,
    /// Its listener, by index.
    pub(crate) listener: u16,
    /// Its client, once the CONNECT is accepted.
    pub(crate) client: Option<Arc<ClientView>>,
}

/// A connected client, as the admin view shows it. Made when its CONNECT is accepted; only
/// `in_flight` changes afterwards.
#[derive(Debug)]
pub(crate) struct ClientView {
    /// Where its messages go.
    pub(crate) slot: Arc<Slot>,
    pub(crate) info: ClientInfo,
    /// The Keep Alive in effect, in seconds (0: none).
    pub(crate) keep_alive: u16,
    pub(crate) clean_start: bool,
    pub(crate) connected_at: Instant,
    /// Messages sent and not yet acknowledged, as the connection last reported.
    pub(crate) in_flight: std::sync::atomic::AtomicU32,
    /// The session's own drop counts (expired, too large) already added to the broker's.
    /// Only the connection touches them.
    pub(crate) expired_counted: AtomicU64,
    pub(crate) too_large_counted: AtomicU64,
}

/// Retained messages kept, and the bytes they hold.
#[derive(Debug, Default)]
struct RetainedUsage {
    messages: usize,
    bytes: usize,
}

impl RetainedUsage {
    fn add(&mut self, retained: &Retained) {
        self.messages += 1;
        self.bytes += retained_size(retained);
    }

    fn remove(&mut self, retained: &Retained) {
        self.messages = self.messages.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(retained_size(retained));
    }
}

/// What a retained message costs against `max_retained_bytes`: what its message holds, and
/// its entry in the store.
fn retained_size(retained: &Retained) -> usize {
    size_of::<Retained>() + retained.message.held_bytes()
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").finish_non_exhaustive()
    }
}

impl Core {
    /// A broker core on `config` (checked first), with the sessions and retained messages
    /// `store` holds from an earlier run. `now` is the broker's start: restored sessions'
    /// expiry counts from it, and `$SYS` uptime.
    pub fn new(
        config: BrokerConfig,
        hooks: Arc<dyn Hooks>,
        store: Arc<dyn Store>,
        cluster: Arc<dyn Cluster>,
        now: Instant,
    ) -> Result<Arc<Self>, ConfigError> {
        let seed = crate::random::seed();
        Self::with_seed(config, hooks, store, cluster, now, seed)
    }

    /// Like [`Core::new`], with the seed of the shared-subscription choices given rather than
    /// drawn from the operating system: the same seed makes the same choices, for a
    /// reproducible simulation.
    pub fn with_seed(
        config: BrokerConfig,
        hooks: Arc<dyn Hooks>,
        store: Arc<dyn Store>,
        cluster: Arc<dyn Cluster>,
        now: Instant,
        seed: u64,
    ) -> Result<Arc<Self>, ConfigError> {
        config.validate()?;
        let file_auth = Arc::new(FileAuth::new(&config)?);
        let user_hooks = hooks;
        let hooks: Arc<dyn Hooks> = Arc::new((file_auth.clone(), user_hooks.clone()));
        let core = Arc::new(Self::build(
            config,
            [hooks, user_hooks],
            file_auth,
            store,
            cluster,
            seed,
            now,
        ));
        core.restore_sessions(now);
        Ok(core)
    }

    fn build(
        config: BrokerConfig,
        [hooks, user_hooks]: [Arc<dyn Hooks>; 2],
        file_auth: Arc<FileAuth>,
        store: Arc<dyn Store>,
        cluster: Arc<dyn Cluster>,
        seed: u64,
        now: Instant,
    ) -> Self {
        let journaled = store.journal().is_some();
        Self {
            server_config: config.server_config(),
            inbox_limits: InboxLimits {
                capacity: config.limits.inbox_capacity.max(1),
                session: config.queue_limits(),
            },
            live: LiveLimits::new(&config.limits),
            listener_names: std::sync::OnceLock::new(),
            bridges: config
                .bridges
                .iter()
                .map(|bridge| Arc::new(crate::bridge::BridgeStatus::new(bridge)))
                .collect(),
            config,
            hooks,
            file_auth,
            user_hooks,
            verifications: Verifications::default(),
            store,
            cluster,
            counters: Counters::default(),
            journaled,
            index: RwLock::new(SubscriptionIndex::new()),
            registry: Mutex::default(),
            round_robin: std::array::from_fn(|_| AtomicUsize::new(0)),
            random: AtomicU64::new(seed | 1),
            seed,
            started: now,
            next_conn: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            timers: Mutex::default(),
            detached: Mutex::default(),
            timers_changed: AtomicWaker::new(),
            timers_moved: AtomicBool::new(false),
            connections: Mutex::default(),
            retained_usage: Mutex::new(RetainedUsage::default()),
        }
        .counting_stored_retained()
    }

    /// Starts the retained figures from what the store already holds (a persistent store's
    /// messages from an earlier run). Topics under `$` are not reached by `#` and count as
    /// messages without their bytes.
    fn counting_stored_retained(self) -> Self {
        let mut usage = RetainedUsage {
            messages: self.store.retained_count(),
            bytes: 0,
        };
        if let Ok(everything) = TopicFilter::new("#") {
            self.store
                .retained_matching(&everything, &mut |r| usage.bytes += retained_size(r));
        }
        *lock(&self.retained_usage) = usage;
        self
    }

    /// Sets (`Some`) or clears the retained message of `topic` within
    /// `limits.max_retained_messages` and `limits.max_retained_bytes`. A message that does not
    /// fit is not retained and is counted in `dropped_retained`, and the topic's previous
    /// message is cleared with it: it is no longer the last message on the topic, and a
    /// subscriber must not be given it as if it were.
    /// Returns whether the change was written to the journal.
    pub(crate) fn set_retained(&self, topic: &TopicName<'_>, value: Option<Retained>) -> bool {
        let mut usage = lock(&self.retained_usage);
        let Some(new) = value else {
            if let Some(old) = self.store.set_retained(topic, None) {
                usage.remove(&old);
                return self.journal_retained(&old.message.topic, None);
            }
            return false;
        };
        // Set first and undo if it did not fit: only the store knows whether the topic had
        // a message, which decides whether the count grows.
        let before = (usage.messages, usage.bytes);
        usage.add(&new);
        let journaled = self.journal().map(|_| new.clone());
        if let Some(old) = self.store.set_retained(topic, Some(new)) {
            usage.remove(&old);
        }
        // Only a change that grows what is kept can be refused: a broker whose limits were
        // lowered below what it holds (a reload) still takes updates of what it has.
        let grew = usage.messages > before.0 || usage.bytes > before.1;
        if grew
            && (usage.messages > self.live.max_retained_messages()
                || usage.bytes > self.live.max_retained_bytes())
        {
            self.counters.dropped_retained.fetch_add(1, Relaxed);
            if let Some(refused) = self.store.set_retained(topic, None) {
                usage.remove(&refused);
                return self.journal_retained(&refused.message.topic, None);
            }
            false
        } else if let Some(new) = journaled {
            self.journal_retained(&new.message.topic, Some(&new))
        } else {
            false
        }
    }

    /// Writes a retained message's change to the journal, if the store has one. `$SYS`
    /// topics are the broker's own figures of this run: not kept.
    fn journal_retained(&self, topic: &ByteStr, retained: Option<&Retained>) -> bool {
        if topic.as_str().starts_with("$SYS/") {
            return false;
        }
        let Some(journal) = self.journal() else {
            return false;
        };
        journal.write(Change::Retained { topic, retained });
        true
    }

    /// Deletes an expired retained message found by a lookup, if it is still the topic's
    /// message, and keeps the retained figures with the store.
    pub(crate) fn remove_expired_retained(&self, topic: &TopicName<'_>, expired: &Retained) {
        let mut usage = lock(&self.retained_usage);
        if self.store.remove_expired_retained(topic, expired) {
            usage.remove(expired);
            self.journal_retained(&expired.message.topic, None);
        }
    }

    /// Registers an open connection's inbox, so that shutdown reaches it. Returns whether
    /// the broker is already stopping.
    pub(crate) fn register_connection(&self, conn: u64, inbox: &Arc<Inbox>) -> bool {
        let mut connections = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        connections.insert(
            conn,
            OpenConnection {
                inbox: inbox.clone(),
                listener: 0,
                client: None,
            },
        );
        // Read under the lock that `stop` holds after setting it.
        self.stopping.load(Relaxed)
    }

    /// Applies what may change while the broker runs from `new`, the configuration read
    /// again: the limits `FileReloader::reload_config` lists, from the next time each is
    /// checked. The other keys that changed are listed as needing a restart. A configuration
    /// that does not validate changes nothing.
    pub fn reload_config(
        &self,
        new: &BrokerConfig,
    ) -> Result<super::live::ConfigReload, ConfigError> {
        new.validate()?;
        Ok(super::live::ConfigReload {
            applied: self.live.apply(&new.limits),
            needs_restart: super::live::needs_restart(&self.config, new),
        })
    }

    /// Each listener's name (address and protocols), in the configuration's order.
    pub(crate) fn listener_names(&self) -> Vec<String> {
        match self.listener_names.get() {
            Some(names) => names.clone(),
            None => self.config.listeners.iter().map(|l| l.describe()).collect(),
        }
    }

    /// Records what an open connection is now: its listener and, once accepted, its client.
    pub(crate) fn update_connection(&self, conn: u64, update: impl FnOnce(&mut OpenConnection)) {
        let mut connections = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = connections.get_mut(&conn) {
            update(open);
        }
    }

    /// Calls `visit` for every open connection, under the lock of the connections' table:
    /// `visit` must not lock anything else of the core's.
    pub(crate) fn for_each_connection(&self, mut visit: impl FnMut(&OpenConnection)) {
        let connections = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        connections.values().for_each(&mut visit);
    }

    pub(crate) fn deregister_connection(&self, conn: u64) {
        let mut connections = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        connections.remove(&conn);
        if connections.is_empty() && connections.capacity() > 64 {
            connections.shrink_to_fit();
        }
    }

    /// Stops the broker: offline sessions' deadlines stop firing, and every open connection
    /// is told to shut down (DISCONNECT 0x8B under 5.0), as is any connection made later.
    pub fn stop(&self) {
        let connections = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Set under the lock that `register_connection` reads it under.
        self.stopping.store(true, Relaxed);
        for open in connections.values() {
            open.inbox.shut_down();
        }
    }

    /// Whether [`Core::stop`] was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Relaxed)
    }

    /// A snapshot of the counters. It counts the messages waiting in every inbox and
    /// session: meant for a look every few seconds, not for a loop.
    pub fn stats(&self) -> BrokerStats {
        let mut stats = self.counters.snapshot(self.store.retained_count());
        stats.sessions = self.registry().len();
        stats.queued_messages = self.queued_messages();
        stats
    }

    /// Messages waiting: in inboxes, and in online and offline sessions' queues (in memory
    /// or in the journal).
    fn queued_messages(&self) -> usize {
        let mut queued = 0usize;
        self.for_each_connection(|open| {
            queued = queued.saturating_add(open.inbox.queued_messages());
        });
        self.for_each_offline(|session, on_disk| {
            queued = queued
                .saturating_add(session.queued_messages())
                .saturating_add(on_disk.messages);
        });
        queued
    }

    /// QoS 1 and 2 messages sent and not yet acknowledged, by connected clients (as their
    /// connections last reported) and offline sessions.
    pub(crate) fn in_flight(&self) -> usize {
        let mut in_flight = 0usize;
        self.for_each_connection(|open| {
            if let Some(client) = &open.client {
                in_flight = in_flight.saturating_add(client.in_flight.load(Relaxed) as usize);
            }
        });
        self.for_each_offline(|session, _| {
            in_flight = in_flight.saturating_add(session.in_flight());
        });
        in_flight
    }

    /// Calls `visit` with every offline session and what of its queue is in the journal,
    /// each under its slot's lock (the registry's is not held meanwhile).
    fn for_each_offline(&self, mut visit: impl FnMut(&Session, QueueUse)) {
        let slots: Vec<Arc<Slot>> = self.registry().iter().map(|r| r.0.clone()).collect();
        for slot in slots {
            // A slot locked now is skipped rather than waited for: this may be called from
            // a hook that runs under a slot's lock, and a figure a moment out of date does
            // no harm.
            let Ok(state) = slot.state.try_lock() else {
                continue;
            };
            if let SlotState::Offline {
                session, on_disk, ..
            } = &*state
            {
                visit(session, *on_disk);
            }
        }
    }

    /// When the broker was started, as given to [`Core::new`].
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Puts the sessions the journal kept back into the registry, offline, with their
    /// subscriptions in the index. A session whose client was connected when the broker
    /// stopped without closing it was lost ungracefully: it goes offline now, and its will
    /// is published after its delay [MQTT-3.1.2-8]. Its expiry counts from when its client
    /// went offline, across the restart.
    fn restore_sessions(self: &Arc<Self>, now: Instant) {
        let Some(journal) = self.journal() else {
            return;
        };
        let mut wills_now = Vec::new();
        let mut ended = Vec::new();
        for restored in journal.restore(now) {
            let RestoredSession {
                record,
                subscriptions,
                messages,
                queued,
                queued_bytes,
                incoming_qos2,
                ..
            } = restored;
            let info = ClientInfo {
                client_id: record.client_id.clone(),
                username: record.username.clone(),
                version: record.version,
                peer: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
                listener: 0,
                local: false,
                verified: false,
                by_password_file: false,
                internal: super::is_bridge_client_id(record.client_id.as_str()),
            };
            let since = if record.connected {
                now
            } else {
                record.offline_since
            };
            if record.expiry_interval == 0 {
                // Kept only for its will: the session ended with its connection. The record
                // goes once the will is published (below).
                ended.push(record.client_id.clone());
                if record.connected {
                    if let Some((will, _)) = record.will {
                        wills_now.push((will, info));
                    }
                }
                continue;
            }
            if record.connected {
                // Offline from now on: a later restart counts its expiry and will delay from
                // here, not from that restart.
                let mut offline = record.clone();
                offline.connected = false;
                offline.offline_since = now;
                journal.write(Change::Session(&offline));
            }
            let mut session = Session::new(record.client_id.clone(), self.config.queue_limits());
            session.set_expiry_interval(record.expiry_interval);
            for (filter, subscription) in subscriptions {
                session.restore_subscription(filter, subscription);
            }
            for id in incoming_qos2 {
                session.restore_incoming_qos2(id);
            }
            for message in messages {
                match message {
                    RestoredMessage::Queued(delivery) => session.enqueue_admitted(delivery),
                    RestoredMessage::Sent(id, delivery) => {
                        session.restore_sent(id, delivery);
                    }
                    RestoredMessage::Released(id, tag) => {
                        session.restore_released(id, tag);
                    }
                }
            }
            session.set_journaled(true);
            let slot = Arc::new(Slot {
                client_id: session.client_id().clone(),
                state: Mutex::new(SlotState::Dead),
                congested: AtomicBool::new(false),
                journaled: AtomicBool::new(true),
                recorded: AtomicBool::new(true),
                floor: AtomicU64::new(0),
            });
            self.restore_subscriptions(&session, &slot);
            self.counters
                .queued_bytes
                .fetch_add(session.queued_bytes(), Relaxed);
            let expiry = session.expiry_interval();
            let mut state = slot.lock();
            let will = record.will.map(|(will, delay)| {
                let at = since + Duration::from_secs(u64::from(delay));
                self.counters
                    .queued_bytes
                    .fetch_add(will.held_bytes(), Relaxed);
                Box::new(PendingWill {
                    will,
                    info,
                    timer: self.add_deadline(at.max(now), &slot, RESTORED, DeadlineKind::Will),
                })
            });
            *state = SlotState::Offline {
                session: Box::new(session),
                generation: RESTORED,
                will,
                expiry: (expiry != u32::MAX).then(|| {
                    let at = since + Duration::from_secs(u64::from(expiry));
                    self.add_deadline(at.max(now), &slot, RESTORED, DeadlineKind::Expiry)
                }),
                reader: None,
                on_disk: QueueUse {
                    messages: queued,
                    bytes: queued_bytes,
                },
            };
            drop(state);
            self.registry().insert(Registered(slot));
        }
        for (will, info) in wills_now {
            self.publish_will(will, &info, now);
        }
        for client_id in &ended {
            journal.write(Change::RemoveSession { client_id });
        }
    }

    pub(crate) fn registry(&self) -> MutexGuard<'_, HashSet<Registered>> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn index_read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, SubscriptionIndex<ByteStr, Sub>> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn index_write(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, SubscriptionIndex<ByteStr, Sub>> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// A hash of `value` under the core's seed. Not for a hash table: nothing here is
    /// flooded by a chosen key, only spread.
    fn hash(&self, value: impl Hash) -> u64 {
        let mut hasher = DefaultHasher::new();
        self.seed.hash(&mut hasher);
        value.hash(&mut hasher);
        hasher.finish()
    }

    /// Takes `size` bytes from the global queue budget, or refuses.
    pub(crate) fn reserve(&self, size: usize) -> bool {
        let max = self.live.max_queued_bytes_total();
        let q = &self.counters.queued_bytes;
        let mut current = q.load(Relaxed);
        loop {
            // Checked: a fan-out's reservation (size × subscribers, saturated) can reach
            // `usize::MAX` on a 32-bit target, where a plain add would wrap past the limit.
            let Some(after) = current.checked_add(size).filter(|after| *after <= max) else {
                return false;
            };
            match q.compare_exchange_weak(current, after, Relaxed, Relaxed) {
                Ok(_) => return true,
                Err(now) => current = now,
            }
        }
    }

    /// Takes `size` bytes from the budget although it is full, if the client's own offline
    /// session holds a will waiting for its delay that is at least as large: that will is
    /// cancelled (and its bytes given back) as the client returns. Otherwise a full budget
    /// would refuse the client for ever, its old will holding the room its new one needs.
    pub(crate) fn reserve_in_place_of_will(&self, client_id: &ByteStr, size: usize) -> bool {
        let slot = match self.registry().get(client_id) {
            Some(Registered(slot)) => slot.clone(),
            None => return false,
        };
        let held = match &*slot.lock() {
            SlotState::Offline {
                will: Some(pending),
                ..
            } => pending.will.held_bytes(),
            _ => 0,
        };
        if held < size {
            return false;
        }
        self.counters.queued_bytes.fetch_add(size, Relaxed);
        true
    }

    pub(crate) fn release(&self, size: usize) {
        let _ = self
            .counters
            .queued_bytes
            .fetch_update(Relaxed, Relaxed, |q| Some(q.saturating_sub(size)));
    }

    /// Publishes a message: stores or clears it as retained, routes it to every matching
    /// session, offers it to the cluster seam, and tells the hooks. Returns the number of
    /// sessions it went to.
    pub(crate) fn route_publish(
        &self,
        message: Message,
        publisher: Option<&ClientInfo>,
        now: Instant,
        forward: bool,
    ) -> Routed {
        let message = Arc::new(message);
        let mut retained_journaled = false;
        if message.retain && self.config.mqtt.retain_available {
            if let Ok(topic) = message.topic_name() {
                let value = (!message.payload.is_empty()).then(|| Retained {
                    message: message.clone(),
                    received_at: now,
                });
                retained_journaled = self.set_retained(&topic, value);
            }
        }
        let mut routed = self.route(&message, publisher.map(|p| &p.client_id), now);
        routed.journaled |= retained_journaled;
        if forward {
            self.cluster.forward(&message);
        }
        let matched = routed.matched + routed.blocked.len();
        self.hooks
            .on_message_published(publisher, &message, matched);
        routed
    }

    /// Publishes a message as the broker itself (no client): retained if flagged, routed to
    /// every matching session, and offered to the cluster seam. Returns the number of
    /// sessions it went to or waits for.
    ///
    /// Nothing waits for the outcome: a delivery that finds a connected client's inbox full
    /// waits in the core, at most `limits.backpressure_timeout_ms`, offered again as room is
    /// made ([`Core::poll_wakeup`]) and dropped and counted at the timeout
    /// ([`Core::handle_timeout`]). A client that is not reading at all costs one timeout, then
    /// is marked congested and skipped at once until it catches up.
    pub fn publish(self: &Arc<Self>, message: Message, now: Instant) -> usize {
        self.publish_detached(message, now, true)
    }

    /// Like [`Core::publish`], but not offered to the cluster seam: for messages that arrived
    /// from another node.
    pub fn publish_local(self: &Arc<Self>, message: Message, now: Instant) -> usize {
        self.publish_detached(message, now, false)
    }

    pub(crate) fn publish_detached(
        self: &Arc<Self>,
        message: Message,
        now: Instant,
        forward: bool,
    ) -> usize {
        let routed = self.route_publish(message, None, now, forward);
        let matched = routed.matched + routed.blocked.len();
        if routed.blocked.is_empty() {
            return matched;
        }
        let until = now + self.live.backpressure_timeout();
        lock(&self.detached).extend(
            routed
                .blocked
                .into_iter()
                .map(|blocked| Detached { blocked, until }),
        );
        // Always: the driver waits for room in these inboxes only once it looks again.
        self.timers_moved();
        matched
    }

    /// Leaves a blocked delivery to wait for room in the core, until `until`, as a publish
    /// from inside the broker waits.
    pub(crate) fn detach(&self, blocked: Blocked, until: Instant) {
        lock(&self.detached).push(Detached { blocked, until });
        self.timers_moved();
    }

    /// Offers a blocked delivery again, once: what became of it, or the delivery back if the
    /// inbox is still full, for the caller to go on waiting (as room is made:
    /// [`Blocked::poll_room`]) or [`Core::refuse`] it.
    pub(crate) fn offer(&self, blocked: Blocked) -> Result<Offered, Blocked> {
        let Blocked {
            slot,
            inbox,
            delivery,
            ..
        } = blocked;
        let size = delivery.size();
        let epoch = inbox.room_epoch();
        match inbox.try_send(delivery, false, &self.inbox_limits) {
            Ok(()) => {
                slot.congested.store(false, Relaxed);
                Ok(Offered::Queued)
            }
            Err(SendError::Closed(delivery)) => {
                self.release(size);
                // A Clean Start took the session over: the delivery was routed by a
                // subscription of the session it discarded, and must not reach the new one
                // [MQTT-3.1.2-4].
                if inbox.session_ends() {
                    return Ok(Offered::Gone);
                }
                // Read back from the journal by the session's next connection already.
                if slot.holds_copy_of(delivery.tag) {
                    return Ok(Offered::Queued);
                }
                // The connection closed while we waited, after it moved its inbox into the
                // session: hand the delivery to whoever holds the session now, offline or a
                // new connection, instead of losing it. If the slot still names the closing
                // connection, the delivery waits for it to finish.
                // Written to the journal when it was routed: nothing new to wait for.
                match self.deliver_to(&slot, delivery, false, false, &mut false) {
                    Handed::Queued => Ok(Offered::Queued),
                    Handed::Refused => Ok(Offered::Refused),
                    Handed::Gone => Ok(Offered::Gone),
                    Handed::Blocked(again) => Err(again),
                }
            }
            Err(SendError::Full(delivery)) => Err(Blocked {
                slot,
                inbox,
                delivery,
                epoch,
            }),
        }
    }

    /// Gives up on a blocked delivery because its publisher's connection is closing: it is
    /// dropped and counted, and its publish is not acknowledged, so the client sends it again.
    /// The subscriber is not to blame, and is not marked congested. (A QoS 0 publish, which
    /// nothing sends again, is given up only when its connection must let go at once: taken
    /// over, kicked, or the broker stopping; after the client's own DISCONNECT it waits.)
    pub(crate) fn abandon(&self, blocked: Blocked) -> bool {
        self.release(blocked.delivery.size());
        self.journal_finished(&blocked.slot, blocked.delivery.tag);
        self.counters.dropped_inbox_full.fetch_add(1, Relaxed);
        false
    }

    /// Gives up on a blocked delivery whose wait ran out: it is dropped and counted, and its
    /// client is marked congested, so that later deliveries skip it until it catches up.
    pub(crate) fn refuse(&self, blocked: Blocked) -> bool {
        blocked.slot.congested.store(true, Relaxed);
        self.abandon(blocked)
    }

    /// Routes to every matching subscription, applying No Local, Retain As Published and the
    /// overlap rule: one delivery per client with the highest QoS of its matching
    /// subscriptions and all their identifiers. Shared groups get one member each.
    pub(crate) fn route(
        &self,
        message: &Arc<Message>,
        publisher: Option<&ByteStr>,
        now: Instant,
    ) -> Routed {
        let mut routed = Routed::default();
        let Ok(topic) = message.topic_name() else {
            return routed;
        };
        {
            let mut targets: SmallVec<[Target; INLINE_TARGETS]> = SmallVec::new();
            // The filter of the first ordinary subscription, and whether any other filter
            // matched too: within one filter each client subscribes once, so a message that
            // matches a single filter (the usual fan-out) needs no search for overlaps.
            let mut first_filter = None;
            let mut overlaps_possible = false;
            {
                let index = self.index_read();
                index.for_each_match(&topic, |m| match m {
                    Match::Subscription { filter, key, value } => {
                        if value.options.no_local && publisher == Some(key) {
                            return;
                        }
                        if *first_filter.get_or_insert(filter) != filter {
                            overlaps_possible = true;
                        }
                        targets.push(Target {
                            slot: value.slot.clone(),
                            qos: value.options.qos,
                            rap: value.options.retain_as_published,
                            id: value.id,
                            shared: false,
                        });
                    }
                    Match::SharedGroup {
                        filter,
                        share_name,
                        members,
                    } => {
                        if let Some((_, sub)) =
                            self.pick_member(filter, share_name, members, publisher)
                        {
                            targets.push(Target {
                                slot: sub.slot.clone(),
                                qos: sub.options.qos,
                                rap: sub.options.retain_as_published,
                                id: sub.id,
                                shared: true,
                            });
                        }
                    }
                });
            }
            let prepaid = if overlaps_possible {
                // Bring each client's deliveries together for the overlap rule.
                // By client identifier, not by address: which of them a full budget refuses
                // must not depend on where the allocator put their slots.
                targets.sort_unstable_by(|a, b| {
                    (a.slot.client_id.as_bytes(), a.shared)
                        .cmp(&(b.slot.client_id.as_bytes(), b.shared))
                });
                false
            } else {
                // One delivery per target: reserve their bytes against the global budget at
                // once, rather than one contended atomic operation per subscriber. If the
                // budget cannot take them all, each delivery tries on its own.
                let size = Delivery::size_of(message);
                !targets.is_empty() && self.reserve(size.saturating_mul(targets.len()))
            };
            let mut i = 0;
            while let Some(first) = targets.get(i) {
                let mut qos = first.qos;
                let mut rap = first.rap;
                let mut ids: Vec<SubscriptionId> = first.id.into_iter().collect();
                let mut j = i + 1;
                if !first.shared {
                    while let Some(next) = targets.get(j) {
                        if next.shared || !Arc::ptr_eq(&next.slot, &first.slot) {
                            break;
                        }
                        qos = qos.max(next.qos);
                        rap |= next.rap;
                        ids.extend(next.id);
                        j += 1;
                    }
                }
                let mut delivery = Delivery::new(message.clone(), now);
                delivery.qos = qos.min(message.qos);
                delivery.retain = rap && message.retain;
                delivery.subscription_ids = ids;
                let qos = delivery.qos;
                let own = publisher == Some(&first.slot.client_id);
                match self.deliver_to(&first.slot, delivery, prepaid, own, &mut routed.journaled) {
                    Handed::Queued => routed.matched += 1,
                    // A QoS 0 delivery may be dropped; it is counted, but does not fail the
                    // publish.
                    Handed::Refused if qos != QoS::AtMostOnce => routed.refused += 1,
                    Handed::Refused | Handed::Gone => {}
                    Handed::Blocked(blocked) => routed.blocked.push(blocked),
                }
                i = j;
            }
        }
        routed
    }

    fn pick_member<'m>(
        &self,
        filter: midge_topic::FilterId,
        share_name: &str,
        members: &'m [(ByteStr, Sub)],
        publisher: Option<&ByteStr>,
    ) -> Option<&'m (ByteStr, Sub)> {
        let n = members.len();
        if n == 0 {
            return None;
        }
        let start = match self.config.shared_subscriptions.strategy {
            SharedStrategy::RoundRobin => {
                let slot = (self.hash((share_name, filter)) as usize) % RR_SLOTS;
                self.round_robin
                    .get(slot)
                    .map_or(0, |c| c.fetch_add(1, Relaxed))
            }
            SharedStrategy::Random => {
                // splitmix64 over a shared counter: cheap, lock-free, good enough to spread.
                let x = self.random.fetch_add(splitmix64::GAMMA, Relaxed);
                splitmix64::mix(x.wrapping_add(splitmix64::GAMMA)) as usize
            }
            SharedStrategy::Sticky => self.hash(publisher.map(ByteStr::as_bytes)) as usize,
        };
        // Prefer an online member, starting from the strategy's choice; if none is online,
        // queue for the chosen one.
        (0..n)
            .filter_map(|k| members.get((start.wrapping_add(k)) % n))
            .find(|(_, sub)| sub.slot.is_online())
            .or_else(|| members.get(start % n))
    }

    /// Hands a delivery to a client: into its connection's inbox, or into its offline
    /// session's queue (within its limits). A delivery that finds the inbox full comes back as
    /// [`Handed::Blocked`] to wait for room, unless the client is congested, in which case it
    /// is dropped and counted.
    ///
    /// `prepaid`: the delivery's bytes are already reserved against the global budget (by
    /// [`Core::route`], once for all its deliveries); a refused delivery gives them back.
    /// `own`: the client published the message itself (see [`Inbox::try_send`]).
    fn deliver_to(
        &self,
        slot: &Arc<Slot>,
        mut delivery: Delivery,
        prepaid: bool,
        own: bool,
        journaled: &mut bool,
    ) -> Handed {
        let mut state = slot.lock();
        // Written under the slot's lock, so that a client taking the session back sees every
        // delivery either in the journal's queue or in its inbox, by tag (see
        // `Connection::authenticated`).
        if let SlotState::Online { .. } = &*state {
            *journaled |= self.journal_enqueue(slot, &mut delivery);
        }
        let tag = delivery.tag;
        let handed = self.deliver_locked(slot, &mut state, delivery, prepaid, own, journaled);
        drop(state);
        if tag != 0 && matches!(handed, Handed::Refused | Handed::Gone) {
            self.journal_finished(slot, tag);
        }
        handed
    }

    /// Writes a QoS 1 or 2 delivery for a journaled session to the journal, before it is
    /// queued: the client may acknowledge it as soon as it is queued, and its end must come
    /// after its start. A delivery written already (offered again) keeps its tag.
    fn journal_enqueue(&self, slot: &Slot, delivery: &mut Delivery) -> bool {
        if delivery.qos == QoS::AtMostOnce || delivery.tag != 0 || !slot.journaled.load(Relaxed) {
            return false;
        }
        let Some(journal) = self.journal() else {
            return false;
        };
        delivery.tag = journal.next_tag();
        journal.write(Change::Enqueue {
            client_id: &slot.client_id,
            delivery,
        });
        true
    }

    /// Tells the journal that a delivery it holds (`tag`, 0 for none) was dropped.
    pub(crate) fn journal_finished(&self, slot: &Slot, tag: u64) {
        if tag == 0 || slot.holds_copy_of(tag) {
            return;
        }
        if let Some(journal) = self.journal() {
            journal.write(Change::Delivery {
                client_id: &slot.client_id,
                change: midge_proto::session::SessionChange::Finished { tag },
            });
        }
    }

    fn deliver_locked(
        &self,
        slot: &Arc<Slot>,
        state: &mut SlotState,
        delivery: Delivery,
        prepaid: bool,
        own: bool,
        journaled: &mut bool,
    ) -> Handed {
        let size = delivery.size();
        match state {
            SlotState::Online { inbox, .. } => {
                if !prepaid && !self.reserve(size) {
                    self.counters.dropped_memory_budget.fetch_add(1, Relaxed);
                    return Handed::Refused;
                }
                let outcome = match inbox.try_send(delivery, own, &self.inbox_limits) {
                    // Full: wait for room. The epoch is read after the refusal, and the
                    // delivery offered once more, so that room made in between is not missed
                    // (reading it first would cost every delivery a load).
                    Err(SendError::Full(delivery)) if !slot.congested.load(Relaxed) => {
                        let epoch = inbox.room_epoch();
                        inbox
                            .try_send(delivery, own, &self.inbox_limits)
                            .map_err(|e| (e, epoch))
                    }
                    outcome => outcome.map_err(|e| (e, 0)),
                };
                match outcome {
                    Ok(()) => {
                        slot.congested.store(false, Relaxed);
                        Handed::Queued
                    }
                    Err((SendError::Full(delivery), epoch)) if !slot.congested.load(Relaxed) => {
                        Handed::Blocked(Blocked {
                            slot: slot.clone(),
                            inbox: inbox.clone(),
                            delivery,
                            epoch,
                        })
                    }
                    // The connection is closing and about to hand the session on: wait for its
                    // next holder. The closing connection makes room in its inbox once more
                    // when the session is handed on ([`Inbox::made_room`]).
                    Err((SendError::Closed(delivery), _)) => Handed::Blocked(Blocked {
                        slot: slot.clone(),
                        inbox: inbox.clone(),
                        delivery,
                        epoch: inbox.room_epoch(),
                    }),
                    // Full, and the client is congested: dropped at once.
                    Err(_) => {
                        self.release(size);
                        self.counters.dropped_congested.fetch_add(1, Relaxed);
                        Handed::Refused
                    }
                }
            }
            SlotState::Offline {
                session,
                reader,
                on_disk,
                ..
            } => {
                // Checked as it is queued, so that what the client may not read never takes
                // the room of what it may (it is checked again when the session resumes).
                if reader
                    .as_ref()
                    .is_some_and(|r| !self.hooks.authorize_read(r, &delivery.message))
                {
                    if prepaid {
                        self.release(size);
                    }
                    self.counters.deliveries_denied.fetch_add(1, Relaxed);
                    return Handed::Gone;
                }
                if delivery.qos == QoS::AtMostOnce && !self.config.sessions.queue_qos0_offline {
                    if prepaid {
                        self.release(size);
                    }
                    return Handed::Refused;
                }
                if slot.journaled.load(Relaxed) {
                    // Queued in the journal only (QoS 1 and 2 ones were written already).
                    if prepaid {
                        self.release(size);
                    }
                    return self.queue_on_disk(slot, session, on_disk, delivery, journaled);
                }
                if !prepaid && !self.reserve(size) {
                    self.counters.dropped_memory_budget.fetch_add(1, Relaxed);
                    return Handed::Refused;
                }
                if session.enqueue(delivery) {
                    Handed::Queued
                } else {
                    self.release(size);
                    self.counters.dropped_queue_full.fetch_add(1, Relaxed);
                    Handed::Refused
                }
            }
            // The session ended after routing found its subscription: nobody to deliver to,
            // and nothing refused either.
            SlotState::Vacant | SlotState::Dead => {
                if prepaid {
                    self.release(size);
                }
                Handed::Gone
            }
        }
    }

    /// Queues a delivery for an offline journaled session in the journal, within the
    /// session's limits (tail drop, counted, as in memory).
    fn queue_on_disk(
        &self,
        slot: &Slot,
        session: &Session,
        on_disk: &mut QueueUse,
        mut delivery: Delivery,
        journaled: &mut bool,
    ) -> Handed {
        if slot.holds_copy_of(delivery.tag) {
            // The session holds it already (in memory or in the journal).
            return Handed::Queued;
        }
        let limits = &self.config.queue_limits();
        let size = delivery.size();
        let queued = on_disk.messages + session.queued_messages();
        if queued >= limits.max_messages || on_disk.bytes + size > limits.max_bytes {
            self.counters.dropped_queue_full.fetch_add(1, Relaxed);
            return Handed::Refused;
        }
        let Some(journal) = self.journal() else {
            return Handed::Refused;
        };
        if delivery.tag == 0 {
            delivery.tag = journal.next_tag();
            journal.write(Change::Enqueue {
                client_id: &slot.client_id,
                delivery: &delivery,
            });
            *journaled = true;
        }
        on_disk.messages += 1;
        on_disk.bytes += size;
        Handed::Queued
    }

    /// Moves an offline journaled session's queue into the journal: what is not written
    /// there yet (QoS 0 messages, retained messages sent on subscribe) is written, and the
    /// memory is freed. Returns what the journal now holds for it.
    fn spill_queue(&self, slot: &Slot, session: &mut Session) -> QueueUse {
        let mut on_disk = QueueUse::default();
        let Some(journal) = self.journal() else {
            return on_disk;
        };
        // Deliveries without a tag (QoS 0 ones, which were not written as they were queued)
        // get one now, so the journal gives them back after the QoS 1 and 2 ones queued with
        // them. Order holds within each QoS, which is what MQTT asks [MQTT-4.6.0-6];
        // renumbering the others instead would take two writes that a crash could split.
        for mut delivery in session.take_queued() {
            if delivery.tag == 0 {
                delivery.tag = journal.next_tag();
                journal.write(Change::Enqueue {
                    client_id: &slot.client_id,
                    delivery: &delivery,
                });
            }
            on_disk.messages += 1;
            on_disk.bytes += delivery.size();
        }
        on_disk
    }

    /// Writes what a session recorded and nobody took yet (changes made as its connection
    /// closed).
    pub(crate) fn journal_session_changes(&self, session: &mut Session) {
        let Some(journal) = self.journal() else {
            return;
        };
        let mut changes = Vec::new();
        session.take_changes(&mut changes);
        for change in changes {
            journal.write(Change::Delivery {
                client_id: session.client_id(),
                change,
            });
        }
    }

    /// Removes a session's subscriptions from the index.
    pub(crate) fn remove_subscriptions(&self, session: &Session) {
        if session.subscription_count() == 0 {
            return;
        }
        let limits = self.config.topic_limits();
        let mut index = self.index_write();
        for (filter, _) in session.subscriptions() {
            if let Ok(f) = TopicFilter::with_limits(filter.as_str(), &limits) {
                if index.remove(&f, session.client_id()).is_some() {
                    self.counters.unsubscribed(&f);
                }
            }
        }
    }

    /// Puts a session's subscriptions (back) into the index, pointing at `slot`.
    pub(crate) fn restore_subscriptions(&self, session: &Session, slot: &Arc<Slot>) {
        let limits = self.config.topic_limits();
        let mut index = self.index_write();
        for (filter, sub) in session.subscriptions() {
            if let Ok(f) = TopicFilter::with_limits(filter.as_str(), &limits) {
                let value = Sub {
                    options: sub.options,
                    id: sub.id,
                    slot: slot.clone(),
                };
                if index
                    .insert(&f, session.client_id().clone(), value)
                    .is_none()
                {
                    self.counters.subscribed(&f);
                }
            }
        }
    }

    /// The message a will becomes: its properties are already those of a PUBLISH, and move
    /// over as they are (5.0 §3.1.3.2).
    pub(crate) fn will_message(will: Will) -> Message {
        let mut message = Message::new(will.topic, will.payload, will.qos);
        message.retain = will.retain;
        message.properties = will.properties.message;
        message
    }

    /// Asks the hooks whether a client may publish `message` (or have it published as its
    /// will): a topic in `$SYS` needs [`Hooks::authorize_sys_publish`] first, and a refusal
    /// there is counted.
    pub(crate) fn authorize_publish(
        &self,
        client: &ClientInfo,
        message: &Message,
    ) -> Result<(), ReasonCode> {
        if client.internal {
            return Ok(());
        }
        let topic = message.topic.as_str();
        if topic == "$SYS" || topic.starts_with("$SYS/") {
            if let Err(code) = self.hooks.authorize_sys_publish(client, message) {
                self.counters.dropped_sys_publish.fetch_add(1, Relaxed);
                tracing::debug!(client_id = ?client.client_id.as_str(), topic, "publish into $SYS refused");
                return Err(code);
            }
        }
        self.hooks.authorize_publish(client, message)
    }

    /// The next password check waiting for a thread, if any: run it
    /// ([`VerificationJob::run`]) where blocking is fine. A driver with threads to spare
    /// polls [`Core::poll_verification`] instead.
    pub fn take_verification(&self) -> Option<VerificationJob> {
        self.verifications.pop()
    }

    /// Ready with the next password check waiting for a thread; registers the task to be
    /// woken when one comes otherwise (one task at a time). Run each on a thread that may
    /// block, at most as many at once as `auth.verify_threads` says.
    pub fn poll_verification(&self, cx: &mut Context<'_>) -> Poll<VerificationJob> {
        self.verifications.poll(cx)
    }

    /// The broker's file-based rules: reload them with [`FileAuth::reload`].
    pub fn file_auth(&self) -> &Arc<FileAuth> {
        &self.file_auth
    }

    /// Like [`Core::authorize_publish`], with the ACL's answer given (`acl_allows`, from a
    /// connection that remembers it): the user's hooks are asked, not the ACL again.
    pub(crate) fn authorize_publish_given_acl(
        &self,
        client: &ClientInfo,
        message: &Message,
        acl_allows: bool,
    ) -> Result<(), ReasonCode> {
        if client.internal {
            return Ok(());
        }
        let topic = message.topic.as_str();
        if topic == "$SYS" || topic.starts_with("$SYS/") {
            return self.authorize_publish(client, message);
        }
        if !acl_allows {
            return Err(ReasonCode::NOT_AUTHORIZED);
        }
        self.user_hooks.authorize_publish(client, message)
    }

    /// Publishes a will if the hooks allow it.
    pub(crate) fn publish_will(self: &Arc<Self>, will: Will, info: &ClientInfo, now: Instant) {
        let message = Self::will_message(will);
        if self.authorize_publish(info, &message).is_ok() {
            tracing::debug!(client_id = ?info.client_id.as_str(), topic = ?message.topic.as_str(), "publishing will");
            self.publish(message, now);
        }
    }

    /// A connection ended and leaves its session behind: keep it offline (with its will
    /// waiting for its delay) or end it.
    /// Answers a takeover request with the closing connection's session and will. A session
    /// that ends with its connection (Session Expiry 0, or a 3.x clean session) is not handed
    /// on: it ends here, so the new connection starts a new one and reports Session Present 0
    /// [MQTT-3.1.2-4] [MQTT-3.2.2-2].
    pub(crate) fn hand_over(
        self: &Arc<Self>,
        reply: TakeOver,
        session: Option<Session>,
        will: Option<(Will, u32)>,
        info: ClientInfo,
        now: Instant,
    ) {
        let mut session = session;
        if let Some(session) = session.as_mut() {
            self.journal_session_changes(session);
        }
        let (session, will) = match session {
            Some(ended) if ended.expiry_interval() == 0 => {
                self.remove_subscriptions(&ended);
                self.hooks.on_session_expired(ended.client_id().as_str());
                // The session's end ends any Will Delay too [MQTT-3.1.3-9].
                if let Some((will, _)) = will {
                    self.publish_will(will, &info, now);
                }
                // Its record (kept for its will) goes once the will is published.
                self.forget_session(ended.client_id());
                (None, None)
            }
            session => (session, will),
        };
        if let Err(lost) = reply.send(Box::new(Handover {
            session,
            will,
            info: Some(info),
        })) {
            // The taking-over connection stopped waiting and began a new session. A busy
            // connection answers a takeover at once, so this takes a connection stuck for
            // longer than `close_timeout_ms` plus `backpressure_timeout_ms`.
            if let Some(session) = lost.session {
                let queued = session.queued_messages() + session.in_flight();
                tracing::warn!(client_id = ?session.client_id().as_str(), queued, "a session was handed over after its taker stopped waiting, and is dropped");
            }
        }
    }

    // The connection's parts it needs, passed one by one rather than as the connection, which
    // the core does not know.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn session_offline(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        conn: u64,
        session: Session,
        will: Option<(Will, u32)>,
        info: &ClientInfo,
        inbox: &Inbox,
        now: Instant,
    ) {
        let mut registry = self.registry();
        let mut state = slot.lock();
        let mine = matches!(&*state, SlotState::Online { conn: c, .. } if *c == conn);
        if !mine {
            // Another connection took the slot while this one closed: it sent its request
            // while holding the slot lock, so the request is already here.
            drop(state);
            drop(registry);
            if let Some(reply) = inbox.end_takeovers() {
                self.hand_over(reply, Some(session), will, info.clone(), now);
                return;
            }
            self.remove_subscriptions(&session);
            return;
        }
        let mut session = session;
        self.journal_session_changes(&mut session);
        let expiry = session.expiry_interval();
        if expiry == 0 {
            *state = SlotState::Dead;
            drop(state);
            registry.remove(&slot.client_id);
            drop(registry);
            self.remove_subscriptions(&session);
            self.hooks.on_session_expired(slot.client_id.as_str());
            // Published before the journal forgets the will: a crash in between publishes it
            // again rather than never.
            if let Some((will, _)) = will {
                self.publish_will(will, info, now);
            }
            if slot.recorded.swap(false, Relaxed) {
                self.forget_session(&slot.client_id);
            }
            return;
        }
        // The deadlines are added under the slot's lock, with the state that keeps their keys.
        let mut will_delay = 0;
        let (publish_now, pending) = match will {
            Some((will, 0)) => (Some(will), None),
            Some((will, delay)) => {
                will_delay = delay;
                let at = now + Duration::from_secs(u64::from(delay));
                let timer = self.add_deadline(at, slot, conn, DeadlineKind::Will);
                // Kept while it waits: counted like a queued message, until it is published
                // or cancelled.
                self.counters
                    .queued_bytes
                    .fetch_add(will.held_bytes(), Relaxed);
                (
                    None,
                    Some(Box::new(PendingWill {
                        will,
                        info: info.clone(),
                        timer,
                    })),
                )
            }
            None => (None, None),
        };
        let expiry_timer = (expiry != u32::MAX).then(|| {
            let at = now + Duration::from_secs(u64::from(expiry));
            self.add_deadline(at, slot, conn, DeadlineKind::Expiry)
        });
        // A journaled session's queue goes to the journal; messages left in any other
        // session's queue now count against the global budget.
        let on_disk = if slot.journaled.load(Relaxed) {
            self.spill_queue(slot, &mut session)
        } else {
            self.counters
                .queued_bytes
                .fetch_add(session.queued_bytes(), Relaxed);
            QueueUse::default()
        };
        if let Some(journal) = self.journal() {
            let mut record = SessionRecord::new(slot.client_id.clone(), info.version, expiry, now);
            record.username = info.username.clone();
            record.connected = false;
            record.will = pending.as_ref().map(|p| (p.will.clone(), will_delay));
            journal.write(Change::Session(&record));
        }
        *state = SlotState::Offline {
            session: Box::new(session),
            generation: conn,
            will: pending,
            expiry: expiry_timer,
            reader: Some(Arc::new(info.clone())),
            on_disk,
        };
        drop(state);
        drop(registry);
        if let Some(will) = publish_now {
            self.publish_will(will, info, now);
        }
    }

    /// The store's journal, when sessions outlive the process.
    pub(crate) fn journal(&self) -> Option<&dyn Journal> {
        self.store.journal()
    }

    /// Tells the journal that a session ended.
    pub(crate) fn forget_session(&self, client_id: &ByteStr) {
        if let Some(journal) = self.journal() {
            journal.write(Change::RemoveSession { client_id });
        }
    }

    fn timers(&self) -> MutexGuard<'_, Timers<Deadline>> {
        self.timers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a deadline of the offline session `generation` in `slot`, and wakes the timer task
    /// if it comes before every other.
    fn add_deadline(
        &self,
        at: Instant,
        slot: &Arc<Slot>,
        generation: u64,
        kind: DeadlineKind,
    ) -> TimerKey {
        let deadline = Deadline {
            slot: slot.clone(),
            generation,
            kind,
        };
        let (key, earliest) = self.timers().insert(at, deadline);
        if earliest {
            self.timers_moved();
        }
        key
    }

    /// Removes the deadlines of an offline session that ended otherwise: its client came back
    /// (which cancels a delayed will [MQTT-3.1.3-9]), or the session ended.
    /// A will passed here leaves the offline session, and its bytes the memory budget.
    pub(crate) fn cancel_deadlines(&self, will: Option<&PendingWill>, expiry: Option<TimerKey>) {
        if let Some(p) = will {
            self.release(p.will.held_bytes());
        }
        let mut timers = self.timers();
        for key in will.map(|p| p.timer).into_iter().chain(expiry) {
            timers.remove(key);
        }
    }

    /// When [`Core::handle_timeout`] next has work, if ever: the earliest deadline of an
    /// offline session (a delayed will, an expiry), or of a delivery from inside the broker
    /// waiting for room. Moved earlier by sessions going offline and by [`Core::publish`],
    /// which wake the task last given to [`Core::poll_wakeup`].
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        // A stopped broker fires no session deadline, so it reports none.
        let sessions = if self.is_stopping() {
            None
        } else {
            self.timers().poll_timeout()
        };
        let detached = lock(&self.detached).iter().map(|d| d.until).min();
        match (sessions, detached) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Ready when the broker-wide work changed: [`Core::poll_timeout`] moved earlier, or an
    /// inbox that a delivery from inside the broker waits for made room. The driver then calls
    /// [`Core::handle_timeout`] (which offers the waiting deliveries again) and looks at
    /// [`Core::poll_timeout`] anew. For one task at a time.
    pub fn poll_wakeup(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.timers_changed.register(cx.waker());
        let mut ready = self
            .timers_moved
            .swap(false, std::sync::atomic::Ordering::SeqCst);
        let detached = lock(&self.detached);
        for waiting in detached.iter() {
            ready |= waiting.blocked.poll_room(cx).is_ready();
        }
        if ready {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Does the broker-wide work due at `now`, in time order: publishes delayed wills
    /// [MQTT-3.1.2-8], ends expired sessions [MQTT-4.1.0-2], and offers deliveries from inside
    /// the broker waiting for room again, dropping and counting those whose wait ran out. Once
    /// the broker is stopping it fires no session deadline: a stopped broker never expires a
    /// session in a store a new broker may have taken over.
    pub fn handle_timeout(self: &Arc<Self>, now: Instant) {
        self.offer_detached(now);
        loop {
            if self.is_stopping() {
                return;
            }
            // One at a time, with the timers unlocked while it fires: firing locks the
            // registry and the slot, which are locked before the timers elsewhere.
            let Some(due) = self.timers().pop_due(now) else {
                return;
            };
            match due.kind {
                DeadlineKind::Will => self.fire_will(&due.slot, due.generation, now),
                DeadlineKind::Expiry => self.expire(&due.slot, due.generation, now),
            }
        }
    }

    /// Offers every delivery from inside the broker that waits for room once more, and drops
    /// (and counts) those that still find no room. For a broker that stops: once every
    /// connection has closed, a delivery refused by a closing connection goes to the offline
    /// session that connection left, which is then saved with it.
    pub fn flush_detached(&self) {
        let waiting = std::mem::take(&mut *lock(&self.detached));
        for Detached { blocked, .. } in waiting {
            if let Err(back) = self.offer(blocked) {
                self.refuse(back);
            }
        }
    }

    /// Tells the driver that [`Core::poll_timeout`] moved earlier.
    fn timers_moved(&self) {
        self.timers_moved
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.timers_changed.wake();
    }

    /// Offers every delivery from inside the broker that waits for room again.
    fn offer_detached(&self, now: Instant) {
        let waiting = std::mem::take(&mut *lock(&self.detached));
        if waiting.is_empty() {
            return;
        }
        // Offered with the list unlocked: an offer locks a slot and an inbox.
        let mut still = Vec::new();
        for Detached { blocked, until } in waiting {
            match self.offer(blocked) {
                Ok(_) => {}
                Err(back) if now >= until => {
                    self.refuse(back);
                }
                Err(blocked) => still.push(Detached { blocked, until }),
            }
        }
        lock(&self.detached).append(&mut still);
    }

    /// Offline sessions' deadlines waiting: at most a delayed will and an expiry per offline
    /// session.
    pub fn pending_deadlines(&self) -> usize {
        self.timers().len()
    }

    /// Ends an offline session now (expired).
    fn expire(self: &Arc<Self>, slot: &Arc<Slot>, generation: u64, now: Instant) {
        let mut registry = self.registry();
        let mut state = slot.lock();
        let SlotState::Offline { generation: g, .. } = &*state else {
            return;
        };
        if *g != generation {
            return;
        }
        let SlotState::Offline {
            session,
            will,
            expiry,
            ..
        } = std::mem::replace(&mut *state, SlotState::Dead)
        else {
            return;
        };
        drop(state);
        registry.remove(&slot.client_id);
        drop(registry);
        self.cancel_deadlines(will.as_deref(), expiry);
        self.release(session.queued_bytes());
        self.remove_subscriptions(&session);
        tracing::debug!(client_id = ?slot.client_id.as_str(), "session expired");
        self.hooks.on_session_expired(slot.client_id.as_str());
        // A will still waiting is published when the session ends, if that comes first;
        // before the journal forgets it, so that a crash in between publishes it again rather
        // than never.
        if let Some(p) = will {
            let p = *p;
            self.publish_will(p.will, &p.info, now);
        }
        self.forget_session(&slot.client_id);
    }

    /// Publishes a delayed will whose time has come.
    fn fire_will(self: &Arc<Self>, slot: &Slot, generation: u64, now: Instant) {
        let pending = {
            let mut state = slot.lock();
            match &mut *state {
                SlotState::Offline {
                    generation: g,
                    will,
                    ..
                } if *g == generation => will.take(),
                _ => None,
            }
        };
        if let Some(p) = pending {
            let p = *p;
            self.release(p.will.held_bytes());
            // Published before the journal forgets it: a crash in between publishes it again
            // rather than never.
            self.publish_will(p.will, &p.info, now);
            if let Some(journal) = self.journal() {
                journal.write(Change::WillDone {
                    client_id: &slot.client_id,
                });
            }
        }
    }
}

/// The generation of a session restored from the store: connections count from 1.
pub(crate) const RESTORED: u64 = 0;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::AllowAll;
    use crate::store::MemoryStore;

    fn shared(max_queued_bytes_total: usize) -> Arc<Core> {
        let mut config = BrokerConfig::default();
        config.limits.max_queued_bytes_total = max_queued_bytes_total;
        Core::new(
            config,
            Arc::new(AllowAll),
            Arc::new(MemoryStore::new()),
            Arc::new(crate::store::Standalone),
            Instant::now(),
        )
        .expect("the default configuration is valid")
    }

    #[test]
    fn the_global_budget_refuses_what_does_not_fit_and_never_wraps() {
        let shared = shared(1000);
        assert!(shared.reserve(600));
        assert!(!shared.reserve(401), "over the limit");
        assert!(shared.reserve(400), "exactly up to the limit");
        shared.release(500);
        // A saturated fan-out reservation: refused, not wrapped round to a small number.
        assert!(!shared.reserve(usize::MAX));
        assert_eq!(shared.counters.queued_bytes.load(Relaxed), 500);
    }
}
