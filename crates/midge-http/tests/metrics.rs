//! `/metrics` after a known workload, parsed by the reference Prometheus text-format parser
//! (Python's `prometheus_client`), with every figure checked against the workload.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use midge_client::{PublishOptions, QoS, SubscribeOptions};

/// Prints one JSON object per sample: family, type, help, sample name, labels, value.
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        print(json.dumps({"family": family.name, "type": family.type, "help": family.documentation,
                          "name": sample.name, "labels": sample.labels, "value": sample.value}))
"#;

fn parser_installed() -> bool {
    midge_testkit::peers::succeeds("python3", &["-c", "import prometheus_client.parser"])
}

#[derive(Debug)]
struct Sample {
    family: String,
    kind: String,
    help: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Samples by name.
fn parse(text: &str) -> BTreeMap<String, Vec<Sample>> {
    let mut child = Command::new("python3")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("writes the metrics");
    let output = child.wait_with_output().expect("python3 ends");
    assert!(
        output.status.success(),
        "the Prometheus parser refused the metrics: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut samples: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let json: serde_json::Value = serde_json::from_str(line).expect("JSON");
        let labels = json["labels"]
            .as_object()
            .expect("labels")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("label value").to_owned()))
            .collect();
        samples
            .entry(json["name"].as_str().expect("name").to_owned())
            .or_default()
            .push(Sample {
                family: json["family"].as_str().expect("family").to_owned(),
                kind: json["type"].as_str().expect("type").to_owned(),
                help: json["help"].as_str().expect("help").to_owned(),
                labels,
                value: json["value"].as_f64().expect("value"),
            });
    }
    samples
}

