//! A broker stopped with `shutdown` and a new one started on the same store: persistent
//! sessions go on with what was queued for them while offline, with their QoS 2 flows where
//! they were, and with their expiry.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use midge_broker::{Broker, BrokerHandle, MemoryStore};
use midge_codec::{Connect, Packet, ProtocolVersion, PubAck, Publish, QoS, ReasonCode};

async fn start_on(store: &Arc<MemoryStore>) -> BrokerHandle {
    Broker::builder()
        .config(test_config())
        .store(store.clone())
        .bind("127.0.0.1:0".parse().expect("addr"))
        .start()
        .await
        .expect("broker starts")
}

/// CONNECT for a session that outlives its connection by `expiry` seconds (3.1.1: for ever).
fn persistent(version: ProtocolVersion, id: &str, expiry: u32) -> Connect {
    let mut connect = Connect::new(version, id.to_owned());
    connect.clean_start = false;
    if version.is_v5() {
        connect.properties.session_expiry_interval = Some(expiry);
    }
    connect
}

async fn until_offline(broker: &BrokerHandle) {
    for _ in 0..300 {
        if broker.stats().clients_connected == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("clients still connected: {:?}", broker.stats());
}

/// Receives `n` PUBLISH packets, which the broker may send one after the other without
/// waiting for the QoS 2 flows, and completes every flow.
async fn receive(client: &mut Peer, n: usize) -> Vec<Publish> {
    let mut got = Vec::new();
    let mut open = 0;
    while got.len() < n || open > 0 {
        match client.recv_packet().await {
            Packet::Publish(p) => {
                let id = p.packet_id.expect("QoS 1 or 2");
                if p.qos == QoS::ExactlyOnce {
                    open += 1;
                    client.send(Packet::PubRec(PubAck::new(id))).await;
                } else {
                    client.send(Packet::PubAck(PubAck::new(id))).await;
                }
                got.push(p);
            }
            Packet::PubRel(rel) => {
                open -= 1;
                client
                    .send(Packet::PubComp(PubAck::new(rel.packet_id)))
                    .await;
            }
            other => panic!("expected PUBLISH or PUBREL, got {other:?}"),
        }
    }
    got
}

// Conformance: [MQTT-5:4.1.0-1] [MQTT-3.1.1:4.1.0-1]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_routed_to_an_offline_session_survive_a_restart() {
    let store = Arc::new(MemoryStore::keeping_sessions());
    let first = start_on(&store).await;
    let subscribers = [(V5, "off-v5"), (V311, "off-v311")];
    for (version, id) in subscribers {
        let (mut s, ack) =
            Peer::connect_with(first.local_addr(), persistent(version, id, 600)).await;
        assert!(!ack.session_present);
        s.subscribe("r/#", QoS::ExactlyOnce).await;
        s.disconnect().await;
    }
    until_offline(&first).await;
    // Both sessions were saved as they went offline, empty.
    assert_eq!(store.session_count(), 2);
    // Routed into the offline sessions after that save.
    let mut p = Peer::connect(first.local_addr(), V5, "off-pub").await;
    assert_eq!(
        p.publish("r/1", "one", QoS::AtLeastOnce, false).await,
        ReasonCode::SUCCESS
    );
    assert_eq!(
        p.publish("r/2", "two", QoS::ExactlyOnce, false).await,
        ReasonCode::SUCCESS
    );
    p.disconnect().await;
    first.shutdown().await;

    let second = start_on(&store).await;
    // The restored sessions are subscribed: routed to while still offline.
    assert_eq!(second.stats().subscriptions, 2);
    let mut p = Peer::connect(second.local_addr(), V5, "off-pub").await;
    assert_eq!(
        p.publish("r/3", "three", QoS::AtLeastOnce, false).await,
        ReasonCode::SUCCESS
    );
    p.disconnect().await;
    for (version, id) in subscribers {
        let (mut s, ack) =
            Peer::connect_with(second.local_addr(), persistent(version, id, 600)).await;
        assert!(ack.session_present, "{id}");
        let got: Vec<_> = receive(&mut s, 3)
            .await
            .into_iter()
            .map(|p| (p.payload, p.qos))
            .collect();
        assert_eq!(
            got,
            [
                (Bytes::from_static(b"one"), QoS::AtLeastOnce),
                (Bytes::from_static(b"two"), QoS::ExactlyOnce),
                (Bytes::from_static(b"three"), QoS::AtLeastOnce),
            ],
            "{id}"
        );
        s.expect_silence(Duration::from_millis(150)).await;
        s.disconnect().await;
    }
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_keeps_no_sessions_restores_none() {
    let store = Arc::new(MemoryStore::new());
    let first = start_on(&store).await;
    let (mut s, _) = Peer::connect_with(first.local_addr(), persistent(V5, "gone", 600)).await;
    s.subscribe("g/#", QoS::AtLeastOnce).await;
    s.disconnect().await;
    until_offline(&first).await;
    first.shutdown().await;
    assert_eq!(store.session_count(), 0);
    let second = start_on(&store).await;
    let (_s, ack) = Peer::connect_with(second.local_addr(), persistent(V5, "gone", 600)).await;
    assert!(!ack.session_present);
    second.shutdown().await;
}

/// A QoS 2 message in the middle of both its flows when the broker stops: the publisher has
/// its PUBREC but has not released it, the subscriber has the PUBLISH but has not answered.
/// After the restart the publisher's resend is not routed again [MQTT-4.3.3-10], and the
/// subscriber gets the message once more with DUP [MQTT-4.4.0-1], and only once.
// Conformance: [MQTT-5:4.3.3-10] [MQTT-5:4.4.0-1] [MQTT-3.1.1:4.3.3-2] [MQTT-3.1.1:4.4.0-1]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_flows_in_the_middle_go_on_after_a_restart() {
    for version in [V5, V311] {
        let store = Arc::new(MemoryStore::keeping_sessions());
        let first = start_on(&store).await;
        let addr = first.local_addr();
        let (mut s, _) = Peer::connect_with(addr, persistent(version, "q2-sub", 600)).await;
        s.subscribe("x/#", QoS::ExactlyOnce).await;
        let (mut p, _) = Peer::connect_with(addr, persistent(version, "q2-pub", 600)).await;
        let publish = Publish {
            qos: QoS::ExactlyOnce,
            topic: "x/a".into(),
            packet_id: Some(pid(10)),
            payload: Bytes::from_static(b"once"),
            ..Publish::default()
        };
        p.send(Packet::Publish(publish.clone())).await;
        assert!(matches!(p.recv_packet().await, Packet::PubRec(a) if a.packet_id == pid(10)));
        let Packet::Publish(delivered) = s.recv_packet().await else {
            panic!("expected PUBLISH");
        };
        let out_id = delivered.packet_id.expect("QoS 2 has an identifier");
        // Stop with both flows open. The clients do not close their side, so the broker
        // waits for them up to its close timeout.
        first.shutdown().await;
        drop((p, s));

        let second = start_on(&store).await;
        let addr = second.local_addr();
        // The publisher first: a broker that routed its resend again would queue a second copy.
        let (mut p, ack) = Peer::connect_with(addr, persistent(version, "q2-pub", 600)).await;
        assert!(ack.session_present);
        p.send(Packet::Publish(Publish {
            dup: true,
            ..publish
        }))
        .await;
        assert!(matches!(p.recv_packet().await, Packet::PubRec(a) if a.packet_id == pid(10)));
        p.send(Packet::PubRel(PubAck::new(pid(10)))).await;
        let Packet::PubComp(comp) = p.recv_packet().await else {
            panic!("expected PUBCOMP");
        };
        assert_eq!(
            (comp.packet_id, comp.reason_code),
            (pid(10), ReasonCode::SUCCESS)
        );

        let (mut s, ack) = Peer::connect_with(addr, persistent(version, "q2-sub", 600)).await;
        assert!(ack.session_present);
        let again = s.recv_publish().await;
        assert_eq!(
            (again.packet_id, again.dup, again.payload),
            (Some(out_id), true, Bytes::from_static(b"once"))
        );
        s.expect_silence(Duration::from_millis(200)).await;
        s.disconnect().await;
        p.disconnect().await;
        second.shutdown().await;
    }
}

/// A stopped broker expires nothing in the store it left; the broker that restores a session
/// expires it, counting its Session Expiry Interval from the restart.
// Conformance: [MQTT-5:3.1.2-23]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_session_expires() {
    let store = Arc::new(MemoryStore::keeping_sessions());
    let first = start_on(&store).await;
    let (mut s, _) = Peer::connect_with(first.local_addr(), persistent(V5, "brief", 1)).await;
    s.subscribe("b/#", QoS::AtLeastOnce).await;
    s.disconnect().await;
    until_offline(&first).await;
    first.shutdown().await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        store.session_count(),
        1,
        "the stopped broker expired the session"
    );

    let second = start_on(&store).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        store.session_count(),
        0,
        "the restored session did not expire"
    );
    assert_eq!(second.stats().subscriptions, 0);
    let (_s, ack) = Peer::connect_with(second.local_addr(), persistent(V5, "brief", 1)).await;
    assert!(!ack.session_present);
    second.shutdown().await;
}
