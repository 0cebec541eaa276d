//! Live counters, the progress bar, the summary and its JSON form, and what `/proc` tells
//! about the broker.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Counters every task adds to, read by the progress bar.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connected: AtomicU64,
    pub(crate) published: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) errors: AtomicU64,
}

impl Counters {
    /// The counters now.
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            connected: self.connected.load(Relaxed),
            published: self.published.load(Relaxed),
            acked: self.acked.load(Relaxed),
            delivered: self.delivered.load(Relaxed),
            errors: self.errors.load(Relaxed),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Relaxed);
        }
    }
}

/// Latencies in nanoseconds, shared by the tasks of a run: each task records a batch at a
/// time, so one histogram serves thousands of clients.
#[derive(Debug, Clone)]
pub(crate) struct Latencies(Arc<Mutex<Histogram<u64>>>);

impl Latencies {
    pub(crate) fn new() -> Self {
        // 1 ns to 1 hour at 3 significant digits: constant bounds that hdrhistogram accepts.
        let h = Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds");
        Self(Arc::new(Mutex::new(h)))
    }

    /// Records the batch and empties it.
    pub(crate) fn record(&self, batch: &mut Vec<u64>) {
        if batch.is_empty() {
            return;
        }
        let mut h = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for &ns in batch.iter() {
            h.saturating_record(ns.max(1));
        }
        batch.clear();
    }

    pub(crate) fn stats(&self) -> Option<LatencyStats> {
        let h = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        LatencyStats::of(&h)
    }
}

/// Percentiles of a histogram, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub(crate) struct LatencyStats {
    pub(crate) samples: u64,
    pub(crate) min_us: f64,
    pub(crate) mean_us: f64,
    pub(crate) p50_us: f64,
    pub(crate) p90_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) max_us: f64,
}

impl LatencyStats {
    pub(crate) fn of(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(Self {
            samples: h.len(),
            min_us: us(h.min()),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            max_us: us(h.max()),
        })
    }
}

/// `n` events over `secs` seconds, 0 when no time passed.
pub(crate) fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

/// The broker's memory and CPU, from `/proc/PID`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub(crate) struct BrokerUsage {
    pub(crate) pid: u32,
    pub(crate) rss_before_bytes: u64,
    pub(crate) rss_after_bytes: u64,
    /// Growth of the resident set per connection held (the `conn` scenario).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) bytes_per_connection: Option<f64>,
    /// CPU time (user + system) the broker used during the run, in seconds.
    pub(crate) cpu_s: f64,
}

/// `VmRSS` from the text of `/proc/PID/status`, in bytes.
pub(crate) fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => Some(value * 1024),
        _ => None,
    }
}

/// User plus system CPU seconds from the text of `/proc/PID/stat`.
///
/// The fields are in clock ticks; Linux exposes them at `USER_HZ`, which is 100 on every
/// architecture it supports.
pub(crate) fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name (field 2) is in parentheses and may contain spaces: count from the last ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// Resident memory of a process, in bytes.
pub(crate) fn rss_of(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    parse_vm_rss(&text).ok_or_else(|| format!("no VmRSS in {path}"))
}

/// CPU seconds a process used so far (`None` for `self` when /proc is missing).
pub(crate) fn cpu_of(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    parse_cpu_seconds(&std::fs::read_to_string(path).ok()?)
}

/// The result of a run: printed for people, or as JSON with `--json`.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Summary {
    pub(crate) scenario: &'static str,
    pub(crate) broker: String,
    pub(crate) protocol: &'static str,
    pub(crate) qos: u8,
    pub(crate) payload_bytes: usize,
    pub(crate) publishers: u64,
    pub(crate) subscribers: u64,
    /// Connections made (`conn`: the connections the run opened).
    pub(crate) connections: u64,
    /// Seconds of the measured phase: from the start to the last delivery, or to the last
    /// publish when nothing subscribes, or to the last CONNACK (`conn`) or SUBACK (`sub
    /// --disconnect-after-subscribe`).
    pub(crate) elapsed_s: f64,
    pub(crate) published: u64,
    /// QoS 1/2 messages the broker acknowledged (PUBACK, PUBREC); QoS 0: messages written.
    pub(crate) acked: u64,
    /// Messages the broker rejected with a reason code of 0x80 or more.
    pub(crate) rejected: u64,
    pub(crate) publish_rate: f64,
    /// Deliveries the subscribers should get (end-to-end scenarios).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) expected: Option<u64>,
    pub(crate) delivered: u64,
    pub(crate) delivery_rate: f64,
    pub(crate) duplicates: u64,
    /// End to end: acknowledged (QoS 0: written) messages some matching subscriber never got,
    /// counted per subscriber. `sub`: gaps in the sequence numbers of each stream.
    pub(crate) lost: u64,
    /// Deliveries whose payload carried no bench header, or whose sequence number was too
    /// high to track.
    pub(crate) untracked: u64,
    /// Publish to delivery (end to end), or CONNECT to CONNACK (`conn`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) latency: Option<LatencyStats>,
    /// Publish to PUBACK (QoS 1) or PUBCOMP (QoS 2), at the publishers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ack_latency: Option<LatencyStats>,
    /// `conn`, `sub --disconnect-after-subscribe`: connections (with their SUBACK) per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) connect_rate: Option<f64>,
    /// Persistent subscribers (`--persistent`) whose session the broker still held: CONNACK
    /// said Session Present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sessions_present: Option<u64>,
    /// `conn`: connections the broker closed while they were held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) closed_by_broker: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) broker_usage: Option<BrokerUsage>,
    /// `--scrape`: the scrapes made while the run lasted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) scrapes: Option<super::scrape::ScrapeStats>,
    /// CPU seconds the bench process used for the whole run, setup included.
    pub(crate) bench_cpu_s: f64,
    pub(crate) errors: u64,
    /// The first few error messages.
    pub(crate) error_messages: Vec<String>,
    /// Whether the run ended at its time limit before finishing.
    pub(crate) timed_out: bool,
}

