//! Switching the login of a Codex home to a pool account never loses the login it replaces.

mod common;

use std::time::{Duration, UNIX_EPOCH};

use auth_core::{AuthDocument, Secret, Timestamp};
use auth_storage::pool::{Account, Upsert};
use auth_storage::{CodexHome, CredentialStore, FileStore, PoolStore, StorageError};
use common::tokens;

fn at(secs: u64) -> Timestamp {
    Timestamp::from_system_time(UNIX_EPOCH + Duration::from_secs(secs))
}

fn login(email: &str, id: &str, refresh: &str, refreshed: u64) -> AuthDocument {
    AuthDocument::chatgpt(tokens(email, id, refresh), at(refreshed))
}

/// A pool holding alice (rt-a1) and bob (rt-b1), both refreshed at t=1000.
fn pool_with_two(dir: &std::path::Path) -> PoolStore {
    let pool = PoolStore::new(dir);
    pool.update(|p| {
        for (email, id, rt) in [
            ("alice@example.com", "acct-a", "rt-a1"),
            ("bob@example.com", "acct-b", "rt-b1"),
        ] {
            p.upsert(Account::from_login(
                tokens(email, id, rt),
                Some(at(1000)),
                1,
            ));
        }
    })
    .unwrap();
    pool
}

fn refresh_of(pool: &PoolStore, i: usize) -> String {
    pool.load().unwrap().pool.accounts[i]
        .tokens
        .refresh_token
        .expose()
        .to_owned()
}

#[test]
fn tokens_the_cli_refreshed_go_back_to_the_pool_before_switching() {
    let (pd, hd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let pool = pool_with_two(pd.path());
    let home = FileStore::new(CodexHome::new(hd.path()));
    pool.activate(0, &home, 10).unwrap();
    // The CLI refreshes alice in the home: rt-a1 is now spent.
    home.save(&login("alice@example.com", "acct-a", "rt-a2", 2000))
        .unwrap();

    let done = pool.switch_to(1, &home, 20).unwrap();
    assert_eq!(done.account.email.as_deref(), Some("bob@example.com"));
    let (outcome, previous) = done.previous.unwrap();
    assert_eq!(outcome, Upsert::Updated(0));
    assert_eq!(previous.tokens.refresh_token.expose(), "rt-a2");
    assert_eq!(
        refresh_of(&pool, 0),
        "rt-a2",
        "the pool got the fresh token"
    );
    let loaded = pool.load().unwrap().pool;
    assert_eq!(loaded.accounts.len(), 2);
    assert_eq!(loaded.active_index(), Some(1));
    let now_in_home = home.load().unwrap().unwrap().tokens.unwrap();
    assert_eq!(now_in_home.refresh_token.expose(), "rt-b1");

    // And back: alice is written with the fresh token, not the spent one.
    pool.activate(0, &home, 30).unwrap();
    let back = home.load().unwrap().unwrap().tokens.unwrap();
    assert_eq!(back.refresh_token.expose(), "rt-a2");
}

#[test]
fn switching_to_the_login_already_there_keeps_its_fresh_tokens() {
    let (pd, hd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let pool = pool_with_two(pd.path());
    let home = FileStore::new(CodexHome::new(hd.path()));
    home.save(&login("alice@example.com", "acct-a", "rt-a9", 5000))
        .unwrap();
    pool.activate(0, &home, 10).unwrap();
    let written = home.load().unwrap().unwrap().tokens.unwrap();
    assert_eq!(written.refresh_token.expose(), "rt-a9");
    assert_eq!(refresh_of(&pool, 0), "rt-a9");
}

#[test]
fn a_fresher_pool_copy_is_not_overwritten_by_an_older_home() {
    let (pd, hd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let pool = pool_with_two(pd.path());
    let home = FileStore::new(CodexHome::new(hd.path()));
    // The home still has an old copy of bob (t=500); the pool's (t=1000) is newer, e.g.
    // because a rotation proxy refreshed it.
    home.save(&login("bob@example.com", "acct-b", "rt-b0", 500))
        .unwrap();
    let done = pool.switch_to(0, &home, 10).unwrap();
    assert_eq!(done.previous.unwrap().0, Upsert::Updated(1));
    assert_eq!(refresh_of(&pool, 1), "rt-b1");
}

#[test]
fn an_unknown_login_in_the_home_is_added_not_lost() {
    let (pd, hd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let pool = pool_with_two(pd.path());
    let home = FileStore::new(CodexHome::new(hd.path()));
    home.save(&login("carol@example.com", "acct-c", "rt-c1", 3000))
        .unwrap();
    let done = pool.switch_to(1, &home, 10).unwrap();
    let (outcome, carol) = done.previous.unwrap();
    assert_eq!(outcome, Upsert::Added(2));
    assert_eq!(carol.email.as_deref(), Some("carol@example.com"));
    let loaded = pool.load().unwrap().pool;
    assert_eq!(loaded.accounts.len(), 3);
    assert_eq!(loaded.active_index(), Some(1));
}

#[test]
fn nothing_changes_when_the_home_cannot_be_replaced_safely() {
    let (pd, hd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let pool = pool_with_two(pd.path());
    let home = FileStore::new(CodexHome::new(hd.path()));
    let pool_bytes = || std::fs::read(pool.file()).unwrap();
    let before = pool_bytes();

    // An API-key login cannot be kept in the pool: refused, key kept.
    home.save(&AuthDocument::api_key(Secret::new("sk-keep-me".into())))
        .unwrap();
    let home_bytes = std::fs::read(home.home().auth_file()).unwrap();
    let err = pool.activate(0, &home, 10).unwrap_err();
    assert!(matches!(err, StorageError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("API-key login"), "{err}");
    assert!(!err.to_string().contains("sk-keep-me"), "{err}");
    assert_eq!(std::fs::read(home.home().auth_file()).unwrap(), home_bytes);
    assert_eq!(pool_bytes(), before);

    // A damaged auth.json is not replaced.
    std::fs::write(home.home().auth_file(), b"{\"tokens\": ").unwrap();
    let err = pool.activate(0, &home, 10).unwrap_err();
    assert!(matches!(err, StorageError::AuthFile { .. }), "{err}");
    assert_eq!(
        std::fs::read(home.home().auth_file()).unwrap(),
        b"{\"tokens\": "
    );
    assert_eq!(pool_bytes(), before);

    // Out of range: the home's login is not touched and not even saved back.
    home.save(&login("carol@example.com", "acct-c", "rt-c1", 3000))
        .unwrap();
    let home_bytes = std::fs::read(home.home().auth_file()).unwrap();
    let err = pool.activate(7, &home, 10).unwrap_err();
    assert!(err.to_string().contains("no account #8"), "{err}");
    assert_eq!(std::fs::read(home.home().auth_file()).unwrap(), home_bytes);
    assert_eq!(pool_bytes(), before);
}
