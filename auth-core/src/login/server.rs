//! The loopback callback server: accepts connections, answers each request with a page,
//! and hands exactly one outcome to the waiting session.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use crate::events::LoginEvent;
use crate::secret::Secret;

use super::diag::{Diagnostics, IgnoreReason, SessionEvent};
use super::exchange::Exchange;
use super::page::{self, Page};
use super::{LoginError, LoginSuccess};

/// The path the issuer redirects the browser to (as the Codex CLI).
pub const CALLBACK_PATH: &str = "/auth/callback";
/// The path that ends a running login (as the Codex CLI).
pub const CANCEL_PATH: &str = "/cancel";

pub(crate) type Outcome = Result<LoginSuccess, LoginError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No callback accepted yet.
    Waiting,
    /// The one callback was accepted; its token exchange is running.
    Exchanging,
    /// The outcome was delivered.
    Done,
}

struct Inner {
    phase: Phase,
    tx: Option<oneshot::Sender<Outcome>>,
}

/// Everything a request handler needs, shared by all connections of one session.
pub(crate) struct Shared {
    pub(crate) state: Secret,
    pub(crate) verifier: Secret,
    pub(crate) issuer: String,
    pub(crate) token_url: String,
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) client: reqwest::Client,
    pub(crate) diag: Diagnostics,
    inner: Mutex<Inner>,
}

fn outcome_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Ok(_) => "success",
        Err(LoginError::Cancelled) => "cancelled",
        Err(LoginError::TimedOut { .. }) => "timed_out",
        Err(LoginError::Issuer { .. }) => "issuer_error",
        Err(LoginError::MissingCode) => "missing_code",
        Err(LoginError::TokenEndpoint { .. }) => "token_endpoint_error",
        Err(LoginError::Transport { .. }) => "transport_error",
        Err(LoginError::InvalidTokenResponse { .. }) => "invalid_token_response",
        Err(_) => "server_error",
    }
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        state: Secret,
        verifier: Secret,
        issuer: String,
        token_url: String,
        client_id: String,
        redirect_uri: String,
        client: reqwest::Client,
        diag: Diagnostics,
    ) -> (Arc<Self>, oneshot::Receiver<Outcome>) {
        let (tx, rx) = oneshot::channel();
        let shared = Arc::new(Self {
            state,
            verifier,
            issuer,
            token_url,
            client_id,
            redirect_uri,
            client,
            diag,
            inner: Mutex::new(Inner {
                phase: Phase::Waiting,
                tx: Some(tx),
            }),
        });
        (shared, rx)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the one callback slot; false if a callback was already accepted or the
    /// session ended.
    fn claim(&self) -> bool {
        let mut inner = self.lock();
        if inner.phase == Phase::Waiting {
            inner.phase = Phase::Exchanging;
            true
        } else {
            false
        }
    }

    /// Delivers the outcome unless one was delivered already. Returns whether this call
    /// delivered it.
    pub(crate) fn finish(&self, outcome: Outcome) -> bool {
        self.finish_if(outcome, |_| true)
    }

    /// Delivers the outcome only while no callback has been accepted (for the timeout:
    /// a running token exchange has its own deadline).
    pub(crate) fn finish_if_waiting(&self, outcome: Outcome) -> bool {
        self.finish_if(outcome, |phase| phase == Phase::Waiting)
    }

    fn finish_if(&self, outcome: Outcome, allowed: impl Fn(Phase) -> bool) -> bool {
        let mut inner = self.lock();
        if inner.phase == Phase::Done || !allowed(inner.phase) {
            return false;
        }
        inner.phase = Phase::Done;
        self.diag.session(SessionEvent::Finished {
            outcome: outcome_name(&outcome),
        });
        if let Some(tx) = inner.tx.take() {
            // The receiver is gone only when the session was dropped; nothing to tell.
            let _ = tx.send(outcome);
        }
        true
    }

    async fn handle(&self, method: &str, path: &str, query: Option<&str>) -> Page {
        self.diag.session(SessionEvent::request(method, path));
        match path {
            CALLBACK_PATH => self.callback(path, query.unwrap_or_default()).await,
            CANCEL_PATH => page::cancelled(self.finish(Err(LoginError::Cancelled))),
            _ => page::not_found(),
        }
    }

    async fn callback(&self, path: &str, query: &str) -> Page {
        let mut params: HashMap<String, String> = HashMap::new();
        // Bounded by the request line hyper accepted; the first value of a key wins.
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            params
                .entry(key.into_owned())
                .or_insert_with(|| value.into_owned());
        }
        let non_empty = |key: &str| params.get(key).is_some_and(|v| !v.is_empty());
        let (has_code, has_state, has_error) =
            (non_empty("code"), non_empty("state"), non_empty("error"));
        let state_valid = params.get("state").is_some_and(|given| {
            bool::from(given.as_bytes().ct_eq(self.state.expose().as_bytes()))
        });
        self.diag.login(LoginEvent::callback_received(
            path,
            has_code,
            has_state,
            has_error,
            state_valid,
        ));
        if !state_valid {
            // Not this login's callback (a stale tab, or a forged request): answer it,
            // keep waiting for the real one.
            self.diag.session(SessionEvent::CallbackIgnored {
                reason: IgnoreReason::StateMismatch,
            });
            return page::state_mismatch();
        }
        if !self.claim() {
            self.diag.session(SessionEvent::CallbackIgnored {
                reason: IgnoreReason::AlreadyHandled,
            });
            return page::already_handled();
        }
        let outcome = if has_error {
            let raw = params.get("error").map(String::as_str).unwrap_or_default();
            let code = super::oauth_code(raw);
            self.diag.session(SessionEvent::IssuerError {
                error_code: code.clone(),
            });
            Err(LoginError::Issuer {
                code,
                description: super::issuer_description(
                    params.get("error_description").map(String::as_str),
                ),
            })
        } else if let Some(code) = params.get("code").filter(|c| !c.is_empty()) {
            let exchange = Exchange {
                client: &self.client,
                issuer: &self.issuer,
                token_url: &self.token_url,
                client_id: &self.client_id,
                redirect_uri: &self.redirect_uri,
                verifier: &self.verifier,
            };
            exchange.run(code, &self.diag).await
        } else {
            Err(LoginError::MissingCode)
        };
        let page = match &outcome {
            Ok(success) => page::success(success.masked_email().as_deref()),
            Err(err) => page::failure(&err.to_string()),
        };
        if self.finish(outcome) {
            page
        } else {
            page::ended_meanwhile()
        }
    }
}

