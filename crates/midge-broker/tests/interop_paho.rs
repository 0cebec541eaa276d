//! Interop: the broker against paho-mqtt 2.x for Python, at MQTT 3.1.1 and 5.0.
//!
//! Each test starts an in-process broker on 127.0.0.1:0 (or on TLS and WebSocket listeners)
//! and runs one script from `tests/peers/` with the broker's port and the protocol version. The script prints one JSON
//! line and exits non-zero on failure. Without python3 and paho-mqtt 2.x the tests skip loudly
//! (or fail under `MIDGE_REQUIRE_PEERS=1`).

mod peers;

use std::process::Command;

use midge_broker::{AllowAll, BrokerConfig};
use midge_testkit::certs::TestPki;
use midge_testkit::peers::{require, succeeds};
use peers::{
    config_from_toml, listener, peers_dir, start, start_listeners, test_config, toml_path, Peer,
    PEER_TIMEOUT,
};

fn have_paho() -> bool {
    require(
        "python3 with paho-mqtt 2.x",
        succeeds(
            "python3",
            &[
                "-c",
                "import sys, paho.mqtt; sys.exit(0 if paho.mqtt.__version__.startswith('2.') else 1)",
            ],
        ),
    )
}

/// Runs `tests/peers/<script>` against a fresh broker and returns its JSON line.
async fn run(config: BrokerConfig, script: &str, args: &[&str]) -> String {
    let broker = start(config).await;
    let port = broker.local_addr().port().to_string();
    let stdout = Peer::spawn(
        Command::new("python3")
            .arg(peers_dir().join(script))
            .arg(&port)
            .args(args),
    )
    .success(PEER_TIMEOUT)
    .await;
    broker.shutdown().await;
    let line = stdout.lines().last().unwrap_or_default().to_owned();
    assert!(line.contains("\"ok\": true"), "{script} {args:?}: {stdout}");
    line
}

async fn both_versions(script: &str) {
    if !have_paho() {
        return;
    }
    for version in ["311", "5"] {
        let line = run(test_config(), script, &[version]).await;
        eprintln!("{script} v{version}: {line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retained_messages() {
    both_versions("paho_retained.py").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wills() {
    both_versions("paho_will.py").await;
}

// Conformance: [MQTT-3.1.1:7.0.0-2]
#[tokio::test(flavor = "multi_thread")]
async fn qos2_exactly_once() {
    both_versions("paho_qos2.py").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn persistent_session_offline_messages() {
    both_versions("paho_session.py").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_subscriptions_split_messages() {
    both_versions("paho_shared.py").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn topic_aliases_v5() {
    if !have_paho() {
        return;
    }
    // The CONNACK announces the configured Topic Alias Maximum, and aliases up to it work.
    let mut config = test_config();
    config.limits.topic_alias_maximum = 7;
    let line = run(config, "paho_topic_alias.py", &["5", "7"]).await;
    assert!(line.contains("\"topic_alias_maximum\": 7"), "{line}");
    let line = run(test_config(), "paho_topic_alias.py", &["5", "64"]).await;
    assert!(line.contains("\"topic_alias_maximum\": 64"), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn message_expiry_v5() {
    if !have_paho() {
        return;
    }
    let line = run(test_config(), "paho_expiry.py", &["5"]).await;
    eprintln!("paho_expiry.py v5: {line}");
}

/// paho over TLS (`tls_set(ca_certs=…)`, checking the server certificate for 127.0.0.1; and
/// offering ALPN `mqtt`, which the broker chooses), over WebSocket (`transport="websockets"`,
/// path `/mqtt`) and over WebSocket in TLS: QoS 1 messages, one of 300 KB among them, arrive
/// in order and byte for byte.
#[tokio::test(flavor = "multi_thread")]
async fn tls_and_websockets() {
    if !have_paho() {
        return;
    }
    let pki = TestPki::generate();
    let (cert, key) = (toml_path(&pki.server_cert), toml_path(&pki.server_key));
    let tls = format!("[listener.tls]\ncert = {cert}\nkey = {key}\n");
    let config = config_from_toml(&format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"mqtt\"\n{tls}\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"ws\"\npath = \"/mqtt\"\n\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"ws\"\npath = \"/mqtt\"\n{tls}"
    ));
    let broker = start_listeners(config, AllowAll).await;
    let runs = [
        (0, "tls", "5"),
        (0, "tls-alpn", "311"),
        (1, "ws", "311"),
        (1, "ws", "5"),
        (2, "wss", "5"),
    ];
    for (i, mode, version) in runs {
        let port = listener(&broker, i).port().to_string();
        let stdout = Peer::spawn(
            Command::new("python3")
                .arg(peers_dir().join("paho_transport.py"))
                .args([&port, version, mode])
                .arg(&pki.ca),
        )
        .success(PEER_TIMEOUT)
        .await;
        let line = stdout.lines().last().unwrap_or_default();
        assert!(
            line.contains("\"ok\": true") && line.contains("\"received\": 11"),
            "paho {mode} v{version}: {stdout}"
        );
        eprintln!("paho {mode} v{version}: {line}");
    }
    broker.shutdown().await;
}
