//! Opening files that must be regular files of bounded size (I/O).
//!
//! A path where a state file is expected can hold anything another program (or a careless
//! user) put there: a FIFO (opening it for reading blocks until a writer appears — forever),
//! a socket, a device (`/dev/zero` never ends), a directory, or a symlink to any of these.
//!
//! * The file is opened with `O_NONBLOCK` (Unix), so opening a FIFO returns at once, and the
//!   *opened handle* is checked with `fstat` to be a regular file — no race between a check
//!   and the open.
//! * Its size is checked against the caller's limit before reading, and the read itself
//!   stops after `limit + 1` bytes, so a file that grows while read (or a `/proc` file that
//!   reports size 0) is refused too.
//! * Symlinks are followed: their target is what is checked.
//!
//! On Windows there are no FIFOs or device files in the file system; the checks there are
//! metadata-based (a directory or other non-file is refused before opening).

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _};
use std::path::Path;

use crate::error::FileError;
use crate::kind::FileKind;

fn not_regular(path: &Path, kind: FileKind) -> FileError {
    FileError::NotRegular {
        path: path.to_path_buf(),
        kind,
    }
}

/// Open `path` with `options` plus `O_NONBLOCK` (Unix), then check that the opened handle is
/// a regular file; `Ok(None)` when the path does not exist. The building block of the other
/// readers here, for callers that need their own options (e.g. a lock file opened
/// read-write and created with a mode).
///
/// # Errors
/// [`FileError::NotRegular`] (also when the open itself fails because of what is there,
/// e.g. a directory opened for writing, a FIFO without reader opened for writing),
/// [`FileError::Io`].
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let mut options = std::fs::OpenOptions::new();
/// options.read(true).write(true).create(true);
/// let lock = atomic_file::open_checked(&dir.path().join("pool.lock"), &mut options);
/// assert!(lock.unwrap().is_some());
/// assert!(atomic_file::open_checked(dir.path(), &mut options).is_err());
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
        // No FIFOs or devices in the Windows file system namespace; refuse directories and
        // other non-files from metadata before opening.
        ensure_regular_or_missing(path)?;
    }
    let file = match options.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            // Opening a directory for writing fails with EISDIR, a FIFO without reader
            // with ENXIO, a socket with ENXIO: name what is there instead of the raw error.
            if let Ok(meta) = std::fs::metadata(path)
                && let Some(kind) = FileKind::of(&meta)
            {
                return Err(not_regular(path, kind));
            }
            return Err(FileError::io("open", path, e));
        }
    };
    let meta = file
        .metadata()
        .map_err(|e| FileError::io("inspect", path, e))?;
    if let Some(kind) = FileKind::of(&meta) {
        return Err(not_regular(path, kind));
    }
    Ok(Some(file))
}

