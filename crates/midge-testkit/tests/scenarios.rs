//! The broker and its clients on the virtual network and clock, driven by hand: cases a random
//! run meets rarely, and the checker's verdict on each.

use std::time::Duration;

use midge_broker::BrokerConfig;
use midge_codec::{ProtocolVersion, QoS};
use midge_proto::client::ClientConfig;
use midge_testkit::log::{ClientIdx, ClientSpec, CloseKind, Event, Role};
use midge_testkit::world::{Dir, NetConfig, World};

fn new_world() -> World {
    let mut config = BrokerConfig::default();
    config.sys.interval_secs = 0;
    config.limits.max_inflight = 2;
    config.limits.receive_maximum = 3;
    let net = NetConfig {
        latency_ms: (10, 10),
        window: (64 * 1024, 64 * 1024),
    };
    World::new(config, net, 1)
}

/// A client with a persistent session (expiry 1 h under 5.0) that reconnects after 10 ms.
fn client(world: &mut World, version: ProtocolVersion, id: &str) -> ClientIdx {
    let mut config = ClientConfig::new(version, id.to_owned());
    config.clean_start = false;
    config.keep_alive = 30;
    config.resubscribe = false;
    let session_expiry = if version.is_v5() {
        config.properties.session_expiry_interval = Some(3600);
        config.properties.receive_maximum = std::num::NonZeroU16::new(4);
        config.properties.topic_alias_maximum = Some(2);
        3600
    } else {
        u32::MAX
    };
    let spec = ClientSpec {
        client_id: id.to_owned(),
        version,
        role: Role::Regular,
        clean_start: false,
        session_expiry,
        will: None,
    };
    let c = world.add_client(spec, config);
    world.clients[c].reconnect_after = Some((10, 10));
    c
}

fn count(world: &World, mut f: impl FnMut(&Event) -> bool) -> usize {
    world.log.entries.iter().filter(|e| f(&e.event)).count()
}

/// Connects `c` and subscribes it to `t/#` at QoS 2.
fn subscribed(world: &mut World, c: ClientIdx) {
    world.connect(c);
    assert!(
        world.run_until(1_000, |w| w.clients[c].connected),
        "connects"
    );
    world.subscribe(c, &[("t/#".to_owned(), QoS::ExactlyOnce)]);
    assert!(
        world.run_until(1_000, |w| count(w, |e| matches!(
            e,
            Event::Subscribed { .. }
        )) >= 1),
        "subscribes"
    );
}

const MESSAGES: [(&str, QoS); 4] = [
    ("t/a", QoS::AtLeastOnce),
    ("t/b", QoS::ExactlyOnce),
    ("t/c/d", QoS::AtLeastOnce),
    ("t/a", QoS::ExactlyOnce),
];

/// Publishes [`MESSAGES`] to itself and runs until each has completed and arrived.
fn publish_and_finish(world: &mut World, c: ClientIdx) {
    for (topic, qos) in MESSAGES {
        world.publish(c, topic, qos, false, false, None);
    }
    let done = world.run_until(20_000, |w| {
        let completed = count(w, |e| matches!(e, Event::Published { .. }));
        let mut got: Vec<_> = w
            .log
            .entries
            .iter()
            .filter_map(|e| match &e.event {
                Event::Received { payload, .. } => Some(*payload),
                _ => None,
            })
            .collect();
        got.sort();
        got.dedup();
        completed == MESSAGES.len() && got.len() == MESSAGES.len()
    });
    assert!(done, "every flow completed");
}

#[test]
fn messages_round_trip_without_faults() {
    for version in [
        ProtocolVersion::V3_1_1,
        ProtocolVersion::V5,
        ProtocolVersion::V3_1,
    ] {
        let mut world = new_world();
        let c = client(&mut world, version, "c");
        subscribed(&mut world, c);
        publish_and_finish(&mut world, c);
        let report = world.finish();
        assert!(
            report.passed_strictly(),
            "{version:?}: {}",
            report.explain(&world.log)
        );
        assert_eq!(report.tally.delivered, MESSAGES.len() - 2 + 2);
        assert_eq!(count(&world, |e| matches!(e, Event::Connect { .. })), 1);
        // Without faults nothing is duplicated.
        assert_eq!(
            count(&world, |e| matches!(e, Event::Received { .. })),
            MESSAGES.len()
        );
    }
}

