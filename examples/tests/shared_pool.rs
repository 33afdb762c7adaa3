//! One account pool shared at once by real processes — `rotation-proxy` processes, a process
//! acting as the Codex CLI in a Codex home the pool handed a login to, and the `accounts`
//! tool — against the loopback mock upstream and its issuer of single-use refresh tokens.
//!
//! | test | what it shows |
//! |------|---------------|
//! | `four_proxies_a_codex_cli_and_the_accounts_tool_…` | 4 proxies, the CLI refreshing in its home and `accounts` list/use/disable/enable, under ≥ 2,000 requests with 4 s access tokens: no refresh token is spent twice, one token request per expiry, every request answered, no login lost |
//! | `a_proxy_killed_between_…` | `kill -9` after the issuer spent the token and before the save: the next proxy makes exactly one more token call (`refresh_token_reused`), marks the login required for everyone, and then answers without calling again |
//! | `a_disabled_account_…` | `accounts disable` holds across proxy restarts; `enable` brings the account back within a second |
//! | `a_rate_limit_seen_by_one_proxy_…` | a 429 one proxy saw keeps another away from that account within a second |
//! | `accounts_removed_added_…` | remove, import, disable, enable while ~1 s streams run: each takes effect within a second, no stream fails |
//! | `a_login_gone_upstream_…` | `token_invalidated` (401) and `deactivated_workspace` (402) mark the pool for everyone; signing in again clears it |
//!
//! Every process is a real one: the built `rotation-proxy` and `accounts` programs (built by
//! plain `cargo test`, or `cargo build -p examples --examples`; without them each test prints
//! SKIP), and this test binary re-run as the CLI (`child_codex_cli`). Everything is loopback,
//! and every loop is bounded in count and in time. The tests take turns: they measure how
//! soon changes take effect, and on a small machine they would slow each other down.
//! Windows runs the same: several programs sharing one pool is the point there too.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use auth_core::{AuthDocument, Timestamp};
use auth_storage::pool::UnusableReason;
use auth_storage::{CodexHome, PoolStore};
use examples::mock_upstream::{
    AccountCounts, Behavior, MockConfig, MockStats, MockUpstream, SyntheticAccount, seed_pool,
};
use examples::proxy::TOKEN_ENV;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Set (to `codex-cli`) in the environment of this binary re-run as the Codex CLI.
const ROLE: &str = "SHARED_POOL_TEST_ROLE";
const WRAPPER_TOKEN: &str = "shared-pool-test-wrapper-token-0123456789";
/// How soon a change one process makes must show in every running proxy (they look at the
/// pool and the shared policy state every 250 ms).
const TAKES_EFFECT_WITHIN: Duration = Duration::from_secs(1);

/// One test at a time (see the module docs).
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------------
// The Codex CLI: this binary re-run as a child process.
// ---------------------------------------------------------------------------------------

