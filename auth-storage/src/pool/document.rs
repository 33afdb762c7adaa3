//! The pool document: many accounts, one active, versioned on disk (pure data, no I/O).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use auth_core::TokenData;
use serde::{Deserialize, Serialize};

/// The pool schema version this crate writes.
pub const CURRENT_VERSION: u32 = 3;

/// Many ChatGPT accounts and which one is active: the content of `pool.json`.
///
/// On disk it is a pretty-printed JSON object with `version`, `revision`, `active`,
/// `homes` and `accounts`; unknown top-level fields are kept. Mutate it through
/// [`PoolStore::update`](crate::PoolStore::update) so concurrent processes never lose a
/// change.
///
/// ```
/// use auth_storage::pool::PoolDocument;
/// let pool = PoolDocument::default();
/// assert!(pool.accounts.is_empty());
/// assert_eq!(pool.version, auth_storage::pool::CURRENT_VERSION);
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PoolDocument {
    /// Schema version (see [`CURRENT_VERSION`]).
    pub version: u32,
    /// Incremented on every save; names backups and lets readers tell documents apart.
    #[serde(default)]
    pub revision: u64,
    /// [`Account::id`] of the active account (the one last handed to a Codex home).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<String>,
    /// Codex homes that hold (or held) a login of this pool — handed to them by
    /// [`PoolStore::switch_to`] or imported from them — by absolute directory, with where
    /// the home keeps its login. Refresh looks at every one of them for a copy of the
    /// account it refreshes (the Codex CLI keeps refreshing its copy on its own); a home's
    /// login is recognised by its tokens, so a home that now holds another login is left
    /// alone.
    ///
    /// [`PoolStore::switch_to`]: crate::PoolStore::switch_to
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub homes: BTreeMap<String, LinkedHome>,
    /// The accounts, in the order they were added.
    #[serde(default)]
    pub accounts: Vec<Account>,
    /// Top-level fields this version does not know, kept as they were.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Default for PoolDocument {
    fn default() -> Self {
        Self {
            version: CURRENT_VERSION,
            revision: 0,
            active: None,
            homes: BTreeMap::new(),
            accounts: Vec::new(),
            extra: serde_json::Map::new(),
        }
    }
}

impl fmt::Debug for PoolDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolDocument")
            .field("version", &self.version)
            .field("revision", &self.revision)
            .field("active", &self.active)
            .field("homes", &self.homes.len())
            .field("accounts", &self.accounts)
            .finish_non_exhaustive()
    }
}

/// A Codex home the pool knows about ([`PoolDocument::homes`]).
///
/// On disk an object `{"account": …, "store": …}`; a bare account id — how pools of schema
/// v3 recorded homes before store modes were — is read as a `file` home, so those pools
/// keep loading (refusing them would restore an older backup, whose refresh tokens may be
/// spent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LinkedHome {
    /// The [`Account::id`] last handed to or imported from the home (informational: the
    /// home's tokens say which login it holds now).
    pub account: String,
    /// Where the home keeps its login, as its `cli_auth_credentials_store` says (`file`,
    /// `keyring`, `auto`).
    pub store: String,
}

fn file_mode() -> String {
    crate::StoreMode::File.as_str().to_owned()
}

impl<'de> Deserialize<'de> for LinkedHome {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Link;
        impl<'de> serde::de::Visitor<'de> for Link {
            type Value = LinkedHome;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a Codex home link: an object with `account` and `store`, or an account id",
                )
            }

            /// Schema v3 before store modes were recorded: the account id alone.
            fn visit_str<E: serde::de::Error>(self, account: &str) -> Result<LinkedHome, E> {
                Ok(LinkedHome::new(account, crate::StoreMode::File))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<LinkedHome, A::Error> {
                #[derive(Deserialize)]
                struct Fields {
                    account: String,
                    #[serde(default = "file_mode")]
                    store: String,
                }
                let Fields { account, store } =
                    Fields::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(LinkedHome { account, store })
            }
        }
        deserializer.deserialize_any(Link)
    }
}

impl LinkedHome {
    /// A link to a home holding account `account` in a store of `mode`.
    pub fn new(account: impl Into<String>, mode: crate::StoreMode) -> Self {
        Self {
            account: account.into(),
            store: mode.as_str().to_owned(),
        }
    }

    /// The store mode; `None` when the recorded value is not one this version knows
    /// (written by a newer program): such a home cannot be read here.
    pub fn mode(&self) -> Option<crate::StoreMode> {
        self.store.parse().ok()
    }
}

