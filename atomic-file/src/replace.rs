//! Crash-safe replacement of a whole file (I/O): temporary file in the same directory,
//! write, fsync, rename over the target (retried while Windows reports it in use), fsync
//! the directory.
//!
//! A reader, or a crash at any instant, sees either the complete old file or the complete
//! new one, never a mix. An error means the file was *not* replaced: the old file is intact
//! and the temporary file removed. The directory fsync after the rename is the one step
//! that can fail after the change took effect; it is reported in [`Replaced`], not as an
//! error, so that callers never undo or redo a write that happened.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::dir::{create_private_dir_all, parent_dir, sync_dir};
use crate::error::FileError;
use crate::retry::{InUseRetry, RetryFailure, is_in_use, is_read_only, retry_while_in_use};
use crate::symlink::resolve_target;

/// The permission bits the replaced file gets (Unix). The temporary file is created with
/// mode 0600 and set to the chosen mode before any byte is written, so the contents are
/// never readable by more people than the final mode allows, whatever the umask.
///
/// On Windows files have no Unix mode: every choice gives the new file the default access
/// of a file created in its directory (the read-only attribute of the old file is not
/// carried over).
///
/// ```
/// use atomic_file::FileMode;
/// assert_eq!(FileMode::default(), FileMode::Private);
/// let config = FileMode::Keep { new: 0o600 }; // keep the user's mode, 0600 for a new file
/// # let _ = config;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FileMode {
    /// 0600, whatever the old file's mode: for credentials and other private state.
    #[default]
    Private,
    /// The replaced file's permission bits (`mode & 0o7777` of the symlink's final target);
    /// `new` when there is no file yet. For files the user owns and may have shared, such
    /// as a configuration file.
    Keep {
        /// The mode of a file that did not exist before.
        new: u32,
    },
    /// Exactly these bits (`& 0o7777`), set with `fchmod`, so the umask does not apply.
    Exact(u32),
}

impl FileMode {
    /// The bits for a replacement of `target`.
    #[cfg(unix)]
    fn bits_for(self, target: &Path) -> Result<u32, FileError> {
        use std::os::unix::fs::PermissionsExt as _;
        match self {
            Self::Private => Ok(0o600),
            Self::Exact(mode) => Ok(mode & 0o7777),
            Self::Keep { new } => match std::fs::metadata(target) {
                Ok(meta) => Ok(meta.permissions().mode() & 0o7777),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(new & 0o7777),
                Err(e) => Err(FileError::io("inspect", target, e)),
            },
        }
    }
}

/// How [`replace`] names its temporary file, which [`FileMode`] the result gets and how it
/// retries while the target is in use.
///
/// ```
/// use atomic_file::{FileMode, InUseRetry, ReplaceOptions};
/// // Credentials: private, temp files recognisable as ours (`.auth-XXXXXX`).
/// let auth = ReplaceOptions::new(".auth-");
/// // A user's configuration: keep its mode; `.config-rewrite-XXXXXX.tmp`; fail fast.
/// let config = ReplaceOptions::new(".config-rewrite-")
///     .temp_suffix(".tmp")
///     .mode(FileMode::Keep { new: 0o600 })
///     .retry(InUseRetry::none());
/// # let _ = (auth, config);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplaceOptions {
    temp_prefix: String,
    temp_suffix: String,
    mode: FileMode,
    retry: InUseRetry,
}

impl ReplaceOptions {
    /// Temporary files named `<temp_prefix><6 random characters>` in the target's
    /// directory, so one left by a crash is recognisable (start it with `.` to hide it);
    /// [`FileMode::Private`]; [`InUseRetry::default`].
    ///
    /// ```
    /// let options = atomic_file::ReplaceOptions::new(".pool-");
    /// # let _ = options;
    /// ```
    pub fn new(temp_prefix: impl Into<String>) -> Self {
        Self {
            temp_prefix: temp_prefix.into(),
            temp_suffix: String::new(),
            mode: FileMode::Private,
            retry: InUseRetry::default(),
        }
    }

