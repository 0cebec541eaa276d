//! What a long-lived client (a bridge) needs from reconnection: publishes still unfinished
//! when the connection drops are delivered whether the broker kept the session or lost it;
//! a failover connector uses the first connector that opens; and with
//! `ReconnectPolicy::always_retry` a refused CONNECT (bad credentials) is retried with
//! backoff and reported each time. Against a scripted broker on tokio's paused clock, and
//! the midge broker.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::script::{Network, Peer};
use common::{broker_config, builder, fast_reconnect, start_broker, within, Proxy};
use midge_client::codec::{ConnAck, Packet, PubAck, Publish};
use midge_client::{
    Client, ClientBuilder, CloseReason, ConnectError, ConnectionEvent, Connector, ProtocolVersion,
    PublishOptions, QoS, ReasonCode, ReconnectPolicy, SubscribeOptions,
};
use tokio::sync::broadcast;

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
const QOS1: QoS = QoS::AtLeastOnce;
const QOS2: QoS = QoS::ExactlyOnce;

fn pubq(qos: QoS) -> PublishOptions {
    PublishOptions::with_qos(qos)
}

async fn publish_packet(peer: &mut Peer, what: &str) -> Publish {
    match peer.recv_packet().await {
        Packet::Publish(publish) => publish,
        other => panic!("expected PUBLISH ({what}), got {other:?}"),
    }
}

async fn next_event(events: &mut broadcast::Receiver<ConnectionEvent>) -> ConnectionEvent {
    within("a connection event", events.recv())
        .await
        .expect("event")
}

async fn until_connected(events: &mut broadcast::Receiver<ConnectionEvent>) -> bool {
    loop {
        if let ConnectionEvent::Connected { session_present } = next_event(events).await {
            return session_present;
        }
    }
}

// ------------------------------------------------------------------ a lost session

/// The broker lost the session (Session Present 0) while QoS 1 and 2 publishes were in
/// flight: they are sent again as new messages (DUP 0), ahead of what was queued while
/// offline, and their handles resolve with the new acknowledgements. A QoS 2 publish the
/// broker had received (PUBREC) completes: the broker has it.
// Conformance: [MQTT-5:3.2.2-5] [MQTT-3.1.1:3.2.2-4]
#[tokio::test(start_paused = true)]
async fn publishes_in_flight_when_the_session_is_lost_are_sent_again_as_new() {
    for version in [V5, V311] {
        let (mut network, builder) = Network::client(version, "lost");
        let client = builder
            .clean_start(false)
            .session_expiry(600)
            .keep_alive(0)
            .build()
            .unwrap();
        let mut events = client.events();
        let mut peer = network.accept().await;
        peer.accept_connect(false).await;
        let qos1 = client.try_publish("l/1", "one", pubq(QOS1)).unwrap();
        let qos2 = client.try_publish("l/2", "two", pubq(QOS2)).unwrap();
        let received = client.try_publish("l/3", "three", pubq(QOS2)).unwrap();
        publish_packet(&mut peer, "one").await;
        publish_packet(&mut peer, "two").await;
        let third = publish_packet(&mut peer, "three").await;
        let id3 = third.packet_id.unwrap();
        peer.send(Packet::PubRec(PubAck::new(id3))).await;
        assert_eq!(peer.recv_packet().await, Packet::PubRel(PubAck::new(id3)));
        drop(peer);
        loop {
            if let ConnectionEvent::Reconnecting { .. } = next_event(&mut events).await {
                break;
            }
        }
        let offline = client.try_publish("l/4", "four", pubq(QOS1)).unwrap();

        let mut peer = network.accept().await;
        // A broker that lost everything.
        peer.accept_connect(false).await;
        assert!(!until_connected(&mut events).await, "{version:?}");
        assert_eq!(
            within("the received QoS 2", received).await,
            Ok(ReasonCode::SUCCESS),
            "{version:?}"
        );
        let mut ids = Vec::new();
        for (topic, qos) in [("l/1", QOS1), ("l/2", QOS2), ("l/4", QOS1)] {
            let publish = publish_packet(&mut peer, topic).await;
            assert_eq!(publish.topic.as_str(), topic, "{version:?}: order");
            assert!(
                !publish.dup,
                "{version:?}: {topic} is a new message to this broker"
            );
            assert_eq!(publish.qos, qos);
            ids.push(publish.packet_id.unwrap());
        }
        assert_eq!(peer.next(Duration::from_secs(5)).await, None, "{version:?}");
        peer.send(Packet::PubAck(PubAck::new(ids[0]))).await;
        peer.send(Packet::PubRec(PubAck::new(ids[1]))).await;
        assert_eq!(
            peer.recv_packet().await,
            Packet::PubRel(PubAck::new(ids[1]))
        );
        peer.send(Packet::PubComp(PubAck::new(ids[1]))).await;
        peer.send(Packet::PubAck(PubAck::new(ids[2]))).await;
        for (what, handle) in [("QoS 1", qos1), ("QoS 2", qos2), ("offline", offline)] {
            assert_eq!(
                within(what, handle).await,
                Ok(ReasonCode::SUCCESS),
                "{version:?}: {what}"
            );
        }
    }
}

