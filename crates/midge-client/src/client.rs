//! The client handle, its builder, and the subscription stream.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use midge_codec::{
    ByteStr, ConnectProperties, DisconnectProperties, PacketId, ProtocolVersion, QoS, ReasonCode,
    UnsubscribeProperties, UserProperties, Will,
};
use midge_proto::client::ClientConfig;
use midge_proto::splitmix64;
use tokio::sync::{broadcast, mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};

use crate::auth::{Authenticator, SharedAuthenticator};
use crate::connector::{Connector, ConnectorError};
use crate::driver::{now, Driver};
use crate::endpoint::BrokerUrl;
use crate::error::{ClientError, CloseReason, ConnectError, InputKind, InvalidInput};
use crate::message::Message;
use crate::options::{Limits, PublishOptions, ReconnectPolicy, SubscribeOptions};

/// Connection state changes, from [`Client::events`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// CONNACK accepted a connection. Without `session_present` the broker had no session:
    /// the client has made its subscriptions again and resends what was unacknowledged.
    Connected {
        /// The broker resumed our session.
        session_present: bool,
    },
    /// A connection ended or could not be opened. A connection the application closes itself
    /// ([`Client::disconnect`]) is not reported: [`ConnectionEvent::Closed`] follows at once.
    Disconnected {
        /// Why.
        reason: CloseReason,
    },
    /// The next attempt starts after `delay`.
    Reconnecting {
        /// Attempts in a row so far, from 1.
        attempt: u32,
        /// Delay before it.
        delay: Duration,
    },
    /// The broker refused to make a subscription again (after a reconnect without a session):
    /// its [`Subscription`] streams have ended, and it is not retried.
    SubscriptionLost {
        /// The topic filter.
        filter: String,
        /// The SUBACK's failure code.
        reason_code: ReasonCode,
    },
    /// The client closed for good: every pending operation failed with
    /// [`ClientError::Closed`].
    Closed,
}

/// Where the client is, as seen by [`Client::is_connected`] and [`Client::wait_connected`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Connecting,
    Connected,
    Closed(Option<CloseReason>),
}

/// What [`Client`] handles send to the driver, other than publishes.
pub(crate) enum Command {
    Subscribe {
        filter: ByteStr,
        options: SubscribeOptions,
        user_properties: UserProperties,
        reply: oneshot::Sender<Result<(ReasonCode, Subscription), ClientError>>,
    },
    Unsubscribe {
        filter: ByteStr,
        properties: UnsubscribeProperties,
        reply: oneshot::Sender<Result<ReasonCode, ClientError>>,
    },
    Disconnect {
        reason: ReasonCode,
        properties: DisconnectProperties,
        reply: oneshot::Sender<()>,
    },
    Reauthenticate {
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
}

/// A publish on its way to the driver. The permit is one place of the bounded queue, given
/// back when the message is sent (QoS 0) or acknowledged (QoS 1 and 2).
pub(crate) struct PublishCommand {
    pub(crate) message: midge_proto::Message,
    pub(crate) reply: oneshot::Sender<Result<ReasonCode, ClientError>>,
    pub(crate) permit: OwnedSemaphorePermit,
}

/// What subscriptions tell the driver. The channel carries at most one message per received
/// QoS 1/2 message (bounded by the broker's window), per stream read that frees room for held
/// messages, and per stream dropped.
pub(crate) enum Internal {
    /// Every stream a held QoS 1 or 2 message was meant for has taken it (or is gone): it may
    /// be acknowledged.
    Ack(AckKey),
    /// A subscription stream was dropped.
    Dropped(u64),
    /// A subscription stream that the driver holds messages for has room again.
    Room(u64),
    /// With manual acknowledgements: the application acknowledged every copy of a message
    /// (`acked`), or abandoned one.
    Settled { key: AckKey, acked: bool },
}

/// Which received QoS 1 or 2 message an acknowledgement is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AckKey {
    pub(crate) packet_id: PacketId,
    pub(crate) qos2: bool,
    /// The connection the message came on: a QoS 1 acknowledgement is only sent on it, since
    /// on a later connection the identifier may name a resent copy or another message.
    pub(crate) connection: u64,
    /// The session it came in: a QoS 2 acknowledgement holds across the connections of one
    /// session (the broker resends the message, and PUBREC answers it then), never into a new
    /// one.
    pub(crate) session: u64,
}

/// Acknowledges a received QoS 1 or 2 message when the last stream that holds it back has
/// taken it. Dropped without being disarmed, it acknowledges.
#[derive(Debug)]
pub(crate) struct AckToken {
    pub(crate) key: AckKey,
    pub(crate) armed: bool,
    pub(crate) internal: mpsc::UnboundedSender<Internal>,
}

impl AckToken {
    /// Takes the key, so that dropping the token sends nothing.
    pub(crate) fn disarm(mut self) -> AckKey {
        self.armed = false;
        self.key
    }
}

impl Drop for AckToken {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.internal.send(Internal::Ack(self.key));
        }
    }
}

/// With manual acknowledgements: what the [`Ack`](crate::Ack)s of the copies of one received
/// QoS 1 or 2 message share. The first copy abandoned settles it as abandoned; otherwise the
/// last copy acked, dropping the group, settles it as acknowledged.
#[derive(Debug)]
pub(crate) struct AckGroup {
    pub(crate) key: AckKey,
    abandoned: std::sync::atomic::AtomicBool,
    internal: mpsc::UnboundedSender<Internal>,
}

