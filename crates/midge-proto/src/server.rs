//! The server side of one connection, as a sans-IO state machine.
//!
//! A [`ServerConnection`] handles one client's packets: it validates CONNECT, enforces
//! keepalive and the server's limits, runs the QoS flows in both directions, and reports what
//! the broker must decide or route as [`ServerEvent`]s. Routing between sessions, retained
//! messages, authentication and authorization are the broker's; the [`Session`] that outlives
//! the connection is handed in on [`ServerConnection::accept`] and taken back with
//! [`ServerConnection::take_session`].
//!
//! # Bridges (3.x)
//!
//! A 3.1 or 3.1.1 client that sets the bridge bit of CONNECT ([`Connect::bridge`], as
//! mosquitto's bridges do) gets No Local and Retain As Published on every subscription it makes
//! (but No Local on shared ones, which cannot have it): the broker sends it none of its own
//! messages back, and forwards RETAIN as published, so that two brokers bridged both ways do
//! not loop messages and retained messages stay retained across the bridge.
//!
//! # Enhanced authentication (5.0 §4.12)
//!
//! A CONNECT with an Authentication Method is reported as [`ServerEvent::Connect`], the method
//! and the client's first data in its properties. The broker then answers with one of:
//!
//! - [`ServerConnection::auth_continue`]: AUTH 0x18 Continue authentication with more data
//!   for the client, whose answer comes as [`ServerEvent::Auth`], to be answered the same way;
//! - [`ServerConnection::set_auth_success_data`] and then [`ServerConnection::accept`]: the
//!   CONNACK carries the method and the server's final data (a method that needs no round
//!   trip accepts this way right after the Connect event);
//! - [`ServerConnection::reject`], with 0x8C Bad authentication method for a method the broker
//!   does not know [MQTT-4.12.0-1], or 0x87 Not authorized when the client failed.
//!
//! Accepting a CONNECT that named a method without a call to
//! [`ServerConnection::set_auth_success_data`] refuses it with 0x8C instead: a broker that
//! does not look at the method never lets the client believe it was checked.
//!
//! Once connected, such a client may re-authenticate (§4.12.1): its AUTH 0x19 comes as
//! [`ServerEvent::Auth`] with [`ReasonCode::RE_AUTHENTICATE`], answered with
//! [`ServerConnection::auth_continue`], [`ServerConnection::reauth_success`] or, when it
//! fails, [`ServerConnection::disconnect`] [MQTT-4.12.1-2]. Other traffic goes on meanwhile.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use midge_codec::{
    ByteStr, ConnAck, ConnAckProperties, Connect, DecodeError, Disconnect, Packet, PacketId,
    PacketType, ProtocolVersion, PubAck, Publish, PublishProperties, PublishRef, QoS, ReasonCode,
    SubAck, Subscribe, SubscriptionId, SubscriptionOptions, UnsubAck, Unsubscribe, Will,
    MAX_PACKET_SIZE,
};
use midge_topic::{Limits, TopicFilter, TopicName};

use crate::alias::{InboundAliases, OutboundAliases};
use crate::inflight::{qos2_answer, Inflight};
use crate::keepalive::ServerKeepAlive;
use crate::message::Message;
use crate::packets::PacketQueue;
use crate::session::{
    Delivery, OutState, QueueLimits, Session, SessionChange, SessionSubscription,
};
use crate::TRANSMIT_BATCH;

/// The server's limits and capabilities, announced to 5.0 clients in CONNACK and enforced on
/// every client.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// A connection that sends no CONNECT within this time is closed. So is one whose
    /// enhanced authentication exchange is not over by then: the time counts from the start of
    /// the connection to its CONNACK, and the connection is closed (without a CONNACK) when it
    /// runs out while the server waits for the client's AUTH. The time the broker takes to
    /// answer counts too, but never closes the connection while the broker decides.
    pub connect_timeout: Duration,
    /// Largest Keep Alive accepted, in seconds (0: no limit). A 5.0 client asking for more is
    /// told this value; a 3.x client, which cannot be told, is refused with 0x02, as mosquitto
    /// does. Keep Alive 0 is always accepted.
    pub max_keep_alive: u16,
    /// Receive Maximum: QoS 1 and 2 publishes a client may have unacknowledged.
    pub receive_maximum: u16,
    /// Largest packet accepted from a client.
    pub maximum_packet_size: u32,
    /// Topic aliases a client may set.
    pub topic_alias_maximum: u16,
    /// Highest QoS accepted.
    pub maximum_qos: QoS,
    /// Whether retained messages are supported.
    pub retain_available: bool,
    /// Whether wildcard subscriptions are supported.
    pub wildcard_subscriptions: bool,
    /// Whether subscription identifiers are supported.
    pub subscription_identifiers: bool,
    /// Whether shared subscriptions are supported.
    pub shared_subscriptions: bool,
    /// Largest Session Expiry Interval granted, in seconds.
    pub max_session_expiry: u32,
    /// Most QoS 1 and 2 deliveries in flight to one client, within its own Receive Maximum.
    pub max_inflight: u16,
    /// Per-session queue limits.
    pub queue_limits: QueueLimits,
    /// Topic limits, such as the maximum number of levels.
    pub topic_limits: Limits,
    /// Most subscriptions one session may hold.
    pub max_subscriptions: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            max_keep_alive: 0,
            receive_maximum: 1024,
            maximum_packet_size: 1024 * 1024,
            topic_alias_maximum: 64,
            maximum_qos: QoS::ExactlyOnce,
            retain_available: true,
            wildcard_subscriptions: true,
            subscription_identifiers: true,
            shared_subscriptions: true,
            max_session_expiry: u32::MAX,
            max_inflight: 256,
            queue_limits: QueueLimits::default(),
            topic_limits: Limits::DEFAULT,
            max_subscriptions: 10_000,
        }
    }
}

/// One filter of a SUBSCRIBE, checked against the protocol and the server's capabilities.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriptionRequest {
    /// The topic filter, possibly `$share/{name}/{filter}`.
    pub filter: ByteStr,
    /// Its options.
    pub options: SubscriptionOptions,
    /// `Ok` if the server can accept it; otherwise the reason code for SUBACK, which
    /// [`ServerConnection::subscribe_ack`] sends whatever code it is given. The broker may
    /// still refuse an `Ok` one (for example 0x87 Not authorized).
    pub verdict: Result<(), ReasonCode>,
}

impl SubscriptionRequest {
    /// A request for `filter` with `options` and the server's `verdict` on it.
    pub fn new(
        filter: ByteStr,
        options: SubscriptionOptions,
        verdict: Result<(), ReasonCode>,
    ) -> Self {
        Self {
            filter,
            options,
            verdict,
        }
    }
}

/// What a resumed session carries into a connection.
#[derive(Debug, Default)]
struct Resumed {
    /// In-flight packets not yet resent on this connection, in their original order: the
    /// client may have reconnected with a smaller Receive Maximum than was in flight, and the
    /// rest go out as it acknowledges [MQTT-3.3.4-9].
    resend: VecDeque<PacketId>,
    /// QoS 2 identifiers the session awaited a PUBREL for when this connection began, and
    /// that the client has not named since. A client that still holds one sends its PUBREL,
    /// or its PUBLISH again with DUP 1 [MQTT-4.4.0-1]; one it has forgotten (the session was
    /// stored before the client completed the flow, and the broker restored that copy) would
    /// otherwise count against our Receive Maximum for good, and take the client's next
    /// message with the identifier for a duplicate. So they do not count, and a PUBLISH with
    /// DUP 0 makes one new (but under 3.1: see `handle_publish`).
    carried_qos2: BTreeSet<PacketId>,
}

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerCloseReason {
    /// The client sent DISCONNECT with this reason.
    DisconnectedByClient(ReasonCode),
    /// The client broke the protocol; a 5.0 DISCONNECT (or a CONNACK refusal) was queued.
    ProtocolViolation(ReasonCode),
    /// The client was silent for 1.5 keepalive intervals.
    KeepAliveTimeout,
    /// No CONNECT, or no end to the enhanced authentication exchange, within the connect
    /// timeout ([`ServerConfig::connect_timeout`]).
    ConnectTimeout,
    /// The broker refused the CONNECT.
    Refused(ReasonCode),
    /// A new connection took over the session.
    TakenOver,
    /// The broker closed the connection ([`ServerConnection::disconnect`]).
    DisconnectedByServer(ReasonCode),
    /// The transport closed.
    ConnectionLost,
}

/// What the connection reports to the broker, from [`ServerConnection::poll_event`].
///
/// The `Debug` output hides authentication data.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// A valid CONNECT. Authenticate it, find the client's session, then call
    /// [`ServerConnection::accept`] or [`ServerConnection::reject`]; with an Authentication
    /// Method in its properties, see the module documentation on enhanced authentication.
    ///
    /// `client_id` is the client's own identifier, or empty when the client sent none and the
    /// server is to assign one [MQTT-3.1.3-6]: then call
    /// [`ServerConnection::assign_client_id`] first and use that identifier.
    Connect {
        /// The packet.
        connect: Box<Connect>,
        /// The client's identifier; empty when one is to be assigned.
        client_id: ByteStr,
    },
    /// The client's AUTH in an enhanced authentication exchange, with the method the CONNECT
    /// named (checked here).
    ///
    /// Before CONNACK ([`ServerConnection::is_connected`] is false) `reason` is 0x18 Continue
    /// authentication, the answer to [`ServerConnection::auth_continue`]: answer it with
    /// [`ServerConnection::auth_continue`] again, [`ServerConnection::set_auth_success_data`]
    /// and [`ServerConnection::accept`], or [`ServerConnection::reject`].
    ///
    /// Once connected, `reason` is 0x19 Re-authenticate when the client starts a
    /// re-authentication, then 0x18 for its answers to [`ServerConnection::auth_continue`]:
    /// answer with [`ServerConnection::auth_continue`], [`ServerConnection::reauth_success`],
    /// or [`ServerConnection::disconnect`] when it fails [MQTT-4.12.1-2].
    Auth {
        /// [`ReasonCode::CONTINUE_AUTHENTICATION`] or [`ReasonCode::RE_AUTHENTICATE`].
        reason: ReasonCode,
        /// The Authentication Data, if the client sent any.
        data: Option<Bytes>,
    },
    /// A message to route. For QoS 1 and 2 call [`ServerConnection::acknowledge`] with its
    /// packet identifier and the outcome; a QoS 2 message is reported once however often the
    /// client retransmits it.
    Publish {
        /// The message, topic alias resolved. Its topic name was validated against
        /// [`ServerConfig::topic_limits`], and [`Message::topic_name`] trusts that.
        message: Message,
        /// Its packet identifier, for QoS 1 and 2.
        packet_id: Option<PacketId>,
    },
    /// A SUBSCRIBE to authorize and apply; answer with [`ServerConnection::subscribe_ack`],
    /// one code per request. The connection keeps what the answer needs.
    Subscribe {
        /// Its packet identifier.
        packet_id: PacketId,
        /// The filters, in order.
        requests: Vec<SubscriptionRequest>,
        /// The Subscription Identifier, if any.
        subscription_id: Option<SubscriptionId>,
    },
    /// An UNSUBSCRIBE to apply; answer with [`ServerConnection::unsubscribe_ack`]. The
    /// connection keeps the filters.
    Unsubscribe {
        /// Its packet identifier.
        packet_id: PacketId,
        /// The filters.
        filters: Vec<ByteStr>,
    },
    /// The connection ended. `will` is the Will Message to publish (after its delay), present
    /// when the connection ended other than by a normal DISCONNECT [MQTT-3.1.2-8].
    Closed {
        /// Why.
        reason: ServerCloseReason,
        /// The will to publish, with its Will Delay Interval in seconds.
        will: Option<(Will, u32)>,
    },
}