/// End to end: the broker acknowledges nothing the client sees (the proxy loses its
/// replies) while 200 QoS 1 publishes go out; then the connection drops and the client
/// reaches a fresh broker that has no session for it. Every publish is delivered there and
/// resolves; none is left hanging or dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_publish_is_lost_when_the_broker_lost_the_session() {
    const N: usize = 200;
    for version in [V5, V311] {
        let first = start_broker().await;
        let proxy = Proxy::start(first.local_addr(), 11).await;
        let client = builder(proxy.addr, "lost-e2e")
            .version(version)
            .clean_start(false)
            .session_expiry(600)
            .connect()
            .await
            .unwrap();
        let mut events = client.events();
        proxy.lose_replies(true);
        let mut handles = Vec::new();
        for n in 0..N {
            handles.push(
                client
                    .enqueue("lost/x", n.to_string(), pubq(QOS1))
                    .await
                    .unwrap(),
            );
        }
        // The first broker has them, but the client has no acknowledgement.
        within("the first broker has them", async {
            while first.stats().messages_received < N as u64 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(
            tokio::time::timeout(Duration::from_millis(100), &mut handles[0])
                .await
                .is_err(),
            "{version:?}: an acknowledgement got through"
        );
        let second = start_broker().await;
        let watcher = builder(second.local_addr(), "lost-watcher")
            .connect()
            .await
            .unwrap();
        let (_, mut seen) = watcher
            .subscribe("lost/#", SubscribeOptions::with_qos(QOS1))
            .await
            .unwrap();
        proxy.retarget(second.local_addr());
        proxy.lose_replies(false);
        proxy.cut_all();
        assert!(
            !until_connected(&mut events).await,
            "{version:?}: a fresh broker"
        );
        for handle in handles {
            assert_eq!(
                within("a publish resolves", handle).await,
                Ok(ReasonCode::SUCCESS),
                "{version:?}"
            );
        }
        let mut payloads = BTreeSet::new();
        while payloads.len() < N {
            let message = within("delivered again", seen.recv()).await.unwrap();
            payloads.insert(message.payload().clone());
        }
        client.disconnect(ReasonCode::SUCCESS).await;
        watcher.disconnect(ReasonCode::SUCCESS).await;
        second.shutdown().await;
        first.shutdown().await;
    }
}

// ------------------------------------------------------------------ failover

/// An address where nothing listens: connections to it are refused.
fn nowhere() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

fn tcp(addr: std::net::SocketAddr) -> Connector {
    Connector::tcp(addr.ip().to_string(), addr.port())
}

/// A failover connector skips a dead address, and a connector that never opens once the
/// connect timeout is up, for the live broker after them; and every reconnection starts
/// from the first again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_uses_the_first_connector_that_opens() {
    let broker = start_broker().await;
    let black_hole = Connector::from_fn(|| async {
        std::future::pending::<std::io::Result<tokio::io::DuplexStream>>().await
    });
    let connector = Connector::failover([tcp(nowhere()), black_hole, tcp(broker.local_addr())]);
    assert!(format!("{connector:?}").contains("failover ["));
    let started = std::time::Instant::now();
    let client = ClientBuilder::with_connector(connector)
        .client_id("failover")
        .connect_timeout(Duration::from_millis(300))
        .reconnect(Some(fast_reconnect()))
        .connect()
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the black hole was waited for"
    );
    let (_, mut messages) = client
        .subscribe("failover/#", SubscribeOptions::with_qos(QOS1))
        .await
        .unwrap();
    client
        .publish("failover/x", "through", pubq(QOS1))
        .await
        .unwrap();
    assert_eq!(
        within("a message", messages.recv())
            .await
            .unwrap()
            .payload(),
        "through"
    );
    client.disconnect(ReasonCode::SUCCESS).await;

    broker.shutdown().await;
}

