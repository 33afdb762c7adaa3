//! The idle usage probe (opt-in, off by default): keeps the policy's usage knowledge fresh
//! for accounts that served nothing recently, by asking the backend's usage endpoint.
//!
//! The ChatGPT backend answers `GET https://chatgpt.com/backend-api/wham/usage` (with an
//! account's `Authorization: Bearer <access token>` and `ChatGPT-Account-Id`) with the
//! account's usage windows, the same numbers its answers carry in `x-codex-*` headers. The
//! Codex CLI builds that URL in codex-rs `backend-client/src/client.rs`
//! (`get_rate_limits_many`: `{base}/wham/usage` for a base containing `/backend-api`, where the
//! base is the ChatGPT backend `https://chatgpt.com/backend-api`, not the Codex upstream
//! `…/backend-api/codex` the proxy forwards to). [`CHATGPT_USAGE_URL`] is that URL.
//!
//! Pure parts (which accounts are due, the per-minute budget, what an answer means) are
//! functions of their inputs; [`run`] is the I/O shell, one background task per proxy that
//! the proxy aborts when it stops.
//!
//! The rules (when an account is queried, the limits, what an answer does) are on
//! [`UsageProbe`], with an end-to-end example.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use auth_core::Timestamp as WallTimestamp;
use http::{HeaderMap, HeaderValue, header};
use rotation_policy::usage::UsageReport;
use rotation_policy::{AccountId, AccountStatus, Timestamp};
use serde::Serialize;
use tokio::task::JoinSet;

use super::accounts::AccountCredentials;
use super::target::{UpstreamBase, UpstreamUrlError};
use super::{Shared, now};

/// The ChatGPT backend's usage endpoint (what the Codex CLI queries for its `/status`).
pub const CHATGPT_USAGE_URL: &str = "https://chatgpt.com/backend-api/wham/usage";

/// Most queries per minute a probe may be set to (10 a second).
pub const MAX_PER_MINUTE: u32 = 600;

/// Bytes of a usage answer that are read; the rest is dropped (the real answer is ~1 KiB).
const ANSWER_MAX: usize = 64 * 1024;

/// The window of [`UsageProbe::per_minute`].
const MINUTE: Duration = Duration::from_secs(60);

