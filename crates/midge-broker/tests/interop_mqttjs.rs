//! Interop: the broker against MQTT.js (npm package `mqtt`, 5.x) on node, at MQTT 3.1.1 and 5.0.
//!
//! Runs `tests/peers/mqttjs.js` against an in-process broker on 127.0.0.1:0. MQTT.js is looked
//! up in `$MIDGE_NODE_MODULES`, else in `target/interop-peers/node/node_modules` (where
//! `.ci/run` installs it with `npm install --prefix target/interop-peers/node mqtt@5`). Without
//! node or MQTT.js the test skips loudly (or fails under `MIDGE_REQUIRE_PEERS=1`).

mod peers;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use midge_testkit::peers::require;
use peers::{peers_dir, start, test_config, Peer, PEER_TIMEOUT};

fn node_modules() -> PathBuf {
    std::env::var_os("MIDGE_NODE_MODULES").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/interop-peers/node/node_modules")
        },
        PathBuf::from,
    )
}

fn have_mqttjs() -> bool {
    let found = Command::new("node")
        .args(["-e", "require('mqtt')"])
        .env("NODE_PATH", node_modules())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    require("node with MQTT.js (npm package mqtt)", found)
}

#[tokio::test(flavor = "multi_thread")]
async fn mqttjs_v311_and_v5() {
    if !have_mqttjs() {
        return;
    }
    for version in ["4", "5"] {
        let broker = start(test_config()).await;
        let stdout = Peer::spawn(
            Command::new("node")
                .arg(peers_dir().join("mqttjs.js"))
                .arg(broker.local_addr().port().to_string())
                .arg(version)
                .env("NODE_PATH", node_modules()),
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
