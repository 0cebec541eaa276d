//! Property tests: arbitrary valid packets of every type for each version round-trip, every
//! strict prefix of an encoding is incomplete, any chunking of the input decodes the same,
//! random bytes never panic, and 5.0-only fields are refused under 3.x rather than dropped.

mod common;

use core::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};
use common::{assert_encode_err, b, pid, s, up, V3_1, V3_1_1, V5};
use midge_codec::{
    AckProperties, Auth, AuthProperties, ByteStr, ConnAck, ConnAckProperties, Connect,
    ConnectProperties, Disconnect, DisconnectProperties, EncodeError, Packet, PayloadFormat,
    ProtocolVersion, PubAck, Publish, PublishProperties, PublishRef, QoS, ReasonCode,
    RetainHandling, SubAck, Subscribe, SubscribeProperties, SubscriptionId, SubscriptionOptions,
    UnsubAck, Unsubscribe, UnsubscribeProperties, Will, WillProperties, MAX_PACKET_SIZE,
};
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::Union;

// ------------------------------------------------------------------------------- strategies

/// Any UTF-8 string without U+0000 [MQTT-1.5.4-2], short.
fn string() -> impl Strategy<Value = ByteStr> + Clone {
    "[^\u{0}]{0,6}".prop_map(ByteStr::from)
}

/// A topic name: non-empty, no wildcards [MQTT-3.3.2-2], [MQTT-4.7.3-1].
fn topic_name() -> impl Strategy<Value = ByteStr> + Clone {
    "[^\u{0}+#]{1,6}".prop_map(ByteStr::from)
}

/// A topic filter: non-empty; wildcard placement belongs to midge-topic.
fn topic_filter() -> impl Strategy<Value = ByteStr> + Clone {
    "[^\u{0}]{1,6}".prop_map(ByteStr::from)
}

fn binary() -> impl Strategy<Value = Bytes> + Clone {
    vec(any::<u8>(), 0..8).prop_map(Bytes::from)
}

fn packet_id() -> impl Strategy<Value = NonZeroU16> + Clone {
    (1..=u16::MAX).prop_map(pid)
}

fn qos() -> impl Strategy<Value = QoS> + Clone {
    select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

fn nz16() -> impl Strategy<Value = NonZeroU16> + Clone {
    (1..=u16::MAX).prop_map(|v| NonZeroU16::new(v).unwrap())
}

fn nz32() -> impl Strategy<Value = NonZeroU32> + Clone {
    (1..=u32::MAX).prop_map(|v| NonZeroU32::new(v).unwrap())
}

fn subscription_id() -> impl Strategy<Value = SubscriptionId> + Clone {
    // Bias towards the Variable Byte Integer length boundaries.
    prop_oneof![
        select(vec![
            1,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            SubscriptionId::MAX
        ]),
        1..=SubscriptionId::MAX,
    ]
    .prop_map(|v| SubscriptionId::new(v).unwrap())
}

fn payload_format() -> impl Strategy<Value = PayloadFormat> + Clone {
    select(vec![PayloadFormat::Unspecified, PayloadFormat::Utf8])
}

fn user_properties() -> impl Strategy<Value = Vec<(ByteStr, ByteStr)>> + Clone {
    vec((string(), string()), 0..3)
}

fn codes(list: &[u8]) -> impl Strategy<Value = ReasonCode> + Clone {
    select(list.iter().copied().map(ReasonCode).collect::<Vec<_>>())
}

// Reason codes each packet may carry, copied from the tables of 5.0 §3.x (not from the codec).
const CONNACK_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
/// The 5.0 CONNACK codes that have a 3.x return code (3.1.1 §3.2.2.3).
const CONNACK_V3_CODES: &[u8] = &[0x00, 0x84, 0x85, 0x88, 0x86, 0x87];
const PUBACK_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_CODES: &[u8] = &[0x00, 0x92];
const SUBACK_CODES: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const SUBACK_V3_CODES: &[u8] = &[0x00, 0x01, 0x02, 0x80];
const UNSUBACK_CODES: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const DISCONNECT_CODES: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
const AUTH_CODES: &[u8] = &[0x00, 0x18, 0x19];

/// Properties only exist in 5.0: under 3.x each strategy yields the empty set.
fn or_empty<T: Default + Clone + core::fmt::Debug + 'static>(
    v5: bool,
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    if v5 {
        s.boxed()
    } else {
        Just(T::default()).boxed()
    }
}

fn connect_properties(v5: bool) -> BoxedStrategy<ConnectProperties> {
    let s = (
        of(any::<u32>()),
        of(nz16()),
        of(nz32()),
        of(any::<u16>()),
        of(any::<bool>()),
        of(any::<bool>()),
        of(string()),
        of(binary()),
        user_properties(),
    )
        .prop_map(|(a, b, c, d, e, f, g, h, u)| {
            let mut p = ConnectProperties::default();
            p.session_expiry_interval = a;
            p.receive_maximum = b;
            p.maximum_packet_size = c;
            p.topic_alias_maximum = d;
            p.request_response_information = e;
            p.request_problem_information = f;
            p.authentication_method = g;
            p.authentication_data = h;
            p.user_properties = u;
            p
        });
    or_empty(v5, s)
}

/// The values of every will property (5.0 §3.1.3.2), in the order they are encoded.
type WillValues = (
    Option<u32>,
    Option<PayloadFormat>,
    Option<u32>,
    Option<ByteStr>,
    Option<ByteStr>,
    Option<Bytes>,
    Vec<(ByteStr, ByteStr)>,
);

