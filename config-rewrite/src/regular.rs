//! The size limits of the files this crate reads. Reading only regular files (without
//! blocking on a FIFO or device), replacing them atomically and creating directories 0700
//! is the workspace's `atomic-file` crate; [`FileKind`] is its.

pub use atomic_file::FileKind;

/// Largest `config.toml` (or profile layer file) read: 8 MiB. Real files are a few KiB.
pub const CONFIG_MAX_BYTES: u64 = 8 << 20;

/// Largest revert record read: 64 MiB (it holds the original configuration text, JSON-escaped).
pub const RECORD_MAX_BYTES: u64 = 64 << 20;
