//! Scenario tests for `Pool`: readable, hand-checked cases of the rules the crate docs state
//! (the property test in `state_machine.rs` covers random sequences).

use std::time::Duration;

use rotation_policy::{
    AccountId, CooldownReason, Decision, DisabledReason, Outcome, PolicyConfig, PolicyError, Pool,
    Request, Selection, Strategy, Timestamp, TokenBucket,
};

fn id(s: &str) -> AccountId {
    AccountId::new(s).unwrap()
}

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn quiet_config() -> PolicyConfig {
    let mut c = PolicyConfig::default();
    c.jitter_percent = 0;
    c
}

fn pool_of(config: PolicyConfig, ids: &[&str]) -> Pool {
    let mut pool = Pool::new(config, 0).unwrap();
    for i in ids {
        pool.add(id(i)).unwrap();
    }
    pool
}

fn pick(pool: &mut Pool, family: &str, now: u64) -> Selection {
    pool.select(&mut Request::new(family), at(now))
}

#[test]
fn exhausted_retry_after_is_the_exact_earliest_availability() {
    let mut pool = pool_of(quiet_config(), &["a", "b", "c"]);
    let waits = [("a", 40_000), ("b", 12_345), ("c", 90_000)];
    for (name, ms) in waits {
        let mut r = Request::new("gpt-5");
        assert_eq!(pool.select(&mut r, at(1_000)), Selection::Account(id(name)));
        let limited = Outcome::RateLimited {
            retry_after: Some(Duration::from_millis(ms)),
        };
        pool.report(&mut r, &id(name), limited, at(1_000));
    }
    assert_eq!(
        pick(&mut pool, "gpt-5", 1_000),
        Selection::Exhausted {
            retry_after: Duration::from_millis(12_345)
        }
    );
    assert_eq!(
        pick(&mut pool, "gpt-5", 5_000),
        Selection::Exhausted {
            retry_after: Duration::from_millis(8_345)
        }
    );
    // Exactly at the boundary the account is usable again.
    assert_eq!(
        pick(&mut pool, "gpt-5", 13_345),
        Selection::Account(id("b"))
    );
    // Other families were never limited.
    assert!(matches!(
        pick(&mut pool, "o4-mini", 13_345),
        Selection::Account(_)
    ));
}

