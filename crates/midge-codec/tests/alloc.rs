//! Zero-copy and no allocation: decoding a PUBLISH from a shared buffer, or from a buffer sized
//! to the packet, makes no heap allocation; its payload, binary data and strings longer than
//! `ByteStr::INLINE_CAPACITY` point into that buffer, and shorter strings are held inline.
//!
//! A counting global allocator (`stats_alloc`) wraps the system allocator. Its counters are
//! process-wide, so this binary holds a single test, and each measurement is the smallest of a
//! few runs: a stray allocation by the test harness on another thread can only add to a count,
//! while an allocation made by the decoder shows up in every run.

use std::alloc::System;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use midge_codec::{ByteStr, Packet, ProtocolVersion, Publish, MAX_PACKET_SIZE};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Heap allocations made by `f`, the fewest over 3 runs.
fn allocations<T>(mut f: impl FnMut() -> T) -> usize {
    (0..3)
        .map(|_| {
            let region = Region::new(GLOBAL);
            let out = f();
            let count = region.change().allocations + region.change().reallocations;
            drop(out);
            count
        })
        .min()
        .unwrap_or(usize::MAX)
}

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(u8::is_ascii_hexdigit)
        .map(|b| (b as char).to_digit(16).unwrap() as u8)
        .collect();
    digits.chunks(2).map(|p| (p[0] << 4) | p[1]).collect()
}

/// MQTT 3.1.1 §3.3 PUBLISH QoS 1, topic "a/b", id 7, payload "hello".
const V311: &str = "32 0c 0003 612f62 0007 68656c6c6f";
/// MQTT 5.0 §3.3 PUBLISH QoS 1 with Payload Format Indicator, Message Expiry Interval, Topic
/// Alias, Response Topic, Correlation Data and Content Type (no list properties).
const V5: &str = "32 29 0003 612f62 0007
                  1c 0101 020000001e 230001 080003722f74 0900020102 03000474657874
                  68656c6c6f";

fn range(b: &[u8]) -> Range<usize> {
    let start = b.as_ptr() as usize;
    start..start + b.len()
}

/// The payload and binary properties of `p` lie inside `buf`, and so do its strings unless
/// they are short enough to be held inline.
fn assert_points_into(p: &Publish, buf: Range<usize>, what: &str) {
    let r = range(&p.payload);
    assert!(
        buf.start <= r.start && r.end <= buf.end,
        "{what}: payload at {r:?} is not inside the input {buf:?}"
    );
    let inline = range(p.topic.as_bytes());
    let topic_inside = buf.start <= inline.start && inline.end <= buf.end;
    assert_eq!(
        topic_inside,
        p.topic.len() > ByteStr::INLINE_CAPACITY,
        "{what}: a topic of {} bytes is shared only when it is longer than {}",
        p.topic.len(),
        ByteStr::INLINE_CAPACITY
    );
    let props = &p.properties;
    let (response_topic, content_type) = (props.response_topic(), props.content_type());
    let correlation_data = props.correlation_data();
    for part in [
        response_topic.as_ref().map(|s| s.as_bytes()),
        content_type.as_ref().map(|s| s.as_bytes()),
        correlation_data.as_deref(),
    ]
    .into_iter()
    .flatten()
    {
        let r = range(part);
        assert!(
            buf.start <= r.start && r.end <= buf.end,
            "{what}: property outside the input"
        );
    }
}

