//! A server-side session: what outlives a connection (§4.1), with bounded queues.
//!
//! The broker keeps a [`Session`] while its client is offline, adds messages for it with
//! [`Session::enqueue`], and hands it to the next [`ServerConnection`](crate::server) of the
//! same client. [`Session::encode`] and [`Session::decode`] turn it into bytes and back, so a
//! persistence layer can store it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use midge_codec::{
    ByteStr, Packet, PacketId, ProtocolVersion, Publish, PublishProperties, PublishRef, QoS,
    SubscriptionId, SubscriptionOptions, MAX_PACKET_SIZE,
};

use crate::inflight::Inflight;
use crate::message::Message;

/// A message on its way to one subscriber: the shared message plus what differs per
/// subscription. Cloning it copies no payload.
///
/// Made with [`Delivery::new`], then its fields set as they differ from the message's.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivery {
    /// The message, shared by every subscriber it fans out to.
    pub message: Arc<Message>,
    /// QoS of this delivery: the lower of the message's and the subscription's.
    pub qos: QoS,
    /// RETAIN flag to send (Retain As Published, or a retained message sent on subscribe).
    pub retain: bool,
    /// Subscription Identifiers of the matching subscriptions (5.0).
    pub subscription_ids: Vec<SubscriptionId>,
    /// When the broker received the message, for counting down its Message Expiry Interval.
    pub received_at: Instant,
    /// A persistence layer's name for this delivery, unique among a session's deliveries; 0
    /// for one that is not persisted. A journaled session reports what becomes of a delivery
    /// with a tag ([`SessionChange`]).
    pub tag: u64,
}

impl Delivery {
    /// A delivery of `message`, received by the broker at `received_at`, with the message's
    /// own QoS and RETAIN flag and no Subscription Identifiers.
    pub fn new(message: Arc<Message>, received_at: Instant) -> Self {
        Self {
            qos: message.qos,
            retain: message.retain,
            message,
            subscription_ids: Vec::new(),
            received_at,
            tag: 0,
        }
    }

    /// Bytes this delivery counts against queue and memory limits: what its message holds
    /// ([`Message::held_bytes`]) and the delivery itself. A message shared by many deliveries
    /// counts in each, so the count never falls short of what is held.
    pub fn size(&self) -> usize {
        Self::size_of(&self.message)
    }

    /// What [`Delivery::size`] is for any delivery of `message`.
    #[inline]
    pub fn size_of(message: &Message) -> usize {
        size_of::<Self>() + message.held_bytes()
    }

    /// True once the message's expiry interval has passed [MQTT-3.3.2-5].
    pub fn is_expired(&self, now: Instant) -> bool {
        self.remaining_expiry(now) == Some(0)
    }

    /// Seconds left of the Message Expiry Interval, if it has one [MQTT-3.3.2-6].
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        let interval = self.message.properties.message_expiry_interval?;
        let elapsed = now.saturating_duration_since(self.received_at).as_secs();
        Some(u32::try_from(u64::from(interval).saturating_sub(elapsed)).unwrap_or(0))
    }

    /// The PUBLISH for this delivery to a client of `version`, borrowed from it, without a
    /// topic alias: the message's topic, payload and properties as they are, with this
    /// delivery's QoS, RETAIN, remaining expiry and Subscription Identifiers. 3.x has no
    /// properties, so a message published by a 5.0 client goes to a 3.x one without them
    /// (`no_properties` is what it gets instead: empty ones).
    pub(crate) fn publish_ref<'a>(
        &'a self,
        version: ProtocolVersion,
        now: Instant,
        packet_id: Option<PacketId>,
        dup: bool,
        no_properties: &'a PublishProperties,
    ) -> PublishRef<'a> {
        let mut publish = self.message.publish_ref(packet_id, dup);
        publish.qos = self.qos;
        publish.retain = self.retain;
        if version.is_v5() {
            publish.message_expiry_interval = self.remaining_expiry(now);
            publish.subscription_identifiers = Some(&self.subscription_ids);
        } else {
            publish.properties = no_properties;
            publish.message_expiry_interval = None;
        }
        publish
    }

    /// The PUBLISH for this delivery, without a topic alias.
    pub(crate) fn to_publish(
        &self,
        now: Instant,
        packet_id: Option<PacketId>,
        dup: bool,
    ) -> Publish {
        let mut publish = self.message.to_publish(packet_id, dup);
        publish.qos = self.qos;
        publish.retain = self.retain;
        publish
            .properties
            .set_subscription_identifiers(&self.subscription_ids);
        publish.properties.message_expiry_interval = self.remaining_expiry(now);
        publish
    }
}

