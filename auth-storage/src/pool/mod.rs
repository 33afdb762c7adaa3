//! The multi-account pool: a versioned JSON document of many logins with one active, kept
//! by [`PoolStore`] with cross-process locking, atomic writes, rotating backups and recovery.

mod document;
mod migrate;
mod store;
mod switch;

pub use document::{Account, CURRENT_VERSION, Health, Pool, Upsert};
pub use store::{
    DEFAULT_BACKUPS, Loaded, POOL_DIR_ENV, POOL_FILE, POOL_FILE_MAX_BYTES, PoolStore, Recovery,
    RestoreReason,
};
pub use switch::Activated;
