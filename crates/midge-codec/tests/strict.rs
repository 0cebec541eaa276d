//! Strict decoding: one test per violation, each asserting the exact `DecodeError` and the
//! 5.0 reason code it converts into (5.0 §4.13: the code sent in DISCONNECT or CONNACK before
//! closing).

mod common;

use common::*;
use midge_codec::{DecodeError as E, Packet, ProtocolVersion, ReasonCode as R};

const MALFORMED: R = R::MALFORMED_PACKET;
const PROTOCOL: R = R::PROTOCOL_ERROR;

fn err(bytes: &str, version: ProtocolVersion, expected: E, reason: R) {
    assert_decode_err(&hex(bytes), version, expected, reason);
}

/// Runs `err` under each version.
fn err_all(bytes: &str, versions: &[ProtocolVersion], expected: E, reason: R) {
    for &v in versions {
        err(bytes, v, expected, reason);
    }
}

const ALL: &[ProtocolVersion] = &[V3_1, V3_1_1, V5];
const V3X: &[ProtocolVersion] = &[V3_1, V3_1_1];

// ---------------------------------------------------------------- fixed header (§2.1, §1.5.5)

/// 5.0 §1.5.5 [MQTT-1.5.5-1]: at most four bytes. A fifth continuation byte is malformed.
// Conformance: [MQTT-5:1.5.5-1]
#[test]
fn remaining_length_over_four_bytes_is_malformed() {
    err_all(
        "30 ff ff ff ff 01",
        ALL,
        E::MalformedVariableInteger,
        MALFORMED,
    );
    // Four bytes that all say "more follows" are already known bad.
    err_all(
        "30 80 80 80 80",
        ALL,
        E::MalformedVariableInteger,
        MALFORMED,
    );
}

/// 5.0 §1.5.5 [MQTT-1.5.5-1]: "the minimum number of bytes": 0 sent as 0x80 0x00 is malformed.
// Conformance: [MQTT-5:1.5.5-1]
#[test]
fn non_minimal_remaining_length_is_malformed() {
    err_all("c0 80 00", ALL, E::MalformedVariableInteger, MALFORMED);
    err_all("30 85 80 00", ALL, E::MalformedVariableInteger, MALFORMED);
}

/// The same rule for the Variable Byte Integers inside a packet: a Property Length (5.0
/// §2.2.2.1) and a Subscription Identifier (§3.8.2.1.2).
// Conformance: [MQTT-5:1.5.5-1]
#[test]
fn non_minimal_property_length_and_subscription_id_are_malformed() {
    err(
        "40 05 0007 00 80 00",
        V5,
        E::MalformedVariableInteger,
        MALFORMED,
    );
    err(
        "82 0a 000a 03 0b 81 00 0001 23 00",
        V5,
        E::MalformedVariableInteger,
        MALFORMED,
    );
}

/// 5.0 §2.1.2 Table 2-1: type 0 is reserved (3.1.1 §2.2.1: "Reserved, forbidden").
#[test]
fn packet_type_zero_is_reserved() {
    err_all("00 00", ALL, E::ReservedPacketType(0), MALFORMED);
}

/// 5.0 §2.1.3 Table 2-2 [MQTT-2.1.3-1] (3.1.1 [MQTT-2.2.2-1], [MQTT-2.2.2-2]): every packet type
/// but PUBLISH has fixed flags; any other value is malformed.
// Conformance: [MQTT-5:2.1.3-1] [MQTT-3.1.1:2.2.2-1]
#[test]
fn wrong_fixed_header_flags_are_malformed_for_every_packet_type() {
    // (first byte, versions) with one flag bit wrong for each type.
    let cases: &[(u8, &[ProtocolVersion])] = &[
        (0x11, ALL), // CONNECT 0000
        (0x18, ALL),
        (0x21, ALL), // CONNACK 0000
        (0x41, ALL), // PUBACK 0000
        (0x52, ALL), // PUBREC 0000
        (0x60, ALL), // PUBREL 0010
        (0x61, ALL),
        (0x63, ALL),
        (0x74, ALL), // PUBCOMP 0000
        (0x80, ALL), // SUBSCRIBE 0010
        (0x83, ALL),
        (0x91, ALL), // SUBACK 0000
        (0xa0, ALL), // UNSUBSCRIBE 0010
        (0xa6, ALL),
        (0xb8, ALL),   // UNSUBACK 0000
        (0xc1, ALL),   // PINGREQ 0000
        (0xd2, ALL),   // PINGRESP 0000
        (0xe4, ALL),   // DISCONNECT 0000
        (0xf8, &[V5]), // AUTH 0000
    ];
    for &(first, versions) in cases {
        for &v in versions {
            assert_decode_err(
                &[first, 0x00],
                v,
                E::InvalidFixedHeaderFlags(first),
                MALFORMED,
            );
        }
    }
}

