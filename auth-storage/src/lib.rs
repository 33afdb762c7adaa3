//! Codex-compatible credential stores and a durable multi-account pool.
//!
//! Tools that manage Codex logins (account switchers, rotation proxies, coven) write
//! credentials from several processes at once, get killed mid-write and run beside the real
//! Codex CLI, which reads and writes the same files. This crate makes that boringly safe:
//!
//! * **Credential stores** ([`CredentialStore`]): [`FileStore`] (`$CODEX_HOME/auth.json`),
//!   [`KeyringStore`] (OS keyring, feature `keyring`), [`AutoStore`] (keyring, falling back
//!   to the file and saying so) and [`EphemeralStore`], picked with a [`StoreMode`] parsed
//!   from the CLI's own `cli_auth_credentials_store` values. They write what the CLI writes
//!   (same file, mode 0600, same pretty JSON; same keyring service/account/label), under
//!   the CLI's own lock files (`auth.lock`, then `auth.json.lock`, see [`CodexHome`]).
//! * **Atomic writes** everywhere ([`atomic::write_atomic`]): temp file in the same
//!   directory, fsync, rename, fsync the directory.
//! * **The pool** ([`PoolStore`]): many accounts with one active, a versioned document with
//!   forward migrations, `update(|pool| …)` under a cross-process lock, rotating backups and
//!   recovery that reports why ([`pool::RestoreReason`]); [`PoolStore::import`] and
//!   [`PoolStore::activate`] move logins between a Codex home and the pool (switching
//!   first saves the login it replaces, so tokens the CLI refreshed are never lost).
//! * **A failed operation changes nothing**: a pool update either replaces `pool.json` or
//!   leaves the directory as it was; a switch that fails after writing the pool puts it
//!   back byte for byte. [`StorageError::effect`] says whether an error left everything as
//!   it was ([`FailureEffect`]); the lock order and step order are on
//!   [`PoolStore::switch_to`].
//! * **Coordinated refresh** (feature `refresh`, `refresh` module): however many
//!   processes and threads find the same token stale, exactly one refresh request is made —
//!   for a Codex home (`CoordinatedRefresher`) and for pool accounts shared by proxies and
//!   the Codex CLI (`PoolRefresher`, which also adopts tokens the CLI refreshed).
//!
//! * **Shared rotation state** (feature `policy`, `policy` module): the rotation
//!   policy's cooldowns, disabled reasons and health, kept beside the pool and merged
//!   between processes by written rules; one call builds a ready `rotation_policy::Pool`
//!   from a pool and one call saves its changes back.
//!
//! All APIs block; from async code call them in `tokio::task::spawn_blocking`.
//!
//! ```
//! use auth_core::{AuthDocument, Secret};
//! use auth_storage::{CodexHome, CredentialStore, PoolStore, StoreMode, open_store};
//! # fn main() -> Result<(), auth_storage::StorageError> {
//! # let tmp = tempfile::tempdir().unwrap();
//! // A Codex home and its credential store, as configured for the CLI.
//! let home = CodexHome::new(tmp.path().join("codex"));
//! let store = open_store(home.clone(), "file".parse::<StoreMode>()?)?;
//! store.save(&AuthDocument::api_key(Secret::new("sk-example".into())))?;
//! assert!(home.auth_file().exists());
//!
//! // A pool: every update is a locked, atomic read-modify-write.
//! let pool = PoolStore::new(tmp.path().join("pool"));
//! pool.update(|p| p.extra.insert("owner".into(), "me".into()))?;
//! let loaded = pool.load()?;
//! assert_eq!(loaded.pool.revision, 1);
//! assert!(loaded.recovery.is_none());
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod atomic;
mod codex_home;
mod error;
pub mod keyring_backend;
pub mod lock;
mod mode;
#[cfg(feature = "policy")]
pub mod policy;
pub mod pool;
#[cfg(feature = "refresh")]
mod pool_refresh;
#[cfg(feature = "refresh")]
mod process;
#[cfg(feature = "refresh")]
pub mod refresh;
mod store;

/// Email masking used in everything this crate prints (from `auth-core`, so every crate of
/// the workspace masks the same way).
pub use auth_core::redact::mask_email;
pub use codex_home::{
    AUTH_FILE, COMMIT_LOCK_FILE, CodexHome, CommitGuard, FILE_LOCK_FILE, KEYRING_SERVICE,
};
pub use error::{FailureEffect, Result, StorageError};
pub use mode::StoreMode;
pub use pool::PoolStore;
pub use store::{
    AutoStore, CredentialStore, EphemeralStore, FileStore, KeyringStore, Placement, open_store,
    open_store_with,
};
