//! The client state machine, one flow per test, driven packet by packet. Every byte the client
//! transmits is decoded back with the codec under the connection's version. Normative
//! statements are MQTT 5.0 unless marked 3.1.1.

mod common;

use std::num::{NonZeroU16, NonZeroU32};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use midge_codec::{
    ByteStr, ConnAck, Connect, Disconnect, Packet, PacketId, ProtocolVersion, Publish, QoS,
    ReasonCode, SubAck, Subscribe, SubscribeProperties, SubscriptionId, SubscriptionOptions,
    UnsubscribeProperties, Will,
};
use midge_proto::client::{Client, ClientConfig, CloseReason, Event, PublishError, RequestError};
use midge_proto::Message;

fn msg(topic: &str, qos: QoS) -> Message {
    Message::new(topic.to_owned(), &b"payload"[..], qos)
}

fn connack_with(f: impl FnOnce(&mut ConnAck)) -> ConnAck {
    let mut connack = ConnAck::default();
    f(&mut connack);
    connack
}

fn v5_client(connack: ConnAck, now: Instant) -> Client {
    connected_client(client_config(V5), connack, now)
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

fn persistent(version: ProtocolVersion) -> ClientConfig {
    let mut config = client_config(version);
    config.clean_start = false;
    if version.is_v5() {
        config.properties.session_expiry_interval = Some(600);
    }
    config
}

/// Subscribes to `filter` and feeds the SUBACK granting it.
fn subscribe_ok(client: &mut Client, now: Instant, version: ProtocolVersion, filter: &str) {
    let id = client
        .subscribe(
            vec![(
                ByteStr::from(filter.to_owned()),
                SubscriptionOptions::qos(QoS::AtLeastOnce),
            )],
            SubscribeProperties::default(),
        )
        .unwrap();
    let sent = client_tx(client, now, version);
    assert!(matches!(sent.as_slice(), [Packet::Subscribe(s)] if s.packet_id == id));
    let suback = SubAck {
        packet_id: id,
        reason_codes: vec![ReasonCode::GRANTED_QOS_1],
        properties: Default::default(),
    };
    client_feed(client, now, version, Packet::SubAck(suback));
    assert!(matches!(
        client_events(client).as_slice(),
        [Event::Subscribed { .. }]
    ));
}

// ------------------------------------------------------------------------------ CONNECT

// Conformance: [MQTT-5:3.1.0-1] [MQTT-3.1.1:3.1.0-1] [MQTT-5:3.1.2-9] [MQTT-3.1.1:3.1.2-9] [MQTT-5:3.1.2-17] [MQTT-3.1.1:3.1.2-19] [MQTT-5:3.1.2-19] [MQTT-3.1.1:3.1.2-21] [MQTT-5:3.1.3-1] [MQTT-3.1.1:3.1.3-1] [MQTT-5:3.1.3-3] [MQTT-3.1.1:3.1.3-3]
#[test]
fn connect_carries_the_configuration_in_every_version() {
    // §3.1.2 (3.1.1 and 5.0); 3.1 uses protocol name MQIsdp, level 3.
    for version in ALL {
        let t0 = Instant::now();
        let mut config = ClientConfig::new(version, "client-7");
        config.keep_alive = 42;
        config.clean_start = false;
        config.username = Some(ByteStr::from("user"));
        config.password = Some(Bytes::from_static(b"secret"));
        config.will = Some(Will {
            topic: ByteStr::from("will/topic"),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Default::default(),
        });
        if version.is_v5() {
            config.properties.session_expiry_interval = Some(3600);
            config.properties.receive_maximum = NonZeroU16::new(7);
            config.properties.topic_alias_maximum = Some(3);
        }
        let mut client = Client::new(Arc::new(config.clone()), t0).unwrap();
        client.connect(t0);
        let sent = client_tx(&mut client, t0, version);
        let [Packet::Connect(connect)] = sent.as_slice() else {
            panic!("{version:?}: {sent:?}");
        };
        assert_eq!(connect.protocol, version);
        assert_eq!(connect.client_id.as_str(), "client-7");
        assert_eq!(connect.keep_alive, 42);
        assert!(!connect.clean_start);
        assert_eq!(connect.username, config.username);
        assert_eq!(connect.password, config.password);
        assert_eq!(connect.will, config.will);
        assert_eq!(connect.properties, config.properties);
        // Nothing else goes out before CONNACK.
        assert!(client
            .publish(msg("a", QoS::AtLeastOnce))
            .unwrap()
            .is_some());
        assert!(client_tx(&mut client, t0, version).is_empty());
    }
}

#[test]
fn a_config_that_cannot_be_encoded_is_refused_up_front() {
    let mut config = client_config(V3_1_1);
    config.properties.session_expiry_interval = Some(1);
    assert!(Client::new(Arc::new(config), Instant::now()).is_err());
}

// ------------------------------------------------------------------------------ CONNACK

// Conformance: [MQTT-5:3.2.2-21] [MQTT-5:3.1.2-21]
#[test]
fn server_keep_alive_overrides_ours() {
    // [MQTT-3.2.2-21]
    let t0 = Instant::now();
    let mut config = client_config(V5);
    config.keep_alive = 60;
    let connack = connack_with(|c| c.properties.server_keep_alive = Some(5));
    let mut client = connected_client(config, connack, t0);
    assert_eq!(client.poll_timeout(), Some(t0 + 5 * SEC));
    client.handle_timeout(t0 + 5 * SEC);
    assert_eq!(client_tx(&mut client, t0 + 5 * SEC, V5), [Packet::PingReq]);
}

#[test]
fn assigned_client_identifier_is_used_on_reconnect() {
    // [MQTT-3.2.2-16]: the server assigns an identifier for an empty one; the client reuses it
    // so that the session can resume.
    let t0 = Instant::now();
    let mut config = ClientConfig::new(V5, "");
    config.clean_start = false;
    let connack = connack_with(|c| c.properties.assigned_client_identifier = Some("srv-42".into()));
    let mut client = connected_client(config, connack, t0);
    client.connection_lost();
    client.connect(t0);
    let sent = client_tx(&mut client, t0, V5);
    let [Packet::Connect(connect)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert_eq!(connect.client_id.as_str(), "srv-42");
}

// Conformance: [MQTT-5:3.3.4-7] [MQTT-5:4.9.0-2]
#[test]
fn server_receive_maximum_limits_publishes_in_flight() {
    // [MQTT-3.3.4-7], [MQTT-4.9.0-2]: with Receive Maximum 2 the third QoS>0 PUBLISH waits
    // until an acknowledgement frees the quota, keeping order.
    let t0 = Instant::now();
    let mut client = v5_client(
        connack_with(|c| c.properties.receive_maximum = NonZeroU16::new(2)),
        t0,
    );
    let ids: Vec<_> = (0..4)
        .map(|i| {
            let qos = if i % 2 == 0 {
                QoS::AtLeastOnce
            } else {
                QoS::ExactlyOnce
            };
            client
                .publish(msg(&format!("t/{i}"), qos))
                .unwrap()
                .unwrap()
        })
        .collect();
    let sent = client_tx(&mut client, t0, V5);
    let sent_ids: Vec<_> = publishes(&sent).iter().map(|p| p.packet_id).collect();
    assert_eq!(sent_ids, [Some(ids[0]), Some(ids[1])]);
    assert_eq!(client.queued_messages(), 2);
    // PUBREC does not free the quota: only PUBCOMP does for QoS 2.
    client_feed(&mut client, t0, V5, Packet::PubRec(ack(ids[1].get())));
    assert_eq!(
        client_tx(&mut client, t0, V5),
        [Packet::PubRel(ack(ids[1].get()))]
    );
    client_feed(&mut client, t0, V5, Packet::PubAck(ack(ids[0].get())));
    let sent = client_tx(&mut client, t0, V5);
    assert_eq!(publishes(&sent).len(), 1);
    assert_eq!(publishes(&sent)[0].packet_id, Some(ids[2]));
    client_feed(&mut client, t0, V5, Packet::PubComp(ack(ids[1].get())));
    let sent = client_tx(&mut client, t0, V5);
    assert_eq!(publishes(&sent)[0].packet_id, Some(ids[3]));
}

// Conformance: [MQTT-5:3.2.2-15]
#[test]
fn server_maximum_packet_size_refuses_or_drops_publishes() {
    // [MQTT-3.2.2-15]: never send a packet larger than the server's Maximum Packet Size.
    let t0 = Instant::now();
    let connack = connack_with(|c| c.properties.maximum_packet_size = NonZeroU32::new(64));
    let config = client_config(V5);
    let mut client = Client::new(Arc::new(config), t0).unwrap();
    client.connect(t0);
    let _ = client_tx(&mut client, t0, V5);
    // Queued before the limit is known: completed with 0x95 (QoS 1) or dropped (QoS 0).
    let big = Message::new("big", vec![0u8; 100], QoS::AtLeastOnce);
    let id = client.publish(big.clone()).unwrap().unwrap();
    client
        .publish(Message::new("big", vec![0u8; 100], QoS::AtMostOnce))
        .unwrap();
    client
        .publish(Message::new("small", &b"x"[..], QoS::AtMostOnce))
        .unwrap();
    client_feed(&mut client, t0, V5, Packet::ConnAck(Box::new(connack)));
    let sent = client_tx(&mut client, t0, V5);
    let sent = publishes(&sent);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].topic.as_str(), "small");
    let events = client_events(&mut client);
    assert!(events.contains(&Event::Published {
        packet_id: id,
        reason_code: ReasonCode::PACKET_TOO_LARGE
    }));
    // Once connected, publish() refuses it directly.
    assert_eq!(client.publish(big), Err(PublishError::PacketTooLarge));
}

