//! Real files that are not what they should be: FIFOs, sockets, devices, directories,
//! symlinks and oversized sparse files where `auth.json`, `pool.json`, a backup or a lock
//! file is expected; and the modes of everything the stores create. Every operation that
//! could block runs on a thread with a deadline.
//!
//! On Windows the kinds a plain path can hold there are planted (a directory, an oversized
//! file); the cases about FIFOs, sockets, devices, symlinks and modes are Unix only and say
//! so with a `SKIP:` line (`unix_only_cases`).

mod common;

#[cfg(unix)]
use std::os::unix::fs::PermissionsExt as _;
#[cfg(unix)]
use std::path::{Path, PathBuf};

use auth_core::regular_file::AUTH_JSON_MAX_BYTES;
#[cfg(unix)]
use auth_core::regular_file::FileKind;
use auth_core::{AuthDocument, Secret};
use auth_storage::pool::{Account, POOL_FILE_MAX_BYTES};
use auth_storage::{CodexHome, CredentialStore, FileStore, PoolStore, StorageError};
use common::hostile::{Planted, bounded};
use common::tokens;

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn api_key_doc() -> AuthDocument {
    AuthDocument::api_key(Secret::new("sk-hostile-test".into()))
}

fn account(email: &str, id: &str) -> Account {
    Account::from_login(tokens(email, id, &format!("rt-{id}")), None, 1_700_000_000)
}

#[test]
fn auth_json_that_is_not_a_regular_file_is_refused_at_once_and_left_alone() {
    for planted in Planted::all(AUTH_JSON_MAX_BYTES) {
        let dir = tempfile::tempdir().unwrap();
        let home = CodexHome::new(dir.path());
        let _guard = planted.plant(&home.auth_file());
        let store = FileStore::new(home.clone());
        let err = bounded("FileStore::load", move || store.load().unwrap_err());
        assert!(planted.refused_by(&err), "{planted:?}: {err:?}");
        assert!(
            err.to_string()
                .contains(&*home.auth_file().to_string_lossy()),
            "names the path: {err}"
        );
        if !matches!(planted, Planted::Oversized(_)) {
            let store = FileStore::new(home.clone());
            let err = bounded("FileStore::save", move || {
                store.save(&api_key_doc()).unwrap_err()
            });
            assert!(planted.refused_by(&err), "save {planted:?}: {err:?}");
        }
        assert!(planted.still_there(&home.auth_file()), "{planted:?}");
    }
}

#[test]
fn pool_json_that_is_not_a_regular_file_is_refused_and_nothing_is_written() {
    for planted in Planted::all(POOL_FILE_MAX_BYTES) {
        let dir = tempfile::tempdir().unwrap();
        let store = PoolStore::new(dir.path());
        let _guard = planted.plant(&store.file());
        let s = store.clone();
        let err = bounded("PoolStore::load", move || s.load().unwrap_err());
        assert!(planted.refused_by(&err), "{planted:?}: {err:?}");
        let s = store.clone();
        let err = bounded("PoolStore::update", move || {
            s.update(|p| p.upsert(account("a@example.com", "acct-a")))
                .unwrap_err()
        });
        assert!(planted.refused_by(&err), "update {planted:?}: {err:?}");
        assert!(planted.still_there(&store.file()), "{planted:?}");
        assert!(
            store.backups_newest_first().unwrap().is_empty(),
            "{planted:?}"
        );
    }
}

#[test]
fn a_hostile_backup_is_skipped_without_blocking() {
    for planted in Planted::all(POOL_FILE_MAX_BYTES) {
        let dir = tempfile::tempdir().unwrap();
        let store = PoolStore::new(dir.path());
        store
            .update(|p| p.upsert(account("a@example.com", "acct-a")))
            .unwrap();
        // The newest "backup" is hostile; pool.json is gone: recovery must skip it and
        // restore the real backup (revision 1).
        let _guard = planted.plant(&dir.path().join("pool.json.bak-000000000099"));
        std::fs::remove_file(store.file()).unwrap();
        let s = store.clone();
        let loaded = bounded("PoolStore::load", move || s.load().unwrap());
        assert_eq!(loaded.pool.accounts.len(), 1, "{planted:?}");
        let backup = loaded.recovery.unwrap().backup.unwrap();
        assert!(backup.ends_with("pool.json.bak-000000000001"), "{backup:?}");
    }
}