/// Will properties holding `values`, whose encoded ones are set in the order `order` gives
/// (0 Content Type, 1 Response Topic, 2 Correlation Data, 3 User Properties).
fn will_properties_from(values: WillValues, order: &[usize]) -> WillProperties {
    let (delay, format, expiry, content_type, response_topic, correlation_data, users) = values;
    let mut p = WillProperties::default();
    p.will_delay_interval = delay;
    p.message.payload_format_indicator = format;
    p.message.message_expiry_interval = expiry;
    for &i in order {
        let m = &mut p.message;
        match i {
            0 => m.set_content_type(content_type.clone()).unwrap(),
            1 => m.set_response_topic(response_topic.clone()).unwrap(),
            2 => m.set_correlation_data(correlation_data.clone()).unwrap(),
            _ => m.set_user_properties(users.clone()).unwrap(),
        }
    }
    p
}

fn will_values() -> impl Strategy<Value = WillValues> + Clone {
    (
        of(any::<u32>()),
        of(payload_format()),
        of(any::<u32>()),
        of(string()),
        of(topic_name()),
        of(binary()),
        user_properties(),
    )
}

/// Every will property present, user properties included.
fn every_will_value() -> impl Strategy<Value = WillValues> + Clone {
    (
        any::<u32>(),
        payload_format(),
        any::<u32>(),
        string(),
        topic_name(),
        binary(),
        vec((string(), string()), 1..4),
    )
        .prop_map(|(a, b, c, d, e, f, u)| (Some(a), Some(b), Some(c), Some(d), Some(e), Some(f), u))
}

/// The order in which the encoded will properties are set.
fn setter_order() -> impl Strategy<Value = Vec<usize>> + Clone {
    Just(vec![0, 1, 2, 3]).prop_shuffle()
}

fn will_properties(v5: bool) -> BoxedStrategy<WillProperties> {
    let s = (will_values(), setter_order())
        .prop_map(|(values, order)| will_properties_from(values, &order));
    or_empty(v5, s)
}

fn connack_properties(v5: bool) -> BoxedStrategy<ConnAckProperties> {
    let first = (
        of(any::<u32>()),
        of(nz16()),
        of(select(vec![QoS::AtMostOnce, QoS::AtLeastOnce])),
        of(any::<bool>()),
        of(nz32()),
        of(string()),
        of(any::<u16>()),
        of(string()),
    );
    let second = (
        of(any::<bool>()),
        of(any::<bool>()),
        of(any::<bool>()),
        of(any::<u16>()),
        of(string()),
        of(string()),
        of(string()),
        of(binary()),
        user_properties(),
    );
    let s = (first, second).prop_map(|((a, b, c, d, e, f, g, h), (i, j, k, l, m, n, o, q, u))| {
        let mut p = ConnAckProperties::default();
        p.session_expiry_interval = a;
        p.receive_maximum = b;
        p.maximum_qos = c;
        p.retain_available = d;
        p.maximum_packet_size = e;
        p.assigned_client_identifier = f;
        p.topic_alias_maximum = g;
        p.reason_string = h;
        p.wildcard_subscription_available = i;
        p.subscription_identifiers_available = j;
        p.shared_subscription_available = k;
        p.server_keep_alive = l;
        p.response_information = m;
        p.server_reference = n;
        p.authentication_method = o;
        p.authentication_data = q;
        p.user_properties = u;
        p
    });
    or_empty(v5, s)
}

fn publish_properties(v5: bool) -> BoxedStrategy<PublishProperties> {
    let s = (
        of(payload_format()),
        of(any::<u32>()),
        of(nz16()),
        of(topic_name()),
        of(binary()),
        vec(subscription_id(), 0..3),
        of(string()),
        user_properties(),
    )
        .prop_map(|(a, b, c, d, e, f, g, u)| {
            let mut p = PublishProperties::default();
            p.payload_format_indicator = a;
            p.message_expiry_interval = b;
            p.topic_alias = c;
            p.set_response_topic(d).unwrap();
            p.set_correlation_data(e).unwrap();
            p.set_subscription_identifiers(&f);
            p.set_content_type(g).unwrap();
            p.set_user_properties(u).unwrap();
            p
        });
    or_empty(v5, s)
}

fn ack_properties(v5: bool) -> BoxedStrategy<AckProperties> {
    let s = (of(string()), user_properties()).prop_map(|(r, u)| {
        let mut p = AckProperties::default();
        p.reason_string = r;
        p.user_properties = u;
        p
    });
    or_empty(v5, s)
}

fn subscribe_properties(v5: bool) -> BoxedStrategy<SubscribeProperties> {
    let s = (of(subscription_id()), user_properties()).prop_map(|(i, u)| {
        let mut p = SubscribeProperties::default();
        p.subscription_identifier = i;
        p.user_properties = u;
        p
    });
    or_empty(v5, s)
}

fn unsubscribe_properties(v5: bool) -> BoxedStrategy<UnsubscribeProperties> {
    let s = user_properties().prop_map(|u| {
        let mut p = UnsubscribeProperties::default();
        p.user_properties = u;
        p
    });
    or_empty(v5, s)
}

fn disconnect_properties(v5: bool) -> BoxedStrategy<DisconnectProperties> {
    let s = (
        of(any::<u32>()),
        of(string()),
        of(string()),
        user_properties(),
    )
        .prop_map(|(a, r, sr, u)| {
            let mut p = DisconnectProperties::default();
            p.session_expiry_interval = a;
            p.reason_string = r;
            p.server_reference = sr;
            p.user_properties = u;
            p
        });
    or_empty(v5, s)
}

