//! Bridges against real remotes: mosquitto (started by the test on a free loopback port), and
//! another midge broker.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::closed_port;
use common::mosquitto::Mosquitto;
use midge_broker::{Broker, BrokerConfig, BrokerHandle};
use midge_client::{
    Client, ClientBuilder, Message, ProtocolVersion, PublishOptions, QoS, ReconnectPolicy,
    SubscribeOptions, Subscription,
};

/// The longest a test waits for what it expects.
const WAIT: Duration = Duration::from_secs(20);

/// A broker on 127.0.0.1:0 with `extra` (TOML: `[[bridge]]` tables) added to a test
/// configuration.
async fn broker(extra: &str) -> BrokerHandle {
    let mut config: BrokerConfig = toml::from_str(extra).expect("configuration parses");
    config.sys.interval_secs = 0;
    Broker::builder()
        .config(config)
        .bind("127.0.0.1:0".parse().expect("addr"))
        .start()
        .await
        .expect("broker starts")
}

async fn client(addr: SocketAddr, id: &str) -> Client {
    client_with(addr, id, ProtocolVersion::V5, true).await
}

async fn client_with(addr: SocketAddr, id: &str, version: ProtocolVersion, clean: bool) -> Client {
    let mut builder = ClientBuilder::new(addr.ip().to_string(), addr.port())
        .client_id(id)
        .version(version)
        .clean_start(clean)
        .reconnect(Some(ReconnectPolicy::exponential(
            Duration::from_millis(50),
            Duration::from_millis(500),
        )));
    if !clean && version == ProtocolVersion::V5 {
        builder = builder.session_expiry(3600);
    }
    tokio::time::timeout(WAIT, builder.connect())
        .await
        .expect("connects in time")
        .expect("connects")
}

async fn subscribe(client: &Client, filter: &str, qos: QoS) -> Subscription {
    let (_, stream) = client
        .subscribe_with(filter, SubscribeOptions::with_qos(qos), Default::default())
        .await
        .expect("subscribes");
    stream
}

async fn next(stream: &mut Subscription) -> Message {
    tokio::time::timeout(WAIT, stream.recv())
        .await
        .expect("a message in time")
        .expect("the stream goes on")
}

/// Messages that arrive within `quiet` of each other, until none does.
async fn drain(stream: &mut Subscription, quiet: Duration) -> Vec<Message> {
    let mut got = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout(quiet, stream.recv()).await {
        got.push(message);
    }
    got
}

async fn publish(client: &Client, topic: &str, payload: &str, qos: QoS, retain: bool) {
    client
        .publish(
            topic,
            Bytes::from(payload.to_owned()),
            PublishOptions::with_qos(qos).retain(retain),
        )
        .await
        .expect("published");
}

/// Waits until the bridge `name` reports `connected`.
async fn until_bridge(broker: &BrokerHandle, name: &str, connected: bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let bridges = broker.admin().bridges();
        let bridge = bridges
            .iter()
            .find(|b| b.name == name)
            .expect("bridge listed");
        if bridge.connected == connected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "bridge {name} not connected={connected}: {bridge:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn bridge_toml(name: &str, address: SocketAddr, version: &str, topics: &str) -> String {
    format!(
        "[[bridge]]\nname = \"{name}\"\naddress = \"{address}\"\nprotocol_version = \"{version}\"\n\
         reconnect_delay_ms = 100\nreconnect_delay_max_ms = 1000\n{topics}"
    )
}

fn topic_toml(pattern: &str, direction: &str, qos: u8, local: &str, remote: &str) -> String {
    format!(
        "[[bridge.topic]]\npattern = \"{pattern}\"\ndirection = \"{direction}\"\nqos = {qos}\n\
         local_prefix = \"{local}\"\nremote_prefix = \"{remote}\"\n"
    )
}

