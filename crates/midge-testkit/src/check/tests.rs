//! The checker against hand-made logs: each promise, kept and broken. A checker that cannot
//! fail checks nothing.

use std::time::Duration;

use midge_codec::{ProtocolVersion, QoS};

use super::{check, Report};
use crate::log::{
    ClientIdx, ClientSpec, CloseKind, ConnNo, Counters, Event, Log, MsgId, Payload, Role, WillSpec,
};

fn spec(id: &str, version: ProtocolVersion, expiry: u32) -> ClientSpec {
    ClientSpec {
        client_id: id.to_owned(),
        version,
        role: Role::Regular,
        clean_start: expiry == 0,
        session_expiry: expiry,
        will: None,
    }
}

fn v5(id: &str) -> ClientSpec {
    spec(id, ProtocolVersion::V5, 3600)
}

/// A log under construction, with its own clock.
struct B {
    log: Log,
    now: Duration,
}

impl B {
    fn new(clients: Vec<ClientSpec>) -> Self {
        Self {
            log: Log {
                clients,
                entries: Vec::new(),
            },
            now: Duration::ZERO,
        }
    }

    fn ev(&mut self, event: Event) -> usize {
        self.now += Duration::from_millis(10);
        self.log.push(self.now, event);
        self.log.entries.len() - 1
    }

    fn wait(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
    }

    fn connect(&mut self, client: ClientIdx, conn: ConnNo, session_present: bool) {
        self.ev(Event::Connect { client, conn });
        self.ev(Event::Connected {
            client,
            conn,
            session_present,
        });
    }

    /// The connection is cut: the client and the broker both see it.
    fn cut(&mut self, client: ClientIdx, conn: ConnNo) {
        self.ev(Event::TransportDown { client, conn });
        self.ev(Event::BrokerClosed {
            client,
            conn,
            disconnect: None,
        });
        self.ev(Event::Closed {
            client,
            conn,
            reason: CloseKind::ConnectionLost,
        });
    }

    fn disconnect(&mut self, client: ClientIdx, conn: ConnNo, code: u8) {
        self.ev(Event::Disconnect { client, conn, code });
        self.ev(Event::Closed {
            client,
            conn,
            reason: CloseKind::Disconnected,
        });
        self.ev(Event::BrokerClosed {
            client,
            conn,
            disconnect: Some(code),
        });
    }

    fn subscribe(&mut self, client: ClientIdx, packet: u16, filter: &str, qos: QoS) {
        self.ev(Event::Subscribe {
            client,
            packet,
            filters: vec![(filter.to_owned(), qos)],
        });
        self.ev(Event::Subscribed {
            client,
            packet,
            codes: vec![qos as u8],
        });
    }

    fn publish(&mut self, publisher: ClientIdx, seq: u32, topic: &str, qos: QoS) -> MsgId {
        self.publish_with(publisher, seq, topic, qos, false, None)
    }

    fn publish_with(
        &mut self,
        publisher: ClientIdx,
        seq: u32,
        topic: &str,
        qos: QoS,
        retain: bool,
        expiry: Option<u32>,
    ) -> MsgId {
        let msg = MsgId { publisher, seq };
        self.ev(Event::Publish {
            msg,
            topic: topic.to_owned(),
            qos,
            retain,
            empty: false,
            expiry,
        });
        msg
    }

    fn ack(&mut self, msg: MsgId, code: u8) {
        self.ev(Event::Published { msg, code });
    }

    fn recv(&mut self, client: ClientIdx, msg: MsgId, topic: &str, qos: QoS) -> usize {
        self.recv_with(client, Payload::Message(msg), topic, qos, false, None)
    }

    fn recv_with(
        &mut self,
        client: ClientIdx,
        payload: Payload,
        topic: &str,
        qos: QoS,
        retain: bool,
        expiry: Option<u32>,
    ) -> usize {
        self.ev(Event::Received {
            client,
            topic: topic.to_owned(),
            payload,
            qos,
            retain,
            expiry,
        })
    }

    fn counters(&mut self, dropped: u64) {
        self.ev(Event::Counters(Counters {
            dropped_queue_full: dropped,
            ..Counters::default()
        }));
    }

    fn end(mut self) -> (Log, Report) {
        self.ev(Event::End);
        let report = check(&self.log);
        (self.log, report)
    }
}

fn passes(b: B) {
    let (log, report) = b.end();
    assert!(report.passed(), "{}", report.explain(&log));
}

/// The run breaks `rule`, and not as a known broker issue.
fn breaks(b: B, rule: &str) {
    let (log, report) = b.end();
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.rule.contains(rule) && v.known.is_none()),
        "expected a violation of {rule}, got:\n{}",
        report.explain(&log)
    );
}

/// A publisher (0) and a subscriber (1) to `t/#` at QoS 2, both connected.
fn pub_sub() -> B {
    let mut b = B::new(vec![v5("p"), v5("s")]);
    b.connect(0, 1, false);
    b.connect(1, 1, false);
    b.subscribe(1, 1, "t/#", QoS::ExactlyOnce);
    b
}

#[test]
fn a_clean_run_passes() {
    let mut b = pub_sub();
    let m = b.publish(0, 0, "t/a", QoS::AtLeastOnce);
    b.recv(1, m, "t/a", QoS::AtLeastOnce);
    b.ack(m, 0);
    let (log, report) = b.end();
    assert!(report.passed(), "{}", report.explain(&log));
    assert_eq!(report.tally.expected, 1);
    assert_eq!(report.tally.delivered, 1);
}

#[test]
fn an_acknowledged_message_that_never_arrives_is_a_violation() {
    let mut b = pub_sub();
    let m = b.publish(0, 0, "t/a", QoS::AtLeastOnce);
    b.ack(m, 0);
    breaks(b, "MQTT-4.5.0-1");
}