fn auth_properties() -> BoxedStrategy<AuthProperties> {
    (of(string()), of(binary()), of(string()), user_properties())
        .prop_map(|(m, d, r, u)| {
            let mut p = AuthProperties::default();
            p.authentication_method = m;
            p.authentication_data = d;
            p.reason_string = r;
            p.user_properties = u;
            p
        })
        .boxed()
}

fn subscription_options(v5: bool) -> BoxedStrategy<SubscriptionOptions> {
    if !v5 {
        return qos().prop_map(SubscriptionOptions::qos).boxed();
    }
    let handling = select(vec![
        RetainHandling::SendAtSubscribe,
        RetainHandling::SendIfNew,
        RetainHandling::DoNotSend,
    ]);
    (qos(), any::<bool>(), any::<bool>(), handling)
        .prop_map(
            |(qos, no_local, retain_as_published, retain_handling)| SubscriptionOptions {
                qos,
                no_local,
                retain_as_published,
                retain_handling,
            },
        )
        .boxed()
}

/// Success only before 5.0, any code the packet allows in 5.0.
fn reason(v5: bool, list: &'static [u8]) -> BoxedStrategy<ReasonCode> {
    if v5 {
        codes(list).boxed()
    } else {
        Just(ReasonCode::SUCCESS).boxed()
    }
}

fn connect(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = v.is_v5();
    let will = of((
        topic_name(),
        binary(),
        qos(),
        any::<bool>(),
        will_properties(v5),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties,
        }));
    (
        (any::<bool>(), any::<bool>()),
        any::<u16>(),
        string(),
        will,
        of(string()),
        of(binary()),
        connect_properties(v5),
    )
        .prop_map(
            move |(
                (clean_start, bridge),
                keep_alive,
                client_id,
                will,
                username,
                password,
                properties,
            )| {
                // 3.1.1 [MQTT-3.1.2-22]: no password without a user name before 5.0.
                let password = if v5 || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Box::new(Connect {
                    protocol: v,
                    clean_start,
                    // The bridge bit is a 3.x convention.
                    bridge: bridge && !v5,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }))
            },
        )
        .boxed()
}

fn connack(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = v.is_v5();
    let code = if v5 {
        codes(CONNACK_CODES).boxed()
    } else {
        codes(CONNACK_V3_CODES).boxed()
    };
    (any::<bool>(), code, connack_properties(v5))
        .prop_map(move |(session_present, reason_code, properties)| {
            // 3.1 has no Session Present flag.
            let session_present = session_present && v != V3_1;
            Packet::ConnAck(Box::new(ConnAck {
                session_present,
                reason_code,
                properties,
            }))
        })
        .boxed()
}

fn publish(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = v.is_v5();
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic_name(),
        any::<bool>(),
        packet_id(),
        binary(),
        publish_properties(v5),
    )
        .prop_map(
            |(dup, qos, retain, topic, drop_topic, id, payload, properties)| {
                let qos0 = qos == QoS::AtMostOnce;
                // 5.0 §3.3.2.3.4: with a Topic Alias the Topic Name may be empty.
                let topic = if drop_topic && properties.topic_alias.is_some() {
                    ByteStr::new()
                } else {
                    topic
                };
                Packet::Publish(Publish {
                    dup: dup && !qos0,
                    qos,
                    retain,
                    topic,
                    packet_id: if qos0 { None } else { Some(id) },
                    payload,
                    properties,
                })
            },
        )
        .boxed()
}

fn pub_ack(
    v: ProtocolVersion,
    list: &'static [u8],
    wrap: fn(PubAck) -> Packet,
) -> BoxedStrategy<Packet> {
    let v5 = v.is_v5();
    (packet_id(), reason(v5, list), ack_properties(v5))
        .prop_map(move |(packet_id, reason_code, properties)| {
            wrap(PubAck {
                packet_id,
                reason_code,
                properties,
            })
        })
        .boxed()
}

fn subscribe(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = v.is_v5();
    (
        packet_id(),
        vec((topic_filter(), subscription_options(v5)), 1..4),
        subscribe_properties(v5),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                filters,
                properties,
            })
        })
        .boxed()
}

fn suback(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = v.is_v5();
    let list = if v5 { SUBACK_CODES } else { SUBACK_V3_CODES };
    (packet_id(), vec(codes(list), 1..4), ack_properties(v5))
        .prop_map(|(packet_id, reason_codes, properties)| {
            Packet::SubAck(SubAck {
                packet_id,
                reason_codes,
                properties,
            })
        })
        .boxed()
}

fn unsubscribe(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = v.is_v5();
    (
        packet_id(),
        vec(topic_filter(), 1..4),
        unsubscribe_properties(v5),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                properties,
            })
        })
        .boxed()
}

fn unsuback(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = v.is_v5();
    // 3.x UNSUBACK has no payload.
    let reason_codes = if v5 {
        vec(codes(UNSUBACK_CODES), 0..4).boxed()
    } else {
        Just(vec![]).boxed()
    };
    (packet_id(), reason_codes, ack_properties(v5))
        .prop_map(|(packet_id, reason_codes, properties)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                reason_codes,
                properties,
            })
        })
        .boxed()
}

fn disconnect(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = v.is_v5();
    (reason(v5, DISCONNECT_CODES), disconnect_properties(v5))
        .prop_map(|(reason_code, properties)| {
            Packet::Disconnect(Disconnect {
                reason_code,
                properties,
            })
        })
        .boxed()
}

fn auth() -> BoxedStrategy<Packet> {
    (codes(AUTH_CODES), auth_properties())
        .prop_map(|(reason_code, properties)| {
            Packet::Auth(Box::new(Auth {
                reason_code,
                properties,
            }))
        })
        .boxed()
}

