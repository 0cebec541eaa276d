//! Access control lists in mosquitto's `acl_file` syntax.
//!
//! An [`AclFile`] says which topics each client may publish to ([`Access::Write`]), receive
//! messages on ([`Access::Read`]) and subscribe to ([`AclFile::check_subscribe`]). Once a
//! broker has an ACL, whatever no rule grants is denied.
//!
//! ```
//! use midge_auth::acl::{Access, AclClient, AclFile};
//!
//! let acl = AclFile::parse(
//!     "# Anonymous clients may only read the weather.\n\
//!      topic read weather/#\n\
//!      \n\
//!      user alice\n\
//!      topic readwrite home/#\n\
//!      topic deny home/safe/#\n\
//!      \n\
//!      pattern write devices/%c/state\n",
//! )?;
//! let alice = AclClient { client_id: "phone", username: Some("alice") };
//! assert!(acl.check(&alice, "home/kitchen/light", Access::Write));
//! assert!(!acl.check(&alice, "home/safe/code", Access::Read));
//! assert!(acl.check(&alice, "devices/phone/state", Access::Write));
//! assert!(!acl.check(&alice, "weather/today", Access::Read)); // anonymous rules only
//!
//! let guest = AclClient { client_id: "kiosk", username: None };
//! assert!(acl.check(&guest, "weather/today", Access::Read));
//! assert!(!acl.check(&guest, "weather/today", Access::Write));
//! assert!(acl.check_subscribe(&guest, "weather/+"));
//! assert!(!acl.check_subscribe(&guest, "home/#"));
//! # Ok::<(), midge_auth::LineError>(())
//! ```
//!
//! # Syntax
//!
//! One statement a line:
//!
//! - `topic [read|write|readwrite|deny] <filter>` grants (or, with `deny`, refuses) access to
//!   the topics `<filter>` matches. Without an access word the rule is `readwrite`; a filter
//!   that contains spaces needs the access word. `<filter>` is an MQTT topic filter and may
//!   use `+` and `#`.
//! - `user <name>` starts the rules of the client that connected with user name `<name>`:
//!   the rest of the line, which may contain spaces. `topic` lines before the first `user`
//!   line are for anonymous clients (those that gave no user name). A user's rules may be
//!   split over several `user` blocks.
//! - `pattern [read|write|readwrite|deny] <filter>` is a rule for every client, wherever it
//!   appears in the file. In `<filter>`, `%c` stands for the client identifier and `%u` for
//!   the user name. A pattern that uses `%u` does not apply to a client without a user name.
//! - A line whose first non-blank character is `#` is a comment; blank lines are ignored.
//!   Spaces and tabs separate words, and blanks at either end of a line, a filter or a user
//!   name are ignored.
//!
//! Lines longer than [`MAX_LINE_BYTES`] are refused, and [`AclFile::read`] refuses files
//! longer than [`MAX_FILE_BYTES`].
//!
//! # Which rules apply
//!
//! A client with a user name gets the rules of that user's blocks (none if the file has no
//! block for it) and the patterns. A client without a user name gets the anonymous rules and
//! the patterns that do not use `%u`. Then:
//!
//! 1. If a `deny` rule or `deny` pattern matches the topic, access is refused. Denies are
//!    checked before any grant, as mosquitto's documentation says.
//! 2. Otherwise, if a rule or pattern grants the access asked for (`read` and `readwrite`
//!    grant [`Access::Read`], `write` and `readwrite` grant [`Access::Write`]) on a matching
//!    topic, access is granted.
//! 3. Otherwise access is refused.
//!
//! Filters match topics as MQTT subscriptions do: a filter that starts with `+` or `#` does
//! not match a topic that starts with `$` [MQTT-4.7.2-1], so `topic read #` does not grant
//! `$SYS/...`; only a rule that names `$SYS` does.
//!
//! # Client identifiers and user names in patterns
//!
//! The value put in place of `%c` or `%u` is text: it is compared with one level of the
//! topic and is never a wildcard or a level separator. A client cannot widen what a pattern
//! grants by choosing its identifier or user name (CVE-2017-7650):
//!
//! - A value that is empty or contains `/`, `+`, `#` or U+0000 can never equal a topic level,
//!   so a granting pattern that uses it grants nothing. User `a/b` does not reach into user
//!   `a`'s `sensors/a/b/...` through `pattern read sensors/%u/#`.
//! - If the client identifier or the user name contains `+` or `#`, no pattern grants that
//!   client anything, as in mosquitto 2.0. The client's own `topic` rules still apply.
//! - A granting pattern whose first level starts with `%c` or `%u` grants nothing when the
//!   value starts with `$`: a client named `$SYS` does not get `$SYS/#` from
//!   `pattern read %c/#`.
//! - A `deny` pattern stays in force for such values, and errs towards refusing: from the
//!   level that holds a value that is empty or contains `/`, `+`, `#` or U+0000, the deny
//!   pattern matches every topic, like `#` (including topics that start with `$`). With
//!   `pattern deny devices/%c/config`, client `x/y` is refused everything under `devices/`.
//!
//! # Differences from mosquitto 2.0
//!
//! The file syntax and the rules above follow mosquitto 2.0's `acl_file`, except:
//!
//! - mosquitto checks a user's `deny` rules, then its grants, then `deny` patterns, then
//!   granting patterns, so a `deny` pattern does not take back what a `topic` rule grants.
//!   Here every deny is checked before every grant.
//! - mosquitto pastes `%c` and `%u` into the filter as text, so a `/` in the value adds
//!   levels; here the value is always one level's text (see above).
//! - mosquitto reads `topic read` (an access word and nothing else) as a rule for the topic
//!   named `read`; here that line is an error. So are rules on `$share/...` filters, which
//!   can never match a topic name, and a `#` comment after leading blanks is a comment here
//!   (an error in mosquitto). Tabs separate words as spaces do.
//! - mosquitto 2.0 does not check SUBSCRIBE against the ACL at all; see
//!   [`AclFile::check_subscribe`] for what is checked here.
//!
//! A broker also applies rules of its own that are not part of the ACL file, such as
//! mosquitto's refusal of PUBLISH to `$SYS` topics.

