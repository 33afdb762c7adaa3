//! The `accounts` example as a user runs it: `import`, `list [--json]`, `use N`, `remove N`,
//! `add --no-browser`, with `--pool-dir` / `CODEX_POOL_DIR` / `CODEX_HOME` choosing the pool.
//! Every command runs the built binary (`target/<profile>/examples/accounts`, built by
//! `cargo test` before the tests); when it is missing the test prints SKIP.
//!
//! Each run gets its own `HOME`/`CODEX_HOME`, so nothing here can touch a real `~/.codex`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use auth_core::jwt::{self, IdTokenClaims, PlanType};
use auth_core::login::mock_issuer::{MOCK_ACCOUNT_ID, MOCK_CODE, MockIssuer, TokenReply};
use auth_core::redact::mask_email;
use auth_core::{AuthDocument, Secret, Timestamp, TokenData};
use auth_storage::PoolStore;
use common::{Run, codex_bin, run_bounded, skip};
use tokio::io::{AsyncBufReadExt, BufReader};

const ALICE: &str = "alice.private@example.com";
const BOB: &str = "bob.private@example.org";

fn accounts_bin(test: &str) -> Option<PathBuf> {
    common::example_or_skip("accounts", test)
}

/// Secrets of one synthetic login: the refresh token and access token are unique strings
/// so the tests can search every output for them.
struct Login {
    email: &'static str,
    account_id: &'static str,
    id_token: String,
    access: String,
    refresh: String,
}

impl Login {
    // auth-core may grow more claims; keep the defaults for those.
    #[allow(clippy::needless_update)]
    fn new(email: &'static str, account_id: &'static str) -> Self {
        let id_token = jwt::encode_unsigned_for_testing(&IdTokenClaims {
            email: Some(email.to_owned()),
            exp: Some(4_000_000_000),
            iat: Some(1_700_000_000),
            chatgpt_plan_type: Some(PlanType::Plus),
            chatgpt_account_id: Some(account_id.to_owned()),
            chatgpt_user_id: Some(format!("user-{account_id}")),
            ..IdTokenClaims::default()
        });
        let access = jwt::encode_unsigned_for_testing(&IdTokenClaims {
            exp: Some(4_000_000_000),
            chatgpt_account_id: Some(account_id.to_owned()),
            ..IdTokenClaims::default()
        });
        Self {
            email,
            account_id,
            id_token,
            access,
            refresh: format!("rt-SECRET-{account_id}"),
        }
    }

    /// Writes this login as `<home>/auth.json`, as `codex login` leaves it.
    fn write_to(&self, home: &Path) {
        let tokens = TokenData::new(
            Secret::new(self.id_token.clone()),
            Secret::new(self.access.clone()),
            Secret::new(self.refresh.clone()),
            Some(self.account_id.to_owned()),
        )
        .unwrap();
        std::fs::create_dir_all(home).unwrap();
        let doc = AuthDocument::chatgpt(tokens, Timestamp::now());
        std::fs::write(home.join("auth.json"), doc.to_json_pretty()).unwrap();
    }

    /// Strings that must never appear in anything the program prints.
    fn secrets(&self) -> Vec<String> {
        let local = self.email.split('@').next().unwrap().to_owned();
        vec![
            self.email.to_owned(),
            local,
            self.refresh.clone(),
            // Any 24-character window of the JWTs is enough to spot a leak.
            self.id_token[self.id_token.len() - 24..].to_owned(),
            self.access[self.access.len() - 24..].to_owned(),
        ]
    }
}

