//! A loopback stand-in for the OAuth issuer, for tests of code that runs a login.
//!
//! [`MockIssuer`] listens on `127.0.0.1:<ephemeral>` and serves:
//!
//! * `GET /oauth/authorize`: redirects (302) to the request's `redirect_uri` with a
//!   code and the request's `state` — or with an error, or a wrong `state`, per
//!   [`AuthorizeReply`]. An HTTP client following redirects thus plays the browser.
//! * `POST /oauth/token`: records the form body and answers per [`TokenReply`];
//!   [`MockIssuer::hold_token_endpoint`] makes it wait until released.
//!
//! It is a test double, not an OAuth server: it checks nothing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};

use crate::jwt::{self, IdTokenClaims, PlanType};

/// The code [`AuthorizeReply::default`] hands out.
pub const MOCK_CODE: &str = "mock-authorization-code";
/// The account id in [`TokenReply::tokens_for`]'s id token.
pub const MOCK_ACCOUNT_ID: &str = "acct-mock-0001";

/// How `/oauth/authorize` sends the browser back.
///
/// `Debug` prints the code's length, not the code.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthorizeReply {
    /// `?code=<code>&state=<the request's state>`.
    Code(String),
    /// `?error=<error>&error_description=<description>&state=<the request's state>`.
    Error {
        /// The `error` value.
        error: String,
        /// The `error_description` value.
        description: String,
    },
    /// `?code=<code>&state=<this>` — a state that is not the request's.
    WrongState(String),
}

impl std::fmt::Debug for AuthorizeReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthorizeReply::Code(code) => write!(f, "Code(<{} bytes>)", code.len()),
            AuthorizeReply::Error { error, .. } => f
                .debug_struct("Error")
                .field("error", &crate::redact::redact_text(error))
                .finish_non_exhaustive(),
            AuthorizeReply::WrongState(state) => {
                write!(f, "WrongState(<{} bytes>)", state.len())
            }
        }
    }
}

impl std::fmt::Debug for TokenReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenReply::Tokens {
                id_token,
                access_token,
                refresh_token,
            } => write!(
                f,
                "Tokens {{ id_token: <{} bytes>, access_token: <{} bytes>, refresh_token: <{} bytes> }}",
                id_token.len(),
                access_token.len(),
                refresh_token.len()
            ),
            TokenReply::Raw {
                status,
                content_type,
                body,
            } => write!(
                f,
                "Raw {{ status: {status}, content_type: {content_type:?}, body: <{} bytes> }}",
                body.len()
            ),
        }
    }
}

impl Default for AuthorizeReply {
    fn default() -> Self {
        AuthorizeReply::Code(MOCK_CODE.to_owned())
    }
}

/// How `/oauth/token` answers.
///
/// `Debug` prints the tokens' and body's lengths, not their text.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenReply {
    /// 200 with `{"id_token", "access_token", "refresh_token"}`.
    Tokens {
        /// The id token (a JWT).
        id_token: String,
        /// The access token.
        access_token: String,
        /// The refresh token.
        refresh_token: String,
    },
    /// Any status with any body.
    Raw {
        /// HTTP status.
        status: u16,
        /// `Content-Type`.
        content_type: String,
        /// The body.
        body: String,
    },
}

impl TokenReply {
    /// Tokens for `email`: an unsigned id token (plan `plus`, account
    /// [`MOCK_ACCOUNT_ID`]), access token `mock-access-token`, refresh token
    /// `mock-refresh-token`.
    pub fn tokens_for(email: &str) -> Self {
        let id_token = jwt::encode_unsigned_for_testing(&IdTokenClaims {
            email: Some(email.to_owned()),
            exp: Some(4_000_000_000),
            chatgpt_plan_type: Some(PlanType::Plus),
            chatgpt_account_id: Some(MOCK_ACCOUNT_ID.to_owned()),
            ..IdTokenClaims::default()
        });
        TokenReply::Tokens {
            id_token,
            access_token: "mock-access-token".to_owned(),
            refresh_token: "mock-refresh-token".to_owned(),
        }
    }

    /// Any status, content type and body.
    pub fn raw(status: u16, content_type: &str, body: &str) -> Self {
        TokenReply::Raw {
            status,
            content_type: content_type.to_owned(),
            body: body.to_owned(),
        }
    }
}

struct MockState {
    authorize: Mutex<AuthorizeReply>,
    token: Mutex<TokenReply>,
    token_requests: Mutex<Vec<String>>,
    token_arrived: Notify,
    hold: AtomicBool,
    gate: Semaphore,
}

/// A running mock issuer. Dropping it stops the server.
pub struct MockIssuer {
    addr: SocketAddr,
    state: Arc<MockState>,
    _stop: watch::Sender<()>,
}

