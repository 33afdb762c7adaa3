//! `select` + `consume` + `report` per request at 10, 1,000 and 100,000 accounts: the
//! indexed `Pool` against the linear-scan reference model of the same policy (the one the
//! state-machine test checks the pool against), measured in the same run.
//!
//! Criterion reports both; afterwards a short manual timing loop prints ns/op for each and
//! the ratio, and checks them against the targets (at 100,000 accounts: ≥ 50× faster
//! than the scan and < 2 µs per select + report). Run:
//! `cargo bench -p rotation-policy --bench select_report -- --warm-up-time 1 --measurement-time 2`

#[path = "../tests/model/mod.rs"]
mod model;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use model::{Model, ModelRequest};
use rotation_policy::{
    AccountId, Decision, Outcome, PolicyConfig, Pool, Request, Selection, Timestamp, TokenBucket,
};

const SIZES: [usize; 3] = [10, 1_000, 100_000];

fn config() -> PolicyConfig {
    let mut c = PolicyConfig::default();
    c.bucket = Some(TokenBucket::new(100, Duration::from_millis(50)));
    c.session_ttl = None;
    c
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
    i: u64,
}

impl Indexed {
    fn new(n: usize) -> Self {
        let mut pool = Pool::new(config(), 1).unwrap();
        for k in 0..n {
            pool.add(AccountId::new(format!("acct-{k}")).unwrap())
                .unwrap();
        }
        Indexed { pool, i: 0 }
    }

    /// Like `op`, but returns the time `select` alone took.
    fn op_timing_select(&mut self) -> Duration {
        self.i += 1;
        let now = Timestamp::from_millis(self.i);
        let mut request = Request::new("gpt-5");
        let started = Instant::now();
        let selection = self.pool.select(&mut request, now);
        let took = started.elapsed();
        if let Selection::Account(account) = selection {
            let _ = self.pool.consume(&account, now);
            let decision = self
                .pool
                .report(&mut request, &account, outcome(self.i), now);
            black_box(decision);
        }
        took
    }

    /// One client request: select, consume, report.
    fn op(&mut self) {
        self.i += 1;
        let now = Timestamp::from_millis(self.i);
        let mut request = Request::new("gpt-5");
        if let Selection::Account(account) = self.pool.select(&mut request, now) {
            let _ = self.pool.consume(&account, now);
            let decision = self
                .pool
                .report(&mut request, &account, outcome(self.i), now);
            black_box(decision);
        }
    }
}

struct Linear {
    model: Model,
    i: u64,
}

impl Linear {
    fn new(n: usize) -> Self {
        let mut model = Model::new(config(), 1);
        for k in 0..n {
            model.add(AccountId::new(format!("acct-{k}")).unwrap());
        }
        Linear { model, i: 0 }
    }

    fn op(&mut self) {
        self.i += 1;
        let now = self.i;
        let mut request = ModelRequest::new("gpt-5", None);
        if let Selection::Account(account) = self.model.select(&mut request, now) {
            let _ = self.model.consume(&account, now);
            let decision: Decision =
                self.model
                    .report(&mut request, &account, outcome(self.i), now);
            black_box(decision);
        }
    }
}

fn criterion_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("select_consume_report");
    for n in SIZES {
        let mut indexed = Indexed::new(n);
        group.bench_with_input(BenchmarkId::new("indexed", n), &n, |b, _| {
            b.iter(|| indexed.op())
        });
        let mut linear = Linear::new(n);
        group.bench_with_input(BenchmarkId::new("linear_scan", n), &n, |b, _| {
            b.iter(|| linear.op())
        });
    }
    group.finish();
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

fn ratio_report(quick: bool) {
    println!();
    println!("select + consume + report, ns per request (same workload, same run)");
    println!(
        "{:>9}  {:>12}  {:>14}  {:>8}",
        "accounts", "indexed", "linear scan", "ratio"
    );
    for n in SIZES {
        let (fast_ops, slow_ops) = if quick {
            (1_000, 20)
        } else {
            (200_000, (20_000_000 / n as u64).clamp(200, 200_000))
        };
        let mut indexed = Indexed::new(n);
        let fast = ns_per_op(fast_ops, || indexed.op());
        let mut linear = Linear::new(n);
        let slow = ns_per_op(slow_ops, || linear.op());
        let ratio = slow / fast;
        println!("{n:>9}  {fast:>12.0}  {slow:>14.0}  {ratio:>7.1}x");
        if n == 100_000 && !quick {
            let mut timed = Indexed::new(n);
            let mut select_total = Duration::ZERO;
            for _ in 0..fast_ops / 4 {
                timed.op();
            }
            for _ in 0..fast_ops {
                select_total += timed.op_timing_select();
            }
            let select = select_total.as_nanos() as f64 / fast_ops as f64;
            println!(
                "of which select alone at 100,000 accounts: {select:.0} ns (incl. ~20 ns timer overhead)"
            );
            let speed = if ratio >= 50.0 { "met" } else { "NOT met" };
            let latency = if select < 2_000.0 { "met" } else { "NOT met" };
            println!(
                "target at 100,000 accounts: >= 50x faster than the scan: {speed} ({ratio:.0}x)"
            );
            println!(
                "target at 100,000 accounts: < 2 us per select: {latency} ({select:.0} ns; select + consume + report {fast:.0} ns)"
            );
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
        ratio_report(quick);
    }
}
