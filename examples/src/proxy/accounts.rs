//! The proxy's accounts: credentials per policy id, refresh (cross-process for pool
//! accounts, through [`PoolRefresher`]; single-flight in memory otherwise), and the live set
//! of accounts, which follows the pool file while the proxy runs ([`Accounts::apply_document`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::SystemTime;

use auth_core::refresh::{
    PersistError, RefreshConfig, RefreshError, RefreshStore, RefreshedTokens, Refresher,
    TokenEndpoint,
};
use auth_core::{Secret, TokenData};
use auth_storage::PoolStore;
use auth_storage::pool::{Account, PoolDocument, Unusable, UnusableReason};
use auth_storage::refresh::{PoolRefreshError, PoolRefresher, RefreshOutcome};
use rotation_policy::{AccountId, DisabledReason, PoolStatus};
use serde::Serialize;

use super::Shared;

/// Why an account's tokens could not be made usable.
#[derive(Debug, Clone)]
pub(crate) struct RefreshFailure {
    /// Redacted, one line.
    pub(crate) message: String,
    /// Not the account's fault and over soon (another process holds the new tokens and is
    /// saving them): reported as a transient failure, never towards "disable after N 401s".
    pub(crate) transient: bool,
}

impl RefreshFailure {
    fn new(message: String) -> Self {
        Self {
            message,
            transient: false,
        }
    }
}

/// What the refresh after an upstream `401` came to.
pub(crate) enum AfterRejection {
    /// This caller's refresh replaced the rejected token.
    RefreshedHere,
    /// The rejected token had already been replaced by another request's (or process's)
    /// refresh.
    AlreadyRefreshed,
    /// The refresh failed.
    Failed(RefreshFailure),
}

/// What one upstream attempt needs from an account.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AccountCredentials {
    /// Sent as `Authorization: Bearer …`.
    pub access_token: Secret,
    /// Sent as `ChatGPT-Account-Id`.
    pub chatgpt_account_id: Option<String>,
    /// Bumped by every change of the account's tokens.
    pub(crate) generation: u64,
}

/// One account in `GET /status` (no secret, email masked).
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct AccountReport {
    /// The account's id: the pool's stable id (`acct-` + 16 hex) for pool accounts,
    /// `acct-N` (position) for accounts given in code.
    pub id: String,
    /// Masked email (`a***@example.com`) or `-`.
    pub email: String,
    /// Plan from the id token, if known.
    pub plan: Option<String>,
    /// Upstream attempts with this account (policy count).
    pub attempts: u64,
    /// Outcomes seen, per kind (policy counts).
    pub outcomes: rotation_policy::OutcomeCounts,
    /// Successful refreshes by this proxy.
    pub refreshes: u64,
    /// Failed refreshes.
    pub refresh_failures: u64,
    /// Whether the policy waits for a refresh.
    pub needs_refresh: bool,
    /// Policy health 0..=100.
    pub health: u8,
    /// Account-wide cooldown end (ms since the Unix epoch), if cooling down.
    pub cooldown_until_ms: Option<u64>,
    /// Model families this account is rate limited for.
    pub rate_limited_families: Vec<String>,
    /// Why the account is not picked, if it is disabled (`manual`, `unauthorized`,
    /// `login-required`, `deactivated`).
    pub disabled: Option<DisabledReason>,
    /// Last error seen with this account (no secrets).
    pub last_error: Option<String>,
}

pub(crate) struct Entry {
    id: AccountId,
    masked_email: String,
    plan: Option<String>,
    tokens: Mutex<(TokenData, u64)>,
    /// In-memory refresher of an account given in code (no pool).
    refresher: Mutex<Option<Refresher>>,
    info: Mutex<Info>,
    /// Per-family cooldown ends (Unix seconds) read from the pool file at load.
    saved_cooldowns: Vec<(String, u64)>,
    /// Highest token generation whose upstream `401` was reported to the policy.
    rejected_generation: Mutex<Option<u64>>,
}

#[derive(Default)]
struct Info {
    refreshes: u64,
    refresh_failures: u64,
    last_error: Option<String>,
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values are replaced whole, never left half-written.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Default)]
struct Live {
    /// In pool order (then order of `push`).
    list: Vec<Arc<Entry>>,
    by_id: HashMap<AccountId, Arc<Entry>>,
    /// Accounts the pool itself keeps out of rotation, with the reason (re-asserted after
    /// every merge of shared policy state, which must never outvote the pool).
    pool_disabled: Vec<(AccountId, DisabledReason)>,
}

