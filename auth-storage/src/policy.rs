//! The rotation policy's state, kept beside the pool and shared by every process that
//! rotates over it (feature `policy`), and the one-call glue from a pool to a ready
//! [`rotation_policy::Pool`].
//!
//! `pool.json` holds the logins; `pool-state.json` (same directory) holds what the policy
//! learned about each account — cooldowns with their reason and end, disabled reasons,
//! health and streaks — as a [`PolicyState`], keyed by the accounts' stable
//! [`ids`](crate::pool::Account::id). It has its own lock (`pool-state.lock`) and no tokens,
//! so the frequent small writes of running proxies never rewrite (or wait for) the file
//! that holds every account's tokens.
//!
//! **Concurrent writers** never lose each other's changes: [`PoolStore::save_policy_state`]
//! takes the state lock, reads the file, merges the caller's changes in with
//! [`PolicyState::merge`] and replaces the file atomically. The merge rules (a later
//! cooldown end wins, a disable holds until a later explicit enable, the later health
//! observation wins, …) are the table in `rotation_policy::state`; they make the result
//! independent of the order writers come in.
//!
//! **A damaged state file never costs an account**: a malformed file, one from a newer
//! version, or one naming accounts the pool does not have is reported
//! ([`StateProblem`]) and the accounts load anyway with fresh state; a malformed file is
//! moved aside (`pool-state.json.damaged-…`) by the next save, a newer one is never
//! overwritten.
//!
//! ```
//! use auth_storage::PoolStore;
//! use auth_storage::pool::Account;
//! use rotation_policy::{Outcome, PolicyConfig, Request, Selection, Timestamp};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let tokens = |rt: &str| auth_core::TokenData::new(
//! #     auth_core::Secret::new(auth_core::jwt::encode_unsigned_for_testing(&Default::default())),
//! #     auth_core::Secret::new("at".into()), auth_core::Secret::new(rt.into()), None).unwrap();
//! let store = PoolStore::new(dir.path());
//! store.update(|pool| {
//!     pool.upsert(Account::new(tokens("rt-1"), 0));
//!     pool.upsert(Account::new(tokens("rt-2"), 0));
//! })?;
//!
//! // Process A: a ready policy in one call, then the request loop reports a 429.
//! let now = Timestamp::from_system_time(std::time::SystemTime::now());
//! let mut a = store.rotation_pool(PolicyConfig::default(), 1, now)?;
//! assert!(a.problems.is_empty());
//! let mut request = Request::new("gpt-5");
//! let Selection::Account(first) = a.policy.select(&mut request, now) else { unreachable!() };
//! let limited = Outcome::RateLimited { retry_after: Some(std::time::Duration::from_secs(60)) };
//! a.policy.report(&mut request, &first, limited, now);
//! store.save_rotation_state(&mut a, now)?; // one call: coalesced changes out, others' in
//!
//! // Process B, started later: it honours A's cooldown at once.
//! let mut b = store.rotation_pool(PolicyConfig::default(), 2, now)?;
//! let Selection::Account(picked) = b.policy.select(&mut Request::new("gpt-5"), now) else { unreachable!() };
//! assert_ne!(picked, first);
//! # Ok(()) }
//! ```

use std::path::PathBuf;

use rotation_policy::{AccountId, MergeReport, PolicyConfig, PolicyState, Timestamp};

use crate::atomic::{read_if_exists, write_atomic};
use crate::error::{Result, StorageError, describe_json_error};
use crate::lock::FileLock;
use crate::pool::{PoolDocument, PoolStore};

/// Name of the policy state file inside the pool directory.
pub const STATE_FILE: &str = "pool-state.json";
const STATE_LOCK: &str = "pool-state.lock";
const DAMAGED_PREFIX: &str = "pool-state.json.damaged-";
const TEMP_PREFIX: &str = ".pool-state-";
/// Largest state file read: 64 MiB, about 300,000 accounts' worth (some 200 bytes each).
/// A bigger file is refused before it is read, so a runaway or hostile writer cannot make
/// every process that polls it parse hundreds of megabytes.
pub const STATE_FILE_MAX_BYTES: u64 = 64 << 20;

