//! Crash-safe file replacement: temp file in the same directory, write, fsync, rename, fsync
//! the directory.
//!
//! A reader (or a crash at any instant) sees either the complete old file or the complete new
//! one, never a mix, and the file is never readable by others, even briefly: the temporary file
//! is created with mode 0600 before any byte is written, so the result is 0600 whatever the
//! old file's mode or the umask.
//!
//! What is at the path is checked first:
//!
//! * a **symlink** is followed and kept: its final target is replaced atomically in the
//!   target's own directory (the Codex CLI follows the link too, so both keep writing the
//!   same file);
//! * a **FIFO, socket, device or directory** (directly or as a symlink's target) is refused
//!   with [`StorageError::NotRegularFile`](crate::StorageError::NotRegularFile) and left alone — never written through, never
//!   replaced;
//! * a **missing directory** is created with mode 0700, missing parents too. Directories
//!   that already exist keep the mode their owner gave them.
//!
//! Reads (`read_if_exists`) open without blocking, accept only regular files and stop at a
//! size limit given per kind of file.
//!
//! On Windows a rename over (or removal of) a file another process has open is retried
//! with a bounded backoff, then refused with
//! [`StorageError::StillInUse`](crate::StorageError::StillInUse).
//!
//! The work is done by the workspace's [`atomic_file`] crate (shared with
//! `config-rewrite`); this module fixes this crate's choices (mode 0600, the default retry,
//! a warning log when the directory fsync after a rename fails) and maps its errors into
//! [`StorageError`](crate::StorageError).

use std::path::{Path, PathBuf};

use atomic_file::{InUseRetry, ReplaceOptions};

use crate::error::Result;

/// Replace `path` with `bytes` atomically. The file ends up with mode 0600 on Unix.
///
/// `temp_prefix` names the temporary file (e.g. `.auth-` like the Codex CLI does) so a stray
/// temp left by a crash is recognisable. The work is [`atomic_file::replace`] with
/// [`FileMode::Private`](atomic_file::FileMode::Private) and the default
/// [`InUseRetry`].
///
/// # Errors
/// [`StorageError::Io`](crate::StorageError::Io) naming the file or directory that failed
/// (the old file is then untouched and the temporary file removed: an error always means
/// the file was not replaced, so the fsync of the directory after the rename is only logged
/// when it fails); [`StorageError::StillInUse`](crate::StorageError::StillInUse) when
/// Windows kept reporting the target as open by another process through every retry;
/// [`StorageError::NotRegularFile`](crate::StorageError::NotRegularFile) when something
/// other than a regular file is there.
///
/// ```
/// # #[cfg(unix)] {
/// let dir = tempfile::tempdir().unwrap();
/// let real = dir.path().join("real-auth.json");
/// let link = dir.path().join("auth.json");
/// std::os::unix::fs::symlink(&real, &link).unwrap();
/// auth_storage::atomic::write_atomic(&link, b"{}", ".auth-").unwrap();
/// // The link is kept and its target holds the new bytes.
/// assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
/// assert_eq!(std::fs::read(&real).unwrap(), b"{}");
/// # }
/// ```
pub fn write_atomic(path: &Path, bytes: &[u8], temp_prefix: &str) -> Result<()> {
    let done = atomic_file::replace(path, bytes, &ReplaceOptions::new(temp_prefix))?;
    if let Some(err) = done.dir_sync_error {
        // ok: the rename has happened and every reader sees the new file. Reporting a
        // failure now would make callers undo or retry a write that took effect; a lost
        // directory fsync only matters if the machine crashes before the next one.
        tracing::warn!(%err, file = %crate::error::shown(&done.target), "replaced, but the directory fsync failed");
    }
    Ok(())
}

/// Make a rename durable: fsync the directory that holds the entry (Unix only; Windows has
/// no directory handles to sync and NTFS journals metadata).
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    Ok(atomic_file::sync_dir(dir)?)
}

/// The file a write to `path` replaces: `path`'s final symlink target (or `path` itself),
/// checked to be a regular file or missing; a refusal names `path`.
pub(crate) fn resolve_target(path: &Path) -> Result<PathBuf> {
    Ok(atomic_file::resolve_target(path)?)
}

/// Read a whole regular file of at most `limit` bytes; `Ok(None)` when it does not exist.
/// Never blocks (a FIFO is refused at once) and never reads past `limit`.
pub(crate) fn read_if_exists(path: &Path, limit: u64) -> Result<Option<Vec<u8>>> {
    Ok(atomic_file::read_regular(path, limit)?)
}

/// Remove a file durably (its directory fsynced; on Windows retried while another process
/// has it open); `Ok(false)` when it did not exist.
pub(crate) fn remove_if_exists(path: &Path) -> Result<bool> {
    let removed = atomic_file::remove_durably(path, InUseRetry::default())?;
    if let Some(err) = removed.dir_sync_error {
        // ok: the file is gone for every reader; as for `write_atomic`, do not report a
        // change that took effect as a failure.
        tracing::warn!(%err, file = %crate::error::shown(path), "removed, but the directory fsync failed");
    }
    Ok(removed.existed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        write_atomic(&path, b"one", ".auth-").unwrap();
        write_atomic(&path, b"two", ".auth-").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("auth.json")]);
    }

    #[cfg(unix)]
    #[test]
    fn file_is_private_even_when_umask_is_open() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        // A pre-existing world-readable file must not keep its mode.
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&path, b"new", ".auth-").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn failure_names_the_path_and_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        // Target is a directory: the rename must fail and the error must say where.
        let target = dir.path().join("occupied");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("keep"), b"x").unwrap();
        let err = write_atomic(&target, b"new", ".t-").unwrap_err();
        assert!(err.to_string().contains("occupied"), "{err}");
        assert!(target.join("keep").exists());
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "temporary file must be cleaned up");
    }
}
