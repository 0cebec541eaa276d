//! Matching a topic against a rule's filter, level by level, with `%c` and `%u` read from the
//! client in place.

use std::cell::OnceCell;

use super::{AclClient, Filter, Level, Piece, CLIENT_ID, USERNAME};

/// The client as patterns see it: its values, and which of them can stand for a level.
#[derive(Debug)]
pub(super) struct Subject<'a> {
    client_id: &'a str,
    username: Option<&'a str>,
    /// Read from the values the first time a pattern needs it.
    class: OnceCell<Class>,
}

#[derive(Clone, Copy, Debug)]
struct Class {
    /// Values (of [`CLIENT_ID`], [`USERNAME`]) that can never be one level's text: empty, or
    /// holding `/`, `+`, `#` or U+0000.
    unusable: u8,
    /// Values that start with `$`.
    dollar: u8,
    /// Whether the client identifier or the user name holds `+` or `#`; mosquitto 2.0 then
    /// lets no pattern grant anything.
    wildcard: bool,
}

/// In [`BYTE_KINDS`]: `+` or `#`.
const WILDCARD: u8 = 1;
/// In [`BYTE_KINDS`]: `/` or U+0000.
const SEPARATOR: u8 = 2;

/// What each byte is to a value that stands for a topic level.
#[allow(clippy::indexing_slicing)] // Constant indices, evaluated at compile time.
static BYTE_KINDS: [u8; 256] = {
    let mut kinds = [0; 256];
    kinds[b'+' as usize] = WILDCARD;
    kinds[b'#' as usize] = WILDCARD;
    kinds[b'/' as usize] = SEPARATOR;
    kinds[0] = SEPARATOR;
    kinds
};

impl Class {
    fn of(client_id: &str, username: Option<&str>) -> Self {
        let mut class = Self {
            unusable: 0,
            dollar: 0,
            wildcard: false,
        };
        class.add(CLIENT_ID, client_id);
        if let Some(username) = username {
            class.add(USERNAME, username);
        }
        class
    }

    fn add(&mut self, which: u8, value: &str) {
        let kinds = value.bytes().fold(0, |kinds, byte| {
            kinds | BYTE_KINDS.get(usize::from(byte)).copied().unwrap_or(0)
        });
        if value.is_empty() || kinds != 0 {
            self.unusable |= which;
        }
        if value.starts_with('$') {
            self.dollar |= which;
        }
        self.wildcard |= kinds & WILDCARD != 0;
    }
}

impl<'a> Subject<'a> {
    pub(super) const fn new(client: &AclClient<'a>) -> Self {
        Self {
            client_id: client.client_id,
            username: client.username,
            class: OnceCell::new(),
        }
    }

    fn class(&self) -> Class {
        *self
            .class
            .get_or_init(|| Class::of(self.client_id, self.username))
    }

    /// Whether a `deny` pattern applies: one that uses `%u` does not apply to a client
    /// without a user name.
    pub(super) fn deny_applies(&self, filter: &Filter) -> bool {
        self.username.is_some() || filter.uses & USERNAME == 0
    }

    /// Whether a granting pattern can grant this client anything.
    pub(super) fn grant_applies(&self, filter: &Filter) -> bool {
        if !self.deny_applies(filter) {
            return false;
        }
        let class = self.class();
        !class.wildcard && filter.uses & class.unusable == 0 && filter.leads & class.dollar == 0
    }

    /// Whether a level with `uses` must be read as "any rest of the topic" by a deny pattern.
    pub(super) fn widens_deny(&self, uses: u8) -> bool {
        uses & self.class().unusable != 0
    }

    /// What `piece` stands for.
    pub(super) fn value<'p>(&'p self, piece: &'p Piece) -> &'p str {
        match piece {
            Piece::Text(text) => text,
            Piece::ClientId => self.client_id,
            Piece::Username => self.username.unwrap_or(""),
        }
    }