    /// A suffix after the random part of the temporary file's name (e.g. `.tmp`).
    ///
    /// ```
    /// let options = atomic_file::ReplaceOptions::new(".x-").temp_suffix(".tmp");
    /// # let _ = options;
    /// ```
    #[must_use]
    pub fn temp_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.temp_suffix = suffix.into();
        self
    }

    /// The permission bits of the result (Unix).
    ///
    /// ```
    /// let options = atomic_file::ReplaceOptions::new(".x-").mode(atomic_file::FileMode::Exact(0o644));
    /// # let _ = options;
    /// ```
    #[must_use]
    pub fn mode(mut self, mode: FileMode) -> Self {
        self.mode = mode;
        self
    }

    /// How the rename is retried while Windows reports the target in use.
    ///
    /// ```
    /// use std::time::Duration;
    /// let options = atomic_file::ReplaceOptions::new(".x-")
    ///     .retry(atomic_file::InUseRetry::new(3, Duration::from_millis(10)));
    /// # let _ = options;
    /// ```
    #[must_use]
    pub fn retry(mut self, retry: InUseRetry) -> Self {
        self.retry = retry;
        self
    }

    /// Refuses a prefix or suffix that would put the temporary file in another directory.
    fn check_affixes(&self, dir: &Path) -> Result<(), FileError> {
        let has_separator = |s: &str| s.chars().any(std::path::is_separator);
        if has_separator(&self.temp_prefix) || has_separator(&self.temp_suffix) {
            return Err(FileError::io(
                "create a temporary file in",
                dir,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the temporary file's prefix or suffix holds a path separator",
                ),
            ));
        }
        Ok(())
    }
}

impl Default for ReplaceOptions {
    /// `ReplaceOptions::new(".tmp-")`.
    fn default() -> Self {
        Self::new(".tmp-")
    }
}

/// What [`replace`] did.
#[derive(Debug)]
#[non_exhaustive]
pub struct Replaced {
    /// The file that was replaced: the path given, or its final symlink target (the link
    /// itself is kept).
    pub target: PathBuf,
    /// How many renames it took (more than 1 when Windows reported the target in use and
    /// the retry waited for it).
    pub attempts: u32,
    /// Why the directory could not be fsynced after the rename, if it could not. The file
    /// *was* replaced and every reader sees the new contents; only a machine crash before
    /// the directory reaches the disk could bring the old file back. Log it; do not undo.
    pub dir_sync_error: Option<FileError>,
}

