//! Many processes on one pool: no lost update, and `kill -9` never leaves a torn file.
//!
//! The test binary re-runs itself as the child processes: the `child_*` tests do nothing
//! unless `AUTH_STORAGE_CHILD` is set by a parent test.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use auth_storage::PoolStore;
use serde_json::Value;

const CHILD_ENV: &str = "AUTH_STORAGE_CHILD";
const PROCESSES: usize = 8;
const UPDATES_PER_PROCESS: u64 = 200;

fn spawn_child(test: &str, role: &str, dir: &Path, stdout: Stdio) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, role)
        .env("AUTH_STORAGE_POOL", dir)
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn counter(pool: &auth_storage::pool::PoolDocument, key: &str) -> u64 {
    pool.extra
        .get("counts")
        .and_then(|c| c.get(key))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

fn bump(pool: &mut auth_storage::pool::PoolDocument, key: &str) -> u64 {
    let counts = pool
        .extra
        .entry("counts")
        .or_insert_with(|| Value::Object(Default::default()));
    let slot = counts
        .as_object_mut()
        .unwrap()
        .entry(key)
        .or_insert(Value::from(0u64));
    let next = slot.as_u64().unwrap() + 1;
    *slot = Value::from(next);
    next
}

/// Child: `UPDATES_PER_PROCESS` read-modify-writes of its own counter and the shared total.
#[test]
fn child_updater() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    let Some(id) = role.strip_prefix("updater-") else {
        return;
    };
    let dir = std::env::var("AUTH_STORAGE_POOL").unwrap();
    let store = PoolStore::new(dir)
        .with_backups(3)
        .with_lock_timeout(Duration::from_secs(60));
    for _ in 0..UPDATES_PER_PROCESS {
        store
            .update(|p| {
                bump(p, id);
                bump(p, "total");
            })
            .unwrap();
    }
}

#[test]
fn concurrent_processes_never_lose_an_update() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let children: Vec<Child> = (0..PROCESSES)
        .map(|i| {
            spawn_child(
                "child_updater",
                &format!("updater-{i}"),
                dir.path(),
                Stdio::null(),
            )
        })
        .collect();
    for mut child in children {
        // Bounded: each child has 60 s of lock timeout per update at most, and we give the
        // whole run 150 s before failing.
        let deadline = started + Duration::from_secs(150);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "a child failed: {status}");
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("stress children did not finish in time");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let loaded = PoolStore::new(dir.path()).load().unwrap();
    assert!(loaded.recovery.is_none(), "{:?}", loaded.recovery);
    let total = PROCESSES as u64 * UPDATES_PER_PROCESS;
    assert_eq!(counter(&loaded.pool, "total"), total);
    for i in 0..PROCESSES {
        assert_eq!(counter(&loaded.pool, &i.to_string()), UPDATES_PER_PROCESS);
    }
    assert_eq!(loaded.pool.revision, total);
    let _ = writeln!(
        std::io::stderr(),
        "stress: {PROCESSES} processes x {UPDATES_PER_PROCESS} updates = {total} in {:?}",
        started.elapsed()
    );
}

/// Child: update forever (until killed), printing each committed counter value.
#[test]
fn child_crash_writer() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    if role != "crash-writer" {
        return;
    }
    let dir = std::env::var("AUTH_STORAGE_POOL").unwrap();
    let store = PoolStore::new(dir).with_backups(2);
    let mut out = std::io::stdout().lock();
    // Bounded even if the parent never kills us.
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        let n = store
            .update(|p| {
                // A payload that changes size every time widens the write window.
                let n = bump(p, "writes");
                p.extra.insert(
                    "payload".into(),
                    Value::from("x".repeat((n as usize * 997) % 20_000)),
                );
                n
            })
            .unwrap();
        writeln!(out, "{n}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn kill_9_at_random_points_never_leaves_a_torn_file() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = PoolStore::new(dir.path());
    // A small deterministic xorshift for kill delays (reproducible, no extra crate).
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let rounds = 25;
    let mut kills_mid_run = 0;
    for round in 0..rounds {
        let before = counter(&store.load().unwrap().pool, "writes");
        let mut child = spawn_child(
            "child_crash_writer",
            "crash-writer",
            dir.path(),
            Stdio::piped(),
        );
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                // libtest prints "test child_crash_writer ... " without a newline before our
                // first number, so read the last word of each line.
                .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
                .last()
        });
        std::thread::sleep(Duration::from_millis(10 + next() % 60));
        child.kill().unwrap(); // SIGKILL on Unix
        let status = child.wait().unwrap();
        if !status.success() {
            kills_mid_run += 1;
        }
        let acknowledged = reader.join().unwrap().unwrap_or(before);
        let loaded = store
            .load()
            .unwrap_or_else(|e| panic!("round {round}: pool unreadable after kill -9: {e}"));
        assert!(
            loaded.recovery.is_none(),
            "round {round}: main file damaged: {:?}",
            loaded.recovery
        );
        let now = counter(&loaded.pool, "writes");
        // Either the last acknowledged state or the one write in flight when killed.
        assert!(
            now == acknowledged || now == acknowledged + 1,
            "round {round}: file has {now}, acknowledged {acknowledged}"
        );
    }
    assert!(
        kills_mid_run > rounds / 2,
        "children were not killed while running"
    );
    // Stale temporaries from killed writers are cleaned up by the next update.
    store.update(|p| bump(p, "writes")).unwrap();
    let temps = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".pool-")
        })
        .count();
    assert_eq!(temps, 0);
}

