//! Encoding: every size is computed and every rule checked first, then the packet is written
//! into the caller's `BytesMut` in one pass, with no intermediate buffer.

use bytes::{BufMut, BytesMut};

use crate::packet::*;
use crate::properties::Overrides;
use crate::reason::{self, CodeSet};
use crate::types::{ByteStr, PacketId, ProtocolVersion, QoS, RetainHandling, SubscriptionOptions};
use crate::wire::{
    self, field_len, put_binary, put_varint, scan, str_len, varint_len, MAX_FIELD, MAX_VARINT,
};
use crate::{EncodeError, ReasonCode};

/// Sizes computed before writing, so that nothing is measured twice.
#[derive(Default)]
struct Sizes {
    /// Remaining Length of the fixed header.
    remaining: usize,
    /// Length of the packet's property block, without its length prefix.
    props: usize,
    /// Length of the will property block (CONNECT only).
    will_props: usize,
}

/// A property block with its length prefix.
fn block_len(props: usize) -> usize {
    varint_len(props as u32) + props
}

fn require_v5(v5: bool, unset: bool, field: &'static str) -> Result<(), EncodeError> {
    if unset || v5 {
        Ok(())
    } else {
        Err(EncodeError::RequiresV5(field))
    }
}

fn check_reason(code: ReasonCode, allowed: CodeSet) -> Result<(), EncodeError> {
    if allowed.contains(code) {
        Ok(())
    } else {
        Err(EncodeError::InvalidReasonCode(code.0))
    }
}

/// A topic name must be non-empty (unless a 5.0 Topic Alias stands in for it) and free of
/// wildcards ([MQTT-4.7.3-1], [MQTT-3.3.2-2]).
#[inline]
fn topic_name_len(topic: &ByteStr, alias: bool) -> Result<usize, EncodeError> {
    let (bytes, known_clean) = topic.bytes_and_clean();
    if !bytes.is_empty() && (known_clean || wire::is_plain_topic(bytes)) {
        return field_len(bytes);
    }
    // One pass for the wildcards and U+0000 [MQTT-1.5.4-2], with the errors of checking one
    // after the other.
    let found = scan(bytes);
    if (bytes.is_empty() && !alias) || found.wildcard {
        return Err(EncodeError::InvalidTopic);
    }
    if found.nul {
        return Err(EncodeError::NullCharacter);
    }
    field_len(bytes)
}

fn filter_len(filter: &ByteStr) -> Result<usize, EncodeError> {
    if filter.is_empty() {
        return Err(EncodeError::InvalidTopic);
    }
    str_len(filter)
}

