//! Framing: size limits enforced from the fixed header before anything is buffered or
//! reserved, and incremental input (prefixes, byte-by-byte delivery, several packets in one
//! buffer).

mod common;

use bytes::{Bytes, BytesMut};
use common::kat::{self, Kat};
use common::*;
use midge_codec::{DecodeError, Packet, ProtocolVersion, ReasonCode, MAX_PACKET_SIZE};

/// A PUBLISH fixed header announcing the largest Remaining Length, 268,435,455 (§1.5.5).
const HUGE_HEADER: [u8; 5] = [0x30, 0xff, 0xff, 0xff, 0x7f];

/// 5.0 §3.1.2.11.4 [MQTT-3.2.2-15] / §4.13: a packet over the receiver's maximum is refused,
/// here from the 5 header bytes alone.
#[test]
fn oversized_packet_is_refused_from_the_fixed_header_alone() {
    for version in [V3_1, V3_1_1, V5] {
        let mut buf = BytesMut::with_capacity(16);
        buf.extend_from_slice(&HUGE_HEADER);
        let capacity = buf.capacity();
        let got = Packet::decode(&mut buf, version, 1024);
        let expected = DecodeError::PacketTooLarge {
            size: 268_435_460,
            max: 1024,
        };
        assert_eq!(got, Err(expected));
        assert_eq!(ReasonCode::from(expected), ReasonCode::PACKET_TOO_LARGE);
        assert_eq!(&buf[..], &HUGE_HEADER, "nothing consumed");
        assert_eq!(buf.capacity(), capacity, "nothing reserved");

        let mut shared = Bytes::copy_from_slice(&HUGE_HEADER);
        assert_eq!(
            Packet::decode_bytes(&mut shared, version, 1024),
            Err(expected)
        );
        assert_eq!(&shared[..], &HUGE_HEADER);
    }
}

#[test]
fn packet_of_exactly_the_maximum_size_is_accepted() {
    // PUBLISH "a" QoS 0 with 3 payload bytes: 2 + 5 = 7 bytes in all.
    let bytes = hex("30 05 0001 61 787878");
    assert!(matches!(
        Packet::decode(&mut BytesMut::from(&bytes[..]), V3_1_1, 7),
        Ok(Some(Packet::Publish(_)))
    ));
    assert_eq!(
        Packet::decode(&mut BytesMut::from(&bytes[..]), V3_1_1, 6),
        Err(DecodeError::PacketTooLarge { size: 7, max: 6 })
    );
}

/// Under the protocol's own limit the same header is just the start of a large packet: the
/// decoder waits, and reserves nothing on the peer's word.
#[test]
fn largest_remaining_length_waits_without_reserving() {
    for version in [V3_1, V3_1_1, V5] {
        let mut buf = BytesMut::with_capacity(16);
        buf.extend_from_slice(&HUGE_HEADER);
        assert_eq!(Packet::decode(&mut buf, version, MAX_PACKET_SIZE), Ok(None));
        assert_eq!(&buf[..], &HUGE_HEADER, "nothing consumed");
        assert!(
            buf.capacity() <= 16,
            "decode reserved {} bytes",
            buf.capacity()
        );
        // More of the body changes nothing.
        buf.extend_from_slice(&[0x00, 0x01, 0x61]);
        assert_eq!(Packet::decode(&mut buf, version, MAX_PACKET_SIZE), Ok(None));
        assert!(
            buf.capacity() <= 16,
            "decode reserved {} bytes",
            buf.capacity()
        );
    }
}

#[test]
fn max_packet_size_constant_is_header_plus_largest_remaining_length() {
    assert_eq!(MAX_PACKET_SIZE, 5 + 268_435_455);
}

