//! Token refresh against the OAuth token endpoint, single-flight (feature `refresh`).
//!
//! * [`TokenEndpoint`] performs one refresh-token exchange: `POST` JSON
//!   `{"client_id", "grant_type": "refresh_token", "refresh_token"}` to the token URL
//!   (default [`crate::codex::TOKEN_URL`], client id [`crate::codex::CLIENT_ID`], as the
//!   Codex CLI does) and classifies failures with [`crate::oauth_error`].
//! * [`Refresher`] adds **single-flight**: however many tasks ask to refresh the same
//!   refresh token at once, exactly one HTTP request is made and one result is persisted
//!   through your [`RefreshStore`]; every caller gets that result. A later caller still
//!   holding the old refresh token gets the same result instead of re-using a spent
//!   token (which the server would answer with `refresh_token_reused`).
//!
//! Single-flight works inside one process. Across processes, wrap the refresh in a file
//! lock and re-read the stored tokens first (the `auth-storage` crate does this).
//!
//! Nothing here logs a token or a response body; transport errors are passed through
//! [`crate::redact::redact_text`].
//!
//! ```no_run
//! use std::sync::{Arc, Mutex};
//! use auth_core::refresh::{RefreshConfig, RefreshStore, RefreshedTokens, Refresher, PersistError};
//! use auth_core::TokenData;
//!
//! /// Keeps the latest tokens in memory (a real store writes auth.json atomically).
//! struct Memory(Mutex<Option<TokenData>>);
//! impl RefreshStore for Memory {
//!     fn persist(&self, previous: &TokenData, refreshed: &RefreshedTokens)
//!         -> Result<TokenData, PersistError> {
//!         let next = refreshed.apply_to(previous);
//!         *self.0.lock().map_err(|_| "poisoned")? = Some(next.clone());
//!         Ok(next)
//!     }
//! }
//!
//! # async fn demo(current: TokenData) -> Result<(), Box<dyn std::error::Error>> {
//! let refresher = Refresher::new(RefreshConfig::default(), Arc::new(Memory(Mutex::new(None))))?;
//! let fresh = refresher.refresh(&current).await?;
//! println!("new access token fingerprint {:#}", fresh.access_token);
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;

use crate::auth_json::{AuthDocument, Timestamp, TokenData};
use crate::events::LoginEvent;
use crate::jwt;
use crate::oauth_error::OAuthError;
use crate::redact::{redact_text, redact_url};
use crate::secret::Secret;

/// Largest token-endpoint response body read (success or error).
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// Where and how to refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RefreshConfig {
    /// The token endpoint URL. Default: [`crate::codex::TOKEN_URL`].
    pub token_url: String,
    /// The OAuth client id. Default: [`crate::codex::CLIENT_ID`].
    pub client_id: String,
    /// Whole-request timeout. Default: 30 s.
    pub timeout: Duration,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        Self {
            token_url: crate::codex::TOKEN_URL.to_owned(),
            client_id: crate::codex::CLIENT_ID.to_owned(),
            timeout: Duration::from_secs(30),
        }
    }
}

impl RefreshConfig {
    /// The default configuration with another token URL (e.g. a loopback test server).
    pub fn with_token_url(mut self, url: impl Into<String>) -> Self {
        self.token_url = url.into();
        self
    }

    /// The configuration with another client id.
    pub fn with_client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = client_id.into();
        self
    }

    /// The configuration with another timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// The error a [`RefreshStore`] returns; its `Display` must not contain secrets.
