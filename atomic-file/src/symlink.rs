//! Following symlinks to the file a write should replace (I/O, bounded).
//!
//! Replacing a symlink's *target* rather than the link keeps the link in place, which is
//! what a user who symlinked `auth.json` or `config.toml` into a dotfiles repository wants,
//! and what the Codex CLI does when it writes through the link.

use std::io;
use std::path::{Path, PathBuf};

use crate::error::FileError;

/// How many symlinks [`resolve_symlinks`] follows before giving up (as Linux's `ELOOP`).
pub const MAX_SYMLINK_HOPS: usize = 40;

/// The path a write to `path` should replace so that a symlink at `path` is kept: follows
/// symlinks (relative ones from their own directory) until a non-link or a missing entry,
/// at most [`MAX_SYMLINK_HOPS`] times. A path that is not a symlink is returned as is; a
/// dangling link resolves to the missing target (a write creates it there).
///
/// # Errors
/// [`FileError::SymlinkLoop`] on a loop or a longer chain, [`FileError::Io`] when a link
/// cannot be read or a path inspected.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let real = dir.path().join("real.json");
/// assert_eq!(atomic_file::resolve_symlinks(&real).unwrap(), real);
/// # #[cfg(unix)] {
/// std::os::unix::fs::symlink("real.json", dir.path().join("auth.json")).unwrap();
/// assert_eq!(atomic_file::resolve_symlinks(&dir.path().join("auth.json")).unwrap(), real);
/// # }
/// ```
pub fn resolve_symlinks(path: &Path) -> Result<PathBuf, FileError> {
    let mut current = path.to_path_buf();
    for _ in 0..=MAX_SYMLINK_HOPS {
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let link = std::fs::read_link(&current)
                    .map_err(|e| FileError::io("read the link", &current, e))?;
                current = match current.parent() {
                    Some(parent) => parent.join(link),
                    None => link,
                };
            }
            Ok(_) => return Ok(current),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(current),
            Err(e) => return Err(FileError::io("inspect", &current, e)),
        }
    }
    Err(FileError::SymlinkLoop {
        path: path.to_path_buf(),
        hops: MAX_SYMLINK_HOPS,
    })
}

/// The file a replacement of `path` replaces: its final symlink target (or `path` itself),
/// checked to be a regular file or missing. A refusal names `path`, the path the caller
/// knows, not the link's target.
///
/// # Errors
/// [`FileError::NotRegular`] when a directory, FIFO, socket or device is there (directly or
/// as the link's target), [`FileError::SymlinkLoop`], [`FileError::Io`].
///
/// ```
/// use atomic_file::{FileError, FileKind, resolve_target};
/// let dir = tempfile::tempdir().unwrap();
/// let file = dir.path().join("config.toml");
/// assert_eq!(resolve_target(&file).unwrap(), file);
/// assert!(matches!(
///     resolve_target(dir.path()),
///     Err(FileError::NotRegular { kind: FileKind::Directory, .. })
/// ));
/// ```
pub fn resolve_target(path: &Path) -> Result<PathBuf, FileError> {
    let target = resolve_symlinks(path)?;
    match crate::read::ensure_regular_or_missing(&target) {
        Ok(()) => Ok(target),
        Err(FileError::NotRegular { kind, .. }) => Err(FileError::NotRegular {
            path: path.to_path_buf(),
            kind,
        }),
        Err(other) => Err(other),
    }
}
