//! The packet model: one set of types for MQTT 3.1, 3.1.1 and 5.0.
//!
//! Fields that only 5.0 can carry (properties, reason codes other than success, subscription
//! options beyond QoS) hold their defaults in 3.x packets; encoding a packet for 3.x with any of
//! them set is an [`EncodeError::RequiresV5`](crate::EncodeError::RequiresV5).

use alloc::boxed::Box;
use alloc::vec::Vec;
use bytes::Bytes;
use core::fmt;

use crate::properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, SubscribeProperties, UnsubscribeProperties, WillProperties,
};
use core::num::NonZeroU16;

use crate::types::{ByteStr, PacketId, ProtocolVersion, QoS, SubscriptionId, SubscriptionOptions};
use crate::ReasonCode;

/// An MQTT control packet (§2.1.2, Table 2-1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT, client to server. Boxed: it is large and rare.
    Connect(Box<Connect>),
    /// CONNACK, server to client. Boxed: its properties make it large, and it is sent once
    /// per connection.
    ConnAck(Box<ConnAck>),
    /// PUBLISH, both directions.
    Publish(Publish),
    /// PUBACK: QoS 1 acknowledgement.
    PubAck(PubAck),
    /// PUBREC: QoS 2, part 1.
    PubRec(PubAck),
    /// PUBREL: QoS 2, part 2.
    PubRel(PubAck),
    /// PUBCOMP: QoS 2, part 3.
    PubComp(PubAck),
    /// SUBSCRIBE, client to server.
    Subscribe(Subscribe),
    /// SUBACK, server to client.
    SubAck(SubAck),
    /// UNSUBSCRIBE, client to server.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK, server to client.
    UnsubAck(UnsubAck),
    /// PINGREQ, client to server.
    PingReq,
    /// PINGRESP, server to client.
    PingResp,
    /// DISCONNECT: client to server in 3.x, both directions in 5.0.
    Disconnect(Disconnect),
    /// AUTH: 5.0 only, both directions. Boxed: it is large and rare.
    Auth(Box<Auth>),
}

/// The four-bit packet type of the fixed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    Auth = 15,
}

impl Packet {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Self::Connect(_) => PacketType::Connect,
            Self::ConnAck(_) => PacketType::ConnAck,
            Self::Publish(_) => PacketType::Publish,
            Self::PubAck(_) => PacketType::PubAck,
            Self::PubRec(_) => PacketType::PubRec,
            Self::PubRel(_) => PacketType::PubRel,
            Self::PubComp(_) => PacketType::PubComp,
            Self::Subscribe(_) => PacketType::Subscribe,
            Self::SubAck(_) => PacketType::SubAck,
            Self::Unsubscribe(_) => PacketType::Unsubscribe,
            Self::UnsubAck(_) => PacketType::UnsubAck,
            Self::PingReq => PacketType::PingReq,
            Self::PingResp => PacketType::PingResp,
            Self::Disconnect(_) => PacketType::Disconnect,
            Self::Auth(_) => PacketType::Auth,
        }
    }
}

/// The high bit of CONNECT's protocol level byte, set by 3.x bridges (see [`Connect::bridge`]).
pub(crate) const BRIDGE_BIT: u8 = 0x80;

/// CONNECT (§3.1). Its `Debug` output shows whether a password is set, never the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol version requested; it also decides how this CONNECT is encoded.
    pub protocol: ProtocolVersion,
    /// Clean Session (3.x) or Clean Start (5.0).
    pub clean_start: bool,
    /// The client is a bridge (3.1 and 3.1.1 only): the high bit of the protocol level byte
    /// is set (0x83, 0x84), a convention of mosquitto's bridges that is not part of MQTT. A
    /// server that knows it sends the bridge none of its own messages back and keeps the
    /// RETAIN flag as published on what it forwards to it, which MQTT 5.0 does with the No
    /// Local and Retain As Published subscription options instead. A 5.0 CONNECT cannot carry
    /// it: encoding one fails with [`EncodeError::NotInV5`](crate::EncodeError::NotInV5), and
    /// level 0x85 decodes as an unsupported protocol version.
    pub bridge: bool,
    /// Keep Alive in seconds; 0 turns keepalive off.
    pub keep_alive: u16,
    /// Client Identifier; may be empty, in which case the server assigns one (5.0) or decides.
    pub client_id: ByteStr,
    /// Will message.
    pub will: Option<Will>,
    /// User Name.
    pub username: Option<ByteStr>,
    /// Password: binary data.
    pub password: Option<Bytes>,
    /// 5.0 properties.
    pub properties: ConnectProperties,
}