/// How a pool account should stand in the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    Enabled,
    Disabled(DisabledReason),
}

/// What [`Accounts::mark_gone`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GoneMark {
    /// This call marked the account in the pool.
    Marked,
    /// The pool had marked it already.
    AlreadyMarked,
    /// The pool holds other tokens for it now: the answer was about old tokens.
    TokensChanged,
    /// The account is no longer in the pool.
    NotInPool,
    /// The accounts were given in code (no pool to mark).
    NoPool,
}

/// What [`Accounts::apply_document`] found changed in the pool file.
#[derive(Debug, Default)]
pub(crate) struct PoolChanges {
    pub(crate) added: Vec<AccountId>,
    pub(crate) removed: Vec<AccountId>,
    /// Accounts whose enabled/unusable standing may have changed.
    pub(crate) standing: Vec<(AccountId, Standing)>,
    /// Accounts whose tokens were replaced by newer ones from the pool.
    pub(crate) adopted: Vec<AccountId>,
}

/// The accounts a [`super::RotationProxy`] rotates over.
#[derive(Default)]
pub struct Accounts {
    live: RwLock<Live>,
    store: Option<PoolStore>,
    pool_refresher: OnceLock<Result<PoolRefresher, String>>,
    /// Tokens this process refreshed but could not save yet (see [`Self::retry_unsaved`]).
    unsaved: Mutex<Vec<(AccountId, TokenData)>>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Accounts {
    /// No accounts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an account under the id `acct-N` (N = position, from 1) and returns that id.
    pub fn push(
        &mut self,
        email: Option<&str>,
        plan: Option<String>,
        tokens: TokenData,
    ) -> Result<AccountId, rotation_policy::PolicyError> {
        let n = self.len() + 1;
        let id = AccountId::new(format!("acct-{n}"))?;
        self.insert(Entry::new(id.clone(), email, plan, tokens));
        Ok(id)
    }

    fn insert(&self, entry: Entry) {
        let entry = Arc::new(entry);
        let mut live = self.live_mut();
        live.by_id.insert(entry.id.clone(), entry.clone());
        live.list.push(entry);
    }

    fn live(&self) -> std::sync::RwLockReadGuard<'_, Live> {
        // Replaced whole under the write lock, never left half-changed.
        self.live.read().unwrap_or_else(|p| p.into_inner())
    }