/// Settings of the idle usage probe ([`ProxyOptions::usage_probe`](super::ProxyOptions::usage_probe)).
///
/// ```
/// use std::time::Duration;
/// use examples::proxy::{CHATGPT_USAGE_URL, UsageProbe};
///
/// let mut probe = UsageProbe::new(CHATGPT_USAGE_URL);
/// assert_eq!(probe.per_minute, 6);
/// assert_eq!(probe.stale_after, Duration::from_secs(15 * 60));
/// probe.per_minute = 0;
/// assert!(probe.validate().is_err());
/// ```
///
/// # When an account is queried
///
/// Every [`UsageProbe::interval`] the probe takes the policy's snapshot and queries, most
/// overdue first (never seen before any other), the accounts for which every row below
/// says "yes":
///
/// | the account | queried? |
/// |---|---|
/// | disabled (by hand, login gone, too many 401s) | no |
/// | a 401 seen and not refreshed since (`needs_refresh`) | no: its token is being replaced |
/// | an account-wide cooldown running (after a 401, a 403 or a burst of failures) | no: the backend refuses it or is in trouble |
/// | rate limited for a model family only | yes: when its windows reset is what is worth knowing |
/// | a query for it still in flight | no (at most one per account) |
/// | usage observed (from any source) or queried less than [`UsageProbe::stale_after`] ago | no |
/// | its access token expired or expires within the proxy's refresh margin | no, and counted in `skipped_expired`: the probe never refreshes a token (see below); the account's next request does |
/// | otherwise | yes, while the budget lasts |
///
/// # Limits
///
/// | limit | value |
/// |---|---|
/// | queries, all accounts together | at most [`UsageProbe::per_minute`] in any 60 seconds (default 6) |
/// | queries per account | one in flight; then none for `stale_after` (default 15 min), whatever the answer |
/// | one query | [`UsageProbe::timeout`] (default 10 s) for the whole exchange, body included |
/// | answer body read | the first 64 KiB |
/// | policy dispatches, pacing buckets | untouched: a query is not a model request |
///
/// # What an answer does
///
/// | answer | effect |
/// |---|---|
/// | `2xx` whose JSON [`UsageReport::from_usage_json`] reads, with at least one window | [`Pool::record_usage`](rotation_policy::Pool::record_usage): a window without headroom (the policy's margin or `usage_threshold`) keeps the account out until it resets |
/// | `2xx` unreadable, or with no window | nothing (counted `unreadable`) |
/// | `401`, `403` | nothing but a log line and `refused`: no refresh, no disable, no cooldown (a request on the account decides that) |
/// | any other status, a network error, the timeout | nothing but a log line and `failed` |
///
/// What the probe records is shared like any usage report: the proxy writes it to the pool's
/// shared state, so other proxies over the pool see it as fresh and do not ask again. The
/// probe also remembers when it last asked each account, because a failed query leaves no
/// observation and the policy keeps an earlier observation when a new report brings no news.
///
/// **Tokens.** The probe never refreshes a token: refresh tokens are single use and shared
/// with every Codex home holding the login, a background task is aborted when the proxy
/// stops (a refresh cut between the issuer's answer and the save would lose the login),
/// and a refresh for a mere probe spends the issuer's goodwill on an idle account. An
/// account whose access token needs a refresh is left to its next request. Tokens reach
/// only the `Authorization` header (marked sensitive); logs name the account id, never a
/// token, an email or the answer's body.
///
/// ```
/// use std::time::Duration;
/// use examples::mock_upstream::{MockConfig, MockUpstream};
/// use examples::mock_usage::{MockUsageEndpoint, UsageAnswer};
/// use examples::proxy::{Accounts, ProxyOptions, RotationProxy, UsageProbe, WrapperToken};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let upstream = MockUpstream::start(MockConfig::default()).await?;
/// // Nobody has used ws-1 through this proxy, but it is at 99 % of its 5-hour window.
/// let usage = MockUsageEndpoint::start().await?;
/// usage.set("ws-1", UsageAnswer::used(99, 40));
/// usage.set("ws-2", UsageAnswer::used(10, 5));
/// let mut accounts = Accounts::new();
/// for id in ["ws-1", "ws-2"] {
///     let login = upstream.synthetic_account(id, &format!("{id}@example.com"), false);
///     accounts.push(Some(&login.email), None, login.tokens)?;
/// }
/// let token = WrapperToken::generate()?;
/// let mut options = ProxyOptions::new(upstream.base_url(), token.clone());
/// let mut probe = UsageProbe::new(usage.url()); // CHATGPT_USAGE_URL in a program
/// probe.interval = Duration::from_millis(50);
/// options.usage_probe = Some(probe);
/// let proxy = RotationProxy::start(options, accounts).await?;
///
/// // Both accounts have never been seen: each is queried once, at once.
/// assert!(usage.wait_for_queries(2, Duration::from_secs(5)).await);
/// for _ in 0..250 {
///     if proxy.status().usage_probe.recorded == 2 { break; }
///     tokio::time::sleep(Duration::from_millis(20)).await;
/// }
/// // ws-1 is two requests from full (the policy's usage margin): the request goes to ws-2.
/// let answer = reqwest::Client::builder().no_proxy().build()?
///     .post(format!("{}/responses", proxy.base_url()))
///     .bearer_auth(token.secret().expose())
///     .body(r#"{"model":"gpt-5","input":"hi"}"#)
///     .send()
///     .await?;
/// assert_eq!(answer.status(), 200);
/// assert_eq!(upstream.stats().accounts["ws-2"].ok, 1);
/// assert_eq!(proxy.status().usage_probe.queries, 2);
/// proxy.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UsageProbe {
    /// The usage endpoint ([`CHATGPT_USAGE_URL`]; `http` or `https`, no credentials, query
    /// or fragment).
    pub url: String,
    /// How often the probe looks for accounts to query (default 60 s).
    pub interval: Duration,
    /// How old an account's latest usage observation (or the probe's latest query of it)
    /// must be before it is queried (default 15 minutes).
    pub stale_after: Duration,
    /// Queries per minute, all accounts together (1 to [`MAX_PER_MINUTE`], default 6).
    pub per_minute: u32,
    /// Time allowed for one query, answer included (default 10 s).
    pub timeout: Duration,
}

