//! Examples and rules from MQTT 5.0 (and 3.1.1) section 4.7 and 4.8, checked on the filter
//! matcher and both indexes.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::{Limits, Match, RetainedIndex, SubscriptionIndex, TopicError, TopicFilter, TopicName};

fn filter(text: &str) -> TopicFilter<'_> {
    TopicFilter::new(text).unwrap()
}

fn name(text: &str) -> TopicName<'_> {
    TopicName::new(text).unwrap()
}

/// Asserts `filter_text` matches `topic_text` (or not) in all three matchers.
fn check(filter_text: &str, topic_text: &str, expected: bool) {
    let (filter, topic) = (filter(filter_text), name(topic_text));
    assert_eq!(
        filter.matches(&topic),
        expected,
        "{filter_text} vs {topic_text}: matches"
    );

    let mut subscriptions = SubscriptionIndex::new();
    subscriptions.insert(&filter, 1u8, ());
    let mut found = 0;
    subscriptions.for_each_match(&topic, |_| found += 1);
    assert_eq!(
        found,
        usize::from(expected),
        "{filter_text} vs {topic_text}: subscriptions"
    );

    let mut retained = RetainedIndex::new();
    retained.insert(&topic, ());
    let mut found = 0;
    retained.for_each_match(&filter, |()| found += 1);
    assert_eq!(
        found,
        usize::from(expected),
        "{filter_text} vs {topic_text}: retained"
    );
}

// 4.7.1.2 Multi-level wildcard.
#[test]
fn multi_level_wildcard_matches_parent_and_descendants() {
    check("sport/tennis/player1/#", "sport/tennis/player1", true);
    check(
        "sport/tennis/player1/#",
        "sport/tennis/player1/ranking",
        true,
    );
    check(
        "sport/tennis/player1/#",
        "sport/tennis/player1/score/wimbledon",
        true,
    );
    check("sport/tennis/player1/#", "sport/tennis/player2", false);
    check("sport/#", "sport", true);
    check("#", "sport/tennis", true);
    check("#", "/", true);
}

// 4.7.1.2 [MQTT-4.7.1-1]: `#` alone or after `/`, and last.
// Conformance: [MQTT-5:4.7.1-1] [MQTT-3.1.1:4.7.1-2]
#[test]
fn multi_level_wildcard_placement() {
    assert!(TopicFilter::new("sport/tennis/#").is_ok());
    assert!(TopicFilter::new("#").is_ok());
    let misplaced = Err(TopicError::MultiLevelWildcardMisplaced);
    assert_eq!(TopicFilter::new("sport/tennis#"), misplaced);
    assert_eq!(TopicFilter::new("sport/tennis/#/ranking"), misplaced);
    assert_eq!(TopicFilter::new("#/"), misplaced);
    assert_eq!(TopicFilter::new("##"), misplaced);
}

// 4.7.1.3 Single-level wildcard.
#[test]
fn single_level_wildcard_matches_one_level() {
    check("sport/tennis/+", "sport/tennis/player1", true);
    check("sport/tennis/+", "sport/tennis/player2", true);
    check("sport/tennis/+", "sport/tennis/player1/ranking", false);
    check("sport/+", "sport", false);
    check("sport/+", "sport/", true);
    check("sport/+/player1", "sport/tennis/player1", true);
    check("+/tennis/#", "sport/tennis", true);
    check("+/+", "/finance", true);
    check("/+", "/finance", true);
    check("+", "/finance", false);
    check("+", "finance", true);
}

// 4.7.1.3 [MQTT-4.7.1-2]: `+` fills a whole level.
// Conformance: [MQTT-5:4.7.1-2] [MQTT-3.1.1:4.7.1-3]
#[test]
fn single_level_wildcard_placement() {
    for valid in ["+", "+/tennis/#", "sport/+/player1", "+/+", "/+"] {
        assert!(TopicFilter::new(valid).is_ok(), "{valid}");
    }
    let partial = Err(TopicError::SingleLevelWildcardNotWholeLevel);
    assert_eq!(TopicFilter::new("sport+"), partial);
    assert_eq!(TopicFilter::new("sport/+tennis"), partial);
    assert_eq!(TopicFilter::new("++"), partial);
}

