//! MQTT behaviour of the broker over real TCP on 127.0.0.1.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use midge_codec::{
    Connect, Disconnect, Packet, QoS, ReasonCode, RetainHandling, SubscriptionOptions, Will,
};

fn will(topic: &str, payload: &str, delay: Option<u32>) -> Will {
    let mut w = Will {
        topic: topic.to_owned().into(),
        payload: Bytes::from(payload.to_owned()),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    };
    w.properties.will_delay_interval = delay;
    w
}

// Conformance: [MQTT-5:3.8.4-8] [MQTT-3.1.1:3.8.4-6] [MQTT-5:3.10.4-2] [MQTT-3.1.1:3.10.4-2] [MQTT-5:4.5.0-1] [MQTT-3.1.1:4.5.0-1] [MQTT-5:3.3.2-3] [MQTT-3.1.1:3.3.2-3]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_sub_all_qos_both_versions() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    for version in [V311, V5] {
        let mut sub = Peer::connect(addr, version, "sub").await;
        let mut publisher = Peer::connect(addr, version, "pub").await;
        let ack = sub.subscribe("a/+/c", QoS::ExactlyOnce).await;
        assert_eq!(ack.reason_codes, vec![ReasonCode::GRANTED_QOS_2]);
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let code = publisher.publish("a/b/c", "hello", qos, false).await;
            assert!(code.is_success());
            let p = sub.recv_publish().await;
            assert_eq!(p.topic, "a/b/c");
            assert_eq!(p.payload, Bytes::from_static(b"hello"));
            assert_eq!(p.qos, qos);
            assert!(!p.retain);
        }
        // Subscription QoS caps delivery QoS.
        sub.subscribe("a/+/c", QoS::AtMostOnce).await;
        publisher
            .publish("a/b/c", "x", QoS::ExactlyOnce, false)
            .await;
        assert_eq!(sub.recv_publish().await.qos, QoS::AtMostOnce);
        sub.unsubscribe("a/+/c").await;
        publisher
            .publish("a/b/c", "gone", QoS::AtLeastOnce, false)
            .await;
        sub.expect_silence(Duration::from_millis(200)).await;
        sub.disconnect().await;
        publisher.disconnect().await;
    }
    let stats = broker.stats();
    assert!(stats.messages_received >= 8, "{stats:?}");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_no_matching_subscribers_reason() {
    let broker = start(test_config()).await;
    let mut c = Peer::connect(broker.local_addr(), V5, "lonely").await;
    let code = c
        .publish("nobody/listens", "x", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(code, ReasonCode::NO_MATCHING_SUBSCRIBERS);
    broker.shutdown().await;
}

// Conformance: [MQTT-3.1.1:3.3.1-5] [MQTT-3.1.1:3.3.1-6] [MQTT-3.1.1:3.3.1-8] [MQTT-3.1.1:3.3.1-9] [MQTT-3.1.1:3.3.1-10] [MQTT-3.1.1:3.3.1-11]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_set_replace_delete() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let mut p = Peer::connect(addr, V311, "p").await;
    p.publish("r/1", "first", QoS::AtLeastOnce, true).await;
    p.publish("r/1", "second", QoS::AtLeastOnce, true).await;
    p.publish("r/2", "other", QoS::AtMostOnce, true).await;
    let mut s = Peer::connect(addr, V311, "s").await;
    s.subscribe("r/1", QoS::AtLeastOnce).await;
    let got = s.recv_publish().await;
    assert_eq!(got.payload, Bytes::from_static(b"second"));
    assert!(got.retain, "retained on subscribe carries RETAIN");
    s.expect_silence(Duration::from_millis(150)).await;
    // A live message to an existing subscription has RETAIN cleared (3.1.1).
    p.publish("r/1", "live", QoS::AtLeastOnce, true).await;
    let live = s.recv_publish().await;
    assert!(!live.retain);
    // Delete with an empty payload.
    p.publish("r/1", "", QoS::AtLeastOnce, true).await;
    let _ = s.recv_publish().await;
    assert_eq!(broker.stats().retained_messages, 1);
    let mut s2 = Peer::connect(addr, V311, "s2").await;
    s2.subscribe("r/#", QoS::AtLeastOnce).await;
    let only = s2.recv_publish().await;
    assert_eq!(only.topic, "r/2");
    s2.expect_silence(Duration::from_millis(150)).await;
    broker.shutdown().await;
}

