//! The client side of an MQTT session, as a sans-IO state machine.
//!
//! A [`Client`] lives as long as the session it keeps: it survives lost connections, and
//! [`Client::connect`] starts each new one. See the crate documentation for the run loop.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use midge_codec::{
    Auth, ByteStr, ConnAck, Connect, ConnectProperties, DecodeError, Disconnect,
    DisconnectProperties, EncodeError, Packet, PacketId, ProtocolVersion, PubAck, Publish,
    PublishRef, QoS, ReasonCode, SubAck, Subscribe, SubscribeProperties, SubscriptionId,
    SubscriptionOptions, UnsubAck, Unsubscribe, UnsubscribeProperties, Will, MAX_PACKET_SIZE,
};
use midge_topic::TopicFilter;

use crate::alias::{InboundAliases, OutboundAliases};
use crate::inflight::{qos2_answer, Inflight};
use crate::keepalive::{ClientKeepAlive, KeepAliveAction};
use crate::message::Message;
use crate::packets::PacketQueue;
use crate::TRANSMIT_BATCH;

/// How a client connects. Shared between reconnections; build it once. Its `Debug` output
/// shows whether a password or authentication data is set, never their contents.
#[derive(Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Protocol version.
    pub version: ProtocolVersion,
    /// Client Identifier. Empty asks the server to assign one (5.0), which is then reused on
    /// reconnect so that the session can resume.
    pub client_id: ByteStr,
    /// Keep Alive in seconds; 0 turns it off.
    pub keep_alive: u16,
    /// Clean Start (5.0) / Clean Session (3.x) on every connect. With `false` the session,
    /// including unacknowledged messages, resumes across connections. A 3.x client with an
    /// empty `client_id` always asks for a clean session, as 3.1.1 requires.
    pub clean_start: bool,
    /// Set the bridge bit of CONNECT ([`Connect::bridge`]): tells a 3.x server that knows it
    /// (mosquitto, midge) that the client is a bridge, so that it sends none of the client's
    /// own messages back and keeps their RETAIN flag as published. 3.1 and 3.1.1 only:
    /// [`Client::new`] fails with [`EncodeError::NotInV5`] for 5.0, which asks the same with
    /// the No Local and Retain As Published subscription options. Off by default.
    pub bridge: bool,
    /// User Name.
    pub username: Option<ByteStr>,
    /// Password.
    pub password: Option<Bytes>,
    /// Will message.
    pub will: Option<Will>,
    /// 5.0 CONNECT properties. Receive Maximum, Maximum Packet Size and Topic Alias Maximum set
    /// here are also enforced on what the server sends.
    ///
    /// Their Authentication Method and Authentication Data are not used: CONNECT carries
    /// [`ClientConfig::authentication_method`] and the data given to [`Client::connect`].
    pub properties: ConnectProperties,
    /// Authentication Method for enhanced authentication (5.0 §4.12), sent in every CONNECT:
    /// the server may then answer with challenges ([`Event::AuthChallenge`]) before it
    /// accepts the client ([`Event::Authenticated`]), and the client may re-authenticate
    /// ([`Client::reauthenticate`]). Without one (the default) the client never sends AUTH,
    /// and an AUTH from the server breaks the protocol [MQTT-4.12.0-7]. 5.0 only.
    pub authentication_method: Option<ByteStr>,
    /// Authentication Data for CONNECT, with [`ClientConfig::authentication_method`], used by
    /// [`Client::connect`]. Methods whose first data changes with every connection (SCRAM's
    /// nonce) pass it to [`Client::connect_with_auth_data`] instead.
    pub authentication_data: Option<Bytes>,
    /// Subscribe again to every acknowledged subscription when the server reports no session
    /// (Session Present 0). On by default.
    pub resubscribe: bool,
    /// Messages that may wait to be sent: before the connection is up, or while the server's
    /// Receive Maximum is used up. When full, [`Client::publish`] returns
    /// [`PublishError::QueueFull`]; nothing already queued is dropped.
    pub max_queued_messages: usize,
    /// How long to wait for PINGRESP (and for CONNACK) before declaring the server dead.
    pub response_timeout: Duration,
    /// Use topic aliases for outgoing messages when the server allows them.
    pub use_topic_aliases: bool,
    /// Leave the acknowledgement of received QoS 1 and 2 messages to the application: they
    /// arrive as [`Event::MessageToAcknowledge`], and PUBACK or PUBREC goes out only on
    /// [`Client::acknowledge`]. Until then the message counts against our Receive Maximum, so
    /// the server's flow control bounds what an application that falls behind has to hold.
    /// Off by default.
    pub manual_acks: bool,
    /// The largest packet accepted from the server when `properties` sets no Maximum Packet
    /// Size: 3.1.1 cannot announce one, but a limit still holds on what is buffered. `None`
    /// (the default) accepts any size MQTT can express.
    pub incoming_packet_limit: Option<std::num::NonZeroU32>,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("version", &self.version)
            .field("client_id", &self.client_id)
            .field("keep_alive", &self.keep_alive)
            .field("clean_start", &self.clean_start)
            .field("bridge", &self.bridge)
            .field("username", &self.username)
            // Secrets never reach logs.
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("will", &self.will)
            .field("properties", &properties_without_auth(&self.properties))
            .field("authentication_method", &self.authentication_method)
            .field(
                "authentication_data",
                &self.authentication_data.as_ref().map(|_| "<hidden>"),
            )
            .field("resubscribe", &self.resubscribe)
            .field("max_queued_messages", &self.max_queued_messages)
            .field("response_timeout", &self.response_timeout)
            .field("use_topic_aliases", &self.use_topic_aliases)
            .field("manual_acks", &self.manual_acks)
            .field("incoming_packet_limit", &self.incoming_packet_limit)
            .finish()
    }
}

/// `properties` as CONNECT uses them, without Authentication Method and Data: the `Debug`
/// output shows no secrets, nor fields that are not used.
fn properties_without_auth(properties: &ConnectProperties) -> Cow<'_, ConnectProperties> {
    if properties.authentication_method.is_none() && properties.authentication_data.is_none() {
        return Cow::Borrowed(properties);
    }
    let mut shown = properties.clone();
    shown.authentication_method = None;
    shown.authentication_data = None;
    Cow::Owned(shown)
}

impl ClientConfig {
    /// A configuration with defaults: keepalive 60 s, clean start, resubscribe on, 1,000 queued
    /// messages, 10 s response timeout.
    pub fn new(version: ProtocolVersion, client_id: impl Into<ByteStr>) -> Self {
        Self {
            version,
            client_id: client_id.into(),
            keep_alive: 60,
            clean_start: true,
            bridge: false,
            username: None,
            password: None,
            will: None,
            properties: ConnectProperties::default(),
            authentication_method: None,
            authentication_data: None,
            resubscribe: true,
            max_queued_messages: 1000,
            response_timeout: Duration::from_secs(10),
            use_topic_aliases: true,
            manual_acks: false,
            incoming_packet_limit: None,
        }
    }

    fn receive_maximum(&self) -> usize {
        self.properties
            .receive_maximum
            .map_or(usize::from(u16::MAX), |m| usize::from(m.get()))
    }

    fn maximum_packet_size(&self) -> u32 {
        self.properties
            .maximum_packet_size
            .or(self.incoming_packet_limit)
            .map_or(MAX_PACKET_SIZE, |m| m.get())
    }
}

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
///
/// The names are the server side's too ([`crate::server::ServerCloseReason`]): who ended the
/// connection, and how.
pub enum CloseReason {
    /// The server refused the connection in CONNACK.
    Refused(ReasonCode),
    /// The server sent DISCONNECT (5.0) with this reason.
    DisconnectedByServer(ReasonCode),
    /// The server broke the protocol; a 5.0 DISCONNECT with this reason was queued.
    ProtocolViolation(ReasonCode),
    /// No PINGRESP or CONNACK within the response timeout.
    ResponseTimeout,
    /// The transport closed ([`Client::connection_lost`]).
    ConnectionLost,
    /// This client ended it: [`Client::disconnect`] was called.
    DisconnectedByClient,
}

