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
//! Accounts can report usage ([`MockConfig::usage`], rules in the `usage` module): windows
//! that grow with every served request, sent as the backend's `x-codex-*` headers and/or a
//! `codex.rate_limits` event, and a `429` `usage_limit_reached` (with `Retry-After` until
//! the reset) once a window is full.
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
//! # The issuer: single-use refresh tokens
//!
//! `POST /oauth/token` (`grant_type=refresh_token`, JSON or form body) behaves like
//! OpenAI's issuer as far as cross-process refresh coordination can tell: every refresh
//! token is accepted **once**, and each success issues a new access token (lifetime
//! [`MockConfig::access_ttl`], default one hour), a new id token and a new refresh token.
//!
//! | refresh token presented | answer | counted in |
//! | --- | --- | --- |
//! | live (issued, never used) | `200` new tokens; the token is spent | `refresh_calls`, `refreshes` |
//! | live, account [`Behavior::TokenInvalidated`] | `refresh_token_invalidated` (not spent) | `refresh_calls`, `refresh_invalidated` |
//! | spent | `refresh_token_reused` | `refresh_calls`, `refresh_reused` |
//! | spent, account [`Behavior::TokenInvalidated`] | `refresh_token_invalidated` | `refresh_calls`, `refresh_invalidated` |
//! | unknown to this mock | `400 {"error":"invalid_grant",…}` | [`MockStats::refresh_unknown`] |
//! | missing / unreadable request | `400 {"error":"invalid_request"}` (or `unsupported_grant_type`) | [`MockStats::refresh_unknown`] |
//!
//! Every call counts once in [`MockStats::token_requests`]; the per-account counts are in
//! [`AccountCounts`], which also keeps the `iat`/`exp` of every access token issued
//! ([`AccountCounts::issued`]). `refresh_token_reused` and `refresh_token_invalidated` are
//! worded as [`MockConfig::refresh_rejection`] says (default: `400` with the flat OAuth layout
//! `{"error":"refresh_token_reused","error_description":"…"}`). The Codex CLI (codex-rs
//! `login/src/auth/manager.rs`, `extract_refresh_token_error_code`) reads the code from
//! `error` as a string, `error.code`, or a top-level `code`, so both layouts reach it.
//!
//! # The backend: expired and revoked access tokens
//!
//! With [`MockConfig::reject_expired_access`], a `/responses` request whose bearer token
//! carries an `exp` in the past answers `401` with code `token_expired`. Accounts can be
//! gone for everyone: [`Behavior::TokenInvalidated`] (`401`, code `token_invalidated`) and
//! [`Behavior::Deactivated`] (`402`, `{"detail":{"code":"deactivated_workspace"}}`).
//! [`MockUpstream::set_account`] changes an account's behaviour while the mock runs.
//!
//! # Crash tests
//!
//! [`MockConfig::stall_token_answers`] holds every successful refresh answer until a test
//! opens a gate — after the refresh token was spent and the new tokens issued and counted —
//! so a test can kill a client between "the issuer spent the token" and "the client saved
//! the new one". [`MockUpstream::wait_for_token_requests`] tells the test when to strike.
//!
//! Memory stays bounded: request logs keep their first 10,000 entries, token histories
//! their latest 10,000 per account, and the sets of issued, live and spent tokens their
//! latest 100,000 each (a token forgotten that way is answered as unknown).
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

use std::collections::{HashMap, VecDeque};
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

mod usage;

use usage::UsageState;
pub use usage::{MockUsage, MockWindow, UsageChannel, UsageNow, WindowNow};

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
    /// The login was revoked for everyone (signed out everywhere, password changed, revoked
    /// by an admin): every `/responses` request answers `401` with code `token_invalidated`,
    /// and every refresh token of the account, live or spent, answers
    /// `refresh_token_invalidated`.
    TokenInvalidated,
    /// The account's workspace is deactivated: every `/responses` request answers `402` with
    /// `{"detail":{"code":"deactivated_workspace"}}`. Refreshes still succeed — whether
    /// the real issuer refuses them is not known — so a client holds fresh tokens that the
    /// backend refuses.
    Deactivated,
}