// Conformance: [MQTT-5:3.3.1-9] [MQTT-5:3.3.1-10] [MQTT-5:3.3.1-11] [MQTT-5:3.3.1-12] [MQTT-5:3.3.1-13]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_handling_and_retain_as_published() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let mut p = Peer::connect(addr, V5, "p").await;
    p.publish("rh/t", "kept", QoS::AtLeastOnce, true).await;
    let mut s = Peer::connect(addr, V5, "s").await;
    let opts = |rh, rap| SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: false,
        retain_as_published: rap,
        retain_handling: rh,
    };
    // 2: never.
    s.subscribe_opts(&[("rh/t", opts(RetainHandling::DoNotSend, false))], None)
        .await;
    s.expect_silence(Duration::from_millis(150)).await;
    s.unsubscribe("rh/t").await;
    // 1: only for a new subscription.
    s.subscribe_opts(&[("rh/t", opts(RetainHandling::SendIfNew, false))], None)
        .await;
    assert!(s.recv_publish().await.retain);
    s.subscribe_opts(&[("rh/t", opts(RetainHandling::SendIfNew, false))], None)
        .await;
    s.expect_silence(Duration::from_millis(150)).await;
    // 0: every time.
    s.subscribe_opts(
        &[("rh/t", opts(RetainHandling::SendAtSubscribe, false))],
        None,
    )
    .await;
    assert!(s.recv_publish().await.retain);
    // Retain As Published: live messages keep RETAIN.
    s.subscribe_opts(&[("rh/t", opts(RetainHandling::DoNotSend, true))], None)
        .await;
    p.publish("rh/t", "rap", QoS::AtLeastOnce, true).await;
    assert!(s.recv_publish().await.retain);
    s.subscribe_opts(&[("rh/t", opts(RetainHandling::DoNotSend, false))], None)
        .await;
    p.publish("rh/t", "norap", QoS::AtLeastOnce, true).await;
    assert!(!s.recv_publish().await.retain);
    broker.shutdown().await;
}

// Conformance: [MQTT-3.1.1:3.14.4-3] [MQTT-3.1.1:3.1.2-8] [MQTT-5:3.1.3-9] [MQTT-5:3.1.2-8] [MQTT-5:3.1.2-7]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wills() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let mut watcher = Peer::connect(addr, V5, "watcher").await;
    watcher.subscribe("will/#", QoS::AtLeastOnce).await;

    // Normal DISCONNECT: no will.
    let mut c = Connect::new(V311, "w1");
    c.will = Some(will("will/w1", "gone", None));
    let (w1, _) = Peer::connect_with(addr, c).await;
    w1.disconnect().await;
    watcher.expect_silence(Duration::from_millis(200)).await;

    // Abrupt close: will.
    let mut c = Connect::new(V311, "w2");
    c.will = Some(will("will/w2", "died", None));
    let (w2, _) = Peer::connect_with(addr, c).await;
    drop(w2);
    let p = watcher.recv_publish().await;
    assert_eq!(p.topic, "will/w2");
    assert_eq!(p.payload, Bytes::from_static(b"died"));

    // 5.0 will delay, cancelled by a reconnect within the delay.
    let mut c = Connect::new(V5, "w3");
    c.clean_start = true;
    c.properties.session_expiry_interval = Some(60);
    c.will = Some(will("will/w3", "late", Some(1)));
    let (w3, _) = Peer::connect_with(addr, c.clone()).await;
    drop(w3);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c2 = c.clone();
    c2.clean_start = false;
    c2.will = None;
    let (w3b, ack) = Peer::connect_with(addr, c2).await;
    assert!(ack.session_present);
    watcher.expect_silence(Duration::from_millis(1300)).await;

    // 5.0 will delay longer than the session: published when the session ends.
    let mut c = Connect::new(V5, "w4");
    c.properties.session_expiry_interval = Some(0);
    c.will = Some(will("will/w4", "session-end", Some(30)));
    let (w4, _) = Peer::connect_with(addr, c).await;
    drop(w4);
    assert_eq!(watcher.recv_publish().await.topic, "will/w4");

    // 5.0 DISCONNECT 0x04 publishes the will.
    let mut c = Connect::new(V5, "w5");
    c.will = Some(will("will/w5", "asked", None));
    let (mut w5, _) = Peer::connect_with(addr, c).await;
    w5.send(Packet::Disconnect(Disconnect {
        reason_code: ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
        ..Default::default()
    }))
    .await;
    assert_eq!(watcher.recv_publish().await.topic, "will/w5");
    drop(w3b);
    broker.shutdown().await;
}

// A delayed will is published when its session ends, if that comes before the delay
// [MQTT-5:3.1.2-8]; a reconnect with Clean Start 1 ends the session [MQTT-5:3.1.2-4], whether
// the old connection is still open (a takeover) or already closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_start_reconnect_publishes_the_delayed_will_of_the_session_it_ends() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let mut watcher = Peer::connect(addr, V5, "watcher").await;
    watcher.subscribe("will/#", QoS::AtLeastOnce).await;
    for (id, taken_over) in [("offline", false), ("online", true)] {
        let mut c = Connect::new(V5, id);
        c.properties.session_expiry_interval = Some(60);
        c.will = Some(will(&format!("will/{id}"), "ended", Some(30)));
        let (old, _) = Peer::connect_with(addr, c.clone()).await;
        if !taken_over {
            drop(old);
            tokio::time::sleep(Duration::from_millis(200)).await;
            watcher.expect_silence(Duration::from_millis(100)).await;
        }
        let mut again = Connect::new(V5, id);
        again.clean_start = true;
        let (_new, ack) = Peer::connect_with(addr, again).await;
        assert!(!ack.session_present);
        let p = watcher
            .try_recv_publish(Duration::from_secs(3))
            .await
            .unwrap_or_else(|got| panic!("{id}: no will for the ended session: {got:?}"));
        assert_eq!(p.topic.as_str(), format!("will/{id}"));
    }
    broker.shutdown().await;
}