impl Packet {
    /// The exact number of bytes [`Packet::encode`] writes for `version`, after checking that
    /// the packet can be encoded for it.
    pub fn encoded_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        let sizes = self.sizes(version)?;
        Ok(1 + varint_len(sizes.remaining as u32) + sizes.remaining)
    }

    /// Appends the packet, encoded for `version`, to `buf`.
    ///
    /// Every check runs before the first byte is written, so on error `buf` is unchanged. A
    /// CONNECT is encoded for the version it names, whatever `version` says.
    pub fn encode(&self, version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
        if let Self::Publish(p) = self {
            // The most frequent packet skips the dispatch through `sizes` and `first_byte`.
            return encode_publish(p, version.is_v5(), buf);
        }
        self.encode_other(version, buf)
    }

    /// [`Packet::encode`] for every packet but PUBLISH, kept out of line so that the PUBLISH
    /// path stays small.
    #[inline(never)]
    fn encode_other(
        &self,
        version: ProtocolVersion,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let sizes = self.sizes(version)?;
        buf.reserve(1 + varint_len(sizes.remaining as u32) + sizes.remaining);
        let v5 = version.is_v5();
        buf.put_u8(self.first_byte());
        put_varint(buf, sizes.remaining as u32);
        match self {
            Self::Connect(c) => write_connect(c, &sizes, buf),
            Self::ConnAck(c) => {
                buf.put_u8(u8::from(c.session_present));
                if v5 {
                    buf.put_u8(c.reason_code.0);
                    c.properties.encode(buf, sizes.props);
                } else {
                    // Checked in `sizes`: every 3.x-representable code has a return code.
                    buf.put_u8(reason::connack_v3_code(c.reason_code).unwrap_or(0));
                }
            }
            Self::Publish(p) => write_publish_body(&PublishRef::from(p), v5, sizes.props, buf),
            Self::PubAck(a) | Self::PubRec(a) | Self::PubRel(a) | Self::PubComp(a) => {
                buf.put_u16(a.packet_id.get());
                if sizes.remaining > 2 {
                    buf.put_u8(a.reason_code.0);
                }
                if sizes.remaining > 3 {
                    a.properties.encode(buf, sizes.props);
                }
            }
            Self::Subscribe(s) => {
                buf.put_u16(s.packet_id.get());
                if v5 {
                    s.properties.encode(buf, sizes.props);
                }
                for (filter, options) in &s.filters {
                    put_binary(buf, filter.as_bytes());
                    buf.put_u8(options_byte(options));
                }
            }
            Self::SubAck(s) => {
                buf.put_u16(s.packet_id.get());
                if v5 {
                    s.properties.encode(buf, sizes.props);
                }
                buf.extend(s.reason_codes.iter().map(|c| c.0));
            }
            Self::Unsubscribe(u) => {
                buf.put_u16(u.packet_id.get());
                if v5 {
                    u.properties.encode(buf, sizes.props);
                }
                for filter in &u.filters {
                    put_binary(buf, filter.as_bytes());
                }
            }
            Self::UnsubAck(u) => {
                buf.put_u16(u.packet_id.get());
                if v5 {
                    u.properties.encode(buf, sizes.props);
                    buf.extend(u.reason_codes.iter().map(|c| c.0));
                }
            }
            Self::PingReq | Self::PingResp => {}
            Self::Disconnect(d) => {
                if sizes.remaining > 0 {
                    buf.put_u8(d.reason_code.0);
                }
                if sizes.remaining > 1 {
                    d.properties.encode(buf, sizes.props);
                }
            }
            Self::Auth(a) => {
                if sizes.remaining > 0 {
                    buf.put_u8(a.reason_code.0);
                }
                if sizes.remaining > 1 {
                    a.properties.encode(buf, sizes.props);
                }
            }
        }
        Ok(())
    }

    fn first_byte(&self) -> u8 {
        let flags = match self {
            Self::Publish(p) => return publish_first_byte(&PublishRef::from(p)),
            Self::PubRel(_) | Self::Subscribe(_) | Self::Unsubscribe(_) => 0b0010,
            _ => 0,
        };
        ((self.packet_type() as u8) << 4) | flags
    }

    /// Checks the packet against `version` and computes its sizes.
    fn sizes(&self, version: ProtocolVersion) -> Result<Sizes, EncodeError> {
        let v5 = version.is_v5();
        let mut sizes = Sizes::default();
        sizes.remaining = match self {
            Self::Connect(c) => return connect_sizes(c),
            Self::ConnAck(c) => {
                if v5 {
                    check_reason(c.reason_code, reason::CONNACK_CODES)?;
                    sizes.props = c.properties.encoded_len()?;
                    2 + block_len(sizes.props)
                } else {
                    require_v5(v5, c.properties.is_empty(), "CONNACK properties")?;
                    if reason::connack_v3_code(c.reason_code).is_none() {
                        return Err(EncodeError::InvalidReasonCode(c.reason_code.0));
                    }
                    if c.session_present && version == ProtocolVersion::V3_1 {
                        return Err(EncodeError::RequiresV311("Session Present"));
                    }
                    2
                }
            }
            Self::Publish(p) => {
                let (remaining, props) = publish_sizes(&PublishRef::from(p), v5)?;
                sizes.props = props;
                remaining
            }
            Self::PubAck(a) | Self::PubRec(a) => {
                ack_sizes(a, v5, reason::PUBACK_CODES, &mut sizes)?
            }
            Self::PubRel(a) | Self::PubComp(a) => {
                ack_sizes(a, v5, reason::PUBREL_CODES, &mut sizes)?
            }
            Self::Subscribe(s) => {
                if s.filters.is_empty() {
                    return Err(EncodeError::NoTopicFilters);
                }
                require_v5(v5, s.properties.is_empty(), "SUBSCRIBE properties")?;
                let mut len = 2;
                for (filter, options) in &s.filters {
                    require_v5(
                        v5,
                        *options == SubscriptionOptions::qos(options.qos),
                        "subscription options",
                    )?;
                    len += filter_len(filter)? + 1;
                }
                if v5 {
                    sizes.props = s.properties.encoded_len()?;
                    len += block_len(sizes.props);
                }
                len
            }
            Self::SubAck(s) => {
                let allowed = if v5 {
                    reason::SUBACK_CODES
                } else {
                    reason::SUBACK_V3_CODES
                };
                for code in &s.reason_codes {
                    check_reason(*code, allowed)?;
                }
                require_v5(v5, s.properties.is_empty(), "SUBACK properties")?;
                let mut len = 2 + s.reason_codes.len();
                if v5 {
                    sizes.props = s.properties.encoded_len()?;
                    len += block_len(sizes.props);
                }
                len
            }
            Self::Unsubscribe(u) => {
                if u.filters.is_empty() {
                    return Err(EncodeError::NoTopicFilters);
                }
                require_v5(v5, u.properties.is_empty(), "UNSUBSCRIBE properties")?;
                let mut len = 2;
                for filter in &u.filters {
                    len += filter_len(filter)?;
                }
                if v5 {
                    sizes.props = u.properties.encoded_len()?;
                    len += block_len(sizes.props);
                }
                len
            }
            Self::UnsubAck(u) => {
                require_v5(v5, u.properties.is_empty(), "UNSUBACK properties")?;
                require_v5(v5, u.reason_codes.is_empty(), "UNSUBACK reason codes")?;
                if v5 {
                    for code in &u.reason_codes {
                        check_reason(*code, reason::UNSUBACK_CODES)?;
                    }
                    sizes.props = u.properties.encoded_len()?;
                    2 + block_len(sizes.props) + u.reason_codes.len()
                } else {
                    2
                }
            }
            Self::PingReq | Self::PingResp => 0,
            Self::Disconnect(d) => {
                require_v5(
                    v5,
                    d.reason_code == ReasonCode::SUCCESS,
                    "DISCONNECT reason code",
                )?;
                require_v5(v5, d.properties.is_empty(), "DISCONNECT properties")?;
                check_reason(d.reason_code, reason::DISCONNECT_CODES)?;
                sizes.props = d.properties.encoded_len()?;
                short_form_len(d.reason_code, sizes.props)
            }
            Self::Auth(a) => {
                require_v5(v5, false, "AUTH")?;
                check_reason(a.reason_code, reason::AUTH_CODES)?;
                sizes.props = a.properties.encoded_len()?;
                short_form_len(a.reason_code, sizes.props)
            }
        };
        if sizes.remaining > MAX_VARINT as usize {
            return Err(EncodeError::PacketTooLarge);
        }
        Ok(sizes)
    }
}

