//! Broker-wide counters: relaxed atomics, bumped without locks.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Live counters shared by every task.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections: AtomicUsize,
    pub(crate) clients_connected: AtomicUsize,
    pub(crate) connections_total: AtomicU64,
    pub(crate) messages_received: AtomicU64,
    pub(crate) messages_sent: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) dropped_inbox_full: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) dropped_memory_budget: AtomicU64,
    pub(crate) dropped_congested: AtomicU64,
    pub(crate) dropped_expired: AtomicU64,
    pub(crate) dropped_retained: AtomicU64,
    pub(crate) dropped_sys_publish: AtomicU64,
    pub(crate) queued_bytes: AtomicUsize,
    pub(crate) subscriptions: AtomicUsize,
    pub(crate) sessions: AtomicUsize,
    pub(crate) rejected_connections: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
    /// Connections in their handshakes (PROXY header, TLS, WebSocket), not yet counted in
    /// `connections`.
    #[cfg(feature = "runtime")]
    pub(crate) handshaking: AtomicUsize,
    pub(crate) transport_errors: AtomicU64,
    pub(crate) auth_failures: AtomicU64,
    pub(crate) publishes_denied: AtomicU64,
    pub(crate) subscriptions_denied: AtomicU64,
    pub(crate) deliveries_denied: AtomicU64,
    pub(crate) refused_store_full: AtomicU64,
}

pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Relaxed);
}

/// A snapshot of the broker's counters, from [`BrokerHandle::stats`](crate::BrokerHandle::stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct BrokerStats {
    /// Open connections that got through their handshakes (if any), connected or not yet.
    pub connections: usize,
    /// Clients connected (CONNACK sent).
    pub clients_connected: usize,
    /// Sessions, online and offline (mosquitto's `clients/total`).
    pub sessions: usize,
    /// Connections accepted since start, on every listener.
    pub connections_total: u64,
    /// PUBLISH packets received from clients.
    pub messages_received: u64,
    /// Messages handed to connections for sending (including retained ones on subscribe).
    pub messages_sent: u64,
    /// Bytes read from clients.
    pub bytes_received: u64,
    /// Bytes written to clients.
    pub bytes_sent: u64,
    /// Subscriptions in the index (shared ones included).
    pub subscriptions: usize,
    /// Retained messages.
    pub retained_messages: usize,
    /// Deliveries dropped because a connection's inbox was full.
    pub dropped_inbox_full: u64,
    /// Deliveries dropped because an offline session's queue was full.
    pub dropped_queue_full: u64,
    /// Deliveries dropped because the global queue memory budget was spent.
    pub dropped_memory_budget: u64,
    /// Deliveries dropped at once because their subscriber was congested: an earlier delivery
    /// waited the whole `backpressure_timeout_ms` for room in its inbox.
    pub dropped_congested: u64,
    /// Messages dropped because their Message Expiry Interval ran out while they waited.
    pub dropped_expired: u64,
    /// Messages waiting for sessions: in inboxes, and in online and offline sessions' queues
    /// (held in memory or in the store).
    pub queued_messages: usize,
    /// Retained PUBLISHes not retained because of `max_retained_messages` or
    /// `max_retained_bytes` (they were still delivered).
    pub dropped_retained: u64,
    /// PUBLISHes and wills of clients into `$SYS` that were refused
    /// ([`Hooks::authorize_sys_publish`](crate::Hooks::authorize_sys_publish)): not routed,
    /// not retained.
    pub dropped_sys_publish: u64,
    /// Bytes queued in inboxes and offline sessions, counted against the global budget.
    pub queued_bytes: usize,
    /// CONNECTs refused (authentication, connection limit).
    pub rejected_connections: u64,
    /// Connections closed for breaking the protocol.
    pub protocol_errors: u64,
    /// Connections closed before MQTT began: a failed TLS handshake or WebSocket upgrade, a
    /// missing or malformed PROXY header, or handshakes that outlasted
    /// `limits.connect_timeout_ms`.
    pub transport_errors: u64,
    /// CONNECTs refused for their credentials: a wrong password, an unknown user, an
    /// anonymous client where none is allowed, a failed enhanced authentication, or an
    /// address past its failed-attempt limit.
    pub auth_failures: u64,
    /// PUBLISH packets (and wills) refused by the hooks or the ACL: not routed.
    pub publishes_denied: u64,
    /// Subscriptions refused by the hooks or the ACL.
    pub subscriptions_denied: u64,
    /// Deliveries skipped because their subscriber may not read their topic (the ACL
    /// changed, or a wildcard subscription matched a topic the client may not read).
    pub deliveries_denied: u64,
    /// QoS 1 and 2 messages refused because the store was full (`max_disk_bytes`).
    pub refused_store_full: u64,
}

impl Counters {
    pub(crate) fn snapshot(&self, retained_messages: usize) -> BrokerStats {
        BrokerStats {
            connections: self.connections.load(Relaxed),
            clients_connected: self.clients_connected.load(Relaxed),
            sessions: self.sessions.load(Relaxed),
            connections_total: self.connections_total.load(Relaxed),
            messages_received: self.messages_received.load(Relaxed),
            messages_sent: self.messages_sent.load(Relaxed),
            bytes_received: self.bytes_received.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            subscriptions: self.subscriptions.load(Relaxed),
            retained_messages,
            dropped_inbox_full: self.dropped_inbox_full.load(Relaxed),
            dropped_queue_full: self.dropped_queue_full.load(Relaxed),
            dropped_memory_budget: self.dropped_memory_budget.load(Relaxed),
            dropped_congested: self.dropped_congested.load(Relaxed),
            dropped_expired: self.dropped_expired.load(Relaxed),
            queued_messages: 0,
            dropped_retained: self.dropped_retained.load(Relaxed),
            dropped_sys_publish: self.dropped_sys_publish.load(Relaxed),
            queued_bytes: self.queued_bytes.load(Relaxed),
            rejected_connections: self.rejected_connections.load(Relaxed),
            protocol_errors: self.protocol_errors.load(Relaxed),
            transport_errors: self.transport_errors.load(Relaxed),
            auth_failures: self.auth_failures.load(Relaxed),
            publishes_denied: self.publishes_denied.load(Relaxed),
            subscriptions_denied: self.subscriptions_denied.load(Relaxed),
            deliveries_denied: self.deliveries_denied.load(Relaxed),
            refused_store_full: self.refused_store_full.load(Relaxed),
        }
    }
}
