//! Regression tests from an adversarial review of cross-process refresh: each test replays
//! one of the reviewer's attacks (named a1–a9, c1, i1 as in the review) on
//! `auth_storage::refresh::PoolRefresher`, `PoolStore::import` / `switch_to` and
//! `PoolDocument::upsert`, against a loopback token endpoint that, like OpenAI's, accepts
//! each refresh token once (a second use is answered `refresh_token_reused` and kills the
//! login). Each asserts the behaviour the review asked for: no refresh token reaches the
//! issuer twice (or only the one reuse a scenario stages on purpose), the outcome or the
//! error, and what is on disk — which copy each Codex home and the pool hold, every file
//! whole (no temporary file of an atomic write left behind). Every wait is bounded; every
//! socket is on 127.0.0.1.
#![cfg(feature = "refresh")]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use auth_core::Timestamp;
use auth_core::refresh::RefreshError;
use auth_storage::keyring_backend::{KeyringBackend, MockKeyring};
use auth_storage::pool::{Account, UnusableReason, Upsert};
use auth_storage::refresh::{HomeOpener, PoolRefreshError, RefreshOutcome};
use auth_storage::{
    CodexHome, CommitGuard, CredentialStore, FileStore, PoolStore, StorageError, StoreMode,
    open_store_with,
};
use common::refresh::{
    Fixture, assert_no_secrets, cli_refresh, cli_refresh_locked, cli_refresh_store, endpoint,
    finished, home_tokens, put_login, refreshed, shown, spawn_refresh, wait_stalled,
};
use common::{assert_no_partial_files, unix_now};
use pretty_assertions::assert_eq;

/// Set (to the pool directory) by c1 for `child_switch_killed_while_writing_the_home`.
const CRASH_POOL: &str = "AUTH_STORAGE_REVIEW_CRASH_POOL";

/// How the pool names a Codex home in `homes` (its canonical path).
fn home_key(home: &Path) -> String {
    home.canonicalize().unwrap().to_string_lossy().into_owned()
}

/// `accounts import --codex-home <home>` (a file home).
fn import(f: &Fixture, home: &Path) -> (Upsert, Account) {
    f.pool
        .import(&FileStore::new(CodexHome::new(home)), 0)
        .unwrap()
}

/// Every file under the fixture's directory is whole, and the pool loads as written (no
/// recovery from a backup).
fn assert_on_disk_whole(f: &Fixture) {
    assert_no_partial_files(f.dir.path());
    let loaded = f.pool.load().unwrap();
    assert!(loaded.recovery.is_none(), "{:?}", loaded.recovery);
}

/// a1: `import` links the Codex home it imports from, so the pool's refresh hands the new
/// tokens to that home and the Codex CLI's next refresh there spends them — not the token
/// the pool just spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a1_import_links_the_home_so_its_cli_never_resends_the_token_the_pool_spent() {
    let f = Fixture::new();
    let home = f.home("h");
    let t0 = f.login_in_home(&home, "a@example.com", "ws-a");
    let (_, account) = import(&f, &home);
    let link = f.pool.load().unwrap().pool.homes[&home_key(&home)].clone();
    assert_eq!(
        (link.account.as_str(), link.mode()),
        (account.id.as_str(), Some(StoreMode::File))
    );

    let t1 = refreshed(f.refresher.refresh(&account.id, &t0).await.unwrap());
    assert_eq!(home_tokens(&home), t1, "the home got the pool's answer");
    let t2 = cli_refresh(f.server.url(), &home).await.unwrap();
    assert_eq!((f.server.successes(), f.server.reuses()), (2, 0));
    assert_eq!(home_tokens(&home), t2);
    assert_eq!(f.account(&account.id).tokens, t1);
    assert_on_disk_whole(&f);
}

