//! midge-topic benchmarks: match latency at 1k, 100k and 1M subscriptions, insert and remove
//! rates, memory per subscription, retained lookup over 1M topics, and matches while a writer
//! churns, each beside `quill-pubsub` where it has the same operation. Figures and the command
//! are in `docs/benchmarks.md`.
//!
//! Under `cargo test` (no `--bench` argument) every size shrinks to 1k so the run stays quick.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use midge_topic::{RetainedIndex, SubscriptionIndex, TopicFilter, TopicName};

const DEVICES_PER_TENANT: usize = 100;
/// Subscriptions per tenant: three per device, two dashboards on `+`, two archivers on `#`.
const PER_TENANT: usize = 3 * DEVICES_PER_TENANT + 4;
const SHARE_PREFIX: &str = "$share/ingest/";
const QUERY_TOPICS: usize = 4096;

/// An IoT-shaped subscription set. Each telemetry topic matches 6 subscriptions and 1 shared
/// group: the backend's exact filter, the device's `+`, two tenant dashboards, two tenant
/// archivers, and the ingest group.
struct Workload {
    subscriptions: Vec<(String, u32)>,
    tenants: usize,
    topics: Vec<String>,
}

fn workload(total: usize) -> Workload {
    let tenants = total.div_ceil(PER_TENANT);
    let mut subscriptions = Vec::with_capacity(total + PER_TENANT);
    for member in 0..4 {
        let filter = format!("{SHARE_PREFIX}tenant/+/device/+/telemetry");
        subscriptions.push((filter, member));
    }
    for tenant in 0..tenants {
        let tenant_client = u32::try_from(tenant).unwrap() * 1000;
        for viewer in 0..2 {
            let dashboard = format!("tenant/{tenant}/device/+/telemetry");
            subscriptions.push((dashboard, tenant_client + viewer));
            subscriptions.push((format!("tenant/{tenant}/#"), tenant_client + 2 + viewer));
        }
        for device in 0..DEVICES_PER_TENANT {
            let device_client =
                10_000_000 + u32::try_from(tenant * DEVICES_PER_TENANT + device).unwrap();
            let prefix = format!("tenant/{tenant}/device/{device}");
            subscriptions.push((format!("{prefix}/telemetry"), tenant_client + 4));
            subscriptions.push((format!("{prefix}/+"), device_client));
            subscriptions.push((format!("{prefix}/cmd/#"), device_client));
        }
    }
    subscriptions.truncate(total);
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    let full_tenants = (total / PER_TENANT).max(1);
    let topics = (0..QUERY_TOPICS)
        .map(|_| {
            let tenant = random.below(full_tenants);
            let device = random.below(DEVICES_PER_TENANT);
            format!("tenant/{tenant}/device/{device}/telemetry")
        })
        .collect();
    Workload {
        subscriptions,
        tenants,
        topics,
    }
}

/// xorshift64: reproducible topics without a dependency.
struct Random(u64);

impl Random {
    fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::try_from(self.0 % bound as u64).unwrap()
    }
}

fn midge_index(workload: &Workload) -> SubscriptionIndex<u32, u8> {
    let mut index = SubscriptionIndex::new();
    for (filter, client) in &workload.subscriptions {
        index.insert(&TopicFilter::new(filter).unwrap(), *client, 1);
    }
    index
}

/// quill has no shared subscriptions: the ingest members subscribe to the plain filter.
fn quill_registry(workload: &Workload) -> quill::Registry<u32> {
    let registry = quill::Registry::new();
    for (filter, client) in &workload.subscriptions {
        let pattern = filter.strip_prefix(SHARE_PREFIX).unwrap_or(filter);
        registry.subscribe(quill::Pattern::parse(pattern).unwrap(), *client);
    }
    registry
}

fn midge_match(index: &SubscriptionIndex<u32, u8>, topic: &str) -> usize {
    let mut found = 0;
    index.for_each_match(&TopicName::new(topic).unwrap(), |one| {
        black_box(one);
        found += 1;
    });
    found
}

