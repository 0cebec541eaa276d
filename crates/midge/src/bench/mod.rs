//! `midge bench`: a load generator for MQTT brokers, bounded in count and time.
//!
//! Scenarios: `conn`, `pub`, `sub`, and the end-to-end `fanin`, `fanout`, `latency` and
//! `filters`, each over TCP, TLS, WebSocket (over TCP or TLS) or a Unix socket. Subscribers
//! have clean sessions, or with `--persistent` (`sub`, `fanin`, `fanout`) persistent ones under
//! fixed client ids, which a later run resumes. Exit codes: 0 success; 1 the run could not
//! start (connection refused, CONNACK or
//! SUBACK refused); 2 invalid arguments; 3 the run finished but acknowledged messages were lost,
//! duplicated at QoS 2, or clients failed on the way.

mod client;
mod pattern;
mod publisher;
mod report;
mod run;
mod scrape;
mod subscriber;
mod track;

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgAction, Args, Subcommand};
use midge_codec::{ProtocolVersion, QoS};

use client::{ConnectOptions, Dial, Session};
use midge_client::Scheme;
use midge_transport::tls::tokio_rustls::TlsConnector;

use crate::mqtt::transport::{self, Target, TransportArgs};
use pattern::{check_topic_filter, check_topic_name, Pattern};
use track::{HEADER_LEN, MAX_TRACKED_SEQ};

/// Exit code: the run could not start.
pub(crate) const EXIT_SETUP: u8 = 1;
/// Exit code: invalid arguments (the same code clap uses).
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit code: the run finished with lost acknowledged messages or failed clients.
pub(crate) const EXIT_FAILED_RUN: u8 = 3;

/// Bits of sequence-number tracking one run may allocate (1 GiB).
pub(crate) const MAX_TRACKING_BITS: u64 = 8 << 30;
/// Largest payload: what fits in one packet with a short topic [MQTT-2.2.3].
const MAX_PAYLOAD: usize = 268_435_455 - 1024;

/// `midge bench` and its scenarios.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Open N connections at a given rate, hold them, report connect times (and the broker's
    /// memory per connection with --broker-pid).
    #[command(disable_help_flag = true, disable_version_flag = true)]
    Conn(ConnArgs),
    /// P publishers at a rate or flat out; reports publish rate and PUBACK/PUBCOMP latency.
    #[command(disable_help_flag = true, disable_version_flag = true)]
    Pub(PubArgs),
    /// S subscribers; reports delivery rate, latency (from bench payloads), gaps and duplicates.
    #[command(disable_help_flag = true, disable_version_flag = true)]
    Sub(SubArgs),
    /// End to end: P publishers on PREFIX/i, one subscriber on PREFIX/+.
    #[command(disable_help_flag = true, disable_version_flag = true)]
    Fanin(FanArgs),
    /// End to end: one publisher on PREFIX/fanout, S subscribers on it.
    #[command(disable_help_flag = true, disable_version_flag = true)]
    Fanout(FanArgs),
    /// End to end: one publisher and one subscriber at a fixed rate; latency percentiles.
    #[command(disable_help_flag = true, disable_version_flag = true)]
    Latency(LatencyArgs),
    /// End to end: S subscribers with distinct filters (exact, +, # in turn), publishers on
    /// random topics that each match one subscriber.
    #[command(disable_help_flag = true, disable_version_flag = true)]
    Filters(FiltersArgs),
}

