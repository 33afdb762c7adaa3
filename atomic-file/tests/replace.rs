//! `replace`, `remove_durably` and the readers against real files: round trips, hostile
//! targets (directories, FIFOs, sockets, devices, symlink chains and loops), the Unix modes,
//! and failures that must leave the old file and no temporary file behind.

mod common;

#[cfg(unix)]
use std::path::Path;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use atomic_file::{
    FileError, FileKind, InUseRetry, ReplaceOptions, read_regular, remove_durably, replace,
};
#[cfg(unix)]
use atomic_file::{FileMode, MAX_SYMLINK_HOPS};
use common::{entries, skip};
use proptest::prelude::*;

const LIMIT: u64 = 1 << 20;

fn options() -> ReplaceOptions {
    ReplaceOptions::new(".test-")
}

fn not_regular(result: Result<impl std::fmt::Debug, FileError>) -> (PathBuf, FileKind) {
    match result {
        Err(FileError::NotRegular { path, kind }) => (path, kind),
        other => panic!("expected NotRegular, got {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the bytes, what was replaced is what is read back, and only the file is
    /// left in the directory.
    #[test]
    fn any_bytes_replaced_are_read_back_equal(
        versions in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..8192), 1..4)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        for bytes in &versions {
            let done = replace(&path, bytes, &options()).unwrap();
            prop_assert_eq!(&done.target, &path);
            prop_assert_eq!(done.attempts, 1);
            prop_assert!(done.dir_sync_error.is_none());
            prop_assert_eq!(read_regular(&path, LIMIT).unwrap(), Some(bytes.clone()));
        }
        prop_assert_eq!(entries(dir.path()), vec!["state.json".to_owned()]);
    }
}

#[test]
fn missing_directories_are_created_private() {
    let base = tempfile::tempdir().unwrap();
    let path = base.path().join("a/b/auth.json");
    replace(&path, b"{}", &options()).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"{}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for dir in ["a", "a/b"] {
            let mode = std::fs::metadata(base.path().join(dir))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{dir}");
        }
    }
}

#[test]
fn a_directory_in_the_files_place_is_refused_and_left_alone() {
    let base = tempfile::tempdir().unwrap();
    let path = base.path().join("state.json");
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("keep"), b"x").unwrap();
    let (named, kind) = not_regular(replace(&path, b"new", &options()));
    assert_eq!(
        (named.as_path(), kind),
        (path.as_path(), FileKind::Directory)
    );
    assert_eq!(
        not_regular(read_regular(&path, LIMIT)).1,
        FileKind::Directory
    );
    let (_, kind) = not_regular(remove_durably(&path, InUseRetry::default()));
    assert_eq!(kind, FileKind::Directory);
    assert_eq!(std::fs::read(path.join("keep")).unwrap(), b"x");
    assert_eq!(entries(base.path()), ["state.json"], "no temporary file");
}

#[test]
fn fifos_sockets_and_devices_are_refused_and_left_alone() {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        let base = tempfile::tempdir().unwrap();
        let fifo = base.path().join("fifo.json");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let socket = base.path().join("socket.json");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let device = base.path().join("device.json");
        std::os::unix::fs::symlink("/dev/null", &device).unwrap();
        let before = entries(base.path());
        for (path, kind) in [
            (&fifo, FileKind::Fifo),
            (&socket, FileKind::Socket),
            (&device, FileKind::CharDevice),
        ] {
            let started = Instant::now();
            let err = replace(path, b"new", &options()).unwrap_err();
            let shown = err.to_string();
            assert_eq!(not_regular(Err::<(), _>(err)), (path.clone(), kind));
            assert!(shown.contains(&*path.to_string_lossy()), "{shown}");
            assert_eq!(not_regular(read_regular(path, LIMIT)).1, kind);
            assert!(started.elapsed() < Duration::from_secs(5), "never blocks");
        }
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
        assert!(std::fs::metadata(&socket).unwrap().file_type().is_socket());
        assert!(
            std::fs::symlink_metadata(&device)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(entries(base.path()), before, "no temporary file");
    }
    #[cfg(not(unix))]
    skip(
        "fifos_sockets_and_devices_are_refused_and_left_alone",
        "no FIFOs, sockets or device files in this file system",
    );
}

