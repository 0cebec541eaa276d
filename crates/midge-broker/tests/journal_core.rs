//! The broker core on an in-memory journal, driven without a runtime: what a crash (a second
//! core started on the same journal) finds after the races and closes that can lose a change;
//! a delivery offered again after its session's queue was read back from the journal (a copy
//! of what the session holds) is neither delivered twice nor allowed to delete the original;
//! and a refusal a 3.x client cannot be told frees its QoS 2 identifier.

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
    full: std::sync::atomic::AtomicBool,
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
    fn has_room(&self) -> bool {
        !self.full.load(Ordering::SeqCst)
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
    sub.send(
        now,
        &[
            Packet::PubRec(PubAck::new(pid(id))),
            Packet::Disconnect(Default::default()),
        ],
    );
    sub.recv(now);
    let restored = store.restore(now);
    let s = restored
        .iter()
        .find(|r| r.record.client_id.as_str() == "s")
        .expect("a journal");
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
    let _ = publ.recv(now);
    publ.publish(now, "b", "x", QoS::ExactlyOnce, false);
    publ.recv(now);
    publ.conn.connection_lost(now);
    let restored = store.restore(now);
    let p = restored
        .iter()
        .find(|r| r.record.client_id.as_str() == "p")
        .expect("a journal");
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
    publ.recv(later);
    let (mut sub, got) = connect(&core2, later, "s", true);
    let mut all = publishes(&got);
    all.extend(publishes(&sub.recv(later)));
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
    assert!(
        !all.iter().any(|(p, _, _)| p == "m1"),
        "m1 was acknowledged: {all:?}"
    );
}

/// Connects without taking any output (the CONNACK stays queued).
fn connect_quiet(core: &Arc<Core>, now: Instant, id: &str) -> Client {
    let mut c = Client::new(core, now);
    let mut connect = Connect::new(V5, id.to_owned());
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(600);
    c.send(now, &[Packet::Connect(Box::new(connect))]);
    c
}

fn blocked_config() -> BrokerConfig {
    let mut config = BrokerConfig::default();
    config.limits.inbox_capacity = 1;
    config.limits.backpressure_timeout_ms = 60_000;
    config
}

/// Z's inbox full -> D blocked; Z drops; S2 reads the queue back (D included) before the
/// publisher's retry; the retry puts a copy of D into S2's inbox.
fn setup_copy(qos: QoS) -> (Arc<HookStore>, Arc<Core>, Client, Client, Instant) {
    let now = Instant::now();
    let store = Arc::new(HookStore::new());
    let core = core_with(&store, now, blocked_config());
    let (mut z, _) = connect(&core, now, "s", true);
    subscribe(&mut z, now, "t", qos);
    z.recv(now);
    let (mut publ, _) = connect(&core, now, "p", false);
    publ.publish(now, "t", "m0", QoS::AtLeastOnce, false);
    let _ = publ.recv(now);
    publ.publish(now, "t", "D", qos, false);
    assert!(publ.recv(now).is_empty(), "D blocked");
    z.conn.connection_lost(now);
    drop(z);
    let s2 = connect_quiet(&core, now, "s");
    (store, core, publ, s2, now)
}

fn count(all: &[(String, bool, Option<u16>)], what: &str) -> usize {
    all.iter().filter(|(p, _, _)| p == what).count()
}

#[test]
fn a_copy_read_back_is_not_delivered_again_after_a_takeover() {
    let (_store, core, mut publ, mut s2, now) = setup_copy(QoS::ExactlyOnce);
    // The publisher's retry: the copy goes into S2's inbox.
    let _ = publ.recv(now);
    // A third connection takes the session over before S2 pumped its inbox.
    let mut s3 = connect_quiet(&core, now, "s");
    s2.conn.handle_wakeup(now);
    let mut all = publishes(&s3.recv(now));
    for _ in 0..3 {
        all.extend(publishes(&s3.recv(now)));
    }
    assert_eq!(
        count(&all, "D"),
        1,
        "QoS 2 D delivered {} times: {all:?}",
        count(&all, "D")
    );
}

#[test]
fn a_copy_read_back_is_not_delivered_again_after_another_reconnect() {
    let (_store, core, mut publ, mut s2, now) = setup_copy(QoS::ExactlyOnce);
    // S2 gets everything and completes every flow.
    let got = publishes(&s2.recv(now));
    for (payload, _, id) in &got {
        let id = pid(id.expect("id"));
        if payload == "m0" {
            s2.send(now, &[Packet::PubAck(PubAck::new(id))]);
        } else {
            s2.send(now, &[Packet::PubRec(PubAck::new(id))]);
            s2.recv(now);
            s2.send(now, &[Packet::PubComp(PubAck::new(id))]);
        }
    }
    s2.recv(now);
    s2.send(now, &[Packet::Disconnect(Default::default())]);
    s2.recv(now);
    drop(s2);
    let mut s3 = connect_quiet(&core, now, "s");
    let _ = publ.recv(now);
    let mut all = publishes(&s3.recv(now));
    all.extend(publishes(&s3.recv(now)));
    assert_eq!(
        count(&all, "D"),
        0,
        "QoS 2 D (completed by S2) delivered again: {all:?}"
    );
}

