//! Interop: the broker's authentication (password file, SCRAM-SHA-256 enhanced authentication,
//! ACL) against real clients: mosquitto_pub and mosquitto_sub (Debian mosquitto-clients 2.0),
//! a password file written by Debian's `mosquitto_passwd`, MQTT.js 5.x driving SCRAM-SHA-256
//! through its AUTH support (`tests/peers/mqttjs_scram.js`), and paho-mqtt 2.x
//! (`tests/peers/paho_auth.py`).
//!
//! Each test starts an in-process broker on 127.0.0.1:0 with a password file in a fresh
//! temporary directory. A missing peer skips its test loudly (or fails it under
//! `MIDGE_REQUIRE_PEERS=1`).

mod common;
mod peers;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{password_file, TempDir};
use midge_auth::passwd::Scheme;
use midge_broker::{BrokerConfig, BrokerHandle};
use midge_testkit::peers::{installed, require, succeeds};
use peers::{have_mqttjs, node, peers_dir, start, test_config, wait_until, Peer, PEER_TIMEOUT};

const WAIT: Duration = Duration::from_secs(5);

fn have_clients() -> bool {
    require(
        "mosquitto-clients (mosquitto_pub, mosquitto_sub)",
        installed("mosquitto_pub", &["--help"]) && installed("mosquitto_sub", &["--help"]),
    )
}

fn have_mosquitto_passwd() -> bool {
    require(
        "mosquitto_passwd (Debian package mosquitto)",
        installed("/usr/bin/mosquitto_passwd", &["--help"]),
    )
}

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

fn config_with(password_file: &Path) -> BrokerConfig {
    let mut config = test_config();
    config.auth.password_file = Some(password_file.to_owned());
    config
}

fn mosquitto(program: &str, broker: &BrokerHandle, version: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(["-h", "127.0.0.1", "-p"])
        .arg(broker.local_addr().port().to_string())
        .args(["-V", version]);
    cmd
}

/// Runs `mosquitto_pub` with `args` to completion: its exit code and what it printed.
async fn mosquitto_pub(broker: &BrokerHandle, version: &str, args: &[&str]) -> (i32, String) {
    let (out, exited) = Peer::spawn(mosquitto("mosquitto_pub", broker, version).args(args))
        .finish(PEER_TIMEOUT)
        .await;
    assert!(exited, "mosquitto_pub {args:?} did not finish");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), printed)
}

/// A message goes from mosquitto_pub to mosquitto_sub, both with `credentials`.
async fn message_flows(broker: &BrokerHandle, version: &str, credentials: &[&str], payload: &str) {
    let before = broker.stats().subscriptions;
    let sub = Peer::spawn(
        mosquitto("mosquitto_sub", broker, version)
            .args(credentials)
            .args(["-t", "interop/auth", "-q", "1", "-C", "1", "-W", "10"]),
    );
    wait_until("mosquitto_sub to subscribe", WAIT, || {
        broker.stats().subscriptions > before
    })
    .await;
    let (code, printed) = mosquitto_pub(
        broker,
        version,
        &[
            credentials,
            &["-t", "interop/auth", "-q", "1", "-m", payload],
        ]
        .concat(),
    )
    .await;
    assert_eq!(code, 0, "mosquitto_pub -V {version}: {printed}");
    let out = sub.success(PEER_TIMEOUT).await;
    assert_eq!(out.trim_end(), payload, "-V {version}");
    // The subscriber's session ends with its connection, a moment after it exits: the next
    // flow counts from a broker without it.
    wait_until("mosquitto_sub's session to end", WAIT, || {
        broker.stats().subscriptions == before
    })
    .await;
}

