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

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::rng::SplitMix64;
use crate::{
    AccountId, Counters, Decision, Outcome, PolicyConfig, PolicyError, Pool, Request, RetryAfter,
    Selection, Timestamp,
};

/// The simulated world.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct SimConfig {
    /// Accounts in the pool.
    pub accounts: usize,
    /// Client requests to serve.
    pub requests: usize,
    /// Seed for the upstream, the traffic and the pool's jitter.
    pub seed: u64,
    /// The policy under test.
    pub policy: PolicyConfig,
    /// Average gap between client requests (uniform in 0..2×gap).
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
}

/// Marks an arrival event in the queue.
const ARRIVAL: usize = usize::MAX;

/// A request in flight in the simulation.
struct Live {
    request: Request,
    family: usize,
    /// The dispatched attempt waiting for its response: account and what the upstream said.
    pending: Option<(AccountId, Outcome)>,
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
}

const WINDOW_MS: u64 = 60_000;

/// Runs the simulation. Fails only if `config.policy` is invalid.
pub fn simulate(config: &SimConfig) -> Result<SimReport, PolicyError> {
    let mut pool = Pool::new(config.policy.clone(), config.seed)?;
    let mut rng = SplitMix64::new(config.seed ^ 0x005E_ED0F_5111);
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
    };
    let gap = u64::try_from(config.request_gap.as_millis()).unwrap_or(u64::MAX);
    // Event queue: (time, sequence, what). Requests overlap in virtual time like they do
    // in a proxy: a new one arrives while earlier ones wait for the upstream.
    let mut events: BinaryHeap<Reverse<(u64, u64, usize)>> = BinaryHeap::new();
    let mut seq: u64 = 0;
    let mut live: HashMap<usize, Live> = HashMap::new();
    let max_passes = config
        .policy
        .max_attempts
        .saturating_mul(3)
        .saturating_add(2);
    let mut arrived = 0usize;
    let mut clock: u64 = 0;
    if config.requests > 0 {
        events.push(Reverse((0, seq, ARRIVAL)));
    }
    // Bounded: each request schedules at most `max_passes` steps, and arrivals stop after
    // `config.requests`.
    while let Some(Reverse((time, _, which))) = events.pop() {
        clock = time;
        let now = Timestamp::from_millis(clock);
        let which = if which == ARRIVAL {
            let family = rng.below(families.len() as u64) as usize;
            let mut request = Request::new(families[family].clone());
            if config.sessions > 0 {
                request = request.with_session(format!("s{}", rng.below(config.sessions as u64)));
            }
            live.insert(
                arrived,
                Live {
                    request,
                    family,
                    pending: None,
                    passes: 0,
                },
            );
            report.requests += 1;
            arrived += 1;
            if arrived < config.requests {
                let next = clock.saturating_add(rng.below(gap.saturating_mul(2).saturating_add(1)));
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
        } else if let Some((account, outcome)) = state.pending.take() {
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
                        let outcome = call_upstream(
                            config,
                            &mut upstream,
                            &mut rng,
                            index,
                            state.family,
                            clock,
                        );
                        state.pending = Some((account, outcome));
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
                live.remove(&which);
            }
        }
    }
    report.virtual_ms = clock;
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

fn call_upstream(
    config: &SimConfig,
    upstream: &mut Upstream,
    rng: &mut SplitMix64,
    account: usize,
    family: usize,
    clock: u64,
) -> Outcome {
    if account < config.revoked_accounts {
        return Outcome::Unauthorized;
    }
    let roll = rng.below(1_000_000);
    let glitch = u64::from(config.glitch_ppm);
    if roll < glitch {
        return Outcome::NetworkError;
    }
    if roll < 2 * glitch {
        return Outcome::Timeout;
    }
    if rng.below(1_000_000) < u64::from(config.incident_ppm) {
        let length = u64::try_from(config.incident_length.as_millis()).unwrap_or(u64::MAX);
        upstream.incident_until[account] = clock.saturating_add(length);
    }
    if clock < upstream.incident_until[account] && rng.below(10) < 8 {
        return Outcome::ServerError;
    }
    let limit = (config.upstream_limit as u64 * (1 + account as u64 % 3) / 2).max(1);
    let window = &mut upstream.windows[account][family];
    if clock >= window.0 + WINDOW_MS {
        *window = (clock - clock % WINDOW_MS, 0);
    }
    if u64::from(window.1) >= limit {
        // A real upstream's headers, through the same parser a proxy uses.
        let mut headers = HeaderMap::new();
        let reset = window.0 + WINDOW_MS - clock;
        if let Ok(value) = HeaderValue::from_str(&reset.to_string()) {
            headers.insert("retry-after-ms", value);
        }
        let wall = UNIX_EPOCH + Duration::from_millis(clock);
        return Outcome::RateLimited {
            retry_after: RetryAfter::from_headers(&headers, wall)
                .ok()
                .flatten()
                .map(|hint| hint.wait),
        };
    }
    window.1 += 1;
    Outcome::Success
}
