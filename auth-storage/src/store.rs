//! Single-login credential stores that read and write what the Codex CLI reads and writes.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use auth_core::AuthDocument;

use crate::atomic::{read_if_exists, remove_if_exists, write_atomic};
use crate::codex_home::{AUTH_TEMP_PREFIX, CodexHome, CommitGuard, KEYRING_SERVICE};
use crate::error::{Result, StorageError};
use crate::keyring_backend::KeyringBackend;
use crate::mode::StoreMode;

/// Load, save and delete the Codex auth document of one Codex home.
///
/// Writers must hold the home's [`CommitGuard`] (the Codex CLI's `auth.lock` +
/// `auth.json.lock`); [`save`](Self::save) and [`delete`](Self::delete) take it for you,
/// the `_locked` variants let you keep it across a load → decide → save sequence (see
/// [`CodexHome::lock`]). Loads take no lock: every write is atomic.
///
/// All methods block; call them from `spawn_blocking` in async code.
///
/// ```
/// use auth_storage::{CodexHome, CredentialStore, FileStore};
/// use auth_core::{AuthDocument, Secret};
/// # fn main() -> Result<(), auth_storage::StorageError> {
/// let dir = tempfile::tempdir().unwrap();
/// let store = FileStore::new(CodexHome::new(dir.path()));
/// store.save(&AuthDocument::api_key(Secret::new("sk-test".into())))?;
/// let back = store.load()?.expect("saved");
/// assert_eq!(back.openai_api_key.unwrap().expose(), "sk-test");
/// assert!(store.delete()?);
/// # Ok(()) }
/// ```
pub trait CredentialStore: fmt::Debug + Send + Sync {
    /// The Codex home this store belongs to.
    fn home(&self) -> &CodexHome;

    /// Where this store keeps the login, as a [`StoreMode`] (so another process can open
    /// the same store for the same home). Stores outside this crate answer `File` unless
    /// they say otherwise.
    fn mode(&self) -> StoreMode {
        StoreMode::File
    }

    /// The stored document, `None` when there is none.
    fn load(&self) -> Result<Option<AuthDocument>>;

    /// Store `doc`, replacing what was there. The caller holds the commit lock.
    fn save_locked(&self, doc: &AuthDocument, guard: &CommitGuard) -> Result<()>;

    /// Remove the stored document; `Ok(false)` when there was none. The caller holds the
    /// commit lock.
    fn delete_locked(&self, guard: &CommitGuard) -> Result<bool>;

    /// Take the commit lock and store `doc`.
    fn save(&self, doc: &AuthDocument) -> Result<()> {
        let guard = self.home().lock()?;
        self.save_locked(doc, &guard)
    }

    /// Take the commit lock and remove the stored document.
    fn delete(&self) -> Result<bool> {
        let guard = self.home().lock()?;
        self.delete_locked(&guard)
    }
}

/// `$CODEX_HOME/auth.json`, byte-compatible with the Codex CLI: pretty JSON (two spaces, no
/// trailing newline), mode 0600, replaced atomically through a `.auth-XXXXXX` temp file.
///
/// `auth.json` must be a regular file of at most
/// [`AUTH_JSON_MAX_BYTES`](auth_core::regular_file::AUTH_JSON_MAX_BYTES): a FIFO, socket,
/// device or directory there (or a symlink to one) is refused with
/// [`StorageError::NotRegularFile`] without blocking, a bigger file with
/// [`StorageError::FileTooLarge`]. A symlinked `auth.json` is followed and kept: saves
/// replace its target atomically in the target's directory (the Codex CLI writes through
/// the link too); [`delete`](CredentialStore::delete) removes the link itself, as the CLI.
#[derive(Debug, Clone)]
pub struct FileStore {
    home: CodexHome,
}

impl FileStore {
    /// The file store of `home`.
    pub fn new(home: CodexHome) -> Self {
        Self { home }
    }
}

fn parse_auth(bytes: &[u8], path: PathBuf) -> Result<AuthDocument> {
    AuthDocument::from_json_slice(bytes).map_err(|source| StorageError::AuthFile { path, source })
}

