//! Broker configuration: every knob, with safe defaults, deserializable from TOML.
//!
//! Every field has a default, so an empty file (or [`BrokerConfig::default`]) is a working
//! broker. `docs/broker-config.md` documents each key.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use midge_codec::QoS;
use midge_proto::server::ServerConfig;
use midge_proto::session::QueueLimits;
use midge_topic::Limits;
use serde::Deserialize;

/// The whole broker configuration. Sections mirror the TOML file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BrokerConfig {
    /// `[listener]`: where to listen.
    pub listener: ListenerConfig,
    /// `[limits]`: protections against misbehaving and hostile clients.
    pub limits: LimitsConfig,
    /// `[sessions]`: persistent sessions and offline queues.
    pub sessions: SessionsConfig,
    /// `[mqtt]`: protocol capabilities announced to clients.
    pub mqtt: MqttConfig,
    /// `[shared_subscriptions]`: how a shared group picks its member.
    pub shared_subscriptions: SharedConfig,
    /// `[sys]`: `$SYS` topics.
    pub sys: SysConfig,
}

/// `[listener]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ListenerConfig {
    /// Address and port to listen on. Default `0.0.0.0:1883`.
    pub bind: SocketAddr,
    /// Connections the kernel completes and holds until the broker accepts them (the `listen`
    /// backlog). Past it, a connecting client's SYN goes unanswered and is retried after a
    /// second or more, so a burst of connections larger than the backlog waits. The kernel
    /// may cap it (Linux: `net.core.somaxconn`). Default 1024.
    pub backlog: u32,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([0, 0, 0, 0], 1883)),
            backlog: 1024,
        }
    }
}

/// `[limits]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LimitsConfig {
    /// Most simultaneous client connections; a CONNECT beyond it is refused with 0x89
    /// (Server busy; 3.x: 3 Server unavailable). Default 100 000.
    pub max_connections: usize,
    /// Most sessions, online and offline: every client identifier the broker keeps state
    /// for. A persistent session outlives its connection, so without this limit clients
    /// could pile up offline sessions without end. A CONNECT with a new client identifier
    /// beyond it is refused with 0x97 (Quota exceeded; 3.x: 3 Server unavailable); known
    /// identifiers still connect. Default 1 000 000.
    pub max_sessions: usize,
    /// A connection that sends no CONNECT within this many milliseconds is closed. Default
    /// 10 000.
    pub connect_timeout_ms: u64,
    /// Largest packet accepted from a client, in bytes (checked from the fixed header, before
    /// any allocation). Default 1 MiB.
    pub max_packet_size: u32,
    /// Receive Maximum: QoS 1 and 2 messages a client may have unacknowledged towards the
    /// broker. Default 1024.
    pub receive_maximum: u16,
    /// Most QoS 1 and 2 messages in flight from the broker to one client. Default 256.
    pub max_inflight: u16,
    /// Most subscriptions one session may hold. Default 10 000.
    pub max_subscriptions_per_client: usize,
    /// Most levels in a topic name or filter. Default 128.
    pub max_topic_levels: usize,
    /// Largest Keep Alive granted, in seconds (0: no limit). Default 0.
    pub max_keepalive: u16,
    /// Topic aliases a 5.0 client may set towards the broker. Default 64.
    pub topic_alias_maximum: u16,
    /// Deliveries buffered in one connection's inbox. When it is full, deliveries wait up to
    /// `backpressure_timeout_ms`. Default 4096.
    pub inbox_capacity: usize,
    /// How long a delivery waits for room in a subscriber's full inbox, holding up its
    /// publisher (which is acknowledged only afterwards). A subscriber that makes no room
    /// in that time is marked congested, and later deliveries to it are dropped and counted at
    /// once until it catches up. Default 1000 ms.
    pub backpressure_timeout_ms: u64,
    /// Global budget, in bytes, for what waits anywhere: messages in inboxes and in online and
    /// offline sessions' queues, retained messages waiting to be sent to new subscriptions, and
    /// wills while they are kept, each counted as it really holds (see `docs/broker-config.md`).
    /// A message that would exceed it is dropped and counted. Default 256 MiB.
    pub max_queued_bytes_total: usize,
    /// Most retained messages kept. A retained PUBLISH on a new topic beyond it is delivered
    /// but not retained, and counted (`dropped_retained`). Default 1 000 000.
    pub max_retained_messages: usize,
    /// Most bytes of retained messages kept: what each message holds (topic, payload,
    /// properties and its fixed size) and its index entry. A retained PUBLISH that would
    /// go over it is delivered but not retained, and its topic's previous retained message is
    /// cleared, since it is no longer the last one; counted (`dropped_retained`). Default
    /// 256 MiB.
    pub max_retained_bytes: usize,
    /// How long, in milliseconds, a closing connection may take to flush its last packets
    /// (a DISCONNECT or CONNACK) before the socket is dropped. Default 2000.
    pub close_timeout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            max_sessions: 1_000_000,
            connect_timeout_ms: 10_000,
            max_packet_size: 1024 * 1024,
            receive_maximum: 1024,
            max_inflight: 256,
            max_subscriptions_per_client: 10_000,
            max_topic_levels: 128,
            max_keepalive: 0,
            topic_alias_maximum: 64,
            inbox_capacity: 4096,
            backpressure_timeout_ms: 1000,
            max_queued_bytes_total: 256 * 1024 * 1024,
            max_retained_messages: 1_000_000,
            max_retained_bytes: 256 * 1024 * 1024,
            close_timeout_ms: 2000,
        }
    }
}

