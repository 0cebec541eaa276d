//! Broker-wide counters: relaxed atomics, bumped without locks. Those bumped for every
//! message are kept per thread ([`PerThread`]), so that publishers on different threads never
//! write to the same cache line.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use midge_codec::{QoS, ReasonCode};

use crate::hooks::CloseReason;

/// Upper bounds of the delivery-latency histogram's buckets, in microseconds (a last bucket
/// takes the rest).
pub(crate) const LATENCY_BOUNDS_MICROS: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Counters of one [`Shard`], by index.
mod slot {
    pub(super) const MESSAGES_IN: usize = 0;
    pub(super) const PAYLOAD_IN: usize = 3;
    pub(super) const MESSAGES_OUT: usize = 6;
    pub(super) const PAYLOAD_OUT: usize = 9;
    pub(super) const WIRE_IN: usize = 12;
    pub(super) const WIRE_OUT: usize = 13;
    pub(super) const LATENCY_SUM_MICROS: usize = 14;
    pub(super) const LATENCY: usize = 15;
    pub(super) const COUNT: usize = LATENCY + super::LATENCY_BOUNDS_MICROS.len() + 1;
}

/// Shards of [`PerThread`]: more than the threads that usually route, so that two seldom
/// share one.
const SHARDS: usize = 16;

/// One thread's counters, alone on its cache lines.
#[repr(align(128))]
#[derive(Debug)]
struct Shard([AtomicU64; slot::COUNT]);

impl Default for Shard {
    fn default() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

thread_local! {
    /// This thread's shard, given out in turn as threads first count.
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The next shard to give a thread.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

fn shard_index() -> usize {
    SHARD.with(|shard| {
        let mut index = shard.get();
        if index == usize::MAX {
            index = NEXT_SHARD.fetch_add(1, Relaxed) % SHARDS;
            shard.set(index);
        }
        index
    })
}

/// Counters bumped for every message, kept per thread and summed when read: counting costs a
/// relaxed add to a cache line no other thread writes (unless more than [`SHARDS`] threads
/// count).
#[derive(Debug)]
pub(crate) struct PerThread {
    shards: Box<[Shard]>,
}

impl Default for PerThread {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }
}

/// Totals of [`PerThread`], read by [`PerThread::sum`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MessageTotals {
    pub(crate) messages_in: [u64; 3],
    pub(crate) payload_in: [u64; 3],
    pub(crate) messages_out: [u64; 3],
    pub(crate) payload_out: [u64; 3],
    /// Bytes read from and written to clients' transports.
    pub(crate) wire_in: u64,
    pub(crate) wire_out: u64,
    pub(crate) latency_sum_micros: u64,
    /// Per bucket of [`LATENCY_BOUNDS_MICROS`], then the rest: not cumulative.
    pub(crate) latency: [u64; LATENCY_BOUNDS_MICROS.len() + 1],
}

impl PerThread {
    fn add(&self, slot: usize, n: u64) {
        if let Some(counter) = self
            .shards
            .get(shard_index())
            .and_then(|shard| shard.0.get(slot))
        {
            counter.fetch_add(n, Relaxed);
        }
    }

    /// A PUBLISH received from a client.
    pub(crate) fn received(&self, qos: QoS, payload: usize) {
        let qos = qos as usize;
        self.add(slot::MESSAGES_IN + qos, 1);
        self.add(slot::PAYLOAD_IN + qos, payload as u64);
    }

    /// `n` deliveries of `payload` bytes each at `qos` handed to a connection for sending.
    pub(crate) fn sent(&self, qos: QoS, n: u64, payload: usize) {
        let qos = qos as usize;
        self.add(slot::MESSAGES_OUT + qos, n);
        self.add(slot::PAYLOAD_OUT + qos, n * payload as u64);
    }

    /// `n` bytes read from a client's transport.
    #[cfg(feature = "runtime")]
    pub(crate) fn read(&self, n: usize) {
        self.add(slot::WIRE_IN, n as u64);
    }

    /// `n` bytes written to a client's transport.
    #[cfg(feature = "runtime")]
    pub(crate) fn written(&self, n: usize) {
        self.add(slot::WIRE_OUT, n as u64);
    }

