//! Who is a Codex login helper, decided on real processes holding real loopback ports: a
//! table of command lines that must be freed (genuine helper shapes) and command lines that
//! must be refused (an option's value or an argument only *mentions* codex, `argv[0]` lies,
//! the holder is our own parent), each checked through `free` (so the pidfd path runs) with
//! the holder's fate asserted. Also: hostile names and argv never reach the message raw.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{holder, python3, skip, start, start_and_read_port, v4};
use oauth_preflight::{FreePolicy, Outcome, free, inspect};

/// Listens on an ephemeral 127.0.0.1 port, prints it, lives at most 60 s.
const NODE_LISTENER: &str = "const s = require('net').createServer();\n\
s.listen(0, '127.0.0.1', () => console.log(s.address().port));\n\
setTimeout(() => process.exit(0), 60000);\n";
const PY_LISTENER: &str = "import socket, time\n\
s = socket.socket()\n\
s.bind(('127.0.0.1', 0))\n\
s.listen(8)\n\
print(s.getsockname()[1], flush=True)\n\
time.sleep(60)\n";
/// Preloaded/imported by the refused rows: does nothing, so the script is the holder.
const NOOP: &str = "// a module that only happens to be called codex\n";

fn quick() -> FreePolicy {
    FreePolicy::default().with_grace(Duration::from_millis(500))
}

