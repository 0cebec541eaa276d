//! The checker: compares every delivery in a run's [`Log`] with what MQTT promises.
//!
//! The checker sees only the log: the clients' view of the run, when the simulation broke a
//! transport, crashed or restarted the broker, and when the broker ended each connection. It
//! knows nothing of the broker's insides, so it reasons with certainty windows: a publish was
//! routed somewhere between the client's publish call and its acknowledgement; a subscription
//! certainly exists from its SUBACK until its session may have ended. What happened inside
//! such a window may go either way and is not judged; what is certain is.
//!
//! # What it checks
//!
//! - Nothing is delivered that was not published, on another topic, with a higher QoS, or to a
//!   client that never subscribed to a matching filter [MQTT-3.3.2-3], and RETAIN is set only
//!   on messages sent for a new subscription [MQTT-3.3.1-9].
//! - QoS 0 at most once [MQTT-4.3.1-1], QoS 1 at least once [MQTT-4.3.2-2], QoS 2 exactly once
//!   [MQTT-4.3.3-2]. A QoS 1 message is sent again only on a new connection of the session
//!   [MQTT-4.4.0-1] or when its publisher sent it again; a message arrives once however many
//!   of a client's subscriptions match it (the overlap rule, [MQTT-3.3.4-2] in 5.0).
//! - Each publisher's messages on a topic reach each subscriber in the order they were
//!   published, per QoS [MQTT-4.6.0-6].
//! - A retained message given to a new subscription is the topic's last retained message
//!   [MQTT-3.3.1-5] [MQTT-3.3.1-6], never an empty one [MQTT-3.3.1-11], and a fresh
//!   subscription at the end of the run gets every topic's last one.
//! - Wills are published when a connection is lost and not after DISCONNECT 0x00
//!   [MQTT-3.1.2-8] [MQTT-3.14.4-3], after their Will Delay Interval unless the client came
//!   back first [MQTT-3.1.3-9].
//! - A persistent session is resumed with its subscriptions and queued messages while it has
//!   not expired [MQTT-3.1.2-4] (3.1.1) / [MQTT-3.1.2-5] (5.0), and not after it expired
//!   [MQTT-4.1.0-2]; Clean Start 1 always gets a new one [MQTT-3.2.2-2].
//! - A message's expiry is passed on reduced by the time it waited [MQTT-3.3.2-6].
//! - Shared subscriptions deliver each message to one member of each group.
//! - Every QoS 1 and 2 message acknowledged to its publisher reaches every session that
//!   certainly subscribed before it was published, unless a documented limit says otherwise:
//!   the session ended (expiry, Clean Start, a crash ending a session that ends with its
//!   connection), the message expired, or the broker refused it. 5.0 publishers learn of a refusal from reason code 0x97, but for
//!   a QoS 2 message that reached other sessions: after PUBREC 0x97 its resend would be a new
//!   message [MQTT-4.3.3-9], so it is acknowledged with success. 3.x publishers cannot be
//!   told. Every such refusal must be counted in the broker's `dropped_*` counters.
//! - Every publish and subscription completes once the faults stop, no client sees the broker
//!   break the protocol, and the broker counts no protocol error from these clients; after a
//!   crash too, whatever stale state a restored session holds.
//!
//! # What a crash is allowed to lose
//!
//! The broker writes every change to a persistent session (Session Expiry Interval above 0,
//! or Clean Session 0 under 3.x) to its journal as it happens, and holds back what depends on
//! it (PUBACK and PUBREC to a publisher, SUBACK, CONNACK, a QoS 2 PUBLISH to a subscriber,
//! PUBREL, PUBCOMP) until the journal has made it durable. A crash loses only what the journal
//! had not made durable, so what a client was told survives it:
//!
//! - A persistent session whose CONNACK reached its client comes back, with every
//!   subscription whose SUBACK reached it: Session Present 0 after a crash is a violation
//!   [MQTT-3.1.2-4] unless the session may have expired or ended otherwise. Its expiry counts
//!   from when it went offline if the journal made that durable, else from the restart (its
//!   record still says connected): a session online at the crash counts from the restart.
//! - A session that a Clean Start discarded, once that Clean Start's CONNACK reached its
//!   client, does not come back either [MQTT-3.1.2-4].
//! - Every QoS 1 and 2 message acknowledged to its publisher (PUBACK or PUBREC received) that
//!   matched such a subscription reaches the session: at least once for QoS 1, exactly once
//!   for QoS 2 [MQTT-4.3.3-2] (the identifier of a QoS 2 PUBLISH is durable before the
//!   PUBLISH goes out, and a publisher's QoS 2 identifier durable with the message's routing),
//!   in order [MQTT-4.6.0-6], unless it expired or the session ended. A crash excuses none of
//!   it.
//! - A message not yet acknowledged may be lost, or routed again when its publisher sends it
//!   again; QoS 0 messages, and messages to sessions that end with their connection (which a
//!   crash ends), may be lost. Such a session may have been sent a QoS 2 message before its
//!   routing was durable (nothing is journaled for it to wait for): after the crash the
//!   publisher's resend is a new message to the client's next session.
//! - A topic's retained message after a crash is the last one acknowledged before it, or a
//!   later one whose acknowledgement the crash kept from its publisher: the journal keeps
//!   retained messages too, and loses what it had not made durable.
//! - The will of a connection the crash ended is published after the restart and its delay
//!   if the connection's CONNACK reached its client (the journal has it from then); so is a
//!   will waiting for its delay at a crash or a graceful stop. A will published before a
//!   crash may be lost with it (nobody acknowledged it), or published again after it.
//!
//! # Known broker issues
//!
//! Ways the broker is known to break a rule are listed in [`KNOWN_ISSUES`] and recognised
//! narrowly, by the circumstances that cause them. Their instances are reported apart
//! ([`Report::known`]) and fail a run only when it is checked strictly
//! ([`Report::passed_strictly`]); anything else that breaks the same rule fails it. None is
//! listed now.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use midge_codec::{ProtocolVersion, QoS};
use midge_topic::{TopicFilter, TopicName};

use crate::log::{ClientIdx, CloseKind, ConnNo, Counters, Entry, Event, Log, MsgId, Payload, Role};

/// Slack for comparisons with intervals counted in whole seconds.
const SECOND: Duration = Duration::from_secs(1);

/// An index past every entry: "never".
const NEVER: usize = usize::MAX;

/// A broken promise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The rule, with the specification's statement where there is one.
    pub rule: &'static str,
    /// What happened.
    pub detail: String,
    /// The log entry where it shows, if one does.
    pub entry: Option<usize>,
    /// The known broker issue this is an instance of, if it is one (see [`KNOWN_ISSUES`]).
    pub known: Option<&'static str>,
}

/// A way the broker is known to break a promise: not fixed yet, or a limit it documents. The
/// checker reports its instances apart: they fail a run only when it is checked strictly
/// ([`Report::passed_strictly`]). Each is recognised narrowly, by the circumstances that
/// cause it, so that anything else breaking the same rule still fails the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KnownIssue {
    /// A short name.
    pub id: &'static str,
    /// What goes wrong.
    pub what: &'static str,
}

/// The known issues.
pub const KNOWN_ISSUES: [KnownIssue; 0] = [];

/// What the checker looked at, and why it let some losses pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// QoS 1 and 2 messages published and acknowledged.
    pub acknowledged: usize,
    /// (message, session) pairs that had to be delivered.
    pub expected: usize,
    /// Of those, delivered.
    pub delivered: usize,
    /// Not delivered: a crash came after the publish.
    pub lost_to_crash: usize,
    /// Not delivered: the session ended before it could be.
    pub lost_to_session_end: usize,
    /// Not delivered: the message may have expired.
    pub lost_to_expiry: usize,
    /// Not delivered: the broker refused it (0x97 to a 5.0 publisher).
    pub refused: usize,
    /// Not delivered: dropped by a limit, which the publisher cannot be told (3.x, or a QoS 2
    /// message that reached other sessions).
    pub dropped_unacknowledgeable: usize,
    /// Wills that had to reach a subscriber.
    pub wills_expected: usize,
    /// Wills that reached them.
    pub wills_delivered: usize,
    /// Retained messages received for new subscriptions.
    pub retained_received: usize,
    /// Deliveries the broker counted as dropped, all brokers of the run together.
    pub counted_drops: u64,
}

/// The checker's verdict on a run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Every broken promise; empty for a run that kept them all.
    pub violations: Vec<Violation>,
    /// What was checked.
    pub tally: Tally,
}

impl Report {
    /// True if no promise was broken, known issues aside.
    pub fn passed(&self) -> bool {
        self.violations.iter().all(|v| v.known.is_some())
    }

    /// True if no promise was broken at all, known issues included.
    pub fn passed_strictly(&self) -> bool {
        self.violations.is_empty()
    }

    /// The instances of known issues.
    pub fn known(&self) -> impl Iterator<Item = &Violation> {
        self.violations.iter().filter(|v| v.known.is_some())
    }

    /// Whether some violation names `rule` (a substring of [`Violation::rule`]).
    pub fn broke(&self, rule: &str) -> bool {
        self.violations.iter().any(|v| v.rule.contains(rule))
    }

