//! Application messages and the limits a peer announced.

use std::fmt;
use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};
use midge_codec::{
    ByteStr, PacketId, ProtocolVersion, Publish, PublishProperties, PublishRef, QoS,
};
use midge_topic::{TopicError, TopicName};

/// An application message: what a client publishes and what a subscriber receives.
///
/// Topic aliases and packet identifiers are connection details handled by the state machines,
/// so they are not part of a message.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Message {
    /// Topic name.
    pub topic: ByteStr,
    /// Payload, shared rather than copied when a message fans out.
    pub payload: Bytes,
    /// QoS.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// 5.0 properties. `topic_alias` is ignored: aliases are chosen per connection.
    pub properties: PublishProperties,
    /// The message's plain QoS 0 PUBLISH, encoded once and shared by every subscriber that
    /// receives it in that form (see [`Message::plain_publish`]).
    encoded: EncodedForms,
}

/// Equality is the message's content; the encoding cache is not part of it.
impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.topic == other.topic
            && self.payload == other.payload
            && self.qos == other.qos
            && self.retain == other.retain
            && self.properties == other.properties
    }
}

impl Eq for Message {}

/// The encodings of a message's plain form: QoS 0, its own RETAIN flag, no topic alias and no
/// subscription identifiers, one per wire format (3.1 and 3.1.1 share one). Filled on first
/// use; reading one after that takes no lock.
#[derive(Clone, Default)]
struct EncodedForms {
    v3: OnceLock<Bytes>,
    v5: OnceLock<Bytes>,
}

impl fmt::Debug for EncodedForms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncodedForms")
    }
}

impl Message {
    /// A message without properties.
    pub fn new(topic: impl Into<ByteStr>, payload: impl Into<Bytes>, qos: QoS) -> Self {
        Self {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            ..Self::default()
        }
    }

    /// Bytes this message holds: its topic (when longer than a `ByteStr` holds inline),
    /// payload and encoded properties, and the message itself with its reference counts.
    ///
    /// This is what the message really costs when its parts hold only their own bytes, as a
    /// server's messages do (decoded with
    /// [`Packet::decode_unshared`](midge_codec::Packet::decode_unshared)): queue and memory
    /// limits count it. Not included: the encoded PUBLISH a message caches when it is first
    /// sent at QoS 0, to share among its subscribers, which at most doubles what it holds.
    #[inline]
    pub fn held_bytes(&self) -> usize {
        /// An `Arc`'s strong and weak counts.
        const ARC_COUNTS: usize = 2 * size_of::<usize>();
        let topic = if self.topic.len() > ByteStr::INLINE_CAPACITY {
            self.topic.len()
        } else {
            0
        };
        size_of::<Self>() + ARC_COUNTS + topic + self.payload.len() + self.properties.encoded_size()
    }

    /// The topic as a [`TopicName`], for routing.
    ///
    /// A topic known to be a valid topic name is not checked again (see
    /// [`ByteStr::topic_levels`]): the topic of a server's
    /// [`ServerEvent::Publish`](crate::server::ServerEvent::Publish) or will, which the server
    /// checked against its topic limits, or one made from ASCII text. Any other is validated
    /// here, with [`midge_topic::Limits::DEFAULT`].
    ///
    /// # Errors
    ///
    /// The [`TopicError`] of a topic that is not a valid topic name.
    pub fn topic_name(&self) -> Result<TopicName<'_>, TopicError> {
        match self.topic.topic_levels() {
            Some(_) => Ok(TopicName::from_validated(self.topic.as_str())),
            None => TopicName::new(self.topic.as_str()),
        }
    }

    /// The message of a received PUBLISH whose topic has been resolved.
    pub(crate) fn from_publish(publish: Publish, topic: ByteStr) -> Self {
        let mut properties = publish.properties;
        properties.topic_alias = None;
        Self {
            topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties,
            encoded: EncodedForms::default(),
        }
    }

    /// The PUBLISH packet for this message, without a topic alias: aliases are chosen per
    /// connection, so one the application left in `properties` is not passed through.
    pub(crate) fn to_publish(&self, packet_id: Option<PacketId>, dup: bool) -> Publish {
        let mut properties = self.properties.clone();
        properties.topic_alias = None;
        Publish {
            dup,
            qos: self.qos,
            retain: self.retain,
            topic: self.topic.clone(),
            packet_id,
            payload: self.payload.clone(),
            properties,
        }
    }

    /// The PUBLISH packet for this message, borrowed, without a topic alias: what
    /// [`Self::to_publish`] makes, without copying anything.
    pub(crate) fn publish_ref(&self, packet_id: Option<PacketId>, dup: bool) -> PublishRef<'_> {
        let mut publish = PublishRef::new(&self.topic, &self.payload, &self.properties);
        publish.dup = dup;
        publish.qos = self.qos;
        publish.retain = self.retain;
        publish.packet_id = packet_id;
        publish.topic_alias = None;
        publish
    }

    /// The plain QoS 0 PUBLISH of this message for `version`, encoded at most once however
    /// many subscribers receive it: fan-out shares the bytes as it shares the payload. `None`
    /// if the message cannot be encoded for `version`.
    pub(crate) fn plain_publish(&self, version: ProtocolVersion) -> Option<&Bytes> {
        let form = if version.is_v5() {
            &self.encoded.v5
        } else {
            &self.encoded.v3
        };
        if form.get().is_none() {
            let no_properties = PublishProperties::default();
            let mut publish = self.publish_ref(None, false);
            publish.qos = QoS::AtMostOnce;
            if version.is_v5() {
                // A server sends its own Subscription Identifiers, never the publisher's.
                publish.subscription_identifiers = Some(&[]);
            } else {
                publish.properties = &no_properties;
                publish.message_expiry_interval = None;
            }
            let mut buf = BytesMut::new();
            publish.encode(version, &mut buf).ok()?;
            let _ = form.set(buf.freeze());
        }
        form.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use midge_codec::Packet;

    #[test]
    fn the_plain_form_is_encoded_once_per_version() {
        let mut message = Message::new("fan/out", &b"payload"[..], QoS::AtLeastOnce);
        message.retain = true;
        message
            .properties
            .set_content_type(Some(ByteStr::from("text/plain")))
            .unwrap();
        let shared = std::sync::Arc::new(message);
        let first = shared.plain_publish(ProtocolVersion::V5).unwrap().clone();
        let again = shared.plain_publish(ProtocolVersion::V5).unwrap();
        // The same bytes, not a second encoding.
        assert_eq!(first.as_ptr(), again.as_ptr());
        let v3 = shared.plain_publish(ProtocolVersion::V3_1_1).unwrap();
        assert_ne!(first, *v3, "3.x has no properties");
        for (version, bytes) in [(ProtocolVersion::V5, &first), (ProtocolVersion::V3_1_1, v3)] {
            let mut buf = BytesMut::from(&bytes[..]);
            let Ok(Some(Packet::Publish(p))) =
                Packet::decode(&mut buf, version, midge_codec::MAX_PACKET_SIZE)
            else {
                panic!("decodes");
            };
            assert_eq!(
                (p.qos, p.retain, p.topic.as_str()),
                (QoS::AtMostOnce, true, "fan/out")
            );
            assert_eq!(p.properties.content_type().is_some(), version.is_v5());
        }
        // A clone shares nothing it should not: equality ignores the cache.
        assert_eq!(
            *shared,
            Message {
                encoded: EncodedForms::default(),
                ..(*shared).clone()
            }
        );
    }
}
