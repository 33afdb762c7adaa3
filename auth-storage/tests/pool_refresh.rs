//! `PoolRefresher` against real processes, real Codex homes and a loopback token endpoint
//! that, like OpenAI's, accepts each refresh token once (a second use is answered 400
//! `refresh_token_reused` and kills the login). One test per promise of the module docs
//! of `auth_storage::refresh::PoolRefresher`: one request per expiry however many
//! processes ask, per-account locking, adopting what the Codex CLI refreshed, handing the
//! pool's refresh to the CLI's home, never adopting older tokens, dead tokens marked once
//! for everyone, a crash between the issuer's answer and the save, cancellation,
//! transient failures, an answer the pool could not save (`Persist`) and a home the pool
//! hands the account to while its refresh is in flight. Error texts are checked for tokens
//! and emails. Every wait is bounded; every socket is on 127.0.0.1.
#![cfg(feature = "refresh")]

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use auth_core::refresh::RefreshError;
use auth_core::{AuthDocument, Timestamp, TokenData};
use auth_storage::pool::{Account, RefreshInFlight, UnusableReason, Upsert};
use auth_storage::refresh::{PoolRefreshError, RefreshOutcome};
use auth_storage::{CodexHome, CredentialStore, FileStore, PoolStore};
use common::refresh::{
    Fixture, assert_no_secrets, cli_refresh, endpoint, finished, home_tokens, refreshed, refresher,
    shown, spawn_refresh, wait_stalled,
};
use common::{TokenServer, unix_now};
use pretty_assertions::assert_eq;

/// Set (to the pool account id) by a parent test for `child_pool_refresher`.
const ROLE: &str = "AUTH_STORAGE_POOL_REFRESH_ACCOUNT";
const PROCESSES: usize = 4;
const TASKS: usize = 4;

impl Fixture {
    /// Write `seen` where `child_pool_refresher` reads it.
    fn seen_file(&self, name: &str, seen: &TokenData) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(
            &path,
            AuthDocument::chatgpt(seen.clone(), Timestamp::now()).to_json_pretty(),
        )
        .unwrap();
        path
    }

    /// A child process running `tasks` concurrent refreshes of `id` from the tokens in
    /// `seen`, after `go` appears (when given).
    fn spawn_refresher(&self, id: &str, seen: &Path, tasks: usize, go: Option<&Path>) -> Child {
        let mut envs: Vec<(&str, OsString)> = vec![
            (ROLE, id.into()),
            ("POOL_DIR", self.pool.dir().into()),
            ("TOKEN_URL", self.server.url().into()),
            ("SEEN", seen.into()),
            ("TASKS", tasks.to_string().into()),
        ];
        if let Some(go) = go {
            envs.push(("GO", go.into()));
        }
        common::spawn_test_child("child_pool_refresher", envs)
    }
}

fn refreshing_cleared(account: &Account) -> bool {
    account.refreshing.is_none()
}

/// Child: `TASKS` concurrent refreshes of pool account `$ROLE` from the tokens in `$SEEN`.
#[test]
fn child_pool_refresher() {
    let Ok(id) = std::env::var(ROLE) else {
        return;
    };
    let env = |name: &str| std::env::var(name).unwrap();
    let pool = PoolStore::new(env("POOL_DIR"));
    let seen = AuthDocument::from_json_slice(&std::fs::read(env("SEEN")).unwrap())
        .unwrap()
        .tokens
        .unwrap();
    let refresher = refresher(&env("TOKEN_URL"), &pool);
    if let Ok(go) = std::env::var("GO") {
        // Start together: wait (bounded) for the parent's go signal.
        assert!(common::wait_for_file(Path::new(&go), 20), "no go signal");
    }
    let tasks: usize = env("TASKS").parse().unwrap();
    let results = common::run_concurrently(tasks, |_| {
        let (r, id, seen) = (refresher.clone(), id.clone(), seen.clone());
        async move { r.refresh(&id, &seen).await }
    });
    common::print_outcomes(results);
}

