//! Directories: private creation and making a rename or removal durable (I/O).

use std::path::Path;

use crate::error::FileError;

/// Create `dir` and any missing parents with mode 0700 on Unix (the umask can only remove
/// bits from that). Directories that already exist are left as they are: their owner chose
/// their mode.
///
/// # Errors
/// [`FileError::Io`] naming the directory.
///
/// ```
/// let base = tempfile::tempdir().unwrap();
/// let dir = base.path().join("a/b");
/// atomic_file::create_private_dir_all(&dir).unwrap();
/// # #[cfg(unix)] {
/// use std::os::unix::fs::PermissionsExt;
/// assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
/// assert_eq!(std::fs::metadata(base.path().join("a")).unwrap().permissions().mode() & 0o777, 0o700);
/// # }
/// ```
pub fn create_private_dir_all(dir: &Path) -> Result<(), FileError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| FileError::io("create the directory", dir, e))
}

/// Make a rename or removal in `dir` durable: fsync the directory that holds the entry
/// (Unix). On Windows this does nothing: directories cannot be opened as files there
/// without extra flags, and NTFS journals its metadata.
///
/// # Errors
/// [`FileError::Io`] naming the directory.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::write(dir.path().join("f"), b"x").unwrap();
/// atomic_file::sync_dir(dir.path()).unwrap();
/// ```
pub fn sync_dir(dir: &Path) -> Result<(), FileError> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| FileError::io("fsync the directory", dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_of_a_bare_name_is_the_current_directory() {
        assert_eq!(parent_dir(Path::new("auth.json")), Path::new("."));
        assert_eq!(parent_dir(Path::new("a/auth.json")), Path::new("a"));
    }

    #[test]
    fn errors_name_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        // A file where a parent directory should be.
        let err = create_private_dir_all(&file.join("sub")).unwrap_err();
        assert!(
            matches!(
                err,
                FileError::Io {
                    action: "create the directory",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("sub"), "{err}");
        #[cfg(unix)]
        {
            let err = sync_dir(&dir.path().join("missing")).unwrap_err();
            assert!(err.to_string().contains("missing"), "{err}");
        }
    }
}
