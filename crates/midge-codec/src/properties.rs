//! MQTT 5.0 properties (§2.2.2), one typed struct per packet type.
//!
//! Each struct holds exactly the properties its packet may carry, so a property in the wrong
//! place cannot be built, and decoding one is an error ([`DecodeError::PropertyNotAllowed`]).
//! The exception is [`WillProperties`], which keeps the properties of the message the will
//! becomes as [`PublishProperties`]: a Topic Alias or Subscription Identifier set there is an
//! [`EncodeError::PropertyNotAllowed`]. Under 3.x every property struct must be empty, or
//! encoding fails with [`EncodeError::RequiresV5`].

use alloc::vec::Vec;
use bytes::{BufMut, Bytes, BytesMut};
use core::num::{NonZeroU16, NonZeroU32};

mod publish;
mod will;
pub(crate) use publish::Overrides;
pub use publish::PublishProperties;
pub use will::WillProperties;

use crate::types::{ByteStr, PayloadFormat, QoS, SubscriptionId};
use crate::wire::{self, put_binary, put_varint, varint_len};
use crate::{DecodeError, EncodeError};

/// User properties: name/value pairs kept in the order they arrived (5.0 §3.1.2.11.8).
pub type UserProperties = Vec<(ByteStr, ByteStr)>;

/// A value type a property can hold.
pub(crate) trait WireValue: Sized {
    fn read(buf: &mut Bytes, id: u8) -> Result<Self, DecodeError>;
    fn len(&self, id: u8) -> Result<usize, EncodeError>;
    fn write(&self, buf: &mut BytesMut);
}

fn read_flag(buf: &mut Bytes, id: u8) -> Result<u8, DecodeError> {
    match wire::read_u8(buf)? {
        v @ (0 | 1) => Ok(v),
        _ => Err(DecodeError::InvalidPropertyValue(id)),
    }
}

impl WireValue for bool {
    fn read(buf: &mut Bytes, id: u8) -> Result<Self, DecodeError> {
        Ok(read_flag(buf, id)? == 1)
    }
    fn len(&self, _: u8) -> Result<usize, EncodeError> {
        Ok(1)
    }
    fn write(&self, buf: &mut BytesMut) {
        buf.put_u8(u8::from(*self));
    }
}

impl WireValue for PayloadFormat {
    fn read(buf: &mut Bytes, id: u8) -> Result<Self, DecodeError> {
        Ok(match read_flag(buf, id)? {
            0 => Self::Unspecified,
            _ => Self::Utf8,
        })
    }
    fn len(&self, _: u8) -> Result<usize, EncodeError> {
        Ok(1)
    }
    fn write(&self, buf: &mut BytesMut) {
        buf.put_u8(*self as u8);
    }
}

/// Only Maximum QoS holds a QoS, and it may be 0 or 1 (5.0 §3.2.2.3.4).
impl WireValue for QoS {
    fn read(buf: &mut Bytes, id: u8) -> Result<Self, DecodeError> {
        Ok(match read_flag(buf, id)? {
            0 => Self::AtMostOnce,
            _ => Self::AtLeastOnce,
        })
    }
    fn len(&self, id: u8) -> Result<usize, EncodeError> {
        match self {
            Self::ExactlyOnce => Err(EncodeError::InvalidPropertyValue(id)),
            _ => Ok(1),
        }
    }
    fn write(&self, buf: &mut BytesMut) {
        buf.put_u8(*self as u8);
    }
}

impl WireValue for u16 {
    fn read(buf: &mut Bytes, _: u8) -> Result<Self, DecodeError> {
        wire::read_u16(buf)
    }
    fn len(&self, _: u8) -> Result<usize, EncodeError> {
        Ok(2)
    }
    fn write(&self, buf: &mut BytesMut) {
        buf.put_u16(*self);
    }
}

impl WireValue for NonZeroU16 {
    fn read(buf: &mut Bytes, id: u8) -> Result<Self, DecodeError> {
        Self::new(wire::read_u16(buf)?).ok_or(DecodeError::InvalidPropertyValue(id))
    }
    fn len(&self, _: u8) -> Result<usize, EncodeError> {
        Ok(2)
    }
    fn write(&self, buf: &mut BytesMut) {
        buf.put_u16(self.get());
    }
}

impl WireValue for u32 {
    fn read(buf: &mut Bytes, _: u8) -> Result<Self, DecodeError> {
        wire::read_u32(buf)
    }
    fn len(&self, _: u8) -> Result<usize, EncodeError> {
        Ok(4)
    }
    fn write(&self, buf: &mut BytesMut) {
        buf.put_u32(*self);
    }
}

