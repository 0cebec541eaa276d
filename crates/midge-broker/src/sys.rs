//! The `$SYS` topics: the broker's figures, published retained every `sys.interval_secs`.
//!
//! Most topics are the counters of [`BrokerStats`] as they are. The `$SYS/broker/load/...`
//! topics are moving averages, as mosquitto publishes them: at each update, the change of a
//! counter since the previous update is turned into a rate per minute, and each average moves
//! towards that rate by `1 - e^(-elapsed / window)`, for windows of 1, 5 and 15 minutes (the
//! way `uptime` averages the load of a machine). An average therefore follows a steady rate
//! within about its window, whatever the update interval.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use midge_codec::QoS;
use midge_proto::Message;

use crate::core::Core;
use crate::driver::now;
use crate::stats::BrokerStats;

/// The windows of the load averages, in seconds, with the suffix of their topics.
const WINDOWS: [(f64, &str); 3] = [(60.0, "1min"), (300.0, "5min"), (900.0, "15min")];

/// The counters the load averages follow, by the middle part of their topics
/// (`$SYS/broker/load/{name}/{window}`).
const LOADS: [&str; 8] = [
    "messages/received",
    "messages/sent",
    "publish/received",
    "publish/sent",
    "bytes/received",
    "bytes/sent",
    "connections",
    "sockets",
];

/// The monotonic totals the load averages are computed from, in the order of [`LOADS`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    /// Messages received. midge counts PUBLISH packets (mosquitto counts every packet).
    pub(crate) messages_received: u64,
    /// Messages sent (PUBLISH packets).
    pub(crate) messages_sent: u64,
    /// PUBLISH packets received.
    pub(crate) publish_received: u64,
    /// PUBLISH packets sent.
    pub(crate) publish_sent: u64,
    /// Bytes read from clients.
    pub(crate) bytes_received: u64,
    /// Bytes written to clients.
    pub(crate) bytes_sent: u64,
    /// CONNECT packets answered: accepted, or refused (sockets that never sent one are not
    /// counted).
    pub(crate) connections: u64,
    /// Connections (sockets) accepted.
    pub(crate) sockets: u64,
}

impl Totals {
    /// The totals of `stats`, with `connects` CONNECTs answered (accepted or refused).
    fn from_stats(stats: &BrokerStats, connects: u64) -> Self {
        Self {
            messages_received: stats.messages_received,
            messages_sent: stats.messages_sent,
            publish_received: stats.messages_received,
            publish_sent: stats.messages_sent,
            bytes_received: stats.bytes_received,
            bytes_sent: stats.bytes_sent,
            connections: connects,
            sockets: stats.connections_total,
        }
    }

    fn values(&self) -> [u64; LOADS.len()] {
        [
            self.messages_received,
            self.messages_sent,
            self.publish_received,
            self.publish_sent,
            self.bytes_received,
            self.bytes_sent,
            self.connections,
            self.sockets,
        ]
    }
}

/// The load averages: per minute, for each counter of [`LOADS`] and each window of
/// [`WINDOWS`].
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Load {
    /// The totals at the previous update; `None` before the first.
    previous: Option<Totals>,
    /// `averages[counter][window]`, per minute.
    averages: [[f64; WINDOWS.len()]; LOADS.len()],
}

impl Load {
    /// Takes the totals at an update, `elapsed` after the previous one. The first update only
    /// sets the starting point (the averages stay 0). A counter that went back (a restart of
    /// its source) counts as no change. An update with no time elapsed changes nothing.
    pub(crate) fn update(&mut self, elapsed: Duration, totals: Totals) {
        let Some(previous) = self.previous else {
            self.previous = Some(totals);
            return;
        };
        let secs = elapsed.as_secs_f64();
        if secs <= 0.0 {
            return;
        }
        let now = totals.values();
        let before = previous.values();
        for (counter, averages) in self.averages.iter_mut().enumerate() {
            let per_minute = now[counter].saturating_sub(before[counter]) as f64 * 60.0 / secs;
            for ((window, _), average) in WINDOWS.iter().zip(averages.iter_mut()) {
                let keep = (-secs / window).exp();
                *average = per_minute + keep * (*average - per_minute);
            }
        }
        self.previous = Some(totals);
    }

