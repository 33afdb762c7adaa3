//! A loopback rotation proxy for the Codex CLI, composed from the workspace crates.
//!
//! [`RotationProxy`] listens on loopback, checks a wrapper token ([`WrapperToken`]), and
//! forwards `POST /v1/responses` (any `/v1/<path>`) to `{upstream}/<path>` with one pool
//! account's `Authorization: Bearer <access token>` and `ChatGPT-Account-Id`. Which account,
//! when to retry elsewhere, how long to wait and what to tell the client when every account
//! cools down is decided by [`rotation_policy::Pool`]; the proxy only reports outcomes.
//! Expired or rejected access tokens are refreshed once per account at a time
//! (single-flight) and written back to the pool store.
//!
//! Responses stream through unbuffered. Request bodies are read once (capped; over the cap
//! is `413`) and shared between attempts without copying. Hop-by-hop headers are dropped
//! both ways. `GET /status` returns a consistent JSON snapshot ([`StatusReport`]).
//!
//! What the policy is told: the outcome of every upstream answer (2xx, 429, 401, 403, 5xx,
//! connection failure, timeout) and every failed refresh. One case is folded: when several
//! requests race with the same stale access token, each gets a `401` and waits for the one
//! (single-flight) refresh, then is re-sent once on the same account; that rejected token
//! is reported as one `Unauthorized` outcome (together with the refresh, under one lock),
//! not once per racing request, because counting each would make the policy disable a
//! healthy account after `disable_after_unauthorized` 401s "in a row". The re-sends are new
//! dispatches and their outcomes are reported as usual. Requests the client abandons before
//! an answer report nothing and hand their dispatch back ([`rotation_policy::Pool::refund`]).
//! A stream that breaks after its `2xx` was reported is reported again, as a network error
//! of that account (and counted in `stream_errors`).
//!
//! Per-family cooldowns saved in the pool file (on shutdown, by an earlier run, or by another
//! tool) that are still running are given to the policy at start, so a restarted proxy does
//! not spend requests on accounts the upstream is still rate limiting.
//!
//! Usage: the usage every upstream answer reports (its `x-codex-*` headers, and a
//! `codex.rate_limits` event read from the stream as it passes, unbuffered) is recorded for
//! its account ([`rotation_policy::Pool::record_usage`]), so an account out of headroom
//! (two requests from a full window, or at the usage threshold) gets no request before its
//! window resets. Clients are told the pool's usage
//! instead of the account's, in the headers and in the event (`usage.rs`, aggregation rules
//! in [`PoolUsageReport`]'s module); `/status` shows both. What the policy learned is shared
//! through `pool-state.json` (also at shutdown), so the next run starts with it.
//!
//! Counters satisfy, at every snapshot: `requests == in_flight + ok + upstream_errors +
//! gave_up + no_account + bad_gateway + cancelled` (wrapper-auth `401`s, `413`s, body-budget
//! `503`s, request-target `400`s and method `405`s are counted apart, as they never reach
//! account selection).
//!
//! A request continuing a conversation (`previous_response_id`) goes only to the account
//! that created that response (learned from each stream's `response.created` event, at
//! most 100,000 ids remembered); while that account cannot serve, the client gets `429
//! continuation_account_busy` with `Retry-After`, or `409 continuation_account_unavailable`
//! once it is out of the pool — never another account, which cannot know the conversation
//! (rules in `continuation.rs`).
//!
//! Only `GET`, `HEAD`, `POST`, `PUT`, `PATCH` and `DELETE` are forwarded; any other method
//! (`CONNECT`, `TRACE`, `OPTIONS`, extension methods) is answered `405` with `Allow` and never
//! sent upstream.
//!
//! The request target is mapped to the upstream URL by a pure module with its own rules
//! table (`target.rs`): decoded and normalized first, anything that would leave
//! `{upstream}/` (dot segments plain or percent-encoded in any case, encoded separators,
//! control bytes, double encoding, segments whose NFKC form holds a separator or is dots
//! only, absolute-form targets) is answered `400` and never sent, and nothing from the
//! client changes the upstream scheme, host or port. Request bodies are drawn from a global
//! budget ([`ProxyOptions::body_budget`]) besides the per-request cap: over the budget is
//! `503` with `Retry-After`.
//!
//! Two capabilities are off unless asked for: the idle usage probe
//! ([`ProxyOptions::usage_probe`], [`UsageProbe`]) asks the backend's usage endpoint about
//! accounts whose usage nobody has seen for a while, and the overflow source
//! ([`ProxyOptions::overflow`], [`OverflowSource`]) serves requests with an OpenAI API key
//! while no ChatGPT account can. Their rules are tables in their modules' docs.
//!
//! ```
//! use examples::mock_upstream::{Behavior, MockConfig, MockUpstream};
//! use examples::proxy::{Accounts, ProxyOptions, RotationProxy, WrapperToken};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A loopback upstream where the first account is rate limited.
//! let retry_after = std::time::Duration::from_secs(30);
//! let mock = MockUpstream::start(
//!     MockConfig::default().account("ws-1", Behavior::RateLimited { retry_after, times: u32::MAX }),
//! )
//! .await?;
//! let mut accounts = Accounts::new();
//! for id in ["ws-1", "ws-2"] {
//!     let login = mock.synthetic_account(id, &format!("{id}@example.com"), false);
//!     accounts.push(Some(&login.email), None, login.tokens)?;
//! }
//! let token = WrapperToken::generate()?;
//! let mut options = ProxyOptions::new(mock.base_url(), token.clone());
//! options.token_url = mock.token_url();
//! let proxy = RotationProxy::start(options, accounts).await?;
//!
//! // What `codex exec` does, with `ROTATION_PROXY_TOKEN` as its key.
//! let answer = reqwest::Client::builder().no_proxy().build()?
//!     .post(format!("{}/responses", proxy.base_url()))
//!     .bearer_auth(token.secret().expose())
//!     .body(r#"{"model":"gpt-5","input":"hi"}"#)
//!     .send()
//!     .await?;
//! assert_eq!(answer.status(), 200);
//! assert!(answer.text().await?.contains("response.completed"));
//!
//! let status = proxy.status();
//! assert_eq!(status.counters.ok, 1);
//! assert_eq!(status.accounts[0].outcomes.rate_limited, 1); // rotated away from ws-1
//! assert_eq!(status.accounts[0].email, "w***@example.com"); // masked
//! proxy.shutdown().await;
//! mock.shutdown().await;
//! # Ok(()) }
//! ```