/// Options every scenario has.
#[derive(Debug, Clone, Args)]
struct Common {
    /// Broker host (default 127.0.0.1).
    #[arg(short = 'h', long)]
    host: Option<String>,
    /// Broker port (default 1883, or 8883 with TLS).
    #[arg(short, long)]
    port: Option<u16>,
    #[command(flatten)]
    transport: TransportArgs,
    /// MQTT version: 3.1, 3.1.1 (or 311, mqttv311) or 5 (mqttv5).
    #[arg(short = 'V', long = "protocol-version", default_value = "3.1.1", value_parser = parse_version)]
    protocol_version: ProtocolVersion,
    /// User name.
    #[arg(short = 'u', long)]
    username: Option<String>,
    /// Password.
    #[arg(short = 'P', long)]
    password: Option<client::Password>,
    /// Keep Alive in seconds; clients send PINGREQ after half of it without sending. 0: off
    /// (some brokers, rumqttd among them, refuse 0).
    #[arg(short = 'k', long, default_value_t = 60)]
    keepalive: u16,
    /// Time limit of the measured phase (e.g. 30s, 500ms, 2m).
    #[arg(short = 'd', long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Limit for each connection (TLS handshake and WebSocket upgrade included) plus CONNACK
    /// (and SUBACK).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// Connections set up at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// TLS: a full handshake for every connection. Without it, a connection resumes the TLS
    /// session of an earlier one (TLS 1.3 tickets, TLS 1.2 session ids) when the broker
    /// allows it, as a client that reconnects does.
    #[arg(long)]
    no_tls_resumption: bool,
    /// Client identifier prefix (default: midge-bench-PID).
    #[arg(long)]
    id_prefix: Option<String>,
    /// Worker threads of the bench (default: the number of CPUs).
    #[arg(long)]
    threads: Option<usize>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// No progress bar (there is none either when stderr is not a terminal).
    #[arg(long)]
    quiet: bool,
    /// The broker's process id: report its resident memory (and CPU time) from /proc.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// While the run lasts, GET this URL (such as a broker's http://127.0.0.1:8080/metrics)
    /// from a thread of its own, at once and then every --scrape-interval-ms, as a Prometheus
    /// server would; the summary says how many scrapes succeeded.
    #[arg(long, value_name = "URL")]
    scrape: Option<String>,
    /// Milliseconds between two scrapes of --scrape.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    scrape_interval_ms: u64,
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
}

/// Options of every scenario that publishes.
#[derive(Debug, Clone, Args)]
struct Publishing {
    /// Messages per publisher (default: 100000 in fanin and filters, 10000 in fanout, no
    /// limit in pub); the run also ends at --duration.
    #[arg(short = 'n', long)]
    count: Option<u64>,
    /// Messages per second per publisher; 0 publishes flat out.
    #[arg(short = 'R', long, default_value_t = 0.0)]
    rate: f64,
    /// QoS of publications and subscriptions: 0, 1 or 2.
    #[arg(short, long, default_value_t = 0)]
    qos: u8,
    /// Payload size in bytes; 28 or more carry the bench header (sequence number, send time).
    #[arg(short, long, default_value_t = 64)]
    size: usize,
    /// Publish with the RETAIN flag.
    #[arg(short, long)]
    retain: bool,
    /// QoS 1 and 2: messages in flight per publisher (capped by the broker's Receive Maximum).
    #[arg(long, default_value_t = 16)]
    inflight: usize,
}

#[derive(Debug, Args)]
struct ConnArgs {
    #[command(flatten)]
    common: Common,
    /// Connections to open.
    #[arg(short = 'c', long, default_value_t = 1000)]
    clients: u64,
    /// Connections per second; 0 opens them as fast as --concurrency allows.
    #[arg(short = 'R', long, default_value_t = 0.0)]
    rate: f64,
    /// Wait this long after the last CONNACK before reading the broker's memory.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    settle: Duration,
    /// Hold the connections this long after measuring, then close them.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    hold: Duration,
}

#[derive(Debug, Args)]
struct PubArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    publishing: Publishing,
    /// Publishers.
    #[arg(short = 'c', long, default_value_t = 1)]
    clients: u64,
    /// Topic pattern (%i client index, %c client id); repeat it and each publisher cycles
    /// through the topics.
    #[arg(short, long = "topic", required = true)]
    topics: Vec<String>,
    /// First client index (%i): lets several bench processes split one load.
    #[arg(long, default_value_t = 0)]
    index_offset: u64,
}

