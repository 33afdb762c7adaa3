//! Opening credential and state files that must be regular files of bounded size (I/O).
//!
//! A path where `auth.json`, `pool.json` or a log is expected can hold anything another
//! program (or a careless user) put there: a FIFO (opening it for reading blocks until a
//! writer appears — forever), a socket, a device (`/dev/zero` never ends), a directory, or a
//! symlink to any of these. Every file the crates of this workspace read or append to goes
//! through this module:
//!
//! * the file is opened with `O_NONBLOCK` (Unix), so opening a FIFO returns at once, and the
//!   *opened handle* is checked with `fstat` to be a regular file — no race between a check
//!   and the open;
//! * its size is checked against a per-kind limit before reading, and the read itself stops
//!   after `limit + 1` bytes, so a file that grows while read is refused too;
//! * symlinks are followed (their target is what is checked); [`resolve_symlinks`] gives
//!   writers the final target so they can replace it and keep the link.
//!
//! On Windows there are no FIFOs or device files in the file system; the checks there are
//! metadata-based (a directory or other non-file is refused before opening).
//!
//! ```
//! use auth_core::regular_file::{FileError, read_regular};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("auth.json");
//! assert_eq!(read_regular(&path, 1024)?, None); // missing is not an error
//! std::fs::write(&path, b"{}")?;
//! assert_eq!(read_regular(&path, 1024)?.as_deref(), Some(&b"{}"[..]));
//! // A directory where a file is expected is refused with a clear error.
//! let err = read_regular(dir.path(), 1024).unwrap_err();
//! assert!(matches!(err, FileError::NotRegular { .. }));
//! assert!(err.to_string().contains("is a directory, not a regular file"));
//! # Ok(()) }
//! ```

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

/// Largest `auth.json` read from disk (1 MiB; real files are a few KiB). The same limit
/// [`AuthDocument::from_json_slice`](crate::AuthDocument::from_json_slice) enforces.
pub const AUTH_JSON_MAX_BYTES: u64 = crate::auth_json::MAX_AUTH_JSON_LEN as u64;

/// How many symlinks [`resolve_symlinks`] follows before giving up (as Linux's `ELOOP`).
pub const MAX_SYMLINK_HOPS: usize = 40;

/// What a path turned out to be when a regular file was expected.
///
/// ```
/// use auth_core::regular_file::FileKind;
/// assert_eq!(FileKind::Fifo.to_string(), "a FIFO (named pipe)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FileKind {
    /// A directory.
    Directory,
    /// A FIFO (named pipe): reading it blocks until a writer appears.
    Fifo,
    /// A Unix domain socket.
    Socket,
    /// A character device, e.g. `/dev/zero` or a terminal.
    CharDevice,
    /// A block device, e.g. a disk.
    BlockDevice,
    /// A symbolic link, where one is not followed (e.g. in a pool backup slot).
    Symlink,
    /// Anything else that is not a regular file.
    Other,
}

impl FileKind {
    /// The kind of a file from its metadata (`std::fs::metadata` follows symlinks;
    /// `symlink_metadata` shows a link as [`Symlink`](Self::Symlink)); `None` for a regular
    /// file.
    ///
    /// ```
    /// use auth_core::regular_file::FileKind;
    /// let dir = tempfile::tempdir().unwrap();
    /// let meta = std::fs::metadata(dir.path()).unwrap();
    /// assert_eq!(FileKind::of(&meta), Some(FileKind::Directory));
    /// ```
    pub fn of(meta: &std::fs::Metadata) -> Option<Self> {
        let kind = meta.file_type();
        if kind.is_file() {
            return None;
        }
        if kind.is_symlink() {
            return Some(Self::Symlink);
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
            Self::Symlink => "a symbolic link",
            Self::Other => "a special file",
        })
    }
}

