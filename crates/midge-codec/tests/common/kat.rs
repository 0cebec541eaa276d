//! Known-answer vectors: bytes written by hand from the layouts in the specifications (MQTT 3.1,
//! MQTT 3.1.1 OASIS Standard, MQTT 5.0 OASIS Standard), never from our encoder, paired with
//! the packet they must decode to.
//!
//! Where 5.0 leaves the order of properties open (§2.2.2), the vectors list them in the order
//! `midge-codec` writes them (the declaration order of each properties struct, user properties
//! last), so that encoding the packet must give back exactly these bytes.
//!
//! The 27 property identifiers of 5.0 §2.2.2.2 (Table 2-4) all appear at least once:
//! CONNECT: 0x11 0x21 0x27 0x22 0x19 0x17 0x15 0x16 0x26; will: 0x18 0x01 0x02 0x03 0x08 0x09;
//! CONNACK: 0x24 0x25 0x12 0x1F 0x28 0x29 0x2A 0x13 0x1A 0x1C; PUBLISH: 0x23 0x0B (twice).

use core::num::{NonZeroU16, NonZeroU32};

use midge_codec::{
    AckProperties, Auth, AuthProperties, ConnAck, ConnAckProperties, Connect, ConnectProperties,
    Disconnect, DisconnectProperties, Packet, PayloadFormat, ProtocolVersion, PubAck, Publish,
    PublishProperties, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, SubscribeProperties,
    SubscriptionId, SubscriptionOptions, UnsubAck, Unsubscribe, UnsubscribeProperties, Will,
    WillProperties,
};

use super::{b, hex, pid, s, up, V3_1, V3_1_1, V5};

/// One known-answer vector.
pub(crate) struct Kat {
    /// Short name, with the spec section it follows.
    pub(crate) name: &'static str,
    pub(crate) version: ProtocolVersion,
    /// The whole packet, fixed header included.
    pub(crate) bytes: Vec<u8>,
    pub(crate) packet: Packet,
}

fn kat(name: &'static str, version: ProtocolVersion, bytes: &str, packet: Packet) -> Kat {
    Kat {
        name,
        version,
        bytes: hex(bytes),
        packet,
    }
}

fn ack(id: u16, code: ReasonCode) -> PubAck {
    PubAck {
        packet_id: pid(id),
        reason_code: code,
        properties: AckProperties::default(),
    }
}

/// Every vector, for every version.
pub(crate) fn all() -> Vec<Kat> {
    let mut all = v31();
    all.extend(v311());
    all.extend(v3_common(V3_1));
    all.extend(v3_common(V3_1_1));
    all.extend(v5());
    all
}

/// MQTT 3.1 (protocol name "MQIsdp", level 3): the packets whose layout differs from 3.1.1.
fn v31() -> Vec<Kat> {
    vec![
        // MQTT 3.1 §3.1 CONNECT: protocol name "MQIsdp", version 3, Clean Session, Keep Alive 60.
        kat(
            "3.1 §3.1 CONNECT",
            V3_1,
            "10 11  0006 4d5149736470  03  02  003c  0003 636964",
            Packet::Connect(Box::new(Connect::new(V3_1, "cid"))),
        ),
        // mosquitto's bridge convention: the high bit of the level byte (0x83) marks a bridge.
        kat(
            "3.1 CONNECT bridge bit",
            V3_1,
            "10 11  0006 4d5149736470  83  02  003c  0003 636964",
            Packet::Connect(Box::new(Connect {
                bridge: true,
                ..Connect::new(V3_1, "cid")
            })),
        ),
        // MQTT 3.1 §3.2 CONNACK: byte 1 reserved (no Session Present), return code 0.
        kat(
            "3.1 §3.2 CONNACK",
            V3_1,
            "20 02 00 00",
            Packet::ConnAck(Box::default()),
        ),
    ]
}

