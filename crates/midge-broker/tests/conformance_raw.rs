//! Conformance tests of the broker over raw TCP on 127.0.0.1: hand-built packets in, every
//! packet the broker sends decoded and checked, under MQTT 3.1.1 and 5.0. Each test carries the
//! tags of the normative statements it checks (`[MQTT-5:x]`, `[MQTT-3.1.1:x]`), which
//! `docs/gen_conformance.py` collects into `docs/conformance.md`.

mod common;

use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use midge_broker::{ConnectRequest, Hooks};
use midge_codec::{
    ByteStr, Connect, Packet, PayloadFormat, ProtocolVersion, PubAck, QoS, ReasonCode, SubAck,
    Subscribe, SubscriptionOptions, Unsubscribe, Will,
};

const BOTH: [ProtocolVersion; 2] = [V311, V5];

/// A packet from its first byte and body; the Remaining Length is computed (below 128).
fn raw(first: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128);
    let mut out = vec![first, body.len() as u8];
    out.extend_from_slice(body);
    out
}

/// `body3` under 3.1.1, `body5` under 5.0.
fn per_version(version: ProtocolVersion, first: u8, body3: &[u8], body5: &[u8]) -> Vec<u8> {
    raw(first, if version.is_v5() { body5 } else { body3 })
}

/// Asserts that the broker ends the connection over `bytes` as a violation: DISCONNECT with
/// `code` (5.0) or no packet at all (3.1.1), then the close.
async fn assert_violation(
    addr: SocketAddr,
    version: ProtocolVersion,
    bytes: &[u8],
    code: ReasonCode,
) {
    let mut c = Peer::connect(addr, version, "").await;
    c.send_raw(bytes).await;
    let packets = c.until_closed().await;
    if version.is_v5() {
        assert!(
            matches!(packets.as_slice(), [Packet::Disconnect(d)] if d.reason_code == code),
            "{bytes:02x?}: expected DISCONNECT {code:?}, got {packets:?}"
        );
    } else {
        assert!(packets.is_empty(), "{bytes:02x?}: {packets:?}");
    }
}

fn will(topic: &str, payload: &str, retain: bool) -> Will {
    Will {
        topic: topic.to_owned().into(),
        payload: Bytes::from(payload.to_owned()),
        qos: QoS::AtLeastOnce,
        retain,
        properties: Default::default(),
    }
}

// ------------------------------------------------------------------- malformed and hostile

// Conformance: [MQTT-5:3.6.1-1] [MQTT-3.1.1:3.6.1-1] [MQTT-5:3.8.1-1] [MQTT-3.1.1:3.8.1-1]
// Conformance: [MQTT-5:3.10.1-1] [MQTT-3.1.1:3.10.1-1] [MQTT-5:3.14.1-1] [MQTT-3.1.1:3.14.1-1]
// Conformance: [MQTT-5:3.15.1-1] [MQTT-3.1.1:2.2.2-2] [MQTT-5:2.1.3-1] [MQTT-3.1.1:4.8.0-1]
// Conformance: [MQTT-5:4.13.1-1]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_fixed_header_flags_close_the_connection() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let malformed = ReasonCode::MALFORMED_PACKET;
    for version in BOTH {
        let cases = [
            // PUBREL with flags 0000 instead of 0010.
            raw(0x60, &[0x00, 0x01]),
            // SUBSCRIBE with flags 0000.
            per_version(
                version,
                0x80,
                b"\x00\x01\x00\x01t\x00",
                b"\x00\x01\x00\x00\x01t\x00",
            ),
            // UNSUBSCRIBE with flags 0011.
            per_version(
                version,
                0xa3,
                b"\x00\x01\x00\x01t",
                b"\x00\x01\x00\x00\x01t",
            ),
            // DISCONNECT with flags 0001.
            raw(0xe1, &[]),
            // PINGREQ with flags 1000.
            raw(0xc8, &[]),
        ];
        for bytes in cases {
            assert_violation(addr, version, &bytes, malformed).await;
        }
    }
    // AUTH with flags 0001 (AUTH exists only in 5.0).
    assert_violation(addr, V5, &raw(0xf1, &[]), malformed).await;
    assert_healthy(addr).await;
    broker.shutdown().await;
}