fn respond(page: Page) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(page.html)));
    *response.status_mut() =
        hyper::StatusCode::from_u16(page.status).unwrap_or(hyper::StatusCode::OK);
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    headers.insert(
        hyper::header::REFERRER_POLICY,
        hyper::header::HeaderValue::from_static("no-referrer"),
    );
    response
}

/// Accepts connections until `stop` changes or its sender is dropped. Each connection is
/// one request (no keep-alive) and is bounded by `connection_limit`.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<()>,
    connection_limit: Duration,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(_) => {
                // Transient (e.g. out of file descriptors): back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let shared = Arc::clone(&shared);
                async move {
                    let method = request.method().as_str().to_owned();
                    let uri = request.uri().clone();
                    let page = shared.handle(&method, uri.path(), uri.query()).await;
                    Ok::<_, Infallible>(respond(page))
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            // A stalled client must not keep a task alive forever.
            let _ = tokio::time::timeout(connection_limit, connection).await;
        });
    }
}

/// Binds `addr`; a taken port becomes [`LoginError::PortInUse`] naming the holder when the
/// `preflight` feature is on.
pub(crate) async fn bind(
    addr: SocketAddr,
    cancel_previous: bool,
) -> Result<TcpListener, LoginError> {
    let mut cancel_sent = false;
    // Bounded: at most 1 + 20 attempts (about 2 s) after asking a previous login to stop.
    for attempt in 0..=20u32 {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => {
                if cancel_previous && !cancel_sent {
                    cancel_sent = true;
                    // Errors mean nobody answering /cancel holds the port; the retries
                    // below then fail and report the holder.
                    let _ = super::cancel_running_login(addr).await;
                }
                if !cancel_previous || attempt == 20 {
                    return Err(LoginError::PortInUse {
                        addr,
                        holders: holders(addr).await,
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(source) => return Err(LoginError::Bind { addr, source }),
        }
    }
    Err(LoginError::PortInUse {
        addr,
        holders: holders(addr).await,
    })
}

#[cfg(feature = "preflight")]
async fn holders(addr: SocketAddr) -> Option<Vec<String>> {
    let found = tokio::task::spawn_blocking(move || oauth_preflight::inspect(addr))
        .await
        .ok()?
        .ok()?;
    Some(
        found
            .holders
            .iter()
            .map(|holder| match &holder.process {
                Some(process) => {
                    let mut text = process.to_string();
                    if let Some(exe) = process.exe_display() {
                        text.push_str(&format!(" {exe}"));
                    }
                    text
                }
                None => match holder.socket_uid {
                    Some(uid) => format!("a process of user id {uid} that cannot be inspected"),
                    None => "a process that cannot be inspected".to_owned(),
                },
            })
            .collect(),
    )
}

#[cfg(not(feature = "preflight"))]
async fn holders(_addr: SocketAddr) -> Option<Vec<String>> {
    None
}
