//! Application messages and the limits a peer announced.

use bytes::Bytes;
use midge_codec::{ByteStr, PacketId, Publish, PublishProperties, QoS};

/// An application message: what a client publishes and what a subscriber receives.
///
/// Topic aliases and packet identifiers are connection details handled by the state machines,
/// so they are not part of a message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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
}
