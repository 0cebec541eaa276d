//! Options for connecting, publishing and subscribing.

use std::time::Duration;

use bytes::Bytes;
use midge_codec::{
    ByteStr, EncodeError, PayloadFormat, PublishProperties, QoS, RetainHandling, SubscriptionId,
    SubscriptionOptions,
};

/// Limits that bound what the client holds in memory. Every queue in the client is bounded by
/// one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Publishes the client holds at once: waiting to be sent (also while offline) or, for
    /// QoS 1 and 2, waiting for the broker's acknowledgement. When they are all taken,
    /// [`Client::publish`](crate::Client::publish) waits and
    /// [`Client::try_publish`](crate::Client::try_publish) fails with
    /// [`ClientError::QueueFull`](crate::ClientError::QueueFull). Default 1,000; values
    /// above 60,000 count as 60,000, so that QoS 1/2 publishes never run out of packet
    /// identifiers (65,535, some kept for subscribe requests).
    pub max_queued_publishes: usize,
    /// Received QoS 1 and 2 messages the client may hold unacknowledged: sent as Receive
    /// Maximum (5.0), so the broker never has more than this many outstanding. A message is
    /// acknowledged once its streams have taken it into their buffers
    /// ([`Limits::max_buffered_qos12`]), or, with
    /// [`ClientBuilder::manual_acks`](crate::ClientBuilder::manual_acks), once the
    /// application acknowledges it; messages held back for full streams, or waiting for a
    /// stream in a resumed session, stay unacknowledged. 3.1.1 cannot announce it: there the
    /// client stops reading from the socket while this many messages are held back for full
    /// streams, or with manual acknowledgements held by the application unsettled
    /// (acknowledgements of our own publishes then wait too, until the application reads or
    /// settles), and holds at most this many waiting for a stream. Default 100 (at least 1).
    pub receive_maximum: u16,
    /// QoS 0 messages each subscription buffers before it drops new ones (QoS 0 has no flow
    /// control). Dropped messages are counted in
    /// [`Client::dropped_messages`](crate::Client::dropped_messages). Default 1,000.
    pub max_buffered_qos0: usize,
    /// QoS 1 and 2 messages each subscription stream buffers, acknowledged and not yet read.
    /// Beyond it the client holds the stream's messages back unacknowledged until it is read,
    /// which pauses the broker once its window is used up; see
    /// [`Subscription`](crate::Subscription). Default 100 (at least 1).
    pub max_buffered_qos12: usize,
    /// Largest packet the client accepts, sent as Maximum Packet Size (5.0) and enforced on
    /// every version; 0 accepts any packet MQTT can encode. Default 1 MiB.
    ///
    /// Over WebSocket it also bounds each WebSocket message from the broker, which is held
    /// whole in memory before it is read: a message may be as large as this limit, and
    /// never has to be smaller than 1 MiB (a broker may gather several packets into one
    /// message); with 0, as large as the largest MQTT packet (268,435,460 bytes).
    pub max_packet_size: u32,
    /// Topic aliases the broker may use towards us (5.0). Default 16.
    pub topic_alias_maximum: u16,
    /// How long a received QoS 1 or 2 message of a resumed session that matches no
    /// subscription is held, unacknowledged, for a subscription to claim it: the session's
    /// backlog arrives before the application has subscribed again.
    ///
    /// - At most `receive_maximum` are held (only a 3.1.1 broker can send more). One beyond
    ///   is abandoned: never acknowledged on this connection, so the broker keeps it and
    ///   sends it again on the next connection of the session. It takes a place of the
    ///   broker's window until then.
    /// - One not claimed in time was sent for a subscription of the session that the
    ///   application has not made again: it is acknowledged, so that such a subscription
    ///   cannot hold the broker's window shut, and the message is lost. `Duration::MAX`
    ///   never gives up instead: the message waits for a claim, and while unclaimed
    ///   messages fill the window the broker sends no QoS 1 or 2 messages.
    ///
    /// Both are counted in [`Client::dropped_messages`](crate::Client::dropped_messages).
    /// Messages for a subscription the application unsubscribed (or whose last stream it
    /// dropped) are acknowledged at once and counted there too. Default 10 s.
    pub hold_unclaimed: Duration,
}

impl Limits {
    /// `max_queued_publishes` within its bounds: at least 1, at most 60,000.
    pub(crate) fn queued_publishes_bound(&self) -> usize {
        self.max_queued_publishes.clamp(1, MAX_QUEUED_PUBLISHES)
    }
}

