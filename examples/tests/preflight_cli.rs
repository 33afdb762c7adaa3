//! Runs the built `preflight` example program against real processes holding real ephemeral
//! loopback ports: a free port passes, a foreign holder is refused (exit 1, the message the
//! issue asks for, holder alive), a holder named `codex` is only reported with `--dry-run`
//! and stopped without it, `--json` parses, and `--then-login` says clearly when `codex` is
//! missing (exit 127) or hands over to it.
//!
//! Needs the example binary (`target/<profile>/examples/preflight`): plain
//! `cargo test --workspace --all-features` builds it; with `--test preflight_cli` alone
//! build it first (`cargo build --workspace --all-features --examples`) or the tests print
//! `SKIP`. The free port, the missing `codex` and a foreign holder (this test binary re-run
//! as `child_listener`) run everywhere; the tests whose holders are python3 processes found
//! through `/proc` (and a shell-script `codex`) are Linux only and print SKIP elsewhere.

mod common;

use common::Run;

#[cfg(target_os = "linux")]
use std::io::BufRead;
use std::io::BufReader;
use std::net::{SocketAddr, TcpListener};
#[cfg(target_os = "linux")]
use std::os::unix::fs::PermissionsExt;
#[cfg(target_os = "linux")]
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
#[cfg(target_os = "linux")]
use std::process::ExitStatus;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
#[cfg(target_os = "linux")]
use std::time::Instant;

/// Bound on one run of the program (free + grace + bind wait are a few seconds at most).
const LIMIT: Duration = Duration::from_secs(30);

#[cfg(target_os = "linux")]
/// Listens on an ephemeral 127.0.0.1 port, prints it, then sleeps (its life is bounded).
const LISTENER_PY: &str = "import socket, time\n\
s = socket.socket()\n\
s.bind(('127.0.0.1', 0))\n\
s.listen(8)\n\
print(s.getsockname()[1], flush=True)\n\
time.sleep(60)\n";

fn preflight(test: &str) -> Option<PathBuf> {
    common::example_or_skip("preflight", test)
}

#[cfg(target_os = "linux")]
/// A real python3 binary (not a shim script), so a copy of it can run under another name.
fn python3(test: &str) -> Option<PathBuf> {
    let system = Path::new("/usr/bin/python3");
    let found = if system.is_file() {
        Some(system.to_owned())
    } else {
        Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| PathBuf::from(s.trim()))
            .filter(|p| p.is_file())
    };
    if found.is_none() {
        common::skip(test, "python3 is not installed");
    }
    found
}

#[cfg(target_os = "linux")]
/// A python3 process listening on 127.0.0.1; killed and reaped on drop.
struct Holder {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

#[cfg(target_os = "linux")]
impl Holder {
    /// Runs the listener as python3 itself (`name: None`) or as a copy of python3 named `name`.
    fn spawn(python: &Path, name: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let exe = match name {
            Some(name) => {
                let copy = dir.path().join(name);
                std::fs::copy(python, &copy).unwrap();
                std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
                copy
            }
            None => python.to_owned(),
        };
        let mut cmd = Command::new(&exe);
        cmd.args(["-c", LISTENER_PY])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // A parallel test forking while we wrote the copy can keep its write fd open until
        // that child execs: exec fails with ETXTBSY for a moment. Retry, bounded.
        let mut attempts = 0;
        let mut child = loop {
            match cmd.spawn() {
                Ok(child) => break child,
                Err(e) if e.raw_os_error() == Some(26) && attempts < 100 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("could not start holder {}: {e}", exe.display()),
            }
        };
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(15)).unwrap_or_default();
        let Ok(port) = line.trim().parse::<u16>() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("holder did not report its port (got {line:?})");
        };
        Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn port(&self) -> String {
        self.addr.port().to_string()
    }

    fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits (bounded) for the holder to exit.
    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[cfg(target_os = "linux")]
impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Run {
    fn all(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `bin args…` without `CODEX_BIN` in its environment, killed if it exceeds [`LIMIT`].
fn run(bin: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(bin);
    cmd.args(args).env_remove("CODEX_BIN");
    common::run_bounded(cmd, LIMIT)
}

/// A port nobody listens on right now (bound once by us, then released).
fn free_port() -> String {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string()
}

fn assert_contains(run: &Run, text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(
            text.contains(needle),
            "{needle:?} missing from the output:\n{}",
            run.all()
        );
    }
}

#[test]
fn free_port_exits_0_and_says_free() {
    let Some(bin) = preflight("free_port_exits_0_and_says_free") else {
        return;
    };
    let port = free_port();
    let r = run(&bin, &["--port", &port]);
    assert_eq!(r.code, Some(0), "{}", r.all());
    assert_contains(
        &r,
        &r.stdout,
        &[&format!("Port 127.0.0.1:{port} is free"), "(native)"],
    );
    assert!(!r.stdout.contains("holder:"), "{}", r.all());
}

#[cfg(target_os = "linux")]
#[test]
fn python3_holder_is_refused_with_exit_1_and_left_alive() {
    const NAME: &str = "python3_holder_is_refused_with_exit_1_and_left_alive";
    let (Some(bin), Some(python)) = (preflight(NAME), python3(NAME)) else {
        return;
    };
    let mut h = Holder::spawn(&python, None);
    let port = h.port();
    let r = run(&bin, &["--port", &port, "--grace-ms", "300"]);
    assert_eq!(r.code, Some(1), "{}", r.all());
    let pid = format!("pid {} (python3)", h.pid());
    assert_contains(
        &r,
        &r.stdout,
        &[
            &format!("Port 127.0.0.1:{port} is held by {pid}"),
            "does NOT look like a Codex login helper",
            "nothing was killed",
            &format!("`lsof -i tcp:{port}`"),
            &format!("`ss -ltnp 'sport = :{port}'`"),
            // The holder report before the verdict: who, how found.
            &format!("holder: {pid} on 127.0.0.1:{port}"),
        ],
    );
    std::thread::sleep(Duration::from_millis(100));
    assert!(h.is_alive(), "a refused holder must survive:\n{}", r.all());
    assert!(
        TcpListener::bind(h.addr).is_err(),
        "the refused holder still has the port"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn codex_named_holder_dry_run_reports_it_and_kills_nothing() {
    const NAME: &str = "codex_named_holder_dry_run_reports_it_and_kills_nothing";
    let (Some(bin), Some(python)) = (preflight(NAME), python3(NAME)) else {
        return;
    };
    let mut h = Holder::spawn(&python, Some("codex"));
    let port = h.port();
    let r = run(&bin, &["--port", &port, "--dry-run"]);
    assert_eq!(
        r.code,
        Some(0),
        "a dry run that would free exits 0: {}",
        r.all()
    );
    assert_contains(
        &r,
        &r.stdout,
        &[
            &format!(
                "Dry run: port 127.0.0.1:{port} is held by pid {} (codex)",
                h.pid()
            ),
            "a Codex login helper owned by you",
            "it would be stopped",
            "Nothing was killed",
        ],
    );
    std::thread::sleep(Duration::from_millis(100));
    assert!(h.is_alive(), "--dry-run must not signal:\n{}", r.all());
    assert!(
        TcpListener::bind(h.addr).is_err(),
        "still held after a dry run"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn codex_named_holder_is_freed_and_the_port_bindable() {
    const NAME: &str = "codex_named_holder_is_freed_and_the_port_bindable";
    let (Some(bin), Some(python)) = (preflight(NAME), python3(NAME)) else {
        return;
    };
    let mut h = Holder::spawn(&python, Some("codex"));
    let port = h.port();
    let r = run(&bin, &["--port", &port, "--grace-ms", "500"]);
    assert_eq!(r.code, Some(0), "{}", r.all());
    assert_contains(
        &r,
        &r.stdout,
        &[
            &format!("Freed port 127.0.0.1:{port}"),
            &format!("pid {} (codex) with SIGTERM", h.pid()),
        ],
    );
    let status = h
        .wait_exit(Duration::from_secs(5))
        .expect("the freed holder exited");
    assert_eq!(status.signal(), Some(15), "stopped by SIGTERM: {status}");
    TcpListener::bind(h.addr).expect("the port is bindable after preflight freed it");
}

#[cfg(target_os = "linux")]
#[test]
fn json_output_parses_for_refusal_free_and_dry_run() {
    const NAME: &str = "json_output_parses_for_refusal_free_and_dry_run";
    let (Some(bin), Some(python)) = (preflight(NAME), python3(NAME)) else {
        return;
    };
    let parse = |r: &Run| -> serde_json::Value {
        let mut lines = r.stdout.lines();
        let first = lines.next().unwrap_or_default();
        assert!(lines.next().is_none(), "one JSON object: {}", r.all());
        serde_json::from_str(first).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.all()))
    };

    let mut py = Holder::spawn(&python, None);
    let r = run(&bin, &["--port", &py.port(), "--json"]);
    assert_eq!(r.code, Some(1), "{}", r.all());
    let v = parse(&r);
    assert_eq!(v["outcome"], "held_by_foreign", "{v}");
    assert_eq!(v["ready"], false, "{v}");
    assert_eq!(v["holder"]["pid"], py.pid(), "{v}");
    assert_eq!(v["holder"]["name"], "python3", "{v}");
    assert_eq!(v["method"], "sock_diag", "{v}");
    assert_eq!(
        v["inspection"]["holders"][0]["process"]["pid"],
        py.pid(),
        "{v}"
    );
    assert!(
        v["inspection"]["holders"][0]["process"]["start_time"].is_u64(),
        "{v}"
    );
    assert!(
        v["inspection"]["holders"][0]["process"]["uid"].is_u64(),
        "{v}"
    );
    let msg = v["message"].as_str().unwrap_or_default();
    assert!(msg.contains("does NOT look like"), "{v}");
    assert!(py.is_alive());

    let port = free_port();
    let r = run(&bin, &["--port", &port, "--json"]);
    assert_eq!(r.code, Some(0), "{}", r.all());
    let v = parse(&r);
    assert_eq!(v["outcome"], "free", "{v}");
    assert_eq!(v["ready"], true, "{v}");
    assert_eq!(v["addr"], format!("127.0.0.1:{port}"), "{v}");

    let mut codex = Holder::spawn(&python, Some("codex"));
    let r = run(&bin, &["--port", &codex.port(), "--json", "--dry-run"]);
    assert_eq!(r.code, Some(0), "{}", r.all());
    let v = parse(&r);
    assert_eq!(v["outcome"], "would_free", "{v}");
    assert_eq!(
        v["inspection"]["holders"][0]["process"]["name"], "codex",
        "{v}"
    );
    assert!(codex.is_alive());
}

#[test]
fn then_login_without_codex_says_so_and_exits_127() {
    let Some(bin) = preflight("then_login_without_codex_says_so_and_exits_127") else {
        return;
    };
    let port = free_port();
    let r = run(
        &bin,
        &["--port", &port, "--then-login", "--codex", "/nonexistent"],
    );
    assert_eq!(r.code, Some(127), "{}", r.all());
    assert_contains(&r, &r.stdout, &[&format!("Port 127.0.0.1:{port} is free")]);
    assert_contains(
        &r,
        &r.stderr,
        &[
            "the Codex CLI is not installed",
            "--codex /nonexistent is not a file",
            "npm install -g @openai/codex",
        ],
    );

    // The same in JSON: two objects, the preflight's and the login's.
    let r = run(
        &bin,
        &[
            "--port",
            &port,
            "--json",
            "--then-login",
            "--codex",
            "/nonexistent",
        ],
    );
    assert_eq!(r.code, Some(127), "{}", r.all());
    let objects: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.all())))
        .collect();
    assert_eq!(objects.len(), 2, "{}", r.all());
    assert_eq!(objects[0]["outcome"], "free");
    assert_eq!(objects[1]["login"], "not_installed");
}

#[cfg(target_os = "linux")]
#[test]
fn then_login_runs_codex_login_after_a_successful_preflight() {
    let Some(bin) = preflight("then_login_runs_codex_login_after_a_successful_preflight") else {
        return;
    };
    // A stand-in for `codex` that shows how it was called and exits with its own code.
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("codex");
    std::fs::write(&fake, "#!/bin/sh\necho \"fake codex: $*\"\nexit 42\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = free_port();
    let fake_arg = fake.to_str().unwrap();
    let mut attempts = 0;
    let r = loop {
        let r = run(
            &bin,
            &[
                "--port",
                &port,
                "--then-login",
                "--codex",
                fake_arg,
                "--",
                "--device-auth",
            ],
        );
        // ETXTBSY from a parallel fork holding the script's write fd for an instant: retry.
        if r.code == Some(127) && r.stderr.contains("os error 26") && attempts < 50 {
            attempts += 1;
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        break r;
    };
    assert_eq!(r.code, Some(42), "codex login's own exit code: {}", r.all());
    assert_contains(
        &r,
        &r.stdout,
        &[
            &format!("Port 127.0.0.1:{port} is free"),
            "fake codex: login --device-auth",
        ],
    );
}

#[cfg(target_os = "linux")]
#[test]
fn hostile_holder_names_are_escaped_and_json_stays_valid() {
    const NAME: &str = "hostile_holder_names_are_escaped_and_json_stays_valid";
    let (Some(bin), Some(py)) = (preflight(NAME), python3(NAME)) else {
        return;
    };
    // A program named to clear the screen and forge a second "Freed …" line, with a
    // right-to-left override: it reaches us as comm, exe and argv[0].
    let name = "ev\u{1b}[2J\r\nFreed port 127.0.0.1:1 by stopping\u{202e}x";
    let mut h = Holder::spawn(&py, Some(name));
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };

    let r = run(&bin, &["--port", &h.port()]);
    assert_eq!(r.code, Some(1), "{}", r.all());
    assert!(!r.stdout.chars().any(unsafe_char), "{:?}", r.stdout);
    assert_eq!(
        r.stdout.lines().count(),
        2,
        "one holder line and one outcome line, no forged line:\n{}",
        r.all()
    );
    assert_contains(
        &r,
        &r.stdout,
        &[
            "ev\\x1b[2J\\r\\nFreed port",
            "\\u{202e}x",
            "nothing was killed",
        ],
    );

    let j = run(&bin, &["--port", &h.port(), "--json"]);
    assert_eq!(j.code, Some(1), "{}", j.all());
    assert_eq!(j.stdout.trim_end().lines().count(), 1, "{}", j.all());
    let v: serde_json::Value = serde_json::from_str(j.stdout.trim()).unwrap();
    let argv0 = v["holder"]["argv"][0].as_str().unwrap_or_default();
    assert!(argv0.ends_with(name), "JSON keeps the raw value: {argv0:?}");
    assert!(!v["message"].as_str().unwrap().chars().any(unsafe_char));
    assert!(h.is_alive(), "a refused holder must survive");
}

#[cfg(not(target_os = "linux"))]
#[test]
fn linux_only_tests() {
    for test in [
        "python3_holder_is_refused_with_exit_1_and_left_alive",
        "codex_named_holder_dry_run_reports_it_and_kills_nothing",
        "codex_named_holder_is_freed_and_the_port_bindable",
        "json_output_parses_for_refusal_free_and_dry_run",
        "then_login_runs_codex_login_after_a_successful_preflight",
        "hostile_holder_names_are_escaped_and_json_stays_valid",
    ] {
        common::skip(
            test,
            "its holders are python3 processes found through Linux's /proc (and a \
             shell-script codex)",
        );
    }
}

/// Set (to `listen`) in the environment of this binary re-run as a port holder.
const ROLE: &str = "PREFLIGHT_CLI_TEST_ROLE";

/// Child: listens on an ephemeral 127.0.0.1 port, prints `PORT <n>`, and holds it for at
/// most 60 s (the parent kills it sooner).
#[test]
fn child_listener() {
    if std::env::var(ROLE).as_deref() != Ok("listen") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    println!("PORT {}", listener.local_addr().unwrap().port());
    std::thread::sleep(Duration::from_secs(60));
}

/// This test binary listening on 127.0.0.1 as `child_listener`; killed and reaped on drop.
struct SelfHolder {
    child: Child,
    addr: SocketAddr,
}

impl SelfHolder {
    fn spawn() -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_listener",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE, "listen")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in stdout.lines().map_while(Result::ok) {
                // libtest may print `test child_listener ... ` in front of it.
                if let Some(port) = line.split("PORT ").nth(1) {
                    let _ = tx.send(port.trim().to_owned());
                    break;
                }
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let Ok(port) = line.parse::<u16>() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the holder did not report its port (got {line:?})");
        };
        Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

impl Drop for SelfHolder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A holder that is no Codex login helper (this test binary) is refused on every platform:
/// exit 1, nothing killed, the port still held. (Where the lookup cannot name the owner or
/// does not show the socket — under Wine 8 — it is refused as a holder it cannot inspect.)
#[test]
fn a_foreign_holder_is_refused_with_exit_1_and_left_alive() {
    let Some(bin) = preflight("a_foreign_holder_is_refused_with_exit_1_and_left_alive") else {
        return;
    };
    let mut h = SelfHolder::spawn();
    let port = h.addr.port().to_string();
    let r = run(&bin, &["--port", &port, "--grace-ms", "300"]);
    assert_eq!(r.code, Some(1), "{}", r.all());
    assert_contains(
        &r,
        &r.stdout.to_lowercase(),
        &[&format!("port 127.0.0.1:{port}"), "nothing was killed"],
    );
    assert!(!r.stdout.contains("Freed"), "{}", r.all());
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        matches!(h.child.try_wait(), Ok(None)),
        "a refused holder must survive:\n{}",
        r.all()
    );
    assert!(
        TcpListener::bind(h.addr).is_err(),
        "the refused holder still has the port"
    );
}