fn node() -> Option<PathBuf> {
    let out = Command::new("node")
        .args(["-e", "console.log(process.execPath)"])
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    path.is_file().then_some(path)
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// One row: how to start the holder, and whether `free` must stop it.
struct Row {
    name: &'static str,
    must_free: bool,
    build: fn(&Tools, &Path) -> Command,
    stdin: Option<&'static str>,
}

struct Tools {
    node: PathBuf,
    python: PathBuf,
}

/// Lays out the files every row may use inside `dir`.
fn lay_out(dir: &Path) {
    // Genuine helper scripts: named codex, or inside the @openai/codex package.
    write(&dir.join("helper/codex.js"), NODE_LISTENER, 0o644);
    write(
        &dir.join("helper/node_modules/@openai/codex/bin/run.js"),
        NODE_LISTENER,
        0o644,
    );
    write(
        &dir.join("helper/bin/codex"),
        &format!("#!/usr/bin/env node\n{NODE_LISTENER}"),
        0o755,
    );
    write(&dir.join("helper/preload.js"), NOOP, 0o644);
    // Servers that only load or mention codex.
    write(&dir.join("other/codex.js"), NOOP, 0o644);
    write(&dir.join("other/server.js"), NODE_LISTENER, 0o644);
    write(&dir.join("other/codex_thing.py"), PY_LISTENER, 0o644);
}

fn rows() -> Vec<Row> {
    fn node_with(t: &Tools, dir: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(&t.node);
        c.current_dir(dir).args(args);
        c
    }
    vec![
        // ---- must free: genuine stale Codex login helper shapes ----
        Row {
            name: "node codex.js login",
            must_free: true,
            build: |t, d| node_with(t, d, &["helper/codex.js", "login"]),
            stdin: None,
        },
        Row {
            name: "node <@openai/codex package>/bin/run.js login",
            must_free: true,
            build: |t, d| {
                node_with(
                    t,
                    d,
                    &["helper/node_modules/@openai/codex/bin/run.js", "login"],
                )
            },
            stdin: None,
        },
        Row {
            name: "npm global shim: #!/usr/bin/env node bin/codex",
            must_free: true,
            build: |_, d| {
                let mut c = Command::new(d.join("helper/bin/codex"));
                c.current_dir(d).arg("login");
                c
            },
            stdin: None,
        },
        Row {
            name: "node --no-warnings --enable-source-maps codex.js",
            must_free: true,
            build: |t, d| {
                node_with(
                    t,
                    d,
                    &["--no-warnings", "--enable-source-maps", "helper/codex.js"],
                )
            },
            stdin: None,
        },
        Row {
            name: "node -r preload.js codex.js",
            must_free: true,
            build: |t, d| node_with(t, d, &["-r", "./helper/preload.js", "helper/codex.js"]),
            stdin: None,
        },
        Row {
            name: "node -- codex.js",
            must_free: true,
            build: |t, d| node_with(t, d, &["--", "helper/codex.js", "login"]),
            stdin: None,
        },
        // ---- must refuse: codex is only an option's value, an argument, or a lie ----
        Row {
            name: "node -r codex.js server.js",
            must_free: false,
            build: |t, d| node_with(t, d, &["-r", "./other/codex.js", "other/server.js"]),
            stdin: None,
        },
        Row {
            name: "node --require ./codex server.js",
            must_free: false,
            build: |t, d| {
                let mut c = node_with(t, &d.join("other"), &["--require", "./codex", "server.js"]);
                c.current_dir(d.join("other"));
                c
            },
            stdin: None,
        },
        Row {
            name: "node --require=./codex.js server.js",
            must_free: false,
            build: |t, d| node_with(t, d, &["--require=./other/codex.js", "other/server.js"]),
            stdin: None,
        },
        Row {
            name: "node --import ./codex.js server.js",
            must_free: false,
            build: |t, d| {
                node_with(
                    t,
                    &d.join("other"),
                    &["--import", "./codex.js", "server.js"],
                )
            },
            stdin: None,
        },
        Row {
            name: "node -e CODE codex.js",
            must_free: false,
            build: |t, d| node_with(t, d, &["-e", NODE_LISTENER, "helper/codex.js"]),
            stdin: None,
        },
        Row {
            name: "node - codex.js (script from stdin)",
            must_free: false,
            build: |t, d| node_with(t, d, &["-", "helper/codex.js"]),
            stdin: Some(NODE_LISTENER),
        },
        Row {
            name: "node server.js with argv[0] set to codex",
            must_free: false,
            build: |t, d| {
                let mut c = node_with(t, d, &["other/server.js"]);
                c.arg0("codex");
                c
            },
            stdin: None,
        },
        Row {
            name: "python3 -c CODE codex",
            must_free: false,
            build: |t, d| {
                let mut c = Command::new(&t.python);
                c.current_dir(d).args(["-c", PY_LISTENER, "codex"]);
                c
            },
            stdin: None,
        },
        Row {
            name: "python3 -m codex_thing",
            must_free: false,
            build: |t, d| {
                let mut c = Command::new(&t.python);
                c.current_dir(d.join("other")).args(["-m", "codex_thing"]);
                c
            },
            stdin: None,
        },
        Row {
            name: "node --snapshot-blob BLOB codex.js (the snapshot's main runs, not codex.js)",
            must_free: false,
            build: |t, d| {
                // Build a startup snapshot whose main function is the listener.
                let entry = d.join("other/snapshot-entry.js");
                write(
                    &entry,
                    &format!(
                        "require('v8').startupSnapshot.setDeserializeMainFunction(() => {{\n{NODE_LISTENER}}});\n"
                    ),
                    0o644,
                );
                let built = Command::new(&t.node)
                    .current_dir(d)
                    .args(["--snapshot-blob", "other/snap.blob", "--build-snapshot"])
                    .arg(&entry)
                    .status()
                    .unwrap();
                assert!(built.success(), "node --build-snapshot");
                node_with(
                    t,
                    d,
                    &["--snapshot-blob", "other/snap.blob", "helper/codex.js"],
                )
            },
            stdin: None,
        },
        Row {
            name: "an executable really named `codex (deleted)` (not deleted)",
            must_free: false,
            build: |t, d| {
                let exe = d.join("other/codex (deleted)");
                std::fs::copy(&t.python, &exe).unwrap();
                let mut c = Command::new(&exe);
                c.current_dir(d).args(["-c", PY_LISTENER]);
                c
            },
            stdin: None,
        },
        Row {
            name: "python3 -Bc CODE with argv[0] set to codex",
            must_free: false,
            build: |t, d| {
                let mut c = Command::new(&t.python);
                c.current_dir(d).args(["-Bc", PY_LISTENER]).arg0("codex");
                c
            },
            stdin: None,
        },
    ]
}

#[test]
fn real_holders_are_freed_or_refused_by_how_their_interpreter_reads_them() {
    const NAME: &str = "real_holders_are_freed_or_refused_by_how_their_interpreter_reads_them";
    let Some(node) = node() else {
        skip(NAME, "node is not installed");
        return;
    };
    let python = python3().expect("python3 is installed by .ci/run");
    let tools = Tools { node, python };
    let mut failures = Vec::new();
    for row in rows() {
        let dir = tempfile::tempdir().unwrap();
        lay_out(dir.path());
        let mut cmd = (row.build)(&tools, dir.path());
        let (child, port) = start_and_read_port(&mut cmd, row.stdin);
        let mut h = holder(child, v4(port), tools.node.clone(), dir);
        let found = inspect(h.addr).unwrap();
        let pids: Vec<u32> = found.processes().iter().map(|p| p.pid).collect();
        assert_eq!(
            pids,
            [h.pid()],
            "{}: the child itself holds the port",
            row.name
        );
        let outcome = free(h.addr, &quick());
        if row.must_free {
            let Outcome::Freed { stopped, .. } = &outcome else {
                failures.push(format!("{}: expected Freed, got {outcome}", row.name));
                continue;
            };
            assert_eq!(
                stopped
                    .iter()
                    .map(|s| (s.pid, s.pinned))
                    .collect::<Vec<_>>(),
                [(h.pid(), true)],
                "{}: only the holder, signalled through a pidfd",
                row.name
            );
            let status = h.child.wait().unwrap();
            assert_eq!(
                status.signal(),
                Some(15),
                "{}: stopped by SIGTERM",
                row.name
            );
        } else {
            if !matches!(outcome, Outcome::HeldByForeign { .. }) {
                failures.push(format!("{}: expected a refusal, got {outcome}", row.name));
                continue;
            }
            assert!(
                outcome.to_string().contains("nothing was killed"),
                "{outcome}"
            );
            std::thread::sleep(Duration::from_millis(50));
            assert!(h.is_alive(), "{}: a refused holder must survive", row.name);
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

const ANCESTOR_PORT_ENV: &str = "OAUTH_PREFLIGHT_ANCESTOR_PORT";

/// Holds a port, then runs its arguments as a child (which inherits nothing of the socket:
/// Python sockets are not inheritable) and exits with the child's status.
const PARENT_PY: &str = "import os, socket, subprocess, sys\n\
s = socket.socket()\n\
s.bind(('127.0.0.1', 0))\n\
s.listen(8)\n\
env = dict(os.environ, OAUTH_PREFLIGHT_ANCESTOR_PORT=str(s.getsockname()[1]))\n\
r = subprocess.run(sys.argv[1:], env=env, timeout=120)\n\
sys.exit(r.returncode)\n";

#[test]
fn a_codex_holder_that_is_our_parent_is_reported_not_stopped() {
    // The parent is a python3 copy named `codex`: a native-name match the matcher accepts,
    // so only the lineage check keeps `free` from stopping the program that started it.
    let dir = tempfile::tempdir().unwrap();
    let codex = dir.path().join("codex");
    std::fs::copy(python3().expect("python3 is installed"), &codex).unwrap();
    let me = std::env::current_exe().unwrap();
    let mut cmd = Command::new(&codex);
    cmd.args(["-c", PARENT_PY])
        .arg(&me)
        .args([
            "--exact",
            "linux::run_by_a_codex_parent_holding_the_port",
            "--ignored",
            "--nocapture",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = start(&mut cmd);
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the inner test did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "inner test failed:\n{text}");
    assert!(
        text.contains("1 passed"),
        "the inner test must really run:\n{text}"
    );
    assert!(text.contains("is the parent of this process"), "{text}");
}

/// Runs only under the test above, as the child of the `codex` process holding the port.
#[test]
#[ignore = "run by a_codex_holder_that_is_our_parent_is_reported_not_stopped"]
fn run_by_a_codex_parent_holding_the_port() {
    let port: u16 = std::env::var(ANCESTOR_PORT_ENV)
        .expect("set by the codex parent")
        .parse()
        .unwrap();
    let parent = std::os::unix::process::parent_id();
    let found = inspect(v4(port)).unwrap();
    assert_eq!(found.processes()[0].pid, parent, "{found:?}");
    assert_eq!(found.processes()[0].name, "codex");
    for dry_run in [true, false] {
        let outcome = free(v4(port), &quick().dry_run(dry_run));
        let Outcome::HeldByCaller {
            holder, generation, ..
        } = &outcome
        else {
            panic!("expected HeldByCaller, got {outcome}")
        };
        assert_eq!((holder.pid, *generation), (parent, 1));
        assert!(
            outcome.to_string().contains("nothing was killed"),
            "{outcome}"
        );
        println!("{outcome}");
    }
    assert!(
        !inspect(v4(port)).unwrap().is_free(),
        "the parent still holds it"
    );
}

#[test]
fn hostile_names_and_argv_are_escaped_in_messages_and_kept_raw_in_json() {
    // A program named with ESC, CR and LF, and argv that tries to forge a line and retitle
    // the terminal.
    let dir = tempfile::tempdir().unwrap();
    let name = "ev\u{1b}[31m\r\nil";
    let exe = dir.path().join(name);
    std::fs::copy(python3().expect("python3 is installed"), &exe).unwrap();
    let forged = "\u{1b}]0;owned\u{7}\r\nFreed port 127.0.0.1:1455 \u{202e}";
    let mut cmd = Command::new(&exe);
    cmd.args(["-c", PY_LISTENER, forged]);
    let (child, port) = start_and_read_port(&mut cmd, None);
    let mut h = holder(child, v4(port), exe.clone(), dir);

    let found = inspect(h.addr).unwrap();
    let p = found.processes()[0].clone();
    assert_eq!(p.name, name, "comm keeps the raw name");
    assert_eq!(p.argv.last().map(String::as_str), Some(forged));
    let unsafe_char =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    for shown in [p.to_string(), p.command_line(), p.exe_display().unwrap()] {
        assert!(!shown.chars().any(unsafe_char), "{shown:?}");
    }
    assert!(
        p.command_line()
            .contains("\\x1b]0;owned\\x07\\r\\nFreed port")
    );

    let outcome = free(h.addr, &quick());
    assert!(
        matches!(outcome, Outcome::HeldByForeign { .. }),
        "{outcome}"
    );
    let msg = outcome.to_string();
    assert!(!msg.chars().any(unsafe_char), "{msg:?}");
    assert!(msg.contains("ev\\x1b[31m\\r\\nil"), "{msg}");
    assert!(h.is_alive());

    #[cfg(feature = "serde")]
    {
        let json = serde_json::to_string(&found).unwrap();
        assert!(!json.chars().any(|c| c.is_control()), "{json}");
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        let argv = back["holders"][0]["process"]["argv"].as_array().unwrap();
        assert_eq!(argv.last().and_then(|a| a.as_str()), Some(forged));
    }
}

/// A `codex` holder (a python3 copy so named) hands its socket to a python3 child that then
/// renames itself with bytes that are not UTF-8: the child is still a holder, so the port is
/// refused and both survive (a name that cannot be read as text must never hide a holder).
const SHARE_PY: &str = "import socket, subprocess, sys, time\n\
s = socket.socket()\n\
s.bind(('127.0.0.1', 0))\n\
s.listen(8)\n\
child = \"import ctypes, time\\nctypes.CDLL(None).prctl(15, b'web-server\\\\xff', 0, 0, 0)\\ntime.sleep(60)\\n\"\n\
p = subprocess.Popen([sys.argv[1], '-c', child], pass_fds=[s.fileno()])\n\
time.sleep(0.5)\n\
print(s.getsockname()[1], flush=True)\n\
time.sleep(60)\n";

#[test]
fn a_sibling_whose_name_is_not_utf8_still_refuses_its_codex_sibling() {
    let python = python3().expect("python3 is installed by .ci/run");
    let dir = tempfile::tempdir().unwrap();
    let codex = dir.path().join("codex");
    std::fs::copy(&python, &codex).unwrap();
    let mut cmd = Command::new(&codex);
    cmd.args(["-c", SHARE_PY]).arg(&python);
    let (child, port) = start_and_read_port(&mut cmd, None);
    let mut h = holder(child, v4(port), codex.clone(), dir);
    let found = inspect(h.addr).unwrap();
    assert_eq!(found.processes().len(), 2, "{found:?}");
    assert!(
        found
            .processes()
            .iter()
            .any(|p| p.name.starts_with("web-server") && p.pid != h.pid()),
        "the renamed child is a described holder: {found:?}"
    );
    let outcome = free(h.addr, &quick());
    assert!(
        matches!(outcome, Outcome::HeldByForeign { .. }),
        "expected a refusal, got {outcome}"
    );
    std::thread::sleep(Duration::from_millis(50));
    assert!(h.is_alive(), "the codex sibling must survive");
    let bound = std::net::TcpListener::bind(h.addr);
    assert!(bound.is_err(), "the child still holds the port");
    for p in found.processes().iter().filter(|p| p.pid != h.pid()) {
        let _ = Command::new("kill")
            .args(["-9", &p.pid.to_string()])
            .status();
    }
    let _ = h.child.kill();
}
