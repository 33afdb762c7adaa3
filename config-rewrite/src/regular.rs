//! I/O: open `config.toml` and revert records only when they are regular files of bounded
//! size, without blocking on a FIFO or device, and create missing directories 0700.
//!
//! Opening a FIFO for reading blocks until a writer appears, and `/dev/zero` never ends: the
//! file is opened with `O_NONBLOCK` (Unix) and the *opened handle* is checked with `fstat`,
//! so there is no window between a check and the open; the size is checked before reading
//! and the read stops after `limit + 1` bytes. On Windows the check is metadata-based.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _};
use std::path::Path;

use crate::error::Error;

/// Largest `config.toml` (or profile layer file) read: 8 MiB. Real files are a few KiB.
pub const CONFIG_MAX_BYTES: u64 = 8 << 20;

/// Largest revert record read: 64 MiB (it holds the original configuration text, JSON-escaped).
pub const RECORD_MAX_BYTES: u64 = 64 << 20;

/// What a path turned out to be when a regular file was expected.
///
/// ```
/// assert_eq!(config_rewrite::FileKind::Fifo.to_string(), "a FIFO (named pipe)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FileKind {
    /// A directory.
    Directory,
    /// A FIFO (named pipe).
    Fifo,
    /// A Unix domain socket.
    Socket,
    /// A character device such as `/dev/zero`.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// Anything else that is not a regular file.
    Other,
}

impl FileKind {
    fn of(meta: &std::fs::Metadata) -> Option<Self> {
        let kind = meta.file_type();
        if kind.is_file() {
            return None;
        }
        if kind.is_dir() {
            return Some(Self::Directory);
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt as _;
            if kind.is_fifo() {
                return Some(Self::Fifo);
            }
            if kind.is_socket() {
                return Some(Self::Socket);
            }
            if kind.is_char_device() {
                return Some(Self::CharDevice);
            }
            if kind.is_block_device() {
                return Some(Self::BlockDevice);
            }
        }
        Some(Self::Other)
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Directory => "a directory",
            Self::Fifo => "a FIFO (named pipe)",
            Self::Socket => "a socket",
            Self::CharDevice => "a character device",
            Self::BlockDevice => "a block device",
            Self::Other => "a special file",
        })
    }
}

fn not_regular(path: &Path, kind: FileKind) -> Error {
    Error::NotRegularFile {
        path: path.to_path_buf(),
        kind,
    }
}

/// Read `path` whole if it is a regular file of at most `limit` bytes; `Ok(None)` when it
/// does not exist.
pub(crate) fn read_regular(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, Error> {
    #[cfg(not(unix))]
    ensure_regular_or_missing(path)?;
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        // Opening a FIFO for reading would wait for a writer; with O_NONBLOCK it returns at
        // once and the fstat below refuses it.
        options.custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32);
    }
    let file: File = match options.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            // Opening a socket fails with ENXIO: name what is there, not the raw error.
            if let Ok(meta) = std::fs::metadata(path)
                && let Some(kind) = FileKind::of(&meta)
            {
                return Err(not_regular(path, kind));
            }
            return Err(Error::io("read", path, e));
        }
    };
    let meta = file.metadata().map_err(|e| Error::io("inspect", path, e))?;
    if let Some(kind) = FileKind::of(&meta) {
        return Err(not_regular(path, kind));
    }
    let too_large = || Error::FileTooLarge {
        path: path.to_path_buf(),
        limit,
    };
    if meta.len() > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", path, e))?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(Some(bytes))
}

/// `Ok(())` when nothing is at `path` or a regular file is (symlinks followed). Writers check
/// this so a rename never replaces a FIFO, device or directory put in place of the file.
pub(crate) fn ensure_regular_or_missing(path: &Path) -> Result<(), Error> {
    match std::fs::metadata(path) {
        Ok(meta) => match FileKind::of(&meta) {
            None => Ok(()),
            Some(kind) => Err(not_regular(path, kind)),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("inspect", path, e)),
    }
}

/// Create `dir` and missing parents with mode 0700 (Unix). Existing directories keep the
/// mode their owner gave them.
pub(crate) fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn special_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("config.toml");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let err = read_regular(&fifo, CONFIG_MAX_BYTES).unwrap_err();
        assert!(
            matches!(
                err,
                Error::NotRegularFile {
                    kind: FileKind::Fifo,
                    ..
                }
            ),
            "{err:?}"
        );
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let err = read_regular(&zero, CONFIG_MAX_BYTES).unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
        assert!(ensure_regular_or_missing(&zero).is_err());
        let err = read_regular(dir.path(), CONFIG_MAX_BYTES).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
    }

    #[test]
    fn the_size_limit_is_checked_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        File::create(&path).unwrap().set_len(11).unwrap();
        assert!(matches!(
            read_regular(&path, 10),
            Err(Error::FileTooLarge { limit: 10, .. })
        ));
        assert_eq!(read_regular(&path, 11).unwrap().unwrap().len(), 11);
        assert!(
            read_regular(&dir.path().join("missing"), 1)
                .unwrap()
                .is_none()
        );
    }
}
