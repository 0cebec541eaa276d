//! Broker configuration: every knob, with safe defaults, deserializable from TOML.
//!
//! Every field has a default, so an empty file (or [`BrokerConfig::default`]) is a working
//! broker. `docs/broker-config.md` documents each key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use midge_codec::QoS;
use midge_proto::server::ServerConfig;
use midge_proto::session::QueueLimits;
use midge_topic::Limits;
use serde::Deserialize;

/// The whole broker configuration. Sections mirror the TOML file.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BrokerConfig {
    /// `[[listener]]`: where to listen, and how. At least one; a single `[listener]` table
    /// is one.
    #[serde(
        rename = "listener",
        deserialize_with = "one_or_many",
        default = "default_listeners"
    )]
    pub listeners: Vec<ListenerConfig>,
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
    /// `[auth]`: who may connect, and what each client may publish and read.
    pub auth: AuthConfig,
    /// `[persistence]`: keeping sessions, queued messages and retained messages on disk.
    /// Off (everything in memory) unless `path` is set.
    pub persistence: PersistenceConfig,
    /// `[http]`: metrics, health checks, the admin API and the dashboard. Off unless `bind`
    /// is set.
    pub http: HttpConfig,
    /// `[log]`: what `midge broker` logs, and how.
    pub log: LogConfig,
    /// `[[bridge]]`: connections to other brokers, each forwarding some topics out to it and
    /// some in from it. None by default.
    #[serde(rename = "bridge")]
    pub bridges: Vec<BridgeConfig>,
    /// `[cluster]`: this broker is one node of a cluster joined through NATS. Without it
    /// the broker is standalone.
    pub cluster: Option<ClusterConfig>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            listeners: default_listeners(),
            limits: LimitsConfig::default(),
            sessions: SessionsConfig::default(),
            mqtt: MqttConfig::default(),
            shared_subscriptions: SharedConfig::default(),
            sys: SysConfig::default(),
            auth: AuthConfig::default(),
            persistence: PersistenceConfig::default(),
            http: HttpConfig::default(),
            log: LogConfig::default(),
            bridges: Vec::new(),
            cluster: None,
        }
    }
}

/// `[[listener]]`: one place the broker accepts connections, and the protocols spoken there.
///
/// A single `[listener]` table is one listener; an array of `[[listener]]` tables is several.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ListenerConfig {
    /// Where to listen: `address:port` for TCP, or `unix:PATH` for a Unix socket. Default
    /// `0.0.0.0:1883`.
    pub bind: BindAddr,
    /// What the stream carries: MQTT directly (`mqtt`, the default) or MQTT over WebSocket
    /// (`ws`).
    pub protocol: ListenerProtocol,
    /// The HTTP path a WebSocket listener upgrades (`ws` only). Default `/mqtt`.
    pub path: String,
    /// Origins a WebSocket listener accepts (the browser's `Origin` header, such as
    /// `https://app.example.com`); empty accepts any (`ws` only). Default empty.
    pub allowed_origins: Vec<String>,
    /// `[listener.tls]`: TLS on this listener (`mqtts`, or `wss` with `protocol = "ws"`).
    pub tls: Option<TlsConfig>,
    /// Most connections open at once on this listener; one beyond it is closed at once.
    /// Default: no limit of its own (`limits.max_connections` still applies).
    pub max_connections: Option<usize>,
    /// Every connection begins with a HAProxy PROXY protocol header (v1 or v2), whose source
    /// address then stands for the client's in logs and hooks. A connection without one is
    /// closed. Only for listeners behind a load balancer that sends it. Default false.
    pub proxy_protocol: bool,
    /// Connections the kernel completes and holds until the broker accepts them (the `listen`
    /// backlog). Past it, a connecting client's SYN goes unanswered and is retried after a
    /// second or more, so a burst of connections larger than the backlog waits. The kernel
    /// may cap it (Linux: `net.core.somaxconn`). Default 1024.
    pub backlog: u32,
    /// Overrides `auth.allow_anonymous` on this listener (mosquitto's
    /// `per_listener_settings`). Default: the `[auth]` setting.
    pub allow_anonymous: Option<bool>,
    /// Overrides `auth.password_file` on this listener: its clients are checked against this
    /// file instead. Default: the `[auth]` setting.
    pub password_file: Option<PathBuf>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            bind: BindAddr::Tcp(SocketAddr::from(([0, 0, 0, 0], 1883))),
            protocol: ListenerProtocol::Mqtt,
            path: "/mqtt".into(),
            allowed_origins: Vec::new(),
            tls: None,
            max_connections: None,
            proxy_protocol: false,
            backlog: 1024,
            allow_anonymous: None,
            password_file: None,
        }
    }
}