impl fmt::Debug for ServerEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect { connect, client_id } => {
                let mut shown = f.debug_struct("Connect");
                if connect.properties.authentication_data.is_some() {
                    // Secrets never reach logs: the CONNECT's own `Debug` shows its
                    // properties whole.
                    let mut hidden = connect.clone();
                    hidden.properties.authentication_data = Some(Bytes::from_static(HIDDEN));
                    shown.field("connect", &hidden);
                } else {
                    shown.field("connect", connect);
                }
                shown.field("client_id", client_id).finish()
            }
            Self::Auth { reason, data } => f
                .debug_struct("Auth")
                .field("reason", reason)
                .field("data", &data.as_ref().map(|_| "<hidden>"))
                .finish(),
            Self::Publish { message, packet_id } => f
                .debug_struct("Publish")
                .field("message", message)
                .field("packet_id", packet_id)
                .finish(),
            Self::Subscribe {
                packet_id,
                requests,
                subscription_id,
            } => f
                .debug_struct("Subscribe")
                .field("packet_id", packet_id)
                .field("requests", requests)
                .field("subscription_id", subscription_id)
                .finish(),
            Self::Unsubscribe { packet_id, filters } => f
                .debug_struct("Unsubscribe")
                .field("packet_id", packet_id)
                .field("filters", filters)
                .finish(),
            Self::Closed { reason, will } => f
                .debug_struct("Closed")
                .field("reason", reason)
                .field("will", will)
                .finish(),
        }
    }
}

/// What the `Debug` output shows in place of authentication data.
const HIDDEN: &[u8] = b"<hidden>";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    AwaitingConnect {
        deadline: Instant,
    },
    /// CONNECT (or the client's AUTH) reported, waiting for the broker's decision. The
    /// deadline is the connect deadline, which the enhanced authentication exchange also
    /// keeps, but which does not run while the broker decides.
    Authenticating {
        deadline: Instant,
    },
    /// AUTH 0x18 sent before CONNACK, waiting for the client's AUTH until the deadline.
    Challenging {
        deadline: Instant,
    },
    Connected,
    Closed,
}

/// What a connection whose CONNECT named an Authentication Method keeps for the exchange and
/// for re-authentication.
struct EnhancedAuth {
    /// The Authentication Method of the CONNECT, which every AUTH and the CONNACK repeat
    /// [MQTT-4.12.0-5]. Its own bytes, not the CONNECT's.
    method: ByteStr,
    /// Whether the broker called [`ServerConnection::set_auth_success_data`], and so may
    /// accept the connection.
    approved: bool,
    /// Authentication Data for the CONNACK.
    success_data: Option<Bytes>,
    /// Where a re-authentication is, once connected.
    reauth: Reauth,
}

impl fmt::Debug for EnhancedAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnhancedAuth")
            .field("method", &self.method)
            .field("approved", &self.approved)
            // Secrets never reach logs.
            .field(
                "success_data",
                &self.success_data.as_ref().map(|_| "<hidden>"),
            )
            .field("reauth", &self.reauth)
            .finish()
    }
}

/// Whose turn it is in a re-authentication (§4.12.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reauth {
    /// None is running.
    Idle,
    /// The client's AUTH was reported; the broker answers.
    BrokerTurn,
    /// AUTH 0x18 was sent; the client answers.
    ClientTurn,
}

/// The server side of one client connection.
#[derive(Debug)]
pub struct ServerConnection {
    config: Arc<ServerConfig>,
    state: State,
    version: ProtocolVersion,
    /// The CONNECT while the broker decides on it, without its user properties and its
    /// Authentication Data, which the broker got in [`ServerEvent::Connect`].
    connect: Option<Box<Connect>>,
    /// Enhanced authentication, when the CONNECT named a method: boxed, since most
    /// connections use none.
    auth: Option<Box<EnhancedAuth>>,
    /// The will, kept from the accepted CONNECT (the rest of the CONNECT is not kept, so an
    /// idle connection holds only what it still needs).
    will: Option<Box<Will>>,
    /// Request Problem Information of the accepted CONNECT [MQTT-3.1.2-29].
    problem_information: bool,
    /// The accepted CONNECT came from a 3.x bridge ([`Connect::bridge`]): its subscriptions
    /// get No Local and Retain As Published.
    bridge: bool,
    /// The accepted CONNECT asked for no Session Expiry Interval (or 0), which DISCONNECT may
    /// not raise [MQTT-3.14.2-2].
    connect_expiry_was_zero: bool,
    client_id: ByteStr,
    session: Option<Session>,
    keepalive: ServerKeepAlive,
    /// The client's limits, from CONNECT.
    client_receive_maximum: u16,
    client_maximum_packet_size: u32,
    /// Topic aliases, made when the first is used: most connections use none, and the two
    /// tables would otherwise be part of every connection.
    aliases: Option<Box<Aliases>>,
    /// The client's Topic Alias Maximum, from CONNECT (0: send no aliases).
    client_topic_alias_maximum: u16,
    /// Inbound QoS 1 and 2 publishes reported and not yet acknowledged by the broker, with
    /// their QoS, in the order they arrived: what [`ServerConnection::acknowledge`] answers.
    /// At most the Receive Maximum we announced (5.0), or the 65,535 packet identifiers (3.x).
    /// A retransmission of a QoS 2 one waits for the broker's answer instead of getting a
    /// PUBREC that might contradict it.
    unanswered: VecDeque<(PacketId, QoS)>,
    /// How many of `unanswered` are QoS 1 (the QoS 2 ones are in the session's
    /// `incoming_qos2`, which counts against the Receive Maximum until PUBREL, but for
    /// `carried_qos2`).
    unanswered_qos1: u32,
    /// Requests waiting for answers and packets held meanwhile: made with the first, dropped
    /// when both are empty, so that a connection with none keeps a pointer, not two queues.
    waiting: Option<Box<Waiting>>,
    transmit: PacketQueue,
    /// What a resumed session carries into this connection, made only when there is some:
    /// it is rare, and every connection carries the field, which is 8 bytes boxed (the
    /// broker keeps a connection's task within 1 KiB).
    resumed: Option<Box<Resumed>>,
    events: VecDeque<ServerEvent>,
}

/// What a connection keeps while the broker has requests to answer, or while input waits.
#[derive(Debug, Default)]
struct Waiting {
    /// SUBSCRIBE and UNSUBSCRIBE packets reported and not yet answered, at most
    /// [`MAX_PENDING_REQUESTS`], oldest first.
    requests: Vec<PendingRequest>,
    /// Packets that arrived while input waits: after CONNECT while the broker decides on it,
    /// or while [`MAX_PENDING_REQUESTS`] requests wait for answers. Replayed, in order, once
    /// the wait is over; at most [`MAX_HELD_PACKETS`].
    held: PacketQueue,
}

/// Packets [`ServerConnection::handle_packet`] holds while input waits (see
/// [`ServerConnection::handle_bytes`]); one more closes the connection.
const MAX_HELD_PACKETS: usize = 64;

/// SUBSCRIBE and UNSUBSCRIBE packets reported to the broker and not yet answered. At this
/// many, input waits for an answer: [`ServerConnection::handle_bytes`] leaves the rest of its
/// buffer undecoded, and [`ServerConnection::handle_packet`] holds packets, so what the
/// connection keeps for its answers stays small however many a client pipelines.
pub const MAX_PENDING_REQUESTS: usize = 16;

/// A SUBSCRIBE or UNSUBSCRIBE reported and not yet answered: what the answer needs.
#[derive(Debug)]
enum PendingRequest {
    Subscribe {
        packet_id: PacketId,
        subscription_id: Option<SubscriptionId>,
        requests: Vec<SubscriptionRequest>,
    },
    Unsubscribe {
        packet_id: PacketId,
        filters: Vec<ByteStr>,
    },
}

/// The topic alias tables of one connection, in both directions.
#[derive(Debug)]
struct Aliases {
    inbound: InboundAliases,
    outbound: OutboundAliases,
}

impl Aliases {
    /// The connection's tables, made on first use: `ours` is the Topic Alias Maximum we
    /// announced, `theirs` the client's. We set no more aliases than we accept: each holds a
    /// topic for the connection's life, and a client's maximum may be 65,535.
    fn get(aliases: &mut Option<Box<Self>>, ours: u16, theirs: u16) -> &mut Self {
        aliases.get_or_insert_with(|| {
            Box::new(Self {
                inbound: InboundAliases::new(ours),
                outbound: OutboundAliases::new(theirs.min(ours)),
            })
        })
    }
}

impl ServerConnection {
    /// A connection whose transport has just been accepted, waiting for CONNECT until
    /// [`ServerConfig::connect_timeout`] after `now`.
    pub fn new(config: Arc<ServerConfig>, now: Instant) -> Self {
        let deadline = now + config.connect_timeout;
        Self {
            config,
            state: State::AwaitingConnect { deadline },
            version: ProtocolVersion::V5,
            connect: None,
            auth: None,
            will: None,
            problem_information: true,
            bridge: false,
            connect_expiry_was_zero: false,
            client_id: ByteStr::new(),
            session: None,
            keepalive: ServerKeepAlive::new(Duration::ZERO, now),
            client_receive_maximum: u16::MAX,
            client_maximum_packet_size: MAX_PACKET_SIZE,
            aliases: None,
            client_topic_alias_maximum: 0,
            unanswered: VecDeque::new(),
            unanswered_qos1: 0,
            waiting: None,
            transmit: PacketQueue::new(),
            resumed: None,
            events: VecDeque::new(),
        }
    }

    /// The protocol version of the connection (5.0 until CONNECT says otherwise).
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// The client identifier in effect, once CONNECT has been received (and one was
    /// assigned, if the client sent none).
    pub fn client_id(&self) -> &ByteStr {
        &self.client_id
    }

    /// True between [`ServerConnection::accept`] and the end of the connection.
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// True once the connection has ended; flush [`ServerConnection::poll_transmit`], then
    /// close the transport.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The session, while connected.
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// Makes the session report its changes, for a persistence layer
    /// ([`Session::set_journaled`]). Call after [`ServerConnection::accept`].
    pub fn set_session_journaled(&mut self, journaled: bool) {
        if let Some(session) = self.session.as_mut() {
            session.set_journaled(journaled);
        }
    }

    /// Moves the changes the session made since the last call into `out`, oldest first
    /// ([`Session::take_changes`]).
    pub fn take_session_changes(&mut self, out: &mut Vec<SessionChange>) {
        if let Some(session) = self.session.as_mut() {
            session.take_changes(out);
        }
    }

    /// Takes the session back once the connection has closed, to keep it while the client is
    /// offline (if its expiry interval is not 0) or to hand it to a taking-over connection.
    pub fn take_session(&mut self) -> Option<Session> {
        if self.state == State::Closed {
            self.session.take()
        } else {
            None
        }
    }

