//! State-machine property test: random operation sequences run against `Pool` and against
//! the linear-scan reference model in `model/`, which must agree on every selection,
//! consume, refund and decision, and on every account's state — its status and its exported
//! shared state — after every step. On top of that, invariants are asserted directly against
//! the pool: a selected account is enabled, out of cooldown for the family and holds a token;
//! tokens never exceed capacity; a session stays on its account while that account is usable.
//!
//! Shared state: `Merge` ops play other processes writing to a shared file (the test keeps
//! it) that the pool then merges whole; `Take` ops write the pool's changes into it. After
//! every `Take` the file holds everything the pool knows (nothing was missed), and merging
//! the file back leaves nothing to write (no ping-pong). After every step, exporting the
//! pool and merging that into a fresh pool of the same accounts gives the same export.
//!
//! Usage: `RecordUsage` ops (and `Serve` ops, on each answer, as a proxy does) give small
//! reports — the default limit, a metered limit whose name is one of the request families
//! (in either case), one whose name changes between a family and none — with percentages
//! around the threshold and resets in the past, near now and far ahead, fields missing;
//! merged documents carry usage entries too (junk ids and times included), written as text
//! with a usage field now and then junk no reader can hold (`1e999`, `-1`, …), which must
//! read as that field absent and the rest as written. `Nudge` ops send
//! an account's last report of a limit again with its windows moved a little (the pool learns
//! a request's size from such consecutive reports; moves under a point are news only when
//! they cross the line where the window blocks). The usage part of every account's status
//! and export and the pool's aggregate usage must agree with the model, and every strategy,
//! quota-aware and sticky included, must pick as the model does. A second property runs quota
//! traffic through a pool of every account, with reports shaped like a ChatGPT plan's (5-hour
//! and weekly windows, often in their last twentieth), so quota-aware picks among several
//! usable accounts, some spending a week about to end.

mod model;

use std::collections::HashMap;
use std::time::Duration;

use model::{Model, ModelRequest, view_of};
use proptest::prelude::*;
use rotation_policy::usage::{LimitUsage, MAX_LIMITS, Percent, UsageReport, UsageWindow};
use rotation_policy::{
    AccountId, AccountState, Cooldown, CooldownReason, Decision, Disabled, DisabledReason,
    FamilyState, Outcome, PolicyConfig, PolicyError, PolicyState, Pool, Request, Selection,
    Strategy as Pick, Timestamp, TokenBucket, UsageState,
};

const ACCOUNTS: u8 = 6;

/// The longest any answer may ask a client to wait: a usage block, at most 8 days from its
/// report when the window's length is not known (the generated windows are at most a week
/// long), whose report may be stamped up to `max_cooldown` (under a day) ahead; cooldowns
/// are shorter.
const LONGEST_WAIT: Duration = Duration::from_secs(9 * 24 * 3600);
const FAMILIES: [&str; 3] = ["gpt-5", "gpt-5-codex", "o4-mini"];

/// Family names a merged document may use: the request families, one no request uses, and
/// the shared overflow family.
const DOC_FAMILIES: [&str; 5] = ["gpt-5", "gpt-5-codex", "o4-mini", "o3", "*"];
const COOLDOWN_REASONS: [CooldownReason; 3] = [
    CooldownReason::Unauthorized,
    CooldownReason::Forbidden,
    CooldownReason::FailureBurst,
];
const DISABLED_REASONS: [DisabledReason; 4] = [
    DisabledReason::Manual,
    DisabledReason::Unauthorized,
    DisabledReason::LoginRequired,
    DisabledReason::Deactivated,
];

/// A time relative to the harness clock (far future included), resolved when the op runs.
type Offset = i64;

/// Limit ids of usage reports and the names each may be reported with: the default limit
/// (named after a family too, which must not re-map it), a metered limit named after the
/// family `o4-mini` in two spellings, and one whose name moves between the family
/// `gpt-5-codex` and a model no request uses.
const LIMITS: [(&str, [Option<&str>; 3]); 3] = [
    ("codex", [None, Some("Codex"), Some("gpt-5")]),
    ("codex_o4", [None, Some("o4-mini"), Some("O4-MINI")]),
    (
        "codex_spare",
        [None, Some("gpt-5-codex"), Some("unrelated-model")],
    ),
];

/// Limit ids a merged document may use: those of `LIMITS`, one only documents use, and two
/// no writer can have written (not normalized).
const DOC_LIMITS: [&str; 6] = [
    "codex",
    "codex_o4",
    "codex_spare",
    "codex_doc_only",
    "Codex",
    "bad id",
];

/// Usage percentages: around the thresholds configs use (50, 80, 95, 100) and the margin
/// (two requests' worth: 98 is the last use that a request of 1 point leaves usable, 90 of
/// 5 points), with halves (so sums of them are exact and the pool's mean does not depend on
/// summing order), and one above 100 (read as 100).
const PERCENTS: [f64; 15] = [
    0.0, 10.0, 49.5, 50.0, 79.5, 80.0, 90.0, 94.5, 95.0, 98.0, 98.5, 99.0, 99.5, 100.0, 130.0,
];

/// How far a `Nudge` moves a window's use (points): not at all, less than a whole point
/// (no news unless it crosses the line where the window blocks), up to the largest request
/// size the pool learns (10) and past it, and down.
const NUDGES: [f64; 10] = [0.0, 0.5, 1.0, 1.5, 2.5, 4.0, 12.0, -0.5, -3.0, -20.0];

/// Texts no usage field of a shared document can hold (no `f64`, or out of range for every
/// field, or not a number at all): a reader takes each as an absent field (`observed_at`:
/// 0), never as an unreadable document.
const JUNK: [&str; 8] = [
    "1e999",
    "-1e999",
    "-1",
    "-0.5",
    "18446744073709551616",
    "[1]",
    "{\"used_percent\":1e999,\"resets_at\":-1}",
    "true",
];

