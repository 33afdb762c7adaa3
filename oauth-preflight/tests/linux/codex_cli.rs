//! The real Codex CLI: `codex login` holds 127.0.0.1:1455, `free` stops it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::skip;
use oauth_preflight::{CODEX_CALLBACK_PORT, FreePolicy, Outcome, free, inspect};

/// Both tests need 1455: run them one at a time.
static PORT_1455: std::sync::Mutex<()> = std::sync::Mutex::new(());

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
    const NAME: &str = "real_codex_login_is_freed";
    let Some(codex) = codex_bin() else {
        skip(
            NAME,
            "the Codex CLI is not installed (set CODEX_BIN or run .ci/run)",
        );
        return;
    };
    let _serial = PORT_1455.lock().unwrap_or_else(|e| e.into_inner());
    login_then_free(NAME, Command::new(codex));
}

/// The npm launcher: `node …/@openai/codex/bin/codex.js login` runs the native binary as a
/// child; that child holds the port and is what gets stopped.
#[test]
fn npm_launched_codex_login_is_freed() {
    const NAME: &str = "npm_launched_codex_login_is_freed";
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../.codex-cli/node_modules/@openai/codex/bin/codex.js");
    if !script.exists() {
        skip(
            NAME,
            "the npm package @openai/codex is not installed in .codex-cli (run .ci/run)",
        );
        return;
    }
    if Command::new("node").arg("--version").output().is_err() {
        skip(NAME, "node is not installed");
        return;
    }
    let _serial = PORT_1455.lock().unwrap_or_else(|e| e.into_inner());
    let mut cmd = Command::new("node");
    cmd.arg(script);
    login_then_free(NAME, cmd);
}

/// Runs `<cmd> login` with a temp CODEX_HOME, waits (bounded) until it or its child holds
/// 1455, frees the port, and checks the outcome, the port and that the launcher exited.
fn login_then_free(test: &str, mut cmd: Command) {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], CODEX_CALLBACK_PORT));
    // The other test's login may still be letting go of the port: wait for it (bounded)
    // before calling the port taken by something else.
    let mut before = inspect(addr).unwrap();
    for _ in 0..50 {
        if before.is_free() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        before = inspect(addr).unwrap();
    }
    if !before.is_free() {
        let who: Vec<String> = before.processes().iter().map(ToString::to_string).collect();
        skip(
            test,
            &format!(
                "port 1455 is already taken by something else: {who:?} {:?}",
                before.bind
            ),
        );
        return;
    }

    let home = tempfile::tempdir().unwrap();
    let log_path = home.path().join("login.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut login = Login(
        cmd.arg("login")
            .env("CODEX_HOME", home.path())
            // `true URL` instead of a browser: nothing is launched.
            .env("BROWSER", "true")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let launcher = login.0.id();

    let deadline = Instant::now() + Duration::from_secs(20);
    let holder = loop {
        let found = inspect(addr).unwrap();
        if let Some(p) = found
            .processes()
            .iter()
            .find(|p| p.pid == launcher || parent_of(p.pid) == Some(launcher))
        {
            break p.pid;
        }
        if let Ok(Some(status)) = login.0.try_wait() {
            let out = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!("{test}: codex login exited ({status}) before listening on 1455:\n{out}");
        }
        assert!(
            Instant::now() < deadline,
            "{test}: codex login did not listen on 1455 within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };

    let outcome = free(addr, &FreePolicy::default());
    let Outcome::Freed { stopped, .. } = &outcome else {
        panic!("{test}: expected the real codex login to be freed, got: {outcome}");
    };
    assert_eq!(
        stopped.iter().map(|s| s.pid).collect::<Vec<_>>(),
        [holder],
        "{outcome}"
    );
    assert_eq!(stopped[0].name, "codex");
    let message = outcome.to_string();
    assert!(
        message.contains("127.0.0.1:1455") && message.contains("(codex)"),
        "{message}"
    );
    std::net::TcpListener::bind(addr).expect("1455 is bindable after free");

    // The launcher exits too (it is the holder, or it follows its child), within bounds.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = login.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "{test}: the login launcher did not exit after free"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        !status.success(),
        "{test}: codex login was stopped, not completed: {status}"
    );
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
