//! Decoding: fixed header first, then the body as a shared `Bytes` slice of the input.

use alloc::boxed::Box;
use alloc::vec::Vec;
use bytes::{Buf, Bytes, BytesMut};

use crate::packet::*;
use crate::properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, SubscribeProperties, UnsubscribeProperties, WillProperties,
};
use crate::reason::{self, CodeSet};
use crate::types::{
    ByteStr, Known, PacketId, ProtocolVersion, QoS, RetainHandling, SubscriptionOptions,
};
use crate::wire::{self, parse_varint, read_binary, read_str, read_u16, read_u8};
use crate::{DecodeError, ReasonCode};

/// What the fixed header says, once it is complete and acceptable.
struct FixedHeader {
    /// First byte: packet type and flags.
    first: u8,
    /// Bytes taken by the fixed header itself.
    header_len: usize,
    /// Whole packet length: header plus Remaining Length.
    total_len: usize,
}

/// Parses and checks the fixed header at the front of `buf` without consuming anything.
#[inline]
///
/// The packet type, its flags and the size limit are checked here, so a bad or oversized packet
/// is refused before its body is waited for or buffered.
fn parse_fixed_header(
    buf: &[u8],
    version: ProtocolVersion,
    max_packet_size: u32,
) -> Result<Option<FixedHeader>, DecodeError> {
    let Some((&first, rest)) = buf.split_first() else {
        return Ok(None);
    };
    check_type_and_flags(first, version)?;
    let Some((remaining, varint_len)) = parse_varint(rest)? else {
        return Ok(None);
    };
    let header_len = 1 + varint_len;
    // At most 5 + 268,435,455 bytes, so this fits a u32 and a usize on every target.
    let total = header_len as u32 + remaining;
    if total > max_packet_size {
        return Err(DecodeError::PacketTooLarge {
            size: total,
            max: max_packet_size,
        });
    }
    Ok(Some(FixedHeader {
        first,
        header_len,
        total_len: total as usize,
    }))
}

/// Packet type and fixed-header flags ([MQTT-2.1.3-1]; 3.1.1 [MQTT-2.2.2-1]).
fn check_type_and_flags(first: u8, version: ProtocolVersion) -> Result<(), DecodeError> {
    let flags = first & 0x0F;
    match first >> 4 {
        0 => Err(DecodeError::ReservedPacketType(0)),
        15 if !version.is_v5() => Err(DecodeError::ReservedPacketType(15)),
        3 => {
            let qos = (flags >> 1) & 0b11;
            if qos == 3 {
                Err(DecodeError::InvalidQoS)
            } else if qos == 0 && flags & 0b1000 != 0 {
                Err(DecodeError::DupOnQoS0)
            } else {
                Ok(())
            }
        }
        // PUBREL, SUBSCRIBE and UNSUBSCRIBE carry 0b0010. 3.1 set DUP on their re-sends.
        6 | 8 | 10 => match flags {
            0b0010 => Ok(()),
            0b1010 if version == ProtocolVersion::V3_1 => Ok(()),
            _ => Err(DecodeError::InvalidFixedHeaderFlags(first)),
        },
        _ if flags != 0 => Err(DecodeError::InvalidFixedHeaderFlags(first)),
        _ => Ok(()),
    }
}

impl Packet {
    /// Decodes one packet from the front of `buf`.
    ///
    /// Returns `Ok(None)` and consumes nothing while `buf` holds less than a whole packet. On
    /// success the packet's bytes are split off `buf`, and the packet's strings and payload share
    /// that memory. The size limit is enforced from the fixed header alone: a peer that announces
    /// a packet larger than `max_packet_size` gets [`DecodeError::PacketTooLarge`] before any of
    /// its body is buffered, and decoding never reserves memory on the peer's word.
    ///
    /// `version` is the connection's protocol version. A CONNECT is decoded by the version it
    /// names itself, whatever `version` says.
    ///
    /// The first split of a `BytesMut` turns it into a shared buffer, which allocates once per
    /// buffer; decoding itself allocates only for lists (SUBSCRIBE filters, and user properties
    /// of packets other than PUBLISH) and for CONNECT, CONNACK and AUTH, which are boxed.
    pub fn decode(
        buf: &mut BytesMut,
        version: ProtocolVersion,
        max_packet_size: u32,
    ) -> Result<Option<Self>, DecodeError> {
        Self::decode_from(buf, version, max_packet_size, false)
    }

