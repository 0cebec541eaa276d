//! PUBLISH properties: the three scalars every hop reads are fields, the rest stays encoded.

use alloc::vec::Vec;
use bytes::{BufMut, Bytes, BytesMut};
use core::fmt;
use core::num::NonZeroU16;

use super::id;
use crate::types::{ByteStr, PayloadFormat, SubscriptionId};
use crate::wire::{self, parse_varint, put_binary, put_varint, varint_len};
use crate::{DecodeError, EncodeError};

/// PUBLISH properties (5.0 §3.3.2.3).
///
/// Payload Format Indicator, Message Expiry Interval and Topic Alias, which a client or a
/// broker reads for every message, are plain fields. Response Topic, Correlation Data, Content
/// Type, User Properties and Subscription Identifiers stay in their encoded form, a slice of the
/// decoded packet (validated when it was decoded), so decoding a PUBLISH allocates nothing and
/// a `PublishProperties` stays small. Read them with the accessors ([`Self::response_topic`],
/// [`Self::user_properties`], ...) and change them with the setters, which check the value as
/// encoding would and re-encode that part.
///
/// Equality compares what the properties mean: the three fields, then each other property in
/// the order its own values arrived.
///
/// A will carries the properties it is published with in this form too
/// ([`WillProperties::message`](super::WillProperties::message)).
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct PublishProperties {
    /// Payload Format Indicator (0x01).
    pub payload_format_indicator: Option<PayloadFormat>,
    /// Message Expiry Interval in seconds (0x02).
    pub message_expiry_interval: Option<u32>,
    /// Topic Alias (0x23); zero is not a valid alias [MQTT-3.3.2-8].
    pub topic_alias: Option<NonZeroU16>,
    /// Encoded, validated property entries (identifier and value). It holds every entry that is
    /// not one of the three fields above; after decoding it may hold those too (and, decoded
    /// from will properties, the Will Delay Interval), and they are skipped: the fields are
    /// what counts.
    raw: Bytes,
    /// Encoded length of the entries of `raw` that are not one of the three fields. Equal to
    /// `raw.len()` when `raw` holds nothing else.
    rest_len: u32,
    /// Whether `raw` holds a Subscription Identifier, so that sending the properties with
    /// other identifiers ([`PublishRef`](crate::PublishRef)) needs no look for them in the
    /// usual case, where there are none.
    has_ids: bool,
}

/// True for the properties kept as fields, here or, for the Will Delay Interval, in
/// [`WillProperties`](super::WillProperties).
#[inline]
const fn is_field(code: u8) -> bool {
    matches!(
        code,
        id::PAYLOAD_FORMAT_INDICATOR
            | id::MESSAGE_EXPIRY_INTERVAL
            | id::TOPIC_ALIAS
            | id::WILL_DELAY_INTERVAL
    )
}

/// Length of a string or binary field at the front of `b`, prefix included, if it is all there.
fn field_len(b: &[u8]) -> Option<usize> {
    let [hi, lo, ..] = *b else {
        return None;
    };
    let len = 2 + usize::from(u16::from_be_bytes([hi, lo]));
    (b.len() >= len).then_some(len)
}

/// The identifier and whole length (identifier included) of the entry at the front of `cur`,
/// which was validated when it was decoded or set.
fn entry_len(cur: &[u8]) -> Option<(u8, usize)> {
    let (&code, rest) = cur.split_first()?;
    let value = match code {
        id::PAYLOAD_FORMAT_INDICATOR => 1,
        id::MESSAGE_EXPIRY_INTERVAL | id::WILL_DELAY_INTERVAL => 4,
        id::TOPIC_ALIAS => 2,
        id::RESPONSE_TOPIC | id::CORRELATION_DATA | id::CONTENT_TYPE => field_len(rest)?,
        id::USER_PROPERTY => {
            let name = field_len(rest)?;
            name + field_len(rest.get(name..)?)?
        }
        id::SUBSCRIPTION_IDENTIFIER => parse_varint(rest).ok()??.1,
        _ => return None,
    };
    (rest.len() >= value).then_some((code, 1 + value))
}

/// The entries of `raw` that are not fields: identifier, start and end in `raw`.
struct Entries<'a> {
    raw: &'a [u8],
    pos: usize,
}

impl Iterator for Entries<'_> {
    type Item = (u8, usize, usize);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (code, len) = entry_len(self.raw.get(self.pos..)?)?;
            let start = self.pos;
            self.pos += len;
            if !is_field(code) {
                return Some((code, start, self.pos));
            }
        }
    }
}