/// One ChatGPT login in the pool.
///
/// `Debug` masks the email and redacts every token.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Account {
    /// The pool's stable id for this login: `acct-` and 16 hex digits, assigned once when
    /// the login is first added, kept when the same login is imported again, never derived
    /// from the email and never reused for another login. Safe to show and to log, and
    /// accepted as-is by `rotation_policy::AccountId`.
    #[serde(default)]
    pub id: String,
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
    /// Set when the login is gone for every process (its refresh token was reused or
    /// revoked, or the workspace was deactivated): no process picks it until the same
    /// login is added or imported again with new tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unusable: Option<Unusable>,
    /// Set while a process exchanges this account's refresh token (written before the
    /// token request, cleared with the save of its answer); see
    /// [`RefreshInFlight`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refreshing: Option<RefreshInFlight>,
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
            .field("id", &self.id)
            .field("account_id", &self.account_id)
            .field("email", &self.masked_email())
            .field("plan", &self.plan)
            .field("tokens", &self.tokens)
            .field("added_at", &self.added_at)
            .field("last_used_at", &self.last_used_at)
            .field("enabled", &self.enabled)
            .field("unusable", &self.unusable)
            .field("refreshing", &self.refreshing)
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

/// Why an account is unusable for every process until its login is renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum UnusableReason {
    /// The refresh token was reused, revoked or expired, or an access token was
    /// invalidated: the person must sign in again (`accounts add`, or `codex login` and
    /// `accounts import`).
    LoginRequired,
    /// The account or its workspace was deactivated.
    Deactivated,
}

impl fmt::Display for UnusableReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::LoginRequired => "login required",
            Self::Deactivated => "deactivated",
        })
    }
}

/// The mark of an account whose login is gone for everyone ([`Account::unusable`]).
///
/// ```
/// use auth_storage::pool::{Unusable, UnusableReason};
/// let mark = Unusable::new(UnusableReason::LoginRequired, 1_700_000_000, Some("refresh_token_reused"));
/// assert_eq!(mark.to_string(), "login required (refresh_token_reused)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Unusable {
    /// Why.
    pub reason: UnusableReason,
    /// When it was seen (Unix seconds).
    pub since: u64,
    /// The error code that showed it (`refresh_token_reused`, `token_invalidated`,
    /// `deactivated_workspace`, …): a short machine word, never a token or an email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl Unusable {
    /// A mark for `reason` seen at `since`; `code` is kept only when it is a short word of
    /// ASCII letters, digits, `_`, `-` and `.` (anything else could be a token or text from
    /// the network, so it is dropped).
    pub fn new(reason: UnusableReason, since: u64, code: Option<&str>) -> Self {
        let code = code
            .filter(|c| {
                !c.is_empty()
                    && c.len() <= 64
                    && c.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            })
            .map(str::to_owned);
        Self {
            reason,
            since,
            code,
        }
    }
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{} ({code})", self.reason),
            None => write!(f, "{}", self.reason),
        }
    }
}

/// A refresh of the account's tokens that some process started (written before the token
/// request is sent). When it is found while nobody holds the account's refresh lock, the
/// process that wrote it died after sending the request: the issuer may have spent the
/// refresh token, so the next refresh that is refused marks the login as required instead
/// of retrying.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RefreshInFlight {
    /// When the request was about to be sent (Unix seconds).
    pub started_at: u64,
    /// The process that sent it.
    pub pid: u32,
}

impl RefreshInFlight {
    /// A mark for a refresh this process starts now.
    pub fn new(started_at: u64) -> Self {
        Self {
            started_at,
            pid: std::process::id(),
        }
    }
}

