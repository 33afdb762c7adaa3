//! Shared state: the document merge is a join (property tests, and against a field-by-field
//! oracle written from the merge-rule table), reading hostile or newer files never panics,
//! the on-disk format (insta snapshot), and hand-checked scenarios of processes sharing
//! state through a file. `state_machine.rs` checks `Pool::merge_state` against the
//! reference model.

use std::cmp::Reverse;
use std::time::Duration;

use proptest::prelude::*;
use rotation_policy::{
    AccountId, AccountState, Cooldown, CooldownReason, Disabled, DisabledReason, FamilyState,
    LAST_PLAUSIBLE_TIME, Outcome, POLICY_STATE_VERSION, PolicyConfig, PolicyState, Pool, Request,
    Selection, Timestamp,
};
use serde_json::{Value, json};

fn id(s: &str) -> AccountId {
    AccountId::new(s).unwrap()
}

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn quiet_config() -> PolicyConfig {
    let mut c = PolicyConfig::default();
    c.jitter_percent = 0;
    c.bucket = None;
    c
}

fn pool_of(ids: &[&str]) -> Pool {
    let mut pool = Pool::new(quiet_config(), 0).unwrap();
    for i in ids {
        pool.add(id(i)).unwrap();
    }
    pool
}

fn pick(pool: &mut Pool, family: &str, now: u64) -> Selection {
    pool.select(&mut Request::new(family), at(now))
}

/// Serves one request on whatever `pool` selects and reports `outcome` for it.
fn serve(pool: &mut Pool, family: &str, outcome: Outcome, now: u64) -> AccountId {
    let mut request = Request::new(family);
    let Selection::Account(account) = pool.select(&mut request, at(now)) else {
        panic!("no account to serve {family} at {now}");
    };
    pool.report(&mut request, &account, outcome, at(now));
    account
}

fn limited(secs: u64) -> Outcome {
    Outcome::RateLimited {
        retry_after: Some(Duration::from_secs(secs)),
    }
}

fn ids(state: &PolicyState) -> Vec<&str> {
    state.accounts.keys().map(AccountId::as_str).collect()
}

// ---------------------------------------------------------------------------------------
// The document merge is a join.

const IDS: [&str; 3] = ["a", "b", "c"];
const FAMILIES: [&str; 3] = ["gpt-5", "o3", "*"];
const COOLDOWN_REASONS: [CooldownReason; 3] = [
    CooldownReason::Unauthorized,
    CooldownReason::Forbidden,
    CooldownReason::FailureBurst,
];
const DISABLED_REASONS: [DisabledReason; 4] = [
    DisabledReason::Manual,
    DisabledReason::Unauthorized,
    DisabledReason::LoginRequired,
    DisabledReason::Deactivated,
];

/// The longest cooldown span a document keeps, in ms.
const SPAN_MS: u64 = 30 * 24 * 60 * 60 * 1_000;

/// Times from a small range, so that equal times (the tie-breaks) are common, plus the
/// edges of what a document keeps: the longest span from the small times, the last
/// plausible time, and the largest.
fn time() -> impl Strategy<Value = Timestamp> {
    let last = LAST_PLAUSIBLE_TIME.as_millis();
    prop_oneof![
        12 => (0u64..6).prop_map(Timestamp::from_millis),
        1 => (0u64..6).prop_map(|t| Timestamp::from_millis(SPAN_MS + t)),
        1 => (0u64..2).prop_map(move |t| Timestamp::from_millis(last + t)),
        1 => Just(Timestamp::from_millis(u64::MAX)),
    ]
}

fn account_state() -> impl Strategy<Value = AccountState> {
    (
        proptest::option::of((time(), 0..COOLDOWN_REASONS.len(), time())),
        proptest::collection::btree_map(
            0..FAMILIES.len(),
            (time(), 0u32..3, proptest::option::of(time())),
            0..3,
        ),
        proptest::option::of((0..DISABLED_REASONS.len(), time())),
        proptest::option::of(time()),
        proptest::option::of(time()),
        (
            prop_oneof![Just(0u8), Just(50), Just(100), 0u8..=100],
            time(),
            any::<bool>(),
            0u32..3,
            0u32..3,
        ),
    )
        .prop_map(
            |(cooldown, families, disabled, enabled_since, refreshed_at, observation)| {
                let mut s = AccountState::default();
                s.cooldown = cooldown
                    .map(|(until, r, since)| Cooldown::new(until, COOLDOWN_REASONS[r], since));
                s.families = families
                    .into_iter()
                    .map(|(f, (until, streak, since))| {
                        let mut family = FamilyState::new(until, streak);
                        family.since = since;
                        (FAMILIES[f].to_owned(), family)
                    })
                    .collect();
                s.disabled = disabled.map(|(r, since)| Disabled::new(DISABLED_REASONS[r], since));
                s.enabled_since = enabled_since;
                s.refreshed_at = refreshed_at;
                (
                    s.health,
                    s.health_at,
                    s.needs_refresh,
                    s.unauthorized_streak,
                    s.burst_streak,
                ) = observation;
                s
            },
        )
}

fn policy_state() -> impl Strategy<Value = PolicyState> {
    proptest::collection::btree_map(0..IDS.len(), account_state(), 0..4).prop_map(|accounts| {
        let mut state = PolicyState::default();
        for (i, s) in accounts {
            state.accounts.insert(id(IDS[i]), s);
        }
        state
    })
}

fn merged(a: &PolicyState, b: &PolicyState) -> PolicyState {
    let mut out = a.clone();
    out.merge(b);
    out
}

/// Whether a document keeps `t`: no later than the end of year 9999.
fn real(t: Timestamp) -> bool {
    t <= LAST_PLAUSIBLE_TIME
}