impl ListenerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let fail = |what| {
            Err(ConfigError::Listener {
                bind: self.bind.to_string(),
                what,
            })
        };
        if self.backlog == 0 {
            return fail("backlog must be greater than 0");
        }
        if self.max_connections == Some(0) {
            return fail("max_connections must be greater than 0");
        }
        match self.protocol {
            ListenerProtocol::Ws if !self.path.starts_with('/') => {
                return fail("path must begin with /");
            }
            ListenerProtocol::Mqtt if self.path != "/mqtt" => {
                return fail("path is for WebSocket listeners (protocol = \"ws\") only");
            }
            ListenerProtocol::Mqtt if !self.allowed_origins.is_empty() => {
                return fail("allowed_origins is for WebSocket listeners (protocol = \"ws\") only");
            }
            _ => {}
        }
        if let Some(tls) = &self.tls {
            if tls.require_client_cert && tls.client_ca.is_none() {
                return fail("tls.require_client_cert needs tls.client_ca, the CA that client certificates are checked against");
            }
            if tls.use_identity_as_username && !tls.require_client_cert {
                return fail("tls.use_identity_as_username needs tls.require_client_cert = true");
            }
            let mut names = std::collections::HashSet::new();
            for sni in &tls.sni {
                if sni.server_name.is_empty() {
                    return fail("a tls.sni entry has an empty server_name");
                }
                if !names.insert(sni.server_name.to_ascii_lowercase()) {
                    return fail("two tls.sni entries have the same server_name");
                }
            }
            if tls
                .alpn
                .iter()
                .flatten()
                .any(|p| p.is_empty() || p.len() > 255)
            {
                return fail("tls.alpn protocols are 1 to 255 bytes long");
            }
        }
        Ok(())
    }

    /// Makes relative paths (a Unix socket's, the TLS files') relative to `dir`.
    pub fn resolve_paths(&mut self, dir: &Path) {
        if let BindAddr::Unix(path) = &mut self.bind {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        }
        if let Some(tls) = &mut self.tls {
            tls.resolve_paths(dir);
        }
        if let Some(path) = &mut self.password_file {
            resolve(path, dir);
        }
    }

    /// A listener on `bind` with every other key at its default.
    pub fn new(bind: BindAddr) -> Self {
        Self {
            bind,
            ..Self::default()
        }
    }

    /// How logs name the listener: its address and protocols, such as `0.0.0.0:8883 (mqtts)`.
    pub fn describe(&self) -> String {
        let scheme = match (self.protocol, self.tls.is_some()) {
            (ListenerProtocol::Mqtt, false) => "mqtt",
            (ListenerProtocol::Mqtt, true) => "mqtts",
            (ListenerProtocol::Ws, false) => "ws",
            (ListenerProtocol::Ws, true) => "wss",
        };
        let proxy = if self.proxy_protocol { ", PROXY" } else { "" };
        format!("{} ({scheme}{proxy})", self.bind)
    }
}

/// Where a listener listens.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BindAddr {
    /// A TCP address and port (port 0 picks a free one).
    Tcp(SocketAddr),
    /// A Unix socket at this path (`unix:PATH` in the file).
    Unix(PathBuf),
}

impl std::fmt::Display for BindAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(addr) => addr.fmt(f),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl std::str::FromStr for BindAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a socket path, as in unix:/run/midge.sock".into());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        text.parse::<SocketAddr>()
            .map(Self::Tcp)
            .map_err(|_| bind_error(text))
    }
}

/// Why `text` is no `bind`, and how to write what was most likely meant.
fn bind_error(text: &str) -> String {
    const FORMS: &str = "an IP address and a port, such as 127.0.0.1:1883 (this machine only), \
                         0.0.0.0:1883 (every IPv4 address), [::1]:1883 or [::]:1883 (IPv6), \
                         or unix:PATH";
    if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        if ip.is_ipv6() {
            return format!(
                "{text:?} has no port: an IPv6 address takes brackets before its port, as in \
                 \"[{ip}]:1883\""
            );
        }
        return format!("{text:?} has no port: write \"{ip}:1883\" (address:port)");
    }
    if let Some((host, port)) = text.rsplit_once(':') {
        if port.parse::<u16>().is_ok()
            && !host.is_empty()
            && host.parse::<std::net::IpAddr>().is_err()
        {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.parse::<std::net::Ipv6Addr>().is_ok() {
                return format!("{text:?}: an IPv6 address takes brackets before the port, as in [{host}]:{port}");
            }
            let local = if host.eq_ignore_ascii_case("localhost") {
                format!(" (for {host}: 127.0.0.1:{port}, or [::1]:{port} for IPv6)")
            } else {
                String::new()
            };
            return format!("{text:?}: host names are not resolved; write {FORMS}{local}");
        }
    }
    format!("{text:?} is not {FORMS}")
}

impl<'de> Deserialize<'de> for BindAddr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What a listener's stream carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ListenerProtocol {
    /// MQTT packets directly on the stream.
    #[default]
    Mqtt,
    /// MQTT over WebSocket: binary frames carry the packets (MQTT 5.0 section 6).
    Ws,
}

/// `[listener.tls]`: the listener's certificate, and client certificates.
///
/// Relative paths are taken from the directory the broker runs in; `midge broker --config`
/// takes them from the configuration file's directory instead.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TlsConfig {
    /// The server's certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to. Setting it makes the
    /// broker ask clients for a certificate. Default: none asked for.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Refuse a client without a valid certificate (needs `client_ca`). When false, a client
    /// may send none, but one it sends must be valid. Default false.
    #[serde(default)]
    pub require_client_cert: bool,
    /// The Common Name of the client's certificate becomes its user name, in place of any
    /// the CONNECT names, as mosquitto's option of that name does (needs
    /// `require_client_cert`). Default false.
    #[serde(default)]
    pub use_identity_as_username: bool,
    /// `[[listener.tls.sni]]`: certificates for particular server names. A client that asks
    /// for one of these names (SNI) gets its certificate; any other gets `cert`. Default none.
    #[serde(default)]
    pub sni: Vec<SniConfig>,
    /// ALPN protocols the listener accepts. A client that offers ALPN but none of these fails
    /// its handshake; one that offers none is served. Empty: no ALPN at all, so that any
    /// client is served whatever it offers. Default `["mqtt"]` for `mqtt` listeners,
    /// `["http/1.1"]` for `ws` ones.
    #[serde(default)]
    pub alpn: Option<Vec<String>>,
}