#[cfg(unix)]
fn symlink_chain(base: &Path, len: usize, absolute: &[bool]) -> (PathBuf, PathBuf) {
    // Links alternate between two directories so relative targets must be resolved from
    // each link's own directory; the real file lives in a third one.
    let dirs = [base.join("a"), base.join("b"), base.join("real")];
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
    }
    let real = dirs[2].join("state.json");
    std::fs::write(&real, b"old").unwrap();
    let link = |i: usize| dirs[i % 2].join(format!("link{i}"));
    for i in 0..len {
        let (to_abs, to_rel) = if i + 1 == len {
            (real.clone(), PathBuf::from("../real/state.json"))
        } else {
            let next = link(i + 1);
            let rel = PathBuf::from("..")
                .join(next.parent().unwrap().file_name().unwrap())
                .join(next.file_name().unwrap());
            (next, rel)
        };
        let to = if absolute[i % absolute.len()] {
            to_abs
        } else {
            to_rel
        };
        std::os::unix::fs::symlink(to, link(i)).unwrap();
    }
    let start = if len == 0 { real.clone() } else { link(0) };
    (start, real)
}

#[cfg(unix)]
proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// A chain of up to MAX_SYMLINK_HOPS links (relative or absolute, across directories)
    /// is followed and kept, its final target replaced in its own directory; a longer one is
    /// a typed error and nothing is touched.
    #[test]
    fn symlink_chains_are_followed_and_kept(
        len in 0usize..=MAX_SYMLINK_HOPS + 3,
        absolute in prop::collection::vec(any::<bool>(), 1..4),
    ) {
        let base = tempfile::tempdir().unwrap();
        let (start, real) = symlink_chain(base.path(), len, &absolute);
        let before: Vec<_> = ["a", "b", "real"].iter().map(|d| entries(&base.path().join(d))).collect();
        match replace(&start, b"new", &options()) {
            Ok(done) => {
                prop_assert!(len <= MAX_SYMLINK_HOPS);
                prop_assert_eq!(done.target.canonicalize().unwrap(), real.canonicalize().unwrap());
                prop_assert_eq!(std::fs::read(&real).unwrap(), b"new");
                prop_assert_eq!(read_regular(&start, LIMIT).unwrap().unwrap(), b"new");
            }
            Err(FileError::SymlinkLoop { path, hops }) => {
                prop_assert!(len > MAX_SYMLINK_HOPS);
                prop_assert_eq!(path, start);
                prop_assert_eq!(hops, MAX_SYMLINK_HOPS);
                prop_assert_eq!(std::fs::read(&real).unwrap(), b"old");
            }
            Err(other) => prop_assert!(false, "{:?}", other),
        }
        let after: Vec<_> = ["a", "b", "real"].iter().map(|d| entries(&base.path().join(d))).collect();
        prop_assert_eq!(after, before, "links kept, no temporary file anywhere");
    }
}

#[test]
fn symlink_loops_end_with_a_typed_error_and_create_nothing() {
    #[cfg(unix)]
    {
        let base = tempfile::tempdir().unwrap();
        let own = base.path().join("self.json");
        std::os::unix::fs::symlink("self.json", &own).unwrap();
        let a = base.path().join("a.json");
        std::os::unix::fs::symlink("b.json", &a).unwrap();
        std::os::unix::fs::symlink("a.json", base.path().join("b.json")).unwrap();
        let before = entries(base.path());
        for path in [&own, &a] {
            let err = replace(path, b"x", &options()).unwrap_err();
            assert!(
                matches!(&err, FileError::SymlinkLoop { path: p, .. } if p == path),
                "{err:?}"
            );
            assert!(
                err.to_string().contains("levels of symbolic links"),
                "{err}"
            );
            // Opening it is refused by the OS (ELOOP), with the path named.
            let err = read_regular(path, LIMIT).unwrap_err();
            assert!(matches!(err, FileError::Io { .. }), "{err:?}");
        }
        assert_eq!(entries(base.path()), before);
    }
    #[cfg(not(unix))]
    skip(
        "symlink_loops_end_with_a_typed_error_and_create_nothing",
        "creating symlinks needs a privilege on Windows",
    );
}

