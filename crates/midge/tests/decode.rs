//! `midge decode` on what real peers sent: mosquitto_pub and mosquitto_sub talk to the midge
//! broker through a TCP proxy in the test that records every read, and the test writes those
//! bytes as a pcap or pcapng capture (Ethernet, IPv4, TCP with real sequence numbers), in order
//! or with segments split, reordered and retransmitted. Also the committed captures of
//! tests/data, hex and raw input, and `--json` parsed back.
//!
//! The live tests skip loudly without mosquitto-clients (a failure under
//! `MIDGE_REQUIRE_PEERS=1`). `MIDGE_WRITE_DECODE_FIXTURES=1` makes them rewrite the committed
//! captures of tests/data and the output expected from them.
#![allow(missing_docs)]

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use etherparse::PacketBuilder;
use midge_codec::{Packet, ProtocolVersion, MAX_PACKET_SIZE};
use midge_testkit::peers::{installed, require};
use pcap_file::pcap::{PcapPacket, PcapWriter};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::DataLink;
use serde_json::Value;

// --- Recording real peers ---------------------------------------------------------------

/// One read by the proxy: what a side sent, or its end (empty `bytes`, `fin`).
#[derive(Clone, Debug)]
struct Event {
    conn: usize,
    from_client: bool,
    bytes: Vec<u8>,
    fin: bool,
}

#[derive(Debug, Default)]
struct Recording {
    events: Vec<Event>,
    /// Per connection: the client's address and the address it connected to.
    addrs: Vec<(SocketAddr, SocketAddr)>,
}

impl Recording {
    /// Everything one side of a connection sent.
    fn stream(&self, conn: usize, from_client: bool) -> Vec<u8> {
        self.events
            .iter()
            .filter(|e| e.conn == conn && e.from_client == from_client)
            .flat_map(|e| e.bytes.iter().copied())
            .collect()
    }

    fn fins(&self) -> usize {
        self.events.iter().filter(|e| e.fin).count()
    }
}

/// A TCP proxy on 127.0.0.1 in front of `upstream` that records every read, in the order they
/// happen: a side's bytes are recorded before they are passed on, so an answer is always
/// recorded after what it answers.
fn proxy(upstream: SocketAddr) -> (SocketAddr, Arc<Mutex<Recording>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let recording = Arc::new(Mutex::new(Recording::default()));
    let rec = recording.clone();
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { break };
            let broker = TcpStream::connect(upstream).expect("connect upstream");
            let conn = {
                let mut r = rec.lock().expect("lock");
                r.addrs.push((client.peer_addr().expect("peer"), addr));
                r.addrs.len() - 1
            };
            let pumps = [
                (
                    true,
                    client.try_clone().expect("clone"),
                    broker.try_clone().expect("clone"),
                ),
                (false, broker, client),
            ];
            for (from_client, mut from, mut to) in pumps {
                let rec = rec.clone();
                thread::spawn(move || {
                    let mut buf = vec![0u8; 4096];
                    loop {
                        let n = from.read(&mut buf).unwrap_or(0);
                        let bytes = buf[..n].to_vec();
                        rec.lock().expect("lock").events.push(Event {
                            conn,
                            from_client,
                            bytes,
                            fin: n == 0,
                        });
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            let _ = to.shutdown(Shutdown::Write);
                            break;
                        }
                    }
                });
            }
        }
    });
    (addr, recording)
}

fn clients_installed() -> bool {
    require(
        "mosquitto_pub and mosquitto_sub (Debian package mosquitto-clients)",
        installed("mosquitto_sub", &["--help"]) && installed("mosquitto_pub", &["--help"]),
    )
}

/// The packets `bytes` decodes to so far.
fn packets(bytes: &[u8], version: ProtocolVersion) -> Vec<Packet> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Ok(Some(packet)) = Packet::decode(&mut buf, version, MAX_PACKET_SIZE) {
        out.push(packet);
    }
    out
}

/// mosquitto_sub (`-C 1`) and then mosquitto_pub through the proxy to a midge broker, with
/// `-V version` and `extra` arguments for mosquitto_pub; returns the recording once every
/// connection is closed both ways. Connection 0 is the subscriber, 1 the publisher.
fn record_session(version: &str, qos: &str, pub_extra: &[&str]) -> Recording {
    let broker = start_broker();
    let (addr, recording) = proxy(broker);
    let port = addr.port().to_string();
    let codec_version = if version == "mqttv5" {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V3_1_1
    };
    let sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "-V", version, "-i", "sub-1"])
        .args(["-t", "sensors/#", "-q", qos, "-C", "1", "-W", "15"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub starts");
    // Subscribed once the broker's SUBACK went through the proxy.
    let deadline = Instant::now() + LIMIT;
    loop {
        let answers = recording.lock().expect("lock").stream(0, false);
        if packets(&answers, codec_version)
            .iter()
            .any(|p| matches!(p, Packet::SubAck(_)))
        {
            break;
        }
        assert!(Instant::now() < deadline, "mosquitto_sub did not subscribe");
        thread::sleep(Duration::from_millis(10));
    }
    let published = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-V", version, "-i", "pub-1"])
        .args(["-t", "sensors/kitchen/temp", "-m", "21.5", "-q", qos])
        .args(pub_extra)
        .status()
        .expect("mosquitto_pub runs");
    assert!(published.success());
    let sub = wait(sub, LIMIT);
    assert_eq!(sub.code(), Some(0), "mosquitto_sub: {}", sub.stderr);
    assert_eq!(sub.stdout(), "21.5\n");
    let deadline = Instant::now() + LIMIT;
    while recording.lock().expect("lock").fins() < 4 {
        assert!(Instant::now() < deadline, "connections did not close");
        thread::sleep(Duration::from_millis(10));
    }
    let r = recording.lock().expect("lock");
    Recording {
        events: r.events.clone(),
        addrs: r.addrs.clone(),
    }
}

// --- Writing captures ------------------------------------------------------------------

/// How the recorded bytes are cut into segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// One segment per read, in order.
    InOrder,
    /// Each read cut into 9-byte segments sent last first, then the whole read again
    /// (a retransmission).
    Shuffled,
}

/// The client's initial sequence number: its stream crosses 2^32.
const CLIENT_ISN: u32 = u32::MAX - 40;
const BROKER_ISN: u32 = 7_000;

