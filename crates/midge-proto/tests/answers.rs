//! What a server connection remembers so that the broker's answers need only an identifier:
//! the QoS of each unacknowledged PUBLISH, the requests and Subscription Identifier of each
//! unanswered SUBSCRIBE, the filters of each unanswered UNSUBSCRIBE; how much of that it keeps
//! (input waits once [`MAX_PENDING_REQUESTS`] are unanswered); and what it sends when an
//! answer does not fit the protocol.

mod common;

use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use common::*;
use midge_codec::{
    ByteStr, Packet, PacketType, ProtocolVersion, PubAck, QoS, ReasonCode, SubAck, Subscribe,
    SubscribeProperties, SubscriptionId, SubscriptionOptions,
};
use midge_proto::server::{
    ServerCloseReason, ServerConfig, ServerConnection, ServerEvent, MAX_PENDING_REQUESTS,
};
use midge_proto::session::Delivery;
use midge_proto::Message;

fn connected(version: ProtocolVersion, config: ServerConfig) -> (ServerConnection, Instant) {
    let t0 = Instant::now();
    let (server, _) = accepted_server(config, connect_packet(version, "c"), None, t0);
    (server, t0)
}

fn subscribe(id: u16, filters: &[(&str, QoS)], subscription_id: Option<u32>) -> Packet {
    let mut properties = SubscribeProperties::default();
    properties.subscription_identifier = subscription_id.and_then(SubscriptionId::new);
    Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        filters: filters
            .iter()
            .map(|(f, q)| (ByteStr::from(f.to_string()), SubscriptionOptions::qos(*q)))
            .collect(),
        properties,
    })
}

fn encoded(version: ProtocolVersion, packets: &[Packet]) -> BytesMut {
    let mut buf = BytesMut::new();
    for packet in packets {
        packet
            .encode(version, &mut buf)
            .expect("test packet encodes");
    }
    buf
}

fn suback(id: u16, codes: &[ReasonCode]) -> Packet {
    Packet::SubAck(SubAck {
        packet_id: pid(id),
        reason_codes: codes.to_vec(),
        properties: Default::default(),
    })
}

fn subscribe_ids(events: &[ServerEvent]) -> Vec<u16> {
    events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::Subscribe { packet_id, .. } => Some(packet_id.get()),
            _ => None,
        })
        .collect()
}

// Conformance: [MQTT-5:2.2.1-5] [MQTT-3.1.1:2.3.1-6]
#[test]
fn an_acknowledgement_goes_out_as_the_publishes_qos_requires() {
    // PUBACK for QoS 1 [MQTT-4.3.2-4], PUBREC for QoS 2 [MQTT-4.3.3-8], each with its
    // PUBLISH's identifier; the broker names only the identifier.
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let (mut s, t0) = connected(version, ServerConfig::default());
        server_feed(
            &mut s,
            t0,
            Packet::Publish(publish("a", QoS::ExactlyOnce, Some(2))),
        );
        server_feed(
            &mut s,
            t0,
            Packet::Publish(publish("a", QoS::AtLeastOnce, Some(1))),
        );
        assert_eq!(server_events(&mut s).len(), 2);
        s.acknowledge(pid(1), ReasonCode::SUCCESS);
        s.acknowledge(pid(2), ReasonCode::SUCCESS);
        assert_eq!(
            server_tx(&mut s, t0),
            [Packet::PubAck(ack(1)), Packet::PubRec(ack(2))]
        );
    }
}

#[test]
fn an_identifier_with_nothing_to_acknowledge_is_ignored() {
    let (mut s, t0) = connected(ProtocolVersion::V5, ServerConfig::default());
    // Never seen, a QoS 0 publish's (it has none), and one acknowledged already.
    s.acknowledge(pid(9), ReasonCode::SUCCESS);
    server_feed(
        &mut s,
        t0,
        Packet::Publish(publish("a", QoS::AtMostOnce, None)),
    );
    server_feed(
        &mut s,
        t0,
        Packet::Publish(publish("a", QoS::AtLeastOnce, Some(4))),
    );
    let _ = server_events(&mut s);
    s.acknowledge(pid(4), ReasonCode::SUCCESS);
    s.acknowledge(pid(4), ReasonCode::NOT_AUTHORIZED);
    assert_eq!(server_tx(&mut s, t0), [Packet::PubAck(ack(4))]);
    assert!(s.is_connected());
}

