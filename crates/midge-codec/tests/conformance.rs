//! Conformance tests at the codec layer: one test per normative statement (or small group of
//! statements) that the packet format alone decides, under MQTT 3.1.1 and 5.0. Each test carries
//! the tags of the statements it checks, `[MQTT-5:x]` or `[MQTT-3.1.1:x]`, which
//! `docs/gen_conformance.py` collects into `docs/conformance.md`.

mod common;

use bytes::Bytes;
use common::*;
use midge_codec::{
    Auth, ByteStr, ConnAck, Connect, DecodeError as E, Disconnect, EncodeError, Packet,
    ProtocolVersion, PubAck, Publish, QoS, ReasonCode as R, SubAck, Subscribe, SubscriptionOptions,
    UnsubAck, Unsubscribe, Will,
};

/// A packet from its first byte and its body in hex; the Remaining Length is computed.
fn packet(first: u8, body: &str) -> Vec<u8> {
    let body = hex(body);
    assert!(body.len() < 128, "one-byte Remaining Length only");
    let mut out = vec![first, body.len() as u8];
    out.extend_from_slice(&body);
    out
}

fn connect(version: ProtocolVersion) -> Connect {
    Connect::new(version, "cid")
}

fn will() -> Will {
    Will {
        topic: s("w/t"),
        payload: b(b"x"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    }
}

// ------------------------------------------------------------------------ strings (§1.5)

// Conformance: [MQTT-5:1.5.4-3] [MQTT-3.1.1:1.5.3-3]
#[test]
fn a_byte_order_mark_inside_a_string_is_kept() {
    for version in [V3_1_1, V5] {
        let topic = "\u{FEFF}a/\u{FEFF}";
        let publish = Packet::Publish(Publish {
            topic: ByteStr::from(topic.to_owned()),
            payload: b(b"p"),
            ..Publish::default()
        });
        let bytes = encode(&publish, version).unwrap();
        assert_eq!(&bytes[4..7], &[0xEF, 0xBB, 0xBF], "{}", to_hex(&bytes));
        let Packet::Publish(got) = decode_whole(&bytes, version) else {
            panic!()
        };
        assert_eq!(got.topic.as_str(), topic, "{version:?}");
        // In a CONNECT too: the client identifier keeps its leading U+FEFF.
        let c = Packet::Connect(Box::new(Connect::new(version, "\u{FEFF}id")));
        let Packet::Connect(got) = decode_whole(&encode(&c, version).unwrap(), version) else {
            panic!()
        };
        assert_eq!(got.client_id.as_str(), "\u{FEFF}id");
    }
}

// Conformance: [MQTT-5:3.1.3-11] [MQTT-3.1.1:3.1.3-10] [MQTT-5:3.1.3-12] [MQTT-3.1.1:3.1.3-11]
// Conformance: [MQTT-5:3.3.2-13] [MQTT-5:3.3.2-19] [MQTT-5:3.8.3-1] [MQTT-5:3.10.3-1]
// Conformance: [MQTT-3.1.1:3.10.3-1]
#[test]
fn string_fields_must_be_utf8() {
    let bad = |first, body: &str, version| {
        assert_decode_err(
            &packet(first, body),
            version,
            E::InvalidUtf8,
            R::MALFORMED_PACKET,
        )
    };
    // Will Topic (flags: will, clean).
    bad(
        0x10,
        "0004 4d515454 04 06 003c 0003 636964 0002 c080 0001 78",
        V3_1_1,
    );
    bad(
        0x10,
        "0004 4d515454 05 06 003c 00 0003 636964 00 0002 c080 0001 78",
        V5,
    );
    // User Name (flags: user name, clean).
    bad(
        0x10,
        "0004 4d515454 04 82 003c 0003 636964 0002 c080",
        V3_1_1,
    );
    bad(
        0x10,
        "0004 4d515454 05 82 003c 00 0003 636964 0002 c080",
        V5,
    );
    // Content Type (0x03) and Response Topic (0x08) of a PUBLISH.
    bad(0x30, "0003 612f62 05 03 0002 c080 78", V5);
    bad(0x30, "0003 612f62 05 08 0002 c080 78", V5);
    // Topic filters of SUBSCRIBE and UNSUBSCRIBE.
    bad(0x82, "000a 00 0002 c080 00", V5);
    bad(0xa2, "000b 00 0002 c080", V5);
    bad(0xa2, "000b 0002 c080", V3_1_1);
}

// ------------------------------------------------------------ packet identifiers (§2.2.1)

// Conformance: [MQTT-5:2.2.1-2] [MQTT-3.1.1:2.3.1-5]
#[test]
fn a_qos0_publish_has_no_packet_identifier() {
    for version in [V3_1_1, V5] {
        let mut p = Publish {
            topic: s("a/b"),
            payload: b(b"xy"),
            ..Publish::default()
        };
        p.packet_id = Some(pid(7));
        assert_encode_err(
            &Packet::Publish(p.clone()),
            version,
            EncodeError::PacketIdMismatch,
        );
        p.packet_id = None;
        let bytes = encode(&Packet::Publish(p), version).unwrap();
        // Topic, (properties,) payload: nothing between them that could be an identifier.
        let expected = if version.is_v5() {
            "30 08 0003 612f62 00 7879"
        } else {
            "30 07 0003 612f62 7879"
        };
        assert_eq!(to_hex(&bytes), to_hex(&hex(expected)));
    }
    // Received, the two bytes after a QoS 0 topic are payload, not an identifier.
    let Packet::Publish(p) = decode_whole(&hex("30 07 0003 612f62 0007"), V3_1_1) else {
        panic!()
    };
    assert_eq!((p.packet_id, &p.payload[..]), (None, &[0u8, 7][..]));
}

// ---------------------------------------------------------------- properties (5.0 §2.2.2)

// Conformance: [MQTT-5:2.2.2-1]
#[test]
fn packets_without_properties_carry_a_property_length_of_zero() {
    let cases: Vec<(Packet, &str)> = vec![
        (Packet::ConnAck(Box::default()), "20 03 00 00 00"),
        (
            Packet::Publish(Publish {
                topic: s("t"),
                payload: b(b"x"),
                ..Publish::default()
            }),
            "30 05 0001 74 00 78",
        ),
        (
            Packet::Subscribe(Subscribe {
                packet_id: pid(1),
                filters: vec![(s("t"), SubscriptionOptions::default())],
                properties: Default::default(),
            }),
            "82 07 0001 00 0001 74 00",
        ),
        (
            Packet::SubAck(SubAck {
                packet_id: pid(1),
                reason_codes: vec![R::GRANTED_QOS_0],
                properties: Default::default(),
            }),
            "90 04 0001 00 00",
        ),
        (
            Packet::Unsubscribe(Unsubscribe {
                packet_id: pid(1),
                filters: vec![s("t")],
                properties: Default::default(),
            }),
            "a2 06 0001 00 0001 74",
        ),
        (
            Packet::UnsubAck(UnsubAck {
                packet_id: pid(1),
                reason_codes: vec![R::SUCCESS],
                properties: Default::default(),
            }),
            "b0 04 0001 00 00",
        ),
    ];
    for (p, expected) in cases {
        assert_eq!(to_hex(&encode(&p, V5).unwrap()), to_hex(&hex(expected)));
    }
    // CONNECT: the byte after Keep Alive is the Property Length, and the Will Properties
    // have one of their own.
    let mut c = connect(V5);
    c.will = Some(will());
    let bytes = encode(&Packet::Connect(Box::new(c)), V5).unwrap();
    assert_eq!(bytes[12], 0, "{}", to_hex(&bytes));
    assert_eq!(&bytes[13..19], &hex("0003 636964 00")[..]);
}

// -------------------------------------------------------------------- CONNECT (§3.1.2)

// Conformance: [MQTT-5:3.1.2-12] [MQTT-5:3.1.2-13]
#[test]
fn will_qos_3_and_will_retain_without_a_will_are_malformed_in_v5() {
    // Will QoS 3 with the Will Flag.
    assert_decode_err(
        &packet(
            0x10,
            "0004 4d515454 05 1e 003c 00 0003 636964 00 0003 772f74 0001 78",
        ),
        V5,
        E::InvalidWillFlags,
        R::MALFORMED_PACKET,
    );
    // Will Retain without the Will Flag.
    assert_decode_err(
        &packet(0x10, "0004 4d515454 05 22 003c 00 0003 636964"),
        V5,
        E::InvalidWillFlags,
        R::MALFORMED_PACKET,
    );
}

// Conformance: [MQTT-5:3.1.2-9] [MQTT-3.1.1:3.1.2-9] [MQTT-5:3.1.2-11] [MQTT-3.1.1:3.1.2-11]
// Conformance: [MQTT-5:3.1.2-13] [MQTT-3.1.1:3.1.2-13] [MQTT-3.1.1:3.1.2-15]
#[test]
fn the_will_flag_decides_whether_will_fields_are_present() {
    for version in [V3_1_1, V5] {
        let v5 = version.is_v5();
        let props = if v5 { "00" } else { "" };
        let level = if v5 { "05" } else { "04" };
        // Sent: no will, so Will Flag, Will QoS and Will Retain are 0 and nothing follows the
        // client identifier.
        let bytes = encode(&Packet::Connect(Box::new(connect(version))), version).unwrap();
        assert_eq!(bytes[9] & 0x3c, 0, "{}", to_hex(&bytes));
        assert!(to_hex(&bytes).ends_with("0003636964"));
        // With a will the flag is set and the fields follow.
        let mut c = connect(version);
        c.will = Some(Will {
            qos: QoS::ExactlyOnce,
            retain: true,
            ..will()
        });
        let bytes = encode(&Packet::Connect(Box::new(c.clone())), version).unwrap();
        assert_eq!(bytes[9] & 0x3c, 0x04 | 0x10 | 0x20, "{}", to_hex(&bytes));
        assert_eq!(decode_whole(&bytes, version), Packet::Connect(Box::new(c)));
        // Received: the Will Flag without the will fields is malformed...
        assert_decode_err(
            &packet(
                0x10,
                &format!("0004 4d515454 {level} 06 003c {props} 0003 636964"),
            ),
            version,
            E::LengthOutOfBounds,
            R::MALFORMED_PACKET,
        );
        // ...and will fields without the flag are bytes that do not belong.
        assert_decode_err(
            &packet(
                0x10,
                &format!("0004 4d515454 {level} 02 003c {props} 0003 636964 0003 772f74 0001 78"),
            ),
            version,
            E::TrailingBytes,
            R::MALFORMED_PACKET,
        );
    }
}

// Conformance: [MQTT-5:3.1.2-16] [MQTT-5:3.1.2-17] [MQTT-5:3.1.2-18] [MQTT-5:3.1.2-19]
// Conformance: [MQTT-3.1.1:3.1.2-18] [MQTT-3.1.1:3.1.2-19] [MQTT-3.1.1:3.1.2-20]
// Conformance: [MQTT-3.1.1:3.1.2-21]
#[test]
fn user_name_and_password_flags_match_the_payload() {
    for version in [V3_1_1, V5] {
        let combos: &[(bool, bool)] = if version.is_v5() {
            &[(false, false), (true, false), (true, true), (false, true)]
        } else {
            // 3.1.1 has no password without a user name [MQTT-3.1.1:3.1.2-22].
            &[(false, false), (true, false), (true, true)]
        };
        for &(user, pass) in combos {
            let mut c = connect(version);
            c.username = user.then(|| s("u"));
            c.password = pass.then(|| Bytes::from_static(b"p"));
            let bytes = encode(&Packet::Connect(Box::new(c.clone())), version).unwrap();
            assert_eq!(bytes[9] & 0x80 != 0, user, "{}", to_hex(&bytes));
            assert_eq!(bytes[9] & 0x40 != 0, pass, "{}", to_hex(&bytes));
            let tail = format!(
                "0003636964{}{}",
                if user { "000175" } else { "" },
                if pass { "000170" } else { "" }
            );
            assert!(to_hex(&bytes).ends_with(&tail), "{}", to_hex(&bytes));
            assert_eq!(decode_whole(&bytes, version), Packet::Connect(Box::new(c)));
        }
        let v5 = version.is_v5();
        let props = if v5 { "00" } else { "" };
        let level = if v5 { "05" } else { "04" };
        // A flag without its field, and a field without its flag, are malformed.
        for flags in ["82", "c2"] {
            assert_decode_err(
                &packet(
                    0x10,
                    &format!("0004 4d515454 {level} {flags} 003c {props} 0003 636964"),
                ),
                version,
                E::LengthOutOfBounds,
                R::MALFORMED_PACKET,
            );
        }
        assert_decode_err(
            &packet(
                0x10,
                &format!("0004 4d515454 {level} 02 003c {props} 0003 636964 0001 75"),
            ),
            version,
            E::TrailingBytes,
            R::MALFORMED_PACKET,
        );
        assert_decode_err(
            &packet(
                0x10,
                &format!("0004 4d515454 {level} 82 003c {props} 0003 636964 0001 75 0001 70"),
            ),
            version,
            E::TrailingBytes,
            R::MALFORMED_PACKET,
        );
    }
}

// ------------------------------------------------------------------ reason codes (5.0 §2.4)

// Conformance: [MQTT-5:3.2.2-8] [MQTT-5:3.4.2-1] [MQTT-5:3.5.2-1] [MQTT-5:3.6.2-1]
// Conformance: [MQTT-5:3.7.2-1] [MQTT-5:3.9.3-2] [MQTT-5:3.11.3-2] [MQTT-5:3.14.2-1]
// Conformance: [MQTT-5:3.15.2-1] [MQTT-3.1.1:3.9.3-2]
#[test]
fn only_the_reason_codes_of_each_packet_type_can_be_sent() {
    let ack = |code: u8| PubAck {
        reason_code: R(code),
        ..PubAck::new(pid(1))
    };
    let suback = |code: u8| SubAck {
        packet_id: pid(1),
        reason_codes: vec![R(code)],
        properties: Default::default(),
    };
    // (packet with a code its type does not define, the same packet with a defined code)
    let cases: Vec<(Packet, Packet)> = vec![
        (
            Packet::ConnAck(Box::new(ConnAck {
                reason_code: R::SERVER_SHUTTING_DOWN,
                ..ConnAck::default()
            })),
            Packet::ConnAck(Box::new(ConnAck {
                reason_code: R::SERVER_BUSY,
                ..ConnAck::default()
            })),
        ),
        (Packet::PubAck(ack(0x92)), Packet::PubAck(ack(0x10))),
        (Packet::PubRec(ack(0x01)), Packet::PubRec(ack(0x97))),
        (Packet::PubRel(ack(0x10)), Packet::PubRel(ack(0x92))),
        (Packet::PubComp(ack(0x10)), Packet::PubComp(ack(0x92))),
        (Packet::SubAck(suback(0x03)), Packet::SubAck(suback(0xA2))),
        (
            Packet::UnsubAck(UnsubAck {
                packet_id: pid(1),
                reason_codes: vec![R(0x01)],
                properties: Default::default(),
            }),
            Packet::UnsubAck(UnsubAck {
                packet_id: pid(1),
                reason_codes: vec![R::NO_SUBSCRIPTION_EXISTED],
                properties: Default::default(),
            }),
        ),
        (
            Packet::Disconnect(Disconnect {
                reason_code: R(0x01),
                ..Disconnect::default()
            }),
            Packet::Disconnect(Disconnect {
                reason_code: R::DISCONNECT_WITH_WILL_MESSAGE,
                ..Disconnect::default()
            }),
        ),
        (
            Packet::Auth(Box::new(Auth {
                reason_code: R(0x04),
                ..Auth::default()
            })),
            Packet::Auth(Box::new(Auth {
                reason_code: R::CONTINUE_AUTHENTICATION,
                ..Auth::default()
            })),
        ),
    ];
    for (wrong, right) in cases {
        let code = match &wrong {
            Packet::ConnAck(c) => c.reason_code,
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                a.reason_code
            }
            Packet::SubAck(a) => a.reason_codes[0],
            Packet::UnsubAck(a) => a.reason_codes[0],
            Packet::Disconnect(d) => d.reason_code,
            Packet::Auth(a) => a.reason_code,
            _ => unreachable!(),
        };
        assert_encode_err(&wrong, V5, EncodeError::InvalidReasonCode(code.0));
        let bytes = encode(&right, V5).unwrap();
        assert_eq!(decode_whole(&bytes, V5), right);
    }
    // 3.1.1 SUBACK: 0x00, 0x01, 0x02 and 0x80 only.
    assert_encode_err(
        &Packet::SubAck(suback(0x87)),
        V3_1_1,
        EncodeError::InvalidReasonCode(0x87),
    );
    for code in [0x00, 0x01, 0x02, 0x80] {
        let bytes = encode(&Packet::SubAck(suback(code)), V3_1_1).unwrap();
        assert_eq!(decode_whole(&bytes, V3_1_1), Packet::SubAck(suback(code)));
    }
}