/// MQTT 3.1 §2.1 let clients set DUP on a re-sent PUBREL, SUBSCRIBE or UNSUBSCRIBE (flags
/// 1010); 3.1.1 [MQTT-2.2.2-2] and 5.0 [MQTT-2.1.3-1] require exactly 0010.
// Conformance: [MQTT-5:2.1.3-1] [MQTT-3.1.1:2.2.2-1]
#[test]
fn dup_on_pubrel_subscribe_unsubscribe_is_accepted_only_in_v31() {
    let pubrel = hex("6a 02 0007");
    assert_eq!(
        decode(&pubrel, V3_1),
        Ok(Some(Packet::PubRel(midge_codec::PubAck::new(pid(7)))))
    );
    for v in [V3_1_1, V5] {
        for first in [0x6a, 0x8a, 0xaa] {
            assert_decode_err(
                &[first, 0x00],
                v,
                E::InvalidFixedHeaderFlags(first),
                MALFORMED,
            );
        }
    }
}

// ---------------------------------------------------------------------------------- PUBLISH

/// 5.0 §3.3.1.2 [MQTT-3.3.1-4]: both QoS bits set is a Malformed Packet.
// Conformance: [MQTT-5:3.3.1-4]
// Conformance: [MQTT-3.1.1:3.3.1-4]
#[test]
fn publish_qos3_is_malformed() {
    err_all("36 07 0003 612f62 0007", ALL, E::InvalidQoS, MALFORMED);
    // Refused from the first byte, before the rest arrives.
    err_all("3e", ALL, E::InvalidQoS, MALFORMED);
}

/// 5.0 §3.3.1.1 [MQTT-3.3.1-2]: DUP must be 0 on QoS 0.
// Conformance: [MQTT-5:3.3.1-2] [MQTT-3.1.1:3.3.1-2]
#[test]
fn publish_dup_on_qos0_is_rejected() {
    err_all("38 05 0003 612f62", ALL, E::DupOnQoS0, PROTOCOL);
}

/// 5.0 [MQTT-2.2.1-3] (3.1.1 [MQTT-2.3.1-1]): packet identifiers are non-zero.
// Conformance: [MQTT-3.1.1:2.3.1-1]
#[test]
fn zero_packet_identifier_is_rejected() {
    let cases: &[(&str, &[ProtocolVersion])] = &[
        ("32 07 0003 612f62 0000", V3X),      // PUBLISH QoS 1
        ("34 08 0003 612f62 0000 00", &[V5]), // PUBLISH QoS 2
        ("40 02 0000", ALL),                  // PUBACK
        ("50 02 0000", ALL),                  // PUBREC
        ("62 02 0000", ALL),                  // PUBREL
        ("70 02 0000", ALL),                  // PUBCOMP
        ("82 08 0000 0003 612f62 00", V3X),   // SUBSCRIBE
        ("82 09 0000 00 0003 612f62 00", &[V5]),
        ("90 03 0000 00", V3X),          // SUBACK
        ("a2 07 0000 0003 612f62", V3X), // UNSUBSCRIBE
        ("a2 08 0000 00 0003 612f62", &[V5]),
        ("b0 02 0000", ALL), // UNSUBACK
    ];
    for &(bytes, versions) in cases {
        err_all(bytes, versions, E::ZeroPacketId, PROTOCOL);
    }
}

/// 5.0 §3.3.2.1 [MQTT-3.3.2-2]: a Topic Name has no wildcard characters.
// Conformance: [MQTT-5:3.3.2-2] [MQTT-3.1.1:3.3.2-2] [MQTT-5:4.7.0-1] [MQTT-3.1.1:4.7.1-1]
#[test]
fn publish_topic_with_wildcard_is_rejected() {
    err_all(
        "30 05 0003 612f2b",
        V3X,
        E::WildcardInTopicName,
        R::TOPIC_NAME_INVALID,
    );
    err_all(
        "30 05 0003 612f23",
        V3X,
        E::WildcardInTopicName,
        R::TOPIC_NAME_INVALID,
    );
    err(
        "30 06 0003 2b2f62 00",
        V5,
        E::WildcardInTopicName,
        R::TOPIC_NAME_INVALID,
    );
}

/// 5.0 [MQTT-4.7.3-1] (3.1.1 [MQTT-4.7.3-1]): topics are at least one character long; 5.0
/// §3.3.2.3.4 allows an empty Topic Name only with a Topic Alias (see the KAT vectors).
// Conformance: [MQTT-5:4.7.3-1] [MQTT-3.1.1:4.7.3-1]
#[test]
fn publish_empty_topic_without_alias_is_rejected() {
    err_all("30 02 0000", V3X, E::EmptyTopic, PROTOCOL);
    err("30 03 0000 00", V5, E::EmptyTopic, PROTOCOL);
    // Other properties do not stand in for the alias.
    err("30 05 0000 02 0101", V5, E::EmptyTopic, PROTOCOL);
}