/// What the client reports to the application, from [`Client::poll_event`].
///
/// The `Debug` output hides authentication data.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// CONNACK accepted the connection. Its properties are the server's limits, which the
    /// client now honours. Its Authentication Data, if any, was reported just before in
    /// [`Event::Authenticated`], and is not repeated here.
    Connected(ConnAck),
    /// With [`ClientConfig::authentication_method`]: the server asks for more authentication
    /// data (AUTH 0x18 Continue authentication), before CONNACK or in a re-authentication.
    /// Answer with [`Client::auth_respond`] [MQTT-4.12.0-3], or give up with
    /// [`Client::disconnect`].
    AuthChallenge {
        /// The server's Authentication Data.
        data: Option<Bytes>,
    },
    /// With [`ClientConfig::authentication_method`]: the server accepted the client, with
    /// this Authentication Data in its CONNACK. Check the data as the method requires (SCRAM
    /// checks the server's signature), then call [`Client::auth_complete`], which reports
    /// [`Event::Connected`]; or, if the check failed, [`Client::disconnect`]: the server has
    /// not proved itself. Until then the client sends nothing and handles nothing the server
    /// sends, so that no message reaches or comes from a server it has not checked.
    Authenticated {
        /// The server's final Authentication Data.
        data: Option<Bytes>,
    },
    /// A re-authentication ([`Client::reauthenticate`]) succeeded: AUTH 0x00, with this
    /// Authentication Data, to check as for [`Event::Authenticated`]. A failed one ends with
    /// the server's DISCONNECT [MQTT-4.12.1-2].
    Reauthenticated {
        /// The server's final Authentication Data.
        data: Option<Bytes>,
    },
    /// A message arrived. QoS 2 messages are reported exactly once per packet identifier
    /// until released, however often the server retransmits them.
    Message(Message),
    /// With [`ClientConfig::manual_acks`]: a QoS 1 or 2 message arrived, to be acknowledged
    /// with [`Client::acknowledge`] once the application has taken it. QoS 2 messages are
    /// reported once per packet identifier until released, as for [`Event::Message`].
    MessageToAcknowledge {
        /// The identifier to pass to [`Client::acknowledge`].
        packet_id: PacketId,
        /// The message.
        message: Message,
    },
    /// A QoS 1 or 2 publish finished: PUBACK, PUBCOMP, a failing PUBREC, or a limit that made
    /// it unsendable (`QOS_NOT_SUPPORTED`, `RETAIN_NOT_SUPPORTED`, `PACKET_TOO_LARGE`).
    Published {
        /// The identifier [`Client::publish`] returned.
        packet_id: PacketId,
        /// The server's reason code: PUBACK's for QoS 1, PUBREC's for QoS 2 (reported when
        /// PUBCOMP completes the flow), or ours for a message that could not be sent.
        reason_code: ReasonCode,
    },
    /// SUBACK arrived.
    Subscribed {
        /// The identifier [`Client::subscribe`] returned.
        packet_id: PacketId,
        /// One code per filter.
        reason_codes: Vec<ReasonCode>,
    },
    /// A subscription the client held was refused when it was made again (the automatic
    /// resubscription after a lost session, or the same filter subscribed again): it no
    /// longer exists, and is not made again on later reconnects.
    SubscriptionLost {
        /// The filter.
        filter: ByteStr,
        /// The SUBACK's failure code.
        reason_code: ReasonCode,
    },
    /// UNSUBACK arrived.
    Unsubscribed {
        /// The identifier [`Client::unsubscribe`] returned.
        packet_id: PacketId,
        /// One code per filter (5.0); empty in 3.x.
        reason_codes: Vec<ReasonCode>,
    },
    /// The connection ended. Drop the transport once [`Client::poll_transmit`] has nothing
    /// more to send; call [`Client::connect`] on a new one to resume the session.
    Closed(CloseReason),
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets never reach logs.
        let hidden = |data: &Option<Bytes>| data.as_ref().map(|_| "<hidden>");
        match self {
            Self::Connected(connack) => f.debug_tuple("Connected").field(connack).finish(),
            Self::AuthChallenge { data } => f
                .debug_struct("AuthChallenge")
                .field("data", &hidden(data))
                .finish(),
            Self::Authenticated { data } => f
                .debug_struct("Authenticated")
                .field("data", &hidden(data))
                .finish(),
            Self::Reauthenticated { data } => f
                .debug_struct("Reauthenticated")
                .field("data", &hidden(data))
                .finish(),
            Self::Message(message) => f.debug_tuple("Message").field(message).finish(),
            Self::MessageToAcknowledge { packet_id, message } => f
                .debug_struct("MessageToAcknowledge")
                .field("packet_id", packet_id)
                .field("message", message)
                .finish(),
            Self::Published {
                packet_id,
                reason_code,
            } => f
                .debug_struct("Published")
                .field("packet_id", packet_id)
                .field("reason_code", reason_code)
                .finish(),
            Self::Subscribed {
                packet_id,
                reason_codes,
            } => f
                .debug_struct("Subscribed")
                .field("packet_id", packet_id)
                .field("reason_codes", reason_codes)
                .finish(),
            Self::SubscriptionLost {
                filter,
                reason_code,
            } => f
                .debug_struct("SubscriptionLost")
                .field("filter", filter)
                .field("reason_code", reason_code)
                .finish(),
            Self::Unsubscribed {
                packet_id,
                reason_codes,
            } => f
                .debug_struct("Unsubscribed")
                .field("packet_id", packet_id)
                .field("reason_codes", reason_codes)
                .finish(),
            Self::Closed(reason) => f.debug_tuple("Closed").field(reason).finish(),
        }
    }
}

/// Why [`Client::auth_respond`] or [`Client::reauthenticate`] sent nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// [`ClientConfig::authentication_method`] is not set: the client sends no AUTH
    /// [MQTT-4.12.0-7].
    #[error("no authentication method is configured")]
    NoMethod,
    /// No [`Event::AuthChallenge`] waits for an answer.
    #[error("no authentication challenge waits for an answer")]
    NoChallenge,
    /// No [`Event::Authenticated`] waits for [`Client::auth_complete`].
    #[error("no accepted authentication waits to be completed")]
    NotAuthenticated,
    /// Re-authentication needs an accepted connection (5.0 §4.12.1).
    #[error("not connected")]
    NotConnected,
    /// A re-authentication is already running.
    #[error("a re-authentication is already running")]
    InProgress,
    /// The AUTH would exceed the server's Maximum Packet Size [MQTT-3.2.2-15].
    #[error("packet larger than the server accepts")]
    PacketTooLarge,
    /// The AUTH cannot be encoded (its data is too long).
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// Why [`Client::publish`] refused a message. The message was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// `max_queued_messages` messages are already waiting.
    #[error("the outgoing queue is full")]
    QueueFull,
    /// Every packet identifier is in use.
    #[error("no packet identifier is free")]
    PacketIdsExhausted,
    /// The topic, or the Response Topic, is not a valid topic name.
    #[error("invalid topic name")]
    InvalidTopic,
    /// The server's Maximum QoS is lower [MQTT-3.2.2-11].
    #[error("QoS not supported by the server")]
    QoSNotSupported,
    /// The server does not support retained messages [MQTT-3.2.2-14].
    #[error("retain not supported by the server")]
    RetainNotSupported,
    /// The packet would exceed the server's Maximum Packet Size [MQTT-3.1.2-24].
    #[error("packet larger than the server accepts")]
    PacketTooLarge,
    /// The message cannot be encoded for this protocol version.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// Why [`Client::subscribe`] or [`Client::unsubscribe`] refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// No filters were given [MQTT-3.8.3-3].
    #[error("no topic filters")]
    NoFilters,
    /// A filter is not valid.
    #[error("invalid topic filter: {0}")]
    InvalidFilter(midge_topic::TopicError),
    /// The server said it does not support wildcard subscriptions.
    #[error("wildcard subscriptions not supported by the server")]
    WildcardsNotSupported,
    /// The server said it does not support shared subscriptions.
    #[error("shared subscriptions not supported by the server")]
    SharedNotSupported,
    /// The server said it does not support subscription identifiers.
    #[error("subscription identifiers not supported by the server")]
    SubscriptionIdsNotSupported,
    /// Every packet identifier is in use.
    #[error("no packet identifier is free")]
    PacketIdsExhausted,
    /// The packet would exceed the server's Maximum Packet Size [MQTT-3.2.2-15].
    #[error("packet larger than the server accepts")]
    PacketTooLarge,
    /// The request cannot be encoded for this protocol version.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// No connection yet, or the last one ended.
    Idle,
    /// CONNECT queued, waiting for CONNACK.
    Connecting { deadline: Instant },
    /// CONNACK accepted.
    Connected,
}

/// Whose turn it is in an enhanced authentication exchange, before CONNACK or in a
/// re-authentication (5.0 §4.12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AuthTurn {
    /// No exchange is running.
    None,
    /// The server's: CONNECT with a method, AUTH 0x19 or our AUTH 0x18 was sent.
    Server,
    /// The application's: an [`Event::AuthChallenge`] waits for [`Client::auth_respond`].
    Client,
    /// The application's: the server accepted the client, and [`Event::Authenticated`] waits
    /// for [`Client::auth_complete`]. Input waits meanwhile, and nothing is sent.
    Verifying,
}

/// Packets [`Client::handle_packet`] holds while the application checks the server's final
/// authentication data; one more closes the connection.
const MAX_HELD_PACKETS: usize = 64;

