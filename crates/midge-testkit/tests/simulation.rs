//! Client and server state machines on a virtual network and clock: QoS guarantees across cut
//! connections, keepalive and ordering, in virtual time.

use std::collections::HashMap;
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::Duration;

use midge_codec::{
    ByteStr, ProtocolVersion, QoS, ReasonCode, SubscribeProperties, SubscriptionOptions,
};
use midge_proto::client::{ClientConfig, CloseReason, Event};
use midge_proto::server::ServerConfig;
use midge_proto::Message;
use midge_testkit::Pair;
use proptest::prelude::*;

const TOPICS: [&str; 3] = ["t/a", "t/b", "t/c/d"];

fn client_config(version: ProtocolVersion) -> Arc<ClientConfig> {
    let mut config = ClientConfig::new(version, "sim-client");
    // A persistent session, so that QoS state survives the cuts.
    config.clean_start = false;
    config.keep_alive = 30;
    if version.is_v5() {
        config.properties.session_expiry_interval = Some(3600);
        config.properties.receive_maximum = NonZeroU16::new(4);
        config.properties.topic_alias_maximum = Some(2);
    }
    config.max_queued_messages = 10_000;
    Arc::new(config)
}

fn server_config() -> Arc<ServerConfig> {
    let mut config = ServerConfig::default();
    config.receive_maximum = 3;
    config.max_inflight = 2;
    Arc::new(config)
}

/// Connects and subscribes to `t/#` at QoS 2, without cuts.
fn subscribed_pair(version: ProtocolVersion) -> Pair {
    let mut pair = Pair::new(client_config(version), server_config());
    pair.connect();
    assert!(
        pair.run_until(1_000, |p| p.client.is_connected()),
        "connects"
    );
    let filters = vec![(
        ByteStr::from("t/#"),
        SubscriptionOptions::qos(QoS::ExactlyOnce),
    )];
    pair.client
        .subscribe(filters, SubscribeProperties::default())
        .unwrap();
    assert!(
        pair.run_until(1_000, |p| p
            .client_events
            .iter()
            .any(|e| matches!(e, Event::Subscribed { .. }))),
        "subscribes"
    );
    pair
}

/// Publishes `messages` (topic index, QoS) with payloads "0", "1", …, cutting the connection
/// at the given step numbers, and runs until every publish has completed and every message
/// has come back. Returns the pair for inspection.
fn run_with_cuts(version: ProtocolVersion, messages: &[(usize, QoS)], cuts: &[u64]) -> Pair {
    let mut pair = subscribed_pair(version);
    for (i, (topic, qos)) in messages.iter().enumerate() {
        let message = Message::new(TOPICS[*topic], i.to_string().into_bytes(), *qos);
        pair.client.publish(message).unwrap();
    }
    let start = pair.steps;
    let mut cuts: Vec<u64> = cuts.iter().map(|c| start + c).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let expected = messages.len();
    let mut next_cut = cuts.into_iter().peekable();
    for _ in 0..20_000 {
        if complete(&pair, expected) {
            break;
        }
        if next_cut.peek().is_some_and(|c| *c <= pair.steps) {
            next_cut.next();
            pair.cut();
        }
        pair.step();
    }
    assert!(
        complete(&pair, expected),
        "all flows completed ({} connections)",
        pair.connections()
    );
    pair
}

fn complete(pair: &Pair, expected: usize) -> bool {
    let published = pair
        .client_events
        .iter()
        .filter(|e| matches!(e, Event::Published { .. }))
        .count();
    let qos0 = 0;
    published + qos0 >= expected && distinct_received(pair) >= expected
}

fn distinct_received(pair: &Pair) -> usize {
    let mut seen: Vec<_> = pair.received().map(|m| m.payload.clone()).collect();
    seen.sort();
    seen.dedup();
    seen.len()
}

/// The delivery guarantees, checked on a finished run.
fn check_guarantees(pair: &Pair, messages: &[(usize, QoS)]) {
    let mut routed: HashMap<Vec<u8>, usize> = HashMap::new();
    for m in &pair.routed {
        *routed.entry(m.payload.to_vec()).or_default() += 1;
    }
    let mut received: HashMap<Vec<u8>, usize> = HashMap::new();
    for m in pair.received() {
        *received.entry(m.payload.to_vec()).or_default() += 1;
    }
    for (i, (_, qos)) in messages.iter().enumerate() {
        let key = i.to_string().into_bytes();
        let (r, d) = (
            routed.get(&key).copied().unwrap_or(0),
            received.get(&key).copied().unwrap_or(0),
        );
        match qos {
            // QoS 1: at least once, in both directions [MQTT-4.3.2].
            QoS::AtLeastOnce => assert!(r >= 1 && d >= 1, "message {i}: routed {r}, received {d}"),
            // QoS 2: exactly once to routing and exactly once to the application [MQTT-4.3.3].
            QoS::ExactlyOnce => assert!(r == 1 && d == 1, "message {i}: routed {r}, received {d}"),
            QoS::AtMostOnce => assert!(r <= 1 && d <= 1),
        }
    }
    // Order per topic [MQTT-4.6.0-5]/[MQTT-4.6.0-6]: first deliveries arrive in publish order.
    for topic in TOPICS {
        let mut seen = Vec::new();
        for m in pair.received().filter(|m| m.topic == topic) {
            let n: usize = std::str::from_utf8(&m.payload).unwrap().parse().unwrap();
            if !seen.contains(&n) {
                seen.push(n);
            }
        }
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        assert_eq!(seen, sorted, "order on {topic}");
    }
    // Every completion reports success, except that a PUBREL resent after a cut may find the
    // flow already finished on the server, which answers 0x92 (5.0 §3.7.2.1).
    for event in &pair.client_events {
        if let Event::Published { reason_code, .. } = event {
            assert!(
                reason_code.is_success() || *reason_code == ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
                "publish completed with {reason_code:?}"
            );
        }
    }
}