/// `[[listener.tls.sni]]`: a certificate for one server name.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SniConfig {
    /// The DNS name clients ask for, matched without regard to case.
    pub server_name: String,
    /// Its certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

impl TlsConfig {
    /// TLS with certificate `cert` and key `key`, no client certificates.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
            require_client_cert: false,
            use_identity_as_username: false,
            sni: Vec::new(),
            alpn: None,
        }
    }

    /// Makes relative paths relative to `dir`.
    pub fn resolve_paths(&mut self, dir: &Path) {
        let named = self
            .sni
            .iter_mut()
            .flat_map(|sni| [&mut sni.cert, &mut sni.key]);
        for path in [&mut self.cert, &mut self.key].into_iter().chain(named) {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        }
        if let Some(path) = &mut self.client_ca {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        }
    }
}

/// One listener (a `[listener]` table) or several (`[[listener]]` tables). By hand rather
/// than an untagged enum, so that an error inside a listener keeps its message and place.
fn one_or_many<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<ListenerConfig>, D::Error> {
    struct Listeners;

    impl<'de> serde::de::Visitor<'de> for Listeners {
        type Value = Vec<ListenerConfig>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a [listener] table or [[listener]] tables")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            let one =
                ListenerConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
            Ok(vec![one])
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut all = Vec::new();
            while let Some(one) = seq.next_element::<ListenerConfig>()? {
                all.push(one);
            }
            Ok(all)
        }
    }

    deserializer.deserialize_any(Listeners)
}

fn default_listeners() -> Vec<ListenerConfig> {
    vec![ListenerConfig::default()]
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

/// `[persistence]`: sessions, queued and in-flight messages and retained messages kept on
/// disk, so that a restart (or a crash) loses nothing that was acknowledged.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PersistenceConfig {
    /// The store's file. Setting it turns persistence on; unset, the broker keeps everything
    /// in memory.
    pub path: Option<PathBuf>,
    /// When a QoS 1 or 2 message is acknowledged: `always` (the default) once it is on disk
    /// for every persistent session that must receive it; `interval` at once, with the disk
    /// brought up to date every `sync_interval_ms`.
    pub sync: SyncMode,
    /// With `sync = "interval"`: milliseconds between syncs (default 1000). What was
    /// acknowledged in the last interval before a crash is lost.
    pub sync_interval_ms: Option<u64>,
    /// Largest the store's file may grow, in bytes (unset: no limit). When it is reached, new
    /// QoS 1 and 2 messages are refused (0x97 Quota exceeded under 5.0; the connection is
    /// closed under 3.x) rather than acknowledged and lost.
    pub max_disk_bytes: Option<u64>,
}

/// When a persistent broker acknowledges a QoS 1 or 2 message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SyncMode {
    /// Once it is durably stored (group commit: concurrent publishers share each sync).
    #[default]
    Always,
    /// At once; the store is synced every `sync_interval_ms`.
    Interval,
}

/// `[http]`: the broker's HTTP endpoint, which serves Prometheus metrics (`/metrics`), health
/// checks (`/health`, `/ready`), the admin API (`/api/v1/...`) and the dashboard (`/`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct HttpConfig {
    /// Where to listen. Unset (the default): no HTTP endpoint at all.
    pub bind: Option<SocketAddr>,
    /// The bearer token the admin API asks for. Without it (or `token_file`), the admin API is
    /// off; metrics, health checks and the dashboard page still answer.
    pub token: Option<Secret>,
    /// A file holding the token (surrounding whitespace ignored), instead of `token`.
    pub token_file: Option<PathBuf>,
    /// Whether the admin API answers clients other than this machine's (loopback). Default
    /// false: others get 403 Forbidden, whatever token they send.
    pub api_allow_remote: bool,
}

/// A secret from the configuration: usable, never printed (`Debug` shows `<redacted>`, and an
/// error reading one never quotes what was there).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Secret;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Secret, E> {
                Ok(Secret(value.to_owned()))
            }

            // Serde's own messages for the other types quote the value.
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(E::custom(
                    "a secret must be a string (in quotes), not a number",
                ))
            }

            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(E::custom(
                    "a secret must be a string (in quotes), not a number",
                ))
            }

            fn visit_i128<E: serde::de::Error>(self, _: i128) -> Result<Secret, E> {
                Err(E::custom(
                    "a secret must be a string (in quotes), not a number",
                ))
            }

            fn visit_u128<E: serde::de::Error>(self, _: u128) -> Result<Secret, E> {
                Err(E::custom(
                    "a secret must be a string (in quotes), not a number",
                ))
            }

            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom(
                    "a secret must be a string (in quotes), not a number",
                ))
            }

            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::custom(
                    "a secret must be a string (in quotes), not a boolean",
                ))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

