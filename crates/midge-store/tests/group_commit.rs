//! Many writers waiting for durability at once share commits.
#![allow(missing_docs)]

mod common;

use std::time::Instant;

use midge_broker::{Change, Journal};
use midge_codec::{ByteStr, QoS};
use midge_proto::session::SessionChange;
use midge_store::{DiskOptions, DiskStore};

use common::{delivery, record, wait_durable, TempDir};

#[test]
fn eight_writers_share_commits() {
    const THREADS: usize = 8;
    const EACH: usize = 200;
    let dir = TempDir::new("group");
    let path = dir.file("store.redb");
    let store = DiskStore::open(&path, DiskOptions::default()).expect("opens");
    let now = Instant::now();
    let clients: Vec<ByteStr> = (0..THREADS)
        .map(|t| ByteStr::from(format!("client-{t}")))
        .collect();
    for client in &clients {
        store.write(Change::Session(&record(client.as_str(), 60, now)));
    }
    store.flush().expect("flushed");
    let (commits, submitted) = (store.commits(), store.submitted());
    std::thread::scope(|s| {
        for client in &clients {
            let store = &store;
            s.spawn(move || {
                for i in 0..EACH {
                    let d = delivery("t", b"payload", QoS::AtLeastOnce, store.next_tag(), now);
                    store.write(Change::Enqueue {
                        client_id: client,
                        delivery: &d,
                    });
                    let ticket = store.submitted();
                    wait_durable(store, ticket).expect("durable");
                    assert!(store.is_durable(ticket));
                    // Every other message is acknowledged: the rest stays queued.
                    if i % 2 == 0 {
                        store.write(Change::Delivery {
                            client_id: client,
                            change: SessionChange::Finished { tag: d.tag },
                        });
                    }
                }
            });
        }
    });
    store.flush().expect("flushed");
    let writes = store.submitted() - submitted;
    let commits = store.commits() - commits;
    eprintln!("{writes} changes in {commits} commits");
    assert_eq!(writes, (THREADS * EACH * 3 / 2) as u64);
    // Each writer waits for a commit per message, so without sharing there would be at least
    // THREADS * EACH of them.
    assert!(
        commits * 2 < (THREADS * EACH) as u64,
        "{commits} commits for {writes} changes"
    );
    let info = store.info().expect("info");
    assert_eq!(info.messages, (THREADS * EACH / 2) as u64);
}
