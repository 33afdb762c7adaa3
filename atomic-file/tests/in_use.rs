//! A real "file in use" on Windows: another handle holds the target open without
//! `FILE_SHARE_DELETE`, so Windows refuses to rename over it or delete it until that handle
//! closes. Under Wine 8 the rename fails with `ERROR_ACCESS_DENIED` (5), the delete with
//! `ERROR_SHARING_VIOLATION` (32); see `src/retry.rs`.
//!
//! * released after ~150 ms (from another thread): the operation succeeds through the retry
//!   (`attempts > 1` proves the refusal happened) and a reader sees the new bytes;
//! * held past every attempt: the typed [`FileError::StillInUse`] naming the path, the old
//!   content intact and no temporary file left.
//!
//! On Unix an open handle never stops a rename or unlink; these tests print a SKIP line
//! there (the Unix counterpart is `the_unix_mode_ignores_the_umask_and_an_open_file` in
//! tests/replace.rs).

mod common;

#[cfg(windows)]
mod windows {
    use std::fs::{File, OpenOptions};
    use std::os::windows::fs::OpenOptionsExt as _;
    use std::path::Path;
    use std::sync::mpsc;
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use atomic_file::{
        FileError, InUseRetry, ReplaceOptions, read_regular, remove_durably, replace,
    };

    use super::common::entries;

    const FILE_SHARE_READ: u32 = 0x1;
    const FILE_SHARE_WRITE: u32 = 0x2;

    /// The share modes a holder that blocks renames and deletes may use: none at all, and
    /// readers/writers allowed but not deleters.
    const HOLDER_SHARE_MODES: [u32; 2] = [0, FILE_SHARE_READ | FILE_SHARE_WRITE];

    fn hold(path: &Path, share: u32) -> File {
        OpenOptions::new()
            .read(true)
            .share_mode(share)
            .open(path)
            .unwrap()
    }

    /// Opens `path` with `share` on another thread, holds it for `for_how_long`, then
    /// closes it. Returns once the handle is open.
    fn hold_from_another_thread(path: &Path, share: u32, for_how_long: Duration) -> JoinHandle<()> {
        let (opened, is_open) = mpsc::channel();
        let path = path.to_path_buf();
        let holder = std::thread::spawn(move || {
            let file = hold(&path, share);
            opened.send(()).unwrap();
            std::thread::sleep(for_how_long);
            drop(file);
        });
        is_open.recv_timeout(Duration::from_secs(10)).unwrap();
        holder
    }

    fn options() -> ReplaceOptions {
        ReplaceOptions::new(".test-")
    }

    #[test]
    fn a_replace_waits_for_a_holder_that_lets_go() {
        for share in HOLDER_SHARE_MODES {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("auth.json");
            std::fs::write(&path, b"old").unwrap();
            let holder = hold_from_another_thread(&path, share, Duration::from_millis(150));
            let started = Instant::now();
            let done = replace(&path, b"new", &options()).unwrap();
            let waited = started.elapsed();
            holder.join().unwrap();
            assert!(
                done.attempts > 1,
                "share {share:#x}: the first rename must have been refused (attempts {})",
                done.attempts
            );
            assert!(
                waited >= Duration::from_millis(100),
                "share {share:#x}: {waited:?}"
            );
            assert_eq!(read_regular(&path, 1024).unwrap().unwrap(), b"new");
            assert_eq!(entries(dir.path()), ["auth.json"], "share {share:#x}");
        }
    }

    #[test]
    fn a_holder_that_never_lets_go_gets_a_typed_still_in_use_error() {
        for share in HOLDER_SHARE_MODES {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("auth.json");
            std::fs::write(&path, b"old").unwrap();
            let held = hold(&path, share);
            let retry = InUseRetry::default();
            let started = Instant::now();
            let err = replace(&path, b"new", &options().retry(retry)).unwrap_err();
            let waited = started.elapsed();
            drop(held);
            let shown = err.to_string();
            match &err {
                FileError::StillInUse {
                    action,
                    path: named,
                    attempts,
                    source,
                } => {
                    assert_eq!(*action, "replace");
                    assert_eq!(named, &path);
                    assert_eq!(*attempts, retry.attempts());
                    assert!(
                        matches!(source.raw_os_error(), Some(5 | 32 | 33)),
                        "share {share:#x}: the OS cause is kept: {source:?}"
                    );
                }
                other => panic!("share {share:#x}: {other:?}"),
            }
            assert!(shown.contains("auth.json"), "{shown}");
            assert!(shown.contains("10 attempts"), "{shown}");
            assert!(std::error::Error::source(&err).is_some());
            assert!(waited >= retry.max_total_wait(), "{waited:?}");
            assert_eq!(std::fs::read(&path).unwrap(), b"old", "old content intact");
            assert_eq!(entries(dir.path()), ["auth.json"], "no temporary file left");
        }
    }