/// Where an outgoing QoS 1 or 2 publish is in its flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PublishState {
    /// Waiting to be sent.
    Queued,
    /// Sent on an earlier connection of a resumed session and waiting, behind the server's
    /// Receive Maximum or Maximum Packet Size, to be sent again with DUP 1.
    Resend,
    /// PUBLISH sent, waiting for PUBACK or PUBREC.
    Sent,
    /// PUBREC received (with this reason code) and PUBREL sent, waiting for PUBCOMP.
    Released(ReasonCode),
}

#[derive(Clone, Debug)]
// Entries live in the in-flight store, one per message: boxing the message would cost an
// allocation per publish to save memory only while the message waits.
#[allow(clippy::large_enum_variant)]
enum Outgoing {
    Publish {
        message: Message,
        state: PublishState,
    },
    Subscribe {
        filters: Vec<(ByteStr, SubscriptionOptions)>,
        properties: SubscribeProperties,
    },
    Unsubscribe {
        filters: Vec<ByteStr>,
        properties: UnsubscribeProperties,
    },
}

/// The send order of queued publishes. QoS 0 messages are stored inline, which costs queue
/// space but saves an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
enum Pending {
    AtMostOnce(Message),
    Identified(PacketId),
}

/// What the server announced in CONNACK.
#[derive(Clone, Copy, Debug)]
struct ServerLimits {
    receive_maximum: usize,
    maximum_packet_size: u32,
    maximum_qos: QoS,
    retain_available: bool,
    wildcards: bool,
    subscription_ids: bool,
    shared: bool,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            receive_maximum: usize::from(u16::MAX),
            maximum_packet_size: MAX_PACKET_SIZE,
            maximum_qos: QoS::ExactlyOnce,
            retain_available: true,
            wildcards: true,
            subscription_ids: true,
            shared: true,
        }
    }
}

/// The client side of one MQTT session.
#[derive(Debug)]
pub struct Client {
    config: Arc<ClientConfig>,
    state: State,
    /// Client identifier to send: the configured one, or the one the server assigned.
    client_id: ByteStr,
    // Session state, kept across connections.
    outgoing: Inflight<Outgoing>,
    pending: VecDeque<Pending>,
    /// QoS 1/2 publishes sent and not yet completed: what Receive Maximum limits.
    unacknowledged: usize,
    /// QoS 2 identifiers received, delivered, and not yet released (§4.3.3).
    incoming_qos2: HashSet<PacketId>,
    /// Of `incoming_qos2`, those from before this connection that the server has not named
    /// since. A server that still holds one sends its PUBREL, or its PUBLISH again with DUP 1
    /// [MQTT-4.4.0-1]; one it has forgotten (it restored an older copy of the session, after
    /// a crash) would otherwise count against our Receive Maximum for good, and make its next
    /// message with the identifier look like a duplicate. So they do not count, and a PUBLISH
    /// with DUP 0 makes one new.
    carried_qos2: HashSet<PacketId>,
    /// With manual acks: QoS 2 identifiers reported to the application and not yet
    /// acknowledged by it (no PUBREC sent).
    qos2_unacknowledged: HashSet<PacketId>,
    /// With manual acks: QoS 1 identifiers of this connection reported to the application and
    /// not yet acknowledged by it.
    qos1_unacknowledged: HashSet<PacketId>,
    /// With manual acks: QoS 2 identifiers the application gave up with [`Client::abandon`]:
    /// never answered, so the server still counts them and resends them on a resumed
    /// session, where they are reported again.
    qos2_abandoned: HashSet<PacketId>,
    /// With manual acks: the QoS 1 and 2 PUBLISHes of this connection still to be answered
    /// (PUBACK or PUBREC), in the order they arrived, and whether the application has
    /// acknowledged each. Answers go out from the front only, so that they keep that order
    /// whatever order the application acknowledges in [MQTT-4.6.0-2] [MQTT-4.6.0-3].
    answer_order: VecDeque<(PacketId, QoS, bool)>,
    /// Acknowledged subscriptions and their Subscription Identifiers, for resubscribing when
    /// the server loses the session.
    subscriptions: BTreeMap<ByteStr, (SubscriptionOptions, Option<SubscriptionId>)>,
    // Connection state.
    server: ServerLimits,
    keepalive: ClientKeepAlive,
    inbound_aliases: InboundAliases,
    outbound_aliases: OutboundAliases,
    /// Whose turn it is in an enhanced authentication exchange.
    auth: AuthTurn,
    /// The CONNACK that accepted the client, while the application checks its
    /// Authentication Data ([`AuthTurn::Verifying`]).
    verifying: Option<Box<ConnAck>>,
    /// Packets handed to [`Client::handle_packet`] meanwhile, at most [`MAX_HELD_PACKETS`].
    held: PacketQueue,
    transmit: PacketQueue,
    events: VecDeque<Event>,
}

impl Client {
    /// A client with no connection yet. Fails if the CONNECT it would send cannot be encoded
    /// for the configured version (for example 5.0 properties under 3.1.1).
    pub fn new(config: Arc<ClientConfig>, now: Instant) -> Result<Self, EncodeError> {
        let client = Self {
            client_id: config.client_id.clone(),
            state: State::Idle,
            outgoing: Inflight::new(),
            pending: VecDeque::new(),
            unacknowledged: 0,
            incoming_qos2: HashSet::new(),
            carried_qos2: HashSet::new(),
            qos2_unacknowledged: HashSet::new(),
            qos1_unacknowledged: HashSet::new(),
            qos2_abandoned: HashSet::new(),
            answer_order: VecDeque::new(),
            subscriptions: BTreeMap::new(),
            server: ServerLimits::default(),
            keepalive: ClientKeepAlive::new(Duration::ZERO, config.response_timeout, now),
            inbound_aliases: InboundAliases::new(0),
            outbound_aliases: OutboundAliases::new(0),
            auth: AuthTurn::None,
            verifying: None,
            held: PacketQueue::new(),
            transmit: PacketQueue::new(),
            events: VecDeque::new(),
            config,
        };
        let data = client.config.authentication_data.clone();
        Packet::Connect(Box::new(client.connect_packet(data)))
            .encoded_len(client.config.version)?;
        Ok(client)
    }

    /// True between an accepted CONNACK and the end of that connection.
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// Starts a connection on a new transport: queues CONNECT. Any previous connection is
    /// forgotten, as if [`Client::connection_lost`] had been called.
    ///
    /// With [`ClientConfig::authentication_method`], CONNECT carries it and
    /// [`ClientConfig::authentication_data`].
    pub fn connect(&mut self, now: Instant) {
        let data = self.config.authentication_data.clone();
        self.connect_with_auth_data(now, data);
    }

    /// [`Client::connect`] with `auth_data` as CONNECT's Authentication Data in place of
    /// [`ClientConfig::authentication_data`]: the first data of a method that makes it anew
    /// for every connection. Ignored without [`ClientConfig::authentication_method`].
    ///
    /// Data too long to encode is left out of CONNECT.
    pub fn connect_with_auth_data(&mut self, now: Instant, auth_data: Option<Bytes>) {
        if self.state != State::Idle {
            self.close(CloseReason::ConnectionLost);
        }
        self.transmit.clear();
        // The server resends every QoS 1 message we did not acknowledge on a resumed session,
        // and forgets them otherwise: acknowledgements from the old connection mean nothing.
        self.qos1_unacknowledged.clear();
        // Answers are owed per connection: the server resends what it still needs answered.
        self.answer_order.clear();
        let mut connect = Packet::Connect(Box::new(self.connect_packet(auth_data)));
        if connect.encoded_len(self.config.version).is_err() {
            // Only the data can be at fault: the rest was checked by `Client::new`.
            connect = Packet::Connect(Box::new(self.connect_packet(None)));
        }
        self.transmit.push_back(connect);
        // With a method, the server may challenge before it answers with CONNACK.
        self.auth = if self.config.authentication_method.is_some() {
            AuthTurn::Server
        } else {
            AuthTurn::None
        };
        self.state = State::Connecting {
            deadline: now + self.config.response_timeout,
        };
        self.keepalive = ClientKeepAlive::new(Duration::ZERO, self.config.response_timeout, now);
        self.server = ServerLimits::default();
        self.inbound_aliases =
            InboundAliases::new(self.config.properties.topic_alias_maximum.unwrap_or(0));
        self.outbound_aliases = OutboundAliases::new(0);
    }

