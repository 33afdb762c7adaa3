//! Parsers and writers of usage reports (pure): response headers, the `codex.rate_limits`
//! stream event, and the usage endpoint's JSON. Total on any input: what cannot be read is
//! absent, never an error and never a panic.
//!
//! Rules every reader applies (the wire facts are from the Codex CLI's sources, codex-rs
//! `codex-api/src/rate_limits.rs` and `backend-client/src/client.rs`):
//!
//! | field | kept when | otherwise |
//! |---|---|---|
//! | used percent | a finite number 0–1000 ([`Percent::new`]; above 100 reads as 100) | the whole window is absent |
//! | window length | a whole number of minutes, 1 to [`MAX_WINDOW_MINUTES`](super::MAX_WINDOW_MINUTES) | unknown |
//! | reset time | whole non-negative Unix seconds, no later than [`LAST_PLAUSIBLE_TIME`](crate::LAST_PLAUSIBLE_TIME) | unknown |
//! | a window | used > 0, or its length or reset is known (the CLI reads "0 %, nothing else" as no window) | absent |
//! | a limit | it has a window and a usable id ([`normalize_limit_id`]) | left out of the report |
//! | limit name, plan type, credit balance | short printable text (trimmed, ≤ 128 bytes, no control characters) | absent |
//! | credits | both `has_credits` and `unlimited` readable | absent |
//! | the limits | `codex` first, then the others by id, each id once, at most [`MAX_LIMITS`] | the rest dropped |
//! | a JSON document | UTF-8, at most [`MAX_JSON_BYTES`] | the parse answers `None` |

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{
    Credits, DEFAULT_LIMIT, LimitUsage, MAX_JSON_BYTES, MAX_LIMITS, Percent, UsageReport,
    UsageWindow, normalize_limit_id, short_text,
};
use crate::{LAST_PLAUSIBLE_TIME, Timestamp};

/// The `type` of the stream event that carries usage.
const EVENT_TYPE: &str = "codex.rate_limits";

/// Header name endings of a limit family `x-<limit>-…` (the limit id with `_` written `-`).
const PRIMARY: Window = Window {
    used: "-primary-used-percent",
    minutes: "-primary-window-minutes",
    reset: "-primary-reset-at",
};
const SECONDARY: Window = Window {
    used: "-secondary-used-percent",
    minutes: "-secondary-window-minutes",
    reset: "-secondary-reset-at",
};
const LIMIT_NAME: &str = "-limit-name";

/// Credits are sent once per answer, in the default family only.
const HAS_CREDITS: &str = "x-codex-credits-has-credits";
const UNLIMITED: &str = "x-codex-credits-unlimited";
const BALANCE: &str = "x-codex-credits-balance";

/// Longest header value read as a number. Every real one is under 25 bytes; the cap keeps
/// number parsing of a hostile value cheap.
const MAX_NUMBER_TEXT: usize = 64;

/// Longest raw JSON string decoded for a name or plan type: enough for any
/// [`MAX_LIMIT_NAME_LEN`](super::MAX_LIMIT_NAME_LEN)-byte text even fully `\u`-escaped.
const MAX_RAW_TEXT: usize = 1024;

/// The three header name endings of one window.
struct Window {
    used: &'static str,
    minutes: &'static str,
    reset: &'static str,
}

