//! Conformance tests of the sans-IO state machines: the server connection (`ServerConnection`)
//! and the client (`Client`), driven packet by packet under MQTT 3.1.1 and 5.0, every byte they
//! transmit decoded back with the codec. Each test carries the tags of the normative statements
//! it checks (`[MQTT-5:x]`, `[MQTT-3.1.1:x]`), which `docs/gen_conformance.py` collects into
//! `docs/conformance.md`.

mod common;

use std::collections::HashSet;
use std::num::{NonZeroU16, NonZeroU32};
use std::sync::Arc;
use std::time::Instant;

use common::*;
use midge_codec::{
    ByteStr, ConnAck, Packet, ProtocolVersion, PubAck, Publish, QoS, ReasonCode, Subscribe,
    SubscribeProperties, SubscriptionId, SubscriptionOptions, UnsubscribeProperties,
};
use midge_proto::client::{Client, Event, PublishError};
use midge_proto::server::{ServerConfig, ServerConnection, ServerEvent};
use midge_proto::session::Delivery;
use midge_proto::Message;

const BOTH: [ProtocolVersion; 2] = [V3_1_1, V5];

fn msg(topic: &str, qos: QoS) -> Message {
    Message::new(topic.to_owned(), &b"payload"[..], qos)
}

fn delivery(message: Message, now: Instant) -> Delivery {
    let mut delivery = Delivery::new(Arc::new(message), now);
    delivery.retain = false;
    delivery
}

fn server(version: ProtocolVersion, now: Instant) -> ServerConnection {
    accepted_server(
        ServerConfig::default(),
        connect_packet(version, "c"),
        None,
        now,
    )
    .0
}

fn client(version: ProtocolVersion, now: Instant) -> Client {
    connected_client(client_config(version), ConnAck::default(), now)
}

fn publishes(packets: &[Packet]) -> Vec<Publish> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

fn server_publish_events(server: &mut ServerConnection) -> usize {
    server_events(server)
        .iter()
        .filter(|e| matches!(e, ServerEvent::Publish { .. }))
        .count()
}

fn client_messages(client: &mut Client) -> usize {
    client_events(client)
        .iter()
        .filter(|e| matches!(e, Event::Message(_)))
        .count()
}

// ------------------------------------------------------------------------ sending (§4.3)

// Conformance: [MQTT-5:4.3.1-1] [MQTT-3.1.1:4.3.1-1]
#[test]
fn qos0_goes_out_with_dup_0_and_no_identifier() {
    for version in BOTH {
        let t0 = Instant::now();
        let mut c = client(version, t0);
        c.publish(msg("a", QoS::AtMostOnce)).unwrap();
        let mut s = server(version, t0);
        s.deliver(delivery(msg("a", QoS::AtMostOnce), t0));
        for p in publishes(&client_tx(&mut c, t0, version))
            .into_iter()
            .chain(publishes(&server_tx(&mut s, t0)))
        {
            assert_eq!((p.qos, p.dup, p.packet_id), (QoS::AtMostOnce, false, None));
        }
    }
}

// Conformance: [MQTT-5:4.3.2-1] [MQTT-5:4.3.2-2] [MQTT-5:4.3.2-3] [MQTT-3.1.1:4.3.2-1]
// Conformance: [MQTT-5:4.3.3-1] [MQTT-5:4.3.3-2] [MQTT-5:2.2.1-3] [MQTT-5:2.2.1-4]
// Conformance: [MQTT-3.1.1:2.3.1-2] [MQTT-3.1.1:2.3.1-4]
#[test]
fn new_messages_get_unused_identifiers_and_dup_0_and_stay_unacknowledged() {
    for version in BOTH {
        for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let t0 = Instant::now();
            // Client: publishes, subscriptions and unsubscriptions share the identifiers.
            let mut c = client(version, t0);
            let mut in_flight = HashSet::new();
            for round in 0..50u16 {
                let id = match round % 5 {
                    3 => c
                        .subscribe(
                            vec![(ByteStr::from("f"), SubscriptionOptions::default())],
                            SubscribeProperties::default(),
                        )
                        .unwrap(),
                    4 => c
                        .unsubscribe(vec![ByteStr::from("f")], UnsubscribeProperties::default())
                        .unwrap(),
                    _ => c.publish(msg("t", qos)).unwrap().unwrap(),
                };
                assert!(in_flight.insert(id), "{id} reused while in flight");
                for p in client_tx(&mut c, t0, version) {
                    if let Packet::Publish(p) = p {
                        assert_eq!((p.qos, p.dup, p.packet_id), (qos, false, Some(id)));
                    }
                }
            }
            // Unacknowledged PUBLISHes stay in flight until their acknowledgement.
            let publishes_in_flight = c.in_flight();
            assert!(publishes_in_flight >= 30, "{publishes_in_flight}");
            // Server: every delivery gets an identifier that is not in flight.
            let mut s = server(version, t0);
            let mut ids = HashSet::new();
            for round in 0..40 {
                s.deliver(delivery(msg("t", qos), t0));
                let sent = publishes(&server_tx(&mut s, t0));
                for p in &sent {
                    assert!(!p.dup);
                    assert!(ids.insert(p.packet_id.unwrap()), "reused {:?}", p.packet_id);
                }
                // Free some identifiers out of order: they may be used again, the others not.
                if round % 3 == 2 {
                    let id = *ids.iter().next().unwrap();
                    ids.remove(&id);
                    let ack = PubAck::new(id);
                    let packet = if qos == QoS::AtLeastOnce {
                        Packet::PubAck(ack)
                    } else {
                        Packet::PubRec(ack)
                    };
                    server_feed(&mut s, t0, packet);
                    if qos == QoS::ExactlyOnce {
                        assert_eq!(server_tx(&mut s, t0), [Packet::PubRel(PubAck::new(id))]);
                        // Still in flight until PUBCOMP; then free.
                        server_feed(&mut s, t0, Packet::PubComp(PubAck::new(id)));
                    }
                }
            }
            assert_eq!(s.session().unwrap().in_flight(), ids.len());
        }
    }
}