impl Secret {
    /// A secret holding `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `[log]`: what `midge broker` logs, and how. Command-line options (`-v`, `--log-format`) and
/// the `RUST_LOG` environment variable take precedence.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LogConfig {
    /// A level (`error`, `warn`, `info`, `debug`, `trace`) or a filter in `RUST_LOG`'s syntax
    /// (`info,midge_broker=debug`). Default `info`. Reloaded on SIGHUP.
    pub level: Option<String>,
    /// `text` (the default) or `json` (one JSON object per line, for log shippers).
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
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

/// `[auth]`: who may connect, and what each client may publish and read.
///
/// Without any of it, the broker is open to this machine only: clients are accepted without
/// credentials over loopback and Unix sockets, and refused from anywhere else (CONNACK 0x87
/// Not authorized; 5 for 3.x) until `allow_anonymous = true` says the network may come in.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AuthConfig {
    /// Whether clients without a user name (and without a certificate identity or an
    /// enhanced authentication) are accepted. Unset: accepted over loopback and Unix sockets
    /// only, when no password file is configured; refused when one is. A listener may
    /// override it.
    pub allow_anonymous: Option<bool>,
    /// A password file in mosquitto's format (`mosquitto_passwd` files work as they are;
    /// `midge passwd` writes them). Clients with a user name must give its password; its
    /// SCRAM-SHA-256 entries also serve MQTT 5.0 enhanced authentication. A listener may use
    /// another file. Re-read on SIGHUP.
    pub password_file: Option<PathBuf>,
    /// An ACL file in mosquitto's format: what each client may publish, subscribe to and
    /// receive. Without one, every client may use every topic but `$SYS` (which it may read
    /// but not publish to). Re-read on SIGHUP.
    pub acl_file: Option<PathBuf>,
    /// Failed password checks from one client address within
    /// `failed_attempts_window_secs` before further CONNECTs with a password from it are
    /// refused at once (0x9F Connection rate exceeded; 3 for 3.x) until the window passes.
    /// Checks run in order, and each looks at the limit as it begins: a storm of wrong
    /// passwords sent at once gets no more hashed than this (plus one per verification
    /// thread). IPv6 addresses count by /64. 0 turns this off. Default 10.
    pub max_failed_attempts: u32,
    /// The window of `max_failed_attempts`, in seconds. Default 60.
    pub failed_attempts_window_secs: u64,
    /// Threads that check passwords, off the threads that route messages: at most this many
    /// hashes are computed at once, and CONNECTs beyond wait their turn. Default: half the
    /// CPUs, at least 1.
    pub verify_threads: Option<usize>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            allow_anonymous: None,
            password_file: None,
            acl_file: None,
            max_failed_attempts: 10,
            failed_attempts_window_secs: 60,
            verify_threads: None,
        }
    }
}

impl AuthConfig {
    /// Makes relative file paths relative to `dir`.
    pub fn resolve_paths(&mut self, dir: &Path) {
        for path in [&mut self.password_file, &mut self.acl_file]
            .into_iter()
            .flatten()
        {
            resolve(path, dir);
        }
    }

    /// Threads that check passwords: `verify_threads`, or half the CPUs (at least 1).
    pub fn verify_threads(&self) -> usize {
        self.verify_threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
        })
    }
}

fn resolve(path: &mut PathBuf, dir: &Path) {
    if path.is_relative() {
        *path = dir.join(&*path);
    }
}

impl BrokerConfig {
    /// Makes every relative path in the configuration (Unix sockets, TLS, password and ACL
    /// files, the store) relative to `dir`: the directory of the file it was read from.
    pub fn resolve_paths(&mut self, dir: &Path) {
        for listener in &mut self.listeners {
            listener.resolve_paths(dir);
        }
        self.auth.resolve_paths(dir);
        if let Some(path) = &mut self.persistence.path {
            resolve(path, dir);
        }
        if let Some(path) = &mut self.http.token_file {
            resolve(path, dir);
        }
        if let Some(cluster) = &mut self.cluster {
            for path in [&mut cluster.creds_file, &mut cluster.ca_file]
                .into_iter()
                .flatten()
            {
                resolve(path, dir);
            }
        }
        for bridge in &mut self.bridges {
            if let Some(tls) = &mut bridge.tls {
                for path in [&mut tls.ca_file, &mut tls.cert, &mut tls.key]
                    .into_iter()
                    .flatten()
                {
                    resolve(path, dir);
                }
            }
        }
    }
}