/// MQTT 3.1.1 (level 4): CONNECT and CONNACK.
fn v311() -> Vec<Kat> {
    vec![
        // MQTT 3.1.1 §3.1 CONNECT: "MQTT", level 4, Clean Session, Keep Alive 60, client "cid".
        kat(
            "3.1.1 §3.1 CONNECT minimal",
            V3_1_1,
            "10 0f  0004 4d515454  04  02  003c  0003 636964",
            Packet::Connect(Box::new(Connect::new(V3_1_1, "cid"))),
        ),
        // mosquitto's bridge convention: the high bit of the level byte (0x84) marks a bridge.
        kat(
            "3.1.1 CONNECT bridge bit",
            V3_1_1,
            "10 0f  0004 4d515454  84  02  003c  0003 636964",
            Packet::Connect(Box::new(Connect {
                bridge: true,
                ..Connect::new(V3_1_1, "cid")
            })),
        ),
        // MQTT 3.1.1 §3.1 CONNECT with Will (§3.1.2.5-§3.1.2.7: QoS 1, Retain), User Name and
        // Password (§3.1.2.8-§3.1.2.9): flags 0xEC; payload order client id, will topic, will
        // message, user name, password (§3.1.3).
        kat(
            "3.1.1 §3.1 CONNECT will+credentials",
            V3_1_1,
            "10 1f  0004 4d515454  04  ec  000a  0003 636964  0003 772f74  0003 627965
             0001 75  0001 70",
            Packet::Connect(Box::new(Connect {
                protocol: V3_1_1,
                clean_start: false,
                bridge: false,
                keep_alive: 10,
                client_id: s("cid"),
                will: Some(Will {
                    topic: s("w/t"),
                    payload: b(b"bye"),
                    qos: QoS::AtLeastOnce,
                    retain: true,
                    properties: WillProperties::default(),
                }),
                username: Some(s("u")),
                password: Some(b(b"p")),
                properties: ConnectProperties::default(),
            })),
        ),
        // MQTT 3.1.1 §3.2 CONNACK: Session Present 1 (§3.2.2.2), return code 0 Accepted.
        kat(
            "3.1.1 §3.2 CONNACK session present",
            V3_1_1,
            "20 02 01 00",
            Packet::ConnAck(Box::new(ConnAck {
                session_present: true,
                ..ConnAck::default()
            })),
        ),
        // MQTT 3.1.1 §3.2.2.3 CONNACK return code 5: Connection Refused, not authorized.
        kat(
            "3.1.1 §3.2 CONNACK not authorized",
            V3_1_1,
            "20 02 00 05",
            Packet::ConnAck(Box::new(ConnAck {
                reason_code: ReasonCode::NOT_AUTHORIZED,
                ..ConnAck::default()
            })),
        ),
    ]
}