/// An arbitrary valid packet of any type for `v` (AUTH only in 5.0).
fn packet(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let mut arms = vec![
        connect(v),
        connack(v),
        publish(v),
        pub_ack(v, PUBACK_CODES, Packet::PubAck),
        pub_ack(v, PUBACK_CODES, Packet::PubRec),
        pub_ack(v, PUBREL_CODES, Packet::PubRel),
        pub_ack(v, PUBREL_CODES, Packet::PubComp),
        subscribe(v),
        suback(v),
        unsubscribe(v),
        unsuback(v),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect(v),
    ];
    if v.is_v5() {
        arms.push(auth());
    }
    Union::new(arms).boxed()
}

/// A version and a valid packet for it.
fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    select(vec![V3_1, V3_1_1, V5]).prop_flat_map(|v| (Just(v), packet(v)))
}

fn any_version() -> impl Strategy<Value = ProtocolVersion> {
    select(vec![V3_1, V3_1_1, V5])
}

// ------------------------------------------------------------------------------- properties

fn encode(p: &Packet, v: ProtocolVersion) -> BytesMut {
    let mut buf = BytesMut::new();
    p.encode(v, &mut buf)
        .unwrap_or_else(|e| panic!("encode {p:?} for {v:?}: {e:?}"));
    buf
}