/// The broker crashes, and a new one starts on its journal.
fn crash(b: &mut B) {
    b.ev(Event::Crash);
    b.ev(Event::Start);
}

#[test]
fn a_crash_loses_no_acknowledged_message_of_a_persistent_session() {
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let run = |delivered: bool| {
            let mut b = pub_sub();
            let m = b.publish(0, 0, "t/a", qos);
            b.ack(m, 0);
            crash(&mut b);
            b.connect(0, 2, true);
            b.connect(1, 2, true);
            if delivered {
                b.recv(1, m, "t/a", qos);
            }
            b
        };
        passes(run(true));
        breaks(run(false), "MQTT-4.5.0-1");
    }
}

#[test]
fn a_crash_may_lose_what_was_not_acknowledged_or_went_to_a_session_ending_with_its_connection() {
    // Not acknowledged before the crash, and never completed after it: a liveness matter,
    // not a loss.
    let mut b = pub_sub();
    let m = b.publish(0, 0, "t/a", QoS::AtLeastOnce);
    crash(&mut b);
    b.connect(0, 2, true);
    b.connect(1, 2, true);
    let (_, report) = b.end();
    assert!(!report.broke("MQTT-4.5.0-1"), "{report:?}");
    let _ = m;

    // A subscriber whose session ends with its connection: the crash ends it.
    let mut b = B::new(vec![v5("p"), spec("s", ProtocolVersion::V5, 0)]);
    b.connect(0, 1, false);
    b.connect(1, 1, false);
    b.subscribe(1, 1, "t/#", QoS::ExactlyOnce);
    let m = b.publish(0, 0, "t/a", QoS::AtLeastOnce);
    b.ack(m, 0);
    crash(&mut b);
    b.connect(0, 2, true);
    b.connect(1, 2, false);
    let (log, report) = b.end();
    assert!(report.passed(), "{}", report.explain(&log));
    assert_eq!(report.tally.lost_to_session_end, 1);
}

#[test]
fn a_crash_keeps_every_persistent_session_whose_connack_went_out() {
    let run = |present: bool| {
        let mut b = pub_sub();
        crash(&mut b);
        b.connect(0, 2, true);
        b.connect(1, 2, present);
        b
    };
    passes(run(true));
    breaks(run(false), "MQTT-3.1.2-4");

    // Its subscriptions too: a message after the crash reaches it.
    let mut b = pub_sub();
    crash(&mut b);
    b.connect(0, 2, true);
    b.connect(1, 2, true);
    let m = b.publish(0, 0, "t/a", QoS::AtLeastOnce);
    b.ack(m, 0);
    breaks(b, "MQTT-4.5.0-1");
}

#[test]
fn qos_2_is_delivered_exactly_once_and_in_order_across_a_crash() {
    let twice = |qos: QoS| {
        let mut b = pub_sub();
        let m = b.publish(0, 0, "t/a", qos);
        b.recv(1, m, "t/a", qos);
        b.ack(m, 0);
        crash(&mut b);
        b.connect(0, 2, true);
        b.connect(1, 2, true);
        b.recv(1, m, "t/a", qos);
        b
    };
    // QoS 1 may come again on the new connection; QoS 2 never.
    passes(twice(QoS::AtLeastOnce));
    breaks(twice(QoS::ExactlyOnce), "MQTT-4.3.3-2");

    let mut b = pub_sub();
    let first = b.publish(0, 0, "t/a", QoS::ExactlyOnce);
    b.ack(first, 0);
    let second = b.publish(0, 1, "t/a", QoS::ExactlyOnce);
    b.ack(second, 0);
    b.recv(1, second, "t/a", QoS::ExactlyOnce);
    crash(&mut b);
    b.connect(0, 2, true);
    b.connect(1, 2, true);
    b.recv(1, first, "t/a", QoS::ExactlyOnce);
    breaks(b, "MQTT-4.6.0-6");
}

#[test]
fn a_session_restored_after_a_crash_expires_from_when_it_went_offline_or_the_restart() {
    // Offline at t, crash at t + 1 s (which may have lost the offline record), restart at
    // t + 2 s, expiry 5 s: it may be gone from t + 5 s, and must be from t + 7 s.
    let run = |back_after: u64, present: bool| {
        let mut b = B::new(vec![spec("s", ProtocolVersion::V5, 5)]);
        b.connect(0, 1, false);
        b.cut(0, 1);
        b.wait(1);
        b.ev(Event::Crash);
        b.wait(1);
        b.ev(Event::Start);
        b.wait(back_after);
        b.connect(0, 2, present);
        b
    };
    passes(run(0, true));
    passes(run(4, true));
    passes(run(4, false));
    breaks(run(0, false), "MQTT-3.1.2-4");
    breaks(run(7, true), "MQTT-4.1.0-2");

    // Online at the crash: it counts from the restart.
    let run = |back_after: u64, present: bool| {
        let mut b = B::new(vec![spec("s", ProtocolVersion::V5, 5)]);
        b.connect(0, 1, false);
        b.ev(Event::Crash);
        b.wait(10);
        b.ev(Event::Start);
        b.wait(back_after);
        b.connect(0, 2, present);
        b
    };
    passes(run(1, true));
    breaks(run(1, false), "MQTT-3.1.2-4");
    breaks(run(7, true), "MQTT-4.1.0-2");
}