/// mosquitto_pub with `credentials` is refused: it exits with `exit` (the CONNACK's return or
/// reason code), saying `reason`.
async fn refused(
    broker: &BrokerHandle,
    version: &str,
    credentials: &[&str],
    exit: i32,
    reason: &str,
) {
    let (code, printed) = mosquitto_pub(
        broker,
        version,
        &[credentials, &["-t", "interop/auth", "-m", "never"]].concat(),
    )
    .await;
    assert_eq!(code, exit, "-V {version} {credentials:?}: {printed}");
    assert!(
        printed.to_lowercase().contains(reason),
        "-V {version} {credentials:?}: expected {reason:?} in {printed:?}"
    );
    eprintln!("mosquitto_pub -V {version} {credentials:?}: exit {code}: {printed}");
}

/// mosquitto_pub and mosquitto_sub with `-u`/`-P` at 3.1.1 and 5.0: the right password gets a
/// message through; a wrong one, an unknown user, and no credentials (with a password file
/// and `allow_anonymous` unset) are refused with the reason the broker gave, as mosquitto's
/// clients print it (3.1.1 return codes 4 and 5; 5.0 reason codes 0x86 and 0x87).
#[tokio::test(flavor = "multi_thread")]
async fn mosquitto_clients_with_right_and_wrong_passwords() {
    // [MQTT-5:3.1.4-2] [MQTT-3.1.1:3.1.4-4]
    if !have_clients() {
        return;
    }
    let dir = TempDir::new("mosquitto-clients");
    let file = password_file(
        &dir,
        &[
            ("alice", "alice's secret", Scheme::Argon2id),
            // mosquitto's `$7$`, with fewer iterations than the default: PBKDF2 is slow in an
            // unoptimized test build.
            (
                "bob",
                "bob's secret",
                Scheme::Pbkdf2Sha512 { iterations: 1000 },
            ),
        ],
    );
    let broker = start(config_with(&file)).await;
    for version in ["mqttv311", "mqttv5"] {
        message_flows(
            &broker,
            version,
            &["-u", "alice", "-P", "alice's secret"],
            &format!("alice {version}"),
        )
        .await;
        message_flows(
            &broker,
            version,
            &["-u", "bob", "-P", "bob's secret"],
            &format!("bob {version}"),
        )
        .await;
        // mosquitto_pub exits with the CONNACK's code: 3.1.1's return codes 4 and 5, 5.0's
        // reason codes 0x86 and 0x87.
        let (bad, not_authorized) = if version == "mqttv5" {
            (0x86, 0x87)
        } else {
            (4, 5)
        };
        let reason = "bad user name or password";
        let wrong = ["-u", "alice", "-P", "bob's secret"];
        refused(&broker, version, &wrong, bad, reason).await;
        let unknown = ["-u", "mallory", "-P", "x"];
        refused(&broker, version, &unknown, bad, reason).await;
        refused(&broker, version, &["-u", "alice"], bad, reason).await;
        refused(&broker, version, &[], not_authorized, "not authori").await;
    }
    // Every refusal above is counted, and none of them reached max_failed_attempts (10).
    assert_eq!(broker.stats().auth_failures, 8);
    // A wrong password for mosquitto_sub: it never subscribes, and exits with the reason.
    let started = std::time::Instant::now();
    let (out, exited) = Peer::spawn(mosquitto("mosquitto_sub", &broker, "mqttv5").args([
        "-u",
        "alice",
        "-P",
        "wrong",
        "-t",
        "interop/#",
        "-W",
        "5",
    ]))
    .finish(PEER_TIMEOUT)
    .await;
    assert!(exited, "mosquitto_sub with a wrong password did not exit");
    eprintln!("mosquitto_sub refused after {:?}", started.elapsed());
    let printed = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(!out.status.success(), "{printed}");
    assert!(printed.contains("bad user name or password"), "{printed}");
    assert_eq!(broker.stats().subscriptions, 0);
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A password file written by Debian's `mosquitto_passwd` (`-c -b`: its default
/// sha512-pbkdf2 `$7$` entries; and `-H sha512`, mosquitto 1.6's `$6$`) is read by the broker as
/// it is: mosquitto_pub/sub and paho connect with those passwords, and a wrong one is refused
/// with 4 (3.1.1) and 0x86 (5.0).
#[tokio::test(flavor = "multi_thread")]
async fn a_mosquitto_passwd_file_is_accepted_as_it_is() {
    if !have_mosquitto_passwd() || !have_clients() {
        return;
    }
    let dir = TempDir::new("mosquitto-passwd");
    let file = dir.join("mosquitto.passwd");
    let passwd = |args: &[&str]| {
        let status = Command::new("/usr/bin/mosquitto_passwd")
            .args(args)
            .status()
            .expect("mosquitto_passwd runs");
        assert!(status.success(), "mosquitto_passwd {args:?}: {status}");
    };
    let path = file.to_str().expect("a UTF-8 path");
    passwd(&["-c", "-b", path, "alice", "from mosquitto_passwd"]);
    passwd(&["-H", "sha512", "-b", path, "bob", "old style"]);
    let text = std::fs::read_to_string(&file).expect("the file mosquitto_passwd wrote");
    assert!(text.starts_with("alice:$7$"), "{text}");
    assert!(text.contains("\nbob:$6$"), "{text}");

    let broker = start(config_with(&file)).await;
    for version in ["mqttv311", "mqttv5"] {
        message_flows(
            &broker,
            version,
            &["-u", "alice", "-P", "from mosquitto_passwd"],
            &format!("alice {version}"),
        )
        .await;
        message_flows(
            &broker,
            version,
            &["-u", "bob", "-P", "old style"],
            &format!("bob {version}"),
        )
        .await;
        let bad = if version == "mqttv5" { 0x86 } else { 4 };
        let wrong = ["-u", "alice", "-P", "old style"];
        refused(&broker, version, &wrong, bad, "bad user name or password").await;
    }
    if have_paho() {
        let port = broker.local_addr().port().to_string();
        for version in ["311", "5"] {
            let ok = paho(
                &port,
                &[version, "connect", "alice", "from mosquitto_passwd"],
            )
            .await;
            assert!(
                ok.contains("\"failure\": false") && ok.contains("\"round_trip\": true"),
                "paho v{version}: {ok}"
            );
            let bad = paho(&port, &[version, "connect", "bob", "wrong"]).await;
            // paho reports 3.1.1's return code 4 as the reason code of the same meaning.
            assert!(
                bad.contains("\"rc\": 134") && bad.contains("\"failure\": true"),
                "paho v{version}: {bad}"
            );
        }
    }
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs `tests/peers/paho_auth.py PORT ARGS…` and returns its JSON line, which must say ok.
async fn paho(port: &str, args: &[&str]) -> String {
    let stdout = Peer::spawn(
        Command::new("python3")
            .arg(peers_dir().join("paho_auth.py"))
            .arg(port)
            .args(args),
    )
    .success(PEER_TIMEOUT)
    .await;
    let line = stdout.lines().last().unwrap_or_default().to_owned();
    assert!(
        line.contains("\"ok\": true"),
        "paho_auth.py {args:?}: {stdout}"
    );
    line
}

/// Runs `tests/peers/mqttjs_scram.js PORT USER PASSWORD EXPECT` and returns its JSON line,
/// which must say ok.
async fn mqttjs_scram(broker: &BrokerHandle, user: &str, password: &str, expect: &str) -> String {
    let stdout = Peer::spawn(
        node("mqttjs_scram.js")
            .arg(broker.local_addr().port().to_string())
            .args([user, password, expect]),
    )
    .success(PEER_TIMEOUT)
    .await;
    let line = stdout.lines().last().unwrap_or_default().to_owned();
    assert!(
        line.contains("\"ok\":true"),
        "MQTT.js SCRAM {user} {expect}: {stdout}"
    );
    line
}

/// MQTT.js drives SCRAM-SHA-256 enhanced authentication with a SCRAM client written in the
/// peer script with node's crypto: CONNECT with Authentication Method `SCRAM-SHA-256` and the
/// client-first message, AUTH 0x18 server-first from the broker, AUTH 0x18 client-final from
/// `handleAuth`, then CONNACK 0x00 with the server-final message, whose signature the script
/// verifies. The right password connects and a message makes the round trip; a wrong one,
/// an unknown user, and a user whose entry is not a SCRAM one, are refused with 0x86 after the
/// same one round trip.
#[tokio::test(flavor = "multi_thread")]
async fn mqttjs_scram_sha_256() {
    // [MQTT-5:4.12.0-2] [MQTT-5:4.12.0-4] [MQTT-5:4.12.0-5]
    if !have_mqttjs() {
        return;
    }
    let dir = TempDir::new("mqttjs-scram");
    let file = password_file(
        &dir,
        &[
            ("carol", "carol's pencil", Scheme::SCRAM_DEFAULT),
            ("dave", "dave's pencil", Scheme::Scram { iterations: 8192 }),
            ("erin", "erin's pencil", Scheme::Argon2id),
        ],
    );
    let broker = start(config_with(&file)).await;

    let ok = mqttjs_scram(&broker, "carol", "carol's pencil", "accept").await;
    for part in [
        "\"connected\":true",
        "\"server_signature\":\"verified\"",
        "\"auth_steps\":1",
        "\"iterations\":4096",
        "\"round_trip\":true",
    ] {
        assert!(ok.contains(part), "{part} in {ok}");
    }
    let ok = mqttjs_scram(&broker, "dave", "dave's pencil", "accept").await;
    assert!(ok.contains("\"iterations\":8192"), "{ok}");
    eprintln!("MQTT.js SCRAM-SHA-256: {ok}");
    assert_eq!(broker.stats().auth_failures, 0);

    for (user, password) in [
        ("carol", "dave's pencil"),
        ("nobody", "carol's pencil"),
        // An argon2id entry has no SCRAM credentials: refused like a wrong password.
        ("erin", "erin's pencil"),
    ] {
        let refused = mqttjs_scram(&broker, user, password, "refuse").await;
        assert!(
            refused.contains("\"code\":134") && refused.contains("\"auth_steps\":1"),
            "{user}: {refused}"
        );
        eprintln!("MQTT.js SCRAM-SHA-256 {user}: {refused}");
    }
    assert_eq!(broker.stats().auth_failures, 3);
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// paho subscribes where the ACL file lets it read and where it does not: the denied
/// subscription gets 0x87 Not authorized at 5.0 and 0x80 Failure at 3.1.1, and the other one
/// is granted.
#[tokio::test(flavor = "multi_thread")]
async fn paho_denied_subscription_gets_the_code_of_its_version() {
    // [MQTT-5:3.9.3-2] [MQTT-3.1.1:3.9.3-2]
    if !have_paho() {
        return;
    }
    let dir = TempDir::new("paho-acl");
    let file = password_file(&dir, &[("alice", "alice's secret", Scheme::Argon2id)]);
    let acl = dir.join("acl");
    std::fs::write(&acl, "user alice\ntopic read allowed/#\n").expect("writing the ACL file");
    let mut config = config_with(&file);
    config.auth.acl_file = Some(acl);
    let broker = start(config).await;
    let port = broker.local_addr().port().to_string();
    for (version, denied) in [("5", "[135, \"Not authorized\"]"), ("311", "[128, ")] {
        let line = paho(
            &port,
            &[
                version,
                "subscribe",
                "alice",
                "alice's secret",
                "allowed/x",
                "denied/x",
            ],
        )
        .await;
        let codes = line
            .split("\"codes\": ")
            .nth(1)
            .unwrap_or_else(|| panic!("no codes in {line}"));
        assert!(
            codes.starts_with("[[1, "),
            "allowed/x not granted QoS 1: {line}"
        );
        assert!(
            codes.contains(&format!("], {denied}")),
            "v{version}: denied/x should get {denied}: {line}"
        );
        eprintln!("paho v{version} ACL: {line}");
    }
    assert_eq!(broker.stats().subscriptions_denied, 2);
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
