//! The simulation's disk: a [`Journal`] whose writes wait in a buffer until the world commits
//! them, and a [`Store`] whose retained messages are rebuilt from what the journal made
//! durable when a broker starts.
//!
//! A real journal makes its changes durable from a thread of its own, many at a time (group
//! commit), some milliseconds after they were written. [`SimJournal`] models that lag: a
//! change is only *submitted* when the broker writes it, and becomes *durable* when the world
//! calls [`SimJournal::commit`] at a moment its seeded generator chose, all pending changes at
//! once. Until then, [`Journal::is_durable`] says no for its ticket and
//! [`Journal::poll_durable`] keeps the caller's waker, woken by the commit.
//!
//! A crash ([`SimJournal::crash`]) throws away what is not durable. The engine the broker
//! ships with commits a batch atomically, and a batch may have been on its way to the disk
//! when the process died, without the broker ever hearing that it was durable: so the crash
//! keeps a prefix of the pending changes (none, all, or a batch boundary in between), never a
//! part of one [`Journal::atomically`] unit. The next broker restores from the durable state
//! alone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use midge_broker::store::{
    Change, Journal, JournalError, RestoredMessage, RestoredSession, Retained, SessionRecord,
};
use midge_broker::{MemoryStore, Store};
use midge_codec::{ByteStr, PacketId};
use midge_proto::session::{Delivery, SessionChange, SessionSubscription};
use midge_topic::{TopicFilter, TopicName};

use crate::rng::Rng;

/// How a journal keeps its promise; anything but [`Durability::Honest`] breaks it, to show
/// that the checker notices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// A ticket is durable once a commit has made everything up to it durable.
    #[default]
    Honest,
    /// Every ticket is reported durable at once, while the changes still wait for a commit:
    /// the broker acknowledges what a crash then loses.
    AcksEarly,
    /// A crash may cut a unit that had to be kept whole, keeping only part of its changes.
    TearsUnits,
}

/// A change, owned: what the broker wrote, kept until a commit applies it to the durable
/// state or a crash throws it away.
#[derive(Clone, Debug)]
enum Write {
    Session(SessionRecord),
    Subscribe(ByteStr, ByteStr, SessionSubscription),
    Unsubscribe(ByteStr, ByteStr),
    Enqueue(ByteStr, Delivery),
    Delivery(ByteStr, SessionChange),
    WillDone(ByteStr),
    RemoveSession(ByteStr),
    Retained(ByteStr, Option<Retained>),
}

impl Write {
    fn of(change: Change<'_>) -> Self {
        match change {
            Change::Session(record) => Self::Session(record.clone()),
            Change::Subscribe {
                client_id,
                filter,
                subscription,
            } => Self::Subscribe(client_id.clone(), filter.clone(), subscription),
            Change::Unsubscribe { client_id, filter } => {
                Self::Unsubscribe(client_id.clone(), filter.clone())
            }
            Change::Enqueue {
                client_id,
                delivery,
            } => Self::Enqueue(client_id.clone(), delivery.clone()),
            Change::Delivery { client_id, change } => Self::Delivery(client_id.clone(), change),
            Change::WillDone { client_id } => Self::WillDone(client_id.clone()),
            Change::RemoveSession { client_id } => Self::RemoveSession(client_id.clone()),
            Change::Retained { topic, retained } => {
                Self::Retained(topic.clone(), retained.cloned())
            }
            // A change this model cannot keep would pass for one a crash lost: the
            // simulation must learn it first.
            change => panic!("the simulated journal does not know {change:?}"),
        }
    }
}

/// One session as the disk holds it.
#[derive(Clone, Debug)]
struct Kept {
    record: SessionRecord,
    subscriptions: BTreeMap<ByteStr, SessionSubscription>,
    /// By delivery tag: tags grow, so this is the order the messages were queued in.
    messages: BTreeMap<u64, RestoredMessage>,
    incoming_qos2: BTreeSet<PacketId>,
}