/// How many distinct error messages a summary keeps.
pub(crate) const MAX_ERROR_MESSAGES: usize = 10;

impl Summary {
    /// Adds an error message, keeping the first [`MAX_ERROR_MESSAGES`].
    pub(crate) fn error(&mut self, message: String) {
        self.errors += 1;
        if self.error_messages.len() < MAX_ERROR_MESSAGES {
            self.error_messages.push(message);
        }
    }

    /// Whether acknowledged messages were lost: QoS 0 may lose messages, QoS 1 and 2 may not.
    pub(crate) fn lost_acknowledged(&self) -> bool {
        self.qos > 0 && self.lost > 0
    }

    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The summary for people.
    pub(crate) fn to_text(&self) -> String {
        let mut s = String::new();
        let what = match (self.publishers, self.subscribers) {
            (0, 0) => String::new(),
            (0, _) => format!(", QoS {}", self.qos),
            _ => format!(", QoS {}, {} B payload", self.qos, self.payload_bytes),
        };
        let _ = writeln!(
            s,
            "{} against {} (MQTT {}{what})",
            self.scenario, self.broker, self.protocol
        );
        let _ = writeln!(
            s,
            "  clients     {} publishers, {} subscribers, {} connections",
            self.publishers, self.subscribers, self.connections
        );
        let _ = writeln!(
            s,
            "  elapsed     {:.3} s{}",
            self.elapsed_s,
            if self.timed_out {
                " (time limit reached)"
            } else {
                ""
            }
        );
        if let Some(rate) = self.connect_rate {
            let _ = writeln!(
                s,
                "  connect     {} connections at {} conn/s",
                self.connections,
                human(rate)
            );
        }
        if self.publishers > 0 {
            let _ = writeln!(
                s,
                "  published   {} ({} msg/s), acknowledged {}, rejected {}",
                self.published,
                human(self.publish_rate),
                self.acked,
                self.rejected
            );
        }
        if self.subscribers > 0 {
            let expected = self
                .expected
                .map_or(String::new(), |e| format!(" of {e} expected"));
            let _ = writeln!(
                s,
                "  delivered   {}{expected} ({} msg/s)",
                self.delivered,
                human(self.delivery_rate)
            );
            let _ = writeln!(
                s,
                "  lost        {}   duplicates {}   untracked {}",
                self.lost, self.duplicates, self.untracked
            );
        }
        let mut latency = |name: &str, l: &Option<LatencyStats>| {
            if let Some(l) = l {
                let _ = writeln!(
                    s,
                    "  {name:<11} p50 {:.0} µs   p90 {:.0} µs   p99 {:.0} µs   max {:.0} µs   ({} samples)",
                    l.p50_us, l.p90_us, l.p99_us, l.max_us, l.samples
                );
            }
        };
        latency(
            if self.connect_rate.is_some() {
                "connect"
            } else {
                "latency"
            },
            &self.latency,
        );
        latency("ack", &self.ack_latency);
        if let Some(b) = &self.broker_usage {
            let per = b
                .bytes_per_connection
                .map_or(String::new(), |p| format!(", {p:.0} B per connection"));
            let _ = writeln!(
                s,
                "  broker      pid {}: RSS {} -> {} KiB{per}, CPU {:.2} s",
                b.pid,
                b.rss_before_bytes / 1024,
                b.rss_after_bytes / 1024,
                b.cpu_s
            );
        }
        if let Some(sc) = &self.scrapes {
            let _ = writeln!(
                s,
                "  scrapes     {} of {} succeeded, every {} ms ({}; {} B, mean {:.1} ms, max {:.1} ms)",
                sc.ok,
                sc.ok + sc.failed,
                sc.interval_ms,
                sc.url,
                sc.last_bytes,
                sc.mean_ms,
                sc.max_ms
            );
            if let Some(e) = &sc.first_error {
                let _ = writeln!(s, "    first failure: {e}");
            }
        }
        let _ = writeln!(s, "  bench CPU   {:.2} s", self.bench_cpu_s);
        if let Some(n) = self.sessions_present {
            let _ = writeln!(
                s,
                "  sessions    {n} of {} persistent sessions resumed",
                self.subscribers
            );
        }
        if let Some(n) = self.closed_by_broker {
            let _ = writeln!(
                s,
                "  closed      {n} connections closed by the broker while held"
            );
        }
        let _ = writeln!(s, "  errors      {}", self.errors);
        for e in &self.error_messages {
            let _ = writeln!(s, "    {e}");
        }
        s
    }
}

