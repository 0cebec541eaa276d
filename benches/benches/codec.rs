//! PUBLISH and CONNECT decode/encode: midge-codec against rumqttc's codec on the same bytes.
//!
//! Every case is encoded once by midge; rumqttc decodes those bytes to build its own packet, and
//! re-encoding that packet must give the same bytes, so both libraries see identical input and
//! produce identical output. Decoding starts from a fresh `BytesMut` holding one packet in each
//! iteration (`iter_batched`, so the buffer copy is not timed; the routine hands back the emptied
//! buffer with the result, so criterion drops both outside the timing), in batches of at most
//! [`BATCH_BYTES`] so that the input is in cache as a just-read buffer would be. Each library
//! encodes the packet it decoded from the case's bytes, both PUBLISH payloads being the same
//! `Bytes`, into one reused `BytesMut`, cleared before each packet. Packet-level entry points on
//! both sides: `midge_codec::Packet::{decode, encode}` and rumqttc's `Packet::{read, write}`.
//!
//! Names read `<packet>_<decode|encode>/<version>_<case>/<library>`. `midge_bytes` is midge's
//! `Packet::decode_bytes` from a `Bytes`, the zero-allocation path, for reference.
//! `publish_decode_stream` decodes 32 packets from one buffer, where the buffer's one-time
//! allocation on its first split is spread over the packets, as on a real connection.
//!
//! Run: `cargo bench -p midge-benches --bench codec`.

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use midge_codec::{
    ByteStr, Connect, ConnectProperties, Packet, ProtocolVersion, Publish, QoS, MAX_PACKET_SIZE,
};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;

/// 20 bytes, like a typical `site/device/metric` topic.
const TOPIC: &str = "sensors/dev-0042/tmp";

/// One benchmark case: the packet in both models and its encoding.
struct Case {
    name: String,
    version: ProtocolVersion,
    bytes: Bytes,
    midge: Packet,
    rumqttc: Rumqttc,
}

/// rumqttc's packet for the case's version. Built once per case; not boxed, so encoding it
/// costs no extra indirection.
#[allow(clippy::large_enum_variant)]
enum Rumqttc {
    V4(v4::Packet),
    V5(v5::Packet),
}

impl Rumqttc {
    fn read(version: ProtocolVersion, buf: &mut BytesMut) -> Self {
        if version.is_v5() {
            Self::V5(v5::Packet::read(buf, None).expect("rumqttc decodes the case"))
        } else {
            Self::V4(v4::Packet::read(buf, usize::MAX).expect("rumqttc decodes the case"))
        }
    }

    /// Replaces a PUBLISH's payload.
    fn set_payload(&mut self, payload: Bytes) {
        match self {
            Self::V4(v4::Packet::Publish(p)) => p.payload = payload,
            Self::V5(v5::Packet::Publish(p)) => p.payload = payload,
            _ => panic!("not a PUBLISH"),
        }
    }

    fn write(&self, buf: &mut BytesMut) -> usize {
        match self {
            Self::V4(p) => p.write(buf, usize::MAX).expect("rumqttc encodes the case"),
            Self::V5(p) => p.write(buf, None).expect("rumqttc encodes the case"),
        }
    }
}

impl Case {
    fn new(name: String, version: ProtocolVersion, midge: Packet) -> Self {
        let mut buf = BytesMut::new();
        midge
            .encode(version, &mut buf)
            .expect("midge encodes the case");
        let bytes = buf.freeze();

        let mut input = BytesMut::from(&bytes[..]);
        let decoded = Packet::decode(&mut input, version, MAX_PACKET_SIZE)
            .expect("midge decodes the case")
            .expect("the case is complete");
        assert_eq!(decoded, midge, "{name}: midge round trip");

        // Each library encodes the packet it decoded from the case's bytes, as a broker
        // forwarding a message would, and a PUBLISH payload is the same `Bytes` on both sides:
        // copying it is most of a 1 KiB encode, and how fast `memcpy` runs depends on where the
        // source lies relative to the destination.
        let midge = Packet::decode_bytes(&mut bytes.clone(), version, MAX_PACKET_SIZE)
            .expect("midge decodes the case")
            .expect("the case is complete");
        let mut input = BytesMut::from(&bytes[..]);
        let mut rumqttc = Rumqttc::read(version, &mut input);
        assert!(input.is_empty(), "{name}: rumqttc consumed the packet");
        if let Packet::Publish(p) = &midge {
            rumqttc.set_payload(p.payload.clone());
        }
        let mut out = BytesMut::new();
        rumqttc.write(&mut out);
        assert_eq!(out, bytes, "{name}: rumqttc re-encodes the same bytes");

        Self {
            name,
            version,
            bytes,
            midge,
            rumqttc,
        }
    }
}

