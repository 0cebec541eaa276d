//! Both indexes agree with a naive matcher: a linear scan over every filter or topic, written
//! straight from the rules of MQTT section 4.7, without sharing code with the crate.

use std::collections::BTreeMap;

use midge_topic::{Match, RetainedIndex, SubscriptionIndex, TopicFilter, TopicName};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// Filter matches topic: `+` is any one level, `#` is any rest including none, and a filter
/// that starts with a wildcard does not match a topic that starts with `$` [MQTT-4.7.2-1].
fn naive_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let filter_levels: Vec<&str> = filter.split('/').collect();
    let topic_levels: Vec<&str> = topic.split('/').collect();
    for (i, filter_level) in filter_levels.iter().enumerate() {
        if *filter_level == "#" {
            return true;
        }
        match topic_levels.get(i) {
            None => return false,
            Some(topic_level) => {
                if *filter_level != "+" && filter_level != topic_level {
                    return false;
                }
            }
        }
    }
    filter_levels.len() == topic_levels.len()
}

fn topic_level() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["a", "b", "c", "", "$SYS", "$x", "é"])
}

fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(topic_level(), 1..5)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("empty topic", |topic| !topic.is_empty())
}

fn filter() -> impl Strategy<Value = String> {
    let level = prop::sample::select(vec!["a", "b", "", "$SYS", "+", "+"]);
    (
        prop::collection::vec(level, 0..4),
        any::<bool>(),
        prop::sample::select(vec!["", "", "$share/g1/", "$share/g2/"]),
    )
        .prop_filter_map("empty filter", |(levels, hash, share)| {
            let mut text = levels.join("/");
            if hash {
                if !levels.is_empty() {
                    text.push('/');
                }
                text.push('#');
            }
            if text.is_empty() {
                return None;
            }
            Some(format!("{share}{text}"))
        })
}

#[derive(Debug, Clone)]
enum Op {
    Insert { filter: usize, key: u8, value: u16 },
    Remove { filter: usize, key: u8 },
}

fn ops(filters: usize) -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        3 => (0..filters, 0..4u8, any::<u16>())
            .prop_map(|(filter, key, value)| Op::Insert { filter, key, value }),
        1 => (0..filters, 0..4u8).prop_map(|(filter, key)| Op::Remove { filter, key }),
    ];
    prop::collection::vec(op, 0..60)
}

/// What a match produced, in a form both sides can build: (share name, filter, sorted members).
type Found = (String, String, Vec<(u8, u16)>);

fn index_matches(index: &SubscriptionIndex<u8, u16>, topic: &str) -> Vec<Found> {
    let mut found = Vec::new();
    index.for_each_match(&TopicName::new(topic).unwrap(), |one| match one {
        Match::Subscription { filter, key, value } => found.push((
            String::new(),
            index.filter_text(filter).unwrap(),
            vec![(*key, *value)],
        )),
        Match::SharedGroup {
            filter,
            share_name,
            members,
        } => {
            let mut members = members.to_vec();
            members.sort_unstable();
            found.push((
                share_name.to_owned(),
                index.filter_text(filter).unwrap(),
                members,
            ));
        }
    });
    found.sort();
    found
}

fn model_matches(model: &BTreeMap<(String, u8), u16>, topic: &str) -> Vec<Found> {
    let mut groups: BTreeMap<(String, String), Vec<(u8, u16)>> = BTreeMap::new();
    let mut found = Vec::new();
    for ((filter, key), value) in model {
        let (share, pattern) = match filter.strip_prefix("$share/") {
            Some(rest) => {
                let (share, pattern) = rest.split_once('/').unwrap();
                (share.to_owned(), pattern.to_owned())
            }
            None => (String::new(), filter.clone()),
        };
        if !naive_matches(&pattern, topic) {
            continue;
        }
        if share.is_empty() {
            found.push((share, pattern, vec![(*key, *value)]));
        } else {
            groups
                .entry((share, pattern))
                .or_default()
                .push((*key, *value));
        }
    }
    for ((share, pattern), mut members) in groups {
        members.sort_unstable();
        found.push((share, pattern, members));
    }
    found.sort();
    found
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // Integration tests have no lib.rs beside them; keep failures where the crate's are.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/reference.txt",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn filter_matches_agrees_with_naive(filter in filter(), topic in topic()) {
        let parsed = TopicFilter::new(&filter).unwrap();
        let expected = naive_matches(parsed.pattern(), &topic);
        prop_assert_eq!(parsed.matches(&TopicName::new(&topic).unwrap()), expected);
    }

    #[test]
    fn subscription_index_agrees_with_naive(
        filters in prop::collection::vec(filter(), 1..12),
        topics in prop::collection::vec(topic(), 1..12),
        ops in ops(12),
    ) {
        let mut index = SubscriptionIndex::new();
        let mut model = BTreeMap::new();
        for op in ops {
            match op {
                Op::Insert { filter, key, value } => {
                    let text = &filters[filter % filters.len()];
                    let old = index.insert(&TopicFilter::new(text).unwrap(), key, value);
                    prop_assert_eq!(old, model.insert((text.clone(), key), value));
                }
                Op::Remove { filter, key } => {
                    let text = &filters[filter % filters.len()];
                    let old = index.remove(&TopicFilter::new(text).unwrap(), &key);
                    prop_assert_eq!(old, model.remove(&(text.clone(), key)));
                }
            }
            prop_assert_eq!(index.len(), model.len());
        }
        for topic in &topics {
            prop_assert_eq!(index_matches(&index, topic), model_matches(&model, topic));
        }
        for (filter, key) in model.keys() {
            prop_assert!(index.remove(&TopicFilter::new(filter).unwrap(), key).is_some());
        }
        prop_assert!(index.is_empty());
        prop_assert_eq!(index.node_count(), 1);
    }

    #[test]
    fn retained_index_agrees_with_naive(
        topics in prop::collection::vec(topic(), 1..24),
        filters in prop::collection::vec(filter(), 1..12),
        ops in prop::collection::vec((any::<bool>(), 0..24usize, any::<u16>()), 0..60),
    ) {
        let mut index = RetainedIndex::new();
        let mut model = BTreeMap::new();
        for (insert, topic, value) in ops {
            let text = &topics[topic % topics.len()];
            let name = TopicName::new(text).unwrap();
            if insert {
                prop_assert_eq!(index.insert(&name, value), model.insert(text.clone(), value));
            } else {
                prop_assert_eq!(index.remove(&name), model.remove(text));
            }
            prop_assert_eq!(index.get(&name), model.get(text));
            prop_assert_eq!(index.len(), model.len());
        }
        for filter in &filters {
            let parsed = TopicFilter::new(filter).unwrap();
            let mut found = Vec::new();
            index.for_each_match(&parsed, |value| found.push(*value));
            found.sort_unstable();
            let mut expected: Vec<u16> = model
                .iter()
                .filter(|(topic, _)| naive_matches(parsed.pattern(), topic))
                .map(|(_, value)| *value)
                .collect();
            expected.sort_unstable();
            prop_assert_eq!(found, expected, "filter {}", filter);
        }
        for topic in model.keys() {
            prop_assert!(index.remove(&TopicName::new(topic).unwrap()).is_some());
        }
        prop_assert!(index.is_empty());
        prop_assert_eq!(index.node_count(), 1);
    }
}
