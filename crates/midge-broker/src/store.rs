//! Seams for persistence and clustering: [`Store`] holds retained messages and persistent
//! sessions; [`Cluster`] forwards routed messages to other nodes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use midge_codec::{ByteStr, PacketId, ProtocolVersion, Will};
use midge_proto::session::{Delivery, SessionChange, SessionSubscription};
use midge_topic::{RetainedIndex, TopicFilter, TopicName};

/// A retained message, with the time the broker received it (its Message Expiry Interval
/// counts down from then).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Retained {
    /// The message, shared with every delivery of it.
    pub message: Arc<midge_proto::Message>,
    /// When it was received.
    pub received_at: Instant,
}

impl Retained {
    /// A retained message received at `received_at`.
    pub fn new(message: Arc<midge_proto::Message>, received_at: Instant) -> Self {
        Self {
            message,
            received_at,
        }
    }
}

/// A session's record in a [`Journal`]: who the client is, how long the session lasts, and
/// its will.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct SessionRecord {
    /// The client identifier.
    pub client_id: ByteStr,
    /// The user name the client connected with, for the hooks that see its will.
    pub username: Option<ByteStr>,
    /// The protocol version the client connected with.
    pub version: ProtocolVersion,
    /// Session Expiry Interval in seconds; `u32::MAX`: never. 0: the session ends with its
    /// connection, and is recorded only for its will.
    pub expiry_interval: u32,
    /// Whether a connection held the session when this was recorded. A session recorded as
    /// connected by a broker that stopped without closing it was lost ungracefully: its will
    /// is published after the restart [MQTT-3.1.2-8].
    pub connected: bool,
    /// When the client went offline (for an offline session): its expiry and its will's
    /// delay count from then, across restarts. A journal that outlives the process keeps it
    /// as wall-clock time and gives it back on the clock of [`Journal::restore`]'s `now`.
    pub offline_since: Instant,
    /// The will and its Will Delay Interval in seconds: of the connection (published if the
    /// broker dies with it), or waiting for its delay (offline).
    pub will: Option<(Will, u32)>,
}

impl SessionRecord {
    /// A record of a client connected at `now`, with no will.
    pub fn new(
        client_id: ByteStr,
        version: ProtocolVersion,
        expiry_interval: u32,
        now: Instant,
    ) -> Self {
        Self {
            client_id,
            username: None,
            version,
            expiry_interval,
            connected: true,
            offline_since: now,
            will: None,
        }
    }
}

/// A change to what a [`Journal`] keeps. Messages for a session are named by their
/// [`Delivery::tag`], from [`Journal::next_tag`].
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Change<'a> {
    /// A session began or resumed, went offline, or changed its will or expiry: the record
    /// replaces the one kept. A new session (Clean Start) comes after
    /// [`Change::RemoveSession`] of the old one.
    Session(&'a SessionRecord),
    /// The session subscribed to `filter`, or changed that subscription's options.
    Subscribe {
        /// The client.
        client_id: &'a ByteStr,
        /// The topic filter, as the client sent it (with `$share/…` for a shared one).
        filter: &'a ByteStr,
        /// The subscription.
        subscription: SessionSubscription,
    },
    /// The session unsubscribed from `filter`.
    Unsubscribe {
        /// The client.
        client_id: &'a ByteStr,
        /// The topic filter.
        filter: &'a ByteStr,
    },
    /// A QoS 1 or 2 message was queued for the session, named by `delivery.tag`.
    Enqueue {
        /// The client.
        client_id: &'a ByteStr,
        /// The delivery.
        delivery: &'a Delivery,
    },
    /// A change to a queued message's flow, or to the session's incoming QoS 2 identifiers.
    Delivery {
        /// The client.
        client_id: &'a ByteStr,
        /// What changed.
        change: SessionChange,
    },
    /// The session's will was published (or dropped): a restart must not publish it.
    WillDone {
        /// The client.
        client_id: &'a ByteStr,
    },
    /// The session ended: everything kept for it goes.
    RemoveSession {
        /// The client.
        client_id: &'a ByteStr,
    },
    /// The retained message of `topic` was set, or deleted (`None`).
    Retained {
        /// The topic.
        topic: &'a ByteStr,
        /// The new message.
        retained: Option<&'a Retained>,
    },
}