// Conformance: [MQTT-5:4.3.3-3] [MQTT-5:4.3.3-4] [MQTT-5:4.3.3-5] [MQTT-5:4.3.3-6]
// Conformance: [MQTT-3.1.1:4.3.3-1] [MQTT-5:2.2.1-5] [MQTT-3.1.1:2.3.1-6]
#[test]
fn the_server_runs_the_qos2_sender_flow() {
    for version in BOTH {
        let t0 = Instant::now();
        let mut s = server(version, t0);
        s.deliver(delivery(msg("x", QoS::ExactlyOnce), t0));
        let sent = publishes(&server_tx(&mut s, t0));
        let id = sent[0].packet_id.unwrap();
        assert!(!sent[0].dup);
        assert_eq!(
            s.session().unwrap().in_flight(),
            1,
            "unacknowledged until PUBREC"
        );
        server_feed(&mut s, t0, Packet::PubRec(PubAck::new(id)));
        assert_eq!(server_tx(&mut s, t0), [Packet::PubRel(PubAck::new(id))]);
        assert_eq!(
            s.session().unwrap().in_flight(),
            1,
            "PUBREL unacknowledged until PUBCOMP"
        );
        // A repeated PUBREC gets the PUBREL again, never the PUBLISH.
        server_feed(&mut s, t0, Packet::PubRec(PubAck::new(id)));
        assert_eq!(server_tx(&mut s, t0), [Packet::PubRel(PubAck::new(id))]);
        server_feed(&mut s, t0, Packet::PubComp(PubAck::new(id)));
        assert_eq!(s.session().unwrap().in_flight(), 0);
        assert!(server_tx(&mut s, t0).is_empty());
    }
}

// Conformance: [MQTT-5:4.3.3-7]
#[test]
fn expiry_does_not_cut_a_qos2_exchange_short() {
    let t0 = Instant::now();
    let mut s = server(V5, t0);
    let mut m = msg("x", QoS::ExactlyOnce);
    m.properties.message_expiry_interval = Some(1);
    s.deliver(delivery(m, t0));
    let id = publishes(&server_tx(&mut s, t0))[0].packet_id.unwrap();
    let later = t0 + 60 * SEC;
    s.handle_timeout(later);
    server_feed(&mut s, later, Packet::PubRec(PubAck::new(id)));
    assert_eq!(server_tx(&mut s, later), [Packet::PubRel(PubAck::new(id))]);
    server_feed(&mut s, later, Packet::PubComp(PubAck::new(id)));
    assert_eq!(s.session().unwrap().in_flight(), 0);
}

// ---------------------------------------------------------------------- receiving (§4.3)

// Conformance: [MQTT-5:3.3.4-1] [MQTT-3.1.1:3.3.4-1] [MQTT-5:4.5.0-2] [MQTT-3.1.1:4.5.0-2]
#[test]
fn each_qos_gets_its_answer() {
    for version in BOTH {
        let t0 = Instant::now();
        // Server.
        let mut s = server(version, t0);
        server_feed(
            &mut s,
            t0,
            Packet::Publish(publish("a", QoS::AtMostOnce, None)),
        );
        assert_eq!(server_publish_events(&mut s), 1);
        assert!(server_tx(&mut s, t0).is_empty(), "QoS 0: no answer");
        for (qos, id) in [(QoS::AtLeastOnce, 1), (QoS::ExactlyOnce, 2)] {
            server_feed(&mut s, t0, Packet::Publish(publish("a", qos, Some(id))));
            assert_eq!(server_publish_events(&mut s), 1);
            s.acknowledge(pid(id), ReasonCode::SUCCESS);
            let expected = if qos == QoS::AtLeastOnce {
                Packet::PubAck(ack(id))
            } else {
                Packet::PubRec(ack(id))
            };
            assert_eq!(server_tx(&mut s, t0), [expected]);
        }
        // Client: answers by QoS whether or not the application reads the messages.
        let mut c = client(version, t0);
        for (qos, id) in [
            (QoS::AtMostOnce, None),
            (QoS::AtLeastOnce, Some(3)),
            (QoS::ExactlyOnce, Some(4)),
        ] {
            client_feed(&mut c, t0, version, Packet::Publish(publish("a", qos, id)));
        }
        assert_eq!(
            client_tx(&mut c, t0, version),
            [Packet::PubAck(ack(3)), Packet::PubRec(ack(4))]
        );
    }
}

