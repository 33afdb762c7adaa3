//! The seeded simulation of the issue: 50 accounts, 10,000 requests, per-family upstream
//! limits, 5xx incidents, glitches and two revoked accounts. Its summary is an insta
//! snapshot, so any change in policy behaviour shows up as a reviewed diff.

use rotation_policy::sim::{SimConfig, simulate};

#[test]
fn fifty_accounts_ten_thousand_requests_summary() {
    let config = SimConfig::default();
    assert_eq!(
        (config.accounts, config.requests, config.seed),
        (50, 10_000, 1)
    );
    let report = simulate(&config).unwrap();

    // Sanity that does not depend on the snapshot.
    let c = &report.counters;
    assert_eq!(report.requests, 10_000);
    assert_eq!(
        report.served + report.upstream_errors + report.pool_exhausted + report.no_account,
        report.requests,
        "every request ends exactly one way"
    );
    assert_eq!(c.attempts, c.requests + c.retries);
    assert_eq!(
        c.attempts,
        report.accounts.iter().map(|a| a.attempts).sum::<u64>()
    );
    assert_eq!(c.outcomes.total(), c.attempts, "every attempt was reported");
    assert!(
        report.accounts[0].disabled && report.accounts[1].disabled,
        "revoked accounts"
    );
    assert!(c.outcomes.rate_limited > 0 && c.outcomes.server_error > 0 && c.rotations > 0);
    assert!(
        report.served > 9_000,
        "the pool should serve most requests: {report:?}"
    );

    // Same seed, same story; another seed, another one.
    assert_eq!(report, simulate(&config).unwrap());
    let mut other = config.clone();
    other.seed = 2;
    assert_ne!(report, simulate(&other).unwrap());

    insta::assert_yaml_snapshot!(report);
}
