//! [`PoolStore`]: the pool on disk, with locking, backups and recovery.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::document::{CURRENT_VERSION, PoolDocument};
use super::migrate::{MigrateError, migrate};
use crate::atomic::{read_if_exists, remove_if_exists, sync_dir, write_atomic};
use crate::codex_home::CodexHome;
use crate::error::{Result, StorageError, describe_json_error};
use crate::lock::{DEFAULT_LOCK_TIMEOUT, FileLock};

/// Environment variable that overrides the default pool directory.
pub const POOL_DIR_ENV: &str = "CODEX_POOL_DIR";
/// Name of the pool file inside the pool directory.
pub const POOL_FILE: &str = "pool.json";
const LOCK_FILE: &str = "pool.lock";
/// Directory of the per-account refresh locks, inside the pool directory.
pub const REFRESH_LOCK_DIR: &str = "refresh-locks";
const RESET_MARKER: &str = "pool.reset";
const BACKUP_PREFIX: &str = "pool.json.bak-";
const DAMAGED_PREFIX: &str = "pool.json.damaged-";
const TEMP_PREFIX: &str = ".pool-";
/// Largest `pool.json` (or pool backup) read: 1 GiB, room for well over 100,000 accounts
/// with real-sized tokens (about 5 KiB each). Checked on the opened file's size before
/// reading and again while reading.
pub const POOL_FILE_MAX_BYTES: u64 = 1 << 30;
/// How many backups [`PoolStore`] keeps unless told otherwise.
pub const DEFAULT_BACKUPS: usize = 5;

/// Why a load did not come from an intact `pool.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum RestoreReason {
    /// The user removed everything ([`PoolStore::reset`], or an update that removed the
    /// last account); backups are deliberately *not* used.
    IntentionalReset,
    /// `pool.json` exists but is empty (0 bytes or only whitespace).
    EmptyStorage,
    /// `pool.json` does not exist but backups do.
    MissingStorage,
    /// `pool.json` ends in the middle of the document (a torn write by some other tool).
    TruncatedStorage,
    /// `pool.json` is not valid JSON or not a pool document.
    CorruptStorage {
        /// What is wrong (line/column and category; never file contents).
        detail: String,
    },
}

/// Where a load came from when it was not a plain read of `pool.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// Why.
    pub reason: RestoreReason,
    /// The backup the pool was restored from; `None` when the pool started empty.
    pub backup: Option<PathBuf>,
}

/// The result of [`PoolStore::load`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Loaded {
    /// The pool (migrated to the current version).
    pub pool: PoolDocument,
    /// Set when `pool.json` was missing, empty or damaged.
    pub recovery: Option<Recovery>,
    /// The schema version found on disk when it was older than [`CURRENT_VERSION`].
    pub migrated_from: Option<u32>,
}

/// A multi-account pool kept in a directory:
///
/// * `pool.json` — the document, replaced atomically, mode 0600;
/// * `pool.lock` — the cross-process lock every [`update`](Self::update) holds;
/// * `pool.json.bak-<revision>` — the last N versions, the current one included (hard
///   links, so cheap);
/// * `pool.json.damaged-…` — a damaged main file moved aside, never deleted by us;
/// * `pool.reset` — marks an intentional [`reset`](Self::reset).
///
/// `pool.json`, its backups and `pool.lock` must be regular files: a FIFO, socket, device
/// or directory there (or a symlink to one) is refused at once with
/// [`StorageError::NotRegularFile`] (a hostile backup is skipped by recovery), and files
/// over [`POOL_FILE_MAX_BYTES`] with [`StorageError::FileTooLarge`]. A symlinked
/// `pool.json` is followed and kept; its backups are real files. Everything written is
/// 0600 and a directory created for the pool is 0700 (an existing one keeps its mode).
///
/// ```
/// use auth_storage::PoolStore;
/// # fn main() -> Result<(), auth_storage::StorageError> {
/// let dir = tempfile::tempdir().unwrap();
/// let store = PoolStore::new(dir.path());
/// let revision = store.update(|pool| {
///     pool.extra.insert("note".into(), "hello".into());
///     pool.revision
/// })?;
/// let loaded = store.load()?;
/// assert_eq!(loaded.pool.revision, revision + 1);
/// assert!(loaded.recovery.is_none());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PoolStore {
    dir: PathBuf,
    backups: usize,
    lock_timeout: Duration,
}

impl PoolStore {
    /// A pool kept in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            backups: DEFAULT_BACKUPS,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }

