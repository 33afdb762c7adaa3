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
    /// The Codex home is written first (under the CLI's own locks): if the pool update then
    /// failed, the CLI would still have a complete, valid login.
    pub fn activate(&self, index: usize, store: &dyn CredentialStore, now: u64) -> Result<Account> {
        let loaded = self.load()?;
        let account = loaded
            .pool
            .accounts
            .get(index)
            .cloned()
            .ok_or_else(|| out_of_range(index, loaded.pool.accounts.len()))?;
        let doc = AuthDocument::chatgpt(
            account.tokens.clone(),
            account.last_refresh.clone().unwrap_or_else(Timestamp::now),
        );
        store.save(&doc)?;
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
        Ok(account)
    }
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
