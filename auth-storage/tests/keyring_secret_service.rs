//! The keyring backend against a real Secret Service (gnome-keyring on a private D-Bus
//! session bus), and interop with the real Codex CLI in keyring mode, both ways.
//!
//! The bus is a private one from `dbus-run-session`, with `gnome-keyring-daemon` (secrets
//! component, unlocked with a throwaway password) on it; the test skips visibly only when
//! those programs are missing or the daemon cannot start.
//!
//! The bus address must reach the code under test through the environment, and this
//! workspace forbids `unsafe` (so no `std::env::set_var`): the parent test starts the
//! daemons and re-runs this test binary as child processes with `DBUS_SESSION_BUS_ADDRESS`
//! set; the `child_keyring` test does nothing unless `AUTH_STORAGE_KEYRING_ROLE` is set.
//!
//! Linux only (the Secret Service); elsewhere the test says so with a `SKIP:` line. Windows's
//! Credential Manager has its own test (`keyring_credential_manager.rs`).
#![cfg(feature = "keyring")]

mod common;

#[cfg(target_os = "linux")]
use std::io::{BufRead, BufReader, Write};
#[cfg(target_os = "linux")]
use std::path::Path;
#[cfg(target_os = "linux")]
use std::process::{Child, ChildStdin, Command, Stdio};
#[cfg(target_os = "linux")]
use std::sync::Arc;
#[cfg(target_os = "linux")]
use std::time::{Duration, Instant};

#[cfg(target_os = "linux")]
use auth_core::{AuthDocument, AuthMode, Timestamp};
#[cfg(target_os = "linux")]
use auth_storage::keyring_backend::OsKeyring;
#[cfg(target_os = "linux")]
use auth_storage::{AutoStore, CodexHome, CredentialStore, KeyringStore, Placement};
#[cfg(target_os = "linux")]
use common::{codex_bin, run_bounded, skip, tokens};

#[cfg(target_os = "linux")]
const ROLE: &str = "AUTH_STORAGE_KEYRING_ROLE";
#[cfg(target_os = "linux")]
const HOME: &str = "AUTH_STORAGE_KEYRING_HOME";

/// Child side: one keyring operation, result on stdout as `RESULT <text>`.
#[test]
#[cfg(target_os = "linux")]
fn child_keyring() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let home = CodexHome::new(std::env::var(HOME).unwrap());
    let store = KeyringStore::new(home.clone(), Arc::new(OsKeyring));
    let result = match role.as_str() {
        "save-chatgpt" => {
            let doc = AuthDocument::chatgpt(
                tokens("kr@example.com", "acct-kr", "rt-kr"),
                Timestamp::now(),
            );
            store.save(&doc).map(|()| "saved".to_owned())
        }
        "load" => store.load().map(|doc| match doc {
            None => "none".to_owned(),
            Some(doc) => format!(
                "mode={} key_fingerprint={}",
                doc.effective_mode()
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
                doc.openai_api_key
                    .map(|k| k.fingerprint())
                    .unwrap_or_default()
            ),
        }),
        "delete" => store.delete().map(|removed| format!("removed={removed}")),
        // Can the Secret Service store an item yet? (Used while waiting for it to start.)
        "probe" => {
            let doc = AuthDocument::api_key(auth_core::Secret::new("sk-probe".into()));
            store
                .save(&doc)
                .and_then(|()| store.delete())
                .map(|_| "stored".to_owned())
        }
        "auto-save" => {
            let auto = AutoStore::new(home.clone(), Arc::new(OsKeyring));
            let doc = AuthDocument::api_key(auth_core::Secret::new("sk-auto".into()));
            home.lock()
                .and_then(|g| auto.save_reporting(&doc, &g))
                .map(|placement| match placement {
                    Placement::Keyring => "keyring".to_owned(),
                    Placement::FileFallback { .. } => "file-fallback".to_owned(),
                    other => format!("{other:?}"),
                })
        }
        other => panic!("unknown role {other}"),
    };
    match result {
        Ok(text) => println!("RESULT {text}"),
        Err(e) => println!("RESULT error: {e}"),
    }
}

#[cfg(target_os = "linux")]
struct Daemons {
    /// `gnome-keyring-daemon` (killed on drop).
    children: Vec<Child>,
    /// `dbus-run-session` and the stdin that keeps its session alive: closing it ends the
    /// session, and `dbus-run-session` then stops the bus it started.
    session: Option<(Child, Option<ChildStdin>)>,
    bus: String,
    base: tempfile::TempDir,
}

