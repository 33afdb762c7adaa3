//! Usage reports steer selection: the threshold block and its exact wait, limits mapped to
//! model families, the block-rule table, hostile reset times, the quota-aware and sticky
//! strategies, pinned requests, the pool aggregate, and usage in shared state.

use std::time::Duration;

use rotation_policy::usage::{LimitUsage, Percent, UsageReport, UsageWindow};
use rotation_policy::{
    AccountId, Decision, Outcome, PolicyConfig, PolicyError, PolicyState, Pool, Request, Selection,
    Strategy, Timestamp,
};

const T0: u64 = 1_700_000_000_000;
const MIN: u64 = 60_000;
const HOUR: u64 = 60 * MIN;
const DAY: u64 = 24 * HOUR;

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(T0 + ms)
}

/// The policy with a 5 % reserve: accounts are left at 95 % (the default is 100 %, where
/// the learned margin alone decides).
fn threshold_95() -> PolicyConfig {
    let mut config = PolicyConfig::default();
    config.usage_threshold = 95;
    config
}

fn id(name: &str) -> AccountId {
    AccountId::new(name).unwrap()
}

fn pool_with(config: PolicyConfig, names: &[&str]) -> Pool {
    let mut pool = Pool::new(config, 7).unwrap();
    for name in names {
        pool.add(id(name)).unwrap();
    }
    pool
}

fn window(used: f64, minutes: Option<u32>, resets: Option<u64>) -> UsageWindow {
    let mut w = UsageWindow::new(Percent::new(used).unwrap());
    if let Some(m) = minutes {
        w = w.with_window_minutes(m);
    }
    if let Some(r) = resets {
        w = w.with_resets_at(at(r));
    }
    w
}

fn report(
    limit: &str,
    name: Option<&str>,
    primary: Option<UsageWindow>,
    secondary: Option<UsageWindow>,
) -> UsageReport {
    let mut usage = LimitUsage::new(limit).unwrap();
    usage.limit_name = name.map(str::to_owned);
    usage.primary = primary;
    usage.secondary = secondary;
    let mut report = UsageReport::default();
    report.push(usage);
    report
}

fn codex(primary: Option<UsageWindow>, secondary: Option<UsageWindow>) -> UsageReport {
    report("codex", None, primary, secondary)
}

fn pick(pool: &mut Pool, family: &str, now: u64) -> Selection {
    pool.select(&mut Request::new(family), at(now))
}

fn served_by(pool: &mut Pool, family: &str, now: u64) -> String {
    match pick(pool, family, now) {
        Selection::Account(account) => {
            // Not dispatched: the bucket stays full, so only usage and cooldowns decide.
            pool.refund(&account, at(now)).unwrap();
            account.as_str().to_owned()
        }
        other => panic!("expected an account at +{now} ms, got {other:?}"),
    }
}

#[test]
fn at_the_threshold_an_account_waits_for_its_reset_and_the_wait_is_exact() {
    let mut pool = pool_with(threshold_95(), &["a", "b"]);
    // Just under the threshold (95 %): still a candidate.
    pool.record_usage(
        &id("a"),
        &codex(Some(window(94.9, Some(300), Some(2 * HOUR))), None),
        at(0),
    )
    .unwrap();
    assert_eq!(served_by(&mut pool, "gpt-5", 0), "a");
    // At it: out until the reset, whatever the strategy's order says.
    pool.record_usage(
        &id("a"),
        &codex(Some(window(95.0, Some(300), Some(2 * HOUR))), None),
        at(1),
    )
    .unwrap();
    for now in [1, HOUR / 2, HOUR - 1] {
        assert_eq!(served_by(&mut pool, "gpt-5", now), "b", "at +{now}");
    }
    pool.disable(&id("b")).unwrap();
    assert_eq!(
        pick(&mut pool, "gpt-5", HOUR),
        Selection::Exhausted {
            retry_after: Duration::from_millis(HOUR)
        }
    );
    assert_eq!(served_by(&mut pool, "gpt-5", 2 * HOUR), "a");
    // The secondary window blocks the same way, and the later of two blocks holds.
    pool.record_usage(
        &id("a"),
        &codex(
            Some(window(99.0, Some(300), Some(3 * HOUR))),
            Some(window(100.0, Some(10_080), Some(5 * DAY))),
        ),
        at(2 * HOUR),
    )
    .unwrap();
    assert_eq!(
        pick(&mut pool, "gpt-5", 2 * HOUR),
        Selection::Exhausted {
            retry_after: Duration::from_millis(5 * DAY - 2 * HOUR)
        }
    );
}

#[test]
fn a_429_with_usage_at_100_waits_for_the_reset_not_only_the_cooldown() {
    let mut pool = pool_with(threshold_95(), &["a"]);
    let mut request = Request::new("gpt-5");
    assert_eq!(
        pool.select(&mut request, at(0)),
        Selection::Account(id("a"))
    );
    pool.consume(&id("a"), at(0)).unwrap();
    // The 429's usage headers say the week is spent until day 3; its Retry-After says 1 s.
    pool.record_usage(
        &id("a"),
        &codex(None, Some(window(100.0, Some(10_080), Some(3 * DAY)))),
        at(0),
    )
    .unwrap();
    let limited = Outcome::RateLimited {
        retry_after: Some(Duration::from_secs(1)),
    };
    assert_eq!(
        pool.report(&mut request, &id("a"), limited, at(0)),
        Decision::ReturnToClient {
            retry_after: Some(Duration::from_millis(3 * DAY))
        }
    );
}

