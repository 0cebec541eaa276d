//! splitmix64 (Steele, Lea and Flood, 2014): a counter stepped by [`GAMMA`] and passed
//! through [`mix`] gives well-spread 64-bit values, cheaply and without locks. For spreading
//! load and making nonces unlikely to repeat; never for secrets.

/// The step of the counter: 2^64 divided by the golden ratio, odd.
pub const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// The finaliser: a bijection on `u64` in which every input bit changes about half the
/// output bits.
#[must_use]
pub const fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::{mix, GAMMA};

    /// The first outputs of splitmix64 seeded with 0, from the reference implementation
    /// (https://prng.di.unimi.it/splitmix64.c).
    #[test]
    fn reference_sequence() {
        let mut state = 0u64;
        let mut next = || {
            state = state.wrapping_add(GAMMA);
            mix(state)
        };
        assert_eq!(next(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(next(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(next(), 0x06c4_5d18_8009_454f);
    }
}
