//! Cross-process exclusive locks on lock files, through `fs4` (`flock(2)` on Unix,
//! `LockFileEx` on Windows) — the same primitive the Codex CLI uses, so our locks and its
//! locks exclude each other.
//!
//! A lock is held for as long as the [`FileLock`] value lives; dropping it (or the process
//! dying, even by `kill -9`) releases it. Lock files are never deleted: deleting a lock file
//! another process has open would let a third process lock a different inode.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Result, StorageError};

/// How long lock acquisition waits by default before giving up with
/// [`StorageError::LockTimeout`].
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// An exclusive lock on a lock file, released on drop.
///
/// ```
/// use auth_storage::lock::FileLock;
/// # fn main() -> Result<(), auth_storage::StorageError> {
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("pool.lock");
/// let guard = FileLock::acquire(&path, 0o600, std::time::Duration::from_secs(5))?;
/// // A second attempt cannot get it while `guard` lives…
/// assert!(FileLock::try_acquire(&path, 0o600)?.is_none());
/// drop(guard);
/// // …and can afterwards.
/// assert!(FileLock::try_acquire(&path, 0o600)?.is_some());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FileLock {
    file: File,
    path: PathBuf,
}

impl FileLock {
    /// Open (creating with `mode` on Unix if needed) and exclusively lock `path`, waiting at
    /// most `timeout`.
    pub fn acquire(path: &Path, mode: u32, timeout: Duration) -> Result<Self> {
        let file = open_lock_file(path, mode)?;
        let start = Instant::now();
        // Short sleeps first: most waits are for one small write by another process.
        let mut pause = Duration::from_micros(500);
        loop {
            match fs4::FileExt::try_lock(&file) {
                Ok(()) => {
                    return Ok(Self {
                        file,
                        path: path.to_path_buf(),
                    });
                }
                Err(fs4::TryLockError::WouldBlock) => {}
                Err(fs4::TryLockError::Error(e)) => {
                    return Err(StorageError::io("lock", path, e));
                }
            }
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(StorageError::LockTimeout {
                    path: path.to_path_buf(),
                    waited,
                });
            }
            std::thread::sleep(pause.min(timeout.saturating_sub(waited)));
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }

    /// Try once; `Ok(None)` when another holder has it.
    pub fn try_acquire(path: &Path, mode: u32) -> Result<Option<Self>> {
        let file = open_lock_file(path, mode)?;
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => Ok(Some(Self {
                file,
                path: path.to_path_buf(),
            })),
            Err(fs4::TryLockError::WouldBlock) => Ok(None),
            Err(fs4::TryLockError::Error(e)) => Err(StorageError::io("lock", path, e)),
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Closing the descriptor releases the lock anyway; unlocking first just makes the
        // release immediate even if the File were somehow duplicated.
        let _ = fs4::FileExt::unlock(&self.file);
    }
}

fn open_lock_file(path: &Path, mode: u32) -> Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        auth_core::regular_file::create_private_dir_all(dir)
            .map_err(|e| StorageError::io("create the directory", dir, e))?;
    }
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    // A FIFO, device or directory in place of the lock file is refused without blocking:
    // locking `/dev/zero` would "work" and exclude nobody.
    auth_core::regular_file::open_checked(path, &mut options)?.ok_or_else(|| {
        StorageError::io(
            "open the lock file",
            path,
            std::io::Error::from(std::io::ErrorKind::NotFound),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_out_naming_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let _held = FileLock::acquire(&path, 0o600, Duration::from_secs(1)).unwrap();
        let err = FileLock::acquire(&path, 0o600, Duration::from_millis(30)).unwrap_err();
        assert!(matches!(err, StorageError::LockTimeout { .. }), "{err}");
        assert!(err.to_string().contains("x.lock"));
    }

    #[test]
    fn threads_are_mutually_excluded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("count.lock");
        let counter = dir.path().join("count");
        std::fs::write(&counter, "0").unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..25 {
                        let _g = FileLock::acquire(&path, 0o600, Duration::from_secs(20)).unwrap();
                        let n: u32 = std::fs::read_to_string(&counter).unwrap().parse().unwrap();
                        std::thread::yield_now();
                        std::fs::write(&counter, (n + 1).to_string()).unwrap();
                    }
                });
            }
        });
        assert_eq!(std::fs::read_to_string(&counter).unwrap(), "100");
    }

    #[test]
    fn a_directory_at_the_lock_path_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("dir.lock");
        std::fs::create_dir(&sub).unwrap();
        let err = FileLock::try_acquire(&sub, 0o600).unwrap_err();
        assert!(
            matches!(err, StorageError::NotRegularFile { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("is a directory"), "{err}");
        assert!(sub.is_dir(), "left alone");
    }

    #[cfg(unix)]
    #[test]
    fn a_lock_path_that_is_not_a_regular_file_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.lock");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let err = FileLock::acquire(&fifo, 0o600, Duration::from_secs(1)).unwrap_err();
        assert!(
            matches!(err, StorageError::NotRegularFile { .. }),
            "{err:?}"
        );
        let zero = dir.path().join("zero.lock");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let err = FileLock::try_acquire(&zero, 0o600).unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
        let sub = dir.path().join("dir.lock");
        std::fs::create_dir(&sub).unwrap();
        let err = FileLock::try_acquire(&sub, 0o600).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn missing_lock_directories_are_created_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/x.lock");
        drop(FileLock::acquire(&path, 0o600, Duration::from_secs(1)).unwrap());
        for d in ["a", "a/b"] {
            let mode = std::fs::metadata(dir.path().join(d))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{d}");
        }
    }
}
