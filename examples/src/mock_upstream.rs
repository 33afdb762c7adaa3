//! A loopback stand-in for the ChatGPT Codex backend and its OAuth token endpoint.
//!
//! [`MockUpstream`] answers `POST /responses` with the Responses API server-sent-event stream
//! the Codex CLI needs (`response.created`, optional `response.output_text.delta`s,
//! `response.output_item.done` with an assistant message, `response.completed` with usage),
//! or with a small JSON body when the request says `"stream": false`. Each account (told apart
//! by the `ChatGPT-Account-Id` header) can be given a [`Behavior`]: answer normally, rate
//! limit (429 with `Retry-After`), fail with a burst of 5xx, or reject every access token the
//! mock did not issue itself until the client refreshes through `POST /oauth/token`.
//!
//! It binds `127.0.0.1` on an ephemeral port and records what it saw ([`MockStats`],
//! [`RecordedRequest`], and every request on any route as a [`SeenRequest`]) so tests can
//! check what a proxy forwarded, and where. With [`MockConfig::base_path`] it serves its API
//! under a path prefix, as the real backend does (`/backend-api/codex/responses`), so a test
//! can tell a request that stayed under the base path from one that left it.
//!
//! `/redirect?to=TARGET` answers `307` to `TARGET` (for testing that redirects are not
//! followed).
//!
//! Request bodies are counted in full but only their first 4 MiB are kept (enough to read
//! `input` and `stream`), so large uploads do not fill the test process's memory.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use std::time::Duration;
//! use examples::mock_upstream::{Behavior, MockConfig, MockUpstream};
//!
//! let mock = MockUpstream::start(
//!     MockConfig::default()
//!         .account("acct-1", Behavior::RateLimited { retry_after: Duration::from_secs(30), times: u32::MAX }),
//! )
//! .await?;
//! println!("upstream at {}", mock.base_url());
//! mock.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use auth_core::jwt::{self, IdTokenClaims, PlanType};
use auth_core::{Secret, TokenData};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Frame, Incoming};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::proxy::{BoxBody, BoxError, serve_http1};

/// How the mock treats requests for one account.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Behavior {
    /// Answer every request.
    Ok,
    /// Answer the first `times` requests with `429` and `Retry-After: <secs>`, then normally.
    RateLimited {
        /// The wait announced in `Retry-After` (whole seconds, rounded up) and `retry-after-ms`.
        retry_after: Duration,
        /// How many requests are refused (`u32::MAX`: all of them).
        times: u32,
    },
    /// Answer the first `times` requests with `500`, then normally.
    ServerErrors {
        /// How many requests fail.
        times: u32,
    },
    /// Answer `401` to any access token the mock did not issue through `POST /oauth/token`.
    NeedsRefresh,
}

/// Settings of a [`MockUpstream`].
#[derive(Clone, Debug)]
pub struct MockConfig {
    accounts: HashMap<String, Behavior>,
    reply: String,
    deltas: usize,
    event_delay: Duration,
    pause: Option<Arc<tokio::sync::Notify>>,
    stall: Option<Arc<tokio::sync::Notify>>,
    break_streams: bool,
    base_path: String,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            accounts: HashMap::new(),
            reply: "Hello from the loopback mock upstream.".to_owned(),
            deltas: 0,
            event_delay: Duration::ZERO,
            pause: None,
            stall: None,
            break_streams: false,
            base_path: String::new(),
        }
    }
}

impl MockConfig {
    /// Sets the behaviour for requests carrying `ChatGPT-Account-Id: account_id` (others: [`Behavior::Ok`]).
    pub fn account(mut self, account_id: impl Into<String>, behavior: Behavior) -> Self {
        self.accounts.insert(account_id.into(), behavior);
        self
    }

    /// The assistant's answer when the request's `input` is not a plain string (a string is echoed).
    pub fn reply(mut self, text: impl Into<String>) -> Self {
        self.reply = text.into();
        self
    }

    /// Splits the answer into `n` `response.output_text.delta` events before the final item.
    pub fn deltas(mut self, n: usize) -> Self {
        self.deltas = n;
        self
    }

    /// After the first SSE event of each stream, waits until `gate` is notified (one
    /// notification per stream) — lets a test prove that a proxy forwards events unbuffered.
    pub fn pause_after_first_event(mut self, gate: Arc<tokio::sync::Notify>) -> Self {
        self.pause = Some(gate);
        self
    }