/// Whether a cooldown from `since` to `until` runs at most 30 days.
fn short(since: Timestamp, until: Timestamp) -> bool {
    until.as_millis().saturating_sub(since.as_millis()) <= SPAN_MS
}

/// The merge-rule table, one field at a time, for one account (deliberately plain). What no
/// writer can have written (a time after year 9999, a cooldown longer than 30 days) is
/// absent, on either side.
fn oracle_join(a: &AccountState, b: &AccountState) -> AccountState {
    let cooldown_rank = |r: CooldownReason| match r {
        CooldownReason::Unauthorized => 0,
        CooldownReason::FailureBurst => 1,
        _ => 2, // Forbidden
    };
    let disabled_rank = |r: DisabledReason| {
        DISABLED_REASONS
            .iter()
            .position(|&x| x == r)
            .expect("every reason is listed")
    };
    let cooldown = |c: Option<Cooldown>| {
        c.filter(|c| real(c.until) && real(c.since) && short(c.since, c.until))
    };
    let mut out = AccountState::default();
    out.cooldown = match (cooldown(a.cooldown), cooldown(b.cooldown)) {
        (Some(x), Some(y)) => {
            let later = if y.until != x.until {
                y.until > x.until
            } else if y.reason != x.reason {
                cooldown_rank(y.reason) > cooldown_rank(x.reason)
            } else {
                y.since > x.since
            };
            Some(if later { y } else { x })
        }
        (x, y) => x.or(y),
    };
    let stamp = |t: Option<Timestamp>| t.filter(|&t| real(t));
    out.refreshed_at = stamp(a.refreshed_at).max(stamp(b.refreshed_at));
    let family = |s: &AccountState, name: &String| {
        s.families.get(name).copied().filter(|f| {
            real(f.until)
                && f.since
                    .is_none_or(|since| real(since) && short(since, f.until))
        })
    };
    for name in a.families.keys().chain(b.families.keys()) {
        let kept = [family(a, name), family(b, name)];
        let Some(end) = kept.iter().flatten().max_by(|x, y| {
            // A cooldown with a start beats one without; then the later end, the later start.
            (x.since.is_some(), x.until, x.since).cmp(&(y.since.is_some(), y.until, y.since))
        }) else {
            continue;
        };
        let streak = kept.iter().flatten().map(|f| f.streak).max().unwrap();
        let mut merged = FamilyState::new(end.until, streak);
        merged.since = end.since;
        out.families.insert(name.clone(), merged);
    }
    let disabled = |d: Option<Disabled>| d.filter(|d| real(d.since));
    out.disabled = match (disabled(a.disabled), disabled(b.disabled)) {
        (Some(x), Some(y)) => {
            let later = if y.since != x.since {
                y.since > x.since
            } else {
                disabled_rank(y.reason) > disabled_rank(x.reason)
            };
            Some(if later { y } else { x })
        }
        (x, y) => x.or(y),
    };
    out.enabled_since = stamp(a.enabled_since).max(stamp(b.enabled_since));
    let key = |s: &AccountState| {
        (
            s.health_at,
            Reverse(s.health),
            s.needs_refresh,
            s.unauthorized_streak,
            s.burst_streak,
        )
    };
    // An observation stamped after year 9999 is none.
    let none = AccountState::default();
    let (a, b) = (
        if real(a.health_at) { a } else { &none },
        if real(b.health_at) { b } else { &none },
    );
    let winner = if key(b) > key(a) { b } else { a };
    out.health = winner.health;
    out.health_at = winner.health_at;
    out.needs_refresh = winner.needs_refresh;
    out.unauthorized_streak = winner.unauthorized_streak;
    out.burst_streak = winner.burst_streak;
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn merge_is_commutative(a in policy_state(), b in policy_state()) {
        prop_assert_eq!(merged(&a, &b), merged(&b, &a));
    }

    #[test]
    fn merge_is_associative(a in policy_state(), b in policy_state(), c in policy_state()) {
        prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
    }

    /// Idempotent on what a merge keeps: merging a document with itself (or with nothing)
    /// only drops what no writer can have written, and then changes nothing more.
    #[test]
    fn merge_is_idempotent_and_an_upper_bound(a in policy_state(), b in policy_state()) {
        let kept = merged(&a, &PolicyState::default());
        prop_assert_eq!(merged(&a, &a), kept.clone());
        prop_assert_eq!(merged(&kept, &kept), kept.clone());
        prop_assert_eq!(merged(&PolicyState::default(), &a), kept.clone());
        let ab = merged(&a, &b);
        prop_assert_eq!(merged(&ab, &a), ab.clone());
        prop_assert_eq!(merged(&ab, &b), ab);
    }

    #[test]
    fn merge_follows_the_rule_table(a in account_state(), b in account_state()) {
        let (mut left, mut right) = (PolicyState::default(), PolicyState::default());
        left.accounts.insert(id("a"), a.clone());
        right.accounts.insert(id("a"), b.clone());
        left.merge(&right);
        prop_assert_eq!(&left.accounts[&id("a")], &oracle_join(&a, &b));
    }

    #[test]
    fn serialized_documents_read_back_unchanged(a in policy_state()) {
        let json = serde_json::to_string(&a).unwrap();
        prop_assert_eq!(serde_json::from_str::<PolicyState>(&json).unwrap(), a);
    }
}

// ---------------------------------------------------------------------------------------
// Reading what another writer left: garbage never panics; newer files load.