#[test]
fn an_identifier_the_client_reused_is_acknowledged_oldest_first() {
    // A client may not reuse an identifier in flight [MQTT-2.2.1-3]; one that does still
    // gets one answer per PUBLISH, in order, each as its QoS requires.
    let (mut s, t0) = connected(ProtocolVersion::V5, ServerConfig::default());
    server_feed(
        &mut s,
        t0,
        Packet::Publish(publish("a", QoS::AtLeastOnce, Some(5))),
    );
    server_feed(
        &mut s,
        t0,
        Packet::Publish(publish("b", QoS::ExactlyOnce, Some(5))),
    );
    assert_eq!(server_events(&mut s).len(), 2);
    s.acknowledge(pid(5), ReasonCode::SUCCESS);
    s.acknowledge(pid(5), ReasonCode::SUCCESS);
    assert_eq!(
        server_tx(&mut s, t0),
        [Packet::PubAck(ack(5)), Packet::PubRec(ack(5))]
    );
}

// Conformance: [MQTT-5:3.4.2-1]
#[test]
fn a_code_puback_cannot_carry_is_sent_as_unspecified_error() {
    // 5.0 §3.4.2.1 lists PUBACK's codes; 0x8E Session taken over is not one of them.
    let (mut s, t0) = connected(ProtocolVersion::V5, ServerConfig::default());
    server_feed(
        &mut s,
        t0,
        Packet::Publish(publish("a", QoS::AtLeastOnce, Some(1))),
    );
    let _ = server_events(&mut s);
    assert!(!ReasonCode::SESSION_TAKEN_OVER.is_allowed_in(PacketType::PubAck));
    s.acknowledge(pid(1), ReasonCode::SESSION_TAKEN_OVER);
    assert_eq!(
        server_tx(&mut s, t0),
        [Packet::PubAck(ack_with(1, ReasonCode::UNSPECIFIED_ERROR))]
    );
}

// Conformance: [MQTT-5:3.8.4-6] [MQTT-5:3.9.3-1] [MQTT-5:3.9.3-2]
#[test]
fn a_suback_has_one_valid_code_per_filter_whatever_the_broker_answers() {
    let (mut s, t0) = connected(ProtocolVersion::V5, ServerConfig::default());
    let filters = [
        ("short", QoS::AtLeastOnce),
        ("lowered", QoS::AtLeastOnce),
        ("not/a/code", QoS::AtLeastOnce),
        ("missing", QoS::AtLeastOnce),
    ];
    server_feed(&mut s, t0, subscribe(1, &filters, Some(7)));
    let _ = server_events(&mut s);
    // Granted QoS 1; QoS 2 where 1 was asked (lowered); 0x04, no SUBACK code; no fourth code.
    s.subscribe_ack(
        pid(1),
        vec![
            ReasonCode::GRANTED_QOS_1,
            ReasonCode::GRANTED_QOS_2,
            ReasonCode(0x04),
        ],
    );
    assert_eq!(
        server_tx(&mut s, t0),
        [suback(
            1,
            &[
                ReasonCode::GRANTED_QOS_1,
                ReasonCode::GRANTED_QOS_1,
                ReasonCode::UNSPECIFIED_ERROR,
                ReasonCode::UNSPECIFIED_ERROR,
            ]
        )]
    );
    // The session holds what was granted, with the SUBSCRIBE's identifier, and only that.
    let session = s.session().unwrap();
    let subs: Vec<_> = session
        .subscriptions()
        .map(|(f, sub)| (f.as_str(), sub.options.qos, sub.id.map(SubscriptionId::get)))
        .collect();
    assert_eq!(
        subs,
        [
            ("lowered", QoS::AtLeastOnce, Some(7)),
            ("short", QoS::AtLeastOnce, Some(7)),
        ]
    );
    // Extra codes are ignored; an identifier with no SUBSCRIBE pending changes nothing.
    s.subscribe_ack(pid(1), vec![ReasonCode::GRANTED_QOS_0]);
    s.subscribe_ack(pid(2), vec![ReasonCode::GRANTED_QOS_0]);
    assert!(server_tx(&mut s, t0).is_empty());
    assert_eq!(s.session().unwrap().subscription_count(), 2);
}

