//! Real files that are not what they should be where `config.toml` or a revert record is
//! expected (FIFOs, sockets, `/dev/zero` symlinks, directories, oversized sparse files), a
//! symlinked config, and the modes of what we create. Every operation that could block runs
//! on a thread with a deadline. On Windows the directories and oversized files are planted
//! (FIFOs, sockets and device files are Unix file types) and missing directories are
//! checked to be created; the symlink tests print SKIP (creating a symlink there needs a
//! privilege a user does not normally hold) and there are no mode bits to check.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use config_rewrite::{
    CONFIG_MAX_BYTES, Error, FileKind, ProviderSpec, RECORD_MAX_BYTES, RevertFile, Rewrite, Target,
};

#[cfg(not(unix))]
fn skip(test: &str, reason: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIP: {test}: {reason}");
}

fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what} blocked for 20 s"))
}

fn rewrite() -> Rewrite {
    Rewrite::route_to(
        ProviderSpec::new("proxy", "http://127.0.0.1:9/v1"),
        Target::TopLevel,
    )
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[derive(Debug, Clone, Copy)]
enum Planted {
    #[cfg(unix)]
    Fifo,
    #[cfg(unix)]
    Socket,
    #[cfg(unix)]
    DevZeroLink,
    Directory,
    Oversized(u64),
}

/// What keeps a planted thing alive (the listening socket), dropped after the test.
#[cfg(unix)]
type Held = std::os::unix::net::UnixListener;
#[cfg(not(unix))]
type Held = ();

impl Planted {
    fn plant(self, path: &Path) -> Option<Held> {
        match self {
            #[cfg(unix)]
            Self::Fifo => assert!(
                std::process::Command::new("mkfifo")
                    .arg(path)
                    .status()
                    .unwrap()
                    .success()
            ),
            #[cfg(unix)]
            Self::Socket => return Some(std::os::unix::net::UnixListener::bind(path).unwrap()),
            #[cfg(unix)]
            Self::DevZeroLink => std::os::unix::fs::symlink("/dev/zero", path).unwrap(),
            Self::Directory => std::fs::create_dir(path).unwrap(),
            Self::Oversized(limit) => std::fs::File::create(path)
                .unwrap()
                .set_len(limit + 1)
                .unwrap(),
        }
        None
    }

    fn refused_by(self, err: &Error) -> bool {
        match (self, err) {
            #[cfg(unix)]
            (Self::Fifo, Error::NotRegularFile { kind, .. }) => *kind == FileKind::Fifo,
            #[cfg(unix)]
            (Self::Socket, Error::NotRegularFile { kind, .. }) => *kind == FileKind::Socket,
            #[cfg(unix)]
            (Self::DevZeroLink, Error::NotRegularFile { kind, .. }) => {
                *kind == FileKind::CharDevice
            }
            (Self::Directory, Error::NotRegularFile { kind, .. }) => *kind == FileKind::Directory,
            (Self::Oversized(limit), Error::FileTooLarge { limit: l, .. }) => *l == limit,
            _ => false,
        }
    }

    fn all(limit: u64) -> Vec<Planted> {
        vec![
            #[cfg(unix)]
            Self::Fifo,
            #[cfg(unix)]
            Self::Socket,
            #[cfg(unix)]
            Self::DevZeroLink,
            Self::Directory,
            Self::Oversized(limit),
        ]
    }
}

fn kind_at(path: &Path) -> std::fs::FileType {
    std::fs::symlink_metadata(path).unwrap().file_type()
}

#[test]
fn a_config_that_is_not_a_regular_file_is_refused_and_left_alone() {
    for planted in Planted::all(CONFIG_MAX_BYTES) {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        let _guard = planted.plant(&config);
        let before = kind_at(&config);
        let c = config.clone();
        let err = bounded("apply", move || {
            config_rewrite::apply(&c, &rewrite()).unwrap_err()
        });
        assert!(planted.refused_by(&err), "apply {planted:?}: {err:?}");
        assert!(err.to_string().contains("config.toml"), "{err}");
        let c = config.clone();
        let err = bounded("RevertFile::apply", move || {
            RevertFile::beside(&c).apply(&c, &rewrite()).unwrap_err()
        });
        assert!(
            planted.refused_by(&err),
            "RevertFile::apply {planted:?}: {err:?}"
        );
        assert!(
            !RevertFile::beside(&config).is_pending().unwrap(),
            "{planted:?}"
        );
        let c = config.clone();
        let err = bounded("read_config", move || {
            config_rewrite::read_config(&c).unwrap_err()
        });
        assert!(planted.refused_by(&err), "read_config {planted:?}: {err:?}");
        assert_eq!(kind_at(&config), before, "{planted:?} left as it was");
    }
}

#[test]
fn a_revert_record_that_is_not_a_regular_file_is_refused() {
    for planted in Planted::all(RECORD_MAX_BYTES) {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "model = \"o3\"\n").unwrap();
        let revert = RevertFile::beside(&config);
        let _guard = planted.plant(revert.path());
        let r = revert.clone();
        let err = bounded("RevertFile::load", move || r.load().unwrap_err());
        assert!(planted.refused_by(&err), "load {planted:?}: {err:?}");
        let r = revert.clone();
        let err = bounded("RevertFile::restore", move || r.restore().unwrap_err());
        assert!(planted.refused_by(&err), "restore {planted:?}: {err:?}");
        // `apply` names what is there too instead of calling it a pending rewrite.
        let (r, c) = (revert.clone(), config.clone());
        let err = bounded("RevertFile::apply", move || {
            r.apply(&c, &rewrite()).unwrap_err()
        });
        assert!(planted.refused_by(&err), "apply {planted:?}: {err:?}");
        assert!(!err.to_string().contains("pending"), "{err}");
        let r = revert.clone();
        let err = bounded("RevertFile::is_pending", move || r.is_pending());
        match planted {
            Planted::Oversized(_) => assert!(err.unwrap(), "a file is there"),
            _ => assert!(
                planted.refused_by(&err.unwrap_err()),
                "is_pending {planted:?}"
            ),
        }
        // Storing a record over it is refused too (never written through or replaced).
        let applied = config_rewrite::apply_to_str(&config, Some(""), &Rewrite::new()).unwrap();
        let r = revert.clone();
        let record = applied.record().clone();
        if !matches!(planted, Planted::Oversized(_)) {
            let err = bounded("RevertFile::store", move || r.store(&record).unwrap_err());
            assert!(planted.refused_by(&err), "store {planted:?}: {err:?}");
        }
        assert_eq!(
            std::fs::read_to_string(&config).unwrap(),
            "model = \"o3\"\n"
        );
    }
}