/// Ethernet frames with their capture times, from a recording. `corrupt` replaces the byte at
/// an offset of one side's stream: (connection, from the client, offset, new byte).
fn frames(
    rec: &Recording,
    layout: Layout,
    corrupt: Option<(usize, bool, usize, u8)>,
) -> Vec<(Duration, Vec<u8>)> {
    let mut out = Vec::new();
    let mut time = Duration::from_secs(1_796_650_000);
    let mut next_seq: Vec<[u32; 2]> = Vec::new();
    let mut sent: Vec<[usize; 2]> = Vec::new();
    let mut frame = |time: &mut Duration,
                     src: SocketAddr,
                     dst: SocketAddr,
                     seq: u32,
                     ack: Option<u32>,
                     syn: bool,
                     fin: bool,
                     payload: &[u8]| {
        let ip = |a: SocketAddr| match a.ip() {
            std::net::IpAddr::V4(v4) => v4.octets(),
            std::net::IpAddr::V6(_) => panic!("IPv4 only"),
        };
        let mut builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(ip(src), ip(dst), 64)
            .tcp(src.port(), dst.port(), seq, 65_535);
        if syn {
            builder = builder.syn();
        }
        if fin {
            builder = builder.fin();
        }
        if let Some(ack) = ack {
            builder = builder.ack(ack);
        }
        if !payload.is_empty() {
            builder = builder.psh();
        }
        let mut data = Vec::new();
        builder.write(&mut data, payload).expect("frame");
        *time += Duration::from_micros(250);
        out.push((*time, data));
    };
    for event in &rec.events {
        let (client, broker) = rec.addrs[event.conn];
        while next_seq.len() <= event.conn {
            // The handshake, before the connection's first event.
            let c = next_seq.len();
            let (client, broker) = rec.addrs[c];
            frame(
                &mut time,
                client,
                broker,
                CLIENT_ISN,
                None,
                true,
                false,
                &[],
            );
            frame(
                &mut time,
                broker,
                client,
                BROKER_ISN,
                Some(CLIENT_ISN + 1),
                true,
                false,
                &[],
            );
            frame(
                &mut time,
                client,
                broker,
                CLIENT_ISN + 1,
                Some(BROKER_ISN + 1),
                false,
                false,
                &[],
            );
            next_seq.push([CLIENT_ISN.wrapping_add(1), BROKER_ISN + 1]);
            sent.push([0, 0]);
        }
        let side = usize::from(!event.from_client);
        let (src, dst) = if event.from_client {
            (client, broker)
        } else {
            (broker, client)
        };
        let ack = Some(next_seq[event.conn][1 - side]);
        let seq = next_seq[event.conn][side];
        let mut bytes = event.bytes.clone();
        if let Some((conn, from_client, offset, byte)) = corrupt {
            let start = sent[event.conn][side];
            if conn == event.conn && from_client == event.from_client {
                if let Some(b) = offset.checked_sub(start).and_then(|i| bytes.get_mut(i)) {
                    *b = byte;
                }
            }
        }
        sent[event.conn][side] += bytes.len();
        if event.fin {
            frame(&mut time, src, dst, seq, ack, false, true, &[]);
            next_seq[event.conn][side] = seq.wrapping_add(1);
            continue;
        }
        match layout {
            Layout::InOrder => frame(&mut time, src, dst, seq, ack, false, false, &bytes),
            Layout::Shuffled => {
                let pieces: Vec<(usize, &[u8])> = bytes
                    .chunks(9)
                    .enumerate()
                    .map(|(i, p)| (i * 9, p))
                    .collect();
                for (at, piece) in pieces.iter().rev() {
                    let seq = seq.wrapping_add(*at as u32);
                    frame(&mut time, src, dst, seq, ack, false, false, piece);
                }
                frame(&mut time, src, dst, seq, ack, false, false, &bytes);
            }
        }
        next_seq[event.conn][side] = seq.wrapping_add(bytes.len() as u32);
    }
    out
}

fn write_pcap(path: &Path, frames: &[(Duration, Vec<u8>)]) {
    let mut writer = PcapWriter::new(File::create(path).expect("create")).expect("header");
    for (time, data) in frames {
        writer
            .write_packet(&PcapPacket::new(*time, data.len() as u32, data))
            .expect("write");
    }
}

fn write_pcapng(path: &Path, frames: &[(Duration, Vec<u8>)]) {
    let mut writer = PcapNgWriter::new(File::create(path).expect("create")).expect("header");
    // The writer stores timestamps as nanoseconds: say so.
    let interface = InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        options: vec![InterfaceDescriptionOption::IfTsResol(9)],
    };
    writer.write_pcapng_block(interface).expect("interface");
    for (time, data) in frames {
        let packet = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: *time,
            original_len: data.len() as u32,
            data: data.as_slice().into(),
            options: vec![],
        };
        writer.write_pcapng_block(packet).expect("packet");
    }
}

// --- Running midge decode --------------------------------------------------------------

fn decode(args: &[&str], stdin: &[u8]) -> Finished {
    let mut command = Command::new(env!("CARGO_BIN_EXE_midge"));
    command.arg("decode").args(args);
    run(command, stdin)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("midge-decode-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn json_lines(finished: &Finished) -> Vec<Value> {
    finished
        .stdout()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// The packets of one connection and direction, as `(type, object)`.
fn of<'a>(lines: &'a [Value], stream: u64, direction: &str) -> Vec<(&'a str, &'a Value)> {
    lines
        .iter()
        .filter(|l| l["stream"] == stream && l["direction"] == direction)
        .filter_map(|l| Some((l["type"].as_str()?, l)))
        .collect()
}

fn types<'a>(packets: &[(&'a str, &Value)]) -> Vec<&'a str> {
    packets.iter().map(|(t, _)| *t).collect()
}

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn writing_fixtures() -> bool {
    std::env::var("MIDGE_WRITE_DECODE_FIXTURES").is_ok_and(|v| v == "1")
}

/// Copies a capture into tests/data with the text output expected from it.
fn save_fixture(capture: &Path, name: &str) {
    let target = data_dir().join(name);
    std::fs::create_dir_all(data_dir()).expect("tests/data");
    std::fs::copy(capture, &target).expect("copy fixture");
    let text = decode(&[target.to_str().expect("utf-8")], b"");
    std::fs::write(data_dir().join(format!("{name}.txt")), text.stdout).expect("expected output");
}

// --- Live captures ---------------------------------------------------------------------

