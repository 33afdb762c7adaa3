//! Where credentials are kept, spelled as in the Codex CLI's `cli_auth_credentials_store`
//! config key.

use std::fmt;
use std::str::FromStr;

use crate::error::StorageError;

/// The credential store mode, parsed from the same strings the Codex CLI config uses.
///
/// ```
/// use auth_storage::StoreMode;
/// assert_eq!("keyring".parse::<StoreMode>().unwrap(), StoreMode::Keyring);
/// assert_eq!(StoreMode::default(), StoreMode::File);
/// let err = "vault".parse::<StoreMode>().unwrap_err();
/// assert!(err.to_string().contains("file, keyring, auto, ephemeral"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum StoreMode {
    /// `$CODEX_HOME/auth.json` (the CLI's default).
    #[default]
    File,
    /// The OS keyring only.
    Keyring,
    /// The OS keyring, falling back to the file when no keyring is usable.
    Auto,
    /// In memory, for this process only.
    Ephemeral,
}

impl StoreMode {
    /// All modes, in the order they are documented.
    pub const ALL: [StoreMode; 4] = [Self::File, Self::Keyring, Self::Auto, Self::Ephemeral];

    /// The config spelling (`file`, `keyring`, `auto`, `ephemeral`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Keyring => "keyring",
            Self::Auto => "auto",
            Self::Ephemeral => "ephemeral",
        }
    }
}

impl fmt::Display for StoreMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StoreMode {
    type Err = StorageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| StorageError::Invalid {
                what: "credential store mode",
                detail: format!(
                    "{:?} is not one of file, keyring, auto, ephemeral (the values of the Codex \
                     CLI's cli_auth_credentials_store setting)",
                    s.chars().take(40).collect::<String>()
                ),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_mode() {
        for m in StoreMode::ALL {
            assert_eq!(m.to_string().parse::<StoreMode>().unwrap(), m);
        }
    }

    #[test]
    fn rejects_case_variants_like_the_cli() {
        assert!("File".parse::<StoreMode>().is_err());
        assert!("".parse::<StoreMode>().is_err());
    }

    #[test]
    fn error_message_snapshot() {
        insta::assert_snapshot!("Keyring ".parse::<StoreMode>().unwrap_err().to_string());
    }
}
