//! `AclFile` against reference models written from mosquitto's documented behaviour, without
//! sharing code with the crate: rules kept as lines of text, `%c` and `%u` pasted into the
//! filter as text, and a naive matcher.
//!
//! - Never more access than mosquitto 2.0's evaluation order gives (user denies, user grants,
//!   then, unless the client identifier or user name holds `+` or `#`, deny patterns and
//!   granting patterns).
//! - Exactly the access of "every deny first, then every grant" for clients whose identifier
//!   and user name are plain level text.
//! - A subscription is never refused when some topic it matches is readable.
//! - Nothing panics on arbitrary files, topics, identifiers or user names.

use std::collections::BTreeSet;

use midge_auth::acl::{Access, AclClient, AclFile};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

#[derive(Clone, Debug)]
enum Line {
    User(&'static str),
    Topic(Option<&'static str>, String),
    Pattern(Option<&'static str>, String),
}

fn render(lines: &[Line]) -> String {
    let mut text = String::new();
    for line in lines {
        let (keyword, access, filter) = match line {
            Line::User(name) => {
                text.push_str(&format!("user {name}\n"));
                continue;
            }
            Line::Topic(access, filter) => ("topic", access, filter),
            Line::Pattern(access, filter) => ("pattern", access, filter),
        };
        match access {
            Some(access) => text.push_str(&format!("{keyword} {access} {filter}\n")),
            None => text.push_str(&format!("{keyword} {filter}\n")),
        }
    }
    text
}

/// A rule as the reference models see it.
struct Rule<'a> {
    deny: bool,
    read: bool,
    write: bool,
    filter: &'a str,
}

fn rule<'a>(access: Option<&str>, filter: &'a str) -> Rule<'a> {
    let access = access.unwrap_or("readwrite");
    Rule {
        deny: access == "deny",
        read: access == "read" || access == "readwrite",
        write: access == "write" || access == "readwrite",
        filter,
    }
}

impl Rule<'_> {
    fn grants(&self, access: Access) -> bool {
        match access {
            Access::Read => self.read,
            Access::Write => self.write,
        }
    }
}

/// The `topic` rules of `username`'s blocks (or the anonymous ones), and the patterns.
fn split_rules<'a>(lines: &'a [Line], username: Option<&str>) -> (Vec<Rule<'a>>, Vec<Rule<'a>>) {
    let mut own = Vec::new();
    let mut patterns = Vec::new();
    let mut current: Option<&str> = None;
    for line in lines {
        match line {
            Line::User(name) => current = Some(name),
            Line::Topic(access, filter) => {
                if current == username {
                    own.push(rule(*access, filter));
                }
            }
            Line::Pattern(access, filter) => patterns.push(rule(*access, filter)),
        }
    }
    (own, patterns)
}

/// mosquitto's substitution: `%c` and `%u` pasted in, left to right.
fn substitute(filter: &str, client_id: &str, username: &str) -> String {
    let mut out = String::new();
    let mut chars = filter.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('%', Some('c')) => {
                chars.next();
                out.push_str(client_id);
            }
            ('%', Some('u')) => {
                chars.next();
                out.push_str(username);
            }
            _ => out.push(c),
        }
    }
    out
}

/// Levels: `+` is any one level, `#` any rest including none; a topic that starts with `$`
/// is matched only by a filter that starts with `$` (mosquitto's form of [MQTT-4.7.2-1]).
fn naive_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') != filter.starts_with('$') {
        return false;
    }
    let filter: Vec<&str> = filter.split('/').collect();
    let topic: Vec<&str> = topic.split('/').collect();
    for (i, level) in filter.iter().enumerate() {
        if *level == "#" {
            return true;
        }
        match topic.get(i) {
            Some(t) if *level == "+" || level == t => {}
            _ => return false,
        }
    }
    filter.len() == topic.len()
}

/// What `%c`/`%u` patterns become for this client; `None` for a `%u` pattern without a
/// user name, which does not apply.
fn expand(rule: &Rule<'_>, client: &AclClient<'_>) -> Option<String> {
    if rule.filter.contains("%u") && client.username.is_none() {
        return None;
    }
    Some(substitute(
        rule.filter,
        client.client_id,
        client.username.unwrap_or(""),
    ))
}

/// mosquitto 2.0's order.
fn mosquitto(lines: &[Line], client: &AclClient<'_>, topic: &str, access: Access) -> bool {
    let (own, patterns) = split_rules(lines, client.username);
    for r in own.iter().filter(|r| r.deny) {
        if naive_matches(r.filter, topic) {
            return false;
        }
    }
    for r in own.iter().filter(|r| !r.deny) {
        if naive_matches(r.filter, topic) && r.grants(access) {
            return true;
        }
    }
    let dangerous = |v: &str| v.contains(['+', '#']);
    if !patterns.is_empty()
        && (dangerous(client.client_id) || client.username.is_some_and(dangerous))
    {
        return false;
    }
    for r in patterns.iter().filter(|r| r.deny) {
        if expand(r, client).is_some_and(|f| naive_matches(&f, topic)) {
            return false;
        }
    }
    patterns
        .iter()
        .filter(|r| !r.deny && r.grants(access))
        .any(|r| expand(r, client).is_some_and(|f| naive_matches(&f, topic)))
}

