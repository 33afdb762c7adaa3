//! Real files that are not what they should be, planted where a regular file is expected,
//! and a deadline for operations that could block on them (Unix: FIFOs, sockets, devices).
#![allow(dead_code)]

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use auth_core::regular_file::FileKind;
use auth_storage::StorageError;

/// Run `f` on a thread; a regression that blocks (e.g. opening a FIFO) fails the test
/// after 20 s instead of hanging it.
pub(crate) fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what} blocked for 20 s"))
}

/// Something planted where a regular file is expected.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Planted {
    Fifo,
    Socket,
    DevZeroLink,
    Directory,
    /// A regular but sparse file one byte over the given limit.
    Oversized(u64),
}

impl Planted {
    pub(crate) fn all(limit: u64) -> [Planted; 5] {
        [
            Self::Fifo,
            Self::Socket,
            Self::DevZeroLink,
            Self::Directory,
            Self::Oversized(limit),
        ]
    }

    /// Put it at `path`; the returned guard keeps a socket bound.
    pub(crate) fn plant(self, path: &Path) -> Option<std::os::unix::net::UnixListener> {
        match self {
            Self::Fifo => {
                let ok = std::process::Command::new("mkfifo")
                    .arg(path)
                    .status()
                    .unwrap()
                    .success();
                assert!(ok, "mkfifo");
            }
            Self::Socket => return Some(std::os::unix::net::UnixListener::bind(path).unwrap()),
            Self::DevZeroLink => std::os::unix::fs::symlink("/dev/zero", path).unwrap(),
            Self::Directory => std::fs::create_dir(path).unwrap(),
            Self::Oversized(limit) => std::fs::File::create(path)
                .unwrap()
                .set_len(limit + 1)
                .unwrap(),
        }
        None
    }

    /// Whether `err` is the refusal expected for this kind.
    pub(crate) fn refused_by(self, err: &StorageError) -> bool {
        match (self, err) {
            (Self::Fifo, StorageError::NotRegularFile { kind, .. }) => *kind == FileKind::Fifo,
            (Self::Socket, StorageError::NotRegularFile { kind, .. }) => *kind == FileKind::Socket,
            (Self::DevZeroLink, StorageError::NotRegularFile { kind, .. }) => {
                *kind == FileKind::CharDevice
            }
            (Self::Directory, StorageError::NotRegularFile { kind, .. }) => {
                *kind == FileKind::Directory
            }
            (Self::Oversized(limit), StorageError::FileTooLarge { limit: l, .. }) => *l == limit,
            _ => false,
        }
    }

    /// [`refused_by`](Self::refused_by), and the error names `at`.
    pub(crate) fn refused_at(self, err: &StorageError, at: &Path) -> bool {
        let names = match err {
            StorageError::NotRegularFile { path, .. } | StorageError::FileTooLarge { path, .. } => {
                path == at
            }
            _ => false,
        };
        names && self.refused_by(err)
    }

    /// What is at `path` now, to check a refused operation left it alone.
    pub(crate) fn still_there(self, path: &Path) -> bool {
        use std::os::unix::fs::FileTypeExt as _;
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return false;
        };
        let t = meta.file_type();
        match self {
            Self::Fifo => t.is_fifo(),
            Self::Socket => t.is_socket(),
            Self::DevZeroLink => t.is_symlink(),
            Self::Directory => t.is_dir(),
            Self::Oversized(limit) => t.is_file() && meta.len() == limit + 1,
        }
    }
}