/// `[sessions]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SessionsConfig {
    /// Most messages waiting for one session: its queue, and while it is connected its inbox
    /// too; counted when a message is routed, so the publisher learns of a full session then.
    /// Default 1000.
    pub max_queued_messages: usize,
    /// Most bytes waiting for one session, counted as `max_queued_messages` counts messages,
    /// each message as it really holds. Default 16 MiB.
    pub max_queued_bytes: usize,
    /// Largest Session Expiry Interval granted to 5.0 clients, in seconds. Default
    /// 4 294 967 295 (never expire).
    pub max_session_expiry: u32,
    /// Whether QoS 0 messages are queued for offline persistent sessions (mosquitto's
    /// `queue_qos0_messages`). Default false.
    pub queue_qos0_offline: bool,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            max_queued_messages: 1000,
            max_queued_bytes: 16 * 1024 * 1024,
            max_session_expiry: u32::MAX,
            queue_qos0_offline: false,
        }
    }
}

/// `[mqtt]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct MqttConfig {
    /// Highest QoS accepted and granted: 0, 1 or 2. Default 2.
    pub maximum_qos: u8,
    /// Whether retained messages are supported. Default true.
    pub retain_available: bool,
    /// Whether wildcard subscriptions are supported. Default true.
    pub wildcard_subscriptions: bool,
    /// Whether subscription identifiers are supported. Default true.
    pub subscription_identifiers: bool,
    /// Whether shared subscriptions are supported. Default true.
    pub shared_subscriptions: bool,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            maximum_qos: 2,
            retain_available: true,
            wildcard_subscriptions: true,
            subscription_identifiers: true,
            shared_subscriptions: true,
        }
    }
}

/// How a shared subscription group picks the member that gets a message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SharedStrategy {
    /// Each member in turn.
    #[default]
    RoundRobin,
    /// A random member.
    Random,
    /// The same member for the same publisher (hash of the publisher's client identifier),
    /// which keeps one publisher's messages in order.
    Sticky,
}

/// `[shared_subscriptions]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SharedConfig {
    /// `round_robin` (default), `random` or `sticky`.
    pub strategy: SharedStrategy,
}

