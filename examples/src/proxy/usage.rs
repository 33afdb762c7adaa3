//! Usage reports in the proxy (I/O shell around `rotation_policy`'s usage parsers and
//! [`Pool::pool_usage`]): what every upstream answer says about its account's usage goes
//! to the policy, and what the client is told is the pool's usage, never one account's.
//!
//! | where the upstream reports usage | what the proxy does |
//! | --- | --- |
//! | response headers (`x-codex-primary-used-percent`, … and `x-<limit>-…` for metered limits, `x-codex-credits-*`), on any answer, a `429` too | read at response time and recorded for the account ([`Pool::record_usage`]) before the answer's outcome is reported, under the same lock; then every usage header is removed and the pool's usage headers are sent instead |
//! | a `codex.rate_limits` server-sent event | read as the stream passes through (`sse.rs`: bytes go on as they arrive, only the current data line is held), recorded for the account, and the line replaced by the pool's usage of the same limit |
//!
//! Removed from every answer: every `x-codex-*` header but the protocol's own (an
//! allow-list: `x-codex-turn-state`, which the Codex CLI sends back within a turn and which
//! pins those requests to the account that issued it, see `continuation.rs`, and
//! `x-codex-safety-buffering-enabled`) — usage, reset times, credits, plan and promotions
//! are the serving account's — and the usage headers of any other family
//! (`x-<limit>-primary-…`, `-secondary-…`, `-limit-name`). An account out of headroom then gets no request counted against that
//! limit until its window resets (the policy's rule); the report is shared through
//! `pool-state.json`, so other proxies and the next run steer by it.
//!
//! # What clients are told: the pool's usage
//!
//! [`Pool::pool_usage`], per limit and window:
//!
//! | field | the pool's value |
//! | --- | --- |
//! | used percent | the mean over enabled accounts of: the account's reported use while its window runs; 100 % once the window keeps it out (within the policy's margin or at its threshold: what is left cannot be used); 0 % once its window has reset or when it reported nothing |
//! | reset time | the earliest reset of a window with use in it (when capacity comes back) |
//! | window length | the longest reported |
//! | limit name | the latest reported |
//!
//! A window no enabled account reported is left out, so is a limit without windows; credits
//! and plan are not aggregated (never sent). So a client's rate-limit display (the Codex
//! CLI's status line and the `token_count` events of its session log) shows how much of the
//! whole pool is spent, and 100 % only when every account is spent or kept out.
//!
//! Computing it walks every account, so it is made at most once per [`USAGE_TTL`] (the
//! pool-state sync interval) and shared by every answer in between: an answer may carry the
//! pool's usage as of up to that long ago. One exception keeps the account's own figures
//! from reaching a client: an event of a limit the cached usage lacks (the first report of
//! that limit) has the usage remade at once, at most once per TTL; a second new limit
//! within that time is answered with an event that names the limit without windows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName};
use rotation_policy::usage::{DEFAULT_LIMIT, LimitUsage, UsageReport, UsageWindow};
use rotation_policy::{AccountId, Pool, Timestamp, UsageStatus};
use serde::Serialize;

use super::sse::{DataLine, DataObserver};
use super::{Shared, now};

/// How long one computation of the pool's usage is sent to clients before it is made
/// again.
pub(crate) const USAGE_TTL: Duration = super::sync::SYNC_INTERVAL;

/// Header-name endings of a usage family `x-<limit>-…` (codex-rs `rate_limits.rs`).
const USAGE_SUFFIXES: [&str; 10] = [
    "-primary-used-percent",
    "-primary-window-minutes",
    "-primary-reset-at",
    "-secondary-used-percent",
    "-secondary-window-minutes",
    "-secondary-reset-at",
    "-primary-over-secondary-limit-percent",
    "-primary-reset-after-seconds",
    "-secondary-reset-after-seconds",
    "-limit-name",
];

/// The event type of a usage report in the response stream.
const RATE_LIMITS_EVENT: &str = "codex.rate_limits";

/// The `x-codex-*` answer headers that are the protocol's, not one account's: they pass.
/// Every other `x-codex-*` header (usage, reset times, credits, plan, promotions, and any
/// new one) is the serving account's and is removed — an allow-list, so a header the
/// backend adds later cannot leak one account's figures.
const PROTOCOL_HEADERS: [&str; 2] = ["x-codex-turn-state", "x-codex-safety-buffering-enabled"];

fn is_usage_header(name: &HeaderName) -> bool {
    let name = name.as_str();
    (name.starts_with("x-codex-") && !PROTOCOL_HEADERS.contains(&name))
        || (name.starts_with("x-") && USAGE_SUFFIXES.iter().any(|s| name.ends_with(s)))
}

