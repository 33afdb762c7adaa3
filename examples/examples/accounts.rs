//! A small account switcher: keep many ChatGPT logins in a pool and hand one to `codex`.
//!
//! ```text
//! cargo run -p examples --example accounts -- import --codex-home ~/.codex
//! cargo run -p examples --example accounts -- list            # masked emails
//! cargo run -p examples --example accounts -- list --json
//! cargo run -p examples --example accounts -- use 2 --codex-home ~/.codex
//! cargo run -p examples --example accounts -- remove 2
//! cargo run -p examples --example accounts -- disable 2     # kept, never picked
//! cargo run -p examples --example accounts -- enable 2
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
//! A login lives in one Codex home at a time: a refresh token works once, so two homes
//! whose CLIs refresh the same login would spend each other's token. `use N` (and
//! `import`) refuse a login another Codex home the pool knows still holds, and say which
//! home; run `codex logout` there (or `use` another account there) first. The pool
//! remembers the homes it imported from or handed logins to, and every refresh of a login
//! (by a `rotation-proxy`, say) goes through the locks of the home holding it and gives that
//! home the new tokens, so the CLI there and the proxies never spend a token twice.
//!
//! The pool lives in `--pool-dir`, else `$CODEX_POOL_DIR`, else `$CODEX_HOME/accounts`
//! (`~/.codex/accounts`). Every change is a locked, atomic read-modify-write, so running
//! several of these at once (or beside `codex`) never loses an account.
//!
//! A command either completes and exits 0, or changes nothing and exits 1 (a `use` whose
//! login write failed puts the pool back and says "rolled back, nothing changed"). `import`
//! with several `--codex-home` imports all of them or none. The one exception is a failure
//! whose undo failed too: it is printed as "partially applied" with what is on disk and
//! what to do, and exits 3 (status 1 always means there is nothing to clean up, 0 that the
//! command completed). `use` holds the Codex home's locks and then the
//! pool lock for its whole run, so a concurrent `remove` waits for it (or it for `remove`,
//! and then `use` sees the pool as `remove` left it).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use auth_core::terminal::escape_control;
use auth_storage::pool::{PoolDocument, Upsert};
use auth_storage::{CodexHome, CredentialStore, FailureEffect, PoolStore, StorageError, StoreMode};
use clap::{Parser, Subcommand};