/// `out`, `in` and `both` topics with prefixes, against mosquitto, for 3.1.1 (with
/// mosquitto's bridge flag) and 5.0 (No Local): each message arrives once, renamed as the
/// prefixes say, and nothing comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directions_and_prefixes_against_mosquitto() {
    // [MQTT-3.1.1:7.0.0-1] a broker that connects out to another is a conforming client
    // there: mosquitto (a conforming server) accepts the bridge and exchanges with it.
    for version in ["3.1.1", "5.0"] {
        let Some(mosquitto) = Mosquitto::start(&format!("dirs-{version}")) else {
            return;
        };
        let topics = [
            topic_toml("sensors/#", "out", 1, "site/", "factory/7/"),
            topic_toml("cmd/#", "in", 1, "", "down/"),
            topic_toml("chat/#", "both", 1, "", ""),
            topic_toml("", "out", 0, "one/local", "one/remote"),
        ]
        .concat();
        let local = broker(&bridge_toml("edge", mosquitto.addr, version, &topics)).await;
        until_bridge(&local, "edge", true).await;
        let here = client(local.local_addr(), "here").await;
        let there = client(mosquitto.addr, "there").await;
        let mut remote_sensors = subscribe(&there, "factory/7/#", QoS::AtLeastOnce).await;
        let mut remote_one = subscribe(&there, "one/#", QoS::AtLeastOnce).await;
        let mut local_cmd = subscribe(&here, "cmd/#", QoS::AtLeastOnce).await;
        let mut local_chat = subscribe(&here, "chat/#", QoS::AtLeastOnce).await;
        let mut remote_chat = subscribe(&there, "chat/#", QoS::AtLeastOnce).await;
        // The bridge's subscriptions at mosquitto are made once it connected; those for
        // `in` may still be on their way.
        tokio::time::sleep(Duration::from_millis(300)).await;

        publish(&here, "site/sensors/t1", "21.5", QoS::AtLeastOnce, false).await;
        let got = next(&mut remote_sensors).await;
        assert_eq!(
            (got.topic(), &got.payload()[..]),
            ("factory/7/sensors/t1", &b"21.5"[..])
        );
        assert_eq!(got.qos(), QoS::AtLeastOnce);

        publish(&here, "one/local", "x", QoS::AtMostOnce, false).await;
        let got = next(&mut remote_one).await;
        assert_eq!(got.topic(), "one/remote");

        publish(&there, "down/cmd/open", "now", QoS::AtLeastOnce, false).await;
        let got = next(&mut local_cmd).await;
        assert_eq!((got.topic(), &got.payload()[..]), ("cmd/open", &b"now"[..]));

        publish(&here, "chat/a", "from here", QoS::AtLeastOnce, false).await;
        publish(&there, "chat/b", "from there", QoS::AtLeastOnce, false).await;
        let quiet = Duration::from_millis(700);
        let mut here_got: Vec<_> = drain(&mut local_chat, quiet)
            .await
            .iter()
            .map(|m| m.topic().to_owned())
            .collect();
        let mut there_got: Vec<_> = drain(&mut remote_chat, quiet)
            .await
            .iter()
            .map(|m| m.topic().to_owned())
            .collect();
        here_got.sort();
        there_got.sort();
        // Each side sees each message once: its own, and the other's through the bridge.
        assert_eq!(here_got, ["chat/a", "chat/b"], "{version}: this broker");
        assert_eq!(there_got, ["chat/a", "chat/b"], "{version}: mosquitto");
        // Nothing else came through: no echo of `cmd`, nothing outside the patterns.
        assert!(drain(&mut local_cmd, quiet).await.is_empty());
        assert!(drain(&mut remote_sensors, quiet).await.is_empty());
        let bridges = local.admin().bridges();
        assert_eq!(bridges[0].forwarded_out, 3, "{bridges:?}");
        assert_eq!(bridges[0].forwarded_in, 2, "{bridges:?}");
        local.shutdown().await;
    }
}

/// Retained messages go out as retained, and the remote's retained messages come in for
/// `in` patterns, retained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_cross_the_bridge() {
    let Some(mosquitto) = Mosquitto::start("retained") else {
        return;
    };
    // Retained at mosquitto before the bridge exists.
    let there = client(mosquitto.addr, "there").await;
    publish(&there, "down/cmd/mode", "auto", QoS::AtLeastOnce, true).await;
    let topics = [
        topic_toml("sensors/#", "out", 1, "", "up/"),
        topic_toml("cmd/#", "in", 1, "", "down/"),
    ]
    .concat();
    let local = broker(&bridge_toml("edge", mosquitto.addr, "5.0", &topics)).await;
    until_bridge(&local, "edge", true).await;
    let here = client(local.local_addr(), "here").await;
    publish(&here, "sensors/last", "7", QoS::AtLeastOnce, true).await;

    // A late subscriber at each side gets the other side's retained message.
    let deadline = Instant::now() + WAIT;
    let got = loop {
        let mut stream = subscribe(&here, "cmd/#", QoS::AtLeastOnce).await;
        // A subscription made before the message crossed gets it live, not retained.
        if let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_millis(300), stream.recv()).await
        {
            if message.retain() {
                break message;
            }
        }
        assert!(Instant::now() < deadline, "no retained message came in");
        here.unsubscribe("cmd/#").await.expect("unsubscribes");
    };
    assert_eq!(
        (got.topic(), &got.payload()[..], got.retain()),
        ("cmd/mode", &b"auto"[..], true)
    );
    let deadline = Instant::now() + WAIT;
    let got = loop {
        let late = client(mosquitto.addr, "late").await;
        let mut stream = subscribe(&late, "up/#", QoS::AtLeastOnce).await;
        // A subscription made before the message crossed gets it live, not retained.
        if let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_millis(300), stream.recv()).await
        {
            if message.retain() {
                break message;
            }
        }
        assert!(Instant::now() < deadline, "no retained message went out");
        late.disconnect(midge_client::ReasonCode::SUCCESS).await;
    };
    assert_eq!(
        (got.topic(), &got.payload()[..], got.retain()),
        ("up/sensors/last", &b"7"[..], true)
    );
    local.shutdown().await;
}

