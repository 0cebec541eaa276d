//! Durable throughput of the disk journal: each operation queues a QoS 1 message for a
//! session, waits until it is durable (as the broker waits before its PUBACK), then finishes
//! it (as the subscriber's PUBACK would). With 8 writer threads, commits are shared.
#![allow(missing_docs)]

use std::sync::Arc;
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use midge_broker::{Change, Journal, SessionRecord};
use midge_codec::{ByteStr, ProtocolVersion, QoS};
use midge_proto::session::{Delivery, SessionChange};
use midge_proto::Message;
use midge_store::{DiskOptions, DiskStore};

struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

fn wait_durable(journal: &dyn Journal, ticket: u64) {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    while journal.poll_durable(ticket, &mut cx).is_pending() {
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

fn journal(c: &mut Criterion) {
    let mut group = c.benchmark_group("journal");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    let message = Arc::new(Message::new(
        "bench/topic",
        vec![0u8; 256],
        QoS::AtLeastOnce,
    ));
    for threads in [1u64, 8] {
        let path = std::env::temp_dir().join(format!(
            "midge-store-bench-{threads}-{}.redb",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let store = DiskStore::open(&path, DiskOptions::default()).expect("opens");
        let clients: Vec<ByteStr> = (0..threads)
            .map(|t| ByteStr::from(format!("client-{t}")))
            .collect();
        for client in &clients {
            let record =
                SessionRecord::new(client.clone(), ProtocolVersion::V5, 3600, Instant::now());
            store.write(Change::Session(&record));
        }
        store.flush().expect("flushed");
        group.bench_function(BenchmarkId::new("durable_enqueue_finish", threads), |b| {
            b.iter_custom(|iters| {
                let per_thread = iters.div_ceil(threads);
                let start = Instant::now();
                std::thread::scope(|s| {
                    for client in &clients {
                        let (store, message) = (&store, &message);
                        s.spawn(move || {
                            for _ in 0..per_thread {
                                let mut delivery = Delivery::new(message.clone(), Instant::now());
                                delivery.tag = store.next_tag();
                                store.write(Change::Enqueue {
                                    client_id: client,
                                    delivery: &delivery,
                                });
                                wait_durable(store, store.submitted());
                                store.write(Change::Delivery {
                                    client_id: client,
                                    change: SessionChange::Finished { tag: delivery.tag },
                                });
                            }
                        });
                    }
                });
                start.elapsed()
            });
        });
        eprintln!(
            "{threads} thread(s): {} commits for {} changes",
            store.commits(),
            store.submitted()
        );
        drop(store);
        let _ = std::fs::remove_file(&path);
    }
    group.finish();
}

criterion_group!(benches, journal);
criterion_main!(benches);