/// Limits on what one session may queue. When a limit is reached, the newest message is
/// dropped (tail drop) and counted in [`SessionStats`]; messages already queued are kept, so a
/// slow consumer sees a gap rather than a reordering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueLimits {
    /// Most messages waiting to be sent.
    pub max_messages: usize,
    /// Most bytes waiting to be sent, as [`Delivery::size`] counts them.
    pub max_bytes: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            max_messages: 1000,
            max_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Counters of one session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionStats {
    /// Messages dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Messages dropped because they expired before they could be sent.
    pub dropped_expired: u64,
    /// Messages dropped because they exceed the client's Maximum Packet Size [MQTT-3.1.2-25].
    pub dropped_too_large: u64,
}

/// Where an outgoing QoS 1 or 2 delivery is in its flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum OutState {
    /// PUBLISH sent, waiting for PUBACK or PUBREC.
    Published(Delivery),
    /// PUBREL sent, waiting for PUBCOMP; with the delivery's tag.
    Released(u64),
}

/// A change to a journaled session ([`Session::set_journaled`]) that a persistence layer must
/// record to bring the session back as it was. Deliveries are named by their
/// [`Delivery::tag`]; those without one are not reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionChange {
    /// A QoS 2 delivery was sent for the first time, as `packet_id`: a resend after a restart
    /// must use the same identifier, or the client would take it for a new message.
    Sent {
        /// The delivery.
        tag: u64,
        /// Its packet identifier.
        packet_id: PacketId,
    },
    /// The client's PUBREC came for a QoS 2 delivery: the PUBREL goes next, and only the
    /// identifier is still needed.
    Released {
        /// The delivery.
        tag: u64,
        /// Its packet identifier.
        packet_id: PacketId,
    },
    /// The delivery is done: acknowledged, refused by the client, or dropped (expired, too
    /// large for the client, or taken out of the queue).
    Finished {
        /// The delivery.
        tag: u64,
    },
    /// A QoS 2 message from the client with this identifier is held until its PUBREL: a
    /// resend of it must not be routed again [MQTT-4.3.3-10]. A session does not report it:
    /// the broker records it together with the message's routing, which must be kept with
    /// it or not at all.
    IncomingQos2 {
        /// The identifier.
        packet_id: PacketId,
    },
    /// The client released (or the broker refused) the QoS 2 message with this identifier:
    /// the identifier names a new message from now on.
    IncomingReleased {
        /// The identifier.
        packet_id: PacketId,
    },
}

/// One subscription as the session remembers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionSubscription {
    /// Options from SUBSCRIBE, with the QoS granted in SUBACK.
    pub options: SubscriptionOptions,
    /// Subscription Identifier from SUBSCRIBE (5.0).
    pub id: Option<SubscriptionId>,
}

impl SessionSubscription {
    /// A subscription with these options and identifier.
    pub fn new(options: SubscriptionOptions, id: Option<SubscriptionId>) -> Self {
        Self { options, id }
    }
}