#[derive(Debug, Args)]
struct SubArgs {
    #[command(flatten)]
    common: Common,
    /// Subscribers.
    #[arg(short = 'c', long, default_value_t = 1)]
    clients: u64,
    /// Topic filter pattern (%i client index, %c client id); repeatable, every subscriber
    /// subscribes to all of them.
    #[arg(short, long = "topic", required = true)]
    topics: Vec<String>,
    /// Subscription QoS: 0, 1 or 2.
    #[arg(short, long, default_value_t = 0)]
    qos: u8,
    /// Stop after this many deliveries in total (the run also ends at --duration).
    #[arg(short = 'n', long)]
    count: Option<u64>,
    /// Stop when nothing arrived for this long after the first delivery.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    idle: Duration,
    /// First client index (%i).
    #[arg(long, default_value_t = 0)]
    index_offset: u64,
    /// Persistent sessions (3.x: Clean Session 0; 5.0: Clean Start 0 and a Session Expiry
    /// Interval that never expires) under fixed client ids, ID_PREFIX-sN for subscriber N (default prefix
    /// midge-bench, without the process id): the broker keeps each session while its client
    /// is away and queues every QoS 1 and 2 message for it, and a later run with the same ids
    /// resumes the sessions and receives what was queued. The subscribers send DISCONNECT
    /// when they are done.
    #[arg(long)]
    persistent: bool,
    /// With --persistent: subscribe, then disconnect at once, leaving the sessions offline
    /// for messages to queue up in; reports the time to connect and subscribe them all. Run
    /// `sub --persistent` again with the same ids (and -n) to drain what was queued.
    #[arg(long, requires = "persistent", conflicts_with = "count")]
    disconnect_after_subscribe: bool,
}

#[derive(Debug, Args)]
struct FanArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    publishing: Publishing,
    /// Publishers (fanin, default 8) or subscribers (fanout, default 100).
    #[arg(short = 'c', long)]
    clients: Option<u64>,
    /// Topic prefix (default: midge-bench/PID).
    #[arg(long)]
    prefix: Option<String>,
    /// After the publishers finish, stop waiting for deliveries when none arrived for this long.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    idle: Duration,
    /// Subscribers with persistent sessions under fixed client ids, as `sub --persistent`:
    /// the broker must keep every QoS 1 and 2 message for them (on disk, when it persists
    /// sessions) until they acknowledge it.
    #[arg(long)]
    persistent: bool,
}

#[derive(Debug, Args)]
struct LatencyArgs {
    #[command(flatten)]
    common: Common,
    /// Messages to publish.
    #[arg(short = 'n', long, default_value_t = 10_000)]
    count: u64,
    /// Messages per second.
    #[arg(short = 'R', long, default_value_t = 1000.0)]
    rate: f64,
    /// QoS: 0, 1 or 2.
    #[arg(short, long, default_value_t = 0)]
    qos: u8,
    /// Payload size in bytes (at least 28).
    #[arg(short, long, default_value_t = 64)]
    size: usize,
    /// Topic prefix (default: midge-bench/PID).
    #[arg(long)]
    prefix: Option<String>,
    /// After the publisher finishes, stop waiting when nothing arrived for this long.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    idle: Duration,
}

#[derive(Debug, Args)]
struct FiltersArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    publishing: Publishing,
    /// Subscribers, one distinct filter each.
    #[arg(short = 'c', long, default_value_t = 10_000)]
    clients: u64,
    /// Publishers; each picks a random subscriber's topic per message.
    #[arg(long, default_value_t = 1)]
    publishers: u64,
    /// Seed of the random topics.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Topic prefix (default: midge-bench/PID).
    #[arg(long)]
    prefix: Option<String>,
    /// After the publishers finish, stop waiting when nothing arrived for this long.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    idle: Duration,
}

/// Parses `-V`.
fn parse_version(s: &str) -> Result<ProtocolVersion, String> {
    match s {
        "3.1" | "31" | "3" | "mqttv31" => Ok(ProtocolVersion::V3_1),
        "3.1.1" | "311" | "4" | "mqttv311" => Ok(ProtocolVersion::V3_1_1),
        "5" | "5.0" | "mqttv5" => Ok(ProtocolVersion::V5),
        _ => Err(format!("unknown MQTT version {s:?} (3.1, 3.1.1 or 5)")),
    }
}

