//! `select` + `consume` + `report` per request at 10, 1,000 and 100,000 accounts: the
//! indexed `Pool` against the linear-scan reference model of the same policy (the one the
//! state-machine test checks the pool against), measured in the same run. Two workloads:
//!
//! - least recently used, outcomes only (the original one);
//! - quota-aware, and every answer's usage report recorded (`record_usage`) before its
//!   outcome is reported, as a proxy does with the usage headers: the account's windows move
//!   with each report (so its place in the quota-aware order does: now and then its week is
//!   in its last twentieth and it goes first), and now and then a report puts it within the
//!   margin (two more requests could overflow its short window) until that window resets.
//!
//! Criterion reports both; afterwards a short manual timing loop prints ns/op for each and
//! the ratio, and checks them against the targets (at 100,000 accounts: ≥ 50× faster than the
//! scan and < 2 µs per select + report; for the quota-aware workload, `record_usage` is timed
//! on its own and the target is checked both without and with it). Run:
//! `cargo bench -p rotation-policy --bench select_report -- --warm-up-time 1 --measurement-time 2`

#[path = "../tests/model/mod.rs"]
mod model;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use model::{Model, ModelRequest};
use rotation_policy::usage::{LimitUsage, Percent, UsageReport, UsageWindow};
use rotation_policy::{
    AccountId, Decision, Outcome, PolicyConfig, Pool, Request, Selection, Strategy, Timestamp,
    TokenBucket,
};

const SIZES: [usize; 3] = [10, 1_000, 100_000];

/// The two workloads: the strategy, and whether each answer's usage is recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    /// Least recently used; outcomes only.
    Plain,
    /// Quota-aware; `record_usage` on every answer, then `report`.
    Quota,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Plain => "select_consume_report",
            Workload::Quota => "quota_aware_with_usage",
        }
    }
}

fn config(workload: Workload) -> PolicyConfig {
    let mut c = PolicyConfig::default();
    c.bucket = Some(TokenBucket::new(100, Duration::from_millis(50)));
    c.session_ttl = None;
    if workload == Workload::Quota {
        c.strategy = Strategy::QuotaAware;
    }
    c
}

/// The usage an answer at operation `i` (time `now`, ms) reports: the 5-hour window at up to
/// 89 % and resetting within the next 5 hours; every 40th answer it is at 99 % (two more
/// requests of at least a point each would overflow it: the default config, threshold 100,
/// keeps the account out by the margin) and resets 200 ms later, so the account waits until
/// then; the weekly window resets at a time that varies with `i` (about one report in twenty
/// puts it in its last twentieth, which quota-aware spends first), so accounts' places in the
/// quota-aware order keep changing.
fn usage(i: u64, now: u64) -> UsageReport {
    const WEEK: u64 = 7 * 24 * 60 * 60 * 1000;
    let (used, resets_in) = if i % 40 == 21 {
        (99.0, 200)
    } else {
        (
            (i * 37 % 90) as f64,
            1_000 + (i * 7_919) % (5 * 60 * 60 * 1000),
        )
    };
    let mut codex = LimitUsage::new("codex").unwrap();
    codex.primary = Some(
        UsageWindow::new(Percent::new(used).unwrap())
            .with_window_minutes(300)
            .with_resets_at(Timestamp::from_millis(now + resets_in)),
    );
    codex.secondary = Some(
        UsageWindow::new(Percent::new(40.0).unwrap())
            .with_window_minutes(10_080)
            .with_resets_at(Timestamp::from_millis(now + WEEK - (i * 104_729) % WEEK)),
    );
    let mut report = UsageReport::default();
    report.push(codex);
    report
}

/// The workload's outcome for operation `i`: mostly successes, some 429s with a
/// Retry-After, some 5xx — so cooldowns and the waiting index are exercised.
fn outcome(i: u64) -> Outcome {
    if i % 16 == 7 {
        Outcome::RateLimited {
            retry_after: Some(Duration::from_secs(30)),
        }
    } else if i % 64 == 13 {
        Outcome::ServerError
    } else {
        Outcome::Success
    }
}

struct Indexed {
    pool: Pool,
    workload: Workload,
    i: u64,
    /// Requests that got an account (the others were answered `Exhausted`, from the index).
    served: u64,
}

