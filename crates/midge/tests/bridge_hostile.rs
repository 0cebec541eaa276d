//! Bridges under hostile conditions: large messages, deep topics, refusals, restarts in the
//! middle of QoS 2, and configurations that cannot work.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::mosquitto::Mosquitto;
use midge_broker::hooks::{ConnectRequest, Hooks};
use midge_broker::{Broker, BrokerConfig, BrokerHandle};
use midge_client::{
    Client, ClientBuilder, Limits, Message, ProtocolVersion, PublishOptions, QoS, ReconnectPolicy,
    SubscribeOptions, Subscription,
};
use midge_codec::ReasonCode;

const WAIT: Duration = Duration::from_secs(20);

async fn broker_with(extra: &str, hooks: Option<Arc<Refuser>>) -> BrokerHandle {
    let mut config: BrokerConfig = toml::from_str(extra).expect("configuration parses");
    config.sys.interval_secs = 0;
    let mut builder = Broker::builder()
        .config(config)
        .bind("127.0.0.1:0".parse().expect("addr"));
    if let Some(hooks) = hooks {
        builder = builder.hooks(SharedRefuser(hooks));
    }
    builder.start().await.expect("broker starts")
}

async fn broker(extra: &str) -> BrokerHandle {
    broker_with(extra, None).await
}

async fn client_with(addr: SocketAddr, id: &str, limits: Limits) -> Client {
    let builder = ClientBuilder::new(addr.ip().to_string(), addr.port())
        .client_id(id)
        .version(ProtocolVersion::V5)
        .limits(limits)
        .reconnect(Some(ReconnectPolicy::exponential(
            Duration::from_millis(50),
            Duration::from_millis(500),
        )));
    tokio::time::timeout(WAIT, builder.connect())
        .await
        .expect("connects in time")
        .expect("connects")
}

async fn client(addr: SocketAddr, id: &str) -> Client {
    client_with(addr, id, Limits::default()).await
}

async fn subscribe(client: &Client, filter: &str, qos: QoS) -> Subscription {
    let (_, stream) = client
        .subscribe_with(filter, SubscribeOptions::with_qos(qos), Default::default())
        .await
        .expect("subscribes");
    stream
}

async fn drain(stream: &mut Subscription, quiet: Duration) -> Vec<Message> {
    let mut got = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout(quiet, stream.recv()).await {
        got.push(message);
    }
    got
}

async fn publish(client: &Client, topic: &str, payload: Bytes, qos: QoS) {
    client
        .publish(topic, payload, PublishOptions::with_qos(qos))
        .await
        .expect("published");
}