fn publish(payload_len: usize) -> Packet {
    Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        topic: ByteStr::from_static(TOPIC),
        packet_id: core::num::NonZeroU16::new(4242),
        payload: Bytes::from(vec![0xA5; payload_len]),
        ..Publish::default()
    })
}

fn connect(version: ProtocolVersion) -> Packet {
    let mut c = Connect::new(version, "midge-bench-client-01");
    c.clean_start = true;
    c.keep_alive = 30;
    c.username = Some(ByteStr::from_static("device-0042"));
    c.password = Some(Bytes::from_static(b"s3cret-passw0rd"));
    if version.is_v5() {
        let mut p = ConnectProperties::default();
        p.session_expiry_interval = Some(3600);
        p.receive_maximum = core::num::NonZeroU16::new(64);
        p.maximum_packet_size = core::num::NonZeroU32::new(1 << 20);
        p.topic_alias_maximum = Some(16);
        p.user_properties
            .push((ByteStr::from_static("region"), ByteStr::from_static("eu-1")));
        c.properties = p;
    }
    Packet::Connect(Box::new(c))
}

fn version_tag(version: ProtocolVersion) -> &'static str {
    if version.is_v5() {
        "v5"
    } else {
        "v311"
    }
}

fn cases() -> (Vec<Case>, Vec<Case>) {
    let mut publishes = Vec::new();
    let mut connects = Vec::new();
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let tag = version_tag(version);
        for (label, len) in [("64B", 64), ("1KiB", 1024)] {
            publishes.push(Case::new(format!("{tag}_{label}"), version, publish(len)));
        }
        connects.push(Case::new(tag.to_owned(), version, connect(version)));
    }
    (publishes, connects)
}

/// Input bytes per batch of `iter_batched`, so that a batch's buffers, written by the untimed
/// setup just before, are still in the core's cache when they are decoded, as a connection's read
/// buffer is right after the read that filled it. With `BatchSize::SmallInput` a batch is a tenth
/// of a sample, up to ~100,000 fresh buffers; at 1 KiB each, every decode then starts with a cache
/// miss to memory (the setup wrote it ~100 MB earlier), which measures neither library.
const BATCH_BYTES: usize = 256 * 1024;

/// A batch of fresh inputs of `input_len` bytes each, [`BATCH_BYTES`] in all.
fn warm_batch(input_len: usize) -> BatchSize {
    BatchSize::NumIterations((BATCH_BYTES / input_len).max(1) as u64)
}

fn bench_decode(c: &mut Criterion, group_name: &str, cases: &[Case]) {
    let mut group = c.benchmark_group(group_name);
    for case in cases {
        group.throughput(Throughput::Bytes(case.bytes.len() as u64));
        let batch = warm_batch(case.bytes.len());
        let fresh = || BytesMut::from(&case.bytes[..]);
        group.bench_function(BenchmarkId::new(&case.name, "midge"), |b| {
            b.iter_batched(
                fresh,
                |mut buf| {
                    let packet = Packet::decode(&mut buf, black_box(case.version), MAX_PACKET_SIZE);
                    (buf, packet)
                },
                batch,
            );
        });
        group.bench_function(BenchmarkId::new(&case.name, "midge_bytes"), |b| {
            b.iter_batched(
                || case.bytes.clone(),
                |mut buf| {
                    let packet =
                        Packet::decode_bytes(&mut buf, black_box(case.version), MAX_PACKET_SIZE);
                    (buf, packet)
                },
                batch,
            );
        });
        group.bench_function(BenchmarkId::new(&case.name, "rumqttc"), |b| {
            if case.version.is_v5() {
                b.iter_batched(
                    fresh,
                    |mut buf| {
                        let packet = v5::Packet::read(&mut buf, black_box(None));
                        (buf, packet)
                    },
                    batch,
                );
            } else {
                b.iter_batched(
                    fresh,
                    |mut buf| {
                        let packet = v4::Packet::read(&mut buf, black_box(usize::MAX));
                        (buf, packet)
                    },
                    batch,
                );
            }
        });
    }
    group.finish();
}