/// Parses `30s`, `500ms`, `2m`, `1h`, or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (e.g. 30s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("unknown unit in duration {s:?} (ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("invalid duration {s:?}"))
}

fn qos_of(q: u8) -> Result<QoS, String> {
    QoS::from_u8(q).ok_or_else(|| format!("invalid QoS {q} (0, 1 or 2)"))
}

fn protocol_name(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::V3_1 => "3.1",
        ProtocolVersion::V3_1_1 => "3.1.1",
        ProtocolVersion::V5 => "5.0",
    }
}

/// Publishing settings after validation.
#[derive(Clone, Debug)]
pub(crate) struct MessagePlan {
    pub(crate) count: u64,
    pub(crate) rate: f64,
    pub(crate) qos: QoS,
    pub(crate) size: usize,
    pub(crate) retain: bool,
    pub(crate) inflight: usize,
}

/// Settings shared by every scenario, after validation.
#[derive(Clone, Debug)]
pub(crate) struct Setup {
    pub(crate) connect: ConnectOptions,
    pub(crate) broker: String,
    pub(crate) protocol: &'static str,
    pub(crate) duration: Duration,
    pub(crate) concurrency: usize,
    pub(crate) id_prefix: String,
    pub(crate) broker_pid: Option<u32>,
    pub(crate) progress: bool,
}

/// A scenario, validated and ready to run.
#[derive(Clone, Debug)]
pub(crate) enum Plan {
    Conn {
        clients: u64,
        rate: f64,
        settle: Duration,
        hold: Duration,
    },
    Pub {
        clients: u64,
        topics: Vec<Pattern>,
        index_offset: u64,
        msg: MessagePlan,
    },
    Sub {
        clients: u64,
        filters: Vec<Pattern>,
        qos: QoS,
        count: Option<u64>,
        idle: Duration,
        index_offset: u64,
        session: Session,
        disconnect_after_subscribe: bool,
    },
    EndToEnd(run::EndToEnd),
}

fn check_rate(rate: f64) -> Result<f64, String> {
    if rate.is_finite() && rate >= 0.0 {
        Ok(rate)
    } else {
        Err(format!(
            "invalid rate {rate}: a non-negative number (0: flat out)"
        ))
    }
}

fn check_clients(n: u64, what: &str) -> Result<u64, String> {
    if n == 0 {
        return Err(format!("at least one {what} is needed"));
    }
    if n > 1_000_000 {
        return Err(format!("{n} {what}s: at most 1000000"));
    }
    Ok(n)
}

fn message_plan(
    p: &Publishing,
    default_count: Option<u64>,
    tracked: bool,
) -> Result<MessagePlan, String> {
    let qos = qos_of(p.qos)?;
    if p.size > MAX_PAYLOAD {
        return Err(format!(
            "payload of {} bytes: at most {MAX_PAYLOAD}",
            p.size
        ));
    }
    if tracked && p.size < HEADER_LEN {
        return Err(format!(
            "payload of {} bytes: end-to-end scenarios need at least {HEADER_LEN} to carry the sequence number and send time",
            p.size
        ));
    }
    if p.inflight == 0 || p.inflight > usize::from(u16::MAX) {
        return Err(format!(
            "--inflight {}: 1 to 65535 (packet identifiers) [MQTT-2.2.1-3]",
            p.inflight
        ));
    }
    let count = match p.count.or(default_count) {
        Some(0) => return Err("--count 0: nothing to publish".into()),
        Some(n) if tracked && n > u64::from(MAX_TRACKED_SEQ) => {
            return Err(format!("--count {n}: end-to-end scenarios track at most {MAX_TRACKED_SEQ} messages per publisher"));
        }
        Some(n) => n,
        None => u64::MAX,
    };
    Ok(MessagePlan {
        count,
        rate: check_rate(p.rate)?,
        qos,
        size: p.size,
        retain: p.retain,
        inflight: p.inflight,
    })
}

