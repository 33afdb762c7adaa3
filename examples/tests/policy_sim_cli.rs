//! Runs the built `policy-sim` example program: the summary a user plays with has its parts
//! (rotations, waits, per-account load, time per decision, and with `--windows` the usage
//! windows), `--windows --compare` prints the strategies side by side (an insta snapshot of
//! the table), the same seed prints the same numbers, and bad arguments fail with a clear
//! message.
//!
//! Needs the example binary (`target/<profile>/examples/policy-sim`): plain
//! `cargo test --workspace --all-features` builds it; with `--test policy_sim_cli` alone
//! build it first (`cargo build --workspace --all-features --examples`) or the tests print
//! `SKIP`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::Run;

fn policy_sim(test: &str) -> Option<PathBuf> {
    common::example_or_skip("policy-sim", test)
}

/// Runs `bin args…`, killing it if it takes longer than `limit`.
fn run(bin: &Path, args: &[&str], limit: Duration) -> Run {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    common::run_bounded(cmd, limit)
}

const LIMIT: Duration = Duration::from_secs(60);

/// The summary without its wall-clock line (the only line allowed to differ between runs).
fn deterministic_part(summary: &str) -> String {
    summary
        .lines()
        .filter(|line| !line.starts_with("time per decision:"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The number in the line that starts with `label` (after trimming), e.g. `rotations 30`.
fn counter(summary: &str, label: &str) -> u64 {
    let line = summary
        .lines()
        .map(str::trim_start)
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no `{label}` line in:\n{summary}"));
    line[label.len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after `{label}` in {line:?}"))
}

#[test]
fn summary_has_rotations_waits_load_and_time_per_decision() {
    let Some(bin) = policy_sim("summary_has_rotations_waits_load_and_time_per_decision") else {
        return;
    };
    let r = run(
        &bin,
        &["--accounts", "12", "--requests", "2000", "--seed", "7"],
        LIMIT,
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let s = &r.stdout;
    assert!(
        s.starts_with("policy-sim: 12 accounts, 2000 requests, seed 7"),
        "{s}"
    );

    // Every request ends exactly one way.
    let ended = counter(s, "served")
        + counter(s, "pool exhausted")
        + counter(s, "upstream error")
        + counter(s, "no account");
    assert_eq!(ended, 2000, "{s}");
    // Rotation counters are there and consistent: attempts = first attempts + retries.
    let attempts = counter(s, "attempts");
    let retries = counter(s, "retries");
    assert!(attempts >= retries && attempts <= 2000 + retries, "{s}");
    assert!(counter(s, "rotations") > 0, "{s}");
    let _waits = counter(s, "waits");
    assert!(s.contains("outcomes        ok "), "{s}");

    // Per-account load: all twelve accounts are accounted for (enabled + disabled, the
    // simulated revoked ones named), and the busiest are listed.
    let load = s
        .lines()
        .find(|l| l.starts_with("per-account load ("))
        .unwrap_or_else(|| panic!("no per-account load line:\n{s}"));
    let numbers: Vec<u64> = load["per-account load (".len()..]
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .take(2)
        .collect();
    assert_eq!(numbers.iter().sum::<u64>(), 12, "{load}");
    assert!(s.contains("attempts per account: min "), "{s}");
    let busiest = s.lines().filter(|l| l.trim_start().starts_with("acct-"));
    assert_eq!(busiest.count(), 5, "five busiest accounts listed:\n{s}");

    // Time per decision, in nanoseconds.
    let timing = s
        .lines()
        .find(|l| l.starts_with("time per decision: "))
        .unwrap_or_else(|| panic!("no timing line:\n{s}"));
    let ns: f64 = timing["time per decision: ".len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number in {timing:?}"));
    assert!(ns > 0.0, "{timing}");
    assert!(timing.contains(" ns ("), "{timing}");
}

#[test]
fn the_same_seed_prints_the_same_summary_and_another_seed_another() {
    let test = "the_same_seed_prints_the_same_summary_and_another_seed_another";
    let Some(bin) = policy_sim(test) else {
        return;
    };
    let args = |seed: &'static str| {
        [
            "--accounts",
            "20",
            "--requests",
            "3000",
            "--seed",
            seed,
            "--strategy",
            "round-robin",
        ]
    };
    let first = run(&bin, &args("42"), LIMIT);
    let second = run(&bin, &args("42"), LIMIT);
    let other = run(&bin, &args("43"), LIMIT);
    for r in [&first, &second, &other] {
        assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    }
    assert_eq!(
        deterministic_part(&first.stdout),
        deterministic_part(&second.stdout)
    );
    assert_ne!(
        deterministic_part(&first.stdout),
        deterministic_part(&other.stdout).replace("seed 43", "seed 42"),
        "a different seed should tell a different story"
    );
    // --json is deterministic too (it has no timing at all).
    let mut json_args = args("42").to_vec();
    json_args.push("--json");
    let a = run(&bin, &json_args, LIMIT);
    let b = run(&bin, &json_args, LIMIT);
    assert_eq!(a.code, Some(0), "stderr: {}", a.stderr);
    assert_eq!(a.stdout, b.stdout);
    let report: serde_json::Value = serde_json::from_str(&a.stdout).unwrap();
    assert_eq!(report["requests"], 3000);
    assert_eq!(report["accounts"].as_array().map(Vec::len), Some(20));
}

#[test]
fn bad_arguments_fail_with_a_clear_message() {
    let Some(bin) = policy_sim("bad_arguments_fail_with_a_clear_message") else {
        return;
    };
    let cases: &[(&[&str], &[&str])] = &[
        (&["--accounts", "0"], &["--accounts", "0", "1..="]),
        (&["--accounts", "many"], &["--accounts", "many"]),
        (&["--requests", "-5"], &["-5"]),
        (&["--requests", "abc"], &["--requests", "abc"]),
        (&["--seed", "x"], &["--seed", "x"]),
        (&["--strategy", "random"], &["--strategy", "random", "lru"]),
        (&["--upstream-limit", "0"], &["--upstream-limit", "0"]),
        (&["--bogus"], &["--bogus"]),
    ];
    for (args, mentions) in cases {
        let r = run(&bin, args, LIMIT);
        assert_ne!(r.code, Some(0), "{args:?} should fail");
        assert!(r.code.is_some(), "{args:?} ended by a signal");
        assert!(r.stdout.is_empty(), "{args:?} printed a summary anyway");
        assert!(r.stderr.starts_with("error: "), "{args:?}: {:?}", r.stderr);
        for m in *mentions {
            assert!(
                r.stderr.contains(m),
                "{args:?}: message should mention {m:?}: {}",
                r.stderr
            );
        }
    }
}

/// The output of `--compare` without its wall-clock line.
fn without_timing(output: &str) -> String {
    output
        .lines()
        .filter(|line| !line.starts_with("time: "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn windows_compare_prints_the_strategies_side_by_side() {
    let Some(bin) = policy_sim("windows_compare_prints_the_strategies_side_by_side") else {
        return;
    };
    let args = [
        "--windows",
        "--accounts",
        "6",
        "--days",
        "2",
        "--seed",
        "3",
        "--compare",
    ];
    let r = run(&bin, &args, LIMIT);
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    // Same arguments, same numbers; only the timing line may differ.
    let again = run(&bin, &args, LIMIT);
    assert_eq!(without_timing(&r.stdout), without_timing(&again.stdout));
    assert!(
        r.stdout.lines().any(|l| l.starts_with("time: ")),
        "{}",
        r.stdout
    );

    // One row per strategy, in this order, and each row's numbers add up.
    let rows: Vec<Vec<&str>> = r
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("strategy "))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    let names: Vec<&str> = rows.iter().map(|row| row[0]).collect();
    assert_eq!(
        names,
        [
            "lru/no-usage",
            "round-robin/no-usage",
            "lru",
            "round-robin",
            "quota-aware",
            "sticky"
        ]
    );
    let requests: u64 = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("demand: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no demand line:\n{}", r.stdout));
    for row in &rows {
        let served: u64 = row[1].parse().unwrap();
        let refused: u64 = row[3].parse().unwrap();
        assert_eq!(served + refused, requests, "{row:?}");
        assert!(row[4].ends_with('%') && row[5].ends_with('%'), "{row:?}");
    }

    insta::assert_snapshot!(without_timing(&r.stdout));

    // --json prints every run in full, deterministically.
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let a = run(&bin, &json_args, LIMIT);
    let b = run(&bin, &json_args, LIMIT);
    assert_eq!(a.code, Some(0), "stderr: {}", a.stderr);
    assert_eq!(a.stdout, b.stdout);
    let runs: serde_json::Value = serde_json::from_str(&a.stdout).unwrap();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 6);
    for (entry, name) in runs.iter().zip(names) {
        assert_eq!(entry["strategy"], name);
        assert_eq!(entry["report"]["requests"], requests);
        let windows = &entry["report"]["windows"];
        assert_eq!(windows["weekly_resets"].as_array().map(Vec::len), Some(6));
    }
}

#[test]
fn window_arguments_are_checked() {
    let Some(bin) = policy_sim("window_arguments_are_checked") else {
        return;
    };
    let cases: &[(&[&str], &[&str])] = &[
        (&["--windows", "--days", "0"], &["--days", "0", "1..="]),
        (&["--days", "3"], &["--days", "--windows"]),
        (
            &["--windows", "--requests", "10"],
            &["--requests", "--windows"],
        ),
        (
            &["--windows", "--usage-threshold", "0"],
            &["--usage-threshold", "0"],
        ),
        (&["--exact-usage"], &["--exact-usage", "--windows"]),
        (
            &["--strategy", "quota"],
            &["--strategy", "quota-aware", "sticky"],
        ),
    ];
    for (args, mentions) in cases {
        let r = run(&bin, args, LIMIT);
        assert_ne!(r.code, Some(0), "{args:?} should fail");
        assert!(r.stdout.is_empty(), "{args:?} printed a summary anyway");
        assert!(r.stderr.starts_with("error: "), "{args:?}: {:?}", r.stderr);
        for m in *mentions {
            assert!(
                r.stderr.contains(m),
                "{args:?}: message should mention {m:?}: {}",
                r.stderr
            );
        }
    }
}

#[test]
fn a_single_windowed_run_reports_its_usage_windows() {
    let Some(bin) = policy_sim("a_single_windowed_run_reports_its_usage_windows") else {
        return;
    };
    let r = run(
        &bin,
        &[
            "--windows",
            "--accounts",
            "4",
            "--days",
            "1",
            "--strategy",
            "quota-aware",
        ],
        LIMIT,
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let s = &r.stdout;
    assert!(
        s.starts_with("policy-sim: 4 accounts, 1 days of demand"),
        "{s}"
    );
    assert!(s.contains("\nstrategy quota-aware\n"), "{s}");
    for label in [
        "upstream 429s",
        "served units",
        "weekly unused",
        "5 h unused",
    ] {
        assert!(s.contains(&format!("  {label} ")), "no {label} line:\n{s}");
    }
    let served = counter(s, "served  ");
    let ended = served
        + counter(s, "pool exhausted")
        + counter(s, "upstream error")
        + counter(s, "no account");
    let requests: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("demand: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no demand line:\n{s}"));
    assert_eq!(ended, requests, "{s}");
}

#[test]
fn seeds_print_each_strategys_mean() {
    let Some(bin) = policy_sim("seeds_print_each_strategys_mean") else {
        return;
    };
    let args = [
        "--windows",
        "--accounts",
        "4",
        "--days",
        "1",
        "--compare",
        "--seeds",
        "3",
    ];
    let r = run(&bin, &args, LIMIT);
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let means: Vec<&str> = r
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("mean over seeds 1..=3"))
        .skip(2)
        .take_while(|l| !l.is_empty() && !l.starts_with("time"))
        .collect();
    assert_eq!(means.len(), 6, "{}", r.stdout);
    // Each mean is the mean of the three single-seed runs.
    for (row, name) in means.iter().zip([
        "lru/no-usage",
        "round-robin/no-usage",
        "lru",
        "round-robin",
        "quota-aware",
        "sticky",
    ]) {
        let fields: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(fields[0], name);
        let mut served = 0.0;
        for seed in ["1", "2", "3"] {
            let one = run(
                &bin,
                &[
                    "--windows",
                    "--accounts",
                    "4",
                    "--days",
                    "1",
                    "--compare",
                    "--seed",
                    seed,
                ],
                LIMIT,
            );
            let line = one
                .stdout
                .lines()
                .skip_while(|l| !l.starts_with("strategy "))
                .find(|l| l.split_whitespace().next() == Some(name))
                .unwrap();
            served += line
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<f64>()
                .unwrap();
        }
        let mean: f64 = fields[1].parse().unwrap();
        assert!(
            (mean - served / 3.0).abs() < 0.06,
            "{name}: {mean} vs {}",
            served / 3.0
        );
    }
    // --seeds needs --compare.
    let r = run(&bin, &["--windows", "--seeds", "3"], LIMIT);
    assert_ne!(r.code, Some(0));
}
