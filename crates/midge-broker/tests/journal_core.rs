//! The broker core on an in-memory journal, driven without a runtime: what a crash (a second
//! core started on the same journal) finds after the races and closes that can lose a change.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use midge_broker::core::{Connection, Core};
use midge_broker::{
    AllowAll, BrokerConfig, Change, Journal, JournalError, MemoryStore, RestoredMessage,
    RestoredSession, Retained, Standalone, Store,
};
use midge_codec::{
    ByteStr, Connect, Packet, PacketId, ProtocolVersion, PubAck, Publish, QoS, Subscribe,
    SubscriptionOptions,
};
use midge_proto::session::Delivery;
use midge_proto::Message;
use midge_topic::{TopicFilter, TopicName};

const V5: ProtocolVersion = ProtocolVersion::V5;

fn pid(n: u16) -> PacketId {
    PacketId::new(n).expect("non-zero")
}

/// Run as a returning client's queue is read back.
type QueuedHook = Box<dyn FnMut(&Arc<Core>) + Send>;

/// A store whose journal is the in-memory one, with a hook run at the start of `queued()`.
#[derive(Default)]
struct HookStore {
    inner: MemoryStore,
    core: OnceLock<Weak<Core>>,
    on_queued: Mutex<Option<QueuedHook>>,
    writes: std::sync::atomic::AtomicUsize,
}

impl HookStore {
    fn new() -> Self {
        Self {
            inner: MemoryStore::keeping_sessions(),
            ..Default::default()
        }
    }
}

// The journal is the store itself (delegating to the MemoryStore's journal).
impl Journal for HookStore {
    fn next_tag(&self) -> u64 {
        self.inner.journal().expect("a journal").next_tag()
    }
    fn write(&self, change: Change<'_>) {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.journal().expect("a journal").write(change)
    }
    fn atomically(&self, f: &mut dyn FnMut()) {
        self.inner.journal().expect("a journal").atomically(f)
    }
    fn submitted(&self) -> u64 {
        self.inner.journal().expect("a journal").submitted()
    }
    fn poll_durable(
        &self,
        ticket: u64,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), JournalError>> {
        self.inner
            .journal()
            .expect("a journal")
            .poll_durable(ticket, cx)
    }
    fn is_durable(&self, ticket: u64) -> bool {
        self.inner.journal().expect("a journal").is_durable(ticket)
    }
    fn restore(&self, now: Instant) -> Vec<RestoredSession> {
        self.inner.journal().expect("a journal").restore(now)
    }
    fn queued(&self, client_id: &ByteStr, now: Instant) -> Vec<Delivery> {
        let hook = self.on_queued.lock().expect("a journal").take();
        if let Some(mut hook) = hook {
            if let Some(core) = self.core.get().and_then(Weak::upgrade) {
                hook(&core);
            }
        }
        self.inner
            .journal()
            .expect("a journal")
            .queued(client_id, now)
    }
}

impl Store for HookStore {
    fn set_retained(&self, topic: &TopicName<'_>, message: Option<Retained>) -> Option<Retained> {
        self.inner.set_retained(topic, message)
    }
    fn retained_matching(&self, filter: &TopicFilter<'_>, visit: &mut dyn FnMut(&Retained)) {
        self.inner.retained_matching(filter, visit)
    }
    fn retained_count(&self) -> usize {
        self.inner.retained_count()
    }
    fn journal(&self) -> Option<&dyn Journal> {
        Some(self)
    }
}

fn core_on(store: &Arc<HookStore>, now: Instant) -> Arc<Core> {
    let core = Core::new(
        BrokerConfig::default(),
        Arc::new(AllowAll),
        store.clone(),
        Arc::new(Standalone),
        now,
    )
    .expect("valid");
    let _ = store.core.set(Arc::downgrade(&core));
    core
}

struct Client {
    conn: Connection,
    next_id: u16,
}

impl Client {
    fn new(core: &Arc<Core>, now: Instant) -> Self {
        let peer: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
        Self {
            conn: Connection::new(core, peer, now),
            next_id: 1,
        }
    }