/// Every attempt starts from the first connector: once the primary is up, a lost connection
/// to the backup brings the client back to the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_goes_back_to_the_primary() {
    let backup = start_broker().await;
    let to_backup = Proxy::start(backup.local_addr(), 5).await;
    let primary_addr = nowhere();
    let client = ClientBuilder::with_connector(Connector::failover([
        tcp(primary_addr),
        tcp(to_backup.addr),
    ]))
    .client_id("failover-back")
    .reconnect(Some(fast_reconnect()))
    .connect()
    .await
    .unwrap();
    let mut events = client.events();
    let primary = common::start_broker_on(primary_addr).await;
    let watcher = builder(primary_addr, "primary-watcher")
        .connect()
        .await
        .unwrap();
    let (_, mut seen) = watcher
        .subscribe("back/#", SubscribeOptions::with_qos(QOS1))
        .await
        .unwrap();
    to_backup.cut_all();
    until_connected(&mut events).await;
    client.publish("back/x", "here", pubq(QOS1)).await.unwrap();
    assert_eq!(
        within("at the primary", seen.recv())
            .await
            .unwrap()
            .payload(),
        "here"
    );
    client.disconnect(ReasonCode::SUCCESS).await;
    watcher.disconnect(ReasonCode::SUCCESS).await;
    primary.shutdown().await;
    backup.shutdown().await;
}

// ------------------------------------------------------------------ refused credentials

