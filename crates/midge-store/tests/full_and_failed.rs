//! A store at `max_disk_bytes` gets its room back as its queues drain, even when the file
//! cannot shrink; a store whose engine breaks while it is open fails its tickets instead of
//! leaving them waiting.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{delivery, record, wait_durable, TempDir};
use midge_broker::{Change, Journal};
use midge_codec::{ByteStr, QoS};
use midge_proto::session::SessionChange;
use midge_store::{DiskOptions, DiskStore};

#[test]
fn a_full_store_has_room_again_once_its_oldest_messages_are_delivered() {
    let dir = TempDir::new("room-back");
    let path = dir.file("store.redb");
    let client = ByteStr::from("a");
    let now = Instant::now();
    let mut options = DiskOptions::default();
    options.max_disk_bytes = Some(4 << 20);
    let store = DiskStore::open(&path, options).expect("opens");
    store.write(Change::Session(&record("a", 60, now)));
    let payload = vec![7u8; 64 * 1024];
    let mut tags = Vec::new();
    while store.has_room() {
        let d = delivery("t", &payload, QoS::AtLeastOnce, store.next_tag(), now);
        tags.push(d.tag);
        store.write(Change::Enqueue {
            client_id: &client,
            delivery: &d,
        });
        wait_durable(&store, store.submitted()).expect("durable");
        assert!(tags.len() < 1000, "the store never filled");
    }
    // The newest three stay: their pages keep the file at its size.
    for tag in &tags[..tags.len() - 3] {
        store.write(Change::Delivery {
            client_id: &client,
            change: SessionChange::Finished { tag: *tag },
        });
        wait_durable(&store, store.submitted()).expect("durable");
    }
    // The space in use is measured at most once a second.
    let until = Instant::now() + Duration::from_secs(5);
    while !store.has_room() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
        store.write(Change::Session(&record("a", 60, now)));
        store.flush().expect("flush");
    }
    assert!(store.has_room(), "3 messages of 64 KiB fill a 4 MiB store");
}

#[test]
fn a_store_damaged_while_open_fails_instead_of_hanging() {
    use std::io::{Seek, SeekFrom, Write};
    let dir = TempDir::new("damage-open");
    let path = dir.file("store.redb");
    let store = DiskStore::open(&path, DiskOptions::default()).expect("opens");
    let now = Instant::now();
    let clients: Vec<ByteStr> = (0..50).map(|i| ByteStr::from(format!("c{i:03}"))).collect();
    let payload = vec![5u8; 16 * 1024];
    for c in &clients {
        store.write(Change::Session(&record(c.as_str(), 60, now)));
        for _ in 0..40 {
            let d = delivery("t", &payload, QoS::AtLeastOnce, store.next_tag(), now);
            store.write(Change::Enqueue {
                client_id: c,
                delivery: &d,
            });
        }
        store.flush().expect("flush");
    }
    // Behind the store's back, as a failing disk or another program would.
    let len = std::fs::metadata(&path).expect("size").len();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("opens for writing");
    let mut x: u64 = 0x1234_5678_9abc_def1;
    for i in 1..200u64 {
        file.seek(SeekFrom::Start(len * i / 200)).expect("seek");
        let junk: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        file.write_all(&junk).expect("write");
    }
    file.sync_all().expect("sync");
    let store = Arc::new(store);
    let writer = store.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for c in &clients {
            writer.write(Change::RemoveSession { client_id: c });
        }
        let _ = tx.send(writer.flush());
    });
    // redb may find the damage (an error or a panic, which fail the store) or not (the
    // pages it touched were intact): either way the flush returns.
    let flushed = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the flush returns");
    if flushed.is_err() {
        assert!(
            !store.is_durable(store.submitted()),
            "a failed store keeps no promise"
        );
    }
}
