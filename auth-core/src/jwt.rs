//! JWT claim parsing **without signature verification**.
//!
//! # Security: nothing here verifies a signature
//!
//! These functions decode the payload of a JSON Web Token so a tool can show *which*
//! account a locally stored token belongs to (email, plan, account id) and *when* it
//! expires. They do **not** check the signature, issuer or audience, so the claims are
//! only as trustworthy as the file they were read from. Never use them to make an
//! authorization decision about a token received from someone else.
//!
//! The Codex CLI reads its id token the same way (it decodes the payload and trusts the
//! file), and refuses to load an `auth.json` whose `tokens.id_token` is not a parseable
//! JWT; [`crate::TokenData`] applies the same check when it is deserialized.
//!
//! Input is bounded ([`MAX_JWT_LEN`]) and every failure is a [`JwtError`] that names the
//! part that is wrong and never contains any of the token's text.
//!
//! ```
//! use auth_core::jwt::{self, IdTokenClaims, PlanType};
//!
//! let claims = IdTokenClaims {
//!     email: Some("user@example.com".into()),
//!     exp: Some(1_900_000_000),
//!     chatgpt_plan_type: Some(PlanType::Plus),
//!     chatgpt_account_id: Some("acc-123".into()),
//!     ..IdTokenClaims::default()
//! };
//! // A real-shaped but unsigned token, for tests and demos only.
//! let token = jwt::encode_unsigned_for_testing(&claims);
//! let parsed = jwt::parse_id_token(&token)?;
//! assert_eq!(parsed, claims);
//! assert!(jwt::parse_id_token("not a jwt").is_err());
//! # Ok::<(), auth_core::jwt::JwtError>(())
//! ```

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Largest token accepted, in bytes. Real OpenAI id/access tokens are 1–3 KiB; the bound
/// keeps a hostile file from making us decode megabytes.
pub const MAX_JWT_LEN: usize = 64 * 1024;

/// The claim object OpenAI puts ChatGPT account data under.
pub const OPENAI_AUTH_CLAIM: &str = "https://api.openai.com/auth";
/// The claim object that may carry the email when the top-level `email` is absent.
pub const OPENAI_PROFILE_CLAIM: &str = "https://api.openai.com/profile";

/// Which dot-separated part of a JWT an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwtPart {
    /// The first part (`alg`, `typ`).
    Header,
    /// The second part (the claims).
    Payload,
    /// The third part (the signature).
    Signature,
}

impl fmt::Display for JwtPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JwtPart::Header => "header",
            JwtPart::Payload => "payload",
            JwtPart::Signature => "signature",
        })
    }
}

/// Why a string could not be read as a JWT. Never contains any text of the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// The input is longer than [`MAX_JWT_LEN`].
    #[error("token is {len} bytes, more than the {max} bytes a JWT may have here")]
    TooLarge {
        /// Length of the input in bytes.
        len: usize,
        /// The limit, [`MAX_JWT_LEN`].
        max: usize,
    },
    /// The input is empty.
    #[error("token is empty")]
    Empty,
    /// The input is not three non-empty, dot-separated parts.
    #[error(
        "not a JWT: expected three non-empty dot-separated parts (header.payload.signature), found {parts} part(s){}",
        if *empty_part { " with an empty one" } else { "" }
    )]
    NotAJwt {
        /// How many dot-separated parts the input had.
        parts: usize,
        /// Whether one of the parts was empty.
        empty_part: bool,
    },
    /// A part is not valid base64url.
    #[error("JWT {part} is not valid base64url{}", offset.map(|o| format!(" (bad character at offset {o})")).unwrap_or_default())]
    Base64 {
        /// The part that failed to decode.
        part: JwtPart,
        /// Offset of the first bad character inside that part, when known.
        offset: Option<usize>,
    },
    /// A part decoded but is not the JSON we expected.
    #[error("JWT {part} is not the expected JSON ({kind} at column {column})")]
    Json {
        /// The part that failed to parse.
        part: JwtPart,
        /// What kind of JSON problem (syntax, wrong type or shape, truncated).
        kind: JsonProblem,
        /// Column (1-based byte offset) of the problem in the decoded JSON.
        column: usize,
    },
}

