//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use auth_core::jwt::{IdTokenClaims, PlanType};
use auth_core::{Secret, TokenData};

/// Real-shaped (unsigned, test-only) tokens for `email` in workspace `account_id`.
pub(crate) fn tokens(email: &str, account_id: &str, refresh: &str) -> TokenData {
    // auth-core may grow more claims; keep the defaults for those.
    #[allow(clippy::needless_update)]
    let claims = IdTokenClaims {
        email: Some(email.to_owned()),
        exp: Some(4_000_000_000),
        iat: Some(1_700_000_000),
        chatgpt_plan_type: Some(PlanType::Plus),
        chatgpt_account_id: Some(account_id.to_owned()),
        chatgpt_user_id: Some(format!("user-{account_id}")),
        ..IdTokenClaims::default()
    };
    let id_token = auth_core::jwt::encode_unsigned_for_testing(&claims);
    let access = IdTokenClaims {
        exp: Some(4_000_000_000),
        ..IdTokenClaims::default()
    };
    let access_token = auth_core::jwt::encode_unsigned_for_testing(&access);
    TokenData::new(
        Secret::new(id_token),
        Secret::new(access_token),
        Secret::new(refresh.to_owned()),
        Some(account_id.to_owned()),
    )
    .unwrap()
}

pub(crate) fn skip(test: &str, reason: &str) {
    let _ = writeln!(std::io::stderr(), "SKIP: {test}: {reason}");
}

/// The real Codex CLI, located as the workspace brief says; `None` means skip.
pub(crate) fn codex_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CODEX_BIN").map(PathBuf::from)
        && p.is_file()
    {
        return Some(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let p = root.join(
        ".codex-cli/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex",
    );
    if p.is_file() {
        return Some(p);
    }
    let ok = Command::new("codex")
        .arg("--version")
        .output()
        .map(|o| o.status.success());
    ok.unwrap_or(false).then(|| PathBuf::from("codex"))
}

/// Run `codex <args>` with `CODEX_HOME=home`, optional stdin; returns (exit code, stdout+stderr).
pub(crate) fn run_codex(
    bin: &Path,
    home: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> (i32, String) {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env("CODEX_HOME", home)
        .env_remove("OPENAI_API_KEY")
        .env_remove("CODEX_API_KEY");
    let (code, out, err) = run_bounded(cmd, stdin, 60);
    (code, format!("{out}{err}"))
}

/// Run `cmd` with piped stdio, feeding `stdin`; killed after `secs` seconds (the test then
/// fails on its output). Returns (exit code, stdout, stderr).
pub(crate) fn run_bounded(
    mut cmd: Command,
    stdin: Option<&str>,
    secs: u64,
) -> (i32, String, String) {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    (
        status.code().unwrap_or(-1),
        t_out.join().unwrap(),
        t_err.join().unwrap(),
    )
}

/// Wait for an already spawned `child` (stdout piped) for at most `secs` seconds, killing it
/// then; returns (exit status, stdout).
pub(crate) fn wait_bounded(
    mut child: std::process::Child,
    secs: u64,
) -> (std::process::ExitStatus, String) {
    let out = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut out) = out {
            let _ = std::io::Read::read_to_string(&mut out, &mut s);
        }
        s
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let status = child.wait().unwrap();
            panic!("child did not finish within {secs} s ({status})");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    (status, reader.join().unwrap())
}
