//! What the payload carries, and the sets that tell losses and duplicates apart.
//!
//! Every payload of at least [`HEADER_LEN`] bytes starts with a header: a magic number, the run
//! (a random number per bench process), the publisher's index, the stream (which of the
//! publisher's topics), the sequence number within that stream, and the send time in
//! nanoseconds since the Unix epoch. The rest is filler. A subscriber in another process on the
//! same machine can therefore count per stream and measure end-to-end latency.

use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes of the payload header; shorter payloads carry none and are only counted.
pub(crate) const HEADER_LEN: usize = 28;
const MAGIC: [u8; 4] = *b"mdgb";

/// The highest sequence number a [`SeqSet`] tracks: 2^26 messages per stream, 8 MiB of bits.
/// Higher numbers are counted as untracked instead of growing memory further.
pub(crate) const MAX_TRACKED_SEQ: u32 = 1 << 26;

/// The header of one payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) run: u32,
    pub(crate) publisher: u32,
    pub(crate) stream: u32,
    pub(crate) seq: u32,
    /// Nanoseconds since the Unix epoch when the publisher encoded the message.
    pub(crate) sent_ns: u64,
}

impl Header {
    /// Writes the header into the front of `payload`; does nothing when it is too short.
    pub(crate) fn write(&self, payload: &mut [u8]) {
        let Some(head) = payload.get_mut(..HEADER_LEN) else {
            return;
        };
        head[0..4].copy_from_slice(&MAGIC);
        head[4..8].copy_from_slice(&self.run.to_be_bytes());
        head[8..12].copy_from_slice(&self.publisher.to_be_bytes());
        head[12..16].copy_from_slice(&self.stream.to_be_bytes());
        head[16..20].copy_from_slice(&self.seq.to_be_bytes());
        head[20..28].copy_from_slice(&self.sent_ns.to_be_bytes());
    }

    /// Reads a header, if the payload carries one.
    pub(crate) fn read(payload: &[u8]) -> Option<Self> {
        let head = payload.get(..HEADER_LEN)?;
        if head[0..4] != MAGIC {
            return None;
        }
        let u32_at =
            |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let mut ns = [0u8; 8];
        ns.copy_from_slice(&head[20..28]);
        Some(Self {
            run: u32_at(4),
            publisher: u32_at(8),
            stream: u32_at(12),
            seq: u32_at(16),
            sent_ns: u64::from_be_bytes(ns),
        })
    }
}

/// Nanoseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// What [`SeqSet::insert`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// First time.
    New,
    /// Already in the set.
    Duplicate,
    /// Beyond [`MAX_TRACKED_SEQ`]: not tracked.
    Untracked,
}

/// A set of sequence numbers, as a bitmap that grows up to the highest number seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SeqSet {
    words: Vec<u64>,
    len: u64,
    /// One past the highest sequence number inserted.
    end: u32,
}

impl SeqSet {
    /// Adds `seq`, growing the bitmap by at most `budget` 64-bit words (and taking them from
    /// it); beyond the budget the number is not tracked.
    pub(crate) fn insert(&mut self, seq: u32, budget: &mut u64) -> Seen {
        if seq >= MAX_TRACKED_SEQ {
            return Seen::Untracked;
        }
        let word = (seq / 64) as usize;
        let bit = 1u64 << (seq % 64);
        if self.words.len() <= word {
            let grow = (word + 1 - self.words.len()) as u64;
            if grow > *budget {
                return Seen::Untracked;
            }
            *budget -= grow;
            self.words.resize(word + 1, 0);
        }
        let Some(w) = self.words.get_mut(word) else {
            return Seen::Untracked;
        };
        if *w & bit != 0 {
            return Seen::Duplicate;
        }
        *w |= bit;
        self.len += 1;
        self.end = self.end.max(seq + 1);
        Seen::New
    }

    /// Whether `seq` is in the set.
    #[cfg(test)]
    pub(crate) fn contains(&self, seq: u32) -> bool {
        self.words
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1u64 << (seq % 64)) != 0)
    }

    /// How many numbers the set holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Numbers below the highest one seen that are missing: gaps in the stream.
    pub(crate) fn gaps(&self) -> u64 {
        u64::from(self.end) - self.len
    }

    /// How many numbers of `self` are not in `other`.
    pub(crate) fn count_missing_from(&self, other: Option<&Self>) -> u64 {
        let empty: &[u64] = &[];
        let theirs = other.map_or(empty, |o| o.words.as_slice());
        self.words
            .iter()
            .enumerate()
            .map(|(i, &w)| u64::from((w & !theirs.get(i).copied().unwrap_or(0)).count_ones()))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = Header {
            run: 0xdead_beef,
            publisher: 7,
            stream: 3,
            seq: 99,
            sent_ns: 1_700_000_000_123_456_789,
        };
        let mut payload = vec![0u8; 64];
        h.write(&mut payload);
        assert_eq!(Header::read(&payload), Some(h));
        assert_eq!(Header::read(&payload[..HEADER_LEN - 1]), None);
        assert_eq!(Header::read(&[0u8; 64]), None, "no magic");
        let mut short = vec![0u8; 10];
        h.write(&mut short);
        assert_eq!(short, vec![0u8; 10], "too short: left alone");
    }

    /// An unlimited budget.
    fn all() -> u64 {
        u64::MAX
    }

    #[test]
    fn seq_set_counts_duplicates_and_gaps() {
        let mut s = SeqSet::default();
        assert_eq!(s.insert(0, &mut all()), Seen::New);
        assert_eq!(s.insert(2, &mut all()), Seen::New);
        assert_eq!(s.insert(2, &mut all()), Seen::Duplicate);
        assert_eq!(s.insert(130, &mut all()), Seen::New);
        assert_eq!(s.len(), 3);
        assert_eq!(s.gaps(), 131 - 3);
        assert!(s.contains(130) && !s.contains(129) && !s.contains(10_000));
        assert_eq!(s.insert(MAX_TRACKED_SEQ, &mut all()), Seen::Untracked);
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn seq_set_stays_within_its_budget() {
        let mut s = SeqSet::default();
        let mut budget = 2;
        assert_eq!(s.insert(100, &mut budget), Seen::New, "needs words 0 and 1");
        assert_eq!(budget, 0);
        assert_eq!(s.insert(127, &mut budget), Seen::New, "word 1 exists");
        assert_eq!(
            s.insert(128, &mut budget),
            Seen::Untracked,
            "word 2 is over budget"
        );
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn missing_counts_the_difference() {
        let mut sent = SeqSet::default();
        let mut got = SeqSet::default();
        for i in 0..200 {
            sent.insert(i, &mut all());
            if i % 10 != 0 {
                got.insert(i, &mut all());
            }
        }
        got.insert(500, &mut all()); // received but not in `sent`: not a loss
        assert_eq!(sent.count_missing_from(Some(&got)), 20);
        assert_eq!(sent.count_missing_from(None), 200);
        assert_eq!(got.count_missing_from(Some(&sent)), 1);
    }
}