/// `println!` that never panics: once a change is made, a closed or broken stdout (`>&-`,
/// `| head -0`) must not turn its success into a crash with a non-zero status.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        // ok: the output is a courtesy; the exit status carries the result.
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

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
        /// The Codex home to read (default: $CODEX_HOME, else ~/.codex). Repeat to import
        /// several homes at once: all of them, or none when one cannot be imported.
        #[arg(long, value_name = "DIR")]
        codex_home: Vec<PathBuf>,
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
    /// Keep account N in the pool but stop every proxy from using it (running proxies
    /// follow within a second), until `enable N`.
    Disable {
        /// Account number from `list`.
        n: usize,
    },
    /// Let proxies use account N again (after `disable N`).
    Enable {
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
        Err(err) => match err.downcast_ref::<StorageError>().map(StorageError::effect) {
            // Something did change and could not be undone: say what, with its own status
            // (3), so that 1 keeps meaning "nothing changed" and 0 "done".
            Some(FailureEffect::PartiallyApplied) => {
                use std::io::Write as _;
                // ok: as for `say!`, a closed stderr must not turn this into a crash.
                let _ = writeln!(
                    std::io::stderr(),
                    "error (partially applied): {}",
                    escape_control(&err.to_string())
                );
                ExitCode::from(3)
            }
            _ => {
                // Messages can carry issuer text, claim values and file names: one line, escaped.
                eprintln!("error: {}", escape_control(&err.to_string()));
                ExitCode::FAILURE
            }
        },
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
        Command::Import { codex_home: dirs } => {
            let homes = if dirs.is_empty() {
                vec![codex_home(None)?]
            } else {
                dirs.into_iter()
                    .map(|d| codex_home(Some(d)))
                    .collect::<Result<Vec<_>, _>>()?
            };
            let stores = homes
                .iter()
                .map(credential_store)
                .collect::<Result<Vec<_>, _>>()?;
            let refs: Vec<&dyn CredentialStore> = stores.iter().map(AsRef::as_ref).collect();
            let done = pool.import_all(&refs, now())?;
            for ((outcome, account), home) in done.iter().zip(&homes) {
                let verb = match outcome {
                    Upsert::Added(_) => "added",
                    Upsert::Updated(_) => "updated",
                    _ => "stored",
                };
                let n = match outcome {
                    Upsert::Added(i) | Upsert::Updated(i) => i + 1,
                    _ => 0,
                };
                say!(
                    "{verb} #{n} {} ({}) from {}",
                    account.masked_email(),
                    escape_control(account.plan.as_deref().unwrap_or("unknown plan")),
                    escape_control(&home.dir().display().to_string())
                );
            }
        }
        Command::List { json } => {
            let loaded = pool.load()?;
            if let Some(recovery) = &loaded.recovery {
                eprintln!(
                    "note: {} was unusable ({:?}); showing {}",
                    escape_control(&pool.file().display().to_string()),
                    recovery.reason,
                    recovery
                        .backup
                        .as_ref()
                        .map(|b| format!("backup {}", escape_control(&b.display().to_string())))
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
                && previous.id != done.account.id
            {
                match outcome {
                    Upsert::Added(i) => say!(
                        "kept the login that was there as #{} {}",
                        i + 1,
                        previous.masked_email()
                    ),
                    Upsert::Updated(i) => say!(
                        "saved #{} {} (the login that was there) back to the pool",
                        i + 1,
                        previous.masked_email()
                    ),
                    _ => {}
                }
            }
            say!(
                "{} is now the login of {} (run `codex login status` there to check)",
                done.account.masked_email(),
                escape_control(&home.dir().display().to_string())
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
            say!("{}", examples::account_add::add_account_blocking(&options)?);
        }
        Command::Disable { n } => set_enabled(&pool, n, false)?,
        Command::Enable { n } => set_enabled(&pool, n, true)?,
        Command::Remove { n } => {
            let i = index(n)?;
            // A number past the end (or a pool that does not exist yet) is refused before the
            // pool directory or its lock file is created; checked again under the lock.
            let len = pool.load()?.pool.accounts.len();
            if i >= len {
                return Err(Box::new(no_such_account(n, len)));
            }
            let removed = pool.try_update(|p| {
                let len = p.accounts.len();
                let was_active = p.active_index() == Some(i);
                p.remove(i)
                    .map(|a| (a, was_active))
                    .ok_or_else(|| no_such_account(n, len))
            })?;
            let (removed, was_active) = removed;
            say!("removed #{n} {}", removed.masked_email());
            if was_active {
                say!(
                    "it was the active account: a Codex home it was handed to keeps that login \
                     until `use` picks another"
                );
            }
        }
    }
    Ok(())
}

/// `disable N` / `enable N`: one locked pool update; a number past the end is refused
/// before the pool directory or its lock file is created.
fn set_enabled(pool: &PoolStore, n: usize, enabled: bool) -> Result<(), StorageError> {
    let i = index(n)?;
    let len = pool.load()?.pool.accounts.len();
    if i >= len {
        return Err(no_such_account(n, len));
    }
    let (was, account) = pool.try_update(|p| {
        let len = p.accounts.len();
        let account = p
            .accounts
            .get_mut(i)
            .ok_or_else(|| no_such_account(n, len))?;
        let was = account.enabled;
        account.enabled = enabled;
        Ok::<_, StorageError>((was, account.clone()))
    })?;
    if enabled {
        // An explicit enable also lifts a disable the rotation policy decided itself (too
        // many 401s in a row), for every proxy: the shared state's later enable wins.
        if let Ok(id) = rotation_policy::AccountId::new(account.id.clone()) {
            // Stamped after any disable the shared state holds (even one stamped a little
            // ahead by a process whose clock runs fast), so this enable wins the merge.
            let wall = rotation_policy::Timestamp::from(SystemTime::now());
            let after = pool
                .load_policy_state()
                .ok()
                .and_then(|loaded| loaded.state.accounts.get(&id).cloned())
                .and_then(|state| state.disabled)
                .map(|d| d.since.saturating_add(std::time::Duration::from_millis(1)));
            let mut entry = rotation_policy::AccountState::default();
            entry.enabled_since = Some(after.map_or(wall, |after| after.max(wall)));
            let mut state = rotation_policy::PolicyState::default();
            state.accounts.insert(id, entry);
            // The enable above took effect; this part only lifts a disable the proxies'
            // policy decided itself (too many 401s). Its failure is said, not fatal: exit 1
            // must keep meaning "nothing changed".
            if let Err(err) = pool.save_policy_state(&state) {
                say!(
                    "note: could not write the shared policy state ({}); a proxy that \
                     disabled #{n} after repeated 401s keeps it out: run `accounts enable {n}` again once the state file is free",
                    escape_control(&err.to_string())
                );
            }
        }
    }
    let verb = if enabled { "enabled" } else { "disabled" };
    if was == enabled {
        say!("#{n} {} was already {verb}", account.masked_email());
    } else {
        say!("{verb} #{n} {} ({})", account.masked_email(), account.id);
    }
    if enabled && let Some(mark) = &account.unusable {
        say!(
            "note: #{n} is still unusable ({mark}); sign in to it again (`accounts add`, or \
             `codex login` and `accounts import`)"
        );
    }
    Ok(())
}

fn no_such_account(n: usize, len: usize) -> StorageError {
    StorageError::Invalid {
        what: "account number",
        detail: if len == 0 {
            "the pool has no accounts".into()
        } else {
            format!("there is no account #{n} (the pool has {len})")
        },
    }
}

/// What `list` shows in its status column.
fn status_of(a: &auth_storage::pool::Account) -> String {
    match (&a.unusable, a.enabled) {
        (Some(mark), _) => mark.to_string(),
        (None, false) => "disabled".to_owned(),
        (None, true) => "ok".to_owned(),
    }
}

fn print_table(pool: &PoolDocument) {
    if pool.accounts.is_empty() {
        println!("no accounts yet; add one with `accounts import --codex-home DIR`");
        return;
    }
    let active = pool.active_index();
    println!(
        "   #  {:<21} {:<28} {:<10} {:<16} account id",
        "id", "email", "plan", "status"
    );
    for (i, a) in pool.accounts.iter().enumerate() {
        println!(
            "{} {:>2}  {:<21} {:<28} {:<10} {:<16} {}",
            if Some(i) == active { "*" } else { " " },
            i + 1,
            escape_control(&a.id),
            a.masked_email(),
            escape_control(a.plan.as_deref().unwrap_or("-")).to_string(),
            status_of(a),
            escape_control(a.account_id.as_deref().unwrap_or("-"))
        );
    }
}

fn list_json(pool: &PoolDocument) -> String {
    let active = pool.active_index();
    let accounts: Vec<serde_json::Value> = pool
        .accounts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            serde_json::json!({
                "number": i + 1,
                "id": a.id,
                "active": Some(i) == active,
                "email": a.masked_email(),
                "account_id": a.account_id,
                "plan": a.plan,
                "enabled": a.enabled,
                "unusable": a.unusable,
                "added_at": a.added_at,
                "last_used_at": a.last_used_at,
                "cooldowns": a.cooldowns,
            })
        })
        .collect();
    let doc = serde_json::json!({ "revision": pool.revision, "accounts": accounts });
    // Raw values for a JSON reader, with DEL, C1 and bidi characters as \u escapes so the
    // text is also safe on a terminal.
    auth_core::terminal::json_for_terminal(
        &serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into()),
    )
}