#[cfg(not(unix))]
const NO_SYMLINKS: &str =
    "creating a symlink on Windows needs a privilege a user does not normally hold";

#[cfg(not(unix))]
#[test]
fn a_symlinked_config_is_followed_and_kept_and_the_record_is_private() {
    skip(
        "a_symlinked_config_is_followed_and_kept_and_the_record_is_private",
        NO_SYMLINKS,
    );
}

#[cfg(unix)]
#[test]
fn a_symlinked_config_is_followed_and_kept_and_the_record_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("dotfiles/codex.toml");
    std::fs::create_dir(real.parent().unwrap()).unwrap();
    std::fs::write(&real, "model = \"o3\"\n").unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let config = home.join("config.toml");
    std::os::unix::fs::symlink("../dotfiles/codex.toml", &config).unwrap();
    let revert = RevertFile::beside(&config);
    revert.apply(&config, &rewrite()).unwrap();
    assert!(kind_at(&config).is_symlink(), "the link is kept");
    assert!(
        std::fs::read_to_string(&real)
            .unwrap()
            .contains("model_provider")
    );
    assert_eq!(mode(&real), 0o640, "the config keeps its own mode");
    assert_eq!(
        mode(revert.path()),
        0o600,
        "the record holds the original text"
    );
    revert.restore().unwrap();
    assert!(kind_at(&config).is_symlink());
    assert_eq!(std::fs::read_to_string(&real).unwrap(), "model = \"o3\"\n");
}

