//! Play with the rotation policy: a seeded simulation of a proxy serving requests over a
//! pool of accounts against a synthetic upstream (per-family rate limits, 5xx incidents,
//! glitches, revoked tokens), then a readable summary.
//!
//! ```text
//! cargo run -p examples --example policy-sim -- [--accounts N] [--requests M] [--seed S]
//!     [--strategy lru|round-robin|health|quota-aware|sticky] [--sessions K]
//!     [--upstream-limit L] [--gap-ms MS] [--json]
//! cargo run -p examples --release --example policy-sim -- --windows [--days D]
//!     [--peak-per-account-hour R] [--usage-threshold P] [--exact-usage]
//!     [--weekly-used-at-start P] [--usage-known-at-start] [--short-capacity UNITS]
//!     [--weekly-capacity UNITS] [--compare]
//! ```
//!
//! `--windows` meters every account with ChatGPT-style usage windows (5 hours from first
//! use, and a week reset at a different time per account), lets requests follow a daily and
//! weekly demand curve over `--days` days, and turns the other upstream troubles and session
//! keys off (see `rotation_policy::sim::SimConfig::windowed`). `--compare` runs the same
//! seed and workload with least recently used, round robin, quota-aware and sticky
//! selection and prints them side by side.
//!
//! The same arguments always print the same numbers (except the wall-clock timing line).

use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use rotation_policy::Strategy;
use rotation_policy::sim::{SimConfig, SimReport, simulate};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum StrategyArg {
    Lru,
    RoundRobin,
    Health,
    QuotaAware,
    Sticky,
}

impl StrategyArg {
    fn strategy(self) -> Strategy {
        match self {
            StrategyArg::Lru => Strategy::LeastRecentlyUsed,
            StrategyArg::RoundRobin => Strategy::RoundRobin,
            StrategyArg::Health => Strategy::HealthWeighted,
            StrategyArg::QuotaAware => Strategy::QuotaAware,
            StrategyArg::Sticky => Strategy::Sticky,
        }
    }

    fn name(self) -> &'static str {
        match self {
            StrategyArg::Lru => "lru",
            StrategyArg::RoundRobin => "round-robin",
            StrategyArg::Health => "health",
            StrategyArg::QuotaAware => "quota-aware",
            StrategyArg::Sticky => "sticky",
        }
    }
}

/// What `--compare` runs, in table order: least recently used and round robin as they
/// were before usage reports (they learn of a full window from the upstream's 429 only),
/// then every strategy given the usage each answer reports.
const COMPARED: [(StrategyArg, bool); 6] = [
    (StrategyArg::Lru, false),
    (StrategyArg::RoundRobin, false),
    (StrategyArg::Lru, true),
    (StrategyArg::RoundRobin, true),
    (StrategyArg::QuotaAware, true),
    (StrategyArg::Sticky, true),
];

/// A run's row label: the strategy, marked `/no-usage` when the policy was not given the
/// usage reports (as before quota-aware rotation: it learns of a full window from a 429).
fn label(strategy: StrategyArg, usage_reports: bool) -> String {
    if usage_reports {
        strategy.name().to_owned()
    } else {
        format!("{}/no-usage", strategy.name())
    }
}