// ------------------------------------------------------------------------- strings (§1.5.4)

/// 5.0 §1.5.4 [MQTT-1.5.4-1] (3.1.1 [MQTT-1.5.3-1]): ill-formed UTF-8, here the overlong
/// encoding C0 80 and the UTF-16 surrogate ED A0 80 (U+D800), is malformed.
// Conformance: [MQTT-5:1.5.4-1] [MQTT-5:1.5.7-1] [MQTT-5:3.1.3-4] [MQTT-3.1.1:3.1.3-4] [MQTT-5:3.3.2-1] [MQTT-3.1.1:3.3.2-1] [MQTT-3.1.1:3.8.3-1]
// Conformance: [MQTT-3.1.1:1.5.3-1]
#[test]
fn ill_formed_utf8_is_malformed() {
    // Topic name.
    err_all("30 04 0002 c080", V3X, E::InvalidUtf8, MALFORMED);
    err_all("30 05 0003 eda080", V3X, E::InvalidUtf8, MALFORMED);
    err("30 06 0003 eda080 00", V5, E::InvalidUtf8, MALFORMED);
    // Client identifier.
    err(
        "10 0e 0004 4d515454 04 02 003c 0002 c080",
        V3_1_1,
        E::InvalidUtf8,
        MALFORMED,
    );
    err(
        "10 10 0004 4d515454 05 02 003c 00 0003 eda080",
        V5,
        E::InvalidUtf8,
        MALFORMED,
    );
    // User property name and value.
    err(
        "40 0b 0007 00 07 26 0002 c080 0000",
        V5,
        E::InvalidUtf8,
        MALFORMED,
    );
    err(
        "40 0d 0007 00 09 26 0001 6b 0003 eda080",
        V5,
        E::InvalidUtf8,
        MALFORMED,
    );
    // Topic filter.
    err("82 07 000a 0002 c080 00", V3_1_1, E::InvalidUtf8, MALFORMED);
}

/// 5.0 §1.5.4 [MQTT-1.5.4-2] (3.1.1 [MQTT-1.5.3-2]): U+0000 in a string is malformed.
// Conformance: [MQTT-5:1.5.4-2] [MQTT-5:4.7.3-2] [MQTT-3.1.1:4.7.3-2]
// Conformance: [MQTT-3.1.1:1.5.3-2]
#[test]
fn null_character_in_strings_is_malformed() {
    err_all("30 05 0003 610062", V3X, E::NullCharacter, MALFORMED);
    err(
        "10 10 0004 4d515454 05 02 003c 00 0003 630064",
        V5,
        E::NullCharacter,
        MALFORMED,
    );
    err(
        "10 0f 0004 4d515454 04 02 003c 0003 630064",
        V3_1_1,
        E::NullCharacter,
        MALFORMED,
    );
    err(
        "40 0b 0007 00 07 26 0001 00 0001 76",
        V5,
        E::NullCharacter,
        MALFORMED,
    );
    err(
        "40 0b 0007 00 07 26 0001 6b 0001 00",
        V5,
        E::NullCharacter,
        MALFORMED,
    );
    err("a2 05 000b 0001 00", V3_1_1, E::NullCharacter, MALFORMED);
}

// ------------------------------------------------------------------ properties (5.0 §2.2.2)

/// 5.0 §3.3.2.3.4: "It is a Protocol Error to include the Topic Alias value more than once."
#[test]
fn publish_with_two_topic_aliases_is_a_protocol_error() {
    err(
        "30 0c 0003 612f62 06 230001 230002",
        V5,
        E::DuplicateProperty(0x23),
        PROTOCOL,
    );
}

/// One duplicate per packet type that has single-valued properties.
#[test]
fn repeated_single_valued_properties_are_protocol_errors() {
    // CONNECT Session Expiry Interval twice.
    err(
        "10 18 0004 4d515454 05 02 003c 0a 1100000001 1100000002 0001 63",
        V5,
        E::DuplicateProperty(0x11),
        PROTOCOL,
    );
    // CONNACK Maximum QoS twice.
    err(
        "20 07 00 00 04 2400 2401",
        V5,
        E::DuplicateProperty(0x24),
        PROTOCOL,
    );
    // SUBSCRIBE Subscription Identifier twice (§3.8.2.1.2).
    err(
        "82 0b 000a 04 0b01 0b02 0001 23 00",
        V5,
        E::DuplicateProperty(0x0B),
        PROTOCOL,
    );
    // PUBACK Reason String twice.
    err(
        "40 0c 0007 00 08 1f0001 61 1f0001 62",
        V5,
        E::DuplicateProperty(0x1F),
        PROTOCOL,
    );
    // DISCONNECT Server Reference twice.
    err(
        "e0 0a 00 08 1c0001 61 1c0001 62",
        V5,
        E::DuplicateProperty(0x1C),
        PROTOCOL,
    );
    // AUTH Authentication Method twice.
    err(
        "f0 0a 18 08 150001 61 150001 62",
        V5,
        E::DuplicateProperty(0x15),
        PROTOCOL,
    );
}

