//! A deterministic simulation of a proxy driving a [`Pool`] against a synthetic upstream,
//! for tuning a [`PolicyConfig`] and for regression tests.
//!
//! The upstream gives every account a fixed-window request limit per model family (answering
//! `429` with `retry-after-ms` up to the window's end, parsed by [`RetryAfter`] like a real
//! proxy would), occasional incidents during which most requests fail with 5xx, a sprinkle of
//! network errors and timeouts, and optionally a few accounts whose token was revoked (401).
//! Requests are served one after another in virtual time; all randomness comes from `seed`,
//! so the same [`SimConfig`] always gives the same [`SimReport`].
//!
//! ```
//! use rotation_policy::sim::{simulate, SimConfig};
//!
//! let mut config = SimConfig::default();
//! config.accounts = 5;
//! config.requests = 200;
//! let report = simulate(&config)?;
//! assert_eq!(report.requests, 200);
//! assert_eq!(report, simulate(&config)?); // deterministic
//! # Ok::<(), rotation_policy::PolicyError>(())
//! ```
//!
//! # Usage windows
//!
//! With [`SimConfig::windows`] the upstream also meters every account the way a ChatGPT
//! plan meters Codex — a 5-hour window that starts at first use and a weekly window on a
//! staggered schedule ([`WindowModel`] has the rules) — and reports the account's usage with
//! every answer, which the simulation passes to [`Pool::record_usage`]. With
//! [`SimConfig::demand`] requests follow a daily and weekly curve ([`Demand`]) over whole
//! days instead of a constant rate. [`SimConfig::windowed`] sets both up and turns the other
//! upstream troubles off, so strategies can be compared on quota alone:
//!
//! ```
//! use rotation_policy::Strategy;
//! use rotation_policy::sim::{simulate, SimConfig};
//!
//! let mut config = SimConfig::windowed(6, 2); // 6 accounts, 2 days
//! let mut runs = Vec::new();
//! for strategy in [Strategy::LeastRecentlyUsed, Strategy::QuotaAware] {
//!     config.policy.strategy = strategy;
//!     let report = simulate(&config)?;
//!     let windows = report.windows.clone().expect("window model on");
//!     assert_eq!(report.served + windows.refused, report.requests);
//!     runs.push(report);
//! }
//! // The same seed draws the same workload for every strategy.
//! assert_eq!(runs[0].requests, runs[1].requests);
//! # Ok::<(), rotation_policy::PolicyError>(())
//! ```
//!
//! Requests overlap in virtual time as they would in a proxy (a new one can arrive while
//! earlier ones wait 0.3–1.5 s for the upstream); at the rates the demand curve produces
//! that is rare, so they are in effect served one after another.

mod demand;
mod windows;

pub use demand::{Demand, WEEKDAY_SHAPE};
pub use windows::{WindowModel, WindowUse};

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::rng::SplitMix64;
use crate::usage::UsageReport;
use crate::{
    AccountId, Counters, Decision, Outcome, PolicyConfig, PolicyError, Pool, Request, RetryAfter,
    Selection, Timestamp,
};
use demand::Arrivals;
use windows::{AccountWindows, Charge, Expiry};