impl AckGroup {
    pub(crate) fn new(key: AckKey, internal: mpsc::UnboundedSender<Internal>) -> Self {
        Self {
            key,
            abandoned: std::sync::atomic::AtomicBool::new(false),
            internal,
        }
    }

    /// A copy was given up without acknowledgement.
    pub(crate) fn abandon(&self) {
        if !self.abandoned.swap(true, SeqCst) {
            let _ = self.internal.send(Internal::Settled {
                key: self.key,
                acked: false,
            });
        }
    }
}

impl Drop for AckGroup {
    fn drop(&mut self) {
        if !*self.abandoned.get_mut() {
            let _ = self.internal.send(Internal::Settled {
                key: self.key,
                acked: true,
            });
        }
    }
}

/// One message as a subscription queues it.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) message: Message,
    /// QoS 1 or 2: counted in `StreamState::reliable`, else in `StreamState::qos0`.
    pub(crate) reliable: bool,
}

/// What a subscription stream shares with the driver: how much it buffers, and whether the
/// driver holds messages back until it has room.
#[derive(Debug, Default)]
pub(crate) struct StreamState {
    pub(crate) qos0: AtomicU64,
    pub(crate) reliable: AtomicU64,
    pub(crate) waiting: std::sync::atomic::AtomicBool,
}

struct Shared {
    publishes: mpsc::UnboundedSender<PublishCommand>,
    commands: mpsc::Sender<Command>,
    permits: Arc<Semaphore>,
    events: broadcast::Sender<ConnectionEvent>,
    state: watch::Receiver<State>,
    version: ProtocolVersion,
    dropped: Arc<AtomicU64>,
    /// Unique per client, for response topics.
    nonce: u64,
    next_request: AtomicU64,
}

/// A handle to an MQTT client. Cheap to clone and usable from any task; all clones drive one
/// connection through one driver task. When the last handle is dropped, the driver sends
/// the publishes already queued, for at most [`ClientBuilder::linger`], then disconnects
/// (reason 0) and ends.
///
/// ## Back-pressure
///
/// At most [`Limits::max_queued_publishes`] publishes are held at once: waiting to be sent
/// (also while offline) or waiting for their acknowledgement. [`Client::publish`] and
/// [`Client::enqueue`] wait for a free place; [`Client::try_publish`] fails at once with
/// [`ClientError::QueueFull`]. Waiting never blocks the driver, so a publish from inside a
/// message handler cannot deadlock: the driver keeps reading acknowledgements, which free
/// places. (The one exception is 3.1.1 with a stream left full: see
/// [`Limits::receive_maximum`].)
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("state", &*self.shared.state.borrow())
            .finish_non_exhaustive()
    }
}

/// The outcome of one publish: resolves when the broker acknowledged it (QoS 1 and 2) or when
/// the driver queued it for sending (QoS 0). Dropping it does not withdraw the message.
///
/// A QoS 1 or 2 publish outlives lost connections while the client reconnects: a resumed
/// session gets it again with DUP set; a broker that lost the session (Session Present 0)
/// gets it again as a new message; either way the handle resolves with the acknowledgement
/// that finally comes. It fails only when the client closes ([`ClientError::Closed`], or
/// [`ClientError::ReleasePending`] for a QoS 2 message the broker has received).
#[derive(Debug)]
#[must_use = "the publish goes out anyway; await this to learn its outcome"]
pub struct PublishHandle {
    rx: oneshot::Receiver<Result<ReasonCode, ClientError>>,
}

impl Future for PublishHandle {
    type Output = Result<ReasonCode, ClientError>;

    /// Cancel-safe: polling only reads the outcome.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(ClientError::Closed)))
    }
}

/// The messages of one subscription, in the order the broker sent them. Also a
/// [`futures_core::Stream`].
///
/// ## Buffering and acknowledgement
///
/// The stream buffers up to [`Limits::max_buffered_qos12`] QoS 1 and 2 messages. A QoS 1 or 2
/// message is acknowledged to the broker once every stream it is for has taken it into its
/// buffer, and acknowledgements go out in the order the messages arrived [MQTT-4.6.0-2]
/// [MQTT-4.6.0-3]. So a stream that is read slowly does not hold up the others until its
/// buffer is full. When it is full, the client holds its further messages back,
/// unacknowledged, until it is read: nothing is dropped, but the acknowledgements of later
/// messages (for any stream) wait behind them, and once the broker's window
/// ([`Limits::receive_maximum`]) is used up the broker sends no more QoS 1 or 2 messages
/// until this stream is read. Read every stream you keep, or drop it.
///
/// With [`ClientBuilder::manual_acks`] the application acknowledges each message itself
/// ([`Message::take_ack`]); the buffering is the same.
///
/// QoS 0 messages beyond [`Limits::max_buffered_qos0`] are dropped (the newest) and counted
/// in [`Client::dropped_messages`].
///
/// ## Overlapping subscriptions
///
/// Each received PUBLISH reaches each stream at most once. Under 5.0 the client gives every
/// filter a Subscription Identifier (when the broker supports them and none was set in
/// [`SubscribeOptions`]) and hands a message to the streams whose identifier it carries, so
/// a broker that sends one copy per matching subscription delivers each to its own stream.
/// Without identifiers (3.1.1, or a broker without them) a message goes to every stream whose
/// filter matches it; a 3.1.1 broker may send one copy per matching subscription
/// ([MQTT-3.3.5-1] allows it), and each copy then reaches every matching stream.
///
/// The stream ends after [`Client::unsubscribe`] of its filter, or when the client closes.
/// Dropping it removes it; when no other stream has its filter, the client unsubscribes;
/// messages it buffered or that were held for it are acknowledged and discarded (abandoned,
/// with manual acknowledgement).
#[derive(Debug)]
pub struct Subscription {
    pub(crate) id: u64,
    pub(crate) filter: ByteStr,
    pub(crate) rx: mpsc::UnboundedReceiver<Delivery>,
    pub(crate) state: Arc<StreamState>,
    pub(crate) internal: mpsc::UnboundedSender<Internal>,
}

