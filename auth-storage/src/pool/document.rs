//! The pool document: many accounts, one active, versioned on disk.

use std::collections::BTreeMap;
use std::fmt;

use auth_core::TokenData;
use serde::{Deserialize, Serialize};

/// The pool schema version this crate writes.
pub const CURRENT_VERSION: u32 = 2;

/// Many ChatGPT accounts and which one is active.
///
/// On disk (`pool.json`) it is a pretty-printed JSON object with `version`, `revision`,
/// `active` and `accounts`; unknown top-level fields are kept. Mutate it through
/// [`PoolStore::update`](crate::PoolStore::update) so concurrent processes never lose a
/// change.
///
/// ```
/// use auth_storage::pool::Pool;
/// let pool = Pool::default();
/// assert!(pool.accounts.is_empty());
/// assert_eq!(pool.version, auth_storage::pool::CURRENT_VERSION);
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Pool {
    /// Schema version (see [`CURRENT_VERSION`]).
    pub version: u32,
    /// Incremented on every save; names backups and lets readers tell documents apart.
    #[serde(default)]
    pub revision: u64,
    /// [`Account::key`] of the active account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<String>,
    /// The accounts, in the order they were added.
    #[serde(default)]
    pub accounts: Vec<Account>,
    /// Top-level fields this version does not know, kept as they were.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Default for Pool {
    fn default() -> Self {
        Self {
            version: CURRENT_VERSION,
            revision: 0,
            active: None,
            accounts: Vec::new(),
            extra: serde_json::Map::new(),
        }
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("version", &self.version)
            .field("revision", &self.revision)
            .field("active", &self.active.as_deref().map(mask_key))
            .field("accounts", &self.accounts)
            .finish_non_exhaustive()
    }
}

/// One ChatGPT login in the pool.
///
/// `Debug` masks the email and redacts every token.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Account {
    /// `chatgpt_account_id` (the workspace id sent as `ChatGPT-Account-Id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// The login's email address (never printed unmasked by this crate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// ChatGPT plan (`plus`, `pro`, `team`, …) as read from the id token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// The OAuth tokens, in the Codex `auth.json` layout.
    pub tokens: TokenData,
    /// When the tokens were last refreshed (RFC 3339, as in `auth.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh: Option<auth_core::Timestamp>,
    /// When the account was added (seconds since the Unix epoch).
    pub added_at: u64,
    /// When the account was last made active or used (seconds since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<u64>,
    /// Disabled accounts stay in the pool but are not picked.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Per model family (`gpt-5`, `codex`, …): unusable until this time (Unix seconds).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cooldowns: BTreeMap<String, u64>,
    /// What the last requests with this account looked like.
    #[serde(default)]
    pub health: Health,
    /// Account fields this version does not know, kept as they were.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn yes() -> bool {
    true
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("account_id", &self.account_id)
            .field("email", &self.masked_email())
            .field("plan", &self.plan)
            .field("tokens", &self.tokens)
            .field("added_at", &self.added_at)
            .field("last_used_at", &self.last_used_at)
            .field("enabled", &self.enabled)
            .field("cooldowns", &self.cooldowns)
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

/// Success/failure counters for an account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Health {
    /// Failures since the last success.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// When the last failure happened (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_at: Option<u64>,
    /// When the last success happened (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<u64>,
    /// A short, secret-free reason for the last failure (e.g. `rate_limited`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
}

impl Account {
    /// A new enabled account with no history.
    pub fn new(tokens: TokenData, added_at: u64) -> Self {
        Self {
            account_id: None,
            email: None,
            plan: None,
            tokens,
            last_refresh: None,
            added_at,
            last_used_at: None,
            enabled: true,
            cooldowns: BTreeMap::new(),
            health: Health::default(),
            extra: serde_json::Map::new(),
        }
    }

    /// An account for a fresh login: email, account id and plan are read from the id token
    /// (unverified, see [`auth_core::jwt`]); `account_id` from the tokens wins over the
    /// claim.
    pub fn from_login(
        tokens: TokenData,
        last_refresh: Option<auth_core::Timestamp>,
        added_at: u64,
    ) -> Self {
        let claims = tokens.id_token_claims().ok();
        let mut account = Self::new(tokens, added_at);
        account.account_id = account.tokens.effective_account_id();
        if let Some(claims) = claims {
            account.email = claims.email;
            account.plan = claims.chatgpt_plan_type.map(|p| p.as_str().to_owned());
        }
        account.last_refresh = last_refresh;
        account
    }