/// The kind of JSON problem in a [`JwtError::Json`] (the message itself is withheld,
/// because serde's messages quote the offending value, which could be a claim).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JsonProblem {
    /// Not well-formed JSON.
    Syntax,
    /// Well-formed, but a field has the wrong type or the object the wrong shape.
    Shape,
    /// The JSON ends early.
    Truncated,
}

impl fmt::Display for JsonProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JsonProblem::Syntax => "syntax error",
            JsonProblem::Shape => "unexpected type or shape",
            JsonProblem::Truncated => "truncated JSON",
        })
    }
}

impl JsonProblem {
    pub(crate) fn of(err: &serde_json::Error) -> Self {
        match err.classify() {
            serde_json::error::Category::Eof => JsonProblem::Truncated,
            serde_json::error::Category::Data => JsonProblem::Shape,
            serde_json::error::Category::Syntax | serde_json::error::Category::Io => {
                JsonProblem::Syntax
            }
        }
    }
}

/// A ChatGPT subscription plan, as found in `chatgpt_plan_type`.
///
/// Unknown values are kept verbatim in [`PlanType::Other`]. Like the Codex CLI,
/// `hc` reads as [`PlanType::Enterprise`] and `education` as [`PlanType::Edu`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PlanType {
    /// `free`
    Free,
    /// `go`
    Go,
    /// `plus`
    Plus,
    /// `pro`
    Pro,
    /// `team`
    Team,
    /// `business`
    Business,
    /// `enterprise` (also read from `hc`)
    Enterprise,
    /// `edu` (also read from `education`)
    Edu,
    /// Any other value, verbatim.
    Other(String),
}

impl PlanType {
    /// Reads a raw claim value (case-insensitive for the known plans).
    pub fn from_claim(raw: &str) -> Self {
        match raw.to_ascii_lowercase().as_str() {
            "free" => PlanType::Free,
            "go" => PlanType::Go,
            "plus" => PlanType::Plus,
            "pro" => PlanType::Pro,
            "team" => PlanType::Team,
            "business" => PlanType::Business,
            "enterprise" | "hc" => PlanType::Enterprise,
            "edu" | "education" => PlanType::Edu,
            _ => PlanType::Other(raw.to_owned()),
        }
    }

    /// The canonical claim value (`"plus"`, …, or the verbatim unknown value).
    pub fn as_str(&self) -> &str {
        match self {
            PlanType::Free => "free",
            PlanType::Go => "go",
            PlanType::Plus => "plus",
            PlanType::Pro => "pro",
            PlanType::Team => "team",
            PlanType::Business => "business",
            PlanType::Enterprise => "enterprise",
            PlanType::Edu => "edu",
            PlanType::Other(s) => s,
        }
    }

    /// Whether this is a workspace (multi-seat) plan: team, business, enterprise or edu.
    pub fn is_workspace(&self) -> bool {
        matches!(
            self,
            PlanType::Team | PlanType::Business | PlanType::Enterprise | PlanType::Edu
        )
    }
}

/// Shows [`PlanType::as_str`] with control and bidi characters escaped
/// ([`crate::terminal::escape_control`]): an unknown plan is text from the token.
impl fmt::Display for PlanType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&crate::terminal::escape_control(self.as_str()), f)
    }
}

impl Serialize for PlanType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for PlanType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|s| PlanType::from_claim(&s))
    }
}

/// The id-token claims a Codex tool cares about, flattened.
///
/// `email` falls back to `https://api.openai.com/profile.email`, and `chatgpt_user_id`
/// to `https://api.openai.com/auth.user_id`, the way the Codex CLI reads them.
/// Expiry checks take `now` as a parameter so they are testable.
///
/// Build one with `..IdTokenClaims::default()` so code keeps compiling if a
/// field is added.
///
/// `Debug` masks the email (`u***@example.com`); the other fields are not secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct IdTokenClaims {
    /// The account's email address. Mask it before printing
    /// ([`crate::redact::mask_email`]).
    pub email: Option<String>,
    /// Expiry, seconds since the Unix epoch (`exp`).
    pub exp: Option<i64>,
    /// Issued-at, seconds since the Unix epoch (`iat`).
    pub iat: Option<i64>,
    /// `https://api.openai.com/auth.chatgpt_plan_type`.
    pub chatgpt_plan_type: Option<PlanType>,
    /// `https://api.openai.com/auth.chatgpt_account_id` (the workspace/account, sent as
    /// the `ChatGPT-Account-Id` header).
    pub chatgpt_account_id: Option<String>,
    /// `https://api.openai.com/auth.chatgpt_user_id` (or `user_id`).
    pub chatgpt_user_id: Option<String>,
}

