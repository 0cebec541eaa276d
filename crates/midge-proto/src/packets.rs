//! A queue of packets that keeps their contents out of `Debug` output.

use std::collections::VecDeque;
use std::fmt;
use std::ops::{Deref, DerefMut};

use midge_codec::Packet;

/// Packets to send, or held to be handled later. Its `Debug` output names their types only:
/// a CONNECT, AUTH or CONNACK may carry authentication data, which never reaches logs.
#[derive(Default)]
pub(crate) struct PacketQueue(VecDeque<Packet>);

impl PacketQueue {
    /// An empty queue, which holds no memory.
    pub(crate) const fn new() -> Self {
        Self(VecDeque::new())
    }

    /// Appends `packet` (here rather than through `DerefMut`, so that the argument may
    /// borrow the queue's owner).
    pub(crate) fn push_back(&mut self, packet: Packet) {
        self.0.push_back(packet);
    }
}

impl Deref for PacketQueue {
    type Target = VecDeque<Packet>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for PacketQueue {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl fmt::Debug for PacketQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(Packet::packet_type))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use midge_codec::Auth;

    #[test]
    fn the_debug_output_names_the_packets_and_hides_their_contents() {
        let mut auth = Auth::default();
        auth.properties.authentication_data = Some(Bytes::from_static(b"s3cret"));
        let mut queue = PacketQueue::new();
        queue.push_back(Packet::Auth(Box::new(auth)));
        queue.push_back(Packet::PingReq);
        assert_eq!(format!("{queue:?}"), "[Auth, PingReq]");
    }
}