/// User Property may repeat everywhere (§3.1.2.11.8), and so may Subscription Identifier on a
/// PUBLISH (§3.3.2.3.8); both keep their order.
#[test]
fn user_property_and_publish_subscription_identifier_may_repeat() {
    let bytes = hex("30 1a 0003 612f62 14 0b03 0b01 0b02 260001 62 0001 31 260001 61 0001 32");
    let Some(Packet::Publish(p)) = decode(&bytes, V5).unwrap() else {
        panic!("not a PUBLISH")
    };
    let ids: Vec<u32> = p
        .properties
        .subscription_identifiers()
        .map(|i| i.get())
        .collect();
    assert_eq!(ids, [3, 1, 2]);
    assert_eq!(
        p.properties.user_properties().collect::<Vec<_>>(),
        [up("b", "1"), up("a", "2")]
    );
    // A repeated pair is kept twice, not merged.
    let bytes = hex("e0 10 00 0e 260001 6b 0001 76 260001 6b 0001 76");
    let Some(Packet::Disconnect(d)) = decode(&bytes, V5).unwrap() else {
        panic!()
    };
    assert_eq!(d.properties.user_properties, [up("k", "v"), up("k", "v")]);
}

/// 5.0 §2.2.2.2: "A Control Packet which contains an Identifier which is not valid for its
/// packet type ... is a Malformed Packet."
#[test]
fn property_not_allowed_on_the_packet_is_malformed() {
    // Session Expiry Interval on PUBLISH.
    err(
        "30 0b 0003 612f62 05 1100000001",
        V5,
        E::PropertyNotAllowed(0x11),
        MALFORMED,
    );
    // Topic Alias on SUBSCRIBE.
    err(
        "82 0a 000a 03 230001 0001 23 00",
        V5,
        E::PropertyNotAllowed(0x23),
        MALFORMED,
    );
    // Subscription Identifier on UNSUBSCRIBE.
    err(
        "a2 08 000b 02 0b01 0001 23",
        V5,
        E::PropertyNotAllowed(0x0B),
        MALFORMED,
    );
    // Will Delay Interval in CONNECT properties rather than will properties.
    err(
        "10 12 0004 4d515454 05 02 003c 05 1800000001 0000",
        V5,
        E::PropertyNotAllowed(0x18),
        MALFORMED,
    );
    // Reason String on CONNECT.
    err(
        "10 11 0004 4d515454 05 02 003c 04 1f0001 61 0000",
        V5,
        E::PropertyNotAllowed(0x1F),
        MALFORMED,
    );
    // Unassigned identifiers: 0x00 and 0x7F.
    err(
        "40 06 0007 00 02 0000",
        V5,
        E::PropertyNotAllowed(0x00),
        MALFORMED,
    );
    err(
        "40 06 0007 00 02 7f00",
        V5,
        E::PropertyNotAllowed(0x7F),
        MALFORMED,
    );
}

/// A 5.0 CONNECT (Will, Clean Start, client "cid") whose Will Properties are `props` (hex, at
/// most 100 bytes), with Will Topic "w/t" and Will Payload "x".
fn connect_with_will_properties(props: &str) -> String {
    let props = hex(props);
    let body = format!(
        "0004 4d515454 05 06 003c 00 0003 636964 {:02x} {} 0003 772f74 0001 78",
        props.len(),
        to_hex(&props)
    );
    format!("10 {:02x} {body}", hex(&body).len())
}