impl Publish {
    /// The exact number of bytes [`Publish::encode`] writes for `version`, after checking that
    /// the PUBLISH can be encoded for it: [`Packet::encoded_len`] without making a `Packet`.
    pub fn encoded_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        PublishRef::from(self).encoded_len(version)
    }

    /// Appends the PUBLISH, encoded for `version`, to `buf`: [`Packet::encode`] without making
    /// a `Packet`. On error `buf` is unchanged.
    pub fn encode(&self, version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
        encode_publish(self, version.is_v5(), buf)
    }
}

impl PublishRef<'_> {
    /// The exact number of bytes [`PublishRef::encode`] writes for `version`, after checking
    /// that the PUBLISH can be encoded for it. Nothing is copied or built to measure it.
    pub fn encoded_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        let (remaining, _) = publish_sizes(self, version.is_v5())?;
        Ok(1 + varint_len(remaining as u32) + remaining)
    }

    /// Appends the PUBLISH, encoded for `version`, to `buf`: the bytes [`Publish::encode`]
    /// writes for the `Publish` with the same parts. Every check runs before the first byte is
    /// written, so on error `buf` is unchanged.
    pub fn encode(&self, version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
        encode_publish(self, version.is_v5(), buf)
    }

    /// What is sent in place of the properties' own values.
    #[inline(always)]
    fn overrides(&self) -> Overrides<'_> {
        Overrides {
            message_expiry_interval: self.message_expiry_interval,
            topic_alias: self.topic_alias,
            subscription_identifiers: self.subscription_identifiers,
        }
    }
}

