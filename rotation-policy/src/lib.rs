//! Pure, clock-injected account selection and cooldown policy for rotating requests over a
//! pool of accounts.
//!
//! A rotation proxy spreads Codex/OpenAI traffic over several accounts. This crate is the
//! policy part of such a proxy as a plain data structure, [`Pool`]: which account serves the
//! next attempt, how long an account cools down after a 429, a 401 or a burst of 5xx, when to
//! retry on another account and when to give up, and exactly how long the client should wait.
//!
//! - **No I/O, no clock, no hidden randomness.** Every call takes `now` as a [`Timestamp`]
//!   (milliseconds since an epoch *you* choose: wall clock in a proxy, zero in a simulation).
//!   Jitter comes from a generator seeded by [`Pool::new`]. Same inputs, same decisions.
//! - **Accounts are addressed by your stable [`AccountId`]**; emails are refused, so none can
//!   end up in a status snapshot or error.
//! - **The policy decides**: [`Pool::report`] returns a [`Decision`] — retry on another
//!   account, wait N ms, or return to the client with an exact `retry_after`.
//! - **State survives restarts and is shared**: what decisions depend on (cooldowns,
//!   disables, health) exports as a serde [`PolicyState`] that several processes merge by
//!   written rules — see [Persisting and sharing state](#persisting-and-sharing-state).
//!
//! # The request loop
//!
//! This is the whole integration surface a proxy needs (here with a fake upstream):
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use http::{HeaderMap, StatusCode};
//! use rotation_policy::{
//!     AccountId, Decision, Outcome, PolicyConfig, Pool, Request, Selection, Timestamp,
//! };
//!
//! let mut pool = Pool::new(PolicyConfig::default(), /* jitter seed */ 42)?;
//! for id in ["acct-1", "acct-2"] {
//!     pool.add(AccountId::new(id)?)?;
//! }
//!
//! // Stand-in for the upstream call with this account's token: acct-1 is rate limited.
//! let upstream = |account: &AccountId| -> (StatusCode, HeaderMap) {
//!     let mut headers = HeaderMap::new();
//!     if account.as_str() == "acct-1" {
//!         headers.insert("retry-after-ms", "30000".parse().unwrap());
//!         (StatusCode::TOO_MANY_REQUESTS, headers)
//!     } else {
//!         (StatusCode::OK, headers)
//!     }
//! };
//!
//! // One client request (the model family and an optional session key come from it).
//! let mut request = Request::new("gpt-5").with_session("conversation-1");
//! let reply = loop {
//!     let wall = SystemTime::now();
//!     let now = Timestamp::from_system_time(wall);
//!     let account = match pool.select(&mut request, now) {
//!         Selection::Account(account) => account,
//!         // Every account is cooling down: tell the client exactly when to come back.
//!         Selection::Exhausted { retry_after } => {
//!             break format!("429, retry_after_ms={}", retry_after.as_millis());
//!         }
//!         Selection::NoAccount => break "503, no usable account".to_owned(),
//!     };
//!     pool.consume(&account, now)?; // one token per dispatch, under the same lock as select
//!     let (status, headers) = upstream(&account);
//!     let outcome = Outcome::from_response(status.as_u16(), &headers, wall);
//!     match pool.report(&mut request, &account, outcome, now) {
//!         Decision::Retry => continue,
//!         Decision::Wait(delay) => {
//!             std::thread::sleep(delay); // tokio::time::sleep(delay).await in an async proxy
//!             continue;
//!         }
//!         Decision::ReturnToClient { retry_after: None } => break format!("{status} via {account}"),
//!         Decision::ReturnToClient { retry_after: Some(wait) } => {
//!             // e.g. a 429 with `Retry-After: {ceil(secs)}` and `retry_after_ms`.
//!             break format!("{status}, retry_after_ms={}", wait.as_millis());
//!         }
//!     }
//! };
//! assert_eq!(reply, "200 OK via acct-2");
//!
//! // A serializable snapshot for a status endpoint (serde): counters + every account.
//! let status = pool.status(Timestamp::from_system_time(SystemTime::now()));
//! assert_eq!(status.counters.rotations, 1);
//! assert_eq!(status.accounts[0].family_cooldowns[0].family, "gpt-5");
//! let json = serde_json::to_string(&status)?;
//! assert!(json.contains("\"acct-1\""));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The rules
//!
//! An account is a **candidate** for a request when it is enabled, past its account-wide
//! cooldown, past its rate-limit cooldown for the request's model family, below the
//! [usage threshold](#usage-windows) in every window of the family's limit, has a whole token
//! in its bucket, and has not been tried for this request yet. Among candidates a session's
//! bound account wins (affinity, renewed for [`PolicyConfig::session_ttl`] on each use);
//! otherwise the [`Strategy`] picks (least recently used, round robin, health-weighted — a
//! share of picks proportional to health + 1, by stride scheduling —, quota-aware — a week
//! about to end first, else least recently used —, or sticky — the last pick while it can
//! serve) and the session moves to the pick.
//!
//! | outcome | effect on the account |
//! |---|---|
//! | [`Success`](Outcome::Success) | health +10; resets the 401, 429 and failure-burst streaks |
//! | [`RateLimited`](Outcome::RateLimited) | cooldown **for that family only**: `Retry-After` clamped to `min_cooldown..=max_cooldown`, else `rate_limit_backoff × 2^(streak−1)` + jitter; health −15 |
//! | [`Unauthorized`](Outcome::Unauthorized) | `needs_refresh`; account-wide `unauthorized_cooldown` (ended by [`Pool::mark_refreshed`]); disabled after `disable_after_unauthorized` in a row; health −40 |
//! | [`Forbidden`](Outcome::Forbidden) | account-wide `forbidden_cooldown`; health −40 |
//! | [`ServerError`](Outcome::ServerError), [`NetworkError`](Outcome::NetworkError), [`Timeout`](Outcome::Timeout) | health −20; `failure_burst` of them within `failure_window` → account-wide `failure_cooldown × 2^(bursts−1)` + jitter |
//!
//! Cooldowns only ever extend, never shorten, a running one.
//!
//! **Token refunds follow one rule for every outcome**: [`Pool::consume`] takes a token at
//! dispatch; [`Pool::report`] gives it back for *every* outcome except `Success` (failures
//! are paid for by cooldowns and health, not also by pacing budget), and [`Pool::refund`]
//! gives it back for a dispatch that is never reported. Only consumed tokens are refunded,
//! each at most once, and a refund never lifts the bucket above its capacity.
//!
//! After a failure, [`Pool::report`] retries on another account while the request has
//! attempts left ([`PolicyConfig::max_attempts`]) — never on an account this request already
//! tried, so one bad request cannot replay across the whole pool. A 429 from an account
//! whose usage window is spent does not use an attempt up (it is the account's condition).
//!
//! # Usage windows
//!
//! ChatGPT-plan accounts have usage windows (about 5 hours and a week), and the Codex backend
//! says on every answer how much of each is used (headers, or a `codex.rate_limits` stream
//! event; [`usage`] parses both). Given to [`Pool::record_usage`], a report keeps the account
//! off requests of that limit once the requests it could still get might overflow a window
//! (or from [`PolicyConfig::usage_threshold`], a reserve) until the window resets — before
//! the upstream answers 429 — and [`Strategy::QuotaAware`] spends
//! first the capacity that would otherwise expire unused:
//!
//! ```
//! use std::time::{Duration, SystemTime, UNIX_EPOCH};
//! use http::HeaderMap;
//! use rotation_policy::usage::UsageReport;
//! use rotation_policy::{AccountId, Outcome, PolicyConfig, Pool, Request, Selection, Strategy, Timestamp};
//!
//! let mut config = PolicyConfig::default();
//! config.strategy = Strategy::QuotaAware;
//! let mut pool = Pool::new(config, 42)?;
//! for id in ["acct-1", "acct-2"] {
//!     pool.add(AccountId::new(id)?)?;
//! }
//! let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! let now = Timestamp::from_system_time(wall);
//! let reset = |secs: u64| (1_700_000_000 + secs).to_string();
//!
//! // Stand-in for the upstream: its answers report each account's usage in headers.
//! let upstream = |account: &AccountId| -> HeaderMap {
//!     let (five_hour, five_hour_reset, weekly_reset) = match account.as_str() {
//!         "acct-1" => ("99.0", reset(3_600), reset(86_400)), // weekly resets tomorrow
//!         _ => ("20.0", reset(7_200), reset(6 * 86_400)),
//!     };
//!     let mut headers = HeaderMap::new();
//!     for (name, value) in [
//!         ("x-codex-primary-used-percent", five_hour.to_owned()),
//!         ("x-codex-primary-window-minutes", "300".to_owned()),
//!         ("x-codex-primary-reset-at", five_hour_reset),
//!         ("x-codex-secondary-used-percent", "50.0".to_owned()),
//!         ("x-codex-secondary-window-minutes", "10080".to_owned()),
//!         ("x-codex-secondary-reset-at", weekly_reset),
//!     ] {
//!         headers.insert(name, value.parse().unwrap());
//!     }
//!     headers
//! };
//!
//! // Each answer: record its usage, then report its outcome.
//! let mut served = Vec::new();
//! for _ in 0..3 {
//!     let mut request = Request::new("gpt-5");
//!     let Selection::Account(account) = pool.select(&mut request, now) else { unreachable!() };
//!     pool.consume(&account, now)?;
//!     let headers = upstream(&account);
//!     pool.record_usage(&account, &UsageReport::from_headers(&headers), now)?;
//!     pool.report(&mut request, &account, Outcome::from_response(200, &headers, wall), now);
//!     served.push(account.as_str().to_owned());
//! }
//! // acct-1 served first (nothing known yet), then reported 99 % of its 5-hour window: two
//! // more requests could overflow it, so it waits for that reset and acct-2 serves.
//! assert_eq!(served, ["acct-1", "acct-2", "acct-2"]);
//! let status = pool.account_status(&AccountId::new("acct-1")?, now).unwrap();
//! assert_eq!(status.usage[0].blocked_until, Some(now.saturating_add(Duration::from_secs(3_600))));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The block, per limit a report names (a model counts against the metered limit whose
//! reported `limit_name` is its family, else against `codex`):
//!
//! | the window | the account serves that limit's requests again at |
//! |---|---|
//! | within the margin: two more requests' worth, plus the requests in flight, would overflow it (usage headers come before the answer, so a report lags one request; a request's worth is the largest rise seen between two reports, at least 1 point) — or at or above the threshold | the window's end: `resets_at`, but at most `window_minutes` and at most 8 days after the report; with neither, the report + [`max_cooldown`](PolicyConfig::max_cooldown) (it is tried again and reports anew) |
//! | the long window in its last twentieth, under [`Strategy::QuotaAware`], below the threshold | at once, until it is full: what it has left expires at the reset |
//! | full: reported at 100 %, or answered 429 while past the threshold or margin | the window's end (a lagging report with less use does not empty it) |
//! | one whose end has passed | now: the window started over |
//!
//! The block is one more "usable from" time in the waiting index, so
//! `Exhausted { retry_after }` stays exact. [`Pool::pool_usage`] aggregates the pool's usage
//! (for a proxy's clients); [`Request::with_account`] pins a request that only one account
//! can serve (a conversation continued with `previous_response_id`).
//!
//! # Persisting and sharing state
//!
//! Several processes (rotation proxies on one machine) use the same accounts, and a proxy
//! restarts. What one learns about an account — a 429 cooldown, a 403, a revoked login,
//! falling health — should steer the others and survive the restart. [`Pool::take_changes`]
//! returns the shared state of the accounts that changed since the last call (O(1) to record
//! a change, O(changed) to take them); the caller merges it into a shared file under the
//! file's lock with [`PolicyState::merge`] and merges the whole file back with
//! [`Pool::merge_state`]. [`Pool::export_state`] gives everything, e.g. to save on shutdown.
//!
//! ```
//! use std::time::Duration;
//! use rotation_policy::{
//!     AccountId, Outcome, PolicyConfig, PolicyError, PolicyState, Pool, Request, Selection,
//!     Timestamp,
//! };
//!
//! let new_pool = || -> Result<Pool, PolicyError> {
//!     let mut pool = Pool::new(PolicyConfig::default(), 42)?;
//!     for id in ["acct-1", "acct-2"] {
//!         pool.add(AccountId::new(id)?)?;
//!     }
//!     Ok(pool)
//! };
//! let (mut proxy_a, mut proxy_b) = (new_pool()?, new_pool()?);
//! let mut file = PolicyState::default(); // stands in for the shared file
//!
//! // What each proxy does every ~250 ms: write its changes (under the file's lock: read,
//! // merge, write atomically), then merge the whole file.
//! let sync = |pool: &mut Pool, file: &mut PolicyState, now| {
//!     let changes = pool.take_changes();
//!     if !changes.accounts.is_empty() {
//!         file.merge(&changes);
//!     }
//!     pool.merge_state(file, now)
//! };
//!
//! // Proxy A: acct-1 is rate limited for gpt-5 for 30 s.
//! let now = Timestamp::from_millis(1_700_000_000_000);
//! let mut request = Request::new("gpt-5");
//! let Selection::Account(acct_1) = proxy_a.select(&mut request, now) else { unreachable!() };
//! let limited = Outcome::RateLimited { retry_after: Some(Duration::from_secs(30)) };
//! proxy_a.report(&mut request, &acct_1, limited, now);
//! sync(&mut proxy_a, &mut file, now);
//! let on_disk = serde_json::to_string(&file)?;
//!
//! // Proxy B (or A after a restart) reads the file 5 s later: acct-1 cools there too.
//! let later = now.saturating_add(Duration::from_secs(5));
//! let report = proxy_b.merge_state(&serde_json::from_str(&on_disk)?, later);
//! assert_eq!(report.changed, 1);
//! let acct_2 = AccountId::new("acct-2")?;
//! assert_eq!(proxy_b.select(&mut Request::new("gpt-5"), later), Selection::Account(acct_2.clone()));
//! proxy_b.disable(&acct_2)?;
//! assert_eq!(
//!     proxy_b.select(&mut Request::new("gpt-5"), later),
//!     Selection::Exhausted { retry_after: Duration::from_secs(25) } // exact
//! );
//! // B writes only what it learned itself, not what it merged: no ping-pong.
//! let changes = proxy_b.take_changes();
//! assert_eq!(changes.accounts.keys().collect::<Vec<_>>(), [&acct_2]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Writers never coordinate: each rule is a join (commutative, associative, idempotent), so
//! merges in any order give one result. Per account ([`state`] has the details and format):
//!
//! | state | merge keeps |
//! |---|---|
//! | account-wide cooldown | the later `until` (with its reason); ties by reason, then start |
//! | `refreshed_at` | the later; it ends 401 cooldowns that started no later ([`Pool::mark_refreshed`] in one process ends them in all) |
//! | family cooldowns | per family the later `until` (one with a known start over one without); streak = the larger |
//! | disabled / enabled | the later of the last disable and the last explicit enable; equal times: disabled; a gone login ([`DisabledReason::LoginRequired`], [`DisabledReason::Deactivated`]) is never cleared by an earlier enable |
//! | health, `needs_refresh`, streaks | the observation with the later `health_at`; ties: the lower health |
//! | usage, per limit | the report with the later `observed_at` |
//! | a time after [`LAST_PLAUSIBLE_TIME`] (year 9999), a cooldown longer than [`MAX_COOLDOWN_SPAN`] (30 days) | nothing: it reads as absent |
//!
//! Merging into a pool only extends cooldowns it runs, caps merged cooldowns at the pool's
//! own longest for that kind ([`PolicyConfig::max_cooldown`] for rate limits) from *their
//! own start* (so merging the same file again never restarts one), ignores records stamped
//! more than `max_cooldown` in the future, and adds model families only up to half of
//! [`PolicyConfig::max_families`], so a hostile or broken writer cannot block an account for
//! long or crowd out the families real requests use. Token buckets, in-flight counts,
//! sessions, counters and the strategy's order stay per process. Share state only between
//! processes using wall-clock [`Timestamp`]s.
//!
//! # Complexity
//!
//! For each model family the pool keeps two ordered indexes: accounts usable now, keyed by
//! the strategy's order, and accounts that are waiting, keyed by the exact time they become
//! usable (the latest of their cooldown ends and their bucket's next token). Accounts move
//! from waiting to usable lazily, when a call's `now` passes their time; each such move
//! pairs with the state change that put them there. With n accounts and F model families
//! seen so far:
//!
//! - [`Pool::select`], [`Pool::consume`], [`Pool::report`], [`Pool::refund`]: O(F · log n)
//!   amortized, plus O(attempts) to skip accounts the request already tried;
//! - `Exhausted { retry_after }` is the first entry of the waiting index: O(log n), exact;
//! - [`Pool::add`]/[`Pool::remove`]/[`Pool::disable`]/[`Pool::disable_for`]/[`Pool::enable`]:
//!   O(F · log n);
//! - recording a change for [`Pool::take_changes`]: O(1); the call: O(k · F log k) for k
//!   changed accounts; [`Pool::merge_state`]: O(k · F log n) for k accounts in the
//!   document; [`Pool::export_state`]: O(n · F);
//! - the first request of a new model family indexes every account once: O(n log n);
//!   at most [`PolicyConfig::max_families`] families are kept, the rest share `"*"` (a
//!   merge adds at most half of them);
//! - [`Pool::record_usage`]: O(L + F · log n) for L limits in the report (a limit name seen
//!   for the first time re-maps model families: O(n log n), at most a few times); under
//!   [`Strategy::QuotaAware`] a key that changes with the clock (a week entering its last
//!   twentieth, or ending) is renewed before the next pick from a third index keyed by that
//!   time: O(log n) per change, each following a report;
//!   [`Pool::pool_usage`]: O(n · L);
//! - [`Pool::status`]: O(n log n) (a full snapshot).
//!
//! The `select_report` benchmark measures select + consume + report against a linear scan
//! of the same policy at 10, 1,000 and 100,000 accounts.
//!
//! # Time
//!
//! Timestamps have millisecond resolution; durations passed in are rounded up to whole
//! milliseconds, so a wait is never shorter than asked. A `now` earlier than one already
//! seen is treated as the latest one seen.
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod config;
mod error;
mod id;
mod pool;
mod request;
mod retry_after;
mod rng;
pub mod sim;
pub mod state;
mod status;
mod time;
pub mod usage;

pub use config::{PolicyConfig, Strategy, TokenBucket};
pub use error::PolicyError;
pub use id::{AccountId, MAX_ACCOUNT_ID_LEN};
pub use pool::{Pool, USAGE_REFRESH};
pub use request::{Decision, Outcome, Request, Selection};
pub use retry_after::{RetryAfter, RetryAfterError, RetryAfterSource};
pub use state::{
    AccountState, Cooldown, Disabled, FamilyState, LAST_PLAUSIBLE_TIME, MAX_COOLDOWN_SPAN,
    MergeReport, POLICY_STATE_VERSION, PolicyState, UsageState,
};
pub use status::{
    AccountStatus, CooldownReason, Counters, DisabledReason, FamilyCooldown, OutcomeCounts,
    PoolStatus, UsageStatus,
};
pub use time::Timestamp;