/// Simulate account rotation with the rotation-policy crate.
#[derive(Debug, Parser)]
#[command(name = "policy-sim")]
struct Args {
    /// Accounts in the pool.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    accounts: u32,
    /// Client requests to serve [default: 10000]. With --windows the demand curve decides.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=10_000_000), conflicts_with = "windows")]
    requests: Option<u32>,
    /// Seed for traffic, upstream behaviour and jitter.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Selection strategy (ignored with --compare).
    #[arg(long, value_enum, default_value_t = StrategyArg::Lru)]
    strategy: StrategyArg,
    /// Distinct session keys, 0 = no session affinity [default: 200, with --windows 0].
    #[arg(long)]
    sessions: Option<u32>,
    /// Upstream requests per account, per model family, per minute (scaled per account)
    /// [default: 10, with --windows no such limit].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    upstream_limit: Option<u32>,
    /// Average gap between requests, in milliseconds.
    #[arg(long, default_value_t = 60, conflicts_with = "windows")]
    gap_ms: u64,
    /// Meter accounts with 5-hour and weekly usage windows and follow a daily demand curve.
    #[arg(long)]
    windows: bool,
    /// Simulated days of demand (with --windows).
    #[arg(long, default_value_t = 7, requires = "windows", value_parser = clap::value_parser!(u32).range(1..=366))]
    days: u32,
    /// Requests per account and hour at the busiest hours of a weekday (with --windows).
    #[arg(long, default_value_t = 10, requires = "windows", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    peak_per_account_hour: u32,
    /// Usage threshold of the policy, in percent [default: the policy's, 100: no reserve].
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=100))]
    usage_threshold: Option<u8>,
    /// Usage reported with a 200 already counts that request (the real headers cannot).
    #[arg(long, requires = "windows")]
    exact_usage: bool,
    /// How used each account's week is at the start, in percent of the part of the week
    /// already gone: 100 = a pool in full use before the run, 0 = a fresh pool (with --windows).
    #[arg(long, default_value_t = 100, requires = "windows", value_parser = clap::value_parser!(u8).range(0..=100))]
    weekly_used_at_start: u8,
    /// Units of one account's 5-hour window [default: 150] (with --windows).
    #[arg(long, requires = "windows", value_parser = clap::value_parser!(u32).range(5..))]
    short_capacity: Option<u32>,
    /// Units of one account's weekly window [default: 1500] (with --windows).
    #[arg(long, requires = "windows", value_parser = clap::value_parser!(u32).range(5..))]
    weekly_capacity: Option<u32>,
    /// The pool knows every account's usage before the first request, as after a usage
    /// query per account at start (with --windows; default: learned from answers only).
    #[arg(long, requires = "windows")]
    usage_known_at_start: bool,
    /// Run least recently used, round robin, quota-aware and sticky on the same seed and
    /// workload and print them side by side.
    #[arg(long)]
    compare: bool,
    /// With --compare: also run the next N-1 seeds (each strategy on each seed's workload)
    /// and print the mean per strategy — one seed's differences of a percent are noise.
    #[arg(long, default_value_t = 1, requires = "compare",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    seeds: u32,
    /// Print the full report as JSON instead of the summary.
    #[arg(long)]
    json: bool,
}

