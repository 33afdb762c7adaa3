//! Every log line auth-storage writes — keyring fallbacks of the `auto` store, pool
//! recovery — and the Debug output of its stores, pools and errors carry no token and no
//! full email. The log is captured through a real `tracing` subscriber at TRACE level.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use auth_core::{AuthDocument, Timestamp};
use auth_storage::keyring_backend::MockKeyring;
use auth_storage::pool::Account;
use auth_storage::{AutoStore, CodexHome, CredentialStore, PoolStore};
use common::tokens;

const EMAIL: &str = "hygiene.person@example.com";
const REFRESH: &str = "rt-hygiene-0123456789";

/// A `MakeWriter` appending to a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[test]
fn logs_and_debug_output_hold_no_token_or_email() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(captured.clone())
        .finish();
    let tokens = tokens(EMAIL, "acct-hygiene", REFRESH);
    let secrets = [
        tokens.id_token.expose().to_owned(),
        tokens.access_token.expose().to_owned(),
        REFRESH.to_owned(),
    ];
    let mut debug = String::new();

    tracing::subscriber::with_default(subscriber, || {
        // The auto store with a keyring that is not there: save, load and delete fall back
        // to auth.json, and each fallback is logged.
        let dir = tempfile::tempdir().unwrap();
        let home = CodexHome::new(dir.path().join("home"));
        let keyring = MockKeyring::default();
        keyring.set_failure(Some(MockKeyring::unavailable()));
        let store = AutoStore::new(home, Arc::new(keyring));
        let doc = AuthDocument::chatgpt(tokens.clone(), Timestamp::now());
        store.save(&doc).unwrap();
        let loaded = store.load().unwrap();
        debug.push_str(&format!("{store:?}\n{loaded:?}\n{doc:?}\n"));
        assert!(store.delete().unwrap());

        // A pool whose main file is corrupt: loading recovers from a backup and logs it.
        let pool_dir = dir.path().join("pool");
        let pool = PoolStore::new(&pool_dir);
        for refresh in ["rt-one", REFRESH] {
            let account = Account::from_login(
                common::tokens(EMAIL, "acct-hygiene", refresh),
                None,
                1_700_000_000,
            );
            pool.update(|p| p.upsert(account)).unwrap();
        }
        std::fs::write(pool_dir.join("pool.json"), b"{ not json").unwrap();
        let recovered = pool.load().unwrap();
        assert!(
            recovered.recovery.is_some(),
            "the corrupt pool was not recovered"
        );
        debug.push_str(&format!("{pool:?}\n{:?}\n", recovered.pool));

        // An error (a pool written by a newer version) in Debug and Display.
        let newer_dir = dir.path().join("newer");
        std::fs::create_dir_all(&newer_dir).unwrap();
        // The file names an email: the error must not repeat the file's content.
        let newer = format!("{{\"version\": 999, \"accounts\": [{{\"email\": \"{EMAIL}\"}}]}}");
        std::fs::write(newer_dir.join("pool.json"), newer).unwrap();
        let err = PoolStore::new(&newer_dir).load().err();
        assert!(err.is_some(), "a newer-version pool was accepted");
        debug.push_str(&format!("{err:?}\n"));
        if let Some(err) = err {
            debug.push_str(&format!("{err}\n"));
        }
    });

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    // The capture works: the fallbacks and the recovery were logged.
    assert!(
        log.contains("keyring unusable; saving to auth.json instead"),
        "{log}"
    );
    assert!(
        log.contains("keyring unusable; reading auth.json instead"),
        "{log}"
    );
    assert!(log.contains("restored from backup"), "{log}");
    for (what, text) in [("log", &log), ("Debug output", &debug)] {
        assert!(
            !text.contains(EMAIL),
            "{what} holds the full email:\n{text}"
        );
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{what} holds a token:\n{text}"
            );
        }
    }
}
