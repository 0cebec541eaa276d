//! Random sequences of valid packets, timer firings and application commands, fed as bytes to a
//! connected client and to a connected server connection: nothing panics, and every byte
//! either transmits decodes as packets of the connection's version.

mod common;

use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use common::*;
use midge_codec::{
    ByteStr, ConnAck, Disconnect, Packet, ProtocolVersion, PubAck, Publish, QoS, ReasonCode,
    SubAck, Subscribe, SubscribeProperties, SubscriptionId, SubscriptionOptions, UnsubAck,
    Unsubscribe,
};
use midge_proto::client::{Client, Event};
use midge_proto::server::{ServerConfig, ServerEvent};
use midge_proto::session::Delivery;
use midge_proto::Message;
use proptest::prelude::*;
use proptest::sample::select;

#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
enum Step {
    Packet(Packet),
    /// Advance the clock by this many seconds and fire due timers.
    Wait(u8),
    /// An application command (client: publish/subscribe; server: deliver).
    Command(u8, QoS),
}

const TOPICS: [&str; 3] = ["a", "a/b", "c/d/e"];

fn qos() -> impl Strategy<Value = QoS> + Clone {
    select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

fn id() -> impl Strategy<Value = NonZeroU16> + Clone {
    (1u16..6).prop_map(pid)
}

fn code(list: &'static [u8]) -> impl Strategy<Value = ReasonCode> + Clone {
    select(list).prop_map(ReasonCode)
}

const PUBACK: &[u8] = &[0x00, 0x10, 0x80, 0x87, 0x91, 0x97];
const PUBREL: &[u8] = &[0x00, 0x92];
const DISCONNECT: &[u8] = &[0x00, 0x04, 0x80, 0x82, 0x8B, 0x8E, 0x93];

/// A packet of any type that encodes under `version`; which packets a peer may send in a
/// state is the state machine's business, so every type appears.
fn packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = version.is_v5();
    let publish = (
        qos(),
        id(),
        select(TOPICS.to_vec()),
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(1u16..4),
        proptest::option::of(0u32..20),
    )
        .prop_map(move |(qos, id, topic, dup, retain, alias, expiry)| {
            let mut p = Publish {
                dup: dup && qos != QoS::AtMostOnce,
                qos,
                retain,
                topic: ByteStr::from(topic),
                packet_id: (qos != QoS::AtMostOnce).then_some(id),
                payload: Bytes::from_static(b"p"),
                ..Publish::default()
            };
            if v5 {
                p.properties.topic_alias = alias.and_then(NonZeroU16::new);
                if p.properties.topic_alias.is_some() && dup {
                    p.topic = ByteStr::new();
                }
                p.properties.message_expiry_interval = expiry;
            }
            Packet::Publish(p)
        });
    let ack = move |codes: &'static [u8]| {
        (id(), code(codes)).prop_map(move |(id, c)| PubAck {
            reason_code: if v5 { c } else { ReasonCode::SUCCESS },
            ..PubAck::new(id)
        })
    };
    let subscribe = (
        id(),
        select(vec!["a/#", "+/b", "$share/g/a", "x"]),
        qos(),
        any::<bool>(),
    )
        .prop_map(move |(id, f, q, nl)| {
            let mut options = SubscriptionOptions::qos(q);
            options.no_local = v5 && nl;
            let mut properties = SubscribeProperties::default();
            if v5 && nl {
                properties.subscription_identifier = SubscriptionId::new(u32::from(id.get()));
            }
            Packet::Subscribe(Subscribe {
                packet_id: id,
                filters: vec![(ByteStr::from(f), options)],
                properties,
            })
        });
    let mut options = vec![
        publish.boxed(),
        ack(PUBACK).prop_map(Packet::PubAck).boxed(),
        ack(PUBACK).prop_map(Packet::PubRec).boxed(),
        ack(PUBREL).prop_map(Packet::PubRel).boxed(),
        ack(PUBREL).prop_map(Packet::PubComp).boxed(),
        subscribe.boxed(),
        (id(), select(vec![0u8, 1, 2, 0x80]))
            .prop_map(|(id, c)| {
                Packet::SubAck(SubAck {
                    packet_id: id,
                    reason_codes: vec![ReasonCode(c)],
                    properties: Default::default(),
                })
            })
            .boxed(),
        id().prop_map(|id| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id: id,
                filters: vec![ByteStr::from("a/#")],
                properties: Default::default(),
            })
        })
        .boxed(),
        id().prop_map(move |id| {
            Packet::UnsubAck(UnsubAck {
                packet_id: id,
                reason_codes: if v5 {
                    vec![ReasonCode::SUCCESS]
                } else {
                    vec![]
                },
                properties: Default::default(),
            })
        })
        .boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        code(DISCONNECT)
            .prop_map(move |c| {
                Packet::Disconnect(Disconnect {
                    reason_code: if v5 { c } else { ReasonCode::SUCCESS },
                    ..Disconnect::default()
                })
            })
            .boxed(),
        Just(Packet::ConnAck(Box::default())).boxed(),
        Just(Packet::Connect(Box::new(connect_packet(version, "again")))).boxed(),
    ];
    if v5 {
        options.push(Just(Packet::Auth(Box::default())).boxed());
    }
    proptest::strategy::Union::new(options).boxed()
}

fn steps(version: ProtocolVersion) -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        6 => packet(version).prop_map(Step::Packet),
        1 => (0u8..40).prop_map(Step::Wait),
        2 => (any::<u8>(), qos()).prop_map(|(n, q)| Step::Command(n, q)),
    ];
    proptest::collection::vec(step, 0..40)
}