// Conformance: [MQTT-5:3.2.2-17] [MQTT-5:3.3.2-9]
#[test]
fn outbound_topic_aliases_are_set_then_used() {
    // [MQTT-3.2.2-17]/[MQTT-3.3.2-9]: aliases 1..=Topic Alias Maximum; the first PUBLISH on a
    // topic sets the alias, later ones send an empty topic with it (§3.3.2.3.4).
    let t0 = Instant::now();
    let mut client = v5_client(
        connack_with(|c| c.properties.topic_alias_maximum = Some(1)),
        t0,
    );
    for topic in ["a/b", "a/b", "c", "a/b"] {
        client.publish(msg(topic, QoS::AtMostOnce)).unwrap();
    }
    let sent = client_tx(&mut client, t0, V5);
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
            ("a/b".to_owned(), Some(1)),
            (String::new(), Some(1)),
            ("c".to_owned(), None),
            (String::new(), Some(1)),
        ]
    );
}

// Conformance: [MQTT-5:3.2.2-18]
#[test]
fn no_aliases_without_a_topic_alias_maximum() {
    // [MQTT-3.2.2-18]: absent or 0 means no Topic Alias may be sent. An alias the
    // application put in the message's properties is not passed through either.
    let t0 = Instant::now();
    let mut client = v5_client(ConnAck::default(), t0);
    let mut m = msg("a", QoS::AtMostOnce);
    m.properties.topic_alias = NonZeroU16::new(9);
    client.publish(m.clone()).unwrap();
    client.publish(m).unwrap();
    let sent = client_tx(&mut client, t0, V5);
    for p in publishes(&sent) {
        assert_eq!(p.topic.as_str(), "a");
        assert_eq!(p.properties.topic_alias, None);
    }
}

#[test]
fn a_dropped_publish_does_not_leave_an_alias_the_server_never_learnt() {
    // A message too large for the server is never sent, so its topic must not get an alias
    // that later messages would then use without the server knowing it (§3.3.2.3.4).
    let t0 = Instant::now();
    let mut client = Client::new(Arc::new(client_config(V5)), t0).unwrap();
    client.connect(t0);
    let _ = client_tx(&mut client, t0, V5);
    client
        .publish(Message::new("t", vec![0u8; 200], QoS::AtMostOnce))
        .unwrap();
    client.publish(msg("t", QoS::AtMostOnce)).unwrap();
    let connack = connack_with(|c| {
        c.properties.maximum_packet_size = NonZeroU32::new(100);
        c.properties.topic_alias_maximum = Some(4);
    });
    client_feed(&mut client, t0, V5, Packet::ConnAck(Box::new(connack)));
    let sent = client_tx(&mut client, t0, V5);
    let sent = publishes(&sent);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].topic.as_str(), "t", "alias used before it was set");
}

// Conformance: [MQTT-5:3.2.2-15]
#[test]
fn a_publish_that_fits_only_without_an_alias_is_sent_without_one() {
    // Setting an alias adds three bytes; a message that fits without them must still go out
    // [MQTT-3.2.2-15].
    let t0 = Instant::now();
    let mut plain =
        Packet::Publish(Message::new("t", vec![0u8; 20], QoS::AtMostOnce).into_publish_for_test());
    let size = plain_len(&mut plain);
    let mut client = v5_client(
        connack_with(|c| {
            c.properties.maximum_packet_size = NonZeroU32::new(size as u32);
            c.properties.topic_alias_maximum = Some(4);
        }),
        t0,
    );
    client
        .publish(Message::new("t", vec![0u8; 20], QoS::AtMostOnce))
        .unwrap();
    let sent = client_tx(&mut client, t0, V5);
    assert_eq!(
        publishes(&sent).len(),
        1,
        "{:?}",
        client_events(&mut client)
    );
}

trait IntoPublish {
    fn into_publish_for_test(self) -> Publish;
}

impl IntoPublish for Message {
    fn into_publish_for_test(self) -> Publish {
        Publish {
            qos: self.qos,
            retain: self.retain,
            topic: self.topic,
            payload: self.payload,
            properties: self.properties,
            ..Publish::default()
        }
    }
}

fn plain_len(packet: &mut Packet) -> usize {
    packet.encoded_len(V5).unwrap()
}

// Conformance: [MQTT-5:3.2.2-11]
#[test]
fn server_maximum_qos_refuses_higher_qos() {
    // [MQTT-3.2.2-11]
    let t0 = Instant::now();
    let mut client = Client::new(Arc::new(client_config(V5)), t0).unwrap();
    client.connect(t0);
    let _ = client_tx(&mut client, t0, V5);
    let queued = client.publish(msg("q", QoS::ExactlyOnce)).unwrap().unwrap();
    let connack = connack_with(|c| c.properties.maximum_qos = Some(QoS::AtLeastOnce));
    client_feed(&mut client, t0, V5, Packet::ConnAck(Box::new(connack)));
    assert!(publishes(&client_tx(&mut client, t0, V5)).is_empty());
    assert!(client_events(&mut client).contains(&Event::Published {
        packet_id: queued,
        reason_code: ReasonCode::QOS_NOT_SUPPORTED
    }));
    assert_eq!(
        client.publish(msg("q", QoS::ExactlyOnce)),
        Err(PublishError::QoSNotSupported)
    );
    assert!(client.publish(msg("q", QoS::AtLeastOnce)).is_ok());
}

// Conformance: [MQTT-5:3.2.2-14]
#[test]
fn retain_unavailable_refuses_retained_publishes() {
    // [MQTT-3.2.2-14]
    let t0 = Instant::now();
    let mut client = v5_client(
        connack_with(|c| c.properties.retain_available = Some(false)),
        t0,
    );
    let mut m = msg("r", QoS::AtMostOnce);
    m.retain = true;
    assert_eq!(client.publish(m), Err(PublishError::RetainNotSupported));
    assert!(client_tx(&mut client, t0, V5).is_empty());
}

#[test]
fn unavailable_subscription_features_refuse_subscribe() {
    // §3.2.2.3.11-13: Wildcard, Subscription Identifier and Shared Subscription Available.
    let t0 = Instant::now();
    let mut client = v5_client(
        connack_with(|c| {
            c.properties.wildcard_subscription_available = Some(false);
            c.properties.subscription_identifiers_available = Some(false);
            c.properties.shared_subscription_available = Some(false);
        }),
        t0,
    );
    let opts = SubscriptionOptions::qos(QoS::AtMostOnce);
    let sub = |f: &str| vec![(ByteStr::from(f.to_owned()), opts)];
    assert_eq!(
        client.subscribe(sub("a/+"), SubscribeProperties::default()),
        Err(RequestError::WildcardsNotSupported)
    );
    assert_eq!(
        client.subscribe(sub("$share/g/a"), SubscribeProperties::default()),
        Err(RequestError::SharedNotSupported)
    );
    let mut props = SubscribeProperties::default();
    props.subscription_identifier = SubscriptionId::new(3);
    assert_eq!(
        client.subscribe(sub("a"), props),
        Err(RequestError::SubscriptionIdsNotSupported)
    );
    assert_eq!(
        client.subscribe(vec![], SubscribeProperties::default()),
        Err(RequestError::NoFilters)
    );
    assert!(client_tx(&mut client, t0, V5).is_empty());
    assert!(client
        .subscribe(sub("a/b"), SubscribeProperties::default())
        .is_ok());
}

// Conformance: [MQTT-5:4.4.0-1] [MQTT-3.1.1:4.4.0-1] [MQTT-5:3.3.1-1] [MQTT-3.1.1:3.3.1-1] [MQTT-5:4.6.0-1] [MQTT-3.1.1:4.6.0-1] [MQTT-5:4.3.3-6] [MQTT-3.1.1:2.3.1-3]
// Conformance: [MQTT-5:3.1.2-23] [MQTT-3.1.1:3.1.2-4]
#[test]
fn resumed_session_resends_in_flight_in_order_with_dup() {
    // [MQTT-4.4.0-1]: unacknowledged PUBLISH and PUBREL again, original identifiers and
    // order; PUBLISH with DUP 1 [MQTT-3.3.1-1]. 3.1.1: [MQTT-4.4.0-1] too.
    for version in [V3_1_1, V5] {
        let t0 = Instant::now();
        let mut client = connected_client(persistent(version), ConnAck::default(), t0);
        let a = client.publish(msg("a", QoS::AtLeastOnce)).unwrap().unwrap();
        let b = client.publish(msg("b", QoS::ExactlyOnce)).unwrap().unwrap();
        let c = client.publish(msg("c", QoS::ExactlyOnce)).unwrap().unwrap();
        assert_eq!(publishes(&client_tx(&mut client, t0, version)).len(), 3);
        client_feed(&mut client, t0, version, Packet::PubRec(ack(b.get())));
        assert_eq!(
            client_tx(&mut client, t0, version),
            [Packet::PubRel(ack(b.get()))]
        );
        client.connection_lost();
        assert_eq!(
            client_events(&mut client),
            [Event::Closed(CloseReason::ConnectionLost)]
        );
        client.connect(t0);
        let _ = client_tx(&mut client, t0, version);
        let connack = connack_with(|c| c.session_present = true);
        client_feed(&mut client, t0, version, Packet::ConnAck(Box::new(connack)));
        let sent = client_tx(&mut client, t0, version);
        let summary: Vec<_> = sent
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
                ("PUBLISH", a, true),
                ("PUBREL", b, false),
                ("PUBLISH", c, true)
            ],
            "{version:?}"
        );
        // The flows then complete normally.
        client_feed(&mut client, t0, version, Packet::PubComp(ack(b.get())));
        client_feed(&mut client, t0, version, Packet::PubAck(ack(a.get())));
        let events = client_events(&mut client);
        assert!(events.contains(&Event::Published {
            packet_id: b,
            reason_code: ReasonCode::SUCCESS
        }));
        assert_eq!(client.in_flight(), 1);
    }
}