/// What the disk holds.
#[derive(Clone, Debug, Default)]
struct Disk {
    sessions: BTreeMap<ByteStr, Kept>,
    retained: BTreeMap<ByteStr, Retained>,
}

impl Disk {
    fn apply(&mut self, write: Write) {
        match write {
            Write::Session(record) => match self.sessions.get_mut(&record.client_id) {
                Some(kept) => kept.record = record,
                None => {
                    self.sessions.insert(
                        record.client_id.clone(),
                        Kept {
                            record,
                            subscriptions: BTreeMap::new(),
                            messages: BTreeMap::new(),
                            incoming_qos2: BTreeSet::new(),
                        },
                    );
                }
            },
            Write::RemoveSession(client_id) => {
                self.sessions.remove(&client_id);
            }
            Write::WillDone(client_id) => {
                if let Some(kept) = self.sessions.get_mut(&client_id) {
                    kept.record.will = None;
                }
            }
            Write::Subscribe(client_id, filter, subscription) => {
                if let Some(kept) = self.sessions.get_mut(&client_id) {
                    kept.subscriptions.insert(filter, subscription);
                }
            }
            Write::Unsubscribe(client_id, filter) => {
                if let Some(kept) = self.sessions.get_mut(&client_id) {
                    kept.subscriptions.remove(&filter);
                }
            }
            Write::Enqueue(client_id, delivery) => {
                if let Some(kept) = self.sessions.get_mut(&client_id) {
                    kept.messages
                        .insert(delivery.tag, RestoredMessage::Queued(delivery));
                }
            }
            Write::Delivery(client_id, change) => {
                if let Some(kept) = self.sessions.get_mut(&client_id) {
                    kept.change(change);
                }
            }
            Write::Retained(topic, Some(retained)) => {
                self.retained.insert(topic, retained);
            }
            Write::Retained(topic, None) => {
                self.retained.remove(&topic);
            }
        }
    }
}

impl Kept {
    fn change(&mut self, change: SessionChange) {
        match change {
            SessionChange::Sent { tag, packet_id } => {
                if let Some(m) = self.messages.get_mut(&tag) {
                    if let RestoredMessage::Queued(d) = m {
                        *m = RestoredMessage::Sent(packet_id, d.clone());
                    }
                }
            }
            SessionChange::Released { tag, packet_id } => {
                if let Some(m) = self.messages.get_mut(&tag) {
                    *m = RestoredMessage::Released(packet_id, tag);
                }
            }
            SessionChange::Finished { tag } => {
                self.messages.remove(&tag);
            }
            SessionChange::IncomingQos2 { packet_id } => {
                self.incoming_qos2.insert(packet_id);
            }
            SessionChange::IncomingReleased { packet_id } => {
                self.incoming_qos2.remove(&packet_id);
            }
            change => panic!("the simulated journal does not know {change:?}"),
        }
    }

    fn restored(&self) -> RestoredSession {
        let mut restored = RestoredSession::new(self.record.clone());
        restored.subscriptions = self
            .subscriptions
            .iter()
            .map(|(f, s)| (f.clone(), *s))
            .collect();
        // Queued messages are counted; the broker reads them when the client returns
        // (`Journal::queued`).
        for message in self.messages.values() {
            match message {
                RestoredMessage::Queued(d) => {
                    restored.queued += 1;
                    restored.queued_bytes += d.size();
                }
                other => restored.messages.push(other.clone()),
            }
        }
        restored.incoming_qos2 = self.incoming_qos2.iter().copied().collect();
        restored
    }
}

#[derive(Debug, Default)]
struct State {
    tags: u64,
    /// Changes written so far, durable or not: the ticket of the last one.
    submitted: u64,
    /// Every ticket up to this one is durable.
    durable: u64,
    /// Written, not durable yet, oldest first.
    pending: Vec<Write>,
    /// Where each complete unit of `pending` ends: a crash may keep `pending` up to one of
    /// these, never a part of a unit.
    units: Vec<usize>,
    /// Inside [`Journal::atomically`].
    atomic: bool,
    disk: Disk,
    wakers: Vec<Waker>,
    mode: Durability,
    commits: u64,
}

