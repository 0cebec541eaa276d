//! The `midge broker` binary: serves on the given port, and on SIGTERM tells 5.0 clients
//! DISCONNECT 0x8B before it exits.
#![allow(missing_docs)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use midge_codec::{Connect, Packet, ProtocolVersion, ReasonCode, MAX_PACKET_SIZE};

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn read_packet(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<Packet> {
    loop {
        if let Ok(Some(p)) = Packet::decode(buf, ProtocolVersion::V5, MAX_PACKET_SIZE) {
            return Some(p);
        }
        let mut chunk = [0u8; 1024];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[test]
fn broker_serves_and_shuts_down_on_sigterm() {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_midge"))
        .args(["broker", "--bind", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawns");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                let _ = child.kill();
                panic!("broker did not start: {e}");
            }
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut out = BytesMut::new();
    Packet::Connect(Box::new(Connect::new(ProtocolVersion::V5, "cli-test")))
        .encode(ProtocolVersion::V5, &mut out)
        .expect("encodes");
    stream.write_all(&out).expect("writes");
    let mut buf = BytesMut::new();
    match read_packet(&mut stream, &mut buf) {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.reason_code, ReasonCode::SUCCESS),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    match read_packet(&mut stream, &mut buf) {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::SERVER_SHUTTING_DOWN),
        other => panic!("expected DISCONNECT 0x8B, got {other:?}"),
    }
    drop(stream);
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
        std::thread::sleep(Duration::from_millis(50));
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
