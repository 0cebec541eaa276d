//! The binary encoding of what the store keeps: one record per table row, each starting with a
//! byte that names its kind and layout, so that a later layout can sit beside this one.
//!
//! Messages are kept as MQTT 5.0 PUBLISH packets encoded by `midge-codec` (QoS 0, so without a
//! packet identifier, and without Subscription Identifiers), followed by what the packet does
//! not carry. Wills are kept as the CONNECT packet that would carry them. Times are wall-clock
//! milliseconds since the Unix epoch, so that they mean the same after a restart.
//!
//! Decoding never panics: bytes that are not a record of the expected kind give `None`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use midge_broker::{Retained, SessionRecord};
use midge_codec::{
    ByteStr, Connect, EncodeError, Packet, PacketId, ProtocolVersion, PublishRef, QoS,
    RetainHandling, SubscriptionId, SubscriptionOptions, Will, MAX_PACKET_SIZE,
};
use midge_proto::session::{Delivery, SessionSubscription};
use midge_proto::Message;

/// A session record (`sessions` table).
pub(crate) const SESSION: u8 = 0x01;
/// A subscription (`subscriptions` table).
pub(crate) const SUBSCRIPTION: u8 = 0x02;
/// A queued message, not sent yet (`messages` table).
pub(crate) const QUEUED: u8 = 0x10;
/// A QoS 2 message sent as a packet identifier and not acknowledged (`messages` table).
pub(crate) const SENT: u8 = 0x11;
/// A QoS 2 message whose PUBREC came: only its packet identifier is kept (`messages` table).
pub(crate) const RELEASED: u8 = 0x12;
/// A retained message (`retained` table).
pub(crate) const RETAINED: u8 = 0x20;

/// Converts between `Instant`s, which mean nothing outside the process, and wall-clock
/// milliseconds. Holds the readings of both clocks when the store was opened, as the last
/// resort for a time too old for an `Instant`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    instant: Instant,
    wall_ms: u64,
}

impl Clock {
    /// Reads both clocks now.
    pub(crate) fn now() -> Self {
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, millis);
        Self {
            instant: Instant::now(),
            wall_ms,
        }
    }

    /// Wall-clock milliseconds of `t`, through a fresh reading of both clocks: the wall
    /// clock may have been set (an NTP step on a machine without a clock of its own) or the
    /// machine suspended since the store was opened, and a time written must hold for the
    /// next run.
    pub(crate) fn to_wall(self, t: Instant) -> u64 {
        let now = Self::now();
        if t >= now.instant {
            now.wall_ms.saturating_add(millis(t - now.instant))
        } else {
            now.wall_ms.saturating_sub(millis(now.instant - t))
        }
    }

    /// The `Instant` of wall-clock milliseconds `wall`, on the clock of `now`: `now` less the
    /// time from `wall` to `now`. A time in the future is `now`. A time too far back for an
    /// `Instant` to hold (before the machine started, say) is the moment the store was opened:
    /// the age of such a message is counted from then.
    pub(crate) fn to_instant(self, wall: u64, now: Instant) -> Instant {
        let age = Duration::from_millis(self.to_wall(now).saturating_sub(wall));
        now.checked_sub(age).unwrap_or(self.instant.min(now))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Why a record could not be encoded: its message or will is not one MQTT 5.0 can carry.
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("cannot encode: {0}")]
pub(crate) struct Unencodable(EncodeError);

fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
    // Every length here is below MQTT's packet size limit of 256 MiB, so u32 holds it.
    out.put_u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
    out.put_slice(bytes);
}

/// A reader that returns `None` instead of panicking when the record is short.
pub(crate) struct Reader(Bytes);

impl Reader {
    pub(crate) fn new(bytes: Bytes) -> Self {
        Self(bytes)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        (self.0.remaining() >= 1).then(|| self.0.get_u8())
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        (self.0.remaining() >= 2).then(|| self.0.get_u16())
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        (self.0.remaining() >= 4).then(|| self.0.get_u32())
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        (self.0.remaining() >= 8).then(|| self.0.get_u64())
    }

