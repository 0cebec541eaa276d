//! Interop: the broker against MQTT.js (npm package `mqtt`, 5.x) on node, at MQTT 3.1.1 and 5.0.
//!
//! Runs `tests/peers/mqttjs.js` against an in-process broker on 127.0.0.1:0 over TCP, and over
//! the broker's WebSocket listeners (ws:// and wss://, the latter with a test CA). MQTT.js is looked
//! up in `$MIDGE_NODE_MODULES`, else in `target/interop-peers/node/node_modules` (where
//! `.ci/run` installs it with `npm install --prefix target/interop-peers/node mqtt@5`). Without
//! node or MQTT.js the test skips loudly (or fails under `MIDGE_REQUIRE_PEERS=1`).

mod peers;

use midge_broker::AllowAll;
use midge_testkit::certs::TestPki;
use peers::{
    config_from_toml, have_mqttjs, listener, node, start, start_listeners, test_config, toml_path,
    Peer, PEER_TIMEOUT,
};

#[tokio::test(flavor = "multi_thread")]
async fn mqttjs_v311_and_v5() {
    if !have_mqttjs() {
        return;
    }
    for version in ["4", "5"] {
        let broker = start(test_config()).await;
        let stdout = Peer::spawn(
            node("mqttjs.js")
                .arg(broker.local_addr().port().to_string())
                .arg(version),
        )
        .success(PEER_TIMEOUT)
        .await;
        let line = stdout.lines().last().unwrap_or_default();
        assert!(line.contains("\"ok\":true"), "MQTT.js v{version}: {stdout}");
        if version == "5" {
            assert!(line.contains("\"topic_alias_maximum\":64"), "{line}");
        }
        eprintln!("MQTT.js protocol {version}: {line}");
        broker.shutdown().await;
    }
}

/// MQTT.js in node over ws:// (3.1.1 and 5.0) and wss:// (5.0; the server certificate checked
/// against the test CA): the same QoS, large message, retained, will and 5.0 checks as over TCP.
/// MQTT.js offers the subprotocol `mqtt` and refuses a handshake that does not select it.
// Conformance: [MQTT-3.1.1:6.0.0-4] [MQTT-5:6.0.0-4]
#[tokio::test(flavor = "multi_thread")]
async fn mqttjs_over_ws_and_wss() {
    if !have_mqttjs() {
        return;
    }
    let pki = TestPki::generate();
    let (cert, key) = (toml_path(&pki.server_cert), toml_path(&pki.server_key));
    let config = config_from_toml(&format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"ws\"\npath = \"/mqtt\"\n\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"ws\"\npath = \"/mqtt\"\n\
         [listener.tls]\ncert = {cert}\nkey = {key}\n"
    ));
    let broker = start_listeners(config, AllowAll).await;
    let ws = format!("ws://127.0.0.1:{}/mqtt", listener(&broker, 0).port());
    let wss = format!("wss://127.0.0.1:{}/mqtt", listener(&broker, 1).port());
    for (url, version) in [(&ws, "4"), (&ws, "5"), (&wss, "5")] {
        let stdout = Peer::spawn(node("mqttjs.js").args([url, version]).arg(&pki.ca))
            .success(PEER_TIMEOUT)
            .await;
        let line = stdout.lines().last().unwrap_or_default();
        assert!(
            line.contains("\"ok\":true") && line.contains("\"big\":307200"),
            "MQTT.js v{version} at {url}: {stdout}"
        );
        eprintln!("MQTT.js protocol {version} at {url}: {line}");
    }
    broker.shutdown().await;
}