/// Packets per buffer in `publish_decode_stream`.
const STREAM_PACKETS: usize = 32;

/// Decodes a buffer of [`STREAM_PACKETS`] back-to-back copies of the packet, as a connection's
/// read buffer would hold them. Only the first split of a fresh `BytesMut` allocates its shared
/// header, so this shows the per-packet cost once that is spread over a buffer; each packet is
/// dropped as soon as it is decoded, inside the timing, as a real reader would.
fn bench_decode_stream(c: &mut Criterion, group_name: &str, cases: &[Case]) {
    let mut group = c.benchmark_group(group_name);
    for case in cases {
        group.throughput(Throughput::Bytes(
            (case.bytes.len() * STREAM_PACKETS) as u64,
        ));
        let stream: Vec<u8> = case
            .bytes
            .iter()
            .copied()
            .cycle()
            .take(case.bytes.len() * STREAM_PACKETS)
            .collect();
        let fresh = || BytesMut::from(&stream[..]);
        let batch = warm_batch(stream.len());
        group.bench_function(BenchmarkId::new(&case.name, "midge"), |b| {
            b.iter_batched(
                fresh,
                |mut buf| {
                    while let Ok(Some(packet)) =
                        Packet::decode(&mut buf, black_box(case.version), MAX_PACKET_SIZE)
                    {
                        black_box(packet);
                    }
                    buf
                },
                batch,
            );
        });
        group.bench_function(BenchmarkId::new(&case.name, "rumqttc"), |b| {
            if case.version.is_v5() {
                b.iter_batched(
                    fresh,
                    |mut buf| {
                        while let Ok(packet) = v5::Packet::read(&mut buf, black_box(None)) {
                            black_box(packet);
                        }
                        buf
                    },
                    batch,
                );
            } else {
                b.iter_batched(
                    fresh,
                    |mut buf| {
                        while let Ok(packet) = v4::Packet::read(&mut buf, black_box(usize::MAX)) {
                            black_box(packet);
                        }
                        buf
                    },
                    batch,
                );
            }
        });
    }
    group.finish();
}

fn bench_encode(c: &mut Criterion, group_name: &str, cases: &[Case]) {
    let mut group = c.benchmark_group(group_name);
    for case in cases {
        group.throughput(Throughput::Bytes(case.bytes.len() as u64));
        let mut buf = BytesMut::with_capacity(case.bytes.len());
        group.bench_function(BenchmarkId::new(&case.name, "midge"), |b| {
            b.iter(|| {
                buf.clear();
                black_box(&case.midge)
                    .encode(black_box(case.version), &mut buf)
                    .ok();
                black_box(buf.len())
            });
        });
        group.bench_function(BenchmarkId::new(&case.name, "rumqttc"), |b| {
            b.iter(|| {
                buf.clear();
                black_box(black_box(&case.rumqttc).write(&mut buf))
            });
        });
    }
    group.finish();
}

fn codec(c: &mut Criterion) {
    let (publishes, connects) = cases();
    bench_decode(c, "publish_decode", &publishes);
    bench_decode_stream(c, "publish_decode_stream", &publishes);
    bench_encode(c, "publish_encode", &publishes);
    bench_decode(c, "connect_decode", &connects);
    bench_encode(c, "connect_encode", &connects);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = codec
}
criterion_main!(benches);