/// The state a server keeps for a client between connections.
#[derive(Clone, Debug)]
pub struct Session {
    pub(crate) client_id: ByteStr,
    /// Session Expiry Interval in seconds; `u32::MAX` means never.
    pub(crate) expiry_interval: u32,
    pub(crate) subscriptions: BTreeMap<ByteStr, SessionSubscription>,
    pub(crate) outgoing: Inflight<OutState>,
    pub(crate) queue: VecDeque<Delivery>,
    pub(crate) queued_bytes: usize,
    /// QoS 2 identifiers received from the client whose PUBREL has not come yet.
    pub(crate) incoming_qos2: BTreeSet<PacketId>,
    pub(crate) limits: QueueLimits,
    pub(crate) stats: SessionStats,
    /// Changes not yet taken ([`Session::take_changes`]); `None` unless journaled. Boxed:
    /// 8 bytes in every session rather than 24 (a connection carries its session inline).
    #[allow(clippy::box_collection)]
    pub(crate) journal: Option<Box<Vec<SessionChange>>>,
}

impl Session {
    /// An empty session.
    pub fn new(client_id: ByteStr, limits: QueueLimits) -> Self {
        Self {
            client_id,
            expiry_interval: 0,
            subscriptions: BTreeMap::new(),
            outgoing: Inflight::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            incoming_qos2: BTreeSet::new(),
            limits,
            stats: SessionStats::default(),
            journal: None,
        }
    }

    /// Makes the session report its changes ([`Session::take_changes`]), for a persistence
    /// layer that keeps it.
    pub fn set_journaled(&mut self, journaled: bool) {
        match (journaled, &self.journal) {
            (true, None) => self.journal = Some(Box::default()),
            (false, Some(_)) => self.journal = None,
            _ => {}
        }
    }

    /// Whether the session reports its changes.
    pub fn is_journaled(&self) -> bool {
        self.journal.is_some()
    }

    /// Moves the changes made since the last call into `out`, oldest first.
    pub fn take_changes(&mut self, out: &mut Vec<SessionChange>) {
        if let Some(changes) = self.journal.as_mut() {
            out.append(changes);
        }
    }

    /// Sets how long the session outlives its connection, in seconds (`u32::MAX`: for ever),
    /// for a session restored by a persistence layer.
    pub fn set_expiry_interval(&mut self, seconds: u32) {
        self.expiry_interval = seconds;
    }

    /// Adds a subscription to a session restored by a persistence layer.
    pub fn restore_subscription(&mut self, filter: ByteStr, subscription: SessionSubscription) {
        self.subscriptions.insert(filter, subscription);
    }

    /// Adds a QoS 1 or 2 delivery that was sent as `packet_id` and not acknowledged, to a
    /// session restored by a persistence layer: it is resent, with DUP set, when the client
    /// resumes [MQTT-4.4.0-1]. Call in the order they were first sent, before queueing.
    /// False if the identifier is in flight already.
    pub fn restore_sent(&mut self, packet_id: PacketId, delivery: Delivery) -> bool {
        self.outgoing
            .insert(packet_id, OutState::Published(delivery))
            .is_ok()
    }

    /// Adds a QoS 2 delivery whose PUBREC came and whose PUBCOMP did not, to a session
    /// restored by a persistence layer: its PUBREL is resent when the client resumes. False if
    /// the identifier is in flight already.
    pub fn restore_released(&mut self, packet_id: PacketId, tag: u64) -> bool {
        self.outgoing
            .insert(packet_id, OutState::Released(tag))
            .is_ok()
    }

    /// Adds a QoS 2 identifier received from the client and not yet released, to a session
    /// restored by a persistence layer.
    pub fn restore_incoming_qos2(&mut self, packet_id: PacketId) {
        self.incoming_qos2.insert(packet_id);
    }

    /// Records `change` if the session is journaled.
    pub(crate) fn record(&mut self, change: SessionChange) {
        if let Some(changes) = self.journal.as_mut() {
            changes.push(change);
        }
    }

    /// Records that a delivery is done with, if it has a tag.
    pub(crate) fn finished(&mut self, delivery: &Delivery) {
        if delivery.tag != 0 {
            self.record(SessionChange::Finished { tag: delivery.tag });
        }
    }

