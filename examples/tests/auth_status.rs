//! Runs the built `auth-status` example against real files: prints what matters, never
//! a secret, and fails clearly (without touching the file) on bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use auth_core::jwt::{self, IdTokenClaims, PlanType};
use auth_core::{AuthDocument, Secret, TokenData};

const EMAIL: &str = "someone.private@example.com";
const ACCESS: &str = "access-SECRET-value";
const REFRESH: &str = "refresh-SECRET-value";

/// `cargo test` builds examples next to the test binaries (`target/<profile>/examples`);
/// build it explicitly if this test runs alone.
fn example_bin() -> PathBuf {
    if let Some(bin) = common::example("auth-status") {
        return bin;
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "-p", "examples", "--example", "auth-status"])
        .status()
        .unwrap();
    assert!(status.success(), "building the auth-status example failed");
    common::example("auth-status").expect("the auth-status example was just built")
}

/// A fresh, empty directory under the system temp dir, removed on drop.
struct TempHome(PathBuf);

impl TempHome {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "auth-status-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn auth(&self) -> PathBuf {
        self.0.join("auth.json")
    }
}

impl Drop for TempHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(home: &Path, json: bool) -> Output {
    let mut cmd = Command::new(example_bin());
    cmd.arg("--codex-home").arg(home);
    if json {
        cmd.arg("--json");
    }
    cmd.output().unwrap()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn chatgpt_doc(exp: i64) -> AuthDocument {
    let id_token = jwt::encode_unsigned_for_testing(&IdTokenClaims {
        email: Some(EMAIL.into()),
        exp: Some(exp),
        iat: Some(exp - 3600),
        chatgpt_plan_type: Some(PlanType::Pro),
        chatgpt_account_id: Some("acc-1234".into()),
        chatgpt_user_id: Some("user-5678".into()),
    });
    let tokens = TokenData::new(
        id_token.into(),
        ACCESS.into(),
        REFRESH.into(),
        Some("acc-1234".into()),
    )
    .unwrap();
    AuthDocument::chatgpt(tokens, "2025-08-06T20:41:36.232376Z".parse().unwrap())
}

fn assert_no_secrets(text: &str, doc: &AuthDocument) {
    let tokens = doc.tokens.as_ref().unwrap();
    for secret in [EMAIL, ACCESS, REFRESH, tokens.id_token.expose(), "eyJ"] {
        assert!(!text.contains(secret), "output leaks {secret}:\n{text}");
    }
}

fn snapshot(path: &Path) -> (Vec<u8>, SystemTime) {
    (
        std::fs::read(path).unwrap(),
        std::fs::metadata(path).unwrap().modified().unwrap(),
    )
}

#[test]
fn text_report_for_chatgpt_login() {
    let home = TempHome::new();
    let doc = chatgpt_doc(now() + 7200);
    std::fs::write(home.auth(), doc.to_json_pretty()).unwrap();
    let before = snapshot(&home.auth());

    let out = run(&home.0, false);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "login mode:    chatgpt",
        "email:         s***@example.com",
        "plan:          pro",
        "account id:    acc-1234",
        "last refresh:  2025-08-06T20:41:36.232376Z",
        "id token:      expires ",
        "(valid for ",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert_no_secrets(&stdout, &doc);
    assert_eq!(snapshot(&home.auth()), before, "the file was modified");
}

/// Hostile claims: any `exp` (the full `i64` range, including the year-10000 and
/// `i64::MIN` values that used to panic or print 1970) and claim strings with CR/LF/ESC,
/// C1 and bidi characters. The program must exit 0, print "invalid date" for dates it
/// cannot show, and print no raw control character; `--json` stays valid JSON that
/// carries the values.
#[test]
fn hostile_claims_never_panic_forge_lines_or_show_a_wrong_date() {
    let hostile = "x\r\nlogin mode:    apikey\x1b[2J\x1b]0;owned\x07\u{9b}31m\u{202e}";
    let year_10000 = 253_402_300_800_i64;
    for exp in [
        i64::MIN,
        i64::MIN + 1,
        -62_135_596_801,
        year_10000,
        year_10000 + 1,
        i64::MAX,
    ] {
        let home = TempHome::new();
        let id_token = jwt::encode_unsigned_json_for_testing(&serde_json::json!({
            "email": format!("{hostile}@evil\u{1b}[31m.example"),
            "exp": exp,
            "iat": exp,
            "https://api.openai.com/auth": {
                "chatgpt_plan_type": hostile,
                "chatgpt_account_id": hostile,
                "chatgpt_user_id": hostile,
            },
        }));
        let access = jwt::encode_unsigned_json_for_testing(&serde_json::json!({"exp": exp}));
        let tokens = TokenData::new(id_token.into(), access.into(), REFRESH.into(), None).unwrap();
        let mut doc = AuthDocument::chatgpt(tokens, "2025-08-06T20:41:36Z".parse().unwrap());
        doc.extra
            .insert(format!("field{hostile}"), serde_json::Value::Null);
        std::fs::write(home.auth(), doc.to_json_pretty()).unwrap();

        let out = run(&home.0, false);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "exp {exp}: {stdout}{stderr}");
        for text in [&stdout, &stderr] {
            let raw: Vec<char> = text
                .chars()
                .filter(|&c| c != '\n' && auth_core::terminal::is_unsafe_char(c))
                .collect();
            assert!(raw.is_empty(), "exp {exp}: raw {raw:?} in:\n{text}");
        }
        // One line per field: no forged "login mode" line.
        assert_eq!(
            stdout
                .lines()
                .filter(|l| l.starts_with("login mode:"))
                .count(),
            1,
            "{stdout}"
        );
        assert!(
            stdout.contains("plan:          x\\x0d\\x0alogin mode:"),
            "{stdout}"
        );
        let showable = auth_core::Timestamp::from_unix_seconds(exp).is_ok();
        assert_eq!(
            stdout.contains("expires invalid date"),
            !showable,
            "exp {exp}:\n{stdout}"
        );
        assert!(!stdout.contains("1970-01-01"), "exp {exp}:\n{stdout}");
        if exp == i64::MIN {
            // Everything after the (temporary) file path, as the user sees it.
            let shown: Vec<&str> = stdout.lines().skip(1).collect();
            insta::assert_snapshot!(shown.join("\n"), @r"
            login mode:    chatgpt
            API key:       -
            email:         x***@evil\x1b[31m.example
            plan:          x\x0d\x0alogin mode:    apikey\x1b[2J\x1b]0;owned\x07\u{9b}31m\u{202e}
            account id:    x\x0d\x0alogin mode:    apikey\x1b[2J\x1b]0;owned\x07\u{9b}31m\u{202e}
            user id:       x\x0d\x0alogin mode:    apikey\x1b[2J\x1b]0;owned\x07\u{9b}31m\u{202e}
            access token:  expires invalid date (the `exp` claim -9223372036854775808 is out of range)
            id token:      expires invalid date (the `exp` claim -9223372036854775808 is out of range)
            last refresh:  2025-08-06T20:41:36Z
            other fields:  fieldx\x0d\x0alogin mode:    apikey\x1b[2J\x1b]0;owned\x07\u{9b}31m\u{202e}
            ");
        }

        let out = run(&home.0, true);
        assert!(out.status.success(), "exp {exp}");
        let text = String::from_utf8_lossy(&out.stdout);
        let raw: Vec<char> = text
            .chars()
            .filter(|&c| c != '\n' && auth_core::terminal::is_unsafe_char(c))
            .collect();
        assert!(raw.is_empty(), "--json shows {raw:?} raw:\n{text}");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
        assert_eq!(json["plan"], hostile);
        assert_eq!(json["account_id"], hostile);
        let expected_date = auth_core::Timestamp::from_unix_seconds(exp)
            .map(|t| t.to_string())
            .unwrap_or_else(|_| "invalid date".into());
        assert_eq!(json["id_token_expires_at"], expected_date.as_str());
        assert_eq!(json["access_token_expires_at"], expected_date.as_str());
        assert_eq!(json["id_token_expired"], exp <= now());
    }
}

#[test]
fn json_report_marks_expiry() {
    let home = TempHome::new();
    let exp = now() - 60;
    let doc = chatgpt_doc(exp);
    std::fs::write(home.auth(), doc.to_json_pretty()).unwrap();
    let before = snapshot(&home.auth());
    let out = run(&home.0, true);
    assert!(out.status.success());
    assert_eq!(snapshot(&home.auth()), before, "the file was modified");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_no_secrets(&stdout, &doc);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["mode"], "chatgpt");
    assert_eq!(v["email"], "s***@example.com");
    assert_eq!(v["plan"], "pro");
    assert_eq!(v["account_id"], "acc-1234");
    assert_eq!(v["id_token_expired"], true);
    let expected_expiry = auth_core::Timestamp::from_system_time(
        UNIX_EPOCH + std::time::Duration::from_secs(exp.unsigned_abs()),
    )
    .to_string();
    assert_eq!(v["id_token_expires_at"], expected_expiry.as_str());
    assert_eq!(v["file"], home.auth().display().to_string().as_str());
    assert_eq!(v["last_refresh"], "2025-08-06T20:41:36.232376Z");
}

#[test]
fn api_key_login_shows_only_a_fingerprint() {
    let home = TempHome::new();
    let key = Secret::from("sk-proj-SECRET-key");
    std::fs::write(
        home.auth(),
        AuthDocument::api_key(key.clone()).to_json_pretty(),
    )
    .unwrap();
    let before = snapshot(&home.auth());
    let out = run(&home.0, false);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(snapshot(&home.auth()), before, "the file was modified");
    assert!(stdout.contains("login mode:    apikey"), "{stdout}");
    assert!(stdout.contains(&key.fingerprint()), "{stdout}");
    assert!(!stdout.contains("SECRET"), "{stdout}");
}

fn assert_fails(home: &TempHome, contents: Option<&[u8]>, expected: &str) {
    if let Some(bytes) = contents {
        std::fs::write(home.auth(), bytes).unwrap();
    }
    let before = contents.map(|_| snapshot(&home.auth()));
    let out = run(&home.0, false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(
        stderr.contains(&home.auth().display().to_string()),
        "no path in {stderr}"
    );
    assert!(
        stderr.contains(expected),
        "expected {expected:?} in {stderr}"
    );
    assert!(!stderr.contains("SECRET"), "{stderr}");
    if let Some(before) = before {
        assert_eq!(snapshot(&home.auth()), before, "the file was modified");
    }
}

#[test]
fn missing_file() {
    let home = TempHome::new();
    assert_fails(&home, None, "file not found");
    assert!(!home.auth().exists(), "a file was created");
}

#[test]
fn empty_truncated_and_malformed_files() {
    let home = TempHome::new();
    let full = chatgpt_doc(now() + 3600).to_json_pretty();
    assert_fails(&home, Some(b""), "auth.json is empty");
    assert_fails(&home, Some(&full.as_bytes()[..full.len() / 2]), "truncated");
    assert_fails(
        &home,
        Some(b"{\"tokens\": \"SECRET\"}"),
        "field `tokens` is invalid",
    );
    assert_fails(
        &home,
        Some(br#"{"tokens": {"id_token": "SECRET-not-jwt", "access_token": "a", "refresh_token": "r"}}"#),
        "field `tokens.id_token` is invalid",
    );
    assert_fails(&home, Some(b"not json at all"), "not valid JSON at line 1");
}