/// What is wrong with the policy state file. The accounts are not affected: they load with
/// fresh policy state for whatever the file could not provide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateProblem {
    /// The file is not a policy state document (line/column and category; never contents).
    #[error(
        "{} is not a usable policy state file ({}); accounts start with fresh state and the next save moves it aside",
        shown(path),
        escape_control(detail)
    )]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The file was written by a newer program; it is read as far as this version
    /// understands it... not at all, and never overwritten.
    #[error(
        "{} has policy state version {found}, newer than the {supported} this program understands; accounts start with fresh state and the file is left alone (upgrade the program)",
        shown(path)
    )]
    Newer {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// The newest version this program reads.
        supported: u32,
    },
    /// The file has state for accounts the pool does not have (removed since, or the
    /// file belongs to another pool); it is ignored.
    #[error(
        "{} has state for {count} account(s) the pool does not have; ignored",
        shown(path)
    )]
    UnknownAccounts {
        /// The file.
        path: PathBuf,
        /// How many.
        count: usize,
    },
    /// The file could not be read at all (not a regular file, too large, no permission);
    /// accounts start with fresh state and saves fail until it is fixed.
    #[error(
        "{} could not be read ({}); accounts start with fresh state",
        shown(path),
        escape_control(detail)
    )]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why (the storage error's text).
        detail: String,
    },
}

fn shown(path: &std::path::Path) -> String {
    crate::error::shown(path)
}

use auth_core::terminal::escape_control;

/// The state file as read by [`PoolStore::load_policy_state`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct StateLoad {
    /// The state (empty when the file is missing or unusable).
    pub state: PolicyState,
    /// Why the file could not be used, if it could not.
    pub problem: Option<StateProblem>,
}

/// A ready policy over a pool, from [`PoolStore::rotation_pool`], kept in step with the
/// pool and the shared state by [`PoolStore::save_rotation_state`].
#[derive(Debug)]
#[non_exhaustive]
pub struct RotationSetup {
    /// Every account of the pool under its stable id; disabled by hand
    /// ([`DisabledReason::Manual`](rotation_policy::DisabledReason::Manual)) or gone for everyone
    /// (`LoginRequired`, `Deactivated`) as the pool says; the shared state merged in.
    pub policy: rotation_policy::Pool,
    /// The pool document as last read (tokens for the request loop; re-read by
    /// [`PoolStore::save_rotation_state`] when `pool.json` changed).
    pub document: PoolDocument,
    /// Problems with the state file (the accounts loaded anyway).
    pub problems: Vec<StateProblem>,
    pool_seen: Option<FileStamp>,
    state_seen: Option<FileStamp>,
}

/// What [`PoolStore::save_rotation_state`] did.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct StateSync {
    /// Accounts whose changed state was written.
    pub written: usize,
    /// What merging the file's state (others' changes) back into the policy did.
    pub merged: MergeReport,
    /// Accounts that joined the rotation because they were added to the pool.
    pub added: usize,
    /// Accounts that left it because they were removed from the pool.
    pub removed: usize,
}

/// The identity of one version of a file: every writer of the pool's files replaces them,
/// so a new version has a new inode (and usually a new size and time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

impl FileStamp {
    /// The stamp of `path` now (`None` when it cannot be read).
    pub fn of(path: &std::path::Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Some(Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
        })
    }
}

impl PoolStore {
    /// `<dir>/pool-state.json`.
    pub fn state_file(&self) -> PathBuf {
        self.dir().join(STATE_FILE)
    }