/// Replace the file at `path` with `bytes`, atomically and durably.
///
/// What is at `path` is checked first:
///
/// * a **symlink** is followed and kept: its final target is replaced, in the target's own
///   directory (the rename must stay in one file system);
/// * a **directory, FIFO, socket or device** (directly or as a symlink's target) is refused
///   with [`FileError::NotRegular`] naming `path`, and left alone: never written through,
///   never replaced;
/// * a **missing directory** is created with mode 0700, missing parents too.
///
/// Then a temporary file is created beside the target (named by the options, mode 0600,
/// then the chosen [`FileMode`]), written, fsynced, renamed over the target (on Windows
/// retried while another process has the target open, see [`InUseRetry`]), and the
/// directory is fsynced (Unix).
///
/// This is blocking I/O (and on Windows may sleep in the retry); async callers should use
/// `spawn_blocking`.
///
/// # Errors
/// Any error means the file was not replaced (the old one is intact, the temporary file
/// removed): [`FileError::NotRegular`], [`FileError::SymlinkLoop`],
/// [`FileError::StillInUse`] when Windows kept reporting the target in use through every
/// attempt, [`FileError::Io`] naming the file or directory that failed.
///
/// ```
/// use atomic_file::{FileMode, ReplaceOptions, replace};
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("state/auth.json");
/// let options = ReplaceOptions::new(".auth-");
/// let done = replace(&path, b"{\"v\":1}", &options)?; // creates state/ (0700) and the file
/// assert_eq!(done.target, path);
/// replace(&path, b"{\"v\":2}", &options)?;
/// assert_eq!(std::fs::read(&path)?, b"{\"v\":2}");
/// # #[cfg(unix)] {
/// use std::os::unix::fs::PermissionsExt as _;
/// assert_eq!(std::fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
/// # }
/// // Only the file is there: no temporary file is left behind.
/// assert_eq!(std::fs::read_dir(path.parent().unwrap())?.count(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn replace(path: &Path, bytes: &[u8], options: &ReplaceOptions) -> Result<Replaced, FileError> {
    let target = resolve_target(path)?;
    let dir = parent_dir(&target);
    options.check_affixes(dir)?;
    create_private_dir_all(dir)?;
    #[cfg(unix)]
    let mode = options.mode.bits_for(&target)?;
    // Our own open (create_new: O_EXCL / CREATE_NEW, mode 0600 on Unix) rather than
    // tempfile's: on Windows tempfile marks its files FILE_ATTRIBUTE_TEMPORARY and clears
    // that only in its own persist, so the renamed file would keep it (the system may then
    // hold later writes to it in cache, and backup tools skip such files).
    let mut temp = tempfile::Builder::new()
        .prefix(&options.temp_prefix)
        .suffix(&options.temp_suffix)
        .make_in(dir, |path| {
            let mut open = std::fs::OpenOptions::new();
            open.read(true).write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
            open.open(path)
        })
        .map_err(|e| FileError::io("create a temporary file in", dir, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        // Before any byte is written: the contents are never more readable than `mode`.
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| FileError::io("set the permissions of a temporary file in", dir, e))?;
    }
    temp.write_all(bytes)
        .map_err(|e| FileError::io("write a temporary file in", dir, e))?;
    temp.as_file()
        .sync_all()
        .map_err(|e| FileError::io("fsync a temporary file in", dir, e))?;
    let attempts = retry_while_in_use(
        temp,
        options.retry,
        |e| is_in_use(e, &target),
        // `std::fs::rename`, not tempfile's `persist` (`MoveFileExW` on Windows): on Windows
        // 10 and later std renames with POSIX semantics, which replaces a file that another
        // process holds open with `FILE_SHARE_DELETE` (as Rust programs, the Codex CLI among
        // them, open files) instead of failing; it falls back to `MoveFileExW` elsewhere.
        // On Unix both are rename(2).
        |temp: tempfile::NamedTempFile<std::fs::File>| match std::fs::rename(temp.path(), &target) {
            Ok(()) => {
                // The temporary name is gone; nothing is left for the guard to delete.
                let _ = temp.into_temp_path().keep();
                Ok(())
            }
            Err(error) => Err((temp, error)),
        },
        std::thread::sleep,
    )
    .map_err(|failure| match failure {
        RetryFailure::InUse { attempts, source } => FileError::StillInUse {
            action: "replace",
            path: target.clone(),
            attempts,
            source,
        },
        // Windows refuses to replace a read-only file; say so rather than "access denied".
        RetryFailure::Other(source) if cfg!(windows) && is_read_only(&target) => {
            FileError::io("replace the read-only file", &target, source)
        }
        RetryFailure::Other(source) => {
            FileError::io("rename a temporary file over", &target, source)
        }
    })?;
    let dir_sync_error = sync_dir(dir).err();
    Ok(Replaced {
        target,
        attempts,
        dir_sync_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_with_a_separator_is_refused_before_anything_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/auth.json");
        for options in [
            ReplaceOptions::new("../escape-"),
            ReplaceOptions::new(".x-").temp_suffix("/y"),
        ] {
            let err = replace(&path, b"x", &options).unwrap_err();
            assert!(err.to_string().contains("path separator"), "{err}");
        }
        assert!(!dir.path().join("sub").exists());
    }

    #[test]
    fn the_options_say_what_they_hold() {
        let options = ReplaceOptions::new(".a-")
            .temp_suffix(".tmp")
            .mode(FileMode::Exact(0o640))
            .retry(InUseRetry::none());
        assert_eq!(options.temp_prefix, ".a-");
        assert_eq!(options.temp_suffix, ".tmp");
        assert_eq!(options.mode, FileMode::Exact(0o640));
        assert_eq!(options.retry, InUseRetry::none());
        assert_eq!(ReplaceOptions::default().mode, FileMode::Private);
    }
}
