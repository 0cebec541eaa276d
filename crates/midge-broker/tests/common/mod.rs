//! Helpers for the broker tests: an in-process broker on 127.0.0.1:0, and what several tests
//! build with the raw MQTT peer of `midge_testkit::raw` (re-exported here).
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod auth;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use midge_broker::{Broker, BrokerConfig, BrokerHandle};
use midge_codec::{Connect, ProtocolVersion, QoS, ReasonCode, Will};

// Each test binary uses only part of it.
#[allow(unused_imports)]
pub use midge_testkit::raw::{pid, Peer, Recv, WAIT};

pub const V5: ProtocolVersion = ProtocolVersion::V5;
pub const V311: ProtocolVersion = ProtocolVersion::V3_1_1;

/// Short timeouts, no `$SYS`, so that tests run fast.
/// A QoS 1 will on `topic`, delayed by `delay` seconds.
pub fn delayed_will(topic: &str, delay: u32) -> Will {
    let mut will = Will {
        topic: topic.to_owned().into(),
        payload: "gone".into(),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    };
    will.properties.will_delay_interval = Some(delay);
    will
}

pub fn test_config() -> BrokerConfig {
    let mut config = BrokerConfig::default();
    config.limits.connect_timeout_ms = 500;
    config.limits.close_timeout_ms = 500;
    config.sys.interval_secs = 0;
    config
}

pub async fn start(config: BrokerConfig) -> BrokerHandle {
    Broker::builder()
        .config(config)
        .bind("127.0.0.1:0".parse().expect("addr"))
        .start()
        .await
        .expect("broker starts")
}

/// A 5.0 CONNECT with Receive Maximum 1, keep-alive off and a session that outlives it.
pub fn receive_maximum_1(id: &str, clean: bool) -> Connect {
    let mut c = Connect::new(V5, id.to_owned());
    c.clean_start = clean;
    c.keep_alive = 0;
    c.properties.receive_maximum = std::num::NonZeroU16::new(1);
    c.properties.session_expiry_interval = Some(600);
    c
}

/// A subscriber to `topic` that reads nothing, with Receive Maximum 1, made full by two QoS 1
/// messages from `filler`: one in flight, one queued. With `max_queued_messages = 1` and
/// `inbox_capacity = 1`, the next delivery to it waits for room.
pub async fn full_subscriber(addr: SocketAddr, filler: &mut Peer, id: &str, topic: &str) -> Peer {
    let (mut s, _) = Peer::connect_with(addr, receive_maximum_1(id, true)).await;
    s.subscribe(topic, QoS::AtLeastOnce).await;
    for _ in 0..2 {
        let code = filler.publish(topic, "fill", QoS::AtLeastOnce, false).await;
        assert_eq!(code, ReasonCode::SUCCESS);
    }
    s
}

/// Resident set size of this process, in KiB (Linux).
pub fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Asserts the broker still serves: a fresh client connects, subscribes and gets its message.
pub async fn assert_healthy(addr: SocketAddr) {
    let mut c = Peer::connect(addr, V5, "").await;
    c.subscribe("health/check", QoS::AtLeastOnce).await;
    c.publish("health/check", "ok", QoS::AtLeastOnce, false)
        .await;
    let p = c.recv_publish().await;
    assert_eq!(p.payload, Bytes::from_static(b"ok"));
    c.disconnect().await;
}

/// A new, empty directory for one test's files, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "midge-broker-test-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        Self(dir)
    }

    /// A file or directory in it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a password file with `users` (name, password, scheme) into `dir`, as `passwd`.
pub fn password_file(dir: &Path, users: &[(&str, &str, midge_auth::passwd::Scheme)]) -> PathBuf {
    let mut file = midge_auth::passwd::PasswordFile::new();
    for (user, password, scheme) in users {
        file.set_password(user, password.as_bytes(), *scheme)
            .unwrap_or_else(|e| panic!("setting {user}'s password: {e}"));
    }
    let path = dir.join("passwd");
    file.write(&path).expect("writing the password file");
    path
}

/// The test configuration with `password_file` for every client.
pub fn config_with(password_file: &Path) -> BrokerConfig {
    let mut config = test_config();
    config.auth.password_file = Some(password_file.to_owned());
    config
}