/// Publishes held at most, below the 65,535 packet identifiers.
const MAX_QUEUED_PUBLISHES: usize = 60_000;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_queued_publishes: 1000,
            receive_maximum: 100,
            max_buffered_qos0: 1000,
            max_buffered_qos12: 100,
            max_packet_size: 1024 * 1024,
            topic_alias_maximum: 16,
            hold_unclaimed: Duration::from_secs(10),
        }
    }
}

/// When and how often to reconnect after a connection is lost: exponential backoff with
/// jitter. The delay before attempt `n` (from 0) is `initial_delay * 2^n`, capped at
/// `max_delay`; with `jitter` it is then drawn uniformly from its upper half, so that many
/// clients cut off at once do not come back at once.
///
/// Some failures are not retried whatever the policy: a CONNACK refusal that is not about
/// the broker's load (not authorized, bad user name or password, …) ends the client at any
/// time. Until a first connection has been accepted, so does a failure that no retry can
/// mend: a broker certificate that is not trusted, has expired, is not valid yet, is for
/// another name or is invalid ([`TlsFailure`](crate::TlsFailure), all but `Handshake`), a
/// TLS alert from the broker (such as a required client certificate), a refused WebSocket
/// upgrade, and a failure of the client's own enhanced authentication
/// ([`CloseReason::Authentication`](crate::CloseReason::Authentication));
/// [`ClientBuilder::connect`](crate::ClientBuilder::connect) then fails with it. After a
/// connection has been accepted these are retried under the policy, since a broker's
/// certificate or configuration may be changed and put right again; each failed attempt is
/// reported by [`ConnectionEvent::Disconnected`](crate::ConnectionEvent) with its reason.
///
/// [`ReconnectPolicy::always_retry`](ReconnectPolicy::always_retry()) retries those too,
/// CONNACK refusals included: for a bridge, or a service that must keep trying until someone
/// puts the broker's configuration (or its own credentials) right.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReconnectPolicy {
    /// Delay before the first attempt after a loss. Default 100 ms.
    pub initial_delay: Duration,
    /// Upper bound of the delay. Default 30 s.
    pub max_delay: Duration,
    /// Randomise each delay within its upper half. Default on.
    pub jitter: bool,
    /// Attempts in a row after which the client gives up and closes; `None` never gives up
    /// (the default).
    pub max_attempts: Option<u32>,
    /// Retry every failure, also those that are otherwise not retried (see above): a CONNACK
    /// refusal such as a bad user name or password (0x86, 3.1.1 return code 4) or not
    /// authorized, an untrusted broker certificate, a refused WebSocket upgrade, a failed
    /// enhanced authentication. Each is reported by
    /// [`ConnectionEvent::Disconnected`](crate::ConnectionEvent::Disconnected) with its
    /// reason, and the next attempt waits its backoff delay as after any failure. Default
    /// off.
    ///
    /// [`ClientBuilder::connect`](crate::ClientBuilder::connect) then waits until a
    /// connection is accepted, however long that takes; with
    /// [`ClientBuilder::build`](crate::ClientBuilder::build) the application can watch the
    /// refusals on [`Client::events`](crate::Client::events) meanwhile.
    pub always_retry: bool,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(30),
            jitter: true,
            max_attempts: None,
            always_retry: false,
        }
    }
}

impl ReconnectPolicy {
    /// A policy with these delays, jitter on and no attempt limit.
    pub fn exponential(initial_delay: Duration, max_delay: Duration) -> Self {
        Self {
            initial_delay,
            max_delay,
            ..Self::default()
        }
    }

    /// The same policy with jitter on or off.
    #[must_use]
    pub fn jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// The same policy retrying every failure, or not (see the field
    /// [`always_retry`](ReconnectPolicy#structfield.always_retry)).
    #[must_use]
    pub fn always_retry(mut self, always: bool) -> Self {
        self.always_retry = always;
        self
    }

    /// The same policy giving up after `attempts` failed attempts in a row.
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// The delay before attempt `attempt` (from 0), with `random` in `0..=u64::MAX` used for
    /// jitter.
    pub(crate) fn delay(&self, attempt: u32, random: u64) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        let base = self
            .initial_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay);
        if !self.jitter {
            return base;
        }
        let half = base / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let extra = if nanos == 0 { 0 } else { random % (nanos + 1) };
        half + Duration::from_nanos(extra)
    }
}

/// How to publish one message: QoS, RETAIN and 5.0 properties.
///
/// The property setters keep the first error (a string or binary value longer than 65,535
/// bytes), and the publish then fails with it.
#[derive(Clone, Debug, Default)]
pub struct PublishOptions {
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    pub(crate) properties: PublishProperties,
    pub(crate) error: Option<EncodeError>,
}