/// A journal whose writes become durable only when the simulation commits them; see the
/// [module documentation](self).
#[derive(Default)]
pub struct SimJournal {
    state: Mutex<State>,
}

impl std::fmt::Debug for SimJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("SimJournal")
            .field("submitted", &s.submitted)
            .field("durable", &s.durable)
            .field("sessions", &s.disk.sessions.len())
            .field("retained", &s.disk.retained.len())
            .field("commits", &s.commits)
            .finish()
    }
}

impl SimJournal {
    /// An empty journal.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the journal keep its promise as `mode` says.
    pub fn set_durability(&self, mode: Durability) {
        self.lock().mode = mode;
    }

    /// Whether changes wait for a commit.
    pub fn has_pending(&self) -> bool {
        !self.lock().pending.is_empty()
    }

    /// Makes every pending change durable, and wakes whoever waits for one. Returns whether
    /// there was anything to commit.
    pub fn commit(&self) -> bool {
        let mut s = self.lock();
        if s.pending.is_empty() {
            return false;
        }
        let pending = std::mem::take(&mut s.pending);
        for write in pending {
            s.disk.apply(write);
        }
        s.units.clear();
        s.durable = s.submitted;
        s.commits += 1;
        let wakers = std::mem::take(&mut s.wakers);
        drop(s);
        for waker in wakers {
            waker.wake();
        }
        true
    }

    /// The process dies: what is not durable is lost, but for a batch that may have been on
    /// its way to the disk, which `rng` decides. Returns how many changes were lost.
    pub fn crash(&self, rng: &mut Rng) -> usize {
        let mut s = self.lock();
        let pending = std::mem::take(&mut s.pending);
        let units = std::mem::take(&mut s.units);
        let kept = match s.mode {
            // Some of the units written, as a batch the committer had taken when the process
            // died: none of them, all, or up to a unit's end.
            Durability::Honest | Durability::AcksEarly => match rng.below(3) {
                0 => 0,
                1 => pending.len(),
                _ => units.get(rng.index(units.len())).copied().unwrap_or(0),
            },
            Durability::TearsUnits => rng.below(pending.len() as u64 + 1) as usize,
        };
        let lost = pending.len() - kept;
        for write in pending.into_iter().take(kept) {
            s.disk.apply(write);
        }
        // What was lost is no more: no ticket waits for it.
        s.durable = s.submitted;
        s.wakers.clear();
        s.atomic = false;
        lost
    }

    /// The retained messages on the disk, for a broker that starts.
    pub fn durable_retained(&self) -> Vec<(ByteStr, Retained)> {
        self.lock()
            .disk
            .retained
            .iter()
            .map(|(t, r)| (t.clone(), r.clone()))
            .collect()
    }
}

impl Journal for SimJournal {
    fn next_tag(&self) -> u64 {
        let mut s = self.lock();
        s.tags += 1;
        s.tags
    }

    fn write(&self, change: Change<'_>) {
        let write = Write::of(change);
        let mut s = self.lock();
        s.pending.push(write);
        s.submitted += 1;
        if !s.atomic {
            let end = s.pending.len();
            s.units.push(end);
        }
    }

    fn atomically(&self, f: &mut dyn FnMut()) {
        {
            let mut s = self.lock();
            assert!(!s.atomic, "Journal::atomically is not to be nested");
            s.atomic = true;
        }
        f();
        let mut s = self.lock();
        s.atomic = false;
        // The simulation commits only between the broker's calls, so a unit is never cut by
        // a commit; only a crash could, and it keeps units whole.
        let end = s.pending.len();
        if s.units.last().copied().unwrap_or(0) != end {
            s.units.push(end);
        }
    }

    fn submitted(&self) -> u64 {
        self.lock().submitted
    }

