//! Show what a Codex `auth.json` holds, without printing any secret.
//!
//! ```sh
//! cargo run --example auth-status -- --codex-home ~/.codex
//! cargo run --example auth-status -- --codex-home ~/.codex --json
//! ```
//!
//! Prints the login mode, the masked email, plan, account id, token expiry and last
//! refresh of `DIR/auth.json`. Tokens and keys are never printed (at most a short
//! SHA-256 fingerprint to tell two apart). The file is only read, never written.
//! Exits 1 with a message naming the file and the problem when it is missing, empty,
//! truncated or malformed.
//!
//! Text from the file and its tokens (email, plan, ids, field names, the path) is printed
//! with control and bidi characters escaped (`\x1b`, `\u{202e}`); `--json` output is
//! JSON, whose serializer escapes them. An `exp` claim outside the years -9999..=9999
//! shows as "invalid date", never as a wrong date.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use auth_core::redact::mask_email;
use auth_core::terminal::escape_control;
use auth_core::{AuthDocument, AuthMode, IdTokenClaims};
use clap::Parser;
use serde_json::json;

/// Show the login stored in a Codex home directory (no secrets are printed).
#[derive(Parser)]
#[command(name = "auth-status")]
struct Args {
    /// The Codex home directory (the one holding auth.json), e.g. ~/.codex.
    #[arg(long, value_name = "DIR")]
    codex_home: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Read `auth.json` only if it is a regular file of at most 1 MiB: a FIFO, socket, device or
/// directory there (or a symlink to one) is refused at once instead of blocking or reading
/// without end (see `auth_core::regular_file`).
fn read_auth(path: &Path) -> Result<Vec<u8>, String> {
    use auth_core::regular_file::{AUTH_JSON_MAX_BYTES, FileError, read_regular};
    match read_regular(path, AUTH_JSON_MAX_BYTES) {
        Ok(Some(bytes)) => Ok(bytes),
        Ok(None) => Err(
            "file not found: no login is stored here (run `codex login` with this CODEX_HOME)"
                .to_owned(),
        ),
        Err(FileError::NotRegular { kind, .. }) => Err(format!(
            "is {kind}, not a regular file (expected the auth.json file); move it away"
        )),
        Err(FileError::TooLarge { limit, .. }) => Err(format!(
            "is larger than {limit} bytes; it is not a Codex auth file"
        )),
        Err(FileError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            Err("permission denied: run as the user who owns it".to_owned())
        }
        Err(FileError::Io { action, source, .. }) => Err(format!("cannot {action}: {source}")),
        Err(other) => Err(other.to_string()),
    }
}

fn unix(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// The claim's date, or "invalid date" when no RFC 3339 date can show it (before year
/// -9999 or after 9999): a token may carry any `i64`, and a wrong date is worse than none.
fn rfc3339(secs: i64) -> String {
    auth_core::Timestamp::from_unix_seconds(secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| INVALID_DATE.to_owned())
}

const INVALID_DATE: &str = "invalid date";

fn relative(secs: i64, now: i64) -> String {
    // i128: the difference of two i64 values cannot overflow it.
    let delta = i128::from(secs) - i128::from(now);
    let abs = delta.unsigned_abs();
    let span = if abs >= 86_400 {
        format!("{}d {}h", abs / 86_400, (abs % 86_400) / 3600)
    } else if abs >= 3600 {
        format!("{}h {}m", abs / 3600, (abs % 3600) / 60)
    } else {
        format!("{}m {}s", abs / 60, abs % 60)
    };
    if delta > 0 {
        format!("valid for {span}")
    } else {
        format!("EXPIRED {span} ago")
    }
}

/// The raw `exp` of the access token (any `i64`), when it is a JWT with one.
fn access_token_exp(tokens: &auth_core::TokenData) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Exp {
        exp: Option<i64>,
    }
    auth_core::jwt::decode_payload::<Exp>(tokens.access_token.expose())
        .ok()
        .and_then(|e| e.exp)
}

struct Report {
    mode: Option<String>,
    api_key: Option<String>,
    email: Option<String>,
    plan: Option<String>,
    account_id: Option<String>,
    user_id: Option<String>,
    access_expires: Option<i64>,
    id_token_expires: Option<i64>,
    last_refresh: Option<String>,
    unknown_fields: Vec<String>,
}

fn report(doc: &AuthDocument) -> Result<Report, String> {
    let mut claims = IdTokenClaims::default();
    let mut access_expires = None;
    let mut account_id = None;
    if let Some(tokens) = &doc.tokens {
        claims = tokens
            .id_token_claims()
            .map_err(|err| format!("field `tokens.id_token` is unusable: {err}"))?;
        // The access token is usually a JWT too; if not, its expiry is just unknown.
        access_expires = access_token_exp(tokens);
        account_id = tokens.effective_account_id();
    }
    Ok(Report {
        mode: doc.effective_mode().map(|m| match m {
            AuthMode::ApiKey => "apikey".to_owned(),
            AuthMode::Chatgpt => "chatgpt".to_owned(),
            other => other.as_str().to_owned(),
        }),
        api_key: doc
            .openai_api_key
            .as_ref()
            .map(|k| format!("configured (sha256:{})", k.fingerprint())),
        email: claims.email.as_deref().map(mask_email),
        plan: claims
            .chatgpt_plan_type
            .as_ref()
            .map(|p| p.as_str().to_owned()),
        account_id,
        user_id: claims.chatgpt_user_id.clone(),
        access_expires,
        id_token_expires: claims.exp,
        last_refresh: doc.last_refresh.as_ref().map(|t| t.to_string()),
        unknown_fields: doc.extra.keys().cloned().collect(),
    })
}

fn print_text(path: &Path, r: &Report, now: i64) {
    let dash = || "-".to_owned();
    let when = |t: Option<i64>| match t {
        Some(t) => match auth_core::Timestamp::from_unix_seconds(t) {
            Ok(date) => format!("{date} ({})", relative(t, now)),
            Err(_) => format!("{INVALID_DATE} (the `exp` claim {t} is out of range)"),
        },
        None => dash(),
    };
    // Everything below comes from the file or its tokens: escape control characters.
    let esc = |text: &str| escape_control(text).to_string();
    println!("file:          {}", esc(&path.display().to_string()));
    println!(
        "login mode:    {}",
        esc(r.mode.as_deref().unwrap_or("none"))
    );
    println!("API key:       {}", r.api_key.clone().unwrap_or_else(dash));
    println!("email:         {}", esc(r.email.as_deref().unwrap_or("-")));
    println!("plan:          {}", esc(r.plan.as_deref().unwrap_or("-")));
    println!(
        "account id:    {}",
        esc(r.account_id.as_deref().unwrap_or("-"))
    );
    println!(
        "user id:       {}",
        esc(r.user_id.as_deref().unwrap_or("-"))
    );
    println!("access token:  expires {}", when(r.access_expires));
    println!("id token:      expires {}", when(r.id_token_expires));
    println!(
        "last refresh:  {}",
        esc(r.last_refresh.as_deref().unwrap_or("-"))
    );
    if !r.unknown_fields.is_empty() {
        println!("other fields:  {}", esc(&r.unknown_fields.join(", ")));
    }
}

fn print_json(path: &Path, r: &Report, now: i64) {
    let value = json!({
        "file": path.display().to_string(),
        "mode": r.mode,
        "api_key": r.api_key,
        "email": r.email,
        "plan": r.plan,
        "account_id": r.account_id,
        "user_id": r.user_id,
        "access_token_expires_at": r.access_expires.map(rfc3339),
        "access_token_expired": r.access_expires.map(|t| t <= now),
        "id_token_expires_at": r.id_token_expires.map(rfc3339),
        "id_token_expired": r.id_token_expires.map(|t| t <= now),
        "last_refresh": r.last_refresh,
        "other_fields": r.unknown_fields,
    });
    // Values stay raw for a JSON reader; DEL, C1 and bidi characters become \u escapes so
    // the text is also safe on a terminal.
    println!(
        "{}",
        auth_core::terminal::json_for_terminal(&format!("{value:#}"))
    );
}

fn main() -> ExitCode {
    let args = Args::parse();
    let path = args.codex_home.join("auth.json");
    let result = read_auth(&path).and_then(|bytes| {
        let doc = AuthDocument::from_json_slice(&bytes).map_err(|err| err.to_string())?;
        report(&doc)
    });
    match result {
        Ok(r) => {
            let now = unix(SystemTime::now());
            if args.json {
                print_json(&path, &r, now);
            } else {
                print_text(&path, &r, now);
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!(
                "auth-status: {}: {}",
                escape_control(&path.display().to_string()),
                escape_control(&message)
            );
            ExitCode::FAILURE
        }
    }
}