impl UsageReport {
    /// Reads every usage header family of an upstream answer.
    ///
    /// The default limit is `x-codex-primary-used-percent` (a number),
    /// `x-codex-primary-window-minutes`, `x-codex-primary-reset-at` (Unix seconds) and the
    /// same with `secondary`; every other limit is found by a header
    /// `x-<limit>-primary-used-percent` (limit `codex-bengalfox` → id `codex_bengalfox`) and
    /// may name its model in `x-<limit>-limit-name`. Credits are
    /// `x-codex-credits-has-credits`, `x-codex-credits-unlimited` (`true`, `false`, `1`, `0`)
    /// and `x-codex-credits-balance`. Each value is read trimmed of ASCII whitespace; the
    /// first of repeated headers counts. The rules for absent fields are in the module docs;
    /// a plan type is never sent in headers.
    ///
    /// Linear in the number of headers and bounded: each header name is looked at once, at
    /// most [`MAX_LIMITS`] limits are kept (`codex`, then the smallest ids).
    ///
    /// ```
    /// use http::HeaderMap;
    /// use rotation_policy::usage::UsageReport;
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert("x-codex-primary-used-percent", "42.5".parse()?);
    /// headers.insert("x-codex-primary-window-minutes", "300".parse()?);
    /// headers.insert("x-codex-primary-reset-at", "1700000000".parse()?);
    /// headers.insert("x-codex-bengalfox-primary-used-percent", "NaN".parse()?);
    /// headers.insert("x-codex-bengalfox-secondary-used-percent", "7".parse()?);
    /// headers.insert("x-codex-bengalfox-limit-name", "gpt-5.2-codex-sonic".parse()?);
    ///
    /// let report = UsageReport::from_headers(&headers);
    /// let codex = report.limit("codex").unwrap();
    /// let primary = codex.primary.unwrap();
    /// assert_eq!(primary.used_percent.get(), 42.5);
    /// assert_eq!(primary.window_minutes, Some(300));
    /// assert_eq!(primary.resets_at.unwrap().as_millis(), 1_700_000_000_000);
    ///
    /// // A NaN primary window is absent; the family's secondary window is still read.
    /// let other = report.limit("codex_bengalfox").unwrap();
    /// assert_eq!(other.primary, None);
    /// assert_eq!(other.secondary.unwrap().used_percent.get(), 7.0);
    /// assert_eq!(other.limit_name.as_deref(), Some("gpt-5.2-codex-sonic"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_headers(headers: &HeaderMap) -> UsageReport {
        let mut limits = Limits::default();
        limits.offer(header_family(headers, DEFAULT_LIMIT));
        for name in headers.keys() {
            if let Some(id) = discovered_limit(name.as_str())
                && id != DEFAULT_LIMIT
            {
                limits.offer(header_family(headers, &id));
            }
        }
        let credits = header_bool(headers, HAS_CREDITS)
            .zip(header_bool(headers, UNLIMITED))
            .map(|(has_credits, unlimited)| Credits {
                has_credits,
                unlimited,
                balance: header_text(headers, BALANCE).and_then(short_text),
            });
        limits.into_report(credits, None)
    }

    /// Reads one server-sent event's `data`: a `codex.rate_limits` event, or `None` for any
    /// other event, a payload that is not a JSON object, not UTF-8 or over
    /// [`MAX_JSON_BYTES`].
    ///
    /// The event is `{"type":"codex.rate_limits","plan_type":…,"rate_limits":{"primary":
    /// {"used_percent","window_minutes","reset_at"},"secondary":{…}},"credits":
    /// {"has_credits","unlimited","balance"},"metered_limit_name":…}`; it reports one
    /// limit, whose id is `metered_limit_name`, else `limit_name`, else `codex` (as the Codex
    /// CLI reads it, codex-rs `codex-api/src/rate_limits.rs`). When the field that names the
    /// limit is there but is not a usable id, the windows cannot be placed and the limit is
    /// left out. Each field is read on its own: a bad one is absent, the rest still count
    /// (numbers may be integers or decimals; whole fields must be whole). A number too
    /// large for a double (`1e999`) in a field that is read counts as a bad field too.
    ///
    /// ```
    /// use rotation_policy::usage::UsageReport;
    ///
    /// let data = br#"{"type":"codex.rate_limits","plan_type":"pro",
    ///     "rate_limits":{"primary":{"used_percent":12,"window_minutes":300,"reset_at":1700000000},
    ///                    "secondary":{"used_percent":"bad"}},
    ///     "credits":{"has_credits":true,"unlimited":false,"balance":"9.99"}}"#;
    /// let report = UsageReport::from_event(data).unwrap();
    /// assert_eq!(report.plan_type.as_deref(), Some("pro"));
    /// let codex = report.limit("codex").unwrap();
    /// assert_eq!(codex.primary.unwrap().used_percent.get(), 12.0);
    /// assert_eq!(codex.secondary, None);
    /// assert_eq!(report.credits.unwrap().balance.as_deref(), Some("9.99"));
    ///
    /// assert_eq!(UsageReport::from_event(br#"{"type":"response.completed"}"#), None);
    /// assert_eq!(UsageReport::from_event(b"not json"), None);
    /// ```
    pub fn from_event(data: &[u8]) -> Option<UsageReport> {
        let [kind, plan, rate_limits, credits, metered, name] = pick(
            json_text(data)?,
            [
                "type",
                "plan_type",
                "rate_limits",
                "credits",
                "metered_limit_name",
                "limit_name",
            ],
        )?;
        if kind.and_then(json_string).as_deref() != Some(EVENT_TYPE) {
            return None;
        }
        let mut limits = Limits::default();
        let naming = [metered, name]
            .into_iter()
            .flatten()
            .find(|raw| !is_null(raw));
        let id = match naming {
            None => Some(DEFAULT_LIMIT.to_owned()),
            Some(raw) => json_string(raw).and_then(|s| normalize_limit_id(&s)),
        };
        if let Some(mut limit) = id.as_deref().and_then(LimitUsage::new) {
            let [primary, secondary] = rate_limits
                .and_then(|raw| pick(raw.get(), ["primary", "secondary"]))
                .unwrap_or_default();
            limit.primary = primary.and_then(|raw| json_window(raw, Length::Minutes));
            limit.secondary = secondary.and_then(|raw| json_window(raw, Length::Minutes));
            limits.offer(Some(limit));
        }
        Some(limits.into_report(
            credits.and_then(json_credits),
            plan.and_then(json_short_text),
        ))
    }

    /// Reads the usage endpoint's answer, `GET {chatgpt backend}/wham/usage` (bearer token
    /// and `ChatGPT-Account-Id` as for requests), or `None` for a body that is not a JSON
    /// object with at least one of `plan_type`, `rate_limit`, `credits`,
    /// `additional_rate_limits`, not UTF-8, or over [`MAX_JSON_BYTES`].
    ///
    /// The shape was confirmed from codex-rs `backend-client/src/client.rs` (the usage
    /// query and how its answer becomes rate-limit snapshots) and the generated models in
    /// `codex-backend-openapi-models/src/models/` (`rate_limit_status_payload.rs`,
    /// `rate_limit_status_details.rs`, `rate_limit_window_snapshot.rs`,
    /// `credit_status_details.rs`, `additional_rate_limit_details.rs`):
    ///
    /// - `plan_type`: the plan (text);
    /// - `rate_limit`: the `codex` limit, `{"allowed","limit_reached","primary_window",
    ///   "secondary_window"}`, each window `{"used_percent","limit_window_seconds",
    ///   "reset_after_seconds","reset_at"}`; the length in seconds becomes minutes rounded
    ///   up (as the CLI does), `reset_at` is Unix seconds; `reset_after_seconds` (relative to
    ///   an unknown send time) is not read, so no `now` is needed;
    /// - `additional_rate_limits`: `[{"limit_name","metered_feature","rate_limit"}]`, one per
    ///   metered limit: the id is `metered_feature` (else `limit_name`), the name is
    ///   `limit_name`; an entry whose id is taken (or `codex`) is skipped;
    /// - `credits`: `{"has_credits","unlimited","balance"}` (balance a decimal string).
    ///
    /// `allowed` and `limit_reached` are not kept: the percentages say the same.
    ///
    /// ```
    /// use rotation_policy::usage::UsageReport;
    ///
    /// let body = br#"{"plan_type":"plus",
    ///     "rate_limit":{"allowed":true,"limit_reached":false,
    ///         "primary_window":{"used_percent":30,"limit_window_seconds":18000,
    ///                           "reset_after_seconds":600,"reset_at":1700000600}},
    ///     "additional_rate_limits":[{"limit_name":"GPT-5.2-Codex-Sonic",
    ///         "metered_feature":"codex_bengalfox",
    ///         "rate_limit":{"primary_window":{"used_percent":80,"limit_window_seconds":604800,
    ///                                         "reset_after_seconds":5,"reset_at":1700000005}}}]}"#;
    /// let report = UsageReport::from_usage_json(body).unwrap();
    /// let codex = report.limit("codex").unwrap().primary.unwrap();
    /// assert_eq!(codex.window_minutes, Some(300));
    /// assert_eq!(codex.resets_at.unwrap().as_millis(), 1_700_000_600_000);
    /// let other = report.limit("codex_bengalfox").unwrap();
    /// assert_eq!(other.limit_name.as_deref(), Some("GPT-5.2-Codex-Sonic"));
    /// assert_eq!(other.primary.unwrap().window_minutes, Some(7 * 24 * 60));
    ///
    /// assert_eq!(UsageReport::from_usage_json(br#"{"detail":"Unauthorized"}"#), None);
    /// ```
    pub fn from_usage_json(body: &[u8]) -> Option<UsageReport> {
        let fields = pick(
            json_text(body)?,
            [
                "plan_type",
                "rate_limit",
                "credits",
                "additional_rate_limits",
            ],
        )?;
        if fields.iter().all(Option::is_none) {
            return None;
        }
        let [plan, rate_limit, credits, additional] = fields;
        let mut limits = Limits::default();
        if let Some(mut codex) = LimitUsage::new(DEFAULT_LIMIT) {
            set_endpoint_windows(&mut codex, rate_limit);
            limits.offer(Some(codex));
        }
        let entries = additional
            .and_then(|raw| serde_json::from_str::<Vec<&RawValue>>(raw.get()).ok())
            .unwrap_or_default();
        for entry in entries {
            let Some([name, feature, rate_limit]) =
                pick(entry.get(), ["limit_name", "metered_feature", "rate_limit"])
            else {
                continue;
            };
            let naming = [feature, name]
                .into_iter()
                .flatten()
                .find(|raw| !is_null(raw));
            let Some(mut limit) = naming
                .and_then(json_string)
                .and_then(|id| LimitUsage::new(&id))
            else {
                continue;
            };
            limit.limit_name = name.and_then(json_short_text);
            set_endpoint_windows(&mut limit, rate_limit);
            limits.offer(Some(limit));
        }
        Some(limits.into_report(
            credits.and_then(json_credits),
            plan.and_then(json_short_text),
        ))
    }

    /// This report as usage response headers, in the family [`from_headers`] reads.
    ///
    /// [`from_headers`]: UsageReport::from_headers
    ///
    /// ```
    /// use rotation_policy::usage::UsageReport;
    ///
    /// let mut upstream = http::HeaderMap::new();
    /// upstream.insert("x-codex-primary-used-percent", "12.5".parse()?);
    /// upstream.insert("x-codex-secondary-used-percent", "40".parse()?);
    /// upstream.insert("x-codex-secondary-window-minutes", "10080".parse()?);
    /// let report = UsageReport::from_headers(&upstream);
    ///
    /// let written = report.to_headers();
    /// assert_eq!(written["x-codex-primary-used-percent"], "12.5");
    /// assert_eq!(UsageReport::from_headers(&written), report);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        self.write_headers(&mut headers);
        headers
    }

    /// Replaces the usage headers in `headers` with this report's: every header of a usage
    /// family already there (`x-<limit>-primary-used-percent`, …, `x-<limit>-limit-name`,
    /// `x-codex-credits-*`) is removed first, so an upstream answer's own usage never mixes
    /// with the report a proxy sends in its place. Other headers are left alone.
    ///
    /// Written so that [`from_headers`](UsageReport::from_headers) reads back what it
    /// produced: percentages in the shortest form that parses to the same number, reset
    /// times as Unix seconds rounded up (a window never looks reset before it is), and a
    /// metered limit with only a secondary window announced by a primary used percent of
    /// `0`, which reads as no window. The plan type has no header and is not written; a
    /// text that cannot be a header value is left out.
    ///
    /// ```
    /// use http::HeaderMap;
    /// use rotation_policy::usage::UsageReport;
    ///
    /// let mut from_pool = HeaderMap::new();
    /// from_pool.insert("x-codex-primary-used-percent", "20".parse()?);
    /// let pool_report = UsageReport::from_headers(&from_pool);
    ///
    /// // The upstream answer of one account, about to go to the client.
    /// let mut answer = HeaderMap::new();
    /// answer.insert("content-type", "text/event-stream".parse()?);
    /// answer.insert("x-codex-primary-used-percent", "97".parse()?);
    /// answer.insert("x-codex-other-primary-used-percent", "50".parse()?);
    /// pool_report.write_headers(&mut answer);
    ///
    /// assert_eq!(answer["x-codex-primary-used-percent"], "20");
    /// assert!(answer.get("x-codex-other-primary-used-percent").is_none());
    /// assert_eq!(answer["content-type"], "text/event-stream");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let stale: Vec<HeaderName> = headers
            .keys()
            .filter(|name| is_usage_header(name.as_str()))
            .cloned()
            .collect();
        for name in &stale {
            headers.remove(name);
        }
        for limit in self.limits.iter().take(MAX_LIMITS) {
            let prefix = family_prefix(limit.limit_id());
            match limit.primary {
                Some(window) => write_window(headers, &prefix, &PRIMARY, window),
                // Other families are found by their primary used percent; 0 with nothing
                // else is read as no window, so this only announces the family.
                None if limit.limit_id() != DEFAULT_LIMIT => {
                    put(headers, format!("{prefix}{}", PRIMARY.used), "0");
                }
                None => {}
            }
            if let Some(window) = limit.secondary {
                write_window(headers, &prefix, &SECONDARY, window);
            }
            if let Some(name) = &limit.limit_name {
                put(headers, format!("{prefix}{LIMIT_NAME}"), name);
            }
        }
        if let Some(credits) = &self.credits {
            put(
                headers,
                HAS_CREDITS.to_owned(),
                bool_text(credits.has_credits),
            );
            put(headers, UNLIMITED.to_owned(), bool_text(credits.unlimited));
            if let Some(balance) = &credits.balance {
                put(headers, BALANCE.to_owned(), balance);
            }
        }
    }

    /// This report as the `data` of a `codex.rate_limits` stream event, the form
    /// [`from_event`](UsageReport::from_event) and the Codex CLI read.
    ///
    /// An event carries one limit: `codex` if the report has it, else its first limit (a
    /// limit other than `codex` is named in `metered_limit_name`). Plan type and credits
    /// are written when known. Window lengths are whole minutes and reset times whole Unix
    /// seconds rounded up, as the CLI reads them.
    ///
    /// ```
    /// use rotation_policy::usage::UsageReport;
    ///
    /// let data = br#"{"type":"codex.rate_limits","plan_type":"plus",
    ///     "rate_limits":{"primary":{"used_percent":25.5,"window_minutes":300}}}"#;
    /// let report = UsageReport::from_event(data).unwrap();
    /// let json = report.to_event_json();
    /// assert_eq!(
    ///     json,
    ///     r#"{"type":"codex.rate_limits","plan_type":"plus","rate_limits":{"primary":{"used_percent":25.5,"window_minutes":300}}}"#
    /// );
    /// assert_eq!(UsageReport::from_event(json.as_bytes()), Some(report));
    /// ```
    pub fn to_event_json(&self) -> String {
        let mut event = Map::new();
        event.insert("type".into(), EVENT_TYPE.into());
        if let Some(plan) = &self.plan_type {
            event.insert("plan_type".into(), plan.as_str().into());
        }
        let limit = self.limit(DEFAULT_LIMIT).or(self.limits.first());
        if let Some(limit) = limit {
            let mut windows = Map::new();
            if let Some(window) = limit.primary {
                windows.insert("primary".into(), event_window(window));
            }
            if let Some(window) = limit.secondary {
                windows.insert("secondary".into(), event_window(window));
            }
            if !windows.is_empty() {
                event.insert("rate_limits".into(), Value::Object(windows));
            }
        }
        if let Some(credits) = &self.credits {
            let mut object = Map::new();
            object.insert("has_credits".into(), credits.has_credits.into());
            object.insert("unlimited".into(), credits.unlimited.into());
            if let Some(balance) = &credits.balance {
                object.insert("balance".into(), balance.as_str().into());
            }
            event.insert("credits".into(), Value::Object(object));
        }
        if let Some(limit) = limit.filter(|l| l.limit_id() != DEFAULT_LIMIT) {
            event.insert("metered_limit_name".into(), limit.limit_id().into());
        }
        Value::Object(event).to_string()
    }
}

