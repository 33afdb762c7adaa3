//! Regression tests for disagreements between the pool's quota behaviour and its documented
//! rules, found by the state-machine test against the reference model (`tests/model`) and by
//! reading the rules next to it. Each test states the documented rule it checks and the
//! sequence that broke it. A test of a bug not fixed yet is ignored (`#[ignore = "pool bug:
//! …"]`) and has a switch in `tests/model/mod.rs` (`pool_bugs`) that makes the model copy the
//! pool meanwhile; when the fix lands, remove the `#[ignore]` and the switch, so the property
//! test checks the documented rule from then on.

use std::time::Duration;

use rotation_policy::usage::{LimitUsage, Percent, UsageReport, UsageWindow};
use rotation_policy::{
    AccountId, AccountState, Outcome, PolicyConfig, PolicyState, Pool, Request, Selection,
    Strategy, Timestamp, UsageState,
};

const T0: u64 = 1_700_000_000_000;
const MINUTE: u64 = 60_000;
const DAY: u64 = 24 * 60 * MINUTE;

fn id(s: &str) -> AccountId {
    AccountId::new(s).unwrap()
}

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

/// A pool of `ids` with `strategy`, no pacing and no session affinity.
fn pool_of(strategy: Strategy, ids: &[&str]) -> Pool {
    let mut config = PolicyConfig::default();
    config.strategy = strategy;
    config.bucket = None;
    config.session_ttl = None;
    let mut pool = Pool::new(config, 0).unwrap();
    for i in ids {
        pool.add(id(i)).unwrap();
    }
    pool
}

fn window(percent: f64) -> UsageWindow {
    UsageWindow::new(Percent::new(percent).unwrap())
}

/// A report of the default limit `codex`.
fn codex(primary: Option<UsageWindow>, secondary: Option<UsageWindow>) -> UsageReport {
    let mut limit = LimitUsage::new("codex").unwrap();
    limit.primary = primary;
    limit.secondary = secondary;
    let mut report = UsageReport::default();
    report.push(limit);
    report
}

/// Selects for a new `gpt-5` request at `now` and reports a success.
fn serve(pool: &mut Pool, request: Request, now: u64) -> Selection {
    let mut request = request;
    let selection = pool.select(&mut request, at(now));
    if let Selection::Account(account) = &selection {
        pool.report(&mut request, account, Outcome::Success, at(now));
    }
    selection
}

/// `Strategy::Sticky` "stays on the account it picked last for the model family while that
/// account is usable". A request pinned to an account (`Request::with_account`) is not a
/// pick of the strategy — only that account may serve it — just as a session's bound
/// account is not (a session's hand-out leaves the sticky account alone). Sequence: sticky
/// pool of `a`, `b`; a plain request gets `a`; a request pinned to `b` gets `b`; the next
/// plain request should get `a` again (usable all along). A pool that moves the sticky
/// account on a pinned hand-out gives `b`: every continued conversation would drag new
/// traffic to its account, which undoes what the strategy is for (one account's windows
/// used up at a time).
#[test]
fn a_pinned_request_does_not_move_the_sticky_account() {
    let mut pool = pool_of(Strategy::Sticky, &["a", "b"]);
    assert_eq!(
        serve(&mut pool, Request::new("gpt-5"), T0),
        Selection::Account(id("a"))
    );
    assert_eq!(
        serve(&mut pool, Request::new("gpt-5").with_account(id("b")), T0),
        Selection::Account(id("b"))
    );
    assert_eq!(
        serve(&mut pool, Request::new("gpt-5"), T0),
        Selection::Account(id("a")),
        "the pinned request moved the sticky account"
    );
}

/// The same for `Strategy::RoundRobin`: "the next usable account after the one picked last
/// for the same model family". Sequence: round robin over `a`, `b`, `c`; a plain request
/// gets `a`; a request pinned to `c` gets `c`; the next plain request should get `b` (the
/// next after the last pick, `a`). A pool that moves the cursor on a pinned hand-out gives
/// `a`: the cursor went to `c`, so `b` was skipped.
#[test]
fn a_pinned_request_does_not_move_the_round_robin_cursor() {
    let mut pool = pool_of(Strategy::RoundRobin, &["a", "b", "c"]);
    assert_eq!(
        serve(&mut pool, Request::new("gpt-5"), T0),
        Selection::Account(id("a"))
    );
    assert_eq!(
        serve(&mut pool, Request::new("gpt-5").with_account(id("c")), T0),
        Selection::Account(id("c"))
    );
    assert_eq!(
        serve(&mut pool, Request::new("gpt-5"), T0),
        Selection::Account(id("b")),
        "the pinned request moved the round-robin cursor"
    );
}