    /// Each load topic with its average, per minute.
    pub(crate) fn topics(&self) -> impl Iterator<Item = (String, f64)> + '_ {
        LOADS
            .iter()
            .zip(&self.averages)
            .flat_map(|(name, averages)| {
                WINDOWS
                    .iter()
                    .zip(averages)
                    .map(move |((_, suffix), average)| {
                        (format!("$SYS/broker/load/{name}/{suffix}"), *average)
                    })
            })
    }
}

/// What the `$SYS` updates remember from one to the next.
#[derive(Debug, Default)]
pub(crate) struct SysState {
    load: Load,
    /// When the previous update was made.
    last: Option<Instant>,
    /// The most clients seen connected at an update.
    clients_maximum: usize,
}

/// The `$SYS` state, shared by the `$SYS` task and
/// [`BrokerHandle::publish_sys`](crate::BrokerHandle::publish_sys).
pub(crate) type Sys = Arc<Mutex<SysState>>;

/// Publishes the `$SYS` topics every `every`, from the first tick (at once) on.
pub(crate) async fn sys_loop(shared: Arc<Core>, sys: Sys, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    // After a stall, one update, not one per missed interval.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        publish_sys(&shared, &sys);
    }
}

/// Publishes every `$SYS` topic now, retained, at QoS 0.
pub(crate) fn publish_sys(shared: &Arc<Core>, sys: &Sys) {
    let stats = shared.stats();
    let now = now();
    let values = {
        let mut state = sys.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = state
            .last
            .map_or(Duration::ZERO, |last| now.saturating_duration_since(last));
        let connects = shared
            .counters
            .connect_results()
            .iter()
            .map(|(_, n)| n)
            .sum();
        state
            .load
            .update(elapsed, Totals::from_stats(&stats, connects));
        state.last = Some(now);
        state.clients_maximum = state.clients_maximum.max(stats.clients_connected);
        let uptime = now.saturating_duration_since(shared.started()).as_secs();
        let rss = crate::admin::process_stats().map(|process| process.rss_bytes);
        topics(&stats, &state, uptime, rss)
    };
    for (topic, value) in values {
        let mut message = Message::new(topic, value, QoS::AtMostOnce);
        message.retain = true;
        shared.publish_local(message, now);
    }
}