/// Every deny first, then every grant.
fn denies_first(lines: &[Line], client: &AclClient<'_>, topic: &str, access: Access) -> bool {
    let (own, patterns) = split_rules(lines, client.username);
    let own_denied = own.iter().any(|r| r.deny && naive_matches(r.filter, topic));
    let pattern_denied = patterns
        .iter()
        .filter(|r| r.deny)
        .any(|r| expand(r, client).is_some_and(|f| naive_matches(&f, topic)));
    if own_denied || pattern_denied {
        return false;
    }
    own.iter()
        .any(|r| !r.deny && r.grants(access) && naive_matches(r.filter, topic))
        || patterns.iter().any(|r| {
            !r.deny
                && r.grants(access)
                && expand(r, client).is_some_and(|f| naive_matches(&f, topic))
        })
}

/// A value that pastes in as exactly one level of plain text.
fn plain(value: &str) -> bool {
    !value.is_empty() && !value.contains(['/', '+', '#', '\0']) && !value.starts_with('$')
}

const USERS: [&str; 6] = ["alice", "bob", "a", "a/b", "+", "x y"];
const CLIENT_IDS: [&str; 10] = ["alice", "a", "b", "c1", "a/b", "+", "#", "", "$SYS", "x"];
const USERNAMES: [Option<&str>; 9] = [
    None,
    Some("alice"),
    Some("bob"),
    Some("a"),
    Some("a/b"),
    Some("+"),
    Some(""),
    Some("$SYS"),
    Some("x y"),
];
const TOPIC_LEVELS: [&str; 8] = ["a", "b", "alice", "$SYS", "c1", "x", "", "xc1"];

fn filter() -> impl Strategy<Value = String> {
    let level = prop::sample::select(vec![
        "a", "b", "alice", "$SYS", "+", "+", "%c", "%u", "x%c", "", "c1",
    ]);
    (prop::collection::vec(level, 0..4), any::<bool>()).prop_filter_map(
        "empty filter",
        |(levels, hash)| {
            let mut text = levels.join("/");
            if hash {
                if !levels.is_empty() {
                    text.push('/');
                }
                text.push('#');
            }
            (!text.is_empty()).then_some(text)
        },
    )
}

fn access_word() -> impl Strategy<Value = Option<&'static str>> {
    prop::sample::select(vec![
        None,
        Some("read"),
        Some("write"),
        Some("readwrite"),
        Some("deny"),
    ])
}

fn line() -> impl Strategy<Value = Line> {
    prop_oneof![
        1 => prop::sample::select(USERS.to_vec()).prop_map(Line::User),
        3 => (access_word(), filter()).prop_map(|(a, f)| Line::Topic(a, f)),
        2 => (access_word(), filter()).prop_map(|(a, f)| Line::Pattern(a, f)),
    ]
}

fn client() -> impl Strategy<Value = (&'static str, Option<&'static str>)> {
    (
        prop::sample::select(CLIENT_IDS.to_vec()),
        prop::sample::select(USERNAMES.to_vec()),
    )
}

fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOPIC_LEVELS.to_vec()), 1..5)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("empty topic", |t| !t.is_empty())
}