/// The value of the sample `name` whose labels include `labels`; 0 when there is none with
/// them (a counter that never counted may be left out).
fn value(samples: &BTreeMap<String, Vec<Sample>>, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .get(name)
        .into_iter()
        .flatten()
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

fn kind(samples: &BTreeMap<String, Vec<Sample>>, name: &str) -> (String, String) {
    let sample = samples
        .get(name)
        .and_then(|s| s.first())
        .unwrap_or_else(|| panic!("no {name} in the metrics"));
    (sample.kind.clone(), sample.family.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_workload_exactly() {
    if !midge_testkit::peers::require("python3 prometheus_client", parser_installed()) {
        return;
    }
    let setup = start_default(Some(TOKEN)).await;
    let mqtt = setup.mqtt();

    // The workload: one subscriber (QoS 1 on w/#, QoS 0 on a shared subscription), one
    // publisher sending 3 QoS 0, 2 QoS 1 and 1 QoS 2 messages, one of them retained.
    let subscriber = client(mqtt, "subscriber").await;
    let (_, mut messages) = subscriber
        .subscribe("w/#", SubscribeOptions::with_qos(QoS::AtLeastOnce))
        .await
        .expect("subscribes");
    let (_, _shared) = subscriber
        .subscribe(
            "$share/g/other/#",
            SubscribeOptions::with_qos(QoS::AtMostOnce),
        )
        .await
        .expect("subscribes");
    let publisher = client(mqtt, "publisher").await;
    for qos in [
        QoS::AtMostOnce,
        QoS::AtMostOnce,
        QoS::AtMostOnce,
        QoS::AtLeastOnce,
        QoS::AtLeastOnce,
    ] {
        publisher
            .publish("w/x", "hello", PublishOptions::with_qos(qos))
            .await
            .expect("publishes");
    }
    publisher
        .publish(
            "w/retained",
            "kept",
            PublishOptions::with_qos(QoS::ExactlyOnce).retain(true),
        )
        .await
        .expect("publishes");
    for _ in 0..6 {
        tokio::time::timeout(WAIT, messages.recv())
            .await
            .expect("the subscriber gets every message in time")
            .expect("a message");
    }

    let answer = request(setup.addr(), hyper::Method::GET, "/metrics", None, None).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let samples = parse(&answer.body);

    // Every family has its help text.
    for sample in samples.values().flatten() {
        assert!(!sample.help.is_empty(), "{} has no HELP", sample.family);
    }
    for (name, expected) in [
        ("midge_connections", "gauge"),
        ("midge_connects_total", "counter"),
        ("midge_sessions", "gauge"),
        ("midge_subscriptions", "gauge"),
        ("midge_shared_subscriptions", "gauge"),
        ("midge_retained_messages", "gauge"),
        ("midge_messages_received_total", "counter"),
        ("midge_messages_sent_total", "counter"),
        ("midge_bytes_received_total", "counter"),
        ("midge_bytes_sent_total", "counter"),
        ("midge_queued_messages", "gauge"),
        ("midge_queued_bytes", "gauge"),
        ("midge_inflight_messages", "gauge"),
        ("midge_auth_failures_total", "counter"),
        ("midge_delivery_latency_seconds_count", "histogram"),
    ] {
        assert_eq!(kind(&samples, name).0, expected, "the type of {name}");
    }
    if cfg!(target_os = "linux") {
        assert!(value(&samples, "process_resident_memory_bytes", &[]) > 0.0);
        assert!(value(&samples, "process_open_fds", &[]) > 0.0);
    }

    // Exactly the workload.
    let v = |name: &str, labels: &[(&str, &str)]| value(&samples, name, labels);
    assert_eq!(v("midge_connections", &[]), 2.0);
    assert_eq!(v("midge_connections", &[("protocol", "5.0")]), 2.0);
    assert_eq!(v("midge_connects_total", &[("result", "success")]), 2.0);
    assert_eq!(v("midge_connects_total", &[]), 2.0);
    assert_eq!(v("midge_disconnects_total", &[]), 0.0);
    assert_eq!(v("midge_sessions", &[("state", "online")]), 2.0);
    assert_eq!(v("midge_sessions", &[("state", "offline")]), 0.0);
    assert_eq!(v("midge_subscriptions", &[]), 2.0);
    assert_eq!(v("midge_shared_subscriptions", &[]), 1.0);
    assert_eq!(v("midge_retained_messages", &[]), 1.0);
    assert_eq!(v("midge_messages_received_total", &[("qos", "0")]), 3.0);
    assert_eq!(v("midge_messages_received_total", &[("qos", "1")]), 2.0);
    assert_eq!(v("midge_messages_received_total", &[("qos", "2")]), 1.0);
    // Delivered at the subscription's QoS 1 at most.
    assert_eq!(v("midge_messages_sent_total", &[("qos", "0")]), 3.0);
    assert_eq!(v("midge_messages_sent_total", &[("qos", "1")]), 3.0);
    assert_eq!(v("midge_messages_sent_total", &[("qos", "2")]), 0.0);
    for qos in ["0", "1", "2"] {
        assert!(v("midge_bytes_received_total", &[("qos", qos)]) > 0.0);
    }
    assert_eq!(v("midge_bytes_sent_total", &[("qos", "2")]), 0.0);
    assert_eq!(v("midge_dropped_messages_total", &[]), 0.0);
    assert_eq!(v("midge_auth_failures_total", &[]), 0.0);
    assert_eq!(v("midge_queued_messages", &[]), 0.0);
    // The histogram: cumulative buckets up to +Inf, which is the count.
    let count = v("midge_delivery_latency_seconds_count", &[]);
    assert_eq!(
        v("midge_delivery_latency_seconds_bucket", &[("le", "+Inf")]),
        count
    );
    let mut previous = 0.0;
    for bucket in &samples["midge_delivery_latency_seconds_bucket"] {
        assert!(bucket.value >= previous, "buckets are cumulative");
        previous = bucket.value;
    }
    assert_eq!(count, 6.0, "one latency per delivery");

    // A disconnect counts, and its connection is gone.
    publisher
        .disconnect(midge_client::ReasonCode::SUCCESS)
        .await;
    eventually("the disconnect is counted", || async {
        let samples = parse(&get(setup.addr(), "/metrics").await.body);
        value(&samples, "midge_disconnects_total", &[]) == 1.0
            && value(&samples, "midge_connections", &[]) == 1.0
    })
    .await;
    drop(subscriber);
    setup.stop().await;
}

/// The line of a broker that has accepted no CONNECT yet.
const NO_CONNECTS: &str = "midge_connects_total{result=\"success\"} 0";

/// Scrapes are cheap to send and the text is dear to make (it visits every connection and
/// session): concurrent scrapes and those within `metrics_interval` share one rendering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_within_the_interval_share_one_rendering() {
    let mut limits = midge_http::HttpLimits::default();
    limits.metrics_interval = std::time::Duration::from_secs(3600);
    let setup = start(http_config(Some(TOKEN)), limits).await;
    let addr = setup.addr();
    let scrapes: Vec<_> = (0..32)
        .map(|_| {
            tokio::spawn(
                async move { request(addr, hyper::Method::GET, "/metrics", None, None).await },
            )
        })
        .collect();
    let mut bodies = Vec::new();
    for scrape in scrapes {
        let answer = scrape.await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
        bodies.push(answer.body);
    }
    assert_eq!(
        setup.http.metrics_renders(),
        1,
        "one rendering for every scrape"
    );
    assert!(bodies.iter().all(|body| *body == bodies[0]));
    assert!(bodies[0].contains(NO_CONNECTS), "{}", bodies[0]);
    // The figures change; within the interval the text does not.
    let c = client(setup.mqtt(), "changes-the-figures").await;
    let again = request(addr, hyper::Method::GET, "/metrics", None, None).await;
    assert_eq!(again.body, bodies[0]);
    assert_eq!(setup.http.metrics_renders(), 1);
    drop(c);
    setup.stop().await;
}

/// Past the interval, a scrape renders the figures anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_after_the_interval_sees_new_figures() {
    let mut limits = midge_http::HttpLimits::default();
    limits.metrics_interval = std::time::Duration::from_millis(100);
    let setup = start(http_config(Some(TOKEN)), limits).await;
    let addr = setup.addr();
    let before = request(addr, hyper::Method::GET, "/metrics", None, None).await;
    assert!(before.body.contains(NO_CONNECTS), "{}", before.body);
    let c = client(setup.mqtt(), "changes-the-figures").await;
    eventually("a later scrape counts the connect", || async {
        let after = request(addr, hyper::Method::GET, "/metrics", None, None).await;
        after
            .body
            .contains("midge_connects_total{result=\"success\"} 1")
    })
    .await;
    assert!(setup.http.metrics_renders() >= 2);
    drop(c);
    setup.stop().await;
}

/// A bridge's state and counters in `/metrics` and `/api/v1/bridges`: down while its remote
/// is not there, up once it is, with what it forwarded counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridges_show_in_the_metrics_and_the_api() {
    if !midge_testkit::peers::require("python3 prometheus_client", parser_installed()) {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let mut config = test_config();
    let mut bridge = midge_broker::BridgeConfig::default();
    bridge.name = "up-link".into();
    bridge.address = vec![port.to_string()];
    bridge.protocol_version = midge_broker::BridgeProtocol::V5;
    bridge.reconnect_delay_ms = 50;
    bridge.reconnect_delay_max_ms = 200;
    let mut topic = midge_broker::BridgeTopic::default();
    topic.pattern = "out/#".into();
    topic.qos = 1;
    bridge.topics = vec![topic];
    config.bridges = vec![bridge];
    let broker = midge_broker::Broker::builder()
        .config(config)
        .bind("127.0.0.1:0".parse().expect("address"))
        .start()
        .await
        .expect("broker starts");
    let http = midge_http::serve_with_limits(
        broker.admin(),
        &http_config(Some(TOKEN)),
        midge_http::HttpLimits::default(),
    )
    .expect("HTTP starts");
    let scrape = || async {
        // Past the one-second cache of the metrics.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let answer = request(
            http.local_addr(),
            hyper::Method::GET,
            "/metrics",
            None,
            None,
        )
        .await;
        parse(&answer.body)
    };
    let samples = scrape().await;
    assert_eq!(kind(&samples, "midge_bridge_up").0, "gauge");
    assert_eq!(
        value(&samples, "midge_bridge_up", &[("bridge", "up-link")]),
        0.0
    );
    let answer = request(
        http.local_addr(),
        hyper::Method::GET,
        "/api/v1/bridges",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(answer.status, 200);
    let bridges = answer.json()["bridges"].clone();
    assert_eq!(bridges[0]["name"], "up-link");
    assert_eq!(bridges[0]["connected"], false);

    // The remote comes up where the bridge looks for it.
    let remote = midge_broker::Broker::builder()
        .config(test_config())
        .bind(port)
        .start()
        .await
        .expect("remote starts");
    let admin = broker.admin();
    eventually("the bridge connects", || {
        let admin = admin.clone();
        async move { admin.bridges()[0].connected }
    })
    .await;
    let at_remote = client(remote.local_addr(), "at-remote").await;
    let (_, mut out) = at_remote
        .subscribe("out/#", SubscribeOptions::with_qos(QoS::AtLeastOnce))
        .await
        .expect("subscribes");
    let local = client(broker.local_addr(), "local").await;
    // The bridge's subscription at the remote is made as it connects: publish until one
    // arrives, then count.
    let mut sent = 0;
    loop {
        local
            .publish("out/x", "1", PublishOptions::with_qos(QoS::AtLeastOnce))
            .await
            .expect("publishes");
        sent += 1;
        if tokio::time::timeout(std::time::Duration::from_millis(200), out.recv())
            .await
            .is_ok()
        {
            break;
        }
        assert!(sent < 50, "nothing crossed the bridge");
    }
    // Counted once the remote's PUBACK is back, which may be after the delivery.
    eventually("the forwarded message is counted", || {
        let admin = admin.clone();
        async move { admin.bridges()[0].forwarded_out >= 1 }
    })
    .await;
    let samples = scrape().await;
    assert_eq!(
        value(&samples, "midge_bridge_up", &[("bridge", "up-link")]),
        1.0
    );
    assert!(
        value(
            &samples,
            "midge_bridge_forwarded_out_total",
            &[("bridge", "up-link")]
        ) >= 1.0
    );
    assert!(
        value(
            &samples,
            "midge_bridge_connections_total",
            &[("bridge", "up-link")]
        ) >= 1.0
    );
    http.shutdown().await;
    broker.shutdown().await;
    remote.shutdown().await;
}