    #[test]
    fn without_a_retry_the_first_refusal_is_final() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, b"old").unwrap();
        let held = hold(&path, 0);
        let err = replace(&path, b"new", &options().retry(InUseRetry::none())).unwrap_err();
        drop(held);
        assert!(
            matches!(err, FileError::StillInUse { attempts: 1, .. }),
            "{err:?}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(entries(dir.path()), ["config.toml"]);
    }

    fn set_read_only(path: &Path, read_only: bool) {
        let mut permissions = std::fs::metadata(path).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)] // Windows: clears the attribute
        permissions.set_readonly(read_only);
        std::fs::set_permissions(path, permissions).unwrap();
    }

    /// Windows answers "access denied" for a read-only file as for one in use; waiting
    /// does not cure that, so it is refused at once and called what it is.
    #[test]
    fn a_read_only_target_is_not_mistaken_for_one_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        std::fs::write(&path, b"old").unwrap();
        set_read_only(&path, true);
        // Held as well, so that even Wine (which renames over a read-only file) refuses.
        let held = hold(&path, 0);
        let started = Instant::now();
        let err = replace(&path, b"new", &options()).unwrap_err();
        let waited = started.elapsed();
        drop(held);
        assert!(
            matches!(
                err,
                FileError::Io {
                    action: "replace the read-only file",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("read-only file"), "{err}");
        assert!(
            waited < InUseRetry::default().max_total_wait(),
            "no retry: {waited:?}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(entries(dir.path()), ["auth.json"]);

        let err = remove_durably(&path, InUseRetry::default()).unwrap_err();
        assert!(
            matches!(
                err,
                FileError::Io {
                    action: "remove the read-only file",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(path.exists());
        set_read_only(&path, false);
    }

    #[test]
    fn a_removal_waits_for_a_holder_that_lets_go() {
        for share in HOLDER_SHARE_MODES {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("config.toml.revert.json");
            std::fs::write(&path, b"{}").unwrap();
            let holder = hold_from_another_thread(&path, share, Duration::from_millis(150));
            let removed = remove_durably(&path, InUseRetry::default()).unwrap();
            holder.join().unwrap();
            assert!(removed.existed);
            assert!(
                removed.attempts > 1,
                "share {share:#x}: {}",
                removed.attempts
            );
            assert!(!path.exists());
        }
    }

    #[test]
    fn a_removal_held_past_every_attempt_is_still_in_use_and_keeps_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml.revert.json");
        std::fs::write(&path, b"{}").unwrap();
        let held = hold(&path, 0);
        let retry = InUseRetry::new(3, Duration::from_millis(10));
        let err = remove_durably(&path, retry).unwrap_err();
        drop(held);
        match &err {
            FileError::StillInUse {
                action: "remove",
                path: named,
                attempts: 3,
                source,
            } => {
                assert_eq!(named, &path);
                assert!(
                    matches!(source.raw_os_error(), Some(5 | 32 | 33)),
                    "{source:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().starts_with("could not remove "), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
    }
}

#[cfg(not(windows))]
mod elsewhere {
    use super::common::skip;

    const REASON: &str = "an open handle never blocks a rename or unlink on this platform";

    #[test]
    fn a_replace_waits_for_a_holder_that_lets_go() {
        skip("a_replace_waits_for_a_holder_that_lets_go", REASON);
    }

    #[test]
    fn a_holder_that_never_lets_go_gets_a_typed_still_in_use_error() {
        skip(
            "a_holder_that_never_lets_go_gets_a_typed_still_in_use_error",
            REASON,
        );
    }

    #[test]
    fn without_a_retry_the_first_refusal_is_final() {
        skip("without_a_retry_the_first_refusal_is_final", REASON);
    }

    #[test]
    fn a_read_only_target_is_not_mistaken_for_one_in_use() {
        skip("a_read_only_target_is_not_mistaken_for_one_in_use", REASON);
    }

    #[test]
    fn a_removal_waits_for_a_holder_that_lets_go() {
        skip("a_removal_waits_for_a_holder_that_lets_go", REASON);
    }

    #[test]
    fn a_removal_held_past_every_attempt_is_still_in_use_and_keeps_the_file() {
        skip(
            "a_removal_held_past_every_attempt_is_still_in_use_and_keeps_the_file",
            REASON,
        );
    }
}
