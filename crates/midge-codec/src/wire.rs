//! Wire primitives: integers, variable byte integers, strings and binary data (§1.5).
//!
//! Readers take the rest of one packet's body as `Bytes`, so a length that points past the end
//! of the packet is an error here and never reads into the next packet.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::types::ByteStr;
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
    let bytes = read_binary(buf)?;
    check_utf8(&bytes)?;
    Ok(ByteStr::from_checked(bytes))
}

pub(crate) fn check_utf8(bytes: &[u8]) -> Result<(), DecodeError> {
    if core::str::from_utf8(bytes).is_err() {
        return Err(DecodeError::InvalidUtf8);
    }
    // UTF-8 never uses the byte 0 except to encode U+0000 itself.
    if bytes.contains(&0) {
        return Err(DecodeError::NullCharacter);
    }
    Ok(())
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
    if s.as_bytes().contains(&0) {
        return Err(EncodeError::NullCharacter);
    }
    field_len(s.as_bytes())
}

/// Writes a field whose length was checked by [`field_len`] or [`str_len`].
pub(crate) fn put_binary(buf: &mut BytesMut, bytes: &[u8]) {
    buf.put_u16(bytes.len() as u16);
    buf.put_slice(bytes);
}