/// `Strategy::QuotaAware`: "an account whose long usage window (the weekly one) is in its
/// last twentieth (8.4 hours of a week) goes first, soonest end first; … otherwise the least
/// recently used". A window whose end has passed has started over: it is not in its last
/// twentieth any more, so nothing of it is about to expire. Sequence: at T0, `a` and `b`
/// report their weekly window 10 % used, `a`'s resetting at T0 + 1 s, `b`'s at T0 + 1 h:
/// both are in their last twentieth and `a`'s ends first, so `a` serves. At T0 + 2 s `a`'s
/// week has ended and `b`'s still ends within the hour: `b` should be picked. A pool that
/// takes an account's order key when it indexes the account and does not renew it as time
/// passes picks `a` again (its key still says "ends at T0 + 1 s"), so an account whose report
/// is stale goes first.
#[test]
fn quota_aware_ranks_a_window_that_already_reset_last() {
    let mut pool = pool_of(Strategy::QuotaAware, &["a", "b"]);
    let weekly = |ends: u64| {
        codex(
            None,
            Some(
                window(10.0)
                    .with_window_minutes(10_080)
                    .with_resets_at(at(ends)),
            ),
        )
    };
    pool.record_usage(&id("a"), &weekly(T0 + 1_000), at(T0))
        .unwrap();
    pool.record_usage(&id("b"), &weekly(T0 + 60 * MINUTE), at(T0))
        .unwrap();
    assert_eq!(
        serve(&mut pool, Request::new("gpt-5"), T0),
        Selection::Account(id("a")),
        "the week that ends first is spent first"
    );
    assert_eq!(
        pool.select(&mut Request::new("gpt-5"), at(T0 + 2_000)),
        Selection::Account(id("b")),
        "an account whose window already ended was ranked before one whose week ends soon"
    );
}

/// A window's end is "`resets_at`, but at most `window_minutes` (else 8 days) after the
/// report" (`UsageWindow::ends_at`), and a window that blocks keeps the account out until
/// then; once it has passed the window "started over". So status leaves it out and
/// `pool_usage` counts it "0 % once the window has ended". Sequence: at T0, `a` reports its
/// primary window 99 % used (two more requests could overflow it), 60 minutes long, no reset
/// time. At T0 + 2 h: status should show no primary window, and the pool's primary use
/// should be 0 %. A pool that takes a window without a reset time as running for ever shows
/// the 99 % window and counts it as 100 % (and exports it with every state write) until
/// another report replaces it.
#[test]
fn a_window_without_reset_is_over_after_its_length() {
    let mut pool = pool_of(Strategy::LeastRecentlyUsed, &["a"]);
    let report = codex(Some(window(99.0).with_window_minutes(60)), None);
    pool.record_usage(&id("a"), &report, at(T0)).unwrap();
    // The block ends after the window's length, as documented.
    assert_eq!(
        pool.select(&mut Request::new("gpt-5"), at(T0)),
        Selection::Exhausted {
            retry_after: Duration::from_millis(60 * MINUTE)
        }
    );
    let later = at(T0 + 120 * MINUTE);
    let status = pool.account_status(&id("a"), later).unwrap();
    assert_eq!(
        status.usage[0].limit.primary, None,
        "a window that has certainly reset is still shown"
    );
    let pool_usage = pool.pool_usage(later);
    let primary = pool_usage.limit("codex").and_then(|l| l.primary).unwrap();
    assert_eq!(
        primary.used_percent.get(),
        0.0,
        "a reset window still counts as used"
    );
}