/// Decodes everything in `buf` until it is incomplete or an error; must never panic.
fn drain(mut buf: BytesMut, v: ProtocolVersion) {
    let mut last_len = buf.len() + 1;
    while buf.len() < last_len {
        last_len = buf.len();
        match Packet::decode(&mut buf, v, MAX_PACKET_SIZE) {
            Ok(Some(p)) => {
                // Whatever decodes re-encodes, and that encoding decodes to the same packet.
                let again = encode(&p, v);
                let mut again = BytesMut::from(&again[..]);
                assert_eq!(Packet::decode(&mut again, v, MAX_PACKET_SIZE), Ok(Some(p)));
            }
            Ok(None) | Err(_) => return,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `decode(encode(p)) == p`, and `encoded_len` is what `encode` writes.
    #[test]
    fn valid_packets_round_trip((v, p) in versioned_packet()) {
        let wire = encode(&p, v);
        prop_assert_eq!(p.encoded_len(v), Ok(wire.len()));
        let mut buf = wire.clone();
        prop_assert_eq!(Packet::decode(&mut buf, v, MAX_PACKET_SIZE), Ok(Some(p.clone())));
        prop_assert!(buf.is_empty());
        let mut shared = wire.freeze();
        prop_assert_eq!(Packet::decode_bytes(&mut shared, v, MAX_PACKET_SIZE), Ok(Some(p)));
        prop_assert!(shared.is_empty());
    }

    /// Every strict prefix of an encoding is `Ok(None)` and consumes nothing.
    #[test]
    fn strict_prefixes_are_incomplete((v, p) in versioned_packet()) {
        let wire = encode(&p, v);
        for end in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..end]);
            prop_assert_eq!(Packet::decode(&mut buf, v, MAX_PACKET_SIZE), Ok(None), "prefix {}", end);
            prop_assert_eq!(&buf[..], &wire[..end]);
        }
    }

    /// Packets split across reads at arbitrary points decode the same as when whole, in order.
    #[test]
    fn any_chunking_decodes_the_same(
        (v, packets) in any_version().prop_flat_map(|v| (Just(v), vec(packet(v), 1..4))),
        cuts in vec(1usize..16, 0..64),
    ) {
        let mut stream = BytesMut::new();
        for p in &packets {
            stream.extend_from_slice(&encode(p, v));
        }
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut rest = &stream[..];
        let mut cuts = cuts.into_iter();
        while !rest.is_empty() {
            let n = cuts.next().unwrap_or(rest.len()).min(rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            while let Some(p) = Packet::decode(&mut buf, v, MAX_PACKET_SIZE).unwrap() {
                got.push(p);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, packets);
    }

    /// Random bytes never panic, whatever the version.
    #[test]
    fn random_bytes_never_panic(v in any_version(), bytes in vec(any::<u8>(), 0..64)) {
        drain(BytesMut::from(&bytes[..]), v);
        let mut shared = Bytes::from(bytes);
        while let Ok(Some(_)) = Packet::decode_bytes(&mut shared, v, MAX_PACKET_SIZE) {}
    }

    /// Random bodies behind a well-formed fixed header, so that every body decoder sees
    /// arbitrary input rather than just the header check.
    #[test]
    fn random_bodies_never_panic(v in any_version(), first in any::<u8>(), body in vec(any::<u8>(), 0..48)) {
        let mut bytes = vec![first, body.len() as u8];
        bytes.extend_from_slice(&body);
        drain(BytesMut::from(&bytes[..]), v);
    }

    /// Random mutations of valid encodings: near-valid input reaches the deepest checks.
    #[test]
    fn mutated_packets_never_panic(
        (v, p) in versioned_packet(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut wire = encode(&p, v).to_vec();
        for (at, byte) in flips {
            let i = at.index(wire.len());
            wire[i] = byte;
        }
        drain(BytesMut::from(&wire[..]), v);
    }

    /// Will properties with every property present (5.0 §3.1.3.2) round-trip, and encode to
    /// the same bytes whatever order they were set in: Will Delay Interval, Payload Format
    /// Indicator, Message Expiry Interval, Content Type, Response Topic, Correlation Data,
    /// User Properties.
    #[test]
    fn will_properties_with_every_property_round_trip(
        values in every_will_value(),
        order in setter_order(),
        qos in qos(),
        retain in any::<bool>(),
    ) {
        let will = |properties| Will {
            topic: s("w/t"),
            payload: b(b"bye"),
            qos,
            retain,
            properties,
        };
        let connect = |properties| Packet::Connect(Box::new(Connect {
            will: Some(will(properties)),
            ..Connect::new(V5, "cid")
        }));
        let p = connect(will_properties_from(values.clone(), &order));
        let wire = encode(&p, V5);
        let in_order = encode(&connect(will_properties_from(values.clone(), &[0, 1, 2, 3])), V5);
        prop_assert_eq!(&wire, &in_order);
        let mut buf = wire.clone();
        let decoded = Packet::decode(&mut buf, V5, MAX_PACKET_SIZE);
        prop_assert_eq!(&decoded, &Ok(Some(p)));
        let Ok(Some(Packet::Connect(c))) = decoded else { unreachable!() };
        let w = c.will.as_ref().unwrap();
        let (delay, format, expiry, content_type, response_topic, correlation_data, users) = values;
        let m = &w.properties.message;
        prop_assert_eq!(w.properties.will_delay_interval, delay);
        prop_assert_eq!(m.payload_format_indicator, format);
        prop_assert_eq!(m.message_expiry_interval, expiry);
        prop_assert_eq!(m.content_type(), content_type);
        prop_assert_eq!(m.response_topic(), response_topic);
        prop_assert_eq!(m.correlation_data(), correlation_data);
        prop_assert_eq!(m.user_properties().collect::<Vec<_>>(), users);
        prop_assert_eq!(m.topic_alias, None);
        prop_assert!(!m.has_subscription_identifiers());
        // The decoded will re-encodes to the same bytes.
        let again = encode(&Packet::Connect(c), V5);
        prop_assert_eq!(again, wire);
    }

    /// A 5.0 packet encoded for 3.1.1 either carries everything it holds or is refused with
    /// nothing written: never silently trimmed.
    #[test]
    fn v5_packets_under_v311_are_exact_or_refused(p in packet(V5)) {
        let mut buf = BytesMut::from(&b"previous"[..]);
        match p.encode(V3_1_1, &mut buf) {
            Ok(()) => {
                let mut wire = buf.split_off(8);
                prop_assert_eq!(Packet::decode(&mut wire, V3_1_1, MAX_PACKET_SIZE), Ok(Some(p)));
            }
            Err(_) => prop_assert_eq!(&buf[..], b"previous"),
        }
    }
}

// ---------------------------------------------------------------- 5.0-only fields under 3.x

fn requires_v5(p: Packet, field: &'static str) {
    for v in [V3_1, V3_1_1] {
        assert_encode_err(&p, v, EncodeError::RequiresV5(field));
    }
    // The same packet is fine in 5.0.
    let mut buf = BytesMut::new();
    p.encode(V5, &mut buf).unwrap();
}

fn ack_with(reason_code: ReasonCode, properties: AckProperties) -> PubAck {
    PubAck {
        packet_id: pid(1),
        reason_code,
        properties,
    }
}

#[test]
fn v5_only_fields_are_refused_under_v3() {
    let mut reason_string = AckProperties::default();
    reason_string.reason_string = Some(s("why"));

    // CONNECT properties and will properties. A CONNECT is encoded for the version it names.
    let mut props = ConnectProperties::default();
    props.session_expiry_interval = Some(1);
    for v in [V3_1, V3_1_1] {
        let c = Connect {
            properties: props.clone(),
            ..Connect::new(v, "c")
        };
        assert_encode_err(
            &Packet::Connect(Box::new(c)),
            V5,
            EncodeError::RequiresV5("CONNECT properties"),
        );
        let mut will_props = WillProperties::default();
        will_props.message.push_user_property("k", "v").unwrap();
        let will = Will {
            topic: s("t"),
            payload: b(b""),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: will_props,
        };
        let c = Connect {
            will: Some(will),
            ..Connect::new(v, "c")
        };
        assert_encode_err(
            &Packet::Connect(Box::new(c)),
            V5,
            EncodeError::RequiresV5("will properties"),
        );
    }

    let mut connack = ConnAckProperties::default();
    connack.maximum_qos = Some(QoS::AtMostOnce);
    requires_v5(
        Packet::ConnAck(Box::new(ConnAck {
            properties: connack,
            ..ConnAck::default()
        })),
        "CONNACK properties",
    );

    let mut publish = PublishProperties::default();
    publish.topic_alias = NonZeroU16::new(3);
    requires_v5(
        Packet::Publish(Publish {
            topic: s("t"),
            properties: publish,
            ..Publish::default()
        }),
        "PUBLISH properties",
    );

    for wrap in [
        Packet::PubAck,
        Packet::PubRec,
        Packet::PubRel,
        Packet::PubComp,
    ] {
        requires_v5(
            wrap(ack_with(ReasonCode::SUCCESS, reason_string.clone())),
            "acknowledgement properties",
        );
    }
    for wrap in [Packet::PubAck, Packet::PubRec] {
        requires_v5(
            wrap(ack_with(
                ReasonCode::NO_MATCHING_SUBSCRIBERS,
                AckProperties::default(),
            )),
            "acknowledgement reason code",
        );
    }
    for wrap in [Packet::PubRel, Packet::PubComp] {
        requires_v5(
            wrap(ack_with(
                ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
                AckProperties::default(),
            )),
            "acknowledgement reason code",
        );
    }

    let mut subscribe = SubscribeProperties::default();
    subscribe.subscription_identifier = SubscriptionId::new(1);
    let filters = vec![(s("t"), SubscriptionOptions::qos(QoS::AtLeastOnce))];
    requires_v5(
        Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            filters: filters.clone(),
            properties: subscribe,
        }),
        "SUBSCRIBE properties",
    );
    let base = SubscriptionOptions::qos(QoS::AtLeastOnce);
    for options in [
        SubscriptionOptions {
            no_local: true,
            ..base
        },
        SubscriptionOptions {
            retain_as_published: true,
            ..base
        },
        SubscriptionOptions {
            retain_handling: RetainHandling::SendIfNew,
            ..base
        },
        SubscriptionOptions {
            retain_handling: RetainHandling::DoNotSend,
            ..base
        },
    ] {
        requires_v5(
            Packet::Subscribe(Subscribe {
                packet_id: pid(1),
                filters: vec![(s("t"), options)],
                properties: SubscribeProperties::default(),
            }),
            "subscription options",
        );
    }

    requires_v5(
        Packet::SubAck(SubAck {
            packet_id: pid(1),
            reason_codes: vec![ReasonCode::SUCCESS],
            properties: reason_string.clone(),
        }),
        "SUBACK properties",
    );

    let mut unsubscribe = UnsubscribeProperties::default();
    unsubscribe.user_properties = vec![up("k", "v")];
    requires_v5(
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(1),
            filters: vec![s("t")],
            properties: unsubscribe,
        }),
        "UNSUBSCRIBE properties",
    );
    requires_v5(
        Packet::UnsubAck(UnsubAck {
            packet_id: pid(1),
            reason_codes: vec![],
            properties: reason_string.clone(),
        }),
        "UNSUBACK properties",
    );
    requires_v5(
        Packet::UnsubAck(UnsubAck {
            packet_id: pid(1),
            reason_codes: vec![ReasonCode::SUCCESS],
            properties: AckProperties::default(),
        }),
        "UNSUBACK reason codes",
    );

    requires_v5(
        Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
            properties: DisconnectProperties::default(),
        }),
        "DISCONNECT reason code",
    );
    let mut disconnect = DisconnectProperties::default();
    disconnect.reason_string = Some(s("bye"));
    requires_v5(
        Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::SUCCESS,
            properties: disconnect,
        }),
        "DISCONNECT properties",
    );

    requires_v5(Packet::Auth(Box::default()), "AUTH");
}