impl fmt::Debug for Connect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connect")
            .field("protocol", &self.protocol)
            .field("clean_start", &self.clean_start)
            .field("bridge", &self.bridge)
            .field("keep_alive", &self.keep_alive)
            .field("client_id", &self.client_id)
            .field("will", &self.will)
            .field("username", &self.username)
            // Secrets never reach logs.
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("properties", &self.properties)
            .finish()
    }
}

impl Connect {
    /// A CONNECT with the given version and client identifier, clean start, keepalive 60 s.
    pub fn new(protocol: ProtocolVersion, client_id: impl Into<ByteStr>) -> Self {
        Self {
            protocol,
            clean_start: true,
            bridge: false,
            keep_alive: 60,
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        }
    }
}

/// The Will message of a CONNECT (§3.1.2.5, §3.1.3.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Will {
    /// Will Topic.
    pub topic: ByteStr,
    /// Will Payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will Retain.
    pub retain: bool,
    /// 5.0 will properties.
    pub properties: WillProperties,
}

impl Will {
    /// The bytes the will holds: its topic, its payload and its properties as encoded (without
    /// the block's length prefix). A server keeps the will for the connection's life, and
    /// with a Will Delay Interval while the session is offline (5.0 §3.1.3.2.2), so this is
    /// what it counts against its memory limits. Decoding copies none of them: the payload,
    /// the encoded properties and a topic longer than [`ByteStr::INLINE_CAPACITY`] share the
    /// decoded buffer, which stays allocated as long as any of them does.
    ///
    /// ```
    /// use midge_codec::{QoS, Will};
    ///
    /// let mut will = Will {
    ///     topic: "clients/7/status".into(),
    ///     payload: bytes::Bytes::from_static(b"offline"),
    ///     qos: QoS::AtLeastOnce,
    ///     retain: true,
    ///     properties: Default::default(),
    /// };
    /// assert_eq!(will.held_bytes(), 16 + 7);
    /// // A user property takes 1 + (2 + 4) + (2 + 2) bytes.
    /// will.properties.message.push_user_property("host", "h1")?;
    /// assert_eq!(will.held_bytes(), 16 + 7 + 11);
    /// # Ok::<(), midge_codec::EncodeError>(())
    /// ```
    pub fn held_bytes(&self) -> usize {
        self.topic.len() + self.payload.len() + self.properties.size()
    }
}

/// CONNACK (§3.2).
///
/// A 3.x return code maps onto the 5.0 reason code of the same meaning: 0 `SUCCESS`,
/// 1 `UNSUPPORTED_PROTOCOL_VERSION`, 2 `CLIENT_IDENTIFIER_NOT_VALID`, 3 `SERVER_UNAVAILABLE`,
/// 4 `BAD_USER_NAME_OR_PASSWORD` and 5 `NOT_AUTHORIZED`. Other codes cannot be sent to a 3.x
/// client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnAck {
    /// Session Present (3.1.1 and 5.0).
    pub session_present: bool,
    /// Connect return code (3.x) or reason code (5.0).
    pub reason_code: ReasonCode,
    /// 5.0 properties.
    pub properties: ConnAckProperties,
}

impl Default for ReasonCode {
    fn default() -> Self {
        Self::SUCCESS
    }
}

