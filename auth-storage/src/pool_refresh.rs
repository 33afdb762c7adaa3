//! Refresh of pool accounts across processes: [`PoolRefresher`] (feature `refresh`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use auth_core::refresh::{RefreshError, TokenEndpoint};
use auth_core::{AuthDocument, Timestamp, TokenData};

use crate::codex_home::{CodexHome, CommitGuard};
use crate::error::StorageError;
use crate::lock::{DEFAULT_LOCK_TIMEOUT, FileLock};
use crate::mode::StoreMode;
use crate::pool::{
    PoolDocument, PoolStore, RefreshInFlight, Unusable, UnusableReason, is_valid_account_id,
};
use crate::refresh::RefreshOutcome;
use crate::store::CredentialStore;

pub use crate::pool::REFRESH_LOCK_DIR;

/// Opens the credential store of a Codex home the pool knows, in the mode recorded for it
/// ([`LinkedHome::mode`](crate::pool::LinkedHome::mode)).
pub type HomeOpener = Arc<
    dyn Fn(&CodexHome, StoreMode) -> Result<Box<dyn CredentialStore>, StorageError> + Send + Sync,
>;

/// Why a pool refresh failed. Never contains a token or an email.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolRefreshError {
    /// Locking, reading or writing the pool or a home failed before any request was sent.
    #[error(transparent)]
    Storage(Box<StorageError>),
    /// The pool has no account with this id (removed meanwhile?); nothing was sent.
    #[error("the pool has no account {id}")]
    NotInPool {
        /// The account id.
        id: String,
    },
    /// The account's login is gone for everyone (marked by an earlier refresh or an
    /// upstream answer); nothing was sent. Sign in again to clear it.
    #[error("account {id} is unusable: {mark}; sign in to it again")]
    Unusable {
        /// The account id.
        id: String,
        /// The mark in the pool.
        mark: Unusable,
    },
    /// The token endpoint refused or could not be reached. `marked_unusable` says whether
    /// the refusal was permanent and the account is now marked "login required".
    #[error("refreshing account {id} failed: {source}")]
    Refresh {
        /// The account id.
        id: String,
        /// The endpoint's error.
        #[source]
        source: RefreshError,
        /// Whether the account was marked [`UnusableReason::LoginRequired`] in the pool.
        marked_unusable: bool,
    },
    /// Another process that is still running refreshed this login and has not saved the
    /// answer to the pool yet (its save failed and it is retrying, see
    /// [`PoolRefresher::save_refreshed`]): the pool's refresh token is probably spent, so
    /// no request is sent. Try again shortly. After [`IN_FLIGHT_HOLD`], or once that
    /// process has exited, the next refresh tries the token once (the crash outcome).
    #[error(
        "account {id} is being refreshed by process {pid}, which has not saved the new tokens yet; try again shortly"
    )]
    InFlightElsewhere {
        /// The account id.
        id: String,
        /// The process holding the answer.
        pid: u32,
    },
    /// New tokens were obtained (the old refresh token is spent) but could not be saved to
    /// the pool; `tokens` carries them so the caller can keep using them. Homes holding the
    /// login were still written when possible, so the next refresh can adopt them there.
    #[error("refreshed tokens of account {id} could not be saved to the pool: {source}")]
    Persist {
        /// The account id.
        id: String,
        /// The storage failure.
        #[source]
        source: Box<StorageError>,
        /// The new tokens (redacted in `Debug`).
        tokens: Box<TokenData>,
    },
}

/// How long a refresh mark of a live process holds off other refreshers: past this, the
/// process is taken to have lost its answer for good (or its pid to have been reused).
pub const IN_FLIGHT_HOLD: Duration = Duration::from_secs(600);

impl From<StorageError> for PoolRefreshError {
    fn from(err: StorageError) -> Self {
        Self::Storage(Box::new(err))
    }
}