/// Reason codes 3.x cannot express are refused, not mapped to something else.
#[test]
fn reason_codes_without_a_v3_form_are_refused() {
    for v in [V3_1, V3_1_1] {
        // CONNACK 0x95 Packet too large has no 3.x return code (3.1.1 §3.2.2.3).
        assert_encode_err(
            &Packet::ConnAck(Box::new(ConnAck {
                reason_code: ReasonCode::PACKET_TOO_LARGE,
                ..ConnAck::default()
            })),
            v,
            EncodeError::InvalidReasonCode(0x95),
        );
        // SUBACK 0x87 Not authorized: 3.1.1 §3.9.3 knows only 0x00-0x02 and 0x80.
        assert_encode_err(
            &Packet::SubAck(SubAck {
                packet_id: pid(1),
                reason_codes: vec![ReasonCode::NOT_AUTHORIZED],
                properties: AckProperties::default(),
            }),
            v,
            EncodeError::InvalidReasonCode(0x87),
        );
    }
}

/// Caller mistakes are `EncodeError`s, reported before the first byte is written.
#[test]
fn caller_errors_are_refused_before_writing() {
    let publish = |qos, packet_id: Option<u16>, dup, topic: ByteStr| {
        Packet::Publish(Publish {
            qos,
            dup,
            topic,
            packet_id: packet_id.map(pid),
            ..Publish::default()
        })
    };
    for v in [V3_1, V3_1_1, V5] {
        // [MQTT-2.2.1-2]: a packet identifier exactly when QoS > 0.
        assert_encode_err(
            &publish(QoS::AtLeastOnce, None, false, s("t")),
            v,
            EncodeError::PacketIdMismatch,
        );
        assert_encode_err(
            &publish(QoS::AtMostOnce, Some(1), false, s("t")),
            v,
            EncodeError::PacketIdMismatch,
        );
        // [MQTT-3.3.1-2]: no DUP on QoS 0.
        assert_encode_err(
            &publish(QoS::AtMostOnce, None, true, s("t")),
            v,
            EncodeError::DupOnQoS0,
        );
        // [MQTT-3.3.2-2], [MQTT-4.7.3-1]: no wildcard, not empty (no alias here).
        assert_encode_err(
            &publish(QoS::AtMostOnce, None, false, s("a/+")),
            v,
            EncodeError::InvalidTopic,
        );
        assert_encode_err(
            &publish(QoS::AtMostOnce, None, false, s("#")),
            v,
            EncodeError::InvalidTopic,
        );
        assert_encode_err(
            &publish(QoS::AtMostOnce, None, false, s("")),
            v,
            EncodeError::InvalidTopic,
        );
        // [MQTT-1.5.4-2]: no U+0000.
        assert_encode_err(
            &publish(QoS::AtMostOnce, None, false, s("a\0b")),
            v,
            EncodeError::NullCharacter,
        );
        // §1.5.4: at most 65,535 bytes.
        let long = ByteStr::from("x".repeat(65_536));
        assert_encode_err(
            &publish(QoS::AtMostOnce, None, false, long),
            v,
            EncodeError::FieldTooLong,
        );
        let at_limit = ByteStr::from("x".repeat(65_535));
        assert!(publish(QoS::AtMostOnce, None, false, at_limit)
            .encoded_len(v)
            .is_ok());
        // [MQTT-3.8.3-2], [MQTT-3.10.3-2]: at least one topic filter.
        let subscribe = Subscribe {
            packet_id: pid(1),
            filters: vec![],
            properties: SubscribeProperties::default(),
        };
        assert_encode_err(
            &Packet::Subscribe(subscribe),
            v,
            EncodeError::NoTopicFilters,
        );
        let unsubscribe = Unsubscribe {
            packet_id: pid(1),
            filters: vec![],
            properties: UnsubscribeProperties::default(),
        };
        assert_encode_err(
            &Packet::Unsubscribe(unsubscribe),
            v,
            EncodeError::NoTopicFilters,
        );
        // [MQTT-4.7.3-1]: a filter is not empty.
        let subscribe = Subscribe {
            packet_id: pid(1),
            filters: vec![(s(""), SubscriptionOptions::default())],
            properties: SubscribeProperties::default(),
        };
        assert_encode_err(&Packet::Subscribe(subscribe), v, EncodeError::InvalidTopic);
        // A user name or will topic with U+0000.
        let connect = Connect {
            username: Some(s("u\0")),
            ..Connect::new(v, "c")
        };
        assert_encode_err(
            &Packet::Connect(Box::new(connect)),
            v,
            EncodeError::NullCharacter,
        );
    }
    // The bridge bit of the protocol level byte is a 3.x convention: 5.0 cannot carry it.
    let bridge = Connect {
        bridge: true,
        ..Connect::new(V5, "c")
    };
    assert_encode_err(
        &Packet::Connect(Box::new(bridge)),
        V5,
        EncodeError::NotInV5("the bridge bit of CONNECT"),
    );
    // 3.1.1 [MQTT-3.1.2-22]: a password needs a user name before 5.0.
    for v in [V3_1, V3_1_1] {
        let connect = Connect {
            password: Some(b(b"p")),
            ..Connect::new(v, "c")
        };
        assert_encode_err(
            &Packet::Connect(Box::new(connect)),
            v,
            EncodeError::PasswordWithoutUsername,
        );
    }
    // 5.0 §3.2.2.3.4: Maximum QoS is 0 or 1.
    let mut props = ConnAckProperties::default();
    props.maximum_qos = Some(QoS::ExactlyOnce);
    assert_encode_err(
        &Packet::ConnAck(Box::new(ConnAck {
            properties: props,
            ..ConnAck::default()
        })),
        V5,
        EncodeError::InvalidPropertyValue(0x24),
    );
    // 5.0 §2.4: a reason code the packet may not carry.
    let pubrel = PubAck {
        reason_code: ReasonCode::NO_MATCHING_SUBSCRIBERS,
        ..PubAck::new(pid(1))
    };
    assert_encode_err(
        &Packet::PubRel(pubrel),
        V5,
        EncodeError::InvalidReasonCode(0x10),
    );
    let auth = Auth {
        reason_code: ReasonCode::NOT_AUTHORIZED,
        ..Auth::default()
    };
    assert_encode_err(
        &Packet::Auth(Box::new(auth)),
        V5,
        EncodeError::InvalidReasonCode(0x87),
    );
    // 5.0 §3.1.3.2: a will's properties are those of a PUBLISH but Topic Alias and
    // Subscription Identifier.
    let with_will = |message: PublishProperties| {
        let mut properties = WillProperties::default();
        properties.message = message;
        Packet::Connect(Box::new(Connect {
            will: Some(Will {
                topic: s("w/t"),
                payload: b(b""),
                qos: QoS::AtMostOnce,
                retain: false,
                properties,
            }),
            ..Connect::new(V5, "c")
        }))
    };
    let mut alias = PublishProperties::default();
    alias.topic_alias = NonZeroU16::new(1);
    assert_encode_err(&with_will(alias), V5, EncodeError::PropertyNotAllowed(0x23));
    let mut sub_id = PublishProperties::default();
    sub_id.set_subscription_identifiers(&[SubscriptionId::new(1).unwrap()]);
    assert_encode_err(
        &with_will(sub_id),
        V5,
        EncodeError::PropertyNotAllowed(0x0B),
    );
}