impl fmt::Debug for IdTokenClaims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdTokenClaims")
            .field(
                "email",
                &self.email.as_deref().map(crate::redact::mask_email),
            )
            .field("exp", &self.exp)
            .field("iat", &self.iat)
            .field("chatgpt_plan_type", &self.chatgpt_plan_type)
            .field("chatgpt_account_id", &self.chatgpt_account_id)
            .field("chatgpt_user_id", &self.chatgpt_user_id)
            .finish()
    }
}

impl IdTokenClaims {
    /// The expiry as a [`SystemTime`], if the token has an `exp` claim.
    ///
    /// `exp` is any `i64` a token carries; for comparisons it is clamped to
    /// 1601-01-01..=9999-12-31T23:59:59Z (never an overflow or a panic). To *show* the
    /// expiry, use [`crate::Timestamp::from_unix_seconds`] on [`IdTokenClaims::exp`], which
    /// says "out of range" instead of showing a clamped date.
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use auth_core::IdTokenClaims;
    /// let far = IdTokenClaims { exp: Some(i64::MAX), ..IdTokenClaims::default() };
    /// assert!(!far.is_expired(SystemTime::now()));
    /// let past = IdTokenClaims { exp: Some(i64::MIN), ..IdTokenClaims::default() };
    /// assert!(past.is_expired(SystemTime::now()));
    /// ```
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.exp.map(unix_to_system_time)
    }

    /// The issue time as a [`SystemTime`], if the token has an `iat` claim (clamped like
    /// [`IdTokenClaims::expires_at`]).
    pub fn issued_at(&self) -> Option<SystemTime> {
        self.iat.map(unix_to_system_time)
    }

    /// Whether the token is expired at `now` (a token without `exp` never expires).
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use auth_core::IdTokenClaims;
    /// let claims = IdTokenClaims { exp: Some(100), ..IdTokenClaims::default() };
    /// assert!(!claims.is_expired(UNIX_EPOCH + Duration::from_secs(99)));
    /// assert!(claims.is_expired(UNIX_EPOCH + Duration::from_secs(100)));
    /// ```
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires_within(now, Duration::ZERO)
    }

    /// Whether the token expires at or before `now + margin` (false without `exp`).
    /// Use a margin of a few minutes to refresh before a request can fail.
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use auth_core::IdTokenClaims;
    /// let claims = IdTokenClaims { exp: Some(1_000), ..IdTokenClaims::default() };
    /// let now = UNIX_EPOCH + Duration::from_secs(800);
    /// assert!(claims.expires_within(now, Duration::from_secs(300)));
    /// assert!(!claims.expires_within(now, Duration::from_secs(60)));
    /// assert!(!IdTokenClaims::default().expires_within(now, Duration::MAX)); // no `exp`
    /// ```
    pub fn expires_within(&self, now: SystemTime, margin: Duration) -> bool {
        match self.expires_at() {
            // A margin that reaches past the end of time covers every expiry.
            Some(exp) => now.checked_add(margin).is_none_or(|limit| exp <= limit),
            None => false,
        }
    }
}

/// Earliest Unix second every platform's [`SystemTime`] holds: 1601-01-01T00:00:00Z
/// (the Windows `FILETIME` epoch).
pub(crate) const MIN_SYSTEM_TIME_SECS: i64 = -11_644_473_600;
/// Latest Unix second kept exactly: 9999-12-31T23:59:59Z, the last instant an RFC 3339
/// timestamp (and [`crate::Timestamp`]) can show.
pub(crate) const MAX_SYSTEM_TIME_SECS: i64 = 253_402_300_799;

