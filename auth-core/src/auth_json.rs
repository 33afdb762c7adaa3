//! The Codex CLI's `auth.json` document: [`AuthDocument`], [`TokenData`], [`AuthMode`],
//! [`Timestamp`].
//!
//! The shape follows `codex-rs/login` (`AuthDotJson`) and what Codex CLI 0.169 writes:
//!
//! | field | when written |
//! |---|---|
//! | `auth_mode` | when set (`"apikey"`, `"chatgpt"`, or any other string, kept verbatim) |
//! | `OPENAI_API_KEY` | always; `null` when there is no key |
//! | `tokens` | when set: `id_token`, `access_token`, `refresh_token`, `account_id` (always, may be `null`) |
//! | `last_refresh` | when set; RFC 3339, the exact text read is written back |
//! | `agent_identity` | when set |
//! | `personal_access_token` | when set |
//! | anything else | kept from the file that was read, written after the known fields |
//!
//! [`AuthDocument::to_json_pretty`] produces the same bytes the CLI writes
//! (`serde_json::to_string_pretty`: two-space indent, no trailing newline).
//!
//! ```
//! use auth_core::{AuthDocument, AuthMode, Secret};
//!
//! let doc = AuthDocument::api_key(Secret::new("sk-test".into()));
//! let text = doc.to_json_pretty();
//! assert_eq!(text, "{\n  \"auth_mode\": \"apikey\",\n  \"OPENAI_API_KEY\": \"sk-test\"\n}");
//! let back = AuthDocument::from_json_str(&text)?;
//! assert_eq!(back.auth_mode, Some(AuthMode::ApiKey));
//! assert_eq!(back, doc);
//! # Ok::<(), auth_core::AuthJsonError>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::jwt::{self, IdTokenClaims, JwtError};
use crate::secret::Secret;

/// Largest `auth.json` accepted by [`AuthDocument::from_json_slice`] (1 MiB). Real files
/// are a few KiB.
pub const MAX_AUTH_JSON_LEN: usize = 1024 * 1024;

/// How old `last_refresh` may get before [`AuthDocument::refresh_due`] says to refresh
/// tokens whose access token has no readable expiry (8 days, as the Codex CLI).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(8 * 24 * 60 * 60);

/// How the Codex CLI authenticates, as stored in `auth_mode`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthMode {
    /// `"apikey"`: requests use `OPENAI_API_KEY`.
    ApiKey,
    /// `"chatgpt"`: requests use the ChatGPT OAuth tokens.
    Chatgpt,
    /// Any other value a newer CLI may write, kept verbatim so it round-trips.
    Other(String),
}

impl AuthMode {
    /// The value as stored in `auth.json`.
    pub fn as_str(&self) -> &str {
        match self {
            AuthMode::ApiKey => "apikey",
            AuthMode::Chatgpt => "chatgpt",
            AuthMode::Other(s) => s,
        }
    }

    /// Reads a stored value; unknown values become [`AuthMode::Other`].
    pub fn from_stored(value: &str) -> Self {
        match value {
            "apikey" => AuthMode::ApiKey,
            "chatgpt" => AuthMode::Chatgpt,
            other => AuthMode::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for AuthMode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AuthMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|s| AuthMode::from_stored(&s))
    }
}

/// An RFC 3339 instant that remembers the exact text it was read from, so a
/// read-modify-write of `auth.json` does not reformat `last_refresh`.
///
/// ```
/// use auth_core::Timestamp;
/// let t: Timestamp = "2025-08-06T20:41:36.232376Z".parse()?;
/// assert_eq!(t.as_str(), "2025-08-06T20:41:36.232376Z");
/// assert_eq!(t.unix_seconds(), 1_754_512_896);
/// let later = Timestamp::from_system_time(std::time::UNIX_EPOCH);
/// assert_eq!(later.as_str(), "1970-01-01T00:00:00Z");
/// # Ok::<(), auth_core::TimestampError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Timestamp {
    text: String,
    /// The instant, exact for every date RFC 3339 can write (seconds since 1970 and the
    /// signed fraction, as `jiff` splits them).
    seconds: i64,
    nanos: i32,
}

/// A value that cannot be a [`Timestamp`]: text that is not an RFC 3339 timestamp with
/// an offset, or an instant outside the years -9999..=9999 that RFC 3339 can write
/// ("invalid date"). Carries no input text (a number of seconds at most).
///
/// ```
/// use auth_core::Timestamp;
/// let err = Timestamp::from_unix_seconds(i64::MIN).unwrap_err();
/// assert!(err.is_out_of_range());
/// assert!(err.to_string().contains("invalid date"));
/// assert!(!"nope".parse::<Timestamp>().unwrap_err().is_out_of_range());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct TimestampError {
    problem: TimestampProblem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimestampProblem {
    NotRfc3339,
    /// Unix seconds outside the representable range (`None`: a `SystemTime` that is).
    OutOfRange(Option<i64>),
}