/// While another process rewrites the pool as fast as it can, unlocked readers in this
/// process always see a complete document (never a recovery), and never go back in time.
#[test]
fn readers_never_see_a_torn_file_while_another_process_writes() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = PoolStore::new(dir.path());
    store.update(|p| bump(p, "writes")).unwrap();
    let mut child = spawn_child(
        "child_crash_writer",
        "crash-writer",
        dir.path(),
        Stdio::null(),
    );
    let started = Instant::now();
    let mut reads = 0u64;
    let mut last = 0;
    let mut distinct = 0;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Until the writer has replaced the file 50 times (bounded: 10 s).
        while distinct < 50 && started.elapsed() < Duration::from_secs(10) {
            let loaded = store.load().unwrap();
            assert!(
                loaded.recovery.is_none(),
                "read {reads}: a reader saw a damaged file: {:?}",
                loaded.recovery
            );
            let now = counter(&loaded.pool, "writes");
            assert!(now >= last, "went back from {last} to {now}");
            if now != last {
                distinct += 1;
            }
            last = now;
            reads += 1;
        }
    }));
    let _ = child.kill();
    let _ = child.wait();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    assert!(
        distinct > 10,
        "the writer barely wrote ({distinct} versions seen in {reads} reads)"
    );
    let _ = writeln!(
        std::io::stderr(),
        "readers: {reads} reads, {distinct} versions, none torn"
    );
}

/// Child: writes a Codex login and a pool (run by the parent under `umask 000`).
#[test]
fn child_umask_writer() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    if role != "umask-writer" {
        return;
    }
    let dir = std::path::PathBuf::from(std::env::var("AUTH_STORAGE_POOL").unwrap());
    let home = auth_storage::CodexHome::new(dir.join("codex-home"));
    auth_storage::CredentialStore::save(
        &auth_storage::FileStore::new(home),
        &auth_core::AuthDocument::api_key(auth_core::Secret::new("sk-umask".into())),
    )
    .unwrap();
    let pool = PoolStore::new(dir.join("pool"));
    for _ in 0..2 {
        pool.update(|p| bump(p, "writes")).unwrap();
    }
}

/// Private files are created private, whatever the umask: a process with `umask 000`
/// (where a plainly created file would be world-readable) still gets 0600 files and a
/// 0700 pool directory.
#[cfg(unix)]
#[test]
fn files_are_private_even_under_umask_000() {
    use std::os::unix::fs::PermissionsExt;
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // `sh` sets the umask, then becomes this test binary running the child test.
    let mut child = Command::new("sh")
        .args([
            "-c",
            "umask 000 && exec \"$0\" --exact child_umask_writer --test-threads=1",
        ])
        .arg(std::env::current_exe().unwrap())
        .env(CHILD_ENV, "umask-writer")
        .env("AUTH_STORAGE_POOL", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("umask child did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // The control: the lock file the CLI creates 0644-minus-umask really got the open umask.
    let home = dir.path().join("codex-home");
    assert_eq!(mode(&home.join("auth.lock")), 0o644);
    assert_eq!(mode(&home.join("auth.json")), 0o600);
    assert_eq!(mode(&home.join("auth.json.lock")), 0o600);
    let pool = dir.path().join("pool");
    assert_eq!(mode(&pool), 0o700);
    let mut checked = 0;
    for entry in std::fs::read_dir(&pool).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
        checked += 1;
    }
    assert!(checked >= 3, "pool.json, its lock and backups: {checked}");
}
