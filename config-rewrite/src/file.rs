//! The I/O shell: read, edit and atomically replace `config.toml`; keep revert records on disk.
//!
//! A failed operation changes nothing. [`RevertFile`] keeps two files in step, the
//! configuration and its revert record, always under the edit lock on the configuration's
//! directory, in this order:
//!
//! | operation | step 1 | step 2 | step 1 fails | step 2 fails |
//! |-----------|--------|--------|--------------|--------------|
//! | [`RevertFile::apply`] | write the record | replace the configuration | error, nothing changed | record deleted again: [`Error::RolledBack`] (or [`Error::PartiallyApplied`]: record left, configuration unchanged) |
//! | [`RevertFile::restore`] | replace the configuration | delete the record | error, nothing changed, record kept | configuration put back: [`Error::RolledBack`] (or [`Error::PartiallyApplied`]: configuration restored, record left) |
//!
//! The record is written first on apply so that a crash between the steps leaves a way
//! back; it is deleted last on restore for the same reason. Each file is replaced
//! atomically, and a replacement only fails before its rename (the directory fsync after
//! it is best-effort), so a reported failure never hides a change that took effect. A
//! concurrent writer of the configuration (Codex, an editor) is detected by re-reading just
//! before the rename; our edit is recomputed on top of its change, never over it.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use atomic_file::{FileMode, InUseRetry, ReplaceOptions};

use crate::edit::{RestoreOutcome, apply_to_str, restore_str};
use crate::error::{EditError, Error, line_col};
use crate::provider::Rewrite;
use crate::record::RevertRecord;

/// How many times an edit is recomputed when another writer changes the file meanwhile.
const ATTEMPTS: usize = 3;

/// How long to wait for another process that holds the edit lock.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// What [`restore`] did to which file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestoreReport {
    /// The configuration file.
    pub config: PathBuf,
    /// What happened to it.
    pub outcome: RestoreOutcome,
}

/// Applies `rewrite` to the file at `config` and returns the record that undoes it.
///
/// The file is read, edited in memory, checked, and replaced atomically (temporary file in the
/// same directory, fsync, rename, fsync of the directory), keeping its permission bits. A
/// missing file is created (mode 0600); a symlink is followed and its target replaced. A file
/// that is not valid TOML is refused with its line and column and left untouched. Applying
/// the same rewrite twice writes nothing the second time. The read-modify-write runs under the
/// edit lock of the file's directory ([`EDIT_LOCK_FILE`]; waits up to 10 s for another of our
/// processes), and the file is re-read just before the rename so a concurrent writer's change
/// is not lost.
///
/// Keep the returned record somewhere safe *before* relying on the edit — or use
/// [`RevertFile::apply`], which stores it beside the configuration first so a crashed
/// program can restore on its next start.
///
/// This is blocking I/O; async callers should use `spawn_blocking`.
///
/// # Errors
/// [`Error::Config`] for invalid TOML or a refused edit, [`Error::Io`] when the file cannot be
/// read or replaced, [`Error::StillInUse`] when Windows kept reporting it open by another
/// program through every retry, [`Error::ConcurrentModification`] when another writer keeps
/// changing it.
///
/// ```
/// use config_rewrite::{ProviderSpec, Rewrite, Target};
/// let dir = tempfile::tempdir()?;
/// let config = dir.path().join("config.toml");
/// std::fs::write(&config, "model = \"o3\"\n")?;
/// let rewrite = Rewrite::route_to(ProviderSpec::new("proxy", "http://127.0.0.1:9/v1"), Target::TopLevel);
/// let record = config_rewrite::apply(&config, &rewrite)?;
/// assert!(std::fs::read_to_string(&config)?.contains("[model_providers.proxy]"));
/// config_rewrite::restore(&record)?;
/// assert_eq!(std::fs::read_to_string(&config)?, "model = \"o3\"\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn apply(config: &Path, rewrite: &Rewrite) -> Result<RevertRecord, Error> {
    check_input(config, rewrite)?;
    let target = resolve(config)?;
    let _lock = EditLock::acquire(&target)?;
    let (record, _) = apply_locked(config, &target, rewrite, |_| Ok(()))?;
    Ok(record)
}