impl CredentialStore for FileStore {
    fn home(&self) -> &CodexHome {
        &self.home
    }

    fn load(&self) -> Result<Option<AuthDocument>> {
        let path = self.home.auth_file();
        read_if_exists(&path, auth_core::regular_file::AUTH_JSON_MAX_BYTES)?
            .map(|bytes| parse_auth(&bytes, path))
            .transpose()
    }

    fn save_locked(&self, doc: &AuthDocument, _guard: &CommitGuard) -> Result<()> {
        write_atomic(
            &self.home.auth_file(),
            doc.to_json_pretty().as_bytes(),
            AUTH_TEMP_PREFIX,
        )
    }

    fn delete_locked(&self, _guard: &CommitGuard) -> Result<bool> {
        remove_if_exists(&self.home.auth_file())
    }
}

/// The OS keyring, under service `Codex Auth` and account `cli|<16 hex>` (see
/// [`CodexHome::keyring_account`]) — where the Codex CLI looks with
/// `cli_auth_credentials_store = "keyring"`. The value is the compact JSON document.
///
/// A document bigger than the keyring holds (on Windows a ChatGPT login usually is; see
/// [`OsKeyring`](crate::keyring_backend)) is refused with
/// [`StorageError::KeyringValueTooLarge`], nothing written; [`AutoStore`] then keeps it in
/// `auth.json`, as the CLI's `auto` mode does.
///
/// Like the CLI, a successful save removes the `auth.json` fallback file so a stale file
/// cannot shadow the keyring, and delete removes both.
#[derive(Debug, Clone)]
pub struct KeyringStore {
    home: CodexHome,
    backend: Arc<dyn KeyringBackend>,
}

impl KeyringStore {
    /// A keyring store for `home` on `backend` ([`OsKeyring`](crate::keyring_backend::OsKeyring)
    /// for the real one, [`MockKeyring`](crate::keyring_backend::MockKeyring) in tests).
    pub fn new(home: CodexHome, backend: Arc<dyn KeyringBackend>) -> Self {
        Self { home, backend }
    }

    fn failure(
        &self,
        action: &'static str,
        f: crate::keyring_backend::KeyringFailure,
    ) -> StorageError {
        if let Some(too_large) = f.too_large {
            return StorageError::KeyringValueTooLarge {
                service: KEYRING_SERVICE.to_owned(),
                account: self.home.keyring_account(),
                size: too_large.size,
                limit: too_large.limit,
            };
        }
        StorageError::Keyring {
            action,
            service: KEYRING_SERVICE.to_owned(),
            account: self.home.keyring_account(),
            detail: f.message,
        }
    }

    fn load_inner(&self) -> std::result::Result<Option<AuthDocument>, KeyringOutcome> {
        let account = self.home.keyring_account();
        match self.backend.load(KEYRING_SERVICE, &account) {
            Ok(None) => Ok(None),
            Ok(Some(text)) => parse_auth(
                text.as_bytes(),
                PathBuf::from(format!("keyring:{KEYRING_SERVICE}/{account}")),
            )
            .map(Some)
            .map_err(KeyringOutcome::Fatal),
            Err(f) => Err(KeyringOutcome::Failed(self.failure("read", f))),
        }
    }

    fn save_inner(&self, doc: &AuthDocument) -> std::result::Result<(), KeyringOutcome> {
        let text = serde_json::to_string(doc).map_err(|e| {
            KeyringOutcome::Fatal(StorageError::Serialize {
                what: "the auth document",
                detail: e.to_string(),
            })
        })?;
        self.backend
            .save(KEYRING_SERVICE, &self.home.keyring_account(), &text)
            .map_err(|f| KeyringOutcome::Failed(self.failure("write", f)))?;
        if let Err(err) = remove_if_exists(&self.home.auth_file()) {
            tracing::warn!(%err, "saved to the keyring but could not remove the auth.json fallback");
        }
        Ok(())
    }
}

/// A keyring failure (fall back in auto mode) vs. a problem with the data itself.
enum KeyringOutcome {
    Failed(StorageError),
    Fatal(StorageError),
}

