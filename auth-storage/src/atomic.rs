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
//!   with [`StorageError::NotRegularFile`] and left alone — never written through, never
//!   replaced;
//! * a **missing directory** is created with mode 0700, missing parents too. Directories
//!   that already exist keep the mode their owner gave them.
//!
//! Reads (`read_if_exists`) open without blocking, accept only regular files and stop at a
//! size limit given per kind of file.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::error::{Result, StorageError};

/// How many times a rename is retried when Windows reports a sharing violation (another
/// process, often an anti-virus scanner or the Codex CLI, has the target open).
pub(crate) const RENAME_ATTEMPTS: u32 = 10;
const RENAME_BACKOFF: Duration = Duration::from_millis(20);

/// Replace `path` with `bytes` atomically. The file ends up with mode 0600 on Unix.
///
/// `temp_prefix` names the temporary file (e.g. `.auth-` like the Codex CLI does) so a stray
/// temp left by a crash is recognisable.
///
/// # Errors
/// [`StorageError::Io`] naming the file or directory that failed (the old file is then
/// untouched and the temporary file removed: an error always means the file was not
/// replaced, so the fsync of the directory after the rename is only logged when it fails);
/// [`StorageError::StillInUse`] when Windows kept
/// reporting the target as open by another process through every retry;
/// [`StorageError::NotRegularFile`] when something other than a regular file is there.
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
    let target = resolve_target(path)?;
    let path = target.as_path();
    let dir = parent_dir(path);
    auth_core::regular_file::create_private_dir_all(dir)
        .map_err(|e| StorageError::io("create the directory", dir, e))?;
    // tempfile creates the file with O_EXCL and mode 0600 on Unix.
    let mut temp = tempfile::Builder::new()
        .prefix(temp_prefix)
        .tempfile_in(dir)
        .map_err(|e| StorageError::io("create a temporary file in", dir, e))?;
    temp.write_all(bytes)
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|e| StorageError::io("write a temporary file in", dir, e))?;
    rename_with_retry(temp, path)?;
    if let Err(err) = sync_dir(dir) {
        // ok: the rename has happened and every reader sees the new file. Reporting a
        // failure now would make callers undo or retry a write that took effect; a lost
        // directory fsync only matters if the machine crashes before the next one.
        tracing::warn!(%err, file = %crate::error::shown(path), "replaced, but the directory fsync failed");
    }
    Ok(())
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn rename_with_retry(temp: tempfile::NamedTempFile, path: &Path) -> Result<()> {
    retry_rename(
        temp,
        path,
        RENAME_ATTEMPTS,
        is_sharing_violation,
        |temp, path| {
            temp.persist(path)
                .map(|_| ())
                .map_err(|e| (e.file, e.error))
        },
    )
}

/// The retry loop of [`rename_with_retry`], with the rename and the "is it transient?"
/// decision passed in so it can be exercised on every platform.
///
/// `rename` gives the temporary file back with its error; dropping it on the final failure
/// removes the temporary file.
fn retry_rename<T>(
    mut temp: T,
    path: &Path,
    attempts: u32,
    transient: impl Fn(&std::io::Error) -> bool,
    mut rename: impl FnMut(T, &Path) -> std::result::Result<(), (T, std::io::Error)>,
) -> Result<()> {
    let mut attempt = 1;
    loop {
        match rename(temp, path) {
            Ok(()) => return Ok(()),
            Err((file, error)) if transient(&error) => {
                if attempt >= attempts {
                    return Err(StorageError::StillInUse {
                        path: path.to_path_buf(),
                        attempts,
                        source: error,
                    });
                }
                temp = file;
                attempt += 1;
                std::thread::sleep(RENAME_BACKOFF * attempt);
            }
            Err((_file, error)) => {
                return Err(StorageError::io(
                    "rename a temporary file over",
                    path,
                    error,
                ));
            }
        }
    }
}