/// Open `path` for reading if it is a regular file of at most `limit` bytes; `Ok(None)`
/// when it does not exist (a dangling symlink counts as missing). Returns the file and its
/// size at open time. Never blocks on a FIFO or device.
///
/// # Errors
/// [`FileError::NotRegular`], [`FileError::TooLarge`], [`FileError::Io`].
///
/// ```
/// use atomic_file::{FileError, open_regular};
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("big");
/// std::fs::write(&path, vec![b' '; 100]).unwrap();
/// assert!(matches!(open_regular(&path, 10), Err(FileError::TooLarge { limit: 10, .. })));
/// assert_eq!(open_regular(&path, 100).unwrap().unwrap().1, 100);
/// ```
pub fn open_regular(path: &Path, limit: u64) -> Result<Option<(File, u64)>, FileError> {
    let mut options = OpenOptions::new();
    options.read(true);
    let Some(file) = open_checked(path, &mut options)? else {
        return Ok(None);
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
/// use atomic_file::{FileError, read_regular};
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("pool.json");
/// assert_eq!(read_regular(&path, 1024).unwrap(), None); // missing is not an error
/// std::fs::write(&path, "{}").unwrap();
/// assert_eq!(read_regular(&path, 2).unwrap().unwrap(), b"{}");
/// // A directory where a file is expected is refused, naming what is there.
/// let err = read_regular(dir.path(), 1024).unwrap_err();
/// assert!(matches!(err, FileError::NotRegular { .. }));
/// assert!(err.to_string().contains("is a directory, not a regular file"));
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
/// directory). An existing file whose mode lets more in than `mode` is tightened to it.
///
/// # Errors
/// [`FileError::NotRegular`], [`FileError::Io`] (also when a loose mode cannot be
/// tightened, e.g. the file belongs to someone else).
///
/// ```
/// use std::io::Write as _;
/// let dir = tempfile::tempdir().unwrap();
/// let mut log = atomic_file::open_append_private(&dir.path().join("x.log"), 0o600).unwrap();
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
/// let path = dir.path().join("f");
/// let file = std::fs::File::create(&path).unwrap();
/// atomic_file::tighten_mode(&file, &path, 0o600).unwrap();
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
/// assert!(atomic_file::ensure_regular_or_missing(&dir.path().join("new")).is_ok());
/// assert!(atomic_file::ensure_regular_or_missing(dir.path()).is_err());
/// ```
pub fn ensure_regular_or_missing(path: &Path) -> Result<(), FileError> {
    match std::fs::metadata(path) {
        Ok(meta) => match FileKind::of(&meta) {
            None => Ok(()),
            Some(kind) => Err(not_regular(path, kind)),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FileError::io("inspect", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn not_regular_kind(result: Result<impl std::fmt::Debug, FileError>) -> FileKind {
        match result {
            Err(FileError::NotRegular { kind, .. }) => kind,
            other => panic!("expected NotRegular, got {other:?}"),
        }
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        #[cfg(unix)]
        {
            let dir = tempfile::tempdir().unwrap();
            let fifo = dir.path().join("auth.json");
            assert!(
                std::process::Command::new("mkfifo")
                    .arg(&fifo)
                    .status()
                    .unwrap()
                    .success()
            );
            assert_eq!(not_regular_kind(read_regular(&fifo, 1024)), FileKind::Fifo);
            // Appending must not block either (no reader: ENXIO, named as a FIFO).
            assert_eq!(
                not_regular_kind(open_append_private(&fifo, 0o600)),
                FileKind::Fifo
            );
            assert_eq!(
                not_regular_kind(ensure_regular_or_missing(&fifo)),
                FileKind::Fifo
            );
        }
        #[cfg(not(unix))]
        crate::skip(
            "a_fifo_is_refused_without_blocking",
            "no FIFOs in this file system",
        );
    }

    #[test]
    fn a_symlink_to_a_device_is_refused_as_the_device() {
        #[cfg(unix)]
        {
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
        #[cfg(not(unix))]
        crate::skip(
            "a_symlink_to_a_device_is_refused_as_the_device",
            "no device files here",
        );
    }

    #[test]
    fn a_socket_and_a_directory_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        #[cfg(unix)]
        {
            let sock = dir.path().join("s");
            let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
            assert_eq!(
                not_regular_kind(read_regular(&sock, 1024)),
                FileKind::Socket
            );
        }
        assert_eq!(
            not_regular_kind(read_regular(dir.path(), 1024)),
            FileKind::Directory
        );
        assert_eq!(
            not_regular_kind(open_append_private(dir.path(), 0o600)),
            FileKind::Directory
        );
    }

    #[test]
    fn a_sparse_oversized_file_is_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        let file = File::create(&path).unwrap();
        let limit = 1 << 20;
        file.set_len(limit + 1).unwrap();
        let err = read_regular(&path, limit).unwrap_err();
        assert!(matches!(err, FileError::TooLarge { .. }), "{err:?}");
        file.set_len(limit).unwrap();
        assert_eq!(
            read_regular(&path, limit).unwrap().unwrap().len() as u64,
            limit
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
            assert!(ensure_regular_or_missing(&link).is_ok());
        }
    }

    #[test]
    fn append_tightens_a_loose_existing_file() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("login.log");
            std::fs::write(&path, b"old\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            drop(open_append_private(&path, 0o600).unwrap());
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            // Never loosens.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
            drop(open_append_private(&path, 0o600));
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o400);
        }
        #[cfg(not(unix))]
        crate::skip(
            "append_tightens_a_loose_existing_file",
            "no Unix permission bits",
        );
    }

    /// `/proc` files are regular files that report size 0 but hold more: the limit must hold
    /// while reading, not only on the reported size (as for a file growing after the check).
    #[test]
    fn the_limit_holds_while_reading_when_the_size_lies() {
        #[cfg(target_os = "linux")]
        {
            let path = Path::new("/proc/self/status");
            assert_eq!(std::fs::metadata(path).unwrap().len(), 0);
            let err = read_regular(path, 16).unwrap_err();
            assert!(
                matches!(err, FileError::TooLarge { limit: 16, .. }),
                "{err:?}"
            );
            assert!(read_regular(path, 1 << 20).unwrap().unwrap().len() > 16);
        }
        #[cfg(not(target_os = "linux"))]
        crate::skip(
            "the_limit_holds_while_reading_when_the_size_lies",
            "needs Linux /proc",
        );
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