/// Where `DocUsage::junk` goes: `observed_at`, `limit_name`, a whole window, or one field
/// of a window (primary: 2..6, secondary: 6..10).
const JUNK_FIELDS: [&str; 10] = [
    "observed_at",
    "limit_name",
    "primary",
    "primary.used_percent",
    "primary.window_minutes",
    "primary.resets_at",
    "secondary",
    "secondary.used_percent",
    "secondary.window_minutes",
    "secondary.resets_at",
];

/// One generated usage window; its reset is an offset from `now`, resolved when used.
#[derive(Clone, Debug)]
struct GenWindow {
    percent: usize,
    /// `Some(0)` is out of range and reads as unknown.
    minutes: Option<u32>,
    resets: Option<Offset>,
}

/// One limit of a generated report: (index into `LIMITS`, index of its name, windows).
#[derive(Clone, Debug)]
struct GenLimit {
    limit: usize,
    name: usize,
    primary: Option<GenWindow>,
    secondary: Option<GenWindow>,
}

/// A generated usage entry of a document: index into `DOC_LIMITS`, `observed_at`, index of
/// its name among that limit's names in `LIMITS` (the metered `codex_o4`'s for ids only
/// documents use), windows.
#[derive(Clone, Debug)]
struct DocUsage {
    limit: usize,
    observed: Offset,
    name: usize,
    primary: Option<GenWindow>,
    secondary: Option<GenWindow>,
    /// A field written as junk text: (index into `JUNK_FIELDS`, index into `JUNK`).
    junk: Option<(usize, usize)>,
}

/// One account of a document another process wrote; times are offsets from `now`.
#[derive(Clone, Debug)]
struct DocAccount {
    /// Index of the account; `ACCOUNTS..` are ids the pool never has.
    who: u8,
    cooldown: Option<(Offset, usize, Offset)>,
    /// (family, until, streak, since); no `since` is an older writer's record.
    families: Vec<(usize, Offset, u32, Option<Offset>)>,
    disabled: Option<(usize, Offset)>,
    enabled_since: Option<Offset>,
    refreshed_at: Option<Offset>,
    /// (health, health_at, needs_refresh, unauthorized_streak, burst_streak)
    observation: Option<(u8, Offset, bool, u32, u32)>,
    usage: Vec<DocUsage>,
}

#[derive(Clone, Debug)]
enum Op {
    Add(u8),
    Remove(u8),
    Disable(u8),
    DisableFor(u8, usize),
    Enable(u8),
    /// Another process's document: written into the file, which the pool then merges
    /// (`direct: false`), or merged by the pool as it is, junk and all, and then written
    /// into the file (`direct: true`).
    Merge {
        accounts: Vec<DocAccount>,
        direct: bool,
    },
    Take,
    MarkRefreshed(u8),
    Refund(u8),
    Consume(u8),
    Advance(u64),
    /// Usage reports of a few accounts (maybe not in the pool), one after the other.
    RecordUsage(Vec<(u8, Vec<GenLimit>)>),
    /// Reports of this many further limits (`extra_0`, …) for one account, one report each:
    /// past `MAX_LIMITS` they are ignored.
    FloodLimits(u8, u8),
    /// The last report the test gave of an account and limit (index into `LIMITS`) again,
    /// each window's use moved by a step of `NUDGES` (reset and length kept): consecutive
    /// reports of the same window, from which the pool learns how much a request uses, and
    /// moves of less than a point that cross the line where the window blocks.
    Nudge {
        who: u8,
        limit: usize,
        steps: [usize; 2],
    },
    Serve {
        family: usize,
        session: Option<u8>,
        /// The account the request is pinned to.
        pinned: Option<u8>,
        consume: bool,
        outcomes: Vec<Outcome>,
        /// Recorded for the serving account on each answer, before its outcome.
        usage: Option<Vec<GenLimit>>,
    },
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        4 => Just(Outcome::Success),
        2 => Just(Outcome::RateLimited { retry_after: None }),
        2 => (0u64..200_000).prop_map(|ms| Outcome::RateLimited {
            retry_after: Some(Duration::from_millis(ms))
        }),
        1 => Just(Outcome::Unauthorized),
        1 => Just(Outcome::Forbidden),
        2 => Just(Outcome::ServerError),
        1 => Just(Outcome::NetworkError),
        1 => Just(Outcome::Timeout),
    ]
}

/// Mostly near now (ties included), sometimes far ahead (a broken clock or hostile writer):
/// about the longest span a document keeps (30 days), decades, and past year 9999.
fn offset() -> impl Strategy<Value = Offset> {
    const SPAN: i64 = 30 * 24 * 60 * 60 * 1_000;
    prop_oneof![
        3 => -3i64..=3,
        6 => -300_000i64..300_000,
        1 => SPAN - 3..=SPAN + 3,
        1 => Just(1_000_000_000_000i64),
        1 => Just(i64::MAX),
    ]
}

/// A reset: passed (long ago, just now), near now, within the hour, within the last
/// twentieth of a week (8.4 hours) or just before it, past the 8-day cap, or after year 9999
/// (read as unknown).
fn reset_offset() -> impl Strategy<Value = Offset> {
    const DAY: i64 = 24 * 60 * 60 * 1_000;
    prop_oneof![
        2 => -10 * DAY..-300_000i64,
        3 => -3i64..=3,
        6 => 1i64..400_000,
        2 => 400_000i64..3_600_000,
        3 => 3_600_000i64..10 * 3_600_000,
        1 => 8 * DAY - 3..=8 * DAY + 3,
        1 => 9 * DAY..30 * DAY,
        1 => Just(i64::MAX),
    ]
}

