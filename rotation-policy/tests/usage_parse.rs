//! The usage parsers on realistic answers (snapshots), on hostile ones (bounded, cheap), and
//! on anything at all (property tests: never a panic, every value within its invariants,
//! and what a parser produced survives being written back and read again).

use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use proptest::sample::select;
use rotation_policy::LAST_PLAUSIBLE_TIME;
use rotation_policy::usage::{
    DEFAULT_LIMIT, MAX_JSON_BYTES, MAX_LIMIT_NAME_LEN, MAX_LIMITS, MAX_WINDOW_MINUTES, UsageReport,
    UsageWindow, normalize_limit_id,
};
use serde_json::{Value, json};

// ---- helpers ----

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

/// Every rule a report promises, whatever it was read from.
fn assert_invariants(report: &UsageReport) {
    assert!(
        report.limits.len() <= MAX_LIMITS,
        "{} limits",
        report.limits.len()
    );
    for (i, limit) in report.limits.iter().enumerate() {
        let id = limit.limit_id();
        assert_eq!(
            normalize_limit_id(id).as_deref(),
            Some(id),
            "id {id:?} not normalized"
        );
        assert!(limit.has_windows(), "limit {id} without windows");
        if i > 0 {
            assert_ne!(id, DEFAULT_LIMIT, "codex is not first");
            let previous = report.limits[i - 1].limit_id();
            assert!(
                previous == DEFAULT_LIMIT || previous < id,
                "ids out of order or repeated: {previous} then {id}"
            );
        }
        for window in [limit.primary, limit.secondary].into_iter().flatten() {
            assert_window(&window);
        }
        if let Some(name) = &limit.limit_name {
            assert_short_text(name);
        }
    }
    if let Some(plan) = &report.plan_type {
        assert_short_text(plan);
    }
    if let Some(balance) = report.credits.as_ref().and_then(|c| c.balance.as_ref()) {
        assert_short_text(balance);
    }
}

fn assert_window(window: &UsageWindow) {
    let used = window.used_percent.get();
    assert!(
        used.is_finite() && (0.0..=100.0).contains(&used),
        "used {used}"
    );
    assert!(
        used > 0.0 || window.window_minutes.is_some() || window.resets_at.is_some(),
        "a window that says nothing: {window:?}"
    );
    if let Some(minutes) = window.window_minutes {
        assert!(
            (1..=MAX_WINDOW_MINUTES).contains(&minutes),
            "minutes {minutes}"
        );
    }
    if let Some(at) = window.resets_at {
        assert!(at <= LAST_PLAUSIBLE_TIME, "reset {at:?}");
        assert_eq!(
            at.as_millis() % 1000,
            0,
            "reset times are read in whole seconds"
        );
    }
}

fn assert_short_text(text: &str) {
    assert!(
        !text.is_empty() && text.len() <= MAX_LIMIT_NAME_LEN,
        "{text:?}"
    );
    assert_eq!(text.trim(), text);
    assert!(!text.chars().any(char::is_control), "{text:?}");
}

/// The report without what headers cannot carry (the plan type).
fn without_plan(report: &UsageReport) -> UsageReport {
    let mut report = report.clone();
    report.plan_type = None;
    report
}

/// Headers written by `to_headers`, as sorted `name: value` lines (for snapshots).
fn header_lines(map: &HeaderMap) -> Vec<String> {
    let mut lines: Vec<String> = map
        .iter()
        .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap_or("<bytes>")))
        .collect();
    lines.sort();
    lines
}

// ---- realistic answers (snapshots) ----

#[test]
fn default_family_with_both_windows() {
    let map = headers(&[
        ("x-codex-primary-used-percent", "42.5"),
        ("x-codex-primary-window-minutes", "300"),
        ("x-codex-primary-reset-at", "1767225600"),
        ("x-codex-secondary-used-percent", "17"),
        ("x-codex-secondary-window-minutes", "10080"),
        ("x-codex-secondary-reset-at", "1767744000"),
        ("content-type", "text/event-stream"),
    ]);
    let report = UsageReport::from_headers(&map);
    assert_invariants(&report);
    insta::assert_yaml_snapshot!(report);
    insta::assert_yaml_snapshot!("default_family_written", header_lines(&report.to_headers()));
    assert_eq!(UsageReport::from_headers(&report.to_headers()), report);
}