/// Steps 1, 2, 4, 5: 4 processes × 4 tasks find the same expired tokens at once; the
/// account lock lets one of them exchange, every other one re-reads and adopts.
#[test]
fn processes_and_tasks_racing_on_one_expired_account_make_one_request() {
    if std::env::var_os(ROLE).is_some() {
        return;
    }
    let started = Instant::now();
    let f = Fixture::new();
    let (seen, id) = f.add_expired("race@example.com", "ws-race");
    let seen_file = f.seen_file("seen.json", &seen);
    let go = f.dir.path().join("go");
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| f.spawn_refresher(&id, &seen_file, TASKS, Some(&go)))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(&go, b"").unwrap();
    // Bounded: a child waits at most 20 s for the go signal and 30 s per lock.
    let mut lines = common::child_results(children, 120);
    assert_eq!(lines.len(), PROCESSES * TASKS, "{lines:?}");
    assert_eq!(
        f.server.requests(),
        1,
        "exactly one token request: {lines:?}"
    );
    assert_eq!(f.server.reuses(), 0);
    let fresh = f.server.valid_refresh_token("ws-race");
    let mut expected = vec![format!("already {fresh}"); PROCESSES * TASKS - 1];
    expected.push(format!("refreshed {fresh}"));
    lines.sort();
    assert_eq!(lines, expected);
    let account = f.account(&id);
    assert_eq!(account.tokens.refresh_token.expose(), fresh);
    assert!(refreshing_cleared(&account), "{account:?}");
    assert!(account.unusable.is_none());
    eprintln!(
        "{PROCESSES} processes x {TASKS} tasks: 1 request in {:?}",
        started.elapsed()
    );
}

/// Step 1: the refresh lock is per account. While the issuer holds the answer for account
/// A (A's refresh lock held by its process), another process refreshes account B to the
/// end.
#[test]
fn two_accounts_refresh_at_once_without_waiting_on_each_other() {
    if std::env::var_os(ROLE).is_some() {
        return;
    }
    let f = Fixture::new();
    let (seen_a, id_a) = f.add_expired("a@example.com", "ws-a");
    let (seen_b, id_b) = f.add_expired("b@example.com", "ws-b");
    let (file_a, file_b) = (
        f.seen_file("a.json", &seen_a),
        f.seen_file("b.json", &seen_b),
    );
    f.server.stall_next("ws-a");
    let child_a = f.spawn_refresher(&id_a, &file_a, 1, None);
    assert!(f.server.wait_stalled(60), "A's request never arrived");
    let child_b = f.spawn_refresher(&id_b, &file_b, 1, None);
    let lines_b = common::child_results([child_b], 60);
    assert_eq!(
        f.server.stalled(),
        1,
        "B finished while A's answer was still held"
    );
    f.server.release();
    let lines_a = common::child_results([child_a], 60);
    assert_eq!(
        lines_a,
        [format!(
            "refreshed {}",
            f.server.valid_refresh_token("ws-a")
        )]
    );
    assert_eq!(
        lines_b,
        [format!(
            "refreshed {}",
            f.server.valid_refresh_token("ws-b")
        )]
    );
    assert_eq!((f.server.requests(), f.server.successes()), (2, 2));
    for (id, workspace) in [(&id_a, "ws-a"), (&id_b, "ws-b")] {
        let account = f.account(id);
        assert_eq!(
            account.tokens.refresh_token.expose(),
            f.server.valid_refresh_token(workspace)
        );
        assert!(refreshing_cleared(&account));
    }
}

/// Steps 3 and 4: the Codex CLI refreshed the login the pool handed to its home; the pool
/// adopts the CLI's tokens instead of spending the token the CLI already spent.
#[tokio::test]
async fn tokens_the_codex_cli_refreshed_are_adopted_without_a_request() {
    let f = Fixture::new();
    let (seen, id) = f.add_expired("cli@example.com", "ws-cli");
    let home = f.home("codex-home");
    f.hand_to(&id, &home);
    assert_eq!(home_tokens(&home), seen);
    let cli = cli_refresh(f.server.url(), &home).await.unwrap();
    assert_eq!(f.server.requests(), 1);

    let outcome = f.refresher.refresh(&id, &seen).await.unwrap();
    assert_eq!(outcome, RefreshOutcome::AlreadyRefreshed(cli.clone()));
    assert_eq!(
        f.server.requests(),
        1,
        "no request: the CLI's tokens are adopted"
    );
    assert_eq!(f.server.reuses(), 0);
    let account = f.account(&id);
    assert_eq!(account.tokens, cli);
    let home_doc = FileStore::new(CodexHome::new(&home))
        .load()
        .unwrap()
        .unwrap();
    assert_eq!(account.last_refresh, home_doc.last_refresh);
    assert!(refreshing_cleared(&account));
    assert_no_secrets(&f.server, &format!("{outcome:?} {account:?}"));
}