#[test]
fn a_mosquitto_5_0_session_decodes_whole_in_order_or_not() {
    if !clients_installed() {
        return;
    }
    let rec = record_session(
        "mqttv5",
        "1",
        &[
            "-D",
            "publish",
            "user-property",
            "site",
            "lab 4",
            "-D",
            "publish",
            "content-type",
            "text/plain",
        ],
    );
    let dir = scratch("v5");
    let in_order = dir.join("in-order.pcap");
    write_pcap(&in_order, &frames(&rec, Layout::InOrder, None));
    let shuffled = dir.join("shuffled.pcapng");
    write_pcapng(&shuffled, &frames(&rec, Layout::Shuffled, None));

    let finished = decode(&["--json", in_order.to_str().expect("utf-8")], b"").ok();
    let lines = json_lines(&finished);
    let (sub, publisher) = (rec.addrs[0].0.to_string(), rec.addrs[1].0.to_string());

    // The subscriber: CONNECT, SUBSCRIBE, then the broker's CONNACK, SUBACK and the message.
    let sub_sent = of(&lines, 0, "client_to_broker");
    assert_eq!(
        types(&sub_sent)[..2],
        ["CONNECT", "SUBSCRIBE"],
        "{lines:#?}"
    );
    let connect = sub_sent[0].1;
    assert_eq!(connect["from"], sub);
    assert_eq!(connect["to"], rec.addrs[0].1.to_string());
    assert_eq!(connect["protocol"], "5.0");
    assert_eq!(connect["version"], "5.0");
    assert_eq!(connect["client_id"], "sub-1");
    assert_eq!(connect["offset"], 0);
    let subscribe = sub_sent[1].1;
    assert_eq!(subscribe["filters"][0]["filter"], "sensors/#");
    assert_eq!(subscribe["filters"][0]["qos"], 1);
    assert_eq!(subscribe["offset"], connect["len"]);
    let sub_got = of(&lines, 0, "broker_to_client");
    assert_eq!(types(&sub_got)[..3], ["CONNACK", "SUBACK", "PUBLISH"]);
    assert_eq!(sub_got[0].1["reason"]["name"], "SUCCESS");
    assert_eq!(sub_got[1].1["reasons"][0]["name"], "GRANTED_QOS_1");
    let delivered = sub_got[2].1;
    assert_eq!(delivered["topic"], "sensors/kitchen/temp");
    assert_eq!(delivered["payload"]["text"], "21.5");
    assert_eq!(
        delivered["properties"]["user_properties"],
        serde_json::json!([["site", "lab 4"]])
    );

    // The publisher: its message with every property, acknowledged.
    let pub_sent = of(&lines, 1, "client_to_broker");
    assert_eq!(types(&pub_sent), ["CONNECT", "PUBLISH", "DISCONNECT"]);
    assert_eq!(pub_sent[0].1["from"], publisher);
    let publish = pub_sent[1].1;
    assert_eq!(publish["qos"], 1);
    assert_eq!(publish["packet_id"], 1);
    assert_eq!(publish["properties"]["content_type"], "text/plain");
    assert_eq!(pub_sent[2].1["reason"]["name"], "SUCCESS");
    let pub_got = of(&lines, 1, "broker_to_client");
    assert_eq!(types(&pub_got), ["CONNACK", "PUBACK"]);
    assert_eq!(pub_got[1].1["packet_id"], 1);
    assert_eq!(pub_got[1].1["reason"]["name"], "SUCCESS");

    // Split, reordered and retransmitted segments in a pcapng give the same packets, in the
    // same order; only the times differ, each packet's being that of the segment that
    // completed it.
    let reordered = decode(&["--json", shuffled.to_str().expect("utf-8")], b"").ok();
    let timeless = |lines: &[Value]| -> Vec<Value> {
        lines
            .iter()
            .map(|l| {
                let mut l = l.clone();
                l.as_object_mut().expect("object").remove("time");
                l
            })
            .collect()
    };
    assert_eq!(timeless(&json_lines(&reordered)), timeless(&lines));
    assert!(
        reordered.stderr.contains("retransmitted bytes dropped"),
        "{}",
        reordered.stderr
    );

    // --port chooses the connections: here none.
    let none = decode(&["--port", "1", in_order.to_str().expect("utf-8")], b"").ok();
    assert_eq!(none.stdout(), "");
    assert!(
        none.stderr.contains("2 connections skipped as not MQTT"),
        "{}",
        none.stderr
    );

    // Text: the client on the left, the arrow the way the packet went.
    let text = decode(&[in_order.to_str().expect("utf-8")], b"")
        .ok()
        .stdout();
    let broker = rec.addrs[0].1;
    assert!(
        text.contains(&format!(
            "{sub} -> {broker} @0 CONNECT protocol=\"5.0\" client_id=\"sub-1\""
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{sub} <- {broker} @0 CONNACK session_present=false reason=SUCCESS(0x00)"
        )),
        "{text}"
    );

    // Too little room for the segments held past a gap: the stream is cut, and said so.
    // (The first bytes of a connection say whether it is MQTT, and here they never come: the
    // broker's port says instead.)
    let port = broker.port().to_string();
    let args = ["--max-buffer", "12", "--port", &port];
    let cut = decode(
        &[&args[..], &[shuffled.to_str().expect("utf-8")]].concat(),
        b"",
    );
    // Not decoded for want of room: an error, as a malformed packet is.
    assert_eq!(cut.code(), Some(1), "{}", cut.stderr);
    assert!(
        cut.stdout()
            .contains("error: stream cut: a segment is missing here")
            && cut.stdout().contains("bytes after it exceed --max-buffer"),
        "{}",
        cut.stdout()
    );
    assert!(!cut.stdout().contains("PUBLISH"), "{}", cut.stdout());

    // A segment the capture lost (the first piece of the PUBLISH and its retransmission):
    // what follows it in that direction is not decoded, and a note says where.
    let publisher_port = rec.addrs[1].0.port();
    let publisher_stream = rec.stream(1, true);
    let connect_len = Packet::peek_len(&publisher_stream).expect("a CONNECT");
    let publish_seq = CLIENT_ISN.wrapping_add(1 + connect_len as u32);
    let lossy: Vec<(Duration, Vec<u8>)> = frames(&rec, Layout::Shuffled, None)
        .into_iter()
        .filter(|(_, data)| {
            let sliced = etherparse::SlicedPacket::from_ethernet(data).expect("frame");
            let Some(etherparse::TransportSlice::Tcp(tcp)) = sliced.transport else {
                return true;
            };
            !(tcp.source_port() == publisher_port && tcp.sequence_number() == publish_seq)
        })
        .collect();
    let lost = dir.join("lost.pcap");
    write_pcap(&lost, &lossy);
    let finished = decode(&["--json", lost.to_str().expect("utf-8")], b"").ok();
    let lines = json_lines(&finished);
    assert_eq!(types(&of(&lines, 1, "client_to_broker")), ["CONNECT"]);
    let notes: Vec<&Value> = lines.iter().filter(|l| l.get("note").is_some()).collect();
    assert_eq!(notes.len(), 1, "{lines:#?}");
    assert_eq!(notes[0]["stream"], 1);
    assert_eq!(notes[0]["offset"], connect_len);
    assert_eq!(notes[0]["direction"], "client_to_broker");
    // All the publisher sent after its CONNECT, but the 9 bytes lost.
    let after = publisher_stream.len() - connect_len - 9;
    assert_eq!(
        notes[0]["note"],
        format!("a segment is missing here: the {after} bytes captured after it are not decoded")
    );

    if writing_fixtures() {
        save_fixture(&shuffled, "v5-out-of-order.pcapng");
    }
}