    fn send(&mut self, now: Instant, packets: &[Packet]) {
        let mut input = BytesMut::new();
        for p in packets {
            p.clone().encode(V5, &mut input).expect("encodes");
        }
        self.conn.handle_input(now, &mut input);
    }

    fn recv(&mut self, now: Instant) -> Vec<Packet> {
        self.conn.handle_wakeup(now);
        let mut out = BytesMut::new();
        while self.conn.poll_transmit(now, &mut out) {}
        let mut packets = Vec::new();
        while let Some(p) = Packet::decode(&mut out, V5, u32::MAX).expect("valid") {
            packets.push(p);
        }
        packets
    }

    fn publish(&mut self, now: Instant, topic: &str, payload: &str, qos: QoS, retain: bool) {
        let mut p = Publish {
            qos,
            retain,
            topic: topic.to_owned().into(),
            payload: Bytes::from(payload.to_owned()),
            ..Publish::default()
        };
        if qos != QoS::AtMostOnce {
            p.packet_id = Some(pid(self.next_id));
            self.next_id += 1;
        }
        self.send(now, &[Packet::Publish(p)]);
    }
}

fn connect(core: &Arc<Core>, now: Instant, id: &str, persistent: bool) -> (Client, Vec<Packet>) {
    let mut c = Client::new(core, now);
    let mut connect = Connect::new(V5, id.to_owned());
    if persistent {
        connect.clean_start = false;
        connect.properties.session_expiry_interval = Some(600);
    }
    c.send(now, &[Packet::Connect(Box::new(connect))]);
    let got = c.recv(now);
    (c, got)
}

fn subscribe(c: &mut Client, now: Instant, filter: &str, qos: QoS) {
    let sub = Subscribe {
        packet_id: pid(100),
        filters: vec![(filter.to_owned().into(), SubscriptionOptions::qos(qos))],
        properties: Default::default(),
    };
    c.send(now, &[Packet::Subscribe(sub)]);
}

fn publishes(packets: &[Packet]) -> Vec<(String, bool, Option<u16>)> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((
                String::from_utf8_lossy(&p.payload).into_owned(),
                p.dup,
                p.packet_id.map(|i| i.get()),
            )),
            _ => None,
        })
        .collect()
}

/// A QoS 1 message in flight when a persistent session goes offline is reloaded from the
/// journal as queued as well as resent from the session's outgoing state.
#[test]
fn a_qos1_message_in_flight_is_resent_once_after_a_reconnect() {
    let now = Instant::now();
    let store = Arc::new(HookStore::new());
    let core = core_on(&store, now);
    let (mut sub, _) = connect(&core, now, "s", true);
    subscribe(&mut sub, now, "t", QoS::AtLeastOnce);
    sub.recv(now);
    let (mut publ, _) = connect(&core, now, "p", false);
    publ.publish(now, "t", "m1", QoS::AtLeastOnce, false);
    publ.recv(now);
    let got = sub.recv(now);
    assert_eq!(
        publishes(&got).len(),
        1,
        "m1 sent, not acknowledged: {got:?}"
    );
    sub.conn.connection_lost(now);
    drop(sub);
    publ.publish(now, "t", "m2", QoS::AtLeastOnce, false);
    publ.recv(now);
    let (mut back, got) = connect(&core, now, "s", true);
    let mut all = publishes(&got);
    all.extend(publishes(&back.recv(now)));
    eprintln!("after reconnect: {all:?}");
    let m1 = all.iter().filter(|(p, _, _)| p == "m1").count();
    assert_eq!(m1, 1, "m1 delivered {m1} times: {all:?}");
}

