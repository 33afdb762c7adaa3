//! The real Codex CLI: `codex login` holds 127.0.0.1:1455, `free` stops it.
#![cfg(target_os = "linux")]

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::skip;
use oauth_preflight::{CODEX_CALLBACK_PORT, FreePolicy, Outcome, free, inspect};

const TEST: &str = "real_codex_login_is_freed";

/// `CODEX_BIN`, else the workspace's npm install, else `codex` on PATH.
fn codex_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CODEX_BIN")
        .map(PathBuf::from)
        .filter(|p| p.exists())
    {
        return Some(p);
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(
        "../.codex-cli/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex",
    );
    if local.exists() {
        return Some(local);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("codex"))
        .find(|p| p.is_file())
}

struct Login(Child);
impl Drop for Login {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn real_codex_login_is_freed() {
    let Some(codex) = codex_bin() else {
        skip(
            TEST,
            "the Codex CLI is not installed (set CODEX_BIN or run .ci/run)",
        );
        return;
    };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], CODEX_CALLBACK_PORT));
    let before = inspect(addr).unwrap();
    if !before.is_free() {
        let who: Vec<String> = before.processes().iter().map(ToString::to_string).collect();
        skip(
            TEST,
            &format!(
                "port 1455 is already taken by something else: {who:?} {:?}",
                before.bind
            ),
        );
        return;
    }

    let home = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(home.path().join("login.log")).unwrap();
    let mut login = Login(
        Command::new(&codex)
            .arg("login")
            .env("CODEX_HOME", home.path())
            // `true URL` instead of a browser: nothing is launched.
            .env("BROWSER", "true")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let pid = login.0.id();

    // Wait (bounded) until the CLI's own process holds the port.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = inspect(addr).unwrap();
        if found.processes().iter().any(|p| p.pid == pid) {
            break;
        }
        if let Ok(Some(status)) = login.0.try_wait() {
            let out = std::fs::read_to_string(home.path().join("login.log")).unwrap_or_default();
            panic!("codex login exited ({status}) before listening on 1455:\n{out}");
        }
        assert!(
            Instant::now() < deadline,
            "codex login did not listen on 1455 within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let outcome = free(addr, &FreePolicy::default());
    let Outcome::Freed { stopped, .. } = &outcome else {
        panic!("expected the real codex login to be freed, got: {outcome}");
    };
    assert_eq!(
        stopped.iter().map(|s| s.pid).collect::<Vec<_>>(),
        [pid],
        "{outcome}"
    );
    assert_eq!(stopped[0].name, "codex");
    let message = outcome.to_string();
    assert!(
        message.contains("127.0.0.1:1455") && message.contains("(codex)"),
        "{message}"
    );
    std::net::TcpListener::bind(addr).expect("1455 is bindable after free");
    let status = login.0.wait().unwrap();
    assert!(
        !status.success(),
        "codex login was stopped, not completed: {status}"
    );
}