impl WireValue for NonZeroU32 {
    fn read(buf: &mut Bytes, id: u8) -> Result<Self, DecodeError> {
        Self::new(wire::read_u32(buf)?).ok_or(DecodeError::InvalidPropertyValue(id))
    }
    fn len(&self, _: u8) -> Result<usize, EncodeError> {
        Ok(4)
    }
    fn write(&self, buf: &mut BytesMut) {
        buf.put_u32(self.get());
    }
}

impl WireValue for SubscriptionId {
    fn read(buf: &mut Bytes, id: u8) -> Result<Self, DecodeError> {
        Self::new(wire::read_varint(buf)?).ok_or(DecodeError::InvalidPropertyValue(id))
    }
    fn len(&self, _: u8) -> Result<usize, EncodeError> {
        Ok(varint_len(self.get()))
    }
    fn write(&self, buf: &mut BytesMut) {
        put_varint(buf, self.get());
    }
}

impl WireValue for ByteStr {
    fn read(buf: &mut Bytes, _: u8) -> Result<Self, DecodeError> {
        wire::read_str(buf)
    }
    fn len(&self, _: u8) -> Result<usize, EncodeError> {
        wire::str_len(self)
    }
    fn write(&self, buf: &mut BytesMut) {
        put_binary(buf, self.as_bytes());
    }
}

impl WireValue for Bytes {
    fn read(buf: &mut Bytes, _: u8) -> Result<Self, DecodeError> {
        wire::read_binary(buf)
    }
    fn len(&self, _: u8) -> Result<usize, EncodeError> {
        wire::field_len(self)
    }
    fn write(&self, buf: &mut BytesMut) {
        put_binary(buf, self);
    }
}

impl WireValue for (ByteStr, ByteStr) {
    fn read(buf: &mut Bytes, _: u8) -> Result<Self, DecodeError> {
        Ok((wire::read_str(buf)?, wire::read_str(buf)?))
    }
    fn len(&self, _: u8) -> Result<usize, EncodeError> {
        Ok(wire::str_len(&self.0)? + wire::str_len(&self.1)?)
    }
    fn write(&self, buf: &mut BytesMut) {
        put_binary(buf, self.0.as_bytes());
        put_binary(buf, self.1.as_bytes());
    }
}

/// What `Debug` shows for a secret property: whether it is set.
struct Redacted(bool);

impl core::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(if self.0 { "Some(<redacted>)" } else { "None" })
    }
}

/// Where a property's values live in its struct: `Option` for properties that may appear once,
/// `Vec` for those that may repeat (User Property, and Subscription Identifier on PUBLISH).
pub(crate) trait Slot {
    fn put(&mut self, buf: &mut Bytes, id: u8) -> Result<(), DecodeError>;
    /// Encoded size of every occurrence, identifier bytes included.
    fn encoded_len(&self, id: u8) -> Result<usize, EncodeError>;
    fn encode(&self, buf: &mut BytesMut, id: u8);
    fn is_unset(&self) -> bool;
}

impl<T: WireValue> Slot for Option<T> {
    fn put(&mut self, buf: &mut Bytes, id: u8) -> Result<(), DecodeError> {
        if self.is_some() {
            return Err(DecodeError::DuplicateProperty(id));
        }
        *self = Some(T::read(buf, id)?);
        Ok(())
    }
    fn encoded_len(&self, id: u8) -> Result<usize, EncodeError> {
        match self {
            Some(v) => Ok(1 + v.len(id)?),
            None => Ok(0),
        }
    }
    fn encode(&self, buf: &mut BytesMut, id: u8) {
        if let Some(v) = self {
            buf.put_u8(id);
            v.write(buf);
        }
    }
    fn is_unset(&self) -> bool {
        self.is_none()
    }
}

impl<T: WireValue> Slot for Vec<T> {
    fn put(&mut self, buf: &mut Bytes, id: u8) -> Result<(), DecodeError> {
        self.push(T::read(buf, id)?);
        Ok(())
    }
    fn encoded_len(&self, id: u8) -> Result<usize, EncodeError> {
        self.iter().try_fold(0, |sum, v| Ok(sum + 1 + v.len(id)?))
    }
    fn encode(&self, buf: &mut BytesMut, id: u8) {
        for v in self {
            buf.put_u8(id);
            v.write(buf);
        }
    }
    fn is_unset(&self) -> bool {
        self.is_empty()
    }
}