/// Every `$SYS` topic with its value.
fn topics(
    stats: &BrokerStats,
    state: &SysState,
    uptime: u64,
    rss: Option<u64>,
) -> Vec<(String, String)> {
    let offline = stats.sessions.saturating_sub(stats.clients_connected);
    let counts: [(&str, String); 21] = [
        (
            "$SYS/broker/version",
            format!("midge {}", env!("CARGO_PKG_VERSION")),
        ),
        ("$SYS/broker/uptime", format!("{uptime} seconds")),
        (
            "$SYS/broker/clients/connected",
            stats.clients_connected.to_string(),
        ),
        (
            "$SYS/broker/clients/active",
            stats.clients_connected.to_string(),
        ),
        ("$SYS/broker/clients/disconnected", offline.to_string()),
        ("$SYS/broker/clients/inactive", offline.to_string()),
        ("$SYS/broker/clients/total", stats.sessions.to_string()),
        (
            "$SYS/broker/clients/maximum",
            state.clients_maximum.to_string(),
        ),
        (
            "$SYS/broker/messages/received",
            stats.messages_received.to_string(),
        ),
        ("$SYS/broker/messages/sent", stats.messages_sent.to_string()),
        (
            "$SYS/broker/publish/messages/received",
            stats.messages_received.to_string(),
        ),
        (
            "$SYS/broker/publish/messages/sent",
            stats.messages_sent.to_string(),
        ),
        (
            "$SYS/broker/bytes/received",
            stats.bytes_received.to_string(),
        ),
        ("$SYS/broker/bytes/sent", stats.bytes_sent.to_string()),
        (
            "$SYS/broker/messages/stored",
            stats.queued_messages.to_string(),
        ),
        (
            "$SYS/broker/store/messages/count",
            stats.queued_messages.to_string(),
        ),
        (
            "$SYS/broker/store/messages/bytes",
            stats.queued_bytes.to_string(),
        ),
        (
            "$SYS/broker/subscriptions/count",
            stats.subscriptions.to_string(),
        ),
        (
            "$SYS/broker/retained messages/count",
            stats.retained_messages.to_string(),
        ),
        (
            "$SYS/broker/connections/total",
            stats.connections_total.to_string(),
        ),
        (
            "$SYS/broker/publish/messages/dropped",
            dropped(stats).to_string(),
        ),
    ];
    let mut all: Vec<(String, String)> = counts
        .into_iter()
        .map(|(topic, value)| (topic.to_owned(), value))
        .collect();
    if let Some(rss) = rss {
        all.push(("$SYS/broker/heap/current".to_owned(), rss.to_string()));
    }
    all.extend(
        state
            .load
            .topics()
            .map(|(topic, average)| (topic, format!("{average:.2}"))),
    );
    all
}

