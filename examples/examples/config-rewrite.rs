//! Route the Codex CLI through a provider of your choice, and put `config.toml` back after.
//!
//! ```text
//! cargo run -p examples --example config-rewrite -- apply   --config ~/.codex/config.toml \
//!     --provider rotation-proxy --base-url http://127.0.0.1:8080/v1 [--env-key VAR] \
//!     [--profile NAME [--legacy-profile-table]] [--revert-file PATH]
//! cargo run -p examples --example config-rewrite -- restore --config ~/.codex/config.toml \
//!     [--profile NAME] [--revert-file PATH]
//! cargo run -p examples --example config-rewrite -- status  --config ~/.codex/config.toml
//! ```
//!
//! `apply` refuses to stack a different rewrite on top of a pending one (running the same
//! `apply` again changes nothing and succeeds); `restore` undoes exactly what
//! `apply` did (byte for byte if nothing else changed, otherwise only our own keys that still
//! hold our values). `--profile NAME` edits Codex's profile layer `NAME.config.toml` beside
//! the config, which is what `codex --profile NAME` reads since Codex CLI 0.169 (and warns
//! when the config still has a legacy `[profiles.NAME]` table or `profile = …` selector, which
//! make Codex 0.169 refuse `--profile NAME`); add `--legacy-profile-table` to edit a
//! `[profiles.NAME]` table inside the config instead (CLIs before 0.169). `restore --config C
//! --revert-file R` also undoes a `--profile` rewrite recorded in R (the record names the
//! layer file it changed); a record of any other file is refused. Exit status: 0 ok,
//! 1 refused or failed (nothing changed: a failure after the record or the config was
//! written undoes that write and says "rolled back"), 2 bad arguments. A failure whose undo
//! failed too is printed as "partially applied" saying what is on disk and what to do, with
//! status 3, since something did change.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use config_rewrite::{ProviderSpec, RestoreOutcome, RevertFile, Rewrite, Target};

/// `println!` that never panics: once a file is changed, a closed or broken stdout must not
/// turn its success into a crash with a non-zero status. Each line is one line: paths, keys
/// and values from the file are shown with control and bidi characters escaped.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let line = format!($($arg)*);
        // ok: the output is a courtesy; the exit status carries the result.
        let _ = writeln!(std::io::stdout(), "{}", auth_core::terminal::escape_control(&line));
    }};
}

/// `eprintln!` that never panics, for notes printed after a change was made; escaped like
/// [`say!`].
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let line = format!($($arg)*);
        // ok: as for `say!`.
        let _ = writeln!(std::io::stderr(), "{}", auth_core::terminal::escape_control(&line));
    }};
}

#[derive(Parser)]
#[command(about = "Reversible edits of the Codex config.toml")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Set `model_provider` and upsert `[model_providers.<id>]`, keeping a revert record.
    Apply(ApplyArgs),
    /// Undo a previous apply using its revert record, then delete the record.
    Restore(Location),
    /// Show the active provider and whether a rewrite is pending.
    Status(Location),
}

#[derive(Args)]
struct Location {
    /// The Codex config file (usually $CODEX_HOME/config.toml).
    #[arg(long)]
    config: PathBuf,
    /// Codex profile to edit: its layer file NAME.config.toml beside --config.
    #[arg(long)]
    profile: Option<String>,
    /// With --profile: edit the legacy `[profiles.NAME]` table inside --config instead.
    #[arg(long, requires = "profile")]
    legacy_profile_table: bool,
    /// Where the revert record lives (default: beside the edited file, `<file>.revert.json`).
    #[arg(long)]
    revert_file: Option<PathBuf>,
}

#[derive(Args)]
struct ApplyArgs {
    #[command(flatten)]
    location: Location,
    /// Provider id (the `<id>` in `[model_providers.<id>]`).
    #[arg(long)]
    provider: String,
    /// The provider's base URL, e.g. http://127.0.0.1:8080/v1.
    #[arg(long)]
    base_url: String,
    /// Display name (default: the id).
    #[arg(long)]
    name: Option<String>,
    /// Environment variable holding the bearer token Codex sends.
    #[arg(long)]
    env_key: Option<String>,
}

/// The file to edit, where its `model_provider` goes, and the revert record.
struct Plan {
    file: PathBuf,
    target: Target,
    revert: RevertFile,
}