/// The simulated world.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct SimConfig {
    /// Accounts in the pool.
    pub accounts: usize,
    /// Client requests to serve (not used with a [`demand`](Self::demand) curve).
    pub requests: usize,
    /// Seed for the upstream, the traffic and the pool's jitter.
    pub seed: u64,
    /// The policy under test.
    pub policy: PolicyConfig,
    /// Average gap between client requests (uniform in 0..2×gap; not used with a
    /// [`demand`](Self::demand) curve).
    pub request_gap: Duration,
    /// Distinct session keys requests are spread over (0 = no sessions).
    pub sessions: usize,
    /// Model families requests are spread over.
    pub families: Vec<String>,
    /// Requests one account may make per model family per minute before the upstream
    /// answers 429 (account *i* gets this × (1 + i mod 3) / 2, so limits differ).
    pub upstream_limit: u32,
    /// Chance per attempt, in parts per million, that the account enters a 5xx incident.
    pub incident_ppm: u32,
    /// How long an incident lasts; 80% of attempts in it fail with 5xx.
    pub incident_length: Duration,
    /// Chance per attempt, in parts per million, of a network error (and again of a timeout).
    pub glitch_ppm: u32,
    /// The first this-many accounts have revoked tokens and always get 401.
    pub revoked_accounts: usize,
    /// Usage windows metered by the upstream, reported with every 200 and 429 and given to
    /// [`Pool::record_usage`]. `None` (default): no windows, no usage reports.
    pub windows: Option<WindowModel>,
    /// Requests arrive following this daily and weekly curve over whole days, instead of
    /// `requests` requests `request_gap` apart. `None` (default): constant rate.
    pub demand: Option<Demand>,
    /// Keep every upstream call the window model judged in [`WindowReport::calls`], for
    /// tests and diagnosis (a simulated week is tens of thousands of entries).
    /// Default: false.
    pub record_calls: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            accounts: 50,
            requests: 10_000,
            seed: 1,
            policy: PolicyConfig::default(),
            request_gap: Duration::from_millis(60),
            sessions: 200,
            families: vec!["gpt-5".to_owned(), "gpt-5-codex".to_owned()],
            upstream_limit: 10,
            incident_ppm: 2_000,
            incident_length: Duration::from_secs(20),
            glitch_ppm: 3_000,
            revoked_accounts: 2,
            windows: None,
            demand: None,
            record_calls: false,
        }
    }
}

impl SimConfig {
    /// The world for comparing strategies on usage windows: `accounts` accounts metered by
    /// the default [`WindowModel`], traffic following the default [`Demand`] over `days`
    /// days, and no other trouble (no per-minute limit, 5xx incidents, glitches or revoked
    /// tokens) and no session keys, so that the strategy alone decides which account serves
    /// (the simulated sessions are random keys, and affinity would override the strategy
    /// for most requests). Everything else is [`SimConfig::default`].
    ///
    /// ```
    /// use rotation_policy::sim::SimConfig;
    /// let config = SimConfig::windowed(20, 7);
    /// assert_eq!(config.demand.as_ref().map(|d| d.days), Some(7));
    /// assert_eq!((config.glitch_ppm, config.sessions), (0, 0));
    /// ```
    pub fn windowed(accounts: usize, days: u32) -> SimConfig {
        SimConfig {
            accounts,
            sessions: 0,
            upstream_limit: u32::MAX,
            incident_ppm: 0,
            glitch_ppm: 0,
            revoked_accounts: 0,
            windows: Some(WindowModel::default()),
            demand: Some(Demand {
                days,
                ..Demand::default()
            }),
            ..SimConfig::default()
        }
    }
}

/// Per-account results.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SimAccount {
    /// The account's id (`acct-NN`).
    pub id: String,
    /// Attempts sent with it.
    pub attempts: u64,
    /// Successful attempts.
    pub successes: u64,
    /// 429s it got.
    pub rate_limited: u64,
    /// 5xx, network errors and timeouts it got.
    pub failures: u64,
    /// Health at the end.
    pub health: u8,
    /// Disabled at the end.
    pub disabled: bool,
}

/// What happened, in numbers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SimReport {
    /// Client requests.
    pub requests: u64,
    /// Requests answered with a success.
    pub served: u64,
    /// Requests returned with the last upstream error after the policy gave up.
    pub upstream_errors: u64,
    /// Requests answered 429 because no account was usable (`Selection::Exhausted` or a
    /// give-up with `retry_after`).
    pub pool_exhausted: u64,
    /// Requests answered 503 because no enabled account was left.
    pub no_account: u64,
    /// `Decision::Wait` answers and their total length.
    pub waits: u64,
    /// Sum of all waits (ms).
    pub wait_ms: u64,
    /// Longest `retry_after` given to a client (ms).
    pub max_retry_after_ms: u64,
    /// `select` + `consume` + `report` calls made.
    pub decisions: u64,
    /// Virtual time the run took (ms).
    pub virtual_ms: u64,
    /// The pool's counters at the end.
    pub counters: Counters,
    /// Fewest / most attempts on one enabled account.
    pub load_min: u64,
    /// See `load_min`.
    pub load_max: u64,
    /// Per account, in pool order.
    pub accounts: Vec<SimAccount>,
    /// Usage-window results, when [`SimConfig::windows`] is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<WindowReport>,
}

