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
//! Counters satisfy, at every snapshot: `requests == in_flight + ok + upstream_errors +
//! gave_up + no_account + bad_gateway + cancelled` (wrapper-auth `401`s, `413`s, body-budget
//! `503`s and request-target `400`s are counted apart, as they never reach account selection).
//!
//! The request target is mapped to the upstream URL by a pure module with its own rules
//! table (`target.rs`): decoded and normalized first, anything that would leave
//! `{upstream}/` (dot segments plain or percent-encoded in any case, encoded separators,
//! control bytes, double encoding, absolute-form targets) is answered `400` and never sent,
//! and nothing from the client changes the upstream scheme, host or port. Request bodies are
//! drawn from a global budget ([`ProxyOptions::body_budget`]) besides the per-request cap:
//! over the budget is `503` with `Retry-After`.
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
mod budget;
mod codex_config;
mod headers;
mod serve;
mod target;
mod wrapper_token;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use auth_core::Timestamp as WallTimestamp;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use rotation_policy::{AccountId, Decision, Outcome, PolicyConfig, Pool, Selection, Timestamp};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use accounts::AfterRejection;
pub use accounts::{AccountCredentials, AccountReport, Accounts, load_pool_accounts};
use budget::{BodyBudget, BodyRefusal};
pub use codex_config::{CodexRoute, PROVIDER_ID};
pub use headers::strip_hop_by_hop;
pub use serve::{serve_http1, shutdown_signal};
use target::UpstreamBase;
pub use target::UpstreamUrlError;
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
    /// How long shutdown waits for open streams.
    pub grace: Duration,
    /// Refresh an access token this long before its `exp`.
    pub refresh_margin: Duration,
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
            grace: Duration::from_secs(10),
            refresh_margin: Duration::from_secs(60),
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
    /// The rotation policy's snapshot (counters, cooldowns, health).
    pub policy: rotation_policy::PoolStatus,
    /// The last error (redacted), if any.
    pub last_error: Option<String>,
}

struct State {
    policy: Pool,
    counters: ProxyCounters,
    last_error: Option<String>,
}

