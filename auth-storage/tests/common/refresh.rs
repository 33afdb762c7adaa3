//! A pool in a temporary directory, a [`TokenServer`] and a `PoolRefresher` between them,
//! and what the Codex CLI does in a home when its access token expires (feature `refresh`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use auth_core::refresh::{RefreshConfig, RefreshError, TokenEndpoint};
use auth_core::{AuthDocument, Timestamp, TokenData};
use auth_storage::pool::{Account, Upsert};
use auth_storage::refresh::{PoolRefreshError, PoolRefresher, RefreshOutcome};
use auth_storage::{CodexHome, CommitGuard, CredentialStore, FileStore, PoolStore};

use super::{TokenServer, unix_now};

/// A pool in a temporary directory, a token server and a refresher between them.
pub(crate) struct Fixture {
    pub(crate) server: TokenServer,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) pool: PoolStore,
    pub(crate) refresher: PoolRefresher,
}

impl Fixture {
    pub(crate) fn new() -> Self {
        Self::with_server(TokenServer::start())
    }

    pub(crate) fn with_server(server: TokenServer) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pool = PoolStore::new(dir.path().join("pool"));
        let refresher = refresher(server.url(), &pool);
        Self {
            server,
            dir,
            pool,
            refresher,
        }
    }

    /// Sign `email` in at the issuer with an access token that expired a minute ago and
    /// add the login to the pool (refreshed an hour ago); returns its tokens and pool id.
    pub(crate) fn add_expired(&self, email: &str, workspace: &str) -> (TokenData, String) {
        let tokens = self.server.sign_in(email, workspace, unix_now() - 60);
        let id = self
            .pool
            .update(|p| {
                let login = Account::from_login(tokens.clone(), Some(hour_ago()), 0);
                match p.upsert(login) {
                    Upsert::Added(i) | Upsert::Updated(i) => p.accounts[i].id.clone(),
                    other => panic!("{other:?}"),
                }
            })
            .unwrap();
        (tokens, id)
    }

    /// `codex login` of `email` in the Codex home `home`: tokens whose access token expired
    /// a minute ago, refreshed an hour ago, in `auth.json`.
    pub(crate) fn login_in_home(&self, home: &Path, email: &str, workspace: &str) -> TokenData {
        let tokens = self.server.sign_in(email, workspace, unix_now() - 60);
        put_login(home, &tokens);
        tokens
    }

    pub(crate) fn account(&self, id: &str) -> Account {
        self.pool.load().unwrap().pool.account(id).unwrap().clone()
    }

    /// A Codex home in the temporary directory.
    pub(crate) fn home(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `PoolStore::switch_to`: the pool hands account `id` to the Codex home `home`.
    pub(crate) fn hand_to(&self, id: &str, home: &Path) {
        let index = self.pool.load().unwrap().pool.index_of(id).unwrap();
        let store = FileStore::new(CodexHome::new(home));
        self.pool
            .switch_to(index, &store, unix_now() as u64)
            .unwrap();
    }

    /// A refresh of `id` from `seen` whose answer cannot be saved to the pool (its lock is
    /// held past a 300 ms timeout while the issuer holds the answer): checks that it ends
    /// in `PoolRefreshError::Persist` showing no secret, and returns the tokens it carries
    /// (the issuer's valid ones).
    pub(crate) async fn refresh_that_cannot_save(&self, id: &str, seen: &TokenData) -> TokenData {
        let impatient = refresher(
            self.server.url(),
            &PoolStore::new(self.pool.dir()).with_lock_timeout(Duration::from_millis(300)),
        );
        let workspace = seen.effective_account_id().unwrap();
        self.server.stall_next(&workspace);
        let running = spawn_refresh(&impatient, id, seen);
        assert!(
            wait_stalled(&self.server).await,
            "the request never arrived"
        );
        let pool_lock = auth_storage::lock::FileLock::acquire(
            &self.pool.dir().join("pool.lock"),
            0o600,
            Duration::from_secs(5),
        )
        .unwrap();
        self.server.release();
        let err = finished(running).await.unwrap_err();
        drop(pool_lock);
        assert_no_secrets(&self.server, &shown(&err));
        let PoolRefreshError::Persist { tokens, .. } = err else {
            panic!("{err:?}")
        };
        assert_eq!(
            tokens.refresh_token.expose(),
            self.server.valid_refresh_token(&workspace)
        );
        *tokens
    }
}

