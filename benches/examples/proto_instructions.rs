//! The scenarios of `--bench proto` and the 64-byte PUBLISH of `--bench codec`, run a fixed
//! number of times, for counting instructions: on these shared, noisy machines an instruction
//! count is exact where a time moves by ±30 %. The count of one iteration is the difference
//! between two runs, so that setup cancels out:
//!
//! ```text
//! cargo build --release -p midge-benches --example proto_instructions
//! count() { valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
//!     target/release/examples/proto_instructions "$1" "$2" 2>&1 | awk '/I *refs/ {gsub(",", "", $NF); print $NF}'; }
//! echo $(( ($(count fanout_v5_qos1 100) - $(count fanout_v5_qos1 50)) / 50 ))   # per 64 deliveries
//! ```
//!
//! Scenarios: `fanout_v5_qos0_subid`, `fanout_v5_qos1`, `fanout_v5_qos1_subid`,
//! `fanout_v5_qos1_props_subid`, `fanout_v311_qos1` (64 deliveries of one message, written
//! and, at QoS 1, acknowledged), `inbound_v5_qos1`, `inbound_v311_qos1` (32 QoS 1 PUBLISH
//! packets read, reported, acknowledged and the PUBACKs written), `decode_v5_64B`,
//! `decode_v311_64B`, `encode_v5_64B`, `encode_v311_64B` (one PUBLISH).
use std::hint::black_box;
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use midge_codec::{
    ByteStr, Connect, Packet, PacketId, ProtocolVersion, PubAck, Publish, QoS, ReasonCode,
    SubscriptionId, MAX_PACKET_SIZE,
};
use midge_proto::server::{ServerConfig, ServerConnection, ServerEvent};
use midge_proto::session::Delivery;
use midge_proto::Message;

/// Deliveries per iteration of a fan-out scenario.
const FANOUT: usize = 64;
/// PUBLISH packets per iteration of an inbound scenario.
const INBOUND: usize = 32;
/// 20 bytes, like a typical `site/device/metric` topic.
const TOPIC: &str = "sensors/dev-0042/tmp";

fn new_server(config: ServerConfig, now: Instant) -> ServerConnection {
    ServerConnection::new(Arc::new(config), now)
}

fn delivery(message: &Arc<Message>, qos: QoS, ids: &[SubscriptionId], now: Instant) -> Delivery {
    let mut d = Delivery::new(message.clone(), now);
    d.qos = qos;
    d.retain = false;
    d.subscription_ids = ids.to_vec();
    d
}

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
    server
}

fn message(qos: QoS, properties: bool) -> Arc<Message> {
    let mut message = Message::new(ByteStr::from_static(TOPIC), vec![0xA5; 64], qos);
    if properties {
        let p = &mut message.properties;
        p.set_content_type(Some(ByteStr::from_static("application/json")))
            .unwrap();
        p.push_user_property("site", "plant-7").unwrap();
        p.push_user_property("unit", "celsius").unwrap();
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
        NonZeroU16::new(self.0).unwrap()
    }
}

fn fanout(
    version: ProtocolVersion,
    qos: QoS,
    properties: bool,
    ids: &[SubscriptionId],
    iters: usize,
) {
    let now = Instant::now();
    let message = message(qos, properties);
    let mut server = connected(version, now);
    let mut ids_out = Ids(0);
    let mut out = BytesMut::with_capacity(64 * 1024);
    for _ in 0..iters {
        out.clear();
        for _ in 0..FANOUT {
            server.deliver(delivery(&message, qos, ids, now));
        }
        while server.poll_transmit(now, &mut out) {}
        if qos != QoS::AtMostOnce {
            for _ in 0..FANOUT {
                server.handle_packet(now, Packet::PubAck(PubAck::new(ids_out.next())));
            }
        }
        black_box(out.len());
    }
}

fn inbound(version: ProtocolVersion, iters: usize) {
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
            .unwrap();
    }
    let stream = stream.freeze();
    let mut server = connected(version, now);
    let mut out = BytesMut::with_capacity(4096);
    for _ in 0..iters {
        let mut input = BytesMut::from(&stream[..]);
        server.handle_bytes(now, &mut input);
        while let Some(event) = server.poll_event() {
            if let ServerEvent::Publish {
                packet_id: Some(id),
                ..
            } = event
            {
                server.acknowledge(id, ReasonCode::SUCCESS);
            }
        }
        out.clear();
        while server.poll_transmit(now, &mut out) {}
        assert!(server.is_connected());
    }
}

fn codec_publish(version: ProtocolVersion, decode: bool, iters: usize) {
    let publish = Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        topic: ByteStr::from_static(TOPIC),
        packet_id: NonZeroU16::new(4242),
        payload: Bytes::from(vec![0xA5; 64]),
        ..Publish::default()
    });
    let mut wire = BytesMut::new();
    publish.encode(version, &mut wire).unwrap();
    let wire = wire.freeze();
    let decoded = Packet::decode_bytes(&mut wire.clone(), version, MAX_PACKET_SIZE)
        .unwrap()
        .unwrap();
    let mut out = BytesMut::with_capacity(256);
    for _ in 0..iters {
        if decode {
            let mut buf = BytesMut::from(&wire[..]);
            black_box(Packet::decode(&mut buf, black_box(version), MAX_PACKET_SIZE).ok());
        } else {
            out.clear();
            black_box(&decoded)
                .encode(black_box(version), &mut out)
                .ok();
            black_box(out.len());
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(iters) = args.get(2).and_then(|n| n.parse().ok()) else {
        eprintln!("usage: proto_instructions <scenario> <iterations> (scenarios: see the source)");
        std::process::exit(2);
    };
    let id = [SubscriptionId::new(7).unwrap()];
    let (v5, v3) = (ProtocolVersion::V5, ProtocolVersion::V3_1_1);
    match args[1].as_str() {
        "fanout_v5_qos0_subid" => fanout(v5, QoS::AtMostOnce, false, &id, iters),
        "fanout_v5_qos1" => fanout(v5, QoS::AtLeastOnce, false, &[], iters),
        "fanout_v5_qos1_subid" => fanout(v5, QoS::AtLeastOnce, false, &id, iters),
        "fanout_v5_qos1_props_subid" => fanout(v5, QoS::AtLeastOnce, true, &id, iters),
        "fanout_v311_qos1" => fanout(v3, QoS::AtLeastOnce, false, &[], iters),
        "inbound_v5_qos1" => inbound(v5, iters),
        "inbound_v311_qos1" => inbound(v3, iters),
        "decode_v5_64B" => codec_publish(v5, true, iters),
        "decode_v311_64B" => codec_publish(v3, true, iters),
        "encode_v5_64B" => codec_publish(v5, false, iters),
        "encode_v311_64B" => codec_publish(v3, false, iters),
        other => {
            eprintln!("unknown scenario {other}");
            std::process::exit(2);
        }
    }
}