#[test]
fn publish_decodes_without_allocating_and_shares_the_input() {
    // The counter sees the decoder's own allocations: a User Property of a DISCONNECT is a
    // list, which allocates (5.0 DISCONNECT, Normal, with User Property ("k", "v")). A PUBLISH
    // keeps its user properties encoded, so they cost nothing: see the end of this test.
    let with_list = Bytes::from(hex("e0 09 00 07 2600016b000176"));
    let _keep = with_list.clone();
    let count = allocations(|| {
        let mut buf = with_list.clone();
        Packet::decode_bytes(&mut buf, ProtocolVersion::V5, MAX_PACKET_SIZE)
            .unwrap()
            .unwrap()
    });
    assert!(
        count >= 1,
        "allocation counter missed the user property list"
    );

    for (version, bytes) in [
        (ProtocolVersion::V3_1_1, hex(V311)),
        (ProtocolVersion::V5, hex(V5)),
    ] {
        let what = format!("{version:?}");
        // From a `Bytes` that is already shared (held twice), as after a read into a pool.
        let input = Bytes::from(bytes.clone());
        let _keep = input.clone();
        let input_range = range(&input);
        let count = allocations(|| {
            let mut buf = input.clone();
            Packet::decode_bytes(&mut buf, version, MAX_PACKET_SIZE)
        });
        assert_eq!(count, 0, "{what}: Packet::decode_bytes allocated");
        let mut buf = input.clone();
        let Ok(Some(Packet::Publish(p))) = Packet::decode_bytes(&mut buf, version, MAX_PACKET_SIZE)
        else {
            panic!("{what}: not a PUBLISH");
        };
        assert_eq!(p.topic, "a/b");
        assert_eq!(&p.payload[..], b"hello");
        if version.is_v5() {
            assert_eq!(p.properties.message_expiry_interval, Some(30));
            assert_eq!(
                p.properties.content_type().as_ref().map(|s| s.as_str()),
                Some("text")
            );
        }
        assert_points_into(&p, input_range.clone(), &what);

        // From a `BytesMut` sized to the packet, as a reader that reads one packet at a time
        // makes it: the buffer becomes the packet's storage, with no split to pay for.
        let mut exact = BytesMut::with_capacity(bytes.len());
        exact.extend_from_slice(&bytes);
        let exact_range = range(&exact[..]);
        let (made, decoded) = {
            let start = Region::new(GLOBAL);
            let decoded = Packet::decode(&mut exact, version, MAX_PACKET_SIZE);
            (start.change().allocations, decoded)
        };
        // The 5.0 vector has a property block, a second handle on the buffer, which makes it
        // shared: one allocation, as the first split of any buffer costs.
        let expected = usize::from(version.is_v5());
        assert_eq!(
            made, expected,
            "{what}: allocations by Packet::decode from a right-sized buffer"
        );
        assert!(exact.is_empty(), "{what}: the packet was consumed");
        let Ok(Some(Packet::Publish(p))) = decoded else {
            panic!("{what}: not a PUBLISH");
        };
        assert_eq!(&p.payload[..], b"hello");
        assert_points_into(&p, exact_range, &what);

        // From static memory.
        let statik: &'static [u8] = Box::leak(bytes.clone().into_boxed_slice());
        let count = allocations(|| {
            let mut buf = Bytes::from_static(statik);
            Packet::decode_bytes(&mut buf, version, MAX_PACKET_SIZE)
        });
        assert_eq!(
            count, 0,
            "{what}: decode_bytes from static memory allocated"
        );

        // From a `BytesMut` that is already shared: the first split promotes it (one
        // allocation, documented), the following packets cost nothing.
        let mut stream = BytesMut::with_capacity(bytes.len() * 8);
        for _ in 0..8 {
            stream.extend_from_slice(&bytes);
        }
        let stream_range = range(&stream[..]);
        assert!(Packet::decode(&mut stream, version, MAX_PACKET_SIZE)
            .unwrap()
            .is_some());
        // Three runs, three packets.
        let count = allocations(|| Packet::decode(&mut stream, version, MAX_PACKET_SIZE));
        assert_eq!(
            count, 0,
            "{what}: Packet::decode from a shared BytesMut allocated"
        );
        let mut rest = 0;
        while let Some(p) = Packet::decode(&mut stream, version, MAX_PACKET_SIZE).unwrap() {
            let Packet::Publish(p) = p else {
                panic!("{what}: not a PUBLISH")
            };
            assert_points_into(&p, stream_range.clone(), &what);
            rest += 1;
        }
        assert_eq!(rest, 4, "{what}: 8 packets = 1 + 3 counted + 4");
    }

    // A topic longer than the inline capacity shares the input (3.1.1 PUBLISH QoS 0, 40-byte
    // topic, payload "x").
    let long_topic = "sensors/building-7/floor-3/room-12/tempC";
    assert!(long_topic.len() > ByteStr::INLINE_CAPACITY);
    let mut packet = vec![0x30, 2 + 40 + 1, 0, 40];
    packet.extend_from_slice(long_topic.as_bytes());
    packet.push(b'x');
    let long = Bytes::from(packet);
    let _keep = long.clone();
    let count = allocations(|| {
        let mut buf = long.clone();
        Packet::decode_bytes(&mut buf, ProtocolVersion::V3_1_1, MAX_PACKET_SIZE)
    });
    assert_eq!(count, 0, "PUBLISH with a long topic allocated");
    let mut buf = long.clone();
    let Ok(Some(Packet::Publish(p))) =
        Packet::decode_bytes(&mut buf, ProtocolVersion::V3_1_1, MAX_PACKET_SIZE)
    else {
        panic!("not a PUBLISH");
    };
    assert_eq!(p.topic, long_topic);
    assert_points_into(&p, range(&long), "long topic");

    // A PUBLISH keeps its User Properties and Subscription Identifiers encoded, so even these
    // lists cost no allocation (5.0 PUBLISH "a/b" QoS 0, User Property ("k", "v"),
    // Subscription Identifiers 5 and 1).
    let lists = Bytes::from(hex("30 11 0003 612f62 0b 2600016b000176 0b05 0b01"));
    let _keep = lists.clone();
    let count = allocations(|| {
        let mut buf = lists.clone();
        Packet::decode_bytes(&mut buf, ProtocolVersion::V5, MAX_PACKET_SIZE)
    });
    assert_eq!(count, 0, "PUBLISH with lists allocated");
    let mut buf = lists.clone();
    let Ok(Some(Packet::Publish(p))) =
        Packet::decode_bytes(&mut buf, ProtocolVersion::V5, MAX_PACKET_SIZE)
    else {
        panic!("not a PUBLISH");
    };
    let ids: Vec<u32> = p
        .properties
        .subscription_identifiers()
        .map(|i| i.get())
        .collect();
    assert_eq!(ids, [5, 1]);
    for (name, value) in p.properties.user_properties() {
        assert_eq!((name.as_str(), value.as_str()), ("k", "v"));
        for part in [name.as_bytes(), value.as_bytes()] {
            let r = range(part);
            let input = range(&lists);
            assert!(
                input.start <= r.start && r.end <= input.end,
                "user property copied"
            );
        }
    }
}
