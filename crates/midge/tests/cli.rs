//! The `midge broker` binary: serves on the given port, and on SIGTERM tells 5.0 clients
//! DISCONNECT 0x8B before it exits.
#![allow(missing_docs)]

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use midge_codec::{Connect, Packet, ProtocolVersion, ReasonCode};
use midge_testkit::raw::Peer;
use tokio::net::TcpStream;

const V5: ProtocolVersion = ProtocolVersion::V5;

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test]
async fn broker_serves_and_shuts_down_on_sigterm() {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_midge"))
        .args(["broker", "--bind", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawns");
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                let _ = child.kill();
                panic!("broker did not start: {e}");
            }
        }
    };
    let mut peer = Peer::new(stream, V5).with_wait(Duration::from_secs(5));
    let ack = peer.handshake(Connect::new(V5, "cli-test")).await;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    match peer.recv_packet().await {
        Packet::Disconnect(d) => assert_eq!(d.reason_code, ReasonCode::SERVER_SHUTTING_DOWN),
        other => panic!("expected DISCONNECT 0x8B, got {other:?}"),
    }
    drop(peer);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("waits") {
            assert!(status.success(), "{status:?}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("broker did not exit");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `midge broker --config` with a file holding `text`: the exit code and stderr. Every file
/// here is refused, so the broker never starts.
fn broker_with_config(name: &str, text: &str, args: &[&str]) -> (Option<i32>, String, PathBuf) {
    let dir = std::env::temp_dir().join(format!("midge-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("midge.toml");
    std::fs::write(&path, text).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_midge"))
        .args(["broker", "--config"])
        .arg(&path)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path,
    )
}

/// Bad arguments and bad configuration exit alike: code 2, one line on stderr that names the
/// file, the line and the key.
#[test]
fn a_bad_config_file_exits_2_naming_the_file_the_line_and_the_key() {
    let cases: [(&str, &str, &[&str]); 5] = [
        // Refused while parsing: an unknown key.
        (
            "unknown",
            "[limits]\nno_such_key = 1\n",
            &["line 2", "no_such_key"],
        ),
        // Refused while parsing: a value of the wrong type.
        (
            "type",
            "[sys]\ninterval_secs = 0\n\n[mqtt]\nmaximum_qos = \"two\"\n",
            &["line 5", "(key mqtt.maximum_qos)"],
        ),
        // Parsed, then refused by validation: out of range.
        (
            "range",
            "[mqtt]\nretain_available = true\nmaximum_qos = 3\n",
            &["line 3", "mqtt.maximum_qos must be 0, 1 or 2, not 3"],
        ),
        // A host name where an address is needed: how to write it.
        (
            "hostname",
            "[[listener]]\nbind = \"localhost:1883\"\n",
            &[
                "line 2",
                "(key listener[1].bind)",
                "host names are not resolved",
                "127.0.0.1:1883",
            ],
        ),
        (
            "level",
            "[log]\nlevel = \"verbose\"\n",
            &["line 2", "log.level"],
        ),
    ];
    for (name, text, expected) in cases {
        let (code, stderr, path) = broker_with_config(name, text, &[]);
        assert_eq!(code, Some(2), "{name}: {stderr}");
        assert!(
            stderr.starts_with("midge broker: invalid configuration ")
                && stderr.contains(&*path.to_string_lossy()),
            "{name}: {stderr}"
        );
        for part in expected {
            assert!(stderr.contains(part), "{name}: no {part:?} in {stderr}");
        }
        assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
    }
}

#[test]
fn bad_arguments_exit_2_as_bad_configuration_does() {
    for (args, expected) in [
        (&["--bind", "localhost"][..], "host names are not resolved"),
        (
            &["--bind", "127.0.0.1:1883"][..],
            "--bind 127.0.0.1 -p 1883",
        ),
        (&["-p", "70000"][..], "70000"),
        (&["--no-such-flag"][..], "--no-such-flag"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_midge"))
            .arg("broker")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// After serving clients (password checks on the verification threads, QoS 0, 1 and 2
/// messages), with a subscriber still connected and a client that neither reads nor closes
/// when the signal comes, `midge broker` exits as soon as its work is done: well under a
/// second from SIGTERM, where waiting for the idle client to close its side held it 2 s.
#[test]
fn the_broker_exits_promptly_on_sigterm_after_serving_clients() {
    let dir = std::env::temp_dir().join(format!("midge-cli-exit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let passwd = dir.join("passwd");
    let made = Command::new(env!("CARGO_BIN_EXE_midge"))
        .args(["passwd", "-c", "-b"])
        .arg(&passwd)
        .args(["alice", "secret"])
        .status()
        .expect("midge passwd runs");
    assert!(made.success());
    let port = free_port();
    let config = dir.join("midge.toml");
    std::fs::write(
        &config,
        format!(
            "[[listener]]\nbind = \"127.0.0.1:{port}\"\n\
             [auth]\npassword_file = \"passwd\"\nallow_anonymous = true\n"
        ),
    )
    .expect("write");
    let mut command = Command::new(env!("CARGO_BIN_EXE_midge"));
    command.arg("broker").arg("--config").arg(&config);
    let mut broker = common::Running::spawn(command);
    broker.wait_for("listening", 1);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let credentials = ["-u", "alice", "-P", "secret"];
    let mut sub_args = vec!["-t", "served/#", "-q", "2"];
    sub_args.extend(credentials);
    let subscriber = common::subscriber(addr, &sub_args, 1);
    for qos in ["0", "1", "2"] {
        for version in ["311", "5"] {
            let mut args = vec!["-V", version, "-q", qos, "-t", "served/x", "-m", "hello"];
            args.extend(credentials);
            common::run(common::midge("pub", addr, &args), b"").ok();
        }
    }
    // A device that connected (3.1.1, anonymous) and then went quiet: it reads nothing more
    // and never closes.
    let mut idle = std::net::TcpStream::connect(addr).expect("connects");
    idle.write_all(b"\x10\x0f\x00\x04MQTT\x04\x02\x00\x3c\x00\x03dev")
        .expect("CONNECT");
    let mut connack = [0u8; 4];
    idle.read_exact(&mut connack).expect("CONNACK");
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    let pid = broker.child().id().to_string();
    let sent = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let finished = broker.finish_keeping_stdin();
    let took = sent.elapsed();
    drop(idle);
    drop(subscriber);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(finished.code(), Some(0), "{}", finished.stderr);
    assert!(finished.stderr.contains("stopped"), "{}", finished.stderr);
    assert!(
        took < Duration::from_millis(1000),
        "the broker took {took:?} from SIGTERM to its exit"
    );
}
