//! Hostile and malformed input over raw TCP: each closes only the offending connection, with
//! the right reason code, while the broker keeps serving and its memory stays bounded.

mod common;

use std::time::{Duration, Instant};

use common::*;
use midge_broker::BrokerHandle;
use midge_codec::{Connect, Disconnect, Packet, PubAck, QoS, ReasonCode};

/// A v5 PUBLISH QoS 0 with a raw topic.
fn raw_publish_v5(topic: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic);
    body.push(0); // no properties
    body.extend_from_slice(b"x");
    let mut out = vec![0x30, body.len() as u8];
    out.extend_from_slice(&body);
    out
}

async fn v5_client(addr: std::net::SocketAddr) -> Peer {
    Peer::connect(addr, V5, "").await
}

fn rss_guard() -> Option<u64> {
    rss_kib()
}

fn assert_rss_bounded(before: Option<u64>, what: &str) {
    if let (Some(b), Some(a)) = (before, rss_kib()) {
        // Tests run in parallel in this process; 64 MiB is far below the 256 MiB an eager
        // allocation would take.
        assert!(
            a.saturating_sub(b) < 64 * 1024,
            "{what}: RSS grew from {b} KiB to {a} KiB"
        );
    }
}

// Conformance: [MQTT-5:4.13.1-1]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_remaining_length() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let mut c = v5_client(addr).await;
    // Five continuation bytes: a Remaining Length longer than four bytes.
    c.send_raw(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]).await;
    c.expect_disconnect(ReasonCode::MALFORMED_PACKET).await;
    // Same before CONNECT: just closed.
    let mut raw = Peer::tcp(addr, V5).await;
    raw.send_raw(&[0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]).await;
    assert!(raw.until_closed().await.is_empty());
    assert_healthy(addr).await;
    assert!(broker.stats().protocol_errors >= 1);
    broker.shutdown().await;
}

// Conformance: [MQTT-5:3.1.0-1] [MQTT-3.1.1:3.1.0-1]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_packet_not_connect() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let mut raw = Peer::tcp(addr, V5).await;
    raw.send_raw(&[0xC0, 0x00]).await; // PINGREQ
    assert!(
        raw.until_closed().await.is_empty(),
        "no CONNACK, just closed"
    );
    let mut raw = Peer::tcp(addr, V5).await;
    raw.send_raw(&raw_publish_v5(b"a/b")).await;
    assert!(raw.until_closed().await.is_empty());
    assert_healthy(addr).await;
    broker.shutdown().await;
}

// Conformance: [MQTT-5:3.1.0-2] [MQTT-3.1.1:3.1.0-2]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_connect() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let mut c = v5_client(addr).await;
    c.send(Packet::Connect(Box::new(Connect::new(V5, "again"))))
        .await;
    c.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
    let mut c = Peer::connect(addr, V311, "again311").await;
    c.send(Packet::Connect(Box::new(Connect::new(V311, "again311"))))
        .await;
    assert!(c.until_closed().await.is_empty());
    assert_healthy(addr).await;
    broker.shutdown().await;
}

// Conformance: [MQTT-5:3.3.2-2] [MQTT-5:4.7.3-1] [MQTT-5:4.7.3-2] [MQTT-5:1.5.4-1] [MQTT-5:4.13.1-1]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_topic_names_in_publish() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let cases: [(&[u8], ReasonCode); 5] = [
        (b"a/+/c", ReasonCode::TOPIC_NAME_INVALID),
        (b"a/#", ReasonCode::TOPIC_NAME_INVALID),
        (b"a/\0/c", ReasonCode::MALFORMED_PACKET),
        (b"a/\xff\xfe", ReasonCode::MALFORMED_PACKET),
        (b"", ReasonCode::PROTOCOL_ERROR),
    ];
    for (topic, code) in cases {
        let mut c = v5_client(addr).await;
        c.send_raw(&raw_publish_v5(topic)).await;
        c.expect_disconnect(code).await;
    }
    assert_healthy(addr).await;
    broker.shutdown().await;
}