// Conformance: [MQTT-3.1.1:3.1.2-4] [MQTT-3.1.1:3.1.2-5] [MQTT-3.1.1:3.2.2-2] [MQTT-3.1.1:3.2.2-3] [MQTT-5:3.2.2-3]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_offline_messages() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    // 3.1.1 persistent session.
    let mut c = Connect::new(V311, "persist");
    c.clean_start = false;
    let (mut s, ack) = Peer::connect_with(addr, c.clone()).await;
    assert!(!ack.session_present);
    s.subscribe("off/#", QoS::AtLeastOnce).await;
    s.disconnect().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut p = Peer::connect(addr, V311, "p").await;
    p.publish("off/1", "q1", QoS::AtLeastOnce, false).await;
    p.publish("off/2", "q0", QoS::AtMostOnce, false).await;
    p.publish("off/3", "q2", QoS::ExactlyOnce, false).await;
    let (mut s, ack) = Peer::connect_with(addr, c.clone()).await;
    assert!(ack.session_present);
    assert_eq!(s.recv_publish().await.payload, Bytes::from_static(b"q1"));
    assert_eq!(s.recv_publish().await.payload, Bytes::from_static(b"q2"));
    s.expect_silence(Duration::from_millis(150)).await;
    s.disconnect().await;

    // 5.0 session expiry: tests/virtual_time.rs.
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscriptions_round_robin_and_failover() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let mut a = Peer::connect(addr, V5, "a").await;
    let mut b = Peer::connect(addr, V5, "b").await;
    a.subscribe("$share/g/jobs/#", QoS::AtLeastOnce).await;
    b.subscribe("$share/g/jobs/#", QoS::AtLeastOnce).await;
    let mut p = Peer::connect(addr, V5, "p").await;
    for i in 0..4 {
        p.publish("jobs/x", &i.to_string(), QoS::AtLeastOnce, false)
            .await;
    }
    let mut got_a = 0;
    let mut got_b = 0;
    while a.try_recv_publish(Duration::from_millis(200)).await.is_ok() {
        got_a += 1;
    }
    while b.try_recv_publish(Duration::from_millis(200)).await.is_ok() {
        got_b += 1;
    }
    assert_eq!((got_a, got_b), (2, 2), "round robin");
    // Failover: b goes away (its session ends); everything goes to a.
    drop(b);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..3 {
        p.publish("jobs/y", &i.to_string(), QoS::AtLeastOnce, false)
            .await;
    }
    for _ in 0..3 {
        a.recv_publish().await;
    }
    // A member with a persistent session that is offline is skipped while another is online.
    let mut c = Connect::new(V5, "c");
    c.properties.session_expiry_interval = Some(60);
    let (mut cc, _) = Peer::connect_with(addr, c).await;
    cc.subscribe("$share/g/jobs/#", QoS::AtLeastOnce).await;
    drop(cc);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..3 {
        p.publish("jobs/z", &i.to_string(), QoS::AtLeastOnce, false)
            .await;
    }
    for _ in 0..3 {
        a.recv_publish().await;
    }
    broker.shutdown().await;
}