#[test]
fn a_mosquitto_3_1_1_session_at_qos_2_decodes_and_a_malformed_packet_stops_its_direction() {
    if !clients_installed() {
        return;
    }
    let rec = record_session("mqttv311", "2", &[]);
    let dir = scratch("v311");
    let capture = dir.join("v311.pcap");
    write_pcap(&capture, &frames(&rec, Layout::InOrder, None));
    // --version 5 is only what is assumed before a CONNECT: each CONNECT says 3.1.1.
    let finished = decode(
        &["--json", "-V", "5", capture.to_str().expect("utf-8")],
        b"",
    )
    .ok();
    let lines = json_lines(&finished);
    assert!(lines.iter().all(|l| l["version"] == "3.1.1"), "{lines:#?}");
    let pub_sent = of(&lines, 1, "client_to_broker");
    assert_eq!(
        types(&pub_sent),
        ["CONNECT", "PUBLISH", "PUBREL", "DISCONNECT"]
    );
    assert_eq!(pub_sent[0].1["protocol"], "3.1.1");
    assert_eq!(pub_sent[0].1["clean_start"], true);
    assert_eq!(
        types(&of(&lines, 1, "broker_to_client")),
        ["CONNACK", "PUBREC", "PUBCOMP"]
    );
    assert_eq!(of(&lines, 1, "broker_to_client")[0].1["return_code"], 0);
    let sub_got = of(&lines, 0, "broker_to_client");
    assert_eq!(types(&sub_got), ["CONNACK", "SUBACK", "PUBLISH", "PUBREL"]);
    assert_eq!(sub_got[2].1["qos"], 2);
    assert_eq!(
        types(&of(&lines, 0, "client_to_broker"))[..4],
        ["CONNECT", "SUBSCRIBE", "PUBREC", "PUBCOMP"]
    );

    // Raw bytes and hex of the publisher's stream decode to the same packets.
    let raw = rec.stream(1, true);
    let from_raw = decode(&["--json", "-"], &raw).ok();
    let plain: Vec<Value> = json_lines(&from_raw);
    assert_eq!(
        plain.iter().map(|l| l["type"].clone()).collect::<Vec<_>>(),
        ["CONNECT", "PUBLISH", "PUBREL", "DISCONNECT"]
    );
    for (plain, captured) in plain.iter().zip(&pub_sent) {
        let mut captured = captured.1.as_object().expect("object").clone();
        for key in ["time", "stream", "from", "to", "direction"] {
            captured.remove(key);
        }
        assert_eq!(plain, &Value::Object(captured));
    }
    let hex: Vec<String> = raw.iter().map(|b| format!("0x{b:02X}")).collect();
    let from_hex = decode(&[], hex.join(", ").as_bytes()).ok();
    assert_eq!(from_hex.stdout(), decode(&[], &raw).ok().stdout());
    let colons: Vec<String> = raw.iter().map(|b| format!("{b:02x}")).collect();
    let from_colons = decode(&["--format", "hex"], colons.join(":").as_bytes()).ok();
    assert_eq!(from_colons.stdout(), from_hex.stdout());

    // QoS 3 in the publisher's PUBLISH: that direction stops at it, the rest goes on.
    let connect_len = Packet::peek_len(&raw).expect("a CONNECT");
    let first = raw[connect_len];
    assert_eq!(first >> 4, 3, "a PUBLISH after the CONNECT");
    let malformed = dir.join("malformed.pcap");
    let corrupt = Some((1, true, connect_len, first | 0b0110));
    write_pcap(&malformed, &frames(&rec, Layout::InOrder, corrupt));
    let finished = decode(&["--json", malformed.to_str().expect("utf-8")], b"");
    assert_eq!(finished.code(), Some(1), "{}", finished.stderr);
    let lines = json_lines(&finished);
    let errors: Vec<&Value> = lines.iter().filter(|l| l.get("error").is_some()).collect();
    assert_eq!(errors.len(), 1, "{lines:#?}");
    assert_eq!(
        errors[0]["error"],
        "QoS 3 is not a valid QoS; the rest of this direction is not decoded"
    );
    assert_eq!(errors[0]["offset"], connect_len);
    assert_eq!(errors[0]["stream"], 1);
    assert_eq!(types(&of(&lines, 1, "client_to_broker")), ["CONNECT"]);
    // The subscriber's connection is untouched.
    assert_eq!(
        types(&of(&lines, 0, "broker_to_client")),
        ["CONNACK", "SUBACK", "PUBLISH", "PUBREL"]
    );

    // The same bytes as plain input: the packets before it, the error, exit code 1.
    let mut bad = raw.clone();
    bad[connect_len] = first | 0b0110;
    let plain = decode(&[], &bad);
    assert_eq!(plain.code(), Some(1));
    assert_eq!(
        plain
            .stdout()
            .lines()
            .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>(),
        ["@0 CONNECT", format!("@{connect_len} error:").as_str()]
    );

    if writing_fixtures() {
        save_fixture(&capture, "v311.pcap");
        save_fixture(&malformed, "malformed.pcap");
    }
}

/// tcpdump on the loopback interface, as a user would capture: real frames, with the kernel's
/// TCP options, straight from mosquitto_pub to the broker.
#[cfg(unix)]
#[test]
fn a_tcpdump_capture_of_mosquitto_pub_decodes() {
    use std::os::unix::fs::PermissionsExt;
    if !clients_installed()
        || !require(
            "tcpdump (Debian package tcpdump; capturing needs root)",
            installed("tcpdump", &["--version"]),
        )
    {
        return;
    }
    let broker = start_broker();
    let port = broker.port().to_string();
    let dir = scratch("tcpdump");
    // tcpdump writes as the user it drops to.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let file = dir.join("lo.pcap");
    let mut tcpdump = Command::new("tcpdump");
    tcpdump
        .args(["-i", "lo", "-U", "-n", "-w"])
        .arg(&file)
        .args(["tcp", "port", &port]);
    let mut tcpdump = Running::spawn(tcpdump);
    tcpdump.wait_for("listening on", 1);
    let published = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv5",
            "-i",
            "dump-1",
        ])
        .args(["-t", "lamp/1", "-m", "on", "-q", "1"])
        .status()
        .expect("mosquitto_pub runs");
    assert!(published.success());
    // Until the broker's side of the close is written too.
    let deadline = Instant::now() + LIMIT;
    while decode(&["--json", file.to_str().expect("utf-8")], b"")
        .stdout()
        .lines()
        .count()
        < 5
    {
        assert!(Instant::now() < deadline, "tcpdump wrote too little");
        thread::sleep(Duration::from_millis(20));
    }
    let stopped = tcpdump.interrupt();
    assert_eq!(stopped.code(), Some(0), "{}", stopped.stderr);

    let finished = decode(&["--json", file.to_str().expect("utf-8")], b"").ok();
    let lines = json_lines(&finished);
    let sent = of(&lines, 0, "client_to_broker");
    assert_eq!(
        types(&sent),
        ["CONNECT", "PUBLISH", "DISCONNECT"],
        "{lines:#?}"
    );
    assert_eq!(sent[0].1["client_id"], "dump-1");
    assert_eq!(sent[0].1["to"], broker.to_string());
    assert_eq!(sent[1].1["topic"], "lamp/1");
    assert_eq!(sent[1].1["payload"]["text"], "on");
    let got = of(&lines, 0, "broker_to_client");
    assert_eq!(types(&got), ["CONNACK", "PUBACK"]);
    assert!(
        finished.stderr.contains("5 packets in 1 TCP connections"),
        "{}",
        finished.stderr
    );
}