#[test]
fn metered_family_with_its_limit_name() {
    let map = headers(&[
        ("x-codex-primary-used-percent", "12.5"),
        ("x-codex-primary-window-minutes", "300"),
        ("x-codex-bengalfox-primary-used-percent", "80"),
        ("x-codex-bengalfox-primary-window-minutes", "300"),
        ("x-codex-bengalfox-primary-reset-at", "1767225600"),
        ("x-codex-bengalfox-secondary-used-percent", "35.25"),
        ("x-codex-bengalfox-limit-name", "gpt-5.2-codex-sonic"),
    ]);
    let report = UsageReport::from_headers(&map);
    assert_invariants(&report);
    insta::assert_yaml_snapshot!(report);
    assert_eq!(UsageReport::from_headers(&report.to_headers()), report);
}

#[test]
fn credits_headers() {
    let map = headers(&[
        ("x-codex-primary-used-percent", "100"),
        ("x-codex-primary-reset-at", "1767225600"),
        ("x-codex-credits-has-credits", "True"),
        ("x-codex-credits-unlimited", "0"),
        ("x-codex-credits-balance", "125.40"),
    ]);
    let report = UsageReport::from_headers(&map);
    assert_invariants(&report);
    insta::assert_yaml_snapshot!(report);
    insta::assert_yaml_snapshot!("credits_written", header_lines(&report.to_headers()));
    assert_eq!(UsageReport::from_headers(&report.to_headers()), report);
}

#[test]
fn garbage_mix_of_headers() {
    let mut map = headers(&[
        ("x-codex-primary-used-percent", "NaN"),
        ("x-codex-primary-window-minutes", "300"),
        ("x-codex-secondary-used-percent", " 55.5 "),
        ("x-codex-secondary-window-minutes", "-10080"),
        ("x-codex-secondary-reset-at", "99999999999999999999"),
        ("x-codex-alpha-primary-used-percent", "1e309"),
        ("x-codex-alpha-secondary-used-percent", "0"),
        ("x-codex-beta-primary-used-percent", "2500"),
        ("x-codex-beta-primary-window-minutes", "0"),
        ("x-codex-beta-primary-reset-at", "253402300800"),
        ("x-codex-beta-limit-name", "   "),
        ("x-codex-gamma-primary-used-percent", "130"),
        ("x-codex-gamma-primary-window-minutes", "1.5"),
        ("x-codex-gamma-limit-name", "  gpt-5 gamma  "),
        ("x-codex_delta-primary-used-percent", "10"),
        ("x-codex-credits-has-credits", "yes"),
        ("x-codex-credits-unlimited", "false"),
    ]);
    map.insert(
        "x-codex-gamma-primary-reset-at",
        HeaderValue::from_bytes(b"17672\xff25600").unwrap(),
    );
    let report = UsageReport::from_headers(&map);
    assert_invariants(&report);
    insta::assert_yaml_snapshot!(report);
    assert_eq!(UsageReport::from_headers(&report.to_headers()), report);
}

#[test]
fn rate_limits_event() {
    let data = br#"{"type":"codex.rate_limits","plan_type":"pro",
        "rate_limits":{"primary":{"used_percent":63.2,"window_minutes":300,"reset_at":1767225600},
                       "secondary":{"used_percent":21,"window_minutes":10080,"reset_at":1767744000}},
        "credits":{"has_credits":true,"unlimited":false,"balance":"40.00"},
        "metered_limit_name":"codex-bengalfox"}"#;
    let report = UsageReport::from_event(data).unwrap();
    assert_invariants(&report);
    insta::assert_yaml_snapshot!(report);
    let written = report.to_event_json();
    insta::assert_snapshot!("rate_limits_event_written", written);
    assert_eq!(UsageReport::from_event(written.as_bytes()), Some(report));
}

