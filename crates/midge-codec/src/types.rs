//! Small value types shared by the packets.

use alloc::string::String;
use bytes::Bytes;
use core::fmt;
use core::num::{NonZeroU16, NonZeroU32};

/// A packet identifier. Zero is not a valid identifier [MQTT-2.3.1-1], so the type cannot hold it.
pub type PacketId = NonZeroU16;

/// The protocol version, from the protocol level byte of CONNECT.
///
/// It is a runtime value: one [`Packet`](crate::Packet) model serves all three versions, and the
/// version decides how a packet is laid out on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolVersion {
    /// MQTT 3.1: protocol name `MQIsdp`, level 3.
    V3_1,
    /// MQTT 3.1.1: protocol name `MQTT`, level 4.
    V3_1_1,
    /// MQTT 5.0: protocol name `MQTT`, level 5.
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte sent in CONNECT.
    pub const fn level(self) -> u8 {
        match self {
            Self::V3_1 => 3,
            Self::V3_1_1 => 4,
            Self::V5 => 5,
        }
    }

    /// The version for a protocol level byte, if it is one of 3, 4 and 5.
    pub const fn from_level(level: u8) -> Option<Self> {
        match level {
            3 => Some(Self::V3_1),
            4 => Some(Self::V3_1_1),
            5 => Some(Self::V5),
            _ => None,
        }
    }

    /// The protocol name sent in CONNECT.
    pub const fn protocol_name(self) -> &'static str {
        match self {
            Self::V3_1 => "MQIsdp",
            Self::V3_1_1 | Self::V5 => "MQTT",
        }
    }

    /// True for MQTT 5.0, the version with properties and reason codes.
    pub const fn is_v5(self) -> bool {
        matches!(self, Self::V5)
    }
}

/// Quality of service of a message (§4.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QoS {
    /// At most once.
    #[default]
    AtMostOnce = 0,
    /// At least once.
    AtLeastOnce = 1,
    /// Exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for its two-bit wire value; 3 is not a QoS [MQTT-3.3.1-4].
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }
}

/// When the server sends retained messages for a new subscription (5.0 §3.8.3.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RetainHandling {
    /// Send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// Send them only if the subscription did not exist before.
    SendIfNew = 1,
    /// Do not send retained messages.
    DoNotSend = 2,
}

/// The options byte of one SUBSCRIBE entry. In 3.x only `qos` exists on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SubscriptionOptions {
    /// Maximum QoS the server may use for this subscription.
    pub qos: QoS,
    /// 5.0: do not forward messages published by this same client [MQTT-3.8.3-3].
    pub no_local: bool,
    /// 5.0: keep the RETAIN flag of forwarded messages as published.
    pub retain_as_published: bool,
    /// 5.0: when to send retained messages.
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// Options with only a maximum QoS, which is all that 3.x can express.
    pub const fn qos(qos: QoS) -> Self {
        Self {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendAtSubscribe,
        }
    }
}

/// The Payload Format Indicator property (5.0 §3.3.2.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PayloadFormat {
    /// Unspecified bytes.
    Unspecified = 0,
    /// UTF-8 encoded character data.
    Utf8 = 1,
}

/// A Subscription Identifier: 1 to 268,435,455, sent as a variable byte integer (5.0 §3.8.2.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(NonZeroU32);

impl SubscriptionId {
    /// The largest identifier a variable byte integer can carry.
    pub const MAX: u32 = crate::wire::MAX_VARINT;

    /// The identifier, if `value` is in 1..=268,435,455.
    pub const fn new(value: u32) -> Option<Self> {
        if value > Self::MAX {
            return None;
        }
        match NonZeroU32::new(value) {
            Some(v) => Some(Self(v)),
            None => None,
        }
    }

    /// The identifier's value.
    pub const fn get(self) -> u32 {
        self.0.get()
    }
}

/// A UTF-8 string that shares its memory with the packet it came from, or, when short, holds
/// its bytes inline.
///
/// Decoding checks the string once: well-formed UTF-8 [MQTT-1.5.4-1] without U+0000
/// [MQTT-1.5.4-2]. Encoding checks for U+0000 and the 65,535-byte limit, so a `ByteStr` built
/// by the application is checked before it reaches the wire.
///
/// A decoded string of up to [`ByteStr::INLINE_CAPACITY`] bytes is copied into the value
/// instead of sharing the packet's buffer: copying a short topic costs less than the atomic
/// reference count a shared handle takes and later gives back, and a short string does not keep
/// a large read buffer alive. Either way the value is 40 bytes.
#[derive(Clone)]
pub struct ByteStr(Repr);

