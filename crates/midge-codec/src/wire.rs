//! Wire primitives: integers, variable byte integers, strings and binary data (§1.5).
//!
//! Readers take the rest of one packet's body as `Bytes`, so a length that points past the end
//! of the packet is an error here and never reads into the next packet.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::types::{ByteStr, Known};
use crate::{DecodeError, EncodeError};

/// The largest value of a variable byte integer (§1.5.5).
pub(crate) const MAX_VARINT: u32 = 268_435_455;

/// Largest string or binary field: a two-byte length prefix (§1.5.4, §1.5.6).
pub(crate) const MAX_FIELD: usize = u16::MAX as usize;

pub(crate) fn read_u8(buf: &mut Bytes) -> Result<u8, DecodeError> {
    if buf.is_empty() {
        return Err(DecodeError::LengthOutOfBounds);
    }
    Ok(buf.get_u8())
}

pub(crate) fn read_u16(buf: &mut Bytes) -> Result<u16, DecodeError> {
    if buf.len() < 2 {
        return Err(DecodeError::LengthOutOfBounds);
    }
    Ok(buf.get_u16())
}

pub(crate) fn read_u32(buf: &mut Bytes) -> Result<u32, DecodeError> {
    if buf.len() < 4 {
        return Err(DecodeError::LengthOutOfBounds);
    }
    Ok(buf.get_u32())
}

/// Parses a variable byte integer from the front of `bytes` without consuming it.
///
/// Returns `Ok(None)` if `bytes` ends before the integer does, otherwise the value and how many
/// bytes it took. At most four bytes [MQTT-1.5.5-1] and no superfluous continuation bytes.
pub(crate) fn parse_varint(bytes: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for (i, &byte) in bytes.iter().enumerate().take(4) {
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            // A final zero byte after a continuation could have been left out: not minimal.
            if byte == 0 && i > 0 {
                return Err(DecodeError::MalformedVariableInteger);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if bytes.len() >= 4 {
        Err(DecodeError::MalformedVariableInteger)
    } else {
        Ok(None)
    }
}

pub(crate) fn read_varint(buf: &mut Bytes) -> Result<u32, DecodeError> {
    match parse_varint(buf)? {
        Some((value, len)) => {
            buf.advance(len);
            Ok(value)
        }
        None => Err(DecodeError::LengthOutOfBounds),
    }
}

/// Binary data: a two-byte length, then that many bytes, shared with `buf` (§1.5.6).
pub(crate) fn read_binary(buf: &mut Bytes) -> Result<Bytes, DecodeError> {
    let len = usize::from(read_u16(buf)?);
    if buf.len() < len {
        return Err(DecodeError::LengthOutOfBounds);
    }
    Ok(buf.split_to(len))
}

/// A UTF-8 encoded string (§1.5.4): well-formed [MQTT-1.5.4-1], without U+0000 [MQTT-1.5.4-2].
pub(crate) fn read_str(buf: &mut Bytes) -> Result<ByteStr, DecodeError> {
    let len = usize::from(read_u16(buf)?);
    let bytes = buf.get(..len).ok_or(DecodeError::LengthOutOfBounds)?;
    let found = check_utf8_scan(bytes)?;
    // UTF-8 without U+0000 (or an error above): clean unless it holds a wildcard.
    let s = ByteStr::from_scanned_part(buf, 0..len, Known::clean(!found.wildcard));
    buf.advance(len);
    Ok(s)
}

pub(crate) fn check_utf8(bytes: &[u8]) -> Result<(), DecodeError> {
    check_utf8_scan(bytes).map(drop)
}

/// [`check_utf8`], which also tells what the scan found.
fn check_utf8_scan(bytes: &[u8]) -> Result<Scan, DecodeError> {
    let found = scan(bytes);
    if !found.ascii && core::str::from_utf8(bytes).is_err() {
        return Err(DecodeError::InvalidUtf8);
    }
    // UTF-8 never uses the byte 0 except to encode U+0000 itself.
    if found.nul {
        return Err(DecodeError::NullCharacter);
    }
    Ok(found)
}

/// What [`scan`] found in a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Scan {
    /// A zero byte: U+0000 in UTF-8 [MQTT-1.5.4-2].
    pub(crate) nul: bool,
    /// A topic wildcard, `+` or `#` [MQTT-3.3.2-2].
    pub(crate) wildcard: bool,
    /// Only bytes below 0x80, which are always well-formed UTF-8.
    pub(crate) ascii: bool,
}

/// True if `bytes` holds only ASCII without U+0000 and without topic wildcards: a topic name
/// that needs no further check. One accumulator, eight bytes at a time; [`scan`] tells the
/// cases apart when this says no.
#[inline(always)]
pub(crate) fn is_plain_topic(bytes: &[u8]) -> bool {
    const LO: u64 = u64::from_ne_bytes([0x01; 8]);
    const HI: u64 = u64::from_ne_bytes([0x80; 8]);
    const PLUS: u64 = u64::from_ne_bytes([b'+'; 8]);
    const HASH: u64 = u64::from_ne_bytes([b'#'; 8]);
    // With every byte below 0x80 (checked by `w & HI`), `x - LO` borrows into bit 7 of a byte
    // exactly when it, or a byte below it, is zero: no `!x` term is needed.
    #[inline(always)]
    const fn bad(w: u64) -> u64 {
        w.wrapping_sub(LO) | (w ^ PLUS).wrapping_sub(LO) | (w ^ HASH).wrapping_sub(LO) | w
    }
    let mut acc = 0;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        acc |= bad(u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8])));
    }
    if !chunks.remainder().is_empty() {
        match bytes.last_chunk::<8>() {
            Some(last) => acc |= bad(u64::from_ne_bytes(*last)),
            None => {
                let mut padded = [b'a'; 8];
                for (to, &from) in padded.iter_mut().zip(bytes) {
                    *to = from;
                }
                acc |= bad(u64::from_ne_bytes(padded));
            }
        }
    }
    acc & HI == 0
}