#[test]
fn usage_endpoint_answer() {
    let body = br#"{
      "plan_type": "plus",
      "rate_limit": {
        "allowed": true,
        "limit_reached": false,
        "primary_window": {"used_percent": 9, "limit_window_seconds": 18000,
                           "reset_after_seconds": 14400, "reset_at": 1767225600},
        "secondary_window": {"used_percent": 47, "limit_window_seconds": 604800,
                             "reset_after_seconds": 400000, "reset_at": 1767744000}
      },
      "additional_rate_limits": [
        {"limit_name": "GPT-5.2-Codex-Sonic", "metered_feature": "codex_bengalfox",
         "rate_limit": {"allowed": true, "limit_reached": false,
           "primary_window": {"used_percent": 100, "limit_window_seconds": 18001,
                              "reset_after_seconds": 60, "reset_at": 1767222060},
           "secondary_window": null}}
      ],
      "credits": {"has_credits": false, "unlimited": false, "balance": "0",
                  "approx_local_messages": [0, 0], "approx_cloud_messages": [0, 0]},
      "rate_limit_reached_type": null
    }"#;
    let report = UsageReport::from_usage_json(body).unwrap();
    assert_invariants(&report);
    insta::assert_yaml_snapshot!(report);
    assert_eq!(
        UsageReport::from_headers(&report.to_headers()),
        without_plan(&report)
    );
}

// ---- hostile inputs: bounded and cheap ----

/// A quadratic parse of this many headers would take minutes; the linear one takes
/// milliseconds. The bound is loose so a slow machine never fails it.
const HOSTILE_BOUND: Duration = Duration::from_secs(5);

#[test]
fn thousands_of_header_families_stay_cheap_and_bounded() {
    let mut map = HeaderMap::new();
    // A HeaderMap holds at most about 24 000 entries (it grows at 3/4 of 32 768).
    for i in (0..8_000_u32).rev() {
        for (suffix, value) in [
            ("primary-used-percent", "50"),
            ("secondary-used-percent", "NaN"),
            ("limit-name", "model"),
        ] {
            let name = format!("x-limit-{i:05}-{suffix}");
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static(value),
            );
        }
    }
    map.insert(
        "x-codex-primary-used-percent",
        HeaderValue::from_static("1"),
    );
    let started = Instant::now();
    let report = UsageReport::from_headers(&map);
    assert!(started.elapsed() < HOSTILE_BOUND, "{:?}", started.elapsed());
    assert_invariants(&report);
    let ids: Vec<&str> = report.limits.iter().map(|l| l.limit_id()).collect();
    let mut expected = vec!["codex".to_owned()];
    expected.extend((0..MAX_LIMITS - 1).map(|i| format!("limit_{i:05}")));
    assert_eq!(ids, expected);

    // Writing replaces all 24 000 upstream usage headers with the report's few.
    let mut answer = map.clone();
    answer.insert("content-type", HeaderValue::from_static("application/json"));
    let started = Instant::now();
    report.write_headers(&mut answer);
    assert!(started.elapsed() < HOSTILE_BOUND, "{:?}", started.elapsed());
    assert_eq!(answer.len(), report.to_headers().len() + 1);
    assert_eq!(UsageReport::from_headers(&answer), report);
}

#[test]
fn huge_header_values_are_absent() {
    let long_number = "1".repeat(100_000);
    let long_name = "n".repeat(100_000);
    let report = UsageReport::from_headers(&headers(&[
        ("x-codex-primary-used-percent", &long_number),
        ("x-codex-secondary-used-percent", "5"),
        ("x-codex-secondary-window-minutes", &long_number),
        ("x-codex-limit-name", &long_name),
    ]));
    assert_invariants(&report);
    let codex = report.limit("codex").unwrap();
    assert_eq!(codex.primary, None);
    assert_eq!(codex.secondary.unwrap().window_minutes, None);
    assert_eq!(codex.limit_name, None);
}