/// Checks a PUBLISH and returns its Remaining Length and the length of its property block.
#[inline]
fn publish_sizes(p: &PublishRef<'_>, v5: bool) -> Result<(usize, usize), EncodeError> {
    if p.packet_id.is_some() != (p.qos != QoS::AtMostOnce) {
        return Err(EncodeError::PacketIdMismatch);
    }
    if p.dup && p.qos == QoS::AtMostOnce {
        return Err(EncodeError::DupOnQoS0);
    }
    // Most PUBLISH packets carry no properties: one check settles both versions.
    let props = p.properties.encoded_len_as(&p.overrides());
    require_v5(v5, props == 0, "PUBLISH properties")?;
    let topic = topic_name_len(p.topic, v5 && p.topic_alias.is_some())?;
    let id = if p.packet_id.is_some() { 2 } else { 0 };
    let block = match (v5, props) {
        (false, _) => 0,
        (true, 0) => 1,
        (true, props) => block_len(props),
    };
    let remaining = topic + id + block + p.payload.len();
    if remaining > MAX_VARINT as usize {
        return Err(EncodeError::PacketTooLarge);
    }
    Ok((remaining, props))
}

/// What the PUBLISH encoder reads: a [`Publish`] or a [`PublishRef`]. The usual PUBLISH is
/// written from these without a `PublishRef` being built for a `Publish`; the general path
/// takes a `PublishRef`.
trait PublishSource {
    /// True if no property is to be sent.
    fn no_properties(&self) -> bool;
    fn flags(&self) -> (bool, QoS, bool);
    fn packet_id(&self) -> Option<PacketId>;
    fn topic(&self) -> &ByteStr;
    fn payload(&self) -> &[u8];
    fn as_publish_ref(&self) -> PublishRef<'_>;
}

impl PublishSource for Publish {
    #[inline(always)]
    fn no_properties(&self) -> bool {
        self.properties.is_empty()
    }
    #[inline(always)]
    fn flags(&self) -> (bool, QoS, bool) {
        (self.dup, self.qos, self.retain)
    }
    #[inline(always)]
    fn packet_id(&self) -> Option<PacketId> {
        self.packet_id
    }
    #[inline(always)]
    fn topic(&self) -> &ByteStr {
        &self.topic
    }
    #[inline(always)]
    fn payload(&self) -> &[u8] {
        &self.payload
    }
    #[inline(always)]
    fn as_publish_ref(&self) -> PublishRef<'_> {
        PublishRef::from(self)
    }
}

impl PublishSource for PublishRef<'_> {
    #[inline(always)]
    fn no_properties(&self) -> bool {
        self.message_expiry_interval.is_none()
            && self.topic_alias.is_none()
            && self.properties.only_replaceable()
            && self.subscription_identifiers.is_none_or(<[_]>::is_empty)
    }
    #[inline(always)]
    fn flags(&self) -> (bool, QoS, bool) {
        (self.dup, self.qos, self.retain)
    }
    #[inline(always)]
    fn packet_id(&self) -> Option<PacketId> {
        self.packet_id
    }
    #[inline(always)]
    fn topic(&self) -> &ByteStr {
        self.topic
    }
    #[inline(always)]
    fn payload(&self) -> &[u8] {
        self.payload
    }
    #[inline(always)]
    fn as_publish_ref(&self) -> PublishRef<'_> {
        *self
    }
}