impl fmt::Display for TimestampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problem {
            TimestampProblem::NotRfc3339 => f.write_str(
                "not an RFC 3339 timestamp with a UTC offset (like 2025-01-31T12:00:00Z)",
            ),
            TimestampProblem::OutOfRange(secs) => {
                f.write_str("invalid date: ")?;
                if let Some(secs) = secs {
                    write!(f, "{secs} seconds since 1970 is ")?;
                }
                f.write_str("outside the years -9999 to 9999 that a timestamp can show")
            }
        }
    }
}

impl TimestampError {
    /// Whether the value was an instant outside the representable years ("invalid
    /// date") rather than unreadable text.
    pub fn is_out_of_range(&self) -> bool {
        matches!(self.problem, TimestampProblem::OutOfRange(_))
    }
}

impl Timestamp {
    /// The current time, formatted like the Codex CLI formats it.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// Formats `time` as RFC 3339 in UTC with 0, 3, 6 or 9 fractional digits (the form
    /// the Codex CLI writes).
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use auth_core::Timestamp;
    /// let t = Timestamp::from_system_time(UNIX_EPOCH + Duration::from_millis(1_700_000_000_250));
    /// assert_eq!(t.as_str(), "2023-11-14T22:13:20.250Z");
    /// assert_eq!(t.unix_seconds(), 1_700_000_000);
    /// ```
    ///
    /// A time outside the years -9999..=9999 saturates to the nearest end of that range
    /// (never to 1970); use [`Timestamp::try_from_system_time`] to refuse it instead.
    pub fn from_system_time(time: SystemTime) -> Self {
        let instant = jiff::Timestamp::try_from(time).unwrap_or_else(|_| {
            if time >= UNIX_EPOCH {
                jiff::Timestamp::MAX
            } else {
                jiff::Timestamp::MIN
            }
        });
        Self::from_instant(instant)
    }

    /// Like [`Timestamp::from_system_time`], but a time outside the years -9999..=9999 is
    /// an error ("invalid date") instead of saturating.
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use auth_core::Timestamp;
    /// assert!(Timestamp::try_from_system_time(UNIX_EPOCH).is_ok());
    /// let far = UNIX_EPOCH + Duration::from_secs(400_000_000_000); // year ~14645
    /// # if let Some(far) = UNIX_EPOCH.checked_add(Duration::from_secs(400_000_000_000)) {
    /// assert!(Timestamp::try_from_system_time(far).unwrap_err().is_out_of_range());
    /// # }
    /// ```
    pub fn try_from_system_time(time: SystemTime) -> Result<Self, TimestampError> {
        jiff::Timestamp::try_from(time)
            .map(Self::from_instant)
            .map_err(|_| TimestampError {
                problem: TimestampProblem::OutOfRange(None),
            })
    }

    /// The instant `secs` seconds after the Unix epoch (negative: before), for showing
    /// a claim such as `exp`, `iat` or `auth_time`. Any `i64` is accepted; one outside
    /// the years -9999..=9999 is an error that says "invalid date" (never a wrapped or
    /// 1970 date, never a panic).
    ///
    /// ```
    /// use auth_core::Timestamp;
    /// assert_eq!(Timestamp::from_unix_seconds(1_700_000_000)?.as_str(), "2023-11-14T22:13:20Z");
    /// assert_eq!(Timestamp::from_unix_seconds(-1)?.as_str(), "1969-12-31T23:59:59Z");
    /// // The last second of 9999 can be shown; 10000-01-01T00:00:00Z and i64::MIN cannot.
    /// assert_eq!(Timestamp::from_unix_seconds(253_402_300_799)?.as_str(), "9999-12-31T23:59:59Z");
    /// assert!(Timestamp::from_unix_seconds(253_402_300_800).is_err());
    /// assert!(Timestamp::from_unix_seconds(i64::MIN).is_err());
    /// # Ok::<(), auth_core::TimestampError>(())
    /// ```
    pub fn from_unix_seconds(secs: i64) -> Result<Self, TimestampError> {
        if let Ok(instant) = jiff::Timestamp::from_second(secs) {
            return Ok(Self::from_instant(instant));
        }
        // The last day of 9999 (and the first of -9999) is past jiff's instants but still a
        // date: write it from civil time, keep the nearest instant for comparisons.
        let civil = jiff::civil::date(1970, 1, 1)
            .to_datetime(jiff::civil::Time::midnight())
            .checked_add(jiff::SignedDuration::from_secs(secs))
            .map_err(|_| TimestampError {
                problem: TimestampProblem::OutOfRange(Some(secs)),
            })?;
        Ok(Self {
            text: format!("{civil}Z"),
            seconds: secs,
            nanos: 0,
        })
    }