/// a2: re-importing a Codex home whose copy is older than the pool's (its `auth.json` put
/// back from a backup after the pool refreshed) keeps the pool's newer tokens, and the
/// next refresh spends the pool's valid refresh token, never the home's spent one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a2_reimporting_an_older_copy_keeps_the_pools_newer_tokens() {
    let f = Fixture::new();
    let home = f.home("h");
    let t0 = f.login_in_home(&home, "a@example.com", "ws-a");
    let (_, account) = import(&f, &home);
    let t1 = refreshed(f.refresher.refresh(&account.id, &t0).await.unwrap());
    put_login(&home, &t0);

    let (outcome, again) = import(&f, &home);
    assert_eq!(outcome, Upsert::Updated(0));
    assert_eq!(
        (again.id.as_str(), &again.tokens),
        (account.id.as_str(), &t1)
    );
    assert_eq!(f.account(&account.id).tokens, t1);

    // The upstream rejects t1's access token: the refresh spends t1, and the home gets the
    // answer in place of its spent copy.
    let t2 = refreshed(f.refresher.refresh(&account.id, &t1).await.unwrap());
    assert_eq!((f.server.successes(), f.server.reuses()), (2, 0));
    assert_eq!(home_tokens(&home), t2);
    let now = f.account(&account.id);
    assert_eq!((now.tokens, now.unusable), (t2, None));
    assert_on_disk_whole(&f);
}

/// a2b: once a refusal marked the login "login required", importing an older copy (the
/// spent token a home still holds) neither clears the mark nor brings that token back: the
/// next refresh is refused without a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a2b_importing_a_spent_copy_keeps_the_login_required_mark() {
    let f = Fixture::new();
    let home = f.home("h");
    let t0 = f.login_in_home(&home, "a@example.com", "ws-a");
    let (_, account) = import(&f, &home);
    let id = account.id;
    let t1 = refreshed(f.refresher.refresh(&id, &t0).await.unwrap());
    // Another machine spends t1; its answer never reaches this pool.
    endpoint(f.server.url())
        .exchange(&t1.refresh_token)
        .await
        .unwrap();
    let err = f.refresher.refresh(&id, &t1).await.unwrap_err();
    assert!(
        matches!(
            err,
            PoolRefreshError::Refresh {
                marked_unusable: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!((f.server.requests(), f.server.reuses()), (3, 1));
    let mark = f.account(&id).unusable.expect("marked");

    put_login(&home, &t0);
    import(&f, &home);
    let after = f.account(&id);
    assert_eq!((after.unusable, after.tokens), (Some(mark), t1));
    let err = f.refresher.refresh(&id, &t0).await.unwrap_err();
    assert!(matches!(err, PoolRefreshError::Unusable { .. }), "{err:?}");
    assert_eq!(
        (f.server.requests(), f.server.reuses()),
        (3, 1),
        "the spent token is not sent again"
    );
    assert_on_disk_whole(&f);
}

/// a3 (changed by design): handing a login to a second Codex home while the first still
/// holds it is refused — the two CLIs would spend each other's refresh token — with a
/// message naming the first home and what to do. Nothing changes: `pool.json` byte for
/// byte, the second home keeps its own login, and each CLI refreshes only its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a3_a_login_held_by_one_home_is_refused_to_a_second_and_nothing_changes() {
    let f = Fixture::new();
    let (_, id) = f.add_expired("a@example.com", "ws-a");
    let (first, second) = (f.home("h1"), f.home("h2"));
    f.hand_to(&id, &first);
    f.login_in_home(&second, "b@example.com", "ws-b");
    let pool_before = std::fs::read(f.pool.file()).unwrap();
    let second_before = std::fs::read(second.join("auth.json")).unwrap();

    let index = f.pool.load().unwrap().pool.index_of(&id).unwrap();
    let err = f
        .pool
        .switch_to(index, &FileStore::new(CodexHome::new(&second)), 0)
        .unwrap_err();
    let text = err.to_string();
    for needed in [
        home_key(&first).as_str(),
        "two Codex homes cannot share one login",
        "switch that home to another account first",
    ] {
        assert!(text.contains(needed), "{needed:?} missing from: {text}");
    }
    assert!(err.effect().left_state_unchanged());
    assert_no_secrets(&f.server, &format!("{err}\n{err:?}"));
    assert_eq!(std::fs::read(f.pool.file()).unwrap(), pool_before);
    assert_eq!(
        std::fs::read(second.join("auth.json")).unwrap(),
        second_before
    );

    cli_refresh(f.server.url(), &first).await.unwrap();
    cli_refresh(f.server.url(), &second).await.unwrap();
    assert_eq!((f.server.successes(), f.server.reuses()), (2, 0));
    assert_on_disk_whole(&f);
}

/// a4: a Codex home whose locks are held past the refresher's lock timeout (its CLI is
/// refreshing the same token) fails the refresh with a lock timeout before any request,
/// leaving the pool as it was (no in-flight mark); the CLI's refresh goes through and the
/// next pool refresh adopts its tokens without a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a4_a_home_locked_past_the_timeout_fails_the_refresh_before_any_request() {
    let f = Fixture::new();
    let (t0, id) = f.add_expired("a@example.com", "ws-a");
    let home = f.home("h");
    f.hand_to(&id, &home);
    let pool_before = std::fs::read(f.pool.file()).unwrap();
    let store = FileStore::new(CodexHome::new(&home));
    let cli_guard = store.home().lock().unwrap();

    let impatient = f
        .refresher
        .clone()
        .with_lock_timeout(Duration::from_secs(1));
    let err = impatient.refresh(&id, &t0).await.unwrap_err();
    assert!(
        matches!(&err, PoolRefreshError::Storage(e) if matches!(**e, StorageError::LockTimeout { .. })),
        "{err:?}"
    );
    assert_eq!(f.server.requests(), 0);
    assert_eq!(std::fs::read(f.pool.file()).unwrap(), pool_before);

    let t1 = cli_refresh_locked(f.server.url(), &store, &cli_guard)
        .await
        .unwrap();
    drop(cli_guard);
    let outcome = f.refresher.refresh(&id, &t0).await.unwrap();
    assert_eq!(outcome, RefreshOutcome::AlreadyRefreshed(t1.clone()));
    assert_eq!((f.server.requests(), f.server.reuses()), (1, 0));
    assert_eq!(f.account(&id).tokens, t1);
    assert_on_disk_whole(&f);
}