/// Refuses a rewrite whose own text is unusable before any file is looked at, so a bad
/// argument is reported as such whatever is on disk.
fn check_input(config: &Path, rewrite: &Rewrite) -> Result<(), Error> {
    rewrite.validate().map_err(|source| Error::Config {
        path: config.to_path_buf(),
        source,
    })
}

/// Applies (the caller holds the lock), calling `before_write` with the record after
/// everything was checked and just before the configuration is replaced (used to persist the
/// record first).
fn apply_locked(
    config: &Path,
    target: &Path,
    rewrite: &Rewrite,
    mut before_write: impl FnMut(&RevertRecord) -> Result<(), Error>,
) -> Result<(RevertRecord, bool), Error> {
    // Record an absolute path: a restore may run from another working directory.
    let recorded = std::path::absolute(config).unwrap_or_else(|_| config.to_path_buf());
    for _ in 0..ATTEMPTS {
        let current = read_text(target)?;
        let applied = apply_to_str(&recorded, current.as_deref(), rewrite).map_err(|source| {
            Error::Config {
                path: config.to_path_buf(),
                source,
            }
        })?;
        let changed = applied.changed();
        let (text, record) = applied.into_parts();
        if !changed {
            return Ok((record, false));
        }
        before_write(&record)?;
        match replace_if_unchanged(target, current.as_deref(), Some(&text))? {
            true => return Ok((record, true)),
            false => continue,
        }
    }
    Err(Error::ConcurrentModification {
        path: config.to_path_buf(),
    })
}

/// Undoes the apply described by `record` on the file it names (see [`restore_str`] for the
/// rules). Restoring twice is harmless.
///
/// This is blocking I/O; async callers should use `spawn_blocking`.
///
/// # Errors
/// [`Error::Config`] when the file was made invalid since (it is left alone),
/// [`Error::Io`] when it cannot be read or replaced, [`Error::StillInUse`] when Windows kept
/// reporting it open by another program through every retry.
///
/// ```
/// use config_rewrite::{ProviderSpec, RestoreOutcome, Rewrite, Target};
/// let dir = tempfile::tempdir()?;
/// let config = dir.path().join("config.toml");
/// let rewrite = Rewrite::route_to(ProviderSpec::new("proxy", "http://127.0.0.1:9/v1"), Target::TopLevel);
/// let record = config_rewrite::apply(&config, &rewrite)?; // creates the file
/// let report = config_rewrite::restore(&record)?;          // removes it again
/// assert_eq!(report.outcome, RestoreOutcome::Exact);
/// assert!(!config.exists());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn restore(record: &RevertRecord) -> Result<RestoreReport, Error> {
    let target = resolve(record.config())?;
    let _lock = EditLock::acquire(&target)?;
    restore_locked(record, &target).map(|(report, _)| report)
}

/// The text a restore replaced (`None`: no file) and the text it wrote (`None`: removed).
struct Replaced {
    before: Option<String>,
    after: Option<String>,
}

/// Restores (the caller holds the lock); says what it replaced, `None` when it wrote nothing.
fn restore_locked(
    record: &RevertRecord,
    target: &Path,
) -> Result<(RestoreReport, Option<Replaced>), Error> {
    let config = record.config();
    for _ in 0..ATTEMPTS {
        let current = read_text(target)?;
        let restored = restore_str(current.as_deref(), record).map_err(|source| Error::Config {
            path: config.to_path_buf(),
            source,
        })?;
        let (text, outcome) = restored.into_parts();
        let report = RestoreReport {
            config: config.to_path_buf(),
            outcome,
        };
        if text.as_deref() == current.as_deref() {
            return Ok((report, None));
        }
        if replace_if_unchanged(target, current.as_deref(), text.as_deref())? {
            let replaced = Replaced {
                before: current,
                after: text,
            };
            return Ok((report, Some(replaced)));
        }
    }
    Err(Error::ConcurrentModification {
        path: config.to_path_buf(),
    })
}

