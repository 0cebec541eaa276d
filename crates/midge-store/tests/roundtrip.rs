//! Every kind of change, written to a disk store, dropped and reopened, restores as the
//! in-memory journal (the reference model) restores the same changes.
#![allow(missing_docs)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use midge_broker::{Change, Journal, MemoryJournal, Retained, Store, SyncMode};
use midge_codec::{
    ByteStr, PacketId, QoS, RetainHandling, SubscriptionId, SubscriptionOptions, Will,
    WillProperties,
};
use midge_proto::session::{SessionChange, SessionSubscription};
use midge_proto::Message;
use midge_store::{DiskOptions, DiskStore};
use midge_topic::{TopicFilter, TopicName};
use proptest::prelude::*;

use common::{ago, assert_same_journals, delivery, record, wait_durable, TempDir};

fn pid(id: u16) -> PacketId {
    PacketId::new(id).expect("non-zero")
}

fn will() -> Will {
    let mut properties = WillProperties::default();
    properties.will_delay_interval = Some(30);
    properties.message.message_expiry_interval = Some(600);
    properties
        .message
        .set_content_type(Some("text/plain".into()))
        .expect("content type");
    properties
        .message
        .push_user_property("k", "v")
        .expect("user property");
    Will {
        topic: "clients/a/status".into(),
        payload: bytes::Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties,
    }
}