// Conformance: [MQTT-5:4.3.2-5] [MQTT-3.1.1:4.3.2-2] [MQTT-5:4.3.2-4]
#[test]
fn after_puback_the_same_identifier_is_a_new_message() {
    for version in BOTH {
        let t0 = Instant::now();
        let mut s = server(version, t0);
        let p = publish("a", QoS::AtLeastOnce, Some(5));
        server_feed(&mut s, t0, Packet::Publish(p.clone()));
        assert_eq!(server_publish_events(&mut s), 1);
        s.acknowledge(pid(5), ReasonCode::SUCCESS);
        assert_eq!(server_tx(&mut s, t0), [Packet::PubAck(ack(5))]);
        server_feed(
            &mut s,
            t0,
            Packet::Publish(Publish {
                dup: true,
                ..p.clone()
            }),
        );
        assert_eq!(server_publish_events(&mut s), 1, "routed again, DUP or not");
        let mut c = client(version, t0);
        for dup in [false, true] {
            client_feed(
                &mut c,
                t0,
                version,
                Packet::Publish(Publish { dup, ..p.clone() }),
            );
            assert_eq!(client_tx(&mut c, t0, version), [Packet::PubAck(ack(5))]);
            assert_eq!(client_messages(&mut c), 1);
        }
    }
}

// Conformance: [MQTT-5:4.3.3-12] [MQTT-3.1.1:4.3.3-2] [MQTT-5:4.3.3-9]
#[test]
fn after_pubcomp_or_a_failing_pubrec_the_same_identifier_is_a_new_message() {
    for version in BOTH {
        let t0 = Instant::now();
        let mut s = server(version, t0);
        let p = publish("a", QoS::ExactlyOnce, Some(6));
        server_feed(&mut s, t0, Packet::Publish(p.clone()));
        assert_eq!(server_publish_events(&mut s), 1);
        s.acknowledge(pid(6), ReasonCode::SUCCESS);
        server_feed(&mut s, t0, Packet::PubRel(ack(6)));
        assert_eq!(
            server_tx(&mut s, t0),
            [Packet::PubRec(ack(6)), Packet::PubComp(ack(6))]
        );
        server_feed(&mut s, t0, Packet::Publish(p.clone()));
        assert_eq!(server_publish_events(&mut s), 1, "a new publication");
        // The client too.
        let mut c = client(version, t0);
        client_feed(&mut c, t0, version, Packet::Publish(p.clone()));
        client_feed(&mut c, t0, version, Packet::PubRel(ack(6)));
        client_feed(&mut c, t0, version, Packet::Publish(p.clone()));
        assert_eq!(client_messages(&mut c), 2);
    }
    // 5.0: after a PUBREC of 0x80 or above the identifier is free at once.
    let t0 = Instant::now();
    let mut s = server(V5, t0);
    let p = publish("a", QoS::ExactlyOnce, Some(8));
    server_feed(&mut s, t0, Packet::Publish(p.clone()));
    assert_eq!(server_publish_events(&mut s), 1);
    s.acknowledge(pid(8), ReasonCode::NOT_AUTHORIZED);
    assert_eq!(
        server_tx(&mut s, t0),
        [Packet::PubRec(ack_with(8, ReasonCode::NOT_AUTHORIZED))]
    );
    server_feed(&mut s, t0, Packet::Publish(p));
    assert_eq!(server_publish_events(&mut s), 1, "a new publication");
}

// Conformance: [MQTT-5:4.3.3-13]
#[test]
fn an_expired_qos2_message_still_completes_its_exchange() {
    let t0 = Instant::now();
    let mut p = publish("a", QoS::ExactlyOnce, Some(9));
    p.properties.message_expiry_interval = Some(1);
    let later = t0 + 30 * SEC;
    let mut c = client(V5, t0);
    client_feed(&mut c, t0, V5, Packet::Publish(p.clone()));
    assert_eq!(client_tx(&mut c, t0, V5), [Packet::PubRec(ack(9))]);
    c.handle_timeout(later);
    client_feed(&mut c, later, V5, Packet::PubRel(ack(9)));
    assert_eq!(client_tx(&mut c, later, V5), [Packet::PubComp(ack(9))]);
    let mut s = server(V5, t0);
    server_feed(&mut s, t0, Packet::Publish(p));
    s.acknowledge(pid(9), ReasonCode::SUCCESS);
    let _ = server_tx(&mut s, t0);
    server_feed(&mut s, later, Packet::PubRel(ack(9)));
    assert_eq!(server_tx(&mut s, later), [Packet::PubComp(ack(9))]);
}

// Conformance: [MQTT-3.1.1:3.3.5-2]
#[test]
fn an_unauthorised_3_1_1_publish_is_acknowledged_as_usual() {
    let t0 = Instant::now();
    for (qos, id) in [(QoS::AtLeastOnce, 1u16), (QoS::ExactlyOnce, 2)] {
        let mut s = server(V3_1_1, t0);
        server_feed(
            &mut s,
            t0,
            Packet::Publish(publish("secret", qos, Some(id))),
        );
        let _ = server_events(&mut s);
        s.acknowledge(pid(id), ReasonCode::NOT_AUTHORIZED);
        let expected = if qos == QoS::AtLeastOnce {
            Packet::PubAck(ack(id))
        } else {
            Packet::PubRec(ack(id))
        };
        assert_eq!(server_tx(&mut s, t0), [expected]);
        assert!(s.is_connected());
    }
}

// ------------------------------------------------------------------------ ordering (§4.6)