/// Property identifiers (5.0 §2.2.2.2, Table 2-4).
#[allow(missing_docs)]
pub mod id {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

macro_rules! property_set {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty = $id:ident, )*
        }
    ) => {
        $(#[$meta])*
        ///
        /// `Debug` shows whether Authentication Data is set, never the data: it carries
        /// secrets (SCRAM proofs, tokens).
        #[derive(Clone, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
            /// User Property (0x26), any number of times, order preserved.
            pub user_properties: UserProperties,
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                let mut s = f.debug_struct(stringify!($name));
                $(
                    if id::$id == id::AUTHENTICATION_DATA {
                        s.field(stringify!($field), &Redacted(!self.$field.is_unset()));
                    } else {
                        s.field(stringify!($field), &self.$field);
                    }
                )*
                s.field("user_properties", &self.user_properties);
                s.finish()
            }
        }

        impl $name {
            /// True if no property is set: the only form 3.x can encode.
            pub fn is_empty(&self) -> bool {
                $( self.$field.is_unset() && )* self.user_properties.is_empty()
            }

            /// Decodes a property block: every byte of `block` belongs to it.
            pub(crate) fn decode(mut block: Bytes) -> Result<Self, DecodeError> {
                let mut props = Self::default();
                while !block.is_empty() {
                    // The identifier is a variable byte integer (§2.2.2.2); every defined one
                    // fits in one byte, so anything longer is unknown.
                    let raw = wire::read_varint(&mut block)?;
                    let code = u8::try_from(raw).map_err(|_| DecodeError::PropertyNotAllowed(0xFF))?;
                    match code {
                        $( id::$id => props.$field.put(&mut block, code)?, )*
                        id::USER_PROPERTY => props.user_properties.put(&mut block, code)?,
                        other => return Err(DecodeError::PropertyNotAllowed(other)),
                    }
                }
                Ok(props)
            }

            /// Size of the property block, without its length prefix.
            pub(crate) fn encoded_len(&self) -> Result<usize, EncodeError> {
                Ok(0 $( + self.$field.encoded_len(id::$id)? )*
                    + self.user_properties.encoded_len(id::USER_PROPERTY)?)
            }

            /// Writes the property block; `len` is what [`Self::encoded_len`] returned.
            pub(crate) fn encode(&self, buf: &mut BytesMut, len: usize) {
                put_varint(buf, len as u32);
                $( self.$field.encode(buf, id::$id); )*
                self.user_properties.encode(buf, id::USER_PROPERTY);
            }
        }
    };
}

property_set! {
    /// CONNECT properties (5.0 §3.1.2.11).
    ConnectProperties {
        /// Session Expiry Interval in seconds (0x11). Absent means 0: the session ends with the
        /// connection.
        session_expiry_interval: Option<u32> = SESSION_EXPIRY_INTERVAL,
        /// Receive Maximum (0x21): QoS 1 and 2 publishes the client will process at once.
        receive_maximum: Option<NonZeroU16> = RECEIVE_MAXIMUM,
        /// Maximum Packet Size the client accepts (0x27).
        maximum_packet_size: Option<NonZeroU32> = MAXIMUM_PACKET_SIZE,
        /// Topic Alias Maximum the client accepts (0x22).
        topic_alias_maximum: Option<u16> = TOPIC_ALIAS_MAXIMUM,
        /// Request Response Information (0x19).
        request_response_information: Option<bool> = REQUEST_RESPONSE_INFORMATION,
        /// Request Problem Information (0x17).
        request_problem_information: Option<bool> = REQUEST_PROBLEM_INFORMATION,
        /// Authentication Method for enhanced authentication (0x15).
        authentication_method: Option<ByteStr> = AUTHENTICATION_METHOD,
        /// Authentication Data (0x16).
        authentication_data: Option<Bytes> = AUTHENTICATION_DATA,
    }
}

