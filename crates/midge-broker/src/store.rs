//! Seams for persistence and clustering: [`Store`] holds retained messages and persistent
//! sessions; [`Cluster`] forwards routed messages to other nodes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use bytes::Bytes;
use midge_codec::ByteStr;
use midge_proto::session::Session;
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

/// Where retained messages and persistent sessions live.
///
/// The broker reads retained messages on every SUBSCRIBE (through
/// [`Store::retained_matching`]) and writes them on every retained PUBLISH. Sessions are kept
/// live in memory while they exist; the broker writes an offline session through
/// [`Store::save_session`] when its client goes offline, removes it with
/// [`Store::remove_session`] when it ends, and restores what [`Store::load_sessions`] returns
/// when it starts. Sessions are stored as bytes from [`Session::encode`], which keeps the
/// queue and the QoS 1 and 2 state of both directions (messages sent and not yet acknowledged,
/// PUBRELs sent, QoS 2 identifiers received and not yet released), so a restored session
/// goes on without losing or duplicating a message.
///
/// A session is written again whenever the broker stops with
/// [`BrokerHandle::shutdown`](crate::BrokerHandle::shutdown), after every connection has
/// closed: the last write of each session then holds the messages routed to it while it was
/// offline. A broker that ends without `shutdown` (dropped handle, crash) leaves each session
/// as it was when its client went offline.
///
/// A store shared by brokers that run one after the other (a restart in one process) is
/// passed as an `Arc`: `Arc<S>` is a `Store` too.
///
/// Methods are synchronous and called from connection tasks: a persistent implementation
/// should buffer writes and flush them from a task of its own.
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

    /// Stores the encoded session of an offline client.
    fn save_session(&self, client_id: &ByteStr, encoded: Bytes) {
        let _ = (client_id, encoded);
    }

    /// Forgets the session of `client_id`.
    fn remove_session(&self, client_id: &ByteStr) {
        let _ = client_id;
    }

    /// The sessions stored by an earlier run, decoded at `now`.
    fn load_sessions(&self, now: Instant) -> Vec<Session> {
        let _ = now;
        Vec::new()
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

    fn save_session(&self, client_id: &ByteStr, encoded: Bytes) {
        (**self).save_session(client_id, encoded);
    }

    fn remove_session(&self, client_id: &ByteStr) {
        (**self).remove_session(client_id);
    }

    fn load_sessions(&self, now: Instant) -> Vec<Session> {
        (**self).load_sessions(now)
    }
}

/// The default store: retained messages in a [`RetainedIndex`] behind an `RwLock`.
///
/// [`MemoryStore::new`] keeps sessions only in the broker's memory: nothing survives a
/// restart. [`MemoryStore::keeping_sessions`] also keeps the encoded offline sessions, so that
/// a broker started later on the same store (shared as an `Arc`) restores them; that costs a
/// second copy of each offline session's queue, outside the broker's memory budget.
#[derive(Default)]
pub struct MemoryStore {
    retained: RwLock<RetainedIndex<Retained>>,
    /// Encoded sessions by client identifier; `None` when sessions are not kept.
    sessions: Option<Mutex<HashMap<ByteStr, Bytes>>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("retained", &self.retained_count())
            .field("sessions", &self.sessions.as_ref().map(|s| lock(s).len()))
            .finish()
    }
}

impl MemoryStore {
    /// An empty store that keeps no sessions.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that keeps the sessions the broker saves, for a broker started later on
    /// the same store.
    pub fn keeping_sessions() -> Self {
        Self {
            retained: RwLock::default(),
            sessions: Some(Mutex::default()),
        }
    }

    /// Number of sessions kept (always 0 for a store from [`MemoryStore::new`]).
    pub fn session_count(&self) -> usize {
        self.sessions.as_ref().map_or(0, |s| lock(s).len())
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

    fn save_session(&self, client_id: &ByteStr, encoded: Bytes) {
        if let Some(sessions) = &self.sessions {
            lock(sessions).insert(client_id.clone(), encoded);
        }
    }

    fn remove_session(&self, client_id: &ByteStr) {
        if let Some(sessions) = &self.sessions {
            lock(sessions).remove(client_id);
        }
    }

    fn load_sessions(&self, now: Instant) -> Vec<Session> {
        let Some(sessions) = &self.sessions else {
            return Vec::new();
        };
        lock(sessions)
            .iter()
            .filter_map(|(client_id, encoded)| {
                let session = Session::decode(now, encoded.clone());
                if session.is_none() {
                    tracing::warn!(%client_id, "stored session does not decode; skipped");
                }
                session
            })
            .collect()
    }
}

/// The seam for a cluster backend: every message routed on this node (after local delivery)
/// is offered to [`Cluster::forward`], which may send it to other nodes. A node that receives
/// a message from a peer injects it with [`BrokerHandle::publish_local`](crate::BrokerHandle),
/// which routes it locally without forwarding it again.
///
/// The default, [`Standalone`], forwards nothing.
pub trait Cluster: Send + Sync + 'static {
    /// Offers a message routed on this node. Must not block: queue it and send it from a task
    /// of your own.
    fn forward(&self, message: &Arc<midge_proto::Message>);
}

/// A single node: forwards nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Standalone;

impl Cluster for Standalone {
    fn forward(&self, _message: &Arc<midge_proto::Message>) {}
}
