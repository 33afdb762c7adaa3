//! Moving logins between a Codex home and the pool: [`PoolStore::import`] (and
//! [`PoolStore::import_all`], all or nothing) and [`PoolStore::activate`] /
//! [`PoolStore::switch_to`] (locks, step order and rollback in a table on `switch_to`).

use auth_core::{AuthDocument, AuthMode, Timestamp};

use super::document::{Account, LinkedHome, Upsert};
use super::store::PoolStore;
use crate::error::{Result, StorageError};
use crate::lock::DEFAULT_LOCK_TIMEOUT;
use crate::store::CredentialStore;

impl PoolStore {
    /// Read the current Codex login from `store` and add it to the pool (or refresh the
    /// tokens of the same login already there, matched by account id and email).
    ///
    /// # Errors
    /// [`StorageError::Invalid`] when the Codex home has no login or an API-key login
    /// (only ChatGPT logins can be pooled); storage errors otherwise.
    pub fn import(&self, store: &dyn CredentialStore, now: u64) -> Result<(Upsert, Account)> {
        let mut done = self.import_all(&[store], now)?;
        done.pop().ok_or_else(|| StorageError::Invalid {
            what: "Codex login",
            detail: "nothing was imported".to_owned(),
        })
    }

    /// [`import`](Self::import) for several Codex homes at once, all or nothing: every
    /// home's login is read and checked first, and only when all are usable are they added
    /// in one pool update (a home that cannot be imported means none is). Returns one
    /// outcome per store, in order; two homes holding the same login both name its entry.
    ///
    /// ```
    /// use auth_storage::{CodexHome, CredentialStore, FileStore, PoolStore};
    /// # fn main() -> Result<(), auth_storage::StorageError> {
    /// let tmp = tempfile::tempdir().unwrap();
    /// let pool = PoolStore::new(tmp.path().join("pool"));
    /// let empty = FileStore::new(CodexHome::new(tmp.path().join("no-login")));
    /// // A home without a login: refused, and the pool was not even created.
    /// assert!(pool.import_all(&[&empty], 0).is_err());
    /// assert!(!pool.file().exists());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`import`](Self::import), for the first home that cannot be imported; then the
    /// pool is unchanged.
    pub fn import_all(
        &self,
        stores: &[&dyn CredentialStore],
        now: u64,
    ) -> Result<Vec<(Upsert, Account)>> {
        let accounts = stores
            .iter()
            .map(|store| importable(*store, now))
            .collect::<Result<Vec<_>>>()?;
        self.try_update(|pool| {
            let mut done = Vec::with_capacity(accounts.len());
            for (account, store) in accounts.into_iter().zip(stores) {
                let outcome = pool.upsert(account);
                let index = match outcome {
                    Upsert::Added(i) | Upsert::Updated(i) => i,
                };
                let this_home = home_key(store.home().dir());
                // The same login in a second Codex home: both CLIs would refresh it on their
                // own and spend each other's token; refused (nothing is written).
                if let Some(refusal) = other_home_holding(pool, index, &this_home) {
                    return Err(refusal);
                }
                // The home keeps using this login: refreshes must see its copy.
                pool.homes.insert(
                    this_home,
                    LinkedHome::new(pool.accounts[index].id.clone(), store.mode()),
                );
                done.push((outcome, pool.accounts[index].clone()));
            }
            Ok(done)
        })
    }

    /// Write the account at `index` into `store` as a regular ChatGPT login the Codex CLI
    /// accepts, then mark it active in the pool. Returns the account.
    ///
    /// The login being replaced is saved into the pool first (see [`switch_to`]), so
    /// tokens the Codex CLI refreshed meanwhile are never lost.
    ///
    /// [`switch_to`]: Self::switch_to
    ///
    /// # Errors
    /// As [`switch_to`](Self::switch_to).
    pub fn activate(&self, index: usize, store: &dyn CredentialStore, now: u64) -> Result<Account> {
        self.switch_to(index, store, now).map(|a| a.account)
    }

