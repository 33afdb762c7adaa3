//! A failed apply or restore changes nothing: the configuration and its revert record move
//! together, and a failure after one of them changed undoes that change and says so.
//!
//! Faults are real: `chattr +i` on a directory stops new entries and removals even for
//! root. Each test prints `SKIP:` where the flag cannot be set.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use config_rewrite::{EDIT_LOCK_FILE, Error, RevertFile, Target};
use pretty_assertions::assert_eq;

/// `chattr +i` on `path` until dropped; `None` after printing SKIP when unsupported.
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
            let reason = if cfg!(windows) {
                "the faults are made with Linux's `chattr +i`, which Windows has not"
            } else {
                "`chattr +i` is not available (not root, or no immutable flag)"
            };
            let _ = writeln!(std::io::stderr(), "SKIP: {test}: {reason}");
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

/// Every file in `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap_or_default(),
            )
        })
        .collect();
    files.sort();
    files
}

const ORIGINAL: &str = "# mine\nmodel = \"o3\"\n";

#[test]
fn restore_whose_record_cannot_be_deleted_puts_the_rewrite_back() {
    let test = "restore_whose_record_cannot_be_deleted_puts_the_rewrite_back";
    let (home, records) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = home.path().join("config.toml");
    fs::write(&config, ORIGINAL).unwrap();
    let revert = RevertFile::at(records.path().join("revert.json"));
    revert
        .apply(&config, &common::proxy_rewrite(9, Target::TopLevel))
        .unwrap();
    let (home_before, records_before) = (snapshot(home.path()), snapshot(records.path()));
    {
        let Some(_frozen) = Immutable::set(records.path(), test) else {
            return;
        };
        let err = revert.restore().unwrap_err();
        assert!(matches!(err, Error::RolledBack { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("restore failed and was rolled back"),
            "{text}"
        );
        assert!(text.contains("revert.json"), "names the record: {text}");
        assert_eq!(snapshot(home.path()), home_before, "the rewrite is back");
        assert_eq!(snapshot(records.path()), records_before);
    }
    // With the fault gone the same restore completes.
    revert.restore().unwrap().unwrap();
    assert_eq!(fs::read_to_string(&config).unwrap(), ORIGINAL);
    assert!(!revert.is_pending().unwrap());
}

#[test]
fn restore_of_a_created_file_whose_record_cannot_be_deleted_recreates_it() {
    let test = "restore_of_a_created_file_whose_record_cannot_be_deleted_recreates_it";
    let (home, records) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = home.path().join("config.toml");
    let revert = RevertFile::at(records.path().join("revert.json"));
    revert
        .apply(&config, &common::proxy_rewrite(9, Target::TopLevel))
        .unwrap();
    let rewritten = fs::read(&config).unwrap();
    let Some(_frozen) = Immutable::set(records.path(), test) else {
        return;
    };
    let err = revert.restore().unwrap_err();
    assert!(matches!(err, Error::RolledBack { .. }), "{err:?}");
    assert_eq!(fs::read(&config).unwrap(), rewritten);
    assert!(revert.is_pending().unwrap());
}

#[test]
fn restore_into_an_unwritable_config_dir_keeps_the_record() {
    let test = "restore_into_an_unwritable_config_dir_keeps_the_record";
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config.toml");
    fs::write(&config, ORIGINAL).unwrap();
    let revert = RevertFile::beside(&config);
    revert
        .apply(&config, &common::proxy_rewrite(9, Target::TopLevel))
        .unwrap();
    let before = snapshot(home.path());
    let Some(_frozen) = Immutable::set(home.path(), test) else {
        return;
    };
    let err = revert.restore().unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert_eq!(snapshot(home.path()), before);
}

#[test]
fn apply_whose_config_cannot_be_replaced_takes_its_record_back() {
    let test = "apply_whose_config_cannot_be_replaced_takes_its_record_back";
    let (home, records) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = home.path().join("config.toml");
    fs::write(&config, ORIGINAL).unwrap();
    let revert = RevertFile::at(records.path().join("revert.json"));
    let Some(_frozen) = Immutable::set(home.path(), test) else {
        return;
    };
    let err = revert
        .apply(&config, &common::proxy_rewrite(9, Target::TopLevel))
        .unwrap_err();
    assert!(matches!(err, Error::RolledBack { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("apply failed and was rolled back"), "{text}");
    assert!(text.contains("config.toml"), "{text}");
    assert!(!revert.is_pending().unwrap(), "no record left behind");
    assert_eq!(fs::read_to_string(&config).unwrap(), ORIGINAL);
    assert!(
        snapshot(records.path()).is_empty(),
        "no temporary file either"
    );
}

#[test]
fn apply_whose_record_cannot_be_written_changes_nothing() {
    let test = "apply_whose_record_cannot_be_written_changes_nothing";
    let (home, records) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = home.path().join("config.toml");
    fs::write(&config, ORIGINAL).unwrap();
    let revert = RevertFile::at(records.path().join("revert.json"));
    // Nothing changes but the edit lock, which the first edit in a directory creates (empty).
    let mut expected = snapshot(home.path());
    expected.push((EDIT_LOCK_FILE.to_owned(), Vec::new()));
    expected.sort();
    let Some(_frozen) = Immutable::set(records.path(), test) else {
        return;
    };
    let err = revert
        .apply(&config, &common::proxy_rewrite(9, Target::TopLevel))
        .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(
        err.to_string().contains("revert.json")
            || err
                .to_string()
                .contains(&records.path().display().to_string()),
        "{err}"
    );
    assert_eq!(snapshot(home.path()), expected);
    assert!(!revert.is_pending().unwrap());
}