// Conformance: [MQTT-5:3.3.2-11] [MQTT-5:3.3.2-12]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_aliases_both_directions() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let mut c = Connect::new(V5, "alias-sub");
    c.properties.topic_alias_maximum = Some(5);
    let (mut s, _) = Peer::connect_with(addr, c).await;
    s.subscribe("al/#", QoS::AtMostOnce).await;
    let mut p = Peer::connect(addr, V5, "alias-pub").await;
    // Client -> broker: set alias 1, then use it with an empty topic.
    let mut first = p.publish_packet("al/long/topic", "1", QoS::AtMostOnce, false);
    first.properties.topic_alias = std::num::NonZeroU16::new(1);
    p.publish_full(first).await;
    let mut second = p.publish_packet("", "2", QoS::AtMostOnce, false);
    second.properties.topic_alias = std::num::NonZeroU16::new(1);
    p.publish_full(second).await;
    // Broker -> client: the second delivery uses the alias with an empty topic.
    let mut raw = Vec::new();
    for _ in 0..2 {
        match s.recv_packet().await {
            Packet::Publish(publish) => raw.push(publish),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(raw[0].topic, "al/long/topic");
    assert!(raw[0].properties.topic_alias.is_some());
    assert!(
        raw[1].topic.is_empty(),
        "second uses the alias: {:?}",
        raw[1]
    );
    assert_eq!(raw[1].properties.topic_alias, raw[0].properties.topic_alias);
    broker.shutdown().await;
}

// Conformance: [MQTT-5:3.3.4-2] [MQTT-5:3.3.4-3] [MQTT-5:3.3.4-4] [MQTT-5:3.8.3-3] [MQTT-3.1.1:3.3.5-1]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_identifiers_no_local_and_overlaps() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let mut s = Peer::connect(addr, V5, "ids").await;
    s.subscribe_opts(
        &[("ov/+", SubscriptionOptions::qos(QoS::AtMostOnce))],
        Some(7),
    )
    .await;
    s.subscribe_opts(
        &[("ov/#", SubscriptionOptions::qos(QoS::AtLeastOnce))],
        Some(9),
    )
    .await;
    let mut p = Peer::connect(addr, V5, "p").await;
    p.publish("ov/x", "m", QoS::ExactlyOnce, false).await;
    // 5.0: one copy, the highest QoS, every matching identifier.
    let got = s.recv_publish().await;
    assert_eq!(got.qos, QoS::AtLeastOnce);
    let mut ids: Vec<u32> = got
        .properties
        .subscription_identifiers()
        .map(|i| i.get())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![7, 9]);
    s.expect_silence(Duration::from_millis(150)).await;

    // No Local: own messages are not echoed on that subscription.
    let nl = SubscriptionOptions {
        no_local: true,
        ..SubscriptionOptions::qos(QoS::AtLeastOnce)
    };
    s.subscribe_opts(&[("nl/t", nl)], None).await;
    s.publish("nl/t", "self", QoS::AtLeastOnce, false).await;
    s.expect_silence(Duration::from_millis(150)).await;
    p.publish("nl/t", "other", QoS::AtLeastOnce, false).await;
    assert_eq!(s.recv_publish().await.payload, Bytes::from_static(b"other"));

    // 3.1.1 overlap: once, with the maximum QoS [MQTT-3.3.5-1].
    let mut o = Peer::connect(addr, V311, "ov311").await;
    o.subscribe("x/+", QoS::AtMostOnce).await;
    o.subscribe("x/#", QoS::ExactlyOnce).await;
    o.subscribe("x/y", QoS::AtLeastOnce).await;
    p.publish("x/y", "once", QoS::ExactlyOnce, false).await;
    assert_eq!(o.recv_publish().await.qos, QoS::ExactlyOnce);
    o.expect_silence(Duration::from_millis(150)).await;
    broker.shutdown().await;
}

// Conformance: [MQTT-5:3.1.4-3] [MQTT-3.1.1:3.1.4-2] [MQTT-5:3.1.2-5]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_takeover() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let mut c = Connect::new(V5, "dup");
    c.properties.session_expiry_interval = Some(60);
    let (mut old, _) = Peer::connect_with(addr, c.clone()).await;
    old.subscribe("to/#", QoS::AtLeastOnce).await;
    c.clean_start = false;
    let (mut new, ack) = Peer::connect_with(addr, c).await;
    assert!(ack.session_present, "session handed over");
    old.expect_disconnect(ReasonCode::SESSION_TAKEN_OVER).await;
    let mut p = Peer::connect(addr, V5, "p").await;
    p.publish("to/x", "after", QoS::AtLeastOnce, false).await;
    assert_eq!(
        new.recv_publish().await.payload,
        Bytes::from_static(b"after")
    );
    // 3.1.1 takeover: the old connection is just closed.
    let (mut o3, _) = Peer::connect_with(addr, Connect::new(V311, "dup3")).await;
    let _n3 = Peer::connect(addr, V311, "dup3").await;
    o3.until_closed().await;
    broker.shutdown().await;
}