// 4.7.2 [MQTT-4.7.2-1]: topics that start with `$`.
// Conformance: [MQTT-5:4.7.2-1] [MQTT-3.1.1:4.7.2-1]
#[test]
fn system_topics_are_not_matched_by_leading_wildcards() {
    check("#", "$SYS/broker/clients", false);
    check("+/monitor/Clients", "$SYS/monitor/Clients", false);
    check("+", "$SYS", false);
    check("$SYS/#", "$SYS/x", true);
    check("$SYS/#", "$SYS", true);
    check("$SYS/monitor/+", "$SYS/monitor/Clients", true);
    // Only the first level counts.
    check("a/+", "a/$b", true);
    check("a/#", "a/$b/c", true);
}

// 4.7.3: case, spaces and a leading `/` are significant; no normalisation [MQTT-4.7.3-4].
// Conformance: [MQTT-5:4.7.3-4] [MQTT-3.1.1:4.7.3-4]
#[test]
fn levels_compare_exactly() {
    check("ACCOUNTS", "Accounts", false);
    check("Accounts payable", "Accounts payable", true);
    check("/finance", "finance", false);
    check("finance", "/finance", false);
    check("a//b", "a//b", true);
    check("a/+/b", "a//b", true);
}

/// A name validated elsewhere is wrapped as it is, and matches as the validated one does.
#[test]
fn validated_names_match_as_checked_ones() {
    for text in ["sport/tennis/player1", "$SYS/broker", "/", "a"] {
        let trusted = TopicName::from_validated(text);
        assert_eq!(trusted, name(text));
        for f in ["sport/#", "+/+", "#", "a", "$SYS/+"] {
            assert_eq!(filter(f).matches(&trusted), filter(f).matches(&name(text)));
        }
    }
}

// 4.7.0 [MQTT-4.7.0-1] (3.1.1 [MQTT-4.7.1-1]).
// Conformance: [MQTT-5:4.7.0-1] [MQTT-3.1.1:4.7.1-1]
#[test]
fn names_contain_no_wildcards() {
    assert_eq!(TopicName::new("sport/+"), Err(TopicError::WildcardInName));
    assert_eq!(TopicName::new("sport/#"), Err(TopicError::WildcardInName));
    assert_eq!(TopicName::new("a+b"), Err(TopicError::WildcardInName));
}

// 4.7.3 [MQTT-4.7.3-1], [MQTT-4.7.3-2], [MQTT-4.7.3-3].
// Conformance: [MQTT-5:4.7.3-1] [MQTT-5:4.7.3-2] [MQTT-5:4.7.3-3] [MQTT-3.1.1:4.7.3-1] [MQTT-3.1.1:4.7.3-2] [MQTT-3.1.1:4.7.3-3]
#[test]
fn length_and_null_rules() {
    assert_eq!(TopicName::new(""), Err(TopicError::Empty));
    assert_eq!(TopicFilter::new(""), Err(TopicError::Empty));
    assert_eq!(TopicName::new("a\0b"), Err(TopicError::NullCharacter));
    assert_eq!(TopicFilter::new("a/\0"), Err(TopicError::NullCharacter));
    let longest = "a".repeat(65_535);
    assert!(TopicName::new(&longest).is_ok());
    assert!(TopicFilter::new(&longest).is_ok());
    let too_long = "a".repeat(65_536);
    assert_eq!(TopicName::new(&too_long), Err(TopicError::TooLong));
    assert_eq!(TopicFilter::new(&too_long), Err(TopicError::TooLong));
    // Multi-byte characters count in bytes.
    let wide = "é".repeat(32_768);
    assert_eq!(TopicName::new(&wide), Err(TopicError::TooLong));
    assert!(TopicName::new("/").is_ok());
}