#[test]
fn the_block_rules_table_holds_row_by_row() {
    let config = threshold_95(); // max_cooldown 15 min
    let blocked_for = |w: UsageWindow| {
        let mut pool = pool_with(config.clone(), &["a"]);
        pool.record_usage(&id("a"), &codex(Some(w), None), at(0))
            .unwrap();
        match pick(&mut pool, "gpt-5", 0) {
            Selection::Exhausted { retry_after } => retry_after.as_millis() as u64,
            Selection::Account(_) => 0,
            Selection::NoAccount => panic!("no account"),
        }
    };
    // resets_at: that time...
    assert_eq!(blocked_for(window(96.0, Some(300), Some(HOUR))), HOUR);
    // ...but at most one window length after the report (a broken reset time)...
    assert_eq!(
        blocked_for(window(96.0, Some(300), Some(400 * DAY))),
        300 * MIN
    );
    // ...or 8 days without a length (a hostile year-9999 reset cannot pin the account).
    assert_eq!(blocked_for(window(96.0, None, Some(9_000 * DAY))), 8 * DAY);
    // A window length only: the latest the window can reset.
    assert_eq!(blocked_for(window(96.0, Some(300), None)), 300 * MIN);
    // Neither: max_cooldown, then the account is tried again and reports anew.
    assert_eq!(blocked_for(window(96.0, None, None)), 15 * MIN);
    // A reset in the past: the window started over, nothing blocks.
    let mut pool = pool_with(config.clone(), &["a"]);
    pool.record_usage(
        &id("a"),
        &codex(Some(window(100.0, Some(300), Some(HOUR))), None),
        at(2 * HOUR),
    )
    .unwrap();
    assert_eq!(served_by(&mut pool, "gpt-5", 2 * HOUR), "a");
}

#[test]
fn the_threshold_is_configurable_and_validated() {
    // A reserve of 20 %: out at 80 %, though the margin would allow more.
    let mut config = PolicyConfig::default();
    assert_eq!(config.usage_threshold, 100);
    config.usage_threshold = 80;
    let mut pool = pool_with(config.clone(), &["a"]);
    pool.record_usage(
        &id("a"),
        &codex(Some(window(79.9, None, Some(HOUR))), None),
        at(0),
    )
    .unwrap();
    assert_eq!(served_by(&mut pool, "gpt-5", 0), "a");
    pool.record_usage(
        &id("a"),
        &codex(Some(window(80.0, None, Some(HOUR))), None),
        at(0),
    )
    .unwrap();
    assert!(matches!(
        pick(&mut pool, "gpt-5", 0),
        Selection::Exhausted { .. }
    ));
    for bad in [0, 101, 255] {
        config.usage_threshold = bad;
        assert!(
            matches!(
                config.validate(),
                Err(PolicyError::InvalidConfig {
                    field: "usage_threshold",
                    ..
                })
            ),
            "{bad}"
        );
    }
}

#[test]
fn a_metered_limit_blocks_only_the_model_it_names() {
    let mut pool = pool_with(threshold_95(), &["a", "b"]);
    // Families exist before the limit's name is known, and after.
    assert_eq!(served_by(&mut pool, "gpt-5.2-codex-sonic", 0), "a");
    let sonic = report(
        "codex_bengalfox",
        Some("gpt-5.2-codex-sonic"),
        Some(window(100.0, Some(300), Some(HOUR))),
        None,
    );
    pool.record_usage(&id("a"), &sonic, at(1)).unwrap();
    // The metered model avoids `a`; other models still use it.
    for _ in 0..3 {
        assert_eq!(served_by(&mut pool, "gpt-5.2-codex-sonic", 2), "b");
    }
    pool.disable(&id("b")).unwrap();
    assert_eq!(served_by(&mut pool, "gpt-5", 2), "a");
    assert_eq!(
        pick(&mut pool, "gpt-5.2-codex-sonic", 2),
        Selection::Exhausted {
            retry_after: Duration::from_millis(HOUR - 2)
        }
    );
    // The name matches without regard to ASCII case.
    assert!(matches!(
        pick(&mut pool, "GPT-5.2-Codex-Sonic", 2),
        Selection::Exhausted { .. }
    ));
    assert_eq!(served_by(&mut pool, "gpt-5.2-codex-sonic", HOUR), "a");
    // And the default limit blocks every model that has no metered limit of its own.
    pool.record_usage(
        &id("a"),
        &codex(Some(window(100.0, Some(300), Some(2 * HOUR))), None),
        at(HOUR),
    )
    .unwrap();
    assert!(matches!(
        pick(&mut pool, "gpt-5", HOUR),
        Selection::Exhausted { .. }
    ));
    assert!(matches!(
        pick(&mut pool, "o3", HOUR),
        Selection::Exhausted { .. }
    ));
    assert_eq!(served_by(&mut pool, "gpt-5.2-codex-sonic", HOUR), "a");
}