    /// Before answering each `/responses` request (after reading it), waits until `gate` is
    /// notified — lets a test abandon a request while the upstream is still working on it.
    pub fn stall_before_answer(mut self, gate: Arc<tokio::sync::Notify>) -> Self {
        self.stall = Some(gate);
        self
    }

    /// Breaks every SSE stream after its first event (the connection is cut mid-body), as a
    /// failing upstream would; with [`pause_after_first_event`](Self::pause_after_first_event)
    /// the break comes when the gate opens.
    pub fn break_streams_after_first_event(mut self) -> Self {
        self.break_streams = true;
        self
    }

    /// Serves `/responses` and `/models` under `prefix` (e.g. `/backend-api/codex`, a
    /// trailing `/` ignored); [`MockUpstream::base_url`] then ends with it. The token
    /// endpoint stays at `/oauth/token`.
    ///
    /// ```
    /// use examples::mock_upstream::MockConfig;
    /// let config = MockConfig::default().base_path("/backend-api/codex/");
    /// # let _ = config;
    /// ```
    pub fn base_path(mut self, prefix: &str) -> Self {
        self.base_path = prefix.trim_end_matches('/').to_owned();
        self
    }

    /// Waits this long between SSE events (to observe streaming).
    pub fn event_delay(mut self, delay: Duration) -> Self {
        self.event_delay = delay;
        self
    }
}

/// One request the mock received (header names only, never values).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordedRequest {
    /// Request path.
    pub path: String,
    /// Request method.
    pub method: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// The `ChatGPT-Account-Id` header, if any.
    pub account_id: Option<String>,
    /// Lower-cased names of every header received.
    pub header_names: Vec<String>,
    /// The status the mock answered.
    pub status: u16,
    /// Bytes of request body received (counted in full, kept only in part).
    pub body_len: u64,
}

/// Any request the mock received, on any route (the token endpoint and unknown paths
/// included), before it was routed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SeenRequest {
    /// Request method.
    pub method: String,
    /// The request target as received (path and query).
    pub target: String,
    /// The `Host` header, if any.
    pub host: Option<String>,
    /// Whether an `Authorization` header was present (its value is never kept).
    pub authorization: bool,
    /// The `ChatGPT-Account-Id` header, if any.
    pub account_id: Option<String>,
}

/// Per-account counts of what the mock answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AccountCounts {
    /// Requests answered normally.
    pub ok: u64,
    /// Requests answered with 429.
    pub rate_limited: u64,
    /// Requests answered with 5xx.
    pub server_errors: u64,
    /// Requests answered with 401.
    pub unauthorized: u64,
    /// Successful refreshes through `/oauth/token`.
    pub refreshes: u64,
}

/// A snapshot of what the mock saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MockStats {
    /// Counts per `ChatGPT-Account-Id` (`-` for requests without one).
    pub accounts: HashMap<String, AccountCounts>,
    /// Total `/responses` requests.
    pub responses_requests: u64,
}

/// A synthetic ChatGPT login: real-shaped unsigned JWTs for tests and demos, never valid anywhere else.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SyntheticAccount {
    /// The ChatGPT account id (`ChatGPT-Account-Id`).
    pub account_id: String,
    /// The (fake) email.
    pub email: String,
    /// The tokens, as they would sit in `auth.json`.
    pub tokens: TokenData,
}

const MAX_RECORDED: usize = 10_000;
/// Bodies longer than this are refused (`413`), as a real backend would.
const MAX_BODY: u64 = 80 * 1024 * 1024;
/// Of each body, the bytes kept in memory for parsing.
const KEPT_BODY: usize = 4 * 1024 * 1024;