// Conformance: [MQTT-5:4.6.0-2] [MQTT-5:4.6.0-3] [MQTT-5:4.6.0-4] [MQTT-3.1.1:4.6.0-2]
// Conformance: [MQTT-3.1.1:4.6.0-3] [MQTT-3.1.1:4.6.0-4]
#[test]
fn the_client_acknowledges_in_arrival_order() {
    for version in BOTH {
        let t0 = Instant::now();
        let mut c = client(version, t0);
        for id in [7, 3, 9, 1] {
            client_feed(
                &mut c,
                t0,
                version,
                Packet::Publish(publish("a", QoS::AtLeastOnce, Some(id))),
            );
        }
        for id in [4, 8, 2] {
            client_feed(
                &mut c,
                t0,
                version,
                Packet::Publish(publish("a", QoS::ExactlyOnce, Some(id))),
            );
        }
        assert_eq!(
            client_tx(&mut c, t0, version),
            [7, 3, 9, 1]
                .map(|id| Packet::PubAck(ack(id)))
                .into_iter()
                .chain([4, 8, 2].map(|id| Packet::PubRec(ack(id))))
                .collect::<Vec<_>>()
        );
        // PUBRELs follow the order of the PUBRECs, not of the PUBLISHes.
        let ids: Vec<_> = (0..3)
            .map(|_| c.publish(msg("o", QoS::ExactlyOnce)).unwrap().unwrap())
            .collect();
        let _ = client_tx(&mut c, t0, version);
        for i in [2, 0, 1] {
            client_feed(&mut c, t0, version, Packet::PubRec(PubAck::new(ids[i])));
        }
        assert_eq!(
            client_tx(&mut c, t0, version),
            [2, 0, 1].map(|i| Packet::PubRel(PubAck::new(ids[i])))
        );
    }
}

// ---------------------------------------------------------------- flow control (5.0 §4.9)

// Conformance: [MQTT-5:3.3.4-8] [MQTT-5:4.9.0-1] [MQTT-5:4.9.0-3]
#[test]
fn a_client_out_of_quota_still_sends_and_answers_everything_else() {
    let t0 = Instant::now();
    let mut config = client_config(V5);
    config.keep_alive = 10;
    let connack = ConnAck {
        properties: {
            let mut p = midge_codec::ConnAckProperties::default();
            p.receive_maximum = NonZeroU16::new(1);
            p
        },
        ..ConnAck::default()
    };
    let mut c = connected_client(config, connack, t0);
    c.publish(msg("q", QoS::AtLeastOnce)).unwrap();
    c.publish(msg("q", QoS::AtLeastOnce)).unwrap();
    assert_eq!(
        publishes(&client_tx(&mut c, t0, V5)).len(),
        1,
        "initial quota 1"
    );
    c.subscribe(
        vec![(ByteStr::from("s"), SubscriptionOptions::default())],
        SubscribeProperties::default(),
    )
    .unwrap();
    client_feed(
        &mut c,
        t0,
        V5,
        Packet::Publish(publish("in", QoS::AtLeastOnce, Some(40))),
    );
    let sent = client_tx(&mut c, t0, V5);
    assert!(
        matches!(sent.as_slice(), [Packet::Subscribe(_), Packet::PubAck(a)] if a.packet_id == pid(40)),
        "{sent:?}"
    );
    c.handle_timeout(t0 + 10 * SEC);
    assert_eq!(client_tx(&mut c, t0 + 10 * SEC, V5), [Packet::PingReq]);
}

// Conformance: [MQTT-5:3.3.4-10] [MQTT-5:4.9.0-1] [MQTT-5:4.9.0-3]
#[test]
fn a_server_out_of_quota_still_sends_and_answers_everything_else() {
    let t0 = Instant::now();
    let mut connect = connect_packet(V5, "c");
    connect.properties.receive_maximum = NonZeroU16::new(1);
    let (mut s, _) = accepted_server(ServerConfig::default(), connect, None, t0);
    s.deliver(delivery(msg("d", QoS::AtLeastOnce), t0));
    s.deliver(delivery(msg("d", QoS::AtLeastOnce), t0));
    assert_eq!(
        publishes(&server_tx(&mut s, t0)).len(),
        1,
        "initial quota 1"
    );
    server_feed(&mut s, t0, Packet::PingReq);
    server_feed(
        &mut s,
        t0,
        Packet::Publish(publish("in", QoS::AtLeastOnce, Some(3))),
    );
    server_feed(
        &mut s,
        t0,
        Packet::Subscribe(Subscribe {
            packet_id: pid(4),
            filters: vec![(ByteStr::from("s"), SubscriptionOptions::default())],
            properties: Default::default(),
        }),
    );
    for event in server_events(&mut s) {
        match event {
            ServerEvent::Publish {
                packet_id: Some(id),
                ..
            } => s.acknowledge(id, ReasonCode::SUCCESS),
            ServerEvent::Subscribe { packet_id, .. } => {
                s.subscribe_ack(packet_id, vec![ReasonCode::GRANTED_QOS_0])
            }
            other => panic!("{other:?}"),
        }
    }
    let sent = server_tx(&mut s, t0);
    assert!(
        matches!(
            sent.as_slice(),
            [Packet::PingResp, Packet::PubAck(_), Packet::SubAck(_)]
        ),
        "{sent:?}"
    );
}

// ------------------------------------------------------------------ UNSUBSCRIBE (§3.10.4)

