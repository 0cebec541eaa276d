//! Helpers for the broker tests: an in-process broker on 127.0.0.1:0, and what several tests
//! build with the raw MQTT peer of `midge_testkit::raw` (re-exported here).
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::SocketAddr;

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
