//! Parsing upstream "when may I retry" headers into a wait.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use serde::{Deserialize, Serialize};

/// Which header a [`RetryAfter`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RetryAfterSource {
    /// `retry-after-ms`: milliseconds (OpenAI's precise form).
    RetryAfterMs,
    /// `retry-after`: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
    RetryAfter,
    /// `x-ratelimit-reset-requests` / `x-ratelimit-reset-tokens`: Go-style durations
    /// such as `1s`, `6m0s`, `20ms`, `1h2m3.5s` (the longer of the two wins).
    RateLimitReset,
}

/// A wait parsed from response headers, at most [`RetryAfter::CEILING`].
///
/// The policy clamps it further to the configured
/// [`min_cooldown`](crate::PolicyConfig::min_cooldown)..=[`max_cooldown`](crate::PolicyConfig::max_cooldown)
/// when it is reported with [`Outcome::RateLimited`](crate::Outcome::RateLimited).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::HeaderMap;
/// use rotation_policy::{RetryAfter, RetryAfterSource};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("retry-after", "7".parse().unwrap());
/// headers.insert("retry-after-ms", "6500".parse().unwrap());
/// let hint = RetryAfter::from_headers(&headers, SystemTime::now())?.unwrap();
/// assert_eq!(hint.wait, Duration::from_millis(6500)); // the precise header wins
/// assert_eq!(hint.source, RetryAfterSource::RetryAfterMs);
///
/// assert_eq!(RetryAfter::from_headers(&HeaderMap::new(), SystemTime::now())?, None);
/// # Ok::<(), rotation_policy::RetryAfterError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RetryAfter {
    /// How long to wait from the moment the headers were received.
    pub wait: Duration,
    /// The header it came from.
    pub source: RetryAfterSource,
}

/// A header was present but none of the present ones held a usable value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RetryAfterError {
    /// The value is not a wait in any form this header allows.
    #[error(
        "response header `{header}` has value {value:?}, which is not {expected}; fall back to the default backoff"
    )]
    Unparseable {
        /// The header name.
        header: &'static str,
        /// The value (lossily decoded, cut to 64 characters).
        value: String,
        /// The forms that header allows.
        expected: &'static str,
    },
}

const RETRY_AFTER_MS: &str = "retry-after-ms";
const RETRY_AFTER: &str = "retry-after";
const RESET_REQUESTS: &str = "x-ratelimit-reset-requests";
const RESET_TOKENS: &str = "x-ratelimit-reset-tokens";

impl RetryAfter {
    /// The longest wait a header can produce: one day. Larger values (including
    /// numbers that overflow) are cut to this, so a hostile or buggy upstream cannot park
    /// an account for years; the policy's own `max_cooldown` is usually far lower.
    pub const CEILING: Duration = Duration::from_secs(24 * 60 * 60);