impl Account {
    /// A new enabled account with no history and a new [`id`](Self::id).
    pub fn new(tokens: TokenData, added_at: u64) -> Self {
        let id = fresh_id(&tokens);
        Self {
            id,
            account_id: None,
            email: None,
            plan: None,
            tokens,
            last_refresh: None,
            added_at,
            last_used_at: None,
            enabled: true,
            unusable: None,
            refreshing: None,
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
        same_login(
            self.account_id.as_deref(),
            self.email.as_deref(),
            other.account_id.as_deref(),
            other.email.as_deref(),
        )
    }

    /// Whether the account may be picked for `model_family` at `now` (enabled, not
    /// [unusable](Self::unusable) and not cooling down).
    pub fn is_available(&self, model_family: &str, now: u64) -> bool {
        self.enabled
            && self.unusable.is_none()
            && self
                .cooldowns
                .get(model_family)
                .is_none_or(|until| *until <= now)
    }
}

/// [`Account::same_login`] on the identifying fields alone (a Codex home's login has no
/// [`Account`]).
pub(crate) fn same_login(
    id_a: Option<&str>,
    email_a: Option<&str>,
    id_b: Option<&str>,
    email_b: Option<&str>,
) -> bool {
    match (id_a, id_b) {
        (Some(a), Some(b)) => {
            a == b
                && match (email_a, email_b) {
                    // Two users of one workspace share the account id.
                    (Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
                    _ => true,
                }
        }
        _ => match (email_a, email_b) {
            (Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
            _ => false,
        },
    }
}

/// Token age, for choosing between two copies of one login's tokens: `a` is newer when its
/// access token expires later (lifetimes are the issuer's, so a later expiry is a later
/// issue), else when it was refreshed later; an unknown time counts as oldest.
pub(crate) fn tokens_newer(
    a: &TokenData,
    a_refreshed: Option<&auth_core::Timestamp>,
    b: &TokenData,
    b_refreshed: Option<&auth_core::Timestamp>,
) -> bool {
    let exp = |t: &TokenData| t.access_token_expires_at().ok().flatten();
    match (exp(a), exp(b)) {
        (Some(x), Some(y)) if x != y => return x > y,
        (Some(_), None) => return true,
        (None, Some(_)) => return false,
        _ => {}
    }
    // To the nanosecond (`last_refresh` is RFC 3339 with fractions): two refreshes in
    // one second must not tie.
    match (
        a_refreshed.map(auth_core::Timestamp::to_system_time),
        b_refreshed.map(auth_core::Timestamp::to_system_time),
    ) {
        (Some(x), Some(y)) => x > y,
        (Some(_), None) => true,
        _ => false,
    }
}

/// Whether `id` has the shape of an id this crate assigns or accepts: 1 to 64 bytes of
/// ASCII letters, digits, `-`, `_` and `.`, not starting with `.` (so it is also a safe
/// file name and a valid `rotation_policy::AccountId`).
pub fn is_valid_account_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `acct-` and 16 hex digits of a SHA-256 over a domain tag and `parts`.
fn id_from(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("acct-{hex}")
}

/// The name of the refresh lock of `account`'s login: the same for every copy of the login
/// (a re-added or re-imported account gets a new id but is refreshed under the same lock),
/// a one-way hash (no email in a file name), and always a safe file name.
pub(crate) fn refresh_lock_name(account: &Account) -> String {
    // Coarser than `same_login` (two users of one workspace share a lock): never two locks
    // for one login, at worst one lock for two logins, which only serializes their
    // refreshes.
    let email = account.email.as_deref().map(str::to_lowercase);
    let key = match (&account.account_id, &email) {
        (Some(workspace), _) => id_from(&[b"codex-pool-refresh-lock/ws", workspace.as_bytes()]),
        (None, Some(email)) => id_from(&[b"codex-pool-refresh-lock/email", email.as_bytes()]),
        (None, None) => id_from(&[b"codex-pool-refresh-lock/id", account.id.as_bytes()]),
    };
    format!("{}.lock", key.trim_start_matches("acct-"))
}

/// A new id: unique (the refresh token, the clock, the process and a counter go in) and
/// revealing nothing (a one-way hash; no email goes in).
fn fresh_id(tokens: &TokenData) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    id_from(&[
        b"codex-pool-account-id/new",
        tokens.refresh_token.expose().as_bytes(),
        &nanos.to_le_bytes(),
        &std::process::id().to_le_bytes(),
        &n.to_le_bytes(),
    ])
}

/// The id a document without one (v2 and older, or a hand-edited entry) gets for the
/// account at `index`: a function of the document alone, so every process that reads the
/// same file before it is rewritten derives the same ids.
pub(crate) fn derived_id(refresh_token: &str, index: usize, attempt: u32) -> String {
    id_from(&[
        b"codex-pool-account-id/derived",
        refresh_token.as_bytes(),
        &(index as u64).to_le_bytes(),
        &attempt.to_le_bytes(),
    ])
}

/// What [`PoolDocument::upsert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Upsert {
    /// A new account was appended at this index.
    Added(usize),
    /// An existing account (same login) at this index got the new tokens.
    Updated(usize),
}

impl PoolDocument {
    /// Add `account`, or refresh the tokens, plan and email of the same login already in the
    /// pool (keeping its [`id`](Account::id), history, cooldowns and `added_at`). Tokens
    /// older than the pool's copy ([token age](Account): later access-token expiry, then
    /// later `last_refresh`) never replace it; newer ones clear an
    /// [`unusable`](Account::unusable) mark: the person signed in again.
    pub fn upsert(&mut self, mut account: Account) -> Upsert {
        if let Some(i) = self.accounts.iter().position(|a| a.same_login(&account)) {
            let existing = &mut self.accounts[i];
            let older = tokens_newer(
                &existing.tokens,
                existing.last_refresh.as_ref(),
                &account.tokens,
                account.last_refresh.as_ref(),
            );
            let newer = tokens_newer(
                &account.tokens,
                account.last_refresh.as_ref(),
                &existing.tokens,
                existing.last_refresh.as_ref(),
            );
            // Never older tokens over newer ones: an import of a home whose copy another
            // process already refreshed would bring back a spent refresh token.
            if !older && existing.tokens != account.tokens {
                // Only newer tokens show the person signed in again (a different but not
                // newer copy may be the very token that was refused).
                if newer {
                    existing.unusable = None;
                    existing.refreshing = None;
                }
                existing.tokens = account.tokens;
                existing.last_refresh = account.last_refresh.or(existing.last_refresh.take());
            }
            if account.email.is_some() {
                existing.email = account.email;
            }
            if account.account_id.is_some() {
                existing.account_id = account.account_id;
            }
            if account.plan.is_some() {
                existing.plan = account.plan;
            }
            Upsert::Updated(i)
        } else {
            // The caller's id is kept when it is usable and free; otherwise a new one.
            if !is_valid_account_id(&account.id) || self.index_of(&account.id).is_some() {
                account.id = fresh_id(&account.tokens);
            }
            // Bounded: a collision of 64-bit hashes over a fresh nonce is not expected once.
            for _ in 0..8 {
                if self.index_of(&account.id).is_none() {
                    break;
                }
                account.id = fresh_id(&account.tokens);
            }
            self.accounts.push(account);
            Upsert::Added(self.accounts.len() - 1)
        }
    }