// Conformance: [MQTT-5:3.10.4-3] [MQTT-3.1.1:3.10.4-3]
#[test]
fn deliveries_started_before_unsubscribe_are_completed() {
    for version in BOTH {
        let t0 = Instant::now();
        let mut s = server(version, t0);
        server_feed(
            &mut s,
            t0,
            Packet::Subscribe(Subscribe {
                packet_id: pid(1),
                filters: vec![(
                    ByteStr::from("u/#"),
                    SubscriptionOptions::qos(QoS::ExactlyOnce),
                )],
                properties: Default::default(),
            }),
        );
        let Some(ServerEvent::Subscribe { packet_id, .. }) = server_events(&mut s).pop() else {
            panic!()
        };
        s.subscribe_ack(packet_id, vec![ReasonCode::GRANTED_QOS_2]);
        s.deliver(delivery(msg("u/1", QoS::AtLeastOnce), t0));
        s.deliver(delivery(msg("u/2", QoS::ExactlyOnce), t0));
        let sent = publishes(&server_tx(&mut s, t0));
        let (a, b) = (sent[0].packet_id.unwrap(), sent[1].packet_id.unwrap());
        server_unsubscribe(&mut s, t0, 2, &["u/#"]);
        s.unsubscribe_ack(pid(2));
        assert!(s.session().unwrap().subscription_count() == 0);
        let _ = server_tx(&mut s, t0);
        assert_eq!(s.session().unwrap().in_flight(), 2, "still being delivered");
        server_feed(&mut s, t0, Packet::PubAck(PubAck::new(a)));
        server_feed(&mut s, t0, Packet::PubRec(PubAck::new(b)));
        assert_eq!(server_tx(&mut s, t0), [Packet::PubRel(PubAck::new(b))]);
        server_feed(&mut s, t0, Packet::PubComp(PubAck::new(b)));
        assert_eq!(s.session().unwrap().in_flight(), 0);
        assert!(s.is_connected());
    }
}

// -------------------------------------------------------------------- session state (§4.1)

// Conformance: [MQTT-5:4.1.0-1] [MQTT-3.1.1:4.1.0-1] [MQTT-3.1.1:4.1.0-2]
#[test]
fn session_state_lasts_as_long_as_the_connection() {
    for version in BOTH {
        let t0 = Instant::now();
        let mut connect = connect_packet(version, "c");
        connect.keep_alive = 60;
        if version.is_v5() {
            connect.properties.session_expiry_interval = Some(1);
        }
        let (mut s, _) = accepted_server(ServerConfig::default(), connect, None, t0);
        server_feed(
            &mut s,
            t0,
            Packet::Subscribe(Subscribe {
                packet_id: pid(1),
                filters: vec![(
                    ByteStr::from("k/#"),
                    SubscriptionOptions::qos(QoS::AtLeastOnce),
                )],
                properties: Default::default(),
            }),
        );
        let Some(ServerEvent::Subscribe { packet_id, .. }) = server_events(&mut s).pop() else {
            panic!()
        };
        s.subscribe_ack(packet_id, vec![ReasonCode::GRANTED_QOS_1]);
        s.deliver(delivery(msg("k/1", QoS::AtLeastOnce), t0));
        let _ = server_tx(&mut s, t0);
        // An hour of pings, far past the Session Expiry Interval.
        for minute in 1..=60u64 {
            let now = t0 + (minute as u32) * 60 * SEC;
            s.handle_timeout(now);
            server_feed(&mut s, now, Packet::PingReq);
            assert_eq!(server_tx(&mut s, now), [Packet::PingResp]);
        }
        let session = s.session().unwrap();
        assert_eq!(session.subscription_count(), 1);
        assert_eq!(session.in_flight(), 1);
    }
}

// ------------------------------------------------------------------- DISCONNECT (§3.14)

// Conformance: [MQTT-5:3.14.4-1] [MQTT-5:3.14.4-2] [MQTT-3.1.1:3.14.4-1] [MQTT-3.1.1:3.14.4-2]
#[test]
fn nothing_follows_a_disconnect() {
    for version in BOTH {
        let t0 = Instant::now();
        let mut c = client(version, t0);
        c.publish(msg("a", QoS::AtLeastOnce)).unwrap();
        let _ = client_tx(&mut c, t0, version);
        c.disconnect(ReasonCode::NORMAL_DISCONNECTION);
        // Things that would otherwise send packets.
        c.publish(msg("b", QoS::AtMostOnce)).unwrap();
        client_feed(
            &mut c,
            t0,
            version,
            Packet::Publish(publish("x", QoS::AtLeastOnce, Some(2))),
        );
        c.handle_timeout(t0 + 1000 * SEC);
        let sent = client_tx(&mut c, t0, version);
        assert!(
            matches!(sent.as_slice(), [Packet::Disconnect(_)]),
            "{sent:?}"
        );
        assert!(!c.is_connected());
        assert!(client_events(&mut c).contains(&Event::Closed(
            midge_proto::client::CloseReason::DisconnectedByClient
        )));
        // The server side: after its DISCONNECT, nothing more, and the connection is closed.
        let mut s = server(version, t0);
        s.disconnect(ReasonCode::SERVER_SHUTTING_DOWN);
        s.deliver(delivery(msg("d", QoS::AtMostOnce), t0));
        server_feed(&mut s, t0, Packet::PingReq);
        let sent = server_tx(&mut s, t0);
        if version.is_v5() {
            assert!(
                matches!(sent.as_slice(), [Packet::Disconnect(_)]),
                "{sent:?}"
            );
        } else {
            assert!(sent.is_empty());
        }
        assert!(s.is_closed());
    }
}

// Conformance: [MQTT-5:3.14.2-2]
#[test]
fn a_server_disconnect_never_carries_a_session_expiry_interval() {
    let t0 = Instant::now();
    let connected = || {
        let mut connect = connect_packet(V5, "c");
        connect.properties.session_expiry_interval = Some(300);
        connect.keep_alive = 5;
        accepted_server(ServerConfig::default(), connect, None, t0).0
    };
    let endings: [&dyn Fn(&mut ServerConnection); 4] = [
        &|s| s.disconnect(ReasonCode::SERVER_SHUTTING_DOWN),
        &|s| s.take_over(),
        &|s| s.handle_timeout(t0 + 60 * SEC),
        &|s| server_feed(s, t0, Packet::ConnAck(Box::default())),
    ];
    for end in endings {
        let mut s = connected();
        end(&mut s);
        let sent = server_tx(&mut s, t0 + 60 * SEC);
        let [Packet::Disconnect(d)] = sent.as_slice() else {
            panic!("{sent:?}")
        };
        assert_eq!(d.properties.session_expiry_interval, None, "{d:?}");
    }
}