    pub(crate) fn bytes(&mut self) -> Option<Bytes> {
        let len = usize::try_from(self.u32()?).ok()?;
        (self.0.remaining() >= len).then(|| self.0.split_to(len))
    }

    fn str(&mut self) -> Option<ByteStr> {
        ByteStr::from_utf8(self.bytes()?).ok()
    }

    /// True once every byte was read: a record with bytes left over is not one of ours.
    pub(crate) fn is_done(&self) -> bool {
        self.0.is_empty()
    }
}

/// Encodes a message: its PUBLISH, its own QoS and RETAIN, and when it was received.
fn put_message(
    out: &mut BytesMut,
    message: &Message,
    received_at: Instant,
    clock: Clock,
) -> Result<(), Unencodable> {
    let mut publish = PublishRef::new(&message.topic, &message.payload, &message.properties);
    // QoS 0 needs no packet identifier; the message's QoS follows the packet. A topic alias
    // belongs to a connection, and Subscription Identifiers to a delivery.
    publish.qos = QoS::AtMostOnce;
    publish.retain = message.retain;
    publish.topic_alias = None;
    publish.subscription_identifiers = Some(&[]);
    let mut packet = BytesMut::new();
    publish
        .encode(ProtocolVersion::V5, &mut packet)
        .map_err(Unencodable)?;
    put_bytes(out, &packet);
    out.put_u8(message.qos as u8);
    out.put_u64(clock.to_wall(received_at));
    Ok(())
}

/// Decodes what [`put_message`] wrote: the message and its wall-clock receive time.
fn get_message(r: &mut Reader) -> Option<(Message, u64)> {
    let mut packet = r.bytes()?;
    let Ok(Some(Packet::Publish(publish))) =
        Packet::decode_bytes(&mut packet, ProtocolVersion::V5, MAX_PACKET_SIZE)
    else {
        return None;
    };
    if !packet.is_empty() {
        return None;
    }
    let qos = QoS::from_u8(r.u8()?)?;
    let received = r.u64()?;
    let mut message = Message::new(publish.topic, publish.payload, qos);
    message.retain = publish.retain;
    message.properties = publish.properties;
    Some((message, received))
}

/// A delivery as kept: the message, and what this delivery changes of it.
pub(crate) fn put_delivery(
    out: &mut BytesMut,
    delivery: &Delivery,
    clock: Clock,
) -> Result<(), Unencodable> {
    put_message(out, &delivery.message, delivery.received_at, clock)?;
    out.put_u8(delivery.qos as u8);
    out.put_u8(u8::from(delivery.retain));
    out.put_u16(u16::try_from(delivery.subscription_ids.len()).unwrap_or(u16::MAX));
    for id in delivery.subscription_ids.iter().take(usize::from(u16::MAX)) {
        out.put_u32(id.get());
    }
    Ok(())
}

/// A delivery decoded, with its receive time still on the wall clock.
#[derive(Debug)]
pub(crate) struct StoredDelivery {
    pub(crate) message: Message,
    pub(crate) received_wall: u64,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    pub(crate) subscription_ids: Vec<SubscriptionId>,
}

impl StoredDelivery {
    /// Whether the message's expiry interval has passed at wall-clock `wall_now`, as
    /// [`Delivery::is_expired`] counts it (whole seconds).
    pub(crate) fn is_expired(&self, wall_now: u64) -> bool {
        expired(&self.message, self.received_wall, wall_now)
    }

    /// The delivery, with its receive time on the clock of `now`.
    pub(crate) fn into_delivery(self, tag: u64, clock: Clock, now: Instant) -> Delivery {
        let mut delivery = Delivery::new(
            Arc::new(self.message),
            clock.to_instant(self.received_wall, now),
        );
        delivery.qos = self.qos;
        delivery.retain = self.retain;
        delivery.subscription_ids = self.subscription_ids;
        delivery.tag = tag;
        delivery
    }
}

