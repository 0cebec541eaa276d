//! The `$SYS` tree under a known workload: the load averages, the client counts and the
//! store figures.
#![allow(missing_docs)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{start, test_config, V311};
use midge_codec::{Connect, QoS};
use midge_testkit::raw::Peer;

const N: usize = 50;

/// Every retained `$SYS/broker/...` topic with its value, as a new subscriber gets them.
async fn sys_values(addr: std::net::SocketAddr, id: &str) -> HashMap<String, String> {
    let mut watcher = Peer::connect(addr, V311, id).await;
    watcher.subscribe("$SYS/broker/#", QoS::AtMostOnce).await;
    let mut values = HashMap::new();
    while let Ok(p) = watcher.try_recv_publish(Duration::from_millis(300)).await {
        assert!(p.retain, "{p:?}");
        let value = String::from_utf8(p.payload.to_vec()).expect("utf-8");
        values.insert(p.topic.as_str().to_owned(), value);
    }
    watcher.disconnect().await;
    values
}

fn number(values: &HashMap<String, String>, topic: &str) -> f64 {
    let value = values
        .get(topic)
        .unwrap_or_else(|| panic!("no {topic} in {values:?}"));
    value
        .parse()
        .unwrap_or_else(|e| panic!("{topic} = {value:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_averages_and_store_counts_follow_a_known_workload() {
    let mut config = test_config();
    // The task publishes once at start, then not again during the test: the test publishes
    // with `publish_sys`.
    config.sys.interval_secs = 3600;
    let broker = start(config).await;
    let addr = broker.local_addr();
    let began = Instant::now();
    // The averages' starting point, before any client, whenever the task's first update
    // runs: before this one, or later (then it splits the first interval in two, which
    // gives the same averages).
    broker.publish_sys();

    // A persistent session, offline, that QoS 1 messages queue for.
    let mut connect = Connect::new(V311, "offline");
    connect.clean_start = false;
    let (mut offline, _) = Peer::connect_with(addr, connect).await;
    offline.subscribe("load/#", QoS::AtLeastOnce).await;
    offline.disconnect().await;
    let mut subscriber = Peer::connect(addr, V311, "online").await;
    subscriber.subscribe("load/#", QoS::AtMostOnce).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while broker.stats().clients_connected != 1 {
        assert!(Instant::now() < deadline, "{:?}", broker.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut publisher = Peer::connect(addr, V311, "publisher").await;
    for i in 0..N {
        publisher
            .publish(&format!("load/{i}"), "0123456789", QoS::AtLeastOnce, false)
            .await;
    }
    for _ in 0..N {
        subscriber.recv_publish().await;
    }
    let stats = broker.stats();
    broker.publish_sys();
    let elapsed = began.elapsed().as_secs_f64();
    let values = sys_values(addr, "watcher").await;

    // N messages in `elapsed` seconds (a few at most): per minute that is N·60/elapsed,
    // and the 1-minute average moves 1 - e^(-elapsed/60) of the way there from 0, which is
    // N·(60/elapsed)·(1 - e^(-elapsed/60)): just under N. The 5- and 15-minute averages
    // are just under N/5 and N/15.
    let expect = |window: f64| {
        let per_minute = N as f64 * 60.0 / elapsed;
        per_minute * (1.0 - (-elapsed / window).exp())
    };
    let n = N as f64;
    for (suffix, window, upper) in [
        ("1min", 60.0, n),
        ("5min", 300.0, n / 5.0),
        ("15min", 900.0, n / 15.0),
    ] {
        for topic in [
            "messages/received",
            "messages/sent",
            "publish/received",
            "publish/sent",
        ] {
            let topic = format!("$SYS/broker/load/{topic}/{suffix}");
            let value = number(&values, &topic);
            // Printed with two decimals; the elapsed time measured here brackets the
            // broker's.
            assert!(value <= upper + 0.01, "{topic} = {value}, over {upper}");
            assert!(
                (value - expect(window)).abs() < 0.05 * upper,
                "{topic} = {value}, expected about {} ({elapsed} s)",
                expect(window)
            );
        }
        // Each PUBLISH is at least 12 bytes (its topic and payload), with the same factor.
        let messages = number(
            &values,
            &format!("$SYS/broker/load/messages/received/{suffix}"),
        );
        let bytes = number(
            &values,
            &format!("$SYS/broker/load/bytes/received/{suffix}"),
        );
        assert!(
            bytes >= 12.0 * messages,
            "{bytes} bytes, {messages} messages"
        );
        assert!(number(&values, &format!("$SYS/broker/load/bytes/sent/{suffix}")) > 0.0);
        // Three sockets, three CONNECTs: "offline", "online" and "publisher" (the watcher
        // came later).
        for topic in ["sockets", "connections"] {
            let topic = format!("$SYS/broker/load/{topic}/{suffix}");
            let value = number(&values, &topic);
            let about = 3.0 * expect(window) / n;
            assert!(
                (value - about).abs() < 0.05 * 3.0 * upper / n + 0.01,
                "{topic} = {value}, expected about {about}"
            );
        }
    }

    // Counts at the update.
    assert_eq!(number(&values, "$SYS/broker/messages/received"), n);
    assert_eq!(number(&values, "$SYS/broker/publish/messages/received"), n);
    assert_eq!(number(&values, "$SYS/broker/messages/sent"), n);
    assert_eq!(number(&values, "$SYS/broker/clients/connected"), 2.0);
    assert_eq!(number(&values, "$SYS/broker/clients/active"), 2.0);
    assert_eq!(number(&values, "$SYS/broker/clients/disconnected"), 1.0);
    assert_eq!(number(&values, "$SYS/broker/clients/inactive"), 1.0);
    assert_eq!(number(&values, "$SYS/broker/clients/total"), 3.0);
    assert_eq!(number(&values, "$SYS/broker/clients/maximum"), 2.0);
    assert_eq!(number(&values, "$SYS/broker/subscriptions/count"), 2.0);
    // The offline session's queue: the N QoS 1 messages.
    let count = number(&values, "$SYS/broker/store/messages/count");
    assert_eq!(count, n);
    assert_eq!(count, stats.queued_messages as f64);
    assert_eq!(number(&values, "$SYS/broker/messages/stored"), count);
    let bytes = number(&values, "$SYS/broker/store/messages/bytes");
    assert_eq!(bytes, stats.queued_bytes as f64);
    assert!(bytes >= n * 10.0, "{bytes}");
    assert_eq!(number(&values, "$SYS/broker/publish/messages/dropped"), 0.0);
    if cfg!(target_os = "linux") {
        let rss = number(&values, "$SYS/broker/heap/current");
        assert!(rss > 1_000_000.0, "{rss}");
    }
    broker.shutdown().await;
}
