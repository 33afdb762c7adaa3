//! Diagnostics of a login session: typed events through `tracing`, and an optional
//! `login.log` file sink.
//!
//! Two `tracing` targets carry them:
//!
//! * [`crate::events::TARGET`] (`auth_core::login`): the shared [`LoginEvent`]s —
//!   `callback_received` (path, has_code, has_state, has_error, state_valid),
//!   `token_exchange_started` (redacted issuer and redirect URI),
//!   `token_exchange_succeeded` (status), `token_endpoint_error` (status, parsed error
//!   code only) and `transport_error` (message with every URL redacted).
//! * [`SESSION_TARGET`] (`auth_core::login::session`): the [`SessionEvent`]s of the
//!   callback server — `listening`, `request` (method and path, never the query),
//!   `issuer_error` (error code only), `callback_ignored` (why) and `finished`
//!   (the outcome's name).
//!
//! Every event also carries an `event` field with its snake_case name. Nothing secret
//! is ever a field: no code, state, verifier, token or response body.
//!
//! With [`LoginOptions::log_dir`](super::LoginOptions::log_dir) set, the same events
//! are appended to `login.log` ([`LOG_FILE_NAME`]) in that directory, one line each:
//!
//! ```text
//! 2026-01-02T03:04:05.678Z  INFO auth_core::login::session listening addr=127.0.0.1:1455 redirect_uri=http://localhost:1455/auth/callback
//! 2026-01-02T03:04:09.001Z  INFO auth_core::login callback_received path=/auth/callback has_code=true has_state=true has_error=false state_valid=true
//! ```

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::events::LoginEvent;

use super::LoginError;

/// The `tracing` target of [`SessionEvent`]s.
pub const SESSION_TARGET: &str = "auth_core::login::session";

/// The name of the log file written in [`LoginOptions::log_dir`](super::LoginOptions::log_dir).
pub const LOG_FILE_NAME: &str = "login.log";

/// Why a request to the callback path did not complete the login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IgnoreReason {
    /// `state` was missing or not this session's (the login goes on waiting).
    StateMismatch,
    /// A callback was already accepted; only the first one counts.
    AlreadyHandled,
}

impl IgnoreReason {
    /// A stable snake_case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            IgnoreReason::StateMismatch => "state_mismatch",
            IgnoreReason::AlreadyHandled => "already_handled",
        }
    }
}

/// A step of the callback server, safe to log (the counterpart of [`LoginEvent`] for
/// what only a running login session knows).
///
/// ```
/// use auth_core::login::diag::{IgnoreReason, SessionEvent};
///
/// let event = SessionEvent::CallbackIgnored { reason: IgnoreReason::StateMismatch };
/// assert_eq!(event.name(), "callback_ignored");
/// event.emit(); // no-op without a tracing subscriber
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// The callback server is listening.
    Listening {
        /// The bound address.
        addr: SocketAddr,
        /// The redirect URI sent in the authorize URL.
        redirect_uri: String,
    },
    /// The callback server received a request.
    Request {
        /// HTTP method.
        method: String,
        /// The path only (never the query), redacted and shortened.
        path: String,
    },
    /// The issuer redirected back with `error=…`.
    IssuerError {
        /// The `error` value when it looks like an OAuth error code, else `None`.
        error_code: Option<String>,
    },
    /// A callback was answered without completing the login.
    CallbackIgnored {
        /// Why.
        reason: IgnoreReason,
    },
    /// The session ended.
    Finished {
        /// `success`, `cancelled`, `timed_out`, `issuer_error`, `missing_code`,
        /// `token_endpoint_error`, `transport_error`, `invalid_token_response` or
        /// `server_error`.
        outcome: &'static str,
    },
}

impl SessionEvent {
    /// A [`SessionEvent::Request`] for `path`, which is redacted and shortened.
    pub fn request(method: &str, path: &str) -> Self {
        SessionEvent::Request {
            method: method.chars().take(16).collect(),
            path: crate::events::safe_path(path),
        }
    }