#[test]
fn lock_files_that_are_not_regular_files_are_refused() {
    let kinds = [
        #[cfg(unix)]
        Planted::Fifo,
        #[cfg(unix)]
        Planted::DevZeroLink,
        Planted::Directory,
    ];
    for planted in kinds {
        let dir = tempfile::tempdir().unwrap();
        let store = PoolStore::new(dir.path());
        let _guard = planted.plant(&dir.path().join("pool.lock"));
        let err = bounded("PoolStore::update", move || {
            store
                .update(|p| p.upsert(account("a@example.com", "acct-a")))
                .unwrap_err()
        });
        assert!(planted.refused_by(&err), "pool.lock {planted:?}: {err:?}");

        let home = CodexHome::new(dir.path().join("home"));
        std::fs::create_dir(home.dir()).unwrap();
        let _guard = planted.plant(&home.file_lock_file());
        let store = FileStore::new(home.clone());
        let err = bounded("FileStore::save", move || {
            store.save(&api_key_doc()).unwrap_err()
        });
        assert!(
            planted.refused_by(&err),
            "auth.json.lock {planted:?}: {err:?}"
        );
        assert!(!home.auth_file().exists());
    }
}

#[cfg(unix)]
#[test]
fn a_symlinked_auth_json_is_followed_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("dotfiles");
    std::fs::create_dir(&elsewhere).unwrap();
    let real = elsewhere.join("codex-auth.json");
    let home = CodexHome::new(dir.path().join("home"));
    std::fs::create_dir(home.dir()).unwrap();
    std::os::unix::fs::symlink("../dotfiles/codex-auth.json", home.auth_file()).unwrap();
    let store = FileStore::new(home.clone());
    assert!(
        store.load().unwrap().is_none(),
        "a dangling link is no login"
    );
    store.save(&api_key_doc()).unwrap();
    store.save(&api_key_doc()).unwrap();
    let link = std::fs::symlink_metadata(home.auth_file()).unwrap();
    assert!(link.file_type().is_symlink(), "the link is kept");
    assert_eq!(mode(&real), 0o600);
    let back = store.load().unwrap().unwrap();
    assert_eq!(back.openai_api_key.unwrap().expose(), "sk-hostile-test");
    // No temporary file is left in either directory.
    for d in [home.dir(), elsewhere.as_path()] {
        let stray: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with(".auth-"))
            .collect();
        assert!(stray.is_empty(), "{stray:?}");
    }
}

