//! Interop: the broker's WebSocket listeners against a real browser. Debian's Chromium, headless
//! and driven by puppeteer-core, runs MQTT.js's browser bundle in a page served from
//! 127.0.0.1 (`tests/peers/browser.js`), so the handshake, the `mqtt` subprotocol, the Origin
//! header and the framing are the browser's own.
//!
//! Without node, MQTT.js, puppeteer-core or `/usr/bin/chromium` (`$MIDGE_CHROMIUM`) the test
//! skips loudly (or fails under `MIDGE_REQUIRE_PEERS=1`; `.ci/run` installs them all).

mod peers;

use std::path::PathBuf;
use std::time::Duration;

use midge_broker::AllowAll;
use midge_codec::{ProtocolVersion, QoS, ReasonCode};
use midge_testkit::certs::TestPki;
use midge_testkit::peers::require;
use midge_testkit::raw;
use peers::{config_from_toml, listener, node, node_requires, start_listeners, toml_path, Peer};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;

/// How long the browser may take to report its next step (Chromium's start included).
const STEP: Duration = Duration::from_secs(30);

fn chromium() -> PathBuf {
    std::env::var_os("MIDGE_CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), PathBuf::from)
}

fn have_browser() -> bool {
    let chromium = chromium();
    require(
        &format!(
            "Chromium ({}) with node, MQTT.js and puppeteer-core",
            chromium.display()
        ),
        chromium.is_file() && node_requires(&["mqtt", "puppeteer-core"]),
    )
}

/// The next JSON line the script prints; panics after [`STEP`] or at its end of output.
async fn next_event(lines: &mut UnboundedReceiver<String>, seen: &mut Vec<String>) -> Value {
    loop {
        let line = tokio::time::timeout(STEP, lines.recv())
            .await
            .unwrap_or_else(|_| panic!("browser.js silent for {STEP:?}; so far: {seen:#?}"))
            .unwrap_or_else(|| panic!("browser.js ended early; it printed: {seen:#?}"));
        seen.push(line.clone());
        if let Ok(event) = serde_json::from_str::<Value>(&line) {
            return event;
        }
    }
}

/// Chromium connects over ws:// and wss:// (the test CA's server certificate, trusted by its
/// public key alone), subscribes and publishes at QoS 1, and gets both its own message and
/// one a TCP client published. A third listener allows only another Origin: the browser's
/// handshake there is refused. Chromium refuses a handshake that does not select the
/// subprotocol `mqtt` it offered.
// Conformance: [MQTT-5:6.0.0-4]
#[tokio::test(flavor = "multi_thread")]
async fn chromium_over_ws_and_wss() {
    if !have_browser() {
        return;
    }
    let pki = TestPki::generate();
    let (cert, key) = (toml_path(&pki.server_cert), toml_path(&pki.server_key));
    let config = config_from_toml(&format!(
        r#"
[[listener]]
bind = "127.0.0.1:0"
protocol = "mqtt"

[[listener]]
bind = "127.0.0.1:0"
protocol = "ws"
path = "/mqtt"

[[listener]]
bind = "127.0.0.1:0"
protocol = "ws"
path = "/mqtt"
[listener.tls]
cert = {cert}
key = {key}

[[listener]]
bind = "127.0.0.1:0"
protocol = "ws"
path = "/mqtt"
allowed_origins = ["https://elsewhere.example"]
"#
    ));
    let broker = start_listeners(config, AllowAll).await;
    let tcp = listener(&broker, 0);
    let urls = [
        format!("ws://127.0.0.1:{}/mqtt", listener(&broker, 1).port()),
        format!("wss://127.0.0.1:{}/mqtt", listener(&broker, 2).port()),
        format!("ws://127.0.0.1:{}/mqtt", listener(&broker, 3).port()),
    ];
    let mut publisher = raw::Peer::connect(tcp, ProtocolVersion::V5, "tcp-publisher").await;
    // A TCP subscriber to everything the browser exchanges, there before the browser starts.
    let mut watcher = raw::Peer::connect(tcp, ProtocolVersion::V5, "tcp-watcher").await;
    watcher.subscribe("browser/#", QoS::AtLeastOnce).await;

    let mut script = Peer::spawn(
        node("browser.js")
            .arg("--server-cert")
            .arg(&pki.server_cert)
            .args(&urls)
            .env("MIDGE_CHROMIUM", chromium()),
    );
    let mut lines = script.stdout_lines();
    let mut seen = Vec::new();
    let mut received = Vec::new();
    let mut errors = Vec::new();
    let ok = loop {
        let event = next_event(&mut lines, &mut seen).await;
        match event["event"].as_str() {
            Some("subscribed") => {
                // "browser/<n>": the page waits for "from-tcp-<n>" there.
                let topic = event["topic"].as_str().expect("topic");
                let n = topic.strip_prefix("browser/").expect("browser/<n>");
                let payload = format!("from-tcp-{n}");
                let code = publisher
                    .publish(topic, &payload, QoS::AtLeastOnce, false)
                    .await;
                assert_eq!(code, ReasonCode::SUCCESS, "the TCP publish to {topic}");
            }
            Some("received") => received.push(event),
            Some("error") => errors.push(event),
            Some("done") => break event["ok"].as_bool(),
            _ => {}
        }
    };
    let (out, _) = script.finish(Duration::from_secs(10)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let context = format!("browser.js printed {seen:#?}\nstderr: {stderr}");

    // The page on the open listeners: its own message and the TCP client's, once each, at
    // QoS 1, on its topic.
    assert_eq!(received.len(), 2, "{context}");
    for (n, url) in urls[..2].iter().enumerate() {
        let event = received
            .iter()
            .find(|e| e["url"] == url.as_str())
            .unwrap_or_else(|| panic!("nothing received over {url}\n{context}"));
        let mut got: Vec<(String, String, u64, bool)> = event["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| {
                (
                    m["topic"].as_str().unwrap_or_default().to_owned(),
                    m["payload"].as_str().unwrap_or_default().to_owned(),
                    m["qos"].as_u64().unwrap_or(99),
                    m["retain"].as_bool().unwrap_or(true),
                )
            })
            .collect();
        got.sort();
        let topic = format!("browser/{n}");
        assert_eq!(
            got,
            [
                (topic.clone(), format!("from-browser-{n}"), 1, false),
                (topic, format!("from-tcp-{n}"), 1, false),
            ],
            "over {url}\n{context}"
        );
    }
    // The listener that allows another Origin only: refused, and the only failure.
    assert_eq!(errors.len(), 1, "{context}");
    assert_eq!(errors[0]["url"], urls[2].as_str(), "{context}");
    assert_eq!(ok, Some(false), "{context}");

    // The TCP subscriber got the browser's messages (and the TCP client's) as well.
    let mut at_tcp = Vec::new();
    for _ in 0..4 {
        let p = watcher.recv_publish().await;
        at_tcp.push(format!(
            "{} {}",
            p.topic.as_str(),
            String::from_utf8_lossy(&p.payload)
        ));
    }
    at_tcp.sort();
    assert_eq!(
        at_tcp,
        [
            "browser/0 from-browser-0",
            "browser/0 from-tcp-0",
            "browser/1 from-browser-1",
            "browser/1 from-tcp-1",
        ],
        "{context}"
    );
    watcher.expect_silence(Duration::from_millis(200)).await;
    broker.shutdown().await;
}