    /// [`activate`](Self::activate), reporting what happened to the login it replaced.
    ///
    /// The whole switch runs under three locks, taken in this order and held to the end:
    /// the refresh lock of the account handed over (`refresh-locks/<id>.lock`, so no
    /// [`PoolRefresher`](crate::refresh) spends its token meanwhile), the Codex home's
    /// (`auth.lock`, then `auth.json.lock`, as the Codex CLI takes them), then the pool's
    /// (`pool.lock`). Everything in this workspace takes them in that order (account, home,
    /// pool; a refresh takes several homes in path order), so they cannot deadlock; a
    /// concurrent `remove` or `update` of the pool waits for the switch (or the switch for
    /// it), and `codex` cannot refresh in between. Under the locks the home's login is read
    /// and `index` is checked against the pool as it is then. When another Codex home the
    /// pool handed the account to holds a newer copy (its CLI refreshed it), that copy is
    /// what this home gets.
    ///
    /// | step | what is written | if it fails |
    /// |------|-----------------|-------------|
    /// | 1 | nothing: the home's login is read and checked (API-key or damaged logins are refused), `index` is checked | error, nothing changed |
    /// | 2 | `pool.json`, atomically: the home's ChatGPT login merged in (rule below), account `index` marked active | error, nothing changed (the write is all or nothing) |
    /// | 3 | the home's login (`auth.json` or keyring): account `index`, with the merged tokens | step 2 is undone (the previous `pool.json` bytes put back): [`StorageError::RolledBack`] |
    /// | 3′ | undoing step 2 fails too | [`StorageError::PartiallyApplied`]: the pool has the merged login and the new active account, the home still has its old login; nothing is lost, run the switch again |
    ///
    /// Merge rule for the home's login (step 2): a login the pool does not know is added
    /// ([`PoolDocument::upsert`](super::PoolDocument::upsert)); a known one gets the home's tokens — which
    /// the CLI may have refreshed since — unless the pool's copy was refreshed strictly
    /// later (e.g. by a proxy), in which case the pool's copy is kept and is what the
    /// home gets if `index` is that account. Without this, switching away and back would
    /// resurrect a spent refresh token.
    ///
    /// The pool is written before the home because the pool keeps the home's login: if the
    /// home were overwritten first and the pool write then failed, the home's login would
    /// exist nowhere but in memory. For the same reason a crash (power loss, `kill -9`)
    /// between steps 2 and 3 loses nothing: the pool then names account `index` as active
    /// while the home still holds its previous login, which the pool also holds; running
    /// the switch again completes it.
    ///
    /// # Errors
    /// [`StorageError::Invalid`] when `index` is out of range or `store` holds an API-key
    /// login (which the pool cannot keep, so replacing it would lose it); a damaged
    /// `auth.json` ([`StorageError::AuthFile`]) is not replaced either. In those cases, and
    /// for every other error except [`StorageError::PartiallyApplied`], neither the Codex
    /// home nor `pool.json` has changed ([`StorageError::effect`] tells which).
    pub fn switch_to(
        &self,
        index: usize,
        store: &dyn CredentialStore,
        now: u64,
    ) -> Result<Activated> {
        // Plain bad input (a number past the end) is refused before any lock file or
        // directory is created; the number is checked again under the locks.
        let len = self.load()?.pool.accounts.len();
        if index >= len {
            return Err(out_of_range(index, len));
        }
        // Likewise a pool lock that is not a regular file, and a home login the switch would
        // refuse (an API key, a damaged or oversized file), are refused before the home's
        // lock files are created (they are taken first, see the lock order above). Both are
        // checked again under the locks.
        self.check_lock_file()?;
        outgoing_login(store, now)?;
        // The account's refresh lock first (the lock order is account, home, pool): no
        // process spends the account's refresh token while it is being handed over.
        let target = self.load()?.pool.accounts.get(index).cloned();
        let account_guard = match &target {
            Some(account) => Some(self.lock_account_refresh(account, DEFAULT_LOCK_TIMEOUT)?),
            None => None,
        };
        let target = target.map(|a| a.id);
        let home_guard = store.home().lock()?;
        let pool_guard = self.lock_pool()?;
        let outgoing = outgoing_login(store, now)?;
        let this_home = home_key(store.home().dir());
        let (activated, undo) = self.change_locked(&pool_guard, |pool| {
            let len = pool.accounts.len();
            if index >= len {
                return Err(out_of_range(index, len));
            }
            if target.as_deref() != Some(pool.accounts[index].id.as_str()) {
                return Err(StorageError::Invalid {
                    what: "account number",
                    detail: format!(
                        "account #{} changed while switching (another process edited the \
                         pool); run the command again",
                        index + 1
                    ),
                });
            }
            // A refresh token works once: two Codex homes whose CLIs refresh one login on
            // their own would spend each other's token.
            if let Some(refusal) = other_home_holding(pool, index, &this_home) {
                return Err(refusal);
            }
            if let Some(mark) = &pool.accounts[index].unusable {
                return Err(StorageError::Invalid {
                    what: "account",
                    detail: format!(
                        "account #{} ({}) is unusable: {mark}; sign in to it again \
                         (`accounts add`, or `codex login` and `accounts import`) first",
                        index + 1,
                        pool.accounts[index].id
                    ),
                });
            }
            let previous = outgoing.map(|login| {
                // `upsert` keeps the pool's copy when it is newer (e.g. a proxy refreshed it
                // since the home got it): the home's refresh token may already be spent.
                let outcome = pool.upsert(login);
                let i = match outcome {
                    Upsert::Added(i) | Upsert::Updated(i) => i,
                };
                (outcome, pool.accounts[i].clone())
            });
            // `upsert` only appends or updates in place, so `index` still names the account.
            pool.set_active(index, now);
            // Refresh finds the home's copy of this login through this entry.
            let id = pool.accounts[index].id.clone();
            pool.homes
                .insert(this_home.clone(), LinkedHome::new(id, store.mode()));
            Ok::<_, StorageError>(Activated {
                account: pool.accounts[index].clone(),
                previous,
            })
        })?;
        let doc = AuthDocument::chatgpt(
            activated.account.tokens.clone(),
            activated
                .account
                .last_refresh
                .clone()
                .unwrap_or_else(Timestamp::now),
        );
        let saved = save_checked(store, &doc, &home_guard);
        drop(account_guard);
        match (saved, undo) {
            (Ok(()), undo) => {
                if let Some(undo) = &undo {
                    self.prune_best_effort(undo);
                }
                Ok(activated)
            }
            // The pool did not change (the account was already active with these tokens):
            // the failed save is the only step, and it changed nothing.
            (Err(cause), None) => Err(cause),
            (Err(cause), Some(undo)) => match self.undo_locked(&pool_guard, undo) {
                Ok(()) => Err(StorageError::RolledBack {
                    operation: SWITCH,
                    cause: Box::new(cause),
                }),
                Err(undo_error) => Err(StorageError::PartiallyApplied {
                    operation: SWITCH,
                    cause: Box::new(cause),
                    undo_error: Box::new(undo_error),
                    applied: format!(
                        "{} marks account #{} active and keeps the login {} held, but {} \
                         still holds its previous login; nothing is lost — fix the cause and \
                         run the switch again",
                        self.file().display(),
                        index + 1,
                        store.home().dir().display(),
                        store.home().dir().display(),
                    ),
                }),
            },
        }
    }
}