/// Packets laid out identically in MQTT 3.1 and 3.1.1 (sections are those of 3.1.1; 3.1 uses
/// the same numbers).
fn v3_common(v: ProtocolVersion) -> Vec<Kat> {
    vec![
        // 3.1.1 §3.3 PUBLISH QoS 0: no Packet Identifier (§3.3.2.2), payload is the rest.
        kat(
            "3.x §3.3 PUBLISH qos0",
            v,
            "30 07  0003 612f62  6869",
            Packet::Publish(Publish {
                topic: s("a/b"),
                payload: b(b"hi"),
                ..Publish::default()
            }),
        ),
        // 3.1.1 §3.3.1 PUBLISH DUP=1 QoS 1 RETAIN=1 (0x3B), Packet Identifier 7.
        kat(
            "3.x §3.3 PUBLISH qos1 dup retain",
            v,
            "3b 09  0003 612f62  0007  6869",
            Packet::Publish(Publish {
                dup: true,
                qos: QoS::AtLeastOnce,
                retain: true,
                topic: s("a/b"),
                packet_id: Some(pid(7)),
                payload: b(b"hi"),
                ..Publish::default()
            }),
        ),
        // 3.1.1 §3.3 PUBLISH QoS 2, Packet Identifier 0x1234, zero-length payload (§3.3.3).
        kat(
            "3.x §3.3 PUBLISH qos2 empty payload",
            v,
            "34 07  0003 612f62  1234",
            Packet::Publish(Publish {
                qos: QoS::ExactlyOnce,
                topic: s("a/b"),
                packet_id: Some(pid(0x1234)),
                ..Publish::default()
            }),
        ),
        // 3.1.1 §3.4 PUBACK: Remaining Length 2, Packet Identifier.
        kat(
            "3.x §3.4 PUBACK",
            v,
            "40 02 0007",
            Packet::PubAck(ack(7, ReasonCode::SUCCESS)),
        ),
        // 3.1.1 §3.5 PUBREC.
        kat(
            "3.x §3.5 PUBREC",
            v,
            "50 02 0007",
            Packet::PubRec(ack(7, ReasonCode::SUCCESS)),
        ),
        // 3.1.1 §3.6 PUBREL: fixed header flags 0010 [MQTT-3.6.1-1].
        kat(
            "3.x §3.6 PUBREL",
            v,
            "62 02 0007",
            Packet::PubRel(ack(7, ReasonCode::SUCCESS)),
        ),
        // 3.1.1 §3.7 PUBCOMP.
        kat(
            "3.x §3.7 PUBCOMP",
            v,
            "70 02 0007",
            Packet::PubComp(ack(7, ReasonCode::SUCCESS)),
        ),
        // 3.1.1 §3.8 SUBSCRIBE: flags 0010 [MQTT-3.8.1-1]; (filter, requested QoS) pairs.
        kat(
            "3.x §3.8 SUBSCRIBE",
            v,
            "82 0c  000a  0003 612f2b 01  0001 23 02",
            Packet::Subscribe(Subscribe {
                packet_id: pid(10),
                filters: vec![
                    (s("a/+"), SubscriptionOptions::qos(QoS::AtLeastOnce)),
                    (s("#"), SubscriptionOptions::qos(QoS::ExactlyOnce)),
                ],
                properties: SubscribeProperties::default(),
            }),
        ),
        // 3.1.1 §3.9 SUBACK: return codes 0x01, 0x80 (Failure, §3.9.3), 0x00, 0x02.
        kat(
            "3.x §3.9 SUBACK with 0x80",
            v,
            "90 06  000a  01 80 00 02",
            Packet::SubAck(SubAck {
                packet_id: pid(10),
                reason_codes: vec![
                    ReasonCode::GRANTED_QOS_1,
                    ReasonCode::UNSPECIFIED_ERROR,
                    ReasonCode::GRANTED_QOS_0,
                    ReasonCode::GRANTED_QOS_2,
                ],
                properties: AckProperties::default(),
            }),
        ),
        // 3.1.1 §3.10 UNSUBSCRIBE: flags 0010 [MQTT-3.10.1-1]; filters without options.
        kat(
            "3.x §3.10 UNSUBSCRIBE",
            v,
            "a2 0a  000b  0003 612f2b  0001 23",
            Packet::Unsubscribe(Unsubscribe {
                packet_id: pid(11),
                filters: vec![s("a/+"), s("#")],
                properties: UnsubscribeProperties::default(),
            }),
        ),
        // 3.1.1 §3.11 UNSUBACK: Packet Identifier only, no payload.
        kat(
            "3.x §3.11 UNSUBACK",
            v,
            "b0 02 000b",
            Packet::UnsubAck(UnsubAck {
                packet_id: pid(11),
                reason_codes: vec![],
                properties: AckProperties::default(),
            }),
        ),
        // 3.1.1 §3.12 PINGREQ, §3.13 PINGRESP, §3.14 DISCONNECT: fixed header only.
        kat("3.x §3.12 PINGREQ", v, "c0 00", Packet::PingReq),
        kat("3.x §3.13 PINGRESP", v, "d0 00", Packet::PingResp),
        kat(
            "3.x §3.14 DISCONNECT",
            v,
            "e0 00",
            Packet::Disconnect(Disconnect::default()),
        ),
    ]
}