    /// Read the shared policy state without locking (writers replace the file
    /// atomically). A missing file is empty state; a malformed or newer one is empty
    /// state with a [`StateProblem`].
    ///
    /// # Errors
    /// Only I/O errors (permissions, a FIFO or directory in the file's place, a file over
    /// [`STATE_FILE_MAX_BYTES`]).
    pub fn load_policy_state(&self) -> Result<StateLoad> {
        let path = self.state_file();
        let Some(bytes) = read_if_exists(&path, STATE_FILE_MAX_BYTES)? else {
            return Ok(StateLoad::default());
        };
        Ok(parse_state(&path, &bytes))
    }

    /// Merge `changes` into the shared state file under its lock and return the file's new
    /// content (everyone's state). Nothing is written when `changes` is empty and the file
    /// is usable.
    ///
    /// # Errors
    /// [`StorageError::NewerVersion`] when the file comes from a newer program (it is left
    /// alone); lock and I/O errors, after which the file is as it was.
    pub fn save_policy_state(&self, changes: &PolicyState) -> Result<PolicyState> {
        self.save_policy_state_stamped(changes, None)
            .map(|(state, _)| state)
    }

    /// [`save_policy_state`](Self::save_policy_state), also returning the [`FileStamp`] of
    /// the file it leaves, taken under the lock: exactly the version whose content it
    /// returns, so a poller that records it never mistakes a later writer's version for one
    /// it has seen. With `now`, what no reader would use any more is dropped as the file is
    /// written — cooldowns that ended before `now`, and accounts left with nothing to say —
    /// so the file does not grow with every model name and account ever seen.
    ///
    /// # Errors
    /// As [`save_policy_state`](Self::save_policy_state).
    pub fn save_policy_state_stamped(
        &self,
        changes: &PolicyState,
        now: Option<Timestamp>,
    ) -> Result<(PolicyState, Option<FileStamp>)> {
        let path = self.state_file();
        auth_core::regular_file::create_private_dir_all(self.dir())
            .map_err(|e| StorageError::io("create the pool directory", self.dir(), e))?;
        let _lock = FileLock::acquire(&self.dir().join(STATE_LOCK), 0o600, self.lock_timeout())?;
        let loaded = match read_if_exists(&path, STATE_FILE_MAX_BYTES)? {
            Some(bytes) => parse_state(&path, &bytes),
            None => StateLoad::default(),
        };
        match &loaded.problem {
            Some(StateProblem::Newer {
                found, supported, ..
            }) => {
                return Err(StorageError::NewerVersion {
                    path,
                    found: *found,
                    supported: *supported,
                });
            }
            Some(StateProblem::Malformed { .. }) => self.set_aside(&path)?,
            _ => {
                if changes.accounts.is_empty() {
                    return Ok((loaded.state, FileStamp::of(&path)));
                }
            }
        }
        let mut state = loaded.state;
        state.merge(changes);
        if let Some(now) = now {
            prune_ended(&mut state, now);
        }
        let bytes = serde_json::to_vec(&state).map_err(|e| StorageError::Serialize {
            what: "the policy state",
            detail: e.to_string(),
        })?;
        write_atomic(&path, &bytes, TEMP_PREFIX)?;
        Ok((state, FileStamp::of(&path)))
    }