/// 1234567.0 -> "1.23M".
pub(crate) fn human(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// The counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub(crate) connected: u64,
    pub(crate) published: u64,
    pub(crate) acked: u64,
    pub(crate) delivered: u64,
    pub(crate) errors: u64,
}

/// The counters and their rates over the second since `last`, as the progress bar shows
/// them beside the bar.
pub(crate) fn progress_text(now: &Snapshot, last: &Snapshot) -> String {
    format!(
        "conn {} (+{}/s)  pub {} ({}/s)  acked {}  recv {} ({}/s)  errors {}",
        now.connected,
        now.connected.saturating_sub(last.connected),
        now.published,
        human(now.published.saturating_sub(last.published) as f64),
        now.acked,
        now.delivered,
        human(now.delivered.saturating_sub(last.delivered) as f64),
        now.errors,
    )
}

/// What the progress bar measures: first the connections, then the measured phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Goal {
    /// Connections made before the measured phase.
    pub(crate) clients: u64,
    /// What bounds the measured phase.
    pub(crate) measure: Measure,
}

/// What bounds a scenario's measured phase, as the progress bar counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Measure {
    /// Nothing after the connections (`conn`).
    Connections,
    /// This many messages published.
    Published(u64),
    /// This many messages delivered.
    Delivered(u64),
    /// The time limit.
    Time(Duration),
}

/// The bar's label, length and position for these counters; `measuring` is how long the
/// measured phase has run, once every client has connected (or failed).
fn bar_of(goal: &Goal, now: &Snapshot, measuring: Option<Duration>) -> (&'static str, u64, u64) {
    let (label, len, pos) = match (measuring, goal.measure) {
        (None, _) | (_, Measure::Connections) => ("connected", goal.clients, now.connected),
        (Some(_), Measure::Published(total)) => ("published", total, now.published),
        (Some(_), Measure::Delivered(total)) => ("received", total, now.delivered),
        (Some(time), Measure::Time(limit)) => ("seconds", limit.as_secs().max(1), time.as_secs()),
    };
    (label, len, pos.min(len))
}

/// The bar's line: elapsed time, what it counts, the bar, and the counters (cut to the
/// terminal's width).
const BAR_TEMPLATE: &str = "{elapsed:>4} {prefix:>9} [{bar:20}] {pos}/{len}  {wide_msg}";