/// A claim's Unix seconds as a [`SystemTime`] for comparisons, clamped to
/// 1601-01-01..=9999-12-31T23:59:59Z so that no value (even `i64::MIN` or `i64::MAX`)
/// overflows on any platform: a far-future `exp` stays far in the future, a far-past one
/// stays expired. The clamped value is not for display; use
/// [`crate::Timestamp::from_unix_seconds`], which refuses out-of-range values.
pub(crate) fn unix_to_system_time(secs: i64) -> SystemTime {
    let secs = secs.clamp(MIN_SYSTEM_TIME_SECS, MAX_SYSTEM_TIME_SECS);
    let magnitude = Duration::from_secs(secs.unsigned_abs());
    let exact = if secs >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    };
    // ok: every platform Rust supports holds this range; the fallback is never taken.
    exact.unwrap_or(UNIX_EPOCH)
}

// Wire shape of the id-token payload (private: the public type is flat).
#[derive(Deserialize, Serialize, Default)]
struct WireClaims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
    #[serde(
        rename = "https://api.openai.com/profile",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    profile: Option<WireProfile>,
    #[serde(
        rename = "https://api.openai.com/auth",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    auth: Option<WireAuth>,
}

#[derive(Deserialize, Serialize)]
struct WireProfile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<String>,
}

#[derive(Deserialize, Serialize, Default)]
struct WireAuth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chatgpt_plan_type: Option<PlanType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chatgpt_user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chatgpt_account_id: Option<String>,
}

/// Splits a compact JWS into its three parts, checking size and shape only.
fn split(token: &str) -> Result<[&str; 3], JwtError> {
    if token.len() > MAX_JWT_LEN {
        return Err(JwtError::TooLarge {
            len: token.len(),
            max: MAX_JWT_LEN,
        });
    }
    if token.is_empty() {
        return Err(JwtError::Empty);
    }
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) if !h.is_empty() && !p.is_empty() && !s.is_empty() => {
            Ok([h, p, s])
        }
        _ => {
            let parts_count = token.split('.').count();
            Err(JwtError::NotAJwt {
                parts: parts_count,
                empty_part: token.split('.').any(str::is_empty),
            })
        }
    }
}

/// Decodes base64url with or without padding.
fn decode_part(part: JwtPart, text: &str) -> Result<Vec<u8>, JwtError> {
    let engine = if text.ends_with('=') {
        &URL_SAFE
    } else {
        &URL_SAFE_NO_PAD
    };
    engine.decode(text).map_err(|err| {
        let offset = match err {
            base64::DecodeError::InvalidByte(offset, _) => Some(offset),
            base64::DecodeError::InvalidLastSymbol(offset, _) => Some(offset),
            _ => None,
        };
        JwtError::Base64 { part, offset }
    })
}

fn parse_json<T: DeserializeOwned>(part: JwtPart, bytes: &[u8]) -> Result<T, JwtError> {
    serde_json::from_slice(bytes).map_err(|err| JwtError::Json {
        part,
        kind: JsonProblem::of(&err),
        column: err.column(),
    })
}

/// Decodes the payload of `token` into any `T` **without verifying the signature**.
///
/// Checks the size bound and the `header.payload.signature` shape (three non-empty
/// parts), then base64url-decodes (padding optional) and parses the payload.
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct Sub { sub: String }
/// // {"alg":"none"} . {"sub":"u1"} . sig
/// let sub: Sub = auth_core::jwt::decode_payload("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1MSJ9.c2ln")?;
/// assert_eq!(sub.sub, "u1");
/// # Ok::<(), auth_core::jwt::JwtError>(())
/// ```
pub fn decode_payload<T: DeserializeOwned>(token: &str) -> Result<T, JwtError> {
    let [_, payload, _] = split(token)?;
    let bytes = decode_part(JwtPart::Payload, payload)?;
    parse_json(JwtPart::Payload, &bytes)
}

/// Decodes the header of `token` (e.g. to read `alg` or `kid`) **without verifying
/// anything**.
///
/// ```
/// let header = auth_core::jwt::decode_header("eyJhbGciOiJub25lIn0.e30.c2ln")?;
/// assert_eq!(header["alg"], "none");
/// # Ok::<(), auth_core::JwtError>(())
/// ```
pub fn decode_header(token: &str) -> Result<serde_json::Map<String, serde_json::Value>, JwtError> {
    let [header, _, _] = split(token)?;
    let bytes = decode_part(JwtPart::Header, header)?;
    parse_json(JwtPart::Header, &bytes)
}