    /// Index of the account with this [`id`](Account::id).
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.accounts.iter().position(|a| a.id == id)
    }

    /// The account with this [`id`](Account::id).
    pub fn account(&self, id: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.id == id)
    }

    /// The account with this [`id`](Account::id), mutably.
    pub fn account_mut(&mut self, id: &str) -> Option<&mut Account> {
        self.accounts.iter_mut().find(|a| a.id == id)
    }

    /// Index of the active account.
    pub fn active_index(&self) -> Option<usize> {
        self.index_of(self.active.as_deref()?)
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
        self.active = Some(account.id.clone());
        Some(&self.accounts[index])
    }

    /// Remove and return the account at `index`; clears `active` if it was that account.
    /// [`homes`](Self::homes) keep their entries: a home may still hold the login (and a
    /// re-added copy of it must be refreshed together with that home's).
    pub fn remove(&mut self, index: usize) -> Option<Account> {
        if index >= self.accounts.len() {
            return None;
        }
        let removed = self.accounts.remove(index);
        if self.active.as_deref() == Some(removed.id.as_str()) {
            self.active = None;
        }
        Some(removed)
    }

    /// Gives every account without a usable, unique id one derived from the document
    /// ([`derived_id`]), so two readers of the same file agree. Returns how many changed.
    pub(crate) fn assign_missing_ids(&mut self) -> usize {
        let mut seen = std::collections::HashSet::new();
        let mut changed = 0;
        let taken: std::collections::HashSet<String> = self
            .accounts
            .iter()
            .filter(|a| is_valid_account_id(&a.id))
            .map(|a| a.id.clone())
            .collect();
        for (index, account) in self.accounts.iter_mut().enumerate() {
            if is_valid_account_id(&account.id) && seen.insert(account.id.clone()) {
                continue;
            }
            let mut attempt = 0u32;
            let id = loop {
                let id = derived_id(account.tokens.refresh_token.expose(), index, attempt);
                // Bounded by the number of accounts: each attempt skips one taken id.
                if (!taken.contains(&id) && !seen.contains(&id)) || attempt > 1_000_000 {
                    break id;
                }
                attempt += 1;
            };
            seen.insert(id.clone());
            account.id = id;
            changed += 1;
        }
        changed
    }
}
