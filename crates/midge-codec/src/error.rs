//! Decode and encode errors.
//!
//! Decode errors are violations by the peer: each names the rule it breaks and maps to the
//! reason code a 5.0 receiver sends before closing (`From<DecodeError> for ReasonCode`).
//! Encode errors are the caller's mistakes, such as a 5.0-only field under 3.1.1.

use crate::ReasonCode;

/// Why a packet could not be decoded. Every variant means the connection must be closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Packet type 0, or AUTH (15) before 5.0 [MQTT-2.1.2] (3.1.1 §2.2.1: "Reserved, forbidden").
    #[error("reserved packet type {0}")]
    ReservedPacketType(u8),
    /// Fixed-header flag bits differ from those the packet type requires [MQTT-2.1.3-1]
    /// (3.1.1: [MQTT-2.2.2-1], [MQTT-2.2.2-2]).
    #[error("invalid fixed header flags 0x{0:02X}")]
    InvalidFixedHeaderFlags(u8),
    /// A variable byte integer (such as the Remaining Length) longer than four bytes, or not in
    /// its shortest form [MQTT-1.5.5-1].
    #[error("malformed variable byte integer")]
    MalformedVariableInteger,
    /// The packet is larger than the configured maximum; detected from the fixed header, before
    /// the body is buffered [MQTT-3.1.2-24].
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    PacketTooLarge {
        /// Size announced by the fixed header, including the header.
        size: u32,
        /// The configured maximum.
        max: u32,
    },
    /// A length or field reaches past the end of the packet, or the packet is too short for its
    /// fixed fields (§1.5, §2.1.4).
    #[error("a length points past the end of the packet")]
    LengthOutOfBounds,
    /// Bytes are left over after the last field of a packet that has no more fields.
    #[error("unexpected bytes after the end of the packet")]
    TrailingBytes,
    /// QoS 3 in a PUBLISH [MQTT-3.3.1-4].
    #[error("QoS 3 is not a valid QoS")]
    InvalidQoS,
    /// DUP set on a QoS 0 PUBLISH [MQTT-3.3.1-2].
    #[error("DUP flag set on a QoS 0 PUBLISH")]
    DupOnQoS0,
    /// Packet identifier 0 where an identifier is required [MQTT-2.3.1-1] (5.0: [MQTT-2.2.1-3]).
    #[error("packet identifier 0")]
    ZeroPacketId,
    /// A string that is not well-formed UTF-8 [MQTT-1.5.4-1] (3.1.1: [MQTT-1.5.3-1]).
    #[error("ill-formed UTF-8 string")]
    InvalidUtf8,
    /// A string that contains U+0000 [MQTT-1.5.4-2] (3.1.1: [MQTT-1.5.3-2]).
    #[error("string contains U+0000")]
    NullCharacter,
    /// A property identifier that is unknown or not allowed on this packet (5.0 §2.2.2.2).
    #[error("property 0x{0:02X} is not allowed on this packet")]
    PropertyNotAllowed(u8),
    /// A property that may appear once appears again (5.0 §2.2.2.2, §3.x.2.x).
    #[error("property 0x{0:02X} repeated")]
    DuplicateProperty(u8),
    /// A property value outside its range: zero Receive Maximum, Maximum Packet Size, Topic Alias
    /// or Subscription Identifier, or a byte property other than 0 or 1 ([MQTT-3.3.2-8] and
    /// the property definitions of 5.0 §3).
    #[error("invalid value for property 0x{0:02X}")]
    InvalidPropertyValue(u8),
    /// A reason code this packet type may not carry (5.0 §2.4, Table 2-6).
    #[error("reason code 0x{0:02X} not allowed on this packet")]
    InvalidReasonCode(u8),
    /// SUBSCRIBE without topic filters [MQTT-3.8.3-3] (5.0: [MQTT-3.8.3-2]).
    #[error("SUBSCRIBE with no topic filters")]
    EmptySubscribe,
    /// UNSUBSCRIBE without topic filters [MQTT-3.10.3-2].
    #[error("UNSUBSCRIBE with no topic filters")]
    EmptyUnsubscribe,
    /// Reserved bits set in subscription options ([MQTT-3.8.3-5]; 3.1.1: [MQTT-3-8.3-4]).
    #[error("invalid subscription options")]
    InvalidSubscriptionOptions,
    /// Maximum QoS 3 in subscription options: a Protocol Error in 5.0 (§3.8.3.1), malformed in
    /// 3.1.1 [MQTT-3-8.3-4].
    #[error("subscription options with QoS 3")]
    InvalidSubscriptionQoS,
    /// Retain Handling 3 (5.0 §3.8.3.1).
    #[error("retain handling 3 is not valid")]
    InvalidRetainHandling,
    /// A topic name or topic filter of zero length [MQTT-4.7.3-1], except a 5.0 PUBLISH that
    /// carries a Topic Alias.
    #[error("empty topic")]
    EmptyTopic,
    /// A wildcard in a PUBLISH topic name [MQTT-3.3.2-2].
    #[error("wildcard in a topic name")]
    WildcardInTopicName,
    /// A CONNECT protocol name other than `MQTT` (`MQIsdp` for 3.1) [MQTT-3.1.2-1].
    #[error("invalid protocol name")]
    InvalidProtocolName,
    /// A CONNECT protocol level other than 3, 4 and 5 [MQTT-3.1.2-2].
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolVersion(u8),
    /// The reserved bit of the CONNECT flags is set [MQTT-3.1.2-3].
    #[error("reserved CONNECT flag set")]
    ConnectReservedFlag,
    /// Will QoS or Will Retain set without the Will Flag ([MQTT-3.1.2-11], [MQTT-3.1.2-13],
    /// [MQTT-3.1.2-15]), or Will QoS 3 [MQTT-3.1.2-14].
    #[error("invalid will flags")]
    InvalidWillFlags,
    /// A password without a user name, before 5.0 [MQTT-3.1.2-22].
    #[error("password without user name")]
    PasswordWithoutUsername,
    /// Reserved CONNACK acknowledge flags set [MQTT-3.2.2-1].
    #[error("reserved CONNACK flags set")]
    ConnAckReservedFlags,
}