/// What the usage windows saw in one run.
///
/// Every request ends served or refused: `served` (in [`SimReport`]) + `refused` =
/// `requests`. The 429s the pool saw are [`Counters::outcomes`]`.rate_limited`; with the
/// per-minute limit off (as in [`SimConfig::windowed`]) they are exactly `window_429s`.
///
/// ```
/// use rotation_policy::sim::{simulate, SimConfig};
/// let report = simulate(&SimConfig::windowed(3, 1))?;
/// let windows = report.windows.expect("window model on");
/// assert_eq!(report.served + windows.refused, report.requests);
/// assert_eq!(report.counters.outcomes.rate_limited, windows.window_429s);
/// assert_eq!(windows.weekly_resets.len(), 3);
/// # Ok::<(), rotation_policy::PolicyError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WindowReport {
    /// Upstream 429 answers because a request would have overflowed a usage window.
    pub window_429s: u64,
    /// Of those, answers where the weekly window would have overflowed.
    pub weekly_429s: u64,
    /// Requests the client did not get served (pool exhausted, or the policy gave up after
    /// 429s or other errors): `requests − served`.
    pub refused: u64,
    /// Requests refused, by the day they arrived on (index 0 = the first day; no entries
    /// after the last day with a refusal).
    pub refused_by_day: Vec<u64>,
    /// Usage units of every request that arrived, each counted once however often tried.
    pub demand_units: u64,
    /// Units of the served requests.
    pub served_units: u64,
    /// The primary (5 h) windows that ended during the run and what was left in them.
    pub primary: WindowUse,
    /// The weekly windows that ended during the run and what was left in them: capacity
    /// that expired unused.
    pub secondary: WindowUse,
    /// Per account (pool order): when its first weekly window reset (ms from the start).
    pub weekly_resets: Vec<u64>,
    /// Every call the window model judged, in order, when [`SimConfig::record_calls`] is
    /// on (empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<UpstreamCall>,
}

/// One upstream call as the window model judged it (see [`SimConfig::record_calls`]).
///
/// ```
/// use rotation_policy::sim::{simulate, SimConfig};
/// let mut config = SimConfig::windowed(2, 1);
/// config.record_calls = true;
/// let report = simulate(&config)?;
/// let calls = report.windows.expect("window model on").calls;
/// assert!(calls.windows(2).all(|pair| pair[0].at_ms <= pair[1].at_ms));
/// assert!(calls.iter().all(|c| c.served == c.retry_after_ms.is_none()));
/// # Ok::<(), rotation_policy::PolicyError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UpstreamCall {
    /// When the upstream judged it (ms from the start).
    pub at_ms: u64,
    /// The account, by its index in the pool (`acct-NN`).
    pub account: usize,
    /// The request's cost in units.
    pub cost: u32,
    /// Served (200), else refused with 429.
    pub served: bool,
    /// For a 429: the `retry-after-ms` sent, time until the blocking window resets.
    pub retry_after_ms: Option<u64>,
    /// For a 429: whether the weekly window would have overflowed.
    pub weekly_full: bool,
    /// Units used in the running primary window after the call (0 if none runs).
    pub primary_used: u64,
    /// When that primary window resets, if one runs.
    pub primary_resets_at: Option<u64>,
    /// Units used in the weekly window after the call.
    pub secondary_used: u64,
    /// When the weekly window resets.
    pub secondary_resets_at: u64,
}

/// Marks an arrival event in the queue.
const ARRIVAL: usize = usize::MAX;

/// Most requests a demand curve may bring (a hard bound on the run, far above any
/// curve a validated [`Demand`] and a pool of a million accounts produce in practice).
const MAX_DEMAND_ARRIVALS: usize = 100_000_000;