fn gen_window() -> impl Strategy<Value = GenWindow> {
    (
        0..PERCENTS.len(),
        proptest::option::of(prop_oneof![
            Just(0u32),
            Just(1),
            Just(5),
            Just(300),
            Just(10_080),
            // Longer than the 8 days a report may keep an account out.
            Just(20_160),
            Just(576_000)
        ]),
        proptest::option::of(reset_offset()),
    )
        .prop_map(|(percent, minutes, resets)| GenWindow {
            percent,
            minutes,
            resets,
        })
}

fn gen_limit() -> impl Strategy<Value = GenLimit> {
    (
        0..LIMITS.len(),
        0usize..3,
        proptest::option::weighted(0.75, gen_window()),
        proptest::option::weighted(0.75, gen_window()),
    )
        .prop_map(|(limit, name, primary, secondary)| GenLimit {
            limit,
            name,
            primary,
            secondary,
        })
}

fn gen_report() -> impl Strategy<Value = Vec<GenLimit>> {
    proptest::collection::vec(gen_limit(), 0..3)
}

/// A window of a ChatGPT plan: `minutes` long, reset within that length from now, half the
/// time within its last twentieth (where quota-aware rotation spends it first).
fn plan_window(minutes: u32) -> impl Strategy<Value = GenWindow> {
    let length = i64::from(minutes) * 60_000;
    (0..PERCENTS.len(), prop_oneof![1..=length / 20, 1..=length]).prop_map(
        move |(percent, reset)| GenWindow {
            percent,
            minutes: Some(minutes),
            resets: Some(reset),
        },
    )
}

/// A limit as a ChatGPT plan reports it: a 5-hour primary window and a weekly secondary one
/// (now and then one of them missing).
fn plan_limit() -> impl Strategy<Value = GenLimit> {
    (
        0..LIMITS.len(),
        0usize..3,
        proptest::option::weighted(0.9, plan_window(300)),
        proptest::option::weighted(0.9, plan_window(10_080)),
    )
        .prop_map(|(limit, name, primary, secondary)| GenLimit {
            limit,
            name,
            primary,
            secondary,
        })
}

/// Quota traffic's reports: mostly a plan's, some of any shape.
fn quota_report() -> impl Strategy<Value = Vec<GenLimit>> {
    prop_oneof![
        3 => proptest::collection::vec(plan_limit(), 1..3),
        1 => gen_report(),
    ]
}

fn doc_usage() -> impl Strategy<Value = DocUsage> {
    (
        prop_oneof![4 => 0..3usize, 1 => 3..DOC_LIMITS.len()],
        offset(),
        0usize..3,
        proptest::option::of(gen_window()),
        proptest::option::of(gen_window()),
        proptest::option::weighted(0.3, (0..JUNK_FIELDS.len(), 0..JUNK.len())),
    )
        .prop_map(
            |(limit, observed, name, primary, secondary, junk)| DocUsage {
                limit,
                observed,
                name,
                primary,
                secondary,
                junk,
            },
        )
}