fn patterns(texts: &[String], filter: bool) -> Result<Vec<Pattern>, String> {
    texts
        .iter()
        .map(|t| {
            let p = Pattern::parse(t).map_err(|e| format!("{t:?}: {e}"))?;
            // Check the shape once, on a sample expansion.
            let sample = p.expand(0, "id");
            if filter {
                check_topic_filter(&sample)?;
            } else {
                check_topic_name(&sample)?;
            }
            Ok(p)
        })
        .collect()
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))
}

/// How the clients reach the target, and what the report calls it: the address (and the
/// URL, for other transports than TCP).
/// Without `resume`, TLS clients never resume a session: every handshake is a full one.
fn dial(target: &Target, resume: bool) -> Result<(Dial, String), String> {
    let url = &target.url;
    if let Some(path) = url.socket_path() {
        return Ok((Dial::Unix(path), target.display()));
    }
    let addr = resolve(url.host(), url.port())?;
    let tls = match &target.tls {
        Some(options) => {
            let mut config = options.load().map_err(|e| format!("TLS: {e}"))?;
            if !resume {
                let mut fresh = (*config).clone();
                fresh.resumption = midge_transport::tls::rustls::client::Resumption::disabled();
                config = Arc::new(fresh);
            }
            let name =
                midge_transport::tls::server_name(url.host()).map_err(|e| format!("TLS: {e}"))?;
            Some((TlsConnector::from(config), name))
        }
        None => None,
    };
    Ok(match (url.scheme(), tls) {
        (Scheme::Mqtt, _) => (Dial::Tcp(addr), addr.to_string()),
        (Scheme::Mqtts, Some((connector, name))) => (
            Dial::Tls(addr, connector, name),
            format!("{} ({addr})", target.display()),
        ),
        (Scheme::Ws | Scheme::Wss, tls) => (
            Dial::Ws(addr, target.websocket_url(), tls),
            format!("{} ({addr})", target.display()),
        ),
        (scheme, _) => return Err(format!("{scheme}:// is not supported by midge bench")),
    })
}

fn setup(c: &Common) -> Result<Setup, String> {
    if c.duration.is_zero() {
        return Err("--duration must be more than 0".into());
    }
    if c.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    if c.threads == Some(0) {
        return Err("--threads must be at least 1".into());
    }
    if let Some(url) = &c.scrape {
        scrape::check_url(url)?;
        if c.scrape_interval_ms == 0 {
            return Err("--scrape-interval-ms must be at least 1".into());
        }
    }
    let target = transport::target(c.host.as_deref(), c.port, "127.0.0.1", &c.transport)?;
    if target.topic.is_some() {
        return Err(
            "-L: midge bench takes its topics from its own flags (-t, --prefix): give the URL without a path".into(),
        );
    }
    if target.url.username().is_some() && c.username.is_some() {
        return Err("-L gives a user name, and so does -u: give it in one place".into());
    }
    let (dial, broker) = dial(&target, !c.no_tls_resumption)?;
    Ok(Setup {
        connect: ConnectOptions {
            dial,
            broker: broker.as_str().into(),
            version: c.protocol_version,
            keep_alive: c.keepalive,
            username: c
                .username
                .clone()
                .or(target.url.username().map(str::to_owned)),
            password: c.password.clone().or(target
                .url
                .password()
                .map(|p| client::Password(p.to_owned()))),
            timeout: c.connect_timeout,
        },
        broker,
        protocol: protocol_name(c.protocol_version),
        duration: c.duration,
        concurrency: c.concurrency,
        id_prefix: c
            .id_prefix
            .clone()
            .unwrap_or_else(|| format!("midge-bench-{}", std::process::id())),
        broker_pid: c.broker_pid,
        progress: !c.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    })
}

fn prefix_of(p: &Option<String>) -> Result<String, String> {
    let prefix = p
        .clone()
        .unwrap_or_else(|| format!("midge-bench/{}", std::process::id()));
    check_topic_name(&prefix)?;
    Ok(prefix)
}

fn check_tracking(bits: u64) -> Result<(), String> {
    if bits > MAX_TRACKING_BITS {
        return Err(format!(
            "this run would track {bits} deliveries, more than {MAX_TRACKING_BITS}: lower --count or --clients"
        ));
    }
    Ok(())
}