const SWITCH: &str = "switching the Codex home's login";

/// The home's current login as a pool account (`None`: nothing worth keeping), or a refusal
/// when it holds something the pool cannot keep.
fn outgoing_login(store: &dyn CredentialStore, now: u64) -> Result<Option<Account>> {
    let refuse = |kind: String| StorageError::Invalid {
        what: "Codex login",
        detail: format!(
            "{} holds {kind}, which the pool cannot keep; replacing it would lose it — \
             run `codex logout` there first if that is what you want",
            store.home().dir().display()
        ),
    };
    let Some(doc) = store.load()? else {
        return Ok(None);
    };
    match (doc.auth_mode, doc.tokens) {
        (Some(AuthMode::ApiKey), _) => Err(refuse("an API-key login".into())),
        (Some(AuthMode::Other(mode)), _) => {
            let mode: String = mode.chars().take(20).collect();
            Err(refuse(format!("a login of unknown kind {mode:?}")))
        }
        // A ChatGPT login (older CLIs may also have stored an API key they derived from it;
        // it can be derived again).
        (_, Some(tokens)) => Ok(Some(Account::from_login(tokens, doc.last_refresh, now))),
        (_, None) if doc.openai_api_key.is_some() => Err(refuse("an API-key login".into())),
        // Nothing usable to keep.
        (_, None) => Ok(None),
    }
}

/// Save `doc`; when the save reports an error, re-read the store: a save whose last step
/// failed after the document was already in place (e.g. the directory fsync after the
/// rename) took effect, and undoing the pool then would leave the two disagreeing.
fn save_checked(
    store: &dyn CredentialStore,
    doc: &AuthDocument,
    guard: &crate::CommitGuard,
) -> Result<()> {
    match store.save_locked(doc, guard) {
        Ok(()) => Ok(()),
        Err(err) => match store.load() {
            Ok(Some(now_there)) if &now_there == doc => {
                tracing::warn!(%err, "the login was saved, but a later step of the save failed");
                Ok(())
            }
            _ => Err(err),
        },
    }
}

