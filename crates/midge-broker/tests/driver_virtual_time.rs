//! The tokio driver on tokio's paused clock, with clients on in-memory pipes
//! ([`midge_broker::BrokerHandle::serve`]): its own timers (keepalive, the core's deadlines) run
//! in virtual time, so these tests wait for minutes in microseconds.

mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::{start, test_config};
use midge_codec::{Connect, Packet, ProtocolVersion, QoS, Subscribe, SubscriptionOptions, Will};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::Instant;

const V5: ProtocolVersion = ProtocolVersion::V5;

/// A raw client on one end of an in-memory pipe.
struct PipeClient {
    stream: DuplexStream,
    input: BytesMut,
}

impl PipeClient {
    fn new(broker: &midge_broker::BrokerHandle) -> Self {
        let (stream, server) = tokio::io::duplex(64 << 10);
        broker.serve(server, "127.0.0.1:40000".parse().expect("addr"));
        Self {
            stream,
            input: BytesMut::new(),
        }
    }

    async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.encode(V5, &mut out).expect("encodes");
        self.stream.write_all(&out).await.expect("written");
    }

    /// The next packet, or `None` once the broker closed the pipe.
    async fn recv(&mut self) -> Option<Packet> {
        loop {
            if let Some(packet) = Packet::decode(&mut self.input, V5, u32::MAX).expect("valid") {
                return Some(packet);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.input.extend_from_slice(&chunk[..n]),
            }
        }
    }

    async fn connect(broker: &midge_broker::BrokerHandle, connect: Connect) -> Self {
        let mut client = Self::new(broker);
        client.send(Packet::Connect(Box::new(connect))).await;
        match client.recv().await {
            Some(Packet::ConnAck(ack)) => assert!(ack.reason_code.is_success()),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        client
    }
}

/// A client that sends nothing for one and a half times its Keep Alive is disconnected
/// [MQTT-3.1.2-22], and not before.
// Conformance: [MQTT-5:3.1.2-22]
#[tokio::test(start_paused = true)]
async fn the_driver_closes_a_silent_client_after_one_and_a_half_keepalives() {
    let broker = start(test_config()).await;
    let mut connect = Connect::new(V5, "silent");
    connect.keep_alive = 60;
    let mut client = PipeClient::connect(&broker, connect).await;
    let connected = Instant::now();
    loop {
        match client.recv().await {
            Some(Packet::Disconnect(_)) => continue,
            None => break,
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
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
    let mut watcher = PipeClient::connect(&broker, quiet).await;
    let subscribe = Subscribe {
        packet_id: midge_codec::PacketId::new(1).expect("non-zero"),
        filters: vec![(
            "will/#".to_owned().into(),
            SubscriptionOptions::qos(QoS::AtMostOnce),
        )],
        properties: Default::default(),
    };
    watcher.send(Packet::Subscribe(subscribe)).await;
    assert!(matches!(watcher.recv().await, Some(Packet::SubAck(_))));
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
    let leaving = PipeClient::connect(&broker, connect).await;
    drop(leaving);
    let gone = Instant::now();
    match watcher.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(p.topic, "will/leaving"),
        other => panic!("expected the will, got {other:?}"),
    }
    let waited = gone.elapsed();
    assert!(
        (Duration::from_secs(600)..Duration::from_secs(601)).contains(&waited),
        "published after {waited:?}"
    );
    broker.shutdown().await;
}