/// Why a file expected to be a regular file of bounded size could not be used.
///
/// The messages name the path and what to do; they never contain file contents.
///
/// ```
/// use auth_core::regular_file::{FileError, FileKind};
/// let err = FileError::NotRegular { path: "/home/me/.codex/auth.json".into(), kind: FileKind::Fifo };
/// assert_eq!(
///     err.to_string(),
///     "/home/me/.codex/auth.json is a FIFO (named pipe), not a regular file; \
///      move it away and put the real file there"
/// );
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The path (or the target of a symlink at it) is not a regular file.
    #[error(
        "{} is {kind}, not a regular file; move it away and put the real file there",
        crate::terminal::escape_control(&path.display().to_string())
    )]
    NotRegular {
        /// The path as given (not the symlink target).
        path: PathBuf,
        /// What it is.
        kind: FileKind,
    },
    /// The file is larger than the limit for its kind (checked before and while reading).
    #[error(
        "{} is larger than {limit} bytes, the most accepted for this file; it is not the \
         expected file — move it away",
        crate::terminal::escape_control(&path.display().to_string())
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
    /// Opening, inspecting or reading failed.
    #[error("could not {action} {}: {source}", crate::terminal::escape_control(&path.display().to_string()))]
    Io {
        /// What was being done: "open", "inspect", "read", …
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

impl FileError {
    fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Open `path` for reading if it is a regular file of at most `limit` bytes; `Ok(None)`
/// when it does not exist (a dangling symlink counts as missing).
///
/// Never blocks on a FIFO or device: the open is non-blocking and the opened handle is
/// checked. Returns the file and its size at open time.
///
/// # Errors
/// [`FileError::NotRegular`], [`FileError::TooLarge`], [`FileError::Io`].
///
/// ```
/// use auth_core::regular_file::{FileError, open_regular};
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("big");
/// std::fs::write(&path, vec![b' '; 100]).unwrap();
/// assert!(matches!(open_regular(&path, 10), Err(FileError::TooLarge { limit: 10, .. })));
/// assert_eq!(open_regular(&path, 100).unwrap().unwrap().1, 100);
/// ```
pub fn open_regular(path: &Path, limit: u64) -> Result<Option<(File, u64)>, FileError> {
    let mut options = OpenOptions::new();
    options.read(true);
    let file = match open_checked(path, &mut options)? {
        Some(file) => file,
        None => return Ok(None),
    };
    let size = file
        .metadata()
        .map_err(|e| FileError::io("inspect", path, e))?
        .len();
    if size > limit {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(Some((file, size)))
}

/// Read a whole regular file of at most `limit` bytes; `Ok(None)` when it does not exist.
///
/// The limit is checked on the opened file's size and again while reading (a file that
/// grows past it between the two is refused, not read without bound).
///
/// # Errors
/// [`FileError::NotRegular`], [`FileError::TooLarge`], [`FileError::Io`].
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("pool.json");
/// std::fs::write(&path, "{}").unwrap();
/// assert_eq!(auth_core::regular_file::read_regular(&path, 2).unwrap().unwrap(), b"{}");
/// ```
pub fn read_regular(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, FileError> {
    let Some((file, size)) = open_regular(path, limit)? else {
        return Ok(None);
    };
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| FileError::io("read", path, e))?;
    if bytes.len() as u64 > limit {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(Some(bytes))
}

/// Open (creating with `mode` on Unix if missing) `path` for appending, refusing anything
/// that is not a regular file without blocking (a FIFO without a reader, a device, a
/// directory). An existing file whose mode lets group or others in is tightened to `mode`.
///
/// # Errors
/// [`FileError::NotRegular`], [`FileError::Io`] (also when a loose mode cannot be
/// tightened, e.g. the file belongs to someone else).
///
/// ```
/// use std::io::Write as _;
/// let dir = tempfile::tempdir().unwrap();
/// let mut log = auth_core::regular_file::open_append_private(&dir.path().join("x.log"), 0o600).unwrap();
/// log.write_all(b"line\n").unwrap();
/// ```
pub fn open_append_private(path: &Path, mode: u32) -> Result<File, FileError> {
    let mut options = OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    let file = open_checked(path, &mut options)?
        .ok_or_else(|| FileError::io("create", path, io::Error::from(io::ErrorKind::NotFound)))?;
    tighten_mode(&file, path, mode)?;
    Ok(file)
}

/// Tighten an opened regular file's permissions to `mode` when it grants more than `mode`
/// (Unix; nothing on other platforms). Never loosens.
///
/// # Errors
/// [`FileError::Io`] when the mode cannot be changed (e.g. the file belongs to someone else).
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let file = std::fs::File::create(dir.path().join("f")).unwrap();
/// auth_core::regular_file::tighten_mode(&file, &dir.path().join("f"), 0o600).unwrap();
/// ```
pub fn tighten_mode(file: &File, path: &Path, mode: u32) -> Result<(), FileError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let current = file
            .metadata()
            .map_err(|e| FileError::io("inspect", path, e))?
            .permissions()
            .mode()
            & 0o7777;
        if current & !mode != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(current & mode))
                .map_err(|e| FileError::io("restrict the permissions of", path, e))?;
        }
    }
    #[cfg(not(unix))]
    let _ = (file, path, mode);
    Ok(())
}