    /// Whether the pieces, with this client's values in place, spell `level`.
    pub(super) fn spells(&self, pieces: &[Piece], level: &[u8]) -> bool {
        let mut rest = level;
        for piece in pieces {
            match rest.strip_prefix(self.value(piece).as_bytes()) {
                Some(after) => rest = after,
                None => return false,
            }
        }
        rest.is_empty()
    }
}

impl Filter {
    /// False if the filter's first level is text that differs from `head` in length or first
    /// byte: a cheap test that spares [`matches`](Self::matches) most rules that cannot
    /// match. `head` is the topic's first level.
    #[inline]
    pub(super) fn may_match(&self, head: &[u8]) -> bool {
        match self.levels.first() {
            Some(Level::Text(text)) => {
                text.len() == head.len() && text.as_bytes().first() == head.first()
            }
            _ => true,
        }
    }

    /// Whether `topic` matches this filter, with `%c` and `%u` levels taken from `subject`.
    ///
    /// The topic is read once, left to right, and only as far as the filter needs: a text
    /// level is compared in place, and only `+` looks for the end of its level.
    ///
    /// For a `deny` rule (`deny` true), a level whose value cannot be one level's text
    /// matches the rest of any topic, so that a bad value cannot slip past the deny. For a
    /// grant, such a level matches nothing.
    pub(super) fn matches(&self, topic: &[u8], subject: &Subject<'_>, deny: bool) -> bool {
        // The topic from the start of the current level; `None` once it has no more levels.
        let mut rest = Some(topic);
        let mut levels = self.levels.iter();
        if self.prefix_levels == 0 {
            // [MQTT-4.7.2-1] A filter that starts with a wildcard does not match a topic that
            // starts with `$`.
            if topic.first() == Some(&b'$')
                && matches!(self.levels.first(), Some(Level::Plus | Level::Hash))
            {
                return false;
            }
        } else {
            match next_level(topic.strip_prefix(self.prefix.as_bytes())) {
                Some(next) => rest = next,
                None => return false,
            }
            levels = self.levels.get(self.prefix_levels..).unwrap_or(&[]).iter();
        }
        for level in levels {
            let after = match level {
                // `#` also matches the parent level: `a/#` matches `a` [MQTT-4.7.1-1].
                Level::Hash => return true,
                Level::Text(text) => match rest {
                    Some(here) => here.strip_prefix(text.as_bytes()),
                    None => return false,
                },
                Level::Plus => match rest {
                    Some(here) => {
                        let end = here.iter().position(|&b| b == b'/').unwrap_or(here.len());
                        here.get(end..)
                    }
                    None => return false,
                },
                Level::Subst { pieces, uses } => {
                    if subject.widens_deny(*uses) {
                        return deny;
                    }
                    // Usable values hold no `/`, so they cannot run past the level.
                    match rest {
                        Some(here) => pieces.iter().try_fold(here, |here, piece| {
                            here.strip_prefix(subject.value(piece).as_bytes())
                        }),
                        None => return false,
                    }
                }
            };
            match next_level(after) {
                Some(next) => rest = next,
                None => return false,
            }
        }
        rest.is_none()
    }
}

/// Where the topic goes on after a level that matched up to `after`: `Some(None)` if the
/// topic ends there, `Some(Some(next))` if another level follows, `None` if the topic's
/// level is longer than the filter's (or did not match at all).
#[inline]
fn next_level(after: Option<&[u8]>) -> Option<Option<&[u8]>> {
    match after?.split_first() {
        None => Some(None),
        Some((b'/', next)) => Some(Some(next)),
        Some(_) => None,
    }
}

/// Whether `topic` is a topic name: not empty, and no wildcards [MQTT-4.7.0-1].
pub(super) fn is_topic_name(topic: &[u8]) -> bool {
    // No early exit, so that the loop is vectorized.
    let wildcard = topic
        .iter()
        .fold(false, |found, &b| found | (b == b'+') | (b == b'#'));
    !topic.is_empty() && !wildcard
}

/// The first level of `topic`.
pub(super) fn first_level(topic: &[u8]) -> &[u8] {
    topic.split(|&b| b == b'/').next().unwrap_or(topic)
}