/// Where a revert record lives on disk, normally right beside the configuration
/// (`config.toml.revert.json`), so that a program that crashed while its rewrite was in place
/// finds and undoes it on the next start.
///
/// The flow for a tool that routes Codex through itself while it runs:
///
/// ```
/// use config_rewrite::{ProviderSpec, RevertFile, Rewrite, Target};
/// let codex_home = tempfile::tempdir()?;
/// let config = codex_home.path().join("config.toml");
/// std::fs::write(&config, "model = \"o3\"\n")?;
///
/// let revert = RevertFile::beside(&config);
/// // 1. On start: undo what a crashed earlier run left behind.
/// if let Some(report) = revert.restore()? {
///     eprintln!("undid a stale rewrite of {}: {:?}", report.config.display(), report.outcome);
/// }
/// // 2. Route Codex through us. The record is on disk before config.toml changes.
/// let rewrite = Rewrite::route_to(
///     ProviderSpec::new("rotation-proxy", "http://127.0.0.1:8080/v1").env_key("ROTATION_PROXY_TOKEN"),
///     Target::TopLevel,
/// );
/// revert.apply(&config, &rewrite)?;
/// assert!(revert.is_pending()?);
/// // ... serve ...
/// // 3. On exit (and from signal handlers): put everything back, delete the record.
/// revert.restore()?;
/// assert_eq!(std::fs::read_to_string(&config)?, "model = \"o3\"\n");
/// assert!(!revert.is_pending()?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevertFile {
    path: PathBuf,
}

