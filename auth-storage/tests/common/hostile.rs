//! Real files that are not what they should be, planted where a regular file is expected,
//! and a deadline for operations that could block on them (Unix: FIFOs, sockets, devices).
//! Windows gets the kinds it can have at a plain path: a directory and an oversized file.
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
    #[cfg(unix)]
    Fifo,
    #[cfg(unix)]
    Socket,
    #[cfg(unix)]
    DevZeroLink,
    Directory,
    /// A regular but sparse file one byte over the given limit.
    Oversized(u64),
}

/// Keeps what [`Planted::plant`] made alive (a bound socket) until dropped.
pub(crate) struct PlantGuard {
    #[cfg(unix)]
    _socket: Option<std::os::unix::net::UnixListener>,
}

impl Planted {
    /// Every kind this OS can plant: [`special`](Self::special) and an oversized file.
    pub(crate) fn all(limit: u64) -> Vec<Planted> {
        let mut all = Self::special();
        all.push(Self::Oversized(limit));
        all
    }

    /// The kinds that are not regular files this OS can plant at a plain path (Windows: a
    /// directory; its pipes and devices live outside the file system's directories).
    pub(crate) fn special() -> Vec<Planted> {
        vec![
            #[cfg(unix)]
            Self::Fifo,
            #[cfg(unix)]
            Self::Socket,
            #[cfg(unix)]
            Self::DevZeroLink,
            Self::Directory,
        ]
    }

    /// Put it at `path`; the returned guard keeps a socket bound.
    pub(crate) fn plant(self, path: &Path) -> PlantGuard {
        #[cfg(unix)]
        let mut socket = None;
        match self {
            #[cfg(unix)]
            Self::Fifo => {
                let ok = std::process::Command::new("mkfifo")
                    .arg(path)
                    .status()
                    .unwrap()
                    .success();
                assert!(ok, "mkfifo");
            }
            #[cfg(unix)]
            Self::Socket => socket = Some(std::os::unix::net::UnixListener::bind(path).unwrap()),
            #[cfg(unix)]
            Self::DevZeroLink => std::os::unix::fs::symlink("/dev/zero", path).unwrap(),
            Self::Directory => std::fs::create_dir(path).unwrap(),
            Self::Oversized(limit) => std::fs::File::create(path)
                .unwrap()
                .set_len(limit + 1)
                .unwrap(),
        }
        PlantGuard {
            #[cfg(unix)]
            _socket: socket,
        }
    }

    /// Whether `err` is the refusal expected for this kind.
    pub(crate) fn refused_by(self, err: &StorageError) -> bool {
        match (self, err) {
            #[cfg(unix)]
            (Self::Fifo, StorageError::NotRegularFile { kind, .. }) => *kind == FileKind::Fifo,
            #[cfg(unix)]
            (Self::Socket, StorageError::NotRegularFile { kind, .. }) => *kind == FileKind::Socket,
            #[cfg(unix)]
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
        #[cfg(unix)]
        use std::os::unix::fs::FileTypeExt as _;
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return false;
        };
        let t = meta.file_type();
        match self {
            #[cfg(unix)]
            Self::Fifo => t.is_fifo(),
            #[cfg(unix)]
            Self::Socket => t.is_socket(),
            #[cfg(unix)]
            Self::DevZeroLink => t.is_symlink(),
            Self::Directory => t.is_dir(),
            Self::Oversized(limit) => t.is_file() && meta.len() == limit + 1,
        }
    }
}
