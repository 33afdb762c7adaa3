//! The keyring backend against a real Windows Credential Manager (here: Wine's, which keeps
//! generic credentials in the prefix's registry through the same `CredWriteW`/`CredReadW`
//! calls): a login is stored, read back, replaced and deleted under the names the Codex CLI
//! uses; a login bigger than an entry holds is refused with a typed error, and `auto` keeps
//! it in `auth.json`.
//!
//! Windows only; elsewhere the tests say so with a `SKIP:` line. Each test uses a Codex home
//! of its own (a temporary directory), so its keyring account is unique and parallel tests
//! and earlier runs do not meet.
#![cfg(feature = "keyring")]

mod common;

#[cfg(windows)]
mod windows {
    use std::sync::Arc;

    use auth_core::{AuthDocument, Secret, Timestamp};
    use auth_storage::keyring_backend::{
        KeyringBackend, OsKeyring, WINDOWS_CREDENTIAL_MAX_BYTES, windows_credential_size,
    };
    use auth_storage::{
        AutoStore, CodexHome, CredentialStore, FileStore, KEYRING_SERVICE, KeyringStore, Placement,
        StorageError, StoreMode, open_store,
    };

    use super::common::tokens;

    /// A ChatGPT login the size real ones have: the id and access tokens of a real sign-in
    /// are signed JWTs of 1–2 KB each.
    fn real_sized_login() -> AuthDocument {
        let mut login = tokens("big@example.com", "acct-big", "rt-big");
        login.access_token = Secret::new(auth_core::jwt::encode_unsigned_json_for_testing(
            &serde_json::json!({"exp": 4_000_000_000_u64, "scp": vec!["openid"; 150]}),
        ));
        AuthDocument::chatgpt(login, Timestamp::now())
    }

    fn compact_size(doc: &AuthDocument) -> usize {
        windows_credential_size(&serde_json::to_string(doc).unwrap())
    }

    /// Store, read, replace and delete a login through the real Credential Manager, under
    /// the target name the Codex CLI's `keyring` (3.6.3) gives it: `<account>.<service>`.
    #[test]
    fn a_login_round_trips_through_the_credential_manager_under_the_cli_names() {
        let dir = tempfile::tempdir().unwrap();
        let home = CodexHome::new(dir.path());
        let account = home.keyring_account();
        std::fs::write(home.auth_file(), b"{}").unwrap();
        let store = KeyringStore::new(home.clone(), Arc::new(OsKeyring));
        assert!(store.load().unwrap().is_none(), "a fresh account is empty");

        let first = AuthDocument::api_key(Secret::new("sk-credman-1".into()));
        store.save(&first).unwrap();
        assert!(
            !home.auth_file().exists(),
            "auth.json removed, as the CLI does"
        );
        assert_eq!(store.load().unwrap().unwrap(), first);

        // The credential is where the CLI looks: target `<account>.<service>`, the value the
        // compact JSON document as UTF-16.
        let target = format!("{account}.{KEYRING_SERVICE}");
        let by_target =
            keyring::Entry::new_with_target(&target, "any service", "any user").unwrap();
        assert_eq!(
            by_target.get_password().unwrap(),
            serde_json::to_string(&first).unwrap()
        );
        let attributes = keyring::Entry::new(KEYRING_SERVICE, &account)
            .unwrap()
            .get_attributes()
            .unwrap();
        assert_eq!(attributes.get("username"), Some(&account), "{attributes:?}");
        assert_eq!(
            attributes.get("comment").map(String::as_str),
            Some("keyring v3.6.3"),
            "{attributes:?}"
        );

        // A second save replaces the one entry.
        let second = AuthDocument::api_key(Secret::new("sk-credman-2".into()));
        store.save(&second).unwrap();
        assert_eq!(store.load().unwrap().unwrap(), second);

        assert!(store.delete().unwrap());
        assert!(store.load().unwrap().is_none());
        assert!(!store.delete().unwrap(), "nothing left to delete");
        assert!(matches!(
            by_target.get_password(),
            Err(keyring::Error::NoEntry)
        ));
    }