// 4.8.2 [MQTT-4.8.2-1], [MQTT-4.8.2-2].
// Conformance: [MQTT-5:4.8.2-1] [MQTT-5:4.8.2-2]
#[test]
fn shared_subscriptions_parse() {
    let shared = filter("$share/group/sport/+");
    assert_eq!(shared.share_name(), Some("group"));
    assert_eq!(shared.pattern(), "sport/+");
    assert_eq!(shared.as_str(), "$share/group/sport/+");
    assert_eq!(filter("$share/g/#").pattern(), "#");
    assert_eq!(filter("$share").share_name(), None);
    assert_eq!(filter("$shared/g/x").share_name(), None);

    assert_eq!(
        TopicFilter::new("$share//x"),
        Err(TopicError::EmptyShareName)
    );
    assert_eq!(TopicFilter::new("$share/"), Err(TopicError::EmptyShareName));
    assert_eq!(
        TopicFilter::new("$share/g+/x"),
        Err(TopicError::InvalidShareName)
    );
    assert_eq!(
        TopicFilter::new("$share/#/x"),
        Err(TopicError::InvalidShareName)
    );
    assert_eq!(
        TopicFilter::new("$share/g"),
        Err(TopicError::MissingSharedFilter)
    );
    assert_eq!(
        TopicFilter::new("$share/g/"),
        Err(TopicError::MissingSharedFilter)
    );
    assert_eq!(
        TopicFilter::new("$share/g/a#"),
        Err(TopicError::MultiLevelWildcardMisplaced)
    );
}

#[test]
fn level_limit() {
    let limits = Limits::default().with_max_levels(3);
    assert!(TopicName::with_limits("a/b/c", &limits).is_ok());
    assert_eq!(
        TopicName::with_limits("a/b/c/d", &limits),
        Err(TopicError::TooManyLevels)
    );
    assert!(TopicFilter::with_limits("$share/g/a/b/#", &limits).is_ok());
    assert_eq!(
        TopicFilter::with_limits("a/b/c/#", &limits),
        Err(TopicError::TooManyLevels)
    );
}

// A deep topic is refused, and an allowed deep one walks without recursion.
#[test]
fn deep_topics() {
    let hundred_thousand_levels = "a/".repeat(99_999) + "a";
    assert_eq!(
        TopicName::new(&hundred_thousand_levels),
        Err(TopicError::TooLong)
    );
    assert_eq!(
        TopicFilter::new(&hundred_thousand_levels),
        Err(TopicError::TooLong)
    );

    let deepest = "/".repeat(65_534); // 65,535 empty levels in 65,534 bytes
    assert_eq!(TopicName::new(&deepest), Err(TopicError::TooManyLevels));
    assert_eq!(TopicFilter::new(&deepest), Err(TopicError::TooManyLevels));

    let unlimited = Limits::default().with_max_levels(usize::MAX);
    let topic = TopicName::with_limits(&deepest, &unlimited).unwrap();
    let plus_filter = "+/".repeat(32_767) + "+";
    let plus_filter = TopicFilter::with_limits(&plus_filter, &unlimited).unwrap();
    let deep_exact = TopicFilter::with_limits(&deepest, &unlimited).unwrap();

    let mut subscriptions = SubscriptionIndex::new();
    subscriptions.insert(&deep_exact, 1u8, ());
    subscriptions.insert(&filter("#"), 2, ());
    subscriptions.insert(
        &TopicFilter::with_limits(&(String::from("/") + &deepest), &unlimited).unwrap(),
        3,
        (),
    );
    let mut keys = Vec::new();
    subscriptions.for_each_match(&topic, |found| {
        if let Match::Subscription { key, .. } = found {
            keys.push(*key);
        }
    });
    keys.sort_unstable();
    assert_eq!(keys, [1, 2]);
    assert_eq!(subscriptions.remove(&deep_exact, &1), Some(()));
    assert_eq!(subscriptions.node_count(), 65_538); // root, `#`, and key 3's 65,536 levels

    let mut retained = RetainedIndex::new();
    retained.insert(&topic, 7u8);
    let mut found = 0;
    retained.for_each_match(&filter("#"), |_| found += 1);
    retained.for_each_match(&deep_exact, |_| found += 1);
    assert_eq!(found, 2);
    let mut none = 0;
    retained.for_each_match(&plus_filter, |_| none += 1);
    assert_eq!(none, 0);
    assert_eq!(retained.remove(&topic), Some(7));
    assert_eq!(retained.node_count(), 1);
}

