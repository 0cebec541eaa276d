//! Timing rules, on the real broker core and a virtual clock: session expiry, message expiry,
//! delayed wills and the backpressure timeout, each checked on both sides of its deadline.
//! Nothing here sleeps; `tests/session_timers.rs` keeps one test of the tokio driver's timer
//! task on a real clock.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::delayed_will;
use midge_broker::{BrokerConfig, ClientInfo, CloseReason, Hooks, MemoryStore};
use midge_codec::{Connect, Packet, ProtocolVersion, QoS, ReasonCode};
use midge_testkit::broker::VirtualBroker;

const V5: ProtocolVersion = ProtocolVersion::V5;

fn config() -> BrokerConfig {
    let mut config = BrokerConfig::default();
    config.sys.interval_secs = 0;
    config
}

/// A 5.0 CONNECT of a session that outlives its connection by `expiry` seconds.
fn persistent(id: &str, expiry: u32) -> Connect {
    let mut connect = Connect::new(V5, id.to_owned());
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(expiry);
    connect
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A session ends its Session Expiry Interval after its connection [MQTT-3.1.2-23], and not
/// before; then a client that comes back finds no session [MQTT-4.1.0-2].
// Conformance: [MQTT-5:4.1.0-2] [MQTT-5:3.1.2-23]
#[test]
fn a_session_expires_its_interval_after_the_connection_and_not_before() {
    let mut broker = VirtualBroker::new(config());
    let (client, _) = broker.connect(persistent("expiring", 10));
    broker.subscribe(client, "exp/#", QoS::AtLeastOnce);
    broker.disconnect(client);
    broker.advance(ms(9_999));
    let (client, ack) = broker.connect(persistent("expiring", 10));
    assert!(ack.session_present, "still there within the interval");
    broker.disconnect(client);
    // Counted again from this disconnect.
    broker.advance(ms(9_999));
    assert_eq!(broker.core().stats().sessions, 1);
    broker.advance(ms(1));
    assert_eq!(broker.core().stats().sessions, 0, "expired at its interval");
    assert_eq!(broker.core().pending_deadlines(), 0);
    let (_client, ack) = broker.connect(persistent("expiring", 10));
    assert!(!ack.session_present, "expired");
}

/// A message queued for an offline session is dropped once its Message Expiry Interval
/// passes [MQTT-3.3.2-5], and one still valid is sent with the time it has left
/// [MQTT-3.3.2-6].
// Conformance: [MQTT-5:3.3.2-5] [MQTT-5:3.3.2-6]
#[test]
fn messages_queued_for_an_offline_session_expire() {
    let mut broker = VirtualBroker::new(config());
    let (subscriber, _) = broker.connect(persistent("me", 600));
    broker.subscribe(subscriber, "me/#", QoS::AtLeastOnce);
    broker.disconnect(subscriber);
    let (publisher, _) = broker.connect(Connect::new(V5, "p"));
    for (topic, expiry) in [("me/short", 10), ("me/long", 100)] {
        let mut publish = midge_codec::Publish {
            qos: QoS::AtLeastOnce,
            topic: topic.to_owned().into(),
            packet_id: midge_codec::PacketId::new(expiry as u16),
            payload: "x".into(),
            ..Default::default()
        };
        publish.properties.message_expiry_interval = Some(expiry);
        broker.send(publisher, Packet::Publish(publish));
    }
    broker.advance(Duration::from_secs(10));
    let (subscriber, ack) = broker.connect(persistent("me", 600));
    assert!(ack.session_present);
    let got = broker.recv_publish(subscriber).expect("the valid one");
    assert_eq!(got.topic, "me/long");
    assert_eq!(
        got.properties.message_expiry_interval,
        Some(90),
        "what is left of its interval"
    );
    assert!(
        broker.recv_publish(subscriber).is_none(),
        "the expired one is gone"
    );
}

/// A retained message whose expiry passed is not sent to a new subscription
/// [MQTT-3.3.2-5], and the broker removes it instead of skipping it on every SUBSCRIBE.
// Conformance: [MQTT-5:3.3.2-5]
#[test]
fn expired_retained_messages_are_not_sent_and_are_removed() {
    let mut broker = VirtualBroker::new(config());
    let (publisher, _) = broker.connect(Connect::new(V5, "retainer"));
    let mut short = midge_codec::Publish {
        qos: QoS::AtMostOnce,
        retain: true,
        topic: "r/short".to_owned().into(),
        payload: "gone soon".into(),
        ..Default::default()
    };
    short.properties.message_expiry_interval = Some(1);
    broker.send(publisher, Packet::Publish(short));
    let long = midge_codec::Publish {
        qos: QoS::AtMostOnce,
        retain: true,
        topic: "r/long".to_owned().into(),
        payload: "stays".into(),
        ..Default::default()
    };
    broker.send(publisher, Packet::Publish(long));
    assert_eq!(broker.core().stats().retained_messages, 2);
    broker.advance(ms(999));
    let (early, _) = broker.connect(Connect::new(V5, "early"));
    broker.subscribe(early, "r/#", QoS::AtLeastOnce);
    let mut topics = [
        broker.recv_publish(early).expect("one").topic,
        broker.recv_publish(early).expect("two").topic,
    ];
    topics.sort();
    assert_eq!(topics, ["r/long", "r/short"], "both, within the interval");
    broker.advance(ms(1));
    let (late, _) = broker.connect(Connect::new(V5, "late"));
    broker.subscribe(late, "r/#", QoS::AtLeastOnce);
    assert_eq!(broker.recv_publish(late).expect("one").topic, "r/long");
    assert!(broker.recv_publish(late).is_none());
    assert_eq!(
        broker.core().stats().retained_messages,
        1,
        "the expired one was removed"
    );
}

/// A delayed will is published at its Will Delay Interval after the connection broke
/// [MQTT-3.1.3-9], not before, and the session it belongs to goes on.
// Conformance: [MQTT-5:3.1.3-9]
#[test]
fn a_delayed_will_is_published_at_its_delay() {
    let mut broker = VirtualBroker::new(config());
    let (watcher, _) = broker.connect(Connect::new(V5, "watcher"));
    broker.subscribe(watcher, "will/#", QoS::AtLeastOnce);
    let mut connect = persistent("sooner", 60);
    connect.will = Some(delayed_will("will/sooner", 5));
    let (client, _) = broker.connect(connect.clone());
    broker.drop_connection(client);
    assert_eq!(
        broker.core().pending_deadlines(),
        2,
        "the will and the expiry"
    );
    broker.advance(ms(4_999));
    assert!(
        broker.recv_publish(watcher).is_none(),
        "not before its delay"
    );
    broker.advance(ms(1));
    assert_eq!(
        broker.recv_publish(watcher).expect("the will").topic,
        "will/sooner"
    );
    assert_eq!(
        broker.core().pending_deadlines(),
        1,
        "its session's expiry is left"
    );
    let (_back, ack) = broker.connect(connect);
    assert!(ack.session_present);
    assert_eq!(broker.core().pending_deadlines(), 0);
}

/// A client that comes back within its will's delay cancels the will [MQTT-3.1.3-9].
// Conformance: [MQTT-5:3.1.3-9]
#[test]
fn a_client_back_within_the_delay_cancels_its_will() {
    let mut broker = VirtualBroker::new(config());
    let (watcher, _) = broker.connect(Connect::new(V5, "watcher"));
    broker.subscribe(watcher, "will/#", QoS::AtLeastOnce);
    let mut connect = persistent("flaky", 60);
    connect.will = Some(delayed_will("will/flaky", 5));
    let (client, _) = broker.connect(connect.clone());
    broker.drop_connection(client);
    broker.advance(ms(4_999));
    let (_back, ack) = broker.connect(connect);
    assert!(ack.session_present);
    broker.advance(Duration::from_secs(60));
    assert!(broker.recv_publish(watcher).is_none(), "cancelled");
}

/// A will whose delay outlasts its session is published when the session expires
/// [MQTT-3.1.2-8], and the session is gone [MQTT-4.1.0-2].
// Conformance: [MQTT-5:3.1.2-8] [MQTT-5:4.1.0-2]
#[test]
fn a_will_delayed_past_its_session_is_published_when_the_session_expires() {
    let mut broker = VirtualBroker::new(config());
    let (watcher, _) = broker.connect(Connect::new(V5, "watcher"));
    broker.subscribe(watcher, "will/#", QoS::AtLeastOnce);
    let mut connect = persistent("short", 1);
    connect.will = Some(delayed_will("will/short", 30));
    let (client, _) = broker.connect(connect.clone());
    broker.drop_connection(client);
    broker.advance(ms(999));
    assert!(broker.recv_publish(watcher).is_none());
    broker.advance(ms(1));
    assert_eq!(
        broker.recv_publish(watcher).expect("the will").topic,
        "will/short"
    );
    assert_eq!(
        broker.core().pending_deadlines(),
        0,
        "the will's went with it"
    );
    assert_eq!(broker.core().stats().sessions, 1, "the watcher's only");
    let (_back, ack) = broker.connect(connect);
    assert!(!ack.session_present, "expired");
}

/// A DISCONNECT with reason 0x00 discards the will [MQTT-3.1.2-10], even a delayed one.
// Conformance: [MQTT-5:3.1.2-10]
#[test]
fn a_normal_disconnect_discards_the_will() {
    let mut broker = VirtualBroker::new(config());
    let (watcher, _) = broker.connect(Connect::new(V5, "watcher"));
    broker.subscribe(watcher, "will/#", QoS::AtLeastOnce);
    let mut connect = persistent("polite", 60);
    connect.will = Some(delayed_will("will/polite", 1));
    let (client, _) = broker.connect(connect);
    broker.disconnect(client);
    broker.advance(Duration::from_secs(120));
    assert!(broker.recv_publish(watcher).is_none());
}

/// A publish that finds a subscriber's inbox full waits for room, and is acknowledged with
/// 0x97 (Quota exceeded) when `limits.backpressure_timeout_ms` runs out, not before; the
/// subscriber's drop is counted.
#[test]
fn a_publish_waits_for_room_until_the_backpressure_timeout() {
    let mut config = config();
    config.limits.inbox_capacity = 1;
    config.sessions.max_queued_messages = 1;
    config.limits.backpressure_timeout_ms = 500;
    let mut broker = VirtualBroker::new(config);
    // Takes one message in flight (Receive Maximum 1), and never acknowledges it.
    let mut connect = Connect::new(V5, "sleeper");
    connect.properties.receive_maximum = std::num::NonZeroU16::new(1);
    let (sleeper, _) = broker.connect(connect);
    broker.subscribe(sleeper, "load/#", QoS::AtLeastOnce);
    let (publisher, _) = broker.connect(Connect::new(V5, "publisher"));
    let mut acks = Vec::new();
    for n in 0..5 {
        broker.publish(publisher, "load/x", &format!("{n}"), QoS::AtLeastOnce);
        while let Some(packet) = broker.recv(publisher) {
            if let Packet::PubAck(ack) = packet {
                acks.push(ack.reason_code);
            }
        }
        if acks.len() <= n {
            break;
        }
    }
    let waiting = acks.len();
    assert!(waiting < 5, "a publish waits for room: {acks:?}");
    broker.advance(ms(499));
    assert!(broker.recv(publisher).is_none(), "still waiting");
    broker.advance(ms(1));
    match broker.recv(publisher) {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.reason_code, ReasonCode::QUOTA_EXCEEDED),
        other => panic!("expected PUBACK 0x97, got {other:?}"),
    }
    assert_eq!(broker.core().stats().dropped_inbox_full, 1);
}

