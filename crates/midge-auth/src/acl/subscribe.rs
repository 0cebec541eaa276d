//! Whether a subscription could ever deliver a message the client may read.
//!
//! The topics two filters both match are themselves the topics of one filter (or none): level
//! by level, text meets `+` as that text, `+` meets `+` as `+`, and `#` takes the rest of the
//! other filter. A subscription can deliver something if, for some granting rule, that
//! common filter is not empty and no single deny rule matches all of its topics.

use midge_topic::{Limits, TopicFilter};

use super::matching::Subject;
use super::{AclClient, AclFile, Filter, Level, Piece, READ};

/// One level of a filter, borrowed from the subscription or from a rule.
#[derive(Clone, Copy, Debug)]
enum Part<'a> {
    Text(&'a str),
    /// A pattern's `%c` / `%u` level, spelled with the client's values.
    Pieces(&'a [Piece]),
    Plus,
    Hash,
}

impl<'a> Part<'a> {
    fn of(level: &'a Level) -> Self {
        match level {
            Level::Text(text) => Self::Text(text),
            Level::Plus => Self::Plus,
            Level::Hash => Self::Hash,
            Level::Subst { pieces, .. } => Self::Pieces(pieces),
        }
    }

    const fn is_wildcard(self) -> bool {
        matches!(self, Self::Plus | Self::Hash)
    }

    /// Whether the level's text starts with `$`.
    fn starts_with_dollar(self, subject: &Subject<'_>) -> bool {
        match self {
            Self::Text(text) => text.starts_with('$'),
            Self::Pieces(pieces) => pieces
                .iter()
                .map(|piece| subject.value(piece))
                .find(|value| !value.is_empty())
                .is_some_and(|value| value.starts_with('$')),
            Self::Plus | Self::Hash => false,
        }
    }
}

/// The bytes of a `%c` / `%u` level with the client's values in place.
fn spelled<'s>(pieces: &'s [Piece], subject: &'s Subject<'_>) -> impl Iterator<Item = u8> + 's {
    pieces
        .iter()
        .flat_map(move |piece| subject.value(piece).bytes())
}

/// Whether two non-wildcard levels spell the same text.
fn same_text(a: Part<'_>, b: Part<'_>, subject: &Subject<'_>) -> bool {
    match (a, b) {
        (Part::Text(a), Part::Text(b)) => a == b,
        (Part::Text(text), Part::Pieces(pieces)) | (Part::Pieces(pieces), Part::Text(text)) => {
            subject.spells(pieces, text.as_bytes())
        }
        (Part::Pieces(a), Part::Pieces(b)) => spelled(a, subject).eq(spelled(b, subject)),
        _ => false,
    }
}

pub(super) fn check_subscribe(acl: &AclFile, client: &AclClient<'_>, filter: &str) -> bool {
    let limits = Limits::DEFAULT.with_max_levels(usize::MAX);
    let Ok(filter) = TopicFilter::with_limits(filter, &limits) else {
        return false;
    };
    // A shared subscription delivers the messages of the filter after `$share/{group}/`.
    let wanted: Vec<Part<'_>> = filter
        .pattern()
        .split('/')
        .map(|level| match level {
            "+" => Part::Plus,
            "#" => Part::Hash,
            text => Part::Text(text),
        })
        .collect();
    let subject = Subject::new(client);
    let own = acl.own_rules(client);
    let denies: Vec<&Filter> = own
        .map(|own| own.denies.iter())
        .into_iter()
        .flatten()
        .chain(
            acl.patterns
                .denies
                .iter()
                .filter(|f| subject.deny_applies(f)),
        )
        .collect();
    let grants = own
        .map(|own| own.grants.iter())
        .into_iter()
        .flatten()
        .filter(|g| g.access & READ != 0)
        .chain(
            acl.patterns
                .grants
                .iter()
                .filter(|g| g.access & READ != 0 && subject.grant_applies(&g.filter)),
        );
    let mut common = Vec::new();
    for grant in grants {
        common.clear();
        if !intersect(&wanted, &grant.filter, &subject, &mut common) {
            continue;
        }
        if !denies.iter().any(|deny| covers(deny, &common, &subject)) {
            return true;
        }
    }
    false
}

/// Puts the levels of the filter whose topics both `wanted` and `grant` match in `common`;
/// false if there are no such topics.
fn intersect<'a>(
    wanted: &[Part<'a>],
    grant: &'a Filter,
    subject: &Subject<'_>,
    common: &mut Vec<Part<'a>>,
) -> bool {
    let mut index = 0;
    loop {
        let level = match (wanted.get(index), grant.levels.get(index).map(Part::of)) {
            (Some(Part::Hash), _) => {
                common.extend(grant.levels.iter().skip(index).map(Part::of));
                break;
            }
            (_, Some(Part::Hash)) => {
                common.extend(wanted.iter().skip(index));
                break;
            }
            (None, None) => break,
            (None, Some(_)) | (Some(_), None) => return false,
            (Some(&Part::Plus), Some(rule)) => rule,
            (Some(&wanted), Some(Part::Plus)) => wanted,
            (Some(&wanted), Some(rule)) => {
                if !same_text(wanted, rule, subject) {
                    return false;
                }
                wanted
            }
        };
        common.push(level);
        index += 1;
    }
    // [MQTT-4.7.2-1] Topics that start with `$` match neither filter if either starts with
    // a wildcard.
    let first_wildcard = wanted.first().is_some_and(|p| p.is_wildcard())
        || grant
            .levels
            .first()
            .is_some_and(|l| Part::of(l).is_wildcard());
    !(first_wildcard
        && common
            .first()
            .is_some_and(|p| p.starts_with_dollar(subject)))
}

/// Whether `deny` matches every topic `common` matches.
fn covers(deny: &Filter, common: &[Part<'_>], subject: &Subject<'_>) -> bool {
    // [MQTT-4.7.2-1] A deny that starts with a wildcard leaves `$` topics alone.
    if deny
        .levels
        .first()
        .is_some_and(|l| Part::of(l).is_wildcard())
        && common
            .first()
            .is_some_and(|p| p.starts_with_dollar(subject))
    {
        return false;
    }
    let mut index = 0;
    loop {
        let rule = deny.levels.get(index);
        match rule {
            Some(Level::Subst { uses, .. }) if subject.widens_deny(*uses) => return true,
            Some(Level::Hash) => return true,
            _ => {}
        }
        match (common.get(index), rule.map(Part::of)) {
            (None, None) => return true,
            (None, Some(_)) | (Some(_), None) | (Some(Part::Hash), Some(_)) => return false,
            (Some(Part::Plus), Some(rule)) => {
                if !matches!(rule, Part::Plus) {
                    return false;
                }
            }
            (Some(_), Some(Part::Plus)) => {}
            (Some(&level), Some(rule)) => {
                if !same_text(level, rule, subject) {
                    return false;
                }
            }
        }
        index += 1;
    }
}