// --- Committed captures ----------------------------------------------------------------

/// A committed capture decodes to its committed text, with the exit code given.
fn fixture(name: &str, code: i32) -> String {
    let path = data_dir().join(name);
    let finished = decode(&[path.to_str().expect("utf-8")], b"");
    assert_eq!(finished.code(), Some(code), "{}", finished.stderr);
    let expected =
        std::fs::read_to_string(data_dir().join(format!("{name}.txt"))).expect("expected");
    assert_eq!(finished.stdout(), expected);
    expected
}

#[test]
fn committed_captures_decode_as_recorded() {
    let v311 = fixture("v311.pcap", 0);
    assert!(
        v311.contains(" CONNECT protocol=\"3.1.1\" client_id=\"pub-1\" clean_start=true"),
        "{v311}"
    );
    assert!(
        v311.contains(" PUBLISH topic=\"sensors/kitchen/temp\" qos=2 packet_id=1 payload=\"21.5\""),
        "{v311}"
    );
    assert!(v311.contains(" PUBREC packet_id=1"), "{v311}");

    let v5 = fixture("v5-out-of-order.pcapng", 0);
    assert!(
        v5.contains(" CONNECT protocol=\"5.0\" client_id=\"pub-1\""),
        "{v5}"
    );
    assert!(
        v5.contains(
            "properties={content_type=\"text/plain\", user_properties=[[\"site\", \"lab 4\"]]}"
        ),
        "{v5}"
    );

    let malformed = fixture("malformed.pcap", 1);
    assert!(
        malformed.contains(" error: QoS 3 is not a valid QoS"),
        "{malformed}"
    );
    assert!(malformed.contains(" PUBREL packet_id=1"), "{malformed}");

    // JSON of the same capture parses back, one object per line.
    let path = data_dir().join("v5-out-of-order.pcapng");
    let json = decode(&["--json", path.to_str().expect("utf-8")], b"").ok();
    let lines = json_lines(&json);
    assert_eq!(lines.len(), v5.lines().count());
    assert!(lines
        .iter()
        .all(|l| l["time"].as_f64().is_some_and(|t| t > 1.7e9)));
}

// --- Plain input -----------------------------------------------------------------------

/// A 3.1.1 CONNECT (client id "dev-1", keepalive 60), then a QoS 1 PUBLISH of "on" to
/// "lamp/1" with packet id 10, as hex with comments.
const HEX: &str = "\
# CONNECT
10 11 00 04 4d 51 54 54 04 02 00 3c 00 05 64 65 76 2d 31
# PUBLISH
32 0c 00 06 6c 61 6d 70 2f 31 00 0a 6f 6e
";

#[test]
fn hex_input_decodes_line_by_line() {
    let finished = decode(&[], HEX.as_bytes()).ok();
    assert_eq!(
        finished.stdout(),
        "@0 CONNECT protocol=\"3.1.1\" client_id=\"dev-1\" clean_start=true keep_alive=60\n\
         @19 PUBLISH topic=\"lamp/1\" qos=1 packet_id=10 payload=\"on\"\n"
    );
    let json = json_lines(&decode(&["--json"], HEX.as_bytes()).ok());
    assert_eq!(json[1]["offset"], 19);
    assert_eq!(json[1]["len"], 14);
    assert_eq!(
        json[1]["payload"],
        serde_json::json!({"len": 2, "text": "on"})
    );
}

#[test]
fn plain_input_that_is_cut_short_or_malformed_exits_1_after_what_decoded() {
    // The PUBLISH's last byte is missing.
    let short = &HEX[..HEX.len() - 4];
    let finished = decode(&[], short.as_bytes());
    assert_eq!(finished.code(), Some(1));
    assert!(finished.stdout().starts_with("@0 CONNECT"));
    assert!(
        finished
            .stdout()
            .ends_with("@19 error: the input ends inside a packet: 13 of its 14 bytes\n"),
        "{}",
        finished.stdout()
    );
    // A reserved bit of the CONNECT flags (0x02 -> 0x03).
    let bad = HEX.replacen("04 02 00 3c", "04 03 00 3c", 1);
    let finished = decode(&[], bad.as_bytes());
    assert_eq!(finished.code(), Some(1));
    assert_eq!(finished.stdout(), "@0 error: reserved CONNECT flag set\n");
    // Raw bytes whose first packet is not MQTT at all.
    let finished = decode(&["--format", "raw"], &[0x00, 0x00]);
    assert_eq!(finished.code(), Some(1));
    assert_eq!(finished.stdout(), "@0 error: reserved packet type 0\n");
}

#[test]
fn input_that_cannot_be_read_exits_2() {
    let finished = decode(&["--format", "hex"], b"10 zz");
    assert_eq!(finished.code(), Some(2));
    assert!(
        finished
            .stderr
            .contains("line 1, column 4: 'z' is not a hex digit"),
        "{}",
        finished.stderr
    );
    let finished = decode(&["--format", "pcap"], b"10 0c");
    assert_eq!(finished.code(), Some(2));
    assert!(
        finished.stderr.contains("not a pcap or pcapng capture"),
        "{}",
        finished.stderr
    );
    let finished = decode(&["/nonexistent/capture.pcap"], b"");
    assert_eq!(finished.code(), Some(2));
}

/// `--format raw` and `--format hex` read no bytes ahead: a live stream decodes as its bytes
/// come, the first packet before 512 bytes have arrived or stdin is closed.
#[test]
fn an_explicit_format_decodes_a_live_stream_as_it_comes() {
    for (format, pingreq) in [("raw", &b"\xc0\x00"[..]), ("hex", &b"c0 00\n"[..])] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_midge"))
            .args(["decode", "--format", format])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawns");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(pingreq).expect("write");
        stdin.flush().expect("flush");
        let line = lines.recv_timeout(Duration::from_secs(10));
        drop(stdin);
        if line.is_err() {
            let _ = child.kill();
        }
        let status = child.wait().expect("waits");
        let line =
            line.unwrap_or_else(|_| panic!("--format {format}: no line while stdin is open"));
        assert_eq!(line, "@0 PINGREQ");
        assert!(status.success(), "{status}");
    }
    // Inputs shorter than a peek, and empty ones.
    assert_eq!(
        decode(&["--format", "raw"], b"\xd0\x00").ok().stdout(),
        "@0 PINGRESP\n"
    );
    assert_eq!(decode(&["--format", "hex"], b"e0").code(), Some(1));
    assert_eq!(decode(&["--format", "raw"], b"").ok().stdout(), "");
    assert_eq!(decode(&["--format", "hex"], b"").ok().stdout(), "");
}