/// The ChatGPT login in `store` as a pool account, or why it cannot be pooled.
fn importable(store: &dyn CredentialStore, now: u64) -> Result<Account> {
    let where_ = store.home().dir().display().to_string();
    let doc = store.load()?.ok_or_else(|| StorageError::Invalid {
        what: "Codex login",
        detail: format!("no login found in {where_}; run `codex login` there first"),
    })?;
    match (doc.effective_mode(), doc.tokens) {
        (Some(AuthMode::Chatgpt), Some(tokens)) => {
            Ok(Account::from_login(tokens, doc.last_refresh, now))
        }
        (mode, _) => Err(StorageError::Invalid {
            what: "Codex login",
            detail: format!(
                "the login in {where_} is {} — only ChatGPT logins (with tokens) can be added \
                 to the pool",
                mode.map(|m| format!("an `{m}` login"))
                    .unwrap_or_else(|| "empty".to_owned())
            ),
        }),
    }
}

/// Another Codex home the pool knows that holds (or may hold) account `index`'s login
/// right now, as a refusal naming it. Homes are read without their locks. A home that is
/// gone, empty, or holds another login does not count; one whose store cannot be read
/// counts when the pool last handed it this login (or does not know what it holds): it may
/// hold the login, and a refresh token works once.
fn other_home_holding(
    pool: &super::PoolDocument,
    index: usize,
    this_home: &str,
) -> Option<StorageError> {
    let account = &pool.accounts[index];
    for (dir, link) in pool
        .homes
        .iter()
        .filter(|(dir, _)| dir.as_str() != this_home)
    {
        let home = crate::CodexHome::new(std::path::PathBuf::from(dir.as_str()));
        if !home.dir().is_dir() {
            continue;
        }
        let shown = crate::error::shown(std::path::Path::new(dir));
        let may_hold = pool
            .account(&link.account)
            .is_none_or(|linked| linked.same_login(account));
        let read = link
            .mode()
            .ok_or_else(|| format!("its credential store `{}` is unknown here", link.store))
            .and_then(|mode| crate::open_store(home, mode).map_err(|e| e.to_string()))
            .and_then(|store| store.load().map_err(|e| e.to_string()));
        let holds = match read {
            Ok(Some(doc)) => doc
                .tokens
                .is_some_and(|tokens| account.same_login(&Account::from_login(tokens, None, 0))),
            Ok(None) => false,
            Err(why) if may_hold => {
                return Some(StorageError::Invalid {
                    what: "account",
                    detail: format!(
                        "account #{} may be the login of the Codex home {shown}, which cannot \
                         be read ({}); a refresh token works once, so two Codex homes cannot \
                         share one login — fix or remove that home first",
                        index + 1,
                        auth_core::terminal::escape_control(&why)
                    ),
                });
            }
            Err(_) => false,
        };
        if holds {
            return Some(StorageError::Invalid {
                what: "account",
                detail: format!(
                    "account #{} is the login of the Codex home {shown}; a refresh token \
                     works once, so two Codex homes cannot share one login — switch that \
                     home to another account first (or run `codex logout` there)",
                    index + 1
                ),
            });
        }
    }
    None
}

/// How a Codex home is named in [`PoolDocument::homes`](super::PoolDocument::homes): its
/// absolute path (canonical when it exists), so two spellings of one home are one entry.
pub(crate) fn home_key(dir: &std::path::Path) -> String {
    let absolute = dir
        .canonicalize()
        .or_else(|_| std::path::absolute(dir))
        .unwrap_or_else(|_| dir.to_path_buf());
    absolute.to_string_lossy().into_owned()
}

/// What [`PoolStore::switch_to`] did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Activated {
    /// The account now in the Codex home.
    pub account: Account,
    /// The ChatGPT login the Codex home held before, as the pool now has it: `Added` when
    /// the pool did not know it, `Updated` when it did (its tokens taken from the home
    /// unless the pool's were refreshed later). `None` when the home had no ChatGPT login.
    pub previous: Option<(Upsert, Account)>,
}

pub(crate) fn out_of_range(index: usize, len: usize) -> StorageError {
    StorageError::Invalid {
        what: "account number",
        detail: if len == 0 {
            "the pool has no accounts; import one first".to_owned()
        } else {
            format!("there is no account #{} (the pool has {len})", index + 1)
        },
    }
}
