//! Before `codex login`: make sure the OAuth callback port is usable.
//!
//! Reports who holds the port, stops it only when it is a stale Codex login helper owned by
//! you, refuses otherwise (exit code 1), and with `--then-login` runs `codex login` once the
//! port is free.
//!
//! ```text
//! cargo run -p examples --example preflight -- [--port 1455] [--dry-run] [--json] [--then-login]
//! ```
//!
//! `--json` prints the [`Outcome`] as one JSON object (`outcome`, its fields, `ready`,
//! `message`, and `inspection`: the holders found before deciding); with `--then-login` and
//! no `codex`, a second object `{"login": "not_installed", "message": …}` follows.
//!
//! Exit codes: 0 port free / freed (or, with `--dry-run`, would be freed); 1 refused or
//! unknown; 127 `--then-login` but `codex` is not installed; otherwise `codex login`'s own.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use clap::Parser;
use oauth_preflight::{CODEX_CALLBACK_PORT, FreePolicy, Inspection, Outcome, free, inspect};

/// Exit code when `--then-login` cannot find or start `codex` (the shell's "command not found").
const EXIT_NO_CODEX: u8 = 127;

#[derive(Parser, Debug)]
#[command(about = "Free the Codex OAuth callback port, only from a stale Codex login helper")]
struct Args {
    /// Callback port `codex login` listens on.
    #[arg(long, default_value_t = CODEX_CALLBACK_PORT)]
    port: u16,
    /// Callback address (both loopback families are checked either way).
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,
    /// Report what would be stopped; signal nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print one JSON object instead of sentences.
    #[arg(long)]
    json: bool,
    /// Milliseconds a stopped helper gets to exit before the second, forceful stop
    /// (Unix: between SIGTERM and SIGKILL; Windows: between two TerminateProcess calls).
    #[arg(long, default_value_t = 1000)]
    grace_ms: u64,
    /// After a successful preflight, run `codex login` (arguments after `--` are passed on).
    #[arg(long)]
    then_login: bool,
    /// The Codex CLI to run with --then-login (default: $CODEX_BIN, else `codex` on PATH).
    #[arg(long)]
    codex: Option<PathBuf>,
    /// Extra arguments for `codex login`.
    #[arg(last = true)]
    login_args: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let addr = SocketAddr::new(args.host, args.port);

    // Who is there, in detail (free() decides on the same facts).
    let before = inspect(addr).ok();
    let policy = FreePolicy::default()
        .with_grace(Duration::from_millis(args.grace_ms))
        .dry_run(args.dry_run);
    let outcome = free(addr, &policy);
    let ok = outcome.is_ready() || (args.dry_run && matches!(outcome, Outcome::WouldFree { .. }));

    if args.json {
        let mut v = serde_json::to_value(&outcome).unwrap_or_default();
        if let Some(obj) = v.as_object_mut() {
            obj.insert("ready".into(), ok.into());
            obj.insert("message".into(), outcome.to_string().into());
            // What was found before deciding (holders with pid, exe, argv, uid, start time),
            // beside the outcome's own fields rather than over them.
            if let Some(found) = &before {
                obj.insert(
                    "inspection".into(),
                    serde_json::to_value(found).unwrap_or_default(),
                );
            }
        }
        // Raw values for a JSON reader; DEL, C1 and bidi characters as \u escapes.
        println!("{}", auth_core::terminal::json_for_terminal(&v.to_string()));
    } else {
        if let Some(found) = &before {
            print_holders(found);
        }
        println!("{outcome}");
    }

    if !ok {
        return ExitCode::from(1);
    }
    if args.then_login && !args.dry_run {
        return run_login(args.codex, &args.login_args, args.json);
    }
    ExitCode::SUCCESS
}

fn print_holders(found: &Inspection) {
    for h in &found.holders {
        match &h.process {
            Some(p) => {
                // Name, path and argv come from the holder itself: printed escaped (a process
                // named `x\x1b[2J` or with `\r\n` in its argv cannot forge our output).
                let exe = p.exe_display().unwrap_or_else(|| "?".to_owned());
                let uid = p.uid.map_or_else(|| "?".to_owned(), |u| u.to_string());
                println!(
                    "holder: {p} on {} — exe {exe}, argv `{}`, uid {uid} (via {})",
                    h.socket,
                    p.command_line(),
                    found.method
                );
            }
            None => println!(
                "holder: unknown process on {} (via {})",
                h.socket, found.method
            ),
        }
    }
}

/// `--codex`, else `$CODEX_BIN`, else `codex` on PATH; `Err` says where we looked.
fn find_codex(explicit: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("--codex {} is not a file", p.display()))
        };
    }
    if let Some(p) = std::env::var_os("CODEX_BIN").map(PathBuf::from) {
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("CODEX_BIN={} is not a file", p.display()))
        };
    }
    let names: &[&str] = if cfg!(windows) {
        &["codex.exe", "codex.cmd"]
    } else {
        &["codex"]
    };
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| {
            "`codex` is not on PATH (and neither --codex nor CODEX_BIN is set)".to_owned()
        })
}

fn run_login(explicit: Option<PathBuf>, extra: &[String], json: bool) -> ExitCode {
    let codex = match find_codex(explicit) {
        Ok(codex) => codex,
        Err(why) => {
            let msg = format!(
                "The port is ready, but the Codex CLI is not installed: {why}. Install it with \
                 `npm install -g @openai/codex`, then run `codex login`."
            );
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "login": "not_installed", "message": msg })
                );
            } else {
                eprintln!("{msg}");
            }
            return ExitCode::from(EXIT_NO_CODEX);
        }
    };
    let mut cmd = Command::new(&codex);
    cmd.arg("login").args(extra);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Replace this process: the login then owns the terminal and the port.
        let err = cmd.exec();
        eprintln!("Could not run {} login: {err}", codex.display());
        ExitCode::from(EXIT_NO_CODEX)
    }
    #[cfg(not(unix))]
    match cmd.status() {
        Ok(status) => ExitCode::from(u8::try_from(status.code().unwrap_or(1)).unwrap_or(1)),
        Err(err) => {
            eprintln!("Could not run {} login: {err}", codex.display());
            ExitCode::from(EXIT_NO_CODEX)
        }
    }
}