/// Any JSON value at all.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::btree_map(".{0,10}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Mostly `valid`, sometimes any JSON at all (rarely enough that many whole documents are
/// valid, so what a loaded document does is tested too).
fn or_garbage(valid: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Value> {
    prop_oneof![40 => valid, 1 => any_json()].boxed()
}

fn json_time() -> BoxedStrategy<Value> {
    or_garbage(prop_oneof![
        30 => (0u64..3_000_000).prop_map(Value::from),
        10 => any::<u64>().prop_map(Value::from),
        1 => Just(json!(-1)),
        1 => Just(json!(1.5)),
    ])
}

fn json_object(fields: Vec<(&'static str, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
    let fields: Vec<_> = fields
        .into_iter()
        .map(|(name, value)| proptest::option::weighted(0.6, value).prop_map(move |v| (name, v)))
        .collect();
    (fields, any::<bool>())
        .prop_map(|(fields, unknown)| {
            let mut object = serde_json::Map::new();
            for (name, value) in fields {
                if let Some(value) = value {
                    object.insert(name.to_owned(), value);
                }
            }
            if unknown {
                object.insert("from_a_newer_writer".to_owned(), json!({"x": [1, 2]}));
            }
            Value::Object(object)
        })
        .boxed()
}

/// JSON shaped like a document: the format's field names with values that are mostly of
/// the right kind (any number, unknown reasons, extreme times) and sometimes anything.
fn document_like_json() -> impl Strategy<Value = Value> {
    let reason = |known: &'static [&'static str]| {
        or_garbage(prop_oneof![
            proptest::sample::select(known).prop_map(Value::from),
            Just(json!("from-the-future")),
        ])
    };
    let cooldown = json_object(vec![
        ("until", json_time()),
        (
            "reason",
            reason(&["unauthorized", "forbidden", "failure-burst"]),
        ),
        ("since", json_time()),
    ]);
    let family = json_object(vec![
        ("until", json_time()),
        ("streak", or_garbage(any::<u32>().prop_map(Value::from))),
        ("since", json_time()),
    ]);
    let families = or_garbage(
        proptest::collection::btree_map(
            prop_oneof![Just("gpt-5".to_owned()), Just("*".to_owned()), ".{0,8}"],
            family,
            0..3,
        )
        .prop_map(|m| Value::Object(m.into_iter().collect())),
    );
    let disabled = json_object(vec![
        (
            "reason",
            reason(&["manual", "unauthorized", "login-required", "deactivated"]),
        ),
        ("since", json_time()),
    ]);
    let account = json_object(vec![
        ("cooldown", or_garbage(cooldown)),
        ("families", families),
        ("disabled", or_garbage(disabled)),
        ("enabled_since", json_time()),
        ("refreshed_at", json_time()),
        ("health", or_garbage((0u64..300).prop_map(Value::from))),
        ("health_at", json_time()),
        (
            "needs_refresh",
            or_garbage(any::<bool>().prop_map(Value::from)),
        ),
        (
            "unauthorized_streak",
            or_garbage(any::<u32>().prop_map(Value::from)),
        ),
        (
            "burst_streak",
            or_garbage(any::<u32>().prop_map(Value::from)),
        ),
    ]);
    let key = prop_oneof![
        30 => prop_oneof![Just("acct-1".to_owned()), Just("b".to_owned()), "[a-z0-9-]{1,8}"],
        1 => prop_oneof![
            Just("someone@example.com".to_owned()),
            Just(String::new()),
            "[a-z\\t\\u{202e}]{1,6}",
            "x{129}",
        ],
    ];
    (
        proptest::option::of(or_garbage(any::<u32>().prop_map(Value::from))),
        proptest::collection::btree_map(key, account, 0..4),
    )
        .prop_map(|(version, accounts)| {
            let mut doc = serde_json::Map::new();
            if let Some(v) = version {
                doc.insert("version".into(), v);
            }
            doc.insert(
                "accounts".into(),
                Value::Object(accounts.into_iter().collect()),
            );
            Value::Object(doc)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn any_json_reads_without_panicking(value in any_json()) {
        let _ = serde_json::from_value::<PolicyState>(value);
    }

    /// A document that loads is usable: keys are valid ids, health is at most 100, it writes
    /// and reads back the same, and merging it into a pool at any time never panics.
    #[test]
    fn document_like_json_reads_or_fails_cleanly(value in document_like_json(), now in any::<u64>()) {
        let Ok(state) = serde_json::from_value::<PolicyState>(value) else {
            return Ok(());
        };
        for (key, account) in &state.accounts {
            prop_assert!(AccountId::new(key.as_str()).is_ok());
            prop_assert!(account.health <= 100);
        }
        let json = serde_json::to_string(&state).unwrap();
        prop_assert_eq!(&serde_json::from_str::<PolicyState>(&json).unwrap(), &state);
        let mut pool = pool_of(&["acct-1", "b"]);
        let report = pool.merge_state(&state, at(now));
        prop_assert_eq!(report.applied + report.unknown.len(), state.accounts.len());
        // Whatever the file says, no cooldown reaches past this pool's own longest from the
        // latest start it accepts (`max_cooldown` from now).
        let c = quiet_config();
        let longest = c.max_cooldown.max(c.forbidden_cooldown).max(c.unauthorized_cooldown);
        let limit = at(now).saturating_add(c.max_cooldown).saturating_add(longest);
        for account in pool.export_state().accounts.values() {
            prop_assert!(account.cooldown.is_none_or(|c| c.until <= limit));
            prop_assert!(account.families.values().all(|f| f.until <= limit));
        }
        let mut file = state.clone();
        file.merge(&pool.take_changes());
        let _ = pick(&mut pool, "gpt-5", now);
    }
}

#[test]
fn an_email_as_account_key_is_refused_without_echoing_it() {
    let json = r#"{"version":1,"accounts":{"someone@example.com":{}}}"#;
    let err = serde_json::from_str::<PolicyState>(json).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("looks like an email"), "{message}");
    assert!(!message.contains("someone"), "{message}");
}

#[test]
fn a_newer_writers_file_loads() {
    let json = r#"{
        "version": 7,
        "written_by": {"tool": "rotation-proxy 9"},
        "accounts": {
            "acct-1": {
                "cooldown": {"until": 5000, "reason": "overloaded", "since": 10, "scope": "all"},
                "disabled": {"reason": "suspended", "since": 20},
                "families": {"gpt-5": {"until": 7000, "streak": 2, "window": "5h"}},
                "health": 250,
                "quota": {"used_percent": 97.5}
            },
            "acct-2": {}
        }
    }"#;
    let state: PolicyState = serde_json::from_str(json).unwrap();
    assert_eq!(state.version, 7);
    let a = &state.accounts[&id("acct-1")];
    // Reasons it does not know read as the nearest it does; the account still cools and
    // stays disabled.
    assert_eq!(
        a.cooldown,
        Some(Cooldown::new(
            at(5000),
            CooldownReason::FailureBurst,
            at(10)
        ))
    );
    assert_eq!(
        a.disabled,
        Some(Disabled::new(DisabledReason::Manual, at(20)))
    );
    assert_eq!(a.families["gpt-5"], FamilyState::new(at(7000), 2));
    assert_eq!(a.health, 100);
    assert_eq!(state.accounts[&id("acct-2")], AccountState::default());

    // A merge yields a document in this crate's format.
    let mut file = state;
    file.merge(&PolicyState::default());
    assert_eq!(file.version, POLICY_STATE_VERSION);
}

#[test]
fn missing_fields_are_defaults() {
    let state: PolicyState = serde_json::from_str(r#"{"accounts":{"a":{}}}"#).unwrap();
    assert_eq!(state.version, POLICY_STATE_VERSION);
    assert_eq!(state.accounts[&id("a")].health, 100);
    let empty: PolicyState = serde_json::from_str("{}").unwrap();
    assert_eq!(empty, PolicyState::default());
    let nulls: AccountState =
        serde_json::from_str(r#"{"cooldown":null,"disabled":null,"enabled_since":null}"#).unwrap();
    assert_eq!(nulls, AccountState::default());
    // A family cooldown from a writer that did not record its start yet.
    let old: AccountState =
        serde_json::from_str(r#"{"families":{"gpt-5":{"until":30000,"streak":2}}}"#).unwrap();
    assert_eq!(old.families["gpt-5"], FamilyState::new(at(30_000), 2));
    assert_eq!(old.families["gpt-5"].since, None);
    assert_eq!(
        serde_json::to_string(&old).unwrap(),
        r#"{"families":{"gpt-5":{"until":30000,"streak":2}}}"#
    );
}

/// The on-disk format, as a pool exports it after a busy minute.
#[test]
fn the_on_disk_format() {
    let mut c = quiet_config();
    c.disable_after_unauthorized = 1;
    let mut pool = Pool::new(c, 0).unwrap();
    for i in ["acct-1", "acct-2", "acct-3", "acct-4"] {
        pool.add(id(i)).unwrap();
    }
    let t0 = 1_700_000_000_000;
    assert_eq!(serve(&mut pool, "gpt-5", limited(30), t0), id("acct-1"));
    assert_eq!(
        serve(&mut pool, "gpt-5", Outcome::Forbidden, t0 + 1),
        id("acct-2")
    );
    assert_eq!(
        serve(&mut pool, "gpt-5", Outcome::Unauthorized, t0 + 2),
        id("acct-3")
    );
    pool.disable_for(&id("acct-3"), DisabledReason::LoginRequired)
        .unwrap();
    pool.mark_refreshed(&id("acct-4"), at(t0 + 3)).unwrap();
    let json = serde_json::to_string_pretty(&pool.export_state()).unwrap();
    insta::assert_snapshot!(json);
    assert_eq!(
        serde_json::from_str::<PolicyState>(&json).unwrap(),
        pool.export_state()
    );
}

// ---------------------------------------------------------------------------------------
// Processes sharing state through a file.

/// What one process does every few hundred milliseconds: write its changes into the file
/// (under the file's lock), then merge the whole file.
fn sync(pool: &mut Pool, file: &mut PolicyState, now: u64) -> usize {
    let changes = pool.take_changes();
    let written = changes.accounts.len();
    file.merge(&changes);
    pool.merge_state(file, at(now));
    written
}

#[test]
fn a_restored_cooldown_is_honoured_with_an_exact_retry_after() {
    let mut first = pool_of(&["a", "b"]);
    serve(&mut first, "gpt-5", limited(30), 1_000); // a: gpt-5 until 31 s
    serve(&mut first, "gpt-5", Outcome::Forbidden, 1_000); // b: everything until 1 h
    let saved = serde_json::to_string(&first.export_state()).unwrap();

    // The next run (or another process) starts with the same accounts.
    let mut second = pool_of(&["a", "b"]);
    let report = second.merge_state(&serde_json::from_str(&saved).unwrap(), at(6_000));
    assert_eq!((report.applied, report.changed, report.capped), (2, 2, 0));
    assert_eq!(
        pick(&mut second, "gpt-5", 6_000),
        Selection::Exhausted {
            retry_after: Duration::from_millis(25_000)
        }
    );
    // Other families are only blocked by b's account-wide cooldown.
    assert_eq!(pick(&mut second, "o3", 6_000), Selection::Account(id("a")));
    assert_eq!(
        pick(&mut second, "gpt-5", 31_000),
        Selection::Account(id("a"))
    );
    // Merging its own export back changes nothing and writes nothing.
    assert!(second.take_changes().accounts.is_empty());
}

#[test]
fn export_then_merge_into_a_fresh_pool_round_trips() {
    let mut first = pool_of(&["a", "b", "c"]);
    serve(&mut first, "gpt-5", limited(30), 1_000);
    serve(&mut first, "o3", Outcome::ServerError, 1_000);
    first
        .disable_for(&id("c"), DisabledReason::Deactivated)
        .unwrap();
    let export = first.export_state();
    let mut fresh = pool_of(&["a", "b", "c"]);
    fresh.merge_state(&export, at(1_000));
    assert_eq!(fresh.export_state(), export);
    assert_eq!(
        fresh
            .account_status(&id("a"), at(1_000))
            .unwrap()
            .family_cooldowns,
        first
            .account_status(&id("a"), at(1_000))
            .unwrap()
            .family_cooldowns
    );
}

#[test]
fn what_one_process_writes_the_other_merges_and_does_not_write_back() {
    let (mut a, mut b) = (pool_of(&["x", "y"]), pool_of(&["x", "y"]));
    let mut file = PolicyState::default();
    serve(&mut a, "gpt-5", limited(60), 1_000);
    assert_eq!(sync(&mut a, &mut file, 1_000), 1);
    // B merges what A wrote: x is cooling for gpt-5 in B too, and B has nothing to write.
    assert_eq!(sync(&mut b, &mut file, 1_100), 0);
    assert_eq!(pick(&mut b, "gpt-5", 1_100), Selection::Account(id("y")));
    assert_eq!(sync(&mut b, &mut file, 1_200), 0);
    assert_eq!(sync(&mut a, &mut file, 1_300), 0);
}

#[test]
fn a_success_at_full_health_is_not_a_change() {
    let mut pool = pool_of(&["a"]);
    for t in 0..100 {
        serve(&mut pool, "gpt-5", Outcome::Success, t);
    }
    assert!(pool.take_changes().accounts.is_empty());
    serve(&mut pool, "gpt-5", Outcome::ServerError, 100);
    assert_eq!(ids(&pool.take_changes()), ["a"]);
}

#[test]
fn removed_accounts_are_not_taken() {
    let mut pool = pool_of(&["a", "b"]);
    pool.disable(&id("a")).unwrap();
    pool.disable(&id("b")).unwrap();
    pool.remove(&id("a")).unwrap();
    pool.add(id("c")).unwrap(); // reuses a's slot
    assert_eq!(ids(&pool.take_changes()), ["b"]);
    pool.disable(&id("c")).unwrap();
    assert_eq!(ids(&pool.take_changes()), ["c"]);
}

#[test]
fn a_refresh_ends_the_401_cooldown_everywhere_and_a_merge_does_not_bring_it_back() {
    let (mut a, mut b) = (pool_of(&["x"]), pool_of(&["x"]));
    let mut file = PolicyState::default();
    serve(&mut a, "gpt-5", Outcome::Unauthorized, 1_000); // x: 401 cooldown until 61 s
    sync(&mut a, &mut file, 1_000);
    sync(&mut b, &mut file, 1_000);
    assert!(matches!(
        pick(&mut b, "gpt-5", 2_000),
        Selection::Exhausted { .. }
    ));

    a.mark_refreshed(&id("x"), at(3_000)).unwrap();
    sync(&mut a, &mut file, 3_000);
    // The file still holds the 401 cooldown, but the later refresh ends it for A ...
    assert_eq!(pick(&mut a, "gpt-5", 3_000), Selection::Account(id("x")));
    // ... and for B.
    sync(&mut b, &mut file, 3_100);
    assert_eq!(pick(&mut b, "gpt-5", 3_100), Selection::Account(id("x")));
    assert!(!b.account_status(&id("x"), at(3_100)).unwrap().needs_refresh);

    // A new 401 after the refresh cools again.
    serve(&mut b, "gpt-5", Outcome::Unauthorized, 4_000);
    sync(&mut b, &mut file, 4_000);
    sync(&mut a, &mut file, 4_100);
    assert!(matches!(
        pick(&mut a, "gpt-5", 4_100),
        Selection::Exhausted { .. }
    ));
}

#[test]
fn a_gone_login_holds_until_a_later_enable() {
    let (mut a, mut b) = (pool_of(&["x", "y"]), pool_of(&["x", "y"]));
    let mut file = PolicyState::default();
    // B enabled x a while ago (nothing was disabled then).
    b.merge_state(&PolicyState::default(), at(500));
    b.enable(&id("x")).unwrap();
    sync(&mut b, &mut file, 500);
    // A learns x's refresh token was reused: gone for everyone.
    a.merge_state(&PolicyState::default(), at(1_000));
    a.disable_for(&id("x"), DisabledReason::LoginRequired)
        .unwrap();
    sync(&mut a, &mut file, 1_000);
    sync(&mut b, &mut file, 1_100);
    let status = b.account_status(&id("x"), at(1_100)).unwrap();
    assert_eq!(status.disabled, Some(DisabledReason::LoginRequired));
    assert_eq!(pick(&mut b, "gpt-5", 1_100), Selection::Account(id("y")));

    // The person signs in again and someone enables x in B: later, so it wins everywhere.
    b.enable(&id("x")).unwrap();
    sync(&mut b, &mut file, 2_000);
    sync(&mut a, &mut file, 2_000);
    assert_eq!(
        a.account_status(&id("x"), at(2_000)).unwrap().disabled,
        None
    );
}

#[test]
fn an_enable_is_stamped_after_the_disable_it_clears_even_from_a_slow_clock() {
    let (mut fast, mut slow) = (pool_of(&["x"]), pool_of(&["x"]));
    let mut file = PolicyState::default();
    fast.merge_state(&PolicyState::default(), at(10_000));
    fast.disable(&id("x")).unwrap(); // at 10 s by a clock running ahead
    sync(&mut fast, &mut file, 10_000);
    sync(&mut slow, &mut file, 9_000); // 9 s by this process's clock
    assert!(
        slow.account_status(&id("x"), at(9_000))
            .unwrap()
            .disabled
            .is_some()
    );
    slow.enable(&id("x")).unwrap();
    sync(&mut slow, &mut file, 9_000);
    sync(&mut fast, &mut file, 10_000);
    assert_eq!(
        fast.account_status(&id("x"), at(10_000)).unwrap().disabled,
        None
    );
    let enabled_since = file.accounts[&id("x")].enabled_since.unwrap();
    assert_eq!(enabled_since, at(10_001));
}

#[test]
fn disable_for_a_gone_login_replaces_other_reasons_and_enable_clears_any() {
    let mut pool = pool_of(&["x"]);
    let reason = |pool: &Pool| pool.account_status(&id("x"), at(0)).unwrap().disabled;
    pool.disable_for(&id("x"), DisabledReason::Unauthorized)
        .unwrap();
    pool.disable(&id("x")).unwrap();
    assert_eq!(reason(&pool), Some(DisabledReason::Unauthorized));
    pool.disable_for(&id("x"), DisabledReason::Deactivated)
        .unwrap();
    assert_eq!(reason(&pool), Some(DisabledReason::Deactivated));
    pool.disable_for(&id("x"), DisabledReason::LoginRequired)
        .unwrap();
    assert_eq!(reason(&pool), Some(DisabledReason::LoginRequired));
    pool.disable_for(&id("x"), DisabledReason::Manual).unwrap();
    assert_eq!(reason(&pool), Some(DisabledReason::LoginRequired));
    pool.enable(&id("x")).unwrap();
    assert_eq!(reason(&pool), None);
    assert!(
        pool.disable_for(&id("nope"), DisabledReason::Manual)
            .is_err()
    );
}

#[test]
fn a_hostile_file_cannot_block_an_account_for_long() {
    let mut pool = pool_of(&["x", "y"]);
    let far = u64::MAX;
    let json = format!(
        r#"{{"accounts":{{
            "x": {{"cooldown": {{"until": {far}, "reason": "forbidden", "since": 0}},
                   "families": {{"gpt-5": {{"until": {far}, "streak": 4000000000}}}}}},
            "y": {{"disabled": {{"reason": "manual", "since": {far}}},
                   "health": 0, "health_at": {far}, "refreshed_at": {far}}},
            "z": {{"disabled": {{"reason": "manual"}}}}
        }}}}"#
    );
    let state: PolicyState = serde_json::from_str(&json).unwrap();
    let report = pool.merge_state(&state, at(1_000));
    assert_eq!(report.unknown, [id("z")]);
    // Cooldowns ending after year 9999 cannot be real: ignored, not capped.
    assert_eq!((report.ignored_implausible, report.capped), (2, 0));
    assert_eq!(report.ignored_future, 3);
    // y's far-future disable, health and refresh are ignored: y serves, and so does x.
    assert_eq!(pick(&mut pool, "gpt-5", 1_000), Selection::Account(id("x")));
    assert_eq!(pick(&mut pool, "gpt-5", 1_000), Selection::Account(id("y")));
    assert_eq!(
        pool.account_status(&id("y"), at(1_000)).unwrap().health,
        100
    );

    // Long but possible cooldowns run at most as long from their start as this pool's own
    // rules would: a 403 for forbidden_cooldown, gpt-5 for max_cooldown.
    let json = format!(
        r#"{{"accounts":{{"x": {{
            "cooldown": {{"until": {}, "reason": "forbidden", "since": 1000}},
            "families": {{"gpt-5": {{"until": {}, "since": 1000, "streak": 9}}}}}}
        }}}}"#,
        1_000 + 20 * DAY,
        1_000 + DAY
    );
    let state: PolicyState = serde_json::from_str(&json).unwrap();
    let report = pool.merge_state(&state, at(1_000));
    assert_eq!((report.capped, report.ignored_implausible), (2, 0));
    let c = quiet_config();
    let status = pool.account_status(&id("x"), at(1_000)).unwrap();
    let forbidden_ms = u64::try_from(c.forbidden_cooldown.as_millis()).unwrap();
    assert_eq!(status.cooldown_until, Some(at(1_000 + forbidden_ms)));
    let max_ms = u64::try_from(c.max_cooldown.as_millis()).unwrap();
    assert_eq!(status.family_cooldowns[0].until, at(1_000 + max_ms));
    // Nothing the pool knows beyond the file: no write back.
    assert!(pool.take_changes().accounts.is_empty());
}