/// Reads a string or binary field starting at `at` in `raw`.
fn field_at(raw: &Bytes, at: usize) -> Option<(Bytes, usize)> {
    let len = field_len(raw.get(at..)?)?;
    Some((raw.slice(at + 2..at + len), at + len))
}

/// Checks the field of a string property as encoding does.
fn check_str(s: &ByteStr) -> Result<(), EncodeError> {
    wire::str_len(s).map(drop)
}

impl PublishProperties {
    /// True if no property is set: the only form 3.x can encode.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.payload_format_indicator.is_none()
            && self.message_expiry_interval.is_none()
            && self.topic_alias.is_none()
            && self.rest_len == 0
    }

    /// True if no property is set but those a [`PublishRef`](crate::PublishRef) sends in
    /// place of the properties' own: Message Expiry Interval, Topic Alias.
    #[inline]
    pub(crate) fn only_replaceable(&self) -> bool {
        self.payload_format_indicator.is_none() && self.rest_len == 0
    }

    /// The same properties holding only their own bytes. Decoded properties share the memory
    /// of their packet; call this where they are kept long after it (see
    /// [`ByteStr::unshared`]).
    #[must_use]
    pub fn unshared(&self) -> Self {
        Self {
            raw: Bytes::copy_from_slice(&self.raw),
            ..self.clone()
        }
    }

    /// Bytes of the encoded property block, without its length prefix: what the properties
    /// hold, once [unshared](Self::unshared).
    #[inline]
    pub fn encoded_size(&self) -> usize {
        self.encoded_len()
    }

    fn entries(&self) -> Entries<'_> {
        Entries {
            raw: &self.raw,
            pos: 0,
        }
    }

    /// The value of the single-valued property `code`, without its identifier.
    fn single(&self, code: u8) -> Option<Bytes> {
        let (_, start, _) = self.entries().find(|&(c, _, _)| c == code)?;
        field_at(&self.raw, start + 1).map(|(value, _)| value)
    }

    /// Response Topic (0x08).
    pub fn response_topic(&self) -> Option<ByteStr> {
        self.single(id::RESPONSE_TOPIC).map(ByteStr::from_checked)
    }

    /// Correlation Data (0x09).
    pub fn correlation_data(&self) -> Option<Bytes> {
        self.single(id::CORRELATION_DATA)
    }

    /// Content Type (0x03).
    pub fn content_type(&self) -> Option<ByteStr> {
        self.single(id::CONTENT_TYPE).map(ByteStr::from_checked)
    }

    /// User Properties (0x26), name and value, in the order they arrived.
    pub fn user_properties(&self) -> impl Iterator<Item = (ByteStr, ByteStr)> + '_ {
        self.entries()
            .filter(|&(code, _, _)| code == id::USER_PROPERTY)
            .filter_map(|(_, start, _)| {
                let (name, next) = field_at(&self.raw, start + 1)?;
                let (value, _) = field_at(&self.raw, next)?;
                Some((ByteStr::from_checked(name), ByteStr::from_checked(value)))
            })
    }

    /// Subscription Identifiers (0x0B) of every matching subscription, in order; server to
    /// client only [MQTT-3.3.4-6].
    pub fn subscription_identifiers(&self) -> impl Iterator<Item = SubscriptionId> + '_ {
        self.entries()
            .filter(|&(code, _, _)| code == id::SUBSCRIPTION_IDENTIFIER)
            .filter_map(|(_, start, end)| {
                let (value, _) = parse_varint(self.raw.get(start + 1..end)?).ok()??;
                SubscriptionId::new(value)
            })
    }

    /// The identifiers of the properties, each as often as it occurs, in the order they
    /// arrived for decoded properties; the Payload Format Indicator, Message Expiry
    /// Interval and Topic Alias that were set rather than decoded come last. For printing
    /// properties as they were sent.
    pub fn identifiers(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut pos = 0;
        let set = |code: u8| match code {
            id::PAYLOAD_FORMAT_INDICATOR => self.payload_format_indicator.is_some(),
            id::MESSAGE_EXPIRY_INTERVAL => self.message_expiry_interval.is_some(),
            id::TOPIC_ALIAS => self.topic_alias.is_some(),
            _ => false,
        };
        while let Some((code, len)) = entry_len(self.raw.get(pos..).unwrap_or_default()) {
            pos += len;
            if !is_field(code) || (set(code) && !out.contains(&code)) {
                out.push(code);
            }
        }
        for code in [
            id::PAYLOAD_FORMAT_INDICATOR,
            id::MESSAGE_EXPIRY_INTERVAL,
            id::TOPIC_ALIAS,
        ] {
            if set(code) && !out.contains(&code) {
                out.push(code);
            }
        }
        out
    }

    /// True if the PUBLISH carries at least one Subscription Identifier.
    #[inline]
    pub fn has_subscription_identifiers(&self) -> bool {
        self.has_ids
    }

    /// Replaces every entry of `code` by what `add` writes. Entries of other properties keep
    /// their order; the new ones follow them.
    fn replace(&mut self, code: u8, add: impl FnOnce(&mut BytesMut)) {
        let mut out = BytesMut::with_capacity(self.rest_len as usize);
        for (c, start, end) in self.entries() {
            if c != code {
                out.put_slice(self.raw.get(start..end).unwrap_or_default());
            }
        }
        add(&mut out);
        // Beyond 4 GiB the length saturates, which encoding reports as too large a packet.
        self.rest_len = u32::try_from(out.len()).unwrap_or(u32::MAX);
        self.raw = out.freeze();
        self.has_ids = self
            .entries()
            .any(|(c, _, _)| c == id::SUBSCRIPTION_IDENTIFIER);
    }

    /// Sets or clears the Response Topic (0x08).
    ///
    /// # Errors
    ///
    /// [`EncodeError::NullCharacter`] or [`EncodeError::FieldTooLong`], as encoding would
    /// report them; the properties are then unchanged.
    pub fn set_response_topic(&mut self, topic: Option<ByteStr>) -> Result<(), EncodeError> {
        self.set_str(id::RESPONSE_TOPIC, topic)
    }

    /// Sets or clears the Content Type (0x03).
    ///
    /// # Errors
    ///
    /// As [`Self::set_response_topic`].
    pub fn set_content_type(&mut self, content_type: Option<ByteStr>) -> Result<(), EncodeError> {
        self.set_str(id::CONTENT_TYPE, content_type)
    }

    fn set_str(&mut self, code: u8, value: Option<ByteStr>) -> Result<(), EncodeError> {
        if let Some(s) = &value {
            check_str(s)?;
        }
        self.replace(code, |out| {
            if let Some(s) = value {
                out.put_u8(code);
                put_binary(out, s.as_bytes());
            }
        });
        Ok(())
    }

    /// Sets or clears the Correlation Data (0x09).
    ///
    /// # Errors
    ///
    /// [`EncodeError::FieldTooLong`]; the properties are then unchanged.
    pub fn set_correlation_data(&mut self, data: Option<Bytes>) -> Result<(), EncodeError> {
        if let Some(d) = &data {
            wire::field_len(d)?;
        }
        self.replace(id::CORRELATION_DATA, |out| {
            if let Some(d) = data {
                out.put_u8(id::CORRELATION_DATA);
                put_binary(out, &d);
            }
        });
        Ok(())
    }

    /// Appends a User Property (0x26).
    ///
    /// # Errors
    ///
    /// As [`Self::set_response_topic`]; the properties are then unchanged.
    pub fn push_user_property(
        &mut self,
        name: impl Into<ByteStr>,
        value: impl Into<ByteStr>,
    ) -> Result<(), EncodeError> {
        let (name, value) = (name.into(), value.into());
        check_str(&name)?;
        check_str(&value)?;
        // A new entry goes last, so nothing needs to be rebuilt but the buffer.
        self.replace(0, |out| put_user_property(out, &name, &value));
        Ok(())
    }

    /// Replaces every User Property (0x26).
    ///
    /// # Errors
    ///
    /// [`EncodeError::NullCharacter`] or [`EncodeError::FieldTooLong`]; the properties are then
    /// unchanged.
    pub fn set_user_properties<I>(&mut self, properties: I) -> Result<(), EncodeError>
    where
        I: IntoIterator<Item = (ByteStr, ByteStr)>,
    {
        let mut new = BytesMut::new();
        for (name, value) in properties {
            check_str(&name)?;
            check_str(&value)?;
            put_user_property(&mut new, &name, &value);
        }
        self.replace(id::USER_PROPERTY, |out| out.put_slice(&new));
        Ok(())
    }

    /// Replaces every Subscription Identifier (0x0B).
    pub fn set_subscription_identifiers(&mut self, ids: &[SubscriptionId]) {
        self.replace(id::SUBSCRIPTION_IDENTIFIER, |out| {
            for sub in ids {
                out.put_u8(id::SUBSCRIPTION_IDENTIFIER);
                put_varint(out, sub.get());
            }
        });
    }

    /// Removes every Subscription Identifier (0x0B), as a server does before it forwards a
    /// message; this allocates only if there was one.
    pub fn clear_subscription_identifiers(&mut self) {
        if self.has_subscription_identifiers() {
            self.set_subscription_identifiers(&[]);
        }
    }

    /// Decodes a property block: every byte of `block` belongs to it.
    pub(crate) fn decode(block: Bytes) -> Result<Self, DecodeError> {
        Self::decode_block::<false>(block).map(|(props, _)| props)
    }

    /// Decodes a will property block (5.0 §3.1.3.2): the properties of a PUBLISH but Topic
    /// Alias and Subscription Identifier, and the Will Delay Interval, which is returned apart
    /// and stays in `raw` as a skipped entry.
    pub(super) fn decode_will(block: Bytes) -> Result<(Self, Option<u32>), DecodeError> {
        Self::decode_block::<true>(block)
    }

    /// Writes the entries of `code` kept encoded, in the order they arrived.
    pub(super) fn put_entries(&self, buf: &mut BytesMut, code: u8) {
        for (_, start, end) in self.entries().filter(|&(c, _, _)| c == code) {
            buf.put_slice(self.raw.get(start..end).unwrap_or_default());
        }
    }

    /// [`Self::decode`] for a PUBLISH, or [`Self::decode_will`] if `WILL`.
    #[inline(always)]
    fn decode_block<const WILL: bool>(block: Bytes) -> Result<(Self, Option<u32>), DecodeError> {
        let mut props = Self::default();
        let mut will_delay_interval = None;
        let mut cur: &[u8] = &block;
        // Which single-valued kept-encoded properties were seen: bit per identifier below 16.
        let mut seen: u16 = 0;
        let mut rest = 0usize;
        while let Some((&first, after)) = cur.split_first() {
            // The identifier is a variable byte integer (§2.2.2.2); every defined one fits in
            // one byte, so anything longer is unknown.
            if first & 0x80 != 0 {
                let (raw, _) = parse_varint(cur)?.ok_or(DecodeError::LengthOutOfBounds)?;
                let code = u8::try_from(raw).map_err(|_| DecodeError::PropertyNotAllowed(0xFF))?;
                return Err(DecodeError::PropertyNotAllowed(code));
            }
            let code = first;
            cur = after;
            match code {
                id::PAYLOAD_FORMAT_INDICATOR => {
                    if props.payload_format_indicator.is_some() {
                        return Err(DecodeError::DuplicateProperty(code));
                    }
                    let (&v, after) = cur.split_first().ok_or(DecodeError::LengthOutOfBounds)?;
                    props.payload_format_indicator = Some(match v {
                        0 => PayloadFormat::Unspecified,
                        1 => PayloadFormat::Utf8,
                        _ => return Err(DecodeError::InvalidPropertyValue(code)),
                    });
                    cur = after;
                }
                id::MESSAGE_EXPIRY_INTERVAL => {
                    if props.message_expiry_interval.is_some() {
                        return Err(DecodeError::DuplicateProperty(code));
                    }
                    let (v, after) = cur
                        .split_first_chunk::<4>()
                        .ok_or(DecodeError::LengthOutOfBounds)?;
                    props.message_expiry_interval = Some(u32::from_be_bytes(*v));
                    cur = after;
                }
                id::WILL_DELAY_INTERVAL if WILL => {
                    if will_delay_interval.is_some() {
                        return Err(DecodeError::DuplicateProperty(code));
                    }
                    let (v, after) = cur
                        .split_first_chunk::<4>()
                        .ok_or(DecodeError::LengthOutOfBounds)?;
                    will_delay_interval = Some(u32::from_be_bytes(*v));
                    cur = after;
                }
                // Not will properties (5.0 §3.1.3.2): they fall to `PropertyNotAllowed` below.
                id::TOPIC_ALIAS if !WILL => {
                    if props.topic_alias.is_some() {
                        return Err(DecodeError::DuplicateProperty(code));
                    }
                    let (v, after) = cur
                        .split_first_chunk::<2>()
                        .ok_or(DecodeError::LengthOutOfBounds)?;
                    props.topic_alias = Some(
                        NonZeroU16::new(u16::from_be_bytes(*v))
                            .ok_or(DecodeError::InvalidPropertyValue(code))?,
                    );
                    cur = after;
                }
                id::RESPONSE_TOPIC | id::CORRELATION_DATA | id::CONTENT_TYPE => {
                    let bit = 1u16 << code;
                    if seen & bit != 0 {
                        return Err(DecodeError::DuplicateProperty(code));
                    }
                    seen |= bit;
                    let len = if code == id::CORRELATION_DATA {
                        binary(cur)?
                    } else {
                        string(cur)?
                    };
                    cur = cur.get(len..).unwrap_or_default();
                    rest += 1 + len;
                }
                id::SUBSCRIPTION_IDENTIFIER if !WILL => {
                    let (v, len) = parse_varint(cur)?.ok_or(DecodeError::LengthOutOfBounds)?;
                    if v == 0 {
                        return Err(DecodeError::InvalidPropertyValue(code));
                    }
                    cur = cur.get(len..).unwrap_or_default();
                    rest += 1 + len;
                    props.has_ids = true;
                }
                id::USER_PROPERTY => {
                    let name = string(cur)?;
                    cur = cur.get(name..).unwrap_or_default();
                    let value = string(cur)?;
                    cur = cur.get(value..).unwrap_or_default();
                    rest += 1 + name + value;
                }
                other => return Err(DecodeError::PropertyNotAllowed(other)),
            }
        }
        // A block fits a packet, so its length fits a u32.
        props.rest_len = rest as u32;
        props.raw = block;
        Ok((props, will_delay_interval))
    }

    /// Size of the property block, without its length prefix.
    #[inline]
    pub(crate) fn encoded_len(&self) -> usize {
        self.encoded_len_as(&self.overrides())
    }

    /// The properties' own values of what [`Overrides`] can replace.
    #[inline]
    fn overrides(&self) -> Overrides<'static> {
        Overrides {
            message_expiry_interval: self.message_expiry_interval,
            topic_alias: self.topic_alias,
            subscription_identifiers: None,
        }
    }

    /// Encoded length of the Subscription Identifier entries of `raw`.
    #[cold]
    fn own_ids_len(&self) -> usize {
        self.entries()
            .filter(|&(c, _, _)| c == id::SUBSCRIPTION_IDENTIFIER)
            .map(|(_, start, end)| end - start)
            .sum()
    }

    /// Size of the property block as sent with `o` in place of the properties' own values,
    /// without its length prefix.
    #[inline]
    pub(crate) fn encoded_len_as(&self, o: &Overrides<'_>) -> usize {
        let mut rest = self.rest_len as usize;
        if let Some(ids) = o.subscription_identifiers {
            if self.has_ids {
                rest -= self.own_ids_len();
            }
            rest += ids.iter().map(|i| 1 + varint_len(i.get())).sum::<usize>();
        }
        usize::from(self.payload_format_indicator.is_some()) * 2
            + usize::from(o.message_expiry_interval.is_some()) * 5
            + usize::from(o.topic_alias.is_some()) * 3
            + rest
    }

    /// Writes the property block as sent with `o`; `len` is what [`Self::encoded_len_as`]
    /// returned for it. The entries kept encoded are copied as they are, in one piece when
    /// nothing is to be left out of them.
    #[inline]
    pub(crate) fn encode_as(&self, buf: &mut BytesMut, len: usize, o: &Overrides<'_>) {
        put_varint(buf, len as u32);
        if let Some(v) = self.payload_format_indicator {
            buf.put_u8(id::PAYLOAD_FORMAT_INDICATOR);
            buf.put_u8(v as u8);
        }
        if let Some(v) = o.message_expiry_interval {
            buf.put_u8(id::MESSAGE_EXPIRY_INTERVAL);
            buf.put_u32(v);
        }
        if let Some(v) = o.topic_alias {
            buf.put_u8(id::TOPIC_ALIAS);
            buf.put_u16(v.get());
        }
        let skip_ids = o.subscription_identifiers.is_some() && self.has_ids;
        if self.rest_len as usize == self.raw.len() && !skip_ids {
            buf.put_slice(&self.raw);
        } else {
            for (code, start, end) in self.entries() {
                if !(skip_ids && code == id::SUBSCRIPTION_IDENTIFIER) {
                    buf.put_slice(self.raw.get(start..end).unwrap_or_default());
                }
            }
        }
        for sub in o.subscription_identifiers.unwrap_or_default() {
            buf.put_u8(id::SUBSCRIPTION_IDENTIFIER);
            put_varint(buf, sub.get());
        }
    }
}

