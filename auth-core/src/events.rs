//! Login lifecycle events as typed values, emitted through `tracing`.
//!
//! Each [`LoginEvent`] carries only reviewed, non-secret fields: booleans, HTTP
//! statuses, sanitized error codes and redacted URLs/messages. Never a body, never a
//! token. Build the URL/message-carrying variants with the constructors
//! ([`LoginEvent::token_exchange_started`], [`LoginEvent::transport_error`]), which
//! redact for you. Events go to the `tracing` target [`TARGET`] so a subscriber can
//! route them (`RUST_LOG=auth_core::login=info`).
//!
//! ```
//! use auth_core::events::LoginEvent;
//!
//! let event = LoginEvent::token_exchange_started(
//!     "https://auth.openai.com",
//!     "http://localhost:1455/auth/callback?state=abc",
//! );
//! assert_eq!(event.name(), "token_exchange_started");
//! assert!(!format!("{event:?}").contains("abc"));
//! event.emit(); // no-op without a tracing subscriber
//! ```

use crate::redact::{redact_text, redact_url};
use crate::terminal::escape_control;

/// The `tracing` target of every event.
pub const TARGET: &str = "auth_core::login";

/// A step of a sign-in or token refresh, safe to log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoginEvent {
    /// The local callback server received the browser's redirect. Build it with
    /// [`LoginEvent::callback_received`] (the variant may gain fields).
    #[non_exhaustive]
    CallbackReceived {
        /// The request path (never the query), redacted and shortened; build the event
        /// with [`LoginEvent::callback_received`] to get this right.
        path: String,
        /// A non-empty `code` parameter was present.
        has_code: bool,
        /// A non-empty `state` parameter was present.
        has_state: bool,
        /// An `error` parameter was present.
        has_error: bool,
        /// `state` matched the one this login generated.
        state_valid: bool,
    },
    /// The authorization-code exchange is about to be sent.
    TokenExchangeStarted {
        /// The issuer, redacted.
        issuer: String,
        /// The redirect URI, redacted.
        redirect_uri: String,
    },
    /// The authorization-code exchange succeeded.
    TokenExchangeSucceeded {
        /// HTTP status.
        status: u16,
    },
    /// The token endpoint answered with an error status.
    TokenEndpointError {
        /// HTTP status.
        status: u16,
        /// The sanitized error code, if the body had one.
        error_code: Option<String>,
    },
    /// The token endpoint could not be reached.
    TransportError {
        /// The error message, redacted.
        message: String,
    },
    /// A refresh-token exchange is about to be sent.
    RefreshStarted {
        /// The token URL, redacted.
        token_url: String,
    },
    /// A refresh-token exchange succeeded.
    RefreshSucceeded {
        /// HTTP status.
        status: u16,
    },
    /// A refresh request joined one already in flight (or already finished) for the
    /// same refresh token instead of sending another.
    RefreshCoalesced,
}

/// Longest request path kept in an event.
const MAX_PATH_CHARS: usize = 120;

/// A request path safe to log: the query and fragment cut off, anything that looks
/// like a secret (JWT, email, URL userinfo/query) redacted, at most 120 characters.
pub(crate) fn safe_path(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let mut path = redact_text(path);
    if path.chars().count() > MAX_PATH_CHARS {
        path = path.chars().take(MAX_PATH_CHARS).collect::<String>() + "…";
    }
    path
}

impl LoginEvent {
    /// [`LoginEvent::CallbackReceived`] for a request to `path`; the query (which holds
    /// the code and state) is cut off and the rest redacted and shortened.
    ///
    /// ```
    /// use auth_core::events::LoginEvent;
    ///
    /// let event = LoginEvent::callback_received("/auth/callback?code=SECRET&state=s", true, true, false, true);
    /// let LoginEvent::CallbackReceived { path, .. } = &event else { unreachable!() };
    /// assert_eq!(path, "/auth/callback");
    /// assert!(!format!("{event:?}").contains("SECRET"));
    /// ```
    pub fn callback_received(
        path: &str,
        has_code: bool,
        has_state: bool,
        has_error: bool,
        state_valid: bool,
    ) -> Self {
        LoginEvent::CallbackReceived {
            path: safe_path(path),
            has_code,
            has_state,
            has_error,
            state_valid,
        }
    }

    /// [`LoginEvent::TokenExchangeStarted`] with both URLs redacted.
    pub fn token_exchange_started(issuer: &str, redirect_uri: &str) -> Self {
        LoginEvent::TokenExchangeStarted {
            issuer: redact_url(issuer),
            redirect_uri: redact_url(redirect_uri),
        }
    }