    /// The client identifier.
    pub fn client_id(&self) -> &ByteStr {
        &self.client_id
    }

    /// How long the session outlives its connection, in seconds (0: it ends with it).
    pub fn expiry_interval(&self) -> u32 {
        self.expiry_interval
    }

    /// The subscriptions with their topic filters, in the filters' byte order.
    pub fn subscriptions(&self) -> impl Iterator<Item = (&ByteStr, &SessionSubscription)> + '_ {
        self.subscriptions.iter()
    }

    /// How many subscriptions the session holds.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }

    /// Counters.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Messages waiting to be sent.
    pub fn queued_messages(&self) -> usize {
        self.queue.len()
    }

    /// Bytes waiting to be sent, as [`Delivery::size`] counts them.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// QoS 1 and 2 deliveries sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.outgoing.len()
    }

    /// Queues a delivery, or drops it if the queue is full (tail drop, counted). Returns whether
    /// it was queued. QoS 0 deliveries for an offline session are queued too; the broker decides
    /// whether to call this for them.
    pub fn enqueue(&mut self, delivery: Delivery) -> bool {
        let size = delivery.size();
        if self.queue.len() >= self.limits.max_messages
            || self.queued_bytes + size > self.limits.max_bytes
        {
            self.stats.dropped_queue_full += 1;
            return false;
        }
        self.queued_bytes += size;
        self.queue.push_back(delivery);
        true
    }

    /// Queues a delivery that was already admitted against this session's limits elsewhere
    /// (a broker's per-connection buffer that counts against the same limits), so it is kept
    /// even if the queue is at its limits now: a message acknowledged to its publisher must
    /// not be dropped on its way into the session.
    pub fn enqueue_admitted(&mut self, delivery: Delivery) {
        self.queued_bytes += delivery.size();
        self.queue.push_back(delivery);
    }

    pub(crate) fn dequeue(&mut self) -> Option<Delivery> {
        let delivery = self.queue.pop_front()?;
        self.queued_bytes -= delivery.size();
        Some(delivery)
    }

    /// The tags of the deliveries in flight (sent, not yet acknowledged) that have one.
    pub fn in_flight_tags(&self) -> impl Iterator<Item = u64> + '_ {
        self.outgoing
            .iter()
            .map(|(_, state)| match state {
                OutState::Published(d) => d.tag,
                OutState::Released(tag) => *tag,
            })
            .filter(|tag| *tag != 0)
    }

    /// Takes every queued message out of the session (not those in flight), in order: for a
    /// persistence layer that keeps an offline session's queue elsewhere, and gives it back
    /// with [`Session::enqueue_admitted`] when its client returns.
    pub fn take_queued(&mut self) -> VecDeque<Delivery> {
        self.queued_bytes = 0;
        std::mem::take(&mut self.queue)
    }

    /// Drops queued messages whose expiry has passed, counting them.
    pub fn drop_expired(&mut self, now: Instant) {
        let before = self.queue.len();
        let journal = &mut self.journal;
        self.queue.retain(|d| {
            let keep = !d.is_expired(now);
            if let (false, Some(changes), true) = (keep, journal.as_mut(), d.tag != 0) {
                changes.push(SessionChange::Finished { tag: d.tag });
            }
            keep
        });
        self.stats.dropped_expired += (before - self.queue.len()) as u64;
        self.queued_bytes = self.queue.iter().map(Delivery::size).sum();
    }

    /// Keeps the queued messages for which `keep` is true, in order, and drops the others
    /// (messages the client may no longer receive, say). Returns how many were dropped.
    /// Messages in flight are not offered: the client may have them already, and they are
    /// resent as the protocol requires [MQTT-4.4.0-1].
    pub fn retain_queued(&mut self, mut keep: impl FnMut(&Delivery) -> bool) -> usize {
        let before = self.queue.len();
        let journal = &mut self.journal;
        self.queue.retain(|d| {
            let kept = keep(d);
            if let (false, Some(changes), true) = (kept, journal.as_mut(), d.tag != 0) {
                changes.push(SessionChange::Finished { tag: d.tag });
            }
            kept
        });
        let dropped = before - self.queue.len();
        if dropped > 0 {
            self.queued_bytes = self.queue.iter().map(Delivery::size).sum();
        }
        dropped
    }

    /// Serializes the session. Message expiry is stored as time remaining at `now`.
    ///
    /// The format is private to this crate's version: a tag byte, then fields, with messages as
    /// MQTT 5.0 PUBLISH packets.
    pub fn encode(&self, now: Instant, buf: &mut BytesMut) {
        buf.put_u8(FORMAT);
        put_bytes(buf, self.client_id.as_bytes());
        buf.put_u32(self.expiry_interval);
        buf.put_u32(self.subscriptions.len() as u32);
        for (filter, sub) in &self.subscriptions {
            put_bytes(buf, filter.as_bytes());
            buf.put_u8(sub.options.qos as u8);
            buf.put_u8(
                u8::from(sub.options.no_local) | u8::from(sub.options.retain_as_published) << 1,
            );
            buf.put_u8(sub.options.retain_handling as u8);
            buf.put_u32(sub.id.map_or(0, SubscriptionId::get));
        }
        buf.put_u32(self.outgoing.len() as u32);
        for (id, state) in self.outgoing.iter() {
            buf.put_u16(id.get());
            match state {
                OutState::Published(d) => {
                    buf.put_u8(1);
                    put_delivery(buf, d, now);
                }
                OutState::Released(_) => buf.put_u8(2),
            }
        }
        buf.put_u32(self.queue.len() as u32);
        for d in &self.queue {
            put_delivery(buf, d, now);
        }
        buf.put_u32(self.incoming_qos2.len() as u32);
        let mut ids: Vec<_> = self.incoming_qos2.iter().map(|id| id.get()).collect();
        ids.sort_unstable();
        for id in ids {
            buf.put_u16(id);
        }
        buf.put_u64(self.limits.max_messages as u64);
        buf.put_u64(self.limits.max_bytes as u64);
    }

    /// Restores a session serialized by [`Session::encode`]; message expiry counts on from
    /// `now`. Returns `None` for bytes that are not such a session.
    pub fn decode(now: Instant, mut buf: Bytes) -> Option<Self> {
        let b = &mut buf;
        if get_u8(b)? != FORMAT {
            return None;
        }
        let client_id = ByteStr::from_utf8(get_bytes(b)?).ok()?;
        let expiry_interval = get_u32(b)?;
        let mut subscriptions = BTreeMap::new();
        for _ in 0..get_u32(b)? {
            let filter = ByteStr::from_utf8(get_bytes(b)?).ok()?;
            let qos = QoS::from_u8(get_u8(b)?)?;
            let flags = get_u8(b)?;
            let retain_handling = match get_u8(b)? {
                0 => midge_codec::RetainHandling::SendAtSubscribe,
                1 => midge_codec::RetainHandling::SendIfNew,
                2 => midge_codec::RetainHandling::DoNotSend,
                _ => return None,
            };
            let id = SubscriptionId::new(get_u32(b)?);
            let options = SubscriptionOptions {
                qos,
                no_local: flags & 1 != 0,
                retain_as_published: flags & 2 != 0,
                retain_handling,
            };
            subscriptions.insert(filter, SessionSubscription { options, id });
        }
        let mut outgoing = Inflight::new();
        for _ in 0..get_u32(b)? {
            let id = PacketId::new(get_u16(b)?)?;
            let state = match get_u8(b)? {
                1 => OutState::Published(get_delivery(b, now)?),
                2 => OutState::Released(0),
                _ => return None,
            };
            outgoing.insert(id, state).ok()?;
        }
        let mut queue = VecDeque::new();
        for _ in 0..get_u32(b)? {
            queue.push_back(get_delivery(b, now)?);
        }
        let mut incoming_qos2 = BTreeSet::new();
        for _ in 0..get_u32(b)? {
            incoming_qos2.insert(PacketId::new(get_u16(b)?)?);
        }
        let limits = QueueLimits {
            max_messages: usize::try_from(get_u64(b)?).ok()?,
            max_bytes: usize::try_from(get_u64(b)?).ok()?,
        };
        let queued_bytes = queue.iter().map(Delivery::size).sum();
        Some(Self {
            client_id,
            expiry_interval,
            subscriptions,
            outgoing,
            queue,
            queued_bytes,
            incoming_qos2,
            limits,
            stats: SessionStats::default(),
            journal: None,
        })
    }
}