fn expired(message: &Message, received_wall: u64, wall_now: u64) -> bool {
    message
        .properties
        .message_expiry_interval
        .is_some_and(|interval| {
            wall_now.saturating_sub(received_wall) / 1000 >= u64::from(interval)
        })
}

pub(crate) fn get_delivery(r: &mut Reader) -> Option<StoredDelivery> {
    let (message, received_wall) = get_message(r)?;
    let qos = QoS::from_u8(r.u8()?)?;
    let retain = match r.u8()? {
        0 => false,
        1 => true,
        _ => return None,
    };
    let count = r.u16()?;
    let mut subscription_ids = Vec::with_capacity(usize::from(count.min(64)));
    for _ in 0..count {
        subscription_ids.push(SubscriptionId::new(r.u32()?)?);
    }
    Some(StoredDelivery {
        message,
        received_wall,
        qos,
        retain,
        subscription_ids,
    })
}

/// A row of the `messages` table.
#[derive(Debug)]
pub(crate) enum StoredMessage {
    Queued(StoredDelivery),
    Sent(PacketId, StoredDelivery),
    Released(PacketId),
}

pub(crate) fn encode_queued(delivery: &Delivery, clock: Clock) -> Result<Vec<u8>, Unencodable> {
    let mut out = BytesMut::new();
    out.put_u8(QUEUED);
    put_delivery(&mut out, delivery, clock)?;
    Ok(out.to_vec())
}

/// The row of a queued message once sent as `packet_id`: the same delivery under another
/// kind. `None` if the row is not a queued message.
pub(crate) fn queued_to_sent(row: &[u8], packet_id: PacketId) -> Option<Vec<u8>> {
    let (&kind, delivery) = row.split_first()?;
    if kind != QUEUED {
        return None;
    }
    let mut out = Vec::with_capacity(row.len() + 2);
    out.push(SENT);
    out.extend_from_slice(&packet_id.get().to_be_bytes());
    out.extend_from_slice(delivery);
    Some(out)
}

pub(crate) fn encode_released(packet_id: PacketId) -> Vec<u8> {
    let [hi, lo] = packet_id.get().to_be_bytes();
    vec![RELEASED, hi, lo]
}

/// The kind byte of a `messages` row, without decoding the rest.
pub(crate) fn message_kind(row: &[u8]) -> Option<u8> {
    row.first().copied()
}

pub(crate) fn decode_message(row: Bytes) -> Option<StoredMessage> {
    let mut r = Reader::new(row);
    let message = match r.u8()? {
        QUEUED => StoredMessage::Queued(get_delivery(&mut r)?),
        SENT => {
            let id = PacketId::new(r.u16()?)?;
            StoredMessage::Sent(id, get_delivery(&mut r)?)
        }
        RELEASED => StoredMessage::Released(PacketId::new(r.u16()?)?),
        _ => return None,
    };
    r.is_done().then_some(message)
}

pub(crate) fn encode_subscription(subscription: &SessionSubscription) -> Vec<u8> {
    let options = subscription.options;
    let mut out = Vec::with_capacity(8);
    out.push(SUBSCRIPTION);
    out.push(options.qos as u8);
    out.push(u8::from(options.no_local) | (u8::from(options.retain_as_published) << 1));
    out.push(options.retain_handling as u8);
    out.extend_from_slice(&subscription.id.map_or(0, SubscriptionId::get).to_be_bytes());
    out
}

