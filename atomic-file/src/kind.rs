//! What a path turned out to be when a regular file was expected (pure).

use std::fmt;

/// What a path turned out to be when a regular file was expected.
///
/// ```
/// use atomic_file::FileKind;
/// assert_eq!(FileKind::Fifo.to_string(), "a FIFO (named pipe)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FileKind {
    /// A directory.
    Directory,
    /// A FIFO (named pipe): opening it for reading blocks until a writer appears.
    Fifo,
    /// A Unix domain socket.
    Socket,
    /// A character device, e.g. `/dev/zero` (never ends) or a terminal.
    CharDevice,
    /// A block device, e.g. a disk.
    BlockDevice,
    /// A symbolic link, where one is not followed (e.g. [`FileKind::of`] on
    /// `symlink_metadata`).
    Symlink,
    /// Anything else that is not a regular file.
    Other,
}

impl FileKind {
    /// The kind of a file from its metadata, `None` for a regular file.
    /// `std::fs::metadata` follows symlinks; `symlink_metadata` shows a link as
    /// [`Symlink`](Self::Symlink).
    ///
    /// ```
    /// use atomic_file::FileKind;
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
