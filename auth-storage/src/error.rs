//! The one error type of this crate.

use std::path::{Path, PathBuf};
use std::time::Duration;

use auth_core::terminal::escape_control;

/// A path for an error message: file names are chosen by whoever created them, so control
/// and bidi characters are escaped (`\x1b`, `\u{202e}`) and cannot forge output lines.
pub(crate) fn shown(path: &Path) -> String {
    escape_control(&path.display().to_string()).to_string()
}

/// Everything that can go wrong while loading, saving or locking credentials.
///
/// Every variant names the file it is about; none carries a token, key or full email.
/// `Display` is a sentence a user can act on.
///
/// ```
/// use auth_storage::StorageError;
/// use std::path::PathBuf;
///
/// let err = StorageError::LockTimeout {
///     path: PathBuf::from("/home/me/.codex/auth.lock"),
///     waited: std::time::Duration::from_secs(10),
/// };
/// assert!(err.to_string().contains("auth.lock"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// A file or directory operation failed.
    #[error("could not {action} {}: {source}", shown(path))]
    Io {
        /// What was being done, e.g. "read", "rename a temporary file over".
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Replacing a file kept failing because another process had it open (Windows sharing
    /// violations, e.g. an anti-virus scanner or the Codex CLI reading it).
    #[error(
        "could not replace {}: another process kept it open through {attempts} attempts \
         ({source}); close programs using it and retry",
        shown(path)
    )]
    StillInUse {
        /// The file that could not be replaced.
        path: PathBuf,
        /// How many renames were tried.
        attempts: u32,
        /// The operating system's error from the last attempt.
        #[source]
        source: std::io::Error,
    },
    /// Another process held a lock for longer than we were willing to wait.
    #[error(
        "timed out after {waited:?} waiting for the lock {}; another process (maybe `codex`) \
         is holding it — retry when it has finished",
        shown(path)
    )]
    LockTimeout {
        /// The lock file.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
    /// A Codex `auth.json` (or the auth document stored in the keyring) is not usable.
    #[error("{} is not a usable Codex auth file: {source}", shown(path))]
    AuthFile {
        /// The file (or `keyring:<service>/<account>`).
        path: PathBuf,
        /// What is wrong; never contains token values.
        #[source]
        source: auth_core::AuthJsonError,
    },
    /// Where a credential, pool or lock file is expected there is something else: a FIFO, a
    /// socket, a device, a directory, or a symlink to one. Refused at once, never read,
    /// written through or replaced.
    #[error(
        "{} is {kind}, not a regular file; move it away (nothing was read or written)",
        shown(path)
    )]
    NotRegularFile {
        /// The path as configured (not a symlink's target).
        path: PathBuf,
        /// What is there.
        kind: auth_core::regular_file::FileKind,
    },
    /// A file is larger than this crate reads for its kind (see
    /// [`AUTH_JSON_MAX_BYTES`](auth_core::regular_file::AUTH_JSON_MAX_BYTES) and
    /// [`POOL_FILE_MAX_BYTES`](crate::pool::POOL_FILE_MAX_BYTES)); checked before reading and
    /// while reading.
    #[error(
        "{} is larger than {limit} bytes, the most accepted for this file; it is not the \
         expected file — move it away",
        shown(path)
    )]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
    /// The pool file (or the policy state file) was written by a newer version of this
    /// crate; we refuse to touch it.
    #[error(
        "{} has format version {found}, newer than the {supported} this program \
         understands; upgrade the program instead of overwriting the file",
        shown(path)
    )]
    NewerVersion {
        /// The pool file.
        path: PathBuf,
        /// Version found in the file.
        found: u32,
        /// Newest version this crate understands.
        supported: u32,
    },
    /// The pool file is damaged and no backup could be loaded.
    #[error(
        "{} is damaged ({}) and no valid backup exists in {}; the damaged file \
         was left untouched for inspection",
        shown(path),
        escape_control(detail),
        shown(backups)
    )]
    Unrecoverable {
        /// The pool file.
        path: PathBuf,
        /// The backup directory that was searched.
        backups: PathBuf,
        /// Why the main file could not be used.
        detail: String,
    },
    /// A value given by the caller (mode string, account selector…) is not acceptable.
    #[error("invalid {what}: {}", escape_control(detail))]
    Invalid {
        /// Which input is wrong, e.g. "credential store mode".
        what: &'static str,
        /// Why, with the accepted values when there are few.
        detail: String,
    },
    /// The OS keyring refused or failed an operation.
    #[error(
        "the OS keyring could not {action} the entry {account:?} of service {service:?}: {}",
        escape_control(detail)
    )]
    Keyring {
        /// What was being done: "read", "write" or "delete".
        action: &'static str,
        /// Keyring service name (`Codex Auth`).
        service: String,
        /// Keyring account name (`cli|<hash>`), not a secret.
        account: String,
        /// The keyring's own message.
        detail: String,
    },
    /// The login is bigger than an entry of the OS keyring holds (Windows Credential
    /// Manager: 2560 bytes of UTF-16 — a ChatGPT login, with its three tokens, usually is).
    /// Nothing was written. The file store, or `auto` (which falls back to it), keeps it.
    #[error(
        "the login is {size} bytes as the OS keyring stores it, more than the {limit} its \
         entry {account:?} of service {service:?} can hold (Windows Credential Manager's limit); \
         keep it in auth.json instead: cli_auth_credentials_store = \"file\", or \"auto\", \
         which falls back to the file"
    )]
    KeyringValueTooLarge {
        /// Keyring service name (`Codex Auth`).
        service: String,
        /// Keyring account name (`cli|<hash>`), not a secret.
        account: String,
        /// The document's size in the keyring's measure.
        size: usize,
        /// The most an entry holds, in the same measure.
        limit: usize,
    },
    /// The document could not be serialized (should not happen for our own types).
    #[error("could not serialize {what}: {detail}")]
    Serialize {
        /// What was being serialized.
        what: &'static str,
        /// serde's message.
        detail: String,
    },
    /// A multi-step operation failed after some steps had been written, and those steps
    /// were undone: the files are as they were before the operation started.
    #[error("{operation} failed and was rolled back, nothing changed: {cause}")]
    RolledBack {
        /// What was attempted, e.g. "switching the Codex home's login".
        operation: &'static str,
        /// The step that failed.
        #[source]
        cause: Box<StorageError>,
    },
    /// A multi-step operation failed after some steps had been written, and undoing them
    /// failed too. `applied` says what is now on disk and what to do; nothing is lost.
    #[error(
        "{operation} failed ({cause}) and could not be rolled back ({undo_error}): it is \
         partially applied — {}",
        escape_control(applied)
    )]
    PartiallyApplied {
        /// What was attempted.
        operation: &'static str,
        /// The step that failed.
        #[source]
        cause: Box<StorageError>,
        /// Why the completed steps could not be undone.
        undo_error: Box<StorageError>,
        /// What is on disk now and how to finish or undo by hand (paths, account numbers;
        /// never a token or full email).
        applied: String,
    },
}

