//! Durable removal of a file (I/O): unlink (retried while Windows reports the file in use),
//! then fsync the directory.

use std::path::Path;

use crate::dir::{parent_dir, sync_dir};
use crate::error::FileError;
use crate::retry::{InUseRetry, RetryFailure, is_in_use, is_read_only, retry_while_in_use};

/// What [`remove_durably`] did.
#[derive(Debug)]
#[non_exhaustive]
pub struct Removed {
    /// Whether there was anything to remove.
    pub existed: bool,
    /// How many tries it took (more than 1 when Windows reported the file in use).
    pub attempts: u32,
    /// Why the directory could not be fsynced after the removal, if it could not. The file
    /// *is* gone for every reader; log it, do not undo.
    pub dir_sync_error: Option<FileError>,
}

/// Remove the file at `path` (a symlink there is removed as a link: resolve it first with
/// [`resolve_symlinks`](crate::resolve_symlinks) to remove its target) and fsync its
/// directory (Unix), so a crash cannot bring it back. A missing file is not an error.
///
/// On Windows a file another process holds open without `FILE_SHARE_DELETE` cannot be
/// deleted; the removal is retried as `retry` says.
///
/// # Errors
/// [`FileError::NotRegular`] for a directory (left alone; Windows would report it as
/// "access denied", which must not be mistaken for a file in use),
/// [`FileError::StillInUse`] when Windows kept reporting the file in use through every
/// attempt, [`FileError::Io`] when it cannot be removed (the file is then still there).
///
/// ```
/// use atomic_file::{InUseRetry, remove_durably};
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("config.toml.revert.json");
/// std::fs::write(&path, b"{}")?;
/// assert!(remove_durably(&path, InUseRetry::default())?.existed);
/// assert!(!path.exists());
/// assert!(!remove_durably(&path, InUseRetry::default())?.existed); // already gone: fine
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn remove_durably(path: &Path, retry: InUseRetry) -> Result<Removed, FileError> {
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.is_dir()
    {
        return Err(FileError::NotRegular {
            path: path.to_path_buf(),
            kind: crate::FileKind::Directory,
        });
    }
    let mut existed = true;
    let attempts = retry_while_in_use(
        (),
        retry,
        |e| is_in_use(e, path),
        |()| match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                existed = false;
                Ok(())
            }
            Err(e) => Err(((), e)),
        },
        std::thread::sleep,
    )
    .map_err(|failure| match failure {
        RetryFailure::InUse { attempts, source } => FileError::StillInUse {
            action: "remove",
            path: path.to_path_buf(),
            attempts,
            source,
        },
        // Windows refuses to delete a read-only file; say so rather than "access denied".
        RetryFailure::Other(source) if cfg!(windows) && is_read_only(path) => {
            FileError::io("remove the read-only file", path, source)
        }
        RetryFailure::Other(source) => FileError::io("remove", path, source),
    })?;
    let dir_sync_error = if existed {
        sync_dir(parent_dir(path)).err()
    } else {
        None
    };
    Ok(Removed {
        existed,
        attempts,
        dir_sync_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_is_removed_as_a_link() {
        #[cfg(unix)]
        {
            let dir = tempfile::tempdir().unwrap();
            let real = dir.path().join("real");
            std::fs::write(&real, b"x").unwrap();
            let link = dir.path().join("link");
            std::os::unix::fs::symlink(&real, &link).unwrap();
            let removed = remove_durably(&link, InUseRetry::none()).unwrap();
            assert!(removed.existed);
            assert_eq!(removed.attempts, 1);
            assert!(removed.dir_sync_error.is_none());
            assert!(std::fs::symlink_metadata(&link).is_err());
            assert!(real.exists());
        }
        #[cfg(not(unix))]
        crate::skip(
            "a_symlink_is_removed_as_a_link",
            "symlinks need privileges on Windows",
        );
    }

    #[test]
    fn a_directory_is_not_removed_and_the_error_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let err = remove_durably(&sub, InUseRetry::default()).unwrap_err();
        assert!(
            matches!(
                err,
                FileError::NotRegular {
                    kind: crate::FileKind::Directory,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("sub is a directory"), "{err}");
        assert!(sub.is_dir());
    }
}