impl From<DecodeError> for ReasonCode {
    /// The reason code to send in DISCONNECT (or CONNACK) for a decode error (5.0 §4.13).
    fn from(err: DecodeError) -> Self {
        use DecodeError::*;
        match err {
            PacketTooLarge { .. } => Self::PACKET_TOO_LARGE,
            UnsupportedProtocolVersion(_) | InvalidProtocolName => {
                Self::UNSUPPORTED_PROTOCOL_VERSION
            }
            WildcardInTopicName => Self::TOPIC_NAME_INVALID,
            DuplicateProperty(_)
            | InvalidPropertyValue(_)
            | ZeroPacketId
            | EmptySubscribe
            | EmptyUnsubscribe
            | InvalidRetainHandling
            | InvalidSubscriptionQoS
            | DupOnQoS0
            | EmptyTopic => Self::PROTOCOL_ERROR,
            ReservedPacketType(_)
            | InvalidFixedHeaderFlags(_)
            | MalformedVariableInteger
            | LengthOutOfBounds
            | TrailingBytes
            | InvalidQoS
            | InvalidUtf8
            | NullCharacter
            | PropertyNotAllowed(_)
            | InvalidReasonCode(_)
            | InvalidSubscriptionOptions
            | ConnectReservedFlag
            | InvalidWillFlags
            | PasswordWithoutUsername
            | ConnAckReservedFlags => Self::MALFORMED_PACKET,
        }
    }
}

/// Why a packet could not be encoded. These are caller errors: nothing was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A field that only MQTT 5.0 can carry was set while encoding for 3.1 or 3.1.1. The field
    /// is never silently dropped.
    #[error("{0} requires MQTT 5.0")]
    RequiresV5(&'static str),
    /// A field that only MQTT 3.1 and 3.1.1 can carry was set while encoding for 5.0, such as
    /// [`Connect::bridge`](crate::Connect::bridge).
    #[error("{0} is not part of MQTT 5.0")]
    NotInV5(&'static str),
    /// A string or binary field longer than 65,535 bytes (§1.5.4, §1.5.6).
    #[error("string or binary field longer than 65535 bytes")]
    FieldTooLong,
    /// A string containing U+0000 [MQTT-1.5.4-2].
    #[error("string contains U+0000")]
    NullCharacter,
    /// The packet would exceed the Remaining Length limit of 268,435,455 bytes (§2.1.4).
    #[error("packet too large for the Remaining Length field")]
    PacketTooLarge,
    /// A QoS 1 or 2 PUBLISH without a packet identifier, or a QoS 0 PUBLISH with one
    /// [MQTT-2.2.1-2], [MQTT-2.3.1-5].
    #[error("packet identifier presence does not match the QoS")]
    PacketIdMismatch,
    /// SUBSCRIBE or UNSUBSCRIBE without topic filters [MQTT-3.8.3-2], [MQTT-3.10.3-2].
    #[error("SUBSCRIBE or UNSUBSCRIBE without topic filters")]
    NoTopicFilters,
    /// An empty topic (allowed only with a Topic Alias in 5.0) or a wildcard in a topic name
    /// [MQTT-4.7.3-1], [MQTT-3.3.2-2].
    #[error("invalid topic name")]
    InvalidTopic,
    /// DUP on a QoS 0 PUBLISH [MQTT-3.3.1-2].
    #[error("DUP flag on a QoS 0 PUBLISH")]
    DupOnQoS0,
    /// A reason code this packet type cannot carry in this version.
    #[error("reason code 0x{0:02X} cannot be sent on this packet in this version")]
    InvalidReasonCode(u8),
    /// A password without a user name, before 5.0 [MQTT-3.1.2-22].
    #[error("password without user name")]
    PasswordWithoutUsername,
    /// A property value outside its range, such as Maximum QoS 2 (5.0 §3.2.2.3.4).
    #[error("invalid value for property 0x{0:02X}")]
    InvalidPropertyValue(u8),
    /// A property the packet cannot carry: a Topic Alias (0x23) or Subscription Identifier
    /// (0x0B) in will properties, which hold the other properties of a PUBLISH (5.0 §3.1.3.2).
    #[error("property 0x{0:02X} is not allowed on this packet")]
    PropertyNotAllowed(u8),
    /// Session Present on a 3.1 CONNACK, which has no such flag.
    #[error("{0} requires MQTT 3.1.1 or later")]
    RequiresV311(&'static str),
}
