//! Pool revisions are numbers from a file: near `u64::MAX` they must neither wrap nor make
//! recovery pick an old backup. Real files in a temporary directory.

mod common;

use std::path::Path;

use auth_storage::PoolStore;
use auth_storage::pool::{Account, PoolDocument};
use common::tokens;
use proptest::prelude::*;

fn account(n: u64) -> Account {
    let id = format!("acct-{n}");
    Account::from_login(
        tokens(&format!("user{n}@example.com"), &id, &format!("rt-{id}")),
        None,
        1_700_000_000,
    )
}

/// Writes `pool.json` (and its backup link) as a program that got to `revision` would have.
fn seed_at(dir: &Path, revision: u64, accounts: u64) {
    let store = PoolStore::new(dir);
    for n in 0..accounts {
        store.update(|p| p.upsert(account(n))).unwrap();
    }
    // Hand-edit the revision (a hostile or buggy writer), keeping the backups beside it.
    let path = store.file();
    let mut pool: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    pool["revision"] = revision.into();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, serde_json::to_vec_pretty(&pool).unwrap()).unwrap();
    std::fs::hard_link(&path, dir.join(format!("pool.json.bak-{revision:012}"))).unwrap();
}

fn emails(pool: &PoolDocument) -> Vec<String> {
    let mut e: Vec<String> = pool
        .accounts
        .iter()
        .filter_map(|a| a.email.clone())
        .collect();
    e.sort();
    e
}

fn backup_numbers(dir: &Path) -> Vec<u64> {
    let mut n: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .to_str()?
                .strip_prefix("pool.json.bak-")?
                .parse()
                .ok()
        })
        .collect();
    n.sort();
    n
}

#[test]
fn writes_past_u64_max_keep_every_account_recoverable() {
    let dir = tempfile::tempdir().unwrap();
    seed_at(dir.path(), u64::MAX - 1, 2);
    let store = PoolStore::new(dir.path());
    // Six more writes, each adding an account: they cross u64::MAX.
    for n in 2..8 {
        store.update(|p| p.upsert(account(n))).unwrap();
        let loaded = store.load().unwrap();
        assert!(loaded.recovery.is_none());
        assert_eq!(loaded.pool.accounts.len() as u64, n + 1);
    }
    let numbers = backup_numbers(dir.path());
    assert!(numbers.len() <= 5 + 1, "{numbers:?}");
    assert!(!numbers.contains(&u64::MAX), "renumbered: {numbers:?}");

    // Lose pool.json: recovery must come back with all 8 accounts, from the newest backup.
    std::fs::remove_file(store.file()).unwrap();
    let loaded = store.load().unwrap();
    let backup = loaded
        .recovery
        .as_ref()
        .and_then(|r| r.backup.clone())
        .unwrap();
    assert_eq!(
        emails(&loaded.pool).len(),
        8,
        "recovered from {}",
        backup.display()
    );
    let mut expected: Vec<String> = (0..8).map(|n| format!("user{n}@example.com")).collect();
    expected.sort();
    assert_eq!(emails(&loaded.pool), expected);
    // And writing on after the recovery still works and keeps them.
    store.update(|p| p.upsert(account(8))).unwrap();
    assert_eq!(store.load().unwrap().pool.accounts.len(), 9);
}

#[test]
fn a_pool_already_at_u64_max_is_written_without_wrapping() {
    let dir = tempfile::tempdir().unwrap();
    seed_at(dir.path(), u64::MAX, 1);
    let store = PoolStore::new(dir.path());
    store.update(|p| p.upsert(account(1))).unwrap();
    let revision = store.load().unwrap().pool.revision;
    let numbers = backup_numbers(dir.path());
    assert_eq!(numbers.last(), Some(&revision), "{numbers:?}");
    assert!(revision < 100, "renumbered from 0: {revision}");
    std::fs::remove_file(store.file()).unwrap();
    assert_eq!(store.load().unwrap().pool.accounts.len(), 2);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// From any starting revision, a few writes and the loss of `pool.json` lose no
    /// account (the newest backup is the newest version).
    #[test]
    fn any_starting_revision_recovers_the_newest_version(
        start in prop_oneof![Just(u64::MAX), Just(u64::MAX - 1), u64::MAX - 8..=u64::MAX, any::<u64>()],
        writes in 1u64..5,
    ) {
        let dir = tempfile::tempdir().unwrap();
        seed_at(dir.path(), start, 1);
        let store = PoolStore::new(dir.path());
        for n in 1..=writes {
            store.update(|p| p.upsert(account(n))).unwrap();
        }
        std::fs::remove_file(store.file()).unwrap();
        let loaded = store.load().unwrap();
        prop_assert_eq!(loaded.pool.accounts.len() as u64, writes + 1);
    }
}
