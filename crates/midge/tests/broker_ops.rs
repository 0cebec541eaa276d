//! `midge broker`'s logs and SIGHUP, on the real binary: `--log-format json` writes one JSON
//! object per line; SIGHUP applies a new `[log] level`, and a broken file changes nothing.
#![allow(missing_docs)]

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Running;
use midge_codec::{Connect, ProtocolVersion, ReasonCode};
use midge_testkit::raw::Peer;
use tokio::net::TcpStream;

const V5: ProtocolVersion = ProtocolVersion::V5;

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A directory of its own for one test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("midge-ops-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        Self(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn signal(running: &mut Running, name: &str) {
    let pid = running.child().id().to_string();
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// A broker child with `RUST_LOG` unset, so that only its options and file set the level.
fn broker(args: &[&str], config: Option<&Path>) -> Running {
    let mut command = Command::new(env!("CARGO_BIN_EXE_midge"));
    command.arg("broker").args(args).env_remove("RUST_LOG");
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    Running::spawn(command)
}

/// Connects an MQTT 5.0 client to `port`, retrying while the broker starts.
async fn connects(port: u16, client_id: &'static str) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match TcpStream::connect(addr).await {
            Ok(stream) => break stream,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("broker does not listen: {e}"),
        }
    };
    let mut peer = Peer::new(stream, V5).with_wait(Duration::from_secs(5));
    let ack = peer.handshake(Connect::new(V5, client_id)).await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
}

#[test]
fn json_logs_are_one_object_per_line() {
    let port = free_port().to_string();
    let mut running = broker(
        &["--bind", "127.0.0.1", "-p", &port, "--log-format", "json"],
        None,
    );
    running.wait_for("accepting", 1);
    let finished = running.interrupt();
    assert_eq!(finished.code(), Some(0), "{}", finished.stderr);
    let lines: Vec<&str> = finished.stderr.lines().collect();
    assert!(lines.len() >= 3, "{lines:?}");
    for line in &lines {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        for field in ["timestamp", "level", "target", "message"] {
            assert!(object.get(field).is_some(), "no {field} in {line}");
        }
    }
    let accepting: serde_json::Value = serde_json::from_str(
        lines
            .iter()
            .find(|l| l.contains("accepting"))
            .expect("accepting"),
    )
    .expect("json");
    assert_eq!(accepting["level"], "INFO");
    assert_eq!(accepting["listener"], format!("127.0.0.1:{port} (mqtt)"));
    assert!(lines.iter().any(|l| l.contains("shutting down")));
}

#[test]
fn the_config_file_sets_the_format_and_the_flag_overrides_it() {
    let dir = TempDir::new("format");
    let port = free_port();
    let config = dir.path("midge.toml");
    std::fs::write(
        &config,
        format!("[listener]\nbind = \"127.0.0.1:{port}\"\n[sys]\ninterval_secs = 0\n[log]\nformat = \"json\"\n"),
    )
    .expect("write");
    let mut running = broker(&[], Some(&config));
    running.wait_for("\"accepting ", 1);
    let finished = running.interrupt();
    let first = finished.stderr.lines().next().expect("a line");
    serde_json::from_str::<serde_json::Value>(first).expect("json");

    let mut running = broker(&["--log-format", "text"], Some(&config));
    running.wait_for("accepting", 1);
    let finished = running.interrupt();
    let first = finished.stderr.lines().next().expect("a line");
    assert!(serde_json::from_str::<serde_json::Value>(first).is_err());
    assert!(first.contains(" INFO "), "{first}");
}

#[test]
fn an_api_token_without_an_http_bind_is_warned_about() {
    let dir = TempDir::new("http-token");
    let port = free_port();
    let config = dir.path("midge.toml");
    std::fs::write(
        &config,
        format!(
            "[listener]\nbind = \"127.0.0.1:{port}\"\n[sys]\ninterval_secs = 0\n\
             [http]\ntoken = \"a-token\"\n"
        ),
    )
    .expect("write");
    let mut running = broker(&[], Some(&config));
    running.wait_for("[http] bind is not", 1);
    let finished = running.interrupt();
    let warning = finished
        .stderr
        .lines()
        .find(|l| l.contains("[http] bind is not"))
        .unwrap_or_else(|| panic!("no warning: {}", finished.stderr));
    assert!(warning.contains(" WARN "), "{warning}");
    assert!(!finished.stderr.contains("a-token"), "{}", finished.stderr);
}