impl From<KeyringOutcome> for StorageError {
    fn from(o: KeyringOutcome) -> Self {
        match o {
            KeyringOutcome::Failed(e) | KeyringOutcome::Fatal(e) => e,
        }
    }
}

impl CredentialStore for KeyringStore {
    fn mode(&self) -> StoreMode {
        StoreMode::Keyring
    }

    fn home(&self) -> &CodexHome {
        &self.home
    }

    fn load(&self) -> Result<Option<AuthDocument>> {
        Ok(self.load_inner()?)
    }

    fn save_locked(&self, doc: &AuthDocument, _guard: &CommitGuard) -> Result<()> {
        Ok(self.save_inner(doc)?)
    }

    fn delete_locked(&self, _guard: &CommitGuard) -> Result<bool> {
        let removed = self
            .backend
            .delete(KEYRING_SERVICE, &self.home.keyring_account())
            .map_err(|f| self.failure("delete", f))?;
        let file_removed = remove_if_exists(&self.home.auth_file())?;
        Ok(removed || file_removed)
    }
}

/// Where [`AutoStore`] put or found the document.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Placement {
    /// In the OS keyring.
    Keyring,
    /// In `auth.json`, because the keyring failed with this (secret-free) message.
    FileFallback {
        /// Why the keyring was not used.
        keyring_error: String,
    },
    /// In `auth.json`, because the keyring was reachable but had no entry.
    File,
}

/// Keyring first, `auth.json` when the keyring is unusable — the Codex CLI's `auto` mode.
/// Falling back is logged with `tracing::warn!` and reported by
/// [`save_reporting`](Self::save_reporting) / [`load_reporting`](Self::load_reporting).
#[derive(Debug, Clone)]
pub struct AutoStore {
    keyring: KeyringStore,
    file: FileStore,
}

impl AutoStore {
    /// An auto store for `home` on `backend`.
    pub fn new(home: CodexHome, backend: Arc<dyn KeyringBackend>) -> Self {
        Self {
            keyring: KeyringStore::new(home.clone(), backend),
            file: FileStore::new(home),
        }
    }

    /// Load and say where the document came from.
    pub fn load_reporting(&self) -> Result<(Option<AuthDocument>, Placement)> {
        match self.keyring.load_inner() {
            Ok(Some(doc)) => Ok((Some(doc), Placement::Keyring)),
            Ok(None) => Ok((self.file.load()?, Placement::File)),
            Err(KeyringOutcome::Fatal(e)) => Err(e),
            Err(KeyringOutcome::Failed(e)) => {
                tracing::warn!(%e, "keyring unusable; reading auth.json instead");
                Ok((
                    self.file.load()?,
                    Placement::FileFallback {
                        keyring_error: e.to_string(),
                    },
                ))
            }
        }
    }

    /// Save and say where the document went.
    pub fn save_reporting(&self, doc: &AuthDocument, guard: &CommitGuard) -> Result<Placement> {
        match self.keyring.save_inner(doc) {
            Ok(()) => Ok(Placement::Keyring),
            Err(KeyringOutcome::Fatal(e)) => Err(e),
            Err(KeyringOutcome::Failed(e)) => {
                tracing::warn!(%e, "keyring unusable; saving to auth.json instead");
                self.file.save_locked(doc, guard)?;
                // A refused write (too large, say) leaves an older login in the keyring,
                // which `load` reads first: remove it, so the login just saved is the one
                // read (by us and by the Codex CLI, which reads in the same order).
                let account = self.keyring.home.keyring_account();
                if let Err(err) = self.keyring.backend.delete(KEYRING_SERVICE, &account) {
                    let err = self.keyring.failure("delete", err);
                    tracing::warn!(%err, "saved to auth.json, but an older keyring entry could not be removed");
                }
                Ok(Placement::FileFallback {
                    keyring_error: e.to_string(),
                })
            }
        }
    }
}

impl CredentialStore for AutoStore {
    fn mode(&self) -> StoreMode {
        StoreMode::Auto
    }