/// A request in flight in the simulation.
struct Live {
    request: Request,
    family: usize,
    /// Units it costs when served (window model only).
    cost: u32,
    /// When it arrived (ms).
    arrived_at: u64,
    /// Whether it ended served.
    served: bool,
    /// The dispatched attempt waiting for its response: account, what the upstream said,
    /// and the usage its answer carried.
    pending: Option<(AccountId, Outcome, Option<UsageReport>)>,
    passes: u32,
}

impl SimReport {
    fn exhausted(&mut self, retry_after: Duration) {
        self.pool_exhausted += 1;
        let ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX);
        self.max_retry_after_ms = self.max_retry_after_ms.max(ms);
    }
}

struct Upstream {
    /// Per (account, family): (window start ms, requests in window).
    windows: Vec<Vec<(u64, u32)>>,
    /// Per account: incident end (ms).
    incident_until: Vec<u64>,
    /// The usage windows, when modelled.
    quota: Option<Quota>,
}

/// The upstream's usage windows of every account, and what they saw.
struct Quota {
    model: WindowModel,
    accounts: Vec<AccountWindows>,
    expiry: Expiry,
    report: WindowReport,
    record_calls: bool,
}

impl Quota {
    fn new(model: &WindowModel, accounts: usize, seed: u64, record_calls: bool) -> Self {
        // Staggered weeks: each account's first weekly reset is somewhere in the first week.
        let mut phases = SplitMix64::new(seed ^ 0x00FA_5E5A_17ED);
        let week = model.secondary_ms();
        let resets: Vec<u64> = (0..accounts).map(|_| 1 + phases.below(week)).collect();
        Quota {
            model: model.clone(),
            accounts: resets
                .iter()
                .map(|&at| AccountWindows::new(at, AccountWindows::used_at_start(model, at)))
                .collect(),
            expiry: Expiry::default(),
            report: WindowReport {
                weekly_resets: resets,
                ..WindowReport::default()
            },
            record_calls,
        }
    }

    /// The usage an answer reports without serving anything (e.g. another limit's 429).
    fn usage(&mut self, account: usize, clock: u64) -> Option<UsageReport> {
        let windows = self.accounts.get_mut(account)?;
        windows.advance(clock, &self.model, &mut self.expiry);
        Some(windows.report(&self.model, 0))
    }

    /// Serves or refuses a request of `cost` units; the retry-after (ms) of a refusal, and
    /// the usage the answer reports.
    fn call(&mut self, account: usize, cost: u32, clock: u64) -> (Option<u64>, UsageReport) {
        let Some(windows) = self.accounts.get_mut(account) else {
            return (None, UsageReport::default());
        };
        windows.advance(clock, &self.model, &mut self.expiry);
        let charge = windows.charge(clock, cost, &self.model);
        let (retry_after_ms, weekly_full, uncounted) = match charge {
            Charge::Served => {
                self.report.served_units += u64::from(cost);
                let uncounted = if self.model.reports_include_request {
                    0
                } else {
                    u64::from(cost)
                };
                (None, false, uncounted)
            }
            Charge::Refused { resets_at, weekly } => {
                self.report.window_429s += 1;
                self.report.weekly_429s += u64::from(weekly);
                (Some(resets_at.saturating_sub(clock)), weekly, 0)
            }
        };
        if self.record_calls {
            self.report.calls.push(UpstreamCall {
                at_ms: clock,
                account,
                cost,
                served: retry_after_ms.is_none(),
                retry_after_ms,
                weekly_full,
                primary_used: windows.primary_used(),
                primary_resets_at: windows.primary_resets_at(),
                secondary_used: windows.secondary_used(),
                secondary_resets_at: windows.secondary_resets_at(),
            });
        }
        (retry_after_ms, windows.report(&self.model, uncounted))
    }

    /// Ends every window that reset by `end` and hands over the results.
    fn finish(mut self, end: u64, requests: u64, served: u64) -> WindowReport {
        for windows in &mut self.accounts {
            windows.advance(end, &self.model, &mut self.expiry);
        }
        self.report.primary = self.expiry.primary;
        self.report.secondary = self.expiry.secondary;
        self.report.refused = requests.saturating_sub(served);
        self.report
    }
}

const WINDOW_MS: u64 = 60_000;

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// Longest [`WindowReport::refused_by_day`] (the last entry counts every later day).
const MAX_DAYS_COUNTED: usize = 1_000;