/// a5: the answer could not be saved to the pool (`Persist`) and no Codex home holds the
/// login, so the new tokens exist only in the caller's hands. The caller's next refresh,
/// from those tokens, spends them — not the pool's spent token — and the pool gets the
/// answer, its in-flight mark cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a5_after_persist_without_a_home_the_callers_newer_copy_is_refreshed() {
    let f = Fixture::new();
    let (t0, id) = f.add_expired("a@example.com", "ws-a");
    let t1 = f.refresh_that_cannot_save(&id, &t0).await;
    let stale = f.account(&id);
    assert_eq!(stale.tokens, t0);
    assert!(stale.refreshing.is_some(), "the in-flight mark stays");

    let t2 = refreshed(f.refresher.refresh(&id, &t1).await.unwrap());
    assert_eq!((f.server.successes(), f.server.reuses()), (2, 0));
    let account = f.account(&id);
    assert_eq!(
        (account.tokens, account.refreshing, account.unusable),
        (t2, None, None)
    );
    assert_on_disk_whole(&f);
}

/// a6: the account is removed and its login imported again from its Codex home (a new pool
/// id) while its refresh is in flight. The refresh lock is per login, so a refresh of the
/// new entry waits for the first; the answer goes to the new entry (it holds the token
/// sent) and to the home, and the waiting refresh adopts it. One request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a6_a_login_removed_and_reimported_during_its_refresh_gets_that_refreshs_answer() {
    let f = Fixture::new();
    let (t0, id) = f.add_expired("a@example.com", "ws-a");
    let home = f.home("h");
    f.hand_to(&id, &home);
    f.server.stall_next("ws-a");
    let first = spawn_refresh(&f.refresher, &id, &t0);
    assert!(wait_stalled(&f.server).await, "the request never arrived");

    f.pool
        .update(|p| p.remove(p.index_of(&id).unwrap()).map(|_| ()))
        .unwrap();
    let (_, again) = import(&f, &home);
    assert_ne!(again.id, id);
    assert_eq!(again.tokens, t0);
    let second = spawn_refresh(&f.refresher, &again.id, &t0);
    // Bounded: the second refresh must still be waiting for the first's lock.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "the second refresh did not wait");
    f.server.release();

    let t1 = refreshed(finished(first).await.unwrap());
    let outcome = finished(second).await.unwrap();
    assert_eq!(outcome, RefreshOutcome::AlreadyRefreshed(t1.clone()));
    assert_eq!((f.server.requests(), f.server.reuses()), (1, 0));
    let account = f.account(&again.id);
    assert_eq!((&account.tokens, &account.refreshing), (&t1, &None));
    assert!(f.pool.load().unwrap().pool.account(&id).is_none());
    assert_eq!(home_tokens(&home), t1);
    assert_on_disk_whole(&f);
}