#[cfg(target_os = "linux")]
impl Drop for Daemons {
    fn drop(&mut self) {
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some((mut session, stdin)) = self.session.take() {
            drop(stdin);
            let deadline = Instant::now() + Duration::from_secs(5);
            while session.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = session.kill();
                    let _ = session.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[cfg(target_os = "linux")]
impl Daemons {
    fn env(&self, cmd: &mut Command) {
        cmd.env("DBUS_SESSION_BUS_ADDRESS", &self.bus);
        private_dirs(self.base.path(), cmd);
    }
}

#[cfg(target_os = "linux")]
fn private_dirs(base: &Path, cmd: &mut Command) {
    cmd.env("HOME", base)
        .env("XDG_RUNTIME_DIR", base.join("run"))
        .env("XDG_DATA_HOME", base.join("data"))
        .env("XDG_CONFIG_HOME", base.join("config"));
}

#[cfg(target_os = "linux")]
fn has_program(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
}

/// A private session bus from `dbus-run-session` (what a desktop session or CI would use),
/// with gnome-keyring's Secret Service on it, unlocked with a throwaway password.
#[cfg(target_os = "linux")]
fn start_daemons() -> Result<Daemons, String> {
    for program in ["dbus-run-session", "gnome-keyring-daemon"] {
        if !has_program(program) {
            return Err(format!("{program} is not installed"));
        }
    }
    let base = tempfile::tempdir().map_err(|e| e.to_string())?;
    for d in ["run", "data", "config"] {
        std::fs::create_dir_all(base.path().join(d)).map_err(|e| e.to_string())?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(
            base.path().join("run"),
            std::fs::Permissions::from_mode(0o700),
        );
    }
    // The session lasts as long as `cat` reads our stdin; the shell prints the bus address.
    let mut cmd = Command::new("dbus-run-session");
    cmd.args([
        "--",
        "sh",
        "-c",
        "echo \"$DBUS_SESSION_BUS_ADDRESS\"; exec cat >/dev/null",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    private_dirs(base.path(), &mut cmd);
    let mut session = cmd.spawn().map_err(|e| format!("dbus-run-session: {e}"))?;
    let stdin = session.stdin.take();
    let stdout = session.stdout.take();
    let mut daemons = Daemons {
        children: Vec::new(),
        session: Some((session, stdin)),
        bus: String::new(),
        base,
    };
    let mut line = String::new();
    if let Some(stdout) = stdout {
        // Bounded: dbus-run-session prints the address at once or exits.
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
    }
    daemons.bus = line.trim().to_owned();
    if daemons.bus.is_empty() {
        return Err("dbus-run-session printed no bus address".into());
    }
    let mut cmd = Command::new("gnome-keyring-daemon");
    cmd.args(["--foreground", "--unlock", "--components=secrets"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    daemons.env(&mut cmd);
    let mut gkd = cmd
        .spawn()
        .map_err(|e| format!("gnome-keyring-daemon: {e}"))?;
    let password = gkd
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(b"test-password"));
    daemons.children.push(gkd);
    password
        .transpose()
        .map_err(|e| format!("gnome-keyring-daemon did not take the password: {e}"))?;
    // Wait (bounded) until the Secret Service can store an item: the default collection
    // is created and unlocked a moment after the daemon appears on the bus.
    let probe_home = tempfile::tempdir().map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = String::new();
    loop {
        last = child_result(&daemons, "probe", probe_home.path()).unwrap_or(last);
        if last == "stored" {
            return Ok(daemons);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the Secret Service could not store an item within 15 s (last: {last})"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs one keyring operation in a child process on the daemons' bus.
#[cfg(target_os = "linux")]
fn child_result(daemons: &Daemons, role: &str, home: &Path) -> Option<String> {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_keyring",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ROLE, role)
    .env(HOME, home);
    daemons.env(&mut cmd);
    let (_, text, _) = run_bounded(cmd, None, 60);
    text.split("RESULT ")
        .nth(1)
        .map(|t| t.lines().next().unwrap_or("").to_owned())
}

#[cfg(target_os = "linux")]
fn child(daemons: &Daemons, role: &str, home: &Path) -> String {
    child_result(daemons, role, home).unwrap_or_else(|| panic!("child {role} printed no result"))
}

#[cfg(target_os = "linux")]
fn secret_tool_search(daemons: &Daemons) -> String {
    let mut cmd = Command::new("secret-tool");
    cmd.args(["search", "--all", "service", "Codex Auth"]);
    daemons.env(&mut cmd);
    let (_, out, err) = run_bounded(cmd, None, 30);
    format!("{out}{err}")
}

#[cfg(target_os = "linux")]
fn codex(
    daemons: &Daemons,
    bin: &Path,
    home: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> (i32, String) {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env("CODEX_HOME", home)
        .env_remove("OPENAI_API_KEY");
    daemons.env(&mut cmd);
    let (code, out, err) = run_bounded(cmd, stdin, 60);
    (code, format!("{out}{err}"))
}

#[cfg(target_os = "linux")]
fn keyring_home() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        "cli_auth_credentials_store = \"keyring\"\n",
    )
    .unwrap();
    dir
}

#[test]
#[cfg(target_os = "linux")]
fn real_secret_service_round_trip_and_codex_interop() {
    if std::env::var_os(ROLE).is_some() {
        return;
    }
    let daemons = match start_daemons() {
        Ok(d) => d,
        Err(reason) => {
            return skip("real_secret_service_round_trip_and_codex_interop", &reason);
        }
    };

    // 1. We write; the item looks exactly like the CLI's.
    let home = keyring_home();
    assert_eq!(child(&daemons, "save-chatgpt", home.path()), "saved");
    let account = CodexHome::new(home.path()).keyring_account();
    let secret_tool = has_program("secret-tool");
    if secret_tool {
        let found = secret_tool_search(&daemons);
        assert!(
            found.contains(&format!(
                "label = {account}@Codex Auth:default (keyring v3.6.3)"
            )),
            "{found}"
        );
        for attr in [
            "attribute.service = Codex Auth".to_owned(),
            format!("attribute.username = {account}"),
            "attribute.target = default".to_owned(),
            "attribute.application = rust-keyring".to_owned(),
        ] {
            assert!(found.contains(&attr), "missing {attr} in {found}");
        }
    } else {
        skip(
            "real_secret_service_round_trip_and_codex_interop (item attributes)",
            "secret-tool (libsecret-tools) is not installed",
        );
    }
    assert!(
        !home.path().join("auth.json").exists(),
        "keyring mode writes no auth.json"
    );

    // 2. The real CLI finds our item.
    if let Some(bin) = codex_bin() {
        let (code, out) = codex(&daemons, &bin, home.path(), &["login", "status"], None);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("Logged in using ChatGPT"), "{out}");

        // 3. We read the CLI's item.
        let cli_home = keyring_home();
        let (code, out) = codex(
            &daemons,
            &bin,
            cli_home.path(),
            &["login", "--with-api-key"],
            Some("sk-from-cli\n"),
        );
        assert_eq!(code, 0, "{out}");
        assert!(
            !cli_home.path().join("auth.json").exists(),
            "the CLI used the keyring"
        );
        let expected = auth_core::Secret::new("sk-from-cli".into()).fingerprint();
        assert_eq!(
            child(&daemons, "load", cli_home.path()),
            format!("mode={} key_fingerprint={expected}", AuthMode::ApiKey)
        );
    } else {
        skip(
            "real_secret_service_round_trip_and_codex_interop (CLI part)",
            "Codex CLI not found",
        );
    }

    // 4. Auto mode with a working keyring uses it.
    let auto_home = tempfile::tempdir().unwrap();
    assert_eq!(child(&daemons, "auto-save", auto_home.path()), "keyring");
    assert!(!auto_home.path().join("auth.json").exists());

    // 5. Delete removes the item.
    assert_eq!(child(&daemons, "delete", home.path()), "removed=true");
    assert_eq!(child(&daemons, "load", home.path()), "none");
    if secret_tool {
        assert!(!secret_tool_search(&daemons).contains(&account));
    }

    // 6. Auto mode without a reachable Secret Service falls back to the file and says so.
    let broken = Daemons {
        children: Vec::new(),
        session: None,
        bus: format!(
            "unix:path={}",
            daemons.base.path().join("no-such-bus").display()
        ),
        base: tempfile::tempdir().unwrap(),
    };
    let fallback_home = tempfile::tempdir().unwrap();
    assert_eq!(
        child(&broken, "auto-save", fallback_home.path()),
        "file-fallback"
    );
    assert!(fallback_home.path().join("auth.json").exists());
}

#[cfg(not(target_os = "linux"))]
#[test]
fn real_secret_service_round_trip_and_codex_interop() {
    common::skip(
        "real_secret_service_round_trip_and_codex_interop",
        "the freedesktop Secret Service (D-Bus, gnome-keyring) is the Linux keyring; this OS's \
         keyring is tested in keyring_credential_manager.rs (Windows) or not here (macOS)",
    );
}