// Conformance: [MQTT-3.1.1:3.3.1-4] [MQTT-5:3.3.1-4] [MQTT-3.1.1:1.5.3-1] [MQTT-3.1.1:1.5.3-2]
// Conformance: [MQTT-5:1.5.4-1] [MQTT-5:1.5.4-2] [MQTT-3.1.1:3.8.3-4] [MQTT-5:3.8.3-5]
// Conformance: [MQTT-3.1.1:4.8.0-1] [MQTT-5:4.13.1-1]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_publish_and_subscribe_close_the_connection() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    for version in BOTH {
        let malformed = ReasonCode::MALFORMED_PACKET;
        // PUBLISH with both QoS bits set.
        let qos3 = per_version(
            version,
            0x36,
            b"\x00\x01t\x00\x01x",
            b"\x00\x01t\x00\x01\x00x",
        );
        assert_violation(addr, version, &qos3, malformed).await;
        // Ill-formed UTF-8 (a surrogate) and U+0000 in a topic name.
        for topic in [&b"\xed\xa0\x80"[..], &b"a\x00b"[..]] {
            let mut b3 = vec![0, topic.len() as u8];
            b3.extend_from_slice(topic);
            let mut b5 = b3.clone();
            b3.push(b'x');
            b5.extend_from_slice(b"\x00x");
            assert_violation(
                addr,
                version,
                &per_version(version, 0x30, &b3, &b5),
                malformed,
            )
            .await;
        }
        // Reserved bits of the subscription options: bits 2-7 in 3.1.1, 6-7 in 5.0.
        let reserved = per_version(
            version,
            0x82,
            b"\x00\x01\x00\x01t\x04",
            b"\x00\x01\x00\x00\x01t\x40",
        );
        assert_violation(addr, version, &reserved, malformed).await;
        // Requested QoS 3: malformed in 3.1.1, a Protocol Error in 5.0.
        let qos3 = per_version(
            version,
            0x82,
            b"\x00\x01\x00\x01t\x03",
            b"\x00\x01\x00\x00\x01t\x03",
        );
        assert_violation(addr, version, &qos3, ReasonCode::PROTOCOL_ERROR).await;
    }
    assert_healthy(addr).await;
    broker.shutdown().await;
}

/// The CONNECT of a client that breaks section 3.1 never gets a session: 3.1.1 closes without
/// CONNACK; 5.0 may answer CONNACK 0x80 or above, never DISCONNECT.
async fn assert_connect_refused(addr: SocketAddr, bytes: &[u8], version: ProtocolVersion) {
    let mut c = Peer::tcp(addr, version).await;
    c.send_raw(bytes).await;
    let packets = c.until_closed().await;
    match packets.as_slice() {
        [] => {}
        [Packet::ConnAck(ack)] if version.is_v5() => {
            assert!(!ack.reason_code.is_success(), "{ack:?}");
            assert!(!ack.session_present);
        }
        other => panic!("{bytes:02x?}: {other:?}"),
    }
}

// Conformance: [MQTT-3.1.1:3.1.2-3] [MQTT-3.1.1:3.1.4-1] [MQTT-3.1.1:3.2.2-6] [MQTT-5:3.1.4-1]
// Conformance: [MQTT-3.1.1:3.1.2-1] [MQTT-5:3.1.2-1] [MQTT-5:3.14.0-1]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_that_breaks_the_rules_gets_no_session() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    // Reserved CONNECT flag set.
    assert_connect_refused(
        addr,
        &raw(0x10, b"\x00\x04MQTT\x04\x03\x00\x3c\x00\x01a"),
        V311,
    )
    .await;
    assert_connect_refused(
        addr,
        &raw(0x10, b"\x00\x04MQTT\x05\x03\x00\x3c\x00\x00\x01a"),
        V5,
    )
    .await;
    // A protocol name other than MQTT.
    assert_connect_refused(
        addr,
        &raw(0x10, b"\x00\x04MQTX\x04\x02\x00\x3c\x00\x01a"),
        V311,
    )
    .await;
    assert_connect_refused(
        addr,
        &raw(0x10, b"\x00\x04MQTX\x05\x02\x00\x3c\x00\x00\x01a"),
        V5,
    )
    .await;
    // Will QoS 3.
    assert_connect_refused(
        addr,
        &raw(
            0x10,
            b"\x00\x04MQTT\x04\x1e\x00\x3c\x00\x01a\x00\x01w\x00\x01x",
        ),
        V311,
    )
    .await;
    // Trailing bytes after the payload.
    assert_connect_refused(
        addr,
        &raw(0x10, b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x01a\x00"),
        V311,
    )
    .await;
    assert_healthy(addr).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_data_without_a_method_is_refused_with_0x82() {
    // 5.0 §3.1.2.11.10: Authentication Data (0x16) without an Authentication Method (0x15)
    // is a Protocol Error. CONNECT of client "a", Session Expiry 60, and the property.
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let connect = raw(
        0x10,
        b"\x00\x04MQTT\x05\x00\x00\x3c\x0a\x11\x00\x00\x00\x3c\x16\x00\x02ab\x00\x01a",
    );
    let mut c = Peer::tcp(addr, V5).await;
    c.send_raw(&connect).await;
    let packets = c.until_closed().await;
    let [Packet::ConnAck(ack)] = packets.as_slice() else {
        panic!("{packets:?}")
    };
    assert_eq!(ack.reason_code, ReasonCode::PROTOCOL_ERROR);
    // No session was made for the refused client.
    let mut again = Connect::new(V5, "a");
    again.clean_start = false;
    let (_c, ack) = Peer::connect_with(addr, again).await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    assert!(!ack.session_present);
    broker.shutdown().await;
}

/// Refuses client identifiers that start with `bad` (0x85) and the user name `nope` (0x87).
struct Gate;

impl Hooks for Gate {
    fn authenticate(&self, r: &ConnectRequest<'_>) -> Result<(), ReasonCode> {
        if r.client_id.starts_with("bad") {
            Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID)
        } else if r.username == Some("nope") {
            Err(ReasonCode::NOT_AUTHORIZED)
        } else {
            Ok(())
        }
    }
}