/// What a failed operation left behind, as told by [`StorageError::effect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureEffect {
    /// Nothing was written: every file is as it was.
    NothingChanged,
    /// Steps were written and then undone: every file is as it was.
    RolledBack,
    /// Steps were written and could not be undone; the error says what to do.
    PartiallyApplied,
}

impl FailureEffect {
    /// Whether the files are as they were before the operation (nothing changed, or
    /// everything was rolled back).
    ///
    /// ```
    /// use auth_storage::FailureEffect;
    /// assert!(FailureEffect::RolledBack.left_state_unchanged());
    /// assert!(!FailureEffect::PartiallyApplied.left_state_unchanged());
    /// ```
    pub fn left_state_unchanged(self) -> bool {
        !matches!(self, Self::PartiallyApplied)
    }
}

impl StorageError {
    /// What the failed operation left on disk. Every operation of this crate either
    /// changes nothing when it fails or undoes what it wrote; only
    /// [`PartiallyApplied`](Self::PartiallyApplied) leaves a change behind.
    ///
    /// ```
    /// use auth_storage::{FailureEffect, StorageError};
    /// let err = StorageError::Invalid { what: "account number", detail: "no #3".into() };
    /// assert_eq!(err.effect(), FailureEffect::NothingChanged);
    /// let err = StorageError::RolledBack { operation: "switching", cause: Box::new(err) };
    /// assert_eq!(err.effect(), FailureEffect::RolledBack);
    /// ```
    pub fn effect(&self) -> FailureEffect {
        match self {
            Self::RolledBack { .. } => FailureEffect::RolledBack,
            Self::PartiallyApplied { .. } => FailureEffect::PartiallyApplied,
            _ => FailureEffect::NothingChanged,
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

impl From<auth_core::regular_file::FileError> for StorageError {
    fn from(err: auth_core::regular_file::FileError) -> Self {
        use auth_core::regular_file::FileError;
        match err {
            FileError::NotRegular { path, kind } => Self::NotRegularFile { path, kind },
            FileError::TooLarge { path, limit } => Self::FileTooLarge { path, limit },
            FileError::Io {
                action,
                path,
                source,
            } => Self::Io {
                action,
                path,
                source,
            },
            FileError::StillInUse {
                action: "replace",
                path,
                attempts,
                source,
            } => Self::StillInUse {
                path,
                attempts,
                source,
            },
            // A removal (the only other in-use operation): `StillInUse` speaks of replacing.
            FileError::StillInUse {
                action,
                path,
                attempts,
                source,
            } => Self::Io {
                action,
                path,
                source: std::io::Error::new(
                    source.kind(),
                    format!(
                        "{source}; another process kept it open through {attempts} attempts, \
                         close programs using it and retry"
                    ),
                ),
            },
            FileError::SymlinkLoop { path, .. } => Self::Io {
                action: "resolve",
                path,
                source: std::io::Error::other("too many levels of symbolic links"),
            },
            // FileError is non-exhaustive: keep whatever a newer variant says and its path.
            other => Self::Io {
                action: "use",
                path: other.path().to_path_buf(),
                source: std::io::Error::other(other.to_string()),
            },
        }
    }
}

/// serde_json's messages can quote input (e.g. `invalid type: string "sk-…"`); keep only the
/// category so no secret from the file can reach an error message.
pub(crate) fn describe_json_error(err: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match err.classify() {
        Category::Eof => "the file ends early (truncated)".to_owned(),
        Category::Syntax => "malformed JSON".to_owned(),
        Category::Io => "read error".to_owned(),
        Category::Data => {
            // Data errors name fields ("missing field `tokens`") which is useful and safe, but
            // may also quote values ("invalid value: string \"…\""). Keep the text only up to
            // the first quote character.
            let text = err.to_string();
            let text = text.split(" at line ").next().unwrap_or("");
            match text.find(['"', '\'']) {
                Some(cut) => format!(
                    "unexpected content: {}",
                    escape_control(text[..cut].trim_end())
                ),
                None => format!("unexpected content: {}", escape_control(text)),
            }
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_never_quote_values() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Doc {
            n: u32,
        }
        let err = serde_json::from_str::<Doc>(r#"{"n": "sk-secret-value"}"#).unwrap_err();
        let text = describe_json_error(&err);
        assert!(!text.contains("sk-secret"), "{text}");
        assert!(
            text.starts_with("unexpected content: invalid type"),
            "{text}"
        );
        let err = serde_json::from_str::<Doc>(r#"{"m": 1}"#).unwrap_err();
        assert_eq!(
            describe_json_error(&err),
            "unexpected content: missing field `n`"
        );
        let err = serde_json::from_str::<Doc>(r#"{"n": 1"#).unwrap_err();
        assert_eq!(describe_json_error(&err), "the file ends early (truncated)");
    }

    #[test]
    fn paths_and_details_in_messages_are_escaped() {
        let hostile =
            PathBuf::from("/tmp/pool\r\nerror: all tokens deleted\x1b[2J\u{202e}/pool.json");
        let errors = [
            StorageError::io("read", &hostile, std::io::Error::other("x")),
            StorageError::LockTimeout {
                path: hostile.clone(),
                waited: Duration::from_secs(1),
            },
            StorageError::Unrecoverable {
                path: hostile.clone(),
                backups: hostile.clone(),
                detail: "bad\nline".into(),
            },
            StorageError::Invalid {
                what: "account selector",
                detail: "`\x1b[31m` is not a number".into(),
            },
        ];
        for err in errors {
            let shown = err.to_string();
            assert!(
                !shown.chars().any(auth_core::terminal::is_unsafe_char),
                "{shown:?}"
            );
        }
        insta::assert_snapshot!(
            StorageError::LockTimeout { path: hostile, waited: Duration::from_secs(10) }.to_string(),
            @"timed out after 10s waiting for the lock /tmp/pool\\x0d\\x0aerror: all tokens deleted\\x1b[2J\\u{202e}/pool.json; another process (maybe `codex`) is holding it — retry when it has finished"
        );
    }

    #[test]
    fn file_refusal_messages() {
        use auth_core::regular_file::{FileError, FileKind};
        let path = PathBuf::from("/home/me/.codex/accounts/pool.json");
        let texts: Vec<String> = [
            FileError::NotRegular {
                path: path.clone(),
                kind: FileKind::Fifo,
            },
            FileError::NotRegular {
                path: path.clone(),
                kind: FileKind::CharDevice,
            },
            FileError::TooLarge {
                path: path.clone(),
                limit: crate::pool::POOL_FILE_MAX_BYTES,
            },
        ]
        .into_iter()
        .map(|e| StorageError::from(e).to_string())
        .collect();
        insta::assert_snapshot!(texts.join("\n"));
    }

    #[test]
    fn file_errors_keep_their_meaning_and_message() {
        use auth_core::regular_file::FileError;
        let path = PathBuf::from("/home/me/.codex/auth.json");
        let in_use = |action| FileError::StillInUse {
            action,
            path: path.clone(),
            attempts: 10,
            source: std::io::Error::from_raw_os_error(32),
        };
        let err = StorageError::from(in_use("replace"));
        assert!(
            matches!(&err, StorageError::StillInUse { attempts: 10, source, .. } if source.raw_os_error() == Some(32)),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with("could not replace /home/me/.codex/auth.json: another process kept it open through 10 attempts ("),
            "{err}"
        );
        let err = StorageError::from(in_use("remove"));
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
        let text = err.to_string();
        assert!(
            text.starts_with("could not remove /home/me/.codex/auth.json: "),
            "{text}"
        );
        assert!(text.contains("through 10 attempts"), "{text}");
        let err = StorageError::from(FileError::SymlinkLoop {
            path: path.clone(),
            hops: 40,
        });
        assert_eq!(
            err.to_string(),
            "could not resolve /home/me/.codex/auth.json: too many levels of symbolic links"
        );
    }
}