/// Runs the simulation. Fails only if `config.policy`, `config.windows` or
/// `config.demand` is invalid (the error names the field).
pub fn simulate(config: &SimConfig) -> Result<SimReport, PolicyError> {
    let mut pool = Pool::new(config.policy.clone(), config.seed)?;
    if let Some(model) = &config.windows {
        model.validate()?;
    }
    if let Some(demand) = &config.demand {
        demand.validate()?;
    }
    let mut rng = SplitMix64::new(config.seed ^ 0x005E_ED0F_5111);
    // With a demand curve the workload (arrival times, families, sessions, costs) has its
    // own generator, so every strategy gets the same one: retries and waits draw from
    // `rng` and would shift it. (Constant-rate runs keep drawing from `rng`, so their
    // numbers are unchanged.)
    let (arrivals, mut workload) = match &config.demand {
        Some(demand) => {
            let mut workload = SplitMix64::new(config.seed ^ 0x0057_0AD0_DE3A);
            let arrivals = Arrivals::new(demand, config.accounts, &mut workload);
            (Some(arrivals), Some(workload))
        }
        None => (None, None),
    };
    let ids: Vec<AccountId> = (0..config.accounts)
        .map(|i| AccountId::new(format!("acct-{i:02}")))
        .collect::<Result<_, _>>()?;
    let mut index_of = HashMap::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        pool.add(id.clone())?;
        index_of.insert(id.clone(), i);
    }
    let families: Vec<String> = if config.families.is_empty() {
        vec!["default".to_owned()]
    } else {
        config.families.clone()
    };
    let mut upstream = Upstream {
        windows: vec![vec![(0, 0); families.len()]; config.accounts],
        incident_until: vec![0; config.accounts],
        quota: config
            .windows
            .as_ref()
            .map(|model| Quota::new(model, config.accounts, config.seed, config.record_calls)),
    };
    let mut report = SimReport {
        requests: 0,
        served: 0,
        upstream_errors: 0,
        pool_exhausted: 0,
        no_account: 0,
        waits: 0,
        wait_ms: 0,
        max_retry_after_ms: 0,
        decisions: 0,
        virtual_ms: 0,
        counters: Counters::default(),
        load_min: 0,
        load_max: 0,
        accounts: Vec::new(),
        windows: None,
    };
    let gap = u64::try_from(config.request_gap.as_millis()).unwrap_or(u64::MAX);
    // Event queue: (time, sequence, what). Requests overlap in virtual time like they do
    // in a proxy: a new one arrives while earlier ones wait for the upstream.
    let mut events: BinaryHeap<Reverse<(u64, u64, usize)>> = BinaryHeap::new();
    let mut seq: u64 = 0;
    let mut live: HashMap<usize, Live> = HashMap::new();
    // A 429 from a spent usage window does not use up an attempt, so a request may be tried
    // on every account once.
    let max_passes = config
        .policy
        .max_attempts
        .saturating_add(u32::try_from(config.accounts).unwrap_or(u32::MAX))
        .saturating_mul(3)
        .saturating_add(2);
    let usage_reports = upstream
        .quota
        .as_ref()
        .is_some_and(|q| q.model.usage_reports);
    if let Some(quota) = upstream.quota.as_mut()
        && quota.model.usage_known_at_start
        && quota.model.usage_reports
    {
        for (i, id) in ids.iter().enumerate() {
            if let Some(usage) = quota.usage(i, 0) {
                pool.record_usage(id, &usage, Timestamp::ZERO)?;
            }
        }
    }
    let mut arrived = 0usize;
    let mut clock: u64 = 0;
    let first = match (&arrivals, workload.as_mut()) {
        (Some(arrivals), Some(workload)) => arrivals.next(0, workload),
        _ => (config.requests > 0).then_some(0),
    };
    if let Some(at) = first {
        events.push(Reverse((at, seq, ARRIVAL)));
    }
    // Bounded: each request schedules at most `max_passes` steps, and arrivals stop after
    // `config.requests` (or at the end of the demand curve, and after
    // `MAX_DEMAND_ARRIVALS`).
    while let Some(Reverse((time, _, which))) = events.pop() {
        clock = time;
        let now = Timestamp::from_millis(clock);
        let which = if which == ARRIVAL {
            let draw = match workload.as_mut() {
                Some(workload) => workload,
                None => &mut rng,
            };
            let family = draw.below(families.len() as u64) as usize;
            let mut request = Request::new(families[family].clone());
            if config.sessions > 0 {
                request = request.with_session(format!("s{}", draw.below(config.sessions as u64)));
            }
            let mut cost = 0;
            if let Some(quota) = upstream.quota.as_mut() {
                let spread = u64::from(quota.model.cost_max - quota.model.cost_min);
                // ok: below(spread + 1) ≤ spread, which fits in u32.
                cost = quota.model.cost_min + u32::try_from(draw.below(spread + 1)).unwrap_or(0);
                quota.report.demand_units += u64::from(cost);
            }
            live.insert(
                arrived,
                Live {
                    request,
                    family,
                    cost,
                    arrived_at: clock,
                    served: false,
                    pending: None,
                    passes: 0,
                },
            );
            report.requests += 1;
            arrived += 1;
            let next = match &arrivals {
                Some(arrivals) if arrived < MAX_DEMAND_ARRIVALS => arrivals.next(clock, draw),
                Some(_) => None,
                None if arrived < config.requests => {
                    Some(clock.saturating_add(draw.below(gap.saturating_mul(2).saturating_add(1))))
                }
                None => None,
            };
            if let Some(next) = next {
                seq += 1;
                events.push(Reverse((next, seq, ARRIVAL)));
            }
            arrived - 1
        } else {
            which
        };
        let Some(state) = live.get_mut(&which) else {
            continue;
        };
        state.passes += 1;
        let next = if state.passes > max_passes {
            report.upstream_errors += 1;
            None
        } else if let Some((account, outcome, usage)) = state.pending.take() {
            // A proxy reads the usage headers of every answer before deciding on it.
            if let Some(usage) = usage.filter(|_| usage_reports) {
                pool.record_usage(&account, &usage, now)?;
            }
            report.decisions += 1;
            match pool.report(&mut state.request, &account, outcome, now) {
                Decision::Retry => Some(clock),
                Decision::Wait(delay) => {
                    let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                    report.waits += 1;
                    report.wait_ms = report.wait_ms.saturating_add(ms);
                    Some(clock.saturating_add(ms))
                }
                Decision::ReturnToClient { retry_after } => {
                    if outcome == Outcome::Success {
                        report.served += 1;
                        state.served = true;
                    } else if let (Outcome::RateLimited { .. }, Some(wait)) = (outcome, retry_after)
                    {
                        report.exhausted(wait);
                    } else {
                        report.upstream_errors += 1;
                    }
                    None
                }
            }
        } else {
            report.decisions += 1;
            match pool.select(&mut state.request, now) {
                Selection::Account(account) => {
                    report.decisions += 1;
                    if pool.consume(&account, now).is_err() {
                        // Cannot happen right after select in one thread.
                        report.upstream_errors += 1;
                        None
                    } else {
                        let index = index_of.get(&account).copied().unwrap_or(0);
                        let (outcome, usage) = call_upstream(
                            config,
                            &mut upstream,
                            &mut rng,
                            Call {
                                account: index,
                                family: state.family,
                                cost: state.cost,
                                clock,
                            },
                        );
                        state.pending = Some((account, outcome, usage));
                        Some(clock.saturating_add(300 + rng.below(1_200)))
                    }
                }
                Selection::Exhausted { retry_after } => {
                    report.exhausted(retry_after);
                    None
                }
                Selection::NoAccount => {
                    report.no_account += 1;
                    None
                }
            }
        };
        match next {
            Some(at) => {
                seq += 1;
                events.push(Reverse((at, seq, which)));
            }
            None => {
                if let Some(done) = live.remove(&which)
                    && let Some(quota) = upstream.quota.as_mut()
                    && !done.served
                {
                    // Bounded: a run of constant-rate traffic with huge gaps shares the last
                    // day's count rather than growing the list without end.
                    let day = usize::try_from(done.arrived_at / DAY_MS)
                        .unwrap_or(usize::MAX)
                        .min(MAX_DAYS_COUNTED - 1);
                    let by_day = &mut quota.report.refused_by_day;
                    if by_day.len() <= day {
                        by_day.resize(day + 1, 0);
                    }
                    by_day[day] += 1;
                }
            }
        }
    }
    report.virtual_ms = clock;
    if let Some(quota) = upstream.quota.take() {
        let demand_end = config.demand.as_ref().map_or(0, Demand::end_ms);
        report.windows = Some(quota.finish(clock.max(demand_end), report.requests, report.served));
    }
    let status = pool.status(Timestamp::from_millis(clock));
    report.counters = status.counters;
    report.accounts = status
        .accounts
        .iter()
        .map(|a| SimAccount {
            id: a.id.to_string(),
            attempts: a.attempts,
            successes: a.outcomes.success,
            rate_limited: a.outcomes.rate_limited,
            failures: a.outcomes.server_error + a.outcomes.network_error + a.outcomes.timeout,
            health: a.health,
            disabled: a.disabled.is_some(),
        })
        .collect();
    let enabled = report.accounts.iter().filter(|a| !a.disabled);
    report.load_min = enabled.clone().map(|a| a.attempts).min().unwrap_or(0);
    report.load_max = enabled.map(|a| a.attempts).max().unwrap_or(0);
    Ok(report)
}

