//! [`Secret`]: a string (token, API key) that never prints.
//!
//! `Debug` and `Display` show `[REDACTED]`; the alternate form (`{:#}`) adds a short
//! SHA-256 fingerprint so two secrets can be told apart in a log without revealing
//! either. The bytes are zeroized when the value is dropped, equality is constant-time,
//! and serde sees a plain string, so `auth.json` round-trips unchanged.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// A secret string: an OAuth token, an API key, a refresh token.
///
/// * `Debug`/`Display` print `[REDACTED]` (or `[REDACTED sha256:1a2b3c4d]` with `{:#}`).
/// * [`Secret::expose`] is the only way to read the value; grep for it in review.
/// * The heap buffer is overwritten with zeros on drop (copies you make with `expose`
///   are yours to manage).
/// * `==` compares in constant time (the length is not hidden).
/// * Serializes as the raw string, so it can sit in a serde struct that mirrors
///   the on-disk format.
///
/// ```
/// use auth_core::Secret;
///
/// let key = Secret::new("sk-test-123".to_owned());
/// assert_eq!(format!("{key}"), "[REDACTED]");
/// assert_eq!(format!("{key:?}"), "Secret([REDACTED])");
/// assert!(format!("{key:#}").starts_with("[REDACTED sha256:"));
/// assert_eq!(key.expose(), "sk-test-123");
/// ```
pub struct Secret {
    value: String,
}

impl Secret {
    /// Wraps `value`. The string is moved, not copied, so no stray copy is left behind.
    pub fn new(value: String) -> Self {
        Self { value }
    }

    /// The secret value. Every call site is a place where the secret may escape:
    /// only pass it to the transport or storage that needs it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// Length of the secret in bytes (not secret for tokens of a fixed format).
    pub fn len(&self) -> usize {
        self.value.len()
    }

    /// A short, stable fingerprint: the first 8 hex digits of SHA-256 of the value.
    ///
    /// Enough to tell two tokens apart in a log or a status line; 32 bits of a hash
    /// give no practical help in recovering a high-entropy token. Do not print the
    /// fingerprint of a low-entropy secret such as a short password.
    ///
    /// ```
    /// use auth_core::Secret;
    /// let a = Secret::new("token-a".into());
    /// assert_eq!(a.fingerprint().len(), 8);
    /// assert_ne!(a.fingerprint(), Secret::new("token-b".into()).fingerprint());
    /// ```
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.value.as_bytes());
        let mut out = String::with_capacity(8);
        for byte in digest.iter().take(4) {
            out.push_str(&format!("{byte:02x}"));
        }
        out
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.value.zeroize();
    }
}

impl Clone for Secret {
    fn clone(&self) -> Self {
        Self::new(self.value.clone())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value.to_owned())
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.value.as_bytes().ct_eq(other.value.as_bytes()).into()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(")?;
        fmt::Display::fmt(self, f)?;
        f.write_str(")")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            write!(f, "[REDACTED sha256:{}]", self.fingerprint())
        } else {
            f.write_str("[REDACTED]")
        }
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.value)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_value() {
        let s = Secret::new("super-secret-value".into());
        for rendered in [
            format!("{s}"),
            format!("{s:?}"),
            format!("{s:#}"),
            format!("{s:#?}"),
        ] {
            assert!(!rendered.contains("super"), "{rendered}");
            assert!(rendered.contains("REDACTED"), "{rendered}");
        }
    }

    #[test]
    fn alternate_form_has_fingerprint() {
        let s = Secret::new("abc".into());
        // SHA-256("abc") = ba7816bf...
        assert_eq!(s.fingerprint(), "ba7816bf");
        assert_eq!(format!("{s:#}"), "[REDACTED sha256:ba7816bf]");
        assert_eq!(format!("{s:#?}"), "Secret([REDACTED sha256:ba7816bf])");
    }

    #[test]
    fn equality_compares_values() {
        assert_eq!(Secret::from("a"), Secret::from("a"));
        assert_ne!(Secret::from("a"), Secret::from("b"));
        assert_ne!(Secret::from("a"), Secret::from("ab"));
    }

    #[test]
    fn serde_is_transparent() {
        let s: Secret = serde_json::from_str("\"tok\"").unwrap();
        assert_eq!(s.expose(), "tok");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"tok\"");
        let none: Option<Secret> = serde_json::from_str("null").unwrap();
        assert!(none.is_none());
    }

    #[test]
    fn accessors() {
        let s = Secret::new(String::new());
        assert!(s.is_empty());
        assert_eq!(s.len(), 0);
        assert_eq!(Secret::from("xyz").clone().expose(), "xyz");
    }
}
