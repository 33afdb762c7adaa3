//! The rotation policy's state shared beside the pool (`pool-state.json`), against real files
//! and real processes: the one-call loop a proxy runs (`rotation_pool` → select/report →
//! `save_rotation_state` → another process honours the cooldown), many processes writing at
//! once (nothing lost, the later cooldown end wins, readers never see a torn file), damaged,
//! newer and foreign state files (every account loads anyway; the problem is reported; a
//! malformed file is moved aside, a newer one is never touched), the pool's own word on
//! disabled and gone accounts outvoting the file, and the file's mode and hostile files in
//! its place.
//!
//! The test binary re-runs itself as the writer processes: `child_state_writer` does nothing
//! unless `POLICY_STATE_CHILD` is set by the parent test.
#![cfg(feature = "policy")]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use auth_storage::policy::StateProblem;
use auth_storage::pool::{Account, Unusable, UnusableReason};
use auth_storage::{PoolStore, StorageError};
use common::tokens;
use pretty_assertions::assert_eq;
use rotation_policy::{
    AccountId, AccountState, Cooldown, CooldownReason, DisabledReason, FamilyState, Outcome,
    PolicyConfig, PolicyState, Request, Selection, Timestamp,
};

const CHILD_ENV: &str = "POLICY_STATE_CHILD";

/// A fixed wall-clock instant: every call takes `now`, so the tests do not depend on the clock.
const NOW: Timestamp = Timestamp::from_millis(1_700_000_000_000);

fn at(after: Duration) -> Timestamp {
    NOW.saturating_add(after)
}

fn account(n: usize) -> Account {
    Account::from_login(
        tokens(
            &format!("user{n}@example.com"),
            &format!("ws-{n}"),
            &format!("rt-{n}"),
        ),
        None,
        1_700_000_000,
    )
}

/// A pool of `n` accounts in `dir`; returns the store and the accounts' stable ids in order.
fn seeded(dir: &Path, n: usize) -> (PoolStore, Vec<AccountId>) {
    let store = PoolStore::new(dir);
    store
        .update(|p| {
            for i in 0..n {
                p.upsert(account(i));
            }
        })
        .unwrap();
    let ids = store
        .load()
        .unwrap()
        .pool
        .accounts
        .iter()
        .map(|a| AccountId::new(a.id.clone()).unwrap())
        .collect();
    (store, ids)
}

fn id(s: &str) -> AccountId {
    AccountId::new(s).unwrap()
}

fn state_of(entries: impl IntoIterator<Item = (AccountId, AccountState)>) -> PolicyState {
    let mut state = PolicyState::default();
    state.accounts.extend(entries);
    state
}

/// One account rate limited for `family` until `until`.
fn family_cooldown(family: &str, until: Timestamp, streak: u32) -> AccountState {
    let mut account = AccountState::default();
    account
        .families
        .insert(family.to_owned(), FamilyState::new(until, streak));
    account
}

fn limited(secs: u64) -> Outcome {
    Outcome::RateLimited {
        retry_after: Some(Duration::from_secs(secs)),
    }
}

/// Files in `dir` whose names start with `prefix`.
fn files_starting(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    found.sort();
    found
}

// ---------------------------------------------------------------------------------------
// The one-call loop
// ---------------------------------------------------------------------------------------

/// What a proxy does: a ready policy in one call, a 429 reported, one call to share it; a
/// second process (a new store, a new policy) built afterwards honours the cooldown at once,
/// with the exact wait when the cooled account is the only one.
#[test]
fn a_429_saved_by_one_process_cools_the_account_in_the_next() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    // The only account: the second process answers `Exhausted` with the exact wait.
    let dir = tempfile::tempdir().unwrap();
    let (store, ids) = seeded(dir.path(), 1);
    let mut a = store
        .rotation_pool(PolicyConfig::default(), 1, NOW)
        .unwrap();
    assert!(a.problems.is_empty(), "{:?}", a.problems);
    assert_eq!(a.document.accounts.len(), 1);
    let mut request = Request::new("gpt-5");
    assert_eq!(
        a.policy.select(&mut request, NOW),
        Selection::Account(ids[0].clone())
    );
    a.policy.consume(&ids[0], NOW).unwrap();
    a.policy.report(&mut request, &ids[0], limited(60), NOW);
    let sync = store.save_rotation_state(&mut a, NOW).unwrap();
    assert_eq!(sync.written, 1);
    // The file holds the cooldown, exactly.
    let on_disk = store.load_policy_state().unwrap();
    assert!(on_disk.problem.is_none(), "{:?}", on_disk.problem);
    assert_eq!(
        on_disk.state.accounts[&ids[0]].families["gpt-5"].until,
        at(Duration::from_secs(60))
    );
    // Nothing more to say: the next save takes no lock and writes nothing.
    assert_eq!(
        store.save_rotation_state(&mut a, NOW).unwrap(),
        Default::default()
    );

    // Another process, 5 s later.
    let later = at(Duration::from_secs(5));
    let other = PoolStore::new(dir.path());
    let mut b = other
        .rotation_pool(PolicyConfig::default(), 2, later)
        .unwrap();
    assert!(b.problems.is_empty(), "{:?}", b.problems);
    assert_eq!(
        b.policy.select(&mut Request::new("gpt-5"), later),
        Selection::Exhausted {
            retry_after: Duration::from_secs(55)
        }
    );
    // The cooldown is for that model family only.
    assert_eq!(
        b.policy.select(&mut Request::new("o3"), later),
        Selection::Account(ids[0].clone())
    );
    // What B read from the file is not B's news: nothing is written back.
    assert!(b.policy.take_changes().accounts.is_empty());
    // Once the cooldown is over, B serves from the account again.
    let over = at(Duration::from_secs(60));
    assert_eq!(
        b.policy.select(&mut Request::new("gpt-5"), over),
        Selection::Account(ids[0].clone())
    );

    // Two accounts: the second process never picks the cooled one while it cools.
    let dir = tempfile::tempdir().unwrap();
    let (store, ids) = seeded(dir.path(), 2);
    let mut a = store
        .rotation_pool(PolicyConfig::default(), 1, NOW)
        .unwrap();
    let mut request = Request::new("gpt-5");
    let Selection::Account(first) = a.policy.select(&mut request, NOW) else {
        panic!("an account for the first request");
    };
    a.policy.report(&mut request, &first, limited(60), NOW);
    store.save_rotation_state(&mut a, NOW).unwrap();
    let mut b = PoolStore::new(dir.path())
        .rotation_pool(PolicyConfig::default(), 2, later)
        .unwrap();
    let other_id = ids.iter().find(|i| **i != first).unwrap();
    for k in 0..20 {
        let t = at(Duration::from_secs(5 + k));
        let mut request = Request::new("gpt-5");
        assert_eq!(
            b.policy.select(&mut request, t),
            Selection::Account(other_id.clone()),
            "select {k}"
        );
        b.policy.report(&mut request, other_id, Outcome::Success, t);
    }
}