/// The connection breaks once, at every byte of the flows in each direction in turn: QoS 1
/// arrives at least once, QoS 2 exactly once, in order, and the session resumes each time.
#[test]
fn a_connection_cut_at_any_byte_keeps_every_promise() {
    let mut cases = 0;
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        // How many bytes each direction carries for the flows, without faults.
        let mut world = new_world();
        let c = client(&mut world, version, "c");
        subscribed(&mut world, c);
        let (up, down) = (world.bytes_sent(c, Dir::Up), world.bytes_sent(c, Dir::Down));
        publish_and_finish(&mut world, c);
        let total = [
            (Dir::Up, world.bytes_sent(c, Dir::Up) - up),
            (Dir::Down, world.bytes_sent(c, Dir::Down) - down),
        ];
        for (dir, bytes) in total {
            for at in 0..=bytes {
                let mut world = new_world();
                let c = client(&mut world, version, "c");
                subscribed(&mut world, c);
                world.cut_at(c, dir, at);
                publish_and_finish(&mut world, c);
                let report = world.finish();
                assert!(
                    report.passed_strictly(),
                    "{version:?}, cut after {at} bytes {dir:?}: {}",
                    report.explain(&world.log)
                );
                let cuts = count(&world, |e| matches!(e, Event::TransportDown { .. }));
                // Within the flows the cut comes; after their last byte, maybe later.
                assert!(cuts == 1 || (cuts == 0 && at == bytes), "{cuts} cuts");
                cases += 1;
            }
        }
    }
    assert!(cases > 300, "{cases} cuts");
}

#[test]
fn keepalive_runs_in_virtual_time() {
    let mut world = new_world();
    let c = client(&mut world, ProtocolVersion::V5, "c");
    subscribed(&mut world, c);
    let start = world.now();
    // An idle hour of virtual time: the client pings every 30 s and the broker answers, so the
    // connection stays up. It takes milliseconds.
    world.run_until(100_000, |w| w.now() >= start + Duration::from_secs(3600));
    assert!(world.now() >= start + Duration::from_secs(3600));
    assert!(world.clients[c].client.is_connected());
    assert_eq!(count(&world, |e| matches!(e, Event::Connect { .. })), 1);
    assert!(world.finish().passed_strictly());
}

#[test]
fn a_silent_network_makes_the_client_time_out() {
    let mut world = new_world();
    let c = client(&mut world, ProtocolVersion::V5, "c");
    subscribed(&mut world, c);
    world.clients[c].reconnect_after = None;
    world.black_hole(c);
    let start = world.now();
    assert!(world.run_until(10_000, |w| count(w, |e| matches!(
        e,
        Event::Closed {
            reason: CloseKind::Timeout,
            ..
        }
    )) == 1));
    // At most a keepalive interval (30 s) until the ping, then the 10 s PINGRESP deadline.
    let elapsed = world.now() - start;
    assert!(
        elapsed >= Duration::from_secs(10) && elapsed <= Duration::from_secs(41),
        "{elapsed:?}"
    );
    // The broker notices too, after 1.5 times the keepalive, and keeps the session.
    assert!(world.run_until(10_000, |w| count(w, |e| matches!(
        e,
        Event::BrokerClosed { .. }
    )) == 1));
}

// Conformance: [MQTT-3.1.1:3.1.3-7]
#[test]
fn a_3_1_1_client_without_id_asks_for_a_clean_session_and_is_accepted() {
    // 3.1.1 [MQTT-3.1.3-7]: no identifier, so Clean Session 1 even when the configuration asks
    // for a persistent session; the broker would refuse anything else with return code 2
    // [MQTT-3.1.3-8] (crates/midge-proto/tests/server.rs, empty_client_id_rules).
    let mut world = new_world();
    let c = client(&mut world, ProtocolVersion::V3_1_1, "");
    world.connect(c);
    assert!(world.run_until(100, |w| count(w, |e| matches!(
        e,
        Event::Connected {
            session_present: false,
            ..
        }
    )) == 1));
    assert!(world.clients[c].client.is_connected());
}

#[test]
fn the_broker_assigns_an_identifier_to_a_5_0_client_which_resumes_its_session_with_it() {
    let mut config = ClientConfig::new(ProtocolVersion::V5, "");
    config.clean_start = false;
    config.properties.session_expiry_interval = Some(60);
    let spec = ClientSpec {
        client_id: String::new(),
        version: ProtocolVersion::V5,
        role: Role::Regular,
        clean_start: false,
        session_expiry: 60,
        will: None,
    };
    let mut world = new_world();
    let c = world.add_client(spec, config);
    world.clients[c].reconnect_after = Some((10, 10));
    world.connect(c);
    assert!(world.run_until(100, |w| w.clients[c].connected));
    // Unguessable [MQTT-3.1.3-6]; it comes in CONNACK [MQTT-3.2.2-16].
    let assigned = world.clients[c].assigned_id.clone().expect("an identifier");
    assert!(assigned.starts_with("midge-"), "{assigned}");
    world.cut(c);
    assert!(
        world.run_until(100, |w| count(w, |e| matches!(e, Event::Connected { .. }))
            == 2)
    );
    let present: Vec<bool> = world
        .log
        .entries
        .iter()
        .filter_map(|e| match e.event {
            Event::Connected {
                session_present, ..
            } => Some(session_present),
            _ => None,
        })
        .collect();
    assert_eq!(
        present,
        [false, true],
        "the session resumed under the assigned identifier"
    );
}