/// The state docs ("Timestamps the pool writes"): every event is stamped "never earlier than
/// the event it follows on that account, so a later local event always wins a merge against
/// what the pool had merged before, even from a process whose clock runs a little ahead";
/// `record_usage` stamps a report "after what it replaces … so the newer report wins every
/// merge, ties included". A stamp that is only *not earlier* would tie with the merged one,
/// and ties go by content.
///
/// Sequence: a process whose clock runs 1 s ahead wrote `a`'s report stamped T0 + 1 s: the
/// 5-hour window 99 % used but resetting at T0 + 50 ms, the weekly one 50 %. This pool
/// merges it at T0. At T0 + 100 ms (the short window has reset) `a` reports the short
/// window 1 % used and the weekly one 99 % (two more requests could overflow it: out until
/// next week). After the usual sync (the pool's changes written into the shared file, the
/// file merged back), the pool should still hold the newer report and keep `a` out until
/// the weekly reset. Stamped T0 + 1 s too, the newer report would lose the tie to the older
/// one (99 % > 1 %) in the file and then in the pool, and `a` would serve again: the weekly
/// block lost until this pool's clock passes the other process's stamp and `a` reports
/// again.
#[test]
fn a_newer_report_wins_over_a_merged_one_stamped_ahead() {
    let mut pool = pool_of(Strategy::LeastRecentlyUsed, &["a"]);
    let next_week = at(T0 + 7 * DAY);
    let mut theirs = UsageState::new(at(T0 + 1_000));
    theirs.primary = Some(
        window(99.0)
            .with_window_minutes(300)
            .with_resets_at(at(T0 + 50)),
    );
    theirs.secondary = Some(
        window(50.0)
            .with_window_minutes(10_080)
            .with_resets_at(next_week),
    );
    let mut account = AccountState::default();
    account.usage.insert("codex".to_owned(), theirs);
    let mut file = PolicyState::default();
    file.accounts.insert(id("a"), account);
    pool.merge_state(&file, at(T0));

    let now = T0 + 100;
    let ours = codex(
        Some(
            window(1.0)
                .with_window_minutes(300)
                .with_resets_at(at(T0 + 5 * 60 * MINUTE)),
        ),
        Some(
            window(99.0)
                .with_window_minutes(10_080)
                .with_resets_at(next_week),
        ),
    );
    pool.record_usage(&id("a"), &ours, at(now)).unwrap();
    assert!(
        matches!(
            pool.select(&mut Request::new("gpt-5"), at(now)),
            Selection::Exhausted { .. }
        ),
        "the new report blocks `a` at first"
    );

    // The sync every process runs: write the changes into the file, merge the file.
    file.merge(&pool.take_changes());
    pool.merge_state(&file, at(now));

    let status = pool.account_status(&id("a"), at(now)).unwrap();
    let secondary = status.usage[0]
        .limit
        .secondary
        .map(|w| w.used_percent.get());
    assert_eq!(
        secondary,
        Some(99.0),
        "the newer report was replaced by the older one"
    );
    assert!(
        matches!(
            pool.select(&mut Request::new("gpt-5"), at(now)),
            Selection::Exhausted { .. }
        ),
        "an account out of its weekly window serves again"
    );
}

/// The merge rules keep, per limit, "the report with the later `observed_at`, whole": a
/// merged report older than the account's own is not news and should change nothing
/// (`MergeReport::changed` counts accounts "whose selection may differ now"; `pool_usage`
/// names a limit by "the latest reported" name). Sequence: at 10 s, `a` reports its metered
/// limit `codex_o4`, named `o4-mini`, 99 % used until T0 + 1 h, so `o4-mini` requests wait
/// for it. A document then brings an older report of the same limit for `a` (stamped 1 ms,
/// 10 % used) under another name. The merge keeps `a`'s own report and says nothing
/// changed; `o4-mini` requests should still wait. A pool that takes the name of a report that
/// lost serves them with `a`: the limit renamed, `o4-mini` no longer counts against it (its
/// requests count against the default limit, about which nothing is known).
#[test]
fn an_older_merged_report_does_not_rename_the_limit() {
    let mut pool = pool_of(Strategy::LeastRecentlyUsed, &["a"]);
    let now = at(10_000);
    let mut o4 = LimitUsage::new("codex_o4").unwrap();
    o4.limit_name = Some("o4-mini".to_owned());
    o4.primary = Some(
        window(99.0)
            .with_window_minutes(300)
            .with_resets_at(at(3_600_000)),
    );
    let mut report = UsageReport::default();
    report.push(o4);
    pool.record_usage(&id("a"), &report, now).unwrap();
    assert!(matches!(
        pool.select(&mut Request::new("o4-mini"), now),
        Selection::Exhausted { .. }
    ));

    let mut older = UsageState::new(at(1));
    older.limit_name = Some("another-model".to_owned());
    older.primary = Some(window(10.0));
    let mut account = AccountState::default();
    account.usage.insert("codex_o4".to_owned(), older);
    let mut file = PolicyState::default();
    file.accounts.insert(id("a"), account);
    let merged = pool.merge_state(&file, now);
    assert_eq!(merged.changed, 0, "the older report was not taken");
    assert!(
        matches!(
            pool.select(&mut Request::new("o4-mini"), now),
            Selection::Exhausted { .. }
        ),
        "a report the merge did not take re-mapped the model to another limit"
    );
}