/// Writes `changes` to both journals.
fn both(disk: &DiskStore, memory: &MemoryJournal, changes: &[Change<'_>]) {
    for change in changes {
        disk.write(*change);
        memory.write(*change);
    }
}

#[test]
fn every_kind_of_change_survives_a_reopen() {
    let dir = TempDir::new("kinds");
    let path = dir.file("store.redb");
    let now = Instant::now();
    let memory = MemoryJournal::default();
    let (a, b, c) = (ByteStr::from("a"), ByteStr::from("b"), ByteStr::from("c"));
    {
        let store = DiskStore::open(&path, DiskOptions::default()).expect("opens");
        let mut ra = record("a", 3600, ago(now, 5_000));
        ra.username = Some("alice".into());
        ra.connected = false;
        ra.will = Some((will(), 30));
        let mut rb = record("b", 0, now);
        rb.will = Some((will(), 0));
        let rc = record("c", u32::MAX, ago(now, 60_000));
        let mut options = SubscriptionOptions::qos(QoS::ExactlyOnce);
        options.no_local = true;
        options.retain_handling = RetainHandling::DoNotSend;
        let sub = SessionSubscription::new(options, SubscriptionId::new(42));
        let plain = SessionSubscription::new(SubscriptionOptions::qos(QoS::AtMostOnce), None);
        let (f1, f2, f3) = (
            ByteStr::from("x/#"),
            ByteStr::from("$share/g/y/+"),
            ByteStr::from("z"),
        );
        let mut d1 = delivery(
            "x/1",
            b"one",
            QoS::AtLeastOnce,
            store.next_tag(),
            ago(now, 1_000),
        );
        d1.subscription_ids = vec![SubscriptionId::new(42).expect("id")];
        d1.retain = true;
        let mut message = Message::new("x/2", &b"two"[..], QoS::ExactlyOnce);
        message.properties.message_expiry_interval = Some(3600);
        message
            .properties
            .set_correlation_data(Some(bytes::Bytes::from_static(b"corr")))
            .expect("correlation data");
        let mut d2 = midge_proto::session::Delivery::new(Arc::new(message), ago(now, 2_000));
        d2.tag = store.next_tag();
        let d3 = delivery("x/3", b"three", QoS::ExactlyOnce, store.next_tag(), now);
        let d4 = delivery("x/4", b"four", QoS::AtLeastOnce, store.next_tag(), now);
        let d5 = delivery("x/5", b"five", QoS::AtLeastOnce, store.next_tag(), now);
        let changes = [
            Change::Session(&ra),
            Change::Session(&rb),
            Change::Session(&rc),
            Change::Subscribe {
                client_id: &a,
                filter: &f1,
                subscription: sub,
            },
            Change::Subscribe {
                client_id: &a,
                filter: &f2,
                subscription: plain,
            },
            Change::Subscribe {
                client_id: &c,
                filter: &f3,
                subscription: plain,
            },
            Change::Unsubscribe {
                client_id: &a,
                filter: &f2,
            },
            Change::Enqueue {
                client_id: &a,
                delivery: &d1,
            },
            Change::Enqueue {
                client_id: &a,
                delivery: &d2,
            },
            Change::Enqueue {
                client_id: &a,
                delivery: &d3,
            },
            Change::Enqueue {
                client_id: &a,
                delivery: &d4,
            },
            Change::Enqueue {
                client_id: &c,
                delivery: &d5,
            },
            Change::Delivery {
                client_id: &a,
                change: SessionChange::Sent {
                    tag: d2.tag,
                    packet_id: pid(7),
                },
            },
            Change::Delivery {
                client_id: &a,
                change: SessionChange::Sent {
                    tag: d3.tag,
                    packet_id: pid(8),
                },
            },
            Change::Delivery {
                client_id: &a,
                change: SessionChange::Released {
                    tag: d3.tag,
                    packet_id: pid(8),
                },
            },
            Change::Delivery {
                client_id: &a,
                change: SessionChange::Finished { tag: d4.tag },
            },
            Change::Delivery {
                client_id: &a,
                change: SessionChange::IncomingQos2 { packet_id: pid(3) },
            },
            Change::Delivery {
                client_id: &a,
                change: SessionChange::IncomingQos2 { packet_id: pid(4) },
            },
            Change::Delivery {
                client_id: &a,
                change: SessionChange::IncomingReleased { packet_id: pid(3) },
            },
            Change::WillDone { client_id: &b },
            Change::RemoveSession { client_id: &c },
        ];
        both(&store, &memory, &changes);
        wait_durable(&store, store.submitted()).expect("durable");
        // A retained message, set and written as the broker does.
        let retained = Retained::new(
            Arc::new(Message::new("r/1", &b"kept"[..], QoS::AtLeastOnce)),
            ago(now, 500),
        );
        let topic = ByteStr::from("r/1");
        store.set_retained(
            &TopicName::new("r/1").expect("topic"),
            Some(retained.clone()),
        );
        store.write(Change::Retained {
            topic: &topic,
            retained: Some(&retained),
        });
        let gone = ByteStr::from("r/gone");
        store.write(Change::Retained {
            topic: &gone,
            retained: Some(&retained),
        });
        store.write(Change::Retained {
            topic: &gone,
            retained: None,
        });
    }
    let store = DiskStore::open(&path, DiskOptions::default()).expect("reopens");
    assert_eq!(store.retained_count(), 1);
    let mut seen = Vec::new();
    store.retained_matching(&TopicFilter::new("#").expect("filter"), &mut |r| {
        seen.push((r.message.topic.clone(), r.message.payload.clone()));
    });
    assert_eq!(
        seen,
        [(ByteStr::from("r/1"), bytes::Bytes::from_static(b"kept"))]
    );
    let now = Instant::now();
    let disk = store.restore(now);
    assert_eq!(disk.len(), 2, "c was removed");
    assert_same_journals(&store, &memory, now);
    assert!(disk[1].record.will.is_none(), "b's will is done");
    // Tags go on after the largest kept.
    assert_eq!(store.next_tag(), 4);
    let info = store.info().expect("info");
    assert_eq!(
        (
            info.sessions,
            info.will_only_sessions,
            info.messages,
            info.in_flight
        ),
        (1, 1, 3, 2)
    );
    assert_eq!(
        (info.incoming_qos2, info.retained, info.undecodable),
        (1, 1, 0)
    );
}

#[test]
fn a_message_queued_and_finished_in_one_batch_never_reaches_the_disk() {
    let dir = TempDir::new("compaction");
    let path = dir.file("store.redb");
    let client = ByteStr::from("a");
    let now = Instant::now();
    {
        let store = DiskStore::open(&path, DiskOptions::default()).expect("opens");
        store.write(Change::Session(&record("a", 60, now)));
        store.flush().expect("flushed");
        let commits = store.commits();
        // Inside one atomic group, so that no commit falls between.
        let d = delivery("t", b"p", QoS::AtLeastOnce, store.next_tag(), now);
        store.atomically(&mut || {
            store.write(Change::Enqueue {
                client_id: &client,
                delivery: &d,
            });
            store.write(Change::Delivery {
                client_id: &client,
                change: SessionChange::Finished { tag: d.tag },
            });
        });
        wait_durable(&store, store.submitted()).expect("durable");
        assert_eq!(store.commits(), commits, "nothing to commit");
        let kept = delivery("t", b"kept", QoS::AtLeastOnce, store.next_tag(), now);
        store.write(Change::Enqueue {
            client_id: &client,
            delivery: &kept,
        });
        wait_durable(&store, store.submitted()).expect("durable");
        assert_eq!(store.commits(), commits + 1);
    }
    let info = midge_store::info(&path).expect("info");
    assert_eq!((info.sessions, info.messages), (1, 1), "{info}");
}

#[test]
fn interval_mode_acknowledges_at_once_and_a_clean_drop_keeps_everything() {
    let dir = TempDir::new("interval");
    let path = dir.file("store.redb");
    let client = ByteStr::from("a");
    let now = Instant::now();
    let mut options = DiskOptions::default();
    options.sync = SyncMode::Interval;
    options.sync_interval = Duration::from_secs(3600);
    {
        let store = DiskStore::open(&path, options.clone()).expect("opens");
        store.write(Change::Session(&record("a", 60, now)));
        for _ in 0..100 {
            let d = delivery("t", b"p", QoS::AtLeastOnce, store.next_tag(), now);
            store.write(Change::Enqueue {
                client_id: &client,
                delivery: &d,
            });
            assert!(store.is_durable(store.submitted()), "durable at once");
        }
        assert_eq!(store.commits(), 0, "the interval has not passed");
    }
    let store = DiskStore::open(&path, options).expect("reopens");
    let sessions = store.restore(Instant::now());
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].queued, 100);
}