    /// The length of the packet at the front of `buf`, fixed header included, once its fixed
    /// header is there; nothing is validated. For a reader that sizes its next read to the rest
    /// of a large packet instead of reading past it.
    pub fn peek_len(buf: &[u8]) -> Option<usize> {
        let (_, rest) = buf.split_first()?;
        let (remaining, varint_len) = parse_varint(rest).ok()??;
        Some(1 + varint_len + remaining as usize)
    }

    /// Decodes one packet from the front of `buf`, like [`Packet::decode`], except that a
    /// PUBLISH is copied into an allocation of its own instead of sharing `buf`'s memory.
    ///
    /// For a reader that keeps messages long after they arrive, as a broker keeps retained
    /// messages and queues for offline clients. A message that shares its read buffer keeps
    /// the whole buffer alive, with every packet that was read with it: a one-byte message
    /// read together with a large one would hold the large one's memory for as long as it is
    /// kept. Copied, a message holds its own packet's bytes and nothing else, and `buf` stays
    /// unshared, so its memory is reused by the next read instead of a new one being
    /// allocated. The copy is skipped when `buf` holds exactly the one packet (its capacity is
    /// the packet's length), which is then taken whole, as [`Packet::decode`] does.
    ///
    /// Other packets are decoded as by [`Packet::decode`]: their strings share `buf` only
    /// while they are handled. A part kept longer (a subscription's filter, a client
    /// identifier) should be copied on its own with [`ByteStr::unshared`](crate::ByteStr::unshared).
    pub fn decode_unshared(
        buf: &mut BytesMut,
        version: ProtocolVersion,
        max_packet_size: u32,
    ) -> Result<Option<Self>, DecodeError> {
        Self::decode_from(buf, version, max_packet_size, true)
    }

    #[inline]
    fn decode_from(
        buf: &mut BytesMut,
        version: ProtocolVersion,
        max_packet_size: u32,
        copy_publish: bool,
    ) -> Result<Option<Self>, DecodeError> {
        let Some(header) = parse_fixed_header(buf, version, max_packet_size)? else {
            return Ok(None);
        };
        if buf.len() < header.total_len {
            return Ok(None);
        }
        if header.first >> 4 == 3 {
            // The most frequent packet: checked on the byte slice first, then split into its
            // parts with as few `Bytes` operations as possible.
            let layout = publish_layout(&header, buf, version.is_v5());
            let packet = if buf.capacity() == header.total_len {
                // The buffer holds this packet and has no room for anything else, as when a
                // reader sizes a buffer to one packet: it becomes the packet's storage whole.
                // Splitting it would make it shared, which allocates on a fresh buffer.
                core::mem::take(buf).freeze()
            } else if copy_publish {
                let packet =
                    Bytes::copy_from_slice(buf.get(..header.total_len).unwrap_or_default());
                buf.advance(header.total_len);
                packet
            } else {
                buf.split_to(header.total_len).freeze()
            };
            return build_publish(header.first, packet, layout?);
        }
        let mut body = buf.split_to(header.total_len).freeze();
        body.advance(header.header_len);
        decode_body(header.first, body, version).map(Some)
    }

    /// Decodes one packet from the front of `buf`, like [`Packet::decode`], for input that is
    /// already a shared `Bytes`. This makes no heap allocation for a PUBLISH.
    pub fn decode_bytes(
        buf: &mut Bytes,
        version: ProtocolVersion,
        max_packet_size: u32,
    ) -> Result<Option<Self>, DecodeError> {
        let Some(header) = parse_fixed_header(buf, version, max_packet_size)? else {
            return Ok(None);
        };
        if buf.len() < header.total_len {
            return Ok(None);
        }
        if header.first >> 4 == 3 {
            let layout = publish_layout(&header, buf, version.is_v5());
            let packet = buf.split_to(header.total_len);
            return build_publish(header.first, packet, layout?);
        }
        buf.advance(header.header_len);
        let body = buf.split_to(header.total_len - header.header_len);
        decode_body(header.first, body, version).map(Some)
    }
}