impl RevertFile {
    /// The record file beside `config`: `<config file name>.revert.json` in the same directory.
    ///
    /// ```
    /// let r = config_rewrite::RevertFile::beside("/home/me/.codex/config.toml".as_ref());
    /// assert_eq!(r.path(), std::path::Path::new("/home/me/.codex/config.toml.revert.json"));
    /// ```
    pub fn beside(config: &Path) -> Self {
        let mut name = config
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "config.toml".into());
        name.push(".revert.json");
        RevertFile {
            path: config.with_file_name(name),
        }
    }

    /// A record file at an explicit path.
    ///
    /// ```
    /// let r = config_rewrite::RevertFile::at("/run/user/1000/proxy-revert.json");
    /// assert_eq!(r.path(), std::path::Path::new("/run/user/1000/proxy-revert.json"));
    /// ```
    pub fn at(path: impl Into<PathBuf>) -> Self {
        RevertFile { path: path.into() }
    }

    /// Where the record is stored.
    ///
    /// ```
    /// let r = config_rewrite::RevertFile::at("x.json");
    /// assert_eq!(r.path(), std::path::Path::new("x.json"));
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a record is waiting to be restored (a rewrite is in place, or an earlier run
    /// crashed before restoring). A symlink is followed: a dangling one means no record yet.
    /// Does not read the record; [`load`](Self::load) does.
    ///
    /// # Errors
    /// [`Error::Io`] when the record's directory cannot be read (or a symlink loop),
    /// [`Error::NotRegularFile`] when a FIFO, socket, device or directory is there.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// assert!(!config_rewrite::RevertFile::beside(&dir.path().join("config.toml")).is_pending()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_pending(&self) -> Result<bool, Error> {
        // Symlinks are followed: a dangling link is no record yet, as for `load`.
        atomic_file::ensure_regular_or_missing(&self.path)?;
        match fs::metadata(&self.path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("inspect", &self.path, e)),
        }
    }

    /// Loads the pending record, if any.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be read, [`Error::InvalidRecordFile`] when it is not a record,
    /// [`Error::NotRegularFile`] / [`Error::FileTooLarge`] when it is not a regular file of at
    /// most [`RECORD_MAX_BYTES`](crate::RECORD_MAX_BYTES) (refused without blocking).
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// assert!(config_rewrite::RevertFile::beside(&dir.path().join("config.toml")).load()?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn load(&self) -> Result<Option<RevertRecord>, Error> {
        let Some(bytes) = atomic_file::read_regular(&self.path, crate::RECORD_MAX_BYTES)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::InvalidRecordFile {
                path: self.path.clone(),
                reason: format!("not valid JSON at line {}, column {}", e.line(), e.column()),
            })
    }

    /// Applies `rewrite` to `config`, storing the revert record here first.
    ///
    /// Refuses with [`Error::PendingRevert`] while an earlier record is pending, because
    /// applying on top of a rewrite would make the rewritten file look like the original.
    /// The record path is checked as [`load`](Self::load) reads it: something that is not a
    /// record is named ([`Error::NotRegularFile`], [`Error::FileTooLarge`],
    /// [`Error::InvalidRecordFile`], [`Error::Io`] for a symlink loop), never called pending;
    /// a dangling symlink is no record yet, and the new record is written through it.
    /// If replacing the configuration fails, the record is removed again
    /// ([`Error::RolledBack`]; [`Error::PartiallyApplied`] if the record cannot be removed).
    ///
    /// # Errors
    /// As [`apply`], plus [`Error::PendingRevert`] and those of [`load`](Self::load) for the
    /// record file.
    ///
    /// ```
    /// use config_rewrite::{Error, ProviderSpec, RevertFile, Rewrite, Target};
    /// let dir = tempfile::tempdir()?;
    /// let config = dir.path().join("config.toml");
    /// let revert = RevertFile::beside(&config);
    /// let rewrite = Rewrite::route_to(ProviderSpec::new("p", "http://127.0.0.1:9/v1"), Target::TopLevel);
    /// revert.apply(&config, &rewrite)?;
    /// assert!(matches!(revert.apply(&config, &rewrite), Err(Error::PendingRevert { .. })));
    /// revert.restore()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply(&self, config: &Path, rewrite: &Rewrite) -> Result<RevertRecord, Error> {
        check_input(config, rewrite)?;
        let target = resolve(config)?;
        let _lock = EditLock::acquire(&target)?;
        // Read the record exactly as `load` and `restore` do, so that whatever is there gets
        // the same answer from all three: a FIFO, socket, device, directory or oversized
        // file is named, a symlink loop is an I/O error, and a dangling symlink is no record
        // yet (the record is then written through it, like any symlinked record).
        if self.load()?.is_some() {
            return Err(Error::PendingRevert {
                config: config.to_path_buf(),
                record: self.path.clone(),
            });
        }
        let mut stored = false;
        let result = apply_locked(config, &target, rewrite, |record| {
            self.store(record)?;
            stored = true;
            Ok(())
        });
        match result {
            Ok((record, _)) => {
                if !stored {
                    // Nothing changed, but keep the promise that a successful apply leaves a
                    // pending record for the matching restore.
                    self.store(&record)?;
                }
                Ok(record)
            }
            Err(e) => {
                if !stored {
                    return Err(e);
                }
                // The record went to disk for a rewrite that did not happen: take it back,
                // or a later `apply` would be refused as pending.
                match self.discard() {
                    Ok(()) => Err(Error::RolledBack {
                        path: config.to_path_buf(),
                        operation: "apply",
                        source: Box::new(e),
                    }),
                    Err(undo) => Err(Error::PartiallyApplied {
                        path: config.to_path_buf(),
                        operation: "apply",
                        source: Box::new(e),
                        undo_error: Box::new(undo),
                        applied: format!(
                            "the configuration is unchanged but the revert record {} was left \
                             behind; delete it (it undoes nothing) before applying again",
                            self.path.display()
                        ),
                    }),
                }
            }
        }
    }

    /// Restores the pending record, if any, then deletes it. Returns `None` when nothing was
    /// pending. Safe to call at every start and every exit.
    ///
    /// # Errors
    /// As [`restore`], plus errors reading the record. The record is kept when restoring fails.
    /// When the configuration was restored but the record cannot be deleted, the
    /// configuration is put back as it was ([`Error::RolledBack`]); only if that fails too
    /// is the error [`Error::PartiallyApplied`] (configuration restored, record left behind).
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// assert!(config_rewrite::RevertFile::beside(&dir.path().join("config.toml")).restore()?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn restore(&self) -> Result<Option<RestoreReport>, Error> {
        let Some(record) = self.load()? else {
            return Ok(None);
        };
        let target = resolve(record.config())?;
        let _lock = EditLock::acquire(&target)?;
        // Another process may have restored it while we waited for the lock.
        let Some(record) = self.load()? else {
            return Ok(None);
        };
        let (report, written) = restore_locked(&record, &target)?;
        let Err(failed) = self.discard() else {
            return Ok(Some(report));
        };
        // The configuration is restored but the record is still there: put the rewrite back,
        // so that either both are done or neither is (a record without its rewrite would
        // make the next `apply` fail as pending, and the user could not tell what happened).
        let Some(written) = written else {
            // Nothing was written (the file was already restored): nothing to undo.
            return Err(failed);
        };
        match replace_if_unchanged(&target, written.after.as_deref(), written.before.as_deref()) {
            Ok(true) => Err(Error::RolledBack {
                path: record.config().to_path_buf(),
                operation: "restore",
                source: Box::new(failed),
            }),
            undo => Err(Error::PartiallyApplied {
                path: record.config().to_path_buf(),
                operation: "restore",
                source: Box::new(failed),
                undo_error: Box::new(match undo {
                    Err(e) => e,
                    _ => Error::ConcurrentModification {
                        path: record.config().to_path_buf(),
                    },
                }),
                applied: format!(
                    "the configuration is restored but its revert record {} could not be \
                     deleted; delete it by hand (a restore with it changes nothing more)",
                    self.path.display()
                ),
            }),
        }
    }

    /// Writes `record` here (atomically, mode 0600), replacing any previous one.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be written, [`Error::StillInUse`] (Windows) when
    /// another program kept it open through every retry.
    ///
    /// ```
    /// # use config_rewrite::{Rewrite, RevertFile};
    /// let dir = tempfile::tempdir()?;
    /// let applied = config_rewrite::apply_to_str(&dir.path().join("config.toml"), Some(""), &Rewrite::new())?;
    /// let file = RevertFile::at(dir.path().join("r.json"));
    /// file.store(applied.record())?;
    /// assert_eq!(file.load()?.as_ref(), Some(applied.record()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn store(&self, record: &RevertRecord) -> Result<(), Error> {
        let json = serde_json::to_vec_pretty(record).map_err(|e| {
            Error::io(
                "serialize the revert record for",
                &self.path,
                io::Error::other(e),
            )
        })?;
        write_atomic(&self.path, &json, FileMode::Private, InUseRetry::default())
    }

    /// Deletes the record file (no error when it is already gone). A symlinked record is kept
    /// as a link: its final target is deleted, so the link dangles until the next
    /// [`store`](Self::store) writes through it again.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be removed (or the link cannot be followed),
    /// [`Error::StillInUse`] (Windows) when another program kept it open through every retry.
    ///
    /// ```
    /// config_rewrite::RevertFile::at("/nonexistent/r.json").discard()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn discard(&self) -> Result<(), Error> {
        remove_durably(
            &atomic_file::resolve_symlinks(&self.path)?,
            InUseRetry::default(),
        )
    }
}