#![warn(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

mod index;
mod matching;
mod parse;
mod subscribe;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use hashbrown::HashMap;

use crate::{FileError, LineError};
use index::RuleList;
use matching::{first_level, is_topic_name, Subject};

/// The longest line [`AclFile::parse`] accepts, in bytes, without its line ending.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// The largest file [`AclFile::read`] accepts, in bytes.
pub const MAX_FILE_BYTES: usize = 64 * 1024 * 1024;

/// What a client asks to do with a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Receive messages published to the topic.
    Read,
    /// Publish to the topic.
    Write,
}

impl Access {
    const fn bit(self) -> u8 {
        match self {
            Self::Read => READ,
            Self::Write => WRITE,
        }
    }
}

/// The client whose access is checked: what `%c` and `%u` stand for in patterns, and whose
/// rules apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AclClient<'a> {
    /// The client identifier, as assigned by the server when the client sent an empty one.
    pub client_id: &'a str,
    /// The user name the client authenticated with; `None` for an anonymous client.
    pub username: Option<&'a str>,
}

/// A parsed ACL file, ready to answer access checks.
///
/// A check reads the rules of one user (found by hashing the user name) or the anonymous
/// rules, and the patterns, so its cost does not grow with the number of other users. Long
/// lists of rules (sixteen or more whose first level is text) are indexed by their first
/// level, so a check reads only the rules that can match the topic. Each filter is split
/// into levels when the file is read, and [`check`](Self::check) matches it against the
/// topic in place, without allocating.
///
/// An `AclFile` does not change once read: to reload, read the file again and swap the
/// value (in an `Arc`, say).
#[derive(Clone, Debug, Default)]
pub struct AclFile {
    /// `topic` lines before the first `user` line.
    anonymous: Rules,
    /// `topic` lines of each user's blocks.
    users: HashMap<Box<str>, Rules>,
    /// `pattern` lines, wherever they appear.
    patterns: Rules,
    /// How many `topic` and `pattern` lines the file has.
    rules: usize,
}

/// The rules of one user, of anonymous clients, or the patterns, with denies apart.
#[derive(Clone, Debug, Default)]
struct Rules {
    denies: RuleList<Filter>,
    grants: RuleList<Grant>,
}

impl Rules {
    fn finish(&mut self) {
        self.denies.finish();
        self.grants.finish();
    }
}

/// Access bits of a grant.
const READ: u8 = 1;
const WRITE: u8 = 2;

#[derive(Clone, Debug)]
struct Grant {
    /// [`READ`], [`WRITE`] or both.
    access: u8,
    filter: Filter,
}

/// A rule's topic filter, split into levels once, when the file is read.
#[derive(Clone, Debug)]
struct Filter {
    levels: Box<[Level]>,
    /// The leading [`Level::Text`] levels joined with `/`, compared with the topic at once.
    prefix: Box<str>,
    /// How many levels `prefix` holds.
    prefix_levels: usize,
    /// Whether a level is `+` or `#`.
    wildcard: bool,
    /// Which of [`CLIENT_ID`] and [`USERNAME`] the filter uses.
    uses: u8,
    /// Which of [`CLIENT_ID`] and [`USERNAME`] begins the first level, if one does.
    leads: u8,
}

/// A filter uses the client identifier (`%c`).
const CLIENT_ID: u8 = 1;
/// A filter uses the user name (`%u`).
const USERNAME: u8 = 2;

#[derive(Clone, Debug)]
enum Level {
    /// A level compared as text.
    Text(Box<str>),
    /// `+`.
    Plus,
    /// `#`.
    Hash,
    /// A pattern's level that holds `%c` or `%u`: the level is the concatenation of the
    /// pieces with the client's values in place.
    Subst {
        pieces: Box<[Piece]>,
        /// Which of [`CLIENT_ID`] and [`USERNAME`] the pieces use.
        uses: u8,
    },
}

#[derive(Clone, Debug)]
enum Piece {
    Text(Box<str>),
    ClientId,
    Username,
}

