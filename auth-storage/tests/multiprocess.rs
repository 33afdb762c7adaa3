//! Many processes on one pool: no lost update, and `kill -9` never leaves a torn file.
//!
//! The test binary re-runs itself as the child processes: the `child_*` tests do nothing
//! unless `AUTH_STORAGE_CHILD` is set by a parent test.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

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
        // The parent's readers may hold the file open (see `retry_while_in_use`).
        let n = common::retry_while_in_use(|| {
            store.update(|p| {
                // A payload that changes size every time widens the write window.
                let n = bump(p, "writes");
                p.extra.insert(
                    "payload".into(),
                    Value::from("x".repeat((n as usize * 997) % 20_000)),
                );
                n
            })
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
            common::pause_between_reads();
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

/// A reader holding `pool.json` open while an update replaces it. On Unix the update goes
/// through at once and the reader goes on reading the old document, whole. On Windows an
/// open file cannot be replaced by a plain rename: the update retries while the reader holds
/// on (about a second), then fails with `StillInUse` having changed nothing; a reader that
/// lets go within that time costs the writer only the wait.
#[test]
fn a_reader_holding_the_pool_open_delays_or_fails_a_write_but_never_tears_it() {
    use std::io::Read;
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = PoolStore::new(dir.path());
    store.update(|p| bump(p, "writes")).unwrap();
    let before = std::fs::read(store.file()).unwrap();

    let mut held = std::fs::File::open(store.file()).unwrap();
    let started = Instant::now();
    let result = store.update(|p| bump(p, "writes"));
    let waited = started.elapsed();
    let mut seen = Vec::new();
    held.read_to_end(&mut seen).unwrap();
    assert_eq!(
        seen, before,
        "the reader reads the document it opened, whole"
    );
    let expected = match result {
        // Unix, and Windows where the rename can use POSIX semantics.
        Ok(_) => 2,
        // Only Windows refuses to replace an open file; anywhere else this is a failure.
        Err(auth_storage::StorageError::StillInUse { attempts, .. }) if cfg!(windows) => {
            assert!(attempts > 1, "{attempts}");
            assert!(
                waited >= Duration::from_millis(500),
                "it gave up after {waited:?}, without waiting for the reader"
            );
            assert_eq!(
                std::fs::read(store.file()).unwrap(),
                before,
                "nothing changed"
            );
            common::assert_no_partial_files(dir.path());
            let _ = writeln!(
                std::io::stderr(),
                "a reader holding pool.json open made the update fail after {waited:?}: \
                 StillInUse, the file unchanged"
            );
            1
        }
        Err(other) => panic!("{other}"),
    };
    drop(held);
    let loaded = store.load().unwrap();
    assert!(loaded.recovery.is_none(), "{:?}", loaded.recovery);
    assert_eq!(counter(&loaded.pool, "writes"), expected);

    // A reader that lets go while the update waits costs it only the wait.
    let held = std::fs::File::open(store.file()).unwrap();
    let reader = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        drop(held);
    });
    store.update(|p| bump(p, "writes")).unwrap();
    reader.join().unwrap();
    assert_eq!(counter(&store.load().unwrap().pool, "writes"), expected + 1);
    common::assert_no_partial_files(dir.path());
}

/// Child: locks `$AUTH_STORAGE_POOL/held.lock`, says so on stdout and holds the lock until
/// killed (at most 60 s).
#[test]
fn child_lock_holder() {
    if std::env::var(CHILD_ENV).as_deref() != Ok("lock-holder") {
        return;
    }
    let dir = std::path::PathBuf::from(std::env::var("AUTH_STORAGE_POOL").unwrap());
    let _lock = auth_storage::lock::FileLock::acquire(
        &dir.join("held.lock"),
        0o600,
        Duration::from_secs(10),
    )
    .unwrap();
    println!("\nLOCKED");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

/// A lock file locked by another process (`flock` on Unix, `LockFileEx` on Windows) keeps
/// this one out, and killing the holder (SIGKILL, `TerminateProcess`) releases it: the OS
/// drops the locks of a dead process, so a crashed writer never blocks the others.
#[test]
fn a_lock_held_by_another_process_excludes_and_dies_with_it() {
    use auth_storage::lock::FileLock;
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("held.lock");
    let mut child = spawn_child(
        "child_lock_holder",
        "lock-holder",
        dir.path(),
        Stdio::piped(),
    );
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Bounded: the child exits (and stdout ends) within 60 s whatever happens.
    let locked = lines.any(|l| l.is_ok_and(|l| l.trim() == "LOCKED"));
    let excluded = FileLock::try_acquire(&path, 0o600).unwrap().is_none();
    let waited = FileLock::acquire(&path, 0o600, Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(locked, "the child never took the lock");
    assert!(excluded, "a lock another process holds was granted");
    assert!(
        matches!(waited, Err(auth_storage::StorageError::LockTimeout { .. })),
        "{waited:?}"
    );
    // Windows releases a dead process's locks soon, not necessarily at once: wait a little.
    let started = Instant::now();
    FileLock::acquire(&path, 0o600, Duration::from_secs(10)).unwrap();
    let _ = writeln!(
        std::io::stderr(),
        "lock released {:?} after its holder was killed",
        started.elapsed()
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