// ------------------------------------------------------------- borrowed PUBLISH, topic levels

/// A PUBLISH of any version (5.0 properties even when the version is 3.x, for the errors),
/// and what one delivery of it replaces.
fn publish_and_parts() -> impl Strategy<Value = (ProtocolVersion, Publish, Parts)> {
    (
        any_version(),
        any::<bool>(),
        publish(V5),
        (
            of(any::<u32>()),
            of(nz16()),
            of(vec(subscription_id(), 0..3)),
            any::<bool>(),
            any::<bool>(),
        ),
    )
        .prop_map(|(v, keep, p, (expiry, alias, ids, dup, drop_topic))| {
            let Packet::Publish(mut p) = p else {
                unreachable!("a PUBLISH strategy");
            };
            if !keep {
                // Mostly what 3.x can encode, so that both outcomes are exercised.
                p.properties = PublishProperties::default();
            }
            let parts = Parts {
                expiry: if keep { expiry } else { None },
                alias: if keep { alias } else { None },
                ids: if keep { ids } else { None },
                dup: dup && p.qos != QoS::AtMostOnce,
                drop_topic,
            };
            (v, p, parts)
        })
}

#[derive(Clone, Debug)]
struct Parts {
    expiry: Option<u32>,
    alias: Option<NonZeroU16>,
    ids: Option<Vec<SubscriptionId>>,
    dup: bool,
    drop_topic: bool,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A `PublishRef` encodes as the `Publish` with its parts would: the same bytes, the same
    /// length, or the same error; and `Publish::encode` is `Packet::encode`.
    #[test]
    fn publish_ref_encodes_as_the_owned_publish((v, p, parts) in publish_and_parts()) {
        let empty = ByteStr::new();
        let topic = if parts.drop_topic { &empty } else { &p.topic };
        let mut borrowed = PublishRef::from(&p);
        borrowed.topic = topic;
        borrowed.dup = parts.dup;
        borrowed.message_expiry_interval = parts.expiry;
        borrowed.topic_alias = parts.alias;
        borrowed.subscription_identifiers = parts.ids.as_deref();

        let mut owned = p.clone();
        owned.topic = topic.clone();
        owned.dup = parts.dup;
        owned.properties.message_expiry_interval = parts.expiry;
        owned.properties.topic_alias = parts.alias;
        if let Some(ids) = &parts.ids {
            owned.properties.set_subscription_identifiers(ids);
        }

        let mut expected = BytesMut::new();
        let expected_result = Packet::Publish(owned.clone()).encode(v, &mut expected);
        let mut got = BytesMut::new();
        let got_result = borrowed.encode(v, &mut got);
        prop_assert_eq!(got_result, expected_result);
        prop_assert_eq!(&got, &expected);
        prop_assert_eq!(
            borrowed.encoded_len(v),
            expected_result.map(|()| expected.len())
        );
        let mut direct = BytesMut::new();
        prop_assert_eq!(owned.encode(v, &mut direct), expected_result);
        prop_assert_eq!(&direct, &expected);
        prop_assert_eq!(owned.encoded_len(v), Packet::Publish(owned).encoded_len(v));
    }