/// The limits of one report while it is read: `codex`, and the others by id, at most
/// [`MAX_LIMITS`] of them at any time (so a hostile input cannot grow it), each id once.
#[derive(Default)]
struct Limits {
    codex: Option<LimitUsage>,
    others: BTreeMap<String, LimitUsage>,
}

impl Limits {
    /// Keeps `limit` if it has a window and its id is new; beyond [`MAX_LIMITS`] others, the
    /// largest id goes, so what is kept does not depend on the order of the input.
    fn offer(&mut self, limit: Option<LimitUsage>) {
        let Some(limit) = limit.filter(LimitUsage::has_windows) else {
            return;
        };
        if limit.limit_id() == DEFAULT_LIMIT {
            self.codex.get_or_insert(limit);
            return;
        }
        if self.others.contains_key(limit.limit_id()) {
            return;
        }
        self.others.insert(limit.limit_id().to_owned(), limit);
        if self.others.len() > MAX_LIMITS {
            self.others.pop_last();
        }
    }

    fn into_report(self, credits: Option<Credits>, plan_type: Option<String>) -> UsageReport {
        let limits = self
            .codex
            .into_iter()
            .chain(self.others.into_values())
            .take(MAX_LIMITS)
            .collect();
        UsageReport {
            limits,
            credits,
            plan_type,
        }
    }
}