/// What one PUBLISH sends in place of its properties' own Message Expiry Interval, Topic
/// Alias and (if `Some`) Subscription Identifiers.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Overrides<'a> {
    pub(crate) message_expiry_interval: Option<u32>,
    pub(crate) topic_alias: Option<NonZeroU16>,
    pub(crate) subscription_identifiers: Option<&'a [SubscriptionId]>,
}

/// The encoded length of the binary field at the front of `cur`, prefix included.
#[inline]
fn binary(cur: &[u8]) -> Result<usize, DecodeError> {
    let [hi, lo, ..] = *cur else {
        return Err(DecodeError::LengthOutOfBounds);
    };
    let len = 2 + usize::from(u16::from_be_bytes([hi, lo]));
    if cur.len() < len {
        return Err(DecodeError::LengthOutOfBounds);
    }
    Ok(len)
}

/// As [`binary`], for a UTF-8 string, which is checked (§1.5.4).
#[inline]
fn string(cur: &[u8]) -> Result<usize, DecodeError> {
    let len = binary(cur)?;
    wire::check_utf8(cur.get(2..len).unwrap_or_default())?;
    Ok(len)
}

fn put_user_property(out: &mut BytesMut, name: &ByteStr, value: &ByteStr) {
    out.put_u8(id::USER_PROPERTY);
    put_binary(out, name.as_bytes());
    put_binary(out, value.as_bytes());
}