mod accounts;
mod answers;
mod budget;
mod codex_config;
mod continuation;
mod forward;
mod gone;
mod headers;
mod in_flight;
mod overflow;
mod probe;
mod serve;
mod sse;
mod stream;
mod sync;
mod target;
mod usage;
mod wrapper_token;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use auth_core::Timestamp as WallTimestamp;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use rotation_policy::{PolicyConfig, Pool, Timestamp};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use accounts::{AccountCredentials, AccountReport, Accounts, load_pool_accounts};
use answers::{bad_target, full, json_error};
use budget::BodyBudget;
pub use codex_config::{CodexRoute, PROVIDER_ID};
use forward::forward;
pub use headers::strip_hop_by_hop;
pub use overflow::{OPENAI_API_BASE, OverflowKeyError, OverflowSource, OverflowStatus};
pub use probe::{CHATGPT_USAGE_URL, MAX_PER_MINUTE, UsageProbe, UsageProbeError, UsageProbeStatus};
pub use serve::{serve_http1, shutdown_signal};
pub use sync::SYNC_INTERVAL;
use target::UpstreamBase;
pub use target::UpstreamUrlError;
pub use usage::{AccountUsage, LimitReport, PoolUsageReport, WindowReport};
pub use wrapper_token::{TOKEN_ENV, WrapperToken, WrapperTokenError};

/// Boxed error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The response body type of the proxy and the mock upstream.
pub type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Default request body cap (64 MiB).
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024 * 1024;
/// Default budget for request bodies held at once across all requests (256 MiB): a few
/// large bodies in flight, a laptop's memory safe from many.
pub const DEFAULT_BODY_BUDGET: usize = 256 * 1024 * 1024;
/// The ChatGPT Codex backend (`/responses` is appended).
pub const CHATGPT_CODEX_UPSTREAM: &str = "https://chatgpt.com/backend-api/codex";
/// The OpenAI OAuth token endpoint used for refreshes.
pub const OPENAI_TOKEN_URL: &str = "https://auth.openai.com/oauth/token";