    /// A stable snake_case name (the `event` field).
    pub fn name(&self) -> &'static str {
        match self {
            SessionEvent::Listening { .. } => "listening",
            SessionEvent::Request { .. } => "request",
            SessionEvent::IssuerError { .. } => "issuer_error",
            SessionEvent::CallbackIgnored { .. } => "callback_ignored",
            SessionEvent::Finished { .. } => "finished",
        }
    }

    fn is_warning(&self) -> bool {
        match self {
            SessionEvent::IssuerError { .. } | SessionEvent::CallbackIgnored { .. } => true,
            SessionEvent::Finished { outcome } => *outcome != "success",
            _ => false,
        }
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        match self {
            SessionEvent::Listening { addr, redirect_uri } => {
                vec![
                    ("addr", addr.to_string()),
                    ("redirect_uri", redirect_uri.clone()),
                ]
            }
            SessionEvent::Request { method, path } => {
                vec![("method", method.clone()), ("path", path.clone())]
            }
            SessionEvent::IssuerError { error_code } => vec![(
                "error_code",
                error_code.clone().unwrap_or_else(|| "none".to_owned()),
            )],
            SessionEvent::CallbackIgnored { reason } => {
                vec![("reason", reason.as_str().to_owned())]
            }
            SessionEvent::Finished { outcome } => vec![("outcome", (*outcome).to_owned())],
        }
    }

    /// Emits the event through `tracing` at target [`SESSION_TARGET`]: `warn` for an
    /// issuer error, an ignored callback and an unsuccessful end, else `info`.
    pub fn emit(&self) {
        let event = self.name();
        let warn = self.is_warning();
        match self {
            SessionEvent::Listening { addr, redirect_uri } => {
                tracing::info!(target: SESSION_TARGET, event, addr = %addr, redirect_uri = %redirect_uri, "login callback server listening");
            }
            SessionEvent::Request { method, path } => {
                tracing::info!(target: SESSION_TARGET, event, method = %method, path = %path, "login callback server request");
            }
            SessionEvent::IssuerError { error_code } => {
                tracing::warn!(target: SESSION_TARGET, event, error_code = error_code.as_deref().unwrap_or("none"), "the issuer reported a sign-in error");
            }
            SessionEvent::CallbackIgnored { reason } => {
                tracing::warn!(target: SESSION_TARGET, event, reason = reason.as_str(), "login callback ignored");
            }
            SessionEvent::Finished { outcome } => {
                if warn {
                    tracing::warn!(target: SESSION_TARGET, event, outcome = *outcome, "login session finished");
                } else {
                    tracing::info!(target: SESSION_TARGET, event, outcome = *outcome, "login session finished");
                }
            }
        }
    }
}

/// Level and fields of a shared [`LoginEvent`], mirroring [`LoginEvent::emit`].
fn login_event_fields(event: &LoginEvent) -> (bool, Vec<(&'static str, String)>) {
    match event {
        LoginEvent::CallbackReceived {
            path,
            has_code,
            has_state,
            has_error,
            state_valid,
        } => (
            !state_valid,
            vec![
                ("path", path.clone()),
                ("has_code", has_code.to_string()),
                ("has_state", has_state.to_string()),
                ("has_error", has_error.to_string()),
                ("state_valid", state_valid.to_string()),
            ],
        ),
        LoginEvent::TokenExchangeStarted {
            issuer,
            redirect_uri,
        } => (
            false,
            vec![
                ("issuer", issuer.clone()),
                ("redirect_uri", redirect_uri.clone()),
            ],
        ),
        LoginEvent::TokenExchangeSucceeded { status } => {
            (false, vec![("status", status.to_string())])
        }
        LoginEvent::TokenEndpointError { status, error_code } => (
            true,
            vec![
                ("status", status.to_string()),
                (
                    "error_code",
                    error_code.clone().unwrap_or_else(|| "none".to_owned()),
                ),
            ],
        ),
        LoginEvent::TransportError { message } => (true, vec![("message", message.clone())]),
        _ => (false, Vec::new()),
    }
}

/// Formats one log line (without the newline). Values with spaces, quotes or `=` are
/// quoted.
fn format_line(
    timestamp: &str,
    warn: bool,
    target: &str,
    name: &str,
    fields: &[(&str, String)],
) -> String {
    let mut line = format!(
        "{timestamp} {} {target} {name}",
        if warn { " WARN" } else { " INFO" }
    );
    for (key, value) in fields {
        let plain = !value.is_empty()
            && !value
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '='));
        if plain {
            let _ = write!(line, " {key}={value}");
        } else {
            let _ = write!(line, " {key}={value:?}");
        }
    }
    line
}

fn now_rfc3339_millis() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// Where a session's events go: always `tracing`, and `login.log` when configured.
#[derive(Debug, Default)]
pub(crate) struct Diagnostics {
    file: Option<Mutex<File>>,
}