/// How the token endpoint words its refusal of a spent (`refresh_token_reused`) or revoked
/// (`refresh_token_invalidated`) refresh token. An unknown token is always
/// `400 {"error":"invalid_grant",…}` (RFC 6749).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefreshRejection {
    /// `400` with the flat OAuth layout: `{"error":"<code>","error_description":"…"}`.
    #[default]
    Flat400,
    /// `401` with OpenAI's nested error layout:
    /// `{"error":{"message":"…","type":"invalid_request_error","param":null,"code":"<code>"}}`
    /// — what Codex CLI logs show the real issuer answering to a reused refresh token.
    /// Older Codex CLIs treat a refresh failure as permanent only when it is a `401`.
    Nested401,
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
    access_ttl: Duration,
    reject_expired_access: bool,
    token_stall: Option<Arc<tokio::sync::Notify>>,
    refresh_rejection: RefreshRejection,
    usage: HashMap<String, MockUsage>,
    turn_state: bool,
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
            access_ttl: Duration::from_secs(3600),
            reject_expired_access: false,
            token_stall: None,
            refresh_rejection: RefreshRejection::default(),
            usage: HashMap::new(),
            turn_state: false,
        }
    }
}

impl MockConfig {
    /// Every `/responses` answer carries `x-codex-turn-state: ts-<account id>`, as the Codex
    /// backend hands out for routing the next requests of a turn.
    pub fn turn_state(mut self) -> Self {
        self.turn_state = true;
        self
    }

    /// Sets the behaviour for requests carrying `ChatGPT-Account-Id: account_id` (others: [`Behavior::Ok`]).
    pub fn account(mut self, account_id: impl Into<String>, behavior: Behavior) -> Self {
        self.accounts.insert(account_id.into(), behavior);
        self
    }

    /// Makes the account carrying `ChatGPT-Account-Id: account_id` report `usage` (its
    /// windows start when the mock starts; rules in the module docs).
    pub fn usage(mut self, account_id: impl Into<String>, usage: MockUsage) -> Self {
        self.usage.insert(account_id.into(), usage);
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

    /// The lifetime of the access and id tokens the mock issues, through `POST /oauth/token`
    /// (`exp` claim and `expires_in`) and [`MockUpstream::synthetic_account`] (default: one
    /// hour). JWT times are whole seconds, so the lifetime is rounded up to one; a token then
    /// expires within `ttl` of its issue, up to a second early (`exp = floor(now) + ttl`).
    /// Short lifetimes (a few seconds) let a test see many expiries.
    ///
    /// ```
    /// use std::time::Duration;
    /// use examples::mock_upstream::MockConfig;
    /// let config = MockConfig::default().access_ttl(Duration::from_secs(3)).reject_expired_access(true);
    /// # let _ = config;
    /// ```
    pub fn access_ttl(mut self, ttl: Duration) -> Self {
        self.access_ttl = ttl;
        self
    }

    /// When `on`, a `/responses` request whose bearer token is a JWT with an integer `exp`
    /// at or before now (whole seconds) answers `401` with code `token_expired`, for every
    /// account. Tokens that are not JWTs or carry no integer `exp` are not judged by this
    /// rule. The signature is not checked: the mock's own tokens are unsigned.
    pub fn reject_expired_access(mut self, on: bool) -> Self {
        self.reject_expired_access = on;
        self
    }

    /// Holds each successful refresh answer until `gate` is notified. By then the refresh
    /// token presented is already spent, the new tokens issued and the call counted — exactly
    /// as if the answer had been delivered — so a test can kill the client before it saves
    /// the new tokens. Refusals are not held.
    ///
    /// Each held answer waits for one permit, in arrival order: `gate.notify_one()` releases
    /// the oldest (or, with none waiting, the next to arrive); `gate.notify_waiters()`
    /// releases all that wait now. A held answer is counted in
    /// [`MockUpstream::wait_for_token_requests`] only once it waits, so either call made
    /// after that wait reaches it. A client that gives up meanwhile never gets the tokens
    /// and the refresh token stays spent; its answer may still be waiting (a closed
    /// connection is not always noticed) and take a `notify_one` permit, so release with
    /// `notify_waiters` when clients were killed.
    pub fn stall_token_answers(mut self, gate: Arc<tokio::sync::Notify>) -> Self {
        self.token_stall = Some(gate);
        self
    }

    /// How spent and revoked refresh tokens are refused (default [`RefreshRejection::Flat400`]).
    pub fn refresh_rejection(mut self, style: RefreshRejection) -> Self {
        self.refresh_rejection = style;
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
///
/// `/responses` answers are keyed by the request's `ChatGPT-Account-Id`; token-endpoint
/// answers by the account the presented refresh token was issued for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AccountCounts {
    /// Requests answered normally.
    pub ok: u64,
    /// Requests answered with 429.
    pub rate_limited: u64,
    /// Requests answered with 5xx.
    pub server_errors: u64,
    /// Requests answered with 401 (expired, unknown or invalidated access tokens).
    pub unauthorized: u64,
    /// Of [`unauthorized`](Self::unauthorized): requests refused because their access
    /// token's `exp` had passed ([`MockConfig::reject_expired_access`]).
    pub expired_access: u64,
    /// Requests answered 402 `deactivated_workspace` ([`Behavior::Deactivated`]).
    pub deactivated: u64,
    /// Token-endpoint calls presenting one of this account's refresh tokens (live or
    /// spent), whatever the answer.
    pub refresh_calls: u64,
    /// Successful refreshes through `/oauth/token`.
    pub refreshes: u64,
    /// Refresh calls answered `refresh_token_reused` (the token had been spent before).
    pub refresh_reused: u64,
    /// Refresh calls answered `refresh_token_invalidated` ([`Behavior::TokenInvalidated`]).
    pub refresh_invalidated: u64,
    /// The access tokens issued for this account, oldest first (the latest 10,000): by
    /// [`MockUpstream::synthetic_account`] and by every successful refresh.
    pub issued: Vec<IssuedToken>,
}

/// One access token the mock issued (its claims, never the token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct IssuedToken {
    /// `iat` claim (Unix seconds).
    pub iat: i64,
    /// `exp` claim (Unix seconds).
    pub exp: i64,
    /// How it was issued.
    pub via: IssuedVia,
}

/// How an [`IssuedToken`] came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IssuedVia {
    /// [`MockUpstream::synthetic_account`] (a login, not a token-endpoint call).
    SyntheticAccount,
    /// A successful refresh through `POST /oauth/token`.
    Refresh,
}