    fn poll_durable(&self, ticket: u64, cx: &mut Context<'_>) -> Poll<Result<(), JournalError>> {
        let mut s = self.lock();
        if s.mode == Durability::AcksEarly || ticket <= s.durable {
            return Poll::Ready(Ok(()));
        }
        if !s.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            s.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    fn is_durable(&self, ticket: u64) -> bool {
        let s = self.lock();
        s.mode == Durability::AcksEarly || ticket <= s.durable
    }

    /// Makes what is pending durable first, as a disk store does: the queue read back must
    /// hold every message written before.
    fn queued(&self, client_id: &ByteStr, now: Instant) -> Vec<Delivery> {
        self.commit();
        self.lock()
            .disk
            .sessions
            .get(client_id)
            .map_or_else(Vec::new, |kept| {
                kept.messages
                    .values()
                    .filter_map(|m| match m {
                        RestoredMessage::Queued(d) if !d.is_expired(now) => Some(d.clone()),
                        _ => None,
                    })
                    .collect()
            })
    }

    /// In client identifier order, so that a simulation replays exactly.
    fn restore(&self, _now: Instant) -> Vec<RestoredSession> {
        self.lock()
            .disk
            .sessions
            .values()
            .map(Kept::restored)
            .collect()
    }
}

/// A broker's store in the simulation: retained messages in memory, rebuilt from the
/// journal's disk when the broker starts (what a crash lost of them is gone), and the shared
/// [`SimJournal`].
#[derive(Debug)]
pub(crate) struct SimStore {
    retained: MemoryStore,
    journal: Arc<SimJournal>,
}

impl SimStore {
    /// The store of a broker starting on `journal`'s disk.
    pub(crate) fn new(journal: Arc<SimJournal>) -> Self {
        let retained = MemoryStore::new();
        for (topic, message) in journal.durable_retained() {
            if let Ok(name) = TopicName::new(topic.as_str()) {
                retained.set_retained(&name, Some(message));
            }
        }
        Self { retained, journal }
    }
}

impl Store for SimStore {
    fn set_retained(&self, topic: &TopicName<'_>, message: Option<Retained>) -> Option<Retained> {
        self.retained.set_retained(topic, message)
    }

    fn retained_matching(&self, filter: &TopicFilter<'_>, visit: &mut dyn FnMut(&Retained)) {
        self.retained.retained_matching(filter, visit);
    }

    fn retained_count(&self) -> usize {
        self.retained.retained_count()
    }

    fn remove_expired_retained(&self, topic: &TopicName<'_>, expired: &Retained) -> bool {
        self.retained.remove_expired_retained(topic, expired)
    }

