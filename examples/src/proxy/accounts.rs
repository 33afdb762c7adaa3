//! The proxy's accounts: credentials per policy id, single-flight refresh, write-back to the
//! pool store.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use std::sync::Arc;

use auth_core::refresh::{
    PersistError, RefreshConfig, RefreshError, RefreshStore, RefreshedTokens, Refresher,
};
use auth_core::{Secret, TokenData};
use auth_storage::PoolStore;
use rotation_policy::{AccountId, PoolStatus};
use serde::Serialize;

use super::Shared;

/// What the refresh after an upstream `401` came to.
pub(crate) enum AfterRejection {
    /// This caller's refresh replaced the rejected token.
    RefreshedHere,
    /// The rejected token had already been replaced by another request's refresh.
    AlreadyRefreshed,
    /// The refresh failed.
    Failed,
}

/// What one upstream attempt needs from an account.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AccountCredentials {
    /// Sent as `Authorization: Bearer …`.
    pub access_token: Secret,
    /// Sent as `ChatGPT-Account-Id`.
    pub chatgpt_account_id: Option<String>,
    /// Bumped by every refresh of the account's tokens.
    pub(crate) generation: u64,
}

/// One account in `GET /status` (no secret, email masked).
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct AccountReport {
    /// The proxy's id for the account (`acct-N`, pool order).
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
    /// Last error seen with this account (no secrets).
    pub last_error: Option<String>,
}

struct Entry {
    id: AccountId,
    /// `auth_storage::pool::Account::key()` for write-back; contains the email, never logged.
    pool_key: Option<String>,
    masked_email: String,
    plan: Option<String>,
    tokens: Mutex<(TokenData, u64)>,
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

/// The accounts a [`super::RotationProxy`] rotates over.
#[derive(Default)]
pub struct Accounts {
    entries: Vec<Entry>,
    by_id: HashMap<AccountId, usize>,
    store: Option<PoolStore>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts")
            .field("len", &self.entries.len())
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
        self.push_keyed(email, plan, tokens, None)
    }

    fn push_keyed(
        &mut self,
        email: Option<&str>,
        plan: Option<String>,
        tokens: TokenData,
        pool_key: Option<String>,
    ) -> Result<AccountId, rotation_policy::PolicyError> {
        let n = self.entries.len() + 1;
        let id = AccountId::new(format!("acct-{n}"))?;
        self.by_id.insert(id.clone(), self.entries.len());
        self.entries.push(Entry {
            id: id.clone(),
            pool_key,
            masked_email: email
                .map(auth_core::redact::mask_email)
                .unwrap_or_else(|| "-".to_owned()),
            plan,
            tokens: Mutex::new((tokens, 0)),
            refresher: Mutex::new(None),
            info: Mutex::new(Info::default()),
            saved_cooldowns: Vec::new(),
            rejected_generation: Mutex::new(None),
        });
        Ok(id)
    }