/// Gives an answer the pool's usage headers in place of any usage headers it carries: every
/// answer the client gets, the proxy's own refusals and the overflow source's included.
pub(crate) fn set_pool_headers(shared: &Shared, headers: &mut HeaderMap) {
    strip_usage_headers(headers);
    let usage = shared.lock().client_usage(now());
    usage.write_headers(headers);
}

/// Removes every usage header an upstream answer carries (see the module docs).
pub(crate) fn strip_usage_headers(headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_usage_header(n))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

/// What clients are told about the pool's usage, made once per [`USAGE_TTL`]: the headers
/// and one event per limit, written ahead so an answer only copies them.
#[derive(Debug, Default)]
pub(crate) struct ClientUsage {
    report: UsageReport,
    headers: HeaderMap,
    events: Vec<(String, Bytes)>,
}

impl ClientUsage {
    fn new(report: UsageReport) -> Self {
        let events = report
            .limits
            .iter()
            .map(|limit| (limit.limit_id().to_owned(), one_limit_event(limit.clone())))
            .collect();
        ClientUsage {
            headers: report.to_headers(),
            events,
            report,
        }
    }

    /// The pool's usage.
    pub(crate) fn report(&self) -> &UsageReport {
        &self.report
    }

    /// Adds the pool's usage headers (after [`strip_usage_headers`]).
    pub(crate) fn write_headers(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
    }

    /// The data of a `codex.rate_limits` event with the pool's usage of `limit_id`, if the
    /// pool knows that limit.
    fn event(&self, limit_id: &str) -> Option<Bytes> {
        self.events
            .iter()
            .find(|(id, _)| id == limit_id)
            .map(|(_, event)| event.clone())
    }
}

/// The `codex.rate_limits` event data of one limit.
fn one_limit_event(limit: LimitUsage) -> Bytes {
    let mut report = UsageReport::default();
    report.push(limit);
    Bytes::from(report.to_event_json())
}

/// The event for a limit the pool knows no window of: it names the limit, without windows
/// (never the account's).
fn windowless_event(limit_id: &str) -> Bytes {
    match LimitUsage::new(limit_id) {
        Some(limit) => one_limit_event(limit),
        None => Bytes::from(UsageReport::default().to_event_json()),
    }
}

/// The pool's usage as sent to clients, remade when older than [`USAGE_TTL`].
#[derive(Debug)]
pub(crate) struct UsageCache {
    made: Option<(Instant, Arc<ClientUsage>)>,
    /// When a report of a limit the cached usage lacked last had it remade.
    remade_for_missing: Option<Instant>,
    ttl: Duration,
}

impl Default for UsageCache {
    fn default() -> Self {
        UsageCache {
            made: None,
            remade_for_missing: None,
            ttl: USAGE_TTL,
        }
    }
}

impl UsageCache {
    /// The pool's usage as of at most [`USAGE_TTL`] ago. O(1), or O(accounts) once per TTL.
    pub(crate) fn get(&mut self, policy: &Pool, now: Timestamp) -> Arc<ClientUsage> {
        match &self.made {
            Some((at, usage)) if at.elapsed() < self.ttl => usage.clone(),
            _ => self.remake(policy, now),
        }
    }

    /// The `codex.rate_limits` event data of the pool's usage of `limit_id`. The first
    /// report of a limit finds it missing from usage made before that report: then the
    /// usage is remade at once, at most once per [`USAGE_TTL`] besides the regular
    /// remaking (a second new limit within that time gets an event without windows).
    pub(crate) fn event(&mut self, policy: &Pool, now: Timestamp, limit_id: &str) -> Bytes {
        let usage = self.get(policy, now);
        if let Some(event) = usage.event(limit_id) {
            return event;
        }
        if self
            .remade_for_missing
            .is_none_or(|at| at.elapsed() >= self.ttl)
        {
            self.remade_for_missing = Some(Instant::now());
            if let Some(event) = self.remake(policy, now).event(limit_id) {
                return event;
            }
        }
        windowless_event(limit_id)
    }

    fn remake(&mut self, policy: &Pool, now: Timestamp) -> Arc<ClientUsage> {
        let usage = Arc::new(ClientUsage::new(policy.pool_usage(now)));
        self.made = Some((Instant::now(), usage.clone()));
        usage
    }
}

/// Reads the `codex.rate_limits` events of one account's response stream: records each for
/// the account and gives the client the pool's usage of that limit instead.
pub(crate) struct StreamUsage {
    shared: Arc<Shared>,
    account: AccountId,
}