/// Drops the connection of `client` (5.0), connects again, discards the CONNECT and feeds
/// `connack`.
fn reconnect(client: &mut Client, now: Instant, connack: ConnAck) {
    client.connection_lost();
    client.connect(now);
    let _ = client_tx(client, now, V5);
    client_feed(client, now, V5, Packet::ConnAck(Box::new(connack)));
}

/// [`reconnect`] with Session Present and `f` applied to the CONNACK; the events are dropped.
fn resume(client: &mut Client, now: Instant, f: impl FnOnce(&mut ConnAck)) {
    let connack = connack_with(|c| {
        c.session_present = true;
        f(c);
    });
    reconnect(client, now, connack);
    let _ = client_events(client);
}

/// (kind, packet identifier, DUP) of each PUBLISH and PUBREL in `sent`.
fn flow_summary(sent: &[Packet]) -> Vec<(&'static str, PacketId, bool)> {
    sent.iter()
        .map(|p| match p {
            Packet::Publish(p) => ("PUBLISH", p.packet_id.unwrap(), p.dup),
            Packet::PubRel(r) => ("PUBREL", r.packet_id, false),
            other => panic!("{other:?}"),
        })
        .collect()
}

// Conformance: [MQTT-5:3.3.4-7] [MQTT-5:4.9.0-2]
#[test]
fn resent_publishes_respect_the_new_receive_maximum() {
    // [MQTT-3.3.4-7], [MQTT-4.9.0-2]: the send quota starts afresh with each connection
    // (§4.9), so the PUBLISHes resent on a resumed session [MQTT-4.4.0-1] count against the
    // new connection's Receive Maximum, as do QoS 2 flows awaiting PUBCOMP. The rest wait, in
    // order and ahead of new messages, and keep DUP 1 [MQTT-3.3.1-1].
    let t0 = Instant::now();
    let mut client = connected_client(persistent(V5), ConnAck::default(), t0);
    let a = client.publish(msg("a", QoS::ExactlyOnce)).unwrap().unwrap();
    let ids: Vec<_> = ["b", "c", "d"]
        .iter()
        .map(|t| client.publish(msg(t, QoS::AtLeastOnce)).unwrap().unwrap())
        .collect();
    assert_eq!(publishes(&client_tx(&mut client, t0, V5)).len(), 4);
    client_feed(&mut client, t0, V5, Packet::PubRec(ack(a.get())));
    assert_eq!(
        client_tx(&mut client, t0, V5),
        [Packet::PubRel(ack(a.get()))]
    );
    resume(&mut client, t0, |c| {
        c.properties.receive_maximum = NonZeroU16::new(2)
    });
    let e = client.publish(msg("e", QoS::AtLeastOnce)).unwrap().unwrap();
    assert_eq!(
        flow_summary(&client_tx(&mut client, t0, V5)),
        [("PUBREL", a, false), ("PUBLISH", ids[0], true)]
    );
    client_feed(&mut client, t0, V5, Packet::PubAck(ack(ids[0].get())));
    assert_eq!(
        flow_summary(&client_tx(&mut client, t0, V5)),
        [("PUBLISH", ids[1], true)]
    );
    client_feed(&mut client, t0, V5, Packet::PubComp(ack(a.get())));
    client_feed(&mut client, t0, V5, Packet::PubAck(ack(ids[1].get())));
    assert_eq!(
        flow_summary(&client_tx(&mut client, t0, V5)),
        [("PUBLISH", ids[2], true), ("PUBLISH", e, false)]
    );
}

#[test]
fn a_message_still_waiting_to_be_resent_is_new_to_a_server_that_lost_the_session() {
    // Deferred by the Receive Maximum of a resumed session, then the session is lost: to the
    // new server it is a new message, DUP 0, sent in its original order.
    let t0 = Instant::now();
    let mut client = connected_client(persistent(V5), ConnAck::default(), t0);
    let a = client.publish(msg("a", QoS::AtLeastOnce)).unwrap().unwrap();
    let b = client.publish(msg("b", QoS::AtLeastOnce)).unwrap().unwrap();
    assert_eq!(publishes(&client_tx(&mut client, t0, V5)).len(), 2);
    resume(&mut client, t0, |c| {
        c.properties.receive_maximum = NonZeroU16::new(1)
    });
    assert_eq!(
        flow_summary(&client_tx(&mut client, t0, V5)),
        [("PUBLISH", a, true)]
    );
    reconnect(&mut client, t0, ConnAck::default());
    assert_eq!(
        flow_summary(&client_tx(&mut client, t0, V5)),
        [("PUBLISH", a, false), ("PUBLISH", b, false)]
    );
}

// Conformance: [MQTT-5:3.2.2-15]
#[test]
fn a_resent_publish_larger_than_the_new_maximum_packet_size_completes_unsent() {
    // [MQTT-3.2.2-15]: the Maximum Packet Size of the resuming connection holds for resent
    // PUBLISHes too; one that no longer fits completes with 0x95 and is not sent, and the
    // ones after it are still resent in order.
    let t0 = Instant::now();
    let mut client = connected_client(persistent(V5), ConnAck::default(), t0);
    let big = client
        .publish(Message::new("big", vec![0u8; 100], QoS::AtLeastOnce))
        .unwrap()
        .unwrap();
    let small = client.publish(msg("s", QoS::AtLeastOnce)).unwrap().unwrap();
    assert_eq!(publishes(&client_tx(&mut client, t0, V5)).len(), 2);
    let connack = connack_with(|c| {
        c.session_present = true;
        c.properties.maximum_packet_size = NonZeroU32::new(64);
    });
    reconnect(&mut client, t0, connack);
    let mut buf = BytesMut::new();
    while client.poll_transmit(t0, &mut buf) {}
    let sent = decode_all(&mut buf.clone(), V5);
    assert!(buf.len() <= 64, "{sent:?}");
    assert_eq!(flow_summary(&sent), [("PUBLISH", small, true)]);
    assert!(client_events(&mut client).contains(&Event::Published {
        packet_id: big,
        reason_code: ReasonCode::PACKET_TOO_LARGE
    }));
}

// Conformance: [MQTT-5:3.2.2-5]
#[test]
fn lost_session_resubscribes_and_requeues_sent_publishes() {
    // [MQTT-3.2.2-5] (Session Present 0): the server has no state for us; publishes it
    // never acknowledged are sent again as new messages (DUP 0), subscriptions are remade.
    for version in [V3_1_1, V5] {
        let t0 = Instant::now();
        let mut client = connected_client(persistent(version), ConnAck::default(), t0);
        subscribe_ok(&mut client, t0, version, "s/#");
        let a = client.publish(msg("a", QoS::AtLeastOnce)).unwrap().unwrap();
        let b = client.publish(msg("b", QoS::ExactlyOnce)).unwrap().unwrap();
        assert_eq!(publishes(&client_tx(&mut client, t0, version)).len(), 2);
        client.connection_lost();
        client.connect(t0);
        let _ = client_tx(&mut client, t0, version);
        client_feed(&mut client, t0, version, Packet::ConnAck(Box::default()));
        let sent = client_tx(&mut client, t0, version);
        let Packet::Subscribe(sub) = &sent[0] else {
            panic!("{sent:?}")
        };
        assert_eq!(sub.filters[0].0.as_str(), "s/#");
        let subscribes = sent
            .iter()
            .filter(|p| matches!(p, Packet::Subscribe(_)))
            .count();
        assert_eq!(subscribes, 1, "one resubscription: {sent:?}");
        let pubs = publishes(&sent[1..]);
        assert_eq!(pubs.len(), 2, "{sent:?}");
        assert_eq!((pubs[0].topic.as_str(), pubs[0].dup), ("a", false));
        assert_eq!((pubs[1].topic.as_str(), pubs[1].dup), ("b", false));
        assert_eq!(pubs[0].packet_id, Some(a));
        assert_eq!(pubs[1].packet_id, Some(b));
    }
}

// Conformance: [MQTT-5:3.2.2-15]
#[test]
fn requests_larger_than_the_server_maximum_packet_size_are_refused() {
    // [MQTT-3.2.2-15]: a SUBSCRIBE or UNSUBSCRIBE the server would not accept is an error to
    // the caller, not sent.
    let t0 = Instant::now();
    let mut client = v5_client(
        connack_with(|c| c.properties.maximum_packet_size = NonZeroU32::new(64)),
        t0,
    );
    subscribe_ok(&mut client, t0, V5, "small");
    let long = ByteStr::from("f/".repeat(40));
    let options = SubscriptionOptions::qos(QoS::AtMostOnce);
    assert_eq!(
        client.subscribe(
            vec![(long.clone(), options)],
            SubscribeProperties::default()
        ),
        Err(RequestError::PacketTooLarge)
    );
    assert_eq!(
        client.unsubscribe(
            vec![ByteStr::from("small"), long],
            UnsubscribeProperties::default()
        ),
        Err(RequestError::PacketTooLarge)
    );
    assert!(client_tx(&mut client, t0, V5).is_empty());
    assert_eq!(client.in_flight(), 0);
    // The refused UNSUBSCRIBE left the subscription in place: it is made again on a lost
    // session.
    reconnect(&mut client, t0, ConnAck::default());
    let sent = client_tx(&mut client, t0, V5);
    assert!(
        matches!(sent.as_slice(), [Packet::Subscribe(s)] if s.filters[0].0.as_str() == "small"),
        "{sent:?}"
    );
}