/// Missing directories are created (0700 on Unix; Windows has no mode bits, so there only
/// their creation is checked).
#[test]
fn missing_directories_are_created_private_and_existing_ones_left_alone() {
    let base = tempfile::tempdir().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let config: PathBuf = base.path().join("a").join("b").join("config.toml");
    let revert = RevertFile::at(base.path().join("state").join("run").join("revert.json"));
    revert.apply(&config, &rewrite()).unwrap();
    for d in ["a", "a/b", "state", "state/run"] {
        assert!(base.path().join(d).is_dir(), "{d}");
        #[cfg(unix)]
        assert_eq!(mode(&base.path().join(d)), 0o700, "{d}");
    }
    assert!(revert.is_pending().unwrap());
    #[cfg(unix)]
    {
        assert_eq!(mode(base.path()), 0o755);
        assert_eq!(mode(&config), 0o600, "a new config is private");
    }
    revert.restore().unwrap().unwrap();
    assert!(!config.exists(), "the created config is removed again");
}

#[test]
fn refusal_messages() {
    let path = PathBuf::from("/home/me/.codex/config.toml");
    let text = [
        Error::NotRegularFile {
            path: path.clone(),
            kind: FileKind::Fifo,
        },
        Error::NotRegularFile {
            path: path.clone(),
            kind: FileKind::Directory,
        },
        Error::FileTooLarge {
            path,
            limit: CONFIG_MAX_BYTES,
        },
    ]
    .map(|e| e.to_string())
    .join("\n");
    insta::assert_snapshot!(text);
}

#[cfg(not(unix))]
#[test]
fn a_symlink_loop_at_the_record_is_an_io_error_everywhere() {
    skip(
        "a_symlink_loop_at_the_record_is_an_io_error_everywhere",
        NO_SYMLINKS,
    );
}

#[cfg(unix)]
#[test]
fn a_symlink_loop_at_the_record_is_an_io_error_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "model = \"o3\"\n").unwrap();
    let revert = RevertFile::beside(&config);
    let other = dir.path().join("loop-b");
    std::os::unix::fs::symlink(&other, revert.path()).unwrap();
    std::os::unix::fs::symlink(revert.path(), &other).unwrap();
    let is_io = |e: &Error| matches!(e, Error::Io { .. });
    let err = revert.load().unwrap_err();
    assert!(is_io(&err), "load: {err:?}");
    let err = revert.restore().unwrap_err();
    assert!(is_io(&err), "restore: {err:?}");
    let err = revert.apply(&config, &rewrite()).unwrap_err();
    assert!(is_io(&err), "apply: {err:?}");
    assert!(!err.to_string().contains("pending"), "{err}");
    assert!(is_io(&revert.is_pending().unwrap_err()));
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "model = \"o3\"\n"
    );
    assert!(kind_at(revert.path()).is_symlink());
}

/// A dangling symlink at the record is "no record yet" for every operation: `is_pending`,
/// `load` and `restore` see nothing, and `apply` writes the record through the link (its
/// target is created in the target's directory, 0600), keeping the link; `restore` deletes
/// the target and keeps the link, so the next `apply` works the same way.
#[cfg(not(unix))]
#[test]
fn a_dangling_symlink_at_the_record_is_no_record_yet_and_is_written_through() {
    skip(
        "a_dangling_symlink_at_the_record_is_no_record_yet_and_is_written_through",
        NO_SYMLINKS,
    );
}

#[cfg(unix)]
#[test]
fn a_dangling_symlink_at_the_record_is_no_record_yet_and_is_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let original = "model = \"o3\"\n";
    std::fs::write(&config, original).unwrap();
    let revert = RevertFile::beside(&config);
    let target = dir.path().join("state/records/codex.json");
    std::os::unix::fs::symlink("state/records/codex.json", revert.path()).unwrap();

    for round in 0..2 {
        assert!(!revert.is_pending().unwrap(), "round {round}");
        assert!(revert.load().unwrap().is_none());
        assert!(revert.restore().unwrap().is_none());
        revert.apply(&config, &rewrite()).unwrap();
        assert!(kind_at(revert.path()).is_symlink(), "the link is kept");
        assert!(
            kind_at(&target).is_file(),
            "the record went to the link's target"
        );
        assert_eq!(mode(&target), 0o600);
        assert!(revert.is_pending().unwrap());
        assert!(
            std::fs::read_to_string(&config)
                .unwrap()
                .contains("model_provider")
        );
        assert!(matches!(
            revert.apply(&config, &rewrite()),
            Err(Error::PendingRevert { .. })
        ));
        revert.restore().unwrap().unwrap();
        assert_eq!(std::fs::read_to_string(&config).unwrap(), original);
        assert!(kind_at(revert.path()).is_symlink(), "still a link");
        assert!(!target.exists(), "the record itself is gone");
    }
}