impl PublishOptions {
    /// QoS 0, not retained, no properties.
    pub fn new() -> Self {
        Self::default()
    }

    /// Options with this QoS.
    pub fn with_qos(qos: QoS) -> Self {
        Self::new().qos(qos)
    }

    /// Sets the QoS.
    #[must_use]
    pub fn qos(mut self, qos: QoS) -> Self {
        self.qos = qos;
        self
    }

    /// Sets the RETAIN flag.
    #[must_use]
    pub fn retain(mut self, retain: bool) -> Self {
        self.retain = retain;
        self
    }

    /// Replaces every 5.0 property (a topic alias in them is ignored: the client picks aliases
    /// per connection).
    #[must_use]
    pub fn properties(mut self, properties: PublishProperties) -> Self {
        self.properties = properties;
        self
    }

    /// 5.0 Message Expiry Interval in seconds.
    #[must_use]
    pub fn message_expiry(mut self, seconds: u32) -> Self {
        self.properties.message_expiry_interval = Some(seconds);
        self
    }

    /// 5.0 Payload Format Indicator: the payload is UTF-8.
    #[must_use]
    pub fn utf8_payload(mut self) -> Self {
        self.properties.payload_format_indicator = Some(PayloadFormat::Utf8);
        self
    }

    fn keep(mut self, result: Result<(), EncodeError>) -> Self {
        if let Err(err) = result {
            self.error.get_or_insert(err);
        }
        self
    }

    /// 5.0 Content Type.
    #[must_use]
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        let result = self
            .properties
            .set_content_type(Some(ByteStr::from(content_type.into())));
        self.keep(result)
    }

    /// 5.0 Response Topic.
    #[must_use]
    pub fn response_topic(mut self, topic: impl Into<String>) -> Self {
        let result = self
            .properties
            .set_response_topic(Some(ByteStr::from(topic.into())));
        self.keep(result)
    }

    /// 5.0 Correlation Data.
    #[must_use]
    pub fn correlation_data(mut self, data: impl Into<Bytes>) -> Self {
        let result = self.properties.set_correlation_data(Some(data.into()));
        self.keep(result)
    }

    /// Adds a 5.0 User Property.
    #[must_use]
    pub fn user_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let result = self
            .properties
            .push_user_property(ByteStr::from(key.into()), ByteStr::from(value.into()));
        self.keep(result)
    }
}

/// How to subscribe to one filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscribeOptions {
    pub(crate) options: SubscriptionOptions,
    pub(crate) subscription_identifier: Option<SubscriptionId>,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        Self::with_qos(QoS::AtMostOnce)
    }
}

impl SubscribeOptions {
    /// Options with this maximum QoS and the 5.0 defaults for the rest.
    pub fn with_qos(qos: QoS) -> Self {
        Self {
            options: SubscriptionOptions::qos(qos),
            subscription_identifier: None,
        }
    }

    /// 5.0 No Local: do not receive our own publishes on this subscription.
    #[must_use]
    pub fn no_local(mut self, no_local: bool) -> Self {
        self.options.no_local = no_local;
        self
    }

    /// 5.0 Retain As Published.
    #[must_use]
    pub fn retain_as_published(mut self, keep: bool) -> Self {
        self.options.retain_as_published = keep;
        self
    }

    /// 5.0 Retain Handling.
    #[must_use]
    pub fn retain_handling(mut self, handling: RetainHandling) -> Self {
        self.options.retain_handling = handling;
        self
    }

    /// 5.0 Subscription Identifier, carried by every message this subscription delivers.
    #[must_use]
    pub fn subscription_identifier(mut self, id: SubscriptionId) -> Self {
        self.subscription_identifier = Some(id);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_stays_in_the_upper_half() {
        let policy =
            ReconnectPolicy::exponential(Duration::from_millis(100), Duration::from_secs(1))
                .jitter(false);
        let delays: Vec<_> = (0..6).map(|n| policy.delay(n, 0).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(policy.delay(u32::MAX, 0), Duration::from_secs(1));
        let jittered = policy.jitter(true);
        for random in [0, 1, 12_345_678, u64::MAX] {
            let d = jittered.delay(2, random);
            assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(400));
        }
        assert_ne!(jittered.delay(2, 1), jittered.delay(2, 99_999_999));
    }

    #[test]
    fn the_first_property_error_is_kept() {
        let long = "x".repeat(70_000);
        let options = PublishOptions::new()
            .content_type(long)
            .response_topic("ok");
        assert!(options.error.is_some());
        assert_eq!(
            options
                .properties
                .response_topic()
                .as_ref()
                .map(ByteStr::as_str),
            Some("ok")
        );
    }
}