/// Time spent in one request's calls (with a timer around each part).
#[derive(Default)]
struct Split {
    select: Duration,
    select_consume_report: Duration,
    record_usage: Duration,
}

impl Indexed {
    fn new(n: usize, workload: Workload) -> Self {
        let mut pool = Pool::new(config(workload), 1).unwrap();
        for k in 0..n {
            pool.add(AccountId::new(format!("acct-{k}")).unwrap())
                .unwrap();
        }
        Indexed {
            pool,
            workload,
            i: 0,
            served: 0,
        }
    }

    /// Like `op`, adding the time each part took to `split`.
    fn op_timed(&mut self, split: &mut Split) {
        self.i += 1;
        let now = Timestamp::from_millis(self.i);
        let mut request = Request::new("gpt-5");
        let started = Instant::now();
        let selection = self.pool.select(&mut request, now);
        let selected = started.elapsed();
        split.select += selected;
        split.select_consume_report += selected;
        if let Selection::Account(account) = selection {
            let started = Instant::now();
            let _ = self.pool.consume(&account, now);
            split.select_consume_report += started.elapsed();
            if self.workload == Workload::Quota {
                let report = usage(self.i, self.i);
                let started = Instant::now();
                let _ = self.pool.record_usage(&account, &report, now);
                split.record_usage += started.elapsed();
            }
            let started = Instant::now();
            let decision = self
                .pool
                .report(&mut request, &account, outcome(self.i), now);
            split.select_consume_report += started.elapsed();
            black_box(decision);
        }
    }

    /// One client request: select, consume, (record the answer's usage,) report.
    fn op(&mut self) {
        self.i += 1;
        let now = Timestamp::from_millis(self.i);
        let mut request = Request::new("gpt-5");
        if let Selection::Account(account) = self.pool.select(&mut request, now) {
            self.served += 1;
            let _ = self.pool.consume(&account, now);
            if self.workload == Workload::Quota {
                let _ = self
                    .pool
                    .record_usage(&account, &usage(self.i, self.i), now);
            }
            let decision = self
                .pool
                .report(&mut request, &account, outcome(self.i), now);
            black_box(decision);
        }
    }
}

struct Linear {
    model: Model,
    workload: Workload,
    i: u64,
}

impl Linear {
    fn new(n: usize, workload: Workload) -> Self {
        let mut model = Model::new(config(workload), 1);
        for k in 0..n {
            model.add(AccountId::new(format!("acct-{k}")).unwrap());
        }
        Linear {
            model,
            workload,
            i: 0,
        }
    }

    fn op(&mut self) {
        self.i += 1;
        let now = self.i;
        let mut request = ModelRequest::new("gpt-5", None);
        if let Selection::Account(account) = self.model.select(&mut request, now) {
            let _ = self.model.consume(&account, now);
            if self.workload == Workload::Quota {
                self.model
                    .record_usage(&account, &usage(self.i, self.i), now);
            }
            let decision: Decision =
                self.model
                    .report(&mut request, &account, outcome(self.i), now);
            black_box(decision);
        }
    }
}

/// Runs `ops` requests of `workload` on both sides, which must make the same selection and
/// decision for each: they implement one policy, so the comparison is of equal work.
fn check_same_decisions(n: usize, workload: Workload, ops: u64) {
    let mut indexed = Indexed::new(n, workload);
    let mut linear = Linear::new(n, workload);
    for _ in 0..ops {
        indexed.i += 1;
        linear.i += 1;
        let i = indexed.i;
        let now = Timestamp::from_millis(i);
        let mut request = Request::new("gpt-5");
        let mut model_request = ModelRequest::new("gpt-5", None);
        let selection = indexed.pool.select(&mut request, now);
        assert_eq!(
            selection,
            linear.model.select(&mut model_request, i),
            "{workload:?}, {n} accounts, request {i}"
        );
        let Selection::Account(account) = selection else {
            continue;
        };
        let _ = indexed.pool.consume(&account, now);
        let _ = linear.model.consume(&account, i);
        if workload == Workload::Quota {
            let _ = indexed.pool.record_usage(&account, &usage(i, i), now);
            linear.model.record_usage(&account, &usage(i, i), i);
        }
        assert_eq!(
            indexed.pool.report(&mut request, &account, outcome(i), now),
            linear
                .model
                .report(&mut model_request, &account, outcome(i), i),
            "{workload:?}, {n} accounts, request {i}"
        );
    }
}

