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
    Outcome, POLICY_STATE_VERSION, PolicyConfig, PolicyState, Pool, Request, Selection, Timestamp,
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

/// Times from a small range, so that equal times (the tie-breaks) are common, plus the
/// extremes.
fn time() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        8 => (0u64..6).prop_map(Timestamp::from_millis),
        1 => Just(Timestamp::from_millis(u64::MAX)),
    ]
}

fn account_state() -> impl Strategy<Value = AccountState> {
    (
        proptest::option::of((time(), 0..COOLDOWN_REASONS.len(), time())),
        proptest::collection::btree_map(0..FAMILIES.len(), (time(), 0u32..3), 0..3),
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
                    .map(|(f, (until, streak))| {
                        (FAMILIES[f].to_owned(), FamilyState::new(until, streak))
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

/// The merge-rule table, one field at a time, for one account (deliberately plain).
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
    let mut out = AccountState::default();
    out.cooldown = match (a.cooldown, b.cooldown) {
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
    out.refreshed_at = a.refreshed_at.max(b.refreshed_at);
    for name in a.families.keys().chain(b.families.keys()) {
        let x = a.families.get(name);
        let y = b.families.get(name);
        let until = x.map(|f| f.until).max(y.map(|f| f.until)).unwrap();
        let streak = x.map_or(0, |f| f.streak).max(y.map_or(0, |f| f.streak));
        out.families
            .insert(name.clone(), FamilyState::new(until, streak));
    }
    out.disabled = match (a.disabled, b.disabled) {
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
    out.enabled_since = a.enabled_since.max(b.enabled_since);
    let key = |s: &AccountState| {
        (
            s.health_at,
            Reverse(s.health),
            s.needs_refresh,
            s.unauthorized_streak,
            s.burst_streak,
        )
    };
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

    #[test]
    fn merge_is_idempotent_and_an_upper_bound(a in policy_state(), b in policy_state()) {
        prop_assert_eq!(merged(&a, &a), a.clone());
        prop_assert_eq!(merged(&a, &PolicyState::default()), a.clone());
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
        // Whatever the file says, no cooldown reaches past this pool's own longest.
        let c = quiet_config();
        let longest = c.max_cooldown.max(c.forbidden_cooldown).max(c.unauthorized_cooldown);
        let limit = at(now).saturating_add(longest);
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
    assert_eq!(report.capped, 2);
    assert_eq!(report.ignored_future, 3);
    // y's far-future disable, health and refresh are ignored: y serves.
    assert_eq!(pick(&mut pool, "gpt-5", 1_000), Selection::Account(id("y")));
    assert_eq!(
        pool.account_status(&id("y"), at(1_000)).unwrap().health,
        100
    );
    // x cools at most as long as this pool's own rules would: a 403 for forbidden_cooldown,
    // gpt-5 for max_cooldown.
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