/// Settings of a [`RotationProxy`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ProxyOptions {
    /// Where to listen (loopback by default).
    pub listen: SocketAddr,
    /// Upstream base URL (`http` or `https`, no credentials, query or fragment);
    /// `/v1/<path>` goes to `{upstream}/<path>`, and never outside `{upstream}/` (paths
    /// that would leave it are answered `400`).
    pub upstream: String,
    /// OAuth token endpoint for refreshes.
    pub token_url: String,
    /// The token clients must present.
    pub wrapper_token: WrapperToken,
    /// Request body cap in bytes (per request; over it is `413`).
    pub body_limit: usize,
    /// Bytes of request bodies held at once across all requests; a request that would go
    /// over is answered `503` with `Retry-After` (see [`DEFAULT_BODY_BUDGET`]).
    pub body_budget: usize,
    /// Rotation policy settings.
    pub policy: PolicyConfig,
    /// Seed for the policy's jitter.
    pub seed: u64,
    /// How long a request body may go without delivering a byte before the request is
    /// answered `408` (default 30 s). Bytes are reserved from the budget only as they
    /// arrive, so a client that declares a large body and then stalls holds nothing.
    pub body_idle_timeout: Duration,
    /// How long shutdown waits for open streams.
    pub grace: Duration,
    /// Refresh an access token this long before its `exp`.
    pub refresh_margin: Duration,
    /// The idle usage probe (off by default; see [`UsageProbe`] for when it queries).
    pub usage_probe: Option<UsageProbe>,
    /// An OpenAI API key that serves only when no ChatGPT account can (off by default;
    /// see [`OverflowSource`] for when it serves).
    pub overflow: Option<OverflowSource>,
}