#[test]
fn a_retained_message_acknowledged_before_a_crash_survives_it() {
    let run = |acked: bool, gets: bool| {
        let mut clients = vec![v5("p"), spec("probe", ProtocolVersion::V5, 0)];
        clients[1].role = Role::Probe;
        let mut b = B::new(clients);
        b.connect(0, 1, false);
        let m = b.publish_with(0, 0, "t/a", QoS::AtLeastOnce, true, None);
        if acked {
            b.ack(m, 0x10);
        }
        crash(&mut b);
        b.connect(0, 2, true);
        b.ev(Event::Drain);
        b.connect(1, 1, false);
        b.subscribe(1, 1, "t/#", QoS::ExactlyOnce);
        if gets {
            b.recv_with(1, Payload::Message(m), "t/a", QoS::AtLeastOnce, true, None);
        }
        b
    };
    passes(run(true, true));
    breaks(run(true, false), "MQTT-3.3.1-6");
    // Its acknowledgement lost in the crash: it may or may not be kept.
    let (_, report) = run(false, true).end();
    assert!(!report.broke("MQTT-3.3.1-6"), "{report:?}");
    let (_, report) = run(false, false).end();
    assert!(!report.broke("MQTT-3.3.1-6"), "{report:?}");
}

#[test]
fn a_refused_message_may_be_lost_only_if_the_drop_was_counted() {
    let refused = |dropped| {
        let mut b = pub_sub();
        let m = b.publish(0, 0, "t/a", QoS::AtLeastOnce);
        b.ack(m, 0x97);
        b.counters(dropped);
        b
    };
    passes(refused(1));
    breaks(refused(0), "counted");
}

#[test]
fn a_3_1_1_publisher_cannot_be_refused_so_its_losses_must_be_counted() {
    let lost = |dropped| {
        let mut b = B::new(vec![spec("p", ProtocolVersion::V3_1_1, u32::MAX), v5("s")]);
        b.connect(0, 1, false);
        b.connect(1, 1, false);
        b.subscribe(1, 1, "t/#", QoS::AtLeastOnce);
        let m = b.publish(0, 0, "t/a", QoS::AtLeastOnce);
        b.ack(m, 0);
        b.counters(dropped);
        b
    };
    passes(lost(1));
    breaks(lost(0), "every dropped delivery is counted");
}

#[test]
fn no_matching_subscribers_while_one_was_subscribed_is_a_violation() {
    let mut b = pub_sub();
    let m = b.publish(0, 0, "t/a", QoS::AtLeastOnce);
    b.recv(1, m, "t/a", QoS::AtLeastOnce);
    b.ack(m, 0x10);
    breaks(b, "0x10");
}

#[test]
fn qos_2_delivered_twice_is_a_violation_unless_the_publisher_lost_its_session() {
    let mut b = pub_sub();
    let m = b.publish(0, 0, "t/a", QoS::ExactlyOnce);
    b.recv(1, m, "t/a", QoS::ExactlyOnce);
    b.recv(1, m, "t/a", QoS::ExactlyOnce);
    b.ack(m, 0);
    breaks(b, "MQTT-4.3.3-2");

    // The publisher's session expired while the message was in flight: it is sent again as a
    // new message, and exactly once is no longer promised.
    let mut b = B::new(vec![spec("p", ProtocolVersion::V5, 1), v5("s")]);
    b.connect(0, 1, false);
    b.connect(1, 1, false);
    b.subscribe(1, 1, "t/#", QoS::ExactlyOnce);
    let m = b.publish(0, 0, "t/a", QoS::ExactlyOnce);
    b.recv(1, m, "t/a", QoS::ExactlyOnce);
    b.cut(0, 1);
    b.wait(5);
    b.connect(0, 2, false);
    b.recv(1, m, "t/a", QoS::ExactlyOnce);
    b.ack(m, 0);
    passes(b);
}

#[test]
fn qos_0_delivered_twice_is_a_violation() {
    // Two overlapping subscriptions must still give one copy.
    let mut b = pub_sub();
    b.subscribe(1, 2, "t/+", QoS::AtMostOnce);
    let m = b.publish(0, 0, "t/a", QoS::AtMostOnce);
    b.recv(1, m, "t/a", QoS::AtMostOnce);
    b.recv(1, m, "t/a", QoS::AtMostOnce);
    breaks(b, "MQTT-4.3.1-1");
}

#[test]
fn qos_1_sent_again_needs_a_new_connection() {
    let twice = |reconnect: bool| {
        let mut b = pub_sub();
        let m = b.publish(0, 0, "t/a", QoS::AtLeastOnce);
        b.recv(1, m, "t/a", QoS::AtLeastOnce);
        b.ack(m, 0);
        if reconnect {
            b.cut(1, 1);
            b.connect(1, 2, true);
        }
        b.recv(1, m, "t/a", QoS::AtLeastOnce);
        b
    };
    passes(twice(true));
    breaks(twice(false), "MQTT-4.4.0-1");
}

#[test]
fn messages_out_of_order_are_a_violation() {
    let mut b = pub_sub();
    let m0 = b.publish(0, 0, "t/a", QoS::AtLeastOnce);
    let m1 = b.publish(0, 1, "t/a", QoS::AtLeastOnce);
    b.recv(1, m1, "t/a", QoS::AtLeastOnce);
    b.recv(1, m0, "t/a", QoS::AtLeastOnce);
    b.ack(m0, 0);
    b.ack(m1, 0);
    breaks(b, "MQTT-4.6.0-6");

    // Different topics may interleave.
    let mut b = pub_sub();
    let m0 = b.publish(0, 0, "t/a", QoS::AtLeastOnce);
    let m1 = b.publish(0, 1, "t/b", QoS::AtLeastOnce);
    b.recv(1, m1, "t/b", QoS::AtLeastOnce);
    b.recv(1, m0, "t/a", QoS::AtLeastOnce);
    b.ack(m0, 0);
    b.ack(m1, 0);
    passes(b);
}