#[test]
fn merging_ids_the_pool_lacks_is_not_an_error() {
    let mut pool = pool_of(&["a"]);
    let mut state = PolicyState::default();
    for i in ["a", "b", "c"] {
        state.accounts.insert(id(i), AccountState::default());
    }
    let report = pool.merge_state(&state, at(0));
    assert_eq!(report.applied, 1);
    assert_eq!(report.unknown, [id("b"), id("c")]);
}

// ---------------------------------------------------------------------------------------
// Cooldowns nobody can have set, and cooldowns longer than this pool's: bounded from their
// own start, never from the time of the merge, so merging the same file again and again
// never keeps an account out longer.

/// Wall-clock now for these scenarios (Nov 2023).
const T0: u64 = 1_700_000_000_000;
const SECOND: u64 = 1_000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;
/// 9000-01-01T00:00:00Z: far away, but a time a document can name.
const YEAR_9000: u64 = 221_845_392_000_000;

fn document(json: Value) -> PolicyState {
    serde_json::from_value(json).unwrap()
}

fn family_doc(family: Value) -> PolicyState {
    document(json!({"version": 1, "accounts": {"x": {"families": {"gpt-5": family}}}}))
}

fn cooldown_doc(cooldown: Value) -> PolicyState {
    document(json!({"version": 1, "accounts": {"x": {"cooldown": cooldown}}}))
}