/// The bridge's state is published (retained) on this broker and on mosquitto, and the
/// admin view and metrics say it; when mosquitto goes, the state says 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_state_is_published_here_and_there() {
    let Some(mut mosquitto) = Mosquitto::start("state") else {
        return;
    };
    let topics = topic_toml("x/#", "out", 0, "", "");
    let local = broker(&bridge_toml("edge", mosquitto.addr, "3.1.1", &topics)).await;
    let here = client(local.local_addr(), "here").await;
    let mut state = subscribe(&here, "$SYS/broker/connection/edge/state", QoS::AtLeastOnce).await;
    until_bridge(&local, "edge", true).await;
    // Retained: the last state, whenever one subscribes.
    let mut seen = next(&mut state).await;
    if &seen.payload()[..] == b"0" {
        seen = next(&mut state).await;
    }
    assert_eq!(&seen.payload()[..], b"1");
    let there = client(mosquitto.addr, "there").await;
    let mut remote_state = subscribe(
        &there,
        "$SYS/broker/connection/edge/state",
        QoS::AtLeastOnce,
    )
    .await;
    assert_eq!(&next(&mut remote_state).await.payload()[..], b"1");
    let metrics = local.admin().metrics();
    assert!(metrics.bridges[0].connected);

    mosquitto.kill();
    let got = next(&mut state).await;
    assert_eq!(&got.payload()[..], b"0");
    until_bridge(&local, "edge", false).await;
    let view = &local.admin().bridges()[0];
    assert!(view.last_error.is_some(), "{view:?}");

    // And back when mosquitto is.
    mosquitto.start_again();
    assert_eq!(&next(&mut state).await.payload()[..], b"1");
    until_bridge(&local, "edge", true).await;
    assert!(local.admin().bridges()[0].connections >= 2);
    local.shutdown().await;
}

/// 10,000 numbered QoS 1 messages go out through the bridge while mosquitto is restarted in
/// the middle (with its store, as a production remote would be): every one arrives at a
/// persistent subscriber at mosquitto; duplicates are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_qos1_messages_survive_a_mosquitto_restart() {
    const N: u32 = 10_000;
    let Some(mut mosquitto) = Mosquitto::start_with(
        "restart",
        "allow_anonymous true\npersistence true\npersistence_location ./\n\
         max_queued_messages 100000\nmax_inflight_messages 100\n",
    ) else {
        return;
    };
    let topics = topic_toml("n/#", "out", 1, "", "");
    let local = broker(&bridge_toml("edge", mosquitto.addr, "3.1.1", &topics)).await;
    until_bridge(&local, "edge", true).await;
    // A persistent subscriber at mosquitto: what arrives while it is away waits there.
    let there = client_with(mosquitto.addr, "counter", ProtocolVersion::V3_1_1, false).await;
    let mut numbers = subscribe(&there, "n/#", QoS::AtLeastOnce).await;
    let receiver = tokio::spawn(async move {
        let mut seen: HashMap<u32, u32> = HashMap::new();
        while seen.len() < N as usize {
            let Ok(Some(message)) =
                tokio::time::timeout(Duration::from_secs(30), numbers.recv()).await
            else {
                break;
            };
            let n: u32 = std::str::from_utf8(message.payload())
                .expect("utf-8")
                .parse()
                .expect("a number");
            *seen.entry(n).or_default() += 1;
        }
        seen
    });

    let here = client(local.local_addr(), "numbers").await;
    let mut handles = Vec::new();
    for n in 0..N {
        let handle = here
            .enqueue(
                "n/1",
                Bytes::from(n.to_string()),
                PublishOptions::with_qos(QoS::AtLeastOnce),
            )
            .await
            .expect("queued");
        handles.push(handle);
        if n == N / 3 {
            mosquitto.stop();
            tokio::time::sleep(Duration::from_millis(300)).await;
            mosquitto.start_again();
        }
    }
    // This broker acknowledged every one.
    for handle in handles {
        handle.await.expect("acknowledged here");
    }
    let seen = tokio::time::timeout(Duration::from_secs(90), receiver)
        .await
        .expect("the receiver ends")
        .expect("the receiver runs");
    let missing: Vec<u32> = (0..N).filter(|n| !seen.contains_key(n)).collect();
    let duplicates: u32 = seen.values().map(|c| c - 1).sum();
    eprintln!(
        "bridge restart: {} distinct, {duplicates} duplicates",
        seen.len()
    );
    assert!(
        missing.is_empty(),
        "{} lost, first {:?}, last {:?}; bridge {:?}; its session here {:?}",
        missing.len(),
        &missing[..missing.len().min(10)],
        missing.last(),
        local.admin().bridges(),
        local.admin().client("$bridge/edge"),
    );
    local.shutdown().await;
}