/// A snapshot of what the mock saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MockStats {
    /// Counts per `ChatGPT-Account-Id` (`-` for requests without one).
    pub accounts: HashMap<String, AccountCounts>,
    /// Total `/responses` requests.
    pub responses_requests: u64,
    /// Total `POST /oauth/token` calls, whatever the answer.
    pub token_requests: u64,
    /// Total successful refreshes (the sum of [`AccountCounts::refreshes`]).
    pub refreshes: u64,
    /// Total `refresh_token_reused` answers.
    pub refresh_reused: u64,
    /// Total `refresh_token_invalidated` answers.
    pub refresh_invalidated: u64,
    /// Token-endpoint calls refused without naming an account: an unknown refresh token
    /// (`invalid_grant`) or a malformed request.
    pub refresh_unknown: u64,
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
/// Of each account's issued access tokens, the latest this many are kept in the stats.
const MAX_ISSUED_HISTORY: usize = 10_000;
/// Issued access tokens, live refresh tokens and spent refresh tokens: the latest this many
/// of each are remembered (a test issuing more sees the oldest answered as unknown).
const MAX_TOKENS_KEPT: usize = 100_000;
/// Bodies longer than this are refused (`413`), as a real backend would.
const MAX_BODY: u64 = 80 * 1024 * 1024;
/// Of each body, the bytes kept in memory for parsing.
const KEPT_BODY: usize = 4 * 1024 * 1024;

struct State {
    config: MockConfig,
    inner: Mutex<Inner>,
    next_id: AtomicU64,
    /// Token-endpoint calls answered (or, when stalled, decided) so far; a watch so tests
    /// can wait for a count without polling.
    token_calls: tokio::sync::watch::Sender<u64>,
}

struct Inner {
    behaviors: HashMap<String, Behavior>,
    remaining: HashMap<String, u32>,
    issued_access: Recent<()>,
    /// Refresh tokens issued and not yet used.
    live_refresh: Recent<Grant>,
    /// Refresh tokens already used, with the account they belonged to.
    spent_refresh: Recent<String>,
    stats: MockStats,
    recorded: Vec<RecordedRequest>,
    seen: Vec<SeenRequest>,
    usage: HashMap<String, UsageState>,
}

