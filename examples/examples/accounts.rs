//! A small account switcher: keep many ChatGPT logins in a pool and hand one to `codex`.
//!
//! ```text
//! cargo run -p examples --example accounts -- import --codex-home ~/.codex
//! cargo run -p examples --example accounts -- list            # masked emails
//! cargo run -p examples --example accounts -- list --json
//! cargo run -p examples --example accounts -- use 2 --codex-home ~/.codex
//! cargo run -p examples --example accounts -- remove 2
//! cargo run -p examples --example accounts -- add [--no-browser]   # browser sign-in
//! ```
//!
//! `import` and `use` read and write the Codex home's login where the CLI keeps it: the
//! `cli_auth_credentials_store` setting of its `config.toml` (`file`, the default, means
//! `auth.json`; `keyring` and `auto` use the OS keyring, as the CLI does).
//!
//! `use` first saves the login it replaces into the pool (tokens the CLI refreshed since
//! are kept; an unknown login is added), and refuses to replace an API-key login.
//!
//! The pool lives in `--pool-dir`, else `$CODEX_POOL_DIR`, else `$CODEX_HOME/accounts`
//! (`~/.codex/accounts`). Every change is a locked, atomic read-modify-write, so running
//! several of these at once (or beside `codex`) never loses an account; a failing command
//! changes nothing.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use auth_storage::pool::{Pool, Upsert};
use auth_storage::{CodexHome, CredentialStore, PoolStore, StorageError, StoreMode};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Keep several ChatGPT logins for the Codex CLI and switch between them")]
struct Cli {
    /// Directory of the account pool (default: $CODEX_POOL_DIR, else $CODEX_HOME/accounts).
    #[arg(long, global = true, value_name = "DIR")]
    pool_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Add the login currently in a Codex home to the pool (or refresh its tokens).
    Import {
        /// The Codex home to read (default: $CODEX_HOME, else ~/.codex).
        #[arg(long, value_name = "DIR")]
        codex_home: Option<PathBuf>,
    },
    /// Show the accounts (emails masked, no tokens).
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Make account N (as numbered by `list`) the login of a Codex home.
    Use {
        /// Account number from `list`.
        n: usize,
        /// The Codex home to write (default: $CODEX_HOME, else ~/.codex).
        #[arg(long, value_name = "DIR")]
        codex_home: Option<PathBuf>,
    },
    /// Remove account N (as numbered by `list`) from the pool.
    Remove {
        /// Account number from `list`.
        n: usize,
    },
    /// Sign in with a browser (the Codex CLI's OAuth flow) and add the account to the pool.
    Add {
        /// Print the sign-in link only; do not open a browser.
        #[arg(long)]
        no_browser: bool,
        /// Issuer base URL (tests point this at a loopback mock).
        #[arg(long, hide = true, value_name = "URL")]
        issuer: Option<String>,
        /// Callback address (tests use 127.0.0.1:0).
        #[arg(long, hide = true, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        /// Give up when the browser has not come back after this many seconds.
        #[arg(long, hide = true, value_name = "SECS", default_value_t = 600)]
        timeout_secs: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn codex_home(dir: Option<PathBuf>) -> Result<CodexHome, StorageError> {
    dir.map(CodexHome::new)
        .or_else(CodexHome::from_env)
        .ok_or_else(|| StorageError::Invalid {
            what: "Codex home",
            detail: "no --codex-home given and neither CODEX_HOME nor HOME is set".into(),
        })
}

/// Where the Codex CLI keeps the login of `home`: `cli_auth_credentials_store` in its
/// `config.toml` (`file` when absent, as in the CLI), so `use` writes where `codex` reads.
fn credential_store(
    home: &CodexHome,
) -> Result<Box<dyn CredentialStore>, Box<dyn std::error::Error>> {
    let config = home.dir().join("config.toml");
    // Regular file of bounded size only: a FIFO or device here must not hang `accounts`.
    let text = config_rewrite::read_config(&config)?.unwrap_or_default();
    let key = "cli_auth_credentials_store";
    let mode = config_rewrite::read_string(&text, &config_rewrite::Target::TopLevel, key)
        .map_err(|e| format!("{}: {e}", config.display()))?
        .map(|value| value.parse::<StoreMode>())
        .transpose()
        .map_err(|e| format!("{}: {key}: {e}", config.display()))?
        .unwrap_or_default();
    if mode == StoreMode::Ephemeral {
        return Err(format!(
            "{} sets {key} = \"ephemeral\": the Codex CLI keeps that login in its own memory, \
             so no other program can hand it an account",
            config.display()
        )
        .into());
    }
    Ok(auth_storage::open_store(home.clone(), mode)?)
}

/// `list` numbers accounts from 1; turn N into an index, rejecting 0.
fn index(n: usize) -> Result<usize, StorageError> {
    n.checked_sub(1).ok_or_else(|| StorageError::Invalid {
        what: "account number",
        detail: "accounts are numbered from 1, as `list` shows them".into(),
    })
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let pool = match cli.pool_dir {
        Some(dir) => PoolStore::new(dir),
        None => PoolStore::open_default()?,
    };
    match cli.command {
        Command::Import { codex_home: dir } => {
            let home = codex_home(dir)?;
            let (outcome, account) = pool.import(credential_store(&home)?.as_ref(), now())?;
            let verb = match outcome {
                Upsert::Added(_) => "added",
                Upsert::Updated(_) => "updated",
                _ => "stored",
            };
            let n = match outcome {
                Upsert::Added(i) | Upsert::Updated(i) => i + 1,
                _ => 0,
            };
            println!(
                "{verb} #{n} {} ({}) from {}",
                account.masked_email(),
                account.plan.as_deref().unwrap_or("unknown plan"),
                home.dir().display()
            );
        }
        Command::List { json } => {
            let loaded = pool.load()?;
            if let Some(recovery) = &loaded.recovery {
                eprintln!(
                    "note: {} was unusable ({:?}); showing {}",
                    pool.file().display(),
                    recovery.reason,
                    recovery
                        .backup
                        .as_ref()
                        .map(|b| format!("backup {}", b.display()))
                        .unwrap_or_else(|| "an empty pool".into())
                );
            }
            if json {
                println!("{}", list_json(&loaded.pool));
            } else {
                print_table(&loaded.pool);
            }
        }
        Command::Use { n, codex_home: dir } => {
            let home = codex_home(dir)?;
            let store = credential_store(&home)?;
            let done = pool.switch_to(index(n)?, store.as_ref(), now())?;
            // The login that was there is never lost: it went into the pool first.
            if let Some((outcome, previous)) = &done.previous
                && previous.key() != done.account.key()
            {
                match outcome {
                    Upsert::Added(i) => println!(
                        "kept the login that was there as #{} {}",
                        i + 1,
                        previous.masked_email()
                    ),
                    Upsert::Updated(i) => println!(
                        "saved #{} {} (the login that was there) back to the pool",
                        i + 1,
                        previous.masked_email()
                    ),
                    _ => {}
                }
            }
            println!(
                "{} is now the login of {} (run `codex login status` there to check)",
                done.account.masked_email(),
                home.dir().display()
            );
        }
        Command::Add {
            no_browser,
            issuer,
            listen,
            timeout_secs,
        } => {
            let options = examples::account_add::AddOptions::for_pool(pool.dir())
                .no_browser(no_browser)
                .issuer(issuer)
                .listen(listen)
                .timeout(std::time::Duration::from_secs(timeout_secs));
            println!("{}", examples::account_add::add_account_blocking(&options)?);
        }
        Command::Remove { n } => {
            let i = index(n)?;
            let removed = pool.try_update(|p| {
                let len = p.accounts.len();
                p.remove(i).ok_or_else(|| StorageError::Invalid {
                    what: "account number",
                    detail: if len == 0 {
                        "the pool has no accounts".into()
                    } else {
                        format!("there is no account #{n} (the pool has {len})")
                    },
                })
            })?;
            println!("removed #{n} {}", removed.masked_email());
        }
    }
    Ok(())
}

fn print_table(pool: &Pool) {
    if pool.accounts.is_empty() {
        println!("no accounts yet; add one with `accounts import --codex-home DIR`");
        return;
    }
    let active = pool.active_index();
    println!(
        "   #  {:<28} {:<10} {:<8} account id",
        "email", "plan", "enabled"
    );
    for (i, a) in pool.accounts.iter().enumerate() {
        println!(
            "{} {:>2}  {:<28} {:<10} {:<8} {}",
            if Some(i) == active { "*" } else { " " },
            i + 1,
            a.masked_email(),
            a.plan.as_deref().unwrap_or("-"),
            if a.enabled { "yes" } else { "no" },
            a.account_id.as_deref().unwrap_or("-")
        );
    }
}

fn list_json(pool: &Pool) -> String {
    let active = pool.active_index();
    let accounts: Vec<serde_json::Value> = pool
        .accounts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            serde_json::json!({
                "number": i + 1,
                "active": Some(i) == active,
                "email": a.masked_email(),
                "account_id": a.account_id,
                "plan": a.plan,
                "enabled": a.enabled,
                "added_at": a.added_at,
                "last_used_at": a.last_used_at,
                "cooldowns": a.cooldowns,
            })
        })
        .collect();
    let doc = serde_json::json!({ "revision": pool.revision, "accounts": accounts });
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into())
}