/// Checks the arguments and turns them into a plan.
fn plan(args: &BenchArgs) -> Result<(Common, Setup, Plan), String> {
    let (common, plan) = match &args.scenario {
        Scenario::Conn(a) => {
            let s = setup(&a.common)?;
            let plan = Plan::Conn {
                clients: check_clients(a.clients, "connection")?,
                rate: check_rate(a.rate)?,
                settle: a.settle,
                hold: a.hold,
            };
            return Ok((a.common.clone(), s, plan));
        }
        Scenario::Pub(a) => (
            &a.common,
            Plan::Pub {
                clients: check_clients(a.clients, "publisher")?,
                topics: patterns(&a.topics, false)?,
                index_offset: a.index_offset,
                msg: message_plan(&a.publishing, None, false)?,
            },
        ),
        Scenario::Sub(a) => (
            &a.common,
            Plan::Sub {
                clients: check_clients(a.clients, "subscriber")?,
                filters: patterns(&a.topics, true)?,
                qos: qos_of(a.qos)?,
                count: a.count,
                idle: a.idle,
                index_offset: a.index_offset,
                session: session_of(a.persistent),
                disconnect_after_subscribe: a.disconnect_after_subscribe,
            },
        ),
        Scenario::Fanin(a) => {
            let msg = message_plan(&a.publishing, Some(100_000), true)?;
            let pubs = check_clients(a.clients.unwrap_or(8), "publisher")?;
            check_tracking(pubs.saturating_mul(msg.count))?;
            let prefix = prefix_of(&a.prefix)?;
            let mut e = run::EndToEnd::fanin(&prefix, pubs, msg, a.idle);
            e.session = session_of(a.persistent);
            (&a.common, Plan::EndToEnd(e))
        }
        Scenario::Fanout(a) => {
            let msg = message_plan(&a.publishing, Some(10_000), true)?;
            let subs = check_clients(a.clients.unwrap_or(100), "subscriber")?;
            check_tracking(subs.saturating_mul(msg.count))?;
            let prefix = prefix_of(&a.prefix)?;
            let mut e = run::EndToEnd::fanout(&prefix, subs, msg, a.idle);
            e.session = session_of(a.persistent);
            (&a.common, Plan::EndToEnd(e))
        }
        Scenario::Latency(a) => {
            let msg = message_plan(
                &Publishing {
                    count: Some(a.count),
                    rate: a.rate,
                    qos: a.qos,
                    size: a.size,
                    retain: false,
                    inflight: 16,
                },
                None,
                true,
            )?;
            if msg.rate == 0.0 {
                return Err("latency needs a fixed --rate (more than 0)".into());
            }
            let prefix = prefix_of(&a.prefix)?;
            (
                &a.common,
                Plan::EndToEnd(run::EndToEnd::latency(&prefix, msg, a.idle)),
            )
        }
        Scenario::Filters(a) => {
            let msg = message_plan(&a.publishing, Some(100_000), true)?;
            let subs = check_clients(a.clients, "subscriber")?;
            let pubs = check_clients(a.publishers, "publisher")?;
            check_tracking(pubs.saturating_mul(msg.count).saturating_mul(2))?;
            let prefix = prefix_of(&a.prefix)?;
            (
                &a.common,
                Plan::EndToEnd(run::EndToEnd::filters(
                    &prefix, subs, pubs, a.seed, msg, a.idle,
                )),
            )
        }
    };
    let mut s = setup(common)?;
    let persistent = match &plan {
        Plan::Sub { session, .. } => *session == Session::Persistent,
        Plan::EndToEnd(e) => e.session == Session::Persistent,
        _ => false,
    };
    if persistent && common.id_prefix.is_none() {
        // The same ids in every run, so that a later run resumes the sessions.
        s.id_prefix = "midge-bench".into();
    }
    Ok((common.clone(), s, plan))
}

fn session_of(persistent: bool) -> Session {
    if persistent {
        Session::Persistent
    } else {
        Session::Clean
    }
}