#[test]
fn messages_round_trip_without_cuts() {
    for version in [
        ProtocolVersion::V3_1_1,
        ProtocolVersion::V5,
        ProtocolVersion::V3_1,
    ] {
        let messages = [
            (0, QoS::AtLeastOnce),
            (1, QoS::ExactlyOnce),
            (2, QoS::AtLeastOnce),
            (0, QoS::ExactlyOnce),
        ];
        let pair = run_with_cuts(version, &messages, &[]);
        check_guarantees(&pair, &messages);
        assert_eq!(pair.connections(), 1, "{version:?}");
        // Without cuts nothing is duplicated.
        assert_eq!(pair.received().count(), messages.len());
    }
}

#[test]
fn cut_at_every_step_of_a_qos2_and_a_qos1_flow() {
    // Cut once at each step of the flows, for both versions: "every possible step".
    let messages = [
        (0, QoS::ExactlyOnce),
        (0, QoS::AtLeastOnce),
        (1, QoS::ExactlyOnce),
    ];
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let uncut = run_with_cuts(version, &messages, &[]);
        let flow_steps = uncut.steps;
        for cut in 0..flow_steps {
            let pair = run_with_cuts(version, &messages, &[cut]);
            check_guarantees(&pair, &messages);
        }
    }
}

#[test]
fn keepalive_runs_in_virtual_time() {
    let mut pair = subscribed_pair(ProtocolVersion::V5);
    let start = pair.now;
    // An idle hour of virtual time: the client pings every 30 s and the server answers, so the
    // connection stays up. The test takes milliseconds.
    assert!(
        !pair.run_until(100_000, |p| p.now >= start + Duration::from_secs(3600)
            && p.client_events
                .iter()
                .any(|e| matches!(e, Event::Closed(_))))
    );
    assert!(pair.now >= start + Duration::from_secs(3600));
    assert!(pair.client.is_connected());
    assert_eq!(pair.connections(), 1);
}

#[test]
fn a_silent_network_makes_the_client_time_out() {
    let mut pair = subscribed_pair(ProtocolVersion::V5);
    pair.auto_reconnect = false;
    // The network swallows everything from now on; the server is gone.
    pair.server = None;
    let start = pair.now;
    assert!(pair.run_until(10_000, |p| p
        .client_events
        .iter()
        .any(|e| *e == Event::Closed(CloseReason::Timeout))));
    // At most a keepalive interval (30 s) until the ping, then the 10 s PINGRESP deadline.
    let elapsed = pair.now - start;
    assert!(
        elapsed >= Duration::from_secs(10) && elapsed <= Duration::from_secs(41),
        "{elapsed:?}"
    );
}

// Conformance: [MQTT-3.1.1:3.1.3-7]
#[test]
fn a_3_1_1_client_without_id_asks_for_a_clean_session_and_is_accepted() {
    // 3.1.1 [MQTT-3.1.3-7]: no identifier, so Clean Session 1 even when the configuration asks
    // for a persistent session; the server would refuse anything else with return code 2
    // [MQTT-3.1.3-8] (crates/midge-proto/tests/server.rs, empty_client_id_rules).
    let mut config = ClientConfig::new(ProtocolVersion::V3_1_1, "");
    config.clean_start = false;
    let mut pair = Pair::new(Arc::new(config), server_config());
    pair.auto_reconnect = false;
    pair.connect();
    assert!(pair.run_until(100, |p| p
        .client_events
        .iter()
        .any(|e| matches!(e, Event::Connected(c) if c.reason_code == ReasonCode::SUCCESS && !c.session_present))));
}

#[test]
fn server_assigns_an_identifier_to_a_5_0_client_and_the_client_reuses_it() {
    let mut config = ClientConfig::new(ProtocolVersion::V5, "");
    config.clean_start = false;
    config.properties.session_expiry_interval = Some(60);
    let mut pair = Pair::new(Arc::new(config), server_config());
    pair.connect();
    assert!(pair.run_until(100, |p| p.client.is_connected()));
    let assigned = pair.client_events.iter().find_map(|e| match e {
        Event::Connected(c) => c.properties.assigned_client_identifier.clone(),
        _ => None,
    });
    let assigned = assigned.expect("CONNACK carries the assigned identifier [MQTT-3.2.2-16]");
    assert_eq!(assigned.as_str(), midge_testkit::ASSIGNED_CLIENT_ID);
    pair.cut();
    assert!(pair.run_until(100, |p| p.client.is_connected()));
    // The resumed session is found under the assigned identifier.
    let present = pair.client_events.iter().filter_map(|e| match e {
        Event::Connected(c) => Some(c.session_present),
        _ => None,
    });
    assert_eq!(present.collect::<Vec<_>>(), [false, true]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// For any messages and any sequence of cuts: QoS 1 at least once, QoS 2 exactly once,
    /// order per topic kept.
    #[test]
    fn guarantees_hold_for_any_cuts(
        v5 in any::<bool>(),
        messages in proptest::collection::vec((0..TOPICS.len(), prop_oneof![Just(QoS::AtLeastOnce), Just(QoS::ExactlyOnce)]), 1..12),
        cuts in proptest::collection::vec(0u64..80, 0..10),
    ) {
        let version = if v5 { ProtocolVersion::V5 } else { ProtocolVersion::V3_1_1 };
        let pair = run_with_cuts(version, &messages, &cuts);
        check_guarantees(&pair, &messages);
    }
}