/// File name of the edit lock, created in the directory of the configuration it guards
/// (`~/.codex/.config-rewrite.lock`).
///
/// Every read-modify-write of a configuration or revert record by this crate holds an
/// exclusive lock on this file, on every platform the same way (`flock` on Unix,
/// `LockFileEx` on Windows, through `fs4`), so two of our processes never interleave their
/// edits of one directory: a second process waits up to 10 s, then fails with
/// [`Error::Busy`]. Another program can take part by locking the same file.
///
/// - It is a file of its own, not the directory (Windows cannot open a directory to lock
///   it) and not `config.toml` (a Windows lock is mandatory: the Codex CLI reading a
///   locked `config.toml` would fail). The Codex CLI reads `config.toml` and
///   `<profile>.config.toml`, never this name, and takes no lock of its own on them; against
///   it (or an editor) the re-read before every replace is the guard.
/// - It is empty and never deleted: deleting a lock file another process has open would let
///   a third process lock a new file while the second still holds the old one. Crashed
///   holders release it (the system drops a dead process's locks).
/// - Where it cannot be created because the directory lets us create nothing (read-only
///   file system, no write permission), the edit goes on without it: such a process cannot
///   replace a file there either (every write is a new file renamed into place), so there
///   is nothing of ours to serialize, and its first write fails with the directory's error.
///   An existing lock file we may not write (another account created it) is locked
///   read-only.
///
/// ```
/// use config_rewrite::{EDIT_LOCK_FILE, ProviderSpec, Rewrite, Target};
/// let dir = tempfile::tempdir()?;
/// let config = dir.path().join("config.toml");
/// let rewrite = Rewrite::route_to(ProviderSpec::new("p", "http://127.0.0.1:9/v1"), Target::TopLevel);
/// let record = config_rewrite::apply(&config, &rewrite)?;
/// assert_eq!(std::fs::metadata(dir.path().join(EDIT_LOCK_FILE))?.len(), 0);
/// config_rewrite::restore(&record)?;
/// assert!(dir.path().join(EDIT_LOCK_FILE).is_file(), "left in place for the next edit");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub const EDIT_LOCK_FILE: &str = ".config-rewrite.lock";