    fn connect_packet(&self, auth_data: Option<Bytes>) -> Connect {
        let mut connect = Connect::new(self.config.version, self.client_id.clone());
        // Before 5.0 a client without an identifier gets no session to resume: it must ask for
        // a clean one [MQTT-3.1.3-7] (3.1.1), or the server refuses it [MQTT-3.1.3-8].
        connect.clean_start =
            self.config.clean_start || (!self.config.version.is_v5() && self.client_id.is_empty());
        connect.bridge = self.config.bridge;
        connect.keep_alive = self.config.keep_alive;
        connect.username = self.config.username.clone();
        connect.password = self.config.password.clone();
        connect.will = self.config.will.clone();
        connect.properties = self.config.properties.clone();
        connect.properties.authentication_method = self.config.authentication_method.clone();
        connect.properties.authentication_data =
            auth_data.filter(|_| self.config.authentication_method.is_some());
        connect
    }

    /// Answers the server's [`Event::AuthChallenge`]: AUTH 0x18 Continue authentication with
    /// the configured method and `data` [MQTT-4.12.0-3] [MQTT-4.12.0-5].
    pub fn auth_respond(&mut self, data: Option<Bytes>) -> Result<(), AuthError> {
        let method = self
            .config
            .authentication_method
            .clone()
            .ok_or(AuthError::NoMethod)?;
        if self.auth != AuthTurn::Client || self.state == State::Idle {
            return Err(AuthError::NoChallenge);
        }
        let packet = auth_packet(ReasonCode::CONTINUE_AUTHENTICATION, method, data);
        self.check_auth_size(&packet)?;
        self.transmit.push_back(packet);
        self.auth = AuthTurn::Server;
        Ok(())
    }

    /// Starts a re-authentication (5.0 §4.12.1): AUTH 0x19 Re-authenticate with the method
    /// of the original authentication [MQTT-4.12.1-1] and `data`. The server answers with
    /// [`Event::AuthChallenge`]s, then [`Event::Reauthenticated`], or disconnects when it
    /// fails. Messages flow meanwhile.
    ///
    /// The server sets how long an answer may take: this client waits until it comes or the
    /// connection ends.
    pub fn reauthenticate(&mut self, data: Option<Bytes>) -> Result<(), AuthError> {
        let method = self
            .config
            .authentication_method
            .clone()
            .ok_or(AuthError::NoMethod)?;
        if self.state != State::Connected {
            return Err(AuthError::NotConnected);
        }
        if self.auth != AuthTurn::None {
            return Err(AuthError::InProgress);
        }
        let packet = auth_packet(ReasonCode::RE_AUTHENTICATE, method, data);
        self.check_auth_size(&packet)?;
        self.transmit.push_back(packet);
        self.auth = AuthTurn::Server;
        Ok(())
    }

    /// Completes the connection after [`Event::Authenticated`], once the application has
    /// checked the server's final data: the client applies the CONNACK, reports
    /// [`Event::Connected`], and goes on with what waited. Call [`Client::handle_bytes`]
    /// again with the buffer it left: input waits until this call.
    ///
    /// The CONNACK deadline ([`ClientConfig::response_timeout`], from the CONNACK's arrival)
    /// still runs until then.
    pub fn auth_complete(&mut self, now: Instant) -> Result<(), AuthError> {
        if self.auth != AuthTurn::Verifying {
            return Err(AuthError::NotAuthenticated);
        }
        let Some(connack) = self.verifying.take() else {
            return Err(AuthError::NotAuthenticated);
        };
        self.auth = AuthTurn::None;
        self.establish(now, *connack);
        while self.state == State::Connected {
            let Some(packet) = self.held.pop_front() else {
                break;
            };
            self.handle_connected(now, packet);
        }
        self.held = PacketQueue::new();
        Ok(())
    }

    /// Whether an AUTH can be sent: it encodes within the server's Maximum Packet Size.
    fn check_auth_size(&self, packet: &Packet) -> Result<(), AuthError> {
        if packet.encoded_len(self.config.version)? > self.server.maximum_packet_size as usize {
            return Err(AuthError::PacketTooLarge);
        }
        Ok(())
    }

    /// Handles the server's AUTH. The server sends one only to a client that named a method,
    /// with that method [MQTT-4.12.0-5] [MQTT-4.12.0-6], and only when it is its turn: 0x18
    /// Continue authentication to ask for more, 0x00 Success to end a re-authentication.
    fn handle_auth(&mut self, now: Instant, auth: Auth) {
        let method_matches = match (
            &self.config.authentication_method,
            &auth.properties.authentication_method,
        ) {
            (Some(ours), Some(theirs)) => ours == theirs,
            _ => false,
        };
        if !method_matches || self.auth != AuthTurn::Server {
            return self.violation(ReasonCode::PROTOCOL_ERROR);
        }
        let data = auth.properties.authentication_data;
        match (auth.reason_code, self.state) {
            (ReasonCode::CONTINUE_AUTHENTICATION, State::Connecting { .. }) => {
                // The server answered: the wait for CONNACK starts again.
                self.state = State::Connecting {
                    deadline: now + self.config.response_timeout,
                };
                self.auth = AuthTurn::Client;
                self.events.push_back(Event::AuthChallenge { data });
            }
            (ReasonCode::CONTINUE_AUTHENTICATION, State::Connected) => {
                self.auth = AuthTurn::Client;
                self.events.push_back(Event::AuthChallenge { data });
            }
            (ReasonCode::SUCCESS, State::Connected) => {
                self.auth = AuthTurn::None;
                self.events.push_back(Event::Reauthenticated { data });
            }
            // Success before CONNACK (which is how the server accepts), and 0x19, which only
            // a client sends (§3.15.2.1).
            _ => self.violation(ReasonCode::PROTOCOL_ERROR),
        }
    }

    /// Publishes a message. QoS 1 and 2 messages get the packet identifier that their
    /// [`Event::Published`] will carry; QoS 0 messages get `None`.
    ///
    /// Messages wait in a queue of at most `max_queued_messages` until they can be sent: while
    /// not connected, and while the server's Receive Maximum is used up.
    pub fn publish(&mut self, mut message: Message) -> Result<Option<PacketId>, PublishError> {
        message
            .topic_name()
            .map_err(|_| PublishError::InvalidTopic)?;
        if !crate::server::response_topic_valid(message.properties.response_topic().as_ref()) {
            return Err(PublishError::InvalidTopic);
        }
        if message.properties.has_subscription_identifiers() {
            // Only servers send Subscription Identifiers [MQTT-3.3.4-6]; a message passed on
            // as it was received loses them.
            message.properties.set_subscription_identifiers(&[]);
        }
        if self.state == State::Connected {
            if message.qos > self.server.maximum_qos {
                return Err(PublishError::QoSNotSupported);
            }
            if message.retain && !self.server.retain_available {
                return Err(PublishError::RetainNotSupported);
            }
        }
        let packet_id = match message.qos {
            QoS::AtMostOnce => None,
            _ => Some(PacketId::MIN),
        };
        let len = message
            .publish_ref(packet_id, false)
            .encoded_len(self.config.version)?;
        if len > self.server.maximum_packet_size as usize {
            return Err(PublishError::PacketTooLarge);
        }
        if self.pending.len() >= self.config.max_queued_messages {
            return Err(PublishError::QueueFull);
        }
        if message.qos == QoS::AtMostOnce {
            self.pending.push_back(Pending::AtMostOnce(message));
            return Ok(None);
        }
        let id = self
            .outgoing
            .next_free_id()
            .ok_or(PublishError::PacketIdsExhausted)?;
        // The identifier is free, so the insert cannot fail.
        let _ = self.outgoing.insert(
            id,
            Outgoing::Publish {
                message,
                state: PublishState::Queued,
            },
        );
        self.pending.push_back(Pending::Identified(id));
        Ok(Some(id))
    }

    /// Subscribes to topic filters. The result arrives as [`Event::Subscribed`].
    pub fn subscribe(
        &mut self,
        filters: Vec<(ByteStr, SubscriptionOptions)>,
        properties: SubscribeProperties,
    ) -> Result<PacketId, RequestError> {
        if filters.is_empty() {
            return Err(RequestError::NoFilters);
        }
        for (filter, _) in &filters {
            let parsed = TopicFilter::new(filter.as_str()).map_err(RequestError::InvalidFilter)?;
            if parsed.share_name().is_some() && !self.server.shared {
                return Err(RequestError::SharedNotSupported);
            }
            if parsed.pattern().contains(['+', '#']) && !self.server.wildcards {
                return Err(RequestError::WildcardsNotSupported);
            }
        }
        if properties.subscription_identifier.is_some() && !self.server.subscription_ids {
            return Err(RequestError::SubscriptionIdsNotSupported);
        }
        let request = Outgoing::Subscribe {
            filters,
            properties,
        };
        self.request(request)
    }

