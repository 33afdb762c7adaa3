//! Opening credential and state files that must be regular files of bounded size (I/O).
//!
//! A path where `auth.json`, `pool.json` or a log is expected can hold anything another
//! program (or a careless user) put there: a FIFO (opening it for reading blocks until a
//! writer appears — forever), a socket, a device (`/dev/zero` never ends), a directory, or a
//! symlink to any of these. Every file the crates of this workspace read or append to goes
//! through these functions:
//!
//! * the file is opened with `O_NONBLOCK` (Unix), so opening a FIFO returns at once, and the
//!   *opened handle* is checked with `fstat` to be a regular file — no race between a check
//!   and the open;
//! * its size is checked against a per-kind limit before reading, and the read itself stops
//!   after `limit + 1` bytes, so a file that grows while read is refused too;
//! * symlinks are followed (their target is what is checked); [`resolve_symlinks`] gives
//!   writers the final target so they can replace it and keep the link.
//!
//! The code lives in the [`atomic_file`] crate, which `auth-storage` and `config-rewrite`
//! use too (with its crash-safe [`atomic_file::replace`]); this module re-exports the
//! reading half under the names this crate has always had and adds the `auth.json` limit.
//!
//! On Windows there are no FIFOs or device files in the file system; the checks there are
//! metadata-based (a directory or other non-file is refused before opening).
//!
//! ```
//! use auth_core::regular_file::{AUTH_JSON_MAX_BYTES, FileError, read_regular};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("auth.json");
//! assert_eq!(read_regular(&path, AUTH_JSON_MAX_BYTES)?, None); // missing is not an error
//! std::fs::write(&path, b"{}")?;
//! assert_eq!(read_regular(&path, AUTH_JSON_MAX_BYTES)?.as_deref(), Some(&b"{}"[..]));
//! // A directory where a file is expected is refused with a clear error.
//! let err = read_regular(dir.path(), 1024).unwrap_err();
//! assert!(matches!(err, FileError::NotRegular { .. }));
//! assert!(err.to_string().contains("is a directory, not a regular file"));
//! # Ok(()) }
//! ```

use std::io;
use std::path::Path;

pub use atomic_file::{
    FileError, FileKind, MAX_SYMLINK_HOPS, ensure_regular_or_missing, open_append_private,
    open_checked, open_regular, read_regular, resolve_symlinks, tighten_mode,
};

/// Largest `auth.json` read from disk (1 MiB; real files are a few KiB). The same limit
/// [`AuthDocument::from_json_slice`](crate::AuthDocument::from_json_slice) enforces.
pub const AUTH_JSON_MAX_BYTES: u64 = crate::auth_json::MAX_AUTH_JSON_LEN as u64;

/// Create `dir` and any missing parents with mode 0700 on Unix (the umask can only remove
/// bits from that). Directories that already exist are left as they are: their owner chose
/// their mode. ([`atomic_file::create_private_dir_all`] with the operating system's error,
/// for callers that name the directory themselves.)
///
/// # Errors
/// The operating system's error.
///
/// ```
/// let base = tempfile::tempdir().unwrap();
/// let dir = base.path().join("a/b");
/// auth_core::regular_file::create_private_dir_all(&dir).unwrap();
/// # #[cfg(unix)] {
/// use std::os::unix::fs::PermissionsExt;
/// assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
/// assert_eq!(std::fs::metadata(base.path().join("a")).unwrap().permissions().mode() & 0o777, 0o700);
/// # }
/// ```
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    atomic_file::create_private_dir_all(dir).map_err(|e| match e {
        FileError::Io { source, .. } => source,
        other => io::Error::other(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The messages this crate's callers (and their snapshots) rely on are unchanged by
    /// the move to `atomic-file`.
    #[test]
    fn error_messages() {
        let path = PathBuf::from("/home/me/.codex/auth.json");
        let texts: Vec<String> = [
            FileKind::Directory,
            FileKind::Fifo,
            FileKind::Socket,
            FileKind::CharDevice,
            FileKind::BlockDevice,
            FileKind::Other,
        ]
        .into_iter()
        .map(|kind| {
            FileError::NotRegular {
                path: path.clone(),
                kind,
            }
            .to_string()
        })
        .chain([FileError::TooLarge {
            path: path.clone(),
            limit: AUTH_JSON_MAX_BYTES,
        }
        .to_string()])
        .collect();
        insta::assert_snapshot!(texts.join("\n"));
    }

    #[test]
    fn a_directory_error_is_the_os_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let err = create_private_dir_all(&file.join("sub")).unwrap_err();
        assert_ne!(err.kind(), io::ErrorKind::Other, "{err:?}");
    }

    #[test]
    fn the_auth_json_limit_is_the_parsers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        std::fs::File::create(&path)
            .unwrap()
            .set_len(AUTH_JSON_MAX_BYTES + 1)
            .unwrap();
        let err = read_regular(&path, AUTH_JSON_MAX_BYTES).unwrap_err();
        assert!(
            matches!(err, FileError::TooLarge { limit, .. } if limit == AUTH_JSON_MAX_BYTES),
            "{err:?}"
        );
    }
}
