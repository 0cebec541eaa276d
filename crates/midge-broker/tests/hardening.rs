//! What the broker promises under pressure: a message acknowledged with success is delivered
//! after a disconnect or a takeover, and every retained message reaches a new subscription.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::BytesMut;
use common::*;
use midge_codec::{Connect, Packet, PubAck, QoS, ReasonCode};

/// A 5.0 connection that keeps its session, as client `client_id`.
async fn persistent(addr: std::net::SocketAddr, client_id: &str) -> (Peer, bool) {
    let mut connect = Connect::new(V5, client_id.to_owned());
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(u32::MAX - 1);
    let (client, ack) = Peer::connect_with(addr, connect).await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "{ack:?}");
    (client, ack.session_present)
}

/// Publishes QoS 1 messages numbered `1..=count` to `topic`, a window at a time (within the
/// broker's Receive Maximum), and returns the numbers acknowledged with success.
async fn publish_counting_successes(
    publisher: &mut Peer,
    topic: &str,
    count: u16,
) -> BTreeSet<u16> {
    const WINDOW: u16 = 500;
    let mut succeeded = BTreeSet::new();
    let mut n = 1;
    while n <= count {
        let last = (n + WINDOW - 1).min(count);
        let mut burst = BytesMut::new();
        for k in n..=last {
            let mut p = publisher.publish_packet(topic, &k.to_string(), QoS::AtLeastOnce, false);
            p.packet_id = Some(pid(k));
            Packet::Publish(p).encode(V5, &mut burst).expect("encodes");
        }
        publisher.send_raw(&burst).await;
        for _ in n..=last {
            match publisher.recv_within(Duration::from_secs(10)).await {
                Recv::Packet(Packet::PubAck(ack)) => {
                    if ack.reason_code == ReasonCode::SUCCESS {
                        succeeded.insert(ack.packet_id.get());
                    } else {
                        assert_eq!(ack.reason_code, ReasonCode::QUOTA_EXCEEDED, "{ack:?}");
                    }
                }
                other => panic!("expected PUBACK, got {other:?}"),
            }
        }
        n = last + 1;
    }
    succeeded
}

