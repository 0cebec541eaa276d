//! The broker on a journal whose durability the test controls: what depends on a journal
//! write (a PUBACK or PUBREC to a publisher, a SUBACK, a QoS 2 PUBLISH to a subscriber, a
//! PUBREL) reaches the client only once the write is durable; what depends on none goes at
//! once; an offline persistent session's queue lives in the journal, not in memory; and a
//! journal that fails never lets a held acknowledgement out.

mod common;

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use common::*;
use midge_broker::{
    Broker, BrokerHandle, Change, Journal, JournalError, MemoryJournal, MemoryStore,
    RestoredSession, Retained, Store,
};
use midge_codec::{ByteStr, Connect, Packet, PubAck, QoS, ReasonCode, SubscriptionOptions};
use midge_proto::session::Delivery;
use midge_topic::{TopicFilter, TopicName};

/// A journal that applies changes at once (as [`MemoryJournal`]) but calls them durable
/// only when the test commits, or never once it has failed.
#[derive(Default)]
struct ManualJournal {
    inner: MemoryJournal,
    state: Mutex<Durability>,
}

#[derive(Default)]
struct Durability {
    committed: u64,
    failed: bool,
    waiting: Vec<Waker>,
}

impl ManualJournal {
    /// Makes everything written so far durable.
    fn commit(&self) {
        let mut state = self.state.lock().expect("lock");
        state.committed = self.inner.submitted();
        for waker in state.waiting.drain(..) {
            waker.wake();
        }
    }

    fn fail(&self) {
        let mut state = self.state.lock().expect("lock");
        state.failed = true;
        for waker in state.waiting.drain(..) {
            waker.wake();
        }
    }

    fn pending(&self) -> u64 {
        self.inner.submitted() - self.state.lock().expect("lock").committed
    }
}

impl Journal for ManualJournal {
    fn next_tag(&self) -> u64 {
        self.inner.next_tag()
    }

    fn write(&self, change: Change<'_>) {
        self.inner.write(change);
    }

    fn atomically(&self, f: &mut dyn FnMut()) {
        self.inner.atomically(f);
    }

    fn submitted(&self) -> u64 {
        self.inner.submitted()
    }

    fn poll_durable(&self, ticket: u64, cx: &mut Context<'_>) -> Poll<Result<(), JournalError>> {
        let mut state = self.state.lock().expect("lock");
        if state.failed {
            return Poll::Ready(Err(JournalError::Failed("failed by the test".into())));
        }
        if ticket <= state.committed {
            return Poll::Ready(Ok(()));
        }
        state.waiting.push(cx.waker().clone());
        Poll::Pending
    }

    fn is_durable(&self, ticket: u64) -> bool {
        let state = self.state.lock().expect("lock");
        !state.failed && ticket <= state.committed
    }

    fn restore(&self, now: Instant) -> Vec<RestoredSession> {
        self.inner.restore(now)
    }

    fn queued(&self, client_id: &ByteStr, now: Instant) -> Vec<Delivery> {
        self.inner.queued(client_id, now)
    }
}

/// Retained messages in memory, sessions in a [`ManualJournal`].
#[derive(Default)]
struct ManualStore {
    retained: MemoryStore,
    journal: ManualJournal,
}

impl Store for ManualStore {
    fn set_retained(&self, topic: &TopicName<'_>, message: Option<Retained>) -> Option<Retained> {
        self.retained.set_retained(topic, message)
    }

    fn retained_matching(&self, filter: &TopicFilter<'_>, visit: &mut dyn FnMut(&Retained)) {
        self.retained.retained_matching(filter, visit);
    }

    fn retained_count(&self) -> usize {
        self.retained.retained_count()
    }

    fn journal(&self) -> Option<&dyn Journal> {
        Some(&self.journal)
    }
}

async fn start_on(store: &Arc<ManualStore>) -> BrokerHandle {
    Broker::builder()
        .config(test_config())
        .store(store.clone())
        .bind("127.0.0.1:0".parse().expect("addr"))
        .start()
        .await
        .expect("broker starts")
}