#[test]
fn oversized_or_deeply_nested_json_is_refused_without_harm() {
    // Just over the size bound, otherwise a fine event: refused unread.
    let padding = " ".repeat(MAX_JSON_BYTES);
    let big = format!(
        r#"{{"type":"codex.rate_limits","rate_limits":{{"primary":{{"used_percent":5}}}}}}{padding}"#
    );
    assert_eq!(UsageReport::from_event(big.as_bytes()), None);
    assert_eq!(UsageReport::from_usage_json(big.as_bytes()), None);

    // Nesting deeper than serde_json's recursion limit, in a field that is read and in one
    // that is skipped: no stack overflow, and the skipped one does not spoil the event.
    let depth = 20_000;
    let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let read = format!(r#"{{"type":"codex.rate_limits","rate_limits":{deep}}}"#);
    let skipped = format!(
        r#"{{"type":"codex.rate_limits","x":{deep},"rate_limits":{{"primary":{{"used_percent":5}}}}}}"#
    );
    for data in [&read, &skipped] {
        if let Some(report) = UsageReport::from_event(data.as_bytes()) {
            assert_invariants(&report);
        }
    }
    let endpoint = format!(r#"{{"plan_type":"pro","additional_rate_limits":{deep}}}"#);
    if let Some(report) = UsageReport::from_usage_json(endpoint.as_bytes()) {
        assert_invariants(&report);
    }

    // Thousands of metered limits in one answer: at most MAX_LIMITS kept, the smallest ids.
    let entries: Vec<String> = (0..800)
        .rev()
        .map(|i| {
            format!(
                r#"{{"metered_feature":"m{i:04}","rate_limit":{{"primary_window":{{"used_percent":1}}}}}}"#
            )
        })
        .collect();
    let body = format!(r#"{{"additional_rate_limits":[{}]}}"#, entries.join(","));
    assert!(body.len() <= MAX_JSON_BYTES);
    let report = UsageReport::from_usage_json(body.as_bytes()).unwrap();
    assert_invariants(&report);
    let ids: Vec<&str> = report.limits.iter().map(|l| l.limit_id()).collect();
    let expected: Vec<String> = (0..MAX_LIMITS).map(|i| format!("m{i:04}")).collect();
    assert_eq!(ids, expected);
}

// ---- property tests ----

/// Header name endings of a family, and the credits headers.
const ENDINGS: &[&str] = &[
    "primary-used-percent",
    "primary-window-minutes",
    "primary-reset-at",
    "secondary-used-percent",
    "secondary-window-minutes",
    "secondary-reset-at",
    "limit-name",
];

/// Values a hostile or broken upstream might send, beside random ones.
const TRICKY_VALUES: &[&str] = &[
    "NaN",
    "nan",
    "inf",
    "-inf",
    "infinity",
    "-1",
    "-0",
    "0",
    "0.0",
    "1",
    "1e309",
    "1e-7",
    "5e-324",
    "12.5",
    " 42 ",
    "100",
    "130",
    "1000",
    "1000.5",
    "300",
    "10080",
    "576000",
    "576001",
    "1767225600",
    "253402300799",
    "253402300800",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
    "true",
    "FALSE",
    "yes",
    "",
    "gpt-5.2-codex-sonic",
    "modèle ☃",
    "  padded  ",
    "0x10",
    "1_000",
];

fn header_name() -> BoxedStrategy<String> {
    let family = prop_oneof![
        Just("codex".to_owned()),
        Just("codex-bengalfox".to_owned()),
        Just("codex-secondary".to_owned()),
        Just("codex_other".to_owned()),
        "[a-z0-9-]{1,8}",
        "[a-z0-9_.-]{0,70}",
    ];
    prop_oneof![
        4 => (family, select(ENDINGS)).prop_map(|(f, e)| format!("x-{f}-{e}")),
        1 => select(&[
            "x-codex-credits-has-credits",
            "x-codex-credits-unlimited",
            "x-codex-credits-balance",
        ][..]).prop_map(str::to_owned),
        1 => "[a-z0-9_-]{1,24}",
    ]
    .boxed()
}

fn header_value() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        3 => select(TRICKY_VALUES).prop_map(|v| v.as_bytes().to_vec()),
        1 => any::<f64>().prop_map(|v| v.to_string().into_bytes()),
        1 => any::<i64>().prop_map(|v| v.to_string().into_bytes()),
        1 => "\\PC{0,24}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..24),
    ]
    .boxed()
}

fn header_map() -> impl Strategy<Value = HeaderMap> {
    prop::collection::vec((header_name(), header_value()), 0..48).prop_map(|pairs| {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(&value),
            ) {
                map.append(name, value);
            }
        }
        map
    })
}

/// Keys the event and endpoint parsers look for, so random JSON often hits them.
const KEYS: &[&str] = &[
    "type",
    "plan_type",
    "rate_limits",
    "rate_limit",
    "primary",
    "secondary",
    "primary_window",
    "secondary_window",
    "used_percent",
    "window_minutes",
    "limit_window_seconds",
    "reset_at",
    "reset_after_seconds",
    "credits",
    "has_credits",
    "unlimited",
    "balance",
    "metered_limit_name",
    "limit_name",
    "metered_feature",
    "additional_rate_limits",
    "allowed",
    "limit_reached",
];