/// 5.0 §3.1.3.2: Will Properties are checked as strictly as a packet's. Only Will Delay
/// Interval, Payload Format Indicator, Message Expiry Interval, Content Type, Response Topic,
/// Correlation Data and User Property may appear (§2.2.2.2: any other identifier is
/// malformed), each at most once but User Property (§3.1.3.2.2 to §3.1.3.2.8).
#[test]
fn will_properties_are_checked_as_strictly_as_a_packets() {
    let will = |props: &str, expected: E, reason: R| {
        err(&connect_with_will_properties(props), V5, expected, reason);
    };
    // Allowed on a PUBLISH, not in a will: Topic Alias and Subscription Identifier.
    will("230001", E::PropertyNotAllowed(0x23), MALFORMED);
    will("0b01", E::PropertyNotAllowed(0x0B), MALFORMED);
    // After allowed properties, too.
    will(
        "1800000005 260001 6b 0001 76 230001",
        E::PropertyNotAllowed(0x23),
        MALFORMED,
    );
    // CONNECT properties and others.
    will("1100000001", E::PropertyNotAllowed(0x11), MALFORMED);
    will("1f0001 61", E::PropertyNotAllowed(0x1F), MALFORMED);
    will("2101", E::PropertyNotAllowed(0x21), MALFORMED);
    will("00", E::PropertyNotAllowed(0x00), MALFORMED);
    // An identifier in two bytes is none of the defined ones (§2.2.2.2).
    will("8001", E::PropertyNotAllowed(0x80), MALFORMED);
    will("8002", E::PropertyNotAllowed(0xFF), MALFORMED);
    // Each single-valued property twice: "It is a Protocol Error to include [it] more than
    // once" (§3.1.3.2.2 to §3.1.3.2.7).
    for twice in [
        "1800000001 1800000002",
        "0101 0100",
        "020000000a 020000000a",
        "030001 61 030001 62",
        "080001 61 080001 62",
        "090001 01 090000",
    ] {
        let code = hex(twice)[0];
        will(twice, E::DuplicateProperty(code), PROTOCOL);
    }
    // Duplicates are found wherever they are.
    will(
        "030001 61 1800000001 260001 6b 0001 76 030001 61",
        E::DuplicateProperty(0x03),
        PROTOCOL,
    );
    // Payload Format Indicator 2 (§3.1.3.2.3).
    will("0102", E::InvalidPropertyValue(0x01), PROTOCOL);
    // Strings are UTF-8 without U+0000 (§1.5.4): Content Type, Response Topic, User Property.
    will("030001 ff", E::InvalidUtf8, MALFORMED);
    will("080002 c328", E::InvalidUtf8, MALFORMED);
    will("260001 ff 0001 76", E::InvalidUtf8, MALFORMED);
    will("260001 6b 0001 00", E::NullCharacter, MALFORMED);
    // A value that runs past the end of the block.
    will("18000000", E::LengthOutOfBounds, MALFORMED);
    will("260001 6b 0002 76", E::LengthOutOfBounds, MALFORMED);
    // Correlation Data is binary: any bytes.
    let ok = decode_whole(&hex(&connect_with_will_properties("090002 ff00")), V5);
    let Packet::Connect(c) = ok else {
        panic!("not a CONNECT")
    };
    assert!(c.will.is_some());
}

/// 5.0 §3.1.2.11.3 Receive Maximum: "It is a Protocol Error ... for it to have the value 0."
#[test]
fn zero_receive_maximum_is_a_protocol_error() {
    err(
        "10 13 0004 4d515454 05 02 003c 03 210000 0003 636964",
        V5,
        E::InvalidPropertyValue(0x21),
        PROTOCOL,
    );
    err(
        "20 06 00 00 03 210000",
        V5,
        E::InvalidPropertyValue(0x21),
        PROTOCOL,
    );
}

/// 5.0 §3.1.2.11.4 Maximum Packet Size: zero is a Protocol Error.
#[test]
fn zero_maximum_packet_size_is_a_protocol_error() {
    err(
        "20 08 00 00 05 2700000000",
        V5,
        E::InvalidPropertyValue(0x27),
        PROTOCOL,
    );
}

/// 5.0 [MQTT-3.3.2-8]: a Topic Alias of 0 is not allowed.
// Conformance: [MQTT-5:3.3.2-8]
#[test]
fn zero_topic_alias_is_a_protocol_error() {
    err(
        "30 09 0003 612f62 03 230000",
        V5,
        E::InvalidPropertyValue(0x23),
        PROTOCOL,
    );
}

/// 5.0 §3.8.2.1.2: "It is a Protocol Error if the Subscription Identifier has a value of 0."
#[test]
fn zero_subscription_identifier_is_a_protocol_error() {
    err(
        "82 09 000a 02 0b00 0001 23 00",
        V5,
        E::InvalidPropertyValue(0x0B),
        PROTOCOL,
    );
    err(
        "30 08 0003 612f62 02 0b00",
        V5,
        E::InvalidPropertyValue(0x0B),
        PROTOCOL,
    );
}

