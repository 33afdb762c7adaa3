//! The seam between the credential stores and an OS keyring.
//!
//! [`KeyringBackend`] is deliberately tiny (load / save / delete of a string under a service
//! and account) so tests can swap in [`MockKeyring`] and embedders can bring their own
//! secret store. [`OsKeyring`] (feature `keyring`) talks to the real OS keyring through the
//! [`keyring`](https://docs.rs/keyring/3.6.3) crate 3.6.3, exactly like the Codex CLI: on
//! Linux it creates Secret Service items labelled
//! `cli|<16 hex>@Codex Auth:default (keyring v3.6.3)` with the attributes
//! `service`, `username`, `target=default` and `application=rust-keyring`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// Why a keyring operation failed. The message comes from the keyring and never contains the
/// stored value.
///
/// ```
/// use auth_storage::keyring_backend::KeyringFailure;
/// let failure = KeyringFailure::new(true, "no Secret Service on the session bus");
/// assert!(failure.unavailable && failure.too_large.is_none());
/// let failure = KeyringFailure::too_large(5_000, 2_560);
/// assert_eq!(failure.too_large.map(|t| t.limit), Some(2_560));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyringFailure {
    /// `true` when no keyring is usable at all (no Secret Service on the bus, no D-Bus
    /// session, locked platform store).
    pub unavailable: bool,
    /// Human-readable description.
    pub message: String,
    /// `Some` when the keyring refused the value for its size (Windows Credential Manager
    /// holds at most 2560 bytes per entry); a store turns this into
    /// [`StorageError::KeyringValueTooLarge`](crate::StorageError::KeyringValueTooLarge).
    pub too_large: Option<ValueTooLarge>,
}

/// How much bigger a value was than a keyring entry holds, both in the keyring's own measure
/// (bytes of UTF-16 for Windows Credential Manager, which stores text that way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ValueTooLarge {
    /// The value's size.
    pub size: usize,
    /// The most an entry holds.
    pub limit: usize,
}

impl KeyringFailure {
    /// A failure described by the keyring's `message` (`unavailable`: no keyring is usable
    /// at all).
    pub fn new(unavailable: bool, message: impl Into<String>) -> Self {
        Self {
            unavailable,
            message: message.into(),
            too_large: None,
        }
    }

    /// The keyring refused a value of `size` because an entry holds at most `limit`.
    pub fn too_large(size: usize, limit: usize) -> Self {
        Self {
            unavailable: false,
            message: format!(
                "the value is {size} bytes as the keyring stores it; an entry holds at most {limit}"
            ),
            too_large: Some(ValueTooLarge { size, limit }),
        }
    }
}

/// The most a Windows Credential Manager entry holds (`CRED_MAX_CREDENTIAL_BLOB_SIZE`, 5 ×
/// 512 bytes), and text is stored there as UTF-16: 1280 UTF-16 code units. Also the limit
/// [`MockKeyring::with_windows_limit`] imitates.
pub const WINDOWS_CREDENTIAL_MAX_BYTES: usize = 2560;

/// `value`'s size as Windows Credential Manager stores it (UTF-16, two bytes a unit).
pub fn windows_credential_size(value: &str) -> usize {
    value.encode_utf16().count() * 2
}

impl fmt::Display for KeyringFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A place that stores one string per (service, account).
///
/// ```
/// use auth_storage::keyring_backend::{KeyringBackend, MockKeyring};
/// let kr = MockKeyring::default();
/// kr.save("Codex Auth", "cli|0123456789abcdef", "{}").unwrap();
/// assert_eq!(kr.load("Codex Auth", "cli|0123456789abcdef").unwrap().as_deref(), Some("{}"));
/// assert!(kr.delete("Codex Auth", "cli|0123456789abcdef").unwrap());
/// ```
pub trait KeyringBackend: fmt::Debug + Send + Sync {
    /// The stored value, or `None` when there is no entry.
    fn load(&self, service: &str, account: &str) -> Result<Option<String>, KeyringFailure>;
    /// Create or replace the entry.
    fn save(&self, service: &str, account: &str, value: &str) -> Result<(), KeyringFailure>;
    /// Remove the entry; `Ok(false)` when there was none.
    fn delete(&self, service: &str, account: &str) -> Result<bool, KeyringFailure>;
}

/// An in-memory keyring for tests, with switchable failure and, optionally, Windows
/// Credential Manager's size limit.
///
/// Clones share the same entries.
///
/// ```
/// use auth_storage::keyring_backend::{KeyringBackend, MockKeyring};
/// let kr = MockKeyring::default().with_windows_limit();
/// let refused = kr.save("Codex Auth", "cli|0123456789abcdef", &"x".repeat(1281)).unwrap_err();
/// assert_eq!(refused.too_large.map(|t| t.size), Some(2562));
/// kr.save("Codex Auth", "cli|0123456789abcdef", &"x".repeat(1280)).unwrap();
/// ```
#[derive(Clone, Default)]
pub struct MockKeyring {
    inner: Arc<Mutex<MockState>>,
}

#[derive(Default)]
struct MockState {
    entries: HashMap<(String, String), String>,
    failure: Option<KeyringFailure>,
    /// Refuse values whose UTF-16 size is over this, like Windows Credential Manager.
    limit: Option<usize>,
}

impl fmt::Debug for MockKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.inner.lock().map(|s| s.entries.len()).unwrap_or(0);
        f.debug_struct("MockKeyring").field("entries", &n).finish()
    }
}

impl MockKeyring {
    /// Make every following operation fail with `failure` (`None` to heal).
    pub fn set_failure(&self, failure: Option<KeyringFailure>) {
        if let Ok(mut s) = self.inner.lock() {
            s.failure = failure;
        }
    }

