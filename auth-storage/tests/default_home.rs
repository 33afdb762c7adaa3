//! Where `CodexHome::from_env` puts the Codex home, with `CODEX_HOME`, `HOME` and
//! `USERPROFILE` set, empty and unset — the rule the Codex CLI follows (`$CODEX_HOME`, else
//! `.codex` in the home directory: `$HOME` or the password database on Unix, the shell's
//! profile folder on Windows whatever `USERPROFILE` and `HOME` say).
//!
//! The environment of a running test cannot be changed safely, so the parent re-runs this
//! test binary with the environment of each case and reads the answer from its stdout.

mod common;

use std::path::PathBuf;
use std::process::Command;

const CHILD_ENV: &str = "AUTH_STORAGE_DEFAULT_HOME_CHILD";

/// Child: prints `RESULT <from_env's directory>` or `RESULT none`.
#[test]
fn child_print_default_home() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    match auth_storage::CodexHome::from_env() {
        Some(home) => println!("\nRESULT {}", home.dir().display()),
        None => println!("\nRESULT none"),
    }
}

/// `from_env` in a child whose environment is this one changed by `set` and `unset`.
fn default_home(set: &[(&str, &str)], unset: &[&str]) -> Option<PathBuf> {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_print_default_home",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, "1");
    for name in unset {
        cmd.env_remove(name);
    }
    for (name, value) in set {
        cmd.env(name, value);
    }
    let (code, out, err) = common::run_bounded(cmd, None, 60);
    assert_eq!(code, 0, "{out}{err}");
    let lines = common::result_lines(&out);
    assert_eq!(lines.len(), 1, "{out}");
    (lines[0] != "none").then(|| PathBuf::from(&lines[0]))
}

#[test]
fn codex_home_wins_when_set_and_an_empty_one_is_ignored() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let chosen = dir.path().join("chosen");
    let chosen_text = chosen.to_str().unwrap();
    assert_eq!(
        default_home(&[("CODEX_HOME", chosen_text)], &[]),
        Some(chosen.clone())
    );
    // Set, it wins over every home variable.
    assert_eq!(
        default_home(
            &[
                ("CODEX_HOME", chosen_text),
                ("HOME", "/elsewhere"),
                ("USERPROFILE", "/elsewhere")
            ],
            &[]
        ),
        Some(chosen)
    );
    // Empty counts as unset.
    assert_eq!(
        default_home(&[("CODEX_HOME", "")], &[]),
        default_home(&[], &["CODEX_HOME"])
    );
}

#[cfg(unix)]
#[test]
fn on_unix_the_home_is_dot_codex_in_home_or_the_password_database_entry() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    assert_eq!(
        default_home(&[("HOME", "/home/someone")], &["CODEX_HOME"]),
        Some(PathBuf::from("/home/someone/.codex"))
    );
    // USERPROFILE means nothing here.
    assert_eq!(
        default_home(
            &[("HOME", "/home/someone"), ("USERPROFILE", "/elsewhere")],
            &["CODEX_HOME"]
        ),
        Some(PathBuf::from("/home/someone/.codex"))
    );
    // Unset or empty HOME: the user's entry in the password database, as the CLI reads it.
    let from_passwd = default_home(&[], &["CODEX_HOME", "HOME"]).expect("a passwd entry");
    assert!(from_passwd.is_absolute(), "{from_passwd:?}");
    assert!(from_passwd.ends_with(".codex"), "{from_passwd:?}");
    assert_eq!(
        default_home(&[("HOME", "")], &["CODEX_HOME"]),
        Some(from_passwd)
    );
}

#[cfg(windows)]
#[test]
fn on_windows_the_home_is_dot_codex_in_the_profile_folder_whatever_userprofile_says() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let profile = std::env::var("USERPROFILE").expect("Windows sets USERPROFILE");
    let expected = PathBuf::from(&profile).join(".codex");
    // As Windows sets it up: %USERPROFILE%\.codex.
    assert_eq!(
        default_home(&[], &["CODEX_HOME"]),
        Some(expected.clone()),
        "USERPROFILE={profile}"
    );
    // The CLI asks the shell for the profile folder and ignores both variables; so do we.
    for (set, unset) in [
        (vec![("USERPROFILE", r"C:\elsewhere")], vec!["CODEX_HOME"]),
        (vec![], vec!["CODEX_HOME", "USERPROFILE"]),
        (vec![("USERPROFILE", "")], vec!["CODEX_HOME"]),
        (vec![("HOME", r"C:\elsewhere")], vec!["CODEX_HOME"]),
    ] {
        assert_eq!(
            default_home(&set, &unset),
            Some(expected.clone()),
            "set {set:?}, unset {unset:?}"
        );
    }
}