fn versioned_steps() -> impl Strategy<Value = (ProtocolVersion, Vec<Step>)> {
    select(ALL.to_vec()).prop_flat_map(|v| (Just(v), steps(v)))
}

fn encode(packet: &Packet, version: ProtocolVersion) -> Option<BytesMut> {
    let mut buf = BytesMut::new();
    packet.encode(version, &mut buf).ok()?;
    Some(buf)
}

fn run_client(version: ProtocolVersion, steps: &[Step]) {
    let t0 = Instant::now();
    let mut config = client_config(version);
    config.keep_alive = 20;
    config.max_queued_messages = 8;
    if version.is_v5() {
        config.properties.receive_maximum = NonZeroU16::new(3);
        config.properties.topic_alias_maximum = Some(2);
    }
    let mut connack = ConnAck::default();
    if version.is_v5() {
        connack.properties.receive_maximum = NonZeroU16::new(2);
        connack.properties.topic_alias_maximum = Some(1);
    }
    let mut client = connected_client(config, connack, t0);
    let mut now = t0;
    let mut rx = BytesMut::new();
    for step in steps {
        match step {
            Step::Packet(p) => {
                if let Some(bytes) = encode(p, version) {
                    rx.extend_from_slice(&bytes);
                    client.handle_bytes(now, &mut rx);
                }
            }
            Step::Wait(secs) => {
                now += u32::from(*secs) * SEC;
                client.handle_timeout(now);
            }
            Step::Command(n, qos) => {
                if n % 5 == 0 {
                    let filters = vec![(ByteStr::from("a/#"), SubscriptionOptions::qos(*qos))];
                    let _ = client.subscribe(filters, SubscribeProperties::default());
                } else if n % 7 == 0 && !client.is_connected() {
                    client.connect(now);
                } else {
                    let topic = TOPICS[usize::from(*n) % TOPICS.len()];
                    let _ = client.publish(Message::new(topic, &b"m"[..], *qos));
                }
            }
        }
        let _ = client_tx(&mut client, now, version);
        let _ = client.poll_timeout();
        drain_client(&mut client);
    }
}

fn drain_client(client: &mut Client) {
    while let Some(event) = client.poll_event() {
        if let Event::Closed(_) = event {
            // The transport is gone; the next command may reconnect.
        }
    }
}

fn run_server(version: ProtocolVersion, steps: &[Step]) {
    let t0 = Instant::now();
    let mut config = ServerConfig::default();
    config.receive_maximum = 3;
    config.max_inflight = 2;
    config.topic_alias_maximum = 2;
    let mut connect = connect_packet(version, "c");
    connect.keep_alive = 20;
    connect.will = Some(midge_codec::Will {
        topic: ByteStr::from("w"),
        payload: Bytes::new(),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    });
    if version.is_v5() {
        connect.properties.receive_maximum = NonZeroU16::new(2);
        connect.properties.topic_alias_maximum = Some(1);
        connect.properties.session_expiry_interval = Some(10);
    }
    let (mut server, _) = accepted_server(config, connect, None, t0);
    let mut now = t0;
    let mut rx = BytesMut::new();
    for step in steps {
        match step {
            Step::Packet(p) => {
                if let Some(bytes) = encode(p, version) {
                    rx.extend_from_slice(&bytes);
                    server.handle_bytes(now, &mut rx);
                }
            }
            Step::Wait(secs) => {
                now += u32::from(*secs) * SEC;
                server.handle_timeout(now);
            }
            Step::Command(n, qos) => {
                let mut message = Message::new(TOPICS[usize::from(*n) % 3], &b"d"[..], *qos);
                if n % 2 == 0 {
                    message.properties.message_expiry_interval = Some(u32::from(n % 16));
                }
                let mut delivery = Delivery::new(Arc::new(message), now);
                delivery.qos = *qos;
                delivery.retain = n % 3 == 0;
                delivery.subscription_ids =
                    SubscriptionId::new(u32::from(*n)).into_iter().collect();
                server.deliver(delivery);
            }
        }
        while let Some(event) = server.poll_event() {
            match event {
                ServerEvent::Publish {
                    message: _,
                    packet_id: Some(id),
                } => {
                    let code = if id.get() % 2 == 0 {
                        ReasonCode::SUCCESS
                    } else {
                        ReasonCode::NOT_AUTHORIZED
                    };
                    server.acknowledge(id, code);
                }
                ServerEvent::Subscribe {
                    packet_id,
                    requests,
                    subscription_id: _,
                } => {
                    let codes = requests
                        .iter()
                        .map(|r| r.verdict.err().unwrap_or(ReasonCode(r.options.qos as u8)))
                        .collect();
                    server.subscribe_ack(packet_id, codes);
                }
                ServerEvent::Unsubscribe {
                    packet_id,
                    filters: _,
                } => {
                    server.unsubscribe_ack(packet_id);
                }
                _ => {}
            }
        }
        let _ = server_tx(&mut server, now);
        let _ = server.poll_timeout();
    }
    server.connection_lost();
    if let Some(session) = server.take_session() {
        let mut buf = BytesMut::new();
        session.encode(now, &mut buf);
        let bytes = buf.freeze();
        // Expiry is stored as time remaining, so compare encodings at the same instant.
        let decoded = midge_proto::session::Session::decode(now, bytes.clone())
            .expect("an encoded session decodes");
        let mut again = BytesMut::new();
        decoded.encode(now, &mut again);
        assert_eq!(again.freeze(), bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn client_survives_any_packet_sequence((version, steps) in versioned_steps()) {
        run_client(version, &steps);
    }

    #[test]
    fn server_survives_any_packet_sequence((version, steps) in versioned_steps()) {
        run_server(version, &steps);
    }
}
