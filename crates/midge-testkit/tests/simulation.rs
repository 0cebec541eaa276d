//! The seeded simulation of the broker and its clients (see the crate documentation): the
//! regression seeds, then thousands more, on several threads. A failing seed prints the
//! command that replays it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use midge_testkit::sim::{self, replay_command, Outcome};

const DEFAULT_SEEDS: u64 = 3000;

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={value:?} is not a number"),
    }
}

fn strict() -> bool {
    std::env::var("MIDGE_SIM_STRICT").is_ok_and(|v| v == "1")
}

/// A line of the regression file: a seed, and the known issue it shows, if it is marked so.
struct Regression {
    seed: u64,
    known: Option<String>,
}

fn regressions() -> Vec<Regression> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/regression-seeds.txt");
    let text = std::fs::read_to_string(path).expect("tests/regression-seeds.txt is readable");
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or("").trim();
            let mut words = line.split_whitespace();
            let seed = words.next()?;
            let seed = seed
                .parse()
                .unwrap_or_else(|_| panic!("regression-seeds.txt: {seed:?} is not a seed"));
            let known = words
                .find_map(|w| w.strip_prefix("known:"))
                .map(str::to_owned);
            Some(Regression { seed, known })
        })
        .collect()
}

/// Whether an outcome fails: any violation under `strict`, else any that is not a known issue.
fn fails(outcome: &Outcome, strict: bool) -> bool {
    if strict {
        !outcome.report.passed_strictly()
    } else {
        !outcome.passed()
    }
}

/// Runs `seeds` on `threads` threads; returns the failing outcomes and, by known issue, the
/// seeds that showed it.
fn run_seeds(
    seeds: &[u64],
    threads: usize,
    strict: bool,
) -> (Vec<Outcome>, BTreeMap<&'static str, Vec<u64>>) {
    let next = AtomicUsize::new(0);
    let failed = Mutex::new(Vec::new());
    let known: Mutex<BTreeMap<&'static str, Vec<u64>>> = Mutex::new(BTreeMap::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&seed) = seeds.get(i) else { break };
                let outcome = sim::run(seed);
                for v in outcome.report.known() {
                    if let Some(id) = v.known {
                        let mut known = known.lock().unwrap_or_else(|e| e.into_inner());
                        let list = known.entry(id).or_default();
                        if list.last() != Some(&seed) {
                            list.push(seed);
                        }
                    }
                }
                if fails(&outcome, strict) {
                    failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(outcome);
                }
            });
        }
    });
    let mut failed = failed.into_inner().unwrap_or_else(|e| e.into_inner());
    failed.sort_by_key(|o| o.seed);
    let mut known = known.into_inner().unwrap_or_else(|e| e.into_inner());
    for seeds in known.values_mut() {
        seeds.sort_unstable();
    }
    (failed, known)
}

/// Reports failures: the first few in full, then every replay command.
fn report_failures(failed: &[Outcome], what: &str) {
    if failed.is_empty() {
        return;
    }
    for outcome in failed.iter().take(3) {
        eprintln!("\n{}", outcome.explain(60));
        if !outcome.drawn.replays_exactly {
            eprintln!(
                "(this seed ran with a small global memory budget, and may not replay exactly)"
            );
        }
    }
    eprintln!("\n{} {what} failed:", failed.len());
    for outcome in failed {
        // What broke first: the known issue, or the rule.
        let first = outcome.report.violations.first();
        let what = first.map_or("", |v| v.known.unwrap_or(v.rule));
        eprintln!("    {}  # {what}", replay_command(outcome.seed));
    }
}

/// Panics if any seed failed, naming how to replay the first.
fn fail_on(failed: &[&[Outcome]]) {
    let all: Vec<&Outcome> = failed.iter().flat_map(|f| f.iter()).collect();
    if let Some(first) = all.first() {
        panic!(
            "{} seeds failed; replay one with {}",
            all.len(),
            replay_command(first.seed)
        );
    }
}

/// `MIDGE_SIM_SEED=n`: one seed, with its report and the end of its log.
fn replay(seed: u64) {
    let started = Instant::now();
    let outcome = sim::run(seed);
    let lines = env_u64("MIDGE_SIM_LOG").unwrap_or(200) as usize;
    eprintln!(
        "seed {seed}: {} log entries, {} steps, {:.1} virtual seconds, {:?} of real time",
        outcome.log.entries.len(),
        outcome.steps,
        outcome.virtual_time.as_secs_f64(),
        started.elapsed()
    );
    eprintln!("{}", outcome.explain(lines));
    let strict = strict();
    assert!(
        !fails(&outcome, strict),
        "seed {seed} failed: {} violation(s), see above",
        outcome.report.violations.len()
    );
}

#[test]
fn simulation() {
    if let Some(seed) = env_u64("MIDGE_SIM_SEED") {
        return replay(seed);
    }
    let strict = strict();
    let threads = env_u64("MIDGE_SIM_THREADS")
        .map(|n| n as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let started = Instant::now();

    let regressions: Vec<u64> = regressions().iter().map(|r| r.seed).collect();
    let (failed_regressions, _) = run_seeds(&regressions, threads, strict);
    report_failures(&failed_regressions, "regression seeds");

    let first = env_u64("MIDGE_SIM_FIRST_SEED").unwrap_or(0);
    let count = env_u64("MIDGE_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let seeds: Vec<u64> = (first..first + count).collect();
    let (failed, known) = run_seeds(&seeds, threads, strict);
    eprintln!(
        "simulation: {} regression seeds and seeds {first}..{} in {:.1?} on {threads} threads",
        regressions.len(),
        first + count,
        started.elapsed()
    );
    for (id, seeds) in &known {
        eprintln!(
            "known broker issue {id}: {} seeds, first {:?}",
            seeds.len(),
            &seeds[..seeds.len().min(10)]
        );
    }
    report_failures(&failed, "seeds");
    fail_on(&[&failed_regressions, &failed]);
}

/// The regression seeds of known broker issues, strictly: they fail until the issue is fixed,
/// then this passes and the issue can leave `KNOWN_ISSUES`.
#[test]
#[ignore = "fails while the known broker issues are not fixed"]
fn known_issue_seeds_strictly() {
    let seeds: Vec<u64> = regressions()
        .iter()
        .filter(|r| r.known.is_some())
        .map(|r| r.seed)
        .collect();
    let (failed, _) = run_seeds(&seeds, 2, true);
    report_failures(&failed, "known-issue seeds");
    fail_on(&[&failed]);
}

/// The regression file names only known issues that exist.
#[test]
fn regression_seeds_name_known_issues_that_exist() {
    let ids: Vec<&str> = midge_testkit::check::KNOWN_ISSUES
        .iter()
        .map(|k| k.id)
        .collect();
    for r in regressions() {
        if let Some(id) = &r.known {
            assert!(
                ids.contains(&id.as_str()),
                "regression seed {} names the unknown issue {id}",
                r.seed
            );
        }
    }
}

/// A seed replays exactly: the same log, event for event.
#[test]
fn a_seed_replays_exactly() {
    let mut checked = 0;
    for seed in 0..40 {
        let first = sim::run(seed);
        if !first.drawn.replays_exactly {
            continue;
        }
        let second = sim::run(seed);
        assert_eq!(
            first.log.entries, second.log.entries,
            "seed {seed} ran differently the second time"
        );
        checked += 1;
        if checked == 8 {
            break;
        }
    }
    assert_eq!(checked, 8);
}