/// Resident memory of this process, from `/proc/self/statm` (4 KiB pages).
fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

const MEASURE_VAR: &str = "MIDGE_TOPIC_MEASURE";

/// Bytes per entry of each structure, each built in a fresh child process.
///
/// The workspace forbids `unsafe`, which rules out a counting global allocator here, so the
/// measure is the growth of the resident set while the child builds the structure: what the
/// allocator really takes from the system, block headers and rounding included. A fresh
/// process keeps memory freed by earlier benchmarks from hiding the growth.
fn memory_report(size: usize) {
    let exe = std::env::current_exe().unwrap();
    for what in ["midge", "quill", "retained"] {
        let output = std::process::Command::new(&exe)
            .env(MEASURE_VAR, format!("{what}:{size}"))
            .output()
            .unwrap();
        print!("{}", String::from_utf8_lossy(&output.stdout));
    }
}

/// The child side of [`memory_report`].
fn measure(request: &str) {
    let (what, size) = request.split_once(':').unwrap();
    let size: usize = size.parse().unwrap();
    let workload = workload(size);
    let topics = retained_topics(size);
    let before = resident_bytes();
    // Each structure stays alive until the second reading.
    let (entries, grown) = match what {
        "midge" => {
            let index = midge_index(&workload);
            (index.len(), resident_bytes().saturating_sub(before))
        }
        "quill" => {
            let registry = black_box(quill_registry(&workload));
            let grown = resident_bytes().saturating_sub(before);
            drop(registry);
            (workload.subscriptions.len(), grown)
        }
        _ => {
            let retained = retained_index(&topics);
            (retained.len(), resident_bytes().saturating_sub(before))
        }
    };
    println!(
        "memory {what}: {entries} entries, {} bytes resident, {} bytes/entry",
        grown,
        grown / entries
    );
}

fn label(size: usize) -> String {
    match size {
        1_000_000 => "1M".into(),
        size if size >= 1000 => format!("{}k", size / 1000),
        size => size.to_string(),
    }
}

fn match_latency(c: &mut Criterion, sizes: &[usize]) {
    let mut group = c.benchmark_group("topic/match");
    group.throughput(Throughput::Elements(1));
    for &size in sizes {
        let workload = workload(size);
        let started = Instant::now();
        let index = midge_index(&workload);
        let build = started.elapsed();
        let started = Instant::now();
        let registry = quill_registry(&workload);
        let quill_build = started.elapsed();
        let matches = midge_match(&index, &workload.topics[0]);
        println!(
            "{} subscriptions, {} nodes, {matches} matches per topic: built in {build:.2?} \
             ({:.0} ns/insert); quill built in {quill_build:.2?}",
            index.len(),
            index.node_count(),
            build.as_nanos() as f64 / size as f64,
        );

        let mut next = 0;
        group.bench_function(BenchmarkId::new("midge", label(size)), |b| {
            b.iter(|| {
                next = (next + 1) % QUERY_TOPICS;
                midge_match(&index, &workload.topics[next])
            });
        });
        group.bench_function(BenchmarkId::new("quill", label(size)), |b| {
            b.iter(|| {
                next = (next + 1) % QUERY_TOPICS;
                let topic = quill::Topic::parse(&workload.topics[next]).unwrap();
                registry.matching(&topic).len()
            });
        });
    }
    group.finish();
}

/// One iteration is one `timed` operation on an index of constant size: each batch of fresh
/// filters runs `before`, then `timed` under the clock, then `after`.
fn batches<T>(
    iters: u64,
    fresh: &[String],
    state: &mut T,
    before: impl Fn(&mut T, &str),
    timed: impl Fn(&mut T, &str),
    after: impl Fn(&mut T, &str),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = usize::try_from(iters).unwrap();
    while left > 0 {
        let batch = &fresh[..left.min(fresh.len())];
        batch.iter().for_each(|filter| before(state, filter));
        let started = Instant::now();
        batch.iter().for_each(|filter| timed(state, filter));
        total += started.elapsed();
        batch.iter().for_each(|filter| after(state, filter));
        left -= batch.len();
    }
    total
}