/// Step 5: a refresh through the pool is saved to the Codex home holding the login too, so
/// the CLI's next refresh spends the new token, not the old one; a home whose login was
/// replaced by another login is left alone.
#[tokio::test]
async fn a_pool_refresh_reaches_the_codex_home_but_not_a_home_with_another_login() {
    let f = Fixture::new();
    let (seen, id) = f.add_expired("pool@example.com", "ws-pool");
    let (home, other_home) = (f.home("home-1"), f.home("home-2"));
    // The second home got the account first, then `codex login` with another account
    // there; only then could the first home get it (a login is in one home at a time).
    f.hand_to(&id, &other_home);
    let other = f
        .server
        .sign_in("other@example.com", "ws-other", unix_now() + 3600);
    FileStore::new(CodexHome::new(&other_home))
        .save(&AuthDocument::chatgpt(other.clone(), Timestamp::now()))
        .unwrap();
    let other_bytes = std::fs::read(other_home.join("auth.json")).unwrap();
    f.hand_to(&id, &home);

    let fresh = refreshed(f.refresher.refresh(&id, &seen).await.unwrap());
    assert_eq!(f.server.requests(), 1);
    assert_eq!(home_tokens(&home), fresh);
    assert_eq!(f.account(&id).tokens, fresh);
    assert_eq!(
        std::fs::read(other_home.join("auth.json")).unwrap(),
        other_bytes,
        "the home holding another login is untouched"
    );
    // The CLI's own next refresh spends the token the pool got, which is valid.
    cli_refresh(f.server.url(), &home).await.unwrap();
    assert_eq!((f.server.successes(), f.server.reuses()), (2, 0));
}

/// Step 4, "the newest copy wins": a home holding older tokens than the pool is never
/// adopted (its refresh token is spent) and gets the pool's newer tokens.
#[tokio::test]
async fn a_home_with_older_tokens_is_not_adopted_and_gets_the_newer_ones() {
    let f = Fixture::new();
    let (old, id) = f.add_expired("older@example.com", "ws-older");
    let home = f.home("codex-home");
    f.hand_to(&id, &home);
    // Another process refreshed into the pool while it could not reach the home.
    let newer = endpoint(f.server.url())
        .exchange(&old.refresh_token)
        .await
        .unwrap()
        .apply_to(&old);
    f.pool
        .update(|p| {
            let account = p.account_mut(&id).unwrap();
            account.tokens = newer.clone();
            account.last_refresh = Some(Timestamp::now());
        })
        .unwrap();
    assert_eq!(home_tokens(&home), old);

    // The caller saw the old tokens: the pool's newer ones are handed out, and to the home.
    let outcome = f.refresher.refresh(&id, &old).await.unwrap();
    assert_eq!(outcome, RefreshOutcome::AlreadyRefreshed(newer.clone()));
    assert_eq!(home_tokens(&home), newer);
    assert_eq!(f.server.requests(), 1);

    // The home goes back to the old (spent) tokens, e.g. a restored backup, and the
    // upstream rejects the pool's access token: the refresh spends the pool's refresh
    // token, never the home's older one.
    FileStore::new(CodexHome::new(&home))
        .save(&AuthDocument::chatgpt(
            old.clone(),
            Timestamp::from_unix_seconds(unix_now() - 3600).unwrap(),
        ))
        .unwrap();
    let fresh = refreshed(f.refresher.refresh(&id, &newer).await.unwrap());
    assert_eq!((f.server.successes(), f.server.reuses()), (2, 0));
    assert_eq!(home_tokens(&home), fresh);
    assert_eq!(f.account(&id).tokens, fresh);
}