/// The two forms of a [`ByteStr`]. Each carries the plain-topic flag: known to be plain ASCII
/// without U+0000 or topic wildcards, so a valid topic name if it is not empty; set where that
/// was learnt for free (decoding, construction), so encoding a forwarded or reused topic skips
/// its scan. `false` means "not known". The flag and the form are not part of the value:
/// equality, order and hashing look at the bytes only.
#[derive(Clone)]
enum Repr {
    Shared {
        bytes: Bytes,
        plain_topic: bool,
    },
    Inline {
        plain_topic: bool,
        len: u8,
        data: [u8; ByteStr::INLINE_CAPACITY],
    },
}

/// [`crate::wire::is_plain_topic`] for constant strings.
const fn const_plain_topic(mut bytes: &[u8]) -> bool {
    while let [b, rest @ ..] = bytes {
        if *b == 0 || *b == b'+' || *b == b'#' || *b >= 0x80 {
            return false;
        }
        bytes = rest;
    }
    true
}

impl ByteStr {
    /// The longest string held inline rather than in a shared buffer.
    pub const INLINE_CAPACITY: usize = 37;

    /// An empty string.
    pub const fn new() -> Self {
        Self(Repr::Shared {
            bytes: Bytes::new(),
            plain_topic: false,
        })
    }

    /// A string over static memory, without copying.
    pub const fn from_static(s: &'static str) -> Self {
        Self(Repr::Shared {
            bytes: Bytes::from_static(s.as_bytes()),
            plain_topic: const_plain_topic(s.as_bytes()),
        })
    }

    /// Wraps bytes that are UTF-8, without copying. Returns the bytes back if they are not.
    pub fn from_utf8(bytes: Bytes) -> Result<Self, Bytes> {
        match core::str::from_utf8(&bytes) {
            Ok(_) => Ok(Self::from_known(bytes)),
            Err(_) => Err(bytes),
        }
    }

    /// Wraps bytes already checked to be UTF-8.
    pub(crate) fn from_checked(bytes: Bytes) -> Self {
        Self::from_scanned(bytes, false)
    }

    /// Wraps bytes already checked to be UTF-8, with what a scan found about them.
    #[inline]
    pub(crate) fn from_scanned(bytes: Bytes, plain_topic: bool) -> Self {
        Self(Repr::Shared { bytes, plain_topic })
    }

    /// The bytes at `range` of `buf`, already checked to be UTF-8: copied inline when short,
    /// otherwise a shared slice of `buf`.
    #[inline]
    pub(crate) fn from_scanned_part(
        buf: &Bytes,
        range: core::ops::Range<usize>,
        plain_topic: bool,
    ) -> Self {
        let len = range.len();
        if len > Self::INLINE_CAPACITY || range.end > buf.len() {
            return Self::from_scanned(buf.slice(range), plain_topic);
        }
        // Copying a whole window of the buffer is a few fixed-size moves instead of a call to
        // `memcpy`; the bytes past `len` are never read.
        let window = buf
            .get(range.start..)
            .and_then(<[u8]>::first_chunk::<{ Self::INLINE_CAPACITY }>);
        let data = match window {
            Some(window) => *window,
            None => {
                let mut data = [0; Self::INLINE_CAPACITY];
                if let (Some(to), Some(from)) = (data.get_mut(..len), buf.get(range)) {
                    to.copy_from_slice(from);
                }
                data
            }
        };
        Self(Repr::Inline {
            plain_topic,
            // At most INLINE_CAPACITY.
            len: len as u8,
            data,
        })
    }

    /// Wraps UTF-8 bytes, and learns whether they are a plain topic.
    fn from_known(bytes: Bytes) -> Self {
        let plain_topic = crate::wire::is_plain_topic(&bytes);
        Self::from_scanned(bytes, plain_topic)
    }

    /// The bytes, and whether they are known to be plain ASCII without U+0000 or topic
    /// wildcards: both from one look at the representation, for the encoder's hot path.
    #[inline]
    pub(crate) fn bytes_and_plain_topic(&self) -> (&[u8], bool) {
        match &self.0 {
            Repr::Shared { bytes, plain_topic } => (bytes, *plain_topic),
            Repr::Inline {
                plain_topic,
                len,
                data,
            } => (
                data.get(..usize::from(*len)).unwrap_or_default(),
                *plain_topic,
            ),
        }
    }