/// [`is_plain_topic`] and, for a plain topic, its number of levels (one more than its `/`
/// bytes), in the same pass: `None` if the bytes are not plain. Decoding a PUBLISH learns the
/// levels here, so that what routes the topic later need not walk it again.
#[inline(always)]
pub(crate) fn plain_topic_levels(bytes: &[u8]) -> Option<usize> {
    const LO: u64 = u64::from_le_bytes([0x01; 8]);
    const HI: u64 = u64::from_le_bytes([0x80; 8]);
    const LOW7: u64 = u64::from_le_bytes([0x7F; 8]);
    const PLUS: u64 = u64::from_le_bytes([b'+'; 8]);
    const HASH: u64 = u64::from_le_bytes([b'#'; 8]);
    const SLASH: u64 = u64::from_le_bytes([b'/'; 8]);
    #[inline(always)]
    const fn bad(w: u64) -> u64 {
        w.wrapping_sub(LO) | (w ^ PLUS).wrapping_sub(LO) | (w ^ HASH).wrapping_sub(LO) | w
    }
    /// 1 in each byte lane of `w` that holds `/`, 0 in the others. Exact when every byte is
    /// below 0x80 (which `bad` checks; otherwise the result is not used): then `y + LOW7`
    /// carries into no other lane, and sets a lane's high bit unless the lane is zero.
    #[inline(always)]
    const fn slashes(w: u64) -> u64 {
        let y = w ^ SLASH;
        (!y.wrapping_add(LOW7) & HI) >> 7
    }
    /// The sum of the byte lanes of `lanes`, each at most 31, so that the sum fits a byte.
    #[inline(always)]
    const fn lane_sum(lanes: u64) -> usize {
        (lanes.wrapping_mul(LO) >> 56) as usize
    }
    if bytes.len() > LANE_WORDS * 8 {
        // Longer than topics usually are: per-lane counts could overflow, so count apart.
        return is_plain_topic(bytes).then(|| 1 + bytes.iter().filter(|&&b| b == b'/').count());
    }
    let mut acc = 0;
    // Per-lane counts: at most LANE_WORDS + 1 words, so no lane's sum passes 31.
    let mut lanes = 0;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let w = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        acc |= bad(w);
        lanes += slashes(w);
    }
    let rest = chunks.remainder().len();
    if rest != 0 {
        let w = match bytes.last_chunk::<8>() {
            // The first `8 - rest` bytes were counted already: shifted out of the count
            // (little-endian order puts them lowest), and the zeros shifted in are no `/`.
            Some(last) => {
                let w = u64::from_le_bytes(*last);
                acc |= bad(w);
                w >> (8 * (8 - rest))
            }
            None => {
                let mut padded = [b'a'; 8];
                for (to, &from) in padded.iter_mut().zip(bytes) {
                    *to = from;
                }
                let w = u64::from_le_bytes(padded);
                acc |= bad(w);
                w
            }
        };
        lanes += slashes(w);
    }
    (acc & HI == 0).then_some(lane_sum(lanes) + 1)
}

