//! `midge ctl` against the real `midge broker` with an `[http]` section: a broker process on
//! free loopback ports, its admin API behind a token file, and `midge sub` and `midge pub`
//! as its MQTT clients; and `midge bench --scrape` reading its /metrics.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{closed_port, midge, run, subscriber, Finished, Running, LIMIT};

const TOKEN: &str = "ctl-test-token-0123456789";

/// A `midge broker` process with MQTT on `mqtt` and HTTP on `http`, in a directory of its
/// own (configuration and token file); killed and removed when dropped.
struct BrokerProcess {
    _broker: Running,
    dir: PathBuf,
    mqtt: SocketAddr,
    http: SocketAddr,
}

impl BrokerProcess {
    fn start(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("midge-ctl-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("token"), format!("{TOKEN}\n")).expect("token file");
        // Bound and released just before the broker binds them: another process may take a
        // port in between, which fails the test loudly rather than wrongly.
        let mqtt = closed_port();
        let http = closed_port();
        let config = format!(
            "[[listener]]\nbind = \"{mqtt}\"\n\n[sys]\ninterval_secs = 0\n\n[http]\nbind = \"{http}\"\ntoken_file = \"token\"\n"
        );
        std::fs::write(dir.join("midge.toml"), config).expect("config");
        let mut command = Command::new(env!("CARGO_BIN_EXE_midge"));
        command
            .arg("broker")
            .arg("--config")
            .arg(dir.join("midge.toml"));
        let broker = Running::spawn(command);
        wait_for_health(http);
        Self {
            _broker: broker,
            dir,
            mqtt,
            http,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    fn token_file(&self) -> PathBuf {
        self.dir.join("token")
    }

    /// `midge ctl --url URL --token-file FILE ARGS...`, run to its end.
    fn ctl(&self, args: &[&str]) -> Finished {
        ctl_with(&self.url(), Some(&self.token_file()), args)
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until `GET /health` answers 200 on `addr`; panics after [`LIMIT`].
fn wait_for_health(addr: SocketAddr) {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let request =
                format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            let mut answer = String::new();
            if stream.write_all(request.as_bytes()).is_ok()
                && stream.read_to_string(&mut answer).is_ok()
                && answer.starts_with("HTTP/1.1 200")
            {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the broker's HTTP endpoint at {addr} did not answer /health"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `midge ctl --url URL [--token-file FILE] ARGS...`, without MIDGE_TOKEN in its
/// environment.
fn ctl_with(url: &str, token_file: Option<&Path>, args: &[&str]) -> Finished {
    let mut command = Command::new(env!("CARGO_BIN_EXE_midge"));
    command
        .env_remove("MIDGE_TOKEN")
        .arg("ctl")
        .args(["--url", url]);
    if let Some(file) = token_file {
        command.arg("--token-file").arg(file);
    }
    command.args(args);
    run(command, b"")
}

#[test]
fn stats_and_token_errors() {
    let broker = BrokerProcess::start("stats");
    let out = broker.ctl(&["stats"]).ok().stdout();
    assert!(out.contains("version"), "{out}");
    assert!(out.contains("LISTENER"), "{out}");
    assert!(out.contains("messages_received"), "{out}");

    let json = broker.ctl(&["stats", "--json"]).ok().stdout();
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert!(v["info"]["version"].is_string(), "{json}");
    assert!(v["stats"]["connections"].is_number(), "{json}");

    // The token from the environment works as the file does.
    let mut command = Command::new(env!("CARGO_BIN_EXE_midge"));
    command
        .env("MIDGE_TOKEN", TOKEN)
        .args(["ctl", "--url", &broker.url(), "stats"]);
    run(command, b"").ok();

    // A wrong token: exit 1 and the server's message.
    let wrong = broker.dir.join("wrong");
    std::fs::write(&wrong, "not-the-token").expect("write");
    let out = ctl_with(&broker.url(), Some(&wrong), &["stats"]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("wrong API token"), "{}", out.stderr);
    assert!(out.stderr.contains("401"), "{}", out.stderr);

    // No token at all: exit 1, and a hint at how to give one.
    let out = ctl_with(&broker.url(), None, &["clients"]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("MIDGE_TOKEN"), "{}", out.stderr);
}

#[test]
fn unreachable_broker_and_bad_arguments() {
    let url = format!("http://{}", closed_port());
    let out = ctl_with(&url, None, &["stats"]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains("cannot reach the broker's HTTP API at")
            && out.stderr.contains("connection refused"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty());

    let out = ctl_with("https://127.0.0.1:1", None, &["stats"]);
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("plain HTTP"), "{}", out.stderr);
    let out = ctl_with(&url, Some(Path::new("/nonexistent/token")), &["stats"]);
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(
        out.stderr.contains("cannot read the token file"),
        "{}",
        out.stderr
    );
    let out = ctl_with(&url, None, &["clients", "--limit", "0"]);
    assert_eq!(out.code(), Some(2), "{out:?}");
    let out = ctl_with(&url, None, &["nosuch"]);
    assert_eq!(out.code(), Some(2), "{out:?}");
}

#[test]
fn clients_lists_a_subscriber_and_kick_disconnects_it() {
    let broker = BrokerProcess::start("clients");
    let mut sub = subscriber(
        broker.mqtt,
        &["-V", "5", "-i", "ctl-sub", "-t", "ctl/#", "-q", "1"],
        1,
    );

    let out = broker.ctl(&["clients"]).ok().stdout();
    let mut lines = out.lines();
    let header = lines.next().expect("header");
    assert!(header.starts_with("CLIENT ID"), "{out}");
    let row = lines
        .find(|l| l.starts_with("ctl-sub "))
        .unwrap_or_else(|| panic!("no ctl-sub row: {out}"));
    assert!(row.contains("5.0"), "{out}");

    let json = broker
        .ctl(&["clients", "--json", "--limit", "10"])
        .ok()
        .stdout();
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(v["total"], 1, "{json}");
    assert_eq!(v["clients"][0]["client_id"], "ctl-sub", "{json}");

    let out = broker.ctl(&["client", "ctl-sub"]).ok().stdout();
    assert!(out.contains("ctl/#"), "{out}");
    let out = broker
        .ctl(&["subscriptions", "--filter", "ctl/#"])
        .ok()
        .stdout();
    assert!(
        out.lines()
            .any(|l| l.starts_with("ctl/#") && l.contains("ctl-sub")),
        "{out}"
    );

    broker.ctl(&["kick", "ctl-sub"]).ok();
    // The subscriber hears it: a DISCONNECT with Administrative action (0x98).
    sub.wait_for("the broker disconnected us", 1);
    let out = broker.ctl(&["client", "nobody"]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("404"), "{}", out.stderr);
    let out = broker.ctl(&["kick", "nobody"]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    drop(sub);
}

#[test]
fn retained_lists_and_deletes() {
    let broker = BrokerProcess::start("retained");
    for (topic, payload) in [
        ("ctl/r/1", "hello"),
        ("ctl/r/2", "world"),
        ("other/x", "zzz"),
    ] {
        run(
            midge(
                "pub",
                broker.mqtt,
                &["-t", topic, "-m", payload, "-r", "-q", "1"],
            ),
            b"",
        )
        .ok();
    }
    let out = broker.ctl(&["retained"]).ok().stdout();
    assert!(out.starts_with("TOPIC"), "{out}");
    for topic in ["ctl/r/1", "ctl/r/2", "other/x"] {
        assert!(out.lines().any(|l| l.starts_with(topic)), "{topic}: {out}");
    }
    assert!(out.contains("hello"), "{out}");

    let out = broker
        .ctl(&["retained", "--filter", "ctl/r/+"])
        .ok()
        .stdout();
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(!out.contains("other/x"), "{out}");

    // One page at a time, following --after.
    let json = broker
        .ctl(&["retained", "--json", "--limit", "1"])
        .ok()
        .stdout();
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(v["topics"].as_array().map(Vec::len), Some(1), "{json}");
    assert_eq!(v["topics"][0]["topic"], "ctl/r/1", "{json}");
    let next = v["next"].as_str().expect("a next page");
    let json = broker
        .ctl(&["retained", "--json", "--limit", "1", "--after", next])
        .ok()
        .stdout();
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(v["topics"][0]["topic"], "ctl/r/2", "{json}");

    broker.ctl(&["delete-retained", "ctl/r/1"]).ok();
    let out = broker.ctl(&["retained"]).ok().stdout();
    assert!(!out.contains("ctl/r/1"), "{out}");
    assert!(out.contains("ctl/r/2"), "{out}");
    let out = broker.ctl(&["delete-retained", "ctl/r/1"]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("404"), "{}", out.stderr);
    let out = broker.ctl(&["retained", "--filter", "a/#/b"]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("400"), "{}", out.stderr);
}

#[test]
fn bench_scrapes_the_brokers_metrics() {
    let broker = BrokerProcess::start("scrape");
    let metrics = format!("http://{}/metrics", broker.http);
    // `midge bench` takes its scenario before the host and port.
    let mut command = Command::new(env!("CARGO_BIN_EXE_midge"));
    command.args([
        "bench",
        "fanin",
        "-h",
        "127.0.0.1",
        "-p",
        &broker.mqtt.port().to_string(),
        "-c",
        "2",
        "-n",
        "2000",
        "-d",
        "10s",
        "--quiet",
        "--json",
        "--scrape",
        &metrics,
        "--scrape-interval-ms",
        "20",
    ]);
    let json = run(command, b"").ok().stdout();
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert!(v["scrapes"]["ok"].as_u64() >= Some(1), "{json}");
    assert_eq!(v["scrapes"]["failed"], 0, "{json}");
    assert!(v["scrapes"]["last_bytes"].as_u64() > Some(100), "{json}");
    assert_eq!(v["lost"], 0, "{json}");
}
