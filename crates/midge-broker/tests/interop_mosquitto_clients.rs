//! Interop: the broker against mosquitto_pub and mosquitto_sub (Debian mosquitto-clients
//! 2.0), at MQTT 3.1 (`-V mqttv31`), 3.1.1 and 5.0 (`-V 5`).
//!
//! Each test starts an in-process broker on 127.0.0.1:0. A subscriber runs as
//! `mosquitto_sub -C <count> -W <timeout>`; the test waits until the broker counts its
//! subscription, publishes with `mosquitto_pub`, and compares what the subscriber printed
//! (`-F` format). Without mosquitto-clients the tests skip loudly (or fail under
//! `MIDGE_REQUIRE_PEERS=1`).

mod peers;

use std::process::Command;
use std::time::Duration;

use midge_broker::BrokerHandle;
use midge_testkit::peers::{installed, require};
use peers::{start, test_config, wait_until, Peer, PEER_TIMEOUT};

const WAIT: Duration = Duration::from_secs(5);

fn have_clients() -> bool {
    require(
        "mosquitto-clients (mosquitto_pub, mosquitto_sub)",
        installed("mosquitto_pub", &["--help"]) && installed("mosquitto_sub", &["--help"]),
    )
}

fn client(program: &str, broker: &BrokerHandle, version: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(["-h", "127.0.0.1", "-p"])
        .arg(broker.local_addr().port().to_string())
        .args(["-V", version]);
    cmd
}

/// Starts `mosquitto_sub` and waits until the broker holds `subscriptions` subscriptions.
async fn subscriber(
    broker: &BrokerHandle,
    version: &str,
    args: &[&str],
    subscriptions: usize,
) -> Peer {
    let sub = Peer::spawn(client("mosquitto_sub", broker, version).args(args));
    wait_until("mosquitto_sub to subscribe", WAIT, || {
        broker.stats().subscriptions >= subscriptions
    })
    .await;
    sub
}