impl Subscription {
    /// The topic filter.
    pub fn filter(&self) -> &str {
        self.filter.as_str()
    }

    /// The next message, or `None` once the subscription has ended.
    ///
    /// Cancel-safe: a message is taken only when this returns it.
    pub async fn recv(&mut self) -> Option<Message> {
        std::future::poll_fn(|cx| self.poll_message(cx)).await
    }

    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx).map(|delivery| {
            delivery.map(|d| {
                if d.reliable {
                    // SeqCst with the driver's store of `waiting` and load of `reliable`: one
                    // of the two sides sees the other, so room is never missed.
                    self.state.reliable.fetch_sub(1, SeqCst);
                    if self.state.waiting.swap(false, SeqCst) {
                        let _ = self.internal.send(Internal::Room(self.id));
                    }
                } else {
                    self.state.qos0.fetch_sub(1, Relaxed);
                }
                d.message
            })
        })
    }
}

impl futures_core::Stream for Subscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.poll_message(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.internal.send(Internal::Dropped(self.id));
    }
}

/// A password, which `Debug` does not show.
#[derive(Clone)]
struct Password(Bytes);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<hidden>")
    }
}

/// Configures and starts a [`Client`]. `Debug` shows no password, and of an authenticator
/// only its method.
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    connector: Connector,
    version: ProtocolVersion,
    client_id: Option<String>,
    keep_alive: u16,
    clean_start: bool,
    bridge: bool,
    session_expiry: u32,
    username: Option<String>,
    password: Option<Password>,
    connect_user_properties: Vec<(String, String)>,
    will: Option<Will>,
    limits: Limits,
    reconnect: Option<ReconnectPolicy>,
    connect_timeout: Duration,
    response_timeout: Duration,
    linger: Duration,
    topic_aliases: bool,
    manual_acks: bool,
    authenticator: Option<SharedAuthenticator>,
    request_response_information: Option<bool>,
    request_problem_information: Option<bool>,
}