/// A window from its three raw readings, after the rules of the module docs.
fn window(used: Option<f64>, minutes: Option<u64>, reset_secs: Option<u64>) -> Option<UsageWindow> {
    let mut window = UsageWindow::new(Percent::new(used?)?);
    if let Some(minutes) = minutes.and_then(|m| u32::try_from(m).ok()) {
        window = window.with_window_minutes(minutes);
    }
    if let Some(millis) = reset_secs.and_then(|s| s.checked_mul(1000)) {
        window = window.with_resets_at(Timestamp::from_millis(millis));
    }
    // The backend sends "0 %" for windows it does not track; the CLI shows none for them.
    let says_something = window.used_percent != Percent::ZERO
        || window.window_minutes.is_some()
        || window.resets_at.is_some();
    says_something.then_some(window)
}

/// Whole Unix seconds for a reset time: rounded up, but never past the last plausible
/// second (so it reads back).
fn reset_secs(at: Timestamp) -> u64 {
    at.as_millis()
        .div_ceil(1000)
        .min(LAST_PLAUSIBLE_TIME.as_millis() / 1000)
}

// ---- headers ----

/// `x-<limit>` with the id's `_` written `-`, as the backend names the headers.
fn family_prefix(limit_id: &str) -> String {
    format!("x-{}", limit_id.replace('_', "-"))
}

/// The limit id a header `x-<limit>-primary-used-percent` announces, if it is written the
/// way the backend writes it (`a-z`, `0-9`, `-`). Other spellings of an id (with `_`)
/// are not looked up by the Codex CLI either, so they are not families.
fn discovered_limit(name: &str) -> Option<String> {
    let limit = name.strip_prefix("x-")?.strip_suffix(PRIMARY.used)?;
    let canonical = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-';
    // Checked before anything is allocated: a hostile name costs one scan.
    if limit.len() > super::MAX_LIMIT_ID_LEN || !limit.bytes().all(canonical) {
        return None;
    }
    normalize_limit_id(limit)
}

/// One limit family of the headers (`limit_id` normalized), windows not yet checked.
fn header_family(headers: &HeaderMap, limit_id: &str) -> Option<LimitUsage> {
    let mut limit = LimitUsage::new(limit_id)?;
    let prefix = family_prefix(limit.limit_id());
    limit.primary = header_window(headers, &prefix, &PRIMARY);
    limit.secondary = header_window(headers, &prefix, &SECONDARY);
    limit.limit_name = header_text(headers, &format!("{prefix}{LIMIT_NAME}")).and_then(short_text);
    Some(limit)
}

fn header_window(headers: &HeaderMap, prefix: &str, names: &Window) -> Option<UsageWindow> {
    let number = |suffix: &str| {
        header_text(headers, &format!("{prefix}{suffix}")).filter(|t| t.len() <= MAX_NUMBER_TEXT)
    };
    window(
        number(names.used)?.parse().ok(),
        number(names.minutes).and_then(|t| t.parse().ok()),
        number(names.reset).and_then(|t| t.parse().ok()),
    )
}

/// A header's first value as UTF-8 text, trimmed of ASCII whitespace; `None` when absent,
/// not UTF-8 or empty.
fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let text = std::str::from_utf8(headers.get(name)?.as_bytes()).ok()?;
    let text = text.trim_ascii();
    (!text.is_empty()).then_some(text)
}

