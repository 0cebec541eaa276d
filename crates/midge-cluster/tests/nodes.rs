//! Three midge nodes on one real nats-server (with JetStream), and on a three-server NATS
//! cluster (routes, the bucket replicated three times): messages across nodes at every
//! QoS, retained messages from every node, once per session whatever the overlap of filters,
//! and NATS interest that follows the local subscriptions. nats-server missing: skipped
//! loudly, a failure under `MIDGE_REQUIRE_PEERS=1`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use midge_broker::config::ClusterConfig;
use midge_broker::{Broker, BrokerConfig, BrokerHandle, Secret};
use midge_client::{Client, PublishOptions, QoS, ReasonCode, SubscribeOptions, Subscription};
use midge_cluster::{ClusterError, Node, Running};

const WAIT: Duration = Duration::from_secs(20);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A nats-server with JetStream on loopback, killed (and its directory removed) on drop.
struct NatsServer {
    child: Child,
    port: u16,
    monitor: u16,
    dir: PathBuf,
    /// Its cluster options, if it is one of a NATS cluster.
    extra: Vec<String>,
}

impl NatsServer {
    /// `None` (after a loud skip) when nats-server is not installed.
    fn start() -> Option<Self> {
        let installed = midge_testkit::peers::installed("nats-server", &["--version"]);
        if !midge_testkit::peers::require("nats-server", installed) {
            return None;
        }
        let (port, monitor) = (free_port(), free_port());
        let dir =
            std::env::temp_dir().join(format!("midge-cluster-test-{}-{port}", std::process::id()));
        let child = Self::spawn(port, monitor, &dir, &[]);
        Some(Self {
            child,
            port,
            monitor,
            dir,
            extra: Vec::new(),
        })
    }

    /// Three servers in a NATS cluster (routes between them, JetStream replicated); `None`
    /// (after a loud skip) when nats-server is not installed.
    fn start_cluster() -> Option<Vec<Self>> {
        let installed = midge_testkit::peers::installed("nats-server", &["--version"]);
        if !midge_testkit::peers::require("nats-server", installed) {
            return None;
        }
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let all_routes = routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let servers = (0..3)
            .map(|i| {
                let (port, monitor) = (free_port(), free_port());
                let dir = std::env::temp_dir()
                    .join(format!("midge-cluster-test-{}-{port}", std::process::id()));
                let extra = vec![
                    "-n".to_owned(),
                    format!("n{i}"),
                    "--cluster_name".to_owned(),
                    "midge-test".to_owned(),
                    "--cluster".to_owned(),
                    format!("nats://127.0.0.1:{}", routes[i]),
                    "--routes".to_owned(),
                    all_routes.clone(),
                ];
                let child = Self::spawn(port, monitor, &dir, &extra);
                Self {
                    child,
                    port,
                    monitor,
                    dir,
                    extra,
                }
            })
            .collect();
        Some(servers)
    }