impl ClientBuilder {
    /// A client of `host:port` over TCP ([`Connector::tcp`]) with defaults: MQTT 5.0, a
    /// random client identifier (`midge-` and 16 hex digits), keepalive 30 s, clean start,
    /// session expiry 0, reconnect with [`ReconnectPolicy::default`], [`Limits::default`],
    /// 10 s connect and response timeouts.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self::with_connector(Connector::tcp(host, port))
    }

    /// A client that opens its connections with `connector` (any byte stream: TLS,
    /// WebSocket, Unix socket, an in-memory pipe), with the defaults of
    /// [`ClientBuilder::new`].
    pub fn with_connector(connector: Connector) -> Self {
        Self {
            connector,
            version: ProtocolVersion::V5,
            client_id: None,
            keep_alive: 30,
            clean_start: true,
            bridge: false,
            session_expiry: 0,
            username: None,
            password: None,
            connect_user_properties: Vec::new(),
            will: None,
            limits: Limits::default(),
            reconnect: Some(ReconnectPolicy::default()),
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(10),
            linger: Duration::from_secs(5),
            topic_aliases: true,
            manual_acks: false,
            authenticator: None,
            request_response_information: None,
            request_problem_information: None,
        }
    }

    /// A client of the broker at `url`, with the defaults of [`ClientBuilder::new`]:
    /// `mqtt://host[:port]` (TCP, port 1883), `mqtts://host[:port]` (TLS, 8883),
    /// `ws://host[:port][/path]` (WebSocket, 80, path `/mqtt`), `wss://host[:port][/path]`
    /// (WebSocket over TLS, 443) or `unix:///path/to/socket`; see [`BrokerUrl`]. TLS trusts
    /// the system's CA certificates; [`ClientBuilder::from_url_with_tls`] takes others.
    ///
    /// A user name and password in the URL (`mqtts://user:password@host`, percent-encoded)
    /// go into CONNECT, as [`ClientBuilder::credentials`] would put them.
    ///
    /// ```no_run
    /// use midge_client::ClientBuilder;
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = ClientBuilder::from_url("mqtts://broker.example.com")?
    ///     .client_id("sensor-17")
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_url(url: &str) -> Result<Self, ConnectorError> {
        let url = BrokerUrl::parse(url)?.without_mqtt_path()?;
        Ok(Self::with_connector(Connector::for_url(&url)?).url_credentials(&url))
    }

    /// [`ClientBuilder::from_url`] with the TLS settings `tls` (used by `mqtts` and `wss`
    /// URLs): the CA certificates to trust, a client certificate and key, ALPN, TLS versions.
    ///
    /// ```no_run
    /// use midge_client::tls::{ClientTlsOptions, Roots};
    /// use midge_client::ClientBuilder;
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tls = ClientTlsOptions::default();
    /// tls.roots = Roots::File("ca.pem".into());
    /// tls.identity = Some(("device.pem".into(), "device.key".into()));
    /// let client = ClientBuilder::from_url_with_tls("mqtts://broker.example.com:8883", &tls)?
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "tls")]
    pub fn from_url_with_tls(
        url: &str,
        tls: &crate::tls::ClientTlsOptions,
    ) -> Result<Self, ConnectorError> {
        let url = BrokerUrl::parse(url)?.without_mqtt_path()?;
        Ok(Self::with_connector(Connector::for_url_with_tls(&url, tls)?).url_credentials(&url))
    }

    fn url_credentials(self, url: &BrokerUrl) -> Self {
        match (url.username(), url.password()) {
            (Some(user), Some(password)) => {
                self.credentials(user, Bytes::from(password.to_owned()))
            }
            (Some(user), None) => self.username(user),
            _ => self,
        }
    }

    /// Protocol version: [`ProtocolVersion::V5`] (default) or [`ProtocolVersion::V3_1_1`]
    /// ([`ProtocolVersion::V3_1`] works as well, untested against peers).
    #[must_use]
    pub fn version(mut self, version: ProtocolVersion) -> Self {
        self.version = version;
        self
    }

    /// Client identifier. With 5.0 an empty one asks the broker to assign one, which is then
    /// reused on reconnect.
    #[must_use]
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    /// Keep Alive in seconds; 0 turns it off. The broker's Server Keep Alive overrides it.
    #[must_use]
    pub fn keep_alive(mut self, seconds: u16) -> Self {
        self.keep_alive = seconds;
        self
    }

    /// User name and password.
    #[must_use]
    pub fn credentials(mut self, username: impl Into<String>, password: impl Into<Bytes>) -> Self {
        self.username = Some(username.into());
        self.password = Some(Password(password.into()));
        self
    }

    /// User name without a password.
    #[must_use]
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self.password = None;
        self
    }

    /// Adds a 5.0 User Property to CONNECT (repeatable, kept in order). Ignored under 3.x,
    /// which has no properties.
    #[must_use]
    pub fn connect_user_property(
        mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.connect_user_properties
            .push((key.into(), value.into()));
        self
    }

    /// Clean Start (5.0) / Clean Session (3.1.1) on every connection. With `false` the broker
    /// keeps the session between connections (for 5.0, as long as
    /// [`ClientBuilder::session_expiry`] says), and unacknowledged messages are resent with
    /// DUP on reconnect.
    #[must_use]
    pub fn clean_start(mut self, clean: bool) -> Self {
        self.clean_start = clean;
        self
    }

    /// Tells a 3.1 or 3.1.1 broker that this client is a bridge, with the high bit of CONNECT's
    /// protocol level byte (as mosquitto's bridges do with `try_private`). A broker that knows
    /// this convention (mosquitto, midge) sends the client none of its own messages back and
    /// keeps the RETAIN flag as published on what it forwards; one that does not may refuse
    /// the connection as an unknown protocol version. 3.x only: under 5.0, which asks the
    /// same with [`SubscribeOptions::no_local`] and
    /// [`SubscribeOptions::retain_as_published`], [`ClientBuilder::build`] fails with
    /// [`ConnectError::InvalidConfig`]. Default off.
    #[must_use]
    pub fn bridge(mut self, bridge: bool) -> Self {
        self.bridge = bridge;
        self
    }

    /// 5.0 Session Expiry Interval in seconds (`u32::MAX`: never). Ignored with 3.1.1.
    #[must_use]
    pub fn session_expiry(mut self, seconds: u32) -> Self {
        self.session_expiry = seconds;
        self
    }

    /// A will, published by the broker if the connection ends without DISCONNECT.
    #[must_use]
    pub fn will(mut self, will: Will) -> Self {
        self.will = Some(will);
        self
    }

    /// Memory limits, see [`Limits`].
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// How to reconnect; `None` turns reconnection off, and the client closes with its first
    /// lost connection.
    #[must_use]
    pub fn reconnect(mut self, policy: Option<ReconnectPolicy>) -> Self {
        self.reconnect = policy;
        self
    }

    /// How long opening the transport may take: the TCP connection, or the whole of what
    /// the [`Connector`] does (a TLS handshake included). Default 10 s. An attempt that
    /// takes longer fails with [`CloseReason::ConnectTimeout`]. A
    /// [`Connector::failover`] gives each of its connectors this long.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long to wait for CONNACK, and for an answer to a keepalive PINGREQ, before the
    /// connection counts as dead ([`CloseReason::ResponseTimeout`]). Default 10 s.
    #[must_use]
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How long the driver keeps going after the last [`Client`] handle is dropped, to send
    /// the publishes already queued and wait for their acknowledgements (also reconnecting,
    /// per the policy, if the connection is down). It then disconnects (reason 0) and ends;
    /// publishes still unfinished are lost. Default 5 s; zero disconnects at once.
    #[must_use]
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// 5.0 Request Response Information in CONNECT: whether the broker should send Response
    /// Information in CONNACK (absent unless set: the broker sends none).
    #[must_use]
    pub fn request_response_information(mut self, request: bool) -> Self {
        self.request_response_information = Some(request);
        self
    }

    /// 5.0 Request Problem Information in CONNECT: whether the broker may send a Reason
    /// String and User Properties on packets other than PUBLISH, CONNACK and DISCONNECT
    /// (absent unless set: it may).
    #[must_use]
    pub fn request_problem_information(mut self, request: bool) -> Self {
        self.request_problem_information = Some(request);
        self
    }

    /// Use topic aliases for outgoing messages when the broker allows them (default on).
    #[must_use]
    pub fn topic_aliases(mut self, on: bool) -> Self {
        self.topic_aliases = on;
        self
    }

    /// Manual acknowledgement of received QoS 1 and 2 messages (default off): each arrives
    /// with an [`Ack`](crate::Ack) ([`Message::take_ack`]), and is acknowledged to the
    /// broker (PUBACK or PUBREC) only when the application calls [`Ack::ack`](crate::Ack::ack),
    /// in arrival order; an `Ack` dropped unused abandons its message, which the broker sends
    /// again on the next connection of a resumed session. So a message is never acknowledged
    /// before the application has done what it needs with it (written it down, forwarded it).
    ///
    /// Flow control still holds: under 5.0 the broker sends at most
    /// [`Limits::receive_maximum`] messages that are not acknowledged, so it pauses while the
    /// application holds that many `Ack`s. 3.1.1 cannot announce that limit: there the client
    /// stops reading from the socket while the application holds that many (acknowledgements
    /// of its own publishes, and PINGRESP, then wait too: acknowledge, or drop, in time).
    ///
    /// Messages that reach no stream are handled as without manual acknowledgement (see
    /// [`Limits::hold_unclaimed`]), but those in a stream that is dropped or unsubscribed, or
    /// held back for it, are abandoned rather than acknowledged.
    #[must_use]
    pub fn manual_acks(mut self, on: bool) -> Self {
        self.manual_acks = on;
        self
    }

    /// Authenticates every connection with MQTT 5.0 enhanced authentication (§4.12): CONNECT
    /// names the authenticator's method, and the client runs its exchange with the broker
    /// before it uses the connection; see [`Authenticator`]. 5.0 only: under 3.1.1,
    /// [`ClientBuilder::build`] fails with [`ConnectError::InvalidConfig`]. A User Name and
    /// Password ([`ClientBuilder::credentials`]) still go in CONNECT if set.
    ///
    /// Clones of this builder share the one authenticator: give each client built its own.
    #[must_use]
    pub fn authenticator(mut self, authenticator: impl Authenticator) -> Self {
        self.authenticator = Some(SharedAuthenticator::new(authenticator));
        self
    }

    fn proto_config(&self, nonce: u64) -> ClientConfig {
        let client_id = self
            .client_id
            .clone()
            .unwrap_or_else(|| format!("midge-{nonce:016x}"));
        let mut config = ClientConfig::new(self.version, client_id);
        config.keep_alive = self.keep_alive;
        config.clean_start = self.clean_start;
        config.bridge = self.bridge;
        config.username = self.username.clone().map(ByteStr::from);
        config.password = self.password.clone().map(|p| p.0);
        config.will = self.will.clone();
        config.response_timeout = self.response_timeout;
        config.use_topic_aliases = self.topic_aliases;
        config.authentication_method = self
            .authenticator
            .as_ref()
            .map(|a| ByteStr::from(a.method().to_owned()));
        config.manual_acks = true;
        config.resubscribe = true;
        // The semaphore bounds QoS 1/2 publishes and the driver gates QoS 0 on this; the
        // state machine's own limit is never the one that bites.
        config.max_queued_messages = self.limits.queued_publishes_bound() * 2;
        let receive_maximum = self.limits.receive_maximum.max(1);
        if self.version.is_v5() {
            let mut properties = ConnectProperties::default();
            if self.session_expiry > 0 {
                properties.session_expiry_interval = Some(self.session_expiry);
            }
            properties.receive_maximum = std::num::NonZeroU16::new(receive_maximum);
            properties.maximum_packet_size = std::num::NonZeroU32::new(self.limits.max_packet_size);
            if self.limits.topic_alias_maximum > 0 {
                properties.topic_alias_maximum = Some(self.limits.topic_alias_maximum);
            }
            properties.request_response_information = self.request_response_information;
            properties.request_problem_information = self.request_problem_information;
            properties.user_properties = self
                .connect_user_properties
                .iter()
                .map(|(k, v)| (ByteStr::from(k.clone()), ByteStr::from(v.clone())))
                .collect();
            config.properties = properties;
        } else {
            // 3.1.1 cannot announce limits; the packet size limit still holds on what arrives.
            config.properties = ConnectProperties::default();
            config.incoming_packet_limit = std::num::NonZeroU32::new(self.limits.max_packet_size);
        }
        config
    }

    /// Starts the client: spawns its driver task, which connects in the background (and
    /// reconnects per the policy). Operations issued before the connection is up wait in the
    /// bounded queue.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn build(self) -> Result<Client, ConnectError> {
        let nonce = random_seed();
        let config = Arc::new(self.proto_config(nonce));
        let proto = midge_proto::client::Client::new(config, now()).map_err(|err| {
            ConnectError::InvalidConfig(InvalidInput::encode(InputKind::Connect, err))
        })?;
        let (publishes, publish_rx) = mpsc::unbounded_channel();
        let (commands, command_rx) = mpsc::channel(64);
        let (events, _) = broadcast::channel(64);
        let (state_tx, state) = watch::channel(State::Connecting);
        let permits = Arc::new(Semaphore::new(self.limits.queued_publishes_bound()));
        let dropped = Arc::new(AtomicU64::new(0));
        let driver = Driver::new(crate::driver::Setup {
            proto,
            connector: self.connector,
            limits: self.limits,
            reconnect: self.reconnect,
            connect_timeout: self.connect_timeout,
            linger: self.linger,
            authenticator: self.authenticator,
            v5: self.version.is_v5(),
            manual_acks: self.manual_acks,
            publishes: publish_rx,
            commands: command_rx,
            events: events.clone(),
            state: state_tx,
            dropped: dropped.clone(),
            seed: nonce,
        });
        tokio::spawn(driver.run());
        Ok(Client {
            shared: Arc::new(Shared {
                publishes,
                commands,
                permits,
                events,
                state,
                version: self.version,
                dropped,
                nonce,
                next_request: AtomicU64::new(0),
            }),
        })
    }

    /// Starts the client and waits for its first accepted connection. With a reconnect
    /// policy, failed attempts are retried per the policy first.
    ///
    /// Cancel-safe: if dropped, the client is dropped with it and its driver ends.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub async fn connect(self) -> Result<Client, ConnectError> {
        let client = self.build()?;
        let mut state = client.shared.state.clone();
        let outcome = state
            .wait_for(|s| !matches!(s, State::Connecting))
            .await
            .map(|s| *s);
        match outcome {
            Ok(State::Connected) => Ok(client),
            Ok(State::Closed(Some(reason))) => Err(ConnectError::Failed(reason)),
            _ => Err(ConnectError::Failed(CloseReason::Io(
                std::io::ErrorKind::ConnectionAborted,
            ))),
        }
    }
}