/// Hands account `id` to `home` through `store` (not a file store) and checks the pool
/// recorded the home with `mode`.
fn hand_to_store(f: &Fixture, id: &str, store: &dyn CredentialStore, mode: StoreMode) {
    std::fs::create_dir_all(store.home().dir()).unwrap();
    let index = f.pool.load().unwrap().pool.index_of(id).unwrap();
    f.pool.switch_to(index, store, 0).unwrap();
    let key = home_key(store.home().dir());
    let link = f.pool.load().unwrap().pool.homes[&key].clone();
    assert_eq!((link.account.as_str(), link.mode()), (id, Some(mode)));
    assert!(
        !store.home().auth_file().exists(),
        "the login is not in auth.json"
    );
}

/// A home opener that opens every home in the mode the pool recorded, on `backend`.
fn opener_on(backend: MockKeyring) -> HomeOpener {
    let backend: Arc<dyn KeyringBackend> = Arc::new(backend);
    Arc::new(move |home: &CodexHome, mode: StoreMode| {
        Ok(open_store_with(home.clone(), mode, Arc::clone(&backend)))
    })
}

/// a7: a Codex home that keeps its login in the keyring (a mock keyring here) is recorded
/// with its store mode; a refresher whose home opener opens each home in that mode sees
/// the copy, hands it the answer, and the CLI's next refresh spends the new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a7_a_keyring_home_is_reached_through_its_recorded_store_mode() {
    let f = Fixture::new();
    let (t0, id) = f.add_expired("a@example.com", "ws-a");
    let keyring = MockKeyring::default();
    let cli_store = open_store_with(
        CodexHome::new(f.home("h")),
        StoreMode::Keyring,
        Arc::new(keyring.clone()),
    );
    hand_to_store(&f, &id, cli_store.as_ref(), StoreMode::Keyring);

    let refresher = f.refresher.clone().with_home_opener(opener_on(keyring));
    refresh_reaches_the_home(&f, &refresher, &id, &t0, cli_store.as_ref()).await;
}

/// A pool refresh of `id` gives the home behind `cli_store` the new tokens, and the CLI's
/// own next refresh there spends them without a reuse.
async fn refresh_reaches_the_home(
    f: &Fixture,
    refresher: &auth_storage::refresh::PoolRefresher,
    id: &str,
    seen: &auth_core::TokenData,
    cli_store: &dyn CredentialStore,
) {
    let t1 = refreshed(refresher.refresh(id, seen).await.unwrap());
    assert_eq!(cli_store.load().unwrap().unwrap().tokens.unwrap(), t1);
    cli_refresh_store(f.server.url(), cli_store).await.unwrap();
    assert_eq!((f.server.successes(), f.server.reuses()), (2, 0));
    assert_on_disk_whole(f);
}

/// a7, the default opener: without `with_home_opener`, each home is opened in its recorded
/// mode. An ephemeral home (the CLI's in-memory store, process-wide in this crate) stands
/// in for any store that is not `auth.json`, as the OS keyring needs a session bus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a7_the_default_opener_opens_a_home_in_its_recorded_mode() {
    let f = Fixture::new();
    let (t0, id) = f.add_expired("a@example.com", "ws-a");
    let cli_store = open_store_with(
        CodexHome::new(f.home("h")),
        StoreMode::Ephemeral,
        Arc::new(MockKeyring::default()),
    );
    hand_to_store(&f, &id, cli_store.as_ref(), StoreMode::Ephemeral);
    refresh_reaches_the_home(&f, &f.refresher, &id, &t0, cli_store.as_ref()).await;
}

/// a7, a keyring this process cannot read (no keyring service reachable from a proxy
/// running as a service, say) while the CLI can: the home's copy is unknown, so the
/// refresh fails before any request — as for a home it cannot lock — instead of spending
/// the token the CLI may be spending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a7_a_keyring_home_this_process_cannot_read_fails_the_refresh_before_any_request() {
    let f = Fixture::new();
    let (t0, id) = f.add_expired("a@example.com", "ws-a");
    let cli_store = open_store_with(
        CodexHome::new(f.home("h")),
        StoreMode::Keyring,
        Arc::new(MockKeyring::default()),
    );
    hand_to_store(&f, &id, cli_store.as_ref(), StoreMode::Keyring);
    let pool_before = std::fs::read(f.pool.file()).unwrap();
    let unreachable = MockKeyring::default();
    unreachable.set_failure(Some(MockKeyring::unavailable()));

    let refresher = f.refresher.clone().with_home_opener(opener_on(unreachable));
    let err = refresher.refresh(&id, &t0).await.unwrap_err();
    assert!(
        matches!(&err, PoolRefreshError::Storage(e) if matches!(**e, StorageError::Keyring { .. })),
        "{err:?}"
    );
    assert_eq!(f.server.requests(), 0);
    assert_eq!(std::fs::read(f.pool.file()).unwrap(), pool_before);
    cli_refresh_store(f.server.url(), cli_store.as_ref())
        .await
        .unwrap();
    assert_eq!((f.server.successes(), f.server.reuses()), (1, 0));
    assert_on_disk_whole(&f);
}

