//! Several processes × several threads race to refresh one expiring login against a
//! loopback token endpoint that, like OpenAI's, rejects a reused refresh token: exactly one
//! request is made and everybody ends with the new tokens.
#![cfg(feature = "refresh")]

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use auth_core::refresh::{RefreshConfig, Refresher, TokenEndpoint};
use auth_core::{AuthDocument, Timestamp};
use auth_storage::refresh::{CoordinatedRefresher, LockedRefreshStore};
use auth_storage::{CodexHome, CredentialStore, FileStore};
use common::{TokenServer, tokens, unix_now};

const ROLE: &str = "AUTH_STORAGE_REFRESH_ROLE";
const PROCESSES: usize = 4;
const TASKS: usize = 4;

/// Child: TASKS concurrent refreshes of the stale tokens in `seen.json`.
#[test]
fn child_refresher() {
    if std::env::var_os(ROLE).is_none() {
        return;
    }
    let home = std::env::var("CODEX_HOME").unwrap();
    let url = std::env::var("TOKEN_URL").unwrap();
    let seen_doc =
        AuthDocument::from_json_slice(&std::fs::read(Path::new(&home).join("seen.json")).unwrap())
            .unwrap();
    let seen = seen_doc.tokens.unwrap();
    let store = Arc::new(FileStore::new(CodexHome::new(&home)));
    let endpoint = TokenEndpoint::new(RefreshConfig::default().with_token_url(url)).unwrap();
    let refresher =
        CoordinatedRefresher::new(endpoint, store).with_lock_timeout(Duration::from_secs(30));
    // Start together: wait (bounded) for the parent's go signal.
    common::wait_for_file(&Path::new(&home).join("go"), 20);
    let results = common::run_concurrently(TASKS, |_| {
        let (r, s) = (refresher.clone(), seen.clone());
        async move { r.refresh(&s).await }
    });
    common::print_outcomes(results);
}

#[test]
fn processes_and_threads_refresh_once_and_all_get_the_new_tokens() {
    if std::env::var_os(ROLE).is_some() {
        return;
    }
    let server = TokenServer::start();
    let dir = tempfile::tempdir().unwrap();
    let doc = AuthDocument::chatgpt(
        server.sign_in("race@example.com", "acct-race", unix_now() - 60),
        Timestamp::now(),
    );
    FileStore::new(CodexHome::new(dir.path()))
        .save(&doc)
        .unwrap();
    std::fs::write(dir.path().join("seen.json"), doc.to_json_pretty()).unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            common::spawn_test_child(
                "child_refresher",
                [
                    (ROLE, OsStr::new("refresher")),
                    ("CODEX_HOME", dir.path().as_os_str()),
                    ("TOKEN_URL", server.url().as_ref()),
                ],
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(dir.path().join("go"), b"").unwrap();
    // Bounded: each child waits at most 20 s for the go signal and 30 s for the lock.
    let lines = common::child_results(children, 90);
    assert_eq!(lines.len(), PROCESSES * TASKS, "{lines:?}");
    assert_eq!(
        server.requests(),
        1,
        "exactly one token request; results {lines:?}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("refreshed ")).count(),
        1,
        "{lines:?}"
    );
    let fresh = server.valid_refresh_token("acct-race");
    assert!(
        lines.iter().all(|l| l.ends_with(&format!(" {fresh}"))),
        "{lines:?}"
    );
    let stored = FileStore::new(CodexHome::new(dir.path()))
        .load()
        .unwrap()
        .unwrap();
    assert_eq!(stored.tokens.unwrap().refresh_token.expose(), fresh);
}

#[tokio::test]
async fn auth_core_refresher_persists_through_the_locked_store_and_refuses_to_clobber() {
    let server = TokenServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::new(CodexHome::new(dir.path())));
    let initial = server.sign_in("pair@example.com", "acct-pair", unix_now() - 60);
    store
        .save(&AuthDocument::chatgpt(initial.clone(), Timestamp::now()))
        .unwrap();
    let endpoint =
        TokenEndpoint::new(RefreshConfig::default().with_token_url(server.url())).unwrap();
    let refresher = Refresher::with_endpoint(
        endpoint.clone(),
        Arc::new(LockedRefreshStore::new(store.clone())),
    );
    let fresh = refresher.refresh(&initial).await.unwrap();
    let rotated = server.valid_refresh_token("acct-pair");
    assert_eq!(fresh.refresh_token.expose(), rotated);
    assert_eq!(
        store
            .load()
            .unwrap()
            .unwrap()
            .tokens
            .unwrap()
            .refresh_token
            .expose(),
        rotated
    );

    // Someone logs in with another account while a refresh of the new tokens runs: not overwritten.
    let other = tokens("other@example.com", "acct-other", "rt-other");
    store
        .save(&AuthDocument::chatgpt(other, Timestamp::now()))
        .unwrap();
    let refresher =
        Refresher::with_endpoint(endpoint, Arc::new(LockedRefreshStore::new(store.clone())));
    let err = refresher.refresh(&fresh).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("changed while the refresh was running"),
        "{err}"
    );
    assert_eq!(
        store
            .load()
            .unwrap()
            .unwrap()
            .tokens
            .unwrap()
            .refresh_token
            .expose(),
        "rt-other"
    );
}
