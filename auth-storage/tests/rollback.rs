//! A failed operation changes nothing: a switch whose login write fails puts the pool back
//! byte for byte and says so; a pool write that fails leaves no reset marker or moved file
//! behind; only when the undo fails too is the error "partially applied".
//!
//! Faults are real where the kernel offers them to root (`chattr +i`: an immutable file
//! cannot be replaced, an immutable directory gets no new entries); a test prints `SKIP:`
//! when the file system does not support it. One seam is a `CredentialStore` whose save
//! fails, which the trait allows any caller to write.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use auth_core::{AuthDocument, Timestamp};
use auth_storage::pool::Account;
use auth_storage::{
    CodexHome, CommitGuard, CredentialStore, FailureEffect, FileStore, PoolStore, StorageError,
};
use common::{skip, tokens};

fn at(secs: u64) -> Timestamp {
    Timestamp::from_system_time(UNIX_EPOCH + Duration::from_secs(secs))
}

fn login(email: &str, id: &str, refresh: &str) -> AuthDocument {
    AuthDocument::chatgpt(tokens(email, id, refresh), at(1500))
}

/// A pool holding alice and bob, alice active.
fn pool_with_two(dir: &Path) -> PoolStore {
    let pool = PoolStore::new(dir);
    pool.update(|p| {
        for (email, id, rt) in [
            ("alice@example.com", "acct-a", "rt-a1"),
            ("bob@example.com", "acct-b", "rt-b1"),
        ] {
            p.upsert(Account::from_login(
                tokens(email, id, rt),
                Some(at(1000)),
                1,
            ));
        }
        p.set_active(0, 5);
    })
    .unwrap();
    pool
}

