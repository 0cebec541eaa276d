//! The topic-to-subject mapping is injective, and NATS matching of mapped filters on mapped
//! topics is MQTT matching (midge-topic's).

use midge_cluster::subject::{
    filter_subjects, message_subject, nats_matches, topic_from_subject, topic_key,
};
use midge_topic::{TopicFilter, TopicName};
use proptest::prelude::*;

/// Levels made of what the two protocols treat differently, and plain letters.
fn level() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop::sample::select(vec![
            "a", "b", ".", "*", ">", " ", "\t", "\n", "$", "=", "=2E", "é", "-", "_", "%", "+x",
        ]),
        0..3,
    )
    .prop_map(|parts| parts.concat().replace("+x", "x+"))
    .prop_filter("no wildcards in topic levels", |l| !l.contains(['+', '#']))
}

fn topic() -> impl Strategy<Value = String> {
    proptest::collection::vec(level(), 1..5)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("a topic is not empty", |t| !t.is_empty())
}

fn filter() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec(prop_oneof![3 => level(), 1 => Just("+".to_string())], 1..5),
        any::<bool>(),
    )
        .prop_map(|(mut levels, hash)| {
            if hash {
                levels.push("#".into());
            }
            levels.join("/")
        })
        .prop_filter("a filter is not empty", |f| !f.is_empty())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn the_mapping_is_injective(a in topic(), b in topic()) {
        let subject = message_subject("midge", &a);
        prop_assert_eq!(topic_from_subject("midge", &subject), Some(a.clone()));
        prop_assert_eq!(a == b, topic_key(&a) == topic_key(&b));
        // Every token is a literal: not empty, no wildcard, nothing but key characters.
        for token in subject.split('.') {
            prop_assert!(!token.is_empty() && token != "*" && token != ">");
            prop_assert!(token.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_=".contains(&c)));
        }
    }

    #[test]
    fn nats_matching_is_mqtt_matching(f in filter(), t in topic()) {
        let mqtt = TopicFilter::new(&f).unwrap().matches(&TopicName::new(&t).unwrap());
        let subject = message_subject("midge", &t);
        let subjects = filter_subjects("midge", &f);
        let nats = subjects.iter().filter(|s| nats_matches(s, &subject)).count();
        // Never twice: a filter's two subscriptions (a/# and a) are disjoint.
        prop_assert!(nats <= 1, "{f} {t}: {subjects:?}");
        prop_assert_eq!(mqtt, nats == 1, "{} on {}: {:?} on {}", f, t, subjects, subject);
    }

    #[test]
    fn a_topic_matches_itself_as_a_filter(t in topic()) {
        let subjects = filter_subjects("midge", &t);
        prop_assert_eq!(subjects.len(), 1);
        prop_assert!(nats_matches(&subjects[0], &message_subject("midge", &t)));
    }
}

/// The cases the strategies might rarely hit.
#[test]
fn dollar_topics_and_the_parent_rule() {
    let cases = [
        ("#", "$SYS/x", false),
        ("+/x", "$SYS/x", false),
        ("$SYS/#", "$SYS/x", true),
        ("$SYS/#", "$SYS", true),
        ("a/#", "a", true),
        ("a/#", "a/", true),
        ("a/#", "ab", false),
        ("a/+", "a", false),
        ("a/+", "a/", true),
        ("+", "/", false),
        ("+/+", "/", true),
        ("#", "/", true),
        ("a/b", "a.b", false),
        ("a.b", "a/b", false),
    ];
    for (f, t, expected) in cases {
        let mqtt = TopicFilter::new(f)
            .unwrap()
            .matches(&TopicName::new(t).unwrap());
        assert_eq!(mqtt, expected, "midge-topic: {f} on {t}");
        let subject = message_subject("m", t);
        let nats = filter_subjects("m", f)
            .iter()
            .any(|s| nats_matches(s, &subject));
        assert_eq!(nats, expected, "{f} on {t}");
    }
}