/// Refresh of pool accounts that never spends a refresh token twice, across every process
/// that uses the pool and the Codex homes it handed logins to (feature `refresh`).
///
/// OpenAI refresh tokens are single-use. A pool account is used at once by rotation
/// proxies (through the pool) and, after [`PoolStore::switch_to`], by the Codex CLI in
/// that home (through its own copy in `auth.json`, which it refreshes on its own).
/// [`PoolRefresher::refresh`] makes every one of them agree:
///
/// | step | what happens | lock held |
/// |------|--------------|-----------|
/// | 1 | take the refresh lock of the account's login (`refresh-locks/<hash>.lock` in the pool directory; one per login, so a removed and re-added copy shares it) | account |
/// | 2 | re-read the pool; an [`unusable`](crate::pool::Account::unusable) account is refused without a request | account |
/// | 3 | for each Codex home the pool knows ([`PoolDocument::homes`]), in the store mode recorded for it: take the home's locks (`auth.lock`, `auth.json.lock`: the Codex CLI's own, so it cannot refresh meanwhile) and read its login; a home holding another login is released at once; a home that cannot be opened, locked or read (a keyring out of reach) fails the refresh with no request | account, homes |
/// | 4 | the newest copy wins (later access-token expiry, then later `last_refresh`): if it is not the one the caller saw and it is still valid, it is adopted — written to the pool and to every home holding an older copy — and returned without a request | account, homes, pool (short) |
/// | 5 | otherwise a [`RefreshInFlight`] mark is written on the account, the newest refresh token is exchanged (one request), and the answer is saved to the pool and to every home holding this login, clearing the mark | account, homes; pool (short, twice) |
/// | 6 | a permanent refusal (`refresh_token_reused`, `…_expired`, `…_invalidated`, `invalid_grant`, HTTP 401) marks the account [`UnusableReason::LoginRequired`] in the pool, for every process | account, homes, pool (short) |
///
/// Lock order: account, then homes, then the pool — the same order as
/// [`PoolStore::switch_to`] for the last two, and nothing takes an account's refresh lock
/// while holding a home's or the pool's, so the order cannot deadlock. The pool lock is
/// never held across the network request; the account and home locks are (that is what
/// keeps a second process, or the CLI, from spending the same token).
///
/// **A process that dies after the issuer answered and before the save** (crash, `kill
/// -9`, power loss) has spent the refresh token and taken the new one with it. The mark
/// written in step 5 stays in the pool. The next refresh of that account (by any process)
/// finds the mark, tries the refresh token it has — which succeeds if the request never
/// reached the issuer — and otherwise gets `refresh_token_reused`, marks the account
/// "login required" (step 6) and stops there: every later call returns
/// [`PoolRefreshError::Unusable`] at step 2 without a request, so no process retries a
/// dead token, let alone in a loop. Signing in again (`accounts add`, or `codex login` and
/// `accounts import`) brings new tokens, which clear the mark.
///
/// **A process that got the answer but could not save it** (the pool lock held too long,
/// a full disk) keeps the new tokens (in [`PoolRefreshError::Persist`]) and its mark in the
/// pool. While it runs, and for at most [`IN_FLIGHT_HOLD`], every other process gets
/// [`PoolRefreshError::InFlightElsewhere`] instead of sending the spent token; the holder
/// saves the tokens with [`save_refreshed`](Self::save_refreshed) as soon as it can.
///
/// ```no_run
/// use auth_core::refresh::{RefreshConfig, TokenEndpoint};
/// use auth_storage::PoolStore;
/// use auth_storage::refresh::PoolRefresher;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = PoolStore::open_default()?;
/// let refresher = PoolRefresher::new(TokenEndpoint::new(RefreshConfig::default())?, pool.clone());
/// let account = pool.load()?.pool.accounts.remove(0);
/// // ...the access token of `account` expired, or the upstream answered 401...
/// let fresh = refresher.refresh(&account.id, &account.tokens).await?.into_tokens();
/// # let _ = fresh; Ok(()) }
/// ```
#[derive(Clone)]
pub struct PoolRefresher {
    endpoint: TokenEndpoint,
    pool: PoolStore,
    lock_timeout: Duration,
    margin: Duration,
    open_home: HomeOpener,
}

impl std::fmt::Debug for PoolRefresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolRefresher")
            .field("pool", &self.pool.dir())
            .field("lock_timeout", &self.lock_timeout)
            .field("margin", &self.margin)
            .finish_non_exhaustive()
    }
}