    /// How many accounts.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn ids(&self) -> impl Iterator<Item = &AccountId> {
        self.entries.iter().map(|e| &e.id)
    }

    fn entry(&self, id: &AccountId) -> Option<&Entry> {
        self.by_id.get(id).and_then(|&i| self.entries.get(i))
    }

    /// Cooldowns saved in the pool file by an earlier run (or another tool) that are still
    /// running at `now_ms`, as `(account, family, until_ms)`.
    pub(crate) fn saved_cooldowns(
        &self,
        now_ms: u64,
    ) -> impl Iterator<Item = (&AccountId, &str, u64)> + '_ {
        self.entries.iter().flat_map(move |e| {
            e.saved_cooldowns.iter().filter_map(move |(family, until)| {
                let until_ms = until.saturating_mul(1000);
                (until_ms > now_ms).then_some((&e.id, family.as_str(), until_ms))
            })
        })
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

    /// Credentials for an attempt; refreshes first (single-flight) when the access token
    /// expires within the margin. `Err` carries a redacted reason.
    pub(crate) async fn usable_credentials(
        &self,
        shared: &Shared,
        id: &AccountId,
    ) -> Result<AccountCredentials, String> {
        let entry = self
            .entry(id)
            .ok_or_else(|| format!("{id} is not in the pool"))?;
        let (creds, expiring) = {
            let t = guard(&entry.tokens);
            let expiring =
                t.0.access_token_expires_at()
                    .ok()
                    .flatten()
                    .is_some_and(|exp| {
                        // A margin past the end of time covers every expiry (no overflow panic).
                        SystemTime::now()
                            .checked_add(shared.options.refresh_margin)
                            .is_none_or(|limit| exp <= limit)
                    });
            (credentials(&t.0, t.1), expiring)
        };
        if !expiring {
            return Ok(creds);
        }
        tracing::info!(account = %id, "access token expired or about to; refreshing");
        self.refresh(shared, entry, creds.generation)
            .await
            .map(|(creds, _)| creds)
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
            return AfterRejection::Failed;
        };
        match self.refresh(shared, entry, used.generation).await {
            Ok((_, true)) => AfterRejection::RefreshedHere,
            Ok((_, false)) => AfterRejection::AlreadyRefreshed,
            Err(_) => AfterRejection::Failed,
        }
    }

    async fn refresh(
        &self,
        shared: &Shared,
        entry: &Entry,
        seen: u64,
    ) -> Result<(AccountCredentials, bool), String> {
        let current = {
            let t = guard(&entry.tokens);
            if t.1 != seen {
                // Someone refreshed after this caller read the tokens: use their result.
                return Ok((credentials(&t.0, t.1), false));
            }
            t.0.clone()
        };
        // Single-flight inside auth-core: concurrent callers with the same refresh token
        // share one exchange and one write to the pool store.
        let refresher = match self.refresher_for(shared, entry) {
            Ok(r) => r,
            Err(e) => return Err(format!("refresh unavailable for {}: {e}", entry.id)),
        };
        match refresher.refresh(&current).await {
            Ok(fresh) => {
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
                    guard(&entry.info).refreshes += 1;
                    let mut state = shared.lock();
                    state.counters.refreshes += 1;
                    let _ = state.policy.mark_refreshed(&entry.id, super::now());
                    drop(state);
                    tracing::info!(account = %entry.id, "token refreshed");
                }
                Ok((creds, first))
            }
            Err(err) => {
                // One line whatever the token endpoint or the store put in the error.
                let message = format!(
                    "refresh failed for {}: {}",
                    entry.id,
                    auth_core::terminal::escape_control(&err.to_string())
                );
                {
                    let mut info = guard(&entry.info);
                    info.refresh_failures += 1;
                    info.last_error = Some(message.clone());
                }
                {
                    let mut state = shared.lock();
                    state.counters.refresh_failures += 1;
                    state.last_error = Some(message.clone());
                }
                tracing::warn!(account = %entry.id, error = %auth_core::terminal::escape_control(&err.to_string()), "token refresh failed");
                Err(message)
            }
        }
    }

    fn refresher_for(&self, shared: &Shared, entry: &Entry) -> Result<Refresher, RefreshError> {
        let mut slot = guard(&entry.refresher);
        if let Some(r) = slot.as_ref() {
            return Ok(r.clone());
        }
        let config = RefreshConfig::default().with_token_url(shared.options.token_url.clone());
        let store: Arc<dyn RefreshStore> = Arc::new(PoolRefreshStore {
            store: self.store.clone(),
            key: entry.pool_key.clone(),
        });
        let refresher = Refresher::new(config, store)?;
        *slot = Some(refresher.clone());
        Ok(refresher)
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
        let now_secs = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut changes = Vec::new();
        for entry in &self.entries {
            let (Some(key), Some(p)) = (
                &entry.pool_key,
                policy.accounts.iter().find(|a| a.id == entry.id),
            ) else {
                continue;
            };
            let cooldowns: Vec<(String, u64)> = p
                .family_cooldowns
                .iter()
                .filter(|c| c.until > policy.now)
                .map(|c| (c.family.clone(), c.until.as_millis().div_ceil(1000)))
                .collect();
            changes.push((key.clone(), cooldowns, p.attempts > 0));
        }
        store.update(|pool| {
            let mut touched = 0;
            for (key, cooldowns, used) in &changes {
                for account in pool.accounts.iter_mut().filter(|a| &a.id == key) {
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
            }
            touched
        })
    }

    pub(crate) fn reports(&self, policy: &PoolStatus) -> Vec<AccountReport> {
        self.entries
            .iter()
            .map(|e| {
                let info = guard(&e.info);
                let p = policy.accounts.iter().find(|a| a.id == e.id);
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
                    last_error: info.last_error.clone(),
                }
            })
            .collect()
    }
}

fn credentials(tokens: &TokenData, generation: u64) -> AccountCredentials {
    AccountCredentials {
        access_token: tokens.access_token.clone(),
        chatgpt_account_id: tokens.effective_account_id(),
        generation,
    }
}

/// Saves refreshed tokens into the pool store (when the proxy runs over one).
struct PoolRefreshStore {
    store: Option<PoolStore>,
    key: Option<String>,
}

impl RefreshStore for PoolRefreshStore {
    fn persist(
        &self,
        previous: &TokenData,
        refreshed: &RefreshedTokens,
    ) -> Result<TokenData, PersistError> {
        let next = refreshed.apply_to(previous);
        let (Some(store), Some(key)) = (&self.store, &self.key) else {
            return Ok(next);
        };
        let saved = store.update(|pool| {
            let now = auth_core::Timestamp::now();
            let mut found = false;
            for account in pool.accounts.iter_mut().filter(|a| &a.id == key) {
                account.tokens = next.clone();
                account.last_refresh = Some(now.clone());
                found = true;
            }
            found
        })?;
        if !saved {
            tracing::warn!(
                "the refreshed account left the pool file; new tokens kept in memory only"
            );
        }
        Ok(next)
    }
}

/// Loads the enabled accounts of a pool store; refreshed tokens are written back to it.
/// Per-family cooldowns saved in the pool (by an earlier run or another tool) that are still
/// running are handed to the policy when the proxy starts.
pub fn load_pool_accounts(store: PoolStore) -> Result<Accounts, super::ProxyError> {
    let loaded = store
        .load()
        .map_err(|e| super::ProxyError::Pool(e.to_string()))?;
    let mut accounts = Accounts::new();
    for account in loaded.pool.accounts.iter().filter(|a| a.enabled) {
        accounts.push_keyed(
            account.email.as_deref(),
            account.plan.clone(),
            account.tokens.clone(),
            Some(account.id.clone()),
        )?;
        if let Some(entry) = accounts.entries.last_mut() {
            entry.saved_cooldowns = account
                .cooldowns
                .iter()
                .map(|(family, until)| (family.clone(), *until))
                .collect();
        }
    }
    accounts.store = Some(store);
    Ok(accounts)
}