#[test]
fn a_report_keeps_windows_it_leaves_out_until_they_reset() {
    let mut pool = pool_with(threshold_95(), &["a", "b"]);
    pool.record_usage(
        &id("a"),
        &codex(None, Some(window(97.0, Some(10_080), Some(DAY)))),
        at(0),
    )
    .unwrap();
    // A later answer reports only the 5-hour window: the weekly block stays.
    pool.record_usage(
        &id("a"),
        &codex(Some(window(10.0, Some(300), Some(HOUR))), None),
        at(MIN),
    )
    .unwrap();
    assert_eq!(served_by(&mut pool, "gpt-5", MIN), "b");
    let status = pool.account_status(&id("a"), at(MIN)).unwrap();
    assert_eq!(status.usage.len(), 1);
    let usage = &status.usage[0];
    assert_eq!(usage.limit.limit_id(), "codex");
    assert_eq!(
        usage.limit.primary.map(|w| w.used_percent.get()),
        Some(10.0)
    );
    assert_eq!(
        usage.limit.secondary.map(|w| w.used_percent.get()),
        Some(97.0)
    );
    assert_eq!(usage.blocked_until, Some(at(DAY)));
    assert_eq!(usage.observed_at, at(MIN));
}

/// A weekly window's last twentieth: 8 h 24 min.
const LAST_TWENTIETH: u64 = 7 * DAY / 20;

#[test]
fn quota_aware_spends_first_what_expires_soonest_and_spreads_the_rest() {
    let mut config = PolicyConfig::default();
    config.strategy = Strategy::QuotaAware;
    let mut pool = pool_with(config, &["a", "b", "c", "d"]);
    let weekly = |used, end| Some(window(used, Some(10_080), Some(end)));
    let short = Some(window(10.0, Some(300), Some(5 * HOUR)));
    // `b` and `c` are in their week's last twentieth (their leftover expires within
    // 8.4 h); `a`'s week ends in 6 days; nothing is known of `d`.
    pool.record_usage(&id("a"), &codex(short, weekly(10.0, 6 * DAY)), at(0))
        .unwrap();
    pool.record_usage(&id("b"), &codex(short, weekly(60.0, 4 * HOUR)), at(0))
        .unwrap();
    pool.record_usage(&id("c"), &codex(short, weekly(30.0, 2 * HOUR)), at(0))
        .unwrap();
    // Soonest end first, for as long as it can serve.
    for _ in 0..3 {
        assert_eq!(served_by(&mut pool, "gpt-5", 1), "c");
    }
    // Past the threshold in its last twentieth it is still spent (what is left expires)...
    pool.record_usage(&id("c"), &codex(short, weekly(97.0, 2 * HOUR)), at(2))
        .unwrap();
    assert_eq!(served_by(&mut pool, "gpt-5", 2), "c");
    // ...until it is full.
    pool.record_usage(&id("c"), &codex(short, weekly(100.0, 2 * HOUR)), at(3))
        .unwrap();
    assert_eq!(served_by(&mut pool, "gpt-5", 3), "b");
    // Nothing else is about to expire: least recently used spreads the rest (every
    // short window keeps rolling). (`c` would be back in a new week after 2 h.)
    pool.disable(&id("b")).unwrap();
    pool.disable(&id("c")).unwrap();
    let mut order = Vec::new();
    for now in 4..8 {
        order.push(served_by(&mut pool, "gpt-5", now));
    }
    assert_eq!(order, ["a", "d", "a", "d"]);
    // As time moves `a` into its last twentieth, it goes first with no report at all.
    let a_expiring = 6 * DAY - LAST_TWENTIETH;
    assert_eq!(served_by(&mut pool, "gpt-5", a_expiring - 1), "a");
    assert_eq!(served_by(&mut pool, "gpt-5", a_expiring - 1), "d");
    assert_eq!(served_by(&mut pool, "gpt-5", a_expiring), "a");
    assert_eq!(served_by(&mut pool, "gpt-5", a_expiring + 1), "a");
    // Affinity still wins over the order.
    pool.disable(&id("a")).unwrap();
    let mut request = Request::new("gpt-5").with_session("s");
    let Selection::Account(bound) = pool.select(&mut request, at(a_expiring + 2)) else {
        panic!("no account");
    };
    pool.enable(&id("a")).unwrap();
    let mut request = Request::new("gpt-5").with_session("s");
    assert_eq!(
        pool.select(&mut request, at(a_expiring + 3)),
        Selection::Account(bound)
    );
    assert_eq!(served_by(&mut pool, "gpt-5", a_expiring + 3), "a");
}