/// A QoS 2 publish that reached some subscribers is acknowledged with PUBREC 0x00 even when a
/// congested subscriber's copy was dropped (and counted): after a PUBREC of 0x97 a PUBLISH
/// with its packet identifier is a new message [MQTT-4.3.3-9], so the publisher's resend (the
/// PUBREC may be lost with the connection) would reach the others twice. The resend on the
/// resumed session is a duplicate [MQTT-4.3.3-10].
#[test]
fn a_qos_2_publish_that_reached_some_subscribers_is_acknowledged_with_success() {
    let mut config = config();
    config.limits.inbox_capacity = 1;
    config.sessions.max_queued_messages = 1;
    config.limits.backpressure_timeout_ms = 500;
    let mut broker = VirtualBroker::new(config);
    // Takes one message in flight (Receive Maximum 1), and never acknowledges it.
    let mut connect = Connect::new(V5, "sleeper");
    connect.properties.receive_maximum = std::num::NonZeroU16::new(1);
    let (sleeper, _) = broker.connect(connect);
    broker.subscribe(sleeper, "load/#", QoS::AtLeastOnce);
    let (reader, _) = broker.connect(Connect::new(V5, "reader"));
    broker.subscribe(reader, "load/#", QoS::ExactlyOnce);
    let (publisher, _) = broker.connect(persistent("publisher", 600));
    // Publish until one waits for the sleeper, and let the wait run out: it is congested.
    let mut acks = 0;
    for n in 0..5 {
        broker.publish(publisher, "load/x", &format!("{n}"), QoS::AtLeastOnce);
        while broker.recv_publish(reader).is_some() {}
        while let Some(packet) = broker.recv(publisher) {
            acks += usize::from(matches!(packet, Packet::PubAck(_)));
        }
        if acks <= n {
            break;
        }
    }
    broker.advance(ms(500));
    match broker.recv(publisher) {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.reason_code, ReasonCode::QUOTA_EXCEEDED),
        other => panic!("expected PUBACK 0x97, got {other:?}"),
    }
    while broker.recv_publish(reader).is_some() {}
    let dropped = broker.core().stats().dropped_congested;

    let id = std::num::NonZeroU16::new(500).expect("non-zero");
    let publish = midge_codec::Publish {
        qos: QoS::ExactlyOnce,
        topic: "load/x".to_owned().into(),
        packet_id: Some(id),
        payload: "once".into(),
        ..midge_codec::Publish::default()
    };
    broker.send(publisher, Packet::Publish(publish.clone()));
    match broker.recv(publisher) {
        Some(Packet::PubRec(ack)) => assert_eq!(ack.reason_code, ReasonCode::SUCCESS),
        other => panic!("expected PUBREC 0x00, got {other:?}"),
    }
    assert_eq!(broker.core().stats().dropped_congested, dropped + 1);
    assert!(broker.recv_publish(reader).is_some());

    // The PUBREC was lost with the connection: the client sends the PUBLISH again.
    broker.drop_connection(publisher);
    let (publisher, ack) = broker.connect(persistent("publisher", 600));
    assert!(ack.session_present);
    let resent = midge_codec::Publish {
        dup: true,
        ..publish
    };
    broker.send(publisher, Packet::Publish(resent));
    match broker.recv(publisher) {
        Some(Packet::PubRec(ack)) => assert_eq!(ack.reason_code, ReasonCode::SUCCESS),
        other => panic!("expected PUBREC 0x00, got {other:?}"),
    }
    assert!(broker.recv_publish(reader).is_none(), "delivered twice");
}