/// What a pool with only `x` answers for gpt-5 at `now` after merging `doc` at `now`.
fn after_merge(pool: &mut Pool, doc: &PolicyState, now: u64) -> Selection {
    pool.merge_state(doc, at(now));
    pick(pool, "gpt-5", now)
}

fn exhausted_for(ms: u64) -> Selection {
    Selection::Exhausted {
        retry_after: Duration::from_millis(ms),
    }
}

#[test]
fn a_family_cooldown_ending_after_year_9999_is_ignored() {
    let doc = family_doc(json!({"until": u64::MAX}));
    let mut pool = pool_of(&["x"]);
    for now in [T0, T0 + DAY, T0 + 30 * DAY, T0 + 365 * DAY] {
        assert_eq!(
            after_merge(&mut pool, &doc, now),
            Selection::Account(id("x"))
        );
    }
    let report = pool_of(&["x"]).merge_state(&doc, at(T0));
    assert_eq!((report.changed, report.capped), (0, 0));
}

#[test]
fn a_far_family_cooldown_without_a_start_counts_from_the_first_merge_and_never_slides() {
    let doc = family_doc(json!({"until": YEAR_9000}));
    let mut pool = pool_of(&["x"]);
    // First seen now: at most max_cooldown (15 min) from now ...
    assert_eq!(after_merge(&mut pool, &doc, T0), exhausted_for(15 * MINUTE));
    assert_eq!(
        after_merge(&mut pool, &doc, T0 + 5 * MINUTE),
        exhausted_for(10 * MINUTE)
    );
    // ... and merging the same file later never starts it again.
    for now in [T0 + 15 * MINUTE, T0 + DAY, T0 + 30 * DAY, T0 + 365 * DAY] {
        assert_eq!(
            after_merge(&mut pool, &doc, now),
            Selection::Account(id("x"))
        );
    }
}