// Conformance: [MQTT-3.1.1:3.1.3-9] [MQTT-5:3.1.3-8] [MQTT-5:3.1.4-2] [MQTT-3.1.1:3.2.2-4]
// Conformance: [MQTT-3.1.1:3.2.2-5] [MQTT-5:3.2.2-6] [MQTT-5:3.2.2-7] [MQTT-3.1.1:3.1.4-5]
// Conformance: [MQTT-5:3.1.4-6] [MQTT-5:4.13.2-1]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connect_is_closed_and_nothing_after_it_is_processed() {
    let broker = midge_broker::Broker::builder()
        .config(test_config())
        .hooks(Gate)
        .bind("127.0.0.1:0".parse().expect("addr"))
        .start()
        .await
        .expect("starts");
    let addr = broker.local_addr();
    for version in BOTH {
        for (connect, code) in [
            (
                Connect::new(version, "bad-id"),
                ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
            ),
            (
                Connect {
                    username: Some(ByteStr::from("nope")),
                    ..Connect::new(version, "fine")
                },
                ReasonCode::NOT_AUTHORIZED,
            ),
        ] {
            // CONNECT and, in the same write, a retained PUBLISH that must not be processed.
            let mut c = Peer::tcp(addr, version).await;
            let mut publish = c.publish_packet("refused/r", "x", QoS::AtMostOnce, true);
            publish.retain = true;
            let mut bytes = bytes::BytesMut::new();
            Packet::Connect(Box::new(connect))
                .encode(version, &mut bytes)
                .unwrap();
            Packet::Publish(publish)
                .encode(version, &mut bytes)
                .unwrap();
            c.send_raw(&bytes).await;
            let packets = c.until_closed().await;
            let [Packet::ConnAck(ack)] = packets.as_slice() else {
                panic!("{packets:?}")
            };
            assert_eq!(ack.reason_code, code, "{version:?}");
            assert!(!ack.session_present);
        }
        let mut s = Peer::connect(addr, version, "watch").await;
        s.subscribe("refused/#", QoS::AtMostOnce).await;
        s.expect_silence(Duration::from_millis(150)).await;
    }
    broker.shutdown().await;
}

// ------------------------------------------------------------------------- CONNECT / CONNACK

// Conformance: [MQTT-5:3.2.0-1] [MQTT-3.1.1:3.2.0-1] [MQTT-5:3.2.0-2] [MQTT-5:3.1.4-5]
// Conformance: [MQTT-3.1.1:3.1.4-4] [MQTT-5:3.2.2-2] [MQTT-3.1.1:3.2.2-1] [MQTT-5:3.12.4-1]
// Conformance: [MQTT-3.1.1:3.12.4-1] [MQTT-5:3.1.3-5] [MQTT-3.1.1:3.1.3-5] [MQTT-5:4.2.0-1]
// Conformance: [MQTT-3.1.1:7.1.1-1]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_comes_first_once_then_pings_are_answered() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    for version in BOTH {
        for id in ["a", "0123456789abcdefghijkLM", "Z9"] {
            // CONNECT and PINGREQ in one write: CONNACK 0 first, then PINGRESP, nothing else.
            let mut c = Peer::tcp(addr, version).await;
            let mut bytes = bytes::BytesMut::new();
            Packet::Connect(Box::new(Connect::new(version, id)))
                .encode(version, &mut bytes)
                .unwrap();
            Packet::PingReq.encode(version, &mut bytes).unwrap();
            c.send_raw(&bytes).await;
            let Packet::ConnAck(ack) = c.recv_packet().await else {
                panic!("CONNACK first")
            };
            assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "{version:?} {id}");
            assert!(!ack.session_present, "clean start");
            assert_eq!(c.recv_packet().await, Packet::PingResp);
            for _ in 0..3 {
                c.send(Packet::PingReq).await;
                assert_eq!(c.recv_packet().await, Packet::PingResp);
            }
            c.expect_silence(Duration::from_millis(100)).await;
        }
    }
    broker.shutdown().await;
}

// Conformance: [MQTT-5:3.1.2-4] [MQTT-3.1.1:3.1.2-6] [MQTT-5:3.1.2-6] [MQTT-5:3.1.4-4]
// Conformance: [MQTT-3.1.1:3.1.4-3] [MQTT-5:3.1.3-2] [MQTT-3.1.1:3.1.3-2] [MQTT-5:3.2.2-3]
// Conformance: [MQTT-3.1.1:3.2.2-3] [MQTT-3.1.1:3.2.2-2] [MQTT-5:3.2.2-2] [MQTT-3.1.1:3.2.2-1]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_start_and_the_client_identifier_decide_the_session() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    for version in BOTH {
        let v = if version.is_v5() { "5" } else { "3" };
        let persistent = |id: &str| {
            let mut c = Connect::new(version, format!("{id}-{v}"));
            c.clean_start = false;
            if version.is_v5() {
                c.properties.session_expiry_interval = Some(60);
            }
            c
        };
        let topic = format!("cs{v}/x");
        // A new persistent session: Session Present 0, then 1 on return.
        let (mut s, ack) = Peer::connect_with(addr, persistent("s1")).await;
        assert!(!ack.session_present);
        s.subscribe(&format!("cs{v}/#"), QoS::AtLeastOnce).await;
        s.disconnect().await;
        // Another identifier does not see that session.
        let (other, ack) = Peer::connect_with(addr, persistent("s2")).await;
        assert!(
            !ack.session_present,
            "sessions are keyed by client identifier"
        );
        other.disconnect().await;
        let (s, ack) = Peer::connect_with(addr, persistent("s1")).await;
        assert!(ack.session_present);
        s.disconnect().await;
        // A clean start discards it: Session Present 0 and the subscription is gone.
        let mut clean = persistent("s1");
        clean.clean_start = true;
        clean.properties.session_expiry_interval = None;
        let (mut s, ack) = Peer::connect_with(addr, clean).await;
        assert!(!ack.session_present);
        let mut p = Peer::connect(addr, version, &format!("pub-{v}")).await;
        p.publish(&topic, "lost", QoS::AtLeastOnce, false).await;
        s.expect_silence(Duration::from_millis(150)).await;
        s.disconnect().await;
        // The clean session was not kept either.
        let (s, ack) = Peer::connect_with(addr, persistent("s1")).await;
        assert!(!ack.session_present, "a clean session is never reused");
        s.disconnect().await;
    }
    broker.shutdown().await;
}