/// A progress bar on stderr, updated once a second until dropped; nothing at all when
/// stderr is not a terminal or `--quiet` is given.
pub(crate) struct Progress {
    task: Option<tokio::task::JoinHandle<()>>,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    /// Starts the bar when `enabled` (stderr is a terminal and `--quiet` is off).
    pub(crate) fn start(counters: Arc<Counters>, goal: Goal, enabled: bool) -> Self {
        if !enabled {
            return Self {
                task: None,
                bar: None,
            };
        }
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(goal.clients),
            indicatif::ProgressDrawTarget::stderr(),
        );
        bar.set_style(
            indicatif::ProgressStyle::with_template(BAR_TEMPLATE)
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        let shown = bar.clone();
        let task = tokio::spawn(async move {
            let mut last = Snapshot::default();
            let mut measuring_since: Option<Instant> = None;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let now = counters.snapshot();
                if measuring_since.is_none() && now.connected + now.errors >= goal.clients {
                    measuring_since = Some(Instant::now());
                }
                let (label, len, pos) =
                    bar_of(&goal, &now, measuring_since.map(|since| since.elapsed()));
                // Each setter may draw: the counters first, the bar's parts after them.
                shown.set_message(progress_text(&now, &last));
                shown.set_prefix(label);
                shown.set_length(len);
                shown.set_position(pos);
                last = now;
            }
        });
        Self {
            task: Some(task),
            bar: Some(bar),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rss_from_status() {
        let status = "Name:\tmosquitto\nVmPeak:\t  10000 kB\nVmRSS:\t    7372 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss(status), Some(7372 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert_eq!(parse_vm_rss("VmRSS: lots kB\n"), None);
        assert_eq!(parse_vm_rss("VmRSS: 5 MB\n"), None);
    }

    #[test]
    fn reads_cpu_from_stat() {
        // The name may contain spaces and parentheses.
        let stat =
            "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 1 1 1";
        assert_eq!(parse_cpu_seconds(stat), Some(3.0));
        assert_eq!(parse_cpu_seconds("garbage"), None);
        assert!(cpu_of(None).is_some(), "this process has a /proc/self/stat");
    }

    #[test]
    fn percentiles_in_microseconds() {
        let lat = Latencies::new();
        let mut batch: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        lat.record(&mut batch);
        assert!(batch.is_empty());
        let s = lat.stats().expect("samples");
        assert_eq!(s.samples, 1000);
        let close = |a: f64, b: f64| (a - b).abs() / b < 0.002;
        assert!(close(s.p50_us, 500.0), "{s:?}");
        assert!(close(s.p90_us, 900.0), "{s:?}");
        assert!(close(s.p99_us, 990.0), "{s:?}");
        assert!(close(s.max_us, 1000.0), "{s:?}");
        assert!(close(s.mean_us, 500.5), "{s:?}");
        assert!(Latencies::new().stats().is_none());
    }

    #[test]
    fn progress_shows_totals_rates_and_errors() {
        let last = Snapshot {
            connected: 10,
            published: 1_000,
            acked: 900,
            delivered: 500,
            errors: 0,
        };
        let now = Snapshot {
            connected: 12,
            published: 251_000,
            acked: 250_000,
            delivered: 1_500_500,
            errors: 3,
        };
        assert_eq!(
            progress_text(&now, &last),
            "conn 12 (+2/s)  pub 251000 (250.0k/s)  acked 250000  recv 1500500 (1.50M/s)  errors 3"
        );
    }

    #[test]
    fn the_bar_counts_connections_then_the_measured_phase() {
        let now = Snapshot {
            connected: 8,
            published: 700,
            delivered: 2_000,
            ..Snapshot::default()
        };
        let goal = |measure| Goal {
            clients: 10,
            measure,
        };
        let phase = Some(Duration::from_secs(12));
        assert_eq!(
            bar_of(&goal(Measure::Published(1_000)), &now, None),
            ("connected", 10, 8)
        );
        assert_eq!(
            bar_of(&goal(Measure::Published(1_000)), &now, phase),
            ("published", 1_000, 700)
        );
        // Never past the end (fan-out delivers more than it publishes).
        assert_eq!(
            bar_of(&goal(Measure::Delivered(1_000)), &now, phase),
            ("received", 1_000, 1_000)
        );
        assert_eq!(
            bar_of(&goal(Measure::Time(Duration::from_secs(60))), &now, phase),
            ("seconds", 60, 12)
        );
        assert_eq!(
            bar_of(&goal(Measure::Connections), &now, phase),
            ("connected", 10, 8)
        );
        assert!(indicatif::ProgressStyle::with_template(BAR_TEMPLATE).is_ok());
    }

    #[test]
    fn rates_and_human_numbers() {
        assert_eq!(rate(1000, 0.5), 2000.0);
        assert_eq!(rate(1000, 0.0), 0.0);
        assert_eq!(human(2_500_000.0), "2.50M");
        assert_eq!(human(85_432.0), "85.4k");
        assert_eq!(human(999.4), "999");
    }

    #[test]
    fn summary_keeps_first_errors_and_judges_loss() {
        let mut s = Summary {
            qos: 0,
            lost: 5,
            ..Summary::default()
        };
        assert!(!s.lost_acknowledged(), "QoS 0 may lose");
        s.qos = 1;
        assert!(s.lost_acknowledged());
        for i in 0..20 {
            s.error(format!("e{i}"));
        }
        assert_eq!(s.errors, 20);
        assert_eq!(s.error_messages.len(), MAX_ERROR_MESSAGES);
        let json: serde_json::Value = serde_json::from_str(&s.to_json()).expect("json");
        assert_eq!(json["lost"], 5);
        assert_eq!(json["errors"], 20);
        assert!(json.get("latency").is_none());
        assert!(s.to_text().contains("errors      20"));
    }
}