    fn live_mut(&self) -> std::sync::RwLockWriteGuard<'_, Live> {
        self.live.write().unwrap_or_else(|p| p.into_inner())
    }

    /// How many accounts.
    pub fn len(&self) -> usize {
        self.live().list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.live().list.is_empty()
    }

    /// The pool store the accounts came from, if any.
    pub fn store(&self) -> Option<&PoolStore> {
        self.store.as_ref()
    }

    /// Records at once that the pool now keeps `id` out (this process just marked it), so
    /// a merge of shared state before the next pool read cannot put it back.
    pub(crate) fn note_pool_disabled(&self, id: &AccountId, reason: DisabledReason) {
        let mut live = self.live_mut();
        live.pool_disabled.retain(|(known, _)| known != id);
        live.pool_disabled.push((id.clone(), reason));
    }

    /// Undoes [`note_pool_disabled`](Self::note_pool_disabled) for `reason`.
    pub(crate) fn lift_pool_disabled(&self, id: &AccountId, reason: DisabledReason) {
        self.live_mut()
            .pool_disabled
            .retain(|(known, r)| !(known == id && *r == reason));
    }

    /// Accounts the pool keeps out of rotation, and why.
    pub(crate) fn pool_disabled(&self) -> Vec<(AccountId, DisabledReason)> {
        self.live().pool_disabled.clone()
    }

    pub(crate) fn ids(&self) -> Vec<AccountId> {
        self.live().list.iter().map(|e| e.id.clone()).collect()
    }

    fn entry(&self, id: &AccountId) -> Option<Arc<Entry>> {
        self.live().by_id.get(id).cloned()
    }

    /// Cooldowns saved in the pool file by an earlier run (or another tool) that are still
    /// running at `now_ms`, as `(account, family, until_ms)`.
    pub(crate) fn saved_cooldowns(&self, now_ms: u64) -> Vec<(AccountId, String, u64)> {
        self.live()
            .list
            .iter()
            .flat_map(|e| {
                e.saved_cooldowns.iter().filter_map(move |(family, until)| {
                    let until_ms = until.saturating_mul(1000);
                    (until_ms > now_ms).then(|| (e.id.clone(), family.clone(), until_ms))
                })
            })
            .collect()
    }

    /// Whether an upstream `401` for the token of `generation` is the first one seen for that
    /// token (then it is reported to the policy); later ones, from requests that raced with
    /// the same rejected token, are the same fact and are not reported again.
    pub(crate) fn first_rejection(&self, id: &AccountId, generation: u64) -> bool {
        let Some(e) = self.entry(id) else {
            return false;
        };
        let mut seen = guard(&e.rejected_generation);
        if seen.is_some_and(|g| g >= generation) {
            return false;
        }
        *seen = Some(generation);
        true
    }

    pub(crate) fn note_error(&self, id: &AccountId, error: String) {
        if let Some(e) = self.entry(id) {
            guard(&e.info).last_error = Some(error);
        }
    }

    /// Credentials for an attempt; refreshes first when the access token expires within
    /// the margin. `Err` carries a redacted reason.
    pub(crate) async fn usable_credentials(
        &self,
        shared: &Shared,
        id: &AccountId,
    ) -> Result<AccountCredentials, RefreshFailure> {
        let entry = self
            .entry(id)
            .ok_or_else(|| RefreshFailure::new(format!("{id} is not in the pool")))?;
        let (creds, expiring) = {
            let t = guard(&entry.tokens);
            let expiring = expires_within(&t.0, shared.options.refresh_margin);
            (credentials(&t.0, t.1), expiring)
        };
        if !expiring {
            return Ok(creds);
        }
        tracing::info!(account = %id, "access token expired or about to; refreshing");
        self.refresh(shared, &entry, creds.generation)
            .await
            .map(|(creds, _)| creds)
    }

    /// Credentials as they are, or `None` when the account is unknown or its access token
    /// expires within `margin` (then only a request, through
    /// [`usable_credentials`](Self::usable_credentials), refreshes it). Never refreshes: for
    /// callers that must not spend a refresh token, such as the usage probe.
    pub(crate) fn current_credentials(
        &self,
        id: &AccountId,
        margin: std::time::Duration,
    ) -> Option<AccountCredentials> {
        let entry = self.entry(id)?;
        let t = guard(&entry.tokens);
        (!expires_within(&t.0, margin)).then(|| credentials(&t.0, t.1))
    }

    /// After upstream `401` with `used`: refresh once (others rejected with the same token wait
    /// for this refresh instead of starting their own) and tell the policy.
    pub(crate) async fn refresh_after_rejection(
        &self,
        shared: &Shared,
        id: &AccountId,
        used: &AccountCredentials,
    ) -> AfterRejection {
        let Some(entry) = self.entry(id) else {
            return AfterRejection::Failed(RefreshFailure::new(format!("{id} is not in the pool")));
        };
        match self.refresh(shared, &entry, used.generation).await {
            Ok((_, true)) => AfterRejection::RefreshedHere,
            Ok((_, false)) => AfterRejection::AlreadyRefreshed,
            Err(failure) => AfterRejection::Failed(failure),
        }
    }

    async fn refresh(
        &self,
        shared: &Shared,
        entry: &Entry,
        seen: u64,
    ) -> Result<(AccountCredentials, bool), RefreshFailure> {
        let current = {
            let t = guard(&entry.tokens);
            if t.1 != seen {
                // Someone refreshed after this caller read the tokens: use their result.
                return Ok((credentials(&t.0, t.1), false));
            }
            t.0.clone()
        };
        let result = match &self.store {
            Some(store) => self.refresh_pooled(shared, store, entry, &current).await,
            None => self.refresh_in_memory(shared, entry, &current).await,
        };
        match result {
            Ok((fresh, requested)) => {
                let (creds, first) = {
                    let mut t = guard(&entry.tokens);
                    if t.0.refresh_token == current.refresh_token {
                        t.0 = fresh;
                        t.1 += 1;
                        (credentials(&t.0, t.1), true)
                    } else {
                        (credentials(&t.0, t.1), false)
                    }
                };
                if first {
                    let mut state = shared.lock();
                    if requested {
                        state.counters.refreshes += 1;
                    }
                    let _ = state.policy.mark_refreshed(&entry.id, super::now());
                    drop(state);
                    if requested {
                        guard(&entry.info).refreshes += 1;
                        tracing::info!(account = %entry.id, "token refreshed");
                    } else {
                        tracing::info!(account = %entry.id, "took the tokens another process refreshed");
                    }
                }
                Ok((creds, first && requested))
            }
            Err(failure) => {
                let message = failure.message.clone();
                {
                    let mut info = guard(&entry.info);
                    info.refresh_failures += 1;
                    info.last_error = Some(message.clone());
                }
                let mut state = shared.lock();
                state.counters.refresh_failures += 1;
                state.last_error = Some(message.clone());
                drop(state);
                tracing::warn!(account = %entry.id, error = %message, "token refresh failed");
                Err(failure)
            }
        }
    }

    /// Through the pool, across processes: `(tokens, whether a request was made)`.
    async fn refresh_pooled(
        &self,
        shared: &Shared,
        store: &PoolStore,
        entry: &Entry,
        current: &TokenData,
    ) -> Result<(TokenData, bool), RefreshFailure> {
        let refresher = self
            .pool_refresher
            .get_or_init(|| {
                let config =
                    RefreshConfig::default().with_token_url(shared.options.token_url.clone());
                TokenEndpoint::new(config)
                    .map(|endpoint| {
                        PoolRefresher::new(endpoint, store.clone())
                            .with_margin(shared.options.refresh_margin)
                    })
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| {
                RefreshFailure::new(format!("refresh unavailable for {}: {e}", entry.id))
            })?;
        match refresher.refresh(entry.id.as_str(), current).await {
            Ok(RefreshOutcome::Refreshed(tokens)) => Ok((tokens, true)),
            Ok(RefreshOutcome::AlreadyRefreshed(tokens)) => Ok((tokens, false)),
            Ok(other) => Ok((other.into_tokens(), false)),
            Err(err) => {
                let gone = match &err {
                    PoolRefreshError::Unusable { mark, .. } => Some(mark.reason),
                    PoolRefreshError::Refresh {
                        marked_unusable: true,
                        ..
                    } => Some(UnusableReason::LoginRequired),
                    PoolRefreshError::Persist { tokens, .. } => {
                        // Spent token, new ones unsaved: keep using them from memory, and
                        // keep trying to save them (the sync task), while the in-flight mark
                        // holds other processes off the spent token.
                        tracing::warn!(account = %entry.id, "refreshed tokens kept in memory until they can be saved: {err}");
                        guard(&self.unsaved).push((entry.id.clone(), (**tokens).clone()));
                        return Ok(((**tokens).clone(), true));
                    }
                    _ => None,
                };
                if let Some(reason) = gone {
                    // Gone for everyone: never picked again here (the pool mark keeps every
                    // other process away too).
                    let reason = auth_storage::policy::disabled_reason_for(reason);
                    self.note_pool_disabled(&entry.id, reason);
                    let _ = shared.lock().policy.disable_for(&entry.id, reason);
                }
                Err(RefreshFailure {
                    message: format!(
                        "refresh failed for {}: {}",
                        entry.id,
                        auth_core::terminal::escape_control(&err.to_string())
                    ),
                    transient: matches!(err, PoolRefreshError::InFlightElsewhere { .. }),
                })
            }
        }
    }

    /// Tries again to save tokens this process refreshed but could not save (blocking;
    /// called by the sync task every tick). Returns how many were saved.
    pub(crate) fn retry_unsaved(&self) -> usize {
        let pending: Vec<(AccountId, TokenData)> = guard(&self.unsaved).clone();
        let Some(Ok(refresher)) = self.pool_refresher.get() else {
            return 0;
        };
        let mut saved = 0;
        for (id, tokens) in pending {
            match refresher.save_refreshed(id.as_str(), &tokens) {
                Ok(done) => {
                    // Saved, or no longer ours to save (taken over, signed in again, removed).
                    guard(&self.unsaved).retain(|(i, t)| !(*i == id && *t == tokens));
                    if done {
                        saved += 1;
                        tracing::info!(account = %id, "refreshed tokens saved to the pool");
                    }
                }
                Err(err) => {
                    tracing::warn!(account = %id, error = %auth_core::terminal::escape_control(&err.to_string()), "refreshed tokens still not saved; retrying");
                }
            }
        }
        saved
    }

    /// In memory (accounts given in code): single-flight inside auth-core.
    async fn refresh_in_memory(
        &self,
        shared: &Shared,
        entry: &Entry,
        current: &TokenData,
    ) -> Result<(TokenData, bool), RefreshFailure> {
        let refresher = {
            let mut slot = guard(&entry.refresher);
            match slot.as_ref() {
                Some(r) => r.clone(),
                None => {
                    let config =
                        RefreshConfig::default().with_token_url(shared.options.token_url.clone());
                    let store: Arc<dyn RefreshStore> = Arc::new(MemoryRefreshStore);
                    let r = Refresher::new(config, store).map_err(|e| {
                        RefreshFailure::new(format!("refresh unavailable for {}: {e}", entry.id))
                    })?;
                    *slot = Some(r.clone());
                    r
                }
            }
        };
        refresher
            .refresh(current)
            .await
            .map(|fresh| (fresh, true))
            .map_err(|err: RefreshError| {
                RefreshFailure::new(format!(
                    "refresh failed for {}: {}",
                    entry.id,
                    auth_core::terminal::escape_control(&err.to_string())
                ))
            })
    }

    /// An upstream answer said the account's login is gone for everyone (a revoked or
    /// invalidated token, a deactivated workspace): mark it in the pool, unless the pool
    /// meanwhile holds other tokens for it (someone signed in again, or another process
    /// refreshed): then the answer was about tokens that are no longer the account's.
    /// Blocking file I/O.
    pub(crate) fn mark_gone(
        &self,
        id: &AccountId,
        used: &AccountCredentials,
        reason: UnusableReason,
        code: Option<&str>,
    ) -> Result<GoneMark, auth_storage::StorageError> {
        let Some(store) = &self.store else {
            return Ok(GoneMark::NoPool);
        };
        let now = unix_now();
        store.update(|pool| {
            let Some(account) = pool.account_mut(id.as_str()) else {
                return GoneMark::NotInPool;
            };
            if account.tokens.access_token != used.access_token {
                return GoneMark::TokensChanged;
            }
            if account.unusable.is_some() {
                return GoneMark::AlreadyMarked;
            }
            account.unusable = Some(Unusable::new(reason, now, code));
            GoneMark::Marked
        })
    }

    /// Makes the live set follow `doc` (the pool file as another process left it): new
    /// accounts are added, removed ones dropped (requests already using them finish),
    /// newer tokens adopted, and each account's standing (enabled, disabled by hand, login
    /// gone) reported for the policy. In-flight requests keep their entry alive.
    pub(crate) fn apply_document(&self, doc: &PoolDocument) -> PoolChanges {
        let mut changes = PoolChanges::default();
        let mut wanted: HashMap<AccountId, &Account> = HashMap::new();
        for account in &doc.accounts {
            if let Ok(id) = AccountId::new(account.id.clone()) {
                wanted.insert(id, account);
            }
        }
        let mut live = self.live_mut();
        let before: Vec<AccountId> = live.list.iter().map(|e| e.id.clone()).collect();
        for id in &before {
            if !wanted.contains_key(id) {
                live.by_id.remove(id);
                changes.removed.push(id.clone());
            }
        }
        live.list.retain(|e| wanted.contains_key(&e.id));
        for account in &doc.accounts {
            let Ok(id) = AccountId::new(account.id.clone()) else {
                continue;
            };
            match live.by_id.get(&id) {
                Some(entry) => {
                    let mut t = guard(&entry.tokens);
                    if t.0 != account.tokens && newer(&account.tokens, &t.0) {
                        t.0 = account.tokens.clone();
                        t.1 += 1;
                        changes.adopted.push(id.clone());
                    }
                }
                None => {
                    let entry = Arc::new(Entry::from_pool(id.clone(), account));
                    live.by_id.insert(id.clone(), entry.clone());
                    live.list.push(entry);
                    changes.added.push(id.clone());
                }
            }
            changes.standing.push((id, standing(account)));
        }
        live.pool_disabled = changes
            .standing
            .iter()
            .filter_map(|(id, s)| match s {
                Standing::Disabled(reason) => Some((id.clone(), *reason)),
                Standing::Enabled => None,
            })
            .collect();
        // Pool order for `/status`.
        let position: HashMap<&str, usize> = doc
            .accounts
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.as_str(), i))
            .collect();
        live.list
            .sort_by_key(|e| position.get(e.id.as_str()).copied().unwrap_or(usize::MAX));
        changes
    }

    /// Writes what this run learned into the pool file, so account switchers and the next
    /// run see it: running per-family cooldowns (Unix seconds, rounded up; ended ones are
    /// dropped) and `last_used_at` for accounts that served attempts. Blocking file I/O; a
    /// no-op without a pool store.
    pub(crate) fn save_observations(
        &self,
        policy: &PoolStatus,
    ) -> Result<usize, auth_storage::StorageError> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        let now_secs = unix_now();
        let by_id: HashMap<&AccountId, &rotation_policy::AccountStatus> =
            policy.accounts.iter().map(|a| (&a.id, a)).collect();
        let mut changes = Vec::new();
        for entry in self.live().list.iter() {
            let Some(p) = by_id.get(&entry.id).copied() else {
                continue;
            };
            let cooldowns: Vec<(String, u64)> = p
                .family_cooldowns
                .iter()
                .filter(|c| c.until > policy.now)
                .map(|c| (c.family.clone(), c.until.as_millis().div_ceil(1000)))
                .collect();
            changes.push((entry.id.to_string(), cooldowns, p.attempts > 0));
        }
        store.update(|pool| {
            let mut touched = 0;
            for (id, cooldowns, used) in &changes {
                let Some(account) = pool.account_mut(id) else {
                    continue;
                };
                // Ended cooldowns mean nothing to the next reader: drop them.
                account.cooldowns.retain(|_, until| *until > now_secs);
                for (family, until) in cooldowns {
                    let slot = account.cooldowns.entry(family.clone()).or_insert(0);
                    *slot = (*slot).max(*until);
                }
                if *used {
                    account.last_used_at = Some(now_secs);
                }
                touched += 1;
            }
            touched
        })
    }

    pub(crate) fn reports(&self, policy: &PoolStatus) -> Vec<AccountReport> {
        let by_id: HashMap<&AccountId, &rotation_policy::AccountStatus> =
            policy.accounts.iter().map(|a| (&a.id, a)).collect();
        self.live()
            .list
            .iter()
            .map(|e| {
                let info = guard(&e.info);
                let p = by_id.get(&e.id).copied();
                AccountReport {
                    id: e.id.to_string(),
                    email: e.masked_email.clone(),
                    plan: e.plan.clone(),
                    attempts: p.map_or(0, |a| a.attempts),
                    outcomes: p.map(|a| a.outcomes).unwrap_or_default(),
                    refreshes: info.refreshes,
                    refresh_failures: info.refresh_failures,
                    needs_refresh: p.is_some_and(|a| a.needs_refresh),
                    health: p.map_or(0, |a| a.health),
                    cooldown_until_ms: p.and_then(|a| a.cooldown_until).map(|t| t.as_millis()),
                    rate_limited_families: p
                        .map(|a| {
                            a.family_cooldowns
                                .iter()
                                .filter(|c| c.until > policy.now)
                                .map(|c| c.family.clone())
                                .collect()
                        })
                        .unwrap_or_default(),
                    disabled: p.and_then(|a| a.disabled),
                    last_error: info.last_error.clone(),
                }
            })
            .collect()
    }
}