impl StreamUsage {
    pub(crate) fn new(shared: Arc<Shared>, account: AccountId) -> Self {
        StreamUsage { shared, account }
    }
}

impl DataObserver for StreamUsage {
    fn data(&mut self, value: &[u8]) -> DataLine {
        // Most events are text deltas: a substring test spares them the JSON parser.
        if !contains(value, RATE_LIMITS_EVENT.as_bytes()) {
            return DataLine::Keep;
        }
        let Some(report) = UsageReport::from_event(value) else {
            return DataLine::Keep;
        };
        let limit_id = report
            .limits
            .first()
            .map_or(DEFAULT_LIMIT, LimitUsage::limit_id)
            .to_owned();
        let t = now();
        let mut state = self.shared.lock();
        if !report.is_empty() {
            // ok: only an account the pool no longer holds is refused; nothing to record.
            let _ = state.policy.record_usage(&self.account, &report, t);
        }
        let event = state.usage_event(t, &limit_id);
        drop(state);
        DataLine::Replace(event)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// One usage window, as `/status` shows it (example: [`PoolUsageReport`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct WindowReport {
    /// How much of the window is used, 0–100.
    pub used_percent: f64,
    /// The window's length in minutes, if reported.
    pub window_minutes: Option<u32>,
    /// When it resets (ms since the Unix epoch), if reported.
    pub resets_at_ms: Option<u64>,
}

/// One limit's usage (of an account or of the pool), as `/status` shows it (example:
/// [`PoolUsageReport`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct LimitReport {
    /// The limit (`codex`, or a metered one like `codex_bengalfox`).
    pub limit_id: String,
    /// Its display name (for a metered limit, the model it counts), if reported.
    pub limit_name: Option<String>,
    /// The short window (about 5 hours).
    pub primary: Option<WindowReport>,
    /// The long window (about a week).
    pub secondary: Option<WindowReport>,
}

impl LimitReport {
    pub(crate) fn of(limit: &LimitUsage) -> Self {
        let window = |w: &UsageWindow| WindowReport {
            used_percent: w.used_percent.get(),
            window_minutes: w.window_minutes,
            resets_at_ms: w.resets_at.map(Timestamp::as_millis),
        };
        LimitReport {
            limit_id: limit.limit_id().to_owned(),
            limit_name: limit.limit_name.clone(),
            primary: limit.primary.as_ref().map(window),
            secondary: limit.secondary.as_ref().map(window),
        }
    }
}

/// One limit's usage of one account, as `/status` shows it
/// ([`AccountReport::usage`](super::AccountReport::usage); example: [`PoolUsageReport`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct AccountUsage {
    /// The limit and its windows as last reported (windows that have reset since are left
    /// out).
    #[serde(flatten)]
    pub limit: LimitReport,
    /// When that was reported (ms since the Unix epoch).
    pub observed_at_ms: u64,
    /// While set, the account serves no request counted against this limit: a window is out
    /// of headroom (within the policy's margin or at its threshold) until then (ms since
    /// the Unix epoch).
    pub blocked_until_ms: Option<u64>,
}

impl AccountUsage {
    pub(crate) fn of(status: &UsageStatus) -> Self {
        AccountUsage {
            limit: LimitReport::of(&status.limit),
            observed_at_ms: status.observed_at.as_millis(),
            blocked_until_ms: status.blocked_until.map(Timestamp::as_millis),
        }
    }
}