    /// Everything a rotation proxy needs in one call: the pool's accounts in a new
    /// [`rotation_policy::Pool`] under their stable ids, disabled or gone accounts marked as
    /// such, cooldowns from the pool's legacy `cooldowns` field, and the shared state file
    /// merged in. Problems with the state file are reported in
    /// [`RotationSetup::problems`], never fatal.
    ///
    /// # Errors
    /// Reading the pool ([`PoolStore::load`]), an invalid `config`, and I/O errors on the
    /// state file.
    pub fn rotation_pool(
        &self,
        config: PolicyConfig,
        seed: u64,
        now: Timestamp,
    ) -> Result<RotationSetup> {
        let pool_seen = FileStamp::of(&self.file());
        let document = self.load()?.pool;
        let mut policy =
            rotation_policy::Pool::new(config, seed).map_err(|e| StorageError::Invalid {
                what: "rotation policy configuration",
                detail: e.to_string(),
            })?;
        for account in &document.accounts {
            if let Ok(id) = AccountId::new(account.id.clone()) {
                // ok: ids are unique in a loaded pool, so `add` cannot refuse a duplicate.
                let _ = policy.add(id);
            }
        }
        let mut problems = Vec::new();
        let state_seen = FileStamp::of(&self.state_file());
        let loaded = self.load_policy_state().unwrap_or_else(|err| StateLoad {
            state: PolicyState::default(),
            problem: Some(StateProblem::Unreadable {
                path: self.state_file(),
                detail: err.to_string(),
            }),
        });
        problems.extend(loaded.problem);
        let report = policy.merge_state(&loaded.state, now);
        if !report.unknown.is_empty() {
            problems.push(StateProblem::UnknownAccounts {
                path: self.state_file(),
                count: report.unknown.len(),
            });
        }
        // The pool's word on each account comes last, so no state from the file (an old
        // enable, a stray "login required") can outvote the pool.
        reconcile_with_pool(&mut policy, &document);
        for account in &document.accounts {
            let Ok(id) = AccountId::new(account.id.clone()) else {
                continue;
            };
            for (family, until) in &account.cooldowns {
                let until = Timestamp::from_millis(until.saturating_mul(1000));
                if until > now {
                    let _ = policy.restore_cooldown(&id, family, until, now);
                }
            }
        }
        // What came from the files is not a change of this process.
        let _ = policy.take_changes();
        Ok(RotationSetup {
            policy,
            document,
            problems,
            pool_seen,
            state_seen,
        })
    }

    /// One tick of a rotation loop, in one call: accounts added to or removed from the
    /// pool join or leave `setup.policy` (when `pool.json` changed), what the policy learned
    /// since the last call is written (only changed accounts, merged under the state lock),
    /// everyone else's state is merged in (when the state file changed), and the pool's word
    /// (disabled by hand, gone for everyone, or neither) is applied last. Cheap when nothing
    /// changed: two `stat`s, no lock, no read, no write. Call it every few hundred
    /// milliseconds from a background task (it blocks).
    ///
    /// # Errors
    /// Reading a changed pool, or writing the state ([`save_policy_state`](Self::save_policy_state));
    /// the policy keeps the changes it could not write and the next call writes them.
    pub fn save_rotation_state(
        &self,
        setup: &mut RotationSetup,
        now: Timestamp,
    ) -> Result<StateSync> {
        let mut sync = StateSync::default();
        let pool_now = FileStamp::of(&self.file());
        let pool_was = setup.pool_seen;
        if pool_now != setup.pool_seen {
            let document = self.load()?.pool;
            let (added, removed) = follow_accounts(&mut setup.policy, &setup.document, &document);
            sync.added = added;
            sync.removed = removed;
            setup.document = document;
            setup.pool_seen = pool_now;
        }
        let changes = setup.policy.take_changes();
        // The stamp recorded is always that of the version merged: taken before a read
        // (a version written meanwhile is read next time), under the lock for a write.
        let state_now = FileStamp::of(&self.state_file());
        let merged = if !changes.accounts.is_empty() {
            sync.written = changes.accounts.len();
            match self.save_policy_state_stamped(&changes, Some(now)) {
                Ok(merged) => Some(merged),
                Err(err) => {
                    // Handed back: the next call writes them (merging them in again marks
                    // them changed only where the policy still differs).
                    setup.policy.merge_state(&changes, now);
                    return Err(err);
                }
            }
        } else if state_now != setup.state_seen {
            Some((self.load_policy_state()?.state, state_now))
        } else {
            None
        };
        let pool_changed = pool_now != pool_was;
        let merged_any = merged.is_some();
        if let Some((merged, stamp)) = merged {
            sync.merged = setup.policy.merge_state(&merged, now);
            setup.state_seen = stamp;
        }
        if pool_changed || merged_any {
            reconcile_with_pool(&mut setup.policy, &setup.document);
        }
        Ok(sync)
    }