impl Entry {
    fn new(id: AccountId, email: Option<&str>, plan: Option<String>, tokens: TokenData) -> Self {
        Self {
            id,
            masked_email: email
                .map(auth_core::redact::mask_email)
                .unwrap_or_else(|| "-".to_owned()),
            plan,
            tokens: Mutex::new((tokens, 0)),
            refresher: Mutex::new(None),
            info: Mutex::new(Info::default()),
            saved_cooldowns: Vec::new(),
            rejected_generation: Mutex::new(None),
        }
    }

    fn from_pool(id: AccountId, account: &Account) -> Self {
        let mut entry = Self::new(
            id,
            account.email.as_deref(),
            account.plan.clone(),
            account.tokens.clone(),
        );
        entry.saved_cooldowns = account
            .cooldowns
            .iter()
            .map(|(family, until)| (family.clone(), *until))
            .collect();
        entry
    }
}

/// How a pool account stands: disabled by hand, gone for everyone, or enabled.
pub(crate) fn standing(account: &Account) -> Standing {
    match auth_storage::policy::pool_disabled_reason(account) {
        Some(reason) => Standing::Disabled(reason),
        None => Standing::Enabled,
    }
}

/// Whether the access token's `exp` is within `margin` from now (or past).
fn expires_within(tokens: &TokenData, margin: std::time::Duration) -> bool {
    tokens
        .access_token_expires_at()
        .ok()
        .flatten()
        .is_some_and(|exp| {
            // A margin past the end of time covers every expiry (no overflow panic).
            SystemTime::now()
                .checked_add(margin)
                .is_none_or(|limit| exp <= limit)
        })
}