// [MQTT-3.8.4-3]: a subscription with an identical filter replaces the old one.
#[test]
fn resubscribe_replaces() {
    let mut subscriptions = SubscriptionIndex::new();
    assert_eq!(subscriptions.insert(&filter("a/+"), "client", 0u8), None);
    assert_eq!(subscriptions.insert(&filter("a/+"), "client", 1), Some(0));
    assert_eq!(
        subscriptions.insert(&filter("$share/g/a/+"), "client", 2),
        None
    );
    assert_eq!(
        subscriptions.insert(&filter("$share/g/a/+"), "client", 1),
        Some(2)
    );
    assert_eq!(subscriptions.len(), 2);
    let mut found = Vec::new();
    subscriptions.for_each_match(&name("a/b"), |found_one| match found_one {
        Match::Subscription { value, .. } => found.push(("plain", *value)),
        Match::SharedGroup { members, .. } => found.push(("shared", members.len() as u8)),
    });
    found.sort_unstable();
    assert_eq!(found, [("plain", 1), ("shared", 1)]);
}

// A client with overlapping filters sees each, with its filter.
#[test]
fn overlapping_subscriptions_each_come_out_with_their_filter() {
    let mut subscriptions = SubscriptionIndex::new();
    subscriptions.insert(&filter("a/+"), "client", 1u8);
    subscriptions.insert(&filter("a/#"), "client", 2);
    subscriptions.insert(&filter("a/b"), "client", 0);
    let mut found = Vec::new();
    subscriptions.for_each_match(&name("a/b"), |found_one| {
        if let Match::Subscription { filter, value, .. } = found_one {
            found.push((subscriptions.filter_text(filter).unwrap(), *value));
        }
    });
    found.sort_unstable();
    let expected = [("a/#", 2), ("a/+", 1), ("a/b", 0)].map(|(f, v)| (String::from(f), v));
    assert_eq!(found, expected);
}

#[test]
fn shared_groups_come_out_whole() {
    let mut subscriptions = SubscriptionIndex::new();
    for client in ["a", "b", "c"] {
        subscriptions.insert(&filter("$share/workers/jobs/#"), client, ());
    }
    subscriptions.insert(&filter("$share/audit/jobs/#"), "d", ());
    let mut groups = Vec::new();
    subscriptions.for_each_match(&name("jobs/1"), |found| {
        if let Match::SharedGroup {
            share_name,
            members,
            filter,
        } = found
        {
            assert_eq!(subscriptions.filter_text(filter).as_deref(), Some("jobs/#"));
            groups.push((share_name, members.len()));
        }
    });
    groups.sort_unstable();
    assert_eq!(groups, [("audit", 1), ("workers", 3)]);
    assert_eq!(
        subscriptions.remove(&filter("$share/workers/jobs/#"), &"b"),
        Some(())
    );
    assert_eq!(
        subscriptions.remove(&filter("$share/workers/jobs/#"), &"b"),
        None
    );
    assert_eq!(subscriptions.len(), 3);
}

#[test]
fn many_subscribers_on_one_filter_switch_to_a_map_and_back() {
    let mut subscriptions = SubscriptionIndex::new();
    let everything = filter("#");
    for client in 0..1000u32 {
        assert_eq!(subscriptions.insert(&everything, client, client), None);
    }
    assert_eq!(subscriptions.insert(&everything, 5, 50), Some(5));
    let mut count = 0;
    subscriptions.for_each_match(&name("x"), |_| count += 1);
    assert_eq!(count, 1000);
    for client in 0..1000u32 {
        assert!(subscriptions.remove(&everything, &client).is_some());
    }
    assert!(subscriptions.is_empty());
    assert_eq!(subscriptions.node_count(), 1);
}

