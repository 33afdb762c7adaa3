//! Errors: [`EditError`] for the pure text layer, [`Error`] for the file layer.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Text from a file or its name, displayed with control, bidi and line-separator
/// characters escaped (`\x1b`, `\u{202e}`) so a hostile key or path cannot forge output
/// lines or send terminal escape sequences. The same form as `auth_core::terminal` (this
/// crate depends on none of the workspace's crates but `atomic-file`, so it keeps its own
/// copy).
pub(crate) struct Shown<'a>(&'a str);

/// A control (C0, DEL, C1), bidi or line-separator character: escaped when shown, and
/// refused in any text a caller asks us to write into `config.toml`.
pub(crate) fn is_unsafe_char(c: char) -> bool {
    matches!(
        c,
        '\u{0}'..='\u{1f}'
            | '\u{7f}'..='\u{9f}'
            | '\u{61c}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
    )
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some((idx, c)) = rest.char_indices().find(|(_, c)| is_unsafe_char(*c)) {
            f.write_str(&rest[..idx])?;
            let code = u32::from(c);
            if code < 0x80 {
                write!(f, "\\x{code:02x}")?;
            } else {
                write!(f, "\\u{{{code:x}}}")?;
            }
            rest = &rest[idx + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

pub(crate) fn shown(text: &str) -> Shown<'_> {
    Shown(text)
}

fn shown_path(path: &Path) -> String {
    Shown(&path.display().to_string()).to_string()
}

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
    #[error(
        "invalid TOML at line {line}, column {column}: {}; fix the file and retry",
        shown(message)
    )]
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
    #[error(
        "`{}` is a {found}, not a table; rename or remove it and retry",
        shown(key_path)
    )]
    NotATable {
        /// Dotted path of the offending key, e.g. `profiles.work`.
        key_path: String,
        /// What was found instead (`string`, `array of tables`, …).
        found: &'static str,
    },
    /// A requested edit is not valid (empty id, reserved provider id, out-of-range number…).
    #[error("invalid {}: {}", shown(field), shown(reason))]
    InvalidInput {
        /// The argument or field that is wrong, e.g. `provider id`.
        field: String,
        /// Why it is wrong.
        reason: String,
    },
    /// The revert record cannot be used (unknown format version, unparsable stored value).
    #[error("unusable revert record: {}", shown(reason))]
    InvalidRecord {
        /// What is wrong with it.
        reason: String,
    },
    /// A self-check after editing failed. The text was not written. This is a bug: please report it.
    #[error(
        "internal check failed after editing ({}); nothing was written; please report this bug",
        shown(what)
    )]
    Internal {
        /// Which check failed.
        what: String,
    },
}