/// Open `path` with `options` plus `O_NONBLOCK` (Unix), then check the opened handle is a
/// regular file; `Ok(None)` when the path does not exist. The building block of the other
/// functions here, for callers that need their own options (e.g. a lock file opened
/// read-write and created with a mode).
///
/// # Errors
/// [`FileError::NotRegular`] (also when the open itself fails because of what is there,
/// e.g. a directory opened for writing), [`FileError::Io`].
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let mut options = std::fs::OpenOptions::new();
/// options.read(true).write(true).create(true);
/// let lock = auth_core::regular_file::open_checked(&dir.path().join("pool.lock"), &mut options);
/// assert!(lock.unwrap().is_some());
/// assert!(auth_core::regular_file::open_checked(dir.path(), &mut options).is_err());
/// ```
pub fn open_checked(path: &Path, options: &mut OpenOptions) -> Result<Option<File>, FileError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        // Without O_NONBLOCK, opening a FIFO for reading waits for a writer (and for
        // writing, for a reader). With it the open returns at once (or fails with ENXIO for
        // a write-only open without reader) and the fstat below refuses the FIFO.
        options.custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32);
    }
    #[cfg(not(unix))]
    {
        // No FIFOs or devices in the Windows file system namespace we read; refuse
        // directories and other non-files from metadata before opening.
        match std::fs::metadata(path) {
            Ok(meta) => {
                if let Some(kind) = FileKind::of(&meta) {
                    return Err(FileError::NotRegular {
                        path: path.to_path_buf(),
                        kind,
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(FileError::io("inspect", path, e)),
        }
    }
    let file = match options.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            // Opening a directory for writing fails with EISDIR, a FIFO without reader
            // with ENXIO: name what is there instead of the raw error.
            if let Ok(meta) = std::fs::metadata(path)
                && let Some(kind) = FileKind::of(&meta)
            {
                return Err(FileError::NotRegular {
                    path: path.to_path_buf(),
                    kind,
                });
            }
            return Err(FileError::io("open", path, e));
        }
    };
    let meta = file
        .metadata()
        .map_err(|e| FileError::io("inspect", path, e))?;
    if let Some(kind) = FileKind::of(&meta) {
        return Err(FileError::NotRegular {
            path: path.to_path_buf(),
            kind,
        });
    }
    Ok(Some(file))
}

/// Check what is at `path` before replacing it: `Ok(())` when nothing is there or it is a
/// regular file (symlinks followed), [`FileError::NotRegular`] otherwise. Writers call it so
/// that a rename never replaces a FIFO, device or directory someone put in place of the
/// file, and never writes through to one.
///
/// # Errors
/// [`FileError::NotRegular`], [`FileError::Io`].
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// assert!(auth_core::regular_file::ensure_regular_or_missing(&dir.path().join("new")).is_ok());
/// assert!(auth_core::regular_file::ensure_regular_or_missing(dir.path()).is_err());
/// ```
pub fn ensure_regular_or_missing(path: &Path) -> Result<(), FileError> {
    match std::fs::metadata(path) {
        Ok(meta) => match FileKind::of(&meta) {
            None => Ok(()),
            Some(kind) => Err(FileError::NotRegular {
                path: path.to_path_buf(),
                kind,
            }),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FileError::io("inspect", path, e)),
    }
}

/// The path a write to `path` should replace so a symlink at `path` is kept: follows
/// symlinks (relative ones from their own directory) until a non-link or a missing entry,
/// at most [`MAX_SYMLINK_HOPS`] times. A path that is not a symlink is returned as is.
///
/// # Errors
/// [`FileError::Io`] on a symlink loop or an unreadable link.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let real = dir.path().join("real.json");
/// # #[cfg(unix)] {
/// std::os::unix::fs::symlink("real.json", dir.path().join("auth.json")).unwrap();
/// assert_eq!(auth_core::regular_file::resolve_symlinks(&dir.path().join("auth.json")).unwrap(), real);
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
    Err(FileError::io(
        "resolve",
        path,
        io::Error::other("too many levels of symbolic links"),
    ))
}