impl UsageProbe {
    /// A probe of `url` with the defaults (every 60 s, 15 minutes stale, 6 a minute, 10 s
    /// timeout).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            interval: Duration::from_secs(60),
            stale_after: Duration::from_secs(15 * 60),
            per_minute: 6,
            timeout: Duration::from_secs(10),
        }
    }

    /// Checks the settings (the proxy does at start).
    ///
    /// ```
    /// use std::time::Duration;
    /// use examples::proxy::{UsageProbe, UsageProbeError};
    ///
    /// assert!(UsageProbe::new("https://chatgpt.com/backend-api/wham/usage").validate().is_ok());
    /// let bad = UsageProbe::new("https://user:pw@example.com/wham/usage");
    /// assert!(matches!(bad.validate(), Err(UsageProbeError::Url(_))));
    /// let mut zero = UsageProbe::new("http://127.0.0.1:1/wham/usage");
    /// zero.interval = Duration::ZERO;
    /// assert_eq!(zero.validate().unwrap_err().to_string(),
    ///            "usage probe: the interval must be longer than zero");
    /// ```
    pub fn validate(&self) -> Result<(), UsageProbeError> {
        UpstreamBase::parse(&self.url).map_err(UsageProbeError::Url)?;
        let setting = |field, expected| Err(UsageProbeError::Setting { field, expected });
        if self.interval.is_zero() {
            return setting("the interval", "longer than zero");
        }
        if self.stale_after.is_zero() {
            return setting("stale-after", "longer than zero");
        }
        if self.timeout.is_zero() {
            return setting("the timeout", "longer than zero");
        }
        if !(1..=MAX_PER_MINUTE).contains(&self.per_minute) {
            return setting("queries per minute", "from 1 to 600");
        }
        Ok(())
    }
}

/// Why a [`UsageProbe`] cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsageProbeError {
    /// The URL cannot be used (the value is not repeated).
    #[error("usage probe URL: {0}")]
    Url(UpstreamUrlError),
    /// A setting is out of range.
    #[error("usage probe: {field} must be {expected}")]
    Setting {
        /// Which setting.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
}

/// The probe's part of `GET /status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct UsageProbeStatus {
    /// Whether the probe runs.
    pub configured: bool,
    /// Queries sent.
    pub queries: u64,
    /// Answers read and given to the policy.
    pub recorded: u64,
    /// `401`/`403` answers (logged, nothing else).
    pub refused: u64,
    /// `2xx` answers that were unreadable or had no usage window.
    pub unreadable: u64,
    /// Other statuses, network errors and timeouts.
    pub failed: u64,
    /// Due accounts left alone because their access token needs a refresh.
    pub skipped_expired: u64,
    /// Queries in flight now.
    pub in_flight: u64,
    /// When the latest query was sent (RFC 3339).
    pub last_query_at: Option<String>,
}

/// The probe's counters and bookkeeping, shared by its task and `/status`.
#[derive(Default)]
pub(crate) struct ProbeState {
    inner: Mutex<ProbeInner>,
}

#[derive(Default)]
struct ProbeInner {
    status: UsageProbeStatus,
    book: ProbeBook,
}

impl ProbeState {
    fn lock(&self) -> MutexGuard<'_, ProbeInner> {
        // Every update is a few field writes that cannot panic half-way.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What `/status` shows; `configured` is the caller's.
    pub(crate) fn status(&self, configured: bool) -> UsageProbeStatus {
        let mut status = self.lock().status.clone();
        status.configured = configured;
        status
    }
}