    /// Unsubscribes from topic filters. The result arrives as [`Event::Unsubscribed`].
    pub fn unsubscribe(
        &mut self,
        filters: Vec<ByteStr>,
        properties: UnsubscribeProperties,
    ) -> Result<PacketId, RequestError> {
        if filters.is_empty() {
            return Err(RequestError::NoFilters);
        }
        for filter in &filters {
            TopicFilter::new(filter.as_str()).map_err(RequestError::InvalidFilter)?;
        }
        let removed: Vec<_> = filters
            .iter()
            .filter_map(|f| self.subscriptions.remove_entry(f))
            .collect();
        let id = self.request(Outgoing::Unsubscribe {
            filters,
            properties,
        });
        if id.is_err() {
            self.subscriptions.extend(removed);
        }
        // Otherwise the filters leave the resubscribe set now, not at UNSUBACK: after a
        // reconnect without a session, the resubscription must not make them again.
        id
    }

    fn request(&mut self, request: Outgoing) -> Result<PacketId, RequestError> {
        let id = self
            .outgoing
            .next_free_id()
            .ok_or(RequestError::PacketIdsExhausted)?;
        let packet = request_packet(id, &request).ok_or(RequestError::NoFilters)?;
        // The server would close the connection over it [MQTT-3.2.2-15].
        if packet.encoded_len(self.config.version)? > self.server.maximum_packet_size as usize {
            return Err(RequestError::PacketTooLarge);
        }
        let _ = self.outgoing.insert(id, request);
        if self.state == State::Connected {
            self.transmit.push_back(packet);
        }
        Ok(id)
    }

    /// Ends the connection: queues DISCONNECT (with `reason` in 5.0; use
    /// `DISCONNECT_WITH_WILL_MESSAGE` to have the server publish the will) and reports
    /// [`Event::Closed`]. The session stays in this value for the next [`Client::connect`].
    pub fn disconnect(&mut self, reason: ReasonCode) {
        self.disconnect_with(reason, DisconnectProperties::default());
    }

    /// [`Client::disconnect`] with 5.0 DISCONNECT properties (3.x sends none).
    pub fn disconnect_with(&mut self, reason: ReasonCode, properties: DisconnectProperties) {
        if self.state == State::Idle {
            return;
        }
        let v5 = self.config.version.is_v5();
        let reason_code = if v5 { reason } else { ReasonCode::SUCCESS };
        self.transmit.push_back(Packet::Disconnect(Disconnect {
            reason_code,
            properties: if v5 {
                properties
            } else {
                DisconnectProperties::default()
            },
        }));
        self.close(CloseReason::DisconnectedByClient);
    }

    /// Reports that the transport closed.
    pub fn connection_lost(&mut self) {
        if self.state != State::Idle {
            self.transmit.clear();
            self.close(CloseReason::ConnectionLost);
        }
    }

    fn close(&mut self, reason: CloseReason) {
        self.state = State::Idle;
        self.auth = AuthTurn::None;
        self.verifying = None;
        self.held = PacketQueue::new();
        self.events.push_back(Event::Closed(reason));
    }

    /// The server broke the protocol: queue DISCONNECT with `reason` (5.0) and close.
    fn violation(&mut self, reason: ReasonCode) {
        self.transmit.clear();
        if self.config.version.is_v5() {
            self.transmit.push_back(Packet::Disconnect(Disconnect {
                reason_code: reason,
                ..Disconnect::default()
            }));
        }
        self.close(CloseReason::ProtocolViolation(reason));
    }

    /// Decodes and handles every whole packet at the front of `buf`, enforcing our Maximum
    /// Packet Size. A malformed packet closes the connection with the matching reason code.
    ///
    /// After [`Event::Authenticated`], input waits, and the rest of `buf` stays there
    /// undecoded, until [`Client::auth_complete`]; then call this again with the same buffer.
    pub fn handle_bytes(&mut self, now: Instant, buf: &mut BytesMut) {
        while self.state != State::Idle && self.auth != AuthTurn::Verifying {
            match Packet::decode(buf, self.config.version, self.config.maximum_packet_size()) {
                Ok(Some(packet)) => self.handle_packet(now, packet),
                Ok(None) => return,
                Err(err) => {
                    self.decode_error(err);
                    return;
                }
            }
        }
    }

    fn decode_error(&mut self, err: DecodeError) {
        let reason = match ReasonCode::from(err) {
            // Only a CONNECT yields 0x84, which DISCONNECT cannot carry (§3.14.2.1); a CONNECT
            // from the server is a protocol error whatever its protocol level.
            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION => ReasonCode::PROTOCOL_ERROR,
            reason => reason,
        };
        self.violation(reason);
    }

    /// Handles one packet from the server.
    ///
    /// After [`Event::Authenticated`] the packet is held, and handled in order after
    /// [`Client::auth_complete`]; more than 64 held packets close the connection.
    pub fn handle_packet(&mut self, now: Instant, packet: Packet) {
        match self.state {
            State::Idle => {}
            State::Connecting { .. } if self.auth == AuthTurn::Verifying => {
                if self.held.len() >= MAX_HELD_PACKETS {
                    self.violation(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED);
                } else {
                    self.held.push_back(packet);
                }
            }
            State::Connecting { .. } => match packet {
                Packet::ConnAck(connack) => self.handle_connack(now, *connack),
                Packet::Auth(auth) => self.handle_auth(now, *auth),
                // The server must answer CONNECT with CONNACK first, or with AUTH
                // [MQTT-3.2.0-1].
                _ => self.violation(ReasonCode::PROTOCOL_ERROR),
            },
            State::Connected => {
                self.keepalive.on_packet_received();
                self.handle_connected(now, packet);
            }
        }
    }

    fn handle_connack(&mut self, now: Instant, mut connack: ConnAck) {
        if !connack.reason_code.is_success() {
            self.transmit.clear();
            self.close(CloseReason::Refused(connack.reason_code));
            return;
        }
        // A successful CONNACK names the CONNECT's method, and none if it named none
        // [MQTT-4.12.0-5] [MQTT-4.12.0-6].
        if connack.properties.authentication_method != self.config.authentication_method {
            self.violation(ReasonCode::PROTOCOL_ERROR);
            return;
        }
        if connack.session_present && self.config.clean_start {
            // A clean start cannot resume a session [MQTT-3.2.2-4].
            self.violation(ReasonCode::PROTOCOL_ERROR);
            return;
        }
        if self.config.authentication_method.is_some() {
            // The application checks the server's final data before anything else of the
            // connection happens: `auth_complete` goes on from here.
            let data = connack.properties.authentication_data.take();
            self.state = State::Connecting {
                deadline: now + self.config.response_timeout,
            };
            self.auth = AuthTurn::Verifying;
            self.verifying = Some(Box::new(connack));
            self.events.push_back(Event::Authenticated { data });
            return;
        }
        self.establish(now, connack);
    }

    /// Applies the CONNACK that accepted the client: the server's limits, then the session.
    fn establish(&mut self, now: Instant, connack: ConnAck) {
        let p = &connack.properties;
        if let Some(id) = &p.assigned_client_identifier {
            self.client_id = id.clone();
        }
        self.server = ServerLimits {
            receive_maximum: p
                .receive_maximum
                .map_or(usize::from(u16::MAX), |m| usize::from(m.get())),
            maximum_packet_size: p.maximum_packet_size.map_or(MAX_PACKET_SIZE, |m| m.get()),
            maximum_qos: p.maximum_qos.unwrap_or(QoS::ExactlyOnce),
            retain_available: p.retain_available.unwrap_or(true),
            wildcards: p.wildcard_subscription_available.unwrap_or(true),
            subscription_ids: p.subscription_identifiers_available.unwrap_or(true),
            shared: p.shared_subscription_available.unwrap_or(true),
        };
        let aliases = if self.config.use_topic_aliases {
            p.topic_alias_maximum.unwrap_or(0)
        } else {
            0
        };
        self.outbound_aliases = OutboundAliases::new(aliases);
        let keep_alive = p.server_keep_alive.unwrap_or(self.config.keep_alive);
        self.keepalive = ClientKeepAlive::new(
            Duration::from_secs(u64::from(keep_alive)),
            self.config.response_timeout,
            now,
        );
        self.state = State::Connected;
        if connack.session_present {
            self.carried_qos2.clone_from(&self.incoming_qos2);
            self.resume_session();
        } else {
            self.restart_session();
        }
        self.events.push_back(Event::Connected(connack));
    }