impl PoolRefresher {
    /// Refresh through `endpoint`, keeping tokens in `pool`. Codex homes are opened with
    /// [`open_store`](crate::open_store) in the mode the pool recorded for each (a
    /// keyring home needs the `keyring` feature) unless [`with_home_opener`](Self::with_home_opener)
    /// says otherwise.
    pub fn new(endpoint: TokenEndpoint, pool: PoolStore) -> Self {
        Self {
            endpoint,
            pool,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            margin: Duration::from_secs(60),
            open_home: Arc::new(|home: &CodexHome, mode: StoreMode| {
                crate::open_store(home.clone(), mode)
            }),
        }
    }

    /// How to open a Codex home's credential store (e.g. the keyring, as its
    /// `cli_auth_credentials_store` setting says).
    pub fn with_home_opener(mut self, open: HomeOpener) -> Self {
        self.open_home = open;
        self
    }

    /// Wait at most `timeout` for each lock (default 30 s). Another process's refresh
    /// holds the account's lock for one token request.
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Tokens found in the pool or a home are adopted without a request only while their
    /// access token stays valid for `margin` more (default 60 s).
    pub fn with_margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// The pool this refresher keeps tokens in.
    pub fn pool(&self) -> &PoolStore {
        &self.pool
    }

    /// Refresh account `id`, whose tokens the caller last saw as `seen` (they expired, or
    /// the upstream rejected the access token), unless someone already stored newer ones.
    /// Must run inside a Tokio runtime (file work runs on `spawn_blocking` threads).
    ///
    /// Cancellation-safe: once the request is sent, it and the save of its answer finish in
    /// a task of their own even if the returned future is dropped.
    ///
    /// # Errors
    /// See [`PoolRefreshError`]; after every error but `Persist`, the caller's tokens are
    /// the latest anyone has.
    pub async fn refresh(
        &self,
        id: &str,
        seen: &TokenData,
    ) -> Result<RefreshOutcome, PoolRefreshError> {
        if !is_valid_account_id(id) {
            return Err(PoolRefreshError::NotInPool { id: id.to_owned() });
        }
        let this = self.clone();
        let owned_id = id.to_owned();
        let seen = seen.clone();
        let prepared = tokio::task::spawn_blocking(move || this.prepare(&owned_id, &seen))
            .await
            .map_err(|_| aborted(id))??;
        let Prepared::Refresh(mut held) = prepared else {
            return match prepared {
                Prepared::Adopted(tokens) => Ok(RefreshOutcome::AlreadyRefreshed(tokens)),
                Prepared::Refresh(_) => Err(aborted(id)),
            };
        };
        // The request and the save run in a task of their own: a caller that gives up
        // (a client hung up, a timeout) must not leave a spent token unsaved.
        let this = self.clone();
        let owned_id = id.to_owned();
        let task = tokio::spawn(async move {
            let result = this
                .endpoint
                .exchange(&held.newest.tokens.refresh_token)
                .await;
            let id = owned_id.clone();
            tokio::task::spawn_blocking(move || this.finish(&owned_id, &mut held, result))
                .await
                .map_err(|_| aborted(&id))?
        });
        task.await.map_err(|_| aborted(id))?
    }