// A publish that found several subscribers' inboxes full waits for them at most
// `backpressure_timeout_ms` in all, not that long for each: the connection answers a
// takeover only once the publish is done, and the new connection waits for the answer only
// `close_timeout_ms + backpressure_timeout_ms` before it starts a new session. Waiting in
// turn for each stuck subscriber lost the session of a client that reconnected meanwhile,
// though Clean Start 0 resumes it [MQTT-5:3.1.2-5].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_blocked_by_many_stuck_subscribers_does_not_lose_its_session_on_takeover() {
    let mut config = test_config();
    config.limits.backpressure_timeout_ms = 1000;
    config.limits.close_timeout_ms = 1000;
    config.limits.inbox_capacity = 1;
    config.sessions.max_queued_messages = 1;
    let broker = start(config).await;
    let addr = broker.local_addr();
    // Subscribers that read nothing and allow one message in flight: one in flight, one in
    // the session's queue and one in the inbox fill them.
    let mut stuck = Vec::new();
    for n in 0..5 {
        let mut c = Connect::new(V5, format!("stuck{n}"));
        c.properties.receive_maximum = std::num::NonZeroU16::new(1);
        let (mut s, _) = Peer::connect_with(addr, c).await;
        s.subscribe("stall/#", QoS::AtLeastOnce).await;
        stuck.push(s);
    }
    let mut filler = Peer::connect(addr, V5, "filler").await;
    for n in 0..3 {
        filler
            .publish("stall/x", &n.to_string(), QoS::AtLeastOnce, false)
            .await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut c = Connect::new(V5, "blocked");
    c.properties.session_expiry_interval = Some(60);
    let (mut old, _) = Peer::connect_with(addr, c.clone()).await;
    old.subscribe("mine/#", QoS::AtLeastOnce).await;
    let publish = old.publish_packet("stall/x", "waits", QoS::AtLeastOnce, false);
    old.send(Packet::Publish(publish)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.clean_start = false;
    let (_new, ack) = Peer::connect_with(addr, c).await;
    assert!(ack.session_present, "the session was handed over");
    drop(stuck);
    broker.shutdown().await;
}

// Conformance: [MQTT-5:3.1.3-7] [MQTT-5:3.2.2-16]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_keepalive_and_assigned_client_id() {
    let mut config = test_config();
    config.limits.max_keepalive = 30;
    let broker = start(config).await;
    let addr = broker.local_addr();
    let mut c = Connect::new(V5, "");
    c.keep_alive = 600;
    let (_c, ack) = Peer::connect_with(addr, c).await;
    assert_eq!(ack.properties.server_keep_alive, Some(30));
    assert!(ack.properties.assigned_client_identifier.is_some());
    // 3.1.1 cannot be told: refused.
    let mut c = Connect::new(V311, "ka");
    c.keep_alive = 600;
    let (_c, ack) = Peer::connect_with(addr, c).await;
    assert!(!ack.reason_code.is_success());
    broker.shutdown().await;
}

/// Records the client identifier of every CONNECT the broker authenticates.
#[derive(Clone, Default)]
struct SeenIds(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl midge_broker::Hooks for SeenIds {
    fn authenticate(&self, request: &midge_broker::ConnectRequest<'_>) -> Result<(), ReasonCode> {
        self.0.lock().unwrap().push(request.client_id.to_owned());
        Ok(())
    }
}

/// The 128 bits an assigned identifier carries: `midge-` and 26 base32 characters.
fn assigned_bits(id: &str) -> u128 {
    let chars = id.strip_prefix("midge-").unwrap_or_else(|| panic!("{id}"));
    assert_eq!(
        chars.len(),
        26,
        "{id}: at least 96 bits' worth of characters"
    );
    chars.bytes().fold(0u128, |bits, c| {
        let value = b"abcdefghijklmnopqrstuvwxyz234567"
            .iter()
            .position(|&b| b == c)
            .unwrap_or_else(|| panic!("{id}: not base32"));
        (bits << 5) | value as u128
    })
}

// Conformance: [MQTT-5:3.1.3-6] [MQTT-3.1.1:3.1.3-6] [MQTT-3.1.1:3.1.3-8]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assigned_client_identifiers_cannot_be_guessed() {
    let seen = SeenIds::default();
    let broker = midge_broker::Broker::builder()
        .config(test_config())
        .hooks(seen.clone())
        .bind("127.0.0.1:0".parse().expect("addr"))
        .start()
        .await
        .expect("starts");
    let addr = broker.local_addr();
    // Consecutive connections, as an attacker would open them to learn the next identifier.
    let mut ids = Vec::new();
    for _ in 0..8 {
        let (_c, ack) = Peer::connect_with(addr, Connect::new(V5, "")).await;
        let id = ack.properties.assigned_client_identifier.expect("assigned");
        ids.push(id.as_str().to_owned());
    }
    // 3.1.1 with Clean Session 1 is assigned one too, which its CONNACK cannot carry.
    let (_c, ack) = Peer::connect_with(addr, Connect::new(V311, "")).await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    let v311 = seen
        .0
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("authenticated");
    ids.push(v311);
    assert_eq!(seen.0.lock().unwrap().as_slice(), ids.as_slice());
    // Random bits: any two identifiers differ in about half of their 128 bits. A counter or
    // a mix of one would make consecutive ones share structure; 24 or fewer differing bits
    // happen by chance with a probability below 10^-14 per pair.
    let bits: Vec<u128> = ids.iter().map(|id| assigned_bits(id)).collect();
    for (i, a) in bits.iter().enumerate() {
        for b in &bits[i + 1..] {
            let differing = (a ^ b).count_ones();
            assert!(differing > 24, "{ids:?}: only {differing} bits differ");
        }
    }
    // 3.1.1 without an identifier and with Clean Session 0 is still refused [MQTT-3.1.3-8].
    let mut c = Connect::new(V311, "");
    c.clean_start = false;
    let (_c, ack) = Peer::connect_with(addr, c).await;
    assert_eq!(ack.reason_code, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    broker.shutdown().await;
}

// Conformance: [MQTT-5:3.3.2-15] [MQTT-5:3.3.2-16] [MQTT-5:3.3.2-17] [MQTT-5:3.3.2-20]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_properties_and_request_response_pass_through() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let mut s = Peer::connect(addr, V5, "rr-s").await;
    s.subscribe("req", QoS::AtMostOnce).await;
    let mut p = Peer::connect(addr, V5, "rr-p").await;
    let mut m = p.publish_packet("req", "q", QoS::AtMostOnce, false);
    let props = &mut m.properties;
    props.set_response_topic(Some("resp".into())).unwrap();
    props
        .set_correlation_data(Some(Bytes::from_static(b"42")))
        .unwrap();
    props.set_content_type(Some("text/plain".into())).unwrap();
    props
        .set_user_properties(vec![("k".into(), "v".into())])
        .unwrap();
    p.publish_full(m).await;
    let got = s.recv_publish().await;
    assert_eq!(got.properties.response_topic(), Some("resp".into()));
    assert_eq!(
        got.properties.correlation_data(),
        Some(Bytes::from_static(b"42"))
    );
    assert_eq!(got.properties.content_type(), Some("text/plain".into()));
    assert_eq!(
        got.properties.user_properties().collect::<Vec<_>>(),
        vec![("k".into(), "v".into())]
    );
    broker.shutdown().await;
}