    /// Refuse values bigger than a Windows Credential Manager entry holds
    /// ([`WINDOWS_CREDENTIAL_MAX_BYTES`] of UTF-16), as the real one does.
    #[must_use]
    pub fn with_windows_limit(self) -> Self {
        if let Ok(mut s) = self.inner.lock() {
            s.limit = Some(WINDOWS_CREDENTIAL_MAX_BYTES);
        }
        self
    }

    /// A failure that means "no keyring here".
    pub fn unavailable() -> KeyringFailure {
        KeyringFailure::new(true, "mock keyring: no secret service")
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut HashMap<(String, String), String>) -> T,
    ) -> Result<T, KeyringFailure> {
        let mut state = self
            .inner
            .lock()
            .map_err(|_| KeyringFailure::new(false, "mock keyring poisoned"))?;
        if let Some(failure) = state.failure.clone() {
            return Err(failure);
        }
        Ok(f(&mut state.entries))
    }

    fn limit(&self) -> Option<usize> {
        self.inner.lock().ok().and_then(|s| s.limit)
    }
}

impl KeyringBackend for MockKeyring {
    fn load(&self, service: &str, account: &str) -> Result<Option<String>, KeyringFailure> {
        self.with(|m| m.get(&(service.to_owned(), account.to_owned())).cloned())
    }

    fn save(&self, service: &str, account: &str, value: &str) -> Result<(), KeyringFailure> {
        if let Some(limit) = self.limit() {
            let size = windows_credential_size(value);
            if size > limit {
                return Err(KeyringFailure::too_large(size, limit));
            }
        }
        self.with(|m| {
            m.insert((service.to_owned(), account.to_owned()), value.to_owned());
        })
    }

    fn delete(&self, service: &str, account: &str) -> Result<bool, KeyringFailure> {
        self.with(|m| {
            m.remove(&(service.to_owned(), account.to_owned()))
                .is_some()
        })
    }
}

/// The OS keyring through the `keyring` crate (feature `keyring`).
///
/// Linux/FreeBSD/OpenBSD: the freedesktop Secret Service (gnome-keyring, KWallet, KeePassXC)
/// over `zbus`, a pure-Rust D-Bus implementation, with an encrypted session (tested against
/// gnome-keyring). Windows: Credential Manager, a generic credential with the target name
/// `<account>.<service>` and the value as UTF-16 (tested against Wine's implementation). A
/// Credential Manager entry holds at most [`WINDOWS_CREDENTIAL_MAX_BYTES`] (1280 UTF-16 code
/// units); a bigger value, which a ChatGPT login usually is, is refused with
/// [`KeyringFailure::too_large`] — the Codex CLI (0.169, same `keyring` version) cannot keep
/// such a login in the Windows keyring either, and its `auto` mode falls back to
/// `auth.json`, as [`AutoStore`](crate::AutoStore) does. macOS: the login Keychain
/// (type-checked only).
///
/// On Linux every call opens its own connection to the session bus named by
/// `DBUS_SESSION_BUS_ADDRESS`; on every OS the calls block: call them from `spawn_blocking`
/// in async code.
#[cfg(feature = "keyring")]
#[derive(Debug, Clone, Copy, Default)]
pub struct OsKeyring;

#[cfg(feature = "keyring")]
mod os {
    use super::{KeyringBackend, KeyringFailure, OsKeyring};

    fn failure(err: keyring::Error) -> KeyringFailure {
        let unavailable = matches!(
            err,
            keyring::Error::PlatformFailure(_) | keyring::Error::NoStorageAccess(_)
        );
        KeyringFailure::new(unavailable, err.to_string())
    }

    /// A refused save: [`KeyringFailure::too_large`] when the keyring said the value (the
    /// `password` attribute) is too long, with the value's size in the keyring's measure.
    fn save_failure(err: keyring::Error, value: &str) -> KeyringFailure {
        match err {
            keyring::Error::TooLong(attribute, limit) if attribute.starts_with("password") => {
                let size = if cfg!(windows) {
                    super::windows_credential_size(value)
                } else {
                    value.len()
                };
                KeyringFailure::too_large(size, limit as usize)
            }
            other => failure(other),
        }
    }

    impl KeyringBackend for OsKeyring {
        fn load(&self, service: &str, account: &str) -> Result<Option<String>, KeyringFailure> {
            let entry = keyring::Entry::new(service, account).map_err(failure)?;
            match entry.get_password() {
                Ok(v) => Ok(Some(v)),
                Err(keyring::Error::NoEntry) => Ok(None),
                Err(e) => Err(failure(e)),
            }
        }

        fn save(&self, service: &str, account: &str, value: &str) -> Result<(), KeyringFailure> {
            keyring::Entry::new(service, account)
                .map_err(failure)?
                .set_password(value)
                .map_err(|e| save_failure(e, value))
        }

        fn delete(&self, service: &str, account: &str) -> Result<bool, KeyringFailure> {
            let entry = keyring::Entry::new(service, account).map_err(failure)?;
            match entry.delete_credential() {
                Ok(()) => Ok(true),
                Err(keyring::Error::NoEntry) => Ok(false),
                Err(e) => Err(failure(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mock_fails_when_told() {
        let kr = MockKeyring::default();
        kr.set_failure(Some(MockKeyring::unavailable()));
        assert!(kr.load("s", "a").unwrap_err().unavailable);
        kr.set_failure(None);
        assert_eq!(kr.load("s", "a").unwrap(), None);
        assert!(!kr.delete("s", "a").unwrap());
    }
}