    /// Steps 1–5 up to the request (blocking).
    fn prepare(&self, id: &str, seen: &TokenData) -> Result<Prepared, PoolRefreshError> {
        let before = self.pool.load()?.pool;
        let account = before
            .account(id)
            .ok_or_else(|| PoolRefreshError::NotInPool { id: id.to_owned() })?;
        let account_lock = self.pool.lock_account_refresh(account, self.lock_timeout)?;
        let pool = self.pool.load()?.pool;
        let account = pool
            .account(id)
            .ok_or_else(|| PoolRefreshError::NotInPool { id: id.to_owned() })?;
        if let Some(mark) = &account.unusable {
            return Err(PoolRefreshError::Unusable {
                id: id.to_owned(),
                mark: mark.clone(),
            });
        }
        let identity = Identity::of(&account.tokens);
        let mut newest = Copy {
            tokens: account.tokens.clone(),
            last_refresh: account.last_refresh.clone(),
        };
        let pool_copy = newest.clone();
        // The caller's copy counts too: tokens it holds that never reached the pool (a
        // refresh whose save failed) are newer than the pool's spent ones.
        let theirs = Copy {
            tokens: seen.clone(),
            last_refresh: None,
        };
        if Identity::of(seen).matches(&identity) && theirs.is_newer_than(&newest) {
            newest = theirs;
        }
        let homes = self.lock_homes(&pool, &identity, &[])?;
        for home in &homes {
            if let Some(copy) = &home.copy
                && copy.is_newer_than(&newest)
            {
                newest = copy.clone();
            }
        }
        let interrupted = account.refreshing.clone();
        let adopt =
            newest.tokens.refresh_token != seen.refresh_token && newest.valid_for(self.margin);
        let mut held = Held {
            _account: account_lock,
            homes,
            newest,
            interrupted,
        };
        if adopt {
            tracing::debug!(
                account = id,
                "tokens were refreshed elsewhere; adopting them"
            );
            // A mark left by an earlier refresh whose answer is adopted now (it reached a
            // home but not the pool) is about a token these replace; no live refresh can
            // own it, as we hold the account's lock.
            let replaced = held.newest.tokens != pool_copy.tokens;
            self.save_pool(id, &held.newest, replaced.then_some(None), &pool_copy)?;
            let newest = held.newest.clone();
            held.write_homes(&newest);
            if replaced {
                self.reach_new_homes(id, &mut held, &newest);
            }
            return Ok(Prepared::Adopted(held.newest.tokens));
        }
        if let Some(mark) = &held.interrupted
            && mark.pid != std::process::id()
            && crate::process::may_still_run(mark.pid, mark.started_at)
            && unix_now().saturating_sub(mark.started_at) < IN_FLIGHT_HOLD.as_secs()
        {
            // Its answer lives in that process's memory, which keeps trying to save it.
            return Err(PoolRefreshError::InFlightElsewhere {
                id: id.to_owned(),
                pid: mark.pid,
            });
        }
        if let Some(mark) = &held.interrupted {
            tracing::warn!(
                account = id,
                pid = mark.pid,
                started_at = mark.started_at,
                "an earlier refresh of this account was interrupted; its refresh token may be spent"
            );
        }
        // Written before the request: if this process dies before saving the answer, the
        // next refresher knows the token may be spent (see the type docs).
        let mark = RefreshInFlight::new(unix_now());
        self.save_pool(id, &held.newest, Some(Some(mark)), &pool_copy)?;
        Ok(Prepared::Refresh(held))
    }