    /// The default pool directory: `$CODEX_POOL_DIR` if set, else `<codex home>/accounts`
    /// (`$CODEX_HOME/accounts` or `~/.codex/accounts`).
    pub fn default_dir() -> Result<PathBuf> {
        if let Some(dir) = std::env::var_os(POOL_DIR_ENV).filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(dir));
        }
        CodexHome::from_env()
            .map(|home| home.dir().join("accounts"))
            .ok_or_else(|| StorageError::Invalid {
                what: "pool location",
                detail: format!(
                    "neither {POOL_DIR_ENV}, CODEX_HOME nor a home directory is set; pass a \
                     directory explicitly"
                ),
            })
    }

    /// The pool at [`default_dir`](Self::default_dir).
    pub fn open_default() -> Result<Self> {
        Self::default_dir().map(Self::new)
    }

    /// A pool scoped to one project: `<base>/projects/<16 hex of SHA-256 of the project's
    /// canonical path>`, so each checkout can keep its own accounts.
    pub fn for_project(base: &Path, project_root: &Path) -> Self {
        use sha2::{Digest, Sha256};
        let canonical = project_root
            .canonicalize()
            .unwrap_or_else(|_| project_root.to_path_buf());
        let digest = Sha256::digest(canonical.to_string_lossy().as_bytes());
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        Self::new(base.join("projects").join(hex))
    }

    /// Keep the last `n` versions as backups (default [`DEFAULT_BACKUPS`]; 0 disables them).
    pub fn with_backups(mut self, n: usize) -> Self {
        self.backups = n;
        self
    }

    /// Wait at most `timeout` for the pool lock (default [`DEFAULT_LOCK_TIMEOUT`]).
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// How long to wait for a lock.
    #[cfg(feature = "policy")]
    pub(crate) fn lock_timeout(&self) -> Duration {
        self.lock_timeout
    }

    /// The pool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/pool.json`.
    pub fn file(&self) -> PathBuf {
        self.dir.join(POOL_FILE)
    }

    /// Read the pool without locking (writers replace the file atomically, so a reader never
    /// sees a torn document). Falls back to the newest valid backup when `pool.json` is
    /// missing, empty or damaged, and says so in [`Loaded::recovery`].
    ///
    /// # Errors
    /// [`StorageError::NewerVersion`] when the file comes from a newer program,
    /// [`StorageError::Unrecoverable`] when it is damaged and no backup is valid.
    pub fn load(&self) -> Result<Loaded> {
        let path = self.file();
        let read = read_if_exists(&path, POOL_FILE_MAX_BYTES)?;
        if read.is_some() {
            // Every account's tokens: a pool file someone loosened is made private again
            // even when this load writes nothing.
            tighten_private(&path);
        }
        let problem = match read {
            None => RestoreReason::MissingStorage,
            Some(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => RestoreReason::EmptyStorage,
            Some(bytes) => match parse(&bytes) {
                Ok((pool, from)) => {
                    return Ok(Loaded {
                        pool,
                        recovery: None,
                        migrated_from: (from < CURRENT_VERSION).then_some(from),
                    });
                }
                Err(ParseFailure::Newer(found)) => {
                    return Err(StorageError::NewerVersion {
                        path,
                        found,
                        supported: CURRENT_VERSION,
                    });
                }
                Err(ParseFailure::Truncated) => RestoreReason::TruncatedStorage,
                Err(ParseFailure::Corrupt(detail)) => RestoreReason::CorruptStorage { detail },
            },
        };
        // A pool that starts over continues the revision numbering after the newest backup,
        // so its saves never take the name of an older backup.
        let backups = self.backups_newest_first()?;
        let newest = backups
            .first()
            .and_then(|p| backup_revision(p))
            .unwrap_or(0);
        let fresh = || PoolDocument {
            revision: newest,
            ..PoolDocument::default()
        };
        if self.marker_present() {
            return Ok(Loaded {
                pool: fresh(),
                recovery: Some(Recovery {
                    reason: RestoreReason::IntentionalReset,
                    backup: None,
                }),
                migrated_from: None,
            });
        }
        for backup in backups {
            let Ok(Some(bytes)) = read_if_exists(&backup, POOL_FILE_MAX_BYTES) else {
                continue;
            };
            if let Ok((mut pool, from)) = parse(&bytes) {
                pool.revision = pool.revision.max(newest);
                tracing::warn!(
                    pool = %crate::error::shown(&path),
                    backup = %crate::error::shown(&backup),
                    reason = ?problem,
                    "pool file unusable; restored from backup"
                );
                return Ok(Loaded {
                    pool,
                    recovery: Some(Recovery {
                        reason: problem,
                        backup: Some(backup),
                    }),
                    migrated_from: (from < CURRENT_VERSION).then_some(from),
                });
            }
        }
        match problem {
            // Nothing there yet (or an empty file): a fresh pool, nothing lost.
            RestoreReason::MissingStorage => Ok(Loaded {
                pool: fresh(),
                recovery: None,
                migrated_from: None,
            }),
            RestoreReason::EmptyStorage => Ok(Loaded {
                pool: fresh(),
                recovery: Some(Recovery {
                    reason: RestoreReason::EmptyStorage,
                    backup: None,
                }),
                migrated_from: None,
            }),
            other => Err(StorageError::Unrecoverable {
                path,
                backups: self.dir.clone(),
                detail: match other {
                    RestoreReason::CorruptStorage { detail } => detail,
                    _ => "the file ends early (truncated)".to_owned(),
                },
            }),
        }
    }

    /// Read-modify-write under the pool lock: load (with recovery), call `change`, and save
    /// the result atomically if it differs. Concurrent updaters in any number of processes
    /// never lose each other's changes.
    ///
    /// Returns what `change` returned. When it returns an error, nothing on disk changed:
    /// the steps before the new `pool.json` is renamed into place (moving a damaged file
    /// aside, the reset marker) are undone if that rename fails, and the steps after it
    /// (new backup link, pruning old backups) are best-effort and only logged.
    pub fn update<T>(&self, change: impl FnOnce(&mut PoolDocument) -> T) -> Result<T> {
        self.try_update(|pool| Ok::<T, StorageError>(change(pool)))
    }

    /// Like [`update`](Self::update), but `change` may fail; then nothing is written and its
    /// error is returned.
    pub fn try_update<T, E>(
        &self,
        change: impl FnOnce(&mut PoolDocument) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<StorageError>,
    {
        let guard = self.lock_pool()?;
        let (out, undo) = self.change_locked(&guard, change)?;
        if let Some(undo) = undo {
            self.prune_best_effort(&undo);
        }
        Ok(out)
    }

    /// The pool lock, held for a whole load → change → save (→ undo) sequence.
    /// Whether the reset marker is there: a regular file named `pool.reset`, not a symlink
    /// (followed, a planted link would decide recovery) nor anything else.
    fn marker_present(&self) -> bool {
        std::fs::symlink_metadata(self.dir.join(RESET_MARKER))
            .is_ok_and(|m| m.file_type().is_file())
    }

    /// Writes the reset marker in the pool directory. Whatever else is at its name (a
    /// symlink, a directory, a FIFO) is refused, never followed or replaced.
    fn write_marker(&self) -> Result<()> {
        let marker = self.dir.join(RESET_MARKER);
        if let Ok(meta) = std::fs::symlink_metadata(&marker)
            && !meta.file_type().is_file()
        {
            return Err(StorageError::NotRegularFile {
                path: marker,
                kind: auth_core::regular_file::FileKind::of(&meta)
                    .unwrap_or(auth_core::regular_file::FileKind::Other),
            });
        }
        write_atomic(&marker, b"", TEMP_PREFIX)
    }

    /// `pool.lock` is a regular file or missing (checked before other locks are taken).
    pub(crate) fn check_lock_file(&self) -> Result<()> {
        auth_core::regular_file::ensure_regular_or_missing(&self.dir.join(LOCK_FILE))?;
        Ok(())
    }

    /// The refresh lock of `account`'s login (`refresh-locks/<hash>.lock`, one per login,
    /// so a removed and re-added copy shares it): held by a refresh of that login from
    /// before it reads the tokens to after it saved the answer, and by a switch that hands
    /// the account to a Codex home. First in the lock order (account, then homes, then the
    /// pool).
    pub(crate) fn lock_account_refresh(
        &self,
        account: &super::Account,
        timeout: Duration,
    ) -> Result<FileLock> {
        let dir = self.dir.join(REFRESH_LOCK_DIR);
        auth_core::regular_file::create_private_dir_all(&dir)
            .map_err(|e| StorageError::io("create the directory", &dir, e))?;
        FileLock::acquire(
            &dir.join(super::document::refresh_lock_name(account)),
            0o600,
            timeout,
        )
    }

    pub(crate) fn lock_pool(&self) -> Result<PoolGuard> {
        self.lock().map(PoolGuard)
    }

    /// The read-modify-write of [`try_update`](Self::try_update) for a caller that holds the
    /// pool lock and may have to undo the write afterwards ([`undo_locked`](Self::undo_locked))
    /// because a later step of its operation failed. Old backups are not pruned (an undo
    /// could not bring them back); call [`prune_best_effort`](Self::prune_best_effort) once
    /// the operation is complete. `None` when nothing was written.
    pub(crate) fn change_locked<T, E>(
        &self,
        _guard: &PoolGuard,
        change: impl FnOnce(&mut PoolDocument) -> Result<T, E>,
    ) -> Result<(T, Option<PoolUndo>), E>
    where
        E: From<StorageError>,
    {
        let loaded = self.load()?;
        let before = loaded.pool.clone();
        let mut pool = loaded.pool;
        let out = change(&mut pool)?;
        if pool == before && loaded.recovery.is_none() && loaded.migrated_from.is_none() {
            return Ok((out, None));
        }
        let main = self.file();
        let mut undo = PoolUndo {
            previous: None,
            set_aside: None,
            marker: MarkerChange::None,
            new_backup: None,
        };
        if let Some(recovery) = &loaded.recovery {
            undo.set_aside = self.set_aside_damaged(recovery, before.revision)?;
        } else {
            // The exact bytes that were live, to put back on undo.
            undo.previous = read_if_exists(&main, POOL_FILE_MAX_BYTES)?;
        }
        // The current main file is intact exactly when nothing had to be recovered.
        let intact = loaded.recovery.is_none().then_some(before.revision);
        if pool.accounts.is_empty() && !before.accounts.is_empty() && !self.marker_present() {
            // Removing the last account is an intentional reset: a later loss of pool.json
            // must not bring the removed accounts back from a backup.
            if let Err(e) = self.write_marker() {
                self.undo_before_main(&undo);
                return Err(e.into());
            }
            undo.marker = MarkerChange::Created;
        }
        match self.write_locked(&mut pool, true, intact, false) {
            Ok(written) => {
                if written.marker_removed {
                    undo.marker = MarkerChange::Removed;
                }
                undo.new_backup = written.backup;
                Ok((out, Some(undo)))
            }
            Err(e) => {
                self.undo_before_main(&undo);
                Err(e.into())
            }
        }
    }

    /// Put the pool directory back as it was before the write `undo` describes (the caller
    /// still holds the lock it was written under, so nobody wrote in between).
    ///
    /// # Errors
    /// I/O errors restoring `pool.json`; the reset marker and the new backup are restored
    /// best-effort (neither changes what a load returns while `pool.json` is intact).
    pub(crate) fn undo_locked(&self, _guard: &PoolGuard, undo: PoolUndo) -> Result<()> {
        let main = self.file();
        match (&undo.set_aside, &undo.previous) {
            (Some(aside), _) if is_symlink(&main) => {
                // The damaged target was copied aside (the link is kept): copy it back
                // through the link, then drop the copy.
                if let Some(bytes) = read_if_exists(aside, POOL_FILE_MAX_BYTES)? {
                    write_atomic(&main, &bytes, TEMP_PREFIX)?;
                }
                remove_if_exists(aside)?;
            }
            (Some(aside), _) => std::fs::rename(aside, &main)
                .map_err(|e| StorageError::io("move back the damaged", &main, e))?,
            (None, Some(bytes)) => write_atomic(&main, bytes, TEMP_PREFIX)?,
            (None, None) => {
                remove_if_exists(&main)?;
            }
        }
        // ok: as in `write_atomic`, the undo has taken effect once the rename or removal
        // returned; a failed directory fsync must not report it as not undone.
        let _ = sync_dir(&self.dir);
        if let Some(backup) = &undo.new_backup
            && let Err(err) = remove_if_exists(backup)
        {
            // ok: a leftover backup is only read when pool.json is unusable.
            tracing::warn!(%err, "could not remove the backup of an undone pool write");
        }
        let marker = self.dir.join(RESET_MARKER);
        let restored = match undo.marker {
            MarkerChange::None => Ok(()),
            MarkerChange::Created => remove_if_exists(&marker).map(|_| ()),
            MarkerChange::Removed => self.write_marker(),
        };
        if let Err(err) = restored {
            // ok: the marker only matters when pool.json is lost, and then it errs on the
            // side of keeping accounts.
            tracing::warn!(%err, "could not restore the pool's reset marker");
        }
        Ok(())
    }

    /// The steps of [`change_locked`](Self::change_locked) before `pool.json` is replaced,
    /// undone after the replacement failed.
    fn undo_before_main(&self, undo: &PoolUndo) {
        if undo.marker == MarkerChange::Created
            && let Err(err) = remove_if_exists(&self.dir.join(RESET_MARKER))
        {
            tracing::warn!(%err, "could not remove the reset marker of a failed pool write");
        }
        let main = self.file();
        if is_symlink(&main) {
            // The link's target was never replaced and still holds the damaged bytes; the
            // aside copy is redundant.
            if let Some(aside) = &undo.set_aside
                && let Err(err) = remove_if_exists(aside)
            {
                tracing::warn!(%err, "could not remove the copy of a damaged pool file");
            }
        } else if let Some(aside) = &undo.set_aside
            && let Err(err) = std::fs::rename(aside, &main)
        {
            // ok: the damaged file is kept under its aside name; nothing is lost.
            tracing::warn!(%err, aside = %crate::error::shown(aside), "could not move the damaged pool file back");
        }
    }

    /// Drop backups beyond the configured number after a completed write (failures only
    /// logged: a surplus backup is harmless).
    pub(crate) fn prune_best_effort(&self, _done: &PoolUndo) {
        if self.backups > 0
            && let Err(err) = self.prune_backups()
        {
            tracing::warn!(%err, "could not prune old pool backups");
        }
    }

    /// Remove every account intentionally: writes an empty pool and a reset marker, so a
    /// later load never "recovers" the old accounts from a backup. Backups stay on disk;
    /// a damaged `pool.json` is moved aside first. (Removing the last account with
    /// [`update`](Self::update) counts as a reset too.)
    ///
    /// # Errors
    /// [`StorageError::NewerVersion`] when the pool comes from a newer program (it is left
    /// alone); I/O and lock errors, after which the directory is as it was (the reset marker
    /// and a moved-aside damaged file are taken back).
    pub fn reset(&self) -> Result<()> {
        let _lock = self.lock()?;
        let mut undo = PoolUndo {
            previous: None,
            set_aside: None,
            marker: MarkerChange::None,
            new_backup: None,
        };
        let (previous, intact) = match self.load() {
            Ok(loaded) => {
                if let Some(recovery) = &loaded.recovery {
                    undo.set_aside = self.set_aside_damaged(recovery, loaded.pool.revision)?;
                }
                let revision = loaded.pool.revision;
                (revision, loaded.recovery.is_none().then_some(revision))
            }
            Err(StorageError::Unrecoverable { detail, .. }) => {
                let recovery = Recovery {
                    reason: RestoreReason::CorruptStorage { detail },
                    backup: None,
                };
                undo.set_aside = self.set_aside_damaged(&recovery, 0)?;
                (0, None)
            }
            Err(other) => return Err(other),
        };
        if !self.marker_present() {
            if let Err(e) = self.write_marker() {
                self.undo_before_main(&undo);
                return Err(e);
            }
            undo.marker = MarkerChange::Created;
        }
        let mut pool = PoolDocument {
            revision: previous,
            ..PoolDocument::default()
        };
        match self.write_locked(&mut pool, false, intact, true) {
            Ok(_) => Ok(()),
            Err(e) => {
                // Nothing replaced: take back the marker and the moved file.
                self.undo_before_main(&undo);
                Err(e)
            }
        }
    }

    fn lock(&self) -> Result<FileLock> {
        // The pool holds every account's tokens: create its directory private (0700 on Unix).
        if !self.dir.exists() {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder
                .create(&self.dir)
                .map_err(|e| StorageError::io("create the pool directory", &self.dir, e))?;
        }
        FileLock::acquire(&self.dir.join(LOCK_FILE), 0o600, self.lock_timeout)
    }

    /// Save `pool` (bumping its revision), linking the current file into the backups first
    /// and the new one after.
    /// `intact` is the revision of the current `pool.json` when it is known to be valid.
    ///
    /// A revision never wraps: at `u64::MAX` (only a hand-edited or hostile file gets
    /// there) the backups are renumbered first ([`Self::renumber_backups`]), so recovery,
    /// which takes the highest-numbered backup, still finds the newest version.
    /// An error means `pool.json` was not replaced. Everything after the rename (the new
    /// backup link, clearing the reset marker, pruning when `prune`) is best-effort and
    /// logged: failing the call then would report a failure for a write that took effect.
    fn write_locked(
        &self,
        pool: &mut PoolDocument,
        clear_reset: bool,
        mut intact: Option<u64>,
        prune: bool,
    ) -> Result<Written> {
        pool.version = CURRENT_VERSION;
        pool.revision = match pool.revision.checked_add(1) {
            Some(next) => next,
            None => {
                let free = self.renumber_backups()?;
                // The current file becomes backup `free` (below), the new version `free + 1`.
                intact = intact.map(|_| free);
                let base = intact.map_or(free, |_| free.saturating_add(1));
                base.max(1)
            }
        };
        let bytes = serde_json::to_vec_pretty(&*pool).map_err(|e| StorageError::Serialize {
            what: "the account pool",
            detail: e.to_string(),
        })?;
        let main = self.file();
        self.remove_stale_temps();
        if self.backups > 0
            && let Some(revision) = intact
        {
            self.link_backup(&main, revision)?;
        }
        write_atomic(&main, &bytes, TEMP_PREFIX)?;
        let mut written = Written::default();
        if self.backups > 0 {
            // The new version is a backup too (a second name for the same file), so losing
            // `pool.json` itself (deleted, or replaced by another tool) loses no change. A
            // tool that damages `pool.json` in place damages this link with it; the older
            // backups, separate files since our writes always replace, are still there.
            match self.link_backup(&main, pool.revision) {
                Ok(path) => written.backup = path,
                Err(err) => tracing::warn!(%err, "could not link the new pool backup"),
            }
        }
        if clear_reset && !pool.accounts.is_empty() && self.marker_present() {
            match remove_if_exists(&self.dir.join(RESET_MARKER)) {
                Ok(removed) => written.marker_removed = removed,
                Err(err) => tracing::warn!(%err, "could not remove the pool's reset marker"),
            }
        }
        if prune
            && self.backups > 0
            && let Err(err) = self.prune_backups()
        {
            tracing::warn!(%err, "could not prune old pool backups");
        }
        Ok(written)
    }

    /// Temporary files left by a writer that was killed mid-write. Only the lock holder
    /// writes temporaries, so under the lock every one that exists is stale.
    fn remove_stale_temps(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Keep the current `pool.json` as a backup named after its revision: a hard link (no
    /// copy, and it is the exact bytes that were live) when the file is private, else a
    /// private copy — a link shares the old file's mode, and a world-readable backup of every
    /// token must not outlive the loose file.
    fn link_backup(&self, main: &Path, revision: u64) -> Result<Option<PathBuf>> {
        // A symlinked pool.json: back up what it points to, never the link itself.
        let main = crate::atomic::resolve_target(main)?;
        let main = main.as_path();
        if !main.exists() {
            return Ok(None);
        }
        let backup = self.dir.join(format!("{BACKUP_PREFIX}{revision:012}"));
        // Only a regular file in a backup slot is ours to replace: a FIFO, socket, device,
        // directory or symlink there is refused (the write then fails, nothing changed).
        if let Ok(meta) = std::fs::symlink_metadata(&backup)
            && !meta.file_type().is_file()
        {
            return Err(StorageError::NotRegularFile {
                path: backup,
                kind: auth_core::regular_file::FileKind::of(&meta)
                    .unwrap_or(auth_core::regular_file::FileKind::Other),
            });
        }
        remove_if_exists(&backup)?;
        if !is_private(main) || std::fs::hard_link(main, &backup).is_err() {
            // Loose mode, or a file system without hard links (or the target on another
            // one): copy, atomically and 0600.
            if let Some(bytes) = read_if_exists(main, POOL_FILE_MAX_BYTES)? {
                write_atomic(&backup, &bytes, TEMP_PREFIX)?;
            }
        }
        Ok(Some(backup))
    }

    fn prune_backups(&self) -> Result<()> {
        let backups = self.backups_newest_first()?;
        for kept in backups.iter().take(self.backups) {
            tighten_backup(kept);
        }
        for old in backups.into_iter().skip(self.backups) {
            remove_if_exists(&old)?;
        }
        Ok(())
    }

    /// Backup files, newest revision first.
    pub fn backups_newest_first(&self) -> Result<Vec<PathBuf>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StorageError::io("list", &self.dir, e)),
        };
        let mut found: Vec<(u64, PathBuf)> = entries
            .filter_map(|e| e.ok())
            // A directory is never one of our backups (and could not be pruned).
            .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
            .filter_map(|e| {
                let path = e.path();
                Some((backup_revision(&path)?, path))
            })
            .collect();
        found.sort_by_key(|b| std::cmp::Reverse(b.0));
        Ok(found.into_iter().map(|(_, p)| p).collect())
    }

    /// Renames the backups to `0, 1, 2, …` in their current order and returns the first
    /// number not used, so the revision numbering can continue after a pool reached
    /// `u64::MAX`. Runs under the pool lock. Each rename moves the oldest remaining backup
    /// to a number below every backup not yet renamed, so the order (and so recovery's
    /// choice of the newest) is right after every step, even if the process dies midway.
    fn renumber_backups(&self) -> Result<u64> {
        let mut oldest_first = self.backups_newest_first()?;
        oldest_first.reverse();
        let mut next: u64 = 0;
        for backup in &oldest_first {
            // Bounded: at most one skip per existing backup file.
            for _ in 0..=oldest_first.len() {
                let target = self.dir.join(format!("{BACKUP_PREFIX}{next:012}"));
                if target == *backup {
                    break;
                }
                if target.exists() {
                    next = next.saturating_add(1);
                    continue;
                }
                std::fs::rename(backup, &target)
                    .map_err(|e| StorageError::io("renumber the pool backup", backup, e))?;
                break;
            }
            next = next.saturating_add(1);
        }
        sync_dir(&self.dir)?;
        tracing::warn!(
            pool = %crate::error::shown(&self.dir),
            backups = oldest_first.len(),
            "pool revision reached its maximum; backups renumbered from 0"
        );
        Ok(next)
    }

    /// Before overwriting a damaged `pool.json`, move it aside so nothing is lost.
    /// Returns where it went (`None` when there was no file).
    fn set_aside_damaged(&self, recovery: &Recovery, revision: u64) -> Result<Option<PathBuf>> {
        // Whatever the reason, a main file that is there is not a usable pool: keep it.
        // (After an intentional reset it may be missing; then there is nothing to keep.)
        if recovery.reason == RestoreReason::MissingStorage {
            return Ok(None);
        }
        let main = self.file();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        // Never over an earlier damaged file (two in the same second): add a counter.
        let name = format!("{DAMAGED_PREFIX}{now}-after-{revision}");
        let aside = (0..1000)
            .map(|n| match n {
                0 => self.dir.join(&name),
                n => self.dir.join(format!("{name}.{n}")),
            })
            // Nothing at all there, not even a dangling symlink (a write would follow it
            // out of the pool directory).
            .find(|p| std::fs::symlink_metadata(p).is_err())
            .ok_or_else(|| StorageError::Invalid {
                what: "pool directory",
                detail: format!(
                    "{} holds too many damaged pool files; remove old `{DAMAGED_PREFIX}*` files",
                    self.dir.display()
                ),
            })?;
        let target = crate::atomic::resolve_target(&main)?;
        if target != main {
            // A symlinked pool.json keeps its link: keep a copy of the damaged target here;
            // the save that follows replaces the target through the link.
            // An undo copies it back through the link (see `undo_locked`).
            return match read_if_exists(&target, POOL_FILE_MAX_BYTES)? {
                Some(bytes) => write_atomic(&aside, &bytes, TEMP_PREFIX).map(|()| Some(aside)),
                None => Ok(None),
            };
        }
        match std::fs::rename(&main, &aside) {
            Ok(()) => sync_dir(&self.dir).map(|()| Some(aside)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io("move aside the damaged", &main, e)),
        }
    }
}

