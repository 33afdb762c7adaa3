//! Real files that are not what they should be where `config.toml` or a revert record is
//! expected (FIFOs, sockets, `/dev/zero` symlinks, directories, oversized sparse files), a
//! symlinked config, and the modes of what we create. Unix only; every operation that could
//! block runs on a thread with a deadline.
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use config_rewrite::{
    CONFIG_MAX_BYTES, Error, FileKind, ProviderSpec, RECORD_MAX_BYTES, RevertFile, Rewrite, Target,
};

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

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[derive(Debug, Clone, Copy)]
enum Planted {
    Fifo,
    Socket,
    DevZeroLink,
    Directory,
    Oversized(u64),
}

impl Planted {
    fn plant(self, path: &Path) -> Option<std::os::unix::net::UnixListener> {
        match self {
            Self::Fifo => assert!(
                std::process::Command::new("mkfifo")
                    .arg(path)
                    .status()
                    .unwrap()
                    .success()
            ),
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

    fn refused_by(self, err: &Error) -> bool {
        match (self, err) {
            (Self::Fifo, Error::NotRegularFile { kind, .. }) => *kind == FileKind::Fifo,
            (Self::Socket, Error::NotRegularFile { kind, .. }) => *kind == FileKind::Socket,
            (Self::DevZeroLink, Error::NotRegularFile { kind, .. }) => {
                *kind == FileKind::CharDevice
            }
            (Self::Directory, Error::NotRegularFile { kind, .. }) => *kind == FileKind::Directory,
            (Self::Oversized(limit), Error::FileTooLarge { limit: l, .. }) => *l == limit,
            _ => false,
        }
    }

    fn all(limit: u64) -> [Planted; 5] {
        [
            Self::Fifo,
            Self::Socket,
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

#[test]
fn a_symlinked_config_is_followed_and_kept_and_the_record_is_private() {
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

#[test]
fn missing_directories_are_created_private_and_existing_ones_left_alone() {
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config: PathBuf = base.path().join("a/b/config.toml");
    let revert = RevertFile::at(base.path().join("state/run/revert.json"));
    revert.apply(&config, &rewrite()).unwrap();
    for d in ["a", "a/b", "state", "state/run"] {
        assert_eq!(mode(&base.path().join(d)), 0o700, "{d}");
    }
    assert_eq!(mode(base.path()), 0o755);
    assert_eq!(mode(&config), 0o600, "a new config is private");
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
