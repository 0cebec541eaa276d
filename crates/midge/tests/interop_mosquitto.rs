//! `midge pub` → `mosquitto_sub` through a real mosquitto broker (started by the test on a
//! free 127.0.0.1 port), `mosquitto_pub` → `midge sub` through the midge broker, and
//! `midge rr` beside `mosquitto_rr` through both brokers.
//! Skipped loudly when mosquitto or mosquitto-clients is missing; a failure under
//! `MIDGE_REQUIRE_PEERS=1` (set by `.ci/run`).
#![allow(missing_docs)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use common::mosquitto::*;
use common::*;
use midge_testkit::peers::{installed, require};

/// `mosquitto_sub -d …`: its stdout read line by line; debug lines (`Client …`,
/// `Subscribed …`) are set apart from messages. Killed when dropped.
struct MosquittoSub {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl MosquittoSub {
    fn start(addr: SocketAddr, args: &[&str]) -> Self {
        // mosquitto_sub's stdout is block-buffered on a pipe: line-buffer it (coreutils
        // stdbuf), or its SUBACK line shows only when it exits.
        let mut child = Command::new("stdbuf")
            .args([
                "-oL",
                "mosquitto_sub",
                "-d",
                "-h",
                "127.0.0.1",
                "-p",
                &addr.port().to_string(),
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut sub = Self { child, lines };
        sub.wait_for_subscribed();
        sub
    }

    fn wait_for_subscribed(&mut self) {
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .expect("mosquitto_sub reports its SUBACK");
            if line.contains("received SUBACK") {
                return;
            }
        }
    }

    /// The message lines until mosquitto_sub exits (after -C), and its exit code.
    fn finish(mut self) -> (Vec<String>, Option<i32>) {
        let deadline = Instant::now() + LIMIT;
        let mut messages = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if !line.starts_with("Client ") && !line.starts_with("Subscribed") {
                        messages.push(line);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("mosquitto_sub did not finish; got {messages:?}")
                }
            }
        }
        let status = self.child.wait().expect("waits");
        (messages, status.code())
    }
}

impl Drop for MosquittoSub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn midge_pub_to_mosquitto_sub_through_mosquitto() {
    let Some(mosquitto) = Mosquitto::start("pub") else {
        return;
    };
    if !clients_installed() {
        return;
    }
    let addr = mosquitto.addr;

    // Retained, at QoS 1, with 5.0 user properties: mosquitto_sub prints them with %P.
    run(
        midge(
            "pub",
            addr,
            &[
                "-V",
                "5",
                "-r",
                "-q",
                "1",
                "-t",
                "i/r",
                "-m",
                "hello",
                "-D",
                "publish",
                "user-property",
                "k",
                "v",
                "-D",
                "publish",
                "user-property",
                "who",
                "midge",
            ],
        ),
        b"",
    )
    .ok();
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args([
            "-V",
            "5",
            "-t",
            "i/r",
            "-C",
            "1",
            "-W",
            "10",
            "-F",
            "%t|%p|%P|%r",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("mosquitto_sub runs");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "i/r|hello|k:v who:midge|1\n"
    );

    // Live, QoS 2, lines from stdin and a null message, under 3.1.1 and 3.1.
    for version in ["311", "31"] {
        let sub = MosquittoSub::start(
            addr,
            &["-t", "i/l/#", "-q", "2", "-C", "4", "-v", "-W", "15"],
        );
        run(
            midge(
                "pub",
                addr,
                &["-V", version, "-t", "i/l/x", "-l", "-q", "2"],
            ),
            b"one\ntwo\nthree\n",
        )
        .ok();
        run(
            midge(
                "pub",
                addr,
                &["-V", version, "-t", "i/l/n", "-n", "-q", "1"],
            ),
            b"",
        )
        .ok();
        let (messages, code) = sub.finish();
        assert_eq!(
            (messages, code),
            (
                ["i/l/x one", "i/l/x two", "i/l/x three", "i/l/n (null)"]
                    .map(String::from)
                    .to_vec(),
                Some(0)
            ),
            "-V {version}"
        );
    }

    // midge sub through mosquitto too, with a 3 MB file: larger than midge-client's default
    // packet limit (1 MiB), which midge sub raises to MQTT's own.
    let path = std::env::temp_dir().join(format!("midge-big-{}", std::process::id()));
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &data).expect("write");
    for version in ["311", "5"] {
        let sub = subscriber(
            addr,
            &[
                "-V", version, "-t", "i/big", "-q", "1", "-C", "1", "-W", "15",
            ],
            1,
        );
        let file = path.to_str().expect("utf-8 path");
        run(
            midge(
                "pub",
                addr,
                &["-V", version, "-t", "i/big", "-f", file, "-q", "1"],
            ),
            b"",
        )
        .ok();
        let out = sub.finish().ok();
        assert_eq!(out.stdout.len(), data.len() + 1, "-V {version}");
        assert!(out.stdout.starts_with(&data), "-V {version}");
    }
    let _ = std::fs::remove_file(&path);