    /// Step 5's save or step 6 (blocking); the locks in `held` are released on return.
    fn finish(
        &self,
        id: &str,
        held: &mut Held,
        result: Result<auth_core::refresh::RefreshedTokens, RefreshError>,
    ) -> Result<RefreshOutcome, PoolRefreshError> {
        match result {
            Ok(refreshed) => {
                let next = Copy {
                    tokens: refreshed.apply_to(&held.newest.tokens),
                    last_refresh: Some(Timestamp::now()),
                };
                // Homes first: if the pool write fails, the new tokens still exist on disk
                // where the next refresh looks.
                held.write_homes(&next);
                let sent = held.newest.tokens.refresh_token.clone();
                // Only where the spent token still is (compare-and-set): an account that
                // got other tokens meanwhile (a new sign-in) keeps them; a copy of the same
                // login re-added under another id gets the answer too.
                match self.pool.update(|pool| {
                    for account in pool
                        .accounts
                        .iter_mut()
                        .filter(|a| a.tokens.refresh_token == sent)
                    {
                        account.tokens = next.tokens.clone();
                        account.last_refresh = next.last_refresh.clone();
                        account.refreshing = None;
                    }
                }) {
                    Ok(()) => {
                        self.reach_new_homes(id, held, &next);
                        Ok(RefreshOutcome::Refreshed(next.tokens))
                    }
                    Err(source) => Err(PoolRefreshError::Persist {
                        id: id.to_owned(),
                        source: Box::new(source),
                        tokens: Box::new(next.tokens),
                    }),
                }
            }
            Err(source) => {
                // A 2xx whose body cannot be used still spent the token (the issuer
                // rotated it): as dead as a refusal.
                let spent = matches!(source, RefreshError::InvalidResponse { .. });
                let permanent = source.is_permanent() || spent;
                // An answered refusal means the issuer did not spend the token (or says it is
                // dead); a transport error leaves it unknown, so the mark stays.
                let answered = matches!(
                    source,
                    RefreshError::Rejected { .. }
                        | RefreshError::Endpoint { .. }
                        | RefreshError::InvalidResponse { .. }
                );
                let code = if spent {
                    Some("unusable_token_response".to_owned())
                } else {
                    source
                        .oauth_error()
                        .and_then(|e| e.code().map(str::to_owned))
                };
                let sent = held.newest.tokens.refresh_token.clone();
                let marked = self.pool.update(|pool| {
                    let mut marked = false;
                    // Compare-and-set: only accounts still holding the token sent; one that
                    // got new tokens meanwhile (a new sign-in) is not marked.
                    for account in pool
                        .accounts
                        .iter_mut()
                        .filter(|a| a.tokens.refresh_token == sent)
                    {
                        if answered {
                            account.refreshing = None;
                        }
                        if permanent {
                            account.unusable = Some(Unusable::new(
                                UnusableReason::LoginRequired,
                                unix_now(),
                                Some(code.as_deref().unwrap_or("refresh_rejected")),
                            ));
                            marked = true;
                        }
                    }
                    marked
                });
                let marked_unusable = match marked {
                    Ok(marked) => marked,
                    Err(err) => {
                        tracing::warn!(account = id, error = %err, "could not record the failed refresh in the pool");
                        false
                    }
                };
                if marked_unusable {
                    tracing::warn!(
                        account = id,
                        code = code.as_deref().unwrap_or("-"),
                        "the refresh token was refused for good; the account is marked login required"
                    );
                }
                Err(PoolRefreshError::Refresh {
                    id: id.to_owned(),
                    source,
                    marked_unusable,
                })
            }
        }
    }

    /// Saves to the pool the tokens of a refresh of account `id` that this process made
    /// but could not save ([`PoolRefreshError::Persist`]), and clears its in-flight mark.
    /// Only while the mark is still this process's (compare-and-set): once another process
    /// took over the login (after [`IN_FLIGHT_HOLD`]) or someone signed in again, nothing is
    /// written. Returns whether it saved. Blocking; call it until it returns `Ok`.
    ///
    /// # Errors
    /// The pool could not be read or written (still locked, disk full, …).
    pub fn save_refreshed(&self, id: &str, tokens: &TokenData) -> Result<bool, StorageError> {
        let me = std::process::id();
        self.pool.update(|pool| {
            let Some(account) = pool.account_mut(id) else {
                return false;
            };
            if account
                .refreshing
                .as_ref()
                .is_none_or(|mark| mark.pid != me)
            {
                return false;
            }
            account.tokens = tokens.clone();
            account.last_refresh = Some(Timestamp::now());
            account.refreshing = None;
            true
        })
    }