// Conformance: [MQTT-3.1.1:4.7.2-1]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_topics() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    broker.publish_sys();
    let mut s = Peer::connect(addr, V311, "sys").await;
    s.subscribe("$SYS/broker/#", QoS::AtMostOnce).await;
    let mut topics = Vec::new();
    while let Ok(p) = s.try_recv_publish(Duration::from_millis(300)).await {
        assert!(p.retain);
        topics.push(p.topic.as_str().to_owned());
    }
    for t in [
        "$SYS/broker/version",
        "$SYS/broker/uptime",
        "$SYS/broker/clients/connected",
        "$SYS/broker/clients/total",
        "$SYS/broker/messages/received",
        "$SYS/broker/messages/sent",
        "$SYS/broker/bytes/received",
        "$SYS/broker/bytes/sent",
        "$SYS/broker/subscriptions/count",
        "$SYS/broker/retained messages/count",
    ] {
        assert!(topics.iter().any(|x| x == t), "{t} missing from {topics:?}");
    }
    // `#` does not match `$SYS`.
    let mut all = Peer::connect(addr, V311, "all").await;
    all.subscribe("#", QoS::AtMostOnce).await;
    all.expect_silence(Duration::from_millis(150)).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_interval_publishes() {
    let mut config = test_config();
    config.sys.interval_secs = 1;
    let broker = start(config).await;
    let mut s = Peer::connect(broker.local_addr(), V311, "sys-i").await;
    s.subscribe("$SYS/broker/uptime", QoS::AtMostOnce).await;
    // The retained value on subscribe, then a live update within the interval.
    let _ = s.recv_publish().await;
    let live = s.recv_publish().await;
    assert!(!live.retain);
    broker.shutdown().await;
}