// ---------------------------------------------------------------------------------------
// Concurrent writers
// ---------------------------------------------------------------------------------------

const WRITERS: usize = 4;
/// Saves per writer. Fewer on Windows, where a save waits whenever the test's reader has the
/// file open (see `common::retry_while_in_use`) and processes start slowly under Wine.
const ROUNDS: usize = if cfg!(windows) { 50 } else { 200 };
const SHARED: &str = "acct-shared";

fn own(writer: usize) -> AccountId {
    id(&format!("acct-writer-{writer}"))
}

/// The end of the shared account's cooldown that writer `w` sets in round `k`: distinct for
/// every (w, k) and in no order, so the largest is not simply the last one written.
fn shared_until(w: usize, k: usize) -> Timestamp {
    let n = (w * ROUNDS + k) as u64;
    at(Duration::from_millis(1 + (n * 7_919) % 100_003))
}

/// Writer `w`'s family cooldown of round `k` on its own account: one new family per round,
/// so a lost update shows as a missing family.
fn own_family(k: usize) -> String {
    format!("family-{k:03}")
}

fn own_until(w: usize, k: usize) -> Timestamp {
    at(Duration::from_millis((k * 1_000 + w) as u64))
}

/// Child: `ROUNDS` saves, each with one new family cooldown of its own account and a
/// cooldown of the shared account.
#[test]
fn child_state_writer() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    let Some(w) = role
        .strip_prefix("writer-")
        .and_then(|w| w.parse::<usize>().ok())
    else {
        return;
    };
    let dir = std::env::var("POLICY_STATE_DIR").unwrap();
    let store = PoolStore::new(dir).with_lock_timeout(Duration::from_secs(60));
    assert!(common::wait_for_file(&store.dir().join("go"), 60), "no go");
    for k in 0..ROUNDS {
        let mut mine = family_cooldown(&own_family(k), own_until(w, k), 1);
        mine.health = 90;
        mine.health_at = own_until(w, k);
        let mut shared = AccountState::default();
        shared.cooldown = Some(Cooldown::new(
            shared_until(w, k),
            CooldownReason::FailureBurst,
            NOW,
        ));
        // The parent's readers may hold the file open (see `retry_while_in_use`).
        let state = state_of([(own(w), mine), (id(SHARED), shared)]);
        let written = common::retry_while_in_use(|| store.save_policy_state(&state)).unwrap();
        // What came back holds every change of this writer so far.
        assert_eq!(written.accounts[&own(w)].families.len(), k + 1);
    }
    println!("RESULT writer {w} done");
}