/// Pure: what the probe remembers per account between rounds.
#[derive(Debug, Default)]
pub(crate) struct ProbeBook {
    /// When each account was last queried (or left alone for an expired token).
    last_query: HashMap<AccountId, Timestamp>,
    /// Accounts with a query in flight.
    in_flight: HashSet<AccountId>,
}

/// Pure: the accounts due for a query at `now`, most overdue first (never seen or queried
/// before any other, then by the age of what is known), per the module's rules table.
pub(crate) fn due_accounts(
    accounts: &[AccountStatus],
    book: &ProbeBook,
    now: Timestamp,
    stale_after: Duration,
) -> Vec<AccountId> {
    let mut due: Vec<(Option<Timestamp>, usize, &AccountId)> = accounts
        .iter()
        .enumerate()
        .filter(|(_, a)| {
            a.disabled.is_none()
                && !a.needs_refresh
                && a.cooldown_until.is_none_or(|until| until <= now)
                && !book.in_flight.contains(&a.id)
        })
        .filter_map(|(i, a)| {
            let observed = a.usage.iter().map(|u| u.observed_at).max();
            let known = observed.max(book.last_query.get(&a.id).copied());
            let stale = known.is_none_or(|at| now.saturating_duration_since(at) >= stale_after);
            stale.then_some((known, i, &a.id))
        })
        .collect();
    // `None` (never known) sorts first; ties keep the pool's order.
    due.sort();
    due.into_iter().map(|(_, _, id)| id.clone()).collect()
}

/// Pure: at most `per_minute` queries in any 60 seconds (a sliding log of send times, on a
/// monotonic clock the caller gives as time since some start).
#[derive(Debug)]
pub(crate) struct QueryBudget {
    per_minute: usize,
    sent: VecDeque<Duration>,
}

impl QueryBudget {
    pub(crate) fn new(per_minute: u32) -> Self {
        let per_minute = usize::try_from(per_minute).unwrap_or(usize::MAX);
        Self {
            per_minute,
            sent: VecDeque::with_capacity(per_minute.min(MAX_PER_MINUTE as usize)),
        }
    }

    /// Takes one query from the budget at `now` (not earlier than any earlier call's), or
    /// says there is none left for now.
    pub(crate) fn try_take(&mut self, now: Duration) -> bool {
        while self
            .sent
            .front()
            .is_some_and(|&first| now.saturating_sub(first) >= MINUTE)
        {
            self.sent.pop_front();
        }
        if self.sent.len() >= self.per_minute {
            return false;
        }
        self.sent.push_back(now);
        true
    }
}

/// Pure: what one answer of the usage endpoint means.
#[derive(Debug, PartialEq)]
pub(crate) enum ProbeAnswer {
    /// Usage to record.
    Usage(UsageReport),
    /// A `2xx` with nothing readable in it.
    Unreadable,
    /// `401`/`403`.
    Refused(u16),
    /// Anything else (the status; `None` for no answer at all).
    Failed(Option<u16>),
}

pub(crate) fn classify(status: u16, body: &[u8]) -> ProbeAnswer {
    match status {
        200..=299 => match UsageReport::from_usage_json(body) {
            Some(report) if !report.is_empty() => ProbeAnswer::Usage(report),
            _ => ProbeAnswer::Unreadable,
        },
        401 | 403 => ProbeAnswer::Refused(status),
        other => ProbeAnswer::Failed(Some(other)),
    }
}