/// A client subscribed to `$SYS/#` (which matches `$SYS` itself too) and to `$SYSTEM/#`.
async fn sys_watcher(addr: std::net::SocketAddr) -> Peer {
    let mut watcher = Peer::connect(addr, V5, "sys-watcher").await;
    watcher.subscribe("$SYS/#", QoS::AtLeastOnce).await;
    watcher.subscribe("$SYSTEM/#", QoS::AtLeastOnce).await;
    watcher
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_may_not_publish_into_sys() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let mut watcher = sys_watcher(addr).await;
    // 5.0: QoS 1 and 2 are refused with 0x87 Not authorized, QoS 0 dropped.
    let mut c5 = Peer::connect(addr, V5, "spoof5").await;
    let code = c5
        .publish("$SYS/broker/clients/connected", "0", QoS::AtLeastOnce, true)
        .await;
    assert_eq!(code, ReasonCode::NOT_AUTHORIZED);
    let publish = c5.publish_packet("$SYS/broker/uptime", "0", QoS::ExactlyOnce, true);
    let id = publish.packet_id;
    c5.send(Packet::Publish(publish)).await;
    match c5.recv_packet().await {
        Packet::PubRec(ack) if ack.packet_id == id.unwrap() => {
            assert_eq!(ack.reason_code, ReasonCode::NOT_AUTHORIZED)
        }
        other => panic!("expected PUBREC, got {other:?}"),
    }
    c5.publish("$SYS", "0", QoS::AtMostOnce, true).await;
    // 3.1.1 cannot refuse: the publisher is acknowledged as usual, and the message dropped.
    let mut c3 = Peer::connect(addr, V311, "spoof3").await;
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let code = c3.publish("$SYS/broker/version", "fake", qos, true).await;
        assert_eq!(code, ReasonCode::SUCCESS);
    }
    // `$SYSTEM` is not `$SYS`: it goes through, and is the first thing the watcher gets.
    c3.publish("$SYSTEM/x", "fine", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(watcher.recv_publish().await.topic, "$SYSTEM/x");
    watcher.expect_silence(Duration::from_millis(150)).await;
    // Nothing was retained: a new subscriber gets nothing either.
    assert_eq!(broker.stats().retained_messages, 0);
    let mut late = Peer::connect(addr, V311, "sys-late").await;
    late.subscribe("$SYS/#", QoS::AtLeastOnce).await;
    late.expect_silence(Duration::from_millis(150)).await;
    assert_eq!(broker.stats().dropped_sys_publish, 5);
    // The broker itself still publishes there, through `$SYS` and through the handle.
    broker.publish_sys();
    let p = late.recv_publish().await;
    assert!(p.topic.as_str().starts_with("$SYS/broker/"), "{p:?}");
    let mut own = midge_proto::Message::new("$SYS/broker/custom", "1", QoS::AtMostOnce);
    own.retain = true;
    broker.publish(own);
    let mut topics = Vec::new();
    while let Ok(p) = watcher.try_recv_publish(Duration::from_millis(300)).await {
        topics.push(p.topic.as_str().to_owned());
    }
    assert!(
        topics.iter().any(|t| t == "$SYS/broker/custom"),
        "{topics:?}"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_into_sys_is_not_published() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let mut watcher = sys_watcher(addr).await;
    for (id, topic) in [("w-sys", "$SYS/broker/uptime"), ("w-ok", "$SYSTEM/will")] {
        let mut c = Connect::new(V5, id);
        let mut w = will(topic, "died", None);
        w.retain = true;
        c.will = Some(w);
        let (client, _) = Peer::connect_with(addr, c).await;
        // Closed without DISCONNECT: the will is due.
        drop(client);
    }
    assert_eq!(watcher.recv_publish().await.topic, "$SYSTEM/will");
    watcher.expect_silence(Duration::from_millis(150)).await;
    let stats = broker.stats();
    assert_eq!(stats.dropped_sys_publish, 1, "{stats:?}");
    assert_eq!(
        stats.retained_messages, 1,
        "only the will outside $SYS: {stats:?}"
    );
    broker.shutdown().await;
}

/// Lets the client `bridge` publish into `$SYS`.
struct SysBridge;

impl midge_broker::Hooks for SysBridge {
    fn authorize_sys_publish(
        &self,
        client: &midge_broker::ClientInfo,
        _message: &midge_proto::Message,
    ) -> Result<(), ReasonCode> {
        if client.client_id == "bridge" {
            Ok(())
        } else {
            Err(ReasonCode::NOT_AUTHORIZED)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_may_let_a_client_publish_into_sys() {
    let broker = midge_broker::Broker::builder()
        .config(test_config())
        .hooks(SysBridge)
        .bind("127.0.0.1:0".parse().expect("addr"))
        .start()
        .await
        .expect("starts");
    let addr = broker.local_addr();
    let mut watcher = sys_watcher(addr).await;
    let mut bridge = Peer::connect(addr, V5, "bridge").await;
    let code = bridge
        .publish("$SYS/remote/uptime", "9", QoS::AtLeastOnce, true)
        .await;
    assert_eq!(code, ReasonCode::SUCCESS);
    assert_eq!(watcher.recv_publish().await.topic, "$SYS/remote/uptime");
    let mut other = Peer::connect(addr, V5, "other").await;
    let code = other
        .publish("$SYS/remote/uptime", "0", QoS::AtLeastOnce, true)
        .await;
    assert_eq!(code, ReasonCode::NOT_AUTHORIZED);
    watcher.expect_silence(Duration::from_millis(150)).await;
    let stats = broker.stats();
    assert_eq!(stats.retained_messages, 1, "{stats:?}");
    assert_eq!(stats.dropped_sys_publish, 1, "{stats:?}");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_sends_0x8b() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let mut c5 = Peer::connect(addr, V5, "sd5").await;
    let mut c3 = Peer::connect(addr, V311, "sd3").await;
    let shutdown = tokio::spawn(broker.shutdown());
    c5.expect_disconnect(ReasonCode::SERVER_SHUTTING_DOWN).await;
    assert!(c3.until_closed().await.is_empty());
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown completes")
        .expect("no panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_authenticate_and_authorize() {
    use midge_broker::{ClientInfo, ConnectRequest, Hooks};
    struct Auth;
    impl Hooks for Auth {
        fn authenticate(&self, r: &ConnectRequest<'_>) -> Result<(), ReasonCode> {
            if r.username == Some("ok") {
                Ok(())
            } else {
                Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
            }
        }
        fn authorize_publish(
            &self,
            _: &ClientInfo,
            m: &midge_proto::Message,
        ) -> Result<(), ReasonCode> {
            if m.topic.as_str().starts_with("secret") {
                Err(ReasonCode::NOT_AUTHORIZED)
            } else {
                Ok(())
            }
        }
        fn authorize_subscribe(
            &self,
            _: &ClientInfo,
            f: &str,
            _: &SubscriptionOptions,
        ) -> Result<(), ReasonCode> {
            if f.starts_with("secret") {
                Err(ReasonCode::NOT_AUTHORIZED)
            } else {
                Ok(())
            }
        }
    }
    let broker = midge_broker::Broker::builder()
        .config(test_config())
        .hooks(Auth)
        .bind("127.0.0.1:0".parse().expect("addr"))
        .start()
        .await
        .expect("starts");
    let addr = broker.local_addr();
    let (_, ack) = Peer::connect_with(addr, Connect::new(V5, "nope")).await;
    assert_eq!(ack.reason_code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    let (_, ack) = Peer::connect_with(addr, Connect::new(V311, "nope")).await;
    assert_eq!(ack.reason_code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    let mut c = Connect::new(V5, "yes");
    c.username = Some("ok".into());
    let (mut c, ack) = Peer::connect_with(addr, c).await;
    assert!(ack.reason_code.is_success());
    let ack = c.subscribe("secret/#", QoS::AtLeastOnce).await;
    assert_eq!(ack.reason_codes, vec![ReasonCode::NOT_AUTHORIZED]);
    let code = c.publish("secret/x", "x", QoS::AtLeastOnce, false).await;
    assert_eq!(code, ReasonCode::NOT_AUTHORIZED);
    broker.shutdown().await;
}

/// A hook may call back into the broker: it runs under none of the broker's locks, also for
/// the second filter of a SUBSCRIBE whose first one was already granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_outside_the_index_lock() {
    use std::sync::{Arc, Mutex};

    use midge_broker::{BrokerHandle, ClientInfo, Hooks};
    struct Reentrant(Arc<Mutex<Option<BrokerHandle>>>);
    impl Hooks for Reentrant {
        fn authorize_subscribe(
            &self,
            _: &ClientInfo,
            f: &str,
            _: &SubscriptionOptions,
        ) -> Result<(), ReasonCode> {
            if let Some(broker) = self.0.lock().expect("not poisoned").as_ref() {
                // Routing reads the subscription index.
                broker.publish(midge_proto::Message::new(
                    "hooks/asked",
                    f.to_owned().into_bytes(),
                    QoS::AtMostOnce,
                ));
            }
            Ok(())
        }
    }
    let cell = Arc::new(Mutex::new(None));
    let broker = midge_broker::Broker::builder()
        .config(test_config())
        .hooks(Reentrant(cell.clone()))
        .bind("127.0.0.1:0".parse().expect("addr"))
        .start()
        .await
        .expect("starts");
    let addr = broker.local_addr();
    *cell.lock().expect("not poisoned") = Some(broker);
    let mut c = Peer::connect(addr, V5, "reentrant").await;
    let qos1 = SubscriptionOptions::qos(QoS::AtLeastOnce);
    let ack = tokio::time::timeout(
        Duration::from_secs(5),
        c.subscribe_opts(&[("hooks/asked", qos1), ("other/#", qos1)], None),
    )
    .await
    .expect("SUBACK, not a deadlock");
    assert_eq!(
        ack.reason_codes,
        vec![ReasonCode::GRANTED_QOS_1, ReasonCode::GRANTED_QOS_1]
    );
    let broker = cell.lock().expect("not poisoned").take().expect("set");
    broker.shutdown().await;
}

/// Counts, per member, the messages two shared-subscription members receive.
async fn shared_split(
    strategy: midge_broker::SharedStrategy,
    publishers: &[&str],
) -> (usize, usize) {
    let mut config = test_config();
    config.shared_subscriptions.strategy = strategy;
    let broker = start(config).await;
    let addr = broker.local_addr();
    let mut a = Peer::connect(addr, V5, "member-a").await;
    let mut b = Peer::connect(addr, V5, "member-b").await;
    a.subscribe("$share/g/work/#", QoS::AtLeastOnce).await;
    b.subscribe("$share/g/work/#", QoS::AtLeastOnce).await;
    for id in publishers {
        let mut p = Peer::connect(addr, V5, id).await;
        for i in 0..40 {
            p.publish("work/item", &i.to_string(), QoS::AtLeastOnce, false)
                .await;
        }
        p.disconnect().await;
    }
    let (mut got_a, mut got_b) = (0, 0);
    while a.try_recv_publish(Duration::from_millis(200)).await.is_ok() {
        got_a += 1;
    }
    while b.try_recv_publish(Duration::from_millis(200)).await.is_ok() {
        got_b += 1;
    }
    broker.shutdown().await;
    (got_a, got_b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscriptions_random_and_sticky_strategies() {
    // Random: every message goes to exactly one member, and both get some of 40.
    let (a, b) = shared_split(midge_broker::SharedStrategy::Random, &["p1"]).await;
    assert_eq!(a + b, 40);
    assert!(a > 0 && b > 0, "random spreads: {a}/{b}");
    // Sticky: one publisher's messages all go to one member, keeping their order together.
    let (a, b) = shared_split(midge_broker::SharedStrategy::Sticky, &["p1"]).await;
    assert_eq!(a + b, 40);
    assert!(
        a == 0 || b == 0,
        "sticky keeps one publisher on one member: {a}/{b}"
    );
}
