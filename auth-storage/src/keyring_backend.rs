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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyringFailure {
    /// `true` when no keyring is usable at all (no Secret Service on the bus, no D-Bus
    /// session, locked platform store) — the case where `auto` mode falls back to the file.
    pub unavailable: bool,
    /// Human-readable description.
    pub message: String,
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

/// An in-memory keyring for tests, with switchable failure.
///
/// Clones share the same entries.
#[derive(Clone, Default)]
pub struct MockKeyring {
    inner: Arc<Mutex<MockState>>,
}

#[derive(Default)]
struct MockState {
    entries: HashMap<(String, String), String>,
    failure: Option<KeyringFailure>,
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

    /// A failure that means "no keyring here".
    pub fn unavailable() -> KeyringFailure {
        KeyringFailure {
            unavailable: true,
            message: "mock keyring: no secret service".to_owned(),
        }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut HashMap<(String, String), String>) -> T,
    ) -> Result<T, KeyringFailure> {
        let mut state = self.inner.lock().map_err(|_| KeyringFailure {
            unavailable: false,
            message: "mock keyring poisoned".to_owned(),
        })?;
        if let Some(failure) = state.failure.clone() {
            return Err(failure);
        }
        Ok(f(&mut state.entries))
    }
}

impl KeyringBackend for MockKeyring {
    fn load(&self, service: &str, account: &str) -> Result<Option<String>, KeyringFailure> {
        self.with(|m| m.get(&(service.to_owned(), account.to_owned())).cloned())
    }

    fn save(&self, service: &str, account: &str, value: &str) -> Result<(), KeyringFailure> {
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
/// over `zbus`, a pure-Rust D-Bus implementation, with an encrypted session. macOS: the login
/// Keychain. Windows: Credential Manager. Only Linux is tested; the others are best-effort
/// and rely on the `keyring` crate.
///
/// Every call opens its own connection to the session bus named by
/// `DBUS_SESSION_BUS_ADDRESS`, so it is blocking: call it from `spawn_blocking` in async code.
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
        KeyringFailure {
            unavailable,
            message: err.to_string(),
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
                .and_then(|e| e.set_password(value))
                .map_err(failure)
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
