//! The browser OAuth sign-in `codex login` runs, as a library piece (feature `login`).
//!
//! A [`LoginSession`] generates PKCE codes and `state` ([`crate::pkce`]), builds the
//! authorize URL, and serves the OAuth callback on a loopback address (default
//! `127.0.0.1:1455`, redirect URI `http://localhost:1455/auth/callback`, as the Codex
//! CLI). When the browser comes back it checks `state` in constant time, reports an
//! issuer `error`, exchanges the code at `{issuer}/oauth/token` and hands you the tokens
//! as [`TokenData`] plus their id-token claims. Store them with `auth-storage`.
//!
//! * The browser gets an HTML page saying what happened (success, issuer error, state
//!   mismatch, token-endpoint status and error code). Everything inserted is escaped.
//! * Only the first callback with the right `state` counts; later ones get an "already
//!   handled" page. A callback with a wrong `state` is answered and ignored, so a stale
//!   tab or a forged request cannot end your login.
//! * `GET /cancel` ends a running session ([`LoginError::Cancelled`]) so a second login
//!   can stop a first one politely ([`cancel_running_login`],
//!   [`LoginOptions::cancel_previous`]); so does a [`CancelHandle`].
//! * [`LoginSession::wait`] gives up after [`LoginOptions::timeout`] without a callback.
//! * Every step is a typed, secret-free event through `tracing`, and optionally a line in
//!   `login.log` (see [`diag`] for target names and fields).
//! * A taken port is [`LoginError::PortInUse`]; with the `preflight` feature it names the
//!   process holding it (via `oauth-preflight`).
//!
//! The example runs the whole flow against [`mock_issuer::MockIssuer`], with an HTTP
//! client standing in for the browser:
//!
//! ```
//! use auth_core::login::{LoginOptions, LoginSession};
//! use auth_core::login::mock_issuer::{MockIssuer, TokenReply};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! let issuer = MockIssuer::start(TokenReply::tokens_for("user@example.com")).await?;
//! let options = LoginOptions::default()
//!     .with_issuer(issuer.url())
//!     .with_listen_addr("127.0.0.1:0".parse()?); // real use: keep 127.0.0.1:1455
//! let session = LoginSession::start(options).await?;
//! let url = session.authorize_url().to_owned(); // show this to the user
//!
//! // Stand-in for the browser: follows the issuer's redirect back to the callback.
//! let browser = tokio::spawn(async move { reqwest::get(url).await?.text().await });
//! let login = session.wait().await?;
//! assert_eq!(login.masked_email().as_deref(), Some("u***@example.com"));
//! assert!(browser.await??.contains("You are signed in"));
//! // Store `login.tokens` with auth-storage, or write `login.into_auth_document(now)`.
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`TokenData`]: crate::TokenData

pub mod diag;
mod exchange;
pub mod mock_issuer;
mod page;
mod server;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use crate::auth_json::{AuthDocument, Timestamp, TokenData};
use crate::jwt::IdTokenClaims;
use crate::oauth_error::OAuthError;
use crate::pkce::{AuthorizeRequest, PkceCodes, RandomError, generate_state};
use crate::redact::{mask_email, redact_text, redact_url};
use crate::secret::Secret;

use diag::{Diagnostics, SessionEvent};
use server::Shared;

pub use server::{CALLBACK_PATH, CANCEL_PATH};

/// The default callback address, as the Codex CLI: `127.0.0.1:1455`.
pub const DEFAULT_LISTEN_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 1455);

/// How to run a login. [`LoginOptions::default`] is the Codex CLI's sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoginOptions {
    /// Issuer base URL. Default [`crate::codex::ISSUER`].
    pub issuer: String,
    /// Token endpoint. Default `None`: `{issuer}/oauth/token`.
    pub token_url: Option<String>,
    /// OAuth client id. Default [`crate::codex::CLIENT_ID`].
    pub client_id: String,
    /// Space-separated scopes. Default [`crate::codex::SCOPES`].
    pub scopes: String,
    /// `originator` query value (`None` omits it). Default [`crate::codex::ORIGINATOR`].
    pub originator: Option<String>,
    /// Restrict sign-in to these ChatGPT workspaces (`allowed_workspace_id`).
    pub allowed_workspace_ids: Vec<String>,
    /// More query parameters appended to the authorize URL (the CLI's
    /// `id_token_add_organizations=true` and `codex_cli_simplified_flow=true` are always
    /// sent).
    pub extra_params: Vec<(String, String)>,
    /// Where the callback server listens; must be a loopback address. Default
    /// [`DEFAULT_LISTEN_ADDR`]. Port 0 picks a free port (tests).
    pub listen_addr: SocketAddr,
    /// How long [`LoginSession::wait`] waits for the callback. Default 10 minutes.
    pub timeout: Duration,
    /// Whole-request timeout of the token exchange. Default 30 s.
    pub exchange_timeout: Duration,
    /// If the port is taken, first send `GET /cancel` to it (stopping another login
    /// session, ours or the Codex CLI's) and retry for about 2 s. Default `false`.
    pub cancel_previous: bool,
    /// Append diagnostics to `login.log` in this directory (created if missing).
    pub log_dir: Option<PathBuf>,
}