fn hour_ago() -> Timestamp {
    Timestamp::from_unix_seconds(unix_now() - 3600).unwrap()
}

/// Write `tokens` into the Codex home `home` as its `auth.json` login, refreshed an hour
/// ago (e.g. a copy put back from a backup).
pub(crate) fn put_login(home: &Path, tokens: &TokenData) {
    FileStore::new(CodexHome::new(home))
        .save(&AuthDocument::chatgpt(tokens.clone(), hour_ago()))
        .unwrap();
}

pub(crate) fn refresher(url: &str, pool: &PoolStore) -> PoolRefresher {
    PoolRefresher::new(endpoint(url), pool.clone()).with_lock_timeout(Duration::from_secs(30))
}

pub(crate) fn endpoint(url: &str) -> TokenEndpoint {
    TokenEndpoint::new(RefreshConfig::default().with_token_url(url)).unwrap()
}

/// The tokens in the Codex home `home`'s `auth.json`.
pub(crate) fn home_tokens(home: &Path) -> TokenData {
    let store = FileStore::new(CodexHome::new(home));
    store.load().unwrap().unwrap().tokens.unwrap()
}

/// What the Codex CLI does when its access token expires: under its own locks, read
/// `auth.json`, exchange its refresh token, write the answer back.
pub(crate) async fn cli_refresh(url: &str, home: &Path) -> Result<TokenData, RefreshError> {
    cli_refresh_store(url, &FileStore::new(CodexHome::new(home))).await
}

/// [`cli_refresh`] for a Codex home whose login is in `store` (e.g. the keyring).
pub(crate) async fn cli_refresh_store(
    url: &str,
    store: &dyn CredentialStore,
) -> Result<TokenData, RefreshError> {
    let guard = store.home().lock().unwrap();
    cli_refresh_locked(url, store, &guard).await
}

/// [`cli_refresh_store`] by a CLI that already holds the home's locks (`guard`).
pub(crate) async fn cli_refresh_locked(
    url: &str,
    store: &dyn CredentialStore,
    guard: &CommitGuard,
) -> Result<TokenData, RefreshError> {
    let mut doc = store.load().unwrap().unwrap();
    let refreshed = endpoint(url)
        .exchange(&doc.tokens.as_ref().unwrap().refresh_token)
        .await?;
    let fresh = refreshed
        .apply_to_document(&mut doc, Timestamp::now())
        .unwrap();
    store.save_locked(&doc, guard).unwrap();
    Ok(fresh)
}

/// The tokens of an outcome that must be `Refreshed` (one request made by this caller).
pub(crate) fn refreshed(outcome: RefreshOutcome) -> TokenData {
    match outcome {
        RefreshOutcome::Refreshed(tokens) => tokens,
        other => panic!("expected a refresh by this caller: {other:?}"),
    }
}

/// Everything a person or a log could be shown of `err`: `Display`, `Debug` and the
/// `Display` of every source.
pub(crate) fn shown(err: &PoolRefreshError) -> String {
    let mut text = format!("{err}\n{err:?}");
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        text.push_str(&format!("\n{inner}\n{inner:?}"));
        source = inner.source();
    }
    text
}

/// No token the issuer handed out and no email appears in `text`.
pub(crate) fn assert_no_secrets(server: &TokenServer, text: &str) {
    for secret in server.secrets() {
        assert!(
            !text.contains(&secret),
            "a token or an email leaked into: {text}"
        );
    }
}

pub(crate) type Running = tokio::task::JoinHandle<Result<RefreshOutcome, PoolRefreshError>>;

/// `refresher.refresh(id, seen)` in a task of its own.
pub(crate) fn spawn_refresh(refresher: &PoolRefresher, id: &str, seen: &TokenData) -> Running {
    let (r, id, seen) = (refresher.clone(), id.to_owned(), seen.clone());
    tokio::spawn(async move { r.refresh(&id, &seen).await })
}

/// Wait (at most 60 s, off the runtime's threads) until the issuer holds an answer.
pub(crate) async fn wait_stalled(server: &TokenServer) -> bool {
    let issuer = server.issuer();
    tokio::task::spawn_blocking(move || issuer.wait_stalled(60))
        .await
        .unwrap()
}

/// The result of a spawned refresh, waiting at most 30 s.
pub(crate) async fn finished(running: Running) -> Result<RefreshOutcome, PoolRefreshError> {
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the refresh did not finish within 30 s")
        .unwrap()
}