#[test]
fn a_family_cooldown_without_a_start_is_written_back_with_the_start_it_was_given() {
    let mut file = family_doc(json!({"until": YEAR_9000}));
    let mut first = pool_of(&["x"]);
    sync(&mut first, &mut file, T0);
    // Its next round writes what it knows beyond the file: the start it gave the cooldown.
    assert_eq!(sync(&mut first, &mut file, T0 + 250), 1);
    assert_eq!(
        file.accounts[&id("x")].families["gpt-5"].since,
        Some(at(T0))
    );
    assert_eq!(sync(&mut first, &mut file, T0 + 500), 0);
    // The file now says when it started, so a process that first reads it a day later
    // (or this one after a restart) does not start it again.
    let mut later = pool_of(&["x"]);
    assert_eq!(
        after_merge(&mut later, &file, T0 + DAY),
        Selection::Account(id("x"))
    );
    assert_eq!(
        after_merge(&mut later, &file, T0 + 5 * MINUTE),
        Selection::Account(id("x"))
    );
    let mut meanwhile = pool_of(&["x"]);
    assert_eq!(
        after_merge(&mut meanwhile, &file, T0 + 5 * MINUTE),
        exhausted_for(10 * MINUTE)
    );
}

#[test]
fn a_family_cooldown_longer_than_this_pools_is_capped_from_its_own_start() {
    // Another process allows 24 h cooldowns; this one at most 15 min.
    let doc = family_doc(json!({"until": T0 + DAY, "since": T0, "streak": 1}));
    let mut pool = pool_of(&["x"]);
    assert_eq!(
        after_merge(&mut pool, &doc, T0 + MINUTE),
        exhausted_for(14 * MINUTE)
    );
    for now in [T0 + 15 * MINUTE, T0 + HOUR, T0 + 23 * HOUR] {
        assert_eq!(
            after_merge(&mut pool, &doc, now),
            Selection::Account(id("x"))
        );
    }
    // A pool that first sees it later does not start it again either.
    assert_eq!(
        after_merge(&mut pool_of(&["x"]), &doc, T0 + HOUR),
        Selection::Account(id("x"))
    );
}

