//! MQTT topics as NATS subjects, and MQTT filters as NATS subscriptions.
//!
//! A topic becomes `{prefix}.{kind}.{level}.{level}…` (a message's subject is
//! [`message_subject`]; the key of its retained message is [`topic_key`], the same tokens
//! after the prefix):
//!
//! - `kind` is `t` for a topic whose first level does not start with `$`, and `s` for one
//!   that does; the `$` itself is then dropped. NATS wildcards know nothing of MQTT's rule
//!   that `+` and `#` at the start of a filter do not match `$` topics: keeping those topics
//!   under their own `kind` makes `t.>` miss them, as `#` does.
//! - Each MQTT level is one NATS token. ASCII letters, digits, `-` and `_` stand for
//!   themselves; every other byte (`.`, `*`, `>`, spaces and other whitespace, `$` past the
//!   first one, `=`, any non-ASCII byte of UTF-8) is written `=` and two upper-case hex
//!   digits. An empty level is the token `=` alone. Tokens are thus never empty, never a NATS
//!   wildcard, and valid in JetStream key-value keys, and the mapping is injective:
//!   [`topic_from_subject`] undoes it.
//!
//! A filter becomes one or two NATS subjects ([`filter_subjects`]): `+` is `*`, `#` is `>`,
//! and a filter ending in `/#` also needs the subject without its last token, since MQTT's
//! `a/#` matches `a` itself and NATS's `a.>` does not.

use std::fmt::Write as _;

/// The token of a topic whose first level does not start with `$`.
const PLAIN: &str = "t";
/// The token of a topic whose first level starts with `$` (`$SYS/…`).
const DOLLAR: &str = "s";
/// The token between the prefix and the topic in a message's subject.
const MESSAGES: &str = "msg";

fn push_level(out: &mut String, level: &str) {
    if level.is_empty() {
        out.push('=');
        return;
    }
    for byte in level.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "={byte:02X}");
        }
    }
}

/// The tokens of `topic` after the prefix: `t.a.b` for `a/b`, `s.SYS.x` for `$SYS/x`. This
/// is the key of the topic's retained message.
pub fn topic_key(topic: &str) -> String {
    let mut out = String::with_capacity(topic.len() + 4);
    let (kind, rest) = match topic.strip_prefix('$') {
        Some(rest) => (DOLLAR, rest),
        None => (PLAIN, topic),
    };
    out.push_str(kind);
    for level in rest.split('/') {
        out.push('.');
        push_level(&mut out, level);
    }
    out
}

/// The NATS subject a message on `topic` is published to.
pub fn message_subject(prefix: &str, topic: &str) -> String {
    format!("{prefix}.{MESSAGES}.{}", topic_key(topic))
}

/// The topic of a key from [`topic_key`]; `None` if it is not one.
pub fn topic_from_key(key: &str) -> Option<String> {
    let mut tokens = key.split('.');
    let mut topic = match tokens.next()? {
        PLAIN => Vec::new(),
        DOLLAR => vec![b'$'],
        _ => return None,
    };
    let mut first = true;
    for token in tokens {
        if !first {
            topic.push(b'/');
        }
        first = false;
        if token == "=" {
            continue;
        }
        let mut bytes = token.bytes();
        while let Some(byte) = bytes.next() {
            match byte {
                b'=' => {
                    let high = char::from(bytes.next()?).to_digit(16)?;
                    let low = char::from(bytes.next()?).to_digit(16)?;
                    let value = u8::try_from(high * 16 + low).ok()?;
                    // Only what push_level escapes, in its spelling: one topic, one subject.
                    if value.is_ascii_alphanumeric() || value == b'-' || value == b'_' {
                        return None;
                    }
                    topic.push(value);
                }
                b if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' => topic.push(b),
                _ => return None,
            }
        }
        if token.is_empty() {
            return None;
        }
    }
    if first {
        return None;
    }
    String::from_utf8(topic).ok()
}