/// A message of a restored session, in the order it was queued.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum RestoredMessage {
    /// Queued, not sent yet (or a QoS 1 message sent and not acknowledged: it is sent again).
    Queued(Delivery),
    /// A QoS 2 message sent as this packet identifier and not acknowledged.
    Sent(PacketId, Delivery),
    /// A QoS 2 message whose PUBREC came: its PUBREL is sent again.
    Released(PacketId, u64),
}

/// A session as a [`Journal`] kept it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RestoredSession {
    /// The record.
    pub record: SessionRecord,
    /// Its subscriptions.
    pub subscriptions: Vec<(ByteStr, SessionSubscription)>,
    /// Its messages in flight (sent and not acknowledged), oldest first. Queued messages
    /// stay in the journal until the client returns ([`Journal::queued`]).
    pub messages: Vec<RestoredMessage>,
    /// How many messages are queued for it in the journal.
    pub queued: usize,
    /// Their size, as [`Delivery::size`] counts it.
    pub queued_bytes: usize,
    /// QoS 2 identifiers received from the client and not yet released.
    pub incoming_qos2: Vec<PacketId>,
}

impl RestoredSession {
    /// An empty session of `record`.
    pub fn new(record: SessionRecord) -> Self {
        Self {
            record,
            subscriptions: Vec::new(),
            messages: Vec::new(),
            queued: 0,
            queued_bytes: 0,
            incoming_qos2: Vec::new(),
        }
    }
}

/// Why a journal could not keep what it was given.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// Writing or syncing failed: nothing written since the last durable point may be
    /// relied on, and the journal takes no more.
    #[error("the store failed: {0}")]
    Failed(Arc<str>),
}