fn sim_config(args: &Args) -> SimConfig {
    let mut config = if args.windows {
        let mut config = SimConfig::windowed(args.accounts as usize, args.days);
        if let Some(demand) = config.demand.as_mut() {
            demand.peak_per_account_hour = args.peak_per_account_hour;
        }
        if let Some(windows) = config.windows.as_mut() {
            windows.reports_include_request = args.exact_usage;
            windows.weekly_used_at_start = args.weekly_used_at_start;
            windows.usage_known_at_start = args.usage_known_at_start;
            if let Some(units) = args.short_capacity {
                windows.primary_capacity = units;
            }
            if let Some(units) = args.weekly_capacity {
                windows.secondary_capacity = units;
            }
        }
        config
    } else {
        let mut config = SimConfig::default();
        config.accounts = args.accounts as usize;
        config.requests = args.requests.unwrap_or(10_000) as usize;
        config.request_gap = Duration::from_millis(args.gap_ms);
        config.revoked_accounts = config.revoked_accounts.min(config.accounts / 10);
        config.sessions = 200;
        config.upstream_limit = 10;
        config
    };
    config.seed = args.seed;
    if let Some(sessions) = args.sessions {
        config.sessions = sessions as usize;
    }
    if let Some(limit) = args.upstream_limit {
        config.upstream_limit = limit;
    }
    if let Some(threshold) = args.usage_threshold {
        config.policy.usage_threshold = threshold;
    }
    config.policy.strategy = args.strategy.strategy();
    config
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let config = sim_config(&args);

    if args.compare {
        let started = Instant::now();
        let mut runs = Vec::with_capacity(COMPARED.len());
        for (strategy, usage_reports) in COMPARED {
            let mut config = config.clone();
            config.policy.strategy = strategy.strategy();
            if let Some(model) = config.windows.as_mut() {
                model.usage_reports = usage_reports;
            }
            runs.push((label(strategy, usage_reports), simulate(&config)?));
        }
        let elapsed = started.elapsed();
        if args.json {
            let runs: Vec<_> = runs
                .iter()
                .map(|(strategy, report)| serde_json::json!({ "strategy": strategy, "report": report }))
                .collect();
            println!("{}", serde_json::to_string_pretty(&runs)?);
            return Ok(());
        }
        print_comparison(&config, &runs, elapsed);
        if args.seeds > 1 {
            print_means(&config, args.seeds)?;
        }
        return Ok(());
    }

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

/// Each compared run's mean over `seeds` seeds (the first is `config.seed`): requests
/// served, 429s seen and requests refused, and on how many seeds it served the most.
fn print_means(config: &SimConfig, seeds: u32) -> Result<(), Box<dyn std::error::Error>> {
    let mut served = [0u64; COMPARED.len()];
    let mut seen = [0u64; COMPARED.len()];
    let mut refused = [0u64; COMPARED.len()];
    let mut best = [0u32; COMPARED.len()];
    for offset in 0..u64::from(seeds) {
        let mut round = [0u64; COMPARED.len()];
        for (i, (strategy, usage_reports)) in COMPARED.into_iter().enumerate() {
            let mut config = config.clone();
            config.seed = config.seed.wrapping_add(offset);
            config.policy.strategy = strategy.strategy();
            if let Some(model) = config.windows.as_mut() {
                model.usage_reports = usage_reports;
            }
            let report = simulate(&config)?;
            round[i] = report.served;
            served[i] += report.served;
            seen[i] += report.counters.outcomes.rate_limited;
            refused[i] += report.requests - report.served;
        }
        let top = round.iter().copied().max().unwrap_or(0);
        for (i, &n) in round.iter().enumerate() {
            best[i] += u32::from(n == top);
        }
    }
    let n = f64::from(seeds);
    println!();
    println!(
        "mean over seeds {}..={}",
        config.seed,
        config.seed.wrapping_add(u64::from(seeds) - 1)
    );
    println!(
        "{:<20} {:>9} {:>10} {:>9} {:>12}",
        "strategy", "served", "429s seen", "refused", "most served"
    );
    for (i, (strategy, usage_reports)) in COMPARED.into_iter().enumerate() {
        println!(
            "{:<20} {:>9.1} {:>10.1} {:>9.1} {:>12}",
            label(strategy, usage_reports),
            served[i] as f64 / n,
            seen[i] as f64 / n,
            refused[i] as f64 / n,
            format!("{}/{seeds}", best[i])
        );
    }
    Ok(())
}

/// What the runs had in common: the pool, the windows and the workload.
fn print_setup(config: &SimConfig, report: &SimReport) {
    match (&config.windows, &config.demand) {
        (Some(model), Some(demand)) => {
            println!(
                "policy-sim: {} accounts, {} days of demand peaking at {}/account/h, seed {}",
                config.accounts, demand.days, demand.peak_per_account_hour, config.seed
            );
            println!(
                "usage windows: {} units per {} h from first use, {} per {} days reset at staggered times; {}-{} units a request; threshold {}%{}",
                model.primary_capacity,
                model.primary_length.as_secs() / 3600,
                model.secondary_capacity,
                model.secondary_length.as_secs() / 86_400,
                model.cost_min,
                model.cost_max,
                config.policy.usage_threshold,
                if model.reports_include_request {
                    "; exact usage reports"
                } else {
                    ""
                }
            );
            println!(
                "at start: weeks {}% used pro rata of the time gone; usage {}",
                model.weekly_used_at_start,
                if model.usage_known_at_start {
                    "of every account known to the pool"
                } else {
                    "learned from answers only"
                }
            );
            if let Some(w) = &report.windows {
                let weeks = f64::from(demand.days) / 7.0;
                let capacity = config.accounts as f64 * f64::from(model.secondary_capacity) * weeks;
                println!(
                    "demand: {} requests, {} units ({:.0}% of the pool's weekly capacity, pro rata over {} days)",
                    report.requests,
                    w.demand_units,
                    pct_f(w.demand_units as f64, capacity),
                    demand.days
                );
            }
        }
        _ => println!(
            "policy-sim: {} accounts, {} requests, seed {}, {} sessions, limit {}/min/family",
            config.accounts, report.requests, config.seed, config.sessions, config.upstream_limit
        ),
    }
}

fn print_comparison(config: &SimConfig, runs: &[(String, SimReport)], elapsed: Duration) {
    let Some((_, first)) = runs.first() else {
        return;
    };
    print_setup(config, first);
    println!();
    println!(
        "{:<20} {:>8} {:>10} {:>8} {:>14} {:>11}",
        "strategy", "served", "429s seen", "refused", "weekly unused", "5 h unused"
    );
    let unused = |r: &SimReport, weekly: bool| match &r.windows {
        Some(w) if weekly => format!("{:.1}%", w.secondary.unused_percent()),
        Some(w) => format!("{:.1}%", w.primary.unused_percent()),
        None => "-".to_owned(),
    };
    for (strategy, r) in runs {
        println!(
            "{:<20} {:>8} {:>10} {:>8} {:>14} {:>11}",
            strategy,
            r.served,
            r.counters.outcomes.rate_limited,
            r.requests - r.served,
            unused(r, true),
            unused(r, false)
        );
    }
    println!();
    println!("breakdown");
    println!(
        "{:<20} {:>10} {:>8} {:>8} {:>12} {:>13} {:>12} {:>6}",
        "strategy",
        "exhausted",
        "gave up",
        "retries",
        "weekly 429s",
        "served units",
        "5 h windows",
        "waits"
    );
    for (strategy, r) in runs {
        let (weekly, units, windows) = r.windows.as_ref().map_or_else(
            || ("-".to_owned(), "-".to_owned(), "-".to_owned()),
            |w| {
                (
                    w.weekly_429s.to_string(),
                    w.served_units.to_string(),
                    w.primary.windows_ended.to_string(),
                )
            },
        );
        println!(
            "{:<20} {:>10} {:>8} {:>8} {:>12} {:>13} {:>12} {:>6}",
            strategy,
            r.pool_exhausted,
            r.upstream_errors + r.no_account,
            r.counters.retries,
            weekly,
            units,
            windows,
            r.waits
        );
    }
    if runs.iter().any(|(_, r)| r.windows.is_some()) {
        println!("refused per day");
        for (strategy, r) in runs {
            if let Some(w) = &r.windows {
                let days: Vec<String> = w.refused_by_day.iter().map(u64::to_string).collect();
                let days = if days.is_empty() {
                    "none".to_owned()
                } else {
                    days.join(" ")
                };
                println!("  {:<20} {days}", strategy);
            }
        }
    }
    println!(
        "  exhausted: no account usable (answered 429 with retry_after); gave up: attempts used up;"
    );
    println!("  5 h windows: short windows that ended (each started by a first use)");
    println!(
        "  /no-usage: the policy is not given the usage reports (it learns of a full window from a 429 alone)"
    );
    println!();
    println!(
        "time: {:.1} ms of wall time for {} runs{}",
        elapsed.as_secs_f64() * 1000.0,
        runs.len(),
        if cfg!(debug_assertions) {
            " (debug build, add --release for real numbers)"
        } else {
            ""
        }
    );
}

fn pct_f(part: f64, whole: f64) -> f64 {
    if whole <= 0.0 {
        0.0
    } else {
        100.0 * part / whole
    }
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
    if config.windows.is_some() {
        print_setup(config, r);
        println!("strategy {}", args.strategy.name());
    } else {
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
    }
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

    if let Some(w) = &r.windows {
        println!("usage windows");
        println!(
            "  upstream 429s   {:>8}  ({} of them weekly windows)",
            w.window_429s, w.weekly_429s
        );
        println!(
            "  served units    {:>8}  of {} demanded",
            w.served_units, w.demand_units
        );
        println!(
            "  weekly unused   {:>7.1}%  ({} of {} units in {} weekly windows that reset)",
            w.secondary.unused_percent(),
            w.secondary.unused,
            w.secondary.capacity,
            w.secondary.windows_ended
        );
        println!(
            "  5 h unused      {:>7.1}%  ({} of {} units in {} 5-hour windows that ended)",
            w.primary.unused_percent(),
            w.primary.unused,
            w.primary.capacity,
            w.primary.windows_ended
        );
        println!();
    }
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
