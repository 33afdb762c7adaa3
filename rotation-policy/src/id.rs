//! Stable, caller-supplied account identifiers.

use std::{fmt, str::FromStr, sync::Arc};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::PolicyError;

/// The longest id accepted, in bytes.
pub const MAX_ACCOUNT_ID_LEN: usize = 128;

/// A stable identifier for one account in a [`Pool`](crate::Pool), chosen by the caller.
///
/// Use something stable and non-personal, such as the ChatGPT account id or a hash of it.
/// Email addresses are refused (any `@`), so a pool, its status snapshot and its errors never
/// carry one. Cloning is cheap (a shared string).
///
/// ```
/// use rotation_policy::AccountId;
///
/// let id = AccountId::new("acct-7f3a")?;
/// assert_eq!(id.as_str(), "acct-7f3a");
/// assert!(AccountId::new("someone@example.com").is_err());
/// assert!(AccountId::new("").is_err());
/// # Ok::<(), rotation_policy::PolicyError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(Arc<str>);

impl AccountId {
    /// Checks and wraps an id: 1 to [`MAX_ACCOUNT_ID_LEN`] bytes, no `@`, no control characters.
    ///
    /// ```
    /// # use rotation_policy::AccountId;
    /// assert!(AccountId::new("user-1").is_ok());
    /// assert!(AccountId::new("tab\there").is_err());
    /// ```
    pub fn new(id: impl Into<String>) -> Result<Self, PolicyError> {
        let id: String = id.into();
        let reason = if id.is_empty() {
            Some("is empty")
        } else if id.len() > MAX_ACCOUNT_ID_LEN {
            Some("is longer than 128 bytes")
        } else if id.contains('@') {
            Some("contains `@` (looks like an email address; use a stable non-personal id)")
        } else if id.chars().any(char::is_control) {
            Some("contains a control character")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(PolicyError::InvalidAccountId {
                reason,
                len: id.len(),
            }),
            None => Ok(AccountId(Arc::from(id))),
        }
    }

    /// The id as text.
    ///
    /// ```
    /// # use rotation_policy::AccountId;
    /// assert_eq!(AccountId::new("a1")?.as_str(), "a1");
    /// # Ok::<(), rotation_policy::PolicyError>(())
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl FromStr for AccountId {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AccountId::new(s)
    }
}

impl TryFrom<&str> for AccountId {
    type Error = PolicyError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        AccountId::new(s)
    }
}

impl TryFrom<String> for AccountId {
    type Error = PolicyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        AccountId::new(s)
    }
}

impl Serialize for AccountId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AccountId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        AccountId::new(s).map_err(serde::de::Error::custom)
    }
}
