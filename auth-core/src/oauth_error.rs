//! Classification of OAuth token-endpoint error bodies.
//!
//! The OpenAI token endpoint answers a failed refresh with either the RFC 6749 shape
//! `{"error": "invalid_grant", "error_description": "…"}` or a nested shape
//! `{"error": {"code": "refresh_token_expired", "message": "…"}}` (and sometimes a
//! top-level `code`). [`OAuthError::from_body`] reads all of them into a typed
//! [`OAuthErrorKind`]. Only the error *code* is kept, and only when it looks like a code
//! (short, `[A-Za-z0-9_.-]`); descriptions and messages are dropped because they may
//! echo user data. The raw body never reaches `Display`, `Debug` or a log.
//!
//! ```
//! use auth_core::oauth_error::{OAuthError, OAuthErrorKind};
//!
//! let e = OAuthError::from_body(br#"{"error":{"code":"refresh_token_reused","message":"x"}}"#);
//! assert_eq!(e.kind(), OAuthErrorKind::RefreshTokenReused);
//! assert!(e.requires_new_login());
//! let e = OAuthError::from_body(br#"{"error":"invalid_grant","error_description":"bad"}"#);
//! assert_eq!(e.kind(), OAuthErrorKind::InvalidGrant);
//! assert_eq!(e.code(), Some("invalid_grant"));
//! ```

use std::fmt;

use serde_json::Value;

/// Longest error code kept; anything longer is not a code.
const MAX_CODE_LEN: usize = 64;

/// What a token-endpoint error means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OAuthErrorKind {
    /// `refresh_token_expired`: the refresh token is too old. Sign in again.
    RefreshTokenExpired,
    /// `refresh_token_reused`: the refresh token was already exchanged (often by another
    /// process sharing the same `auth.json`). Reload the stored tokens; if they are
    /// unchanged, sign in again.
    RefreshTokenReused,
    /// `refresh_token_invalidated`: the refresh token was revoked (logout, password
    /// change). Sign in again.
    RefreshTokenInvalidated,
    /// `invalid_grant` (RFC 6749) without a more specific code. Sign in again.
    InvalidGrant,
    /// Any other or missing code.
    Other,
}

impl OAuthErrorKind {
    fn from_code(code: &str) -> Self {
        match code.to_ascii_lowercase().as_str() {
            "refresh_token_expired" => OAuthErrorKind::RefreshTokenExpired,
            "refresh_token_reused" => OAuthErrorKind::RefreshTokenReused,
            "refresh_token_invalidated" => OAuthErrorKind::RefreshTokenInvalidated,
            "invalid_grant" => OAuthErrorKind::InvalidGrant,
            _ => OAuthErrorKind::Other,
        }
    }

    /// A stable snake_case name for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            OAuthErrorKind::RefreshTokenExpired => "refresh_token_expired",
            OAuthErrorKind::RefreshTokenReused => "refresh_token_reused",
            OAuthErrorKind::RefreshTokenInvalidated => "refresh_token_invalidated",
            OAuthErrorKind::InvalidGrant => "invalid_grant",
            OAuthErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for OAuthErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A classified token-endpoint error: the kind and the (sanitized) code, nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OAuthError {
    kind: OAuthErrorKind,
    code: Option<String>,
}

fn sanitize_code(code: &str) -> Option<String> {
    let ok = !code.is_empty()
        && code.len() <= MAX_CODE_LEN
        && code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    ok.then(|| code.to_owned())
}

fn extract_code(body: &[u8]) -> Option<String> {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let from_error = match map.get("error") {
        Some(Value::String(code)) => Some(code.as_str()),
        Some(Value::Object(obj)) => obj
            .get("code")
            .and_then(Value::as_str)
            .or_else(|| obj.get("type").and_then(Value::as_str)),
        _ => None,
    };
    from_error
        .or_else(|| map.get("code").and_then(Value::as_str))
        .and_then(sanitize_code)
}

impl OAuthError {
    /// Classifies a token-endpoint response body (any bytes; never fails).
    ///
    /// ```
    /// use auth_core::{OAuthError, OAuthErrorKind};
    /// let e = OAuthError::from_body(br#"{"error":"refresh_token_expired"}"#);
    /// assert_eq!(e.kind(), OAuthErrorKind::RefreshTokenExpired);
    /// assert_eq!(OAuthError::from_body(b"<html>502</html>").kind(), OAuthErrorKind::Other);
    /// ```
    pub fn from_body(body: &[u8]) -> Self {
        let code = extract_code(body);
        let kind = code
            .as_deref()
            .map_or(OAuthErrorKind::Other, OAuthErrorKind::from_code);
        Self { kind, code }
    }

    /// The kind of error.
    pub fn kind(&self) -> OAuthErrorKind {
        self.kind
    }

    /// The error code as sent by the server, if it had a code-shaped one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// Whether the stored refresh token is unusable and the user must sign in again
    /// (after, for [`OAuthErrorKind::RefreshTokenReused`], checking whether another
    /// process already stored newer tokens).
    ///
    /// ```
    /// use auth_core::OAuthError;
    /// assert!(OAuthError::from_body(br#"{"error":"invalid_grant"}"#).requires_new_login());
    /// assert!(!OAuthError::from_body(br#"{"error":"temporarily_unavailable"}"#).requires_new_login());
    /// ```
    pub fn requires_new_login(&self) -> bool {
        !matches!(self.kind, OAuthErrorKind::Other)
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            OAuthErrorKind::RefreshTokenExpired => {
                f.write_str("the refresh token has expired; sign in again")
            }
            OAuthErrorKind::RefreshTokenReused => f.write_str(
                "the refresh token was already used (possibly by another process); reload the stored tokens or sign in again",
            ),
            OAuthErrorKind::RefreshTokenInvalidated => {
                f.write_str("the refresh token was revoked; sign in again")
            }
            OAuthErrorKind::InvalidGrant => {
                f.write_str("the token endpoint rejected the grant (invalid_grant); sign in again")
            }
            OAuthErrorKind::Other => match &self.code {
                Some(code) => write!(f, "the token endpoint returned error code `{code}`"),
                None => f.write_str("the token endpoint returned an error without a code"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let k = |b: &str| OAuthError::from_body(b.as_bytes()).kind();
        assert_eq!(
            k(r#"{"error":"refresh_token_expired"}"#),
            OAuthErrorKind::RefreshTokenExpired
        );
        assert_eq!(
            k(r#"{"error":{"code":"REFRESH_TOKEN_INVALIDATED","message":"m"}}"#),
            OAuthErrorKind::RefreshTokenInvalidated
        );
        assert_eq!(
            k(r#"{"code":"refresh_token_reused"}"#),
            OAuthErrorKind::RefreshTokenReused
        );
        assert_eq!(
            k(r#"{"error":"invalid_grant","error_description":"x"}"#),
            OAuthErrorKind::InvalidGrant
        );
        assert_eq!(k("<html>502</html>"), OAuthErrorKind::Other);
        assert_eq!(k(""), OAuthErrorKind::Other);
        assert_eq!(k(r#"{"error":42}"#), OAuthErrorKind::Other);
    }

    #[test]
    fn non_code_values_are_dropped() {
        let e = OAuthError::from_body(br#"{"error":"user bob@example.com has no access"}"#);
        assert_eq!(e.code(), None);
        assert!(!e.to_string().contains("bob"));
        let e = OAuthError::from_body(br#"{"error":"temporarily_unavailable"}"#);
        assert_eq!(e.code(), Some("temporarily_unavailable"));
        assert!(!e.requires_new_login());
    }
}