/// A string replaced by a number out of a double's range once the JSON is text.
const BIG: &str = "@BIG@";

fn json_text(value: &Value) -> String {
    value.to_string().replace(&format!("\"{BIG}\""), "1e999")
}

fn json_leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        (0.0..=120.0_f64).prop_map(Value::from),
        (0_u64..=300_000_000_000).prop_map(Value::from),
        select(TRICKY_VALUES).prop_map(Value::from),
        Just(Value::from(BIG)),
        Just(Value::from("codex.rate_limits")),
        "\\PC{0,16}".prop_map(Value::from),
    ]
    .boxed()
}

fn any_json() -> BoxedStrategy<Value> {
    json_leaf()
        .prop_recursive(4, 64, 8, |inner| {
            let key = prop_oneof![select(KEYS).prop_map(str::to_owned), "[a-z_]{1,8}"];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((key, inner), 0..8)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
        .boxed()
}

/// A number field: mostly plausible, sometimes not.
fn number_field() -> BoxedStrategy<Option<Value>> {
    prop::option::of(prop_oneof![
        4 => (0.0..=120.0_f64).prop_map(Value::from),
        4 => (0_u64..=1_000).prop_map(Value::from),
        2 => (0_u64..=300_000_000_000).prop_map(Value::from),
        1 => Just(json!(-1)),
        1 => Just(json!(1.5)),
        1 => Just(json!(300.0)),
        1 => Just(json!("12")),
        1 => Just(Value::Null),
        1 => Just(Value::from(BIG)),
        1 => any::<f64>().prop_map(Value::from),
    ])
    .boxed()
}

fn text_field() -> BoxedStrategy<Option<Value>> {
    prop::option::of(prop_oneof![
        select(
            &[
                "pro",
                " plus ",
                "9.99",
                "GPT-5.2-Codex-Sonic",
                "modèle ☃",
                "",
                "a\u{7}b"
            ][..]
        )
        .prop_map(Value::from),
        "\\PC{0,20}".prop_map(Value::from),
        "[a-z]{120,140}".prop_map(Value::from),
        Just(json!(12.5)),
        Just(Value::Null),
    ])
    .boxed()
}

fn id_field() -> BoxedStrategy<Option<Value>> {
    prop::option::of(prop_oneof![
        select(
            &[
                "codex",
                "codex-bengalfox",
                "Codex_Other",
                "a/b",
                "",
                "m1",
                "m2",
                "m3"
            ][..]
        )
        .prop_map(Value::from),
        "[a-z0-9_-]{1,8}".prop_map(Value::from),
        Just(json!(7)),
        Just(Value::Null),
    ])
    .boxed()
}

fn bool_field() -> BoxedStrategy<Option<Value>> {
    prop::option::of(prop_oneof![
        4 => any::<bool>().prop_map(Value::from),
        1 => Just(json!("true")),
        1 => Just(json!(1)),
    ])
    .boxed()
}

fn object(fields: Vec<(&str, Option<Value>)>) -> Value {
    Value::Object(
        fields
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_owned(), v?)))
            .collect(),
    )
}

fn window_field(length_key: &'static str) -> BoxedStrategy<Option<Value>> {
    prop::option::of(prop_oneof![
        8 => (number_field(), number_field(), number_field()).prop_map(move |(u, l, r)| {
            object(vec![("used_percent", u), (length_key, l), ("reset_at", r)])
        }),
        1 => any_json(),
    ])
    .boxed()
}

fn credits_field() -> BoxedStrategy<Option<Value>> {
    prop::option::of(
        (bool_field(), bool_field(), text_field()).prop_map(|(h, u, b)| {
            object(vec![("has_credits", h), ("unlimited", u), ("balance", b)])
        }),
    )
    .boxed()
}