    /// Decodes and handles the whole packets at the front of `buf`, enforcing the server's
    /// Maximum Packet Size from the fixed header alone.
    ///
    /// Input waits, and the rest of `buf` stays there undecoded, while the broker decides on
    /// CONNECT or on the client's AUTH before CONNACK ([`ServerConnection::accept`],
    /// [`ServerConnection::auth_continue`]) and while [`MAX_PENDING_REQUESTS`] SUBSCRIBE and
    /// UNSUBSCRIBE packets wait for answers ([`ServerConnection::subscribe_ack`],
    /// [`ServerConnection::unsubscribe_ack`]). After answering, call this again with the same
    /// buffer: it goes on where it stopped, and does nothing if input still waits.
    pub fn handle_bytes(&mut self, now: Instant, buf: &mut BytesMut) {
        while matches!(
            self.state,
            State::AwaitingConnect { .. } | State::Challenging { .. } | State::Connected
        ) && !self.input_waits()
        {
            // A message may be kept long (retained, queued for offline clients): it is copied
            // out of the read buffer, so that it holds its own bytes and never the buffer's.
            match Packet::decode_unshared(buf, self.version, self.config.maximum_packet_size) {
                Ok(Some(packet)) => self.handle_packet(now, packet),
                Ok(None) => return,
                Err(err) => return self.decode_error(err),
            }
        }
    }