#[test]
fn only_quota_aware_spends_a_window_past_the_margin_and_a_429_ends_that() {
    for (strategy, spends) in [
        (Strategy::LeastRecentlyUsed, false),
        (Strategy::RoundRobin, false),
        (Strategy::Sticky, false),
        (Strategy::QuotaAware, true),
    ] {
        let mut config = PolicyConfig::default();
        config.strategy = strategy;
        let mut pool = pool_with(config, &["a"]);
        let end = DAY;
        // 99.5 %: two more requests (at least a point each) could overflow it.
        let report = codex(None, Some(window(99.5, Some(10_080), Some(end))));
        pool.record_usage(&id("a"), &report, at(0)).unwrap();
        // Before the last twentieth: out for every strategy, until the twentieth starts
        // (quota-aware) or the end (the others).
        let until = if spends { end - LAST_TWENTIETH } else { end };
        assert_eq!(
            pick(&mut pool, "gpt-5", 0),
            Selection::Exhausted {
                retry_after: Duration::from_millis(until)
            },
            "{strategy:?}"
        );
        let now = end - LAST_TWENTIETH;
        let mut request = Request::new("gpt-5");
        let selection = pool.select(&mut request, at(now));
        if !spends {
            assert!(
                matches!(selection, Selection::Exhausted { .. }),
                "{strategy:?}"
            );
            continue;
        }
        assert_eq!(selection, Selection::Account(id("a")));
        pool.consume(&id("a"), at(now)).unwrap();
        // The upstream says no: the window is full, out until it ends (not for the 429's
        // short cooldown).
        let limited = Outcome::RateLimited {
            retry_after: Some(Duration::from_secs(5)),
        };
        assert_eq!(
            pool.report(&mut request, &id("a"), limited, at(now)),
            Decision::ReturnToClient {
                retry_after: Some(Duration::from_millis(LAST_TWENTIETH))
            }
        );
        let status = pool.account_status(&id("a"), at(now)).unwrap();
        let weekly = status.usage[0].limit.secondary.unwrap();
        assert_eq!(weekly.used_percent.get(), 100.0);
    }
}

#[test]
fn an_account_is_left_two_requests_before_its_window_would_overflow() {
    let config = PolicyConfig::default(); // threshold 100: the margin alone
    let mut pool = pool_with(config.clone(), &["a", "b"]);
    let five_hour = |used| codex(Some(window(used, Some(300), Some(5 * HOUR))), None);
    // Nothing learned yet: a request is taken to use a point, so 98 % still fits two...
    pool.record_usage(&id("a"), &five_hour(98.0), at(0))
        .unwrap();
    assert_eq!(served_by(&mut pool, "gpt-5", 0), "a");
    // ...and 99 % does not.
    let mut pool = pool_with(config.clone(), &["a", "b"]);
    pool.record_usage(&id("a"), &five_hour(99.0), at(0))
        .unwrap();
    assert_eq!(served_by(&mut pool, "gpt-5", 0), "b");
    // A new window, then rises of 2, 2 and 4 points: one request uses up to 4 points.
    let six_hour = |used| codex(Some(window(used, Some(360), Some(6 * HOUR))), None);
    let mut now = 1;
    for used in [84.0, 86.0, 88.0] {
        pool.record_usage(&id("a"), &six_hour(used), at(now))
            .unwrap();
        now += 1;
    }
    // 92 + 2 × 4 = 100: still fits.
    pool.record_usage(&id("a"), &six_hour(92.0), at(now))
        .unwrap();
    pool.disable(&id("b")).unwrap();
    assert_eq!(served_by(&mut pool, "gpt-5", now), "a");
    // 92.5 + 2 × 4 > 100: the answer just served and the next request could overflow it.
    pool.record_usage(&id("a"), &six_hour(92.5), at(now + 1))
        .unwrap();
    assert_eq!(
        pick(&mut pool, "gpt-5", now + 1),
        Selection::Exhausted {
            retry_after: Duration::from_millis(6 * HOUR - now - 1)
        }
    );
    // A jump larger than 10 points is someone else's traffic, not one request: the step
    // stays at most 10.
    let mut pool = pool_with(threshold_95(), &["a"]);
    pool.record_usage(&id("a"), &six_hour(10.0), at(0)).unwrap();
    pool.record_usage(&id("a"), &six_hour(70.0), at(1)).unwrap();
    pool.record_usage(&id("a"), &six_hour(79.0), at(2)).unwrap();
    assert_eq!(served_by(&mut pool, "gpt-5", 2), "a"); // 79 + 2 × 10 = 99
    pool.record_usage(&id("a"), &six_hour(80.5), at(3)).unwrap();
    assert!(matches!(
        pick(&mut pool, "gpt-5", 3),
        Selection::Exhausted { .. }
    ));
}

#[test]
fn sticky_stays_on_its_account_until_it_cannot_serve() {
    let mut config = threshold_95();
    config.strategy = Strategy::Sticky;
    config.session_ttl = None;
    let mut pool = pool_with(config, &["a", "b", "c"]);
    for _ in 0..5 {
        assert_eq!(served_by(&mut pool, "gpt-5", 0), "a");
    }
    // Headroom runs low: it moves to the least recently used account and stays there.
    pool.record_usage(
        &id("a"),
        &codex(Some(window(96.0, Some(300), Some(HOUR))), None),
        at(1),
    )
    .unwrap();
    for _ in 0..5 {
        assert_eq!(served_by(&mut pool, "gpt-5", 1), "b");
    }
    // A 429 on `b` moves it on as well; `a` is still over its threshold.
    let mut request = Request::new("gpt-5");
    assert_eq!(
        pool.select(&mut request, at(2)),
        Selection::Account(id("b"))
    );
    let limited = Outcome::RateLimited {
        retry_after: Some(Duration::from_secs(60)),
    };
    assert_eq!(
        pool.report(&mut request, &id("b"), limited, at(2)),
        Decision::Retry
    );
    assert_eq!(
        pool.select(&mut request, at(2)),
        Selection::Account(id("c"))
    );
    assert_eq!(served_by(&mut pool, "gpt-5", 3), "c");
    // After `a`'s reset, sticky does not jump back: `c` still serves.
    assert_eq!(served_by(&mut pool, "gpt-5", HOUR), "c");
}