impl ProxyOptions {
    /// Options with defaults: `127.0.0.1:0`, 64 MiB cap per body, 256 MiB for all bodies
    /// at once, default policy.
    ///
    /// ```
    /// use examples::proxy::{DEFAULT_BODY_BUDGET, ProxyOptions, WrapperToken};
    ///
    /// let token = WrapperToken::generate().unwrap();
    /// let mut options = ProxyOptions::new("https://chatgpt.com/backend-api/codex/", token);
    /// assert_eq!(options.upstream, "https://chatgpt.com/backend-api/codex");
    /// assert_eq!(options.body_budget, DEFAULT_BODY_BUDGET);
    /// options.body_budget = 64 * 1024 * 1024; // a smaller machine
    /// ```
    pub fn new(upstream: impl Into<String>, wrapper_token: WrapperToken) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            upstream: upstream.into().trim_end_matches('/').to_owned(),
            token_url: OPENAI_TOKEN_URL.to_owned(),
            wrapper_token,
            body_limit: DEFAULT_BODY_LIMIT,
            body_budget: DEFAULT_BODY_BUDGET,
            policy: PolicyConfig::default(),
            seed: 0x5eed,
            body_idle_timeout: Duration::from_secs(30),
            grace: Duration::from_secs(10),
            refresh_margin: Duration::from_secs(60),
            usage_probe: None,
            overflow: None,
        }
    }
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// Binding the listen address failed.
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The policy rejected its configuration or an account id.
    #[error("rotation policy: {0}")]
    Policy(#[from] rotation_policy::PolicyError),
    /// The HTTP client could not be built.
    #[error("could not build the upstream HTTP client: {0}")]
    Client(String),
    /// The pool store could not be read.
    #[error("could not load the account pool: {0}")]
    Pool(String),
    /// The pool has no usable account.
    #[error("the account pool is empty: add accounts before starting the proxy")]
    EmptyPool,
    /// The upstream URL cannot be used (the value is not repeated: it may hold secrets).
    #[error(transparent)]
    Upstream(#[from] UpstreamUrlError),
    /// The usage probe's settings cannot be used.
    #[error(transparent)]
    UsageProbe(#[from] UsageProbeError),
    /// The overflow source's base URL cannot be used (the value is not repeated).
    #[error("overflow source: {0}")]
    OverflowUrl(UpstreamUrlError),
}

/// The proxy's own counters (see the module docs for the invariant).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ProxyCounters {
    /// Authorized requests that entered account selection.
    pub requests: u64,
    /// Of those, not answered yet.
    pub in_flight: u64,
    /// Answered with the upstream's 2xx response.
    pub ok: u64,
    /// Answered with the upstream's non-2xx response (passed through).
    pub upstream_errors: u64,
    /// Answered by the proxy with 429/5xx and `retry_after_ms` (every account cooling down).
    pub gave_up: u64,
    /// Answered 503: no enabled account.
    pub no_account: u64,
    /// Answered 502: upstream unreachable on every attempt.
    pub bad_gateway: u64,
    /// Abandoned by the client before an answer (its dispatch refunded to the policy).
    pub cancelled: u64,
    /// Upstream dispatches (≥ answered requests).
    pub attempts: u64,
    /// Attempts after the first, on the same or another account.
    pub retries: u64,
    /// Attempts re-sent on the same account after a 401 was answered with a token refresh
    /// (upstream requests = `attempts + resends`).
    pub resends: u64,
    /// Successful token refreshes.
    pub refreshes: u64,
    /// Failed token refreshes.
    pub refresh_failures: u64,
    /// Requests refused for a missing or wrong wrapper token.
    pub rejected_unauthorized: u64,
    /// Requests refused for a body over the cap.
    pub rejected_too_large: u64,
    /// Requests answered `503` because the request-body budget was spent.
    pub rejected_busy: u64,
    /// Requests refused (`400`) for a target that would leave the upstream base path or
    /// is not a plain path (never sent upstream).
    pub rejected_bad_target: u64,
    /// Requests refused (`405`) for a method the proxy does not forward (`CONNECT`,
    /// `TRACE`, `OPTIONS`, extension methods; never sent upstream).
    pub rejected_method: u64,
    /// Bytes of request bodies held right now (reserved from the body budget).
    pub body_bytes_held: u64,
    /// Response streams open right now.
    pub streams_open: u64,
    /// Response streams that broke mid-way.
    pub stream_errors: u64,
}

/// The `GET /status` document.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct StatusReport {
    /// When the proxy started (RFC 3339).
    pub started_at: String,
    /// The proxy's counters.
    pub counters: ProxyCounters,
    /// Per-account state: masked email, refreshes, last error, and the policy's view.
    pub accounts: Vec<AccountReport>,
    /// The pool's usage, as clients are told it (see [`PoolUsageReport`]).
    pub pool_usage: PoolUsageReport,
    /// The rotation policy's snapshot (counters, cooldowns, health).
    pub policy: rotation_policy::PoolStatus,
    /// The last error (redacted), if any.
    pub last_error: Option<String>,
    /// The idle usage probe's counters (`configured: false` when it is off).
    pub usage_probe: UsageProbeStatus,
    /// The overflow source (`configured: false` when there is none; never the key).
    pub overflow: OverflowStatus,
}

struct State {
    policy: Pool,
    counters: ProxyCounters,
    last_error: Option<String>,
    /// The pool's usage as told to clients, remade at most once per `usage::USAGE_TTL`.
    usage: usage::UsageCache,
}

impl State {
    fn new(policy: Pool) -> Self {
        State {
            policy,
            counters: ProxyCounters::default(),
            last_error: None,
            usage: usage::UsageCache::default(),
        }
    }

    /// The pool's usage as clients are told it (O(1) but once per `usage::USAGE_TTL`).
    fn client_usage(&mut self, now: Timestamp) -> Arc<usage::ClientUsage> {
        self.usage.get(&self.policy, now)
    }

    /// A `codex.rate_limits` event with the pool's usage of `limit_id` (see
    /// `usage::UsageCache::event`).
    fn usage_event(&mut self, now: Timestamp, limit_id: &str) -> Bytes {
        self.usage.event(&self.policy, now, limit_id)
    }
}