// ------------------------------------------------------------- SUBSCRIBE and UNSUBSCRIBE

// Conformance: [MQTT-5:3.8.4-1] [MQTT-3.1.1:3.8.4-1] [MQTT-5:3.8.4-2] [MQTT-3.1.1:3.8.4-2]
// Conformance: [MQTT-5:2.2.1-6] [MQTT-3.1.1:2.3.1-7] [MQTT-5:3.8.4-5] [MQTT-3.1.1:3.8.4-4]
// Conformance: [MQTT-5:3.8.4-6] [MQTT-5:3.8.4-7] [MQTT-3.1.1:3.8.4-5] [MQTT-5:3.9.3-1]
// Conformance: [MQTT-3.1.1:3.9.3-1] [MQTT-5:3.9.3-2] [MQTT-3.1.1:3.9.3-2]
// Conformance: [MQTT-5:3.10.4-1] [MQTT-3.1.1:3.10.4-1] [MQTT-5:3.10.4-4] [MQTT-3.1.1:3.10.4-4]
// Conformance: [MQTT-5:3.10.4-5] [MQTT-3.1.1:3.10.4-5] [MQTT-5:3.10.4-6] [MQTT-3.1.1:3.10.4-6]
// Conformance: [MQTT-5:3.11.3-1] [MQTT-5:3.11.3-2] [MQTT-5:3.10.4-2] [MQTT-3.1.1:3.10.4-2]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_and_unsubscribe_are_acknowledged_filter_by_filter() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    for version in BOTH {
        let v = if version.is_v5() { "5" } else { "3" };
        let mut s = Peer::connect(addr, version, &format!("sub-{v}")).await;
        let mut p = Peer::connect(addr, version, &format!("pub-{v}")).await;
        let (wild, bad, exact) = (format!("f{v}/+"), format!("f{v}/#/x"), format!("g{v}"));
        s.send(Packet::Subscribe(Subscribe {
            packet_id: pid(0x1234),
            filters: vec![
                (
                    wild.clone().into(),
                    SubscriptionOptions::qos(QoS::AtLeastOnce),
                ),
                (
                    bad.clone().into(),
                    SubscriptionOptions::qos(QoS::AtLeastOnce),
                ),
                (
                    exact.clone().into(),
                    SubscriptionOptions::qos(QoS::ExactlyOnce),
                ),
            ],
            properties: Default::default(),
        }))
        .await;
        let Packet::SubAck(ack) = s.recv_packet().await else {
            panic!("SUBACK")
        };
        let failure = if version.is_v5() {
            ReasonCode::TOPIC_FILTER_INVALID
        } else {
            ReasonCode::UNSPECIFIED_ERROR
        };
        assert_eq!(
            ack,
            SubAck {
                packet_id: pid(0x1234),
                reason_codes: vec![
                    ReasonCode::GRANTED_QOS_1,
                    failure,
                    ReasonCode::GRANTED_QOS_2
                ],
                properties: ack.properties.clone(),
            }
        );
        // Both good filters took effect, each on its own.
        p.publish(&format!("f{v}/a"), "1", QoS::AtLeastOnce, false)
            .await;
        assert_eq!(s.recv_publish().await.topic.as_str(), format!("f{v}/a"));
        p.publish(&exact, "2", QoS::ExactlyOnce, false).await;
        assert_eq!(s.recv_publish().await.qos, QoS::ExactlyOnce);
        // UNSUBSCRIBE compares filters as strings: `f/a` is not `f/+`.
        let unsubscribe = |id: u16, filters: &[&str]| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id: pid(id),
                filters: filters
                    .iter()
                    .map(|f| ByteStr::from(f.to_string()))
                    .collect(),
                properties: Default::default(),
            })
        };
        s.send(unsubscribe(0x4321, &[&format!("f{v}/a")])).await;
        let Packet::UnsubAck(ack) = s.recv_packet().await else {
            panic!("UNSUBACK")
        };
        assert_eq!(ack.packet_id, pid(0x4321));
        if version.is_v5() {
            assert_eq!(ack.reason_codes, [ReasonCode::NO_SUBSCRIPTION_EXISTED]);
        } else {
            assert!(ack.reason_codes.is_empty());
        }
        p.publish(&format!("f{v}/a"), "3", QoS::AtLeastOnce, false)
            .await;
        assert_eq!(s.recv_publish().await.payload, Bytes::from_static(b"3"));
        // Several filters, one UNSUBACK with a code for each, in order.
        s.send(unsubscribe(0x4322, &["nothing/here", &wild, &exact]))
            .await;
        let Packet::UnsubAck(ack) = s.recv_packet().await else {
            panic!("UNSUBACK")
        };
        assert_eq!(ack.packet_id, pid(0x4322));
        if version.is_v5() {
            assert_eq!(
                ack.reason_codes,
                [
                    ReasonCode::NO_SUBSCRIPTION_EXISTED,
                    ReasonCode::SUCCESS,
                    ReasonCode::SUCCESS
                ]
            );
        }
        p.publish(&format!("f{v}/a"), "4", QoS::AtLeastOnce, false)
            .await;
        p.publish(&exact, "5", QoS::AtLeastOnce, false).await;
        s.expect_silence(Duration::from_millis(150)).await;
    }
    broker.shutdown().await;
}