/// A message routed to a persistent session while its on-disk queue is being read back is
/// both read from the journal and taken from the inbox.
#[test]
fn a_delivery_routed_while_the_queue_is_read_back_arrives_once() {
    let now = Instant::now();
    let store = Arc::new(HookStore::new());
    let core = core_on(&store, now);
    let (mut sub, _) = connect(&core, now, "s", true);
    subscribe(&mut sub, now, "t", QoS::ExactlyOnce);
    sub.recv(now);
    sub.conn.connection_lost(now);
    drop(sub);
    let (mut publ, _) = connect(&core, now, "p", false);
    publ.publish(now, "t", "queued", QoS::ExactlyOnce, false);
    publ.recv(now);
    // Another thread publishes while the reconnecting client's queue is read.
    *store.on_queued.lock().expect("a journal") = Some(Box::new(|core: &Arc<Core>| {
        core.publish(
            Message::new("t", Bytes::from_static(b"racing"), QoS::ExactlyOnce),
            Instant::now(),
        );
    }));
    let (mut back, got) = connect(&core, now, "s", true);
    let mut all = publishes(&got);
    for _ in 0..3 {
        core.handle_timeout(now);
        all.extend(publishes(&back.recv(now)));
    }
    eprintln!("after reconnect: {all:?}");
    let racing = all.iter().filter(|(p, _, _)| p == "racing").count();
    assert_eq!(
        racing, 1,
        "a QoS 2 message delivered {racing} times: {all:?}"
    );
}

/// A retained message queued ahead of a newer live message is spilled with a newer tag, and
/// comes back after it.
#[test]
fn an_offline_queue_keeps_its_order_in_the_journal() {
    let now = Instant::now();
    let store = Arc::new(HookStore::new());
    let core = core_on(&store, now);
    let (mut publ, _) = connect(&core, now, "p", false);
    publ.publish(now, "r", "old", QoS::AtLeastOnce, true);
    publ.recv(now);
    let (mut sub, _) = connect(&core, now, "s", true);
    subscribe(&mut sub, now, "r", QoS::AtLeastOnce);
    // The subscriber's output is not taken (a slow reader): both stay in its queue.
    publ.publish(now, "r", "new", QoS::AtLeastOnce, true);
    publ.recv(now);
    sub.conn.handle_wakeup(now);
    sub.conn.connection_lost(now);
    drop(sub);
    let (mut back, got) = connect(&core, now, "s", true);
    let mut all = publishes(&got);
    all.extend(publishes(&back.recv(now)));
    eprintln!("after reconnect: {all:?}");
    let order: Vec<_> = all.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(order, ["old", "new"]);
}

/// A PUBREC followed by DISCONNECT in the same read: the Released change is never written,
/// and the PUBREL is produced without a hold covering it.
#[test]
fn a_pubrec_read_with_a_disconnect_is_written() {
    let now = Instant::now();
    let store = Arc::new(HookStore::new());
    let core = core_on(&store, now);
    let (mut sub, _) = connect(&core, now, "s", true);
    subscribe(&mut sub, now, "q", QoS::ExactlyOnce);
    sub.recv(now);
    let (mut publ, _) = connect(&core, now, "p", false);
    publ.publish(now, "q", "x", QoS::ExactlyOnce, false);
    publ.recv(now);
    let got = sub.recv(now);
    let id = publishes(&got)[0].2.expect("id");
    let writes_before = store.submitted();
    sub.send(
        now,
        &[
            Packet::PubRec(PubAck::new(pid(id))),
            Packet::Disconnect(Default::default()),
        ],
    );
    let ticket = sub.conn.output_ticket();
    let out = sub.recv(now);
    eprintln!("output after PUBREC+DISCONNECT: {out:?} ticket {ticket} writes before {writes_before} now {}", store.submitted());
    let restored = store.restore(now);
    let s = restored
        .iter()
        .find(|r| r.record.client_id.as_str() == "s")
        .expect("a journal");
    eprintln!("journal has: {:?}", s.messages);
    assert!(
        s.messages
            .iter()
            .any(|m| matches!(m, RestoredMessage::Released(..))),
        "the PUBREC was not kept: a crash now resends the PUBLISH"
    );
}