#[test]
fn a_dangling_symlink_is_written_through_and_kept() {
    #[cfg(unix)]
    {
        let base = tempfile::tempdir().unwrap();
        let link = base.path().join("revert.json");
        std::os::unix::fs::symlink("records/r.json", &link).unwrap();
        let done = replace(&link, b"{}", &options()).unwrap();
        assert_eq!(done.target, base.path().join("records/r.json"));
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(read_regular(&link, LIMIT).unwrap().unwrap(), b"{}");
        assert_eq!(entries(&base.path().join("records")), ["r.json"]);
        // A symlink to a directory is refused, naming the link.
        let to_dir = base.path().join("to-dir.json");
        std::os::unix::fs::symlink("records", &to_dir).unwrap();
        let (named, kind) = not_regular(replace(&to_dir, b"x", &options()));
        assert_eq!((named, kind), (to_dir, FileKind::Directory));
    }
    #[cfg(not(unix))]
    skip(
        "a_dangling_symlink_is_written_through_and_kept",
        "creating symlinks needs a privilege on Windows",
    );
}

#[cfg(unix)]
fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[cfg(unix)]
proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Private is always 0600; Keep takes the old file's bits (or `new` for a new file);
    /// Exact sets exactly what was asked, umask or not.
    #[test]
    fn the_file_mode_is_what_was_chosen(old in 0u32..=0o777, chosen in 0u32..=0o777) {
        use std::os::unix::fs::PermissionsExt as _;
        let base = tempfile::tempdir().unwrap();
        let path = base.path().join("f");
        let set_old = |p: &Path| {
            std::fs::write(p, b"old").unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(old)).unwrap();
        };
        let cases = [
            (FileMode::Private, Some(old), 0o600),
            (FileMode::Private, None, 0o600),
            (FileMode::Keep { new: chosen }, Some(old), old),
            (FileMode::Keep { new: chosen }, None, chosen),
            (FileMode::Exact(chosen), Some(old), chosen),
            (FileMode::Exact(chosen), None, chosen),
        ];
        for (mode, existing, expected) in cases {
            let _ = std::fs::remove_file(&path);
            if existing.is_some() {
                set_old(&path);
            }
            replace(&path, b"new", &options().mode(mode)).unwrap();
            prop_assert_eq!(mode_of(&path), expected, "{:?} over {:?}", mode, existing);
            prop_assert_eq!(std::fs::read(&path).unwrap(), b"new");
        }
        // Through a symlink, Keep reads the target's bits and the link stays a link.
        let real = base.path().join("real");
        set_old(&real);
        let link = base.path().join("link");
        std::os::unix::fs::symlink("real", &link).unwrap();
        replace(&link, b"new", &options().mode(FileMode::Keep { new: chosen })).unwrap();
        prop_assert_eq!(mode_of(&real), old);
        prop_assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    }
}

#[test]
fn the_unix_mode_ignores_the_umask_and_an_open_file() {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let base = tempfile::tempdir().unwrap();
        let path = base.path().join("auth.json");
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        // A reader holds the old file open: on Unix that never delays the rename, and the
        // reader keeps the old contents through its handle.
        let mut held = std::fs::File::open(&path).unwrap();
        let done = replace(&path, b"new", &options()).unwrap();
        assert_eq!(done.attempts, 1);
        assert_eq!(mode_of(&path), 0o600);
        let mut old = String::new();
        std::io::Read::read_to_string(&mut held, &mut old).unwrap();
        assert_eq!(old, "old");
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }
    #[cfg(not(unix))]
    skip(
        "the_unix_mode_ignores_the_umask_and_an_open_file",
        "no Unix permission bits; Windows' own in-use case is tests/in_use.rs",
    );
}

/// `chattr +i` on a path until dropped: a real fault that stops even root.
#[cfg(target_os = "linux")]
struct Immutable(PathBuf);

#[cfg(target_os = "linux")]
impl Immutable {
    fn set(path: &Path, test: &str) -> Option<Self> {
        let ok = std::process::Command::new("chattr")
            .arg("+i")
            .arg(path)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            skip(
                test,
                "`chattr +i` is not available (not root, or no immutable flag on this file system)",
            );
            return None;
        }
        Some(Self(path.to_path_buf()))
    }
}

