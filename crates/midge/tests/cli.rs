//! The `midge broker` binary: serves on the given port, and on SIGTERM tells 5.0 clients
//! DISCONNECT 0x8B before it exits.
#![allow(missing_docs)]

use std::net::TcpListener;
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

#[test]
fn bad_config_file_fails() {
    let dir = std::env::temp_dir().join(format!("midge-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[limits]\nno_such_key = 1\n").expect("write");
    let status = Command::new(env!("CARGO_BIN_EXE_midge"))
        .args(["broker", "--config"])
        .arg(&path)
        .stderr(Stdio::null())
        .status()
        .expect("runs");
    assert!(!status.success());
    let _ = std::fs::remove_dir_all(&dir);
}