    /// The server kept the session: resend what is in flight, in the original order, PUBLISH
    /// with DUP set and PUBREL as it was [MQTT-4.4.0-1].
    ///
    /// The send quota starts afresh with the new connection's limits (§4.9): a resent PUBLISH
    /// counts against the server's Receive Maximum [MQTT-3.3.4-7] and must fit its Maximum
    /// Packet Size [MQTT-3.2.2-15], both of which may be lower than on the connection that
    /// first sent it. From the first PUBLISH that cannot go now, the rest wait at the front of
    /// the queue, in order, and go out with DUP 1 as acknowledgements free the quota (or
    /// complete with 0x95 if too large). PUBRELs always go: they are not limited, but their
    /// flows still count until PUBCOMP.
    fn resume_session(&mut self) {
        let (version, max) = (self.config.version, self.server.maximum_packet_size);
        let mut in_flight = self
            .outgoing
            .iter()
            .filter(|(_, o)| {
                matches!(
                    o,
                    Outgoing::Publish {
                        state: PublishState::Released(_),
                        ..
                    }
                )
            })
            .count();
        let mut deferred = Vec::new();
        for (id, outgoing) in self.outgoing.iter() {
            let packet = match outgoing {
                Outgoing::Publish {
                    message,
                    state: PublishState::Sent,
                } => {
                    let publish = Packet::Publish(message.to_publish(Some(id), true));
                    let fits = publish
                        .encoded_len(version)
                        .is_ok_and(|len| len <= max as usize);
                    if !deferred.is_empty() || in_flight >= self.server.receive_maximum || !fits {
                        deferred.push(id);
                        continue;
                    }
                    in_flight += 1;
                    publish
                }
                Outgoing::Publish {
                    state: PublishState::Released(_),
                    ..
                } => Packet::PubRel(PubAck::new(id)),
                // Already in `pending`.
                Outgoing::Publish {
                    state: PublishState::Queued | PublishState::Resend,
                    ..
                } => continue,
                request => match request_packet(id, request) {
                    Some(packet) => packet,
                    None => continue,
                },
            };
            self.transmit.push_back(packet);
        }
        self.unacknowledged = in_flight;
        // Sent before anything still queued, so they go first.
        for id in deferred.into_iter().rev() {
            if let Some(Outgoing::Publish { state, .. }) = self.outgoing.get_mut(id) {
                *state = PublishState::Resend;
            }
            self.pending.push_front(Pending::Identified(id));
        }
    }

