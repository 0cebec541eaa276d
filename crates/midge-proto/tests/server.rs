//! The server connection state machine and its session, one flow per test, driven packet by
//! packet. Every byte the server transmits is decoded back with the codec under the
//! connection's version. Normative statements are MQTT 5.0 unless marked 3.1.1.

mod common;

use std::num::{NonZeroU16, NonZeroU32};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use common::*;
use midge_codec::{
    ByteStr, ConnAck, Connect, Disconnect, Packet, ProtocolVersion, PubAck, Publish, QoS,
    ReasonCode, SubAck, Subscribe, SubscribeProperties, SubscriptionId, SubscriptionOptions,
    Unsubscribe, Will,
};
use midge_proto::server::{
    ServerCloseReason, ServerConfig, ServerConnection, ServerEvent, SubscriptionRequest,
};
use midge_proto::session::{Delivery, QueueLimits, Session};
use midge_proto::Message;
use proptest::prelude::*;

fn config() -> ServerConfig {
    ServerConfig::default()
}

fn disconnect(code: ReasonCode) -> Packet {
    Packet::Disconnect(Disconnect {
        reason_code: code,
        ..Disconnect::default()
    })
}

fn delivery(topic: &str, qos: QoS, now: Instant) -> Delivery {
    Delivery::new(
        Arc::new(Message::new(topic.to_owned(), &b"data"[..], qos)),
        now,
    )
}

/// `delivery` with another message.
fn with_message(mut delivery: Delivery, message: Message) -> Delivery {
    delivery.message = Arc::new(message);
    delivery
}

fn fresh(version: ProtocolVersion, now: Instant) -> ServerConnection {
    accepted_server(config(), connect_packet(version, "c1"), None, now).0
}

fn publishes(packets: &[Packet]) -> Vec<&Publish> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p),
            _ => None,
        })
        .collect()
}