/// The topic of a subject from [`message_subject`] with `prefix`; `None` if it is not one.
pub fn topic_from_subject(prefix: &str, subject: &str) -> Option<String> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    topic_from_key(rest.strip_prefix(MESSAGES)?.strip_prefix('.')?)
}

/// The NATS subjects to subscribe to for the MQTT filter `pattern` (without any
/// `$share/{name}/`): one, or two for a filter ending in `#` after other levels.
pub fn filter_subjects(prefix: &str, pattern: &str) -> Vec<String> {
    let (kind, rest) = match pattern.strip_prefix('$') {
        Some(rest) => (DOLLAR, rest),
        None => (PLAIN, pattern),
    };
    let mut out = format!("{prefix}.{MESSAGES}.{kind}");
    let mut parent = None;
    for level in rest.split('/') {
        match level {
            "#" => {
                // `a/#` matches `a` too [MQTT-4.7.1-2]; a lone `#` has no parent level.
                if out.len() > prefix.len() + MESSAGES.len() + kind.len() + 2 {
                    parent = Some(out.clone());
                }
                out.push_str(".>");
            }
            "+" => out.push_str(".*"),
            _ => {
                out.push('.');
                push_level(&mut out, level);
            }
        }
    }
    let mut subjects = vec![out];
    subjects.extend(parent);
    subjects
}

/// Whether the NATS subject `pattern` (with `*` and `>` wildcards) matches `subject`, as a
/// NATS server decides it. For tests and checks.
pub fn nats_matches(pattern: &str, subject: &str) -> bool {
    let mut subject = subject.split('.');
    for token in pattern.split('.') {
        match token {
            ">" => return subject.next().is_some(),
            "*" => {
                if subject.next().is_none() {
                    return false;
                }
            }
            _ => {
                if subject.next() != Some(token) {
                    return false;
                }
            }
        }
    }
    subject.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_escaping_table() {
        let cases = [
            ("a/b", "t.a.b"),
            ("sensors/room-1/temp_c", "t.sensors.room-1.temp_c"),
            ("a.b/c", "t.a=2Eb.c"),
            ("*/>", "t.=2A.=3E"),
            ("a b\tc", "t.a=20b=09c"),
            ("/a//", "t.=.a.=.="),
            ("$SYS/broker", "s.SYS.broker"),
            ("$", "s.="),
            ("a/$b", "t.a.=24b"),
            ("x=y", "t.x=3Dy"),
            ("é", "t.=C3=A9"),
        ];
        for (topic, key) in cases {
            assert_eq!(topic_key(topic), key, "{topic}");
            assert_eq!(topic_from_key(key).as_deref(), Some(topic), "{key}");
        }
        assert_eq!(message_subject("midge", "a/b"), "midge.msg.t.a.b");
        assert_eq!(
            topic_from_subject("midge", "midge.msg.t.a.b").as_deref(),
            Some("a/b")
        );
    }

    #[test]
    fn keys_that_no_topic_maps_to_are_refused() {
        for key in [
            "", "t", "x.a", "t..a", "t.=4", "t.=41", "t.a=zz", "t.a b", "t.=FF",
        ] {
            assert_eq!(topic_from_key(key), None, "{key:?}");
        }
    }

    #[test]
    fn filters() {
        let cases: [(&str, &[&str]); 7] = [
            ("a/b", &["m.msg.t.a.b"]),
            ("a/+/c", &["m.msg.t.a.*.c"]),
            ("#", &["m.msg.t.>"]),
            ("a/#", &["m.msg.t.a.>", "m.msg.t.a"]),
            ("+/#", &["m.msg.t.*.>", "m.msg.t.*"]),
            ("$SYS/#", &["m.msg.s.SYS.>", "m.msg.s.SYS"]),
            ("a.b/ /+", &["m.msg.t.a=2Eb.=20.*"]),
        ];
        for (filter, subjects) in cases {
            assert_eq!(filter_subjects("m", filter), subjects, "{filter}");
        }
    }
}