pub type PersistError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a refresh failed. `Display` is a sentence without secrets or response bodies.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RefreshError {
    /// The server rejected the refresh token for good (HTTP 401, or an error code that
    /// means the token is expired, reused, revoked or an invalid grant). Sign in again.
    #[error(
        "token refresh was rejected (HTTP {status}): {error}{}",
        if error.requires_new_login() { "" } else { "; sign in again" }
    )]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The classified error.
        error: OAuthError,
    },
    /// The endpoint answered with another error status; trying again later may work.
    #[error(
        "the token endpoint answered HTTP {status} ({}); try again later",
        match error.code() { Some(code) => format!("error code `{code}`"), None => "no error code".to_owned() }
    )]
    Endpoint {
        /// HTTP status.
        status: u16,
        /// The classified error.
        error: OAuthError,
    },
    /// The endpoint could not be reached (DNS, connect, TLS, timeout).
    #[error(
        "could not reach the token endpoint: {}",
        crate::terminal::escape_control(message)
    )]
    Transport {
        /// The transport error chain, redacted.
        message: String,
        /// Whether it was a timeout.
        timeout: bool,
    },
    /// The endpoint answered 2xx but the body is not a usable token response.
    #[error(
        "the token endpoint's success response is unusable: {}",
        crate::terminal::escape_control(detail)
    )]
    InvalidResponse {
        /// What is wrong (no values).
        detail: String,
    },
    /// The new tokens were obtained but could not be saved. The old refresh token is
    /// probably spent now, so `tokens` carries the new ones: save them another way.
    #[error(
        "refreshed tokens could not be saved: {}",
        crate::terminal::escape_control(message)
    )]
    Persist {
        /// The store's error message.
        message: String,
        /// The new tokens (redacted in `Debug`).
        tokens: Box<TokenData>,
    },
    /// The configuration is unusable (bad URL, HTTP client could not be built).
    #[error(
        "invalid refresh configuration: {}",
        crate::terminal::escape_control(detail)
    )]
    Config {
        /// What is wrong.
        detail: String,
    },
    /// The refresh task ended without a result (the runtime is shutting down, or the
    /// store panicked).
    #[error("the refresh task ended without a result (runtime shutting down or store panicked)")]
    Aborted,
}

impl RefreshError {
    /// Whether retrying with the same refresh token cannot succeed (the user must sign
    /// in again, unless another process already stored newer tokens).
    pub fn is_permanent(&self) -> bool {
        matches!(self, RefreshError::Rejected { .. })
    }

    /// The classified token-endpoint error, for `Rejected` and `Endpoint`.
    pub fn oauth_error(&self) -> Option<&OAuthError> {
        match self {
            RefreshError::Rejected { error, .. } | RefreshError::Endpoint { error, .. } => {
                Some(error)
            }
            _ => None,
        }
    }
}

/// The tokens a successful refresh returned. Each is optional, as in the Codex CLI: a
/// missing one keeps the previous value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RefreshedTokens {
    /// New id token (already checked to be a parseable JWT).
    pub id_token: Option<Secret>,
    /// New access token.
    pub access_token: Option<Secret>,
    /// New refresh token (the old one is spent when this is present).
    pub refresh_token: Option<Secret>,
}

impl RefreshedTokens {
    /// `previous` with the returned tokens swapped in (account id kept).
    pub fn apply_to(&self, previous: &TokenData) -> TokenData {
        let mut next = previous.clone();
        if let Some(t) = &self.id_token {
            next.id_token = t.clone();
        }
        if let Some(t) = &self.access_token {
            next.access_token = t.clone();
        }
        if let Some(t) = &self.refresh_token {
            next.refresh_token = t.clone();
        }
        next
    }

    /// Applies the tokens to a stored document and sets `last_refresh` to `now`, the
    /// way the Codex CLI updates `auth.json` after a refresh. Returns the new tokens, or
    /// `None` (document unchanged) if it holds no tokens.
    pub fn apply_to_document(&self, doc: &mut AuthDocument, now: Timestamp) -> Option<TokenData> {
        let next = self.apply_to(doc.tokens.as_ref()?);
        doc.tokens = Some(next.clone());
        doc.last_refresh = Some(now);
        Some(next)
    }
}

/// Where a [`Refresher`] saves refreshed tokens. `auth-storage` implements it with an
/// atomic, locked read-modify-write of `auth.json`.
///
/// `persist` is called once per refresh, on a blocking thread
/// (`tokio::task::spawn_blocking`), so it may do file I/O and take locks.
pub trait RefreshStore: Send + Sync + 'static {
    /// Saves `refreshed` on top of `previous` (the tokens the refresh started from) and
    /// returns the tokens as saved. Typically: load the document, call
    /// [`RefreshedTokens::apply_to_document`], save atomically.
    fn persist(
        &self,
        previous: &TokenData,
        refreshed: &RefreshedTokens,
    ) -> Result<TokenData, PersistError>;
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    id_token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
}

/// One refresh-token exchange with the token endpoint (no single-flight, no storage).
#[derive(Clone)]
pub struct TokenEndpoint {
    client: reqwest::Client,
    config: RefreshConfig,
}

impl fmt::Debug for TokenEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenEndpoint")
            .field("token_url", &redact_url(&self.config.token_url))
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    let mut depth = 0;
    while let Some(inner) = source {
        if depth >= 8 {
            break;
        }
        let text = inner.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = inner.source();
        depth += 1;
    }
    redact_text(&message)
}