/// Several processes save at once, each its own account's changes and one shared account's:
/// afterwards the file holds every change and the shared account has the latest cooldown
/// end; meanwhile unlocked readers only ever see complete, valid documents that never lose
/// a change they have seen.
#[test]
fn concurrent_writers_lose_nothing_and_readers_never_see_a_torn_file() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = PoolStore::new(dir.path());
    let children: Vec<_> = (0..WRITERS)
        .map(|w| {
            common::spawn_test_child(
                "child_state_writer",
                [
                    (CHILD_ENV, format!("writer-{w}")),
                    ("POLICY_STATE_DIR", dir.path().display().to_string()),
                ],
            )
        })
        .collect();
    let waiter = std::thread::spawn(move || common::child_results(children, 150));
    std::fs::write(dir.path().join("go"), b"").unwrap();

    // Read while they write: unlocked, as a proxy polling the file does.
    let started = Instant::now();
    let mut reads = 0u64;
    let mut versions = 0u64;
    let mut last = Vec::new();
    let mut seen = [0usize; WRITERS];
    while !waiter.is_finished() {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "writers did not finish"
        );
        let bytes = match std::fs::read(store.state_file()) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("read: {e}"),
        };
        let parsed: PolicyState = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "read {reads}: a torn or invalid file ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        let loaded = store.load_policy_state().unwrap();
        assert!(loaded.problem.is_none(), "{:?}", loaded.problem);
        for (w, count) in seen.iter_mut().enumerate() {
            let now = parsed.accounts.get(&own(w)).map_or(0, |a| a.families.len());
            assert!(now >= *count, "writer {w}: went back from {count} to {now}");
            *count = now;
        }
        if bytes != last {
            versions += 1;
            last = bytes;
        }
        reads += 1;
        common::pause_between_reads();
    }
    let results = waiter.join().unwrap();
    assert_eq!(results.len(), WRITERS, "{results:?}");

    let file = store.load_policy_state().unwrap();
    assert!(file.problem.is_none(), "{:?}", file.problem);
    let state = file.state;
    assert_eq!(state.accounts.len(), WRITERS + 1);
    for w in 0..WRITERS {
        let account = &state.accounts[&own(w)];
        assert_eq!(account.families.len(), ROUNDS, "writer {w}");
        for k in 0..ROUNDS {
            assert_eq!(
                account.families[&own_family(k)],
                FamilyState::new(own_until(w, k), 1),
                "writer {w}, round {k}"
            );
        }
        assert_eq!(account.health_at, own_until(w, ROUNDS - 1));
    }
    let latest = (0..WRITERS)
        .flat_map(|w| (0..ROUNDS).map(move |k| shared_until(w, k)))
        .max()
        .unwrap();
    let shared = state.accounts[&id(SHARED)].cooldown.unwrap();
    assert_eq!(shared.until, latest);
    assert_eq!(shared.reason, CooldownReason::FailureBurst);
    // No temporary or damaged file left behind.
    assert!(files_starting(dir.path(), ".pool-state-").is_empty());
    assert!(files_starting(dir.path(), "pool-state.json.damaged-").is_empty());
    eprintln!(
        "policy state: {WRITERS} processes x {ROUNDS} saves in {:?}; {reads} reads saw {versions} versions, none torn",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// Damaged, newer and foreign state files
// ---------------------------------------------------------------------------------------

const EMAIL_KEY: &str = "someone@example.com";

/// The malformed files of the matrix, by name; `known` is an id of the pool.
fn malformed(name: &str, known: &AccountId) -> Vec<u8> {
    let valid = serde_json::to_vec(&state_of([(
        known.clone(),
        family_cooldown("gpt-5", at(Duration::from_secs(60)), 1),
    )]))
    .unwrap();
    match name {
        "empty" => Vec::new(),
        "garbage" => b"\x00garbage{{".to_vec(),
        "truncated" => valid[..valid.len() / 2].to_vec(),
        "top-level array" => b"[]".to_vec(),
        "version string" => br#"{"version": "1", "accounts": {}}"#.to_vec(),
        "accounts array" => br#"{"version": 1, "accounts": []}"#.to_vec(),
        "until string" => format!(
            r#"{{"version":1,"accounts":{{"{known}":{{"families":{{"gpt-5":{{"until":"soon"}}}}}}}}}}"#
        )
        .into_bytes(),
        "email key" => format!(r#"{{"version":1,"accounts":{{"{EMAIL_KEY}":{{}}}}}}"#).into_bytes(),
        _ => unreachable!("{name}"),
    }
}

const MALFORMED: [&str; 8] = [
    "empty",
    "garbage",
    "truncated",
    "top-level array",
    "version string",
    "accounts array",
    "until string",
    "email key",
];

fn shown_problems(problems: &[StateProblem], dir: &Path) -> String {
    if problems.is_empty() {
        return "no problem".to_owned();
    }
    problems
        .iter()
        .map(|p| redact_dir(&p.to_string(), dir))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// `text` with `dir` shown as `<dir>`, and the separator after it as `/` on every OS.
fn redact_dir(text: &str, dir: &Path) -> String {
    text.replace(&dir.display().to_string(), "<dir>")
        .replace("<dir>\\", "<dir>/")
}

/// A pool of three whose state file holds `bytes(ids)`, loaded with `rotation_pool`: every
/// account loads, a problem is reported, nothing panics.
struct Damaged {
    dir: tempfile::TempDir,
    store: PoolStore,
    ids: Vec<AccountId>,
    bytes: Vec<u8>,
    setup: auth_storage::policy::RotationSetup,
    /// The problems' messages, the temporary directory shown as `<dir>`.
    shown: String,
}

fn load_with_state(name: &str, bytes: impl FnOnce(&[AccountId]) -> Vec<u8>) -> Damaged {
    let dir = tempfile::tempdir().unwrap();
    let (store, ids) = seeded(dir.path(), 3);
    let bytes = bytes(&ids);
    std::fs::write(store.state_file(), &bytes).unwrap();
    let setup = store
        .rotation_pool(PolicyConfig::default(), 7, NOW)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(setup.policy.len(), 3, "{name}");
    for i in &ids {
        assert!(setup.policy.contains(i), "{name}: {i} missing");
    }
    assert_eq!(setup.document.accounts.len(), 3, "{name}");
    assert!(!setup.problems.is_empty(), "{name}: no problem reported");
    let shown = shown_problems(&setup.problems, dir.path());
    assert!(
        !shown.contains(EMAIL_KEY),
        "{name}: echoes the key: {shown}"
    );
    Damaged {
        dir,
        store,
        ids,
        bytes,
        setup,
        shown,
    }
}

/// A change of a known account, as a proxy would save after the damaged file was read.
fn a_change(known: &AccountId) -> PolicyState {
    state_of([(
        known.clone(),
        family_cooldown("gpt-5", at(Duration::from_secs(30)), 1),
    )])
}

/// Every kind of unusable state file: `rotation_pool` loads every account and says what is
/// wrong (snapshot of the messages); then the next save moves a malformed file aside
/// (keeping its bytes) and writes a good one, refuses to overwrite a newer one (left byte for
/// byte), and keeps the state of accounts the pool does not have.
#[test]
fn unusable_state_files_cost_no_account_and_are_reported() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let mut out = String::new();
    for name in MALFORMED {
        let d = load_with_state(name, |ids| malformed(name, &ids[0]));
        assert!(
            matches!(
                d.setup.problems.as_slice(),
                [StateProblem::Malformed { path, .. }] if *path == d.store.state_file()
            ),
            "{name}: {:?}",
            d.setup.problems
        );
        // The next save moves it aside, keeping the damaged bytes, and writes a good file.
        let change = a_change(&d.ids[0]);
        let written = d.store.save_policy_state(&change).unwrap();
        assert_eq!(written, change, "{name}");
        let aside = files_starting(d.dir.path(), "pool-state.json.damaged-");
        assert_eq!(aside.len(), 1, "{name}: {aside:?}");
        assert_eq!(std::fs::read(&aside[0]).unwrap(), d.bytes, "{name}");
        let reread = d.store.load_policy_state().unwrap();
        assert!(reread.problem.is_none(), "{name}: {:?}", reread.problem);
        assert_eq!(reread.state, change, "{name}");
        let setup = d
            .store
            .rotation_pool(PolicyConfig::default(), 7, NOW)
            .unwrap();
        assert!(setup.problems.is_empty(), "{name}: {:?}", setup.problems);
        out.push_str(&format!(
            "{name:>16}: {}\n{:>16}  save: moved aside as pool-state.json.damaged-*, bytes kept\n",
            d.shown, ""
        ));
    }

    // A newer version: reported, never overwritten.
    let newer = br#"{"version": 99, "accounts": {"acct-x": {"future": true}}}"#;
    let mut d = load_with_state("newer", |_| newer.to_vec());
    assert!(
        matches!(
            d.setup.problems.as_slice(),
            [StateProblem::Newer {
                found: 99,
                supported: 1,
                ..
            }]
        ),
        "{:?}",
        d.setup.problems
    );
    let err = d.store.save_policy_state(&a_change(&d.ids[0])).unwrap_err();
    assert!(
        matches!(
            &err,
            StorageError::NewerVersion { path, found: 99, supported: 1 } if *path == d.store.state_file()
        ),
        "{err:?}"
    );
    let mut request = Request::new("gpt-5");
    let Selection::Account(first) = d.setup.policy.select(&mut request, NOW) else {
        panic!("an account")
    };
    d.setup
        .policy
        .report(&mut request, &first, limited(30), NOW);
    let sync_err = d.store.save_rotation_state(&mut d.setup, NOW).unwrap_err();
    assert!(
        matches!(sync_err, StorageError::NewerVersion { found: 99, .. }),
        "{sync_err:?}"
    );
    assert_eq!(std::fs::read(d.store.state_file()).unwrap(), newer);
    assert!(files_starting(d.dir.path(), "pool-state.json.damaged-").is_empty());
    assert!(files_starting(d.dir.path(), ".pool-state-").is_empty());
    out.push_str(&format!(
        "{:>16}: {}\n{:>16}  save: {}\n",
        "newer version",
        d.shown,
        "",
        redact_dir(&err.to_string(), d.dir.path())
    ));

    // Accounts the pool does not have: reported; the known account's state still applies,
    // and a save keeps their state (the file may be another pool's processes' too).
    let mut d = load_with_state("unknown accounts", |ids| {
        serde_json::to_vec(&state_of([
            (
                ids[0].clone(),
                family_cooldown("gpt-5", at(Duration::from_secs(60)), 1),
            ),
            (id("acct-gone-1"), AccountState::default()),
            (
                id("acct-gone-2"),
                family_cooldown("gpt-5", at(Duration::from_secs(60)), 1),
            ),
        ]))
        .unwrap()
    });
    assert!(
        matches!(
            d.setup.problems.as_slice(),
            [StateProblem::UnknownAccounts { count: 2, .. }]
        ),
        "{:?}",
        d.setup.problems
    );
    let known = d.ids[0].clone();
    let status = d.setup.policy.account_status(&known, NOW).unwrap();
    assert_eq!(
        status.family_cooldowns.len(),
        1,
        "the known account's state applies"
    );
    assert_ne!(
        d.setup.policy.select(&mut Request::new("gpt-5"), NOW),
        Selection::Account(known.clone())
    );
    let written = d.store.save_policy_state(&a_change(&d.ids[1])).unwrap();
    assert!(written.accounts.contains_key(&id("acct-gone-1")));
    assert!(written.accounts.contains_key(&id("acct-gone-2")));
    assert!(files_starting(d.dir.path(), "pool-state.json.damaged-").is_empty());
    out.push_str(&format!(
        "{:>16}: {}\n{:>16}  save: their state kept\n",
        "unknown accounts", d.shown, ""
    ));

    insta::assert_snapshot!(out);
}

/// `save_rotation_state` is one tick of a rotation loop: accounts added to or removed from
/// the pool join or leave the policy, `accounts disable`/`enable` in the pool take effect,
/// and no shared state — a later enable, a stray "login required" — outvotes the pool.
#[test]
fn a_tick_follows_the_pool_and_the_pool_outvotes_shared_state() {
    let dir = tempfile::tempdir().unwrap();
    let (store, ids) = seeded(dir.path(), 2);
    let mut setup = store
        .rotation_pool(PolicyConfig::default(), 1, NOW)
        .unwrap();
    let disabled = |setup: &auth_storage::policy::RotationSetup, id: &AccountId| {
        setup
            .policy
            .export_account(id)
            .and_then(|s| s.disabled.map(|d| d.reason))
    };

    // Added and disabled in the pool by another process (`accounts add`, `disable 1`).
    store
        .update(|p| {
            p.upsert(account(7));
            p.accounts[0].enabled = false;
        })
        .unwrap();
    let sync = store
        .save_rotation_state(&mut setup, at(Duration::from_secs(1)))
        .unwrap();
    assert_eq!((sync.added, sync.removed), (1, 0));
    assert_eq!(setup.policy.len(), 3);
    assert_eq!(disabled(&setup, &ids[0]), Some(DisabledReason::Manual));

    // Another process writes a later enable of account 1 and a "login required" for account
    // 2 into the shared state: the pool says disabled / usable, so the pool wins.
    let mut enable = AccountState::default();
    enable.enabled_since = Some(at(Duration::from_secs(30)));
    let mut gone = AccountState::default();
    gone.disabled = Some(rotation_policy::Disabled::new(
        DisabledReason::LoginRequired,
        at(Duration::from_secs(30)),
    ));
    store
        .save_policy_state(&state_of([
            (ids[0].clone(), enable),
            (ids[1].clone(), gone),
        ]))
        .unwrap();
    store
        .save_rotation_state(&mut setup, at(Duration::from_secs(2)))
        .unwrap();
    assert_eq!(disabled(&setup, &ids[0]), Some(DisabledReason::Manual));
    assert_eq!(disabled(&setup, &ids[1]), None);

    // `accounts enable 1`, and removing account 2: followed at the next tick.
    store
        .update(|p| {
            p.accounts[0].enabled = true;
            p.remove(1);
        })
        .unwrap();
    let sync = store
        .save_rotation_state(&mut setup, at(Duration::from_secs(3)))
        .unwrap();
    assert_eq!((sync.added, sync.removed), (0, 1));
    assert_eq!(disabled(&setup, &ids[0]), None);
    assert!(!setup.policy.contains(&ids[1]));
    // The enable is shared at the next tick; after that nothing changed: nothing written.
    let sync = store
        .save_rotation_state(&mut setup, at(Duration::from_secs(4)))
        .unwrap();
    assert_eq!(sync.written, 1, "the enable is shared");
    let before = std::fs::read(store.state_file()).unwrap();
    let sync = store
        .save_rotation_state(&mut setup, at(Duration::from_secs(5)))
        .unwrap();
    assert_eq!((sync.written, sync.added, sync.removed), (0, 0, 0));
    assert_eq!(std::fs::read(store.state_file()).unwrap(), before);
}

/// A write with a `now` drops what nobody would use any more: a cooldown that ended, and an
/// account left with nothing to say; what still runs stays.
#[test]
fn ended_cooldowns_are_dropped_from_the_file_as_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (store, ids) = seeded(dir.path(), 2);
    store
        .save_policy_state(&state_of([
            (
                ids[0].clone(),
                family_cooldown("gpt-5", at(Duration::from_secs(60)), 1),
            ),
            (
                ids[1].clone(),
                family_cooldown("o3", at(Duration::from_secs(600)), 1),
            ),
        ]))
        .unwrap();
    let later = at(Duration::from_secs(120));
    let (state, _) = store
        .save_policy_state_stamped(
            &state_of([(
                ids[1].clone(),
                family_cooldown("o4", at(Duration::from_secs(900)), 1),
            )]),
            Some(later),
        )
        .unwrap();
    assert!(!state.accounts.contains_key(&ids[0]), "{state:?}");
    let families: Vec<&String> = state.accounts[&ids[1]].families.keys().collect();
    assert_eq!(families, ["o3", "o4"]);
    assert_eq!(store.load_policy_state().unwrap().state, state);
}

/// Usage reports go the same way: one whose every window has reset is dropped as the file
/// is written (it says nothing any more); a running one stays.
#[test]
fn usage_reports_whose_windows_reset_are_dropped_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (store, ids) = seeded(dir.path(), 2);
    let usage = |resets: Duration| {
        let json = format!(
            r#"{{"usage":{{"codex":{{"observed_at":{},"primary":{{"used_percent":99,"resets_at":{}}}}}}}}}"#,
            at(Duration::ZERO).as_millis(),
            at(resets).as_millis()
        );
        serde_json::from_str::<rotation_policy::AccountState>(&json).unwrap()
    };
    let (state, _) = store
        .save_policy_state_stamped(
            &state_of([
                (ids[0].clone(), usage(Duration::from_secs(60))),
                (ids[1].clone(), usage(Duration::from_secs(3600))),
            ]),
            Some(at(Duration::from_secs(120))),
        )
        .unwrap();
    assert!(!state.accounts.contains_key(&ids[0]), "{state:?}");
    assert!(
        state.accounts[&ids[1]].usage.contains_key("codex"),
        "{state:?}"
    );
    assert_eq!(store.load_policy_state().unwrap().state, state);
}