/// PUBLISH (§3.3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Publish {
    /// DUP: this may be a re-delivery.
    pub dup: bool,
    /// QoS of this delivery.
    pub qos: QoS,
    /// RETAIN.
    pub retain: bool,
    /// Topic Name. Empty only in 5.0 with a Topic Alias.
    pub topic: ByteStr,
    /// Packet Identifier: present exactly when QoS is 1 or 2 [MQTT-2.2.1-2].
    pub packet_id: Option<PacketId>,
    /// Application message; shares memory with the decoded buffer.
    pub payload: Bytes,
    /// 5.0 properties.
    pub properties: PublishProperties,
}

/// A PUBLISH made of borrowed parts, encoded as the [`Publish`] with the same parts would be.
///
/// A server sends one message to many subscribers. The topic, payload and properties are the
/// message's and the same for all; the packet identifier, QoS, RETAIN, DUP, Topic Alias,
/// remaining Message Expiry Interval and Subscription Identifiers may differ from one
/// subscriber to the next. A `PublishRef` borrows the shared parts and holds the others, so
/// measuring ([`PublishRef::encoded_len`]) and encoding ([`PublishRef::encode`]) one delivery
/// copies nothing beforehand, touches no reference count, and does not rebuild the property
/// block: the properties the message keeps encoded are copied into the packet as they are,
/// followed by this delivery's Subscription Identifiers.
///
/// `properties` supplies every property but Message Expiry Interval and Topic Alias, which
/// come from the fields of the same name, and but the Subscription Identifiers when
/// `subscription_identifiers` is `Some`. [`PublishRef::new`] and `From<&Publish>` take all of
/// them from the properties.
///
/// ```
/// use bytes::BytesMut;
/// use midge_codec::{ByteStr, ProtocolVersion, Publish, PublishProperties, PublishRef, QoS, SubscriptionId};
///
/// let topic = ByteStr::from_static("sensors/17/temp");
/// let mut properties = PublishProperties::default();
/// properties.set_content_type(Some("text/plain".into()))?;
/// let ids = [SubscriptionId::new(7).unwrap()];
///
/// let mut delivery = PublishRef::new(&topic, b"21.5", &properties);
/// delivery.qos = QoS::AtLeastOnce;
/// delivery.packet_id = std::num::NonZeroU16::new(1);
/// delivery.subscription_identifiers = Some(&ids);
/// let mut buf = BytesMut::new();
/// delivery.encode(ProtocolVersion::V5, &mut buf)?;
/// assert_eq!(delivery.encoded_len(ProtocolVersion::V5)?, buf.len());
///
/// // The same bytes as the owned PUBLISH with those parts.
/// let mut owned = Publish {
///     qos: QoS::AtLeastOnce,
///     topic: topic.clone(),
///     packet_id: std::num::NonZeroU16::new(1),
///     payload: bytes::Bytes::from_static(b"21.5"),
///     properties: properties.clone(),
///     ..Publish::default()
/// };
/// owned.properties.set_subscription_identifiers(&ids);
/// let mut expected = BytesMut::new();
/// owned.encode(ProtocolVersion::V5, &mut expected)?;
/// assert_eq!(buf, expected);
/// # Ok::<(), midge_codec::EncodeError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishRef<'a> {
    /// DUP: this may be a re-delivery.
    pub dup: bool,
    /// QoS of this delivery.
    pub qos: QoS,
    /// RETAIN.
    pub retain: bool,
    /// Topic Name. Empty only in 5.0 with a Topic Alias.
    pub topic: &'a ByteStr,
    /// Packet Identifier: present exactly when QoS is 1 or 2 [MQTT-2.2.1-2].
    pub packet_id: Option<PacketId>,
    /// Application message.
    pub payload: &'a [u8],
    /// 5.0 properties, but for those the fields below stand for.
    pub properties: &'a PublishProperties,
    /// Message Expiry Interval (5.0), sent instead of the properties' own.
    pub message_expiry_interval: Option<u32>,
    /// Topic Alias (5.0), sent instead of the properties' own.
    pub topic_alias: Option<NonZeroU16>,
    /// Subscription Identifiers (5.0): `Some` sends these instead of the properties' own,
    /// `None` sends the properties' own.
    pub subscription_identifiers: Option<&'a [SubscriptionId]>,
}