/// Every topic of up to `depth` levels over [`TOPIC_LEVELS`].
fn all_topics(depth: usize) -> Vec<String> {
    let mut all = BTreeSet::new();
    let mut frontier = vec![String::new()];
    for d in 0..depth {
        let mut next = Vec::new();
        for prefix in &frontier {
            for level in TOPIC_LEVELS {
                let topic = if d == 0 {
                    level.to_owned()
                } else {
                    format!("{prefix}/{level}")
                };
                if !topic.is_empty() {
                    all.insert(topic.clone());
                }
                next.push(topic);
            }
        }
        frontier = next;
    }
    all.into_iter().collect()
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn never_more_than_mosquitto_and_exact_for_plain_clients(
        lines in prop::collection::vec(line(), 0..12),
        (client_id, username) in client(),
        topics in prop::collection::vec(topic(), 1..16),
    ) {
        let text = render(&lines);
        let acl = AclFile::parse(&text).unwrap();
        let client = AclClient { client_id, username };
        let is_plain = plain(client_id) && username.is_none_or(plain);
        for topic in &topics {
            for access in [Access::Read, Access::Write] {
                let ours = acl.check(&client, topic, access);
                if ours {
                    prop_assert!(
                        mosquitto(&lines, &client, topic, access),
                        "granted {access:?} on {topic:?} to {client:?}; mosquitto would not:\n{text}"
                    );
                }
                if is_plain {
                    prop_assert_eq!(
                        ours,
                        denies_first(&lines, &client, topic, access),
                        "{:?} on {:?} for {:?}:\n{}", access, topic, client, text
                    );
                }
            }
        }
    }

    /// Long lists of anonymous rules and patterns, which are indexed by their first level.
    #[test]
    fn long_lists_agree_with_the_reference(
        lines in prop::collection::vec(
            prop_oneof![
                3 => (access_word(), filter()).prop_map(|(a, f)| Line::Topic(a, f)),
                2 => (access_word(), filter()).prop_map(|(a, f)| Line::Pattern(a, f)),
            ],
            16..64,
        ),
        (client_id, username) in client(),
        topics in prop::collection::vec(topic(), 1..16),
    ) {
        let text = render(&lines);
        let acl = AclFile::parse(&text).unwrap();
        let client = AclClient { client_id, username };
        let is_plain = plain(client_id) && username.is_none_or(plain);
        for topic in &topics {
            for access in [Access::Read, Access::Write] {
                let ours = acl.check(&client, topic, access);
                if ours {
                    prop_assert!(mosquitto(&lines, &client, topic, access));
                }
                if is_plain {
                    prop_assert_eq!(
                        ours,
                        denies_first(&lines, &client, topic, access),
                        "{:?} on {:?} for {:?}:\n{}", access, topic, client, text
                    );
                }
            }
        }
    }

    #[test]
    fn subscriptions_that_could_deliver_are_allowed(
        lines in prop::collection::vec(line(), 0..10),
        (client_id, username) in client(),
        wanted in filter(),
    ) {
        // Subscription filters have no placeholders; `%c`, `%u` and `x%c` stay literal text.
        let text = render(&lines);
        let acl = AclFile::parse(&text).unwrap();
        let client = AclClient { client_id, username };
        let deliverable = all_topics(4)
            .into_iter()
            .find(|t| naive_wildcard_matches(&wanted, t) && acl.check(&client, t, Access::Read));
        if let Some(topic) = deliverable {
            prop_assert!(
                acl.check_subscribe(&client, &wanted),
                "{wanted:?} refused for {client:?}, but {topic:?} is readable:\n{text}"
            );
            let shared = format!("$share/g/{wanted}");
            prop_assert!(acl.check_subscribe(&client, &shared));
        }
    }

    #[test]
    fn nothing_panics(
        text in prop::collection::vec("[ \t#%a-z/+$\r]{0,24}", 0..12),
        client_id in any::<String>(),
        username in proptest::option::of(any::<String>()),
        topic in any::<String>(),
        filter in "[a-z/+#$%]{0,12}",
    ) {
        let text = text.join("\n");
        if let Ok(acl) = AclFile::parse(&text) {
            let client = AclClient { client_id: &client_id, username: username.as_deref() };
            let _ = acl.check(&client, &topic, Access::Read);
            let _ = acl.check(&client, &topic, Access::Write);
            let _ = acl.check_subscribe(&client, &filter);
            let _ = acl.check_subscribe(&client, &topic);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = AclFile::parse(&text);
    }
}

/// The MQTT matcher for subscriptions: like [`naive_matches`], but only wildcard-first
/// filters skip `$` topics [MQTT-4.7.2-1].
fn naive_wildcard_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    naive_matches_levels(filter, topic)
}

fn naive_matches_levels(filter: &str, topic: &str) -> bool {
    let filter: Vec<&str> = filter.split('/').collect();
    let topic: Vec<&str> = topic.split('/').collect();
    for (i, level) in filter.iter().enumerate() {
        if *level == "#" {
            return true;
        }
        match topic.get(i) {
            Some(t) if *level == "+" || level == t => {}
            _ => return false,
        }
    }
    filter.len() == topic.len()
}

#[test]
fn reference_models_agree_on_a_known_case() {
    // The pattern deny only beats the topic grant under "denies first".
    let lines = vec![
        Line::User("alice"),
        Line::Topic(Some("read"), "a/#".to_owned()),
        Line::Pattern(Some("deny"), "a/%c".to_owned()),
    ];
    let client = AclClient {
        client_id: "x",
        username: Some("alice"),
    };
    assert!(mosquitto(&lines, &client, "a/x", Access::Read));
    assert!(!denies_first(&lines, &client, "a/x", Access::Read));
    let acl = AclFile::parse(&render(&lines)).unwrap();
    assert!(!acl.check(&client, "a/x", Access::Read));
    assert!(acl.check(&client, "a/y", Access::Read));
}