    /// The server has no session for us [MQTT-3.2.2-5]: our in-flight state means nothing to
    /// it. Publishes it never acknowledged are sent again as new messages, ahead of the queue
    /// and in their order; those it acknowledged with PUBREC were received, so they complete.
    /// Subscriptions are made again if configured.
    fn restart_session(&mut self) {
        self.incoming_qos2.clear();
        self.carried_qos2.clear();
        self.qos2_unacknowledged.clear();
        self.qos2_abandoned.clear();
        self.unacknowledged = 0;
        let mut resend = Vec::new();
        let mut completed = Vec::new();
        let mut fresh = Vec::new();
        for (id, outgoing) in self.outgoing.iter() {
            match outgoing {
                Outgoing::Publish {
                    state: PublishState::Sent,
                    ..
                } => resend.push(id),
                Outgoing::Publish {
                    state: PublishState::Released(code),
                    ..
                } => completed.push((id, *code)),
                Outgoing::Publish {
                    state: PublishState::Queued,
                    ..
                } => {}
                // Waiting in `pending` to be resent: to a server without our session it is a
                // new message, DUP 0.
                Outgoing::Publish {
                    state: PublishState::Resend,
                    ..
                } => fresh.push(id),
                request => {
                    if let Some(packet) = request_packet(id, request) {
                        self.transmit.push_back(packet);
                    }
                }
            }
        }
        for (id, reason_code) in completed {
            self.outgoing.remove(id);
            self.events.push_back(Event::Published {
                packet_id: id,
                reason_code,
            });
        }
        for id in fresh {
            if let Some(Outgoing::Publish { state, .. }) = self.outgoing.get_mut(id) {
                *state = PublishState::Queued;
            }
        }
        for id in resend.iter().rev() {
            if let Some(Outgoing::Publish { state, .. }) = self.outgoing.get_mut(*id) {
                *state = PublishState::Queued;
            }
            self.pending.push_front(Pending::Identified(*id));
        }
        if self.config.resubscribe && !self.subscriptions.is_empty() {
            // A SUBSCRIBE carries at most one Subscription Identifier, for all its filters
            // (§3.8.2.1.2): one SUBSCRIBE per identifier keeps each subscription's own.
            let mut groups: BTreeMap<Option<SubscriptionId>, Vec<_>> = BTreeMap::new();
            for (filter, (options, id)) in &self.subscriptions {
                groups
                    .entry(*id)
                    .or_default()
                    .push((filter.clone(), *options));
            }
            let (version, max) = (self.config.version, self.server.maximum_packet_size);
            let chunks = groups
                .into_iter()
                .flat_map(|(subscription_identifier, filters)| {
                    let mut properties = SubscribeProperties::default();
                    properties.subscription_identifier = subscription_identifier;
                    subscribe_chunks(filters, &properties, version, max)
                        .into_iter()
                        .map(move |chunk| (chunk, properties.clone()))
                });
            for (filters, properties) in chunks.collect::<Vec<_>>() {
                let names: Vec<ByteStr> = filters.iter().map(|(f, _)| f.clone()).collect();
                // Identifiers are only exhausted with 65,535 requests in flight; then the
                // application's own requests are already queued and will be resent.
                let id = self.request(Outgoing::Subscribe {
                    filters,
                    properties,
                });
                match id {
                    // A filter that alone no longer fits this server's Maximum Packet Size
                    // cannot be made again: the subscription is gone.
                    Err(RequestError::PacketTooLarge) => {
                        for filter in names {
                            self.subscriptions.remove(&filter);
                            self.events.push_back(Event::SubscriptionLost {
                                filter,
                                reason_code: ReasonCode::PACKET_TOO_LARGE,
                            });
                        }
                    }
                    // `request` sends it at once when connected; send it exactly once either
                    // way.
                    Ok(id) if self.state != State::Connected => {
                        if let Some(packet) =
                            self.outgoing.get(id).and_then(|r| request_packet(id, r))
                        {
                            self.transmit.push_back(packet);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn handle_connected(&mut self, now: Instant, packet: Packet) {
        let v5 = self.config.version.is_v5();
        match packet {
            Packet::Publish(publish) => self.handle_publish(publish),
            Packet::PubAck(ack) => {
                if let Some(Outgoing::Publish {
                    message,
                    state: PublishState::Sent,
                }) = self.outgoing.get(ack.packet_id)
                {
                    if message.qos == QoS::AtLeastOnce {
                        self.complete(ack.packet_id, ack.reason_code);
                    }
                }
            }
            Packet::PubRec(ack) => match self.outgoing.get_mut(ack.packet_id) {
                Some(Outgoing::Publish { message, state }) if message.qos == QoS::ExactlyOnce => {
                    match *state {
                        // A failing PUBREC ends the flow (§4.3.3): no PUBREL.
                        PublishState::Sent if !ack.reason_code.is_success() => {
                            self.complete(ack.packet_id, ack.reason_code);
                        }
                        PublishState::Sent | PublishState::Released(_) => {
                            if *state == PublishState::Sent {
                                *state = PublishState::Released(ack.reason_code);
                            }
                            self.transmit
                                .push_back(Packet::PubRel(PubAck::new(ack.packet_id)));
                        }
                        PublishState::Queued | PublishState::Resend => {}
                    }
                }
                _ => {
                    let rel = qos2_answer(ack.packet_id, false, v5);
                    self.transmit.push_back(Packet::PubRel(rel));
                }
            },
            Packet::PubComp(ack) => {
                if let Some(Outgoing::Publish {
                    state: PublishState::Released(received),
                    ..
                }) = self.outgoing.get(ack.packet_id)
                {
                    // PUBREC said how the server took the message. PUBCOMP can only add 0x92,
                    // which answering a PUBREL resent after a reconnection means the server
                    // had released it already (§3.7.2.1).
                    let received = *received;
                    self.complete(ack.packet_id, received);
                }
            }
            Packet::PubRel(rel) => {
                self.carried_qos2.remove(&rel.packet_id);
                let known = self.incoming_qos2.remove(&rel.packet_id);
                let comp = qos2_answer(rel.packet_id, known, v5);
                self.transmit.push_back(Packet::PubComp(comp));
            }
            Packet::SubAck(SubAck {
                packet_id,
                reason_codes,
                ..
            }) => {
                if let Some(Outgoing::Subscribe {
                    filters,
                    properties,
                }) = self.outgoing.get(packet_id)
                {
                    let subscription_id = properties.subscription_identifier;
                    for ((filter, options), code) in filters.iter().zip(&reason_codes) {
                        if code.is_success() {
                            self.subscriptions
                                .insert(filter.clone(), (*options, subscription_id));
                        } else if self.subscriptions.remove(filter).is_some() {
                            // A subscription we held was refused when made again (after a
                            // lost session, say): it is gone, and the application must know.
                            self.events.push_back(Event::SubscriptionLost {
                                filter: filter.clone(),
                                reason_code: *code,
                            });
                        }
                    }
                    self.outgoing.remove(packet_id);
                    self.events.push_back(Event::Subscribed {
                        packet_id,
                        reason_codes,
                    });
                }
            }
            Packet::UnsubAck(UnsubAck {
                packet_id,
                reason_codes,
                ..
            }) => {
                if let Some(Outgoing::Unsubscribe { filters, .. }) = self.outgoing.remove(packet_id)
                {
                    for filter in filters {
                        self.subscriptions.remove(&filter);
                    }
                    self.events.push_back(Event::Unsubscribed {
                        packet_id,
                        reason_codes,
                    });
                }
            }
            Packet::PingResp => {}
            Packet::Disconnect(d) => {
                self.transmit.clear();
                self.close(CloseReason::DisconnectedByServer(d.reason_code));
            }
            Packet::Auth(auth) => self.handle_auth(now, *auth),
            // Packets only a client sends and a second CONNACK: the server broke the
            // protocol.
            Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::Subscribe(_)
            | Packet::Unsubscribe(_)
            | Packet::PingReq => self.violation(ReasonCode::PROTOCOL_ERROR),
        }
    }

    fn complete(&mut self, packet_id: PacketId, reason_code: ReasonCode) {
        if self.outgoing.remove(packet_id).is_some() {
            self.unacknowledged = self.unacknowledged.saturating_sub(1);
            self.events.push_back(Event::Published {
                packet_id,
                reason_code,
            });
        }
    }

    fn handle_publish(&mut self, publish: Publish) {
        let topic = match self
            .inbound_aliases
            .resolve(&publish.topic, publish.properties.topic_alias)
        {
            Ok(topic) => topic,
            Err(reason) => return self.violation(reason),
        };
        let manual = self.config.manual_acks;
        if let (QoS::ExactlyOnce, Some(id)) = (publish.qos, publish.packet_id) {
            // A message from before this connection that the server no longer holds: it sends
            // a new message with the identifier, with DUP 0 [MQTT-4.3.3-2], as it does only
            // once it has completed the old one [MQTT-2.2.1-4]. A resend of the old one has
            // DUP 1 [MQTT-3.3.1-1].
            if self.carried_qos2.remove(&id) && !publish.dup {
                self.incoming_qos2.remove(&id);
            }
        }
        match (publish.qos, publish.packet_id) {
            (QoS::AtLeastOnce, Some(id)) if manual => {
                // Receive Maximum: QoS 1 messages not yet acknowledged count against it
                // [MQTT-3.3.4-9].
                if !self.qos1_unacknowledged.contains(&id)
                    && self.unacknowledged_incoming() >= self.config.receive_maximum()
                {
                    return self.violation(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED);
                }
                self.qos1_unacknowledged.insert(id);
                self.owe_answer(id, QoS::AtLeastOnce, false);
                let message = Message::from_publish(publish, topic);
                self.events.push_back(Event::MessageToAcknowledge {
                    packet_id: id,
                    message,
                });
            }
            (QoS::ExactlyOnce, Some(id)) if manual => {
                if self.incoming_qos2.contains(&id) {
                    // Acknowledged already; the server missed our PUBREC. It still waits
                    // behind the answers owed to earlier PUBLISHes [MQTT-4.6.0-3].
                    self.owe_answer(id, QoS::ExactlyOnce, true);
                } else if self.qos2_unacknowledged.contains(&id) {
                    // A retransmission (after a reconnect) of a message the application
                    // still holds: it gets PUBREC when the application acknowledges it.
                    self.owe_answer(id, QoS::ExactlyOnce, false);
                } else {
                    // A message abandoned on an earlier connection comes back: it is new to
                    // the application.
                    let abandoned = self.qos2_abandoned.remove(&id);
                    if !abandoned && self.unacknowledged_incoming() >= self.config.receive_maximum()
                    {
                        return self.violation(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED);
                    }
                    self.qos2_unacknowledged.insert(id);
                    self.owe_answer(id, QoS::ExactlyOnce, false);
                    let message = Message::from_publish(publish, topic);
                    self.events.push_back(Event::MessageToAcknowledge {
                        packet_id: id,
                        message,
                    });
                }
            }
            (QoS::AtLeastOnce, Some(id)) => {
                self.events
                    .push_back(Event::Message(Message::from_publish(publish, topic)));
                self.transmit.push_back(Packet::PubAck(PubAck::new(id)));
            }
            (QoS::ExactlyOnce, Some(id)) => {
                if !self.incoming_qos2.contains(&id) {
                    // Receive Maximum: QoS 2 messages not yet released count against it
                    // [MQTT-3.3.4-9], but for those carried over that the server has forgotten.
                    let carried = self.carried_qos2.len();
                    let counted = self.incoming_qos2.len().saturating_sub(carried);
                    if counted >= self.config.receive_maximum() {
                        return self.violation(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED);
                    }
                    self.incoming_qos2.insert(id);
                    self.events
                        .push_back(Event::Message(Message::from_publish(publish, topic)));
                }
                self.transmit.push_back(Packet::PubRec(PubAck::new(id)));
            }
            _ => self
                .events
                .push_back(Event::Message(Message::from_publish(publish, topic))),
        }
    }

    /// With manual acks: QoS 1 and 2 messages the application holds and has not acknowledged.
    ///
    /// QoS 2 identifiers acknowledged and awaiting PUBREL are not counted, although the server
    /// counts them until PUBCOMP: they hold no message (and are bounded by the identifier
    /// space), and servers that forget to count their retransmissions after a resumed session
    /// (mosquitto 2.0) would otherwise be disconnected over and over.
    fn unacknowledged_incoming(&self) -> usize {
        self.qos1_unacknowledged.len() + self.qos2_unacknowledged.len() + self.qos2_abandoned.len()
    }

    /// Records that the PUBLISH `id` just received is owed a PUBACK (QoS 1) or PUBREC (QoS 2),
    /// `ready` if it may go as soon as the answers before it have.
    fn owe_answer(&mut self, id: PacketId, qos: QoS, ready: bool) {
        match self.answer_order.iter_mut().find(|(owed, ..)| *owed == id) {
            // The server sent it twice on one connection: one answer covers both.
            Some(entry) => entry.2 |= ready,
            None => self.answer_order.push_back((id, qos, ready)),
        }
        self.send_ready_answers();
    }

    /// Sends the answers at the front of the arrival order that the application has
    /// acknowledged, stopping at the first it has not [MQTT-4.6.0-2] [MQTT-4.6.0-3].
    fn send_ready_answers(&mut self) {
        if self.state != State::Connected {
            return;
        }
        while let Some(&(id, qos, true)) = self.answer_order.front() {
            self.answer_order.pop_front();
            let packet = if qos == QoS::ExactlyOnce {
                Packet::PubRec(PubAck::new(id))
            } else {
                Packet::PubAck(PubAck::new(id))
            };
            self.transmit.push_back(packet);
        }
    }

    fn mark_ready(&mut self, id: PacketId) {
        if let Some(entry) = self.answer_order.iter_mut().find(|(owed, ..)| *owed == id) {
            entry.2 = true;
        }
        self.send_ready_answers();
    }

    /// With [`ClientConfig::manual_acks`]: the application has taken the message reported as
    /// [`Event::MessageToAcknowledge`] with `packet_id`, so PUBACK (QoS 1) or PUBREC (QoS 2)
    /// may go out. It goes out once every message that arrived before it on this connection
    /// has been acknowledged or abandoned too: answers keep the arrival order
    /// [MQTT-4.6.0-2] [MQTT-4.6.0-3].
    ///
    /// Identifiers that are not awaiting acknowledgement are ignored: a QoS 1 message from an
    /// earlier connection is resent by the server and reported again. While not connected, a
    /// QoS 2 acknowledgement is remembered and PUBREC answers the server's retransmission; a
    /// QoS 1 one is dropped.
    pub fn acknowledge(&mut self, packet_id: PacketId) {
        if self.qos2_unacknowledged.remove(&packet_id) {
            self.incoming_qos2.insert(packet_id);
            self.mark_ready(packet_id);
        } else if self.qos1_unacknowledged.remove(&packet_id) {
            self.mark_ready(packet_id);
        }
    }

    /// With [`ClientConfig::manual_acks`]: the application gives up the message reported as
    /// [`Event::MessageToAcknowledge`] with `packet_id` without having taken it. It is never
    /// answered on this connection, so the server keeps it: it still counts against our
    /// Receive Maximum, and a resumed session's next connection delivers it again (reported
    /// anew). The answers owed to later messages no longer wait for it.
    ///
    /// Identifiers that are not awaiting acknowledgement are ignored.
    pub fn abandon(&mut self, packet_id: PacketId) {
        if self.qos2_unacknowledged.remove(&packet_id) {
            self.qos2_abandoned.insert(packet_id);
        } else if !self.qos1_unacknowledged.contains(&packet_id) {
            return;
        }
        // A QoS 1 identifier stays in `qos1_unacknowledged`, counted, until the connection
        // ends: the server counts it until then too.
        self.answer_order.retain(|(owed, ..)| *owed != packet_id);
        self.send_ready_answers();
    }

    /// Whether the QoS 2 publish `packet_id` has been received by the server (PUBREC) and
    /// waits for PUBCOMP. Such a message must not be published again: the server has it.
    pub fn is_awaiting_release(&self, packet_id: PacketId) -> bool {
        matches!(
            self.outgoing.get(packet_id),
            Some(Outgoing::Publish {
                state: PublishState::Released(_),
                ..
            })
        )
    }

    /// Checks the timers at `now`: keepalive pings, and the deadlines for CONNACK and PINGRESP.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Idle => {}
            State::Connecting { deadline } => {
                if now >= deadline {
                    self.transmit.clear();
                    self.close(CloseReason::ResponseTimeout);
                }
            }
            State::Connected => match self.keepalive.handle_timeout(now) {
                KeepAliveAction::None => {}
                KeepAliveAction::SendPing => {
                    self.keepalive.on_ping_sent(now);
                    self.transmit.push_back(Packet::PingReq);
                }
                KeepAliveAction::PeerDead => {
                    self.transmit.clear();
                    self.close(CloseReason::ResponseTimeout);
                }
            },
        }
    }

    /// Appends the packets due now to `buf`, at most about [`TRANSMIT_BATCH`] bytes per call.
    /// Returns whether it wrote anything; call again until it returns `false`.
    ///
    /// Changed by every input and command.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut BytesMut) -> bool {
        let start = buf.len();
        while buf.len() - start < TRANSMIT_BATCH {
            let packet = match self.transmit.pop_front() {
                Some(packet) => packet,
                None => match self.next_publish() {
                    Some(packet) => packet,
                    None => break,
                },
            };
            // Packets built here passed `encoded_len` when they were accepted; an error would
            // be a bug in this crate, and skipping the packet is the safe outcome.
            let _ = packet.encode(self.config.version, buf);
        }
        let wrote = buf.len() > start;
        if wrote && self.state == State::Connected {
            self.keepalive.on_packet_sent(now);
        }
        wrote
    }

    /// The next queued publish that may go out now, if connected and within Receive Maximum.
    fn next_publish(&mut self) -> Option<Packet> {
        while self.state == State::Connected {
            let mut dup = false;
            let (message, packet_id) = match self.pending.front()? {
                Pending::AtMostOnce(_) => match self.pending.pop_front() {
                    Some(Pending::AtMostOnce(message)) => (message, None),
                    _ => return None,
                },
                Pending::Identified(id) => {
                    let id = *id;
                    // Receive Maximum: wait, keeping order, until an acknowledgement frees a
                    // slot [MQTT-4.9.0-2].
                    if self.unacknowledged >= self.server.receive_maximum {
                        return None;
                    }
                    self.pending.pop_front();
                    let Some(Outgoing::Publish { message, state }) = self.outgoing.get_mut(id)
                    else {
                        continue;
                    };
                    dup = *state == PublishState::Resend;
                    *state = PublishState::Sent;
                    self.unacknowledged += 1;
                    (message.clone(), Some(id))
                }
            };
            let refusal = if message.qos > self.server.maximum_qos {
                Some(ReasonCode::QOS_NOT_SUPPORTED)
            } else if message.retain && !self.server.retain_available {
                Some(ReasonCode::RETAIN_NOT_SUPPORTED)
            } else {
                None
            };
            let mut publish = message.to_publish(packet_id, dup);
            let (version, max) = (self.config.version, self.server.maximum_packet_size);
            let fits =
                |p: &PublishRef<'_>| p.encoded_len(version).is_ok_and(|len| len <= max as usize);
            // Measured without an alias; one is added only if the result still fits, and
            // never for a packet that is not sent.
            let too_large = !fits(&PublishRef::from(&publish));
            if refusal.is_none() && !too_large {
                let no_topic = ByteStr::new();
                let chosen = self
                    .outbound_aliases
                    .choose(&publish.topic, |alias, send_topic| {
                        let mut aliased = PublishRef::from(&publish);
                        aliased.topic_alias = Some(alias);
                        if !send_topic {
                            aliased.topic = &no_topic;
                        }
                        fits(&aliased)
                    });
                if let Some((alias, send_topic)) = chosen {
                    publish.properties.topic_alias = Some(alias);
                    if !send_topic {
                        publish.topic = no_topic;
                    }
                }
            }
            match (
                refusal.or(too_large.then_some(ReasonCode::PACKET_TOO_LARGE)),
                packet_id,
            ) {
                (None, _) => return Some(Packet::Publish(publish)),
                (Some(reason), Some(id)) => self.complete(id, reason),
                (Some(_), None) => {}
            }
        }
        None
    }

    /// When [`Client::handle_timeout`] next has work: a keepalive ping, or the CONNACK or
    /// PINGRESP deadline. `None` when idle or when keepalive is off.
    ///
    /// Changed by [`Client::connect`], [`Client::handle_packet`], [`Client::handle_bytes`],
    /// [`Client::handle_timeout`] and [`Client::poll_transmit`].
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Idle => None,
            State::Connecting { deadline } => Some(deadline),
            State::Connected => self.keepalive.poll_timeout(),
        }
    }

    /// The next event for the application.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Messages waiting to be sent.
    pub fn queued_messages(&self) -> usize {
        self.pending.len()
    }

    /// QoS 1 and 2 publishes and requests not yet completed.
    pub fn in_flight(&self) -> usize {
        self.outgoing.len()
    }
}

/// Splits the filters of a resubscription into runs whose SUBSCRIBE, with `properties`, fits
/// in `max` bytes, the server's Maximum Packet Size [MQTT-3.2.2-15]: a client holding many
/// subscriptions would otherwise be disconnected (0x95) on every session it has to rebuild.
/// A filter too large on its own gets a run of its own, which the caller refuses.
fn subscribe_chunks(
    filters: Vec<(ByteStr, SubscriptionOptions)>,
    properties: &SubscribeProperties,
    version: ProtocolVersion,
    max: u32,
) -> Vec<Vec<(ByteStr, SubscriptionOptions)>> {
    // Each filter costs its string (2-byte length prefix) and one options byte; the rest is
    // measured once, with 3 bytes to spare for the Remaining Length growing with the packet.
    let entry = |filter: &ByteStr| 2 + filter.len() + 1;
    let overhead = filters.first().map_or(0, |first| {
        Packet::Subscribe(Subscribe {
            packet_id: PacketId::MIN,
            filters: vec![first.clone()],
            properties: properties.clone(),
        })
        .encoded_len(version)
        .map_or(0, |len| len.saturating_sub(entry(&first.0)) + 3)
    });
    let max = max as usize;
    let mut chunks = Vec::new();
    let mut chunk = Vec::new();
    let mut size = overhead;
    for (filter, options) in filters {
        let cost = entry(&filter);
        if !chunk.is_empty() && size + cost > max {
            chunks.push(std::mem::take(&mut chunk));
            size = overhead;
        }
        size += cost;
        chunk.push((filter, options));
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

/// An AUTH with `reason`, `method` and `data`, and nothing else: no Reason String or User
/// Property that could take it past the server's Maximum Packet Size [MQTT-3.15.2-2]
/// [MQTT-3.15.2-3].
fn auth_packet(reason: ReasonCode, method: ByteStr, data: Option<Bytes>) -> Packet {
    let mut auth = Auth {
        reason_code: reason,
        ..Auth::default()
    };
    auth.properties.authentication_method = Some(method);
    auth.properties.authentication_data = data;
    Packet::Auth(Box::new(auth))
}

/// The SUBSCRIBE or UNSUBSCRIBE packet for a request in flight.
fn request_packet(id: PacketId, request: &Outgoing) -> Option<Packet> {
    match request {
        Outgoing::Subscribe {
            filters,
            properties,
        } => Some(Packet::Subscribe(Subscribe {
            packet_id: id,
            filters: filters.clone(),
            properties: properties.clone(),
        })),
        Outgoing::Unsubscribe {
            filters,
            properties,
        } => Some(Packet::Unsubscribe(Unsubscribe {
            packet_id: id,
            filters: filters.clone(),
            properties: properties.clone(),
        })),
        Outgoing::Publish { .. } => None,
    }
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn a_client_config_debug_output_hides_the_password() {
        let mut config = ClientConfig::new(ProtocolVersion::V5, "c");
        config.password = Some(Bytes::from_static(b"s3cret-pw"));
        let shown = format!("{config:?}");
        assert!(shown.contains("<hidden>"), "{shown}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("115, 51"),
            "{shown}"
        );
    }
}