// Conformance: [MQTT-5:2.1.3-1] [MQTT-5:3.8.1-1]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_reserved_flags() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let mut c = v5_client(addr).await;
    // SUBSCRIBE must have flags 0b0010; send 0b0000.
    c.send_raw(&[0x80, 0x08, 0x00, 0x01, 0x00, 0x00, 0x02, b'a', b'/', 0x00])
        .await;
    c.expect_disconnect(ReasonCode::MALFORMED_PACKET).await;
    // PINGREQ with a flag set.
    let mut c = v5_client(addr).await;
    c.send_raw(&[0xC1, 0x00]).await;
    c.expect_disconnect(ReasonCode::MALFORMED_PACKET).await;
    assert_healthy(addr).await;
    broker.shutdown().await;
}

// Conformance: [MQTT-5:4.13.1-1]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_only_packets_from_a_client() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let mut c = v5_client(addr).await;
    c.send_raw(&[0x20, 0x03, 0x00, 0x00, 0x00]).await; // CONNACK
    c.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
    let mut c = v5_client(addr).await;
    c.send_raw(&[0x90, 0x04, 0x00, 0x01, 0x00, 0x00]).await; // SUBACK
    c.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
    let mut c = v5_client(addr).await;
    c.send_raw(&[0xD0, 0x00]).await; // PINGRESP
    c.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
    assert_healthy(addr).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_packet() {
    let mut config = test_config();
    config.limits.max_packet_size = 1024;
    let broker = start(config).await;
    let addr = broker.local_addr();
    let mut c = v5_client(addr).await;
    let big = "x".repeat(2000);
    let p = c.publish_packet("big", &big, QoS::AtMostOnce, false);
    c.send(Packet::Publish(p)).await;
    c.expect_disconnect(ReasonCode::PACKET_TOO_LARGE).await;
    assert_healthy(addr).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_256_mib_never_sent() {
    let mut config = test_config();
    // Even when the limit allows it, the broker must not allocate up front.
    config.limits.max_packet_size = 300 * 1024 * 1024;
    let broker = start(config).await;
    let addr = broker.local_addr();
    let before = rss_guard();
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut c = v5_client(addr).await;
        // PUBLISH with Remaining Length 268,435,455, then a few bytes and silence.
        c.send_raw(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F, 0x00, 0x01, b'a'])
            .await;
        clients.push(c);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_rss_bounded(before, "pending 256 MiB packets");
    assert_healthy(addr).await;
    drop(clients);

    // With the default limit (1 MiB) the fixed header alone gets it closed: 0x95.
    let broker2 = start(test_config()).await;
    let before = rss_guard();
    let mut c = v5_client(broker2.local_addr()).await;
    c.send_raw(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F, 0x00, 0x01, b'a'])
        .await;
    c.expect_disconnect(ReasonCode::PACKET_TOO_LARGE).await;
    assert_rss_bounded(before, "256 MiB announce");
    assert_healthy(broker2.local_addr()).await;
    broker2.shutdown().await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_flood_without_pubrel() {
    let mut config = test_config();
    config.limits.receive_maximum = 10;
    let broker = start(config).await;
    let addr = broker.local_addr();
    let mut c = v5_client(addr).await;
    for id in 1..=11u16 {
        let mut p = c.publish_packet("flood", "x", QoS::ExactlyOnce, false);
        p.packet_id = Some(pid(id));
        c.send(Packet::Publish(p)).await;
    }
    let packets = c.until_closed().await;
    let recs = packets
        .iter()
        .filter(|p| matches!(p, Packet::PubRec(_)))
        .count();
    // The 11th arrives before the PUBRECs of the first ten may have been written; those
    // sent are at most ten.
    assert!(recs <= 10, "{packets:?}");
    assert!(
        matches!(packets.last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::RECEIVE_MAXIMUM_EXCEEDED),
        "{packets:?}"
    );
    assert_healthy(addr).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_connect_within_timeout() {
    let mut config = test_config();
    config.limits.connect_timeout_ms = 300;
    let broker = start(config).await;
    let addr = broker.local_addr();
    let started = Instant::now();
    let mut raw = Peer::tcp(addr, V5).await;
    assert!(raw.until_closed().await.is_empty());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
    // A partial CONNECT does not extend the deadline.
    let mut raw = Peer::tcp(addr, V5).await;
    raw.send_raw(&[0x10, 0x20, 0x00]).await;
    assert!(raw.until_closed().await.is_empty());
    assert_healthy(addr).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_subscription_and_topic_level_limits() {
    let mut config = test_config();
    config.limits.max_connections = 2;
    config.limits.max_subscriptions_per_client = 2;
    config.limits.max_topic_levels = 3;
    let broker = start(config).await;
    let addr = broker.local_addr();
    let mut a = Peer::connect(addr, V5, "a").await;
    let _b = Peer::connect(addr, V5, "b").await;
    let (_c, ack) = Peer::connect_with(addr, Connect::new(V5, "c")).await;
    assert_eq!(ack.reason_code, ReasonCode::SERVER_BUSY);
    a.subscribe("one", QoS::AtMostOnce).await;
    a.subscribe("two", QoS::AtMostOnce).await;
    let ack = a.subscribe("three", QoS::AtMostOnce).await;
    assert_eq!(ack.reason_codes, vec![ReasonCode::QUOTA_EXCEEDED]);
    let ack = a.subscribe("a/b/c/d", QoS::AtMostOnce).await;
    assert_eq!(ack.reason_codes, vec![ReasonCode::TOPIC_FILTER_INVALID]);
    a.send_raw(&raw_publish_v5(b"a/b/c/d")).await;
    a.expect_disconnect(ReasonCode::TOPIC_NAME_INVALID).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_does_not_block_others() {
    let mut config = test_config();
    config.limits.inbox_capacity = 64;
    config.sessions.max_queued_messages = 100;
    let broker = start(config).await;
    let addr = broker.local_addr();
    // Subscribes, then never reads.
    let mut sleeper = Peer::connect(addr, V5, "sleeper").await;
    sleeper.subscribe("load/#", QoS::AtLeastOnce).await;
    let mut healthy = Peer::connect(addr, V5, "healthy").await;
    healthy.subscribe("load/#", QoS::AtMostOnce).await;
    let mut p = Peer::connect(addr, V5, "loader").await;
    let payload = "y".repeat(4096);
    let started = Instant::now();
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while healthy
            .try_recv_publish(Duration::from_secs(2))
            .await
            .is_ok()
        {
            n += 1;
        }
        n
    });
    for _ in 0..3000 {
        p.publish("load/x", &payload, QoS::AtLeastOnce, false).await;
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    let received = reader.await.expect("reader");
    assert_eq!(received, 3000, "the healthy subscriber got everything");
    let stats = broker.stats();
    assert!(
        stats.dropped_inbox_full + stats.dropped_congested + stats.dropped_queue_full > 0,
        "the sleeper's overflow was dropped and counted: {stats:?}"
    );
    drop(sleeper);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_slows_its_publisher_and_loses_no_acknowledged_message() {
    // Tiny inbox and queue: a subscriber that reads, but slowly, makes the publisher wait for
    // it instead of losing what the publisher was acknowledged for.
    let mut config = test_config();
    config.limits.inbox_capacity = 8;
    config.sessions.max_queued_messages = 8;
    let broker = start(config).await;
    let addr = broker.local_addr();
    for version in [V5, midge_codec::ProtocolVersion::V3_1_1] {
        let mut slow = Peer::connect(addr, version, "slow").await;
        slow.subscribe("slow/#", QoS::AtLeastOnce).await;
        let mut p = Peer::connect(addr, version, "fast").await;
        let publisher = tokio::spawn(async move {
            for n in 0..400 {
                let code = p
                    .publish("slow/x", &n.to_string(), QoS::AtLeastOnce, false)
                    .await;
                assert_eq!(code, ReasonCode::SUCCESS, "message {n}");
            }
        });
        for n in 0..400 {
            if n % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let publish = slow.recv_publish().await;
            assert_eq!(
                publish.payload,
                n.to_string().into_bytes(),
                "in order, none lost"
            );
        }
        publisher.await.expect("publisher");
        slow.disconnect().await;
    }
    let stats = broker.stats();
    assert_eq!(
        stats.dropped_inbox_full + stats.dropped_congested + stats.dropped_queue_full,
        0,
        "{stats:?}"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_queue_memory_budget() {
    let mut config = test_config();
    config.limits.max_queued_bytes_total = 64 * 1024;
    let broker = start(config).await;
    let addr = broker.local_addr();
    let mut c = Connect::new(V5, "offline");
    c.properties.session_expiry_interval = Some(60);
    let (mut s, _) = Peer::connect_with(addr, c).await;
    s.subscribe("budget/#", QoS::AtLeastOnce).await;
    s.disconnect().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut p = Peer::connect(addr, V5, "p").await;
    let payload = "z".repeat(1024);
    for _ in 0..200 {
        p.publish("budget/x", &payload, QoS::AtLeastOnce, false)
            .await;
    }
    let stats = broker.stats();
    assert!(stats.dropped_memory_budget > 0, "{stats:?}");
    assert!(stats.queued_bytes <= 64 * 1024, "{stats:?}");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_budget_covers_online_subscribers_that_never_read() {
    // Two connected subscribers that never read: once their sockets are full, their session
    // queues grow, and the global budget (not only each session's own limit) caps them.
    let budget = 256 * 1024;
    let mut config = test_config();
    config.limits.max_queued_bytes_total = budget;
    config.sessions.max_queued_bytes = 64 * 1024 * 1024;
    config.sessions.max_queued_messages = 1_000_000;
    let broker = start(config).await;
    let addr = broker.local_addr();
    let mut sleepers = Vec::new();
    for id in ["sleeper-1", "sleeper-2"] {
        let mut s = Peer::connect(addr, V5, id).await;
        s.subscribe("flood/#", QoS::AtMostOnce).await;
        sleepers.push(s);
    }
    let before = rss_guard();
    let mut p = Peer::connect(addr, V5, "flooder").await;
    let payload = "f".repeat(16 * 1024);
    // 48 MiB per sleeper: far more than the kernel's socket buffers hold.
    for _ in 0..3000 {
        p.publish("flood/x", &payload, QoS::AtLeastOnce, false)
            .await;
    }
    let stats = broker.stats();
    assert!(stats.dropped_memory_budget > 0, "{stats:?}");
    assert!(stats.queued_bytes <= budget, "{stats:?}");
    assert_rss_bounded(before, "online subscribers that never read");
    assert_healthy(addr).await;
    drop(sleepers);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_violation_just_closes_and_pubrel_unknown_is_answered() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let mut c = Peer::connect(addr, V311, "v3").await;
    c.send(Packet::PubRel(PubAck::new(pid(9)))).await;
    assert!(matches!(c.recv_packet().await, Packet::PubComp(_)));
    c.send_raw(&[0x30, 0x05, 0x00, 0x03, b'a', b'/', b'#'])
        .await;
    assert!(c.until_closed().await.is_empty());
    assert_healthy(addr).await;
    broker.shutdown().await;
}

/// Every byte reserved against the global budget is given back once the deliveries are
/// written: for a message that matches one filter (its fan-out reserved at once), for one
/// that matches overlapping filters of one client (reserved per delivery), and for a QoS 0
/// message that an offline session refuses (reserved, then released).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_budget_returns_to_zero_after_delivery() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let mut subscribers = Vec::new();
    for i in 0..3 {
        let mut s = Peer::connect(addr, V5, &format!("budget-{i}")).await;
        s.subscribe("fan/x", QoS::AtLeastOnce).await;
        subscribers.push(s);
    }
    // One client with overlapping filters: one delivery for both [MQTT-3.3.4-2].
    let mut overlap = Peer::connect(addr, V5, "budget-overlap").await;
    overlap.subscribe("over/+", QoS::AtLeastOnce).await;
    overlap.subscribe("over/#", QoS::AtMostOnce).await;
    // A persistent session that goes offline: it refuses QoS 0 while away.
    let mut connect = Connect::new(V5, "budget-away");
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(60);
    let (mut away, _) = Peer::connect_with(addr, connect).await;
    away.subscribe("fan/x", QoS::AtMostOnce).await;
    away.disconnect().await;

    let mut p = Peer::connect(addr, V5, "budget-publisher").await;
    for n in 0..50 {
        let qos = if n % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        p.publish("fan/x", &format!("m{n}"), qos, false).await;
        p.publish("over/x", &format!("m{n}"), qos, false).await;
    }
    for s in subscribers.iter_mut().chain(std::iter::once(&mut overlap)) {
        for n in 0..50 {
            let got = s.recv_publish().await;
            assert_eq!(&got.payload[..], format!("m{n}").as_bytes());
        }
        s.expect_silence(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while broker.stats().queued_bytes != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(broker.stats().queued_bytes, 0, "{:?}", broker.stats());
    broker.shutdown().await;
}

/// Taking over a connection whose session ends with it (3.1.1 clean session, 5.0 Session
/// Expiry 0) starts a new session: Session Present 0, and the old subscriptions are gone
/// [MQTT-3.1.2-4] [MQTT-3.2.2-2].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taking_over_a_clean_session_starts_a_new_one() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    for version in [midge_codec::ProtocolVersion::V3_1_1, V5] {
        let id = format!("takeover-clean-{}", version.is_v5());
        let mut old = Peer::connect(addr, version, &id).await;
        old.subscribe("takeover/#", QoS::AtLeastOnce).await;
        let mut again = Connect::new(version, id.clone());
        again.clean_start = false;
        if version.is_v5() {
            again.properties.session_expiry_interval = Some(60);
        }
        let (mut new, ack) = Peer::connect_with(addr, again).await;
        assert!(
            !ack.session_present,
            "{version:?}: the clean session was handed over"
        );
        old.until_closed().await;
        let mut p = Peer::connect(addr, version, &format!("{id}-pub")).await;
        p.publish("takeover/x", "old subscription", QoS::AtLeastOnce, false)
            .await;
        new.expect_silence(Duration::from_millis(150)).await;
        assert_eq!(broker.stats().subscriptions, 0, "{version:?}");
    }
    broker.shutdown().await;
}

/// Publishes `messages` of 4 KiB at QoS 1 (each acknowledged once queued) to a QoS 0
/// subscriber that reads nothing until all are published, then counts what reaches it.
async fn backlog_received(config: midge_broker::BrokerConfig, messages: usize) -> usize {
    let broker = start(config).await;
    let addr = broker.local_addr();
    let mut subscriber = Peer::connect(addr, V5, "backlog").await;
    subscriber.subscribe("backlog/#", QoS::AtMostOnce).await;
    let mut publisher = Peer::connect(addr, V5, "producer").await;
    let payload = "z".repeat(4096);
    for _ in 0..messages {
        publisher
            .publish("backlog/x", &payload, QoS::AtLeastOnce, false)
            .await;
    }
    let mut received = 0;
    while subscriber
        .try_recv_publish(Duration::from_secs(3))
        .await
        .is_ok()
    {
        received += 1;
    }
    broker.shutdown().await;
    received
}

/// A subscriber's backlog larger than one write buffer reaches it whole, even when nothing new
/// arrives to wake its connection: after a write that the socket takes entirely, the rest of
/// the session's queue still goes out. QoS 0 has no acknowledgements that would wake the
/// connection instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_larger_than_the_write_buffer_is_delivered_whole() {
    let mut config = test_config();
    config.limits.inbox_capacity = 10_000;
    config.sessions.max_queued_messages = 10_000;
    config.sessions.max_queued_bytes = 64 << 20;
    const MESSAGES: usize = 2000;
    assert_eq!(
        backlog_received(config, MESSAGES).await,
        MESSAGES,
        "the whole backlog arrived"
    );
}

/// Publishes waiting for room in a subscriber's full session go on as soon as its queue
/// drains, even when the drain happens with nothing else arriving to wake the waiting
/// publisher: nothing is refused, and every message arrives, while the inbox and the queue
/// together never hold more than the session's limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_waiting_for_a_full_session_go_on_as_it_drains() {
    let mut config = test_config();
    config.limits.inbox_capacity = 10_000;
    config.sessions.max_queued_messages = 10;
    let broker = start(config).await;
    let addr = broker.local_addr();
    let mut subscriber = Peer::connect(addr, V5, "backlog").await;
    subscriber.subscribe("backlog/#", QoS::AtMostOnce).await;
    const MESSAGES: usize = 4000;
    let reader = tokio::spawn(async move {
        let mut received = 0;
        while received < MESSAGES {
            match subscriber.try_recv_publish(Duration::from_secs(5)).await {
                Ok(_) => received += 1,
                Err(_) => break,
            }
        }
        received
    });
    let mut publisher = Peer::connect(addr, V5, "producer").await;
    let payload = "z".repeat(4096);
    for n in 0..MESSAGES {
        let code = publisher
            .publish("backlog/x", &payload, QoS::AtLeastOnce, false)
            .await;
        assert_eq!(code, ReasonCode::SUCCESS, "message {n}");
    }
    assert_eq!(reader.await.unwrap(), MESSAGES, "every message arrived");
    let stats = broker.stats();
    assert_eq!(
        stats.dropped_inbox_full + stats.dropped_congested + stats.dropped_queue_full,
        0,
        "{stats:?}"
    );
    broker.shutdown().await;
}

/// `count` QoS 1 PUBLISHes to `topic` numbered from 1, in one buffer, so that the broker
/// reads and routes them in one pass.
fn qos1_burst(client: &mut Peer, topic: &str, count: u16) -> bytes::BytesMut {
    let mut burst = bytes::BytesMut::new();
    for n in 1..=count {
        let mut p = client.publish_packet(topic, &n.to_string(), QoS::AtLeastOnce, false);
        p.packet_id = Some(pid(n));
        Packet::Publish(p).encode(V5, &mut burst).expect("encodes");
    }
    burst
}

/// Receives until `count` PUBACKs and `count` messages arrived, acknowledging the messages,
/// and returns the PUBACKs' reason codes and the payloads in order. Two seconds of silence
/// fail the test: far less than the backpressure timeout of the tests that use it.
async fn acks_and_messages(client: &mut Peer, count: u16) -> (Vec<ReasonCode>, Vec<String>) {
    let count = usize::from(count);
    let mut acks = Vec::new();
    let mut payloads = Vec::new();
    while acks.len() < count || payloads.len() < count {
        match client.recv_within(Duration::from_secs(2)).await {
            Recv::Packet(Packet::PubAck(ack)) => acks.push(ack.reason_code),
            Recv::Packet(Packet::Publish(p)) => {
                if let Some(id) = p.packet_id {
                    client.send(Packet::PubAck(PubAck::new(id))).await;
                }
                payloads.push(String::from_utf8_lossy(&p.payload).into_owned());
            }
            other => panic!(
                "got {other:?} after {} acks {acks:?} and {} deliveries",
                acks.len(),
                payloads.len()
            ),
        }
    }
    (acks, payloads)
}

/// Every PUBACK a success and the messages 1 to `count` in order.
fn assert_all_delivered((acks, payloads): &(Vec<ReasonCode>, Vec<String>), count: u16) {
    assert!(acks.iter().all(|a| *a == ReasonCode::SUCCESS), "{acks:?}");
    let expected: Vec<String> = (1..=count).map(|n| n.to_string()).collect();
    assert_eq!(payloads, &expected, "every message, in order");
}

/// A broker whose inboxes hold 8 deliveries, with a backpressure timeout (5 s) longer than
/// the tests that use it wait for an answer: waiting it out fails them.
async fn small_inbox_broker() -> BrokerHandle {
    let mut config = test_config();
    config.limits.inbox_capacity = 8;
    config.limits.backpressure_timeout_ms = 5_000;
    start(config).await
}

/// No delivery was dropped for a full inbox or queue.
fn assert_nothing_dropped(broker: &BrokerHandle) {
    let stats = broker.stats();
    assert_eq!(
        stats.dropped_inbox_full + stats.dropped_congested + stats.dropped_queue_full,
        0,
        "{stats:?}"
    );
}

/// A client subscribed to its own topic, publishing more messages at once than its inbox
/// holds: its deliveries to itself wait for room in its own inbox, which only its own task
/// empties. They must not wait for the backpressure timeout and then be refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_to_itself_past_its_inbox_capacity_loses_nothing() {
    let broker = small_inbox_broker().await;
    let addr = broker.local_addr();
    let mut c = Peer::connect(addr, V5, "echo").await;
    c.subscribe("echo/#", QoS::AtLeastOnce).await;
    const MESSAGES: u16 = 40;
    let burst = qos1_burst(&mut c, "echo/x", MESSAGES);
    c.send_raw(&burst).await;
    assert_all_delivered(&acks_and_messages(&mut c, MESSAGES).await, MESSAGES);
    assert_nothing_dropped(&broker);
    broker.shutdown().await;
}

/// Two clients, each subscribed to the other's topic, publishing more at once than an inbox
/// holds: each one's publish waits for room in the other's inbox, which the other's task
/// empties only if it goes on doing so while its own publish waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_publishing_to_each_other_past_their_inboxes_lose_nothing() {
    let broker = small_inbox_broker().await;
    let addr = broker.local_addr();
    let mut a = Peer::connect(addr, V5, "a").await;
    a.subscribe("to-a/#", QoS::AtLeastOnce).await;
    let mut b = Peer::connect(addr, V5, "b").await;
    b.subscribe("to-b/#", QoS::AtLeastOnce).await;
    // Enough that both publishes are waiting at once in practically every run.
    const MESSAGES: u16 = 200;
    let to_b = qos1_burst(&mut a, "to-b/x", MESSAGES);
    let to_a = qos1_burst(&mut b, "to-a/x", MESSAGES);
    tokio::join!(a.send_raw(&to_b), b.send_raw(&to_a));
    let (at_a, at_b) = tokio::join!(
        acks_and_messages(&mut a, MESSAGES),
        acks_and_messages(&mut b, MESSAGES)
    );
    assert_all_delivered(&at_a, MESSAGES);
    assert_all_delivered(&at_b, MESSAGES);
    assert_nothing_dropped(&broker);
    broker.shutdown().await;
}

/// A client that publishes a burst of QoS 0 messages and disconnects at once: its DISCONNECT
/// is read together with publishes that find a subscriber's inbox full. Those wait for room
/// as they would with the client still connected, and arrive, in order. A QoS 0 message
/// promises its publisher nothing, but nothing would send it again either: the client sent it
/// before it left, and dropping it because the connection closes loses the tail of every fast
/// publisher that ends with a clean DISCONNECT (`midge pub -l`).
///
/// On one thread, so that the subscriber's task cannot empty its inbox while the publisher's
/// task routes the burst: the inbox is full when the DISCONNECT has been read.
#[tokio::test]
async fn qos0_publishes_read_with_the_disconnect_still_wait_for_room() {
    let broker = small_inbox_broker().await;
    let addr = broker.local_addr();
    let mut subscriber = Peer::connect(addr, V5, "reader").await;
    subscriber.subscribe("burst/#", QoS::AtMostOnce).await;
    let mut publisher = Peer::connect(addr, V5, "bursty").await;
    const MESSAGES: usize = 200;
    let mut burst = bytes::BytesMut::new();
    for n in 1..=MESSAGES {
        let publish = publisher.publish_packet("burst/x", &n.to_string(), QoS::AtMostOnce, false);
        Packet::Publish(publish)
            .encode(V5, &mut burst)
            .expect("encodes");
    }
    Packet::Disconnect(Disconnect::default())
        .encode(V5, &mut burst)
        .expect("encodes");
    publisher.send_raw(&burst).await;
    let mut payloads = Vec::new();
    while payloads.len() < MESSAGES {
        match subscriber.try_recv_publish(Duration::from_secs(2)).await {
            Ok(p) => payloads.push(String::from_utf8_lossy(&p.payload).into_owned()),
            Err(_) => break,
        }
    }
    let expected: Vec<String> = (1..=MESSAGES).map(|n| n.to_string()).collect();
    assert_eq!(
        payloads,
        expected,
        "every message, in order ({} of {MESSAGES}): {:?}",
        payloads.len(),
        broker.stats()
    );
    assert_nothing_dropped(&broker);
    drop(publisher);
    broker.shutdown().await;
}

/// Retained messages are bounded in count and bytes: a retained PUBLISH that does not fit is
/// still delivered but not retained, and counted; a replacement that does not fit clears the
/// topic instead of leaving the older message to pass for the last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_are_bounded_in_count_and_bytes() {
    let mut config = test_config();
    config.limits.max_retained_messages = 3;
    config.limits.max_retained_bytes = 1000;
    let broker = start(config).await;
    let addr = broker.local_addr();
    let mut p = Peer::connect(addr, V5, "p").await;
    let mut live = Peer::connect(addr, V5, "live").await;
    live.subscribe("r/#", QoS::AtMostOnce).await;
    for topic in ["r/1", "r/2", "r/3", "r/4"] {
        p.publish(topic, "x", QoS::AtLeastOnce, true).await;
        assert_eq!(
            live.recv_publish().await.topic,
            topic,
            "delivered either way"
        );
    }
    let stats = broker.stats();
    assert_eq!((stats.retained_messages, stats.dropped_retained), (3, 1));
    // A replacement within the count, over the bytes: r/1 is cleared, not left as "x".
    p.publish("r/1", &"y".repeat(2000), QoS::AtLeastOnce, true)
        .await;
    let stats = broker.stats();
    assert_eq!((stats.retained_messages, stats.dropped_retained), (2, 2));
    // A replacement that fits, and a deletion.
    p.publish("r/2", "z", QoS::AtLeastOnce, true).await;
    p.publish("r/3", "", QoS::AtLeastOnce, true).await;
    assert_eq!(broker.stats().retained_messages, 1);
    let mut late = Peer::connect(addr, V5, "late").await;
    late.subscribe("r/#", QoS::AtMostOnce).await;
    let only = late.recv_publish().await;
    assert_eq!((only.topic.as_str(), &only.payload[..]), ("r/2", &b"z"[..]));
    late.expect_silence(Duration::from_millis(150)).await;
    // Room again: a new topic is retained.
    p.publish("r/5", "x", QoS::AtLeastOnce, true).await;
    assert_eq!(broker.stats().retained_messages, 2);
    broker.shutdown().await;
}