#[test]
fn retry_after_is_clamped_and_missing_one_backs_off_exponentially() {
    let mut c = quiet_config();
    c.min_cooldown = Duration::from_secs(2);
    c.max_cooldown = Duration::from_secs(60);
    c.rate_limit_backoff = Duration::from_secs(3);
    let mut pool = pool_of(c, &["a"]);
    let mut limited_for = |retry_after: Option<Duration>, now: u64| {
        let mut r = Request::new("gpt-5");
        assert!(matches!(
            pool.select(&mut r, at(now)),
            Selection::Account(_)
        ));
        pool.report(
            &mut r,
            &id("a"),
            Outcome::RateLimited { retry_after },
            at(now),
        );
        match pool.select(&mut Request::new("gpt-5"), at(now)) {
            Selection::Exhausted { retry_after } => retry_after.as_millis() as u64,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(limited_for(Some(Duration::ZERO), 0), 2_000); // raised to min
    assert_eq!(limited_for(Some(Duration::from_secs(3600)), 2_000), 60_000); // cut to max
    let t = 62_000;
    assert_eq!(limited_for(None, t), 3_000 * 4); // third in a row: 3 s × 2²
    assert_eq!(limited_for(None, t + 12_000), 24_000);
    assert_eq!(limited_for(None, t + 36_000), 48_000);
    assert_eq!(limited_for(None, t + 84_000), 60_000); // capped
}

#[test]
fn jitter_is_seeded_bounded_and_reproducible() {
    let run = |seed: u64| {
        let mut c = PolicyConfig::default();
        c.jitter_percent = 50;
        c.rate_limit_backoff = Duration::from_secs(10);
        let mut pool = Pool::new(c, seed).unwrap();
        pool.add(id("a")).unwrap();
        let mut r = Request::new("gpt-5");
        pool.select(&mut r, at(0));
        let limited = Outcome::RateLimited { retry_after: None };
        pool.report(&mut r, &id("a"), limited, at(0));
        match pick(&mut pool, "gpt-5", 0) {
            Selection::Exhausted { retry_after } => retry_after,
            other => panic!("{other:?}"),
        }
    };
    let waits: Vec<Duration> = (0..20).map(run).collect();
    for w in &waits {
        assert!(
            *w >= Duration::from_secs(10) && *w <= Duration::from_secs(15),
            "{w:?}"
        );
    }
    assert_eq!(waits, (0..20).map(run).collect::<Vec<_>>());
    assert!(
        waits.iter().any(|w| *w != waits[0]),
        "jitter must vary with the seed"
    );
}

#[test]
fn failure_burst_cools_the_account_but_isolated_errors_do_not() {
    let mut c = quiet_config();
    c.failure_burst = 3;
    c.failure_window = Duration::from_secs(10);
    c.failure_cooldown = Duration::from_secs(30);
    c.max_attempts = 1;
    let mut pool = pool_of(c, &["a"]);
    let mut fail = |now: u64| {
        let mut r = Request::new("gpt-5");
        assert!(matches!(
            pool.select(&mut r, at(now)),
            Selection::Account(_)
        ));
        pool.report(&mut r, &id("a"), Outcome::ServerError, at(now))
    };
    // Spread out: no burst.
    fail(0);
    fail(20_000);
    fail(40_000);
    // Close together: burst on the third.
    fail(41_000);
    assert_eq!(
        fail(42_000),
        Decision::ReturnToClient {
            retry_after: Some(Duration::from_secs(30))
        }
    );
    let status = pool.account_status(&id("a"), at(42_000)).unwrap();
    assert_eq!(status.cooldown_reason, Some(CooldownReason::FailureBurst));
    assert_eq!(status.cooldown_until, Some(at(72_000)));
}

#[test]
fn unauthorized_needs_refresh_then_disables_after_the_limit() {
    let mut c = quiet_config();
    c.disable_after_unauthorized = 2;
    let mut pool = pool_of(c, &["a", "b"]);
    let mut r = Request::new("gpt-5");
    assert_eq!(pool.select(&mut r, at(0)), Selection::Account(id("a")));
    assert_eq!(
        pool.report(&mut r, &id("a"), Outcome::Unauthorized, at(0)),
        Decision::Retry
    );
    let s = pool.account_status(&id("a"), at(0)).unwrap();
    assert!(s.needs_refresh);
    assert_eq!(s.cooldown_reason, Some(CooldownReason::Unauthorized));
    pool.mark_refreshed(&id("a"), at(10)).unwrap();
    let s = pool.account_status(&id("a"), at(10)).unwrap();
    assert!(!s.needs_refresh && s.cooldown_until.is_none());
    // Second 401 in a row (no success between): disabled.
    pool.disable(&id("b")).unwrap();
    let mut r = Request::new("gpt-5");
    assert_eq!(pool.select(&mut r, at(20)), Selection::Account(id("a")));
    pool.report(&mut r, &id("a"), Outcome::Unauthorized, at(20));
    pool.enable(&id("b")).unwrap();
    let s = pool.account_status(&id("a"), at(20)).unwrap();
    assert_eq!(s.disabled, Some(DisabledReason::Unauthorized));
    assert_eq!(
        pick(&mut pool, "gpt-5", 10_000_000),
        Selection::Account(id("b"))
    );
    pool.enable(&id("a")).unwrap();
    assert_eq!(
        pool.account_status(&id("a"), at(20)).unwrap().disabled,
        None
    );
}

#[test]
fn attempt_budget_stops_a_request_replaying_across_the_pool() {
    let mut c = quiet_config();
    c.max_attempts = 2;
    let mut pool = pool_of(c, &["a", "b", "c", "d"]);
    let mut r = Request::new("gpt-5");
    let mut tried = Vec::new();
    let decision = loop {
        let Selection::Account(account) = pool.select(&mut r, at(0)) else {
            panic!("pool has usable accounts");
        };
        tried.push(account.clone());
        match pool.report(&mut r, &account, Outcome::Timeout, at(0)) {
            Decision::Retry => continue,
            other => break other,
        }
    };
    assert_eq!(tried, vec![id("a"), id("b")]);
    assert_eq!(decision, Decision::ReturnToClient { retry_after: None });
    // A caller that ignores the decision still gets no third account.
    assert_eq!(pool.select(&mut r, at(0)), Selection::NoAccount);
}

#[test]
fn wait_decision_when_the_next_account_is_close() {
    let mut c = quiet_config();
    c.max_wait = Duration::from_secs(5);
    let mut pool = pool_of(c, &["a", "b"]);
    // b is limited for 3 s.
    let mut r = Request::new("gpt-5");
    pool.select(&mut r, at(0));
    pool.report(&mut r, &id("a"), Outcome::Success, at(0));
    let mut r = Request::new("gpt-5");
    assert_eq!(pool.select(&mut r, at(0)), Selection::Account(id("b")));
    let three = Outcome::RateLimited {
        retry_after: Some(Duration::from_secs(3)),
    };
    assert_eq!(pool.report(&mut r, &id("b"), three, at(0)), Decision::Retry);
    // Now a fails with a long limit: the untried account left is b, usable in 3 s... but b
    // was tried by *this* request, so a fresh request sees the wait.
    let mut fresh = Request::new("gpt-5");
    assert_eq!(
        pool.select(&mut fresh, at(100)),
        Selection::Account(id("a"))
    );
    let long = Outcome::RateLimited {
        retry_after: Some(Duration::from_secs(60)),
    };
    assert_eq!(
        pool.report(&mut fresh, &id("a"), long, at(100)),
        Decision::Wait(Duration::from_millis(2_900))
    );
    assert_eq!(
        pool.select(&mut fresh, at(3_000)),
        Selection::Account(id("b"))
    );
}

#[test]
fn session_affinity_holds_while_usable_and_moves_when_not() {
    let mut c = quiet_config();
    c.session_ttl = Some(Duration::from_secs(60));
    let mut pool = pool_of(c, &["a", "b", "c"]);
    let session = |pool: &mut Pool, now: u64| {
        pool.select(&mut Request::new("gpt-5").with_session("s1"), at(now))
    };
    assert_eq!(session(&mut pool, 0), Selection::Account(id("a")));
    // Other traffic would go elsewhere (LRU), the session stays.
    assert_eq!(pick(&mut pool, "gpt-5", 1), Selection::Account(id("b")));
    assert_eq!(session(&mut pool, 2), Selection::Account(id("a")));
    assert_eq!(session(&mut pool, 3), Selection::Account(id("a")));
    // a becomes unusable: the session moves and stays on its new account.
    pool.disable(&id("a")).unwrap();
    assert_eq!(session(&mut pool, 4), Selection::Account(id("c")));
    pool.enable(&id("a")).unwrap();
    assert_eq!(session(&mut pool, 5), Selection::Account(id("c")));
    // After the TTL without requests the binding lapses.
    assert_eq!(pool.status(at(5)).sessions, 1);
    assert_eq!(pool.status(at(60_005)).sessions, 0);
    let status = pool.status(at(0));
    assert_eq!(status.counters.rotations, 1);
}

#[test]
fn round_robin_cycles_in_insertion_order_skipping_unusable() {
    let mut c = quiet_config();
    c.strategy = Strategy::RoundRobin;
    let mut pool = pool_of(c, &["a", "b", "c"]);
    pool.disable(&id("b")).unwrap();
    let picks: Vec<Selection> = (0..4).map(|t| pick(&mut pool, "gpt-5", t)).collect();
    let want: Vec<Selection> = ["a", "c", "a", "c"]
        .iter()
        .map(|s| Selection::Account(id(s)))
        .collect();
    assert_eq!(picks, want);
}

#[test]
fn health_weighted_prefers_the_healthy_account() {
    let mut c = quiet_config();
    c.strategy = Strategy::HealthWeighted;
    c.failure_burst = 10;
    let mut pool = pool_of(c, &["a", "b"]);
    let mut r = Request::new("gpt-5");
    assert_eq!(pool.select(&mut r, at(0)), Selection::Account(id("a")));
    pool.report(&mut r, &id("a"), Outcome::ServerError, at(0));
    // a is usable (no burst yet) but less healthy (80 vs 100): b is picked next, and over
    // many picks they share in proportion to health + 1, 81 : 101.
    assert_eq!(pick(&mut pool, "gpt-5", 1), Selection::Account(id("b")));
    let (mut on_a, mut on_b) = (0u32, 0u32);
    for t in 2..1822 {
        match pick(&mut pool, "gpt-5", t) {
            Selection::Account(x) if x == id("a") => on_a += 1,
            Selection::Account(_) => on_b += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(on_b > on_a);
    assert!((805..=815).contains(&on_a), "a: {on_a}, b: {on_b}");
    assert!((1005..=1015).contains(&on_b), "a: {on_a}, b: {on_b}");
}

#[test]
fn one_refund_rule_and_never_above_capacity() {
    let mut c = quiet_config();
    c.bucket = Some(TokenBucket::new(2, Duration::from_secs(10)));
    let mut pool = pool_of(c, &["a"]);
    let tokens = |pool: &Pool| pool.account_status(&id("a"), at(0)).unwrap().tokens;
    for outcome in [
        Outcome::RateLimited { retry_after: None },
        Outcome::Unauthorized,
        Outcome::Forbidden,
        Outcome::ServerError,
        Outcome::NetworkError,
        Outcome::Timeout,
    ] {
        let mut pool = pool.clone();
        pool.consume(&id("a"), at(0)).unwrap();
        assert_eq!(tokens(&pool), Some(1));
        pool.report(&mut Request::new("gpt-5"), &id("a"), outcome, at(0));
        assert_eq!(tokens(&pool), Some(2), "{outcome:?} refunds");
        // A second report has nothing left to refund.
        pool.report(&mut Request::new("gpt-5"), &id("a"), outcome, at(0));
        assert_eq!(tokens(&pool), Some(2), "{outcome:?} refunds once");
    }
    pool.consume(&id("a"), at(0)).unwrap();
    pool.report(
        &mut Request::new("gpt-5"),
        &id("a"),
        Outcome::Success,
        at(0),
    );
    assert_eq!(tokens(&pool), Some(1), "success keeps the token spent");
    assert!(!pool.refund(&id("a"), at(0)).unwrap(), "nothing in flight");
    assert_eq!(tokens(&pool), Some(1));
}

#[test]
fn time_going_backwards_is_treated_as_the_latest_time() {
    let mut pool = pool_of(quiet_config(), &["a"]);
    let mut r = Request::new("gpt-5");
    pool.select(&mut r, at(100_000));
    let limited = Outcome::RateLimited {
        retry_after: Some(Duration::from_secs(10)),
    };
    pool.report(&mut r, &id("a"), limited, at(100_000));
    // A clock stepped back by a minute does not lengthen the wait.
    assert_eq!(
        pick(&mut pool, "gpt-5", 40_000),
        Selection::Exhausted {
            retry_after: Duration::from_secs(10)
        }
    );
    assert_eq!(
        pick(&mut pool, "gpt-5", 110_000),
        Selection::Account(id("a"))
    );
}

#[test]
fn families_past_the_limit_share_the_overflow_family() {
    let mut c = quiet_config();
    c.max_families = 1;
    let mut pool = pool_of(c, &["a"]);
    let mut r = Request::new("model-x");
    pool.select(&mut r, at(0));
    let limited = Outcome::RateLimited {
        retry_after: Some(Duration::from_secs(5)),
    };
    pool.report(&mut r, &id("a"), limited, at(0));
    assert!(matches!(
        pick(&mut pool, "model-x", 0),
        Selection::Exhausted { .. }
    ));
    let mut r = Request::new("model-y");
    pool.select(&mut r, at(0));
    pool.report(&mut r, &id("a"), limited, at(0));
    assert!(matches!(
        pick(&mut pool, "model-z", 0),
        Selection::Exhausted { .. }
    ));
    let names: Vec<String> = pool.status(at(0)).accounts[0]
        .family_cooldowns
        .iter()
        .map(|f| f.family.clone())
        .collect();
    assert_eq!(names, ["model-x", "*"]);
}

#[test]
fn removed_accounts_lose_their_sessions_and_reports_only_decide() {
    let mut c = quiet_config();
    c.session_ttl = Some(Duration::from_secs(60));
    let mut pool = pool_of(c, &["a", "b"]);
    let mut r = Request::new("gpt-5").with_session("s");
    assert_eq!(pool.select(&mut r, at(0)), Selection::Account(id("a")));
    pool.remove(&id("a")).unwrap();
    pool.add(id("a2")).unwrap(); // reuses a's slot
    assert_eq!(
        pool.report(&mut r, &id("a"), Outcome::ServerError, at(0)),
        Decision::Retry
    );
    assert_eq!(pool.select(&mut r, at(0)), Selection::Account(id("b")));
    // The session does not follow the slot to the new account.
    let s = pool.select(&mut Request::new("gpt-5").with_session("s"), at(1));
    assert_eq!(s, Selection::Account(id("b")));
    assert!(matches!(
        pool.consume(&id("a"), at(1)),
        Err(PolicyError::UnknownAccount { .. })
    ));
}

#[test]
fn status_serializes_without_emails_and_errors_read_well() {
    let mut pool = pool_of(quiet_config(), &["acct-1"]);
    let mut r = Request::new("gpt-5");
    pool.select(&mut r, at(0));
    pool.consume(&id("acct-1"), at(0)).unwrap();
    let limited = Outcome::RateLimited {
        retry_after: Some(Duration::from_secs(30)),
    };
    pool.report(&mut r, &id("acct-1"), limited, at(0));
    let json = serde_json::to_value(pool.status(at(1_000))).unwrap();
    insta::assert_json_snapshot!("status", json);

    let mut c = PolicyConfig::default();
    c.bucket = Some(TokenBucket::new(0, Duration::from_secs(1)));
    let messages = vec![
        Pool::new(c, 0).unwrap_err().to_string(),
        AccountId::new("alice@example.com").unwrap_err().to_string(),
        pool.add(id("acct-1")).unwrap_err().to_string(),
        pool.remove(&id("nope")).unwrap_err().to_string(),
    ];
    assert!(
        !messages.iter().any(|m| m.contains("alice")),
        "ids with @ are not echoed"
    );
    insta::assert_yaml_snapshot!("error_messages", messages);
}

#[test]
fn health_weighted_shares_traffic_by_health_without_starving_anyone() {
    // `good` always succeeds, `bad` always fails with a 5xx (bursts never cool it down here),
    // so `bad` sinks to health 0 at once. Health-weighted picking then gives it about one
    // first attempt in 102 (weights 101 : 1) — little, but not none.
    let mut config = quiet_config();
    config.strategy = Strategy::HealthWeighted;
    config.bucket = None;
    config.session_ttl = None;
    config.failure_burst = 1_000_000;
    let mut pool = pool_of(config, &["good", "bad"]);
    let requests = 10_200u64;
    let mut first_on_bad = 0u64;
    for i in 0..requests {
        let mut request = Request::new("gpt-5");
        let mut first = true;
        // Bounded: max_attempts is 3.
        for _ in 0..3 {
            let Selection::Account(account) = pool.select(&mut request, at(i)) else {
                panic!("no account for request {i}");
            };
            if first && account.as_str() == "bad" {
                first_on_bad += 1;
            }
            first = false;
            let outcome = if account.as_str() == "good" {
                Outcome::Success
            } else {
                Outcome::ServerError
            };
            if pool.report(&mut request, &account, outcome, at(i)) != Decision::Retry {
                break;
            }
        }
    }
    let status = pool.status(at(requests));
    assert_eq!(status.accounts[1].health, 0);
    assert_eq!(
        status.counters.outcomes.success, requests,
        "every request served"
    );
    // Expected share 1/102 of 10,200 = 100 (a few more while `bad` was still healthy).
    assert!(
        (100..=110).contains(&first_on_bad),
        "bad got {first_on_bad} first attempts"
    );
}