impl std::fmt::Debug for MockIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockIssuer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MockIssuer {
    /// Starts on `127.0.0.1:<ephemeral>` with [`AuthorizeReply::default`] and `token`.
    ///
    /// # Errors
    /// Binding the loopback port failed.
    pub async fn start(token: TokenReply) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(MockState {
            authorize: Mutex::new(AuthorizeReply::default()),
            token: Mutex::new(token),
            token_requests: Mutex::new(Vec::new()),
            token_arrived: Notify::new(),
            hold: AtomicBool::new(false),
            gate: Semaphore::new(0),
        });
        let (stop, mut stop_rx) = watch::channel(());
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop_rx.changed() => break,
                    accepted = listener.accept() => accepted,
                };
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(handle(&state, req).await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .keep_alive(false)
                        .serve_connection(TokioIo::new(stream), service);
                    let _ = tokio::time::timeout(Duration::from_secs(120), conn).await;
                });
            }
        });
        Ok(Self {
            addr,
            state,
            _stop: stop,
        })
    }

    /// The issuer base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes how `/oauth/authorize` answers.
    pub fn set_authorize_reply(&self, reply: AuthorizeReply) {
        *lock(&self.state.authorize) = reply;
    }

    /// Changes how `/oauth/token` answers.
    pub fn set_token_reply(&self, reply: TokenReply) {
        *lock(&self.state.token) = reply;
    }

    /// Makes `/oauth/token` wait before answering until [`release_token_endpoint`].
    ///
    /// [`release_token_endpoint`]: MockIssuer::release_token_endpoint
    pub fn hold_token_endpoint(&self) {
        self.state.hold.store(true, Ordering::SeqCst);
    }

    /// Lets held and future token requests answer.
    pub fn release_token_endpoint(&self) {
        self.state.hold.store(false, Ordering::SeqCst);
        self.state.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }

    /// Waits until a token request has arrived (returns at once if one already has).
    pub async fn token_request_arrived(&self) {
        if !lock(&self.state.token_requests).is_empty() {
            return;
        }
        self.state.token_arrived.notified().await;
    }

    /// The form bodies of the token requests so far.
    pub fn token_requests(&self) -> Vec<String> {
        lock(&self.state.token_requests).clone()
    }
}

fn reply(status: u16, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

async fn handle(state: &MockState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/oauth/authorize" => {
            let query = req.uri().query().unwrap_or_default();
            let param = |name: &str| {
                url::form_urlencoded::parse(query.as_bytes())
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            let (redirect_uri, request_state) = (param("redirect_uri"), param("state"));
            let mut back = url::form_urlencoded::Serializer::new(String::new());
            match lock(&state.authorize).clone() {
                AuthorizeReply::Code(code) => {
                    back.append_pair("code", &code)
                        .append_pair("state", &request_state);
                }
                AuthorizeReply::Error { error, description } => {
                    back.append_pair("error", &error)
                        .append_pair("error_description", &description)
                        .append_pair("state", &request_state);
                }
                AuthorizeReply::WrongState(wrong) => {
                    back.append_pair("code", MOCK_CODE)
                        .append_pair("state", &wrong);
                }
            }
            let mut response = reply(302, "text/plain", String::new());
            if let Ok(value) =
                hyper::header::HeaderValue::from_str(&format!("{redirect_uri}?{}", back.finish()))
            {
                response
                    .headers_mut()
                    .insert(hyper::header::LOCATION, value);
            }
            response
        }
        "/oauth/token" => {
            let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
                Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
                Err(_) => return reply(400, "text/plain", "unreadable body".to_owned()),
            };
            lock(&state.token_requests).push(body);
            state.token_arrived.notify_one();
            if state.hold.load(Ordering::SeqCst)
                && let Ok(permit) = state.gate.acquire().await
            {
                permit.forget();
            }
            match lock(&state.token).clone() {
                TokenReply::Tokens {
                    id_token,
                    access_token,
                    refresh_token,
                } => reply(
                    200,
                    "application/json",
                    serde_json::json!({
                        "id_token": id_token,
                        "access_token": access_token,
                        "refresh_token": refresh_token,
                    })
                    .to_string(),
                ),
                TokenReply::Raw {
                    status,
                    content_type,
                    body,
                } => reply(status, &content_type, body),
            }
        }
        _ => reply(404, "text/plain", "not found".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_prints_no_token_code_or_body() {
        let replies = [
            format!("{:?}", AuthorizeReply::Code("CODE-SECRET".into())),
            format!("{:?}", AuthorizeReply::WrongState("STATE-SECRET".into())),
            format!(
                "{:?}",
                TokenReply::Tokens {
                    id_token: "ID-SECRET".into(),
                    access_token: "ACCESS-SECRET".into(),
                    refresh_token: "REFRESH-SECRET".into(),
                }
            ),
            format!(
                "{:?}",
                TokenReply::Raw {
                    status: 500,
                    content_type: "text/html".into(),
                    body: "BODY-SECRET".into(),
                }
            ),
        ];
        for dbg in &replies {
            assert!(!dbg.contains("SECRET"), "{dbg}");
        }
        assert_eq!(replies[0], "Code(<11 bytes>)");
    }
}