/// Runs `mosquitto_pub` to completion.
async fn publish(broker: &BrokerHandle, version: &str, args: &[&str]) {
    Peer::spawn(client("mosquitto_pub", broker, version).args(args))
        .success(PEER_TIMEOUT)
        .await;
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

// Conformance: [MQTT-3.1.1:7.0.0-2]
#[tokio::test(flavor = "multi_thread")]
async fn qos_0_1_2_at_every_version() {
    if !have_clients() {
        return;
    }
    for version in ["mqttv31", "mqttv311", "5"] {
        let broker = start(test_config()).await;
        let fmt = ["-F", "%t %q %p", "-C", "3", "-W", "10", "-t", "interop/qos"];
        let at2 = subscriber(&broker, version, &[&fmt[..], &["-q", "2"]].concat(), 1).await;
        // A QoS 1 subscription downgrades QoS 2 messages [MQTT-3.8.4-6].
        let at1 = subscriber(&broker, version, &[&fmt[..], &["-q", "1"]].concat(), 2).await;
        for qos in ["0", "1", "2"] {
            let payload = format!("m{qos}");
            publish(
                &broker,
                version,
                &["-t", "interop/qos", "-q", qos, "-m", &payload],
            )
            .await;
        }
        let out2 = at2.success(PEER_TIMEOUT).await;
        let out1 = at1.success(PEER_TIMEOUT).await;
        assert_eq!(
            lines(&out2),
            ["interop/qos 0 m0", "interop/qos 1 m1", "interop/qos 2 m2"],
            "{version}"
        );
        assert_eq!(
            lines(&out1),
            ["interop/qos 0 m0", "interop/qos 1 m1", "interop/qos 1 m2"],
            "{version}"
        );
        broker.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retained_set_and_deleted() {
    if !have_clients() {
        return;
    }
    for version in ["mqttv31", "mqttv311", "5"] {
        let broker = start(test_config()).await;
        let topic = ["-t", "interop/retained"];
        publish(
            &broker,
            version,
            &[&topic[..], &["-r", "-q", "1", "-m", "kept"]].concat(),
        )
        .await;
        assert_eq!(broker.stats().retained_messages, 1, "{version}");
        // A new subscriber gets it with RETAIN set.
        let sub = Peer::spawn(
            client("mosquitto_sub", &broker, version)
                .args(topic)
                .args(["-C", "1", "-W", "5", "-F", "%r %p"]),
        );
        assert_eq!(
            lines(&sub.success(PEER_TIMEOUT).await),
            ["1 kept"],
            "{version}"
        );
        // `-r -n`: an empty retained message deletes it.
        publish(&broker, version, &[&topic[..], &["-r", "-n"]].concat()).await;
        wait_until("the retained message to go", WAIT, || {
            broker.stats().retained_messages == 0
        })
        .await;
        let sub = Peer::spawn(
            client("mosquitto_sub", &broker, version)
                .args(topic)
                .args(["-C", "1", "-W", "1", "-F", "%r %p"]),
        );
        let (out, _) = sub.finish(PEER_TIMEOUT).await;
        assert_eq!(String::from_utf8_lossy(&out.stdout), "", "{version}");
        broker.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn v5_properties_pass_through() {
    if !have_clients() {
        return;
    }
    let broker = start(test_config()).await;
    let topic = ["-t", "interop/props"];
    let v5 = subscriber(
        &broker,
        "5",
        &[&topic[..], &["-C", "1", "-W", "10", "-F", "%P|%C|%R|%F|%p"]].concat(),
        1,
    )
    .await;
    let v5_expiry = subscriber(
        &broker,
        "5",
        &[&topic[..], &["-C", "1", "-W", "10", "-F", "%E"]].concat(),
        2,
    )
    .await;
    // A 3.1.1 subscriber gets the same message, without properties.
    let v311 = subscriber(
        &broker,
        "mqttv311",
        &[&topic[..], &["-C", "1", "-W", "10", "-F", "%p"]].concat(),
        3,
    )
    .await;
    publish(
        &broker,
        "5",
        &[
            &topic[..],
            &["-q", "1", "-m", "with-props"],
            &["-D", "publish", "user-property", "k1", "v1"],
            &["-D", "publish", "user-property", "k2", "v2"],
            &["-D", "publish", "user-property", "k1", "again"],
            &["-D", "publish", "content-type", "text/plain"],
            &["-D", "publish", "response-topic", "interop/reply"],
            &["-D", "publish", "payload-format-indicator", "1"],
            &["-D", "publish", "message-expiry-interval", "3600"],
        ]
        .concat(),
    )
    .await;
    let out = v5.success(PEER_TIMEOUT).await;
    let fields: Vec<&str> = out.trim_end().split('|').collect();
    let [user, content_type, response, format, payload] = fields[..] else {
        panic!("unexpected output {out:?}");
    };
    // User properties keep their order and duplicates [MQTT-3.3.2-18].
    assert_eq!(user, "k1:v1 k2:v2 k1:again", "{out}");
    assert_eq!(content_type, "text/plain", "{out}");
    assert_eq!(response, "interop/reply", "{out}");
    assert_eq!(format, "1", "{out}");
    assert_eq!(payload, "with-props", "{out}");
    let expiry: u32 = v5_expiry
        .success(PEER_TIMEOUT)
        .await
        .trim()
        .parse()
        .expect("a Message Expiry Interval");
    assert!((3590..=3600).contains(&expiry), "{expiry}");
    assert_eq!(v311.success(PEER_TIMEOUT).await.trim_end(), "with-props");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn will_published_when_client_is_killed() {
    if !have_clients() {
        return;
    }
    for version in ["mqttv31", "mqttv311", "5"] {
        let broker = start(test_config()).await;
        let watcher = subscriber(
            &broker,
            version,
            &[
                "-t",
                "interop/will/#",
                "-q",
                "1",
                "-C",
                "1",
                "-W",
                "10",
                "-F",
                "%t %q %p",
            ],
            1,
        )
        .await;
        // A client that disconnects normally: its will is discarded.
        publish(
            &broker,
            version,
            &[
                "-t",
                "interop/other",
                "-m",
                "x",
                "--will-topic",
                "interop/will/polite",
                "--will-payload",
                "polite",
            ],
        )
        .await;
        // A client killed with SIGKILL: no DISCONNECT, so its will is published.
        let mut victim = subscriber(
            &broker,
            version,
            &[
                "-t",
                "interop/victim",
                "--will-topic",
                "interop/will/crash",
                "--will-payload",
                "gone",
                "--will-qos",
                "1",
            ],
            2,
        )
        .await;
        victim.kill();
        let out = watcher.success(PEER_TIMEOUT).await;
        assert_eq!(lines(&out), ["interop/will/crash 1 gone"], "{version}");
        broker.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn persistent_session_gets_offline_message() {
    if !have_clients() {
        return;
    }
    for version in ["mqttv311", "5"] {
        let broker = start(test_config()).await;
        let id = format!("interop-persist-{version}");
        // 5.0: a session survives the connection only with a Session Expiry Interval.
        let expiry: &[&str] = if version == "5" { &["-x", "60"] } else { &[] };
        let session = [
            &["-c", "-i", &id, "-q", "1", "-t", "interop/persist"][..],
            expiry,
        ]
        .concat();
        // Subscribe, then leave (-E: exit once subscribed).
        Peer::spawn(
            client("mosquitto_sub", &broker, version)
                .args(&session)
                .arg("-E"),
        )
        .success(PEER_TIMEOUT)
        .await;
        wait_until("the session to go offline", WAIT, || {
            broker.stats().clients_connected == 0
        })
        .await;
        publish(
            &broker,
            version,
            &["-t", "interop/persist", "-q", "1", "-m", "offline"],
        )
        .await;
        let back = Peer::spawn(
            client("mosquitto_sub", &broker, version)
                .args(&session)
                .args(["-C", "1", "-W", "5", "-F", "%t %q %p"]),
        );
        assert_eq!(
            lines(&back.success(PEER_TIMEOUT).await),
            ["interop/persist 1 offline"],
            "{version}"
        );
        broker.shutdown().await;
    }
}