/// `[[bridge]]`: a connection to another broker (the remote) that forwards messages between
/// it and this broker, with mosquitto's meaning of topic patterns and prefixes.
///
/// The bridge is a client of the remote broker and, inside this broker, a trusted local
/// client whose session keeps what waits to be forwarded. Nothing is acknowledged on one side
/// before the other side acknowledged it. What waits for a remote that is down or slow is
/// held in that session (in memory, or in the store when persistence is on), bounded as
/// every session is, by `[sessions]` `max_queued_messages` and `max_queued_bytes`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BridgeConfig {
    /// The bridge's name: in logs, the admin API, metrics, and its local client identifier
    /// (`$bridge/` and the name). Letters, digits, `-`, `_` and `.`.
    pub name: String,
    /// The remote broker: `host:port` or a URL (`mqtt://`, `mqtts://`, `ws://`, `wss://`).
    /// Several are tried in order on every connection attempt, for failover.
    #[serde(deserialize_with = "string_or_strings")]
    pub address: Vec<String>,
    /// The client identifier at the remote broker. Default `midge.` and the name.
    pub client_id: Option<String>,
    /// The user name at the remote broker.
    pub username: Option<String>,
    /// The password at the remote broker.
    pub password: Option<Secret>,
    /// `"3.1.1"` (the default, as mosquitto's) or `"5.0"`.
    pub protocol_version: BridgeProtocol,
    /// Start a new session at the remote broker on every connection. Default false: the
    /// remote keeps the bridge's subscriptions and the messages for it while it is away.
    pub clean_start: bool,
    /// 5.0: how long the remote keeps the bridge's session after a disconnection, in seconds.
    /// Default: for ever (4294967295) unless `clean_start`.
    pub session_expiry_secs: Option<u32>,
    /// Keep Alive at the remote broker, in seconds (default 60).
    pub keepalive: u16,
    /// TLS to the remote (with a `mqtts://` or `wss://` address, or a `host:port` one when
    /// this table is present).
    pub tls: Option<BridgeTlsConfig>,
    /// What is forwarded, and which way.
    #[serde(rename = "topic")]
    pub topics: Vec<BridgeTopic>,
    /// 3.1.1: tell the remote that this client is a bridge (mosquitto's protocol flag), so
    /// that it does not send the bridge's own messages back and keeps the RETAIN flag as
    /// published. Default true. A remote that refuses it is connected to again without it.
    pub try_private: bool,
    /// Publish the bridge's state (`1` connected, `0` not), retained, on this broker and on
    /// the remote (with a will that says `0`). Default true.
    pub notifications: bool,
    /// Publish the state on this broker only.
    pub notifications_local_only: bool,
    /// The state's topic. Default `$SYS/broker/connection/` + name + `/state`.
    pub notification_topic: Option<String>,
    /// Delay before the first reconnection attempt, in milliseconds (default 1000); it
    /// doubles, with jitter, up to `reconnect_delay_max_ms` (default 30000).
    pub reconnect_delay_ms: u64,
    /// The longest delay between reconnection attempts, in milliseconds.
    pub reconnect_delay_max_ms: u64,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            address: Vec::new(),
            client_id: None,
            username: None,
            password: None,
            protocol_version: BridgeProtocol::default(),
            clean_start: false,
            session_expiry_secs: None,
            keepalive: 60,
            tls: None,
            topics: Vec::new(),
            try_private: true,
            notifications: true,
            notifications_local_only: false,
            notification_topic: None,
            reconnect_delay_ms: 1000,
            reconnect_delay_max_ms: 30_000,
        }
    }
}

impl BridgeConfig {
    /// The client identifier at the remote broker.
    pub fn remote_client_id(&self) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("midge.{}", self.name))
    }

    /// The topic the bridge's state is published to.
    pub fn notification_topic(&self) -> String {
        self.notification_topic
            .clone()
            .unwrap_or_else(|| format!("$SYS/broker/connection/{}/state", self.name))
    }

    fn validate(&self) -> Result<(), String> {
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(format!(
                "name {:?} must be letters, digits, '-', '_' and '.'",
                self.name
            ));
        }
        if self.address.is_empty() {
            return Err("address is missing (host:port or a URL)".into());
        }
        for (n, address) in self.address.iter().enumerate() {
            // The authority of a URL, or the whole of `host:port`: a user name or password
            // there would be shown wherever the address is (logs, the admin API). Not quoted.
            let rest = address
                .split_once("://")
                .map_or(address.as_str(), |(_, rest)| rest);
            let authority = rest.split('/').next().unwrap_or_default();
            if authority.contains('@') {
                return Err(format!(
                    "address {} holds a user name or password: give them as username and password",
                    n + 1
                ));
            }
            if authority.is_empty() {
                return Err(format!("address {} has no host", n + 1));
            }
        }
        if self.topics.is_empty() {
            return Err("no [[bridge.topic]]: the bridge would forward nothing".into());
        }
        if self.reconnect_delay_ms == 0 || self.reconnect_delay_max_ms < self.reconnect_delay_ms {
            return Err(
                "reconnect_delay_ms must be above 0 and at most reconnect_delay_max_ms".into(),
            );
        }
        if let Some(topic) = &self.notification_topic {
            midge_topic::TopicName::new(topic)
                .map_err(|e| format!("notification_topic {topic:?}: {e}"))?;
        }
        for topic in &self.topics {
            topic
                .validate()
                .map_err(|e| format!("topic {:?}: {e}", topic.pattern))?;
        }
        if let Some(tls) = &self.tls {
            if tls.cert.is_some() != tls.key.is_some() {
                return Err("tls.cert and tls.key go together".into());
            }
        }
        Ok(())
    }
}

/// The MQTT version a bridge speaks to its remote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub enum BridgeProtocol {
    /// MQTT 3.1.1 (`"3.1.1"`).
    #[default]
    #[serde(rename = "3.1.1", alias = "mqttv311")]
    V311,
    /// MQTT 5.0 (`"5.0"`).
    #[serde(rename = "5.0", alias = "5", alias = "mqttv50")]
    V5,
}

/// `[bridge.tls]`: TLS to a bridge's remote.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BridgeTlsConfig {
    /// CA certificates (PEM) the remote's certificate must chain to. Default: the system's.
    pub ca_file: Option<PathBuf>,
    /// A client certificate chain (PEM), for a remote that asks for one.
    pub cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    pub key: Option<PathBuf>,
    /// Accept a certificate that chains to the CA but names another host. Only for a private
    /// CA.
    pub insecure: bool,
}

/// Which way a bridge topic's messages go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum BridgeDirection {
    /// From this broker to the remote (the default, as mosquitto's).
    #[default]
    Out,
    /// From the remote to this broker.
    In,
    /// Both ways.
    Both,
}

impl BridgeDirection {
    /// Whether messages go out to the remote.
    pub fn out(self) -> bool {
        matches!(self, Self::Out | Self::Both)
    }

    /// Whether messages come in from the remote.
    pub fn inward(self) -> bool {
        matches!(self, Self::In | Self::Both)
    }
}