/// The `/` bytes of `bytes`, whatever the other bytes are, eight at a time: for
/// [`ByteStr::check_topic_name`], which counts the levels of a topic whose characters were
/// checked when it was decoded.
#[inline]
pub(crate) fn count_slashes(bytes: &[u8]) -> usize {
    const LO: u64 = u64::from_le_bytes([0x01; 8]);
    const LOW7: u64 = u64::from_le_bytes([0x7F; 8]);
    const SLASH: u64 = u64::from_le_bytes([b'/'; 8]);
    /// 1 in each byte lane of `w` that holds `/`, whatever the other bytes: no carry crosses
    /// a lane, since each lane's low seven bits are added alone.
    #[inline(always)]
    const fn slashes(w: u64) -> u64 {
        let y = w ^ SLASH;
        (!(((y & LOW7) + LOW7) | y | LOW7)) >> 7
    }
    if bytes.len() > LANE_WORDS * 8 {
        return bytes.iter().filter(|&&b| b == b'/').count();
    }
    let mut lanes = 0;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        lanes += slashes(u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8])));
    }
    let rest = chunks.remainder().len();
    if rest != 0 {
        let w = match bytes.last_chunk::<8>() {
            // Shifted as in `plain_topic_levels`: only the bytes not counted yet remain.
            Some(last) => u64::from_le_bytes(*last) >> (8 * (8 - rest)),
            None => {
                let mut padded = [0; 8];
                for (to, &from) in padded.iter_mut().zip(bytes) {
                    *to = from;
                }
                u64::from_le_bytes(padded)
            }
        };
        lanes += slashes(w);
    }
    (lanes.wrapping_mul(LO) >> 56) as usize
}

/// Longest topic, in eight-byte words, whose `/` bytes [`plain_topic_levels`] counts in byte
/// lanes: with the tail, a lane counts at most 31, and the eight lanes add up within a byte.
const LANE_WORDS: usize = 30;

/// Looks for U+0000, the topic wildcards and non-ASCII bytes in one pass, eight bytes at a time.
///
/// Topic names are checked on every PUBLISH: a byte-wise loop with an early exit does not
/// vectorize, and for a typical 20-byte topic it cost more than the rest of encoding the PUBLISH.
/// An ASCII string, the usual case, also needs no further UTF-8 check.
#[inline]
pub(crate) fn scan(bytes: &[u8]) -> Scan {
    const LO: u64 = u64::from_ne_bytes([0x01; 8]);
    const HI: u64 = u64::from_ne_bytes([0x80; 8]);
    const PLUS: u64 = u64::from_ne_bytes([b'+'; 8]);
    const HASH: u64 = u64::from_ne_bytes([b'#'; 8]);
    // Non-zero exactly when some byte of `x` is zero.
    const fn zero_byte(x: u64) -> u64 {
        x.wrapping_sub(LO) & !x & HI
    }
    let (mut nul, mut wildcard, mut high) = (0, 0, 0);
    let mut word = |word: u64| {
        nul |= zero_byte(word);
        wildcard |= zero_byte(word ^ PLUS) | zero_byte(word ^ HASH);
        high |= word & HI;
    };
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        word(u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8])));
    }
    if !chunks.remainder().is_empty() {
        match bytes.last_chunk::<8>() {
            // The last eight bytes overlap bytes already scanned, which changes nothing.
            Some(last) => word(u64::from_ne_bytes(*last)),
            // Shorter than eight bytes: pad with a byte that is none of the above.
            None => {
                let mut padded = [b'a'; 8];
                for (to, &from) in padded.iter_mut().zip(bytes) {
                    *to = from;
                }
                word(u64::from_ne_bytes(padded));
            }
        }
    }
    Scan {
        nul: nul != 0,
        wildcard: wildcard != 0,
        ascii: high == 0,
    }
}

