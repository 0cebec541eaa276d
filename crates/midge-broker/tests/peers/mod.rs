//! Helpers for the interop tests against real peers (mosquitto-clients, paho-mqtt): peer
//! detection with loud skips, child processes that are killed on drop, bounded waits, and an
//! in-process broker on 127.0.0.1:0.
//!
//! A missing peer skips its test with `SKIPPED: …` on stderr, unless `MIDGE_REQUIRE_PEERS=1`
//! (set by `.ci/run`), where it fails the test.
// Each test binary compiles this module and uses only part of it.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use midge_broker::{Broker, BrokerConfig, BrokerHandle};

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
