//! The one error type of this crate. Every message names the path it is about and says what
//! to do; none contains file contents.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::kind::FileKind;

/// Why a file could not be read, inspected, replaced or removed.
///
/// Paths in the messages are shown with control, bidi and line-separator characters escaped
/// (`\x1b`, `\u{202e}`): file names are chosen by whoever created them, and printed raw they
/// could forge output lines or send terminal escape sequences.
///
/// ```
/// use atomic_file::{FileError, FileKind};
/// let err = FileError::NotRegular { path: "/home/me/.codex/auth.json".into(), kind: FileKind::Fifo };
/// assert_eq!(
///     err.to_string(),
///     "/home/me/.codex/auth.json is a FIFO (named pipe), not a regular file; \
///      move it away and put the real file there"
/// );
/// assert_eq!(err.path(), std::path::Path::new("/home/me/.codex/auth.json"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The path (or the target of a symlink at it) is not a regular file: nothing was read,
    /// written through or replaced.
    #[error(
        "{} is {kind}, not a regular file; move it away and put the real file there",
        shown(path)
    )]
    NotRegular {
        /// The path as given (not the symlink target).
        path: PathBuf,
        /// What is there.
        kind: FileKind,
    },
    /// The file is larger than the limit for its kind (checked before and while reading).
    #[error(
        "{} is larger than {limit} bytes, the most accepted for this file; it is not the \
         expected file — move it away",
        shown(path)
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
    /// Following the symlinks at the path took more than `hops` steps (a loop, or a chain
    /// longer than [`MAX_SYMLINK_HOPS`](crate::MAX_SYMLINK_HOPS)).
    #[error(
        "could not resolve {}: more than {hops} levels of symbolic links (a loop?); point \
         the link at the real file",
        shown(path)
    )]
    SymlinkLoop {
        /// The path as given.
        path: PathBuf,
        /// How many links were followed before giving up.
        hops: usize,
    },
    /// Replacing or removing the file kept failing because another process had it open
    /// (Windows sharing violations: an anti-virus scanner, an editor, the Codex CLI reading
    /// it). Nothing changed: the old file is intact and the temporary file removed.
    #[error(
        "could not {action} {}: another process kept it open through {attempts} attempts \
         ({source}); close programs using it and retry",
        shown(path)
    )]
    StillInUse {
        /// What was attempted: `"replace"` or `"remove"`.
        action: &'static str,
        /// The file that is in use (for a replacement: the final symlink target).
        path: PathBuf,
        /// How many times it was tried.
        attempts: u32,
        /// The operating system's error from the last attempt.
        #[source]
        source: io::Error,
    },
    /// Opening, inspecting, reading, writing, renaming, removing or syncing failed.
    #[error("could not {action} {}: {source}", shown(path))]
    Io {
        /// What was being done: "open", "inspect", "write a temporary file in", …
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

impl FileError {
    /// The file or directory the error is about.
    ///
    /// ```
    /// let err = atomic_file::FileError::TooLarge { path: "big.json".into(), limit: 10 };
    /// assert_eq!(err.path(), std::path::Path::new("big.json"));
    /// ```
    pub fn path(&self) -> &Path {
        match self {
            Self::NotRegular { path, .. }
            | Self::TooLarge { path, .. }
            | Self::SymlinkLoop { path, .. }
            | Self::StillInUse { path, .. }
            | Self::Io { path, .. } => path,
        }
    }

    pub(crate) fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A control (C0, DEL, C1), bidi or line-separator character: escaped when a path is shown.
/// The same set and form as `auth_core::terminal` and config-rewrite's messages use (this
/// crate depends on neither, so it keeps its own few lines).
fn is_unsafe_char(c: char) -> bool {
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

/// A path for a message, its unsafe characters escaped (`\x1b`, `\u{202e}`).
struct Shown(String);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if !is_unsafe_char(c) {
                fmt::Write::write_char(f, c)?;
            } else if u32::from(c) < 0x80 {
                write!(f, "\\x{:02x}", u32::from(c))?;
            } else {
                write!(f, "\\u{{{:x}}}", u32::from(c))?;
            }
        }
        Ok(())
    }
}

fn shown(path: &Path) -> Shown {
    Shown(path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_path_and_say_what_to_do() {
        let path = PathBuf::from("/home/me/.codex/auth.json");
        let texts: Vec<String> = [
            FileKind::Directory,
            FileKind::Fifo,
            FileKind::Socket,
            FileKind::CharDevice,
            FileKind::BlockDevice,
            FileKind::Symlink,
            FileKind::Other,
        ]
        .into_iter()
        .map(|kind| FileError::NotRegular {
            path: path.clone(),
            kind,
        })
        .chain([
            FileError::TooLarge {
                path: path.clone(),
                limit: 1 << 20,
            },
            FileError::SymlinkLoop {
                path: path.clone(),
                hops: crate::MAX_SYMLINK_HOPS,
            },
            FileError::StillInUse {
                action: "replace",
                path: path.clone(),
                attempts: 10,
                source: io::Error::other("Access denied. (os error 5)"),
            },
            FileError::io(
                "rename a temporary file over",
                &path,
                io::Error::from(io::ErrorKind::PermissionDenied),
            ),
        ])
        .map(|e| {
            assert_eq!(e.path(), path, "{e:?}");
            e.to_string()
        })
        .collect();
        for text in &texts {
            assert!(text.contains("/home/me/.codex/auth.json"), "{text}");
        }
        insta::assert_snapshot!(texts.join("\n"));
    }

    #[test]
    fn hostile_paths_are_escaped() {
        let path = PathBuf::from("/tmp/x\r\nError: replaced\x1b[2J\u{202e}\u{85}/auth.json");
        let err = FileError::StillInUse {
            action: "remove",
            path,
            attempts: 3,
            source: io::Error::other("busy"),
        };
        let text = err.to_string();
        assert!(!text.chars().any(is_unsafe_char), "{text:?}");
        assert_eq!(
            text,
            "could not remove /tmp/x\\x0d\\x0aError: replaced\\x1b[2J\\u{202e}\\u{85}/auth.json: \
             another process kept it open through 3 attempts (busy); close programs using it \
             and retry"
        );
    }

    proptest::proptest! {
        #[test]
        fn shown_paths_never_hold_an_unsafe_char_and_keep_plain_text(text in proptest::prelude::any::<String>()) {
            let out = shown(Path::new(&text)).to_string();
            proptest::prop_assert!(!out.chars().any(is_unsafe_char));
            if !text.chars().any(is_unsafe_char) {
                proptest::prop_assert_eq!(out, Path::new(&text).display().to_string());
            }
        }
    }
}
