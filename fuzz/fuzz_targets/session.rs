//! The sans-IO state machines on arbitrary peer bytes. The first byte picks the protocol
//! version, whether the broker accepts the CONNECT it is shown, and which side runs:
//!
//! - server: the rest is the client's byte stream (after a valid CONNECT unless bit 0x40 is
//!   set), fed in chunks to a `ServerConnection`
//!   whose events are answered as a broker would (accept, acknowledge, subscribe_ack,
//!   unsubscribe_ack, deliver messages back, and feed input that waited for the answers
//!   again), with virtual time advancing;
//! - client: a `Client` sends CONNECT, gets a CONNACK, then the rest is the server's stream.
//!
//! Nothing may panic, and every byte either side transmits must decode as packets of the
//! connection's version.
#![no_main]

use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use midge_codec::{ConnAck, Connect, Packet, ProtocolVersion, QoS, ReasonCode, MAX_PACKET_SIZE};
use midge_proto::client::{Client, ClientConfig};
use midge_proto::server::{ServerConfig, ServerConnection, ServerEvent};
use midge_proto::session::{Delivery, Session};
use midge_proto::Message;

fn check(out: &mut BytesMut, version: ProtocolVersion) {
    loop {
        match Packet::decode(out, version, MAX_PACKET_SIZE) {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => panic!("transmitted bytes do not decode under {version:?}: {e:?}"),
        }
    }
    assert!(out.is_empty(), "a partial packet was transmitted");
}

/// Chunks of the input: each chunk's first byte is its length (mod 64) and, in its top bits,
/// how many seconds pass before it arrives.
fn chunks(data: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    let mut rest = data;
    std::iter::from_fn(move || {
        let (&head, tail) = rest.split_first()?;
        let len = usize::from(head & 0x3f).min(tail.len());
        let (chunk, next) = tail.split_at(len);
        rest = next;
        Some((u64::from(head >> 6) * 7, chunk))
    })
}

fn run_server(version: ProtocolVersion, accept: bool, preamble: bool, data: &[u8]) {
    let mut config = ServerConfig::default();
    config.receive_maximum = 4;
    config.max_inflight = 3;
    config.topic_alias_maximum = 3;
    config.max_keep_alive = 30;
    let t0 = Instant::now();
    let mut now = t0;
    let mut server = ServerConnection::new(Arc::new(config), now);
    let mut rx = BytesMut::new();
    if preamble {
        // A valid CONNECT first, so that the input reaches the connected state quickly.
        let mut connect = Connect::new(version, "fz");
        connect.clean_start = false;
        connect.keep_alive = 5;
        if version.is_v5() {
            connect.properties.receive_maximum = NonZeroU16::new(2);
            connect.properties.topic_alias_maximum = Some(2);
            connect.properties.session_expiry_interval = Some(60);
        }
        let _ = Packet::Connect(Box::new(connect)).encode(version, &mut rx);
    }
    let mut out = BytesMut::new();
    let mut stored: Option<Session> = None;
    for (wait, chunk) in chunks(data) {
        now += Duration::from_secs(wait);
        server.handle_timeout(now);
        rx.extend_from_slice(chunk);
        server.handle_bytes(now, &mut rx);
        // Input may wait for answers: after answering, go on with what `rx` holds until
        // nothing more decodes.
        loop {
            let before = rx.len();
            answer(&mut server, &mut rx, &mut stored, accept, now);
            server.handle_bytes(now, &mut rx);
            if rx.len() == before {
                answer(&mut server, &mut rx, &mut stored, accept, now);
                break;
            }
        }
        while server.poll_transmit(now, &mut out) {}
        check(&mut out, server.version());
        let _ = server.poll_timeout();
        if server.is_closed() {
            // Keep the session, round-trip it through its encoding, and start over on a new
            // connection so that resumption is exercised too.
            if let Some(session) = server.take_session() {
                let mut buf = BytesMut::new();
                session.encode(now, &mut buf);
                stored = Session::decode(now, buf.freeze());
                assert!(stored.is_some(), "an encoded session decodes");
            }
            let mut config = ServerConfig::default();
            config.receive_maximum = 4;
            server = ServerConnection::new(Arc::new(config), now);
            rx.clear();
        }
    }
}