    fn spawn(port: u16, monitor: u16, dir: &std::path::Path, extra: &[String]) -> Child {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["-m", &monitor.to_string(), "-js", "-sd"])
            .arg(dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server does not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    /// Kills the server (as `kill -9` would).
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port, with the same JetStream directory.
    fn restart(&mut self) {
        self.child = Self::spawn(self.port, self.monitor, &self.dir, &self.extra);
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The subjects the connection named `name` subscribes to, as the server sees them.
    fn subscriptions_of(&self, name: &str) -> Vec<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.monitor)).expect("monitor");
        write!(
            stream,
            "GET /connz?subs=1 HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
        )
        .expect("request");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("answer");
        let body = answer.split_once("\r\n\r\n").expect("a body").1;
        let connz: serde_json::Value = serde_json::from_str(body).expect("JSON");
        let mut subjects: Vec<String> = connz["connections"]
            .as_array()
            .expect("connections")
            .iter()
            .filter(|c| c["name"] == name)
            .flat_map(|c| {
                c["subscriptions_list"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|s| s.as_str().map(str::to_owned))
            // The JetStream watch of retained messages and replies: not routing.
            .filter(|s| s.starts_with("midge.msg."))
            .collect();
        subjects.sort();
        subjects
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct MidgeNode {
    broker: BrokerHandle,
    running: Running,
}

impl MidgeNode {
    async fn start(nats: &str, id: &str) -> Self {
        Self::start_with(nats, id, 1).await
    }

    async fn start_with(nats: &str, id: &str, replicas: usize) -> Self {
        let mut config = BrokerConfig::default();
        config.sys.interval_secs = 0;
        let mut cluster = ClusterConfig::new(vec![nats.to_owned()], id);
        cluster.kv_replicas = replicas;
        config.cluster = Some(cluster);
        let cluster = config.cluster.as_ref().unwrap();
        // A NATS cluster's JetStream answers once it has elected a leader: seconds.
        let deadline = Instant::now() + WAIT;
        let node = loop {
            match Node::connect(cluster).await {
                Ok(node) => break node,
                Err(err @ ClusterError::JetStream { .. }) if Instant::now() < deadline => {
                    eprintln!("retrying: {err}");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(err) => panic!("the node does not join: {err}"),
            }
        };
        let broker = Broker::builder()
            .config(config)
            .cluster(node.cluster())
            .bind("127.0.0.1:0".parse().unwrap())
            .start()
            .await
            .expect("the broker starts");
        let running = node.attach(&broker);
        Self { broker, running }
    }

    fn addr(&self) -> SocketAddr {
        self.broker.local_addr()
    }

    async fn client(&self, id: &str) -> Client {
        let addr = self.addr();
        Client::builder(addr.ip().to_string(), addr.port())
            .client_id(id)
            .connect()
            .await
            .expect("the client connects")
    }

    async fn stop(self) {
        self.running.shutdown().await;
        self.broker.shutdown().await;
    }
}

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Waits until `check` holds.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    within(what, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Subscribes, and waits until the node's NATS subscriptions are at least `nats`.
async fn subscribe(
    client: &Client,
    node: &MidgeNode,
    filter: &str,
    qos: QoS,
    nats: u64,
) -> Subscription {
    let (code, subscription) = client
        .subscribe(filter, SubscribeOptions::with_qos(qos))
        .await
        .expect("subscribed");
    assert_eq!(code.0, qos as u8, "{filter}");
    let stats = node.running.stats();
    until("the NATS subscriptions", || {
        stats.nats_subscriptions.load(Relaxed) >= nats
    })
    .await;
    subscription
}

/// Publishes `topic` until each of `subscriptions` has a message (in a NATS cluster, interest
/// reaches the other servers shortly after the subscription), then drains them.
async fn warm_up(publisher: &Client, topic: &str, subscriptions: &mut [&mut Subscription]) {
    let deadline = Instant::now() + WAIT;
    for subscription in subscriptions.iter_mut() {
        loop {
            assert!(Instant::now() < deadline, "{topic} does not arrive");
            publisher
                .publish(topic, "warm-up", PublishOptions::with_qos(QoS::AtMostOnce))
                .await
                .expect("published");
            if let Ok(message) =
                tokio::time::timeout(Duration::from_millis(100), subscription.recv()).await
            {
                assert_eq!(message.expect("a message").payload().as_ref(), b"warm-up");
                break;
            }
        }
    }
    for subscription in subscriptions {
        while let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_millis(300), subscription.recv()).await
        {
            assert_eq!(message.payload().as_ref(), b"warm-up");
        }
    }
}

/// Nothing more comes to `subscription` within a while.
async fn nothing_more(subscription: &mut Subscription, what: &str) {
    if let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(400), subscription.recv()).await
    {
        panic!(
            "{what}: another copy of {:?}",
            String::from_utf8_lossy(message.payload())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_one_nats_server() {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    three_nodes(&[nats], 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_a_three_server_nats_cluster() {
    let Some(servers) = NatsServer::start_cluster() else {
        return;
    };
    three_nodes(&servers, 3).await;
}

/// Three nodes, the first on the first server, the second on the second (or the first), …
async fn three_nodes(servers: &[NatsServer], replicas: usize) {
    let server = |i: usize| &servers[i % servers.len()];
    let a = MidgeNode::start_with(&server(0).url(), "a", replicas).await;
    let b = MidgeNode::start_with(&server(1).url(), "b", replicas).await;
    let c = MidgeNode::start_with(&server(2).url(), "c", replicas).await;

    // Across nodes at each QoS: published on a, received on b and c at that QoS.
    let publisher = a.client("pub").await;
    let on_b = b.client("sub-b").await;
    let on_c = c.client("sub-c").await;
    let mut sub_b = subscribe(&on_b, &b, "q/+", QoS::ExactlyOnce, 1).await;
    let mut sub_c = subscribe(&on_c, &c, "q/#", QoS::ExactlyOnce, 2).await;
    warm_up(&publisher, "q/warm", &mut [&mut sub_b, &mut sub_c]).await;
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let payload = format!("qos {}", qos as u8);
        let code = publisher
            .publish("q/x", payload.clone(), PublishOptions::with_qos(qos))
            .await
            .expect("published");
        // No subscriber on a itself: the node cannot know of the others' (5.0: 0x10).
        assert!(
            code == ReasonCode::SUCCESS || code == ReasonCode::NO_MATCHING_SUBSCRIBERS,
            "{code:?}"
        );
        for (name, sub) in [("b", &mut sub_b), ("c", &mut sub_c)] {
            let message = within("a message across nodes", sub.recv())
                .await
                .expect("a message");
            assert_eq!(message.topic(), "q/x", "{name}");
            assert_eq!(message.payload().as_ref(), payload.as_bytes(), "{name}");
            assert_eq!(message.qos(), qos, "{name}");
        }
    }
    // `q/#` matches `q` itself on c (MQTT's parent rule, a second NATS subscription); `q/+`
    // on b does not.
    publisher
        .publish("q", "parent", PublishOptions::with_qos(QoS::AtLeastOnce))
        .await
        .expect("published");
    let message = within("q on c", sub_c.recv()).await.expect("a message");
    assert_eq!(message.payload().as_ref(), b"parent");
    nothing_more(&mut sub_b, "q/+ does not match q").await;
    assert_eq!(
        server(2).subscriptions_of("midge c"),
        ["midge.msg.t.q", "midge.msg.t.q.>"]
    );

    // Topics with what NATS treats differently arrive as they were sent.
    let odd = ["q/a.b", "q/*", "q/>", "q/a b", "q/é", "q/", "q/$x", "q/=2E"];
    for topic in odd {
        publisher
            .publish(topic, topic, PublishOptions::with_qos(QoS::AtLeastOnce))
            .await
            .expect("published");
    }
    for topic in odd {
        let message = within("an odd topic", sub_c.recv())
            .await
            .expect("a message");
        assert_eq!(message.topic(), topic);
        assert_eq!(message.payload().as_ref(), topic.as_bytes());
    }
    // `q/+` matches them all too (`q/` has an empty second level).
    for topic in odd {
        let message = within("an odd topic on b", sub_b.recv())
            .await
            .expect("a message");
        assert_eq!(message.topic(), topic);
    }

    // A topic whose subject would be too long for NATS stays on its node, counted; the
    // connection to NATS is not harmed.
    let long = format!("q/{}", ".".repeat(2000));
    let errors = a.running.stats().publish_errors.load(Relaxed);
    publisher
        .publish(
            long.as_str(),
            "long",
            PublishOptions::with_qos(QoS::AtLeastOnce),
        )
        .await
        .expect("published");
    publisher
        .publish(
            "q/short",
            "short",
            PublishOptions::with_qos(QoS::AtLeastOnce),
        )
        .await
        .expect("published");
    let message = within("after the long topic", sub_c.recv())
        .await
        .expect("a message");
    assert_eq!(message.topic(), "q/short");
    assert_eq!(a.running.stats().publish_errors.load(Relaxed), errors + 1);
    assert_eq!(a.running.stats().disconnects.load(Relaxed), 0);
    let message = within("after the long topic", sub_b.recv())
        .await
        .expect("a message");
    assert_eq!(message.topic(), "q/short");

    // Retained messages published on each node are seen from every node, by subscribers
    // that come later; an empty retained payload deletes them everywhere.
    for (node, name) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        let client = node.client(&format!("retainer-{name}")).await;
        client
            .publish(
                format!("r/{name}"),
                format!("kept by {name}"),
                PublishOptions::with_qos(QoS::AtLeastOnce).retain(true),
            )
            .await
            .expect("published");
    }
    for (node, name) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        let stats = node.running.stats();
        // Each node has applied the three messages from the bucket (and its own, again).
        until("the retained messages in the bucket", || {
            stats.retained_applied.load(Relaxed) >= 3
        })
        .await;
        let client = node.client(&format!("reader-{name}")).await;
        let (_, mut sub) = client
            .subscribe("r/+", SubscribeOptions::with_qos(QoS::AtLeastOnce))
            .await
            .expect("subscribed");
        let mut seen = Vec::new();
        for _ in 0..3 {
            let message = within("a retained message", sub.recv())
                .await
                .expect("a message");
            assert!(message.retain(), "on {name}");
            seen.push(String::from_utf8_lossy(message.payload()).into_owned());
        }
        seen.sort();
        assert_eq!(seen, ["kept by a", "kept by b", "kept by c"], "on {name}");
        nothing_more(&mut sub, "retained").await;
        client.disconnect(ReasonCode::SUCCESS).await;
    }
    let deleter = b.client("deleter").await;
    deleter
        .publish(
            "r/a",
            "",
            PublishOptions::with_qos(QoS::AtLeastOnce).retain(true),
        )
        .await
        .expect("published");
    let stats = c.running.stats();
    until("the deletion in the bucket", || {
        stats.retained_applied.load(Relaxed) >= 4
    })
    .await;
    let late = c.client("late").await;
    let (_, mut sub) = late
        .subscribe("r/+", SubscribeOptions::with_qos(QoS::AtLeastOnce))
        .await
        .expect("subscribed");
    let mut seen = Vec::new();
    for _ in 0..2 {
        let message = within("a retained message", sub.recv())
            .await
            .expect("a message");
        seen.push(String::from_utf8_lossy(message.payload()).into_owned());
    }
    seen.sort();
    assert_eq!(seen, ["kept by b", "kept by c"]);
    nothing_more(&mut sub, "after the deletion").await;

    // A node started later reads the bucket: the retained messages are there at once.
    let d = MidgeNode::start_with(&server(3).url(), "d", replicas).await;
    let client = d.client("reader-d").await;
    let (_, mut sub) = client
        .subscribe("r/+", SubscribeOptions::with_qos(QoS::AtLeastOnce))
        .await
        .expect("subscribed");
    let mut seen = Vec::new();
    for _ in 0..2 {
        let message = within("a retained message", sub.recv())
            .await
            .expect("a message");
        seen.push(String::from_utf8_lossy(message.payload()).into_owned());
    }
    seen.sort();
    assert_eq!(seen, ["kept by b", "kept by c"]);
    d.stop().await;

    // One filter held by two sessions, and an overlapping one by a third: one NATS
    // subscription each, two copies of the message reach node b, and each session gets it
    // once.
    let x = b.client("x").await;
    let y = b.client("y").await;
    let z = b.client("z").await;
    let before = b.running.stats().nats_subscriptions.load(Relaxed);
    let mut sub_x = subscribe(&x, &b, "o/+", QoS::AtLeastOnce, before + 1).await;
    let mut sub_y = subscribe(&y, &b, "o/+", QoS::AtLeastOnce, before + 1).await;
    let mut sub_z = subscribe(&z, &b, "o/k", QoS::AtLeastOnce, before + 2).await;
    warm_up(&publisher, "o/k", &mut [&mut sub_x, &mut sub_y, &mut sub_z]).await;
    assert_eq!(
        b.running.stats().nats_subscriptions.load(Relaxed),
        before + 2,
        "o/+ is held twice but subscribed once"
    );
    let duplicates = b.running.stats().duplicates.load(Relaxed);
    publisher
        .publish("o/k", "once", PublishOptions::with_qos(QoS::AtLeastOnce))
        .await
        .expect("published");
    for (name, sub) in [("x", &mut sub_x), ("y", &mut sub_y), ("z", &mut sub_z)] {
        let message = within("the message", sub.recv()).await.expect("a message");
        assert_eq!(message.payload().as_ref(), b"once", "{name}");
    }
    for (name, sub) in [("x", &mut sub_x), ("y", &mut sub_y), ("z", &mut sub_z)] {
        nothing_more(sub, name).await;
    }
    assert_eq!(
        b.running.stats().duplicates.load(Relaxed),
        duplicates + 1,
        "the second copy came through the other NATS subscription, and was dropped"
    );

    // Unsubscribing: the NATS interest goes with the last local subscriber.
    x.unsubscribe("o/+").await.expect("unsubscribed");
    assert!(server(1)
        .subscriptions_of("midge b")
        .contains(&"midge.msg.t.o.*".to_owned()));
    y.unsubscribe("o/+").await.expect("unsubscribed");
    z.unsubscribe("o/k").await.expect("unsubscribed");
    until("the NATS interest to go", || {
        !server(1)
            .subscriptions_of("midge b")
            .iter()
            .any(|s| s.starts_with("midge.msg.t.o."))
    })
    .await;
    let received = b.running.stats().received.load(Relaxed);
    let published = a.running.stats().published.load(Relaxed);
    publisher
        .publish("o/k", "nobody", PublishOptions::with_qos(QoS::AtLeastOnce))
        .await
        .expect("published");
    let stats = a.running.stats();
    until("a to publish", || stats.published.load(Relaxed) > published).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        b.running.stats().received.load(Relaxed),
        received,
        "b no longer receives o/k"
    );
    nothing_more(&mut sub_z, "after unsubscribing").await;

    a.stop().await;
    b.stop().await;
    c.stop().await;
}

#[tokio::test]
async fn nats_unreachable_at_start_is_a_clear_error() {
    let port = free_port();
    let mut config = ClusterConfig::new(vec![format!("nats://127.0.0.1:{port}")], "a");
    config.connect_timeout_ms = 500;
    let started = Instant::now();
    let error = Node::connect(&config).await.expect_err("no NATS there");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(error, ClusterError::Connect { .. }), "{error:?}");
    let text = error.to_string();
    assert!(
        text.starts_with(&format!(
            "cannot connect to NATS at nats://127.0.0.1:{port}: "
        )),
        "{text}"
    );
}

#[tokio::test]
async fn a_nats_server_without_jetstream_is_a_clear_error() {
    let installed = midge_testkit::peers::installed("nats-server", &["--version"]);
    if !midge_testkit::peers::require("nats-server", installed) {
        return;
    }
    let port = free_port();
    let mut child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server starts");
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut config = ClusterConfig::new(vec![format!("nats://127.0.0.1:{port}")], "a");
    config.connect_timeout_ms = 2000;
    let error = Node::connect(&config).await.expect_err("no JetStream");
    let _ = child.kill();
    let _ = child.wait();
    assert!(matches!(error, ClusterError::JetStream { .. }), "{error:?}");
    assert!(
        error.to_string().contains("is JetStream enabled"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_lost_while_running_drops_and_counts_then_reconnects() {
    let Some(mut nats) = NatsServer::start() else {
        return;
    };
    let url = nats.url();
    let a = MidgeNode::start(&url, "a").await;
    let b = MidgeNode::start(&url, "b").await;
    let publisher = a.client("pub").await;
    let subscriber = b.client("sub").await;
    let mut sub = subscribe(&subscriber, &b, "l/#", QoS::AtLeastOnce, 2).await;
    let qos1 = || PublishOptions::with_qos(QoS::AtLeastOnce);
    publisher
        .publish("l/x", "before", qos1())
        .await
        .expect("published");
    let message = within("before", sub.recv()).await.expect("a message");
    assert_eq!(message.payload().as_ref(), b"before");

    nats.kill();
    let stats = a.running.stats();
    until("a to see NATS gone", || {
        stats.disconnects.load(Relaxed) >= 1
    })
    .await;
    // The broker still acknowledges (nothing on a matches), the node drops it and counts it.
    let dropped = stats.dropped_disconnected.load(Relaxed);
    publisher
        .publish("l/x", "lost", qos1())
        .await
        .expect("published");
    until("the drop to be counted", || {
        stats.dropped_disconnected.load(Relaxed) > dropped
    })
    .await;

    nats.restart();
    for node in [&a, &b] {
        let stats = node.running.stats();
        until("the reconnection", || stats.connects.load(Relaxed) >= 2).await;
    }
    // The subscriptions are made again by the client library: publish until one arrives.
    let deadline = Instant::now() + WAIT;
    let message = loop {
        assert!(
            Instant::now() < deadline,
            "nothing arrives after the reconnection"
        );
        publisher
            .publish("l/x", "after", qos1())
            .await
            .expect("published");
        if let Ok(message) = tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
            break message.expect("a message");
        }
    };
    // What was published while NATS was away is gone, not delivered late.
    assert_eq!(message.payload().as_ref(), b"after");
    // The watch of the bucket resumed: a retained message published on b reaches a's index.
    let applied = a.running.stats().retained_applied.load(Relaxed);
    subscriber
        .publish("l/kept", "kept", qos1().retain(true))
        .await
        .expect("published");
    let stats = a.running.stats();
    until("the bucket's change on a", || {
        stats.retained_applied.load(Relaxed) > applied
    })
    .await;
    let reader = a.client("reader").await;
    let (_, mut kept) = reader
        .subscribe("l/kept", SubscribeOptions::with_qos(QoS::AtLeastOnce))
        .await
        .expect("subscribed");
    let message = within("the retained message", kept.recv())
        .await
        .expect("a message");
    assert_eq!(message.payload().as_ref(), b"kept");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn credentials_are_given_to_nats() {
    let installed = midge_testkit::peers::installed("nats-server", &["--version"]);
    if !midge_testkit::peers::require("nats-server", installed) {
        return;
    }
    let cases: [(&[&str], _, _); 2] = [
        (
            &["--user", "midge", "--pass", "s3cret"],
            ("user", "s3cret"),
            ("user", "wrong"),
        ),
        (
            &["--auth", "t0ken-1234"],
            ("token", "t0ken-1234"),
            ("token", "wrong-token"),
        ),
    ];
    for (args, right, wrong) in cases {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("midge-cluster-test-{}-{port}", std::process::id()));
        let mut child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&dir)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let config = |(kind, secret): (&str, &str)| {
            let mut config = ClusterConfig::new(vec![format!("nats://127.0.0.1:{port}")], "a");
            config.connect_timeout_ms = 2000;
            if kind == "user" {
                config.user = Some("midge".into());
                config.password = Some(Secret::new(secret));
            } else {
                config.token = Some(Secret::new(secret));
            }
            config
        };
        let joined = Node::connect(&config(right)).await;
        let refused = Node::connect(&config(wrong)).await;
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(joined.is_ok(), "{args:?}: {:?}", joined.err());
        let error = refused.expect_err("wrong credentials");
        assert!(matches!(error, ClusterError::Connect { .. }), "{error:?}");
        assert!(
            error.to_string().to_lowercase().contains("authoriz"),
            "{args:?}: {error}"
        );
    }
}

/// The real nats-server matches mapped filters on mapped topics as MQTT does (the property
/// tests check the same against a model of NATS matching).
#[tokio::test]
async fn the_real_nats_server_matches_mapped_subjects_as_mqtt_does() {
    use futures_util::StreamExt;
    use midge_cluster::subject::{filter_subjects, message_subject};
    use midge_topic::{TopicFilter, TopicName};

    let Some(nats) = NatsServer::start() else {
        return;
    };
    let client = async_nats::connect(nats.url()).await.expect("connects");
    let filters = [
        "#", "+", "+/+", "a/#", "a/+", "a/b", "a.b", "$SYS/#", "+/b", "a/+/#", "/#", "+/", "*",
        ">", "é/#", "a b/+",
    ];
    let topics = [
        "a", "a/b", "a/", "a/b/c", "a.b", "a/b.c", "$SYS/x", "$SYS", "/", "/a", "*", ">", "a/*",
        "é", "é/x", "a b/c", "x/b", "a//b", "$a/b",
    ];
    let mut subscribers = Vec::new();
    for filter in filters {
        let mut streams = Vec::new();
        for subject in filter_subjects("midge", filter) {
            streams.push(client.subscribe(subject).await.expect("subscribes"));
        }
        subscribers.push(futures_util::stream::select_all(streams));
    }
    client.flush().await.expect("flushed");
    for topic in topics {
        client
            .publish(message_subject("midge", topic), topic.to_owned().into())
            .await
            .expect("published");
    }
    client.flush().await.expect("flushed");
    for (filter, subscriber) in filters.iter().zip(&mut subscribers) {
        let expected: Vec<&str> = topics
            .iter()
            .copied()
            .filter(|t| {
                TopicFilter::new(filter)
                    .unwrap()
                    .matches(&TopicName::new(t).unwrap())
            })
            .collect();
        let mut got = Vec::new();
        while let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_millis(200), subscriber.next()).await
        {
            got.push(String::from_utf8(message.payload.to_vec()).unwrap());
        }
        // Copies from a filter's two subscriptions come in either order.
        got.sort();
        let mut expected = expected;
        expected.sort_unstable();
        assert_eq!(got, expected, "{filter}");
    }
}