    /// The report with the log entries each violation points at, and those just before.
    pub fn explain(&self, log: &Log) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        for (n, v) in self.violations.iter().enumerate() {
            if n == 30 {
                let _ = writeln!(out, "... and {} more", self.violations.len() - n);
                break;
            }
            match v.known {
                Some(id) => {
                    let _ = writeln!(out, "KNOWN ISSUE {id}: {}: {}", v.rule, v.detail);
                }
                None => {
                    let _ = writeln!(out, "VIOLATION {}: {}", v.rule, v.detail);
                }
            }
            if let Some(i) = v.entry {
                for j in i.saturating_sub(3)..=i {
                    if let Some(e) = log.entries.get(j) {
                        let _ = writeln!(out, "    {}#{j:<6} {e}", if j == i { ">" } else { " " });
                    }
                }
            }
        }
        let _ = write!(out, "{:?}", self.tally);
        out
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rule, self.detail)?;
        if let Some(e) = self.entry {
            write!(f, " (entry #{e})")?;
        }
        Ok(())
    }
}

/// Checks a run. See the [module documentation](self) for the rules.
pub fn check(log: &Log) -> Report {
    let mut ctx = Ctx::new(log);
    ctx.sessions();
    ctx.subscriptions();
    ctx.receptions();
    ctx.deliveries();
    ctx.order();
    ctx.retained();
    ctx.wills();
    ctx.liveness_and_protocol();
    ctx.counting();
    Report {
        violations: ctx.violations,
        tally: ctx.tally,
    }
}

/// One connection of one client, as the log shows it.
#[derive(Clone, Debug, Default)]
struct Conn {
    connect: usize,
    connected: Option<(usize, bool)>,
    closed: Option<usize>,
    down: Option<usize>,
    broker_closed: Option<(usize, Option<u8>)>,
    /// The broker crashed while the connection was open: it ended then, with no close.
    crashed: Option<usize>,
}

#[derive(Clone, Debug)]
struct Pub {
    publisher: ClientIdx,
    idx: usize,
    topic: String,
    qos: QoS,
    retain: bool,
    empty: bool,
    expiry: Option<u32>,
    /// The completion: entry and reason code.
    done: Option<(usize, u8)>,
}