// -------------------------------------------------------- Maximum Packet Size (5.0 §3.x.2)

// Conformance: [MQTT-5:3.2.2-19] [MQTT-5:3.2.2-20] [MQTT-5:3.4.2-2] [MQTT-5:3.4.2-3]
// Conformance: [MQTT-5:3.5.2-2] [MQTT-5:3.5.2-3] [MQTT-5:3.6.2-2] [MQTT-5:3.6.2-3]
// Conformance: [MQTT-5:3.7.2-2] [MQTT-5:3.7.2-3] [MQTT-5:3.9.2-1] [MQTT-5:3.9.2-2]
// Conformance: [MQTT-5:3.11.2-1] [MQTT-5:3.11.2-2] [MQTT-5:3.14.2-4]
#[test]
fn acknowledgements_shed_reason_strings_and_user_properties_to_fit_the_maximum() {
    const MAX: u32 = 12;
    let t0 = Instant::now();
    let fits = |packets: &[Packet]| {
        for p in packets {
            let len = p.encoded_len(V5).unwrap();
            assert!(len as u32 <= MAX, "{len} > {MAX}: {p:?}");
            let user_properties = match p {
                Packet::ConnAck(c) => c.properties.user_properties.len(),
                Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                    a.properties.user_properties.len()
                }
                Packet::SubAck(a) => a.properties.user_properties.len(),
                Packet::UnsubAck(a) => a.properties.user_properties.len(),
                Packet::Disconnect(d) => d.properties.user_properties.len(),
                _ => 0,
            };
            assert_eq!(user_properties, 0, "{p:?}");
        }
    };
    let tiny = || {
        let mut connect = connect_packet(V5, "c");
        connect.properties.maximum_packet_size = NonZeroU32::new(MAX);
        connect
    };
    // A refusing CONNACK, which would otherwise explain itself.
    let mut s = ServerConnection::new(Arc::new(ServerConfig::default()), t0);
    server_feed(&mut s, t0, Packet::Connect(Box::new(tiny())));
    let _ = server_events(&mut s);
    s.reject(ReasonCode::NOT_AUTHORIZED);
    let sent = server_tx_with_reasons(&mut s, t0);
    assert!(
        matches!(sent.as_slice(), [Packet::ConnAck(c)] if c.reason_code == ReasonCode::NOT_AUTHORIZED)
    );
    fits(&sent);
    // Failing acknowledgements of every kind.
    let (mut s, _) = accepted_server(ServerConfig::default(), tiny(), None, t0);
    server_feed(
        &mut s,
        t0,
        Packet::Publish(publish("a", QoS::AtLeastOnce, Some(1))),
    );
    server_feed(
        &mut s,
        t0,
        Packet::Publish(publish("a", QoS::ExactlyOnce, Some(2))),
    );
    server_feed(&mut s, t0, Packet::PubRel(ack(99)));
    server_feed(
        &mut s,
        t0,
        Packet::Subscribe(Subscribe {
            packet_id: pid(3),
            filters: vec![(ByteStr::from("a/#"), SubscriptionOptions::default())],
            properties: Default::default(),
        }),
    );
    for event in server_events(&mut s) {
        match event {
            ServerEvent::Publish {
                packet_id: Some(id),
                ..
            } => s.acknowledge(id, ReasonCode::NOT_AUTHORIZED),
            ServerEvent::Subscribe { packet_id, .. } => {
                s.subscribe_ack(packet_id, vec![ReasonCode::NOT_AUTHORIZED])
            }
            other => panic!("{other:?}"),
        }
    }
    server_unsubscribe(&mut s, t0, 4, &["none"]);
    s.unsubscribe_ack(pid(4));
    s.deliver(delivery(Message::new("d", &b""[..], QoS::ExactlyOnce), t0));
    let sent = server_tx_with_reasons(&mut s, t0);
    let kinds: Vec<_> = sent.iter().map(|p| p.packet_type()).collect();
    assert_eq!(kinds.len(), 6, "{sent:?}");
    fits(&sent);
    let id = publishes(&sent)[0].packet_id.unwrap();
    server_feed(&mut s, t0, Packet::PubRec(PubAck::new(id)));
    s.disconnect(ReasonCode::SERVER_SHUTTING_DOWN);
    let sent = server_tx_with_reasons(&mut s, t0);
    assert_eq!(sent.len(), 2, "{sent:?}");
    fits(&sent);
    // The client's acknowledgements carry no Reason String or User Property at all.
    let mut c = client(V5, t0);
    let id = c.publish(msg("o", QoS::ExactlyOnce)).unwrap().unwrap();
    let _ = client_tx(&mut c, t0, V5);
    for p in [
        Packet::Publish(publish("a", QoS::AtLeastOnce, Some(1))),
        Packet::Publish(publish("a", QoS::ExactlyOnce, Some(2))),
        Packet::PubRel(ack(2)),
        Packet::PubRec(PubAck::new(id)),
    ] {
        client_feed(&mut c, t0, V5, p);
    }
    c.disconnect(ReasonCode::NORMAL_DISCONNECTION);
    let sent = client_tx(&mut c, t0, V5);
    assert_eq!(sent.len(), 5, "{sent:?}");
    fits(&sent);
}