    /// Step 3: the locks and logins of the Codex homes the pool knows that hold this login
    /// (in path order). A home that holds another login is released at once; one deleted
    /// since is skipped (locking it would create it again), and so is one whose login is
    /// unusable (its CLI cannot refresh it either). A home that cannot be opened, locked or
    /// read (e.g. a keyring this process cannot reach) is an error and no request is sent:
    /// its CLI might be refreshing the very token this refresh would spend.
    fn lock_homes(
        &self,
        pool: &PoolDocument,
        identity: &Identity,
        skip: &[HeldHome],
    ) -> Result<Vec<HeldHome>, StorageError> {
        let mut held = Vec::new();
        for (dir, link) in &pool.homes {
            if skip.iter().any(|home| home.key == *dir) {
                continue;
            }
            let home = CodexHome::new(PathBuf::from(dir));
            if !home.dir().is_dir() {
                continue;
            }
            // A home that cannot be opened, locked or read blocks this refresh only when it
            // may hold this login (the pool last put this login there, or does not know what
            // it holds): its CLI might be refreshing the very token this refresh would
            // spend. Any other such home is skipped, so one broken home does not stop the
            // refreshes of every login.
            let may_hold = pool
                .account(&link.account)
                .is_none_or(|linked| Identity::of(&linked.tokens).matches(identity));
            let unreachable = |err: StorageError| -> Result<(), StorageError> {
                if may_hold {
                    Err(err)
                } else {
                    tracing::warn!(home = %crate::error::shown(home.dir()), error = %err, "a Codex home holding another login cannot be reached; skipping it");
                    Ok(())
                }
            };
            let Some(mode) = link.mode() else {
                unreachable(StorageError::Invalid {
                    what: "Codex home",
                    detail: format!(
                        "{} keeps its login in a credential store this version does not know ({})",
                        crate::error::shown(home.dir()),
                        auth_core::terminal::escape_control(&link.store)
                    ),
                })?;
                continue;
            };
            let store = match (self.open_home)(&home, mode) {
                Ok(store) => store,
                Err(err) => {
                    unreachable(err)?;
                    continue;
                }
            };
            let guard = match home.lock_for_commit(self.lock_timeout) {
                Ok(guard) => guard,
                Err(err) => {
                    unreachable(err)?;
                    continue;
                }
            };
            let doc = match store.load() {
                Ok(doc) => doc,
                // A login that is there but unusable (damaged, not a regular file, too
                // large): its CLI cannot refresh it either.
                Err(
                    err @ (StorageError::AuthFile { .. }
                    | StorageError::NotRegularFile { .. }
                    | StorageError::FileTooLarge { .. }),
                ) => {
                    tracing::warn!(home = %crate::error::shown(home.dir()), error = %err, "a Codex home's login is unusable; skipping it");
                    continue;
                }
                // A store this process cannot read (a keyring it cannot reach, a file it
                // may not open) may hold a copy its CLI reads and refreshes.
                Err(err) => {
                    unreachable(err)?;
                    continue;
                }
            };
            let copy = doc.as_ref().and_then(|doc| {
                let tokens = doc.tokens.as_ref()?;
                Identity::of(tokens).matches(identity).then(|| Copy {
                    tokens: tokens.clone(),
                    last_refresh: doc.last_refresh.clone(),
                })
            });
            if copy.is_none() {
                // Another login: its CLI must not wait for this refresh.
                drop(guard);
                continue;
            }
            held.push(HeldHome {
                key: dir.clone(),
                store,
                guard,
                doc,
                copy,
            });
        }
        Ok(held)
    }

    /// After new tokens were saved to the pool: homes the pool handed `id` to since step 3
    /// (a [`PoolStore::switch_to`] meanwhile handed them the pool's copy as it was then,
    /// e.g. the refresh token being spent) get `copy` too. Any switch that wrote the pool
    /// before our save is listed now, and holds its home's lock until that home is written.
    fn reach_new_homes(&self, id: &str, held: &mut Held, copy: &Copy) {
        let pool = match self.pool.load() {
            Ok(loaded) => loaded.pool,
            Err(err) => {
                tracing::warn!(account = id, error = %err, "could not re-read the pool for Codex homes added during the refresh");
                return;
            }
        };
        let identity = Identity::of(&held.newest.tokens);
        match self.lock_homes(&pool, &identity, &held.homes) {
            Ok(new) if !new.is_empty() => {
                held.homes.extend(new);
                held.write_homes(copy);
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(account = id, error = %err, "could not reach Codex homes added during the refresh")
            }
        }
    }