async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, RefreshError> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(RefreshError::InvalidResponse {
                        detail: format!("body larger than {MAX_RESPONSE_BYTES} bytes"),
                    });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(err) => {
                return Err(RefreshError::Transport {
                    message: error_chain(&err),
                    timeout: err.is_timeout(),
                });
            }
        }
    }
}

impl TokenEndpoint {
    /// An endpoint client for `config` (rustls TLS, no proxy auto-detection beyond
    /// reqwest's defaults).
    pub fn new(config: RefreshConfig) -> Result<Self, RefreshError> {
        let parsed = url::Url::parse(&config.token_url).map_err(|_| RefreshError::Config {
            detail: format!(
                "token URL {} is not a valid absolute URL",
                redact_url(&config.token_url)
            ),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(RefreshError::Config {
                detail: "token URL must use http or https".to_owned(),
            });
        }
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|err| RefreshError::Config {
                detail: error_chain(&err),
            })?;
        Ok(Self { client, config })
    }

    /// The configuration in use.
    pub fn config(&self) -> &RefreshConfig {
        &self.config
    }

    /// Exchanges `refresh_token` for new tokens. Emits [`LoginEvent`]s through
    /// `tracing` (no tokens, no bodies).
    pub async fn exchange(&self, refresh_token: &Secret) -> Result<RefreshedTokens, RefreshError> {
        LoginEvent::RefreshStarted {
            token_url: redact_url(&self.config.token_url),
        }
        .emit();
        let body = serde_json::json!({
            "client_id": self.config.client_id,
            "grant_type": "refresh_token",
            "refresh_token": refresh_token.expose(),
        })
        .to_string();
        let response = self
            .client
            .post(&self.config.token_url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|err| {
                let message = error_chain(&err);
                LoginEvent::TransportError {
                    message: message.clone(),
                }
                .emit();
                RefreshError::Transport {
                    message,
                    timeout: err.is_timeout(),
                }
            })?;
        let status = response.status();
        let bytes = read_bounded(response).await?;
        if !status.is_success() {
            let error = OAuthError::from_body(&bytes);
            LoginEvent::TokenEndpointError {
                status: status.as_u16(),
                error_code: error.code().map(str::to_owned),
            }
            .emit();
            return Err(
                if status == reqwest::StatusCode::UNAUTHORIZED || error.requires_new_login() {
                    RefreshError::Rejected {
                        status: status.as_u16(),
                        error,
                    }
                } else {
                    RefreshError::Endpoint {
                        status: status.as_u16(),
                        error,
                    }
                },
            );
        }
        let wire: WireResponse =
            serde_json::from_slice(&bytes).map_err(|err| RefreshError::InvalidResponse {
                detail: format!(
                    "not the expected JSON object ({} at line {}, column {})",
                    jwt::JsonProblem::of(&err),
                    err.line(),
                    err.column()
                ),
            })?;
        if let Some(id_token) = &wire.id_token {
            jwt::parse_id_token(id_token).map_err(|err| RefreshError::InvalidResponse {
                detail: format!("the new id_token is not a usable JWT ({err})"),
            })?;
        }
        LoginEvent::RefreshSucceeded {
            status: status.as_u16(),
        }
        .emit();
        Ok(RefreshedTokens {
            id_token: wire.id_token.map(Secret::new),
            access_token: wire.access_token.map(Secret::new),
            refresh_token: wire.refresh_token.map(Secret::new),
        })
    }
}

type Outcome = Result<TokenData, RefreshError>;

#[derive(Default)]
struct FlightState {
    /// The refresh token being exchanged right now, and where its result will appear.
    in_flight: Option<(Secret, watch::Receiver<Option<Outcome>>)>,
    /// The last finished exchange that must not be repeated: its input refresh token and
    /// the outcome (success, or a permanent rejection).
    last: Option<(Secret, Outcome)>,
}