/// The durable side of a [`Store`]: every change to a persistent session, written as it
/// happens, so that a broker that dies (even by `kill -9`) restarts with what it acknowledged.
///
/// The broker writes changes with [`Journal::write`], in the order they happen, and reads
/// [`Journal::submitted`] afterwards: nothing that depends on those changes (a PUBACK, a
/// PUBREC, a SUBACK, a QoS 2 PUBLISH, a PUBREL) is sent before [`Journal::poll_durable`] says
/// that ticket is durable. Changes made inside one [`Journal::atomically`] call become durable
/// together or not at all.
///
/// An implementation buffers changes and makes them durable from a thread of its own, many
/// at a time (group commit): a ticket waits for the next commit, not for a commit of its own.
pub trait Journal: Send + Sync + 'static {
    /// A new delivery tag: unique in this journal, and never 0.
    fn next_tag(&self) -> u64;

    /// Records a change. Must not block for long: buffer it.
    fn write(&self, change: Change<'_>);

    /// Runs `f`, whose changes become durable together: no commit falls between them. `f`
    /// must not call `atomically` again.
    fn atomically(&self, f: &mut dyn FnMut());

    /// A ticket for everything written so far.
    fn submitted(&self) -> u64;

    /// Ready once `ticket` is durable (or failed); registers `cx` to be woken otherwise.
    fn poll_durable(&self, ticket: u64, cx: &mut Context<'_>) -> Poll<Result<(), JournalError>>;

    /// Whether `ticket` is durable already.
    fn is_durable(&self, ticket: u64) -> bool;

    /// Whether new messages still fit (`max_disk_bytes`): when false the broker refuses QoS 1
    /// and 2 messages instead of acknowledging what it cannot keep.
    fn has_room(&self) -> bool {
        true
    }

    /// The sessions kept by an earlier run, with message times moved onto `now`'s clock:
    /// a message's expiry and an offline session's expiry go on counting across the restart.
    /// Their queued messages are counted, not read: they stay in the journal until their
    /// client returns.
    fn restore(&self, now: Instant) -> Vec<RestoredSession>;

    /// The messages queued (not yet sent) for `client_id`, oldest first, with times moved
    /// onto `now`'s clock; those whose Message Expiry Interval has passed are left out (and
    /// may be deleted). They stay in the journal: what becomes of each is written as it
    /// happens, as for any delivery.
    fn queued(&self, client_id: &ByteStr, now: Instant) -> Vec<Delivery>;
}

/// Where retained messages and persistent sessions live.
///
/// The broker reads retained messages on every SUBSCRIBE (through
/// [`Store::retained_matching`]) and sets them on every retained PUBLISH. Sessions are kept
/// live in memory while their clients are connected. A store that keeps them across restarts
/// has a [`Journal`] ([`Store::journal`]): the broker writes every change to a persistent
/// session there as it happens, and also every change to a retained message, and restores
/// what the journal holds when it starts. Without one, sessions and retained messages live
/// as long as the process.
///
/// A store shared by brokers that run one after the other (a restart in one process) is
/// passed as an `Arc`: `Arc<S>` is a `Store` too.
///
/// Methods are synchronous and called from connection tasks: a persistent implementation
/// buffers writes and makes them durable from a thread of its own.
pub trait Store: Send + Sync + 'static {
    /// Sets the retained message of `topic` (`Some`), or deletes it (`None`). Returns the
    /// message it replaced or deleted, which the broker needs to keep its retained limits.
    fn set_retained(&self, topic: &TopicName<'_>, message: Option<Retained>) -> Option<Retained>;

    /// Calls `visit` for each retained message whose topic matches `filter`.
    fn retained_matching(&self, filter: &TopicFilter<'_>, visit: &mut dyn FnMut(&Retained));

    /// Number of retained messages.
    fn retained_count(&self) -> usize;

    /// Deletes the retained message of `topic` if it is still `expired` (the same message,
    /// not one set since), after a lookup found that its Message Expiry Interval has passed
    /// [MQTT-3.3.2-5]. Returns whether it was deleted. The default keeps it; the broker skips
    /// expired messages either way.
    fn remove_expired_retained(&self, topic: &TopicName<'_>, expired: &Retained) -> bool {
        let _ = (topic, expired);
        false
    }

    /// The journal that keeps persistent sessions across restarts; `None` (the default)
    /// keeps them only in the broker's memory.
    fn journal(&self) -> Option<&dyn Journal> {
        None
    }
}

impl<S: Store + ?Sized> Store for Arc<S> {
    fn set_retained(&self, topic: &TopicName<'_>, message: Option<Retained>) -> Option<Retained> {
        (**self).set_retained(topic, message)
    }

    fn retained_matching(&self, filter: &TopicFilter<'_>, visit: &mut dyn FnMut(&Retained)) {
        (**self).retained_matching(filter, visit);
    }

    fn retained_count(&self) -> usize {
        (**self).retained_count()
    }

    fn remove_expired_retained(&self, topic: &TopicName<'_>, expired: &Retained) -> bool {
        (**self).remove_expired_retained(topic, expired)
    }

    fn journal(&self) -> Option<&dyn Journal> {
        (**self).journal()
    }
}

/// The default store: retained messages in a [`RetainedIndex`] behind an `RwLock`.
///
/// [`MemoryStore::new`] keeps sessions only in the broker's memory: nothing survives a
/// restart. [`MemoryStore::keeping_sessions`] also journals persistent sessions in memory, so
/// that a broker started later on the same store (shared as an `Arc`) restores them; that
/// costs a second copy of each queued delivery (not of its message), outside the broker's
/// memory budget. Its changes are durable as soon as they are written.
#[derive(Default)]
pub struct MemoryStore {
    retained: RwLock<RetainedIndex<Retained>>,
    /// The sessions' journal; `None` when sessions are not kept.
    journal: Option<MemoryJournal>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("retained", &self.retained_count())
            .field("sessions", &self.session_count())
            .finish()
    }
}

impl MemoryStore {
    /// An empty store that keeps no sessions.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that keeps the broker's persistent sessions, for a broker started later
    /// on the same store.
    pub fn keeping_sessions() -> Self {
        Self {
            retained: RwLock::default(),
            journal: Some(MemoryJournal::default()),
        }
    }

    /// Number of sessions kept (always 0 for a store from [`MemoryStore::new`]).
    pub fn session_count(&self) -> usize {
        self.journal.as_ref().map_or(0, |j| {
            lock(&j.sessions)
                .values()
                .filter(|s| s.record.expiry_interval > 0)
                .count()
        })
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Store for MemoryStore {
    fn set_retained(&self, topic: &TopicName<'_>, message: Option<Retained>) -> Option<Retained> {
        let mut index = self
            .retained
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match message {
            Some(m) => index.insert(topic, m),
            None => index.remove(topic),
        }
    }

    fn retained_matching(&self, filter: &TopicFilter<'_>, visit: &mut dyn FnMut(&Retained)) {
        let index = self.retained.read().unwrap_or_else(PoisonError::into_inner);
        index.for_each_match(filter, visit);
    }

    fn retained_count(&self) -> usize {
        self.retained
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn remove_expired_retained(&self, topic: &TopicName<'_>, expired: &Retained) -> bool {
        let mut index = self
            .retained
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // Only if no newer message replaced it between the lookup and now.
        let current = index
            .get(topic)
            .is_some_and(|current| Arc::ptr_eq(&current.message, &expired.message));
        current && index.remove(topic).is_some()
    }

    fn journal(&self) -> Option<&dyn Journal> {
        self.journal.as_ref().map(|j| j as &dyn Journal)
    }
}

/// A journal in memory: applies each change at once to a model of the kept sessions. Its
/// retained messages are the store's own index, so it ignores [`Change::Retained`].
#[derive(Debug, Default)]
pub struct MemoryJournal {
    sessions: Mutex<HashMap<ByteStr, KeptSession>>,
    tags: AtomicU64,
    written: AtomicU64,
}

#[derive(Debug)]
struct KeptSession {
    record: SessionRecord,
    subscriptions: std::collections::BTreeMap<ByteStr, SessionSubscription>,
    messages: std::collections::BTreeMap<u64, RestoredMessage>,
    incoming_qos2: std::collections::BTreeSet<PacketId>,
}

impl KeptSession {
    fn queued(&self) -> impl Iterator<Item = &Delivery> {
        self.messages.values().filter_map(|m| match m {
            RestoredMessage::Queued(d) => Some(d),
            _ => None,
        })
    }
}

impl MemoryJournal {
    fn apply(&self, change: Change<'_>) {
        use std::collections::hash_map::Entry;
        let mut sessions = lock(&self.sessions);
        match change {
            Change::Session(record) => match sessions.entry(record.client_id.clone()) {
                Entry::Occupied(mut kept) => kept.get_mut().record = record.clone(),
                Entry::Vacant(vacant) => {
                    vacant.insert(KeptSession {
                        record: record.clone(),
                        subscriptions: Default::default(),
                        messages: Default::default(),
                        incoming_qos2: Default::default(),
                    });
                }
            },
            Change::RemoveSession { client_id } => {
                sessions.remove(client_id);
            }
            Change::WillDone { client_id } => {
                if let Some(kept) = sessions.get_mut(client_id) {
                    kept.record.will = None;
                }
            }
            Change::Subscribe {
                client_id,
                filter,
                subscription,
            } => {
                if let Some(kept) = sessions.get_mut(client_id) {
                    kept.subscriptions.insert(filter.clone(), subscription);
                }
            }
            Change::Unsubscribe { client_id, filter } => {
                if let Some(kept) = sessions.get_mut(client_id) {
                    kept.subscriptions.remove(filter);
                }
            }
            Change::Enqueue {
                client_id,
                delivery,
            } => {
                if let Some(kept) = sessions.get_mut(client_id) {
                    kept.messages
                        .insert(delivery.tag, RestoredMessage::Queued(delivery.clone()));
                }
            }
            Change::Delivery { client_id, change } => {
                let Some(kept) = sessions.get_mut(client_id) else {
                    return;
                };
                match change {
                    SessionChange::Sent { tag, packet_id } => {
                        if let Some(m) = kept.messages.get_mut(&tag) {
                            if let RestoredMessage::Queued(d) = m {
                                *m = RestoredMessage::Sent(packet_id, d.clone());
                            }
                        }
                    }
                    SessionChange::Released { tag, packet_id } => {
                        if let Some(m) = kept.messages.get_mut(&tag) {
                            *m = RestoredMessage::Released(packet_id, tag);
                        }
                    }
                    SessionChange::Finished { tag } => {
                        kept.messages.remove(&tag);
                    }
                    SessionChange::IncomingQos2 { packet_id } => {
                        kept.incoming_qos2.insert(packet_id);
                    }
                    SessionChange::IncomingReleased { packet_id } => {
                        kept.incoming_qos2.remove(&packet_id);
                    }
                    _ => {}
                }
            }
            Change::Retained { .. } => {}
        }
    }
}

impl Journal for MemoryJournal {
    fn next_tag(&self) -> u64 {
        self.tags.fetch_add(1, Relaxed) + 1
    }

    fn write(&self, change: Change<'_>) {
        self.apply(change);
        self.written.fetch_add(1, Relaxed);
    }

    fn atomically(&self, f: &mut dyn FnMut()) {
        f();
    }

    fn submitted(&self) -> u64 {
        self.written.load(Relaxed)
    }

    fn poll_durable(&self, _ticket: u64, _cx: &mut Context<'_>) -> Poll<Result<(), JournalError>> {
        Poll::Ready(Ok(()))
    }

    fn is_durable(&self, _ticket: u64) -> bool {
        true
    }

    fn queued(&self, client_id: &ByteStr, now: Instant) -> Vec<Delivery> {
        let mut sessions = lock(&self.sessions);
        let Some(kept) = sessions.get_mut(client_id) else {
            return Vec::new();
        };
        // Expired ones go for good [MQTT-3.3.2-5].
        kept.messages
            .retain(|_, m| !matches!(m, RestoredMessage::Queued(d) if d.is_expired(now)));
        kept.queued().cloned().collect()
    }

    /// In client identifier order, so that a simulation replays exactly.
    fn restore(&self, _now: Instant) -> Vec<RestoredSession> {
        let mut restored: Vec<RestoredSession> = lock(&self.sessions)
            .values()
            .map(|kept| RestoredSession {
                record: kept.record.clone(),
                subscriptions: kept
                    .subscriptions
                    .iter()
                    .map(|(f, s)| (f.clone(), *s))
                    .collect(),
                messages: kept
                    .messages
                    .values()
                    .filter(|m| !matches!(m, RestoredMessage::Queued(_)))
                    .cloned()
                    .collect(),
                queued: kept.queued().count(),
                queued_bytes: kept.queued().map(Delivery::size).sum(),
                incoming_qos2: kept.incoming_qos2.iter().copied().collect(),
            })
            .collect();
        restored.sort_by(|a, b| a.record.client_id.cmp(&b.record.client_id));
        restored
    }
}

/// The seam for a cluster backend: every message routed on this node (after local delivery)
/// is offered to [`Cluster::forward`], which may send it to other nodes. A node that receives
/// a message from a peer injects it with [`BrokerHandle::publish_local`](crate::BrokerHandle),
/// which routes it locally without forwarding it again.
///
/// The default, [`Standalone`], forwards nothing.
///
/// A backend that routes by interest learns of every subscription entering and leaving the
/// subscription index ([`Cluster::subscribed`], [`Cluster::unsubscribed`]): one call per
/// session and filter, so a filter held by two sessions comes twice, and the backend counts
/// them to know when a filter gains its first or loses its last local subscriber. These calls
/// are made under the index's write lock, in the order the index changes: they must not block
/// either.
pub trait Cluster: Send + Sync + 'static {
    /// Offers a message routed on this node. Must not block: queue it and send it from a task
    /// of your own.
    fn forward(&self, message: &Arc<midge_proto::Message>);

    /// A session's subscription to `filter` entered the index. The default does nothing.
    fn subscribed(&self, filter: &TopicFilter<'_>) {
        let _ = filter;
    }

    /// A session's subscription to `filter` left the index. The default does nothing.
    fn unsubscribed(&self, filter: &TopicFilter<'_>) {
        let _ = filter;
    }
}

impl<C: Cluster + ?Sized> Cluster for Arc<C> {
    fn forward(&self, message: &Arc<midge_proto::Message>) {
        (**self).forward(message);
    }

    fn subscribed(&self, filter: &TopicFilter<'_>) {
        (**self).subscribed(filter);
    }

    fn unsubscribed(&self, filter: &TopicFilter<'_>) {
        (**self).unsubscribed(filter);
    }
}

/// A single node: forwards nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Standalone;

impl Cluster for Standalone {
    fn forward(&self, _message: &Arc<midge_proto::Message>) {}
}