pub(crate) struct Shared {
    options: ProxyOptions,
    upstream: UpstreamBase,
    body_budget: Arc<BodyBudget>,
    client: reqwest::Client,
    state: Mutex<State>,
    accounts: Accounts,
    started_at: WallTimestamp,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section below leaves the state consistent before anything can
        // panic, so a poisoned lock still guards valid data.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn status(&self) -> StatusReport {
        let state = self.lock();
        let policy = state.policy.status(now());
        let accounts = self.accounts.reports(&policy);
        let mut counters = state.counters;
        counters.body_bytes_held = u64::try_from(self.body_budget.used()).unwrap_or(u64::MAX);
        StatusReport {
            started_at: self.started_at.to_string(),
            counters,
            accounts,
            policy,
            last_error: state.last_error.clone(),
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
        if accounts.is_empty() {
            return Err(ProxyError::EmptyPool);
        }
        let upstream = UpstreamBase::parse(&options.upstream)?;
        let body_budget = BodyBudget::new(options.body_budget);
        let mut policy = Pool::new(options.policy.clone(), options.seed)?;
        for id in accounts.ids() {
            policy.add(id.clone())?;
        }
        // Cooldowns saved by an earlier run still hold: a restart must not spend requests
        // on accounts the upstream is still rate limiting.
        let t = now();
        let mut restored = 0;
        for (id, family, until_ms) in accounts.saved_cooldowns(t.as_millis()) {
            policy.restore_cooldown(id, family, Timestamp::from_millis(until_ms), t)?;
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
            state: Mutex::new(State {
                policy,
                counters: ProxyCounters::default(),
                last_error: None,
            }),
            accounts,
            started_at: WallTimestamp::now(),
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
        tracing::info!(%addr, accounts = shared.accounts.len(), "rotation proxy listening");
        Ok(Self {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
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

    /// Stops accepting, waits for open streams (up to the grace period), then saves running
    /// cooldowns and last use to the pool store (refreshed tokens were saved at each refresh).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let shared = self.shared.clone();
        let saved = tokio::task::spawn_blocking(move || {
            let status = shared.lock().policy.status(now());
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
    }
}

fn full(body: impl Into<Bytes>) -> BoxBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn json_error(
    status: StatusCode,
    kind: &str,
    message: &str,
    retry_after: Option<Duration>,
) -> Response<BoxBody> {
    let mut error = serde_json::json!({"type": kind, "message": message});
    if let Some(wait) = retry_after {
        error["retry_after_ms"] =
            serde_json::json!(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
    }
    let mut response = Response::new(full(serde_json::json!({ "error": error }).to_string()));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(wait) = retry_after {
        let secs = wait.as_millis().div_ceil(1000).max(1);
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            h.insert(header::RETRY_AFTER, v);
        }
    }
    response
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
        return forward(shared, req).await;
    }
    json_error(
        StatusCode::NOT_FOUND,
        "not_found",
        "the proxy serves /v1/* and /status",
        None,
    )
}

#[derive(serde::Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default)]
    model: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    prompt_cache_key: Option<std::borrow::Cow<'a, str>>,
}

fn too_large(shared: &Shared) -> Response<BoxBody> {
    shared.lock().counters.rejected_too_large += 1;
    json_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_too_large",
        &format!(
            "request body over the proxy's limit of {} bytes",
            shared.options.body_limit.min(shared.options.body_budget)
        ),
        None,
    )
}

/// How long a client is told to wait when the body budget is spent: bodies in flight
/// are usually sent on within a second.
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

fn busy(shared: &Shared) -> Response<BoxBody> {
    shared.lock().counters.rejected_busy += 1;
    tracing::warn!(
        budget = shared.options.body_budget,
        "request body refused: the body budget is spent"
    );
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "proxy_busy",
        &format!(
            "the proxy already holds its budget of {} bytes of request bodies; retry after retry_after_ms",
            shared.options.body_budget
        ),
        Some(BUSY_RETRY_AFTER),
    )
}

fn bad_target(shared: &Shared, error: target::TargetError) -> Response<BoxBody> {
    shared.lock().counters.rejected_bad_target += 1;
    // The path itself is not logged or echoed: it is the attacker's text.
    tracing::warn!(reason = %error, "rejected: request target outside the upstream base path");
    json_error(
        StatusCode::BAD_REQUEST,
        "bad_request_target",
        &error.to_string(),
        None,
    )
}

/// The end of one proxied request, for the counters.
enum Answer {
    Ok,
    UpstreamError,
    GaveUp,
    NoAccount,
    BadGateway,
}

/// One request between account selection and its answer. Keeps `in_flight` and the
/// policy's dispatch bookkeeping exact even when the client goes away mid-request (hyper
/// then drops the handler future): the drop counts it as cancelled and refunds the dispatch.
struct Pending {
    shared: Arc<Shared>,
    finished: bool,
    dispatched: Option<AccountId>,
}

impl Pending {
    fn finish(&mut self, answer: Answer, error: Option<String>) {
        self.finished = true;
        let mut state = self.shared.lock();
        let c = &mut state.counters;
        c.in_flight -= 1;
        match answer {
            Answer::Ok => c.ok += 1,
            Answer::UpstreamError => c.upstream_errors += 1,
            Answer::GaveUp => c.gave_up += 1,
            Answer::NoAccount => c.no_account += 1,
            Answer::BadGateway => c.bad_gateway += 1,
        }
        if error.is_some() {
            state.last_error = error;
        }
    }