/// The held edit lock on a configuration's directory ([`EDIT_LOCK_FILE`]); released on drop
/// (closing the handle releases it, also when the process dies).
struct EditLock {
    _file: Option<File>,
}

impl EditLock {
    fn acquire(target: &Path) -> Result<Self, Error> {
        let dir = parent_dir(target);
        if !dir.is_dir() {
            // Nothing to lock yet; the directory is created by the write.
            return Ok(EditLock { _file: None });
        }
        lock_dir(dir)
    }
}

fn lock_dir(dir: &Path) -> Result<EditLock, Error> {
    let path = dir.join(EDIT_LOCK_FILE);
    let Some(file) = open_lock_file(&path)? else {
        // The directory lets us create nothing, so nothing of ours can change in it: see
        // EDIT_LOCK_FILE.
        return Ok(EditLock { _file: None });
    };
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => return Ok(EditLock { _file: Some(file) }),
            Err(fs4::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(fs4::TryLockError::WouldBlock) => {
                return Err(Error::Busy {
                    path: dir.to_path_buf(),
                    waited: LOCK_WAIT,
                });
            }
            Err(fs4::TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
        }
    }
}

/// Opens the lock file, creating it (empty, mode 0644: it holds nothing, and another
/// account must be able to open it to lock it) when missing. `None` when it is missing and
/// cannot be created because the directory lets us create nothing. A FIFO, socket, device
/// or directory in its place is refused without blocking ([`Error::NotRegularFile`]):
/// locking `/dev/null` would "work" and exclude nobody.
fn open_lock_file(path: &Path) -> Result<Option<File>, Error> {
    let mut create = std::fs::OpenOptions::new();
    create.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut create, 0o644);
    match atomic_file::open_checked(path, &mut create) {
        Err(atomic_file::FileError::Io { ref source, .. })
            if matches!(
                source.kind(),
                io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            // flock and LockFileEx need no write access: lock an existing file read-only;
            // `None` when there is none (and we cannot make one).
            let mut read = std::fs::OpenOptions::new();
            read.read(true);
            Ok(atomic_file::open_checked(path, &mut read)?)
        }
        // `None` only if the directory vanished meanwhile: nothing there to serialize.
        opened => Ok(opened?),
    }
}

