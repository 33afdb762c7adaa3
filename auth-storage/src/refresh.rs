//! Token refresh that never burns a refresh token, across processes (feature `refresh`).
//!
//! OpenAI refresh tokens rotate: if two processes (the Codex CLI and a proxy, two proxies…)
//! both exchange the same refresh token, the second gets `refresh_token_reused` and the
//! login is dead. [`CoordinatedRefresher::refresh`]:
//!
//! 1. takes the Codex home's commit lock (`auth.lock` + `auth.json.lock`, the locks the Codex
//!    CLI itself takes — so the CLI is excluded too);
//! 2. re-reads the stored login;
//! 3. if its refresh token is no longer the one the caller saw, someone else already
//!    refreshed: hands back the stored tokens without any request;
//! 4. otherwise exchanges the refresh token (one request, through
//!    [`auth_core::refresh::TokenEndpoint`]), saves the result atomically and releases the
//!    lock.
//!
//! Threads and tasks of one process are serialized by the same file lock (each attempt
//! opens its own descriptor), so this is single-flight within a process too.
//!
//! [`PoolRefresher`] does the same for the accounts of a pool, which several processes and
//! the Codex CLI (in homes the pool handed a login to) use at once: per-account lock,
//! the newest copy adopted from the pool or a linked home, one request, the answer saved to
//! both, and a login that is dead for good marked so nobody retries it. Its docs have the
//! step and lock table and what a crash between the issuer's answer and the save leaves.
//!
//! [`LockedRefreshStore`] is the other way in: an [`auth_core::refresh::RefreshStore`] for
//! auth-core's in-process [`Refresher`](auth_core::refresh::Refresher) that saves under
//! the same locks and refuses to overwrite credentials that changed meanwhile.

use std::sync::Arc;
use std::time::Duration;

pub use crate::pool_refresh::{
    HomeOpener, IN_FLIGHT_HOLD, PoolRefreshError, PoolRefresher, REFRESH_LOCK_DIR,
};

use auth_core::refresh::{
    PersistError, RefreshError, RefreshStore, RefreshedTokens, TokenEndpoint,
};
use auth_core::{AuthDocument, Timestamp, TokenData};

use crate::error::StorageError;
use crate::lock::DEFAULT_LOCK_TIMEOUT;
use crate::store::CredentialStore;

/// How a coordinated refresh ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefreshOutcome {
    /// We exchanged the refresh token and stored the new tokens.
    Refreshed(TokenData),
    /// Another process or thread had already stored newer tokens; no request was made.
    AlreadyRefreshed(TokenData),
}

impl RefreshOutcome {
    /// The tokens to use now.
    pub fn tokens(&self) -> &TokenData {
        match self {
            Self::Refreshed(t) | Self::AlreadyRefreshed(t) => t,
        }
    }

    /// The tokens to use now, by value.
    pub fn into_tokens(self) -> TokenData {
        match self {
            Self::Refreshed(t) | Self::AlreadyRefreshed(t) => t,
        }
    }
}

/// Why a coordinated refresh failed. Never contains a token value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinatedRefreshError {
    /// Locking or reading the stored login failed; nothing was sent.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The store holds no ChatGPT tokens to refresh; nothing was sent.
    #[error("no ChatGPT login is stored in {home}; sign in with `codex login` first")]
    NotLoggedIn {
        /// The Codex home.
        home: std::path::PathBuf,
    },
    /// The token endpoint refused or could not be reached; the stored login is unchanged.
    #[error(transparent)]
    Refresh(#[from] RefreshError),
    /// New tokens were obtained (the old refresh token is spent) but could not be saved.
    /// `tokens` carries them so the caller can keep using — and save — them.
    #[error("refreshed tokens could not be saved: {source}")]
    Persist {
        /// The storage failure.
        #[source]
        source: StorageError,
        /// The new tokens (redacted in `Debug`).
        tokens: Box<TokenData>,
    },
}

/// Refreshes the login of one Codex home so that however many processes and threads ask at
/// once, exactly one token request is made (see the [module docs](self)).
///
/// ```no_run
/// use std::sync::Arc;
/// use auth_core::refresh::{RefreshConfig, TokenEndpoint};
/// use auth_storage::refresh::CoordinatedRefresher;
/// use auth_storage::{CodexHome, CredentialStore, FileStore};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let store = Arc::new(FileStore::new(CodexHome::new("/home/me/.codex")));
/// let refresher = CoordinatedRefresher::new(TokenEndpoint::new(RefreshConfig::default())?, store.clone());
/// let seen = store.load()?.and_then(|d| d.tokens).expect("logged in");
/// // ...a request failed with 401 using `seen.access_token`...
/// let fresh = refresher.refresh(&seen).await?.into_tokens();
/// # let _ = fresh; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct CoordinatedRefresher {
    endpoint: TokenEndpoint,
    store: Arc<dyn CredentialStore>,
    lock_timeout: Duration,
}