/// Deliveries dropped, for every reason (mosquitto's `publish/messages/dropped`).
fn dropped(stats: &BrokerStats) -> u64 {
    stats.dropped_inbox_full
        + stats.dropped_queue_full
        + stats.dropped_memory_budget
        + stats.dropped_congested
        + stats.dropped_expired
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(messages: u64) -> Totals {
        Totals {
            messages_received: messages,
            ..Totals::default()
        }
    }

    fn average(load: &Load, topic: &str) -> f64 {
        load.topics()
            .find(|(t, _)| t == topic)
            .map(|(_, v)| v)
            .expect(topic)
    }

    const RECEIVED_1: &str = "$SYS/broker/load/messages/received/1min";
    const RECEIVED_5: &str = "$SYS/broker/load/messages/received/5min";
    const RECEIVED_15: &str = "$SYS/broker/load/messages/received/15min";

    #[test]
    fn the_first_update_is_the_starting_point() {
        let mut load = Load::default();
        load.update(Duration::ZERO, totals(1000));
        assert!(load.topics().all(|(_, v)| v == 0.0));
        assert_eq!(load.topics().count(), 24);
    }

    #[test]
    fn one_window_of_a_steady_rate_moves_by_one_minus_one_over_e() {
        let mut load = Load::default();
        load.update(Duration::ZERO, totals(0));
        // 600 messages in 60 s: 600 per minute. The 1-minute average moves 1 - e^-1 of the
        // way from 0, the 5-minute one 1 - e^-0.2, the 15-minute one 1 - e^(-1/15).
        load.update(Duration::from_secs(60), totals(600));
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(
            average(&load, RECEIVED_1),
            600.0 * (1.0 - (-1.0f64).exp())
        ));
        assert!(close(
            average(&load, RECEIVED_5),
            600.0 * (1.0 - (-0.2f64).exp())
        ));
        assert!(close(
            average(&load, RECEIVED_15),
            600.0 * (1.0 - (-1.0f64 / 15.0).exp())
        ));
        // Exact figures, as the topics print them.
        assert_eq!(format!("{:.2}", average(&load, RECEIVED_1)), "379.27");
        assert_eq!(format!("{:.2}", average(&load, RECEIVED_5)), "108.76");
        assert_eq!(format!("{:.2}", average(&load, RECEIVED_15)), "38.70");
        // The other counters did not move.
        assert_eq!(average(&load, "$SYS/broker/load/bytes/sent/1min"), 0.0);
    }

    #[test]
    fn averages_converge_on_a_steady_rate_and_decay_when_it_stops() {
        let mut load = Load::default();
        load.update(Duration::ZERO, totals(0));
        // 10 per second, updated every 10 s for three hours: every average is 600 per minute.
        for i in 1..=1080 {
            load.update(Duration::from_secs(10), totals(i * 100));
        }
        for topic in [RECEIVED_1, RECEIVED_5, RECEIVED_15] {
            assert!((average(&load, topic) - 600.0).abs() < 0.1, "{topic}");
        }
        // Silence for 5 minutes: the 5-minute average keeps e^-1 of itself.
        for _ in 0..30 {
            load.update(Duration::from_secs(10), totals(108_000));
        }
        let five = average(&load, RECEIVED_5);
        assert!((five - 600.0 * (-1.0f64).exp()).abs() < 0.1, "{five}");
        let one = average(&load, RECEIVED_1);
        assert!((one - 600.0 * (-5.0f64).exp()).abs() < 0.1, "{one}");
    }

    #[test]
    fn the_interval_does_not_change_the_average() {
        // The same traffic (1200 messages in 2 minutes), updated every 120 s or every 1 s,
        // gives the same average.
        let mut coarse = Load::default();
        coarse.update(Duration::ZERO, totals(0));
        coarse.update(Duration::from_secs(120), totals(1200));
        let mut fine = Load::default();
        fine.update(Duration::ZERO, totals(0));
        for i in 1..=120 {
            fine.update(Duration::from_secs(1), totals(i * 10));
        }
        for topic in [RECEIVED_1, RECEIVED_5, RECEIVED_15] {
            assert!(
                (average(&coarse, topic) - average(&fine, topic)).abs() < 1e-6,
                "{topic}"
            );
        }
        assert_eq!(format!("{:.2}", average(&fine, RECEIVED_1)), "518.80");
    }

    #[test]
    fn no_time_or_a_counter_going_back_changes_nothing_odd() {
        let mut load = Load::default();
        load.update(Duration::ZERO, totals(100));
        load.update(Duration::ZERO, totals(200));
        assert_eq!(average(&load, RECEIVED_1), 0.0);
        // The starting point stayed 100: 100 more in 60 s.
        load.update(Duration::from_secs(60), totals(200));
        assert_eq!(
            format!("{:.2}", average(&load, RECEIVED_1)),
            format!("{:.2}", 100.0 * (1.0 - (-1.0f64).exp()))
        );
        let before = average(&load, RECEIVED_1);
        load.update(Duration::from_secs(60), totals(50));
        assert!(average(&load, RECEIVED_1) < before);
        assert!(average(&load, RECEIVED_1) >= 0.0);
    }

    #[test]
    fn every_topic_is_there_once() {
        let stats = BrokerStats {
            sessions: 5,
            clients_connected: 3,
            queued_bytes: 1234,
            ..BrokerStats::default()
        };
        let state = SysState {
            clients_maximum: 4,
            ..SysState::default()
        };
        let all = topics(&stats, &state, 7, Some(4096));
        let get = |topic: &str| {
            let found: Vec<_> = all.iter().filter(|(t, _)| t == topic).collect();
            assert_eq!(found.len(), 1, "{topic}");
            found[0].1.clone()
        };
        assert_eq!(get("$SYS/broker/uptime"), "7 seconds");
        assert_eq!(get("$SYS/broker/clients/disconnected"), "2");
        assert_eq!(get("$SYS/broker/clients/inactive"), "2");
        assert_eq!(get("$SYS/broker/clients/active"), "3");
        assert_eq!(get("$SYS/broker/clients/maximum"), "4");
        assert_eq!(get("$SYS/broker/store/messages/bytes"), "1234");
        assert_eq!(get("$SYS/broker/heap/current"), "4096");
        assert_eq!(get("$SYS/broker/load/sockets/15min"), "0.00");
        assert_eq!(all.len(), 22 + 24);
    }
}
