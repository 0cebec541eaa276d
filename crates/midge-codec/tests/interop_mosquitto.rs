//! Live interop: `mosquitto_pub` connects to a minimal server on 127.0.0.1 that reads with
//! `Packet::decode`, and what it sends decodes with the expected fields.
//!
//! Without `mosquitto_pub` on PATH the tests print a loud SKIPPED line and pass, unless
//! `MIDGE_REQUIRE_PEERS=1` (set by `.ci/run`), under which a missing peer fails. Every socket
//! read has a timeout and the child is killed on every exit path, so the tests cannot hang.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use midge_codec::{Packet, ProtocolVersion, QoS, MAX_PACKET_SIZE};

const PEER: &str = "mosquitto_pub";
const TIMEOUT: Duration = Duration::from_secs(10);

/// True if `PEER` is installed; otherwise fails or skips loudly, as the environment asks.
fn peer_available() -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(PEER).is_file()));
    if found {
        return true;
    }
    if std::env::var("MIDGE_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("{PEER} is not installed but MIDGE_REQUIRE_PEERS=1: install mosquitto-clients");
    }
    eprintln!(
        "SKIPPED: {PEER} not installed (apt-get install mosquitto-clients); \
         set MIDGE_REQUIRE_PEERS=1 to make this a failure"
    );
    false
}

/// Kills and reaps the child on drop, whatever path the test takes.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Reaper {
    /// Waits for the child to exit by itself, and returns whether it succeeded.
    fn wait_exit(&mut self) -> bool {
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status.success();
            }
            sleep(Duration::from_millis(10));
        }
        panic!("{PEER} did not exit within {TIMEOUT:?}");
    }

    fn stderr(&mut self) -> String {
        let mut err = String::new();
        if let Some(mut pipe) = self.0.stderr.take() {
            let _ = pipe.read_to_string(&mut err);
        }
        err
    }
}

fn accept(listener: &TcpListener, child: &mut Reaper) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                stream.set_read_timeout(Some(TIMEOUT)).unwrap();
                stream.set_write_timeout(Some(TIMEOUT)).unwrap();
                return stream;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if let Ok(Some(status)) = child.0.try_wait() {
                    panic!(
                        "{PEER} exited ({status}) before connecting: {}",
                        child.stderr()
                    );
                }
                assert!(
                    Instant::now() < deadline,
                    "{PEER} did not connect within {TIMEOUT:?}"
                );
                sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Reads from the socket until one whole packet decodes.
fn next_packet(stream: &mut TcpStream, buf: &mut BytesMut, version: ProtocolVersion) -> Packet {
    loop {
        if let Some(packet) = Packet::decode(buf, version, MAX_PACKET_SIZE).unwrap() {
            return packet;
        }
        let mut chunk = [0u8; 1024];
        let n = stream
            .read(&mut chunk)
            .expect("read from mosquitto_pub (timed out?)");
        assert!(
            n > 0,
            "{PEER} closed the connection mid-packet ({} bytes buffered)",
            buf.len()
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn publish_once(flag: &str, version: ProtocolVersion, connack: &[u8]) {
    if !peer_available() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let child = Command::new(PEER)
        .args(["-h", "127.0.0.1", "-p", &port, "-V", flag, "-q", "1"])
        .args(["-t", "midge/live", "-m", "hello", "-i", "live-pub"])
        // Ignore any ~/.config/mosquitto_pub options file.
        .env_remove("HOME")
        .env_remove("XDG_CONFIG_HOME")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mosquitto_pub");
    let mut child = Reaper(child);
    let mut stream = accept(&listener, &mut child);
    let mut buf = BytesMut::with_capacity(1024);

    // The server does not know the version yet: CONNECT is decoded by the level it names.
    let Packet::Connect(connect) = next_packet(&mut stream, &mut buf, ProtocolVersion::V3_1_1)
    else {
        panic!("first packet is not CONNECT");
    };
    assert_eq!(connect.protocol, version);
    assert_eq!(connect.client_id, "live-pub");
    assert!(connect.clean_start);
    assert!(connect.will.is_none() && connect.username.is_none());
    stream.write_all(connack).unwrap();

    let Packet::Publish(publish) = next_packet(&mut stream, &mut buf, version) else {
        panic!("second packet is not PUBLISH");
    };
    assert_eq!(publish.topic, "midge/live");
    assert_eq!(&publish.payload[..], b"hello");
    assert_eq!(publish.qos, QoS::AtLeastOnce);
    assert!(!publish.retain && !publish.dup);
    assert!(publish.properties.is_empty());
    let id = publish
        .packet_id
        .expect("QoS 1 PUBLISH without packet identifier")
        .get();
    // PUBACK in its 2-byte form, which every version accepts.
    let [hi, lo] = id.to_be_bytes();
    stream.write_all(&[0x40, 0x02, hi, lo]).unwrap();

    let Packet::Disconnect(disconnect) = next_packet(&mut stream, &mut buf, version) else {
        panic!("third packet is not DISCONNECT");
    };
    assert_eq!(disconnect, Default::default());
    assert!(buf.is_empty());
    drop(stream);
    assert!(child.wait_exit(), "{PEER} failed: {}", child.stderr());
}

#[test]
fn mosquitto_pub_v5_connect_publish_disconnect() {
    publish_once(
        "mqttv5",
        ProtocolVersion::V5,
        &[0x20, 0x03, 0x00, 0x00, 0x00],
    );
}

#[test]
fn mosquitto_pub_v311_connect_publish_disconnect() {
    publish_once(
        "mqttv311",
        ProtocolVersion::V3_1_1,
        &[0x20, 0x02, 0x00, 0x00],
    );
}

#[test]
fn mosquitto_pub_v31_connect_publish_disconnect() {
    publish_once("mqttv31", ProtocolVersion::V3_1, &[0x20, 0x02, 0x00, 0x00]);
}