#[test]
fn removing_frees_nodes() {
    let mut subscriptions = SubscriptionIndex::new();
    subscriptions.insert(&filter("a/b/c"), 1u8, ());
    subscriptions.insert(&filter("a/+/c/#"), 1, ());
    subscriptions.insert(&filter("a/b"), 2, ());
    assert_eq!(subscriptions.node_count(), 7);
    assert_eq!(subscriptions.remove(&filter("a/b/c"), &2), None);
    assert_eq!(subscriptions.remove(&filter("a/b/c"), &1), Some(()));
    assert_eq!(subscriptions.node_count(), 6);
    assert_eq!(subscriptions.remove(&filter("a/+/c/#"), &1), Some(()));
    assert_eq!(subscriptions.node_count(), 3);
    assert_eq!(subscriptions.remove(&filter("a/b"), &2), Some(()));
    assert_eq!(subscriptions.node_count(), 1);
    assert!(subscriptions.is_empty());
}

#[test]
fn retained_get_replace_remove() {
    let mut retained = RetainedIndex::new();
    assert_eq!(retained.insert(&name("a/b"), 1), None);
    assert_eq!(retained.insert(&name("a/b"), 2), Some(1));
    assert_eq!(retained.insert(&name("a"), 3), None);
    assert_eq!(retained.get(&name("a/b")), Some(&2));
    assert_eq!(retained.get(&name("a/c")), None);
    assert_eq!(retained.len(), 2);
    assert_eq!(retained.remove(&name("a")), Some(3));
    assert_eq!(retained.node_count(), 3);
    assert_eq!(retained.remove(&name("a/b")), Some(2));
    assert_eq!(retained.remove(&name("a/b")), None);
    assert_eq!(retained.node_count(), 1);
    assert!(retained.is_empty());
}

#[test]
fn debug_shows_counts_not_contents() {
    /// A key and value with no `Debug`: the indexes' `Debug` must not need one.
    #[derive(PartialEq, Eq, Hash)]
    struct Opaque;
    let mut subscriptions = SubscriptionIndex::new();
    subscriptions.insert(&filter("a/+"), Opaque, Opaque);
    assert_eq!(
        alloc::format!("{subscriptions:?}"),
        "SubscriptionIndex { len: 1, .. }"
    );
    let mut retained = RetainedIndex::new();
    retained.insert(&name("a/b"), Opaque);
    assert_eq!(
        alloc::format!("{retained:?}"),
        "RetainedIndex { len: 1, .. }"
    );
}

#[test]
fn for_each_lists_every_subscription_and_group_with_its_filter() {
    let mut index = SubscriptionIndex::new();
    index.insert(&filter("a/b"), 1, 'x');
    index.insert(&filter("a/+"), 2, 'y');
    index.insert(&filter("#"), 3, 'z');
    index.insert(&filter("$share/g/a/b"), 4, 'w');
    index.insert(&filter("$share/g/a/b"), 5, 'v');
    index.remove(&filter("a/+"), &2);
    let mut seen = Vec::new();
    index.for_each(|found| match found {
        Match::Subscription { filter, key, .. } => {
            seen.push((index.filter_text(filter).unwrap_or_default(), *key, None));
        }
        Match::SharedGroup {
            filter,
            share_name,
            members,
        } => {
            for (key, _) in members {
                seen.push((
                    index.filter_text(filter).unwrap_or_default(),
                    *key,
                    Some(share_name.to_string()),
                ));
            }
        }
    });
    seen.sort();
    let g = Some("g".to_string());
    assert_eq!(
        seen,
        [
            ("#".to_string(), 3, None),
            ("a/b".to_string(), 1, None),
            ("a/b".to_string(), 4, g.clone()),
            ("a/b".to_string(), 5, g),
        ]
    );
    let mut exact = 0;
    index.for_each_with_filter(&filter("a/b"), |_| exact += 1);
    assert_eq!(exact, 2, "the plain subscription and the group");
    let mut none = 0;
    index.for_each_with_filter(&filter("a/c"), |_| none += 1);
    assert_eq!(none, 0);
}
