//! MQTT 5.0 reason codes, and the 3.x return codes that map onto them.

use core::fmt;

/// A reason code as it appears on the wire (MQTT 5.0 §2.4).
///
/// This is an open newtype rather than an enum: a peer may send a code this crate does not
/// name, and the codec checks which codes each packet type allows instead of which codes exist.
/// MQTT 3.x CONNACK return codes and SUBACK return codes are expressed with the same values
/// (see [`ConnAck`](crate::ConnAck)).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReasonCode(pub u8);

macro_rules! reason_codes {
    ($($(#[$doc:meta])* $name:ident = $value:literal,)*) => {
        impl ReasonCode {
            $($(#[$doc])* pub const $name: Self = Self($value);)*

            /// The name the specification gives this code, if it is a 5.0 reason code.
            ///
            /// Codes with several names (0x00) return the first.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some(stringify!($name)),)*
                    #[allow(unreachable_patterns)]
                    _ => None,
                }
            }
        }
    };
}

reason_codes! {
    /// 0x00: Success (CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK, AUTH).
    SUCCESS = 0x00,
    /// 0x01: Granted QoS 1 (SUBACK).
    GRANTED_QOS_1 = 0x01,
    /// 0x02: Granted QoS 2 (SUBACK).
    GRANTED_QOS_2 = 0x02,
    /// 0x04: Disconnect with Will Message (DISCONNECT).
    DISCONNECT_WITH_WILL_MESSAGE = 0x04,
    /// 0x10: No matching subscribers (PUBACK, PUBREC).
    NO_MATCHING_SUBSCRIBERS = 0x10,
    /// 0x11: No subscription existed (UNSUBACK).
    NO_SUBSCRIPTION_EXISTED = 0x11,
    /// 0x18: Continue authentication (AUTH).
    CONTINUE_AUTHENTICATION = 0x18,
    /// 0x19: Re-authenticate (AUTH).
    RE_AUTHENTICATE = 0x19,
    /// 0x80: Unspecified error.
    UNSPECIFIED_ERROR = 0x80,
    /// 0x81: Malformed Packet.
    MALFORMED_PACKET = 0x81,
    /// 0x82: Protocol Error.
    PROTOCOL_ERROR = 0x82,
    /// 0x83: Implementation specific error.
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83,
    /// 0x84: Unsupported Protocol Version (CONNACK).
    UNSUPPORTED_PROTOCOL_VERSION = 0x84,
    /// 0x85: Client Identifier not valid (CONNACK).
    CLIENT_IDENTIFIER_NOT_VALID = 0x85,
    /// 0x86: Bad User Name or Password (CONNACK).
    BAD_USER_NAME_OR_PASSWORD = 0x86,
    /// 0x87: Not authorized.
    NOT_AUTHORIZED = 0x87,
    /// 0x88: Server unavailable (CONNACK).
    SERVER_UNAVAILABLE = 0x88,
    /// 0x89: Server busy.
    SERVER_BUSY = 0x89,
    /// 0x8A: Banned (CONNACK).
    BANNED = 0x8A,
    /// 0x8B: Server shutting down (DISCONNECT).
    SERVER_SHUTTING_DOWN = 0x8B,
    /// 0x8C: Bad authentication method.
    BAD_AUTHENTICATION_METHOD = 0x8C,
    /// 0x8D: Keep Alive timeout (DISCONNECT).
    KEEP_ALIVE_TIMEOUT = 0x8D,
    /// 0x8E: Session taken over (DISCONNECT).
    SESSION_TAKEN_OVER = 0x8E,
    /// 0x8F: Topic Filter invalid.
    TOPIC_FILTER_INVALID = 0x8F,
    /// 0x90: Topic Name invalid.
    TOPIC_NAME_INVALID = 0x90,
    /// 0x91: Packet Identifier in use.
    PACKET_IDENTIFIER_IN_USE = 0x91,
    /// 0x92: Packet Identifier not found.
    PACKET_IDENTIFIER_NOT_FOUND = 0x92,
    /// 0x93: Receive Maximum exceeded (DISCONNECT).
    RECEIVE_MAXIMUM_EXCEEDED = 0x93,
    /// 0x94: Topic Alias invalid (DISCONNECT).
    TOPIC_ALIAS_INVALID = 0x94,
    /// 0x95: Packet too large.
    PACKET_TOO_LARGE = 0x95,
    /// 0x96: Message rate too high (DISCONNECT).
    MESSAGE_RATE_TOO_HIGH = 0x96,
    /// 0x97: Quota exceeded.
    QUOTA_EXCEEDED = 0x97,
    /// 0x98: Administrative action (DISCONNECT).
    ADMINISTRATIVE_ACTION = 0x98,
    /// 0x99: Payload format invalid.
    PAYLOAD_FORMAT_INVALID = 0x99,
    /// 0x9A: Retain not supported.
    RETAIN_NOT_SUPPORTED = 0x9A,
    /// 0x9B: QoS not supported.
    QOS_NOT_SUPPORTED = 0x9B,
    /// 0x9C: Use another server.
    USE_ANOTHER_SERVER = 0x9C,
    /// 0x9D: Server moved.
    SERVER_MOVED = 0x9D,
    /// 0x9E: Shared Subscriptions not supported.
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E,
    /// 0x9F: Connection rate exceeded.
    CONNECTION_RATE_EXCEEDED = 0x9F,
    /// 0xA0: Maximum connect time (DISCONNECT).
    MAXIMUM_CONNECT_TIME = 0xA0,
    /// 0xA1: Subscription Identifiers not supported.
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1,
    /// 0xA2: Wildcard Subscriptions not supported.
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2,
}

impl ReasonCode {
    /// 0x00 under its DISCONNECT name: Normal disconnection.
    pub const NORMAL_DISCONNECTION: Self = Self(0x00);
    /// 0x00 under its SUBACK name: Granted QoS 0.
    pub const GRANTED_QOS_0: Self = Self(0x00);

    /// True for codes below 0x80, which report success; 0x80 and above report failure
    /// (MQTT 5.0 §2.4).
    pub const fn is_success(self) -> bool {
        self.0 < 0x80
    }

    /// Whether a 5.0 packet of type `packet` may carry this code (MQTT 5.0 §2.4, Table 2-6):
    /// encoding one that may not is an [`EncodeError::InvalidReasonCode`](crate::EncodeError).
    /// Packet types without a reason code allow none.
    ///
    /// ```
    /// use midge_codec::{PacketType, ReasonCode};
    ///
    /// assert!(ReasonCode::QUOTA_EXCEEDED.is_allowed_in(PacketType::PubAck));
    /// assert!(!ReasonCode::SESSION_TAKEN_OVER.is_allowed_in(PacketType::PubAck));
    /// assert!(ReasonCode::GRANTED_QOS_0.is_allowed_in(PacketType::SubAck));
    /// ```
    pub fn is_allowed_in(self, packet: crate::PacketType) -> bool {
        use crate::PacketType as T;
        let set = match packet {
            T::ConnAck => CONNACK_CODES,
            T::PubAck | T::PubRec => PUBACK_CODES,
            T::PubRel | T::PubComp => PUBREL_CODES,
            T::SubAck => SUBACK_CODES,
            T::UnsubAck => UNSUBACK_CODES,
            T::Disconnect => DISCONNECT_CODES,
            T::Auth => AUTH_CODES,
            T::Connect | T::Publish | T::Subscribe | T::Unsubscribe | T::PingReq | T::PingResp => {
                return false
            }
        };
        set.contains(self)
    }
}

impl fmt::Debug for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}(0x{:02X})", self.0),
            None => write!(f, "ReasonCode(0x{:02X})", self.0),
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Which reason codes each packet type may carry (MQTT 5.0 §2.4, Table 2-6), as a 256-bit set.
#[derive(Clone, Copy)]
pub(crate) struct CodeSet([u64; 4]);

impl CodeSet {
    // Only evaluated in constants, where an out-of-range index fails the build, not a peer.
    #[allow(clippy::indexing_slicing)]
    const fn of(codes: &[u8]) -> Self {
        let mut bits = [0u64; 4];
        let mut i = 0;
        while i < codes.len() {
            let c = codes[i] as usize;
            bits[c / 64] |= 1 << (c % 64);
            i += 1;
        }
        Self(bits)
    }

    pub(crate) fn contains(self, code: ReasonCode) -> bool {
        let c = code.0 as usize;
        self.0
            .get(c / 64)
            .is_some_and(|word| word & (1 << (c % 64)) != 0)
    }
}

/// CONNACK reason codes [MQTT-3.2.2-7]-[MQTT-3.2.2-8].
pub(crate) const CONNACK_CODES: CodeSet = CodeSet::of(&[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
]);
/// PUBACK and PUBREC reason codes (§3.4.2.1, §3.5.2.1).
pub(crate) const PUBACK_CODES: CodeSet =
    CodeSet::of(&[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99]);
/// PUBREL and PUBCOMP reason codes (§3.6.2.1, §3.7.2.1).
pub(crate) const PUBREL_CODES: CodeSet = CodeSet::of(&[0x00, 0x92]);
/// SUBACK reason codes (§3.9.3).
pub(crate) const SUBACK_CODES: CodeSet = CodeSet::of(&[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
]);
/// SUBACK return codes in 3.1 and 3.1.1 (§3.9.3 of 3.1.1).
pub(crate) const SUBACK_V3_CODES: CodeSet = CodeSet::of(&[0x00, 0x01, 0x02, 0x80]);
/// UNSUBACK reason codes (§3.11.3).
pub(crate) const UNSUBACK_CODES: CodeSet = CodeSet::of(&[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91]);
/// DISCONNECT reason codes (§3.14.2.1).
pub(crate) const DISCONNECT_CODES: CodeSet = CodeSet::of(&[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
]);
/// AUTH reason codes (§3.15.2.1).
pub(crate) const AUTH_CODES: CodeSet = CodeSet::of(&[0x00, 0x18, 0x19]);

/// The 3.x CONNACK return code for a reason code, where 3.x has one (3.1.1 §3.2.2.3).
pub(crate) const fn connack_v3_code(code: ReasonCode) -> Option<u8> {
    match code.0 {
        0x00 => Some(0),
        0x84 => Some(1),
        0x85 => Some(2),
        0x88 => Some(3),
        0x86 => Some(4),
        0x87 => Some(5),
        _ => None,
    }
}

/// The reason code for a 3.x CONNACK return code.
pub(crate) const fn connack_from_v3_code(code: u8) -> Option<ReasonCode> {
    match code {
        0 => Some(ReasonCode::SUCCESS),
        1 => Some(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION),
        2 => Some(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
        3 => Some(ReasonCode::SERVER_UNAVAILABLE),
        4 => Some(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        5 => Some(ReasonCode::NOT_AUTHORIZED),
        _ => None,
    }
}
