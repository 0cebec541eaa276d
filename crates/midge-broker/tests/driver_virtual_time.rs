//! The tokio driver on tokio's paused clock, with clients on in-memory pipes
//! ([`midge_broker::BrokerHandle::serve`]): its own timers (keepalive, the core's deadlines) run
//! in virtual time, so these tests wait for minutes in microseconds.

mod common;

use std::time::Duration;

use common::{start, test_config, Peer, Recv};
use midge_broker::BrokerHandle;
use midge_codec::{Connect, Packet, ProtocolVersion, QoS, Will};
use tokio::io::DuplexStream;
use tokio::time::Instant;

const V5: ProtocolVersion = ProtocolVersion::V5;

/// Longer than any wait these tests make, in virtual time.
const HOUR: Duration = Duration::from_secs(3600);

/// A client on one end of an in-memory pipe that `broker` serves, connected with `connect`.
async fn pipe_client(broker: &BrokerHandle, connect: Connect) -> Peer<DuplexStream> {
    let (stream, server) = tokio::io::duplex(64 << 10);
    broker.serve(server, "127.0.0.1:40000".parse().expect("addr"));
    let mut client = Peer::new(stream, V5).with_wait(HOUR);
    let ack = client.handshake(connect).await;
    assert!(ack.reason_code.is_success(), "CONNACK {ack:?}");
    client
}

/// A client that sends nothing for one and a half times its Keep Alive is disconnected
/// [MQTT-3.1.2-22], and not before.
// Conformance: [MQTT-5:3.1.2-22]
#[tokio::test(start_paused = true)]
async fn the_driver_closes_a_silent_client_after_one_and_a_half_keepalives() {
    let broker = start(test_config()).await;
    let mut connect = Connect::new(V5, "silent");
    connect.keep_alive = 60;
    let mut client = pipe_client(&broker, connect).await;
    let connected = Instant::now();
    let packets = client.until_closed().await;
    assert!(
        packets.iter().all(|p| matches!(p, Packet::Disconnect(_))),
        "unexpected {packets:?}"
    );
    let waited = connected.elapsed();
    assert!(
        (Duration::from_secs(90)..Duration::from_secs(91)).contains(&waited),
        "closed after {waited:?}"
    );
    broker.shutdown().await;
}

/// The driver's timer task publishes a delayed will at its delay [MQTT-3.1.3-9].
// Conformance: [MQTT-5:3.1.3-9]
#[tokio::test(start_paused = true)]
async fn the_driver_publishes_a_delayed_will_at_its_delay() {
    let broker = start(test_config()).await;
    // Waits ten minutes without a word: no keepalive.
    let mut quiet = Connect::new(V5, "watcher");
    quiet.keep_alive = 0;
    let mut watcher = pipe_client(&broker, quiet).await;
    watcher.subscribe("will/#", QoS::AtMostOnce).await;
    let mut connect = Connect::new(V5, "leaving");
    connect.properties.session_expiry_interval = Some(3600);
    let mut will = Will {
        topic: "will/leaving".to_owned().into(),
        payload: "gone".into(),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    };
    will.properties.will_delay_interval = Some(600);
    connect.will = Some(will);
    let leaving = pipe_client(&broker, connect).await;
    drop(leaving);
    let gone = Instant::now();
    match watcher.recv().await {
        Recv::Packet(Packet::Publish(p)) => assert_eq!(p.topic, "will/leaving"),
        other => panic!("expected the will, got {other:?}"),
    }
    let waited = gone.elapsed();
    assert!(
        (Duration::from_secs(600)..Duration::from_secs(601)).contains(&waited),
        "published after {waited:?}"
    );
    broker.shutdown().await;
}
