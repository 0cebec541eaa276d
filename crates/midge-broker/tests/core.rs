//! The broker core (`midge_broker::core`) driven directly, without its tokio driver: what a
//! driver of its own, or a simulation, relies on.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Wake, Waker};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use midge_broker::core::{Connection, Core};
use midge_broker::{AllowAll, BrokerConfig, MemoryStore, Standalone};
use midge_codec::{
    Connect, Packet, PacketId, ProtocolVersion, PubAck, QoS, Subscribe, SubscriptionOptions,
};
use midge_proto::Message;
use midge_testkit::broker::VirtualBroker;

const V5: ProtocolVersion = ProtocolVersion::V5;

/// A waker that records whether it was woken.
#[derive(Default)]
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Flag {
    fn woken(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

/// Packets that arrive together with the CONNECT are answered by the same
/// `handle_input`, once the CONNECT is accepted: a driver that calls it once per read must not
/// find them stuck behind the decision.
#[test]
fn packets_behind_a_connect_are_answered_with_it() {
    let now = Instant::now();
    let core = Core::new(
        BrokerConfig::default(),
        Arc::new(AllowAll),
        Arc::new(MemoryStore::new()),
        Arc::new(Standalone),
        now,
    )
    .expect("valid");
    let peer: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let mut connection = Connection::new(&core, peer, now);
    let mut input = BytesMut::new();
    Packet::Connect(Box::new(Connect::new(V5, "eager")))
        .encode(V5, &mut input)
        .expect("encodes");
    let subscribe = Subscribe {
        packet_id: PacketId::new(1).expect("non-zero"),
        filters: vec![(
            "a/#".to_owned().into(),
            SubscriptionOptions::qos(QoS::AtLeastOnce),
        )],
        properties: Default::default(),
    };
    Packet::Subscribe(subscribe)
        .encode(V5, &mut input)
        .expect("encodes");
    connection.handle_input(now, &mut input);
    assert!(input.is_empty(), "all input taken");
    let mut output = BytesMut::new();
    while connection.poll_transmit(now, &mut output) {}
    let mut kinds = Vec::new();
    while let Some(packet) = Packet::decode(&mut output, V5, u32::MAX).expect("valid") {
        kinds.push(match packet {
            Packet::ConnAck(_) => "CONNACK",
            Packet::SubAck(_) => "SUBACK",
            _ => "other",
        });
    }
    assert_eq!(kinds, ["CONNACK", "SUBACK"]);
}

/// A client that takes one message in flight and acknowledges nothing until told.
fn stalled(broker: &mut VirtualBroker, id: &str, filter: &str) -> midge_testkit::broker::ClientId {
    let mut connect = Connect::new(V5, id.to_owned());
    connect.properties.receive_maximum = std::num::NonZeroU16::new(1);
    let (client, _) = broker.connect(connect);
    broker.subscribe(client, filter, QoS::AtLeastOnce);
    client
}

fn message(topic: &str) -> Message {
    Message::new(topic.to_owned(), Bytes::from_static(b"m"), QoS::AtLeastOnce)
}

/// A publish from inside the broker that waits for room wakes the core's driver when room is
/// made for it, also when other such publishes were already waiting for other clients.
#[test]
fn the_core_wakes_its_driver_for_every_waiting_publish_from_inside() {
    let mut config = BrokerConfig::default();
    config.limits.inbox_capacity = 1;
    config.sessions.max_queued_messages = 1;
    config.limits.backpressure_timeout_ms = 60_000;
    let mut broker = VirtualBroker::new(config);
    let a = stalled(&mut broker, "a", "a/#");
    let b = stalled(&mut broker, "b", "b/#");
    // Each takes one in flight and one queued; the next waits for room in the core.
    let now = broker.now();
    for topic in ["a/1", "a/2", "a/3"] {
        broker.core().publish(message(topic), now);
        broker.settle();
    }
    // The driver looks, and waits.
    let flag = Arc::new(Flag::default());
    let waker = Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);
    let _ = broker.core().poll_wakeup(&mut cx);
    flag.woken();
    for topic in ["b/1", "b/2"] {
        broker.core().publish(message(topic), now);
        broker.settle();
    }
    assert!(!flag.woken(), "nothing for the core's driver yet");
    broker.core().publish(message("b/3"), now);
    if flag.woken() {
        // Told of the new waiting publish: it looks again, registering for its room.
        let _ = broker.core().poll_wakeup(&mut cx);
    }
    // b acknowledges its message in flight: room for b's waiting deliveries.
    match broker.recv(b) {
        Some(Packet::Publish(p)) => {
            let id = p.packet_id.expect("QoS 1");
            broker.send(b, Packet::PubAck(PubAck::new(id)));
        }
        other => panic!("expected b's PUBLISH, got {other:?}"),
    }
    assert!(flag.woken(), "the core's driver was woken for b's room");
    let _ = a;
}