pub(crate) fn decode_subscription(row: Bytes) -> Option<SessionSubscription> {
    let mut r = Reader::new(row);
    if r.u8()? != SUBSCRIPTION {
        return None;
    }
    let qos = QoS::from_u8(r.u8()?)?;
    let flags = r.u8()?;
    if flags > 0b11 {
        return None;
    }
    let retain_handling = match r.u8()? {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return None,
    };
    let id = r.u32()?;
    let id = match id {
        0 => None,
        id => Some(SubscriptionId::new(id)?),
    };
    let mut options = SubscriptionOptions::qos(qos);
    options.no_local = flags & 1 != 0;
    options.retain_as_published = flags & 2 != 0;
    options.retain_handling = retain_handling;
    r.is_done().then(|| SessionSubscription::new(options, id))
}

pub(crate) fn encode_session(record: &SessionRecord, clock: Clock) -> Result<Vec<u8>, Unencodable> {
    let mut out = BytesMut::new();
    out.put_u8(SESSION);
    put_bytes(&mut out, record.client_id.as_bytes());
    match &record.username {
        Some(name) => {
            out.put_u8(1);
            put_bytes(&mut out, name.as_bytes());
        }
        None => out.put_u8(0),
    }
    out.put_u8(record.version.level());
    out.put_u32(record.expiry_interval);
    out.put_u8(u8::from(record.connected));
    out.put_u64(clock.to_wall(record.offline_since));
    match &record.will {
        Some((will, delay)) => {
            out.put_u8(1);
            out.put_u32(*delay);
            put_bytes(&mut out, &encode_will(will)?);
        }
        None => out.put_u8(0),
    }
    Ok(out.to_vec())
}

/// A will, as the MQTT 5.0 CONNECT that carries it: the codec keeps every field and property.
fn encode_will(will: &Will) -> Result<BytesMut, Unencodable> {
    let mut connect = Connect::new(ProtocolVersion::V5, ByteStr::new());
    connect.will = Some(will.clone());
    let mut packet = BytesMut::new();
    Packet::Connect(Box::new(connect))
        .encode(ProtocolVersion::V5, &mut packet)
        .map_err(Unencodable)?;
    Ok(packet)
}

fn decode_will(mut packet: Bytes) -> Option<Will> {
    let Ok(Some(Packet::Connect(connect))) =
        Packet::decode_bytes(&mut packet, ProtocolVersion::V5, MAX_PACKET_SIZE)
    else {
        return None;
    };
    if !packet.is_empty() {
        return None;
    }
    connect.will
}

/// A session record, with `offline_since` still on the wall clock.
#[derive(Debug)]
pub(crate) struct StoredSession {
    pub(crate) client_id: ByteStr,
    pub(crate) username: Option<ByteStr>,
    pub(crate) version: ProtocolVersion,
    pub(crate) expiry_interval: u32,
    pub(crate) connected: bool,
    pub(crate) offline_wall: u64,
    pub(crate) will: Option<(Will, u32)>,
}

impl StoredSession {
    pub(crate) fn into_record(self, clock: Clock, now: Instant) -> SessionRecord {
        let mut record = SessionRecord::new(
            self.client_id,
            self.version,
            self.expiry_interval,
            clock.to_instant(self.offline_wall, now),
        );
        record.username = self.username;
        record.connected = self.connected;
        record.will = self.will;
        record
    }

    /// The record again, with the will cleared.
    pub(crate) fn encode_without_will(&self) -> Vec<u8> {
        let mut out = BytesMut::new();
        out.put_u8(SESSION);
        put_bytes(&mut out, self.client_id.as_bytes());
        match &self.username {
            Some(name) => {
                out.put_u8(1);
                put_bytes(&mut out, name.as_bytes());
            }
            None => out.put_u8(0),
        }
        out.put_u8(self.version.level());
        out.put_u32(self.expiry_interval);
        out.put_u8(u8::from(self.connected));
        out.put_u64(self.offline_wall);
        out.put_u8(0);
        out.to_vec()
    }
}

