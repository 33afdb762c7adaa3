//! The multi-account pool: a versioned JSON document of many logins with one active, kept
//! by [`PoolStore`] with cross-process locking, atomic writes, rotating backups and recovery.
//!
//! Lock order: account, home, pool. A refresh of a pool account
//! (`refresh::PoolRefresher`, feature `refresh`) takes the account's refresh lock
//! (`refresh-locks/<id>.lock`), then the locks of the Codex homes the pool handed that
//! account to (`auth.lock`, then `auth.json.lock`, as the Codex CLI does; several homes in
//! path order), then briefly the pool lock (`pool.lock`). [`PoolStore::switch_to`] takes the
//! same locks in the same order (the account it hands over, one home, the pool). Nothing
//! takes them in another order, so they cannot deadlock. Operations on the pool alone
//! ([`PoolStore::update`], `import`, `reset`) take only the pool lock; reading a home's
//! login takes no lock, since our writers replace it atomically (the CLI's own in-place
//! writes happen under its locks).
//!
//! Times: the document keeps Unix seconds (`added_at`, `last_used_at`, cooldown ends,
//! [`Unusable::since`]) and RFC 3339 [`auth_core::Timestamp`]s (`last_refresh`, as in
//! `auth.json`); `rotation_policy::Timestamp` counts milliseconds. All three meet in
//! [`SystemTime`](std::time::SystemTime):
//!
//! ```
//! use std::time::{Duration, SystemTime, UNIX_EPOCH};
//! let added_at: u64 = 1_700_000_000; // seconds, as in the pool
//! let wall = UNIX_EPOCH + Duration::from_secs(added_at);
//! let rfc3339 = auth_core::Timestamp::from(wall);
//! let policy = rotation_policy::Timestamp::from(SystemTime::from(&rfc3339));
//! assert_eq!(policy.as_millis(), added_at * 1000);
//! assert_eq!(SystemTime::from(policy), wall);
//! ```
//!
//! A failed operation changes nothing: see the table on [`PoolStore::switch_to`] and
//! [`StorageError::effect`](crate::StorageError::effect).

mod document;
mod migrate;
mod store;
mod switch;

#[cfg(feature = "refresh")]
pub(crate) use document::same_login as document_same_login;
#[cfg(feature = "refresh")]
pub(crate) use document::tokens_newer;
pub use document::{
    Account, CURRENT_VERSION, Health, LinkedHome, PoolDocument, RefreshInFlight, Unusable,
    UnusableReason, Upsert, is_valid_account_id,
};
pub use store::{
    DEFAULT_BACKUPS, Loaded, POOL_DIR_ENV, POOL_FILE, POOL_FILE_MAX_BYTES, PoolStore,
    REFRESH_LOCK_DIR, Recovery, RestoreReason,
};
pub use switch::Activated;
