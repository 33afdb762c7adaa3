//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use auth_core::jwt::{IdTokenClaims, PlanType};
use auth_core::{Secret, TokenData};

pub(crate) mod hostile;
#[cfg(feature = "refresh")]
pub(crate) mod refresh;

/// Real-shaped (unsigned, test-only) tokens for `email` in workspace `account_id`.
pub(crate) fn tokens(email: &str, account_id: &str, refresh: &str) -> TokenData {
    // auth-core may grow more claims; keep the defaults for those.
    #[allow(clippy::needless_update)]
    let claims = IdTokenClaims {
        email: Some(email.to_owned()),
        exp: Some(4_000_000_000),
        iat: Some(1_700_000_000),
        chatgpt_plan_type: Some(PlanType::Plus),
        chatgpt_account_id: Some(account_id.to_owned()),
        chatgpt_user_id: Some(format!("user-{account_id}")),
        ..IdTokenClaims::default()
    };
    let id_token = auth_core::jwt::encode_unsigned_for_testing(&claims);
    let access = IdTokenClaims {
        exp: Some(4_000_000_000),
        ..IdTokenClaims::default()
    };
    let access_token = auth_core::jwt::encode_unsigned_for_testing(&access);
    TokenData::new(
        Secret::new(id_token),
        Secret::new(access_token),
        Secret::new(refresh.to_owned()),
        Some(account_id.to_owned()),
    )
    .unwrap()
}

pub(crate) fn skip(test: &str, reason: &str) {
    let _ = writeln!(std::io::stderr(), "SKIP: {test}: {reason}");
}

/// The real Codex CLI this platform can run (see [`find_codex`]); `None` means skip.
pub(crate) fn codex_bin() -> Option<PathBuf> {
    find_codex().ok()
}

/// [`codex_bin`], printing the visible `SKIP:` line for `test` with the reason when there
/// is none to run.
pub(crate) fn codex_bin_or_skip(test: &str) -> Option<PathBuf> {
    find_codex().map_err(|reason| skip(test, &reason)).ok()
}

/// The Codex CLI: `CODEX_BIN`, else the workspace's npm install, else `codex` on PATH — or
/// why there is none. On Windows only a Windows program counts (`CODEX_BIN` naming an
/// `.exe`, or `codex.exe` on PATH): the workspace's npm install holds the Linux binary,
/// which a Windows process cannot start.
fn find_codex() -> Result<PathBuf, String> {
    let windows = cfg!(windows);
    if let Some(bin) = std::env::var_os("CODEX_BIN")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
    {
        let is_exe = bin
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("exe"));
        if windows && !is_exe {
            return Err(format!(
                "CODEX_BIN ({}) is not a Windows program; set it to a Windows codex.exe",
                bin.display()
            ));
        }
        return Ok(bin);
    }
    if !windows {
        let local = Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "../.codex-cli/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex",
        );
        if local.is_file() {
            return Ok(local);
        }
    }
    let name = format!("codex{}", std::env::consts::EXE_SUFFIX);
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(&name))
                .find(|candidate| candidate.is_file())
        })
        .ok_or_else(|| {
            if windows {
                "no Windows Codex CLI (set CODEX_BIN to a Windows codex.exe)".to_owned()
            } else {
                "Codex CLI not found (set CODEX_BIN)".to_owned()
            }
        })
}

