//! The dashboard (`assets/dashboard.html`) in a real browser: a broker with live MQTT traffic,
//! its HTTP endpoint from [`midge_http::serve`], and Debian's Chromium, headless and driven by
//! puppeteer-core (`tests/dashboard_browser.js`), which opens the page, enters the token, reads
//! the charts and the tables, and clicks Kick and Delete as a person would.
//!
//! Screenshots (`login-refused.png`, `before-kick.png`, `after-kick.png`) go to
//! `dashboard-screenshots/` in the target directory.
//!
//! Without node, puppeteer-core or `/usr/bin/chromium` (`$MIDGE_CHROMIUM`) the test skips
//! loudly, or fails under `MIDGE_REQUIRE_PEERS=1` (`.ci/run` installs them all).

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use midge_broker::{Broker, BrokerConfig, BrokerHandle, Secret};
use midge_client::{
    Client, CloseReason, ConnectionEvent, PublishOptions, QoS, ReasonCode, SubscribeOptions,
};
use midge_testkit::peers::require;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, watch};

/// The admin API token the broker is configured with.
const TOKEN: &str = "dashboard-test-token-7f3c";
/// The client the page kicks: its id holds markup, quotes, a slash and spaces, which the
/// page must show as text and put in the kick URL encoded.
const KICKED: &str = "dash/sub <b>kick me</b> & \"quoted\"";
/// The client that keeps the traffic flowing.
const PUBLISHER: &str = "dash-publisher";
/// Where the traffic goes.
const TRAFFIC: &str = "dash/traffic";
/// A retained message the page lists and deletes; its topic and payload hold markup too.
const RETAINED: &str = "dash/retained/<i>ünïcode</i>";
/// How long the browser may take to report its next step (Chromium's start included).
const STEP: Duration = Duration::from_secs(40);

fn chromium() -> PathBuf {
    std::env::var_os("MIDGE_CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), PathBuf::from)
}

/// Where puppeteer-core is looked up: `$MIDGE_NODE_MODULES`, else
/// `target/interop-peers/node/node_modules`, where `.ci/run` installs it.
fn node_modules() -> PathBuf {
    std::env::var_os("MIDGE_NODE_MODULES").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/interop-peers/node/node_modules")
        },
        PathBuf::from,
    )
}

/// True if node can `require('puppeteer-core')` from [`node_modules`].
fn have_puppeteer() -> bool {
    Command::new("node")
        .args(["-e", "require('puppeteer-core')"])
        .env("NODE_PATH", node_modules())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True if the browser is there; otherwise a loud skip (a failure under `MIDGE_REQUIRE_PEERS=1`).
fn have_browser() -> bool {
    let chromium = chromium();
    require(
        &format!(
            "Chromium ({}) with node and puppeteer-core",
            chromium.display()
        ),
        chromium.is_file() && have_puppeteer(),
    )
}

/// `dashboard-screenshots/` in the target directory this test was built in.
fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    // <target>/<profile>/deps/<test binary>
    exe.ancestors()
        .nth(3)
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
        .join("dashboard-screenshots")
}

/// The driver script: killed on drop, its stdout as lines, its stderr kept for failures.
struct Driver {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Driver {
    fn spawn(cmd: &mut Command) -> (Self, mpsc::UnboundedReceiver<String>) {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock()
                    .expect("stderr buffer")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        (Self { child, stderr }, rx)
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr buffer").clone()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The next JSON line the script prints; panics after [`STEP`] or at its end of output.
async fn next_event(
    lines: &mut mpsc::UnboundedReceiver<String>,
    seen: &mut Vec<String>,
    driver: &Driver,
) -> Value {
    loop {
        let line = tokio::time::timeout(STEP, lines.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "dashboard_browser.js silent for {STEP:?}; so far: {seen:#?}\nstderr: {}",
                    driver.stderr()
                )
            })
            .unwrap_or_else(|| {
                panic!(
                    "dashboard_browser.js ended early; it printed: {seen:#?}\nstderr: {}",
                    driver.stderr()
                )
            });
        seen.push(line.clone());
        if let Ok(event) = serde_json::from_str::<Value>(&line) {
            return event;
        }
    }
}

/// The first `Disconnected` among `events`, within [`STEP`].
async fn disconnected(events: &mut broadcast::Receiver<ConnectionEvent>) -> CloseReason {
    tokio::time::timeout(STEP, async {
        loop {
            match events.recv().await {
                Ok(ConnectionEvent::Disconnected { reason }) => return reason,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    panic!("the kicked client's events ended without a Disconnected")
                }
            }
        }
    })
    .await
    .expect("the kicked client's connection ends")
}