async fn until_bridge(broker: &BrokerHandle, connected: bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let view = broker.admin().bridges().remove(0);
        if view.connected == connected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "bridge not connected={connected}: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn bridge_toml(name: &str, address: &str, version: &str, topics: &str) -> String {
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

/// Hooks that refuse the client `midge.cloud` while `refuse` is set, with `code`.
struct Refuser {
    refuse: AtomicBool,
    code: ReasonCode,
}

struct SharedRefuser(Arc<Refuser>);

/// Hooks that refuse the subscriptions of `midge.cloud` while set.
struct SubscribeRefuser(Arc<AtomicBool>);

impl Hooks for SubscribeRefuser {
    fn authorize_subscribe(
        &self,
        client: &midge_broker::ClientInfo,
        _filter: &str,
        _options: &midge_codec::SubscriptionOptions,
    ) -> Result<(), ReasonCode> {
        if client.client_id.as_str() == "midge.cloud" && self.0.load(SeqCst) {
            Err(ReasonCode::NOT_AUTHORIZED)
        } else {
            Ok(())
        }
    }
}

impl Hooks for SharedRefuser {
    fn authenticate(&self, request: &ConnectRequest<'_>) -> Result<(), ReasonCode> {
        if request.client_id == "midge.cloud" && self.0.refuse.load(SeqCst) {
            Err(self.0.code)
        } else {
            Ok(())
        }
    }
}

/// Stopping a bridge (here: shutting the broker down) leaves its subscription at the remote: a
/// QoS 1 message published there while this broker is down comes in once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_restart_keeps_the_bridge_subscription_at_the_remote() {
    let cloud = broker("").await;
    let topics = topic_toml("x/#", "in", 1, "", "");
    let config = bridge_toml("cloud", &cloud.local_addr().to_string(), "5.0", &topics);
    let edge = broker(&config).await;
    until_bridge(&edge, true).await;
    let deadline = Instant::now() + WAIT;
    while cloud
        .admin()
        .client("midge.cloud")
        .map(|c| c.subscriptions.len())
        != Some(1)
    {
        assert!(
            Instant::now() < deadline,
            "the bridge did not subscribe at the cloud"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    edge.shutdown().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let at_remote = cloud
        .admin()
        .subscriptions(Some("x/#"), None, 10)
        .expect("listed")
        .subscriptions;
    // Published at the remote while this broker is down: it must wait in the bridge's
    // session there.
    let at_cloud = client(cloud.local_addr(), "at-cloud").await;
    publish(
        &at_cloud,
        "x/while-down",
        Bytes::from_static(b"1"),
        QoS::AtLeastOnce,
    )
    .await;

    let edge = broker(&config).await;
    until_bridge(&edge, true).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while edge.admin().bridges()[0].forwarded_in == 0 {
        assert!(
            Instant::now() < deadline,
            "the message published at the remote while this broker was down never came in; \
             subscriptions to x/# at the remote after the shutdown: {at_remote:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    edge.shutdown().await;
    cloud.shutdown().await;
}

/// While the remote refuses the bridge for good (a refusal midge-client does not retry, such
/// as 0x86 after a password change), the bridge's session here keeps its subscriptions: what
/// is published on the bridged topics waits there, and goes out once the remote lets it in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_published_while_the_remote_refuses_the_bridge_wait_in_its_session() {
    let refuser = Arc::new(Refuser {
        refuse: AtomicBool::new(false),
        code: ReasonCode::BAD_USER_NAME_OR_PASSWORD,
    });
    let cloud = broker_with("", Some(refuser.clone())).await;
    let there = client(cloud.local_addr(), "there").await;
    let mut got = subscribe(&there, "x/#", QoS::AtLeastOnce).await;
    let topics = topic_toml("x/#", "out", 1, "", "");
    let edge = broker(&bridge_toml(
        "cloud",
        &cloud.local_addr().to_string(),
        "5.0",
        &topics,
    ))
    .await;
    until_bridge(&edge, true).await;
    let here = client(edge.local_addr(), "here").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish(
        &here,
        "x/before",
        Bytes::from_static(b"1"),
        QoS::AtLeastOnce,
    )
    .await;

    // The remote now refuses the bridge; it is disconnected, and refused on its way back.
    refuser.refuse.store(true, SeqCst);
    assert!(cloud.admin().kick("midge.cloud"));
    until_bridge(&edge, false).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let session = edge
        .admin()
        .subscriptions(Some("x/#"), None, 10)
        .expect("listed")
        .subscriptions;
    for n in 0..5 {
        let topic = format!("x/while-refused/{n}");
        publish(&here, &topic, Bytes::from_static(b"1"), QoS::AtLeastOnce).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    refuser.refuse.store(false, SeqCst);
    until_bridge(&edge, true).await;
    let topics: Vec<String> = drain(&mut got, Duration::from_secs(3))
        .await
        .iter()
        .map(|m| m.topic().to_owned())
        .collect();
    for n in 0..5 {
        let topic = format!("x/while-refused/{n}");
        assert!(
            topics.contains(&topic),
            "{topic} acknowledged here, never forwarded; got {topics:?}; \
             subscriptions to x/# here while refused: {session:?}"
        );
    }
    edge.shutdown().await;
    cloud.shutdown().await;
}

/// A 3.1.1 remote cannot be told this broker's packet limit: a bigger message from it is
/// refused here and counted, and what comes after it still comes in (the connection is not
/// dropped and the message not sent again for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_message_from_a_311_remote_does_not_wedge_the_bridge() {
    let big_limits = "[limits]\nmax_packet_size = 4194304\n";
    let cloud = broker(big_limits).await;
    let topics = topic_toml("big/#", "in", 1, "", "");
    let edge = broker(&format!(
        "{}\n{big_limits}",
        bridge_toml("cloud", &cloud.local_addr().to_string(), "3.1.1", &topics)
    ))
    .await;
    until_bridge(&edge, true).await;
    let mut limits = Limits::default();
    limits.max_packet_size = 4 * 1024 * 1024;
    let here = client_with(edge.local_addr(), "here", limits).await;
    let mut got = subscribe(&here, "big/#", QoS::AtLeastOnce).await;
    let at_cloud = client(cloud.local_addr(), "at-cloud").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish(
        &at_cloud,
        "big/one",
        Bytes::from(vec![b'x'; 2 * 1024 * 1024]),
        QoS::AtLeastOnce,
    )
    .await;
    publish(
        &at_cloud,
        "big/after",
        Bytes::from_static(b"small"),
        QoS::AtLeastOnce,
    )
    .await;
    let topics: Vec<String> = drain(&mut got, Duration::from_secs(5))
        .await
        .iter()
        .map(|m| m.topic().to_owned())
        .collect();
    let view = edge.admin().bridges().remove(0);
    assert!(
        topics.contains(&"big/after".to_owned()),
        "nothing came in after a 2 MiB message: got {topics:?}; {view:?}"
    );
    assert!(
        topics.contains(&"big/one".to_owned()),
        "{topics:?}; {view:?}"
    );
    edge.shutdown().await;
    cloud.shutdown().await;
}

/// A message as large as this broker takes (beyond midge-client's default 1 MiB) is forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_message_published_here_is_forwarded() {
    let big_limits = "[limits]\nmax_packet_size = 4194304\n";
    let cloud = broker(big_limits).await;
    let mut limits = Limits::default();
    limits.max_packet_size = 4 * 1024 * 1024;
    let there = client_with(cloud.local_addr(), "there", limits).await;
    let mut got = subscribe(&there, "big/#", QoS::AtLeastOnce).await;
    let topics = topic_toml("big/#", "out", 1, "", "");
    let edge = broker(&format!(
        "{}\n{big_limits}",
        bridge_toml("cloud", &cloud.local_addr().to_string(), "5.0", &topics)
    ))
    .await;
    until_bridge(&edge, true).await;
    let here = client(edge.local_addr(), "here").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish(
        &here,
        "big/one",
        Bytes::from(vec![b'x'; 2 * 1024 * 1024]),
        QoS::AtLeastOnce,
    )
    .await;
    let got = drain(&mut got, Duration::from_secs(3)).await;
    let view = edge.admin().bridges().remove(0);
    assert_eq!(got.len(), 1, "a 2 MiB message was not forwarded: {view:?}");
    edge.shutdown().await;
    cloud.shutdown().await;
}

/// A message that matches two `in` patterns is forwarded once per pattern, also from a remote
/// that sends one copy per matching subscription (mosquitto 2.0 does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_in_patterns_forward_once_per_pattern() {
    for version in ["3.1.1", "5.0"] {
        let Some(mosquitto) = Mosquitto::start(&format!("overlap-{version}")) else {
            return;
        };
        let topics = [
            topic_toml("cmd/#", "in", 1, "", ""),
            topic_toml("cmd/x/#", "in", 1, "", ""),
        ]
        .concat();
        let edge = broker(&bridge_toml(
            "edge",
            &mosquitto.addr.to_string(),
            version,
            &topics,
        ))
        .await;
        until_bridge(&edge, true).await;
        let here = client(edge.local_addr(), "here").await;
        let mut got = subscribe(&here, "cmd/#", QoS::AtLeastOnce).await;
        let there = client(mosquitto.addr, "there").await;
        // Both subscriptions made at mosquitto.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        publish(
            &there,
            "cmd/x/1",
            Bytes::from_static(b"1"),
            QoS::AtLeastOnce,
        )
        .await;
        let got = drain(&mut got, Duration::from_secs(1)).await;
        assert_eq!(
            got.len(),
            2,
            "{version}: once per pattern expected; {:?}",
            edge.admin().bridges()
        );
        edge.shutdown().await;
    }
}