/// Raw MQTT whose first byte is an ASCII digit (a PUBLISH, 0x30 to 0x39) is raw, whatever
/// follows: auto-detection wants text that reads as hex.
#[test]
fn raw_publishes_that_start_with_a_digit_are_not_taken_for_hex() {
    // QoS 0 PUBLISH of 35 bytes ('#' is 0x23, which starts a comment in hex), topic "a/b".
    let mut publish = vec![0x30, 0x23, 0x00, 0x03, b'a', b'/', b'b'];
    publish.extend_from_slice(&[b'x'; 30]);
    let finished = decode(&[], &publish);
    assert_eq!(finished.code(), Some(0), "{}", finished.stderr);
    assert_eq!(
        finished.stdout(),
        format!(
            "@0 PUBLISH topic=\"a/b\" qos=0 payload=\"{}\"\n",
            "x".repeat(30)
        )
    );
    // QoS 1 ('2'), remaining length 9 (a tab), topic "9/9" and packet id "11": ASCII digits
    // and whitespace, then a NUL.
    let publish = b"2\t\x00\x039/911ok";
    let finished = decode(&[], publish);
    assert_eq!(finished.code(), Some(0), "{}", finished.stderr);
    assert_eq!(
        finished.stdout(),
        "@0 PUBLISH topic=\"9/9\" qos=1 packet_id=12593 payload=\"ok\"\n"
    );
    // Hex text stays hex, with comments and a cut-off last line.
    assert_eq!(decode(&[], b"# ping\nc0 00").ok().stdout(), "@0 PINGREQ\n");
}

// --- Captures cut short ----------------------------------------------------------------

/// An Ethernet frame of a TCP segment between two 127.0.0.1 ports.
fn tcp_frame(src: u16, dst: u16, seq: u32, flags: &str, payload: &[u8]) -> Vec<u8> {
    let mut builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([127, 0, 0, 1], [127, 0, 0, 1], 64)
        .tcp(src, dst, seq, 65_535);
    if flags.contains('S') {
        builder = builder.syn();
    }
    if flags.contains('F') {
        builder = builder.fin();
    }
    if flags.contains('A') {
        builder = builder.ack(1);
    }
    let mut data = Vec::new();
    builder.write(&mut data, payload).expect("frame");
    data
}

fn connect_packet(id: &str) -> Vec<u8> {
    let mut bytes = vec![0x10, 12 + id.len() as u8, 0, 4];
    bytes.extend_from_slice(b"MQTT\x04\x02\x00\x3c");
    bytes.extend_from_slice(&(id.len() as u16).to_be_bytes());
    bytes.extend_from_slice(id.as_bytes());
    bytes
}

/// A QoS 0 PUBLISH of `payload` to `topic`, 3.1.1.
fn publish_packet(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(payload);
    let mut bytes = vec![0x30];
    let mut len = body.len();
    loop {
        let digit = (len % 128) as u8;
        len /= 128;
        bytes.push(if len > 0 { digit | 0x80 } else { digit });
        if len == 0 {
            break;
        }
    }
    bytes.extend_from_slice(&body);
    bytes
}

/// A pcap written as `tcpdump -s SNAPLEN` writes one: frames longer than the snapshot length
/// keep their first SNAPLEN bytes and their length on the wire.
fn write_snapped_pcap(path: &Path, snaplen: u32, frames: &[Vec<u8>]) {
    let header = pcap_file::pcap::PcapHeader {
        snaplen,
        ..Default::default()
    };
    let mut writer =
        PcapWriter::with_header(File::create(path).expect("create"), header).expect("header");
    let mut time = Duration::from_secs(1_796_650_000);
    for data in frames {
        time += Duration::from_micros(100);
        let kept = &data[..data.len().min(snaplen as usize)];
        writer
            .write_packet(&PcapPacket::new(time, data.len() as u32, kept))
            .expect("write");
    }
}

/// A cut frame whose length on the wire, as the capture records it, is absurd (a hostile or
/// broken capture): the bytes missing are what the IP header says, and the stream goes on.
#[test]
fn a_cut_frame_with_an_absurd_wire_length_loses_what_its_ip_header_says() {
    let port = 50_003;
    let connect = connect_packet("c");
    let big = publish_packet("big", &[b'z'; 1000]);
    let after = publish_packet("after", b"ok");
    let mut seq = 1001u32;
    let mut frames = vec![
        tcp_frame(port, 1883, 1000, "S", b""),
        tcp_frame(port, 1883, seq, "A", &connect),
    ];
    seq += connect.len() as u32;
    frames.push(tcp_frame(port, 1883, seq, "A", &big));
    seq += big.len() as u32;
    frames.push(tcp_frame(port, 1883, seq, "A", &after));
    let dir = scratch("absurd-wire-length");
    let file = dir.join("absurd.pcap");
    let header = pcap_file::pcap::PcapHeader {
        snaplen: 96,
        ..Default::default()
    };
    let mut writer =
        PcapWriter::with_header(File::create(&file).expect("create"), header).expect("header");
    let mut time = Duration::from_secs(1_796_650_000);
    for data in &frames {
        time += Duration::from_micros(100);
        let kept = &data[..data.len().min(96)];
        // The cut frame claims almost 4 GiB on the wire.
        let wire = if data.len() > 96 {
            0xFFFF_FF00
        } else {
            data.len() as u32
        };
        writer
            .write_packet(&PcapPacket::new(time, wire, kept))
            .expect("write");
    }
    drop(writer);
    let finished = decode(&["--json", file.to_str().expect("utf-8")], b"");
    assert_eq!(finished.code(), Some(0), "{}", finished.stderr);
    let lines = json_lines(&finished);
    let sent = of(&lines, 0, "client_to_broker");
    assert_eq!(types(&sent), ["CONNECT", "PUBLISH"], "{lines:#?}");
    assert_eq!(sent[1].1["topic"], "after");
    let note = lines
        .iter()
        .find_map(|l| l["note"].as_str())
        .expect("a note for the cut frame");
    assert!(
        note.contains(&format!(
            "{} bytes of this stream are missing",
            big.len() - 42
        )),
        "{note}"
    );
}