#[test]
fn a_message_that_was_never_published_or_not_subscribed_to_is_a_violation() {
    let mut b = pub_sub();
    b.recv_with(1, Payload::Unknown, "t/a", QoS::AtMostOnce, false, None);
    breaks(b, "published");

    let mut b = pub_sub();
    let m = b.publish(0, 0, "x/a", QoS::AtMostOnce);
    b.recv(1, m, "x/a", QoS::AtMostOnce);
    breaks(b, "MQTT-3.3.2-3");

    let mut b = pub_sub();
    let m = b.publish(0, 0, "t/a", QoS::AtMostOnce);
    b.recv(1, m, "t/b", QoS::AtMostOnce);
    breaks(b, "published");

    let mut b = pub_sub();
    let m = b.publish(0, 0, "t/a", QoS::AtLeastOnce);
    b.recv(1, m, "t/a", QoS::ExactlyOnce);
    b.ack(m, 0);
    breaks(b, "MQTT-3.8.4-8");
}

#[test]
fn retain_on_an_established_subscription_is_a_violation() {
    let mut b = pub_sub();
    let m = b.publish(0, 0, "t/a", QoS::AtMostOnce);
    b.recv_with(1, Payload::Message(m), "t/a", QoS::AtMostOnce, true, None);
    breaks(b, "MQTT-3.3.1-9");
}

#[test]
fn a_retained_message_for_a_new_subscription_must_be_the_last_one() {
    let run = |which: u32| {
        let mut b = B::new(vec![v5("p"), v5("s")]);
        b.connect(0, 1, false);
        let old = b.publish_with(0, 0, "t/a", QoS::AtLeastOnce, true, None);
        b.ack(old, 0x10);
        let new = b.publish_with(0, 1, "t/a", QoS::AtLeastOnce, true, None);
        b.ack(new, 0x10);
        b.connect(1, 1, false);
        b.subscribe(1, 1, "t/#", QoS::AtLeastOnce);
        let got = if which == 0 { old } else { new };
        b.recv_with(
            1,
            Payload::Message(got),
            "t/a",
            QoS::AtLeastOnce,
            true,
            None,
        );
        b
    };
    passes(run(1));
    breaks(run(0), "MQTT-3.3.1-6");

    // Cleared: nothing may be sent, and an empty retained message never.
    let mut b = B::new(vec![v5("p"), v5("s")]);
    b.connect(0, 1, false);
    b.connect(1, 1, false);
    b.subscribe(1, 1, "t/#", QoS::AtLeastOnce);
    b.recv_with(1, Payload::Empty, "t/a", QoS::AtLeastOnce, true, None);
    breaks(b, "MQTT-3.3.1-11");
}

#[test]
fn the_probe_must_get_every_topics_retained_message() {
    let run = |gets: bool| {
        let mut clients = vec![v5("p"), spec("probe", ProtocolVersion::V5, 0)];
        clients[1].role = Role::Probe;
        let mut b = B::new(clients);
        b.connect(0, 1, false);
        let m = b.publish_with(0, 0, "t/a", QoS::AtLeastOnce, true, None);
        b.ack(m, 0x10);
        b.ev(Event::Drain);
        b.connect(1, 1, false);
        b.subscribe(1, 1, "t/#", QoS::ExactlyOnce);
        if gets {
            b.recv_with(1, Payload::Message(m), "t/a", QoS::AtLeastOnce, true, None);
        }
        b
    };
    passes(run(true));
    breaks(run(false), "MQTT-3.3.1-6");
}

fn will_owner() -> ClientSpec {
    let mut c = v5("owner");
    c.will = Some(WillSpec {
        topic: "w/0".to_owned(),
        qos: QoS::AtLeastOnce,
        delay: 0,
    });
    c
}

#[test]
fn a_will_after_disconnect_0x00_is_a_violation_and_after_a_lost_connection_it_must_come() {
    // Normal disconnection: the will is discarded.
    let mut b = B::new(vec![will_owner(), v5("watcher")]);
    b.connect(1, 1, false);
    b.subscribe(1, 1, "w/+", QoS::AtLeastOnce);
    b.connect(0, 1, false);
    b.disconnect(0, 1, 0x00);
    b.recv_with(
        1,
        Payload::Will { client: 0 },
        "w/0",
        QoS::AtLeastOnce,
        false,
        None,
    );
    breaks(b, "MQTT-3.1.2-8");

    // Lost connection: the will comes.
    let lost = |arrives: bool| {
        let mut b = B::new(vec![will_owner(), v5("watcher")]);
        b.connect(1, 1, false);
        b.subscribe(1, 1, "w/+", QoS::AtLeastOnce);
        b.connect(0, 1, false);
        b.cut(0, 1);
        if arrives {
            b.recv_with(
                1,
                Payload::Will { client: 0 },
                "w/0",
                QoS::AtLeastOnce,
                false,
                None,
            );
        }
        b
    };
    let (_, report) = lost(true).end();
    assert_eq!(report.tally.wills_delivered, 1);
    // Missing, and no drop counted to explain it.
    breaks(lost(false), "counted");
}

#[test]
fn will_copies_a_watcher_got_may_each_come_again_on_its_next_connection() {
    // Two lost connections, two wills; the watcher gets both, loses its connection before
    // acknowledging them, and gets both again on its resumed session (QoS 1).
    let run = |again: usize| {
        let mut b = B::new(vec![will_owner(), v5("watcher")]);
        b.connect(1, 1, false);
        b.subscribe(1, 1, "w/+", QoS::AtLeastOnce);
        for conn in 1..=2 {
            b.connect(0, conn, conn > 1);
            b.cut(0, conn);
        }
        let will = |b: &mut B| {
            b.recv_with(
                1,
                Payload::Will { client: 0 },
                "w/0",
                QoS::AtLeastOnce,
                false,
                None,
            );
        };
        will(&mut b);
        will(&mut b);
        b.cut(1, 1);
        b.connect(1, 2, true);
        for _ in 0..again {
            will(&mut b);
        }
        b
    };
    passes(run(2));
    // A third copy has no will to be.
    breaks(run(3), "MQTT-3.1.2-8");
}