    fn home(&self) -> &CodexHome {
        self.file.home()
    }

    fn load(&self) -> Result<Option<AuthDocument>> {
        self.load_reporting().map(|(doc, _)| doc)
    }

    fn save_locked(&self, doc: &AuthDocument, guard: &CommitGuard) -> Result<()> {
        self.save_reporting(doc, guard).map(|_| ())
    }

    fn delete_locked(&self, guard: &CommitGuard) -> Result<bool> {
        match self.keyring.delete_locked(guard) {
            Ok(removed) => Ok(removed),
            Err(e) => {
                tracing::warn!(%e, "keyring unusable; deleting auth.json only");
                self.file.delete_locked(guard)
            }
        }
    }
}

type EphemeralMap = Mutex<HashMap<String, AuthDocument>>;

fn ephemeral_map() -> &'static EphemeralMap {
    static MAP: OnceLock<EphemeralMap> = OnceLock::new();
    MAP.get_or_init(|| Mutex::new(HashMap::new()))
}

/// In-memory, process-wide, keyed like the keyring (one entry per Codex home) — the CLI's
/// `ephemeral` mode. Nothing touches the disk except the lock files.
#[derive(Debug, Clone)]
pub struct EphemeralStore {
    home: CodexHome,
}

impl EphemeralStore {
    /// The ephemeral store of `home`.
    pub fn new(home: CodexHome) -> Self {
        Self { home }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, AuthDocument>, String) -> T) -> T {
        // A panic while holding the lock cannot leave a half-written document (inserts are
        // single operations), so a poisoned map is still consistent.
        let mut map = ephemeral_map()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut map, self.home.keyring_account())
    }
}

impl CredentialStore for EphemeralStore {
    fn mode(&self) -> StoreMode {
        StoreMode::Ephemeral
    }

    fn home(&self) -> &CodexHome {
        &self.home
    }

    fn load(&self) -> Result<Option<AuthDocument>> {
        Ok(self.with(|m, k| m.get(&k).cloned()))
    }

    fn save_locked(&self, doc: &AuthDocument, _guard: &CommitGuard) -> Result<()> {
        self.with(|m, k| m.insert(k, doc.clone()));
        Ok(())
    }

    fn delete_locked(&self, _guard: &CommitGuard) -> Result<bool> {
        Ok(self.with(|m, k| m.remove(&k).is_some()))
    }
}

/// The store for `mode`, using the real OS keyring for `keyring` and `auto`.
///
/// Without the `keyring` feature, `keyring` mode is an error and `auto` uses the file (and
/// logs why).
///
/// ```
/// use auth_storage::{open_store, CodexHome, StoreMode};
/// let store = open_store(CodexHome::new("/tmp/x"), StoreMode::File).unwrap();
/// assert!(format!("{store:?}").contains("FileStore"));
/// ```
pub fn open_store(home: CodexHome, mode: StoreMode) -> Result<Box<dyn CredentialStore>> {
    #[cfg(feature = "keyring")]
    {
        let backend: Arc<dyn KeyringBackend> = Arc::new(crate::keyring_backend::OsKeyring);
        Ok(open_store_with(home, mode, backend))
    }
    #[cfg(not(feature = "keyring"))]
    {
        match mode {
            StoreMode::Keyring => Err(StorageError::Invalid {
                what: "credential store mode",
                detail: "keyring mode needs auth-storage built with the `keyring` feature"
                    .to_owned(),
            }),
            StoreMode::Auto => {
                tracing::warn!(
                    "auth-storage built without the `keyring` feature; auto mode uses auth.json"
                );
                Ok(Box::new(FileStore::new(home)))
            }
            StoreMode::File => Ok(Box::new(FileStore::new(home))),
            StoreMode::Ephemeral => Ok(Box::new(EphemeralStore::new(home))),
        }
    }
}