    /// A decoded PUBLISH topic, ASCII or not, becomes a checked topic name without a second
    /// look at its characters, and knows its levels from then on, clones and copies included;
    /// the count is one more than its `/` characters.
    #[test]
    fn decoded_topics_become_checked_topic_names(
        v in any_version(),
        topic in "[^\u{0}+#]{1,12}|[a/]{1,40}",
    ) {
        let publish = Packet::Publish(Publish {
            topic: ByteStr::from(topic.clone()),
            ..Publish::default()
        });
        let mut wire = encode(&publish, v);
        let Ok(Some(Packet::Publish(p))) = Packet::decode(&mut wire, v, MAX_PACKET_SIZE) else {
            panic!("a valid PUBLISH decodes");
        };
        let levels = 1 + topic.matches('/').count();
        let mut checked = p.topic;
        prop_assert!(checked.check_topic_name());
        prop_assert_eq!(checked.as_str(), topic.as_str());
        prop_assert_eq!(checked.topic_levels(), Some(levels));
        prop_assert_eq!(checked.clone().topic_levels(), Some(levels));
        prop_assert_eq!(checked.unshared().topic_levels(), Some(levels));
    }
}

/// What is known of a topic goes with it, and is never claimed for what is not a valid topic
/// name: empty [MQTT-4.7.3-1], U+0000 [MQTT-4.7.3-2], a wildcard [MQTT-3.3.2-2], longer than
/// 65,535 bytes [MQTT-4.7.3-3]; above 127 levels the count is not kept.
#[test]
fn topic_levels_are_claimed_only_for_valid_names() {
    assert_eq!(ByteStr::from("a/b/c".to_owned()).topic_levels(), Some(3));
    assert_eq!(ByteStr::from_static("/").topic_levels(), Some(2));
    assert_eq!(
        ByteStr::from_utf8(Bytes::from_static(b"x/y"))
            .unwrap()
            .topic_levels(),
        Some(2)
    );
    for invalid in ["", "a/+", "#", "a\u{0}b"] {
        assert_eq!(
            ByteStr::from(invalid.to_owned()).topic_levels(),
            None,
            "{invalid:?}"
        );
        let mut checked = ByteStr::from(invalid.to_owned());
        assert!(!checked.check_topic_name(), "{invalid:?}");
        assert_eq!(checked.topic_levels(), None, "{invalid:?}");
    }
    // Not ASCII: not known when made, known once checked.
    let accented = ByteStr::from("caf\u{e9}/cr\u{e8}me".to_owned());
    assert_eq!(accented.topic_levels(), None);
    let mut accented = accented;
    assert!(accented.check_topic_name());
    assert_eq!(accented.topic_levels(), Some(2));
    assert!(!ByteStr::from("a".repeat(65_536)).check_topic_name());
    // Valid beyond 127 levels, without a kept count.
    let mut deep = ByteStr::from("/".repeat(200));
    assert!(deep.check_topic_name());
    assert_eq!(deep.topic_levels(), None);
    assert_eq!(ByteStr::from("a".repeat(65_536)).topic_levels(), None);
    assert_eq!(ByteStr::from("a".repeat(65_535)).topic_levels(), Some(1));
    assert_eq!(ByteStr::from("/".repeat(126)).topic_levels(), Some(127));
    assert_eq!(ByteStr::from("/".repeat(127)).topic_levels(), None);
    // Strings decoded as something other than a topic name are not claimed as one.
    let mut wire = BytesMut::new();
    Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(1),
        filters: vec![ByteStr::from_static("a/b")],
        properties: UnsubscribeProperties::default(),
    })
    .encode(V5, &mut wire)
    .unwrap();
    let Ok(Some(Packet::Unsubscribe(u))) = Packet::decode(&mut wire, V5, MAX_PACKET_SIZE) else {
        panic!("decodes");
    };
    assert_eq!(u.filters[0].topic_levels(), None);
}