fn criterion_benches(c: &mut Criterion) {
    for workload in [Workload::Plain, Workload::Quota] {
        let mut group = c.benchmark_group(workload.name());
        for n in SIZES {
            let mut indexed = Indexed::new(n, workload);
            group.bench_with_input(BenchmarkId::new("indexed", n), &n, |b, _| {
                b.iter(|| indexed.op())
            });
            let mut linear = Linear::new(n, workload);
            group.bench_with_input(BenchmarkId::new("linear_scan", n), &n, |b, _| {
                b.iter(|| linear.op())
            });
        }
        group.finish();
    }
}

fn ns_per_op(ops: u64, mut op: impl FnMut()) -> f64 {
    // Warm up: let cooldowns and buckets reach a steady mix first.
    for _ in 0..ops / 4 {
        op();
    }
    let start = Instant::now();
    for _ in 0..ops {
        op();
    }
    start.elapsed().as_nanos() as f64 / ops as f64
}

fn ratio_report(quick: bool, workload: Workload) {
    println!();
    match workload {
        Workload::Plain => println!(
            "least recently used: select + consume + report, ns per request (same workload, same run)"
        ),
        Workload::Quota => println!(
            "quota-aware: select + consume + record_usage + report, ns per request (same workload, same run)"
        ),
    }
    println!(
        "{:>9}  {:>12}  {:>14}  {:>8}  {:>7}",
        "accounts", "indexed", "linear scan", "ratio", "served"
    );
    for n in SIZES {
        let (fast_ops, slow_ops) = if quick {
            (1_000, 20)
        } else {
            (200_000, (20_000_000 / n as u64).clamp(200, 200_000))
        };
        let mut indexed = Indexed::new(n, workload);
        let fast = ns_per_op(fast_ops, || indexed.op());
        let mut linear = Linear::new(n, workload);
        let slow = ns_per_op(slow_ops, || linear.op());
        let ratio = slow / fast;
        let served = 100.0 * indexed.served as f64 / indexed.i as f64;
        // Both sides decide alike on this workload (checked on a prefix of it).
        check_same_decisions(n, workload, if n >= 100_000 { 300 } else { 3_000 });
        println!("{n:>9}  {fast:>12.0}  {slow:>14.0}  {ratio:>7.1}x  {served:>6.0}%");
        if n == 100_000 && !quick {
            let mut timed = Indexed::new(n, workload);
            for _ in 0..fast_ops / 4 {
                timed.op();
            }
            let mut split = Split::default();
            for _ in 0..fast_ops {
                timed.op_timed(&mut split);
            }
            let per = |d: Duration| d.as_nanos() as f64 / fast_ops as f64;
            let select = per(split.select);
            let core = per(split.select_consume_report);
            let record = per(split.record_usage);
            println!(
                "at 100,000 accounts, timed part by part (each timer adds ~20 ns): select {select:.0} ns, \
                 select + consume + report {core:.0} ns{}",
                if workload == Workload::Quota {
                    format!(", record_usage {record:.0} ns")
                } else {
                    String::new()
                }
            );
            let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
            println!(
                "target at 100,000 accounts: >= 50x faster than the scan: {} ({ratio:.0}x)",
                verdict(ratio >= 50.0)
            );
            println!(
                "target at 100,000 accounts: < 2 us per select + consume + report: {} ({core:.0} ns)",
                verdict(core < 2_000.0)
            );
            if workload == Workload::Quota {
                println!(
                    "target at 100,000 accounts: < 2 us per request with record_usage included: {} ({fast:.0} ns untimed; {:.0} ns summed from the parts)",
                    verdict(fast < 2_000.0),
                    core + record
                );
            }
        }
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--test" || a == "--list");
    let mut criterion = Criterion::default().configure_from_args();
    if !std::env::args().any(|a| a == "--list") {
        criterion_benches(&mut criterion);
    }
    criterion.final_summary();
    if !std::env::args().any(|a| a == "--list") {
        for workload in [Workload::Plain, Workload::Quota] {
            ratio_report(quick, workload);
        }
    }
}