#[test]
fn a_delayed_will_is_cancelled_by_a_reconnection() {
    let mut owner = will_owner();
    if let Some(w) = owner.will.as_mut() {
        w.delay = 5;
    }
    let mut b = B::new(vec![owner, v5("watcher")]);
    b.connect(1, 1, false);
    b.subscribe(1, 1, "w/+", QoS::AtLeastOnce);
    b.connect(0, 1, false);
    b.cut(0, 1);
    b.connect(0, 2, true);
    b.wait(6);
    b.recv_with(
        1,
        Payload::Will { client: 0 },
        "w/0",
        QoS::AtLeastOnce,
        false,
        None,
    );
    breaks(b, "MQTT-3.1.2-8");
}

#[test]
fn a_persistent_session_must_be_resumed_until_it_expires() {
    let run = |offline: u64, present: bool| {
        let mut b = B::new(vec![spec("s", ProtocolVersion::V5, 10)]);
        b.connect(0, 1, false);
        b.cut(0, 1);
        b.wait(offline);
        b.connect(0, 2, present);
        b
    };
    passes(run(2, true));
    passes(run(20, false));
    breaks(run(2, false), "MQTT-3.1.2-4");
    breaks(run(20, true), "MQTT-4.1.0-2");

    // A takeover hands the session over: it is never lost.
    let mut b = B::new(vec![spec("s", ProtocolVersion::V5, 10)]);
    b.connect(0, 1, false);
    b.ev(Event::Closed {
        client: 0,
        conn: 1,
        reason: CloseKind::ConnectionLost,
    });
    b.ev(Event::Connect { client: 0, conn: 2 });
    b.ev(Event::BrokerClosed {
        client: 0,
        conn: 1,
        disconnect: None,
    });
    b.ev(Event::Connected {
        client: 0,
        conn: 2,
        session_present: false,
    });
    breaks(b, "MQTT-3.1.2-4");

    // Clean Start gets a new session.
    let mut b = B::new(vec![spec("s", ProtocolVersion::V5, 0)]);
    b.connect(0, 1, true);
    breaks(b, "MQTT-3.2.2-2");
}

#[test]
fn queued_messages_survive_a_reconnection() {
    let run = |delivered: bool| {
        let mut b = pub_sub();
        b.cut(1, 1);
        let m = b.publish(0, 0, "t/a", QoS::ExactlyOnce);
        b.ack(m, 0);
        b.connect(1, 2, true);
        if delivered {
            b.recv(1, m, "t/a", QoS::ExactlyOnce);
        }
        b
    };
    passes(run(true));
    breaks(run(false), "MQTT-4.5.0-1");
}

#[test]
fn the_expiry_interval_is_passed_on_less_the_time_waited() {
    let run = |got: Option<u32>| {
        let mut b = pub_sub();
        let m = b.publish_with(0, 0, "t/a", QoS::AtLeastOnce, false, Some(60));
        b.ack(m, 0);
        b.wait(10);
        b.recv_with(1, Payload::Message(m), "t/a", QoS::AtLeastOnce, false, got);
        b
    };
    passes(run(Some(50)));
    breaks(run(Some(61)), "MQTT-3.3.2-6");
    breaks(run(Some(30)), "MQTT-3.3.2-6");
    breaks(run(None), "MQTT-3.3.2-6");

    // An expired message may be lost.
    let mut b = pub_sub();
    let m = b.publish_with(0, 0, "t/a", QoS::AtLeastOnce, false, Some(2));
    b.ack(m, 0);
    b.wait(5);
    let (log, report) = b.end();
    assert!(report.passed(), "{}", report.explain(&log));
    assert_eq!(report.tally.lost_to_expiry, 1);
}

#[test]
fn a_shared_subscription_delivers_to_exactly_one_member() {
    let run = |receivers: &[ClientIdx]| {
        let mut b = B::new(vec![v5("p"), v5("a"), v5("b")]);
        for c in 0..3 {
            b.connect(c, 1, false);
        }
        b.subscribe(1, 1, "$share/g/s/#", QoS::AtLeastOnce);
        b.subscribe(2, 1, "$share/g/s/#", QoS::AtLeastOnce);
        let m = b.publish(0, 0, "s/x", QoS::AtLeastOnce);
        for &r in receivers {
            b.recv(r, m, "s/x", QoS::AtLeastOnce);
        }
        b.ack(m, 0);
        b
    };
    passes(run(&[1]));
    passes(run(&[2]));
    breaks(run(&[1, 2]), "one member");
    breaks(run(&[]), "MQTT-4.5.0-1");
}

#[test]
fn a_publish_that_never_completes_and_a_broken_protocol_are_violations() {
    let mut b = pub_sub();
    b.publish(0, 0, "t/a", QoS::AtLeastOnce);
    breaks(b, "completes");

    let mut b = pub_sub();
    b.ev(Event::Closed {
        client: 1,
        conn: 1,
        reason: CloseKind::ProtocolViolation(0x82),
    });
    breaks(b, "protocol");

    let mut b = pub_sub();
    b.ev(Event::Counters(Counters {
        protocol_errors: 1,
        ..Counters::default()
    }));
    breaks(b, "protocol");

    let mut b = pub_sub();
    b.ev(Event::Subscribe {
        client: 1,
        packet: 9,
        filters: vec![("t/z".to_owned(), QoS::AtMostOnce)],
    });
    breaks(b, "SUBSCRIBE");
}