/// Every regular file in `dir` (not recursive) with its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// `chattr +i` on `path` until dropped; `None` (after printing SKIP) when unsupported.
#[derive(Debug)]
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path, test: &str) -> Option<Self> {
        let ok = Command::new("chattr")
            .arg("+i")
            .arg(path)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            skip(
                test,
                "`chattr +i` is not available here (not root, or the file system has no immutable flag)",
            );
            return None;
        }
        Some(Self(path.to_path_buf()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// A file store whose save fails, as a full disk or a revoked permission would make it.
#[derive(Debug)]
struct FailingSave(FileStore);

impl CredentialStore for FailingSave {
    fn home(&self) -> &CodexHome {
        self.0.home()
    }
    fn load(&self) -> auth_storage::Result<Option<AuthDocument>> {
        self.0.load()
    }
    fn save_locked(&self, _doc: &AuthDocument, _guard: &CommitGuard) -> auth_storage::Result<()> {
        Err(StorageError::Invalid {
            what: "test fault",
            detail: "the save was made to fail".into(),
        })
    }
    fn delete_locked(&self, guard: &CommitGuard) -> auth_storage::Result<bool> {
        self.0.delete_locked(guard)
    }
}

/// A file store whose save makes the pool directory immutable first and then fails, so the
/// undo of the pool write fails too.
#[derive(Debug)]
struct FailingSaveFreezingPool {
    inner: FileStore,
    pool_dir: PathBuf,
    frozen: std::sync::Mutex<Option<Immutable>>,
    test: &'static str,
}

impl CredentialStore for FailingSaveFreezingPool {
    fn home(&self) -> &CodexHome {
        self.inner.home()
    }
    fn load(&self) -> auth_storage::Result<Option<AuthDocument>> {
        self.inner.load()
    }
    fn save_locked(&self, _doc: &AuthDocument, _guard: &CommitGuard) -> auth_storage::Result<()> {
        *self.frozen.lock().unwrap() = Immutable::set(&self.pool_dir, self.test);
        Err(StorageError::Invalid {
            what: "test fault",
            detail: "the save was made to fail".into(),
        })
    }
    fn delete_locked(&self, guard: &CommitGuard) -> auth_storage::Result<bool> {
        self.inner.delete_locked(guard)
    }
}

#[test]
fn a_failed_login_write_rolls_the_pool_back_byte_for_byte() {
    let (pd, hd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let pool = pool_with_two(pd.path());
    // The home holds a login the pool does not know: a switch would add it to the pool.
    let files = FileStore::new(CodexHome::new(hd.path()));
    files
        .save(&login("carol@example.com", "acct-c", "rt-c1"))
        .unwrap();
    let pool_before = snapshot(pd.path());
    let home_before = std::fs::read(files.home().auth_file()).unwrap();

    let err = pool
        .switch_to(1, &FailingSave(files.clone()), 50)
        .unwrap_err();
    assert!(matches!(err, StorageError::RolledBack { .. }), "{err:?}");
    assert_eq!(err.effect(), FailureEffect::RolledBack);
    let text = err.to_string();
    assert!(text.contains("rolled back, nothing changed"), "{text}");
    assert!(text.contains("the save was made to fail"), "{text}");
    assert_eq!(
        snapshot(pd.path()),
        pool_before,
        "pool.json and its backups as before"
    );
    assert_eq!(
        std::fs::read(files.home().auth_file()).unwrap(),
        home_before
    );
    // And the pool still works: the same switch with a working store succeeds.
    let done = pool.switch_to(1, &files, 60).unwrap();
    assert_eq!(done.account.email.as_deref(), Some("bob@example.com"));
    assert_eq!(pool.load().unwrap().pool.accounts.len(), 3);
}

#[test]
fn a_failed_save_that_changed_nothing_in_the_pool_is_reported_as_nothing_changed() {
    let (pd, hd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let pool = pool_with_two(pd.path());
    let files = FileStore::new(CodexHome::new(hd.path()));
    // Alice is active (used at t=5); the home is empty, so there is nothing to keep.
    pool.activate(0, &files, 5).unwrap();
    assert!(files.delete().unwrap());
    let pool_before = snapshot(pd.path());
    let err = pool
        .switch_to(0, &FailingSave(files.clone()), 5)
        .unwrap_err();
    assert_eq!(err.effect(), FailureEffect::NothingChanged, "{err:?}");
    assert_eq!(snapshot(pd.path()), pool_before);
}

#[test]
fn an_immutable_auth_json_makes_the_switch_roll_back() {
    let test = "an_immutable_auth_json_makes_the_switch_roll_back";
    let (pd, hd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let pool = pool_with_two(pd.path());
    let files = FileStore::new(CodexHome::new(hd.path()));
    files
        .save(&login("carol@example.com", "acct-c", "rt-c1"))
        .unwrap();
    // The lock files exist before the home is frozen (the CLI leaves them there too).
    drop(files.home().lock().unwrap());
    let pool_before = snapshot(pd.path());
    let home_before = snapshot(hd.path());
    for frozen in [files.home().auth_file(), hd.path().to_path_buf()] {
        let Some(_guard) = Immutable::set(&frozen, test) else {
            return;
        };
        let err = pool.switch_to(1, &files, 50).unwrap_err();
        assert!(
            matches!(err, StorageError::RolledBack { .. }),
            "{}: {err:?}",
            frozen.display()
        );
        assert!(
            std::error::Error::source(&err)
                .unwrap()
                .to_string()
                .contains(&hd.path().display().to_string()),
            "the cause names the place: {err}"
        );
        assert_eq!(snapshot(pd.path()), pool_before, "{}", frozen.display());
        assert_eq!(snapshot(hd.path()), home_before, "{}", frozen.display());
    }
}

#[test]
fn when_the_undo_fails_too_the_error_says_partially_applied_and_nothing_is_lost() {
    let test = "when_the_undo_fails_too_the_error_says_partially_applied_and_nothing_is_lost";
    let (pd, hd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let pool = pool_with_two(pd.path());
    let files = FileStore::new(CodexHome::new(hd.path()));
    files
        .save(&login("carol@example.com", "acct-c", "rt-c1"))
        .unwrap();
    let store = FailingSaveFreezingPool {
        inner: files.clone(),
        pool_dir: pd.path().to_path_buf(),
        frozen: std::sync::Mutex::new(None),
        test,
    };
    let err = pool.switch_to(1, &store, 50).unwrap_err();
    let Some(frozen) = store.frozen.lock().unwrap().take() else {
        return; // SKIP printed
    };
    drop(frozen);
    assert_eq!(err.effect(), FailureEffect::PartiallyApplied, "{err:?}");
    let text = err.to_string();
    assert!(text.contains("partially applied"), "{text}");
    assert!(text.contains("marks account #2 active"), "{text}");
    assert!(text.contains("nothing is lost"), "{text}");
    assert!(!text.contains("rt-"), "no token in {text}");
    // What it says is what is on disk: the home's login kept, bob active, home untouched.
    let loaded = pool.load().unwrap().pool;
    assert_eq!(loaded.accounts.len(), 3);
    assert_eq!(loaded.active_index(), Some(1));
    let home = files.load().unwrap().unwrap().tokens.unwrap();
    assert_eq!(home.refresh_token.expose(), "rt-c1");
    // Running it again finishes the job.
    pool.switch_to(1, &files, 60).unwrap();
    let home = files.load().unwrap().unwrap().tokens.unwrap();
    assert_eq!(home.refresh_token.expose(), "rt-b1");
}

#[test]
fn removing_the_last_account_that_cannot_be_written_leaves_no_reset_marker() {
    let test = "removing_the_last_account_that_cannot_be_written_leaves_no_reset_marker";
    let pd = tempfile::tempdir().unwrap();
    let pool = PoolStore::new(pd.path());
    pool.update(|p| {
        p.upsert(Account::from_login(
            tokens("alice@example.com", "acct-a", "rt-a1"),
            None,
            1,
        ))
    })
    .unwrap();
    let before = snapshot(pd.path());
    let Some(_frozen) = Immutable::set(&pool.file(), test) else {
        return;
    };
    let err = pool.update(|p| p.remove(0)).unwrap_err();
    assert_eq!(err.effect(), FailureEffect::NothingChanged);
    assert!(err.to_string().contains("pool.json"), "{err}");
    assert_eq!(
        snapshot(pd.path()),
        before,
        "no pool.reset, no stray temporary file"
    );
}

#[test]
fn a_pool_write_whose_backup_link_fails_still_succeeds() {
    // The backup link of the new version comes after the rename: failing the update then
    // would report a failure for a change that took effect. A directory where the next
    // backup's name should go makes that link fail.
    let pd = tempfile::tempdir().unwrap();
    let pool = PoolStore::new(pd.path());
    pool.update(|p| p.extra.insert("n".into(), 1.into()))
        .unwrap();
    let blocker = pd.path().join("pool.json.bak-000000000002");
    std::fs::create_dir(&blocker).unwrap();
    std::fs::write(blocker.join("keep"), b"x").unwrap();
    pool.update(|p| p.extra.insert("n".into(), 2.into()))
        .unwrap();
    let loaded = pool.load().unwrap();
    assert_eq!(loaded.pool.extra["n"], 2);
    assert_eq!(loaded.pool.revision, 2);
}

#[test]
fn a_reset_that_cannot_write_leaves_no_marker() {
    let test = "a_reset_that_cannot_write_leaves_no_marker";
    let pd = tempfile::tempdir().unwrap();
    let pool = pool_with_two(pd.path());
    let before = snapshot(pd.path());
    let Some(_frozen) = Immutable::set(&pool.file(), test) else {
        return;
    };
    let err = pool.reset().unwrap_err();
    assert_eq!(err.effect(), FailureEffect::NothingChanged);
    assert_eq!(snapshot(pd.path()), before, "no pool.reset left behind");
}

#[test]
fn a_rolled_back_switch_puts_a_damaged_pool_file_back_where_it_was() {
    // pool.json is damaged, so the switch works on the newest backup and moves the damaged
    // file aside before writing; the failed login write must undo that move too.
    let (pd, hd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let pool = pool_with_two(pd.path());
    // Replaced by another tool (a new file, so the backup link keeps the good version).
    let torn = pd.path().join("torn");
    std::fs::write(&torn, b"{\"version\": 1, \"accounts\": [tor").unwrap();
    std::fs::rename(&torn, pool.file()).unwrap();
    let files = FileStore::new(CodexHome::new(hd.path()));
    files
        .save(&login("carol@example.com", "acct-c", "rt-c1"))
        .unwrap();
    let before = snapshot(pd.path());
    let err = pool
        .switch_to(1, &FailingSave(files.clone()), 50)
        .unwrap_err();
    assert_eq!(err.effect(), FailureEffect::RolledBack, "{err:?}");
    assert_eq!(
        snapshot(pd.path()),
        before,
        "the damaged file is back, no new file"
    );
}

mod model {
    //! Property: over random pools, home logins and account numbers, a switch whose login
    //! write fails leaves the pool directory and the home byte for byte as they were, and a
    //! switch that succeeds leaves the home holding account N and the pool holding every
    //! login it held plus the home's previous one.
    use super::*;
    use proptest::prelude::*;

    const PEOPLE: [&str; 4] = ["ann", "ben", "cid", "dot"];

    fn account(person: usize, refreshed: u64) -> Account {
        let name = PEOPLE[person];
        Account::from_login(
            tokens(
                &format!("{name}@example.com"),
                &format!("acct-{name}"),
                &format!("rt-{name}-{refreshed}"),
            ),
            Some(at(refreshed)),
            1,
        )
    }

    #[derive(Debug, Clone)]
    struct Case {
        pool: Vec<(usize, u64)>,
        active: Option<usize>,
        home: Option<(usize, u64)>,
        index: usize,
    }

    fn case() -> impl Strategy<Value = Case> {
        (
            proptest::collection::vec((0..PEOPLE.len(), 1000u64..1003), 0..4),
            proptest::option::of(0usize..4),
            proptest::option::of((0..PEOPLE.len(), 1000u64..1003)),
            0usize..5,
        )
            .prop_map(|(pool, active, home, index)| Case {
                pool,
                active,
                home,
                index,
            })
    }

    fn set_up(case: &Case, pd: &Path, hd: &Path) -> (PoolStore, FileStore) {
        let pool = PoolStore::new(pd);
        pool.update(|p| {
            for &(person, refreshed) in &case.pool {
                p.upsert(account(person, refreshed));
            }
            if let Some(i) = case.active.filter(|i| *i < p.accounts.len()) {
                p.set_active(i, 7);
            }
        })
        .unwrap();
        let files = FileStore::new(CodexHome::new(hd));
        if let Some((person, refreshed)) = case.home {
            let name = PEOPLE[person];
            files
                .save(&AuthDocument::chatgpt(
                    tokens(
                        &format!("{name}@example.com"),
                        &format!("acct-{name}"),
                        &format!("rt-{name}-{refreshed}"),
                    ),
                    at(refreshed),
                ))
                .unwrap();
        }
        drop(files.home().lock().unwrap());
        (pool, files)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn a_failed_switch_changes_nothing_and_a_good_one_loses_no_login(case in case()) {
            let (pd, hd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let (pool, files) = set_up(&case, pd.path(), hd.path());
            let (pool_before, home_before) = (snapshot(pd.path()), snapshot(hd.path()));
            let logins_before: Vec<String> = pool
                .load()
                .unwrap()
                .pool
                .accounts
                .iter()
                .map(|a| a.id.clone())
                .collect();

            match pool.switch_to(case.index, &FailingSave(files.clone()), 50) {
                Err(err) => {
                    prop_assert!(err.effect().left_state_unchanged(), "{:?}", err);
                    prop_assert_eq!(snapshot(pd.path()), pool_before.clone());
                    prop_assert_eq!(snapshot(hd.path()), home_before);
                }
                // The save "failed" but the home already held exactly the login to write
                // (re-read after the failure): the switch is complete, the home untouched.
                Ok(done) => {
                    prop_assert_eq!(snapshot(hd.path()), home_before);
                    let home = files.load().unwrap().unwrap().tokens.unwrap();
                    prop_assert_eq!(
                        home.refresh_token.expose(),
                        done.account.tokens.refresh_token.expose()
                    );
                    return Ok(());
                }
            }

            match pool.switch_to(case.index, &files, 50) {
                Err(e) => {
                    // Only an out-of-range number is refused here (the homes hold ChatGPT
                    // logins or nothing), and then nothing changed.
                    prop_assert!(case.index >= logins_before.len(), "{}", e);
                    prop_assert_eq!(snapshot(pd.path()), pool_before);
                }
                Ok(done) => {
                    let after = pool.load().unwrap().pool;
                    let keys: Vec<String> = after.accounts.iter().map(|a| a.id.clone()).collect();
                    for key in &logins_before {
                        prop_assert!(keys.contains(key), "lost {}", key);
                    }
                    if let Some((previous, _)) = &done.previous {
                        let i = match previous {
                            auth_storage::pool::Upsert::Added(i)
                            | auth_storage::pool::Upsert::Updated(i) => *i,
                            _ => unreachable!(),
                        };
                        prop_assert!(i < keys.len());
                    }
                    prop_assert_eq!(after.active_index(), Some(case.index));
                    let home = files.load().unwrap().unwrap().tokens.unwrap();
                    prop_assert_eq!(
                        home.refresh_token.expose(),
                        after.accounts[case.index].tokens.refresh_token.expose()
                    );
                }
            }
        }
    }
}

/// A keyring that reads but refuses writes (a locked collection, a full quota).
#[derive(Debug, Clone, Default)]
struct ReadOnlyKeyring {
    inner: auth_storage::keyring_backend::MockKeyring,
    refuse: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl auth_storage::keyring_backend::KeyringBackend for ReadOnlyKeyring {
    fn load(
        &self,
        service: &str,
        account: &str,
    ) -> Result<Option<String>, auth_storage::keyring_backend::KeyringFailure> {
        self.inner.load(service, account)
    }
    fn save(
        &self,
        service: &str,
        account: &str,
        value: &str,
    ) -> Result<(), auth_storage::keyring_backend::KeyringFailure> {
        if self.refuse.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(auth_storage::keyring_backend::KeyringFailure::new(
                false,
                "the collection is locked",
            ));
        }
        self.inner.save(service, account, value)
    }
    fn delete(
        &self,
        service: &str,
        account: &str,
    ) -> Result<bool, auth_storage::keyring_backend::KeyringFailure> {
        self.inner.delete(service, account)
    }
}

#[test]
fn a_keyring_that_refuses_the_write_makes_the_switch_roll_back() {
    use auth_storage::KeyringStore;
    let (pd, hd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let pool = pool_with_two(pd.path());
    let keyring = ReadOnlyKeyring::default();
    let store = KeyringStore::new(
        CodexHome::new(hd.path()),
        std::sync::Arc::new(keyring.clone()),
    );
    store
        .save(&login("carol@example.com", "acct-c", "rt-c1"))
        .unwrap();
    let before = snapshot(pd.path());
    keyring
        .refuse
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let err = pool.switch_to(1, &store, 50).unwrap_err();
    assert_eq!(err.effect(), FailureEffect::RolledBack, "{err:?}");
    assert!(
        err.to_string().contains("the collection is locked"),
        "{err}"
    );
    assert_eq!(snapshot(pd.path()), before);
    let kept = store.load().unwrap().unwrap().tokens.unwrap();
    assert_eq!(kept.refresh_token.expose(), "rt-c1");
}