/// Receives, acknowledging each, until a second of silence; returns the payloads as numbers.
async fn receive_all(client: &mut Peer) -> BTreeSet<u16> {
    let mut got = BTreeSet::new();
    loop {
        match client.recv_within(Duration::from_secs(1)).await {
            Recv::Packet(Packet::Publish(p)) => {
                if let Some(id) = p.packet_id {
                    client.send(Packet::PubAck(PubAck::new(id))).await;
                }
                let n = std::str::from_utf8(&p.payload).expect("utf-8");
                got.insert(n.parse().expect("a number"));
            }
            Recv::Timeout => return got,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

/// A persistent subscriber stops reading while 3,000 QoS 1 messages are published to it.
/// Whatever was acknowledged with success must reach it when it comes back, by a new
/// connection after the old one dropped (`takeover` false) or by one that takes the session
/// over from the stalled connection [MQTT-3.1.2-5] [MQTT-4.3.2-3]. What the session could
/// not hold is refused with 0x97 when published, not lost after being acknowledged.
async fn acknowledged_messages_reach_a_stalled_subscriber(takeover: bool) {
    let mut config = test_config();
    config.limits.backpressure_timeout_ms = 200;
    let broker = start(config).await;
    let addr = broker.local_addr();
    let (mut stalled, _) = persistent(addr, "stalled").await;
    stalled.subscribe("stalled/#", QoS::AtLeastOnce).await;
    let mut publisher = Peer::connect(addr, V5, "publisher").await;
    const MESSAGES: u16 = 3_000;
    let succeeded = publish_counting_successes(&mut publisher, "stalled/x", MESSAGES).await;
    let mut stalled = Some(stalled);
    if !takeover {
        drop(stalled.take());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (mut back, present) = persistent(addr, "stalled").await;
    assert!(present, "the session was kept");
    let received = receive_all(&mut back).await;
    let lost: Vec<u16> = succeeded.difference(&received).copied().collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged messages lost, e.g. {:?}",
        lost.len(),
        succeeded.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(
        succeeded.len() < usize::from(MESSAGES),
        "the session's limits must refuse some of {MESSAGES}"
    );
    assert!(succeeded.len() >= 1_000, "{} accepted", succeeded.len());
    drop(stalled);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_a_reconnect_of_a_stalled_subscriber() {
    acknowledged_messages_reach_a_stalled_subscriber(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_a_takeover_of_a_stalled_subscriber() {
    acknowledged_messages_reach_a_stalled_subscriber(true).await;
}

/// Publishes `count` retained QoS 0 messages, `{prefix}/{n}` with payload `n`, padded with
/// `pad` bytes after a `:`, in bursts, and waits until the broker holds them all.
async fn retain_many(broker: &midge_broker::BrokerHandle, prefix: &str, count: u32, pad: usize) {
    let padding = "x".repeat(pad);
    let mut publisher = Peer::connect(broker.local_addr(), V5, "").await;
    let mut n = 0;
    while n < count {
        let mut burst = BytesMut::new();
        for k in n..(n + 1_000).min(count) {
            let p = publisher.publish_packet(
                &format!("{prefix}/{k}"),
                &format!("{k}:{padding}"),
                QoS::AtMostOnce,
                true,
            );
            Packet::Publish(p).encode(V5, &mut burst).expect("encodes");
        }
        publisher.send_raw(&burst).await;
        n = (n + 1_000).min(count);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while broker.stats().retained_messages < count as usize {
        assert!(std::time::Instant::now() < deadline, "{:?}", broker.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A new subscription gets every matching retained message, however many, as fast as it
/// reads them, with the session's queue limits in force [MQTT-3.3.1-9] [MQTT-3.8.4-4]: they
/// wait outside the queue, and go into it as it has room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_retained_message_reaches_a_new_subscription() {
    const RETAINED: u32 = 100_000;
    let broker = start(test_config()).await;
    retain_many(&broker, "r", RETAINED, 0).await;
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        let mut sub = Peer::connect(broker.local_addr(), V5, "").await;
        sub.subscribe("r/#", qos).await;
        let mut seen = vec![false; RETAINED as usize];
        let mut received = 0;
        while received < RETAINED {
            let p = match sub.try_recv_publish(Duration::from_secs(5)).await {
                Ok(p) => p,
                Err(other) => {
                    panic!("{received} of {RETAINED} retained at {qos:?}, then {other:?}")
                }
            };
            assert!(p.retain, "sent as retained [MQTT-3.3.1-8]");
            let payload = std::str::from_utf8(&p.payload).unwrap();
            let n: usize = payload.split(':').next().unwrap().parse().unwrap();
            assert!(!std::mem::replace(&mut seen[n], true), "{n} twice");
            received += 1;
        }
        sub.expect_silence(Duration::from_millis(200)).await;
    }
    let stats = broker.stats();
    assert_eq!(stats.dropped_queue_full, 0, "{stats:?}");
    broker.shutdown().await;
}

/// A subscriber that reads nothing holds only references to the retained messages it was
/// not sent, counted in the memory budget, and gives them back when it goes: the budget
/// returns to nothing queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_waiting_for_a_subscriber_are_counted_and_released() {
    const RETAINED: u32 = 20_000;
    let broker = start(test_config()).await;
    // 20 MB in all: more than the sockets' buffers take.
    retain_many(&broker, "w", RETAINED, 1000).await;
    let mut sub = Peer::connect(broker.local_addr(), V5, "").await;
    sub.subscribe("w/#", QoS::AtLeastOnce).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let queued = broker.stats().queued_bytes;
    assert!(
        queued > 0,
        "the waiting entries count against the budget: {:?}",
        broker.stats()
    );
    drop(sub);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while broker.stats().queued_bytes != 0 {
        assert!(std::time::Instant::now() < deadline, "{:?}", broker.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    broker.shutdown().await;
}

/// Waits until the broker's queued bytes are `expected`.
async fn queued_bytes_become(
    broker: &midge_broker::BrokerHandle,
    what: &str,
    done: impl Fn(usize) -> bool,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done(broker.stats().queued_bytes) {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {:?}",
            broker.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn connect_with_will(client_id: &str, payload: usize, delay: u32) -> Connect {
    let mut will = midge_codec::Will {
        topic: "wills/x".into(),
        payload: bytes::Bytes::from(vec![b'w'; payload]),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    };
    will.properties.will_delay_interval = Some(delay);
    let mut connect = Connect::new(V5, client_id.to_owned());
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(3600);
    connect.will = Some(will);
    connect
}

/// A will counts against the memory budget while the broker keeps it: for its connection's
/// life, and while it waits for its delay with the offline session. A CONNECT whose will does
/// not fit is refused with 0x97.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wills_count_against_the_memory_budget() {
    const WILL: usize = 60_000;
    let mut config = test_config();
    config.limits.max_queued_bytes_total = 3 * WILL + 1_000;
    let broker = start(config).await;
    let addr = broker.local_addr();
    let (c, ack) = Peer::connect_with(addr, connect_with_will("w1", WILL, 3600)).await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    queued_bytes_become(&broker, "connected", |q| q >= WILL).await;
    // Gone without DISCONNECT: the will waits an hour, still counted.
    drop(c);
    tokio::time::sleep(Duration::from_millis(200)).await;
    queued_bytes_become(&broker, "offline", |q| q >= WILL).await;
    // Two more fit, the fourth does not.
    let (_c2, ack) = Peer::connect_with(addr, connect_with_will("w2", WILL, 0)).await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    let (_c3, ack) = Peer::connect_with(addr, connect_with_will("w3", WILL, 0)).await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    let (_, ack) = Peer::connect_with(addr, connect_with_will("w4", WILL, 0)).await;
    assert_eq!(ack.reason_code, ReasonCode::QUOTA_EXCEEDED);
    // The first client comes back: its will is cancelled and no longer counted.
    let mut back = Connect::new(V5, "w1");
    back.clean_start = false;
    back.properties.session_expiry_interval = Some(3600);
    let (c1, ack) = Peer::connect_with(addr, back).await;
    assert!(ack.session_present);
    queued_bytes_become(&broker, "w1 back", |q| (2 * WILL..3 * WILL).contains(&q)).await;
    c1.disconnect().await;
    drop((_c2, _c3));
    // Every will published or dropped: nothing counted.
    queued_bytes_become(&broker, "all gone", |q| q == 0).await;
    broker.shutdown().await;
}

/// Retained messages near the session's byte limit wait for room instead of being refused:
/// a subscriber that reads gets every one [MQTT-3.3.1-9].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_wait_for_room_under_the_session_byte_limit() {
    let mut config = test_config();
    // Room for about two of the messages below at once.
    config.sessions.max_queued_bytes = 3_300;
    let broker = start(config).await;
    let addr = broker.local_addr();
    let mut publisher = Peer::connect(addr, V5, "pub").await;
    let payload = "x".repeat(1000);
    for i in 0..10 {
        publisher
            .publish(&format!("r/{i}"), &payload, QoS::AtLeastOnce, true)
            .await;
    }
    let mut sub = Peer::connect(addr, V5, "sub").await;
    sub.subscribe("r/#", QoS::AtLeastOnce).await;
    let mut got = 0;
    while sub.try_recv_publish(Duration::from_secs(2)).await.is_ok() {
        got += 1;
    }
    assert_eq!(got, 10, "{:?}", broker.stats());
    broker.shutdown().await;
}

/// A connection busy waiting for room in full inboxes, for several publishes of one read,
/// still answers a takeover of its session at once: the taking-over connection gets the
/// session with its acknowledged messages, instead of giving up waiting and starting a new
/// one while the old session is lost [MQTT-3.1.4-3].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_connection_hands_its_session_over_at_once() {
    let mut config = test_config();
    config.limits.backpressure_timeout_ms = 300;
    // The taking-over connection waits 500 ms: less than the three waits below.
    config.limits.close_timeout_ms = 200;
    config.sessions.max_queued_messages = 1;
    config.limits.inbox_capacity = 1;
    let broker = start(config).await;
    let addr = broker.local_addr();
    let mut subscribers = Vec::new();
    let mut filler = Peer::connect(addr, V5, "filler").await;
    // Three full subscribers: one message in flight, one queued.
    for k in 0..3 {
        let s = full_subscriber(addr, &mut filler, &format!("s{k}"), &format!("t/{k}")).await;
        subscribers.push(s);
    }
    let (mut victim, _) = Peer::connect_with(addr, receive_maximum_1("victim", true)).await;
    victim.subscribe("v/in", QoS::AtLeastOnce).await;
    for n in 0..2 {
        let code = filler
            .publish("v/in", &format!("m{n}"), QoS::AtLeastOnce, false)
            .await;
        assert_eq!(code, ReasonCode::SUCCESS);
    }
    // Three publishes in one read, each waiting for a full subscriber.
    let mut out = BytesMut::new();
    for k in 0..3 {
        let p = victim.publish_packet(&format!("t/{k}"), "x", QoS::AtLeastOnce, false);
        Packet::Publish(p).encode(V5, &mut out).expect("encodes");
    }
    victim.send_raw(&out).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (mut back, ack) = Peer::connect_with(addr, receive_maximum_1("victim", false)).await;
    assert!(ack.session_present, "the session was handed over");
    let mut got = Vec::new();
    while let Ok(p) = back.try_recv_publish(Duration::from_secs(2)).await {
        got.push(String::from_utf8_lossy(&p.payload).into_owned());
    }
    assert_eq!(got, ["m0", "m1"], "{:?}", broker.stats());
    drop(subscribers);
    broker.shutdown().await;
}
