//! scratch
fn main() {
    let from: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let n: u64 = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let verbose = std::env::var("V").is_ok();
    if std::env::var("RUST_LOG").is_ok() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    if std::env::var("DUMP").is_ok() {
        dump(from);
        return;
    }
    if std::env::var("HASH").is_ok() {
        hashes(from, n);
        return;
    }
    let mut failed = 0;
    for seed in from..from + n {
        let t = std::time::Instant::now();
        let o = midge_testkit::sim::run(seed);
        let el = t.elapsed();
        let known = o.report.known().count();
        if known > 0 {
            for v in o.report.known() {
                println!("   [{seed}] KNOWN {}", v.known.unwrap());
            }
        }
        println!(
            "seed {seed}: passed {} violations {} steps {} vt {:?} wall {:?} entries {} tally {:?}",
            o.passed(),
            o.report.violations.len(),
            o.steps,
            o.virtual_time,
            el,
            o.log.entries.len(),
            o.report.tally
        );
        if !o.passed() {
            failed += 1;
            if verbose {
                println!("{}", o.failure(60));
            } else {
                for v in o.report.violations.iter().take(5) {
                    println!("   [{seed}] {v}");
                }
            }
        }
    }
    println!("failed {failed}");
}
#[allow(dead_code)]
fn dump(seed: u64) {
    let o = midge_testkit::sim::run(seed);
    for (i, e) in o.log.entries.iter().enumerate() {
        println!("#{i:<5} {e}");
    }
}
#[allow(dead_code)]
pub fn hashes(from: u64, n: u64) {
    use std::hash::{Hash, Hasher};
    for seed in from..from + n {
        let o = midge_testkit::sim::run(seed);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        format!("{:?}", o.log.entries).hash(&mut h);
        println!("{seed} {:x} {}", h.finish(), o.drawn.limits);
    }
}