fn decode_body(
    first: u8,
    mut body: Bytes,
    version: ProtocolVersion,
) -> Result<Packet, DecodeError> {
    let v5 = version.is_v5();
    let packet = match first >> 4 {
        1 => Packet::Connect(Box::new(decode_connect(&mut body)?)),
        2 => Packet::ConnAck(Box::new(decode_connack(&mut body, version)?)),
        // The entry points decode PUBLISH before they get here.
        3 => return Err(DecodeError::ReservedPacketType(3)),
        4 => Packet::PubAck(decode_puback(&mut body, v5, reason::PUBACK_CODES)?),
        5 => Packet::PubRec(decode_puback(&mut body, v5, reason::PUBACK_CODES)?),
        6 => Packet::PubRel(decode_puback(&mut body, v5, reason::PUBREL_CODES)?),
        7 => Packet::PubComp(decode_puback(&mut body, v5, reason::PUBREL_CODES)?),
        8 => Packet::Subscribe(decode_subscribe(&mut body, v5)?),
        9 => Packet::SubAck(decode_suback(&mut body, v5)?),
        10 => Packet::Unsubscribe(decode_unsubscribe(&mut body, v5)?),
        11 => Packet::UnsubAck(decode_unsuback(&mut body, v5)?),
        12 => Packet::PingReq,
        13 => Packet::PingResp,
        14 => {
            let (reason_code, properties) = decode_reason_and_props(
                &mut body,
                v5,
                reason::DISCONNECT_CODES,
                DisconnectProperties::decode,
            )?;
            Packet::Disconnect(Disconnect {
                reason_code,
                properties,
            })
        }
        15 => {
            let (reason_code, properties) =
                decode_reason_and_props(&mut body, v5, reason::AUTH_CODES, AuthProperties::decode)?;
            Packet::Auth(Box::new(Auth {
                reason_code,
                properties,
            }))
        }
        other => return Err(DecodeError::ReservedPacketType(other)),
    };
    if !body.is_empty() {
        return Err(DecodeError::TrailingBytes);
    }
    Ok(packet)
}

fn read_packet_id(buf: &mut Bytes) -> Result<PacketId, DecodeError> {
    PacketId::new(read_u16(buf)?).ok_or(DecodeError::ZeroPacketId)
}

/// Splits off a property block: its Variable Byte Integer length, then that many bytes.
fn read_property_block(buf: &mut Bytes) -> Result<Bytes, DecodeError> {
    let len = wire::read_varint(buf)? as usize;
    if buf.len() < len {
        return Err(DecodeError::LengthOutOfBounds);
    }
    Ok(buf.split_to(len))
}

/// A topic name: at least one byte [MQTT-4.7.3-1] (checked by the caller, since a 5.0 Topic
/// Alias allows an empty one), UTF-8 without U+0000, and no wildcards [MQTT-3.3.2-2].
#[inline]
fn read_topic_name(buf: &mut Bytes) -> Result<ByteStr, DecodeError> {
    let len = usize::from(read_u16(buf)?);
    let bytes = buf.get(..len).ok_or(DecodeError::LengthOutOfBounds)?;
    let known = topic_name_known(bytes)?;
    let topic = ByteStr::from_scanned_part(buf, 0..len, known);
    buf.advance(len);
    Ok(topic)
}

/// Checks a topic name's characters, UTF-8 without U+0000 and without wildcards
/// ([MQTT-1.5.4-1], [MQTT-4.7.3-2], [MQTT-3.3.2-2]): a check made once, whose result goes
/// with the topic, so that neither encoding it again nor [`ByteStr::check_topic_name`] looks
/// at its characters again. The usual topic, plain ASCII, takes one quick pass.
#[inline(always)]
fn topic_name_known(bytes: &[u8]) -> Result<Known, DecodeError> {
    if wire::is_plain_topic(bytes) {
        return Ok(Known::clean(true));
    }
    check_topic_name(bytes)
}

