//! Errors: [`EditError`] for the pure text layer, [`Error`] for the file layer.

use std::io;
use std::path::PathBuf;

/// Why an edit of configuration *text* was refused.
///
/// Returned by the pure functions ([`apply_to_str`](crate::apply_to_str),
/// [`restore_str`](crate::restore_str), [`read_string`](crate::read_string)).
/// The file-level functions wrap it in [`Error::Config`] together with the file's path.
/// Messages never contain configuration values, only key names and positions.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EditError {
    /// The text is not valid TOML. `line` and `column` are 1-based (column counts characters).
    #[error("invalid TOML at line {line}, column {column}: {message}; fix the file and retry")]
    InvalidToml {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column (in characters) of the error.
        column: usize,
        /// What the parser expected, without the offending text.
        message: String,
    },
    /// The text is not UTF-8 (TOML files must be).
    #[error("not UTF-8 at line {line}, column {column}; TOML files must be UTF-8")]
    NotUtf8 {
        /// 1-based line of the first invalid byte.
        line: usize,
        /// 1-based column (in characters) of the first invalid byte.
        column: usize,
    },
    /// Printing the unmodified document would not reproduce the file byte for byte (for example
    /// a file mixing CRLF and LF line endings), so an edit could change bytes we never meant to
    /// touch. The file is refused rather than normalised.
    #[error(
        "cannot edit without reformatting: the file would change at line {line}, column {column} \
         (mixed line endings?); normalise the file's line endings and retry"
    )]
    NotRoundTrippable {
        /// 1-based line of the first byte that would change.
        line: usize,
        /// 1-based column (in characters) of the first byte that would change.
        column: usize,
    },
    /// A key on the way to the edited table holds something other than a table.
    #[error("`{key_path}` is a {found}, not a table; rename or remove it and retry")]
    NotATable {
        /// Dotted path of the offending key, e.g. `profiles.work`.
        key_path: String,
        /// What was found instead (`string`, `array of tables`, …).
        found: &'static str,
    },
    /// A requested edit is not valid (empty id, reserved provider id, out-of-range number…).
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The argument or field that is wrong, e.g. `provider id`.
        field: String,
        /// Why it is wrong.
        reason: String,
    },
    /// The revert record cannot be used (unknown format version, unparsable stored value).
    #[error("unusable revert record: {reason}")]
    InvalidRecord {
        /// What is wrong with it.
        reason: String,
    },
    /// A self-check after editing failed. The text was not written. This is a bug: please report it.
    #[error(
        "internal check failed after editing ({what}); nothing was written; please report this bug"
    )]
    Internal {
        /// Which check failed.
        what: String,
    },
}

/// Errors of the file-level API ([`apply`](crate::apply), [`restore`](crate::restore),
/// [`RevertFile`](crate::RevertFile)).
///
/// Whenever one of these is returned, the configuration file is left as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration text (or the requested edit) was refused; the file is untouched.
    #[error("{}: {source}", path.display())]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: EditError,
    },
    /// A file-system operation failed.
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        /// What we were doing, e.g. `read`, `replace`.
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Where the configuration or a revert record is expected there is a FIFO, socket,
    /// device or directory (or a symlink to one). Refused at once; nothing is read or written.
    #[error(
        "{} is {kind}, not a regular file; move it away (nothing was read or written)",
        path.display()
    )]
    NotRegularFile {
        /// The path as given.
        path: PathBuf,
        /// What is there.
        kind: crate::regular::FileKind,
    },
    /// The configuration or revert record is larger than accepted
    /// ([`CONFIG_MAX_BYTES`](crate::CONFIG_MAX_BYTES),
    /// [`RECORD_MAX_BYTES`](crate::RECORD_MAX_BYTES)); checked before and while reading.
    #[error(
        "{} is larger than {limit} bytes, the most accepted for this file; it is not the \
         expected file — move it away",
        path.display()
    )]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
    /// A revert record file exists but cannot be read as one.
    #[error("{}: not a usable revert record ({reason}); inspect it, then move it away", path.display())]
    InvalidRecordFile {
        /// The revert record file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A rewrite from an earlier run has not been restored yet; applying again would lose the
    /// way back to the user's original file.
    #[error(
        "{}: an earlier rewrite is still pending (revert record {}); call restore first",
        config.display(),
        record.display()
    )]
    PendingRevert {
        /// The configuration file.
        config: PathBuf,
        /// The pending revert record.
        record: PathBuf,
    },
    /// Another process kept the edit lock on the configuration's directory for too long.
    #[error(
        "{}: another program is editing configuration files here (waited {waited:?}); retry when it is done",
        path.display()
    )]
    Busy {
        /// The locked directory.
        path: PathBuf,
        /// How long we waited.
        waited: std::time::Duration,
    },
    /// The file kept changing under us while we edited it (another program writing it).
    #[error("{}: the file changed while it was being edited; retry when the other writer is done", path.display())]
    ConcurrentModification {
        /// The configuration file.
        path: PathBuf,
    },
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// 1-based line and character column of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_actionable_sentences() {
        let path = PathBuf::from("/home/me/.codex/config.toml");
        let config = |source| Error::Config {
            path: path.clone(),
            source,
        };
        let messages = [
            config(EditError::InvalidToml {
                line: 3,
                column: 7,
                message: "extra `=`, expected nothing".into(),
            }),
            config(EditError::NotUtf8 { line: 1, column: 2 }),
            config(EditError::NotRoundTrippable { line: 2, column: 6 }),
            config(EditError::NotATable {
                key_path: "profiles.work".into(),
                found: "string",
            }),
            config(EditError::InvalidInput {
                field: "provider id".into(),
                reason: "it is empty".into(),
            }),
            Error::PendingRevert {
                config: path.clone(),
                record: path.with_file_name("config.toml.revert.json"),
            },
            Error::io(
                "replace",
                path.clone(),
                io::Error::from(io::ErrorKind::PermissionDenied),
            ),
            Error::Busy {
                path: PathBuf::from("/home/me/.codex"),
                waited: std::time::Duration::from_secs(10),
            },
            Error::ConcurrentModification { path: path.clone() },
            Error::InvalidRecordFile {
                path: path.with_file_name("config.toml.revert.json"),
                reason: "not valid JSON at line 1, column 3".into(),
            },
        ];
        let text: Vec<String> = messages.iter().map(ToString::to_string).collect();
        insta::assert_snapshot!(text.join("\n"));
    }

    #[test]
    fn line_col_is_one_based_and_counts_chars() {
        assert_eq!(line_col("", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("é=1", 2), (1, 2));
        assert_eq!(line_col("a\n", 99), (2, 1));
    }
}