/// One attempt as the upstream sees it.
struct Call {
    account: usize,
    family: usize,
    cost: u32,
    clock: u64,
}

/// The upstream's answer to one attempt, and the usage it reports (window model only; on
/// 200 and 429 answers, as the real backend sends usage headers with both).
fn call_upstream(
    config: &SimConfig,
    upstream: &mut Upstream,
    rng: &mut SplitMix64,
    call: Call,
) -> (Outcome, Option<UsageReport>) {
    let Call {
        account,
        family,
        cost,
        clock,
    } = call;
    if account < config.revoked_accounts {
        return (Outcome::Unauthorized, None);
    }
    let roll = rng.below(1_000_000);
    let glitch = u64::from(config.glitch_ppm);
    if roll < glitch {
        return (Outcome::NetworkError, None);
    }
    if roll < 2 * glitch {
        return (Outcome::Timeout, None);
    }
    if rng.below(1_000_000) < u64::from(config.incident_ppm) {
        let length = u64::try_from(config.incident_length.as_millis()).unwrap_or(u64::MAX);
        upstream.incident_until[account] = clock.saturating_add(length);
    }
    if clock < upstream.incident_until[account] && rng.below(10) < 8 {
        return (Outcome::ServerError, None);
    }
    let limit = (config.upstream_limit as u64 * (1 + account as u64 % 3) / 2).max(1);
    let window = &mut upstream.windows[account][family];
    if clock >= window.0 + WINDOW_MS {
        *window = (clock - clock % WINDOW_MS, 0);
    }
    if u64::from(window.1) >= limit {
        let usage = upstream
            .quota
            .as_mut()
            .and_then(|quota| quota.usage(account, clock));
        return (rate_limited(window.0 + WINDOW_MS - clock, clock), usage);
    }
    let Some(quota) = upstream.quota.as_mut() else {
        window.1 += 1;
        return (Outcome::Success, None);
    };
    match quota.call(account, cost, clock) {
        (Some(retry_after_ms), usage) => (rate_limited(retry_after_ms, clock), Some(usage)),
        (None, usage) => {
            window.1 += 1;
            (Outcome::Success, Some(usage))
        }
    }
}

/// A 429 with `retry-after-ms: wait_ms`, read through the same parser a proxy uses (which
/// caps it at one day; the policy then clamps it to `max_cooldown`).
fn rate_limited(wait_ms: u64, clock: u64) -> Outcome {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&wait_ms.to_string()) {
        headers.insert("retry-after-ms", value);
    }
    let wall = UNIX_EPOCH + Duration::from_millis(clock);
    Outcome::RateLimited {
        retry_after: RetryAfter::from_headers(&headers, wall)
            .ok()
            .flatten()
            .map(|hint| hint.wait),
    }
}