/// A delivery that waits for room in a subscriber's inbox when a connection with Clean Start
/// 1 takes the subscriber's session over ends with that session [MQTT-3.1.2-4]: the new
/// session, which subscribed to nothing, never gets it.
#[test]
fn a_delivery_waiting_for_a_session_that_a_clean_start_ends_goes_with_it() {
    let mut config = config();
    config.limits.inbox_capacity = 1;
    config.sessions.max_queued_messages = 1;
    config.limits.backpressure_timeout_ms = 60_000;
    let mut broker = VirtualBroker::new(config);
    // Takes one message in flight (Receive Maximum 1), and never acknowledges it.
    let mut connect = persistent("sleeper", 600);
    connect.properties.receive_maximum = std::num::NonZeroU16::new(1);
    let (sleeper, _) = broker.connect(connect);
    broker.subscribe(sleeper, "load/#", QoS::AtLeastOnce);
    let (publisher, _) = broker.connect(Connect::new(V5, "publisher"));
    let mut acks = 0;
    for n in 0..5 {
        broker.publish(publisher, "load/x", &format!("{n}"), QoS::AtLeastOnce);
        while let Some(packet) = broker.recv(publisher) {
            acks += usize::from(matches!(packet, Packet::PubAck(_)));
        }
        if acks <= n {
            break;
        }
    }
    assert!(acks < 5, "a publish waits for room");
    let mut connect = Connect::new(V5, "sleeper");
    connect.clean_start = true;
    let (intruder, ack) = broker.connect(connect);
    assert!(!ack.session_present);
    assert!(
        broker.recv_publish(intruder).is_none(),
        "the old session's delivery reached the new one"
    );
    assert!(
        matches!(broker.recv(publisher), Some(Packet::PubAck(_))),
        "the waiting publish is answered"
    );
    let _ = sleeper;
}