    // A will, when midge pub is killed.
    let sub = MosquittoSub::start(addr, &["-t", "i/will", "-C", "1", "-v", "-W", "15"]);
    let killed = midge(
        "pub",
        addr,
        &[
            "--will-topic",
            "i/will",
            "--will-payload",
            "gone",
            "-t",
            "i/x",
            "-l",
            "-d",
        ],
    );
    let mut publisher = Running::spawn(killed);
    publisher.wait_for("connected to", 1);
    publisher.child().kill().expect("kill");
    let (messages, code) = sub.finish();
    assert_eq!((messages, code), (vec!["i/will gone".to_owned()], Some(0)));
}

#[test]
fn mosquitto_pub_to_midge_sub_through_the_midge_broker() {
    if !clients_installed() {
        return;
    }
    let addr = start_broker();
    let port = addr.port().to_string();
    let mosquitto_pub = |args: &[&str], stdin: &[u8]| {
        let mut command = Command::new("mosquitto_pub");
        command.args(["-h", "127.0.0.1", "-p", &port]).args(args);
        let out = run(command, stdin);
        assert_eq!(
            out.code(),
            Some(0),
            "mosquitto_pub {args:?}: {}",
            out.stderr
        );
    };
    for version in ["311", "5"] {
        let sub = subscriber(
            addr,
            &[
                "-V", version, "-t", "m/#", "-q", "2", "-C", "5", "-v", "-W", "15",
            ],
            1,
        );
        mosquitto_pub(&["-t", "m/1", "-m", "one", "-q", "1"], b"");
        mosquitto_pub(&["-V", "5", "-t", "m/2", "-m", "two", "-q", "2"], b"");
        mosquitto_pub(&["-t", "m/l", "-l", "-q", "1"], b"a\nb\n");
        mosquitto_pub(&["-t", "m/n", "-n"], b"");
        let out = sub.finish().ok();
        assert_eq!(
            out.stdout(),
            "m/1 one\nm/2 two\nm/l a\nm/l b\nm/n (null)\n",
            "-V {version}"
        );
    }
    // 5.0 properties from mosquitto_pub, shown with -F as mosquitto_sub would.
    mosquitto_pub(
        &[
            "-V",
            "5",
            "-t",
            "m/p",
            "-m",
            "props",
            "-q",
            "1",
            "-r",
            "-D",
            "publish",
            "user-property",
            "k",
            "v",
            "-D",
            "publish",
            "content-type",
            "text/plain",
            "-D",
            "publish",
            "response-topic",
            "m/reply",
            "-D",
            "publish",
            "correlation-data",
            "42",
        ],
        b"",
    );
    let out = run(
        midge(
            "sub",
            addr,
            &[
                "-V",
                "5",
                "-t",
                "m/p",
                "-C",
                "1",
                "-W",
                "10",
                "-F",
                "%t|%p|%P|%C|%R|%D|%q|%r",
            ],
        ),
        b"",
    )
    .ok();
    assert_eq!(out.stdout(), "m/p|props|k:v|text/plain|m/reply|42|0|1\n");
    // A retained message.
    mosquitto_pub(&["-t", "m/r", "-m", "kept", "-r", "-q", "1"], b"");
    let out = run(
        midge("sub", addr, &["-t", "m/r", "-C", "1", "-W", "10"]),
        b"",
    )
    .ok();
    assert_eq!(out.stdout(), "kept\n");
}

/// `mosquitto_rr` (mosquitto-clients 2.0 and later), or a loud skip.
fn rr_installed() -> bool {
    require(
        "mosquitto_rr (Debian package mosquitto-clients, 2.0 or later)",
        installed("mosquitto_rr", &["--help"]),
    )
}