/// Whether `path` itself is a symbolic link (a symlinked `pool.json` is followed and kept).
fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Proof that the pool lock is held (see [`PoolStore::lock_pool`]).
#[derive(Debug)]
pub(crate) struct PoolGuard(#[allow(dead_code)] FileLock);

/// What one pool write changed, so it can be undone under the same lock.
#[derive(Debug)]
pub(crate) struct PoolUndo {
    /// The bytes of `pool.json` before the write; `None` when there was no intact file.
    previous: Option<Vec<u8>>,
    /// Where a damaged `pool.json` was moved before the write.
    set_aside: Option<PathBuf>,
    marker: MarkerChange,
    /// The backup link of the new version.
    new_backup: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MarkerChange {
    None,
    Created,
    Removed,
}

/// What [`PoolStore::write_locked`] did after replacing `pool.json`.
#[derive(Debug, Default)]
struct Written {
    backup: Option<PathBuf>,
    marker_removed: bool,
}

fn backup_revision(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_prefix(BACKUP_PREFIX)?
        .parse()
        .ok()
}

enum ParseFailure {
    Newer(u32),
    Truncated,
    Corrupt(String),
}

fn parse(bytes: &[u8]) -> std::result::Result<(PoolDocument, u32), ParseFailure> {
    let mut value: Value = serde_json::from_slice(bytes).map_err(|e| classify(&e))?;
    let from = migrate(&mut value).map_err(|e| match e {
        MigrateError::Newer(v) => ParseFailure::Newer(v),
        MigrateError::Shape(detail) => ParseFailure::Corrupt(detail),
    })?;
    let mut pool: PoolDocument = serde_json::from_value(value).map_err(|e| classify(&e))?;
    let repaired = pool.assign_missing_ids();
    if repaired > 0 && from == CURRENT_VERSION {
        tracing::warn!(
            accounts = repaired,
            "pool accounts without a usable, unique id were given ids derived from the file"
        );
    }
    Ok((pool, from))
}

fn classify(e: &serde_json::Error) -> ParseFailure {
    if e.classify() == serde_json::error::Category::Eof {
        ParseFailure::Truncated
    } else if e.line() > 0 {
        ParseFailure::Corrupt(format!(
            "line {}, column {}: {}",
            e.line(),
            e.column(),
            describe_json_error(e)
        ))
    } else {
        ParseFailure::Corrupt(describe_json_error(e))
    }
}

/// Whether only the owner may read `path` (Unix; always true elsewhere, where ACLs of the
/// user's profile directory apply).
fn is_private(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 == 0)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        true
    }
}

