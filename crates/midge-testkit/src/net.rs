//! The virtual network: one ordered byte stream each way per connection, with latency, a
//! window (what TCP's buffers would hold before the writer must wait), stalls, and the end of
//! the stream.
//!
//! A [`Pipe`] is one direction. Bytes written wait until their delivery time; the reader
//! takes them when it reads, and until then they count against the window, so a reader that
//! does not read makes its writer stop, as a full TCP window does.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// What a reader takes from a pipe.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// Bytes.
    Data(Bytes),
    /// The writer closed the stream (or the network broke it): nothing follows.
    Close,
}

/// One direction of a connection.
#[derive(Debug)]
pub(crate) struct Pipe {
    queue: VecDeque<(Instant, Chunk)>,
    /// Bytes written and not yet taken by the reader.
    held: usize,
    /// The delivery time of the last chunk: chunks arrive in order.
    last_due: Option<Instant>,
    /// Nothing is delivered before this.
    stalled_until: Option<Instant>,
    /// Bytes accepted so far.
    pub(crate) sent: u64,
    /// Once closed (or broken), writes are dropped.
    closed: bool,
}

impl Pipe {
    pub(crate) fn new() -> Self {
        Self {
            queue: VecDeque::new(),
            held: 0,
            last_due: None,
            stalled_until: None,
            sent: 0,
            closed: false,
        }
    }

    /// Room left in a window of `window` bytes; a writer writes while there is any.
    pub(crate) fn room(&self, window: usize) -> usize {
        if self.closed {
            return 0;
        }
        window.saturating_sub(self.held)
    }

    /// Bytes written and not yet read.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    fn due(&mut self, now: Instant, latency: Duration) -> Instant {
        let at = (now + latency).max(self.last_due.unwrap_or(now));
        self.last_due = Some(at);
        at
    }

    /// Writes `data`, delivered after `latency` and after everything written before.
    pub(crate) fn send(&mut self, now: Instant, latency: Duration, data: Bytes) {
        if self.closed || data.is_empty() {
            return;
        }
        let at = self.due(now, latency);
        self.sent += data.len() as u64;
        self.held += data.len();
        self.queue.push_back((at, Chunk::Data(data)));
    }

    /// Ends the stream after what was written.
    pub(crate) fn close(&mut self, now: Instant, latency: Duration) {
        if self.closed {
            return;
        }
        let at = self.due(now, latency);
        self.queue.push_back((at, Chunk::Close));
        self.closed = true;
    }

    /// Breaks the stream at once: what is in flight is lost, and the reader learns of the
    /// end after `latency` (a reset), or never (`silent`, as when a host vanishes).
    pub(crate) fn break_off(&mut self, now: Instant, latency: Duration, silent: bool) {
        self.queue.clear();
        self.held = 0;
        self.last_due = None;
        self.closed = false;
        if silent {
            self.closed = true;
        } else {
            self.close(now, latency);
        }
    }

    /// Delivers nothing until `until`.
    pub(crate) fn stall(&mut self, until: Instant) {
        self.stalled_until = Some(self.stalled_until.map_or(until, |s| s.max(until)));
    }

    /// Ends a stall now.
    pub(crate) fn unstall(&mut self) {
        self.stalled_until = None;
    }

    /// When the reader can next take something.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        let (at, _) = self.queue.front()?;
        Some(match self.stalled_until {
            Some(s) => s.max(*at),
            None => *at,
        })
    }

    /// Takes what is due at `now`, at most `max` bytes of it.
    pub(crate) fn take(&mut self, now: Instant, max: usize) -> Option<Chunk> {
        if self.next_due()? > now || max == 0 {
            return None;
        }
        let (at, chunk) = self.queue.pop_front()?;
        match chunk {
            Chunk::Data(mut data) => {
                if data.len() > max {
                    let rest = data.split_off(max);
                    self.queue.push_front((at, Chunk::Data(rest)));
                }
                self.held -= data.len();
                Some(Chunk::Data(data))
            }
            Chunk::Close => Some(Chunk::Close),
        }
    }

    /// Keeps only the first `keep` more bytes in flight and ends the stream after them: the
    /// connection breaks in the middle of whatever those bytes belong to.
    pub(crate) fn truncate_after(&mut self, keep: usize, now: Instant, latency: Duration) {
        let mut kept = 0usize;
        let mut out = VecDeque::new();
        let mut last = None;
        for (at, chunk) in self.queue.drain(..) {
            if let Chunk::Data(mut data) = chunk {
                if kept >= keep {
                    continue;
                }
                if kept + data.len() > keep {
                    data.truncate(keep - kept);
                }
                kept += data.len();
                last = Some(at);
                out.push_back((at, Chunk::Data(data)));
            }
        }
        self.queue = out;
        self.held = kept;
        self.last_due = last;
        self.closed = false;
        self.close(now, latency);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(chunk: Option<Chunk>) -> Vec<u8> {
        match chunk {
            Some(Chunk::Data(b)) => b.to_vec(),
            other => panic!("expected data, got {other:?}"),
        }
    }

    #[test]
    fn bytes_arrive_in_order_after_the_latency_and_fill_the_window_until_read() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut p = Pipe::new();
        p.send(t0, ms(10), Bytes::from_static(b"abc"));
        // A shorter latency later cannot overtake.
        p.send(t0 + ms(1), ms(1), Bytes::from_static(b"de"));
        assert_eq!(p.room(8), 3);
        assert_eq!(p.take(t0 + ms(9), 100), None);
        assert_eq!(data(p.take(t0 + ms(10), 2)), b"ab");
        assert_eq!(data(p.take(t0 + ms(10), 100)), b"c");
        assert_eq!(data(p.take(t0 + ms(10), 100)), b"de");
        assert_eq!(p.room(8), 8);
        p.close(t0 + ms(20), ms(5));
        p.send(t0 + ms(21), ms(5), Bytes::from_static(b"lost"));
        assert_eq!(p.take(t0 + ms(25), 100), Some(Chunk::Close));
        assert_eq!(p.take(t0 + ms(99), 100), None);
    }

    #[test]
    fn a_stall_holds_delivery_and_a_truncation_breaks_the_stream_at_a_byte() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut p = Pipe::new();
        p.send(t0, ms(1), Bytes::from_static(b"hello"));
        p.send(t0, ms(1), Bytes::from_static(b"world"));
        p.stall(t0 + ms(50));
        assert_eq!(p.next_due(), Some(t0 + ms(50)));
        assert_eq!(p.take(t0 + ms(10), 100), None);
        p.truncate_after(7, t0 + ms(10), ms(1));
        p.unstall();
        assert_eq!(data(p.take(t0 + ms(11), 100)), b"hello");
        assert_eq!(data(p.take(t0 + ms(11), 100)), b"wo");
        assert_eq!(p.take(t0 + ms(11), 100), Some(Chunk::Close));
        assert!(p.is_closed());

        let mut q = Pipe::new();
        q.send(t0, ms(1), Bytes::from_static(b"gone"));
        q.break_off(t0, ms(3), true);
        assert_eq!(q.take(t0 + ms(100), 100), None);
        assert_eq!(q.held(), 0);
    }
}