struct State {
    config: MockConfig,
    inner: Mutex<Inner>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct Inner {
    remaining: HashMap<String, u32>,
    issued_access: HashSet<String>,
    refresh_grants: HashMap<String, (String, String)>,
    stats: MockStats,
    recorded: Vec<RecordedRequest>,
    seen: Vec<SeenRequest>,
}

/// A running mock upstream; stops on [`MockUpstream::shutdown`] or drop.
pub struct MockUpstream {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MockUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockUpstream")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MockUpstream {
    /// Binds `127.0.0.1:0` and serves until shut down.
    pub async fn start(config: MockConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let mut inner = Inner::default();
        for (id, behavior) in &config.accounts {
            let times = match behavior {
                Behavior::RateLimited { times, .. } | Behavior::ServerErrors { times } => *times,
                _ => 0,
            };
            inner.remaining.insert(id.clone(), times);
        }
        let state = Arc::new(State {
            config,
            inner: Mutex::new(inner),
            next_id: AtomicU64::new(1),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let handler_state = state.clone();
        let task = tokio::spawn(serve_http1(
            listener,
            move |req| handle(handler_state.clone(), req),
            async move {
                let _ = stopped.await;
            },
            Duration::from_secs(5),
        ));
        Ok(Self {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (plus the [`MockConfig::base_path`], if set) — pass it as the
    /// proxy's upstream (it serves `/responses` under it).
    pub fn base_url(&self) -> String {
        format!("http://{}{}", self.addr, self.state.config.base_path)
    }

    /// The token endpoint URL (`http://127.0.0.1:PORT/oauth/token`).
    pub fn token_url(&self) -> String {
        format!("http://{}/oauth/token", self.addr)
    }

    /// Creates a synthetic login for `account_id` whose refresh token this mock accepts.
    /// With `expired`, its access token is already past `exp`.
    pub fn synthetic_account(
        &self,
        account_id: &str,
        email: &str,
        expired: bool,
    ) -> SyntheticAccount {
        let now = unix_now();
        let exp = if expired { now - 60 } else { now + 3600 };
        let n = self.state.next_id.fetch_add(1, Ordering::Relaxed);
        let tokens = issue_tokens(account_id, email, exp, n);
        self.lock().refresh_grants.insert(
            tokens.refresh_token.expose().to_owned(),
            (account_id.to_owned(), email.to_owned()),
        );
        SyntheticAccount {
            account_id: account_id.to_owned(),
            email: email.to_owned(),
            tokens,
        }
    }

    /// What the mock answered so far.
    pub fn stats(&self) -> MockStats {
        self.lock().stats.clone()
    }

    /// The `/responses` and `/models` requests received so far (at most the first 10,000).
    pub fn recorded(&self) -> Vec<RecordedRequest> {
        self.lock().recorded.clone()
    }

    /// Every request received so far on any route, in arrival order (at most the first
    /// 10,000).
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.lock().seen.clone()
    }

    /// Stops accepting, lets running responses finish (up to 5 s) and returns.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.state)
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn lock(state: &State) -> MutexGuard<'_, Inner> {
    // A panic while holding this lock cannot leave the counters inconsistent in a way
    // that matters for a test double, so recover the guard.
    state
        .inner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn issue_tokens(account_id: &str, email: &str, exp: i64, n: u64) -> TokenData {
    let id_token = jwt::encode_unsigned_for_testing(&IdTokenClaims {
        email: Some(email.to_owned()),
        exp: Some(exp),
        iat: Some(exp - 3600),
        chatgpt_plan_type: Some(PlanType::Pro),
        chatgpt_account_id: Some(account_id.to_owned()),
        chatgpt_user_id: Some(format!("user-{account_id}")),
    });
    let access = jwt::encode_unsigned_json_for_testing(&serde_json::json!({
        "exp": exp,
        "iat": exp - 3600,
        "jti": format!("mock-access-{n}"),
        "https://api.openai.com/auth": { "chatgpt_account_id": account_id },
    }));
    let refresh = format!("rt-mock-{account_id}-{n}");
    TokenData {
        id_token: Secret::new(id_token),
        access_token: Secret::new(access),
        refresh_token: Secret::new(refresh),
        account_id: Some(account_id.to_owned()),
    }
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<BoxBody> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn full(body: impl Into<Bytes>) -> BoxBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<BoxBody> {
    {
        let mut inner = lock(&state);
        if inner.seen.len() < MAX_RECORDED {
            let header = |name: &str| {
                req.headers()
                    .get(name)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            };
            let seen = SeenRequest {
                method: req.method().to_string(),
                target: req
                    .uri()
                    .path_and_query()
                    .map_or_else(|| req.uri().to_string(), |pq| pq.as_str().to_owned()),
                host: header("host"),
                authorization: req.headers().contains_key(header::AUTHORIZATION),
                account_id: header("chatgpt-account-id"),
            };
            inner.seen.push(seen);
        }
    }
    let path = req.uri().path().to_owned();
    // Outside the base path nothing matches (an empty base path keeps every path).
    let route = path
        .strip_prefix(state.config.base_path.as_str())
        .unwrap_or_default()
        .to_owned();
    if path == "/oauth/token" && req.method() == Method::POST {
        return token(state, req).await;
    }
    match (req.method(), route.as_str()) {
        (&Method::POST, "/responses" | "/v1/responses") => responses(state, req).await,
        (&Method::GET, "/models" | "/v1/models") => models(state, req),
        (_, "/redirect") => redirect(&req),
        _ => json_response(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": {"message": "no such route on the mock upstream"}}),
        ),
    }
}

/// `/redirect?to=TARGET` (any method, under the base path): `307` to `TARGET`, to check that
/// a proxy hands redirects back to its client instead of following them with an account's
/// credentials.
fn redirect(req: &Request<Incoming>) -> Response<BoxBody> {
    let to = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("to=")))
        .map(percent_decode)
        .unwrap_or_else(|| "/".to_owned());
    let mut r = json_response(
        StatusCode::TEMPORARY_REDIRECT,
        &serde_json::json!({"redirect": true}),
    );
    if let Ok(v) = HeaderValue::from_str(&to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// `GET /models`: an empty model list, recorded like `/responses` requests (another endpoint
/// behind the same base URL, to prove a proxy forwards more than `/responses`).
fn models(state: Arc<State>, req: Request<Incoming>) -> Response<BoxBody> {
    let mut inner = lock(&state);
    if inner.recorded.len() < MAX_RECORDED {
        inner.recorded.push(RecordedRequest {
            path: req.uri().path().to_owned(),
            method: req.method().to_string(),
            query: req.uri().query().map(str::to_owned),
            account_id: req
                .headers()
                .get("chatgpt-account-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            header_names: req
                .headers()
                .keys()
                .map(|k| k.as_str().to_owned())
                .collect(),
            status: 200,
            body_len: 0,
        });
    }
    json_response(StatusCode::OK, &serde_json::json!({"models": []}))
}

#[derive(Deserialize)]
struct ResponsesBody {
    #[serde(default)]
    input: Option<serde_json::Value>,
    #[serde(default)]
    stream: Option<bool>,
}

async fn responses(state: Arc<State>, req: Request<Incoming>) -> Response<BoxBody> {
    let (parts, body) = req.into_parts();
    let account = parts
        .headers
        .get("chatgpt-account-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bearer = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let header_names: Vec<String> = parts
        .headers
        .keys()
        .map(|k| k.as_str().to_owned())
        .collect();
    let want_hop = parts.headers.contains_key("x-mock-send-hop-headers");
    let (body, body_len) = match read_counted(body).await {
        Ok(read) => read,
        Err(status) => {
            return json_response(
                status,
                &serde_json::json!({"error": {"message": "could not read the request body"}}),
            );
        }
    };
    if let Some(gate) = &state.config.stall {
        gate.notified().await;
    }
    let parsed: Option<ResponsesBody> = serde_json::from_slice(&body).ok();
    let echo = parsed
        .as_ref()
        .and_then(|b| b.input.as_ref())
        .and_then(|v| v.as_str())
        .map(|s| format!("echo: {s}"));
    let stream = parsed.as_ref().and_then(|b| b.stream).unwrap_or(true);
    let key = account.clone().unwrap_or_else(|| "-".to_owned());
    let behavior = state
        .config
        .accounts
        .get(&key)
        .cloned()
        .unwrap_or(Behavior::Ok);

    let mut response = {
        let mut inner = lock(&state);
        inner.stats.responses_requests += 1;
        let verdict = match &behavior {
            Behavior::Ok => None,
            Behavior::NeedsRefresh => {
                let known = bearer
                    .as_deref()
                    .is_some_and(|t| inner.issued_access.contains(t));
                (!known).then_some(StatusCode::UNAUTHORIZED)
            }
            Behavior::RateLimited { .. } | Behavior::ServerErrors { .. } => {
                let left = inner.remaining.entry(key.clone()).or_insert(0);
                if *left > 0 {
                    if *left != u32::MAX {
                        *left -= 1;
                    }
                    Some(match behavior {
                        Behavior::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
                        _ => StatusCode::INTERNAL_SERVER_ERROR,
                    })
                } else {
                    None
                }
            }
        };
        let counts = inner.stats.accounts.entry(key.clone()).or_default();
        let status = verdict.unwrap_or(StatusCode::OK);
        match verdict {
            None => counts.ok += 1,
            Some(StatusCode::TOO_MANY_REQUESTS) => counts.rate_limited += 1,
            Some(StatusCode::UNAUTHORIZED) => counts.unauthorized += 1,
            Some(_) => counts.server_errors += 1,
        }
        if inner.recorded.len() < MAX_RECORDED {
            inner.recorded.push(RecordedRequest {
                path: parts.uri.path().to_owned(),
                method: parts.method.to_string(),
                query: parts.uri.query().map(str::to_owned),
                account_id: account.clone(),
                header_names,
                status: status.as_u16(),
                body_len,
            });
        }
        match verdict {
            Some(StatusCode::TOO_MANY_REQUESTS) => {
                let wait = match behavior {
                    Behavior::RateLimited { retry_after, .. } => retry_after,
                    _ => Duration::ZERO,
                };
                let mut r = json_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    &serde_json::json!({"error": {"type": "usage_limit_reached", "message": "The usage limit has been reached"}}),
                );
                let secs = wait.as_millis().div_ceil(1000);
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                if let Ok(v) = HeaderValue::from_str(&wait.as_millis().to_string()) {
                    r.headers_mut().insert("retry-after-ms", v);
                }
                r
            }
            Some(StatusCode::UNAUTHORIZED) => json_response(
                StatusCode::UNAUTHORIZED,
                &serde_json::json!({"error": {"code": "token_expired", "message": "Provided authentication token is expired."}}),
            ),
            Some(status) => json_response(
                status,
                &serde_json::json!({"error": {"type": "server_error", "message": "The server had an error while processing your request."}}),
            ),
            None => {
                drop(inner);
                let n = state.next_id.fetch_add(1, Ordering::Relaxed);
                let text = echo.unwrap_or_else(|| state.config.reply.clone());
                if stream {
                    sse_response(&state.config, n, &text)
                } else {
                    json_response(
                        StatusCode::OK,
                        &serde_json::json!({
                            "id": format!("resp_{n}"),
                            "object": "response",
                            "status": "completed",
                            "output": [message_item(n, &text)],
                            "usage": usage(),
                        }),
                    )
                }
            }
        }
    };
    if want_hop {
        let h = response.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("x-mock-hop"));
        h.insert("x-mock-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::PROXY_AUTHENTICATE,
            HeaderValue::from_static("Basic"),
        );
    }
    response
}

/// Reads a request body, keeping its first [`KEPT_BODY`] bytes and counting all of them.
async fn read_counted(body: Incoming) -> Result<(Bytes, u64), StatusCode> {
    let mut body = std::pin::pin!(body);
    let mut kept = Vec::new();
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| StatusCode::BAD_REQUEST)?;
        if let Ok(data) = frame.into_data() {
            total = total.saturating_add(data.len() as u64);
            if total > MAX_BODY {
                return Err(StatusCode::PAYLOAD_TOO_LARGE);
            }
            let room = KEPT_BODY.saturating_sub(kept.len());
            kept.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    Ok((Bytes::from(kept), total))
}

fn usage() -> serde_json::Value {
    serde_json::json!({
        "input_tokens": 12,
        "input_tokens_details": null,
        "output_tokens": 8,
        "output_tokens_details": null,
        "total_tokens": 20
    })
}

fn message_item(n: u64, text: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "message",
        "role": "assistant",
        "id": format!("msg_{n}"),
        "content": [{"type": "output_text", "text": text}]
    })
}

/// The SSE events of one successful streamed response, in order.
pub fn sse_events(n: u64, text: &str, deltas: usize) -> Vec<Bytes> {
    let mut events = Vec::with_capacity(deltas + 3);
    let mut push = |value: serde_json::Value| {
        let kind = value["type"].as_str().unwrap_or("message").to_owned();
        events.push(Bytes::from(format!("event: {kind}\ndata: {value}\n\n")));
    };
    push(serde_json::json!({"type": "response.created", "response": {"id": format!("resp_{n}")}}));
    if deltas > 0 {
        let chars: Vec<char> = text.chars().collect();
        let per = chars.len().div_ceil(deltas).max(1);
        for piece in chars.chunks(per) {
            let delta: String = piece.iter().collect();
            push(serde_json::json!({
                "type": "response.output_text.delta",
                "item_id": format!("msg_{n}"),
                "output_index": 0,
                "content_index": 0,
                "delta": delta
            }));
        }
    }
    push(
        serde_json::json!({"type": "response.output_item.done", "output_index": 0, "item": message_item(n, text)}),
    );
    push(serde_json::json!({
        "type": "response.completed",
        "response": {"id": format!("resp_{n}"), "status": "completed", "output": [], "usage": usage()}
    }));
    events
}

fn sse_response(config: &MockConfig, n: u64, text: &str) -> Response<BoxBody> {
    let events = sse_events(n, text, config.deltas);
    let body = if config.event_delay.is_zero() && config.pause.is_none() && !config.break_streams {
        let mut all = Vec::new();
        for e in &events {
            all.extend_from_slice(e);
        }
        full(all)
    } else {
        let (mut tx, body) = http_body_util::channel::Channel::<Bytes, BoxError>::new(4);
        let delay = config.event_delay;
        let pause = config.pause.clone();
        let breaks = config.break_streams;
        tokio::spawn(async move {
            for (i, event) in events.into_iter().enumerate() {
                if i == 1
                    && let Some(gate) = &pause
                {
                    gate.notified().await;
                }
                if i == 1 && breaks {
                    tx.abort("the mock upstream broke the stream".into());
                    return;
                }
                if i > 0 && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if tx.send(Frame::data(event)).await.is_err() {
                    return;
                }
            }
        });
        body.boxed_unsync()
    };
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[derive(Deserialize)]
struct TokenRequest {
    grant_type: Option<String>,
    refresh_token: Option<String>,
}

async fn token(state: Arc<State>, req: Request<Incoming>) -> Response<BoxBody> {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"error": "invalid_request"}),
            );
        }
    };
    let parsed: Option<TokenRequest> = if is_form {
        let mut grant_type = None;
        let mut refresh_token = None;
        for pair in String::from_utf8_lossy(&body).split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v);
            match k {
                "grant_type" => grant_type = Some(v),
                "refresh_token" => refresh_token = Some(v),
                _ => {}
            }
        }
        Some(TokenRequest {
            grant_type,
            refresh_token,
        })
    } else {
        serde_json::from_slice(&body).ok()
    };
    let Some(TokenRequest {
        grant_type,
        refresh_token: Some(refresh),
    }) = parsed
    else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": "invalid_request"}),
        );
    };
    if grant_type.as_deref().is_some_and(|g| g != "refresh_token") {
        return json_response(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": "unsupported_grant_type"}),
        );
    }
    let mut inner = lock(&state);
    let Some((account_id, email)) = inner.refresh_grants.remove(&refresh) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": "invalid_grant", "error_description": "refresh token is invalid or was already used"}),
        );
    };
    let n = state.next_id.fetch_add(1, Ordering::Relaxed);
    let tokens = issue_tokens(&account_id, &email, unix_now() + 3600, n);
    inner
        .issued_access
        .insert(tokens.access_token.expose().to_owned());
    inner.refresh_grants.insert(
        tokens.refresh_token.expose().to_owned(),
        (account_id.clone(), email),
    );
    inner
        .stats
        .accounts
        .entry(account_id)
        .or_default()
        .refreshes += 1;
    drop(inner);
    json_response(
        StatusCode::OK,
        &serde_json::json!({
            "id_token": tokens.id_token.expose(),
            "access_token": tokens.access_token.expose(),
            "refresh_token": tokens.refresh_token.expose(),
            "token_type": "Bearer",
            "expires_in": 3600
        }),
    )
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Adds `accounts` to the pool at `store` (as logins, in order), the way an account
/// switcher's `import` would. Blocking file I/O.
pub fn seed_pool(
    store: &auth_storage::PoolStore,
    accounts: &[SyntheticAccount],
) -> Result<(), auth_storage::StorageError> {
    let now = u64::try_from(unix_now()).unwrap_or(0);
    store.update(|pool| {
        for account in accounts {
            pool.upsert(auth_storage::pool::Account::from_login(
                account.tokens.clone(),
                Some(auth_core::Timestamp::now()),
                now,
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_handles_escapes_plus_and_truncation() {
        assert_eq!(percent_decode("a%2Fb+c"), "a/b c");
        assert_eq!(percent_decode("x%2"), "x%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn sse_stream_has_the_events_codex_needs_in_order() {
        let events = sse_events(7, "hello world", 3);
        let text: Vec<String> = events
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        assert!(text[0].starts_with("event: response.created\n"));
        assert!(
            text.last()
                .is_some_and(|t| t.starts_with("event: response.completed\n"))
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("event: response.output_item.done\n"))
        );
        let joined: String = text
            .iter()
            .filter(|t| t.contains("output_text.delta"))
            .filter_map(|t| {
                let data = t.lines().find_map(|l| l.strip_prefix("data: "))?;
                let v: serde_json::Value = serde_json::from_str(data).ok()?;
                v["delta"].as_str().map(str::to_owned)
            })
            .collect();
        assert_eq!(joined, "hello world");
    }
}