property_set! {
    /// CONNACK properties (5.0 §3.2.2.3).
    ConnAckProperties {
        /// Session Expiry Interval the server uses (0x11).
        session_expiry_interval: Option<u32> = SESSION_EXPIRY_INTERVAL,
        /// Receive Maximum of the server (0x21).
        receive_maximum: Option<NonZeroU16> = RECEIVE_MAXIMUM,
        /// Maximum QoS the server supports (0x24); only 0 or 1 may be sent.
        maximum_qos: Option<QoS> = MAXIMUM_QOS,
        /// Retain Available (0x25).
        retain_available: Option<bool> = RETAIN_AVAILABLE,
        /// Maximum Packet Size the server accepts (0x27).
        maximum_packet_size: Option<NonZeroU32> = MAXIMUM_PACKET_SIZE,
        /// Assigned Client Identifier (0x12).
        assigned_client_identifier: Option<ByteStr> = ASSIGNED_CLIENT_IDENTIFIER,
        /// Topic Alias Maximum the server accepts (0x22).
        topic_alias_maximum: Option<u16> = TOPIC_ALIAS_MAXIMUM,
        /// Reason String (0x1F).
        reason_string: Option<ByteStr> = REASON_STRING,
        /// Wildcard Subscription Available (0x28).
        wildcard_subscription_available: Option<bool> = WILDCARD_SUBSCRIPTION_AVAILABLE,
        /// Subscription Identifiers Available (0x29).
        subscription_identifiers_available: Option<bool> = SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        /// Shared Subscription Available (0x2A).
        shared_subscription_available: Option<bool> = SHARED_SUBSCRIPTION_AVAILABLE,
        /// Server Keep Alive in seconds (0x13), which overrides the client's.
        server_keep_alive: Option<u16> = SERVER_KEEP_ALIVE,
        /// Response Information (0x1A).
        response_information: Option<ByteStr> = RESPONSE_INFORMATION,
        /// Server Reference (0x1C).
        server_reference: Option<ByteStr> = SERVER_REFERENCE,
        /// Authentication Method (0x15).
        authentication_method: Option<ByteStr> = AUTHENTICATION_METHOD,
        /// Authentication Data (0x16).
        authentication_data: Option<Bytes> = AUTHENTICATION_DATA,
    }
}

property_set! {
    /// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK (5.0 §3.4.2.2 and
    /// following).
    AckProperties {
        /// Reason String (0x1F).
        reason_string: Option<ByteStr> = REASON_STRING,
    }
}

property_set! {
    /// SUBSCRIBE properties (5.0 §3.8.2.1).
    SubscribeProperties {
        /// Subscription Identifier (0x0B), at most once (5.0 §3.8.2.1.2).
        subscription_identifier: Option<SubscriptionId> = SUBSCRIPTION_IDENTIFIER,
    }
}

property_set! {
    /// UNSUBSCRIBE properties (5.0 §3.10.2.1): only user properties.
    UnsubscribeProperties {}
}

property_set! {
    /// DISCONNECT properties (5.0 §3.14.2.2).
    DisconnectProperties {
        /// Session Expiry Interval (0x11), client to server only.
        session_expiry_interval: Option<u32> = SESSION_EXPIRY_INTERVAL,
        /// Reason String (0x1F).
        reason_string: Option<ByteStr> = REASON_STRING,
        /// Server Reference (0x1C).
        server_reference: Option<ByteStr> = SERVER_REFERENCE,
    }
}

property_set! {
    /// AUTH properties (5.0 §3.15.2.2).
    AuthProperties {
        /// Authentication Method (0x15).
        authentication_method: Option<ByteStr> = AUTHENTICATION_METHOD,
        /// Authentication Data (0x16).
        authentication_data: Option<Bytes> = AUTHENTICATION_DATA,
        /// Reason String (0x1F).
        reason_string: Option<ByteStr> = REASON_STRING,
    }
}

#[cfg(test)]
mod debug_tests {
    use super::*;
    use alloc::format;

    #[test]
    fn debug_hides_authentication_data_and_shows_the_rest() {
        let connect = ConnectProperties {
            authentication_method: Some(ByteStr::from_static("SCRAM-SHA-256")),
            authentication_data: Some(Bytes::from_static(b"n,,n=alice,r=secret-nonce")),
            ..Default::default()
        };
        let auth = AuthProperties {
            authentication_data: Some(Bytes::from_static(b"p=secret-proof")),
            ..Default::default()
        };
        let connack = ConnAckProperties {
            authentication_data: Some(Bytes::from_static(b"v=secret-signature")),
            ..Default::default()
        };
        for text in [
            format!("{connect:?}"),
            format!("{auth:?}"),
            format!("{connack:?}"),
        ] {
            assert!(!text.contains("secret"), "{text}");
            assert!(
                text.contains("authentication_data: Some(<redacted>)"),
                "{text}"
            );
        }
        assert!(format!("{connect:?}").contains("SCRAM-SHA-256"));
        assert!(format!("{:?}", ConnectProperties::default()).contains("authentication_data: None"));
    }
}
