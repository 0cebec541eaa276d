//! Deadlines in time order, without I/O: the caller passes the time in, asks for the earliest
//! deadline ([`Timers::poll_timeout`]) and takes what is due ([`Timers::pop_due`]). The broker
//! keeps one of these for every offline session's delayed will and expiry, and one task
//! sleeps until its earliest deadline.

use std::collections::BTreeMap;
use std::time::Instant;

/// Where a deadline sits in its [`Timers`]: kept by whoever may cancel it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct TimerKey {
    at: Instant,
    /// Tells apart deadlines at the same instant.
    seq: u64,
}

/// Values due at given instants, taken in time order (and in the order they were added, for
/// the same instant). Each entry stays until it is taken when due or removed by its key, so
/// that the map holds exactly the deadlines still to come.
#[derive(Debug)]
pub(crate) struct Timers<T> {
    entries: BTreeMap<TimerKey, T>,
    next_seq: u64,
}

impl<T> Default for Timers<T> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            next_seq: 0,
        }
    }
}

impl<T> Timers<T> {
    /// Adds `value`, due at `at`. Returns its key, and whether it is now the earliest deadline
    /// (so [`Timers::poll_timeout`] changed and a sleeper must wake sooner).
    pub(crate) fn insert(&mut self, at: Instant, value: T) -> (TimerKey, bool) {
        let key = TimerKey {
            at,
            seq: self.next_seq,
        };
        self.next_seq = self.next_seq.wrapping_add(1);
        let earliest = self.poll_timeout().is_none_or(|first| at < first);
        self.entries.insert(key, value);
        (key, earliest)
    }

    /// Removes a deadline before it is due; `None` if it was taken or removed already.
    pub(crate) fn remove(&mut self, key: TimerKey) -> Option<T> {
        self.entries.remove(&key)
    }

    /// The earliest deadline, if any. Changed by [`Timers::insert`], [`Timers::remove`] and
    /// [`Timers::pop_due`].
    #[must_use]
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.entries.first_key_value().map(|(key, _)| key.at)
    }

    /// Takes the earliest entry due at `now` (its deadline is `now` or earlier), if any. Call
    /// again until `None` to take everything due.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<T> {
        let first = self.entries.first_entry()?;
        (first.key().at <= now).then(|| first.remove())
    }

    /// The deadlines still to come.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn due_entries_come_out_in_time_order_then_in_insertion_order() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        assert_eq!(timers.poll_timeout(), None);
        assert!(
            timers.insert(t0 + secs(5), "five").1,
            "the first is the earliest"
        );
        assert!(timers.insert(t0 + secs(2), "two").1, "earlier than five");
        assert!(!timers.insert(t0 + secs(2), "two again").1, "not earlier");
        assert!(!timers.insert(t0 + secs(9), "nine").1);
        assert_eq!(timers.poll_timeout(), Some(t0 + secs(2)));

        assert_eq!(timers.pop_due(t0 + secs(1)), None, "nothing due yet");
        assert_eq!(timers.pop_due(t0 + secs(5)), Some("two"));
        assert_eq!(timers.pop_due(t0 + secs(5)), Some("two again"));
        assert_eq!(
            timers.pop_due(t0 + secs(5)),
            Some("five"),
            "due exactly now"
        );
        assert_eq!(timers.pop_due(t0 + secs(5)), None);
        assert_eq!(timers.poll_timeout(), Some(t0 + secs(9)));
        assert_eq!(timers.len(), 1);
    }

    #[test]
    fn a_removed_entry_never_comes_due_and_leaves_nothing_behind() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let (will, _) = timers.insert(t0 + secs(1), "will");
        let (expiry, _) = timers.insert(t0 + secs(4_294_967_294), "expiry");
        assert_eq!(timers.remove(will), Some("will"));
        assert_eq!(timers.remove(will), None, "removed once");
        assert_eq!(timers.poll_timeout(), Some(t0 + secs(4_294_967_294)));
        assert_eq!(timers.pop_due(t0 + secs(2)), None);
        assert_eq!(timers.remove(expiry), Some("expiry"));
        assert_eq!((timers.len(), timers.poll_timeout()), (0, None));
    }

    #[test]
    fn a_taken_entry_cannot_be_removed_again() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let (key, _) = timers.insert(t0, 1);
        assert_eq!(timers.pop_due(t0), Some(1));
        assert_eq!(timers.remove(key), None);
    }
}
