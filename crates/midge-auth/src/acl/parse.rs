//! Reading the text of an ACL file.

use midge_topic::{Limits, TopicFilter};

use super::{
    AclFile, Filter, Grant, Level, Piece, Rules, CLIENT_ID, MAX_LINE_BYTES, READ, USERNAME, WRITE,
};
use crate::LineError;

/// What a `topic` or `pattern` line says about its topics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RuleAccess {
    Grant(u8),
    Deny,
}

/// Blanks: what separates words and is trimmed from the ends of lines, filters and names
/// (C's `isspace`, as mosquitto trims).
const fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n' | '\x0b' | '\x0c')
}

/// Splits off the first word of `text`, which has no leading blanks; the rest comes back
/// without leading blanks.
fn first_word(text: &str) -> (&str, &str) {
    match text.split_once(is_blank) {
        Some((word, rest)) => (word, rest.trim_start_matches(is_blank)),
        None => (text, ""),
    }
}

fn access_word(word: &str) -> Option<RuleAccess> {
    match word {
        "read" => Some(RuleAccess::Grant(READ)),
        "write" => Some(RuleAccess::Grant(WRITE)),
        "readwrite" => Some(RuleAccess::Grant(READ | WRITE)),
        "deny" => Some(RuleAccess::Deny),
        _ => None,
    }
}

pub(super) fn parse(text: &str) -> Result<AclFile, LineError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut acl = AclFile::default();
    // The user whose block the following `topic` lines belong to; `None` before any `user`.
    let mut user: Option<Box<str>> = None;
    for (index, raw) in text.split('\n').enumerate() {
        let line = index + 1;
        let error = |reason: String| LineError { line, reason };
        if raw.len() > MAX_LINE_BYTES {
            return Err(error(format!("line is longer than {MAX_LINE_BYTES} bytes")));
        }
        let content = raw.trim_matches(is_blank);
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let (keyword, rest) = first_word(content);
        match keyword {
            "user" => {
                if rest.is_empty() {
                    return Err(error("`user` needs a user name".to_owned()));
                }
                user = Some(rest.into());
            }
            "topic" | "pattern" => {
                let is_pattern = keyword == "pattern";
                let (access, filter) = access_and_filter(keyword, rest).map_err(error)?;
                let filter = compile(filter, is_pattern).map_err(error)?;
                let rules = if is_pattern {
                    &mut acl.patterns
                } else {
                    match &user {
                        Some(name) => acl.users.entry(name.clone()).or_default(),
                        None => &mut acl.anonymous,
                    }
                };
                add(rules, access, filter);
                acl.rules += 1;
            }
            other => {
                return Err(error(format!(
                    "unknown keyword `{other}`: expected `topic`, `pattern` or `user`"
                )))
            }
        }
    }
    acl.anonymous.finish();
    acl.patterns.finish();
    for rules in acl.users.values_mut() {
        rules.finish();
    }
    Ok(acl)
}

/// Reads `[read|write|readwrite|deny] <filter>`.
fn access_and_filter<'t>(keyword: &str, rest: &'t str) -> Result<(RuleAccess, &'t str), String> {
    let (first, after) = first_word(rest);
    if first.is_empty() {
        return Err(format!("`{keyword}` needs a topic filter"));
    }
    if after.is_empty() {
        return match access_word(first) {
            // mosquitto would read this as a rule for the topic named `read`; far more
            // likely, the filter was forgotten.
            Some(_) => Err(format!(
                "`{keyword} {first}` has no topic filter after the access `{first}`"
            )),
            None => Ok((RuleAccess::Grant(READ | WRITE), first)),
        };
    }
    match access_word(first) {
        Some(access) => Ok((access, after)),
        None => Err(format!(
            "unknown access `{first}`: expected `read`, `write`, `readwrite` or `deny` \
             (a topic filter that contains spaces needs an access word before it)"
        )),
    }
}

/// Validates `text` as a topic filter and splits it into levels; in a pattern, `%c` and
/// `%u` become placeholders.
fn compile(text: &str, is_pattern: bool) -> Result<Filter, String> {
    let limits = Limits::DEFAULT.with_max_levels(usize::MAX);
    let checked = TopicFilter::with_limits(text, &limits)
        .map_err(|e| format!("invalid topic filter `{text}`: {e}"))?;
    if checked.share_name().is_some() {
        return Err(format!(
            "`{text}` is a shared subscription, not a topic filter: write the filter that \
             follows `$share/{{group}}/`"
        ));
    }
    let mut uses = 0;
    let mut leads = 0;
    let mut levels = Vec::new();
    for (index, level) in text.split('/').enumerate() {
        levels.push(match level {
            "+" => Level::Plus,
            "#" => Level::Hash,
            _ if is_pattern && (level.contains("%c") || level.contains("%u")) => {
                let (pieces, level_uses) = pieces(level);
                uses |= level_uses;
                if index == 0 {
                    leads = match pieces.first() {
                        Some(Piece::ClientId) => CLIENT_ID,
                        Some(Piece::Username) => USERNAME,
                        _ => 0,
                    };
                }
                Level::Subst {
                    pieces,
                    uses: level_uses,
                }
            }
            _ => Level::Text(level.into()),
        });
    }
    let prefix_levels = levels
        .iter()
        .take_while(|level| matches!(level, Level::Text(_)))
        .count();
    let prefix = text
        .split('/')
        .take(prefix_levels)
        .collect::<Vec<_>>()
        .join("/");
    let wildcard = levels
        .iter()
        .any(|level| matches!(level, Level::Plus | Level::Hash));
    Ok(Filter {
        levels: levels.into_boxed_slice(),
        prefix: prefix.into(),
        prefix_levels,
        wildcard,
        uses,
        leads,
    })
}

/// Splits a pattern's level into text and `%c` / `%u` placeholders, left to right: `%%c`
/// is a `%` followed by the client identifier, and a `%` before any other character is
/// text.
pub(super) fn pieces(level: &str) -> (Box<[Piece]>, u8) {
    let bytes = level.as_bytes();
    let mut pieces = Vec::new();
    let mut uses = 0;
    let mut text_start = 0;
    let mut i = 0;
    let push_text = |pieces: &mut Vec<Piece>, start: usize, end: usize| {
        if let Some(text) = level.get(start..end).filter(|t| !t.is_empty()) {
            pieces.push(Piece::Text(text.into()));
        }
    };
    while let Some(&byte) = bytes.get(i) {
        let placeholder = match (byte, bytes.get(i + 1)) {
            (b'%', Some(b'c')) => Some((Piece::ClientId, CLIENT_ID)),
            (b'%', Some(b'u')) => Some((Piece::Username, USERNAME)),
            _ => None,
        };
        match placeholder {
            Some((piece, which)) => {
                push_text(&mut pieces, text_start, i);
                pieces.push(piece);
                uses |= which;
                i += 2;
                text_start = i;
            }
            None => i += 1,
        }
    }
    push_text(&mut pieces, text_start, bytes.len());
    (pieces.into_boxed_slice(), uses)
}

fn add(rules: &mut Rules, access: RuleAccess, filter: Filter) {
    match access {
        RuleAccess::Deny => rules.denies.push(filter),
        RuleAccess::Grant(access) => rules.grants.push(Grant { access, filter }),
    }
}