impl Diagnostics {
    /// Opens (creating, appending) `dir/login.log`, mode 0600 on Unix.
    pub(crate) fn open(dir: Option<&Path>) -> Result<Self, LoginError> {
        let Some(dir) = dir else {
            return Ok(Self::default());
        };
        let path: PathBuf = dir.join(LOG_FILE_NAME);
        let log_error = |source| LoginError::LogFile {
            path: path.clone(),
            source,
        };
        // The log sits beside credentials (often the pool directory): a directory we
        // create is private, and a FIFO, device or directory at `login.log` is refused
        // without blocking, an existing loose file tightened to 0600.
        crate::regular_file::create_private_dir_all(dir).map_err(log_error)?;
        let file = crate::regular_file::open_append_private(&path, 0o600).map_err(|e| match e {
            crate::regular_file::FileError::Io { source, .. } => log_error(source),
            crate::regular_file::FileError::NotRegular { kind, .. } => {
                log_error(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("it is {kind}, not a regular file; move it away"),
                ))
            }
            other => log_error(std::io::Error::other(other.to_string())),
        })?;
        Ok(Self {
            file: Some(Mutex::new(file)),
        })
    }

    pub(crate) fn login(&self, event: LoginEvent) {
        event.emit();
        if self.file.is_some() {
            let (warn, fields) = login_event_fields(&event);
            self.write(warn, crate::events::TARGET, event.name(), &fields);
        }
    }

    pub(crate) fn session(&self, event: SessionEvent) {
        event.emit();
        if self.file.is_some() {
            self.write(
                event.is_warning(),
                SESSION_TARGET,
                event.name(),
                &event.fields(),
            );
        }
    }

    fn write(&self, warn: bool, target: &str, name: &str, fields: &[(&str, String)]) {
        let Some(file) = &self.file else { return };
        let mut line = format_line(&now_rfc3339_millis(), warn, target, name, fields);
        line.push('\n');
        let mut file = file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // One write per line keeps lines whole with O_APPEND; a failing log must not
        // fail the login, so the error is reported through tracing only.
        if let Err(err) = file.write_all(line.as_bytes()) {
            tracing::warn!(target: SESSION_TARGET, error = %err, "could not write to login.log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_quote_only_when_needed() {
        let line = format_line(
            "T",
            true,
            "t",
            "transport_error",
            &[
                ("message", "connection refused".into()),
                ("status", "500".into()),
                ("empty", String::new()),
            ],
        );
        assert_eq!(
            line,
            "T  WARN t transport_error message=\"connection refused\" status=500 empty=\"\""
        );
    }

    #[test]
    fn request_paths_are_redacted_and_bounded() {
        let jwt = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1MSJ9.c2ln";
        let SessionEvent::Request { path, .. } = SessionEvent::request("GET", &format!("/x/{jwt}"))
        else {
            panic!("not a request event");
        };
        assert_eq!(path, "/x/REDACTED");
        let SessionEvent::Request { path, .. } = SessionEvent::request("GET", &"a".repeat(500))
        else {
            panic!("not a request event");
        };
        assert_eq!(path.chars().count(), 121);
    }

    #[test]
    fn timestamp_shape() {
        let ts = now_rfc3339_millis();
        assert_eq!(ts.len(), "2026-01-02T03:04:05.678Z".len(), "{ts}");
        assert!(ts.ends_with('Z'));
    }

    #[cfg(unix)]
    #[test]
    fn log_directory_is_created_private_and_a_loose_log_is_tightened() {
        use std::os::unix::fs::PermissionsExt as _;
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("logs/login");
        drop(Diagnostics::open(Some(&dir)).unwrap());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(
            mode(&base.path().join("logs")),
            0o700,
            "missing parents too"
        );
        let log = dir.join(LOG_FILE_NAME);
        assert_eq!(mode(&log), 0o600);
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(Diagnostics::open(Some(&dir)).unwrap());
        assert_eq!(mode(&log), 0o600, "an existing loose log is tightened");
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_or_device_login_log_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(LOG_FILE_NAME);
        let status = std::process::Command::new("mkfifo")
            .arg(&log)
            .status()
            .unwrap();
        assert!(status.success());
        // Run in a thread so a regression (a blocking open) fails instead of hanging.
        let (tx, rx) = std::sync::mpsc::channel();
        let d = dir.path().to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(
                Diagnostics::open(Some(&d))
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            );
        });
        let text = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("opening a FIFO login.log must not block")
            .unwrap_err();
        assert!(text.contains("FIFO"), "{text}");
        assert!(text.contains(LOG_FILE_NAME), "{text}");
        insta::assert_snapshot!(text.replace(&*dir.path().to_string_lossy(), "[DIR]"));
        std::fs::remove_file(&log).unwrap();
        std::os::unix::fs::symlink("/dev/null", &log).unwrap();
        let text = Diagnostics::open(Some(dir.path())).unwrap_err().to_string();
        assert!(text.contains("character device"), "{text}");
    }
}
