//! `/metrics`: the broker's figures in the Prometheus text format (0.0.4), rendered from one
//! [`Metrics`] snapshot per scrape.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use midge_broker::admin::Metrics;

/// The `Content-Type` of [`render`]'s text.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const QOS: [&str; 3] = ["0", "1", "2"];

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