    fn from_instant(instant: jiff::Timestamp) -> Self {
        let whole = jiff::Timestamp::from_second(instant.as_second()).unwrap_or(instant);
        // jiff prints whole seconds as "YYYY-MM-DDTHH:MM:SSZ".
        let base = whole.to_string();
        let base = base.strip_suffix('Z').unwrap_or(&base);
        let nanos = instant.subsec_nanosecond().unsigned_abs();
        let frac = if nanos == 0 {
            String::new()
        } else if nanos.is_multiple_of(1_000_000) {
            format!(".{:03}", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            format!(".{:06}", nanos / 1_000)
        } else {
            format!(".{nanos:09}")
        };
        Self {
            text: format!("{base}{frac}Z"),
            seconds: instant.as_second(),
            nanos: instant.subsec_nanosecond(),
        }
    }

    /// The text as read (or as formatted).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Seconds since the Unix epoch (negative before 1970).
    pub fn unix_seconds(&self) -> i64 {
        self.seconds
    }

    /// The instant as a [`SystemTime`], for comparisons: an instant before
    /// 1601-01-01 (which not every platform's `SystemTime` holds) is clamped to it.
    pub fn to_system_time(&self) -> SystemTime {
        let secs = self.seconds;
        let nanos = self.nanos;
        let base = jwt::unix_to_system_time(secs);
        if nanos >= 0 {
            base.checked_add(Duration::from_nanos(nanos.unsigned_abs().into()))
                .unwrap_or(base)
        } else {
            base.checked_sub(Duration::from_nanos(nanos.unsigned_abs().into()))
                .unwrap_or(UNIX_EPOCH)
        }
    }
}

/// Saturating, as [`Timestamp::from_system_time`]. With `rotation_policy::Timestamp`
/// (milliseconds) the conversion goes through [`SystemTime`], which both convert to and from:
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// let wall = UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
/// let t = auth_core::Timestamp::from(wall);
/// assert_eq!(SystemTime::from(&t), wall);
/// assert_eq!(SystemTime::from(t), wall);
/// ```
impl From<SystemTime> for Timestamp {
    fn from(time: SystemTime) -> Self {
        Self::from_system_time(time)
    }
}

impl From<&Timestamp> for SystemTime {
    fn from(t: &Timestamp) -> Self {
        t.to_system_time()
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> Self {
        t.to_system_time()
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (seconds, nanos) = match s.parse::<jiff::Timestamp>() {
            Ok(instant) => (instant.as_second(), instant.subsec_nanosecond()),
            Err(_) => edge_of_range(s).ok_or(TimestampError {
                problem: TimestampProblem::NotRfc3339,
            })?,
        };
        Ok(Self {
            text: s.to_owned(),
            seconds,
            nanos,
        })
    }
}

/// jiff's instants stop about a day short of the years RFC 3339 can write (its range leaves
/// room for any UTC offset), so `9999-12-31T23:59:59Z` — which the Codex CLI accepts — is not
/// a jiff instant. For such text (a date and time with an offset in year 9999 or -9999) the
/// seconds since 1970 are computed from civil time instead: exact, the text kept as written.
fn edge_of_range(text: &str) -> Option<(i64, i32)> {
    use jiff::fmt::temporal::{Pieces, PiecesOffset};
    let pieces = Pieces::parse(text).ok()?;
    if !matches!(pieces.date().year(), 9999 | -9999) {
        return None;
    }
    let offset = match pieces.offset()? {
        PiecesOffset::Zulu => 0,
        PiecesOffset::Numeric(numeric) => i64::from(numeric.offset().seconds()),
        _ => return None,
    };
    let civil = pieces.date().to_datetime(pieces.time()?);
    let since_epoch = jiff::civil::date(1970, 1, 1)
        .to_datetime(jiff::civil::Time::midnight())
        .duration_until(civil);
    Some((
        since_epoch.as_secs().checked_sub(offset)?,
        since_epoch.subsec_nanos(),
    ))
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({:?})", self.text)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The ChatGPT OAuth tokens under `tokens` in `auth.json`.
///
/// The Codex CLI refuses to load an `auth.json` whose `tokens.id_token` is not a
/// parseable JWT (see `codex-rs/login/src/token_data.rs`), so deserializing this type
/// checks the same thing and fails with a message naming the field, never the token.
/// Build values with [`TokenData::new`], which checks it too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenData {
    /// The raw id token (a JWT; its claims say who the account is).
    #[serde(deserialize_with = "deserialize_id_token")]
    pub id_token: Secret,
    /// The access token sent as `Authorization: Bearer …`.
    pub access_token: Secret,
    /// The refresh token used to obtain new tokens.
    pub refresh_token: Secret,
    /// The ChatGPT account id (sent as `ChatGPT-Account-Id`). Always written, `null`
    /// when absent, as the CLI does.
    pub account_id: Option<String>,
}

fn deserialize_id_token<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
    let token = Secret::deserialize(deserializer)?;
    jwt::parse_id_token(token.expose()).map_err(|err| {
        serde::de::Error::custom(format_args!(
            "id_token is not a usable JWT ({err}); the Codex CLI refuses such a file"
        ))
    })?;
    Ok(token)
}

impl TokenData {
    /// Builds token data, checking that `id_token` is a parseable JWT (as the CLI
    /// requires).
    ///
    /// ```
    /// use auth_core::{TokenData, jwt};
    /// let id = jwt::encode_unsigned_for_testing(&Default::default());
    /// assert!(TokenData::new(id.into(), "at".into(), "rt".into(), None).is_ok());
    /// assert!(TokenData::new("garbage".into(), "at".into(), "rt".into(), None).is_err());
    /// ```
    pub fn new(
        id_token: Secret,
        access_token: Secret,
        refresh_token: Secret,
        account_id: Option<String>,
    ) -> Result<Self, JwtError> {
        jwt::parse_id_token(id_token.expose())?;
        Ok(Self {
            id_token,
            access_token,
            refresh_token,
            account_id,
        })
    }