    fn decode_error(&mut self, err: DecodeError) {
        if let (State::AwaitingConnect { .. }, DecodeError::UnsupportedProtocolVersion(level)) =
            (self.state, err)
        {
            // Answer in the client's own format where we know it: 5.0 and later get 0x84,
            // older levels the 3.1.1 return code 1 [MQTT-3.1.2-2].
            self.version = if level >= 5 {
                ProtocolVersion::V5
            } else {
                ProtocolVersion::V3_1_1
            };
            return self.refuse(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
        }
        let reason = match ReasonCode::from(err) {
            // After CONNECT, only a second CONNECT yields 0x84, which DISCONNECT cannot carry
            // (§3.14.2.1); a second CONNECT is a protocol error [MQTT-3.1.0-2].
            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION if self.state == State::Connected => {
                ReasonCode::PROTOCOL_ERROR
            }
            reason => reason,
        };
        self.violation_because(reason, ByteStr::from(err.to_string()));
    }

    /// Handles one packet from the client.
    ///
    /// While input waits (see [`ServerConnection::handle_bytes`]) the packet is held, and
    /// handled in order once the wait is over; more than 64 held packets close the connection
    /// with 0x93 Receive Maximum exceeded.
    pub fn handle_packet(&mut self, now: Instant, packet: Packet) {
        match self.state {
            State::Closed => {}
            State::AwaitingConnect { deadline } => match packet {
                Packet::Connect(connect) => self.handle_connect(connect, deadline),
                // The first packet must be CONNECT [MQTT-3.1.0-1].
                _ => self.violation(ReasonCode::PROTOCOL_ERROR),
            },
            // A client may send packets right after CONNECT, before CONNACK; they wait, a
            // bounded number of them, until the broker has decided.
            State::Authenticating { .. } => self.hold(packet),
            State::Challenging { .. } => self.handle_exchange(packet),
            State::Connected => {
                self.keepalive.on_packet_received(now);
                if self.input_waits() {
                    self.hold(packet);
                } else {
                    self.handle_connected(packet);
                }
            }
        }
    }

    /// Whether input waits for the broker's answers: too many requests are unanswered, or
    /// packets held earlier still wait their turn.
    fn input_waits(&self) -> bool {
        self.state == State::Connected
            && self
                .waiting
                .as_ref()
                .is_some_and(|w| w.requests.len() >= MAX_PENDING_REQUESTS || !w.held.is_empty())
    }

    /// Keeps a packet that arrived while input waits, a bounded number of them.
    fn hold(&mut self, packet: Packet) {
        let waiting = self.waiting.get_or_insert_with(Box::default);
        if waiting.held.len() >= MAX_HELD_PACKETS {
            self.violation(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED);
        } else {
            waiting.held.push_back(packet);
        }
    }

    /// Handles the held packets, in order, until input waits again.
    fn replay_held(&mut self) {
        while self.state == State::Connected {
            let Some(waiting) = self.waiting.as_mut() else {
                break;
            };
            if waiting.requests.len() >= MAX_PENDING_REQUESTS {
                break;
            }
            let Some(packet) = waiting.held.pop_front() else {
                break;
            };
            self.handle_connected(packet);
        }
        self.tidy_waiting();
    }

    /// Drops what [`Waiting`] holds once it holds nothing.
    fn tidy_waiting(&mut self) {
        if let Some(waiting) = self.waiting.as_mut() {
            if waiting.requests.is_empty() && waiting.held.is_empty() {
                self.waiting = None;
            } else if waiting.held.is_empty() && waiting.held.capacity() > 0 {
                waiting.held = PacketQueue::new();
            }
        }
    }

    /// Remembers a QoS 1 or 2 publish reported to the broker, for its acknowledgement. Room
    /// for a few is made at once: publishes come in runs, and the queue is freed when a run is
    /// answered.
    fn remember_publish(&mut self, id: PacketId, qos: QoS) {
        if self.unanswered.capacity() == 0 {
            self.unanswered.reserve(16);
        }
        self.unanswered.push_back((id, qos));
    }

    /// Remembers a request reported to the broker. Fewer than [`MAX_PENDING_REQUESTS`] are
    /// pending: input waits at that many, so no packet reaches here then.
    fn remember(&mut self, request: PendingRequest) {
        self.waiting
            .get_or_insert_with(Box::default)
            .requests
            .push(request);
    }

    fn handle_connect(&mut self, mut connect: Box<Connect>, deadline: Instant) {
        self.version = connect.protocol;
        let v5 = self.version.is_v5();
        // A refusal must fit the client's Maximum Packet Size too [MQTT-3.2.2-19].
        self.client_maximum_packet_size = connect
            .properties
            .maximum_packet_size
            .map_or(MAX_PACKET_SIZE, |m| m.get());
        let client_id = connect.client_id.clone();
        if client_id.is_empty() {
            // 3.1 requires an identifier; 3.1.1 allows none only with a clean session
            // [MQTT-3.1.3-8]; otherwise the broker assigns one [MQTT-3.1.3-6].
            if self.version == ProtocolVersion::V3_1 || (!v5 && !connect.clean_start) {
                return self.refuse(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
            }
        }
        if self.version == ProtocolVersion::V3_1 && client_id.len() > 23 {
            return self.refuse(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
        }
        if let Some(will) = &mut connect.will {
            // Checked once, here: the will is routed with the topic that knows it is valid.
            if !check_topic(&mut will.topic, &self.config.topic_limits) {
                return self.refuse(ReasonCode::TOPIC_NAME_INVALID);
            }
            if !response_topic_valid(will.properties.message.response_topic().as_ref()) {
                // [MQTT-3.3.2-14], for the will's Response Topic.
                return self.refuse(ReasonCode::PROTOCOL_ERROR);
            }
            if will.qos > self.config.maximum_qos {
                return self.refuse(ReasonCode::QOS_NOT_SUPPORTED);
            }
            if will.retain && !self.config.retain_available {
                return self.refuse(ReasonCode::RETAIN_NOT_SUPPORTED);
            }
        }
        if !v5 && self.config.max_keep_alive != 0 && connect.keep_alive > self.config.max_keep_alive
        {
            return self.refuse(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
        }
        match &connect.properties.authentication_method {
            // Enhanced authentication (§4.12): the broker decides on the method and leads the
            // exchange. Kept for the connection's life, so the method holds its own bytes.
            Some(method) => {
                self.auth = Some(Box::new(EnhancedAuth {
                    method: method.unshared(),
                    approved: false,
                    success_data: None,
                    reauth: Reauth::Idle,
                }));
            }
            // Authentication Data without an Authentication Method is a Protocol Error
            // (5.0 §3.1.2.11.10).
            None if connect.properties.authentication_data.is_some() => {
                return self.refuse(ReasonCode::PROTOCOL_ERROR);
            }
            None => {}
        }
        // Kept for the session's life, so it holds its own bytes, not the CONNECT's.
        let client_id = client_id.unshared();
        self.client_id = client_id.clone();
        self.state = State::Authenticating { deadline };
        // The copy kept for the decision goes without the CONNECT's user properties, which it
        // does not need and which decode to many times their wire size, and without its
        // Authentication Data, which the broker gets in the event.
        let user_properties = std::mem::take(&mut connect.properties.user_properties);
        let data = connect.properties.authentication_data.take();
        self.connect = Some(connect.clone());
        connect.properties.user_properties = user_properties;
        connect.properties.authentication_data = data;
        self.events
            .push_back(ServerEvent::Connect { connect, client_id });
    }

    /// Gives the client the identifier `client_id`, after a [`ServerEvent::Connect`] whose
    /// client sent none. The session is kept under it, and a 5.0 client learns it from the
    /// CONNACK's Assigned Client Identifier [MQTT-3.2.2-16].
    ///
    /// The identifier must be unique among the server's sessions, and must not be guessable:
    /// a client that can predict the identifier another client will be assigned can take over
    /// that client's session. Make it from a cryptographically secure random source (this
    /// crate reads no randomness itself). Ignored unless the connection waits for the
    /// decision on a CONNECT without an identifier; without one, [`ServerConnection::accept`]
    /// refuses the client.
    pub fn assign_client_id(&mut self, client_id: ByteStr) {
        let waiting = matches!(self.state, State::Authenticating { .. })
            && self
                .connect
                .as_ref()
                .is_some_and(|c| c.client_id.is_empty());
        if waiting {
            self.client_id = client_id;
        }
    }

    /// Accepts the connection after [`ServerEvent::Connect`]. `existing` is the client's stored
    /// session, if the broker has one; it is resumed unless the client asked for a clean start.
    ///
    /// A client that sent no identifier needs one assigned first
    /// ([`ServerConnection::assign_client_id`]); without it the client is refused with
    /// 0x85 Client Identifier not valid (3.x: 2 Identifier rejected), as a server that does not
    /// assign identifiers may (5.0 [MQTT-3.1.3-8]).
    ///
    /// A CONNECT that named an Authentication Method is accepted only after
    /// [`ServerConnection::set_auth_success_data`]; without it the client is refused with
    /// 0x8C Bad authentication method [MQTT-4.12.0-1]. Ignored unless the connection waits
    /// for the broker's decision before CONNACK.
    pub fn accept(&mut self, now: Instant, existing: Option<Session>) {
        if !matches!(self.state, State::Authenticating { .. }) {
            return;
        }
        let Some(connect) = self.connect.take() else {
            return;
        };
        if self.client_id.is_empty() {
            return self.refuse(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
        }
        if self.auth.as_ref().is_some_and(|a| !a.approved) {
            // The broker did not take up the method: it is not one it knows.
            return self.refuse(ReasonCode::BAD_AUTHENTICATION_METHOD);
        }
        let v5 = self.version.is_v5();
        let resumed = existing.filter(|_| !connect.clean_start);
        let session_present = resumed.is_some();
        let mut session = resumed
            .unwrap_or_else(|| Session::new(self.client_id.clone(), self.config.queue_limits));
        // 3.x: a persistent session lasts until the client cleans it; 5.0: as asked, capped.
        session.expiry_interval = if v5 {
            connect
                .properties
                .session_expiry_interval
                .unwrap_or(0)
                .min(self.config.max_session_expiry)
        } else if connect.clean_start {
            0
        } else {
            u32::MAX
        };
        let mut props = ConnAckProperties::default();
        let mut keep_alive = connect.keep_alive;
        if v5 {
            if connect.client_id.is_empty() {
                props.assigned_client_identifier = Some(self.client_id.clone());
            }
            if self.config.max_keep_alive != 0 && keep_alive > self.config.max_keep_alive {
                keep_alive = self.config.max_keep_alive;
                props.server_keep_alive = Some(keep_alive);
            }
            let requested = connect.properties.session_expiry_interval.unwrap_or(0);
            if session.expiry_interval != requested {
                props.session_expiry_interval = Some(session.expiry_interval);
            }
            props.receive_maximum = NonZeroU16::new(self.config.receive_maximum);
            props.maximum_packet_size = std::num::NonZeroU32::new(self.config.maximum_packet_size);
            props.topic_alias_maximum = Some(self.config.topic_alias_maximum);
            if self.config.maximum_qos != QoS::ExactlyOnce {
                props.maximum_qos = Some(self.config.maximum_qos);
            }
            if !self.config.retain_available {
                props.retain_available = Some(false);
            }
            if !self.config.wildcard_subscriptions {
                props.wildcard_subscription_available = Some(false);
            }
            if !self.config.subscription_identifiers {
                props.subscription_identifiers_available = Some(false);
            }
            if !self.config.shared_subscriptions {
                props.shared_subscription_available = Some(false);
            }
            if let Some(auth) = self.auth.as_mut() {
                // A successful CONNACK names the CONNECT's method [MQTT-4.12.0-5], with the
                // server's final data; only the method is kept from here on.
                props.authentication_method = Some(auth.method.clone());
                props.authentication_data = auth.success_data.take();
            }
        }
        self.client_receive_maximum = connect
            .properties
            .receive_maximum
            .map_or(u16::MAX, |m| m.get());
        self.client_maximum_packet_size = connect
            .properties
            .maximum_packet_size
            .map_or(MAX_PACKET_SIZE, |m| m.get());
        // Aliases last for one network connection [MQTT-3.3.2-7].
        self.client_topic_alias_maximum = connect.properties.topic_alias_maximum.unwrap_or(0);
        self.aliases = None;
        self.keepalive = ServerKeepAlive::new(Duration::from_secs(u64::from(keep_alive)), now);
        let connack = Packet::ConnAck(Box::new(ConnAck {
            // 3.1 has no Session Present flag; a CONNACK with it set cannot be encoded.
            session_present: session_present && self.version != ProtocolVersion::V3_1,
            reason_code: ReasonCode::SUCCESS,
            properties: props,
        }));
        if self.auth.is_some() && !self.fits(&connack) {
            // The server's final data does not fit the client's Maximum Packet Size
            // [MQTT-3.1.2-24], and the method cannot do without it.
            return self.refuse(ReasonCode::UNSPECIFIED_ERROR);
        }
        self.transmit.push_back(connack);
        // Resume: resend what was in flight, in order, PUBLISH with DUP [MQTT-4.4.0-1]. The
        // client may now accept smaller packets than when a PUBLISH was first sent: one that
        // no longer fits is dropped as if delivered [MQTT-3.1.2-25], or the client would
        // refuse it with 0x95 on every reconnect. It may also accept fewer at a time: what
        // is beyond its Receive Maximum waits in `resend` [MQTT-3.3.4-9].
        let window = self.window();
        let mut resent = 0;
        let mut too_large = Vec::new();
        for (id, state) in session.outgoing.iter() {
            let packet = match state {
                OutState::Published(d) => {
                    Packet::Publish(publish_for(self.version, d, now, Some(id), true))
                }
                OutState::Released(_) => Packet::PubRel(PubAck::new(id)),
            };
            if !self.fits(&packet) {
                too_large.push(id);
            } else if resent < window && !self.resending() {
                self.transmit.push_back(packet);
                resent += 1;
            } else {
                self.resumed
                    .get_or_insert_with(Box::default)
                    .resend
                    .push_back(id);
            }
        }
        for id in too_large {
            if let Some(OutState::Published(d)) = session.outgoing.remove(id) {
                session.finished(&d);
            }
            session.stats.dropped_too_large += 1;
        }
        if !session.incoming_qos2.is_empty() {
            self.resumed.get_or_insert_with(Box::default).carried_qos2 =
                session.incoming_qos2.clone();
        }
        self.session = Some(session);
        let Connect {
            will,
            properties,
            bridge,
            ..
        } = *connect;
        self.bridge = bridge;
        // Kept for the connection's life, and a delayed one while the session is offline: its
        // own bytes, not the CONNECT's (which may carry a large password or properties).
        self.will = will.map(|will| Box::new(unshared_will(will)));
        self.problem_information = properties.request_problem_information != Some(false);
        self.connect_expiry_was_zero = properties.session_expiry_interval.unwrap_or(0) == 0;
        self.state = State::Connected;
        self.replay_held();
    }

    /// Refuses the connection after [`ServerEvent::Connect`], or at any step of an enhanced
    /// authentication exchange [MQTT-4.12.0-4], with a CONNACK reason code of 0x80 or above
    /// (mapped to the nearest 3.x return code for 3.x clients); a code below 0x80 is sent as
    /// 0x80 Unspecified error. Ignored once the connection is accepted or closed.
    pub fn reject(&mut self, reason: ReasonCode) {
        if matches!(
            self.state,
            State::Authenticating { .. } | State::Challenging { .. }
        ) {
            self.refuse(reason);
        }
    }

    /// Queues a CONNACK refusal and closes. 5.0 clients also get a Reason String.
    fn refuse(&mut self, reason: ReasonCode) {
        self.refuse_as(reason, ServerCloseReason::Refused(reason));
    }

    /// [`Self::refuse`], closing for `close`.
    fn refuse_as(&mut self, reason: ReasonCode, close: ServerCloseReason) {
        let mut connack = ConnAck::default();
        if self.version.is_v5() {
            connack.reason_code = reason;
            connack.properties.reason_string = Some(explain(reason));
            let valid = Packet::ConnAck(Box::new(connack.clone()))
                .encoded_len(self.version)
                .is_ok();
            // A refusal is never a success, which would accept the client [MQTT-3.2.2-7].
            if !valid || reason.is_success() {
                // Not a CONNACK reason code [MQTT-3.2.2-8] (say, a DISCONNECT-only code from
                // a hook).
                connack.reason_code = ReasonCode::UNSPECIFIED_ERROR;
                connack.properties.reason_string = Some(explain(reason));
            }
            if !self.fits(&Packet::ConnAck(Box::new(connack.clone()))) {
                // [MQTT-3.2.2-19]
                connack.properties.reason_string = None;
            }
        } else {
            connack.reason_code = v3_connack_code(reason);
        }
        self.transmit.clear();
        self.transmit.push_back(Packet::ConnAck(Box::new(connack)));
        self.close(close, None);
    }

    /// The client broke the protocol: DISCONNECT with `reason` (5.0), then close. The will is
    /// published [MQTT-3.1.2-8].
    fn violation(&mut self, reason: ReasonCode) {
        self.violation_because(reason, explain(reason));
    }

    /// [`Self::violation`] with the Reason String to send.
    fn violation_because(&mut self, reason: ReasonCode, why: ByteStr) {
        if self.version.is_v5() && self.auth.is_some() && self.in_exchange() {
            // Before CONNACK the server sends no DISCONNECT [MQTT-3.14.0-1]; an enhanced
            // authentication exchange is refused with a CONNACK [MQTT-4.12.0-4].
            return self.refuse_as(reason, ServerCloseReason::ProtocolViolation(reason));
        }
        self.transmit.clear();
        if self.version.is_v5() && self.state == State::Connected {
            let packet = self.disconnect_packet(reason, Some(why));
            self.transmit.push_back(packet);
        }
        let will = self.will();
        self.close(ServerCloseReason::ProtocolViolation(reason), will);
    }

    /// A DISCONNECT, with a Reason String unless it would exceed the client's Maximum Packet
    /// Size (5.0 §3.14.2.2.3).
    fn disconnect_packet(&self, reason: ReasonCode, why: Option<ByteStr>) -> Packet {
        let mut d = Disconnect {
            reason_code: reason,
            ..Disconnect::default()
        };
        d.properties.reason_string =
            why.or_else(|| (!reason.is_success()).then(|| explain(reason)));
        let packet = Packet::Disconnect(d);
        if self.fits(&packet) {
            packet
        } else {
            Packet::Disconnect(Disconnect {
                reason_code: reason,
                ..Disconnect::default()
            })
        }
    }

    fn fits(&self, packet: &Packet) -> bool {
        packet
            .encoded_len(self.version)
            .is_ok_and(|len| len <= self.client_maximum_packet_size as usize)
    }

    /// Whether the client lets us add Reason Strings to packets other than CONNACK and
    /// DISCONNECT: not if it set Request Problem Information to 0 [MQTT-3.1.2-29].
    fn problem_information_allowed(&self) -> bool {
        self.version.is_v5()
            && match &self.connect {
                Some(c) => c.properties.request_problem_information != Some(false),
                None => self.problem_information,
            }
    }

    fn will(&mut self) -> Option<(Will, u32)> {
        if self.state != State::Connected {
            return None;
        }
        let will = *self.will.take()?;
        let delay = will.properties.will_delay_interval.unwrap_or(0);
        Some((will, delay))
    }

    fn close(&mut self, reason: ServerCloseReason, will: Option<(Will, u32)>) {
        if self.state == State::Closed {
            return;
        }
        self.state = State::Closed;
        self.events.push_back(ServerEvent::Closed { reason, will });
    }

    /// Closes the connection from the server side, for example `SERVER_SHUTTING_DOWN` (0x8B);
    /// 5.0 clients are told the reason. The will is published.
    pub fn disconnect(&mut self, reason: ReasonCode) {
        if self.version.is_v5() && self.state == State::Connected {
            let packet = self.disconnect_packet(reason, None);
            self.transmit.push_back(packet);
        }
        let will = self.will();
        self.close(ServerCloseReason::DisconnectedByServer(reason), will);
    }

    /// A new connection takes over this client's session [MQTT-3.1.4-3]: 5.0 clients get
    /// DISCONNECT 0x8E, and the session can then be taken with
    /// [`ServerConnection::take_session`].
    pub fn take_over(&mut self) {
        if self.version.is_v5() && self.state == State::Connected {
            self.transmit
                .push_back(self.disconnect_packet(ReasonCode::SESSION_TAKEN_OVER, None));
        }
        let will = self.will();
        self.close(ServerCloseReason::TakenOver, will);
    }

    /// Reports that the transport closed. The will is published.
    pub fn connection_lost(&mut self) {
        self.transmit.clear();
        let will = self.will();
        self.close(ServerCloseReason::ConnectionLost, will);
    }

    /// Whether the connection is between CONNECT and CONNACK.
    fn in_exchange(&self) -> bool {
        matches!(
            self.state,
            State::Authenticating { .. } | State::Challenging { .. }
        )
    }

    /// The Authentication Method of the CONNECT, when it named one: every AUTH of the
    /// connection, and its CONNACK, carry it [MQTT-4.12.0-5].
    pub fn auth_method(&self) -> Option<&ByteStr> {
        self.auth.as_ref().map(|a| &a.method)
    }

    /// Answers the client's CONNECT or AUTH in an enhanced authentication exchange, or its
    /// re-authentication, with AUTH 0x18 Continue authentication carrying the method and
    /// `data` [MQTT-4.12.0-2] [MQTT-4.12.0-5]. The client's answer comes as
    /// [`ServerEvent::Auth`].
    ///
    /// Before CONNACK, the exchange must end within [`ServerConfig::connect_timeout`] of the
    /// connection's start. An AUTH larger than the client's Maximum Packet Size cannot be
    /// sent: the client is refused (CONNACK 0x80 Unspecified error), or, once connected,
    /// disconnected with 0x80.
    ///
    /// Ignored unless the broker is to answer: after [`ServerEvent::Connect`] with an
    /// Authentication Method, or after [`ServerEvent::Auth`].
    pub fn auth_continue(&mut self, data: Option<Bytes>) {
        let Some(auth) = self.auth.as_mut() else {
            return;
        };
        match self.state {
            State::Authenticating { deadline } => {
                let auth_packet = auth_packet(
                    ReasonCode::CONTINUE_AUTHENTICATION,
                    auth.method.clone(),
                    data,
                );
                if !self.fits(&auth_packet) {
                    return self.refuse(ReasonCode::UNSPECIFIED_ERROR);
                }
                self.transmit.push_back(auth_packet);
                self.state = State::Challenging { deadline };
                // Packets that arrived while the broker decided are the client's answer, or
                // break the exchange.
                while matches!(self.state, State::Challenging { .. }) {
                    let Some(packet) = self.waiting.as_mut().and_then(|w| w.held.pop_front())
                    else {
                        break;
                    };
                    self.handle_exchange(packet);
                }
                self.tidy_waiting();
            }
            State::Connected if auth.reauth == Reauth::BrokerTurn => {
                let auth_packet = auth_packet(
                    ReasonCode::CONTINUE_AUTHENTICATION,
                    auth.method.clone(),
                    data,
                );
                auth.reauth = Reauth::ClientTurn;
                if !self.fits(&auth_packet) {
                    return self.disconnect(ReasonCode::UNSPECIFIED_ERROR);
                }
                self.transmit.push_back(auth_packet);
            }
            _ => {}
        }
    }

    /// Sets the Authentication Data for the CONNACK that [`ServerConnection::accept`] sends to
    /// a client whose CONNECT named an Authentication Method, and lets `accept` accept it: the
    /// broker has authenticated the client by that method. The CONNACK carries the method
    /// and `data` [MQTT-4.12.0-5].
    ///
    /// Ignored unless the connection waits for the broker's decision on a CONNECT that named
    /// a method, or on the client's AUTH before CONNACK: a client that named none gets no
    /// method in CONNACK [MQTT-4.12.0-6].
    pub fn set_auth_success_data(&mut self, data: Option<Bytes>) {
        if let (State::Authenticating { .. }, Some(auth)) = (self.state, self.auth.as_mut()) {
            auth.approved = true;
            auth.success_data = data;
        }
    }

    /// Ends the client's re-authentication with success: AUTH 0x00 with the method and
    /// `data`, the server's final data [MQTT-4.12.0-5]. An AUTH larger than the client's
    /// Maximum Packet Size cannot be sent: the client is disconnected with 0x80 Unspecified
    /// error.
    ///
    /// Ignored unless the connection waits for the broker's answer to a
    /// [`ServerEvent::Auth`] of a re-authentication.
    pub fn reauth_success(&mut self, data: Option<Bytes>) {
        let Some(auth) = self.auth.as_mut() else {
            return;
        };
        if self.state != State::Connected || auth.reauth != Reauth::BrokerTurn {
            return;
        }
        auth.reauth = Reauth::Idle;
        let auth_packet = auth_packet(ReasonCode::SUCCESS, auth.method.clone(), data);
        if !self.fits(&auth_packet) {
            return self.disconnect(ReasonCode::UNSPECIFIED_ERROR);
        }
        self.transmit.push_back(auth_packet);
    }

    /// Handles a packet while the server waits for the client's AUTH before CONNACK: the
    /// client may send only AUTH, or DISCONNECT to give up [MQTT-3.1.2-30].
    fn handle_exchange(&mut self, packet: Packet) {
        match packet {
            Packet::Auth(auth) => {
                // Before CONNACK the client only continues the exchange: 0x19 starts a
                // re-authentication, which needs a CONNACK first (§4.12.1), and 0x00 is the
                // server's (§3.15.2.1).
                if auth.reason_code != ReasonCode::CONTINUE_AUTHENTICATION {
                    return self.violation(ReasonCode::PROTOCOL_ERROR);
                }
                let Some(data) = self.check_auth(*auth) else {
                    return;
                };
                if let State::Challenging { deadline } = self.state {
                    self.state = State::Authenticating { deadline };
                }
                self.events.push_back(ServerEvent::Auth {
                    reason: ReasonCode::CONTINUE_AUTHENTICATION,
                    data,
                });
            }
            Packet::Disconnect(d) => {
                self.transmit.clear();
                self.close(ServerCloseReason::DisconnectedByClient(d.reason_code), None);
            }
            _ => self.violation(ReasonCode::PROTOCOL_ERROR),
        }
    }

    /// Checks a client's AUTH against the CONNECT's method: an AUTH without one, or with
    /// another, is a Protocol Error (§3.15, §3.15.2.2.2), and so is any AUTH from a client
    /// that named none [MQTT-4.12.0-7]. Returns its Authentication Data, or `None` after
    /// closing the connection.
    fn check_auth(&mut self, auth: midge_codec::Auth) -> Option<Option<Bytes>> {
        let same = match (&self.auth, &auth.properties.authentication_method) {
            (Some(ours), Some(theirs)) => ours.method == *theirs,
            _ => false,
        };
        if !same {
            self.violation(ReasonCode::PROTOCOL_ERROR);
            return None;
        }
        Some(auth.properties.authentication_data)
    }

    /// A client's AUTH once connected: a re-authentication (§4.12.1).
    fn handle_reauth(&mut self, auth: midge_codec::Auth) {
        let reason = auth.reason_code;
        let Some(data) = self.check_auth(auth) else {
            return;
        };
        let Some(state) = self.auth.as_mut() else {
            return;
        };
        let expected = match state.reauth {
            // It starts with 0x19 [MQTT-4.12.1-1]; a second 0x19 while one runs, or an answer
            // that was not asked for, is out of sequence.
            Reauth::Idle => ReasonCode::RE_AUTHENTICATE,
            Reauth::ClientTurn => ReasonCode::CONTINUE_AUTHENTICATION,
            Reauth::BrokerTurn => return self.violation(ReasonCode::PROTOCOL_ERROR),
        };
        if reason != expected {
            return self.violation(ReasonCode::PROTOCOL_ERROR);
        }
        state.reauth = Reauth::BrokerTurn;
        self.events.push_back(ServerEvent::Auth { reason, data });
    }

    fn handle_connected(&mut self, packet: Packet) {
        let v5 = self.version.is_v5();
        match packet {
            Packet::Publish(publish) => self.handle_publish(publish),
            Packet::PubAck(ack) => {
                if let Some(OutState::Published(d)) = self.outgoing().get(ack.packet_id) {
                    if d.qos == QoS::AtLeastOnce {
                        if let Some(OutState::Published(d)) = self.outgoing().remove(ack.packet_id)
                        {
                            self.session_mut().finished(&d);
                        }
                        self.no_resend(ack.packet_id);
                    }
                }
            }
            Packet::PubRec(ack) => match self.outgoing().get_mut(ack.packet_id) {
                Some(state @ OutState::Published(_)) => {
                    let tag = match state {
                        OutState::Published(d) => d.tag,
                        OutState::Released(tag) => *tag,
                    };
                    if ack.reason_code.is_success() {
                        *state = OutState::Released(tag);
                        self.transmit
                            .push_back(Packet::PubRel(PubAck::new(ack.packet_id)));
                        if tag != 0 {
                            let packet_id = ack.packet_id;
                            self.session_mut()
                                .record(SessionChange::Released { tag, packet_id });
                        }
                    } else {
                        self.outgoing().remove(ack.packet_id);
                        if tag != 0 {
                            self.session_mut().record(SessionChange::Finished { tag });
                        }
                    }
                    self.no_resend(ack.packet_id);
                }
                Some(OutState::Released(_)) => {
                    self.transmit
                        .push_back(Packet::PubRel(PubAck::new(ack.packet_id)));
                    self.no_resend(ack.packet_id);
                }
                None => {
                    let rel = qos2_answer(ack.packet_id, false, v5);
                    self.transmit.push_back(Packet::PubRel(rel));
                }
            },
            Packet::PubComp(ack) => {
                if let Some(OutState::Released(tag)) = self.outgoing().get(ack.packet_id) {
                    let tag = *tag;
                    self.outgoing().remove(ack.packet_id);
                    self.no_resend(ack.packet_id);
                    if tag != 0 {
                        self.session_mut().record(SessionChange::Finished { tag });
                    }
                }
            }
            Packet::PubRel(rel) => {
                self.take_carried_qos2(rel.packet_id);
                let known = self.session_mut().incoming_qos2.remove(&rel.packet_id);
                if known {
                    let packet_id = rel.packet_id;
                    self.session_mut()
                        .record(SessionChange::IncomingReleased { packet_id });
                }
                let comp = qos2_answer(rel.packet_id, known, v5);
                self.transmit.push_back(Packet::PubComp(comp));
            }
            Packet::Subscribe(subscribe) => self.handle_subscribe(subscribe),
            Packet::Unsubscribe(Unsubscribe {
                packet_id, filters, ..
            }) => {
                self.remember(PendingRequest::Unsubscribe {
                    packet_id,
                    filters: filters.clone(),
                });
                self.events
                    .push_back(ServerEvent::Unsubscribe { packet_id, filters });
            }
            Packet::PingReq => self.transmit.push_back(Packet::PingResp),
            Packet::Disconnect(d) => {
                let requested = d.properties.session_expiry_interval;
                let was_zero = self.connect_expiry_was_zero;
                if requested.is_some_and(|s| s != 0) && was_zero {
                    // A session that ends with its connection cannot be extended at DISCONNECT
                    // [MQTT-3.14.2-2].
                    return self.violation(ReasonCode::PROTOCOL_ERROR);
                }
                if let Some(expiry) = requested {
                    self.session_mut().expiry_interval = expiry.min(self.config.max_session_expiry);
                }
                // The will is published only for DISCONNECT 0x04 [MQTT-3.14.4-3].
                let will = if d.reason_code == ReasonCode::DISCONNECT_WITH_WILL_MESSAGE {
                    self.will()
                } else {
                    None
                };
                self.transmit.clear();
                self.close(ServerCloseReason::DisconnectedByClient(d.reason_code), will);
            }
            Packet::Auth(auth) => self.handle_reauth(*auth),
            // A second CONNECT [MQTT-3.1.0-2] and packets only a server sends are protocol
            // errors.
            Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp => self.violation(ReasonCode::PROTOCOL_ERROR),
        }
    }

    /// The client named `id`, a QoS 2 identifier carried over from before this connection:
    /// it counts against the Receive Maximum from now on. Whether it was carried over.
    fn take_carried_qos2(&mut self, id: PacketId) -> bool {
        let Some(resumed) = self.resumed.as_mut() else {
            return false;
        };
        let was = resumed.carried_qos2.remove(&id);
        self.tidy_resumed();
        was
    }

    /// Whether in-flight packets of a resumed session wait to be resent.
    fn resending(&self) -> bool {
        self.resumed.as_ref().is_some_and(|r| !r.resend.is_empty())
    }

    /// Frees what a resumed session carried once nothing is left of it.
    fn tidy_resumed(&mut self) {
        if self
            .resumed
            .as_ref()
            .is_some_and(|r| r.resend.is_empty() && r.carried_qos2.is_empty())
        {
            self.resumed = None;
        }
    }

    fn session_mut(&mut self) -> &mut Session {
        // Connected implies a session; a fresh one keeps this total without a panic path.
        let limits = self.config.queue_limits;
        let client_id = self.client_id.clone();
        self.session
            .get_or_insert_with(|| Session::new(client_id, limits))
    }

    /// An in-flight packet still waiting in `resend` was answered before it was resent: it
    /// is no longer to be resent (or was just answered with a PUBREL).
    fn no_resend(&mut self, id: PacketId) {
        if let Some(resumed) = self.resumed.as_mut() {
            resumed.resend.retain(|r| *r != id);
            self.tidy_resumed();
        }
    }

    /// Most QoS 1 and 2 deliveries in flight on this connection: the client's Receive
    /// Maximum [MQTT-3.3.4-9], within the server's own limit.
    fn window(&self) -> usize {
        usize::from(self.client_receive_maximum.min(self.config.max_inflight))
    }

    fn outgoing(&mut self) -> &mut Inflight<OutState> {
        &mut self.session_mut().outgoing
    }

    fn handle_publish(&mut self, publish: Publish) {
        if publish.properties.has_subscription_identifiers() {
            // Only the server sends Subscription Identifiers [MQTT-3.3.4-6].
            return self.violation(ReasonCode::PROTOCOL_ERROR);
        }
        if publish.qos > self.config.maximum_qos {
            return self.violation(ReasonCode::QOS_NOT_SUPPORTED);
        }
        if publish.retain && !self.config.retain_available {
            return self.violation(ReasonCode::RETAIN_NOT_SUPPORTED);
        }
        let resolved = match publish.properties.topic_alias {
            None => Ok(publish.topic.clone()),
            Some(_) => Aliases::get(
                &mut self.aliases,
                self.config.topic_alias_maximum,
                self.client_topic_alias_maximum,
            )
            .inbound
            .resolve(&publish.topic, publish.properties.topic_alias),
        };
        let mut topic = match resolved {
            Ok(topic) => topic,
            Err(reason) => return self.violation(reason),
        };
        if !check_topic(&mut topic, &self.config.topic_limits) {
            return self.violation(ReasonCode::TOPIC_NAME_INVALID);
        }
        if !response_topic_valid(publish.properties.response_topic().as_ref()) {
            // A Response Topic is a topic name: no wildcards [MQTT-3.3.2-14].
            return self.violation(ReasonCode::PROTOCOL_ERROR);
        }
        let packet_id = publish.packet_id;
        // Only 5.0 clients learn our Receive Maximum; for 3.x the packet identifier space is
        // the bound.
        let receive_maximum = if self.version.is_v5() {
            usize::from(self.config.receive_maximum)
        } else {
            usize::from(u16::MAX)
        };
        // QoS 1 publishes until their PUBACK and QoS 2 ones until their PUBCOMP count against
        // it; a client that sends more breaks its side of the limit [MQTT-3.3.4-7], and is
        // disconnected with 0x93 (5.0 §3.3.4). The check comes before anything is kept, and
        // also bounds what waits for the broker's answer: a client that releases a QoS 2
        // message (PUBREL) before its PUBREC does not make room by that.
        let carried = self.resumed.as_ref().map_or(0, |r| r.carried_qos2.len());
        let qos2 = self
            .session_mut()
            .incoming_qos2
            .len()
            .saturating_sub(carried);
        let in_flow = self.unanswered_qos1 as usize + qos2;
        let unanswered = in_flow.max(self.unanswered.len());
        match (publish.qos, packet_id) {
            (QoS::AtLeastOnce, Some(id)) => {
                if unanswered >= receive_maximum {
                    return self.violation(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED);
                }
                self.unanswered_qos1 += 1;
                self.remember_publish(id, QoS::AtLeastOnce);
            }
            (QoS::ExactlyOnce, Some(id)) => {
                // A message from before this connection that the client no longer holds: it
                // sends a new message with the identifier, with DUP 0 [MQTT-4.3.3-2], as it
                // does only once it has completed the old one [MQTT-2.2.1-3]. A resend of the
                // old one has DUP 1 [MQTT-3.3.1-1]. Not so under 3.1, whose CONNACK does not
                // say that the session was resumed: the client may send a message again as a
                // new one.
                let from_before = self.take_carried_qos2(id);
                let stale = from_before && !publish.dup && self.version != ProtocolVersion::V3_1;
                if stale && self.session_mut().incoming_qos2.remove(&id) {
                    self.session_mut()
                        .record(SessionChange::IncomingReleased { packet_id: id });
                }
                if self.session_mut().incoming_qos2.contains(&id) {
                    // A retransmission of a message already routed: route nothing, and
                    // acknowledge again unless the broker's answer is still to come
                    // (§4.3.3).
                    let waiting = self.unanswered.contains(&(id, QoS::ExactlyOnce));
                    if !waiting {
                        self.transmit.push_back(Packet::PubRec(PubAck::new(id)));
                    }
                    return;
                }
                if unanswered >= receive_maximum {
                    return self.violation(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED);
                }
                // Not journaled here: the broker records the identifier together with the
                // message's routing (see `SessionChange::IncomingQos2`).
                self.session_mut().incoming_qos2.insert(id);
                self.remember_publish(id, QoS::ExactlyOnce);
            }
            _ => {}
        }
        let message = Message::from_publish(publish, topic);
        self.events
            .push_back(ServerEvent::Publish { message, packet_id });
    }

    /// Forgets a QoS 1 or 2 publish reported by [`ServerEvent::Publish`] without answering
    /// it, for a broker that closes the connection instead (a 3.x client cannot be told that
    /// its message was refused): a QoS 2 identifier is freed, so that the client's resend of
    /// the message on a resumed session is a new message rather than a duplicate of one that
    /// was never routed [MQTT-4.3.3-9].
    pub fn forget_publish(&mut self, packet_id: PacketId) {
        let Some(at) = self.unanswered.iter().position(|(id, _)| *id == packet_id) else {
            return;
        };
        let Some((_, qos)) = self.unanswered.remove(at) else {
            return;
        };
        match qos {
            QoS::AtLeastOnce => self.unanswered_qos1 = self.unanswered_qos1.saturating_sub(1),
            QoS::ExactlyOnce => {
                if let Some(session) = self.session.as_mut() {
                    if session.incoming_qos2.remove(&packet_id) {
                        session.record(SessionChange::IncomingReleased { packet_id });
                    }
                }
            }
            QoS::AtMostOnce => {}
        }
    }

    /// Acknowledges a QoS 1 or 2 publish reported by [`ServerEvent::Publish`] with the outcome
    /// of routing it: `SUCCESS`, `NO_MATCHING_SUBSCRIBERS`, `NOT_AUTHORIZED`, …, in a PUBACK
    /// or a PUBREC as its QoS requires, which the connection remembers. For 3.x a failure
    /// cannot be expressed and is acknowledged as success, as the protocol requires; a code
    /// that PUBACK and PUBREC cannot carry is sent as 0x80 Unspecified error (5.0 §3.4.2.1).
    ///
    /// `packet_id` answers the oldest unacknowledged publish with that identifier. An
    /// identifier with no publish waiting for an answer (a QoS 0 one, one answered already) is
    /// ignored. A refused QoS 2 publish is forgotten even after the connection has closed, so
    /// that the client's resend of it on a resumed session is routed again.
    pub fn acknowledge(&mut self, packet_id: PacketId, reason: ReasonCode) {
        // Usually the oldest: publishes are mostly answered in the order they came.
        let answered = match self.unanswered.front() {
            Some(&(id, _)) if id == packet_id => self.unanswered.pop_front(),
            _ => match self.unanswered.iter().position(|(id, _)| *id == packet_id) {
                Some(at) => self.unanswered.remove(at),
                None => None,
            },
        };
        let Some((_, qos)) = answered else {
            return;
        };
        if self.unanswered.is_empty() && self.unanswered.capacity() > 0 {
            self.unanswered = VecDeque::new();
        }
        let v5 = self.version.is_v5();
        let reason = if !v5 {
            ReasonCode::SUCCESS
        } else if reason.is_allowed_in(PacketType::PubAck) {
            reason
        } else {
            ReasonCode::UNSPECIFIED_ERROR
        };
        match qos {
            QoS::AtLeastOnce => self.unanswered_qos1 = self.unanswered_qos1.saturating_sub(1),
            QoS::ExactlyOnce if !reason.is_success() && v5 => {
                // A refused QoS 2 message ends its flow: the identifier is free again
                // [MQTT-4.3.3-9]. Also when the connection has closed and the PUBREC cannot be
                // sent: the client then resends the PUBLISH on resume, and it must be routed
                // again rather than get a PUBREC of success for a message that was dropped.
                if let Some(session) = self.session.as_mut() {
                    if session.incoming_qos2.remove(&packet_id) {
                        session.record(SessionChange::IncomingReleased { packet_id });
                    }
                }
            }
            _ => {}
        }
        if self.state != State::Connected {
            return;
        }
        let mut ack = PubAck::new(packet_id);
        ack.reason_code = reason;
        // 5.0 only, and not if the client asked for no problem information.
        if !reason.is_success() && self.problem_information_allowed() {
            ack.properties.reason_string = Some(explain(reason));
            if !self.fits(&Packet::PubAck(ack.clone())) {
                ack.properties.reason_string = None;
            }
        }
        self.transmit.push_back(match qos {
            QoS::ExactlyOnce => Packet::PubRec(ack),
            _ => Packet::PubAck(ack),
        });
    }

    fn handle_subscribe(&mut self, subscribe: Subscribe) {
        let Subscribe {
            packet_id,
            filters,
            properties,
        } = subscribe;
        let subscription_id = properties.subscription_identifier;
        if subscription_id.is_some() && !self.config.subscription_identifiers {
            // 5.0 §3.8.2.1.2: a server without them treats one as a protocol error.
            return self.violation(ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED);
        }
        // The session's subscriptions, and those that answers still to come may add: a quota
        // checked against the session alone could be passed by pipelined SUBSCRIBEs.
        let pending: usize = self
            .waiting
            .iter()
            .flat_map(|w| &w.requests)
            .map(|r| match r {
                PendingRequest::Subscribe { requests, .. } => {
                    requests.iter().filter(|r| r.verdict.is_ok()).count()
                }
                PendingRequest::Unsubscribe { .. } => 0,
            })
            .sum();
        let subscribed = self.session_mut().subscriptions.len() + pending;
        let mut requests = Vec::with_capacity(filters.len());
        for (i, (filter, options)) in filters.into_iter().enumerate() {
            let mut shared = false;
            let verdict = match TopicFilter::with_limits(filter.as_str(), &self.config.topic_limits)
            {
                Err(_) => Err(ReasonCode::TOPIC_FILTER_INVALID),
                Ok(parsed) => {
                    shared = parsed.share_name().is_some();
                    if parsed.share_name().is_some() && options.no_local {
                        // No Local on a shared subscription [MQTT-3.8.3-4].
                        return self.violation(ReasonCode::PROTOCOL_ERROR);
                    }
                    if parsed.share_name().is_some() && !self.config.shared_subscriptions {
                        Err(ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED)
                    } else if parsed.pattern().contains(['+', '#'])
                        && !self.config.wildcard_subscriptions
                    {
                        Err(ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED)
                    } else if subscribed + i >= self.config.max_subscriptions
                        && !self.session_mut().subscriptions.contains_key(&filter)
                    {
                        Err(ReasonCode::QUOTA_EXCEEDED)
                    } else {
                        Ok(())
                    }
                }
            };
            let mut options = options;
            if self.bridge {
                // A 3.x bridge gets none of its own messages back, and the RETAIN flag as
                // published: what 5.0 asks for with these options. A shared subscription
                // cannot have No Local [MQTT-3.8.3-4].
                options.no_local = !shared;
                options.retain_as_published = true;
            }
            // The granted QoS is at most the server's maximum.
            options.qos = options.qos.min(self.config.maximum_qos);
            requests.push(SubscriptionRequest::new(filter, options, verdict));
        }
        self.remember(PendingRequest::Subscribe {
            packet_id,
            subscription_id,
            requests: requests.clone(),
        });
        self.events.push_back(ServerEvent::Subscribe {
            packet_id,
            requests,
            subscription_id,
        });
    }

    /// Takes the pending request that `matches` accepts, oldest first.
    fn take_request(
        &mut self,
        matches: impl Fn(&PendingRequest) -> bool,
    ) -> Option<PendingRequest> {
        let waiting = self.waiting.as_mut()?;
        let at = waiting.requests.iter().position(matches)?;
        let request = waiting.requests.remove(at);
        self.tidy_waiting();
        Some(request)
    }

    /// Answers the [`ServerEvent::Subscribe`] with this packet identifier: `codes` holds one
    /// code per request, in order — the granted QoS (0x00, 0x01, 0x02) or a failure — and the
    /// SUBACK carries them [MQTT-3.8.4-6] [MQTT-3.9.3-1]. The connection remembers the
    /// requests and the Subscription Identifier, and records each granted subscription in the
    /// session, the one place a session's subscriptions are kept.
    ///
    /// What the codes cannot say is settled here, so that the SUBACK is always valid:
    /// a request the server refused itself ([`SubscriptionRequest::verdict`]) gets that
    /// verdict; a missing code is 0x80 Unspecified error, and codes beyond the requests are
    /// ignored; a granted QoS above the one requested is lowered to it, and a code SUBACK
    /// does not define is 0x80; a subscription that would take the session past
    /// [`ServerConfig::max_subscriptions`] is 0x97 Quota exceeded. 3.x clients get 0x80 for
    /// every failure.
    ///
    /// An identifier with no SUBSCRIBE waiting for an answer is ignored. After the answer,
    /// input that waited for it goes on: call [`ServerConnection::handle_bytes`] again.
    pub fn subscribe_ack(&mut self, packet_id: PacketId, codes: Vec<ReasonCode>) {
        let is_it = |r: &PendingRequest| matches!(r, PendingRequest::Subscribe { packet_id: id, .. } if *id == packet_id);
        let Some(PendingRequest::Subscribe {
            subscription_id,
            requests,
            ..
        }) = self.take_request(is_it)
        else {
            return;
        };
        if self.state != State::Connected {
            return;
        }
        let v5 = self.version.is_v5();
        let max = self.config.max_subscriptions;
        let mut given = codes.into_iter();
        let mut reason_codes = Vec::with_capacity(requests.len());
        for request in requests {
            let code = match (request.verdict, given.next()) {
                (Err(verdict), _) => verdict,
                (Ok(()), None) => ReasonCode::UNSPECIFIED_ERROR,
                (Ok(()), Some(code)) if !code.is_success() => code,
                (Ok(()), Some(code)) => match QoS::from_u8(code.0) {
                    None => ReasonCode::UNSPECIFIED_ERROR,
                    Some(granted) => {
                        let mut options = request.options;
                        options.qos = granted.min(options.qos);
                        let session = self.session_mut();
                        if session.subscriptions.len() >= max
                            && !session.subscriptions.contains_key(&request.filter)
                        {
                            ReasonCode::QUOTA_EXCEEDED
                        } else {
                            // Kept for the session's life: its own bytes, not the SUBSCRIBE's.
                            let sub = SessionSubscription::new(options, subscription_id);
                            session.subscriptions.insert(request.filter.unshared(), sub);
                            ReasonCode(options.qos as u8)
                        }
                    }
                },
            };
            // Every code is one SUBACK defines [MQTT-3.9.3-2]; 3.x has one failure code.
            let allowed = code.is_allowed_in(PacketType::SubAck) && (v5 || code.is_success());
            reason_codes.push(if allowed {
                code
            } else {
                ReasonCode::UNSPECIFIED_ERROR
            });
        }
        let mut suback = SubAck {
            packet_id,
            reason_codes,
            properties: Default::default(),
        };
        if let Some(refused) = suback.reason_codes.iter().find(|c| !c.is_success()) {
            if self.problem_information_allowed() {
                suback.properties.reason_string = Some(ByteStr::from(format!(
                    "a subscription was refused: {}",
                    explain(*refused)
                )));
                if !self.fits(&Packet::SubAck(suback.clone())) {
                    suback.properties.reason_string = None;
                }
            }
        }
        self.transmit.push_back(Packet::SubAck(suback));
        self.replay_held();
    }

    /// Answers the [`ServerEvent::Unsubscribe`] with this packet identifier, removing its
    /// filters, which the connection remembers, from the session. Returns the 5.0 reason
    /// code for each filter, in order: `SUCCESS`, or `NO_SUBSCRIPTION_EXISTED` if the session
    /// held no such subscription; 5.0 clients get them in the UNSUBACK.
    ///
    /// An identifier with no UNSUBSCRIBE waiting for an answer is ignored, and the result is
    /// empty. The filters are removed from the session even if the connection has closed,
    /// since the broker has removed them from its routes. After the answer, input that waited
    /// for it goes on: call [`ServerConnection::handle_bytes`] again.
    pub fn unsubscribe_ack(&mut self, packet_id: PacketId) -> Vec<ReasonCode> {
        let is_it = |r: &PendingRequest| matches!(r, PendingRequest::Unsubscribe { packet_id: id, .. } if *id == packet_id);
        let Some(PendingRequest::Unsubscribe { filters, .. }) = self.take_request(is_it) else {
            return Vec::new();
        };
        let codes: Vec<_> = filters
            .iter()
            .map(|f| match self.session_mut().subscriptions.remove(f) {
                Some(_) => ReasonCode::SUCCESS,
                None => ReasonCode::NO_SUBSCRIPTION_EXISTED,
            })
            .collect();
        if self.state == State::Connected {
            let reason_codes = if self.version.is_v5() {
                codes.clone()
            } else {
                Vec::new()
            };
            self.transmit.push_back(Packet::UnsubAck(UnsubAck {
                packet_id,
                reason_codes,
                properties: Default::default(),
            }));
            self.replay_held();
        }
        codes
    }

    /// Queues a message for this client. It is sent in order, within the client's Receive
    /// Maximum, or dropped and counted if the session's queue is full, if it expires first,
    /// or if it is larger than the client accepts. Returns whether it was queued.
    pub fn deliver(&mut self, delivery: Delivery) -> bool {
        self.session_mut().enqueue(delivery)
    }

    /// Queues a message that was already admitted against the session's queue limits, as
    /// [`Session::enqueue_admitted`] does: it is kept even if the queue is at its limits.
    pub fn deliver_admitted(&mut self, delivery: Delivery) {
        self.session_mut().enqueue_admitted(delivery);
    }

    /// Checks the timers at `now`: the CONNECT deadline and keepalive.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::AwaitingConnect { deadline } | State::Challenging { deadline }
                if now >= deadline =>
            {
                self.transmit.clear();
                self.close(ServerCloseReason::ConnectTimeout, None);
            }
            State::Connected if self.keepalive.is_expired(now) => {
                // [MQTT-3.1.2-24]: 1.5 times the Keep Alive without a packet.
                if self.version.is_v5() {
                    self.transmit
                        .push_back(self.disconnect_packet(ReasonCode::KEEP_ALIVE_TIMEOUT, None));
                }
                let will = self.will();
                self.close(ServerCloseReason::KeepAliveTimeout, will);
            }
            _ => {}
        }
    }

    /// When [`ServerConnection::handle_timeout`] next has work.
    ///
    /// Changed by [`ServerConnection::handle_packet`], [`ServerConnection::handle_bytes`],
    /// [`ServerConnection::accept`], [`ServerConnection::auth_continue`] and
    /// [`ServerConnection::handle_timeout`].
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::AwaitingConnect { deadline } | State::Challenging { deadline } => Some(deadline),
            State::Connected => self.keepalive.poll_timeout(),
            State::Authenticating { .. } | State::Closed => None,
        }
    }

    /// The next event for the broker.
    ///
    /// Changed by every input, by [`ServerConnection::accept`] (packets that waited for it),
    /// by the answers to SUBSCRIBE and UNSUBSCRIBE (packets that waited for them), and by
    /// the commands that close the connection.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        let event = self.events.pop_front();
        if self.events.is_empty() && self.events.capacity() > 0 {
            // An idle connection keeps no room from its last burst.
            self.events = VecDeque::new();
        }
        event
    }