    fn report(
        &mut self,
        request: &mut rotation_policy::Request,
        account: &AccountId,
        outcome: Outcome,
        error: Option<String>,
    ) -> Decision {
        self.dispatched = None;
        report(&self.shared, request, account, outcome, error)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut state = self.shared.lock();
        if let Some(id) = self.dispatched.take() {
            let _ = state.policy.refund(&id, now());
        }
        state.counters.in_flight -= 1;
        state.counters.cancelled += 1;
        drop(state);
        tracing::info!("client went away before the answer; request cancelled");
    }
}

async fn forward(shared: Arc<Shared>, req: Request<Incoming>) -> Response<BoxBody> {
    let started = std::time::Instant::now();
    let (parts, body) = req.into_parts();
    // Where the request goes is settled before any body byte is read, and refused requests
    // never reach the upstream.
    let url = match shared.upstream.resolve(&parts.uri) {
        Ok(url) => url,
        Err(error) => return bad_target(&shared, error),
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // `_held` keeps the body's bytes counted against the budget until this request ends
    // (answered or dropped by hyper when the client goes away).
    let (body, _held) = match budget::read_body(
        body,
        declared,
        shared.options.body_limit,
        &shared.body_budget,
    )
    .await
    {
        Ok(read) => read,
        Err(BodyRefusal::TooLarge) => return too_large(&shared),
        Err(BodyRefusal::Busy) => return busy(&shared),
        Err(BodyRefusal::Unreadable) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "could not read the request body",
                None,
            );
        }
    };
    let peek: Option<Peek<'_>> = serde_json::from_slice(&body).ok();
    let family = peek
        .as_ref()
        .and_then(|p| p.model.as_deref())
        .filter(|m| !m.is_empty())
        .unwrap_or("*")
        .to_owned();
    let session = peek
        .as_ref()
        .and_then(|p| p.prompt_cache_key.as_deref().map(str::to_owned))
        .or_else(|| {
            ["session_id", "conversation_id"]
                .iter()
                .find_map(|h| parts.headers.get(*h)?.to_str().ok().map(str::to_owned))
        });
    let mut request = rotation_policy::Request::new(family);
    if let Some(session) = session {
        request = request.with_session(session);
    }
    let mut fwd_headers = parts.headers.clone();
    strip_hop_by_hop(&mut fwd_headers);
    headers::strip_request_only(&mut fwd_headers);