    /// The id token's claims (email, plan, account and user ids, expiry), **unverified**
    /// (see [`crate::jwt`]).
    pub fn id_token_claims(&self) -> Result<IdTokenClaims, JwtError> {
        jwt::parse_id_token(self.id_token.expose())
    }

    /// The access token's `exp`, if it is a JWT with one (**unverified**).
    pub fn access_token_expires_at(&self) -> Result<Option<SystemTime>, JwtError> {
        jwt::parse_expiry(self.access_token.expose())
    }

    /// The account id to send as `ChatGPT-Account-Id`: `account_id`, else the id
    /// token's `chatgpt_account_id`.
    ///
    /// ```
    /// use auth_core::{IdTokenClaims, TokenData, jwt};
    /// let id = jwt::encode_unsigned_for_testing(&IdTokenClaims {
    ///     chatgpt_account_id: Some("from-claims".into()),
    ///     ..IdTokenClaims::default()
    /// });
    /// let mut tokens = TokenData::new(id.into(), "at".into(), "rt".into(), None)?;
    /// assert_eq!(tokens.effective_account_id().as_deref(), Some("from-claims"));
    /// tokens.account_id = Some("stored".into());
    /// assert_eq!(tokens.effective_account_id().as_deref(), Some("stored"));
    /// # Ok::<(), auth_core::JwtError>(())
    /// ```
    pub fn effective_account_id(&self) -> Option<String> {
        self.account_id.clone().or_else(|| {
            self.id_token_claims()
                .ok()
                .and_then(|c| c.chatgpt_account_id)
        })
    }
}

/// The whole `$CODEX_HOME/auth.json` document.
///
/// Unknown top-level fields are kept in [`AuthDocument::extra`] and written back after
/// the known ones, so a newer CLI's data survives a read-modify-write by an older tool.
/// `Debug` shows only the keys of `extra` (their values may be secrets).
#[derive(Clone, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuthDocument {
    /// `auth_mode`; omitted when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_mode: Option<AuthMode>,
    /// `OPENAI_API_KEY`; always written, `null` when `None`.
    #[serde(rename = "OPENAI_API_KEY", default)]
    pub openai_api_key: Option<Secret>,
    /// `tokens`; omitted when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenData>,
    /// `last_refresh`; omitted when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh: Option<Timestamp>,
    /// `agent_identity` (a JWT carrying a private key: a secret); omitted when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_identity: Option<Secret>,
    /// `personal_access_token`; omitted when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal_access_token: Option<Secret>,
    /// Fields this crate does not know, kept verbatim and in order. Do not insert the
    /// names of the known fields here (they would be written twice).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl fmt::Debug for AuthDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let extra_keys: Vec<&String> = self.extra.keys().collect();
        f.debug_struct("AuthDocument")
            .field("auth_mode", &self.auth_mode)
            .field("openai_api_key", &self.openai_api_key)
            .field("tokens", &self.tokens)
            .field("last_refresh", &self.last_refresh)
            .field("agent_identity", &self.agent_identity)
            .field("personal_access_token", &self.personal_access_token)
            .field("extra_keys", &extra_keys)
            .finish()
    }
}

/// Why an `auth.json` text could not be read. Never contains secret values: serde's
/// messages are kept but any quoted value in them is replaced by `"…"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthJsonError {
    /// The input is larger than [`MAX_AUTH_JSON_LEN`].
    #[error(
        "auth.json is {len} bytes, more than the {max} bytes allowed; it is not a Codex auth file"
    )]
    TooLarge {
        /// Input length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The input is empty or only whitespace.
    #[error("auth.json is empty; it holds no login (sign in again or restore it from a backup)")]
    Empty,
    /// The input ends early (e.g. a file cut off by a crash or a full disk).
    #[error("auth.json is truncated: the JSON ends early at line {line}, column {column}")]
    Truncated {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// The input is not well-formed JSON.
    #[error(
        "auth.json is not valid JSON at line {line}, column {column}: {}",
        crate::terminal::escape_control(detail)
    )]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong (values withheld).
        detail: String,
    },
    /// Well-formed JSON, but a field has the wrong type or value.
    #[error(
        "auth.json field `{}` is invalid at line {line}, column {column}: {}",
        crate::terminal::escape_control(field),
        crate::terminal::escape_control(detail)
    )]
    Field {
        /// Dotted path of the field (e.g. `tokens.id_token`), `(top level)` for the
        /// document itself.
        field: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong (values withheld).
        detail: String,
    },
}