/// `[[bridge.topic]]`: what one pattern forwards, as mosquitto's `topic` line: the local topic
/// is `local_prefix` + the topic's part under `pattern`, the remote topic `remote_prefix` +
/// the same part. An empty pattern forwards the single topic the prefixes name.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BridgeTopic {
    /// A topic filter (`sensors/#`), or empty with both prefixes set.
    pub pattern: String,
    /// `out` (default), `in` or `both`.
    pub direction: BridgeDirection,
    /// The QoS of the subscriptions on both sides: messages are forwarded at most at it.
    pub qos: u8,
    /// Prefix of the topic on this broker.
    pub local_prefix: String,
    /// Prefix of the topic on the remote.
    pub remote_prefix: String,
}

impl BridgeTopic {
    /// The filter subscribed to on this broker.
    pub fn local_filter(&self) -> String {
        format!("{}{}", self.local_prefix, self.pattern)
    }

    /// The filter subscribed to on the remote.
    pub fn remote_filter(&self) -> String {
        format!("{}{}", self.remote_prefix, self.pattern)
    }

    fn validate(&self) -> Result<(), String> {
        if self.qos > 2 {
            return Err(format!("qos must be 0, 1 or 2, not {}", self.qos));
        }
        for (key, prefix) in [
            ("local_prefix", &self.local_prefix),
            ("remote_prefix", &self.remote_prefix),
        ] {
            if prefix.contains(['+', '#']) {
                return Err(format!("{key} {prefix:?} must not hold wildcards"));
            }
            if prefix.starts_with("$share/") || prefix.starts_with("$queue/") {
                return Err(format!(
                    "{key} {prefix:?}: a shared subscription cannot be bridged (its messages would have no topic to rename)"
                ));
            }
        }
        if self.pattern.is_empty() {
            for (key, prefix) in [
                ("local_prefix", &self.local_prefix),
                ("remote_prefix", &self.remote_prefix),
            ] {
                if prefix.is_empty() {
                    return Err(format!(
                        "an empty pattern needs {key}: the prefixes are then the topics"
                    ));
                }
                midge_topic::TopicName::new(prefix).map_err(|e| format!("{key}: {e}"))?;
            }
            return Ok(());
        }
        for filter in [self.local_filter(), self.remote_filter()] {
            midge_topic::TopicFilter::new(&filter)
                .map_err(|e| format!("filter {filter:?}: {e}"))?;
        }
        Ok(())
    }
}

/// Deserializes one string or a list of strings.
fn string_or_strings<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

/// `[cluster]`: this broker is one node of a cluster of brokers joined through NATS (with
/// JetStream for the retained messages). `docs/cluster.md` describes what a cluster does.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// The NATS servers: one URL (`nats://host:4222`, `tls://host:4222`) or several, tried in
    /// turn. Required.
    #[serde(deserialize_with = "strings_one_or_many")]
    pub nats: Vec<String>,
    /// This node's name, unique in the cluster: letters, digits, `-` and `_`. Required.
    pub node_id: String,
    /// The user name for NATS, with `password`.
    pub user: Option<String>,
    /// The password for NATS, with `user`.
    pub password: Option<Secret>,
    /// A token for NATS, instead of `user` and `password`.
    pub token: Option<Secret>,
    /// A NATS credentials file (a JWT and an NKey seed, as `nsc` writes them), instead of
    /// `user`/`password` or `token`.
    pub creds_file: Option<PathBuf>,
    /// CA certificates (PEM) to trust for the NATS servers' TLS certificates. With it, the
    /// connection to NATS must use TLS.
    pub ca_file: Option<PathBuf>,
    /// The prefix of every NATS subject and the name of every JetStream bucket the cluster
    /// uses: letters, digits, `-` and `_`. Clusters that share NATS servers need different
    /// prefixes. Default `midge`.
    #[serde(default = "default_subject_prefix")]
    pub subject_prefix: String,
    /// Replicas of the JetStream streams that will hold persistent sessions (1 to 5; at most
    /// the number of NATS servers). Default 1. Checked, but no stream uses it yet: sessions
    /// are still kept by each node.
    #[serde(default = "one")]
    pub stream_replicas: usize,
    /// Replicas of the JetStream key-value bucket of retained messages (1 to 5; at most the
    /// number of NATS servers). Default 1.
    #[serde(default = "one")]
    pub kv_replicas: usize,
    /// How long to wait for NATS when the broker starts, in milliseconds, before giving up
    /// with an error. Default 5000.
    #[serde(default = "default_cluster_connect_timeout")]
    pub connect_timeout_ms: u64,
}

fn default_subject_prefix() -> String {
    "midge".into()
}

fn one() -> usize {
    1
}

fn default_cluster_connect_timeout() -> u64 {
    5000
}

fn strings_one_or_many<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

impl ClusterConfig {
    /// A cluster configuration for `node_id` on the NATS servers `nats`, with the defaults
    /// otherwise.
    pub fn new(nats: Vec<String>, node_id: impl Into<String>) -> Self {
        Self {
            nats,
            node_id: node_id.into(),
            user: None,
            password: None,
            token: None,
            creds_file: None,
            ca_file: None,
            subject_prefix: default_subject_prefix(),
            stream_replicas: 1,
            kv_replicas: 1,
            connect_timeout_ms: default_cluster_connect_timeout(),
        }
    }