impl Default for LoginOptions {
    fn default() -> Self {
        let codex = AuthorizeRequest::codex_defaults();
        Self {
            issuer: codex.issuer,
            token_url: None,
            client_id: codex.client_id,
            scopes: codex.scopes,
            originator: codex.originator,
            allowed_workspace_ids: codex.allowed_workspace_ids,
            extra_params: Vec::new(),
            listen_addr: DEFAULT_LISTEN_ADDR,
            timeout: Duration::from_secs(600),
            exchange_timeout: Duration::from_secs(30),
            cancel_previous: false,
            log_dir: None,
        }
    }
}

impl LoginOptions {
    /// Another issuer (its token endpoint becomes `{issuer}/oauth/token`).
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }

    /// Another callback address (loopback only).
    pub fn with_listen_addr(mut self, addr: SocketAddr) -> Self {
        self.listen_addr = addr;
        self
    }

    /// Another callback timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Write `login.log` in `dir`.
    pub fn with_log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.log_dir = Some(dir.into());
        self
    }

    /// Ask a previous login holding the port to stop first.
    pub fn with_cancel_previous(mut self, cancel_previous: bool) -> Self {
        self.cancel_previous = cancel_previous;
        self
    }

    /// Append a query parameter to the authorize URL.
    pub fn with_extra_param(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_params.push((key.into(), value.into()));
        self
    }

    fn token_url(&self) -> String {
        self.token_url
            .clone()
            .unwrap_or_else(|| format!("{}/oauth/token", self.issuer.trim_end_matches('/')))
    }
}

/// A successful login: the tokens and what the id token says.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoginSuccess {
    /// The tokens; `account_id` is the id token's `chatgpt_account_id`.
    pub tokens: TokenData,
    /// The id token's claims (**unverified**, see [`crate::jwt`]).
    pub claims: IdTokenClaims,
}

impl LoginSuccess {
    /// The account's email, masked (`a***@example.com`).
    pub fn masked_email(&self) -> Option<String> {
        self.claims.email.as_deref().map(mask_email)
    }

    /// An `auth.json` document for these tokens, as `codex login` writes it.
    pub fn into_auth_document(self, now: Timestamp) -> AuthDocument {
        AuthDocument::chatgpt(self.tokens, now)
    }
}

impl fmt::Debug for LoginSuccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginSuccess")
            .field("tokens", &self.tokens)
            .field("email", &self.masked_email())
            .field("plan", &self.claims.chatgpt_plan_type)
            .field("account_id", &self.claims.chatgpt_account_id)
            .finish_non_exhaustive()
    }
}

