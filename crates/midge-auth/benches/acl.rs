//! ACL checks against a generated 1,000-line file: 240 users with a `user` line and three
//! rules each (a grant on their own tree, a read grant on a shared tree, a deny), 20
//! anonymous rules and 20 patterns (some denies).
//!
//! `check` runs for every PUBLISH received and every delivery, so its cost is the one that
//! matters; `check_subscribe` runs once per subscription.
//!
//! `cargo bench -p midge-auth --bench acl -- --warm-up-time 1 --measurement-time 3`
//!
//! Times on a shared machine move with its load; instruction counts do not. With
//! `ACL_BENCH_LOOPS=<n>` and `ACL_BENCH_CASE=granted|denied|pattern|subscribe` set, the
//! binary runs that check `n` times without criterion and exits, for counting under
//! cachegrind (run with `n` and `2n`; the difference over `n` is the count per check):
//!
//! ```text
//! ACL_BENCH_CASE=pattern ACL_BENCH_LOOPS=100000 valgrind --tool=cachegrind \
//!     --cache-sim=no target/release/deps/acl-<hash> --bench
//! ```

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{criterion_group, Criterion, Throughput};
use midge_auth::acl::{Access, AclClient, AclFile};

const USERS: usize = 240;

fn acl_text() -> String {
    let mut text = String::from("# Generated: 1,000 lines.\n");
    for i in 0..19 {
        writeln!(text, "topic read public/feed{i}/#").unwrap();
    }
    for u in 0..USERS {
        writeln!(text, "user user{u}").unwrap();
        writeln!(text, "topic readwrite users/user{u}/#").unwrap();
        writeln!(text, "topic read fleet/{}/+/status", u % 16).unwrap();
        writeln!(text, "topic deny users/user{u}/secret/#").unwrap();
    }
    for i in 0..16 {
        writeln!(text, "pattern read region{i}/%c/#").unwrap();
    }
    text.push_str("pattern write devices/%c/state\n");
    text.push_str("pattern read devices/%c/cmd/#\n");
    text.push_str("pattern deny devices/%c/cmd/admin/#\n");
    text.push_str("pattern deny clients/%u/locked\n");
    assert_eq!(text.lines().count(), 1000);
    text
}

fn bench(c: &mut Criterion) {
    let acl = AclFile::parse(&acl_text()).unwrap();
    assert_eq!(acl.len(), 19 + 3 * USERS + 20);
    let user = AclClient {
        client_id: "sensor-0042",
        username: Some("user120"),
    };

    let mut group = c.benchmark_group("acl");
    group.throughput(Throughput::Elements(1));

    let topic = "users/user120/kitchen/temperature";
    assert!(acl.check(&user, topic, Access::Write));
    group.bench_function("check granted write", |b| {
        b.iter(|| acl.check(black_box(&user), black_box(topic), Access::Write))
    });

    // Another user's tree: every deny, every own grant and every pattern is tried.
    let topic = "users/user121/kitchen/temperature";
    assert!(!acl.check(&user, topic, Access::Write));
    group.bench_function("check denied write", |b| {
        b.iter(|| acl.check(black_box(&user), black_box(topic), Access::Write))
    });

    let topic = "devices/sensor-0042/cmd/reboot";
    assert!(acl.check(&user, topic, Access::Read));
    group.bench_function("check read through pattern", |b| {
        b.iter(|| acl.check(black_box(&user), black_box(topic), Access::Read))
    });

    let filter = "users/user120/+/temperature";
    assert!(acl.check_subscribe(&user, filter));
    group.bench_function("check_subscribe", |b| {
        b.iter(|| acl.check_subscribe(black_box(&user), black_box(filter)))
    });

    let filter = "users/user121/#";
    assert!(!acl.check_subscribe(&user, filter));
    group.bench_function("check_subscribe refused", |b| {
        b.iter(|| acl.check_subscribe(black_box(&user), black_box(filter)))
    });
    group.finish();

    c.bench_function("acl/parse 1000 lines", |b| {
        let text = acl_text();
        b.iter(|| AclFile::parse(black_box(&text)).unwrap())
    });
}

/// Runs one check (`granted`, `denied`, `pattern`, `subscribe`) `loops` times, for
/// instruction counting.
fn count(case: &str, loops: u64) {
    let acl = AclFile::parse(&acl_text()).unwrap();
    let user = AclClient {
        client_id: "sensor-0042",
        username: Some("user120"),
    };
    let check = |topic: &str, access| acl.check(black_box(&user), black_box(topic), access);
    let mut granted = 0u64;
    for _ in 0..loops {
        granted += u64::from(match case {
            "granted" => check("users/user120/kitchen/temperature", Access::Write),
            "denied" => check("users/user121/kitchen/temperature", Access::Write),
            "pattern" => check("devices/sensor-0042/cmd/reboot", Access::Read),
            "subscribe" => acl.check_subscribe(&user, black_box("users/user120/+/temperature")),
            _ => panic!("ACL_BENCH_CASE: granted, denied, pattern or subscribe"),
        });
    }
    println!("{case}: {granted} of {loops} granted");
}

criterion_group!(benches, bench);

fn main() {
    if let Some(loops) = std::env::var("ACL_BENCH_LOOPS")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        let case = std::env::var("ACL_BENCH_CASE").unwrap_or_default();
        count(&case, loops);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