/// Child: behaves like the Codex CLI in `CODEX_HOME` until `STOP_FILE` appears (at most
/// 180 s): every ~300 ms it takes the home's locks as the CLI does, reads `auth.json`, and
/// when the access token expires within 1.5 s refreshes it itself at `TOKEN_URL` and
/// rewrites `auth.json` in place (truncate + write, mode 0600 — not through auth-storage).
/// Any refusal, `refresh_token_reused` above all, fails it.
#[test]
fn child_codex_cli() {
    if std::env::var(ROLE).as_deref() != Ok("codex-cli") {
        return;
    }
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is set"));
    let home = CodexHome::new(var("CODEX_HOME"));
    let token_url = var("TOKEN_URL");
    let stop = PathBuf::from(var("STOP_FILE"));
    let deadline = Instant::now() + Duration::from_secs(180);
    let (mut ticks, mut refreshed, mut refreshed_by_others, mut switched) = (0u64, 0u64, 0, 0);
    // (account id, refresh token) as this process last left or saw them.
    let mut last: Option<(String, String)> = None;
    for _ in 0..1_000 {
        if stop.exists() || Instant::now() > deadline {
            break;
        }
        ticks += 1;
        {
            let _locks = home.lock().expect("the CLI takes its locks");
            let bytes = std::fs::read(home.auth_file()).expect("auth.json is readable");
            let mut doc: serde_json::Value =
                serde_json::from_slice(&bytes).expect("auth.json is whole JSON under the locks");
            let field = |doc: &serde_json::Value, key: &str| {
                doc["tokens"][key]
                    .as_str()
                    .unwrap_or_else(|| panic!("auth.json has tokens.{key}"))
                    .to_owned()
            };
            let account = field(&doc, "account_id");
            let refresh = field(&doc, "refresh_token");
            match &last {
                Some((a, r)) if *a == account && *r != refresh => refreshed_by_others += 1,
                Some((a, _)) if *a != account => switched += 1,
                _ => {}
            }
            let expiry = auth_core::jwt::parse_expiry(&field(&doc, "access_token"))
                .ok()
                .flatten();
            // Half a second before the proxies' `--refresh-margin 1`: a proxy serving this
            // account refreshes it as soon as a request needs it, within milliseconds of the
            // margin, so with the same margin a loaded machine could leave the CLI (ticking
            // every 300 ms) no refresh at all. Refreshing first, the CLI spends the token
            // the proxies then must adopt rather than spend again.
            let due =
                expiry.is_none_or(|exp| exp <= SystemTime::now() + Duration::from_millis(1_500));
            let mut now_holding = refresh.clone();
            if due {
                // The body auth-core's refresh client (and the CLI) send.
                let body = serde_json::json!({
                    "client_id": auth_core::codex::CLIENT_ID,
                    "grant_type": "refresh_token",
                    "refresh_token": refresh,
                })
                .to_string();
                let (status, answer) = post_json(&token_url, &body);
                assert!(
                    !answer.contains("refresh_token_reused"),
                    "the CLI was answered refresh_token_reused ({status}): someone spent the \
                     refresh token its auth.json held"
                );
                assert_eq!(status, 200, "the CLI's refresh was refused: {answer}");
                let fresh: serde_json::Value =
                    serde_json::from_str(json_part(&answer)).expect("a JSON answer");
                for key in ["id_token", "access_token", "refresh_token"] {
                    if let Some(value) = fresh.get(key).and_then(serde_json::Value::as_str) {
                        doc["tokens"][key] = value.into();
                    }
                }
                doc["last_refresh"] = Timestamp::now().as_str().into();
                write_in_place(
                    &home.auth_file(),
                    &serde_json::to_vec_pretty(&doc).expect("serializable"),
                );
                now_holding = field(&doc, "refresh_token");
                refreshed += 1;
            }
            last = Some((account, now_holding));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    println!(
        "RESULT ticks={ticks} refreshed={refreshed} refreshed_by_others={refreshed_by_others} switched={switched}"
    );
}

/// How the Codex CLI saves `auth.json`: truncated and rewritten in place, mode 0600 (Unix).
fn write_in_place(path: &Path, bytes: &[u8]) {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).expect("auth.json opens for writing");
    file.write_all(bytes).expect("auth.json is written");
}

/// A one-shot HTTP/1.1 `POST` of a JSON body over a plain `TcpStream` (loopback only):
/// the status and the body. Bounded by 20 s socket timeouts.
fn post_json(url: &str, body: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (authority, path) = rest.split_once('/').expect("a URL with a path");
    let mut stream = std::net::TcpStream::connect(authority).expect("the issuer is reachable");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let request = format!(
        "POST /{path} HTTP/1.1\r\nhost: {authority}\r\ncontent-type: application/json\r\n\
         accept: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("request sent");
    let mut answer = Vec::new();
    // Until the server closes (`connection: close`), or the read timeout.
    stream.read_to_end(&mut answer).expect("an answer");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The JSON object in an HTTP body (skipping chunk-size lines, if any).
fn json_part(body: &str) -> &str {
    match (body.find('{'), body.rfind('}')) {
        (Some(start), Some(end)) if start <= end => &body[start..=end],
        _ => body,
    }
}

// ---------------------------------------------------------------------------------------
// The world the processes share.
// ---------------------------------------------------------------------------------------

/// A private directory (pool, Codex homes, `HOME`, proxy logs) and the built programs.
struct World {
    root: tempfile::TempDir,
    proxy_bin: PathBuf,
    accounts_bin: PathBuf,
    client: reqwest::Client,
}

impl World {
    fn new(test: &str) -> Option<Self> {
        let proxy_bin = common::example_or_skip("rotation-proxy", test)?;
        let accounts_bin = common::example_or_skip("accounts", test)?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        Some(Self {
            root: tempfile::tempdir().unwrap(),
            proxy_bin,
            accounts_bin,
            client,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    fn pool_dir(&self) -> PathBuf {
        self.path("pool")
    }

    fn store(&self) -> PoolStore {
        PoolStore::new(self.pool_dir())
    }

    /// `accounts --pool-dir POOL ARGS` with a private `HOME` and `CODEX_HOME`, bounded (30 s).
    fn accounts_task(&self, args: &[&str]) -> tokio::task::JoinHandle<common::Run> {
        let mut cmd = Command::new(&self.accounts_bin);
        cmd.arg("--pool-dir")
            .arg(self.pool_dir())
            .args(args)
            .env("HOME", self.path("user-home"))
            .env("CODEX_HOME", self.path("default-codex-home"))
            .env_remove("CODEX_POOL_DIR")
            .env("NO_COLOR", "1");
        tokio::task::spawn_blocking(move || common::run_bounded(cmd, Duration::from_secs(30)))
    }

    /// [`accounts_task`](Self::accounts_task), asserting that it exits 0.
    async fn accounts(&self, args: &[&str]) -> common::Run {
        let run = self.accounts_task(args).await.unwrap();
        assert_eq!(
            run.code,
            Some(0),
            "accounts {args:?} failed:\n{}{}",
            run.stdout,
            run.stderr
        );
        run
    }

    /// Starts `rotation-proxy` over the pool (`--refresh-margin 1`, config left alone),
    /// logging at `info` to `<name>.log`, and waits (bounded) for its address.
    async fn proxy(&self, name: &str, mock: &MockUpstream) -> Proxy {
        let log = self.path(&format!("{name}.log"));
        let mut cmd = tokio::process::Command::new(&self.proxy_bin);
        cmd.args([
            "--listen",
            "127.0.0.1:0",
            "--no-config-rewrite",
            "--refresh-margin",
            "1",
            // Overload answered at once (429), not held for a paced account: the load
            // below counts on many quick answers.
            "--max-wait-ms",
            "0",
            "--pool-dir",
        ])
        .arg(self.pool_dir())
        .arg("--codex-home")
        .arg(self.path("proxy-codex-home"))
        .args([
            "--upstream",
            &mock.base_url(),
            "--token-url",
            &mock.token_url(),
        ])
        .env(TOKEN_ENV, WRAPPER_TOKEN)
        .env("RUST_LOG", "info")
        .env("HOME", self.path("user-home"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        // Bounded: 100 lines, 60 s.
        let mut addr = None;
        for _ in 0..100 {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(Ok(Some(line))) = tokio::time::timeout(left, lines.next_line()).await else {
                break;
            };
            addr = line
                .strip_prefix("rotation-proxy: listening on http://")
                .and_then(|rest| rest.split('/').next())
                .and_then(|a| a.parse::<SocketAddr>().ok());
            seen.push(line);
            if addr.is_some() {
                break;
            }
        }
        let Some(addr) = addr else {
            panic!(
                "{name} did not start: {seen:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Proxy {
            name: name.to_owned(),
            child,
            addr,
            log,
        }
    }

    /// Pool id of the login of ChatGPT workspace `ws`.
    fn pool_id(&self, ws: &str) -> String {
        self.store()
            .load()
            .unwrap()
            .pool
            .accounts
            .iter()
            .find(|a| a.account_id.as_deref() == Some(ws))
            .unwrap_or_else(|| panic!("{ws} is in the pool"))
            .id
            .clone()
    }

    /// Puts `login` into a fresh Codex home (as `codex login` leaves it) and returns it.
    fn home_with(&self, name: &str, login: &SyntheticAccount) -> PathBuf {
        let home = self.path(name);
        std::fs::create_dir_all(&home).unwrap();
        write_in_place(
            &home.join("auth.json"),
            AuthDocument::chatgpt(login.tokens.clone(), Timestamp::now())
                .to_json_pretty()
                .as_bytes(),
        );
        home
    }
}

/// A running `rotation-proxy` (killed when dropped).
struct Proxy {
    name: String,
    child: tokio::process::Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Proxy {
    /// `GET /status`.
    async fn status(&self, client: &reqwest::Client) -> serde_json::Value {
        let body = client
            .get(format!("http://{}/status", self.addr))
            .bearer_auth(WRAPPER_TOKEN)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{} answers /status: {e}", self.name))
            .bytes()
            .await
            .unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    /// The proxy's report on pool account `id`; `None` when it is not in its live set.
    async fn account(&self, client: &reqwest::Client, id: &str) -> Option<serde_json::Value> {
        let status = self.status(client).await;
        status["accounts"]
            .as_array()?
            .iter()
            .find(|a| a["id"] == id)
            .cloned()
    }

    /// Why the proxy does not pick pool account `id` (`"manual"`, `"login-required"`, …),
    /// `Some(null)` when it does, `None` when the account is not in its live set.
    async fn disabled(&self, client: &reqwest::Client, id: &str) -> Option<serde_json::Value> {
        self.account(client, id)
            .await
            .map(|a| a["disabled"].clone())
    }

    /// `kill -9`, and reaped (bounded).
    async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------
// Clients.
// ---------------------------------------------------------------------------------------

/// One `POST /v1/responses` through the proxy at `addr`: the status and the whole body, or
/// why no answer came.
async fn ask(
    client: &reqwest::Client,
    addr: SocketAddr,
    stream: bool,
) -> Result<(u16, String), String> {
    let body = serde_json::json!({"model": "gpt-5", "input": "hello", "stream": stream});
    let answer = client
        .post(format!("http://{addr}/v1/responses"))
        .bearer_auth(WRAPPER_TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| format!("no answer: {e:?}"))?;
    let status = answer.status().as_u16();
    let text = answer
        .text()
        .await
        .map_err(|e| format!("{status}, body cut: {e:?}"))?;
    Ok((status, text))
}

/// Whether `body` is the proxy's own clear refusal: 429/503 with `{"error":{"type",…}}`.
fn clear_refusal(status: u16, body: &str) -> bool {
    matches!(status, 429 | 503)
        && serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| {
                v.pointer("/error/type")
                    .and_then(|t| t.as_str())
                    .map(str::len)
            })
            .is_some_and(|len| len > 0)
}

/// What clients got.
#[derive(Debug, Default)]
struct Tally {
    statuses: BTreeMap<u16, u64>,
    /// Requests without an HTTP answer, or streams cut short.
    failures: Vec<String>,
    /// Non-200 answers that are not a clear refusal.
    unclear: Vec<String>,
    /// Clear refusals by status and `error.type`.
    refusals: BTreeMap<(u16, String), u64>,
}

impl Tally {
    fn add(&mut self, result: Result<(u16, String), String>, stream: bool) {
        match result {
            Ok((status, body)) => {
                *self.statuses.entry(status).or_default() += 1;
                if status == 200 {
                    if stream && !body.contains("response.completed") {
                        self.failures
                            .push(format!("a stream ended early: {body:.300}"));
                    }
                } else if clear_refusal(status, &body) {
                    let kind = serde_json::from_str::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v.pointer("/error/type")?.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    *self.refusals.entry((status, kind)).or_default() += 1;
                } else {
                    self.unclear.push(format!("{status} {body:.300}"));
                }
            }
            Err(e) => self.failures.push(e),
        }
    }

    fn merge(&mut self, other: Tally) {
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.failures.extend(other.failures);
        self.unclear.extend(other.unclear);
        for (kind, n) in other.refusals {
            *self.refusals.entry(kind).or_default() += n;
        }
    }

    fn answered(&self) -> u64 {
        self.statuses.values().sum()
    }

    fn ok(&self) -> u64 {
        self.statuses.get(&200).copied().unwrap_or(0)
    }

    /// Every request got an HTTP answer, every stream ran to its end, and every non-200
    /// answer is a clear refusal.
    fn assert_all_answered(&self, what: &str) {
        assert!(
            self.failures.is_empty(),
            "{what}: {} requests got no (whole) answer: {:?}",
            self.failures.len(),
            &self.failures[..self.failures.len().min(5)]
        );
        assert!(
            self.unclear.is_empty(),
            "{what}: answers that are neither 200 nor a clear refusal: {:?}",
            &self.unclear[..self.unclear.len().min(5)]
        );
    }
}

/// Clients sending requests in a loop over some proxies until stopped (each bounded to
/// 100,000 requests and 120 s).
struct Traffic {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    in_flight: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
}

impl Traffic {
    /// `clients` concurrent clients; client `c`'s `k`-th request goes to
    /// `addrs[(c + k) % len]`; client `c` starts after `c × stagger` and waits `pause`
    /// between its requests.
    fn start(
        client: &reqwest::Client,
        addrs: &[SocketAddr],
        clients: usize,
        stream: bool,
        pause: Duration,
        stagger: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let in_flight = Arc::new(AtomicU64::new(0));
        let tasks = (0..clients)
            .map(|c| {
                let (client, addrs) = (client.clone(), addrs.to_vec());
                let (stop, answered, in_flight) =
                    (stop.clone(), answered.clone(), in_flight.clone());
                tokio::spawn(async move {
                    let mut tally = Tally::default();
                    tokio::time::sleep(stagger * u32::try_from(c).unwrap_or(0)).await;
                    let began = Instant::now();
                    for k in 0..100_000 {
                        if stop.load(Ordering::SeqCst) || began.elapsed() > Duration::from_secs(120)
                        {
                            break;
                        }
                        in_flight.fetch_add(1, Ordering::SeqCst);
                        let result = ask(&client, addrs[(c + k) % addrs.len()], stream).await;
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        tally.add(result, stream);
                        answered.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(pause).await;
                    }
                    tally
                })
            })
            .collect();
        Self {
            stop,
            answered,
            in_flight,
            tasks,
        }
    }

    fn answered(&self) -> u64 {
        self.answered.load(Ordering::SeqCst)
    }

    fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Waits (bounded by `limit`) until `n` more requests than now were answered.
    async fn wait_for_more(&self, n: u64, limit: Duration) {
        let target = self.answered() + n;
        let took = until(limit, async || self.answered() >= target).await;
        assert!(
            took.is_some(),
            "clients got {n} more answers within {limit:?}"
        );
    }

    /// Stops the clients (each finishes its request in flight) and adds up what they got.
    async fn finish(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Tally::default();
        for task in self.tasks {
            all.merge(task.await.unwrap());
        }
        all
    }
}

/// Checks `check` every 20 ms until it holds: how long that took, or `None` after `limit`.
async fn until(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    let rounds = limit.as_millis() / 20 + 2;
    for _ in 0..rounds {
        if check().await {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

fn counts(stats: &MockStats, ws: &str) -> AccountCounts {
    stats.accounts.get(ws).cloned().unwrap_or_default()
}

/// `/responses` requests the mock received for `ws`, whatever it answered.
fn sent_to(mock: &MockUpstream, ws: &str) -> u64 {
    let c = counts(&mock.stats(), ws);
    c.ok + c.rate_limited + c.server_errors + c.unauthorized + c.deactivated
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// Synthetic logins `ws-1` … `ws-n` (`userN@example.com`).
fn logins(mock: &MockUpstream, n: usize) -> Vec<SyntheticAccount> {
    (1..=n)
        .map(|i| mock.synthetic_account(&format!("ws-{i}"), &format!("user{i}@example.com"), false))
        .collect()
}

// ---------------------------------------------------------------------------------------
// 1. The main scenario.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_proxies_a_codex_cli_and_the_accounts_tool_share_one_pool_and_never_spend_a_token_twice()
 {
    const TEST: &str = "four_proxies_a_codex_cli_and_the_accounts_tool_share_one_pool";
    let Some(w) = World::new(TEST) else {
        return;
    };
    let _turn = TURN.lock().await;
    let began = Instant::now();
    let mock = MockUpstream::start(
        MockConfig::default()
            .access_ttl(Duration::from_secs(4))
            .reject_expired_access(true),
    )
    .await
    .unwrap();
    // Expiries are counted from here: the first access tokens are issued now.
    let run_from = unix_now();
    let logins = logins(&mock, 3);
    seed_pool(&w.store(), &logins).unwrap();
    let home = w.path("codex-home");
    let home_arg = home.to_str().unwrap().to_owned();
    w.accounts(&["use", "1", "--codex-home", &home_arg]).await;
    // The pool now knows the home (its `homes` map, keyed by the canonical directory).
    let pool_file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.store().file()).unwrap()).unwrap();
    let key = home.canonicalize().unwrap();
    assert!(
        pool_file["homes"].get(key.to_str().unwrap()).is_some(),
        "the pool links the Codex home: {}",
        pool_file["homes"]
    );

    // The Codex CLI in that home.
    let stop_cli = w.path("stop-cli");
    let mut cli = Command::new(std::env::current_exe().unwrap());
    cli.args([
        "--exact",
        "child_codex_cli",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ROLE, "codex-cli")
    .env("CODEX_HOME", &home)
    .env("TOKEN_URL", mock.token_url())
    .env("STOP_FILE", &stop_cli);
    let cli =
        tokio::task::spawn_blocking(move || common::run_bounded(cli, Duration::from_secs(150)));

    let mut proxies = Vec::new();
    for i in 1..=4 {
        proxies.push(w.proxy(&format!("proxy-{i}"), &mock).await);
    }
    let addrs: Vec<SocketAddr> = proxies.iter().map(|p| p.addr).collect();

    // The accounts tool, one command a second: list, use 1/2 on the CLI's home, disable and
    // enable 3 (bounded: 200 commands), while 8 clients send requests over the 4 proxies
    // (~90 a second) for ≥ 30 s and ≥ 2,000 requests, at most 45 s (100 s on Windows).
    let stop_tool = AtomicBool::new(false);
    let steps: [Vec<&str>; 8] = [
        vec!["list"],
        vec!["use", "2", "--codex-home", &home_arg],
        vec!["list", "--json"],
        vec!["disable", "3"],
        vec!["list"],
        vec!["use", "1", "--codex-home", &home_arg],
        vec!["list", "--json"],
        vec!["enable", "3"],
    ];
    let tool = async {
        let mut runs: Vec<(String, Option<i32>, Duration, String)> = Vec::new();
        for step in steps.iter().cycle().take(200) {
            if stop_tool.load(Ordering::SeqCst) {
                break;
            }
            let t = Instant::now();
            let run = w.accounts_task(step).await.unwrap();
            let name = step[..step.len().min(2)].join(" ");
            let mut problem = format!("{}{}", run.stdout, run.stderr);
            if step[..] == ["list", "--json"] {
                let list: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_default();
                let accounts = list["accounts"].as_array().cloned().unwrap_or_default();
                if accounts.len() == 3 && accounts.iter().all(|a| a["unusable"].is_null()) {
                    problem.clear();
                }
            } else if run.code == Some(0) {
                problem.clear();
            }
            runs.push((name, run.code, t.elapsed(), problem));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        runs
    };
    let load = async {
        let traffic = Traffic::start(
            &w.client,
            &addrs,
            8,
            false,
            Duration::from_millis(80),
            Duration::from_millis(10),
        );
        let began = Instant::now();
        // The same load takes longer where the programs run slower (under Wine about half
        // as many answers a second): the bound is the time, the count is the requirement.
        let at_most = Duration::from_secs(if cfg!(windows) { 100 } else { 45 });
        for _ in 0..1_000 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let elapsed = began.elapsed();
            if (elapsed >= Duration::from_secs(30) && traffic.answered() >= 2_000)
                || elapsed >= at_most
            {
                break;
            }
        }
        let tally = traffic.finish().await;
        stop_tool.store(true, Ordering::SeqCst);
        (tally, began.elapsed())
    };
    let (tool_runs, (tally, load_took)) = tokio::join!(tool, load);
    let mut proxy_refreshes = Vec::new();
    for p in &proxies {
        let status = p.status(&w.client).await;
        proxy_refreshes.push((
            status["counters"]["requests"].as_u64().unwrap_or(0),
            status["counters"]["refreshes"].as_u64().unwrap_or(0),
        ));
    }
    std::fs::write(&stop_cli, b"").unwrap();
    let cli = cli.await.unwrap();
    let run_to = unix_now();
    // Nothing refreshes from here on: the clients and the CLI have stopped.
    for p in &mut proxies {
        p.kill().await;
    }
    assert_eq!(
        cli.code,
        Some(0),
        "the Codex CLI process failed:\n{}\n{}",
        cli.stdout,
        cli.stderr
    );
    // libtest prints the test's name on the same line, before the child's output.
    let cli_result = cli
        .stdout
        .split_once("RESULT ")
        .and_then(|(_, rest)| rest.lines().next())
        .unwrap_or_else(|| panic!("no RESULT from the CLI process: {}", cli.stdout))
        .to_owned();
    let cli_refreshed: u64 = cli_result
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("refreshed="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);

    let stats = mock.stats();
    let pool = w.store().load().unwrap().pool;
    println!(
        "shared pool: {} requests in {:.1} s over 4 proxies (per proxy: {:?}), statuses {:?}, \
         refusals {:?}",
        tally.answered(),
        load_took.as_secs_f64(),
        proxy_refreshes.iter().map(|p| p.0).collect::<Vec<_>>(),
        tally.statuses,
        tally.refusals
    );
    let mut expiries_total = 0;
    for login in &logins {
        let c = counts(&stats, &login.account_id);
        let expiries = c
            .issued
            .iter()
            .filter(|t| t.exp >= run_from && t.exp <= run_to)
            .count() as u64;
        expiries_total += expiries;
        println!(
            "  {}: {} requests answered ok, {} token calls, {} refreshes, {} reused, {} access tokens expired during the run",
            login.account_id, c.ok, c.refresh_calls, c.refreshes, c.refresh_reused, expiries
        );
    }
    println!(
        "  token endpoint: {} calls ({} refreshes: proxies {:?}, CLI {cli_refreshed}), {} reused, {} unknown; {expiries_total} expiries over {} s",
        stats.token_requests,
        stats.refreshes,
        proxy_refreshes.iter().map(|p| p.1).collect::<Vec<_>>(),
        stats.refresh_reused,
        stats.refresh_unknown,
        run_to - run_from
    );
    println!("  Codex CLI process: {cli_result}");
    let mut by_command: BTreeMap<&str, (u64, Duration)> = BTreeMap::new();
    for (name, _, took, _) in &tool_runs {
        let entry = by_command.entry(name).or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(*took);
    }
    println!("  accounts commands (count, slowest): {by_command:?}");

    let failed: Vec<_> = tool_runs
        .iter()
        .filter(|(_, code, _, problem)| *code != Some(0) || !problem.is_empty())
        .collect();
    assert!(failed.is_empty(), "accounts commands failed: {failed:?}");
    assert!(
        by_command.get("use 1").is_some_and(|c| c.0 >= 1)
            && by_command.get("use 2").is_some_and(|c| c.0 >= 1),
        "the home was switched both ways: {by_command:?}"
    );
    tally.assert_all_answered("shared pool");
    assert!(
        tally.answered() >= 2_000,
        "at least 2,000 requests: {}",
        tally.answered()
    );
    // Each proxy's policy paces every account (60 back to back, then one a second), so
    // about 1,000 of the requests can be served in 30 s; the rest are its clear 429s.
    assert!(
        tally.ok() >= 500,
        "a good share of the requests was served: {:?}",
        tally.statuses
    );
    assert_eq!(
        (
            stats.refresh_reused,
            stats.refresh_unknown,
            stats.refresh_invalidated
        ),
        (0, 0, 0),
        "no refresh token was ever presented twice (or lost)"
    );
    assert_eq!(
        stats.token_requests, stats.refreshes,
        "every token call succeeded"
    );
    assert!(
        stats.token_requests <= expiries_total + logins.len() as u64,
        "one token request per expiry: {} calls for {expiries_total} expiries",
        stats.token_requests
    );
    assert!(
        cli_refreshed >= 1,
        "the CLI refreshed in its home at least once: {cli_result}"
    );
    let marked: Vec<_> = pool
        .accounts
        .iter()
        .filter(|a| a.unusable.is_some() || a.refreshing.is_some())
        .map(|a| (&a.id, &a.unusable, &a.refreshing))
        .collect();
    assert!(
        marked.is_empty(),
        "no account is marked unusable or mid-refresh: {marked:?}"
    );

    // Nothing lost: the newest copy of every login (the pool's, or the CLI's home's for the
    // login it holds) still refreshes at the issuer.
    let home_doc = AuthDocument::from_json_slice(&std::fs::read(home.join("auth.json")).unwrap())
        .unwrap()
        .tokens
        .unwrap();
    let url = mock.token_url();
    for account in &pool.accounts {
        let mut tokens = account.tokens.clone();
        if home_doc.account_id == tokens.account_id
            && home_doc.access_token_expires_at().ok().flatten()
                > tokens.access_token_expires_at().ok().flatten()
        {
            tokens = home_doc.clone();
        }
        let body = serde_json::json!({
            "client_id": auth_core::codex::CLIENT_ID,
            "grant_type": "refresh_token",
            "refresh_token": tokens.refresh_token.expose(),
        })
        .to_string();
        let url = url.clone();
        let (status, answer) = tokio::task::spawn_blocking(move || post_json(&url, &body))
            .await
            .unwrap();
        assert_eq!(
            status, 200,
            "the newest copy of {} is live at the issuer: {answer}",
            account.id
        );
    }
    println!(
        "  every login's newest refresh token is still live; whole test {:.1} s",
        began.elapsed().as_secs_f64()
    );
    mock.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// 2. kill -9 between the issuer's answer and the save.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_killed_between_the_issuers_answer_and_the_save_leaves_login_required_and_no_refresh_loop()
 {
    const TEST: &str = "a_proxy_killed_between_the_issuers_answer_and_the_save";
    let Some(w) = World::new(TEST) else {
        return;
    };
    let _turn = TURN.lock().await;
    let gate = Arc::new(tokio::sync::Notify::new());
    let mock = MockUpstream::start(
        MockConfig::default()
            .stall_token_answers(gate.clone())
            .reject_expired_access(true),
    )
    .await
    .unwrap();
    let login = mock.synthetic_account("ws-crash", "crash@example.com", true);
    seed_pool(&w.store(), std::slice::from_ref(&login)).unwrap();

    let mut killed = w.proxy("proxy-killed", &mock).await;
    let (client, addr) = (w.client.clone(), killed.addr);
    let pending = tokio::spawn(async move { ask(&client, addr, false).await });
    assert!(
        mock.wait_for_token_requests(1, Duration::from_secs(30))
            .await,
        "the first proxy asked the issuer for new tokens:\n{}",
        killed.log()
    );
    // The issuer has spent the refresh token and issued new ones; the answer is held.
    killed.kill().await;
    gate.notify_waiters();
    let lost = tokio::time::timeout(Duration::from_secs(30), pending)
        .await
        .expect("the killed proxy's client returns")
        .unwrap();
    assert!(lost.is_err(), "the killed proxy never answered: {lost:?}");
    let stats = mock.stats();
    assert_eq!((stats.token_requests, stats.refreshes), (1, 1));
    let account = w.store().load().unwrap().pool.accounts.remove(0);
    assert!(
        account.refreshing.is_some(),
        "the in-flight mark outlives the process"
    );
    assert_eq!(
        account.tokens.refresh_token, login.tokens.refresh_token,
        "the new tokens died with the process"
    );
    assert!(account.unusable.is_none());

    let after = w.proxy("proxy-after", &mock).await;
    let first = ask(&w.client, after.addr, false).await;
    let stats = mock.stats();
    assert_eq!(
        (stats.token_requests, stats.refresh_reused),
        (2, 1),
        "exactly one more token call, answered refresh_token_reused: {first:?}\n{}",
        after.log()
    );
    let Ok((first_status, first_body)) = &first else {
        panic!("the second proxy answered: {first:?}");
    };
    assert!(
        clear_refusal(*first_status, first_body),
        "a clear refusal: {first_status} {first_body}"
    );
    let account = w.store().load().unwrap().pool.accounts.remove(0);
    let mark = account.unusable.clone().expect("marked in pool.json");
    assert_eq!(mark.reason, UnusableReason::LoginRequired);
    assert_eq!(mark.code.as_deref(), Some("refresh_token_reused"));
    assert!(
        account.refreshing.is_none(),
        "the in-flight mark is cleared"
    );
    let list = w.accounts(&["list"]).await;
    assert!(
        list.stdout
            .contains("login required (refresh_token_reused)"),
        "{}",
        list.stdout
    );

    // No refresh loop: requests for 3 s (at most 60), not one more token call.
    let mut tally = Tally::default();
    let from = Instant::now();
    for _ in 0..60 {
        if from.elapsed() > Duration::from_secs(3) {
            break;
        }
        tally.add(ask(&w.client, after.addr, false).await, false);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = mock.stats();
    tally.assert_all_answered("after the crash");
    assert_eq!(tally.ok(), 0);
    assert_eq!(
        stats.token_requests,
        2,
        "no token call after the mark ({} requests)",
        tally.answered()
    );
    assert_eq!(sent_to(&mock, "ws-crash"), 0, "nothing sent upstream");
    println!(
        "kill -9 after the issuer answered: 1 token call before the kill; after it 1 more \
         (refresh_token_reused), then the account is {mark}; the first request got {first_status} \
         {first_body}; {} more requests in {:.1} s got {:?}, token calls stayed at {}",
        tally.answered(),
        from.elapsed().as_secs_f64(),
        tally.statuses,
        stats.token_requests
    );
    mock.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// 3. Disabled survives restarts; cooldowns are shared.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_account_stays_out_across_restarts_and_enable_brings_it_back_within_a_second() {
    const TEST: &str = "a_disabled_account_stays_out_across_restarts";
    let Some(w) = World::new(TEST) else {
        return;
    };
    let _turn = TURN.lock().await;
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    seed_pool(&w.store(), &logins(&mock, 3)).unwrap();
    w.accounts(&["disable", "2"]).await;

    let mut figures = Vec::new();
    let mut proxy = None;
    for name in ["proxy-first-run", "proxy-restarted"] {
        if let Some(mut earlier) = proxy.take() {
            Proxy::kill(&mut earlier).await;
        }
        let p = w.proxy(name, &mock).await;
        let mut tally = Tally::default();
        for _ in 0..30 {
            tally.add(ask(&w.client, p.addr, false).await, false);
        }
        tally.assert_all_answered(name);
        assert_eq!(tally.ok(), 30, "{name}: {:?}", tally.statuses);
        figures.push(format!(
            "{name}: 30 requests, account 2 got {}",
            sent_to(&mock, "ws-2")
        ));
        assert_eq!(sent_to(&mock, "ws-2"), 0, "{name} left account 2 alone");
        proxy = Some(p);
    }
    let p = proxy.unwrap();
    assert!(sent_to(&mock, "ws-1") > 0 && sent_to(&mock, "ws-3") > 0);

    // Paced (about 10 a second) so the policy's per-account budget (60 back to back, then
    // 1 a second) does not run out while the test waits.
    let traffic = Traffic::start(
        &w.client,
        &[p.addr],
        2,
        false,
        Duration::from_millis(200),
        Duration::from_millis(100),
    );
    traffic.wait_for_more(6, Duration::from_secs(30)).await;
    let t = Instant::now();
    w.accounts(&["enable", "2"]).await;
    let command = t.elapsed();
    let took = until(Duration::from_secs(10), async || sent_to(&mock, "ws-2") > 0).await;
    let tally = traffic.finish().await;
    tally.assert_all_answered("enable while requests stream");
    assert_eq!(tally.ok(), tally.answered(), "{:?}", tally.statuses);
    let took = took.expect("account 2 gets requests again");
    println!(
        "disabled across a restart: {}; `accounts enable 2` took {} ms, account 2's first \
         request came {} ms after it exited ({} requests meanwhile)",
        figures.join("; "),
        ms(command),
        ms(took),
        tally.answered()
    );
    assert!(
        took <= TAKES_EFFECT_WITHIN,
        "enable took effect within {TAKES_EFFECT_WITHIN:?}: {took:?}"
    );
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_seen_by_one_proxy_keeps_the_other_away_within_a_second() {
    const TEST: &str = "a_rate_limit_seen_by_one_proxy_keeps_the_other_away";
    let Some(w) = World::new(TEST) else {
        return;
    };
    let _turn = TURN.lock().await;
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    seed_pool(&w.store(), &logins(&mock, 2)).unwrap();
    let a = w.proxy("proxy-a", &mock).await;
    let b = w.proxy("proxy-b", &mock).await;

    // B uses account 1 while nothing is wrong with it.
    for _ in 0..10 {
        let (status, _) = ask(&w.client, b.addr, false).await.unwrap();
        assert_eq!(status, 200);
    }
    let b_before = sent_to(&mock, "ws-1");
    assert!(b_before > 0, "B uses account 1 before the 429");

    // Account 1 answers its next request 429 with a 5-minute Retry-After; A meets it.
    mock.set_account(
        "ws-1",
        Behavior::RateLimited {
            retry_after: Duration::from_secs(300),
            times: 1,
        },
    );
    let mut hit = None;
    for _ in 0..20 {
        let sent = Instant::now();
        let (status, body) = ask(&w.client, a.addr, false).await.unwrap();
        assert_eq!(status, 200, "A moves on to account 2: {body}");
        if counts(&mock.stats(), "ws-1").rate_limited == 1 {
            hit = Some(sent);
            break;
        }
    }
    // The 429 came after `hit` (the send of the request that met it).
    let hit = hit.expect("A met account 1's 429");

    // From then on only B is asked, one request at a time, for 3 s (at most 300).
    let (mut early, mut late, mut asked_late) = (0, 0, 0);
    for _ in 0..300 {
        if hit.elapsed() > Duration::from_secs(3) {
            break;
        }
        let sent = Instant::now();
        let before = sent_to(&mock, "ws-1");
        let (status, body) = ask(&w.client, b.addr, false).await.unwrap();
        assert_eq!(
            status,
            200,
            "{body}\n{}\n{}",
            b.status(&w.client).await,
            std::fs::read_to_string(w.store().state_file()).unwrap_or_default()
        );
        let to_account_1 = sent_to(&mock, "ws-1") > before;
        // Paced: the policy's own per-account budget (60 back to back, then 1 a second)
        // must not be what keeps B away.
        tokio::time::sleep(Duration::from_millis(50)).await;
        if sent.duration_since(hit) < TAKES_EFFECT_WITHIN {
            early += u64::from(to_account_1);
        } else {
            asked_late += 1;
            late += u64::from(to_account_1);
        }
    }
    let b_view = b
        .account(&w.client, &w.pool_id("ws-1"))
        .await
        .expect("B knows account 1");
    println!(
        "shared cooldown: after A's 429 on account 1, B sent {early} requests to it within the \
         first second and {late} of {asked_late} after; B's view: rate limited for {}",
        b_view["rate_limited_families"]
    );
    assert!(asked_late >= 5, "B was asked after the first second");
    assert_eq!(late, 0, "B kept away from account 1 after the first second");
    assert_eq!(
        counts(&mock.stats(), "ws-1").rate_limited,
        1,
        "B never met the 429 itself"
    );
    assert!(
        b_view["rate_limited_families"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == "gpt-5")),
        "{b_view}"
    );
    mock.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// 4. Live changes while streams run.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_removed_added_disabled_and_enabled_while_streams_run_take_effect_within_a_second()
{
    const TEST: &str = "accounts_removed_added_disabled_and_enabled_while_streams_run";
    let Some(w) = World::new(TEST) else {
        return;
    };
    let _turn = TURN.lock().await;
    // Five gaps of 200 ms: each stream lasts about a second.
    let mock = MockUpstream::start(
        MockConfig::default()
            .deltas(3)
            .event_delay(Duration::from_millis(200)),
    )
    .await
    .unwrap();
    seed_pool(&w.store(), &logins(&mock, 3)).unwrap();
    let proxies = [
        w.proxy("proxy-1", &mock).await,
        w.proxy("proxy-2", &mock).await,
    ];
    let addrs: Vec<SocketAddr> = proxies.iter().map(|p| p.addr).collect();
    // Staggered, so a new stream starts about every 125 ms.
    let traffic = Traffic::start(
        &w.client,
        &addrs,
        8,
        true,
        Duration::ZERO,
        Duration::from_millis(125),
    );
    traffic.wait_for_more(8, Duration::from_secs(30)).await;
    let (id1, id3) = (w.pool_id("ws-1"), w.pool_id("ws-3"));

    let fresh = mock.synthetic_account("ws-4", "user4@example.com", false);
    let new_home = w.home_with("home-ws-4", &fresh);
    let new_home = new_home.to_str().unwrap().to_owned();
    let mut figures = Vec::new();
    let steps: [(&str, Vec<&str>); 4] = [
        ("disable 1", vec!["disable", "1"]),
        ("enable 1", vec!["enable", "1"]),
        ("import ws-4", vec!["import", "--codex-home", &new_home]),
        ("remove 3", vec!["remove", "3"]),
    ];
    for (name, args) in steps {
        // An account being taken out has streams running: the mock counts a request when
        // it arrives and each stream lasts at least a second, so requests that arrived in
        // the last 900 ms are still streaming (at most 10 tries).
        let target = match name {
            "disable 1" => Some("ws-1"),
            "remove 3" => Some("ws-3"),
            _ => None,
        };
        let mut streaming_on_target = 0;
        if let Some(ws) = target {
            for _ in 0..10 {
                let earlier = sent_to(&mock, ws);
                tokio::time::sleep(Duration::from_millis(900)).await;
                streaming_on_target = sent_to(&mock, ws) - earlier;
                if streaming_on_target > 0 {
                    break;
                }
            }
            assert!(streaming_on_target > 0, "{name}: streams run on {ws}");
        }
        let in_flight = traffic.in_flight();
        w.accounts(&args).await;
        let exited = Instant::now();
        let id4 = (name == "import ws-4").then(|| w.pool_id("ws-4"));
        // Each proxy's own view, through /status: when each first showed the change.
        let mut seen: Vec<Option<Duration>> = vec![None; proxies.len()];
        let client = &w.client;
        let all = until(Duration::from_secs(10), async || {
            for (p, seen) in proxies.iter().zip(seen.iter_mut()) {
                if seen.is_some() {
                    continue;
                }
                let shows = match name {
                    "disable 1" => p.disabled(client, &id1).await == Some("manual".into()),
                    "enable 1" => p.disabled(client, &id1).await == Some(serde_json::Value::Null),
                    "import ws-4" => p.account(client, id4.as_deref().unwrap()).await.is_some(),
                    _ => p.account(client, &id3).await.is_none(),
                };
                if shows {
                    *seen = Some(exited.elapsed());
                }
            }
            seen.iter().all(Option::is_some)
        })
        .await;
        assert!(all.is_some(), "{name} reached every proxy: {seen:?}");
        let slowest = seen.iter().flatten().max().copied().unwrap_or_default();
        // What the upstream then sees.
        let effect = match name {
            "disable 1" | "remove 3" => {
                let ws = if name == "disable 1" { "ws-1" } else { "ws-3" };
                // Requests already on their way when the proxies took the change may still
                // arrive; then nothing more.
                tokio::time::sleep(Duration::from_millis(250)).await;
                let settled = sent_to(&mock, ws);
                traffic.wait_for_more(16, Duration::from_secs(30)).await;
                let later = sent_to(&mock, ws);
                assert_eq!(later, settled, "{name}: no new request reached {ws}");
                format!(
                    "{streaming_on_target}+ streams were running on {ws} and finished; it got \
                     no new request over the next 16 answers"
                )
            }
            _ => {
                let ws = if name == "enable 1" { "ws-1" } else { "ws-4" };
                let before = sent_to(&mock, ws);
                until(Duration::from_secs(10), async || {
                    sent_to(&mock, ws) > before
                })
                .await
                .unwrap_or_else(|| panic!("{name}: {ws} gets requests"));
                // New requests start only as running streams end (about a second each).
                format!(
                    "{ws}'s first request reached the upstream {} ms after the command's exit",
                    ms(exited.elapsed())
                )
            }
        };
        figures.push(format!(
            "{name}: both proxies within {} ms of the command's exit ({in_flight} streams in flight); {effect}",
            ms(slowest)
        ));
        assert!(
            slowest <= TAKES_EFFECT_WITHIN,
            "{name} took effect within {TAKES_EFFECT_WITHIN:?}: {slowest:?}"
        );
    }
    let tally = traffic.finish().await;
    println!(
        "live changes while ~1 s streams run ({} streams, statuses {:?}):\n  {}",
        tally.answered(),
        tally.statuses,
        figures.join("\n  ")
    );
    tally.assert_all_answered("streams during live changes");
    assert_eq!(tally.ok(), tally.answered(), "{:?}", tally.statuses);
    mock.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// 5. Gone for everyone.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_gone_upstream_is_marked_for_everyone_and_signing_in_again_clears_it() {
    const TEST: &str = "a_login_gone_upstream_is_marked_for_everyone";
    let Some(w) = World::new(TEST) else {
        return;
    };
    let _turn = TURN.lock().await;
    let mock = MockUpstream::start(
        MockConfig::default()
            .account("ws-1", Behavior::TokenInvalidated)
            .account("ws-2", Behavior::Deactivated),
    )
    .await
    .unwrap();
    let logins = logins(&mock, 3);
    let seeded_at = unix_now();
    seed_pool(&w.store(), &logins).unwrap();
    let (id1, id2) = (w.pool_id("ws-1"), w.pool_id("ws-2"));

    // Proxy A meets both (at most 30 requests).
    let a = w.proxy("proxy-a", &mock).await;
    let mut tally = Tally::default();
    for _ in 0..30 {
        if sent_to(&mock, "ws-1") > 0 && sent_to(&mock, "ws-2") > 0 {
            break;
        }
        tally.add(ask(&w.client, a.addr, false).await, false);
    }
    tally.assert_all_answered("proxy A");
    assert_eq!(
        tally.ok(),
        tally.answered(),
        "A moved each request on to the usable account: {:?}",
        tally.statuses
    );
    let marked = until(Duration::from_secs(10), async || {
        let pool = w.store().load().unwrap().pool;
        pool.accounts
            .iter()
            .filter(|x| x.unusable.is_some())
            .count()
            == 2
    })
    .await;
    assert!(marked.is_some(), "both marked in pool.json:\n{}", a.log());
    let pool = w.store().load().unwrap().pool;
    let mark = |id: &str| pool.account(id).unwrap().unusable.clone().unwrap();
    assert_eq!(
        (mark(&id1).reason, mark(&id1).code.as_deref()),
        (UnusableReason::LoginRequired, Some("token_invalidated"))
    );
    assert_eq!(
        (mark(&id2).reason, mark(&id2).code.as_deref()),
        (UnusableReason::Deactivated, Some("deactivated_workspace"))
    );
    let list = w.accounts(&["list"]).await.stdout;
    assert!(
        list.contains("login required (token_invalidated)")
            && list.contains("deactivated (deactivated_workspace)"),
        "{list}"
    );
    let a_sent = (sent_to(&mock, "ws-1"), sent_to(&mock, "ws-2"));

    // Proxy B, started now, never sends to either.
    let b = w.proxy("proxy-b", &mock).await;
    let mut tally_b = Tally::default();
    for _ in 0..30 {
        tally_b.add(ask(&w.client, b.addr, false).await, false);
    }
    tally_b.assert_all_answered("proxy B");
    assert_eq!(tally_b.ok(), 30, "{:?}", tally_b.statuses);
    assert_eq!(
        (sent_to(&mock, "ws-1"), sent_to(&mock, "ws-2")),
        a_sent,
        "B never sent to the gone logins"
    );

    // Both sign in again (new tokens, same logins) and are imported from a Codex home.
    mock.set_account("ws-1", Behavior::Ok);
    mock.set_account("ws-2", Behavior::Ok);
    let traffic = Traffic::start(
        &w.client,
        &[a.addr, b.addr],
        2,
        false,
        Duration::from_millis(200),
        Duration::from_millis(100),
    );
    // A new sign-in's tokens expire later than the old ones (JWT times are whole seconds).
    let later = until(Duration::from_secs(3), async || unix_now() > seeded_at).await;
    assert!(later.is_some(), "the clock moves on");
    let mut back = Vec::new();
    for (i, login) in logins[..2].iter().enumerate() {
        let fresh = mock.synthetic_account(&login.account_id, &login.email, false);
        let home = w.home_with(&format!("signed-in-again-{i}"), &fresh);
        let before = sent_to(&mock, &login.account_id);
        w.accounts(&["import", "--codex-home", home.to_str().unwrap()])
            .await;
        let exited = Instant::now();
        let id = w.pool_id(&login.account_id);
        assert!(
            w.store()
                .load()
                .unwrap()
                .pool
                .account(&id)
                .unwrap()
                .unusable
                .is_none(),
            "new tokens clear the mark"
        );
        let used = until(Duration::from_secs(10), async || {
            sent_to(&mock, &login.account_id) > before
        })
        .await;
        let Some(used) = used else {
            panic!(
                "{} is used again: A {:?}, B {:?}\npool-state.json: {}\npool.json: {}",
                login.account_id,
                a.account(&w.client, &id).await,
                b.account(&w.client, &id).await,
                std::fs::read_to_string(w.store().state_file()).unwrap_or_default(),
                std::fs::read_to_string(w.store().file()).unwrap_or_default(),
            );
        };
        let mut views = Vec::new();
        for p in [&a, &b] {
            until(Duration::from_secs(10), async || {
                p.disabled(&w.client, &id).await == Some(serde_json::Value::Null)
            })
            .await
            .unwrap_or_else(|| panic!("{} takes {} back", p.name, login.account_id));
            views.push(ms(exited.elapsed()));
        }
        back.push(format!(
            "{} used again {} ms after the import (both proxies enabled it by {:?} ms)",
            login.account_id,
            ms(used),
            views
        ));
    }
    let tally_after = traffic.finish().await;
    tally_after.assert_all_answered("after signing in again");
    let list = w.accounts(&["list"]).await.stdout;
    assert!(
        !list.contains("login required") && !list.contains("deactivated"),
        "{list}"
    );
    println!(
        "gone for everyone: A sent {} request(s) to the invalidated login and {} to the \
         deactivated one, then pool.json marked them; B sent 0 of 30; after signing in again: {}",
        a_sent.0,
        a_sent.1,
        back.join(", ")
    );
    mock.shutdown().await;
}
