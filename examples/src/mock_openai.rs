//! A loopback stand-in for the OpenAI API's `POST /v1/responses`, for tests of the proxy's
//! overflow source.
//!
//! It answers every `POST …/responses` with the same server-sent-event stream as
//! [`MockUpstream`](crate::mock_upstream::MockUpstream) (so the Codex CLI would accept it)
//! and anything else with `404`, and records each request ([`OpenAiRequest`]): the bearer
//! token as a [`Secret`] (so a test can check which key came, and nothing prints it) and
//! whether a `ChatGPT-Account-Id` came along (it must not).
//!
//! ```
//! use examples::mock_openai::MockOpenAi;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let openai = MockOpenAi::start().await?;
//! let answer = reqwest::Client::builder().no_proxy().build()?
//!     .post(format!("{}/responses", openai.base_url()))
//!     .bearer_auth("sk-test")
//!     .body("{}")
//!     .send()
//!     .await?;
//! assert_eq!(answer.status(), 200);
//! assert!(answer.text().await?.contains("response.completed"));
//! let seen = openai.requests();
//! assert_eq!(seen[0].path, "/v1/responses");
//! assert_eq!(seen[0].bearer.as_ref().map(|k| k.expose()), Some("sk-test"));
//! openai.shutdown().await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use auth_core::Secret;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::mock_upstream::sse_events;
use crate::proxy::{BoxBody, serve_http1};

/// Most requests recorded (later ones are answered, not recorded).
const MAX_RECORDED: usize = 10_000;

/// Most request body bytes read (the rest is counted and dropped).
const MAX_KEPT: usize = 1024 * 1024;

/// One request the mock received.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct OpenAiRequest {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// The bearer token of `Authorization` (redacted in `Debug`).
    pub bearer: Option<Secret>,
    /// Whether a `ChatGPT-Account-Id` header came.
    pub chatgpt_account_id: bool,
    /// The `model` of a JSON body, if any.
    pub model: Option<String>,
}

#[derive(Default)]
struct Inner {
    requests: Vec<OpenAiRequest>,
}

/// A running mock of the OpenAI API; stops on [`MockOpenAi::shutdown`] or drop.
pub struct MockOpenAi {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MockOpenAi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockOpenAi")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MockOpenAi {
    /// Binds `127.0.0.1:0` and serves until shut down.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Mutex::new(Inner::default()));
        let (stop, stopped) = oneshot::channel::<()>();
        let handler = inner.clone();
        let task = tokio::spawn(serve_http1(
            listener,
            move |req| handle(handler.clone(), req),
            async move {
                let _ = stopped.await;
            },
            Duration::from_secs(5),
        ));
        Ok(Self {
            addr,
            inner,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT/v1`, as the overflow source's base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every request received so far (the first 10,000), in arrival order.
    pub fn requests(&self) -> Vec<OpenAiRequest> {
        lock(&self.inner).requests.clone()
    }

    /// Stops accepting, lets running answers finish (up to 5 s) and returns.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockOpenAi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(serde::Deserialize)]
struct Model {
    model: Option<String>,
}

async fn handle(inner: Arc<Mutex<Inner>>, req: Request<Incoming>) -> Response<BoxBody> {
    let (parts, body) = req.into_parts();
    let bearer = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| Secret::new(t.to_owned()));
    let body = http_body_util::Limited::new(body, MAX_KEPT)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let model = serde_json::from_slice::<Model>(&body)
        .ok()
        .and_then(|m| m.model);
    let n = {
        let mut inner = lock(&inner);
        if inner.requests.len() < MAX_RECORDED {
            inner.requests.push(OpenAiRequest {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
                bearer,
                chatgpt_account_id: parts.headers.contains_key("chatgpt-account-id"),
                model,
            });
        }
        inner.requests.len() as u64
    };
    if parts.method != Method::POST || !parts.uri.path().ends_with("/responses") {
        let mut response = Response::new(full(Bytes::from_static(b"{}")));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    }
    let events: Bytes = sse_events(n, "answered by the overflow source", 0)
        .into_iter()
        .flatten()
        .collect::<Vec<u8>>()
        .into();
    let mut response = Response::new(full(events));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
}

fn full(body: Bytes) -> BoxBody {
    http_body_util::Full::new(body)
        .map_err(|never| match never {})
        .boxed_unsync()
}