    fn journal(&self) -> Option<&dyn Journal> {
        Some(&*self.journal)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use midge_broker::BrokerConfig;
    use midge_codec::{ProtocolVersion, QoS};
    use midge_proto::client::ClientConfig;

    use super::Durability;
    use crate::check::Report;
    use crate::log::{ClientIdx, ClientSpec, Event, Role};
    use crate::world::{NetConfig, World};

    /// When the broker crashes in [`crash_after_publish`].
    #[derive(Clone, Copy, Debug)]
    enum CrashWhen {
        /// As soon as the publisher has its acknowledgement.
        Acknowledged,
        /// As soon as the broker has routed the message, before its changes are durable.
        Routed,
    }

    fn client(world: &mut World, id: &str) -> ClientIdx {
        let mut config = ClientConfig::new(ProtocolVersion::V5, id.to_owned());
        config.clean_start = false;
        config.keep_alive = 30;
        config.resubscribe = false;
        config.properties.session_expiry_interval = Some(3600);
        let spec = ClientSpec {
            client_id: id.to_owned(),
            version: ProtocolVersion::V5,
            role: Role::Regular,
            clean_start: false,
            session_expiry: 3600,
            will: None,
        };
        world.add_client(spec, config)
    }

    fn logged(world: &World, mut f: impl FnMut(&Event) -> bool) -> bool {
        world.log.entries.iter().any(|e| f(&e.event))
    }

    /// A subscriber to `t/#` goes offline; a publisher sends one message at `qos`; the broker
    /// crashes (`when`) with commits 30 ms apart, on a journal that keeps its promise as
    /// `mode` says; both clients come back. With `queue_full`, the subscriber's queue holds
    /// one message, all it may, before the publish. Returns the checker's report and how many
    /// changes the crash lost.
    fn crash_after_publish(
        seed: u64,
        mode: Durability,
        qos: QoS,
        when: CrashWhen,
        queue_full: bool,
    ) -> (Report, usize, String) {
        let mut config = BrokerConfig::default();
        config.sys.interval_secs = 0;
        if queue_full {
            config.sessions.max_queued_messages = 1;
        }
        let net = NetConfig {
            latency_ms: (5, 5),
            window: (64 * 1024, 64 * 1024),
        };
        let mut world = World::new(config, net, seed);
        world.set_commit_delay(30, 30);
        world.set_durability(mode);
        let s = client(&mut world, "s");
        let p = client(&mut world, "p");
        world.connect(s);
        assert!(world.run_until(1_000, |w| w.clients[s].connected));
        world.subscribe(s, &[("t/#".to_owned(), QoS::ExactlyOnce)]);
        assert!(world.run_until(1_000, |w| logged(w, |e| matches!(
            e,
            Event::Subscribed { .. }
        ))));
        world.disconnect(s, 0);
        assert!(world.run_until(1_000, |w| logged(w, |e| matches!(
            e,
            Event::BrokerClosed { .. }
        ))));
        world.connect(p);
        assert!(world.run_until(1_000, |w| w.clients[p].connected));
        if queue_full {
            let first = world.publish(p, "t/a", QoS::AtLeastOnce, false, false, None);
            assert!(world.run_until(1_000, |w| logged(
                w,
                |e| matches!(e, Event::Published { msg, .. } if Some(*msg) == first)
            )));
        }
        assert!(world.run_until(1_000, |w| !w.journal().has_pending()));
        let Some(msg) = world.publish(p, "t/a", qos, false, false, None) else {
            panic!("the client takes the publish");
        };
        let crash_now = |w: &World| match when {
            CrashWhen::Acknowledged => logged(
                w,
                |e| matches!(e, Event::Published { msg: m, .. } if *m == msg),
            ),
            CrashWhen::Routed => w.journal().has_pending(),
        };
        assert!(world.run_until(1_000, crash_now), "{when:?} comes");
        let lost = world.crash(true);
        world.restart();
        world.connect(s);
        world.connect(p);
        let settled = world.run_until(20_000, |w| {
            w.clients[s].connected && w.clients[p].connected && w.clients[p].client.in_flight() == 0
        });
        assert!(settled, "both clients come back and the publish completes");
        let until = world.now() + Duration::from_secs(2);
        world.run_until(20_000, |w| w.now() >= until);
        let report = world.finish();
        let explained = report.explain(&world.log);
        (report, lost, explained)
    }

    #[test]
    fn an_honest_journal_keeps_what_the_broker_acknowledged_through_a_crash() {
        for seed in 0..10 {
            for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
                for when in [CrashWhen::Acknowledged, CrashWhen::Routed] {
                    let (report, _, explained) =
                        crash_after_publish(seed, Durability::Honest, qos, when, false);
                    assert!(
                        report.passed_strictly(),
                        "seed {seed}, {qos:?}, crash when {when:?}:\n{explained}"
                    );
                }
            }
        }
    }

    /// A journal that calls a ticket durable before it is: the PUBACK goes out, the crash
    /// loses the message, and the checker must say so.
    #[test]
    fn the_checker_catches_a_journal_that_acknowledges_before_it_is_durable() {
        let mut caught = 0;
        for seed in 0..20 {
            let (report, lost, explained) = crash_after_publish(
                seed,
                Durability::AcksEarly,
                QoS::AtLeastOnce,
                CrashWhen::Acknowledged,
                false,
            );
            if report.broke("MQTT-4.5.0-1") {
                assert!(
                    lost > 0,
                    "seed {seed}: a loss with nothing lost:\n{explained}"
                );
                caught += 1;
            } else {
                // Only a crash that happened to keep the message lets it through.
                assert!(report.passed_strictly(), "seed {seed}:\n{explained}");
            }
        }
        assert!(caught > 0, "no seed lost the acknowledged message");
    }

