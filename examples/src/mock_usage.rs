//! A loopback stand-in for the ChatGPT backend's usage endpoint,
//! `GET /backend-api/wham/usage`, for tests of the proxy's usage probe.
//!
//! Each account (told apart by `ChatGPT-Account-Id`) gets a [`UsageAnswer`]: usage in the
//! JSON shape the backend sends (the Codex CLI reads it in codex-rs
//! `backend-client/src/client.rs`; field names from `codex-backend-openapi-models`:
//! `plan_type`, `rate_limit.{allowed, limit_reached, primary_window, secondary_window}` with
//! `used_percent`, `limit_window_seconds`, `reset_after_seconds`, `reset_at`), a bare status,
//! a body of garbage, or no answer for a long while. Every request is recorded
//! ([`UsageQuery`]), its bearer token kept as a [`Secret`] so a test can check which token
//! came, and nothing prints it.
//!
//! ```
//! use std::time::Duration;
//! use examples::mock_usage::{MockUsageEndpoint, UsageAnswer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let usage = MockUsageEndpoint::start().await?;
//! usage.set("ws-1", UsageAnswer::used(99, 40));
//! let body = reqwest::Client::builder().no_proxy().build()?
//!     .get(usage.url())
//!     .bearer_auth("token")
//!     .header("chatgpt-account-id", "ws-1")
//!     .send()
//!     .await?
//!     .text()
//!     .await?;
//! assert!(body.contains(r#""used_percent":99"#));
//! assert_eq!(usage.queries()[0].account_id.as_deref(), Some("ws-1"));
//! assert_eq!(usage.queries()[0].bearer.as_ref().map(|b| b.expose()), Some("token"));
//! usage.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use auth_core::Secret;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::proxy::{BoxBody, serve_http1};

/// The path the mock serves usage on.
pub const USAGE_PATH: &str = "/backend-api/wham/usage";

/// How long [`UsageAnswer::Stall`] holds its answer back.
const STALL: Duration = Duration::from_secs(30);

/// Most queries recorded (later ones are answered, not recorded).
const MAX_RECORDED: usize = 10_000;

/// How the mock answers one account's usage queries.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UsageAnswer {
    /// `200` with usage: the primary (5-hour) and secondary (weekly) windows used this many
    /// percent, resetting in an hour and in a day.
    Used {
        /// Primary window, percent (the backend sends whole numbers).
        primary: u32,
        /// Secondary window, percent.
        secondary: u32,
    },
    /// This status with an empty JSON object.
    Status(u16),
    /// `200` with these bytes as the body.
    Body(Vec<u8>),
    /// No answer for 30 seconds, then `200` with low usage.
    Stall,
}

impl UsageAnswer {
    /// [`UsageAnswer::Used`].
    pub fn used(primary: u32, secondary: u32) -> Self {
        Self::Used { primary, secondary }
    }
}

/// One request the mock received.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct UsageQuery {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// The `ChatGPT-Account-Id` header.
    pub account_id: Option<String>,
    /// The bearer token of `Authorization` (redacted in `Debug`).
    pub bearer: Option<Secret>,
    /// When it arrived, since the mock started.
    pub at: Duration,
}

struct State {
    started: tokio::time::Instant,
    inner: Mutex<Inner>,
    arrived: tokio::sync::watch::Sender<usize>,
}

#[derive(Default)]
struct Inner {
    answers: HashMap<String, UsageAnswer>,
    queries: Vec<UsageQuery>,
}