/// A retained QoS 2 message sent to a persistent subscriber is not journaled as Sent: a
/// crash between PUBREC and PUBCOMP forgets the identifier, and the next QoS 2 message
/// reuses it.
#[test]
fn a_retained_qos2_delivery_in_flight_survives_a_crash() {
    let now = Instant::now();
    let store = Arc::new(HookStore::new());
    let core = core_on(&store, now);
    let (mut publ, _) = connect(&core, now, "p", false);
    publ.publish(now, "r2", "retained", QoS::ExactlyOnce, true);
    publ.send(now, &[Packet::PubRel(PubAck::new(pid(1)))]);
    publ.recv(now);
    let (mut sub, _) = connect(&core, now, "s", true);
    subscribe(&mut sub, now, "r2", QoS::ExactlyOnce);
    let got = sub.recv(now);
    let sent = publishes(&got);
    eprintln!(
        "subscriber got: {sent:?}; output ticket {}",
        sub.conn.output_ticket()
    );
    let id = sent[0].2.expect("QoS 2");
    sub.send(now, &[Packet::PubRec(PubAck::new(pid(id)))]);
    let got = sub.recv(now);
    assert!(got.iter().any(|p| matches!(p, Packet::PubRel(_))));
    // kill -9: a new core on the same journal.
    std::mem::forget(sub);
    let later = now + Duration::from_secs(1);
    let store2 = store.clone();
    let core2 = Core::new(
        BrokerConfig::default(),
        Arc::new(AllowAll),
        store2,
        Arc::new(Standalone),
        later,
    )
    .expect("valid");
    let (mut back, got) = connect(&core2, later, "s", true);
    let mut out = got;
    out.extend(back.recv(later));
    eprintln!("after restart: {out:?}");
    assert!(
        out.iter()
            .any(|p| matches!(p, Packet::PubRel(r) if r.packet_id.get() == id)),
        "the PUBREL of identifier {id} is not resent after the crash"
    );
}

/// A clean session with no will writes to the journal when it ends.
#[test]
fn a_clean_session_writes_nothing_to_the_journal() {
    let now = Instant::now();
    let store = Arc::new(HookStore::new());
    let core = core_on(&store, now);
    let before = store.writes.load(Ordering::SeqCst);
    let (mut c, _) = connect(&core, now, "clean", false);
    c.send(now, &[Packet::Disconnect(Default::default())]);
    c.recv(now);
    let after = store.writes.load(Ordering::SeqCst);
    assert_eq!(
        after,
        before,
        "a clean session wrote {} changes",
        after - before
    );
}

fn core_with(store: &Arc<HookStore>, now: Instant, config: BrokerConfig) -> Arc<Core> {
    let core = Core::new(
        config,
        Arc::new(AllowAll),
        store.clone(),
        Arc::new(Standalone),
        now,
    )
    .expect("valid");
    let _ = store.core.set(Arc::downgrade(&core));
    core
}

/// A QoS 2 publish whose only subscriber is blocked, from a persistent publisher that goes
/// away while it waits: the identifier is freed in memory (IncomingReleased) but that change
/// stays unwritten in the offline session, while IncomingQos2 is durable.
#[test]
fn an_abandoned_qos2_publish_frees_its_identifier_in_the_journal() {
    let now = Instant::now();
    let store = Arc::new(HookStore::new());
    let mut config = BrokerConfig::default();
    config.limits.inbox_capacity = 1;
    config.limits.backpressure_timeout_ms = 60_000;
    let core = core_with(&store, now, config);
    let (mut sub, _) = connect(&core, now, "s", false);
    subscribe(&mut sub, now, "b", QoS::ExactlyOnce);
    sub.recv(now);
    let (mut publ, _) = connect(&core, now, "p", true);
    // Fill the subscriber's inbox (it does not read).
    publ.publish(now, "b", "fill", QoS::AtLeastOnce, false);
    eprintln!("after fill: {:?}", publ.recv(now));
    publ.publish(now, "b", "x", QoS::ExactlyOnce, false);
    let out = publ.recv(now);
    eprintln!("publisher output while blocked: {out:?}");
    publ.conn.connection_lost(now);
    eprintln!("journal writes so far: {}", store.submitted());
    let restored = store.restore(now);
    let p = restored
        .iter()
        .find(|r| r.record.client_id.as_str() == "p")
        .expect("a journal");
    eprintln!("journal incoming_qos2 of p: {:?}", p.incoming_qos2);
    assert!(
        p.incoming_qos2.is_empty(),
        "a crash now makes the resend a duplicate: lost"
    );
}

