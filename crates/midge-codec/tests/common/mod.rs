//! Helpers shared by the integration tests: hex parsing, decode/encode shorthands and the
//! known-answer vectors (`kat`).
//!
//! Each test binary uses a different subset, hence the `dead_code` allowance.
#![allow(dead_code)]

pub(crate) mod kat;

use bytes::{Bytes, BytesMut};
use core::num::NonZeroU16;
use midge_codec::{
    ByteStr, DecodeError, EncodeError, Packet, PacketId, ProtocolVersion, ReasonCode,
    MAX_PACKET_SIZE,
};

pub(crate) use ProtocolVersion::{V3_1, V3_1_1, V5};

/// Parses a hex string; whitespace and `_` are ignored so vectors can be grouped by field.
///
/// # Panics
/// On an odd number of digits or a character that is not a hex digit (a typo in a test).
pub(crate) fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'_')
        .map(|b| match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            other => panic!("not a hex digit: {:?} in {s:?}", other as char),
        })
        .collect();
    assert!(
        digits.len().is_multiple_of(2),
        "odd number of hex digits in {s:?}"
    );
    digits
        .chunks(2)
        .map(|pair| (pair[0] << 4) | pair[1])
        .collect()
}

/// Lowercase hex of `bytes`, for readable assertion messages.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A packet identifier; panics on 0 (a typo in a test).
pub(crate) fn pid(id: u16) -> PacketId {
    NonZeroU16::new(id).expect("packet identifier 0 in a test")
}

/// A `ByteStr` from a static string.
pub(crate) fn s(v: &'static str) -> ByteStr {
    ByteStr::from_static(v)
}

/// Static bytes.
pub(crate) fn b(v: &'static [u8]) -> Bytes {
    Bytes::from_static(v)
}

/// A user property pair.
pub(crate) fn up(k: &'static str, v: &'static str) -> (ByteStr, ByteStr) {
    (s(k), s(v))
}

/// Decodes one packet from `bytes` with no size limit of our own.
pub(crate) fn decode(
    bytes: &[u8],
    version: ProtocolVersion,
) -> Result<Option<Packet>, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    Packet::decode(&mut buf, version, MAX_PACKET_SIZE)
}

/// Decodes `bytes`, which must hold exactly one whole packet, and checks it was all consumed.
pub(crate) fn decode_whole(bytes: &[u8], version: ProtocolVersion) -> Packet {
    let mut buf = BytesMut::from(bytes);
    let packet = Packet::decode(&mut buf, version, MAX_PACKET_SIZE)
        .unwrap_or_else(|e| panic!("decode {} ({version:?}): {e:?}", to_hex(bytes)))
        .unwrap_or_else(|| panic!("decode {} ({version:?}): incomplete", to_hex(bytes)));
    assert!(
        buf.is_empty(),
        "{} bytes left after decoding {}",
        buf.len(),
        to_hex(bytes)
    );
    packet
}

/// Asserts that `bytes` is refused with `expected`, which converts into `reason`, and that
/// nothing was consumed.
#[track_caller]
pub(crate) fn assert_decode_err(
    bytes: &[u8],
    version: ProtocolVersion,
    expected: DecodeError,
    reason: ReasonCode,
) {
    let mut buf = BytesMut::from(bytes);
    let got = Packet::decode(&mut buf, version, MAX_PACKET_SIZE);
    assert_eq!(
        got,
        Err(expected),
        "decoding {} under {version:?}",
        to_hex(bytes)
    );
    assert_eq!(
        ReasonCode::from(expected),
        reason,
        "reason code for {expected:?}"
    );
    // The Bytes path must agree with the BytesMut path.
    let mut shared = Bytes::copy_from_slice(bytes);
    let got = Packet::decode_bytes(&mut shared, version, MAX_PACKET_SIZE);
    assert_eq!(
        got,
        Err(expected),
        "decode_bytes {} under {version:?}",
        to_hex(bytes)
    );
}

/// Encodes `packet` for `version`, checking `encoded_len` against the bytes written.
pub(crate) fn encode(packet: &Packet, version: ProtocolVersion) -> Result<Vec<u8>, EncodeError> {
    let mut buf = BytesMut::new();
    packet.encode(version, &mut buf)?;
    assert_eq!(
        packet.encoded_len(version),
        Ok(buf.len()),
        "encoded_len of {packet:?}"
    );
    Ok(buf.to_vec())
}

/// Asserts that encoding `packet` for `version` fails with `expected` and leaves a buffer that
/// already holds bytes exactly as it was.
#[track_caller]
pub(crate) fn assert_encode_err(packet: &Packet, version: ProtocolVersion, expected: EncodeError) {
    let mut buf = BytesMut::from(&b"previous"[..]);
    assert_eq!(
        packet.encode(version, &mut buf),
        Err(expected),
        "encoding {packet:?}"
    );
    assert_eq!(&buf[..], b"previous", "the buffer changed on error");
    assert_eq!(
        packet.encoded_len(version),
        Err(expected),
        "encoded_len of {packet:?}"
    );
}

/// The whole length (fixed header included) of the packet at the front of `bytes`, read from
/// its Remaining Length; for splitting test streams only.
pub(crate) fn packet_len(bytes: &[u8]) -> usize {
    let mut len = 0usize;
    for (i, byte) in bytes[1..].iter().enumerate().take(4) {
        len |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return 1 + i + 1 + len;
        }
    }
    panic!("bad remaining length in {}", to_hex(bytes));
}
