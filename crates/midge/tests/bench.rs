//! `midge bench` end to end: small bounded scenarios against an in-process midge broker on
//! 127.0.0.1:0, checked through the JSON summary and the exit code; failures against a closed
//! port, a broker that refuses subscriptions, and a fake broker that loses messages.
#![allow(missing_docs)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::test_config;
use midge_broker::BrokerConfig;
use midge_codec::{Packet, ProtocolVersion, PubAck};
use midge_testkit::raw::{Peer, Recv};
use serde_json::Value;

/// Starts a broker with `config` on 127.0.0.1:0 in a background runtime; it lives until the
/// test ends.
fn start_broker(config: BrokerConfig) -> SocketAddr {
    common::start_broker_configured(config, midge_broker::AllowAll)
}

/// Runs `midge bench <args> -p <port> --json --quiet -d 20s`.
fn bench(addr: SocketAddr, args: &[&str]) -> Output {
    let port = addr.port().to_string();
    Command::new(env!("CARGO_BIN_EXE_midge"))
        .arg("bench")
        .args(args)
        .args([
            "-p",
            &port,
            "--json",
            "--quiet",
            "-d",
            "20s",
            "--threads",
            "1",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("midge runs")
}

fn json(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn ok_json(out: &Output) -> Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}\nstdout: {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    json(out)
}

fn assert_complete(v: &Value, expected: u64) {
    assert_eq!(v["expected"], expected, "{v:#}");
    assert_eq!(v["delivered"], expected, "{v:#}");
    assert_eq!(v["lost"], 0, "{v:#}");
    assert_eq!(v["duplicates"], 0, "{v:#}");
    assert_eq!(v["untracked"], 0, "{v:#}");
    assert_eq!(v["errors"], 0, "{v:#}");
    assert_eq!(v["timed_out"], false, "{v:#}");
    assert_eq!(v["latency"]["samples"], expected, "{v:#}");
    assert!(v["delivery_rate"].as_f64().expect("rate") > 0.0);
}

#[test]
fn fanin_qos1_delivers_everything_once() {
    let addr = start_broker(test_config());
    let v = ok_json(&bench(addr, &["fanin", "-c", "4", "-n", "500", "-q", "1"]));
    assert_eq!(v["scenario"], "fanin");
    assert_eq!(v["publishers"], 4);
    assert_eq!(v["subscribers"], 1);
    assert_eq!(v["published"], 2000);
    assert_eq!(v["acked"], 2000);
    assert_complete(&v, 2000);
    assert_eq!(v["ack_latency"]["samples"], 2000);
    let p50 = v["latency"]["p50_us"].as_f64().expect("p50");
    let p99 = v["latency"]["p99_us"].as_f64().expect("p99");
    let max = v["latency"]["max_us"].as_f64().expect("max");
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{v:#}");
}

#[test]
fn fanin_qos2_over_mqtt5_with_a_small_receive_maximum() {
    let mut config = test_config();
    config.limits.receive_maximum = 4;
    let addr = start_broker(config);
    let v = ok_json(&bench(
        addr,
        &[
            "fanin",
            "-c",
            "2",
            "-n",
            "300",
            "-q",
            "2",
            "-V",
            "5",
            "--inflight",
            "32",
        ],
    ));
    assert_eq!(v["protocol"], "5.0");
    assert_eq!(v["qos"], 2);
    assert_eq!(v["acked"], 600);
    assert_complete(&v, 600);
}

#[test]
fn fanout_qos0_reaches_every_subscriber() {
    let addr = start_broker(test_config());
    let v = ok_json(&bench(
        addr,
        &["fanout", "-c", "5", "-n", "300", "-s", "100"],
    ));
    assert_eq!(v["payload_bytes"], 100);
    assert_eq!(v["published"], 300);
    assert_complete(&v, 1500);
}

#[test]
fn latency_runs_at_the_given_rate() {
    let addr = start_broker(test_config());
    let v = ok_json(&bench(addr, &["latency", "-n", "100", "-R", "500"]));
    assert_complete(&v, 100);
    // 100 messages at 500/s take about 0.2 s.
    let elapsed = v["elapsed_s"].as_f64().expect("elapsed");
    assert!((0.15..5.0).contains(&elapsed), "{v:#}");
}

#[test]
fn filters_deliver_each_message_to_its_one_subscriber() {
    let addr = start_broker(test_config());
    let v = ok_json(&bench(
        addr,
        &[
            "filters",
            "-c",
            "30",
            "--publishers",
            "2",
            "-n",
            "200",
            "-q",
            "1",
        ],
    ));
    assert_eq!(v["subscribers"], 30);
    assert_complete(&v, 400);
}

#[test]
fn conn_reports_memory_per_connection() {
    let addr = start_broker(test_config());
    // The broker runs in this test process.
    let pid = std::process::id().to_string();
    let v = ok_json(&bench(
        addr,
        &[
            "conn",
            "-c",
            "40",
            "-R",
            "400",
            "--broker-pid",
            &pid,
            "--settle",
            "50ms",
            "-k",
            "1",
            "--hold",
            "1600ms",
        ],
    ));
    assert_eq!(v["connections"], 40);
    assert_eq!(v["latency"]["samples"], 40);
    // At 400/s, 40 connections take about 0.1 s.
    let elapsed = v["elapsed_s"].as_f64().expect("elapsed");
    assert!((0.09..5.0).contains(&elapsed), "{v:#}");
    assert_eq!(
        v["broker_usage"]["pid"].as_u64(),
        Some(u64::from(std::process::id()))
    );
    assert!(
        v["broker_usage"]["bytes_per_connection"].is_number(),
        "{v:#}"
    );
    assert!(v["broker_usage"]["rss_after_bytes"].as_u64().expect("rss") > 0);
    // Keep Alive 1 s, held 1.6 s + settle: only the PINGREQs keep them open [MQTT-3.1.2-24].
    assert_eq!(v["closed_by_broker"], 0, "{v:#}");
}

#[test]
fn separate_pub_and_sub_processes_agree() {
    let addr = start_broker(test_config());
    let port = addr.port().to_string();
    let sub = Command::new(env!("CARGO_BIN_EXE_midge"))
        .args([
            "bench", "sub", "-t", "split/+", "-q", "1", "-n", "600", "-c", "2",
        ])
        .args(["-p", &port, "--json", "--quiet", "-d", "20s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sub runs");
    // The subscriptions must exist before publishing: `sub` says when they do.
    let mut sub = sub;
    let mut stderr = BufReader::new(sub.stderr.take().expect("stderr"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("reads");
    assert_eq!(line.trim(), "midge bench: 2 subscribers ready");
    let p = ok_json(&bench(
        addr,
        &[
            "pub",
            "-t",
            "split/%i",
            "-c",
            "3",
            "-n",
            "100",
            "-q",
            "1",
            "--index-offset",
            "10",
        ],
    ));
    assert_eq!(p["published"], 300);
    assert_eq!(p["acked"], 300);
    assert_eq!(p["ack_latency"]["samples"], 300);
    let out = sub.wait_with_output().expect("sub ends");
    let s = ok_json(&out);
    assert_eq!(s["delivered"], 600, "two subscribers x 300: {s:#}");
    assert_eq!(s["lost"], 0);
    assert_eq!(s["duplicates"], 0);
    assert_eq!(s["latency"]["samples"], 600);
}

#[test]
fn connection_refused_is_a_clear_setup_failure() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    for scenario in [
        &["fanin", "-n", "10"][..],
        &["conn", "-c", "3"],
        &["pub", "-t", "a"],
    ] {
        let out = bench(port, scenario);
        assert_eq!(out.status.code(), Some(1), "{scenario:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("midge bench: ")
                && err.contains("refused")
                && err.contains(&port.to_string()),
            "{scenario:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "no summary: {scenario:?}");
    }
}

#[test]
fn refused_subscription_is_a_setup_failure() {
    let mut config = test_config();
    config.mqtt.wildcard_subscriptions = false;
    let addr = start_broker(config);
    let out = bench(addr, &["fanin", "-n", "10"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SUBACK refused"), "{err}");
}

#[test]
fn invalid_arguments_exit_2() {
    let addr: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let out = bench(addr, &["pub", "-t", "a/#"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wildcard"));
    let out = bench(addr, &["fanin", "-q", "7"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid QoS 7"));
}

/// A broker that acknowledges every QoS 1 PUBLISH and delivers nothing.
fn start_lossy_broker() -> SocketAddr {
    common::serve_in_background(|addr| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        addr.send(listener.local_addr().expect("addr"))
            .expect("send addr");
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_lossy(Peer::new(stream, ProtocolVersion::V3_1_1)));
        }
    })
}

/// Accepts the connection and every subscription, acknowledges every PUBLISH, and forwards
/// nothing, until the client closes the connection.
async fn serve_lossy(mut peer: Peer) {
    loop {
        match peer.recv_within(Duration::MAX).await {
            Recv::Packet(Packet::Connect(_)) => peer.send(Packet::ConnAck(Box::default())).await,
            Recv::Packet(Packet::Subscribe(subscribe)) => peer.grant(&subscribe).await,
            Recv::Packet(Packet::Publish(publish)) => {
                if let Some(id) = publish.packet_id {
                    peer.send(Packet::PubAck(PubAck::new(id))).await;
                }
            }
            Recv::Packet(_) => {}
            _ => return,
        }
    }
}

#[test]
fn acknowledged_but_undelivered_messages_fail_the_run() {
    let addr = start_lossy_broker();
    let out = bench(
        addr,
        &["fanin", "-c", "2", "-n", "10", "-q", "1", "--idle", "200ms"],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    assert_eq!(v["acked"], 20);
    assert_eq!(v["delivered"], 0);
    assert_eq!(v["lost"], 20);
}

#[test]
fn keep_alive_pings_keep_quiet_clients_connected() {
    let addr = start_broker(test_config());
    // 20 messages at 10/s take 2 s; the subscriber only receives, so without its PINGREQs the
    // broker would close it after 1.5 s of Keep Alive 1 [MQTT-3.1.2-24].
    let v = ok_json(&bench(
        addr,
        &["latency", "-n", "20", "-R", "10", "-k", "1"],
    ));
    assert_complete(&v, 20);
}

#[test]
fn retained_messages_of_an_earlier_run_do_not_count() {
    let addr = start_broker(test_config());
    let first = ok_json(&bench(
        addr,
        &["fanin", "-c", "3", "-n", "50", "-r", "--prefix", "again"],
    ));
    assert_complete(&first, 150);
    // The second run's subscriber first gets the three retained messages of the first run.
    let v = ok_json(&bench(
        addr,
        &["fanin", "-c", "3", "-n", "50", "-r", "--prefix", "again"],
    ));
    assert_eq!(v["delivered"], 150, "{v:#}");
    assert_eq!(v["lost"], 0, "{v:#}");
    assert_eq!(v["untracked"], 3, "{v:#}");
}

/// `midge bench sub` with `--persistent` and `-V`, under the ids of `prefix`.
fn persistent_sub(addr: SocketAddr, version: &str, prefix: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "sub",
        "-c",
        "3",
        "-t",
        "queue/%i",
        "-t",
        "queue/all",
        "-q",
        "1",
        "--persistent",
        "-V",
        version,
        "--id-prefix",
        prefix,
    ];
    args.extend_from_slice(extra);
    bench(addr, &args)
}

#[test]
fn persistent_subscribers_get_what_was_queued_while_they_were_away() {
    let addr = start_broker(test_config());
    for version in ["3.1.1", "5"] {
        let prefix = format!("away-{version}");
        let created = ok_json(&persistent_sub(
            addr,
            version,
            &prefix,
            &["--disconnect-after-subscribe"],
        ));
        assert_eq!(created["connections"], 3, "{created:#}");
        assert_eq!(created["sessions_present"], 0, "new sessions: {created:#}");
        assert_eq!(created["delivered"], 0, "{created:#}");
        assert!(created["connect_rate"].as_f64().expect("rate") > 0.0);
        // 40 messages for every session, 10 more for the session of index 1 alone.
        let p = ok_json(&bench(
            addr,
            &[
                "pub",
                "-t",
                "queue/all",
                "-n",
                "40",
                "-q",
                "1",
                "-V",
                version,
            ],
        ));
        assert_eq!(p["acked"], 40, "{p:#}");
        let p = ok_json(&bench(
            addr,
            &["pub", "-t", "queue/1", "-n", "10", "-q", "1", "-V", version],
        ));
        assert_eq!(p["acked"], 10, "{p:#}");
        // Resumed, the sessions hand over what was queued; some of it arrives before the
        // SUBACK of the repeated subscription, and counts as well.
        let drained = ok_json(&persistent_sub(
            addr,
            version,
            &prefix,
            &["-n", "130", "--idle", "1s"],
        ));
        assert_eq!(drained["delivered"], 130, "{version}: {drained:#}");
        assert_eq!(drained["sessions_present"], 3, "{drained:#}");
        assert_eq!(drained["lost"], 0, "{drained:#}");
        assert_eq!(drained["duplicates"], 0, "{drained:#}");
    }
}

#[test]
fn disconnect_after_subscribe_needs_persistent() {
    let addr = start_broker(test_config());
    let out = bench(addr, &["sub", "-t", "gone", "--disconnect-after-subscribe"]);
    assert_eq!(out.status.code(), Some(2), "needs --persistent");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--persistent"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn fanin_and_fanout_with_persistent_subscribers() {
    let addr = start_broker(test_config());
    let mut resumed = Vec::new();
    for _ in 0..2 {
        // The second run resumes the sessions the first left, with nothing queued in them.
        let v = ok_json(&bench(
            addr,
            &[
                "fanin",
                "-c",
                "3",
                "-n",
                "200",
                "-q",
                "1",
                "--persistent",
                "--id-prefix",
                "durable",
            ],
        ));
        assert_complete(&v, 600);
        assert_eq!(v["ack_latency"]["samples"], 600, "{v:#}");
        resumed.push(v["sessions_present"].clone());
    }
    assert_eq!(
        resumed,
        [0, 1],
        "the second run resumed the first's session"
    );
    let v = ok_json(&bench(
        addr,
        &[
            "fanout",
            "-c",
            "4",
            "-n",
            "100",
            "-q",
            "2",
            "-V",
            "5",
            "--persistent",
        ],
    ));
    assert_complete(&v, 400);
}

/// A directory under the system's temporary directory, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("midge-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temporary directory");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `midge broker` on `port` with `config`, once it accepts connections.
fn broker_process(port: u16, config: &std::path::Path) -> std::process::Child {
    let child = Command::new(env!("CARGO_BIN_EXE_midge"))
        .args(["broker", "--bind", "127.0.0.1", "-p", &port.to_string()])
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("midge broker runs");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "the broker listens");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn an_offline_queue_survives_a_broker_killed_and_restarted() {
    let dir = TempDir::new("offline");
    let config = dir.0.join("midge.toml");
    std::fs::write(
        &config,
        "[sys]\ninterval_secs = 0\n[persistence]\npath = \"store.redb\"\n",
    )
    .expect("config");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut broker = broker_process(port, &config);
    ok_json(&persistent_sub(
        addr,
        "3.1.1",
        "kept",
        &["--disconnect-after-subscribe"],
    ));
    let p = ok_json(&bench(
        addr,
        &["pub", "-t", "queue/all", "-c", "2", "-n", "25", "-q", "1"],
    ));
    assert_eq!(p["acked"], 50, "{p:#}");
    // Acknowledged means stored: not even SIGKILL loses it.
    broker.kill().expect("kill");
    broker.wait().expect("ends");
    let mut broker = broker_process(port, &config);
    let drained = persistent_sub(addr, "3.1.1", "kept", &["-n", "150", "--idle", "1s"]);
    broker.kill().expect("kill");
    broker.wait().expect("ends");
    let drained = ok_json(&drained);
    assert_eq!(drained["sessions_present"], 3, "restored: {drained:#}");
    assert_eq!(drained["delivered"], 150, "{drained:#}");
    assert_eq!(drained["lost"], 0, "{drained:#}");
}

/// A run of about two seconds (20 messages at 10/s), long enough for the progress bar to be
/// drawn more than once.
fn two_second_run(port: &str) -> Vec<String> {
    [
        "bench",
        "pub",
        "-p",
        port,
        "-t",
        "progress/%i",
        "-c",
        "1",
        "-n",
        "20",
        "-R",
        "10",
        "--threads",
        "1",
    ]
    .map(str::to_owned)
    .to_vec()
}

#[test]
fn no_progress_bytes_when_stderr_is_not_a_terminal() {
    let addr = start_broker(test_config());
    let port = addr.port().to_string();
    // Without --quiet: piped output alone turns the bar off.
    let out = Command::new(env!("CARGO_BIN_EXE_midge"))
        .args(two_second_run(&port))
        .stdin(Stdio::null())
        .output()
        .expect("midge runs");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(
            !bytes.iter().any(|b| *b == b'\r' || *b == 0x1b),
            "{name} holds terminal control bytes: {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("published"), "{summary}");
}

#[test]
fn a_progress_bar_on_a_terminal() {
    if !midge_testkit::peers::require(
        "script (util-linux), to run midge bench on a terminal",
        midge_testkit::peers::installed("script", &["--version"]),
    ) {
        return;
    }
    let addr = start_broker(test_config());
    let port = addr.port().to_string();
    let command = std::iter::once(env!("CARGO_BIN_EXE_midge").to_owned())
        .chain(two_second_run(&port))
        .collect::<Vec<_>>()
        .join(" ");
    // script(1) runs the bench on a pseudo-terminal and copies what it shows to stdout.
    let run = |extra: &str| {
        let out = Command::new("script")
            .args(["-q", "-e", "-c", &format!("{command}{extra}"), "/dev/null"])
            .env("TERM", "xterm")
            .env("COLUMNS", "200")
            .stdin(Stdio::null())
            .output()
            .expect("script runs");
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shown = run("");
    // The bar counts the connection, then the 20 messages.
    assert!(shown.contains("connected ["), "{shown:?}");
    assert!(shown.contains("published ["), "{shown:?}");
    assert!(shown.contains("/20"), "{shown:?}");
    assert!(
        shown.contains("pub "),
        "the counters beside the bar: {shown:?}"
    );
    let quiet = run(" --quiet");
    assert!(!quiet.contains(" ["), "--quiet: {quiet:?}");
    assert!(quiet.contains("published"), "the summary: {quiet:?}");
}
