//! The configured limits bound memory: what the broker keeps after a packet is handled holds
//! only its own bytes, never the read buffer it arrived in.
//!
//! Each test sends small packets whose contents the broker keeps (a retained message, a
//! message queued for an offline client, a session's client identifier and will, a
//! subscription's filter, a topic alias in either direction) in the same read as a large
//! packet whose contents it does not keep, and checks that the process's resident memory grows
//! by at most about twice the bytes kept, plus a small constant for each entry. A kept part
//! that shared its read buffer would hold the large packet's memory too: megabytes per entry.
//!
//! The tests measure the whole process, so they run one at a time.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use midge_broker::{BrokerConfig, BrokerHandle};
use midge_codec::{
    Connect, Packet, ProtocolVersion, Publish, QoS, ReasonCode, Subscribe, SubscriptionOptions,
    Will,
};

/// One measurement at a time: they read the resident memory of the whole process.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Size of the large packets sent along with the small ones.
const LARGE: usize = 2 << 20;
/// Entries each test makes: with a large packet held by each, hundreds of MiB.
const ENTRIES: usize = 100;
/// What one entry may cost beyond twice its bytes: its message or session structures, its
/// index nodes, the allocator's rounding.
const PER_ENTRY: usize = 4 << 10;
/// Room for what the measurement itself moves: buffers, allocator caches, tasks.
const SLACK: usize = 24 << 20;

fn config() -> BrokerConfig {
    let mut config = test_config();
    config.limits.max_packet_size = 4 << 20;
    config.limits.topic_alias_maximum = ENTRIES as u16;
    config
}

/// A QoS 0 PUBLISH of `LARGE` bytes to a topic nobody subscribes to, encoded.
fn large_publish(out: &mut BytesMut, version: ProtocolVersion) {
    let publish = Publish {
        topic: "nobody/listens".into(),
        payload: Bytes::from(vec![b'L'; LARGE]),
        ..Publish::default()
    };
    Packet::Publish(publish)
        .encode(version, out)
        .expect("encodes");
}

/// `packet` after a large PUBLISH, encoded in one buffer: the broker reads them together.
fn after_large(packet: Packet) -> BytesMut {
    let mut out = BytesMut::new();
    large_publish(&mut out, V5);
    packet.encode(V5, &mut out).expect("encodes");
    out
}

/// A topic or filter longer than a string held inline, unique to entry `n`.
fn long_name(prefix: &str, n: usize) -> String {
    format!("{prefix}/a-name-long-enough-not-to-be-held-inline/{n}")
}

fn resident_bytes() -> usize {
    rss_kib().expect("RSS readable on Linux") as usize * 1024
}