impl PartialEq for Session {
    fn eq(&self, other: &Self) -> bool {
        self.client_id == other.client_id
            && self.expiry_interval == other.expiry_interval
            && self.subscriptions == other.subscriptions
            && self.outgoing.iter().eq(other.outgoing.iter())
            && self.queue == other.queue
            && self.incoming_qos2 == other.incoming_qos2
            && self.limits == other.limits
    }
}

const FORMAT: u8 = 1;

fn put_bytes(buf: &mut BytesMut, bytes: &[u8]) {
    buf.put_u32(bytes.len() as u32);
    buf.put_slice(bytes);
}

fn put_delivery(buf: &mut BytesMut, d: &Delivery, now: Instant) {
    // The message goes as a 5.0 PUBLISH with its remaining expiry; QoS and RETAIN are this
    // delivery's, and the message's own QoS and RETAIN follow it.
    let publish = d.to_publish(now, None, false);
    let publish = Publish {
        qos: QoS::AtMostOnce,
        ..publish
    };
    let mut packet = BytesMut::new();
    // A message that was decoded or accepted encodes; an empty record would fail to decode.
    let _ = Packet::Publish(publish).encode(ProtocolVersion::V5, &mut packet);
    put_bytes(buf, &packet);
    buf.put_u8(d.qos as u8);
    buf.put_u8(u8::from(d.retain));
    buf.put_u8(d.message.qos as u8);
    buf.put_u8(u8::from(d.message.retain));
}

