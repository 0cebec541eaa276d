//! ACL files: every line kind, which rules apply to whom, deny precedence, the `$` rule,
//! subscriptions, pattern injection (CVE-2017-7650) and malformed files.

use std::path::PathBuf;

use midge_auth::acl::{Access, AclClient, AclFile, MAX_LINE_BYTES};
use midge_auth::{FileError, LineError};

const READ: Access = Access::Read;
const WRITE: Access = Access::Write;

fn load(text: &str) -> AclFile {
    match AclFile::parse(text) {
        Ok(acl) => acl,
        Err(e) => panic!("{e}\n--- file ---\n{text}"),
    }
}

fn user<'a>(client_id: &'a str, username: &'a str) -> AclClient<'a> {
    AclClient {
        client_id,
        username: Some(username),
    }
}

fn anon(client_id: &str) -> AclClient<'_> {
    AclClient {
        client_id,
        username: None,
    }
}

fn parse_error(text: &str) -> LineError {
    match AclFile::parse(text) {
        Ok(acl) => panic!("accepted ({} rules):\n{text}", acl.len()),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------------
// Line kinds and access words

#[test]
fn access_words_grant_what_they_say() {
    let acl = load(
        "topic read r\n\
         topic write w\n\
         topic readwrite rw\n\
         topic plain\n\
         topic deny d\n",
    );
    assert_eq!(acl.len(), 5);
    let c = anon("c");
    for (topic, read, write) in [
        ("r", true, false),
        ("w", false, true),
        ("rw", true, true),
        ("plain", true, true), // no access word: readwrite
        ("d", false, false),
        ("other", false, false), // nothing grants it
    ] {
        assert_eq!(acl.check(&c, topic, READ), read, "read {topic}");
        assert_eq!(acl.check(&c, topic, WRITE), write, "write {topic}");
    }
}

#[test]
fn filter_with_spaces_after_access_word() {
    let acl = load("topic read  my topic/with spaces  \n");
    assert!(acl.check(&anon("c"), "my topic/with spaces", READ));
    assert!(!acl.check(&anon("c"), "my topic/with", READ));
}

#[test]
fn comments_blank_lines_and_whitespace() {
    let acl = load(
        "\u{feff}# a comment\n\
         \n\
         \t  \n\
         \x20\x20# an indented comment\n\
         \x20\x20topic\tread\t a/b \r\n\
         #topic read commented/out\n\
         user   alice smith  \r\n\
         topic   write   x  \n",
    );
    assert_eq!(acl.len(), 2);
    assert!(acl.check(&anon("c"), "a/b", READ));
    assert!(!acl.check(&anon("c"), "commented/out", READ));
    assert!(acl.check(&user("c", "alice smith"), "x", WRITE));
    assert!(!acl.check(&user("c", "alice"), "x", WRITE));
}

#[test]
fn empty_file_denies_everything() {
    let acl = load("# nothing here\n");
    assert!(acl.is_empty());
    assert!(!acl.check(&anon("c"), "a", READ));
    assert!(!acl.check(&user("c", "u"), "a", WRITE));
    assert!(!acl.check_subscribe(&anon("c"), "#"));
}

// ---------------------------------------------------------------------------------------
// Whose rules apply

#[test]
fn anonymous_rules_are_for_clients_without_a_user_name() {
    let acl = load(
        "topic read public/#\n\
         user alice\n\
         topic read alice/#\n",
    );
    assert!(acl.check(&anon("c"), "public/news", READ));
    assert!(!acl.check(&anon("c"), "alice/news", READ));
    // A user with a block gets only its block, not the anonymous rules.
    assert!(acl.check(&user("c", "alice"), "alice/news", READ));
    assert!(!acl.check(&user("c", "alice"), "public/news", READ));
    // A user without a block gets nothing from topic rules.
    assert!(!acl.check(&user("c", "bob"), "public/news", READ));
    assert!(!acl.check(&user("c", "bob"), "alice/news", READ));
}

#[test]
fn user_blocks_accumulate_and_names_are_exact() {
    let acl = load(
        "user alice\n\
         topic read a\n\
         user bob\n\
         topic read b\n\
         user alice\n\
         topic write a2\n",
    );
    let alice = user("c", "alice");
    assert!(acl.check(&alice, "a", READ));
    assert!(acl.check(&alice, "a2", WRITE));
    assert!(!acl.check(&alice, "b", READ));
    assert!(!acl.check(&user("c", "Alice"), "a", READ));
    assert!(!acl.check(&user("c", "alice "), "a", READ));
}

#[test]
fn patterns_apply_to_everyone_wherever_they_appear() {
    let acl = load(
        "user alice\n\
         topic read alice/#\n\
         pattern write devices/%c/state\n\
         user bob\n\
         pattern read users/%u/#\n",
    );
    assert!(acl.check(&user("d1", "alice"), "devices/d1/state", WRITE));
    assert!(acl.check(&user("d2", "bob"), "devices/d2/state", WRITE));
    assert!(acl.check(&anon("d3"), "devices/d3/state", WRITE));
    assert!(!acl.check(&anon("d3"), "devices/d1/state", WRITE));
    assert!(acl.check(&user("c", "alice"), "users/alice/x", READ));
    assert!(acl.check(&user("c", "carol"), "users/carol/x/y", READ));
    assert!(!acl.check(&user("c", "carol"), "users/alice/x", READ));
}

#[test]
fn username_patterns_do_not_apply_without_a_user_name() {
    let acl = load(
        "topic readwrite users/#\n\
         pattern read users/%u/#\n\
         pattern deny users/%u/private\n",
    );
    // Anonymous: the %u deny does not apply, nor does the %u grant.
    assert!(acl.check(&anon("c"), "users/x/private", READ));
    let acl = load("pattern read users/%u/#\n");
    assert!(!acl.check(&anon("c"), "users/c/x", READ));
}

#[test]
fn substitution_inside_a_level_and_several_in_a_level() {
    let acl = load(
        "pattern read dev-%c/x\n\
         pattern write %u.%c/%c\n\
         pattern read literal/100%/%%c\n",
    );
    assert!(acl.check(&anon("7"), "dev-7/x", READ));
    assert!(!acl.check(&anon("7"), "dev-77/x", READ));
    assert!(acl.check(&user("c1", "u"), "u.c1/c1", WRITE));
    assert!(!acl.check(&user("c1", "u"), "u.c1/c2", WRITE));
    assert!(!acl.check(&user("c1", "u"), "uc1/c1", WRITE));
    // A `%` before anything but `c` or `u` is text.
    assert!(acl.check(&anon("z"), "literal/100%/%z", READ));
}

#[test]
fn topic_rules_do_not_substitute() {
    let acl = load("topic read devices/%c\n");
    assert!(acl.check(&anon("x"), "devices/%c", READ));
    assert!(!acl.check(&anon("x"), "devices/x", READ));
}

// ---------------------------------------------------------------------------------------
// Deny wins

#[test]
fn deny_wins_over_grants_in_any_order() {
    for text in [
        "topic readwrite a/#\ntopic deny a/secret\n",
        "topic deny a/secret\ntopic readwrite a/#\n",
    ] {
        let acl = load(text);
        assert!(!acl.check(&anon("c"), "a/secret", READ), "{text}");
        assert!(!acl.check(&anon("c"), "a/secret", WRITE), "{text}");
        assert!(acl.check(&anon("c"), "a/public", READ), "{text}");
    }
}

#[test]
fn deny_patterns_win_over_topic_grants() {
    // mosquitto 2.0 would let the topic grant win; every deny is checked first here.
    let acl = load(
        "user admin\n\
         topic readwrite devices/#\n\
         pattern deny devices/%c/secret\n",
    );
    let admin = user("d1", "admin");
    assert!(!acl.check(&admin, "devices/d1/secret", READ));
    assert!(acl.check(&admin, "devices/d2/secret", READ));
}

#[test]
fn topic_denies_win_over_pattern_grants() {
    let acl = load(
        "user alice\n\
         topic deny home/alice/locked\n\
         pattern readwrite home/%u/#\n",
    );
    let alice = user("c", "alice");
    assert!(acl.check(&alice, "home/alice/open", WRITE));
    assert!(!acl.check(&alice, "home/alice/locked", WRITE));
}

#[test]
fn a_users_deny_does_not_affect_other_users() {
    let acl = load(
        "pattern read shared/#\n\
         user alice\n\
         topic deny shared/x\n",
    );
    assert!(!acl.check(&user("c", "alice"), "shared/x", READ));
    assert!(acl.check(&user("c", "bob"), "shared/x", READ));
    assert!(acl.check(&anon("c"), "shared/x", READ));
}

// ---------------------------------------------------------------------------------------
// Matching and `$`

#[test]
fn wildcards_match_as_in_subscriptions() {
    let acl = load(
        "topic read a/+/c\n\
         topic write b/#\n",
    );
    let c = anon("c");
    assert!(acl.check(&c, "a/x/c", READ));
    assert!(acl.check(&c, "a//c", READ));
    assert!(!acl.check(&c, "a/x/y/c", READ));
    assert!(!acl.check(&c, "a/x", READ));
    // `b/#` matches `b` itself [MQTT-4.7.1-1].
    assert!(acl.check(&c, "b", WRITE));
    assert!(acl.check(&c, "b/1/2/3", WRITE));
    assert!(!acl.check(&c, "bb", WRITE));
}

#[test]
fn wildcard_rules_do_not_match_dollar_topics() {
    // [MQTT-4.7.2-1]
    let acl = load(
        "topic readwrite #\n\
         topic read +/broker/uptime\n\
         pattern read %c/#\n",
    );
    let c = anon("c");
    assert!(acl.check(&c, "anything/at/all", READ));
    assert!(!acl.check(&c, "$SYS/broker/uptime", READ));
    assert!(!acl.check(&c, "$SYS", READ));
    assert!(!acl.check(&c, "$share/g/x", WRITE));
    let acl = load("topic read $SYS/#\n");
    assert!(acl.check(&c, "$SYS/broker/uptime", READ));
    assert!(!acl.check(&c, "$SYS/broker/uptime", WRITE));
}

#[test]
fn invalid_topics_are_refused() {
    let acl = load("topic readwrite #\n");
    let c = anon("c");
    assert!(!acl.check(&c, "", READ));
    assert!(!acl.check(&c, "a/+", READ));
    assert!(!acl.check(&c, "a/#", WRITE));
    assert!(acl.check(&c, "a/b", WRITE));
}

// ---------------------------------------------------------------------------------------
// Subscriptions

#[test]
fn subscribe_to_filters_under_a_read_grant() {
    let acl = load("topic read a/#\n");
    let c = anon("c");
    assert!(acl.check_subscribe(&c, "a/b"));
    assert!(acl.check_subscribe(&c, "a/+"));
    assert!(acl.check_subscribe(&c, "a/#"));
    assert!(acl.check_subscribe(&c, "a"));
    assert!(acl.check_subscribe(&c, "+/b"));
    // `#` could deliver `a/...` messages, so it is allowed; the others are filtered out.
    assert!(acl.check_subscribe(&c, "#"));
    assert!(acl.check_subscribe(&c, "+"));
    assert!(!acl.check_subscribe(&c, "b/#"));
    assert!(!acl.check_subscribe(&c, "b"));
    assert!(acl.check_subscribe(&c, "+/+/+"));
    // Nothing under `a/#` starts with `$`.
    assert!(!acl.check_subscribe(&c, "$SYS/#"));
}

#[test]
fn subscribe_needs_read_not_write() {
    let acl = load("topic write w/#\ntopic readwrite rw/#\n");
    assert!(!acl.check_subscribe(&anon("c"), "w/x"));
    assert!(acl.check_subscribe(&anon("c"), "rw/x"));
}

#[test]
fn subscribe_narrower_than_grant_reaches_only_granted_levels() {
    let acl = load("topic read a/+/c\n");
    let c = anon("c");
    assert!(acl.check_subscribe(&c, "a/b/c"));
    assert!(acl.check_subscribe(&c, "a/#"));
    assert!(acl.check_subscribe(&c, "+/+/+"));
    assert!(!acl.check_subscribe(&c, "a/b"));
    assert!(!acl.check_subscribe(&c, "a/b/d"));
    assert!(!acl.check_subscribe(&c, "a/b/c/d"));
    assert!(acl.check_subscribe(&c, "a/+/c/#"));
}

#[test]
fn subscribe_refused_when_a_deny_covers_it() {
    let acl = load(
        "topic read a/#\n\
         topic deny a/secret/#\n",
    );
    let c = anon("c");
    assert!(!acl.check_subscribe(&c, "a/secret"));
    assert!(!acl.check_subscribe(&c, "a/secret/+/x"));
    assert!(!acl.check_subscribe(&c, "a/secret/#"));
    // Partly denied: allowed, and delivery filters out the denied topics.
    assert!(acl.check_subscribe(&c, "a/+"));
    assert!(acl.check_subscribe(&c, "a/#"));
}

#[test]
fn subscribe_to_dollar_sys_needs_a_rule_that_names_it() {
    let acl = load("topic read #\n");
    assert!(!acl.check_subscribe(&anon("c"), "$SYS/#"));
    assert!(!acl.check_subscribe(&anon("c"), "$SYS/broker/uptime"));
    assert!(acl.check_subscribe(&anon("c"), "#"));
    let acl = load("topic read $SYS/#\n");
    assert!(acl.check_subscribe(&anon("c"), "$SYS/broker/+"));
    // `#` never delivers `$SYS` messages [MQTT-4.7.2-1].
    assert!(!acl.check_subscribe(&anon("c"), "#"));
    assert!(!acl.check_subscribe(&anon("c"), "+/broker/uptime"));
}

#[test]
fn shared_subscriptions_are_checked_as_their_filter() {
    let acl = load("topic read jobs/#\n");
    let c = anon("c");
    assert!(acl.check_subscribe(&c, "$share/workers/jobs/+"));
    assert!(acl.check_subscribe(&c, "$share/workers/#"));
    assert!(!acl.check_subscribe(&c, "$share/workers/other/+"));
    // Malformed shared subscriptions [MQTT-4.8.2-1], [MQTT-4.8.2-2].
    assert!(!acl.check_subscribe(&c, "$share//jobs/x"));
    assert!(!acl.check_subscribe(&c, "$share/g+/jobs/x"));
    assert!(!acl.check_subscribe(&c, "$share/workers"));
}

#[test]
fn invalid_subscriptions_are_refused() {
    let acl = load("topic read #\n");
    let c = anon("c");
    for filter in ["", "a/#/b", "a/b#", "a+/b", "a/\0"] {
        assert!(!acl.check_subscribe(&c, filter), "{filter:?}");
    }
}

#[test]
fn subscribe_through_patterns() {
    let acl = load(
        "pattern read devices/%c/#\n\
         pattern deny devices/%c/secret/#\n\
         pattern read users/%u/+\n",
    );
    let d = user("d1", "u1");
    assert!(acl.check_subscribe(&d, "devices/d1/#"));
    assert!(acl.check_subscribe(&d, "devices/+/temp"));
    assert!(acl.check_subscribe(&d, "#"));
    assert!(!acl.check_subscribe(&d, "devices/d2/#"));
    assert!(!acl.check_subscribe(&d, "devices/d1/secret/x"));
    assert!(acl.check_subscribe(&d, "users/u1/x"));
    assert!(acl.check_subscribe(&d, "users/+/x"));
    assert!(!acl.check_subscribe(&d, "users/u2/x"));
    assert!(!acl.check_subscribe(&d, "users/u1/x/y"));
    assert!(!acl.check_subscribe(&anon("d1"), "users/+/x"));
}

#[test]
fn subscribe_deny_pattern_over_pattern_grant_with_same_value() {
    let acl = load("pattern read a/%c/#\npattern deny a/%c/#\n");
    assert!(!acl.check_subscribe(&anon("x"), "a/x/y"));
    assert!(!acl.check_subscribe(&anon("x"), "#"));
    assert!(!acl.check(&anon("x"), "a/x/y", READ));
}

// ---------------------------------------------------------------------------------------
// Injection (CVE-2017-7650): values are text, never wildcards or separators

#[test]
fn username_wildcards_do_not_widen_a_pattern() {
    let acl = load("pattern read sensors/%u/#\n");
    for name in ["+", "#", "+/#", "a+", "#a"] {
        let client = user("c", name);
        assert!(!acl.check(&client, "sensors/alice/temp", READ), "{name}");
        assert!(!acl.check(&client, "sensors/+/temp", READ), "{name}");
        assert!(!acl.check_subscribe(&client, "sensors/+/temp"), "{name}");
        assert!(!acl.check_subscribe(&client, "sensors/#"), "{name}");
    }
    assert!(acl.check(&user("c", "alice"), "sensors/alice/temp", READ));
}

#[test]
fn username_with_slash_does_not_reach_another_users_space() {
    let acl = load("pattern readwrite sensors/%u/#\n");
    let ab = user("c", "a/b");
    // Pasted as text, `a/b` would make `sensors/a/b/#`, inside user `a`'s `sensors/a/#`.
    assert!(!acl.check(&ab, "sensors/a/b/x", READ));
    assert!(!acl.check(&ab, "sensors/a/b", WRITE));
    assert!(!acl.check(&ab, "sensors/a/x", READ));
    assert!(!acl.check_subscribe(&ab, "sensors/a/b/#"));
    assert!(acl.check(&user("c", "a"), "sensors/a/b/x", READ));
}

#[test]
fn client_id_wildcards_and_slashes_do_not_widen_a_pattern() {
    let acl = load(
        "pattern write devices/%c/state\n\
         pattern read devices/%c/cmd/#\n",
    );
    for id in ["+", "#", "a/b", "x/+", "+/state", "", "a\0b"] {
        let client = anon(id);
        assert!(!acl.check(&client, "devices/other/state", WRITE), "{id:?}");
        assert!(!acl.check(&client, "devices/a/b/state", WRITE), "{id:?}");
        assert!(!acl.check(&client, "devices/other/cmd/x", READ), "{id:?}");
        assert!(!acl.check_subscribe(&client, "devices/+/cmd/#"), "{id:?}");
    }
    assert!(acl.check(&anon("other"), "devices/other/state", WRITE));
}

#[test]
fn wildcard_values_disable_all_pattern_grants_as_in_mosquitto() {
    let acl = load(
        "pattern read public/#\n\
         pattern read users/%u/#\n\
         user bob\n\
         topic read bob/#\n",
    );
    // The client id holds `#`: no pattern grants, even ones that do not use it.
    let bob = user("x#", "bob");
    assert!(!acl.check(&bob, "public/news", READ));
    assert!(!acl.check(&bob, "users/bob/x", READ));
    // Its own topic rules still apply.
    assert!(acl.check(&bob, "bob/x", READ));
    // A `/` in the client id only disables the patterns that use it.
    let bob = user("site/7", "bob");
    assert!(acl.check(&bob, "public/news", READ));
    assert!(acl.check(&bob, "users/bob/x", READ));
}

#[test]
fn empty_values_grant_nothing() {
    let acl = load("pattern read users/%u/#\npattern read devices/%c\n");
    assert!(!acl.check(&user("c", ""), "users//x", READ));
    assert!(!acl.check(&user("c", ""), "users", READ));
    assert!(!acl.check(&anon(""), "devices/", READ));
}

#[test]
fn dollar_values_do_not_reach_dollar_topics() {
    let acl = load("pattern read %c/#\npattern read %u\n");
    assert!(!acl.check(&anon("$SYS"), "$SYS/broker/uptime", READ));
    assert!(!acl.check(&user("c", "$SYS"), "$SYS", READ));
    assert!(!acl.check_subscribe(&anon("$SYS"), "$SYS/#"));
    assert!(acl.check(&anon("me"), "me/x", READ));
}

#[test]
fn deny_patterns_hold_against_bad_values() {
    let acl = load(
        "topic readwrite devices/#\n\
         pattern deny devices/%c/config\n",
    );
    // Clean client: only its own config is denied.
    assert!(!acl.check(&anon("x"), "devices/x/config", WRITE));
    assert!(acl.check(&anon("x"), "devices/y/config", WRITE));
    // A bad value cannot dodge the deny: from its level, the deny matches everything.
    for id in ["x/y", "+", "#", "", "a+b"] {
        let client = anon(id);
        assert!(!acl.check(&client, "devices/x/y/config", WRITE), "{id:?}");
        assert!(!acl.check(&client, "devices/x/config", WRITE), "{id:?}");
        assert!(!acl.check(&client, "devices/anything", READ), "{id:?}");
        assert!(!acl.check(&client, "devices", READ), "{id:?}");
        assert!(!acl.check_subscribe(&client, "devices/#"), "{id:?}");
        // Outside the deny's fixed prefix nothing changes.
        assert!(!acl.check(&client, "other", READ), "{id:?}");
    }
}

#[test]
fn username_deny_patterns_hold_against_bad_user_names() {
    let acl = load(
        "user a/b\n\
         topic read sensors/#\n\
         pattern deny sensors/%u/private/#\n",
    );
    let ab = user("c", "a/b");
    assert!(!acl.check(&ab, "sensors/a/b/private/x", READ));
    assert!(!acl.check(&ab, "sensors/q", READ));
    let acl = load("user +\ntopic read #\ntopic read $SYS/#\npattern deny %u/#\n");
    assert!(!acl.check(&user("c", "+"), "$SYS/x", READ));
    assert!(!acl.check(&user("c", "+"), "anything", READ));
}

// ---------------------------------------------------------------------------------------
// Malformed files

#[test]
fn malformed_lines_name_their_line() {
    for (text, line, needle) in [
        ("topic read a\nbogus x\n", 2, "unknown keyword `bogus`"),
        ("Topic read a\n", 1, "unknown keyword `Topic`"),
        ("\n\ntopic reed a\n", 3, "unknown access `reed`"),
        ("topic read a\ntopic foo bar\n", 2, "unknown access `foo`"),
        ("topic read a/#/b\n", 1, "invalid topic filter `a/#/b`"),
        ("topic read a/b#\n", 1, "invalid topic filter"),
        ("pattern write x+/%c\n", 1, "invalid topic filter"),
        (
            "topic read a # trailing comment\n",
            1,
            "invalid topic filter",
        ),
        ("user\n", 1, "`user` needs a user name"),
        ("# c\nuser   \t \n", 2, "`user` needs a user name"),
        ("topic\n", 1, "`topic` needs a topic filter"),
        ("pattern   \n", 1, "`pattern` needs a topic filter"),
        ("topic read\n", 1, "no topic filter after the access `read`"),
        ("topic deny\n", 1, "no topic filter after the access `deny`"),
        ("topic read $share/g/a\n", 1, "shared subscription"),
        ("topic read a\0b\n", 1, "invalid topic filter"),
    ] {
        let error = parse_error(text);
        assert_eq!(error.line, line, "{text:?}: {error}");
        assert!(error.reason.contains(needle), "{text:?}: {error}");
        assert!(error.to_string().starts_with(&format!("line {line}: ")));
    }
}

#[test]
fn long_lines_are_refused() {
    let long = format!("topic read a\ntopic read {}\n", "x".repeat(MAX_LINE_BYTES));
    let error = parse_error(&long);
    assert_eq!(error.line, 2);
    assert!(error.reason.contains("longer than"), "{error}");
    // Just under the limit is fine.
    let ok = format!("topic read {}\n", "x".repeat(MAX_LINE_BYTES - 11));
    assert_eq!(load(&ok).len(), 1);
}

// ---------------------------------------------------------------------------------------
// Reading files

struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &[u8]) -> Self {
        let path =
            std::env::temp_dir().join(format!("midge-auth-acl-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn read_a_file() {
    let file = TempFile::new("ok", b"user alice\ntopic read a\n");
    let acl = AclFile::read(&file.0).unwrap();
    assert!(acl.check(&user("c", "alice"), "a", READ));
}

#[test]
fn read_reports_the_path_and_line() {
    let file = TempFile::new("bad", b"topic read a\n\ntopic nope a\n");
    match AclFile::read(&file.0) {
        Err(FileError::Line { path, source }) => {
            assert_eq!(path, file.0);
            assert_eq!(source.line, 3);
        }
        other => panic!("{other:?}"),
    }
    let file = TempFile::new("utf8", b"topic read a\ntopic read \xff\n");
    match AclFile::read(&file.0) {
        Err(FileError::Line { source, .. }) => {
            assert_eq!(source.line, 2);
            assert!(source.reason.contains("UTF-8"));
        }
        other => panic!("{other:?}"),
    }
    let missing = std::env::temp_dir().join("midge-auth-acl-does-not-exist");
    assert!(matches!(AclFile::read(&missing), Err(FileError::Io { .. })));
}