/// Feeds CONNECT and returns the refusal CONNACK (or panics).
fn refused(config: ServerConfig, connect: Connect) -> (ConnAck, Vec<ServerEvent>) {
    let t0 = Instant::now();
    let mut server = ServerConnection::new(Arc::new(config), t0);
    server_feed(&mut server, t0, Packet::Connect(Box::new(connect)));
    let sent = server_tx(&mut server, t0);
    let [Packet::ConnAck(connack)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert!(server.is_closed());
    ((**connack).clone(), server_events(&mut server))
}

fn with_will(mut connect: Connect, f: impl FnOnce(&mut Will)) -> Connect {
    let mut will = Will {
        topic: ByteStr::from("will/t"),
        payload: Bytes::from_static(b"bye"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    };
    f(&mut will);
    connect.will = Some(will);
    connect
}

// ------------------------------------------------------------------------------ CONNECT

// Conformance: [MQTT-5:3.1.0-1] [MQTT-3.1.1:3.1.0-1]
#[test]
fn first_packet_must_be_connect() {
    // [MQTT-3.1.0-1]: closed without CONNACK.
    let t0 = Instant::now();
    let mut server = ServerConnection::new(Arc::new(config()), t0);
    server_feed(&mut server, t0, Packet::PingReq);
    assert!(server.is_closed());
    assert!(server_tx(&mut server, t0).is_empty());
    assert_eq!(
        server_closed(&server_events(&mut server)),
        Some(ServerCloseReason::ProtocolViolation(
            ReasonCode::PROTOCOL_ERROR
        ))
    );
}

// Conformance: [MQTT-5:3.1.0-2] [MQTT-3.1.1:3.1.0-2]
#[test]
fn second_connect_is_a_protocol_error() {
    // [MQTT-3.1.0-2]
    for version in ALL {
        let t0 = Instant::now();
        let mut server = fresh(version, t0);
        server_feed(
            &mut server,
            t0,
            Packet::Connect(Box::new(connect_packet(version, "c1"))),
        );
        let sent = server_tx(&mut server, t0);
        if version.is_v5() {
            assert_eq!(sent, [disconnect(ReasonCode::PROTOCOL_ERROR)]);
        } else {
            assert!(sent.is_empty());
        }
        assert_eq!(
            server_closed(&server_events(&mut server)),
            Some(ServerCloseReason::ProtocolViolation(
                ReasonCode::PROTOCOL_ERROR
            ))
        );
    }
}

#[test]
fn second_connect_with_an_unknown_level_is_still_a_protocol_error() {
    // [MQTT-3.1.0-2]; 0x84 is not a DISCONNECT reason code (§3.14.2.1).
    let t0 = Instant::now();
    let mut server = fresh(V5, t0);
    let mut buf = BytesMut::new();
    Packet::Connect(Box::new(connect_packet(V5, "c1")))
        .encode(V5, &mut buf)
        .unwrap();
    buf[8] = 9;
    server.handle_bytes(t0, &mut buf);
    assert_eq!(
        server_tx(&mut server, t0),
        [disconnect(ReasonCode::PROTOCOL_ERROR)]
    );
}

// Conformance: [MQTT-5:3.1.2-2] [MQTT-3.1.1:3.1.2-2]
#[test]
fn unsupported_protocol_level_is_refused_in_the_clients_format() {
    // [MQTT-3.1.2-2]: 3.1.1 return code 0x01, 5.0 reason code 0x84.
    for (level, version) in [(6u8, V5), (2u8, V3_1_1)] {
        let t0 = Instant::now();
        let mut server = ServerConnection::new(Arc::new(config()), t0);
        let mut buf = BytesMut::new();
        Packet::Connect(Box::new(connect_packet(V3_1_1, "c1")))
            .encode(V3_1_1, &mut buf)
            .unwrap();
        buf[8] = level;
        server.handle_bytes(t0, &mut buf);
        assert_eq!(server.version(), version);
        let sent = server_tx(&mut server, t0);
        let [Packet::ConnAck(connack)] = sent.as_slice() else {
            panic!("{sent:?}")
        };
        assert_eq!(
            connack.reason_code,
            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
        );
        assert!(server.is_closed());
    }
    // On the wire, the 3.1.1 return code is 1.
    let t0 = Instant::now();
    let mut server = ServerConnection::new(Arc::new(config()), t0);
    let mut buf = BytesMut::from(&[0x10u8, 10, 0, 4, b'M', b'Q', b'T', b'T', 2, 2, 0, 0][..]);
    server.handle_bytes(t0, &mut buf);
    let mut out = BytesMut::new();
    while server.poll_transmit(t0, &mut out) {}
    assert_eq!(&out[..], &[0x20, 2, 0, 1]);
}

/// A server fed a CONNECT without a client identifier, with the Connect event checked.
fn awaiting_an_assigned_id(connect: Connect, now: Instant) -> ServerConnection {
    let mut server = ServerConnection::new(Arc::new(config()), now);
    server_feed(&mut server, now, Packet::Connect(Box::new(connect)));
    let events = server_events(&mut server);
    let [ServerEvent::Connect { client_id, .. }] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert!(client_id.is_empty(), "the event says one is to be assigned");
    server
}

// Conformance: [MQTT-3.1.1:3.1.3-8] [MQTT-3.1.1:3.1.3-6] [MQTT-5:3.1.3-6] [MQTT-5:3.1.3-7] [MQTT-5:3.2.2-16]
#[test]
fn empty_client_id_rules() {
    // 3.1.1 [MQTT-3.1.3-8]: empty identifier with Clean Session 0 → return code 0x02.
    let mut connect = connect_packet(V3_1_1, "");
    connect.clean_start = false;
    let (connack, _) = refused(config(), connect);
    assert_eq!(connack.reason_code, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    // 3.1.1 with Clean Session 1: accepted under the identifier the broker assigns
    // [MQTT-3.1.3-6], which a 3.1.1 CONNACK cannot carry.
    let t0 = Instant::now();
    let mut server = awaiting_an_assigned_id(connect_packet(V3_1_1, ""), t0);
    server.assign_client_id(ByteStr::from("given-3"));
    server.accept(t0, None);
    let sent = server_tx(&mut server, t0);
    assert!(
        matches!(sent.as_slice(), [Packet::ConnAck(c)] if c.reason_code == ReasonCode::SUCCESS),
        "{sent:?}"
    );
    assert_eq!(server.client_id(), "given-3");
    assert_eq!(server.session().unwrap().client_id(), "given-3");
    // 5.0: the assigned identifier is returned in CONNACK [MQTT-3.2.2-16].
    let mut server = awaiting_an_assigned_id(connect_packet(V5, ""), t0);
    server.assign_client_id(ByteStr::from("given-5"));
    server.accept(t0, None);
    let sent = server_tx(&mut server, t0);
    let [Packet::ConnAck(connack)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
    assert_eq!(
        connack
            .properties
            .assigned_client_identifier
            .as_ref()
            .map(ByteStr::as_str),
        Some("given-5")
    );
    assert_eq!(server.session().unwrap().client_id(), "given-5");
    // A client's own identifier is not replaced, and is not echoed in CONNACK.
    let mut server = ServerConnection::new(Arc::new(config()), t0);
    server_feed(
        &mut server,
        t0,
        Packet::Connect(Box::new(connect_packet(V5, "own"))),
    );
    let _ = server_events(&mut server);
    server.assign_client_id(ByteStr::from("other"));
    server.accept(t0, None);
    let sent = server_tx(&mut server, t0);
    assert!(
        matches!(sent.as_slice(), [Packet::ConnAck(c)] if c.properties.assigned_client_identifier.is_none()),
        "{sent:?}"
    );
    assert_eq!(server.client_id(), "own");
    // No identifier assigned: refused as an identifier the server does not accept.
    for version in [V3_1_1, V5] {
        let mut server = awaiting_an_assigned_id(connect_packet(version, ""), t0);
        server.accept(t0, None);
        let sent = server_tx(&mut server, t0);
        assert!(
            matches!(sent.as_slice(), [Packet::ConnAck(c)] if c.reason_code == ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
            "{sent:?}"
        );
        assert!(server.is_closed());
    }
    // 3.1: 1 to 23 characters (3.1 §3.1).
    let (connack, _) = refused(config(), connect_packet(V3_1, &"x".repeat(24)));
    assert_eq!(connack.reason_code, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    let (connack, _) = refused(config(), connect_packet(V3_1, ""));
    assert_eq!(connack.reason_code, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    accepted_server(config(), connect_packet(V3_1, &"x".repeat(23)), None, t0);
}

// Conformance: [MQTT-5:3.2.2-12] [MQTT-5:3.2.2-13]
#[test]
fn will_is_checked_against_the_server() {
    // §3.1.3.3: an invalid Will Topic → 0x90; [MQTT-3.2.2-12]: Will QoS above Maximum QoS
    // → 0x9B; Will Retain without retain support → 0x9A [MQTT-3.2.2-13].
    let mut cfg = config();
    cfg.topic_limits.max_levels = 2;
    let (connack, events) = refused(
        cfg,
        with_will(connect_packet(V5, "c"), |w| {
            w.topic = ByteStr::from("a/b/c")
        }),
    );
    assert_eq!(connack.reason_code, ReasonCode::TOPIC_NAME_INVALID);
    assert!(matches!(
        events.as_slice(),
        [ServerEvent::Closed { will: None, .. }]
    ));
    let mut cfg = config();
    cfg.maximum_qos = QoS::AtLeastOnce;
    let (connack, _) = refused(
        cfg,
        with_will(connect_packet(V5, "c"), |w| w.qos = QoS::ExactlyOnce),
    );
    assert_eq!(connack.reason_code, ReasonCode::QOS_NOT_SUPPORTED);
    let mut cfg = config();
    cfg.retain_available = false;
    let (connack, _) = refused(cfg, with_will(connect_packet(V5, "c"), |w| w.retain = true));
    assert_eq!(connack.reason_code, ReasonCode::RETAIN_NOT_SUPPORTED);
    // [MQTT-3.3.2-14]: the will's Response Topic is a topic name, without wildcards.
    let (connack, _) = refused(
        config(),
        with_will(connect_packet(V5, "c"), |w| {
            w.properties
                .message
                .set_response_topic(Some(ByteStr::from("re/+")))
                .unwrap()
        }),
    );
    assert_eq!(connack.reason_code, ReasonCode::PROTOCOL_ERROR);
}

#[test]
fn authentication_data_without_a_method_is_a_protocol_error() {
    // §3.1.2.11.10: Authentication Data without an Authentication Method is a Protocol
    // Error: CONNACK 0x82, closed, and the broker is never asked to accept the client.
    let mut connect = connect_packet(V5, "c");
    connect.properties.authentication_data = Some(Bytes::from_static(b"secret"));
    let (connack, events) = refused(config(), connect);
    assert_eq!(connack.reason_code, ReasonCode::PROTOCOL_ERROR);
    assert!(
        matches!(
            events.as_slice(),
            [ServerEvent::Closed {
                reason: ServerCloseReason::Refused(ReasonCode::PROTOCOL_ERROR),
                will: None
            }]
        ),
        "{events:?}"
    );
    // The same data in AUTH, which must name its method (§3.15.2.2.2): DISCONNECT 0x82.
    let t0 = Instant::now();
    let mut server = fresh(V5, t0);
    let mut auth = midge_codec::Auth::default();
    auth.properties.authentication_data = Some(Bytes::from_static(b"secret"));
    server_feed(&mut server, t0, Packet::Auth(Box::new(auth)));
    assert_eq!(
        server_tx(&mut server, t0),
        [disconnect(ReasonCode::PROTOCOL_ERROR)]
    );
    assert!(server.is_closed());
    // DISCONNECT has no Authentication Data property at all: one that carries it is
    // malformed (§2.2.2.2), 0x81.
    let mut server = fresh(V5, t0);
    let mut bytes = BytesMut::from(&b"\xe0\x07\x00\x05\x16\x00\x02ab"[..]);
    server.handle_bytes(t0, &mut bytes);
    assert_eq!(
        server_tx(&mut server, t0),
        [disconnect(ReasonCode::MALFORMED_PACKET)]
    );
    assert!(server.is_closed());
}

#[test]
fn maximum_keep_alive() {
    // [MQTT-3.2.2-21]: a 5.0 client is told the Server Keep Alive and held to it; a 3.x
    // client cannot be told and is refused (0x02, as mosquitto does).
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.max_keep_alive = 30;
    let mut connect = connect_packet(V5, "c");
    connect.keep_alive = 100;
    let (server, connack) = accepted_server(cfg.clone(), connect, None, t0);
    assert_eq!(connack.properties.server_keep_alive, Some(30));
    assert_eq!(server.poll_timeout(), Some(t0 + 45 * SEC));
    let mut connect = connect_packet(V3_1_1, "c");
    connect.keep_alive = 100;
    let (connack, _) = refused(cfg.clone(), connect);
    assert_eq!(connack.reason_code, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    // Keep Alive 0 is always accepted.
    let mut connect = connect_packet(V3_1_1, "c");
    connect.keep_alive = 0;
    let (server, _) = accepted_server(cfg, connect, None, t0);
    assert_eq!(server.poll_timeout(), None);
}

// Conformance: [MQTT-5:3.1.2-22] [MQTT-5:3.2.2-22] [MQTT-3.1.1:3.1.2-24] [MQTT-5:3.1.2-8] [MQTT-3.1.1:3.1.2-8]
#[test]
fn keepalive_is_enforced_at_one_and_a_half_intervals() {
    // 3.1.1 [MQTT-3.1.2-24], 5.0 [MQTT-3.1.2-22]; 5.0 gets DISCONNECT 0x8D, and the will is
    // published [MQTT-3.1.2-8].
    for version in ALL {
        let t0 = Instant::now();
        let mut connect = with_will(connect_packet(version, "c"), |_| {});
        connect.keep_alive = 10;
        let (mut server, _) = accepted_server(config(), connect, None, t0);
        assert_eq!(server.poll_timeout(), Some(t0 + 15 * SEC));
        server.handle_timeout(t0 + 14 * SEC);
        assert!(server.is_connected());
        server_feed(&mut server, t0 + 14 * SEC, Packet::PingReq);
        assert_eq!(server_tx(&mut server, t0 + 14 * SEC), [Packet::PingResp]);
        assert_eq!(server.poll_timeout(), Some(t0 + 29 * SEC));
        server.handle_timeout(t0 + 28 * SEC);
        assert!(server.is_connected());
        server.handle_timeout(t0 + 29 * SEC);
        let sent = server_tx(&mut server, t0 + 29 * SEC);
        if version.is_v5() {
            assert_eq!(sent, [disconnect(ReasonCode::KEEP_ALIVE_TIMEOUT)]);
        } else {
            assert!(sent.is_empty());
        }
        let events = server_events(&mut server);
        let [ServerEvent::Closed {
            reason: ServerCloseReason::KeepAliveTimeout,
            will: Some((will, 0)),
        }] = events.as_slice()
        else {
            panic!("{events:?}")
        };
        assert_eq!(will.topic.as_str(), "will/t");
    }
}

#[test]
fn connect_timeout_closes_a_silent_connection() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.connect_timeout = 5 * SEC;
    let mut server = ServerConnection::new(Arc::new(cfg), t0);
    assert_eq!(server.poll_timeout(), Some(t0 + 5 * SEC));
    server.handle_timeout(t0 + 4 * SEC);
    assert!(!server.is_closed());
    server.handle_timeout(t0 + 5 * SEC);
    assert!(server.is_closed());
    assert!(server_tx(&mut server, t0).is_empty());
    assert_eq!(
        server_closed(&server_events(&mut server)),
        Some(ServerCloseReason::ConnectTimeout)
    );
}

#[test]
fn packets_sent_before_connack_are_handled_after_accept() {
    let t0 = Instant::now();
    let mut server = ServerConnection::new(Arc::new(config()), t0);
    let mut buf = BytesMut::new();
    Packet::Connect(Box::new(connect_packet(V5, "c")))
        .encode(V5, &mut buf)
        .unwrap();
    Packet::PingReq.encode(V5, &mut buf).unwrap();
    server.handle_bytes(t0, &mut buf);
    assert!(matches!(
        server_events(&mut server).as_slice(),
        [ServerEvent::Connect { .. }]
    ));
    assert!(server_tx(&mut server, t0).is_empty());
    server.accept(t0, None);
    server.handle_bytes(t0, &mut buf);
    let sent = server_tx(&mut server, t0);
    assert!(
        matches!(sent.as_slice(), [Packet::ConnAck(_), Packet::PingResp]),
        "{sent:?}"
    );
}

#[test]
fn rejection_maps_to_3_x_return_codes() {
    // 3.1.1 §3.2.2.3: only return codes 1 to 5 exist.
    for (code, expected) in [
        (
            ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        ),
        (ReasonCode::BANNED, ReasonCode::NOT_AUTHORIZED),
        (ReasonCode::SERVER_BUSY, ReasonCode::SERVER_UNAVAILABLE),
    ] {
        let t0 = Instant::now();
        let mut server = ServerConnection::new(Arc::new(config()), t0);
        server_feed(
            &mut server,
            t0,
            Packet::Connect(Box::new(connect_packet(V3_1_1, "c"))),
        );
        let _ = server_events(&mut server);
        server.reject(code);
        let sent = server_tx(&mut server, t0);
        assert!(
            matches!(sent.as_slice(), [Packet::ConnAck(c)] if c.reason_code == expected),
            "{sent:?}"
        );
    }
}

// ---------------------------------------------------------------------- inbound PUBLISH

// Conformance: [MQTT-5:4.3.2-4] [MQTT-5:2.2.1-5]
#[test]
fn inbound_qos1_is_acknowledged_after_routing() {
    // [MQTT-4.3.2-4]: PUBACK with the outcome (5.0); 3.x can only say success.
    for version in ALL {
        let t0 = Instant::now();
        let mut server = fresh(version, t0);
        server_feed(
            &mut server,
            t0,
            Packet::Publish(publish("a/b", QoS::AtLeastOnce, Some(3))),
        );
        let events = server_events(&mut server);
        let [ServerEvent::Publish { message, packet_id }] = events.as_slice() else {
            panic!("{events:?}")
        };
        assert_eq!((message.topic.as_str(), *packet_id), ("a/b", Some(pid(3))));
        assert!(
            server_tx(&mut server, t0).is_empty(),
            "PUBACK before routing"
        );
        server.acknowledge(pid(3), ReasonCode::NO_MATCHING_SUBSCRIBERS);
        let expected = if version.is_v5() {
            ack_with(3, ReasonCode::NO_MATCHING_SUBSCRIBERS)
        } else {
            ack(3)
        };
        assert_eq!(server_tx(&mut server, t0), [Packet::PubAck(expected)]);
    }
}

// Conformance: [MQTT-5:4.3.3-8] [MQTT-5:4.3.3-10] [MQTT-5:4.3.3-11] [MQTT-3.1.1:4.3.3-2]
#[test]
fn inbound_qos2_is_routed_exactly_once() {
    // [MQTT-4.3.3-10] (3.1.1 [MQTT-4.3.3-2]): retransmissions before PUBREL get PUBREC and
    // are not routed again; PUBREL gets PUBCOMP, repeated PUBREL too.
    for version in ALL {
        let t0 = Instant::now();
        let mut server = fresh(version, t0);
        let p = publish("a", QoS::ExactlyOnce, Some(7));
        let dup = Publish {
            dup: true,
            ..p.clone()
        };
        server_feed(&mut server, t0, Packet::Publish(p));
        server_feed(&mut server, t0, Packet::Publish(dup.clone()));
        let routed = server_events(&mut server)
            .iter()
            .filter(|e| matches!(e, ServerEvent::Publish { .. }))
            .count();
        assert_eq!(routed, 1);
        server.acknowledge(pid(7), ReasonCode::SUCCESS);
        server_feed(&mut server, t0, Packet::Publish(dup));
        assert!(server_events(&mut server).is_empty());
        let sent = server_tx(&mut server, t0);
        assert!(
            sent.iter().all(|p| *p == Packet::PubRec(ack(7))),
            "{sent:?}"
        );
        assert!(sent.len() >= 2);
        server_feed(&mut server, t0, Packet::PubRel(ack(7)));
        assert_eq!(server_tx(&mut server, t0), [Packet::PubComp(ack(7))]);
        server_feed(&mut server, t0, Packet::PubRel(ack(7)));
        let expected = if version.is_v5() {
            ack_with(7, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND)
        } else {
            ack(7)
        };
        assert_eq!(server_tx(&mut server, t0), [Packet::PubComp(expected)]);
        assert!(server_events(&mut server).is_empty());
        assert!(server.is_connected());
    }
}

#[test]
fn unknown_pubrel_gets_pubcomp_0x92() {
    // §3.7.2.1
    let t0 = Instant::now();
    let mut server = fresh(V5, t0);
    server_feed(&mut server, t0, Packet::PubRel(ack(44)));
    assert_eq!(
        server_tx(&mut server, t0),
        [Packet::PubComp(ack_with(
            44,
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        ))]
    );
}

#[test]
fn receive_maximum_flood_disconnects() {
    // §3.3.4: more unacknowledged QoS 1/2 than our Receive Maximum → DISCONNECT 0x93.
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.receive_maximum = 2;
    let (mut server, connack) = accepted_server(cfg, connect_packet(V5, "c"), None, t0);
    assert_eq!(connack.properties.receive_maximum, NonZeroU16::new(2));
    for id in 1..=3 {
        server_feed(
            &mut server,
            t0,
            Packet::Publish(publish("f", QoS::ExactlyOnce, Some(id))),
        );
    }
    assert_eq!(
        server_tx(&mut server, t0),
        [disconnect(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED)]
    );
    assert_eq!(
        server_closed(&server_events(&mut server)),
        Some(ServerCloseReason::ProtocolViolation(
            ReasonCode::RECEIVE_MAXIMUM_EXCEEDED
        ))
    );
}

#[test]
fn subscription_identifier_from_a_client_is_a_protocol_error() {
    // [MQTT-3.3.4-6]
    let t0 = Instant::now();
    let mut server = fresh(V5, t0);
    let mut p = publish("a", QoS::AtMostOnce, None);
    p.properties
        .set_subscription_identifiers(&[SubscriptionId::new(1).unwrap()]);
    server_feed(&mut server, t0, Packet::Publish(p));
    assert_eq!(
        server_tx(&mut server, t0),
        [disconnect(ReasonCode::PROTOCOL_ERROR)]
    );
}

#[test]
fn inbound_topic_alias_above_maximum_is_0x94() {
    // [MQTT-3.3.2-10] / §3.3.2.3.4
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.topic_alias_maximum = 1;
    let (mut server, _) = accepted_server(cfg, connect_packet(V5, "c"), None, t0);
    let mut p = publish("a", QoS::AtMostOnce, None);
    p.properties.topic_alias = NonZeroU16::new(2);
    server_feed(&mut server, t0, Packet::Publish(p));
    assert_eq!(
        server_tx(&mut server, t0),
        [disconnect(ReasonCode::TOPIC_ALIAS_INVALID)]
    );
}

// --------------------------------------------------------------------- outbound PUBLISH

// Conformance: [MQTT-5:3.3.4-9] [MQTT-5:4.9.0-2]
#[test]
fn outbound_respects_the_clients_receive_maximum() {
    // [MQTT-3.3.4-9]
    let t0 = Instant::now();
    let mut connect = connect_packet(V5, "c");
    connect.properties.receive_maximum = NonZeroU16::new(2);
    let (mut server, _) = accepted_server(config(), connect, None, t0);
    for i in 0..4 {
        assert!(server.deliver(delivery(&format!("d/{i}"), QoS::AtLeastOnce, t0)));
    }
    server.deliver(delivery("d/q0", QoS::AtMostOnce, t0));
    let sent = server_tx(&mut server, t0);
    let ids: Vec<_> = publishes(&sent)
        .iter()
        .map(|p| p.packet_id.unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    server_feed(&mut server, t0, Packet::PubAck(PubAck::new(ids[0])));
    let sent = server_tx(&mut server, t0);
    assert_eq!(publishes(&sent).len(), 1);
    assert_eq!(publishes(&sent)[0].topic.as_str(), "d/2");
    assert_eq!(server.session().unwrap().in_flight(), 2);
}

// Conformance: [MQTT-5:3.3.4-9] [MQTT-5:4.9.0-1] [MQTT-5:4.9.0-2] [MQTT-5:4.4.0-1]
#[test]
fn a_resumed_session_resends_within_the_clients_new_receive_maximum() {
    // [MQTT-3.3.4-9], [MQTT-4.9.0-1]: the send quota of a new connection is the Receive
    // Maximum of its CONNECT, also for the resends of a resumed session [MQTT-4.4.0-1]. A
    // client that reconnects with a smaller one gets the rest once it acknowledges, still
    // in the original order and with their original identifiers.
    let t0 = Instant::now();
    let mut connect = connect_packet(V5, "c");
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(100);
    let (mut server, _) = accepted_server(config(), connect.clone(), None, t0);
    server.deliver(delivery("a", QoS::ExactlyOnce, t0));
    server.deliver(delivery("b", QoS::AtLeastOnce, t0));
    server.deliver(delivery("c", QoS::AtLeastOnce, t0));
    let sent = server_tx(&mut server, t0);
    let ids: Vec<_> = publishes(&sent)
        .iter()
        .map(|p| p.packet_id.unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    server_feed(&mut server, t0, Packet::PubRec(PubAck::new(ids[0])));
    let _ = server_tx(&mut server, t0);
    server.connection_lost();
    let session = server.take_session().unwrap();
    connect.properties.receive_maximum = NonZeroU16::new(1);
    let (mut server, sent) = accepted_server_all(config(), connect, Some(session), t0);
    assert_eq!(sent[1..], [Packet::PubRel(PubAck::new(ids[0]))], "{sent:?}");
    server.deliver(delivery("d", QoS::AtLeastOnce, t0));
    assert_eq!(server_tx(&mut server, t0), [], "the quota is used up");
    server_feed(&mut server, t0, Packet::PubComp(PubAck::new(ids[0])));
    let sent = server_tx(&mut server, t0);
    let resent = publishes(&sent);
    assert_eq!(resent.len(), 1, "{sent:?}");
    assert_eq!((resent[0].packet_id, resent[0].dup), (Some(ids[1]), true));
    server_feed(&mut server, t0, Packet::PubAck(PubAck::new(ids[1])));
    let sent = server_tx(&mut server, t0);
    let resent = publishes(&sent);
    assert_eq!(resent.len(), 1, "{sent:?}");
    assert_eq!((resent[0].packet_id, resent[0].dup), (Some(ids[2]), true));
    server_feed(&mut server, t0, Packet::PubAck(PubAck::new(ids[2])));
    let sent = server_tx(&mut server, t0);
    let new = publishes(&sent);
    assert_eq!(new.len(), 1, "{sent:?}");
    assert_eq!((new[0].topic.as_str(), new[0].dup), ("d", false));
    assert_eq!(server.session().unwrap().in_flight(), 1);
}

#[test]
fn outbound_qos2_runs_its_flow() {
    let t0 = Instant::now();
    let mut server = fresh(V3_1_1, t0);
    server.deliver(delivery("x", QoS::ExactlyOnce, t0));
    let sent = server_tx(&mut server, t0);
    let id = publishes(&sent)[0].packet_id.unwrap();
    server_feed(&mut server, t0, Packet::PubRec(PubAck::new(id)));
    assert_eq!(
        server_tx(&mut server, t0),
        [Packet::PubRel(PubAck::new(id))]
    );
    server_feed(&mut server, t0, Packet::PubComp(PubAck::new(id)));
    assert_eq!(server.session().unwrap().in_flight(), 0);
}

// Conformance: [MQTT-5:3.3.2-5] [MQTT-5:3.3.2-6]
#[test]
fn message_expiry_counts_down_and_expired_messages_are_dropped() {
    // [MQTT-3.3.2-6]: the remaining interval is sent; [MQTT-3.3.2-5]: an expired message
    // is not sent.
    let t0 = Instant::now();
    let mut connect = connect_packet(V5, "c");
    connect.properties.receive_maximum = NonZeroU16::new(1);
    let (mut server, _) = accepted_server(config(), connect, None, t0);
    let expiring = |topic: &str, secs| {
        let mut m = Message::new(topic.to_owned(), &b"e"[..], QoS::AtLeastOnce);
        m.properties.message_expiry_interval = Some(secs);
        with_message(delivery(topic, QoS::AtLeastOnce, t0), m)
    };
    server.deliver(expiring("e/1", 10));
    server.deliver(expiring("e/2", 10));
    server.deliver(expiring("e/3", 100));
    let sent = server_tx(&mut server, t0 + 4 * SEC);
    let first = publishes(&sent)[0].clone();
    assert_eq!(first.properties.message_expiry_interval, Some(6));
    server_feed(
        &mut server,
        t0 + 20 * SEC,
        Packet::PubAck(PubAck::new(first.packet_id.unwrap())),
    );
    let sent = server_tx(&mut server, t0 + 20 * SEC);
    let pubs = publishes(&sent);
    assert_eq!(pubs.len(), 1);
    assert_eq!(pubs[0].topic.as_str(), "e/3");
    assert_eq!(pubs[0].properties.message_expiry_interval, Some(80));
    assert_eq!(server.session().unwrap().stats().dropped_expired, 1);
}

// Conformance: [MQTT-5:3.1.2-26] [MQTT-5:3.1.2-27] [MQTT-5:3.3.2-11]
#[test]
fn outbound_topic_aliases_when_the_client_allows() {
    // [MQTT-3.3.2-11]: at most the client's Topic Alias Maximum; none for 3.x.
    let t0 = Instant::now();
    let mut connect = connect_packet(V5, "c");
    connect.properties.topic_alias_maximum = Some(1);
    let (mut server, _) = accepted_server(config(), connect, None, t0);
    for topic in ["a", "a", "b"] {
        server.deliver(delivery(topic, QoS::AtMostOnce, t0));
    }
    let sent = server_tx(&mut server, t0);
    let got: Vec<_> = publishes(&sent)
        .iter()
        .map(|p| {
            (
                p.topic.as_str().to_owned(),
                p.properties.topic_alias.map(|a| a.get()),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("a".into(), Some(1)),
            (String::new(), Some(1)),
            ("b".into(), None)
        ]
    );
    // Without a maximum, and with an alias left in the message's properties: none sent.
    let mut server = fresh(V5, t0);
    let mut m = Message::new("a", &b"x"[..], QoS::AtMostOnce);
    m.properties.topic_alias = NonZeroU16::new(3);
    server.deliver(with_message(delivery("a", QoS::AtMostOnce, t0), m));
    let sent = server_tx(&mut server, t0);
    assert_eq!(publishes(&sent)[0].properties.topic_alias, None);
}

// Conformance: [MQTT-5:3.1.2-24] [MQTT-5:3.1.2-25]
#[test]
fn deliveries_larger_than_the_clients_maximum_are_dropped() {
    // [MQTT-3.1.2-24], [MQTT-3.1.2-25]: never sent, counted, and the next one goes out.
    let t0 = Instant::now();
    let mut connect = connect_packet(V5, "c");
    connect.properties.maximum_packet_size = NonZeroU32::new(40);
    let (mut server, _) = accepted_server(config(), connect, None, t0);
    let mut big = delivery("big", QoS::AtLeastOnce, t0);
    big.message = Arc::new(Message::new("big", vec![0u8; 100], QoS::AtLeastOnce));
    server.deliver(big);
    server.deliver(delivery("small", QoS::AtLeastOnce, t0));
    let sent = server_tx(&mut server, t0);
    let pubs = publishes(&sent);
    assert_eq!(pubs.len(), 1);
    assert_eq!(pubs[0].topic.as_str(), "small");
    let session = server.session().unwrap();
    assert_eq!(session.stats().dropped_too_large, 1);
    assert_eq!(session.in_flight(), 1);
}

// Conformance: [MQTT-5:3.1.2-24] [MQTT-5:3.1.2-25]
#[test]
fn a_resumed_delivery_larger_than_the_clients_new_maximum_is_dropped() {
    // [MQTT-3.1.2-24], [MQTT-3.1.2-25]: a client that reconnects with a smaller Maximum
    // Packet Size never gets a resent PUBLISH above it (it would disconnect with 0x95 and
    // get the same packet on every reconnect); the message is dropped as if delivered, and
    // the delivery behind it is resent as usual.
    let t0 = Instant::now();
    let mut connect = connect_packet(V5, "c");
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(100);
    let (mut server, _) = accepted_server(config(), connect.clone(), None, t0);
    let mut big = delivery("big", QoS::ExactlyOnce, t0);
    big.message = Arc::new(Message::new("big", vec![0u8; 100], QoS::ExactlyOnce));
    server.deliver(big);
    server.deliver(delivery("small", QoS::AtLeastOnce, t0));
    assert_eq!(publishes(&server_tx(&mut server, t0)).len(), 2);
    server.connection_lost();
    let session = server.take_session().unwrap();
    connect.properties.maximum_packet_size = NonZeroU32::new(40);
    let (server, sent) = accepted_server_all(config(), connect, Some(session), t0);
    let resent = publishes(&sent);
    assert_eq!(resent.len(), 1, "{sent:?}");
    assert_eq!((resent[0].topic.as_str(), resent[0].dup), ("small", true));
    let session = server.session().unwrap();
    assert_eq!(session.stats().dropped_too_large, 1);
    assert_eq!(session.in_flight(), 1);
}

// Conformance: [MQTT-5:3.1.2-24]
#[test]
fn setting_an_alias_never_pushes_a_packet_over_the_clients_maximum() {
    // [MQTT-3.1.2-24]: Topic Alias adds three bytes to a PUBLISH that fitted exactly.
    let t0 = Instant::now();
    let plain = Packet::Publish(Publish {
        topic: ByteStr::from("t/x"),
        payload: Bytes::from_static(b"data"),
        ..Publish::default()
    });
    let size = plain.encoded_len(V5).unwrap() as u32;
    let mut connect = connect_packet(V5, "c");
    connect.properties.maximum_packet_size = NonZeroU32::new(size);
    connect.properties.topic_alias_maximum = Some(5);
    let (mut server, _) = accepted_server(config(), connect, None, t0);
    server.deliver(delivery("t/x", QoS::AtMostOnce, t0));
    let mut buf = BytesMut::new();
    while server.poll_transmit(t0, &mut buf) {}
    assert!(buf.len() as u32 <= size, "{} > {size}", buf.len());
    assert_eq!(decode_all(&mut buf, V5).len(), 1);
}

#[test]
fn offline_queue_limits_drop_the_newest_and_count() {
    let t0 = Instant::now();
    let mut limits = QueueLimits::default();
    limits.max_messages = 2;
    let mut session = Session::new("c".into(), limits);
    assert!(session.enqueue(delivery("a", QoS::AtLeastOnce, t0)));
    assert!(session.enqueue(delivery("b", QoS::AtMostOnce, t0)));
    assert!(!session.enqueue(delivery("c", QoS::AtLeastOnce, t0)));
    assert_eq!(session.queued_messages(), 2);
    assert_eq!(session.stats().dropped_queue_full, 1);

    // Each delivery counts what its message holds, and the delivery itself.
    let each = delivery("a", QoS::AtMostOnce, t0).size();
    assert!(each > "a".len() + "data".len());
    let mut limits = QueueLimits::default();
    limits.max_bytes = 2 * each;
    let mut session = Session::new("c".into(), limits);
    assert!(session.enqueue(delivery("a", QoS::AtMostOnce, t0)));
    assert!(session.enqueue(delivery("b", QoS::AtMostOnce, t0)));
    assert!(!session.enqueue(delivery("c", QoS::AtMostOnce, t0)));
    assert_eq!(session.queued_bytes(), 2 * each);
    assert_eq!(session.stats().dropped_queue_full, 1);

    // The queue is kept in order and delivered on the next connection.
    let mut connect = connect_packet(V5, "c");
    connect.clean_start = false;
    let (_, sent) = accepted_server_all(config(), connect, Some(session), t0);
    assert!(matches!(&sent[0], Packet::ConnAck(c) if c.session_present));
    let topics: Vec<_> = publishes(&sent)
        .iter()
        .map(|p| p.topic.as_str().to_owned())
        .collect();
    assert_eq!(topics, ["a", "b"]);
}

#[test]
fn drop_expired_counts_and_keeps_bytes_right() {
    let t0 = Instant::now();
    let mut session = Session::new("c".into(), QueueLimits::default());
    let mut m = Message::new("x", &b"1234"[..], QoS::AtMostOnce);
    m.properties.message_expiry_interval = Some(1);
    session.enqueue(with_message(delivery("x", QoS::AtMostOnce, t0), m));
    let kept = delivery("y", QoS::AtMostOnce, t0);
    let kept_size = kept.size();
    session.enqueue(kept);
    session.drop_expired(t0 + 2 * SEC);
    assert_eq!(session.queued_messages(), 1);
    assert_eq!(session.queued_bytes(), kept_size);
    assert_eq!(session.stats().dropped_expired, 1);
}

// -------------------------------------------------------------------------------- wills

fn will_on(
    version: ProtocolVersion,
    end: impl FnOnce(&mut ServerConnection, Instant),
) -> Option<(Will, u32)> {
    let t0 = Instant::now();
    let connect = with_will(connect_packet(version, "c"), |w| {
        if version.is_v5() {
            w.properties.will_delay_interval = Some(7);
        }
    });
    let (mut server, _) = accepted_server(config(), connect, None, t0);
    end(&mut server, t0);
    let _ = server_tx(&mut server, t0);
    let events = server_events(&mut server);
    let [ServerEvent::Closed { will, .. }] = events.as_slice() else {
        panic!("{events:?}")
    };
    will.clone()
}

// Conformance: [MQTT-5:3.1.2-8] [MQTT-5:3.1.2-10] [MQTT-5:3.14.4-3] [MQTT-3.1.1:3.14.4-3] [MQTT-3.1.1:3.1.2-8] [MQTT-3.1.1:3.1.2-10]
#[test]
fn will_is_published_unless_the_client_disconnects_normally() {
    // [MQTT-3.1.2-8]; [MQTT-3.14.4-3]: not after DISCONNECT 0x00; yes after 0x04 (§3.14.2.1);
    // the Will Delay Interval is reported (§3.1.3.2.2).
    let lost = will_on(V5, |s, _| s.connection_lost()).unwrap();
    assert_eq!(lost.1, 7);
    assert!(will_on(V3_1_1, |s, _| s.connection_lost()).is_some());
    assert!(will_on(V5, |s, t| server_feed(s, t, Packet::PingResp)).is_some());
    assert!(will_on(V5, |s, t| server_feed(
        s,
        t,
        disconnect(ReasonCode::DISCONNECT_WITH_WILL_MESSAGE)
    ))
    .is_some());
    assert!(will_on(V5, |s, t| server_feed(
        s,
        t,
        disconnect(ReasonCode::NORMAL_DISCONNECTION)
    ))
    .is_none());
    assert!(will_on(V3_1_1, |s, t| server_feed(
        s,
        t,
        disconnect(ReasonCode::NORMAL_DISCONNECTION)
    ))
    .is_none());
    assert!(will_on(V5, |s, _| s.disconnect(ReasonCode::SERVER_SHUTTING_DOWN)).is_some());
}

#[test]
fn disconnect_cannot_set_a_session_expiry_when_it_was_zero() {
    // [MQTT-3.14.2-2]
    let t0 = Instant::now();
    let mut server = fresh(V5, t0);
    let mut d = Disconnect::default();
    d.properties.session_expiry_interval = Some(60);
    server_feed(&mut server, t0, Packet::Disconnect(d.clone()));
    assert_eq!(
        server_tx(&mut server, t0),
        [disconnect(ReasonCode::PROTOCOL_ERROR)]
    );
    assert_eq!(
        server_closed(&server_events(&mut server)),
        Some(ServerCloseReason::ProtocolViolation(
            ReasonCode::PROTOCOL_ERROR
        ))
    );
    // From a non-zero interval it may change, and the session keeps the new value.
    let mut connect = connect_packet(V5, "c");
    connect.properties.session_expiry_interval = Some(10);
    let (mut server, _) = accepted_server(config(), connect, None, t0);
    server_feed(&mut server, t0, Packet::Disconnect(d));
    assert!(server_tx(&mut server, t0).is_empty());
    assert_eq!(server.take_session().unwrap().expiry_interval(), 60);
}

// Conformance: [MQTT-5:3.1.4-3] [MQTT-3.1.1:3.1.4-2]
#[test]
fn qos2_state_a_resumed_session_carries_counts_only_once_the_client_names_it() {
    // A session restored from an older copy (a broker crash) may await PUBRELs the client
    // sent already. They must not count against the Receive Maximum for good (§3.3.4: the
    // client counts only what it holds), and a new message with such an identifier, DUP 0
    // [MQTT-4.3.3-2], is not a retransmission [MQTT-2.2.1-3].
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.receive_maximum = 2;
    let mut connect = connect_packet(V5, "c");
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(100);
    let (mut server, _) = accepted_server(cfg.clone(), connect.clone(), None, t0);
    for id in 1..=2 {
        server_feed(
            &mut server,
            t0,
            Packet::Publish(publish("f", QoS::ExactlyOnce, Some(id))),
        );
        server.acknowledge(pid(id), ReasonCode::SUCCESS);
    }
    let _ = server_tx(&mut server, t0);
    assert_eq!(server_events(&mut server).len(), 2);
    server.connection_lost();
    let stored = server.take_session().unwrap();

    // The client completed 1 and 2 on a connection the broker forgot: it sends new messages,
    // one of them with identifier 1.
    let (mut server, _) = accepted_server(cfg.clone(), connect.clone(), Some(stored.clone()), t0);
    server_feed(
        &mut server,
        t0,
        Packet::Publish(publish("f", QoS::AtLeastOnce, Some(3))),
    );
    server_feed(
        &mut server,
        t0,
        Packet::Publish(publish("f", QoS::ExactlyOnce, Some(1))),
    );
    assert!(server.is_connected(), "{:?}", server_tx(&mut server, t0));
    let routed = server_events(&mut server)
        .iter()
        .filter(|e| matches!(e, ServerEvent::Publish { .. }))
        .count();
    assert_eq!(routed, 2, "the new message 1 is routed");
    server.acknowledge(pid(3), ReasonCode::SUCCESS);
    server.acknowledge(pid(1), ReasonCode::SUCCESS);
    assert_eq!(
        server_tx(&mut server, t0),
        [Packet::PubAck(ack(3)), Packet::PubRec(ack(1))]
    );
    // 1 counts now, 2 does not: one more fits, a second does not.
    server_feed(
        &mut server,
        t0,
        Packet::Publish(publish("f", QoS::AtLeastOnce, Some(4))),
    );
    assert!(server.is_connected());
    server_feed(
        &mut server,
        t0,
        Packet::Publish(publish("f", QoS::AtLeastOnce, Some(5))),
    );
    assert_eq!(
        server_tx(&mut server, t0),
        [disconnect(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED)]
    );

    // A client that still holds 2 sends it again with DUP 1: a duplicate, not routed again
    // [MQTT-4.3.3-10], and counted from then on.
    let (mut server, _) = accepted_server(cfg, connect, Some(stored), t0);
    let resent = Publish {
        dup: true,
        ..publish("f", QoS::ExactlyOnce, Some(2))
    };
    server_feed(&mut server, t0, Packet::Publish(resent));
    assert!(server_events(&mut server).is_empty());
    assert_eq!(server_tx(&mut server, t0), [Packet::PubRec(ack(2))]);
    server_feed(
        &mut server,
        t0,
        Packet::Publish(publish("f", QoS::AtLeastOnce, Some(3))),
    );
    assert!(server.is_connected());
    server_feed(
        &mut server,
        t0,
        Packet::Publish(publish("f", QoS::AtLeastOnce, Some(4))),
    );
    assert_eq!(
        server_tx(&mut server, t0),
        [disconnect(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED)]
    );
}

#[test]
fn under_3_1_a_carried_qos2_identifier_sent_again_with_dup_0_is_a_duplicate() {
    // A 3.1 CONNACK does not say whether the session was resumed, so a client may send an
    // unanswered QoS 2 message again as a new one, DUP 0: it must not be routed twice
    // [MQTT-4.3.3-10].
    let t0 = Instant::now();
    let mut connect = connect_packet(V3_1, "c");
    connect.clean_start = false;
    let (mut server, _) = accepted_server(config(), connect.clone(), None, t0);
    server_feed(
        &mut server,
        t0,
        Packet::Publish(publish("f", QoS::ExactlyOnce, Some(1))),
    );
    assert_eq!(server_events(&mut server).len(), 1);
    server.acknowledge(pid(1), ReasonCode::SUCCESS);
    server.connection_lost();
    let session = server.take_session().unwrap();
    let (mut server, _) = accepted_server(config(), connect, Some(session), t0);
    server_feed(
        &mut server,
        t0,
        Packet::Publish(publish("f", QoS::ExactlyOnce, Some(1))),
    );
    assert!(server_events(&mut server).is_empty());
    assert_eq!(server_tx(&mut server, t0), [Packet::PubRec(ack(1))]);
}

#[test]
fn takeover_disconnects_and_hands_the_session_back() {
    // [MQTT-3.1.4-3]; 5.0 DISCONNECT 0x8E.
    for version in ALL {
        let t0 = Instant::now();
        let mut server = fresh(version, t0);
        assert!(server.take_session().is_none(), "only once closed");
        server.take_over();
        let sent = server_tx(&mut server, t0);
        if version.is_v5() {
            assert_eq!(sent, [disconnect(ReasonCode::SESSION_TAKEN_OVER)]);
        } else {
            assert!(sent.is_empty());
        }
        assert_eq!(
            server_closed(&server_events(&mut server)),
            Some(ServerCloseReason::TakenOver)
        );
        assert_eq!(server.take_session().unwrap().client_id().as_str(), "c1");
    }
}

// Conformance: [MQTT-5:4.4.0-1] [MQTT-3.1.1:4.4.0-1] [MQTT-5:3.3.1-1] [MQTT-3.1.1:3.3.1-1] [MQTT-5:3.2.2-3] [MQTT-3.1.1:3.2.2-2] [MQTT-5:3.1.2-5] [MQTT-5:4.3.3-6]
#[test]
fn resumed_session_resends_in_flight_with_dup_in_order() {
    // [MQTT-4.4.0-1], [MQTT-3.3.1-1]; 3.1 has no Session Present flag but still resumes.
    for version in ALL {
        let t0 = Instant::now();
        let mut connect = connect_packet(version, "c");
        connect.clean_start = false;
        connect.properties.session_expiry_interval = version.is_v5().then_some(100);
        let (mut server, _) = accepted_server(config(), connect.clone(), None, t0);
        server.deliver(delivery("a", QoS::AtLeastOnce, t0));
        server.deliver(delivery("b", QoS::ExactlyOnce, t0));
        server.deliver(delivery("c", QoS::ExactlyOnce, t0));
        let sent = server_tx(&mut server, t0);
        let ids: Vec<_> = publishes(&sent)
            .iter()
            .map(|p| p.packet_id.unwrap())
            .collect();
        server_feed(&mut server, t0, Packet::PubRec(PubAck::new(ids[1])));
        let _ = server_tx(&mut server, t0);
        server.connection_lost();
        let session = server.take_session().unwrap();
        let (_, sent) = accepted_server_all(config(), connect, Some(session), t0);
        let Packet::ConnAck(connack) = &sent[0] else {
            panic!("{sent:?}")
        };
        assert_eq!(connack.session_present, version != V3_1, "{version:?}");
        let summary: Vec<_> = sent[1..]
            .iter()
            .map(|p| match p {
                Packet::Publish(p) => ("PUBLISH", p.packet_id.unwrap(), p.dup),
                Packet::PubRel(r) => ("PUBREL", r.packet_id, false),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("PUBLISH", ids[0], true),
                ("PUBREL", ids[1], false),
                ("PUBLISH", ids[2], true)
            ],
            "{version:?}"
        );
    }
}

// Conformance: [MQTT-3.1.1:4.4.0-1]
#[test]
fn a_3_x_resume_resends_messages_that_carry_5_0_properties() {
    // [MQTT-4.4.0-1]: a 3.1.1 subscriber that reconnects gets its unacknowledged messages
    // again, also one that a 5.0 client published with properties (here a Content Type and a
    // Message Expiry Interval), which 3.x cannot carry and which must be left out, not make
    // the resent PUBLISH fail to encode and vanish.
    for version in [V3_1, V3_1_1] {
        let t0 = Instant::now();
        let mut connect = connect_packet(version, "c");
        connect.clean_start = false;
        let (mut server, _) = accepted_server(config(), connect.clone(), None, t0);
        let mut message = Message::new("a", &b"data"[..], QoS::AtLeastOnce);
        message
            .properties
            .set_content_type(Some(ByteStr::from("text/plain")))
            .unwrap();
        message.properties.message_expiry_interval = Some(100);
        let mut delivery = Delivery::new(Arc::new(message), t0);
        delivery.qos = QoS::AtLeastOnce;
        delivery.retain = false;
        server.deliver(delivery);
        let sent = server_tx(&mut server, t0);
        let first = publishes(&sent)[0].packet_id;
        server.connection_lost();
        let session = server.take_session().unwrap();
        let (mut server, sent) = accepted_server_all(config(), connect, Some(session), t0);
        let resent = publishes(&sent);
        assert_eq!(resent.len(), 1, "{version:?}: {sent:?}");
        assert_eq!(
            (
                resent[0].packet_id,
                resent[0].dup,
                resent[0].payload.as_ref()
            ),
            (first, true, &b"data"[..])
        );
        let id = first.unwrap();
        server_feed(&mut server, t0, Packet::PubAck(PubAck::new(id)));
        assert_eq!(server.session().unwrap().in_flight(), 0);
    }
}

// ----------------------------------------------------------------------------- SUBSCRIBE

fn subscribe_event(
    cfg: ServerConfig,
    version: ProtocolVersion,
    filters: &[(&str, SubscriptionOptions)],
) -> (ServerConnection, Vec<SubscriptionRequest>) {
    let t0 = Instant::now();
    let (mut server, _) = accepted_server(cfg, connect_packet(version, "c"), None, t0);
    server_feed(
        &mut server,
        t0,
        Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            filters: filters
                .iter()
                .map(|(f, o)| (ByteStr::from(f.to_string()), *o))
                .collect(),
            properties: Default::default(),
        }),
    );
    let events = server_events(&mut server);
    let [ServerEvent::Subscribe { requests, .. }] = events.as_slice() else {
        panic!("{events:?}")
    };
    (server, requests.clone())
}

#[test]
fn subscribe_verdicts() {
    // §3.9.3: 0x8F invalid filter, 0x9E shared unsupported, 0xA2 wildcards unsupported,
    // 0x97 quota; Maximum QoS caps the granted QoS.
    let mut cfg = config();
    cfg.shared_subscriptions = false;
    cfg.wildcard_subscriptions = false;
    cfg.max_subscriptions = 2;
    cfg.maximum_qos = QoS::AtLeastOnce;
    let q2 = SubscriptionOptions::qos(QoS::ExactlyOnce);
    let (_, requests) = subscribe_event(
        cfg,
        V5,
        &[
            ("a/#/b", q2),
            ("$share/g/x", q2),
            ("a/+", q2),
            ("ok/1", q2),
            ("ok/2", q2),
            ("ok/3", q2),
        ],
    );
    let verdicts: Vec<_> = requests.iter().map(|r| r.verdict).collect();
    assert_eq!(verdicts[0], Err(ReasonCode::TOPIC_FILTER_INVALID));
    assert_eq!(
        verdicts[1],
        Err(ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED)
    );
    assert_eq!(
        verdicts[2],
        Err(ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED)
    );
    assert_eq!(verdicts[5], Err(ReasonCode::QUOTA_EXCEEDED));
    assert!(requests.iter().all(|r| r.options.qos <= QoS::AtLeastOnce));
}

// Conformance: [MQTT-5:3.8.3-4]
#[test]
fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    // [MQTT-3.8.3-4]
    let t0 = Instant::now();
    let (mut server, _) = accepted_server(config(), connect_packet(V5, "c"), None, t0);
    let mut options = SubscriptionOptions::qos(QoS::AtMostOnce);
    options.no_local = true;
    server_feed(
        &mut server,
        t0,
        Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            filters: vec![(ByteStr::from("$share/g/t"), options)],
            properties: Default::default(),
        }),
    );
    assert_eq!(
        server_tx(&mut server, t0),
        [disconnect(ReasonCode::PROTOCOL_ERROR)]
    );
}

// Conformance: [MQTT-3.1.1:3.9.3-2] [MQTT-3.1.1:3.8.4-5] [MQTT-3.1.1:3.10.4-5]
#[test]
fn suback_failures_are_0x80_in_3_x_and_successes_recorded() {
    // 3.1.1 §3.9.3: return codes 0x00-0x02 and 0x80 only.
    let (mut server, _) = subscribe_event(
        config(),
        V3_1_1,
        &[
            ("ok", SubscriptionOptions::qos(QoS::AtLeastOnce)),
            ("bad/#/x", SubscriptionOptions::default()),
        ],
    );
    server.subscribe_ack(
        pid(1),
        vec![ReasonCode::GRANTED_QOS_1, ReasonCode::TOPIC_FILTER_INVALID],
    );
    let t0 = Instant::now();
    assert_eq!(
        server_tx(&mut server, t0),
        [Packet::SubAck(SubAck {
            packet_id: pid(1),
            reason_codes: vec![ReasonCode::GRANTED_QOS_1, ReasonCode::UNSPECIFIED_ERROR],
            properties: Default::default(),
        })]
    );
    let subs = server.session().unwrap().subscriptions();
    assert_eq!(subs.map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["ok"]);
    // UNSUBSCRIBE removes it; 3.x UNSUBACK carries no codes.
    let unsubscribe = Unsubscribe {
        packet_id: pid(2),
        filters: vec![ByteStr::from("ok"), ByteStr::from("no")],
        properties: Default::default(),
    };
    server_feed(&mut server, t0, Packet::Unsubscribe(unsubscribe));
    assert!(matches!(
        server_events(&mut server).as_slice(),
        [ServerEvent::Unsubscribe { .. }]
    ));
    let codes = server.unsubscribe_ack(pid(2));
    assert_eq!(
        codes,
        [ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]
    );
    let sent = server_tx(&mut server, t0);
    assert!(matches!(sent.as_slice(), [Packet::UnsubAck(u)] if u.reason_codes.is_empty()));
}

#[test]
fn unsupported_subscription_identifier_is_0xa1() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.subscription_identifiers = false;
    let (mut server, connack) = accepted_server(cfg, connect_packet(V5, "c"), None, t0);
    assert_eq!(
        connack.properties.subscription_identifiers_available,
        Some(false)
    );
    let mut sub = Subscribe {
        packet_id: pid(1),
        filters: vec![(ByteStr::from("t"), SubscriptionOptions::default())],
        properties: Default::default(),
    };
    sub.properties.subscription_identifier = SubscriptionId::new(5);
    server_feed(&mut server, t0, Packet::Subscribe(sub));
    assert_eq!(
        server_tx(&mut server, t0),
        [disconnect(
            ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED
        )]
    );
}

// ------------------------------------------------------------------ session persistence

/// QoS, RETAIN, Message Expiry Interval, Subscription Identifiers, extra properties.
type DeliverySpec = (u8, bool, Option<u32>, Vec<u32>, bool);

/// A session built through the connection: subscriptions, deliveries in flight (some
/// released), a queue behind the client's Receive Maximum, and QoS 2 ids received.
fn built_session(
    subs: &[(u8, u8, Option<u32>)],
    deliveries: &[DeliverySpec],
    window: u16,
    pubrecs: usize,
    incoming: &[u16],
    now: Instant,
) -> Session {
    let mut connect = connect_packet(V5, "persist");
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(77);
    connect.properties.receive_maximum = NonZeroU16::new(window);
    let (mut server, _) = accepted_server(config(), connect, None, now);
    for (i, (qos, flags, id)) in subs.iter().enumerate() {
        let mut options = SubscriptionOptions::qos(qos_of(qos % 3));
        options.no_local = flags & 1 != 0;
        options.retain_as_published = flags & 2 != 0;
        let mut properties = SubscribeProperties::default();
        properties.subscription_identifier = id.and_then(SubscriptionId::new);
        let subscribe = Subscribe {
            packet_id: pid(i as u16 + 1),
            filters: vec![(ByteStr::from(format!("s/{i}/#")), options)],
            properties,
        };
        server_feed(&mut server, now, Packet::Subscribe(subscribe));
        let _ = server_events(&mut server);
        server.subscribe_ack(pid(i as u16 + 1), vec![ReasonCode(options.qos as u8)]);
    }
    for (i, (qos, retain, expiry, ids, content)) in deliveries.iter().enumerate() {
        let mut m = Message::new(format!("d/{i}"), vec![i as u8; i % 5], qos_of(qos % 3));
        m.retain = *retain;
        m.properties.message_expiry_interval = *expiry;
        if *content {
            let props = &mut m.properties;
            props
                .set_content_type(Some(ByteStr::from("text/plain")))
                .unwrap();
            props
                .set_user_properties(vec![(ByteStr::from("k"), ByteStr::from("v"))])
                .unwrap();
        }
        let mut delivery = Delivery::new(Arc::new(m), now);
        delivery.qos = qos_of(qos % 3);
        delivery.retain = !retain;
        delivery.subscription_ids = ids.iter().filter_map(|n| SubscriptionId::new(*n)).collect();
        server.deliver(delivery);
    }
    let sent = server_tx(&mut server, now);
    for p in publishes(&sent)
        .iter()
        .filter(|p| p.qos == QoS::ExactlyOnce)
        .take(pubrecs)
    {
        server_feed(
            &mut server,
            now,
            Packet::PubRec(PubAck::new(p.packet_id.unwrap())),
        );
    }
    for id in incoming {
        server_feed(
            &mut server,
            now,
            Packet::Publish(publish("in", QoS::ExactlyOnce, Some(*id))),
        );
    }
    server.connection_lost();
    server.take_session().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn session_round_trips(
        subs in proptest::collection::vec((0u8..3, 0u8..4, proptest::option::of(1u32..1000)), 0..4),
        deliveries in proptest::collection::vec(
            (0u8..3, any::<bool>(), proptest::option::of(1u32..5000),
             proptest::collection::vec(1u32..300, 0..3), any::<bool>()),
            0..10),
        window in 1u16..5,
        pubrecs in 0usize..3,
        incoming in proptest::collection::btree_set(1u16..u16::MAX, 0..4),
    ) {
        let now = Instant::now();
        let incoming: Vec<_> = incoming.into_iter().collect();
        let session = built_session(&subs, &deliveries, window, pubrecs, &incoming, now);
        prop_assert_eq!(session.subscription_count(), subs.len());
        let mut buf = BytesMut::new();
        session.encode(now, &mut buf);
        let bytes = buf.freeze();
        let decoded = Session::decode(now, bytes.clone());
        prop_assert_eq!(decoded.as_ref(), Some(&session));
        let decoded = decoded.unwrap();
        prop_assert_eq!(decoded.queued_bytes(), session.queued_bytes());
        prop_assert_eq!(decoded.expiry_interval(), 77);
        // Every strict prefix is refused, without a panic.
        for len in 0..bytes.len() {
            prop_assert!(Session::decode(now, bytes.slice(..len)).is_none(), "prefix {}", len);
        }
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Session::decode(Instant::now(), Bytes::from(bytes));
    }

    #[test]
    fn corrupted_sessions_never_panic(flip in any::<prop::sample::Index>(), value in any::<u8>()) {
        let now = Instant::now();
        let session = built_session(
            &[(1, 1, Some(3))],
            &[(1, false, Some(9), vec![2], true), (2, true, None, vec![], false), (0, false, None, vec![], false)],
            2, 1, &[5], now,
        );
        let mut buf = BytesMut::new();
        session.encode(now, &mut buf);
        let i = flip.index(buf.len());
        buf[i] = value;
        let _ = Session::decode(now, buf.freeze());
    }
}

#[test]
fn session_expiry_is_stored_as_time_remaining() {
    let t0 = Instant::now();
    let mut session = Session::new("c".into(), QueueLimits::default());
    let mut m = Message::new("x", &b""[..], QoS::AtMostOnce);
    m.properties.message_expiry_interval = Some(100);
    session.enqueue(with_message(delivery("x", QoS::AtMostOnce, t0), m));
    let mut buf = BytesMut::new();
    session.encode(t0 + 30 * SEC, &mut buf);
    let later = t0 + 1000 * SEC;
    let decoded = Session::decode(later, buf.freeze()).unwrap();
    let mut connect = connect_packet(V5, "c");
    connect.clean_start = false;
    let (_, sent) = accepted_server_all(config(), connect, Some(decoded), later + 10 * SEC);
    assert_eq!(
        publishes(&sent)[0].properties.message_expiry_interval,
        Some(60)
    );
}

/// A session stored and restored (a broker restart) keeps the QoS 2 flows of both
/// directions where they were: an incoming message whose PUBREC was sent is not routed again
/// when the client resends it [MQTT-4.3.3-10], and its PUBREL is answered with success; an
/// outgoing message whose PUBREC came is released, not published again, and one still waiting
/// for PUBREC is published again with DUP [MQTT-4.4.0-1].
#[test]
fn qos2_flows_of_both_directions_survive_encode_and_decode() {
    for version in [V3_1_1, V5] {
        let t0 = Instant::now();
        let mut connect = connect_packet(version, "q2");
        connect.clean_start = false;
        if version.is_v5() {
            connect.properties.session_expiry_interval = Some(60);
        }
        let (mut server, _) = accepted_server(config(), connect.clone(), None, t0);
        // Incoming: 7 routed and PUBREC sent; 8 routed, released and completed.
        for id in [7, 8] {
            server_feed(
                &mut server,
                t0,
                Packet::Publish(publish("in", QoS::ExactlyOnce, Some(id))),
            );
            assert_eq!(server_events(&mut server).len(), 1);
            server.acknowledge(pid(id), ReasonCode::SUCCESS);
        }
        server_feed(&mut server, t0, Packet::PubRel(ack(8)));
        // Outgoing: `released` got its PUBREC, `waiting` did not, `done` completed.
        for topic in ["released", "waiting", "done"] {
            server.deliver(delivery(topic, QoS::ExactlyOnce, t0));
        }
        let sent = server_tx(&mut server, t0);
        let id_of = |topic: &str| {
            publishes(&sent)
                .iter()
                .find(|p| p.topic == topic)
                .and_then(|p| p.packet_id)
                .unwrap()
        };
        let (released, waiting, done) = (id_of("released"), id_of("waiting"), id_of("done"));
        server_feed(&mut server, t0, Packet::PubRec(PubAck::new(released)));
        server_feed(&mut server, t0, Packet::PubRec(PubAck::new(done)));
        server_feed(&mut server, t0, Packet::PubComp(PubAck::new(done)));
        let _ = server_tx(&mut server, t0);
        server.connection_lost();
        let mut buf = BytesMut::new();
        server.take_session().unwrap().encode(t0, &mut buf);

        let t1 = t0 + 5 * SEC;
        let restored = Session::decode(t1, buf.freeze()).unwrap();
        assert_eq!(restored.in_flight(), 2);
        let (mut server, sent) = accepted_server_all(config(), connect, Some(restored), t1);
        let Some(Packet::ConnAck(connack)) = sent.first() else {
            panic!("{sent:?}");
        };
        assert!(connack.session_present);
        let resent: Vec<_> = sent.iter().skip(1).cloned().collect();
        let Some(Packet::Publish(again)) = resent.get(1) else {
            panic!("{resent:?}");
        };
        assert_eq!(resent[0], Packet::PubRel(PubAck::new(released)));
        assert_eq!(
            (again.topic.as_str(), again.packet_id, again.dup),
            ("waiting", Some(waiting), true)
        );
        assert_eq!(resent.len(), 2, "{resent:?}");
        // The client resends 7, which was routed before the restart: PUBREC, no event.
        let dup = Publish {
            dup: true,
            ..publish("in", QoS::ExactlyOnce, Some(7))
        };
        server_feed(&mut server, t1, Packet::Publish(dup));
        assert!(server_events(&mut server).is_empty());
        assert_eq!(server_tx(&mut server, t1), [Packet::PubRec(ack(7))]);
        server_feed(&mut server, t1, Packet::PubRel(ack(7)));
        assert_eq!(server_tx(&mut server, t1), [Packet::PubComp(ack(7))]);
        // The outgoing flows finish.
        server_feed(&mut server, t1, Packet::PubComp(PubAck::new(released)));
        server_feed(&mut server, t1, Packet::PubRec(PubAck::new(waiting)));
        assert_eq!(
            server_tx(&mut server, t1),
            [Packet::PubRel(PubAck::new(waiting))]
        );
        server_feed(&mut server, t1, Packet::PubComp(PubAck::new(waiting)));
        assert_eq!(server.session().unwrap().in_flight(), 0);
    }
}

#[test]
fn a_qos2_retransmission_waits_for_the_brokers_answer() {
    // (§4.3.3) The PUBREC carries the broker's verdict, so a retransmission that arrives
    // before `acknowledge` gets no PUBREC of its own that could contradict it.
    for version in ALL {
        let t0 = Instant::now();
        let mut server = fresh(version, t0);
        let p = publish("a", QoS::ExactlyOnce, Some(9));
        server_feed(&mut server, t0, Packet::Publish(p.clone()));
        server_feed(&mut server, t0, Packet::Publish(Publish { dup: true, ..p }));
        assert!(server_tx(&mut server, t0).is_empty());
        server.acknowledge(pid(9), ReasonCode::NOT_AUTHORIZED);
        let expected = if version.is_v5() {
            ack_with(9, ReasonCode::NOT_AUTHORIZED)
        } else {
            ack(9)
        };
        assert_eq!(server_tx(&mut server, t0), [Packet::PubRec(expected)]);
    }
}

#[test]
fn a_qos2_message_refused_after_the_connection_closed_is_routed_again_on_resend() {
    // [MQTT-4.3.3-9] (5.0): a refused QoS 2 message leaves its identifier free. When the
    // connection closed before the refusal could be sent (here the client's DISCONNECT came
    // in the same read as its PUBLISH), the client resends the PUBLISH on resume: it must be
    // routed again, not answered with a PUBREC of success for a message that was dropped.
    let t0 = Instant::now();
    let mut connect = connect_packet(V5, "c");
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(100);
    let (mut server, _) = accepted_server(config(), connect.clone(), None, t0);
    let p = publish("a", QoS::ExactlyOnce, Some(9));
    server_feed(&mut server, t0, Packet::Publish(p.clone()));
    server_feed(&mut server, t0, disconnect(ReasonCode::SUCCESS));
    let events = server_events(&mut server);
    assert!(
        matches!(events[0], ServerEvent::Publish { .. }),
        "{events:?}"
    );
    server.acknowledge(pid(9), ReasonCode::QUOTA_EXCEEDED);
    let session = server.take_session().unwrap();
    let (mut server, _) = accepted_server(config(), connect, Some(session), t0);
    server_feed(&mut server, t0, Packet::Publish(Publish { dup: true, ..p }));
    let events = server_events(&mut server);
    assert!(
        matches!(
            events.as_slice(),
            [ServerEvent::Publish {
                packet_id: Some(_),
                ..
            }]
        ),
        "routed again: {events:?}"
    );
    assert!(
        server_tx(&mut server, t0).is_empty(),
        "no PUBREC before the answer"
    );
    server.acknowledge(pid(9), ReasonCode::SUCCESS);
    assert_eq!(server_tx(&mut server, t0), [Packet::PubRec(ack(9))]);
}

fn reason_string(packet: &Packet) -> Option<String> {
    let reason = match packet {
        Packet::Disconnect(d) => &d.properties.reason_string,
        Packet::ConnAck(c) => &c.properties.reason_string,
        Packet::PubAck(a) | Packet::PubRec(a) => &a.properties.reason_string,
        Packet::SubAck(s) => &s.properties.reason_string,
        _ => return None,
    };
    reason.as_ref().map(|r| r.as_str().to_owned())
}

#[test]
fn reason_strings_explain_disconnects_and_refusals() {
    // 5.0 §3.14.2.2.3, §3.2.2.3.7: a human-readable reason with the reason code.
    let t0 = Instant::now();
    let mut server = fresh(ProtocolVersion::V5, t0);
    // A wildcard in a topic name: the codec's own words.
    let mut bytes = BytesMut::new();
    bytes.extend_from_slice(&[0x30, 0x05, 0x00, 0x03, b'a', b'/', b'#']);
    server.handle_bytes(t0, &mut bytes);
    let sent = server_tx_with_reasons(&mut server, t0);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        reason_string(&sent[0]).as_deref(),
        Some("wildcard in a topic name")
    );

    let mut config = config();
    config.maximum_qos = QoS::AtLeastOnce;
    let connect = with_will(connect_packet(ProtocolVersion::V5, "w"), |w| {
        w.qos = QoS::ExactlyOnce
    });
    let mut server = ServerConnection::new(Arc::new(config), t0);
    server_feed(&mut server, t0, Packet::Connect(Box::new(connect)));
    let sent = server_tx_with_reasons(&mut server, t0);
    assert_eq!(
        reason_string(&sent[0]).as_deref(),
        Some("qos not supported")
    );
}

// Conformance: [MQTT-5:3.1.2-29]
#[test]
fn failed_acknowledgements_carry_a_reason_string_unless_the_client_declined_them() {
    // [MQTT-3.1.2-29]: with Request Problem Information 0, no Reason String on PUBACK/SUBACK.
    for (declined, expected) in [(false, Some("not authorized")), (true, None)] {
        let t0 = Instant::now();
        let mut connect = connect_packet(ProtocolVersion::V5, "c");
        if declined {
            connect.properties.request_problem_information = Some(false);
        }
        let (mut server, _) = accepted_server(config(), connect, None, t0);
        server_feed(
            &mut server,
            t0,
            Packet::Publish(publish("a", QoS::AtLeastOnce, Some(1))),
        );
        let _ = server_events(&mut server);
        server.acknowledge(pid(1), ReasonCode::NOT_AUTHORIZED);
        let sent = server_tx_with_reasons(&mut server, t0);
        assert_eq!(
            reason_string(&sent[0]).as_deref(),
            expected,
            "declined: {declined}"
        );
        // A refused subscription likewise.
        let filters = vec![(
            ByteStr::from("a/#"),
            SubscriptionOptions::qos(QoS::AtMostOnce),
        )];
        let subscribe = Subscribe {
            packet_id: pid(2),
            filters,
            properties: Default::default(),
        };
        server_feed(&mut server, t0, Packet::Subscribe(subscribe));
        let Some(ServerEvent::Subscribe { packet_id, .. }) = server_events(&mut server).pop()
        else {
            panic!("no Subscribe event");
        };
        server.subscribe_ack(packet_id, vec![ReasonCode::NOT_AUTHORIZED]);
        let sent = server_tx_with_reasons(&mut server, t0);
        assert_eq!(reason_string(&sent[0]).is_some(), !declined, "{sent:?}");
    }
}

// Conformance: [MQTT-5:3.14.2-3]
#[test]
fn a_reason_string_never_pushes_a_packet_over_the_clients_maximum() {
    // 5.0 §3.14.2.2.3: the Reason String is left out rather than exceed Maximum Packet Size.
    let t0 = Instant::now();
    let mut connect = connect_packet(ProtocolVersion::V5, "tiny");
    connect.properties.maximum_packet_size = NonZeroU32::new(8);
    let (mut server, _) = accepted_server(config(), connect, None, t0);
    server.disconnect(ReasonCode::SERVER_SHUTTING_DOWN);
    let sent = server_tx_with_reasons(&mut server, t0);
    assert_eq!(
        sent,
        [Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::SERVER_SHUTTING_DOWN,
            ..Disconnect::default()
        })]
    );
}