/// The checks of a topic name that is not plain ASCII, or has U+0000 or a wildcard.
#[cold]
fn check_topic_name(bytes: &[u8]) -> Result<Known, DecodeError> {
    // One pass over the bytes for U+0000, the wildcards and non-ASCII bytes; only a topic that
    // is not plain ASCII needs the full UTF-8 check.
    let found = wire::scan(bytes);
    if found.nul || found.wildcard {
        // The error names whichever comes first, as an early-exit scan would.
        for &b in bytes {
            match b {
                0 => return Err(DecodeError::NullCharacter),
                b'+' | b'#' => return Err(DecodeError::WildcardInTopicName),
                _ => {}
            }
        }
    }
    if !found.ascii && core::str::from_utf8(bytes).is_err() {
        return Err(DecodeError::InvalidUtf8);
    }
    Ok(Known::clean(true))
}

/// A topic filter: a non-empty string [MQTT-4.7.3-1]. Wildcard placement is checked by
/// `midge-topic`, which owns topic syntax.
fn read_topic_filter(buf: &mut Bytes) -> Result<ByteStr, DecodeError> {
    let filter = read_str(buf)?;
    if filter.is_empty() {
        return Err(DecodeError::EmptyTopic);
    }
    Ok(filter)
}

fn read_reason(buf: &mut Bytes, allowed: CodeSet) -> Result<ReasonCode, DecodeError> {
    let code = ReasonCode(read_u8(buf)?);
    if !allowed.contains(code) {
        return Err(DecodeError::InvalidReasonCode(code.0));
    }
    Ok(code)
}

