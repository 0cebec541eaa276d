//! `/metrics`: the broker's figures in the Prometheus text format (0.0.4), rendered from one
//! [`Metrics`] snapshot at most once per [`HttpLimits::metrics_interval`](crate::HttpLimits),
//! and shared by the scrapes that come within it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Mutex;
use tokio::task::JoinError;
use tokio::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use midge_broker::admin::{Admin, Metrics};

/// The `Content-Type` of [`render`]'s text.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const QOS: [&str; 3] = ["0", "1", "2"];

/// The last rendered text and when it was rendered. Rendering visits every connection and
/// session of the broker (and lists the process's open files): it runs on a blocking thread,
/// at most once per `interval`, and scrapes that come meanwhile get the same text (those that
/// come during a rendering wait for it).
#[derive(Debug)]
pub(crate) struct MetricsCache {
    interval: Duration,
    last: Mutex<Option<(Instant, Bytes)>>,
    /// How many times the text was rendered (for tests: [`crate::HttpServer::metrics_renders`]).
    renders: Arc<AtomicU64>,
}

impl MetricsCache {
    pub(crate) fn new(interval: Duration, renders: Arc<AtomicU64>) -> Self {
        Self {
            interval,
            last: Mutex::new(None),
            renders,
        }
    }

    /// The text: the last one if it is younger than `interval`, or a new one.
    pub(crate) async fn text(&self, admin: &Admin) -> Result<Bytes, JoinError> {
        let mut last = self.last.lock().await;
        if let Some((rendered, text)) = &*last {
            if rendered.elapsed() < self.interval {
                return Ok(text.clone());
            }
        }
        let admin = admin.clone();
        let renders = self.renders.clone();
        let text = tokio::task::spawn_blocking(move || {
            renders.fetch_add(1, Ordering::Relaxed);
            Bytes::from(render(admin.metrics()))
        })
        .await?;
        // From the rendering's end: however long rendering takes, the endpoint spends at
        // most one rendering per interval.
        *last = Some((Instant::now(), text.clone()));
        Ok(text)
    }
}

/// `metrics` in the Prometheus text format.
pub(crate) fn render(metrics: Metrics) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(metrics)));
    let mut text = String::new();
    // Writing into a String cannot fail, and every value here is encodable.
    if let Err(err) = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry) {
        tracing::error!(%err, "cannot encode the metrics");
    }
    text
}

#[derive(Debug)]
struct Snapshot(Metrics);

/// Counters are named without `_total`: the encoder adds it.
fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(clamp(value)).encode(metric)
}

fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A counter with one label, one series per `(label value, count)`.
fn counters<'a>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, count) in values {
        let labels = [(label, value)];
        ConstCounter::new(count).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn by_qos(values: &[u64; 3]) -> impl Iterator<Item = (&'static str, u64)> + '_ {
    QOS.iter().copied().zip(values.iter().copied())
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let m = &self.0;
        let e = &mut encoder;

        let mut metric = e.encode_descriptor(
            "midge_connections",
            "Open MQTT connections, by listener and protocol version (connecting: CONNECT not yet accepted)",
            None,
            MetricType::Gauge,
        )?;
        for (_, listener, protocol, open) in &m.connections {
            let labels = [("listener", listener.as_str()), ("protocol", protocol)];
            ConstGauge::new(clamp(*open as u64)).encode(metric.encode_family(&labels)?)?;
        }
        counters(
            e,
            "midge_connects",
            "CONNECT packets answered, by CONNACK outcome",
            "result",
            m.connects.iter().map(|(r, n)| (r.as_str(), *n)),
        )?;
        counters(
            e,
            "midge_disconnects",
            "MQTT connections ended, by reason",
            "reason",
            m.disconnects.iter().map(|(r, n)| (*r, *n)),
        )?;
        let mut metric = e.encode_descriptor(
            "midge_sessions",
            "Sessions, online (connected) and offline (kept for a client that is away)",
            None,
            MetricType::Gauge,
        )?;
        for (state, n) in [
            ("online", m.sessions_online),
            ("offline", m.sessions_offline),
        ] {
            let labels = [("state", state)];
            ConstGauge::new(clamp(n as u64)).encode(metric.encode_family(&labels)?)?;
        }
        gauge(
            e,
            "midge_subscriptions",
            "Subscriptions held by all sessions, shared ones included",
            m.subscriptions as u64,
        )?;
        gauge(
            e,
            "midge_shared_subscriptions",
            "Shared subscriptions ($share/group/filter) held by all sessions",
            m.shared_subscriptions as u64,
        )?;
        gauge(
            e,
            "midge_retained_messages",
            "Retained messages kept",
            m.retained_messages as u64,
        )?;
        counters(
            e,
            "midge_messages_received",
            "PUBLISH packets received from clients, by QoS",
            "qos",
            by_qos(&m.messages_in),
        )?;
        counters(
            e,
            "midge_messages_sent",
            "Messages handed to connections for sending, by the QoS of the delivery",
            "qos",
            by_qos(&m.messages_out),
        )?;
        counters(
            e,
            "midge_bytes_received",
            "Payload bytes of the PUBLISH packets received from clients, by QoS",
            "qos",
            by_qos(&m.bytes_in),
        )?;
        counters(
            e,
            "midge_bytes_sent",
            "Payload bytes of the messages sent to clients, by QoS",
            "qos",
            by_qos(&m.bytes_out),
        )?;
        counters(
            e,
            "midge_dropped_messages",
            "Messages or deliveries dropped, by cause",
            "cause",
            m.drops.iter().map(|(c, n)| (*c, *n)),
        )?;
        gauge(
            e,
            "midge_queued_messages",
            "Messages waiting for sessions, online and offline",
            m.queued_messages as u64,
        )?;
        gauge(
            e,
            "midge_queued_bytes",
            "Bytes of messages waiting, counted against the global queue budget",
            m.queued_bytes as u64,
        )?;
        gauge(
            e,
            "midge_inflight_messages",
            "QoS 1 and 2 messages sent to clients and not yet acknowledged",
            m.inflight_messages as u64,
        )?;
        counter(
            e,
            "midge_auth_failures",
            "CONNECTs refused for their credentials",
            m.auth_failures,
        )?;
        bridges(e, &m.bridges)?;
        let latency = &m.delivery_latency;
        let mut metric = e.encode_descriptor(
            "midge_delivery_latency_seconds",
            "Time from a PUBLISH's arrival to its subscriber's connection taking the delivery, inside the broker (retained and offline-queued deliveries not counted)",
            None,
            MetricType::Histogram,
        )?;
        metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            latency.sum_seconds,
            latency.count,
            &per_bucket(&latency.buckets),
            None,
        )?;
        if let Some(process) = &m.process {
            gauge(
                e,
                "process_resident_memory_bytes",
                "Resident memory of the broker's process, in bytes",
                process.rss_bytes,
            )?;
            gauge(
                e,
                "process_open_fds",
                "File descriptors open in the broker's process",
                process.open_fds,
            )?;
        }
        Ok(())
    }
}

