//! The server state machine's PUBLISH paths, without sockets: what a broker's connection task
//! spends per message in `midge-proto`.
//!
//! - `server_fanout/<case>`: one shared message delivered [`FANOUT`] times to one connection
//!   (`deliver`), written out (`poll_transmit`) and, at QoS 1, acknowledged by the client
//!   (PUBACK into `handle_packet`). Every delivery of a fan-out takes this path once, on the
//!   subscriber's connection; the cases differ in what varies per delivery (packet identifier,
//!   subscription identifier) and in what the message carries (properties).
//! - `server_inbound/<case>`: [`INBOUND`] QoS 1 PUBLISH packets from a client in one read
//!   buffer, decoded and checked (`handle_bytes`), reported (`poll_event`), acknowledged
//!   (`acknowledge`) and the PUBACKs written (`poll_transmit`): the publisher's side.
//!
//! Throughput is the bytes written (fan-out) or read (inbound).
//!
//! Run: `cargo bench -p midge-benches --bench proto`.

use std::hint::black_box;
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use midge_codec::{
    ByteStr, Connect, Packet, PacketId, ProtocolVersion, PubAck, Publish, QoS, ReasonCode,
    SubscriptionId,
};
use midge_proto::server::{ServerConfig, ServerConnection, ServerEvent};
use midge_proto::session::Delivery;
use midge_proto::Message;

/// Deliveries per iteration of `server_fanout`.
const FANOUT: usize = 64;
/// PUBLISH packets per read buffer in `server_inbound`.
const INBOUND: usize = 32;
/// 20 bytes, like a typical `site/device/metric` topic.
const TOPIC: &str = "sensors/dev-0042/tmp";

fn new_server(config: ServerConfig, now: Instant) -> ServerConnection {
    ServerConnection::new(Arc::new(config), now)
}

fn delivery(message: &Arc<Message>, qos: QoS, ids: &[SubscriptionId], now: Instant) -> Delivery {
    let mut delivery = Delivery::new(message.clone(), now);
    delivery.qos = qos;
    delivery.subscription_ids = ids.to_vec();
    delivery
}

/// A connected server: CONNECT answered, CONNACK written.
fn connected(version: ProtocolVersion, now: Instant) -> ServerConnection {
    let mut config = ServerConfig::default();
    config.max_inflight = u16::MAX;
    config.receive_maximum = u16::MAX;
    config.queue_limits.max_messages = 1 << 20;
    let mut server = new_server(config, now);
    let mut connect = Connect::new(version, "bench-subscriber");
    connect.keep_alive = 0;
    server.handle_packet(now, Packet::Connect(Box::new(connect)));
    while server.poll_event().is_some() {}
    server.accept(now, None);
    let mut out = BytesMut::new();
    while server.poll_transmit(now, &mut out) {}
    assert!(server.is_connected());
    server
}

/// The message of a fan-out case.
fn message(qos: QoS, properties: bool) -> Arc<Message> {
    let mut message = Message::new(ByteStr::from_static(TOPIC), vec![0xA5; 64], qos);
    if properties {
        let p = &mut message.properties;
        p.set_content_type(Some(ByteStr::from_static("application/json")))
            .expect("valid");
        p.push_user_property("site", "plant-7").expect("valid");
        p.push_user_property("unit", "celsius").expect("valid");
    }
    Arc::new(message)
}

/// Identifiers the server hands out, in order, when every earlier one was acknowledged.
struct Ids(u16);

impl Ids {
    fn next(&mut self) -> PacketId {
        self.0 = self.0.wrapping_add(1);
        if self.0 == 0 {
            self.0 = 1;
        }
        NonZeroU16::new(self.0).expect("not zero")
    }
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("server_fanout");
    let id = SubscriptionId::new(7).expect("valid");
    let cases: [(&str, ProtocolVersion, QoS, bool, &[SubscriptionId]); 5] = [
        (
            "v5_qos0_subid",
            ProtocolVersion::V5,
            QoS::AtMostOnce,
            false,
            &[id],
        ),
        ("v5_qos1", ProtocolVersion::V5, QoS::AtLeastOnce, false, &[]),
        (
            "v5_qos1_subid",
            ProtocolVersion::V5,
            QoS::AtLeastOnce,
            false,
            &[id],
        ),
        (
            "v5_qos1_props_subid",
            ProtocolVersion::V5,
            QoS::AtLeastOnce,
            true,
            &[id],
        ),
        (
            "v311_qos1",
            ProtocolVersion::V3_1_1,
            QoS::AtLeastOnce,
            false,
            &[],
        ),
    ];
    for (name, version, qos, properties, ids) in cases {
        let now = Instant::now();
        let message = message(qos, properties);
        let mut server = connected(version, now);
        let mut ids_out = Ids(0);
        let mut out = BytesMut::with_capacity(64 * 1024);
        // One round, to learn the bytes written.
        let round = |server: &mut ServerConnection, out: &mut BytesMut, ids_out: &mut Ids| {
            out.clear();
            for _ in 0..FANOUT {
                server.deliver(delivery(&message, qos, ids, now));
            }
            while server.poll_transmit(now, out) {}
            if qos != QoS::AtMostOnce {
                for _ in 0..FANOUT {
                    let ack = Packet::PubAck(PubAck::new(ids_out.next()));
                    server.handle_packet(now, ack);
                }
            }
            out.len()
        };
        let written = round(&mut server, &mut out, &mut ids_out);
        assert!(written > FANOUT * 64, "{name}: {written} bytes written");
        assert_eq!(server.session().map(|s| s.in_flight()), Some(0), "{name}");
        group.throughput(Throughput::Bytes(written as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| black_box(round(&mut server, &mut out, &mut ids_out)));
        });
    }
    group.finish();
}

fn inbound(c: &mut Criterion) {
    let mut group = c.benchmark_group("server_inbound");
    for (name, version) in [
        ("v5_qos1", ProtocolVersion::V5),
        ("v311_qos1", ProtocolVersion::V3_1_1),
    ] {
        let now = Instant::now();
        let mut stream = BytesMut::new();
        for n in 1..=INBOUND {
            let publish = Publish {
                qos: QoS::AtLeastOnce,
                topic: ByteStr::from_static(TOPIC),
                packet_id: NonZeroU16::new(n as u16),
                payload: Bytes::from(vec![0xA5; 64]),
                ..Publish::default()
            };
            Packet::Publish(publish)
                .encode(version, &mut stream)
                .expect("encodes");
        }
        let stream = stream.freeze();
        let mut server = connected(version, now);
        let mut out = BytesMut::with_capacity(4096);
        group.throughput(Throughput::Bytes(stream.len() as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_batched(
                || BytesMut::from(&stream[..]),
                |mut input| {
                    server.handle_bytes(now, &mut input);
                    let mut routed = 0;
                    while let Some(event) = server.poll_event() {
                        if let ServerEvent::Publish {
                            message,
                            packet_id: Some(id),
                        } = event
                        {
                            routed += message.payload.len();
                            server.acknowledge(id, ReasonCode::SUCCESS);
                        }
                    }
                    out.clear();
                    while server.poll_transmit(now, &mut out) {}
                    assert!(server.is_connected());
                    (input, routed)
                },
                BatchSize::NumIterations(64),
            );
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = fanout, inbound
}
criterion_main!(benches);
