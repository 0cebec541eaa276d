//! What the binary must not do with hostile or careless input: forge log lines from a client
//! identifier, print a secret from a broken configuration file, go silent on an empty
//! `RUST_LOG`, or lose entries when `midge ctl` pages by the cursor it printed.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Running;
use midge_codec::{ByteStr, Connect, ProtocolVersion, ReasonCode};
use midge_testkit::raw::Peer;
use tokio::net::TcpStream;

const V5: ProtocolVersion = ProtocolVersion::V5;
const SECRET: &str = "s3cretTOKENvalue42";

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("midge-ops-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

async fn stream(port: u16) -> TcpStream {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(addr).await {
            Ok(stream) => return stream,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("broker does not listen: {e}"),
        }
    }
}

/// A refused CONNECT (unknown authentication method) whose client id holds a line break is
/// logged with the id escaped: its second half never becomes a line of its own.
#[tokio::test]
async fn a_refused_client_id_cannot_forge_a_text_log_line() {
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_midge"));
    command
        .args(["broker", "--bind", "127.0.0.1", "-p", &port.to_string()])
        .env_remove("RUST_LOG");
    let mut running = Running::spawn(command);
    let mut peer = Peer::new(stream(port).await, V5).with_wait(Duration::from_secs(5));
    let forged = "x\n2026-01-01T00:00:00.000000Z  INFO midge_broker: FORGED client connected client_id=\"admin\"";
    let mut connect = Connect::new(V5, forged);
    connect.properties.authentication_method = Some(ByteStr::from("no-such-method"));
    let ack = peer.handshake(connect).await;
    assert_ne!(ack.reason_code, ReasonCode::SUCCESS);
    running.wait_for("authentication refused", 1);
    let finished = running.interrupt();
    let bad: Vec<&str> = finished
        .stderr
        .lines()
        .filter(|l| l.starts_with("2026-01-01T00:00:00.000000Z"))
        .collect();
    assert!(bad.is_empty(), "forged lines: {bad:?}\n{}", finished.stderr);
}

/// `RUST_LOG=` (set, empty: a compose file's `RUST_LOG=${RUST_LOG}`) is as if unset: it does
/// not silence the broker, nor override `-v`.
#[tokio::test]
async fn an_empty_rust_log_does_not_silence_the_broker() {
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_midge"));
    command
        .args([
            "broker",
            "--bind",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-v",
        ])
        .env("RUST_LOG", "");
    let running = Running::spawn(command);
    let mut peer = Peer::new(stream(port).await, V5).with_wait(Duration::from_secs(5));
    let ack = peer.handshake(Connect::new(V5, "c")).await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let finished = running.interrupt();
    assert!(
        finished.stderr.contains("accepting") || finished.stderr.contains("listening"),
        "no log at all with RUST_LOG= and -v: {:?}",
        finished.stderr
    );
}

/// A typo on the token's line (unquoted): the start-up error must not print the token.
#[test]
fn a_toml_error_on_the_token_line_does_not_print_the_token() {
    let dir = dir("toml");
    for (name, line) in [
        ("unquoted", format!("token = {SECRET}")),
        ("number", "token = 424242424242".to_owned()),
    ] {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, format!("[http]\nbind = \"127.0.0.1:0\"\n{line}\n"))
            .expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_midge"))
            .args(["broker", "-p", "0", "--config"])
            .arg(&config)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        let value = line.trim_start_matches("token = ");
        assert!(
            !stderr.contains(value),
            "{name}: the token is printed: {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same typo made before a SIGHUP: the error goes to the broker's log (JSON here).
#[tokio::test]
async fn a_sighup_with_a_toml_error_on_the_token_line_does_not_log_the_token() {
    let dir = dir("toml-hup");
    let port = free_port();
    let config = dir.join("midge.toml");
    let good = format!(
        "[[listener]]\nbind = \"127.0.0.1:{port}\"\n[sys]\ninterval_secs = 0\n[http]\nbind = \"127.0.0.1:0\"\ntoken = \"{SECRET}\"\n"
    );
    std::fs::write(&config, &good).expect("write");
    let mut command = Command::new(env!("CARGO_BIN_EXE_midge"));
    command
        .args(["broker", "--log-format", "json", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG");
    let mut running = Running::spawn(command);
    let _ = stream(port).await;
    std::fs::write(&config, good.replace(&format!("\"{SECRET}\""), SECRET)).expect("write");
    let pid = running.child().id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill")
        .success());
    running.wait_for("keeping the configuration in use", 1);
    let finished = running.interrupt();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        !finished.stderr.contains(SECRET),
        "the token is in the log: {}",
        finished.stderr
    );
}

/// `midge ctl subscriptions --limit 1` prints `(more: --after=CURSOR)`; passing that cursor back
/// gives the rest of the listing, whatever characters the keys hold.
#[test]
fn ctl_subscription_paging_by_the_printed_hint_loses_nothing() {
    let dir = dir("ctl-paging");
    std::fs::write(dir.join("token"), "tok-0123456789\n").expect("token");
    let mqtt = common::closed_port();
    let http = common::closed_port();
    std::fs::write(
        dir.join("midge.toml"),
        format!("[[listener]]\nbind = \"{mqtt}\"\n[sys]\ninterval_secs = 0\n[http]\nbind = \"{http}\"\ntoken_file = \"token\"\n"),
    )
    .expect("config");
    let mut command = Command::new(env!("CARGO_BIN_EXE_midge"));
    command
        .arg("broker")
        .arg("--config")
        .arg(dir.join("midge.toml"));
    let _broker = Running::spawn(command);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(http).is_err() {
        assert!(Instant::now() < deadline, "no broker");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _sub = common::subscriber(
        mqtt,
        &[
            "-V", "5", "-i", "s1", "-t", "a/b", "-t", "a/b/c", "-t", "a/c",
        ],
        3,
    );
    let ctl = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_midge"));
        command
            .env_remove("MIDGE_TOKEN")
            .arg("ctl")
            .args(["--url", &format!("http://{http}")])
            .arg("--token-file")
            .arg(dir.join("token"))
            .args(args);
        common::run(command, b"").ok().stdout()
    };
    let first = ctl(&["subscriptions", "--limit", "1"]);
    let hint = first
        .lines()
        .find_map(|l| {
            l.strip_prefix("(more: --after=")
                .and_then(|l| l.strip_suffix(')'))
        })
        .unwrap_or_else(|| panic!("no hint: {first}"))
        .to_owned();
    let rest = ctl(&["subscriptions", "--limit", "10", "--after", &hint]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        rest.lines().any(|l| l.starts_with("a/b/c ")),
        "first page:\n{first}\nwith --after {hint:?}:\n{rest}"
    );
}
