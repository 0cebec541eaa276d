//! Messages as the application receives them.

use bytes::Bytes;
use midge_codec::{ByteStr, PayloadFormat, PublishProperties, QoS};

/// A message received on a [`Subscription`](crate::Subscription), with every 5.0 property.
///
/// Cloning it copies no payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    inner: midge_proto::Message,
    packet_id: Option<u16>,
}

impl Message {
    pub(crate) fn new(inner: midge_proto::Message, packet_id: Option<u16>) -> Self {
        Self { inner, packet_id }
    }

    /// The Packet Identifier of the PUBLISH that brought it: `None` for QoS 0.
    pub fn packet_id(&self) -> Option<u16> {
        self.packet_id
    }

    /// The topic it was published to.
    pub fn topic(&self) -> &str {
        self.inner.topic.as_str()
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.inner.payload
    }

    /// The QoS it was delivered with.
    pub fn qos(&self) -> QoS {
        self.inner.qos
    }

    /// The RETAIN flag: set for a retained message sent on subscribe, or with 5.0 Retain As
    /// Published.
    pub fn retain(&self) -> bool {
        self.inner.retain
    }

    /// Every 5.0 property (the topic alias is already resolved and removed).
    pub fn properties(&self) -> &PublishProperties {
        &self.inner.properties
    }

    /// 5.0 User Properties, in order.
    pub fn user_properties(&self) -> impl Iterator<Item = (ByteStr, ByteStr)> + '_ {
        self.inner.properties.user_properties()
    }

    /// 5.0 Response Topic.
    pub fn response_topic(&self) -> Option<ByteStr> {
        self.inner.properties.response_topic()
    }

    /// 5.0 Correlation Data.
    pub fn correlation_data(&self) -> Option<Bytes> {
        self.inner.properties.correlation_data()
    }

    /// 5.0 Content Type.
    pub fn content_type(&self) -> Option<ByteStr> {
        self.inner.properties.content_type()
    }

    /// 5.0 Message Expiry Interval: the seconds left when the broker sent it.
    pub fn message_expiry_interval(&self) -> Option<u32> {
        self.inner.properties.message_expiry_interval
    }

    /// 5.0 Payload Format Indicator.
    pub fn payload_format(&self) -> Option<PayloadFormat> {
        self.inner.properties.payload_format_indicator
    }

    /// 5.0 Subscription Identifiers of the subscriptions it matched.
    pub fn subscription_identifiers(&self) -> Vec<u32> {
        self.inner
            .properties
            .subscription_identifiers()
            .map(|id| id.get())
            .collect()
    }
}
