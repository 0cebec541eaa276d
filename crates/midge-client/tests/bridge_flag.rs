//! `ClientBuilder::bridge`: the bridge bit of a 3.x CONNECT. Against the midge broker and a
//! real mosquitto (skipped loudly when it is missing; a failure under
//! `MIDGE_REQUIRE_PEERS=1`), both of which know it: a bridge gets none of its own messages
//! back, and RETAIN as published on live messages. 5.0 cannot carry the bit.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{builder, start_broker, within, Mosquitto};
use midge_client::{
    ConnectError, ProtocolVersion, PublishOptions, QoS, ReasonCode, SubscribeOptions,
};

const QUIET: Duration = Duration::from_millis(300);

async fn own_messages_and_retain(addr: SocketAddr, broker: &str) {
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V3_1] {
        let bridge = builder(addr, &format!("bridge-{}", version.level()))
            .version(version)
            .bridge(true)
            .connect()
            .await
            .unwrap();
        let plain = builder(addr, &format!("plain-{}", version.level()))
            .version(version)
            .connect()
            .await
            .unwrap();
        let sub = SubscribeOptions::with_qos(QoS::AtLeastOnce);
        let (_, mut at_bridge) = bridge.subscribe("bridged/#", sub).await.unwrap();
        let (_, mut at_plain) = plain.subscribe("bridged/#", sub).await.unwrap();
        let qos1 = PublishOptions::with_qos(QoS::AtLeastOnce);

        bridge
            .publish("bridged/own", "b", qos1.clone())
            .await
            .unwrap();
        let got = within("at the plain client", at_plain.recv())
            .await
            .unwrap();
        assert_eq!(got.topic(), "bridged/own");
        assert!(
            tokio::time::timeout(QUIET, at_bridge.recv()).await.is_err(),
            "{broker} {version:?}: the bridge got its own message back"
        );
        plain
            .publish("bridged/plain", "p", qos1.clone())
            .await
            .unwrap();
        for stream in [&mut at_bridge, &mut at_plain] {
            let got = within("the plain client's message", stream.recv())
                .await
                .unwrap();
            assert_eq!(got.topic(), "bridged/plain", "{broker} {version:?}");
        }

        // A live retained message: RETAIN as published for the bridge only.
        plain
            .publish("bridged/kept", "r", qos1.clone().retain(true))
            .await
            .unwrap();
        let at_b = within("retained, at the bridge", at_bridge.recv())
            .await
            .unwrap();
        let at_p = within("retained, at the plain client", at_plain.recv())
            .await
            .unwrap();
        assert!(
            at_b.retain(),
            "{broker} {version:?}: RETAIN kept for the bridge"
        );
        assert!(
            !at_p.retain(),
            "{broker} {version:?}: RETAIN cleared for a client"
        );
        plain
            .publish("bridged/kept", "", qos1.retain(true))
            .await
            .unwrap();
        bridge.disconnect(ReasonCode::SUCCESS).await;
        plain.disconnect(ReasonCode::SUCCESS).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_midge_broker_honours_the_bridge_bit() {
    let broker = start_broker().await;
    own_messages_and_retain(broker.local_addr(), "midge").await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_honours_the_bridge_bit() {
    let Some(mosquitto) = Mosquitto::start("bridge-bit").await else {
        return;
    };
    own_messages_and_retain(mosquitto.addr, "mosquitto").await;
}

#[tokio::test]
async fn the_bridge_bit_is_refused_under_v5() {
    let outcome = builder("127.0.0.1:1".parse().unwrap(), "bridge-v5")
        .bridge(true)
        .build();
    assert!(
        matches!(outcome, Err(ConnectError::InvalidConfig(_))),
        "{:?}",
        outcome.map(|_| ())
    );
}