    {
        let mut state = shared.lock();
        state.counters.requests += 1;
        state.counters.in_flight += 1;
    }
    let mut pending = Pending {
        shared: shared.clone(),
        finished: false,
        dispatched: None,
    };
    // Bounded: the policy stops after `max_attempts`; this guards against a policy bug.
    let max_loops = shared
        .options
        .policy
        .max_attempts
        .saturating_mul(4)
        .clamp(4, 64);
    let mut last_status: Option<StatusCode> = None;
    // Set when an attempt must be re-sent on the same account with its refreshed token.
    let mut resend: Option<AccountId> = None;
    // Whether this attempt already re-sent after a refresh (at most once per attempt).
    let mut resent = false;
    for attempt in 0..max_loops {
        let selected = if let Some(id) = resend.take() {
            shared.lock().counters.resends += 1;
            Ok(id)
        } else {
            resent = false;
            let mut state = shared.lock();
            let t = now();
            match state.policy.select(&mut request, t) {
                Selection::Account(id) => {
                    // ok to ignore: `consume` only fails for an unknown id, just selected.
                    let _ = state.policy.consume(&id, t);
                    state.counters.attempts += 1;
                    if attempt > 0 {
                        state.counters.retries += 1;
                    }
                    Ok(id)
                }
                Selection::Exhausted { retry_after } => Err(Some(retry_after)),
                Selection::NoAccount => Err(None),
            }
        };
        let account = match selected {
            Ok(id) => {
                pending.dispatched = Some(id.clone());
                id
            }
            Err(Some(retry_after)) => {
                pending.finish(Answer::GaveUp, None);
                tracing::info!(
                    retry_after_ms = retry_after.as_millis() as u64,
                    "pool exhausted"
                );
                return json_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "pool_exhausted",
                    "every account is cooling down; retry after retry_after_ms",
                    Some(retry_after),
                );
            }
            Err(None) => {
                pending.finish(Answer::NoAccount, None);
                return json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_account",
                    "no account left to try for this request (all disabled or already tried)",
                    None,
                );
            }
        };
        let creds = match shared.accounts.usable_credentials(&shared, &account).await {
            Ok(creds) => creds,
            Err(reason) => {
                // Refresh failed: the account cannot be used; let the policy cool it down.
                let decision =
                    pending.report(&mut request, &account, Outcome::Unauthorized, Some(reason));
                match decision {
                    Decision::Retry => continue,
                    Decision::Wait(d) => {
                        tokio::time::sleep(d).await;
                        continue;
                    }
                    Decision::ReturnToClient { retry_after } => {
                        pending.finish(Answer::GaveUp, None);
                        return json_error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "refresh_failed",
                            "no account has a usable token right now",
                            retry_after,
                        );
                    }
                }
            }
        };
        let mut headers = fwd_headers.clone();
        if let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {}", creds.access_token.expose()))
        {
            v.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, v);
        }
        if let Some(id) = creds
            .chatgpt_account_id
            .as_deref()
            .and_then(|id| HeaderValue::from_str(id).ok())
        {
            headers.insert("chatgpt-account-id", id);
        }
        let sent = shared
            .client
            .request(parts.method.clone(), url.clone())
            .headers(headers)
            .body(body.clone())
            .send()
            .await;
        let wall = SystemTime::now();
        match sent {
            Ok(response) => {
                let status = response.status();
                last_status = Some(status);
                let outcome = Outcome::from_response(status.as_u16(), response.headers(), wall);
                let error = (outcome != Outcome::Success)
                    .then(|| format!("upstream answered {} for {account}", status.as_u16()));
                tracing::info!(
                    account = %account,
                    status = status.as_u16(),
                    attempt = attempt + 1,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "upstream answered"
                );
                // A 401 triggers a single-flight refresh, and the attempt is re-sent once on
                // the same account with the new token, as a new dispatch whose outcome is
                // reported like any other. The 401 itself is reported once per rejected
                // token (by the first request to see it), together with the refresh under
                // one lock, so the policy counts it but never cools the account down for a
                // token that is already replaced. Requests racing with the same stale token
                // add no new fact and are not reported again (each would count towards
                // "disable after N 401s in a row"). A 401 on a re-sent attempt, or a failed
                // refresh, is reported and decides the next step.
                let decision = if outcome == Outcome::Unauthorized && !resent {
                    let first = shared.accounts.first_rejection(&account, creds.generation);
                    match shared
                        .accounts
                        .refresh_after_rejection(&shared, &account, &creds)
                        .await
                    {
                        AfterRejection::AlreadyRefreshed | AfterRejection::RefreshedHere => {
                            let reported = first.then(|| {
                                let mut state = shared.lock();
                                let t = now();
                                let decision =
                                    state.policy.report(&mut request, &account, outcome, t);
                                pending.dispatched = None;
                                let disabled = state
                                    .policy
                                    .account_status(&account, t)
                                    .is_some_and(|s| s.disabled.is_some());
                                if !disabled {
                                    // ok to ignore: the id was just selected, so it is known.
                                    let _ = state.policy.mark_refreshed(&account, t);
                                    if state.policy.consume(&account, t).is_ok() {
                                        pending.dispatched = Some(account.clone());
                                    }
                                }
                                (disabled, decision)
                            });
                            match reported {
                                // That 401 was the last straw: the policy disabled the account.
                                Some((true, decision)) => decision,
                                _ => {
                                    drop(response);
                                    tracing::info!(account = %account, "401 answered with a refresh; re-sending with the new token");
                                    resend = Some(account.clone());
                                    resent = true;
                                    continue;
                                }
                            }
                        }
                        // The refresh already recorded the more useful error ("refresh failed…").
                        AfterRejection::Failed => {
                            pending.report(&mut request, &account, outcome, None)
                        }
                    }
                } else {
                    pending.report(&mut request, &account, outcome, error.clone())
                };
                match decision {
                    Decision::Retry => continue,
                    Decision::Wait(d) => {
                        tokio::time::sleep(d).await;
                        continue;
                    }
                    Decision::ReturnToClient {
                        retry_after: Some(wait),
                    } if outcome != Outcome::Success => {
                        pending.finish(Answer::GaveUp, error);
                        return json_error(
                            status,
                            "upstream_unavailable",
                            "every account failed or is cooling down; retry after retry_after_ms",
                            Some(wait),
                        );
                    }
                    Decision::ReturnToClient { .. } => {
                        let answer = if status.is_success() {
                            Answer::Ok
                        } else {
                            Answer::UpstreamError
                        };
                        pending.finish(answer, error);
                        return stream_back(&shared, response, account, request.family());
                    }
                }
            }
            Err(err) => {
                let outcome = if err.is_timeout() {
                    Outcome::Timeout
                } else {
                    Outcome::NetworkError
                };
                let message = format!("upstream request failed for {account}: {}", describe(&err));
                tracing::warn!(account = %account, error = %message, "upstream unreachable");
                match pending.report(&mut request, &account, outcome, Some(message.clone())) {
                    Decision::Retry => continue,
                    Decision::Wait(d) => {
                        tokio::time::sleep(d).await;
                        continue;
                    }
                    Decision::ReturnToClient { retry_after } => {
                        pending.finish(Answer::BadGateway, Some(message));
                        return json_error(
                            StatusCode::BAD_GATEWAY,
                            "upstream_unreachable",
                            "the upstream could not be reached",
                            retry_after,
                        );
                    }
                }
            }
        }
    }
    pending.finish(Answer::GaveUp, Some("retry loop bound reached".to_owned()));
    json_error(
        last_status.unwrap_or(StatusCode::BAD_GATEWAY),
        "retries_exhausted",
        "the request failed on every attempt",
        None,
    )
}