#[test]
fn a_suback_that_arrives_after_an_unsubscribe_of_the_filter_opens_no_window() {
    let mut b = B::new(vec![v5("p"), v5("s")]);
    b.connect(0, 1, false);
    b.connect(1, 1, false);
    b.ev(Event::Subscribe {
        client: 1,
        packet: 1,
        filters: vec![("t/#".to_owned(), QoS::AtLeastOnce)],
    });
    b.ev(Event::Unsubscribe {
        client: 1,
        packet: 2,
        filters: vec!["t/#".to_owned()],
    });
    b.ev(Event::Subscribed {
        client: 1,
        packet: 1,
        codes: vec![1],
    });
    let m = b.publish(0, 0, "t/a", QoS::AtLeastOnce);
    b.ack(m, 0x10);
    passes(b);
}

#[test]
fn a_connack_read_after_the_broker_closed_the_connection_says_nothing_of_the_session_now() {
    // The client did not read for a while: its CONNACK (a new session) comes after the
    // broker closed the connection, and the session expired meanwhile.
    let mut b = B::new(vec![spec("s", ProtocolVersion::V5, 2)]);
    b.connect(0, 1, false);
    b.cut(0, 1);
    b.ev(Event::Connect { client: 0, conn: 2 });
    b.ev(Event::BrokerClosed {
        client: 0,
        conn: 2,
        disconnect: None,
    });
    b.wait(10);
    b.ev(Event::Connected {
        client: 0,
        conn: 2,
        session_present: false,
    });
    b.connect(0, 3, false);
    passes(b);
}

#[test]
fn a_3_1_client_cannot_tell_whether_its_session_is_present() {
    // MQTT 3.1's CONNACK has no Session Present flag: it always reads 0.
    let mut b = B::new(vec![spec("s", ProtocolVersion::V3_1, u32::MAX)]);
    b.connect(0, 1, false);
    b.cut(0, 1);
    b.connect(0, 2, false);
    passes(b);
}

#[test]
fn a_shared_member_at_qos_0_may_be_chosen_and_lose_the_message() {
    let mut b = B::new(vec![v5("p"), v5("a"), v5("b")]);
    for c in 0..3 {
        b.connect(c, 1, false);
    }
    b.subscribe(1, 1, "$share/g/s/#", QoS::AtLeastOnce);
    b.subscribe(2, 1, "$share/g/s/#", QoS::AtMostOnce);
    let m = b.publish(0, 0, "s/x", QoS::AtLeastOnce);
    b.ack(m, 0);
    passes(b);
}

#[test]
fn a_clean_start_session_gets_nothing_its_predecessor_subscribed_to() {
    // Another client takes the identifier over with Clean Start 1: the old session's will
    // (or anything its subscriptions match) must not reach the new session.
    let mut intruder = spec("owner", ProtocolVersion::V5, 0);
    intruder.role = Role::Intruder;
    let mut b = B::new(vec![will_owner(), intruder]);
    b.connect(0, 1, false);
    b.subscribe(0, 1, "w/+", QoS::AtLeastOnce);
    b.ev(Event::Connect { client: 1, conn: 1 });
    b.ev(Event::BrokerClosed {
        client: 0,
        conn: 1,
        disconnect: None,
    });
    b.ev(Event::Connected {
        client: 1,
        conn: 1,
        session_present: false,
    });
    b.recv_with(
        1,
        Payload::Will { client: 0 },
        "w/0",
        QoS::AtLeastOnce,
        false,
        None,
    );
    breaks(b, "MQTT-3.3.2-3");
}

#[test]
fn a_session_a_clean_start_discarded_is_not_resumed_even_after_a_crash() {
    // The intruder's CONNACK came, so the broker had discarded the victim's session (and the
    // journal had made that durable) before it; a crash does not bring the session back.
    let run = |crashed: bool, again: bool| {
        let mut intruder = spec("v", ProtocolVersion::V5, 0);
        intruder.role = Role::Intruder;
        let mut b = B::new(vec![v5("v"), intruder]);
        b.connect(0, 1, false);
        b.subscribe(0, 1, "t/#", QoS::AtLeastOnce);
        b.cut(0, 1);
        b.connect(1, 1, false);
        if crashed {
            crash(&mut b);
        } else {
            b.disconnect(1, 1, 0);
        }
        if again {
            // A CONNECT of the victim's that the broker handled after the Clean Start, whose
            // CONNACK never came: it may have made a session.
            b.ev(Event::Connect { client: 0, conn: 2 });
            b.ev(Event::TransportDown { client: 0, conn: 2 });
            b.connect(0, 3, true);
        } else {
            b.connect(0, 2, true);
        }
        b
    };
    breaks(run(false, false), "MQTT-3.1.2-4");
    breaks(run(true, false), "MQTT-3.1.2-4");
    passes(run(true, true));
}

#[test]
fn a_connect_handled_after_a_clean_start_it_took_over_makes_a_session_that_lasts() {
    // Client 0 reconnects (keeping its session); another client's Clean Start with the
    // identifier, sent after it, reaches the broker first, and client 0's CONNECT takes that
    // connection over (it is accepted and closed while client 0's is open). The session
    // client 0's CONNECT made comes after the Clean Start, and may be resumed.
    let mut intruder = spec("owner", ProtocolVersion::V5, 0);
    intruder.role = Role::Intruder;
    let mut b = B::new(vec![v5("owner"), intruder]);
    b.connect(0, 1, false);
    b.cut(0, 1);
    b.ev(Event::Connect { client: 0, conn: 2 });
    b.ev(Event::Connect { client: 1, conn: 1 });
    b.ev(Event::BrokerClosed {
        client: 1,
        conn: 1,
        disconnect: None,
    });
    b.ev(Event::Connected {
        client: 1,
        conn: 1,
        session_present: false,
    });
    b.ev(Event::Connected {
        client: 0,
        conn: 2,
        session_present: false,
    });
    b.cut(0, 2);
    b.connect(0, 3, true);
    passes(b);
}

