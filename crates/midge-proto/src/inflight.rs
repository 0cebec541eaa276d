//! Packets in flight: kept in the order they were sent, found by packet identifier, and
//! allocating identifiers that are not in use.
//!
//! Order matters because a resumed session resends unacknowledged PUBLISH and PUBREL packets in
//! their original order [MQTT-4.4.0-1]. Lookup by identifier matters because every
//! acknowledgement names one. A `BTreeMap` keyed by a send sequence number gives the order, and
//! a second `BTreeMap` from identifier to sequence number gives the lookup (no hasher state, so an
//! idle connection's store is smaller, and 16-bit keys need no protection from collisions);
//! both shrink as packets are acknowledged, so a peer that never acknowledges one packet cannot
//! make the store grow past the number of packets actually in flight.

use std::collections::BTreeMap;

use midge_codec::{PacketId, PubAck, ReasonCode};

/// The PUBREL or PUBCOMP answering a PUBREC or PUBREL: success if `known` names a flow in
/// progress, otherwise 0x92 Packet Identifier not found in 5.0 (3.x has only success), so
/// the peer can finish its side either way (§4.3.3).
pub(crate) fn qos2_answer(packet_id: PacketId, known: bool, v5: bool) -> PubAck {
    let mut ack = PubAck::new(packet_id);
    if !known && v5 {
        ack.reason_code = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
    }
    ack
}

/// An ordered store of in-flight packets of type `T`, keyed by packet identifier.
#[derive(Clone, Debug)]
pub(crate) struct Inflight<T> {
    by_order: BTreeMap<u64, (PacketId, T)>,
    by_id: BTreeMap<PacketId, u64>,
    next_seq: u64,
    next_id: u16,
}

impl<T> Default for Inflight<T> {
    fn default() -> Self {
        Self {
            by_order: BTreeMap::new(),
            by_id: BTreeMap::new(),
            next_seq: 0,
            next_id: 0,
        }
    }
}

impl<T> Inflight<T> {
    /// An empty store.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Number of packets in flight.
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The next identifier not in flight, in increasing order with wrap-around, or `None` when
    /// all 65,535 are in use. An identifier is never reused while in flight [MQTT-2.2.1-3].
    ///
    /// The scan is short in practice: identifiers are handed out in order and usually
    /// acknowledged in order, so the next one is almost always free.
    pub(crate) fn next_free_id(&mut self) -> Option<PacketId> {
        if self.by_id.len() >= usize::from(u16::MAX) {
            return None;
        }
        loop {
            self.next_id = self.next_id.wrapping_add(1);
            if let Some(id) = PacketId::new(self.next_id) {
                if !self.by_id.contains_key(&id) {
                    return Some(id);
                }
            }
        }
    }

    /// Adds a packet at the end of the send order. Returns the value back if `id` is already in
    /// flight: the caller decides whether that is a protocol error.
    pub(crate) fn insert(&mut self, id: PacketId, value: T) -> Result<(), T> {
        if self.by_id.contains_key(&id) {
            return Err(value);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_id.insert(id, seq);
        self.by_order.insert(seq, (id, value));
        Ok(())
    }

    /// The packet in flight under `id`.
    pub(crate) fn get(&self, id: PacketId) -> Option<&T> {
        let seq = self.by_id.get(&id)?;
        self.by_order.get(seq).map(|(_, v)| v)
    }

    /// The packet in flight under `id`, to change its state in place (PUBLISH sent → PUBREC
    /// received keeps its position in the order, as PUBREL takes the PUBLISH's place).
    pub(crate) fn get_mut(&mut self, id: PacketId) -> Option<&mut T> {
        let seq = self.by_id.get(&id)?;
        self.by_order.get_mut(seq).map(|(_, v)| v)
    }

    /// Removes and returns the packet in flight under `id`.
    pub(crate) fn remove(&mut self, id: PacketId) -> Option<T> {
        let seq = self.by_id.remove(&id)?;
        self.by_order.remove(&seq).map(|(_, v)| v)
    }

    /// The packets in the order they were first sent.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (PacketId, &T)> {
        self.by_order.values().map(|(id, v)| (*id, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u16) -> PacketId {
        PacketId::new(n).unwrap()
    }

    #[test]
    fn identifiers_in_flight_are_never_reused() {
        // [MQTT-2.2.1-3]
        let mut inflight = Inflight::new();
        let first = inflight.next_free_id().unwrap();
        inflight.insert(first, "a").unwrap();
        for _ in 0..70_000 {
            let next = inflight.next_free_id().unwrap();
            assert_ne!(next, first);
        }
    }

    #[test]
    fn allocation_stops_when_every_identifier_is_in_flight() {
        let mut inflight = Inflight::new();
        for _ in 0..u16::MAX {
            let next = inflight.next_free_id().unwrap();
            inflight.insert(next, ()).unwrap();
        }
        assert_eq!(inflight.next_free_id(), None);
        inflight.remove(id(500)).unwrap();
        assert_eq!(inflight.next_free_id(), Some(id(500)));
    }

    #[test]
    fn duplicate_insert_is_refused() {
        let mut inflight = Inflight::new();
        inflight.insert(id(1), "a").unwrap();
        assert_eq!(inflight.insert(id(1), "b"), Err("b"));
        assert_eq!(inflight.get(id(1)), Some(&"a"));
    }

    #[test]
    fn state_change_keeps_the_original_order() {
        // [MQTT-4.4.0-1]: resend in the original order, PUBRELs where their PUBLISH was.
        let mut inflight = Inflight::new();
        for n in 1..=3 {
            inflight.insert(id(n), "publish").unwrap();
        }
        *inflight.get_mut(id(1)).unwrap() = "pubrel";
        let order: Vec<_> = inflight.iter().map(|(i, s)| (i.get(), *s)).collect();
        assert_eq!(order, [(1, "pubrel"), (2, "publish"), (3, "publish")]);
    }

    proptest! {
        /// Against a Vec model: same contents, same order, whatever the operations.
        #[test]
        fn matches_a_vec_model(ops in proptest::collection::vec((any::<bool>(), 1u16..20), 0..200)) {
            let mut inflight = Inflight::new();
            let mut model: Vec<(u16, u32)> = Vec::new();
            for (n, (insert, raw)) in ops.into_iter().enumerate() {
                let n = n as u32;
                if insert {
                    let ok = inflight.insert(id(raw), n).is_ok();
                    prop_assert_eq!(ok, !model.iter().any(|(i, _)| *i == raw));
                    if ok { model.push((raw, n)); }
                } else {
                    let got = inflight.remove(id(raw));
                    let pos = model.iter().position(|(i, _)| *i == raw);
                    prop_assert_eq!(got, pos.map(|p| model.remove(p).1));
                }
                let order: Vec<_> = inflight.iter().map(|(i, v)| (i.get(), *v)).collect();
                prop_assert_eq!(&order, &model);
                prop_assert_eq!(inflight.by_order.len(), model.len());
            }
        }
    }
}