#[test]
fn a_copy_that_times_out_leaves_the_original_in_the_journal() {
    let (_, core, mut publ, mut s2, now) = setup_copy(QoS::AtLeastOnce);
    // Another publisher fills S2's inbox so the copy blocks there.
    let (mut p2, _) = connect(&core, now, "p2", false);
    p2.publish(now, "t", "F", QoS::AtLeastOnce, false);
    let _ = p2.recv(now);
    let _ = publ.recv(now);
    let later = now + Duration::from_secs(61);
    publ.conn.handle_timeout(later);
    let _ = publ.recv(later);
    // S2 drops before sending; S3 reads back.
    s2.conn.connection_lost(later);
    drop(s2);
    let (mut s3, got) = connect(&core, later, "s", true);
    let mut all = publishes(&got);
    all.extend(publishes(&s3.recv(later)));
    assert_eq!(count(&all, "D"), 1, "D (read back by S2) lost: {all:?}");
}

#[test]
fn a_3x_qos2_message_refused_by_a_full_store_is_routed_when_resent() {
    const V3: ProtocolVersion = ProtocolVersion::V3_1_1;
    let now = Instant::now();
    let store = Arc::new(HookStore::new());
    let core = core_on(&store, now);
    let (mut sub, _) = connect(&core, now, "s", false);
    subscribe(&mut sub, now, "x", QoS::ExactlyOnce);
    sub.recv(now);
    let send3 = |c: &mut Connection, packets: &[Packet]| {
        let mut input = BytesMut::new();
        for p in packets {
            p.clone().encode(V3, &mut input).expect("encodes");
        }
        c.handle_input(now, &mut input);
    };
    let recv3 = |c: &mut Connection| {
        c.handle_wakeup(now);
        let mut out = BytesMut::new();
        while c.poll_transmit(now, &mut out) {}
        let mut packets = Vec::new();
        while let Some(p) = Packet::decode(&mut out, V3, u32::MAX).expect("valid") {
            packets.push(p);
        }
        packets
    };
    let peer: SocketAddr = "127.0.0.1:40001".parse().expect("address");
    let mut p = Connection::new(&core, peer, now);
    let mut c = Connect::new(V3, "p3".to_owned());
    c.clean_start = false;
    send3(&mut p, &[Packet::Connect(Box::new(c.clone()))]);
    let _ = recv3(&mut p);
    store.full.store(true, Ordering::SeqCst);
    let publish = Publish {
        qos: QoS::ExactlyOnce,
        topic: "x".to_owned().into(),
        packet_id: Some(pid(7)),
        payload: Bytes::from_static(b"x"),
        ..Publish::default()
    };
    send3(&mut p, &[Packet::Publish(publish.clone())]);
    let _ = recv3(&mut p);
    drop(p);
    store.full.store(false, Ordering::SeqCst);
    let mut p = Connection::new(&core, peer, now);
    send3(&mut p, &[Packet::Connect(Box::new(c))]);
    let _ = recv3(&mut p);
    send3(
        &mut p,
        &[Packet::Publish(Publish {
            dup: true,
            ..publish
        })],
    );
    let _ = recv3(&mut p);
    let got = publishes(&sub.recv(now));
    assert_eq!(got.len(), 1, "PUBREC'd and never routed");
}

/// A session that ends with its connection is kept in the journal only for its will: taken
/// over, it publishes the will and the record goes, so that a restart does not publish the
/// will a second time.
#[test]
fn a_taken_over_session_kept_for_its_will_leaves_the_journal() {
    let now = Instant::now();
    let store = Arc::new(HookStore::new());
    let core = core_on(&store, now);
    let mut a = Client::new(&core, now);
    let mut first = Connect::new(V5, "a".to_owned());
    first.will = Some(midge_codec::Will {
        topic: "w".to_owned().into(),
        payload: Bytes::from_static(b"a died"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    });
    a.send(now, &[Packet::Connect(Box::new(first))]);
    a.recv(now);
    let kept = |s: &HookStore| {
        s.restore(now)
            .iter()
            .any(|r| r.record.client_id.as_str() == "a")
    };
    assert!(kept(&store), "kept for its will");
    let mut b = Client::new(&core, now);
    b.send(
        now,
        &[Packet::Connect(Box::new(Connect::new(V5, "a".to_owned())))],
    );
    a.recv(now);
    b.recv(now);
    b.recv(now);
    assert!(!kept(&store), "a restart would publish the will again");
}