#[test]
fn a_qos_2_message_routed_again_after_its_publisher_reconnected_is_a_violation() {
    // The publisher's session goes on: its resend is a duplicate, not a new message.
    let mut b = pub_sub();
    let m = b.publish(0, 0, "t/a", QoS::ExactlyOnce);
    b.recv(1, m, "t/a", QoS::ExactlyOnce);
    b.cut(0, 1);
    b.connect(0, 2, true);
    b.recv(1, m, "t/a", QoS::ExactlyOnce);
    b.ack(m, 0);
    breaks(b, "MQTT-4.3.3-2");
}

#[test]
fn a_refusal_needs_a_counted_drop_even_when_a_subscriber_left_meanwhile() {
    // A subscriber's session ends while the publish waits: that ends no limit, so an
    // uncounted 0x97 is a violation.
    let left = |dropped| {
        let mut b = B::new(vec![v5("p"), spec("s", ProtocolVersion::V5, 0)]);
        b.connect(0, 1, false);
        b.connect(1, 1, false);
        b.subscribe(1, 1, "t/#", QoS::AtLeastOnce);
        let m = b.publish(0, 0, "t/a", QoS::AtLeastOnce);
        b.cut(1, 1);
        b.ack(m, 0x97);
        b.counters(dropped);
        b
    };
    passes(left(1));
    breaks(left(0), "every refused delivery is counted");

    // A SUBSCRIBE whose connection ended before its SUBACK leaves nothing behind either.
    let mut b = B::new(vec![v5("p"), spec("s", ProtocolVersion::V5, 0)]);
    b.connect(0, 1, false);
    b.connect(1, 1, false);
    b.ev(Event::Subscribe {
        client: 1,
        packet: 1,
        filters: vec![("t/#".to_owned(), QoS::AtLeastOnce)],
    });
    b.disconnect(1, 1, 0);
    let m = b.publish(0, 0, "t/a", QoS::AtLeastOnce);
    b.ack(m, 0x97);
    breaks(b, "every refused delivery is counted");
}

#[test]
fn a_qos_2_message_that_reached_others_may_be_dropped_for_one_only_if_counted() {
    // Subscribers 1 and 2 at QoS 2; the message reaches 2 only and is acknowledged with
    // success: the broker cannot refuse a QoS 2 message that some subscribers took.
    let run = |reached_other: bool, dropped| {
        let mut b = B::new(vec![v5("p"), v5("s1"), v5("s2")]);
        for c in 0..3 {
            b.connect(c, 1, false);
        }
        b.subscribe(1, 1, "t/#", QoS::ExactlyOnce);
        b.subscribe(2, 1, "t/#", QoS::ExactlyOnce);
        let m = b.publish(0, 0, "t/a", QoS::ExactlyOnce);
        if reached_other {
            b.recv(2, m, "t/a", QoS::ExactlyOnce);
        }
        b.ack(m, 0);
        b.counters(dropped);
        b
    };
    passes(run(true, 1));
    breaks(run(true, 0), "every dropped delivery is counted");
    breaks(run(false, 2), "MQTT-4.5.0-1");

    // Or it reached a session that ended before it could be delivered (here it expired
    // offline).
    let mut b = B::new(vec![v5("p"), v5("s1"), spec("s2", ProtocolVersion::V5, 1)]);
    for c in 0..3 {
        b.connect(c, 1, false);
    }
    b.subscribe(1, 1, "t/#", QoS::ExactlyOnce);
    b.subscribe(2, 1, "t/#", QoS::ExactlyOnce);
    b.cut(2, 1);
    let m = b.publish(0, 0, "t/a", QoS::ExactlyOnce);
    b.ack(m, 0);
    b.wait(5);
    b.connect(2, 2, false);
    b.counters(1);
    passes(b);

    // A QoS 1 message has no such reason: 5.0 publishers are told with 0x97.
    let mut b = B::new(vec![v5("p"), v5("s1"), v5("s2")]);
    for c in 0..3 {
        b.connect(c, 1, false);
    }
    b.subscribe(1, 1, "t/#", QoS::AtLeastOnce);
    b.subscribe(2, 1, "t/#", QoS::AtLeastOnce);
    let m = b.publish(0, 0, "t/a", QoS::AtLeastOnce);
    b.recv(2, m, "t/a", QoS::AtLeastOnce);
    b.ack(m, 0);
    b.counters(1);
    breaks(b, "MQTT-4.5.0-1");
}

#[test]
fn a_will_waiting_for_its_delay_when_the_broker_stops_is_published_after_the_restart() {
    let run = |arrives: bool| {
        let mut owner = will_owner();
        if let Some(w) = owner.will.as_mut() {
            w.delay = 2;
        }
        let mut b = B::new(vec![owner, v5("watcher")]);
        b.connect(1, 1, false);
        b.subscribe(1, 1, "w/+", QoS::AtLeastOnce);
        b.connect(0, 1, false);
        b.ev(Event::Stop);
        b.ev(Event::BrokerClosed {
            client: 0,
            conn: 1,
            disconnect: None,
        });
        b.ev(Event::BrokerClosed {
            client: 1,
            conn: 1,
            disconnect: None,
        });
        b.ev(Event::Start);
        b.connect(1, 2, true);
        b.wait(5);
        if arrives {
            b.recv_with(
                1,
                Payload::Will { client: 0 },
                "w/0",
                QoS::AtLeastOnce,
                false,
                None,
            );
        }
        b.ev(Event::Drain);
        b
    };
    passes(run(true));
    breaks(run(false), "counted");
}