impl Location {
    fn plan(&self) -> Result<Plan, Box<dyn std::error::Error>> {
        let (file, target) = match (&self.profile, self.legacy_profile_table) {
            (None, _) => (self.config.clone(), Target::TopLevel),
            (Some(name), true) => (self.config.clone(), Target::profile(name.clone())),
            (Some(name), false) => (
                config_rewrite::profile_config_path(&self.config, name)
                    .map_err(|e| format!("{e} (given by --profile)"))?,
                Target::TopLevel,
            ),
        };
        let revert = match &self.revert_file {
            Some(path) => RevertFile::at(path),
            None => RevertFile::beside(&file),
        };
        Ok(Plan {
            file,
            target,
            revert,
        })
    }
}

fn apply(args: &ApplyArgs) -> Result<(), Box<dyn std::error::Error>> {
    let plan = args.location.plan()?;
    let mut spec = ProviderSpec::new(&args.provider, &args.base_url);
    if let Some(name) = &args.name {
        spec = spec.name(name);
    }
    if let Some(var) = &args.env_key {
        spec = spec.env_key(var);
    }
    let rewrite = Rewrite::route_to(spec, plan.target.clone());
    let record = match plan.revert.apply(&plan.file, &rewrite) {
        Ok(record) => record,
        Err(pending @ config_rewrite::Error::PendingRevert { .. }) => {
            // Running the same `apply` again is fine (idempotent): the pending rewrite already
            // routes the file exactly so. Anything else must be restored first.
            if already_applied(&plan.file, &rewrite) {
                say!(
                    "{}: already routed to `{}` by the pending rewrite; nothing changed",
                    plan.file.display(),
                    args.provider
                );
                say!("revert record: {}", plan.revert.path().display());
                return Ok(());
            }
            return Err(pending.into());
        }
        Err(e) => return Err(name_the_flag(e)),
    };
    if record.is_noop() {
        say!(
            "{}: already routed to `{}`; nothing changed",
            plan.file.display(),
            args.provider
        );
    } else {
        say!(
            "{}: routed to `{}` ({}{})",
            plan.file.display(),
            args.provider,
            if record.created_file() {
                "created; "
            } else {
                ""
            },
            record.edited_keys().join(", ")
        );
    }
    say!("revert record: {}", plan.revert.path().display());
    warn_about_legacy_profiles(&args.location);
    Ok(())
}

/// The library names the field it refused (`name`, `env_key`, …); say which flag gave it.
/// The message itself never repeats the value.
fn name_the_flag(e: config_rewrite::Error) -> Box<dyn std::error::Error> {
    let flag = match &e {
        config_rewrite::Error::Config {
            source: config_rewrite::EditError::InvalidInput { field, .. },
            ..
        } => match field.as_str() {
            "provider id" => Some("--provider"),
            "base_url" => Some("--base-url"),
            "name" => Some("--name"),
            "env_key" => Some("--env-key"),
            "profile name" => Some("--profile"),
            _ => None,
        },
        _ => None,
    };
    match flag {
        Some(flag) => format!("{e} (given by {flag}); nothing was changed").into(),
        None => e.into(),
    }
}

/// Whether applying `rewrite` to the file as it is now would change nothing.
fn already_applied(file: &Path, rewrite: &Rewrite) -> bool {
    let Ok(text) = config_rewrite::read_config(file) else {
        return false;
    };
    config_rewrite::apply_to_str(file, text.as_deref(), rewrite).is_ok_and(|a| !a.changed())
}

/// Codex CLI 0.169 refuses `--profile NAME` while `config.toml` still has a legacy
/// `[profiles.NAME]` table or `profile = "…"` selector, and ignores such tables otherwise:
/// say so, since the rewrite alone will not make `codex --profile NAME` work then.
fn warn_about_legacy_profiles(location: &Location) {
    let Some(name) = &location.profile else {
        return;
    };
    if location.legacy_profile_table {
        note!(
            "note: `[profiles.{name}]` tables are read by Codex CLIs before 0.169 only; Codex 0.169 reads `--profile {name}` from {} instead (drop --legacy-profile-table)",
            profile_file_name(&location.config, name)
        );
        return;
    }
    let Ok(Some(text)) = config_rewrite::read_config(&location.config) else {
        return;
    };
    match config_rewrite::legacy_profile_items(&text, name) {
        Ok(items) if !items.is_empty() => note!(
            "warning: {} still has legacy profile settings ({}); Codex 0.169 refuses `--profile {name}` until they are moved into {} and removed",
            location.config.display(),
            items.join(", "),
            profile_file_name(&location.config, name)
        ),
        Ok(_) => {}
        Err(e) => note!(
            "warning: could not check {} for legacy profiles: {e}",
            location.config.display()
        ),
    }
}