/// Runs `midge bench`.
pub(crate) fn main(args: BenchArgs) -> ExitCode {
    let (common, setup, plan) = match plan(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("midge bench: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let threads = common
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("midge bench: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_SETUP);
        }
    };
    let scraper = common
        .scrape
        .clone()
        .map(|url| scrape::Scraper::start(url, Duration::from_millis(common.scrape_interval_ms)));
    let result = runtime.block_on(run::run(setup, plan));
    let scrapes = scraper.map(scrape::Scraper::stop);
    match result {
        Err(e) => {
            eprintln!("midge bench: {e}");
            ExitCode::from(EXIT_SETUP)
        }
        Ok(mut summary) => {
            summary.scrapes = scrapes;
            let text = if common.json {
                summary.to_json() + "\n"
            } else {
                summary.to_text()
            };
            // A closed pipe (`| head`) is not worth a panic.
            let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
            if summary.lost_acknowledged()
                || summary.errors > 0
                || (summary.qos == 2 && summary.duplicates > 0)
            {
                ExitCode::from(EXIT_FAILED_RUN)
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        bench: Top,
    }

    #[derive(Debug, Subcommand)]
    enum Top {
        Bench(BenchArgs),
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, String> {
        let mut all = vec!["midge", "bench"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all)
            .map(|c| match c.bench {
                Top::Bench(b) => b,
            })
            .map_err(|e| e.to_string())
    }

    fn plan_of(args: &[&str]) -> Result<Plan, String> {
        let a = parse(args)?;
        plan(&a).map(|(_, _, p)| p)
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("5"), Ok(ProtocolVersion::V5));
        assert_eq!(parse_version("mqttv311"), Ok(ProtocolVersion::V3_1_1));
        assert_eq!(parse_version("3.1"), Ok(ProtocolVersion::V3_1));
        assert!(parse_version("6").is_err());
    }

    #[test]
    fn mosquitto_style_flags_parse() {
        let a = parse(&[
            "pub",
            "-h",
            "localhost",
            "-p",
            "1884",
            "-V",
            "5",
            "-t",
            "a/%i",
            "-t",
            "b/%c",
            "-q",
            "1",
            "-s",
            "100",
            "-r",
            "-c",
            "4",
            "-n",
            "10",
            "-R",
            "50",
            "--json",
            "--broker-pid",
            "1",
        ])
        .expect("parses");
        let (common, setup, plan) = plan(&a).expect("valid");
        assert!(common.json);
        assert_eq!(setup.connect.version, ProtocolVersion::V5);
        assert!(matches!(setup.connect.dial, Dial::Tcp(addr) if addr.port() == 1884));
        assert_eq!(setup.broker_pid, Some(1));
        let Plan::Pub {
            clients,
            topics,
            msg,
            ..
        } = plan
        else {
            panic!("pub plan");
        };
        assert_eq!(
            (clients, topics.len(), msg.count, msg.size),
            (4, 2, 10, 100)
        );
        assert_eq!(msg.qos, QoS::AtLeastOnce);
        assert!(msg.retain);
        assert_eq!(msg.rate, 50.0);
        assert!(parse(&["pub", "--help"]).unwrap_err().contains("Usage"));
    }

    #[test]
    fn invalid_arguments_are_rejected_with_a_reason() {
        let cases: &[(&[&str], &str)] = &[
            (&["pub", "-t", "a/+"], "wildcard"),
            (&["pub", "-t", "a/%z"], "unknown escape"),
            (&["pub", "-t", "a", "-q", "3"], "invalid QoS"),
            (&["pub", "-t", "a", "-c", "0"], "at least one publisher"),
            (&["pub", "-t", "a", "--inflight", "0"], "--inflight"),
            (&["pub", "-t", "a", "--inflight", "70000"], "--inflight"),
            (&["pub", "-t", "a", "-n", "0"], "nothing to publish"),
            (&["pub", "-t", "a", "--rate=-1"], "invalid rate"),
            (&["pub", "-t", "a", "-R", "NaN"], "invalid rate"),
            (&["sub", "-t", "a/#/b"], "must be last"),
            (&["sub", "-t", ""], "empty"),
            (&["fanin", "-s", "10"], "at least 28"),
            (&["fanin", "-n", "100000000"], "track at most"),
            (
                &["fanout", "-c", "1000000", "-n", "60000000"],
                "would track",
            ),
            (&["latency", "-R", "0"], "fixed --rate"),
            (&["conn", "-c", "0"], "at least one connection"),
            (&["conn", "-d", "0s"], "--duration"),
            (&["conn", "--concurrency", "0"], "--concurrency"),
            (&["fanin", "--prefix", "a/#"], "wildcard"),
            (
                &["fanin", "--scrape", "https://127.0.0.1/metrics"],
                "http://",
            ),
            (
                &[
                    "fanin",
                    "--scrape",
                    "http://127.0.0.1:8080/metrics",
                    "--scrape-interval-ms",
                    "0",
                ],
                "at least 1",
            ),
        ];
        for (args, expected) in cases {
            let err = plan_of(args).expect_err(&format!("{args:?} should fail"));
            assert!(err.contains(expected), "{args:?}: {err}");
        }
        // Rejected by clap itself.
        assert!(parse(&["pub"]).is_err(), "pub needs a topic");
        assert!(parse(&["conn", "-V", "7"]).is_err());
        assert!(parse(&["nosuch"]).is_err());
    }

    #[test]
    fn persistent_subscribers_have_fixed_ids() {
        let (_, setup, p) =
            plan(&parse(&["sub", "-t", "a", "--persistent"]).expect("parses")).expect("valid");
        assert_eq!(setup.id_prefix, "midge-bench", "no process id in the ids");
        assert!(matches!(
            p,
            Plan::Sub {
                session: Session::Persistent,
                disconnect_after_subscribe: false,
                ..
            }
        ));
        let (_, setup, p) =
            plan(&parse(&["fanin", "--persistent", "--id-prefix", "mine"]).expect("parses"))
                .expect("valid");
        assert_eq!(setup.id_prefix, "mine");
        assert!(matches!(p, Plan::EndToEnd(e) if e.session == Session::Persistent));
        let (_, setup, p) = plan(&parse(&["fanout"]).expect("parses")).expect("valid");
        assert_ne!(setup.id_prefix, "midge-bench");
        assert!(matches!(p, Plan::EndToEnd(e) if e.session == Session::Clean));
        let (_, _, p) = plan(
            &parse(&[
                "sub",
                "-t",
                "a",
                "--persistent",
                "--disconnect-after-subscribe",
            ])
            .expect("parses"),
        )
        .expect("valid");
        assert!(matches!(
            p,
            Plan::Sub {
                disconnect_after_subscribe: true,
                ..
            }
        ));
        // Leaving clean sessions behind would leave nothing; a count has nothing to count.
        assert!(parse(&["sub", "-t", "a", "--disconnect-after-subscribe"]).is_err());
        assert!(parse(&[
            "sub",
            "-t",
            "a",
            "--persistent",
            "--disconnect-after-subscribe",
            "-n",
            "5"
        ])
        .is_err());
    }

    #[test]
    fn defaults_match_the_reference_scenarios() {
        let Plan::EndToEnd(e) = plan_of(&["fanin"]).expect("valid") else {
            panic!("end to end");
        };
        assert_eq!(e.publishers.len(), 8);
        assert_eq!(e.subscribers.len(), 1);
        assert_eq!(e.msg.count, 100_000);
        assert_eq!(e.msg.size, 64);
        assert_eq!(e.msg.inflight, 16);
        let Plan::EndToEnd(e) = plan_of(&["fanout"]).expect("valid") else {
            panic!("end to end");
        };
        assert_eq!((e.publishers.len(), e.subscribers.len()), (1, 100));
        let Plan::EndToEnd(e) = plan_of(&["filters", "-c", "9"]).expect("valid") else {
            panic!("end to end");
        };
        assert_eq!(e.subscribers.len(), 9);
        let Plan::EndToEnd(e) = plan_of(&["latency"]).expect("valid") else {
            panic!("end to end");
        };
        assert_eq!(e.msg.rate, 1000.0);
    }
}
