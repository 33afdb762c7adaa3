//! Play with the rotation policy: a seeded simulation of a proxy serving requests over a
//! pool of accounts against a synthetic upstream (per-family rate limits, 5xx incidents,
//! glitches, revoked tokens), then a readable summary.
//!
//! ```text
//! cargo run -p examples --example policy-sim -- [--accounts N] [--requests M] [--seed S]
//!     [--strategy lru|round-robin|health] [--sessions K] [--upstream-limit L] [--json]
//! ```
//!
//! The same arguments always print the same numbers (except the wall-clock timing line).

use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use rotation_policy::Strategy;
use rotation_policy::sim::{SimConfig, SimReport, simulate};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum StrategyArg {
    Lru,
    RoundRobin,
    Health,
}

/// Simulate account rotation with the rotation-policy crate.
#[derive(Debug, Parser)]
#[command(name = "policy-sim")]
struct Args {
    /// Accounts in the pool.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    accounts: u32,
    /// Client requests to serve.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    requests: u32,
    /// Seed for traffic, upstream behaviour and jitter.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Selection strategy.
    #[arg(long, value_enum, default_value_t = StrategyArg::Lru)]
    strategy: StrategyArg,
    /// Distinct session keys (0 = no session affinity).
    #[arg(long, default_value_t = 200)]
    sessions: u32,
    /// Upstream requests per account, per model family, per minute (scaled per account).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    upstream_limit: u32,
    /// Average gap between requests, in milliseconds.
    #[arg(long, default_value_t = 60)]
    gap_ms: u64,
    /// Print the full report as JSON instead of the summary.
    #[arg(long)]
    json: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut config = SimConfig::default();
    config.accounts = args.accounts as usize;
    config.requests = args.requests as usize;
    config.seed = args.seed;
    config.sessions = args.sessions as usize;
    config.upstream_limit = args.upstream_limit;
    config.request_gap = Duration::from_millis(args.gap_ms);
    config.revoked_accounts = config.revoked_accounts.min(config.accounts / 10);
    config.policy.strategy = match args.strategy {
        StrategyArg::Lru => Strategy::LeastRecentlyUsed,
        StrategyArg::RoundRobin => Strategy::RoundRobin,
        StrategyArg::Health => Strategy::HealthWeighted,
    };

    let started = Instant::now();
    let report = simulate(&config)?;
    let elapsed = started.elapsed();

    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print_summary(&args, &config, &report, elapsed);
    Ok(())
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

fn print_summary(args: &Args, config: &SimConfig, r: &SimReport, elapsed: Duration) {
    let c = &r.counters;
    println!(
        "policy-sim: {} accounts, {} requests, seed {}, strategy {:?}, {} sessions, limit {}/min/family",
        config.accounts,
        config.requests,
        config.seed,
        args.strategy,
        config.sessions,
        config.upstream_limit
    );
    println!(
        "virtual time: {:.1} min ({} revoked accounts, 5xx incidents and glitches on)",
        r.virtual_ms as f64 / 60_000.0,
        config.revoked_accounts
    );
    println!();
    println!("requests");
    println!(
        "  served          {:>8}  ({:.1}%)",
        r.served,
        pct(r.served, r.requests)
    );
    println!(
        "  pool exhausted  {:>8}  ({:.1}%)  answered 429 with exact retry_after; longest {} ms",
        r.pool_exhausted,
        pct(r.pool_exhausted, r.requests),
        r.max_retry_after_ms
    );
    println!(
        "  upstream error  {:>8}  ({:.1}%)  attempts used up on 5xx/401/403/timeouts",
        r.upstream_errors,
        pct(r.upstream_errors, r.requests)
    );
    println!("  no account      {:>8}", r.no_account);
    println!();
    println!("rotation");
    println!(
        "  attempts        {:>8}  ({:.2} per request)",
        c.attempts,
        c.attempts as f64 / r.requests.max(1) as f64
    );
    println!("  retries         {:>8}", c.retries);
    println!(
        "  rotations       {:>8}  (moved to another account than the last attempt or the session's)",
        c.rotations
    );
    println!(
        "  waits           {:>8}  (total {:.1} s, mean {} ms)",
        r.waits,
        r.wait_ms as f64 / 1000.0,
        r.wait_ms.checked_div(r.waits).unwrap_or(0)
    );
    let o = &c.outcomes;
    println!(
        "  outcomes        ok {} | 429 {} | 401 {} | 403 {} | 5xx {} | network {} | timeout {}",
        o.success,
        o.rate_limited,
        o.unauthorized,
        o.forbidden,
        o.server_error,
        o.network_error,
        o.timeout
    );
    println!();

    let enabled: Vec<_> = r.accounts.iter().filter(|a| !a.disabled).collect();
    let disabled: Vec<_> = r
        .accounts
        .iter()
        .filter(|a| a.disabled)
        .map(|a| a.id.as_str())
        .collect();
    println!(
        "per-account load ({} enabled, {} disabled{})",
        enabled.len(),
        disabled.len(),
        if disabled.is_empty() {
            String::new()
        } else {
            format!(": {}", disabled.join(", "))
        }
    );
    if !enabled.is_empty() {
        let total: u64 = enabled.iter().map(|a| a.attempts).sum();
        let mean = total as f64 / enabled.len() as f64;
        println!(
            "  attempts per account: min {} / mean {:.1} / max {}",
            r.load_min, mean, r.load_max
        );
        // A small histogram of attempts per account.
        let buckets = 8u64;
        let span = (r.load_max - r.load_min).max(1);
        let mut counts = vec![0usize; buckets as usize];
        for a in &enabled {
            let b = ((a.attempts - r.load_min) * buckets / (span + 1)).min(buckets - 1);
            counts[b as usize] += 1;
        }
        let widest = counts.iter().copied().max().unwrap_or(1).max(1);
        for (i, n) in counts.iter().enumerate() {
            let lo = r.load_min + span * i as u64 / buckets;
            let hi = r.load_min + span * (i as u64 + 1) / buckets;
            let bar = "#".repeat(n * 40 / widest);
            println!("  {lo:>6}..{hi:<6} {n:>6}  {bar}");
        }
        let mut busiest: Vec<_> = enabled.clone();
        busiest.sort_by_key(|a| std::cmp::Reverse(a.attempts));
        println!("  busiest:");
        for a in busiest.iter().take(5) {
            println!(
                "    {:<10} attempts {:>6}  ok {:>6}  429 {:>5}  failures {:>4}  health {:>3}",
                a.id, a.attempts, a.successes, a.rate_limited, a.failures, a.health
            );
        }
    }
    println!();
    let per = if r.decisions == 0 {
        0.0
    } else {
        elapsed.as_nanos() as f64 / r.decisions as f64
    };
    println!(
        "time per decision: {:.0} ns ({} select/consume/report calls in {:.1} ms of wall time, incl. the simulated upstream{})",
        per,
        r.decisions,
        elapsed.as_secs_f64() * 1000.0,
        if cfg!(debug_assertions) {
            "; debug build, add --release for real numbers"
        } else {
            ""
        }
    );
}