/// A bridge counter: its name, its help, and how to read it.
type BridgeSeries = (
    &'static str,
    &'static str,
    fn(&midge_broker::BridgeView) -> u64,
);

/// Each bridge's state (1 connected, 0 not) and counters, labelled with its name.
fn bridges(
    e: &mut DescriptorEncoder<'_>,
    bridges: &[midge_broker::BridgeView],
) -> Result<(), std::fmt::Error> {
    if bridges.is_empty() {
        return Ok(());
    }
    let mut metric = e.encode_descriptor(
        "midge_bridge_up",
        "Whether the bridge is connected to its remote broker (1) or not (0)",
        None,
        MetricType::Gauge,
    )?;
    for bridge in bridges {
        let labels = [("bridge", bridge.name.as_str())];
        ConstGauge::new(i64::from(bridge.connected)).encode(metric.encode_family(&labels)?)?;
    }
    let series: [BridgeSeries; 5] = [
        (
            "midge_bridge_connections",
            "Connections the bridge made to its remote broker",
            |b| b.connections,
        ),
        (
            "midge_bridge_forwarded_out",
            "Messages the bridge forwarded to its remote broker (acknowledged by it at QoS 1 and 2)",
            |b| b.forwarded_out,
        ),
        (
            "midge_bridge_forwarded_in",
            "Messages the bridge forwarded from its remote broker to this one",
            |b| b.forwarded_in,
        ),
        (
            "midge_bridge_refused_out",
            "Messages the remote broker refused, not forwarded",
            |b| b.refused_out,
        ),
        (
            "midge_bridge_refused_in",
            "Messages from the remote broker that this broker refused",
            |b| b.refused_in,
        ),
    ];
    for (name, help, value) in series {
        counters(
            e,
            name,
            help,
            "bridge",
            bridges.iter().map(|b| (b.name.as_str(), value(b))),
        )?;
    }
    Ok(())
}

/// The broker's buckets are cumulative, as Prometheus shows them; the encoder takes each
/// bucket's own count and adds them up itself (and adds the `+Inf` bucket, the count).
fn per_bucket(cumulative: &[(f64, u64)]) -> Vec<(f64, u64)> {
    let mut below = 0;
    cumulative
        .iter()
        .map(|&(bound, up_to)| {
            let own = up_to.saturating_sub(below);
            below = below.max(up_to);
            (bound, own)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::per_bucket;

    #[test]
    fn cumulative_buckets_become_per_bucket_counts() {
        let buckets = [(0.001, 2), (0.01, 5), (0.1, 5), (1.0, 9)];
        assert_eq!(
            per_bucket(&buckets),
            [(0.001, 2), (0.01, 3), (0.1, 0), (1.0, 4)]
        );
    }
}
