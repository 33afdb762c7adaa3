//! Interop with the real Codex CLI (0.169.0): it accepts what we write, we read what it writes.

mod common;

use auth_core::{AuthDocument, AuthMode, Timestamp};
use auth_storage::{CodexHome, CredentialStore, FileStore, PoolStore};
use common::{codex_bin_or_skip, run_codex, tokens};

#[test]
fn cli_reports_logged_in_for_a_file_store_chatgpt_login() {
    let Some(codex) = codex_bin_or_skip("cli_reports_logged_in_for_a_file_store_chatgpt_login")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(CodexHome::new(dir.path()));
    let (code, out) = run_codex(&codex, dir.path(), &["login", "status"], None);
    assert_eq!(code, 1, "empty home must be logged out: {out}");
    assert!(out.contains("Not logged in"), "{out}");

    let doc = AuthDocument::chatgpt(
        tokens("alice@example.com", "acct-1", "rt-1"),
        Timestamp::now(),
    );
    store.save(&doc).unwrap();
    let (code, out) = run_codex(&codex, dir.path(), &["login", "status"], None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Logged in using ChatGPT"), "{out}");
    // Byte-compatible with what the CLI itself writes: pretty JSON, no trailing newline.
    let bytes = std::fs::read(dir.path().join("auth.json")).unwrap();
    assert_eq!(bytes, doc.to_json_pretty().into_bytes());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("auth.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn we_read_an_api_key_login_the_cli_wrote_and_keep_its_lock_files() {
    let Some(codex) =
        codex_bin_or_skip("we_read_an_api_key_login_the_cli_wrote_and_keep_its_lock_files")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = run_codex(
        &codex,
        dir.path(),
        &["login", "--with-api-key"],
        Some("sk-interop-1\n"),
    );
    assert_eq!(code, 0, "{out}");
    let home = CodexHome::new(dir.path());
    let store = FileStore::new(home.clone());
    let doc = store.load().unwrap().expect("the CLI wrote auth.json");
    assert_eq!(doc.effective_mode(), Some(AuthMode::ApiKey));
    assert_eq!(
        doc.openai_api_key.as_ref().unwrap().expose(),
        "sk-interop-1"
    );
    // The CLI's lock files are the ones we lock.
    assert!(home.commit_lock_file().exists() && home.file_lock_file().exists());
    // A save by us under the CLI's locks, then the CLI still reads it.
    let mut doc = doc;
    doc.openai_api_key = Some(auth_core::Secret::new("sk-interop-2".into()));
    store.save(&doc).unwrap();
    let (code, out) = run_codex(&codex, dir.path(), &["login", "status"], None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("API key configured"), "{out}");
    assert!(
        !out.contains("sk-interop-2"),
        "the CLI masks keys; so must we"
    );
}

#[test]
fn cli_accepts_an_activated_pool_account() {
    let Some(codex) = codex_bin_or_skip("cli_accepts_an_activated_pool_account") else {
        return;
    };
    let pool_dir = tempfile::tempdir().unwrap();
    let source = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    let pool = PoolStore::new(pool_dir.path());
    // Import two logins from a Codex home, then hand the first to another home.
    let src = FileStore::new(CodexHome::new(source.path()));
    for (email, id) in [
        ("alice@example.com", "acct-a"),
        ("bob@example.com", "acct-b"),
    ] {
        src.save(&AuthDocument::chatgpt(
            tokens(email, id, &format!("rt-{id}")),
            Timestamp::now(),
        ))
        .unwrap();
        pool.import(&src, 1_700_000_000).unwrap();
    }
    let dst = FileStore::new(CodexHome::new(target.path()));
    let account = pool.activate(0, &dst, 1_700_000_100).unwrap();
    assert_eq!(account.email.as_deref(), Some("alice@example.com"));
    let (code, out) = run_codex(&codex, target.path(), &["login", "status"], None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Logged in using ChatGPT"), "{out}");
    let written = dst.load().unwrap().unwrap();
    assert_eq!(written.tokens.unwrap().refresh_token.expose(), "rt-acct-a");
    let loaded = pool.load().unwrap().pool;
    assert_eq!(loaded.active_index(), Some(0));
    assert_eq!(loaded.accounts[0].last_used_at, Some(1_700_000_100));
}

/// The lock files are the CLI's real ones: while we hold either `auth.lock` or
/// `auth.json.lock`, `codex login` waits and writes nothing; once we let go it completes.
#[test]
fn cli_waits_while_we_hold_either_of_its_lock_files() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let Some(codex) = codex_bin_or_skip("cli_waits_while_we_hold_either_of_its_lock_files") else {
        return;
    };
    for which in ["auth.lock", "auth.json.lock"] {
        let dir = tempfile::tempdir().unwrap();
        let home = CodexHome::new(dir.path());
        let guard = auth_storage::lock::FileLock::acquire(
            &dir.path().join(which),
            0o600,
            Duration::from_secs(5),
        )
        .unwrap();
        let mut child = Command::new(&codex)
            .args(["login", "--with-api-key"])
            .env("CODEX_HOME", dir.path())
            .env_remove("OPENAI_API_KEY")
            .env_remove("CODEX_API_KEY")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"sk-waited\n").unwrap();
        // Give the CLI ample time to reach its save (it takes ~20 ms unblocked).
        std::thread::sleep(Duration::from_millis(1500));
        let still_running = child.try_wait().unwrap().is_none();
        let wrote = home.auth_file().exists();
        drop(guard);
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("codex login did not finish after {which} was released");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(still_running, "codex did not wait for our {which}");
        assert!(!wrote, "codex wrote auth.json while we held {which}");
        assert!(status.success(), "{status}");
        let doc = FileStore::new(home).load().unwrap().expect("written");
        assert_eq!(doc.openai_api_key.unwrap().expose(), "sk-waited");
    }
}