#[cfg(unix)]
#[test]
fn a_symlinked_pool_json_is_followed_and_backups_are_real_files() {
    let dir = tempfile::tempdir().unwrap();
    let pool_dir = dir.path().join("pool");
    std::fs::create_dir(&pool_dir).unwrap();
    let real = dir.path().join("synced/pool.json");
    std::fs::create_dir(real.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&real, pool_dir.join("pool.json")).unwrap();
    let store = PoolStore::new(&pool_dir);
    store
        .update(|p| p.upsert(account("a@example.com", "acct-a")))
        .unwrap();
    store
        .update(|p| p.upsert(account("b@example.com", "acct-b")))
        .unwrap();
    assert!(
        std::fs::symlink_metadata(store.file())
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(mode(&real), 0o600);
    let backups = store.backups_newest_first().unwrap();
    assert_eq!(backups.len(), 2, "{backups:?}");
    for b in &backups {
        let meta = std::fs::symlink_metadata(b).unwrap();
        assert!(meta.file_type().is_file(), "{b:?} is a real file");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{b:?}");
    }
    // The older backup still holds revision 1 (one account), whatever the link points at now.
    // (By email: a stable account id, `acct-` and 16 random hex digits, can contain
    // "acct-b" too.)
    let old = std::fs::read_to_string(&backups[1]).unwrap();
    assert!(old.contains("a@example.com") && !old.contains("b@example.com"));
    assert_eq!(store.load().unwrap().pool.accounts.len(), 2);
}

#[cfg(unix)]
#[test]
fn a_loose_pool_json_never_leaves_a_loose_backup() {
    let dir = tempfile::tempdir().unwrap();
    let store = PoolStore::new(dir.path());
    store
        .update(|p| p.upsert(account("a@example.com", "acct-a")))
        .unwrap();
    // Someone loosened the pool file and one of its backups.
    std::fs::set_permissions(store.file(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let first = store.backups_newest_first().unwrap()[0].clone();
    assert_eq!(mode(&first), 0o644, "a hard link shares the mode");
    store
        .update(|p| p.upsert(account("b@example.com", "acct-b")))
        .unwrap();
    assert_eq!(mode(&store.file()), 0o600);
    let backups = store.backups_newest_first().unwrap();
    assert_eq!(backups.len(), 2);
    for b in &backups {
        assert_eq!(mode(b), 0o600, "{b:?}");
    }
}

#[cfg(unix)]
#[test]
fn directories_the_stores_create_are_private_and_existing_ones_are_left_alone() {
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let pool_dir = base.path().join("a/b/pool");
    PoolStore::new(&pool_dir)
        .update(|p| p.upsert(account("a@example.com", "acct-a")))
        .unwrap();
    let home = CodexHome::new(base.path().join("c/codex-home"));
    FileStore::new(home.clone()).save(&api_key_doc()).unwrap();
    for d in ["a", "a/b", "a/b/pool", "c", "c/codex-home"] {
        assert_eq!(mode(&base.path().join(d)), 0o700, "{d}");
    }
    assert_eq!(
        mode(base.path()),
        0o755,
        "an existing directory keeps its mode"
    );
    assert_eq!(mode(&home.auth_file()), 0o600);
    assert_eq!(mode(&pool_dir.join("pool.json")), 0o600);
    assert_eq!(mode(&pool_dir.join("pool.lock")), 0o600);
}

#[cfg(unix)]
const UMASK_CHILD: &str = "AUTH_STORAGE_TEST_UMASK_CHILD";

/// Run the stores with umask 000 in a child process (the umask is per process, so it is
/// not changed under the other tests running in this one).
#[cfg(unix)]
#[test]
fn an_open_umask_loosens_nothing() {
    let exe = std::env::current_exe().unwrap();
    let out = bounded("umask child", move || {
        std::process::Command::new("sh")
            .arg("-c")
            .arg("umask 000 && exec \"$0\" --exact umask_child --nocapture --test-threads 1")
            .arg(exe)
            .env(UMASK_CHILD, "1")
            .output()
            .unwrap()
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(unix)]
#[test]
fn umask_child() {
    if std::env::var_os(UMASK_CHILD).is_none() {
        return;
    }
    let base = tempfile::tempdir().unwrap();
    // The umask really is open here.
    let probe = base.path().join("probe");
    std::fs::write(&probe, b"").unwrap();
    assert_eq!(mode(&probe), 0o666);
    let pool = PoolStore::new(base.path().join("x/pool"));
    pool.update(|p| p.upsert(account("a@example.com", "acct-a")))
        .unwrap();
    pool.update(|p| p.upsert(account("b@example.com", "acct-b")))
        .unwrap();
    let home = CodexHome::new(base.path().join("y/home"));
    FileStore::new(home.clone()).save(&api_key_doc()).unwrap();
    let mut files: Vec<PathBuf> = vec![pool.file(), pool.dir().join("pool.lock"), home.auth_file()];
    files.extend(pool.backups_newest_first().unwrap());
    for f in &files {
        assert_eq!(mode(f), 0o600, "{f:?}");
    }
    for d in ["x", "x/pool", "y", "y/home"] {
        assert_eq!(mode(&base.path().join(d)), 0o700, "{d}");
    }
    // auth.lock is created like the Codex CLI creates it (0644 requested): empty, no secret.
    assert_eq!(mode(&home.commit_lock_file()), 0o644);
}

/// The real Codex CLI with a symlinked `auth.json`: it writes through the link (keeping it)
/// and locks `<target>.lock`; we do the same, and each reads what the other wrote.
#[cfg(unix)]
#[test]
fn a_symlinked_auth_json_interoperates_with_the_codex_cli() {
    let Some(codex) =
        common::codex_bin_or_skip("a_symlinked_auth_json_interoperates_with_the_codex_cli")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dot = dir.path().join("dotfiles");
    std::fs::create_dir(&dot).unwrap();
    let home = CodexHome::new(dir.path().join("home"));
    std::fs::create_dir(home.dir()).unwrap();
    std::os::unix::fs::symlink("../dotfiles/auth.json", home.auth_file()).unwrap();
    let store = FileStore::new(home.clone());
    store.save(&api_key_doc()).unwrap();
    assert!(
        dot.join("auth.json.lock").is_file(),
        "we lock where the CLI locks"
    );
    let (code, out) = common::run_codex(&codex, home.dir(), &["login", "status"], None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("API key configured"), "{out}");
    let (code, out) = common::run_codex(
        &codex,
        home.dir(),
        &["login", "--with-api-key"],
        Some("sk-from-the-cli\n"),
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        std::fs::symlink_metadata(home.auth_file())
            .unwrap()
            .file_type()
            .is_symlink(),
        "the CLI kept the link"
    );
    let doc = store.load().unwrap().unwrap();
    assert_eq!(doc.openai_api_key.unwrap().expose(), "sk-from-the-cli");
    assert_eq!(mode(&dot.join("auth.json")), 0o600);
}

#[test]
fn a_directory_named_like_a_backup_never_fails_a_save() {
    let dir = tempfile::tempdir().unwrap();
    let store = PoolStore::new(dir.path()).with_backups(2);
    std::fs::create_dir(dir.path().join("pool.json.bak-000000000099")).unwrap();
    for i in 0..5 {
        let id = format!("acct-{i}");
        store
            .update(|p| p.upsert(account(&format!("{id}@example.com"), &id)))
            .unwrap();
    }
    assert_eq!(store.backups_newest_first().unwrap().len(), 2);
    assert_eq!(store.load().unwrap().pool.accounts.len(), 5);
}

#[cfg(unix)]
#[test]
fn loading_a_loose_pool_json_makes_it_private() {
    let dir = tempfile::tempdir().unwrap();
    let store = PoolStore::new(dir.path());
    store
        .update(|p| p.upsert(account("a@example.com", "acct-a")))
        .unwrap();
    std::fs::set_permissions(store.file(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = std::fs::read(store.file()).unwrap();
    assert_eq!(store.load().unwrap().pool.accounts.len(), 1);
    assert_eq!(mode(&store.file()), 0o600);
    assert_eq!(
        std::fs::read(store.file()).unwrap(),
        before,
        "content untouched"
    );
}

#[cfg(unix)]
#[test]
fn a_damaged_symlinked_pool_json_is_kept_aside_and_the_link_survives_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let pool_dir = dir.path().join("pool");
    let real = dir.path().join("synced/pool.json");
    std::fs::create_dir_all(real.parent().unwrap()).unwrap();
    std::fs::create_dir(&pool_dir).unwrap();
    std::os::unix::fs::symlink(&real, pool_dir.join("pool.json")).unwrap();
    let store = PoolStore::new(&pool_dir);
    store
        .update(|p| p.upsert(account("a@example.com", "acct-a")))
        .unwrap();
    store
        .update(|p| p.extra.insert("k".into(), 1.into()))
        .unwrap();
    // Damaged in place (the newest backup is a link to the same bytes; revision 1 is not).
    std::fs::write(&real, b"{ not json").unwrap();
    store
        .update(|p| p.upsert(account("b@example.com", "acct-b")))
        .unwrap();
    assert!(
        std::fs::symlink_metadata(store.file())
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        store.load().unwrap().pool.accounts.len(),
        2,
        "restored, then added"
    );
    let damaged: Vec<_> = std::fs::read_dir(&pool_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("pool.json.damaged-")
        })
        .collect();
    assert_eq!(damaged.len(), 1, "{damaged:?}");
    assert_eq!(std::fs::read(&damaged[0]).unwrap(), b"{ not json");
    assert_eq!(mode(&damaged[0]), 0o600);
}

#[test]
fn a_hostile_object_in_the_current_backup_slot_is_refused_and_left_alone() {
    for planted in Planted::special() {
        let dir = tempfile::tempdir().unwrap();
        let store = PoolStore::new(dir.path());
        store
            .update(|p| p.upsert(account("a@example.com", "acct-a")))
            .unwrap();
        // The next write links the live revision-1 file into this very slot.
        let slot = dir.path().join("pool.json.bak-000000000001");
        std::fs::remove_file(&slot).unwrap();
        let _guard = planted.plant(&slot);
        let before = std::fs::read(store.file()).unwrap();
        let s = store.clone();
        let err = bounded("PoolStore::update", move || {
            s.update(|p| p.upsert(account("b@example.com", "acct-b")))
                .unwrap_err()
        });
        assert!(
            matches!(&err, StorageError::NotRegularFile { path, .. } if *path == slot),
            "{planted:?}: {err:?}"
        );
        assert!(planted.still_there(&slot), "{planted:?} replaced");
        assert_eq!(std::fs::read(store.file()).unwrap(), before, "{planted:?}");
    }
}

#[cfg(unix)]
#[test]
fn a_symlinked_auth_json_to_a_special_file_creates_no_lock_file_anywhere() {
    for planted in [Planted::Fifo, Planted::Socket, Planted::Directory] {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        let _guard = planted.plant(&target);
        let home = CodexHome::new(dir.path().join("home"));
        std::fs::create_dir(home.dir()).unwrap();
        std::os::unix::fs::symlink(&target, home.auth_file()).unwrap();
        let h = home.clone();
        let err = bounded("CodexHome::lock", move || h.lock().unwrap_err());
        assert!(
            matches!(&err, StorageError::NotRegularFile { path, .. } if *path == home.auth_file()),
            "{planted:?}: {err:?}"
        );
        assert!(!dir.path().join("target.lock").exists(), "{planted:?}");
        assert!(!home.commit_lock_file().exists(), "{planted:?}");
        assert!(planted.still_there(&target), "{planted:?}");
    }
}

#[test]
fn a_switch_refused_for_its_pool_lock_creates_no_lock_file_in_the_home() {
    let dir = tempfile::tempdir().unwrap();
    let pool = PoolStore::new(dir.path().join("pool"));
    pool.update(|p| p.upsert(account("a@example.com", "acct-a")))
        .unwrap();
    let lock = dir.path().join("pool").join("pool.lock");
    std::fs::remove_file(&lock).unwrap();
    #[cfg(unix)]
    let planted = Planted::Fifo;
    #[cfg(not(unix))]
    let planted = Planted::Directory;
    let _guard = planted.plant(&lock);
    let home = CodexHome::new(dir.path().join("home"));
    let store = FileStore::new(home.clone());
    let err = bounded("PoolStore::switch_to", move || {
        pool.switch_to(0, &store, 1_700_000_000).unwrap_err()
    });
    assert!(planted.refused_at(&err, &lock), "{err:?}");
    assert!(!home.dir().exists(), "no Codex home or lock file created");
}

#[cfg(unix)]
#[test]
fn the_reset_marker_is_never_followed() {
    // A dangling symlink at the marker's name: removing the last account must not create
    // its target (outside the pool directory), and the write is refused, nothing changed.
    let dir = tempfile::tempdir().unwrap();
    let pool_dir = dir.path().join("pool");
    let store = PoolStore::new(&pool_dir);
    store
        .update(|p| p.upsert(account("a@example.com", "acct-a")))
        .unwrap();
    let outside = dir.path().join("outside/new/marker");
    std::os::unix::fs::symlink(&outside, pool_dir.join("pool.reset")).unwrap();
    let before = std::fs::read(store.file()).unwrap();
    let err = store.update(|p| p.accounts.clear()).unwrap_err();
    assert!(
        matches!(
            &err,
            StorageError::NotRegularFile {
                kind: FileKind::Symlink,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        !dir.path().join("outside").exists(),
        "the link was followed"
    );
    assert_eq!(std::fs::read(store.file()).unwrap(), before);
}

/// A directory at the reset marker's name is not a marker: losing pool.json still recovers
/// the accounts from the backups.
#[test]
fn a_directory_at_the_reset_marker_name_is_no_marker() {
    let dir = tempfile::tempdir().unwrap();
    let store = PoolStore::new(dir.path());
    for id in ["acct-a", "acct-b"] {
        store
            .update(|p| p.upsert(account(&format!("{id}@example.com"), id)))
            .unwrap();
    }
    std::fs::create_dir(dir.path().join("pool.reset")).unwrap();
    std::fs::remove_file(store.file()).unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(loaded.pool.accounts.len(), 2, "{:?}", loaded.recovery);
}

#[cfg(unix)]
#[test]
fn a_dangling_link_at_the_damaged_file_name_is_never_written_through() {
    // pool.json is a link to a damaged file; the next write keeps a copy of the damaged
    // bytes under `pool.json.damaged-<now>-after-<rev>`. Links planted at the names it may
    // pick must not be followed out of the pool directory.
    let dir = tempfile::tempdir().unwrap();
    let pool_dir = dir.path().join("pool");
    let real = dir.path().join("real");
    std::fs::create_dir_all(&real).unwrap();
    let store = PoolStore::new(&pool_dir);
    store
        .update(|p| p.upsert(account("b@example.com", "acct-b")))
        .unwrap();
    // Now make pool.json a link to a damaged file elsewhere (the backups stay here).
    std::fs::remove_file(pool_dir.join("pool.json")).unwrap();
    std::fs::write(real.join("pool.json"), b"{ damaged").unwrap();
    std::os::unix::fs::symlink(real.join("pool.json"), pool_dir.join("pool.json")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let outside = dir.path().join("outside");
    for t in now..now + 5 {
        for rev in 0..3 {
            std::os::unix::fs::symlink(
                outside.join(format!("{t}-{rev}")),
                pool_dir.join(format!("pool.json.damaged-{t}-after-{rev}")),
            )
            .unwrap();
        }
    }
    store
        .update(|p| p.upsert(account("a@example.com", "acct-a")))
        .unwrap();
    assert!(
        !outside.exists(),
        "a damaged copy was written outside the pool"
    );
    assert!(
        std::fs::symlink_metadata(pool_dir.join("pool.json"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "the pool.json link is kept"
    );
    assert_eq!(store.load().unwrap().pool.accounts.len(), 2);
}

/// The cases above that need what Windows has no plain path for: say so.
#[cfg(not(unix))]
#[test]
fn unix_only_cases() {
    for (test, reason) in [
        (
            "FIFOs, sockets and /dev/zero where a file is expected",
            "Windows keeps pipes and devices outside the file system's directories",
        ),
        (
            "symlinked auth.json, pool.json, reset marker and damaged-file name",
            "creating symlinks on Windows needs a privilege test processes do not have",
        ),
        (
            "file and directory modes, umask",
            "Windows has no Unix permission bits (files get the directory's ACL)",
        ),
    ] {
        common::skip(test, reason);
    }
}