fn get_delivery(b: &mut Bytes, now: Instant) -> Option<Delivery> {
    let mut packet = get_bytes(b)?;
    let Ok(Some(Packet::Publish(publish))) =
        Packet::decode_bytes(&mut packet, ProtocolVersion::V5, MAX_PACKET_SIZE)
    else {
        return None;
    };
    let qos = QoS::from_u8(get_u8(b)?)?;
    let retain = get_u8(b)? != 0;
    let message_qos = QoS::from_u8(get_u8(b)?)?;
    let message_retain = get_u8(b)? != 0;
    let subscription_ids = publish.properties.subscription_identifiers().collect();
    let mut message = Message::from_publish(publish.clone(), publish.topic);
    message.qos = message_qos;
    message.retain = message_retain;
    message.properties.clear_subscription_identifiers();
    Some(Delivery {
        message: Arc::new(message),
        qos,
        retain,
        subscription_ids,
        received_at: now,
        tag: 0,
    })
}

fn get_u8(b: &mut Bytes) -> Option<u8> {
    (b.remaining() >= 1).then(|| b.get_u8())
}
fn get_u16(b: &mut Bytes) -> Option<u16> {
    (b.remaining() >= 2).then(|| b.get_u16())
}
fn get_u32(b: &mut Bytes) -> Option<u32> {
    (b.remaining() >= 4).then(|| b.get_u32())
}
fn get_u64(b: &mut Bytes) -> Option<u64> {
    (b.remaining() >= 8).then(|| b.get_u64())
}
fn get_bytes(b: &mut Bytes) -> Option<Bytes> {
    let len = usize::try_from(get_u32(b)?).ok()?;
    (b.remaining() >= len).then(|| b.split_to(len))
}