/// a8: a 2xx answer whose body cannot be used (an id token that is not a JWT) still spent
/// the refresh token: the login is marked "login required" (`unusable_token_response`)
/// and the dead token is never sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a8_an_unusable_success_answer_marks_the_login_and_its_token_is_not_resent() {
    let f = Fixture::new();
    let (t0, id) = f.add_expired("a@example.com", "ws-a");
    f.server.garble_next("ws-a");
    let err = f.refresher.refresh(&id, &t0).await.unwrap_err();
    assert!(
        matches!(
            &err,
            PoolRefreshError::Refresh {
                source: RefreshError::InvalidResponse { .. },
                marked_unusable: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert_no_secrets(&f.server, &shown(&err));
    let account = f.account(&id);
    let mark = account.unusable.clone().expect("marked");
    assert_eq!(
        (mark.reason, mark.code.as_deref()),
        (
            UnusableReason::LoginRequired,
            Some("unusable_token_response")
        )
    );
    assert_eq!((account.tokens, account.refreshing), (t0.clone(), None));

    for _ in 0..2 {
        let again = f.refresher.refresh(&id, &t0).await.unwrap_err();
        assert!(
            matches!(again, PoolRefreshError::Unusable { .. }),
            "{again:?}"
        );
    }
    assert_eq!(
        (f.server.requests(), f.server.successes(), f.server.reuses()),
        (1, 1, 0)
    );
    assert_on_disk_whole(&f);
}

/// a9: a refresh whose token was already spent elsewhere is in flight while the person
/// signs in again (`accounts add` upserts the new login). The late refusal applies only
/// where the token sent still is: the new sign-in is not marked and refreshes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a9_a_late_refusal_does_not_mark_a_new_sign_in() {
    let f = Fixture::new();
    let (t0, id) = f.add_expired("a@example.com", "ws-a");
    endpoint(f.server.url())
        .exchange(&t0.refresh_token)
        .await
        .unwrap();
    f.server.stall_next("ws-a");
    let running = spawn_refresh(&f.refresher, &id, &t0);
    assert!(wait_stalled(&f.server).await, "the request never arrived");
    let fresh = f.server.sign_in("a@example.com", "ws-a", unix_now() + 3600);
    f.pool
        .update(|p| {
            p.upsert(Account::from_login(
                fresh.clone(),
                Some(Timestamp::now()),
                0,
            ))
        })
        .unwrap();
    f.server.release();

    let err = finished(running).await.unwrap_err();
    assert!(
        matches!(
            &err,
            PoolRefreshError::Refresh {
                source: RefreshError::Rejected { status: 400, .. },
                marked_unusable: false,
                ..
            }
        ),
        "{err:?}"
    );
    let account = f.account(&id);
    assert_eq!(
        (&account.tokens, &account.unusable, &account.refreshing),
        (&fresh, &None, &None)
    );
    refreshed(f.refresher.refresh(&id, &fresh).await.unwrap());
    assert_eq!(
        (f.server.successes(), f.server.reuses()),
        (2, 1),
        "only the staged reuse"
    );
    assert_on_disk_whole(&f);
}

/// A file store whose save announces itself (creates `$CRASH_POOL/../saving`) and then
/// hangs until the parent kills the process: a switch killed (`kill -9`) after its pool
/// write, before its home write.
#[derive(Debug)]
struct KilledWhileSaving(FileStore, PathBuf);

impl CredentialStore for KilledWhileSaving {
    fn home(&self) -> &CodexHome {
        self.0.home()
    }

    fn load(&self) -> auth_storage::Result<Option<auth_core::AuthDocument>> {
        self.0.load()
    }

    fn save_locked(
        &self,
        _: &auth_core::AuthDocument,
        _: &CommitGuard,
    ) -> auth_storage::Result<()> {
        std::fs::write(&self.1, b"").unwrap();
        // Bounded: the parent kills this process at once; never returns normally.
        std::thread::sleep(Duration::from_secs(60));
        std::process::exit(3)
    }

    fn delete_locked(&self, guard: &CommitGuard) -> auth_storage::Result<bool> {
        self.0.delete_locked(guard)
    }
}

/// Child for c1: switches `$CRASH_HOME` to account `#$CRASH_INDEX` of the pool in
/// `$CRASH_POOL` through [`KilledWhileSaving`].
#[test]
fn child_switch_killed_while_writing_the_home() {
    let Some(pool) = std::env::var_os(CRASH_POOL) else {
        return;
    };
    let env = |name: &str| std::env::var(name).unwrap();
    let store = KilledWhileSaving(
        FileStore::new(CodexHome::new(env("CRASH_HOME"))),
        PathBuf::from(env("CRASH_SAVING")),
    );
    let index = env("CRASH_INDEX").parse().unwrap();
    let result = PoolStore::new(pool).switch_to(index, &store, 1);
    panic!("the switch returned: {:?}", result.map(|_| ()));
}

/// c1: a switch is killed between its pool write (the pool now links the home to another
/// account) and its home write (the home still holds the first login). Refresh finds
/// homes by the login they hold, so a refresh of the first login still reaches that home,
/// and its CLI's next refresh spends the new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1_a_switch_killed_before_its_home_write_does_not_hide_the_home() {
    let f = Fixture::new();
    let (tx, x) = f.add_expired("x@example.com", "ws-x");
    let (_, a) = f.add_expired("a@example.com", "ws-a");
    let home = f.home("h");
    f.hand_to(&x, &home);
    let home_before = std::fs::read(home.join("auth.json")).unwrap();
    let saving = f.dir.path().join("saving");
    let index = f.pool.load().unwrap().pool.index_of(&a).unwrap();
    let mut child = common::spawn_test_child(
        "child_switch_killed_while_writing_the_home",
        [
            (CRASH_POOL, f.pool.dir().as_os_str().to_owned()),
            ("CRASH_HOME", home.clone().into_os_string()),
            ("CRASH_SAVING", saving.clone().into_os_string()),
            ("CRASH_INDEX", index.to_string().into()),
        ],
    );
    let reached = common::wait_for_file(&saving, 60);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(reached, "the child never reached the home write");

    let pool = f.pool.load().unwrap().pool;
    assert_eq!(pool.active.as_deref(), Some(a.as_str()));
    assert_eq!(pool.homes[&home_key(&home)].account, a);
    assert_eq!(std::fs::read(home.join("auth.json")).unwrap(), home_before);
    assert_on_disk_whole(&f);

    let t1 = refreshed(f.refresher.refresh(&x, &tx).await.unwrap());
    assert_eq!(
        home_tokens(&home),
        t1,
        "the home still holding x got the answer"
    );
    cli_refresh(f.server.url(), &home).await.unwrap();
    assert_eq!((f.server.successes(), f.server.reuses()), (2, 0));
    assert_on_disk_whole(&f);
}