/// Every strict prefix of a packet is `Ok(None)` and leaves the buffer as it was.
fn assert_prefixes_incomplete(k: &Kat) {
    for end in 0..k.bytes.len() {
        let mut buf = BytesMut::from(&k.bytes[..end]);
        assert_eq!(
            Packet::decode(&mut buf, k.version, MAX_PACKET_SIZE),
            Ok(None),
            "{}: prefix of {end} bytes",
            k.name
        );
        assert_eq!(&buf[..], &k.bytes[..end], "{}: prefix consumed", k.name);
        let mut shared = Bytes::copy_from_slice(&k.bytes[..end]);
        assert_eq!(
            Packet::decode_bytes(&mut shared, k.version, MAX_PACKET_SIZE),
            Ok(None)
        );
        assert_eq!(shared.len(), end);
    }
}

#[test]
fn every_strict_prefix_of_a_known_answer_vector_is_incomplete() {
    for k in kat::all() {
        assert_prefixes_incomplete(&k);
    }
}

/// Feeds `chunks` one at a time into a buffer, decoding after each, as a socket reader does.
fn feed(chunks: &[&[u8]], version: ProtocolVersion) -> Vec<Packet> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(p) = Packet::decode(&mut buf, version, MAX_PACKET_SIZE).unwrap() {
            out.push(p);
        }
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    out
}

#[test]
fn packets_delivered_byte_by_byte_decode_as_when_whole() {
    for k in kat::all() {
        let bytes: Vec<&[u8]> = k.bytes.chunks(1).collect();
        assert_eq!(
            feed(&bytes, k.version),
            std::slice::from_ref(&k.packet),
            "{}",
            k.name
        );
    }
}

#[test]
fn concatenated_packets_decode_in_sequence() {
    for version in [V3_1, V3_1_1, V5] {
        let kats: Vec<Kat> = kat::all()
            .into_iter()
            .filter(|k| k.version == version)
            .collect();
        let stream: Vec<u8> = kats.iter().flat_map(|k| k.bytes.iter().copied()).collect();
        let expected: Vec<Packet> = kats.iter().map(|k| k.packet.clone()).collect();
        // All at once.
        assert_eq!(feed(&[&stream], version), expected, "{version:?} whole");
        // In chunks of 7 bytes, which straddle packet boundaries.
        let chunks: Vec<&[u8]> = stream.chunks(7).collect();
        assert_eq!(feed(&chunks, version), expected, "{version:?} chunks of 7");
        // From one shared `Bytes`.
        let mut shared = Bytes::from(stream.clone());
        let mut got = Vec::new();
        while let Some(p) = Packet::decode_bytes(&mut shared, version, MAX_PACKET_SIZE).unwrap() {
            got.push(p);
        }
        assert_eq!(got, expected, "{version:?} decode_bytes");
        assert!(shared.is_empty());
    }
}

/// A complete packet followed by the start of the next: the first decodes, the rest waits.
#[test]
fn a_partial_second_packet_is_left_in_the_buffer() {
    let mut buf = BytesMut::from(&hex("c0 00  30 07 0003 61")[..]);
    assert_eq!(
        Packet::decode(&mut buf, V3_1_1, MAX_PACKET_SIZE),
        Ok(Some(Packet::PingReq))
    );
    assert_eq!(&buf[..], &hex("30 07 0003 61")[..]);
    assert_eq!(Packet::decode(&mut buf, V3_1_1, MAX_PACKET_SIZE), Ok(None));
    assert_eq!(buf.len(), 5);
}

/// A Remaining Length split across reads: its continuation bytes are waited for.
#[test]
fn remaining_length_split_across_reads_waits() {
    // PUBLISH with 200 bytes of body: Remaining Length 0xC8 0x01.
    let mut bytes = hex("30 c8 01 0001 61");
    bytes.resize(3 + 200, b'x');
    for end in [1, 2] {
        let mut buf = BytesMut::from(&bytes[..end]);
        assert_eq!(Packet::decode(&mut buf, V3_1_1, MAX_PACKET_SIZE), Ok(None));
        assert_eq!(buf.len(), end);
    }
    let Some(Packet::Publish(p)) = decode(&bytes, V3_1_1).unwrap() else {
        panic!()
    };
    assert_eq!(p.payload.len(), 197);
    assert_eq!(packet_len(&bytes), bytes.len());
}
