//! The admin view (`BrokerHandle::admin`): listings, kick, retained messages, metrics that
//! match a known workload exactly, and limits reloaded while the broker runs.

mod common;

use std::time::Duration;

use common::*;
use midge_codec::{QoS, ReasonCode};

/// Waits until `check` holds, for what the broker updates as connections go.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_are_listed_by_id_in_pages_with_their_subscriptions() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let admin = broker.admin();
    let mut peers = Vec::new();
    for id in ["c", "a", "e", "b", "d"] {
        peers.push(Peer::connect(addr, V5, id).await);
    }
    peers[1].subscribe("x/+", QoS::AtLeastOnce).await;
    peers[1].subscribe("$share/g/y/#", QoS::ExactlyOnce).await;
    peers[3].subscribe("x/+", QoS::AtMostOnce).await;

    let first = admin.clients(None, 2).expect("no cursor");
    assert_eq!(first.total, 5);
    let ids: Vec<_> = first.clients.iter().map(|c| c.client_id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(first.next.as_deref(), Some("b"));
    let second = admin.clients(first.next.as_deref(), 2).expect("valid");
    let ids: Vec<_> = second
        .clients
        .iter()
        .map(|c| c.client_id.as_str())
        .collect();
    assert_eq!(ids, ["c", "d"]);
    let last = admin.clients(second.next.as_deref(), 2).expect("valid");
    let ids: Vec<_> = last.clients.iter().map(|c| c.client_id.as_str()).collect();
    assert_eq!(ids, ["e"]);
    assert_eq!(last.next, None);

    let a = admin.client("a").expect("a is connected");
    assert_eq!(a.summary.protocol, "5.0");
    assert_eq!(a.summary.listener, 0);
    assert!(a.summary.address.starts_with("127.0.0.1:"));
    let subs: Vec<_> = a
        .subscriptions
        .iter()
        .map(|s| (s.filter.as_str(), s.share_group.as_deref(), s.qos))
        .collect();
    assert_eq!(subs, [("x/+", None, 1), ("y/#", Some("g"), 2)]);
    assert!(admin.client("nobody").is_none());

    let by_filter = admin.subscriptions(Some("x/+"), None, 10).expect("valid");
    let who: Vec<_> = by_filter
        .subscriptions
        .iter()
        .map(|s| s.client_id.as_str())
        .collect();
    assert_eq!(who, ["a", "b"]);
    let all = admin.subscriptions(None, None, 2).expect("valid");
    assert_eq!(all.subscriptions.len(), 2);
    let rest = admin
        .subscriptions(None, all.next.as_deref(), 10)
        .expect("valid");
    assert_eq!(rest.subscriptions.len(), 1);
    assert_eq!(rest.next, None);
    assert!(admin.subscriptions(Some("bad/#/x"), None, 10).is_err());
    assert!(
        admin.clients(Some("not a cursor"), 10).is_err(),
        "a cursor the API did not make"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kick_disconnects_a_5_0_client_with_administrative_action_and_a_3_1_1_one_plainly() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let admin = broker.admin();
    let mut v5 = Peer::connect(addr, V5, "five").await;
    let mut v311 = Peer::connect(addr, V311, "three").await;
    assert!(admin.kick("five"));
    v5.expect_disconnect(ReasonCode::ADMINISTRATIVE_ACTION)
        .await;
    assert!(admin.kick("three"));
    let rest = v311.until_closed().await;
    assert!(
        rest.is_empty(),
        "3.1.1 has no DISCONNECT from the server: {rest:?}"
    );
    assert!(!admin.kick("nobody"));
    eventually("both gone", || {
        admin.clients(None, 10).is_ok_and(|page| page.total == 0)
    })
    .await;
    let metrics = admin.metrics();
    let kicked = metrics
        .disconnects
        .iter()
        .find(|(reason, _)| *reason == "administrative_action")
        .map(|(_, n)| *n);
    assert_eq!(kicked, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_are_listed_by_topic_and_deleted() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let admin = broker.admin();
    let mut publisher = Peer::connect(addr, V5, "p").await;
    for topic in ["r/3", "r/1", "r/2", "other"] {
        publisher
            .publish(
                topic,
                &format!("payload of {topic}"),
                QoS::AtLeastOnce,
                true,
            )
            .await;
    }
    let page = admin.retained(Some("r/#"), None, 2).expect("valid");
    let topics: Vec<_> = page.topics.iter().map(|t| t.topic.as_str()).collect();
    assert_eq!(topics, ["r/1", "r/2"]);
    assert_eq!(page.topics[0].payload_preview, "payload of r/1");
    assert_eq!(page.topics[0].qos, 1);
    let rest = admin
        .retained(Some("r/#"), page.next.as_deref(), 2)
        .expect("valid");
    assert_eq!(rest.topics.len(), 1);
    assert_eq!(rest.next, None);
    assert_eq!(
        admin.retained(None, None, 10).expect("valid").topics.len(),
        4
    );
    assert!(admin.retained(Some("a/#/b"), None, 10).is_err());

    assert!(admin.delete_retained("r/2").expect("valid"));
    assert!(
        !admin.delete_retained("r/2").expect("valid"),
        "gone already"
    );
    assert!(admin.delete_retained("r/+").is_err(), "not a topic name");
    let mut late = Peer::connect(addr, V5, "late").await;
    late.subscribe("r/2", QoS::AtLeastOnce).await;
    assert!(late
        .try_recv_publish(Duration::from_millis(200))
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_workload_exactly() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let admin = broker.admin();
    let mut sub = Peer::connect(addr, V5, "sub").await;
    sub.subscribe("m/#", QoS::ExactlyOnce).await;
    let mut member = Peer::connect(addr, V5, "member").await;
    member.subscribe("$share/g/m/#", QoS::AtMostOnce).await;
    let mut publisher = Peer::connect(addr, V311, "pub").await;
    // 3 at QoS 0, 2 at QoS 1, 1 at QoS 2, with 10-byte payloads.
    for (qos, n) in [
        (QoS::AtMostOnce, 3),
        (QoS::AtLeastOnce, 2),
        (QoS::ExactlyOnce, 1),
    ] {
        for _ in 0..n {
            publisher.publish("m/x", "0123456789", qos, false).await;
        }
    }
    // Each message reaches `sub` at its own QoS, and `member` at QoS 0.
    for _ in 0..6 {
        sub.recv_publish().await;
        member.recv_publish().await;
    }
    let metrics = admin.metrics();
    assert_eq!(metrics.messages_in, [3, 2, 1]);
    assert_eq!(metrics.bytes_in, [30, 20, 10]);
    assert_eq!(metrics.messages_out, [3 + 6, 2, 1]);
    assert_eq!(metrics.bytes_out, [90, 20, 10]);
    // On the wire: every PUBLISH's payload and more (headers, acknowledgements, CONNACKs).
    assert!(
        metrics.stats.bytes_sent > 120,
        "{}",
        metrics.stats.bytes_sent
    );
    assert!(
        metrics.stats.bytes_received > 60,
        "{}",
        metrics.stats.bytes_received
    );
    assert_eq!(metrics.subscriptions, 2);
    assert_eq!(metrics.shared_subscriptions, 1);
    assert_eq!(metrics.sessions_online, 3);
    assert_eq!(metrics.delivery_latency.count, 12);
    assert!(metrics.delivery_latency.sum_seconds >= 0.0);
    let success = metrics
        .connects
        .iter()
        .find(|(name, _)| name == "success")
        .map(|(_, n)| *n);
    assert_eq!(success, Some(3));
    let protocols: Vec<_> = metrics
        .connections
        .iter()
        .map(|(listener, _, protocol, n)| (*listener, *protocol, *n))
        .collect();
    assert_eq!(protocols, [(0, "3.1.1", 1), (0, "5.0", 2)]);
    let name = &metrics.connections[0].1;
    assert_eq!(name, &format!("{addr} (mqtt)"), "named with the port bound");
    if cfg!(target_os = "linux") {
        let process = metrics.process.expect("linux has /proc");
        assert!(process.open_fds >= 2, "two client sockets at least");
    }

    // A refused CONNECT is counted by its reason.
    // [MQTT-3.1.3-8]: a 3.1.1 client without an identifier must ask for a clean session.
    let mut connect = midge_codec::Connect::new(V311, "");
    connect.clean_start = false;
    let (_, ack) = Peer::connect_with(addr, connect).await;
    assert_eq!(ack.reason_code, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    eventually("the refusal is counted", || {
        admin
            .metrics()
            .connects
            .iter()
            .any(|(name, n)| name == "client_identifier_not_valid" && *n == 1)
    })
    .await;
    publisher.disconnect().await;
    eventually("the publisher's DISCONNECT is counted", || {
        admin
            .metrics()
            .disconnects
            .iter()
            .any(|(reason, n)| *reason == "client_disconnect" && *n == 1)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_reload_live_and_other_keys_are_reported_as_needing_a_restart() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let mut config = test_config();
    // As the broker was started: on a free port.
    config.listeners[0].bind = midge_broker::BindAddr::Tcp("127.0.0.1:0".parse().expect("addr"));
    config.limits.max_connections = 1;
    config.limits.max_packet_size = 4096;
    let reload = broker.reload_config(&config).expect("valid");
    assert_eq!(reload.applied, ["limits.max_connections"]);
    assert_eq!(reload.needs_restart, ["limits.max_packet_size"]);
    let _first = Peer::connect(addr, V5, "first").await;
    let mut connect = midge_codec::Connect::new(V5, "second");
    connect.clean_start = true;
    let (_, ack) = Peer::connect_with(addr, connect).await;
    assert_eq!(
        ack.reason_code,
        ReasonCode::SERVER_BUSY,
        "the new limit holds"
    );

    config.limits.max_connections = 0;
    config.mqtt.maximum_qos = 7;
    assert!(
        broker.reload_config(&config).is_err(),
        "an invalid configuration changes nothing"
    );
    config.mqtt.maximum_qos = 2;
    config.limits.max_connections = 10;
    let reload = broker.reload_config(&config).expect("valid");
    assert_eq!(reload.applied, ["limits.max_connections"]);
    let (_, ack) = Peer::connect_with(addr, midge_codec::Connect::new(V5, "third")).await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
}

/// Lowering `max_retained_messages` below the count held refuses new topics, not updates of
/// the topics held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowering_max_retained_erases_topics_that_are_refreshed() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let admin = broker.admin();
    let mut p = Peer::connect(addr, V5, "p").await;
    for topic in ["r/1", "r/2"] {
        p.publish(topic, "v1", QoS::AtLeastOnce, true).await;
    }
    let mut config = test_config();
    config.listeners[0].bind = midge_broker::BindAddr::Tcp("127.0.0.1:0".parse().expect("addr"));
    config.limits.max_retained_messages = 1;
    broker.reload_config(&config).expect("valid");
    p.publish("r/1", "v2", QoS::AtLeastOnce, true).await;
    let topics: Vec<_> = admin
        .retained(None, None, 10)
        .expect("valid")
        .topics
        .into_iter()
        .map(|t| (t.topic, t.payload_preview))
        .collect();
    assert!(
        topics.contains(&("r/1".to_owned(), "v2".to_owned())),
        "r/1 refreshed, not erased: {topics:?}"
    );
}

/// `$share/g/x` is a topic name of its own, though as a filter it stands for `x`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_retained_of_a_share_like_topic() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let admin = broker.admin();
    let mut p = Peer::connect(addr, V5, "p").await;
    p.publish("x", "keep me", QoS::AtLeastOnce, true).await;
    let deleted = admin.delete_retained("$share/g/x");
    let left = admin.retained(None, None, 10).expect("valid").topics.len();
    assert!(matches!(deleted, Ok(false)), "no such topic: {deleted:?}");
    assert_eq!(left, 1, "x's message stays");
}