// Conformance: [MQTT-5:3.8.4-3] [MQTT-3.1.1:3.8.4-3] [MQTT-5:3.8.4-4]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identical_filter_replaces_the_subscription() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    for version in BOTH {
        let v = if version.is_v5() { "5" } else { "3" };
        let topic = format!("rep{v}/t");
        let mut p = Peer::connect(addr, version, &format!("rp-{v}")).await;
        p.publish(&topic, "kept", QoS::AtLeastOnce, true).await;
        let mut s = Peer::connect(addr, version, &format!("rs-{v}")).await;
        s.subscribe(&topic, QoS::ExactlyOnce).await;
        assert!(s.recv_publish().await.retain);
        // The same filter again, at QoS 0: the retained message is sent again, and from now
        // on one copy per message arrives, at the new QoS.
        s.subscribe(&topic, QoS::AtMostOnce).await;
        let again = s.recv_publish().await;
        assert!(again.retain);
        assert_eq!(again.payload, Bytes::from_static(b"kept"));
        p.publish(&topic, "live", QoS::ExactlyOnce, false).await;
        let live = s.recv_publish().await;
        assert_eq!(
            (live.qos, &live.payload[..]),
            (QoS::AtMostOnce, &b"live"[..])
        );
        s.expect_silence(Duration::from_millis(150)).await;
        p.publish(&topic, "", QoS::AtLeastOnce, true).await;
    }
    broker.shutdown().await;
}

// -------------------------------------------------------------------------- PUBLISH, RETAIN

// Conformance: [MQTT-3.1.1:3.3.1-7] [MQTT-5:3.3.1-5] [MQTT-3.1.1:3.3.1-12] [MQTT-5:3.3.1-8]
// Conformance: [MQTT-5:3.3.1-6] [MQTT-5:3.3.1-7] [MQTT-3.1.1:3.3.1-10] [MQTT-3.1.1:3.3.1-11]
// Conformance: [MQTT-3.1.1:3.1.2-7]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_are_replaced_kept_and_removed() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    for version in BOTH {
        let v = if version.is_v5() { "5" } else { "3" };
        let topic = format!("ret{v}/a");
        let fresh = |n: &str| format!("{n}-{v}");
        // The publisher's session ends before anyone subscribes: retained messages outlive it.
        let mut p = Peer::connect(addr, version, &fresh("p1")).await;
        p.publish(&topic, "one", QoS::AtLeastOnce, true).await;
        p.publish(&topic, "two", QoS::AtMostOnce, true).await;
        // RETAIN 0 neither stores nor replaces.
        p.publish(&topic, "three", QoS::AtLeastOnce, false).await;
        p.disconnect().await;
        let mut s = Peer::connect(addr, version, &fresh("s1")).await;
        s.subscribe(&topic, QoS::ExactlyOnce).await;
        let got = s.recv_publish().await;
        assert_eq!(
            &got.payload[..],
            b"two",
            "the QoS 0 message replaced the QoS 1 one"
        );
        assert_eq!(got.qos, QoS::AtMostOnce, "stored with its QoS");
        assert!(got.retain);
        s.expect_silence(Duration::from_millis(100)).await;
        // An empty retained message is delivered as usual and removes the retained one.
        let mut p = Peer::connect(addr, version, &fresh("p2")).await;
        p.publish(&topic, "", QoS::AtLeastOnce, true).await;
        let empty = s.recv_publish().await;
        assert!(empty.payload.is_empty());
        let mut late = Peer::connect(addr, version, &fresh("s2")).await;
        late.subscribe(&topic, QoS::AtLeastOnce).await;
        late.expect_silence(Duration::from_millis(150)).await;
    }
    assert_eq!(
        broker.stats().retained_messages,
        0,
        "nothing stored for empty payloads"
    );
    broker.shutdown().await;
}