    /// Writes `copy` into the pool account `id` (when it differs from `before`) and sets
    /// or clears its in-flight mark (`mark`: `None` leaves it).
    fn save_pool(
        &self,
        id: &str,
        copy: &Copy,
        mark: Option<Option<RefreshInFlight>>,
        before: &Copy,
    ) -> Result<(), PoolRefreshError> {
        let changed = copy.tokens != before.tokens;
        if !changed && mark.is_none() {
            return Ok(());
        }
        let found = self.pool.update(|pool| {
            let Some(account) = pool.account_mut(id) else {
                return false;
            };
            if changed {
                account.tokens = copy.tokens.clone();
                account.last_refresh = copy.last_refresh.clone();
            }
            if let Some(mark) = mark {
                account.refreshing = mark;
            }
            true
        })?;
        if found {
            Ok(())
        } else {
            Err(PoolRefreshError::NotInPool { id: id.to_owned() })
        }
    }
}

enum Prepared {
    Adopted(TokenData),
    Refresh(Held),
}

/// The locks and logins held from step 1 to the end.
struct Held {
    _account: FileLock,
    homes: Vec<HeldHome>,
    newest: Copy,
    interrupted: Option<RefreshInFlight>,
}

impl Held {
    /// Writes `copy` into every held home whose copy of this login is older. Failures are
    /// logged: the pool has the tokens, and a home's copy is adopted or replaced next time.
    fn write_homes(&mut self, copy: &Copy) {
        for home in &mut self.homes {
            let Some(current) = &home.copy else {
                continue;
            };
            if current.tokens == copy.tokens || current.is_newer_than(copy) {
                continue;
            }
            let mut doc = home.doc.clone().unwrap_or_else(|| {
                AuthDocument::chatgpt(
                    copy.tokens.clone(),
                    copy.last_refresh.clone().unwrap_or_else(Timestamp::now),
                )
            });
            doc.tokens = Some(copy.tokens.clone());
            doc.last_refresh = Some(copy.last_refresh.clone().unwrap_or_else(Timestamp::now));
            match home.store.save_locked(&doc, &home.guard) {
                Ok(()) => {
                    home.copy = Some(copy.clone());
                    home.doc = Some(doc);
                }
                Err(err) => {
                    tracing::warn!(home = %crate::error::shown(home.store.home().dir()), error = %err, "could not give a Codex home the account's new tokens")
                }
            }
        }
    }
}

struct HeldHome {
    /// The home as named in [`PoolDocument::homes`].
    key: String,
    store: Box<dyn CredentialStore>,
    guard: CommitGuard,
    doc: Option<AuthDocument>,
    /// The home's tokens when it holds this account's login.
    copy: Option<Copy>,
}

/// One copy of an account's tokens and when it was refreshed.
#[derive(Clone)]
struct Copy {
    tokens: TokenData,
    last_refresh: Option<Timestamp>,
}

impl Copy {
    /// Token age: a later access-token expiry is a later issue (lifetimes are the
    /// issuer's), then a later `last_refresh`; unknown counts as oldest.
    fn is_newer_than(&self, other: &Copy) -> bool {
        crate::pool::tokens_newer(
            &self.tokens,
            self.last_refresh.as_ref(),
            &other.tokens,
            other.last_refresh.as_ref(),
        )
    }

    fn valid_for(&self, margin: Duration) -> bool {
        match self.tokens.access_token_expires_at() {
            Ok(Some(exp)) => SystemTime::now()
                .checked_add(margin)
                .is_some_and(|limit| exp > limit),
            // No expiry to go by: only a rejection would tell; treat it as usable.
            Ok(None) => true,
            Err(_) => false,
        }
    }
}

/// Who a login belongs to (account id and email from the tokens), to tell whether a Codex
/// home still holds the same login as the pool account.
struct Identity {
    account_id: Option<String>,
    email: Option<String>,
}

impl Identity {
    fn of(tokens: &TokenData) -> Self {
        Self {
            account_id: tokens.effective_account_id(),
            email: tokens.id_token_claims().ok().and_then(|c| c.email),
        }
    }

    fn matches(&self, other: &Identity) -> bool {
        crate::pool::document_same_login(
            self.account_id.as_deref(),
            self.email.as_deref(),
            other.account_id.as_deref(),
            other.email.as_deref(),
        )
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn aborted(id: &str) -> PoolRefreshError {
    PoolRefreshError::Refresh {
        id: id.to_owned(),
        source: RefreshError::Aborted,
        marked_unusable: false,
    }
}
