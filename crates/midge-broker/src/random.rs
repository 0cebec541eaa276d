//! Randomness from the operating system's secure source, for what must not be guessed.

use midge_codec::ByteStr;

/// Random bits in an assigned client identifier.
const ASSIGNED_ID_BITS: usize = 128;

/// The characters of an assigned identifier: RFC 4648's base32 alphabet, in lower case, so
/// that the identifier is plain ASCII that every client and tool accepts.
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// An identifier for a client that sent none: `midge-` and 26 base32 characters that carry
/// 128 bits from the operating system's secure random source, 32 bytes in all.
///
/// A client that could guess the identifier the next client will be assigned could connect
/// under it first and receive that client's messages, or take its session over later. With
/// 128 random bits nothing about one identifier tells anything about another, and two are
/// never the same in practice. `None` when the random source fails: the client is then
/// refused rather than given an identifier that could be guessed.
pub(crate) fn assigned_client_id() -> Option<ByteStr> {
    let mut bits = [0u8; ASSIGNED_ID_BITS / 8];
    getrandom::fill(&mut bits).ok()?;
    Some(ByteStr::from(format_assigned_id(u128::from_be_bytes(bits))))
}

/// `midge-` and `bits` in base32, five bits per character, the most significant first.
fn format_assigned_id(bits: u128) -> String {
    const CHARS: usize = ASSIGNED_ID_BITS.div_ceil(5);
    let mut id = String::with_capacity(6 + CHARS);
    id.push_str("midge-");
    for i in (0..CHARS).rev() {
        let index = (bits >> (i * 5)) as usize & 31;
        id.push(char::from(BASE32.get(index).copied().unwrap_or(b'a')));
    }
    id
}

/// A seed for the random choices that need not be secret (the `random` shared-subscription
/// strategy): from the secure source, or from the clock if that fails.
pub(crate) fn seed() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assigned_identifier_is_32_bytes_of_base32_after_the_prefix() {
        assert_eq!(format_assigned_id(0), format!("midge-{}", "a".repeat(26)));
        // The top character carries the 3 highest bits, the others 5 each.
        assert_eq!(
            format_assigned_id(u128::MAX),
            format!("midge-h{}", "7".repeat(25))
        );
        assert_eq!(
            format_assigned_id(1 << 5),
            format!("midge-{}ba", "a".repeat(24))
        );
        let id = assigned_client_id().expect("the OS has a random source");
        assert_eq!(id.len(), 32);
        assert!(id.len() <= ByteStr::INLINE_CAPACITY);
        assert!(
            id.as_str().bytes().skip(6).all(|b| BASE32.contains(&b)),
            "{id}"
        );
    }
}
