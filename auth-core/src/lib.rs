//! Codex `auth.json` token data, JWT claims, secrets that never print, redaction and
//! OAuth error classification.
//!
//! A tool that manages ChatGPT/OpenAI OAuth accounts for the Codex CLI can use this
//! crate instead of its own token plumbing:
//!
//! * [`AuthDocument`] reads and writes `$CODEX_HOME/auth.json` byte-compatibly with the
//!   Codex CLI, keeping fields it does not know.
//! * [`TokenData`] holds the ChatGPT tokens; [`jwt`] decodes id-token claims (email,
//!   plan, account id, expiry) **without verifying signatures**.
//! * [`Secret`] wraps every token and key: it never prints, is zeroized on drop and
//!   compares in constant time.
//! * [`redact`] masks emails and redacts URLs (also inside error text);
//!   [`terminal`] escapes control and bidi characters in untrusted text before it is
//!   printed or logged;
//!   [`oauth_error`] classifies token-endpoint error bodies into typed kinds.
//! * [`events`] are the sign-in/refresh lifecycle as typed `tracing` events (no bodies,
//!   no tokens); [`pkce`] builds PKCE S256 codes, `state` and the authorize URL with the
//!   Codex CLI's defaults ([`codex`]).
//! * [`regular_file`] opens the files these tools read (`auth.json`, `pool.json`, logs)
//!   only when they are regular files of bounded size, without blocking on a FIFO or
//!   device, and creates credential directories 0700.
//! * `refresh` (feature `refresh`) refreshes tokens against the token endpoint with
//!   single-flight: N concurrent callers, one HTTP request, one persisted result.
//! * `login` (feature `login`) runs the browser OAuth sign-in the way `codex login`
//!   does: PKCE, a loopback callback server, the code-for-token exchange and safe
//!   diagnostics (feature `preflight` names the process holding a taken port).
//!
//! ```
//! use auth_core::{AuthDocument, AuthMode, Secret, TokenData, Timestamp};
//! use auth_core::jwt::{self, IdTokenClaims, PlanType};
//!
//! // A real-shaped (unsigned, test-only) id token.
//! let id_token = jwt::encode_unsigned_for_testing(&IdTokenClaims {
//!     email: Some("user@example.com".into()),
//!     exp: Some(1_900_000_000),
//!     chatgpt_plan_type: Some(PlanType::Pro),
//!     ..IdTokenClaims::default()
//! });
//! let tokens = TokenData::new(id_token.into(), "at-SECRET".into(), "rt-SECRET".into(), None)?;
//! let doc = AuthDocument::chatgpt(tokens, Timestamp::now());
//!
//! let text = doc.to_json_pretty(); // what you write to auth.json
//! let back = AuthDocument::from_json_str(&text).expect("round trip");
//! assert_eq!(back.effective_mode(), Some(AuthMode::Chatgpt));
//! let claims = back.tokens.as_ref().unwrap().id_token_claims()?;
//! assert_eq!(claims.chatgpt_plan_type, Some(PlanType::Pro));
//! // Nothing secret in Debug output.
//! assert!(!format!("{back:?}").contains("SECRET"));
//! # Ok::<(), auth_core::jwt::JwtError>(())
//! ```
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod auth_json;
pub mod codex;
pub mod events;
pub mod jwt;
#[cfg(feature = "login")]
pub mod login;
pub mod oauth_error;
pub mod pkce;
pub mod redact;
#[cfg(feature = "refresh")]
pub mod refresh;
pub mod regular_file;
pub mod secret;
pub mod terminal;

pub use auth_json::{
    AuthDocument, AuthJsonError, AuthMode, MAX_AUTH_JSON_LEN, Timestamp, TimestampError, TokenData,
};
pub use jwt::{IdTokenClaims, JwtError, PlanType};
pub use oauth_error::{OAuthError, OAuthErrorKind};
pub use secret::Secret;