fn header_bool(headers: &HeaderMap, name: &str) -> Option<bool> {
    let text = header_text(headers, name)?;
    if text == "1" || text.eq_ignore_ascii_case("true") {
        Some(true)
    } else if text == "0" || text.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Whether `name` belongs to a usage header family (what [`UsageReport::write_headers`]
/// replaces).
fn is_usage_header(name: &str) -> bool {
    if [HAS_CREDITS, UNLIMITED, BALANCE].contains(&name) {
        return true;
    }
    let Some(rest) = name.strip_prefix("x-") else {
        return false;
    };
    [PRIMARY, SECONDARY]
        .iter()
        .flat_map(|w| [w.used, w.minutes, w.reset])
        .chain([LIMIT_NAME])
        .any(|suffix| rest.len() > suffix.len() && rest.ends_with(suffix))
}

fn write_window(headers: &mut HeaderMap, prefix: &str, names: &Window, window: UsageWindow) {
    put(
        headers,
        format!("{prefix}{}", names.used),
        &percent_text(window.used_percent),
    );
    if let Some(minutes) = window.window_minutes {
        put(
            headers,
            format!("{prefix}{}", names.minutes),
            &minutes.to_string(),
        );
    }
    if let Some(at) = window.resets_at {
        put(
            headers,
            format!("{prefix}{}", names.reset),
            &reset_secs(at).to_string(),
        );
    }
}

/// The shortest text that parses back to the same number: plain decimals (`12.5`, `100`),
/// and exponent form for tiny values, whose plain form would be hundreds of digits long.
fn percent_text(percent: Percent) -> String {
    let value = percent.get();
    if value == 0.0 || value >= 1e-3 {
        format!("{value}")
    } else {
        format!("{value:e}")
    }
}

fn bool_text(value: bool) -> &'static str {
    if value { "true" } else { "false" }
}

/// Sets one header; a name or value that is not valid in a header is skipped (only a
/// report built by hand can hold such text).
fn put(headers: &mut HeaderMap, name: String, value: &str) {
    if let (Ok(name), Ok(value)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        headers.insert(name, value);
    }
}

// ---- JSON ----

/// The document as text, if it is UTF-8 and at most [`MAX_JSON_BYTES`].
fn json_text(data: &[u8]) -> Option<&str> {
    if data.len() > MAX_JSON_BYTES {
        return None;
    }
    std::str::from_utf8(data).ok()
}

/// The raw values of `keys` in the JSON object `json` (the last one when a key repeats), or
/// `None` when `json` is not one object.
///
/// Values are kept raw and decoded one by one, so one bad field (a string where a number
/// belongs, a number out of range) spoils only itself; values of other keys are skipped
/// without being decoded. Keys are matched as written: an escaped spelling of a key
/// (`"\u0074ype"`) is another key.
fn pick<'a, const N: usize>(json: &'a str, keys: [&str; N]) -> Option<[Option<&'a RawValue>; N]> {
    struct Pick<'k, const N: usize>(&'k [&'k str; N]);

    impl<'de, const N: usize> Visitor<'de> for Pick<'_, N> {
        type Value = [Option<&'de RawValue>; N];

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = [None; N];
            while let Some(key) = map.next_key::<&'de RawValue>()? {
                let key = key.get();
                let slot = key
                    .strip_prefix('"')
                    .and_then(|k| k.strip_suffix('"'))
                    .and_then(|k| self.0.iter().position(|wanted| *wanted == k));
                match slot {
                    Some(index) => found[index] = Some(map.next_value()?),
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(found)
        }
    }

    let mut deserializer = serde_json::Deserializer::from_str(json);
    let found = serde::Deserializer::deserialize_map(&mut deserializer, Pick(&keys)).ok()?;
    deserializer.end().ok()?;
    Some(found)
}

fn is_null(raw: &RawValue) -> bool {
    raw.get() == "null"
}

/// A JSON string value, decoded (short ones only).
fn json_string(raw: &RawValue) -> Option<String> {
    let raw = raw.get();
    if raw.len() > MAX_RAW_TEXT {
        return None;
    }
    serde_json::from_str(raw).ok()
}

fn json_short_text(raw: &RawValue) -> Option<String> {
    short_text(&json_string(raw)?)
}

/// A JSON number (integer or decimal) as a double.
fn json_number(raw: &RawValue) -> Option<f64> {
    // serde_json says whether it is a JSON number at all; the standard library then reads it
    // correctly rounded. serde_json's own reading can be one unit in the last place off
    // (unless its `float_roundtrip` feature is on), and a percentage written back must read
    // as the same number.
    serde_json::from_str::<f64>(raw.get()).ok()?;
    raw.get().parse().ok()
}

/// A JSON number that is a whole, non-negative value (`300` or `300.0`).
fn json_whole(raw: &RawValue) -> Option<u64> {
    if let Ok(whole) = serde_json::from_str::<u64>(raw.get()) {
        return Some(whole);
    }
    // Doubles are exact up to 2^53; beyond that "whole" means nothing.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    let value = json_number(raw)?;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // checked just before
    ((0.0..=EXACT).contains(&value) && value.fract() == 0.0).then_some(value as u64)
}

/// How a JSON window states its length.
#[derive(Clone, Copy)]
enum Length {
    /// `window_minutes` (the stream event).
    Minutes,
    /// `limit_window_seconds` (the usage endpoint), rounded up to whole minutes as the
    /// Codex CLI does.
    Seconds,
}

/// A window `{"used_percent", <length>, "reset_at"}`.
fn json_window(raw: &RawValue, length: Length) -> Option<UsageWindow> {
    let length_key = match length {
        Length::Minutes => "window_minutes",
        Length::Seconds => "limit_window_seconds",
    };
    let [used, length_raw, reset] = pick(raw.get(), ["used_percent", length_key, "reset_at"])?;
    let minutes = length_raw.and_then(json_whole).map(|n| match length {
        Length::Minutes => n,
        Length::Seconds => n.div_ceil(60),
    });
    window(
        used.and_then(json_number),
        minutes,
        reset.and_then(json_whole),
    )
}

/// The usage endpoint's `rate_limit` object: `primary_window`, `secondary_window`, whose
/// lengths are `limit_window_seconds`.
fn set_endpoint_windows(limit: &mut LimitUsage, rate_limit: Option<&RawValue>) {
    let Some([primary, secondary]) =
        rate_limit.and_then(|raw| pick(raw.get(), ["primary_window", "secondary_window"]))
    else {
        return;
    };
    limit.primary = primary.and_then(|raw| json_window(raw, Length::Seconds));
    limit.secondary = secondary.and_then(|raw| json_window(raw, Length::Seconds));
}

fn json_credits(raw: &RawValue) -> Option<Credits> {
    let [has_credits, unlimited, balance] =
        pick(raw.get(), ["has_credits", "unlimited", "balance"])?;
    let flag = |raw: Option<&RawValue>| serde_json::from_str::<bool>(raw?.get()).ok();
    Some(Credits {
        has_credits: flag(has_credits)?,
        unlimited: flag(unlimited)?,
        balance: balance.and_then(json_balance),
    })
}

/// A balance: the backend writes a decimal string; a bare number is taken as written.
fn json_balance(raw: &RawValue) -> Option<String> {
    if json_number(raw).is_some() {
        return short_text(raw.get());
    }
    json_short_text(raw)
}

fn event_window(window: UsageWindow) -> Value {
    let mut object = Map::new();
    object.insert("used_percent".into(), window.used_percent.get().into());
    if let Some(minutes) = window.window_minutes {
        object.insert("window_minutes".into(), minutes.into());
    }
    if let Some(at) = window.resets_at {
        object.insert("reset_at".into(), reset_secs(at).into());
    }
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::MAX_WINDOW_MINUTES;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn primary(pairs: &[(&str, &str)]) -> Option<UsageWindow> {
        UsageReport::from_headers(&headers(pairs))
            .limit(DEFAULT_LIMIT)
            .and_then(|l| l.primary)
    }

    fn event(json: &str) -> Option<UsageReport> {
        UsageReport::from_event(json.as_bytes())
    }

    fn endpoint(json: &str) -> Option<UsageReport> {
        UsageReport::from_usage_json(json.as_bytes())
    }

    const USED: &str = "x-codex-primary-used-percent";
    const MINUTES: &str = "x-codex-primary-window-minutes";
    const RESET: &str = "x-codex-primary-reset-at";

    #[test]
    fn an_unusable_used_percent_makes_the_window_absent() {
        for bad in [
            "NaN", "nan", "inf", "-inf", "infinity", "-1", "-0.5", "1e309", "1000.5", "1e300",
            "abc", "12 5", "12,5", "0x10", "", "   ",
        ] {
            let window = primary(&[(USED, bad), (MINUTES, "300"), (RESET, "1700000000")]);
            assert_eq!(window, None, "{bad:?}");
        }
    }

    #[test]
    fn used_percent_is_trimmed_and_capped_at_100() {
        assert_eq!(
            primary(&[(USED, " 12.5\t")]).unwrap().used_percent.get(),
            12.5
        );
        assert_eq!(primary(&[(USED, "130")]).unwrap().used_percent.get(), 100.0);
        assert_eq!(
            primary(&[(USED, "1000")]).unwrap().used_percent.get(),
            100.0
        );
        assert_eq!(
            primary(&[(USED, "-0")]),
            None,
            "-0 is 0 % with nothing else"
        );
    }

    #[test]
    fn an_unusable_window_length_is_unknown() {
        let too_long = (MAX_WINDOW_MINUTES + 1).to_string();
        for bad in [
            "0",
            "-5",
            "1.5",
            "abc",
            &too_long,
            "4294967296",
            "99999999999999999999999",
            "",
        ] {
            let window = primary(&[(USED, "10"), (MINUTES, bad)]).unwrap();
            assert_eq!(window.window_minutes, None, "{bad:?}");
        }
        let longest = MAX_WINDOW_MINUTES.to_string();
        let window = primary(&[(USED, "10"), (MINUTES, &longest)]).unwrap();
        assert_eq!(window.window_minutes, Some(MAX_WINDOW_MINUTES));
    }

    #[test]
    fn an_unusable_reset_time_is_unknown() {
        let last_second = LAST_PLAUSIBLE_TIME.as_millis() / 1000;
        let after_last = (last_second + 1).to_string();
        for bad in [
            "-1",
            "1.5",
            "abc",
            &after_last,
            "18446744073709551615",
            "18446744073709551616",
            "1e9",
            "",
        ] {
            let window = primary(&[(USED, "10"), (RESET, bad)]).unwrap();
            assert_eq!(window.resets_at, None, "{bad:?}");
        }
        let window = primary(&[(USED, "10"), (RESET, &last_second.to_string())]).unwrap();
        assert_eq!(window.resets_at.unwrap().as_millis(), last_second * 1000);
        let window = primary(&[(USED, "10"), (RESET, "0")]).unwrap();
        assert_eq!(window.resets_at, Some(Timestamp::ZERO));
    }

    #[test]
    fn a_zero_window_that_says_nothing_else_is_absent() {
        assert_eq!(primary(&[(USED, "0")]), None);
        assert_eq!(
            primary(&[(USED, "0.0"), (MINUTES, "0"), (RESET, "-1")]),
            None
        );
        assert!(primary(&[(USED, "0"), (MINUTES, "300")]).is_some());
        assert!(primary(&[(USED, "0"), (RESET, "1700000000")]).is_some());
        assert!(primary(&[(USED, "0.001")]).is_some());
    }

    #[test]
    fn a_header_value_that_is_not_utf8_is_absent() {
        let mut map = headers(&[(USED, "10"), ("x-codex-other-primary-used-percent", "5")]);
        map.insert(MINUTES, HeaderValue::from_bytes(b"30\xff").unwrap());
        map.insert(
            "x-codex-other-limit-name",
            HeaderValue::from_bytes(b"gpt-\xff").unwrap(),
        );
        let report = UsageReport::from_headers(&map);
        assert_eq!(
            report
                .limit("codex")
                .unwrap()
                .primary
                .unwrap()
                .window_minutes,
            None
        );
        assert_eq!(report.limit("codex_other").unwrap().limit_name, None);
        // UTF-8 beyond ASCII is text like any other.
        map.insert(
            "x-codex-other-limit-name",
            HeaderValue::from_str("modèle").unwrap(),
        );
        let report = UsageReport::from_headers(&map);
        assert_eq!(
            report.limit("codex_other").unwrap().limit_name.as_deref(),
            Some("modèle")
        );
    }

    #[test]
    fn a_limit_without_windows_is_left_out_but_credits_stay() {
        let report = UsageReport::from_headers(&headers(&[
            (USED, "0"),
            ("x-codex-other-primary-used-percent", "NaN"),
            ("x-codex-other-limit-name", "gpt-5"),
            (HAS_CREDITS, "true"),
            (UNLIMITED, "false"),
        ]));
        assert!(report.limits.is_empty(), "{report:?}");
        assert!(report.is_empty());
        let credits = report.credits.unwrap();
        assert!(credits.has_credits && !credits.unlimited);
        assert_eq!(credits.balance, None);
    }

    #[test]
    fn credits_need_both_flags_and_a_short_balance() {
        let credits = |pairs: &[(&str, &str)]| UsageReport::from_headers(&headers(pairs)).credits;
        let read =
            credits(&[(HAS_CREDITS, "TRUE"), (UNLIMITED, "0"), (BALANCE, " 9.99 ")]).unwrap();
        assert!(read.has_credits && !read.unlimited);
        assert_eq!(read.balance.as_deref(), Some("9.99"));
        let read = credits(&[(HAS_CREDITS, "1"), (UNLIMITED, "False")]).unwrap();
        assert!(read.has_credits && !read.unlimited);
        assert_eq!(credits(&[(HAS_CREDITS, "true")]), None);
        assert_eq!(credits(&[(HAS_CREDITS, "yes"), (UNLIMITED, "false")]), None);
        assert_eq!(credits(&[(HAS_CREDITS, "true"), (UNLIMITED, "2")]), None);
        let long = "9".repeat(super::super::MAX_LIMIT_NAME_LEN + 1);
        let read = credits(&[(HAS_CREDITS, "true"), (UNLIMITED, "true"), (BALANCE, &long)]);
        assert_eq!(read.unwrap().balance, None);
    }

    #[test]
    fn only_families_written_as_the_backend_writes_them_are_found() {
        let long_id = "a".repeat(super::super::MAX_LIMIT_ID_LEN + 1);
        let long_name = format!("x-{long_id}-primary-used-percent");
        let report = UsageReport::from_headers(&headers(&[
            ("x-codex_other-primary-used-percent", "10"),
            ("x--primary-used-percent", "10"),
            ("x-a.b-primary-used-percent", "10"),
            (&long_name, "10"),
            ("codex-primary-used-percent", "10"),
            ("x-codex-bengalfox-primary-used-percent", "10"),
        ]));
        let ids: Vec<_> = report.limits.iter().map(LimitUsage::limit_id).collect();
        assert_eq!(ids, ["codex_bengalfox"]);
    }

    #[test]
    fn codex_comes_first_then_the_smallest_ids_at_most_max_limits() {
        let mut map = HeaderMap::new();
        for i in (0..40).rev() {
            let name = format!("x-limit-{i:02}-primary-used-percent");
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from(5),
            );
        }
        map.insert(USED, HeaderValue::from(1));
        let report = UsageReport::from_headers(&map);
        let ids: Vec<_> = report.limits.iter().map(LimitUsage::limit_id).collect();
        let mut expected = vec!["codex".to_owned()];
        expected.extend((0..MAX_LIMITS - 1).map(|i| format!("limit_{i:02}")));
        assert_eq!(ids, expected);
    }

    #[test]
    fn the_first_of_repeated_headers_counts() {
        assert_eq!(
            primary(&[(USED, "10"), (USED, "20")])
                .unwrap()
                .used_percent
                .get(),
            10.0
        );
    }

    #[test]
    fn an_event_of_another_type_or_shape_is_none() {
        for data in [
            r#"{"type":"response.completed"}"#,
            r#"{"kind":"codex.rate_limits"}"#,
            r#"{"type":["codex.rate_limits"]}"#,
            r#"["codex.rate_limits"]"#,
            r#"{"type":"codex.rate_limits"} trailing"#,
            r#"{"type":"codex.rate_limits""#,
            "",
            "null",
        ] {
            assert_eq!(event(data), None, "{data:?}");
        }
        assert_eq!(
            UsageReport::from_event(b"{\"type\":\"codex.rate_limits\xff\"}"),
            None
        );
        let padding = " ".repeat(MAX_JSON_BYTES);
        assert_eq!(
            event(&format!(r#"{{"type":"codex.rate_limits"}}{padding}"#)),
            None
        );
        // The escaped spelling of the value is the same string.
        assert!(event(r#"{"type":"codex.rate_\u006cimits"}"#).is_some());
    }

    #[test]
    fn a_bad_event_field_is_absent_and_the_rest_counts() {
        let report = event(
            r#"{"type":"codex.rate_limits","plan_type":5,
                "rate_limits":{"primary":{"used_percent":"12","window_minutes":300},
                               "secondary":{"used_percent":40,"window_minutes":1.5,"reset_at":-1}},
                "credits":{"has_credits":"true","unlimited":false}}"#,
        )
        .unwrap();
        let codex = report.limit("codex").unwrap();
        assert_eq!(codex.primary, None);
        let secondary = codex.secondary.unwrap();
        assert_eq!(secondary.used_percent.get(), 40.0);
        assert_eq!(
            (secondary.window_minutes, secondary.resets_at),
            (None, None)
        );
        assert_eq!(report.credits, None);
        assert_eq!(report.plan_type, None);
    }

    #[test]
    fn an_event_number_out_of_range_spoils_only_its_field() {
        let report = event(
            r#"{"type":"codex.rate_limits","plan_type":"pro","unknown":1e999,
                "rate_limits":{"primary":{"used_percent":1e999},
                               "secondary":{"used_percent":5,"reset_at":1e999}}}"#,
        )
        .unwrap();
        let codex = report.limit("codex").unwrap();
        assert_eq!(codex.primary, None);
        assert_eq!(codex.secondary.unwrap().resets_at, None);
        assert_eq!(report.plan_type.as_deref(), Some("pro"));
    }

    #[test]
    fn event_numbers_are_read_correctly_rounded() {
        // serde_json's default reading of this number is one unit in the last place off.
        let text = "5.375997437596789e-251";
        let json = format!(
            r#"{{"type":"codex.rate_limits","rate_limits":{{"primary":{{"used_percent":{text}}}}}}}"#
        );
        let window = event(&json)
            .unwrap()
            .limit("codex")
            .unwrap()
            .primary
            .unwrap();
        assert_eq!(window.used_percent.get(), text.parse::<f64>().unwrap());
    }

    #[test]
    fn event_numbers_may_be_integers_or_whole_decimals() {
        let report = event(
            r#"{"type":"codex.rate_limits","rate_limits":{"primary":
                {"used_percent":12.75,"window_minutes":300.0,"reset_at":1700000000.0}}}"#,
        )
        .unwrap();
        let window = report.limit("codex").unwrap().primary.unwrap();
        assert_eq!(window.used_percent.get(), 12.75);
        assert_eq!(window.window_minutes, Some(300));
        assert_eq!(
            window.resets_at,
            Some(Timestamp::from_millis(1_700_000_000_000))
        );
    }

    #[test]
    fn the_event_names_its_limit() {
        let id = |extra: &str| {
            let json = format!(
                r#"{{"type":"codex.rate_limits",{extra}"rate_limits":{{"primary":{{"used_percent":1}}}}}}"#
            );
            let report = event(&json).unwrap();
            report.limits.first().map(|l| l.limit_id().to_owned())
        };
        assert_eq!(id("").as_deref(), Some("codex"));
        assert_eq!(
            id(r#""metered_limit_name":null,"#).as_deref(),
            Some("codex")
        );
        assert_eq!(
            id(r#""metered_limit_name":"Codex-BengalFox","limit_name":"x","#).as_deref(),
            Some("codex_bengalfox")
        );
        assert_eq!(
            id(r#""limit_name":"codex-other","#).as_deref(),
            Some("codex_other")
        );
        // Named, but not as an id: the windows cannot be placed.
        assert_eq!(id(r#""metered_limit_name":"a/b","limit_name":"ok","#), None);
        assert_eq!(id(r#""metered_limit_name":7,"#), None);
        assert_eq!(id(r#""limit_name":"","#), None);
    }

    #[test]
    fn an_event_without_windows_keeps_its_credits_and_plan() {
        let report = event(
            r#"{"type":"codex.rate_limits","plan_type":" plus ","rate_limits":null,
                "credits":{"has_credits":false,"unlimited":true,"balance":12.5}}"#,
        )
        .unwrap();
        assert!(report.limits.is_empty());
        assert_eq!(report.plan_type.as_deref(), Some("plus"));
        assert_eq!(report.credits.unwrap().balance.as_deref(), Some("12.5"));
    }

    #[test]
    fn endpoint_lengths_are_seconds_rounded_up_to_minutes() {
        let minutes = |seconds: &str| {
            let json = format!(
                r#"{{"rate_limit":{{"primary_window":{{"used_percent":10,"limit_window_seconds":{seconds}}}}}}}"#
            );
            endpoint(&json)
                .unwrap()
                .limit("codex")
                .unwrap()
                .primary
                .unwrap()
                .window_minutes
        };
        assert_eq!(minutes("18000"), Some(300));
        assert_eq!(minutes("18001"), Some(301));
        assert_eq!(minutes("1"), Some(1));
        assert_eq!(minutes("0"), None);
        assert_eq!(minutes("-60"), None);
        assert_eq!(minutes("\"300\""), None);
        assert_eq!(minutes("99999999999999"), None);
    }

    #[test]
    fn an_endpoint_reset_needs_reset_at() {
        let report = endpoint(
            r#"{"rate_limit":{"primary_window":{"used_percent":0,"reset_after_seconds":60}}}"#,
        )
        .unwrap();
        assert!(
            report.limits.is_empty(),
            "a relative reset alone says nothing: {report:?}"
        );
    }

    #[test]
    fn endpoint_entries_are_named_and_never_repeat_an_id() {
        let report = endpoint(
            r#"{"plan_type":"pro",
                "rate_limit":{"primary_window":{"used_percent":1}},
                "additional_rate_limits":[
                  {"limit_name":"GPT-5","metered_feature":"codex","rate_limit":{"primary_window":{"used_percent":99}}},
                  {"limit_name":"first","metered_feature":"codex_b","rate_limit":{"primary_window":{"used_percent":2}}},
                  {"limit_name":"second","metered_feature":"codex-b","rate_limit":{"primary_window":{"used_percent":3}}},
                  {"limit_name":"codex_a","rate_limit":{"secondary_window":{"used_percent":4}}},
                  {"limit_name":"no id","metered_feature":"a b","rate_limit":{"primary_window":{"used_percent":5}}},
                  {"metered_feature":"codex_c"},
                  "garbage", 7, null]}"#,
        )
        .unwrap();
        let seen: Vec<_> = report
            .limits
            .iter()
            .map(|l| (l.limit_id(), l.limit_name.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [
                ("codex", None),
                ("codex_a", Some("codex_a")),
                ("codex_b", Some("first"))
            ]
        );
        assert_eq!(
            report
                .limit("codex")
                .unwrap()
                .primary
                .unwrap()
                .used_percent
                .get(),
            1.0
        );
    }

    #[test]
    fn an_endpoint_body_without_usage_is_none() {
        for body in [r#"{"detail":"Unauthorized"}"#, "{}", "[]", "null", "<html>"] {
            assert_eq!(endpoint(body), None, "{body:?}");
        }
        let report = endpoint(r#"{"plan_type":"free","rate_limit":null}"#).unwrap();
        assert_eq!(report.plan_type.as_deref(), Some("free"));
        assert!(report.limits.is_empty());
    }

    #[test]
    fn written_reset_times_round_up_and_stay_plausible() {
        let mut limit = LimitUsage::new("codex").unwrap();
        limit.primary = Some(
            UsageWindow::new(Percent::new(5.0).unwrap())
                .with_resets_at(Timestamp::from_millis(1_700_000_000_001)),
        );
        limit.secondary =
            Some(UsageWindow::new(Percent::new(5.0).unwrap()).with_resets_at(LAST_PLAUSIBLE_TIME));
        let mut report = UsageReport::default();
        report.push(limit);
        let written = report.to_headers();
        assert_eq!(written[RESET], "1700000001");
        let last_second = (LAST_PLAUSIBLE_TIME.as_millis() / 1000).to_string();
        assert_eq!(written["x-codex-secondary-reset-at"], last_second.as_str());
        let json: Value = serde_json::from_str(&report.to_event_json()).unwrap();
        assert_eq!(
            json["rate_limits"]["primary"]["reset_at"],
            1_700_000_001_u64
        );
    }

    #[test]
    fn written_percentages_are_short_and_exact() {
        for value in [
            0.0,
            1e-3,
            12.5,
            100.0,
            1.0 / 3.0,
            5e-324,
            1e-7,
            99.99999999999999,
        ] {
            let percent = Percent::new(value).unwrap();
            let text = percent_text(percent);
            assert!(text.len() <= 25, "{text}");
            assert_eq!(text.parse::<f64>().unwrap(), value, "{text}");
        }
        assert_eq!(percent_text(Percent::FULL), "100");
    }

    #[test]
    fn text_that_cannot_be_a_header_is_left_out_of_written_headers() {
        let mut limit = LimitUsage::new("codex").unwrap();
        limit.primary = Some(UsageWindow::new(Percent::new(5.0).unwrap()));
        limit.limit_name = Some("bad\nname".to_owned());
        let mut report = UsageReport::default();
        report.push(limit);
        let written = report.to_headers();
        assert_eq!(written.get("x-codex-limit-name"), None);
        assert_eq!(written[USED], "5");
    }

    #[test]
    fn a_metered_limit_with_only_a_secondary_window_is_written_so_it_reads_back() {
        let report = UsageReport::from_headers(&headers(&[
            ("x-codex-other-primary-used-percent", "NaN"),
            ("x-codex-other-secondary-used-percent", "7"),
        ]));
        assert_eq!(report.limits.len(), 1);
        let written = report.to_headers();
        assert_eq!(written["x-codex-other-primary-used-percent"], "0");
        assert_eq!(UsageReport::from_headers(&written), report);
    }

    #[test]
    fn usage_headers_are_recognised_by_their_family_endings() {
        for name in [
            "x-codex-primary-used-percent",
            "x-codex-secondary-reset-at",
            "x-codex-bengalfox-limit-name",
            "x-codex-credits-balance",
            "x-a_b-primary-window-minutes",
        ] {
            assert!(is_usage_header(name), "{name}");
        }
        for name in [
            "x-codex-promo-message",
            "x-primary-used-percent",
            "content-type",
            "x-codex-credits-other",
        ] {
            assert!(!is_usage_header(name), "{name}");
        }
    }
}