/// Byte properties that are booleans (Retain Available, Request Problem Information, ...) and
/// Payload Format Indicator may only be 0 or 1 (5.0 §3.2.2.3.5, §3.1.2.11.7, §3.3.2.3.2).
#[test]
fn boolean_property_value_2_is_a_protocol_error() {
    err(
        "20 05 00 00 02 2502",
        V5,
        E::InvalidPropertyValue(0x25),
        PROTOCOL,
    );
    err(
        "20 05 00 00 02 2a02",
        V5,
        E::InvalidPropertyValue(0x2A),
        PROTOCOL,
    );
    err(
        "10 12 0004 4d515454 05 02 003c 02 1702 0003 636964",
        V5,
        E::InvalidPropertyValue(0x17),
        PROTOCOL,
    );
    err(
        "30 08 0003 612f62 02 0102",
        V5,
        E::InvalidPropertyValue(0x01),
        PROTOCOL,
    );
}

/// 5.0 §3.2.2.3.4: "It is a Protocol Error to include Maximum QoS ... [with] a value other
/// than 0 or 1."
#[test]
fn maximum_qos_2_is_a_protocol_error() {
    err(
        "20 05 00 00 02 2402",
        V5,
        E::InvalidPropertyValue(0x24),
        PROTOCOL,
    );
}

// ----------------------------------------------------------------- SUBSCRIBE / UNSUBSCRIBE

/// 5.0 [MQTT-3.8.3-2] (3.1.1 [MQTT-3.8.3-3]): at least one topic filter.
// Conformance: [MQTT-5:3.8.3-2] [MQTT-3.1.1:3.8.3-3]
#[test]
fn subscribe_without_topic_filters_is_a_protocol_error() {
    err_all("82 02 000a", V3X, E::EmptySubscribe, PROTOCOL);
    err("82 03 000a 00", V5, E::EmptySubscribe, PROTOCOL);
}

/// 5.0 and 3.1.1 [MQTT-3.10.3-2]: at least one topic filter.
// Conformance: [MQTT-5:3.10.3-2] [MQTT-3.1.1:3.10.3-2]
#[test]
fn unsubscribe_without_topic_filters_is_a_protocol_error() {
    err_all("a2 02 000b", V3X, E::EmptyUnsubscribe, PROTOCOL);
    err("a2 03 000b 00", V5, E::EmptyUnsubscribe, PROTOCOL);
}

/// 5.0 [MQTT-4.7.3-1]: a topic filter is at least one character long.
#[test]
fn empty_topic_filter_is_rejected() {
    err("82 05 000a 0000 00", V3_1_1, E::EmptyTopic, PROTOCOL);
    err("a2 04 000b 0000", V3_1_1, E::EmptyTopic, PROTOCOL);
}

/// 5.0 §3.8.3.1 [MQTT-3.8.3-5]: bits 6 and 7 of the options are reserved; 3.1.1
/// [MQTT-3-8.3-4]: bits 2-7 are reserved.
// Conformance: [MQTT-5:3.8.3-5]
#[test]
fn subscription_options_reserved_bits_are_malformed() {
    err(
        "82 07 000a 00 0001 23 40",
        V5,
        E::InvalidSubscriptionOptions,
        MALFORMED,
    );
    err(
        "82 07 000a 00 0001 23 80",
        V5,
        E::InvalidSubscriptionOptions,
        MALFORMED,
    );
    // No Local (bit 2) exists only in 5.0.
    err_all(
        "82 06 000a 0001 23 04",
        V3X,
        E::InvalidSubscriptionOptions,
        MALFORMED,
    );
}

/// QoS 3 in the options: 5.0 §3.8.3.1 "It is a Protocol Error if the Maximum QoS field has
/// the value 3" (3.1.1 [MQTT-3-8.3-4] calls it malformed; 3.x sends no reason code).
#[test]
fn subscription_options_qos3_is_rejected() {
    err_all(
        "82 06 000a 0001 23 03",
        V3X,
        E::InvalidSubscriptionQoS,
        PROTOCOL,
    );
    err(
        "82 07 000a 00 0001 23 03",
        V5,
        E::InvalidSubscriptionQoS,
        PROTOCOL,
    );
}

/// 5.0 §3.8.3.1: "It is a Protocol Error to send a Retain Handling value of 3."
#[test]
fn subscription_options_retain_handling_3_is_a_protocol_error() {
    err(
        "82 07 000a 00 0001 23 30",
        V5,
        E::InvalidRetainHandling,
        PROTOCOL,
    );
}

// ---------------------------------------------------------------------------------- CONNECT

/// 5.0 and 3.1.1 [MQTT-3.1.2-3]: the reserved flag must be 0.
// Conformance: [MQTT-5:3.1.2-3]
#[test]
fn connect_reserved_flag_is_malformed() {
    err(
        "10 0f 0004 4d515454 04 03 003c 0003 636964",
        V3_1_1,
        E::ConnectReservedFlag,
        MALFORMED,
    );
    err(
        "10 10 0004 4d515454 05 01 003c 00 0003 636964",
        V5,
        E::ConnectReservedFlag,
        MALFORMED,
    );
}

