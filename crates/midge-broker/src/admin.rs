//! What an operator sees of a running broker and does to it: its figures, its clients, their
//! subscriptions and the retained messages, and a few actions (disconnect a client, delete a
//! retained message, publish). This is what an admin API or a dashboard is built on
//! (`midge-http` serves it over HTTP); get one from
//! [`BrokerHandle::admin`](crate::BrokerHandle::admin).
//!
//! Every listing is paginated by key, so that a broker with a million clients answers a page
//! with memory for that page: `after` is the previous page's `next`, an opaque cursor of
//! printable ASCII (client identifiers and topics may hold any character but U+0000, which
//! must survive a command line and a URL).

use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use midge_codec::{QoS, RetainHandling};
use midge_proto::Message;
use midge_topic::{Match, TopicFilter, TopicName};
use serde::Serialize;

use crate::bridge::BridgeView;
use crate::core::connection::version_name;
use crate::core::state::{ClientView, Core, Sub};
use crate::stats::{BrokerStats, LATENCY_BOUNDS_MICROS};

/// The most entries one page holds, whatever is asked.
pub const MAX_PAGE: usize = 1000;

/// Why an admin request was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// Not a valid MQTT topic filter.
    #[error("invalid topic filter {filter:?}: {reason}")]
    InvalidFilter {
        /// The filter as given.
        filter: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Not a valid MQTT topic name.
    #[error("invalid topic {topic:?}: {reason}")]
    InvalidTopic {
        /// The topic as given.
        topic: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A QoS other than 0, 1 or 2.
    #[error("invalid QoS {0}: it must be 0, 1 or 2")]
    InvalidQos(u8),
    /// An `after` that is not a `next` this API gave.
    #[error("invalid cursor {0:?}: pass a page's `next` as it came")]
    InvalidCursor(String),
}

/// The broker's admin view. Cheap to clone; usable from any thread.
#[derive(Clone)]
pub struct Admin {
    core: Arc<Core>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

/// The broker itself: version, uptime and listeners.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct BrokerInfo {
    /// midge's version.
    pub version: String,
    /// Seconds since the broker started.
    pub uptime_secs: u64,
    /// When it started, in seconds since the Unix epoch.
    pub started_at_unix: u64,
    /// Its listeners, in the configuration's order.
    pub listeners: Vec<ListenerInfo>,
    /// Whether sessions and messages are kept on disk.
    pub persistence: bool,
}

/// One listener.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct ListenerInfo {
    /// Its index in the configuration.
    pub index: usize,
    /// Its address and protocols, such as `0.0.0.0:1883 (mqtt)`.
    pub name: String,
    /// Connections open on it now.
    pub connections: usize,
}

/// A connected client.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct ClientSummary {
    /// Its client identifier.
    pub client_id: String,
    /// Its user name, if it gave one.
    pub username: Option<String>,
    /// Its address.
    pub address: String,
    /// The listener it came through, by index.
    pub listener: usize,
    /// `3.1`, `3.1.1` or `5.0`.
    pub protocol: &'static str,
    /// The Keep Alive in effect, in seconds (0: none).
    pub keepalive: u16,
    /// Whether it connected with Clean Start (Clean Session under 3.x).
    pub clean_start: bool,
    /// When it connected, in seconds since the Unix epoch.
    pub connected_since_unix: u64,
    /// QoS 1 and 2 messages sent to it and not yet acknowledged.
    pub inflight: usize,
    /// Messages waiting to be sent to it.
    pub queued: usize,
}

/// A page of [`Admin::clients`].
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct ClientPage {
    /// Clients, ordered by client identifier.
    pub clients: Vec<ClientSummary>,
    /// Connected clients in all.
    pub total: usize,
    /// What to pass as `after` for the next page; `None` on the last.
    pub next: Option<String>,
}

/// A connected client and its subscriptions.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct ClientDetail {
    /// The client.
    #[serde(flatten)]
    pub summary: ClientSummary,
    /// Its subscriptions, ordered by filter.
    pub subscriptions: Vec<SubscriptionInfo>,
}