/// Parses an OpenAI id token's claims **without verifying the signature**.
///
/// Accepts exactly what the Codex CLI accepts for `tokens.id_token` (a three-part token
/// whose payload is a JSON object with optional, correctly typed claims), except that
/// padded base64url is accepted too.
///
/// ```
/// use auth_core::jwt::{parse_id_token, JwtError};
/// // {"alg":"none"} . {"email":"a@b.c","exp":1} . sig
/// let claims = parse_id_token("eyJhbGciOiJub25lIn0.eyJlbWFpbCI6ImFAYi5jIiwiZXhwIjoxfQ.c2ln")?;
/// assert_eq!(claims.email.as_deref(), Some("a@b.c"));
/// assert_eq!(claims.exp, Some(1));
/// assert!(matches!(parse_id_token("nope"), Err(JwtError::NotAJwt { .. })));
/// # Ok::<(), JwtError>(())
/// ```
pub fn parse_id_token(token: &str) -> Result<IdTokenClaims, JwtError> {
    let wire: WireClaims = decode_payload(token)?;
    let (plan, account, user) = match wire.auth {
        Some(auth) => (
            auth.chatgpt_plan_type,
            auth.chatgpt_account_id,
            auth.chatgpt_user_id.or(auth.user_id),
        ),
        None => (None, None, None),
    };
    Ok(IdTokenClaims {
        email: wire.email.or_else(|| wire.profile.and_then(|p| p.email)),
        exp: wire.exp,
        iat: wire.iat,
        chatgpt_plan_type: plan,
        chatgpt_account_id: account,
        chatgpt_user_id: user,
    })
}

/// Reads just the `exp` claim of any JWT (e.g. an access token), **unverified**.
/// The value is clamped like [`IdTokenClaims::expires_at`]'s.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// let token = auth_core::jwt::encode_unsigned_json_for_testing(&serde_json::json!({"exp": 60}));
/// assert_eq!(auth_core::jwt::parse_expiry(&token)?, Some(UNIX_EPOCH + Duration::from_secs(60)));
/// # Ok::<(), auth_core::JwtError>(())
/// ```
pub fn parse_expiry(token: &str) -> Result<Option<SystemTime>, JwtError> {
    #[derive(Deserialize)]
    struct Exp {
        #[serde(default)]
        exp: Option<i64>,
    }
    let exp: Exp = decode_payload(token)?;
    Ok(exp.exp.map(unix_to_system_time))
}

fn encode_with_payload(payload: &[u8]) -> String {
    // Shaped like an OpenAI token (RS256 header, three parts) so real readers accept it,
    // but the "signature" is a fixed marker that verifies against nothing.
    const HEADER: &str = r#"{"alg":"RS256","kid":"synthetic-test-only","typ":"JWT"}"#;
    const SIGNATURE: &str = "synthetic-unsigned-test-token-signature";
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(SIGNATURE)
    )
}

/// Builds a **fake, unsigned** but real-shaped id token from `claims` —
/// **for tests and demos only**.
///
/// The result has an `RS256` header, the claims in OpenAI's layout
/// (`email`, `exp`, `iat`, and the `https://api.openai.com/auth` object) and a dummy
/// signature, so the Codex CLI and [`parse_id_token`] accept it as an id token.
/// Any server that verifies signatures rejects it. Never present it as a real credential.
pub fn encode_unsigned_for_testing(claims: &IdTokenClaims) -> String {
    let auth = if claims.chatgpt_plan_type.is_some()
        || claims.chatgpt_account_id.is_some()
        || claims.chatgpt_user_id.is_some()
    {
        Some(WireAuth {
            chatgpt_plan_type: claims.chatgpt_plan_type.clone(),
            chatgpt_user_id: claims.chatgpt_user_id.clone(),
            user_id: None,
            chatgpt_account_id: claims.chatgpt_account_id.clone(),
        })
    } else {
        None
    };
    let wire = WireClaims {
        email: claims.email.clone(),
        exp: claims.exp,
        iat: claims.iat,
        profile: None,
        auth,
    };
    // ok: serializing a struct of strings and integers into a Vec cannot fail.
    let payload = serde_json::to_vec(&wire).unwrap_or_default();
    encode_with_payload(&payload)
}