/// A remote that refuses the CONNECT as not authorized (mosquitto answers a wrong password so,
/// 3.1.1 return code 5) does not make the bridge drop its will for good: once the
/// credentials are right, a bridge that vanishes leaves its state `0` at the remote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refusal_for_credentials_does_not_drop_the_will() {
    let refuser = Arc::new(Refuser {
        refuse: AtomicBool::new(true),
        code: ReasonCode::NOT_AUTHORIZED,
    });
    let cloud = broker_with("", Some(refuser.clone())).await;
    let there = client(cloud.local_addr(), "there").await;
    let mut state = subscribe(&there, "state/edge", QoS::AtLeastOnce).await;
    let topics = topic_toml("x/#", "out", 1, "", "");
    let config = bridge_toml("cloud", &cloud.local_addr().to_string(), "5.0", &topics).replace(
        "[[bridge.topic]]",
        "notification_topic = \"state/edge\"\n[[bridge.topic]]",
    );
    let edge = broker(&config).await;
    // Refused a while (the credentials are being put right at the remote), then let in.
    tokio::time::sleep(Duration::from_millis(500)).await;
    refuser.refuse.store(false, SeqCst);
    until_bridge(&edge, true).await;
    // The bridge's connection is cut by the remote, not closed by the bridge: the will says 0.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(cloud.admin().kick("midge.cloud"));
    let payloads: Vec<Bytes> = drain(&mut state, Duration::from_secs(2))
        .await
        .iter()
        .map(|m| m.payload().clone())
        .collect();
    assert!(
        payloads.iter().any(|p| &p[..] == b"0"),
        "no will at the remote once the bridge vanished: {payloads:?}"
    );
    edge.shutdown().await;
    cloud.shutdown().await;
}