impl<'a> PublishRef<'a> {
    /// A QoS 0 PUBLISH of these parts, without DUP or RETAIN, with every property taken from
    /// `properties`.
    pub fn new(topic: &'a ByteStr, payload: &'a [u8], properties: &'a PublishProperties) -> Self {
        Self {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic,
            packet_id: None,
            payload,
            properties,
            message_expiry_interval: properties.message_expiry_interval,
            topic_alias: properties.topic_alias,
            subscription_identifiers: None,
        }
    }
}

impl<'a> From<&'a Publish> for PublishRef<'a> {
    #[inline(always)]
    fn from(p: &'a Publish) -> Self {
        Self {
            dup: p.dup,
            qos: p.qos,
            retain: p.retain,
            topic: &p.topic,
            packet_id: p.packet_id,
            payload: &p.payload,
            properties: &p.properties,
            message_expiry_interval: p.properties.message_expiry_interval,
            topic_alias: p.properties.topic_alias,
            subscription_identifiers: None,
        }
    }
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP, which share one layout (§3.4 to §3.7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PubAck {
    /// Packet Identifier of the PUBLISH being acknowledged.
    pub packet_id: PacketId,
    /// 5.0 reason code; always `SUCCESS` in 3.x.
    pub reason_code: ReasonCode,
    /// 5.0 properties.
    pub properties: AckProperties,
}

impl PubAck {
    /// A successful acknowledgement without properties.
    pub fn new(packet_id: PacketId) -> Self {
        Self {
            packet_id,
            reason_code: ReasonCode::SUCCESS,
            properties: AckProperties::default(),
        }
    }
}

/// SUBSCRIBE (§3.8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// Topic filters with their options; at least one [MQTT-3.8.3-3].
    pub filters: Vec<(ByteStr, SubscriptionOptions)>,
    /// 5.0 properties.
    pub properties: SubscribeProperties,
}

/// SUBACK (§3.9).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubAck {
    /// Packet Identifier of the SUBSCRIBE.
    pub packet_id: PacketId,
    /// One return or reason code per topic filter, in order.
    pub reason_codes: Vec<ReasonCode>,
    /// 5.0 properties.
    pub properties: AckProperties,
}

/// UNSUBSCRIBE (§3.10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// Topic filters; at least one [MQTT-3.10.3-2].
    pub filters: Vec<ByteStr>,
    /// 5.0 properties.
    pub properties: UnsubscribeProperties,
}

/// UNSUBACK (§3.11).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet Identifier of the UNSUBSCRIBE.
    pub packet_id: PacketId,
    /// 5.0: one reason code per topic filter. Empty in 3.x, which has no payload.
    pub reason_codes: Vec<ReasonCode>,
    /// 5.0 properties.
    pub properties: AckProperties,
}

/// DISCONNECT (§3.14).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Disconnect {
    /// 5.0 reason code; `NORMAL_DISCONNECTION` in 3.x.
    pub reason_code: ReasonCode,
    /// 5.0 properties.
    pub properties: DisconnectProperties,
}

/// AUTH (5.0 §3.15).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Auth {
    /// `SUCCESS`, `CONTINUE_AUTHENTICATION` or `RE_AUTHENTICATE`.
    pub reason_code: ReasonCode,
    /// Properties.
    pub properties: AuthProperties,
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn a_connect_debug_output_hides_the_password() {
        let mut connect = Connect::new(ProtocolVersion::V5, "c");
        connect.username = Some("alice".into());
        connect.password = Some(Bytes::from_static(b"s3cret-pw"));
        let shown = format!("{connect:?}");
        assert!(
            shown.contains("alice") && shown.contains("<hidden>"),
            "{shown}"
        );
        assert!(
            !shown.contains("s3cret") && !shown.contains("115, 51"),
            "{shown}"
        );
    }
}