    /// A journal whose crash cuts an atomic unit: the publisher's QoS 2 identifier is kept
    /// without the message's routing, so its resend is taken for a duplicate and the message
    /// is lost (or the routing without the identifier, and it is delivered twice).
    #[test]
    fn the_checker_catches_a_journal_that_tears_a_unit() {
        let mut caught = 0;
        for seed in 0..30 {
            let (report, _, explained) = crash_after_publish(
                seed,
                Durability::TearsUnits,
                QoS::ExactlyOnce,
                CrashWhen::Routed,
                false,
            );
            if report.broke("MQTT-4.5.0-1") || report.broke("MQTT-4.3.3-2") {
                caught += 1;
            } else {
                assert!(report.passed_strictly(), "seed {seed}:\n{explained}");
            }
        }
        assert!(caught > 0, "no seed tore the unit");
    }

    /// A QoS 2 message the broker refused (PUBREC 0x97: the subscriber's queue is full) must
    /// not be acknowledged with success after a crash: a crash that keeps the message's
    /// identifier [MQTT-4.3.3-10] but not its refusal makes the publisher's resend look like
    /// a duplicate of a message the broker has, and it answers PUBREC 0x00 for a message it
    /// dropped.
    #[test]
    fn a_refused_qos_2_message_is_not_acknowledged_after_a_crash() {
        for seed in 0..30 {
            let (report, _, explained) = crash_after_publish(
                seed,
                Durability::Honest,
                QoS::ExactlyOnce,
                CrashWhen::Routed,
                true,
            );
            assert!(report.passed_strictly(), "seed {seed}:\n{explained}");
        }
    }

    /// A Clean Start discards the session its client identifier had [MQTT-3.1.2-4], and its
    /// CONNACK says so: a crash after that CONNACK must not bring the old session back.
    #[test]
    fn a_session_a_clean_start_discarded_stays_discarded_through_a_crash() {
        for seed in 0..10 {
            let mut config = BrokerConfig::default();
            config.sys.interval_secs = 0;
            let net = NetConfig {
                latency_ms: (5, 5),
                window: (64 * 1024, 64 * 1024),
            };
            let mut world = World::new(config, net, seed);
            world.set_commit_delay(30, 30);
            let victim = client(&mut world, "v");
            let mut config = ClientConfig::new(ProtocolVersion::V5, "v".to_owned());
            config.keep_alive = 30;
            let intruder = world.add_client(
                ClientSpec {
                    client_id: "v".to_owned(),
                    version: ProtocolVersion::V5,
                    role: Role::Intruder,
                    clean_start: true,
                    session_expiry: 0,
                    will: None,
                },
                config,
            );
            world.connect(victim);
            assert!(world.run_until(1_000, |w| w.clients[victim].connected));
            world.subscribe(victim, &[("t/#".to_owned(), QoS::AtLeastOnce)]);
            assert!(world.run_until(1_000, |w| logged(w, |e| matches!(
                e,
                Event::Subscribed { .. }
            ))));
            world.disconnect(victim, 0);
            assert!(world.run_until(1_000, |w| logged(w, |e| matches!(
                e,
                Event::BrokerClosed { .. }
            ))));
            world.connect(intruder);
            assert!(world.run_until(1_000, |w| w.clients[intruder].connected));
            let _ = world.crash(true);
            world.restart();
            world.connect(victim);
            assert!(world.run_until(1_000, |w| w.clients[victim].connected));
            let report = world.finish();
            assert!(
                !report.broke("MQTT-3.1.2-4"),
                "seed {seed}:\n{}",
                report.explain(&world.log)
            );
        }
    }
}