    /// Reads the wait from `headers`, trying in order `retry-after-ms`, `retry-after`, then
    /// the longer of `x-ratelimit-reset-requests` and `x-ratelimit-reset-tokens`.
    ///
    /// `wall_now` is the current wall-clock time, used only to turn an HTTP-date into a
    /// wait (a date in the past is a zero wait). Returns `Ok(None)` when none of these
    /// headers is present, the first usable value otherwise, and an error only when headers
    /// were present but every one of them was garbage — callers then use their default
    /// backoff (report `Outcome::RateLimited { retry_after: None }`). Never panics, never
    /// returns more than [`RetryAfter::CEILING`].
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use http::HeaderMap;
    /// use rotation_policy::RetryAfter;
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert("x-ratelimit-reset-requests", "1m30s".parse().unwrap());
    /// headers.insert("x-ratelimit-reset-tokens", "20ms".parse().unwrap());
    /// let hint = RetryAfter::from_headers(&headers, SystemTime::now())?.unwrap();
    /// assert_eq!(hint.wait, Duration::from_secs(90));
    ///
    /// headers.clear();
    /// headers.insert("retry-after", "soon".parse().unwrap());
    /// assert!(RetryAfter::from_headers(&headers, SystemTime::now()).is_err());
    /// # Ok::<(), rotation_policy::RetryAfterError>(())
    /// ```
    pub fn from_headers(
        headers: &HeaderMap,
        wall_now: SystemTime,
    ) -> Result<Option<RetryAfter>, RetryAfterError> {
        let mut first_error = None;
        let mut note = |e: RetryAfterError| {
            if first_error.is_none() {
                first_error = Some(e);
            }
        };
        for (name, source) in [
            (RETRY_AFTER_MS, RetryAfterSource::RetryAfterMs),
            (RETRY_AFTER, RetryAfterSource::RetryAfter),
        ] {
            if let Some(value) = headers.get(name) {
                match parse_header(name, value.as_bytes(), wall_now) {
                    Ok(wait) => return Ok(Some(RetryAfter { wait, source })),
                    Err(e) => note(e),
                }
            }
        }
        let mut reset: Option<Duration> = None;
        for name in [RESET_REQUESTS, RESET_TOKENS] {
            if let Some(value) = headers.get(name) {
                match parse_header(name, value.as_bytes(), wall_now) {
                    Ok(wait) => reset = Some(reset.map_or(wait, |r| r.max(wait))),
                    Err(e) => note(e),
                }
            }
        }
        if let Some(wait) = reset {
            return Ok(Some(RetryAfter {
                wait,
                source: RetryAfterSource::RateLimitReset,
            }));
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    /// Parses one header value by the rules of its header name (case-insensitive):
    /// `retry-after` (delay-seconds, fractional accepted, or HTTP-date), `retry-after-ms`
    /// (milliseconds), `x-ratelimit-reset-*` (Go durations). Any other name is treated
    /// like `retry-after`.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use rotation_policy::RetryAfter;
    ///
    /// let now = SystemTime::now();
    /// assert_eq!(RetryAfter::parse_value("retry-after", "120", now)?, Duration::from_secs(120));
    /// assert_eq!(RetryAfter::parse_value("retry-after-ms", "250", now)?, Duration::from_millis(250));
    /// assert_eq!(
    ///     RetryAfter::parse_value("x-ratelimit-reset-tokens", "1h2m3.5s", now)?,
    ///     Duration::from_millis(3_723_500)
    /// );
    /// assert!(RetryAfter::parse_value("retry-after", "-1", now).is_err());
    /// # Ok::<(), rotation_policy::RetryAfterError>(())
    /// ```
    pub fn parse_value(
        header: &str,
        value: &str,
        wall_now: SystemTime,
    ) -> Result<Duration, RetryAfterError> {
        let name = if header.eq_ignore_ascii_case(RETRY_AFTER_MS) {
            RETRY_AFTER_MS
        } else if header.eq_ignore_ascii_case(RESET_REQUESTS) {
            RESET_REQUESTS
        } else if header.eq_ignore_ascii_case(RESET_TOKENS) {
            RESET_TOKENS
        } else {
            RETRY_AFTER
        };
        parse_header(name, value.as_bytes(), wall_now)
    }
}

fn parse_header(
    name: &'static str,
    raw: &[u8],
    wall_now: SystemTime,
) -> Result<Duration, RetryAfterError> {
    let expected = match name {
        RETRY_AFTER_MS => "a non-negative number of milliseconds such as `1500`",
        RETRY_AFTER => {
            "non-negative delay-seconds such as `120` or an HTTP-date such as `Wed, 21 Oct 2015 07:28:00 GMT`"
        }
        _ => "a Go-style duration such as `1s`, `6m0s`, `20ms` or `1h2m3.5s`",
    };
    let fail = || RetryAfterError::Unparseable {
        header: name,
        value: String::from_utf8_lossy(raw).chars().take(64).collect(),
        expected,
    };
    let text = std::str::from_utf8(raw).map_err(|_| fail())?.trim();
    let nanos = match name {
        RETRY_AFTER_MS => decimal_nanos(text, NANOS_PER_MS),
        RETRY_AFTER => decimal_nanos(text, NANOS_PER_SEC).or_else(|| {
            let at = httpdate::parse_http_date(text).ok()?;
            // A date in the past means "now".
            Some(at.duration_since(wall_now).map_or(0, |d| d.as_nanos()))
        }),
        _ => go_duration_nanos(text),
    }
    .ok_or_else(fail)?;
    Ok(cap(nanos))
}

const NANOS_PER_MS: u128 = 1_000_000;
const NANOS_PER_SEC: u128 = 1_000_000_000;

fn cap(nanos: u128) -> Duration {
    let ceiling = RetryAfter::CEILING.as_nanos();
    // ok: the ceiling fits in u64 nanoseconds by construction.
    Duration::from_nanos(u64::try_from(nanos.min(ceiling)).unwrap_or(u64::MAX))
}

/// `digits[.digits]` (either side may be empty, not both) times `unit`, rounded up,
/// saturating. No sign, exponent, `inf` or `nan`.
fn decimal_nanos(text: &str, unit: u128) -> Option<u128> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut whole: u128 = 0;
    for b in int.bytes() {
        whole = whole
            .saturating_mul(10)
            .saturating_add(u128::from(b - b'0'));
    }
    let mut total = whole.saturating_mul(unit);
    // Digits past the 18th cannot change a nanosecond count of any unit we use.
    let frac = &frac[..frac.len().min(18)];
    if !frac.is_empty() {
        let mut num: u128 = 0;
        for b in frac.bytes() {
            num = num * 10 + u128::from(b - b'0');
        }
        let den = 10u128.pow(frac.len() as u32);
        total = total.saturating_add((num * unit).div_ceil(den));
    }
    Some(total)
}

/// Go's `time.ParseDuration` grammar without a sign: one or more `<decimal><unit>` pairs;
/// a lone `0` is also accepted.
fn go_duration_nanos(text: &str) -> Option<u128> {
    if text == "0" {
        return Some(0);
    }
    let mut rest = text;
    let mut total: u128 = 0;
    let mut pairs = 0usize;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => NANOS_PER_MS,
            "s" => NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "h" => 3600 * NANOS_PER_SEC,
            _ => return None,
        };
        total = total.saturating_add(decimal_nanos(num, unit_nanos)?);
        pairs += 1;
        rest = after;
    }
    (pairs > 0).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_rounds_up_and_rejects_non_numbers() {
        assert_eq!(decimal_nanos("1.5", NANOS_PER_SEC), Some(1_500_000_000));
        assert_eq!(decimal_nanos(".5", NANOS_PER_SEC), Some(500_000_000));
        assert_eq!(decimal_nanos("2.", NANOS_PER_SEC), Some(2_000_000_000));
        assert_eq!(decimal_nanos("0.0000000001", NANOS_PER_SEC), Some(1));
        for bad in [
            "", ".", "-1", "+1", "1e3", "inf", "NaN", "1.2.3", " 1", "１",
        ] {
            assert_eq!(decimal_nanos(bad, NANOS_PER_SEC), None, "{bad:?}");
        }
        assert_eq!(
            decimal_nanos(&"9".repeat(80), NANOS_PER_SEC),
            Some(u128::MAX)
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration_nanos("6m0s"), Some(360 * NANOS_PER_SEC));
        assert_eq!(
            go_duration_nanos("1h2m3.5s"),
            Some(3_723_500 * NANOS_PER_MS)
        );
        assert_eq!(go_duration_nanos("20ms"), Some(20 * NANOS_PER_MS));
        assert_eq!(go_duration_nanos("1µs"), Some(1_000));
        assert_eq!(go_duration_nanos("0"), Some(0));
        for bad in ["", "1", "s", "1x", "1s2", "-1s", "1 s", "1.2.3s", "ms"] {
            assert_eq!(go_duration_nanos(bad), None, "{bad:?}");
        }
    }
}