/// Two midge brokers bridged both ways on `#` (one bridge, on the edge broker): every
/// message reaches every subscriber on both sides exactly once, with no echo, over 5.0 and
/// over 3.1.1 with the bridge flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_midge_brokers_bridged_both_ways_on_everything_do_not_loop() {
    // [MQTT-3.1.1:7.0.0-1]
    for version in ["5.0", "3.1.1"] {
        let cloud = broker("").await;
        let topics = topic_toml("#", "both", 1, "", "");
        let edge = broker(&bridge_toml("cloud", cloud.local_addr(), version, &topics)).await;
        until_bridge(&edge, "cloud", true).await;
        let at_edge = client(edge.local_addr(), "at-edge").await;
        let at_cloud = client(cloud.local_addr(), "at-cloud").await;
        let mut edge_all = subscribe(&at_edge, "t/#", QoS::AtLeastOnce).await;
        let mut cloud_all = subscribe(&at_cloud, "t/#", QoS::AtLeastOnce).await;
        for n in 0..50 {
            publish(
                &at_edge,
                &format!("t/edge/{n}"),
                "e",
                QoS::AtLeastOnce,
                false,
            )
            .await;
            publish(
                &at_cloud,
                &format!("t/cloud/{n}"),
                "c",
                QoS::AtMostOnce,
                false,
            )
            .await;
        }
        let quiet = Duration::from_millis(800);
        for (side, stream) in [("edge", &mut edge_all), ("cloud", &mut cloud_all)] {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for message in drain(stream, quiet).await {
                *counts.entry(message.topic().to_owned()).or_default() += 1;
            }
            assert_eq!(
                counts.len(),
                100,
                "{version} {side}: {counts:?}\nedge: {:?}\nbridge at the cloud: {:?}",
                edge.admin().bridges(),
                cloud.admin().client("midge.cloud")
            );
            assert!(
                counts.values().all(|&c| c == 1),
                "{version} {side}: echoes {counts:?}"
            );
        }
        edge.shutdown().await;
        cloud.shutdown().await;
    }
}

