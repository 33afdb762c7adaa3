//! Runs the built `config-rewrite` example program the way a user does: `apply`, `status`,
//! `restore` on a real file (comments, arrays of tables, CRLF) back to the identical bytes,
//! `--profile` (Codex 0.169's layer file and the legacy table), and bad input, which must
//! fail with a clear message and leave every file byte for byte as it was.
//!
//! Needs the example binary (`target/<profile>/examples/config-rewrite`): plain
//! `cargo test --workspace --all-features` builds it; with `--test config_rewrite_cli` alone
//! build it first (`cargo build --workspace --all-features --examples`) or the tests print
//! `SKIP`. Where the real Codex CLI is found (`CODEX_BIN`), it checks that Codex loads the
//! rewritten files too.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::Run;
use config_rewrite::Target;

/// A config a user might have: comments everywhere, an MCP server table, arrays of tables,
/// a legacy-free profile setup, CRLF line endings and no trailing newline after the last
/// comment.
const ORIGINAL: &str = "# my Codex config\r\n\
model = \"gpt-5\" # inline comment\r\n\
approval_policy = \"on-request\"\r\n\
\r\n\
# skills come first on purpose: a naive rewriter appends model_provider after this header\r\n\
[[skills.config]]\r\n\
path = \"/home/me/skills/a\"\r\n\
enabled = true\r\n\
\r\n\
[[skills.config]]\r\n\
path = \"/home/me/skills/b\"\r\n\
enabled = false\r\n\
\r\n\
[mcp_servers.docs]\r\n\
command = \"npx\"\r\n\
args = [\"-y\", \"docs-server\"] # keep me\r\n\
\r\n\
# trailing comment";

fn config_rewrite(test: &str) -> Option<PathBuf> {
    common::example_or_skip("config-rewrite", test)
}

/// Runs `bin args…` in `dir`, bounded in time (the child is killed after `limit`).
fn run_in(bin: &Path, dir: &Path, args: &[&str], env: &[(&str, &Path)], limit: Duration) -> Run {
    let mut command = Command::new(bin);
    command
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL");
    for (k, v) in env {
        command.env(k, v);
    }
    common::run_bounded(command, limit)
}

fn cli(bin: &Path, dir: &Path, args: &[&str]) -> Run {
    run_in(bin, dir, args, &[], Duration::from_secs(30))
}

fn ok(run: &Run, what: &str) {
    assert_eq!(
        run.code,
        Some(0),
        "{what} failed:\nstdout: {}\nstderr: {}",
        run.stdout,
        run.stderr
    );
}

/// Every file in `dir` but the edit lock, with its bytes, sorted by name.
fn snapshot_dir(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        // The empty edit lock an edit leaves for the next one (tested in config-rewrite).
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name() != config_rewrite::EDIT_LOCK_FILE)
        })
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// Whether the real Codex CLI loads `home`'s configuration (optionally with `--profile`)
/// without a configuration error; `None` when no CLI is installed.
fn codex_loads(home: &Path, profile: Option<&str>) -> Option<(bool, String)> {
    let bin = common::codex_bin_or_skip("codex interop step")?;
    // `codex mcp list` reads the whole configuration (profiles included) and needs no network.
    let mut args = Vec::new();
    if let Some(p) = profile {
        args.extend(["--profile", p]);
    }
    args.extend(["mcp", "list"]);
    let run = run_in(
        &bin,
        home,
        &args,
        &[("CODEX_HOME", home)],
        Duration::from_secs(60),
    );
    let output = format!("{}{}", run.stdout, run.stderr);
    Some((
        run.code == Some(0) && !output.contains("configuration"),
        output,
    ))
}