mod arbitrary_files {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use serde_json::Value;

    use super::*;

    /// A JSON value built from the words of the format (and the pool's ids), so that many
    /// cases get past the syntax into the document's structure.
    fn json_like(words: Vec<String>) -> impl Strategy<Value = Value> {
        let word = proptest::sample::select(words);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(Value::from),
            (0u64..2_000_000_000_000_000).prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            word.clone().prop_map(Value::String),
            ".{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 48, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(word.clone(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A well-typed document with hostile values: any timestamps (epoch, far future, `u64::MAX`),
    /// streaks and health, reasons known and unknown, for the pool's ids and others.
    fn typed_like(ids: Vec<String>) -> impl Strategy<Value = Value> {
        let t = prop_oneof![
            Just(0u64),
            Just(u64::MAX),
            (NOW.as_millis() - 3_600_000..NOW.as_millis() + 3_600_000),
            any::<u64>(),
        ];
        let reason = proptest::sample::select(vec![
            "unauthorized",
            "forbidden",
            "failure-burst",
            "manual",
            "login-required",
            "deactivated",
            "from-the-future",
        ]);
        let account = (
            proptest::option::of((t.clone(), reason.clone(), t.clone())),
            proptest::collection::btree_map("[a-z0-9*.-]{0,6}", (t.clone(), any::<u32>()), 0..3),
            proptest::option::of((reason, t.clone())),
            (
                proptest::option::of(t.clone()),
                proptest::option::of(t.clone()),
            ),
            (any::<u8>(), t, any::<bool>(), any::<u32>(), any::<u32>()),
        )
            .prop_map(
                |(cooldown, families, disabled, (enabled, refreshed), obs)| {
                    let mut a = serde_json::Map::new();
                    if let Some((until, reason, since)) = cooldown {
                        a.insert(
                            "cooldown".into(),
                            serde_json::json!({"until": until, "reason": reason, "since": since}),
                        );
                    }
                    let families: serde_json::Map<String, Value> = families
                        .into_iter()
                        .map(|(f, (until, streak))| {
                            (f, serde_json::json!({"until": until, "streak": streak}))
                        })
                        .collect();
                    a.insert("families".into(), Value::Object(families));
                    if let Some((reason, since)) = disabled {
                        a.insert(
                            "disabled".into(),
                            serde_json::json!({"reason": reason, "since": since}),
                        );
                    }
                    if let Some(at) = enabled {
                        a.insert("enabled_since".into(), at.into());
                    }
                    if let Some(at) = refreshed {
                        a.insert("refreshed_at".into(), at.into());
                    }
                    let (health, health_at, needs_refresh, unauthorized, burst) = obs;
                    a.insert("health".into(), health.into());
                    a.insert("health_at".into(), health_at.into());
                    a.insert("needs_refresh".into(), needs_refresh.into());
                    a.insert("unauthorized_streak".into(), unauthorized.into());
                    a.insert("burst_streak".into(), burst.into());
                    Value::Object(a)
                },
            );
        let mut keys = ids;
        keys.push("acct-gone".to_owned());
        proptest::collection::btree_map(proptest::sample::select(keys), account, 0..5).prop_map(
            |accounts| {
                serde_json::json!({
                    "version": 1,
                    "accounts": Value::Object(accounts.into_iter().collect()),
                })
            },
        )
    }

    /// A document-shaped value: a version, accounts keyed by the pool's ids (and others).
    fn document_like(words: Vec<String>, ids: Vec<String>) -> impl Strategy<Value = Value> {
        let version = prop_oneof![
            Just(Value::from(1)),
            Just(Value::from(0)),
            Just(Value::from(2)),
            Just(Value::from(99)),
            any::<i64>().prop_map(Value::from),
            Just(Value::from("1")),
        ];
        let mut keys = ids;
        keys.extend(
            ["acct-gone", EMAIL_KEY, "", ".hidden", "a\u{202e}b"]
                .iter()
                .map(|s| (*s).to_owned()),
        );
        let accounts = proptest::collection::btree_map(
            proptest::sample::select(keys),
            proptest::collection::btree_map(
                proptest::sample::select(words.clone()),
                json_like(words),
                0..6,
            ),
            0..5,
        );
        (proptest::option::of(version), accounts).prop_map(|(version, accounts)| {
            let mut doc = serde_json::Map::new();
            if let Some(v) = version {
                doc.insert("version".into(), v);
            }
            let accounts = accounts
                .into_iter()
                .map(|(id, fields)| (id, Value::Object(fields.into_iter().collect())))
                .collect();
            doc.insert("accounts".into(), Value::Object(accounts));
            Value::Object(doc)
        })
    }

    /// Whatever bytes are in `pool-state.json`, `rotation_pool` neither panics nor fails
    /// and has every account of the pool; a message never echoes an email key.
    #[test]
    fn any_bytes_as_the_state_file_cost_no_account() {
        if std::env::var_os(CHILD_ENV).is_some() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (store, ids) = seeded(dir.path(), 3);
        let id_strings: Vec<String> = ids.iter().map(|i| i.as_str().to_owned()).collect();
        let mut words: Vec<String> = [
            "version",
            "accounts",
            "cooldown",
            "until",
            "reason",
            "since",
            "families",
            "gpt-5",
            "streak",
            "disabled",
            "enabled_since",
            "refreshed_at",
            "health",
            "health_at",
            "needs_refresh",
            "unauthorized_streak",
            "burst_streak",
            "forbidden",
            "unauthorized",
            "failure-burst",
            "manual",
            "login-required",
            "deactivated",
            EMAIL_KEY,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        words.extend(id_strings.iter().cloned());
        let valid = serde_json::to_vec(&state_of([(
            ids[0].clone(),
            family_cooldown("gpt-5", at(Duration::from_secs(60)), 1),
        )]))
        .unwrap();
        let valid_len = valid.len();
        let bytes = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..256),
            json_like(words.clone()).prop_map(|v| serde_json::to_vec(&v).unwrap()),
            document_like(words, id_strings.clone()).prop_map(|v| serde_json::to_vec(&v).unwrap()),
            typed_like(id_strings).prop_map(|v| serde_json::to_vec(&v).unwrap()),
            // A good file, cut short and with a byte changed.
            (0..=valid_len, 0..valid_len, any::<u8>()).prop_map(move |(cut, at, byte)| {
                let mut b = valid.clone();
                b[at] = byte;
                b.truncate(cut);
                b
            }),
        ];
        let mut runner = TestRunner::new(Config {
            cases: 512,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&bytes, |bytes| {
                std::fs::write(store.state_file(), &bytes).unwrap();
                let setup = store
                    .rotation_pool(PolicyConfig::default(), 7, NOW)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(setup.policy.len(), ids.len());
                for i in &ids {
                    prop_assert!(setup.policy.contains(i));
                }
                prop_assert_eq!(setup.policy.status(NOW).accounts.len(), ids.len());
                for problem in &setup.problems {
                    prop_assert!(!problem.to_string().contains(EMAIL_KEY), "{}", problem);
                }
                // The file reads as usable exactly when a plain reading says so: a JSON
                // object, a version this program knows, the state's types (the oracle is
                // the untyped-then-typed parse, as simple as it gets), and to the same state.
                let loaded = store
                    .load_policy_state()
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let oracle = serde_json::from_slice::<Value>(&bytes)
                    .ok()
                    .filter(Value::is_object)
                    .filter(|v| {
                        v.get("version")
                            .and_then(Value::as_u64)
                            .is_none_or(|n| n <= u64::from(rotation_policy::POLICY_STATE_VERSION))
                    })
                    .and_then(|v| serde_json::from_value::<PolicyState>(v).ok());
                prop_assert_eq!(
                    loaded.problem.is_none(),
                    oracle.is_some(),
                    "{:?}",
                    loaded.problem
                );
                if let Some(oracle) = oracle {
                    prop_assert_eq!(&loaded.state, &oracle);
                }
                // Anything but a JSON object is reported as malformed (and so moved aside by
                // the next save, not overwritten).
                if !serde_json::from_slice::<Value>(&bytes).is_ok_and(|v| v.is_object()) {
                    prop_assert!(
                        matches!(setup.problems.first(), Some(StateProblem::Malformed { .. })),
                        "{:?}",
                        setup.problems
                    );
                }
                Ok(())
            })
            .unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// The pool's word wins
// ---------------------------------------------------------------------------------------

/// `enabled: false` and an `unusable` mark in pool.json outvote the state file, even one
/// that enables those accounts later than anything else it says.
#[test]
fn the_pools_word_on_disabled_and_gone_accounts_outvotes_the_state_file() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (store, ids) = seeded(dir.path(), 4);
    store
        .update(|p| {
            p.accounts[0].enabled = false;
            p.accounts[1].unusable = Some(Unusable::new(
                UnusableReason::LoginRequired,
                1_700_000_000,
                Some("refresh_token_reused"),
            ));
            p.accounts[2].unusable = Some(Unusable::new(
                UnusableReason::Deactivated,
                1_700_000_000,
                None,
            ));
        })
        .unwrap();
    // The file: each of them disabled an hour ago and enabled again a minute from now (a
    // little ahead of this process's clock, within what a merge accepts).
    let file = |enabled: Timestamp| {
        state_of(ids.iter().take(3).map(|i| {
            let mut account: AccountState = serde_json::from_value(serde_json::json!({
                "disabled": {"reason": "manual", "since": NOW.as_millis() - 3_600_000},
            }))
            .unwrap();
            account.enabled_since = Some(enabled);
            (i.clone(), account)
        }))
    };
    store
        .save_policy_state(&file(at(Duration::from_secs(60))))
        .unwrap();
    let mut setup = store
        .rotation_pool(PolicyConfig::default(), 3, NOW)
        .unwrap();
    assert!(setup.problems.is_empty(), "{:?}", setup.problems);
    let disabled = |setup: &auth_storage::policy::RotationSetup, t| {
        ids.iter()
            .map(|i| setup.policy.account_status(i, t).unwrap().disabled)
            .collect::<Vec<_>>()
    };
    let expected = vec![
        Some(DisabledReason::Manual),
        Some(DisabledReason::LoginRequired),
        Some(DisabledReason::Deactivated),
        None,
    ];
    assert_eq!(disabled(&setup, NOW), expected);
    // Only the usable account is ever picked.
    for k in 0..10 {
        let t = at(Duration::from_secs(k));
        let mut request = Request::new("gpt-5");
        assert_eq!(
            setup.policy.select(&mut request, t),
            Selection::Account(ids[3].clone())
        );
        setup.policy.report(&mut request, &ids[3], limited(1), t);
    }
    // A save merges the file back in: they stay disabled.
    let t = at(Duration::from_secs(10));
    store.save_rotation_state(&mut setup, t).unwrap();
    assert_eq!(disabled(&setup, t), expected);
    // And a fresh process agrees.
    let again = store.rotation_pool(PolicyConfig::default(), 4, t).unwrap();
    assert_eq!(disabled(&again, t), expected);
}

// ---------------------------------------------------------------------------------------
// The file itself
// ---------------------------------------------------------------------------------------

#[cfg(unix)]
mod files {
    use std::os::unix::fs::PermissionsExt as _;

    use auth_storage::policy::{STATE_FILE, STATE_FILE_MAX_BYTES};
    use common::hostile::{Planted, bounded};
    use pretty_assertions::assert_eq;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// `pool-state.json` and its lock are created 0600, and an existing file readable by
    /// others is replaced by a 0600 one.
    #[test]
    fn the_state_file_and_its_lock_are_private() {
        if std::env::var_os(CHILD_ENV).is_some() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let pool_dir = dir.path().join("pool");
        let (store, ids) = seeded(&pool_dir, 1);
        let change = state_of([(
            ids[0].clone(),
            family_cooldown("gpt-5", at(Duration::from_secs(60)), 1),
        )]);
        store.save_policy_state(&change).unwrap();
        assert_eq!(mode(&store.state_file()), 0o600);
        assert_eq!(mode(&pool_dir.join("pool-state.lock")), 0o600);
        assert_eq!(mode(&pool_dir), 0o700);

        // The state file's save creates the directory too, privately.
        let fresh = PoolStore::new(dir.path().join("state-only"));
        fresh.save_policy_state(&change).unwrap();
        assert_eq!(mode(fresh.dir()), 0o700);
        assert_eq!(mode(&fresh.state_file()), 0o600);

        // A world-readable file left by someone else becomes private on the next save.
        std::fs::set_permissions(store.state_file(), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let mut later = change.clone();
        later.accounts.get_mut(&ids[0]).unwrap().families.insert(
            "o3".into(),
            FamilyState::new(at(Duration::from_secs(90)), 1),
        );
        store.save_policy_state(&later).unwrap();
        assert_eq!(mode(&store.state_file()), 0o600);
        assert!(files_starting(&pool_dir, ".pool-state-").is_empty());
    }

    /// A FIFO, socket, device, directory or oversized file where `pool-state.json` is
    /// expected is refused at once with a typed error, left alone, and never hangs a load,
    /// `rotation_pool` or a save. The same for its lock file.
    #[test]
    fn hostile_files_in_the_state_files_place_are_refused_at_once() {
        if std::env::var_os(CHILD_ENV).is_some() {
            return;
        }
        for planted in [
            Planted::Fifo,
            Planted::Socket,
            Planted::DevZeroLink,
            Planted::Directory,
            Planted::Oversized(STATE_FILE_MAX_BYTES),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let (store, ids) = seeded(dir.path(), 1);
            let path = store.state_file();
            let _guard = planted.plant(&path);

            let s = store.clone();
            let err = bounded("load_policy_state", move || {
                s.load_policy_state().unwrap_err()
            });
            assert!(planted.refused_at(&err, &path), "load {planted:?}: {err:?}");
            assert!(
                err.to_string().contains(STATE_FILE),
                "names the file: {err}"
            );

            // The one-call glue never loses the accounts to the state file: it reports it.
            let s = store.clone();
            let setup = bounded("rotation_pool", move || {
                s.rotation_pool(PolicyConfig::default(), 1, NOW).unwrap()
            });
            assert_eq!(setup.policy.len(), 1, "rotation_pool {planted:?}");
            assert!(
                matches!(
                    setup.problems.as_slice(),
                    [auth_storage::policy::StateProblem::Unreadable { path: p, .. }] if *p == path
                ),
                "rotation_pool {planted:?}: {:?}",
                setup.problems
            );

            let s = store.clone();
            let change = state_of([(
                ids[0].clone(),
                family_cooldown("gpt-5", at(Duration::from_secs(60)), 1),
            )]);
            let err = bounded("save_policy_state", move || {
                s.save_policy_state(&change).unwrap_err()
            });
            assert!(planted.refused_at(&err, &path), "save {planted:?}: {err:?}");
            assert!(planted.still_there(&path), "{planted:?}");
            assert!(files_starting(dir.path(), "pool-state.json.damaged-").is_empty());
            assert!(files_starting(dir.path(), ".pool-state-").is_empty());
        }

        for planted in [Planted::Fifo, Planted::DevZeroLink, Planted::Directory] {
            let dir = tempfile::tempdir().unwrap();
            let (store, ids) = seeded(dir.path(), 1);
            let lock = dir.path().join("pool-state.lock");
            let _guard = planted.plant(&lock);
            let change = state_of([(
                ids[0].clone(),
                family_cooldown("gpt-5", at(Duration::from_secs(60)), 1),
            )]);
            let s = store.clone();
            let err = bounded("save_policy_state", move || {
                s.save_policy_state(&change).unwrap_err()
            });
            assert!(
                planted.refused_at(&err, &lock),
                "pool-state.lock {planted:?}: {err:?}"
            );
            assert!(!store.state_file().exists(), "{planted:?}");
            assert!(planted.still_there(&lock), "{planted:?}");
        }
    }
}