#[test]
fn a_pinned_request_goes_only_to_its_account() {
    let mut pool = pool_with(threshold_95(), &["a", "b"]);
    let pinned = || Request::new("gpt-5").with_account(id("b"));
    assert_eq!(
        pool.select(&mut pinned(), at(0)),
        Selection::Account(id("b"))
    );
    pool.refund(&id("b"), at(0)).unwrap();
    // The owner over its threshold: the exact wait, never another account.
    pool.record_usage(
        &id("b"),
        &codex(Some(window(99.0, Some(300), Some(HOUR))), None),
        at(0),
    )
    .unwrap();
    assert_eq!(
        pool.select(&mut pinned(), at(MIN)),
        Selection::Exhausted {
            retry_after: Duration::from_millis(HOUR - MIN)
        }
    );
    // A failure on the owner returns with the owner's wait (nothing else may be tried).
    let mut request = pinned();
    assert_eq!(
        pool.select(&mut request, at(HOUR)),
        Selection::Account(id("b"))
    );
    let limited = Outcome::RateLimited {
        retry_after: Some(Duration::from_secs(30)),
    };
    assert_eq!(
        pool.report(&mut request, &id("b"), limited, at(HOUR)),
        Decision::ReturnToClient {
            retry_after: Some(Duration::from_secs(30))
        }
    );
    assert_eq!(pool.select(&mut request, at(HOUR)), Selection::NoAccount);
    // Disabled or removed owner: no account, no wait that would help.
    pool.disable(&id("b")).unwrap();
    assert_eq!(
        pool.select(&mut pinned(), at(2 * HOUR)),
        Selection::NoAccount
    );
    pool.remove(&id("b")).unwrap();
    assert_eq!(
        pool.select(&mut pinned(), at(2 * HOUR)),
        Selection::NoAccount
    );
    // Other requests are unaffected.
    assert_eq!(served_by(&mut pool, "gpt-5", 2 * HOUR), "a");
}

#[test]
fn the_pool_aggregate_follows_its_table() {
    let mut pool = pool_with(threshold_95(), &["a", "b", "c", "d"]);
    pool.record_usage(
        &id("a"),
        &codex(Some(window(96.0, Some(300), Some(3 * HOUR))), None),
        at(0),
    )
    .unwrap(); // at the threshold: counts as 100
    pool.record_usage(
        &id("b"),
        &codex(Some(window(40.0, Some(300), Some(2 * HOUR))), None),
        at(0),
    )
    .unwrap();
    pool.record_usage(
        &id("c"),
        &codex(Some(window(80.0, Some(240), Some(HOUR / 2))), None),
        at(0),
    )
    .unwrap(); // resets before `now` below: counts as 0
    // `d` reported nothing: 0.
    let aggregate = pool.pool_usage(at(HOUR));
    let primary = aggregate.limit("codex").and_then(|l| l.primary).unwrap();
    assert_eq!(primary.used_percent.get(), 35.0); // (100 + 40 + 0 + 0) / 4
    assert_eq!(primary.resets_at, Some(at(2 * HOUR))); // the earliest with use in it
    assert_eq!(primary.window_minutes, Some(300));
    assert!(aggregate.limit("codex").unwrap().secondary.is_none()); // nobody reported one
    // Disabled accounts are not capacity.
    pool.disable(&id("d")).unwrap();
    pool.disable(&id("c")).unwrap();
    let primary = pool
        .pool_usage(at(HOUR))
        .limit("codex")
        .and_then(|l| l.primary)
        .unwrap();
    assert_eq!(primary.used_percent.get(), 70.0);
    // An empty pool says nothing.
    let empty = pool_with(threshold_95(), &[]);
    assert!(empty.pool_usage(at(0)).is_empty());
}