/// Sessions are bounded: persistent sessions outlive their connections, so past
/// `max_sessions` a CONNECT with a new client identifier is refused, while a client whose
/// session the broker keeps still connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_bounded_and_known_clients_still_connect() {
    let mut config = test_config();
    config.limits.max_sessions = 2;
    let broker = start(config).await;
    let addr = broker.local_addr();
    for id in ["kept-1", "kept-2"] {
        let mut connect = Connect::new(V311, id);
        connect.clean_start = false;
        let (mut c, ack) = Peer::connect_with(addr, connect).await;
        assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
        c.send(Packet::Disconnect(Default::default())).await;
    }
    // Both offline sessions remain; a third client identifier finds no room.
    let (_c, ack) = Peer::connect_with(addr, Connect::new(V5, "third")).await;
    assert_eq!(ack.reason_code, ReasonCode::QUOTA_EXCEEDED);
    let (_c, ack) = Peer::connect_with(addr, Connect::new(V311, "third-3x")).await;
    assert_eq!(
        ack.reason_code,
        ReasonCode::SERVER_UNAVAILABLE,
        "3.x: return code 3"
    );
    let mut connect = Connect::new(V311, "kept-1");
    connect.clean_start = false;
    let (_c, ack) = Peer::connect_with(addr, connect).await;
    assert_eq!(
        ack.reason_code,
        ReasonCode::SUCCESS,
        "a known client still connects"
    );
    assert!(ack.session_present, "with its session");
    let stats = broker.stats();
    assert_eq!(
        (stats.sessions, stats.rejected_connections),
        (2, 2),
        "{stats:?}"
    );
    broker.shutdown().await;
}
