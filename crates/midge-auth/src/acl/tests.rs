//! Unit tests of the ACL parser's pieces and the level matcher.
#![allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use super::matching::Subject;
use super::*;

fn pieces_of(level: &str) -> Vec<String> {
    let (pieces, _) = parse::pieces(level);
    pieces
        .iter()
        .map(|p| match p {
            Piece::Text(t) => format!("'{t}'"),
            Piece::ClientId => "%c".to_owned(),
            Piece::Username => "%u".to_owned(),
        })
        .collect()
}

#[test]
fn pieces_split_placeholders_from_text() {
    assert_eq!(pieces_of("%c"), ["%c"]);
    assert_eq!(pieces_of("dev-%c"), ["'dev-'", "%c"]);
    assert_eq!(pieces_of("%u.%c!"), ["%u", "'.'", "%c", "'!'"]);
    assert_eq!(pieces_of("%%c"), ["'%'", "%c"]);
    assert_eq!(pieces_of("%c%u"), ["%c", "%u"]);
    assert_eq!(pieces_of("100%x%u"), ["'100%x'", "%u"]);
    assert_eq!(pieces_of("é%cé"), ["'é'", "%c", "'é'"]);
}

#[test]
fn compiled_filters_record_what_they_use() {
    let acl = AclFile::parse(
        "pattern read %c/a/%u\n\
         pattern read x%u/%c\n\
         pattern read plain/+/#\n\
         topic read %c/%u\n",
    )
    .unwrap();
    let grants = &acl.patterns.grants;
    assert_eq!(grants[0].filter.uses, CLIENT_ID | USERNAME);
    assert_eq!(grants[0].filter.leads, CLIENT_ID);
    assert_eq!(grants[1].filter.uses, CLIENT_ID | USERNAME);
    assert_eq!(grants[1].filter.leads, 0);
    assert_eq!(grants[2].filter.uses, 0);
    assert!(matches!(
        &*grants[2].filter.levels,
        [Level::Text(_), Level::Plus, Level::Hash]
    ));
    // `topic` rules keep `%c` and `%u` as text.
    let own = &acl.anonymous.grants[0].filter;
    assert_eq!(own.uses, 0);
    assert!(
        matches!(&*own.levels, [Level::Text(a), Level::Text(b)] if &**a == "%c" && &**b == "%u")
    );
}

#[test]
fn subject_classifies_values() {
    let subject = |id: &'static str, user: Option<&'static str>| {
        Subject::new(&AclClient {
            client_id: id,
            username: user,
        })
    };
    let filter = |text: &str| {
        let acl = AclFile::parse(&format!("pattern read {text}\n")).unwrap();
        acl.patterns.grants[0].filter.clone()
    };
    let by_id = filter("d/%c");
    let by_user = filter("u/%u");
    let leading = filter("%c/x");
    let neither = filter("public/#");

    let clean = subject("dev1", Some("alice"));
    assert!(clean.grant_applies(&by_id) && clean.grant_applies(&by_user));
    assert!(clean.grant_applies(&leading) && clean.grant_applies(&neither));

    let slash = subject("a/b", Some("alice"));
    assert!(!slash.grant_applies(&by_id) && slash.grant_applies(&by_user));
    assert!(slash.grant_applies(&neither));
    assert!(slash.widens_deny(CLIENT_ID) && !slash.widens_deny(USERNAME));

    let wild = subject("dev1", Some("al+ce"));
    assert!(!wild.grant_applies(&neither) && !wild.grant_applies(&by_id));

    let anonymous = subject("dev1", None);
    assert!(!anonymous.grant_applies(&by_user) && !anonymous.deny_applies(&by_user));
    assert!(anonymous.grant_applies(&by_id));

    let dollar = subject("$SYS", None);
    assert!(!dollar.grant_applies(&leading) && dollar.grant_applies(&by_id));

    let empty = subject("", Some(""));
    assert!(empty.widens_deny(CLIENT_ID) && empty.widens_deny(USERNAME));
}

#[test]
fn spells_needs_the_whole_level() {
    let subject = Subject::new(&AclClient {
        client_id: "ab",
        username: Some("c"),
    });
    let (pieces, _) = parse::pieces("x%c%u");
    assert!(subject.spells(&pieces, b"xabc"));
    assert!(!subject.spells(&pieces, b"xab"));
    assert!(!subject.spells(&pieces, b"xabcd"));
    assert!(!subject.spells(&pieces, b"abc"));
}

#[test]
fn first_level_matching_obeys_the_dollar_rule() {
    // [MQTT-4.7.2-1]
    let acl = AclFile::parse("topic read +/x\ntopic read #\n").unwrap();
    let none = Subject::new(&AclClient {
        client_id: "c",
        username: None,
    });
    let plus = &acl.anonymous.grants[0].filter;
    let hash = &acl.anonymous.grants[1].filter;
    assert!(plus.matches("a/x".as_bytes(), &none, false));
    assert!(!plus.matches("$a/x".as_bytes(), &none, false));
    assert!(hash.matches("a".as_bytes(), &none, false));
    assert!(!hash.matches("$a".as_bytes(), &none, false));
}

#[test]
fn deep_topics_match() {
    let deep: Vec<String> = (0..40).map(|i| format!("l{i}")).collect();
    let topic = deep.join("/");
    let acl = AclFile::parse(&format!(
        "topic read {topic}\ntopic read l0/+/l2/#\ntopic write {}/+\npattern read %c/#\n",
        deep[..39].join("/")
    ))
    .unwrap();
    let client = AclClient {
        client_id: "l0",
        username: None,
    };
    let none = Subject::new(&AclClient {
        client_id: "c",
        username: None,
    });
    let split = topic.as_bytes();
    for grant in acl.anonymous.grants.iter() {
        assert!(grant.filter.matches(split, &none, false));
        assert!(!grant.filter.matches("l0/x".as_bytes(), &none, false));
    }
    assert!(acl.check(&client, &topic, Access::Write));
    assert!(!acl.check(&client, &format!("{topic}/more"), Access::Write));
    assert!(acl.check(&client, &format!("{topic}/more"), Access::Read));
    assert!(!acl.check(&client, &format!("x/{topic}"), Access::Read));
}

#[test]
fn long_lists_are_indexed_and_agree_with_short_ones() {
    let mut text = String::new();
    for i in 0..20 {
        text.push_str(&format!("topic read t{i}/#\n"));
    }
    text.push_str("topic write +/w\ntopic deny t3/secret\npattern read %c/own\n");
    let acl = AclFile::parse(&text).unwrap();
    assert!(acl.anonymous.grants.is_indexed());
    assert!(!acl.anonymous.denies.is_indexed());
    assert!(!acl.patterns.grants.is_indexed());
    let short = AclFile::parse("topic read t7/#\ntopic write +/w\ntopic deny t3/secret\n").unwrap();
    assert!(!short.anonymous.grants.is_indexed());
    let client = AclClient {
        client_id: "me",
        username: None,
    };
    for (topic, access, granted) in [
        ("t7/x", Access::Read, true),
        ("t19", Access::Read, true),
        ("t20/x", Access::Read, false),
        ("t7/x", Access::Write, false),
        ("t7/w", Access::Write, true), // through `+/w`, an unindexed rule
        ("t3/secret", Access::Read, false),
        ("me/own", Access::Read, true),
        ("$t7/x", Access::Read, false),
    ] {
        assert_eq!(
            acl.check(&client, topic, access),
            granted,
            "{topic} {access:?}"
        );
    }
    assert!(short.check(&client, "t7/x", Access::Read));
    assert!(short.check(&client, "t7/w", Access::Write));
}