/// Errors of the file-level API ([`apply`](crate::apply), [`restore`](crate::restore),
/// [`RevertFile`](crate::RevertFile)).
///
/// Whenever one of these is returned, the configuration file and the revert record are left
/// as they were (for [`RolledBack`](Self::RolledBack): put back as they were), except
/// [`PartiallyApplied`](Self::PartiallyApplied), which says what is on disk and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration text (or the requested edit) was refused; the file is untouched.
    #[error("{}: {source}", shown_path(path))]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: EditError,
    },
    /// A file-system operation failed.
    #[error("could not {action} {}: {source}", shown_path(path))]
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
        shown_path(path)
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
        shown_path(path)
    )]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
    /// A revert record file exists but cannot be read as one.
    #[error(
        "{}: not a usable revert record ({}); inspect it, then move it away",
        shown_path(path),
        shown(reason)
    )]
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
        shown_path(config),
        shown_path(record)
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
        shown_path(path)
    )]
    Busy {
        /// The locked directory.
        path: PathBuf,
        /// How long we waited.
        waited: std::time::Duration,
    },
    /// A step after the configuration was replaced failed (e.g. deleting the revert record
    /// after a restore), so the configuration was put back: nothing changed.
    #[error(
        "{}: {operation} failed and was rolled back, nothing changed: {source}",
        shown_path(path)
    )]
    RolledBack {
        /// The configuration file.
        path: PathBuf,
        /// What was attempted, e.g. `restore`.
        operation: &'static str,
        /// The step that failed.
        #[source]
        source: Box<Error>,
    },
    /// A step failed and undoing the earlier steps failed too. `applied` says what is on
    /// disk now and what to do; the way back to the original configuration is not lost.
    #[error(
        "{}: {operation} failed ({source}) and could not be rolled back ({undo_error}): it is \
         partially applied — {}",
        shown_path(path),
        shown(applied)
    )]
    PartiallyApplied {
        /// The configuration file.
        path: PathBuf,
        /// What was attempted.
        operation: &'static str,
        /// The step that failed.
        #[source]
        source: Box<Error>,
        /// Why undoing failed.
        undo_error: Box<Error>,
        /// What is on disk and what to do (paths only, never configuration values).
        applied: String,
    },
    /// Windows kept refusing to replace or delete the file because another program had it
    /// open (an editor, a scanner, Codex reading it), through every retry. Nothing changed.
    #[error(
        "could not {action} {}: another program kept it open through {attempts} attempts \
         ({source}); close programs using it and retry (nothing was changed)",
        shown_path(path)
    )]
    StillInUse {
        /// What was attempted: `replace` or `remove`.
        action: &'static str,
        /// The file (a symlink's final target).
        path: PathBuf,
        /// How many times it was tried.
        attempts: u32,
        /// The operating system's error from the last attempt.
        #[source]
        source: io::Error,
    },
    /// The file kept changing under us while we edited it (another program writing it).
    #[error(
        "{}: the file changed while it was being edited; retry when the other writer is done",
        shown_path(path)
    )]
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