/// Follows a symlinked config to its target so renaming replaces the target, not the link,
/// and refuses a target that is there but not a regular file (naming `config`, the path the
/// caller knows). A symlink loop is an [`Error::Io`].
fn resolve(config: &Path) -> Result<PathBuf, Error> {
    Ok(atomic_file::resolve_target(config)?)
}

/// Reads a configuration file the way [`apply`] and [`restore`] do: `Ok(None)` when it does
/// not exist; refused without blocking when it is a FIFO, socket, device or directory (or a
/// symlink to one), or larger than [`CONFIG_MAX_BYTES`](crate::CONFIG_MAX_BYTES); refused
/// with the line and column when it is not UTF-8. For programs that inspect `config.toml`
/// beside a rewrite.
///
/// # Errors
/// [`Error::NotRegularFile`], [`Error::FileTooLarge`], [`Error::Config`] (not UTF-8),
/// [`Error::Io`].
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let config = dir.path().join("config.toml");
/// assert_eq!(config_rewrite::read_config(&config)?, None);
/// std::fs::write(&config, "model = \"o3\"\n")?;
/// assert_eq!(config_rewrite::read_config(&config)?.as_deref(), Some("model = \"o3\"\n"));
/// assert!(matches!(
///     config_rewrite::read_config(dir.path()),
///     Err(config_rewrite::Error::NotRegularFile { .. })
/// ));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn read_config(path: &Path) -> Result<Option<String>, Error> {
    read_text(path)
}

fn read_text(path: &Path) -> Result<Option<String>, Error> {
    let Some(bytes) = atomic_file::read_regular(path, crate::CONFIG_MAX_BYTES)? else {
        return Ok(None);
    };
    String::from_utf8(bytes).map(Some).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let bytes = e.into_bytes();
        // ok: the prefix up to `valid_up_to` is valid UTF-8 by definition.
        let prefix = String::from_utf8_lossy(&bytes[..valid]);
        let (line, column) = line_col(&prefix, valid);
        Error::Config {
            path: path.to_path_buf(),
            source: EditError::NotUtf8 { line, column },
        }
    })
}

