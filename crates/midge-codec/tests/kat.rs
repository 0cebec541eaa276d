//! Known-answer tests: hand-written byte vectors for every packet type in MQTT 3.1, 3.1.1 and
//! 5.0 (see `common/kat.rs`), decoded and encoded.

mod common;

use std::collections::BTreeSet;

use bytes::Bytes;
use common::kat::{self, Kat};
use common::*;
use midge_codec::{
    ConnAck, DecodeError, Packet, PacketType, ProtocolVersion, ReasonCode, MAX_PACKET_SIZE,
};

fn check(k: &Kat) {
    // decode(bytes) == expected, through both entry points.
    let decoded = decode_whole(&k.bytes, k.version);
    assert_eq!(decoded, k.packet, "{}: decode", k.name);
    let mut shared = Bytes::from(k.bytes.clone());
    let decoded = Packet::decode_bytes(&mut shared, k.version, MAX_PACKET_SIZE);
    assert_eq!(
        decoded,
        Ok(Some(k.packet.clone())),
        "{}: decode_bytes",
        k.name
    );
    assert!(shared.is_empty(), "{}: decode_bytes left bytes", k.name);
    // encode(expected) == bytes.
    let encoded = encode(&k.packet, k.version).unwrap_or_else(|e| panic!("{}: {e:?}", k.name));
    assert_eq!(to_hex(&encoded), to_hex(&k.bytes), "{}: encode", k.name);
}

#[test]
fn known_answer_vectors_decode_and_encode() {
    for k in kat::all() {
        check(&k);
    }
}

#[test]
fn known_answer_vectors_cover_every_packet_type_of_every_version() {
    use PacketType::*;
    let v3: BTreeSet<u8> = [
        Connect,
        ConnAck,
        Publish,
        PubAck,
        PubRec,
        PubRel,
        PubComp,
        Subscribe,
        SubAck,
        Unsubscribe,
        UnsubAck,
        PingReq,
        PingResp,
        Disconnect,
    ]
    .iter()
    .map(|t| *t as u8)
    .collect();
    let mut v5 = v3.clone();
    v5.insert(Auth as u8);
    for (version, expected) in [(V3_1, &v3), (V3_1_1, &v3), (V5, &v5)] {
        let covered: BTreeSet<u8> = kat::all()
            .iter()
            .filter(|k| k.version == version)
            .map(|k| k.packet.packet_type() as u8)
            .collect();
        assert_eq!(&covered, expected, "{version:?}");
    }
}

#[test]
fn connect_decodes_by_its_own_level_whatever_the_connection_version() {
    // A server decodes the first packet before it knows the version; CONNECT names it.
    for k in kat::all() {
        if let Packet::Connect(c) = &k.packet {
            for version in [V3_1, V3_1_1, V5] {
                assert_eq!(
                    decode_whole(&k.bytes, version),
                    k.packet,
                    "{} as {version:?}",
                    k.name
                );
            }
            assert_eq!(c.protocol, k.version);
        }
    }
}

/// MQTT 3.1.1 §3.2.2.3, Table 3.1: return codes 0-5 carry the same meaning as the 5.0 reason
/// codes they map to (5.0 §3.2.2.2).
#[test]
fn v3_connack_return_codes_map_to_reason_codes() {
    let table = [
        (0x00, ReasonCode::SUCCESS),
        (0x01, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION),
        (0x02, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
        (0x03, ReasonCode::SERVER_UNAVAILABLE),
        (0x04, ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        (0x05, ReasonCode::NOT_AUTHORIZED),
    ];
    for version in [V3_1, V3_1_1] {
        for (code, reason) in table {
            let bytes = [0x20, 0x02, 0x00, code];
            let packet = Packet::ConnAck(Box::new(ConnAck {
                reason_code: reason,
                ..ConnAck::default()
            }));
            assert_eq!(
                decode_whole(&bytes, version),
                packet,
                "{version:?} code {code}"
            );
            assert_eq!(
                encode(&packet, version).unwrap(),
                bytes,
                "{version:?} {reason:?}"
            );
        }
        // Return codes 6-255 are reserved (3.1.1 §3.2.2.3).
        assert_eq!(
            decode(&[0x20, 0x02, 0x00, 0x06], version),
            Err(DecodeError::InvalidReasonCode(0x06))
        );
    }
}

/// 3.1.1 §2.2.1 Table 2.1: 15 is "Reserved, forbidden" before 5.0, which uses it for AUTH.
#[test]
fn auth_packet_type_is_reserved_before_v5() {
    for version in [V3_1, V3_1_1] {
        assert_decode_err(
            &hex("f0 00"),
            version,
            DecodeError::ReservedPacketType(15),
            ReasonCode::MALFORMED_PACKET,
        );
    }
    assert_eq!(
        decode(&hex("f0 00"), V5),
        Ok(Some(Packet::Auth(Default::default())))
    );
}

/// 3.1 §3.2: the first CONNACK byte is reserved ("not used"), so 3.1 has no Session Present
/// flag and does not look at that byte.
#[test]
fn v31_connack_has_no_session_present() {
    assert_eq!(
        decode_whole(&hex("20 02 01 00"), V3_1),
        Packet::ConnAck(Box::default())
    );
    let present = Packet::ConnAck(Box::new(ConnAck {
        session_present: true,
        ..ConnAck::default()
    }));
    assert_encode_err(
        &present,
        V3_1,
        midge_codec::EncodeError::RequiresV311("Session Present"),
    );
}

/// 3.1.1 §3.3.1.4: the packet type and the version decide the header; `ProtocolVersion` names
/// the wire format each level uses.
#[test]
fn protocol_versions_name_their_levels() {
    for (version, level, name) in [(V3_1, 3, "MQIsdp"), (V3_1_1, 4, "MQTT"), (V5, 5, "MQTT")] {
        assert_eq!(version.level(), level);
        assert_eq!(version.protocol_name(), name);
        assert_eq!(ProtocolVersion::from_level(level), Some(version));
    }
    assert_eq!(ProtocolVersion::from_level(6), None);
}
