//! The keyring backend against a real Secret Service (gnome-keyring on a private D-Bus
//! session bus), and interop with the real Codex CLI in keyring mode, both ways.
//!
//! The bus address must reach the code under test through the environment, and this
//! workspace forbids `unsafe` (so no `std::env::set_var`): the parent test starts the
//! daemons and re-runs this test binary as child processes with `DBUS_SESSION_BUS_ADDRESS`
//! set; the `child_keyring` test does nothing unless `AUTH_STORAGE_KEYRING_ROLE` is set.
#![cfg(all(feature = "keyring", target_os = "linux"))]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use auth_core::{AuthDocument, AuthMode, Timestamp};
use auth_storage::keyring_backend::OsKeyring;
use auth_storage::{AutoStore, CodexHome, CredentialStore, KeyringStore, Placement};
use common::{codex_bin, run_bounded, skip, tokens};

const ROLE: &str = "AUTH_STORAGE_KEYRING_ROLE";
const HOME: &str = "AUTH_STORAGE_KEYRING_HOME";

/// Child side: one keyring operation, result on stdout as `RESULT <text>`.
#[test]
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

struct Daemons {
    children: Vec<Child>,
    bus: String,
    base: tempfile::TempDir,
}

impl Drop for Daemons {
    fn drop(&mut self) {
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Daemons {
    fn env(&self, cmd: &mut Command) {
        let base = self.base.path();
        cmd.env("DBUS_SESSION_BUS_ADDRESS", &self.bus)
            .env("HOME", base)
            .env("XDG_RUNTIME_DIR", base.join("run"))
            .env("XDG_DATA_HOME", base.join("data"))
            .env("XDG_CONFIG_HOME", base.join("config"));
    }
}

fn start_daemons() -> Result<Daemons, String> {
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
    let mut bus = Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--print-address=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("dbus-daemon: {e}"))?;
    let mut line = String::new();
    BufReader::new(bus.stdout.take().unwrap())
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let mut daemons = Daemons {
        children: vec![bus],
        bus: line.trim().to_owned(),
        base,
    };
    if daemons.bus.is_empty() {
        return Err("dbus-daemon printed no address".into());
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
    gkd.stdin
        .take()
        .unwrap()
        .write_all(b"test-password")
        .map_err(|e| e.to_string())?;
    daemons.children.push(gkd);
    // Wait (bounded) until the Secret Service can store an item: the default collection
    // is created and unlocked a moment after the daemon appears on the bus.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut probe = Command::new("secret-tool");
        probe.args(["store", "--label=probe", "service", "auth-storage-probe"]);
        daemons.env(&mut probe);
        let (code, _, _) = run_bounded(probe, Some("probe"), 5);
        if code == 0 {
            return Ok(daemons);
        }
        if Instant::now() > deadline {
            return Err("the Secret Service could not store an item within 15 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn child(daemons: &Daemons, role: &str, home: &Path) -> String {
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
    let (_, text, err) = run_bounded(cmd, None, 60);
    text.split("RESULT ")
        .nth(1)
        .map(|t| t.lines().next().unwrap_or("").to_owned())
        .unwrap_or_else(|| panic!("child {role} printed no result: {text}{err}"))
}

fn secret_tool_search(daemons: &Daemons) -> String {
    let mut cmd = Command::new("secret-tool");
    cmd.args(["search", "--all", "service", "Codex Auth"]);
    daemons.env(&mut cmd);
    let (_, out, err) = run_bounded(cmd, None, 30);
    format!("{out}{err}")
}

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
fn real_secret_service_round_trip_and_codex_interop() {
    if std::env::var_os(ROLE).is_some() {
        return;
    }
    if Command::new("secret-tool")
        .arg("--version")
        .output()
        .is_err()
    {
        return skip(
            "real_secret_service_round_trip_and_codex_interop",
            "secret-tool (libsecret-tools) is not installed",
        );
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
    assert!(!secret_tool_search(&daemons).contains(&account));

    // 6. Auto mode without a reachable Secret Service falls back to the file and says so.
    let broken = Daemons {
        children: Vec::new(),
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