const CHURN_CLIENT: u32 = u32::MAX;

fn midge_insert(index: &mut SubscriptionIndex<u32, u8>, filter: &str) {
    index.insert(&TopicFilter::new(filter).unwrap(), CHURN_CLIENT, 1);
}

fn midge_remove(index: &mut SubscriptionIndex<u32, u8>, filter: &str) {
    index.remove(&TopicFilter::new(filter).unwrap(), &CHURN_CLIENT);
}

fn quill_insert(registry: &mut quill::Registry<u32>, filter: &str) {
    registry.subscribe(quill::Pattern::parse(filter).unwrap(), CHURN_CLIENT);
}

fn quill_remove(registry: &mut quill::Registry<u32>, filter: &str) {
    registry.unsubscribe(&quill::Pattern::parse(filter).unwrap(), &CHURN_CLIENT);
}

fn nothing<T>(_: &mut T, _: &str) {}

fn fresh_filters(workload: &Workload) -> Vec<String> {
    (0..50_000)
        .map(|i| format!("tenant/{}/device/new{i}/telemetry", i % workload.tenants))
        .collect()
}

fn insert_remove(c: &mut Criterion, size: usize) {
    let workload = workload(size);
    let mut index = midge_index(&workload);
    let mut registry = quill_registry(&workload);
    let fresh = fresh_filters(&workload);

    let mut group = c.benchmark_group(format!("topic/churn_{}", label(size)));
    group.throughput(Throughput::Elements(1));
    group.bench_function("midge/insert", |b| {
        b.iter_custom(|iters| {
            batches(
                iters,
                &fresh,
                &mut index,
                nothing,
                midge_insert,
                midge_remove,
            )
        });
    });
    group.bench_function("midge/remove", |b| {
        b.iter_custom(|iters| {
            batches(
                iters,
                &fresh,
                &mut index,
                midge_insert,
                midge_remove,
                nothing,
            )
        });
    });
    group.bench_function("quill/insert", |b| {
        b.iter_custom(|iters| {
            batches(
                iters,
                &fresh,
                &mut registry,
                nothing,
                quill_insert,
                quill_remove,
            )
        });
    });
    group.bench_function("quill/remove", |b| {
        b.iter_custom(|iters| {
            batches(
                iters,
                &fresh,
                &mut registry,
                quill_insert,
                quill_remove,
                nothing,
            )
        });
    });
    group.finish();
    assert_eq!(index.len(), size, "churn left subscriptions behind");
}

/// Retained topics `tenant/{t}/device/{d}/telemetry` in tenants of 1000 devices.
fn retained_topics(size: usize) -> Vec<String> {
    let tenants = size.div_ceil(1000);
    (0..tenants)
        .flat_map(|tenant| {
            (0..1000).map(move |device| format!("tenant/{tenant}/device/{device}/telemetry"))
        })
        .take(size)
        .collect()
}

fn retained_index(topics: &[String]) -> RetainedIndex<usize> {
    let mut retained = RetainedIndex::new();
    for (value, topic) in topics.iter().enumerate() {
        retained.insert(&TopicName::new(topic).unwrap(), value);
    }
    retained
}

fn retained_lookup(c: &mut Criterion, size: usize) {
    let topics = retained_topics(size);
    let started = Instant::now();
    let retained = retained_index(&topics);
    let build = started.elapsed();
    println!(
        "{} retained topics, {} nodes: built in {build:.2?}",
        retained.len(),
        retained.node_count(),
    );

    let mut group = c.benchmark_group(format!("topic/retained_{}", label(size)));
    group.sample_size(10);
    // (filter, what it selects): results are reported per lookup.
    let filters = [
        "tenant/+/device/7/telemetry",
        "tenant/42/device/#",
        "tenant/+/device/7/#",
        "tenant/+/device/#",
    ];
    for filter in filters {
        let parsed = TopicFilter::new(filter).unwrap();
        let mut results = 0u64;
        retained.for_each_match(&parsed, |_| results += 1);
        println!("retained lookup {filter}: {results} results");
        group.throughput(Throughput::Elements(results));
        group.bench_function(filter, |b| {
            b.iter(|| {
                let mut found = 0usize;
                retained.for_each_match(&TopicFilter::new(filter).unwrap(), |value| {
                    found = found.wrapping_add(*value);
                });
                found
            });
        });
    }
    group.finish();
}