#[test]
fn a_bad_log_level_stops_the_broker_with_a_message() {
    let dir = TempDir::new("level");
    let config = dir.path("midge.toml");
    std::fs::write(&config, "[log]\nlevel = \"verbose\"\n").expect("write");
    let finished = broker(&[], Some(&config)).finish();
    assert_eq!(finished.code(), Some(2));
    assert!(finished.stderr.contains("log.level"), "{}", finished.stderr);
}

/// `[log] level`s: at `QUIET` the reload's own lines (the summaries) show, the broker's info
/// lines (start-up, connections, the ACL file's reload) do not; at `LOUD` both do.
const QUIET: &str = "warn,midge::reload=info";
const LOUD: &str = "info";

fn write_config(path: &Path, port: u16, level: &str) {
    write_config_with(path, port, level, "");
}

fn write_config_with(path: &Path, port: u16, level: &str, more: &str) {
    std::fs::write(
        path,
        format!(
            "[listener]\nbind = \"127.0.0.1:{port}\"\n[sys]\ninterval_secs = 0\n\
             [auth]\nacl_file = \"acl\"\n[log]\nlevel = \"{level}\"\n{more}"
        ),
    )
    .expect("write");
}

#[tokio::test]
async fn sighup_applies_a_new_log_level_and_a_broken_file_changes_nothing() {
    let dir = TempDir::new("sighup");
    let port = free_port();
    let config = dir.path("midge.toml");
    std::fs::write(dir.path("acl"), "topic readwrite #\n").expect("write");
    write_config(&config, port, QUIET);
    let mut running = broker(&[], Some(&config));
    connects(port, "before").await;

    // The same file: reloaded, nothing applied, and the broker's info line about the ACL
    // file is not logged.
    signal(&mut running, "HUP");
    running.wait_for("configuration reloaded", 1);

    // QUIET → LOUD: applied before the files reload, so their line shows.
    write_config(&config, port, LOUD);
    signal(&mut running, "HUP");
    running.wait_for("configuration reloaded", 2);
    running.wait_for("password and ACL files reloaded", 1);
    connects(port, "loud").await;
    running.wait_for("client connected", 1);

    // A broken file: logged, and nothing changes; the broker still serves.
    std::fs::write(&config, "[limits]\nno_such_key = 1\n").expect("write");
    signal(&mut running, "HUP");
    running.wait_for("keeping the configuration in use", 1);
    connects(port, "after-broken").await;

    // Back to QUIET: applied, and the files' line is not logged again.
    write_config(&config, port, QUIET);
    signal(&mut running, "HUP");
    running.wait_for("configuration reloaded", 3);
    connects(port, "quiet-again").await;

    // A limit the broker takes live, and one that needs a restart: named apart.
    let limits = "[limits]\nmax_connections = 50\nmax_packet_size = 4096\n";
    write_config_with(&config, port, QUIET, limits);
    signal(&mut running, "HUP");
    running.wait_for("configuration reloaded", 4);
    running.wait_for("take effect only after a restart", 1);

    let finished = running.interrupt();
    assert_eq!(finished.code(), Some(0), "{}", finished.stderr);
    let all = finished.stderr;
    let count = |text: &str| all.lines().filter(|l| l.contains(text)).count();
    // QUIET from the start: none of the broker's start-up lines.
    assert_eq!(count("accepting"), 0, "{all}");
    assert_eq!(count("password and ACL files reloaded"), 1, "{all}");
    // "loud" and "after-broken"; not "before" nor "quiet-again".
    assert_eq!(count("client connected"), 2, "{all}");
    assert_eq!(count("client_id=\"before\""), 0, "{all}");
    assert_eq!(count("keeping the configuration in use"), 1, "{all}");
    let summaries: Vec<&str> = all
        .lines()
        .filter(|l| l.contains("configuration reloaded"))
        .collect();
    assert_eq!(summaries.len(), 4, "{all}");
    assert!(summaries[0].contains("applied=none"), "{all}");
    assert!(summaries[1].contains("applied=log.level"), "{all}");
    assert!(summaries[2].contains("applied=log.level"), "{all}");
    assert!(
        summaries[3].contains("applied=limits.max_connections "),
        "{all}"
    );
    let restart: Vec<&str> = all
        .lines()
        .filter(|l| l.contains("take effect only after a restart"))
        .collect();
    assert_eq!(restart.len(), 1, "{all}");
    assert!(restart[0].contains(" WARN "), "{all}");
    assert!(restart[0].contains("keys=limits.max_packet_size"), "{all}");
}