    /// A delivery that took `latency` from its PUBLISH's arrival to its subscriber's
    /// connection.
    pub(crate) fn delivered_after(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BOUNDS_MICROS
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(LATENCY_BOUNDS_MICROS.len());
        self.add(slot::LATENCY + bucket, 1);
        self.add(slot::LATENCY_SUM_MICROS, micros);
    }

    /// The totals over every thread.
    pub(crate) fn sum(&self) -> MessageTotals {
        let mut all = [0u64; slot::COUNT];
        for shard in self.shards.iter() {
            for (total, counter) in all.iter_mut().zip(&shard.0) {
                *total = total.wrapping_add(counter.load(Relaxed));
            }
        }
        let three = |at: usize| std::array::from_fn(|q| all[at + q]);
        MessageTotals {
            messages_in: three(slot::MESSAGES_IN),
            payload_in: three(slot::PAYLOAD_IN),
            messages_out: three(slot::MESSAGES_OUT),
            payload_out: three(slot::PAYLOAD_OUT),
            wire_in: all[slot::WIRE_IN],
            wire_out: all[slot::WIRE_OUT],
            latency_sum_micros: all[slot::LATENCY_SUM_MICROS],
            latency: std::array::from_fn(|b| all[slot::LATENCY + b]),
        }
    }
}

/// Live counters shared by every task.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections: AtomicUsize,
    pub(crate) clients_connected: AtomicUsize,
    pub(crate) connections_total: AtomicU64,
    /// Counted for every message and every read and write.
    pub(crate) per_thread: PerThread,
    pub(crate) dropped_inbox_full: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) dropped_memory_budget: AtomicU64,
    pub(crate) dropped_congested: AtomicU64,
    pub(crate) dropped_expired: AtomicU64,
    pub(crate) dropped_too_large: AtomicU64,
    pub(crate) dropped_retained: AtomicU64,
    pub(crate) dropped_sys_publish: AtomicU64,
    pub(crate) queued_bytes: AtomicUsize,
    pub(crate) subscriptions: AtomicUsize,
    pub(crate) shared_subscriptions: AtomicUsize,
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
    /// CONNACKs sent, by reason code (0: accepted).
    pub(crate) connects: ConnectResults,
    /// Connections ended, by [`CloseKind`].
    pub(crate) closes: [AtomicU64; CloseKind::ALL.len()],
}

/// CONNACK reason codes counted, one counter per code.
#[derive(Debug)]
pub(crate) struct ConnectResults(Box<[AtomicU64; 256]>);

impl Default for ConnectResults {
    fn default() -> Self {
        Self(Box::new(std::array::from_fn(|_| AtomicU64::new(0))))
    }
}

/// Why connections end, as metrics count them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseKind {
    ClientDisconnect,
    ProtocolError,
    KeepaliveTimeout,
    ConnectTimeout,
    ConnectRefused,
    TakenOver,
    AdministrativeAction,
    ServerShuttingDown,
    ServerDisconnect,
    ConnectionLost,
}

impl CloseKind {
    pub(crate) const ALL: [Self; 10] = [
        Self::ClientDisconnect,
        Self::ProtocolError,
        Self::KeepaliveTimeout,
        Self::ConnectTimeout,
        Self::ConnectRefused,
        Self::TakenOver,
        Self::AdministrativeAction,
        Self::ServerShuttingDown,
        Self::ServerDisconnect,
        Self::ConnectionLost,
    ];