/// Encodes a PUBLISH: [`Packet::encode`], [`Publish::encode`] and [`PublishRef::encode`].
/// Always inlined: the most frequent packet skips the dispatch of [`Packet::encode`].
#[inline(always)]
fn encode_publish(p: &impl PublishSource, v5: bool, buf: &mut BytesMut) -> Result<(), EncodeError> {
    let (topic, known_clean) = p.topic().bytes_and_clean();
    let (dup, qos, retain) = p.flags();
    let packet_id = p.packet_id();
    let payload = p.payload();
    let qos0 = qos == QoS::AtMostOnce;
    // The usual PUBLISH: no property, a plain ASCII topic name, consistent flags. Every check
    // of the general path holds for it, so it is written directly; anything else takes the
    // general path, which reports the errors in their order.
    if p.no_properties()
        && packet_id.is_some() != qos0
        && !(dup && qos0)
        && !topic.is_empty()
        && topic.len() <= MAX_FIELD
        && (known_clean || wire::is_plain_topic(topic))
    {
        let id_len = if packet_id.is_some() { 2 } else { 0 };
        let remaining = 2 + topic.len() + id_len + usize::from(v5) + payload.len();
        if remaining <= MAX_VARINT as usize {
            buf.reserve(5 + remaining);
            buf.put_u8(first_byte_of(dup, qos, retain));
            put_varint(buf, remaining as u32);
            put_binary(buf, topic);
            if let Some(id) = packet_id {
                buf.put_u16(id.get());
            }
            if v5 {
                // No property is set: the block is its zero length alone.
                buf.put_u8(0);
            }
            buf.put_slice(payload);
            return Ok(());
        }
    }
    encode_publish_checked(&p.as_publish_ref(), v5, buf)
}

/// [`encode_publish`] for any PUBLISH: every check, in order, then the packet.
///
/// `#[cold]` is a hint to the optimiser, not a claim that properties are rare: without it the
/// chain of checks above makes LLVM rate the fast path's writes as cold call sites, and it
/// then keeps `BytesMut::extend_from_slice` out of line there, which cost about 15% of a
/// 64-byte PUBLISH's encode (`cargo bench -p midge-benches --bench codec -- publish_encode`).
#[cold]
fn encode_publish_checked(
    p: &PublishRef<'_>,
    v5: bool,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let (remaining, props) = publish_sizes(p, v5)?;
    buf.reserve(1 + varint_len(remaining as u32) + remaining);
    buf.put_u8(publish_first_byte(p));
    put_varint(buf, remaining as u32);
    write_publish_body(p, v5, props, buf);
    Ok(())
}

fn publish_first_byte(p: &PublishRef<'_>) -> u8 {
    first_byte_of(p.dup, p.qos, p.retain)
}

#[inline(always)]
fn first_byte_of(dup: bool, qos: QoS, retain: bool) -> u8 {
    ((PacketType::Publish as u8) << 4)
        | (u8::from(dup) << 3)
        | ((qos as u8) << 1)
        | u8::from(retain)
}

fn write_publish_body(p: &PublishRef<'_>, v5: bool, props: usize, buf: &mut BytesMut) {
    put_binary(buf, p.topic.as_bytes());
    if let Some(id) = p.packet_id {
        buf.put_u16(id.get());
    }
    if v5 {
        if props == 0 {
            // No property is set: the block is its zero length alone.
            buf.put_u8(0);
        } else {
            p.properties.encode_as(buf, props, &p.overrides());
        }
    }
    buf.put_slice(p.payload);
}