// Conformance: [MQTT-5:3.3.1-3] [MQTT-3.1.1:3.3.1-3] [MQTT-5:4.3.1-1] [MQTT-3.1.1:4.3.1-1]
// Conformance: [MQTT-5:3.3.1-2] [MQTT-3.1.1:3.3.1-2] [MQTT-5:2.2.1-2] [MQTT-3.1.1:2.3.1-5]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dup_is_decided_by_the_sender_of_each_hop() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    for version in BOTH {
        let v = if version.is_v5() { "5" } else { "3" };
        let mut s = Peer::connect(addr, version, &format!("ds-{v}")).await;
        s.subscribe(&format!("dup{v}/#"), QoS::AtLeastOnce).await;
        let mut p = Peer::connect(addr, version, &format!("dp-{v}")).await;
        // A first transmission that says DUP 1: forwarded with DUP 0.
        let mut first = p.publish_packet(&format!("dup{v}/1"), "x", QoS::AtLeastOnce, false);
        first.dup = true;
        p.publish_full(first).await;
        let Packet::Publish(got) = s.recv_packet().await else {
            panic!()
        };
        assert!(!got.dup, "{got:?}");
        s.send(Packet::PubAck(PubAck::new(got.packet_id.unwrap())))
            .await;
        // QoS 0: DUP 0 and no packet identifier.
        p.publish(&format!("dup{v}/0"), "y", QoS::AtMostOnce, false)
            .await;
        let Packet::Publish(got) = s.recv_packet().await else {
            panic!()
        };
        assert_eq!(
            (got.qos, got.dup, got.packet_id),
            (QoS::AtMostOnce, false, None)
        );
    }
    broker.shutdown().await;
}

// Conformance: [MQTT-5:4.6.0-5] [MQTT-5:4.6.0-6] [MQTT-3.1.1:4.6.0-5] [MQTT-3.1.1:4.6.0-6]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_from_one_client_reach_subscribers_in_order() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    for version in BOTH {
        let v = if version.is_v5() { "5" } else { "3" };
        let mut subs = Vec::new();
        for (i, qos) in [QoS::AtLeastOnce, QoS::ExactlyOnce].into_iter().enumerate() {
            let mut s = Peer::connect(addr, version, &format!("os{i}-{v}")).await;
            s.subscribe(&format!("ord{v}/#"), qos).await;
            subs.push(s);
        }
        let mut p = Peer::connect(addr, version, &format!("op-{v}")).await;
        let qos_of = |i: usize| [QoS::AtLeastOnce, QoS::ExactlyOnce][i % 2];
        // Pipelined: every PUBLISH is written before any acknowledgement is read.
        let mut ids = Vec::new();
        for i in 0..40 {
            let packet = p.publish_packet(&format!("ord{v}/t"), &i.to_string(), qos_of(i), false);
            ids.push((packet.qos, packet.packet_id.unwrap()));
            p.send(Packet::Publish(packet)).await;
        }
        // Complete every flow: PUBACK, or PUBREC answered by PUBREL and then PUBCOMP.
        let mut done = 0;
        while done < ids.len() {
            match p.recv_packet().await {
                Packet::PubAck(a) => {
                    assert!(ids.contains(&(QoS::AtLeastOnce, a.packet_id)));
                    done += 1;
                }
                Packet::PubRec(a) => p.send(Packet::PubRel(PubAck::new(a.packet_id))).await,
                Packet::PubComp(_) => done += 1,
                other => panic!("{other:?}"),
            }
        }
        for s in &mut subs {
            // Acknowledge as packets come: deliveries may overtake a PUBREL.
            let mut payloads = Vec::new();
            while payloads.len() < 40 {
                match s.recv_packet().await {
                    Packet::Publish(m) => {
                        payloads.push(m.payload.clone());
                        match (m.qos, m.packet_id) {
                            (QoS::AtLeastOnce, Some(id)) => {
                                s.send(Packet::PubAck(PubAck::new(id))).await
                            }
                            (QoS::ExactlyOnce, Some(id)) => {
                                s.send(Packet::PubRec(PubAck::new(id))).await
                            }
                            _ => {}
                        }
                    }
                    Packet::PubRel(r) => s.send(Packet::PubComp(PubAck::new(r.packet_id))).await,
                    other => panic!("{other:?}"),
                }
            }
            let expected: Vec<Bytes> = (0..40).map(|i: i32| Bytes::from(i.to_string())).collect();
            assert_eq!(payloads, expected, "{version:?}");
        }
    }
    broker.shutdown().await;
}

// ----------------------------------------------------------------------------------- wills