    /// Appends the packets due now to `buf`, at most about [`TRANSMIT_BATCH`] bytes per call:
    /// control packets first, then queued deliveries within the client's Receive Maximum.
    /// Returns whether it wrote anything.
    ///
    /// Changed by every input, [`ServerConnection::deliver`] and the answers to events.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut BytesMut) -> bool {
        let start = buf.len();
        while buf.len() - start < TRANSMIT_BATCH {
            if let Some(packet) = self.transmit.pop_front() {
                // Packets built here were validated when they were decoded or accepted.
                let _ = packet.encode(self.version, buf);
            } else if !self.write_delivery(now, buf) {
                break;
            }
        }
        if self.transmit.is_empty() && self.transmit.capacity() > 0 {
            // An idle connection keeps no room from its last burst.
            self.transmit = PacketQueue::new();
        }
        buf.len() > start
    }

    /// Writes the next delivery that is due to `buf`, if there is one.
    fn write_delivery(&mut self, now: Instant, buf: &mut BytesMut) -> bool {
        if self.state != State::Connected {
            return false;
        }
        let version = self.version;
        let window = self.window();
        // What 3.x clients get in place of a message's properties: none.
        let no_properties = PublishProperties::default();
        // What a resumed session had in flight beyond the window goes first, as the window
        // opens, in their original order with their original identifiers
        // [MQTT-4.4.0-1].
        while let Some(resend) = self.resumed.as_mut().map(|r| &mut r.resend) {
            let Some(&id) = resend.front() else {
                self.tidy_resumed();
                break;
            };
            let Some(session) = self.session.as_mut() else {
                return false;
            };
            if session.outgoing.len().saturating_sub(resend.len()) >= window {
                return false;
            }
            resend.pop_front();
            match session.outgoing.get(id) {
                Some(OutState::Published(d)) => {
                    let publish = d.publish_ref(version, now, Some(id), true, &no_properties);
                    let _ = publish.encode(version, buf);
                }
                Some(OutState::Released(_)) => {
                    let _ = Packet::PubRel(PubAck::new(id)).encode(version, buf);
                }
                None => continue,
            }
            return true;
        }
        let max = self.client_maximum_packet_size as usize;
        let aliases_on = version.is_v5() && self.client_topic_alias_maximum > 0;
        loop {
            let Some(session) = self.session.as_mut() else {
                return false;
            };
            let Some(qos) = session.queue.front().map(|d| d.qos) else {
                return false;
            };
            if qos != QoS::AtMostOnce && session.outgoing.len() >= window {
                return false;
            }
            // An identifier is found before the delivery leaves the queue (there is one: fewer
            // than the window, at most 65,535, are in flight).
            let packet_id = match qos {
                QoS::AtMostOnce => None,
                _ => match session.outgoing.next_free_id() {
                    Some(id) => Some(id),
                    None => return false,
                },
            };
            let Some(delivery) = session.dequeue() else {
                return false;
            };
            if delivery.is_expired(now) {
                session.stats.dropped_expired += 1;
                session.finished(&delivery);
                continue;
            }
            // The plain QoS 0 form (no alias, no subscription identifiers, no expiry to count
            // down, RETAIN as published) is the same bytes for every subscriber: encode it once
            // per message and version, and copy it.
            let plain = qos == QoS::AtMostOnce
                && delivery.message.payload.len() <= PLAIN_FORM_MAX_PAYLOAD
                && delivery.subscription_ids.is_empty()
                && delivery.retain == delivery.message.retain
                && delivery
                    .message
                    .properties
                    .message_expiry_interval
                    .is_none()
                && !aliases_on;
            if plain {
                let Some(bytes) = delivery.message.plain_publish(version) else {
                    session.finished(&delivery);
                    continue;
                };
                if bytes.len() > max {
                    session.stats.dropped_too_large += 1;
                    session.finished(&delivery);
                    continue;
                }
                buf.extend_from_slice(bytes);
                session.finished(&delivery);
                return true;
            }
            // The message's parts are borrowed, and its properties go out as they are kept,
            // with this delivery's identifiers, expiry and alias added: one message sent to
            // many subscribers is not copied or re-encoded for each.
            let mut publish = delivery.publish_ref(version, now, packet_id, false, &no_properties);
            let fits = |p: &PublishRef<'_>| p.encoded_len(version).is_ok_and(|len| len <= max);
            // The client's Maximum Packet Size: a message too large is dropped
            // [MQTT-3.1.2-25]. Measured without an alias; one is added only if the packet
            // still fits, since setting an alias adds three bytes [MQTT-3.1.2-24].
            if !fits(&publish) {
                session.stats.dropped_too_large += 1;
                session.finished(&delivery);
                continue;
            }
            let no_topic = ByteStr::new();
            if aliases_on {
                let aliases = Aliases::get(
                    &mut self.aliases,
                    self.config.topic_alias_maximum,
                    self.client_topic_alias_maximum,
                );
                let aliased = |alias: NonZeroU16, send_topic: bool| {
                    let mut p = publish;
                    p.topic_alias = Some(alias);
                    if !send_topic {
                        p.topic = &no_topic;
                    }
                    p
                };
                let chosen = aliases
                    .outbound
                    .choose(publish.topic, |alias, send| fits(&aliased(alias, send)));
                if let Some((alias, send_topic)) = chosen {
                    publish = aliased(alias, send_topic);
                }
            }
            let _ = publish.encode(version, buf);
            if let Some(id) = packet_id {
                if qos == QoS::ExactlyOnce && delivery.tag != 0 {
                    let tag = delivery.tag;
                    session.record(SessionChange::Sent { tag, packet_id: id });
                }
                let _ = session.outgoing.insert(id, OutState::Published(delivery));
            } else {
                // QoS 0: done once sent.
                session.finished(&delivery);
            }
            return true;
        }
    }
}

