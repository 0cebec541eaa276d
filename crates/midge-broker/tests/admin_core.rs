//! The admin view's figures on the sans-IO core: a closed connection's session counted once,
//! drops made while a session resumes counted.

use std::net::SocketAddr;
use std::num::{NonZeroU16, NonZeroU32};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use midge_broker::core::{Connection, Core};
use midge_broker::{Admin, AllowAll, BrokerConfig, MemoryStore, Standalone};
use midge_codec::{
    Connect, Packet, PacketId, ProtocolVersion, QoS, Subscribe, SubscriptionOptions,
};
use midge_proto::Message;

const V5: ProtocolVersion = ProtocolVersion::V5;

fn core(config: BrokerConfig, now: Instant) -> Arc<Core> {
    Core::new(
        config,
        Arc::new(AllowAll),
        Arc::new(MemoryStore::new()),
        Arc::new(Standalone),
        now,
    )
    .expect("valid")
}

fn persistent(id: &str, clean: bool) -> Connect {
    let mut c = Connect::new(V5, id.to_owned());
    c.clean_start = clean;
    c.keep_alive = 0;
    c.properties.session_expiry_interval = Some(600);
    c.properties.receive_maximum = NonZeroU16::new(1);
    c
}

fn connect(core: &Arc<Core>, connect: Connect, now: Instant) -> (Connection, Vec<Packet>) {
    let peer: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let mut connection = Connection::new(core, peer, now);
    let mut input = BytesMut::new();
    Packet::Connect(Box::new(connect))
        .encode(V5, &mut input)
        .expect("encodes");
    connection.handle_input(now, &mut input);
    let out = flush(&mut connection, now);
    (connection, out)
}

fn flush(connection: &mut Connection, now: Instant) -> Vec<Packet> {
    connection.handle_wakeup(now);
    let mut output = BytesMut::new();
    while connection.poll_transmit(now, &mut output) {}
    let mut packets = Vec::new();
    while let Some(p) = Packet::decode(&mut output, V5, u32::MAX).expect("valid") {
        packets.push(p);
    }
    packets
}

fn subscribe(connection: &mut Connection, filter: &str, now: Instant) {
    let mut input = BytesMut::new();
    Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).expect("non-zero"),
        filters: vec![(
            filter.to_owned().into(),
            SubscriptionOptions::qos(QoS::AtLeastOnce),
        )],
        properties: Default::default(),
    })
    .encode(V5, &mut input)
    .expect("encodes");
    connection.handle_input(now, &mut input);
    flush(connection, now);
}

/// `Core::stats().queued_messages` counts a session twice while its closed connection is
/// still around (the driver's `close` flushes output for up to `close_timeout_ms`): once
/// offline, once through the closed inbox's stale report. The admin view meanwhile still lists
/// the client as connected, and `kick` says it kicked it.
#[test]
fn a_closed_connection_still_counts_and_lists_its_session() {
    let now = Instant::now();
    let core = core(BrokerConfig::default(), now);
    let admin = Admin::new(core.clone());
    let (mut a, _) = connect(&core, persistent("s", true), now);
    subscribe(&mut a, "t", now);
    for _ in 0..3 {
        core.publish(
            Message::new("t".to_owned(), Bytes::from_static(b"m"), QoS::AtLeastOnce),
            now,
        );
    }
    flush(&mut a, now);
    let while_connected = core.stats().queued_messages;
    assert_eq!(while_connected, 2, "one in flight, two queued");
    a.connection_lost(now);
    assert!(a.is_closed());
    let closed_not_dropped = core.stats().queued_messages;
    let listed = admin.clients(None, 10).expect("no cursor").total;
    let kicked = admin.kick("s");
    let metrics = admin.metrics();
    drop(a);
    let dropped = core.stats().queued_messages;
    assert_eq!(
        (metrics.sessions_online, metrics.sessions_offline),
        (0, 1),
        "the session is offline"
    );
    assert_eq!(
        closed_not_dropped, dropped,
        "the same messages, counted once"
    );
    assert_eq!(listed, 0, "not connected any more");
    assert!(!kicked, "nothing to kick");
}

/// An in-flight message that no longer fits the resuming client's Maximum Packet Size is
/// dropped by `ServerConnection::accept` and counted in the session's stats, but the
/// connection takes its baseline for `drops_counted` after `accept`: the broker never counts it.
#[test]
fn a_too_large_message_dropped_on_resume_is_counted() {
    let now = Instant::now();
    let core = core(BrokerConfig::default(), now);
    let (mut a, _) = connect(&core, persistent("s", true), now);
    subscribe(&mut a, "t", now);
    core.publish(
        Message::new(
            "t".to_owned(),
            Bytes::from(vec![b'x'; 500]),
            QoS::AtLeastOnce,
        ),
        now,
    );
    let sent = flush(&mut a, now);
    assert!(
        sent.iter().any(|p| matches!(p, Packet::Publish(_))),
        "in flight: {sent:?}"
    );
    a.connection_lost(now);
    drop(a);
    let mut again = persistent("s", false);
    again.properties.maximum_packet_size = NonZeroU32::new(100);
    let (b, out) = connect(&core, again, now);
    assert!(
        !out.iter().any(|p| matches!(p, Packet::Publish(_))),
        "the message is too large now: {out:?}"
    );
    assert_eq!(core.stats().dropped_too_large, 1, "{:?}", core.stats());
    drop(b);
}