/// The probe task: runs until the proxy aborts it (its queries are aborted with it).
pub(crate) async fn run(shared: Arc<Shared>, probe: UsageProbe) {
    // `RotationProxy::start` validated the URL before starting the task.
    let Ok(url) = url::Url::parse(&probe.url) else {
        return;
    };
    let started = tokio::time::Instant::now();
    let mut budget = QueryBudget::new(probe.per_minute);
    let mut ticker = tokio::time::interval(probe.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut queries = JoinSet::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            Some(_) = queries.join_next(), if !queries.is_empty() => continue,
        }
        let t = now();
        let accounts = shared.lock().policy.status(t).accounts;
        let mut state = shared.usage_probe.lock();
        // Accounts removed from the pool are forgotten (the book stays as large as the pool).
        let present: HashSet<&AccountId> = accounts.iter().map(|a| &a.id).collect();
        state.book.last_query.retain(|id, _| present.contains(id));
        let due = due_accounts(&accounts, &state.book, t, probe.stale_after);
        for id in due {
            let Some(creds) = shared
                .accounts
                .current_credentials(&id, shared.options.refresh_margin)
            else {
                state.status.skipped_expired += 1;
                state.book.last_query.insert(id.clone(), t);
                tracing::debug!(account = %id, "usage probe: token needs a refresh; left to the next request");
                continue;
            };
            if !budget.try_take(started.elapsed()) {
                break;
            }
            state.book.last_query.insert(id.clone(), t);
            state.book.in_flight.insert(id.clone());
            state.status.queries += 1;
            state.status.in_flight += 1;
            state.status.last_query_at = Some(WallTimestamp::now().to_string());
            let query = Query {
                shared: shared.clone(),
                id,
            };
            queries.spawn(query.run(url.clone(), creds, probe.timeout));
        }
    }
}

/// One query in flight; its bookkeeping is undone when it ends, however it ends (an
/// aborted task drops it too).
struct Query {
    shared: Arc<Shared>,
    id: AccountId,
}

impl Query {
    async fn run(self, url: url::Url, creds: AccountCredentials, timeout: Duration) {
        let exchange = ask(&self.shared.client, url, &creds);
        let answer = match tokio::time::timeout(timeout, exchange).await {
            Ok(answer) => answer,
            Err(_) => {
                tracing::warn!(account = %self.id, "usage probe: no answer within the timeout");
                ProbeAnswer::Failed(None)
            }
        };
        let id = &self.id;
        match &answer {
            ProbeAnswer::Usage(report) => {
                let mut state = self.shared.lock();
                // ok: an account removed meanwhile has nothing to record.
                let _ = state.policy.record_usage(id, report, now());
                drop(state);
                tracing::info!(account = %id, limits = report.limits.len(), "usage probe: usage recorded");
            }
            ProbeAnswer::Unreadable => {
                tracing::warn!(account = %id, "usage probe: the answer had no readable usage")
            }
            ProbeAnswer::Refused(status) => {
                tracing::warn!(account = %id, status, "usage probe: the usage endpoint refused the token; nothing changed")
            }
            ProbeAnswer::Failed(Some(status)) => {
                tracing::warn!(account = %id, status, "usage probe: the usage endpoint answered with an error")
            }
            ProbeAnswer::Failed(None) => {}
        }
        let mut state = self.shared.usage_probe.lock();
        let s = &mut state.status;
        match answer {
            ProbeAnswer::Usage(_) => s.recorded += 1,
            ProbeAnswer::Unreadable => s.unreadable += 1,
            ProbeAnswer::Refused(_) => s.refused += 1,
            ProbeAnswer::Failed(_) => s.failed += 1,
        }
    }
}

impl Drop for Query {
    fn drop(&mut self) {
        let mut state = self.shared.usage_probe.lock();
        state.book.in_flight.remove(&self.id);
        state.status.in_flight = state.status.in_flight.saturating_sub(1);
    }
}

/// Sends one query and reads (the start of) its answer.
async fn ask(client: &reqwest::Client, url: url::Url, creds: &AccountCredentials) -> ProbeAnswer {
    let sent = client.get(url).headers(query_headers(creds)).send().await;
    let mut response = match sent {
        Ok(response) => response,
        Err(err) => {
            // The error's text may carry the URL; only its kind is logged.
            let kind = super::forward::error_kind(&err);
            tracing::warn!(
                error = kind,
                "usage probe: the usage endpoint could not be reached"
            );
            return ProbeAnswer::Failed(None);
        }
    };
    let status = response.status().as_u16();
    let mut body = Vec::new();
    // Bounded: stops at the cap, the end of the body, or an error.
    while body.len() < ANSWER_MAX {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = ANSWER_MAX - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            _ => break,
        }
    }
    classify(status, &body)
}

