//! Stable account ids: assigned once, kept across re-imports and migrations, never reused,
//! never derived from the email, accepted by `rotation_policy::AccountId`.

mod common;

use std::collections::BTreeSet;

use auth_storage::PoolStore;
use auth_storage::pool::{
    Account, CURRENT_VERSION, PoolDocument, Unusable, UnusableReason, Upsert, is_valid_account_id,
};
use proptest::prelude::*;

const MAIN_V2: &[u8] = include_bytes!("fixtures/pool-v2-main-1ed709f.json");

fn login(email: &str, workspace: &str, refresh: &str) -> Account {
    Account::from_login(
        common::tokens(email, workspace, refresh),
        None,
        1_700_000_000,
    )
}

fn assert_ids_usable(pool: &PoolDocument) {
    let ids: BTreeSet<&str> = pool.accounts.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids.len(), pool.accounts.len(), "ids are unique");
    for account in &pool.accounts {
        assert!(is_valid_account_id(&account.id), "{}", account.id);
        rotation_policy::AccountId::new(account.id.clone()).expect("a policy id as-is");
        let email = account.email.as_deref().unwrap_or("-").to_lowercase();
        assert!(!account.id.contains(&email) && !account.id.contains('@'));
    }
}

/// A pool file written by main before ids existed loads with every account, field and
/// extra kept, the same active account, and ids every reader agrees on; the first write
/// stores them.
#[test]
fn a_pool_written_by_the_previous_main_loads_and_keeps_every_account() {
    let dir = tempfile::tempdir().unwrap();
    let store = PoolStore::new(dir.path());
    std::fs::write(store.file(), MAIN_V2).unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(loaded.migrated_from, Some(2));
    let pool = loaded.pool;
    let emails: Vec<_> = pool
        .accounts
        .iter()
        .map(|a| a.email.clone().unwrap())
        .collect();
    assert_eq!(
        emails,
        ["alice@example.com", "Bob@Example.com", "carol@example.com"]
    );
    assert_ids_usable(&pool);
    assert_eq!(pool.active_index(), Some(1), "bob stays active");
    assert!(!pool.accounts[1].enabled);
    assert_eq!(pool.accounts[1].extra["note_from_another_tool"], "kept");
    assert_eq!(pool.accounts[0].cooldowns["gpt-5"], 1_700_003_600);
    assert_eq!(
        pool.accounts[0].health.last_failure.as_deref(),
        Some("rate_limited")
    );
    assert_eq!(pool.extra["tool_setting"]["x"], 1);
    // Another reader before any write derives the same ids.
    assert_eq!(store.load().unwrap().pool, pool);

    store.update(|_| ()).unwrap();
    let raw: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.file()).unwrap()).unwrap();
    assert_eq!(raw["version"], CURRENT_VERSION);
    assert_eq!(raw["active"], pool.accounts[1].id.as_str());
    let again = store.load().unwrap();
    assert_eq!(again.migrated_from, None);
    let ids = |p: &PoolDocument| p.accounts.iter().map(|a| a.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&again.pool), ids(&pool));
}

#[test]
fn an_id_is_kept_on_reimport_and_never_reused_after_removal() {
    let mut pool = PoolDocument::default();
    assert_eq!(
        pool.upsert(login("a@example.com", "ws-1", "rt-1")),
        Upsert::Added(0)
    );
    let first = pool.accounts[0].id.clone();
    // The same login with new tokens (the CLI refreshed it, or the person signed in again).
    assert_eq!(
        pool.upsert(login("A@example.com", "ws-1", "rt-2")),
        Upsert::Updated(0)
    );
    assert_eq!(pool.accounts[0].id, first);
    assert_eq!(pool.accounts[0].tokens.refresh_token.expose(), "rt-2");
    // Removed and added again: a new id.
    pool.remove(0).unwrap();
    pool.upsert(login("a@example.com", "ws-1", "rt-2"));
    assert_ne!(pool.accounts[0].id, first);
    assert_ids_usable(&pool);
}

#[test]
fn a_caller_supplied_id_is_kept_only_when_valid_and_free() {
    let mut pool = PoolDocument::default();
    let mut a = login("a@example.com", "ws-1", "rt-1");
    a.id = "team-a".into();
    pool.upsert(a);
    assert_eq!(pool.accounts[0].id, "team-a");
    for bad in [
        "team-a",
        "",
        "with space",
        "someone@example.com",
        "../up",
        &"x".repeat(65),
    ] {
        let mut b = login(&format!("{}b@example.com", bad.len()), "ws-2", "rt-b");
        b.id = bad.to_owned();
        pool.upsert(b);
    }
    assert_ids_usable(&pool);
}