struct Inner {
    endpoint: TokenEndpoint,
    store: Arc<dyn RefreshStore>,
    state: Mutex<FlightState>,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, FlightState> {
        // A panic while holding this lock cannot leave FlightState inconsistent (every
        // update is a single assignment), so a poisoned lock is safe to use.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn run(&self, current: &TokenData) -> Outcome {
        let refreshed = self.endpoint.exchange(&current.refresh_token).await?;
        let store = Arc::clone(&self.store);
        let previous = current.clone();
        let to_save = refreshed.clone();
        let saved = tokio::task::spawn_blocking(move || store.persist(&previous, &to_save)).await;
        match saved {
            Ok(Ok(tokens)) => Ok(tokens),
            Ok(Err(err)) => Err(RefreshError::Persist {
                message: redact_text(&err.to_string()),
                tokens: Box::new(refreshed.apply_to(current)),
            }),
            Err(_) => Err(RefreshError::Persist {
                message: "the store panicked".to_owned(),
                tokens: Box::new(refreshed.apply_to(current)),
            }),
        }
    }
}

/// Single-flight token refresher: N concurrent callers with the same refresh token →
/// one HTTP request, one [`RefreshStore::persist`], one shared result.
///
/// Cheap to clone (an `Arc` inside); share one per account.
#[derive(Clone)]
pub struct Refresher {
    inner: Arc<Inner>,
}

impl fmt::Debug for Refresher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refresher")
            .field("endpoint", &self.inner.endpoint)
            .finish_non_exhaustive()
    }
}

impl Refresher {
    /// A refresher for `config` saving through `store`.
    pub fn new(config: RefreshConfig, store: Arc<dyn RefreshStore>) -> Result<Self, RefreshError> {
        Ok(Self::with_endpoint(TokenEndpoint::new(config)?, store))
    }

    /// A refresher using an existing [`TokenEndpoint`].
    pub fn with_endpoint(endpoint: TokenEndpoint, store: Arc<dyn RefreshStore>) -> Self {
        Self {
            inner: Arc::new(Inner {
                endpoint,
                store,
                state: Mutex::new(FlightState::default()),
            }),
        }
    }

    /// Refreshes `current` and returns the tokens as saved.
    ///
    /// * If a refresh of the same refresh token is in flight, waits for it instead of
    ///   sending another request.
    /// * If the last finished refresh started from the same refresh token and succeeded
    ///   (or was permanently rejected), returns that result without a request.
    /// * Transient failures are shared with the callers that waited on them, but not
    ///   remembered: the next call tries again.
    ///
    /// The exchange runs on a spawned task, so cancelling one caller does not cancel the
    /// refresh the others wait for. Must be called inside a Tokio runtime.
    pub async fn refresh(&self, current: &TokenData) -> Outcome {
        let mut rx = {
            let mut state = self.inner.state();
            if let Some((key, outcome)) = &state.last
                && *key == current.refresh_token
            {
                LoginEvent::RefreshCoalesced.emit();
                return outcome.clone();
            }
            match &state.in_flight {
                // A dropped sender means that flight died; start a new one below.
                Some((key, rx)) if *key == current.refresh_token && rx.has_changed().is_ok() => {
                    LoginEvent::RefreshCoalesced.emit();
                    rx.clone()
                }
                _ => {
                    let (tx, rx) = watch::channel(None);
                    state.in_flight = Some((current.refresh_token.clone(), rx.clone()));
                    let inner = Arc::clone(&self.inner);
                    let current = current.clone();
                    tokio::spawn(async move {
                        let outcome = inner.run(&current).await;
                        {
                            let mut state = inner.state();
                            if state
                                .in_flight
                                .as_ref()
                                .is_some_and(|(key, _)| *key == current.refresh_token)
                            {
                                state.in_flight = None;
                            }
                            let remember = match &outcome {
                                Ok(_) => true,
                                Err(err) => err.is_permanent(),
                            };
                            if remember {
                                state.last = Some((current.refresh_token.clone(), outcome.clone()));
                            }
                        }
                        // Receivers may all be gone (callers cancelled); nothing to do then.
                        let _ = tx.send(Some(outcome));
                    });
                    rx
                }
            }
        };
        match rx.wait_for(Option::is_some).await {
            Ok(value) => match value.as_ref() {
                Some(outcome) => outcome.clone(),
                None => Err(RefreshError::Aborted),
            },
            Err(_) => Err(RefreshError::Aborted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_from_the_transport_or_store_is_escaped() {
        let errors = [
            RefreshError::Transport {
                message: "reset\r\nrefresh ok\x1b[2J".into(),
                timeout: false,
            },
            RefreshError::InvalidResponse {
                detail: "\u{85}x".into(),
            },
            RefreshError::Config {
                detail: "\x07".into(),
            },
        ];
        for err in errors {
            let shown = err.to_string();
            assert!(
                !shown.chars().any(crate::terminal::is_unsafe_char),
                "{shown:?}"
            );
        }
    }
}
