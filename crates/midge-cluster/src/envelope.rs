//! A message as it travels between nodes, and as the bucket keeps a retained one: a format
//! byte, the message's QoS, when it was published (milliseconds since the Unix epoch, for
//! the Message Expiry Interval of a retained message read later), then the message as an
//! MQTT 5.0 PUBLISH packet at QoS 0 (topic, payload, RETAIN, and the 5.0 properties other
//! than a topic alias and subscription identifiers, which belong to one connection and one
//! delivery).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use midge_broker::codec::{Packet, ProtocolVersion, PublishRef, QoS};
use midge_broker::proto::Message;

/// The format: the first byte of every envelope.
const FORMAT: u8 = 1;
/// A PUBLISH is never larger than this (MQTT's own limit).
const MAX_PACKET: u32 = 268_435_455;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The envelope of `message`; `None` if it cannot be encoded.
pub(crate) fn encode(message: &Message) -> Option<Bytes> {
    let mut publish = PublishRef::new(&message.topic, &message.payload, &message.properties);
    publish.qos = QoS::AtMostOnce;
    publish.retain = message.retain;
    publish.topic_alias = None;
    publish.subscription_identifiers = Some(&[]);
    let mut out = BytesMut::with_capacity(message.payload.len() + message.topic.len() + 32);
    out.put_u8(FORMAT);
    out.put_u8(message.qos as u8);
    out.put_u64(now_ms());
    publish.encode(ProtocolVersion::V5, &mut out).ok()?;
    Some(out.freeze())
}

/// The message of an envelope, and when it was published.
fn decode_with_time(mut body: Bytes) -> Option<(Message, u64)> {
    if body.len() < 10 || body.get_u8() != FORMAT {
        return None;
    }
    let qos = QoS::from_u8(body.get_u8())?;
    let published = body.get_u64();
    let Ok(Some(Packet::Publish(publish))) =
        Packet::decode_bytes(&mut body, ProtocolVersion::V5, MAX_PACKET)
    else {
        return None;
    };
    if !body.is_empty() {
        return None;
    }
    let mut message = Message::new(publish.topic, publish.payload, qos);
    message.retain = publish.retain;
    message.properties = publish.properties;
    Some((message, published))
}

/// The message of an envelope.
pub(crate) fn decode(body: Bytes) -> Option<Message> {
    decode_with_time(body).map(|(message, _)| message)
}

/// A retained message read from the bucket, its Message Expiry Interval shortened by the
/// time since it was published; a deletion of its topic if that interval has passed.
pub(crate) fn decode_retained(body: Bytes) -> Option<Message> {
    let (mut message, published) = decode_with_time(body)?;
    if let Some(expiry) = message.properties.message_expiry_interval {
        let age = now_ms().saturating_sub(published) / 1000;
        match u32::try_from(age)
            .ok()
            .and_then(|age| expiry.checked_sub(age))
        {
            Some(left) if left > 0 => message.properties.message_expiry_interval = Some(left),
            _ => return Some(deletion(message.topic.to_string())),
        }
    }
    message.retain = true;
    Some(message)
}

/// What deletes the retained message of `topic`: a retained message with no payload.
pub(crate) fn deletion(topic: String) -> Message {
    let mut message = Message::new(topic, Bytes::new(), QoS::AtMostOnce);
    message.retain = true;
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_with_properties_survives_the_trip() {
        let mut message = Message::new("a/b", Bytes::from_static(b"hello"), QoS::ExactlyOnce);
        message.retain = true;
        message.properties.message_expiry_interval = Some(60);
        message
            .properties
            .set_content_type(Some("text/plain".into()))
            .unwrap();
        message
            .properties
            .set_correlation_data(Some(Bytes::from_static(b"\0\x01")))
            .unwrap();
        message.properties.push_user_property("k", "v\nw").unwrap();
        let decoded = decode(encode(&message).unwrap()).unwrap();
        assert_eq!(decoded, message);
        assert_eq!(decoded.qos, QoS::ExactlyOnce);
        let retained = decode_retained(encode(&message).unwrap()).unwrap();
        assert!(matches!(
            retained.properties.message_expiry_interval,
            Some(59 | 60)
        ));
        assert!(decode(Bytes::from_static(b"\x02\x01")).is_none());
        assert!(decode(Bytes::from_static(b"")).is_none());
    }

    #[test]
    fn an_expired_retained_message_reads_as_its_deletion() {
        let mut message = Message::new("a", Bytes::from_static(b"x"), QoS::AtLeastOnce);
        message.properties.message_expiry_interval = Some(5);
        let mut body = BytesMut::from(&encode(&message).unwrap()[..]);
        // Published ten seconds ago.
        let published = now_ms() - 10_000;
        body[2..10].copy_from_slice(&published.to_be_bytes());
        let read = decode_retained(body.freeze()).unwrap();
        assert!(read.payload.is_empty() && read.retain);
    }
}
