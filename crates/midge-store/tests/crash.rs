//! A real crash: a child process writes to a store and reports each change it saw become
//! durable; the test kills it with SIGKILL at a random point, reopens the store and checks
//! that everything reported durable is there.
//!
//! The child is this test binary again, running only `crash_child` with the store's path in
//! `MIDGE_STORE_CRASH_CHILD`. `MIDGE_STORE_CRASH_SEED` replays the seeds a failure printed.
#![allow(missing_docs)]

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use midge_broker::{Change, Journal};
use midge_codec::{ByteStr, QoS};
use midge_proto::session::SessionChange;
use midge_store::{DiskOptions, DiskStore};

use common::{delivery, record, wait_durable, TempDir};

const CHILD: &str = "MIDGE_STORE_CRASH_CHILD";
const CLIENTS: [&str; 3] = ["a", "b", "c"];

fn payload(client: &str, tag: u64) -> Vec<u8> {
    format!("{client}-{tag}").into_bytes()
}

/// The child: writers that queue messages (and acknowledge every fourth) until killed.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD) else {
        // Only the child role does anything.
        return;
    };
    let store = DiskStore::open(Path::new(&path), DiskOptions::default()).expect("child opens");
    let now = Instant::now();
    for client in CLIENTS {
        store.write(Change::Session(&record(client, u32::MAX, now)));
    }
    store.flush().expect("sessions durable");
    let deadline = Instant::now() + Duration::from_secs(60);
    std::thread::scope(|s| {
        for client in CLIENTS {
            let store = &store;
            s.spawn(move || {
                let id = ByteStr::from(client);
                while Instant::now() < deadline {
                    let tag = store.next_tag();
                    let d = delivery(
                        "crash/test",
                        &payload(client, tag),
                        QoS::AtLeastOnce,
                        tag,
                        now,
                    );
                    store.write(Change::Enqueue {
                        client_id: &id,
                        delivery: &d,
                    });
                    wait_durable(store, store.submitted()).expect("durable");
                    println!("durable {client} {tag}");
                    if tag.is_multiple_of(4) {
                        store.write(Change::Delivery {
                            client_id: &id,
                            change: SessionChange::Finished { tag },
                        });
                        wait_durable(store, store.submitted()).expect("durable");
                        println!("finished {client} {tag}");
                    }
                    let _ = std::io::stdout().flush();
                }
            });
        }
    });
}

/// xorshift64*: enough randomness to pick when to kill.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn a_killed_writer_loses_nothing_it_reported_durable() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let first = std::env::var("MIDGE_STORE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("crash seeds from {first}: MIDGE_STORE_CRASH_SEED={first} replays them");
    for round in 0..5u64 {
        let seed = first
            .wrapping_add(round.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .max(1);
        eprintln!("crash round {round}: seed {seed}");
        crash_once(seed);
    }
}

fn crash_once(seed: u64) {
    let mut rng = Rng(seed);
    let kill_after = 10 + rng.next() % 600;
    let dir = TempDir::new("crash");
    let path = dir.file("store.redb");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("child starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut durable = BTreeSet::new();
    let mut finished = BTreeSet::new();
    let mut lines = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("reads the child");
        let mut words = line.split_whitespace();
        let (kind, client, tag) = (words.next(), words.next(), words.next());
        let (Some(client), Some(tag)) = (client, tag.and_then(|t| t.parse::<u64>().ok())) else {
            continue;
        };
        match kind {
            Some("durable") => durable.insert((client.to_owned(), tag)),
            Some("finished") => finished.insert((client.to_owned(), tag)),
            _ => continue,
        };
        lines += 1;
        if lines >= kill_after {
            break;
        }
    }
    // SIGKILL: no destructor runs, nothing is flushed.
    child.kill().expect("kills the child");
    let status = child.wait().expect("child ends");
    assert!(
        lines >= kill_after,
        "seed {seed}: the child ended by itself ({status}) after {lines} lines"
    );
    // `info` reads a store left by a crash too (repairing it first if it must).
    let info = midge_store::info(&path).expect("info after the crash");
    assert_eq!(info.sessions, CLIENTS.len() as u64, "seed {seed}: {info}");
    let store = DiskStore::open(&path, DiskOptions::default()).expect("reopens after the crash");
    let restored = store.restore(Instant::now());
    let mut kept = BTreeSet::new();
    for session in &restored {
        let client = session.record.client_id.as_str();
        let mut last = 0;
        assert!(
            session.messages.is_empty(),
            "seed {seed}: only queued messages were written"
        );
        let queued = store.queued(&session.record.client_id, Instant::now());
        assert_eq!(queued.len(), session.queued, "seed {seed}: counted as read");
        for d in &queued {
            assert!(d.tag > last, "seed {seed}: messages in tag order");
            last = d.tag;
            assert_eq!(
                d.message.payload.as_ref(),
                payload(client, d.tag).as_slice(),
                "seed {seed}: the message is intact"
            );
            kept.insert((client.to_owned(), d.tag));
        }
    }
    assert_eq!(restored.len(), CLIENTS.len(), "seed {seed}: every session");
    for message in &durable {
        // A message the child went on to finish may be gone even if the kill came before it
        // reported that: its finish may have been committed.
        if !message.1.is_multiple_of(4) {
            assert!(
                kept.contains(message),
                "seed {seed}: {message:?} was reported durable and is lost"
            );
        }
    }
    for message in &finished {
        assert!(
            !kept.contains(message),
            "seed {seed}: {message:?} was finished durably and came back"
        );
    }
    eprintln!(
        "  killed after {lines} reports: {} durable, {} finished, {} restored",
        durable.len(),
        finished.len(),
        kept.len()
    );
}
