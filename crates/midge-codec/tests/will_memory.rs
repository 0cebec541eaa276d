//! A decoded will holds about its wire size, however many user properties it carries: a server
//! keeps the will for the connection's whole life and, with a Will Delay Interval, while the
//! session is offline (5.0 §3.1.3.2), so what a CONNECT makes it hold must stay close to what
//! the client sent.
//!
//! A counting global allocator (`stats_alloc`) wraps the system allocator. Its counters are
//! process-wide, so this binary holds a single test.

use std::alloc::System;

use bytes::BytesMut;
use midge_codec::{Packet, ProtocolVersion, MAX_PACKET_SIZE};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Appends a Variable Byte Integer (§1.5.5).
fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A 5.0 CONNECT whose will carries `pairs` User Properties (0x26) with a 1-byte name and a
/// 1-byte value: 7 bytes each on the wire.
fn connect_with_will_user_properties(pairs: usize) -> Vec<u8> {
    let mut props = Vec::with_capacity(pairs * 7);
    for _ in 0..pairs {
        props.extend_from_slice(&[0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v']);
    }
    // Protocol Name, level 5, flags: Will and Clean Start, Keep Alive 60, no properties,
    // Client Identifier "cid" (§3.1.2, §3.1.3).
    let mut body = vec![
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x06, 0x00, 0x3c, 0x00,
    ];
    body.extend_from_slice(&[0x00, 0x03, b'c', b'i', b'd']);
    // Will Properties (§3.1.3.2), Will Topic "w/t", Will Payload "bye".
    put_varint(&mut body, props.len());
    body.extend_from_slice(&props);
    body.extend_from_slice(&[0x00, 0x03, b'w', b'/', b't', 0x00, 0x03, b'b', b'y', b'e']);
    let mut packet = vec![0x10];
    put_varint(&mut packet, body.len());
    packet.extend_from_slice(&body);
    packet
}

/// 5.0 §3.1.3.2.8: a will may carry any number of User Properties. 1 MiB of them, decoded and
/// kept, holds at most twice the packet's size (the packet itself, which the will's fields
/// share, and a little more), not one 80-byte pair of strings per 7 wire bytes.
#[test]
fn a_decoded_will_holds_about_its_wire_size() {
    let pairs = (1 << 20) / 7;
    let wire = connect_with_will_user_properties(pairs);

    let region = Region::new(GLOBAL);
    // The decoder's input, as a connection's read buffer would hand it over.
    let mut buf = BytesMut::from(&wire[..]);
    let packet = Packet::decode(&mut buf, ProtocolVersion::V5, MAX_PACKET_SIZE)
        .expect("decodes")
        .expect("complete");
    let Packet::Connect(mut connect) = packet else {
        panic!("not a CONNECT")
    };
    let will = connect.will.take().expect("a will");
    drop(connect);
    drop(buf);
    let change = region.change();
    let held = change.bytes_allocated as isize - change.bytes_deallocated as isize;

    eprintln!(
        "a will with {pairs} user properties: {} wire bytes, {held} bytes held ({:.2}x)",
        wire.len(),
        held as f64 / wire.len() as f64
    );
    let limit = 2 * wire.len() as isize + 4096;
    assert!(
        held <= limit,
        "the will holds {held} bytes for a {}-byte CONNECT (limit {limit})",
        wire.len()
    );
    // What the will reports holding is what it holds: the 7-byte pairs, the will's topic and
    // payload, and no more than the CONNECT around them.
    assert_eq!(will.properties.message.user_properties().count(), pairs);
    assert_eq!(will.held_bytes(), 7 * pairs + 3 + 3);
    assert!(held as usize >= will.held_bytes());
    drop(will);
}