/// `[sys]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SysConfig {
    /// Seconds between `$SYS` updates (0: never publish). Default 10.
    pub interval_secs: u64,
}

impl Default for SysConfig {
    fn default() -> Self {
        Self { interval_secs: 10 }
    }
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `mqtt.maximum_qos` is not 0, 1 or 2.
    #[error("mqtt.maximum_qos must be 0, 1 or 2, not {0}")]
    MaximumQos(u8),
    /// A limit that must be positive is 0.
    #[error("{0} must be greater than 0")]
    Zero(&'static str),
}

impl BrokerConfig {
    /// Checks the values that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if QoS::from_u8(self.mqtt.maximum_qos).is_none() {
            return Err(ConfigError::MaximumQos(self.mqtt.maximum_qos));
        }
        let zero = [
            ("listener.backlog", self.listener.backlog as usize),
            (
                "limits.max_packet_size",
                self.limits.max_packet_size as usize,
            ),
            (
                "limits.receive_maximum",
                usize::from(self.limits.receive_maximum),
            ),
            ("limits.max_inflight", usize::from(self.limits.max_inflight)),
            ("limits.max_topic_levels", self.limits.max_topic_levels),
            ("limits.inbox_capacity", self.limits.inbox_capacity),
            ("limits.max_sessions", self.limits.max_sessions),
        ];
        for (name, value) in zero {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        Ok(())
    }

    /// The per-connection configuration for [`midge_proto`].
    pub(crate) fn server_config(&self) -> Arc<ServerConfig> {
        let mut c = ServerConfig::default();
        c.connect_timeout = Duration::from_millis(self.limits.connect_timeout_ms);
        c.max_keep_alive = self.limits.max_keepalive;
        c.receive_maximum = self.limits.receive_maximum;
        c.maximum_packet_size = self.limits.max_packet_size;
        c.topic_alias_maximum = self.limits.topic_alias_maximum;
        c.maximum_qos = QoS::from_u8(self.mqtt.maximum_qos).unwrap_or(QoS::ExactlyOnce);
        c.retain_available = self.mqtt.retain_available;
        c.wildcard_subscriptions = self.mqtt.wildcard_subscriptions;
        c.subscription_identifiers = self.mqtt.subscription_identifiers;
        c.shared_subscriptions = self.mqtt.shared_subscriptions;
        c.max_session_expiry = self.sessions.max_session_expiry;
        c.max_inflight = self.limits.max_inflight;
        c.queue_limits = self.queue_limits();
        c.topic_limits = self.topic_limits();
        c.max_subscriptions = self.limits.max_subscriptions_per_client;
        Arc::new(c)
    }

    pub(crate) fn queue_limits(&self) -> QueueLimits {
        let mut q = QueueLimits::default();
        q.max_messages = self.sessions.max_queued_messages;
        q.max_bytes = self.sessions.max_queued_bytes;
        q
    }

    pub(crate) fn topic_limits(&self) -> Limits {
        Limits::DEFAULT.with_max_levels(self.limits.max_topic_levels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BrokerConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn the_listen_backlog_defaults_to_1024_parses_and_is_checked() {
        assert_eq!(BrokerConfig::default().listener.backlog, 1024);
        assert_eq!(parse("").expect("parses").listener.backlog, 1024);
        let config = parse("[listener]\nbacklog = 4096\n").expect("parses");
        assert_eq!(config.listener.backlog, 4096);
        config.validate().expect("valid");
        let config = parse("[listener]\nbacklog = 0\n").expect("parses");
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Zero("listener.backlog"))
        ));
        assert!(parse("[listener]\nbacklog = -1\n").is_err());
    }

    #[test]
    fn there_is_no_seed_to_configure() {
        // Assigned client identifiers come from the OS's secure random source.
        let err = parse("[mqtt]\nseed = 7\n").expect_err("unknown key");
        assert!(err.to_string().contains("seed"), "{err}");
    }
}