/// Control for the test above: without the refusal the will is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_the_will_says_0_when_the_connection_is_cut() {
    let cloud = broker("").await;
    let there = client(cloud.local_addr(), "there").await;
    let mut state = subscribe(&there, "state/edge", QoS::AtLeastOnce).await;
    let topics = topic_toml("x/#", "out", 1, "", "");
    let config = bridge_toml("cloud", &cloud.local_addr().to_string(), "5.0", &topics).replace(
        "[[bridge.topic]]",
        "notification_topic = \"state/edge\"\n[[bridge.topic]]",
    );
    let edge = broker(&config).await;
    until_bridge(&edge, true).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(cloud.admin().kick("midge.cloud"));
    let payloads: Vec<Bytes> = drain(&mut state, Duration::from_secs(2))
        .await
        .iter()
        .map(|m| m.payload().clone())
        .collect();
    assert!(payloads.iter().any(|p| &p[..] == b"0"), "{payloads:?}");
    edge.shutdown().await;
    cloud.shutdown().await;
}

/// An address given as a URL with credentials is refused by the configuration's check,
/// without the password in the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_an_address_is_neither_accepted_nor_shown() {
    let topics = topic_toml("x/#", "out", 1, "", "");
    let config: BrokerConfig = toml::from_str(&bridge_toml(
        "cloud",
        "mqtt://edge:s3cret@127.0.0.1:1",
        "5.0",
        &topics,
    ))
    .expect("parses");
    if config.validate().is_err() {
        return;
    }
    let edge = broker(&bridge_toml(
        "cloud",
        "mqtt://edge:s3cret@127.0.0.1:1",
        "5.0",
        &topics,
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let view = edge.admin().bridges().remove(0);
    assert!(
        !view
            .last_error
            .clone()
            .unwrap_or_default()
            .contains("s3cret"),
        "{view:?}"
    );
    edge.shutdown().await;
}

/// A prefix that would turn a filter into a shared subscription (`$share/g/`) is refused.
#[test]
fn a_shared_subscription_prefix_is_refused() {
    let topics = topic_toml("x/#", "out", 1, "$share/g/", "");
    let config: BrokerConfig =
        toml::from_str(&bridge_toml("cloud", "127.0.0.1:1883", "5.0", &topics)).expect("parses");
    assert!(config.validate().is_err(), "accepted a $share prefix");
}

/// One round: QoS `qos` messages out through a bridge whose broker (with persistence) is
/// stopped and started again in the middle; returns what was forwarded before the stop, how
/// many never came, and how many came twice.
async fn restart_round(round: u32, qos: QoS) -> (u64, usize, u32) {
    const N: u32 = 3000;
    let dir = std::env::temp_dir().join(format!(
        "midge-bridge-qos{}-{round}-{}",
        qos as u8,
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let store_path = dir.join("store");
    let cloud = broker("[sessions]\nmax_queued_messages = 100000\n").await;
    let mut limits = Limits::default();
    limits.receive_maximum = 1000;
    let there = client_with(cloud.local_addr(), "there", limits).await;
    let (_, mut numbers) = there
        .subscribe_with("q/#", SubscribeOptions::with_qos(qos), Default::default())
        .await
        .expect("subscribes");
    let receiver = tokio::spawn(async move {
        let mut seen: HashMap<u32, u32> = HashMap::new();
        // Until every number came (then 2 s more, for duplicates), or 25 s of silence.
        let mut quiet = Duration::from_secs(25);
        while let Ok(Some(message)) = tokio::time::timeout(quiet, numbers.recv()).await {
            let n: u32 = std::str::from_utf8(message.payload())
                .expect("utf-8")
                .parse()
                .expect("a number");
            *seen.entry(n).or_default() += 1;
            if seen.len() == N as usize {
                quiet = Duration::from_secs(2);
            }
        }
        seen
    });
    let topics = topic_toml("q/#", "out", qos as u8, "", "");
    let text = format!(
        "[sessions]\nmax_queued_messages = 100000\n{}",
        bridge_toml("cloud", &cloud.local_addr().to_string(), "5.0", &topics)
    );
    let start = |text: String, store_path: std::path::PathBuf| async move {
        let mut config: BrokerConfig = toml::from_str(&text).expect("parses");
        config.sys.interval_secs = 0;
        // The store is free a moment after the last broker's shutdown.
        let deadline = Instant::now() + WAIT;
        let store = loop {
            match midge_store::DiskStore::open(&store_path, midge_store::DiskOptions::default()) {
                Ok(store) => break store,
                Err(error) => assert!(Instant::now() < deadline, "{error}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Broker::builder()
            .config(config)
            .store(store)
            .bind("127.0.0.1:0".parse().expect("addr"))
            .start()
            .await
            .expect("broker starts")
    };
    let edge = start(text.clone(), store_path.clone()).await;
    until_bridge(&edge, true).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let here = client(edge.local_addr(), "numbers").await;
    let mut handles = Vec::new();
    for n in 0..N {
        let handle = here
            .enqueue(
                "q/n",
                Bytes::from(n.to_string()),
                PublishOptions::with_qos(qos),
            )
            .await
            .expect("queued");
        handles.push(handle);
    }
    for handle in handles {
        handle.await.expect("acknowledged here");
    }
    let forwarded = edge.admin().bridges()[0].forwarded_out;
    if forwarded == 0 {
        eprintln!(
            "NOTHING FORWARDED: {:?}; subscriptions here {:?}; bridge client {:?}",
            edge.admin().bridges(),
            edge.admin()
                .subscriptions(None, None, 10)
                .map(|p| p.subscriptions),
            edge.admin().client("$bridge/cloud").map(|c| c.summary)
        );
    }
    here.disconnect(ReasonCode::SUCCESS).await;
    edge.shutdown().await;
    let edge = start(text, store_path).await;
    let seen = receiver.await.expect("the receiver runs");
    let cloud_stats = cloud.stats();
    eprintln!(
        "cloud: dropped_queue_full {} dropped_inbox_full {}",
        cloud_stats.dropped_queue_full, cloud_stats.dropped_inbox_full
    );
    let missing = (0..N).filter(|n| !seen.contains_key(n)).count();
    let duplicates: u32 = seen.values().map(|c| c - 1).sum();
    eprintln!(
        "forwarded before the stop: {forwarded}, seen {}, duplicates {duplicates}",
        seen.len()
    );
    edge.shutdown().await;
    cloud.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    (forwarded, missing, duplicates)
}

/// Three rounds: where the stop falls varies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_messages_are_not_duplicated_by_a_restart_with_persistence() {
    for round in 0..3 {
        let (forwarded, missing, duplicates) = restart_round(round, QoS::ExactlyOnce).await;
        assert!(forwarded < 3000, "the stop came too late to test anything");
        assert_eq!(
            (missing, duplicates),
            (0, 0),
            "round {round}: QoS 2 through a restart (stopped after {forwarded} forwarded)"
        );
    }
}

/// A target broker that announces Maximum QoS 1 (here this broker, `[mqtt] maximum_qos = 1`;
/// at a remote, AWS IoT Core for example) gets QoS 2 messages at QoS 1, not dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_with_maximum_qos_1_gets_qos2_messages_downgraded() {
    let cloud = broker("").await;
    let topics = topic_toml("x/#", "in", 2, "", "");
    let edge = broker(&format!(
        "[mqtt]\nmaximum_qos = 1\n{}",
        bridge_toml("cloud", &cloud.local_addr().to_string(), "5.0", &topics)
    ))
    .await;
    until_bridge(&edge, true).await;
    let here = client(edge.local_addr(), "here").await;
    let mut got = subscribe(&here, "x/#", QoS::AtLeastOnce).await;
    let at_cloud = client(cloud.local_addr(), "at-cloud").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish(&at_cloud, "x/2", Bytes::from_static(b"1"), QoS::ExactlyOnce).await;
    let got = drain(&mut got, Duration::from_secs(2)).await;
    assert_eq!(got.len(), 1, "{:?}", edge.admin().bridges());
    edge.shutdown().await;
    cloud.shutdown().await;
}

/// A midge remote refuses the default `$SYS/...` will as not authorized: the bridge connects
/// again at once without it, with no backoff, however fast the refusal comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_will_fallback_is_taken_without_a_backoff() {
    let cloud = broker("").await;
    let topics = topic_toml("x/#", "out", 1, "", "");
    let config = bridge_toml("cloud", &cloud.local_addr().to_string(), "5.0", &topics)
        .replace("reconnect_delay_ms = 100", "reconnect_delay_ms = 4000")
        .replace(
            "reconnect_delay_max_ms = 1000",
            "reconnect_delay_max_ms = 4000",
        );
    for attempt in 0..60 {
        let edge = broker(&config).await;
        let started = Instant::now();
        until_bridge(&edge, true).await;
        let view = edge.admin().bridges().remove(0);
        edge.shutdown().await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "attempt {attempt}: connected after {:?}: {view:?}",
            started.elapsed()
        );
    }
    cloud.shutdown().await;
}

/// `local_prefix + "#"` also matches the prefix's parent topic (`site` for `site/#`,
/// [MQTT-4.7.1-2]): it is forwarded to the other prefix's parent, or counted as refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_on_the_prefix_parent_is_forwarded_or_counted() {
    let cloud = broker("").await;
    let there = client(cloud.local_addr(), "there").await;
    let mut got = subscribe(&there, "#", QoS::AtLeastOnce).await;
    let topics = topic_toml("#", "out", 1, "site/", "factory/");
    let edge = broker(&bridge_toml(
        "cloud",
        &cloud.local_addr().to_string(),
        "5.0",
        &topics,
    ))
    .await;
    until_bridge(&edge, true).await;
    let here = client(edge.local_addr(), "here").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish(&here, "site", Bytes::from_static(b"1"), QoS::AtLeastOnce).await;
    let got = drain(&mut got, Duration::from_secs(1)).await;
    let view = edge.admin().bridges().remove(0);
    assert!(
        !got.is_empty() || view.refused_out > 0,
        "a message on `site` vanished without a trace: {view:?}"
    );
    edge.shutdown().await;
    cloud.shutdown().await;
}

/// As `messages_published_while_the_remote_refuses_the_bridge_wait_in_its_session`, with
/// messages in flight to the remote when it closes the bridge for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_in_flight_when_the_remote_refuses_the_bridge_keep_the_local_subscription() {
    let refuser = Arc::new(Refuser {
        refuse: AtomicBool::new(false),
        code: ReasonCode::BAD_USER_NAME_OR_PASSWORD,
    });
    let cloud = broker_with("", Some(refuser.clone())).await;
    let there = client(cloud.local_addr(), "there").await;
    let mut got = subscribe(&there, "x/#", QoS::AtLeastOnce).await;
    let topics = topic_toml("x/#", "out", 1, "", "");
    let edge = broker(&format!(
        "[sessions]\nmax_queued_messages = 100000\n{}",
        bridge_toml("cloud", &cloud.local_addr().to_string(), "5.0", &topics)
    ))
    .await;
    until_bridge(&edge, true).await;
    let here = client(edge.local_addr(), "here").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    refuser.refuse.store(true, SeqCst);
    let mut handles = Vec::new();
    for n in 0..2000 {
        let handle = here
            .enqueue(
                format!("x/burst/{n}"),
                Bytes::from_static(b"1"),
                PublishOptions::with_qos(QoS::AtLeastOnce),
            )
            .await
            .expect("queued");
        handles.push(handle);
        if n == 300 {
            assert!(cloud.admin().kick("midge.cloud"));
        }
    }
    for handle in handles {
        handle.await.expect("acknowledged here");
    }
    until_bridge(&edge, false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let session = edge
        .admin()
        .subscriptions(Some("x/#"), None, 10)
        .expect("listed")
        .subscriptions;
    for n in 0..5 {
        let topic = format!("x/while-refused/{n}");
        publish(&here, &topic, Bytes::from_static(b"1"), QoS::AtLeastOnce).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    refuser.refuse.store(false, SeqCst);
    until_bridge(&edge, true).await;
    let topics: Vec<String> = drain(&mut got, Duration::from_secs(3))
        .await
        .iter()
        .map(|m| m.topic().to_owned())
        .collect();
    for n in 0..2000 {
        let topic = format!("x/burst/{n}");
        assert!(
            topics.contains(&topic),
            "{topic} lost; subscriptions here: {session:?}"
        );
    }
    for n in 0..5 {
        let topic = format!("x/while-refused/{n}");
        assert!(
            topics.contains(&topic),
            "{topic} lost; subscriptions to x/# here while refused: {session:?}"
        );
    }
    edge.shutdown().await;
    cloud.shutdown().await;
}

/// A subscription the remote refuses once (here: its resubscription after the remote lost the
/// session, refused by the remote's ACL while it was being reloaded) is made again later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_refused_once_is_made_again_later() {
    let cloud = broker("").await;
    let port = cloud.local_addr();
    let topics = topic_toml("x/#", "in", 1, "", "");
    let edge = broker(&bridge_toml("cloud", &port.to_string(), "5.0", &topics)).await;
    until_bridge(&edge, true).await;
    let here = client(edge.local_addr(), "here").await;
    let mut got = subscribe(&here, "x/#", QoS::AtLeastOnce).await;
    // The remote restarts without its sessions, refusing the bridge's subscription a while.
    cloud.shutdown().await;
    let refuse = Arc::new(AtomicBool::new(true));
    let mut config: BrokerConfig = toml::from_str("").expect("config");
    config.sys.interval_secs = 0;
    let cloud = Broker::builder()
        .config(config)
        .hooks(SubscribeRefuser(refuse.clone()))
        .bind(port)
        .start()
        .await
        .expect("the remote starts again");
    until_bridge(&edge, true).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    refuse.store(false, SeqCst);
    // The bridge is reconnected (its subscriptions are made again on a new session).
    assert!(cloud.admin().kick("midge.cloud"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    until_bridge(&edge, true).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let at_cloud = client(cloud.local_addr(), "at-cloud").await;
    publish(
        &at_cloud,
        "x/after",
        Bytes::from_static(b"1"),
        QoS::AtLeastOnce,
    )
    .await;
    let got = drain(&mut got, Duration::from_secs(2)).await;
    assert_eq!(
        got.len(),
        1,
        "nothing comes in any more: {:?}; the bridge at the remote: {:?}",
        edge.admin().bridges(),
        cloud.admin().client("midge.cloud")
    );
    edge.shutdown().await;
    cloud.shutdown().await;
}

/// A message from the remote whose topic, renamed, has more levels than this broker allows
/// (`limits.max_topic_levels`) is refused and counted, and what comes after it still comes in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_too_deep_for_this_broker_does_not_wedge_the_bridge() {
    let cloud = broker("").await;
    let topics = topic_toml("deep/#", "in", 1, "", "");
    let edge = broker(&format!(
        "[limits]\nmax_topic_levels = 16\n{}",
        bridge_toml("cloud", &cloud.local_addr().to_string(), "5.0", &topics)
    ))
    .await;
    until_bridge(&edge, true).await;
    let here = client(edge.local_addr(), "here").await;
    let mut got = subscribe(&here, "deep/#", QoS::AtLeastOnce).await;
    let at_cloud = client(cloud.local_addr(), "at-cloud").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deep = format!("deep/{}z", "a/".repeat(30));
    publish(&at_cloud, &deep, Bytes::from_static(b"1"), QoS::AtLeastOnce).await;
    publish(
        &at_cloud,
        "deep/after",
        Bytes::from_static(b"2"),
        QoS::AtLeastOnce,
    )
    .await;
    let topics: Vec<String> = drain(&mut got, Duration::from_secs(3))
        .await
        .iter()
        .map(|m| m.topic().to_owned())
        .collect();
    let session = edge.admin().client("$bridge/cloud").map(|c| c.summary);
    assert!(
        topics.contains(&"deep/after".to_owned()),
        "nothing came in after a deep topic: {topics:?}; {:?}; bridge's local session: {session:?}; \
         this broker's stats: {:?}",
        edge.admin().bridges(),
        edge.stats()
    );
    edge.shutdown().await;
    cloud.shutdown().await;
}
