//! Table tests for every Retry-After form the policy reads, including garbage, plus a
//! property test that no header value can panic the parser or yield an absurd wait.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use rotation_policy::{Outcome, RetryAfter, RetryAfterError, RetryAfterSource};

/// Wed, 21 Oct 2015 07:28:00 GMT.
fn wall_now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_445_412_480)
}

const DAY_MS: u64 = 24 * 3600 * 1000;

/// `(header, value, expected wait in ms — sub-millisecond waits rounded up, as the policy
/// does — or None for an error)`.
const TABLE: &[(&str, &str, Option<u64>)] = &[
    // retry-after: delay-seconds
    ("retry-after", "0", Some(0)),
    ("retry-after", "1", Some(1_000)),
    ("retry-after", "120", Some(120_000)),
    ("retry-after", " 30 ", Some(30_000)),
    ("retry-after", "1.5", Some(1_500)),
    ("retry-after", "0.0001", Some(1)), // rounded up, never to zero
    ("retry-after", "007", Some(7_000)),
    ("retry-after", "86400", Some(DAY_MS)),
    ("retry-after", "86401", Some(DAY_MS)), // capped at RetryAfter::CEILING
    (
        "retry-after",
        "99999999999999999999999999999999999999999",
        Some(DAY_MS),
    ),
    // retry-after: HTTP-date, all three RFC 9110 formats
    ("retry-after", "Wed, 21 Oct 2015 07:28:30 GMT", Some(30_000)),
    (
        "retry-after",
        "Wednesday, 21-Oct-15 07:29:00 GMT",
        Some(60_000),
    ),
    ("retry-after", "Wed Oct 21 07:28:05 2015", Some(5_000)),
    ("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT", Some(0)), // now
    ("retry-after", "Tue, 20 Oct 2015 07:28:00 GMT", Some(0)), // past: no wait, not negative
    ("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT", Some(DAY_MS)), // absurd: capped
    // retry-after: garbage
    ("retry-after", "", None),
    ("retry-after", "   ", None),
    ("retry-after", "-1", None),
    ("retry-after", "+5", None),
    ("retry-after", "1e3", None),
    ("retry-after", "inf", None),
    ("retry-after", "NaN", None),
    ("retry-after", "soon", None),
    ("retry-after", "5s", None),
    ("retry-after", "1.2.3", None),
    ("retry-after", "Wed, 32 Oct 2015 07:28:00 GMT", None),
    ("retry-after", "2015-10-21T07:28:00Z", None),
    // retry-after-ms
    ("retry-after-ms", "0", Some(0)),
    ("retry-after-ms", "20", Some(20)),
    ("retry-after-ms", "1500", Some(1_500)),
    ("retry-after-ms", "0.2", Some(1)),
    ("retry-after-ms", "86400000", Some(DAY_MS)),
    ("retry-after-ms", "999999999999999999999", Some(DAY_MS)),
    ("retry-after-ms", "-20", None),
    ("retry-after-ms", "20ms", None),
    ("retry-after-ms", "Wed, 21 Oct 2015 07:28:30 GMT", None),
    ("retry-after-ms", "", None),
    // x-ratelimit-reset-*: Go durations
    ("x-ratelimit-reset-requests", "1s", Some(1_000)),
    ("x-ratelimit-reset-requests", "6m0s", Some(360_000)),
    ("x-ratelimit-reset-requests", "20ms", Some(20)),
    ("x-ratelimit-reset-requests", "1h2m3.5s", Some(3_723_500)),
    ("x-ratelimit-reset-tokens", "0.5s", Some(500)),
    ("x-ratelimit-reset-tokens", "17.3s", Some(17_300)),
    ("x-ratelimit-reset-tokens", "250us", Some(1)),
    ("x-ratelimit-reset-tokens", "250µs", Some(1)),
    ("x-ratelimit-reset-tokens", "10ns", Some(1)),
    ("x-ratelimit-reset-tokens", "0", Some(0)),
    ("x-ratelimit-reset-tokens", "0s", Some(0)),
    ("x-ratelimit-reset-tokens", "48h", Some(DAY_MS)),
    (
        "x-ratelimit-reset-tokens",
        "99999999999999999999h",
        Some(DAY_MS),
    ),
    ("x-ratelimit-reset-tokens", "1", None),
    ("x-ratelimit-reset-tokens", "s", None),
    ("x-ratelimit-reset-tokens", "-1s", None),
    ("x-ratelimit-reset-tokens", "1d", None),
    ("x-ratelimit-reset-tokens", "1s2", None),
    ("x-ratelimit-reset-tokens", "1 s", None),
    ("x-ratelimit-reset-tokens", "", None),
];

fn ceil_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap())
}