/// Answers the server's events as a broker would.
fn answer(
    server: &mut ServerConnection,
    rx: &mut BytesMut,
    stored: &mut Option<Session>,
    accept: bool,
    now: Instant,
) {
    while let Some(event) = server.poll_event() {
        match event {
            ServerEvent::Connect { client_id, .. } => {
                if client_id.is_empty() {
                    server.assign_client_id("fz-assigned".into());
                }
                if accept {
                    server.accept(now, stored.take());
                    server.handle_bytes(now, rx);
                } else {
                    server.reject(ReasonCode::NOT_AUTHORIZED);
                }
            }
            ServerEvent::Publish { message, packet_id } => {
                if let Some(id) = packet_id {
                    server.acknowledge(id, ReasonCode::SUCCESS);
                }
                // Route it back to the publisher, as if it subscribed to everything.
                server.deliver(Delivery::new(Arc::new(message), now));
            }
            ServerEvent::Subscribe {
                packet_id,
                requests,
                subscription_id,
            } => {
                let codes = requests
                    .iter()
                    .map(|r| match r.verdict {
                        Ok(()) => ReasonCode(r.options.qos as u8),
                        Err(code) => code,
                    })
                    .collect();
                server.subscribe_ack(packet_id, codes);
                let mut m = Message::new("retained/x", &b"r"[..], QoS::AtLeastOnce);
                m.properties.message_expiry_interval = Some(10);
                m.retain = true;
                let mut delivery = Delivery::new(Arc::new(m), now);
                delivery.subscription_ids = subscription_id.into_iter().collect();
                server.deliver(delivery);
            }
            ServerEvent::Unsubscribe { packet_id, .. } => {
                server.unsubscribe_ack(packet_id);
            }
            // Closed, and events added to midge-proto later.
            _ => {}
        }
    }
}

fn run_client(version: ProtocolVersion, session_present: bool, data: &[u8]) {
    let t0 = Instant::now();
    let mut now = t0;
    let mut config = ClientConfig::new(version, "fuzz");
    config.keep_alive = 10;
    config.clean_start = !session_present;
    config.max_queued_messages = 16;
    if version.is_v5() {
        config.properties.receive_maximum = NonZeroU16::new(3);
        config.properties.topic_alias_maximum = Some(3);
    }
    let Ok(mut client) = Client::new(Arc::new(config), now) else {
        return;
    };
    let mut out = BytesMut::new();
    client.connect(now);
    let _ = client.publish(Message::new("a/b", &b"1"[..], QoS::ExactlyOnce));
    while client.poll_transmit(now, &mut out) {}
    check(&mut out, version);
    let mut connack = ConnAck::default();
    if version.is_v5() {
        connack.properties.receive_maximum = NonZeroU16::new(2);
        connack.properties.topic_alias_maximum = Some(2);
    }
    let mut rx = BytesMut::new();
    if Packet::ConnAck(Box::new(connack))
        .encode(version, &mut rx)
        .is_ok()
    {
        client.handle_bytes(now, &mut rx);
    }
    for (i, (wait, chunk)) in chunks(data).enumerate() {
        now += Duration::from_secs(wait);
        client.handle_timeout(now);
        rx.extend_from_slice(chunk);
        client.handle_bytes(now, &mut rx);
        let qos = QoS::from_u8((i % 3) as u8).unwrap_or_default();
        let _ = client.publish(Message::new("t", &b"x"[..], qos));
        while client.poll_transmit(now, &mut out) {}
        check(&mut out, version);
        let _ = client.poll_timeout();
        while client.poll_event().is_some() {}
        if !client.is_connected() && i % 4 == 0 {
            client.connect(now);
            rx.clear();
        }
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let version = match selector % 3 {
        0 => ProtocolVersion::V3_1,
        1 => ProtocolVersion::V3_1_1,
        _ => ProtocolVersion::V5,
    };
    let flag = selector & 0x10 != 0;
    if selector & 0x20 == 0 {
        run_server(version, !flag, selector & 0x40 == 0, rest);
    } else {
        run_client(version, flag, rest);
    }
});