    /// The backend alone: values up to the limit (1280 UTF-16 code units, non-ASCII counted
    /// as UTF-16 too) are kept exactly; one unit more is refused with the sizes, nothing
    /// stored.
    #[test]
    fn the_credential_manager_holds_up_to_its_limit_and_refuses_more_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let account = CodexHome::new(dir.path()).keyring_account();
        let backend = OsKeyring;
        let units = WINDOWS_CREDENTIAL_MAX_BYTES / 2;
        // 'é' is one UTF-16 unit (two UTF-8 bytes), '😀' two units.
        let fits = format!("{}é😀", "x".repeat(units - 3));
        assert_eq!(windows_credential_size(&fits), WINDOWS_CREDENTIAL_MAX_BYTES);
        backend.save(KEYRING_SERVICE, &account, &fits).unwrap();
        assert_eq!(
            backend.load(KEYRING_SERVICE, &account).unwrap().as_deref(),
            Some(fits.as_str())
        );

        let over = format!("{fits}x");
        let failure = backend.save(KEYRING_SERVICE, &account, &over).unwrap_err();
        let too_large = failure.too_large.expect("refused for its size");
        assert_eq!(
            (too_large.size, too_large.limit),
            (
                WINDOWS_CREDENTIAL_MAX_BYTES + 2,
                WINDOWS_CREDENTIAL_MAX_BYTES
            )
        );
        assert!(!failure.message.contains("xxxx"), "{}", failure.message);
        assert_eq!(
            backend.load(KEYRING_SERVICE, &account).unwrap().as_deref(),
            Some(fits.as_str()),
            "the refused value replaced nothing"
        );
        assert!(backend.delete(KEYRING_SERVICE, &account).unwrap());
    }

    /// A real-sized ChatGPT login does not fit: keyring mode refuses it with
    /// `KeyringValueTooLarge` and writes nothing; `auto` keeps it in `auth.json` and says
    /// why, as the CLI's auto mode does; `open_store` picks the same stores.
    #[test]
    fn a_real_sized_login_is_refused_by_keyring_mode_and_auto_keeps_it_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let home = CodexHome::new(dir.path());
        let login = real_sized_login();
        let size = compact_size(&login);
        assert!(size > WINDOWS_CREDENTIAL_MAX_BYTES, "{size}");

        let keyring = open_store(home.clone(), StoreMode::Keyring).unwrap();
        let err = keyring.save(&login).unwrap_err();
        assert!(
            matches!(
                &err,
                StorageError::KeyringValueTooLarge { size: s, limit, .. }
                    if *s == size && *limit == WINDOWS_CREDENTIAL_MAX_BYTES
            ),
            "{err:?}"
        );
        assert!(keyring.load().unwrap().is_none());
        assert!(!home.auth_file().exists());

        let auto = AutoStore::new(home.clone(), Arc::new(OsKeyring));
        let placement = auto.save_reporting(&login, &home.lock().unwrap()).unwrap();
        assert!(
            matches!(&placement, Placement::FileFallback { keyring_error } if keyring_error.contains("2560")),
            "{placement:?}"
        );
        assert_eq!(FileStore::new(home.clone()).load().unwrap().unwrap(), login);
        let (loaded, from) = auto.load_reporting().unwrap();
        assert_eq!(loaded.unwrap(), login);
        assert_eq!(
            from,
            Placement::File,
            "the keyring is reachable, just empty"
        );

        // An API-key login fits, goes to the keyring and the file is removed.
        let small = AuthDocument::api_key(Secret::new("sk-fits".into()));
        let auto = open_store(home.clone(), StoreMode::Auto).unwrap();
        auto.save(&small).unwrap();
        assert!(!home.auth_file().exists());
        assert_eq!(keyring.load().unwrap().unwrap(), small);
        assert!(auto.delete().unwrap());
        assert!(keyring.load().unwrap().is_none());
    }
}

#[cfg(not(windows))]
#[test]
fn windows_credential_manager() {
    common::skip(
        "windows_credential_manager",
        "Windows Credential Manager exists only on Windows (run the Windows test build, e.g. \
         under Wine with .ci/windows-tests)",
    );
}