/// Run `codex <args>` with `CODEX_HOME=home`, optional stdin; returns (exit code, stdout+stderr).
pub(crate) fn run_codex(
    bin: &Path,
    home: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> (i32, String) {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env("CODEX_HOME", home)
        .env_remove("OPENAI_API_KEY")
        .env_remove("CODEX_API_KEY");
    let (code, out, err) = run_bounded(cmd, stdin, 60);
    (code, format!("{out}{err}"))
}

/// Run `cmd` with piped stdio, feeding `stdin`; killed after `secs` seconds (the test then
/// fails on its output). Returns (exit code, stdout, stderr).
pub(crate) fn run_bounded(
    mut cmd: Command,
    stdin: Option<&str>,
    secs: u64,
) -> (i32, String, String) {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    (
        status.code().unwrap_or(-1),
        t_out.join().unwrap(),
        t_err.join().unwrap(),
    )
}

/// Wait for an already spawned `child` (stdout piped) for at most `secs` seconds, killing it
/// then; returns (exit status, stdout).
pub(crate) fn wait_bounded(
    mut child: std::process::Child,
    secs: u64,
) -> (std::process::ExitStatus, String) {
    let out = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut out) = out {
            let _ = std::io::Read::read_to_string(&mut out, &mut s);
        }
        s
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let status = child.wait().unwrap();
            panic!("child did not finish within {secs} s ({status})");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    (status, reader.join().unwrap())
}

/// Re-run this test binary as a child process that runs only the test `test` (a `child_*`
/// test that does nothing unless the parent set its role variable in `envs`); stdout is
/// piped for [`wait_bounded`] and [`result_lines`], stderr inherited.
pub(crate) fn spawn_test_child<K, V>(
    test: &str,
    envs: impl IntoIterator<Item = (K, V)>,
) -> std::process::Child
where
    K: AsRef<std::ffi::OsStr>,
    V: AsRef<std::ffi::OsStr>,
{
    use std::process::Stdio;
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .envs(envs)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Wait (bounded by `secs`) until `path` exists: the parent's "go" signal that lets child
/// processes start a race together. Returns whether it appeared.
pub(crate) fn wait_for_file(path: &Path, secs: u64) -> bool {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !path.exists() {
        if std::time::Instant::now() > until {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    true
}

/// The `RESULT …` lines a child printed, without the prefix.
pub(crate) fn result_lines(stdout: &str) -> Vec<String> {
    stdout
        .split("RESULT ")
        .skip(1)
        .map(|l| l.lines().next().unwrap_or("").to_owned())
        .collect()
}

/// Run `tasks` futures made by `make` at once on a multi-threaded runtime of their own (one
/// worker per task) and return their results in order.
pub(crate) fn run_concurrently<T, F, Fut>(tasks: usize, make: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(tasks.max(1))
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let handles: Vec<_> = (0..tasks).map(|i| tokio::spawn(make(i))).collect();
        let mut out = Vec::with_capacity(tasks);
        for handle in handles {
            out.push(handle.await.unwrap());
        }
        out
    })
}

/// Print one `RESULT` line per refresh: `refreshed <refresh token>`, `already <refresh
/// token>` (someone else refreshed) or `error <message>`, for the parent to compare.
#[cfg(feature = "refresh")]
pub(crate) fn print_outcomes<E: std::fmt::Display>(
    results: impl IntoIterator<Item = Result<auth_storage::refresh::RefreshOutcome, E>>,
) {
    use auth_storage::refresh::RefreshOutcome;
    for result in results {
        match result {
            Ok(outcome) => {
                let kind = match &outcome {
                    RefreshOutcome::Refreshed(_) => "refreshed",
                    RefreshOutcome::AlreadyRefreshed(_) => "already",
                    _ => "other",
                };
                println!("RESULT {kind} {}", outcome.tokens().refresh_token.expose());
            }
            Err(e) => println!("RESULT error {e}"),
        }
    }
}

/// Wait for each child (at most `secs` seconds each), require that it succeeded, and
/// return all the `RESULT` lines they printed.
pub(crate) fn child_results(
    children: impl IntoIterator<Item = std::process::Child>,
    secs: u64,
) -> Vec<String> {
    let mut lines = Vec::new();
    for child in children {
        let (status, text) = wait_bounded(child, secs);
        assert!(status.success(), "a child failed: {status}");
        lines.extend(result_lines(&text));
    }
    lines
}

/// Read one HTTP/1.1 request from `conn` and return its body (at most 64 KiB); `None` when
/// the peer hung up or sent something unreadable.
pub(crate) fn read_request(conn: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    use std::io::{BufRead, BufReader, Read};
    let mut reader = BufReader::new(conn);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; len.min(64 * 1024)];
    reader.read_exact(&mut body).ok()?;
    Some(body)
}

