//! The bridge bit of a 3.x CONNECT (the high bit of the protocol level byte, as mosquitto's
//! bridges set it): the broker sends such a client none of its own messages back and keeps
//! the RETAIN flag as published on live messages, while an ordinary 3.x client gets its own
//! messages and RETAIN cleared, as 3.1.1 says.

mod common;

use std::time::Duration;

use common::{start, test_config, Peer, V311};
use midge_codec::{Connect, ProtocolVersion, QoS, ReasonCode};

/// Long enough for a message the broker would route to arrive.
const QUIET: Duration = Duration::from_millis(300);

async fn peer(
    addr: std::net::SocketAddr,
    version: ProtocolVersion,
    id: &str,
    bridge: bool,
) -> Peer {
    let mut connect = Connect::new(version, id.to_owned());
    connect.bridge = bridge;
    let (peer, connack) = Peer::connect_with(addr, connect).await;
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS, "{id} is accepted");
    peer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_gets_no_own_messages_back_and_keeps_retain_as_published() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    for version in [ProtocolVersion::V3_1, V311] {
        let mut bridge = peer(addr, version, "bridge", true).await;
        let mut ordinary = peer(addr, version, "ordinary", false).await;
        bridge.subscribe("#", QoS::AtLeastOnce).await;
        ordinary.subscribe("#", QoS::AtLeastOnce).await;

        // Its own publish does not come back to the bridge; the ordinary client gets it. (QoS 0
        // own publishes: a copy coming back may come before or after a PUBACK.)
        bridge
            .publish("from/bridge", "b", QoS::AtMostOnce, false)
            .await;
        let got = ordinary.recv_publish().await;
        assert_eq!(got.topic.as_str(), "from/bridge");
        bridge.expect_silence(QUIET).await;

        // The ordinary client gets its own publish back (3.1.1 has no No Local).
        ordinary
            .publish("from/ordinary", "o", QoS::AtMostOnce, false)
            .await;
        for receiver in [&mut bridge, &mut ordinary] {
            let got = receiver.recv_publish().await;
            assert_eq!(got.topic.as_str(), "from/ordinary");
        }

        // A live retained message: the bridge sees RETAIN as published, the ordinary client
        // sees it cleared [MQTT-3.3.1-9].
        let mut third = peer(addr, version, "third", false).await;
        let code = third.publish("kept", "r", QoS::AtLeastOnce, true).await;
        assert_eq!(code, ReasonCode::SUCCESS);
        let at_bridge = bridge.recv_publish().await;
        let at_ordinary = ordinary.recv_publish().await;
        assert_eq!(at_bridge.topic.as_str(), "kept");
        assert!(
            at_bridge.retain,
            "{version:?}: the bridge keeps RETAIN as published"
        );
        assert_eq!(at_ordinary.topic.as_str(), "kept");
        assert!(
            !at_ordinary.retain,
            "{version:?}: an ordinary client gets RETAIN cleared"
        );
        // Clear the retained message for the next round.
        let code = third.publish("kept", "", QoS::AtLeastOnce, true).await;
        assert_eq!(code, ReasonCode::SUCCESS);
        for receiver in [&mut bridge, &mut ordinary] {
            let _ = receiver.recv_publish().await;
        }
        third.disconnect().await;
        bridge.disconnect().await;
        ordinary.disconnect().await;
    }
}

/// 5.0 has no bridge bit: level 0x85 is an unsupported protocol version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_0x85_is_refused() {
    let broker = start(test_config()).await;
    let mut peer = Peer::tcp(broker.local_addr(), ProtocolVersion::V5).await;
    // CONNECT "MQTT" level 0x85, clean start, keepalive 60, no properties, client "cid".
    peer.send_raw(&[
        0x10, 0x10, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x85, 0x02, 0x00, 0x3c, 0x00, 0x00, 0x03,
        b'c', b'i', b'd',
    ])
    .await;
    let packets = peer.until_closed().await;
    match packets.as_slice() {
        [midge_codec::Packet::ConnAck(connack)] => {
            assert_eq!(
                connack.reason_code,
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
            );
        }
        other => panic!("expected CONNACK 0x84, got {other:?}"),
    }
}