impl PartialEq for PublishProperties {
    fn eq(&self, other: &Self) -> bool {
        if self.payload_format_indicator != other.payload_format_indicator
            || self.message_expiry_interval != other.message_expiry_interval
            || self.topic_alias != other.topic_alias
        {
            return false;
        }
        let pure = |p: &Self| p.rest_len as usize == p.raw.len();
        if pure(self) && pure(other) && self.raw == other.raw {
            return true;
        }
        self.response_topic() == other.response_topic()
            && self.correlation_data() == other.correlation_data()
            && self.content_type() == other.content_type()
            && self.user_properties().eq(other.user_properties())
            && self
                .subscription_identifiers()
                .eq(other.subscription_identifiers())
    }
}

impl Eq for PublishProperties {}

/// Shows an iterator's items as a list.
struct List<F>(F);

impl<I: Iterator<Item = T>, T: fmt::Debug, F: Fn() -> I> fmt::Debug for List<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries((self.0)()).finish()
    }
}

impl fmt::Debug for PublishProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishProperties")
            .field("payload_format_indicator", &self.payload_format_indicator)
            .field("message_expiry_interval", &self.message_expiry_interval)
            .field("topic_alias", &self.topic_alias)
            .field("response_topic", &self.response_topic())
            .field("correlation_data", &self.correlation_data())
            .field(
                "subscription_identifiers",
                &List(|| self.subscription_identifiers()),
            )
            .field("content_type", &self.content_type())
            .field("user_properties", &List(|| self.user_properties()))
            .finish()
    }
}

