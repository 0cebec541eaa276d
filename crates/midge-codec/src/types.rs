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

/// The two forms of a [`ByteStr`]. Each carries what is [`Known`] about its bytes, learnt where
/// that was free (decoding, construction), so that encoding a forwarded or reused string skips
/// its scan and routing a checked topic skips its validation. What is known is not part of the
/// value: equality, order and hashing look at the bytes only.
#[derive(Clone)]
enum Repr {
    Shared {
        bytes: Bytes,
        known: Known,
    },
    Inline {
        known: Known,
        len: u8,
        data: [u8; ByteStr::INLINE_CAPACITY],
    },
}

/// What is known about a string's bytes, in one byte: two facts.
///
/// - Bit 7, *clean*: no U+0000 and no topic wildcard (`+`, `#`).
/// - Bits 0 to 6, *levels*: if not zero, the string is a valid topic name — at least one byte
///   [MQTT-4.7.3-1], no U+0000 [MQTT-4.7.3-2], no wildcard [MQTT-3.3.2-2], at most 65,535 bytes
///   [MQTT-4.7.3-3] — with this many `/`-separated levels. Topics of more than 127 levels are
///   valid too, but their count is not kept.
///
/// Zero means nothing is known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Known(u8);

impl Known {
    const CLEAN: u8 = 0x80;
    /// Largest level count kept.
    const MAX_LEVELS: usize = 0x7F;

    /// Nothing known.
    pub(crate) const NOTHING: Self = Self(0);

    /// Whether the bytes are clean (see the type's docs); nothing about topic levels.
    #[inline]
    pub(crate) const fn clean(clean: bool) -> Self {
        Self(if clean { Self::CLEAN } else { 0 })
    }

    /// A clean string of `len` bytes with `levels` levels: a valid topic name if `len` is
    /// within its bounds, with its levels kept if they are few enough.
    #[inline]
    const fn topic_name(len: usize, levels: usize) -> Self {
        let levels = if len == 0 || len > MAX_TOPIC_LEN || levels > Self::MAX_LEVELS {
            0
        } else {
            levels as u8
        };
        Self(Self::CLEAN | levels)
    }

    /// What a look at `bytes` (UTF-8) tells, levels included when they are ASCII.
    #[inline]
    fn of(bytes: &[u8]) -> Self {
        match crate::wire::plain_topic_levels(bytes) {
            Some(levels) => Self::topic_name(bytes.len(), levels),
            None => Self::NOTHING,
        }
    }

    /// [`Self::of`] for constant strings.
    const fn of_const(mut bytes: &[u8]) -> Self {
        let len = bytes.len();
        let mut levels = 1;
        while let [b, rest @ ..] = bytes {
            match *b {
                0 | b'+' | b'#' | 0x80..=0xFF => return Self::NOTHING,
                b'/' => levels += 1,
                _ => {}
            }
            bytes = rest;
        }
        Self::topic_name(len, levels)
    }

    /// Known to hold no U+0000 and no wildcard: anything known says so, since a level count
    /// is kept only for a clean string.
    #[inline]
    pub(crate) const fn is_clean(self) -> bool {
        self.0 != 0
    }

    /// The levels of a string known to be a valid topic name.
    #[inline]
    const fn levels(self) -> Option<usize> {
        match self.0 & !Self::CLEAN {
            0 => None,
            n => Some(n as usize),
        }
    }
}

/// The longest topic name: its length prefix is two bytes [MQTT-4.7.3-3].
const MAX_TOPIC_LEN: usize = 65_535;

impl ByteStr {
    /// The longest string held inline rather than in a shared buffer.
    pub const INLINE_CAPACITY: usize = 37;

    /// An empty string.
    pub const fn new() -> Self {
        Self(Repr::Shared {
            bytes: Bytes::new(),
            known: Known::NOTHING,
        })
    }

