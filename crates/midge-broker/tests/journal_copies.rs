//! The broker core on an in-memory journal, driven without a runtime: a delivery offered again
//! after its session's queue was read back from the journal (a copy of what the session holds)
//! is neither delivered twice nor allowed to delete the original; and a refusal a 3.x client
//! cannot be told frees its QoS 2 identifier.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use midge_broker::core::{Connection, Core};
use midge_broker::{
    AllowAll, BrokerConfig, Change, Journal, JournalError, MemoryStore, RestoredSession, Retained,
    Standalone, Store,
};
use midge_codec::{
    ByteStr, Connect, Packet, PacketId, ProtocolVersion, PubAck, Publish, QoS, Subscribe,
    SubscriptionOptions,
};
use midge_proto::session::Delivery;
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
    fn restore(&self, now: Instant) -> Vec<RestoredSession> {
        self.inner.journal().expect("a journal").restore(now)
    }
    fn has_room(&self) -> bool {
        !self.full.load(Ordering::SeqCst)
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
    eprintln!("m0 ack: {:?}", publ.recv(now));
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
    eprintln!("publisher after retry: {:?}", publ.recv(now));
    // A third connection takes the session over before S2 pumped its inbox.
    let mut s3 = connect_quiet(&core, now, "s");
    s2.conn.handle_wakeup(now);
    let mut all = publishes(&s3.recv(now));
    for _ in 0..3 {
        all.extend(publishes(&s3.recv(now)));
    }
    eprintln!("S3 got: {all:?}");
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
    eprintln!("S2 got: {got:?}");
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
    eprintln!("publisher after retry: {:?}", publ.recv(now));
    let mut all = publishes(&s3.recv(now));
    all.extend(publishes(&s3.recv(now)));
    eprintln!("S3 got: {all:?}");
    assert_eq!(
        count(&all, "D"),
        0,
        "QoS 2 D (completed by S2) delivered again: {all:?}"
    );
}

#[test]
fn a_copy_that_times_out_leaves_the_original_in_the_journal() {
    let (store, core, mut publ, mut s2, now) = setup_copy(QoS::AtLeastOnce);
    // Another publisher fills S2's inbox so the copy blocks there.
    let (mut p2, _) = connect(&core, now, "p2", false);
    p2.publish(now, "t", "F", QoS::AtLeastOnce, false);
    eprintln!("p2: {:?}", p2.recv(now));
    eprintln!("publisher retry: {:?}", publ.recv(now));
    let later = now + Duration::from_secs(61);
    publ.conn.handle_timeout(later);
    eprintln!("publisher after timeout: {:?}", publ.recv(later));
    let restored = store.restore(later);
    let s = restored
        .iter()
        .find(|r| r.record.client_id.as_str() == "s")
        .unwrap();
    eprintln!("journal: queued {} ", s.queued);
    // S2 drops before sending; S3 reads back.
    s2.conn.connection_lost(later);
    drop(s2);
    let (mut s3, got) = connect(&core, later, "s", true);
    let mut all = publishes(&got);
    all.extend(publishes(&s3.recv(later)));
    eprintln!("S3 got: {all:?}");
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
    let peer: SocketAddr = "127.0.0.1:40001".parse().unwrap();
    let mut p = Connection::new(&core, peer, now);
    let mut c = Connect::new(V3, "p3".to_owned());
    c.clean_start = false;
    send3(&mut p, &[Packet::Connect(Box::new(c.clone()))]);
    eprintln!("p connack {:?}", recv3(&mut p));
    store.full.store(true, Ordering::SeqCst);
    let publish = Publish {
        qos: QoS::ExactlyOnce,
        topic: "x".to_owned().into(),
        packet_id: Some(pid(7)),
        payload: Bytes::from_static(b"x"),
        ..Publish::default()
    };
    send3(&mut p, &[Packet::Publish(publish.clone())]);
    eprintln!(
        "p after refused publish {:?} closed {}",
        recv3(&mut p),
        p.is_closed()
    );
    drop(p);
    store.full.store(false, Ordering::SeqCst);
    let mut p = Connection::new(&core, peer, now);
    send3(&mut p, &[Packet::Connect(Box::new(c))]);
    eprintln!("p reconnect {:?}", recv3(&mut p));
    send3(
        &mut p,
        &[Packet::Publish(Publish {
            dup: true,
            ..publish
        })],
    );
    eprintln!("p after resend {:?}", recv3(&mut p));
    let got = publishes(&sub.recv(now));
    eprintln!("sub got {got:?}");
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
