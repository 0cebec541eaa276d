//! Helpers for the interop tests against real peers (mosquitto-clients, paho-mqtt, MQTT.js,
//! Chromium): peer detection with loud skips, child processes that are killed on drop, bounded
//! waits, and an in-process broker on 127.0.0.1:0, or on the listeners of a TOML config.
//!
//! A missing peer skips its test with `SKIPPED: …` on stderr, unless `MIDGE_REQUIRE_PEERS=1`
//! (set by `.ci/run`), where it fails the test.
// Each test binary compiles this module and uses only part of it.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use midge_broker::{Broker, BrokerConfig, BrokerHandle, Hooks};
use midge_testkit::peers::require;
use tokio::sync::mpsc;

/// The longest any single peer process may run.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(20);

/// The directory of the peer scripts.
pub fn peers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers")
}

/// No `$SYS` (it would add retained messages and subscriptions), short close timeouts.
pub fn test_config() -> BrokerConfig {
    let mut config = BrokerConfig::default();
    config.sys.interval_secs = 0;
    config.limits.close_timeout_ms = 500;
    config
}

pub async fn start(config: BrokerConfig) -> BrokerHandle {
    Broker::builder()
        .config(config)
        .bind("127.0.0.1:0".parse().expect("address"))
        .start()
        .await
        .expect("broker starts")
}

/// [`test_config`]'s settings on the `[[listener]]` tables (and anything else) of `toml`.
pub fn config_from_toml(toml: &str) -> BrokerConfig {
    let mut config: BrokerConfig =
        toml::from_str(toml).unwrap_or_else(|e| panic!("broker config: {e}\n{toml}"));
    config.sys.interval_secs = 0;
    config.limits.close_timeout_ms = 500;
    config
}

/// Starts a broker on the listeners of `config` alone, with `hooks`.
pub async fn start_listeners(config: BrokerConfig, hooks: impl Hooks) -> BrokerHandle {
    Broker::builder()
        .config(config)
        .hooks(hooks)
        .start()
        .await
        .expect("broker starts")
}

/// The bound address of listener `i` of `broker`.
pub fn listener(broker: &BrokerHandle, i: usize) -> SocketAddr {
    broker
        .listener_addr(i)
        .unwrap_or_else(|| panic!("the broker has no listener {i}"))
}

/// `path` as a TOML literal string.
pub fn toml_path(path: &Path) -> String {
    let path = path.display().to_string();
    assert!(
        !path.contains(['\'', '\n']),
        "{path:?} cannot be a TOML literal string"
    );
    format!("'{path}'")
}

/// Where MQTT.js (and puppeteer-core) are looked up: `$MIDGE_NODE_MODULES`, else
/// `target/interop-peers/node/node_modules`, where `.ci/run` installs them.
pub fn node_modules() -> PathBuf {
    std::env::var_os("MIDGE_NODE_MODULES").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/interop-peers/node/node_modules")
        },
        PathBuf::from,
    )
}

/// True if node can `require` each of `modules` from [`node_modules`].
pub fn node_requires(modules: &[&str]) -> bool {
    let script: String = modules.iter().map(|m| format!("require('{m}');")).collect();
    Command::new("node")
        .args(["-e", &script])
        .env("NODE_PATH", node_modules())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// node with MQTT.js, or a loud skip.
pub fn have_mqttjs() -> bool {
    require(
        "node with MQTT.js (npm package mqtt)",
        node_requires(&["mqtt"]),
    )
}

/// A `node` command for `tests/peers/<script>`, with [`node_modules`] on its path.
pub fn node(script: &str) -> Command {
    let mut cmd = Command::new("node");
    cmd.arg(peers_dir().join(script))
        .env("NODE_PATH", node_modules());
    cmd
}

/// Polls `ready` every 10 ms; panics with `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A child process that is killed when dropped.
pub struct Peer {
    child: Option<Child>,
    what: String,
}

impl Peer {
    /// Starts `cmd` with stdout and stderr captured.
    pub fn spawn(cmd: &mut Command) -> Self {
        let what = format!("{cmd:?}");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Self {
            child: Some(child),
            what,
        }
    }

    /// The lines of the process's stdout as it prints them (a thread reads them). After this,
    /// [`Peer::finish`] returns no stdout.
    pub fn stdout_lines(&mut self) -> mpsc::UnboundedReceiver<String> {
        let stdout = self
            .child
            .as_mut()
            .and_then(|c| c.stdout.take())
            .expect("stdout not taken yet");
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    }

    /// Kills the process (SIGKILL: no DISCONNECT reaches the broker) and reaps it.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit, at most `timeout`; kills it then. Returns its output
    /// and whether it exited by itself.
    pub async fn finish(mut self, timeout: Duration) -> (Output, bool) {
        let deadline = Instant::now() + timeout;
        let mut child = self.child.take().expect("not finished yet");
        let mut exited = true;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => {
                    exited = false;
                    let _ = child.kill();
                    break;
                }
            }
        }
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("{}: {e}", self.what));
        (out, exited)
    }

    /// Waits for a successful exit within `timeout` and returns stdout; panics otherwise with
    /// everything the process printed.
    pub async fn success(self, timeout: Duration) -> String {
        let what = self.what.clone();
        let (out, exited) = self.finish(timeout).await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            exited,
            "{what} did not finish within {timeout:?}\nstdout: {stdout}\nstderr: {stderr}"
        );
        assert!(
            out.status.success(),
            "{what} failed ({})\nstdout: {stdout}\nstderr: {stderr}",
            out.status
        );
        stdout
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}