/// Windows reports a file another process has open as EBUSY/EPERM/EACCES-like errors
/// (ERROR_SHARING_VIOLATION, ERROR_ACCESS_DENIED, ERROR_LOCK_VIOLATION); they are transient.
/// On Unix a rename never fails for that reason, so nothing is retried there.
fn is_sharing_violation(err: &std::io::Error) -> bool {
    if cfg!(windows) {
        matches!(
            err.kind(),
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ResourceBusy
        ) || matches!(err.raw_os_error(), Some(5 | 32 | 33))
    } else {
        false
    }
}

/// Make a rename durable: fsync the directory that holds the entry (Unix only; Windows has
/// no directory handles to sync and NTFS journals metadata).
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StorageError::io("fsync the directory", dir, e))?;
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
    }
    Ok(())
}

/// The file a write to `path` replaces: `path`'s final symlink target (or `path` itself),
/// checked to be a regular file or missing.
pub(crate) fn resolve_target(path: &Path) -> Result<std::path::PathBuf> {
    let target = auth_core::regular_file::resolve_symlinks(path)?;
    match auth_core::regular_file::ensure_regular_or_missing(&target) {
        Ok(()) => Ok(target),
        // Name the path the caller knows, not the link target.
        Err(auth_core::regular_file::FileError::NotRegular { kind, .. }) => {
            Err(StorageError::NotRegularFile {
                path: path.to_path_buf(),
                kind,
            })
        }
        Err(other) => Err(other.into()),
    }
}

/// Read a whole regular file of at most `limit` bytes; `Ok(None)` when it does not exist.
/// Never blocks (a FIFO is refused at once) and never reads past `limit`.
pub(crate) fn read_if_exists(path: &Path, limit: u64) -> Result<Option<Vec<u8>>> {
    Ok(auth_core::regular_file::read_regular(path, limit)?)
}

/// Remove a file; `Ok(false)` when it did not exist.
pub(crate) fn remove_if_exists(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StorageError::io("remove", path, e)),
    }
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

    fn sharing_violation() -> std::io::Error {
        // ERROR_SHARING_VIOLATION as Windows reports it.
        std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "The process cannot access the file because it is being used by another process. \
             (os error 32)",
        )
    }

    #[test]
    fn a_transient_rename_failure_is_retried_until_it_succeeds() {
        let mut calls = 0;
        let result = retry_rename(
            "temp",
            Path::new("/x/auth.json"),
            RENAME_ATTEMPTS,
            |e| e.kind() == std::io::ErrorKind::PermissionDenied,
            |t, _| {
                calls += 1;
                if calls < 3 {
                    Err((t, sharing_violation()))
                } else {
                    Ok(())
                }
            },
        );
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(calls, 3);
    }

    #[test]
    fn giving_up_reports_the_real_cause_and_how_often_it_tried() {
        let mut calls = 0;
        let err = retry_rename(
            "temp",
            Path::new("/x/auth.json"),
            4,
            |e| e.kind() == std::io::ErrorKind::PermissionDenied,
            |t, _| {
                calls += 1;
                Err((t, sharing_violation()))
            },
        )
        .unwrap_err();
        assert_eq!(calls, 4, "bounded");
        let text = err.to_string();
        assert!(
            matches!(err, StorageError::StillInUse { attempts: 4, .. }),
            "{err:?}"
        );
        assert!(text.contains("/x/auth.json"), "{text}");
        assert!(text.contains("4 attempts"), "{text}");
        assert!(text.contains("os error 32"), "the cause is kept: {text}");
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn a_permanent_rename_failure_is_not_retried() {
        let mut calls = 0;
        let err = retry_rename(
            "temp",
            Path::new("/x/auth.json"),
            RENAME_ATTEMPTS,
            |_| false,
            |t, _| {
                calls += 1;
                Err((t, std::io::Error::other("read-only file system")))
            },
        )
        .unwrap_err();
        assert_eq!(calls, 1);
        assert!(err.to_string().contains("read-only file system"), "{err}");
    }

    #[test]
    fn only_windows_treats_access_errors_as_sharing_violations() {
        let busy = std::io::Error::from_raw_os_error(32);
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(is_sharing_violation(&busy), cfg!(windows));
        assert_eq!(is_sharing_violation(&denied), cfg!(windows));
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