// Conformance: [MQTT-5:3.2.2-15]
#[test]
fn the_resubscription_is_split_to_fit_the_server_maximum_packet_size() {
    // [MQTT-3.2.2-15]: the resubscription after a lost session puts every subscription in
    // one SUBSCRIBE per Subscription Identifier; a client holding many would be disconnected
    // (0x95) by a server with a small Maximum Packet Size on every reconnect. Each SUBSCRIBE
    // must fit; a filter that alone no longer fits is reported lost.
    let t0 = Instant::now();
    let mut client = connected_client(persistent(V5), ConnAck::default(), t0);
    let filters: Vec<String> = (0..40)
        .map(|i| format!("sensors/room-{i:02}/temperature"))
        .collect();
    for filter in &filters {
        subscribe_ok(&mut client, t0, V5, filter);
    }
    let huge = format!("h/{}", "x".repeat(300));
    subscribe_ok(&mut client, t0, V5, &huge);
    let connack = connack_with(|c| c.properties.maximum_packet_size = NonZeroU32::new(256));
    reconnect(&mut client, t0, connack);
    let sent = client_tx(&mut client, t0, V5);
    let mut resubscribed = Vec::new();
    for packet in &sent {
        let Packet::Subscribe(subscribe) = packet else {
            panic!("{packet:?}")
        };
        assert!(packet.encoded_len(V5).unwrap() <= 256, "{packet:?}");
        resubscribed.extend(subscribe.filters.iter().map(|(f, _)| f.as_str().to_owned()));
    }
    assert!(sent.len() > 1);
    resubscribed.sort();
    assert_eq!(resubscribed, filters);
    let events = client_events(&mut client);
    assert!(
        events.contains(&Event::SubscriptionLost {
            filter: ByteStr::from(huge),
            reason_code: ReasonCode::PACKET_TOO_LARGE
        }),
        "{events:?}"
    );
}

/// A SUBSCRIBE carries one Subscription Identifier for all its filters, so the resubscription
/// after a lost session sends one SUBSCRIBE per identifier, and each subscription keeps its
/// own (§3.8.2.1.2).
#[test]
fn the_resubscription_keeps_each_subscription_identifier() {
    let t0 = Instant::now();
    let mut client = connected_client(persistent(V5), ConnAck::default(), t0);
    let made = [
        ("a/#", Some(7)),
        ("b/#", Some(9)),
        ("c/#", Some(7)),
        ("d/#", None),
    ];
    for (filter, id) in made {
        let mut properties = SubscribeProperties::default();
        properties.subscription_identifier = id.and_then(SubscriptionId::new);
        let packet_id = client
            .subscribe(
                vec![(
                    ByteStr::from(filter.to_owned()),
                    SubscriptionOptions::qos(QoS::AtLeastOnce),
                )],
                properties,
            )
            .unwrap();
        let _ = client_tx(&mut client, t0, V5);
        let suback = SubAck {
            packet_id,
            reason_codes: vec![ReasonCode::GRANTED_QOS_1],
            properties: Default::default(),
        };
        client_feed(&mut client, t0, V5, Packet::SubAck(suback));
    }
    let _ = client_events(&mut client);
    client.connection_lost();
    client.connect(t0);
    let _ = client_tx(&mut client, t0, V5);
    client_feed(&mut client, t0, V5, Packet::ConnAck(Box::default()));
    let mut resubscribed: Vec<(Option<u32>, Vec<String>)> = client_tx(&mut client, t0, V5)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Subscribe(s) => Some((
                s.properties
                    .subscription_identifier
                    .map(SubscriptionId::get),
                s.filters
                    .iter()
                    .map(|(f, _)| f.as_str().to_owned())
                    .collect(),
            )),
            _ => None,
        })
        .collect();
    resubscribed.sort();
    assert_eq!(
        resubscribed,
        [
            (None, vec!["d/#".to_owned()]),
            (Some(7), vec!["a/#".to_owned(), "c/#".to_owned()]),
            (Some(9), vec!["b/#".to_owned()]),
        ]
    );
}