/// The store for `mode` on a keyring backend of your choice (e.g. a mock in tests).
pub fn open_store_with(
    home: CodexHome,
    mode: StoreMode,
    backend: Arc<dyn KeyringBackend>,
) -> Box<dyn CredentialStore> {
    match mode {
        StoreMode::File => Box::new(FileStore::new(home)),
        StoreMode::Keyring => Box::new(KeyringStore::new(home, backend)),
        StoreMode::Auto => Box::new(AutoStore::new(home, backend)),
        StoreMode::Ephemeral => Box::new(EphemeralStore::new(home)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring_backend::MockKeyring;
    use auth_core::Secret;

    fn doc(key: &str) -> AuthDocument {
        AuthDocument::api_key(Secret::new(key.to_owned()))
    }

    /// A login bigger than a Windows Credential Manager entry: the keyring store refuses it
    /// with a typed error and writes nothing (the old `auth.json` stays); `auto` keeps it in
    /// `auth.json` and says why; a small login still goes to the keyring.
    #[test]
    fn a_login_too_large_for_the_keyring_is_a_typed_error_and_auto_keeps_it_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let home = CodexHome::new(dir.path());
        std::fs::write(home.auth_file(), b"{\"OPENAI_API_KEY\":\"sk-old\"}").unwrap();
        let kr = MockKeyring::default().with_windows_limit();
        let big = doc(&format!("sk-{}", "k".repeat(1400)));
        let size =
            crate::keyring_backend::windows_credential_size(&serde_json::to_string(&big).unwrap());

        let store = KeyringStore::new(home.clone(), Arc::new(kr.clone()));
        let err = store.save(&big).unwrap_err();
        assert!(
            matches!(
                &err,
                StorageError::KeyringValueTooLarge { size: s, limit: 2560, account, .. }
                    if *s == size && *account == home.keyring_account()
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("auth.json") && text.contains("2560"),
            "{text}"
        );
        assert!(!text.contains("kkkk"), "no secret in the message: {text}");
        assert_eq!(err.effect(), crate::FailureEffect::NothingChanged);
        assert!(store.load().unwrap().is_none(), "nothing in the keyring");
        assert_eq!(
            std::fs::read(home.auth_file()).unwrap(),
            b"{\"OPENAI_API_KEY\":\"sk-old\"}",
            "the file is left as it was"
        );

        let auto = AutoStore::new(home.clone(), Arc::new(kr.clone()));
        let placement = auto.save_reporting(&big, &home.lock().unwrap()).unwrap();
        assert!(
            matches!(&placement, Placement::FileFallback { keyring_error } if keyring_error.contains("2560")),
            "{placement:?}"
        );
        assert_eq!(FileStore::new(home.clone()).load().unwrap().unwrap(), big);
        assert_eq!(auto.load().unwrap().unwrap(), big);

        let placement = auto
            .save_reporting(&doc("sk-small"), &home.lock().unwrap())
            .unwrap();
        assert_eq!(placement, Placement::Keyring);
        assert!(!home.auth_file().exists());
        assert_eq!(auto.load().unwrap().unwrap(), doc("sk-small"));
    }

    /// Small login first (into the keyring), then one too large for it (into the file): the
    /// large one is what `load` gives, not the older keyring entry (found in review).
    #[test]
    fn a_fallback_save_is_what_auto_loads_even_after_a_keyring_save() {
        let dir = tempfile::tempdir().unwrap();
        let home = CodexHome::new(dir.path());
        let kr = MockKeyring::default().with_windows_limit();
        let auto = AutoStore::new(home.clone(), Arc::new(kr.clone()));
        let small = doc("sk-small");
        let big = doc(&format!("sk-{}", "k".repeat(1400)));
        let placement = auto.save_reporting(&small, &home.lock().unwrap()).unwrap();
        assert_eq!(placement, Placement::Keyring);
        let placement = auto.save_reporting(&big, &home.lock().unwrap()).unwrap();
        assert!(
            matches!(placement, Placement::FileFallback { .. }),
            "{placement:?}"
        );
        let (loaded, from) = auto.load_reporting().unwrap();
        assert_eq!(loaded.unwrap(), big);
        assert_eq!(from, Placement::File);
        assert!(
            KeyringStore::new(home.clone(), Arc::new(kr))
                .load()
                .unwrap()
                .is_none(),
            "the older keyring entry is gone"
        );
    }

    #[test]
    fn keyring_save_stores_compact_json_under_the_cli_names_and_drops_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let home = CodexHome::new(dir.path());
        std::fs::write(home.auth_file(), b"{}").unwrap();
        let kr = MockKeyring::default();
        let store = KeyringStore::new(home.clone(), Arc::new(kr.clone()));
        store.save(&doc("sk-1")).unwrap();
        assert!(
            !home.auth_file().exists(),
            "fallback file removed like the CLI does"
        );
        let raw = kr
            .load(KEYRING_SERVICE, &home.keyring_account())
            .unwrap()
            .unwrap();
        assert_eq!(raw, r#"{"auth_mode":"apikey","OPENAI_API_KEY":"sk-1"}"#);
        assert_eq!(store.load().unwrap().unwrap(), doc("sk-1"));
        assert!(store.delete().unwrap());
        assert!(store.load().unwrap().is_none());
    }

    #[test]
    fn keyring_errors_name_the_entry_but_not_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let home = CodexHome::new(dir.path());
        let kr = MockKeyring::default();
        kr.set_failure(Some(MockKeyring::unavailable()));
        let store = KeyringStore::new(home.clone(), Arc::new(kr));
        let err = store.save(&doc("sk-secret-value")).unwrap_err().to_string();
        assert!(err.contains(&home.keyring_account()), "{err}");
        assert!(!err.contains("sk-secret"), "{err}");
    }

    #[test]
    fn auto_falls_back_to_the_file_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let home = CodexHome::new(dir.path());
        let kr = MockKeyring::default();
        let auto = AutoStore::new(home.clone(), Arc::new(kr.clone()));
        kr.set_failure(Some(MockKeyring::unavailable()));
        let guard = home.lock().unwrap();
        let placed = auto.save_reporting(&doc("sk-f"), &guard).unwrap();
        drop(guard);
        assert!(
            matches!(placed, Placement::FileFallback { .. }),
            "{placed:?}"
        );
        assert!(home.auth_file().exists());
        let (loaded, from) = auto.load_reporting().unwrap();
        assert_eq!(loaded.unwrap(), doc("sk-f"));
        assert!(matches!(from, Placement::FileFallback { .. }));
        // Keyring back: saves go there and the file is removed.
        kr.set_failure(None);
        auto.save(&doc("sk-k")).unwrap();
        assert!(!home.auth_file().exists());
        assert_eq!(auto.load_reporting().unwrap().1, Placement::Keyring);
    }

    #[test]
    fn a_corrupt_keyring_entry_is_an_error_not_a_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let home = CodexHome::new(dir.path());
        let kr = MockKeyring::default();
        kr.save(KEYRING_SERVICE, &home.keyring_account(), "{not json")
            .unwrap();
        let auto = AutoStore::new(home.clone(), Arc::new(kr));
        let err = auto.load().unwrap_err();
        assert!(matches!(err, StorageError::AuthFile { .. }), "{err}");
    }

    #[test]
    fn ephemeral_is_per_home_and_in_memory() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let sa = EphemeralStore::new(CodexHome::new(a.path()));
        let sb = EphemeralStore::new(CodexHome::new(b.path()));
        sa.save(&doc("sk-a")).unwrap();
        assert!(sb.load().unwrap().is_none());
        assert_eq!(sa.load().unwrap().unwrap(), doc("sk-a"));
        assert!(!a.path().join("auth.json").exists());
        assert!(sa.delete().unwrap());
    }

    #[test]
    fn file_store_reports_a_damaged_auth_json_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let home = CodexHome::new(dir.path());
        std::fs::write(
            home.auth_file(),
            br#"{"OPENAI_API_KEY": "sk-leak", "tokens": 5}"#,
        )
        .unwrap();
        let err = FileStore::new(home).load().unwrap_err().to_string();
        assert!(err.contains("auth.json"), "{err}");
        assert!(!err.contains("sk-leak"), "{err}");
    }
}