/// 3.1.1 [MQTT-3.1.2-22]: "If the User Name Flag is set to 0, the Password Flag MUST be set to
/// 0." 5.0 dropped the rule (§3.1.2.9; accepted in the KAT vectors).
// Conformance: [MQTT-3.1.1:3.1.2-22]
#[test]
fn connect_password_without_username_is_rejected_before_v5() {
    err(
        "10 12 0004 4d515454 04 42 003c 0003 636964 0001 70",
        V3_1_1,
        E::PasswordWithoutUsername,
        MALFORMED,
    );
    err(
        "10 14 0006 4d5149736470 03 42 003c 0003 636964 0001 70",
        V3_1,
        E::PasswordWithoutUsername,
        MALFORMED,
    );
}

/// 5.0 [MQTT-3.1.2-12]: Will QoS 3 is malformed.
// Conformance: [MQTT-3.1.1:3.1.2-14]
#[test]
fn connect_will_qos3_is_malformed() {
    err(
        "10 17 0004 4d515454 04 1e 003c 0003 636964 0003 772f74 0001 78",
        V3_1_1,
        E::InvalidWillFlags,
        MALFORMED,
    );
}

/// 5.0 [MQTT-3.1.2-11], [MQTT-3.1.2-13] (3.1.1 [MQTT-3.1.2-13], [MQTT-3.1.2-15]): Will QoS and
/// Will Retain must be 0 without the Will Flag.
// Conformance: [MQTT-3.1.1:3.1.2-13] [MQTT-3.1.1:3.1.2-15] [MQTT-5:3.1.2-11]
#[test]
fn connect_will_qos_or_retain_without_will_flag_is_malformed() {
    err(
        "10 0f 0004 4d515454 04 0a 003c 0003 636964",
        V3_1_1,
        E::InvalidWillFlags,
        MALFORMED,
    );
    err(
        "10 0f 0004 4d515454 04 22 003c 0003 636964",
        V3_1_1,
        E::InvalidWillFlags,
        MALFORMED,
    );
    err(
        "10 10 0004 4d515454 05 12 003c 00 0003 636964",
        V5,
        E::InvalidWillFlags,
        MALFORMED,
    );
}

/// A Will Topic is a topic name: non-empty and without wildcards (§3.1.3.3).
#[test]
fn connect_will_topic_must_be_a_valid_topic_name() {
    err(
        "10 14 0004 4d515454 04 06 003c 0003 636964 0000 0001 78",
        V3_1_1,
        E::EmptyTopic,
        PROTOCOL,
    );
    err(
        "10 15 0004 4d515454 04 06 003c 0003 636964 0001 23 0001 78",
        V3_1_1,
        E::WildcardInTopicName,
        R::TOPIC_NAME_INVALID,
    );
}

/// 5.0 and 3.1.1 [MQTT-3.1.2-1]: the protocol name is "MQTT" ("MQIsdp" for 3.1).
#[test]
fn connect_with_bad_protocol_name_is_rejected() {
    err(
        "10 0f 0004 4d515458 04 02 003c 0003 636964",
        V3_1_1,
        E::InvalidProtocolName,
        R::UNSUPPORTED_PROTOCOL_VERSION,
    );
    err(
        "10 0f 0004 6d717474 05 02 003c 0003 636964",
        V5,
        E::InvalidProtocolName,
        R::UNSUPPORTED_PROTOCOL_VERSION,
    );
}

/// 5.0 [MQTT-3.1.2-2]: an unsupported level gets CONNACK 0x84 Unsupported Protocol Version.
#[test]
fn connect_with_unsupported_level_is_rejected() {
    for version in ALL {
        err(
            "10 10 0004 4d515454 06 02 003c 00 0003 636964",
            *version,
            E::UnsupportedProtocolVersion(6),
            R::UNSUPPORTED_PROTOCOL_VERSION,
        );
    }
    // Level 3 goes with "MQIsdp" only, and 4 and 5 with "MQTT" only.
    err(
        "10 0f 0004 4d515454 03 02 003c 0003 636964",
        V3_1_1,
        E::UnsupportedProtocolVersion(3),
        R::UNSUPPORTED_PROTOCOL_VERSION,
    );
    err(
        "10 11 0006 4d5149736470 04 02 003c 0003 636964",
        V3_1,
        E::UnsupportedProtocolVersion(4),
        R::UNSUPPORTED_PROTOCOL_VERSION,
    );
    // The bridge bit (0x80) is a 3.x convention: 5.0 has no level 0x85.
    err(
        "10 10 0004 4d515454 85 02 003c 00 0003 636964",
        V5,
        E::UnsupportedProtocolVersion(0x85),
        R::UNSUPPORTED_PROTOCOL_VERSION,
    );
}