/// Stops the broker, committing as it goes: a stop waits until the journal has its last
/// changes.
async fn stop(store: &Arc<ManualStore>, broker: BrokerHandle) {
    let committer = {
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                store.journal.commit();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    broker.shutdown().await;
    committer.abort();
}

fn persistent(id: &str) -> Connect {
    let mut connect = Connect::new(V5, id.to_owned());
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(600);
    connect
}

/// Connects a persistent client, committing the journal so that its CONNACK can go.
async fn connect_persistent(store: &ManualStore, broker: &BrokerHandle, id: &str) -> Peer {
    let mut peer = Peer::tcp(broker.local_addr(), V5).await;
    peer.send(Packet::Connect(Box::new(persistent(id)))).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    store.journal.commit();
    match peer.recv_packet().await {
        Packet::ConnAck(ack) => assert!(ack.reason_code.is_success()),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    peer
}

async fn subscribe_committed(store: &ManualStore, peer: &mut Peer, filter: &str, qos: QoS) {
    let subscribe = midge_codec::Subscribe {
        packet_id: pid(1),
        filters: vec![(filter.to_owned().into(), SubscriptionOptions::qos(qos))],
        properties: Default::default(),
    };
    peer.send(Packet::Subscribe(subscribe)).await;
    // The SUBACK waits for the subscription to be durable.
    peer.expect_silence(Duration::from_millis(150)).await;
    store.journal.commit();
    match peer.recv_packet().await {
        Packet::SubAck(_) => {}
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_puback_waits_until_the_message_is_durable_for_a_persistent_subscriber() {
    let store = Arc::new(ManualStore::default());
    let broker = start_on(&store).await;
    let mut subscriber = connect_persistent(&store, &broker, "sub").await;
    subscribe_committed(&store, &mut subscriber, "t", QoS::AtLeastOnce).await;

    let mut publisher = Peer::connect(broker.local_addr(), V5, "pub").await;
    let publish = publisher.publish_packet("t", "kept", QoS::AtLeastOnce, false);
    let id = publish.packet_id.expect("QoS 1");
    publisher.send(Packet::Publish(publish)).await;
    publisher.expect_silence(Duration::from_millis(200)).await;
    assert!(store.journal.pending() > 0, "the message was written");
    store.journal.commit();
    match publisher.recv_packet().await {
        Packet::PubAck(ack) => {
            assert_eq!(ack.packet_id, id);
            assert!(ack.reason_code.is_success());
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
    let delivered = subscriber.recv_publish().await;
    assert_eq!(&delivered.payload[..], b"kept");
    stop(&store, broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_waits_when_no_persistent_session_is_involved() {
    let store = Arc::new(ManualStore::default());
    let broker = start_on(&store).await;
    let mut subscriber = Peer::connect(broker.local_addr(), V5, "clean-sub").await;
    subscriber.subscribe("t", QoS::ExactlyOnce).await;
    let mut publisher = Peer::connect(broker.local_addr(), V5, "pub").await;
    // Never committed: a clean session's messages are not written.
    assert_eq!(
        publisher.publish("t", "m", QoS::ExactlyOnce, false).await,
        ReasonCode::SUCCESS
    );
    assert_eq!(&subscriber.recv_publish().await.payload[..], b"m");
    assert_eq!(store.journal.pending(), 0);
    stop(&store, broker).await;
}

// Conformance: [MQTT-5:4.3.3-10]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos2_publish_to_a_persistent_subscriber_goes_once_its_identifier_is_durable() {
    let store = Arc::new(ManualStore::default());
    let broker = start_on(&store).await;
    let mut subscriber = connect_persistent(&store, &broker, "sub2").await;
    subscribe_committed(&store, &mut subscriber, "q", QoS::ExactlyOnce).await;
    let mut publisher = Peer::connect(broker.local_addr(), V5, "pub2").await;
    let publish = publisher.publish_packet("q", "once", QoS::ExactlyOnce, false);
    publisher.send(Packet::Publish(publish)).await;
    // Neither the PUBREC nor the subscriber's PUBLISH goes before a commit.
    publisher.expect_silence(Duration::from_millis(150)).await;
    subscriber.expect_silence(Duration::from_millis(50)).await;
    store.journal.commit();
    assert!(matches!(publisher.recv_packet().await, Packet::PubRec(_)));
    // The PUBLISH to the subscriber was made after the commit (its identifier is another
    // write): it waits for the next one.
    let publish = loop {
        match subscriber.next(Duration::from_millis(100)).await {
            Some(Packet::Publish(p)) => break p,
            Some(other) => panic!("expected PUBLISH, got {other:?}"),
            None => store.journal.commit(),
        }
    };
    let id = publish.packet_id.expect("QoS 2");
    subscriber.send(Packet::PubRec(PubAck::new(id))).await;
    // The PUBREL waits for the PUBREC to be kept.
    subscriber.expect_silence(Duration::from_millis(150)).await;
    store.journal.commit();
    assert!(matches!(subscriber.recv_packet().await, Packet::PubRel(_)));
    stop(&store, broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_persistent_session_queues_in_the_journal_not_in_memory() {
    let store = Arc::new(ManualStore::default());
    let broker = start_on(&store).await;
    let subscriber = {
        let mut s = connect_persistent(&store, &broker, "away").await;
        subscribe_committed(&store, &mut s, "o", QoS::AtLeastOnce).await;
        s
    };
    subscriber.disconnect().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = broker.stats().queued_bytes;
    let mut publisher = Peer::connect(broker.local_addr(), V5, "pub3").await;
    let committer = {
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                store.journal.commit();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    for n in 0..100 {
        let publish =
            publisher.publish_packet("o", &format!("{n:0>1000}"), QoS::AtLeastOnce, false);
        publisher.send(Packet::Publish(publish)).await;
    }
    for _ in 0..100 {
        assert!(matches!(publisher.recv_packet().await, Packet::PubAck(_)));
    }
    let after = broker.stats().queued_bytes;
    assert!(
        after < before + 10_000,
        "100 KB queued for an offline session cost memory: {before} -> {after}"
    );
    let mut back = connect_persistent(&store, &broker, "away").await;
    for n in 0..100 {
        let p = back.recv_publish().await;
        assert_eq!(p.payload, format!("{n:0>1000}").as_bytes());
        back.send(Packet::PubAck(PubAck::new(p.packet_id.expect("QoS 1"))))
            .await;
    }
    committer.abort();
    stop(&store, broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_journal_never_lets_a_held_acknowledgement_out() {
    let store = Arc::new(ManualStore::default());
    let broker = start_on(&store).await;
    let mut subscriber = connect_persistent(&store, &broker, "sub4").await;
    subscribe_committed(&store, &mut subscriber, "f", QoS::AtLeastOnce).await;
    let mut publisher = Peer::connect(broker.local_addr(), V5, "pub4").await;
    let publish = publisher.publish_packet("f", "lost", QoS::AtLeastOnce, false);
    publisher.send(Packet::Publish(publish)).await;
    publisher.expect_silence(Duration::from_millis(150)).await;
    store.journal.fail();
    // Closed without its PUBACK: the client still has the message and sends it again.
    let got = publisher.until_closed().await;
    assert!(
        !got.iter().any(|p| matches!(p, Packet::PubAck(_))),
        "a PUBACK went out for a message the journal did not keep: {got:?}"
    );
    drop(broker);
}

/// Commits every few milliseconds until dropped.
fn committing(store: &Arc<ManualStore>) -> tokio::task::JoinHandle<()> {
    let store = store.clone();
    tokio::spawn(async move {
        loop {
            store.journal.commit();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

// Conformance: [MQTT-5:4.4.0-1]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_in_flight_when_the_client_left_comes_back_once_with_the_queue_behind_it() {
    let store = Arc::new(ManualStore::default());
    let broker = start_on(&store).await;
    let committer = committing(&store);
    let mut subscriber =
        Peer::connect_with(broker.local_addr(), receive_maximum_1("flight", false))
            .await
            .0;
    subscriber.subscribe("f/#", QoS::AtLeastOnce).await;
    let mut publisher = Peer::connect(broker.local_addr(), V5, "pub5").await;
    publisher
        .publish("f/1", "first", QoS::AtLeastOnce, false)
        .await;
    // Received and not acknowledged: in flight when the client goes.
    match subscriber.recv_packet().await {
        Packet::Publish(first) => assert_eq!(&first.payload[..], b"first"),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    subscriber.disconnect().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for n in 2..=4 {
        publisher
            .publish(&format!("f/{n}"), &format!("m{n}"), QoS::AtLeastOnce, false)
            .await;
    }
    let (mut back, ack) =
        Peer::connect_with(broker.local_addr(), receive_maximum_1("flight", false)).await;
    assert!(ack.session_present);
    let mut got = Vec::new();
    while let Some(packet) = back.next(Duration::from_millis(300)).await {
        let Packet::Publish(p) = packet else {
            panic!("expected PUBLISH, got {packet:?}");
        };
        got.push((String::from_utf8_lossy(&p.payload).into_owned(), p.dup));
        back.send(Packet::PubAck(PubAck::new(p.packet_id.expect("QoS 1"))))
            .await;
    }
    assert_eq!(
        got,
        [
            ("first".to_owned(), true),
            ("m2".to_owned(), false),
            ("m3".to_owned(), false),
            ("m4".to_owned(), false)
        ]
    );
    committer.abort();
    stop(&store, broker).await;
}