#[test]
fn usage_is_shared_state_and_the_later_report_wins() {
    let mut first = pool_with(threshold_95(), &["a", "b"]);
    first
        .record_usage(
            &id("a"),
            &codex(Some(window(99.0, Some(300), Some(HOUR))), None),
            at(0),
        )
        .unwrap();
    let changes = first.take_changes();
    assert_eq!(changes.accounts.keys().collect::<Vec<_>>(), [&id("a")]);
    let json = serde_json::to_string(&changes).unwrap();
    assert!(
        json.contains(r#""usage":{"codex":{"observed_at":"#),
        "{json}"
    );

    // A restarted or second process merges the file: `a` is blocked there too.
    let mut second = pool_with(threshold_95(), &["a", "b"]);
    let file: PolicyState = serde_json::from_str(&json).unwrap();
    assert_eq!(second.merge_state(&file, at(MIN)).changed, 1);
    assert_eq!(served_by(&mut second, "gpt-5", MIN), "b");
    // Nothing to write back: it learned nothing itself.
    assert!(second.take_changes().accounts.is_empty());
    // Merging the same file again changes nothing.
    assert_eq!(second.merge_state(&file, at(2 * MIN)).changed, 0);

    // A later report (the window was reset early upstream) wins in both directions.
    second
        .record_usage(
            &id("a"),
            &codex(Some(window(5.0, Some(300), Some(6 * HOUR))), None),
            at(3 * MIN),
        )
        .unwrap();
    let mut file = file;
    file.merge(&second.take_changes());
    first.merge_state(&file, at(4 * MIN));
    let mut request = Request::new("gpt-5");
    first.disable(&id("b")).unwrap();
    assert_eq!(
        first.select(&mut request, at(4 * MIN)),
        Selection::Account(id("a"))
    );
    // ...and an older one loses.
    let mut stale = PolicyState::default();
    stale.merge(&changes);
    assert_eq!(first.merge_state(&stale, at(5 * MIN)).changed, 0);
}

#[test]
fn hostile_usage_in_a_shared_file_is_bounded() {
    let mut pool = pool_with(threshold_95(), &["a", "b"]);
    // Junk values read as absent; a future-stamped report is ignored; bad limit ids too.
    let json = format!(
        r#"{{"version":1,"accounts":{{"a":{{"usage":{{
            "codex":{{"observed_at":{now},"primary":{{"used_percent":"NaN"}},"secondary":{{"used_percent":-5}}}},
            "Bad Id":{{"observed_at":{now},"primary":{{"used_percent":100}}}}
        }}}},"b":{{"usage":{{"codex":{{"observed_at":{future},"primary":{{"used_percent":100,"resets_at":{future}}}}}}}}}}}}}"#,
        now = T0,
        future = T0 + 400 * DAY,
    );
    let file: PolicyState = serde_json::from_str(&json).unwrap();
    let report = pool.merge_state(&file, at(0));
    assert!(report.ignored_future >= 1, "{report:?}");
    assert_eq!(served_by(&mut pool, "gpt-5", 0), "a");
    pool.disable(&id("a")).unwrap();
    assert_eq!(served_by(&mut pool, "gpt-5", 0), "b");
    // Thousands of limit ids cannot grow the pool past half its limit table.
    let mut many = String::from(r#"{"version":1,"accounts":{"a":{"usage":{"#);
    for i in 0..2_000 {
        if i > 0 {
            many.push(',');
        }
        many.push_str(&format!(
            r#""l{i}":{{"observed_at":{T0},"primary":{{"used_percent":1,"resets_at":{}}}}}"#,
            T0 + HOUR
        ));
    }
    many.push_str("}}}}");
    let file: PolicyState = serde_json::from_str(&many).unwrap();
    pool.merge_state(&file, at(0));
    let status = pool.account_status(&id("a"), at(0)).unwrap();
    assert!(
        status.usage.len() <= rotation_policy::usage::MAX_LIMITS / 2,
        "{}",
        status.usage.len()
    );
}

#[test]
fn reports_that_bring_no_news_are_not_kept_so_shared_state_settles() {
    let mut pool = pool_with(threshold_95(), &["a"]);
    let five_hour = |used| codex(Some(window(used, Some(300), Some(5 * HOUR))), None);
    pool.record_usage(&id("a"), &five_hour(40.0), at(0))
        .unwrap();
    assert_eq!(pool.take_changes().accounts.len(), 1);
    // Under a point, same reset, same side of the threshold, within a minute: no news.
    for (used, now) in [(40.5, 1_000), (40.9, 30_000), (39.2, 59_999)] {
        pool.record_usage(&id("a"), &five_hour(used), at(now))
            .unwrap();
        assert!(pool.take_changes().accounts.is_empty(), "{used} at {now}");
    }
    assert_eq!(pool_observed(&pool), at(0));
    // Each of these is news.
    let mut now = 60_000;
    pool.record_usage(&id("a"), &five_hour(40.5), at(now))
        .unwrap(); // a minute on
    assert_eq!(pool.take_changes().accounts.len(), 1);
    assert_eq!(pool_observed(&pool), at(now));
    now += 1;
    pool.record_usage(&id("a"), &five_hour(41.5), at(now))
        .unwrap(); // a whole point
    assert_eq!(pool.take_changes().accounts.len(), 1);
    now += 1;
    let moved = codex(Some(window(41.5, Some(300), Some(6 * HOUR))), None);
    pool.record_usage(&id("a"), &moved, at(now)).unwrap(); // a new reset time
    assert_eq!(pool.take_changes().accounts.len(), 1);
    now += 1;
    let mut config = threshold_95();
    config.usage_threshold = 42;
    let mut strict = pool_with(config, &["a"]);
    strict
        .record_usage(&id("a"), &five_hour(41.5), at(now))
        .unwrap();
    strict.take_changes();
    strict
        .record_usage(&id("a"), &five_hour(42.0), at(now + 1))
        .unwrap(); // crosses it
    assert_eq!(strict.take_changes().accounts.len(), 1);
    assert!(matches!(
        pick(&mut strict, "gpt-5", now + 1),
        Selection::Exhausted { .. }
    ));
}

fn pool_observed(pool: &Pool) -> Timestamp {
    pool.account_status(&id("a"), at(0)).unwrap().usage[0].observed_at
}

