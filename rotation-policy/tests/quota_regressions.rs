//! Regression tests for disagreements between the pool's quota behaviour and its documented
//! rules, found by the state-machine test against the reference model (`tests/model`) and by
//! reading the rules next to it. Each test states the documented rule it checks and fails on
//! the pool as it is; it is ignored until the pool is fixed. When a fix lands, remove the
//! `#[ignore]` and turn off the matching switch in `tests/model/mod.rs` (`pool_bugs`), so the
//! property test checks the documented rule from then on.

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
/// plain request should get `a` again (usable all along). The pool gives `b`: the pinned
/// hand-out moved the sticky account, so every continued conversation drags new traffic to
/// its account, which undoes what the strategy is for (one account's windows used up at a
/// time).
#[test]
#[ignore = "pool bug: a pinned request's hand-out moves the sticky account"]
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
/// next after the last pick, `a`). The pool gives `a`: the pinned hand-out moved the cursor
/// to `c`, so `b` was skipped.
#[test]
#[ignore = "pool bug: a pinned request's hand-out moves the round-robin cursor"]
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

/// `Strategy::QuotaAware` spends "the capacity that expires first: … the one whose usage
/// window resets soonest …; accounts with no usage known yet come last (no window of theirs
/// is running, so nothing of theirs can expire)". A window whose reset has passed is not
/// running either (status leaves such windows out: "they start again from 0 %"), so nothing
/// of it can expire. Sequence: at T0, `a` reports its weekly window 10 % used, resetting at
/// T0 + 1 s; `b` reports 10 % used, resetting at T0 + 7 days. At T0 + 2 s, `a`'s window has
/// reset and `b`'s 90 % left expires in a week: `b` should be picked. The pool picks `a`: it
/// ranks by the reported reset even after it passed, so an account whose report is stale
/// goes first (the key is taken when the account is indexed and never revised as time
/// passes).
#[test]
#[ignore = "pool bug: quota-aware order ranks a window whose reset already passed first, not last"]
fn quota_aware_ranks_a_window_that_already_reset_last() {
    let mut pool = pool_of(Strategy::QuotaAware, &["a", "b"]);
    let a_report = codex(
        None,
        Some(
            window(10.0)
                .with_window_minutes(10_080)
                .with_resets_at(at(T0 + 1_000)),
        ),
    );
    let b_report = codex(
        None,
        Some(
            window(10.0)
                .with_window_minutes(10_080)
                .with_resets_at(at(T0 + 7 * DAY)),
        ),
    );
    pool.record_usage(&id("a"), &a_report, at(T0)).unwrap();
    pool.record_usage(&id("b"), &b_report, at(T0)).unwrap();
    assert_eq!(
        pool.select(&mut Request::new("gpt-5"), at(T0 + 2_000)),
        Selection::Account(id("b")),
        "an account whose window already reset was ranked before one whose window runs"
    );
}

/// `Pool::record_usage`'s table: a window at or above the threshold with `window_minutes`
/// but no `resets_at` blocks until "the report + `window_minutes` (the latest it can
/// reset)". So by then its reset has passed, and status leaves out "windows whose reset has
/// passed … they start again from 0 %"; `pool_usage` counts a window "0 % once the window
/// has reset". Sequence: at T0, `a` reports its primary window 97 % used, 60 minutes long,
/// no reset time. At T0 + 2 h: status should show no primary window, and the pool's
/// primary use should be 0 %. The pool still shows the 97 % window and counts it as 100 %
/// (it treats a window without a reset time as running for ever: shown, counted and
/// exported with every state write until another report replaces it).
#[test]
#[ignore = "pool bug: a window without resets_at counts as running for ever in status, pool_usage and export"]
fn a_window_without_reset_is_over_after_its_length() {
    let mut pool = pool_of(Strategy::LeastRecentlyUsed, &["a"]);
    let report = codex(Some(window(97.0).with_window_minutes(60)), None);
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
/// `record_usage` says the same of its stamp ("so the newer report wins every merge"). But
/// the stamp is only *not earlier*: a report stamped equal to the merged one loses whenever
/// its content orders lower (ties go by content).
///
/// Sequence: a process whose clock runs 1 s ahead wrote `a`'s report stamped T0 + 1 s: the
/// 5-hour window 99 % used but resetting at T0 + 50 ms, the weekly one 50 %. This pool
/// merges it at T0. At T0 + 100 ms (the short window has reset) `a` reports the short
/// window 1 % used and the weekly one 96 % (over the 95 % threshold until next week). After
/// the usual sync (the pool's changes written into the shared file, the file merged back),
/// the pool should still hold the newer report and keep `a` out until the weekly reset.
/// Instead the newer report was stamped T0 + 1 s too, lost the tie to the older one (99 % >
/// 1 %) in the file and then in the pool, and `a` serves again: the weekly block is lost
/// until this pool's clock passes the other process's stamp and `a` reports again.
#[test]
#[ignore = "pool bug: a newer usage report stamped equal to a merged one loses to it by content"]
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
            window(96.0)
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
        Some(96.0),
        "the newer report was replaced by the older one"
    );
    assert!(
        matches!(
            pool.select(&mut Request::new("gpt-5"), at(now)),
            Selection::Exhausted { .. }
        ),
        "an account over the weekly threshold serves again"
    );
}

/// The merge rules keep, per limit, "the report with the later `observed_at`, whole": a
/// merged report older than the account's own is not news and should change nothing
/// (`MergeReport::changed` counts accounts "whose selection may differ now"; `pool_usage`
/// names a limit by "the latest reported" name). Sequence: at 10 s, `a` reports its metered
/// limit `codex_o4`, named `o4-mini`, 99 % used until T0 + 1 h, so `o4-mini` requests wait
/// for it. A document then brings an older report of the same limit for `a` (stamped 1 ms,
/// 10 % used) under another name. The merge keeps `a`'s own report and says nothing
/// changed; `o4-mini` requests should still wait. The pool serves them with `a`: the losing
/// report renamed the limit, so `o4-mini` no longer counts against it (its requests now
/// count against the default limit, about which nothing is known).
#[test]
#[ignore = "pool bug: a merged usage report that loses the merge still renames its limit and re-maps families"]
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