/// Hand-edited files: a missing, invalid or duplicated id is replaced by one derived from
/// the file, the same for every reader; no account is lost.
#[test]
fn missing_invalid_and_duplicate_ids_are_repaired_the_same_way_by_every_reader() {
    let dir = tempfile::tempdir().unwrap();
    let store = PoolStore::new(dir.path());
    let mut pool = PoolDocument::default();
    for (i, id) in ["keep-me", "keep-me", "", "bad id", "a@b"]
        .iter()
        .enumerate()
    {
        let mut a = login(
            &format!("u{i}@example.com"),
            &format!("ws-{i}"),
            &format!("rt-{i}"),
        );
        a.id = (*id).to_owned();
        pool.accounts.push(a);
    }
    std::fs::write(store.file(), serde_json::to_vec_pretty(&pool).unwrap()).unwrap();
    let first = store.load().unwrap().pool;
    assert_eq!(first.accounts.len(), 5);
    assert_eq!(first.accounts[0].id, "keep-me");
    assert_ids_usable(&first);
    assert_eq!(store.load().unwrap().pool, first);
}

#[test]
fn new_tokens_clear_an_unusable_mark_and_the_same_tokens_do_not() {
    let mut pool = PoolDocument::default();
    pool.upsert(login("a@example.com", "ws-1", "rt-1"));
    pool.accounts[0].unusable = Some(Unusable::new(
        UnusableReason::LoginRequired,
        5,
        Some("refresh_token_reused"),
    ));
    assert!(!pool.accounts[0].is_available("gpt-5", 10));
    // Importing a home that still holds the dead tokens changes nothing.
    pool.upsert(login("a@example.com", "ws-1", "rt-1"));
    assert!(pool.accounts[0].unusable.is_some());
    // A different copy that is not newer (it may be the very token that was refused).
    pool.upsert(login("a@example.com", "ws-1", "rt-other"));
    assert!(pool.accounts[0].unusable.is_some());
    // A new sign-in: newer tokens.
    let mut fresh = login("a@example.com", "ws-1", "rt-new");
    fresh.last_refresh = Some(auth_core::Timestamp::from_unix_seconds(1_800_000_000).unwrap());
    pool.upsert(fresh);
    assert!(pool.accounts[0].unusable.is_none());
    assert!(pool.accounts[0].is_available("gpt-5", 10));
}

/// An import of an older copy (a Codex home whose token another process already refreshed)
/// never replaces the pool's newer tokens.
#[test]
fn older_tokens_never_replace_newer_ones() {
    let mut pool = PoolDocument::default();
    let mut newer = login("a@example.com", "ws-1", "rt-2");
    newer.last_refresh = Some(auth_core::Timestamp::from_unix_seconds(1_800_000_100).unwrap());
    pool.upsert(newer);
    let mut older = login("a@example.com", "ws-1", "rt-1");
    older.last_refresh = Some(auth_core::Timestamp::from_unix_seconds(1_800_000_000).unwrap());
    older.plan = Some("team".into());
    assert_eq!(pool.upsert(older), Upsert::Updated(0));
    assert_eq!(pool.accounts[0].tokens.refresh_token.expose(), "rt-2");
    assert_eq!(
        pool.accounts[0].plan.as_deref(),
        Some("team"),
        "the rest is updated"
    );
}

#[test]
fn an_unusable_mark_keeps_only_a_short_code() {
    let ok = Unusable::new(
        UnusableReason::Deactivated,
        1,
        Some("deactivated_workspace"),
    );
    assert_eq!(ok.to_string(), "deactivated (deactivated_workspace)");
    for bad in ["has space", "\u{1b}[31m", "", "a@b.c", &"x".repeat(65)] {
        let mark = Unusable::new(UnusableReason::LoginRequired, 1, Some(bad));
        assert_eq!(mark.code, None, "{bad:?}");
    }
}

#[derive(Debug, Clone)]
enum Op {
    Upsert { who: u8, token: u8 },
    Remove(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..6, any::<u8>()).prop_map(|(who, token)| Op::Upsert { who, token }),
        any::<u8>().prop_map(Op::Remove),
    ]
}

proptest! {
    /// Any sequence of imports and removals: ids stay valid and unique, an account keeps
    /// its id for as long as it is in the pool, and no id ever comes back.
    #[test]
    fn ids_are_stable_unique_and_never_reused(ops in proptest::collection::vec(op(), 1..40)) {
        let mut pool = PoolDocument::default();
        let mut ever = BTreeSet::new();
        for op in ops {
            let before: Vec<(Option<String>, String)> = pool
                .accounts
                .iter()
                .map(|a| (a.account_id.clone(), a.id.clone()))
                .collect();
            match op {
                Op::Upsert { who, token } => {
                    let email = format!("user{who}@example.com");
                    match pool.upsert(login(&email, &format!("ws-{who}"), &format!("rt-{who}-{token}"))) {
                        Upsert::Added(i) => {
                            prop_assert!(ever.insert(pool.accounts[i].id.clone()), "reused id");
                        }
                        Upsert::Updated(i) => {
                            prop_assert_eq!(&pool.accounts[i].id, &before[i].1);
                        }
                        other => prop_assert!(false, "{:?}", other),
                    }
                }
                Op::Remove(i) => {
                    if !pool.accounts.is_empty() {
                        pool.remove(usize::from(i) % pool.accounts.len());
                    }
                }
            }
            for a in &pool.accounts {
                if let Some((_, id)) = before.iter().find(|(w, _)| *w == a.account_id) {
                    prop_assert_eq!(&a.id, id);
                }
            }
            assert_ids_usable(&pool);
        }
    }
}