/// One subscription.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[non_exhaustive]
pub struct SubscriptionInfo {
    /// Its topic filter (without `$share/<group>/`).
    pub filter: String,
    /// The shared subscription group, if it is one.
    pub share_group: Option<String>,
    /// The subscriber.
    pub client_id: String,
    /// The maximum QoS granted.
    pub qos: u8,
    /// 5.0 No Local.
    pub no_local: bool,
    /// 5.0 Retain As Published.
    pub retain_as_published: bool,
    /// 5.0 Retain Handling: 0, 1 or 2.
    pub retain_handling: u8,
}

/// A page of [`Admin::subscriptions`].
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct SubscriptionPage {
    /// Subscriptions, ordered by filter, group and client identifier.
    pub subscriptions: Vec<SubscriptionInfo>,
    /// What to pass as `after` for the next page; `None` on the last.
    pub next: Option<String>,
}

/// One retained message.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct RetainedInfo {
    /// Its topic.
    pub topic: String,
    /// Its QoS.
    pub qos: u8,
    /// Its payload's size.
    pub payload_bytes: usize,
    /// The payload's first 64 bytes, as UTF-8 (invalid sequences replaced).
    pub payload_preview: String,
}

/// A page of [`Admin::retained`].
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct RetainedPage {
    /// Retained messages, ordered by topic.
    pub topics: Vec<RetainedInfo>,
    /// What to pass as `after` for the next page; `None` on the last.
    pub next: Option<String>,
}

/// A histogram in Prometheus's shape.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct Histogram {
    /// Upper bounds (seconds) with the count of observations at or below each: cumulative.
    pub buckets: Vec<(f64, u64)>,
    /// Observations in all (the `+Inf` bucket).
    pub count: u64,
    /// Their sum, in seconds.
    pub sum_seconds: f64,
}

/// The process, as the operating system sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ProcessStats {
    /// Resident memory.
    pub rss_bytes: u64,
    /// Open file descriptors (sockets included).
    pub open_fds: u64,
}

