//! Helpers shared by the store's tests.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use midge_broker::{Journal, JournalError, RestoredMessage, RestoredSession, SessionRecord};
use midge_codec::{ByteStr, ProtocolVersion, QoS};
use midge_proto::session::Delivery;
use midge_proto::Message;

/// A directory under the system's temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "midge-store-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temporary directory");
        Self(path)
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Blocks until `ticket` is durable, as a broker task would wait for it.
pub fn wait_durable(journal: &dyn Journal, ticket: u64) -> Result<(), JournalError> {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Poll::Ready(result) = journal.poll_durable(ticket, &mut cx) {
            return result;
        }
        assert!(
            Instant::now() < deadline,
            "ticket {ticket} never became durable"
        );
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

/// Some time before `now`.
pub fn ago(now: Instant, millis: u64) -> Instant {
    now.checked_sub(Duration::from_millis(millis))
        .unwrap_or(now)
}

pub fn record(client: &str, expiry: u32, now: Instant) -> SessionRecord {
    SessionRecord::new(
        ByteStr::from(client.to_owned()),
        ProtocolVersion::V5,
        expiry,
        now,
    )
}

pub fn delivery(topic: &str, payload: &[u8], qos: QoS, tag: u64, received: Instant) -> Delivery {
    let message = Message::new(
        ByteStr::from(topic.to_owned()),
        bytes::Bytes::copy_from_slice(payload),
        qos,
    );
    let mut delivery = Delivery::new(Arc::new(message), received);
    delivery.tag = tag;
    delivery
}

/// A restored session without its times, which are compared apart ([`times`]): a disk store
/// keeps them as wall-clock milliseconds.
pub fn shape(sessions: &[RestoredSession]) -> String {
    let mut out = String::new();
    for s in sessions {
        let r = &s.record;
        out += &format!(
            "session {:?} user={:?} {:?} expiry={} connected={} will={:?}\n",
            r.client_id, r.username, r.version, r.expiry_interval, r.connected, r.will
        );
        for (filter, sub) in &s.subscriptions {
            out += &format!("  sub {filter:?} {sub:?}\n");
        }
        for m in &s.messages {
            let line = match m {
                RestoredMessage::Queued(d) => format!("queued {}", delivery_shape(d)),
                RestoredMessage::Sent(id, d) => format!("sent {id} {}", delivery_shape(d)),
                RestoredMessage::Released(id, tag) => format!("released {id} tag={tag}"),
                other => format!("{other:?}"),
            };
            out += &format!("  {line}\n");
        }
        out += &format!("  queued {}\n", s.queued);
        out += &format!("  incoming {:?}\n", s.incoming_qos2);
    }
    out
}

fn delivery_shape(d: &Delivery) -> String {
    format!(
        "tag={} qos={:?} retain={} ids={:?} message={:?}/{:?}/{:?}/{}/{:?}",
        d.tag,
        d.qos,
        d.retain,
        d.subscription_ids,
        d.message.topic,
        d.message.payload,
        d.message.qos,
        d.message.retain,
        d.message.properties
    )
}

/// Every time of the sessions, as milliseconds before `now`.
pub fn times(sessions: &[RestoredSession], now: Instant) -> Vec<u128> {
    let ms = |t: Instant| now.saturating_duration_since(t).as_millis();
    let mut out = Vec::new();
    for s in sessions {
        out.push(ms(s.record.offline_since));
        for m in &s.messages {
            match m {
                RestoredMessage::Queued(d) | RestoredMessage::Sent(_, d) => {
                    out.push(ms(d.received_at));
                }
                _ => {}
            }
        }
    }
    out
}

/// Asserts two restores hold the same, with times within a few milliseconds.
pub fn assert_same(disk: &[RestoredSession], memory: &[RestoredSession], now: Instant) {
    assert_eq!(shape(disk), shape(memory));
    let (a, b) = (times(disk, now), times(memory, now));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!(x.abs_diff(*y) <= 3, "times differ: {a:?} vs {b:?}");
    }
}

/// Asserts two journals hold the same: their restores, and each session's queue.
pub fn assert_same_journals(disk: &dyn Journal, memory: &dyn Journal, now: Instant) {
    let (a, b) = (disk.restore(now), memory.restore(now));
    assert_same(&a, &b, now);
    for session in &a {
        let id = &session.record.client_id;
        let (x, y) = (disk.queued(id, now), memory.queued(id, now));
        let shapes = |q: &[Delivery]| q.iter().map(delivery_shape).collect::<Vec<_>>();
        assert_eq!(shapes(&x), shapes(&y), "queue of {id}");
        for (p, q) in x.iter().zip(&y) {
            let ms = |t: Instant| now.saturating_duration_since(t).as_millis();
            assert!(
                ms(p.received_at).abs_diff(ms(q.received_at)) <= 3,
                "times differ"
            );
        }
    }
}