    /// The string.
    ///
    /// The bytes were checked to be UTF-8 when the value was made; this crate forbids `unsafe`,
    /// so the check runs again here, which for short ASCII topics costs a few nanoseconds.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// The underlying bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Shared { bytes, .. } => bytes,
            Repr::Inline { len, data, .. } => data.get(..usize::from(*len)).unwrap_or_default(),
        }
    }

    /// The same string holding only its own bytes: inline when short, otherwise copied into
    /// an allocation of exactly its length.
    ///
    /// A decoded string longer than [`ByteStr::INLINE_CAPACITY`] shares the memory of the
    /// packet it came from, and keeps all of it alive, payload included. Call this where a
    /// string is kept long after its packet (a session's client identifier, a subscription's
    /// filter, a topic alias), so that what it holds is its own length.
    #[must_use]
    pub fn unshared(&self) -> Self {
        match &self.0 {
            Repr::Inline { .. } => self.clone(),
            Repr::Shared { bytes, plain_topic } => {
                let bytes = Bytes::copy_from_slice(bytes);
                let len = bytes.len();
                Self::from_scanned_part(&bytes, 0..len, *plain_topic)
            }
        }
    }

    /// The bytes as a `Bytes`: the shared buffer itself, or a copy of a string held inline.
    pub fn to_bytes(&self) -> Bytes {
        match &self.0 {
            Repr::Shared { bytes, .. } => bytes.clone(),
            Repr::Inline { .. } => Bytes::copy_from_slice(self.as_bytes()),
        }
    }

    /// Length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// True if the string is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for ByteStr {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for ByteStr {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for ByteStr {}

impl core::hash::Hash for ByteStr {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialOrd for ByteStr {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByteStr {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl fmt::Debug for ByteStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ByteStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&'static str> for ByteStr {
    fn from(s: &'static str) -> Self {
        Self::from_static(s)
    }
}

impl From<String> for ByteStr {
    fn from(s: String) -> Self {
        Self::from_known(Bytes::from(s))
    }
}

impl From<ByteStr> for Bytes {
    fn from(s: ByteStr) -> Self {
        match s.0 {
            Repr::Shared { bytes, .. } => bytes,
            Repr::Inline { .. } => Self::copy_from_slice(s.as_bytes()),
        }
    }
}

impl PartialEq<str> for ByteStr {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for ByteStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A string held inline and the same string shared compare, order and hash alike.
    #[test]
    fn inline_and_shared_strings_are_the_same_value() {
        extern crate std;
        use core::hash::{Hash, Hasher};
        let buf = Bytes::from_static(b"xxsensors/dev-0042/tmp");
        let inline = ByteStr::from_scanned_part(&buf, 2..buf.len(), true);
        let shared = ByteStr::from_scanned(buf.slice(2..), true);
        assert!(matches!(inline.0, Repr::Inline { .. }));
        assert!(matches!(shared.0, Repr::Shared { .. }));
        assert_eq!(inline, shared);
        assert_eq!(inline.as_str(), "sensors/dev-0042/tmp");
        assert_eq!(inline.cmp(&shared), core::cmp::Ordering::Equal);
        assert_eq!(inline.to_bytes(), shared.to_bytes());
        assert_eq!(Bytes::from(inline.clone()), Bytes::from(shared.clone()));
        let hash = |s: &ByteStr| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            s.hash(&mut h);
            h.finish()
        };
        assert_eq!(hash(&inline), hash(&shared));
    }

    /// Short parts are copied, long ones shared, and a part at the very end of the buffer
    /// (no full window to copy) is copied exactly.
    #[test]
    fn parts_are_inline_up_to_the_capacity() {
        let long = "a".repeat(ByteStr::INLINE_CAPACITY + 1);
        let buf = Bytes::from(long.clone());
        let at_capacity = ByteStr::from_scanned_part(&buf, 1..buf.len(), true);
        assert!(matches!(at_capacity.0, Repr::Inline { .. }));
        assert_eq!(at_capacity.len(), ByteStr::INLINE_CAPACITY);
        let over = ByteStr::from_scanned_part(&buf, 0..buf.len(), true);
        assert!(matches!(over.0, Repr::Shared { .. }));
        assert_eq!(over, *long.as_str());
        let tail = ByteStr::from_scanned_part(&buf, buf.len() - 3..buf.len(), true);
        assert_eq!(tail, "aaa");
        assert_eq!(size_of::<ByteStr>(), 40);
    }
}