// Conformance: [MQTT-3.1.1:3.1.2-12] [MQTT-3.1.1:3.1.2-16] [MQTT-3.1.1:3.1.2-17]
// Conformance: [MQTT-5:3.1.2-14] [MQTT-5:3.1.2-15] [MQTT-5:3.1.3-10] [MQTT-3.1.1:3.1.2-8]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wills_are_published_only_when_set_and_retained_only_when_asked() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    for version in BOTH {
        let v = if version.is_v5() { "5" } else { "3" };
        let mut watcher = Peer::connect(addr, version, &format!("ww-{v}")).await;
        watcher
            .subscribe(&format!("wr{v}/#"), QoS::AtLeastOnce)
            .await;
        // No will: nothing when the connection drops.
        let quiet = Peer::connect(addr, version, &format!("wq-{v}")).await;
        drop(quiet);
        watcher.expect_silence(Duration::from_millis(300)).await;
        // Will Retain 0 and 1.
        for (name, retain) in [("plain", false), ("kept", true)] {
            let mut c = Connect::new(version, format!("w-{name}-{v}"));
            let mut w = will(&format!("wr{v}/{name}"), name, retain);
            if version.is_v5() {
                // Every will property (§3.1.3.2). The Will Delay Interval is the broker's: it
                // is not forwarded, as a PUBLISH may not carry it (§3.3.2.3).
                w.properties.will_delay_interval = Some(0);
                let m = &mut w.properties.message;
                m.payload_format_indicator = Some(PayloadFormat::Utf8);
                m.set_content_type(Some("text/plain".into())).unwrap();
                m.set_response_topic(Some("re/w".into())).unwrap();
                m.set_correlation_data(Some(Bytes::from_static(b"c1")))
                    .unwrap();
                m.set_user_properties(vec![
                    ("k".into(), "1".into()),
                    ("j".into(), "2".into()),
                    ("k".into(), "3".into()),
                ])
                .unwrap();
            }
            c.will = Some(w.clone());
            let (conn, _) = Peer::connect_with(addr, c).await;
            drop(conn);
            let got = watcher.recv_publish().await;
            assert_eq!(got.topic.as_str(), format!("wr{v}/{name}"));
            if version.is_v5() {
                assert_eq!(
                    got.properties, w.properties.message,
                    "the will's properties, user properties in their order"
                );
            }
        }
        let mut late = Peer::connect(addr, version, &format!("wl-{v}")).await;
        late.subscribe(&format!("wr{v}/#"), QoS::AtLeastOnce).await;
        let only = late.recv_publish().await;
        assert_eq!(only.topic.as_str(), format!("wr{v}/kept"));
        assert!(only.retain);
        late.expect_silence(Duration::from_millis(150)).await;
        late.publish(&format!("wr{v}/kept"), "", QoS::AtLeastOnce, true)
            .await;
    }
    broker.shutdown().await;
}

// ------------------------------------------------------------------- 5.0 message properties

// Conformance: [MQTT-5:3.3.2-4] [MQTT-5:3.3.2-17] [MQTT-5:3.3.2-18] [MQTT-5:3.3.2-15]
// Conformance: [MQTT-5:3.3.2-16] [MQTT-5:3.3.2-20]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_properties_are_forwarded_unaltered_and_in_order() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let mut s = Peer::connect(addr, V5, "props-s").await;
    s.subscribe("props/#", QoS::AtLeastOnce).await;
    let mut p = Peer::connect(addr, V5, "props-p").await;
    for format in [PayloadFormat::Utf8, PayloadFormat::Unspecified] {
        let mut m = p.publish_packet("props/t", "body", QoS::AtLeastOnce, false);
        m.properties.payload_format_indicator = Some(format);
        let users: Vec<(ByteStr, ByteStr)> = vec![
            ("z".into(), "1".into()),
            ("a".into(), "2".into()),
            ("z".into(), "0".into()),
            ("a".into(), "2".into()),
        ];
        m.properties.set_user_properties(users.clone()).unwrap();
        m.properties
            .set_response_topic(Some("re/ply".into()))
            .unwrap();
        m.properties
            .set_correlation_data(Some(Bytes::from_static(b"\x00\xff")))
            .unwrap();
        m.properties
            .set_content_type(Some("a/b; x=y".into()))
            .unwrap();
        p.publish_full(m).await;
        let got = s.recv_publish().await;
        assert_eq!(got.properties.payload_format_indicator, Some(format));
        assert_eq!(got.properties.user_properties().collect::<Vec<_>>(), users);
        assert_eq!(got.properties.response_topic(), Some("re/ply".into()));
        assert_eq!(
            got.properties.correlation_data(),
            Some(Bytes::from_static(b"\x00\xff"))
        );
        assert_eq!(got.properties.content_type(), Some("a/b; x=y".into()));
    }
    broker.shutdown().await;
}

// Conformance: [MQTT-5:3.3.2-12] [MQTT-5:3.3.2-8] [MQTT-5:3.3.2-7]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_topic_alias_up_to_the_maximum_is_accepted() {
    let mut config = test_config();
    config.limits.topic_alias_maximum = 4;
    let broker = start(config).await;
    let addr = broker.local_addr();
    let mut s = Peer::connect(addr, V5, "ta-s").await;
    s.subscribe("ta/#", QoS::AtMostOnce).await;
    let (mut p, ack) = Peer::connect_with(addr, Connect::new(V5, "ta-p")).await;
    assert_eq!(ack.properties.topic_alias_maximum, Some(4));
    for alias in 1..=4u16 {
        let mut m = p.publish_packet(&format!("ta/{alias}"), "set", QoS::AtMostOnce, false);
        m.properties.topic_alias = NonZeroU16::new(alias);
        p.publish_full(m).await;
    }
    for alias in (1..=4u16).rev() {
        let mut m = p.publish_packet("", "use", QoS::AtMostOnce, false);
        m.properties.topic_alias = NonZeroU16::new(alias);
        p.publish_full(m).await;
    }
    let topics: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..8 {
            v.push(s.recv_publish().await.topic.as_str().to_owned());
        }
        v
    };
    assert_eq!(
        topics,
        ["ta/1", "ta/2", "ta/3", "ta/4", "ta/4", "ta/3", "ta/2", "ta/1"]
    );
    // Alias 0 is not an alias: the PUBLISH is refused (a sender never uses it).
    p.send_raw(&raw(0x30, b"\x00\x01t\x03\x23\x00\x00x")).await;
    p.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
    // A new connection starts with no aliases: using one set on the old connection is an
    // error [MQTT-5:3.3.2-7].
    let (mut p, _) = Peer::connect_with(addr, Connect::new(V5, "ta-p")).await;
    let mut m = p.publish_packet("", "stale", QoS::AtMostOnce, false);
    m.properties.topic_alias = NonZeroU16::new(1);
    p.send(Packet::Publish(m)).await;
    p.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
    s.expect_silence(Duration::from_millis(100)).await;
    broker.shutdown().await;
}