fn event_json() -> impl Strategy<Value = Value> {
    let rate_limits = prop::option::of(
        (
            window_field("window_minutes"),
            window_field("window_minutes"),
        )
            .prop_map(|(p, s)| object(vec![("primary", p), ("secondary", s)])),
    );
    (
        prop_oneof![9 => Just(Some(json!("codex.rate_limits"))), 1 => text_field()],
        text_field(),
        rate_limits,
        credits_field(),
        id_field(),
        id_field(),
    )
        .prop_map(|(kind, plan, rate_limits, credits, metered, name)| {
            object(vec![
                ("type", kind),
                ("plan_type", plan),
                ("rate_limits", rate_limits),
                ("credits", credits),
                ("metered_limit_name", metered),
                ("limit_name", name),
            ])
        })
}

fn endpoint_rate_limit() -> BoxedStrategy<Option<Value>> {
    prop::option::of(
        (
            bool_field(),
            window_field("limit_window_seconds"),
            window_field("limit_window_seconds"),
        )
            .prop_map(|(allowed, p, s)| {
                object(vec![
                    ("allowed", allowed),
                    ("primary_window", p),
                    ("secondary_window", s),
                ])
            }),
    )
    .boxed()
}

fn endpoint_json() -> impl Strategy<Value = Value> {
    let entry = (text_field(), id_field(), endpoint_rate_limit()).prop_map(|(n, f, r)| {
        object(vec![
            ("limit_name", n),
            ("metered_feature", f),
            ("rate_limit", r),
        ])
    });
    (
        text_field(),
        endpoint_rate_limit(),
        credits_field(),
        prop::option::of(prop::collection::vec(entry, 0..24).prop_map(Value::Array)),
    )
        .prop_map(|(plan, rate_limit, credits, additional)| {
            object(vec![
                ("plan_type", plan),
                ("rate_limit", rate_limit),
                ("credits", credits),
                ("additional_rate_limits", additional),
            ])
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn any_headers_read_within_invariants_and_round_trip(map in header_map()) {
        let report = UsageReport::from_headers(&map);
        assert_invariants(&report);
        prop_assert_eq!(report.plan_type.as_ref(), None);

        let written = report.to_headers();
        prop_assert_eq!(&UsageReport::from_headers(&written), &report);
        // Written over the upstream's own headers, the report still reads back unchanged:
        // nothing of the upstream's usage is left to mix in.
        let mut answer = map.clone();
        report.write_headers(&mut answer);
        prop_assert_eq!(&UsageReport::from_headers(&answer), &report);
    }

    #[test]
    fn any_bytes_never_panic_the_json_parsers(data in prop::collection::vec(any::<u8>(), 0..256)) {
        for report in [UsageReport::from_event(&data), UsageReport::from_usage_json(&data)]
            .into_iter()
            .flatten()
        {
            assert_invariants(&report);
        }
    }

    #[test]
    fn any_json_reads_within_invariants(value in any_json(), typed in any::<bool>()) {
        let value = match value {
            Value::Object(mut fields) if typed => {
                fields.insert("type".to_owned(), json!("codex.rate_limits"));
                Value::Object(fields)
            }
            other => other,
        };
        let text = json_text(&value);
        for report in [
            UsageReport::from_event(text.as_bytes()),
            UsageReport::from_usage_json(text.as_bytes()),
        ]
        .into_iter()
        .flatten()
        {
            assert_invariants(&report);
            prop_assert_eq!(
                &UsageReport::from_headers(&report.to_headers()),
                &without_plan(&report)
            );
        }
    }

    #[test]
    fn events_read_within_invariants_and_round_trip(value in event_json()) {
        let text = json_text(&value);
        let Some(report) = UsageReport::from_event(text.as_bytes()) else {
            prop_assert_ne!(value.get("type"), Some(&json!("codex.rate_limits")));
            return Ok(());
        };
        assert_invariants(&report);
        prop_assert!(report.limits.len() <= 1);
        let again = UsageReport::from_event(report.to_event_json().as_bytes());
        prop_assert_eq!(again.as_ref(), Some(&report));
        prop_assert_eq!(
            &UsageReport::from_headers(&report.to_headers()),
            &without_plan(&report)
        );
    }

    #[test]
    fn endpoint_answers_read_within_invariants_and_round_trip(value in endpoint_json()) {
        let text = json_text(&value);
        let Some(report) = UsageReport::from_usage_json(text.as_bytes()) else {
            prop_assert_eq!(value, json!({}));
            return Ok(());
        };
        assert_invariants(&report);
        prop_assert_eq!(
            &UsageReport::from_headers(&report.to_headers()),
            &without_plan(&report)
        );
    }
}
