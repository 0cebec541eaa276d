//! TCP reassembly: each direction of a connection put back in sequence order, with segments
//! that arrive early held until the gap before them is filled, retransmitted bytes dropped, a
//! bound on what is held, and the bytes a capture did not keep (frames cut short by its
//! snapshot length) marked as lost.

use std::collections::BTreeMap;

/// A run of a direction's stream, in order.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Piece {
    /// Bytes as they were sent.
    Bytes(Vec<u8>),
    /// Bytes that were sent but are not in the capture: `len` of them from stream offset
    /// `at`, the end of the segment of capture frame `frame`.
    Lost { at: u64, len: u64, frame: u64 },
}

/// What one segment's arrival gives a direction.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Delivered {
    /// What now follows the stream's end, in order: this segment's and any held ones that it
    /// made contiguous.
    pub(super) pieces: Vec<Piece>,
    /// Set when the bytes held past a gap went over the bound: the stream is cut at this
    /// offset, and nothing more is delivered.
    pub(super) cut: Option<Cut>,
}

impl Delivered {
    fn bytes(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        match self.pieces.last_mut() {
            Some(Piece::Bytes(last)) => last.extend_from_slice(bytes),
            _ => self.pieces.push(Piece::Bytes(bytes.to_vec())),
        }
    }

    /// Whether nothing was delivered.
    pub(super) fn is_empty(&self) -> bool {
        self.pieces.is_empty() && self.cut.is_none()
    }

    /// The first byte delivered, if the delivery starts with bytes.
    pub(super) fn first_byte(&self) -> Option<u8> {
        match self.pieces.first() {
            Some(Piece::Bytes(bytes)) => bytes.first().copied(),
            _ => None,
        }
    }
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

/// A segment held past a gap: its captured bytes, then the bytes the capture lost.
#[derive(Debug)]
struct Held {
    bytes: Vec<u8>,
    lost: u64,
    frame: u64,
}

/// What a held segment counts against the bound at least, whatever it captured: a segment
/// with no bytes in the capture still takes memory.
pub(super) const HELD_MIN_COST: usize = 64;

impl Held {
    /// What it counts against the bound.
    fn cost(&self) -> usize {
        self.bytes.len().max(HELD_MIN_COST)
    }
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
    held: BTreeMap<u64, Held>,
    /// Captured bytes held.
    held_bytes: usize,
    /// What the held segments count against `limit`: their bytes, at least
    /// [`HELD_MIN_COST`] each.
    held_cost: usize,
    /// Most bytes held past a gap.
    limit: usize,
    /// Cut or stopped: nothing more is held or delivered.
    cut: bool,
    /// Sequence number of the FIN, once seen: the stream ends there.
    fin_seq: Option<u32>,
    /// Bytes seen again (retransmissions, overlaps) and dropped.
    pub(super) retransmitted: u64,
    /// Whether bytes of this direction are missing from the capture (said once).
    pub(super) has_gap: bool,
}

impl Direction {
    pub(super) fn new(limit: usize) -> Self {
        Self {
            next_seq: None,
            delivered: 0,
            held: BTreeMap::new(),
            held_bytes: 0,
            held_cost: 0,
            limit,
            cut: false,
            fin_seq: None,
            retransmitted: 0,
            has_gap: false,
        }
    }

    /// A SYN with sequence number `seq`: the first data byte is `seq + 1`. A SYN seen again
    /// (retransmitted) changes nothing once data has come.
    pub(super) fn syn(&mut self, seq: u32) {
        if self.delivered == 0 && self.held.is_empty() {
            self.next_seq = Some(seq.wrapping_add(1));
        }
    }

    /// A FIN at sequence number `seq` (after the segment's payload): the stream ends there.
    pub(super) fn fin(&mut self, seq: u32) {
        self.fin_seq = Some(seq);
    }

    /// Whether the stream is over: its FIN came and every byte before it was delivered (or
    /// the direction was stopped).
    pub(super) fn finished(&self) -> bool {
        let Some(fin) = self.fin_seq else {
            return false;
        };
        self.cut || (self.held.is_empty() && self.next_seq.is_none_or(|next| next == fin))
    }

    /// Nothing of this direction is wanted any more: what is held is dropped, and later
    /// segments are neither held nor delivered.
    pub(super) fn stop(&mut self) {
        self.cut = true;
        self.held.clear();
        self.held_bytes = 0;
        self.held_cost = 0;
    }