impl From<atomic_file::FileError> for Error {
    fn from(err: atomic_file::FileError) -> Self {
        use atomic_file::FileError;
        match err {
            FileError::NotRegular { path, kind } => Error::NotRegularFile { path, kind },
            FileError::TooLarge { path, limit } => Error::FileTooLarge { path, limit },
            FileError::StillInUse {
                action,
                path,
                attempts,
                source,
            } => Error::StillInUse {
                action,
                path,
                attempts,
                source,
            },
            FileError::SymlinkLoop { path, .. } => Error::io(
                "resolve",
                path,
                io::Error::other("too many levels of symbolic links"),
            ),
            FileError::Io {
                action,
                path,
                source,
            } => Error::Io {
                action,
                path,
                source,
            },
            // FileError is non-exhaustive: keep whatever a newer variant says and its path.
            other => Error::io(
                "use",
                other.path().to_path_buf(),
                io::Error::other(other.to_string()),
            ),
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
        // Paths written out whole: joining onto a Unix-style path would put a `\` into it
        // on Windows, a difference of the test's making (real paths are native throughout).
        let path = PathBuf::from("/home/me/.codex/config.toml");
        let record = PathBuf::from("/home/me/.codex/config.toml.revert.json");
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
                record: record.clone(),
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
                path: record,
                reason: "not valid JSON at line 1, column 3".into(),
            },
            Error::StillInUse {
                action: "replace",
                path: path.clone(),
                attempts: 10,
                source: io::Error::other("Access denied. (os error 5)"),
            },
        ];
        let text: Vec<String> = messages.iter().map(ToString::to_string).collect();
        insta::assert_snapshot!(text.join("\n"));
    }

    #[test]
    fn hostile_paths_keys_and_reasons_are_escaped() {
        let path = PathBuf::from("/tmp/x\r\nError: restored\x1b[2J\u{202e}/config.toml");
        let messages = [
            Error::Config {
                path: path.clone(),
                source: EditError::NotATable {
                    key_path: "model_providers.\u{1b}]0;t\u{7}".into(),
                    found: "string",
                },
            },
            Error::io(
                "read",
                path.clone(),
                io::Error::from(io::ErrorKind::NotFound),
            ),
            Error::PendingRevert {
                config: path.clone(),
                record: path.clone(),
            },
            Error::ConcurrentModification { path: path.clone() },
            Error::InvalidRecordFile {
                path: path.clone(),
                reason: "bad\nline".into(),
            },
            Error::Config {
                path: path.clone(),
                source: EditError::InvalidInput {
                    field: "provider id".into(),
                    reason: "`a\u{85}b\u{2066}` is not allowed".into(),
                },
            },
        ];
        for m in &messages {
            let text = m.to_string();
            assert!(!text.chars().any(is_unsafe_char), "{text:?}");
        }
        insta::assert_snapshot!(messages[0].to_string(), @r"/tmp/x\x0d\x0aError: restored\x1b[2J\u{202e}/config.toml: `model_providers.\x1b]0;t\x07` is a string, not a table; rename or remove it and retry");
    }

    proptest::proptest! {
        #[test]
        fn shown_text_never_holds_an_unsafe_char_and_keeps_plain_text(text in proptest::prelude::any::<String>()) {
            let out = shown(&text).to_string();
            proptest::prop_assert!(!out.chars().any(is_unsafe_char));
            if !text.chars().any(is_unsafe_char) {
                proptest::prop_assert_eq!(out, text);
            }
        }
    }

    #[test]
    fn rollback_messages_say_what_happened_and_what_to_do() {
        let path = PathBuf::from("/home/me/.codex/config.toml");
        let record = PathBuf::from("/run/proxy/revert.json");
        let cause = || {
            Box::new(Error::io(
                "remove",
                record.clone(),
                io::Error::from(io::ErrorKind::PermissionDenied),
            ))
        };
        let messages = [
            Error::RolledBack {
                path: path.clone(),
                operation: "restore",
                source: cause(),
            },
            Error::PartiallyApplied {
                path: path.clone(),
                operation: "restore",
                source: cause(),
                undo_error: Box::new(Error::ConcurrentModification { path: path.clone() }),
                applied: format!(
                    "the configuration is restored but its revert record {} could not be \
                     deleted; delete it by hand (a restore with it changes nothing more)",
                    record.display()
                ),
            },
        ];
        let text: Vec<String> = messages.iter().map(ToString::to_string).collect();
        insta::assert_snapshot!(text.join("\n"));
    }

    #[test]
    fn file_errors_keep_their_meaning() {
        use atomic_file::{FileError, FileKind};
        let path = PathBuf::from("/home/me/.codex/config.toml");
        let err = Error::from(FileError::NotRegular {
            path: path.clone(),
            kind: FileKind::Fifo,
        });
        assert!(
            matches!(&err, Error::NotRegularFile { path: p, kind: FileKind::Fifo } if *p == path),
            "{err:?}"
        );
        let err = Error::from(FileError::TooLarge {
            path: path.clone(),
            limit: 7,
        });
        assert!(
            matches!(err, Error::FileTooLarge { limit: 7, .. }),
            "{err:?}"
        );
        let err = Error::from(FileError::StillInUse {
            action: "remove",
            path: path.clone(),
            attempts: 3,
            source: io::Error::from_raw_os_error(32),
        });
        assert!(
            matches!(&err, Error::StillInUse { action: "remove", attempts: 3, source, .. } if source.raw_os_error() == Some(32)),
            "{err:?}"
        );
        assert!(std::error::Error::source(&err).is_some());
        let err = Error::from(FileError::SymlinkLoop {
            path: path.clone(),
            hops: 40,
        });
        assert!(
            matches!(
                err,
                Error::Io {
                    action: "resolve",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "could not resolve /home/me/.codex/config.toml: too many levels of symbolic links"
        );
    }

    #[test]
    fn line_col_is_one_based_and_counts_chars() {
        assert_eq!(line_col("", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("é=1", 2), (1, 2));
        assert_eq!(line_col("a\n", 99), (2, 1));
    }
}
