//! Reversible, format-preserving edits of the Codex CLI's `config.toml`.
//!
//! A tool that routes the Codex CLI through itself (a local proxy, an account rotator) has to
//! set the top-level `model_provider` and add a `[model_providers.<id>]` table while it runs,
//! then put the user's file back exactly as it was. This crate does that on top of
//! [`toml_edit`], so comments, blank lines, key order, quoting, CRLF line endings, a
//! byte-order mark and a missing final newline all survive, and a key meant for the top
//! level always lands before the first `[table]` or `[[array-of-tables]]` header (the Codex
//! CLI silently ignores a `model_provider` that ended up inside another table).
//!
//! - [`apply`] edits the file atomically and returns a serializable [`RevertRecord`].
//! - [`restore`] puts the file back byte for byte when nobody touched it since; when the user
//!   edited it meanwhile it undoes only our own keys that still hold our values.
//! - [`RevertFile`] keeps that record beside the configuration so the next start of a
//!   crashed program can detect ([`RevertFile::is_pending`]) and undo ([`RevertFile::restore`])
//!   a stale rewrite.
//! - [`apply_to_str`], [`restore_str`] and [`read_string`] are the pure core, for callers who
//!   hold the text themselves.
//!
//! Invalid TOML is refused with its line and column, and the file is left untouched. Writes
//! are atomic (the workspace's `atomic-file` crate), keep the file's permissions, and run
//! under the edit lock of the configuration's directory ([`EDIT_LOCK_FILE`], the same on
//! Unix and Windows) so two of our processes never interleave. On Windows a file another
//! program holds open is retried for a moment, then refused with [`Error::StillInUse`];
//! nothing changes.
//! All functions are blocking; from async code call them through `spawn_blocking`.
//!
//! # Profiles
//!
//! The issue's `[profiles.<name>]` table is supported: [`Target::Profile`] puts
//! `model_provider` into that table (the provider table stays top-level, where Codex looks
//! for providers). But Codex CLI 0.169 changed profiles (checked against the real binary by
//! `tests/codex_cli.rs`):
//!
//! - `codex --profile NAME …` layers `$CODEX_HOME/NAME.config.toml` over `config.toml`
//!   ([`profile_config_path`]); a missing layer file is fine.
//! - `--profile NAME` fails ("failed to load configuration") while `config.toml` still has a
//!   legacy `[profiles.NAME]` table or a top-level `profile = "NAME"` selector
//!   ([`legacy_profile_items`] finds them).
//! - A top-level `profile = "…"` selector is refused even without `--profile`.
//! - Without `--profile`, `[profiles.*]` tables are accepted but not used: a
//!   `model_provider` inside one has no effect.
//!
//! So to route one profile of Codex 0.169, apply a [`Target::TopLevel`] rewrite to the layer
//! file; [`Target::Profile`] is for older CLIs that still read `[profiles.NAME]`.
//!
//! # Example: a proxy's lifetime
//!
//! ```
//! use config_rewrite::{ProviderSpec, RevertFile, Rewrite, Target};
//!
//! let codex_home = tempfile::tempdir()?;
//! let config = codex_home.path().join("config.toml");
//! std::fs::write(&config, "# mine\nmodel = \"o3\"\n\n[[skills.config]]\npath = \"a\"\nenabled = true\n")?;
//! let before = std::fs::read(&config)?;
//!
//! let revert = RevertFile::beside(&config);
//! revert.restore()?; // undo a stale rewrite from a crashed run, if any
//! let rewrite = Rewrite::route_to(
//!     ProviderSpec::new("rotation-proxy", "http://127.0.0.1:8080/v1")
//!         .name("Rotation proxy")
//!         .env_key("ROTATION_PROXY_TOKEN"),
//!     Target::TopLevel,
//! );
//! revert.apply(&config, &rewrite)?;
//!
//! let text = std::fs::read_to_string(&config)?;
//! assert_eq!(
//!     config_rewrite::read_string(&text, &Target::TopLevel, "model_provider")?.as_deref(),
//!     Some("rotation-proxy")
//! );
//!
//! revert.restore()?; // on exit
//! assert_eq!(std::fs::read(&config)?, before);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod edit;
mod error;
mod file;
mod input;
mod provider;
mod record;
mod regular;

pub use edit::{
    Applied, RestoreOutcome, Restored, apply_to_str, legacy_profile_items, read_string, restore_str,
};
pub use error::{EditError, Error};
pub use file::{
    EDIT_LOCK_FILE, RestoreReport, RevertFile, apply, profile_config_path, read_config, restore,
};
pub use provider::{ProviderSpec, RESERVED_PROVIDER_IDS, Rewrite, Target, WireApi};
pub use record::RevertRecord;
pub use regular::{CONFIG_MAX_BYTES, FileKind, RECORD_MAX_BYTES};