/// The PUBLISH of `delivery` for a client of `version`, without a topic alias. 3.x has no
/// properties: a message published by a 5.0 client goes to a 3.x one without them, on its
/// first send and on a resend after resume alike, since a PUBLISH with properties does not
/// encode under 3.x and would silently never be (re)sent [MQTT-4.4.0-1].
fn publish_for(
    version: ProtocolVersion,
    delivery: &Delivery,
    now: Instant,
    packet_id: Option<PacketId>,
    dup: bool,
) -> Publish {
    let mut publish = delivery.to_publish(now, packet_id, dup);
    if !version.is_v5() {
        publish.properties = Default::default();
    }
    publish
}

/// Whether `topic` is a valid topic name within `limits` [MQTT-4.7.3-1] [MQTT-4.7.3-2]
/// [MQTT-3.3.2-2]: the one validation of a PUBLISH's topic, which the topic then carries
/// ([`ByteStr::check_topic_name`]). Its characters were checked when it was decoded, so this
/// counts its levels and compares them with the limit; what routes it later trusts it
/// ([`Message::topic_name`]).
fn check_topic(topic: &mut ByteStr, limits: &Limits) -> bool {
    if !topic.check_topic_name() {
        return false;
    }
    match topic.topic_levels() {
        Some(levels) => levels <= limits.max_levels,
        // More levels than a topic keeps count of: counted again, against the limit.
        None => TopicName::with_limits(topic.as_str(), limits).is_ok(),
    }
}

