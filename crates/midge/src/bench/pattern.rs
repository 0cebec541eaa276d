//! Topic patterns: `%i` is the client's index, `%c` its client identifier, `%%` a literal `%`.

use std::fmt;

/// One piece of a parsed pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Index,
    ClientId,
}

/// A topic name or filter pattern, checked once and expanded per client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pattern {
    pieces: Vec<Piece>,
}

/// Why a pattern is not valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PatternError {
    /// The pattern is empty: topic names and filters are at least one character long
    /// [MQTT-4.7.3-1].
    Empty,
    /// A `%` followed by something other than `i`, `c` or `%`.
    UnknownEscape(String),
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("empty topic pattern"),
            Self::UnknownEscape(e) => write!(
                f,
                "unknown escape {e:?} in topic pattern (use %i for the client index, %c for the client id, %% for %)"
            ),
        }
    }
}

impl Pattern {
    /// Parses a pattern.
    pub(crate) fn parse(text: &str) -> Result<Self, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                literal.push(c);
                continue;
            }
            let piece = match chars.next() {
                Some('%') => {
                    literal.push('%');
                    continue;
                }
                Some('i') => Piece::Index,
                Some('c') => Piece::ClientId,
                Some(other) => return Err(PatternError::UnknownEscape(format!("%{other}"))),
                None => return Err(PatternError::UnknownEscape("%".into())),
            };
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
            }
            pieces.push(piece);
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Self { pieces })
    }

    /// The pattern for the given client.
    pub(crate) fn expand(&self, index: u64, client_id: &str) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Index => out.push_str(&index.to_string()),
                Piece::ClientId => out.push_str(client_id),
            }
        }
        out
    }
}

/// Checks an expanded topic name: not empty, no wildcards [MQTT-3.3.2-2], no NUL
/// [MQTT-1.5.4-2], at most 65 535 bytes [MQTT-1.5.4-1].
pub(crate) fn check_topic_name(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("empty topic name".into());
    }
    if topic.contains(['+', '#']) {
        return Err(format!(
            "topic name {topic:?} contains a wildcard [MQTT-3.3.2-2]"
        ));
    }
    check_string(topic)
}

/// Checks an expanded topic filter: `#` only as the last level, wildcards fill a whole level
/// [MQTT-4.7.1-1], [MQTT-4.7.1-2].
pub(crate) fn check_topic_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Err("empty topic filter [MQTT-4.7.3-1]".into());
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let last = levels.len() - 1;
    for (i, level) in levels.iter().enumerate() {
        let bad_hash = level.contains('#') && (*level != "#" || i != last);
        let bad_plus = level.contains('+') && *level != "+";
        if bad_hash || bad_plus {
            return Err(format!(
                "topic filter {filter:?}: a wildcard must fill a whole level, and # must be last [MQTT-4.7.1-1] [MQTT-4.7.1-2]"
            ));
        }
    }
    check_string(filter)
}

fn check_string(s: &str) -> Result<(), String> {
    if s.contains('\0') {
        return Err(format!("{s:?} contains U+0000 [MQTT-1.5.4-2]"));
    }
    if s.len() > usize::from(u16::MAX) {
        return Err(format!(
            "topic of {} bytes is longer than 65535 [MQTT-1.5.4-1]",
            s.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_index_and_client_id() {
        let p = Pattern::parse("bench/%i/%c/x").expect("valid");
        assert_eq!(p.expand(7, "cl-7"), "bench/7/cl-7/x");
    }

    #[test]
    fn literal_patterns_and_percent_escape() {
        let p = Pattern::parse("a/100%%/b").expect("valid");
        assert_eq!(p.expand(3, "c"), "a/100%/b");
        let p = Pattern::parse("%i%i%c").expect("valid");
        assert_eq!(p.expand(12, "z"), "1212z");
    }

    #[test]
    fn rejects_bad_patterns() {
        assert_eq!(Pattern::parse(""), Err(PatternError::Empty));
        assert_eq!(
            Pattern::parse("a/%x"),
            Err(PatternError::UnknownEscape("%x".into()))
        );
        assert_eq!(
            Pattern::parse("a/%"),
            Err(PatternError::UnknownEscape("%".into()))
        );
        assert!(Pattern::parse("a/%x")
            .unwrap_err()
            .to_string()
            .contains("%i for the client index"));
    }

    #[test]
    fn topic_names_have_no_wildcards() {
        check_topic_name("a/b").expect("valid");
        assert!(check_topic_name("a/+").is_err());
        assert!(check_topic_name("a/#").is_err());
        assert!(check_topic_name("").is_err());
        assert!(check_topic_name("a\0b").is_err());
        assert!(check_topic_name(&"x".repeat(65_536)).is_err());
    }

    #[test]
    fn topic_filters_follow_4_7_1() {
        for ok in ["a/b", "a/+", "+/+/#", "#", "+", "a/+/c"] {
            check_topic_filter(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["", "a/#/b", "a#", "a/b+", "#/a", "a/++"] {
            assert!(check_topic_filter(bad).is_err(), "{bad}");
        }
    }
}