/// `midge rr` and `mosquitto_rr` with the same arguments, against the same broker and
/// responder: the same output and exit code, through mosquitto and through the midge broker.
#[test]
fn midge_rr_answers_as_mosquitto_rr_through_both_brokers() {
    let Some(mosquitto) = Mosquitto::start("rr") else {
        return;
    };
    if !rr_installed() {
        return;
    }
    for (broker, addr) in [("mosquitto", mosquitto.addr), ("midge", start_broker())] {
        let requests = responder(addr, "svc/echo", echo);
        let port = addr.port().to_string();
        for args in [
            &["-m", "hello"][..],
            &["-m", "hello", "-v"],
            &["-n", "-v"],
            &["-m", "hello", "-N"],
            &["-m", "hello", "-F", "%t [%p] %q %l"],
            &["-m", "hello", "-q", "1", "-F", "%t %q"],
        ] {
            let mut common = vec!["-h", "127.0.0.1", "-p", &port, "-W", "10"];
            common.extend(["-t", "svc/echo", "-e", "reply/echo"]);
            common.extend(args);
            let mut mosquitto_rr = Command::new("mosquitto_rr");
            mosquitto_rr.args(&common);
            let theirs = run(mosquitto_rr, b"");
            let mut midge_rr = Command::new(env!("CARGO_BIN_EXE_midge"));
            midge_rr.arg("rr").args(&common);
            let ours = run(midge_rr, b"");
            assert_eq!(
                theirs.code(),
                Some(0),
                "{broker} mosquitto_rr {args:?}: {}",
                theirs.stderr
            );
            assert_eq!(
                ours.code(),
                Some(0),
                "{broker} midge rr {args:?}: {}",
                ours.stderr
            );
            assert_eq!(ours.stdout(), theirs.stdout(), "{broker} {args:?}");
            // Both named the response topic; only midge sends correlation data unasked.
            let theirs = requests
                .recv_timeout(LIMIT)
                .expect("mosquitto_rr's request");
            let ours = requests.recv_timeout(LIMIT).expect("midge rr's request");
            assert_eq!(theirs.response_topic.as_deref(), Some("reply/echo"));
            assert_eq!(ours.response_topic, theirs.response_topic);
            assert_eq!(ours.payload, theirs.payload);
            assert!(ours.correlation.is_some());
        }
        // No responder on this topic: both give up at -W with exit code 27.
        let timeout = [
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-W",
            "1",
            "-t",
            "svc/nobody",
            "-e",
            "reply/nobody",
            "-m",
            "q",
        ];
        let mut mosquitto_rr = Command::new("mosquitto_rr");
        mosquitto_rr.args(timeout);
        let theirs = run(mosquitto_rr, b"");
        let mut midge_rr = Command::new(env!("CARGO_BIN_EXE_midge"));
        midge_rr.arg("rr").args(timeout);
        let ours = run(midge_rr, b"");
        assert_eq!(
            theirs.code(),
            Some(27),
            "{broker} mosquitto_rr: {}",
            theirs.stderr
        );
        assert_eq!(ours.code(), Some(27), "{broker} midge rr: {}", ours.stderr);
        assert!(ours.stdout.is_empty() && theirs.stdout.is_empty());
        // Invalid arguments (no -e, a wildcard in -t): both exit with 1, connecting to nothing.
        for args in [
            &["-t", "svc/echo", "-m", "q"][..],
            &["-t", "svc/+", "-e", "reply/echo", "-m", "q"],
        ] {
            let mut common = vec!["-h", "127.0.0.1", "-p", &port, "-W", "10"];
            common.extend(args);
            let mut mosquitto_rr = Command::new("mosquitto_rr");
            mosquitto_rr.args(&common);
            let theirs = run(mosquitto_rr, b"");
            let mut midge_rr = Command::new(env!("CARGO_BIN_EXE_midge"));
            midge_rr.arg("rr").args(&common);
            let ours = run(midge_rr, b"");
            assert_eq!(
                theirs.code(),
                Some(1),
                "mosquitto_rr {args:?}: {}",
                theirs.stderr
            );
            assert_eq!(ours.code(), Some(1), "midge rr {args:?}: {}", ours.stderr);
        }
    }
}