#[test]
fn requests_in_flight_count_against_the_margin() {
    let mut pool = pool_with(PolicyConfig::default(), &["a", "b"]);
    pool.disable(&id("b")).unwrap();
    let window_at = |used| codex(Some(window(used, Some(300), Some(5 * HOUR))), None);
    for (now, used) in [(0, 80.0), (1, 84.0)] {
        pool.record_usage(&id("a"), &window_at(used), at(now))
            .unwrap(); // a step of 4
    }
    pool.record_usage(&id("a"), &window_at(88.0), at(2))
        .unwrap();
    // 88 + 2 × 4 ≤ 100; with one request on its way, 88 + 3 × 4 = 100 still fits...
    let mut first = Request::new("gpt-5");
    assert_eq!(pool.select(&mut first, at(3)), Selection::Account(id("a")));
    pool.consume(&id("a"), at(3)).unwrap();
    let mut second = Request::new("gpt-5");
    assert_eq!(pool.select(&mut second, at(3)), Selection::Account(id("a")));
    pool.consume(&id("a"), at(3)).unwrap();
    // ...with two, 88 + 4 × 4 does not: no third until one answers.
    assert!(matches!(
        pick(&mut pool, "gpt-5", 3),
        Selection::Exhausted { .. }
    ));
    pool.report(&mut first, &id("a"), Outcome::Success, at(4));
    assert_eq!(served_by(&mut pool, "gpt-5", 4), "a");
}

#[test]
fn a_429_from_a_spent_window_does_not_use_up_an_attempt() {
    let mut pool = pool_with(PolicyConfig::default(), &["a", "b", "c", "d"]); // 3 attempts
    let mut request = Request::new("gpt-5");
    let limited = Outcome::RateLimited {
        retry_after: Some(Duration::from_secs(60)),
    };
    let full = codex(Some(window(100.0, Some(300), Some(HOUR))), None);
    // Three accounts answer 429 with their 5-hour window reported full (the upstream's
    // `usage_limit_reached`): the request goes on to the fourth.
    for expected in ["a", "b", "c"] {
        assert_eq!(
            pool.select(&mut request, at(0)),
            Selection::Account(id(expected))
        );
        pool.record_usage(&id(expected), &full, at(0)).unwrap();
        assert_eq!(
            pool.report(&mut request, &id(expected), limited, at(0)),
            Decision::Retry
        );
    }
    assert_eq!(
        pool.select(&mut request, at(0)),
        Selection::Account(id("d"))
    );
    // Each account at most once: after `d`, nothing is left to try.
    pool.record_usage(&id("d"), &full, at(0)).unwrap();
    assert_eq!(
        pool.report(&mut request, &id("d"), limited, at(0)),
        Decision::ReturnToClient {
            retry_after: Some(Duration::from_millis(HOUR))
        }
    );
    let status = pool.status(at(0));
    assert_eq!((status.counters.requests, status.counters.retries), (1, 3));
    // A 429 that says nothing of usage (a per-minute limit) uses an attempt up, like any
    // failure: one bad request does not go round the whole pool.
    let mut pool = pool_with(PolicyConfig::default(), &["a", "b", "c", "d"]);
    let mut request = Request::new("gpt-5");
    for expected in ["a", "b", "c"] {
        assert_eq!(
            pool.select(&mut request, at(0)),
            Selection::Account(id(expected))
        );
        pool.report(&mut request, &id(expected), limited, at(0));
    }
    assert_eq!(pool.select(&mut request, at(0)), Selection::NoAccount);
}

#[test]
fn a_full_window_stays_full_until_its_end() {
    let mut config = PolicyConfig::default();
    config.strategy = Strategy::QuotaAware;
    let mut pool = pool_with(config, &["a"]);
    let end = 2 * HOUR; // well inside the week's last twentieth
    let weekly = |used| codex(None, Some(window(used, Some(10_080), Some(end))));
    pool.record_usage(&id("a"), &weekly(99.2), at(0)).unwrap();
    assert_eq!(served_by(&mut pool, "gpt-5", 0), "a"); // spent: it expires anyway
    // A report of 100 % a moment later is news (the window is full), though under a point.
    pool.record_usage(&id("a"), &weekly(100.0), at(5)).unwrap();
    assert!(matches!(
        pick(&mut pool, "gpt-5", 5),
        Selection::Exhausted { .. }
    ));
    // A report made before the request that filled it (lagging) does not empty it again.
    pool.record_usage(&id("a"), &weekly(99.5), at(6)).unwrap();
    assert_eq!(
        pick(&mut pool, "gpt-5", 6),
        Selection::Exhausted {
            retry_after: Duration::from_millis(end - 6)
        }
    );
    // Nor does one the 429 rule filled: a 429 marks it full, and a lagging report keeps it.
    let mut pool = pool_with(
        {
            let mut c = PolicyConfig::default();
            c.strategy = Strategy::QuotaAware;
            c
        },
        &["a"],
    );
    pool.record_usage(&id("a"), &weekly(99.5), at(0)).unwrap();
    let mut request = Request::new("gpt-5");
    assert_eq!(
        pool.select(&mut request, at(0)),
        Selection::Account(id("a"))
    );
    let limited = Outcome::RateLimited {
        retry_after: Some(Duration::from_secs(1)),
    };
    pool.report(&mut request, &id("a"), limited, at(1));
    pool.record_usage(&id("a"), &weekly(99.5), at(2)).unwrap();
    assert_eq!(
        pick(&mut pool, "gpt-5", 2_000),
        Selection::Exhausted {
            retry_after: Duration::from_millis(end - 2_000)
        }
    );
    // The fill is a newer report: it wins a merge against the one it corrected.
    let state = pool.export_state();
    let usage = &state.accounts[&id("a")].usage["codex"];
    assert_eq!(usage.secondary.unwrap().used_percent.get(), 100.0);
    assert!(usage.observed_at > at(0));
}