pub(crate) fn decode_session(row: Bytes) -> Option<StoredSession> {
    let mut r = Reader::new(row);
    if r.u8()? != SESSION {
        return None;
    }
    let client_id = r.str()?;
    let username = match r.u8()? {
        0 => None,
        1 => Some(r.str()?),
        _ => return None,
    };
    let version = ProtocolVersion::from_level(r.u8()?)?;
    let expiry_interval = r.u32()?;
    let connected = match r.u8()? {
        0 => false,
        1 => true,
        _ => return None,
    };
    let offline_wall = r.u64()?;
    let will = match r.u8()? {
        0 => None,
        1 => {
            let delay = r.u32()?;
            Some((decode_will(r.bytes()?)?, delay))
        }
        _ => return None,
    };
    r.is_done().then_some(StoredSession {
        client_id,
        username,
        version,
        expiry_interval,
        connected,
        offline_wall,
        will,
    })
}

pub(crate) fn encode_retained(retained: &Retained, clock: Clock) -> Result<Vec<u8>, Unencodable> {
    let mut out = BytesMut::new();
    out.put_u8(RETAINED);
    put_message(&mut out, &retained.message, retained.received_at, clock)?;
    Ok(out.to_vec())
}

/// A retained message and its wall-clock receive time.
pub(crate) fn decode_retained(row: Bytes) -> Option<(Message, u64)> {
    let mut r = Reader::new(row);
    if r.u8()? != RETAINED {
        return None;
    }
    let message = get_message(&mut r)?;
    r.is_done().then_some(message)
}

/// Whether a retained message decoded by [`decode_retained`] has expired at `wall_now`.
pub(crate) fn retained_expired(message: &Message, received_wall: u64, wall_now: u64) -> bool {
    expired(message, received_wall, wall_now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_stray_bytes_do_not_decode() {
        for bytes in [
            &b""[..],
            &[QUEUED],
            &[SESSION, 0, 0],
            &[0xff; 40],
            &[RELEASED, 0, 0],
        ] {
            let b = Bytes::copy_from_slice(bytes);
            assert!(decode_message(b.clone()).is_none());
            assert!(decode_session(b.clone()).is_none());
            assert!(decode_subscription(b.clone()).is_none());
            assert!(decode_retained(b).is_none());
        }
    }

    #[test]
    fn a_delivery_comes_back_with_its_fields() {
        let clock = Clock::now();
        let now = Instant::now();
        let mut message = Message::new("a/b", &b"payload"[..], QoS::ExactlyOnce);
        message.retain = true;
        message.properties.message_expiry_interval = Some(60);
        message
            .properties
            .set_content_type(Some("text/plain".into()))
            .unwrap();
        let mut delivery = Delivery::new(Arc::new(message), now);
        delivery.qos = QoS::AtLeastOnce;
        delivery.subscription_ids = vec![SubscriptionId::new(7).unwrap()];
        delivery.tag = 9;
        let row = encode_queued(&delivery, clock).unwrap();
        let Some(StoredMessage::Queued(stored)) = decode_message(Bytes::from(row.clone())) else {
            panic!("decodes");
        };
        let back = stored.into_delivery(9, clock, now);
        assert_eq!(back.message, delivery.message);
        assert_eq!(back.qos, delivery.qos);
        assert_eq!(back.subscription_ids, delivery.subscription_ids);
        let id = PacketId::new(3).unwrap();
        let sent = queued_to_sent(&row, id).unwrap();
        let Some(StoredMessage::Sent(got, _)) = decode_message(Bytes::from(sent)) else {
            panic!("sent decodes");
        };
        assert_eq!(got, id);
    }

    #[test]
    fn times_go_through_the_wall_clock() {
        let clock = Clock::now();
        let now = Instant::now();
        let earlier = now.checked_sub(Duration::from_secs(5)).unwrap_or(now);
        let wall = clock.to_wall(earlier);
        let back = clock.to_instant(wall, now);
        let diff = if back > earlier {
            back - earlier
        } else {
            earlier - back
        };
        assert!(diff < Duration::from_millis(2), "{diff:?}");
        // The future is now.
        assert_eq!(clock.to_instant(u64::MAX, now), now);
    }
}