    /// Checks the values that cannot work; the error says which key is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.nats.is_empty() {
            return Err("nats needs at least one server URL".into());
        }
        for (n, url) in self.nats.iter().enumerate() {
            // Credentials in a URL would be shown wherever the URL is (logs, errors): refused,
            // and the URL not quoted.
            let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
            if rest.split('/').next().unwrap_or_default().contains('@') {
                return Err(format!(
                    "nats server {} holds a user name or password: give them as user and password, or token",
                    n + 1
                ));
            }
            check_nats_url(url).map_err(|what| format!("nats {url:?}: {what}"))?;
        }
        let name = |key: &str, value: &str| {
            if value.is_empty() {
                return Err(format!("{key} must not be empty"));
            }
            if !value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(format!(
                    "{key} {value:?} may hold only letters, digits, '-' and '_'"
                ));
            }
            Ok(())
        };
        name("node_id", &self.node_id)?;
        name("subject_prefix", &self.subject_prefix)?;
        match (&self.user, &self.password) {
            (Some(_), None) => return Err("user needs a password".into()),
            (None, Some(_)) => return Err("password needs a user".into()),
            _ => {}
        }
        let ways = [
            self.user.is_some(),
            self.token.is_some(),
            self.creds_file.is_some(),
        ];
        if ways.iter().filter(|&&w| w).count() > 1 {
            return Err(
                "give one way to authenticate to NATS: user and password, token, or creds_file"
                    .into(),
            );
        }
        for (key, value) in [
            ("stream_replicas", self.stream_replicas),
            ("kv_replicas", self.kv_replicas),
        ] {
            if !(1..=5).contains(&value) {
                return Err(format!("{key} must be from 1 to 5, not {value}"));
            }
        }
        if self.connect_timeout_ms == 0 {
            return Err("connect_timeout_ms must be greater than 0".into());
        }
        Ok(())
    }
}

/// `host:port`, or `scheme://host[:port]` with a NATS scheme.
fn check_nats_url(url: &str) -> Result<(), &'static str> {
    let rest = match url.split_once("://") {
        Some((scheme, rest)) => {
            if !matches!(scheme, "nats" | "tls" | "ws" | "wss") {
                return Err("the scheme must be nats, tls, ws or wss");
            }
            rest
        }
        None => url,
    };
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let host = host.split('/').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err("no host");
    }
    if host.chars().any(char::is_whitespace) {
        return Err("a URL holds no spaces");
    }
    // `[::1]` is an IPv6 address without a port.
    if host.ends_with(']') {
        return Ok(());
    }
    match host.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_err() => {
            Err("the port must be a number from 0 to 65535")
        }
        _ => Ok(()),
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
    /// There is no listener.
    #[error("at least one [[listener]] is needed")]
    NoListener,
    /// A password or ACL file could not be loaded.
    #[error(transparent)]
    AuthFile(#[from] midge_auth::FileError),
    /// `auth.verify_threads` is 0.
    #[error("auth.verify_threads must be greater than 0")]
    VerifyThreads,
    /// A bridge's keys cannot work.
    #[error("bridge {name:?}: {what}")]
    Bridge {
        /// The bridge's name.
        name: String,
        /// What is wrong.
        what: String,
    },
    /// The `[cluster]` keys cannot work.
    #[error("cluster: {0}")]
    Cluster(String),
    /// A listener's keys contradict each other.
    #[error("listener {bind}: {what}")]
    Listener {
        /// The listener's `bind`.
        bind: String,
        /// What is wrong.
        what: &'static str,
    },
}

