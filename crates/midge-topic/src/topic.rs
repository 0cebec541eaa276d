//! Validated topic names and topic filters.

use core::fmt;

use crate::TopicError;

/// The spec bounds a topic by its two-byte length prefix. [MQTT-4.7.3-3]
const MAX_TOPIC_BYTES: usize = 65_535;
const SHARE_PREFIX: &str = "$share/";

/// Limits applied while validating, beyond those of the spec.
///
/// A 64 KiB topic can hold 32,768 levels; every level costs a trie node and a hash lookup, so a
/// broker should refuse deep topics that no application uses.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most `/`-separated levels a name or filter may have (the `$share/{name}/` prefix of a
    /// shared subscription does not count).
    pub max_levels: usize,
}

impl Limits {
    /// 128 levels: far deeper than real topic trees, small enough to keep a walk cheap.
    pub const DEFAULT: Self = Self { max_levels: 128 };

    /// Returns these limits with `max_levels` set.
    #[must_use]
    pub const fn with_max_levels(mut self, max_levels: usize) -> Self {
        self.max_levels = max_levels;
        self
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A topic name: what a PUBLISH is sent to. No wildcards.
///
/// Borrows the text, so validating a topic from a received packet does not allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName<'a>(&'a str);

impl<'a> TopicName<'a> {
    /// Validates `name` with [`Limits::DEFAULT`].
    ///
    /// # Errors
    /// [`TopicError`] names the broken rule.
    pub fn new(name: &'a str) -> Result<Self, TopicError> {
        Self::with_limits(name, &Limits::DEFAULT)
    }

    /// Validates `name`.
    ///
    /// # Errors
    /// [`TopicError`] names the broken rule.
    pub fn with_limits(name: &'a str, limits: &Limits) -> Result<Self, TopicError> {
        check_length(name)?;
        let mut levels = 1usize;
        for byte in name.bytes() {
            match byte {
                0 => return Err(TopicError::NullCharacter),
                b'+' | b'#' => return Err(TopicError::WildcardInName),
                b'/' => {
                    levels += 1;
                    if levels > limits.max_levels {
                        return Err(TopicError::TooManyLevels);
                    }
                }
                _ => {}
            }
        }
        if levels > limits.max_levels {
            return Err(TopicError::TooManyLevels);
        }
        Ok(Self(name))
    }

    /// Wraps `name` without validating it, for a name that was validated already, such as a
    /// topic whose PUBLISH was checked when it was decoded and which is now routed: a
    /// topic needs one validation, not one per layer it passes through.
    ///
    /// This is safe whatever `name` holds: an invalid name makes matching give wrong answers
    /// (a `+` in it is matched as a literal level, for one), never undefined behaviour.
    ///
    /// # Panics
    ///
    /// In debug builds only, if `name` breaks a rule that needs no [`Limits`]: passing an
    /// unvalidated name is a bug in the caller.
    #[must_use]
    pub fn from_validated(name: &'a str) -> Self {
        debug_assert!(
            check_length(name).is_ok() && !name.contains(['\0', '+', '#']),
            "TopicName::from_validated given an invalid topic name: {name:?}"
        );
        Self(name)
    }

    /// The name as given.
    #[must_use]
    pub const fn as_str(&self) -> &'a str {
        self.0
    }
}

impl fmt::Display for TopicName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// A topic filter: what a SUBSCRIBE asks for. May hold `+` and `#`, and may be a 5.0 shared
/// subscription `$share/{ShareName}/{filter}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter<'a> {
    text: &'a str,
    share_name: Option<&'a str>,
    pattern: &'a str,
}

impl<'a> TopicFilter<'a> {
    /// Validates `filter` with [`Limits::DEFAULT`].
    ///
    /// # Errors
    /// [`TopicError`] names the broken rule.
    pub fn new(filter: &'a str) -> Result<Self, TopicError> {
        Self::with_limits(filter, &Limits::DEFAULT)
    }

    /// Validates `filter`. A filter that starts with `$share/` is a shared subscription.
    ///
    /// # Errors
    /// [`TopicError`] names the broken rule.
    pub fn with_limits(filter: &'a str, limits: &Limits) -> Result<Self, TopicError> {
        check_length(filter)?;
        let (share_name, pattern) = match filter.strip_prefix(SHARE_PREFIX) {
            None => (None, filter),
            Some(rest) => {
                let (name, pattern) = rest.split_once('/').unwrap_or((rest, ""));
                if name.is_empty() {
                    return Err(TopicError::EmptyShareName);
                }
                if name.contains(['+', '#']) {
                    return Err(TopicError::InvalidShareName);
                }
                if pattern.is_empty() {
                    return Err(TopicError::MissingSharedFilter);
                }
                (Some(name), pattern)
            }
        };
        if filter.contains('\0') {
            return Err(TopicError::NullCharacter);
        }
        let mut levels = pattern.split('/').enumerate().peekable();
        while let Some((index, level)) = levels.next() {
            if index >= limits.max_levels {
                return Err(TopicError::TooManyLevels);
            }
            let is_last = levels.peek().is_none();
            if level.contains('#') && (level != "#" || !is_last) {
                return Err(TopicError::MultiLevelWildcardMisplaced);
            }
            if level.contains('+') && level != "+" {
                return Err(TopicError::SingleLevelWildcardNotWholeLevel);
            }
        }
        Ok(Self {
            text: filter,
            share_name,
            pattern,
        })
    }

    /// The filter as given, including any `$share/{ShareName}/` prefix.
    #[must_use]
    pub const fn as_str(&self) -> &'a str {
        self.text
    }

    /// The ShareName of a shared subscription, `None` for an ordinary one.
    #[must_use]
    pub const fn share_name(&self) -> Option<&'a str> {
        self.share_name
    }

    /// The part that is matched against topic names: the whole filter, or what follows the
    /// share name.
    #[must_use]
    pub const fn pattern(&self) -> &'a str {
        self.pattern
    }

    /// Whether `topic` matches this filter, including the `$` rule. [MQTT-4.7.2-1]
    #[must_use]
    pub fn matches(&self, topic: &TopicName<'_>) -> bool {
        let topic = topic.as_str();
        if topic.starts_with('$') && self.pattern.starts_with(['+', '#']) {
            return false;
        }
        let mut topic_levels = topic.split('/');
        for filter_level in self.pattern.split('/') {
            if filter_level == "#" {
                return true;
            }
            match topic_levels.next() {
                Some(topic_level) if filter_level == "+" || filter_level == topic_level => {}
                _ => return false,
            }
        }
        topic_levels.next().is_none()
    }
}

impl fmt::Display for TopicFilter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text)
    }
}

fn check_length(text: &str) -> Result<(), TopicError> {
    if text.is_empty() {
        return Err(TopicError::Empty);
    }
    if text.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong);
    }
    Ok(())
}