#[test]
fn a_family_cooldown_spanning_more_than_30_days_is_ignored() {
    let doc = family_doc(json!({"until": YEAR_9000, "since": T0}));
    let mut pool = pool_of(&["x"]);
    assert_eq!(
        after_merge(&mut pool, &doc, T0),
        Selection::Account(id("x"))
    );
}

#[test]
fn an_account_cooldown_from_the_epoch_or_ending_after_year_9999_is_ignored() {
    for cooldown in [
        json!({"until": u64::MAX, "reason": "forbidden", "since": 0}),
        json!({"until": YEAR_9000, "reason": "failure-burst"}),
        json!({"until": T0 + 20 * DAY, "reason": "forbidden", "since": T0 - 20 * DAY}),
    ] {
        let doc = cooldown_doc(cooldown.clone());
        let mut pool = pool_of(&["x"]);
        for now in [T0, T0 + DAY, T0 + 30 * DAY, T0 + 365 * DAY] {
            assert_eq!(
                after_merge(&mut pool, &doc, now),
                Selection::Account(id("x")),
                "{cooldown} at {now}"
            );
        }
    }
}

#[test]
fn an_account_cooldown_longer_than_this_pools_is_capped_from_its_own_start() {
    // A 403 cooldown of 20 days (another process's config): here at most 1 h from its start.
    let doc = cooldown_doc(json!({"until": T0 + 20 * DAY, "reason": "forbidden", "since": T0}));
    let mut pool = pool_of(&["x"]);
    assert_eq!(
        after_merge(&mut pool, &doc, T0 + MINUTE),
        exhausted_for(59 * MINUTE)
    );
    for now in [T0 + HOUR, T0 + 2 * HOUR, T0 + 10 * DAY] {
        assert_eq!(
            after_merge(&mut pool, &doc, now),
            Selection::Account(id("x"))
        );
    }
}

