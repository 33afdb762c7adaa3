//! The edit lock ([`EDIT_LOCK_FILE`]) between threads and between real processes, on Unix and
//! Windows alike: a held lock makes an edit wait (and, held too long, fail with `Busy`),
//! racing programs cannot stack two rewrites, the lock never stands between the Codex CLI
//! and its files, and whatever is at the lock file's path is checked.
//!
//! The processes are this test binary re-run as `child`, told what to do through the
//! environment; every wait is bounded.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use config_rewrite::{EDIT_LOCK_FILE, Error, RestoreOutcome, RevertFile, Target, apply};
use pretty_assertions::assert_eq;

/// Set in the environment of this binary re-run as a child: `hold` or `apply`.
const ROLE: &str = "CONFIG_REWRITE_LOCK_TEST_ROLE";
const ORIGINAL: &str = "model = \"o3\"\n";
/// Apply-restore cycles per `cycle` child.
const CYCLES: usize = 40;

/// Child. `hold`: locks `<DIR>/EDIT_LOCK_FILE` the way another program taking part would
/// (`fs4`, as documented), prints `LOCKED`, and keeps it until `STOP` exists (at most 60 s).
/// `cycle`: waits until `GO` exists (at most 60 s), then [`CYCLES`] times applies the proxy
/// rewrite on port `PORT` to `CONFIG` through the revert record beside it and, when that
/// was not refused as pending, restores it; prints `RESULT applied N` or `RESULT error: …`.
#[test]
fn child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let path = |name: &str| PathBuf::from(std::env::var_os(name).expect(name));
    let wait_for = |file: &Path| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !file.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    match role.as_str() {
        "hold" => {
            let lock = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path("DIR").join(EDIT_LOCK_FILE))
                .unwrap();
            fs4::FileExt::try_lock(&lock).unwrap();
            println!("LOCKED");
            wait_for(&path("STOP"));
            fs4::FileExt::unlock(&lock).unwrap();
        }
        "cycle" => {
            let config = path("CONFIG");
            let port: u16 = std::env::var("PORT").unwrap().parse().unwrap();
            let revert = RevertFile::beside(&config);
            let rewrite = common::proxy_rewrite(port, Target::TopLevel);
            wait_for(&path("GO"));
            let mut applied = 0;
            for _ in 0..CYCLES {
                match revert.apply(&config, &rewrite) {
                    Ok(_) => applied += 1,
                    Err(Error::PendingRevert { .. }) => continue,
                    Err(e) => return println!("RESULT error: apply: {e}"),
                }
                // Nobody can have touched the file since: our own record, restored exactly.
                match revert.restore() {
                    Ok(Some(report)) if report.outcome == RestoreOutcome::Exact => {}
                    other => return println!("RESULT error: restore: {other:?}"),
                }
            }
            println!("RESULT applied {applied}");
        }
        other => panic!("unknown role {other}"),
    }
}

/// A child process whose stdout lines arrive on a channel; killed (and reaped) when dropped.
struct ChildProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl ChildProcess {
    fn spawn(role: &str, env: &[(&str, &Path)], port: u16) -> Self {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "child", "--nocapture", "--test-threads=1"])
            .env(ROLE, role)
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (name, value) in env {
            cmd.env(name, value);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// The first line holding `prefix`, from `prefix` on, within 60 s (libtest may print
    /// `test child ... ` in front of it).
    fn line(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(at) = line.find(prefix) {
                        return line[at..].to_owned();
                    }
                }
                Err(e) => panic!("no {prefix:?} line from the child: {e}"),
            }
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config dir holding `config.toml` with [`ORIGINAL`].
fn config_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    fs::write(&config, ORIGINAL).unwrap();
    (dir, config)
}

/// Starts `apply` on a thread and checks that it is still waiting after 300 ms.
fn apply_waiting(config: &Path) -> std::thread::JoinHandle<Result<(), Error>> {
    let config2 = config.to_path_buf();
    let worker = std::thread::spawn(move || {
        apply(&config2, &common::proxy_rewrite(9, Target::TopLevel)).map(drop)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!worker.is_finished(), "apply did not wait for the lock");
    assert_eq!(fs::read_to_string(config).unwrap(), ORIGINAL);
    worker
}

#[test]
fn a_lock_held_by_another_thread_makes_apply_wait() {
    let (dir, config) = config_dir();
    let holder = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.path().join(EDIT_LOCK_FILE))
        .unwrap();
    fs4::FileExt::try_lock(&holder).unwrap();
    let worker = apply_waiting(&config);
    fs4::FileExt::unlock(&holder).unwrap();
    worker.join().unwrap().unwrap();
    assert!(
        fs::read_to_string(&config)
            .unwrap()
            .contains("rotation-proxy")
    );
}

