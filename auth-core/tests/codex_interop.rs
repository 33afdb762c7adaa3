//! Interop with the real Codex CLI: it accepts the `auth.json` this crate writes, and
//! this crate reads the one it writes. Skips visibly when the CLI is not installed.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use auth_core::jwt::{self, IdTokenClaims, PlanType};
use auth_core::{AuthDocument, AuthMode, Secret, Timestamp, TokenData};

/// The Codex CLI, or `None` after printing the visible `SKIP:` line for `test` with the
/// reason.
fn codex_bin_or_skip(test: &str) -> Option<PathBuf> {
    find_codex().map_err(|reason| skip(test, &reason)).ok()
}

/// The Codex CLI: `CODEX_BIN`, else the workspace's npm install, else `codex` on PATH — or
/// why there is none. On Windows only a Windows program counts (`CODEX_BIN` naming an
/// `.exe`, or `codex.exe` on PATH): the workspace's npm install holds the Linux binary,
/// which a Windows process cannot start.
fn find_codex() -> Result<PathBuf, String> {
    let windows = cfg!(windows);
    if let Some(bin) = std::env::var_os("CODEX_BIN")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
    {
        let is_exe = bin
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("exe"));
        if windows && !is_exe {
            return Err(format!(
                "CODEX_BIN ({}) is not a Windows program; set it to a Windows codex.exe",
                bin.display()
            ));
        }
        return Ok(bin);
    }
    if !windows {
        let vendored = Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "../.codex-cli/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex",
        );
        if vendored.is_file() {
            return Ok(vendored);
        }
    }
    let name = format!("codex{}", std::env::consts::EXE_SUFFIX);
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(&name))
                .find(|candidate| candidate.is_file())
        })
        .ok_or_else(|| {
            if windows {
                "no Windows Codex CLI (set CODEX_BIN to a Windows codex.exe)".to_owned()
            } else {
                "Codex CLI not found (set CODEX_BIN)".to_owned()
            }
        })
}

fn skip(test: &str, reason: &str) {
    let _ = writeln!(std::io::stderr(), "SKIP: {test}: {reason}");
}

/// Runs the CLI with `CODEX_HOME` set and any token refresh pointed at a closed
/// loopback port, so nothing can leave the machine. Bounded by a timeout.
fn run_codex(bin: &Path, home: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(bin)
        .args(args)
        .env("CODEX_HOME", home)
        .env(
            "CODEX_REFRESH_TOKEN_URL_OVERRIDE",
            "http://127.0.0.1:9/oauth/token",
        )
        .env_remove("OPENAI_API_KEY")
        .env_remove("CODEX_API_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn codex");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("codex {args:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn write_auth(home: &Path, text: &str) {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(home.join("auth.json")).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn text(output: &Output) -> String {
    format!(
        "status={:?}\nstdout={}\nstderr={}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn chatgpt_document() -> AuthDocument {
    let now = now_secs();
    let claims = IdTokenClaims {
        email: Some("interop@example.com".into()),
        exp: Some(now + 3600),
        iat: Some(now),
        chatgpt_plan_type: Some(PlanType::Plus),
        chatgpt_account_id: Some("acc-interop".into()),
        chatgpt_user_id: Some("user-interop".into()),
    };
    let id_token = jwt::encode_unsigned_for_testing(&claims);
    // The access token is a JWT too (the CLI reads its expiry).
    let access_token = jwt::encode_unsigned_json_for_testing(&serde_json::json!({
        "exp": now + 3600,
        "iat": now,
        "https://api.openai.com/auth": {"chatgpt_account_id": "acc-interop"},
    }));
    let tokens = TokenData::new(
        id_token.into(),
        access_token.into(),
        "rt-interop".into(),
        Some("acc-interop".into()),
    )
    .unwrap();
    AuthDocument::chatgpt(tokens, Timestamp::now())
}

#[test]
fn cli_accepts_api_key_document_we_write() {
    let Some(bin) = codex_bin_or_skip("cli_accepts_api_key_document_we_write") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let doc = AuthDocument::api_key(Secret::new("sk-interop-test-key".into()));
    write_auth(home.path(), &doc.to_json_pretty());
    let out = run_codex(&bin, home.path(), &["login", "status"], None);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("API key configured"), "{all}");
}

#[test]
fn cli_accepts_chatgpt_document_we_write() {
    let Some(bin) = codex_bin_or_skip("cli_accepts_chatgpt_document_we_write") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let mut doc = chatgpt_document();
    // A field another tool added: kept by us, ignored by the CLI.
    doc.extra.insert(
        "x_tool_metadata".into(),
        serde_json::json!({"label": "work"}),
    );
    write_auth(home.path(), &doc.to_json_pretty());
    let out = run_codex(&bin, home.path(), &["login", "status"], None);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("Logged in using ChatGPT"), "{all}");
    // The CLI did not rewrite our file into something we cannot read.
    let after = std::fs::read_to_string(home.path().join("auth.json")).unwrap();
    let reread = AuthDocument::from_json_str(&after).unwrap();
    assert_eq!(reread.effective_mode(), Some(AuthMode::Chatgpt));
    assert_eq!(reread.tokens, doc.tokens);
}

#[test]
fn cli_rejects_non_jwt_id_token_as_we_do() {
    let Some(bin) = codex_bin_or_skip("cli_rejects_non_jwt_id_token_as_we_do") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let text_doc = r#"{
  "auth_mode": "chatgpt",
  "OPENAI_API_KEY": null,
  "tokens": {
    "id_token": "not-a-jwt",
    "access_token": "a",
    "refresh_token": "r",
    "account_id": null
  },
  "last_refresh": "2025-01-01T00:00:00Z"
}"#;
    write_auth(home.path(), text_doc);
    let out = run_codex(&bin, home.path(), &["login", "status"], None);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("failed to deserialize"), "{all}");
    assert!(AuthDocument::from_json_str(text_doc).is_err());
}

#[test]
fn we_read_what_cli_writes_with_api_key() {
    let Some(bin) = codex_bin_or_skip("we_read_what_cli_writes_with_api_key") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let out = run_codex(
        &bin,
        home.path(),
        &["login", "--with-api-key"],
        Some("sk-written-by-cli\n"),
    );
    assert!(out.status.success(), "{}", text(&out));
    let raw = std::fs::read_to_string(home.path().join("auth.json")).unwrap();
    let doc = AuthDocument::from_json_str(&raw).unwrap();
    assert_eq!(doc.auth_mode, Some(AuthMode::ApiKey));
    assert_eq!(
        doc.openai_api_key.as_ref().map(Secret::expose),
        Some("sk-written-by-cli")
    );
    assert!(doc.tokens.is_none() && doc.extra.is_empty());
    // Byte-for-byte: what we would write is what the CLI wrote.
    assert_eq!(doc.to_json_pretty(), raw);
}
