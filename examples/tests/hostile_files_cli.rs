//! The example programs against files that are not what they should be: a FIFO, a socket,
//! a `/dev/zero` symlink, a directory or an oversized sparse file where `auth.json`,
//! `pool.json` or `config.toml` is expected. Each program must exit non-zero quickly with a
//! message naming the file and what it is — never hang (every run is bounded by
//! `common::run_bounded`) and never touch what is there. Also: the directories the
//! programs create for a pool or a Codex home are 0700. On Windows the directories and
//! oversized files are planted (FIFOs, sockets and device files are Unix file types; the
//! tests about those alone print SKIP) and there are no mode bits to check.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use auth_core::jwt::{self, IdTokenClaims, PlanType};
use auth_core::{AuthDocument, Secret, Timestamp, TokenData};
use auth_storage::PoolStore;
use auth_storage::pool::Account;
use common::{Run, run_bounded};

const LIMIT: Duration = Duration::from_secs(30);
#[cfg(not(unix))]
const UNIX_FILE_TYPES: &str = "it plants FIFOs or device files, which are Unix file types";

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

    fn plant(self, path: &Path) -> Option<Held> {
        match self {
            #[cfg(unix)]
            Self::Fifo => assert!(Command::new("mkfifo").arg(path).status().unwrap().success()),
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

    /// The words the message must use for this kind.
    fn words(self) -> &'static str {
        match self {
            #[cfg(unix)]
            Self::Fifo => "is a FIFO (named pipe), not a regular file",
            #[cfg(unix)]
            Self::Socket => "is a socket, not a regular file",
            #[cfg(unix)]
            Self::DevZeroLink => "is a character device, not a regular file",
            Self::Directory => "is a directory, not a regular file",
            Self::Oversized(_) => "is larger than",
        }
    }

    fn still_there(self, path: &Path) -> bool {
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

fn run(bin: &Path, sandbox: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env("HOME", sandbox.join("home"))
        .env("CODEX_HOME", sandbox.join("default-codex-home"))
        .env_remove("CODEX_POOL_DIR")
        .env_remove("OPENAI_API_KEY")
        .env("NO_COLOR", "1");
    run_bounded(cmd, LIMIT)
}

fn refused(run: &Run, planted: Planted, file: &str, what: &str) {
    assert_ne!(
        run.code,
        Some(0),
        "{what} {planted:?} must fail: {}",
        run.stdout
    );
    assert!(run.code.is_some(), "{what} {planted:?} ended by a signal");
    assert!(
        run.stderr.contains(planted.words()) && run.stderr.contains(file),
        "{what} {planted:?}: stderr names {file} and what it is:\n{}",
        run.stderr
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[allow(clippy::needless_update)]
fn login_doc(account_id: &str) -> AuthDocument {
    let id_token = jwt::encode_unsigned_for_testing(&IdTokenClaims {
        email: Some(format!("{account_id}@example.com")),
        exp: Some(4_000_000_000),
        chatgpt_plan_type: Some(PlanType::Plus),
        chatgpt_account_id: Some(account_id.to_owned()),
        ..IdTokenClaims::default()
    });
    let tokens = TokenData::new(
        Secret::new(id_token),
        Secret::new(format!("at-{account_id}")),
        Secret::new(format!("rt-{account_id}")),
        Some(account_id.to_owned()),
    )
    .unwrap();
    AuthDocument::chatgpt(tokens, Timestamp::now())
}

#[test]
fn auth_status_refuses_a_non_regular_auth_json_quickly() {
    let Some(bin) = common::example_or_skip("auth-status", "auth_status_refuses") else {
        return;
    };
    for planted in Planted::all(auth_core::regular_file::AUTH_JSON_MAX_BYTES) {
        let dir = tempfile::tempdir().unwrap();
        let auth = dir.path().join("auth.json");
        let _guard = planted.plant(&auth);
        for json in [false, true] {
            let mut args = vec!["--codex-home", s(dir.path())];
            if json {
                args.push("--json");
            }
            let out = run(&bin, dir.path(), &args);
            refused(&out, planted, "auth.json", "auth-status");
        }
        assert!(planted.still_there(&auth), "{planted:?}");
    }
}

#[test]
fn accounts_refuses_a_non_regular_pool_json_quickly() {
    let Some(bin) = common::example_or_skip("accounts", "accounts_refuses_pool") else {
        return;
    };
    for planted in Planted::all(auth_storage::pool::POOL_FILE_MAX_BYTES) {
        let dir = tempfile::tempdir().unwrap();
        let pool = dir.path().join("pool");
        std::fs::create_dir(&pool).unwrap();
        let _guard = planted.plant(&pool.join("pool.json"));
        let out = run(&bin, dir.path(), &["--pool-dir", s(&pool), "list"]);
        refused(&out, planted, "pool.json", "accounts list");
        let out = run(
            &bin,
            dir.path(),
            &["--pool-dir", s(&pool), "list", "--json"],
        );
        refused(&out, planted, "pool.json", "accounts list --json");
        // import reads a good auth.json but must not write into the hostile pool.
        let src = dir.path().join("src-home");
        auth_storage::atomic::write_atomic(
            &src.join("auth.json"),
            login_doc("acct-a").to_json_pretty().as_bytes(),
            ".auth-",
        )
        .unwrap();
        let out = run(
            &bin,
            dir.path(),
            &["--pool-dir", s(&pool), "import", "--codex-home", s(&src)],
        );
        refused(&out, planted, "pool.json", "accounts import");
        assert!(planted.still_there(&pool.join("pool.json")), "{planted:?}");
    }
}

#[test]
fn accounts_refuses_a_non_regular_auth_json_or_config_quickly() {
    let Some(bin) = common::example_or_skip("accounts", "accounts_refuses_auth") else {
        return;
    };
    for planted in Planted::all(auth_core::regular_file::AUTH_JSON_MAX_BYTES) {
        let dir = tempfile::tempdir().unwrap();
        let pool = dir.path().join("pool");
        let src = dir.path().join("src-home");
        std::fs::create_dir(&src).unwrap();
        let _guard = planted.plant(&src.join("auth.json"));
        let out = run(
            &bin,
            dir.path(),
            &["--pool-dir", s(&pool), "import", "--codex-home", s(&src)],
        );
        refused(&out, planted, "auth.json", "accounts import");
        assert!(planted.still_there(&src.join("auth.json")));
    }
    for planted in Planted::all(config_rewrite::CONFIG_MAX_BYTES) {
        // `use` reads the target home's config.toml to find where the CLI keeps logins.
        let dir = tempfile::tempdir().unwrap();
        let pool = dir.path().join("pool");
        seeded_pool(&pool);
        let target = dir.path().join("target-home");
        std::fs::create_dir(&target).unwrap();
        let _guard = planted.plant(&target.join("config.toml"));
        let out = run(
            &bin,
            dir.path(),
            &[
                "--pool-dir",
                s(&pool),
                "use",
                "1",
                "--codex-home",
                s(&target),
            ],
        );
        refused(&out, planted, "config.toml", "accounts use");
        assert!(
            !target.join("auth.json").exists(),
            "{planted:?}: nothing written"
        );
    }
}

#[test]
fn config_rewrite_refuses_a_non_regular_config_quickly() {
    let Some(bin) = common::example_or_skip("config-rewrite", "config_rewrite_refuses") else {
        return;
    };
    for planted in Planted::all(config_rewrite::CONFIG_MAX_BYTES) {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        let _guard = planted.plant(&config);
        let out = run(&bin, dir.path(), &["status", "--config", s(&config)]);
        refused(&out, planted, "config.toml", "config-rewrite status");
        let out = run(
            &bin,
            dir.path(),
            &[
                "apply",
                "--config",
                s(&config),
                "--provider",
                "proxy",
                "--base-url",
                "http://127.0.0.1:9/v1",
            ],
        );
        refused(&out, planted, "config.toml", "config-rewrite apply");
        assert!(planted.still_there(&config), "{planted:?}");
        assert!(!dir.path().join("config.toml.revert.json").exists());
    }
}

/// Missing directories are created (0700, and the files in them 0600, on Unix; Windows has
/// no mode bits, so there only their creation is checked, after a SKIP line for the modes).
#[test]
fn directories_the_programs_create_are_private() {
    let Some(bin) = common::example_or_skip("accounts", "directories_private") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let src = dir.path().join("src-home");
    auth_storage::atomic::write_atomic(
        &src.join("auth.json"),
        login_doc("acct-a").to_json_pretty().as_bytes(),
        ".auth-",
    )
    .unwrap();
    let pool: PathBuf = dir.path().join("a/b/pool");
    let out = run(
        &bin,
        dir.path(),
        &["--pool-dir", s(&pool), "import", "--codex-home", s(&src)],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // `codex logout` in the source home: a login lives in one Codex home at a time.
    std::fs::remove_file(src.join("auth.json")).unwrap();
    let target = dir.path().join("c/new-home");
    let out = run(
        &bin,
        dir.path(),
        &[
            "--pool-dir",
            s(&pool),
            "use",
            "1",
            "--codex-home",
            s(&target),
        ],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for d in ["src-home", "a", "a/b", "a/b/pool", "c", "c/new-home"] {
        assert!(dir.path().join(d).is_dir(), "{d}");
    }
    for f in [pool.join("pool.json"), target.join("auth.json")] {
        assert!(f.is_file(), "{f:?}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        for d in ["src-home", "a", "a/b", "a/b/pool", "c", "c/new-home"] {
            assert_eq!(mode(&dir.path().join(d)), 0o700, "{d}");
        }
        assert_eq!(
            mode(dir.path()),
            0o755,
            "an existing directory keeps its mode"
        );
        for f in [pool.join("pool.json"), target.join("auth.json")] {
            assert_eq!(mode(&f), 0o600, "{f:?}");
        }
    }
    #[cfg(not(unix))]
    common::skip(
        "directories_the_programs_create_are_private",
        "no mode bits on Windows: only the creation is checked",
    );
}

#[cfg(not(unix))]
#[test]
fn accounts_add_refuses_a_fifo_login_log_without_blocking() {
    common::skip(
        "accounts_add_refuses_a_fifo_login_log_without_blocking",
        UNIX_FILE_TYPES,
    );
}

#[cfg(unix)]
#[test]
fn accounts_add_refuses_a_fifo_login_log_without_blocking() {
    use examples::account_add::{AddOptions, add_account_blocking};
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool");
    std::fs::create_dir(&pool).unwrap();
    Planted::Fifo.plant(&pool.join("login.log"));
    let options = AddOptions::for_pool(&pool)
        .no_browser(true)
        .issuer(Some("http://127.0.0.1:9".to_owned()))
        .listen(Some("127.0.0.1:0".parse().unwrap()))
        .timeout(Duration::from_secs(5));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(add_account_blocking(&options).map(|a| a.to_string()));
    });
    let text = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a FIFO login.log must not block `accounts add`")
        .unwrap_err()
        .to_string();
    assert!(text.contains("login.log"), "{text}");
    assert!(text.contains("FIFO"), "{text}");
    assert!(
        PoolStore::new(&pool)
            .load()
            .unwrap()
            .pool
            .accounts
            .is_empty(),
        "nothing added"
    );
}

#[cfg(not(unix))]
#[test]
fn refusal_messages_of_the_programs() {
    common::skip("refusal_messages_of_the_programs", UNIX_FILE_TYPES);
}

/// What the programs print for a FIFO, with the temporary directory replaced by `[DIR]`.
#[cfg(unix)]
#[test]
fn refusal_messages_of_the_programs() {
    let (Some(status), Some(accounts), Some(rewrite)) = (
        common::example_or_skip("auth-status", "refusal_messages"),
        common::example_or_skip("accounts", "refusal_messages"),
        common::example_or_skip("config-rewrite", "refusal_messages"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("codex-home");
    std::fs::create_dir(&home).unwrap();
    Planted::Fifo.plant(&home.join("auth.json"));
    Planted::Fifo.plant(&home.join("config.toml"));
    let pool = dir.path().join("pool");
    std::fs::create_dir(&pool).unwrap();
    Planted::DevZeroLink.plant(&pool.join("pool.json"));
    let runs = [
        run(&status, dir.path(), &["--codex-home", s(&home)]),
        run(&accounts, dir.path(), &["--pool-dir", s(&pool), "list"]),
        run(
            &rewrite,
            dir.path(),
            &["status", "--config", s(&home.join("config.toml"))],
        ),
    ];
    let text: String = runs
        .iter()
        .map(|r| r.stderr.replace(s(dir.path()), "[DIR]"))
        .collect();
    insta::assert_snapshot!(text);
}

fn seeded_pool(pool: &Path) {
    PoolStore::new(pool)
        .update(|p| {
            let tokens = login_doc("acct-a").tokens.unwrap();
            p.upsert(Account::from_login(tokens, None, 1_700_000_000))
        })
        .unwrap();
}

#[test]
fn accounts_use_and_remove_refuse_hostile_files_and_change_nothing() {
    let Some(bin) = common::example_or_skip("accounts", "accounts_use_remove") else {
        return;
    };
    for planted in Planted::all(auth_core::regular_file::AUTH_JSON_MAX_BYTES) {
        // `use` first keeps the target home's current login: its auth.json is hostile.
        let dir = tempfile::tempdir().unwrap();
        let pool = dir.path().join("pool");
        seeded_pool(&pool);
        let before = std::fs::read(pool.join("pool.json")).unwrap();
        let target = dir.path().join("target-home");
        std::fs::create_dir(&target).unwrap();
        let _guard = planted.plant(&target.join("auth.json"));
        let out = run(
            &bin,
            dir.path(),
            &[
                "--pool-dir",
                s(&pool),
                "use",
                "1",
                "--codex-home",
                s(&target),
            ],
        );
        refused(&out, planted, "auth.json", "accounts use");
        assert!(
            planted.still_there(&target.join("auth.json")),
            "{planted:?}"
        );
        assert_eq!(std::fs::read(pool.join("pool.json")).unwrap(), before);
    }
    for planted in Planted::all(auth_storage::pool::POOL_FILE_MAX_BYTES) {
        let dir = tempfile::tempdir().unwrap();
        let pool = dir.path().join("pool");
        std::fs::create_dir(&pool).unwrap();
        let _guard = planted.plant(&pool.join("pool.json"));
        let out = run(&bin, dir.path(), &["--pool-dir", s(&pool), "remove", "1"]);
        refused(&out, planted, "pool.json", "accounts remove");
        assert!(planted.still_there(&pool.join("pool.json")), "{planted:?}");
    }
}

#[test]
fn rotation_proxy_refuses_a_non_regular_pool_json_at_start() {
    let Some(bin) = common::example_or_skip("rotation-proxy", "rotation_proxy_refuses") else {
        return;
    };
    for planted in Planted::all(auth_storage::pool::POOL_FILE_MAX_BYTES) {
        let dir = tempfile::tempdir().unwrap();
        let pool = dir.path().join("pool");
        std::fs::create_dir(&pool).unwrap();
        let home = dir.path().join("codex-home");
        std::fs::create_dir(&home).unwrap();
        std::fs::write(home.join("config.toml"), "model = \"o3\"\n").unwrap();
        let _guard = planted.plant(&pool.join("pool.json"));
        let out = run(
            &bin,
            dir.path(),
            &[
                "--listen",
                "127.0.0.1:0",
                "--pool-dir",
                s(&pool),
                "--codex-home",
                s(&home),
                "--upstream",
                "http://127.0.0.1:9/v1",
                "--token-url",
                "http://127.0.0.1:9/oauth/token",
            ],
        );
        refused(&out, planted, "pool.json", "rotation-proxy");
        assert!(planted.still_there(&pool.join("pool.json")), "{planted:?}");
        assert_eq!(
            std::fs::read_to_string(home.join("config.toml")).unwrap(),
            "model = \"o3\"\n",
            "config.toml not rewritten"
        );
    }
}

#[cfg(not(unix))]
#[test]
fn auth_status_refuses_a_link_to_a_silent_stdin_pipe() {
    common::skip(
        "auth_status_refuses_a_link_to_a_silent_stdin_pipe",
        "a link to /dev/stdin is a Unix thing",
    );
}

/// `auth.json` → `/dev/stdin` while stdin is a pipe nobody writes to: reading it would wait
/// forever; the program must refuse it as a FIFO at once.
#[cfg(unix)]
#[test]
fn auth_status_refuses_a_link_to_a_silent_stdin_pipe() {
    use std::process::Stdio;
    use std::time::Instant;
    let Some(bin) = common::example_or_skip("auth-status", "auth_status_stdin") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/dev/stdin", dir.path().join("auth.json")).unwrap();
    let mut child = Command::new(bin)
        .args(["--codex-home", s(dir.path())])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _silent_writer = child.stdin.take();
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("auth-status blocked on a /dev/stdin auth.json");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is a FIFO (named pipe), not a regular file"),
        "{stderr}"
    );
}