    /// Captured bytes held past a gap.
    #[cfg(test)]
    pub(super) fn held_bytes(&self) -> usize {
        self.held_bytes
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

    /// A segment carrying `payload` from sequence number `seq`, followed by `lost` bytes
    /// that the capture did not keep; `frame` is its capture frame.
    pub(super) fn segment(&mut self, seq: u32, payload: &[u8], lost: u32, frame: u64) -> Delivered {
        let mut out = Delivered::default();
        let len = payload.len() as u64 + u64::from(lost);
        if self.cut || len == 0 {
            return out;
        }
        let next = *self.next_seq.get_or_insert(seq);
        // Distance from the next expected byte, in sequence space (which wraps).
        let ahead = seq.wrapping_sub(next) as i32;
        if ahead <= 0 {
            let old = u64::from(ahead.unsigned_abs());
            let held = Held {
                bytes: payload.to_vec(),
                lost: u64::from(lost),
                frame,
            };
            self.deliver(old, held, &mut out);
            self.drain_held(&mut out);
        } else {
            let at = self.delivered + ahead as u64;
            let longer = self
                .held
                .get(&at)
                .is_none_or(|h| (h.bytes.len() as u64 + h.lost) < len);
            if longer {
                let held = Held {
                    bytes: payload.to_vec(),
                    lost: u64::from(lost),
                    frame,
                };
                self.held_cost += held.cost();
                if let Some(before) = self.held.insert(at, held) {
                    self.held_bytes -= before.bytes.len();
                    self.held_cost -= before.cost();
                }
                self.held_bytes += payload.len();
            } else {
                self.retransmitted += payload.len() as u64;
            }
            if self.held_cost > self.limit {
                out.cut = Some(Cut {
                    at: self.delivered,
                    held: self.held_cost,
                });
                self.stop();
            }
        }
        out
    }

    /// Delivers `segment`, which starts `old` bytes before the stream's end (those are
    /// dropped as seen before).
    fn deliver(&mut self, old: u64, segment: Held, out: &mut Delivered) {
        let captured = segment.bytes.len() as u64;
        if old >= captured + segment.lost {
            self.retransmitted += captured.min(old);
            return;
        }
        self.retransmitted += old.min(captured);
        if old < captured {
            out.bytes(&segment.bytes[old as usize..]);
            self.advance(captured - old);
        }
        let lost = (captured + segment.lost - old).min(segment.lost);
        if lost > 0 {
            out.pieces.push(Piece::Lost {
                at: self.delivered,
                len: lost,
                frame: segment.frame,
            });
            self.advance(lost);
        }
    }

    fn advance(&mut self, n: u64) {
        self.delivered += n;
        if let Some(next) = &mut self.next_seq {
            *next = next.wrapping_add(n as u32);
        }
    }

    /// Delivers the held segments that the stream's end has reached.
    fn drain_held(&mut self, out: &mut Delivered) {
        while let Some(entry) = self.held.first_entry() {
            let at = *entry.key();
            if at > self.delivered {
                break;
            }
            let segment = entry.remove();
            self.held_bytes -= segment.bytes.len();
            self.held_cost -= segment.cost();
            self.deliver(self.delivered - at, segment, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of a delivery, which must hold no lost run.
    fn bytes(d: Delivered) -> Vec<u8> {
        d.pieces
            .into_iter()
            .flat_map(|p| match p {
                Piece::Bytes(b) => b,
                lost => panic!("{lost:?}"),
            })
            .collect()
    }

    #[test]
    fn in_order_out_of_order_and_retransmitted() {
        let mut d = Direction::new(1000);
        d.syn(999);
        assert_eq!(bytes(d.segment(1000, b"abc", 0, 0)), b"abc");
        // Early: held.
        assert_eq!(bytes(d.segment(1006, b"ghi", 0, 0)), b"");
        assert_eq!(d.unfilled(), Some(Cut { at: 3, held: 3 }));
        // A retransmission of what was delivered: dropped.
        assert_eq!(bytes(d.segment(1000, b"abc", 0, 0)), b"");
        // Overlapping the end: only the new part, then what was held.
        assert_eq!(bytes(d.segment(1002, b"cdef", 0, 0)), b"defghi");
        assert_eq!(d.unfilled(), None);
        assert_eq!(d.offset(), 9);
        assert_eq!(d.retransmitted, 4);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut d = Direction::new(1000);
        d.syn(u32::MAX - 1);
        assert_eq!(bytes(d.segment(u32::MAX, b"ab", 0, 0)), b"ab");
        assert_eq!(bytes(d.segment(1, b"cd", 0, 0)), b"cd");
        let mut d = Direction::new(1000);
        d.syn(u32::MAX - 2);
        assert_eq!(bytes(d.segment(0, b"cd", 0, 0)), b"");
        assert_eq!(bytes(d.segment(u32::MAX - 1, b"ab", 0, 0)), b"abcd");
    }

    #[test]
    fn too_much_held_cuts_the_stream() {
        let mut d = Direction::new(200);
        d.syn(0);
        assert_eq!(d.segment(5, &[b'a'; 100], 0, 0).cut, None);
        assert_eq!(d.segment(300, &[b'b'; 100], 0, 0).cut, None);
        let cut = d.segment(400, &[b'c'; 10], 0, 0).cut;
        // 100 + 100, and the small one counts as HELD_MIN_COST.
        assert_eq!(cut, Some(Cut { at: 0, held: 264 }));
        assert_eq!(bytes(d.segment(1, b"0123", 0, 0)), b"");
    }

    #[test]
    fn held_segments_with_nothing_captured_count_against_the_bound() {
        let limit = 1000;
        let mut d = Direction::new(limit);
        d.syn(0);
        let fit = limit / HELD_MIN_COST;
        for i in 0..fit {
            // 10 bytes the capture lost, none it kept, past a gap.
            let seq = 100 + 20 * i as u32;
            assert_eq!(d.segment(seq, b"", 10, i as u64).cut, None, "segment {i}");
        }
        assert_eq!(d.held_bytes(), 0);
        let cut = d.segment(100 + 20 * fit as u32, b"", 10, 99).cut;
        assert_eq!(
            cut,
            Some(Cut {
                at: 0,
                held: (fit + 1) * HELD_MIN_COST
            })
        );
        assert_eq!(d.held_bytes(), 0);
        assert!(d.segment(1, b"abc", 0, 100).is_empty(), "cut: nothing more");
    }

    #[test]
    fn without_a_syn_the_first_segment_starts_the_stream() {
        let mut d = Direction::new(10);
        assert_eq!(bytes(d.segment(77, b"xy", 0, 0)), b"xy");
        assert_eq!(bytes(d.segment(79, b"z", 0, 0)), b"z");
        assert_eq!(d.offset(), 3);
    }

    #[test]
    fn bytes_the_capture_lost_are_delivered_as_lost_in_their_place() {
        let mut d = Direction::new(100);
        d.syn(99);
        // Frame 7 held 3 of its 10 bytes; frame 9 came first, after it.
        assert_eq!(bytes(d.segment(110, b"xyz", 0, 9)), b"");
        let delivered = d.segment(100, b"abc", 7, 7);
        assert_eq!(
            delivered.pieces,
            [
                Piece::Bytes(b"abc".to_vec()),
                Piece::Lost {
                    at: 3,
                    len: 7,
                    frame: 7
                },
                Piece::Bytes(b"xyz".to_vec()),
            ]
        );
        assert_eq!(d.offset(), 13);
        // Seen again, cut short the same way: dropped.
        assert!(d.segment(100, b"abc", 7, 11).pieces.is_empty());
    }

    #[test]
    fn a_direction_is_finished_at_its_fin_and_a_stopped_one_holds_nothing() {
        let mut d = Direction::new(100);
        d.syn(0);
        assert_eq!(bytes(d.segment(5, b"late", 0, 0)), b"");
        d.fin(9);
        assert!(!d.finished(), "bytes 1 to 4 are missing");
        assert_eq!(bytes(d.segment(1, b"abcd", 0, 0)), b"abcdlate");
        assert!(d.finished());

        let mut d = Direction::new(100);
        d.syn(0);
        assert_eq!(bytes(d.segment(5, b"late", 0, 0)), b"");
        assert_eq!(d.held_bytes(), 4);
        d.stop();
        assert_eq!(d.held_bytes(), 0);
        assert!(d.segment(9, b"more", 0, 0).is_empty());
        assert_eq!(d.held_bytes(), 0);
        d.fin(13);
        assert!(d.finished());
    }
}