fn random_seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    splitmix64::mix(
        nanos ^ COUNTER.fetch_add(splitmix64::GAMMA, Relaxed) ^ u64::from(std::process::id()) << 32,
    )
}

impl Client {
    /// A builder for a client of `host:port` over TCP; see [`ClientBuilder::new`], and
    /// [`ClientBuilder::with_connector`] for other transports.
    pub fn builder(host: impl Into<String>, port: u16) -> ClientBuilder {
        ClientBuilder::new(host, port)
    }

    fn message(
        topic: impl Into<String>,
        payload: impl Into<Bytes>,
        options: PublishOptions,
    ) -> Result<midge_proto::Message, ClientError> {
        if let Some(err) = options.error {
            return Err(InvalidInput::encode(InputKind::Options, err).into());
        }
        let topic = topic.into();
        midge_topic::TopicName::new(&topic)
            .map_err(|err| InvalidInput::topic(InputKind::TopicName, err))?;
        if let Some(response_topic) = options.properties.response_topic() {
            midge_topic::TopicName::new(response_topic.as_str())
                .map_err(|err| InvalidInput::topic(InputKind::ResponseTopic, err))?;
        }
        let mut message = midge_proto::Message::new(topic, payload.into(), options.qos);
        message.retain = options.retain;
        message.properties = options.properties;
        Ok(message)
    }

