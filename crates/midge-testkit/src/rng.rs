//! The simulation's only source of randomness: splitmix64 from the seed, so that a seed
//! replays exactly.

use std::time::Duration;

use midge_proto::splitmix64;

/// A seeded pseudo-random generator (splitmix64). Not for secrets.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator whose whole sequence follows from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            // Mixed once, so that neighbouring seeds start far apart.
            state: splitmix64::mix(seed ^ 0x5eed_0f6d_1d6e),
        }
    }

    /// An independent generator for one part of the simulation, so that drawing more numbers
    /// in one part does not shift every other part's sequence.
    pub fn fork(&mut self) -> Self {
        Self { state: self.u64() }
    }

    /// The next 64 random bits.
    pub fn u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(splitmix64::GAMMA);
        splitmix64::mix(self.state)
    }

    /// A number in `0..n`; 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Multiply-shift: no modulo bias worth speaking of for the small ranges used here.
        ((u128::from(self.u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high.saturating_sub(low) + 1)
    }

    /// An index into a collection of `len` items.
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// True with probability `per_mille` / 1000.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    /// One of `items`.
    ///
    /// # Panics
    ///
    /// When `items` is empty.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }

    /// A duration in `low..=high`, in whole milliseconds.
    pub fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(self.between(low, high))
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn a_seed_gives_the_same_sequence_and_ranges_hold() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..1000 {
            assert_eq!(a.u64(), b.u64());
            let n = a.between(3, 9);
            assert!((3..=9).contains(&n));
            assert_eq!(b.between(3, 9), n);
        }
        assert_ne!(Rng::new(7).u64(), Rng::new(8).u64());
        assert_eq!(a.below(0), 0);
    }
}