/// A document keeps cooldowns up to 30 days long, so no pool may set a longer one.
#[test]
fn no_config_sets_a_cooldown_longer_than_a_document_keeps() {
    let longest = Duration::from_secs(30 * 24 * 3600);
    for (field, set) in [
        (
            "forbidden_cooldown",
            (|c: &mut PolicyConfig, d| c.forbidden_cooldown = d) as fn(&mut PolicyConfig, Duration),
        ),
        ("unauthorized_cooldown", |c, d| c.unauthorized_cooldown = d),
    ] {
        let mut c = quiet_config();
        set(&mut c, longest);
        assert!(c.validate().is_ok(), "{field}");
        set(&mut c, longest + Duration::from_millis(1));
        let err = c.validate().unwrap_err();
        assert!(
            matches!(err, rotation_policy::PolicyError::InvalidConfig { field: f, .. } if f == field),
            "{err:?}"
        );
        assert!(err.to_string().contains("30 days"), "{err}");
    }
}

/// The file store merges documents without a clock: a cooldown nobody can have set must not
/// win that merge against the real ones written after it.
#[test]
fn junk_cooldowns_in_a_file_lose_to_the_real_ones_written_later() {
    let mut real = pool_of(&["x"]);
    serve(&mut real, "gpt-5", limited(30), T0);
    serve(&mut real, "o3", Outcome::Forbidden, T0 + 1);
    let written = real.export_state();
    let theirs = &written.accounts[&id("x")];
    for junk in [
        json!({"families": {"gpt-5": {"until": u64::MAX, "streak": 1}}}),
        json!({"families": {"gpt-5": {"until": YEAR_9000, "streak": 1}}}),
        json!({"families": {"gpt-5": {"until": YEAR_9000, "since": T0 - DAY, "streak": 1}}}),
        json!({"cooldown": {"until": u64::MAX, "reason": "forbidden", "since": 0}}),
        json!({"cooldown": {"until": YEAR_9000, "reason": "forbidden", "since": T0}}),
    ] {
        let mut file = document(json!({"version": 1, "accounts": {"x": junk}}));
        file.merge(&written);
        let merged = &file.accounts[&id("x")];
        assert_eq!(
            merged.families["gpt-5"].until, theirs.families["gpt-5"].until,
            "{junk}"
        );
        assert_eq!(merged.cooldown, theirs.cooldown, "{junk}");
        // Whichever way round.
        let mut other = written.clone();
        other.merge(&document(json!({"version": 1, "accounts": {"x": junk}})));
        assert_eq!(other, file, "{junk}");
    }
}

/// A file naming more model families than the pool tracks (a hostile writer, or one with a
/// larger `max_families`) does not push the pool's own traffic into the shared family `*`.
#[test]
fn a_file_naming_thousands_of_families_leaves_room_for_real_traffic() {
    let families: serde_json::Map<String, Value> = (0..20_000)
        .map(|i| {
            (
                format!("junk-{i:05}"),
                json!({"until": T0 + MINUTE, "since": T0}),
            )
        })
        .collect();
    let doc = document(json!({"version": 1, "accounts": {"x": {"families": families}}}));
    let mut pool = pool_of(&["x"]);
    let report = pool.merge_state(&doc, at(T0));
    assert_eq!(report.applied, 1);
    let cooling = pool
        .account_status(&id("x"), at(T0))
        .unwrap()
        .family_cooldowns;
    let max = quiet_config().max_families;
    assert!(
        cooling.len() <= max / 2,
        "{} families merged",
        cooling.len()
    );
    assert!(cooling.iter().all(|f| f.family != "*"));
    // Every family real traffic brings up to `max_families` is tracked by name, and x
    // serves it.
    for i in 0..max - cooling.len() {
        let family = format!("model-{i}");
        assert_eq!(
            pick(&mut pool, &family, T0),
            Selection::Account(id("x")),
            "{family}"
        );
    }
}

/// A disable stamped a little in the future by a process whose clock runs ahead is lifted
/// by a later enable here, in this pool and in every pool the enable reaches.
#[test]
fn a_later_enable_lifts_a_disable_stamped_slightly_in_the_future() {
    let future = document(json!({"version": 1, "accounts": {
        "x": {"disabled": {"reason": "manual", "since": T0 + 2 * MINUTE}}
    }}));
    let (mut here, mut there) = (pool_of(&["x"]), pool_of(&["x"]));
    for pool in [&mut here, &mut there] {
        pool.merge_state(&future, at(T0));
        assert_eq!(pick(pool, "gpt-5", T0), Selection::NoAccount);
    }
    here.enable(&id("x")).unwrap();
    assert_eq!(pick(&mut here, "gpt-5", T0), Selection::Account(id("x")));
    let enabled = here.export_state();
    assert!(enabled.accounts[&id("x")].enabled_since > Some(at(T0 + 2 * MINUTE)));
    there.merge_state(&enabled, at(T0));
    assert_eq!(pick(&mut there, "gpt-5", T0), Selection::Account(id("x")));
    // And in the file, whichever order the writes arrive in.
    let mut file = future.clone();
    file.merge(&enabled);
    let mut fresh = pool_of(&["x"]);
    fresh.merge_state(&file, at(T0));
    assert_eq!(pick(&mut fresh, "gpt-5", T0), Selection::Account(id("x")));
}