#[test]
fn frames_cut_short_by_the_snapshot_length_leave_gaps_and_the_rest_decodes() {
    // Connection A (port 50001): CONNECT, a PUBLISH of 1,000 bytes that the snapshot length
    // cuts (its length is known: it is skipped), then a small PUBLISH that decodes.
    // Connection B (port 50002): one segment with two PUBLISHes that is cut inside the first,
    // so the second's start is lost: B's direction stops. A goes on after that.
    let (a, b) = (50_001, 50_002);
    let big = publish_packet("big", &[b'z'; 1000]);
    let after = publish_packet("after", b"ok");
    let pair = [
        publish_packet("p1", &[b'1'; 100]),
        publish_packet("p2", &[b'2'; 100]),
    ]
    .concat();
    let connect_a = connect_packet("a");
    let connect_b = connect_packet("b");
    let mut seq_a = 1001u32;
    let mut seq_b = 5001u32;
    let mut frames = vec![
        tcp_frame(a, 1883, 1000, "S", b""),
        tcp_frame(b, 1883, 5000, "S", b""),
        tcp_frame(a, 1883, seq_a, "A", &connect_a),
        tcp_frame(b, 1883, seq_b, "A", &connect_b),
    ];
    seq_a += connect_a.len() as u32;
    seq_b += connect_b.len() as u32;
    frames.push(tcp_frame(a, 1883, seq_a, "A", &big));
    seq_a += big.len() as u32;
    frames.push(tcp_frame(b, 1883, seq_b, "A", &pair));
    seq_b += pair.len() as u32;
    frames.push(tcp_frame(a, 1883, seq_a, "A", &after));
    frames.push(tcp_frame(b, 1883, seq_b, "A", &after));
    let dir = scratch("snaplen");
    let file = dir.join("snapped.pcap");
    write_snapped_pcap(&file, 96, &frames);

    let finished = decode(&["--json", file.to_str().expect("utf-8")], b"");
    assert_eq!(finished.code(), Some(0), "{}", finished.stderr);
    let lines = json_lines(&finished);
    let sent_a = of(&lines, 0, "client_to_broker");
    assert_eq!(types(&sent_a), ["CONNECT", "PUBLISH"], "{lines:#?}");
    assert_eq!(sent_a[1].1["topic"], "after");
    assert_eq!(sent_a[1].1["offset"], connect_a.len() + big.len());
    let sent_b = of(&lines, 1, "client_to_broker");
    assert_eq!(types(&sent_b), ["CONNECT"], "{lines:#?}");
    // Each cut frame is said, at its place in its stream; 96 bytes of a frame are 54 of
    // headers and 42 of payload.
    let notes: Vec<&Value> = lines.iter().filter(|l| l["note"].is_string()).collect();
    assert_eq!(notes.len(), 2, "{notes:#?}");
    let note_a = notes[0]["note"].as_str().expect("text");
    assert_eq!(notes[0]["stream"], 0);
    assert_eq!(notes[0]["offset"], connect_a.len() + 42);
    assert!(
        note_a.contains("frame 5 was cut short by the capture's snapshot length")
            && note_a.contains(&format!(
                "{} bytes of this stream are missing",
                big.len() - 42
            ))
            && note_a.contains(&format!(
                "the packet at @{} ({} bytes)",
                connect_a.len(),
                big.len()
            ))
            && note_a.contains("skipped"),
        "{note_a}"
    );
    let note_b = notes[1]["note"].as_str().expect("text");
    assert_eq!(notes[1]["stream"], 1);
    assert!(
        note_b.contains("frame 6 was cut short")
            && note_b.contains("the rest of this direction is not decoded"),
        "{note_b}"
    );
    assert!(
        finished.stderr.contains(
            "2 frames cut short by the capture's snapshot length, 2 directions with a gap"
        ),
        "{}",
        finished.stderr
    );
    // A pcapng capture cut the same way reads the same.
    let ng = dir.join("snapped.pcapng");
    let mut writer = PcapNgWriter::new(File::create(&ng).expect("create")).expect("header");
    let interface = InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 96,
        // The writer stores timestamps as nanoseconds.
        options: vec![InterfaceDescriptionOption::IfTsResol(9)],
    };
    writer.write_pcapng_block(interface).expect("interface");
    for (i, data) in frames.iter().enumerate() {
        let packet = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_secs(1_796_650_000)
                + Duration::from_micros(100 * (i as u64 + 1)),
            original_len: data.len() as u32,
            data: data[..data.len().min(96)].to_vec().into(),
            options: vec![],
        };
        writer.write_pcapng_block(packet).expect("packet");
    }
    drop(writer);
    let from_ng = decode(&["--json", ng.to_str().expect("utf-8")], b"");
    assert_eq!(from_ng.code(), Some(0), "{}", from_ng.stderr);
    assert_eq!(from_ng.stdout(), finished.stdout());

    // The text form says the same.
    let text = decode(&[file.to_str().expect("utf-8")], b"").ok();
    assert!(
        text.stdout().contains(&format!(
            "@{} note: frame 5 was cut short",
            connect_a.len() + 42
        )),
        "{}",
        text.stdout()
    );
}