impl BrokerConfig {
    /// Checks the values that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if QoS::from_u8(self.mqtt.maximum_qos).is_none() {
            return Err(ConfigError::MaximumQos(self.mqtt.maximum_qos));
        }
        if self.listeners.is_empty() {
            return Err(ConfigError::NoListener);
        }
        for listener in &self.listeners {
            listener.validate()?;
        }
        if self.auth.verify_threads == Some(0) {
            return Err(ConfigError::VerifyThreads);
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate().map_err(ConfigError::Cluster)?;
        }
        for (index, bridge) in self.bridges.iter().enumerate() {
            let error = |what: String| ConfigError::Bridge {
                name: bridge.name.clone(),
                what,
            };
            bridge.validate().map_err(error)?;
            if self.bridges[..index].iter().any(|b| b.name == bridge.name) {
                return Err(error("another [[bridge]] has this name".into()));
            }
        }
        let zero = [
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

    /// A `bind` that is no address says how to write the one most likely meant.
    #[test]
    fn a_bind_that_is_no_address_says_how_to_write_one() {
        let error = |text: &str| text.parse::<BindAddr>().expect_err(text);
        let localhost = error("localhost:1883");
        assert!(
            localhost.contains("host names are not resolved")
                && localhost.contains("127.0.0.1:1883")
                && localhost.contains("[::1]:1883"),
            "{localhost}"
        );
        assert!(error("127.0.0.1").contains("\"127.0.0.1:1883\""));
        assert!(error("::1").contains("\"[::1]:1883\""));
        assert!(error("::1]:1883").contains("[::1]:1883"));
        assert!(error("nonsense").contains("unix:PATH"));
        assert!(error("unix:").contains("socket path"));
        assert_eq!(
            "[::1]:1883".parse::<BindAddr>(),
            Ok(BindAddr::Tcp("[::1]:1883".parse().expect("addr")))
        );
    }

    #[test]
    fn the_listen_backlog_defaults_to_1024_parses_and_is_checked() {
        assert_eq!(BrokerConfig::default().listeners[0].backlog, 1024);
        assert_eq!(parse("").expect("parses").listeners[0].backlog, 1024);
        let config = parse("[listener]\nbacklog = 4096\n").expect("parses");
        assert_eq!(config.listeners[0].backlog, 4096);
        config.validate().expect("valid");
        let config = parse("[listener]\nbacklog = 0\n").expect("parses");
        let err = config.validate().expect_err("zero backlog");
        assert!(err.to_string().contains("backlog"), "{err}");
        assert!(parse("[listener]\nbacklog = -1\n").is_err());
    }

    #[test]
    fn one_listener_table_or_many() {
        let one = parse("[listener]\nbind = \"127.0.0.1:1884\"\n").expect("parses");
        assert_eq!(one.listeners.len(), 1);
        assert_eq!(
            one.listeners[0].bind,
            BindAddr::Tcp("127.0.0.1:1884".parse().expect("addr"))
        );
        let many = parse(
            r#"
            [[listener]]
            bind = "0.0.0.0:1883"

            [[listener]]
            bind = "0.0.0.0:8883"
            max_connections = 10
            [listener.tls]
            cert = "server.pem"
            key = "server.key"
            client_ca = "ca.pem"
            require_client_cert = true
            use_identity_as_username = true

            [[listener]]
            bind = "unix:/run/midge.sock"
            protocol = "ws"
            path = "/ws"
            allowed_origins = ["https://app.example.com"]
            proxy_protocol = true
            "#,
        )
        .expect("parses");
        many.validate().expect("valid");
        assert_eq!(many.listeners.len(), 3);
        let tls = many.listeners[1].tls.as_ref().expect("tls");
        assert!(tls.require_client_cert && tls.use_identity_as_username);
        assert_eq!(many.listeners[1].max_connections, Some(10));
        assert_eq!(many.listeners[1].describe(), "0.0.0.0:8883 (mqtts)");
        let ws = &many.listeners[2];
        assert_eq!(ws.bind, BindAddr::Unix("/run/midge.sock".into()));
        assert_eq!(ws.protocol, ListenerProtocol::Ws);
        assert_eq!(ws.path, "/ws");
        assert_eq!(ws.describe(), "unix:/run/midge.sock (ws, PROXY)");
        // An empty file has the one default listener.
        let default = parse("").expect("parses");
        assert_eq!(default.listeners.len(), 1);
        assert_eq!(default.listeners[0].describe(), "0.0.0.0:1883 (mqtt)");
    }

    #[test]
    fn contradictory_listeners_are_refused_with_the_reason() {
        let refused = |text: &str, needle: &str| {
            let err = match parse(text) {
                Ok(config) => config.validate().expect_err(text).to_string(),
                Err(err) => err.to_string(),
            };
            assert!(err.contains(needle), "{text}: {err}");
        };
        refused("listener = []\n", "at least one");
        refused(
            "[listener]\nbind = \"nowhere\"\n",
            "is not an IP address and a port",
        );
        refused("[listener]\nbind = \"unix:\"\n", "socket path");
        refused("[listener]\nprotocol = \"quic\"\n", "unknown variant");
        refused("[listener]\npath = \"/x\"\n", "WebSocket listeners");
        refused(
            "[listener]\nallowed_origins = [\"https://a\"]\n",
            "WebSocket listeners",
        );
        refused(
            "[listener]\nprotocol = \"ws\"\npath = \"mqtt\"\n",
            "must begin with /",
        );
        refused("[listener]\nmax_connections = 0\n", "max_connections");
        refused("[listener.tls]\ncert = \"c.pem\"\n", "missing field `key`");
        refused(
            "[listener.tls]\ncert = \"c\"\nkey = \"k\"\nrequire_client_cert = true\n",
            "needs tls.client_ca",
        );
        refused(
            "[listener.tls]\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"ca\"\nuse_identity_as_username = true\n",
            "needs tls.require_client_cert",
        );
        refused(
            "[listener.tls]\ncert = \"c\"\nkey = \"k\"\npassword = \"x\"\n",
            "unknown field",
        );
    }

    #[test]
    fn relative_tls_paths_resolve_against_a_directory() {
        let mut tls = TlsConfig::new("server.pem", "/etc/midge/server.key");
        tls.client_ca = Some("ca/ca.pem".into());
        tls.resolve_paths(Path::new("/srv/midge"));
        assert_eq!(tls.cert, Path::new("/srv/midge/server.pem"));
        assert_eq!(tls.key, Path::new("/etc/midge/server.key"));
        assert_eq!(
            tls.client_ca.as_deref(),
            Some(Path::new("/srv/midge/ca/ca.pem"))
        );
    }

    #[test]
    fn a_nats_url_with_credentials_is_refused_without_showing_them() {
        let config = parse(
            "[cluster]\nnode_id = \"n1\"\nnats = [\"nats://127.0.0.1:4222\", \"nats://alice:s3cret@127.0.0.1:4223\"]\n",
        )
        .expect("parses");
        let err = config
            .cluster
            .as_ref()
            .expect("a cluster")
            .validate()
            .expect_err("credentials in a URL");
        assert!(
            err.contains("server 2") && err.contains("user and password"),
            "{err}"
        );
        assert!(!err.contains("s3cret") && !err.contains("alice"), "{err}");
        let config = parse("[cluster]\nnode_id = \"n1\"\nnats = \"nats://127.0.0.1:4222\"\n")
            .expect("parses");
        config
            .cluster
            .as_ref()
            .expect("a cluster")
            .validate()
            .expect("valid");
    }

    #[test]
    fn there_is_no_seed_to_configure() {
        // Assigned client identifiers come from the OS's secure random source.
        let err = parse("[mqtt]\nseed = 7\n").expect_err("unknown key");
        assert!(err.to_string().contains("seed"), "{err}");
    }
}