fn config() -> BrokerConfig {
    let mut config = BrokerConfig::default();
    // No $SYS: it would add retained messages and traffic of its own.
    config.sys.interval_secs = 0;
    config.limits.close_timeout_ms = 500;
    config.http.bind = Some("127.0.0.1:0".parse().expect("address"));
    config.http.token = Some(Secret::new(TOKEN));
    config
}

async fn start_broker(config: &BrokerConfig) -> BrokerHandle {
    Broker::builder()
        .config(config.clone())
        .bind("127.0.0.1:0".parse().expect("address"))
        .start()
        .await
        .expect("broker starts")
}

/// With messages flowing (10 a second from one client to another), the page shows non-zero
/// rates, lists the subscriber by its client id (as text), and its Kick button ends that
/// client's connection (DISCONNECT 0x98 Administrative action) and takes the row away. The
/// retained message is listed and its Delete button deletes it. A wrong token first gets the
/// 401 message.
#[tokio::test(flavor = "multi_thread")]
async fn dashboard_in_chromium() {
    if !have_browser() {
        return;
    }
    let config = config();
    let broker = start_broker(&config).await;
    let http = midge_http::serve(broker.admin(), &config.http).expect("the HTTP endpoint starts");
    let url = format!("http://{}/", http.local_addr());
    let mqtt = broker.local_addr();

    // The subscriber the page kicks: no reconnection, so that its row stays gone.
    let subscriber = Client::builder(mqtt.ip().to_string(), mqtt.port())
        .client_id(KICKED)
        .keep_alive(30)
        .reconnect(None)
        .connect()
        .await
        .expect("the subscriber connects");
    let mut events = subscriber.events();
    let (code, mut stream) = subscriber
        .subscribe(TRAFFIC, SubscribeOptions::with_qos(QoS::AtLeastOnce))
        .await
        .expect("subscribes");
    assert!(code.is_success(), "SUBACK {code}");
    let received = tokio::spawn(async move {
        let mut n = 0_u64;
        while stream.recv().await.is_some() {
            n += 1;
        }
        n
    });

    // The publisher: a retained message, then 10 messages a second until told to stop.
    let publisher = Client::builder(mqtt.ip().to_string(), mqtt.port())
        .client_id(PUBLISHER)
        .connect()
        .await
        .expect("the publisher connects");
    let code = publisher
        .publish(
            RETAINED,
            "<script>alert('retained')</script>",
            PublishOptions::with_qos(QoS::AtLeastOnce).retain(true),
        )
        .await
        .expect("the retained message is published");
    assert!(code.is_success(), "PUBACK {code}");
    let (stop, mut stopped) = watch::channel(false);
    let traffic = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut n = 0_u64;
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                _ = tick.tick() => {}
            }
            let payload = format!("message {n}");
            publisher
                .publish(TRAFFIC, payload, PublishOptions::with_qos(QoS::AtLeastOnce))
                .await
                .expect("the publisher's messages are acknowledged");
            n += 1;
        }
        publisher.disconnect(ReasonCode::SUCCESS).await;
        n
    });

    let shots = screenshot_dir();
    let (driver, mut lines) = Driver::spawn(
        Command::new("node")
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard_browser.js"))
            .args([url.as_str(), TOKEN, KICKED, RETAINED])
            .arg(&shots)
            .env("NODE_PATH", node_modules())
            .env("MIDGE_CHROMIUM", chromium()),
    );
    let mut seen = Vec::new();
    let mut rates = None;
    let mut listed = None;
    let mut kick_reason = None;
    let mut row_gone = false;
    let mut retained_listed = None;
    let mut retained_deleted = false;
    let mut errors = Vec::new();
    let ok = loop {
        let event = next_event(&mut lines, &mut seen, &driver).await;
        match event["event"].as_str() {
            Some("rates") => rates = Some(event),
            Some("listed") => listed = Some(event),
            Some("kicked") => {
                // The connection ends on the MQTT side, told why.
                kick_reason = Some(disconnected(&mut events).await);
            }
            Some("row-gone") => row_gone = true,
            Some("retained-listed") => retained_listed = Some(event),
            Some("retained-deleted") => retained_deleted = true,
            Some("error") => errors.push(event),
            Some("done") => break event["ok"].as_bool(),
            _ => {}
        }
    };
    let context = format!(
        "dashboard_browser.js printed {seen:#?}\nstderr: {}",
        driver.stderr()
    );
    drop(driver);
    eprintln!("dashboard screenshots: {}", shots.display());
    assert!(errors.is_empty(), "{context}");
    assert_eq!(ok, Some(true), "{context}");

    // The charts: messages and bytes, in and out, all moving.
    let rates = rates.unwrap_or_else(|| panic!("no rates\n{context}"));
    for key in ["in", "out", "bytes_in", "bytes_out"] {
        let rate = rates[key].as_f64().unwrap_or_default();
        assert!(rate > 0.0, "rate {key} is {rate}\n{context}");
    }
    let points = rates["points"].as_u64().unwrap_or_default();
    assert!(
        points >= 2,
        "the charts' lines have {points} points\n{context}"
    );
    // The clients table: both clients, by their ids.
    let listed = listed.unwrap_or_else(|| panic!("no clients listed\n{context}"));
    let ids: Vec<&str> = listed["client_ids"]
        .as_array()
        .expect("client_ids")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(ids.contains(&KICKED), "{ids:?}\n{context}");
    assert!(ids.contains(&PUBLISHER), "{ids:?}\n{context}");

    // Kick: the client's connection ended with DISCONNECT 0x98, for good (no reconnection),
    // its stream ended, and its row left the table.
    assert_eq!(
        kick_reason,
        Some(CloseReason::DisconnectedByBroker(
            ReasonCode::ADMINISTRATIVE_ACTION
        )),
        "{context}"
    );
    assert!(row_gone, "{context}");
    let got = tokio::time::timeout(STEP, received)
        .await
        .expect("the kicked client's stream ends")
        .expect("the receiving task");
    assert!(got > 0, "the subscriber received nothing before the kick");
    assert!(broker.admin().client(KICKED).is_none(), "{context}");
    assert!(broker.admin().client(PUBLISHER).is_some(), "{context}");

    // The retained message: listed, then deleted through the page.
    let retained_listed =
        retained_listed.unwrap_or_else(|| panic!("no retained topics listed\n{context}"));
    assert!(
        retained_listed["topics"]
            .as_array()
            .expect("topics")
            .iter()
            .any(|t| t == RETAINED),
        "{context}"
    );
    assert!(retained_deleted, "{context}");
    let left = broker
        .admin()
        .retained(None, None, 100)
        .expect("the retained messages");
    assert!(
        left.topics.iter().all(|r| r.topic != RETAINED),
        "{:?}",
        left.topics
    );

    let _ = stop.send(true);
    let sent = traffic.await.expect("the publishing task");
    assert!(sent > 0);
    http.shutdown().await;
    broker.shutdown().await;
}