fn doc_account() -> impl Strategy<Value = DocAccount> {
    (
        0..ACCOUNTS + 2,
        proptest::option::of((offset(), 0..COOLDOWN_REASONS.len(), offset())),
        proptest::collection::vec(
            (
                0..DOC_FAMILIES.len(),
                offset(),
                0u32..5,
                proptest::option::of(offset()),
            ),
            0..3,
        ),
        proptest::option::of((0..DISABLED_REASONS.len(), offset())),
        proptest::option::of(offset()),
        proptest::option::of(offset()),
        proptest::option::of((0u8..=100, offset(), any::<bool>(), 0u32..4, 0u32..3)),
        proptest::collection::vec(doc_usage(), 0..3),
    )
        .prop_map(
            |(
                who,
                cooldown,
                families,
                disabled,
                enabled_since,
                refreshed_at,
                observation,
                usage,
            )| {
                DocAccount {
                    who,
                    cooldown,
                    families,
                    disabled,
                    enabled_since,
                    refreshed_at,
                    observation,
                    usage,
                }
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    let idx = 0..ACCOUNTS;
    prop_oneof![
        2 => idx.clone().prop_map(Op::Add),
        1 => idx.clone().prop_map(Op::Remove),
        1 => idx.clone().prop_map(Op::Disable),
        1 => (idx.clone(), 0..DISABLED_REASONS.len()).prop_map(|(i, r)| Op::DisableFor(i, r)),
        1 => idx.clone().prop_map(Op::Enable),
        2 => merge_op(),
        2 => Just(Op::Take),
        1 => idx.clone().prop_map(Op::MarkRefreshed),
        1 => idx.clone().prop_map(Op::Refund),
        1 => idx.clone().prop_map(Op::Consume),
        3 => prop_oneof![0u64..2_000, 0u64..120_000, 0u64..1_000_000].prop_map(Op::Advance),
        3 => record_usage_op(gen_report()),
        1 => (idx, 1u8..20).prop_map(|(i, n)| Op::FloodLimits(i, n)),
        4 => nudge_op(),
        8 => serve_op(outcome(), gen_report()),
    ]
}

/// The operations of quota traffic, for a pool that starts with every account: mostly
/// answers (most of them successes) and usage reports, time moving by up to hours (so
/// windows enter their last twentieth and end), and some shared state, cooldowns and
/// disables; no adds and removes.
fn quota_op() -> impl Strategy<Value = Op> {
    let idx = 0..ACCOUNTS;
    prop_oneof![
        1 => idx.clone().prop_map(Op::Disable),
        1 => idx.clone().prop_map(Op::Enable),
        1 => merge_op(),
        1 => Just(Op::Take),
        1 => idx.clone().prop_map(Op::Refund),
        1 => idx.prop_map(Op::Consume),
        4 => prop_oneof![0u64..20_000, 0u64..1_000_000, 0u64..10 * 3_600_000].prop_map(Op::Advance),
        3 => record_usage_op(quota_report()),
        4 => nudge_op(),
        10 => serve_op(prop_oneof![6 => Just(Outcome::Success), 1 => outcome()], quota_report()),
    ]
}

fn merge_op() -> impl Strategy<Value = Op> {
    (
        proptest::collection::vec(doc_account(), 1..4),
        any::<bool>(),
    )
        .prop_map(|(accounts, direct)| Op::Merge { accounts, direct })
}

fn record_usage_op(report: impl Strategy<Value = Vec<GenLimit>>) -> impl Strategy<Value = Op> {
    proptest::collection::vec((0..ACCOUNTS, report), 1..4).prop_map(Op::RecordUsage)
}

fn nudge_op() -> impl Strategy<Value = Op> {
    (
        0..ACCOUNTS,
        0..LIMITS.len(),
        [0..NUDGES.len(), 0..NUDGES.len()],
    )
        .prop_map(|(who, limit, steps)| Op::Nudge { who, limit, steps })
}

fn serve_op(
    outcome: impl Strategy<Value = Outcome>,
    report: impl Strategy<Value = Vec<GenLimit>>,
) -> impl Strategy<Value = Op> {
    (
        0..FAMILIES.len(),
        proptest::option::of(0u8..3),
        prop_oneof![3 => Just(None), 1 => (0..ACCOUNTS).prop_map(Some)],
        any::<bool>(),
        proptest::collection::vec(outcome, 1..5),
        proptest::option::of(report),
    )
        .prop_map(
            |(family, session, pinned, consume, outcomes, usage)| Op::Serve {
                family,
                session,
                pinned,
                consume,
                outcomes,
                usage,
            },
        )
}

fn config() -> impl Strategy<Value = PolicyConfig> {
    (
        prop_oneof![
            1 => Just(Pick::LeastRecentlyUsed),
            1 => Just(Pick::RoundRobin),
            1 => Just(Pick::HealthWeighted),
            2 => Just(Pick::QuotaAware),
            2 => Just(Pick::Sticky),
        ],
        proptest::option::of(1u64..60_000),
        proptest::option::of((1u32..4, 1u64..5_000)),
        (1u32..5, 0u64..10_000),
        (0u64..3_000, 3_000u64..600_000, 1u64..5_000),
        (1u32..4, 1u64..60_000, 1u64..30_000),
        (1u64..120_000, 1u32..4, 1u64..300_000),
        (0u8..=50, 1usize..4),
        prop_oneof![3 => Just(100u8), 2 => Just(95), 1 => Just(50), 1 => Just(80), 1 => 1u8..=100],
    )
        .prop_map(
            |(
                strategy,
                ttl,
                bucket,
                (max_attempts, max_wait),
                (min_cd, max_cd, rl_backoff),
                (burst, window, failure_cd),
                (unauth_cd, disable_after, forbidden_cd),
                (jitter, max_families),
                threshold,
            )| {
                let mut c = PolicyConfig::default();
                c.strategy = strategy;
                c.session_ttl = ttl.map(Duration::from_millis);
                c.bucket = bucket
                    .map(|(cap, refill)| TokenBucket::new(cap, Duration::from_millis(refill)));
                c.max_attempts = max_attempts;
                c.max_wait = Duration::from_millis(max_wait);
                c.min_cooldown = Duration::from_millis(min_cd);
                c.max_cooldown = Duration::from_millis(max_cd);
                c.rate_limit_backoff = Duration::from_millis(rl_backoff);
                c.failure_burst = burst;
                c.failure_window = Duration::from_millis(window);
                c.failure_cooldown = Duration::from_millis(failure_cd);
                c.unauthorized_cooldown = Duration::from_millis(unauth_cd);
                c.disable_after_unauthorized = disable_after;
                c.forbidden_cooldown = Duration::from_millis(forbidden_cd);
                c.jitter_percent = jitter;
                c.max_families = max_families;
                c.usage_threshold = threshold;
                c
            },
        )
}

fn id(i: u8) -> AccountId {
    AccountId::new(format!("acct-{i}")).unwrap()
}

struct Harness {
    pool: Pool,
    model: Model,
    now: u64,
    capacity: Option<u32>,
    /// The shared file: what other processes and the pool's `take_changes` wrote.
    file: PolicyState,
    /// The last report given of each (account, limit id), for `Nudge`.
    sent: HashMap<(AccountId, String), LimitUsage>,
}

/// The documented reading of a junk usage field: `observed_at` reads as 0 (none), the name
/// as none, a junk window or `used_percent` as no window, a junk `window_minutes` or
/// `resets_at` as unknown.
fn read_junk_as_absent(state: &mut UsageState, field: &str) {
    let (window, name) = field.split_once('.').unwrap_or((field, ""));
    let w = match window {
        "observed_at" => return state.observed_at = Timestamp::ZERO,
        "limit_name" => return state.limit_name = None,
        "primary" => &mut state.primary,
        _ => &mut state.secondary,
    };
    match name {
        "" | "used_percent" => *w = None,
        "window_minutes" => {
            if let Some(w) = w {
                w.window_minutes = None;
            }
        }
        _ => {
            if let Some(w) = w {
                w.resets_at = None;
            }
        }
    }
}

fn at(now: u64, offset: Offset) -> Timestamp {
    Timestamp::from_millis(now.saturating_add_signed(offset))
}

fn window(now: u64, w: &GenWindow) -> UsageWindow {
    let mut window = UsageWindow::new(Percent::new(PERCENTS[w.percent]).unwrap());
    if let Some(m) = w.minutes {
        window = window.with_window_minutes(m);
    }
    if let Some(r) = w.resets {
        window = window.with_resets_at(at(now, r));
    }
    window
}

/// The report `limits` describe at `now` (a later limit of the same id replaces an earlier).
fn report(now: u64, limits: &[GenLimit]) -> UsageReport {
    let mut report = UsageReport::default();
    for l in limits {
        let (id, names) = LIMITS[l.limit];
        let mut limit = LimitUsage::new(id).unwrap();
        limit.limit_name = names[l.name].map(str::to_owned);
        limit.primary = l.primary.as_ref().map(|w| window(now, w));
        limit.secondary = l.secondary.as_ref().map(|w| window(now, w));
        report.push(limit);
    }
    report
}

impl Harness {
    /// The document `accounts` describe, as written (a later entry for the same account
    /// replaces an earlier one), junk included.
    fn document(&self, accounts: &[DocAccount]) -> PolicyState {
        let now = self.now;
        let mut doc = PolicyState::default();
        for d in accounts {
            let mut s = AccountState::default();
            s.cooldown = d.cooldown.map(|(until, reason, since)| {
                Cooldown::new(at(now, until), COOLDOWN_REASONS[reason], at(now, since))
            });
            for &(family, until, streak, since) in &d.families {
                let mut state = FamilyState::new(at(now, until), streak);
                state.since = since.map(|since| at(now, since));
                s.families.insert(DOC_FAMILIES[family].to_owned(), state);
            }
            s.disabled = d
                .disabled
                .map(|(reason, since)| Disabled::new(DISABLED_REASONS[reason], at(now, since)));
            s.enabled_since = d.enabled_since.map(|t| at(now, t));
            s.refreshed_at = d.refreshed_at.map(|t| at(now, t));
            if let Some((health, health_at, needs_refresh, unauthorized, bursts)) = d.observation {
                s.health = health;
                s.health_at = at(now, health_at);
                s.needs_refresh = needs_refresh;
                s.unauthorized_streak = unauthorized;
                s.burst_streak = bursts;
            }
            for u in &d.usage {
                let mut state = UsageState::new(at(now, u.observed));
                // Names of the limit of that id where it has some, else the metered one's.
                let names = LIMITS.get(u.limit).map_or(LIMITS[1].1, |l| l.1);
                state.limit_name = names[u.name].map(str::to_owned);
                state.primary = u.primary.as_ref().map(|w| window(now, w));
                state.secondary = u.secondary.as_ref().map(|w| window(now, w));
                if let Some((field, _)) = u.junk {
                    read_junk_as_absent(&mut state, JUNK_FIELDS[field]);
                }
                s.usage.insert(DOC_LIMITS[u.limit].to_owned(), state);
            }
            doc.accounts.insert(id(d.who), s);
        }
        doc
    }

    /// The text another process wrote for `accounts`: `document` with each junk field
    /// written as its junk text. The pool reads it; it must read as `document` says.
    fn document_text(&self, accounts: &[DocAccount]) -> String {
        let doc = self.document(&[]);
        let mut value = serde_json::to_value(&doc).unwrap();
        let mut junk = Vec::new();
        for (k, d) in accounts.iter().enumerate() {
            let written = self.document(&accounts[k..=k]);
            let mut account = serde_json::to_value(&written.accounts[&id(d.who)]).unwrap();
            for (j, u) in d.usage.iter().enumerate() {
                // A later entry of the same limit replaces this one.
                let replaced = d.usage[j + 1..].iter().any(|v| v.limit == u.limit);
                let Some((field, text)) = u.junk.filter(|_| !replaced) else {
                    continue;
                };
                let holder = format!("@junk{}@", junk.len());
                junk.push((holder.clone(), JUNK[text]));
                let entry = &mut account["usage"][DOC_LIMITS[u.limit]];
                match JUNK_FIELDS[field].split_once('.') {
                    Some((window, name)) if entry[window].is_object() => {
                        entry[window][name] = holder.into();
                    }
                    Some((window, _)) => entry[window] = holder.into(),
                    None => entry[JUNK_FIELDS[field]] = holder.into(),
                }
            }
            value["accounts"][id(d.who).as_str()] = account;
        }
        let mut text = value.to_string();
        for (holder, raw) in junk {
            text = text.replace(&format!("\"{holder}\""), raw);
        }
        text
    }

    /// Merges the shared file into the pool and the model.
    fn merge_file(&mut self) -> Result<(), TestCaseError> {
        let file = self.file.clone();
        self.merge(&file)
    }

    /// Merges `doc` into the pool and the model; they must agree on which ids are unknown.
    fn merge(&mut self, doc: &PolicyState) -> Result<(), TestCaseError> {
        let now = Timestamp::from_millis(self.now);
        let report = self.pool.merge_state(doc, now);
        let unknown = self.model.merge(doc, self.now);
        prop_assert_eq!(&report.unknown, &unknown);
        prop_assert_eq!(report.applied, doc.accounts.len() - unknown.len());
        prop_assert!(report.changed <= report.applied);
        Ok(())
    }

    /// Writes the pool's changes into the file; afterwards the file must hold everything
    /// the pool knows, and (after at most one more round for names the pool files under
    /// "*") merging the file back must leave nothing to write.
    fn take(&mut self) -> Result<(), TestCaseError> {
        for _round in 0..2 {
            let changes = self.pool.take_changes();
            for id in changes.accounts.keys() {
                prop_assert!(self.pool.contains(id), "took a change of a removed account");
            }
            self.file.merge(&changes);
            self.check_file_covers_pool()?;
            self.merge_file()?;
        }
        let again = self.pool.take_changes();
        prop_assert!(
            again.accounts.is_empty(),
            "merging the file it wrote made the pool write again: {:?}",
            again
        );
        Ok(())
    }

    fn check_file_covers_pool(&self) -> Result<(), TestCaseError> {
        let mut export = self.pool.export_state();
        // An account nothing is known about is implied by any file.
        export.accounts.retain(|_, s| *s != AccountState::default());
        let mut merged = self.file.clone();
        merged.merge(&export);
        prop_assert_eq!(&merged, &self.file, "a change was never taken");
        Ok(())
    }

    /// Export, merge into a fresh pool of the same accounts at the same time, export again:
    /// the same state (when every time in it is within the merge horizon).
    fn check_round_trip(&self) -> Result<(), TestCaseError> {
        let export = self.pool.export_state();
        // The export is at the pool's clock (the latest `now` it was given), which may be
        // behind the harness clock after an `Advance`.
        let clock = self.pool.status(Timestamp::ZERO).now;
        let config = self.pool.config().clone();
        let horizon = clock
            .as_millis()
            .saturating_add(u64::try_from(config.max_cooldown.as_millis()).unwrap_or(u64::MAX));
        let within = |t: Timestamp| t.as_millis() <= horizon;
        let in_horizon = export.accounts.values().all(|s| {
            s.cooldown.is_none_or(|c| within(c.since))
                && s.families.values().all(|f| f.since.is_none_or(within))
                && s.disabled.is_none_or(|d| within(d.since))
                && s.enabled_since.is_none_or(within)
                && s.refreshed_at.is_none_or(within)
                && within(s.health_at)
                && s.usage.values().all(|u| within(u.observed_at))
        });
        // A merge adds at most half of `MAX_LIMITS` limits, so a fresh pool cannot take the
        // usage of a pool that saw more.
        if !in_horizon || self.model.limit_ids().len() > MAX_LIMITS / 2 {
            return Ok(());
        }
        let mut fresh = Pool::new(config, 0).unwrap();
        for account in self.pool.status(clock).accounts {
            fresh.add(account.id).unwrap();
        }
        // The same families, in the same order, as the pool's traffic brought them: a merge
        // adds families only up to half of `max_families`.
        for family in self.model.family_names() {
            fresh.select(&mut Request::new(family), clock);
        }
        let report = fresh.merge_state(&export, clock);
        prop_assert_eq!(report.capped, 0);
        prop_assert_eq!(fresh.export_state(), export);
        Ok(())
    }

    /// Gives `report` of `account` to the pool and the model (they must agree on whether
    /// the account is known) and remembers its limits for `Nudge`.
    fn record_usage(
        &mut self,
        account: &AccountId,
        report: &UsageReport,
    ) -> Result<(), TestCaseError> {
        let now = Timestamp::from_millis(self.now);
        prop_assert_eq!(
            self.pool.record_usage(account, report, now).is_ok(),
            self.model.record_usage(account, report, self.now)
        );
        for limit in &report.limits {
            let key = (account.clone(), limit.limit_id().to_owned());
            self.sent.insert(key, limit.clone());
        }
        Ok(())
    }

    fn check_state(&self) -> Result<(), TestCaseError> {
        let status = self.pool.status(Timestamp::from_millis(self.now));
        let view = view_of(&status);
        prop_assert_eq!(&view, &self.model.view(self.now));
        prop_assert_eq!(self.pool.export_state(), self.model.export());
        prop_assert_eq!(status.sessions, self.model.live_sessions(self.now));
        prop_assert_eq!(
            self.pool.pool_usage(Timestamp::from_millis(self.now)),
            self.model.pool_usage(self.now)
        );
        let c = &status.counters;
        let m = &self.model.counters;
        prop_assert_eq!(
            (
                c.requests,
                c.attempts,
                c.retries,
                c.rotations,
                c.waits,
                c.exhausted
            ),
            (
                m.requests,
                m.attempts,
                m.retries,
                m.rotations,
                m.waits,
                m.exhausted
            )
        );
        let o = &c.outcomes;
        let mo = &self.model.outcomes;
        prop_assert_eq!(
            (o.success, o.rate_limited, o.unauthorized, o.forbidden),
            (mo.success, mo.rate_limited, mo.unauthorized, mo.forbidden)
        );
        prop_assert_eq!(
            (o.server_error, o.network_error, o.timeout),
            (mo.server_error, mo.network_error, mo.timeout)
        );
        // Counters agree with each other.
        prop_assert_eq!(c.attempts, c.requests + c.retries);
        // Refunds never push a bucket past its capacity.
        if let Some(cap) = self.capacity {
            for a in &status.accounts {
                prop_assert!(a.tokens.is_some_and(|t| t <= cap), "{:?} over capacity", a);
            }
        }
        Ok(())
    }

    fn serve(
        &mut self,
        family: &str,
        session: Option<String>,
        pinned: Option<AccountId>,
        consume: bool,
        outcomes: &[Outcome],
        usage: Option<&[GenLimit]>,
    ) -> Result<(), TestCaseError> {
        let mut request = Request::new(family);
        if let Some(s) = &session {
            request = request.with_session(s.clone());
        }
        let mut mreq = ModelRequest::new(family, session.as_deref());
        if let Some(account) = &pinned {
            request = request.with_account(account.clone());
            mreq = mreq.pinned(account.clone());
        }
        // Bounded: attempts are capped by max_attempts (< 5) and each wait is followed by
        // a selection; 16 steps is far more than any legal run needs.
        for step in 0..16 {
            let now = Timestamp::from_millis(self.now);
            let before = self.pool.status(now);
            let sticky = self.model.bound_candidate(&mreq, self.now);
            let got = self.pool.select(&mut request, now);
            let want = self.model.select(&mut mreq, self.now);
            prop_assert_eq!(&got, &want, "select, step {}", step);
            let account = match got {
                Selection::Account(account) => account,
                Selection::Exhausted { retry_after } => {
                    prop_assert!(retry_after > Duration::ZERO);
                    prop_assert!(retry_after <= LONGEST_WAIT, "{:?}", retry_after);
                    return Ok(());
                }
                Selection::NoAccount => return Ok(()),
            };
            // Affinity: a usable bound account is kept.
            if let Some(bound) = sticky {
                prop_assert_eq!(&bound, &account, "session moved off a usable account");
            }
            if let Some(pinned) = &pinned {
                prop_assert_eq!(
                    pinned,
                    &account,
                    "a pinned request served by another account"
                );
            }
            // The chosen account was usable at `now` by the pool's own account.
            let state = before
                .accounts
                .iter()
                .find(|a| a.id == account)
                .ok_or_else(|| TestCaseError::fail("selected account missing from status"))?;
            prop_assert!(state.disabled.is_none(), "selected a disabled account");
            prop_assert!(state.cooldown_until.is_none(), "selected a cooling account");
            let tracked = self.model.resolved_family(family);
            prop_assert!(
                !state
                    .family_cooldowns
                    .iter()
                    .any(|c| Some(&c.family) == tracked.as_ref()),
                "selected an account cooling for the family: {:?}",
                state
            );
            prop_assert!(
                state.tokens.is_none_or(|t| t >= 1),
                "selected an empty bucket"
            );
            let limit = tracked.as_deref().map(|f| self.model.limit_of(f));
            prop_assert!(
                !state
                    .usage
                    .iter()
                    .any(|u| Some(u.limit.limit_id()) == limit.as_deref()
                        && u.blocked_until.is_some()),
                "selected an account over the usage threshold of the family's limit: {:?}",
                state
            );

            if consume {
                let got = self.pool.consume(&account, now);
                let want = self.model.consume(&account, self.now);
                match (got, want) {
                    (Ok(()), Ok(())) => {}
                    (Err(PolicyError::NoToken { ready_in, .. }), Err(Some(ms))) => {
                        prop_assert_eq!(ready_in, Duration::from_millis(ms));
                    }
                    (got, want) => prop_assert!(false, "consume: {:?} vs {:?}", got, want),
                }
            }
            if let Some(limits) = usage {
                self.record_usage(&account, &report(self.now, limits))?;
            }
            let outcome = outcomes[step % outcomes.len()];
            let got = self.pool.report(&mut request, &account, outcome, now);
            let want = self.model.report(&mut mreq, &account, outcome, self.now);
            prop_assert_eq!(got, want, "report {:?}", outcome);
            self.check_state()?;
            match got {
                Decision::Retry => {}
                Decision::Wait(delay) => {
                    prop_assert!(delay > Duration::ZERO);
                    prop_assert!(delay <= self.pool.config().max_wait);
                    self.now += u64::try_from(delay.as_millis()).unwrap();
                }
                Decision::ReturnToClient { retry_after } => {
                    if let Some(wait) = retry_after {
                        prop_assert!(wait > Duration::ZERO);
                        prop_assert!(wait <= LONGEST_WAIT, "{:?}", wait);
                    }
                    return Ok(());
                }
            }
        }
        prop_assert!(false, "request loop did not end within 16 steps");
        Ok(())
    }

    fn run(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = Timestamp::from_millis(self.now);
        match op {
            Op::Add(i) => {
                let got = self.pool.add(id(*i));
                prop_assert_eq!(got.is_ok(), self.model.add(id(*i)));
            }
            Op::Remove(i) => {
                prop_assert_eq!(
                    self.pool.remove(&id(*i)).is_ok(),
                    self.model.remove(&id(*i))
                );
            }
            Op::Disable(i) => {
                prop_assert_eq!(
                    self.pool.disable(&id(*i)).is_ok(),
                    self.model.disable(&id(*i))
                );
            }
            Op::DisableFor(i, reason) => {
                let reason = DISABLED_REASONS[*reason];
                prop_assert_eq!(
                    self.pool.disable_for(&id(*i), reason).is_ok(),
                    self.model.disable_for(&id(*i), reason)
                );
            }
            Op::Enable(i) => {
                prop_assert_eq!(
                    self.pool.enable(&id(*i)).is_ok(),
                    self.model.enable(&id(*i))
                );
            }
            Op::Merge { accounts, direct } => {
                let doc = self.document(accounts);
                // Written as text and read back: junk usage fields read as absent, the rest
                // of the document as written.
                let text = self.document_text(accounts);
                let read: PolicyState = serde_json::from_str(&text)
                    .map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
                prop_assert_eq!(&read, &doc, "{}", text);
                if *direct {
                    self.merge(&doc)?;
                    self.file.merge(&doc);
                } else {
                    self.file.merge(&doc);
                    self.merge_file()?;
                }
            }
            Op::Take => self.take()?,
            Op::MarkRefreshed(i) => {
                prop_assert_eq!(
                    self.pool.mark_refreshed(&id(*i), now).is_ok(),
                    self.model.mark_refreshed(&id(*i), self.now)
                );
            }
            Op::Refund(i) => {
                prop_assert_eq!(
                    self.pool.refund(&id(*i), now).ok(),
                    self.model.refund(&id(*i), self.now)
                );
            }
            Op::Consume(i) => {
                let got = self.pool.consume(&id(*i), now);
                let want = self.model.consume(&id(*i), self.now);
                match (got, want) {
                    (Ok(()), Ok(())) | (Err(PolicyError::UnknownAccount { .. }), Err(None)) => {}
                    (Err(PolicyError::NoToken { ready_in, .. }), Err(Some(ms))) => {
                        prop_assert_eq!(ready_in, Duration::from_millis(ms));
                    }
                    (got, want) => prop_assert!(false, "consume: {:?} vs {:?}", got, want),
                }
            }
            Op::Advance(ms) => self.now += ms,
            Op::FloodLimits(i, count) => {
                for k in 0..*count {
                    let mut limit = LimitUsage::new(&format!("extra_{k}")).unwrap();
                    limit.primary = Some(window(
                        self.now,
                        &GenWindow {
                            percent: 3, // 50 %
                            minutes: Some(300),
                            resets: Some(3_600_000),
                        },
                    ));
                    let mut report = UsageReport::default();
                    report.push(limit);
                    prop_assert_eq!(
                        self.pool.record_usage(&id(*i), &report, now).is_ok(),
                        self.model.record_usage(&id(*i), &report, self.now)
                    );
                }
            }
            Op::RecordUsage(reports) => {
                for (i, limits) in reports {
                    self.record_usage(&id(*i), &report(self.now, limits))?;
                }
            }
            Op::Nudge { who, limit, steps } => {
                let key = (id(*who), LIMITS[*limit].0.to_owned());
                if let Some(last) = self.sent.get(&key) {
                    let mut next = last.clone();
                    for (w, step) in [&mut next.primary, &mut next.secondary]
                        .into_iter()
                        .zip(steps)
                    {
                        if let Some(w) = w {
                            let used = (w.used_percent.get() + NUDGES[*step]).max(0.0);
                            w.used_percent = Percent::new(used).unwrap();
                        }
                    }
                    let mut report = UsageReport::default();
                    report.push(next);
                    self.record_usage(&key.0, &report)?;
                }
            }
            // (the round trip is checked after every step, below)
            Op::Serve {
                family,
                session,
                pinned,
                consume,
                outcomes,
                usage,
            } => {
                let session = session.map(|s| format!("session-{s}"));
                self.serve(
                    FAMILIES[*family],
                    session,
                    pinned.map(id),
                    *consume,
                    outcomes,
                    usage.as_deref(),
                )?;
            }
        }
        self.check_state()?;
        self.check_round_trip()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn pool_matches_reference_model(
        config in config(),
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let capacity = config.bucket.map(|b| b.capacity);
        let mut h = Harness {
            pool: Pool::new(config.clone(), seed).unwrap(),
            model: Model::new(config, seed),
            now: 0,
            capacity,
            file: PolicyState::default(),
            sent: HashMap::new(),
        };
        for op in &ops {
            h.run(op)?;
        }
    }

    /// The same comparison on quota traffic (`quota_op`) through a pool of every account,
    /// mostly quota-aware: the usage rules (margin, learned request size, last twentieth,
    /// 429s on full windows, the order by end) decide among several usable accounts.
    #[test]
    fn pool_matches_reference_model_on_quota_traffic(
        config in config(),
        strategy in prop_oneof![
            4 => Just(Pick::QuotaAware),
            1 => Just(Pick::Sticky),
            1 => Just(Pick::LeastRecentlyUsed),
        ],
        seed in any::<u64>(),
        ops in proptest::collection::vec(quota_op(), 1..80),
    ) {
        let mut config = config;
        config.strategy = strategy;
        let capacity = config.bucket.map(|b| b.capacity);
        let mut h = Harness {
            pool: Pool::new(config.clone(), seed).unwrap(),
            model: Model::new(config, seed),
            now: 0,
            capacity,
            file: PolicyState::default(),
            sent: HashMap::new(),
        };
        for i in 0..ACCOUNTS {
            h.run(&Op::Add(i))?;
        }
        for op in &ops {
            h.run(op)?;
        }
    }
}

/// A hand-written run through the model and the pool that must hit every outcome kind, so
/// the property test's comparison is known to exercise real state (not only empty pools).
#[test]
fn reference_model_and_pool_agree_on_a_scripted_run() {
    let mut config = PolicyConfig::default();
    config.jitter_percent = 25;
    config.bucket = Some(TokenBucket::new(2, Duration::from_millis(500)));
    config.forbidden_cooldown = Duration::from_secs(5);
    config.unauthorized_cooldown = Duration::from_secs(5);
    config.disable_after_unauthorized = 100;
    let mut h = Harness {
        pool: Pool::new(config.clone(), 9).unwrap(),
        model: Model::new(config, 9),
        now: 0,
        capacity: Some(2),
        file: PolicyState::default(),
        sent: HashMap::new(),
    };
    for i in 0..4 {
        h.run(&Op::Add(i)).unwrap();
    }
    let all = vec![
        Outcome::RateLimited { retry_after: None },
        Outcome::ServerError,
        Outcome::ServerError,
        Outcome::ServerError,
        Outcome::Unauthorized,
        Outcome::Forbidden,
        Outcome::Timeout,
        Outcome::NetworkError,
        Outcome::Success,
    ];
    for round in 0..30u8 {
        h.run(&Op::Serve {
            family: usize::from(round % 2),
            session: Some(round % 3),
            pinned: None,
            consume: true,
            outcomes: all[usize::from(round) % all.len()..].to_vec(),
            usage: None,
        })
        .unwrap();
        h.run(&Op::Advance(9_000)).unwrap();
    }
    let status = h.pool.status(Timestamp::from_millis(h.now));
    let o = status.counters.outcomes;
    assert!(
        o.rate_limited > 0 && o.server_error > 0 && o.unauthorized > 0 && o.success > 0,
        "{o:?}"
    );
    assert!(status.counters.rotations > 0);
}
