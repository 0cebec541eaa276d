//! TEMPORARY: the contract's `midge_broker::Admin` API, until it lands on main.
#![allow(dead_code, missing_docs, unreachable_pub)]

use bytes::Bytes;
use midge_broker::BrokerStats;

#[derive(Clone, Debug)]
pub struct Admin;

#[derive(Clone, Debug, serde::Serialize)]
pub struct BrokerInfo {
    pub version: String,
    pub uptime_secs: u64,
    pub started_at_unix: u64,
    pub listeners: Vec<ListenerInfo>,
    pub persistence: bool,
}
#[derive(Clone, Debug, serde::Serialize)]
pub struct ListenerInfo {
    pub index: usize,
    pub name: String,
    pub connections: usize,
}
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClientSummary {
    pub client_id: String,
    pub username: Option<String>,
    pub address: String,
    pub listener: usize,
    pub protocol: &'static str,
    pub keepalive: u16,
    pub clean_start: bool,
    pub connected_since_unix: u64,
    pub inflight: usize,
    pub queued: usize,
}
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClientPage {
    pub clients: Vec<ClientSummary>,
    pub total: usize,
    pub next: Option<String>,
}
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClientDetail {
    #[serde(flatten)]
    pub summary: ClientSummary,
    pub subscriptions: Vec<SubscriptionInfo>,
}
#[derive(Clone, Debug, serde::Serialize)]
pub struct SubscriptionInfo {
    pub client_id: String,
    pub filter: String,
    pub share_group: Option<String>,
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: u8,
}
#[derive(Clone, Debug, serde::Serialize)]
pub struct SubscriptionPage {
    pub subscriptions: Vec<SubscriptionInfo>,
    pub next: Option<String>,
}
#[derive(Clone, Debug, serde::Serialize)]
pub struct RetainedInfo {
    pub topic: String,
    pub qos: u8,
    pub payload_bytes: usize,
    pub payload_preview: String,
}
#[derive(Clone, Debug, serde::Serialize)]
pub struct RetainedPage {
    pub topics: Vec<RetainedInfo>,
    pub next: Option<String>,
}
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("invalid filter: {0}")]
    InvalidFilter(String),
    #[error("invalid topic: {0}")]
    InvalidTopic(String),
}

#[derive(Clone, Debug)]
pub struct Metrics {
    pub stats: BrokerStats,
    pub connections: Vec<(usize, String, &'static str, usize)>,
    pub connects: Vec<(&'static str, u64)>,
    pub disconnects: Vec<(&'static str, u64)>,
    pub sessions_online: usize,
    pub sessions_offline: usize,
    pub subscriptions: usize,
    pub shared_subscriptions: usize,
    pub retained_messages: usize,
    pub messages_in: [u64; 3],
    pub bytes_in: [u64; 3],
    pub messages_out: [u64; 3],
    pub bytes_out: [u64; 3],
    pub drops: Vec<(&'static str, u64)>,
    pub queued_messages: usize,
    pub queued_bytes: usize,
    pub inflight_messages: usize,
    pub auth_failures: u64,
    pub delivery_latency: Histogram,
    pub process: Option<ProcessStats>,
}
#[derive(Clone, Debug)]
pub struct Histogram {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}
#[derive(Clone, Debug)]
pub struct ProcessStats {
    pub rss_bytes: u64,
    pub open_fds: u64,
}

impl Admin {
    pub fn info(&self) -> BrokerInfo {
        todo!()
    }
    pub fn stats(&self) -> BrokerStats {
        todo!()
    }
    pub fn metrics(&self) -> Metrics {
        todo!()
    }
    pub fn is_ready(&self) -> bool {
        todo!()
    }
    pub fn clients(&self, _after: Option<&str>, _limit: usize) -> ClientPage {
        todo!()
    }
    pub fn client(&self, _client_id: &str) -> Option<ClientDetail> {
        todo!()
    }
    pub fn kick(&self, _client_id: &str) -> bool {
        todo!()
    }
    pub fn retained(
        &self,
        _filter: Option<&str>,
        _after: Option<&str>,
        _limit: usize,
    ) -> Result<RetainedPage, AdminError> {
        todo!()
    }
    pub fn delete_retained(&self, _topic: &str) -> Result<bool, AdminError> {
        todo!()
    }
    pub fn subscriptions(
        &self,
        _filter: Option<&str>,
        _after: Option<&str>,
        _limit: usize,
    ) -> SubscriptionPage {
        todo!()
    }
    pub fn publish(
        &self,
        _topic: &str,
        _payload: Bytes,
        _qos: u8,
        _retain: bool,
    ) -> Result<usize, AdminError> {
        todo!()
    }
}