impl Run {
    fn ok(&self) -> &Self {
        assert_eq!(
            self.code,
            Some(0),
            "expected success\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }

    fn failed(&self) -> &Self {
        assert!(
            matches!(self.code, Some(c) if c != 0),
            "expected a non-zero exit, got {:?}\nstdout: {}\nstderr: {}",
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    fn assert_no_secrets(&self, logins: &[&Login]) {
        for login in logins {
            for secret in login.secrets() {
                assert!(
                    !self.stdout.contains(&secret) && !self.stderr.contains(&secret),
                    "output leaks {secret:?}\nstdout: {}\nstderr: {}",
                    self.stdout,
                    self.stderr
                );
            }
        }
    }
}

/// A sandbox: a private `HOME` and `CODEX_HOME` for the program, so defaults never reach
/// the real user's files.
struct Sandbox {
    root: tempfile::TempDir,
    bin: PathBuf,
}

impl Sandbox {
    fn new(bin: PathBuf) -> Self {
        Self {
            root: tempfile::tempdir().unwrap(),
            bin,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env("HOME", self.path("home"))
            .env("CODEX_HOME", self.path("default-codex-home"))
            .env_remove("CODEX_POOL_DIR")
            .env_remove("OPENAI_API_KEY")
            .env("NO_COLOR", "1");
        cmd
    }

    fn run(&self, args: &[&str]) -> Run {
        run_bounded(self.command(args), Duration::from_secs(30))
    }

    fn run_env(&self, args: &[&str], env: &[(&str, &Path)]) -> Run {
        let mut cmd = self.command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_bounded(cmd, Duration::from_secs(30))
    }
}

fn parse_list_json(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("`list --json` is not JSON ({e}): {}", run.stdout))
}

fn masked_emails(list: &serde_json::Value) -> Vec<String> {
    list["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["email"].as_str().unwrap().to_owned())
        .collect()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn import_list_use_remove_as_a_user_would() {
    let test = "import_list_use_remove_as_a_user_would";
    let Some(bin) = accounts_bin(test) else {
        return;
    };
    let sb = Sandbox::new(bin);
    let pool_dir = sb.path("my-pool");
    let pool = path_str(&pool_dir);
    let source = sb.path("source-home");
    let src = path_str(&source);
    let alice = Login::new(ALICE, "acct-alice");
    let bob = Login::new(BOB, "acct-bob");
    let all = [&alice, &bob];

    // Empty pool: a friendly hint, exit 0.
    let run = sb.run(&["--pool-dir", pool, "list"]);
    run.ok();
    assert!(run.stdout.contains("no accounts yet"), "{}", run.stdout);

    // import: added, masked.
    alice.write_to(&source);
    let run = sb.run(&["--pool-dir", pool, "import", "--codex-home", src]);
    run.ok().assert_no_secrets(&all);
    assert!(
        run.stdout
            .starts_with(&format!("added #1 {} (plus)", mask_email(ALICE))),
        "{}",
        run.stdout
    );

    // The same login again: deduplicated (its tokens refreshed), not a second entry.
    let refreshed = Login {
        refresh: "rt-SECRET-alice-rotated".into(),
        ..Login::new(ALICE, "acct-alice")
    };
    refreshed.write_to(&source);
    let run = sb.run(&["--pool-dir", pool, "import", "--codex-home", src]);
    run.ok().assert_no_secrets(&[&refreshed, &bob]);
    assert!(run.stdout.starts_with("updated #1 "), "{}", run.stdout);
    let stored = PoolStore::new(&pool_dir).load().unwrap().pool;
    assert_eq!(stored.accounts.len(), 1);
    assert_eq!(
        stored.accounts[0].tokens.refresh_token.expose(),
        "rt-SECRET-alice-rotated"
    );

    bob.write_to(&source);
    let run = sb.run(&["--pool-dir", pool, "import", "--codex-home", src]);
    run.ok().assert_no_secrets(&all);
    assert!(run.stdout.starts_with("added #2 "), "{}", run.stdout);

    // list: masked emails only, no token anywhere.
    let run = sb.run(&["--pool-dir", pool, "list"]);
    run.ok().assert_no_secrets(&[&refreshed, &alice, &bob]);
    for email in [ALICE, BOB] {
        assert!(run.stdout.contains(&mask_email(email)), "{}", run.stdout);
    }
    assert!(run.stdout.contains("acct-alice") && run.stdout.contains("acct-bob"));

    // list --json parses and says the same.
    let run = sb.run(&["--pool-dir", pool, "list", "--json"]);
    run.ok().assert_no_secrets(&[&refreshed, &alice, &bob]);
    let list = parse_list_json(&run);
    assert_eq!(
        masked_emails(&list),
        vec![mask_email(ALICE), mask_email(BOB)]
    );
    assert_eq!(list["accounts"][0]["number"], 1);
    assert_eq!(list["accounts"][1]["account_id"], "acct-bob");
    assert_eq!(list["accounts"][1]["active"], false);

    // use 2 into another home while the source home still holds bob: refused (a refresh
    // token works once; two homes' CLIs would spend each other's), nothing changed.
    let target = sb.path("target-home");
    let pool_before = std::fs::read(pool_dir.join("pool.json")).unwrap();
    let run = sb.run(&[
        "--pool-dir",
        pool,
        "use",
        "2",
        "--codex-home",
        path_str(&target),
    ]);
    run.failed().assert_no_secrets(&all);
    assert!(
        run.stderr
            .contains("two Codex homes cannot share one login")
            && run.stderr.contains("source-home"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read(pool_dir.join("pool.json")).unwrap(),
        pool_before
    );
    assert!(!target.join("auth.json").exists());

    // use 2 once the source home is logged out: the target Codex home gets bob's login,
    // 0600, and the real CLI accepts it.
    log_out(&source);
    let run = sb.run(&[
        "--pool-dir",
        pool,
        "use",
        "2",
        "--codex-home",
        path_str(&target),
    ]);
    run.ok().assert_no_secrets(&all);
    assert!(run.stdout.contains(&mask_email(BOB)), "{}", run.stdout);
    let written = auth_storage::FileStore::new(auth_storage::CodexHome::new(&target));
    let doc = auth_storage::CredentialStore::load(&written)
        .unwrap()
        .expect("use wrote auth.json");
    assert_eq!(doc.tokens.unwrap().refresh_token.expose(), bob.refresh);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(target.join("auth.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    match codex_bin() {
        Some(codex) => {
            let mut cmd = Command::new(codex);
            cmd.args(["login", "status"])
                .env("CODEX_HOME", &target)
                .env("HOME", sb.path("home"))
                .env_remove("OPENAI_API_KEY")
                .env_remove("CODEX_API_KEY");
            let status = run_bounded(cmd, Duration::from_secs(60));
            assert_eq!(status.code, Some(0), "{}{}", status.stdout, status.stderr);
            let text = format!("{}{}", status.stdout, status.stderr);
            assert!(text.contains("Logged in using ChatGPT"), "{text}");
        }
        None => skip(
            test,
            "Codex CLI not found (set CODEX_BIN); `codex login status` not run",
        ),
    }
    let list = parse_list_json(&sb.run(&["--pool-dir", pool, "list", "--json"]));
    assert_eq!(list["accounts"][1]["active"], true);
    assert_eq!(list["accounts"][0]["active"], false);
    let table = sb.run(&["--pool-dir", pool, "list"]);
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with('*') && l.contains(&mask_email(BOB))),
        "the active account is starred: {}",
        table.stdout
    );

    // remove 1: alice goes, bob stays active.
    let run = sb.run(&["--pool-dir", pool, "remove", "1"]);
    run.ok().assert_no_secrets(&all);
    assert!(
        run.stdout
            .starts_with(&format!("removed #1 {}", mask_email(ALICE))),
        "{}",
        run.stdout
    );
    let list = parse_list_json(&sb.run(&["--pool-dir", pool, "list", "--json"]));
    assert_eq!(masked_emails(&list), vec![mask_email(BOB)]);
    assert_eq!(list["accounts"][0]["active"], true);

    // --pool-dir was honoured: the pool is there and nothing went to the default place.
    assert!(pool_dir.join("pool.json").is_file());
    assert!(!sb.path("default-codex-home").join("accounts").exists());
    assert!(!sb.path("home").join(".codex").exists());
}

#[test]
fn use_keeps_the_login_it_replaces() {
    let test = "use_keeps_the_login_it_replaces";
    let Some(bin) = accounts_bin(test) else {
        return;
    };
    let sb = Sandbox::new(bin);
    let pool_dir = sb.path("pool");
    let pool = path_str(&pool_dir);
    let source = sb.path("source-home");
    let alice = Login::new(ALICE, "acct-alice");
    alice.write_to(&source);
    sb.run(&[
        "--pool-dir",
        pool,
        "import",
        "--codex-home",
        path_str(&source),
    ])
    .ok();
    log_out(&source);

    // The target home holds a login the pool does not know: `use` adds it first.
    let target = sb.path("target-home");
    let bob = Login::new(BOB, "acct-bob");
    bob.write_to(&target);
    let run = sb.run(&[
        "--pool-dir",
        pool,
        "use",
        "1",
        "--codex-home",
        path_str(&target),
    ]);
    run.ok().assert_no_secrets(&[&alice, &bob]);
    assert!(
        run.stdout.contains(&format!(
            "kept the login that was there as #2 {}",
            mask_email(BOB)
        )),
        "{}",
        run.stdout
    );
    let list = parse_list_json(&sb.run(&["--pool-dir", pool, "list", "--json"]));
    assert_eq!(
        masked_emails(&list),
        vec![mask_email(ALICE), mask_email(BOB)]
    );

    // The CLI refreshes alice in the home (her old refresh token is now spent); switching
    // away saves the new one, and switching back writes it, not the spent one.
    let alice_refreshed = Login {
        refresh: "rt-SECRET-alice-refreshed-by-codex".into(),
        ..Login::new(ALICE, "acct-alice")
    };
    alice_refreshed.write_to(&target);
    let run = sb.run(&[
        "--pool-dir",
        pool,
        "use",
        "2",
        "--codex-home",
        path_str(&target),
    ]);
    run.ok().assert_no_secrets(&[&alice_refreshed, &bob]);
    assert!(
        run.stdout.contains(&format!(
            "saved #1 {} (the login that was there) back to the pool",
            mask_email(ALICE)
        )),
        "{}",
        run.stdout
    );
    let stored = PoolStore::new(&pool_dir).load().unwrap().pool;
    assert_eq!(
        stored.accounts[0].tokens.refresh_token.expose(),
        "rt-SECRET-alice-refreshed-by-codex"
    );
    sb.run(&[
        "--pool-dir",
        pool,
        "use",
        "1",
        "--codex-home",
        path_str(&target),
    ])
    .ok();
    let home = auth_storage::FileStore::new(auth_storage::CodexHome::new(&target));
    let back = auth_storage::CredentialStore::load(&home).unwrap().unwrap();
    assert_eq!(
        back.tokens.unwrap().refresh_token.expose(),
        "rt-SECRET-alice-refreshed-by-codex"
    );

    // An API-key login cannot be kept: refused, nothing changed.
    let keyed = sb.path("api-key-home");
    std::fs::create_dir_all(&keyed).unwrap();
    let key_doc = r#"{"auth_mode": "apikey", "OPENAI_API_KEY": "sk-KEEP-ME"}"#;
    std::fs::write(keyed.join("auth.json"), key_doc).unwrap();
    let before = snapshot(&pool_dir);
    let run = sb.run(&[
        "--pool-dir",
        pool,
        "use",
        "1",
        "--codex-home",
        path_str(&keyed),
    ]);
    run.failed();
    assert!(run.stderr.contains("API-key login"), "{}", run.stderr);
    assert!(!run.stderr.contains("sk-KEEP-ME"), "{}", run.stderr);
    assert_eq!(
        std::fs::read_to_string(keyed.join("auth.json")).unwrap(),
        key_doc
    );
    assert_eq!(snapshot(&pool_dir), before);
}

#[test]
fn the_pool_location_follows_codex_pool_dir_then_codex_home() {
    let test = "the_pool_location_follows_codex_pool_dir_then_codex_home";
    let Some(bin) = accounts_bin(test) else {
        return;
    };
    let sb = Sandbox::new(bin);
    let source = sb.path("source-home");
    let alice = Login::new(ALICE, "acct-alice");
    alice.write_to(&source);
    let import = ["import", "--codex-home", path_str(&source)];

    // $CODEX_POOL_DIR wins over $CODEX_HOME.
    let env_pool = sb.path("env-pool");
    sb.run_env(&import, &[("CODEX_POOL_DIR", &env_pool)]).ok();
    assert!(env_pool.join("pool.json").is_file());
    assert!(!sb.path("default-codex-home").join("accounts").exists());

    // Without it: $CODEX_HOME/accounts.
    sb.run(&import).ok();
    let default_pool = sb.path("default-codex-home").join("accounts");
    assert_eq!(
        PoolStore::new(&default_pool)
            .load()
            .unwrap()
            .pool
            .accounts
            .len(),
        1
    );

    // --pool-dir wins over both.
    let flag_pool = sb.path("flag-pool");
    sb.run_env(
        &["--pool-dir", path_str(&flag_pool), "list", "--json"],
        &[("CODEX_POOL_DIR", &env_pool)],
    )
    .ok();
    let run = sb.run_env(
        &[
            "--pool-dir",
            path_str(&flag_pool),
            "import",
            "--codex-home",
            path_str(&source),
        ],
        &[("CODEX_POOL_DIR", &env_pool)],
    );
    run.ok();
    assert!(run.stdout.starts_with("added #1 "), "{}", run.stdout);
    assert!(flag_pool.join("pool.json").is_file());
}

/// Every file in `dir` with its bytes, to prove a failed command changed nothing.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn bad_input_fails_clearly_and_loses_nothing() {
    let test = "bad_input_fails_clearly_and_loses_nothing";
    let Some(bin) = accounts_bin(test) else {
        return;
    };
    let sb = Sandbox::new(bin);
    let pool_dir = sb.path("pool");
    let pool = path_str(&pool_dir);
    let source = sb.path("source-home");
    let alice = Login::new(ALICE, "acct-alice");
    let bob = Login::new(BOB, "acct-bob");
    for login in [&alice, &bob] {
        login.write_to(&source);
        sb.run(&[
            "--pool-dir",
            pool,
            "import",
            "--codex-home",
            path_str(&source),
        ])
        .ok();
    }
    // A Codex home that already holds a login `use` must not clobber on failure.
    let target = sb.path("target-home");
    alice.write_to(&target);
    let target_before = std::fs::read(target.join("auth.json")).unwrap();
    let pool_before = snapshot(&pool_dir);
    assert!(pool_before.iter().any(|(name, _)| name == "pool.json"));

    let missing = sb.path("no-such-home");
    let malformed = sb.path("malformed-home");
    std::fs::create_dir_all(&malformed).unwrap();
    std::fs::write(malformed.join("auth.json"), "{\"tokens\": {\"id_token\": ").unwrap();
    let leaky = sb.path("leaky-home");
    std::fs::create_dir_all(&leaky).unwrap();
    std::fs::write(
        leaky.join("auth.json"),
        r#"{"OPENAI_API_KEY": "sk-LEAK-ME", "tokens": "rt-LEAK-ME"}"#,
    )
    .unwrap();
    let api_key = sb.path("api-key-home");
    std::fs::create_dir_all(&api_key).unwrap();
    std::fs::write(
        api_key.join("auth.json"),
        r#"{"auth_mode": "apikey", "OPENAI_API_KEY": "sk-LEAK-ME"}"#,
    )
    .unwrap();
    let t = path_str(&target);
    let home_with_config = |name: &str, config: &str| {
        let dir = sb.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.toml"), config).unwrap();
        dir
    };
    let vault = home_with_config("vault-home", "cli_auth_credentials_store = \"vault\"\n");
    let broken_toml = home_with_config("broken-toml-home", "cli_auth_credentials_store = \n");
    let ephemeral = home_with_config(
        "ephemeral-home",
        "cli_auth_credentials_store = \"ephemeral\"\n",
    );

    // (arguments, what the message must say)
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["use", "3", "--codex-home", t],
            "no account #3 (the pool has 2)",
        ),
        (vec!["use", "0", "--codex-home", t], "numbered from 1"),
        (vec!["use", "-1", "--codex-home", t], "-1"),
        (vec!["use", "two", "--codex-home", t], "invalid value 'two'"),
        (vec!["remove", "3"], "no account #3 (the pool has 2)"),
        (vec!["remove", "0"], "numbered from 1"),
        (vec!["remove"], "required"),
        (
            vec!["import", "--codex-home", path_str(&missing)],
            "no login found in",
        ),
        (
            vec!["import", "--codex-home", path_str(&malformed)],
            "auth.json is not a usable Codex auth file",
        ),
        (
            vec!["import", "--codex-home", path_str(&leaky)],
            "auth.json is not a usable Codex auth file",
        ),
        (
            vec!["import", "--codex-home", path_str(&api_key)],
            "only ChatGPT logins",
        ),
        (
            vec!["use", "1", "--codex-home", path_str(&vault)],
            "config.toml: cli_auth_credentials_store: invalid credential store mode: \"vault\" \
             is not one of file, keyring, auto, ephemeral",
        ),
        (
            vec!["import", "--codex-home", path_str(&vault)],
            "is not one of file, keyring, auto, ephemeral",
        ),
        (
            vec!["use", "1", "--codex-home", path_str(&broken_toml)],
            "config.toml",
        ),
        (
            vec!["use", "1", "--codex-home", path_str(&ephemeral)],
            "no other program can hand it an account",
        ),
        (vec!["frobnicate"], "unrecognized subcommand 'frobnicate'"),
        (vec!["list", "--jsn"], "unexpected argument '--jsn'"),
    ];
    for (args, expected) in cases {
        let mut full = vec!["--pool-dir", pool];
        full.extend(&args);
        let run = sb.run(&full);
        run.failed().assert_no_secrets(&[&alice, &bob]);
        assert!(
            run.stderr.contains(expected),
            "{args:?}: stderr should say {expected:?}: {}",
            run.stderr
        );
        assert!(
            !run.stderr.contains("LEAK-ME") && !run.stdout.contains("LEAK-ME"),
            "{args:?} leaks file contents: {}",
            run.stderr
        );
        assert!(
            !run.stderr.contains("panicked"),
            "{args:?} panicked: {}",
            run.stderr
        );
        assert_eq!(
            snapshot(&pool_dir),
            pool_before,
            "{args:?} changed the pool directory"
        );
        assert_eq!(
            std::fs::read(target.join("auth.json")).unwrap(),
            target_before,
            "{args:?} changed the Codex home"
        );
    }

    for home in [&vault, &broken_toml, &ephemeral] {
        assert!(!home.join("auth.json").exists(), "{}", home.display());
    }

    // A pool written by a newer program is refused, not overwritten.
    let newer = sb.path("newer-pool");
    std::fs::create_dir_all(&newer).unwrap();
    let newer_doc = r#"{"version": 99, "accounts": [], "from_the_future": true}"#;
    std::fs::write(newer.join("pool.json"), newer_doc).unwrap();
    for args in [
        vec!["list"],
        vec!["import", "--codex-home", path_str(&source)],
        vec!["remove", "1"],
    ] {
        let mut full = vec!["--pool-dir", path_str(&newer)];
        full.extend(&args);
        let run = sb.run(&full);
        run.failed();
        assert!(
            run.stderr.contains("newer than the"),
            "{args:?}: {}",
            run.stderr
        );
        assert_eq!(
            std::fs::read_to_string(newer.join("pool.json")).unwrap(),
            newer_doc
        );
    }

    // Still everything there after all that.
    let list = parse_list_json(&sb.run(&["--pool-dir", pool, "list", "--json"]));
    assert_eq!(
        masked_emails(&list),
        vec![mask_email(ALICE), mask_email(BOB)]
    );
}

/// `accounts add --no-browser` against the loopback mock issuer: the program prints the
/// URL to open and the callback address; the "browser" comes back to the callback with
/// the URL's `state` and the issuer's code; the account lands in the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_signs_in_through_the_callback_and_stores_the_account() {
    let test = "add_signs_in_through_the_callback_and_stores_the_account";
    let Some(bin) = accounts_bin(test) else {
        return;
    };
    let carol = "carol.private@example.net";
    let issuer = MockIssuer::start(TokenReply::tokens_for(carol))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pool_dir = dir.path().join("new-pool");

    let (code, stdout, stderr) = run_add(&bin, &issuer, &pool_dir, dir.path(), |state| {
        format!("code={MOCK_CODE}&state={state}")
    })
    .await;
    let all = format!("{stdout}{stderr}");
    assert_eq!(code, Some(0), "{all}");
    assert!(
        stdout.contains(&format!("added #1 {} (plus)", mask_email(carol))),
        "{stdout}"
    );
    for secret in [
        carol,
        "carol.private",
        "mock-access-token",
        "mock-refresh-token",
    ] {
        assert!(!all.contains(secret), "output leaks {secret:?}: {all}");
    }
    // The code went to the token endpoint once.
    let requests = issuer.token_requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(requests[0].contains(&format!("code={MOCK_CODE}")));

    let pool = PoolStore::new(&pool_dir).load().unwrap().pool;
    assert_eq!(pool.accounts.len(), 1);
    assert_eq!(pool.accounts[0].email.as_deref(), Some(carol));
    assert_eq!(
        pool.accounts[0].account_id.as_deref(),
        Some(MOCK_ACCOUNT_ID)
    );
    assert_eq!(
        pool.accounts[0].tokens.refresh_token.expose(),
        "mock-refresh-token"
    );
    // Diagnostics beside the pool, without secrets.
    let log = std::fs::read_to_string(pool_dir.join("login.log")).unwrap();
    for secret in [carol, "mock-access-token", "mock-refresh-token", MOCK_CODE] {
        assert!(!log.contains(secret), "login.log leaks {secret:?}: {log}");
    }
    let pool_bytes = std::fs::read(pool_dir.join("pool.json")).unwrap();

    // A failed sign-in (the issuer said no) exits non-zero, says why, and changes nothing.
    let (code, stdout, stderr) = run_add(&bin, &issuer, &pool_dir, dir.path(), |state| {
        format!("error=access_denied&error_description=denied+by+user&state={state}")
    })
    .await;
    assert_ne!(code, Some(0), "{stdout}{stderr}");
    assert!(stderr.contains("access_denied"), "{stderr}");
    assert_eq!(
        std::fs::read(pool_dir.join("pool.json")).unwrap(),
        pool_bytes
    );
}

const HOSTILE: &str = "v\r\nerror: pool deleted\x1b[2J\x1b]0;owned\x07\u{9b}1m\u{202e}\u{2066}";

/// Claim values with CR/LF/ESC, C1 and bidi characters (from a hostile id token) reach
/// `import` and `list` escaped, one line per account; `list --json` is valid JSON with the
/// values intact.
#[test]
fn hostile_claims_are_escaped_in_import_and_list() {
    let test = "hostile_claims_are_escaped_in_import_and_list";
    let Some(bin) = accounts_bin(test) else {
        return;
    };
    let sb = Sandbox::new(bin);
    let pool_dir = sb.path("pool");
    let pool = path_str(&pool_dir);
    // Windows file names cannot hold control characters: there only the claims (and the
    // path of the missing home below, which is never created) are hostile.
    let home = if cfg!(windows) {
        sb.path("codex-home-x")
    } else {
        sb.path("codex-home-\x1b[31m\r\nx")
    };
    let id_token = jwt::encode_unsigned_json_for_testing(&serde_json::json!({
        "email": format!("{HOSTILE}@evil\u{1b}[31m.example"),
        "exp": 4_000_000_000_i64,
        "https://api.openai.com/auth": {
            "chatgpt_plan_type": HOSTILE,
            "chatgpt_account_id": HOSTILE,
            "chatgpt_user_id": HOSTILE,
        },
    }));
    let tokens = TokenData::new(
        Secret::new(id_token),
        Secret::new("at-SECRET-hostile".into()),
        Secret::new("rt-SECRET-hostile".into()),
        None,
    )
    .unwrap();
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(
        home.join("auth.json"),
        AuthDocument::chatgpt(tokens, Timestamp::now()).to_json_pretty(),
    )
    .unwrap();

    let import = sb.run(&[
        "--pool-dir",
        pool,
        "import",
        "--codex-home",
        path_str(&home),
    ]);
    import.ok();
    common::assert_terminal_safe("import stdout", &import.stdout);
    common::assert_terminal_safe("import stderr", &import.stderr);
    assert_eq!(import.stdout.lines().count(), 1, "{}", import.stdout);

    let list = sb.run(&["--pool-dir", pool, "list"]);
    list.ok();
    common::assert_terminal_safe("list stdout", &list.stdout);
    common::assert_terminal_safe("list stderr", &list.stderr);
    // A header and one account line: nothing forged.
    assert_eq!(list.stdout.lines().count(), 2, "{}", list.stdout);
    assert!(
        list.stdout
            .contains("v\\x0d\\x0aerror: pool deleted\\x1b[2J"),
        "{}",
        list.stdout
    );

    let json = sb.run(&["--pool-dir", pool, "list", "--json"]);
    json.ok();
    let doc = parse_list_json(&json);
    assert_eq!(doc["accounts"][0]["plan"], HOSTILE);
    assert_eq!(doc["accounts"][0]["account_id"], HOSTILE);
    common::assert_terminal_safe("list --json stdout", &json.stdout);

    // An error that names the hostile path is escaped too.
    let missing = sb.run(&[
        "--pool-dir",
        pool,
        "import",
        "--codex-home",
        path_str(&home.join("nope\x1b[2J")),
    ]);
    missing.failed();
    common::assert_terminal_safe("error stderr", &missing.stderr);
    assert_eq!(missing.stderr.lines().count(), 1, "{}", missing.stderr);
}

/// The issuer's `error_description` (and `error`) with CR/LF/ESC reach `accounts add`'s
/// stderr as one escaped line: no forged lines, no escape sequences.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_escapes_the_issuer_error_description() {
    let test = "add_escapes_the_issuer_error_description";
    let Some(bin) = accounts_bin(test) else {
        return;
    };
    let issuer = MockIssuer::start(TokenReply::tokens_for("dave@example.com"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pool_dir = dir.path().join("pool");
    // Percent-encode every byte, as a browser would send the issuer's redirect.
    let description: String =
        "denied\r\nadded #1 admin@example.com (pro)\x1b[2J\x1b]0;owned\x07\u{85}\u{202e}"
            .bytes()
            .map(|b| format!("%{b:02X}"))
            .collect();
    let (code, stdout, stderr) = run_add(&bin, &issuer, &pool_dir, dir.path(), |state| {
        format!("error=access_denied%1b&error_description={description}&state={state}")
    })
    .await;
    assert_ne!(code, Some(0), "{stdout}{stderr}");
    common::assert_terminal_safe("add stdout", &stdout);
    common::assert_terminal_safe("add stderr", &stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("denied\\x0d\\x0aadded #1"), "{stderr}");
    assert!(
        !stdout.lines().any(|l| l.starts_with("added #1")),
        "{stdout}"
    );
}

/// Runs `accounts --pool-dir POOL add --no-browser` against `issuer`, reads the printed URL
/// and callback address, sends the browser to the callback with `query(state)`, and returns
/// the exit code and output. Bounded: the program gives up after 20 s, we kill it after 30 s.
async fn run_add(
    bin: &Path,
    issuer: &MockIssuer,
    pool_dir: &Path,
    sandbox: &Path,
    query: impl FnOnce(&str) -> String,
) -> (Option<i32>, String, String) {
    let mut child = tokio::process::Command::new(bin)
        .args(["--pool-dir", path_str(pool_dir), "add", "--no-browser"])
        .args(["--issuer", &issuer.url(), "--listen", "127.0.0.1:0"])
        .args(["--timeout-secs", "20"])
        .env("HOME", sandbox.join("home"))
        .env("CODEX_HOME", sandbox.join("codex-home"))
        .env_remove("CODEX_POOL_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let stderr_task = tokio::spawn(async move {
        let mut s = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr_pipe, &mut s).await;
        s
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout = String::new();
    let mut authorize = None;
    let mut callback = None;
    let read_prompt = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            stdout.push_str(&line);
            stdout.push('\n');
            let trimmed = line.trim();
            if trimmed.starts_with("http://") && trimmed.contains("/oauth/authorize") {
                authorize = Some(reqwest::Url::parse(trimmed).unwrap());
            }
            if let Some(rest) = trimmed.split("come back to ").nth(1) {
                callback = rest.split_whitespace().next().map(str::to_owned);
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read_prompt)
        .await
        .unwrap_or_else(|_| panic!("no sign-in prompt within 20 s: {stdout}"));
    let authorize = authorize.unwrap_or_else(|| panic!("no authorize URL printed: {stdout}"));
    let callback = callback.unwrap_or_else(|| panic!("no callback address printed: {stdout}"));

    // The authorize URL is the real shape: our issuer, PKCE S256, a state, and a redirect
    // URI on the callback server's port.
    assert!(authorize.as_str().starts_with(&issuer.url()), "{authorize}");
    let param = |name: &str| {
        authorize
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| panic!("authorize URL lacks {name}: {authorize}"))
    };
    assert_eq!(param("code_challenge_method"), "S256");
    assert_eq!(param("response_type"), "code");
    let state = param("state");
    let redirect = reqwest::Url::parse(&param("redirect_uri")).unwrap();
    let callback = reqwest::Url::parse(&callback).unwrap();
    assert_eq!(redirect.port(), callback.port(), "{redirect} vs {callback}");
    assert_eq!(redirect.path(), callback.path());
    assert_ne!(callback.port(), Some(0));

    // The browser comes back.
    let url = format!("{callback}?{}", query(&state));
    let page = tokio::time::timeout(Duration::from_secs(20), reqwest::get(&url))
        .await
        .expect("callback answered in time")
        .expect("callback reachable");
    assert!(
        page.headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/html")),
        "{:?}",
        page.headers()
    );

    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap_or_else(|_| panic!("accounts add did not exit within 30 s: {stdout}"))
        .unwrap();
    while let Ok(Some(line)) = lines.next_line().await {
        stdout.push_str(&line);
        stdout.push('\n');
    }
    let stderr = tokio::time::timeout(Duration::from_secs(5), stderr_task)
        .await
        .map(|r| r.unwrap_or_default())
        .unwrap_or_default();
    (status.code(), stdout, stderr)
}

/// A private session bus (`dbus-run-session`) with gnome-keyring's Secret Service on it;
/// everything is stopped on drop.
struct SecretService {
    keyring: std::process::Child,
    session: Option<(std::process::Child, Option<std::process::ChildStdin>)>,
    bus: String,
    base: tempfile::TempDir,
}

impl Drop for SecretService {
    fn drop(&mut self) {
        let _ = self.keyring.kill();
        let _ = self.keyring.wait();
        if let Some((mut session, stdin)) = self.session.take() {
            // Closing stdin ends the session's `cat`; dbus-run-session then stops its bus.
            drop(stdin);
            let deadline = Instant::now() + Duration::from_secs(5);
            while session.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = session.kill();
                    let _ = session.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl SecretService {
    fn start() -> Result<Self, String> {
        use std::io::{BufRead, Write};
        let on_path = |name: &str| {
            std::env::var_os("PATH").is_some_and(|paths| {
                std::env::split_paths(&paths).any(|dir| dir.join(name).is_file())
            })
        };
        for program in ["dbus-run-session", "gnome-keyring-daemon"] {
            if !on_path(program) {
                return Err(format!("{program} is not installed"));
            }
        }
        let base = tempfile::tempdir().map_err(|e| e.to_string())?;
        let run_dir = base.path().join("run");
        std::fs::create_dir_all(&run_dir).map_err(|e| e.to_string())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o700));
        }
        let mut session = Command::new("dbus-run-session")
            .args([
                "--",
                "sh",
                "-c",
                "echo \"$DBUS_SESSION_BUS_ADDRESS\"; exec cat >/dev/null",
            ])
            .env("HOME", base.path())
            .env("XDG_RUNTIME_DIR", &run_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("dbus-run-session: {e}"))?;
        let stdin = session.stdin.take();
        let mut bus = String::new();
        if let Some(out) = session.stdout.take() {
            let _ = std::io::BufReader::new(out).read_line(&mut bus);
        }
        let bus = bus.trim().to_owned();
        let mut keyring = Command::new("gnome-keyring-daemon")
            .args(["--foreground", "--unlock", "--components=secrets"])
            .env("DBUS_SESSION_BUS_ADDRESS", &bus)
            .env("HOME", base.path())
            .env("XDG_RUNTIME_DIR", &run_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("gnome-keyring-daemon: {e}"))?;
        if let Some(mut pw) = keyring.stdin.take() {
            let _ = pw.write_all(b"test-password");
        }
        let service = Self {
            keyring,
            session: Some((session, stdin)),
            bus,
            base,
        };
        if service.bus.is_empty() {
            return Err("dbus-run-session printed no bus address".into());
        }
        Ok(service)
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env("DBUS_SESSION_BUS_ADDRESS", &self.bus)
            .env("XDG_RUNTIME_DIR", self.base.path().join("run"));
    }
}

/// `use` and `import` go where the Codex home's `cli_auth_credentials_store` says: a
/// keyring-mode home gets its login in the real Secret Service (no `auth.json`) and the
/// real CLI finds it there; `auto` with no Secret Service falls back to `auth.json`.
#[test]
fn use_and_import_follow_the_codex_homes_credential_store() {
    let test = "use_and_import_follow_the_codex_homes_credential_store";
    if cfg!(windows) {
        // Windows' keyring (Credential Manager) is always there, and its own limit is
        // tested in auth-storage against Wine's.
        return common::skip(
            test,
            "it is about the Linux Secret Service (D-Bus) being there or not",
        );
    }
    let Some(bin) = accounts_bin(test) else {
        return;
    };
    let sb = Sandbox::new(bin);
    let pool_dir = sb.path("pool");
    let pool = path_str(&pool_dir);
    let source = sb.path("source-home");
    let alice = Login::new(ALICE, "acct-alice");
    alice.write_to(&source);
    sb.run(&[
        "--pool-dir",
        pool,
        "import",
        "--codex-home",
        path_str(&source),
    ])
    .ok();
    log_out(&source);
    let home_with_mode = |name: &str, mode: &str| {
        let dir = sb.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.toml"),
            format!("cli_auth_credentials_store = \"{mode}\"\n"),
        )
        .unwrap();
        dir
    };
    let codex_status = |home: &Path, bus: &dyn Fn(&mut Command)| {
        let codex = codex_bin()?;
        let mut cmd = Command::new(codex);
        cmd.args(["login", "status"])
            .env("CODEX_HOME", home)
            .env("HOME", sb.path("home"))
            .env_remove("OPENAI_API_KEY")
            .env_remove("CODEX_API_KEY");
        bus(&mut cmd);
        let run = run_bounded(cmd, Duration::from_secs(60));
        Some((run.code, format!("{}{}", run.stdout, run.stderr)))
    };

    // No Secret Service reachable.
    let nowhere = sb.path("no-bus");
    let no_bus = |cmd: &mut Command| {
        cmd.env(
            "DBUS_SESSION_BUS_ADDRESS",
            format!("unix:path={}", nowhere.display()),
        );
    };
    let keyring_home = home_with_mode("keyring-home", "keyring");
    let pool_before = snapshot(&pool_dir);
    let mut cmd = sb.command(&[
        "--pool-dir",
        pool,
        "use",
        "1",
        "--codex-home",
        path_str(&keyring_home),
    ]);
    no_bus(&mut cmd);
    let run = run_bounded(cmd, Duration::from_secs(30));
    run.failed().assert_no_secrets(&[&alice]);
    assert!(run.stderr.contains("keyring"), "{}", run.stderr);
    assert!(!keyring_home.join("auth.json").exists());
    assert_eq!(
        snapshot(&pool_dir),
        pool_before,
        "a failed use changes nothing"
    );

    let auto_home = home_with_mode("auto-home", "auto");
    let mut cmd = sb.command(&[
        "--pool-dir",
        pool,
        "use",
        "1",
        "--codex-home",
        path_str(&auto_home),
    ]);
    no_bus(&mut cmd);
    run_bounded(cmd, Duration::from_secs(30))
        .ok()
        .assert_no_secrets(&[&alice]);
    assert!(
        auto_home.join("auth.json").is_file(),
        "auto fell back to the file"
    );
    match codex_status(&auto_home, &no_bus) {
        Some((code, text)) => {
            assert_eq!(code, Some(0), "{text}");
            assert!(text.contains("Logged in using ChatGPT"), "{text}");
        }
        None => skip(test, "Codex CLI not found; auto-mode status not checked"),
    }
    log_out(&auto_home);

    // A real Secret Service.
    let service = match SecretService::start() {
        Ok(s) => s,
        Err(reason) => return skip(test, &format!("no Secret Service: {reason}")),
    };
    let use_keyring = || {
        let mut cmd = sb.command(&[
            "--pool-dir",
            pool,
            "use",
            "1",
            "--codex-home",
            path_str(&keyring_home),
        ]);
        service.env(&mut cmd);
        run_bounded(cmd, Duration::from_secs(30))
    };
    // The daemon unlocks its collection a moment after it starts: retry (bounded). A
    // failing `use` writes nothing, as checked above.
    let deadline = Instant::now() + Duration::from_secs(15);
    let run = loop {
        let run = use_keyring();
        if run.code == Some(0) || Instant::now() > deadline {
            break run;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    run.ok().assert_no_secrets(&[&alice]);
    assert!(
        !keyring_home.join("auth.json").exists(),
        "keyring mode writes no auth.json"
    );
    match codex_status(&keyring_home, &|cmd: &mut Command| service.env(cmd)) {
        Some((code, text)) => {
            assert_eq!(code, Some(0), "{text}");
            assert!(text.contains("Logged in using ChatGPT"), "{text}");
        }
        None => skip(test, "Codex CLI not found; keyring-mode status not checked"),
    }
    // And `import` reads it back from the keyring: the same login, deduplicated.
    let mut cmd = sb.command(&[
        "--pool-dir",
        pool,
        "import",
        "--codex-home",
        path_str(&keyring_home),
    ]);
    service.env(&mut cmd);
    let run = run_bounded(cmd, Duration::from_secs(30));
    run.ok().assert_no_secrets(&[&alice]);
    assert!(run.stdout.starts_with("updated #1 "), "{}", run.stdout);
}

/// `add` checks the callback port first: a port held by another program (here: this test)
/// is named, nothing is killed, the pool is untouched, and the exit code is non-zero.
#[test]
fn add_refuses_a_callback_port_held_by_another_program() {
    let test = "add_refuses_a_callback_port_held_by_another_program";
    let Some(bin) = accounts_bin(test) else {
        return;
    };
    let sb = Sandbox::new(bin);
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap();
    let pool_dir = sb.path("pool");
    let run = sb.run(&[
        "--pool-dir",
        path_str(&pool_dir),
        "add",
        "--no-browser",
        // Never contacted: the preflight stops first.
        "--issuer",
        "http://127.0.0.1:9",
        "--listen",
        &addr.to_string(),
        "--timeout-secs",
        "5",
    ]);
    run.failed();
    assert!(
        run.stderr.contains(&addr.port().to_string()),
        "the message names the port: {}",
        run.stderr
    );
    assert!(
        !run.stdout.contains("/oauth/authorize"),
        "no sign-in was started: {}",
        run.stdout
    );
    assert!(!pool_dir.join("pool.json").exists());
    // Still ours and still listening.
    assert_eq!(holder.local_addr().unwrap(), addr);
    assert!(std::net::TcpStream::connect(addr).is_ok());
}

/// `chattr +i` on a path until dropped: a real fault that stops writes even for root (an
/// immutable file cannot be replaced, an immutable directory gets no new entries). `None`
/// after a printed SKIP where the file system or user cannot set it.
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path, test: &str) -> Option<Self> {
        let ok = Command::new("chattr")
            .arg("+i")
            .arg(path)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            skip(
                test,
                if cfg!(windows) {
                    "the faults are made with Linux's `chattr +i`, which Windows has not"
                } else {
                    "`chattr +i` is not available (not root, or no immutable flag on this file system)"
                },
            );
            return None;
        }
        Some(Self(path.to_path_buf()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// A pool of alice, bob and carol (alice active, handed to `home`), then `dave` written
/// into `home` by "codex login": the next `use` must keep dave.
/// `codex logout` in a Codex home used only to sign in and import: a login lives in one
/// Codex home at a time (a refresh token works once), so `use` hands it to another home
/// only once the staging home no longer holds it.
fn log_out(home: &Path) {
    std::fs::remove_file(home.join("auth.json")).unwrap();
}

fn three_in_pool_dave_in_home(sb: &Sandbox, pool_dir: &Path, home: &Path) -> [Login; 4] {
    let logins = [
        Login::new(ALICE, "acct-alice"),
        Login::new(BOB, "acct-bob"),
        Login::new("carol.private@example.net", "acct-carol"),
        Login::new("dave.private@example.com", "acct-dave"),
    ];
    let source = sb.path("source-home");
    for login in &logins[..3] {
        login.write_to(&source);
        sb.run(&[
            "--pool-dir",
            path_str(pool_dir),
            "import",
            "--codex-home",
            path_str(&source),
        ])
        .ok();
    }
    log_out(&source);
    sb.run(&[
        "--pool-dir",
        path_str(pool_dir),
        "use",
        "1",
        "--codex-home",
        path_str(home),
    ])
    .ok();
    logins[3].write_to(home);
    logins
}

/// `use N` whose login write fails (an immutable `auth.json`, an immutable Codex home)
/// exits 1, says it rolled back, and leaves the pool directory and the home byte for byte
/// as they were — dave, the login the home held, is not half-added to the pool.
#[test]
fn use_that_cannot_write_the_login_rolls_back_and_exits_1() {
    let test = "use_that_cannot_write_the_login_rolls_back_and_exits_1";
    let Some(bin) = accounts_bin(test) else {
        return;
    };
    let sb = Sandbox::new(bin);
    let pool_dir = sb.path("pool");
    let home = sb.path("target-home");
    let logins = three_in_pool_dave_in_home(&sb, &pool_dir, &home);
    let pool_before = snapshot(&pool_dir);
    let home_before = snapshot(&home);
    for frozen in [home.join("auth.json"), home.clone()] {
        let Some(_guard) = Immutable::set(&frozen, test) else {
            return;
        };
        let run = sb.run(&[
            "--pool-dir",
            path_str(&pool_dir),
            "use",
            "2",
            "--codex-home",
            path_str(&home),
        ]);
        run.failed()
            .assert_no_secrets(&logins.iter().collect::<Vec<_>>());
        assert!(
            run.stderr.contains("rolled back, nothing changed"),
            "{}: {}",
            frozen.display(),
            run.stderr
        );
        assert!(run.stdout.is_empty(), "no success line: {}", run.stdout);
        assert_eq!(snapshot(&pool_dir), pool_before, "{}", frozen.display());
        assert_eq!(snapshot(&home), home_before, "{}", frozen.display());
    }
    // Unfrozen, the same command works and keeps dave.
    sb.run(&[
        "--pool-dir",
        path_str(&pool_dir),
        "use",
        "2",
        "--codex-home",
        path_str(&home),
    ])
    .ok();
    let pool = PoolStore::new(&pool_dir).load().unwrap().pool;
    assert_eq!(pool.accounts.len(), 4);
    assert_eq!(pool.active_index(), Some(1));
}

/// The refresh token in `home`'s auth.json (`None` when there is no file).
fn home_refresh(home: &Path) -> Option<String> {
    let bytes = std::fs::read(home.join("auth.json")).ok()?;
    let doc = AuthDocument::from_json_slice(&bytes).unwrap();
    Some(doc.tokens.unwrap().refresh_token.expose().to_owned())
}

fn pool_emails_and_active(pool_dir: &Path) -> (Vec<String>, Option<usize>) {
    let pool = PoolStore::new(pool_dir).load().unwrap().pool;
    let emails = pool
        .accounts
        .iter()
        .map(|a| a.email.clone().unwrap_or_default())
        .collect();
    (emails, pool.active_index())
}

/// `use 3` and `remove 3` started together, many times, with the real binary. Each pair
/// ends in one of the two serial outcomes, and a `use` that exits non-zero left the home
/// byte for byte as it was and the pool exactly as `remove` alone leaves it.
#[test]
fn use_and_remove_of_the_same_account_race_to_a_valid_end_state() {
    let test = "use_and_remove_of_the_same_account_race_to_a_valid_end_state";
    let Some(bin) = accounts_bin(test) else {
        return;
    };
    let sb = Sandbox::new(bin);
    let template_pool = sb.path("template-pool");
    let template_home = sb.path("template-home");
    let logins = three_in_pool_dave_in_home(&sb, &template_pool, &template_home);
    let all: Vec<&Login> = logins.iter().collect();
    let copy_dir = |from: &Path, to: &Path| {
        let _ = std::fs::remove_dir_all(to);
        std::fs::create_dir_all(to).unwrap();
        for (name, bytes) in snapshot(from) {
            std::fs::write(to.join(name), bytes).unwrap();
        }
    };
    // What `remove 3` alone makes of the template pool.
    let removed_only = sb.path("removed-only");
    copy_dir(&template_pool, &removed_only);
    sb.run(&["--pool-dir", path_str(&removed_only), "remove", "3"])
        .ok();
    let removed_only_bytes = std::fs::read(removed_only.join("pool.json")).unwrap();
    let home_before = std::fs::read(template_home.join("auth.json")).unwrap();
    let (alice, bob, dave) = (
        logins[0].email.to_owned(),
        logins[1].email.to_owned(),
        logins[3].email.to_owned(),
    );

    let (pool_dir, home) = (sb.path("race-pool"), sb.path("race-home"));
    let (mut use_first, mut remove_first) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(90);
    for round in 0..40 {
        if Instant::now() > deadline {
            break;
        }
        copy_dir(&template_pool, &pool_dir);
        copy_dir(&template_home, &home);
        let user = std::thread::scope(|s| {
            let remover = s.spawn(|| sb.run(&["--pool-dir", path_str(&pool_dir), "remove", "3"]));
            let user = sb.run(&[
                "--pool-dir",
                path_str(&pool_dir),
                "use",
                "3",
                "--codex-home",
                path_str(&home),
            ]);
            remover.join().unwrap().ok().assert_no_secrets(&all);
            user
        });
        user.assert_no_secrets(&all);
        let (emails, active) = pool_emails_and_active(&pool_dir);
        match user.code {
            // `use` went first: carol handed over, dave kept, then carol removed.
            Some(0) => {
                use_first += 1;
                assert_eq!(
                    home_refresh(&home).as_deref(),
                    Some(logins[2].refresh.as_str()),
                    "round {round}"
                );
                assert_eq!(
                    emails,
                    [alice.clone(), bob.clone(), dave.clone()],
                    "round {round}: {}",
                    user.stdout
                );
                assert_eq!(
                    active, None,
                    "round {round}: the active account was removed"
                );
            }
            // `remove` went first: there is no #3 any more, and `use` changed nothing.
            Some(1) => {
                remove_first += 1;
                assert!(
                    user.stderr.contains("no account #3 (the pool has 2)"),
                    "round {round}: {}",
                    user.stderr
                );
                assert_eq!(
                    std::fs::read(home.join("auth.json")).unwrap(),
                    home_before,
                    "round {round}: a failed use left the home as it was"
                );
                assert_eq!(
                    std::fs::read(pool_dir.join("pool.json")).unwrap(),
                    removed_only_bytes,
                    "round {round}: a failed use left the pool as remove alone leaves it"
                );
                assert_eq!(emails, [alice.clone(), bob.clone()], "round {round}");
            }
            other => panic!(
                "round {round}: use exited {other:?}\nstdout: {}\nstderr: {}",
                user.stdout, user.stderr
            ),
        }
    }
    assert!(use_first + remove_first >= 5, "too few rounds ran");
    let _ = writeln_stderr(&format!(
        "{test}: use first {use_first}, remove first {remove_first}"
    ));
}

fn writeln_stderr(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    writeln!(std::io::stderr(), "{text}")
}

/// `import` of several homes is all or nothing: one bad home (no login, an API key, a
/// damaged file) in the middle of the batch imports none, and the pool stays byte for byte.
#[test]
fn import_of_a_batch_with_a_bad_home_imports_nothing() {
    let test = "import_of_a_batch_with_a_bad_home_imports_nothing";
    let Some(bin) = accounts_bin(test) else {
        return;
    };
    let sb = Sandbox::new(bin);
    let pool_dir = sb.path("pool");
    let pool = path_str(&pool_dir);
    let alice = Login::new(ALICE, "acct-alice");
    let bob = Login::new(BOB, "acct-bob");
    let carol = Login::new("carol.private@example.net", "acct-carol");
    let (ha, hb, hc) = (sb.path("a"), sb.path("b"), sb.path("c"));
    alice.write_to(&ha);
    bob.write_to(&hb);
    carol.write_to(&hc);
    sb.run(&["--pool-dir", pool, "import", "--codex-home", path_str(&ha)])
        .ok();
    let before = snapshot(&pool_dir);

    let empty = sb.path("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let api_key = sb.path("api-key");
    std::fs::create_dir_all(&api_key).unwrap();
    std::fs::write(
        api_key.join("auth.json"),
        r#"{"auth_mode": "apikey", "OPENAI_API_KEY": "sk-LEAK-ME"}"#,
    )
    .unwrap();
    let damaged = sb.path("damaged");
    std::fs::create_dir_all(&damaged).unwrap();
    std::fs::write(damaged.join("auth.json"), "{\"tokens\": ").unwrap();
    for (bad, says) in [
        (&empty, "no login found in"),
        (&api_key, "only ChatGPT logins"),
        (&damaged, "not a usable Codex auth file"),
    ] {
        let run = sb.run(&[
            "--pool-dir",
            pool,
            "import",
            "--codex-home",
            path_str(&hb),
            "--codex-home",
            path_str(bad),
            "--codex-home",
            path_str(&hc),
        ]);
        run.failed().assert_no_secrets(&[&alice, &bob, &carol]);
        assert!(run.stderr.contains(says), "{}", run.stderr);
        assert!(!run.stderr.contains("LEAK-ME"), "{}", run.stderr);
        assert!(
            run.stdout.is_empty(),
            "nothing reported as added: {}",
            run.stdout
        );
        assert_eq!(snapshot(&pool_dir), before, "{}", bad.display());
    }
    // The good batch goes in whole, in order.
    let run = sb.run(&[
        "--pool-dir",
        pool,
        "import",
        "--codex-home",
        path_str(&hb),
        "--codex-home",
        path_str(&ha),
        "--codex-home",
        path_str(&hc),
    ]);
    run.ok().assert_no_secrets(&[&alice, &bob, &carol]);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    assert!(lines[0].starts_with("added #2 "), "{}", run.stdout);
    assert!(lines[1].starts_with("updated #1 "), "{}", run.stdout);
    assert!(lines[2].starts_with("added #3 "), "{}", run.stdout);
    assert_eq!(
        PoolStore::new(&pool_dir)
            .load()
            .unwrap()
            .pool
            .accounts
            .len(),
        3
    );
}

/// `import`, `remove` (of the active account, too) and `use` whose pool write fails exit 1
/// and change nothing; when it works, removing the active account says what that means and
/// leaves the Codex home alone.
#[test]
fn import_and_remove_that_cannot_write_the_pool_change_nothing() {
    let test = "import_and_remove_that_cannot_write_the_pool_change_nothing";
    let Some(bin) = accounts_bin(test) else {
        return;
    };
    let sb = Sandbox::new(bin);
    let pool_dir = sb.path("pool");
    let pool = path_str(&pool_dir);
    let home = sb.path("target-home");
    let logins = three_in_pool_dave_in_home(&sb, &pool_dir, &home);
    let all: Vec<&Login> = logins.iter().collect();
    let before = snapshot(&pool_dir);
    let home_before = snapshot(&home);
    for frozen in [pool_dir.join("pool.json"), pool_dir.clone()] {
        let Some(_guard) = Immutable::set(&frozen, test) else {
            return;
        };
        for args in [
            vec!["import", "--codex-home", path_str(&home)],
            // #1 is the active account.
            vec!["remove", "1"],
            vec!["remove", "3"],
            // The pool is written before the home: the home must stay as it was too.
            vec!["use", "2", "--codex-home", path_str(&home)],
        ] {
            let mut full = vec!["--pool-dir", pool];
            full.extend(&args);
            let run = sb.run(&full);
            run.failed().assert_no_secrets(&all);
            assert!(
                run.stderr.contains(path_str(&pool_dir)),
                "{args:?}: names the place: {}",
                run.stderr
            );
            assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
            assert_eq!(snapshot(&pool_dir), before, "{args:?} {}", frozen.display());
            assert_eq!(
                snapshot(&home),
                home_before,
                "{args:?} {}",
                frozen.display()
            );
        }
    }
    let run = sb.run(&["--pool-dir", pool, "remove", "1"]);
    run.ok().assert_no_secrets(&all);
    assert!(
        run.stdout.contains("it was the active account"),
        "{}",
        run.stdout
    );
    let (emails, active) = pool_emails_and_active(&pool_dir);
    assert_eq!(emails.len(), 2);
    assert_eq!(active, None);
    assert_eq!(
        snapshot(&home),
        home_before,
        "remove never touches a Codex home"
    );
}

/// `accounts add` whose token exchange fails after the browser came back, or whose pool
/// write fails after a good exchange, exits non-zero and leaves `pool.json` byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_that_fails_after_the_browser_step_changes_nothing() {
    let test = "add_that_fails_after_the_browser_step_changes_nothing";
    let Some(bin) = accounts_bin(test) else {
        return;
    };
    let issuer = MockIssuer::start(TokenReply::tokens_for("erin.private@example.net"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pool_dir = dir.path().join("pool");
    let ok_query = |state: &str| format!("code={MOCK_CODE}&state={state}");
    let (code, out, err) = run_add(&bin, &issuer, &pool_dir, dir.path(), ok_query).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let before = std::fs::read(pool_dir.join("pool.json")).unwrap();

    // The exchange fails: the issuer refuses the code.
    issuer.set_token_reply(TokenReply::raw(
        400,
        "application/json",
        r#"{"error":"invalid_grant","error_description":"code expired"}"#,
    ));
    let (code, out, err) = run_add(&bin, &issuer, &pool_dir, dir.path(), ok_query).await;
    assert_ne!(code, Some(0), "{out}{err}");
    assert!(err.contains("invalid_grant"), "{err}");
    assert_eq!(std::fs::read(pool_dir.join("pool.json")).unwrap(), before);

    // A good exchange, but pool.json cannot be replaced.
    issuer.set_token_reply(TokenReply::tokens_for("frank.private@example.net"));
    let Some(_frozen) = Immutable::set(&pool_dir.join("pool.json"), test) else {
        return;
    };
    let (code, out, err) = run_add(&bin, &issuer, &pool_dir, dir.path(), ok_query).await;
    assert_ne!(code, Some(0), "{out}{err}");
    assert!(err.contains("pool.json"), "{err}");
    assert!(!out.contains("added #"), "{out}");
    assert_eq!(std::fs::read(pool_dir.join("pool.json")).unwrap(), before);
    let leftovers: Vec<String> = std::fs::read_dir(&pool_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".pool-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A `use` that succeeded exits 0 even when nobody reads its output (a pipe whose reader
/// is gone: writing fails with EPIPE, which must not turn a completed switch into a crash),
/// and `use` of a number past the end creates no Codex home, lock file or pool directory.
#[test]
fn use_exit_status_follows_what_changed_not_the_output() {
    let test = "use_exit_status_follows_what_changed_not_the_output";
    let Some(bin) = accounts_bin(test) else {
        return;
    };
    let sb = Sandbox::new(bin);
    let pool_dir = sb.path("pool");
    let home = sb.path("target-home");
    three_in_pool_dave_in_home(&sb, &pool_dir, &home);
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = sb
        .command(&[
            "--pool-dir",
            path_str(&pool_dir),
            "use",
            "2",
            "--codex-home",
            path_str(&home),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "use did not finish in 30 s");
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        home_refresh(&home).as_deref(),
        Some(Login::new(BOB, "acct-bob").refresh.as_str())
    );

    let fresh_home = sb.path("not-yet-a-home");
    let fresh_pool = sb.path("not-yet-a-pool");
    for (pool, n) in [(&pool_dir, "9"), (&fresh_pool, "1")] {
        let run = sb.run(&[
            "--pool-dir",
            path_str(pool),
            "use",
            n,
            "--codex-home",
            path_str(&fresh_home),
        ]);
        run.failed();
        assert!(!fresh_home.exists(), "use {n} created the Codex home");
        assert!(!fresh_pool.exists(), "use {n} created the pool directory");
    }
    // `remove` of a number past the end (here: of a pool that does not exist) likewise.
    let run = sb.run(&["--pool-dir", path_str(&fresh_pool), "remove", "1"]);
    run.failed();
    assert!(!fresh_pool.exists(), "remove created the pool directory");

    // A home holding an API-key login is refused before any lock file is made there.
    let api_home = sb.path("api-key-home");
    std::fs::create_dir(&api_home).unwrap();
    std::fs::write(
        api_home.join("auth.json"),
        "{\n  \"OPENAI_API_KEY\": \"sk-test\"\n}",
    )
    .unwrap();
    let run = sb.run(&[
        "--pool-dir",
        path_str(&pool_dir),
        "use",
        "1",
        "--codex-home",
        path_str(&api_home),
    ]);
    run.failed();
    let left: Vec<_> = std::fs::read_dir(&api_home)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["auth.json"], "a refused use left {left:?}");
}