/// Steps 2 and 6: a refresh token the issuer calls reused marks the account login
/// required for everyone; later refreshes are refused without a request; signing in again
/// clears the mark.
#[tokio::test]
async fn a_dead_refresh_token_marks_the_account_once_and_is_never_sent_again() {
    let f = Fixture::new();
    let (dead, id) = f.add_expired("dead@example.com", "ws-dead");
    // Spent elsewhere, its answer lost.
    endpoint(f.server.url())
        .exchange(&dead.refresh_token)
        .await
        .unwrap();

    let err = f.refresher.refresh(&id, &dead).await.unwrap_err();
    assert!(
        matches!(
            &err,
            PoolRefreshError::Refresh {
                marked_unusable: true,
                source: RefreshError::Rejected { status: 400, .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!((f.server.requests(), f.server.reuses()), (2, 1));
    let account = f.account(&id);
    let mark = account.unusable.clone().expect("marked");
    assert_eq!(mark.reason, UnusableReason::LoginRequired);
    assert_eq!(mark.code.as_deref(), Some("refresh_token_reused"));
    assert!(refreshing_cleared(&account));
    let mut texts = shown(&err);

    for _ in 0..3 {
        let err = f.refresher.refresh(&id, &dead).await.unwrap_err();
        assert!(
            matches!(&err, PoolRefreshError::Unusable { mark: m, .. } if *m == mark),
            "{err:?}"
        );
        texts.push_str(&shown(&err));
    }
    assert_eq!(f.server.requests(), 2, "no request for an unusable account");
    assert!(texts.contains(&id), "errors name the account: {texts}");
    assert_no_secrets(&f.server, &texts);

    // The person signs in again: the same login with a new refresh token clears the mark.
    let renewed = f
        .server
        .sign_in("dead@example.com", "ws-dead", unix_now() - 60);
    let upsert = f
        .pool
        .update(|p| {
            p.upsert(Account::from_login(
                renewed.clone(),
                Some(Timestamp::now()),
                0,
            ))
        })
        .unwrap();
    assert!(matches!(upsert, Upsert::Updated(_)), "{upsert:?}");
    assert!(f.account(&id).unusable.is_none());
    refreshed(f.refresher.refresh(&id, &renewed).await.unwrap());
    assert_eq!(f.server.requests(), 3);
}

/// The module docs' crash case: the process dies (kill -9) after the issuer spent the
/// token and before the answer was saved. The pool keeps the old token and the in-flight
/// mark; the next refresh makes exactly one request, learns the token is dead, marks the
/// account and stops: no retry, no loop.
#[tokio::test]
async fn a_refresher_killed_between_the_answer_and_the_save_costs_one_request_then_stops() {
    if std::env::var_os(ROLE).is_some() {
        return;
    }
    let f = Fixture::new();
    let (seen, id) = f.add_expired("crash@example.com", "ws-crash");
    let seen_file = f.seen_file("seen.json", &seen);
    f.server.stall_next("ws-crash");
    let mut child = f.spawn_refresher(&id, &seen_file, 1, None);
    assert!(
        wait_stalled(&f.server).await,
        "the child's request never arrived"
    );
    assert_eq!(f.server.successes(), 1, "the issuer spent the token");
    let pid = child.id();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    f.server.release();

    let account = f.account(&id);
    assert_eq!(account.tokens, seen, "the answer was never saved");
    let mark = account.refreshing.clone().expect("in-flight mark left");
    assert_eq!(mark.pid, pid);

    let err = f.refresher.refresh(&id, &seen).await.unwrap_err();
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
    assert_eq!(
        (f.server.requests(), f.server.reuses()),
        (2, 1),
        "exactly one more request"
    );
    let account = f.account(&id);
    assert_eq!(
        account.unusable.as_ref().map(|u| u.reason),
        Some(UnusableReason::LoginRequired)
    );
    assert!(refreshing_cleared(&account));
    for _ in 0..3 {
        let again = f.refresher.refresh(&id, &seen).await.unwrap_err();
        assert!(
            matches!(again, PoolRefreshError::Unusable { .. }),
            "{again:?}"
        );
    }
    assert_eq!(f.server.requests(), 2, "no further request");
    assert_no_secrets(&f.server, &shown(&err));
    eprintln!(
        "crash between answer and save: the pool kept the old token with the in-flight mark \
         of the killed pid {pid}; the next refresh made 1 request, got refresh_token_reused \
         and marked the account `{}`; later refreshes: `{}` without a request",
        f.account(&id).unusable.unwrap(),
        f.refresher.refresh(&id, &seen).await.unwrap_err()
    );
}

/// The other half of the crash case: a mark left by a process that died before its
/// request reached the issuer. The token is still valid, so the next refresh succeeds and
/// clears the mark.
#[tokio::test]
async fn a_mark_left_before_the_request_reached_the_issuer_does_not_cost_the_login() {
    let f = Fixture::new();
    let (seen, id) = f.add_expired("early@example.com", "ws-early");
    f.pool
        .update(|p| {
            p.account_mut(&id).unwrap().refreshing =
                Some(RefreshInFlight::new(unix_now() as u64 - 5));
        })
        .unwrap();
    refreshed(f.refresher.refresh(&id, &seen).await.unwrap());
    let account = f.account(&id);
    assert!(refreshing_cleared(&account) && account.unusable.is_none());
    assert_eq!((f.server.successes(), f.server.reuses()), (1, 0));
}

/// Cancellation: the caller's future is dropped once the request is out; the request and
/// the save finish in their own task, and a caller waiting meanwhile adopts the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_refresh_still_saves_the_answer() {
    let f = Fixture::new();
    let (seen, id) = f.add_expired("cancel@example.com", "ws-cancel");
    f.server.stall_next("ws-cancel");
    tokio::select! {
        result = f.refresher.refresh(&id, &seen) => panic!("finished while stalled: {result:?}"),
        stalled = wait_stalled(&f.server) => assert!(stalled, "the request never arrived"),
    }
    // The future is gone; the issuer has spent the token and holds the answer.
    let waiting = spawn_refresh(&f.refresher, &id, &seen);
    assert!(f.account(&id).refreshing.is_some(), "still in flight");
    f.server.release();
    let until = Instant::now() + Duration::from_secs(30);
    let account = loop {
        let account = f.account(&id);
        if account.tokens != seen || Instant::now() > until {
            break account;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        account.tokens.refresh_token.expose(),
        f.server.valid_refresh_token("ws-cancel"),
        "the answer was saved"
    );
    assert!(refreshing_cleared(&account));
    let outcome = finished(waiting).await.unwrap();
    assert_eq!(outcome, RefreshOutcome::AlreadyRefreshed(account.tokens));
    assert_eq!((f.server.requests(), f.server.reuses()), (1, 0));
}

/// A transient failure (503) changes nothing but the mark's lifetime: not marked
/// unusable, the mark cleared, and the same token works later.
#[tokio::test]
async fn a_transient_failure_leaves_the_account_usable_and_the_token_valid() {
    let f = Fixture::new();
    let (seen, id) = f.add_expired("flaky@example.com", "ws-flaky");
    f.server.set_unavailable(true);
    let err = f.refresher.refresh(&id, &seen).await.unwrap_err();
    assert!(
        matches!(
            &err,
            PoolRefreshError::Refresh {
                marked_unusable: false,
                source: RefreshError::Endpoint { status: 503, .. },
                ..
            }
        ),
        "{err:?}"
    );
    let account = f.account(&id);
    assert!(account.unusable.is_none());
    assert!(refreshing_cleared(&account));
    assert_eq!(account.tokens, seen);
    assert_no_secrets(&f.server, &shown(&err));

    f.server.set_unavailable(false);
    let fresh = refreshed(f.refresher.refresh(&id, &seen).await.unwrap());
    assert_eq!((f.server.requests(), f.server.successes()), (2, 1));
    assert_no_secrets(&f.server, &format!("{fresh:?} {:?}", f.refresher));
}

/// Tokens found elsewhere are adopted only while valid: once they expired too, the refresh
/// exchanges the newest refresh token (not the caller's spent one).
#[tokio::test]
async fn expired_newer_tokens_are_refreshed_from_the_newest_token() {
    let f = Fixture::with_server(TokenServer::start_with_ttl(Duration::from_secs(2)));
    let (seen, id) = f.add_expired("ttl@example.com", "ws-ttl");
    let refresher = f.refresher.clone().with_margin(Duration::ZERO);
    let first = refreshed(refresher.refresh(&id, &seen).await.unwrap());
    let again = refresher.refresh(&id, &seen).await.unwrap();
    assert_eq!(again, RefreshOutcome::AlreadyRefreshed(first));
    assert_eq!(f.server.requests(), 1);
    // Bounded: the access token lives 2 s (whole seconds, so up to 3 s).
    tokio::time::sleep(Duration::from_millis(3100)).await;
    refreshed(refresher.refresh(&id, &seen).await.unwrap());
    assert_eq!((f.server.successes(), f.server.reuses()), (2, 0));
}

/// A switch that hands the account to a Codex home while its refresh is in flight waits for
/// the refresh (it takes the account's refresh lock first), so the home never gets the
/// token being spent: it gets the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_during_a_refresh_waits_and_hands_out_the_new_tokens() {
    let f = Fixture::new();
    let (seen, id) = f.add_expired("late@example.com", "ws-late");
    f.server.stall_next("ws-late");
    let running = spawn_refresh(&f.refresher, &id, &seen);
    assert!(wait_stalled(&f.server).await, "the request never arrived");
    let home = f.home("late-home");
    let (pool, id_copy, dir) = (f.pool.clone(), id.clone(), home.clone());
    let switch = tokio::task::spawn_blocking(move || {
        let index = pool.load().unwrap().pool.index_of(&id_copy).unwrap();
        pool.switch_to(index, &FileStore::new(CodexHome::new(dir)), 0)
            .map(|_| ())
    });
    // Bounded: the switch must still be waiting for the refresh half a second later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !switch.is_finished(),
        "the switch did not wait for the refresh"
    );
    f.server.release();
    let fresh = refreshed(finished(running).await.unwrap());
    switch.await.unwrap().unwrap();
    assert_eq!(home_tokens(&home), fresh, "the home got the new tokens");
    cli_refresh(f.server.url(), &home).await.unwrap();
    assert_eq!(f.server.reuses(), 0, "the CLI never sends a spent token");
}

/// A refresh token works once, so one login cannot live in two Codex homes whose CLIs
/// refresh it on their own: a switch handing an account to a second home while the first
/// still holds it is refused and changes nothing; once the first home holds another login,
/// the switch goes through.
#[tokio::test]
async fn a_login_in_use_by_one_home_is_not_handed_to_a_second() {
    let f = Fixture::new();
    let (_seen, id) = f.add_expired("two@example.com", "ws-two");
    let (first, second) = (f.home("first-home"), f.home("second-home"));
    f.hand_to(&id, &first);
    let pool_before = std::fs::read(f.pool.file()).unwrap();
    let index = f.pool.load().unwrap().pool.index_of(&id).unwrap();
    let err = f
        .pool
        .switch_to(index, &FileStore::new(CodexHome::new(&second)), 0)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("two Codex homes cannot share one login"),
        "{err}"
    );
    assert!(err.effect().left_state_unchanged());
    assert_eq!(std::fs::read(f.pool.file()).unwrap(), pool_before);
    assert!(!second.join("auth.json").exists());
    // `codex login` with another account in the first home frees the login.
    let other = f
        .server
        .sign_in("other@example.com", "ws-other", unix_now() + 3600);
    FileStore::new(CodexHome::new(&first))
        .save(&AuthDocument::chatgpt(other, Timestamp::now()))
        .unwrap();
    f.hand_to(&id, &second);
    assert_eq!(home_tokens(&second), f.account(&id).tokens);
}

/// `PoolRefreshError::Persist`: the answer could not be saved to the pool (its lock held
/// too long); the caller gets the new tokens, the Codex home holding the login has them,
/// and the next refresh adopts them from there without a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_that_could_not_be_saved_to_the_pool_are_adopted_from_the_home() {
    let f = Fixture::new();
    let (seen, id) = f.add_expired("persist@example.com", "ws-persist");
    let home = f.home("codex-home");
    f.hand_to(&id, &home);
    let fresh = f.refresh_that_cannot_save(&id, &seen).await;
    assert_eq!(home_tokens(&home), fresh, "the home got the new tokens");
    assert_eq!(f.account(&id).tokens, seen, "the pool did not");

    let outcome = f.refresher.refresh(&id, &seen).await.unwrap();
    assert_eq!(outcome, RefreshOutcome::AlreadyRefreshed(fresh.clone()));
    assert_eq!((f.server.requests(), f.server.reuses()), (1, 0));
    let account = f.account(&id);
    assert_eq!(account.tokens, fresh);
    assert!(
        refreshing_cleared(&account),
        "the in-flight mark is about a token the adopted ones replace"
    );
}