/// The pool's usage, as `/status` shows it: what clients are told in their answers' usage
/// headers and events. Per limit and window, the mean of the enabled accounts' use (an
/// account a window keeps out counts as 100 %, one whose window reset or that
/// reported nothing as 0 %), resetting at the earliest reset of a window in use.
///
/// ```
/// use std::time::Duration;
/// use examples::mock_upstream::{MockConfig, MockUpstream, MockUsage, MockWindow};
/// use examples::proxy::{Accounts, ProxyOptions, RotationProxy, WrapperToken};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // ws-1's 5-hour window is at 90 % and grows 9 % per request; ws-2 reports nothing.
/// let window = MockWindow::new(90.0, 9.0, 300, Duration::from_secs(3600));
/// let mock = MockUpstream::start(MockConfig::default().usage("ws-1", MockUsage::new(window))).await?;
/// let mut accounts = Accounts::new();
/// for id in ["ws-1", "ws-2"] {
///     let login = mock.synthetic_account(id, &format!("{id}@example.com"), false);
///     accounts.push(Some(&login.email), None, login.tokens)?;
/// }
/// let token = WrapperToken::generate()?;
/// let proxy = RotationProxy::start(ProxyOptions::new(mock.base_url(), token.clone()), accounts).await?;
/// let answer = reqwest::Client::builder().no_proxy().build()?
///     .post(format!("{}/responses", proxy.base_url()))
///     .bearer_auth(token.secret().expose())
///     .body(r#"{"model":"gpt-5","input":"hi"}"#)
///     .send()
///     .await?;
/// // ws-1 answered at 99 %, two requests from full: it counts as 100 %, ws-2 as 0 %.
/// assert_eq!(answer.headers()["x-codex-primary-used-percent"], "50");
///
/// let status = proxy.status();
/// let ws_1 = &status.accounts[0].usage[0];
/// assert_eq!(ws_1.limit.primary.as_ref().map(|w| w.used_percent), Some(99.0));
/// assert!(ws_1.blocked_until_ms.is_some()); // no request before its reset
/// let pool = &status.pool_usage.limits[0];
/// assert_eq!((pool.limit_id.as_str(), pool.primary.as_ref().map(|w| w.used_percent)), ("codex", Some(50.0)));
/// proxy.shutdown().await;
/// mock.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct PoolUsageReport {
    /// Per limit.
    pub limits: Vec<LimitReport>,
}

impl PoolUsageReport {
    pub(crate) fn of(report: &UsageReport) -> Self {
        PoolUsageReport {
            limits: report.limits.iter().map(LimitReport::of).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use rotation_policy::usage::Percent;

    fn window(used: f64, minutes: u32, resets_at_s: u64) -> UsageWindow {
        UsageWindow::new(Percent::new(used).unwrap())
            .with_window_minutes(minutes)
            .with_resets_at(Timestamp::from_millis(resets_at_s * 1000))
    }

    fn report() -> UsageReport {
        let mut report = UsageReport::default();
        let mut codex = LimitUsage::new("codex").unwrap();
        codex.primary = Some(window(42.5, 300, 1_700_000_000));
        codex.secondary = Some(window(7.0, 10_080, 1_700_500_000));
        report.push(codex);
        let mut metered = LimitUsage::new("codex_bengalfox").unwrap();
        metered.limit_name = Some("gpt-5.2-codex-sonic".into());
        metered.primary = Some(UsageWindow::new(Percent::new(80.0).unwrap()));
        report.push(metered);
        report
    }

    #[test]
    fn usage_headers_are_recognized_by_family_and_nothing_else() {
        let mut h = HeaderMap::new();
        for name in [
            "x-codex-primary-used-percent",
            "x-codex-secondary-reset-at",
            "x-codex-bengalfox-limit-name",
            "x-codex-credits-balance",
            "x-codex-promo-message",
            "x-other-primary-window-minutes",
            "x-other-secondary-used-percent",
            "content-type",
            "x-request-id",
            "openai-processing-ms",
            "x-ratelimit-remaining-requests",
        ] {
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("1"));
        }
        strip_usage_headers(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                "content-type",
                "openai-processing-ms",
                "x-ratelimit-remaining-requests",
                "x-request-id"
            ]
        );
    }

    const NOW: Timestamp = Timestamp::from_millis(1_699_999_000_000);

    /// `a` reported [`report`], `b` a `codex` primary window at 17.5 %.
    fn pool() -> (Pool, AccountId) {
        let mut pool = Pool::new(rotation_policy::PolicyConfig::default(), 0).unwrap();
        let (a, b) = (AccountId::new("a").unwrap(), AccountId::new("b").unwrap());
        pool.add(a.clone()).unwrap();
        pool.add(b.clone()).unwrap();
        pool.record_usage(&a, &report(), NOW).unwrap();
        let mut codex = LimitUsage::new("codex").unwrap();
        codex.primary = Some(window(17.5, 300, 1_700_001_000));
        let mut of_b = UsageReport::default();
        of_b.push(codex);
        pool.record_usage(&b, &of_b, NOW).unwrap();
        (pool, b)
    }

