//! TCP reassembly: each direction of a connection put back in sequence order, with segments
//! that arrive early held until the gap before them is filled, retransmitted bytes dropped, and
//! a bound on what is held.

use std::collections::BTreeMap;

/// What one segment's arrival gives a direction.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Delivered {
    /// Bytes that now follow the stream's end, in order: this segment's and any held ones
    /// that it made contiguous.
    pub(super) bytes: Vec<u8>,
    /// Set when the bytes held past a gap went over the bound: the stream is cut at this
    /// offset, and nothing more is delivered.
    pub(super) cut: Option<Cut>,
}

/// A stream cut short because a gap was not filled while the bytes after it went over the
/// bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cut {
    /// Offset of the first missing byte.
    pub(super) at: u64,
    /// Bytes held after the gap when it was given up.
    pub(super) held: usize,
}

/// One direction of a TCP connection.
#[derive(Debug)]
pub(super) struct Direction {
    /// Sequence number of the next byte expected, once known (from the SYN, or the first
    /// segment seen).
    next_seq: Option<u32>,
    /// Bytes delivered so far: the stream offset of the next byte.
    delivered: u64,
    /// Segments that arrived past a gap, by stream offset.
    held: BTreeMap<u64, Vec<u8>>,
    held_bytes: usize,
    /// Most bytes held past a gap.
    limit: usize,
    /// Cut: nothing more is delivered.
    cut: bool,
    /// Bytes seen again (retransmissions, overlaps) and dropped.
    pub(super) retransmitted: u64,
}

impl Direction {
    pub(super) fn new(limit: usize) -> Self {
        Self {
            next_seq: None,
            delivered: 0,
            held: BTreeMap::new(),
            held_bytes: 0,
            limit,
            cut: false,
            retransmitted: 0,
        }
    }

    /// A SYN with sequence number `seq`: the first data byte is `seq + 1`. A SYN seen again
    /// (retransmitted) changes nothing once data has come.
    pub(super) fn syn(&mut self, seq: u32) {
        if self.delivered == 0 && self.held.is_empty() {
            self.next_seq = Some(seq.wrapping_add(1));
        }
    }

    /// Stream offset of the next byte to deliver.
    pub(super) fn offset(&self) -> u64 {
        self.delivered
    }

    /// Bytes held past a gap that was never filled: what is left when the capture ends.
    pub(super) fn unfilled(&self) -> Option<Cut> {
        (!self.held.is_empty()).then_some(Cut {
            at: self.delivered,
            held: self.held_bytes,
        })
    }

    /// A segment carrying `payload` from sequence number `seq`.
    pub(super) fn segment(&mut self, seq: u32, payload: &[u8]) -> Delivered {
        let mut out = Delivered::default();
        if self.cut || payload.is_empty() {
            return out;
        }
        let next = *self.next_seq.get_or_insert(seq);
        // Distance from the next expected byte, in sequence space (which wraps).
        let ahead = seq.wrapping_sub(next) as i32;
        if ahead <= 0 {
            let old = ahead.unsigned_abs() as usize;
            if old >= payload.len() {
                self.retransmitted += payload.len() as u64;
                return out;
            }
            self.retransmitted += old as u64;
            out.bytes.extend_from_slice(&payload[old..]);
            self.advance(out.bytes.len());
            self.drain_held(&mut out.bytes);
        } else {
            let at = self.delivered + ahead as u64;
            let longer = self.held.get(&at).is_none_or(|h| h.len() < payload.len());
            if longer {
                let before = self
                    .held
                    .insert(at, payload.to_vec())
                    .map_or(0, |h| h.len());
                self.held_bytes = self.held_bytes - before + payload.len();
            } else {
                self.retransmitted += payload.len() as u64;
            }
            if self.held_bytes > self.limit {
                out.cut = Some(Cut {
                    at: self.delivered,
                    held: self.held_bytes,
                });
                self.cut = true;
                self.held.clear();
                self.held_bytes = 0;
            }
        }
        out
    }

    fn advance(&mut self, n: usize) {
        self.delivered += n as u64;
        if let Some(next) = &mut self.next_seq {
            *next = next.wrapping_add(n as u32);
        }
    }

    /// Delivers the held segments that the stream's end has reached.
    fn drain_held(&mut self, out: &mut Vec<u8>) {
        while let Some(entry) = self.held.first_entry() {
            let at = *entry.key();
            if at > self.delivered {
                break;
            }
            let bytes = entry.remove();
            self.held_bytes -= bytes.len();
            let old = (self.delivered - at) as usize;
            if old >= bytes.len() {
                self.retransmitted += bytes.len() as u64;
                continue;
            }
            self.retransmitted += old as u64;
            out.extend_from_slice(&bytes[old..]);
            self.advance(bytes.len() - old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_out_of_order_and_retransmitted() {
        let mut d = Direction::new(1000);
        d.syn(999);
        assert_eq!(d.segment(1000, b"abc").bytes, b"abc");
        // Early: held.
        assert_eq!(d.segment(1006, b"ghi").bytes, b"");
        assert_eq!(d.unfilled(), Some(Cut { at: 3, held: 3 }));
        // A retransmission of what was delivered: dropped.
        assert_eq!(d.segment(1000, b"abc").bytes, b"");
        // Overlapping the end: only the new part, then what was held.
        assert_eq!(d.segment(1002, b"cdef").bytes, b"defghi");
        assert_eq!(d.unfilled(), None);
        assert_eq!(d.offset(), 9);
        assert_eq!(d.retransmitted, 4);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut d = Direction::new(1000);
        d.syn(u32::MAX - 1);
        assert_eq!(d.segment(u32::MAX, b"ab").bytes, b"ab");
        assert_eq!(d.segment(1, b"cd").bytes, b"cd");
        let mut d = Direction::new(1000);
        d.syn(u32::MAX - 2);
        assert_eq!(d.segment(0, b"cd").bytes, b"");
        assert_eq!(d.segment(u32::MAX - 1, b"ab").bytes, b"abcd");
    }

    #[test]
    fn too_much_held_cuts_the_stream() {
        let mut d = Direction::new(4);
        d.syn(0);
        assert_eq!(d.segment(5, b"abc").cut, None);
        let cut = d.segment(8, b"de").cut;
        assert_eq!(cut, Some(Cut { at: 0, held: 5 }));
        assert_eq!(d.segment(1, b"0123").bytes, b"");
    }

    #[test]
    fn without_a_syn_the_first_segment_starts_the_stream() {
        let mut d = Direction::new(10);
        assert_eq!(d.segment(77, b"xy").bytes, b"xy");
        assert_eq!(d.segment(79, b"z").bytes, b"z");
        assert_eq!(d.offset(), 3);
    }
}