/// A reqwest error without its URL (which could carry query secrets).
fn describe(err: &reqwest::Error) -> String {
    let kind = if err.is_connect() {
        "connection failed"
    } else if err.is_timeout() {
        "timed out"
    } else if err.is_body() || err.is_decode() {
        "body error"
    } else {
        "request error"
    };
    kind.to_owned()
}

fn report(
    shared: &Shared,
    request: &mut rotation_policy::Request,
    account: &AccountId,
    outcome: Outcome,
    error: Option<String>,
) -> Decision {
    let mut state = shared.lock();
    let decision = state.policy.report(request, account, outcome, now());
    if let Some(e) = &error {
        state.last_error = Some(e.clone());
    }
    drop(state);
    if let Some(e) = error {
        shared.accounts.note_error(account, e);
    }
    decision
}

fn stream_back(
    shared: &Arc<Shared>,
    response: reqwest::Response,
    account: AccountId,
    family: &str,
) -> Response<BoxBody> {
    let status = response.status();
    let mut headers: HeaderMap = response.headers().clone();
    strip_hop_by_hop(&mut headers);
    let upstream: http::Response<reqwest::Body> = response.into();
    shared.lock().counters.streams_open += 1;
    let body = CountedBody {
        inner: upstream.into_body(),
        shared: shared.clone(),
        failed: false,
        account,
        family: family.to_owned(),
    };
    let mut out = Response::new(BodyExt::boxed_unsync(body));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

/// Streams the upstream body frame by frame (no buffering) and keeps `streams_open` and
/// `stream_errors` exact, including when the client goes away mid-stream. An upstream
/// stream that breaks is also reported to the policy as a network error of its account.
struct CountedBody {
    inner: reqwest::Body,
    shared: Arc<Shared>,
    failed: bool,
    account: AccountId,
    family: String,
}

impl CountedBody {
    fn broke(&mut self) {
        self.failed = true;
        let message = format!("the upstream stream broke for {}", self.account);
        let mut state = self.shared.lock();
        state.counters.stream_errors += 1;
        // The client already has its status line: the decision has nobody to act on it.
        let mut request = rotation_policy::Request::new(self.family.clone());
        let _ = state
            .policy
            .report(&mut request, &self.account, Outcome::NetworkError, now());
        state.last_error = Some(message.clone());
        drop(state);
        tracing::warn!(account = %self.account, "upstream stream broke mid-way");
        self.shared.accounts.note_error(&self.account, message);
    }
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(err))) => {
                if !self.failed {
                    self.broke();
                }
                Poll::Ready(Some(Err(Box::new(err))))
            }
            other => other.map(|o| o.map(|r| r.map_err(|e| Box::new(e) as BoxError))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CountedBody {
    fn drop(&mut self) {
        self.shared.lock().counters.streams_open -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_json(response: Response<BoxBody>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn user_facing_error_answers() {
        let token = WrapperToken::generate().unwrap();
        let options = ProxyOptions::new("http://127.0.0.1:9", token);
        let shared = Shared {
            upstream: UpstreamBase::parse(&options.upstream).unwrap(),
            body_budget: BodyBudget::new(options.body_budget),
            options,
            client: reqwest::Client::new(),
            state: Mutex::new(State {
                policy: Pool::new(PolicyConfig::default(), 1).unwrap(),
                counters: ProxyCounters::default(),
                last_error: None,
            }),
            accounts: Accounts::new(),
            started_at: WallTimestamp::now(),
        };
        let mut out = String::new();
        for (name, response) in [
            ("413", too_large(&shared)),
            ("503 busy", busy(&shared)),
            (
                "400 bad target",
                bad_target(&shared, target::TargetError::Escapes),
            ),
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
                counters.requests
            ),
            (1, 1, 1, 0)
        );
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