#[test]
fn the_will_of_a_connection_a_crash_ended_is_published_after_the_restart() {
    for delay in [0, 2] {
        let run = |arrives: bool| {
            let mut owner = will_owner();
            if let Some(w) = owner.will.as_mut() {
                w.delay = delay;
            }
            let mut b = B::new(vec![owner, v5("watcher")]);
            b.connect(1, 1, false);
            b.subscribe(1, 1, "w/+", QoS::AtLeastOnce);
            b.connect(0, 1, false);
            crash(&mut b);
            b.connect(1, 2, true);
            b.wait(5);
            if arrives {
                b.recv_with(
                    1,
                    Payload::Will { client: 0 },
                    "w/0",
                    QoS::AtLeastOnce,
                    false,
                    None,
                );
            }
            b.ev(Event::Drain);
            b
        };
        let (log, report) = run(true).end();
        assert!(report.passed(), "{}", report.explain(&log));
        assert_eq!(report.tally.wills_delivered, 1);
        breaks(run(false), "counted");
    }
}

#[test]
fn receive_maximum_exceeded_is_a_violation_even_after_a_crash() {
    let exceeded = |crash: bool| {
        let mut b = pub_sub();
        b.cut(1, 1);
        if crash {
            b.ev(Event::Crash);
            b.ev(Event::Start);
        }
        b.connect(1, 2, true);
        b.ev(Event::Closed {
            client: 1,
            conn: 2,
            reason: CloseKind::ProtocolViolation(0x93),
        });
        b
    };
    breaks(exceeded(false), "protocol");
    breaks(exceeded(true), "protocol");
}

#[test]
fn a_connection_never_accepted_leaves_the_session_offline_since_before() {
    // Offline at t; a CONNECT at t + 3 s is cut before its CONNACK: the broker may never
    // have had it, so the session (expiry 5 s) may be gone from t + 5 s.
    let run = |present: bool| {
        let mut b = B::new(vec![spec("s", ProtocolVersion::V5, 5)]);
        b.connect(0, 1, false);
        b.cut(0, 1);
        b.wait(3);
        b.ev(Event::Connect { client: 0, conn: 2 });
        b.cut(0, 2);
        b.wait(3);
        b.connect(0, 3, present);
        b
    };
    passes(run(false));
    // It may also have taken the session online: then it is offline from its end.
    passes(run(true));
}

#[test]
fn a_qos_2_message_may_reach_the_next_session_of_a_subscriber_a_crash_ended() {
    // The subscriber's session ends with its connection: nothing held its QoS 2 PUBLISH
    // until the routing was durable, the crash lost the routing, and the publisher's resend
    // is new to the subscriber's next session.
    let run = |subscriber: ClientSpec| {
        let mut b = B::new(vec![v5("p"), subscriber]);
        b.connect(0, 1, false);
        b.connect(1, 1, false);
        b.subscribe(1, 1, "t/#", QoS::ExactlyOnce);
        let m = b.publish(0, 0, "t/a", QoS::ExactlyOnce);
        b.recv(1, m, "t/a", QoS::ExactlyOnce);
        crash(&mut b);
        b.connect(0, 2, true);
        let persistent = b.log.clients[1].persistent();
        b.connect(1, 2, persistent);
        if !persistent {
            b.subscribe(1, 2, "t/#", QoS::ExactlyOnce);
        }
        b.recv(1, m, "t/a", QoS::ExactlyOnce);
        b.ack(m, 0);
        b
    };
    passes(run(spec("s", ProtocolVersion::V5, 0)));
    // A persistent session's QoS 2 PUBLISH waited for the routing: never twice.
    breaks(run(v5("s")), "MQTT-4.3.3-2");
}

#[test]
fn a_connect_refused_for_its_will_is_a_limit_only_if_counted() {
    let run = |dropped: u64| {
        let mut b = B::new(vec![will_owner()]);
        b.ev(Event::Connect { client: 0, conn: 1 });
        b.ev(Event::Closed {
            client: 0,
            conn: 1,
            reason: CloseKind::Rejected(0x97),
        });
        b.ev(Event::Counters(Counters {
            dropped_memory_budget: dropped,
            ..Counters::default()
        }));
        b
    };
    passes(run(1));
    breaks(run(0), "protocol");
}

#[test]
fn a_stop_a_crash_cut_short_kept_nothing() {
    // A will published just before a stop that a crash then cut short may be lost with it.
    let mut b = B::new(vec![will_owner(), v5("watcher")]);
    b.connect(1, 1, false);
    b.subscribe(1, 1, "w/+", QoS::AtLeastOnce);
    b.connect(0, 1, false);
    b.ev(Event::BrokerClosed {
        client: 0,
        conn: 1,
        disconnect: None,
    });
    b.ev(Event::Stop);
    b.ev(Event::Crash);
    b.ev(Event::Start);
    b.connect(1, 2, true);
    b.ev(Event::Drain);
    let (log, report) = b.end();
    assert!(report.passed(), "{}", report.explain(&log));
    assert_eq!(report.tally.lost_to_crash, 1);
}

#[test]
fn a_copy_at_qos_1_may_come_again_at_qos_2_once_a_crash_lost_its_routing() {
    // The subscriber got it at QoS 1 (nothing held that PUBLISH back), the crash lost the
    // routing before the publisher's PUBREC, and the resend reached the subscription the
    // subscriber had raised to QoS 2 since.
    let run = |acked_before: bool| {
        let mut b = pub_sub();
        b.subscribe(1, 2, "t/#", QoS::AtLeastOnce);
        let m = b.publish(0, 0, "t/a", QoS::ExactlyOnce);
        b.recv(1, m, "t/a", QoS::AtLeastOnce);
        if acked_before {
            b.ack(m, 0);
        }
        crash(&mut b);
        b.connect(0, 2, true);
        b.connect(1, 2, true);
        b.subscribe(1, 3, "t/#", QoS::ExactlyOnce);
        if !acked_before {
            b.ack(m, 0);
        }
        b.recv(1, m, "t/a", QoS::ExactlyOnce);
        b
    };
    passes(run(false));
    // Acknowledged before the crash: its routing was durable, and is not done again.
    breaks(run(true), "MQTT-4.3.3-2");
}