    fn set_aside(&self, path: &std::path::Path) -> Result<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let aside = (0..1000)
            .map(|n| self.dir().join(format!("{DAMAGED_PREFIX}{now}.{n}")))
            .find(|p| std::fs::symlink_metadata(p).is_err())
            .ok_or_else(|| StorageError::Invalid {
                what: "pool directory",
                detail: format!(
                    "{} holds too many damaged state files; remove old `{DAMAGED_PREFIX}*` files",
                    self.dir().display()
                ),
            })?;
        std::fs::rename(path, &aside)
            .map_err(|e| StorageError::io("move aside the damaged", path, e))?;
        tracing::warn!(
            state = %crate::error::shown(path),
            aside = %crate::error::shown(&aside),
            "the policy state file was unusable; moved aside"
        );
        Ok(())
    }
}

/// Makes `policy` agree with the pool on what the pool decides, for every account of `doc`:
/// disabled by hand ([`DisabledReason::Manual`](rotation_policy::DisabledReason::Manual)),
/// gone for everyone (`LoginRequired`, `Deactivated`), or neither — then a disable for one of
/// these reasons that came from elsewhere (shared state) is lifted. A disable the policy
/// decided itself (too many 401s) is left alone. O(accounts · families).
pub fn reconcile_with_pool(policy: &mut rotation_policy::Pool, doc: &PoolDocument) {
    use rotation_policy::DisabledReason;
    for account in &doc.accounts {
        let Ok(id) = AccountId::new(account.id.clone()) else {
            continue;
        };
        let current = policy
            .export_account(&id)
            .and_then(|state| state.disabled.map(|d| d.reason));
        match (pool_disabled_reason(account), current) {
            (Some(reason), current) if current != Some(reason) => {
                let _ = policy.disable_for(&id, reason);
            }
            (
                None,
                Some(
                    DisabledReason::Manual
                    | DisabledReason::LoginRequired
                    | DisabledReason::Deactivated,
                ),
            ) => {
                let _ = policy.enable(&id);
            }
            _ => {}
        }
    }
}

/// Drops what no reader would use any more: cooldowns that ended before `now` (every pool
/// ignores them), usage reports whose windows all reset, usage of more limits than a pool
/// keeps, and accounts left with nothing to say.
fn prune_ended(state: &mut PolicyState, now: Timestamp) {
    let empty = rotation_policy::AccountState::default();
    state.accounts.retain(|_, account| {
        account.families.retain(|_, family| family.until > now);
        if account.cooldown.as_ref().is_some_and(|c| c.until <= now) {
            account.cooldown = None;
        }
        account.usage.retain(|_, usage| usage.is_current(now));
        // A pool keeps at most MAX_LIMITS limits: more in the file (a hostile or broken
        // writer's) would only grow it. The default limit first, then by id.
        if account.usage.len() > rotation_policy::usage::MAX_LIMITS {
            let mut ids: Vec<String> = account.usage.keys().cloned().collect();
            ids.sort_by_key(|id| (id != rotation_policy::usage::DEFAULT_LIMIT, id.clone()));
            for id in ids.into_iter().skip(rotation_policy::usage::MAX_LIMITS) {
                account.usage.remove(&id);
            }
        }
        *account != empty
    });
}

/// Adds to `policy` the accounts of `new` it does not have and removes those `new` no
/// longer has; returns how many of each.
fn follow_accounts(
    policy: &mut rotation_policy::Pool,
    old: &PoolDocument,
    new: &PoolDocument,
) -> (usize, usize) {
    let ids = |doc: &PoolDocument| -> std::collections::HashSet<String> {
        doc.accounts.iter().map(|a| a.id.clone()).collect()
    };
    let (before, after) = (ids(old), ids(new));
    let mut added = 0;
    for id in after.difference(&before) {
        if let Ok(id) = AccountId::new(id.clone())
            && policy.add(id).is_ok()
        {
            added += 1;
        }
    }
    let mut removed = 0;
    for id in before.difference(&after) {
        if let Ok(id) = AccountId::new(id.clone())
            && policy.remove(&id).is_ok()
        {
            removed += 1;
        }
    }
    (added, removed)
}