    fn text(bytes: Bytes) -> String {
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn clients_get_the_pools_usage_written_as_the_backend_writes_it() {
        let (pool, _) = pool();
        let mut cache = UsageCache::default();
        let usage = cache.get(&pool, NOW);
        let mut h = HeaderMap::new();
        h.insert(
            "x-codex-primary-used-percent",
            HeaderValue::from_static("99"),
        );
        h.insert("x-codex-promo-message", HeaderValue::from_static("hi"));
        strip_usage_headers(&mut h);
        usage.write_headers(&mut h);
        let mut shown: Vec<String> = h
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
            .collect();
        shown.sort_unstable();
        // Means of both accounts (one not heard from for a window counts 0 %), the earliest
        // reset of a window in use.
        insta::assert_snapshot!(shown.join("\n"), @r"
        x-codex-bengalfox-limit-name: gpt-5.2-codex-sonic
        x-codex-bengalfox-primary-used-percent: 40
        x-codex-primary-reset-at: 1700000000
        x-codex-primary-used-percent: 30
        x-codex-primary-window-minutes: 300
        x-codex-secondary-reset-at: 1700500000
        x-codex-secondary-used-percent: 3.5
        x-codex-secondary-window-minutes: 10080
        ");
        // Every header written is one a client's answer is stripped of first.
        assert!(h.keys().all(is_usage_header));
        insta::assert_snapshot!(
            text(cache.event(&pool, NOW, "codex")),
            @r#"{"type":"codex.rate_limits","rate_limits":{"primary":{"used_percent":30.0,"window_minutes":300,"reset_at":1700000000},"secondary":{"used_percent":3.5,"window_minutes":10080,"reset_at":1700500000}}}"#
        );
        insta::assert_snapshot!(
            text(cache.event(&pool, NOW, "codex_bengalfox")),
            @r#"{"type":"codex.rate_limits","rate_limits":{"primary":{"used_percent":40.0}},"metered_limit_name":"codex_bengalfox"}"#
        );
        // A limit the pool knows nothing of: an event without windows, never the account's.
        insta::assert_snapshot!(
            text(cache.event(&pool, NOW, "codex_other")),
            @r#"{"type":"codex.rate_limits","metered_limit_name":"codex_other"}"#
        );
    }

    #[test]
    fn the_pools_usage_is_made_once_per_ttl_and_at_once_for_a_new_limit() {
        let (mut pool, b) = pool();
        // A TTL no slow test machine outlasts.
        let mut cache = UsageCache {
            ttl: Duration::from_secs(3600),
            ..UsageCache::default()
        };
        let first = cache.get(&pool, NOW);
        // A new report within the TTL: the same usage is sent, nothing recomputed.
        let mut codex = LimitUsage::new("codex").unwrap();
        codex.primary = Some(window(60.0, 300, 1_700_001_000));
        let mut newer = UsageReport::default();
        newer.push(codex);
        pool.record_usage(&b, &newer, NOW).unwrap();
        assert!(Arc::ptr_eq(&first, &cache.get(&pool, NOW)));
        assert!(text(cache.event(&pool, NOW, "codex")).contains(r#""used_percent":30.0"#));
        // The first report of a limit is told at once (the usage remade), and a second new
        // limit within the TTL gets an event without windows.
        let report_limit = |pool: &mut Pool, id: &str, used: f64| {
            let mut limit = LimitUsage::new(id).unwrap();
            limit.primary = Some(UsageWindow::new(Percent::new(used).unwrap()));
            let mut report = UsageReport::default();
            report.push(limit);
            pool.record_usage(&b, &report, NOW).unwrap();
        };
        report_limit(&mut pool, "codex_one", 50.0);
        let one = text(cache.event(&pool, NOW, "codex_one"));
        assert!(one.contains(r#""used_percent":25.0"#), "{one}");
        let remade = cache.get(&pool, NOW);
        assert!(!Arc::ptr_eq(&first, &remade));
        assert!(text(cache.event(&pool, NOW, "codex")).contains(r#""used_percent":51.25"#));
        report_limit(&mut pool, "codex_two", 70.0);
        assert_eq!(
            text(cache.event(&pool, NOW, "codex_two")),
            r#"{"type":"codex.rate_limits","metered_limit_name":"codex_two"}"#
        );
        assert!(Arc::ptr_eq(&remade, &cache.get(&pool, NOW)));
    }

    #[test]
    fn status_shows_limits_with_times_in_ms() {
        let shown = PoolUsageReport::of(&report());
        insta::assert_json_snapshot!(shown, @r#"
        {
          "limits": [
            {
              "limit_id": "codex",
              "limit_name": null,
              "primary": {
                "used_percent": 42.5,
                "window_minutes": 300,
                "resets_at_ms": 1700000000000
              },
              "secondary": {
                "used_percent": 7.0,
                "window_minutes": 10080,
                "resets_at_ms": 1700500000000
              }
            },
            {
              "limit_id": "codex_bengalfox",
              "limit_name": "gpt-5.2-codex-sonic",
              "primary": {
                "used_percent": 80.0,
                "window_minutes": null,
                "resets_at_ms": null
              },
              "secondary": null
            }
          ]
        }
        "#);
    }
}