/// A pool written before homes recorded their store mode (`"homes": {"<dir>": "<account
/// id>"}`, as this crate wrote schema v3 until the review's fixes) loads as it is — the
/// home linked as a file home — and a refresh still reaches that home; the next write
/// stores the current form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_whose_homes_name_only_the_account_loads_and_its_homes_are_still_reached() {
    let f = Fixture::new();
    let (t0, id) = f.add_expired("a@example.com", "ws-a");
    let home = f.home("h");
    f.hand_to(&id, &home);
    let key = home_key(&home);
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.pool.file()).unwrap()).unwrap();
    doc["homes"] = serde_json::json!({ key.clone(): id });
    std::fs::write(f.pool.file(), serde_json::to_vec_pretty(&doc).unwrap()).unwrap();

    let loaded = f.pool.load().unwrap();
    assert!(loaded.recovery.is_none(), "{:?}", loaded.recovery);
    let link = &loaded.pool.homes[&key];
    assert_eq!(
        (link.account.as_str(), link.mode()),
        (id.as_str(), Some(StoreMode::File))
    );
    assert_eq!(loaded.pool.accounts.len(), 1);

    let t1 = refreshed(f.refresher.refresh(&id, &t0).await.unwrap());
    assert_eq!(home_tokens(&home), t1);
    cli_refresh(f.server.url(), &home).await.unwrap();
    assert_eq!((f.server.successes(), f.server.reuses()), (2, 0));
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.pool.file()).unwrap()).unwrap();
    assert_eq!(
        written["homes"][&key],
        serde_json::json!({"account": id, "store": "file"})
    );
    assert_on_disk_whole(&f);
}