    /// The metric label.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::ClientDisconnect => "client_disconnect",
            Self::ProtocolError => "protocol_error",
            Self::KeepaliveTimeout => "keepalive_timeout",
            Self::ConnectTimeout => "connect_timeout",
            Self::ConnectRefused => "connect_refused",
            Self::TakenOver => "taken_over",
            Self::AdministrativeAction => "administrative_action",
            Self::ServerShuttingDown => "server_shutting_down",
            Self::ServerDisconnect => "server_disconnect",
            Self::ConnectionLost => "connection_lost",
        }
    }

    fn of(reason: CloseReason) -> Self {
        match reason {
            CloseReason::DisconnectedByClient(_) => Self::ClientDisconnect,
            CloseReason::ProtocolViolation(_) => Self::ProtocolError,
            CloseReason::KeepAliveTimeout => Self::KeepaliveTimeout,
            CloseReason::ConnectTimeout => Self::ConnectTimeout,
            CloseReason::Refused(_) => Self::ConnectRefused,
            CloseReason::TakenOver => Self::TakenOver,
            CloseReason::DisconnectedByServer(ReasonCode::ADMINISTRATIVE_ACTION) => {
                Self::AdministrativeAction
            }
            CloseReason::DisconnectedByServer(ReasonCode::SERVER_SHUTTING_DOWN) => {
                Self::ServerShuttingDown
            }
            CloseReason::DisconnectedByServer(_) => Self::ServerDisconnect,
            _ => Self::ConnectionLost,
        }
    }
}

impl Counters {
    /// A subscription to `filter` entered the index.
    pub(crate) fn subscribed(&self, filter: &midge_topic::TopicFilter<'_>) {
        self.subscriptions.fetch_add(1, Relaxed);
        if filter.share_name().is_some() {
            self.shared_subscriptions.fetch_add(1, Relaxed);
        }
    }

    /// A subscription to `filter` left the index.
    pub(crate) fn unsubscribed(&self, filter: &midge_topic::TopicFilter<'_>) {
        self.subscriptions.fetch_sub(1, Relaxed);
        if filter.share_name().is_some() {
            self.shared_subscriptions.fetch_sub(1, Relaxed);
        }
    }

    /// A CONNACK with `code` was sent (or a 3.x refusal mapped from it).
    pub(crate) fn connect_result(&self, code: ReasonCode) {
        self.connects.0[usize::from(code.0)].fetch_add(1, Relaxed);
    }

    /// A connection ended for `reason`.
    pub(crate) fn closed(&self, reason: CloseReason) {
        let kind = CloseKind::of(reason);
        if let Some(index) = CloseKind::ALL.iter().position(|&k| k == kind) {
            self.closes[index].fetch_add(1, Relaxed);
        }
    }

    /// CONNACK outcomes counted so far, by reason name (`success`, `not_authorized`, ...).
    pub(crate) fn connect_results(&self) -> Vec<(String, u64)> {
        self.connects
            .0
            .iter()
            .enumerate()
            .filter_map(|(code, counter)| {
                let n = counter.load(Relaxed);
                let code = ReasonCode(u8::try_from(code).ok()?);
                let name = code
                    .name()
                    .map_or_else(|| format!("0x{:02x}", code.0), str::to_ascii_lowercase);
                (n > 0 || code == ReasonCode::SUCCESS).then_some((name, n))
            })
            .collect()
    }

    /// Connections ended so far, by reason.
    pub(crate) fn close_reasons(&self) -> Vec<(&'static str, u64)> {
        CloseKind::ALL
            .iter()
            .zip(&self.closes)
            .map(|(kind, n)| (kind.name(), n.load(Relaxed)))
            .collect()
    }
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
    /// Messages not sent because they exceed the client's Maximum Packet Size
    /// [MQTT-3.1.2-25].
    pub dropped_too_large: u64,
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
        let messages = self.per_thread.sum();
        BrokerStats {
            connections: self.connections.load(Relaxed),
            clients_connected: self.clients_connected.load(Relaxed),
            sessions: self.sessions.load(Relaxed),
            connections_total: self.connections_total.load(Relaxed),
            messages_received: messages.messages_in.iter().sum(),
            messages_sent: messages.messages_out.iter().sum(),
            bytes_received: messages.wire_in,
            bytes_sent: messages.wire_out,
            subscriptions: self.subscriptions.load(Relaxed),
            retained_messages,
            dropped_inbox_full: self.dropped_inbox_full.load(Relaxed),
            dropped_queue_full: self.dropped_queue_full.load(Relaxed),
            dropped_memory_budget: self.dropped_memory_budget.load(Relaxed),
            dropped_congested: self.dropped_congested.load(Relaxed),
            dropped_expired: self.dropped_expired.load(Relaxed),
            dropped_too_large: self.dropped_too_large.load(Relaxed),
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