/// Waits until `done` holds (polling the broker), at most 60 seconds.
async fn until(
    broker: &BrokerHandle,
    what: &str,
    done: impl Fn(&midge_broker::BrokerStats) -> bool,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stats = broker.stats();
        if done(&stats) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {stats:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that resident memory grew from `before` by at most twice `kept` bytes plus
/// `PER_ENTRY` for each of `ENTRIES` and `SLACK`.
async fn assert_bounded(what: &str, before: usize, kept: usize) {
    // Let freed buffers go back first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = resident_bytes();
    let grown = after.saturating_sub(before);
    let bound = 2 * kept + ENTRIES * PER_ENTRY + SLACK;
    eprintln!(
        "{what}: {ENTRIES} entries keeping {kept} bytes grew RSS by {grown} bytes (bound {bound})"
    );
    assert!(
        grown <= bound,
        "{what}: RSS grew by {} KiB for {ENTRIES} entries of {kept} bytes in all; at most {} KiB \
         expected",
        grown / 1024,
        bound / 1024
    );
}

async fn start_measured() -> (BrokerHandle, SocketAddr) {
    let broker = start(config()).await;
    let addr = broker.local_addr();
    (broker, addr)
}

/// Warms up what every test uses once (a connection, a large packet through the broker), so
/// that it is not counted against the entries.
async fn warm_up(addr: SocketAddr) {
    let mut c = Peer::connect(addr, V5, "").await;
    let mut out = BytesMut::new();
    for _ in 0..3 {
        large_publish(&mut out, V5);
    }
    c.send_raw(&out).await;
    c.publish("warm/up", "x", QoS::AtLeastOnce, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_hold_only_their_own_bytes() {
    let _serial = SERIAL.lock().await;
    let (broker, addr) = start_measured().await;
    warm_up(addr).await;
    let before = resident_bytes();
    let mut c = Peer::connect(addr, V5, "").await;
    let mut kept = 0;
    for n in 0..ENTRIES {
        let topic = long_name("retained", n);
        kept += topic.len() + 1;
        let p = c.publish_packet(&topic, "r", QoS::AtMostOnce, true);
        c.send_raw(&after_large(Packet::Publish(p))).await;
    }
    until(&broker, "retained", |s| s.retained_messages == ENTRIES).await;
    assert_bounded("retained messages", before, kept).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_queued_for_an_offline_session_hold_only_their_own_bytes() {
    let _serial = SERIAL.lock().await;
    let (broker, addr) = start_measured().await;
    warm_up(addr).await;
    let mut connect = Connect::new(V5, "offline-subscriber");
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(3600);
    let (mut sub, _) = Peer::connect_with(addr, connect).await;
    sub.subscribe("queued/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    until(&broker, "offline", |s| s.clients_connected == 0).await;
    let before = resident_bytes();
    let mut c = Peer::connect(addr, V5, "").await;
    let mut kept = 0;
    for n in 0..ENTRIES {
        let topic = long_name("queued", n);
        kept += topic.len() + 1;
        let p = c.publish_packet(&topic, "q", QoS::AtLeastOnce, false);
        c.send_raw(&after_large(Packet::Publish(p))).await;
        match c.recv_packet().await {
            Packet::PubAck(ack) => assert_eq!(ack.reason_code, ReasonCode::SUCCESS),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    assert_bounded("offline queue", before, kept).await;
    broker.shutdown().await;
}

/// Each client's CONNECT is itself large (user properties, which are not kept), and its client
/// identifier, user name and will are kept in its offline session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_sessions_and_their_wills_hold_only_their_own_bytes() {
    let _serial = SERIAL.lock().await;
    let (broker, addr) = start_measured().await;
    warm_up(addr).await;
    let before = resident_bytes();
    let mut kept = 0;
    for n in 0..ENTRIES {
        let client_id = long_name("client", n);
        let will_topic = long_name("will", n);
        kept += client_id.len() + will_topic.len() + 1 + "user".len();
        let mut will = Will {
            topic: will_topic.into(),
            payload: Bytes::from_static(b"w"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
        };
        // Waits a day: kept with the offline session.
        will.properties.will_delay_interval = Some(86_400);
        let mut connect = Connect::new(V5, client_id);
        connect.clean_start = false;
        connect.properties.session_expiry_interval = Some(86_400);
        connect.will = Some(will);
        connect.username = Some("user".into());
        connect.password = Some(Bytes::from_static(b"secret"));
        // Not kept: about `LARGE` bytes in 60 KB values.
        let value: midge_codec::ByteStr = "v".repeat(60_000).into();
        connect.properties.user_properties = (0..LARGE / 60_000)
            .map(|_| (midge_codec::ByteStr::from("k"), value.clone()))
            .collect();
        let mut out = BytesMut::new();
        Packet::Connect(Box::new(connect))
            .encode(V5, &mut out)
            .expect("encodes");
        // And a large PUBLISH in the same read.
        large_publish(&mut out, V5);
        let mut c = Peer::tcp(addr, V5).await;
        c.send_raw(&out).await;
        match c.recv_packet().await {
            Packet::ConnAck(ack) => assert_eq!(ack.reason_code, ReasonCode::SUCCESS),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        // Gone without DISCONNECT: the will waits for its delay.
        drop(c);
    }
    until(&broker, "sessions", |s| {
        s.clients_connected == 0 && s.sessions == ENTRIES
    })
    .await;
    assert_bounded("offline sessions and wills", before, kept).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_hold_only_their_own_bytes() {
    let _serial = SERIAL.lock().await;
    let (broker, addr) = start_measured().await;
    warm_up(addr).await;
    let before = resident_bytes();
    let mut c = Peer::connect(addr, V5, "subscriber").await;
    let mut kept = 0;
    for n in 0..ENTRIES {
        let filter = long_name("filter", n);
        kept += filter.len();
        let subscribe = Subscribe {
            packet_id: pid(n as u16 + 1),
            filters: vec![(filter.into(), SubscriptionOptions::qos(QoS::AtLeastOnce))],
            properties: Default::default(),
        };
        c.send_raw(&after_large(Packet::Subscribe(subscribe))).await;
        match c.recv_packet().await {
            Packet::SubAck(ack) => assert!(ack.reason_codes[0].is_success(), "{ack:?}"),
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }
    assert_eq!(broker.stats().subscriptions, ENTRIES);
    assert_bounded("subscriptions", before, kept).await;
    broker.shutdown().await;
}

/// Topic aliases a client sets towards the broker, each in the same read as a large packet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_aliases_from_a_client_hold_only_their_own_bytes() {
    let _serial = SERIAL.lock().await;
    let (broker, addr) = start_measured().await;
    warm_up(addr).await;
    let before = resident_bytes();
    let mut c = Peer::connect(addr, V5, "aliasing").await;
    let mut kept = 0;
    for n in 0..ENTRIES {
        let topic = long_name("alias-in", n);
        kept += topic.len();
        let mut p = c.publish_packet(&topic, "a", QoS::AtLeastOnce, false);
        p.properties.topic_alias = std::num::NonZeroU16::new(n as u16 + 1);
        c.send_raw(&after_large(Packet::Publish(p))).await;
        match c.recv_packet().await {
            Packet::PubAck(_) => {}
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    assert_bounded("inbound topic aliases", before, kept).await;
    broker.shutdown().await;
}

/// Topic aliases the broker sets towards a subscriber, for messages that carry large payloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_aliases_to_a_client_hold_only_their_own_bytes() {
    let _serial = SERIAL.lock().await;
    let (broker, addr) = start_measured().await;
    warm_up(addr).await;
    let before = resident_bytes();
    let mut connect = Connect::new(V5, "alias-receiver");
    connect.properties.topic_alias_maximum = Some(ENTRIES as u16);
    connect.properties.maximum_packet_size = std::num::NonZeroU32::new(8 << 20);
    let (mut sub, _) = Peer::connect_with(addr, connect).await;
    sub.subscribe("alias-out/#", QoS::AtMostOnce).await;
    let mut c = Peer::connect(addr, V5, "").await;
    let mut kept = 0;
    for n in 0..ENTRIES {
        let topic = long_name("alias-out", n);
        kept += topic.len();
        let mut p = c.publish_packet(&topic, "", QoS::AtMostOnce, false);
        p.payload = Bytes::from(vec![b'P'; LARGE]);
        c.send(Packet::Publish(p)).await;
        let received = sub.recv_publish().await;
        assert!(
            received.properties.topic_alias.is_some(),
            "the broker set an alias"
        );
        assert_eq!(received.payload.len(), LARGE);
    }
    assert_bounded("outbound topic aliases", before, kept).await;
    broker.shutdown().await;
}

/// CONNECTs that wait for the broker's decision (here: for a busy connection to hand over
/// the session) do not hold their user properties, which decode to many times their wire
/// size: twenty 1 MB CONNECTs hold well under four times their size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_waiting_for_a_decision_hold_about_their_size() {
    let _serial = SERIAL.lock().await;
    let mut config = test_config();
    // The busy connection below waits this long for room, and the CONNECTs with it.
    config.limits.backpressure_timeout_ms = 6_000;
    config.limits.close_timeout_ms = 2_000;
    config.sessions.max_queued_messages = 1;
    config.limits.inbox_capacity = 1;
    let broker = start(config).await;
    let addr = broker.local_addr();
    assert_healthy(addr).await;
    let mut filler = Peer::connect(addr, V5, "filler").await;
    let full = full_subscriber(addr, &mut filler, "full", "t").await;
    // The holder of "x" is busy waiting for room in the full subscriber's inbox.
    let (mut holder, _) = Peer::connect_with(addr, receive_maximum_1("x", true)).await;
    let p = holder.publish_packet("t", "x", QoS::AtLeastOnce, false);
    holder.send(Packet::Publish(p)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut connect = Connect::new(V5, "x");
    connect.properties.user_properties =
        vec![(midge_codec::ByteStr::new(), midge_codec::ByteStr::new()); 200_000];
    let mut encoded = BytesMut::new();
    Packet::Connect(Box::new(connect))
        .encode(V5, &mut encoded)
        .expect("encodes");
    let wire = encoded.len();
    let before = resident_bytes();
    const CONNECTS: usize = 20;
    let mut parked = Vec::new();
    for _ in 0..CONNECTS {
        let mut c = Peer::tcp(addr, V5).await;
        c.send_raw(&encoded).await;
        parked.push(c);
    }
    let mut grown = 0;
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        grown = grown.max(resident_bytes().saturating_sub(before));
    }
    eprintln!("{CONNECTS} CONNECTs of {wire} bytes waiting: RSS grew by up to {grown} bytes");
    assert!(
        grown < 4 * CONNECTS * wire,
        "RSS grew by {} MiB for {CONNECTS} CONNECTs of {wire} bytes",
        grown >> 20
    );
    drop((parked, full, holder));
    broker.shutdown().await;
}

/// CPU time this process has used (all threads), from `/proc/self/stat` (Linux).
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime, fields 14 and 15 of the whole line, in clock ticks (100 per second).
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// A subscriber that stops reading, with more deliveries arriving for it, costs the broker no
/// CPU while nothing else happens: its connection waits for the socket to take output, and
/// does not spin. (A connection that kept polling for the deliveries it could not send used a
/// whole core.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_costs_no_cpu() {
    let _serial = SERIAL.lock().await;
    let (broker, addr) = start_measured().await;
    let mut subscriber = Peer::connect(addr, V5, "stalled").await;
    subscriber.subscribe("stall/#", QoS::AtMostOnce).await;
    let mut publisher = Peer::connect(addr, V5, "publisher").await;
    let payload = "x".repeat(16 << 10);
    for _ in 0..1505 {
        publisher
            .publish("stall/x", &payload, QoS::AtMostOnce, false)
            .await;
    }
    // Settled: the publisher's last QoS 1 publish is answered once all before it are routed.
    publisher
        .publish("stall/x", "last", QoS::AtLeastOnce, false)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let Some(before) = cpu_time() else {
        eprintln!("no /proc/self/stat here: skipped");
        return;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_time().expect("read before") - before;
    assert!(
        used < Duration::from_millis(300),
        "the broker used {used:?} of CPU in 2 s with nothing to do"
    );
    drop(subscriber);
    broker.shutdown().await;
}

/// Hostile handshakes that stall half-way hold a bounded amount each, and everything they
/// hold is freed when `connect_timeout_ms` closes them: TLS connections that sent most of a
/// maximum-size handshake record, and WebSocket connections that sent most of the largest
/// HTTP request the upgrade reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tls_and_websocket_handshakes_hold_bounded_memory() {
    use tokio::io::AsyncWriteExt;
    let _serial = SERIAL.lock().await;
    let pki = midge_testkit::certs::TestPki::generate();
    let text = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[listener.tls]\ncert = {:?}\nkey = {:?}\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"ws\"\n\
         [limits]\nconnect_timeout_ms = 4000\n[sys]\ninterval_secs = 0\n",
        pki.server_cert.display().to_string(),
        pki.server_key.display().to_string()
    );
    let config: BrokerConfig = toml::from_str(&text).expect("config");
    let broker = midge_broker::Broker::builder()
        .config(config)
        .start()
        .await
        .expect("starts");
    let tls = broker.listener_addr(0).expect("tls");
    let ws = broker.listener_addr(1).expect("ws");
    // A handshake record header announcing 16 KiB, the most TLS allows, and all but the last
    // byte of it.
    let mut record = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x3f, 0xfc];
    record.resize(5 + 0x4000 - 1, 0);
    // An upgrade request with headers up to 60 KiB, never ended.
    let mut request = b"GET /mqtt HTTP/1.1\r\nHost: x\r\n".to_vec();
    while request.len() < 60 << 10 {
        request.extend_from_slice(
            b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
        );
    }
    const EACH: usize = 150;
    let before = resident_bytes();
    let mut stalled = Vec::new();
    for _ in 0..EACH {
        for (addr, bytes) in [(tls, &record), (ws, &request)] {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            stream.write_all(bytes).await.expect("write");
            stalled.push(stream);
        }
    }
    let sent = EACH * (record.len() + request.len());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = resident_bytes().saturating_sub(before);
    eprintln!(
        "{EACH} stalled TLS and {EACH} stalled WebSocket handshakes, {sent} bytes sent: RSS grew by {during} bytes"
    );
    // What they sent, held once, and the state of each handshake: not more.
    let bound = 2 * sent + 2 * EACH * (32 << 10) + SLACK;
    assert!(
        during <= bound,
        "RSS grew by {} KiB, bound {} KiB",
        during >> 10,
        bound >> 10
    );
    until(&broker, "stalled handshakes closed", |s| {
        s.transport_errors == 2 * EACH as u64
    })
    .await;
    drop(stalled);
    broker.shutdown().await;
}

/// A WebSocket client that sends pings and never reads, before any CONNECT, makes the broker
/// stop reading once its pongs fill the socket: they do not pile up in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_pings_from_a_client_that_never_reads_do_not_pile_up() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _serial = SERIAL.lock().await;
    let text = "[[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"ws\"\n\
                [limits]\nconnect_timeout_ms = 60000\n[sys]\ninterval_secs = 0\n";
    let config: BrokerConfig = toml::from_str(text).expect("config");
    let broker = midge_broker::Broker::builder()
        .config(config)
        .start()
        .await
        .expect("starts");
    let addr = broker.local_addr();
    let mut ws = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let upgrade = format!(
        "GET /mqtt HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    );
    ws.write_all(upgrade.as_bytes()).await.expect("write");
    let mut response = vec![0u8; 1024];
    let n = ws.read(&mut response).await.expect("read");
    assert!(response[..n].starts_with(b"HTTP/1.1 101"));
    let before = resident_bytes();
    // Masked pings with 125-byte payloads (a zero mask key: the payload as is).
    let mut frame = vec![0x89, 0x80 | 125, 0, 0, 0, 0];
    frame.extend_from_slice(&[b'x'; 125]);
    let batch: Vec<u8> = frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * 1000)
        .collect();
    let mut sent = 0;
    // Up to 80 MB of pings, until the broker stops taking them.
    while sent < 600_000 {
        match tokio::time::timeout(Duration::from_secs(1), ws.write_all(&batch)).await {
            Ok(written) => written.expect("write"),
            Err(_) => break,
        }
        sent += 1000;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = resident_bytes().saturating_sub(before);
    eprintln!("{sent} pings sent to a client that never reads: RSS grew by {grown} bytes");
    assert!(
        sent < 600_000,
        "the broker kept reading pings it could not answer"
    );
    assert!(grown < SLACK, "RSS grew by {} KiB", grown >> 10);
    drop(ws);
    broker.shutdown().await;
}

/// core/connection.rs `AclMemo`: a connection remembers the ACL's answers with a clone of the
/// topic. A topic longer than a string held inline shares the PUBLISH it arrived in, payload
/// included: each remembered answer keeps a whole packet alive after the broker is done with
/// it — here refused by the ACL, so nothing of it is kept at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rev2_acl_answers_remembered_hold_only_their_own_bytes() {
    let _serial = SERIAL.lock().await;
    let dir = std::env::temp_dir().join(format!("midge-rev2-memo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let acl = dir.join("acl");
    std::fs::write(&acl, "topic readwrite open/#\n").expect("acl");
    let mut config = config();
    config.auth.acl_file = Some(acl);
    let broker = start(config).await;
    let addr = broker.local_addr();
    warm_up(addr).await;
    let before = resident_bytes();
    let mut clients = Vec::new();
    for c in 0..ENTRIES / 4 {
        let mut peer = Peer::connect(addr, V5, "").await;
        for n in 0..4 {
            let mut p =
                peer.publish_packet(&long_name("denied", c * 4 + n), "", QoS::AtLeastOnce, false);
            p.payload = Bytes::from(vec![b'L'; LARGE]);
            assert_eq!(peer.publish_full(p).await, ReasonCode::NOT_AUTHORIZED);
        }
        clients.push(peer);
    }
    assert_bounded("remembered ACL answers", before, 0).await;
    drop(clients);
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