// ------------------------------------------------------------------------- CONNACK (5.0)

// Conformance: [MQTT-5:3.1.2-28]
#[test]
fn response_information_is_never_sent() {
    for request in [None, Some(false), Some(true)] {
        let t0 = Instant::now();
        let mut connect = connect_packet(V5, "c");
        connect.properties.request_response_information = request;
        let (_, connack) = accepted_server(ServerConfig::default(), connect, None, t0);
        assert_eq!(connack.properties.response_information, None);
    }
}

// Conformance: [MQTT-5:3.2.2-9] [MQTT-5:3.2.2-10]
#[test]
fn a_lower_maximum_qos_is_announced_and_every_requested_qos_accepted() {
    for maximum in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let t0 = Instant::now();
        let mut config = ServerConfig::default();
        config.maximum_qos = maximum;
        let (mut s, connack) = accepted_server(config, connect_packet(V5, "c"), None, t0);
        let announced = (maximum != QoS::ExactlyOnce).then_some(maximum);
        assert_eq!(connack.properties.maximum_qos, announced);
        server_feed(
            &mut s,
            t0,
            Packet::Subscribe(Subscribe {
                packet_id: pid(1),
                filters: [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
                    .iter()
                    .enumerate()
                    .map(|(i, q)| {
                        (
                            ByteStr::from(format!("t/{i}")),
                            SubscriptionOptions::qos(*q),
                        )
                    })
                    .collect(),
                properties: Default::default(),
            }),
        );
        let Some(ServerEvent::Subscribe { requests, .. }) = server_events(&mut s).pop() else {
            panic!()
        };
        for r in &requests {
            assert_eq!(r.verdict, Ok(()));
            assert!(r.options.qos <= maximum);
        }
        assert!(s.is_connected());
    }
}

// Conformance: [MQTT-3.1.1:3.8.3-2]
#[test]
fn wildcard_filters_are_refused_when_wildcards_are_not_supported() {
    for version in BOTH {
        let t0 = Instant::now();
        let mut config = ServerConfig::default();
        config.wildcard_subscriptions = false;
        let (mut s, _) = accepted_server(config, connect_packet(version, "c"), None, t0);
        server_feed(
            &mut s,
            t0,
            Packet::Subscribe(Subscribe {
                packet_id: pid(1),
                filters: ["a/+", "a/#", "a/b"]
                    .map(|f| (ByteStr::from(f), SubscriptionOptions::default()))
                    .to_vec(),
                properties: Default::default(),
            }),
        );
        let Some(ServerEvent::Subscribe {
            packet_id,
            requests,
            ..
        }) = server_events(&mut s).pop()
        else {
            panic!()
        };
        let codes: Vec<_> = requests
            .iter()
            .map(|r| r.verdict.err().unwrap_or(ReasonCode::GRANTED_QOS_0))
            .collect();
        s.subscribe_ack(packet_id, codes);
        let sent = server_tx(&mut s, t0);
        let [Packet::SubAck(ack)] = sent.as_slice() else {
            panic!("{sent:?}")
        };
        let refused = if version.is_v5() {
            ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED
        } else {
            ReasonCode::UNSPECIFIED_ERROR
        };
        assert_eq!(
            ack.reason_codes,
            [refused, refused, ReasonCode::GRANTED_QOS_0]
        );
    }
}