/// The hooks see a client's life in order, its session's expiry included.
#[test]
fn event_hooks_see_connections_messages_and_sessions() {
    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);
    struct Events(Arc<Log>);
    impl Hooks for Events {
        fn on_connected(&self, client: &ClientInfo, session_present: bool) {
            self.0
                 .0
                .lock()
                .unwrap()
                .push(format!("connected {} {session_present}", client.client_id));
        }
        fn on_disconnected(&self, client: &ClientInfo, reason: CloseReason) {
            self.0
                 .0
                .lock()
                .unwrap()
                .push(format!("disconnected {} {reason:?}", client.client_id));
        }
        fn on_message_published(
            &self,
            client: Option<&ClientInfo>,
            message: &midge_proto::Message,
            matched: usize,
        ) {
            let who = client.map_or("broker".to_owned(), |c| c.client_id.to_string());
            self.0
                 .0
                .lock()
                .unwrap()
                .push(format!("published {who} {} {matched}", message.topic));
        }
        fn on_session_created(&self, client_id: &str) {
            self.0
                 .0
                .lock()
                .unwrap()
                .push(format!("session created {client_id}"));
        }
        fn on_session_expired(&self, client_id: &str) {
            self.0
                 .0
                .lock()
                .unwrap()
                .push(format!("session expired {client_id}"));
        }
    }
    let log = Arc::new(Log::default());
    let mut broker = VirtualBroker::with(
        config(),
        Arc::new(Events(log.clone())),
        Arc::new(MemoryStore::new()),
    );
    let (watched, _) = broker.connect(persistent("watched", 1));
    broker.subscribe(watched, "w/#", QoS::AtMostOnce);
    broker.publish(watched, "w/x", "hello", QoS::AtLeastOnce);
    broker.disconnect(watched);
    broker.advance(Duration::from_secs(1));
    let log = log.0.lock().unwrap().clone();
    let expected = [
        "session created watched",
        "connected watched false",
        "published watched w/x 1",
        "disconnected watched DisconnectedByClient(SUCCESS(0x00))",
        "session expired watched",
    ];
    assert_eq!(log, expected);
}
