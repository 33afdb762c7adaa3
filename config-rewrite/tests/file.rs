//! The file layer against a real file system: atomic replace, permissions, creation and
//! removal, refusal of invalid files, symlinks, and the crash-recovery flow of `RevertFile`.

mod common;

use std::fs;
use std::path::Path;

use config_rewrite::{
    EDIT_LOCK_FILE, EditError, Error, RestoreOutcome, RevertFile, Target, apply, restore,
};
use pretty_assertions::assert_eq;

/// Unix permission bits; Windows has none to compare, so there the file only has to exist.
#[track_caller]
fn assert_mode(path: &Path, want: u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, want, "{}", path.display());
    }
    #[cfg(not(unix))]
    {
        let _ = want;
        assert!(fs::metadata(path).unwrap().is_file(), "{}", path.display());
    }
}

/// The names in `dir`, sorted. The edit lock ([`EDIT_LOCK_FILE`]) is among them once an edit
/// ran there; anything else would be a leftover.
fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn apply_and_restore_keep_permissions_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let original = "# mine\r\nmodel = \"o3\"\r\n[tui]\r\nx = 1\r\n";
    fs::write(&config, original).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&config, fs::Permissions::from_mode(0o640)).unwrap();
    }

    let record = apply(&config, &common::proxy_rewrite(9, Target::TopLevel)).unwrap();
    assert_mode(&config, 0o640);
    assert_ne!(fs::read_to_string(&config).unwrap(), original);

    let report = restore(&record).unwrap();
    assert_eq!(report.outcome, RestoreOutcome::Exact);
    assert_eq!(fs::read_to_string(&config).unwrap(), original);
    assert_mode(&config, 0o640);
    // No temporary files left behind.
    assert_eq!(dir_entries(dir.path()), [EDIT_LOCK_FILE, "config.toml"]);
}

#[test]
fn missing_file_is_created_private_and_removed_on_restore() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let record = apply(&config, &common::proxy_rewrite(9, Target::TopLevel)).unwrap();
    assert!(record.created_file());
    assert_mode(&config, 0o600);
    restore(&record).unwrap();
    assert!(!config.exists());
    assert_eq!(dir_entries(dir.path()), [EDIT_LOCK_FILE]);
}

#[test]
fn invalid_toml_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let broken = "model = \"o3\"\n[tui\nx = 1\n";
    fs::write(&config, broken).unwrap();
    let modified = fs::metadata(&config).unwrap().modified().unwrap();
    let err = apply(&config, &common::proxy_rewrite(9, Target::TopLevel)).unwrap_err();
    match &err {
        Error::Config {
            path,
            source: EditError::InvalidToml { line, column, .. },
        } => {
            assert_eq!(path, &config);
            assert_eq!((*line, *column), (2, 5));
        }
        other => panic!("{other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("config.toml: invalid TOML at line 2, column 5"),
        "{message}"
    );
    assert_eq!(fs::read_to_string(&config).unwrap(), broken);
    assert_eq!(fs::metadata(&config).unwrap().modified().unwrap(), modified);
    assert_eq!(dir_entries(dir.path()), [EDIT_LOCK_FILE, "config.toml"]);
}

#[test]
fn non_utf8_is_refused_with_position() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    fs::write(&config, b"a = 1\nb = \"\xff\"\n").unwrap();
    let err = apply(&config, &common::proxy_rewrite(9, Target::TopLevel)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Config {
                source: EditError::NotUtf8 { line: 2, column: 6 },
                ..
            }
        ),
        "{err:?}"
    );
}

#[cfg(unix)]
#[test]
fn symlinked_config_keeps_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("dotfiles-config.toml");
    fs::write(&real, "model = \"o3\"\n").unwrap();
    let link = dir.path().join("config.toml");
    std::os::unix::fs::symlink("dotfiles-config.toml", &link).unwrap();
    let record = apply(&link, &common::proxy_rewrite(9, Target::TopLevel)).unwrap();
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        fs::read_to_string(&real)
            .unwrap()
            .contains("rotation-proxy")
    );
    restore(&record).unwrap();
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read_to_string(&real).unwrap(), "model = \"o3\"\n");
}