#[test]
fn quota_aware_keeps_the_reserve_a_threshold_below_100_sets() {
    let mut config = PolicyConfig::default();
    config.strategy = Strategy::QuotaAware;
    config.usage_threshold = 80;
    let mut pool = pool_with(config, &["a"]);
    let end = 6 * HOUR; // in the week's last twentieth
    pool.record_usage(
        &id("a"),
        &codex(None, Some(window(85.0, Some(10_080), Some(end)))),
        at(0),
    )
    .unwrap();
    assert_eq!(
        pick(&mut pool, "gpt-5", 0),
        Selection::Exhausted {
            retry_after: Duration::from_millis(end)
        }
    );
}

#[test]
fn no_report_keeps_an_account_out_longer_than_8_days() {
    let mut pool = pool_with(PolicyConfig::default(), &["a"]);
    // A 400-day window (as a broken header or a hostile file might say), full.
    let report = codex(Some(window(100.0, Some(576_000), Some(300 * DAY))), None);
    pool.record_usage(&id("a"), &report, at(0)).unwrap();
    assert_eq!(
        pick(&mut pool, "gpt-5", 0),
        Selection::Exhausted {
            retry_after: Duration::from_millis(8 * DAY)
        }
    );
}

#[test]
fn a_stale_report_does_not_rename_a_metered_limit() {
    let mut pool = pool_with(PolicyConfig::default(), &["a", "b"]);
    let metered = |name: &str, used| {
        report(
            "codex_x",
            Some(name),
            Some(window(used, Some(300), Some(HOUR))),
            None,
        )
    };
    pool.record_usage(&id("b"), &metered("m-new", 100.0), at(10 * MIN))
        .unwrap();
    assert!(matches!(
        pool.select(
            &mut Request::new("m-new").with_account(id("b")),
            at(10 * MIN)
        ),
        Selection::Exhausted { .. }
    ));
    // Another process's older report of `a`, naming the limit as it was called before.
    let old = format!(
        r#"{{"version":1,"accounts":{{"a":{{"usage":{{"codex_x":{{"observed_at":{},"limit_name":"m-old","primary":{{"used_percent":5,"resets_at":{}}}}}}}}}}}}}"#,
        T0 + 9 * MIN,
        T0 + HOUR
    );
    pool.merge_state(&serde_json::from_str(&old).unwrap(), at(10 * MIN));
    // `m-new` still counts against `codex_x`: `b` stays out of it.
    pool.disable(&id("a")).unwrap();
    assert!(matches!(
        pick(&mut pool, "m-new", 10 * MIN),
        Selection::Exhausted { .. }
    ));
    // Names that alternate from report to report re-map at most once a minute.
    pool.enable(&id("a")).unwrap();
    pool.record_usage(&id("a"), &metered("m-other", 5.0), at(10 * MIN + 1))
        .unwrap();
    assert!(matches!(
        pick(&mut pool, "m-new", 10 * MIN + 1),
        Selection::Account(_)
    ));
    pool.disable(&id("a")).unwrap();
    assert!(matches!(
        pick(&mut pool, "m-new", 10 * MIN + 2),
        Selection::Exhausted { .. }
    ));
}

#[test]
fn numbers_no_f64_holds_in_a_shared_file_are_absent_fields() {
    let json = r#"{"version":1,"accounts":{"a":{"health":40,"health_at":5,"usage":{
        "codex":{"observed_at":-1,"primary":{"used_percent":1e999},"secondary":{"used_percent":50,"window_minutes":1e999,"resets_at":-3}},
        "codex_y":{"observed_at":7,"limit_name":1e999,"primary":{"used_percent":"x"}}
    }}}}"#;
    let state: PolicyState = serde_json::from_str(json).unwrap();
    let account = &state.accounts[&id("a")];
    assert_eq!(account.health, 40); // the rest of the document is read
    let codex = &account.usage["codex"];
    assert_eq!(codex.observed_at, Timestamp::ZERO);
    assert_eq!(codex.primary, None);
    let secondary = codex.secondary.unwrap();
    assert_eq!(secondary.used_percent.get(), 50.0);
    assert_eq!(
        (secondary.window_minutes, secondary.resets_at),
        (None, None)
    );
    assert_eq!(account.usage["codex_y"].limit_name, None);
    // The same through a `serde_json::Value` (how some callers read).
    let value: serde_json::Value = serde_json::from_str(
        r#"{"accounts":{"a":{"usage":{"codex":{"observed_at":3,"primary":{"used_percent":120}}}}}}"#,
    )
    .unwrap();
    let state: PolicyState = serde_json::from_value(value).unwrap();
    let primary = state.accounts[&id("a")].usage["codex"].primary.unwrap();
    assert_eq!(primary.used_percent.get(), 100.0);
}