/// The whole story: after the crash the resend is answered as a duplicate and never routed.
#[test]
fn an_abandoned_qos2_publish_is_routed_again_after_a_crash() {
    let now = Instant::now();
    let store = Arc::new(HookStore::new());
    let mut config = BrokerConfig::default();
    config.limits.inbox_capacity = 1;
    config.limits.backpressure_timeout_ms = 60_000;
    let core = core_with(&store, now, config.clone());
    let (mut sub, _) = connect(&core, now, "s", true);
    subscribe(&mut sub, now, "b", QoS::ExactlyOnce);
    sub.recv(now);
    let (mut publ, _) = connect(&core, now, "p", true);
    publ.publish(now, "b", "fill", QoS::AtLeastOnce, false);
    publ.recv(now);
    publ.publish(now, "b", "x", QoS::ExactlyOnce, false);
    assert!(publ.recv(now).is_empty(), "no PUBREC while blocked");
    publ.conn.connection_lost(now);
    // kill -9 here.
    std::mem::forget(sub);
    std::mem::forget(publ);
    let later = now + Duration::from_secs(1);
    let core2 = Core::new(
        config,
        Arc::new(AllowAll),
        store.clone(),
        Arc::new(Standalone),
        later,
    )
    .expect("valid");
    let (mut publ, _) = connect(&core2, later, "p", true);
    let resend = Publish {
        dup: true,
        qos: QoS::ExactlyOnce,
        topic: "b".to_owned().into(),
        packet_id: Some(pid(2)),
        payload: Bytes::from_static(b"x"),
        ..Publish::default()
    };
    publ.send(later, &[Packet::Publish(resend)]);
    let out = publ.recv(later);
    eprintln!("publisher after resend: {out:?}");
    let (mut sub, got) = connect(&core2, later, "s", true);
    let mut all = publishes(&got);
    all.extend(publishes(&sub.recv(later)));
    eprintln!("subscriber after restart: {all:?}");
    assert!(
        all.iter().any(|(p, _, _)| p == "x"),
        "PUBREC'd but never delivered"
    );
}

/// PUBACK and DISCONNECT in one read: the Finished change stays in the offline session, and
/// is written on resume under the connection's client identifier before it is set.
#[test]
fn a_puback_read_with_a_disconnect_is_written() {
    let now = Instant::now();
    let store = Arc::new(HookStore::new());
    let core = core_on(&store, now);
    let (mut sub, _) = connect(&core, now, "s", true);
    subscribe(&mut sub, now, "t", QoS::AtLeastOnce);
    sub.recv(now);
    let (mut publ, _) = connect(&core, now, "p", false);
    publ.publish(now, "t", "m1", QoS::AtLeastOnce, false);
    publ.recv(now);
    let got = sub.recv(now);
    let id = publishes(&got)[0].2.expect("id");
    sub.send(
        now,
        &[
            Packet::PubAck(PubAck::new(pid(id))),
            Packet::Disconnect(Default::default()),
        ],
    );
    drop(sub);
    publ.publish(now, "t", "m2", QoS::AtLeastOnce, false);
    publ.recv(now);
    let (mut back, got) = connect(&core, now, "s", true);
    let mut all = publishes(&got);
    all.extend(publishes(&back.recv(now)));
    eprintln!("after reconnect: {all:?}");
    assert!(
        !all.iter().any(|(p, _, _)| p == "m1"),
        "m1 was acknowledged: {all:?}"
    );
}