/// A running mock usage endpoint; stops on [`MockUsageEndpoint::shutdown`] or drop.
pub struct MockUsageEndpoint {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MockUsageEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockUsageEndpoint")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MockUsageEndpoint {
    /// Binds `127.0.0.1:0` and serves until shut down. Accounts without an answer set get
    /// `UsageAnswer::used(10, 5)`.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            started: tokio::time::Instant::now(),
            inner: Mutex::new(Inner::default()),
            arrived: tokio::sync::watch::Sender::new(0),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let handler = state.clone();
        let task = tokio::spawn(serve_http1(
            listener,
            move |req| handle(handler.clone(), req),
            async move {
                let _ = stopped.await;
            },
            Duration::from_millis(100),
        ));
        Ok(Self {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The usage endpoint: `http://127.0.0.1:PORT/backend-api/wham/usage`.
    pub fn url(&self) -> String {
        format!("http://{}{USAGE_PATH}", self.addr)
    }

    /// How `account_id`'s queries are answered from now on.
    pub fn set(&self, account_id: &str, answer: UsageAnswer) {
        self.lock().answers.insert(account_id.to_owned(), answer);
    }

    /// Every request received so far (the first 10,000), in arrival order.
    pub fn queries(&self) -> Vec<UsageQuery> {
        self.lock().queries.clone()
    }

    /// Waits until at least `n` requests have arrived, or `timeout` passes; returns whether
    /// they did.
    pub async fn wait_for_queries(&self, n: usize, timeout: Duration) -> bool {
        let mut arrived = self.state.arrived.subscribe();
        matches!(
            tokio::time::timeout(timeout, arrived.wait_for(|seen| *seen >= n)).await,
            Ok(Ok(_))
        )
    }

    /// Stops serving (a stalled answer is cut) and returns.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.state)
    }
}

impl Drop for MockUsageEndpoint {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn lock(state: &State) -> MutexGuard<'_, Inner> {
    state.inner.lock().unwrap_or_else(|p| p.into_inner())
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<BoxBody> {
    let account_id = req
        .headers()
        .get("chatgpt-account-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| Secret::new(t.to_owned()));
    let answer = {
        let mut inner = lock(&state);
        if inner.queries.len() < MAX_RECORDED {
            inner.queries.push(UsageQuery {
                method: req.method().to_string(),
                path: req.uri().path().to_owned(),
                account_id: account_id.clone(),
                bearer,
                at: state.started.elapsed(),
            });
        }
        let answer = account_id
            .as_deref()
            .and_then(|id| inner.answers.get(id).cloned())
            .unwrap_or(UsageAnswer::used(10, 5));
        drop(inner);
        state.arrived.send_modify(|n| *n += 1);
        answer
    };
    if req.method() != Method::GET || req.uri().path() != USAGE_PATH {
        return reply(StatusCode::NOT_FOUND, b"{}".to_vec());
    }
    match answer {
        UsageAnswer::Used { primary, secondary } => {
            reply(StatusCode::OK, usage_json(primary, secondary).into_bytes())
        }
        UsageAnswer::Status(code) => reply(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            b"{}".to_vec(),
        ),
        UsageAnswer::Body(bytes) => reply(StatusCode::OK, bytes),
        UsageAnswer::Stall => {
            tokio::time::sleep(STALL).await;
            reply(StatusCode::OK, usage_json(1, 1).into_bytes())
        }
    }
}

/// The backend's usage document with the two windows of the `codex` limit.
fn usage_json(primary: u32, secondary: u32) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let window = |used: u32, length: u64, reset_after: u64| {
        serde_json::json!({
            "used_percent": used,
            "limit_window_seconds": length,
            "reset_after_seconds": reset_after,
            "reset_at": now + reset_after,
        })
    };
    serde_json::json!({
        "plan_type": "pro",
        "rate_limit": {
            "allowed": primary < 100 && secondary < 100,
            "limit_reached": primary >= 100 || secondary >= 100,
            "primary_window": window(primary, 5 * 3600, 3600),
            "secondary_window": window(secondary, 7 * 24 * 3600, 24 * 3600),
        },
        "credits": {"has_credits": false, "unlimited": false, "balance": null},
    })
    .to_string()
}

fn full(body: Vec<u8>) -> BoxBody {
    http_body_util::Full::new(bytes::Bytes::from(body))
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn reply(status: StatusCode, body: Vec<u8>) -> Response<BoxBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
