//! Moving logins between a Codex home and the pool: [`PoolStore::import`] and
//! [`PoolStore::activate`].

use auth_core::{AuthDocument, AuthMode, Timestamp};

use super::document::{Account, Upsert};
use super::store::PoolStore;
use crate::error::{Result, StorageError};
use crate::store::CredentialStore;

impl PoolStore {
    /// Read the current Codex login from `store` and add it to the pool (or refresh the
    /// tokens of the same login already there, matched by account id and email).
    ///
    /// # Errors
    /// [`StorageError::Invalid`] when the Codex home has no login or an API-key login
    /// (only ChatGPT logins can be pooled); storage errors otherwise.
    pub fn import(&self, store: &dyn CredentialStore, now: u64) -> Result<(Upsert, Account)> {
        let where_ = store.home().dir().display().to_string();
        let doc = store.load()?.ok_or_else(|| StorageError::Invalid {
            what: "Codex login",
            detail: format!("no login found in {where_}; run `codex login` there first"),
        })?;
        let tokens = match (doc.effective_mode(), doc.tokens) {
            (Some(AuthMode::Chatgpt), Some(tokens)) => tokens,
            (mode, _) => {
                return Err(StorageError::Invalid {
                    what: "Codex login",
                    detail: format!(
                        "the login in {where_} is {} — only ChatGPT logins (with tokens) can be \
                         added to the pool",
                        mode.map(|m| format!("an `{m}` login"))
                            .unwrap_or_else(|| "empty".to_owned())
                    ),
                });
            }
        };
        let account = Account::from_login(tokens, doc.last_refresh, now);
        self.update(|pool| {
            let outcome = pool.upsert(account);
            let index = match outcome {
                Upsert::Added(i) | Upsert::Updated(i) => i,
            };
            (outcome, pool.accounts[index].clone())
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
    /// Under the Codex CLI's own locks (so `codex` cannot refresh in between):
    ///
    /// 1. the login currently in `store`, if it is a ChatGPT login, goes into the pool
    ///    ([`Pool::upsert`](super::Pool::upsert): the same login gets the home's tokens,
    ///    which the CLI may have refreshed since, unless the pool's copy was refreshed
    ///    later; an unknown login is added) — otherwise switching away and back would
    ///    resurrect a spent refresh token;
    /// 2. the account at `index` (with those fresh tokens if it is the same login) is
    ///    written to `store`;
    /// 3. it is marked active.
    ///
    /// Locks are taken in this order: the Codex home's, then the pool's.
    ///
    /// # Errors
    /// [`StorageError::Invalid`] when `index` is out of range or `store` holds an API-key
    /// login (which the pool cannot keep, so replacing it would lose it); a damaged
    /// `auth.json` ([`StorageError::AuthFile`]) is not replaced either. In every error case
    /// neither the Codex home nor the pool has changed.
    pub fn switch_to(
        &self,
        index: usize,
        store: &dyn CredentialStore,
        now: u64,
    ) -> Result<Activated> {
        let guard = store.home().lock()?;
        let current = store.load()?;
        let refuse = |kind: String| StorageError::Invalid {
            what: "Codex login",
            detail: format!(
                "{} holds {kind}, which the pool cannot keep; replacing it would lose it — \
                 run `codex logout` there first if that is what you want",
                store.home().dir().display()
            ),
        };
        let outgoing = match current {
            None => None,
            Some(doc) => match (doc.auth_mode, doc.tokens) {
                (Some(AuthMode::ApiKey), _) => return Err(refuse("an API-key login".into())),
                (Some(AuthMode::Other(mode)), _) => {
                    let mode: String = mode.chars().take(20).collect();
                    return Err(refuse(format!("a login of unknown kind {mode:?}")));
                }
                // A ChatGPT login (older CLIs may also have stored an API key they derived
                // from it; it can be derived again).
                (_, Some(tokens)) => Some(Account::from_login(tokens, doc.last_refresh, now)),
                (_, None) if doc.openai_api_key.is_some() => {
                    return Err(refuse("an API-key login".into()));
                }
                // Nothing usable to keep.
                (_, None) => None,
            },
        };
        let (account, previous) = self.try_update(|pool| {
            let len = pool.accounts.len();
            if index >= len {
                return Err(out_of_range(index, len));
            }
            let previous = outgoing.map(|login| {
                let known = pool.accounts.iter().position(|a| a.same_login(&login));
                let outcome = match known {
                    // The pool's copy is fresher (e.g. a proxy refreshed it since the home
                    // got it): keep it, the home's refresh token may already be spent.
                    Some(i) if refreshed_later(&pool.accounts[i], &login) => Upsert::Updated(i),
                    _ => pool.upsert(login),
                };
                let i = match outcome {
                    Upsert::Added(i) | Upsert::Updated(i) => i,
                };
                (outcome, pool.accounts[i].clone())
            });
            Ok::<_, StorageError>((pool.accounts[index].clone(), previous))
        })?;
        let doc = AuthDocument::chatgpt(
            account.tokens.clone(),
            account.last_refresh.clone().unwrap_or_else(Timestamp::now),
        );
        store.save_locked(&doc, &guard)?;
        let key = account.key();
        self.try_update(|pool| {
            // Find it again by identity: another process may have reordered the pool.
            let i = pool
                .accounts
                .iter()
                .position(|a| a.key() == key)
                .ok_or_else(|| StorageError::Invalid {
                    what: "account",
                    detail: "the account was removed by another process while it was being \
                             activated"
                        .to_owned(),
                })?;
            pool.set_active(i, now);
            Ok::<_, StorageError>(())
        })?;
        drop(guard);
        Ok(Activated { account, previous })
    }
}

/// Whether `a`'s tokens were refreshed strictly later than `b`'s (an unknown time counts
/// as oldest).
fn refreshed_later(a: &Account, b: &Account) -> bool {
    let at = |x: &Account| x.last_refresh.as_ref().map(Timestamp::unix_seconds);
    match (at(a), at(b)) {
        (Some(x), Some(y)) => x > y,
        (Some(_), None) => true,
        (None, _) => false,
    }
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
