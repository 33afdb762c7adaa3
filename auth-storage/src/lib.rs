//! Codex-compatible credential stores (file, keyring, ephemeral, auto) and a durable multi-account pool store.
//!
//! This crate is part of a workspace of small crates for tools that manage
//! ChatGPT/OpenAI OAuth accounts for the Codex CLI. See the workspace README.
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod atomic;
mod codex_home;
mod error;
pub mod keyring_backend;
pub mod lock;
mod mask;
mod mode;
pub mod pool;
#[cfg(feature = "refresh")]
pub mod refresh;
mod store;

pub use codex_home::{
    AUTH_FILE, COMMIT_LOCK_FILE, CodexHome, CommitGuard, FILE_LOCK_FILE, KEYRING_SERVICE,
};
pub use error::{Result, StorageError};
pub use mask::mask_email;
pub use mode::StoreMode;
pub use pool::PoolStore;
pub use store::{
    AutoStore, CredentialStore, EphemeralStore, FileStore, KeyringStore, Placement, open_store,
    open_store_with,
};