    /// A string over static memory, without copying.
    pub const fn from_static(s: &'static str) -> Self {
        Self(Repr::Shared {
            bytes: Bytes::from_static(s.as_bytes()),
            known: Known::of_const(s.as_bytes()),
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
        Self::from_scanned(bytes, Known::NOTHING)
    }

    /// Wraps bytes already checked to be UTF-8, with what a scan found about them.
    #[inline]
    pub(crate) fn from_scanned(bytes: Bytes, known: Known) -> Self {
        Self(Repr::Shared { bytes, known })
    }

    /// The bytes at `range` of `buf`, already checked to be UTF-8: copied inline when short,
    /// otherwise a shared slice of `buf`.
    #[inline]
    pub(crate) fn from_scanned_part(
        buf: &Bytes,
        range: core::ops::Range<usize>,
        known: Known,
    ) -> Self {
        let len = range.len();
        if len > Self::INLINE_CAPACITY || range.end > buf.len() {
            return Self::from_scanned(buf.slice(range), known);
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
            known,
            // At most INLINE_CAPACITY.
            len: len as u8,
            data,
        })
    }

    /// Wraps UTF-8 bytes, and learns what a look at them tells.
    fn from_known(bytes: Bytes) -> Self {
        let known = Known::of(&bytes);
        Self::from_scanned(bytes, known)
    }

    /// The bytes, and whether they are known to hold no U+0000 and no topic wildcard: both
    /// from one look at the representation, for the encoder's hot path.
    #[inline]
    pub(crate) fn bytes_and_clean(&self) -> (&[u8], bool) {
        match &self.0 {
            Repr::Shared { bytes, known } => (bytes, known.is_clean()),
            Repr::Inline { known, len, data } => (
                data.get(..usize::from(*len)).unwrap_or_default(),
                known.is_clean(),
            ),
        }
    }

    fn known(&self) -> Known {
        match &self.0 {
            Repr::Shared { known, .. } | Repr::Inline { known, .. } => *known,
        }
    }

    fn set_known(&mut self, new: Known) {
        match &mut self.0 {
            Repr::Shared { known, .. } | Repr::Inline { known, .. } => *known = new,
        }
    }

    /// The number of levels of this string if it is known to be a valid topic name: at least
    /// one character [MQTT-4.7.3-1], no U+0000 [MQTT-4.7.3-2], no wildcard [MQTT-3.3.2-2] and
    /// at most 65,535 bytes [MQTT-4.7.3-3]. `None` means not known, not invalid (and is the
    /// answer for topics of more than 127 levels, whose count is not kept).
    ///
    /// It is known for a string checked by [`ByteStr::check_topic_name`], and for one made
    /// from ASCII text ([`ByteStr::from_static`], `From<String>`, [`ByteStr::from_utf8`]). The
    /// knowledge goes with the value, clones included, so a topic validated once needs no
    /// second validation where it is routed.
    ///
    /// ```
    /// use midge_codec::ByteStr;
    ///
    /// assert_eq!(ByteStr::from_static("sensors/dev-0042/tmp").topic_levels(), Some(3));
    /// assert_eq!(ByteStr::from_static("sensors/+/tmp").topic_levels(), None);
    /// assert_eq!(ByteStr::from_static("").topic_levels(), None);
    /// ```
    #[inline]
    pub fn topic_levels(&self) -> Option<usize> {
        self.known().levels()
    }

    /// Whether this string is a valid topic name (see [`ByteStr::topic_levels`]), checked
    /// once and remembered: if it is, [`ByteStr::topic_levels`] answers from then on, for
    /// this value and its clones.
    ///
    /// A topic name decoded from a PUBLISH or a will had its characters checked then, so only
    /// its levels are counted here; any other string gets the whole check. A server calls this
    /// once per PUBLISH, compares the level count with its limit, and whatever routes the
    /// message after it can trust the topic. The check is in place: the string is not moved.
    ///
    /// ```
    /// use midge_codec::ByteStr;
    ///
    /// let mut topic = ByteStr::from("caf\u{e9}/cr\u{e8}me".to_owned());
    /// assert_eq!(topic.topic_levels(), None);
    /// assert!(topic.check_topic_name());
    /// assert_eq!(topic.topic_levels(), Some(2));
    /// assert!(!ByteStr::from("a/#".to_owned()).check_topic_name());
    /// ```
    pub fn check_topic_name(&mut self) -> bool {
        if self.topic_levels().is_some() {
            return true;
        }
        let (bytes, clean) = self.bytes_and_clean();
        if bytes.is_empty() || bytes.len() > MAX_TOPIC_LEN {
            return false;
        }
        if !clean {
            let found = crate::wire::scan(bytes);
            if found.nul || found.wildcard {
                return false;
            }
        }
        let known = Known::topic_name(bytes.len(), 1 + crate::wire::count_slashes(bytes));
        self.set_known(known);
        true
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
            Repr::Shared { bytes, known } => {
                let bytes = Bytes::copy_from_slice(bytes);
                let len = bytes.len();
                Self::from_scanned_part(&bytes, 0..len, *known)
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
        let inline = ByteStr::from_scanned_part(&buf, 2..buf.len(), Known::NOTHING);
        let shared = ByteStr::from_scanned(buf.slice(2..), Known::NOTHING);
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
        let at_capacity = ByteStr::from_scanned_part(&buf, 1..buf.len(), Known::NOTHING);
        assert!(matches!(at_capacity.0, Repr::Inline { .. }));
        assert_eq!(at_capacity.len(), ByteStr::INLINE_CAPACITY);
        let over = ByteStr::from_scanned_part(&buf, 0..buf.len(), Known::NOTHING);
        assert!(matches!(over.0, Repr::Shared { .. }));
        assert_eq!(over, *long.as_str());
        let tail = ByteStr::from_scanned_part(&buf, buf.len() - 3..buf.len(), Known::NOTHING);
        assert_eq!(tail, "aaa");
        assert_eq!(size_of::<ByteStr>(), 40);
    }
}