/// A backup left with a loose mode (e.g. linked from a loose `pool.json` by an older
/// version) is tightened to 0600. Only regular files that are not symlinks are touched.
fn tighten_backup(path: &Path) {
    let regular = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file());
    if regular {
        tighten_private(path);
    }
}

/// Make a regular file (symlinks followed) that group or others may read 0600, through the
/// opened handle. A failure (e.g. the file belongs to someone else) is logged, not fatal:
/// the caller's read or save itself succeeded.
fn tighten_private(path: &Path) {
    if is_private(path) {
        return;
    }
    let result =
        auth_core::regular_file::open_regular(path, u64::MAX).and_then(|opened| match opened {
            Some((file, _)) => auth_core::regular_file::tighten_mode(&file, path, 0o600),
            None => Ok(()),
        });
    if let Err(err) = result {
        tracing::warn!(file = %crate::error::shown(path), error = %err, "could not make a pool file private");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loose file is copied into a new private backup, never hard-linked (a link shares
    /// the loose mode).
    #[cfg(unix)]
    #[test]
    fn a_loose_main_file_is_backed_up_as_a_private_copy() {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let dir = tempfile::tempdir().unwrap();
        let store = PoolStore::new(dir.path());
        let main = store.file();
        std::fs::write(&main, b"{}").unwrap();
        std::fs::set_permissions(&main, std::fs::Permissions::from_mode(0o644)).unwrap();
        store.link_backup(&main, 7).unwrap();
        let backup = dir.path().join(format!("{BACKUP_PREFIX}{:012}", 7));
        let meta = std::fs::metadata(&backup).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_ne!(meta.ino(), std::fs::metadata(&main).unwrap().ino());
        assert_eq!(std::fs::read(&backup).unwrap(), b"{}");
        // A private file is linked (cheap, same bytes).
        std::fs::set_permissions(&main, std::fs::Permissions::from_mode(0o600)).unwrap();
        store.link_backup(&main, 8).unwrap();
        let linked = dir.path().join(format!("{BACKUP_PREFIX}{:012}", 8));
        assert_eq!(
            std::fs::metadata(&linked).unwrap().ino(),
            std::fs::metadata(&main).unwrap().ino()
        );
    }

    #[test]
    fn project_pools_are_per_project_under_the_base() {
        let base = tempfile::tempdir().unwrap();
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let pa = PoolStore::for_project(base.path(), a.path());
        let pb = PoolStore::for_project(base.path(), b.path());
        assert_ne!(pa.dir(), pb.dir());
        assert!(pa.dir().starts_with(base.path().join("projects")));
        let name = pa.dir().file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(name.len(), 16);
        assert!(name.chars().all(|c| c.is_ascii_hexdigit()));
        // The same project, spelled differently, is the same pool.
        let dotted = a.path().join(".");
        assert_eq!(PoolStore::for_project(base.path(), &dotted).dir(), pa.dir());
        // And it is a working pool of its own.
        pa.update(|p| p.extra.insert("k".into(), 1.into())).unwrap();
        assert!(pa.file().is_file());
        assert!(!pb.file().exists());
    }

    #[test]
    fn an_explicit_directory_is_used_as_given() {
        let store = PoolStore::new("/some/where");
        assert_eq!(store.dir(), Path::new("/some/where"));
        assert_eq!(store.file(), Path::new("/some/where/pool.json"));
    }
}