/// Largest payload whose plain PUBLISH is cached in its message. The cache holds a second copy
/// of the payload for as long as the message lives (a retained message, for one), while the
/// encoding work it saves is a few header bytes: worth it for the small messages that fan out
/// by the thousand, not for large ones.
const PLAIN_FORM_MAX_PAYLOAD: usize = 4 * 1024;

/// A Reason String for a reason code: its name in the specification, in words.
fn explain(reason: ReasonCode) -> ByteStr {
    match reason.name() {
        Some(name) => ByteStr::from(name.to_lowercase().replace('_', " ")),
        None => ByteStr::from(format!("reason code 0x{:02X}", reason.0)),
    }
}

/// An AUTH with `reason`, the connection's method and `data`, and nothing else: no Reason
/// String or User Property that could take it past the client's Maximum Packet Size
/// [MQTT-3.15.2-2] [MQTT-3.15.2-3].
fn auth_packet(reason: ReasonCode, method: ByteStr, data: Option<Bytes>) -> Packet {
    let mut auth = midge_codec::Auth {
        reason_code: reason,
        ..Default::default()
    };
    auth.properties.authentication_method = Some(method);
    auth.properties.authentication_data = data;
    Packet::Auth(Box::new(auth))
}

/// A Response Topic, if any, is a valid topic name: non-empty, no wildcards, no U+0000
/// [MQTT-3.3.2-14].
pub(crate) fn response_topic_valid(topic: Option<&ByteStr>) -> bool {
    topic.is_none_or(|t| TopicName::new(t.as_str()).is_ok())
}