/// Create `dir` and any missing parents with mode 0700 on Unix (the umask can only remove
/// bits from that). Directories that already exist are left as they are: their owner chose
/// their mode.
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
    fn mkfifo(path: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("auth.json");
        mkfifo(&fifo);
        let err = read_regular(&fifo, 1024).unwrap_err();
        assert!(
            matches!(
                err,
                FileError::NotRegular {
                    kind: FileKind::Fifo,
                    ..
                }
            ),
            "{err:?}"
        );
        // Appending must not block either (no reader: ENXIO, named as a FIFO).
        let err = open_append_private(&fifo, 0o600).unwrap_err();
        assert!(
            matches!(
                err,
                FileError::NotRegular {
                    kind: FileKind::Fifo,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_to_a_device_is_refused_as_the_device() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("pool.json");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let err = read_regular(&link, 1024).unwrap_err();
        assert!(
            matches!(
                err,
                FileError::NotRegular {
                    kind: FileKind::CharDevice,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("pool.json is a character device"),
            "{err}"
        );
        assert!(ensure_regular_or_missing(&link).is_err());
        assert!(open_append_private(&link, 0o600).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_socket_and_a_directory_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let err = read_regular(&sock, 1024).unwrap_err();
        assert!(
            matches!(
                err,
                FileError::NotRegular {
                    kind: FileKind::Socket,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = open_append_private(dir.path(), 0o600).unwrap_err();
        assert!(
            matches!(
                err,
                FileError::NotRegular {
                    kind: FileKind::Directory,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_sparse_oversized_file_is_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        let file = File::create(&path).unwrap();
        file.set_len(AUTH_JSON_MAX_BYTES + 1).unwrap();
        let err = read_regular(&path, AUTH_JSON_MAX_BYTES).unwrap_err();
        assert!(matches!(err, FileError::TooLarge { .. }), "{err:?}");
        file.set_len(AUTH_JSON_MAX_BYTES).unwrap();
        assert_eq!(
            read_regular(&path, AUTH_JSON_MAX_BYTES)
                .unwrap()
                .unwrap()
                .len() as u64,
            AUTH_JSON_MAX_BYTES
        );
    }

    #[test]
    fn missing_and_dangling_are_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            read_regular(&dir.path().join("nope"), 10)
                .unwrap()
                .is_none()
        );
        #[cfg(unix)]
        {
            let link = dir.path().join("dangling");
            std::os::unix::fs::symlink("nowhere", &link).unwrap();
            assert!(read_regular(&link, 10).unwrap().is_none());
            assert_eq!(resolve_symlinks(&link).unwrap(), dir.path().join("nowhere"));
        }
    }

    #[cfg(unix)]
    #[test]
    fn symlink_loops_end_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::os::unix::fs::symlink("b", &a).unwrap();
        std::os::unix::fs::symlink("a", dir.path().join("b")).unwrap();
        assert!(resolve_symlinks(&a).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn append_tightens_a_loose_existing_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("login.log");
        std::fs::write(&path, b"old\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(open_append_private(&path, 0o600).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

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

    /// `/proc` files are regular files that report size 0 but hold more: the limit must hold
    /// while reading, not only on the reported size (as for a file growing after the check).
    #[cfg(target_os = "linux")]
    #[test]
    fn the_limit_holds_while_reading_when_the_size_lies() {
        let path = Path::new("/proc/self/status");
        assert_eq!(std::fs::metadata(path).unwrap().len(), 0);
        let err = read_regular(path, 16).unwrap_err();
        assert!(
            matches!(err, FileError::TooLarge { limit: 16, .. }),
            "{err:?}"
        );
        assert!(read_regular(path, 1 << 20).unwrap().unwrap().len() > 16);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn reads_back_exactly_up_to_the_limit_and_refuses_beyond(len in 0usize..4096, limit in 0u64..4096) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            std::fs::write(&path, &bytes).unwrap();
            match read_regular(&path, limit) {
                Ok(Some(read)) => {
                    proptest::prop_assert!(len as u64 <= limit);
                    proptest::prop_assert_eq!(read, bytes);
                }
                Err(FileError::TooLarge { limit: l, .. }) => {
                    proptest::prop_assert!(len as u64 > limit);
                    proptest::prop_assert_eq!(l, limit);
                }
                other => proptest::prop_assert!(false, "{:?}", other),
            }
        }
    }
}