/// i1: hostile account ids in `pool.json` (path traversal, separators, overlong, non-ASCII,
/// duplicates, empty, a NUL byte, a missing one) and homes given in the old form with
/// relative and missing directories. Every reader repairs the ids the same way, each
/// account refreshes under its repaired id, a raw hostile id is not in the pool (no
/// request), and no file is created outside the pool directory or under a hostile name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i1_hostile_ids_and_homes_are_repaired_and_refresh_stays_inside_the_pool() {
    let f = Fixture::new();
    let long = "x".repeat(300);
    let hostile = [
        "../../escape",
        "a/b",
        "..",
        ".hidden",
        &long,
        "ünï",
        "acct-dup",
        "acct-dup",
        "",
        "CON",
        "acct-0000000000000000\u{0}",
    ];
    let mut seen = Vec::new();
    let mut accounts = Vec::new();
    for (i, id) in hostile.iter().enumerate() {
        let t = f.server.sign_in(
            &format!("u{i}@example.com"),
            &format!("ws-{i}"),
            unix_now() - 60,
        );
        let mut account = serde_json::json!({"id": id, "added_at": 0, "tokens": t});
        if i == 0 {
            account.as_object_mut().unwrap().remove("id");
        }
        accounts.push(account);
        seen.push(t);
    }
    let doc = serde_json::json!({
        "version": 3, "revision": 1, "active": "../../escape",
        "homes": {"relative/home": "a/b", "/nonexistent/zz": "acct-dup"},
        "accounts": accounts,
    });
    std::fs::create_dir_all(f.pool.dir()).unwrap();
    std::fs::write(f.pool.file(), serde_json::to_vec_pretty(&doc).unwrap()).unwrap();

    let ids = |pool: &PoolStore| -> Vec<String> {
        let accounts = pool.load().unwrap().pool.accounts;
        accounts.into_iter().map(|a| a.id).collect()
    };
    let repaired = ids(&f.pool);
    assert_eq!(ids(&PoolStore::new(f.pool.dir())), repaired);
    let unique: std::collections::BTreeSet<_> = repaired.iter().collect();
    assert_eq!(unique.len(), hostile.len());
    assert!(
        repaired
            .iter()
            .all(|id| auth_storage::pool::is_valid_account_id(id))
    );

    for (id, tokens) in repaired.iter().zip(&seen) {
        refreshed(f.refresher.refresh(id, tokens).await.unwrap());
    }
    for raw in hostile
        .iter()
        .filter(|raw| !repaired.iter().any(|id| id == *raw))
    {
        let err = f.refresher.refresh(raw, &seen[0]).await.unwrap_err();
        assert!(matches!(err, PoolRefreshError::NotInPool { .. }), "{err:?}");
    }
    assert_eq!(
        (f.server.successes(), f.server.reuses()),
        (hostile.len(), 0)
    );
    assert_eq!(ids(&f.pool), repaired, "the first write keeps the ids");
    let locks = std::fs::read_dir(f.pool.dir().join(auth_storage::refresh::REFRESH_LOCK_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap());
    for name in locks {
        let stem = name.strip_suffix(".lock").unwrap_or("");
        assert!(
            auth_storage::pool::is_valid_account_id(stem),
            "a refresh lock under an unsafe name: {name:?}"
        );
    }
    assert!(!Path::new("relative").exists() && !Path::new("/nonexistent").exists());
    let top: Vec<_> = std::fs::read_dir(f.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top, ["pool"], "nothing beside the pool directory");
    assert_on_disk_whole(&f);
}

/// One broken Codex home must not stop every refresh: a home the pool last gave another
/// login, locked past the timeout, is skipped (its CLI holds another token); the same home
/// blocks the refresh of the login it was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_home_blocks_only_the_login_it_may_hold() {
    let f = Fixture::new();
    let (ta, a) = f.add_expired("a@example.com", "ws-a");
    let (tb, b) = f.add_expired("b@example.com", "ws-b");
    let home = f.home("h");
    f.hand_to(&b, &home);
    let store = FileStore::new(CodexHome::new(&home));
    let stuck = store.home().lock().unwrap();
    let impatient = f
        .refresher
        .clone()
        .with_lock_timeout(Duration::from_secs(1));
    // Account a: the stuck home holds b, so a's refresh goes through.
    refreshed(impatient.refresh(&a, &ta).await.unwrap());
    // Account b: the stuck home may be refreshing it right now; no request.
    let err = impatient.refresh(&b, &tb).await.unwrap_err();
    assert!(
        matches!(&err, PoolRefreshError::Storage(e) if matches!(**e, StorageError::LockTimeout { .. })),
        "{err:?}"
    );
    drop(stuck);
    assert_eq!((f.server.requests(), f.server.reuses()), (1, 0));
}