/// DISCONNECT and AUTH leave out a Success reason code and empty properties (§3.14.2.1).
fn short_form_len(code: ReasonCode, props: usize) -> usize {
    match (code == ReasonCode::SUCCESS, props) {
        (true, 0) => 0,
        (false, 0) => 1,
        _ => 1 + block_len(props),
    }
}

fn ack_sizes(
    a: &PubAck,
    v5: bool,
    allowed: CodeSet,
    sizes: &mut Sizes,
) -> Result<usize, EncodeError> {
    if !v5 {
        require_v5(
            v5,
            a.reason_code == ReasonCode::SUCCESS,
            "acknowledgement reason code",
        )?;
        require_v5(v5, a.properties.is_empty(), "acknowledgement properties")?;
        return Ok(2);
    }
    check_reason(a.reason_code, allowed)?;
    sizes.props = a.properties.encoded_len()?;
    // The shortest form: the reason code may be left out if it is Success and there are no
    // properties, and the property length if there are none (§3.4.2.1).
    Ok(2 + short_form_len(a.reason_code, sizes.props))
}

fn options_byte(o: &SubscriptionOptions) -> u8 {
    let handling = match o.retain_handling {
        RetainHandling::SendAtSubscribe => 0,
        RetainHandling::SendIfNew => 1,
        RetainHandling::DoNotSend => 2,
    };
    (o.qos as u8)
        | (u8::from(o.no_local) << 2)
        | (u8::from(o.retain_as_published) << 3)
        | (handling << 4)
}

fn connect_sizes(c: &Connect) -> Result<Sizes, EncodeError> {
    let v5 = c.protocol.is_v5();
    let mut sizes = Sizes::default();
    require_v5(v5, c.properties.is_empty(), "CONNECT properties")?;
    if c.bridge && v5 {
        return Err(EncodeError::NotInV5("the bridge bit of CONNECT"));
    }
    if c.password.is_some() && c.username.is_none() && !v5 {
        return Err(EncodeError::PasswordWithoutUsername);
    }
    let mut len = 2 + c.protocol.protocol_name().len() + 1 + 1 + 2 + str_len(&c.client_id)?;
    if v5 {
        sizes.props = c.properties.encoded_len()?;
        len += block_len(sizes.props);
    }
    if let Some(will) = &c.will {
        require_v5(v5, will.properties.is_empty(), "will properties")?;
        len += topic_name_len(&will.topic, false)? + field_len(&will.payload)?;
        if v5 {
            sizes.will_props = will.properties.encoded_len()?;
            len += block_len(sizes.will_props);
        }
    }
    if let Some(username) = &c.username {
        len += str_len(username)?;
    }
    if let Some(password) = &c.password {
        len += field_len(password)?;
    }
    if len > MAX_VARINT as usize {
        return Err(EncodeError::PacketTooLarge);
    }
    sizes.remaining = len;
    Ok(sizes)
}

fn write_connect(c: &Connect, sizes: &Sizes, buf: &mut BytesMut) {
    let v5 = c.protocol.is_v5();
    put_binary(buf, c.protocol.protocol_name().as_bytes());
    let bridge = if c.bridge { BRIDGE_BIT } else { 0 };
    buf.put_u8(c.protocol.level() | bridge);
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(will) = &c.will {
        flags |= 0x04 | ((will.qos as u8) << 3) | (u8::from(will.retain) << 5);
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    buf.put_u8(flags);
    buf.put_u16(c.keep_alive);
    if v5 {
        c.properties.encode(buf, sizes.props);
    }
    put_binary(buf, c.client_id.as_bytes());
    if let Some(will) = &c.will {
        if v5 {
            will.properties.encode(buf, sizes.will_props);
        }
        put_binary(buf, will.topic.as_bytes());
        put_binary(buf, &will.payload);
    }
    if let Some(username) = &c.username {
        put_binary(buf, username.as_bytes());
    }
    if let Some(password) = &c.password {
        put_binary(buf, password);
    }
}