/// tcpdump with a small snapshot length on loopback: the large message's frame is cut, and
/// the packets around it decode.
#[cfg(unix)]
#[test]
fn a_tcpdump_capture_with_a_small_snapshot_length_decodes_around_the_gap() {
    use std::os::unix::fs::PermissionsExt;
    if !clients_installed()
        || !require(
            "tcpdump (Debian package tcpdump; capturing needs root)",
            installed("tcpdump", &["--version"]),
        )
    {
        return;
    }
    let broker = start_broker();
    let port = broker.port().to_string();
    let dir = scratch("tcpdump-snaplen");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let file = dir.join("lo.pcap");
    let mut tcpdump = Command::new("tcpdump");
    tcpdump
        .args(["-i", "lo", "-U", "-n", "-s", "128", "-w"])
        .arg(&file)
        .args(["tcp", "port", &port]);
    let mut tcpdump = Running::spawn(tcpdump);
    tcpdump.wait_for("listening on", 1);
    let large = "x".repeat(3000);
    let published = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-i", "snap-1", "-q", "1"])
        .args(["-t", "big/1", "-m", &large])
        .status()
        .expect("mosquitto_pub runs");
    assert!(published.success());
    let deadline = Instant::now() + LIMIT;
    loop {
        let text = decode(&["--json", file.to_str().expect("utf-8")], b"").stdout();
        if text.contains("PUBACK") && text.contains("DISCONNECT") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tcpdump wrote too little: {text}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let stopped = tcpdump.interrupt();
    assert_eq!(stopped.code(), Some(0), "{}", stopped.stderr);

    let finished = decode(&["--json", file.to_str().expect("utf-8")], b"");
    assert_eq!(finished.code(), Some(0), "{}", finished.stderr);
    let lines = json_lines(&finished);
    let sent = of(&lines, 0, "client_to_broker");
    assert_eq!(types(&sent), ["CONNECT", "DISCONNECT"], "{lines:#?}");
    assert_eq!(
        types(&of(&lines, 0, "broker_to_client")),
        ["CONNACK", "PUBACK"]
    );
    assert!(
        lines.iter().any(|l| l["note"]
            .as_str()
            .is_some_and(|n| n.contains("cut short by the capture's snapshot length"))),
        "{lines:#?}"
    );
}

#[test]
fn max_buffer_cuts_are_errors_with_exit_1_in_plain_input_and_captures() {
    let publish = publish_packet("t", &[b'p'; 200]);
    let finished = decode(&["--format", "raw", "--max-buffer", "100"], &publish);
    assert_eq!(finished.code(), Some(1), "{}", finished.stderr);
    assert!(
        finished
            .stdout()
            .starts_with(&format!("@0 error: a packet of {} bytes", publish.len())),
        "{}",
        finished.stdout()
    );
    // The same packet in a capture: the same exit code, an error line too.
    let connect = connect_packet("c");
    let frames = vec![
        tcp_frame(50_003, 1883, 1, "A", &connect),
        tcp_frame(50_003, 1883, 1 + connect.len() as u32, "A", &publish),
    ];
    let dir = scratch("max-buffer");
    let file = dir.join("large.pcap");
    write_snapped_pcap(&file, 65_535, &frames);
    let finished = decode(&["--max-buffer", "100", file.to_str().expect("utf-8")], b"");
    assert_eq!(finished.code(), Some(1), "{}", finished.stderr);
    assert!(
        finished.stdout().contains(&format!(
            " error: stream cut: a packet of {} bytes",
            publish.len()
        )),
        "{}",
        finished.stdout()
    );
    // Bytes held past a missing segment: cut, error, exit 1.
    let frames = vec![
        tcp_frame(50_004, 1883, 1, "A", &connect),
        tcp_frame(50_004, 1883, 500, "A", &publish),
    ];
    write_snapped_pcap(&file, 65_535, &frames);
    let finished = decode(&["--max-buffer", "100", file.to_str().expect("utf-8")], b"");
    assert_eq!(finished.code(), Some(1), "{}", finished.stderr);
    assert!(
        finished
            .stdout()
            .contains(" error: stream cut: a segment is missing here"),
        "{}",
        finished.stdout()
    );
    // Without the limit both decode.
    let finished = decode(&[file.to_str().expect("utf-8")], b"");
    assert_eq!(finished.code(), Some(0), "{}", finished.stderr);
}

/// A connection that ended is done with at its end: what it left undecoded is said then,
/// before the packets of a connection that follows it.
#[test]
fn an_ended_connection_is_reported_when_it_ends() {
    let connect = connect_packet("first");
    let half = &publish_packet("t", b"payload")[..5];
    let second = connect_packet("second");
    let frames = vec![
        tcp_frame(50_005, 1883, 100, "S", b""),
        tcp_frame(1883, 50_005, 900, "SA", b""),
        tcp_frame(50_005, 1883, 101, "A", &connect),
        tcp_frame(50_005, 1883, 101 + connect.len() as u32, "A", half),
        tcp_frame(
            50_005,
            1883,
            101 + (connect.len() + half.len()) as u32,
            "FA",
            b"",
        ),
        tcp_frame(1883, 50_005, 901, "FA", b""),
        tcp_frame(50_006, 1883, 100, "S", b""),
        tcp_frame(50_006, 1883, 101, "A", &second),
    ];
    let dir = scratch("ended");
    let file = dir.join("ended.pcap");
    write_snapped_pcap(&file, 65_535, &frames);
    let finished = decode(&[file.to_str().expect("utf-8")], b"").ok();
    let text = finished.stdout();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].contains("CONNECT") && lines[0].contains("\"first\""),
        "{text}"
    );
    assert!(
        lines[1].contains("note: the input ends inside a packet: 5 of its 12 bytes"),
        "{text}"
    );
    assert!(lines[2].contains("\"second\""), "{text}");
    assert!(
        finished.stderr.contains("2 packets in 2 TCP connections"),
        "{}",
        finished.stderr
    );
}

/// Connections that never end are held at most `--max-connections` at once: past that the
/// least recently active one is dropped with a note, and the summary counts them.
#[test]
fn connections_that_never_end_are_capped_least_recently_active_first() {
    let keeper_connect = connect_packet("keeper");
    let mut keeper_seq = 101 + keeper_connect.len() as u32;
    let mut frames = vec![
        tcp_frame(19_999, 1883, 100, "S", b""),
        tcp_frame(19_999, 1883, 101, "A", &keeper_connect),
    ];
    let count: u16 = 3000;
    for i in 0..count {
        // One segment each, never a FIN or RST.
        frames.push(tcp_frame(20_000 + i, 1883, 7, "A", &connect_packet("c")));
        if i % 20 == 0 {
            // The keeper stays active: it is never the least recently active.
            let publish = publish_packet("k", b"alive");
            frames.push(tcp_frame(19_999, 1883, keeper_seq, "A", &publish));
            keeper_seq += publish.len() as u32;
        }
    }
    let dir = scratch("capped");
    let file = dir.join("capped.pcap");
    write_snapped_pcap(&file, 65_535, &frames);
    let finished = decode(
        &[
            file.to_str().expect("utf-8"),
            "--max-connections",
            "100",
            "--json",
        ],
        b"",
    )
    .ok();
    let lines = json_lines(&finished);
    let dropped: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["note"]
                .as_str()
                .is_some_and(|n| n.starts_with("connection dropped"))
        })
        .collect();
    // 3,001 connections, 100 held at the end.
    assert_eq!(dropped.len(), 2901, "{}", finished.stderr);
    assert!(
        dropped.iter().all(|l| l["from"] != "127.0.0.1:19999"),
        "the active connection was dropped"
    );
    // Dropped in the order they went quiet: the first ones first.
    assert_eq!(dropped[0]["from"], "127.0.0.1:20000");
    assert_eq!(dropped[1]["from"], "127.0.0.1:20001");
    let keeper = of(&lines, 0, "client_to_broker");
    assert_eq!(keeper.len(), 1 + 150, "every keeper packet decodes");
    assert!(
        finished
            .stderr
            .contains("3151 packets in 3001 TCP connections")
            && finished
                .stderr
                .contains("2901 connections dropped before they ended by --max-connections 100"),
        "{}",
        finished.stderr
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Hex input is read a line at a time, and a line is bounded: one longer than 1 MiB is
/// refused (exit 2) rather than held whole; a line just under the bound decodes.
#[test]
fn a_hex_line_longer_than_a_mebibyte_is_refused() {
    let mut long = vec![b'0'; 3 * 1024 * 1024];
    long.extend_from_slice(b"\n");
    let finished = decode(&["--format", "hex"], &long);
    assert_eq!(finished.code(), Some(2), "{}", finished.stderr);
    assert!(
        finished
            .stderr
            .contains("line 1 is longer than 1048576 bytes"),
        "{}",
        finished.stderr
    );
    assert_eq!(finished.stdout(), "");
    // The second line is the long one: the first decodes before it is refused.
    let mut input = b"c0 00\n".to_vec();
    input.extend_from_slice(&long);
    let finished = decode(&["--format", "hex"], &input);
    assert_eq!(finished.code(), Some(2), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("line 2 is longer"),
        "{}",
        finished.stderr
    );
    assert_eq!(finished.stdout(), "@0 PINGREQ\n");
    // A PINGREQ padded with spaces to just under the bound is fine.
    let mut padded = b"c0 00".to_vec();
    padded.resize(1024 * 1024 - 1, b' ');
    padded.push(b'\n');
    assert_eq!(
        decode(&["--format", "hex"], &padded).ok().stdout(),
        "@0 PINGREQ\n"
    );
}