pub(crate) const fn varint_len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes a variable byte integer. Callers keep `value` within [`MAX_VARINT`].
pub(crate) fn put_varint(buf: &mut BytesMut, mut value: u32) {
    loop {
        let byte = (value & 0x7F) as u8;
        value >>= 7;
        if value == 0 {
            buf.put_u8(byte);
            return;
        }
        buf.put_u8(byte | 0x80);
    }
}

/// Encoded size of a string or binary field, checking the 65,535-byte limit.
pub(crate) fn field_len(bytes: &[u8]) -> Result<usize, EncodeError> {
    if bytes.len() > MAX_FIELD {
        return Err(EncodeError::FieldTooLong);
    }
    Ok(2 + bytes.len())
}

/// Encoded size of a string, checking the limit and the absence of U+0000 [MQTT-1.5.4-2].
pub(crate) fn str_len(s: &ByteStr) -> Result<usize, EncodeError> {
    // A string known to be clean has no U+0000: decoding and construction learnt that
    // already, so the scan is skipped.
    let (bytes, known_clean) = s.bytes_and_clean();
    if !known_clean && bytes.contains(&0) {
        return Err(EncodeError::NullCharacter);
    }
    field_len(bytes)
}

/// Writes a field whose length was checked by [`field_len`] or [`str_len`].
pub(crate) fn put_binary(buf: &mut BytesMut, bytes: &[u8]) {
    buf.put_u16(bytes.len() as u16);
    buf.put_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MQTT 5.0 §1.5.5 Table 1-1 (3.1.1 §2.2.3 Table 2.4): the boundaries of each length.
    const TABLE: &[(u32, &[u8])] = &[
        (0, &[0x00]),
        (127, &[0x7F]),
        (128, &[0x80, 0x01]),
        (16_383, &[0xFF, 0x7F]),
        (16_384, &[0x80, 0x80, 0x01]),
        (2_097_151, &[0xFF, 0xFF, 0x7F]),
        (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
        (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
    ];

    #[test]
    fn varint_table_1_1_round_trips() {
        for &(value, bytes) in TABLE {
            assert_eq!(
                parse_varint(bytes),
                Ok(Some((value, bytes.len()))),
                "{value}"
            );
            assert_eq!(varint_len(value), bytes.len(), "{value}");
            let mut buf = BytesMut::new();
            put_varint(&mut buf, value);
            assert_eq!(&buf[..], bytes, "{value}");
            // Every strict prefix is incomplete.
            for end in 0..bytes.len() {
                assert_eq!(
                    parse_varint(&bytes[..end]),
                    Ok(None),
                    "{value} prefix {end}"
                );
            }
        }
    }

    /// [MQTT-1.5.5-1]: no more than four bytes, and the fewest bytes needed.
    #[test]
    fn varint_overlong_and_non_minimal_are_malformed() {
        let err = Err(DecodeError::MalformedVariableInteger);
        assert_eq!(parse_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]), err);
        assert_eq!(parse_varint(&[0x80, 0x80, 0x80, 0x80]), err);
        assert_eq!(parse_varint(&[0x80, 0x00]), err);
        assert_eq!(parse_varint(&[0xFF, 0x80, 0x00]), err);
        assert_eq!(parse_varint(&[0x80, 0x80, 0x80, 0x00]), err);
    }

    #[test]
    fn strings_are_checked_for_utf8_and_null() {
        let mut ok = Bytes::from_static(b"\x00\x03a/b rest");
        assert_eq!(read_str(&mut ok).unwrap(), "a/b");
        assert_eq!(&ok[..], b" rest");
        let mut overlong = Bytes::from_static(b"\x00\x02\xC0\x80");
        assert_eq!(read_str(&mut overlong), Err(DecodeError::InvalidUtf8));
        let mut null = Bytes::from_static(b"\x00\x01\x00");
        assert_eq!(read_str(&mut null), Err(DecodeError::NullCharacter));
        let mut short = Bytes::from_static(b"\x00\x04abc");
        assert_eq!(read_str(&mut short), Err(DecodeError::LengthOutOfBounds));
    }
}