/// The account's `Authorization` (marked sensitive, so it is never logged) and
/// `ChatGPT-Account-Id`, and `Accept: application/json`.
fn query_headers(creds: &AccountCredentials) -> HeaderMap {
    let mut headers = super::forward::account_headers(&HeaderMap::new(), creds);
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rotation_policy::{PolicyConfig, Pool};

    const T0: u64 = 1_700_000_000_000;
    const STALE: Duration = Duration::from_secs(900);

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_millis(T0 + secs * 1000)
    }

    fn pool(ids: &[&str]) -> Pool {
        let mut pool = Pool::new(PolicyConfig::default(), 1).unwrap();
        for id in ids {
            pool.add(AccountId::new(*id).unwrap()).unwrap();
        }
        pool
    }

    fn ids(list: &[AccountId]) -> Vec<&str> {
        list.iter().map(AccountId::as_str).collect()
    }

    #[test]
    fn never_seen_accounts_are_due_and_recent_queries_are_not() {
        let pool = pool(&["a", "b", "c"]);
        let mut book = ProbeBook::default();
        let status = pool.status(at(0));
        assert_eq!(
            ids(&due_accounts(&status.accounts, &book, at(0), STALE)),
            ["a", "b", "c"]
        );
        // a queried just now, b 20 minutes ago, c in flight.
        book.last_query
            .insert(AccountId::new("a").unwrap(), at(1200));
        book.last_query.insert(AccountId::new("b").unwrap(), at(0));
        book.in_flight.insert(AccountId::new("c").unwrap());
        let status = pool.status(at(1200));
        assert_eq!(
            ids(&due_accounts(&status.accounts, &book, at(1200), STALE)),
            ["b"]
        );
        // Exactly stale_after later is due; a millisecond before is not.
        let just_before = Timestamp::from_millis(at(900).as_millis() - 1);
        assert!(
            due_accounts(&status.accounts, &book, just_before, STALE)
                .iter()
                .all(|id| id.as_str() != "b")
        );
        assert_eq!(
            ids(&due_accounts(&status.accounts, &book, at(900), STALE)),
            ["b"]
        );
    }

    #[test]
    fn the_most_overdue_go_first() {
        let pool = pool(&["a", "b", "c", "d"]);
        let mut book = ProbeBook::default();
        book.last_query
            .insert(AccountId::new("a").unwrap(), at(100));
        book.last_query.insert(AccountId::new("b").unwrap(), at(0));
        book.last_query.insert(AccountId::new("d").unwrap(), at(50));
        let status = pool.status(at(5000));
        assert_eq!(
            ids(&due_accounts(&status.accounts, &book, at(5000), STALE)),
            ["c", "b", "d", "a"]
        );
    }

    #[test]
    fn disabled_rejected_and_cooling_accounts_are_left_alone() {
        let mut pool = pool(&["off", "rejected", "forbidden", "limited", "fine"]);
        let t = at(0);
        pool.disable(&AccountId::new("off").unwrap()).unwrap();
        for (id, outcome) in [
            ("rejected", rotation_policy::Outcome::Unauthorized),
            ("forbidden", rotation_policy::Outcome::Forbidden),
            (
                "limited",
                rotation_policy::Outcome::RateLimited {
                    retry_after: Some(Duration::from_secs(60)),
                },
            ),
        ] {
            let id = AccountId::new(id).unwrap();
            let mut request = rotation_policy::Request::new("gpt-5");
            let _ = pool.report(&mut request, &id, outcome, t);
        }
        let status = pool.status(t);
        // A model family's rate limit is no reason to stay away.
        assert_eq!(
            ids(&due_accounts(
                &status.accounts,
                &ProbeBook::default(),
                t,
                STALE
            )),
            ["limited", "fine"]
        );
    }

    #[test]
    fn answers_are_classified_without_panicking_on_garbage() {
        assert_eq!(classify(401, b"{}"), ProbeAnswer::Refused(401));
        assert_eq!(classify(403, b""), ProbeAnswer::Refused(403));
        assert_eq!(classify(500, b"oops"), ProbeAnswer::Failed(Some(500)));
        assert_eq!(classify(302, b""), ProbeAnswer::Failed(Some(302)));
        for garbage in [
            &b""[..],
            b"not json",
            b"{\"rate_limit\":7}",
            &[0xff, 0xfe, 0],
        ] {
            assert_eq!(classify(200, garbage), ProbeAnswer::Unreadable);
        }
    }

    #[test]
    fn the_budget_refuses_past_the_limit_and_recovers_after_a_minute() {
        let mut budget = QueryBudget::new(3);
        let s = Duration::from_secs;
        assert!(budget.try_take(s(0)));
        assert!(budget.try_take(s(1)));
        assert!(budget.try_take(s(2)));
        assert!(!budget.try_take(s(3)));
        assert!(!budget.try_take(s(59)));
        assert!(budget.try_take(s(60)), "the first query left the window");
        assert!(!budget.try_take(s(60)));
        assert!(budget.try_take(s(61)));
    }

    proptest! {
        /// In any 60 seconds, at most `per_minute` queries are taken; and a refusal happens
        /// only when `per_minute` were taken in the 60 seconds before it.
        #[test]
        fn the_budget_holds_in_every_window(
            per_minute in 1u32..8,
            gaps in prop::collection::vec(0u64..30_000, 1..200),
        ) {
            let mut budget = QueryBudget::new(per_minute);
            let mut now = 0u64;
            let mut taken: Vec<u64> = Vec::new();
            for gap in gaps {
                now += gap;
                let t = Duration::from_millis(now);
                let in_window = taken.iter().filter(|&&x| now - x < 60_000).count();
                let took = budget.try_take(t);
                prop_assert_eq!(took, in_window < per_minute as usize);
                if took {
                    taken.push(now);
                }
            }
            for (i, &start) in taken.iter().enumerate() {
                let n = taken[i..].iter().take_while(|&&x| x - start < 60_000).count();
                prop_assert!(n <= per_minute as usize);
            }
        }

        /// Whatever the book and clock, no account is due twice, and no disabled or
        /// in-flight account is due.
        #[test]
        fn due_accounts_are_unique_enabled_and_idle(
            n in 1usize..12,
            queried in prop::collection::vec(prop::option::of(0u64..4000), 12),
            flying in prop::collection::vec(any::<bool>(), 12),
            disabled in prop::collection::vec(any::<bool>(), 12),
            now in 0u64..5000,
        ) {
            let names: Vec<String> = (0..n).map(|i| format!("a{i}")).collect();
            let mut pool = pool(&names.iter().map(String::as_str).collect::<Vec<_>>());
            let mut book = ProbeBook::default();
            for (i, name) in names.iter().enumerate() {
                let id = AccountId::new(name.clone()).unwrap();
                if let Some(q) = queried[i] {
                    book.last_query.insert(id.clone(), at(q));
                }
                if flying[i] {
                    book.in_flight.insert(id.clone());
                }
                if disabled[i] {
                    pool.disable(&id).unwrap();
                }
            }
            let status = pool.status(at(now));
            let due = due_accounts(&status.accounts, &book, at(now), STALE);
            let unique: HashSet<&AccountId> = due.iter().collect();
            prop_assert_eq!(unique.len(), due.len());
            for id in &due {
                let i: usize = id.as_str()[1..].parse().unwrap();
                prop_assert!(!flying[i] && !disabled[i]);
                prop_assert!(queried[i].is_none_or(|q| now >= q + 900));
            }
        }
    }
}