/// Replaces every double-quoted string in a serde message with `"…"` so values never
/// reach an error message.
pub(crate) fn withhold_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        if c == '"' {
            out.push_str("\"…\"");
            let mut escaped = false;
            for inner in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if inner == '\\' {
                    escaped = true;
                } else if inner == '"' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    // serde_json appends " at line L column C"; the variants carry those separately.
    match out.rfind(" at line ") {
        Some(idx) => out[..idx].to_owned(),
        None => out,
    }
}

impl AuthDocument {
    /// An API-key login, as `codex login --with-api-key` writes it.
    ///
    /// ```
    /// use auth_core::{AuthDocument, AuthMode, Secret};
    /// let doc = AuthDocument::api_key(Secret::from("sk-example"));
    /// assert_eq!(doc.effective_mode(), Some(AuthMode::ApiKey));
    /// assert!(doc.to_json_pretty().contains(r#""OPENAI_API_KEY": "sk-example""#));
    /// assert!(!format!("{doc:?}").contains("sk-example"));
    /// ```
    pub fn api_key(key: Secret) -> Self {
        Self {
            auth_mode: Some(AuthMode::ApiKey),
            openai_api_key: Some(key),
            ..Self::default()
        }
    }

    /// A ChatGPT login with `tokens` refreshed at `last_refresh`.
    ///
    /// ```
    /// use auth_core::{AuthDocument, AuthMode, TokenData, jwt};
    /// let id = jwt::encode_unsigned_for_testing(&Default::default());
    /// let tokens = TokenData::new(id.into(), "at".into(), "rt".into(), Some("acc".into()))?;
    /// let doc = AuthDocument::chatgpt(tokens, "2025-01-01T00:00:00Z".parse()?);
    /// assert_eq!(doc.effective_mode(), Some(AuthMode::Chatgpt));
    /// let back = AuthDocument::from_json_str(&doc.to_json_pretty())?;
    /// assert_eq!(back, doc);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn chatgpt(tokens: TokenData, last_refresh: Timestamp) -> Self {
        Self {
            auth_mode: Some(AuthMode::Chatgpt),
            tokens: Some(tokens),
            last_refresh: Some(last_refresh),
            ..Self::default()
        }
    }

    /// The mode in effect: `auth_mode` when present, else API key when
    /// `OPENAI_API_KEY` is set, else ChatGPT when `tokens` are present.
    ///
    /// ```
    /// use auth_core::{AuthDocument, AuthMode};
    /// let doc = AuthDocument::from_json_str(r#"{"OPENAI_API_KEY": "sk-x"}"#)?;
    /// assert_eq!(doc.auth_mode, None);
    /// assert_eq!(doc.effective_mode(), Some(AuthMode::ApiKey));
    /// # Ok::<(), auth_core::AuthJsonError>(())
    /// ```
    pub fn effective_mode(&self) -> Option<AuthMode> {
        if let Some(mode) = &self.auth_mode {
            return Some(mode.clone());
        }
        if self.openai_api_key.is_some() {
            Some(AuthMode::ApiKey)
        } else if self.tokens.is_some() {
            Some(AuthMode::Chatgpt)
        } else {
            None
        }
    }

    /// Whether the ChatGPT tokens should be refreshed before use at `now`, by the rule
    /// the Codex CLI applies: if the access token is a JWT with `exp`, when it expires
    /// within `margin`; otherwise when `last_refresh` is older than
    /// [`REFRESH_INTERVAL`]. Always `false` for API-key logins and documents without
    /// tokens.
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use auth_core::{AuthDocument, Secret, Timestamp, TokenData, jwt};
    ///
    /// let id = jwt::encode_unsigned_for_testing(&Default::default());
    /// let access = jwt::encode_unsigned_json_for_testing(&serde_json::json!({"exp": 1000}));
    /// let tokens = TokenData::new(id.into(), access.into(), "rt".into(), None)?;
    /// let doc = AuthDocument::chatgpt(tokens, Timestamp::from_system_time(UNIX_EPOCH));
    /// let at = |s| UNIX_EPOCH + Duration::from_secs(s);
    /// assert!(!doc.refresh_due(at(900), Duration::from_secs(60)));
    /// assert!(doc.refresh_due(at(950), Duration::from_secs(60)));
    /// # Ok::<(), auth_core::JwtError>(())
    /// ```
    pub fn refresh_due(&self, now: SystemTime, margin: Duration) -> bool {
        if self.effective_mode() != Some(AuthMode::Chatgpt) {
            return false;
        }
        let Some(tokens) = &self.tokens else {
            return false;
        };
        if let Ok(Some(expires_at)) = tokens.access_token_expires_at() {
            return now
                .checked_add(margin)
                .is_none_or(|limit| expires_at <= limit);
        }
        match &self.last_refresh {
            Some(last) => last
                .to_system_time()
                .checked_add(REFRESH_INTERVAL)
                .is_some_and(|due| due < now),
            None => false,
        }
    }

    /// Parses `auth.json` text. Errors name the line, column and field, never a value.
    ///
    /// ```
    /// use auth_core::{AuthDocument, AuthJsonError};
    /// let err = AuthDocument::from_json_str(r#"{"OPENAI_API_KEY": 42}"#).unwrap_err();
    /// assert!(matches!(err, AuthJsonError::Field { ref field, .. } if field == "OPENAI_API_KEY"));
    /// assert!(matches!(
    ///     AuthDocument::from_json_str("{\"auth_mode\": \"apik"),
    ///     Err(AuthJsonError::Truncated { .. })
    /// ));
    /// ```
    pub fn from_json_str(text: &str) -> Result<Self, AuthJsonError> {
        Self::from_json_slice(text.as_bytes())
    }

    /// Parses `auth.json` bytes (see [`AuthDocument::from_json_str`]).
    pub fn from_json_slice(bytes: &[u8]) -> Result<Self, AuthJsonError> {
        if bytes.len() > MAX_AUTH_JSON_LEN {
            return Err(AuthJsonError::TooLarge {
                len: bytes.len(),
                max: MAX_AUTH_JSON_LEN,
            });
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(AuthJsonError::Empty);
        }
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let result: Result<Self, _> = serde_path_to_error::deserialize(&mut de);
        let doc = result.map_err(|err| {
            let path = err.path().to_string();
            let field = if path == "." {
                "(top level)".to_owned()
            } else {
                path
            };
            let inner = err.into_inner();
            classify(&inner, field)
        })?;
        de.end()
            .map_err(|err| classify(&err, "(top level)".to_owned()))?;
        Ok(doc)
    }

    /// Serializes exactly as the Codex CLI does (`serde_json::to_string_pretty`: two-space
    /// indent, no trailing newline).
    pub fn to_json_pretty(&self) -> String {
        match serde_json::to_string_pretty(self) {
            Ok(text) => text,
            // ok: every field serializes to plain JSON (string keys, no fallible
            // Serialize impls), so serde_json cannot fail here.
            Err(_) => unreachable!("auth document serialization is infallible"),
        }
    }
}