impl Inner {
    fn new(config: &MockConfig) -> Self {
        let mut inner = Self {
            behaviors: HashMap::new(),
            remaining: HashMap::new(),
            issued_access: Recent::new(MAX_TOKENS_KEPT),
            live_refresh: Recent::new(MAX_TOKENS_KEPT),
            spent_refresh: Recent::new(MAX_TOKENS_KEPT),
            stats: MockStats::default(),
            recorded: Vec::new(),
            seen: Vec::new(),
            usage: HashMap::new(),
        };
        for (id, behavior) in &config.accounts {
            inner.set_behavior(id, behavior.clone());
        }
        let now = unix_now();
        for (id, usage) in &config.usage {
            inner
                .usage
                .insert(id.clone(), UsageState::start(usage, now));
        }
        inner
    }

    fn set_behavior(&mut self, account_id: &str, behavior: Behavior) {
        let times = match behavior {
            Behavior::RateLimited { times, .. } | Behavior::ServerErrors { times } => times,
            _ => 0,
        };
        self.remaining.insert(account_id.to_owned(), times);
        self.behaviors.insert(account_id.to_owned(), behavior);
    }

    fn behavior(&self, account_id: &str) -> Behavior {
        self.behaviors
            .get(account_id)
            .cloned()
            .unwrap_or(Behavior::Ok)
    }

    fn record_issued(&mut self, account_id: &str, token: IssuedToken) {
        let issued = &mut self
            .stats
            .accounts
            .entry(account_id.to_owned())
            .or_default()
            .issued;
        if issued.len() >= MAX_ISSUED_HISTORY {
            issued.remove(0);
        }
        issued.push(token);
    }
}

/// Whom a refresh token was issued to.
#[derive(Clone)]
struct Grant {
    account_id: String,
    email: String,
}

/// A map from token to `V` that forgets its oldest entries beyond `cap` (insertion order),
/// so a long test cannot grow it without bound. Keys are never inserted twice (every token
/// carries a fresh serial number).
struct Recent<V> {
    map: HashMap<String, V>,
    order: VecDeque<String>,
    cap: usize,
}