#[test]
fn a_lock_held_by_another_process_makes_apply_wait_and_then_fail_busy() {
    let (dir, config) = config_dir();
    let stop = dir.path().join("stop");
    let holder = ChildProcess::spawn("hold", &[("DIR", dir.path()), ("STOP", &stop)], 0);
    holder.line("LOCKED");

    // The Codex CLI never waits for us: the files it reads stay readable while we hold the
    // lock (a Windows lock is mandatory, so the lock must not be on them).
    let profile = dir.path().join("work.config.toml");
    fs::write(&profile, ORIGINAL).unwrap();
    assert_eq!(fs::read_to_string(&config).unwrap(), ORIGINAL);
    assert_eq!(fs::read_to_string(&profile).unwrap(), ORIGINAL);

    // Held longer than we wait: `Busy`, naming the directory, and nothing changed.
    let started = Instant::now();
    let err = apply(&config, &common::proxy_rewrite(9, Target::TopLevel)).unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, Error::Busy { .. }), "{err:?}");
    assert!(waited >= Duration::from_secs(9), "gave up after {waited:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("{}: another program", dir.path().display())),
        "{err}"
    );
    assert_eq!(fs::read_to_string(&config).unwrap(), ORIGINAL);

    // Released while we wait: the edit goes through.
    let worker = apply_waiting(&config);
    fs::write(&stop, "").unwrap();
    worker.join().unwrap().unwrap();
    assert!(
        fs::read_to_string(&config)
            .unwrap()
            .contains("rotation-proxy")
    );
}

/// Four programs apply and restore their rewrite of one config as fast as they can: each
/// apply is either refused as pending or restores exactly (a rewrite stacked on another's
/// would restore that one's text or find the file changed), and the config ends as it began.
#[test]
fn racing_processes_cannot_stack_rewrites() {
    const PROCESSES: u16 = 4;
    let (dir, config) = config_dir();
    let go = dir.path().join("go");
    let children: Vec<_> = (0..PROCESSES)
        .map(|i| ChildProcess::spawn("cycle", &[("CONFIG", &config), ("GO", &go)], 9 + i))
        .collect();
    fs::write(&go, "").unwrap();
    let mut applied = 0;
    for child in &children {
        let result = child.line("RESULT ");
        let n: usize = result
            .strip_prefix("RESULT applied ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{result}"));
        applied += n;
    }
    assert!(applied > 0, "no apply went through");
    eprintln!("{applied} apply-restore cycles in {PROCESSES} processes");
    assert_eq!(fs::read_to_string(&config).unwrap(), ORIGINAL);
    assert!(!RevertFile::beside(&config).is_pending().unwrap());
}

#[test]
fn racing_threads_cannot_stack_rewrites() {
    let (_dir, config) = config_dir();
    let workers: Vec<_> = (0..4u16)
        .map(|i| {
            let config = config.clone();
            std::thread::spawn(move || {
                RevertFile::beside(&config)
                    .apply(&config, &common::proxy_rewrite(9 + i, Target::TopLevel))
            })
        })
        .collect();
    let results: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert!(
        results
            .iter()
            .all(|r| r.is_ok() || matches!(r, Err(Error::PendingRevert { .. }))),
        "{results:?}"
    );
    RevertFile::beside(&config).restore().unwrap();
    assert_eq!(fs::read_to_string(&config).unwrap(), ORIGINAL);
}

#[test]
fn the_lock_file_stays_empty_beside_the_config_under_a_name_codex_never_reads() {
    let (dir, config) = config_dir();
    let revert = RevertFile::beside(&config);
    revert
        .apply(&config, &common::proxy_rewrite(9, Target::TopLevel))
        .unwrap();
    revert.restore().unwrap().unwrap();
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [EDIT_LOCK_FILE, "config.toml"]);
    assert_eq!(
        fs::metadata(dir.path().join(EDIT_LOCK_FILE)).unwrap().len(),
        0
    );
    // Codex reads `config.toml` and `<profile>.config.toml`; no profile name maps here.
    assert!(!EDIT_LOCK_FILE.ends_with(".toml"));
    // The next edit uses the file that is there.
    revert
        .apply(&config, &common::proxy_rewrite(9, Target::TopLevel))
        .unwrap();
    revert.restore().unwrap().unwrap();
    assert_eq!(fs::read_to_string(&config).unwrap(), ORIGINAL);
}