#[cfg(target_os = "linux")]
impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_failed_replace_keeps_the_old_file_and_leaves_no_temporary_file() {
    #[cfg(target_os = "linux")]
    {
        let test = "a_failed_replace_keeps_the_old_file_and_leaves_no_temporary_file";
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("home");
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("auth.json");
        std::fs::write(&path, b"old").unwrap();

        // The rename fails (EPERM on an immutable target): not retried on Unix, named.
        {
            let Some(_frozen) = Immutable::set(&path, test) else {
                return;
            };
            let started = Instant::now();
            let err = replace(&path, b"new", &options()).unwrap_err();
            assert!(
                matches!(
                    err,
                    FileError::Io {
                        action: "rename a temporary file over",
                        ..
                    }
                ),
                "{err:?}"
            );
            assert!(err.to_string().contains("auth.json"), "{err}");
            assert!(started.elapsed() < Duration::from_millis(500), "no retry");
            assert_eq!(entries(&dir), ["auth.json"], "temporary file removed");
            let err = remove_durably(&path, InUseRetry::default()).unwrap_err();
            assert!(
                matches!(
                    err,
                    FileError::Io {
                        action: "remove",
                        ..
                    }
                ),
                "{err:?}"
            );
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"old");

        // No temporary file can be created (immutable directory): the directory is named.
        {
            let Some(_frozen) = Immutable::set(&dir, test) else {
                return;
            };
            let err = replace(&path, b"new", &options()).unwrap_err();
            assert!(
                matches!(
                    &err,
                    FileError::Io { action: "create a temporary file in", path, .. } if *path == dir
                ),
                "{err:?}"
            );
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(entries(&dir), ["auth.json"]);
    }
    #[cfg(not(target_os = "linux"))]
    skip(
        "a_failed_replace_keeps_the_old_file_and_leaves_no_temporary_file",
        "uses Linux's immutable flag (chattr +i) as the fault",
    );
}

/// A reader running beside a writer only ever sees one whole version.
#[test]
fn readers_never_see_a_partial_file() {
    let base = tempfile::tempdir().unwrap();
    let path = base.path().join("pool.json");
    let long = vec![b'a'; 256 * 1024];
    let short = b"b".to_vec();
    replace(&path, &long, &options()).unwrap();
    let writes = 100;
    let writer = {
        let (path, long, short) = (path.clone(), long.clone(), short.clone());
        std::thread::spawn(move || {
            // Windows refuses a rename while the reader has the file open: retry patiently.
            let options = options().retry(InUseRetry::new(100, Duration::from_millis(1)));
            let mut retried = 0;
            for i in 0..writes {
                let bytes = if i % 2 == 0 { &short } else { &long };
                retried += replace(&path, bytes, &options).unwrap().attempts - 1;
            }
            retried
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut reads = 0;
    while !writer.is_finished() && Instant::now() < deadline {
        let bytes = read_regular(&path, LIMIT).unwrap().unwrap();
        assert!(
            bytes == long || bytes == short,
            "partial: {} bytes",
            bytes.len()
        );
        reads += 1;
        if cfg!(windows) {
            // Leave the writer gaps: Windows refuses every rename while the file is open.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    assert!(
        writer.is_finished(),
        "the writer finished within the deadline"
    );
    let retried = writer.join().unwrap();
    let _ = retried; // Windows: usually dozens; Unix: always 0.
    assert!(reads > 0);
    assert_eq!(entries(base.path()), ["pool.json"]);
}

/// The replaced file is an ordinary file: on Windows not marked `FILE_ATTRIBUTE_TEMPORARY`
/// (tempfile sets it on its own files and clears it only in its own persist). Wine drops
/// that attribute whatever is asked, so only Windows proper can fail this; Unix has no such
/// attribute.
#[test]
fn the_replaced_file_is_not_marked_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.json");
    atomic_file::replace(&path, b"{}", &options()).unwrap();
    #[cfg(windows)]
    {
        use std::os::windows::fs::MetadataExt as _;
        const FILE_ATTRIBUTE_TEMPORARY: u32 = 0x100;
        let attributes = std::fs::metadata(&path).unwrap().file_attributes();
        assert_eq!(attributes & FILE_ATTRIBUTE_TEMPORARY, 0, "{attributes:#x}");
    }
    assert_eq!(std::fs::read(&path).unwrap(), b"{}");
}