/// Every figure the broker exports, for a metrics endpoint.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Metrics {
    /// The counters.
    pub stats: BrokerStats,
    /// Open connections by listener (index and name) and protocol (`3.1`, `3.1.1`, `5.0`, or
    /// `connecting` before the CONNECT is accepted).
    pub connections: Vec<(usize, String, &'static str, usize)>,
    /// CONNECT outcomes by CONNACK reason (`success`, `not_authorized`, ...).
    pub connects: Vec<(String, u64)>,
    /// Connections ended, by why (`client_disconnect`, `keepalive_timeout`, `taken_over`,
    /// `administrative_action`, ...).
    pub disconnects: Vec<(&'static str, u64)>,
    /// Sessions whose client is connected.
    pub sessions_online: usize,
    /// Sessions kept for clients that are away.
    pub sessions_offline: usize,
    /// Subscriptions, shared ones included.
    pub subscriptions: usize,
    /// Shared subscriptions (members of `$share` groups).
    pub shared_subscriptions: usize,
    /// Retained messages.
    pub retained_messages: usize,
    /// PUBLISH packets received, by QoS.
    pub messages_in: [u64; 3],
    /// Payload bytes of those, by QoS.
    pub bytes_in: [u64; 3],
    /// Messages handed to connections for sending, by the QoS of the delivery.
    pub messages_out: [u64; 3],
    /// Payload bytes of those, by QoS.
    pub bytes_out: [u64; 3],
    /// Messages dropped, by cause.
    pub drops: Vec<(&'static str, u64)>,
    /// Messages waiting for sessions: inboxes, online and offline queues.
    pub queued_messages: usize,
    /// Bytes of waiting messages counted against the memory budget.
    pub queued_bytes: usize,
    /// QoS 1 and 2 messages sent and not yet acknowledged.
    pub inflight_messages: usize,
    /// Each bridge's state and counters.
    pub bridges: Vec<BridgeView>,
    /// CONNECTs refused for their credentials.
    pub auth_failures: u64,
    /// From a PUBLISH's arrival to its subscriber's connection taking the delivery (routing,
    /// the inbox, and the connection's turn on a thread). Deliveries of retained messages and
    /// of messages queued while their subscriber was away are not counted.
    pub delivery_latency: Histogram,
    /// The process (Linux only).
    pub process: Option<ProcessStats>,
}

impl Admin {
    /// The admin view of `core` (a broker run without this crate's runtime; a running
    /// broker's is [`BrokerHandle::admin`](crate::BrokerHandle::admin)).
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    /// The broker: version, uptime, listeners.
    pub fn info(&self) -> BrokerInfo {
        let uptime = Instant::now().saturating_duration_since(self.core.started());
        let now_unix = unix_secs(SystemTime::now());
        let mut per_listener = HashMap::<u16, usize>::new();
        self.core.for_each_connection(|open| {
            *per_listener.entry(open.listener).or_default() += 1;
        });
        BrokerInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_secs: uptime.as_secs(),
            started_at_unix: now_unix.saturating_sub(uptime.as_secs()),
            listeners: self
                .core
                .listener_names()
                .into_iter()
                .enumerate()
                .map(|(index, name)| ListenerInfo {
                    index,
                    name,
                    connections: u16::try_from(index)
                        .ok()
                        .and_then(|i| per_listener.get(&i).copied())
                        .unwrap_or(0),
                })
                .collect(),
            persistence: self.core.journal().is_some(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> BrokerStats {
        self.core.stats()
    }

    /// Whether the broker serves: it started (its listeners are bound and its store open) and
    /// is not stopping.
    pub fn is_ready(&self) -> bool {
        !self.core.is_stopping()
    }

    /// Each configured bridge: whether it is connected to its remote, and its counters, in the
    /// configuration's order.
    pub fn bridges(&self) -> Vec<BridgeView> {
        self.core.bridges.iter().map(|b| b.view()).collect()
    }

    /// Every figure, for a metrics endpoint. It visits every connection and every session:
    /// meant for a scrape every few seconds, not for a loop.
    pub fn metrics(&self) -> Metrics {
        let stats = self.core.stats();
        let (queued_messages, inflight_messages) = (stats.queued_messages, self.core.in_flight());
        let mut by_listener = HashMap::<(u16, &'static str), usize>::new();
        self.core.for_each_connection(|open| {
            let protocol = match &open.client {
                Some(client) => version_name(client.info.version),
                None => "connecting",
            };
            *by_listener.entry((open.listener, protocol)).or_default() += 1;
        });
        let names = self.core.listener_names();
        let mut connections: Vec<_> = by_listener
            .into_iter()
            .map(|((listener, protocol), n)| {
                let index = usize::from(listener);
                let name = names.get(index).cloned().unwrap_or_default();
                (index, name, protocol, n)
            })
            .collect();
        connections.sort();
        let counters = &self.core.counters;
        let totals = counters.per_thread.sum();
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(LATENCY_BOUNDS_MICROS.len());
        for (bound, n) in LATENCY_BOUNDS_MICROS.iter().zip(&totals.latency) {
            cumulative += n;
            buckets.push((*bound as f64 / 1e6, cumulative));
        }
        let count = totals.latency.iter().sum();
        Metrics {
            connections,
            connects: counters.connect_results(),
            disconnects: counters.close_reasons(),
            sessions_online: stats.clients_connected,
            sessions_offline: stats.sessions.saturating_sub(stats.clients_connected),
            subscriptions: stats.subscriptions,
            shared_subscriptions: counters.shared_subscriptions.load(Relaxed),
            retained_messages: stats.retained_messages,
            messages_in: totals.messages_in,
            bytes_in: totals.payload_in,
            messages_out: totals.messages_out,
            bytes_out: totals.payload_out,
            drops: vec![
                ("inbox_full", stats.dropped_inbox_full),
                ("congestion", stats.dropped_congested),
                ("queue_full", stats.dropped_queue_full),
                ("memory_budget", stats.dropped_memory_budget),
                ("expired", stats.dropped_expired),
                ("too_large", stats.dropped_too_large),
                ("acl_denied", stats.deliveries_denied),
                ("store_full", stats.refused_store_full),
            ],
            queued_messages,
            queued_bytes: stats.queued_bytes,
            inflight_messages,
            bridges: self.bridges(),
            auth_failures: stats.auth_failures,
            delivery_latency: Histogram {
                buckets,
                count,
                sum_seconds: totals.latency_sum_micros as f64 / 1e6,
            },
            process: process_stats(),
            stats,
        }
    }

    /// Connected clients, ordered by client identifier, from the one after `after` (the
    /// previous page's `next`), at most `limit` (and at most [`MAX_PAGE`]).
    pub fn clients(&self, after: Option<&str>, limit: usize) -> Result<ClientPage, AdminError> {
        let after = decode_cursor(after)?;
        let after = after.as_deref();
        let limit = limit.clamp(1, MAX_PAGE);
        let mut total = 0;
        let mut page = Smallest::new(limit);
        self.core.for_each_connection(|open| {
            if let Some(client) = &open.client {
                total += 1;
                let id = client.info.client_id.as_str();
                if after.is_none_or(|after| id > after) {
                    page.offer(id.to_owned(), (client.clone(), open.inbox.clone()));
                }
            }
        });
        let (entries, more) = page.into_sorted();
        let clients: Vec<_> = entries
            .into_iter()
            .map(|(_, (client, inbox))| summary(&client, inbox.queued_messages()))
            .collect();
        let next = more
            .then(|| clients.last().map(|c| encode_cursor(&c.client_id)))
            .flatten();
        Ok(ClientPage {
            clients,
            total,
            next,
        })
    }

    /// The connected client `client_id`, with its subscriptions; `None` if it is not
    /// connected.
    pub fn client(&self, client_id: &str) -> Option<ClientDetail> {
        let mut found = None;
        self.core.for_each_connection(|open| {
            if let Some(client) = &open.client {
                if client.info.client_id.as_str() == client_id {
                    found = Some(summary(client, open.inbox.queued_messages()));
                }
            }
        });
        let summary = found?;
        let mut subscriptions = Vec::new();
        let index = self.core.index_read();
        // A walk of the whole index (it is keyed by filter), allocating only for this
        // client's subscriptions.
        index.for_each(|found| {
            let theirs = match &found {
                Match::Subscription { key, .. } => key.as_str() == client_id,
                Match::SharedGroup { members, .. } => {
                    members.iter().any(|(key, _)| key.as_str() == client_id)
                }
            };
            if theirs {
                visit_subscriptions(&index, found, |info| {
                    if info.client_id == client_id {
                        subscriptions.push(info);
                    }
                });
            }
        });
        drop(index);
        subscriptions.sort();
        Some(ClientDetail {
            summary,
            subscriptions,
        })
    }

    /// Closes the connection of client `client_id`: DISCONNECT with 0x98 (Administrative
    /// action) under 5.0; a 3.x client's connection just closes. Its will is published, and
    /// its session is kept or ends as its Clean Start and expiry say. Returns whether such a
    /// client was connected.
    pub fn kick(&self, client_id: &str) -> bool {
        let mut kicked = false;
        self.core.for_each_connection(|open| {
            if open
                .client
                .as_ref()
                .is_some_and(|c| c.info.client_id.as_str() == client_id)
            {
                open.inbox.kick();
                kicked = true;
            }
        });
        if kicked {
            tracing::info!(client_id, "client disconnected by an operator");
        }
        kicked
    }

    /// Retained messages whose topic matches `filter` (all but `$` topics when `None`),
    /// ordered by topic, from the one after `after`, at most `limit`.
    pub fn retained(
        &self,
        filter: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<RetainedPage, AdminError> {
        let after = decode_cursor(after)?;
        let after = after.as_deref();
        let limit = limit.clamp(1, MAX_PAGE);
        let text = filter.unwrap_or("#");
        let filter =
            TopicFilter::with_limits(text, &self.core.config.topic_limits()).map_err(|e| {
                AdminError::InvalidFilter {
                    filter: text.to_owned(),
                    reason: e.to_string(),
                }
            })?;
        let mut page = Smallest::new(limit);
        self.core.store.retained_matching(&filter, &mut |retained| {
            let topic = retained.message.topic.as_str();
            if after.is_none_or(|after| topic > after) {
                page.offer(topic.to_owned(), retained.message.clone());
            }
        });
        let (entries, more) = page.into_sorted();
        let topics: Vec<_> = entries
            .into_iter()
            .map(|(topic, message)| RetainedInfo {
                topic,
                qos: message.qos as u8,
                payload_bytes: message.payload.len(),
                payload_preview: String::from_utf8_lossy(
                    &message.payload[..message.payload.len().min(64)],
                )
                .into_owned(),
            })
            .collect();
        let next = more
            .then(|| topics.last().map(|t| encode_cursor(&t.topic)))
            .flatten();
        Ok(RetainedPage { topics, next })
    }

    /// Deletes the retained message of `topic`. Returns whether there was one.
    pub fn delete_retained(&self, topic: &str) -> Result<bool, AdminError> {
        let limits = self.core.config.topic_limits();
        let invalid = |e: midge_topic::TopicError| AdminError::InvalidTopic {
            topic: topic.to_owned(),
            reason: e.to_string(),
        };
        let name = TopicName::with_limits(topic, &limits).map_err(invalid)?;
        // A topic name has no wildcards, so as a filter it matches itself alone.
        let exact = TopicFilter::with_limits(topic, &limits).map_err(invalid)?;
        let mut found = false;
        // Compared, for a name that parses as a shared filter (`$share/g/x` is a topic name
        // too, and as a filter it stands for `x`).
        self.core.store.retained_matching(&exact, &mut |retained| {
            found |= retained.message.topic.as_str() == topic;
        });
        if found {
            self.core.set_retained(&name, None);
            tracing::info!(topic, "retained message deleted by an operator");
        }
        Ok(found)
    }

    /// Subscriptions whose filter is exactly `filter` (a shared one's without its
    /// `$share/<group>/`; all when `None`), ordered by filter, group and client identifier,
    /// from the one after `after` (an earlier page's `next`), at most `limit`.
    pub fn subscriptions(
        &self,
        filter: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<SubscriptionPage, AdminError> {
        let after = decode_cursor(after)?;
        let after = after.as_deref();
        let limit = limit.clamp(1, MAX_PAGE);
        let parsed = filter
            .map(|text| {
                TopicFilter::with_limits(text, &self.core.config.topic_limits()).map_err(|e| {
                    AdminError::InvalidFilter {
                        filter: text.to_owned(),
                        reason: e.to_string(),
                    }
                })
            })
            .transpose()?;
        let mut page = Smallest::new(limit);
        let index = self.core.index_read();
        let mut offer = |info: SubscriptionInfo| {
            let key = cursor(&info);
            if after.is_none_or(|after| key.as_str() > after) {
                page.offer(key, info);
            }
        };
        match &parsed {
            Some(filter) => index.for_each_with_filter(filter, |found| {
                visit_subscriptions(&index, found, &mut offer);
            }),
            None => index.for_each(|found| visit_subscriptions(&index, found, &mut offer)),
        }
        drop(index);
        let (entries, more) = page.into_sorted();
        let next = more
            .then(|| entries.last().map(|(key, _)| encode_cursor(key)))
            .flatten();
        Ok(SubscriptionPage {
            subscriptions: entries.into_iter().map(|(_, info)| info).collect(),
            next,
        })
    }

    /// Publishes a message as the broker itself (no client): retained if `retain`, routed to
    /// every matching session. Returns the number of sessions it went to.
    pub fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        qos: u8,
        retain: bool,
    ) -> Result<usize, AdminError> {
        let qos = QoS::from_u8(qos).ok_or(AdminError::InvalidQos(qos))?;
        TopicName::with_limits(topic, &self.core.config.topic_limits()).map_err(|e| {
            AdminError::InvalidTopic {
                topic: topic.to_owned(),
                reason: e.to_string(),
            }
        })?;
        let mut message = Message::new(topic.to_owned(), payload, qos);
        message.retain = retain;
        Ok(self.core.publish(message, Instant::now()))
    }
}

/// Bytes a cursor keeps as they are: letters, digits and `-._/`. Every other byte is `%XX`
/// (upper-case hexadecimal); `~` too, which a shell would expand at the start of a word.
fn kept_in_cursor(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'/')
}

/// A page's `next`: its last key, with every byte but [`kept_in_cursor`]'s written `%XX`, so
/// that any key survives a command line, a URL and a terminal, and a usual one stays as long.
fn encode_cursor(key: &str) -> String {
    use std::fmt::Write;
    let mut cursor = String::with_capacity(key.len());
    for byte in key.bytes() {
        if kept_in_cursor(byte) {
            cursor.push(char::from(byte));
        } else {
            let _ = write!(cursor, "%{byte:02X}");
        }
    }
    cursor
}

/// The key of an `after` cursor made by [`encode_cursor`]; anything else is refused.
fn decode_cursor(after: Option<&str>) -> Result<Option<String>, AdminError> {
    let Some(after) = after else {
        return Ok(None);
    };
    let invalid = || AdminError::InvalidCursor(after.chars().take(64).collect());
    // Checked before allocating: a key (a client identifier, a topic, or a subscription's
    // filter, group and client identifier) is at most 3 × 65,535 bytes, each at most 3
    // characters here.
    if after.len() > 3 * 3 * 65_535 {
        return Err(invalid());
    }
    let upper_hex = |b: u8| b.is_ascii_digit() || (b'A'..=b'F').contains(&b);
    let digit = |b: u8| {
        if b.is_ascii_digit() {
            b - b'0'
        } else {
            b - b'A' + 10
        }
    };
    let mut bytes = Vec::with_capacity(after.len());
    let mut rest = after.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        match (first, tail) {
            (b'%', [high, low, tail @ ..]) if upper_hex(*high) && upper_hex(*low) => {
                let byte = digit(*high) << 4 | digit(*low);
                // `encode_cursor` writes such a byte as it is: not a cursor it made.
                if kept_in_cursor(byte) {
                    return Err(invalid());
                }
                bytes.push(byte);
                rest = tail;
            }
            (byte, tail) if kept_in_cursor(byte) => {
                bytes.push(byte);
                rest = tail;
            }
            _ => return Err(invalid()),
        }
    }
    String::from_utf8(bytes).map(Some).map_err(|_| invalid())
}

/// A subscription's place in [`Admin::subscriptions`]' order, as an `after` cursor: its
/// filter, group and client identifier, separated by U+0000, which no MQTT string may hold
/// [MQTT-1.5.4-2].
fn cursor(info: &SubscriptionInfo) -> String {
    format!(
        "{}\u{0}{}\u{0}{}",
        info.filter,
        info.share_group.as_deref().unwrap_or(""),
        info.client_id
    )
}

/// Calls `visit` for each subscription a [`Match`] of the index stands for.
fn visit_subscriptions(
    index: &midge_topic::SubscriptionIndex<midge_codec::ByteStr, Sub>,
    found: Match<'_, midge_codec::ByteStr, Sub>,
    mut visit: impl FnMut(SubscriptionInfo),
) {
    let info = |filter: &str, group: Option<&str>, client: &midge_codec::ByteStr, sub: &Sub| {
        SubscriptionInfo {
            filter: filter.to_owned(),
            share_group: group.map(str::to_owned),
            client_id: client.as_str().to_owned(),
            qos: sub.options.qos as u8,
            no_local: sub.options.no_local,
            retain_as_published: sub.options.retain_as_published,
            retain_handling: match sub.options.retain_handling {
                RetainHandling::SendAtSubscribe => 0,
                RetainHandling::SendIfNew => 1,
                _ => 2,
            },
        }
    };
    match found {
        Match::Subscription { filter, key, value } => {
            let text = index.filter_text(filter).unwrap_or_default();
            visit(info(&text, None, key, value));
        }
        Match::SharedGroup {
            filter,
            share_name,
            members,
        } => {
            let text = index.filter_text(filter).unwrap_or_default();
            for (key, value) in members {
                visit(info(&text, Some(share_name), key, value));
            }
        }
    }
}

fn summary(client: &ClientView, queued: usize) -> ClientSummary {
    let info = &client.info;
    let age = Instant::now().saturating_duration_since(client.connected_at);
    ClientSummary {
        client_id: info.client_id.as_str().to_owned(),
        username: info.username.as_ref().map(|u| u.as_str().to_owned()),
        address: info.peer.to_string(),
        listener: info.listener(),
        protocol: version_name(info.version),
        keepalive: client.keep_alive,
        clean_start: client.clean_start,
        connected_since_unix: unix_secs(SystemTime::now()).saturating_sub(age.as_secs()),
        inflight: client.in_flight.load(Relaxed) as usize,
        queued,
    }
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// The `limit` entries with the smallest keys among those offered, and whether there were
/// more: a page out of any number of entries, in memory for the page.
struct Smallest<T> {
    limit: usize,
    /// The largest key on top, to be pushed out by a smaller one.
    heap: BinaryHeap<Entry<T>>,
    more: bool,
}

struct Entry<T>(String, T);

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

impl<T> Smallest<T> {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            heap: BinaryHeap::new(),
            more: false,
        }
    }

    fn offer(&mut self, key: String, value: T) {
        if self.heap.len() < self.limit {
            self.heap.push(Entry(key, value));
            return;
        }
        self.more = true;
        if self.heap.peek().is_some_and(|largest| key < largest.0) {
            self.heap.pop();
            self.heap.push(Entry(key, value));
        }
    }

    /// The entries by key, and whether any were left out.
    fn into_sorted(self) -> (Vec<(String, T)>, bool) {
        let mut entries = self.heap.into_vec();
        entries.sort();
        (
            entries.into_iter().map(|Entry(k, v)| (k, v)).collect(),
            self.more,
        )
    }
}

/// The process's resident memory and open file descriptors, from `/proc` (Linux); `None`
/// where that cannot be read.
pub fn process_stats() -> Option<ProcessStats> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(ProcessStats {
        rss_bytes: rss_kib * 1024,
        // The directory read itself holds one.
        open_fds: open_fds.saturating_sub(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smallest_keeps_a_sorted_page_and_says_whether_more_were_left_out() {
        let mut page = Smallest::new(3);
        for key in ["d", "a", "e", "c", "b"] {
            page.offer(key.to_owned(), ());
        }
        let (entries, more) = page.into_sorted();
        let keys: Vec<_> = entries.into_iter().map(|(k, ())| k).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert!(more);
        let mut page = Smallest::new(3);
        page.offer("x".to_owned(), ());
        assert!(!page.into_sorted().1);
    }

    #[test]
    fn cursors_survive_any_key_and_refuse_what_they_did_not_make() {
        for key in [
            "a/b\u{0}g\u{0}c",
            "",
            "é\n\u{202e}x",
            "+/#",
            "%41 %",
            "sensor-1",
        ] {
            let cursor = encode_cursor(key);
            assert!(
                cursor.bytes().all(|b| kept_in_cursor(b) || b == b'%'),
                "{cursor}"
            );
            assert_eq!(
                decode_cursor(Some(&cursor)).ok(),
                Some(Some(key.to_owned()))
            );
        }
        assert_eq!(
            encode_cursor("sensor-1"),
            "sensor-1",
            "a usual key stays as it is"
        );
        assert_eq!(encode_cursor("a/b\u{0}\u{0}c"), "a/b%00%00c");
        // Not made by `encode_cursor`: a bare `+`, lower-case or short escapes, an escaped
        // byte that is kept as it is, bytes that are not UTF-8.
        for bad in ["+f+f", "a%0a", "%4", "%41", "%C3", "a b", "é"] {
            assert!(decode_cursor(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(decode_cursor(None).ok(), Some(None));
    }

    #[test]
    fn process_stats_reads_proc_on_linux() {
        if cfg!(target_os = "linux") {
            let stats = process_stats().expect("read /proc/self");
            assert!(stats.rss_bytes > 1024 * 1024, "{stats:?}");
            assert!(stats.open_fds >= 3, "{stats:?}");
        }
    }
}