/// Why the pool itself keeps `account` out of rotation: disabled by hand, or its login gone
/// for everyone.
pub fn pool_disabled_reason(
    account: &crate::pool::Account,
) -> Option<rotation_policy::DisabledReason> {
    match (&account.unusable, account.enabled) {
        (Some(mark), _) => Some(disabled_reason_for(mark.reason)),
        (None, false) => Some(rotation_policy::DisabledReason::Manual),
        (None, true) => None,
    }
}

/// The policy's reason for an account the pool marked [unusable](crate::pool::Unusable).
pub fn disabled_reason_for(reason: crate::pool::UnusableReason) -> rotation_policy::DisabledReason {
    match reason {
        crate::pool::UnusableReason::Deactivated => rotation_policy::DisabledReason::Deactivated,
        _ => rotation_policy::DisabledReason::LoginRequired,
    }
}

fn parse_state(path: &std::path::Path, bytes: &[u8]) -> StateLoad {
    // Fast path for the usual good file: parsed straight into the typed state, which is
    // about four times faster than through a `serde_json::Value` tree (at 10,000 accounts
    // ~6 ms against ~24 ms, paid on every save and every poll of the file). Anything it
    // refuses takes the path below, which says why.
    if bytes.trim_ascii_start().starts_with(b"{")
        && let Ok(state) = serde_json::from_slice::<PolicyState>(bytes)
        && state.version <= rotation_policy::POLICY_STATE_VERSION
    {
        return StateLoad {
            state,
            problem: None,
        };
    }
    let malformed = |detail: String| StateLoad {
        state: PolicyState::default(),
        problem: Some(StateProblem::Malformed {
            path: path.to_path_buf(),
            detail,
        }),
    };
    // Why the typed parse refused it, without building a tree of the file (a large file
    // of junk must not cost gigabytes): the top level first, then the version alone (every
    // other field is skipped as it streams by), then the typed error itself.
    // serde's derived structs also read a JSON array as their fields in order (`[]` is an
    // empty state), so without this check such a file would be taken as state and then
    // overwritten instead of reported and moved aside.
    if !bytes.trim_ascii_start().starts_with(b"{") {
        return match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Err(e) => malformed(located(&e)),
            Ok(_) => malformed("the top level is not a JSON object".to_owned()),
        };
    }
    #[derive(serde::Deserialize)]
    struct VersionOnly {
        #[serde(default)]
        version: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<VersionOnly>(bytes) {
        Err(e) => return malformed(located(&e)),
        Ok(VersionOnly {
            version: Some(version),
        }) => {
            if let Some(found) = version.as_u64()
                && found > u64::from(rotation_policy::POLICY_STATE_VERSION)
            {
                return StateLoad {
                    state: PolicyState::default(),
                    problem: Some(StateProblem::Newer {
                        path: path.to_path_buf(),
                        found: u32::try_from(found).unwrap_or(u32::MAX),
                        supported: rotation_policy::POLICY_STATE_VERSION,
                    }),
                };
            }
        }
        Ok(_) => {}
    }
    match serde_json::from_slice::<PolicyState>(bytes) {
        Ok(state) => StateLoad {
            state,
            problem: None,
        },
        Err(e) => malformed(located(&e)),
    }
}

/// A JSON error with its line and column, never the file's text.
fn located(e: &serde_json::Error) -> String {
    if e.line() > 0 {
        format!(
            "line {}, column {}: {}",
            e.line(),
            e.column(),
            describe_json_error(e)
        )
    } else {
        describe_json_error(e)
    }
}