pub(crate) struct Shared {
    options: ProxyOptions,
    upstream: UpstreamBase,
    body_budget: Arc<BodyBudget>,
    client: reqwest::Client,
    state: Mutex<State>,
    accounts: Accounts,
    started_at: WallTimestamp,
    /// The overflow source, if configured.
    overflow: Option<overflow::Overflow>,
    /// The usage probe's counters and bookkeeping (idle when it is off).
    usage_probe: probe::ProbeState,
    /// Which account created which response (for `previous_response_id`); its own lock,
    /// so stream events never wait for the policy's.
    creators: Mutex<continuation::Creators>,
}

impl Shared {
    fn creators(&self) -> MutexGuard<'_, continuation::Creators> {
        // Every change to the table leaves it consistent before anything can panic.
        self.creators
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section below leaves the state consistent before anything can
        // panic, so a poisoned lock still guards valid data.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn status(&self) -> StatusReport {
        let mut state = self.lock();
        let t = now();
        let policy = state.policy.status(t);
        let pool_usage = state.client_usage(t);
        let mut counters = state.counters;
        let last_error = state.last_error.clone();
        // Requests wait for this lock: the per-account report is built after it is let go.
        drop(state);
        let accounts = self.accounts.reports(&policy);
        counters.body_bytes_held = u64::try_from(self.body_budget.used()).unwrap_or(u64::MAX);
        StatusReport {
            started_at: self.started_at.to_string(),
            counters,
            accounts,
            pool_usage: PoolUsageReport::of(pool_usage.report()),
            policy,
            last_error,
            usage_probe: self.usage_probe.status(self.options.usage_probe.is_some()),
            overflow: overflow::status(self, counters.attempts),
        }
    }
}

#[cfg(test)]
impl Shared {
    /// A proxy's shared state over `policy`, without accounts or a listener, for unit tests
    /// of its parts (upstream `http://127.0.0.1:9`, nothing listens there).
    pub(crate) fn for_tests(policy: Pool) -> Self {
        let token = WrapperToken::generate().unwrap_or_else(|e| panic!("{e}"));
        let options = ProxyOptions::new("http://127.0.0.1:9", token);
        Shared {
            upstream: UpstreamBase::parse(&options.upstream).unwrap_or_else(|e| panic!("{e}")),
            body_budget: BodyBudget::new(options.body_budget),
            options,
            client: reqwest::Client::new(),
            state: Mutex::new(State::new(policy)),
            accounts: Accounts::new(),
            started_at: WallTimestamp::now(),
            overflow: None,
            usage_probe: probe::ProbeState::default(),
            creators: Mutex::new(continuation::Creators::with_capacity(
                continuation::MAX_REMEMBERED,
            )),
        }
    }
}

fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

