//! Windows: another program (an anti-virus scanner, the Codex CLI reading it) holds
//! `auth.json` open without `FILE_SHARE_DELETE`, so Windows refuses to rename over it or
//! delete it until that handle closes. A save waits for a holder that lets go within the
//! retry; one held throughout is `StorageError::StillInUse` (delete: `StorageError::Io`
//! saying so), the old file intact and no temporary file left.
//!
//! On Unix an open file never blocks a rename or unlink: SKIP there.

mod common;

#[cfg(windows)]
mod windows {
    use std::fs::{File, OpenOptions};
    use std::os::windows::fs::OpenOptionsExt as _;
    use std::path::Path;
    use std::sync::mpsc;
    use std::time::Duration;

    use auth_core::{AuthDocument, Secret};
    use auth_storage::{CodexHome, CredentialStore, FileStore, StorageError};

    fn hold(path: &Path, share: u32) -> File {
        OpenOptions::new()
            .read(true)
            .share_mode(share)
            .open(path)
            .unwrap()
    }

    fn key(text: &str) -> AuthDocument {
        AuthDocument::api_key(Secret::new(text.into()))
    }

    fn stray_temps(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".auth-"))
            .collect()
    }

    #[test]
    fn a_save_waits_for_a_holder_that_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(CodexHome::new(dir.path()));
        store.save(&key("sk-old")).unwrap();
        let auth = dir.path().join("auth.json");
        let (opened, is_open) = mpsc::channel();
        let holder = std::thread::spawn(move || {
            let file = hold(&auth, 0x1 | 0x2); // read and write shared, delete not
            opened.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(150));
            drop(file);
        });
        is_open.recv_timeout(Duration::from_secs(10)).unwrap();
        store.save(&key("sk-new")).unwrap();
        holder.join().unwrap();
        let back = store.load().unwrap().unwrap();
        assert_eq!(back.openai_api_key.unwrap().expose(), "sk-new");
        assert!(stray_temps(dir.path()).is_empty());
    }

    #[test]
    fn a_save_held_off_throughout_is_still_in_use_and_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(CodexHome::new(dir.path()));
        store.save(&key("sk-old")).unwrap();
        let auth = dir.path().join("auth.json");
        let before = std::fs::read(&auth).unwrap();
        let held = hold(&auth, 0x1 | 0x2);
        let err = store.save(&key("sk-new")).unwrap_err();
        drop(held);
        match &err {
            StorageError::StillInUse { path, attempts, .. } => {
                assert_eq!(path, &auth);
                assert_eq!(*attempts, 10);
            }
            other => panic!("{other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains("auth.json"), "{text}");
        assert!(!text.contains("sk-"), "no secret in the message: {text}");
        assert_eq!(std::fs::read(&auth).unwrap(), before);
        assert!(stray_temps(dir.path()).is_empty());
    }

    #[test]
    fn a_delete_held_off_throughout_says_so_and_keeps_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(CodexHome::new(dir.path()));
        store.save(&key("sk-old")).unwrap();
        let auth = dir.path().join("auth.json");
        let held = hold(&auth, 0);
        let err = store.delete().unwrap_err();
        drop(held);
        assert!(
            matches!(
                err,
                StorageError::Io {
                    action: "remove",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("through 10 attempts"), "{err}");
        assert!(auth.exists());
    }
}

#[cfg(not(windows))]
mod elsewhere {
    const REASON: &str = "an open file never blocks a rename or unlink on this platform";

    #[test]
    fn a_save_waits_for_a_holder_that_lets_go() {
        super::common::skip("a_save_waits_for_a_holder_that_lets_go", REASON);
    }

    #[test]
    fn a_save_held_off_throughout_is_still_in_use_and_keeps_the_old_file() {
        super::common::skip(
            "a_save_held_off_throughout_is_still_in_use_and_keeps_the_old_file",
            REASON,
        );
    }

    #[test]
    fn a_delete_held_off_throughout_says_so_and_keeps_the_file() {
        super::common::skip(
            "a_delete_held_off_throughout_says_so_and_keeps_the_file",
            REASON,
        );
    }
}