#[test]
fn an_unsubscribe_in_flight_is_not_undone_by_the_resubscription() {
    for version in [V3_1_1, V5] {
        let t0 = Instant::now();
        let mut client = connected_client(persistent(version), ConnAck::default(), t0);
        subscribe_ok(&mut client, t0, version, "keep/#");
        subscribe_ok(&mut client, t0, version, "drop/#");
        client
            .unsubscribe(vec!["drop/#".into()], UnsubscribeProperties::default())
            .unwrap();
        let _ = client_tx(&mut client, t0, version);
        // Lost before UNSUBACK; the server has no session when we come back.
        client.connection_lost();
        client.connect(t0);
        let _ = client_tx(&mut client, t0, version);
        client_feed(&mut client, t0, version, Packet::ConnAck(Box::default()));
        let sent = client_tx(&mut client, t0, version);
        let resubscribed: Vec<&str> = sent
            .iter()
            .filter_map(|p| match p {
                Packet::Subscribe(s) => Some(s.filters.iter().map(|(f, _)| f.as_str())),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(resubscribed, ["keep/#"], "{sent:?}");
        assert!(
            sent.iter().any(|p| matches!(p, Packet::Unsubscribe(_))),
            "the UNSUBSCRIBE is sent again: {sent:?}"
        );
    }
}

#[test]
fn a_refused_resubscription_is_reported_and_not_retried() {
    for version in [V3_1_1, V5] {
        let t0 = Instant::now();
        let mut client = connected_client(persistent(version), ConnAck::default(), t0);
        subscribe_ok(&mut client, t0, version, "keep/#");
        subscribe_ok(&mut client, t0, version, "lose/#");
        // Two lost sessions in a row.
        for round in 0..2 {
            client.connection_lost();
            let _ = client_events(&mut client);
            client.connect(t0);
            let _ = client_tx(&mut client, t0, version);
            client_feed(&mut client, t0, version, Packet::ConnAck(Box::default()));
            let _ = client_events(&mut client);
            let sent = client_tx(&mut client, t0, version);
            let Some(Packet::Subscribe(sub)) =
                sent.iter().find(|p| matches!(p, Packet::Subscribe(_)))
            else {
                panic!("no resubscription: {sent:?}");
            };
            let filters: Vec<&str> = sub.filters.iter().map(|(f, _)| f.as_str()).collect();
            if round == 0 {
                assert_eq!(filters, ["keep/#", "lose/#"]);
                let refuse = if version.is_v5() {
                    ReasonCode::NOT_AUTHORIZED
                } else {
                    ReasonCode::UNSPECIFIED_ERROR
                };
                let suback = SubAck {
                    packet_id: sub.packet_id,
                    reason_codes: vec![ReasonCode::GRANTED_QOS_1, refuse],
                    properties: Default::default(),
                };
                client_feed(&mut client, t0, version, Packet::SubAck(suback));
                let events = client_events(&mut client);
                assert!(
                    events.contains(&Event::SubscriptionLost {
                        filter: "lose/#".into(),
                        reason_code: refuse,
                    }),
                    "{events:?}"
                );
            } else {
                assert_eq!(filters, ["keep/#"], "the lost one is not made again");
            }
        }
    }
}

// Conformance: [MQTT-5:3.2.2-4]
#[test]
fn session_present_after_clean_start_is_a_protocol_error() {
    // [MQTT-3.2.2-4]: a client without session state that gets Session Present 1 closes.
    for version in [V3_1_1, V5] {
        let t0 = Instant::now();
        let mut client = Client::new(Arc::new(client_config(version)), t0).unwrap();
        client.connect(t0);
        let _ = client_tx(&mut client, t0, version);
        let connack = connack_with(|c| c.session_present = true);
        client_feed(&mut client, t0, version, Packet::ConnAck(Box::new(connack)));
        assert!(!client.is_connected());
        let sent = client_tx(&mut client, t0, version);
        if version.is_v5() {
            assert_eq!(sent, [disconnect(ReasonCode::PROTOCOL_ERROR)]);
        } else {
            assert!(sent.is_empty());
        }
        assert_eq!(
            client_events(&mut client),
            [Event::Closed(CloseReason::ProtocolViolation(
                ReasonCode::PROTOCOL_ERROR
            ))]
        );
    }
}

fn disconnect(code: ReasonCode) -> Packet {
    Packet::Disconnect(Disconnect {
        reason_code: code,
        ..Disconnect::default()
    })
}

#[test]
fn refused_connack_closes() {
    let t0 = Instant::now();
    let mut client = Client::new(Arc::new(client_config(V3_1_1)), t0).unwrap();
    client.connect(t0);
    let _ = client_tx(&mut client, t0, V3_1_1);
    let connack = connack_with(|c| c.reason_code = ReasonCode::NOT_AUTHORIZED);
    client_feed(&mut client, t0, V3_1_1, Packet::ConnAck(Box::new(connack)));
    assert_eq!(
        client_events(&mut client),
        [Event::Closed(CloseReason::Refused(
            ReasonCode::NOT_AUTHORIZED
        ))]
    );
    assert!(client_tx(&mut client, t0, V3_1_1).is_empty());
}

#[test]
fn missing_connack_times_out() {
    let t0 = Instant::now();
    let mut config = client_config(V5);
    config.response_timeout = 3 * SEC;
    let mut client = Client::new(Arc::new(config), t0).unwrap();
    client.connect(t0);
    let _ = client_tx(&mut client, t0, V5);
    assert_eq!(client.poll_timeout(), Some(t0 + 3 * SEC));
    client.handle_timeout(t0 + 2 * SEC);
    assert!(client_events(&mut client).is_empty());
    client.handle_timeout(t0 + 3 * SEC);
    assert_eq!(
        client_events(&mut client),
        [Event::Closed(CloseReason::ResponseTimeout)]
    );
}

#[test]
fn a_packet_before_connack_is_a_protocol_error() {
    // [MQTT-3.2.0-1]: the first packet from the server is CONNACK.
    let t0 = Instant::now();
    let mut client = Client::new(Arc::new(client_config(V5)), t0).unwrap();
    client.connect(t0);
    let _ = client_tx(&mut client, t0, V5);
    client_feed(&mut client, t0, V5, Packet::PingResp);
    assert_eq!(
        client_events(&mut client),
        [Event::Closed(CloseReason::ProtocolViolation(
            ReasonCode::PROTOCOL_ERROR
        ))]
    );
}

// ---------------------------------------------------------------------------- keepalive

// Conformance: [MQTT-5:3.1.2-20] [MQTT-3.1.1:3.1.2-23]
#[test]
fn keepalive_pings_when_idle_and_gives_up_without_an_answer() {
    // [MQTT-3.1.2-23] (3.1.1: [MQTT-3.1.2-23]): a PINGREQ when nothing else was sent for
    // Keep Alive seconds; no answer within the response timeout closes the connection.
    for version in ALL {
        let t0 = Instant::now();
        let mut config = client_config(version);
        config.keep_alive = 10;
        config.response_timeout = 4 * SEC;
        let mut client = connected_client(config, ConnAck::default(), t0);
        assert_eq!(client.poll_timeout(), Some(t0 + 10 * SEC));
        // Sending something restarts the interval.
        client.publish(msg("x", QoS::AtMostOnce)).unwrap();
        let _ = client_tx(&mut client, t0 + 3 * SEC, version);
        assert_eq!(client.poll_timeout(), Some(t0 + 13 * SEC));
        client.handle_timeout(t0 + 12 * SEC);
        assert!(client_tx(&mut client, t0 + 12 * SEC, version).is_empty());
        client.handle_timeout(t0 + 13 * SEC);
        assert_eq!(
            client_tx(&mut client, t0 + 13 * SEC, version),
            [Packet::PingReq]
        );
        assert_eq!(client.poll_timeout(), Some(t0 + 17 * SEC));
        // PINGRESP answers it; the next ping is due one interval after the last send.
        client_feed(&mut client, t0 + 14 * SEC, version, Packet::PingResp);
        assert_eq!(client.poll_timeout(), Some(t0 + 23 * SEC));
        client.handle_timeout(t0 + 23 * SEC);
        assert_eq!(
            client_tx(&mut client, t0 + 23 * SEC, version),
            [Packet::PingReq]
        );
        client.handle_timeout(t0 + 26 * SEC);
        assert!(client.is_connected());
        client.handle_timeout(t0 + 27 * SEC);
        assert!(!client.is_connected());
        assert_eq!(
            client_events(&mut client),
            [Event::Closed(CloseReason::ResponseTimeout)]
        );
    }
}

#[test]
fn keep_alive_zero_never_pings() {
    let t0 = Instant::now();
    let mut config = client_config(V3_1_1);
    config.keep_alive = 0;
    let mut client = connected_client(config, ConnAck::default(), t0);
    assert_eq!(client.poll_timeout(), None);
    client.handle_timeout(t0 + 100_000 * SEC);
    assert!(client_tx(&mut client, t0, V3_1_1).is_empty());
}

// --------------------------------------------------------------------------- QoS flows

// Conformance: [MQTT-3.1.1:2.3.1-2]
#[test]
fn packet_ids_are_never_reused_while_in_flight() {
    // [MQTT-2.2.1-3]: a new SUBSCRIBE, UNSUBSCRIBE or QoS>0 PUBLISH gets an unused identifier.
    let t0 = Instant::now();
    let v = V3_1_1;
    let mut client = connected_client(client_config(v), ConnAck::default(), t0);
    let mut in_flight: std::collections::BTreeMap<u16, u8> = Default::default();
    for round in 0..300u32 {
        let (id, kind) = if round % 7 == 0 {
            let filters = vec![(ByteStr::from("f"), SubscriptionOptions::default())];
            (
                client
                    .subscribe(filters, SubscribeProperties::default())
                    .unwrap(),
                0,
            )
        } else if round % 11 == 0 {
            let filters = vec![ByteStr::from("f")];
            (
                client
                    .unsubscribe(filters, UnsubscribeProperties::default())
                    .unwrap(),
                1,
            )
        } else {
            (
                client.publish(msg("p", QoS::AtLeastOnce)).unwrap().unwrap(),
                2,
            )
        };
        assert!(
            in_flight.insert(id.get(), kind).is_none(),
            "identifier {id} reused while in flight"
        );
        let _ = client_tx(&mut client, t0, v);
        // Acknowledge one in three, newest first, so that identifiers free up out of order.
        if round % 3 == 2 {
            let (&id, &kind) = in_flight.iter().next_back().unwrap();
            in_flight.remove(&id);
            let packet = match kind {
                0 => Packet::SubAck(SubAck {
                    packet_id: pid(id),
                    reason_codes: vec![ReasonCode::GRANTED_QOS_0],
                    properties: Default::default(),
                }),
                1 => Packet::UnsubAck(midge_codec::UnsubAck {
                    packet_id: pid(id),
                    reason_codes: vec![],
                    properties: Default::default(),
                }),
                _ => Packet::PubAck(ack(id)),
            };
            client_feed(&mut client, t0, v, packet);
        }
    }
    assert_eq!(client.in_flight(), in_flight.len());
}

#[test]
fn qos1_completes_with_the_puback_reason_code() {
    // §4.3.2, §3.4.2.1: the PUBACK reason code reaches the application.
    let t0 = Instant::now();
    let mut client = v5_client(ConnAck::default(), t0);
    let id = client.publish(msg("a", QoS::AtLeastOnce)).unwrap().unwrap();
    let sent = client_tx(&mut client, t0, V5);
    assert_eq!(publishes(&sent)[0].qos, QoS::AtLeastOnce);
    client_feed(
        &mut client,
        t0,
        V5,
        Packet::PubAck(ack_with(id.get(), ReasonCode::NO_MATCHING_SUBSCRIBERS)),
    );
    assert_eq!(
        client_events(&mut client),
        [Event::Published {
            packet_id: id,
            reason_code: ReasonCode::NO_MATCHING_SUBSCRIBERS
        }]
    );
    assert_eq!(client.in_flight(), 0);
    // A second PUBACK for the same identifier is ignored.
    client_feed(&mut client, t0, V5, Packet::PubAck(ack(id.get())));
    assert!(client_events(&mut client).is_empty());
}

// Conformance: [MQTT-5:4.3.3-3] [MQTT-5:4.3.3-4] [MQTT-5:4.3.3-5] [MQTT-5:2.2.1-5]
#[test]
fn qos2_runs_pubrec_pubrel_pubcomp() {
    // [MQTT-4.3.3-1] .. [MQTT-4.3.3-5] (3.1.1: [MQTT-4.3.3-1]): PUBREC answered with
    // PUBREL, complete at PUBCOMP; a repeated PUBREC gets PUBREL again.
    for version in ALL {
        let t0 = Instant::now();
        let mut client = connected_client(client_config(version), ConnAck::default(), t0);
        let id = client.publish(msg("a", QoS::ExactlyOnce)).unwrap().unwrap();
        let _ = client_tx(&mut client, t0, version);
        client_feed(&mut client, t0, version, Packet::PubRec(ack(id.get())));
        assert_eq!(
            client_tx(&mut client, t0, version),
            [Packet::PubRel(ack(id.get()))]
        );
        assert!(client_events(&mut client).is_empty());
        client_feed(&mut client, t0, version, Packet::PubRec(ack(id.get())));
        assert_eq!(
            client_tx(&mut client, t0, version),
            [Packet::PubRel(ack(id.get()))]
        );
        client_feed(&mut client, t0, version, Packet::PubComp(ack(id.get())));
        assert_eq!(
            client_events(&mut client),
            [Event::Published {
                packet_id: id,
                reason_code: ReasonCode::SUCCESS
            }]
        );
        assert_eq!(client.in_flight(), 0);
    }
}

// Conformance: [MQTT-5:4.4.0-2]
#[test]
fn failing_pubrec_completes_without_pubrel() {
    // §4.3.3, §4.9: a PUBREC with a reason code of 0x80 or more ends the flow and frees the
    // send quota.
    let t0 = Instant::now();
    let mut client = v5_client(
        connack_with(|c| c.properties.receive_maximum = NonZeroU16::new(1)),
        t0,
    );
    let a = client.publish(msg("a", QoS::ExactlyOnce)).unwrap().unwrap();
    let b = client.publish(msg("b", QoS::ExactlyOnce)).unwrap().unwrap();
    assert_eq!(publishes(&client_tx(&mut client, t0, V5)).len(), 1);
    client_feed(
        &mut client,
        t0,
        V5,
        Packet::PubRec(ack_with(a.get(), ReasonCode::NOT_AUTHORIZED)),
    );
    let sent = client_tx(&mut client, t0, V5);
    assert!(
        !sent.iter().any(|p| matches!(p, Packet::PubRel(_))),
        "{sent:?}"
    );
    assert_eq!(publishes(&sent)[0].packet_id, Some(b));
    assert_eq!(
        client_events(&mut client),
        [Event::Published {
            packet_id: a,
            reason_code: ReasonCode::NOT_AUTHORIZED
        }]
    );
}

// Conformance: [MQTT-3.1.1:2.3.1-6]
#[test]
fn inbound_qos1_is_delivered_and_acknowledged() {
    // [MQTT-4.3.2-4] (3.1.1: [MQTT-4.3.2-2])
    let t0 = Instant::now();
    let mut client = connected_client(client_config(V3_1_1), ConnAck::default(), t0);
    client_feed(
        &mut client,
        t0,
        V3_1_1,
        Packet::Publish(publish("in", QoS::AtLeastOnce, Some(9))),
    );
    assert_eq!(client_tx(&mut client, t0, V3_1_1), [Packet::PubAck(ack(9))]);
    let events = client_events(&mut client);
    assert!(matches!(events.as_slice(), [Event::Message(m)] if m.topic.as_str() == "in"));
}

// Conformance: [MQTT-5:4.3.3-8] [MQTT-5:4.3.3-10] [MQTT-5:4.3.3-11] [MQTT-3.1.1:4.3.3-2]
#[test]
fn qos2_reports_the_pubrec_code_and_a_pubcomp_0x92_after_a_resend_is_not_an_error() {
    // 5.0: PUBREC may say 0x10 No matching subscribers (§3.5.2.1); PUBCOMP has only 0x00 and
    // 0x92 (§3.7.2.1). The flow completes with PUBREC's code, and a PUBCOMP 0x92 answering a
    // PUBREL resent on a resumed session completes it too.
    let t0 = Instant::now();
    let mut client = connected_client(persistent(V5), ConnAck::default(), t0);
    let first = client.publish(msg("a", QoS::ExactlyOnce)).unwrap().unwrap();
    let second = client.publish(msg("b", QoS::ExactlyOnce)).unwrap().unwrap();
    let _ = client_tx(&mut client, t0, V5);
    for id in [first, second] {
        let rec = ack_with(id.get(), ReasonCode::NO_MATCHING_SUBSCRIBERS);
        client_feed(&mut client, t0, V5, Packet::PubRec(rec));
    }
    assert_eq!(client_tx(&mut client, t0, V5).len(), 2, "two PUBRELs");
    client_feed(&mut client, t0, V5, Packet::PubComp(ack(first.get())));
    // The connection drops before the second PUBCOMP; the PUBREL goes again on resume.
    client.connection_lost();
    let mut events = client_events(&mut client);
    client.connect(t0);
    let _ = client_tx(&mut client, t0, V5);
    let resumed = connack_with(|c| c.session_present = true);
    client_feed(&mut client, t0, V5, Packet::ConnAck(Box::new(resumed)));
    assert_eq!(
        client_tx(&mut client, t0, V5),
        [Packet::PubRel(ack(second.get()))]
    );
    let comp = ack_with(second.get(), ReasonCode::PACKET_IDENTIFIER_NOT_FOUND);
    client_feed(&mut client, t0, V5, Packet::PubComp(comp));
    events.extend(client_events(&mut client));
    let done: Vec<_> = events
        .into_iter()
        .filter_map(|e| match e {
            Event::Published {
                packet_id,
                reason_code,
            } => Some((packet_id, reason_code)),
            _ => None,
        })
        .collect();
    assert_eq!(
        done,
        [
            (first, ReasonCode::NO_MATCHING_SUBSCRIBERS),
            (second, ReasonCode::NO_MATCHING_SUBSCRIBERS)
        ]
    );
}

#[test]
fn inbound_qos2_is_delivered_exactly_once() {
    // [MQTT-4.3.3-10] .. [MQTT-4.3.3-11] (3.1.1: [MQTT-4.3.3-2]): until PUBREL, a repeated
    // PUBLISH is answered with PUBREC and not delivered again; PUBREL gets PUBCOMP.
    for version in ALL {
        let t0 = Instant::now();
        let mut client = connected_client(client_config(version), ConnAck::default(), t0);
        let p = publish("in", QoS::ExactlyOnce, Some(5));
        client_feed(&mut client, t0, version, Packet::Publish(p.clone()));
        let dup = Publish { dup: true, ..p };
        client_feed(&mut client, t0, version, Packet::Publish(dup.clone()));
        client_feed(&mut client, t0, version, Packet::Publish(dup));
        assert_eq!(
            client_tx(&mut client, t0, version),
            vec![Packet::PubRec(ack(5)); 3]
        );
        let messages = client_events(&mut client)
            .into_iter()
            .filter(|e| matches!(e, Event::Message(_)))
            .count();
        assert_eq!(messages, 1, "{version:?}");
        client_feed(&mut client, t0, version, Packet::PubRel(ack(5)));
        assert_eq!(
            client_tx(&mut client, t0, version),
            [Packet::PubComp(ack(5))]
        );
        // A repeated PUBREL is still answered; 5.0 says the identifier is unknown.
        client_feed(&mut client, t0, version, Packet::PubRel(ack(5)));
        let expected = if version.is_v5() {
            ack_with(5, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND)
        } else {
            ack(5)
        };
        assert_eq!(
            client_tx(&mut client, t0, version),
            [Packet::PubComp(expected)]
        );
        assert!(client.is_connected());
    }
}

#[test]
fn manual_acks_hold_puback_and_pubrec_until_the_application_acknowledges() {
    for version in ALL {
        let t0 = Instant::now();
        let mut config = persistent(version);
        config.manual_acks = true;
        let mut client = connected_client(config, ConnAck::default(), t0);
        client_feed(
            &mut client,
            t0,
            version,
            Packet::Publish(publish("in", QoS::AtLeastOnce, Some(3))),
        );
        let p2 = publish("in", QoS::ExactlyOnce, Some(4));
        client_feed(&mut client, t0, version, Packet::Publish(p2.clone()));
        // Nothing is acknowledged before the application says so.
        assert!(
            client_tx(&mut client, t0, version).is_empty(),
            "{version:?}"
        );
        let events = client_events(&mut client);
        assert!(
            matches!(events.as_slice(), [
                Event::MessageToAcknowledge { packet_id: a, .. },
                Event::MessageToAcknowledge { packet_id: b, .. },
            ] if a.get() == 3 && b.get() == 4),
            "{events:?}"
        );
        // A retransmission of the QoS 2 message the application still holds is not reported
        // again and not answered yet.
        let dup = Publish { dup: true, ..p2 };
        client_feed(&mut client, t0, version, Packet::Publish(dup.clone()));
        assert!(client_tx(&mut client, t0, version).is_empty());
        assert!(client_events(&mut client).is_empty());
        client.acknowledge(pid(4));
        client.acknowledge(pid(3));
        // An identifier not awaiting acknowledgement is ignored.
        client.acknowledge(pid(77));
        // Answers keep the arrival order, not the order of acknowledgement [MQTT-4.6.0-2].
        assert_eq!(
            client_tx(&mut client, t0, version),
            [Packet::PubAck(ack(3)), Packet::PubRec(ack(4))]
        );
        // Once acknowledged, a retransmission gets PUBREC and no second delivery [MQTT-4.3.3-10].
        client_feed(&mut client, t0, version, Packet::Publish(dup));
        assert_eq!(
            client_tx(&mut client, t0, version),
            [Packet::PubRec(ack(4))]
        );
        assert!(client_events(&mut client).is_empty());
        client_feed(&mut client, t0, version, Packet::PubRel(ack(4)));
        assert_eq!(
            client_tx(&mut client, t0, version),
            [Packet::PubComp(ack(4))]
        );
    }
}

/// With manual acks the application acknowledges in any order (it reads its streams
/// independently), and the answers still go out in the order the PUBLISHes arrived: an
/// acknowledged message waits for the ones before it.
// Conformance: [MQTT-5:4.6.0-2] [MQTT-5:4.6.0-3] [MQTT-3.1.1:4.6.0-2] [MQTT-3.1.1:4.6.0-3]
#[test]
fn manual_acks_answer_in_arrival_order_whatever_order_the_application_acknowledges() {
    for version in ALL {
        let t0 = Instant::now();
        let mut config = persistent(version);
        config.manual_acks = true;
        let mut client = connected_client(config, ConnAck::default(), t0);
        let arrivals = [
            (5, QoS::AtLeastOnce),
            (6, QoS::ExactlyOnce),
            (7, QoS::AtLeastOnce),
            (8, QoS::ExactlyOnce),
        ];
        for (id, qos) in arrivals {
            client_feed(
                &mut client,
                t0,
                version,
                Packet::Publish(publish("in", qos, Some(id))),
            );
        }
        let _ = client_events(&mut client);
        // The last two first: nothing may go before 5 and 6.
        client.acknowledge(pid(8));
        client.acknowledge(pid(7));
        assert!(
            client_tx(&mut client, t0, version).is_empty(),
            "{version:?}"
        );
        client.acknowledge(pid(6));
        assert!(
            client_tx(&mut client, t0, version).is_empty(),
            "{version:?}"
        );
        client.acknowledge(pid(5));
        assert_eq!(
            client_tx(&mut client, t0, version),
            [
                Packet::PubAck(ack(5)),
                Packet::PubRec(ack(6)),
                Packet::PubAck(ack(7)),
                Packet::PubRec(ack(8)),
            ],
            "{version:?}"
        );
    }
}

/// A message the application abandons is never answered on this connection, and the answers
/// of later messages stop waiting for it. The server keeps it in flight: it still counts
/// against our Receive Maximum, and a QoS 2 one comes back as a new message on a resumed
/// session.
#[test]
fn an_abandoned_message_is_never_answered_and_comes_back_on_a_resumed_session() {
    let t0 = Instant::now();
    let mut config = persistent(V5);
    config.manual_acks = true;
    config.properties.receive_maximum = NonZeroU16::new(3);
    let mut client = connected_client(config, ConnAck::default(), t0);
    let held = publish("held", QoS::ExactlyOnce, Some(1));
    client_feed(&mut client, t0, V5, Packet::Publish(held.clone()));
    client_feed(
        &mut client,
        t0,
        V5,
        Packet::Publish(publish("a", QoS::AtLeastOnce, Some(2))),
    );
    let _ = client_events(&mut client);
    client.acknowledge(pid(2));
    assert!(client_tx(&mut client, t0, V5).is_empty(), "2 waits for 1");
    client.abandon(pid(1));
    assert_eq!(client_tx(&mut client, t0, V5), [Packet::PubAck(ack(2))]);
    // Acknowledging it later sends nothing: it was given up.
    client.acknowledge(pid(1));
    assert!(client_tx(&mut client, t0, V5).is_empty());
    // It still takes a place of our Receive Maximum (3): two more fit, a third does not.
    for id in [3, 4] {
        client_feed(
            &mut client,
            t0,
            V5,
            Packet::Publish(publish("b", QoS::AtLeastOnce, Some(id))),
        );
    }
    assert!(client.is_connected());
    client.acknowledge(pid(3));
    client.acknowledge(pid(4));
    assert_eq!(
        client_tx(&mut client, t0, V5),
        [Packet::PubAck(ack(3)), Packet::PubAck(ack(4))]
    );
    let _ = client_events(&mut client);
    // The resumed session resends it, and the application gets it again.
    client.connection_lost();
    client.connect(t0);
    let _ = client_tx(&mut client, t0, V5);
    let resumed = connack_with(|c| c.session_present = true);
    client_feed(&mut client, t0, V5, Packet::ConnAck(Box::new(resumed)));
    let _ = client_events(&mut client);
    client_feed(
        &mut client,
        t0,
        V5,
        Packet::Publish(Publish { dup: true, ..held }),
    );
    let events = client_events(&mut client);
    assert!(
        matches!(events.as_slice(), [Event::MessageToAcknowledge { packet_id, .. }] if packet_id.get() == 1),
        "{events:?}"
    );
    client.acknowledge(pid(1));
    assert_eq!(client_tx(&mut client, t0, V5), [Packet::PubRec(ack(1))]);
}

#[test]
fn incoming_packet_limit_holds_under_3_1_1() {
    // 3.1.1 has no Maximum Packet Size property; the configured limit still refuses a larger
    // packet before buffering it.
    let t0 = Instant::now();
    let mut config = client_config(V3_1_1);
    config.incoming_packet_limit = NonZeroU32::new(64);
    let mut client = connected_client(config, ConnAck::default(), t0);
    let mut big = publish("in", QoS::AtMostOnce, None);
    big.payload = Bytes::from(vec![0u8; 100]);
    client_feed(&mut client, t0, V3_1_1, Packet::Publish(big));
    assert!(!client.is_connected());
    assert!(matches!(
        client_events(&mut client).last(),
        Some(Event::Closed(CloseReason::ProtocolViolation(_)))
    ));
}

#[test]
fn manual_acks_count_against_receive_maximum() {
    // [MQTT-3.3.4-9]: unacknowledged QoS 1 and 2 messages count against our Receive Maximum.
    let t0 = Instant::now();
    let mut config = client_config(V5);
    config.manual_acks = true;
    config.properties.receive_maximum = NonZeroU16::new(2);
    let mut client = connected_client(config, ConnAck::default(), t0);
    client_feed(
        &mut client,
        t0,
        V5,
        Packet::Publish(publish("a", QoS::AtLeastOnce, Some(1))),
    );
    client_feed(
        &mut client,
        t0,
        V5,
        Packet::Publish(publish("a", QoS::ExactlyOnce, Some(2))),
    );
    client.acknowledge(pid(1));
    // One slot is free again.
    client_feed(
        &mut client,
        t0,
        V5,
        Packet::Publish(publish("a", QoS::AtLeastOnce, Some(3))),
    );
    assert!(client.is_connected());
    client_feed(
        &mut client,
        t0,
        V5,
        Packet::Publish(publish("a", QoS::AtLeastOnce, Some(4))),
    );
    assert!(!client.is_connected());
    let events = client_events(&mut client);
    assert!(
        matches!(
            events.last(),
            Some(Event::Closed(CloseReason::ProtocolViolation(
                ReasonCode::RECEIVE_MAXIMUM_EXCEEDED
            )))
        ),
        "{events:?}"
    );
}

#[test]
fn manual_acks_of_qos2_while_offline_answer_the_resent_publish() {
    let t0 = Instant::now();
    let mut config = persistent(V5);
    config.manual_acks = true;
    let mut client = connected_client(config, ConnAck::default(), t0);
    let p = publish("in", QoS::ExactlyOnce, Some(9));
    client_feed(&mut client, t0, V5, Packet::Publish(p.clone()));
    let _ = client_events(&mut client);
    client.connection_lost();
    client.acknowledge(pid(9));
    client.connect(t0);
    let _ = client_tx(&mut client, t0, V5);
    let resumed = connack_with(|c| c.session_present = true);
    client_feed(&mut client, t0, V5, Packet::ConnAck(Box::new(resumed)));
    let _ = client_events(&mut client);
    client_feed(
        &mut client,
        t0,
        V5,
        Packet::Publish(Publish { dup: true, ..p }),
    );
    assert_eq!(client_tx(&mut client, t0, V5), [Packet::PubRec(ack(9))]);
    assert!(client_events(&mut client).is_empty(), "delivered once");
}

#[test]
fn inbound_receive_maximum_exceeded_disconnects() {
    // §3.3.4 (Receive Maximum, [MQTT-3.3.4-9] on the server): more unreleased QoS 2 messages
    // than our Receive Maximum is a DISCONNECT 0x93.
    let t0 = Instant::now();
    let mut config = client_config(V5);
    config.properties.receive_maximum = NonZeroU16::new(2);
    let mut client = connected_client(config, ConnAck::default(), t0);
    for id in 1..=2 {
        client_feed(
            &mut client,
            t0,
            V5,
            Packet::Publish(publish("in", QoS::ExactlyOnce, Some(id))),
        );
    }
    // Releasing one makes room for another.
    client_feed(&mut client, t0, V5, Packet::PubRel(ack(1)));
    client_feed(
        &mut client,
        t0,
        V5,
        Packet::Publish(publish("in", QoS::ExactlyOnce, Some(3))),
    );
    assert!(client.is_connected());
    let _ = client_tx(&mut client, t0, V5);
    client_feed(
        &mut client,
        t0,
        V5,
        Packet::Publish(publish("in", QoS::ExactlyOnce, Some(4))),
    );
    assert_eq!(
        client_tx(&mut client, t0, V5),
        [disconnect(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED)]
    );
    let events = client_events(&mut client);
    assert_eq!(
        client_closed(&events),
        Some(CloseReason::ProtocolViolation(
            ReasonCode::RECEIVE_MAXIMUM_EXCEEDED
        ))
    );
}

#[test]
fn qos2_state_a_resumed_session_carries_counts_only_once_the_server_names_it() {
    // A server that restored an older copy of the session (after a crash) has forgotten the
    // QoS 2 messages we still await a PUBREL for. They must not count against our Receive
    // Maximum for good, and its new message with such an identifier, DUP 0 [MQTT-4.3.3-2],
    // is new [MQTT-2.2.1-4].
    let t0 = Instant::now();
    let mut config = persistent(V5);
    config.properties.receive_maximum = NonZeroU16::new(2);
    let mut client = connected_client(config, ConnAck::default(), t0);
    for id in 1..=2 {
        client_feed(
            &mut client,
            t0,
            V5,
            Packet::Publish(publish("in", QoS::ExactlyOnce, Some(id))),
        );
    }
    let _ = client_tx(&mut client, t0, V5);
    assert_eq!(client_events(&mut client).len(), 2);
    resume(&mut client, t0, |_| {});
    for id in [3, 1] {
        client_feed(
            &mut client,
            t0,
            V5,
            Packet::Publish(publish("in", QoS::ExactlyOnce, Some(id))),
        );
    }
    assert!(
        client.is_connected(),
        "{:?}",
        client_tx(&mut client, t0, V5)
    );
    let delivered = client_events(&mut client)
        .iter()
        .filter(|e| matches!(e, Event::Message(_)))
        .count();
    assert_eq!(delivered, 2, "the new message 1 is delivered");
    assert_eq!(
        client_tx(&mut client, t0, V5),
        [Packet::PubRec(ack(3)), Packet::PubRec(ack(1))]
    );
    // 3 and 1 count now: a third is one too many.
    client_feed(
        &mut client,
        t0,
        V5,
        Packet::Publish(publish("in", QoS::ExactlyOnce, Some(4))),
    );
    assert_eq!(
        client_tx(&mut client, t0, V5),
        [disconnect(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED)]
    );

    // A server that still holds 2 sends it again with DUP 1: a duplicate [MQTT-4.3.3-10].
    let mut config = persistent(V5);
    config.properties.receive_maximum = NonZeroU16::new(2);
    let mut client = connected_client(config, ConnAck::default(), t0);
    client_feed(
        &mut client,
        t0,
        V5,
        Packet::Publish(publish("in", QoS::ExactlyOnce, Some(2))),
    );
    let _ = client_tx(&mut client, t0, V5);
    let _ = client_events(&mut client);
    resume(&mut client, t0, |_| {});
    let resent = Publish {
        dup: true,
        ..publish("in", QoS::ExactlyOnce, Some(2))
    };
    client_feed(&mut client, t0, V5, Packet::Publish(resent));
    assert!(client_events(&mut client).is_empty());
    assert_eq!(client_tx(&mut client, t0, V5), [Packet::PubRec(ack(2))]);
}

// Conformance: [MQTT-5:3.3.2-10]
#[test]
fn inbound_topic_aliases_resolve_and_errors_disconnect() {
    // [MQTT-3.3.2-10]: an alias above our Topic Alias Maximum is 0x94 (§3.3.2.3.4); an
    // empty topic with an alias never set is a protocol error.
    let t0 = Instant::now();
    let mut config = client_config(V5);
    config.properties.topic_alias_maximum = Some(2);
    let with_alias = |topic: &str, alias: u16| {
        let mut p = publish(topic, QoS::AtMostOnce, None);
        p.properties.topic_alias = NonZeroU16::new(alias);
        Packet::Publish(p)
    };
    let mut client = connected_client(config.clone(), ConnAck::default(), t0);
    client_feed(&mut client, t0, V5, with_alias("x/y", 2));
    client_feed(&mut client, t0, V5, with_alias("", 2));
    let topics: Vec<_> = client_events(&mut client)
        .into_iter()
        .map(|e| match e {
            Event::Message(m) => {
                assert_eq!(m.properties.topic_alias, None);
                m.topic.as_str().to_owned()
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(topics, ["x/y", "x/y"]);

    client_feed(&mut client, t0, V5, with_alias("z", 3));
    assert_eq!(
        client_tx(&mut client, t0, V5),
        [disconnect(ReasonCode::TOPIC_ALIAS_INVALID)]
    );

    let mut client = connected_client(config, ConnAck::default(), t0);
    client_feed(&mut client, t0, V5, with_alias("", 1));
    assert_eq!(
        client_tx(&mut client, t0, V5),
        [disconnect(ReasonCode::PROTOCOL_ERROR)]
    );
    // Aliases last one connection [MQTT-3.3.2-7]: not tested here, see reconnect below.
}

// Conformance: [MQTT-5:3.3.2-7]
#[test]
fn inbound_aliases_do_not_survive_a_reconnect() {
    // [MQTT-3.3.2-7]
    let t0 = Instant::now();
    let mut config = persistent(V5);
    config.properties.topic_alias_maximum = Some(2);
    let mut client = connected_client(config, ConnAck::default(), t0);
    let mut p = publish("x", QoS::AtMostOnce, None);
    p.properties.topic_alias = NonZeroU16::new(1);
    client_feed(&mut client, t0, V5, Packet::Publish(p.clone()));
    client.connection_lost();
    client.connect(t0);
    let _ = client_tx(&mut client, t0, V5);
    client_feed(&mut client, t0, V5, Packet::ConnAck(Box::default()));
    let _ = client_events(&mut client);
    let _ = client_tx(&mut client, t0, V5);
    p.topic = ByteStr::new();
    client_feed(&mut client, t0, V5, Packet::Publish(p));
    assert_eq!(
        client_tx(&mut client, t0, V5),
        [disconnect(ReasonCode::PROTOCOL_ERROR)]
    );
}

#[test]
fn a_full_queue_refuses_and_loses_nothing() {
    let t0 = Instant::now();
    let mut config = client_config(V3_1_1);
    config.max_queued_messages = 3;
    let mut client = Client::new(Arc::new(config), t0).unwrap();
    client.connect(t0);
    let _ = client_tx(&mut client, t0, V3_1_1);
    for i in 0..3 {
        let qos = qos_of(i % 3);
        client.publish(msg(&format!("q/{i}"), qos)).unwrap();
    }
    assert_eq!(
        client.publish(msg("q/overflow", QoS::AtLeastOnce)),
        Err(PublishError::QueueFull)
    );
    assert_eq!(client.queued_messages(), 3);
    client_feed(&mut client, t0, V3_1_1, Packet::ConnAck(Box::default()));
    let sent = client_tx(&mut client, t0, V3_1_1);
    let topics: Vec<_> = publishes(&sent)
        .iter()
        .map(|p| p.topic.as_str().to_owned())
        .collect();
    assert_eq!(topics, ["q/0", "q/1", "q/2"]);
    assert!(client.publish(msg("q/3", QoS::AtMostOnce)).is_ok());
}

// Conformance: [MQTT-5:3.3.2-2] [MQTT-5:4.7.0-1]
#[test]
fn invalid_topic_is_refused() {
    let t0 = Instant::now();
    let mut client = v5_client(ConnAck::default(), t0);
    assert_eq!(
        client.publish(msg("a/+", QoS::AtMostOnce)),
        Err(PublishError::InvalidTopic)
    );
    assert_eq!(
        client.publish(msg("", QoS::AtMostOnce)),
        Err(PublishError::InvalidTopic)
    );
}

// ------------------------------------------------------------------- peer misbehaviour

#[test]
fn client_only_packets_from_the_server_are_protocol_errors() {
    // §3.1, §3.8, §3.12: CONNECT, SUBSCRIBE and PINGREQ only go client to server.
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        filters: vec![(ByteStr::from("a"), SubscriptionOptions::default())],
        properties: Default::default(),
    });
    let connect = |v| Packet::Connect(Box::new(Connect::new(v, "x")));
    for version in ALL {
        for packet in [connect(version), subscribe.clone(), Packet::PingReq] {
            let t0 = Instant::now();
            let mut client = connected_client(client_config(version), ConnAck::default(), t0);
            client_feed(&mut client, t0, version, packet.clone());
            let sent = client_tx(&mut client, t0, version);
            if version.is_v5() {
                assert_eq!(sent, [disconnect(ReasonCode::PROTOCOL_ERROR)], "{packet:?}");
            } else {
                assert!(sent.is_empty());
            }
            assert_eq!(
                client_events(&mut client),
                [Event::Closed(CloseReason::ProtocolViolation(
                    ReasonCode::PROTOCOL_ERROR
                ))]
            );
        }
    }
}

#[test]
fn a_connect_with_an_unknown_protocol_level_is_still_a_protocol_error() {
    // A CONNECT from the server is a protocol error whatever its protocol level; the
    // DISCONNECT must be one 5.0 allows (0x84 is a CONNACK-only code, §3.14.2.1).
    let t0 = Instant::now();
    let mut client = v5_client(ConnAck::default(), t0);
    let mut buf = BytesMut::new();
    Packet::Connect(Box::new(Connect::new(V5, "x")))
        .encode(V5, &mut buf)
        .unwrap();
    buf[8] = 9; // protocol level
    client.handle_bytes(t0, &mut buf);
    let sent = client_tx(&mut client, t0, V5);
    assert_eq!(sent, [disconnect(ReasonCode::PROTOCOL_ERROR)]);
    assert!(!client.is_connected());
}

#[test]
fn malformed_bytes_disconnect_with_the_codec_reason() {
    // §4.13: Malformed Packet 0x81, and 0x95 for a packet above our Maximum Packet Size
    // [MQTT-3.1.2-24] (the server must not send it; the client closes if it does).
    let t0 = Instant::now();
    let mut client = v5_client(ConnAck::default(), t0);
    let mut buf = BytesMut::from(&[0x00u8, 0x00][..]); // reserved packet type 0
    client.handle_bytes(t0, &mut buf);
    assert_eq!(
        client_tx(&mut client, t0, V5),
        [disconnect(ReasonCode::MALFORMED_PACKET)]
    );
    assert_eq!(
        client_events(&mut client),
        [Event::Closed(CloseReason::ProtocolViolation(
            ReasonCode::MALFORMED_PACKET
        ))]
    );

    let mut config = client_config(V5);
    config.properties.maximum_packet_size = NonZeroU32::new(32);
    let mut client = connected_client(config, ConnAck::default(), t0);
    let mut big = publish("t", QoS::AtMostOnce, None);
    big.payload = Bytes::from(vec![0u8; 64]);
    client_feed(&mut client, t0, V5, Packet::Publish(big));
    assert_eq!(
        client_tx(&mut client, t0, V5),
        [disconnect(ReasonCode::PACKET_TOO_LARGE)]
    );
    assert!(client_events(&mut client)
        .iter()
        .all(|e| !matches!(e, Event::Message(_))));

    // 3.1.1 closes without a DISCONNECT.
    let mut client = connected_client(client_config(V3_1_1), ConnAck::default(), t0);
    let mut buf = BytesMut::from(&[0x40u8, 0x01, 0x00][..]); // PUBACK too short
    client.handle_bytes(t0, &mut buf);
    assert!(client_tx(&mut client, t0, V3_1_1).is_empty());
    assert!(!client.is_connected());
}

#[test]
fn server_disconnect_closes_with_its_reason() {
    // §3.14 (5.0): the server may send DISCONNECT; the client does not answer it.
    let t0 = Instant::now();
    let mut client = v5_client(ConnAck::default(), t0);
    client.publish(msg("a", QoS::AtLeastOnce)).unwrap();
    client_feed(
        &mut client,
        t0,
        V5,
        disconnect(ReasonCode::SERVER_SHUTTING_DOWN),
    );
    assert_eq!(
        client_events(&mut client),
        [Event::Closed(CloseReason::DisconnectedByServer(
            ReasonCode::SERVER_SHUTTING_DOWN
        ))]
    );
    assert!(client_tx(&mut client, t0, V5).is_empty());
    // The unsent message stays queued for the next connection.
    assert_eq!(client.in_flight(), 1);
}

#[test]
fn disconnect_sends_its_reason_in_5_0_only() {
    for version in ALL {
        let t0 = Instant::now();
        let mut client = connected_client(client_config(version), ConnAck::default(), t0);
        client.disconnect(ReasonCode::DISCONNECT_WITH_WILL_MESSAGE);
        let expected = if version.is_v5() {
            ReasonCode::DISCONNECT_WITH_WILL_MESSAGE
        } else {
            ReasonCode::NORMAL_DISCONNECTION
        };
        assert_eq!(client_tx(&mut client, t0, version), [disconnect(expected)]);
        assert_eq!(
            client_events(&mut client),
            [Event::Closed(CloseReason::DisconnectedByClient)]
        );
    }
}

#[test]
fn timers_survive_large_jumps() {
    let t0 = Instant::now();
    let mut client = connected_client(client_config(V5), ConnAck::default(), t0);
    client.handle_timeout(t0 + Duration::from_secs(10 * 365 * 86_400));
    let _ = client_tx(&mut client, t0, V5);
}