/// A running proxy. Stop it with [`RotationProxy::shutdown`].
pub struct RotationProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    /// Follows the pool file (live account changes).
    follower: Option<JoinHandle<()>>,
    /// The usage probe, when it is on.
    usage_probe: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RotationProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotationProxy")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RotationProxy {
    /// Binds `options.listen` and starts serving `accounts`.
    pub async fn start(options: ProxyOptions, accounts: Accounts) -> Result<Self, ProxyError> {
        let upstream = UpstreamBase::parse(&options.upstream)?;
        if let Some(probe) = &options.usage_probe {
            probe.validate()?;
        }
        let overflow = match &options.overflow {
            Some(source) => Some(overflow::Overflow::new(source).map_err(ProxyError::OverflowUrl)?),
            None => None,
        };
        if accounts.is_empty() {
            return Err(ProxyError::EmptyPool);
        }
        let body_budget = BodyBudget::new(options.body_budget);
        let mut policy = Pool::new(options.policy.clone(), options.seed)?;
        for id in accounts.ids() {
            policy.add(id.clone())?;
        }
        if let Some(store) = accounts.store() {
            // What every process learned so far (cooldowns, disables, health): a restarted
            // or second proxy honours it from its first request.
            match store.load_policy_state() {
                Ok(loaded) => {
                    if let Some(problem) = loaded.problem {
                        tracing::warn!(problem = %auth_core::terminal::escape_control(&problem.to_string()), "policy state not restored");
                    }
                    let report = policy.merge_state(&loaded.state, now());
                    if report.applied > 0 {
                        tracing::info!(
                            accounts = report.applied,
                            "policy state restored from the pool"
                        );
                    }
                    sync::pool_word_last(&mut policy, &accounts.pool_disabled(), &loaded.state);
                    // Restored, not learned here: nothing to write back.
                    let _ = policy.take_changes();
                }
                Err(err) => {
                    tracing::warn!(error = %auth_core::terminal::escape_control(&err.to_string()), "could not read the policy state; starting fresh")
                }
            }
        }
        // Disabled by hand, or gone for everyone: in the pool but never picked. Applied
        // after the shared state, which never outvotes the pool.
        for (id, reason) in accounts.pool_disabled() {
            // ok: only an unknown id is refused; the account then is not served.
            let _ = policy.disable_for(&id, reason);
        }
        // Cooldowns saved by an earlier run still hold: a restart must not spend requests
        // on accounts the upstream is still rate limiting.
        let t = now();
        let mut restored = 0;
        for (id, family, until_ms) in accounts.saved_cooldowns(t.as_millis()) {
            policy.restore_cooldown(&id, &family, Timestamp::from_millis(until_ms), t)?;
            restored += 1;
        }
        if restored > 0 {
            tracing::info!(
                cooldowns = restored,
                "running cooldowns restored from the pool"
            );
        }
        // Redirects go back to the client, never followed here: following one would send
        // the account's bearer token and account id to a URL the proxy did not choose.
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(300))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ProxyError::Client(e.to_string()))?;
        let listener =
            TcpListener::bind(options.listen)
                .await
                .map_err(|source| ProxyError::Bind {
                    addr: options.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| ProxyError::Bind {
            addr: options.listen,
            source,
        })?;
        let grace = options.grace;
        let shared = Arc::new(Shared {
            options,
            upstream,
            body_budget,
            client,
            state: Mutex::new(State::new(policy)),
            accounts,
            started_at: WallTimestamp::now(),
            overflow,
            usage_probe: probe::ProbeState::default(),
            creators: Mutex::new(continuation::Creators::with_capacity(
                continuation::MAX_REMEMBERED,
            )),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let handler = shared.clone();
        let task = tokio::spawn(serve_http1(
            listener,
            move |req| handle(handler.clone(), req),
            async move {
                let _ = stopped.await;
            },
            grace,
        ));
        let follower = tokio::spawn(sync::follow_pool(shared.clone()));
        let usage_probe = shared
            .options
            .usage_probe
            .clone()
            .map(|probe| tokio::spawn(probe::run(shared.clone(), probe)));
        tracing::info!(%addr, accounts = shared.accounts.len(), "rotation proxy listening");
        Ok(Self {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
            follower: Some(follower),
            usage_probe,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL for `config.toml`: `http://ADDR/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// A consistent snapshot of counters and accounts (what `GET /status` returns).
    pub fn status(&self) -> StatusReport {
        self.shared.status()
    }

    /// Stops accepting, waits for open streams (up to the grace period), then writes what the
    /// policy learned since the last sync tick to the shared state (`pool-state.json`) and
    /// saves running cooldowns and last use to the pool store (refreshed tokens were saved
    /// at each refresh).
    pub async fn shutdown(mut self) {
        if let Some(probe) = self.usage_probe.take() {
            probe.abort();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(follower) = self.follower.take() {
            follower.abort();
        }
        let shared = self.shared.clone();
        let saved = tokio::task::spawn_blocking(move || {
            let (status, changes) = {
                let mut state = shared.lock();
                (state.policy.status(now()), state.policy.take_changes())
            };
            // What was learned since the last sync tick (a usage report, a 429) is shared
            // too, so the next run or another process steers by it.
            sync::save_last_changes(&shared, &changes);
            shared.accounts.save_observations(&status)
        })
        .await;
        match saved {
            Ok(Ok(n)) if n > 0 => {
                tracing::info!(accounts = n, "cooldowns and last use saved to the pool")
            }
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "could not save cooldowns to the pool"),
            Err(_) => tracing::warn!("saving cooldowns to the pool was cancelled"),
        }
        tracing::info!("rotation proxy stopped");
    }
}

impl Drop for RotationProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(follower) = self.follower.take() {
            follower.abort();
        }
        if let Some(probe) = self.usage_probe.take() {
            probe.abort();
        }
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<BoxBody> {
    if !shared.options.wrapper_token.verify(req.headers()) {
        shared.lock().counters.rejected_unauthorized += 1;
        tracing::warn!(
            path = req.uri().path(),
            "rejected: missing or wrong wrapper token"
        );
        let mut r = json_error(
            StatusCode::UNAUTHORIZED,
            "invalid_wrapper_token",
            "missing or wrong proxy token: send it as `Authorization: Bearer …` or `x-api-key`",
            None,
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        return bad_target(&shared, target::TargetError::NotOriginForm);
    }
    let path = req.uri().path();
    if req.method() == Method::GET && path == "/status" {
        let body = serde_json::to_vec_pretty(&shared.status()).unwrap_or_default();
        let mut r = Response::new(full(body));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return r;
    }
    if path.starts_with("/v1/") {
        let mut answer = forward(shared.clone(), req).await;
        usage::set_pool_headers(&shared, answer.headers_mut());
        return answer;
    }
    json_error(
        StatusCode::NOT_FOUND,
        "not_found",
        "the proxy serves /v1/* and /status",
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::answers::{FORWARDED_METHODS, bad_method, busy, too_large};
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(response: Response<BoxBody>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn user_facing_error_answers() {
        let shared = Shared::for_tests(Pool::new(PolicyConfig::default(), 1).unwrap());
        let mut out = String::new();
        for (name, response) in [
            ("413", too_large(&shared)),
            ("503 busy", busy(&shared)),
            (
                "400 bad target",
                bad_target(&shared, target::TargetError::Escapes),
            ),
            ("405 method", bad_method(&shared, &Method::TRACE)),
            (
                "429 exhausted",
                json_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "pool_exhausted",
                    "every account is cooling down; retry after retry_after_ms",
                    Some(Duration::from_millis(12_345)),
                ),
            ),
            (
                "503 no account",
                json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_account",
                    "no account left to try for this request (all disabled or already tried)",
                    None,
                ),
            ),
        ] {
            let status = response.status();
            let retry = response
                .headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.to_str().unwrap().to_owned());
            let body = body_json(response).await;
            out.push_str(&format!(
                "{name}: {status} retry-after={retry:?}\n{body:#}\n\n"
            ));
        }
        insta::assert_snapshot!(out);
        let counters = shared.lock().counters;
        assert_eq!(
            (
                counters.rejected_too_large,
                counters.rejected_busy,
                counters.rejected_bad_target,
                counters.rejected_method,
                counters.requests
            ),
            (1, 1, 1, 1, 0)
        );
        // `Allow` lists exactly the methods that are forwarded.
        let allow = bad_method(&shared, &Method::CONNECT);
        let listed: Vec<&str> = allow.headers()[header::ALLOW]
            .to_str()
            .unwrap()
            .split(", ")
            .collect();
        let forwarded: Vec<&str> = FORWARDED_METHODS.iter().map(Method::as_str).collect();
        assert_eq!(listed, forwarded);
    }

    #[tokio::test]
    async fn exhausted_answer_carries_exact_ms_and_rounded_up_retry_after() {
        let r = json_error(
            StatusCode::TOO_MANY_REQUESTS,
            "pool_exhausted",
            "every account is cooling down",
            Some(Duration::from_millis(19_001)),
        );
        assert_eq!(r.headers()[header::RETRY_AFTER], "20");
        let v = body_json(r).await;
        assert_eq!(v["error"]["retry_after_ms"], 19_001);
        assert_eq!(v["error"]["type"], "pool_exhausted");
        // Sub-second waits still say "1": `Retry-After: 0` would invite a hot loop.
        let r = json_error(
            StatusCode::TOO_MANY_REQUESTS,
            "x",
            "y",
            Some(Duration::from_millis(5)),
        );
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let r = json_error(StatusCode::NOT_FOUND, "not_found", "z", None);
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
        assert!(body_json(r).await["error"].get("retry_after_ms").is_none());
    }
}