impl AclFile {
    /// Reads an ACL file's text.
    ///
    /// # Errors
    /// The first malformed line: an unknown keyword, an unknown access word, a missing or
    /// invalid topic filter, a `user` line without a name, or a line longer than
    /// [`MAX_LINE_BYTES`].
    pub fn parse(text: &str) -> Result<Self, LineError> {
        parse::parse(text)
    }

    /// Reads the ACL file at `path`.
    ///
    /// # Errors
    /// [`FileError::Io`] if the file cannot be read or is longer than [`MAX_FILE_BYTES`];
    /// [`FileError::Line`] if it is not UTF-8 or a line is malformed (see
    /// [`parse`](Self::parse)).
    pub fn read(path: &Path) -> Result<Self, FileError> {
        let io_error = |source| FileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_error)?;
        let mut bytes = Vec::new();
        // Lossless: `usize` is at most 64 bits wide.
        file.take(MAX_FILE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(io_error)?;
        if bytes.len() > MAX_FILE_BYTES {
            return Err(io_error(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("ACL file is longer than {MAX_FILE_BYTES} bytes"),
            )));
        }
        let line_error = |source| FileError::Line {
            path: path.to_path_buf(),
            source,
        };
        let text = String::from_utf8(bytes).map_err(|error| {
            let valid = error.as_bytes().get(..error.utf8_error().valid_up_to());
            let line = 1 + valid.map_or(0, |valid| valid.iter().filter(|&&b| b == b'\n').count());
            line_error(LineError {
                line,
                reason: "not valid UTF-8".to_owned(),
            })
        })?;
        Self::parse(&text).map_err(line_error)
    }

    /// Whether `client` may publish to (`Access::Write`) or receive a message on
    /// (`Access::Read`) `topic`. See the [module documentation](self) for the rules.
    ///
    /// `topic` should be a valid topic name; one that is empty or contains a wildcard is
    /// refused. This does not allocate, and reads only the client's own rules and the
    /// patterns.
    #[must_use]
    pub fn check(&self, client: &AclClient<'_>, topic: &str, access: Access) -> bool {
        let topic = topic.as_bytes();
        let head = first_level(topic);
        let own = self.own_rules(client);
        // `topic` rules hold no `%c` or `%u`, so the subject only matters to patterns.
        let subject = Subject::new(client);
        let matches = |filter: &Filter, deny| filter.matches(topic, &subject, deny);
        if own.is_some_and(|own| own.denies.find(head, |f| matches(f, true)).is_some()) {
            return false;
        }
        let pattern_deny = self
            .patterns
            .denies
            .find(head, |f| subject.deny_applies(f) && matches(f, true));
        if pattern_deny.is_some() {
            return false;
        }
        let bit = access.bit();
        let own_grant = own.and_then(|own| {
            own.grants
                .find(head, |g| g.access & bit != 0 && matches(&g.filter, false))
        });
        let grant = own_grant.or_else(|| {
            self.patterns.grants.find(head, |g| {
                g.access & bit != 0 && matches(&g.filter, false) && subject.grant_applies(&g.filter)
            })
        });
        // A filter without wildcards matches only topic names; one with wildcards would also
        // match a filter passed as the topic, which must not be granted [MQTT-4.7.0-1].
        grant.is_some_and(|g| !g.filter.wildcard || is_topic_name(topic))
    }

    /// Whether `client` may subscribe to `filter`; `$share/{group}/{filter}` is checked as
    /// `{filter}`. Invalid filters are refused.
    ///
    /// A subscription is refused when the rules show that no message could ever be
    /// delivered on it: no topic both matches `filter` and is readable by `client` under
    /// [`check`](Self::check). Otherwise it is allowed, and every message is still checked
    /// with `check(.., Access::Read)` before delivery. So with `topic read a/#`, subscribing
    /// to `a/b`, `a/+` or `#` is allowed (on `#` only `a` and `a/...` messages arrive), and
    /// subscribing to `b/#` or `$SYS/#` is refused.
    ///
    /// mosquitto 2.0 allows every SUBSCRIBE when an ACL file is used and filters each message
    /// on delivery; the messages delivered are the same here, and a client learns from the
    /// SUBACK when a subscription can never receive anything. Where several deny rules
    /// together (but no single one) cover what a grant allows, the subscription is allowed
    /// and delivery filtering takes care of it.
    ///
    /// This allocates a little; it is meant for SUBSCRIBE, not for every message.
    #[must_use]
    pub fn check_subscribe(&self, client: &AclClient<'_>, filter: &str) -> bool {
        subscribe::check_subscribe(self, client, filter)
    }

    /// How many rules (`topic` and `pattern` lines) the file has.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.rules
    }

    /// Whether the file has no rules, in which case it denies everything.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.rules == 0
    }

    /// The `topic` rules that apply to `client`: its user's, or the anonymous ones.
    fn own_rules(&self, client: &AclClient<'_>) -> Option<&Rules> {
        match client.username {
            Some(name) => self.users.get(name),
            None => Some(&self.anonymous),
        }
    }
}