/// Why a login failed. `Display` is a sentence without secrets or response bodies.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// The callback port is taken.
    #[error("cannot listen for the sign-in callback on {addr}: the port is already in use{}", holders_text(*addr, holders.as_deref()))]
    PortInUse {
        /// The address.
        addr: SocketAddr,
        /// Who holds it (`pid 42 (codex) /usr/bin/codex`), when the `preflight` feature
        /// could tell; `None` without it.
        holders: Option<Vec<String>>,
    },
    /// Binding failed for another reason.
    #[error("cannot listen for the sign-in callback on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The options are unusable.
    #[error("invalid login options: {detail}")]
    Config {
        /// What is wrong.
        detail: String,
    },
    /// No random numbers for PKCE and `state`.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// `login.log` could not be opened.
    #[error(
        "cannot open the login log {}: {source}",
        crate::terminal::escape_control(&path.display().to_string())
    )]
    LogFile {
        /// The log file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The issuer sent the browser back with `error=…`.
    #[error("{}", issuer_text(code.as_deref(), description.as_deref()))]
    Issuer {
        /// The `error` value, when it looks like an OAuth error code.
        code: Option<String>,
        /// `error_description`, redacted and shortened.
        description: Option<String>,
    },
    /// The callback had the right `state` but no `code`.
    #[error("the browser came back without an authorization code; start the sign-in again")]
    MissingCode,
    /// The token endpoint answered with an error status.
    #[error("the token endpoint answered HTTP {status} {}; start the sign-in again", error.code().map(|c| format!("with error code `{c}`")).unwrap_or_else(|| "without an error code".to_owned()))]
    TokenEndpoint {
        /// HTTP status.
        status: u16,
        /// The classified error (code only).
        error: OAuthError,
    },
    /// The token endpoint could not be reached.
    #[error(
        "could not reach the token endpoint: {}",
        crate::terminal::escape_control(message)
    )]
    Transport {
        /// The error chain, every URL redacted.
        message: String,
    },
    /// The token endpoint answered 2xx with something that is not a token response.
    #[error("the token endpoint's answer is unusable: {detail}")]
    InvalidTokenResponse {
        /// What is wrong (no values).
        detail: String,
    },
    /// No callback arrived in time.
    #[error("no sign-in callback arrived within {} s; start the sign-in again", after.as_secs())]
    TimedOut {
        /// The configured timeout.
        after: Duration,
    },
    /// `/cancel` was requested or a [`CancelHandle`] was used.
    #[error("the sign-in was cancelled")]
    Cancelled,
    /// The session ended without an outcome (its runtime is shutting down).
    #[error("the login session ended without a result (runtime shutting down)")]
    Aborted,
}

fn holders_text(addr: SocketAddr, holders: Option<&[String]>) -> String {
    match holders {
        Some([]) => "; the holder could not be identified".to_owned(),
        Some(list) => format!(
            " by {}; stop it, or if it is another login, open http://{addr}{CANCEL_PATH}",
            // Process names and command lines are chosen by whoever started the process.
            crate::terminal::escape_control(&list.join(", "))
        ),
        None => format!(
            "; find the holder with `lsof -nP -iTCP:{} -sTCP:LISTEN` (auth-core's `preflight` feature names it)",
            addr.port()
        ),
    }
}

fn issuer_text(code: Option<&str>, description: Option<&str>) -> String {
    let code_part = code.map(|c| format!(" ({c})")).unwrap_or_default();
    if description.is_some_and(|d| d.to_ascii_lowercase().contains("missing_codex_entitlement")) {
        return format!(
            "the sign-in page reported that Codex is not enabled for this account's workspace{code_part}; ask the workspace administrator for access"
        );
    }
    // The description is the issuer's text: a CR/LF or ESC in it must not forge output lines.
    let description_part = description
        .map(|d| format!(": {}", crate::terminal::escape_control(d)))
        .unwrap_or_default();
    format!(
        "the sign-in page reported an error{code_part}{description_part}; check the account and start the sign-in again"
    )
}

/// `value` if it looks like an OAuth error code (short, `[A-Za-z0-9_.-]`).
fn oauth_code(value: &str) -> Option<String> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    ok.then(|| value.to_owned())
}

/// The issuer's `error_description`, redacted and cut to 300 characters.
fn issuer_description(value: Option<&str>) -> Option<String> {
    let text = value?.trim();
    if text.is_empty() {
        return None;
    }
    let mut text = redact_text(text);
    if text.chars().count() > 300 {
        text = text.chars().take(300).collect::<String>() + "…";
    }
    Some(text)
}

/// Ends the session it belongs to with [`LoginError::Cancelled`] (like `GET /cancel`).
#[derive(Clone)]
pub struct CancelHandle {
    shared: Arc<Shared>,
}

impl CancelHandle {
    /// Cancels; returns false if the session had already finished.
    pub fn cancel(&self) -> bool {
        self.shared.finish(Err(LoginError::Cancelled))
    }
}

impl fmt::Debug for CancelHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelHandle").finish_non_exhaustive()
    }
}