/// The 3.x CONNACK return code nearest to a 5.0 reason code; never 0, which would accept the
/// client.
fn v3_connack_code(reason: ReasonCode) -> ReasonCode {
    match reason.0 {
        0x84..=0x88 => reason,
        0x8A | 0x8C => ReasonCode::NOT_AUTHORIZED,
        0x89 | 0x97 | 0x9C | 0x9D | 0x9F => ReasonCode::SERVER_UNAVAILABLE,
        _ => ReasonCode::SERVER_UNAVAILABLE,
    }
}

/// A will whose parts hold only their own bytes: a decoded one shares its CONNECT's memory.
fn unshared_will(will: Will) -> Will {
    let mut properties = will.properties;
    properties.message = properties.message.unshared();
    Will {
        topic: will.topic.unshared(),
        payload: Bytes::copy_from_slice(&will.payload),
        properties,
        ..will
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use midge_codec::Publish;

    fn feed(server: &mut ServerConnection, now: Instant, packets: &[Packet]) {
        let mut buf = BytesMut::new();
        for packet in packets {
            packet.encode(server.version(), &mut buf).unwrap();
        }
        server.handle_bytes(now, &mut buf);
    }

    /// Once its output and events are drained and its requests answered, a connection keeps
    /// no room from the burst: the driver has nothing to call for that.
    #[test]
    fn a_drained_connection_keeps_no_room_from_its_last_burst() {
        let t0 = Instant::now();
        let mut s = ServerConnection::new(Arc::new(ServerConfig::default()), t0);
        let connect = Connect::new(ProtocolVersion::V5, "idle");
        s.handle_packet(t0, Packet::Connect(Box::new(connect)));
        while s.poll_event().is_some() {}
        s.accept(t0, None);
        let mut burst = Vec::new();
        for n in 1..=40u16 {
            burst.push(Packet::Publish(Publish {
                qos: QoS::AtLeastOnce,
                topic: ByteStr::from_static("a/b"),
                packet_id: PacketId::new(n),
                ..Publish::default()
            }));
            burst.push(Packet::PingReq);
        }
        for n in 1..=20u16 {
            burst.push(Packet::Subscribe(Subscribe {
                packet_id: PacketId::new(n).unwrap(),
                filters: vec![(ByteStr::from_static("t"), SubscriptionOptions::default())],
                properties: Default::default(),
            }));
        }
        let mut buf = BytesMut::new();
        for packet in &burst {
            packet.encode(ProtocolVersion::V5, &mut buf).unwrap();
        }
        let mut out = BytesMut::new();
        // Answer everything, as a broker would, until the input is used up.
        while !buf.is_empty() || s.events.capacity() > 0 {
            s.handle_bytes(t0, &mut buf);
            while let Some(event) = s.poll_event() {
                match event {
                    ServerEvent::Publish {
                        packet_id: Some(id),
                        ..
                    } => s.acknowledge(id, ReasonCode::SUCCESS),
                    ServerEvent::Subscribe { packet_id, .. } => {
                        s.subscribe_ack(packet_id, vec![ReasonCode::GRANTED_QOS_0])
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        assert!(s.transmit.capacity() > 0, "the burst's answers are queued");
        while s.poll_transmit(t0, &mut out) {}
        assert!(s.is_connected());
        assert_eq!(s.transmit.capacity(), 0);
        assert_eq!(s.events.capacity(), 0);
        assert_eq!(s.unanswered.capacity(), 0);
        assert!(s.waiting.is_none());
        assert!(s.resumed.is_none());
        feed(&mut s, t0, &[Packet::PingReq]);
        while s.poll_transmit(t0, &mut out) {}
        assert_eq!(s.transmit.capacity(), 0);
    }
}