/// With `always_retry`, a CONNACK refusal for bad credentials (0x86; 3.1.1 return code 4) is
/// retried with the policy's backoff, each refusal reported as `Disconnected`, until the
/// broker accepts: the client does not give up, and does not spin.
#[tokio::test(start_paused = true)]
async fn with_always_retry_refused_credentials_are_retried_with_backoff_and_reported() {
    for version in [V5, V311] {
        let (mut network, builder) = Network::client(version, "refused");
        let policy =
            ReconnectPolicy::exponential(Duration::from_millis(100), Duration::from_secs(1))
                .jitter(false)
                .always_retry(true);
        let client = builder
            .credentials("bridge", "wrong")
            .reconnect(Some(policy))
            .build()
            .unwrap();
        let mut events = client.events();
        for n in 0..5u32 {
            let mut peer = network.accept().await;
            peer.accept_with(ConnAck {
                reason_code: ReasonCode::BAD_USER_NAME_OR_PASSWORD,
                ..ConnAck::default()
            })
            .await;
            assert_eq!(
                next_event(&mut events).await,
                ConnectionEvent::Disconnected {
                    reason: CloseReason::Refused(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
                },
                "{version:?}"
            );
            let delay = Duration::from_millis(100 * 2u64.pow(n)).min(Duration::from_secs(1));
            assert_eq!(
                next_event(&mut events).await,
                ConnectionEvent::Reconnecting {
                    attempt: n + 1,
                    delay
                },
                "{version:?}"
            );
        }
        let mut peer = network.accept().await;
        peer.accept_connect(false).await;
        assert!(!until_connected(&mut events).await);
        let attempts = network.attempts();
        let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
        for (n, gap) in gaps.iter().enumerate() {
            let delay = Duration::from_millis(100 * 2u64.pow(n as u32)).min(Duration::from_secs(1));
            assert!(
                *gap >= delay && *gap <= delay + Duration::from_millis(1),
                "{version:?}: attempt {n} after {gap:?}, not {delay:?}"
            );
        }
        assert_eq!(attempts.len(), 6);
        assert!(client.is_connected());
    }
}

/// Without `always_retry` the same refusal ends the client: nothing is retried.
#[tokio::test(start_paused = true)]
async fn without_always_retry_refused_credentials_end_the_client() {
    let (mut network, builder) = Network::client(V311, "refused-once");
    let connecting = tokio::spawn(builder.credentials("bridge", "wrong").connect());
    let mut peer = network.accept().await;
    peer.accept_with(ConnAck {
        reason_code: ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        ..ConnAck::default()
    })
    .await;
    assert_eq!(
        within("refused", connecting).await.unwrap().unwrap_err(),
        ConnectError::Failed(CloseReason::Refused(ReasonCode::BAD_USER_NAME_OR_PASSWORD))
    );
    // The client has ended: its connector is gone, and no attempt comes.
    assert!(!network.connects_within(Duration::from_secs(60)).await);
    assert_eq!(network.attempts().len(), 1);
}

/// End to end against the midge broker with a password file: a wrong password is refused
/// on every attempt and reported, the client keeps trying, and it connects once it reaches
/// a broker that accepts it.
#[cfg(feature = "scram")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_password_is_retried_until_the_broker_accepts() {
    use midge_auth::passwd::{PasswordFile, Scheme};
    let dir = std::env::temp_dir().join(format!("midge-client-refused-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("passwords");
    let mut file = PasswordFile::new();
    file.set_password("bridge", b"right", Scheme::Scram { iterations: 4096 })
        .unwrap();
    file.write(&path).unwrap();
    let mut config = broker_config();
    config.auth.password_file = Some(path);
    let strict = midge_broker::Broker::builder()
        .config(config)
        .bind("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .expect("broker starts");
    let open = start_broker().await;
    for version in [V5, V311] {
        let proxy = Proxy::start(strict.local_addr(), 9).await;
        let client: Client = builder(proxy.addr, "refused-e2e")
            .version(version)
            .credentials("bridge", "wrong")
            .reconnect(Some(fast_reconnect().always_retry(true)))
            .build()
            .unwrap();
        let mut events = client.events();
        let mut refusals = 0;
        let mut delays = Vec::new();
        while refusals < 3 {
            match next_event(&mut events).await {
                ConnectionEvent::Disconnected {
                    reason:
                        CloseReason::Refused(
                            ReasonCode::BAD_USER_NAME_OR_PASSWORD | ReasonCode::NOT_AUTHORIZED,
                        ),
                } => refusals += 1,
                ConnectionEvent::Reconnecting { delay, .. } => delays.push(delay),
                other => panic!("{version:?}: {other:?}"),
            }
        }
        assert!(!client.is_closed(), "{version:?}: gave up");
        // Backoff: the delays grow (within the jitter's upper half).
        assert!(
            delays.len() >= 2 && delays[1] >= delays[0] / 2,
            "{delays:?}"
        );
        // Someone puts it right: the client reaches a broker that accepts it.
        proxy.retarget(open.local_addr());
        until_connected(&mut events).await;
        client.publish("refused/x", "in", pubq(QOS1)).await.unwrap();
        client.disconnect(ReasonCode::SUCCESS).await;
    }
    strict.shutdown().await;
    open.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