// ---------------------------------------------------------------- 5.0 shared subscriptions

// Conformance: [MQTT-5:4.8.2-3] [MQTT-5:4.8.2-6]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_members_get_their_own_qos_and_a_refused_message_is_not_passed_on() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let mut a = Peer::connect(addr, V5, "sh-a").await;
    let mut b = Peer::connect(addr, V5, "sh-b").await;
    a.subscribe("$share/g/sh/#", QoS::AtMostOnce).await;
    b.subscribe("$share/g/sh/#", QoS::AtLeastOnce).await;
    let mut p = Peer::connect(addr, V5, "sh-p").await;
    for i in 0..4 {
        p.publish("sh/t", &i.to_string(), QoS::AtLeastOnce, false)
            .await;
    }
    // Each member got two, at its own granted QoS; b refuses every one of its messages.
    let mut seen = Vec::new();
    for _ in 0..2 {
        let Packet::Publish(m) = a.recv_packet().await else {
            panic!()
        };
        assert_eq!(m.qos, QoS::AtMostOnce);
        seen.push(m.payload.clone());
        let Packet::Publish(m) = b.recv_packet().await else {
            panic!()
        };
        assert_eq!(m.qos, QoS::AtLeastOnce);
        seen.push(m.payload.clone());
        b.send(Packet::PubAck(PubAck {
            reason_code: ReasonCode::UNSPECIFIED_ERROR,
            ..PubAck::new(m.packet_id.unwrap())
        }))
        .await;
    }
    seen.sort();
    assert_eq!(
        seen,
        ["0", "1", "2", "3"].map(|s| Bytes::from(s.to_owned()))
    );
    // The refused messages go to no one else.
    a.expect_silence(Duration::from_millis(300)).await;
    b.expect_silence(Duration::from_millis(100)).await;
    broker.shutdown().await;
}

// Conformance: [MQTT-5:4.8.2-4] [MQTT-5:4.8.2-5]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_qos2_delivery_stays_with_its_member() {
    let broker = start(test_config()).await;
    let addr = broker.local_addr();
    let member = |id: &str, expiry: u32| {
        let mut c = Connect::new(V5, id.to_owned());
        c.properties.session_expiry_interval = Some(expiry);
        c
    };
    // One member with a session that outlives its connection, one that never gets the message.
    let (mut a, _) = Peer::connect_with(addr, member("sq-a", 60)).await;
    a.subscribe("$share/q/sq/#", QoS::ExactlyOnce).await;
    let mut p = Peer::connect(addr, V5, "sq-p").await;
    p.publish("sq/1", "one", QoS::ExactlyOnce, false).await;
    let Packet::Publish(first) = a.recv_packet().await else {
        panic!()
    };
    let mut b = Peer::connect(addr, V5, "sq-b").await;
    b.subscribe("$share/q/sq/#", QoS::ExactlyOnce).await;
    // a goes away with the message unacknowledged, and comes back: it gets it again.
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = member("sq-a", 60);
    again.clean_start = false;
    let (mut a, ack) = Peer::connect_with(addr, again).await;
    assert!(ack.session_present);
    let Packet::Publish(resent) = a.recv_packet().await else {
        panic!()
    };
    assert_eq!((resent.packet_id, resent.dup), (first.packet_id, true));
    assert_eq!(resent.payload, Bytes::from_static(b"one"));
    let id = resent.packet_id.unwrap();
    a.send(Packet::PubRec(PubAck::new(id))).await;
    assert!(matches!(a.recv_packet().await, Packet::PubRel(r) if r.packet_id == id));
    a.send(Packet::PubComp(PubAck::new(id))).await;
    b.expect_silence(Duration::from_millis(200)).await;
    // Now a takes a message and its session ends before it returns: nobody else gets it.
    b.unsubscribe("$share/q/sq/#").await;
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut a, _) = Peer::connect_with(addr, member("sq-a", 1)).await;
    a.subscribe("$share/q/sq/#", QoS::ExactlyOnce).await;
    p.publish("sq/2", "two", QoS::ExactlyOnce, false).await;
    let Packet::Publish(m) = a.recv_packet().await else {
        panic!()
    };
    assert_eq!(m.payload, Bytes::from_static(b"two"));
    b.subscribe("$share/q/sq/#", QoS::ExactlyOnce).await;
    drop(a);
    b.expect_silence(Duration::from_millis(2000)).await;
    broker.shutdown().await;
}