    fn submit(
        &self,
        message: midge_proto::Message,
        permit: OwnedSemaphorePermit,
    ) -> Result<PublishHandle, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.shared
            .publishes
            .send(PublishCommand {
                message,
                reply,
                permit,
            })
            .map_err(|_| ClientError::Closed)?;
        Ok(PublishHandle { rx })
    }

    /// Publishes a message and waits for its outcome: for QoS 1 the broker's PUBACK of this
    /// message, for QoS 2 its PUBCOMP (after PUBREC and PUBREL), for QoS 0 its hand-over to
    /// the driver's send queue. Returns the broker's reason code, from PUBACK or PUBREC
    /// (always 0 in 3.1.1; 5.0 may say 0x10 No matching subscribers); failure codes (0x80
    /// and above) are [`ClientError::Refused`].
    ///
    /// Waits for a place when the queue is full (see [`Client`]), and while offline the
    /// message waits in that queue until the connection is back.
    ///
    /// Cancel-safe in this sense: dropped while it waits for a place, nothing is queued;
    /// dropped later, the message is still delivered and only its outcome is lost.
    pub async fn publish(
        &self,
        topic: impl Into<String>,
        payload: impl Into<Bytes>,
        options: PublishOptions,
    ) -> Result<ReasonCode, ClientError> {
        self.enqueue(topic, payload, options).await?.await
    }

    /// Queues a message, waiting for a place if the queue is full, and returns a handle for
    /// its outcome without waiting for it. Awaiting many handles at once keeps many QoS 1 and
    /// 2 messages in flight.
    ///
    /// Cancel-safe: if dropped before it returns, nothing was queued.
    pub async fn enqueue(
        &self,
        topic: impl Into<String>,
        payload: impl Into<Bytes>,
        options: PublishOptions,
    ) -> Result<PublishHandle, ClientError> {
        let message = Self::message(topic, payload, options)?;
        let permit = self
            .shared
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ClientError::Closed)?;
        self.submit(message, permit)
    }

    /// Queues a message if the queue has a place, or fails at once with
    /// [`ClientError::QueueFull`]. Never waits; the handle resolves as for
    /// [`Client::publish`].
    pub fn try_publish(
        &self,
        topic: impl Into<String>,
        payload: impl Into<Bytes>,
        options: PublishOptions,
    ) -> Result<PublishHandle, ClientError> {
        let message = Self::message(topic, payload, options)?;
        let permit = match self.shared.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(tokio::sync::TryAcquireError::NoPermits) => return Err(ClientError::QueueFull),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(ClientError::Closed),
        };
        self.submit(message, permit)
    }

    async fn command<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ClientError>>) -> Command,
    ) -> Result<T, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.shared
            .commands
            .send(make(reply))
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.unwrap_or(Err(ClientError::Closed))
    }

    /// Subscribes to one topic filter and returns the broker's granted QoS (the SUBACK reason
    /// code) and the stream of messages that match it. A refusal (code 0x80 or above) is
    /// [`ClientError::Refused`]. The subscription is made again whenever the broker reports
    /// that it lost our session.
    ///
    /// Cancel-safe: if dropped before it returns, the subscription is either never sent or
    /// undone with UNSUBSCRIBE once its SUBACK arrives (messages it received meanwhile are
    /// acknowledged and discarded, as for a dropped [`Subscription`]).
    ///
    /// Under 5.0, when the broker supports Subscription Identifiers and `options` sets none,
    /// the client gives the filter one of its own (the same for every stream of the filter),
    /// which routes the messages; see [`Subscription`].
    pub async fn subscribe(
        &self,
        filter: impl Into<String>,
        options: SubscribeOptions,
    ) -> Result<(ReasonCode, Subscription), ClientError> {
        self.subscribe_with(filter, options, UserProperties::new())
            .await
    }

    /// [`Client::subscribe`] with 5.0 User Properties in the SUBSCRIBE (3.x sends none; a
    /// subscription made again for a lost session carries none).
    pub async fn subscribe_with(
        &self,
        filter: impl Into<String>,
        options: SubscribeOptions,
        user_properties: UserProperties,
    ) -> Result<(ReasonCode, Subscription), ClientError> {
        let filter = ByteStr::from(filter.into());
        midge_topic::TopicFilter::new(filter.as_str())
            .map_err(|err| InvalidInput::topic(InputKind::TopicFilter, err))?;
        self.command(|reply| Command::Subscribe {
            filter,
            options,
            user_properties,
            reply,
        })
        .await
    }

    /// Unsubscribes from a topic filter; every [`Subscription`] of that filter ends. Returns
    /// the UNSUBACK reason code (always 0 in 3.1.1).
    ///
    /// Not cancel-safe: once the request has reached the driver (at the first poll, unless
    /// 64 requests are already waiting for it), the UNSUBSCRIBE goes out even if this is
    /// dropped; only the result is lost. Dropped before that, nothing happens.
    pub async fn unsubscribe(&self, filter: impl Into<String>) -> Result<ReasonCode, ClientError> {
        self.unsubscribe_with(filter, UnsubscribeProperties::default())
            .await
    }

    /// [`Client::unsubscribe`] with 5.0 UNSUBSCRIBE properties (3.x sends none).
    pub async fn unsubscribe_with(
        &self,
        filter: impl Into<String>,
        properties: UnsubscribeProperties,
    ) -> Result<ReasonCode, ClientError> {
        let filter = ByteStr::from(filter.into());
        midge_topic::TopicFilter::new(filter.as_str())
            .map_err(|err| InvalidInput::topic(InputKind::TopicFilter, err))?;
        self.command(|reply| Command::Unsubscribe {
            filter,
            properties,
            reply,
        })
        .await
    }

    /// Disconnects with `reason` (5.0; use `DISCONNECT_WITH_WILL_MESSAGE` to have the broker
    /// publish the will), closes the connection and ends the client: pending publishes and
    /// requests fail with [`ClientError::Closed`] (a QoS 2 publish the broker has received
    /// with [`ClientError::ReleasePending`]), subscriptions end. Returns once the
    /// connection is closed; returns at once if the client is already closed.
    ///
    /// Not cancel-safe: once the request has reached the driver (at the first poll, unless
    /// 64 requests are already waiting for it), the disconnect happens even if this is
    /// dropped. Dropped before that, nothing happens.
    pub async fn disconnect(&self, reason: ReasonCode) {
        self.disconnect_with(reason, DisconnectProperties::default())
            .await;
    }

    /// [`Client::disconnect`] with 5.0 DISCONNECT properties (3.x sends none), such as a
    /// Session Expiry Interval that changes the one CONNECT gave.
    pub async fn disconnect_with(&self, reason: ReasonCode, properties: DisconnectProperties) {
        let (reply, rx) = oneshot::channel();
        if self
            .shared
            .commands
            .send(Command::Disconnect {
                reason,
                properties,
                reply,
            })
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
        let mut state = self.shared.state.clone();
        let _ = state.wait_for(|s| matches!(s, State::Closed(_))).await;
    }

    /// Re-authenticates the connection with the [`Authenticator`] (MQTT 5.0 §4.12.1): a
    /// fresh exchange, started with AUTH 0x19, while messages keep flowing. Returns once the
    /// broker has answered with success and the authenticator has checked its final data.
    ///
    /// Fails with [`ClientError::NoAuthenticator`] without an authenticator, with
    /// [`ClientError::NotConnected`] when no connection is up or it ends before the broker
    /// answers, with [`ClientError::Refused`] when the broker refuses (its DISCONNECT's reason
    /// code: the connection is closed [MQTT-4.12.1-2], and the client reconnects per its
    /// policy), and with [`ClientError::Authentication`] when the authenticator fails (after
    /// the first step, the client closes the connection). A call while a re-authentication
    /// runs waits for that one.
    ///
    /// Not cancel-safe: once the request has reached the driver, the re-authentication runs
    /// to its end even if this is dropped; only the result is lost.
    pub async fn reauthenticate(&self) -> Result<(), ClientError> {
        self.command(|reply| Command::Reauthenticate { reply })
            .await
    }

    /// A receiver of connection state changes from now on. It holds the last 64; a receiver
    /// that falls further behind skips the oldest (`RecvError::Lagged`).
    pub fn events(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.shared.events.subscribe()
    }

    /// True while a connection is up.
    pub fn is_connected(&self) -> bool {
        matches!(*self.shared.state.borrow(), State::Connected)
    }

    /// True once the client has closed for good.
    pub fn is_closed(&self) -> bool {
        matches!(*self.shared.state.borrow(), State::Closed(_))
    }

    /// Waits until a connection is up, or fails with [`ClientError::Closed`] if the client
    /// closes first.
    ///
    /// Cancel-safe.
    pub async fn wait_connected(&self) -> Result<(), ClientError> {
        let mut state = self.shared.state.clone();
        match state
            .wait_for(|s| !matches!(s, State::Connecting))
            .await
            .map(|s| *s)
        {
            Ok(State::Connected) => Ok(()),
            _ => Err(ClientError::Closed),
        }
    }

    /// Received messages that reached no stream: QoS 0 messages dropped because their
    /// subscription's buffer was full or because they matched no subscription, and QoS 1
    /// and 2 messages that matched no subscription: for one the application unsubscribed,
    /// or of a resumed session and not claimed (see
    /// [`Limits::hold_unclaimed`](crate::Limits::hold_unclaimed), which also says which of
    /// them the broker sends again).
    pub fn dropped_messages(&self) -> u64 {
        self.shared.dropped.load(Relaxed)
    }

    /// Request/response (5.0): subscribes to a fresh response topic, publishes the request
    /// with that Response Topic and a Correlation Data of its own (added to `options`),
    /// and returns the first response that carries the same Correlation Data, or
    /// [`ClientError::Timeout`]. The response subscription is removed afterwards.
    ///
    /// Cancel-safe: if dropped, the response subscription is removed, and a request already
    /// queued is still sent (the responder's answer is then ignored).
    pub async fn request(
        &self,
        topic: impl Into<String>,
        payload: impl Into<Bytes>,
        options: PublishOptions,
        timeout: Duration,
    ) -> Result<Message, ClientError> {
        if !self.shared.version.is_v5() {
            return Err(ClientError::NeedsV5);
        }
        let n = self.shared.next_request.fetch_add(1, Relaxed);
        let response_topic = format!("midge/response/{:016x}/{n}", self.shared.nonce);
        let correlation = Bytes::from(n.to_be_bytes().to_vec());
        let work = async {
            let (_, mut responses) = self
                .subscribe(
                    response_topic.clone(),
                    SubscribeOptions::with_qos(QoS::AtLeastOnce),
                )
                .await?;
            let options = options
                .response_topic(response_topic)
                .correlation_data(correlation.clone());
            self.publish(topic, payload, options).await?;
            while let Some(message) = responses.recv().await {
                if message.correlation_data().as_ref() == Some(&correlation) {
                    return Ok(message);
                }
            }
            Err(ClientError::Closed)
        };
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or(Err(ClientError::Timeout))
    }

    /// Answers a request (5.0): publishes `payload` to the request's Response Topic with its
    /// Correlation Data, and waits as [`Client::publish`] does. Fails with
    /// [`ClientError::InvalidInput`] ([`InputKind::ResponseTopic`]) if the request has no
    /// Response Topic.
    ///
    /// Cancel-safe as [`Client::publish`].
    pub async fn respond(
        &self,
        request: &Message,
        payload: impl Into<Bytes>,
        options: PublishOptions,
    ) -> Result<ReasonCode, ClientError> {
        let topic = request
            .response_topic()
            .ok_or(InvalidInput::new(InputKind::ResponseTopic))?;
        let options = match request.correlation_data() {
            Some(data) => options.correlation_data(data),
            None => options,
        };
        self.publish(topic.as_str(), payload, options).await
    }
}