impl<V> Recent<V> {
    fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    fn insert(&mut self, key: String, value: V) {
        if self.map.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
        }
        // Mostly removed keys (spent refresh tokens): drop them rather than evict a live
        // entry. At most once per `cap / 2` inserts, so O(1) amortized.
        if self.order.len() > self.cap && self.order.len() >= 2 * self.map.len() {
            let map = &self.map;
            self.order.retain(|k| map.contains_key(k));
        }
        while self.order.len() > self.cap {
            if let Some(oldest) = self.order.pop_front() {
                self.map.remove(&oldest);
            }
        }
    }

    fn get(&self, key: &str) -> Option<&V> {
        self.map.get(key)
    }

    fn contains(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// Removes `key`; its place in `order` is dropped on eviction or compaction.
    fn remove(&mut self, key: &str) -> Option<V> {
        self.map.remove(key)
    }
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
        let inner = Inner::new(&config);
        let state = Arc::new(State {
            config,
            inner: Mutex::new(inner),
            next_id: AtomicU64::new(1),
            token_calls: tokio::sync::watch::Sender::new(0),
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

    /// Creates a synthetic login for `account_id` whose refresh token this mock accepts
    /// (once). Its access token lives [`MockConfig::access_ttl`]; with `expired`, it is
    /// already a minute past `exp`.
    pub fn synthetic_account(
        &self,
        account_id: &str,
        email: &str,
        expired: bool,
    ) -> SyntheticAccount {
        let now = unix_now();
        let ttl = ttl_secs(self.state.config.access_ttl);
        let (iat, exp) = if expired {
            let exp = now.saturating_sub(60);
            (exp.saturating_sub(ttl), exp)
        } else {
            (now, now.saturating_add(ttl))
        };
        let n = self.state.next_id.fetch_add(1, Ordering::Relaxed);
        let tokens = issue_tokens(account_id, email, iat, exp, n);
        let mut inner = self.lock();
        inner.live_refresh.insert(
            tokens.refresh_token.expose().to_owned(),
            Grant {
                account_id: account_id.to_owned(),
                email: email.to_owned(),
            },
        );
        inner.record_issued(
            account_id,
            IssuedToken {
                iat,
                exp,
                via: IssuedVia::SyntheticAccount,
            },
        );
        drop(inner);
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

    /// Changes how the mock treats `account_id` from now on (e.g. revoke a login while
    /// clients are using it). Requests already being answered keep the old behaviour; the
    /// `times` of a [`Behavior::RateLimited`] or [`Behavior::ServerErrors`] start afresh.
    pub fn set_account(&self, account_id: &str, behavior: Behavior) {
        self.lock().set_behavior(account_id, behavior);
    }

    /// Makes `account_id` report `usage` from now on (its windows start now).
    pub fn set_usage(&self, account_id: &str, usage: &MockUsage) {
        self.lock()
            .usage
            .insert(account_id.to_owned(), UsageState::start(usage, unix_now()));
    }

    /// The usage the mock reports for `account_id` now (as of its last answer), if it
    /// reports any.
    pub fn usage(&self, account_id: &str) -> Option<UsageNow> {
        self.lock().usage.get(account_id).map(UsageState::now)
    }

    /// Waits until at least `n` token-endpoint calls have been decided (counted in
    /// [`MockStats::token_requests`]; a refresh counts once its token is spent, before a
    /// [`MockConfig::stall_token_answers`] gate), or until `timeout` passes. Returns whether
    /// the count was reached.
    pub async fn wait_for_token_requests(&self, n: u64, timeout: Duration) -> bool {
        let mut calls = self.state.token_calls.subscribe();
        matches!(
            tokio::time::timeout(timeout, calls.wait_for(|seen| *seen >= n)).await,
            Ok(Ok(_))
        )
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

/// A lifetime in whole JWT seconds, rounded up.
fn ttl_secs(ttl: Duration) -> i64 {
    let secs = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0));
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// The `exp` claim of a bearer token, if it is a JWT whose payload has an integer `exp`.
/// Anything else (not a JWT, bad base64, not JSON, no or odd `exp`) is `None`.
fn access_expiry(token: &str) -> Option<i64> {
    // A `Value`, not a struct: serde would read a payload `[1]` as a struct's fields.
    let claims: serde_json::Value = jwt::decode_payload(token).ok()?;
    claims.as_object()?.get("exp")?.as_i64()
}

fn issue_tokens(account_id: &str, email: &str, iat: i64, exp: i64, n: u64) -> TokenData {
    let id_token = jwt::encode_unsigned_for_testing(&IdTokenClaims {
        email: Some(email.to_owned()),
        exp: Some(exp),
        iat: Some(iat),
        chatgpt_plan_type: Some(PlanType::Pro),
        chatgpt_account_id: Some(account_id.to_owned()),
        chatgpt_user_id: Some(format!("user-{account_id}")),
    });
    let access = jwt::encode_unsigned_json_for_testing(&serde_json::json!({
        "exp": exp,
        "iat": iat,
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

/// What a `/responses` request is answered with.
#[derive(Clone, Copy)]
enum Verdict {
    Answer,
    RateLimited(Duration),
    ServerError,
    /// `401 token_expired`: past `exp`, or (with [`Behavior::NeedsRefresh`]) not issued here.
    Expired,
    Invalidated,
    Deactivated,
}

impl Verdict {
    fn status(self) -> StatusCode {
        match self {
            Self::Answer => StatusCode::OK,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Expired | Self::Invalidated => StatusCode::UNAUTHORIZED,
            Self::Deactivated => StatusCode::PAYMENT_REQUIRED,
        }
    }
}

// The backend's refusals, in OpenAI's error layout. codex-rs does not read these bodies (it
// refreshes on any 401 and shows other statuses with their body); the wording and codes are
// those seen in public reports of the real backend's answers.

fn token_expired_body() -> serde_json::Value {
    serde_json::json!({"error": {
        "message": "Provided authentication token is expired. Please try signing in again.",
        "type": "invalid_request_error",
        "param": null,
        "code": "token_expired"
    }})
}

fn token_invalidated_body() -> serde_json::Value {
    serde_json::json!({"error": {
        "message": "Your authentication token has been invalidated. Please try signing in again.",
        "type": "invalid_request_error",
        "param": null,
        "code": "token_invalidated"
    }, "status": 401})
}

fn deactivated_body() -> serde_json::Value {
    serde_json::json!({"detail": {"code": "deactivated_workspace"}})
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
    // Read once, outside the lock: decoding is bounded by auth-core's token size limit.
    let expired = state.config.reject_expired_access
        && bearer
            .as_deref()
            .and_then(access_expiry)
            .is_some_and(|exp| exp <= unix_now());

    // What the account's usage is after this request, reported with its answer.
    let reported: Option<UsageState>;
    let mut response = {
        let mut inner = lock(&state);
        inner.stats.responses_requests += 1;
        let behavior = inner.behavior(&key);
        // Authentication comes first, as on the real backend: a revoked or expired token is
        // refused before anything about the account (deactivation, limits) is told.
        let mut verdict = match &behavior {
            Behavior::TokenInvalidated => Verdict::Invalidated,
            _ if expired => Verdict::Expired,
            Behavior::Ok => Verdict::Answer,
            Behavior::Deactivated => Verdict::Deactivated,
            Behavior::NeedsRefresh => {
                let known = bearer
                    .as_deref()
                    .is_some_and(|t| inner.issued_access.contains(t));
                if known {
                    Verdict::Answer
                } else {
                    Verdict::Expired
                }
            }
            Behavior::RateLimited { .. } | Behavior::ServerErrors { .. } => {
                let left = inner.remaining.entry(key.clone()).or_insert(0);
                if *left > 0 {
                    if *left != u32::MAX {
                        *left -= 1;
                    }
                    match behavior {
                        Behavior::RateLimited { retry_after, .. } => {
                            Verdict::RateLimited(retry_after)
                        }
                        _ => Verdict::ServerError,
                    }
                } else {
                    Verdict::Answer
                }
            }
        };
        // Usage limits come after everything else: a request the account would serve is
        // refused once a window is full.
        if let (Verdict::Answer, Some(usage)) = (verdict, inner.usage.get_mut(&key))
            && let Some(wait) = usage.admit(unix_now())
        {
            verdict = Verdict::RateLimited(wait);
        }
        reported = inner.usage.get(&key).cloned();
        let counts = inner.stats.accounts.entry(key.clone()).or_default();
        match verdict {
            Verdict::Answer => counts.ok += 1,
            Verdict::RateLimited(_) => counts.rate_limited += 1,
            Verdict::ServerError => counts.server_errors += 1,
            Verdict::Invalidated => counts.unauthorized += 1,
            Verdict::Expired => {
                counts.unauthorized += 1;
                if expired {
                    counts.expired_access += 1;
                }
            }
            Verdict::Deactivated => counts.deactivated += 1,
        }
        if inner.recorded.len() < MAX_RECORDED {
            inner.recorded.push(RecordedRequest {
                path: parts.uri.path().to_owned(),
                method: parts.method.to_string(),
                query: parts.uri.query().map(str::to_owned),
                account_id: account.clone(),
                header_names,
                status: verdict.status().as_u16(),
                body_len,
            });
        }
        match verdict {
            Verdict::RateLimited(wait) => {
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
            Verdict::Expired => json_response(StatusCode::UNAUTHORIZED, &token_expired_body()),
            Verdict::Invalidated => {
                json_response(StatusCode::UNAUTHORIZED, &token_invalidated_body())
            }
            Verdict::Deactivated => {
                json_response(StatusCode::PAYMENT_REQUIRED, &deactivated_body())
            }
            Verdict::ServerError => json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &serde_json::json!({"error": {"type": "server_error", "message": "The server had an error while processing your request."}}),
            ),
            Verdict::Answer => {
                drop(inner);
                let n = state.next_id.fetch_add(1, Ordering::Relaxed);
                let text = echo.unwrap_or_else(|| state.config.reply.clone());
                if stream {
                    let event = reported.as_ref().and_then(UsageState::event);
                    sse_response(&state.config, n, &text, event)
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
    if let Some(reported) = &reported {
        reported.write_headers(response.headers_mut());
    }
    if state.config.turn_state
        && let Some(account) = &account
        && let Ok(v) = HeaderValue::from_str(&format!("ts-{account}"))
    {
        response.headers_mut().insert("x-codex-turn-state", v);
    }
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

/// The streamed answer; `usage_event` (a whole `codex.rate_limits` event) goes right after
/// `response.created`.
fn sse_response(
    config: &MockConfig,
    n: u64,
    text: &str,
    usage_event: Option<Bytes>,
) -> Response<BoxBody> {
    let mut events = sse_events(n, text, config.deltas);
    if let Some(event) = usage_event {
        events.insert(1, event);
    }
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

/// Why a token request could not even be looked at.
enum Malformed {
    Unreadable,
    NoRefreshToken,
    WrongGrant,
}

async fn read_token_request(req: Request<Incoming>) -> Result<String, Malformed> {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => return Err(Malformed::Unreadable),
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
        return Err(Malformed::NoRefreshToken);
    };
    if grant_type.as_deref().is_some_and(|g| g != "refresh_token") {
        return Err(Malformed::WrongGrant);
    }
    Ok(refresh)
}

/// `POST /oauth/token`: single-use refresh tokens (the rules are in the module docs).
async fn token(state: Arc<State>, req: Request<Incoming>) -> Response<BoxBody> {
    let request = read_token_request(req).await;
    let (response, issued) = {
        let mut inner = lock(&state);
        inner.stats.token_requests += 1;
        match request {
            Ok(refresh) => redeem(&state, &mut inner, refresh),
            Err(malformed) => {
                inner.stats.refresh_unknown += 1;
                let code = match malformed {
                    Malformed::Unreadable | Malformed::NoRefreshToken => "invalid_request",
                    Malformed::WrongGrant => "unsupported_grant_type",
                };
                let body = serde_json::json!({ "error": code });
                (json_response(StatusCode::BAD_REQUEST, &body), false)
            }
        }
    };
    // Join the gate's queue before the call is counted: a test that opens the gate as soon
    // as it sees the count must not find nobody waiting.
    let held = state.config.token_stall.as_ref().filter(|_| issued);
    let mut held = std::pin::pin!(held.map(|gate| gate.notified()));
    if let Some(waiter) = held.as_mut().as_pin_mut() {
        waiter.enable();
    }
    state.token_calls.send_modify(|calls| *calls += 1);
    if let Some(waiter) = held.as_pin_mut() {
        waiter.await;
    }
    response
}

/// Decides a refresh under the lock: spends a live token and issues new ones, or refuses.
/// Returns the answer and whether it carries new tokens.
fn redeem(state: &State, inner: &mut Inner, refresh: String) -> (Response<BoxBody>, bool) {
    let style = state.config.refresh_rejection;
    if let Some(grant) = inner.live_refresh.get(&refresh).cloned() {
        let revoked = inner.behavior(&grant.account_id) == Behavior::TokenInvalidated;
        let counts = inner
            .stats
            .accounts
            .entry(grant.account_id.clone())
            .or_default();
        counts.refresh_calls += 1;
        if revoked {
            counts.refresh_invalidated += 1;
            inner.stats.refresh_invalidated += 1;
            return (refresh_refusal(style, RefreshRefusal::Invalidated), false);
        }
        counts.refreshes += 1;
        inner.stats.refreshes += 1;
        inner.live_refresh.remove(&refresh);
        inner
            .spent_refresh
            .insert(refresh, grant.account_id.clone());

        let n = state.next_id.fetch_add(1, Ordering::Relaxed);
        let ttl = ttl_secs(state.config.access_ttl);
        let iat = unix_now();
        let exp = iat.saturating_add(ttl);
        let tokens = issue_tokens(&grant.account_id, &grant.email, iat, exp, n);
        inner
            .issued_access
            .insert(tokens.access_token.expose().to_owned(), ());
        inner
            .live_refresh
            .insert(tokens.refresh_token.expose().to_owned(), grant.clone());
        inner.record_issued(
            &grant.account_id,
            IssuedToken {
                iat,
                exp,
                via: IssuedVia::Refresh,
            },
        );
        let body = serde_json::json!({
            "id_token": tokens.id_token.expose(),
            "access_token": tokens.access_token.expose(),
            "refresh_token": tokens.refresh_token.expose(),
            "token_type": "Bearer",
            "expires_in": ttl
        });
        return (json_response(StatusCode::OK, &body), true);
    }
    if let Some(account_id) = inner.spent_refresh.get(&refresh).cloned() {
        let revoked = inner.behavior(&account_id) == Behavior::TokenInvalidated;
        let counts = inner.stats.accounts.entry(account_id).or_default();
        counts.refresh_calls += 1;
        let refusal = if revoked {
            counts.refresh_invalidated += 1;
            inner.stats.refresh_invalidated += 1;
            RefreshRefusal::Invalidated
        } else {
            counts.refresh_reused += 1;
            inner.stats.refresh_reused += 1;
            RefreshRefusal::Reused
        };
        return (refresh_refusal(style, refusal), false);
    }
    inner.stats.refresh_unknown += 1;
    let body = serde_json::json!({
        "error": "invalid_grant",
        "error_description": "The refresh token is invalid or unknown."
    });
    (json_response(StatusCode::BAD_REQUEST, &body), false)
}

#[derive(Clone, Copy)]
enum RefreshRefusal {
    Reused,
    Invalidated,
}

/// The issuer's refusal of a spent or revoked refresh token, in the configured layout. The
/// `refresh_token_reused` message is the one the real issuer sends (seen in Codex CLI logs).
fn refresh_refusal(style: RefreshRejection, refusal: RefreshRefusal) -> Response<BoxBody> {
    let (code, message) = match refusal {
        RefreshRefusal::Reused => (
            "refresh_token_reused",
            "Your refresh token has already been used to generate a new access token. Please try signing in again.",
        ),
        RefreshRefusal::Invalidated => (
            "refresh_token_invalidated",
            "Your refresh token has been invalidated. Please try signing in again.",
        ),
    };
    match style {
        RefreshRejection::Nested401 => json_response(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({"error": {
                "message": message,
                "type": "invalid_request_error",
                "param": null,
                "code": code
            }}),
        ),
        RefreshRejection::Flat400 => json_response(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": code, "error_description": message}),
        ),
    }
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
    fn recent_forgets_the_oldest_beyond_its_cap() {
        let mut recent = Recent::new(2);
        recent.insert("a".to_owned(), 1);
        recent.insert("b".to_owned(), 2);
        recent.insert("c".to_owned(), 3);
        assert!(!recent.contains("a"));
        assert_eq!((recent.get("b"), recent.get("c")), (Some(&2), Some(&3)));
        assert_eq!(recent.remove("b"), Some(2));
        recent.insert("d".to_owned(), 4);
        assert_eq!(recent.order.len(), 2);
        assert!(recent.contains("c") && recent.contains("d"));

        // A live entry outlasts many inserted-then-removed ones (spent refresh tokens).
        let mut live = Recent::new(4);
        live.insert("idle".to_owned(), ());
        for i in 0..1000 {
            let key = format!("rt-{i}");
            live.insert(key.clone(), ());
            live.remove(&key);
        }
        assert!(live.contains("idle"));
        assert!(live.order.len() <= 4);
    }

    #[test]
    fn lifetimes_round_up_to_whole_seconds() {
        assert_eq!(ttl_secs(Duration::ZERO), 0);
        assert_eq!(ttl_secs(Duration::from_millis(1)), 1);
        assert_eq!(ttl_secs(Duration::from_secs(3)), 3);
        assert_eq!(ttl_secs(Duration::from_millis(3001)), 4);
        assert_eq!(ttl_secs(Duration::MAX), i64::MAX);
    }

    #[test]
    fn expiry_is_read_from_unsigned_test_tokens_only_when_it_is_an_integer() {
        let token = |v: serde_json::Value| jwt::encode_unsigned_json_for_testing(&v);
        assert_eq!(
            access_expiry(&token(serde_json::json!({"exp": 42}))),
            Some(42)
        );
        assert_eq!(
            access_expiry(&token(serde_json::json!({"exp": "42"}))),
            None
        );
        assert_eq!(access_expiry(&token(serde_json::json!({"exp": 1.5}))), None);
        assert_eq!(access_expiry(&token(serde_json::json!({}))), None);
        assert_eq!(access_expiry(&token(serde_json::json!([1]))), None);
        for garbage in ["", ".", "..", "a.b.c", "a.%%%.c", "not a jwt", "a.e30"] {
            assert_eq!(access_expiry(garbage), None, "{garbage}");
        }
    }

    proptest::proptest! {
        #[test]
        fn reading_an_expiry_never_panics(text in ".{0,300}", middle in "[A-Za-z0-9_=-]{0,200}", exp: i64) {
            let _ = access_expiry(&text);
            let _ = access_expiry(&format!("eyJhbGciOiJub25lIn0.{middle}.c2ln"));
            let token = jwt::encode_unsigned_json_for_testing(&serde_json::json!({"exp": exp}));
            proptest::prop_assert_eq!(access_expiry(&token), Some(exp));
        }
    }

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