    /// The identity used for [`Pool::active`]: `<account id>|<lower-cased email>`, or
    /// whichever of the two is known (`email:<email>` for an email alone).
    pub fn key(&self) -> String {
        match (&self.account_id, &self.email) {
            // Two users of one workspace share the account id, so the email is part of it.
            (Some(id), Some(email)) => format!("{id}|{}", email.to_lowercase()),
            (Some(id), None) => id.clone(),
            (None, Some(email)) => format!("email:{}", email.to_lowercase()),
            (None, None) => format!("token:{}", self.tokens.refresh_token.fingerprint()),
        }
    }

    /// The email, masked for display (`a***@example.com`), or `-` when unknown.
    pub fn masked_email(&self) -> String {
        self.email
            .as_deref()
            .map(auth_core::redact::mask_email)
            .unwrap_or_else(|| "-".to_owned())
    }

    /// Whether this and `other` are the same login: same account id, or (when either has
    /// no account id) the same email, case-insensitively.
    pub fn same_login(&self, other: &Account) -> bool {
        match (&self.account_id, &other.account_id) {
            (Some(a), Some(b)) => {
                a == b
                    && match (&self.email, &other.email) {
                        // Two users of one workspace share the account id.
                        (Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
                        _ => true,
                    }
            }
            _ => match (&self.email, &other.email) {
                (Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
                _ => false,
            },
        }
    }

    /// Whether the account may be picked for `model_family` at `now` (enabled and not
    /// cooling down).
    pub fn is_available(&self, model_family: &str, now: u64) -> bool {
        self.enabled
            && self
                .cooldowns
                .get(model_family)
                .is_none_or(|until| *until <= now)
    }
}

/// What [`Pool::upsert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Upsert {
    /// A new account was appended at this index.
    Added(usize),
    /// An existing account (same login) at this index got the new tokens.
    Updated(usize),
}

impl Pool {
    /// Add `account`, or refresh the tokens, plan and email of the same login already in the
    /// pool (keeping its history, cooldowns and `added_at`).
    pub fn upsert(&mut self, account: Account) -> Upsert {
        if let Some(i) = self.accounts.iter().position(|a| a.same_login(&account)) {
            let existing = &mut self.accounts[i];
            let old_key = existing.key();
            existing.tokens = account.tokens;
            existing.last_refresh = account.last_refresh.or(existing.last_refresh.take());
            if account.email.is_some() {
                existing.email = account.email;
            }
            if account.account_id.is_some() {
                existing.account_id = account.account_id;
            }
            if account.plan.is_some() {
                existing.plan = account.plan;
            }
            let new_key = existing.key();
            if self.active.as_deref() == Some(old_key.as_str()) {
                self.active = Some(new_key);
            }
            Upsert::Updated(i)
        } else {
            self.accounts.push(account);
            Upsert::Added(self.accounts.len() - 1)
        }
    }

    /// Index of the active account.
    pub fn active_index(&self) -> Option<usize> {
        let key = self.active.as_deref()?;
        self.accounts.iter().position(|a| a.key() == key)
    }

    /// The active account.
    pub fn active_account(&self) -> Option<&Account> {
        self.active_index().map(|i| &self.accounts[i])
    }

    /// Make the account at `index` active and stamp its `last_used_at`. `None` when the index
    /// is out of range.
    pub fn set_active(&mut self, index: usize, now: u64) -> Option<&Account> {
        let account = self.accounts.get_mut(index)?;
        account.last_used_at = Some(now);
        self.active = Some(account.key());
        Some(&self.accounts[index])
    }

    /// Remove and return the account at `index`; clears `active` if it was that account.
    pub fn remove(&mut self, index: usize) -> Option<Account> {
        if index >= self.accounts.len() {
            return None;
        }
        let removed = self.accounts.remove(index);
        if self.active.as_deref() == Some(removed.key().as_str()) {
            self.active = None;
        }
        Some(removed)
    }
}

fn mask_key(key: &str) -> String {
    if let Some(email) = key.strip_prefix("email:") {
        return format!("email:{}", auth_core::redact::mask_email(email));
    }
    match key.split_once('|') {
        Some((id, email)) => format!("{id}|{}", auth_core::redact::mask_email(email)),
        None => key.to_owned(),
    }
}