    /// [`LoginEvent::TransportError`] from any error, its message chain redacted.
    pub fn transport_error(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        for _ in 0..8 {
            let Some(inner) = source else { break };
            message.push_str(": ");
            message.push_str(&inner.to_string());
            source = inner.source();
        }
        LoginEvent::TransportError {
            message: redact_text(&message),
        }
    }

    /// A stable snake_case name (the `event` field in logs).
    pub fn name(&self) -> &'static str {
        match self {
            LoginEvent::CallbackReceived { .. } => "callback_received",
            LoginEvent::TokenExchangeStarted { .. } => "token_exchange_started",
            LoginEvent::TokenExchangeSucceeded { .. } => "token_exchange_succeeded",
            LoginEvent::TokenEndpointError { .. } => "token_endpoint_error",
            LoginEvent::TransportError { .. } => "transport_error",
            LoginEvent::RefreshStarted { .. } => "refresh_started",
            LoginEvent::RefreshSucceeded { .. } => "refresh_succeeded",
            LoginEvent::RefreshCoalesced => "refresh_coalesced",
        }
    }

    /// Emits the event through `tracing` at target [`TARGET`]: `info` for progress,
    /// `warn` for failures and an invalid callback `state`.
    ///
    /// ```
    /// use auth_core::events::LoginEvent;
    /// LoginEvent::callback_received("/auth/callback", true, true, false, true).emit();
    /// ```
    pub fn emit(&self) {
        let event = self.name();
        match self {
            LoginEvent::CallbackReceived {
                path,
                has_code,
                has_state,
                has_error,
                state_valid,
            } => {
                if *state_valid {
                    tracing::info!(target: TARGET, event, path = %escape_control(path), has_code, has_state, has_error, state_valid, "login callback received");
                } else {
                    tracing::warn!(target: TARGET, event, path = %escape_control(path), has_code, has_state, has_error, state_valid, "login callback received with invalid state");
                }
            }
            LoginEvent::TokenExchangeStarted {
                issuer,
                redirect_uri,
            } => {
                tracing::info!(target: TARGET, event, issuer = %issuer, redirect_uri = %redirect_uri, "token exchange started");
            }
            LoginEvent::TokenExchangeSucceeded { status } => {
                tracing::info!(target: TARGET, event, status, "token exchange succeeded");
            }
            LoginEvent::TokenEndpointError { status, error_code } => {
                tracing::warn!(target: TARGET, event, status, error_code = error_code.as_deref().unwrap_or("none"), "token endpoint returned an error");
            }
            LoginEvent::TransportError { message } => {
                tracing::warn!(target: TARGET, event, message = %escape_control(message), "token endpoint unreachable");
            }
            LoginEvent::RefreshStarted { token_url } => {
                tracing::info!(target: TARGET, event, token_url = %token_url, "token refresh started");
            }
            LoginEvent::RefreshSucceeded { status } => {
                tracing::info!(target: TARGET, event, status, "token refresh succeeded");
            }
            LoginEvent::RefreshCoalesced => {
                tracing::debug!(target: TARGET, event, "token refresh joined an existing one");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_redact() {
        let e = LoginEvent::token_exchange_started(
            "https://u:pw@auth.example.com",
            "http://localhost:1455/auth/callback?code=SECRETCODE",
        );
        let dbg = format!("{e:?}");
        assert!(!dbg.contains("SECRETCODE") && !dbg.contains("pw"), "{dbg}");

        let io = std::io::Error::other("failed for https://h.example/t?refresh_token=RT123");
        let e = LoginEvent::transport_error(&io);
        assert!(!format!("{e:?}").contains("RT123"));
        assert_eq!(e.name(), "transport_error");
    }

    #[test]
    fn callback_path_drops_query_and_secrets() {
        let jwt = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1MSJ9.c2ln";
        let cases = [
            ("/auth/callback?code=C0DE&state=ST4TE", "/auth/callback"),
            ("/auth/callback#frag", "/auth/callback"),
            ("/auth/callback", "/auth/callback"),
            ("", ""),
        ];
        for (given, expected) in cases {
            let LoginEvent::CallbackReceived { path, .. } =
                LoginEvent::callback_received(given, true, true, false, true)
            else {
                panic!("not a callback event");
            };
            assert_eq!(path, expected);
        }
        let LoginEvent::CallbackReceived { path, .. } =
            LoginEvent::callback_received(&format!("/x/{jwt}"), false, false, false, false)
        else {
            panic!("not a callback event");
        };
        assert_eq!(path, "/x/REDACTED");
        let LoginEvent::CallbackReceived { path, .. } =
            LoginEvent::callback_received(&"a".repeat(500), false, false, false, false)
        else {
            panic!("not a callback event");
        };
        assert_eq!(path.chars().count(), MAX_PATH_CHARS + 1);
    }
}
