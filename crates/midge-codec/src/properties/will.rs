//! Will properties: the Will Delay Interval, and the properties of the PUBLISH the will becomes.

use bytes::{BufMut, Bytes, BytesMut};

use super::{id, PublishProperties};
use crate::wire::put_varint;
use crate::{DecodeError, EncodeError};

/// Will properties, in the CONNECT payload (5.0 §3.1.3.2).
///
/// The Will Delay Interval is the server's to read; every other will property is a property
/// of the Application Message the server publishes as the will, so they are kept as that
/// message's [`PublishProperties`]: Payload Format Indicator and Message Expiry Interval as
/// fields, Content Type, Response Topic, Correlation Data and User Properties encoded, a slice
/// of the decoded CONNECT, read through accessors. A decoded will therefore holds about its
/// size on the wire, however many user properties it carries, and becomes a message without
/// being copied.
///
/// Topic Alias and Subscription Identifier are PUBLISH properties but not will properties:
/// decoding one is [`DecodeError::PropertyNotAllowed`], and encoding a will whose
/// [`message`](Self::message) sets one is [`EncodeError::PropertyNotAllowed`].
///
/// Encoding writes Will Delay Interval, Payload Format Indicator, Message Expiry Interval,
/// Content Type, Response Topic, Correlation Data, then the User Properties in their order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WillProperties {
    /// Will Delay Interval in seconds (0x18). Absent means 0: the will is published as soon as
    /// the connection closes (5.0 §3.1.3.2.2).
    pub will_delay_interval: Option<u32>,
    /// The properties the will is published with (5.0 §3.1.3.2.3 to §3.1.3.2.8): Payload
    /// Format Indicator (0x01), Message Expiry Interval (0x02), Content Type (0x03), Response
    /// Topic (0x08), Correlation Data (0x09) and User Properties (0x26). Its Topic Alias must be
    /// `None` and it must carry no Subscription Identifier.
    pub message: PublishProperties,
}

/// The will properties kept encoded in [`PublishProperties`], in the order they are written.
const ENCODED: [u8; 4] = [
    id::CONTENT_TYPE,
    id::RESPONSE_TOPIC,
    id::CORRELATION_DATA,
    id::USER_PROPERTY,
];

impl WillProperties {
    /// True if no property is set: the only form 3.x can encode.
    pub fn is_empty(&self) -> bool {
        self.will_delay_interval.is_none() && self.message.is_empty()
    }

    /// Bytes the properties take when encoded, without the block's length prefix. Unlike
    /// encoding, this does not check them.
    pub(crate) fn size(&self) -> usize {
        usize::from(self.will_delay_interval.is_some()) * 5 + self.message.encoded_len()
    }

    /// Decodes a property block: every byte of `block` belongs to it.
    pub(crate) fn decode(block: Bytes) -> Result<Self, DecodeError> {
        let (message, will_delay_interval) = PublishProperties::decode_will(block)?;
        Ok(Self {
            will_delay_interval,
            message,
        })
    }

    /// Size of the property block, without its length prefix.
    pub(crate) fn encoded_len(&self) -> Result<usize, EncodeError> {
        if self.message.topic_alias.is_some() {
            return Err(EncodeError::PropertyNotAllowed(id::TOPIC_ALIAS));
        }
        if self.message.has_subscription_identifiers() {
            return Err(EncodeError::PropertyNotAllowed(id::SUBSCRIPTION_IDENTIFIER));
        }
        Ok(self.size())
    }

    /// Writes the property block; `len` is what [`Self::encoded_len`] returned.
    pub(crate) fn encode(&self, buf: &mut BytesMut, len: usize) {
        put_varint(buf, len as u32);
        if let Some(v) = self.will_delay_interval {
            buf.put_u8(id::WILL_DELAY_INTERVAL);
            buf.put_u32(v);
        }
        let message = &self.message;
        if let Some(v) = message.payload_format_indicator {
            buf.put_u8(id::PAYLOAD_FORMAT_INDICATOR);
            buf.put_u8(v as u8);
        }
        if let Some(v) = message.message_expiry_interval {
            buf.put_u8(id::MESSAGE_EXPIRY_INTERVAL);
            buf.put_u32(v);
        }
        for code in ENCODED {
            message.put_entries(buf, code);
        }
    }
}
