//! Crash-safe replacement of small state files, and reads that accept only regular files of
//! bounded size.
//!
//! Credentials, account pools, configuration files and revert records share two needs:
//!
//! * **Nothing is lost.** A write must leave either the complete old file or the complete
//!   new one, whatever crashes when: [`replace`] writes a temporary file in the same
//!   directory, fsyncs it, renames it over the target and fsyncs the directory. On Windows,
//!   where a file another process has open (an anti-virus scanner, an editor, the Codex
//!   CLI) cannot be renamed over for a moment, the rename is retried with a bounded backoff
//!   ([`InUseRetry`]) and, if the file stays in use, refused with
//!   [`FileError::StillInUse`] — the old file intact, no temporary file left.
//! * **Nothing hangs.** A path where a file is expected can hold a FIFO (opening it blocks
//!   until a writer appears), `/dev/zero` (never ends), a directory, a socket, or a symlink
//!   to any of these. [`read_regular`] opens without blocking, checks the opened handle and
//!   stops at a size limit; [`replace`] refuses to replace or write through such a thing.
//!
//! | function | does |
//! |---|---|
//! | [`replace`] with [`ReplaceOptions`] | atomic, durable replacement; symlinks kept; [`FileMode`] private, kept or exact; Windows in-use retry |
//! | [`remove_durably`] | unlink + directory fsync, with the same retry |
//! | [`read_regular`], [`open_regular`] | whole-file read / open of a regular file of at most `limit` bytes, `None` when missing |
//! | [`open_checked`], [`open_append_private`], [`tighten_mode`] | the same checks with the caller's open options; private append logs |
//! | [`ensure_regular_or_missing`], [`resolve_symlinks`], [`resolve_target`] | what is at a path, and which file a write replaces |
//! | [`create_private_dir_all`], [`sync_dir`] | directories created 0700; a rename or removal made durable |
//!
//! Every error is a [`FileError`] whose message names the path (escaped: no control
//! characters reach a terminal) and says what to do; none contains file contents.
//! Everything here is blocking I/O; async callers use `spawn_blocking`.
//!
//! # Example: a tool's state file
//!
//! ```
//! use atomic_file::{FileError, FileMode, ReplaceOptions, read_regular, replace};
//!
//! const STATE_MAX_BYTES: u64 = 1 << 20;
//!
//! let home = tempfile::tempdir()?;
//! let state = home.path().join("tool/state.json");
//! let options = ReplaceOptions::new(".state-").mode(FileMode::Private);
//!
//! // Start: read what an earlier run saved (nothing yet), refusing anything odd there.
//! let saved = read_regular(&state, STATE_MAX_BYTES)?;
//! assert_eq!(saved, None);
//!
//! // Save: readers see the old file or the new one, never half of either.
//! match replace(&state, b"{\"runs\":1}", &options) {
//!     Ok(done) => {
//!         if let Some(err) = done.dir_sync_error {
//!             eprintln!("saved, but not yet durable: {err}"); // the save took effect
//!         }
//!     }
//!     Err(err @ FileError::StillInUse { .. }) => {
//!         // Windows: another program kept the file open. Nothing changed; tell the user.
//!         return Err(err.into());
//!     }
//!     Err(err) => return Err(err.into()),
//! }
//! assert_eq!(read_regular(&state, STATE_MAX_BYTES)?.as_deref(), Some(&b"{\"runs\":1}"[..]));
//!
//! // A directory (or FIFO, device, socket) in the file's place is refused, never replaced.
//! std::fs::remove_file(&state)?;
//! std::fs::create_dir(&state)?;
//! let err = replace(&state, b"{}", &options).unwrap_err();
//! assert!(err.to_string().contains("state.json is a directory, not a regular file"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Platforms
//!
//! | | Linux | Windows | macOS |
//! |---|---|---|---|
//! | what runs | everything, tested natively | everything but the Unix parts; tests run under Wine 8, including a real in-use rename and removal | type-checked (`cargo check --target aarch64-apple-darwin`), not run |
//! | non-blocking open (`O_NONBLOCK` + `fstat`) | yes | metadata check before opening (no FIFOs or devices in the file system) | yes |
//! | [`FileMode`] | applied | ignored | applied |
//! | directory fsync | yes | nothing to do | yes |
//! | [`InUseRetry`] | never needed | rename: `ERROR_ACCESS_DENIED` (5); delete: `ERROR_SHARING_VIOLATION` (32); also 33 | never needed |
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod dir;
mod error;
mod kind;
mod read;
mod remove;
mod replace;
mod retry;
mod symlink;

pub use dir::{create_private_dir_all, sync_dir};
pub use error::FileError;
pub use kind::FileKind;
pub use read::{
    ensure_regular_or_missing, open_append_private, open_checked, open_regular, read_regular,
    tighten_mode,
};
pub use remove::{Removed, remove_durably};
pub use replace::{FileMode, ReplaceOptions, Replaced, replace};
pub use retry::InUseRetry;
pub use symlink::{MAX_SYMLINK_HOPS, resolve_symlinks, resolve_target};

/// Prints the visible skip line a unit test that cannot run on this platform must leave
/// (straight to stderr, past the test harness's capture).
#[cfg(test)]
#[allow(dead_code)] // only called where some test does not apply
fn skip(test: &str, reason: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIP: {test}: {reason}");
}