/// A running login: the callback server is listening. Show [`authorize_url`] to the
/// user (or open a browser), then [`wait`]. Dropping the session stops the server.
///
/// [`authorize_url`]: LoginSession::authorize_url
/// [`wait`]: LoginSession::wait
pub struct LoginSession {
    authorize_url: String,
    redirect_uri: String,
    local_addr: SocketAddr,
    timeout: Duration,
    shared: Arc<Shared>,
    outcome: oneshot::Receiver<server::Outcome>,
    _stop: watch::Sender<()>,
}

impl fmt::Debug for LoginSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginSession")
            .field("authorize_url", &redact_url(&self.authorize_url))
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl LoginSession {
    /// Generates PKCE codes and `state`, binds the callback server and starts serving
    /// on the current tokio runtime (either flavour; IO and time drivers enabled).
    /// Blocking callers: `Runtime::block_on(async { start(..).await?.wait().await })`.
    ///
    /// # Errors
    /// [`LoginError::Config`] for a non-loopback address or a bad issuer URL,
    /// [`LoginError::PortInUse`] / [`LoginError::Bind`], [`LoginError::LogFile`],
    /// [`LoginError::Random`].
    pub async fn start(options: LoginOptions) -> Result<Self, LoginError> {
        if !options.listen_addr.ip().is_loopback() {
            return Err(LoginError::Config {
                detail: format!(
                    "the callback must listen on a loopback address, not {}",
                    options.listen_addr.ip()
                ),
            });
        }
        let token_url = options.token_url();
        for (what, value) in [("issuer", &options.issuer), ("token URL", &token_url)] {
            let ok = url::Url::parse(value).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if !ok {
                return Err(LoginError::Config {
                    detail: format!("the {what} {} is not an http(s) URL", redact_url(value)),
                });
            }
        }
        let client = reqwest::Client::builder()
            .timeout(options.exchange_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|err| LoginError::Config {
                detail: format!(
                    "cannot build the HTTP client ({})",
                    redact_text(&err.to_string())
                ),
            })?;
        let diag = Diagnostics::open(options.log_dir.as_deref())?;
        let pkce = PkceCodes::generate()?;
        let state = generate_state()?;

        let listener = server::bind(options.listen_addr, options.cancel_previous).await?;
        let local_addr = listener.local_addr().map_err(|source| LoginError::Bind {
            addr: options.listen_addr,
            source,
        })?;
        let redirect_uri = format!("http://localhost:{}{CALLBACK_PATH}", local_addr.port());
        let mut request = AuthorizeRequest::codex_defaults()
            .with_issuer(options.issuer.clone())
            .with_redirect_uri(redirect_uri.clone());
        request.client_id = options.client_id.clone();
        request.scopes = options.scopes.clone();
        request.originator = options.originator.clone();
        request.allowed_workspace_ids = options.allowed_workspace_ids.clone();
        let mut authorize_url = request.url(&pkce, &state);
        if !options.extra_params.is_empty() {
            let mut extra = url::form_urlencoded::Serializer::new(String::new());
            for (key, value) in &options.extra_params {
                extra.append_pair(key, value);
            }
            authorize_url.push('&');
            authorize_url.push_str(&extra.finish().replace('+', "%20"));
        }

        diag.session(SessionEvent::Listening {
            addr: local_addr,
            redirect_uri: redirect_uri.clone(),
        });
        let (shared, outcome) = Shared::new(
            Secret::new(state),
            pkce.verifier,
            options.issuer.clone(),
            token_url,
            options.client_id.clone(),
            redirect_uri.clone(),
            client,
            diag,
        );
        let (stop, stop_rx) = watch::channel(());
        tokio::spawn(server::serve(
            listener,
            Arc::clone(&shared),
            stop_rx,
            options
                .exchange_timeout
                .saturating_add(Duration::from_secs(30)),
        ));
        Ok(Self {
            authorize_url,
            redirect_uri,
            local_addr,
            timeout: options.timeout,
            shared,
            outcome,
            _stop: stop,
        })
    }

    /// The URL the user opens in a browser. It carries the PKCE challenge and `state`,
    /// never the verifier.
    pub fn authorize_url(&self) -> &str {
        &self.authorize_url
    }

    /// The redirect URI (`http://localhost:PORT/auth/callback`).
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// The address the callback server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that cancels this session from elsewhere.
    pub fn cancel_handle(&self) -> CancelHandle {
        CancelHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Waits for the outcome: the first callback with the right `state`, `/cancel`, a
    /// [`CancelHandle`], or [`LoginOptions::timeout`] without a callback. The server
    /// stops when this returns (the browser still gets its page).
    pub async fn wait(self) -> Result<LoginSuccess, LoginError> {
        let Self {
            timeout,
            shared,
            mut outcome,
            _stop,
            ..
        } = self;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut timed_out = false;
        // Bounded: the deadline branch runs once; after it the outcome either arrives or
        // the running exchange ends within its own timeout.
        let result = loop {
            tokio::select! {
                received = &mut outcome => break received.unwrap_or(Err(LoginError::Aborted)),
                () = &mut deadline, if !timed_out => {
                    timed_out = true;
                    shared.finish_if_waiting(Err(LoginError::TimedOut { after: timeout }));
                }
            }
        };
        drop(_stop);
        result
    }
}

/// Asks a login callback server on `addr` (ours, or a `codex login`) to stop, with
/// `GET /cancel`. Returns once the request was answered (or after 2 s).
///
/// # Errors
/// Connecting or writing failed (nobody listens there, or it is not an HTTP server).
pub async fn cancel_running_login(addr: SocketAddr) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let limit = Duration::from_secs(2);
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request =
            format!("GET {CANCEL_PATH} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut buf = [0u8; 64];
        let _ = stream.read(&mut buf).await?;
        Ok(())
    };
    tokio::time::timeout(limit, attempt)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::from(std::io::ErrorKind::TimedOut)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_descriptions_are_sanitized() {
        assert_eq!(
            oauth_code("access_denied").as_deref(),
            Some("access_denied")
        );
        assert_eq!(oauth_code("<script>"), None);
        assert_eq!(oauth_code(&"a".repeat(65)), None);
        assert_eq!(issuer_description(Some("  ")), None);
        let d = issuer_description(Some("see https://x.example/?code=SECRET")).unwrap();
        assert!(!d.contains("SECRET"), "{d}");
        assert_eq!(
            issuer_description(Some(&"x".repeat(400)))
                .unwrap()
                .chars()
                .count(),
            301
        );
    }

    #[test]
    fn issuer_and_holder_text_reach_the_terminal_escaped() {
        let hostile = "denied\r\nauth: signed in as admin\x1b]0;pwned\x07\u{202e}";
        let issuer = LoginError::Issuer {
            code: Some("access_denied".into()),
            description: issuer_description(Some(hostile)),
        }
        .to_string();
        let holders = LoginError::PortInUse {
            addr: "127.0.0.1:1455".parse().unwrap(),
            holders: Some(vec!["pid 7 (co\ndex) \x1b[2Jx".into()]),
        }
        .to_string();
        let transport = LoginError::Transport {
            message: "reset\r\nforged".into(),
        }
        .to_string();
        for shown in [&issuer, &holders, &transport] {
            assert!(
                !shown.chars().any(crate::terminal::is_unsafe_char),
                "{shown:?}"
            );
        }
        insta::assert_snapshot!(issuer, @r"the sign-in page reported an error (access_denied): denied\x0d\x0aauth: signed in as admin\x1b]0;pwned\x07\u{202e}; check the account and start the sign-in again");
        assert!(
            holders.contains("pid 7 (co\\x0adex) \\x1b[2Jx"),
            "{holders}"
        );
    }

    #[test]
    fn port_in_use_messages() {
        let addr: SocketAddr = "127.0.0.1:1455".parse().unwrap();
        let e = LoginError::PortInUse {
            addr,
            holders: Some(vec!["pid 7 (codex) /usr/bin/codex".into()]),
        };
        assert_eq!(
            e.to_string(),
            "cannot listen for the sign-in callback on 127.0.0.1:1455: the port is already in use by pid 7 (codex) /usr/bin/codex; stop it, or if it is another login, open http://127.0.0.1:1455/cancel"
        );
        let e = LoginError::PortInUse {
            addr,
            holders: None,
        };
        assert!(e.to_string().contains("lsof -nP -iTCP:1455"));
    }

    #[test]
    fn defaults_are_the_codex_cli_s() {
        let o = LoginOptions::default();
        assert_eq!(o.issuer, "https://auth.openai.com");
        assert_eq!(o.client_id, "app_EMoamEEZ73f0CkXaXp7hrann");
        assert_eq!(o.listen_addr.to_string(), "127.0.0.1:1455");
        assert_eq!(o.token_url(), "https://auth.openai.com/oauth/token");
    }
}