/// Every file under `root` is whole: no temporary file of an atomic write (`.auth-…` beside
/// an `auth.json`, `.pool-…` beside a `pool.json`) was left behind.
pub(crate) fn assert_no_partial_files(root: &Path) {
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            } else {
                assert!(
                    !name.starts_with(".auth-") && !name.starts_with(".pool-"),
                    "a partially written file was left: {}",
                    entry.path().display()
                );
            }
        }
    }
}

/// Run `write` again while it fails with [`StorageError::StillInUse`] (bounded: 60 s),
/// as a caller does.
///
/// On Windows a file that another process has open cannot be replaced by a rename (unless
/// the rename uses NTFS's POSIX semantics, which Wine does not have): a write retries for
/// about a second, then gives up with `StillInUse` having changed nothing. Tests whose
/// readers poll the file without pause meet that; on Unix it never happens.
///
/// [`StorageError::StillInUse`]: auth_storage::StorageError::StillInUse
pub(crate) fn retry_while_in_use<T>(
    mut write: impl FnMut() -> auth_storage::Result<T>,
) -> auth_storage::Result<T> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match write() {
            Err(auth_storage::StorageError::StillInUse { .. })
                if std::time::Instant::now() < until => {}
            other => return other,
        }
    }
}

/// The pause a test's unlocked reader makes between two reads of a file other processes
/// replace. None on Unix; on Windows a reader that reopens the file back to back keeps it
/// open nearly all the time, and an open file cannot be replaced there (see
/// [`retry_while_in_use`]), so the writers would barely get a turn.
pub(crate) fn pause_between_reads() {
    if cfg!(windows) {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A loopback OAuth token endpoint that behaves like OpenAI's where refresh is concerned:
/// each login has a chain of refresh tokens of which only the newest is valid; exchanging
/// it spends it and answers new tokens (the access token an unsigned JWT expiring
/// `access_ttl` from now); any earlier token of a chain is answered 400
/// `{"error":"refresh_token_reused"}`. One thread per connection, so a stalled answer (see
/// [`TokenIssuer::stall_next`]) holds up nobody else. Stopped when dropped.
pub(crate) struct TokenServer {
    url: String,
    issuer: std::sync::Arc<TokenIssuer>,
    accept: Option<std::thread::JoinHandle<()>>,
}

/// The state and counters of a [`TokenServer`]; shareable with other threads.
pub(crate) struct TokenIssuer {
    state: std::sync::Mutex<IssuerState>,
    changed: std::sync::Condvar,
    access_ttl: std::time::Duration,
}

#[derive(Default)]
struct IssuerState {
    /// By account id: the login's email and its chain of refresh tokens (last = valid).
    logins: std::collections::HashMap<String, (String, Vec<String>)>,
    /// Every token and email handed out, to check that nothing shows them.
    secrets: Vec<String>,
    requests: usize,
    successes: usize,
    reuses: usize,
    unavailable: bool,
    /// The account whose next exchange is answered only after [`TokenIssuer::release`].
    stall: Option<String>,
    /// The account whose next exchange spends the token and answers an unusable 200.
    garble: Option<String>,
    stalled: usize,
    releases: u64,
    stopping: bool,
}

/// Longest a stalled answer waits for [`TokenIssuer::release`] (keeps every test bounded).
const STALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

impl std::ops::Deref for TokenServer {
    type Target = TokenIssuer;
    fn deref(&self) -> &TokenIssuer {
        &self.issuer
    }
}

impl TokenServer {
    /// A server whose access tokens live one hour.
    pub(crate) fn start() -> Self {
        Self::start_with_ttl(std::time::Duration::from_secs(3600))
    }

    /// A server whose access tokens live `access_ttl`.
    pub(crate) fn start_with_ttl(access_ttl: std::time::Duration) -> Self {
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let issuer = Arc::new(TokenIssuer {
            state: std::sync::Mutex::new(IssuerState::default()),
            changed: std::sync::Condvar::new(),
            access_ttl,
        });
        let shared = Arc::clone(&issuer);
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if shared.state().stopping {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let issuer = Arc::clone(&shared);
                // Detached: bounded by the read timeout and STALL_LIMIT.
                std::thread::spawn(move || issuer.serve(conn));
            }
        });
        Self {
            url: format!("http://{addr}/oauth/token"),
            issuer,
            accept: Some(accept),
        }
    }

    /// The token URL to configure clients with.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// A handle on the issuer for another thread.
    pub(crate) fn issuer(&self) -> std::sync::Arc<TokenIssuer> {
        std::sync::Arc::clone(&self.issuer)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.issuer.state().stopping = true;
        self.issuer.changed.notify_all();
        let _ = std::net::TcpStream::connect(
            self.url
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap(),
        );
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

impl TokenIssuer {
    fn state(&self) -> std::sync::MutexGuard<'_, IssuerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new sign-in of `email` in workspace `account_id`: a new chain (earlier tokens of
    /// this login are spent from now on) and tokens whose access token expires at
    /// `access_exp` (Unix seconds; in the past for an expired login).
    pub(crate) fn sign_in(&self, email: &str, account_id: &str, access_exp: i64) -> TokenData {
        let mut state = self.state();
        let chain = state
            .logins
            .entry(account_id.to_owned())
            .or_insert_with(|| (email.to_owned(), Vec::new()));
        chain.0 = email.to_owned();
        let refresh = format!("rt.{account_id}.{}.single-use", chain.1.len());
        chain.1.push(refresh.clone());
        let tokens = Self::tokens(email, account_id, &refresh, access_exp);
        state.remember(&tokens, email);
        tokens
    }

    fn tokens(email: &str, account_id: &str, refresh: &str, access_exp: i64) -> TokenData {
        let mut tokens = tokens(email, account_id, refresh);
        // The refresh token goes in so two access tokens issued in one second differ.
        tokens.access_token = Secret::new(auth_core::jwt::encode_unsigned_json_for_testing(
            &serde_json::json!({"exp": access_exp, "sub": account_id, "jti": refresh}),
        ));
        tokens
    }

    /// The refresh token the issuer accepts now for `account_id`.
    pub(crate) fn valid_refresh_token(&self, account_id: &str) -> String {
        self.state().logins[account_id].1.last().unwrap().clone()
    }

    /// Every token and email this issuer handed out.
    pub(crate) fn secrets(&self) -> Vec<String> {
        self.state().secrets.clone()
    }

    /// Token requests received (answered or not).
    pub(crate) fn requests(&self) -> usize {
        self.state().requests
    }

    /// Exchanges that spent a valid refresh token.
    pub(crate) fn successes(&self) -> usize {
        self.state().successes
    }

    /// Requests with a spent refresh token (answered `refresh_token_reused`).
    pub(crate) fn reuses(&self) -> usize {
        self.state().reuses
    }

    /// Answer every request 503 without spending anything (`true`) or serve again.
    pub(crate) fn set_unavailable(&self, unavailable: bool) {
        self.state().unavailable = unavailable;
    }

    /// The next exchange for `account_id` spends the token, then holds its answer until
    /// [`release`](Self::release) (at most a minute).
    pub(crate) fn stall_next(&self, account_id: &str) {
        self.state().stall = Some(account_id.to_owned());
    }

    /// The next exchange for `account_id` spends the token like any other, but its 200
    /// answer is unusable: the id token is not a JWT (a proxy that mangled the body).
    pub(crate) fn garble_next(&self, account_id: &str) {
        self.state().garble = Some(account_id.to_owned());
    }

    /// Wait (at most `secs`) until an answer is being held; returns whether one is.
    pub(crate) fn wait_stalled(&self, secs: u64) -> bool {
        let state = self.state();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, std::time::Duration::from_secs(secs), |s| {
                s.stalled == 0
            })
            .unwrap_or_else(|p| p.into_inner());
        state.stalled > 0
    }

    /// How many answers are being held now.
    pub(crate) fn stalled(&self) -> usize {
        self.state().stalled
    }

    /// Let every held answer go out.
    pub(crate) fn release(&self) {
        self.state().releases += 1;
        self.changed.notify_all();
    }

    fn serve(&self, mut conn: std::net::TcpStream) {
        let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(5)));
        let Some(body) = read_request(&mut conn) else {
            return;
        };
        let sent: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let token = sent["refresh_token"].as_str().unwrap_or("");
        let (status, reply) = self.answer(token);
        let text = reply.to_string();
        // ok: a client killed meanwhile (the crash test) does not read its answer.
        let _ = write!(
            conn,
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
            text.len()
        );
    }

    /// Decide the answer to an exchange of `token` (spending it), then hold it if a stall
    /// was armed for its login.
    fn answer(&self, token: &str) -> (&'static str, serde_json::Value) {
        let mut state = self.state();
        state.requests += 1;
        if state.unavailable {
            return (
                "503 Service Unavailable",
                serde_json::json!({"error": "temporarily_unavailable"}),
            );
        }
        let found = state
            .logins
            .iter()
            .find(|(_, (_, chain))| chain.iter().any(|t| t == token))
            .map(|(id, (email, chain))| {
                (
                    id.clone(),
                    email.clone(),
                    chain.last() == Some(&token.to_owned()),
                )
            });
        let (account_id, answer) = match found {
            Some((account_id, email, true)) => {
                state.successes += 1;
                let chain = &mut state.logins.get_mut(&account_id).unwrap().1;
                let refresh = format!("rt.{account_id}.{}.single-use", chain.len());
                chain.push(refresh.clone());
                let exp = unix_now() + self.access_ttl.as_secs() as i64;
                let fresh = Self::tokens(&email, &account_id, &refresh, exp);
                state.remember(&fresh, &email);
                let garbled = state.garble.as_deref() == Some(account_id.as_str());
                if garbled {
                    state.garble = None;
                }
                let reply = serde_json::json!({
                    "id_token": if garbled { "not-a-jwt" } else { fresh.id_token.expose() },
                    "access_token": fresh.access_token.expose(),
                    "refresh_token": refresh,
                });
                (account_id, ("200 OK", reply))
            }
            Some((account_id, _, false)) => {
                state.reuses += 1;
                (
                    account_id,
                    (
                        "400 Bad Request",
                        serde_json::json!({"error": "refresh_token_reused"}),
                    ),
                )
            }
            None => {
                return (
                    "400 Bad Request",
                    serde_json::json!({"error": "invalid_grant"}),
                );
            }
        };
        if state.stall.as_deref() == Some(account_id.as_str()) {
            state.stall = None;
            state.stalled += 1;
            let releases = state.releases;
            self.changed.notify_all();
            let (mut held, _) = self
                .changed
                .wait_timeout_while(state, STALL_LIMIT, |s| {
                    s.releases == releases && !s.stopping
                })
                .unwrap_or_else(|p| p.into_inner());
            held.stalled -= 1;
        }
        answer
    }
}

impl IssuerState {
    fn remember(&mut self, tokens: &TokenData, email: &str) {
        self.secrets.extend([
            tokens.id_token.expose().to_owned(),
            tokens.access_token.expose().to_owned(),
            tokens.refresh_token.expose().to_owned(),
            email.to_owned(),
        ]);
    }
}