fn classify(err: &serde_json::Error, field: String) -> AuthJsonError {
    let (line, column) = (err.line(), err.column());
    match err.classify() {
        serde_json::error::Category::Eof => AuthJsonError::Truncated { line, column },
        serde_json::error::Category::Data => AuthJsonError::Field {
            field,
            line,
            column,
            detail: withhold_quoted(&err.to_string()),
        },
        serde_json::error::Category::Syntax | serde_json::error::Category::Io => {
            AuthJsonError::Syntax {
                line,
                column,
                detail: withhold_quoted(&err.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::{IdTokenClaims, PlanType, encode_unsigned_for_testing};
    use pretty_assertions::assert_eq;

    fn id_token() -> String {
        encode_unsigned_for_testing(&IdTokenClaims {
            email: Some("user@example.com".into()),
            exp: Some(2_000_000_000),
            chatgpt_plan_type: Some(PlanType::Plus),
            chatgpt_account_id: Some("acc-1".into()),
            ..Default::default()
        })
    }

    #[test]
    fn api_key_document_matches_cli_bytes() {
        let doc = AuthDocument::api_key(Secret::from("KEY"));
        assert_eq!(
            doc.to_json_pretty(),
            "{\n  \"auth_mode\": \"apikey\",\n  \"OPENAI_API_KEY\": \"KEY\"\n}"
        );
    }

    #[test]
    fn empty_document_writes_null_key() {
        assert_eq!(
            AuthDocument::default().to_json_pretty(),
            "{\n  \"OPENAI_API_KEY\": null\n}"
        );
    }

    #[test]
    fn chatgpt_round_trip_preserves_text_and_unknowns() {
        let text = format!(
            r#"{{
  "auth_mode": "chatgpt",
  "OPENAI_API_KEY": null,
  "tokens": {{
    "id_token": "{}",
    "access_token": "at",
    "refresh_token": "rt",
    "account_id": null
  }},
  "last_refresh": "2025-08-06T20:41:36.232376Z",
  "future_field": {{
    "nested": [
      1,
      2
    ]
  }},
  "another": true
}}"#,
            id_token()
        );
        let doc = AuthDocument::from_json_str(&text).unwrap();
        assert_eq!(doc.effective_mode(), Some(AuthMode::Chatgpt));
        assert_eq!(doc.extra.len(), 2);
        assert_eq!(doc.to_json_pretty(), text);
        let claims = doc.tokens.as_ref().unwrap().id_token_claims().unwrap();
        assert_eq!(claims.email.as_deref(), Some("user@example.com"));
        let dbg = format!("{doc:?}");
        assert!(!dbg.contains("\"at\""), "{dbg}");
        assert!(dbg.contains("future_field"));
    }

    #[test]
    fn unknown_auth_mode_round_trips() {
        let text = "{\n  \"auth_mode\": \"agentIdentity\",\n  \"OPENAI_API_KEY\": null\n}";
        let doc = AuthDocument::from_json_str(text).unwrap();
        assert_eq!(doc.auth_mode, Some(AuthMode::Other("agentIdentity".into())));
        assert_eq!(doc.to_json_pretty(), text);
    }

    #[test]
    fn rejects_non_jwt_id_token_naming_field_without_value() {
        let text =
            r#"{"tokens":{"id_token":"secret-not-jwt","access_token":"a","refresh_token":"r"}}"#;
        let err = AuthDocument::from_json_str(text).unwrap_err();
        match &err {
            AuthJsonError::Field { field, .. } => assert_eq!(field, "tokens.id_token"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(!err.to_string().contains("secret-not-jwt"), "{err}");
    }

    #[test]
    fn wrong_type_withholds_value() {
        let err = AuthDocument::from_json_str(r#"{"tokens":"sk-leaky"}"#).unwrap_err();
        assert!(!err.to_string().contains("sk-leaky"), "{err}");
        assert!(matches!(err, AuthJsonError::Field { ref field, .. } if field == "tokens"));
    }

    #[test]
    fn truncated_and_syntax() {
        assert!(matches!(
            AuthDocument::from_json_str("{\n  \"auth_mode\": \"api").unwrap_err(),
            AuthJsonError::Truncated { line: 2, .. }
        ));
        assert!(matches!(
            AuthDocument::from_json_str("{} trailing").unwrap_err(),
            AuthJsonError::Syntax { .. }
        ));
        assert_eq!(
            AuthDocument::from_json_str(" \n").unwrap_err(),
            AuthJsonError::Empty
        );
    }

    #[test]
    fn timestamp_formats_like_chrono() {
        let t = |s: u64, n: u32| {
            Timestamp::from_system_time(UNIX_EPOCH + Duration::new(s, n))
                .as_str()
                .to_owned()
        };
        assert_eq!(t(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(t(1, 100_000_000), "1970-01-01T00:00:01.100Z");
        assert_eq!(t(1, 123_456_000), "1970-01-01T00:00:01.123456Z");
        assert_eq!(t(1, 100), "1970-01-01T00:00:01.000000100Z");
        // Windows' SystemTime counts 100 ns ticks: a single nanosecond exists only elsewhere.
        if cfg!(not(windows)) {
            assert_eq!(t(1, 1), "1970-01-01T00:00:01.000000001Z");
        }
        let parsed: Timestamp = "2025-01-01T01:00:00+01:00".parse().unwrap();
        assert_eq!(parsed.unix_seconds(), 1_735_689_600);
        assert_eq!(parsed.to_string(), "2025-01-01T01:00:00+01:00");
        assert!("yesterday".parse::<Timestamp>().is_err());
        assert!("2025-01-01T00:00:00".parse::<Timestamp>().is_err());
    }

    #[test]
    fn withhold_quoted_handles_escapes() {
        assert_eq!(
            withhold_quoted(r#"invalid type: string "a\"b", expected x at line 1 column 2"#),
            "invalid type: string \"…\", expected x"
        );
    }

    #[test]
    fn refresh_due_follows_cli_rule() {
        let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
        // Opaque access token: falls back to last_refresh + 8 days.
        let tokens = TokenData::new(id_token().into(), "opaque".into(), "r".into(), None).unwrap();
        let doc = AuthDocument::chatgpt(tokens, Timestamp::from_system_time(at(0)));
        let eight_days = REFRESH_INTERVAL.as_secs();
        assert!(!doc.refresh_due(at(eight_days), Duration::ZERO));
        assert!(doc.refresh_due(at(eight_days + 1), Duration::ZERO));
        let mut no_refresh = doc.clone();
        no_refresh.last_refresh = None;
        assert!(!no_refresh.refresh_due(at(u32::MAX.into()), Duration::ZERO));
        // API-key logins never need a refresh.
        let key = AuthDocument::api_key(Secret::from("k"));
        assert!(!key.refresh_due(at(u32::MAX.into()), Duration::ZERO));
    }

    #[test]
    fn token_data_new_validates() {
        assert!(TokenData::new("nope".into(), "a".into(), "r".into(), None).is_err());
        let td = TokenData::new(id_token().into(), "a".into(), "r".into(), None).unwrap();
        assert_eq!(td.effective_account_id().as_deref(), Some("acc-1"));
    }

    /// -009999-01-01T00:00:00Z and 9999-12-31T23:59:59Z in seconds since 1970.
    const FIRST_SECOND: i64 = -377_705_116_800;
    const LAST_SECOND: i64 = 253_402_300_799;

    #[test]
    fn timestamps_outside_the_years_rfc3339_can_write_are_invalid_dates() {
        // The last and first whole seconds RFC 3339 can write (years 9999 and -9999), past
        // jiff's own instants by about a day: shown exactly, and read back exactly.
        let (first, last) = (FIRST_SECOND, LAST_SECOND);
        for (secs, text) in [
            (last, "9999-12-31T23:59:59Z"),
            (jiff::Timestamp::MAX.as_second() + 1, "9999-12-30T22:00:01Z"),
            (first, "-009999-01-01T00:00:00Z"),
        ] {
            let t = Timestamp::from_unix_seconds(secs).unwrap();
            assert_eq!(t.as_str(), text);
            assert_eq!(t.unix_seconds(), secs);
            let back: Timestamp = text.parse().unwrap();
            assert_eq!((back.unix_seconds(), back.as_str()), (secs, text));
        }
        // The Codex CLI accepts these as last_refresh; so do we, keeping the text.
        let doc = r#"{"OPENAI_API_KEY":null,"last_refresh":"9999-12-31T23:59:59+01:00"}"#;
        let read = AuthDocument::from_json_str(doc).unwrap();
        let refreshed = read.last_refresh.as_ref().unwrap();
        assert_eq!(refreshed.unix_seconds(), last - 3600);
        assert_eq!(refreshed.as_str(), "9999-12-31T23:59:59+01:00");
        for secs in [last + 1, first - 1, i64::MAX, i64::MIN, i64::MIN + 1] {
            let err = Timestamp::from_unix_seconds(secs).unwrap_err();
            assert!(err.is_out_of_range(), "{secs}");
            assert!(err.to_string().starts_with("invalid date: "), "{err}");
        }
        insta::assert_snapshot!(
            Timestamp::from_unix_seconds(i64::MIN).unwrap_err(),
            @"invalid date: -9223372036854775808 seconds since 1970 is outside the years -9999 to 9999 that a timestamp can show"
        );
        // Year 10000 is refused when read too (never read as 1970).
        assert!("10000-01-01T00:00:00Z".parse::<Timestamp>().is_err());
        let doc = r#"{"OPENAI_API_KEY":null,"last_refresh":"10000-01-01T00:00:00Z"}"#;
        assert!(matches!(
            AuthDocument::from_json_str(doc),
            Err(AuthJsonError::Field { ref field, .. }) if field == "last_refresh"
        ));
        // Earliest representable last_refresh: comparisons clamp, nothing panics.
        let early: Timestamp = "-009999-01-02T01:59:59Z".parse().unwrap();
        assert!(early.to_system_time() <= UNIX_EPOCH);
    }

    #[test]
    fn field_error_escapes_control_characters_in_the_field_path() {
        let err = AuthJsonError::Field {
            field: "tokens.\x1b[31mx\r\nforged".to_owned(),
            line: 1,
            column: 2,
            detail: "bad\u{202e}".to_owned(),
        };
        let shown = err.to_string();
        assert!(
            !shown.chars().any(crate::terminal::is_unsafe_char),
            "{shown}"
        );
        assert!(
            shown.contains("tokens.\\x1b[31mx\\x0d\\x0aforged"),
            "{shown}"
        );
    }

    #[test]
    fn refresh_due_never_overflows() {
        let tokens = TokenData::new(id_token().into(), "opaque".into(), "r".into(), None).unwrap();
        let late: Timestamp = "9999-12-30T22:00:00Z".parse().unwrap();
        let doc = AuthDocument::chatgpt(tokens, late);
        assert!(!doc.refresh_due(SystemTime::now(), Duration::MAX));
        let access =
            crate::jwt::encode_unsigned_json_for_testing(&serde_json::json!({"exp": i64::MAX}));
        let tokens = TokenData::new(id_token().into(), access.into(), "r".into(), None).unwrap();
        let doc = AuthDocument::chatgpt(tokens, Timestamp::now());
        assert!(!doc.refresh_due(SystemTime::now(), Duration::ZERO));
        assert!(doc.refresh_due(SystemTime::now(), Duration::MAX));
    }

    proptest::proptest! {
        #[test]
        fn any_unix_second_is_a_timestamp_or_an_invalid_date(secs in proptest::num::i64::ANY) {
            match Timestamp::from_unix_seconds(secs) {
                Ok(t) => {
                    proptest::prop_assert_eq!(t.unix_seconds(), secs);
                    let back: Timestamp = t.as_str().parse().unwrap();
                    proptest::prop_assert_eq!(back.unix_seconds(), secs);
                    let _ = t.to_system_time();
                }
                Err(e) => {
                    proptest::prop_assert!(e.is_out_of_range());
                    proptest::prop_assert!(!(FIRST_SECOND..=LAST_SECOND).contains(&secs));
                }
            }
        }

        #[test]
        fn any_access_token_exp_and_last_refresh_is_safe(
            exp in proptest::num::i64::ANY,
            refreshed in jiff::Timestamp::MIN.as_second()..=jiff::Timestamp::MAX.as_second(),
            margin in proptest::num::u64::ANY,
        ) {
            let access = crate::jwt::encode_unsigned_json_for_testing(&serde_json::json!({"exp": exp}));
            let tokens = TokenData::new(id_token().into(), access.into(), "r".into(), None).unwrap();
            let doc = AuthDocument::chatgpt(tokens.clone(), Timestamp::from_unix_seconds(refreshed).unwrap());
            let now = SystemTime::now();
            let due = doc.refresh_due(now, Duration::from_secs(margin));
            let now_secs = i64::try_from(now.duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap();
            if exp <= now_secs {
                proptest::prop_assert!(due);
            }
            let opaque = TokenData::new(id_token().into(), "opaque".into(), "r".into(), None).unwrap();
            let doc = AuthDocument::chatgpt(opaque, Timestamp::from_unix_seconds(refreshed).unwrap());
            let _ = doc.refresh_due(now, Duration::from_secs(margin));
        }
    }
}