impl CoordinatedRefresher {
    /// Refresh through `endpoint`, storing in `store`.
    pub fn new(endpoint: TokenEndpoint, store: Arc<dyn CredentialStore>) -> Self {
        Self {
            endpoint,
            store,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }

    /// Wait at most `timeout` for the Codex home's locks (default 30 s). Another process's
    /// refresh holds them for one token request.
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Refresh `seen` (the tokens the caller found stale) unless the store already holds
    /// newer ones. Must run inside a Tokio runtime (file work happens on
    /// `spawn_blocking` threads).
    pub async fn refresh(
        &self,
        seen: &TokenData,
    ) -> Result<RefreshOutcome, CoordinatedRefreshError> {
        let store = Arc::clone(&self.store);
        let timeout = self.lock_timeout;
        let seen_refresh = seen.refresh_token.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            let guard = store.home().lock_for_commit(timeout)?;
            let doc = store.load()?;
            Ok::<_, CoordinatedRefreshError>((guard, doc))
        })
        .await
        .map_err(|_| aborted())??;
        let (guard, doc) = prepared;
        let Some(mut doc) = doc.filter(|d| d.tokens.is_some()) else {
            return Err(CoordinatedRefreshError::NotLoggedIn {
                home: self.store.home().dir().to_path_buf(),
            });
        };
        let Some(stored) = doc.tokens.clone() else {
            return Err(CoordinatedRefreshError::NotLoggedIn {
                home: self.store.home().dir().to_path_buf(),
            });
        };
        if stored.refresh_token != seen_refresh {
            tracing::debug!("tokens were refreshed by someone else; reusing them");
            return Ok(RefreshOutcome::AlreadyRefreshed(stored));
        }
        // The lock stays held across the request: nobody else may spend this token.
        let refreshed = self.endpoint.exchange(&stored.refresh_token).await?;
        let next = refreshed.apply_to(&stored);
        doc.tokens = Some(next.clone());
        doc.last_refresh = Some(Timestamp::now());
        let store = Arc::clone(&self.store);
        let saved = tokio::task::spawn_blocking(move || {
            let result = store.save_locked(&doc, &guard);
            drop(guard);
            result
        })
        .await;
        match saved {
            Ok(Ok(())) => Ok(RefreshOutcome::Refreshed(next)),
            Ok(Err(source)) => Err(CoordinatedRefreshError::Persist {
                source,
                tokens: Box::new(next),
            }),
            Err(_) => Err(CoordinatedRefreshError::Persist {
                source: StorageError::Invalid {
                    what: "refresh",
                    detail: "the save task ended without a result".to_owned(),
                },
                tokens: Box::new(next),
            }),
        }
    }
}

fn aborted() -> CoordinatedRefreshError {
    CoordinatedRefreshError::Refresh(RefreshError::Aborted)
}

/// An [`auth_core::refresh::RefreshStore`] that saves refreshed tokens into a
/// [`CredentialStore`] under the Codex home's commit lock, like the Codex CLI's refresh
/// commit: if the stored refresh token is no longer the one the refresh started from (a
/// new login, or another process's refresh), it refuses to overwrite and auth-core
/// returns the new tokens in its `Persist` error instead.
#[derive(Debug, Clone)]
pub struct LockedRefreshStore {
    store: Arc<dyn CredentialStore>,
}

impl LockedRefreshStore {
    /// Persist into `store`.
    pub fn new(store: Arc<dyn CredentialStore>) -> Self {
        Self { store }
    }
}

impl RefreshStore for LockedRefreshStore {
    fn persist(
        &self,
        previous: &TokenData,
        refreshed: &RefreshedTokens,
    ) -> Result<TokenData, PersistError> {
        let guard = self.store.home().lock()?;
        let mut doc = self.store.load()?.unwrap_or_else(AuthDocument::default);
        match &doc.tokens {
            Some(stored) if stored.refresh_token != previous.refresh_token => {
                return Err(Box::new(StorageError::Invalid {
                    what: "refresh commit",
                    detail: format!(
                        "the login in {} changed while the refresh was running; not \
                         overwriting it",
                        self.store.home().dir().display()
                    ),
                }));
            }
            Some(_) => {}
            None => doc = AuthDocument::chatgpt(previous.clone(), Timestamp::now()),
        }
        let next = refreshed
            .apply_to_document(&mut doc, Timestamp::now())
            .unwrap_or_else(|| refreshed.apply_to(previous));
        self.store.save_locked(&doc, &guard)?;
        Ok(next)
    }
}