#[test]
fn interval_mode_commits_every_interval() {
    let dir = TempDir::new("interval-tick");
    let path = dir.file("store.redb");
    let mut options = DiskOptions::default();
    options.sync = SyncMode::Interval;
    options.sync_interval = Duration::from_millis(20);
    let store = DiskStore::open(&path, options).expect("opens");
    store.write(Change::Session(&record("a", 60, Instant::now())));
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.commits() == 0 {
        assert!(Instant::now() < deadline, "no interval commit");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn max_disk_bytes_leaves_no_room_once_reached() {
    let dir = TempDir::new("full");
    let path = dir.file("store.redb");
    let client = ByteStr::from("a");
    let now = Instant::now();
    let mut options = DiskOptions::default();
    options.max_disk_bytes = Some(2 * 1024 * 1024);
    let store = DiskStore::open(&path, options).expect("opens");
    assert!(store.has_room());
    store.write(Change::Session(&record("a", 60, now)));
    let payload = vec![7u8; 64 * 1024];
    let mut written = 0;
    while store.has_room() {
        assert!(written < 1000, "still room after {written} messages");
        let d = delivery("t", &payload, QoS::AtLeastOnce, store.next_tag(), now);
        store.write(Change::Enqueue {
            client_id: &client,
            delivery: &d,
        });
        wait_durable(&store, store.submitted()).expect("durable");
        written += 1;
    }
    assert!(store.disk_bytes() >= 2 * 1024 * 1024);
    assert!(written > 1, "room for some first: {written}");
}

#[test]
fn expired_messages_are_not_restored_and_are_deleted() {
    let dir = TempDir::new("expired");
    let path = dir.file("store.redb");
    let client = ByteStr::from("a");
    let now = Instant::now();
    {
        let store = DiskStore::open(&path, DiskOptions::default()).expect("opens");
        store.write(Change::Session(&record("a", 60, now)));
        let mut message = Message::new("t", &b"old"[..], QoS::AtLeastOnce);
        message.properties.message_expiry_interval = Some(1);
        let mut old = midge_proto::session::Delivery::new(Arc::new(message), ago(now, 5_000));
        old.tag = store.next_tag();
        let fresh = delivery("t", b"fresh", QoS::AtLeastOnce, store.next_tag(), now);
        for d in [&old, &fresh] {
            store.write(Change::Enqueue {
                client_id: &client,
                delivery: d,
            });
        }
        let retained = Retained::new(old.message.clone(), old.received_at);
        store.write(Change::Retained {
            topic: &ByteStr::from("t"),
            retained: Some(&retained),
        });
    }
    {
        let store = DiskStore::open(&path, DiskOptions::default()).expect("reopens");
        assert_eq!(
            store.retained_count(),
            0,
            "expired retained message not loaded"
        );
        let sessions = store.restore(Instant::now());
        assert_eq!(sessions[0].queued, 1);
        assert_eq!(store.restore_stats().expired, 1);
    }
    let info = midge_store::info(&path).expect("info");
    assert_eq!((info.messages, info.retained), (1, 0), "deleted from disk");
}

/// One generated change, on clients `a`, `b` and `c`.
#[derive(Clone, Debug)]
enum Op {
    Session {
        client: u8,
        expiry: u32,
        connected: bool,
        will: bool,
        user: bool,
        age: u16,
    },
    Subscribe {
        client: u8,
        filter: u8,
        qos: u8,
        id: u32,
    },
    Unsubscribe {
        client: u8,
        filter: u8,
    },
    Enqueue {
        client: u8,
        qos: u8,
        retain: bool,
        ids: bool,
        age: u16,
    },
    Sent {
        client: u8,
        pick: u8,
        packet: u16,
    },
    Released {
        client: u8,
        pick: u8,
        packet: u16,
    },
    Finished {
        client: u8,
        pick: u8,
    },
    IncomingQos2 {
        client: u8,
        packet: u16,
    },
    IncomingReleased {
        client: u8,
        packet: u16,
    },
    WillDone {
        client: u8,
    },
    Remove {
        client: u8,
    },
    /// Waits for everything written so far to be committed: the next changes go into another
    /// batch.
    Commit,
}

fn op() -> impl Strategy<Value = Op> {
    let client = 0u8..3;
    let packet = 1u16..6;
    prop_oneof![
        1 => (client.clone(), prop_oneof![Just(0u32), Just(60), Just(u32::MAX)], any::<bool>(), any::<bool>(), any::<bool>(), 0u16..10_000)
            .prop_map(|(client, expiry, connected, will, user, age)| Op::Session { client, expiry, connected, will, user, age }),
        1 => (client.clone(), 0u8..3, 0u8..3, 0u32..3)
            .prop_map(|(client, filter, qos, id)| Op::Subscribe { client, filter, qos, id }),
        1 => (client.clone(), 0u8..3).prop_map(|(client, filter)| Op::Unsubscribe { client, filter }),
        3 => (client.clone(), 1u8..3, any::<bool>(), any::<bool>(), 0u16..10_000)
            .prop_map(|(client, qos, retain, ids, age)| Op::Enqueue { client, qos, retain, ids, age }),
        1 => (client.clone(), any::<u8>(), packet.clone())
            .prop_map(|(client, pick, packet)| Op::Sent { client, pick, packet }),
        1 => (client.clone(), any::<u8>(), packet.clone())
            .prop_map(|(client, pick, packet)| Op::Released { client, pick, packet }),
        2 => (client.clone(), any::<u8>()).prop_map(|(client, pick)| Op::Finished { client, pick }),
        1 => (client.clone(), packet.clone()).prop_map(|(client, packet)| Op::IncomingQos2 { client, packet }),
        1 => (client.clone(), packet).prop_map(|(client, packet)| Op::IncomingReleased { client, packet }),
        1 => client.clone().prop_map(|client| Op::WillDone { client }),
        1 => client.prop_map(|client| Op::Remove { client }),
        1 => Just(Op::Commit),
    ]
}

const CLIENTS: [&str; 3] = ["a", "b", "c"];
const FILTERS: [&str; 3] = ["x/#", "y/+", "$share/g/z"];

fn run(ops: &[Op]) {
    let dir = TempDir::new("model");
    let path = dir.file("store.redb");
    let memory = MemoryJournal::default();
    let now = Instant::now();
    let clients: Vec<ByteStr> = CLIENTS.iter().map(|c| ByteStr::from(*c)).collect();
    let filters: Vec<ByteStr> = FILTERS.iter().map(|f| ByteStr::from(*f)).collect();
    {
        let store = DiskStore::open(&path, DiskOptions::default()).expect("opens");
        let mut tags = Vec::new();
        let pick = |tags: &[u64], pick: u8| -> u64 {
            if tags.is_empty() {
                1
            } else {
                tags[usize::from(pick) % tags.len()]
            }
        };
        for op in ops {
            let write = |change: Change<'_>| {
                store.write(change);
                memory.write(change);
            };
            match *op {
                Op::Session {
                    client,
                    expiry,
                    connected,
                    will: with_will,
                    user,
                    age,
                } => {
                    let mut r = record(
                        CLIENTS[usize::from(client)],
                        expiry,
                        ago(now, u64::from(age)),
                    );
                    r.connected = connected;
                    r.will = with_will.then(|| (will(), u32::from(age)));
                    r.username = user.then(|| ByteStr::from("user"));
                    write(Change::Session(&r));
                }
                Op::Subscribe {
                    client,
                    filter,
                    qos,
                    id,
                } => {
                    let qos = QoS::from_u8(qos).expect("qos");
                    write(Change::Subscribe {
                        client_id: &clients[usize::from(client)],
                        filter: &filters[usize::from(filter)],
                        subscription: SessionSubscription::new(
                            SubscriptionOptions::qos(qos),
                            SubscriptionId::new(id),
                        ),
                    });
                }
                Op::Unsubscribe { client, filter } => write(Change::Unsubscribe {
                    client_id: &clients[usize::from(client)],
                    filter: &filters[usize::from(filter)],
                }),
                Op::Enqueue {
                    client,
                    qos,
                    retain,
                    ids,
                    age,
                } => {
                    let tag = store.next_tag();
                    tags.push(tag);
                    let qos = QoS::from_u8(qos).expect("qos");
                    let mut d = delivery(
                        "x/y",
                        format!("m{tag}").as_bytes(),
                        qos,
                        tag,
                        ago(now, u64::from(age)),
                    );
                    d.retain = retain;
                    if ids {
                        d.subscription_ids = vec![SubscriptionId::new(5).expect("id")];
                    }
                    write(Change::Enqueue {
                        client_id: &clients[usize::from(client)],
                        delivery: &d,
                    });
                }
                Op::Sent {
                    client,
                    pick: p,
                    packet,
                } => write(Change::Delivery {
                    client_id: &clients[usize::from(client)],
                    change: SessionChange::Sent {
                        tag: pick(&tags, p),
                        packet_id: pid(packet),
                    },
                }),
                Op::Released {
                    client,
                    pick: p,
                    packet,
                } => write(Change::Delivery {
                    client_id: &clients[usize::from(client)],
                    change: SessionChange::Released {
                        tag: pick(&tags, p),
                        packet_id: pid(packet),
                    },
                }),
                Op::Finished { client, pick: p } => write(Change::Delivery {
                    client_id: &clients[usize::from(client)],
                    change: SessionChange::Finished {
                        tag: pick(&tags, p),
                    },
                }),
                Op::IncomingQos2 { client, packet } => write(Change::Delivery {
                    client_id: &clients[usize::from(client)],
                    change: SessionChange::IncomingQos2 {
                        packet_id: pid(packet),
                    },
                }),
                Op::IncomingReleased { client, packet } => write(Change::Delivery {
                    client_id: &clients[usize::from(client)],
                    change: SessionChange::IncomingReleased {
                        packet_id: pid(packet),
                    },
                }),
                Op::WillDone { client } => write(Change::WillDone {
                    client_id: &clients[usize::from(client)],
                }),
                Op::Remove { client } => write(Change::RemoveSession {
                    client_id: &clients[usize::from(client)],
                }),
                Op::Commit => wait_durable(&store, store.submitted()).expect("durable"),
            }
        }
    }
    let store = DiskStore::open(&path, DiskOptions::default()).expect("reopens");
    let now = Instant::now();
    assert_same_journals(&store, &memory, now);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_disk_restores_what_the_memory_journal_restores(ops in proptest::collection::vec(op(), 0..60)) {
        run(&ops);
    }
}