/// Whether `a` was issued after `b` (a later access-token expiry).
fn newer(a: &TokenData, b: &TokenData) -> bool {
    let exp = |t: &TokenData| t.access_token_expires_at().ok().flatten();
    match (exp(a), exp(b)) {
        (Some(x), Some(y)) => x > y,
        (Some(_), None) => true,
        _ => false,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn credentials(tokens: &TokenData, generation: u64) -> AccountCredentials {
    AccountCredentials {
        access_token: tokens.access_token.clone(),
        chatgpt_account_id: tokens.effective_account_id(),
        generation,
    }
}

/// Accounts given in code keep refreshed tokens in memory only.
struct MemoryRefreshStore;

impl RefreshStore for MemoryRefreshStore {
    fn persist(
        &self,
        previous: &TokenData,
        refreshed: &RefreshedTokens,
    ) -> Result<TokenData, PersistError> {
        Ok(refreshed.apply_to(previous))
    }
}

/// Loads the accounts of a pool store: every account, with its pool id; disabled and
/// gone ones are kept (the proxy's policy skips them, and they come back when enabled or
/// signed in again). Refreshes go through [`PoolRefresher`] (cross-process, never a spent
/// token). Per-family cooldowns saved in the pool's legacy `cooldowns` field that are
/// still running are handed to the policy when the proxy starts.
pub fn load_pool_accounts(store: PoolStore) -> Result<Accounts, super::ProxyError> {
    let loaded = store
        .load()
        .map_err(|e| super::ProxyError::Pool(e.to_string()))?;
    let accounts = Accounts {
        store: Some(store),
        ..Accounts::default()
    };
    accounts.apply_document(&loaded.pool);
    Ok(accounts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock_upstream::{MockConfig, MockUpstream};

    /// A "gone" answer about tokens the pool has since replaced (a new sign-in) marks
    /// nothing: the account keeps its new tokens and stays usable.
    #[tokio::test]
    async fn a_gone_answer_about_replaced_tokens_marks_nothing() {
        let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = PoolStore::new(dir.path());
        let old = mock.synthetic_account("ws-1", "a@example.com", false);
        crate::mock_upstream::seed_pool(&store, std::slice::from_ref(&old)).unwrap();
        let accounts = load_pool_accounts(store.clone()).unwrap();
        let id = accounts.ids().remove(0);
        let used = credentials(&old.tokens, 0);

        // Someone signed in again: the pool holds newer tokens.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let new = mock.synthetic_account("ws-1", "a@example.com", false);
        crate::mock_upstream::seed_pool(&store, std::slice::from_ref(&new)).unwrap();
        let mark = accounts
            .mark_gone(
                &id,
                &used,
                UnusableReason::LoginRequired,
                Some("token_invalidated"),
            )
            .unwrap();
        assert_eq!(mark, GoneMark::TokensChanged);
        let pool = store.load().unwrap().pool;
        assert!(pool.accounts[0].unusable.is_none());
        assert_eq!(pool.accounts[0].tokens, new.tokens);

        // About the tokens the pool holds: marked, once.
        let current = credentials(&new.tokens, 1);
        let mark = accounts
            .mark_gone(
                &id,
                &current,
                UnusableReason::LoginRequired,
                Some("token_invalidated"),
            )
            .unwrap();
        assert_eq!(mark, GoneMark::Marked);
        let mark = accounts
            .mark_gone(&id, &current, UnusableReason::LoginRequired, None)
            .unwrap();
        assert_eq!(mark, GoneMark::AlreadyMarked);
        let pool = store.load().unwrap().pool;
        assert_eq!(
            pool.accounts[0].unusable.as_ref().map(|m| m.to_string()),
            Some("login required (token_invalidated)".to_owned())
        );
        mock.shutdown().await;
    }
}