/// Replaces (or, with `None`, removes) `path` unless its content changed from `expected`
/// since we read it. Returns `false` when it changed.
///
/// On Windows a file another program has open cannot be renamed over. Each try re-reads the
/// file right before its one rename, and a refused rename waits and tries again from that
/// re-read: waiting out a program that is saving the file in place and then renaming over
/// its save would drop it (and an edit computed from the file it had just truncated would
/// wipe the user's settings). Bounded by [`InUseRetry::default`]; then
/// [`Error::StillInUse`]. A holder that shares deleting (Rust's default) does not block the
/// rename on Windows 10 and later, nor does any holder on Unix: there, as always, a program
/// saving in place between our read and our rename loses its save (the re-read narrows
/// that window to the rename itself).
fn replace_if_unchanged(
    path: &Path,
    expected: Option<&str>,
    new: Option<&str>,
) -> Result<bool, Error> {
    let retry = InUseRetry::default();
    let mut attempt = 1;
    loop {
        // A file that cannot be read now (a holder that shares no reading) is not "as
        // expected", even where we expected none: the caller's own read reports why.
        match read_text(path) {
            Ok(now) if now.as_deref() == expected => {}
            _ => return Ok(false),
        }
        let result = match new {
            // The user's file keeps its permission bits; a new one is private.
            // One rename, no waiting inside: this loop re-reads before every retry.
            Some(text) => write_atomic(
                path,
                text.as_bytes(),
                FileMode::Keep { new: 0o600 },
                InUseRetry::none(),
            ),
            None => remove_durably(path, InUseRetry::none()),
        };
        match result {
            Err(Error::StillInUse { .. }) if attempt < retry.attempts() => {
                std::thread::sleep(retry.backoff() * attempt);
                attempt += 1;
            }
            Err(Error::StillInUse {
                action,
                path,
                source,
                ..
            }) => {
                return Err(Error::StillInUse {
                    action,
                    path,
                    attempts: attempt,
                    source,
                });
            }
            other => return other.map(|()| true),
        }
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Temp file in the same directory (`.config-rewrite-XXXXXX.tmp`), fsync, rename over
/// `path` (on Windows retried while another program has it open), fsync the directory:
/// [`atomic_file::replace`].
///
/// A symlink at `path` is followed and kept (its final target is replaced); a FIFO, socket,
/// device or directory there is refused and left alone; missing directories are created 0700.
fn write_atomic(path: &Path, bytes: &[u8], mode: FileMode, retry: InUseRetry) -> Result<(), Error> {
    let options = ReplaceOptions::new(".config-rewrite-")
        .temp_suffix(".tmp")
        .mode(mode)
        .retry(retry);
    // ok: a failed directory fsync after the rename is not an error: the rename has
    // happened and every reader sees the new file. Failing now would make callers undo (or
    // redo) a change that took effect, e.g. drop the revert record of a rewrite that is in
    // place; a lost directory fsync only matters after a crash.
    let _ = atomic_file::replace(path, bytes, &options)?.dir_sync_error;
    Ok(())
}

/// Deletes `path` (a missing file is fine) and fsyncs its directory; on Windows retried
/// while another program has it open.
fn remove_durably(path: &Path, retry: InUseRetry) -> Result<(), Error> {
    // ok: as for `write_atomic`, the file is gone for every reader once the unlink
    // succeeded; a failed directory fsync after it must not be reported as "not removed"
    // (a restore would then put a rewrite back whose revert record is already gone).
    let _ = atomic_file::remove_durably(path, retry)?.dir_sync_error;
    Ok(())
}

/// The profile layer file Codex reads for `--profile <name>`: `<name>.config.toml` beside the
/// base `config.toml` (Codex CLI 0.169 and later; older CLIs used `[profiles.<name>]` tables,
/// see [`Target::Profile`](crate::Target::Profile)). Apply a [`Target::TopLevel`](crate::Target::TopLevel)
/// rewrite to this path to route only that profile through a provider; a missing file is
/// created on apply and removed again on restore.
///
/// # Errors
/// [`EditError::InvalidInput`] when `name` is empty, could escape the directory, or holds a
/// control, bidi or line-separator character.
///
/// ```
/// let p = config_rewrite::profile_config_path("/home/me/.codex/config.toml".as_ref(), "work")?;
/// assert_eq!(p, std::path::Path::new("/home/me/.codex/work.config.toml"));
/// assert!(config_rewrite::profile_config_path("config.toml".as_ref(), "../x").is_err());
/// # Ok::<(), config_rewrite::EditError>(())
/// ```
pub fn profile_config_path(config: &Path, name: &str) -> Result<PathBuf, EditError> {
    crate::input::non_empty("profile name", name)?;
    if name.starts_with('.') || name.contains(['/', '\\']) {
        return Err(EditError::InvalidInput {
            field: "profile name".to_owned(),
            reason: "it must be a plain file-name part (no path separators, not starting with '.')"
                .to_owned(),
        });
    }
    Ok(config.with_file_name(format!("{name}.config.toml")))
}