// ---------------------------------------------------------------------------------- CONNACK

/// 5.0 [MQTT-3.2.2-1] (3.1.1 §3.2.2.1): bits 7-1 of the acknowledge flags are reserved.
// Conformance: [MQTT-5:3.2.2-1]
#[test]
fn connack_reserved_flags_are_malformed() {
    err("20 02 02 00", V3_1_1, E::ConnAckReservedFlags, MALFORMED);
    err("20 03 80 00 00", V5, E::ConnAckReservedFlags, MALFORMED);
}

// ------------------------------------------------------------------------ lengths (§1.5, §2)

/// A string length that reaches past the Remaining Length is malformed (and never reads into
/// the next packet, which here follows in the same buffer).
#[test]
fn string_length_past_end_of_packet_is_malformed() {
    err_all(
        "30 04 0005 6162  c000",
        V3X,
        E::LengthOutOfBounds,
        MALFORMED,
    );
    err(
        "10 0f 0004 4d515454 04 02 003c 0009 636964  c000",
        V3_1_1,
        E::LengthOutOfBounds,
        MALFORMED,
    );
}

/// A Property Length larger than what is left of the packet is malformed, as is a property
/// value that reaches past the end of its property block.
#[test]
fn property_length_past_end_of_packet_is_malformed() {
    err(
        "40 04 0007 00 05  c000",
        V5,
        E::LengthOutOfBounds,
        MALFORMED,
    );
    err(
        "30 07 0003 612f62 09 01  c000",
        V5,
        E::LengthOutOfBounds,
        MALFORMED,
    );
    // Reason String of length 5 in a property block of 3 bytes, with 2 more bytes after the
    // block: the value may not borrow them.
    err(
        "40 09 0007 00 03 1f0005 6162  6364",
        V5,
        E::LengthOutOfBounds,
        MALFORMED,
    );
}

/// Packets too short for their fixed fields.
#[test]
fn truncated_fixed_fields_are_malformed() {
    err_all("40 01 00", ALL, E::LengthOutOfBounds, MALFORMED);
    err_all("32 05 0003 612f62", V3X, E::LengthOutOfBounds, MALFORMED);
    err_all("20 01 00", ALL, E::LengthOutOfBounds, MALFORMED);
    err("20 02 00 00", V5, E::LengthOutOfBounds, MALFORMED);
    err(
        "10 06 0004 4d515454",
        V3_1_1,
        E::LengthOutOfBounds,
        MALFORMED,
    );
}

/// Bytes after the last field of a packet that has no more fields.
#[test]
fn trailing_bytes_are_malformed() {
    err_all("c0 01 00", ALL, E::TrailingBytes, MALFORMED);
    err_all("d0 01 00", ALL, E::TrailingBytes, MALFORMED);
    err_all("40 03 0007 00", V3X, E::TrailingBytes, MALFORMED);
    err_all("b0 03 000b 00", V3X, E::TrailingBytes, MALFORMED);
    err_all("e0 01 00", V3X, E::TrailingBytes, MALFORMED);
    err_all("20 03 00 00 00", V3X, E::TrailingBytes, MALFORMED);
    err("20 04 00 00 00 00", V5, E::TrailingBytes, MALFORMED);
    err(
        "10 10 0004 4d515454 04 02 003c 0003 636964 00",
        V3_1_1,
        E::TrailingBytes,
        MALFORMED,
    );
}

// ----------------------------------------------------------------------------- reason codes

/// 5.0 §2.4 Table 2-6: each packet type allows only some reason codes.
#[test]
fn reason_code_not_allowed_on_the_packet_is_malformed() {
    let cases = [
        ("62 03 0007 10", 0x10),    // PUBREL: 0x00, 0x92 only
        ("70 03 0007 10", 0x10),    // PUBCOMP
        ("40 03 0007 92", 0x92),    // PUBACK: no 0x92
        ("50 03 0007 01", 0x01),    // PUBREC
        ("20 03 00 01 00", 0x01),   // CONNACK
        ("20 03 00 8b 00", 0x8B),   // CONNACK: Server shutting down is DISCONNECT-only
        ("90 04 000a 00 03", 0x03), // SUBACK
        ("b0 04 000b 00 01", 0x01), // UNSUBACK
        ("e0 01 01", 0x01),         // DISCONNECT
        ("f0 01 04", 0x04),         // AUTH
    ];
    for (bytes, code) in cases {
        err(bytes, V5, E::InvalidReasonCode(code), MALFORMED);
    }
    // 3.1.1 §3.9.3: SUBACK return codes are 0x00, 0x01, 0x02 and 0x80.
    err_all("90 03 000a 87", V3X, E::InvalidReasonCode(0x87), MALFORMED);
}