#[test]
fn revert_file_recovers_a_crashed_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let original = "model = \"o3\"\n[[skills.config]]\npath = \"a\"\nenabled = true\n";
    fs::write(&config, original).unwrap();

    // Run 1 applies, then "crashes" (never restores).
    {
        let revert = RevertFile::beside(&config);
        revert
            .apply(&config, &common::proxy_rewrite(9, Target::TopLevel))
            .unwrap();
        assert_mode(revert.path(), 0o600);
    }
    // Meanwhile the user edits something else.
    let edited = fs::read_to_string(&config)
        .unwrap()
        .replace("enabled = true", "enabled = false");
    fs::write(&config, &edited).unwrap();

    // Run 2 finds the stale rewrite and must not stack a new one on top of it.
    let revert = RevertFile::beside(&config);
    assert!(revert.is_pending().unwrap());
    let err = revert
        .apply(&config, &common::proxy_rewrite(10, Target::TopLevel))
        .unwrap_err();
    assert!(matches!(err, Error::PendingRevert { .. }), "{err:?}");
    let report = revert.restore().unwrap().unwrap();
    assert!(matches!(report.outcome, RestoreOutcome::Merged { ref kept, .. } if kept.is_empty()));
    assert_eq!(
        fs::read_to_string(&config).unwrap(),
        original.replace("enabled = true", "enabled = false")
    );
    assert!(!revert.is_pending().unwrap());

    // And starts cleanly.
    revert
        .apply(&config, &common::proxy_rewrite(10, Target::TopLevel))
        .unwrap();
    revert.restore().unwrap();
    assert_eq!(dir_entries(dir.path()), [EDIT_LOCK_FILE, "config.toml"]);
}

#[test]
fn crash_between_record_and_config_write_is_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    fs::write(&config, "model = \"o3\"\n").unwrap();
    // The record is stored first; simulate dying before config.toml was replaced.
    let text = fs::read_to_string(&config).unwrap();
    let applied = config_rewrite::apply_to_str(
        &config,
        Some(&text),
        &common::proxy_rewrite(9, Target::TopLevel),
    )
    .unwrap();
    let revert = RevertFile::beside(&config);
    revert.store(applied.record()).unwrap();
    let report = revert.restore().unwrap().unwrap();
    assert_eq!(report.outcome, RestoreOutcome::AlreadyRestored);
    assert_eq!(fs::read_to_string(&config).unwrap(), "model = \"o3\"\n");
}

#[test]
fn failed_apply_leaves_no_record() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    fs::write(&config, "profiles = 1\n").unwrap();
    let revert = RevertFile::beside(&config);
    let err = revert
        .apply(&config, &common::proxy_rewrite(9, Target::profile("w")))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Config {
                source: EditError::NotATable { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!revert.is_pending().unwrap());
    assert_eq!(fs::read_to_string(&config).unwrap(), "profiles = 1\n");
}

#[test]
fn corrupt_record_is_reported_not_guessed() {
    let dir = tempfile::tempdir().unwrap();
    let revert = RevertFile::beside(&dir.path().join("config.toml"));
    fs::write(revert.path(), "{ not json").unwrap();
    let err = revert.restore().unwrap_err();
    assert!(matches!(err, Error::InvalidRecordFile { .. }), "{err:?}");
    assert!(revert.path().exists(), "the evidence is kept");
}

#[test]
fn user_made_the_file_invalid_restore_refuses_and_keeps_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    fs::write(&config, "model = \"o3\"\n").unwrap();
    let revert = RevertFile::beside(&config);
    revert
        .apply(&config, &common::proxy_rewrite(9, Target::TopLevel))
        .unwrap();
    fs::write(&config, "model = \n").unwrap();
    let err = revert.restore().unwrap_err();
    assert!(
        matches!(
            err,
            Error::Config {
                source: EditError::InvalidToml { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(fs::read_to_string(&config).unwrap(), "model = \n");
    assert!(revert.is_pending().unwrap());
}

#[test]
fn error_messages_name_the_file_and_never_values() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    fs::write(&config, "[profiles]\nwork = \"sk-do-not-print\"\n").unwrap();
    let err = apply(&config, &common::proxy_rewrite(9, Target::profile("work"))).unwrap_err();
    // The path as the platform writes it (`\` on Windows), replaced whole.
    let message = err
        .to_string()
        .replace(&config.display().to_string(), "<config>");
    insta::assert_snapshot!(message, @"<config>: `profiles.work` is a string, not a table; rename or remove it and retry");
}

#[test]
fn record_holds_an_absolute_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let record = apply(&config, &common::proxy_rewrite(9, Target::TopLevel)).unwrap();
    assert!(record.config().is_absolute());
    restore(&record).unwrap();
}