fn profile_file_name(config: &Path, name: &str) -> String {
    config_rewrite::profile_config_path(config, name)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| format!("{name}.config.toml"))
}

fn restore(location: &Location) -> Result<(), Box<dyn std::error::Error>> {
    let plan = location.plan()?;
    let Some(record) = plan.revert.load()? else {
        return Err(format!(
            "no revert record at {}; nothing to restore",
            plan.revert.path().display()
        )
        .into());
    };
    // `restore --config C --revert-file R` without `--profile` also undoes a profile rewrite
    // whose record R names C's layer file: the record says which file it changed.
    if !same_file(record.config(), &plan.file) && !is_profile_layer_of(record.config(), location) {
        return Err(format!(
            "the revert record {} belongs to {}, not {}",
            plan.revert.path().display(),
            record.config().display(),
            plan.file.display()
        )
        .into());
    }
    let report = plan
        .revert
        .restore()?
        .ok_or("the revert record vanished meanwhile")?;
    let what = match &report.outcome {
        RestoreOutcome::Exact => "restored byte for byte".to_owned(),
        RestoreOutcome::AlreadyRestored => "was already in its original state".to_owned(),
        RestoreOutcome::Recreated => "was missing; recreated from the record".to_owned(),
        RestoreOutcome::Merged { undone, kept } => format!(
            "edited since; undid {} key(s), kept your changes to: {}",
            undone.len(),
            if kept.is_empty() {
                "none".to_owned()
            } else {
                kept.join(", ")
            }
        ),
        other => format!("{other:?}"),
    };
    say!("{}: {what}", report.config.display());
    Ok(())
}

fn status(location: &Location) -> Result<(), Box<dyn std::error::Error>> {
    let plan = location.plan()?;
    let provider = match config_rewrite::read_config(&plan.file)? {
        Some(text) => config_rewrite::read_string(&text, &plan.target, "model_provider")
            .map_err(|e| format!("{}: {e}", plan.file.display()))?,
        None => None,
    };
    say!(
        "{}: model_provider = {}",
        plan.file.display(),
        provider
            .as_deref()
            .unwrap_or("(unset: Codex uses its default)")
    );
    match plan.revert.load()? {
        Some(record) => say!(
            "pending rewrite: {} (keys: {})",
            plan.revert.path().display(),
            record.edited_keys().join(", ")
        ),
        None => say!("no pending rewrite"),
    }
    Ok(())
}

/// Whether `file` is the `NAME.config.toml` layer beside `location.config` (and no
/// `--profile` was given to say otherwise).
fn is_profile_layer_of(file: &Path, location: &Location) -> bool {
    if location.profile.is_some() {
        return false;
    }
    let Some(name) = file
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".config.toml"))
    else {
        return false;
    };
    config_rewrite::profile_config_path(&location.config, name)
        .is_ok_and(|layer| same_file(file, &layer))
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b
        || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
        || matches!((absolute(a), absolute(b)), (Some(x), Some(y)) if x == y)
}

fn absolute(p: &Path) -> Option<PathBuf> {
    std::path::absolute(p).ok()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Apply(args) => apply(args),
        Command::Restore(location) => restore(location),
        Command::Status(location) => status(location),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Exit status 1 promises that nothing changed; a failure that could not be
            // undone did change something, so it gets its own status (3) and says what.
            let partial = matches!(
                e.downcast_ref::<config_rewrite::Error>(),
                Some(config_rewrite::Error::PartiallyApplied { .. })
            );
            let mut message = format!(
                "{}: {}",
                if partial {
                    "error (partially applied)"
                } else {
                    "error"
                },
                auth_core::terminal::escape_control(&e.to_string())
            );
            let mut source = e.source();
            while let Some(cause) = source {
                // Error::Config already prints its source in its message.
                let shown = auth_core::terminal::escape_control(&cause.to_string()).to_string();
                if !message.contains(&shown) {
                    message.push_str(&format!("\n  caused by: {shown}"));
                }
                source = cause.source();
            }
            use std::io::Write as _;
            // ok: a closed stderr must not turn the result into a crash.
            let _ = writeln!(std::io::stderr(), "{message}");
            if partial {
                ExitCode::from(3)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