/// MQTT 5.0 (level 5).
fn v5() -> Vec<Kat> {
    let mut connect_props = ConnectProperties::default();
    connect_props.session_expiry_interval = Some(120);
    connect_props.receive_maximum = NonZeroU16::new(20);
    connect_props.maximum_packet_size = NonZeroU32::new(1024);
    connect_props.topic_alias_maximum = Some(10);
    connect_props.request_response_information = Some(true);
    connect_props.request_problem_information = Some(false);
    connect_props.authentication_method = Some(s("tok"));
    connect_props.authentication_data = Some(b(&[1, 2]));
    // Kept in the order received (§3.1.2.11.8): "b" before "a".
    connect_props.user_properties = vec![up("b", "1"), up("a", "2")];

    // Every will property (5.0 §3.1.3.2), set in another order than the one they are written
    // in: Will Delay Interval, then as §3.1.3.2.3 to §3.1.3.2.8 list them.
    let mut will_props = WillProperties::default();
    let message = &mut will_props.message;
    message.push_user_property("w", "x").unwrap();
    message
        .set_correlation_data(Some(b(&[0xab, 0xcd])))
        .unwrap();
    message.set_response_topic(Some(s("r/t"))).unwrap();
    message.set_content_type(Some(s("text"))).unwrap();
    message.message_expiry_interval = Some(60);
    message.payload_format_indicator = Some(PayloadFormat::Utf8);
    will_props.will_delay_interval = Some(5);

    let mut connack_props = ConnAckProperties::default();
    connack_props.session_expiry_interval = Some(300);
    connack_props.receive_maximum = NonZeroU16::new(10);
    connack_props.maximum_qos = Some(QoS::AtLeastOnce);
    connack_props.retain_available = Some(false);
    connack_props.maximum_packet_size = NonZeroU32::new(65536);
    connack_props.assigned_client_identifier = Some(s("abc"));
    connack_props.topic_alias_maximum = Some(5);
    connack_props.reason_string = Some(s("ok"));
    connack_props.wildcard_subscription_available = Some(true);
    connack_props.subscription_identifiers_available = Some(false);
    connack_props.shared_subscription_available = Some(true);
    connack_props.server_keep_alive = Some(30);
    connack_props.response_information = Some(s("resp"));
    connack_props.server_reference = Some(s("srv"));
    connack_props.authentication_method = Some(s("tok"));
    connack_props.authentication_data = Some(b(&[0xff]));
    connack_props.user_properties = vec![up("k", "v")];

    let mut publish_props = PublishProperties::default();
    publish_props.payload_format_indicator = Some(PayloadFormat::Utf8);
    publish_props.message_expiry_interval = Some(30);
    publish_props.topic_alias = NonZeroU16::new(1);
    publish_props.set_response_topic(Some(s("r/t"))).unwrap();
    publish_props
        .set_correlation_data(Some(b(&[1, 2])))
        .unwrap();
    // Subscription Identifier may appear several times on a PUBLISH (§3.3.2.3.8); 128 takes a
    // two-byte Variable Byte Integer.
    publish_props.set_subscription_identifiers(&[
        SubscriptionId::new(5).unwrap(),
        SubscriptionId::new(128).unwrap(),
    ]);
    publish_props.set_content_type(Some(s("text"))).unwrap();
    publish_props
        .set_user_properties(vec![up("b", "1"), up("a", "2")])
        .unwrap();

    let mut alias_only = PublishProperties::default();
    alias_only.topic_alias = NonZeroU16::new(1);

    let mut ack_reason = AckProperties::default();
    ack_reason.reason_string = Some(s("x"));
    let mut ack_user = AckProperties::default();
    ack_user.user_properties = vec![up("k", "v")];
    let mut suback_props = AckProperties::default();
    suback_props.reason_string = Some(s("ok"));

    let mut subscribe_props = SubscribeProperties::default();
    subscribe_props.subscription_identifier = SubscriptionId::new(42);
    subscribe_props.user_properties = vec![up("k", "v")];

    let mut unsubscribe_props = UnsubscribeProperties::default();
    unsubscribe_props.user_properties = vec![up("u", "v")];

    let mut disconnect_props = DisconnectProperties::default();
    disconnect_props.session_expiry_interval = Some(0);
    disconnect_props.reason_string = Some(s("bye"));
    disconnect_props.server_reference = Some(s("srv"));
    disconnect_props.user_properties = vec![up("k", "v")];

    let mut auth_props = AuthProperties::default();
    auth_props.authentication_method = Some(s("tok"));
    auth_props.authentication_data = Some(b(&[1, 2]));
    auth_props.reason_string = Some(s("go"));
    auth_props.user_properties = vec![up("k", "v")];

    vec![
        // 5.0 §3.1 CONNECT: level 5, flags 0xD6 = User Name, Password, Will QoS 2, Will, Clean
        // Start; Properties (§3.1.2.11) after Keep Alive; Will Properties (§3.1.3.2) before the
        // Will Topic.
        kat(
            "5.0 §3.1 CONNECT all properties, will, credentials",
            V5,
            "10 73  0004 4d515454  05  d6  003c
             2d  11 00000078  21 0014  27 00000400  22 000a  19 01  17 00  15 0003 746f6b
                 16 0002 0102  26 0001 62 0001 31  26 0001 61 0001 32
             0003 636964
             25  18 00000005  01 01  02 0000003c  03 0004 74657874  08 0003 722f74
                 09 0002 abcd  26 0001 77 0001 78
             0003 772f74  0003 627965  0001 75  0001 70",
            Packet::Connect(Box::new(Connect {
                protocol: V5,
                clean_start: true,
                bridge: false,
                keep_alive: 60,
                client_id: s("cid"),
                will: Some(Will {
                    topic: s("w/t"),
                    payload: b(b"bye"),
                    qos: QoS::ExactlyOnce,
                    retain: false,
                    properties: will_props,
                }),
                username: Some(s("u")),
                password: Some(b(b"p")),
                properties: connect_props,
            })),
        ),
        // 5.0 §3.1.2.9: a Password without a User Name is allowed in 5.0 (flags 0x42).
        kat(
            "5.0 §3.1 CONNECT password without user name",
            V5,
            "10 13  0004 4d515454  05  42  003c  00  0003 636964  0001 70",
            Packet::Connect(Box::new(Connect {
                password: Some(b(b"p")),
                ..Connect::new(V5, "cid")
            })),
        ),
        // 5.0 §3.2 CONNACK: Session Present, Success, every CONNACK property (§3.2.2.3).
        kat(
            "5.0 §3.2 CONNACK all properties",
            V5,
            "20 49  01  00
             46  11 0000012c  21 000a  24 01  25 00  27 00010000  12 0003 616263  22 0005
                 1f 0002 6f6b  28 01  29 00  2a 01  13 001e  1a 0004 72657370  1c 0003 737276
                 15 0003 746f6b  16 0001 ff  26 0001 6b 0001 76",
            Packet::ConnAck(Box::new(ConnAck {
                session_present: true,
                reason_code: ReasonCode::SUCCESS,
                properties: connack_props,
            })),
        ),
        // 5.0 §3.2.2.2 CONNACK reason code 0x87 Not authorized, empty properties.
        kat(
            "5.0 §3.2 CONNACK not authorized",
            V5,
            "20 03 00 87 00",
            Packet::ConnAck(Box::new(ConnAck {
                reason_code: ReasonCode::NOT_AUTHORIZED,
                ..ConnAck::default()
            })),
        ),
        // 5.0 §3.3 PUBLISH QoS 1 with every PUBLISH property (§3.3.2.3), two Subscription
        // Identifiers and two User Properties in order.
        kat(
            "5.0 §3.3 PUBLISH all properties",
            V5,
            "32 39  0003 612f62  0007
             2f  01 01  02 0000001e  23 0001  08 0003 722f74  09 0002 0102  0b 05  0b 8001
                 03 0004 74657874  26 0001 62 0001 31  26 0001 61 0001 32
             6869",
            Packet::Publish(Publish {
                qos: QoS::AtLeastOnce,
                topic: s("a/b"),
                packet_id: Some(pid(7)),
                payload: b(b"hi"),
                properties: publish_props,
                ..Publish::default()
            }),
        ),
        // 5.0 §3.3 PUBLISH QoS 0, Property Length 0.
        kat(
            "5.0 §3.3 PUBLISH qos0 no properties",
            V5,
            "30 08  0003 612f62  00  6869",
            Packet::Publish(Publish {
                topic: s("a/b"),
                payload: b(b"hi"),
                ..Publish::default()
            }),
        ),
        // 5.0 §3.3.2.3.4: a zero-length Topic Name with a Topic Alias [MQTT-3.3.2-12].
        kat(
            "5.0 §3.3 PUBLISH empty topic with alias",
            V5,
            "30 08  0000  03 23 0001  6869",
            Packet::Publish(Publish {
                payload: b(b"hi"),
                properties: alias_only,
                ..Publish::default()
            }),
        ),
        // 5.0 §3.4.2.1 PUBACK, Remaining Length 2: Reason Code 0x00 and no properties.
        kat(
            "5.0 §3.4 PUBACK rl=2",
            V5,
            "40 02 0007",
            Packet::PubAck(ack(7, ReasonCode::SUCCESS)),
        ),
        // 5.0 §3.4.2.1 PUBACK, Remaining Length 3: Reason Code, no Property Length.
        kat(
            "5.0 §3.4 PUBACK rl=3",
            V5,
            "40 03 0007 10",
            Packet::PubAck(ack(7, ReasonCode::NO_MATCHING_SUBSCRIBERS)),
        ),
        // 5.0 §3.4.2.2 PUBACK with a Reason String.
        kat(
            "5.0 §3.4 PUBACK reason string",
            V5,
            "40 08 0007 80  04 1f 0001 78",
            Packet::PubAck(PubAck {
                packet_id: pid(7),
                reason_code: ReasonCode::UNSPECIFIED_ERROR,
                properties: ack_reason,
            }),
        ),
        // 5.0 §3.4.2.1: Success must be written when properties follow.
        kat(
            "5.0 §3.4 PUBACK success with user property",
            V5,
            "40 0b 0007 00  07 26 0001 6b 0001 76",
            Packet::PubAck(PubAck {
                packet_id: pid(7),
                reason_code: ReasonCode::SUCCESS,
                properties: ack_user,
            }),
        ),
        // 5.0 §3.5 PUBREC, 0x10 No matching subscribers.
        kat(
            "5.0 §3.5 PUBREC rl=3",
            V5,
            "50 03 0007 10",
            Packet::PubRec(ack(7, ReasonCode::NO_MATCHING_SUBSCRIBERS)),
        ),
        kat(
            "5.0 §3.5 PUBREC rl=2",
            V5,
            "50 02 0007",
            Packet::PubRec(ack(7, ReasonCode::SUCCESS)),
        ),
        // 5.0 §3.6 PUBREL, 0x92 Packet Identifier not found.
        kat(
            "5.0 §3.6 PUBREL rl=3",
            V5,
            "62 03 0007 92",
            Packet::PubRel(ack(7, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND)),
        ),
        kat(
            "5.0 §3.6 PUBREL rl=2",
            V5,
            "62 02 0007",
            Packet::PubRel(ack(7, ReasonCode::SUCCESS)),
        ),
        // 5.0 §3.7 PUBCOMP.
        kat(
            "5.0 §3.7 PUBCOMP rl=3",
            V5,
            "70 03 0007 92",
            Packet::PubComp(ack(7, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND)),
        ),
        kat(
            "5.0 §3.7 PUBCOMP rl=2",
            V5,
            "70 02 0007",
            Packet::PubComp(ack(7, ReasonCode::SUCCESS)),
        ),
        // 5.0 §3.8 SUBSCRIBE: Subscription Identifier 42 and a User Property; options (§3.8.3.1)
        // 0x1D = QoS 1, No Local, Retain As Published, Retain Handling 1; 0x22 = QoS 2,
        // Retain Handling 2.
        kat(
            "5.0 §3.8 SUBSCRIBE options and properties",
            V5,
            "82 16  000a  09 0b 2a 26 0001 6b 0001 76  0003 612f2b 1d  0001 23 22",
            Packet::Subscribe(Subscribe {
                packet_id: pid(10),
                filters: vec![
                    (
                        s("a/+"),
                        SubscriptionOptions {
                            qos: QoS::AtLeastOnce,
                            no_local: true,
                            retain_as_published: true,
                            retain_handling: RetainHandling::SendIfNew,
                        },
                    ),
                    (
                        s("#"),
                        SubscriptionOptions {
                            qos: QoS::ExactlyOnce,
                            no_local: false,
                            retain_as_published: false,
                            retain_handling: RetainHandling::DoNotSend,
                        },
                    ),
                ],
                properties: subscribe_props,
            }),
        ),
        // 5.0 §3.9 SUBACK with a Reason String and reason codes 0x01, 0x02, 0xA1, 0x9E.
        kat(
            "5.0 §3.9 SUBACK",
            V5,
            "90 0c  000a  05 1f 0002 6f6b  01 02 a1 9e",
            Packet::SubAck(SubAck {
                packet_id: pid(10),
                reason_codes: vec![
                    ReasonCode::GRANTED_QOS_1,
                    ReasonCode::GRANTED_QOS_2,
                    ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,
                    ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED,
                ],
                properties: suback_props,
            }),
        ),
        // 5.0 §3.10 UNSUBSCRIBE with a User Property.
        kat(
            "5.0 §3.10 UNSUBSCRIBE",
            V5,
            "a2 12  000b  07 26 0001 75 0001 76  0003 612f2b  0001 23",
            Packet::Unsubscribe(Unsubscribe {
                packet_id: pid(11),
                filters: vec![s("a/+"), s("#")],
                properties: unsubscribe_props,
            }),
        ),
        // 5.0 §3.11 UNSUBACK: one reason code per filter, 0x00 and 0x11.
        kat(
            "5.0 §3.11 UNSUBACK",
            V5,
            "b0 05  000b  00  00 11",
            Packet::UnsubAck(UnsubAck {
                packet_id: pid(11),
                reason_codes: vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED],
                properties: AckProperties::default(),
            }),
        ),
        // 5.0 §3.12 PINGREQ, §3.13 PINGRESP.
        kat("5.0 §3.12 PINGREQ", V5, "c0 00", Packet::PingReq),
        kat("5.0 §3.13 PINGRESP", V5, "d0 00", Packet::PingResp),
        // 5.0 §3.14.2.1 DISCONNECT, Remaining Length 0: Normal disconnection.
        kat(
            "5.0 §3.14 DISCONNECT rl=0",
            V5,
            "e0 00",
            Packet::Disconnect(Disconnect::default()),
        ),
        // 5.0 §3.14.2.1 DISCONNECT, Remaining Length 1: 0x04 Disconnect with Will Message.
        kat(
            "5.0 §3.14 DISCONNECT rl=1",
            V5,
            "e0 01 04",
            Packet::Disconnect(Disconnect {
                reason_code: ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
                properties: DisconnectProperties::default(),
            }),
        ),
        // 5.0 §3.14.2.2 DISCONNECT 0x9C Use another server, with every DISCONNECT property.
        kat(
            "5.0 §3.14 DISCONNECT properties",
            V5,
            "e0 1a  9c  18 11 00000000  1f 0003 627965  1c 0003 737276  26 0001 6b 0001 76",
            Packet::Disconnect(Disconnect {
                reason_code: ReasonCode::USE_ANOTHER_SERVER,
                properties: disconnect_props,
            }),
        ),
        // 5.0 §3.15.2.1 AUTH, Remaining Length 0: Success.
        kat(
            "5.0 §3.15 AUTH rl=0",
            V5,
            "f0 00",
            Packet::Auth(Box::default()),
        ),
        // 5.0 §3.15 AUTH 0x18 Continue authentication with every AUTH property (§3.15.2.2).
        kat(
            "5.0 §3.15 AUTH properties",
            V5,
            "f0 19  18  17 15 0003 746f6b  16 0002 0102  1f 0002 676f  26 0001 6b 0001 76",
            Packet::Auth(Box::new(Auth {
                reason_code: ReasonCode::CONTINUE_AUTHENTICATION,
                properties: auth_props,
            })),
        ),
    ]
}