/// Like [`encode_unsigned_for_testing`] but with an arbitrary JSON payload, to build
/// odd or hostile tokens in tests — **for tests and demos only**.
///
/// ```
/// use auth_core::jwt;
/// let token = jwt::encode_unsigned_json_for_testing(&serde_json::json!({"email": 5}));
/// assert!(jwt::parse_id_token(&token).is_err()); // wrongly typed claim
/// ```
pub fn encode_unsigned_json_for_testing(payload: &serde_json::Value) -> String {
    encode_with_payload(payload.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn parses_openai_layout() {
        let payload = r#"{"email":"a@b.c","exp":100,"iat":50,"https://api.openai.com/auth":{"chatgpt_plan_type":"pro","chatgpt_account_id":"acc","user_id":"u"}}"#;
        let tok = format!("{}.{}.{}", b64("{}"), b64(payload), b64("s"));
        let c = parse_id_token(&tok).unwrap();
        assert_eq!(c.email.as_deref(), Some("a@b.c"));
        assert_eq!(c.exp, Some(100));
        assert_eq!(c.iat, Some(50));
        assert_eq!(c.chatgpt_plan_type, Some(PlanType::Pro));
        assert_eq!(c.chatgpt_account_id.as_deref(), Some("acc"));
        assert_eq!(c.chatgpt_user_id.as_deref(), Some("u"));
    }

    #[test]
    fn email_falls_back_to_profile() {
        let payload = r#"{"https://api.openai.com/profile":{"email":"p@x.y"}}"#;
        let tok = format!("{}.{}.{}", b64("{}"), b64(payload), b64("s"));
        assert_eq!(
            parse_id_token(&tok).unwrap().email.as_deref(),
            Some("p@x.y")
        );
    }

    #[test]
    fn accepts_padded_base64() {
        // 4 bytes -> "e30=" style padding needed
        let payload = URL_SAFE.encode(r#"{"exp":12}"#);
        assert!(payload.ends_with('='));
        let tok = format!("{}.{}.{}", b64("{}"), payload, b64("s"));
        assert_eq!(parse_id_token(&tok).unwrap().exp, Some(12));
    }

    #[test]
    fn shape_errors() {
        assert_eq!(
            parse_id_token("abc").unwrap_err(),
            JwtError::NotAJwt {
                parts: 1,
                empty_part: false
            }
        );
        assert_eq!(
            parse_id_token("a..c").unwrap_err(),
            JwtError::NotAJwt {
                parts: 3,
                empty_part: true
            }
        );
        assert!(matches!(
            parse_id_token("a.b.c.d").unwrap_err(),
            JwtError::NotAJwt { parts: 4, .. }
        ));
        let big = "a".repeat(MAX_JWT_LEN + 1);
        assert!(matches!(
            parse_id_token(&big).unwrap_err(),
            JwtError::TooLarge { .. }
        ));
    }

    #[test]
    fn base64_and_json_errors_do_not_leak() {
        let err = parse_id_token("aaa.!!secret!!.ccc").unwrap_err();
        assert!(matches!(
            err,
            JwtError::Base64 {
                part: JwtPart::Payload,
                ..
            }
        ));
        assert!(!err.to_string().contains("secret"));

        let tok = format!("{}.{}.{}", b64("{}"), b64(r#"{"email":12345}"#), b64("s"));
        let err = parse_id_token(&tok).unwrap_err();
        assert!(matches!(
            err,
            JwtError::Json {
                kind: JsonProblem::Shape,
                ..
            }
        ));
        assert!(!err.to_string().contains("12345"), "{err}");

        let tok = format!("{}.{}.{}", b64("{}"), b64(r#"{"email":"#), b64("s"));
        assert!(matches!(
            parse_id_token(&tok).unwrap_err(),
            JwtError::Json {
                kind: JsonProblem::Truncated,
                ..
            }
        ));
    }

    #[test]
    fn synthetic_token_round_trips_and_has_header() {
        let claims = IdTokenClaims {
            email: Some("x@y.z".into()),
            exp: Some(2_000_000_000),
            iat: Some(1_999_000_000),
            chatgpt_plan_type: Some(PlanType::Other("weird".into())),
            chatgpt_account_id: Some("acc".into()),
            chatgpt_user_id: Some("user".into()),
        };
        let tok = encode_unsigned_for_testing(&claims);
        assert_eq!(parse_id_token(&tok).unwrap(), claims);
        assert_eq!(decode_header(&tok).unwrap()["alg"], "RS256");
        assert_eq!(
            parse_expiry(&tok).unwrap(),
            Some(unix_to_system_time(2_000_000_000))
        );
    }

    #[test]
    fn expiry_uses_now() {
        let c = IdTokenClaims {
            exp: Some(1000),
            ..Default::default()
        };
        assert!(!c.is_expired(unix_to_system_time(999)));
        assert!(c.is_expired(unix_to_system_time(1000)));
        assert!(c.expires_within(unix_to_system_time(990), Duration::from_secs(10)));
        assert!(!c.expires_within(unix_to_system_time(989), Duration::from_secs(10)));
        assert!(!IdTokenClaims::default().is_expired(SystemTime::now()));
        assert_eq!(unix_to_system_time(-5), UNIX_EPOCH - Duration::from_secs(5));
    }

    #[test]
    fn extreme_exp_values_clamp_instead_of_wrapping() {
        let max = unix_to_system_time(MAX_SYSTEM_TIME_SECS);
        let min = unix_to_system_time(MIN_SYSTEM_TIME_SECS);
        assert_eq!(unix_to_system_time(i64::MAX), max);
        assert_eq!(unix_to_system_time(i64::MIN), min);
        let now = SystemTime::now();
        for (exp, expired) in [
            (i64::MIN, true),
            (i64::MIN + 1, true),
            (-1, true),
            (i64::MAX, false),
        ] {
            let c = IdTokenClaims {
                exp: Some(exp),
                ..Default::default()
            };
            assert_eq!(c.is_expired(now), expired, "{exp}");
            assert!(c.expires_within(now, Duration::MAX), "{exp}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_exp_is_ordered_like_the_number(a in proptest::num::i64::ANY, b in proptest::num::i64::ANY) {
            let (ta, tb) = (unix_to_system_time(a), unix_to_system_time(b));
            // Monotonic: never wraps, never falls back to 1970.
            if a <= b {
                proptest::prop_assert!(ta <= tb);
            }
            let now = SystemTime::now();
            let c = IdTokenClaims { exp: Some(a), iat: Some(b), ..Default::default() };
            let _ = (c.is_expired(now), c.expires_within(now, Duration::MAX), c.issued_at());
            let token = encode_unsigned_for_testing(&c);
            proptest::prop_assert_eq!(parse_id_token(&token).map(|p| p.exp), Ok(Some(a)));
            proptest::prop_assert_eq!(parse_expiry(&token), Ok(Some(ta)));
        }
    }

    #[test]
    fn plan_aliases() {
        assert_eq!(PlanType::from_claim("hc"), PlanType::Enterprise);
        assert_eq!(PlanType::from_claim("Education"), PlanType::Edu);
        assert!(PlanType::Team.is_workspace());
        assert!(!PlanType::Plus.is_workspace());
        assert_eq!(PlanType::from_claim("xyz").to_string(), "xyz");
        assert_eq!(
            PlanType::from_claim("pro\x1b[2J\r\n").to_string(),
            "pro\\x1b[2J\\x0d\\x0a"
        );
    }

    #[test]
    fn claims_debug_masks_the_email() {
        let claims = IdTokenClaims {
            email: Some("someone.private@example.com".into()),
            chatgpt_account_id: Some("acc-1".into()),
            ..IdTokenClaims::default()
        };
        let dbg = format!("{claims:?}");
        assert!(!dbg.contains("someone.private"), "{dbg}");
        assert!(
            dbg.contains("s***@example.com") && dbg.contains("acc-1"),
            "{dbg}"
        );
    }
}