#[test]
fn a_directory_at_the_lock_path_is_refused_and_nothing_changes() {
    let (dir, config) = config_dir();
    fs::create_dir(dir.path().join(EDIT_LOCK_FILE)).unwrap();
    let revert = RevertFile::beside(&config);
    let err = revert
        .apply(&config, &common::proxy_rewrite(9, Target::TopLevel))
        .unwrap_err();
    assert!(matches!(err, Error::NotRegularFile { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(EDIT_LOCK_FILE) && text.contains("a directory"),
        "{text}"
    );
    assert_eq!(fs::read_to_string(&config).unwrap(), ORIGINAL);
    assert!(!revert.is_pending().unwrap());
}

/// A lock file this process may not write (another account made it, or it is read-only)
/// is locked read-only, and still keeps two edits apart.
#[test]
fn an_unwritable_lock_file_still_locks() {
    let test = "an_unwritable_lock_file_still_locks";
    let (dir, config) = config_dir();
    let lock = dir.path().join(EDIT_LOCK_FILE);
    fs::write(&lock, "").unwrap();
    let Some(_unwritable) = Unwritable::set(&lock, test) else {
        return;
    };
    let holder = fs::File::open(&lock).unwrap();
    fs4::FileExt::try_lock(&holder).unwrap();
    let worker = apply_waiting(&config);
    fs4::FileExt::unlock(&holder).unwrap();
    worker.join().unwrap().unwrap();
    assert!(
        fs::read_to_string(&config)
            .unwrap()
            .contains("rotation-proxy")
    );
}

/// A file this process may not open for writing, until dropped: the read-only attribute on
/// Windows, `chattr +i` on Unix (permission bits do not stop root). `None` after a printed
/// SKIP where the file stays writable.
struct Unwritable(PathBuf);

impl Unwritable {
    fn set(path: &Path, test: &str) -> Option<Self> {
        #[cfg(windows)]
        let reason = {
            let mut permissions = fs::metadata(path).unwrap().permissions();
            permissions.set_readonly(true);
            fs::set_permissions(path, permissions).unwrap();
            // Wine maps the attribute to Unix mode bits, which do not stop root.
            "the read-only attribute does not stop this user (Wine run as root?)"
        };
        #[cfg(not(windows))]
        let reason = {
            let _ = Command::new("chattr").arg("+i").arg(path).output();
            "`chattr +i` is not available (not root, or no immutable flag)"
        };
        let held = Self(path.to_path_buf());
        if fs::OpenOptions::new().write(true).open(path).is_ok() {
            common::skip(test, reason);
            return None;
        }
        Some(held)
    }
}

impl Drop for Unwritable {
    fn drop(&mut self) {
        #[cfg(windows)]
        {
            if let Ok(meta) = fs::metadata(&self.0) {
                let mut permissions = meta.permissions();
                #[allow(clippy::permissions_set_readonly_false)] // Windows: clears the attribute
                permissions.set_readonly(false);
                let _ = fs::set_permissions(&self.0, permissions);
            }
        }
        #[cfg(not(windows))]
        {
            let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
        }
    }
}

/// A FIFO or a device at the lock path is refused at once: opening a FIFO must not block,
/// and locking `/dev/null` would exclude nobody.
#[test]
fn a_fifo_or_device_at_the_lock_path_is_refused_at_once() {
    #[cfg(unix)]
    {
        for (fifo, kind) in [(true, "a FIFO (named pipe)"), (false, "a character device")] {
            let (dir, config) = config_dir();
            let lock = dir.path().join(EDIT_LOCK_FILE);
            if fifo {
                let made = Command::new("mkfifo").arg(&lock).status();
                assert!(made.is_ok_and(|s| s.success()), "mkfifo");
            } else {
                std::os::unix::fs::symlink("/dev/null", &lock).unwrap();
            }
            // On a thread, so that an open which blocks fails the test instead of hanging it.
            let (send, answer) = mpsc::channel();
            let config2 = config.clone();
            std::thread::spawn(move || {
                let _ = send.send(apply(&config2, &common::proxy_rewrite(9, Target::TopLevel)));
            });
            let err = answer
                .recv_timeout(Duration::from_secs(5))
                .expect("refused at once, not blocked")
                .unwrap_err();
            assert!(matches!(err, Error::NotRegularFile { .. }), "{err:?}");
            assert!(err.to_string().contains(kind), "{err}");
            assert_eq!(fs::read_to_string(&config).unwrap(), ORIGINAL);
        }
    }
    #[cfg(not(unix))]
    common::skip(
        "a_fifo_or_device_at_the_lock_path_is_refused_at_once",
        "FIFOs and device files are Unix file types",
    );
}
