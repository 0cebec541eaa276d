//! Messages as the application receives them.

use std::sync::Arc;

use bytes::Bytes;
use midge_codec::{ByteStr, PayloadFormat, PublishProperties, QoS};

use crate::client::{AckGroup, AckKey};

/// A message received on a [`Subscription`](crate::Subscription), with every 5.0 property.
///
/// Cloning it copies no payload. With
/// [`ClientBuilder::manual_acks`](crate::ClientBuilder::manual_acks), a QoS 1 or 2 message
/// carries its [`Ack`], taken with [`Message::take_ack`]; a clone carries none, and equality
/// ignores it.
#[derive(Debug)]
pub struct Message {
    inner: midge_proto::Message,
    packet_id: Option<u16>,
    ack: Option<Ack>,
}

impl Clone for Message {
    /// A copy without the [`Ack`]: a message is acknowledged once.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            packet_id: self.packet_id,
            ack: None,
        }
    }
}

impl PartialEq for Message {
    /// Equal content and packet identifier; whether either carries an [`Ack`] does not count.
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner && self.packet_id == other.packet_id
    }
}

impl Eq for Message {}

impl Message {
    pub(crate) fn new(inner: midge_proto::Message, packet_id: Option<u16>) -> Self {
        Self {
            inner,
            packet_id,
            ack: None,
        }
    }

    /// The same message carrying `ack`.
    pub(crate) fn with_ack(mut self, ack: Ack) -> Self {
        self.ack = Some(ack);
        self
    }

    /// Which acknowledgement the [`Ack`] it carries is for.
    pub(crate) fn ack_key(&self) -> Option<AckKey> {
        self.ack
            .as_ref()
            .and_then(|a| a.group.as_ref())
            .map(|g| g.key)
    }

    /// Takes the acknowledgement of this message: `Some` once for a QoS 1 or 2 message
    /// received with [`ClientBuilder::manual_acks`](crate::ClientBuilder::manual_acks) on,
    /// `None` otherwise (QoS 0, automatic acknowledgement, a clone, or taken already).
    ///
    /// The message is acknowledged to the broker (PUBACK or PUBREC) only when [`Ack::ack`]
    /// is called. Dropping the message without taking its `Ack`, like dropping the `Ack`,
    /// abandons it: see [`Ack`].
    pub fn take_ack(&mut self) -> Option<Ack> {
        self.ack.take()
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

/// The acknowledgement of one received QoS 1 or 2 message, with
/// [`ClientBuilder::manual_acks`](crate::ClientBuilder::manual_acks): taken from the message
/// with [`Message::take_ack`], and sent with [`Ack::ack`].
///
/// - [`Ack::ack`] lets PUBACK (QoS 1) or PUBREC (QoS 2) go out. Acknowledgements still go
///   out in the order the messages arrived [MQTT-4.6.0-2] [MQTT-4.6.0-3]: one acknowledged
///   early waits for those that arrived before it to be acknowledged or abandoned.
/// - Dropped without [`Ack::ack`] (also with its message, or in a stream that is dropped),
///   it abandons the message: it is never acknowledged on this connection, so the broker
///   keeps it, and on the next connection of a resumed session sends it again. An abandoned
///   message keeps its place in the broker's window ([`Limits::receive_maximum`]) until the
///   connection ends. Dropping never acknowledges.
/// - When one PUBLISH reaches several streams (overlapping filters), each stream's copy has
///   its own `Ack`: the message is acknowledged once every copy's `Ack` has been acked, and
///   abandoned as soon as one is dropped without it.
/// - A QoS 1 acknowledgement counts only on the connection the message came on: after a
///   reconnect it is ignored, and the broker (if it resumed the session) sends the message
///   again, so the application may see it twice. A QoS 2 acknowledgement holds for its
///   session: the broker's resend after a reconnect is answered with it and not delivered
///   again; in a new session (the broker lost the old one) it is ignored.
///
/// After the client has closed, acknowledging does nothing.
///
/// [`Limits::receive_maximum`]: crate::Limits::receive_maximum
#[must_use = "dropping an Ack abandons its message; call `ack` to acknowledge it"]
pub struct Ack {
    packet_id: u16,
    /// `None` once acknowledged.
    group: Option<Arc<AckGroup>>,
}

impl Ack {
    pub(crate) fn new(group: Arc<AckGroup>) -> Self {
        Self {
            packet_id: group.key.packet_id.get(),
            group: Some(group),
        }
    }

    /// Acknowledges the message (see [`Ack`]).
    pub fn ack(mut self) {
        // The last copy's `Ack` to go, unless one abandoned it, acknowledges (`AckGroup`).
        drop(self.group.take());
    }

    /// The Packet Identifier of the message.
    pub fn packet_id(&self) -> u16 {
        self.packet_id
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if let Some(group) = self.group.take() {
            group.abandon();
        }
    }
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ack")
            .field("packet_id", &self.packet_id())
            .finish()
    }
}