// Conformance: [MQTT-5:4.12.0-1] [MQTT-5:4.12.0-6]
#[test]
fn an_unknown_authentication_method_is_refused_and_a_client_without_one_never_gets_auth() {
    let t0 = Instant::now();
    let mut connect = connect_packet(V5, "c");
    connect.properties.authentication_method = Some(ByteStr::from("SCRAM-SHA-1"));
    // The broker refuses a method it does not know: CONNACK 0x8C, and the connection
    // closes. So does one that accepts without taking up the method.
    let refuse = |answer: &dyn Fn(&mut ServerConnection)| {
        let mut s = ServerConnection::new(Arc::new(ServerConfig::default()), t0);
        server_feed(&mut s, t0, Packet::Connect(Box::new(connect.clone())));
        assert!(matches!(
            server_events(&mut s).as_slice(),
            [ServerEvent::Connect { .. }]
        ));
        answer(&mut s);
        let sent = server_tx(&mut s, t0);
        assert!(
            matches!(sent.as_slice(), [Packet::ConnAck(c)] if c.reason_code == ReasonCode::BAD_AUTHENTICATION_METHOD),
            "{sent:?}"
        );
        assert!(s.is_closed());
    };
    refuse(&|s| s.reject(ReasonCode::BAD_AUTHENTICATION_METHOD));
    refuse(&|s| s.accept(t0, None));
    // Without a method: no method in CONNACK, and no AUTH, even when the client sends one
    // or the broker asks for one.
    let mut s = ServerConnection::new(Arc::new(ServerConfig::default()), t0);
    server_feed(
        &mut s,
        t0,
        Packet::Connect(Box::new(connect_packet(V5, "c"))),
    );
    let _ = server_events(&mut s);
    s.auth_continue(Some(bytes::Bytes::from_static(b"challenge")));
    s.set_auth_success_data(Some(bytes::Bytes::from_static(b"final")));
    assert!(server_tx(&mut s, t0).is_empty());
    s.accept(t0, None);
    let sent = server_tx(&mut s, t0);
    let [Packet::ConnAck(connack)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
    assert_eq!(connack.properties.authentication_method, None);
    assert_eq!(connack.properties.authentication_data, None);
    assert_eq!(s.auth_method(), None);
    s.reauth_success(None);
    s.auth_continue(None);
    assert!(server_tx(&mut s, t0).is_empty());
    server_feed(&mut s, t0, Packet::Auth(Box::default()));
    let sent = server_tx(&mut s, t0);
    assert!(
        !sent.iter().any(|p| matches!(p, Packet::Auth(_))),
        "{sent:?}"
    );
    assert!(s.is_closed());
}

// -------------------------------------------------------------------- client PUBLISH (5.0)

// Conformance: [MQTT-5:3.3.4-6]
#[test]
fn a_client_publish_never_carries_subscription_identifiers() {
    let t0 = Instant::now();
    let mut c = client(V5, t0);
    // A message as it arrived from the server, published on.
    let mut m = msg("fwd", QoS::AtLeastOnce);
    m.properties
        .set_subscription_identifiers(&[SubscriptionId::new(7).unwrap()]);
    c.publish(m).unwrap();
    let sent = publishes(&client_tx(&mut c, t0, V5));
    assert_eq!(sent.len(), 1);
    assert!(
        !sent[0].properties.has_subscription_identifiers(),
        "{:?}",
        sent[0]
    );
}

// Conformance: [MQTT-5:3.3.2-14]
#[test]
fn a_response_topic_has_no_wildcards() {
    let t0 = Instant::now();
    for topic in ["re/+", "re/#"] {
        let mut m = msg("q", QoS::AtMostOnce);
        m.properties
            .set_response_topic(Some(ByteStr::from(topic)))
            .unwrap();
        // The client refuses to send one...
        let mut c = client(V5, t0);
        assert_eq!(c.publish(m.clone()), Err(PublishError::InvalidTopic));
        assert!(client_tx(&mut c, t0, V5).is_empty());
        // ...and the server refuses to take one.
        let mut s = server(V5, t0);
        let mut p = publish("q", QoS::AtMostOnce, None);
        p.properties = m.properties.clone();
        server_feed(&mut s, t0, Packet::Publish(p));
        let sent = server_tx(&mut s, t0);
        assert!(
            matches!(sent.as_slice(), [Packet::Disconnect(d)] if d.reason_code == ReasonCode::PROTOCOL_ERROR),
            "{sent:?}"
        );
        assert_eq!(server_publish_events(&mut s), 0);
    }
}

// Conformance: [MQTT-3.1.1:3.1.3-7]
#[test]
fn a_3_1_1_client_with_an_empty_identifier_asks_for_a_clean_session() {
    let t0 = Instant::now();
    let mut config = client_config(V3_1_1);
    config.client_id = ByteStr::new();
    config.clean_start = false;
    let mut c = Client::new(Arc::new(config), t0).unwrap();
    c.connect(t0);
    let sent = client_tx(&mut c, t0, V3_1_1);
    let [Packet::Connect(connect)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert!(connect.client_id.is_empty());
    assert!(
        connect.clean_start,
        "an empty ClientId requires Clean Session 1"
    );
}

// Conformance: [MQTT-5:3.2.2-8] [MQTT-5:3.2.2-6] [MQTT-5:4.13.2-1]
#[test]
fn a_refusal_is_sent_with_a_connack_reason_code() {
    for (asked, sent) in [
        (ReasonCode::BANNED, ReasonCode::BANNED),
        (ReasonCode::SERVER_BUSY, ReasonCode::SERVER_BUSY),
        // DISCONNECT-only codes, as a hook might return them.
        (
            ReasonCode::SERVER_SHUTTING_DOWN,
            ReasonCode::UNSPECIFIED_ERROR,
        ),
        (
            ReasonCode::SESSION_TAKEN_OVER,
            ReasonCode::UNSPECIFIED_ERROR,
        ),
    ] {
        let t0 = Instant::now();
        let mut s = ServerConnection::new(Arc::new(ServerConfig::default()), t0);
        server_feed(
            &mut s,
            t0,
            Packet::Connect(Box::new(connect_packet(V5, "c"))),
        );
        let _ = server_events(&mut s);
        s.reject(asked);
        let packets = server_tx(&mut s, t0);
        assert!(
            matches!(packets.as_slice(), [Packet::ConnAck(c)] if c.reason_code == sent && !c.session_present),
            "{asked:?}: {packets:?}"
        );
        assert!(s.is_closed());
    }
}

// Conformance: [MQTT-3.1.1:4.8.0-2]
#[test]
fn a_full_buffer_while_connecting_closes_the_connection() {
    // Packets handed over before the broker has accepted the CONNECT wait in a bounded buffer;
    // when it is full the server cannot process the next one and closes the connection.
    // (`handle_bytes` leaves such bytes in the caller's buffer instead, so the transport's
    // read limit bounds them.)
    for version in BOTH {
        let t0 = Instant::now();
        let mut s = ServerConnection::new(Arc::new(ServerConfig::default()), t0);
        server_feed(
            &mut s,
            t0,
            Packet::Connect(Box::new(connect_packet(version, "c"))),
        );
        assert!(!s.is_closed());
        for _ in 0..1000 {
            s.handle_packet(t0, Packet::PingReq);
            if s.is_closed() {
                break;
            }
        }
        assert!(s.is_closed(), "{version:?}");
        assert!(server_tx(&mut s, t0)
            .iter()
            .all(|p| !matches!(p, Packet::PingResp | Packet::ConnAck(_))));
    }
}