#[cfg(test)]
mod identifier_tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn identifiers_follow_the_wire_order_and_set_fields_come_last() {
        // Content Type, Message Expiry Interval, two User Properties, Payload Format Indicator.
        let block = Bytes::from_static(&[
            id::CONTENT_TYPE,
            0,
            1,
            b'c',
            id::MESSAGE_EXPIRY_INTERVAL,
            0,
            0,
            0,
            9,
            id::USER_PROPERTY,
            0,
            1,
            b'k',
            0,
            1,
            b'v',
            id::USER_PROPERTY,
            0,
            1,
            b'k',
            0,
            1,
            b'w',
            id::PAYLOAD_FORMAT_INDICATOR,
            1,
        ]);
        let mut props = PublishProperties::decode(block).expect("decodes");
        assert_eq!(
            props.identifiers(),
            vec![
                id::CONTENT_TYPE,
                id::MESSAGE_EXPIRY_INTERVAL,
                id::USER_PROPERTY,
                id::USER_PROPERTY,
                id::PAYLOAD_FORMAT_INDICATOR,
            ]
        );
        // A field cleared is gone; one set afterwards comes last.
        props.message_expiry_interval = None;
        props.topic_alias = NonZeroU16::new(3);
        assert_eq!(
            props.identifiers(),
            vec![
                id::CONTENT_TYPE,
                id::USER_PROPERTY,
                id::USER_PROPERTY,
                id::PAYLOAD_FORMAT_INDICATOR,
                id::TOPIC_ALIAS,
            ]
        );
    }
}