#[test]
fn apply_status_restore_gives_back_the_identical_bytes() {
    let test = "apply_status_restore_gives_back_the_identical_bytes";
    let Some(bin) = config_rewrite(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let config = home.join("config.toml");
    std::fs::write(&config, ORIGINAL).unwrap();
    let config_arg = config.to_str().unwrap();
    let revert = home.join("state").join("rewrite.json");
    std::fs::create_dir(home.join("state")).unwrap();
    let revert_arg = revert.to_str().unwrap();

    // apply
    let applied = cli(
        &bin,
        home,
        &[
            "apply",
            "--config",
            config_arg,
            "--provider",
            "rotation proxy", // an id that needs quoting
            "--base-url",
            "http://127.0.0.1:8080/v1",
            "--env-key",
            "ROTATION_PROXY_TOKEN",
            "--revert-file",
            revert_arg,
        ],
    );
    ok(&applied, "apply");
    assert!(
        applied.stdout.contains("routed to `rotation proxy`"),
        "{}",
        applied.stdout
    );
    assert!(applied.stdout.contains(revert_arg), "{}", applied.stdout);
    assert!(revert.is_file(), "revert record written where asked");
    assert!(
        !home.join("config.toml.revert.json").exists(),
        "no record at the default place when --revert-file is given"
    );
    let text = std::fs::read_to_string(&config).unwrap();
    assert_eq!(
        config_rewrite::read_string(&text, &Target::TopLevel, "model_provider")
            .unwrap()
            .as_deref(),
        Some("rotation proxy"),
        "model_provider must be a real top-level key:\n{text}"
    );
    assert!(
        text.contains("[model_providers.\"rotation proxy\"]\r\n"),
        "{text}"
    );
    assert!(
        text.contains("env_key = \"ROTATION_PROXY_TOKEN\"\r\n"),
        "{text}"
    );
    // Everything the user wrote is still there, CRLF included.
    for line in ORIGINAL.split("\r\n") {
        assert!(text.contains(line), "lost {line:?}:\n{text}");
    }
    assert!(
        !text.replace("\r\n", "").contains('\n'),
        "mixed line endings"
    );
    if let Some((loads, output)) = codex_loads(home, None) {
        assert!(loads, "Codex rejected the rewritten config:\n{output}");
    }

    // status
    let status = cli(
        &bin,
        home,
        &[
            "status",
            "--config",
            config_arg,
            "--revert-file",
            revert_arg,
        ],
    );
    ok(&status, "status");
    assert!(
        status.stdout.contains("model_provider = rotation proxy"),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("pending rewrite:") && status.stdout.contains("model_provider"),
        "{}",
        status.stdout
    );

    // The same apply again is idempotent; a different one on top of it is refused. Neither
    // changes a byte.
    let rewritten = std::fs::read(&config).unwrap();
    let record = std::fs::read(&revert).unwrap();
    let same = cli(
        &bin,
        home,
        &[
            "apply",
            "--config",
            config_arg,
            "--provider",
            "rotation proxy",
            "--base-url",
            "http://127.0.0.1:8080/v1",
            "--env-key",
            "ROTATION_PROXY_TOKEN",
            "--revert-file",
            revert_arg,
        ],
    );
    ok(&same, "the same apply again");
    assert!(
        same.stdout.contains("already routed") && same.stdout.contains("nothing changed"),
        "{}",
        same.stdout
    );
    assert_eq!(std::fs::read(&config).unwrap(), rewritten);
    assert_eq!(std::fs::read(&revert).unwrap(), record);
    let again = cli(
        &bin,
        home,
        &[
            "apply",
            "--config",
            config_arg,
            "--provider",
            "other",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--revert-file",
            revert_arg,
        ],
    );
    assert_eq!(again.code, Some(1), "{}", again.stderr);
    assert!(again.stderr.contains("still pending"), "{}", again.stderr);
    assert_eq!(std::fs::read(&config).unwrap(), rewritten);
    assert_eq!(std::fs::read(&revert).unwrap(), record);

    // restore
    let restored = cli(
        &bin,
        home,
        &[
            "restore",
            "--config",
            config_arg,
            "--revert-file",
            revert_arg,
        ],
    );
    ok(&restored, "restore");
    assert!(
        restored.stdout.contains("restored byte for byte"),
        "{}",
        restored.stdout
    );
    assert_eq!(std::fs::read(&config).unwrap(), ORIGINAL.as_bytes());
    assert!(!revert.exists(), "the record is deleted after restore");

    let status = cli(
        &bin,
        home,
        &[
            "status",
            "--config",
            config_arg,
            "--revert-file",
            revert_arg,
        ],
    );
    ok(&status, "status after restore");
    assert!(
        status.stdout.contains("model_provider = (unset")
            && status.stdout.contains("no pending rewrite"),
        "{}",
        status.stdout
    );
}

#[test]
fn missing_config_is_created_and_removed_again() {
    let Some(bin) = config_rewrite("missing_config_is_created_and_removed_again") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let config_arg = config.to_str().unwrap();
    let applied = cli(
        &bin,
        dir.path(),
        &[
            "apply",
            "--config",
            config_arg,
            "--provider",
            "proxy",
            "--base-url",
            "http://127.0.0.1:8080/v1",
        ],
    );
    ok(&applied, "apply");
    assert!(applied.stdout.contains("created"), "{}", applied.stdout);
    assert!(config.is_file());
    let restored = cli(&bin, dir.path(), &["restore", "--config", config_arg]);
    ok(&restored, "restore");
    assert!(
        snapshot_dir(dir.path()).is_empty(),
        "config and record removed"
    );
}

#[test]
fn profile_edits_codex_layer_file_and_legacy_table_on_request() {
    let test = "profile_edits_codex_layer_file_and_legacy_table_on_request";
    let Some(bin) = config_rewrite(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let config = home.join("config.toml");
    std::fs::write(&config, ORIGINAL).unwrap();
    let config_arg = config.to_str().unwrap();
    let layer = home.join("work.config.toml");
    let route = |extra: &[&str]| {
        let mut args = vec![
            "apply",
            "--config",
            config_arg,
            "--provider",
            "proxy",
            "--base-url",
            "http://127.0.0.1:8080/v1",
            "--profile",
            "work",
        ];
        args.extend_from_slice(extra);
        cli(&bin, home, &args)
    };

    // Codex 0.169: `--profile work` reads work.config.toml; config.toml is not touched.
    let applied = route(&[]);
    ok(&applied, "apply --profile");
    assert!(
        applied.stderr.is_empty(),
        "no warning without legacy tables: {}",
        applied.stderr
    );
    assert_eq!(std::fs::read(&config).unwrap(), ORIGINAL.as_bytes());
    let text = std::fs::read_to_string(&layer).unwrap();
    assert_eq!(
        config_rewrite::read_string(&text, &Target::TopLevel, "model_provider")
            .unwrap()
            .as_deref(),
        Some("proxy")
    );
    let status = cli(
        &bin,
        home,
        &["status", "--config", config_arg, "--profile", "work"],
    );
    ok(&status, "status --profile");
    assert!(
        status
            .stdout
            .contains("work.config.toml: model_provider = proxy")
            && status.stdout.contains("pending rewrite"),
        "{}",
        status.stdout
    );
    if let Some((loads, output)) = codex_loads(home, Some("work")) {
        assert!(
            loads,
            "codex --profile work rejected the layer file:\n{output}"
        );
    }
    let restored = cli(
        &bin,
        home,
        &["restore", "--config", config_arg, "--profile", "work"],
    );
    ok(&restored, "restore --profile");
    assert_eq!(
        snapshot_dir(home),
        [("config.toml".to_owned(), ORIGINAL.as_bytes().to_vec())]
    );

    // With an explicit --revert-file, `restore --config C --revert-file R` (no --profile)
    // finds the layer file from the record, as the restore command line has it.
    let record_arg = home.join("work-route.json");
    let record_arg = record_arg.to_str().unwrap();
    ok(
        &route(&["--revert-file", record_arg]),
        "apply --profile --revert-file",
    );
    assert!(layer.is_file());
    let restored = cli(
        &bin,
        home,
        &[
            "restore",
            "--config",
            config_arg,
            "--revert-file",
            record_arg,
        ],
    );
    ok(&restored, "restore --revert-file of a profile rewrite");
    assert!(
        restored.stdout.contains("work.config.toml"),
        "{}",
        restored.stdout
    );
    assert_eq!(
        snapshot_dir(home),
        [("config.toml".to_owned(), ORIGINAL.as_bytes().to_vec())]
    );

    // The issue's `[profiles.<name>]` table, for CLIs before 0.169.
    let applied = route(&["--legacy-profile-table"]);
    ok(&applied, "apply --profile --legacy-profile-table");
    assert!(
        applied.stderr.contains("before 0.169"),
        "{}",
        applied.stderr
    );
    assert!(!layer.exists());
    let text = std::fs::read_to_string(&config).unwrap();
    assert_eq!(
        config_rewrite::read_string(&text, &Target::profile("work"), "model_provider")
            .unwrap()
            .as_deref(),
        Some("proxy"),
        "{text}"
    );
    assert_eq!(
        config_rewrite::read_string(&text, &Target::TopLevel, "model_provider").unwrap(),
        None,
        "the top level stays untouched: {text}"
    );
    // Real Codex 0.169 refuses `--profile work` with such a table (the reason for the layer
    // file); this also proves the interop check above can fail.
    if let Some((loads, output)) = codex_loads(home, Some("work")) {
        assert!(
            !loads,
            "Codex 0.169 accepted a legacy [profiles.work] table:\n{output}"
        );
        assert!(output.contains("legacy"), "{output}");
    }
    let restored = cli(
        &bin,
        home,
        &[
            "restore",
            "--config",
            config_arg,
            "--profile",
            "work",
            "--legacy-profile-table",
        ],
    );
    ok(&restored, "restore --legacy-profile-table");
    assert_eq!(
        snapshot_dir(home),
        [("config.toml".to_owned(), ORIGINAL.as_bytes().to_vec())]
    );

    // A config that still has a legacy table for the profile gets a warning naming it.
    let legacy = format!("{ORIGINAL}\r\n[profiles.work]\r\nmodel = \"o3\"\r\n");
    std::fs::write(&config, &legacy).unwrap();
    let applied = route(&[]);
    ok(&applied, "apply --profile with a legacy table");
    assert!(
        applied.stderr.contains("warning:")
            && applied.stderr.contains("profiles.work")
            && applied.stderr.contains("work.config.toml"),
        "{}",
        applied.stderr
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), legacy);
    ok(
        &cli(
            &bin,
            home,
            &["restore", "--config", config_arg, "--profile", "work"],
        ),
        "restore",
    );
    assert!(!layer.exists());
}

#[test]
fn bad_input_fails_clearly_and_leaves_files_untouched() {
    let test = "bad_input_fails_clearly_and_leaves_files_untouched";
    let Some(bin) = config_rewrite(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let config = home.join("config.toml");
    let config_arg = config.to_str().unwrap();
    let apply = |config: &str, provider: &str, url: &str| {
        cli(
            &bin,
            home,
            &[
                "apply",
                "--config",
                config,
                "--provider",
                provider,
                "--base-url",
                url,
            ],
        )
    };
    let expect_refused =
        |run: &Run, what: &str, mentions: &[&str], before: &[(String, Vec<u8>)]| {
            assert_eq!(run.code, Some(1), "{what}: {}", run.stderr);
            assert!(run.stderr.starts_with("error: "), "{what}: {}", run.stderr);
            for m in mentions {
                assert!(
                    run.stderr.contains(m),
                    "{what}: should mention {m:?}: {}",
                    run.stderr
                );
            }
            assert_eq!(snapshot_dir(home), before, "{what}: files changed");
        };

    // Invalid TOML: line and column, file byte-identical, no revert record.
    let broken = "# fine\r\nmodel = \"o3\"\r\n[[skills.config]]\r\npath = \"a\r\n";
    std::fs::write(&config, broken).unwrap();
    let before = snapshot_dir(home);
    let run = apply(config_arg, "proxy", "http://127.0.0.1:8080/v1");
    expect_refused(
        &run,
        "invalid TOML",
        &["config.toml", "line 4, column"],
        &before,
    );

    // A reserved provider id and unusable URLs, on a valid file.
    std::fs::write(&config, ORIGINAL).unwrap();
    let before = snapshot_dir(home);
    let run = apply(config_arg, "openai", "http://127.0.0.1:8080/v1");
    expect_refused(&run, "reserved id", &["provider id", "built-in"], &before);
    for (url, why) in [
        ("not a url", "not an absolute URL"),
        ("ftp://127.0.0.1/v1", "scheme is `ftp`"),
        ("127.0.0.1:8080/v1", "base_url"),
    ] {
        let run = apply(config_arg, "proxy", url);
        expect_refused(&run, url, &["base_url", why], &before);
    }

    // Restore without a record.
    let run = cli(
        &bin,
        home,
        &[
            "restore",
            "--config",
            config_arg,
            "--revert-file",
            home.join("nope.json").to_str().unwrap(),
        ],
    );
    expect_refused(
        &run,
        "missing revert file",
        &["no revert record", "nope.json"],
        &before,
    );

    // A path-like profile name.
    let run = cli(
        &bin,
        home,
        &[
            "apply",
            "--config",
            config_arg,
            "--provider",
            "proxy",
            "--base-url",
            "http://127.0.0.1:8080/v1",
            "--profile",
            "../elsewhere",
        ],
    );
    expect_refused(&run, "bad profile", &["profile name"], &before);

    // A revert record that is not ours.
    let foreign = home.join("foreign.json");
    std::fs::write(&foreign, "{\"hello\": 1}").unwrap();
    let before = snapshot_dir(home);
    let run = cli(
        &bin,
        home,
        &[
            "restore",
            "--config",
            config_arg,
            "--revert-file",
            foreign.to_str().unwrap(),
        ],
    );
    expect_refused(&run, "foreign record", &["foreign.json"], &before);

    // A record of another file is not applied to this one.
    let other_dir = tempfile::tempdir().unwrap();
    let other = other_dir.path().join("config.toml");
    let other_record = home.join("other.json");
    ok(
        &cli(
            &bin,
            home,
            &[
                "apply",
                "--config",
                other.to_str().unwrap(),
                "--provider",
                "proxy",
                "--base-url",
                "http://127.0.0.1:8080/v1",
                "--revert-file",
                other_record.to_str().unwrap(),
            ],
        ),
        "apply to another config",
    );
    let before = snapshot_dir(home);
    let run = cli(
        &bin,
        home,
        &[
            "restore",
            "--config",
            config_arg,
            "--revert-file",
            other_record.to_str().unwrap(),
        ],
    );
    expect_refused(&run, "record of another file", &["belongs to"], &before);
    assert!(other.is_file(), "the other rewrite is still in place");

    // Missing arguments are usage errors (exit 2).
    let run = cli(&bin, home, &["apply", "--config", config_arg]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("--provider"), "{}", run.stderr);
    assert_eq!(snapshot_dir(home), before);
}

/// `chattr +i` on a path until dropped (a real fault, even for root); `None` after a
/// printed SKIP where it cannot be set.
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path, test: &str) -> Option<Self> {
        let ok = Command::new("chattr")
            .arg("+i")
            .arg(path)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            common::skip(
                test,
                if cfg!(windows) {
                    "the faults are made with Linux's `chattr +i`, which Windows has not"
                } else {
                    "`chattr +i` is not available (not root, or no immutable flag on this file system)"
                },
            );
            return None;
        }
        Some(Self(path.to_path_buf()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// `apply` whose config directory cannot be written and `restore` whose revert record
/// cannot be deleted exit 1, say "rolled back", and leave both directories byte for byte;
/// a config directory that cannot be written makes `restore` fail with the record kept.
/// Once the fault is gone the same commands work.
#[test]
fn apply_and_restore_that_fail_part_way_roll_back() {
    let test = "apply_and_restore_that_fail_part_way_roll_back";
    let Some(bin) = config_rewrite(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (home, records) = (dir.path().join("home"), dir.path().join("records"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&records).unwrap();
    let config = home.join("config.toml");
    std::fs::write(&config, ORIGINAL).unwrap();
    let record = records.join("revert.json");
    let (c, r) = (config.to_str().unwrap(), record.to_str().unwrap());
    let apply = [
        "apply",
        "--config",
        c,
        "--provider",
        "proxy",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--revert-file",
        r,
    ];
    let restore = ["restore", "--config", c, "--revert-file", r];
    let both = || (snapshot_dir(&home), snapshot_dir(&records));

    let before = both();
    {
        let Some(_frozen) = Immutable::set(&home, test) else {
            return;
        };
        let run = cli(&bin, dir.path(), &apply);
        assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains("apply failed and was rolled back"),
            "{}",
            run.stderr
        );
        assert_eq!(both(), before, "apply left no record and no change");
    }
    ok(&cli(&bin, dir.path(), &apply), "apply");
    let applied = both();
    assert_ne!(applied, before);
    {
        let Some(_frozen) = Immutable::set(&records, test) else {
            return;
        };
        let run = cli(&bin, dir.path(), &restore);
        assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains("restore failed and was rolled back"),
            "{}",
            run.stderr
        );
        assert_eq!(
            both(),
            applied,
            "the rewrite and its record are both still there"
        );
    }
    {
        let Some(_frozen) = Immutable::set(&home, test) else {
            return;
        };
        let run = cli(&bin, dir.path(), &restore);
        assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains(home.to_str().unwrap()),
            "{}",
            run.stderr
        );
        assert_eq!(both(), applied);
    }
    ok(&cli(&bin, dir.path(), &restore), "restore");
    assert_eq!(both(), before);
}

#[cfg(not(unix))]
#[test]
fn paths_and_values_from_files_reach_the_terminal_escaped() {
    common::skip(
        "paths_and_values_from_files_reach_the_terminal_escaped",
        "its directory name holds control characters, which Windows file names cannot",
    );
}

#[cfg(unix)]
#[test]
fn paths_and_values_from_files_reach_the_terminal_escaped() {
    let Some(bin) = config_rewrite("paths_and_values_from_files_reach_the_terminal_escaped") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // A directory name chosen by someone else: CR/LF forge lines, ESC/CSI recolour, bidi
    // reorders what the reader sees.
    let hostile = "d\x1b[31m\r\nok: restored\x07\u{9b}2J\u{202e}\u{2028}z";
    let dir = tmp.path().join(hostile);
    std::fs::create_dir(&dir).unwrap();
    let config = dir.join("config.toml");
    let config_arg = config.to_str().unwrap();
    let apply = cli(
        &bin,
        tmp.path(),
        &[
            "apply",
            "--config",
            config_arg,
            "--provider",
            "proxy",
            "--base-url",
            "http://127.0.0.1:9/v1",
        ],
    );
    ok(&apply, "apply");
    common::assert_terminal_safe("apply stdout", &apply.stdout);
    common::assert_terminal_safe("apply stderr", &apply.stderr);
    assert!(
        apply.stdout.contains("\\x1b[31m\\x0d\\x0a"),
        "{}",
        apply.stdout
    );
    let status = cli(&bin, tmp.path(), &["status", "--config", config_arg]);
    ok(&status, "status");
    common::assert_terminal_safe("status stdout", &status.stdout);
    let restore = cli(&bin, tmp.path(), &["restore", "--config", config_arg]);
    ok(&restore, "restore");
    common::assert_terminal_safe("restore stdout", &restore.stdout);

    // A value in the file itself (TOML escapes make it any character).
    let plain = tmp.path().join("plain.toml");
    std::fs::write(
        &plain,
        "model_provider = \"q\\u001b[2J\\r\\nFAKE: restored\\u009b\\u202e\"\n",
    )
    .unwrap();
    let status = cli(
        &bin,
        tmp.path(),
        &["status", "--config", plain.to_str().unwrap()],
    );
    ok(&status, "status of a hostile value");
    common::assert_terminal_safe("status stdout", &status.stdout);
    assert_eq!(status.stdout.lines().count(), 2, "{}", status.stdout);
}

/// Control, bidi and line-separator characters in any flag whose text would land in
/// config.toml are refused (exit 1) with a message naming the flag and the field, escaped
/// for the terminal, and every file stays byte for byte as it was.
#[test]
fn control_and_bidi_characters_in_flags_are_refused_and_nothing_changes() {
    let test = "control_and_bidi_characters_in_flags_are_refused_and_nothing_changes";
    let Some(bin) = config_rewrite(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let config = home.join("config.toml");
    std::fs::write(&config, ORIGINAL).unwrap();
    let config_arg = config.to_str().unwrap();
    let before = snapshot_dir(home);
    let url = "http://127.0.0.1:9/v1";
    for bad in [
        "x\x1b[2J",
        "x\rFAKE",
        "x\nFAKE",
        "x\u{202e}y",
        "x\u{2028}y",
        "x\u{7f}",
        "x\u{9b}2J",
    ] {
        let path_url = format!("{url}/{bad}");
        let query_url = format!("{url}?q={bad}");
        let cases: [(&str, &str, &[&str]); 7] = [
            (
                "--provider",
                "provider id",
                &["--provider", bad, "--base-url", url],
            ),
            (
                "--name",
                "name",
                &["--provider", "p", "--base-url", url, "--name", bad],
            ),
            (
                "--env-key",
                "env_key",
                &["--provider", "p", "--base-url", url, "--env-key", bad],
            ),
            (
                "--base-url",
                "base_url",
                &["--provider", "p", "--base-url", &path_url],
            ),
            (
                "--base-url",
                "base_url",
                &["--provider", "p", "--base-url", &query_url],
            ),
            (
                "--profile",
                "profile name",
                &["--provider", "p", "--base-url", url, "--profile", bad],
            ),
            (
                "--profile",
                "profile name",
                &[
                    "--provider",
                    "p",
                    "--base-url",
                    url,
                    "--profile",
                    bad,
                    "--legacy-profile-table",
                ],
            ),
        ];
        for (flag, field, args) in cases {
            let mut all = vec!["apply", "--config", config_arg];
            all.extend_from_slice(args);
            let run = cli(&bin, home, &all);
            let what = format!("{flag} {bad:?}");
            assert_eq!(run.code, Some(1), "{what}: {}{}", run.stdout, run.stderr);
            assert!(run.stderr.starts_with("error: "), "{what}: {}", run.stderr);
            assert!(
                run.stderr
                    .contains(&format!("invalid {field}: it contains")),
                "{what}: {}",
                run.stderr
            );
            assert!(
                run.stderr.contains(&format!("(given by {flag})")),
                "{what}: {}",
                run.stderr
            );
            assert!(!run.stderr.contains("FAKE\n"), "{what}: {}", run.stderr);
            common::assert_terminal_safe(&what, &run.stderr);
            assert_eq!(snapshot_dir(home), before, "{what}: files changed");
        }
    }
    // Not a variable name.
    let run = cli(
        &bin,
        home,
        &[
            "apply",
            "--config",
            config_arg,
            "--provider",
            "p",
            "--base-url",
            url,
            "--env-key",
            "MY-TOKEN",
        ],
    );
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("invalid env_key: it must be an environment variable name")
            && run.stderr.contains("--env-key"),
        "{}",
        run.stderr
    );
    assert_eq!(snapshot_dir(home), before);
}

/// A dangling symlink where the revert record goes is "no record yet" for all three
/// commands; `apply` writes the record through it and `restore` keeps the link.
#[cfg(not(unix))]
#[test]
fn a_dangling_symlink_revert_record_is_no_record_yet() {
    common::skip(
        "a_dangling_symlink_revert_record_is_no_record_yet",
        "creating a symlink on Windows needs a privilege a user does not normally hold",
    );
}

#[cfg(unix)]
#[test]
fn a_dangling_symlink_revert_record_is_no_record_yet() {
    let Some(bin) = config_rewrite("a_dangling_symlink_revert_record_is_no_record_yet") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let config = home.join("config.toml");
    std::fs::write(&config, ORIGINAL).unwrap();
    let config_arg = config.to_str().unwrap();
    let link = home.join("config.toml.revert.json");
    let target = home.join("records").join("revert.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();

    let status = cli(&bin, home, &["status", "--config", config_arg]);
    ok(&status, "status");
    assert!(
        status.stdout.contains("no pending rewrite"),
        "{}",
        status.stdout
    );
    let restore = cli(&bin, home, &["restore", "--config", config_arg]);
    assert_eq!(restore.code, Some(1), "{}", restore.stderr);
    assert!(
        restore.stderr.contains("no revert record"),
        "{}",
        restore.stderr
    );

    let apply = [
        "apply",
        "--config",
        config_arg,
        "--provider",
        "p",
        "--base-url",
        "http://127.0.0.1:9/v1",
    ];
    ok(&cli(&bin, home, &apply), "apply through a dangling link");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(target.is_file(), "the record was written through the link");
    let status = cli(&bin, home, &["status", "--config", config_arg]);
    assert!(
        status.stdout.contains("pending rewrite:"),
        "{}",
        status.stdout
    );
    ok(
        &cli(&bin, home, &["restore", "--config", config_arg]),
        "restore",
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), ORIGINAL);
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(!target.exists());
}
