//! Helpers shared by the examples' integration tests.
#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::path::PathBuf;

/// The real Codex CLI: `CODEX_BIN`, else the workspace's npm install, else `codex` on PATH.
pub fn codex_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CODEX_BIN")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
    {
        return Some(p);
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(".codex-cli/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex");
    if local.is_file() {
        return Some(local);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("codex"))
            .find(|p| p.is_file())
    })
}

/// Prints a visible SKIP line (bypassing libtest's capture).
pub fn skip(test: &str, reason: &str) {
    let _ = writeln!(std::io::stderr(), "SKIP: {test}: {reason}");
}

/// A built example program (`target/<profile>/examples/<name>`), next to the test binary's
/// `deps` directory. Plain `cargo test` builds the examples; `cargo test --test …` may not.
pub fn example(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("examples").join(name);
    path.is_file().then_some(path)
}

/// [`example`], printing a visible SKIP line for `test` when the program is not built.
pub fn example_or_skip(name: &str, test: &str) -> Option<PathBuf> {
    let found = example(name);
    if found.is_none() {
        skip(
            test,
            &format!(
                "example binary {name} not built (run `cargo build --workspace --all-features --examples`)"
            ),
        );
    }
    found
}

/// What a finished child printed, and its exit code (`None` when a signal ended it).
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to completion with stdin closed, draining stdout and stderr on threads (so a
/// chatty child never blocks on a full pipe), and kills it and panics after `limit`.
pub fn run_bounded(mut cmd: std::process::Command, limit: std::time::Duration) -> Run {
    use std::io::Read;
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        code,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// Starts the built `rotation-proxy` program on an ephemeral loopback port over `pool_dir`
/// and `codex_home`, forwarding to `mock` (upstream and token endpoint), with debug logs and
/// both output streams piped. `token` is the wrapper token in `ROTATION_PROXY_TOKEN`; `None`
/// removes the variable so the program generates one. Killed when dropped.
pub fn spawn_proxy(
    binary: &std::path::Path,
    pool_dir: &std::path::Path,
    codex_home: &std::path::Path,
    mock: &examples::mock_upstream::MockUpstream,
    token: Option<&str>,
) -> tokio::process::Child {
    use examples::proxy::TOKEN_ENV;
    use std::process::Stdio;

    let mut cmd = tokio::process::Command::new(binary);
    cmd.args(["--listen", "127.0.0.1:0", "--pool-dir"])
        .arg(pool_dir)
        .arg("--codex-home")
        .arg(codex_home)
        .args([
            "--upstream",
            &mock.base_url(),
            "--token-url",
            &mock.token_url(),
        ]);
    match token {
        Some(token) => cmd.env(TOKEN_ENV, token),
        None => cmd.env_remove(TOKEN_ENV),
    };
    cmd.env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}