fn decode_connect(body: &mut Bytes) -> Result<Connect, DecodeError> {
    let name = read_binary(body)?;
    let level = read_u8(body)?;
    // The high bit marks a 3.x bridge (see `Connect::bridge`); 5.0 has no such level.
    let bridge = level & BRIDGE_BIT != 0;
    let protocol = match (&name[..], level & !BRIDGE_BIT) {
        (b"MQTT", 4) => ProtocolVersion::V3_1_1,
        (b"MQTT", 5) if !bridge => ProtocolVersion::V5,
        (b"MQIsdp", 3) => ProtocolVersion::V3_1,
        (b"MQTT" | b"MQIsdp", _) => return Err(DecodeError::UnsupportedProtocolVersion(level)),
        _ => return Err(DecodeError::InvalidProtocolName),
    };
    let v5 = protocol.is_v5();
    let flags = read_u8(body)?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::ConnectReservedFlag);
    }
    let clean_start = flags & 0x02 != 0;
    let has_will = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0b11;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if will_qos == 3 || (!has_will && (will_qos != 0 || will_retain)) {
        return Err(DecodeError::InvalidWillFlags);
    }
    if has_password && !has_username && !v5 {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    let keep_alive = read_u16(body)?;
    let properties = if v5 {
        ConnectProperties::decode(read_property_block(body)?)?
    } else {
        ConnectProperties::default()
    };
    let client_id = read_str(body)?;
    let will = if has_will {
        let properties = if v5 {
            WillProperties::decode(read_property_block(body)?)?
        } else {
            WillProperties::default()
        };
        let topic = read_topic_name(body)?;
        if topic.is_empty() {
            return Err(DecodeError::EmptyTopic);
        }
        let payload = read_binary(body)?;
        let qos = QoS::from_u8(will_qos).ok_or(DecodeError::InvalidWillFlags)?;
        Some(Will {
            topic,
            payload,
            qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(read_str(body)?)
    } else {
        None
    };
    let password = if has_password {
        Some(read_binary(body)?)
    } else {
        None
    };
    Ok(Connect {
        protocol,
        clean_start,
        bridge,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn decode_connack(body: &mut Bytes, version: ProtocolVersion) -> Result<ConnAck, DecodeError> {
    let flags = read_u8(body)?;
    let code = read_u8(body)?;
    // 3.1 has no Session Present flag: its first byte is unused.
    let session_present = match version {
        ProtocolVersion::V3_1 => false,
        _ if flags & !0x01 != 0 => return Err(DecodeError::ConnAckReservedFlags),
        _ => flags & 0x01 != 0,
    };
    if !version.is_v5() {
        let reason_code =
            reason::connack_from_v3_code(code).ok_or(DecodeError::InvalidReasonCode(code))?;
        return Ok(ConnAck {
            session_present,
            reason_code,
            properties: ConnAckProperties::default(),
        });
    }
    let reason_code = ReasonCode(code);
    if !reason::CONNACK_CODES.contains(reason_code) {
        return Err(DecodeError::InvalidReasonCode(code));
    }
    let properties = ConnAckProperties::decode(read_property_block(body)?)?;
    Ok(ConnAck {
        session_present,
        reason_code,
        properties,
    })
}

/// Where the parts of a PUBLISH lie in its packet (offsets from the packet's first byte),
/// found on the byte slice before any `Bytes` is made.
struct PublishLayout {
    packet_id: Option<PacketId>,
    topic: (usize, usize),
    /// What checking the topic found.
    topic_known: Known,
    /// The property block without its length; empty if there is none.
    props: (usize, usize),
    payload: usize,
}

/// Checks a PUBLISH in `buf`, which holds the whole packet, and finds its parts. The order of
/// the checks, and so which error a broken packet gets, is that of reading it front to back.
#[inline(always)]
fn publish_layout(
    header: &FixedHeader,
    buf: &[u8],
    v5: bool,
) -> Result<PublishLayout, DecodeError> {
    let packet = buf.get(..header.total_len).unwrap_or_default();
    let mut pos = header.header_len;
    let len = read_u16_at(packet, pos)?;
    let topic = (pos + 2, pos + 2 + usize::from(len));
    let topic_bytes = packet
        .get(topic.0..topic.1)
        .ok_or(DecodeError::LengthOutOfBounds)?;
    let topic_known = topic_name_known(topic_bytes)?;
    pos = topic.1;
    // The QoS was checked with the fixed header: 0, 1 or 2.
    let packet_id = if (header.first >> 1) & 0b11 == 0 {
        None
    } else {
        let id = read_u16_at(packet, pos)?;
        pos += 2;
        Some(PacketId::new(id).ok_or(DecodeError::ZeroPacketId)?)
    };
    let props = if v5 && packet.get(pos) == Some(&0) {
        // The usual case: an empty property block, its zero length alone.
        pos += 1;
        (pos, pos)
    } else if v5 {
        let (len, n) = parse_varint(packet.get(pos..).unwrap_or_default())?
            .ok_or(DecodeError::LengthOutOfBounds)?;
        let start = pos + n;
        let end = start + len as usize;
        if end > packet.len() {
            return Err(DecodeError::LengthOutOfBounds);
        }
        pos = end;
        (start, end)
    } else {
        (pos, pos)
    };
    Ok(PublishLayout {
        packet_id,
        topic,
        topic_known,
        props,
        payload: pos,
    })
}

/// A big-endian `u16` at `at`.
#[inline(always)]
fn read_u16_at(bytes: &[u8], at: usize) -> Result<u16, DecodeError> {
    match bytes.get(at..).and_then(<[u8]>::first_chunk::<2>) {
        Some(b) => Ok(u16::from_be_bytes(*b)),
        None => Err(DecodeError::LengthOutOfBounds),
    }
}

/// The PUBLISH in `packet` (the whole packet), laid out by [`publish_layout`]. It returns what
/// the entry points return, so that the packet is built once, in place.
#[inline(always)]
fn build_publish(
    first: u8,
    mut packet: Bytes,
    l: PublishLayout,
) -> Result<Option<Packet>, DecodeError> {
    let properties = if l.props.0 == l.props.1 {
        PublishProperties::default()
    } else {
        PublishProperties::decode(packet.slice(l.props.0..l.props.1))?
    };
    if l.topic.0 == l.topic.1 && properties.topic_alias.is_none() {
        return Err(DecodeError::EmptyTopic);
    }
    let topic = ByteStr::from_scanned_part(&packet, l.topic.0..l.topic.1, l.topic_known);
    packet.advance(l.payload);
    Ok(Some(Packet::Publish(Publish {
        dup: first & 0b1000 != 0,
        qos: QoS::from_u8((first >> 1) & 0b11).unwrap_or_default(),
        retain: first & 0b0001 != 0,
        topic,
        packet_id: l.packet_id,
        payload: packet,
        properties,
    })))
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP. In 5.0 the reason code and the properties may be left out
/// when they are Success and empty (§3.4.2.1).
fn decode_puback(body: &mut Bytes, v5: bool, allowed: CodeSet) -> Result<PubAck, DecodeError> {
    let packet_id = read_packet_id(body)?;
    let (reason_code, properties) =
        decode_reason_and_props(body, v5, allowed, AckProperties::decode)?;
    Ok(PubAck {
        packet_id,
        reason_code,
        properties,
    })
}

/// An optional reason code followed by optional properties, as in 5.0 PUBACK, DISCONNECT and
/// AUTH; nothing at all in 3.x.
fn decode_reason_and_props<P: Default>(
    body: &mut Bytes,
    v5: bool,
    allowed: CodeSet,
    decode_props: fn(Bytes) -> Result<P, DecodeError>,
) -> Result<(ReasonCode, P), DecodeError> {
    if !v5 || body.is_empty() {
        return Ok((ReasonCode::SUCCESS, P::default()));
    }
    let reason_code = read_reason(body, allowed)?;
    let properties = if body.is_empty() {
        P::default()
    } else {
        decode_props(read_property_block(body)?)?
    };
    Ok((reason_code, properties))
}

fn decode_subscribe(body: &mut Bytes, v5: bool) -> Result<Subscribe, DecodeError> {
    let packet_id = read_packet_id(body)?;
    let properties = if v5 {
        SubscribeProperties::decode(read_property_block(body)?)?
    } else {
        SubscribeProperties::default()
    };
    let mut filters = Vec::new();
    while !body.is_empty() {
        let filter = read_topic_filter(body)?;
        let options = read_u8(body)?;
        filters.push((filter, decode_subscription_options(options, v5)?));
    }
    if filters.is_empty() {
        return Err(DecodeError::EmptySubscribe);
    }
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}

/// The options byte: QoS in bits 0-1, and in 5.0 No Local, Retain As Published and Retain
/// Handling; the other bits are reserved ([MQTT-3.8.3-5]; 3.1.1 [MQTT-3-8.3-4]).
fn decode_subscription_options(byte: u8, v5: bool) -> Result<SubscriptionOptions, DecodeError> {
    let reserved = if v5 { 0b1100_0000 } else { 0b1111_1100 };
    if byte & reserved != 0 {
        return Err(DecodeError::InvalidSubscriptionOptions);
    }
    let qos = QoS::from_u8(byte & 0b11).ok_or(DecodeError::InvalidSubscriptionQoS)?;
    let retain_handling = match (byte >> 4) & 0b11 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return Err(DecodeError::InvalidRetainHandling),
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & 0b0100 != 0,
        retain_as_published: byte & 0b1000 != 0,
        retain_handling,
    })
}

fn decode_suback(body: &mut Bytes, v5: bool) -> Result<SubAck, DecodeError> {
    let packet_id = read_packet_id(body)?;
    let (properties, allowed) = if v5 {
        (
            AckProperties::decode(read_property_block(body)?)?,
            reason::SUBACK_CODES,
        )
    } else {
        (AckProperties::default(), reason::SUBACK_V3_CODES)
    };
    let mut reason_codes = Vec::with_capacity(body.len());
    while !body.is_empty() {
        reason_codes.push(read_reason(body, allowed)?);
    }
    Ok(SubAck {
        packet_id,
        reason_codes,
        properties,
    })
}

fn decode_unsubscribe(body: &mut Bytes, v5: bool) -> Result<Unsubscribe, DecodeError> {
    let packet_id = read_packet_id(body)?;
    let properties = if v5 {
        UnsubscribeProperties::decode(read_property_block(body)?)?
    } else {
        UnsubscribeProperties::default()
    };
    let mut filters = Vec::new();
    while !body.is_empty() {
        filters.push(read_topic_filter(body)?);
    }
    if filters.is_empty() {
        return Err(DecodeError::EmptyUnsubscribe);
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        properties,
    })
}

fn decode_unsuback(body: &mut Bytes, v5: bool) -> Result<UnsubAck, DecodeError> {
    let packet_id = read_packet_id(body)?;
    if !v5 {
        return Ok(UnsubAck {
            packet_id,
            reason_codes: Vec::new(),
            properties: AckProperties::default(),
        });
    }
    let properties = AckProperties::decode(read_property_block(body)?)?;
    let mut reason_codes = Vec::with_capacity(body.len());
    while !body.is_empty() {
        reason_codes.push(read_reason(body, reason::UNSUBACK_CODES)?);
    }
    Ok(UnsubAck {
        packet_id,
        reason_codes,
        properties,
    })
}