// Conformance: [MQTT-5:3.8.4-7]
#[test]
fn the_servers_own_refusal_stands_whatever_the_broker_grants() {
    let mut config = ServerConfig::default();
    config.wildcard_subscriptions = false;
    let (mut s, t0) = connected(ProtocolVersion::V5, config);
    server_feed(&mut s, t0, subscribe(3, &[("a/+", QoS::AtMostOnce)], None));
    let _ = server_events(&mut s);
    s.subscribe_ack(pid(3), vec![ReasonCode::GRANTED_QOS_0]);
    assert_eq!(
        server_tx(&mut s, t0),
        [suback(
            3,
            &[ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED]
        )]
    );
    assert_eq!(s.session().unwrap().subscription_count(), 0);
}

#[test]
fn pipelined_subscribes_cannot_pass_the_subscription_quota() {
    // Each verdict counts the subscriptions that answers still pending may add, and the
    // answer checks the session again: three one-filter SUBSCRIBEs against a quota of two.
    let mut config = ServerConfig::default();
    config.max_subscriptions = 2;
    let (mut s, t0) = connected(ProtocolVersion::V5, config);
    let packets: Vec<_> = (1..=3)
        .map(|n| {
            subscribe(
                n,
                &[(["x", "y", "z"][usize::from(n - 1)], QoS::AtMostOnce)],
                None,
            )
        })
        .collect();
    s.handle_bytes(t0, &mut encoded(ProtocolVersion::V5, &packets));
    let verdicts: Vec<_> = server_events(&mut s)
        .into_iter()
        .map(|e| match e {
            ServerEvent::Subscribe { requests, .. } => requests[0].verdict,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(verdicts, [Ok(()), Ok(()), Err(ReasonCode::QUOTA_EXCEEDED)]);
    for n in 1..=3 {
        s.subscribe_ack(pid(n), vec![ReasonCode::GRANTED_QOS_0]);
    }
    let sent = server_tx(&mut s, t0);
    assert_eq!(sent[2], suback(3, &[ReasonCode::QUOTA_EXCEEDED]));
    assert_eq!(s.session().unwrap().subscription_count(), 2);
}

#[test]
fn unsubscribe_answers_come_from_the_remembered_filters() {
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let (mut s, t0) = connected(version, ServerConfig::default());
        server_feed(&mut s, t0, subscribe(1, &[("kept", QoS::AtMostOnce)], None));
        let _ = server_events(&mut s);
        s.subscribe_ack(pid(1), vec![ReasonCode::GRANTED_QOS_0]);
        let _ = server_tx(&mut s, t0);
        // Nothing pending under this identifier: nothing happens.
        assert!(s.unsubscribe_ack(pid(2)).is_empty());
        assert!(server_tx(&mut s, t0).is_empty());
        server_unsubscribe(&mut s, t0, 2, &["kept", "never"]);
        let codes = s.unsubscribe_ack(pid(2));
        assert_eq!(
            codes,
            [ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]
        );
        let sent = server_tx(&mut s, t0);
        let [Packet::UnsubAck(unsuback)] = sent.as_slice() else {
            panic!("{sent:?}")
        };
        // 3.x UNSUBACK has no payload; 5.0 one code per filter [MQTT-3.11.3-1].
        let expected = if version.is_v5() { codes } else { Vec::new() };
        assert_eq!(unsuback.reason_codes, expected);
        assert_eq!(s.session().unwrap().subscription_count(), 0);
    }
}

#[test]
fn input_waits_while_too_many_subscribes_are_unanswered() {
    // A client pipelines more SUBSCRIBEs than the connection keeps answers for, then a
    // PUBLISH: the rest stays in the buffer, and comes out in order as answers free room.
    let version = ProtocolVersion::V5;
    let (mut s, t0) = connected(version, ServerConfig::default());
    let extra = 3;
    let total = MAX_PENDING_REQUESTS + extra;
    let mut packets: Vec<_> = (1..=total as u16)
        .map(|n| subscribe(n, &[("t", QoS::AtMostOnce)], None))
        .collect();
    packets.push(Packet::Publish(publish("t", QoS::AtMostOnce, None)));
    let mut buf = encoded(version, &packets);
    s.handle_bytes(t0, &mut buf);
    let first: Vec<u16> = (1..=MAX_PENDING_REQUESTS as u16).collect();
    assert_eq!(subscribe_ids(&server_events(&mut s)), first);
    assert!(!buf.is_empty(), "the rest waits in the buffer");
    // Nothing more while nothing is answered.
    s.handle_bytes(t0, &mut buf);
    assert!(server_events(&mut s).is_empty());
    // Each answer lets one more in; the PUBLISH comes last, as it was sent.
    let mut later = Vec::new();
    for n in 1..=total as u16 {
        s.subscribe_ack(pid(n), vec![ReasonCode::GRANTED_QOS_0]);
        s.handle_bytes(t0, &mut buf);
        later.extend(server_events(&mut s));
    }
    let expected: Vec<u16> = (MAX_PENDING_REQUESTS as u16 + 1..=total as u16).collect();
    assert_eq!(subscribe_ids(&later), expected);
    assert!(matches!(later.last(), Some(ServerEvent::Publish { .. })));
    assert!(buf.is_empty());
    let subacks = server_tx(&mut s, t0);
    assert_eq!(subacks.len(), total);
    assert!(s.is_connected());
}

#[test]
fn packets_handed_over_while_input_waits_are_held_in_order_and_bounded() {
    let version = ProtocolVersion::V5;
    let (mut s, t0) = connected(version, ServerConfig::default());
    for n in 1..=MAX_PENDING_REQUESTS as u16 {
        s.handle_packet(t0, subscribe(n, &[("t", QoS::AtMostOnce)], None));
    }
    assert_eq!(server_events(&mut s).len(), MAX_PENDING_REQUESTS);
    // Held, not handled: no PINGRESP, no event.
    s.handle_packet(t0, Packet::PingReq);
    s.handle_packet(t0, Packet::Publish(publish("t", QoS::AtLeastOnce, Some(1))));
    assert!(server_tx(&mut s, t0).is_empty());
    assert!(server_events(&mut s).is_empty());
    // One answer: the held packets are handled, in order.
    s.subscribe_ack(pid(1), vec![ReasonCode::GRANTED_QOS_0]);
    assert_eq!(
        server_tx(&mut s, t0),
        [suback(1, &[ReasonCode::GRANTED_QOS_0]), Packet::PingResp]
    );
    assert!(matches!(
        server_events(&mut s).as_slice(),
        [ServerEvent::Publish { packet_id: Some(id), .. }] if *id == pid(1)
    ));
    // Back at the limit, 64 held packets are the most: the next closes the connection.
    s.handle_packet(t0, subscribe(99, &[("t", QoS::AtMostOnce)], None));
    let _ = server_events(&mut s);
    for _ in 0..64 {
        s.handle_packet(t0, Packet::PingReq);
    }
    assert!(s.is_connected());
    s.handle_packet(t0, Packet::PingReq);
    assert_eq!(
        server_closed(&server_events(&mut s)),
        Some(ServerCloseReason::ProtocolViolation(
            ReasonCode::RECEIVE_MAXIMUM_EXCEEDED
        ))
    );
}

#[test]
fn a_publishes_topic_is_validated_once_and_routing_trusts_it() {
    // The level limit applies to a decoded topic, whose validity the decoder learnt
    // [MQTT-4.7.3-1] [MQTT-4.7.3-2]; what the connection reports needs no second check.
    let mut config = ServerConfig::default();
    config.topic_limits = config.topic_limits.with_max_levels(3);
    let (mut s, t0) = connected(ProtocolVersion::V5, config);
    server_feed(
        &mut s,
        t0,
        Packet::Publish(publish("a/b/c", QoS::AtMostOnce, None)),
    );
    let events = server_events(&mut s);
    let [ServerEvent::Publish { message, .. }] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(message.topic.topic_levels(), Some(3));
    assert_eq!(message.topic_name().unwrap().as_str(), "a/b/c");
    server_feed(
        &mut s,
        t0,
        Packet::Publish(publish("a/b/c/d", QoS::AtMostOnce, None)),
    );
    assert_eq!(
        server_closed(&server_events(&mut s)),
        Some(ServerCloseReason::ProtocolViolation(
            ReasonCode::TOPIC_NAME_INVALID
        ))
    );
    // A message built by hand is checked when asked.
    let built = Message::new(ByteStr::from("x/+".to_owned()), &b""[..], QoS::AtMostOnce);
    assert!(built.topic_name().is_err());
}

// Conformance: [MQTT-5:3.3.4-3] [MQTT-5:3.3.2-20]
#[test]
fn one_message_goes_to_each_subscriber_with_its_own_identifiers() {
    // The message's properties go out as they are; each delivery adds its own Subscription
    // Identifiers, and identifiers the message itself carries are not passed on.
    let version = ProtocolVersion::V5;
    let t0 = Instant::now();
    let mut message = Message::new("m/1", &b"payload"[..], QoS::AtLeastOnce);
    let props = &mut message.properties;
    props
        .set_content_type(Some(ByteStr::from("text/plain")))
        .unwrap();
    props.push_user_property("k", "v").unwrap();
    props.set_subscription_identifiers(&[SubscriptionId::new(99).unwrap()]);
    let message = Arc::new(message);
    for (n, ids) in [vec![1], vec![2, 300], vec![]].into_iter().enumerate() {
        let (mut s, _) = connected(version, ServerConfig::default());
        let mut delivery = Delivery::new(message.clone(), t0);
        delivery.subscription_ids = ids.iter().filter_map(|i| SubscriptionId::new(*i)).collect();
        s.deliver(delivery);
        let sent = server_tx(&mut s, t0);
        let [Packet::Publish(p)] = sent.as_slice() else {
            panic!("{sent:?}")
        };
        let got: Vec<u32> = p
            .properties
            .subscription_identifiers()
            .map(|i| i.get())
            .collect();
        assert_eq!(got, ids, "subscriber {n}");
        assert_eq!(p.properties.content_type().unwrap(), "text/plain");
        let user: Vec<_> = p.properties.user_properties().collect();
        assert_eq!(user, [(ByteStr::from("k"), ByteStr::from("v"))]);
        assert_eq!(p.packet_id, NonZeroU16::new(1));
        s.handle_packet(t0, Packet::PubAck(PubAck::new(pid(1))));
        assert_eq!(s.session().unwrap().in_flight(), 0);
    }
}

#[test]
fn what_waits_for_answers_is_bounded_by_the_receive_maximum() {
    // A client that releases its QoS 2 messages (PUBREL) before the server has acknowledged
    // them makes no room by that: unanswered publishes count against the Receive Maximum
    // until the broker answers them (5.0 §3.3.4: more is DISCONNECT 0x93).
    let mut config = ServerConfig::default();
    config.receive_maximum = 2;
    let (mut s, t0) = connected(ProtocolVersion::V5, config);
    for id in 1..=2 {
        server_feed(
            &mut s,
            t0,
            Packet::Publish(publish("q", QoS::ExactlyOnce, Some(id))),
        );
        server_feed(&mut s, t0, Packet::PubRel(ack(id)));
    }
    assert_eq!(server_events(&mut s).len(), 2);
    assert!(s.is_connected());
    server_feed(
        &mut s,
        t0,
        Packet::Publish(publish("q", QoS::ExactlyOnce, Some(3))),
    );
    assert_eq!(
        server_closed(&server_events(&mut s)),
        Some(ServerCloseReason::ProtocolViolation(
            ReasonCode::RECEIVE_MAXIMUM_EXCEEDED
        ))
    );
}