/// The same login imported from a second Codex home while the first holds it: both CLIs
/// would refresh it and spend each other's token. Refused, nothing written.
#[tokio::test]
async fn importing_a_login_another_home_holds_is_refused() {
    let f = Fixture::new();
    let first = f.home("first");
    let tokens = f.login_in_home(&first, "c@example.com", "ws-c");
    f.pool
        .import(&FileStore::new(CodexHome::new(&first)), 0)
        .unwrap();
    let second = f.home("second");
    put_login(&second, &tokens);
    let before = std::fs::read(f.pool.file()).unwrap();
    let err = f
        .pool
        .import(&FileStore::new(CodexHome::new(&second)), 0)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("two Codex homes cannot share one login"),
        "{err}"
    );
    assert_eq!(std::fs::read(f.pool.file()).unwrap(), before);
    // Importing the first home again is fine (same home).
    f.pool
        .import(&FileStore::new(CodexHome::new(&first)), 0)
        .unwrap();
}

/// Set for [`child_that_waits_to_be_killed`].
const IDLE_CHILD: &str = "AUTH_STORAGE_IDLE_CHILD";

/// Child: a live process that does nothing until killed (bounded: 30 s).
#[test]
fn child_that_waits_to_be_killed() {
    if std::env::var_os(IDLE_CHILD).is_some() {
        std::thread::sleep(Duration::from_secs(30));
    }
}

/// Proxy review F1: a process whose save of a refresh's answer failed keeps the new tokens
/// in memory and its in-flight mark in the pool. While that process runs, no other process
/// sends the (probably spent) refresh token: `InFlightElsewhere`, no request. The process
/// saves them later (`save_refreshed`, compare-and-set on its own mark). Once the process
/// is gone, the next refresh tries the token (the crash outcome).
#[tokio::test]
async fn a_live_process_holding_an_unsaved_answer_holds_others_off() {
    let f = Fixture::new();
    let (t0, id) = f.add_expired("live@example.com", "ws-live");
    // Another process (alive) left its in-flight mark: pretend with a child of this test
    // binary that waits to be killed (portable, unlike `sleep`).
    let mut other = common::spawn_test_child("child_that_waits_to_be_killed", [(IDLE_CHILD, "1")]);
    let pid = other.id();
    f.pool
        .update(|p| {
            let account = p.account_mut(&id).unwrap();
            account.refreshing = Some(
                serde_json::from_value(serde_json::json!({
                    "started_at": unix_now(),
                    "pid": pid,
                }))
                .unwrap(),
            );
        })
        .unwrap();
    let err = f.refresher.refresh(&id, &t0).await.unwrap_err();
    assert!(
        matches!(&err, PoolRefreshError::InFlightElsewhere { pid: p, .. } if *p == pid),
        "{err:?}"
    );
    assert_eq!(
        f.server.requests(),
        0,
        "no request while that process may save"
    );
    // Not this process's mark: `save_refreshed` writes nothing.
    assert!(!f.refresher.save_refreshed(&id, &t0).unwrap());

    // The process is gone: the next refresh tries the token once.
    other.kill().unwrap();
    other.wait().unwrap();
    refreshed(f.refresher.refresh(&id, &t0).await.unwrap());
    assert_eq!((f.server.requests(), f.server.reuses()), (1, 0));
}

/// `save_refreshed` saves this process's unsaved answer and clears its mark.
#[tokio::test]
async fn save_refreshed_completes_this_processs_refresh() {
    let f = Fixture::new();
    let (t0, id) = f.add_expired("mine@example.com", "ws-mine");
    let t1 = f.refresh_that_cannot_save(&id, &t0).await;
    assert!(f.account(&id).refreshing.is_some());
    assert!(f.refresher.save_refreshed(&id, &t1).unwrap());
    let account = f.account(&id);
    assert_eq!(account.tokens, t1);
    assert!(account.refreshing.is_none());
    // Done once: nothing left to save.
    assert!(!f.refresher.save_refreshed(&id, &t1).unwrap());
}