#[test]
fn every_form_in_the_table() {
    let mut failures = Vec::new();
    for &(header, value, expected) in TABLE {
        let got = RetryAfter::parse_value(header, value, wall_now())
            .ok()
            .map(ceil_ms);
        let want = expected.map(Duration::from_millis);
        if got != want {
            failures.push(format!("{header}: {value:?} gave {got:?}, want {want:?}"));
        }
        // Through a header map too, which also checks the source reported.
        if let Ok(v) = HeaderValue::from_str(value) {
            let mut headers = HeaderMap::new();
            headers.insert(HeaderName::from_static(header), v);
            let parsed = RetryAfter::from_headers(&headers, wall_now());
            match (parsed, want) {
                (Ok(Some(hint)), Some(want)) => {
                    assert_eq!(ceil_ms(hint.wait), want, "{header}: {value:?}")
                }
                (Err(RetryAfterError::Unparseable { header: h, .. }), None) => {
                    assert_eq!(h, header)
                }
                (got, want) => {
                    failures.push(format!("map {header}: {value:?}: {got:?} vs {want:?}"))
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn map(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(
            HeaderName::from_static(name),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    headers
}

#[test]
fn sub_millisecond_precision_is_kept_by_the_parser() {
    let us = Duration::from_micros;
    assert_eq!(
        RetryAfter::parse_value("retry-after", "0.0001", wall_now()),
        Ok(us(100))
    );
    assert_eq!(
        RetryAfter::parse_value("x-ratelimit-reset-tokens", "250µs", wall_now()),
        Ok(us(250))
    );
    assert_eq!(
        RetryAfter::parse_value("x-ratelimit-reset-tokens", "10ns", wall_now()),
        Ok(Duration::from_nanos(10))
    );
}

#[test]
fn precedence_and_fallback_between_headers() {
    let at = |pairs: &[(&'static str, &str)]| {
        RetryAfter::from_headers(&map(pairs), wall_now()).map(|o| o.map(|h| (h.wait, h.source)))
    };
    let ms = Duration::from_millis;
    assert_eq!(at(&[]), Ok(None));
    assert_eq!(at(&[("content-type", "text/plain")]), Ok(None));
    // retry-after-ms beats retry-after beats the reset headers.
    assert_eq!(
        at(&[
            ("retry-after", "9"),
            ("retry-after-ms", "8500"),
            ("x-ratelimit-reset-requests", "1m")
        ]),
        Ok(Some((ms(8_500), RetryAfterSource::RetryAfterMs)))
    );
    assert_eq!(
        at(&[("retry-after", "9"), ("x-ratelimit-reset-requests", "1m")]),
        Ok(Some((ms(9_000), RetryAfterSource::RetryAfter)))
    );
    // The longer of the two reset headers wins.
    assert_eq!(
        at(&[
            ("x-ratelimit-reset-requests", "2s"),
            ("x-ratelimit-reset-tokens", "6m0s")
        ]),
        Ok(Some((ms(360_000), RetryAfterSource::RateLimitReset)))
    );
    // Garbage in a preferred header falls through to a usable one.
    assert_eq!(
        at(&[("retry-after-ms", "soon"), ("retry-after", "3")]),
        Ok(Some((ms(3_000), RetryAfterSource::RetryAfter)))
    );
    assert_eq!(
        at(&[
            ("retry-after", "later"),
            ("x-ratelimit-reset-tokens", "20ms")
        ]),
        Ok(Some((ms(20), RetryAfterSource::RateLimitReset)))
    );
    // Only garbage: an error naming the first bad header.
    let err = at(&[
        ("retry-after", "later"),
        ("x-ratelimit-reset-tokens", "soon"),
    ])
    .unwrap_err();
    assert!(matches!(
        err,
        RetryAfterError::Unparseable {
            header: "retry-after",
            ..
        }
    ));
    // Repeated header: the first value counts.
    assert_eq!(
        at(&[("retry-after", "4"), ("retry-after", "40")]),
        Ok(Some((ms(4_000), RetryAfterSource::RetryAfter)))
    );
}

#[test]
fn non_utf8_and_long_values_are_errors_with_a_short_echo() {
    let mut headers = HeaderMap::new();
    headers.insert(
        "retry-after",
        HeaderValue::from_bytes(b"\xff\xfe12").unwrap(),
    );
    let err = RetryAfter::from_headers(&headers, wall_now()).unwrap_err();
    assert!(err.to_string().contains("retry-after"));
    let long = "x".repeat(10_000);
    let err = RetryAfter::parse_value("retry-after", &long, wall_now()).unwrap_err();
    let RetryAfterError::Unparseable { value, .. } = &err else {
        unreachable!()
    };
    assert_eq!(value.chars().count(), 64);
}

#[test]
fn garbage_falls_back_to_backoff_in_outcome() {
    let headers = map(&[("retry-after", "soon")]);
    assert_eq!(
        Outcome::from_response(429, &headers, wall_now()),
        Outcome::RateLimited { retry_after: None }
    );
}

#[test]
fn error_messages_tell_the_user_what_was_expected() {
    let messages: Vec<String> = [
        ("retry-after", "soon"),
        ("retry-after-ms", "-20"),
        ("x-ratelimit-reset-requests", "1d"),
    ]
    .iter()
    .map(|(h, v)| {
        RetryAfter::parse_value(h, v, wall_now())
            .unwrap_err()
            .to_string()
    })
    .collect();
    insta::assert_yaml_snapshot!(messages);
}

proptest! {
    #[test]
    fn any_value_parses_or_errors_without_panic_and_within_a_day(
        value in prop_oneof![
            any::<String>(),
            "[0-9.]{0,30}",
            "[0-9.]{0,12}(ns|us|µs|ms|s|m|h){0,1}([0-9.]{0,6}(ms|s|m|h)){0,3}",
            "[A-Za-z]{3}, [0-9]{2} [A-Za-z]{3} [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT",
        ],
        header in prop_oneof![
            Just("retry-after"),
            Just("retry-after-ms"),
            Just("x-ratelimit-reset-requests"),
            Just("x-ratelimit-reset-tokens"),
        ],
        wall_secs in 0u64..4_000_000_000,
    ) {
        let now = UNIX_EPOCH + Duration::from_secs(wall_secs);
        if let Ok(wait) = RetryAfter::parse_value(header, &value, now) {
            prop_assert!(wait <= RetryAfter::CEILING);
        }
        if let Ok(v) = HeaderValue::from_str(&value) {
            let mut headers = HeaderMap::new();
            headers.insert(HeaderName::from_static(header), v);
            if let Ok(Some(hint)) = RetryAfter::from_headers(&headers, now) {
                prop_assert!(hint.wait <= RetryAfter::CEILING);
            }
        }
    }

    #[test]
    fn delay_seconds_round_trip(secs in 0u64..86_400) {
        prop_assert_eq!(
            RetryAfter::parse_value("retry-after", &secs.to_string(), wall_now()),
            Ok(Duration::from_secs(secs))
        );
    }
}

/// Control, C1, bidi and line-separator characters (the set `auth_core::terminal` escapes).
fn is_unsafe_char(c: char) -> bool {
    matches!(
        c,
        '\u{0}'..='\u{1f}'
            | '\u{7f}'..='\u{9f}'
            | '\u{61c}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
    )
}

proptest! {
    /// Every number an upstream can send, over the full range of each type: integers up to
    /// `u128::MAX`, negative ones, and every `f64` form (NaN, ±inf, exponents, subnormals).
    /// Nothing panics or wraps; a wait is never above the ceiling; what cannot be a wait is
    /// an error.
    #[test]
    fn any_number_in_any_header_is_a_capped_wait_or_an_error(
        unsigned in any::<u128>(),
        signed in any::<i64>(),
        float in any::<f64>(),
        wall_secs in any::<u64>(),
    ) {
        // Any wall clock this platform can hold (SystemTime itself bounds it).
        let now = UNIX_EPOCH
            .checked_add(Duration::from_secs(wall_secs))
            .unwrap_or(UNIX_EPOCH);
        for header in ["retry-after", "retry-after-ms", "x-ratelimit-reset-requests"] {
            let wait = RetryAfter::parse_value(header, &unsigned.to_string(), now);
            if header != "x-ratelimit-reset-requests" {
                let wait = wait.unwrap();
                prop_assert!(wait <= RetryAfter::CEILING);
                if unsigned >= 86_400_000 {
                    prop_assert_eq!(wait, RetryAfter::CEILING);
                }
            }
            for text in [format!("{unsigned}s"), format!("{unsigned}h{unsigned}m")] {
                if let Ok(w) = RetryAfter::parse_value(header, &text, now) {
                    prop_assert!(w <= RetryAfter::CEILING);
                }
            }
            if signed < 0 {
                prop_assert!(RetryAfter::parse_value(header, &signed.to_string(), now).is_err());
            }
            for text in [float.to_string(), format!("{float:e}"), format!("{float:.3}")] {
                match RetryAfter::parse_value(header, &text, now) {
                    Ok(w) => {
                        prop_assert!(w <= RetryAfter::CEILING);
                        prop_assert!(float.is_finite() && float >= 0.0, "{text}");
                    }
                    Err(e) => {
                        let shown = e.to_string();
                        prop_assert!(!shown.chars().any(is_unsafe_char));
                    }
                }
            }
        }
    }

    /// An HTTP-date in any year the format can write, against any wall clock: a capped wait,
    /// zero for the past, never a panic (no `SystemTime` overflow).
    #[test]
    fn any_http_date_against_any_clock(date_secs in 0u64..253_402_300_800, wall_secs in any::<u64>()) {
        let Some(at) = UNIX_EPOCH.checked_add(Duration::from_secs(date_secs)) else {
            return Ok(());
        };
        let now = UNIX_EPOCH
            .checked_add(Duration::from_secs(wall_secs))
            .unwrap_or(UNIX_EPOCH);
        let text = httpdate::fmt_http_date(at);
        let wait = RetryAfter::parse_value("retry-after", &text, now).unwrap();
        prop_assert!(wait <= RetryAfter::CEILING);
        if at <= now {
            prop_assert_eq!(wait, Duration::ZERO);
        }
    }

    /// The error echoes the header value with control and bidi characters escaped.
    #[test]
    fn error_messages_hold_no_control_or_bidi_characters(value in any::<String>()) {
        if let Err(e) = RetryAfter::parse_value("retry-after", &value, UNIX_EPOCH) {
            let shown = e.to_string();
            prop_assert!(!shown.chars().any(is_unsafe_char), "{shown:?}");
        }
    }
}