/// Matches from one and two reader threads, and from one reader while a writer thread
/// subscribes and unsubscribes as fast as it can, with the index behind a `std::sync::RwLock`
/// as the broker holds it.
fn concurrent_reads(c: &mut Criterion, size: usize) {
    let workload = workload(size);
    let shared = RwLock::new(midge_index(&workload));
    let fresh = fresh_filters(&workload);
    let read = |next: &mut usize| {
        *next = (*next + 1) % QUERY_TOPICS;
        let mut found = 0;
        let topic = TopicName::new(&workload.topics[*next]).unwrap();
        shared.read().unwrap().for_each_match(&topic, |one| {
            black_box(one);
            found += 1;
        });
        found
    };

    let mut group = c.benchmark_group(format!("topic/concurrent_{}", label(size)));
    group.throughput(Throughput::Elements(1));
    group.bench_function("one_reader", |b| {
        let mut next = 0;
        b.iter(|| read(&mut next));
    });
    group.bench_function("two_readers", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            thread::scope(|scope| {
                scope.spawn(|| {
                    let mut next = QUERY_TOPICS / 2;
                    (0..iters / 2).for_each(|_| {
                        black_box(read(&mut next));
                    });
                });
                let mut next = 0;
                (0..iters - iters / 2).for_each(|_| {
                    black_box(read(&mut next));
                });
            });
            started.elapsed()
        });
    });
    let writes = AtomicU64::new(0);
    let write_time = AtomicU64::new(0);
    group.bench_function("one_reader_with_writer", |b| {
        b.iter_custom(|iters| {
            let stop = AtomicBool::new(false);
            thread::scope(|scope| {
                scope.spawn(|| {
                    let started = Instant::now();
                    let mut done = 0u64;
                    for filter in fresh.iter().cycle() {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let filter = TopicFilter::new(filter).unwrap();
                        shared.write().unwrap().insert(&filter, CHURN_CLIENT, 1);
                        shared.write().unwrap().remove(&filter, &CHURN_CLIENT);
                        done += 2;
                    }
                    writes.fetch_add(done, Ordering::Relaxed);
                    let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap();
                    write_time.fetch_add(nanos, Ordering::Relaxed);
                });
                let mut next = 0;
                let started = Instant::now();
                (0..iters).for_each(|_| {
                    black_box(read(&mut next));
                });
                let elapsed = started.elapsed();
                stop.store(true, Ordering::Relaxed);
                elapsed
            })
        });
    });
    group.finish();
    let nanos = write_time.load(Ordering::Relaxed).max(1);
    println!(
        "writer during one_reader_with_writer: {:.0} updates/s",
        writes.load(Ordering::Relaxed) as f64 * 1e9 / nanos as f64
    );
}

fn main() {
    if let Ok(request) = std::env::var(MEASURE_VAR) {
        measure(&request);
        return;
    }
    let full = std::env::args().any(|arg| arg == "--bench");
    let sizes: &[usize] = if full {
        &[1000, 100_000, 1_000_000]
    } else {
        &[1000]
    };
    let mut criterion = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let largest = *sizes.last().unwrap();
    memory_report(largest);
    match_latency(&mut criterion, sizes);
    insert_remove(&mut criterion, largest);
    retained_lookup(&mut criterion, largest);
    concurrent_reads(&mut criterion, largest);
    criterion.final_summary();
}