/// A remote that refuses the bridge's credentials: the bridge reports it and keeps trying,
/// with backoff; this broker goes on serving its clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_that_refuses_the_credentials_is_retried_and_reported() {
    let dir = std::env::temp_dir().join(format!("midge-bridge-refuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let passwords = dir.join("passwd");
    std::fs::write(&passwords, "").expect("password file");
    let cloud = broker(&format!(
        "[auth]\nallow_anonymous = false\npassword_file = {:?}\n",
        passwords.display().to_string()
    ))
    .await;
    let topics = topic_toml("x/#", "out", 1, "", "");
    let config = format!(
        "{}username = \"edge\"\npassword = \"wrong\"\n",
        bridge_toml("cloud", cloud.local_addr(), "5.0", "")
    ) + &topics;
    let edge = broker(&config).await;
    let here = client(edge.local_addr(), "here").await;
    let mut local = subscribe(&here, "local/#", QoS::AtLeastOnce).await;
    // Refused, reported, and tried again.
    let deadline = Instant::now() + WAIT;
    loop {
        let view = edge.admin().bridges().remove(0);
        assert!(!view.connected);
        if view.last_error.as_deref().is_some_and(|e| {
            e.contains("refused") || e.contains("authorized") || e.contains("password")
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "no refusal reported: {view:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused_before = cloud.stats().auth_failures;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let refused_after = cloud.stats().auth_failures;
    assert!(refused_after > refused_before, "the bridge stopped trying");
    assert!(
        refused_after - refused_before < 20,
        "the bridge does not back off: {}",
        refused_after - refused_before
    );
    // This broker serves as ever.
    publish(&here, "local/ok", "1", QoS::AtLeastOnce, false).await;
    assert_eq!(next(&mut local).await.topic(), "local/ok");
    edge.shutdown().await;
    cloud.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A remote that is down when the broker starts: the broker serves, the bridge reports it
/// is not connected, and connects once the remote is there, forwarding what waited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_down_at_start_is_connected_once_it_is_up() {
    let port = closed_port();
    let dead = closed_port();
    let topics = topic_toml("x/#", "out", 1, "", "");
    // Two addresses, tried in order: one that never answers, then the remote's.
    let config = bridge_toml("cloud", port, "5.0", &topics).replace(
        &format!("address = \"{port}\""),
        &format!("address = [\"{dead}\", \"{port}\"]"),
    );
    let edge = broker(&config).await;
    let here = client(edge.local_addr(), "here").await;
    // QoS 1 messages published while the remote is down wait in the bridge's session.
    for n in 0..20 {
        publish(&here, &format!("x/{n}"), "waited", QoS::AtLeastOnce, false).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let view = edge.admin().bridges().remove(0);
    assert!(!view.connected && view.last_error.is_some(), "{view:?}");

    let mut config: BrokerConfig = toml::from_str("").expect("empty config");
    config.sys.interval_secs = 0;
    // The remote comes up on the port the bridge tries; a subscriber's persistent session
    // is made there before the bridge gets in (the bridge retries every second at most).
    let cloud = Broker::builder()
        .config(config)
        .bind(port)
        .start()
        .await
        .expect("remote starts");
    let there = client(cloud.local_addr(), "there").await;
    let mut got = subscribe(&there, "x/#", QoS::AtLeastOnce).await;
    until_bridge(&edge, "cloud", true).await;
    let mut seen: Vec<String> = Vec::new();
    while seen.len() < 20 {
        seen.push(next(&mut got).await.topic().to_owned());
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 20, "{seen:?}");
    edge.shutdown().await;
    cloud.shutdown().await;
}

/// A remote that drops the bridge's connection again and again: the bridge reconnects each
/// time, nothing acknowledged is lost, and this broker serves throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_that_drops_the_connection_in_a_loop_loses_nothing() {
    let cloud = broker("").await;
    let topics = topic_toml("x/#", "out", 1, "", "");
    let edge = broker(&bridge_toml("cloud", cloud.local_addr(), "5.0", &topics)).await;
    until_bridge(&edge, "cloud", true).await;
    let there = client_with(cloud.local_addr(), "there", ProtocolVersion::V5, false).await;
    let mut got = subscribe(&there, "x/#", QoS::AtLeastOnce).await;
    let here = client(edge.local_addr(), "here").await;
    let admin = cloud.admin();
    let kicker = tokio::spawn(async move {
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let _ = admin.kick("midge.cloud");
        }
    });
    const N: u32 = 2000;
    let mut handles = Vec::new();
    for n in 0..N {
        let handle = here
            .enqueue(
                "x/n",
                Bytes::from(n.to_string()),
                PublishOptions::with_qos(QoS::AtLeastOnce),
            )
            .await
            .expect("queued");
        handles.push(handle);
        if n % 200 == 0 {
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }
    for handle in handles {
        handle.await.expect("acknowledged here");
    }
    kicker.await.expect("kicker");
    let mut seen = std::collections::HashSet::new();
    while seen.len() < N as usize {
        let message = next(&mut got).await;
        seen.insert(message.payload().clone());
    }
    let view = edge.admin().bridges().remove(0);
    assert!(
        view.connections >= 3,
        "the remote dropped the bridge, yet: {view:?}"
    );
    edge.shutdown().await;
    cloud.shutdown().await;
}

/// The bridge's local end is the broker's own client: it forwards on a broker that lets no
/// anonymous client in, and no client from outside may take its identifier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_is_trusted_here_and_its_identifier_is_reserved() {
    let dir = std::env::temp_dir().join(format!("midge-bridge-trusted-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let passwords = dir.join("passwd");
    std::fs::write(&passwords, "").expect("password file");
    let cloud = broker("").await;
    let topics = topic_toml("x/#", "both", 1, "", "");
    let edge = broker(&format!(
        "[auth]\nallow_anonymous = false\npassword_file = {:?}\n{}",
        passwords.display().to_string(),
        bridge_toml("cloud", cloud.local_addr(), "5.0", &topics)
    ))
    .await;
    until_bridge(&edge, "cloud", true).await;
    // The bridge's subscriptions here exist though no client may connect anonymously.
    let deadline = Instant::now() + WAIT;
    while edge
        .admin()
        .client("$bridge/cloud")
        .map(|c| c.subscriptions.len())
        != Some(1)
    {
        assert!(
            Instant::now() < deadline,
            "the bridge did not subscribe here"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What the cloud publishes is published here by the bridge (and retained).
    let at_cloud = client(cloud.local_addr(), "at-cloud").await;
    publish(&at_cloud, "x/kept", "v", QoS::AtLeastOnce, true).await;
    let deadline = Instant::now() + WAIT;
    while edge
        .admin()
        .retained(None, None, 10)
        .map(|p| p.topics.len())
        .unwrap_or(0)
        == 0
    {
        assert!(Instant::now() < deadline, "nothing came in");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A client from outside may not take a bridge's identifier, even where anonymous
    // clients are welcome (as at the cloud, where `at-cloud` got in).
    let refused = ClientBuilder::new("127.0.0.1", cloud.local_addr().port())
        .client_id("$bridge/cloud")
        .connect()
        .await
        .expect_err("refused");
    assert!(refused.to_string().contains("0x85"), "{refused}");
    assert!(edge.admin().bridges()[0].connected);
    edge.shutdown().await;
    cloud.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// With persistence on, what waits for a remote that is down survives a restart of this
/// broker: QoS 1 messages published while the remote is away, then the broker stopped and
/// started again on the same store, all reach the remote once it is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_waits_for_the_remote_survives_a_restart_with_persistence() {
    let dir = std::env::temp_dir().join(format!("midge-bridge-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let store_path = dir.join("store.redb");
    let port = closed_port();
    let topics = topic_toml("x/#", "out", 1, "", "");
    let config = bridge_toml("cloud", port, "5.0", &topics);
    let start = |config: String| {
        let store_path = store_path.clone();
        async move {
            let mut config: BrokerConfig = toml::from_str(&config).expect("configuration parses");
            config.sys.interval_secs = 0;
            let store =
                midge_store::DiskStore::open(&store_path, Default::default()).expect("store opens");
            Broker::builder()
                .config(config)
                .store(store)
                .bind("127.0.0.1:0".parse().expect("addr"))
                .start()
                .await
                .expect("broker starts")
        }
    };
    let edge = start(config.clone()).await;
    let here = client(edge.local_addr(), "here").await;
    for n in 0..50 {
        publish(&here, &format!("x/{n}"), "kept", QoS::AtLeastOnce, false).await;
    }
    here.disconnect(midge_client::ReasonCode::SUCCESS).await;
    eprintln!(
        "DIAG before {:?}",
        edge.admin()
            .client("$bridge/cloud")
            .map(|c| (c.summary.inflight, c.summary.queued))
    );
    edge.shutdown().await;

    // Started again on the same store, with the remote up this time where the bridge looks.
    let mut remote: BrokerConfig = toml::from_str("").expect("empty configuration");
    remote.sys.interval_secs = 0;
    let cloud = Broker::builder()
        .config(remote)
        .bind(port)
        .start()
        .await
        .expect("remote starts");
    let there = client_with(cloud.local_addr(), "there", ProtocolVersion::V5, false).await;
    let mut got = subscribe(&there, "x/#", QoS::AtLeastOnce).await;
    let edge = start(config).await;
    until_bridge(&edge, "cloud", true).await;
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 50 {
        match tokio::time::timeout(WAIT, got.recv()).await {
            Ok(Some(message)) => seen.insert(message.topic().to_owned()),
            _ => panic!(
                "{} of 50 came (missing {:?}); bridge {:?}; its session {:?}",
                seen.len(),
                (0..50)
                    .map(|n| format!("x/{n}"))
                    .filter(|t| !seen.contains(t))
                    .collect::<Vec<_>>(),
                edge.admin().bridges(),
                edge.admin().client("$bridge/cloud")
            ),
        };
    }
    edge.shutdown().await;
    cloud.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