impl Pub {
    /// Whether the broker had the message by `done`: acknowledged or refused, but taken.
    fn taken(&self) -> Option<usize> {
        self.done.map(|(d, _)| d)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EndReason {
    Crash,
    CleanStart,
    Closed,
    Lost,
}

/// A stretch of one session's life that the broker must have kept whole.
#[derive(Clone, Debug)]
struct Epoch {
    start: usize,
    /// The earliest point the session may have ended; [`NEVER`] if it lived to the end.
    end: usize,
    reason: Option<EndReason>,
    owner: (ClientIdx, ConnNo),
}

/// Since when a session is offline at the broker (entries), for its expiry. A crash leaves
/// it uncertain: the journal restores an offline session's expiry from when it went offline if
/// it made that durable, and otherwise (its record still says connected) from the restart.
#[derive(Clone, Copy, Debug)]
struct Offline {
    /// The earliest.
    from: usize,
    /// The latest.
    until: usize,
    /// Restored after a crash: the journal may still hold the session as connected, and a
    /// broker that restores it then counts from its start.
    restored: bool,
}

/// A subscription that certainly existed from `start` to `end` (entries).
#[derive(Clone, Debug)]
struct Interval {
    client: ClientIdx,
    filter: String,
    share: Option<String>,
    qos: u8,
    start: usize,
    end: usize,
}

struct Ctx<'a> {
    log: &'a Log,
    entries: &'a [Entry],
    /// Session key (distinct client identifier) of each client.
    key: Vec<usize>,
    keys: usize,
    conns: BTreeMap<(ClientIdx, ConnNo), Conn>,
    pubs: BTreeMap<MsgId, Pub>,
    crashes: Vec<usize>,
    starts: Vec<usize>,
    stops: Vec<usize>,
    end: Option<usize>,
    epochs: Vec<Vec<Epoch>>,
    intervals: Vec<Interval>,
    /// Every filter a client asked for, with when (for the "never subscribed" check).
    asked: Vec<Vec<(usize, String)>>,
    /// Non-retained receptions of each message by each client: entry indexes.
    got: BTreeMap<MsgId, BTreeMap<ClientIdx, Vec<usize>>>,
    counters: Counters,
    /// Losses only a counted drop explains, for the counting check's message.
    drops_needed: Vec<String>,
    violations: Vec<Violation>,
    tally: Tally,
}

fn matches(filter: &str, topic: &str) -> bool {
    match (TopicFilter::new(filter), TopicName::new(topic)) {
        (Ok(f), Ok(t)) => f.matches(&t),
        _ => false,
    }
}

fn share_of(filter: &str) -> Option<String> {
    TopicFilter::new(filter)
        .ok()
        .and_then(|f| f.share_name().map(str::to_owned))
}

impl<'a> Ctx<'a> {
    fn new(log: &'a Log) -> Self {
        let mut ids: Vec<&str> = log.clients.iter().map(|c| c.client_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let key = log
            .clients
            .iter()
            .map(|c| ids.binary_search(&c.client_id.as_str()).unwrap_or(0))
            .collect();
        let mut ctx = Self {
            log,
            entries: &log.entries,
            key,
            keys: ids.len(),
            conns: BTreeMap::new(),
            pubs: BTreeMap::new(),
            crashes: Vec::new(),
            starts: Vec::new(),
            stops: Vec::new(),
            end: None,
            epochs: vec![Vec::new(); ids.len()],
            intervals: Vec::new(),
            asked: vec![Vec::new(); log.clients.len()],
            got: BTreeMap::new(),
            counters: Counters::default(),
            drops_needed: Vec::new(),
            violations: Vec::new(),
            tally: Tally::default(),
        };
        ctx.index();
        ctx
    }

    fn violation(&mut self, rule: &'static str, detail: String, entry: Option<usize>) {
        self.violations.push(Violation {
            rule,
            detail,
            entry,
            known: None,
        });
    }

    /// A violation that is an instance of the known issue `id`; the first few of each.
    // Called where the checker recognises a listed issue; none is listed now.
    #[allow(dead_code)]
    fn known(
        &mut self,
        id: &'static str,
        rule: &'static str,
        detail: String,
        entry: Option<usize>,
    ) {
        debug_assert!(KNOWN_ISSUES.iter().any(|k| k.id == id));
        if self
            .violations
            .iter()
            .filter(|v| v.known == Some(id))
            .count()
            >= 5
        {
            return;
        }
        self.violations.push(Violation {
            rule,
            detail,
            entry,
            known: Some(id),
        });
    }

    fn at(&self, i: usize) -> Duration {
        match self.entries.get(i) {
            Some(e) => e.at,
            None => Duration::MAX,
        }
    }

    fn end_idx(&self) -> usize {
        self.end.unwrap_or(self.entries.len())
    }

    fn crash_in(&self, after: usize, until: usize) -> bool {
        self.crashes.iter().any(|&c| c > after && c <= until)
    }

    fn connected_in(&self, client: ClientIdx, after: usize, until: usize) -> bool {
        self.conns.iter().any(|((c, _), conn)| {
            *c == client && conn.connected.is_some_and(|(i, _)| i > after && i < until)
        })
    }

    /// The latest connection of `client` accepted before `before`, if any.
    fn last_connected(&self, client: ClientIdx, before: usize) -> Option<usize> {
        self.conns
            .iter()
            .filter(|((c, _), _)| *c == client)
            .filter_map(|(_, x)| x.connected.map(|(a, _)| a))
            .filter(|&a| a < before)
            .max()
    }

    /// Any connection of `client` accepted or ended in `after..until`: a publish in flight
    /// then may be sent again.
    fn reconnected_in(&self, client: ClientIdx, after: usize, until: usize) -> bool {
        self.conns.iter().any(|((c, _), conn)| {
            *c == client
                && [conn.connected.map(|(i, _)| i), conn.closed, conn.down]
                    .into_iter()
                    .flatten()
                    .any(|i| i > after && i < until)
        })
    }

    /// Whether the session of `key` may have ended, or begun anew, in `after..until`.
    fn session_changed_in(&self, key: usize, after: usize, until: usize) -> bool {
        self.epochs[key].iter().any(|e| {
            (e.end != NEVER && e.end > after && e.end < until)
                || (e.start > after && e.start < until)
        })
    }

    fn epoch_at(&self, key: usize, i: usize) -> Option<&Epoch> {
        self.epochs[key]
            .iter()
            .rev()
            .find(|e| e.start <= i && i < e.end)
    }

    /// Pass 1: connections, publishes, crashes and restarts, counters.
    fn index(&mut self) {
        for (i, entry) in self.entries.iter().enumerate() {
            match &entry.event {
                Event::Connect { client, conn } => {
                    self.conns.insert(
                        (*client, *conn),
                        Conn {
                            connect: i,
                            ..Conn::default()
                        },
                    );
                }
                Event::Connected {
                    client,
                    conn,
                    session_present,
                } => {
                    if let Some(c) = self.conns.get_mut(&(*client, *conn)) {
                        c.connected = Some((i, *session_present));
                    }
                }
                Event::Closed { client, conn, .. } => {
                    if let Some(c) = self.conns.get_mut(&(*client, *conn)) {
                        c.closed.get_or_insert(i);
                    }
                }
                Event::TransportDown { client, conn } => {
                    if let Some(c) = self.conns.get_mut(&(*client, *conn)) {
                        c.down.get_or_insert(i);
                    }
                }
                Event::BrokerClosed {
                    client,
                    conn,
                    disconnect,
                } => {
                    if let Some(c) = self.conns.get_mut(&(*client, *conn)) {
                        c.broker_closed.get_or_insert((i, *disconnect));
                    }
                }
                Event::Publish {
                    msg,
                    topic,
                    qos,
                    retain,
                    empty,
                    expiry,
                } => {
                    self.pubs.insert(
                        *msg,
                        Pub {
                            publisher: msg.publisher,
                            idx: i,
                            topic: topic.clone(),
                            qos: *qos,
                            retain: *retain,
                            empty: *empty,
                            expiry: *expiry,
                            done: None,
                        },
                    );
                }
                Event::Published { msg, code } => {
                    if let Some(p) = self.pubs.get_mut(msg) {
                        p.done.get_or_insert((i, *code));
                    }
                }
                Event::Crash => {
                    self.crashes.push(i);
                    for c in self.conns.values_mut() {
                        if c.broker_closed.is_none() {
                            c.crashed.get_or_insert(i);
                        }
                    }
                }
                Event::Start => self.starts.push(i),
                Event::Stop => self.stops.push(i),
                Event::End => self.end = Some(i),
                Event::Counters(c) => {
                    self.counters.dropped_inbox_full += c.dropped_inbox_full;
                    self.counters.dropped_queue_full += c.dropped_queue_full;
                    self.counters.dropped_memory_budget += c.dropped_memory_budget;
                    self.counters.dropped_retained += c.dropped_retained;
                    self.counters.protocol_errors += c.protocol_errors;
                }
                _ => {}
            }
        }
        self.tally.counted_drops = self.counters.dropped_deliveries();
    }

    /// Pass 2: the epochs of every session, and whether each resumption was right.
    fn sessions(&mut self) {
        // The first sign, since the key's last accepted connection, that the connection is
        // gone: the earliest moment its session can have gone offline, and so ended.
        let mut first_down: Vec<Option<usize>> = vec![None; self.keys];
        // Since when the key's session is offline at the broker, for its expiry: at the
        // earliest and at the latest (see `Offline`).
        let mut offline_since: Vec<Option<Offline>> = vec![None; self.keys];
        for i in 0..self.entries.len() {
            // An offline session may have expired by now: from here on it is not certain.
            for (k, off) in offline_since.iter().enumerate() {
                let Some(Offline { from: off, .. }) = *off else {
                    continue;
                };
                let Some(owner) = self.epochs[k]
                    .last()
                    .filter(|e| e.end == NEVER)
                    .map(|e| e.owner.0)
                else {
                    continue;
                };
                let expiry = self.log.clients[owner].session_expiry;
                if expiry != u32::MAX
                    && self.at(i) >= self.at(off) + Duration::from_secs(u64::from(expiry))
                {
                    self.end_epoch(k, i, EndReason::Lost);
                }
            }
            let event = self.entries[i].event.clone();
            match event {
                Event::Crash => {
                    // The journal kept every persistent session whose CONNACK went out: it
                    // comes back offline. One that ends with its connection ends here.
                    let restart = self
                        .starts
                        .iter()
                        .copied()
                        .find(|&s| s > i)
                        .unwrap_or(self.end_idx());
                    for k in 0..self.keys {
                        let owner = self.epochs[k]
                            .last()
                            .filter(|e| e.end == NEVER)
                            .map(|e| e.owner.0);
                        if owner.is_some_and(|o| self.log.clients[o].session_expiry == 0) {
                            self.end_epoch(k, i, EndReason::Crash);
                            continue;
                        }
                        offline_since[k] = match (offline_since[k], owner) {
                            // Offline already: from then if the journal made that durable, else
                            // (its record still says connected) from the restart. Even a
                            // session that may have expired: the crash may have lost its end.
                            (Some(Offline { from, .. }), _) => Some(Offline {
                                from,
                                until: restart,
                                restored: true,
                            }),
                            // Online at the crash: offline from the restart.
                            (None, Some(_)) => {
                                first_down[k].get_or_insert(i);
                                Some(Offline {
                                    from: restart,
                                    until: restart,
                                    restored: true,
                                })
                            }
                            (None, None) => None,
                        };
                    }
                }
                Event::Stop => {
                    // A stop writes nothing for an offline session: one whose record still
                    // says connected counts its expiry from the next restart again.
                    let restart = self
                        .starts
                        .iter()
                        .copied()
                        .find(|&s| s > i)
                        .unwrap_or(self.end_idx());
                    for off in offline_since.iter_mut().flatten() {
                        if off.restored {
                            off.until = restart;
                        }
                    }
                }
                Event::Connect { client, .. } if self.log.clients[client].clean_start => {
                    self.end_epoch(self.key[client], i, EndReason::CleanStart);
                }
                Event::Connected {
                    client,
                    conn,
                    session_present,
                } => {
                    let k = self.key[client];
                    // A CONNACK read after the broker already closed its connection (the
                    // client did not read for a while) tells of a state since changed: the
                    // session went offline, or another connection took it over.
                    let closed_before = self
                        .conns
                        .get(&(client, conn))
                        .is_some_and(|c| c.broker_closed.is_some_and(|(b, _)| b < i));
                    if closed_before {
                        continue;
                    }
                    let connect = self.conns.get(&(client, conn)).map_or(i, |c| c.connect);
                    let open = self.epochs[k].last().filter(|e| e.end == NEVER).is_some();
                    // MQTT 3.1's CONNACK has no Session Present flag: a 3.1 client cannot
                    // tell, so its persistent session is taken to go on while it may.
                    let spec = &self.log.clients[client];
                    let session_present = if spec.version == ProtocolVersion::V3_1 {
                        open && !spec.clean_start
                    } else {
                        self.check_resume(client, i, connect, session_present, offline_since[k]);
                        session_present
                    };
                    let start = self.epochs[k].last().map_or(connect, |e| {
                        if e.end == NEVER {
                            connect
                        } else {
                            connect.max(e.end)
                        }
                    });
                    // A Clean Start of another client of the identifier accepted while this
                    // connection was still open, and closed before this CONNACK: this CONNECT
                    // was handled after it (it took that session over, or began when that
                    // connection ended), since a CONNECT accepted first would have been taken
                    // over and closed by the Clean Start.
                    let closed_at = self
                        .conns
                        .get(&(client, conn))
                        .and_then(|c| c.broker_closed.map(|(b, _)| b))
                        .unwrap_or(NEVER);
                    let handled_before = |x: &Conn| {
                        x.connected.is_some_and(|(a, _)| a < closed_at)
                            && x.broker_closed.is_some_and(|(b, _)| b < i)
                    };
                    // A CONNACK that arrives after something ended the session since its
                    // CONNECT (a Clean Start, a crash) tells of a session that is gone. Not
                    // the end of another client's session that ends with its connection: this
                    // CONNECT took that connection over (this one is still open), and its
                    // session came after.
                    let stale = !open
                        && self.epochs[k].last().is_some_and(|e| {
                            let after_it = match e.reason {
                                Some(EndReason::CleanStart) => {
                                    self.conns.iter().any(|((c2, _), x)| {
                                        *c2 != client && x.connect == e.end && handled_before(x)
                                    })
                                }
                                Some(EndReason::Closed) => {
                                    e.owner.0 != client
                                        && self.log.clients[e.owner.0].session_expiry == 0
                                }
                                _ => false,
                            };
                            e.end > connect && !after_it
                        });
                    if stale {
                        // No session to be certain of.
                    } else if !session_present {
                        if open {
                            let from = self.epochs[k].last().map_or(0, |e| e.start);
                            let at = first_down[k].filter(|&d| d > from).unwrap_or(connect);
                            self.end_epoch(k, at, EndReason::Lost);
                        }
                        self.epochs[k].push(Epoch {
                            start,
                            end: NEVER,
                            reason: None,
                            owner: (client, conn),
                        });
                    } else if !open {
                        // Resumed after an end that was only possible (an expiry, a Clean
                        // Start that may have come later).
                        self.epochs[k].push(Epoch {
                            start,
                            end: NEVER,
                            reason: None,
                            owner: (client, conn),
                        });
                    }
                    // A Clean Start of another client of the identifier sent after this
                    // CONNECT may have been handled after it, ending the session just made;
                    // not one handled before it.
                    let ender = self
                        .conns
                        .iter()
                        .filter(|((c2, _), x)| {
                            *c2 != client
                                && self.key[*c2] == k
                                && self.log.clients[*c2].clean_start
                                && x.connect > connect
                                && x.connect < i
                                && !handled_before(x)
                        })
                        .map(|(_, x)| x.connect)
                        .min();
                    if let Some(e) = ender {
                        self.end_epoch(k, e, EndReason::CleanStart);
                    }
                    offline_since[k] = None;
                    first_down[k] = None;
                }
                Event::Closed { client, conn, .. } | Event::TransportDown { client, conn } => {
                    let k = self.key[client];
                    first_down[k].get_or_insert(i);
                    self.end_if_transient(client, conn, i);
                }
                Event::BrokerClosed { client, conn, .. } => {
                    let k = self.key[client];
                    first_down[k].get_or_insert(i);
                    // Offline from here unless another connection of the key is accepted.
                    let other_online = self.conns.iter().any(|((c, n), x)| {
                        self.key[*c] == k
                            && (*c, *n) != (client, conn)
                            && x.connected.is_some_and(|(a, _)| a < i)
                            && x.broker_closed.is_none_or(|(b, _)| b > i)
                            && x.crashed.is_none_or(|c| c > i)
                    });
                    // A connection whose CONNACK never came may not have taken the session
                    // online at all: it may be offline since before.
                    let accepted = self
                        .conns
                        .get(&(client, conn))
                        .is_some_and(|x| x.connected.is_some());
                    if !other_online {
                        offline_since[k] = Some(match offline_since[k] {
                            Some(off) if !accepted => Offline {
                                until: off.until.max(i),
                                ..off
                            },
                            _ => Offline {
                                from: i,
                                until: i,
                                restored: false,
                            },
                        });
                    }
                    self.end_if_transient(client, conn, i);
                }
                _ => {}
            }
        }
    }

    /// A session that ends with its connection (expiry 0) ends at the first sign that the
    /// connection is gone.
    fn end_if_transient(&mut self, client: ClientIdx, conn: ConnNo, i: usize) {
        if self.log.clients[client].session_expiry != 0 {
            return;
        }
        let k = self.key[client];
        if self.epochs[k]
            .last()
            .is_some_and(|e| e.end == NEVER && e.owner == (client, conn))
        {
            self.end_epoch(k, i, EndReason::Closed);
        }
    }

    fn end_epoch(&mut self, key: usize, at: usize, reason: EndReason) {
        if let Some(e) = self.epochs[key].last_mut() {
            if e.end == NEVER {
                e.end = at.max(e.start);
                e.reason = Some(reason);
            }
        }
    }

    /// Whether a connection of `key` asking to keep its session, whose CONNACK never reached
    /// its client, was opened after `after` (from the start if `None`) and before `before`: the
    /// broker may have made a session for it.
    fn unseen_connect(&self, key: usize, after: Option<usize>, before: usize) -> bool {
        self.conns.iter().any(|((c, _), x)| {
            self.key[*c] == key
                && after.is_none_or(|a| x.connect > a)
                && x.connect < before
                && !self.log.clients[*c].clean_start
                // No CONNACK, or one read only after the broker had closed the connection.
                && match (x.connected, x.broker_closed) {
                    (None, _) => true,
                    (Some((a, _)), Some((b, _))) => a > b,
                    (Some(_), None) => false,
                }
        })
    }

    /// Session Present against what the session's history allows.
    fn check_resume(
        &mut self,
        client: ClientIdx,
        i: usize,
        connect: usize,
        present: bool,
        offline_since: Option<Offline>,
    ) {
        let spec = &self.log.clients[client];
        let k = self.key[client];
        if spec.clean_start {
            if present {
                self.violation(
                    "[MQTT-3.2.2-2] Clean Start 1 gets Session Present 0",
                    format!("client {client} ({}) resumed a session", spec.client_id),
                    Some(i),
                );
            }
            return;
        }
        let expiry = Duration::from_secs(u64::from(spec.session_expiry));
        let prev = self.epochs[k].last().cloned();
        // Expiry counts from the session going offline: at the earliest and at the latest.
        let counted_from = offline_since.map(|off| (self.at(off.from), self.at(off.until)));
        if present {
            // A connection whose CONNACK never reached its client may have made a session
            // (the journal may have made its record durable before the crash that kept the
            // CONNACK from going out).
            let Some(prev) = prev else {
                if !self.unseen_connect(k, None, connect) {
                    self.violation(
                        "[MQTT-3.2.2-3] Session Present 1 needs a session",
                        format!("client {client}'s first session was reported present"),
                        Some(i),
                    );
                }
                return;
            };
            if let Some((_, from)) = counted_from {
                if spec.session_expiry != u32::MAX && self.at(connect) > from + expiry + SECOND {
                    self.violation(
                        "[MQTT-4.1.0-2] an expired session is discarded",
                        format!(
                            "client {client}'s session was offline {:?} with expiry {}s and was resumed",
                            self.at(connect) - from,
                            spec.session_expiry
                        ),
                        Some(i),
                    );
                }
            }
            match prev.reason {
                Some(EndReason::CleanStart) => {
                    // The Clean Start that ended it was certainly handled before this
                    // CONNECT was sent: nothing may be resumed.
                    let ender = self.conns.values().find(|c| c.connect == prev.end);
                    if ender.is_some_and(|c| c.connected.is_some_and(|(a, _)| a < connect))
                        && !self.unseen_connect(k, Some(prev.end), connect)
                    {
                        self.violation(
                            "[MQTT-3.1.2-4] Clean Start 1 discards the session",
                            format!("client {client} resumed a session that a Clean Start ended"),
                            Some(i),
                        );
                    }
                }
                // A session that ended with its connection at a crash (expiry 0) is never
                // resumed: its client asks for Clean Start, checked above.
                None | Some(EndReason::Crash | EndReason::Closed | EndReason::Lost) => {}
            }
            // The last session was one that ends with its connection, begun by a Clean Start
            // whose CONNACK reached its client: whatever came before it is gone, and the
            // journal knew so before that CONNACK went out, crash or not [MQTT-3.1.2-4]. A
            // session to resume needs a CONNECT asking for one that the broker may have
            // handled after that Clean Start.
            let (owner, owner_conn) = prev.owner;
            if self.log.clients[owner].session_expiry == 0 {
                let began = self
                    .conns
                    .get(&(owner, owner_conn))
                    .map_or(prev.start, |c| c.connect);
                let handled_before = |x: &Conn| {
                    x.connected.is_some_and(|(a, _)| a < began)
                        || x.broker_closed.is_some_and(|(b, _)| b < began)
                        || x.crashed.is_some_and(|c| c < began)
                };
                let since = self.conns.iter().any(|((c, _), x)| {
                    self.key[*c] == k
                        && !self.log.clients[*c].clean_start
                        && x.connect < connect
                        && !handled_before(x)
                });
                if !since {
                    self.violation(
                        "[MQTT-3.1.2-4] Clean Start 1 discards the session",
                        format!(
                            "client {client} resumed a session, but client {owner}'s Clean Start (connection {owner_conn}) had begun a new one that ended with its connection"
                        ),
                        Some(i),
                    );
                }
            }
            return;
        }
        // Session Present 0: fine if there was none, it ended, or it may have expired. A
        // crash is no excuse: the journal keeps a session whose CONNACK went out.
        let Some(prev) = prev else { return };
        if prev.reason.is_some() {
            return;
        }
        let may_have_expired = match counted_from {
            Some((from, _)) => self.at(i) + SECOND >= from + expiry,
            None => false,
        };
        if !may_have_expired {
            self.violation(
                "[MQTT-3.1.2-4] a persistent session is resumed",
                format!(
                    "client {client} ({}) lost its session (expiry {}s){}",
                    spec.client_id,
                    spec.session_expiry,
                    match counted_from {
                        Some((from, _)) => format!(" after {:?} offline", self.at(i) - from),
                        None => " while it was still connected".to_owned(),
                    }
                ),
                Some(i),
            );
        }
    }

    /// Pass 3: the windows in which each subscription certainly existed.
    ///
    /// A SUBACK opens a window only if nothing else was asked for the filter since its
    /// SUBSCRIBE: an UNSUBSCRIBE sent before the SUBACK arrived is handled after it.
    fn subscriptions(&mut self) {
        // By (client, packet identifier): when the SUBSCRIBE was sent, and its filters.
        type Sent = (usize, Vec<(String, QoS)>);
        let mut pending: BTreeMap<(ClientIdx, u16), Sent> = BTreeMap::new();
        let mut open: BTreeMap<(ClientIdx, String), Interval> = BTreeMap::new();
        let mut touched: BTreeMap<(ClientIdx, String), usize> = BTreeMap::new();
        for i in 0..self.entries.len() {
            match &self.entries[i].event {
                Event::Subscribe {
                    client,
                    packet,
                    filters,
                } => {
                    for (f, _) in filters {
                        self.asked[*client].push((i, f.clone()));
                        touched.insert((*client, f.clone()), i);
                        if let Some(mut iv) = open.remove(&(*client, f.clone())) {
                            iv.end = iv.end.min(i);
                            self.intervals.push(iv);
                        }
                    }
                    pending.insert((*client, *packet), (i, filters.clone()));
                }
                Event::Subscribed {
                    client,
                    packet,
                    codes,
                } => {
                    let Some((sent, filters)) = pending.remove(&(*client, *packet)) else {
                        continue;
                    };
                    // The SUBACK came from a session this client holds: not one another
                    // client of the identifier has taken since.
                    let k = self.key[*client];
                    let Some(epoch_end) = self
                        .epoch_at(k, i)
                        .filter(|e| e.owner.0 == *client)
                        .map(|e| e.end)
                    else {
                        continue;
                    };
                    for ((filter, _), code) in filters.into_iter().zip(codes) {
                        let last = touched.get(&(*client, filter.clone())).copied();
                        if *code >= 0x80 || last != Some(sent) {
                            continue;
                        }
                        let iv = Interval {
                            client: *client,
                            share: share_of(&filter),
                            filter: filter.clone(),
                            qos: *code,
                            start: i,
                            end: epoch_end,
                        };
                        if let Some(mut old) = open.insert((*client, filter), iv) {
                            old.end = old.end.min(i);
                            self.intervals.push(old);
                        }
                    }
                }
                Event::Unsubscribe {
                    client, filters, ..
                } => {
                    for f in filters {
                        touched.insert((*client, f.clone()), i);
                        if let Some(mut iv) = open.remove(&(*client, f.clone())) {
                            iv.end = iv.end.min(i);
                            self.intervals.push(iv);
                        }
                    }
                }
                _ => {}
            }
        }
        self.intervals.extend(open.into_values());
    }

    /// Pass 4: each reception on its own: was it ever published, on this topic, at this QoS,
    /// to a client that asked for it?
    fn receptions(&mut self) {
        for i in 0..self.entries.len() {
            let Event::Received {
                client,
                topic,
                payload,
                qos,
                retain,
                expiry,
            } = &self.entries[i].event
            else {
                continue;
            };
            let (client, qos, retain, expiry) = (*client, *qos, *retain, *expiry);
            let asked = self.asked[client]
                .iter()
                .any(|(a, f)| *a < i && matches(f, topic));
            if !asked {
                self.violation(
                    "[MQTT-3.3.2-3] messages go to matching subscriptions only",
                    format!("client {client} got a message on {topic} without subscribing to it"),
                    Some(i),
                );
            }
            match *payload {
                Payload::Message(id) => {
                    let Some(p) = self.pubs.get(&id).cloned() else {
                        self.violation(
                            "a delivered message was published",
                            format!("client {client} got {id:?}, which nobody published"),
                            Some(i),
                        );
                        continue;
                    };
                    if p.idx > i || p.topic != *topic {
                        self.violation(
                            "a delivered message was published",
                            format!(
                                "client {client} got {id:?} on {topic}, published on {} at entry {}",
                                p.topic, p.idx
                            ),
                            Some(i),
                        );
                        continue;
                    }
                    if qos > p.qos {
                        self.violation(
                            "[MQTT-3.8.4-8] delivered QoS is at most the published QoS",
                            format!(
                                "client {client} got {id:?} at {qos:?}, published at {:?}",
                                p.qos
                            ),
                            Some(i),
                        );
                    }
                    if retain && !p.retain {
                        self.violation(
                            "[MQTT-3.3.1-9] RETAIN is 0 on messages for established subscriptions",
                            format!("client {client} got the non-retained {id:?} with RETAIN 1"),
                            Some(i),
                        );
                    }
                    self.check_expiry(client, i, &p, expiry);
                    if !retain {
                        self.got
                            .entry(id)
                            .or_default()
                            .entry(client)
                            .or_default()
                            .push(i);
                    }
                }
                Payload::Will { client: owner } => {
                    let will = self.log.clients.get(owner).and_then(|c| c.will.clone());
                    match will {
                        Some(w) if w.topic == *topic && qos <= w.qos && !retain => {}
                        _ => self.violation(
                            "a delivered will was set",
                            format!(
                                "client {client} got client {owner}'s will on {topic} at {qos:?}, retain {retain}"
                            ),
                            Some(i),
                        ),
                    }
                }
                Payload::Empty => {
                    if retain {
                        self.violation(
                            "[MQTT-3.3.1-11] an empty retained message is never stored",
                            format!("client {client} got an empty retained message on {topic}"),
                            Some(i),
                        );
                    }
                }
                Payload::Unknown => self.violation(
                    "a delivered message was published",
                    format!("client {client} got a payload nobody sent, on {topic}"),
                    Some(i),
                ),
            }
        }
    }

    /// The Message Expiry Interval of a delivery: the published one less the time waited
    /// [MQTT-3.3.2-6]. Each restart of the broker may round away up to a second.
    fn check_expiry(&mut self, client: ClientIdx, i: usize, p: &Pub, got: Option<u32>) {
        if self.log.clients[client].version != ProtocolVersion::V5 {
            return;
        }
        let waited = self.at(i).saturating_sub(self.at(p.idx)).as_secs();
        let restarts = self.starts.iter().filter(|&&s| s > p.idx && s < i).count() as u64;
        let ok = match (p.expiry, got) {
            (None, None) => true,
            (Some(sent), Some(got)) => {
                u64::from(got) <= u64::from(sent)
                    && u64::from(got) + waited + 1 + restarts >= u64::from(sent)
            }
            _ => false,
        };
        if !ok {
            self.violation(
                "[MQTT-3.3.2-6] the expiry interval is passed on, less the time waited",
                format!(
                    "client {client} got expiry {got:?} for a message published with {:?} {waited}s before",
                    p.expiry
                ),
                Some(i),
            );
        }
    }

    fn received(&self, client: ClientIdx, id: MsgId) -> bool {
        self.got.get(&id).is_some_and(|m| m.contains_key(&client))
    }

    /// The highest QoS of the non-shared subscriptions of `client` to `topic` that certainly
    /// existed from before `from` until after `until`.
    fn certain_qos(&self, client: ClientIdx, topic: &str, from: usize, until: usize) -> Option<u8> {
        self.intervals
            .iter()
            .filter(|iv| {
                iv.client == client
                    && iv.share.is_none()
                    && iv.start < from
                    && iv.end > until
                    && matches(&iv.filter, topic)
            })
            .map(|iv| iv.qos)
            .max()
    }

    /// The latest point at which the session of `epoch` may really have ended: an epoch ends
    /// at the first sign that it may have (a client that saw its connection break), but the
    /// broker may hold the session until it notices, or until the next session shows.
    fn latest_end(&self, key: usize, epoch: &Epoch) -> usize {
        let owner = self.conns.get(&epoch.owner);
        let closed = owner
            .and_then(|c| c.broker_closed.map(|(b, _)| b).or(c.crashed))
            .unwrap_or(epoch.end);
        let next = self
            .conns
            .iter()
            .filter(|((c, _), _)| self.key[*c] == key)
            .find_map(|(_, x)| x.connected.map(|(a, _)| a).filter(|&a| a > epoch.end));
        match next {
            Some(n) => closed.max(n),
            None if epoch.reason == Some(EndReason::Closed)
                && owner.is_some_and(|c| c.broker_closed.is_some() || c.crashed.is_some()) =>
            {
                closed
            }
            None => NEVER,
        }
    }

    /// Why a message that had to reach `keys` may not have, if it may not. With `loosely`,
    /// a session whose end may have come after the publish counts (for shared groups, whose
    /// member may be one that was not certainly subscribed).
    fn loss_excuse(&self, id: MsgId, p: &Pub, keys: &[usize], loosely: bool) -> Option<Excuse> {
        let end = self.end_idx();
        // No crash excuses a loss: the journal made the message durable for every persistent
        // session before its publisher got PUBACK or PUBREC, and a session that ends with its
        // connection ended at the crash, which `session_ended` sees.
        let session_ended = keys.iter().any(|&k| {
            self.epochs[k].iter().any(|e| {
                e.end != NEVER
                    && e.end < end
                    && (e.end >= p.idx || (loosely && self.latest_end(k, e) >= p.idx))
            })
        });
        if session_ended {
            return Some(Excuse::SessionEnded);
        }
        if let Some(e) = p.expiry {
            let alive = Duration::from_secs(u64::from(e));
            if self.at(end) + SECOND >= self.at(p.idx) + alive {
                return Some(Excuse::Expired);
            }
        }
        let (code_at, code) = p.done?;
        if code == 0x97 {
            return Some(Excuse::Refused);
        }
        let v5 = self.log.clients[p.publisher].version == ProtocolVersion::V5;
        // A QoS 2 message that reached another session is acknowledged with success even if a
        // limit dropped it here: a refusal would make the publisher's resend of it a new
        // message [MQTT-4.3.3-9], delivered again to those who have it. It shows as received
        // there, or went to a session that ended before it could be.
        let other = |c: ClientIdx| !keys.contains(&self.key[c]);
        let partly = p.qos == QoS::ExactlyOnce
            && (self
                .got
                .get(&id)
                .is_some_and(|m| m.keys().any(|&c| other(c)))
                || (0..self.log.clients.len()).any(|c| {
                    other(c)
                        && self.asked[c]
                            .iter()
                            .any(|(a, f)| *a < code_at && matches(f, &p.topic))
                        && self.session_changed_in(self.key[c], p.idx, end)
                }));
        if !v5 || partly {
            return Some(Excuse::Unacknowledgeable);
        }
        None
    }

    fn excuse(&mut self, excuse: Excuse, what: impl FnOnce() -> String) {
        if matches!(excuse, Excuse::Refused | Excuse::Unacknowledgeable) {
            self.drops_needed.push(what());
        }
        match excuse {
            Excuse::SessionEnded => self.tally.lost_to_session_end += 1,
            Excuse::Expired => self.tally.lost_to_expiry += 1,
            Excuse::Refused => self.tally.refused += 1,
            Excuse::Unacknowledgeable => self.tally.dropped_unacknowledgeable += 1,
        }
    }

    /// Pass 5: every acknowledged QoS 1 and 2 message reached every session that certainly
    /// subscribed to it, once for QoS 2, and each shared group once.
    fn deliveries(&mut self) {
        let pubs: Vec<(MsgId, Pub)> = self.pubs.iter().map(|(k, v)| (*k, v.clone())).collect();
        let regular: Vec<ClientIdx> = (0..self.log.clients.len())
            .filter(|&c| self.log.clients[c].role == Role::Regular)
            .collect();
        for (id, p) in &pubs {
            self.duplicates(*id, p);
            if p.qos == QoS::AtMostOnce || p.empty {
                continue;
            }
            let Some((done, code)) = p.done else { continue };
            self.tally.acknowledged += 1;
            // Ordinary subscriptions.
            for &s in &regular {
                let Some(granted) = self.certain_qos(s, &p.topic, p.idx, done) else {
                    continue;
                };
                if granted == 0 {
                    continue;
                }
                if code == 0x10 {
                    self.violation(
                        "0x10 No matching subscribers means none matched",
                        format!(
                            "{id:?} on {} was answered 0x10 while client {s} was subscribed",
                            p.topic
                        ),
                        Some(done),
                    );
                }
                self.tally.expected += 1;
                if self.received(s, *id) {
                    self.tally.delivered += 1;
                    continue;
                }
                match self.loss_excuse(*id, p, &[self.key[s]], false) {
                    Some(e) => self.excuse(e, || format!("{id:?} to client {s}")),
                    None => self.violation(
                        "[MQTT-4.5.0-1] an acknowledged message reaches every matching session",
                        format!(
                            "{id:?} ({:?}, on {}) was acknowledged {code:#04x} but never reached client {s}",
                            p.qos, p.topic
                        ),
                        Some(done),
                    ),
                }
            }
            // Shared subscriptions: one member of each group.
            let groups: BTreeSet<String> = self
                .intervals
                .iter()
                .filter(|iv| matches(&iv.filter, &p.topic))
                .filter_map(|iv| iv.share.clone())
                .collect();
            for group in groups {
                // Whoever ever asked to join may be a member.
                let members: BTreeSet<ClientIdx> = (0..self.log.clients.len())
                    .filter(|&c| {
                        self.asked[c]
                            .iter()
                            .any(|(_, f)| share_of(f).as_deref() == Some(group.as_str()))
                    })
                    .collect();
                let receivers: Vec<ClientIdx> = members
                    .iter()
                    .copied()
                    .filter(|m| self.received(*m, *id))
                    .collect();
                let resent = self.reconnected_in(id.publisher, p.idx, done);
                if receivers.len() > 1 && !resent {
                    self.violation(
                        "a shared subscription delivers each message to one member",
                        format!("{id:?} reached members {receivers:?} of group {group}"),
                        Some(done),
                    );
                }
                let certain = self.intervals.iter().any(|iv| {
                    iv.share.as_deref() == Some(group.as_str())
                        && iv.qos > 0
                        && iv.start < p.idx
                        && iv.end > done
                        && matches(&iv.filter, &p.topic)
                });
                // Any member may be chosen: one that may hold the subscription at QoS 0 gets
                // the message at QoS 0, with no promise.
                if !certain || self.may_share_at_qos0(&group, p.idx, done) {
                    continue;
                }
                self.tally.expected += 1;
                if !receivers.is_empty() {
                    self.tally.delivered += 1;
                    continue;
                }
                let keys: Vec<usize> = members.iter().map(|m| self.key[*m]).collect();
                match self.loss_excuse(*id, p, &keys, true) {
                    Some(e) => self.excuse(e, || format!("{id:?} to group {group}")),
                    None => self.violation(
                        "[MQTT-4.5.0-1] an acknowledged message reaches every matching session",
                        format!(
                            "{id:?} on {} was acknowledged {code:#04x} but reached no member of group {group}",
                            p.topic
                        ),
                        Some(done),
                    ),
                }
            }
        }
    }

    /// Whether some client may be a member of shared group `group` at QoS 0 at some point in
    /// `from..=until`. A SUBSCRIBE at QoS 0 may take effect as soon as it is sent; what
    /// replaces it (a SUBSCRIBE at a higher QoS, an UNSUBSCRIBE) certainly has only once the
    /// broker answered it: until then it may be lost with its connection.
    fn may_share_at_qos0(&self, group: &str, from: usize, until: usize) -> bool {
        let in_group = |f: &String| share_of(f).as_deref() == Some(group);
        let mut qos0: BTreeMap<ClientIdx, bool> = BTreeMap::new();
        // Requests that end a QoS 0 membership once answered, by (client, packet).
        let mut replacing: BTreeSet<(ClientIdx, u16)> = BTreeSet::new();
        for (i, e) in self.entries.iter().enumerate().take(until + 1) {
            if i == from && qos0.values().any(|q| *q) {
                return true;
            }
            match &e.event {
                Event::Subscribe {
                    client,
                    packet,
                    filters,
                } => match filters.iter().find(|(f, _)| in_group(f)) {
                    Some((_, QoS::AtMostOnce)) => {
                        if i >= from {
                            return true;
                        }
                        qos0.insert(*client, true);
                    }
                    Some(_) => {
                        replacing.insert((*client, *packet));
                    }
                    None => {}
                },
                Event::Unsubscribe {
                    client,
                    packet,
                    filters,
                } if filters.iter().any(in_group) => {
                    replacing.insert((*client, *packet));
                }
                Event::Subscribed { client, packet, .. }
                | Event::Unsubscribed { client, packet }
                    if replacing.remove(&(*client, *packet)) =>
                {
                    qos0.insert(*client, false);
                }
                _ => {}
            }
        }
        false
    }

    /// Copies of one message at one client beyond the first, each needing a reason.
    fn duplicates(&mut self, id: MsgId, p: &Pub) {
        let receivers: Vec<(ClientIdx, Vec<usize>)> = self
            .got
            .get(&id)
            .map(|m| m.iter().map(|(c, v)| (*c, v.clone())).collect())
            .unwrap_or_default();
        let publisher_key = self.key[id.publisher];
        let flight_end = p.done.map_or(self.end_idx(), |(d, _)| d);
        // The publisher may have sent it again on a new connection; the broker routes a QoS 1
        // message again, and a QoS 2 one only if it lost the publisher's session (then it is
        // a new message to it).
        let resent =
            p.qos != QoS::AtMostOnce && self.reconnected_in(id.publisher, p.idx, flight_end);
        let routed_again = self.session_changed_in(publisher_key, p.idx, flight_end);
        for (c, copies) in receivers {
            for pair in copies.windows(2) {
                let (first, second) = (pair[0], pair[1]);
                let Event::Received { qos, .. } = self.entries[second].event else {
                    continue;
                };
                let reconnected = self.connected_in(c, first, second);
                // A 3.1 client cannot know that its session was resumed, so it forgets the QoS
                // 2 messages it has not seen released: the broker's resend looks new to it.
                let forgot = self.log.clients[c].version == ProtocolVersion::V3_1 && reconnected;
                // Nothing holds a PUBLISH below QoS 2, nor one to a session that is not
                // journaled: it may reach its client before the message's routing is durable.
                // A crash may then lose the routing (the publisher has no PUBREC yet), and the
                // publisher's resend is routed anew: to a session the crash ended, a new
                // message; to one that got the first copy at QoS 0 or 1, a copy like any other
                // at that QoS, whatever its subscription grants now.
                let first_qos = match self.entries[first].event {
                    Event::Received { qos, .. } => qos,
                    _ => QoS::ExactlyOnce,
                };
                let rerouted = self.crashes.iter().any(|&x| {
                    x > first.max(p.idx) && x < second && p.done.is_none_or(|(d, _)| d > x)
                }) && (first_qos != QoS::ExactlyOnce
                    || self.session_changed_in(self.key[c], first, second));
                let excused = match qos {
                    // Delivered at QoS 0 or 1, a copy of each routing may come; at QoS 1 the
                    // broker also sends again what a new connection of the session has not
                    // acknowledged.
                    QoS::AtMostOnce => resent || routed_again,
                    QoS::AtLeastOnce => resent || routed_again || reconnected,
                    QoS::ExactlyOnce => routed_again || forgot || rerouted,
                };
                if excused {
                    continue;
                }
                let rule = match qos {
                    QoS::AtMostOnce => "[MQTT-4.3.1-1] QoS 0 is delivered at most once",
                    QoS::AtLeastOnce => {
                        "[MQTT-4.4.0-1] a QoS 1 message is sent again only on a new connection"
                    }
                    QoS::ExactlyOnce => "[MQTT-4.3.3-2] QoS 2 is delivered exactly once",
                };
                self.violation(
                    rule,
                    format!("client {c} got {id:?} twice (entries {first} and {second})"),
                    Some(second),
                );
            }
        }
    }

    /// Pass 6: per subscriber, publisher, topic and QoS, messages arrive in publish order
    /// [MQTT-4.6.0-6], across crashes too: the journal restores a session's queue in order.
    ///
    /// A message its publisher may have sent again on a new connection (its flow spanned a
    /// reconnection) says nothing about order: the broker received it again after later
    /// ones, and that copy may be the first one a subscriber gets.
    fn order(&mut self) {
        let resent: BTreeSet<MsgId> = self
            .pubs
            .iter()
            .filter(|(id, p)| {
                let until = p.done.map_or(self.end_idx(), |(d, _)| d);
                self.reconnected_in(id.publisher, p.idx, until)
            })
            .map(|(id, _)| *id)
            .collect();
        let mut last: BTreeMap<(ClientIdx, ClientIdx, String, QoS), u32> = BTreeMap::new();
        let mut seen: BTreeSet<(ClientIdx, MsgId)> = BTreeSet::new();
        for i in 0..self.entries.len() {
            let Event::Received {
                client,
                topic,
                payload: Payload::Message(id),
                qos,
                retain: false,
                ..
            } = &self.entries[i].event
            else {
                continue;
            };
            if !seen.insert((*client, *id)) || resent.contains(id) {
                continue;
            }
            let key = (*client, id.publisher, topic.clone(), *qos);
            if let Some(&before) = last.get(&key) {
                if before > id.seq {
                    self.violation(
                        "[MQTT-4.6.0-6] one publisher's messages on a topic arrive in order",
                        format!(
                            "client {client} got message {} of client {} on {topic} ({qos:?}) after message {before}",
                            id.seq, id.publisher
                        ),
                        Some(i),
                    );
                }
            }
            let e = last.entry(key).or_insert(id.seq);
            *e = (*e).max(id.seq);
        }
    }

    /// Retained publishes to `topic`, in publish order.
    fn retained_publishes(&self, topic: &str) -> Vec<(MsgId, Pub)> {
        let mut v: Vec<(MsgId, Pub)> = self
            .pubs
            .iter()
            .filter(|(_, p)| p.retain && p.topic == topic)
            .map(|(k, p)| (*k, p.clone()))
            .collect();
        v.sort_by_key(|(_, p)| p.idx);
        v
    }

    /// The retained messages of `topic` that may be its retained message at some moment in
    /// `from..=until` (entries); `None` stands for "no retained message".
    ///
    /// A retained publish is applied somewhere between its publish call and its completion;
    /// a publish sent after another completed is applied after it. A message is possible if
    /// it was published before `until`, no message certainly applied after it was certainly
    /// applied before `from`, and it had not certainly expired by `from` (the broker checks
    /// expiry when it sends a retained message, after the SUBSCRIBE).
    fn possible_retained(&self, topic: &str, from: usize, until: usize) -> Vec<Option<MsgId>> {
        let all = self.retained_publishes(topic);
        let mut out = Vec::new();
        for (id, p) in &all {
            if p.idx >= until || p.empty {
                continue;
            }
            let replaced = all.iter().any(|(_, w)| {
                w.taken().is_some_and(|wd| wd < from) && p.taken().is_some_and(|pd| w.idx > pd)
            });
            let expired = match (p.expiry, p.taken()) {
                (Some(e), Some(d)) => {
                    self.at(from) > self.at(d) + Duration::from_secs(u64::from(e)) + SECOND
                }
                _ => false,
            };
            if !replaced && !expired {
                out.push(Some(*id));
            }
        }
        // No retained message is impossible only if one without expiry was certainly applied
        // before `from`, and nothing that may have been applied after it could clear it (an
        // empty message, or one that expires), nor could a limit have (`dropped_retained`).
        let held = all.iter().any(|(_, p)| {
            p.taken().is_some_and(|d| d < from)
                && !p.empty
                && p.expiry.is_none()
                && all.iter().all(|(_, w)| {
                    let may_follow =
                        w.idx != p.idx && w.idx < until && w.taken().is_none_or(|wd| wd >= p.idx);
                    !may_follow || (!w.empty && w.expiry.is_none())
                })
        });
        if !held || self.counters.dropped_retained > 0 {
            out.push(None);
        }
        out
    }

    /// Pass 7: retained messages for new subscriptions are the topic's last one
    /// [MQTT-3.3.1-5] [MQTT-3.3.1-6]; the probe at the end gets every topic's.
    fn retained(&mut self) {
        // Every SUBSCRIBE of a filter: (sent, answered or NEVER, filter).
        let mut windows: Vec<Vec<(usize, usize, String)>> =
            vec![Vec::new(); self.log.clients.len()];
        let mut pending: BTreeMap<(ClientIdx, u16), Vec<usize>> = BTreeMap::new();
        for i in 0..self.entries.len() {
            match &self.entries[i].event {
                Event::Subscribe {
                    client,
                    packet,
                    filters,
                } => {
                    let mut slots = Vec::new();
                    for (f, _) in filters {
                        slots.push(windows[*client].len());
                        windows[*client].push((i, NEVER, f.clone()));
                    }
                    pending.insert((*client, *packet), slots);
                }
                Event::Subscribed { client, packet, .. } => {
                    for slot in pending.remove(&(*client, *packet)).unwrap_or_default() {
                        if let Some(w) = windows[*client].get_mut(slot) {
                            w.1 = i;
                        }
                    }
                }
                _ => {}
            }
        }
        for i in 0..self.entries.len() {
            let Event::Received {
                client,
                topic,
                payload: Payload::Message(id),
                retain: true,
                ..
            } = &self.entries[i].event
            else {
                continue;
            };
            self.tally.retained_received += 1;
            // A subscription's retained messages may arrive late: on a later connection of
            // the session, or before the SUBACK of a SUBSCRIBE sent again.
            let ok = windows[*client]
                .iter()
                .filter(|(sent, _, f)| *sent < i && matches(f, topic))
                .any(|&(sent, acked, _)| {
                    self.possible_retained(topic, sent, acked.min(i))
                        .contains(&Some(*id))
                });
            if !ok {
                self.violation(
                    "[MQTT-3.3.1-6] a new subscription gets the topic's last retained message",
                    format!(
                        "client {client} got {id:?} as the retained message of {topic}, which it was not then"
                    ),
                    Some(i),
                );
            }
        }
        // The probe: a new session at the end must get every topic's last retained message.
        let probes: Vec<ClientIdx> = (0..self.log.clients.len())
            .filter(|&c| self.log.clients[c].role == Role::Probe)
            .collect();
        for probe in probes {
            let Some((from, until, filter)) = windows[probe].first().cloned() else {
                continue;
            };
            if until == NEVER {
                continue;
            }
            let topics: BTreeSet<String> = self
                .pubs
                .values()
                .filter(|p| p.retain && matches(&filter, &p.topic))
                .map(|p| p.topic.clone())
                .collect();
            for topic in topics {
                let got = self.entries.iter().skip(until).any(|e| {
                    matches!(&e.event, Event::Received { client, topic: t, retain: true, .. }
                        if *client == probe && *t == topic)
                });
                let possible = self.possible_retained(&topic, from, until);
                if !got && !possible.contains(&None) {
                    self.violation(
                        "[MQTT-3.3.1-6] a new subscription gets the topic's last retained message",
                        format!(
                            "the probe got no retained message for {topic}; it could have been one of {possible:?}"
                        ),
                        Some(until),
                    );
                }
            }
        }
    }

    /// The first entry at or after `t`, and the last entry of that instant: when a broker
    /// that runs at every instant something is due does what is due at `t` (after a clock
    /// jump, the instant may be well past `t`).
    fn instant_at(&self, t: Duration) -> (usize, usize) {
        let lo = self.entries.partition_point(|e| e.at < t);
        let instant = self.at(lo);
        let hi = self.entries.partition_point(|e| e.at <= instant);
        (lo, hi.saturating_sub(1).max(lo))
    }

    /// Pass 8: wills, for each watcher.
    ///
    /// A will goes when the broker handles the loss of its connection, after its delay. The
    /// journal keeps a will from the connection's CONNACK on: a broker that crashes (or
    /// stops) before the delay has run out publishes it after the restart, the delay counted
    /// from when the connection went offline if the journal made that durable, else from the
    /// restart; and a connection the crash itself ended has its will published after the
    /// restart and its delay. A will published before a crash may be lost with it (a will has
    /// no publisher to acknowledge it to), or published again after it.
    fn wills(&mut self) {
        #[derive(Clone, Debug)]
        struct Firing {
            /// When, at the earliest and latest (entries).
            lo: usize,
            hi: usize,
            must: bool,
            /// The broker may have published it before a crash, which may have lost it.
            lossy: bool,
        }
        let end = self.end_idx();
        let mut firings: BTreeMap<ClientIdx, Vec<Firing>> = BTreeMap::new();
        let conns: Vec<((ClientIdx, ConnNo), Conn)> =
            self.conns.iter().map(|(k, v)| (*k, v.clone())).collect();
        // Crashes and graceful stops, each with the restart after it. A stop that a crash
        // cut short made nothing durable: the crash stands for it.
        let mut downs: Vec<(usize, bool, usize)> = self
            .crashes
            .iter()
            .map(|&c| (c, true))
            .chain(self.stops.iter().map(|&s| (s, false)))
            .map(|(d, crash)| {
                let back = self
                    .starts
                    .iter()
                    .copied()
                    .find(|&b| b > d)
                    .unwrap_or(NEVER);
                (d, crash, back)
            })
            .filter(|&(d, crash, back)| crash || !self.crash_in(d, back))
            .collect();
        downs.sort_unstable();
        for ((c, n), conn) in &conns {
            let spec = &self.log.clients[*c];
            let Some(will) = spec.will.clone() else {
                continue;
            };
            let delay = Duration::from_secs(u64::from(will.delay.min(spec.session_expiry)));
            // Where the loss of the connection was handled: by the broker that had it, or
            // after the crash that ended it, by the broker that restored its session.
            // Whether the journal may hold the session as still connected (its offline record
            // lost in a crash, or never written): a restart counts the delay from itself.
            let (closed, mut must, mut record_connected) = match (conn.broker_closed, conn.crashed)
            {
                (Some((_, Some(0))), _) => continue,
                (Some((closed, _)), _) => (closed, conn.connected.is_some(), false),
                (None, Some(crash)) => {
                    let Some(&(_, _, back)) = downs.iter().find(|(d, _, _)| *d == crash) else {
                        continue;
                    };
                    if back == NEVER {
                        continue;
                    }
                    // Its record is durable if its CONNACK went out.
                    (back, conn.connected.is_some(), true)
                }
                (None, None) => continue,
            };
            // The earliest and latest time it is due.
            let mut due = (
                self.at(closed).saturating_add(delay),
                self.at(closed).saturating_add(delay),
            );
            let mut lossy = false;
            for &(d, crash, back) in downs.iter().filter(|(d, _, _)| *d > closed) {
                let fired = self.at(d) >= due.0;
                if fired && (crash || self.at(d) > due.1) {
                    // It may have gone before the broker went down: a crash may have lost it
                    // then; a stop kept it.
                    lossy |= crash;
                    break;
                }
                record_connected |= crash;
                if back == NEVER {
                    must = false;
                    break;
                }
                // Not gone yet: the broker that restores the session publishes it.
                let restarted = self.at(back);
                if !fired {
                    due.0 = due.0.max(restarted);
                }
                due.1 = due.1.max(if record_connected {
                    restarted.saturating_add(delay)
                } else {
                    restarted
                });
            }
            let (mut lo, hi) = if due.0 == self.at(closed) && due.1 == due.0 {
                (closed, closed)
            } else {
                (self.instant_at(due.0).0, self.instant_at(due.1).1)
            };
            must &= hi < end;
            if !delay.is_zero() {
                let next = conns
                    .iter()
                    .filter(|((c2, n2), _)| c2 == c && n2 > n)
                    .map(|(_, x)| x)
                    .next();
                let next_accepted = next.and_then(|x| x.connected).map_or(NEVER, |(a, _)| a);
                // A Clean Start by another client with the identifier ends the session, and the
                // will goes then [MQTT-3.1.2-8]. A Clean Start that takes the connection over
                // closes it: its CONNECT may come first.
                let k = self.key[*c];
                let ended_early = conns.iter().any(|((c2, _), x)| {
                    self.key[*c2] == k
                        && c2 != c
                        && self.log.clients[*c2].clean_start
                        && x.connect > conn.connect
                        && x.connect < hi
                        && x.connect < next_accepted
                });
                if ended_early {
                    lo = lo.min(closed);
                    must = false;
                } else if let Some(next) = next {
                    // Cancelled by the client's next connection, if the broker took it before
                    // the delay ran out [MQTT-3.1.3-9].
                    if next_accepted < lo {
                        continue;
                    }
                    if next.connect <= hi {
                        must = false;
                    }
                }
            }
            firings.entry(*c).or_default().push(Firing {
                lo,
                hi,
                must,
                lossy,
            });
        }
        let watchers: Vec<ClientIdx> = (0..self.log.clients.len())
            .filter(|&w| self.log.clients[w].role == Role::Regular)
            .collect();
        let owners: Vec<ClientIdx> = (0..self.log.clients.len())
            .filter(|&c| self.log.clients[c].will.is_some())
            .collect();
        for &owner in &owners {
            let Some(topic) = self.log.clients[owner]
                .will
                .as_ref()
                .map(|w| w.topic.clone())
            else {
                continue;
            };
            let fires = firings.get(&owner).cloned().unwrap_or_default();
            for &w in &watchers {
                let got: Vec<(usize, QoS)> = self
                    .entries
                    .iter()
                    .enumerate()
                    .filter_map(|(i, e)| match &e.event {
                        Event::Received {
                            client,
                            payload: Payload::Will { client: o },
                            qos,
                            ..
                        } if *client == w && *o == owner => Some((i, *qos)),
                        _ => None,
                    })
                    .collect();
                // At most one copy per firing: match each copy to a firing before it. A QoS 1
                // copy on a later connection of the watcher may be one it got before, sent
                // again: each copy got before the connection may come once more on it.
                let mut used = vec![false; fires.len()];
                let mut resent: BTreeMap<usize, usize> = BTreeMap::new();
                for (n, &(i, qos)) in got.iter().enumerate() {
                    // (A 3.1 watcher forgets its QoS 2 state on reconnecting: a QoS 2 copy
                    // sent again looks new to it.)
                    let forgets = qos == QoS::AtLeastOnce
                        || self.log.clients[w].version == ProtocolVersion::V3_1;
                    let resend = match self.last_connected(w, i) {
                        Some(since) if forgets => {
                            let before = got.iter().take(n).filter(|(g, _)| *g < since).count();
                            let count = resent.entry(since).or_default();
                            *count += 1;
                            *count <= before
                        }
                        _ => false,
                    };
                    if resend {
                        continue;
                    }
                    let slot = (0..fires.len())
                        .filter(|&f| !used[f] && fires[f].lo <= i)
                        .min_by_key(|&f| fires[f].lo);
                    match slot {
                        Some(f) => used[f] = true,
                        None if self.crash_in(0, i) => {}
                        None => self.violation(
                            "[MQTT-3.1.2-8] a will is published once, after its connection is lost, and not after DISCONNECT 0x00",
                            format!("client {w} got client {owner}'s will with no lost connection to publish it for"),
                            Some(i),
                        ),
                    }
                }
                // Every will that had to go reached a watcher that certainly subscribed. The
                // copies all look alike, so each will is matched to a copy after it; the wills
                // with no reason to be missing are matched first, latest first, so that a
                // missing copy is blamed on a will that may be missing where one is.
                let k = self.key[w];
                let mut due: Vec<(bool, &Firing)> = Vec::new();
                for f in fires.iter().filter(|f| f.must) {
                    let watching = self.intervals.iter().any(|iv| {
                        iv.client == w
                            && iv.share.is_none()
                            && iv.qos > 0
                            && iv.start < f.lo
                            && iv.end > f.hi
                            && matches(&iv.filter, &topic)
                    });
                    if watching {
                        let ended = self.epochs[k]
                            .iter()
                            .any(|e| e.end != NEVER && e.end >= f.lo && e.end < end);
                        let excused = f.lossy || ended;
                        due.push((excused, f));
                    }
                }
                due.sort_by_key(|(excused, f)| (*excused, std::cmp::Reverse(f.lo)));
                let mut taken = vec![false; got.len()];
                for (_, f) in due {
                    self.tally.wills_expected += 1;
                    let found = (0..got.len()).find(|&g| !taken[g] && got[g].0 >= f.lo);
                    if let Some(g) = found {
                        taken[g] = true;
                        self.tally.wills_delivered += 1;
                        continue;
                    }
                    let ended = self.epochs[k]
                        .iter()
                        .any(|e| e.end != NEVER && e.end >= f.lo && e.end < end);
                    if f.lossy {
                        self.tally.lost_to_crash += 1;
                    } else if ended {
                        self.tally.lost_to_session_end += 1;
                    } else {
                        // A will has no publisher to tell: a limit may drop it, counted.
                        self.tally.dropped_unacknowledgeable += 1;
                        self.drops_needed.push(format!(
                            "client {owner}'s will (entry {}) to client {w}",
                            f.lo
                        ));
                    }
                }
            }
        }
    }

    /// Pass 9: every flow completes once the faults stop, and nobody breaks the protocol.
    fn liveness_and_protocol(&mut self) {
        let finished = self.end.is_some();
        let pubs: Vec<(MsgId, Pub)> = self.pubs.iter().map(|(k, v)| (*k, v.clone())).collect();
        for (id, p) in pubs {
            let spec = &self.log.clients[id.publisher];
            if let Some((d, code)) = p.done {
                let allowed: &[u8] = if spec.version == ProtocolVersion::V5 {
                    &[0x00, 0x10, 0x97]
                } else {
                    &[0x00]
                };
                if !allowed.contains(&code) {
                    self.violation(
                        "a publish is answered with success, 0x10 or 0x97",
                        format!("{id:?} was answered {code:#04x}"),
                        Some(d),
                    );
                }
            } else if finished && p.qos != QoS::AtMostOnce && spec.role == Role::Regular {
                self.violation(
                    "every QoS 1 and 2 publish completes once the faults stop",
                    format!("{id:?} ({:?} on {}) never completed", p.qos, p.topic),
                    Some(p.idx),
                );
            }
        }
        let mut subscribes: BTreeMap<(ClientIdx, u16), usize> = BTreeMap::new();
        for i in 0..self.entries.len() {
            match &self.entries[i].event {
                Event::Subscribe { client, packet, .. } => {
                    subscribes.insert((*client, *packet), i);
                }
                Event::Subscribed { client, packet, .. } => {
                    subscribes.remove(&(*client, *packet));
                }
                Event::Closed { client, reason, .. } => {
                    let bad = match reason {
                        // A will is held against the memory budget: a CONNECT whose will does
                        // not fit is refused with Quota exceeded, and the drop counted.
                        // (3.x has no Quota exceeded: Server unavailable.)
                        CloseKind::Rejected(code)
                            if *code == 0x97
                                || (*code == 0x88
                                    && self.log.clients[*client].version
                                        != ProtocolVersion::V5) =>
                        {
                            self.log.clients[*client].will.is_none()
                                || self.counters.dropped_memory_budget == 0
                        }
                        CloseKind::ProtocolViolation(_) | CloseKind::Rejected(_) => true,
                        // Taken over, shutting down, keep alive timeout (a frozen client).
                        CloseKind::ServerDisconnect(code) => ![0x8e, 0x8b, 0x8d].contains(code),
                        _ => false,
                    };
                    if bad {
                        self.violation(
                            "the broker keeps the protocol with well-behaved clients",
                            format!("client {client}'s connection ended: {reason:?}"),
                            Some(i),
                        );
                    }
                }
                _ => {}
            }
        }
        if finished {
            for ((client, packet), i) in subscribes {
                if self.log.clients[client].role == Role::Regular {
                    self.violation(
                        "every SUBSCRIBE is answered once the faults stop",
                        format!("client {client}'s SUBSCRIBE {packet} was never answered"),
                        Some(i),
                    );
                }
            }
        }
        if self.counters.protocol_errors > 0 {
            self.violation(
                "the broker keeps the protocol with well-behaved clients",
                format!(
                    "the broker counted {} protocol errors",
                    self.counters.protocol_errors
                ),
                None,
            );
        }
    }

    /// Pass 10: every loss the broker may cause by a limit is counted.
    fn counting(&mut self) {
        let refusals = self
            .pubs
            .values()
            .filter(|p| p.done.is_some_and(|(_, c)| c == 0x97))
            .count() as u64;
        let drops = self.counters.dropped_deliveries();
        if refusals > drops {
            self.violation(
                "every refused delivery is counted",
                format!(
                    "{refusals} publishes were refused with 0x97, but only {drops} drops were counted"
                ),
                None,
            );
        }
        let losses = (self.tally.refused + self.tally.dropped_unacknowledgeable) as u64;
        if losses > drops {
            self.violation(
                "every dropped delivery is counted",
                format!(
                    "{losses} deliveries were lost to limits ({} refused with 0x97, {} that could not be refused), but only {drops} drops were counted: {}",
                    self.tally.refused,
                    self.tally.dropped_unacknowledgeable,
                    self.drops_needed.join(", ")
                ),
                None,
            );
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Excuse {
    SessionEnded,
    Expired,
    Refused,
    Unacknowledgeable,
}

#[cfg(test)]
mod tests;