#[cfg(test)]
mod scan_tests {
    use super::{count_slashes, is_plain_topic, plain_topic_levels, scan, Scan};

    fn clean() -> Scan {
        Scan {
            nul: false,
            wildcard: false,
            ascii: true,
        }
    }

    /// The eight-bytes-at-a-time scan agrees with a byte-wise one at every position and length.
    #[test]
    fn scan_matches_bytewise() {
        for len in 0..=33 {
            for pos in 0..len {
                for special in [
                    0u8, b'+', b'#', b'/', 0x80, 0xFF, 0x01, 0x7F, 0x2A, 0x2C, 0xC3,
                ] {
                    let mut bytes = vec![b'a'; len];
                    bytes[pos] = special;
                    let expected = Scan {
                        nul: bytes.contains(&0),
                        wildcard: bytes.iter().any(|&b| b == b'+' || b == b'#'),
                        ascii: bytes.is_ascii(),
                    };
                    assert_eq!(scan(&bytes), expected, "{bytes:?}");
                    assert_eq!(is_plain_topic(&bytes), expected == clean(), "{bytes:?}");
                }
            }
        }
        let clean = Scan {
            nul: false,
            wildcard: false,
            ascii: true,
        };
        assert_eq!(scan(b""), clean);
        assert_eq!(scan(b"sensors/dev-0042/tmp"), clean);
        assert!(is_plain_topic(b""));
        assert!(is_plain_topic(b"sensors/dev-0042/tmp"));
        assert!(!is_plain_topic("ünïcødé/topic/é".as_bytes()));
        let unicode = Scan {
            ascii: false,
            ..clean
        };
        assert_eq!(scan("ünïcødé/topic/é".as_bytes()), unicode);
    }

    /// The level count agrees with a byte-wise one wherever the `/` bytes fall, at every
    /// length around the eight-byte steps and around the 31 words after which lane counts
    /// are added up, and is given exactly for plain topics.
    #[test]
    fn levels_match_bytewise() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for len in (0..=41).chain([247, 248, 249, 255, 256, 257, 500, 2048]) {
            for _ in 0..64 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        match seed % 32 {
                            0 => b'+',
                            1 => 0x80,
                            // `/` with the high bit set, which must not count as one.
                            10 => 0xAF,
                            2..=9 => b'/',
                            _ => b'a',
                        }
                    })
                    .collect();
                let slashes = bytes.iter().filter(|&&b| b == b'/').count();
                let expected = is_plain_topic(&bytes).then_some(1 + slashes);
                assert_eq!(plain_topic_levels(&bytes), expected, "{bytes:?}");
                assert_eq!(count_slashes(&bytes), slashes, "{bytes:?}");
            }
            let slashes = vec![b'/'; len];
            assert_eq!(plain_topic_levels(&slashes), Some(len + 1));
            assert_eq!(count_slashes(&slashes), len);
        }
        assert_eq!(plain_topic_levels(b"sensors/dev-0042/tmp"), Some(3));
        assert_eq!(plain_topic_levels(b""), Some(1));
        assert_eq!(plain_topic_levels("a/\u{e9}".as_bytes()), None);
    }
}
