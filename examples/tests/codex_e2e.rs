//! End to end with the real Codex CLI: `codex exec` → rotation proxy → loopback mock upstream,
//! with the first pool account rate limited — once with the proxy as a library (logs captured
//! in-process), once as the `rotation-proxy` program a user runs (it rewrites and restores
//! `config.toml` itself).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use auth_storage::PoolStore;
use examples::mock_upstream::{
    Behavior, MockConfig, MockUpstream, MockUsage, MockWindow, UsageChannel, seed_pool,
};
use examples::proxy::{
    CodexRoute, PROVIDER_ID, ProxyOptions, RotationProxy, TOKEN_ENV, WrapperToken,
    load_pool_accounts,
};

const REPLY: &str = "Rotation works: hello from the mock upstream.";

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn codex_exec_through_the_proxy_rotates_past_a_429_and_config_is_restored() {
    let Some(codex) = common::codex_exec_or_skip("codex_exec_through_the_proxy") else {
        return;
    };
    // Capture every log line of this test (proxy + mock run on this thread).
    let logs = Capture::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mock = MockUpstream::start(MockConfig::default().reply(REPLY).deltas(3).account(
        "ws-alpha",
        Behavior::RateLimited {
            retry_after: Duration::from_secs(30),
            times: u32::MAX,
        },
    ))
    .await
    .unwrap();
    let alpha = mock.synthetic_account("ws-alpha", "alice.alpha@example.com", false);
    let beta = mock.synthetic_account("ws-beta", "bob.beta@example.com", false);

    let pool_dir = tempfile::tempdir().unwrap();
    let store = PoolStore::new(pool_dir.path());
    seed_pool(&store, &[alpha.clone(), beta.clone()]).unwrap();
    let accounts = load_pool_accounts(store).unwrap();

    let token = WrapperToken::generate().unwrap();
    let mut options = ProxyOptions::new(mock.base_url(), token.clone());
    options.token_url = mock.token_url();
    let proxy = RotationProxy::start(options, accounts).await.unwrap();

    let codex_home = tempfile::tempdir().unwrap();
    let config = codex_home.path().join("config.toml");
    let original = "# my settings\nmodel = \"gpt-5\"   # keep this comment\n\n[history]\npersistence = \"none\"\n";
    std::fs::write(&config, original).unwrap();
    let (route, stale) = CodexRoute::apply(codex_home.path(), &proxy.base_url()).unwrap();
    assert!(stale.is_none());
    let rewritten = std::fs::read_to_string(&config).unwrap();
    // Placement checked by parsing (the CLI silently ignores a misplaced key).
    assert_eq!(
        config_rewrite::read_string(
            &rewritten,
            &config_rewrite::Target::TopLevel,
            "model_provider"
        )
        .unwrap()
        .as_deref(),
        Some(PROVIDER_ID)
    );
    assert!(rewritten.contains(TOKEN_ENV), "{rewritten}");

    run_codex_exec(
        &codex,
        codex_home.path(),
        token.secret().expose(),
        "Say hello through the proxy",
    )
    .await;

    // The rotation is visible in /status (over HTTP, with the wrapper token) and at the mock.
    let status_body = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{}/status", proxy.addr()))
        .bearer_auth(token.secret().expose())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status_body).unwrap();
    let accounts = status["accounts"].as_array().unwrap();
    assert_eq!(
        accounts[0]["email"],
        auth_core::redact::mask_email("alice.alpha@example.com"),
        "{status:#}"
    );
    assert!(
        !status_body.windows(5).any(|w| w == b"alice"),
        "no full email in /status"
    );
    assert!(
        accounts[0]["outcomes"]["rate_limited"].as_u64().unwrap() >= 1,
        "{status:#}"
    );
    assert!(
        accounts[1]["outcomes"]["success"].as_u64().unwrap() >= 1,
        "{status:#}"
    );
    assert!(
        status["policy"]["counters"]["rotations"].as_u64().unwrap() >= 1,
        "{status:#}"
    );
    let c = &status["counters"];
    assert_eq!(c["in_flight"], 0);
    assert!(c["ok"].as_u64().unwrap() >= 1);
    assert!(c["retries"].as_u64().unwrap() >= 1);
    // Every request codex made went to `{upstream}/responses` (codex 0.169 needs no other
    // endpoint of this provider); each one the proxy counted reached the upstream.
    let recorded = mock.recorded();
    assert!(
        recorded
            .iter()
            .all(|r| r.method == "POST" && r.path == "/responses"),
        "{recorded:?}"
    );
    assert_eq!(
        c["attempts"].as_u64().unwrap(),
        recorded.len() as u64,
        "{status:#}"
    );
    let seen = mock.stats();
    assert!(seen.accounts["ws-alpha"].rate_limited >= 1);
    assert!(seen.accounts["ws-beta"].ok >= 1);
    // Codex's own wrapper token never reached the upstream; account tokens did.
    assert!(
        mock.recorded()
            .iter()
            .all(|r| !r.header_names.iter().any(|h| h == "x-api-key"))
    );

    proxy.shutdown().await;
    // The pool file shows the rotation too: the rate-limited account carries a cooldown for
    // the model family codex asked for; the account that answered was used.
    let pool = PoolStore::new(pool_dir.path()).load().unwrap().pool;
    let alpha_saved = pool
        .accounts
        .iter()
        .find(|a| a.account_id.as_deref() == Some("ws-alpha"))
        .unwrap();
    let beta_saved = pool
        .accounts
        .iter()
        .find(|a| a.account_id.as_deref() == Some("ws-beta"))
        .unwrap();
    assert_eq!(
        alpha_saved.cooldowns.len(),
        1,
        "{:?}",
        alpha_saved.cooldowns
    );
    let until = *alpha_saved.cooldowns.values().next().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        until > now && until <= now + 31,
        "cooldown ends with the 30 s Retry-After: {until} vs {now}"
    );
    assert!(beta_saved.cooldowns.is_empty());
    assert!(beta_saved.last_used_at.is_some());
    route.restore().unwrap();
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        original,
        "config.toml restored byte for byte"
    );
    let leftovers: Vec<_> = std::fs::read_dir(codex_home.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("revert") || n.contains("rotation"))
        .collect();
    assert!(leftovers.is_empty(), "revert record removed: {leftovers:?}");
    mock.shutdown().await;

    let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        logs.contains("upstream answered"),
        "logs were captured:\n{logs}"
    );
    for secret in [
        token.secret().expose(),
        alpha.tokens.access_token.expose(),
        beta.tokens.access_token.expose(),
        alpha.tokens.refresh_token.expose(),
        "alice.alpha@example.com",
        "bob.beta@example.com",
    ] {
        assert!(!logs.contains(secret), "a secret leaked into the logs");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn codex_exec_through_the_rotation_proxy_program_with_its_generated_token() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

    let Some(codex) = common::codex_exec_or_skip("codex_exec_through_the_rotation_proxy_program")
    else {
        return;
    };
    let Some(program) = common::example("rotation-proxy") else {
        common::skip(
            "codex_exec_through_the_rotation_proxy_program",
            "examples not built (run plain `cargo test`)",
        );
        return;
    };
    let mock = MockUpstream::start(MockConfig::default().reply(REPLY).account(
        "ws-alpha",
        Behavior::RateLimited {
            retry_after: Duration::from_secs(30),
            times: u32::MAX,
        },
    ))
    .await
    .unwrap();
    let alpha = mock.synthetic_account("ws-alpha", "alice.alpha@example.com", false);
    let beta = mock.synthetic_account("ws-beta", "bob.beta@example.com", false);
    let pool_dir = tempfile::tempdir().unwrap();
    seed_pool(
        &PoolStore::new(pool_dir.path()),
        &[alpha.clone(), beta.clone()],
    )
    .unwrap();
    let codex_home = tempfile::tempdir().unwrap();
    let config = codex_home.path().join("config.toml");
    let original = "# mine\nmodel = \"gpt-5\"\n\n[history]\npersistence = \"none\"\n";
    std::fs::write(&config, original).unwrap();

    // No ROTATION_PROXY_TOKEN: the program generates one and prints it once.
    let mut proxy = common::spawn_proxy(&program, pool_dir.path(), codex_home.path(), &mock, None);
    let mut stdout = BufReader::new(proxy.stdout.take().unwrap()).lines();
    let mut stderr = proxy.stderr.take().unwrap();
    let stderr_task = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    let mut seen = Vec::new();
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(30), stdout.next_line()).await
    {
        let done = line.contains("now routes codex");
        seen.push(line);
        if done || seen.len() > 50 {
            break;
        }
    }
    let prefix = format!("rotation-proxy: export {TOKEN_ENV}=");
    let token = seen
        .iter()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no generated token: {seen:?}"))
        .to_owned();
    let base_url = seen
        .iter()
        .find_map(|l| l.strip_prefix("rotation-proxy: listening on "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no listening line: {seen:?}"))
        .to_owned();
    let rewritten = std::fs::read_to_string(&config).unwrap();
    assert!(
        rewritten.contains(&base_url) && rewritten.contains(TOKEN_ENV),
        "{rewritten}"
    );

    run_codex_exec(
        &codex,
        codex_home.path(),
        &token,
        "Say hello through the proxy",
    )
    .await;

    let status_body = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(base_url.replace("/v1", "/status"))
        .header("x-api-key", &token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status_body).unwrap();
    assert!(
        status["accounts"][0]["outcomes"]["rate_limited"]
            .as_u64()
            .unwrap()
            >= 1
            && status["accounts"][1]["outcomes"]["success"]
                .as_u64()
                .unwrap()
                >= 1
            && status["policy"]["counters"]["rotations"].as_u64().unwrap() >= 1,
        "{status:#}"
    );

    let graceful = common::stop_or_skip(
        &proxy,
        common::Stop::Terminate,
        "codex_exec_through_the_rotation_proxy_program_with_its_generated_token",
    );
    if !graceful {
        proxy.kill().await.unwrap();
    }
    let exit = tokio::time::timeout(Duration::from_secs(20), proxy.wait())
        .await
        .expect("the proxy exits when asked to stop")
        .unwrap();
    if graceful {
        assert!(exit.success(), "{exit:?}");
        assert_eq!(
            std::fs::read_to_string(&config).unwrap(),
            original,
            "the program restored config.toml byte for byte"
        );
        let pool = PoolStore::new(pool_dir.path()).load().unwrap().pool;
        assert!(
            pool.accounts[0].cooldowns.len() == 1 && pool.accounts[1].last_used_at.is_some(),
            "the pool file shows the rotation: {:?}",
            pool.accounts
                .iter()
                .map(|a| (&a.cooldowns, a.last_used_at))
                .collect::<Vec<_>>()
        );
    }
    let logs = stderr_task.await.unwrap();
    assert!(logs.contains("upstream answered"), "{logs}");
    for secret in [
        token.as_str(),
        alpha.tokens.access_token.expose(),
        beta.tokens.access_token.expose(),
        alpha.tokens.refresh_token.expose(),
        "alice.alpha@example.com",
        "bob.beta@example.com",
    ] {
        assert!(!logs.contains(secret), "a secret leaked into the logs");
    }
    mock.shutdown().await;
}

/// `codex exec` through the proxy against accounts that report usage (in headers, then in
/// the stream's `codex.rate_limits` event only): the usage the CLI records in its session
/// file is the pool's (the mean of both accounts, the earliest reset), not that of the
/// account that served it.
///
/// Codex CLI 0.169 does not read `codex.rate_limits` events of an HTTP stream (seen: with
/// the event alone and no usage headers, its session records no windows); it takes usage
/// from the response headers. So in the event-only run the pool learned both accounts'
/// usage from events alone, and the CLI is shown it in the headers the proxy writes; the
/// rewritten event itself is checked in `tests/proxy_usage.rs`.
#[tokio::test(flavor = "current_thread")]
async fn codex_records_the_pools_usage_not_the_serving_accounts() {
    let Some(codex) =
        common::codex_exec_or_skip("codex_records_the_pools_usage_not_the_serving_accounts")
    else {
        return;
    };
    for channel in [UsageChannel::Headers, UsageChannel::Event] {
        codex_sees_the_pool(&codex, channel).await;
    }
}

async fn codex_sees_the_pool(codex: &std::path::Path, channel: UsageChannel) {
    const HOUR: Duration = Duration::from_secs(3600);
    let mock = MockUpstream::start(
        MockConfig::default()
            .reply(REPLY)
            .usage(
                "ws-hot",
                MockUsage::new(MockWindow::new(80.0, 0.0, 300, HOUR))
                    .secondary(MockWindow::new(30.0, 0.0, 10_080, 48 * HOUR))
                    .via(channel),
            )
            .usage(
                "ws-cool",
                MockUsage::new(MockWindow::new(20.0, 0.0, 300, 3 * HOUR))
                    .secondary(MockWindow::new(10.0, 0.0, 10_080, 24 * HOUR))
                    .via(channel),
            ),
    )
    .await
    .unwrap();
    let mut accounts = examples::proxy::Accounts::new();
    for id in ["ws-hot", "ws-cool"] {
        let login = mock.synthetic_account(id, &format!("{id}@example.com"), false);
        accounts
            .push(Some(&login.email), None, login.tokens)
            .unwrap();
    }
    let token = WrapperToken::generate().unwrap();
    let mut options = ProxyOptions::new(mock.base_url(), token.clone());
    options.token_url = mock.token_url();
    let proxy = RotationProxy::start(options, accounts).await.unwrap();
    // One answer from each account (least recently used first), so the pool knows both;
    // then past the proxy's usage cache (one sync interval).
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..2 {
        let r = client
            .post(format!("{}/responses", proxy.base_url()))
            .bearer_auth(token.secret().expose())
            .body(r#"{"model":"gpt-5","input":"warm up"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(400)).await;

    let codex_home = tempfile::tempdir().unwrap();
    CodexRoute::apply(codex_home.path(), &proxy.base_url()).unwrap();
    run_codex_exec(
        codex,
        codex_home.path(),
        token.secret().expose(),
        "Say hello",
    )
    .await;
    // The hotter account served codex (least recently used after the warm-up).
    assert!(mock.stats().accounts["ws-hot"].ok >= 2, "{channel:?}");
    let hot = mock.usage("ws-hot").unwrap();
    let cool = mock.usage("ws-cool").unwrap();

    // What the CLI recorded: the last `token_count` event with usage in its rollout file,
    // `{"type":"event_msg","payload":{"type":"token_count",…,"rate_limits":{"limit_id":
    // "codex","primary":{"used_percent","window_minutes","resets_at"},"secondary":{…}}}}`
    // (seen with Codex CLI 0.169).
    let rollouts: Vec<_> = walk(&codex_home.path().join("sessions"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("rollout-") && n.ends_with(".jsonl"))
        })
        .collect();
    assert_eq!(rollouts.len(), 1, "{channel:?}: {rollouts:?}");
    let recorded = std::fs::read_to_string(&rollouts[0]).unwrap();
    let limits = recorded
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "event_msg" && v["payload"]["type"] == "token_count")
        .map(|v| v["payload"]["rate_limits"].clone())
        .rfind(|r| r.is_object())
        .unwrap_or_else(|| panic!("{channel:?}: no token_count with rate_limits in\n{recorded}"));
    let pool = proxy.status().pool_usage;
    assert_eq!(pool.limits.len(), 1, "{pool:?}");
    let (primary, secondary) = (
        pool.limits[0].primary.clone().unwrap(),
        pool.limits[0].secondary.clone().unwrap(),
    );
    // The pool: the mean of 80 % and 20 % (30 % and 10 %), resetting with the earliest
    // window in use.
    assert_eq!((primary.used_percent, secondary.used_percent), (50.0, 20.0));
    let secs = |ms: Option<u64>| ms.map(|ms| ms / 1000);
    assert_eq!(
        secs(primary.resets_at_ms),
        Some(u64::try_from(hot.primary.reset_at.min(cool.primary.reset_at)).unwrap())
    );
    assert_eq!(limits["limit_id"], "codex", "{channel:?}: {limits:#}");
    for (shown, pool) in [
        (&limits["primary"], &primary),
        (&limits["secondary"], &secondary),
    ] {
        assert_eq!(
            shown["used_percent"], pool.used_percent,
            "{channel:?}: {limits:#}"
        );
        assert_eq!(
            shown["window_minutes"],
            pool.window_minutes.unwrap(),
            "{channel:?}: {limits:#}"
        );
        assert_eq!(
            shown["resets_at"],
            secs(pool.resets_at_ms).unwrap(),
            "{channel:?}: {limits:#}"
        );
    }
    proxy.shutdown().await;
    mock.shutdown().await;
}

/// Runs `codex exec PROMPT` (temporary working directory, `CODEX_HOME` = `codex_home`, the
/// wrapper token in its env key, no OpenAI variables, at most 90 s) and checks that it
/// completed with the mock upstream's reply.
async fn run_codex_exec(
    codex: &std::path::Path,
    codex_home: &std::path::Path,
    token: &str,
    prompt: &str,
) {
    let work = tempfile::tempdir().unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(codex)
            .args(["exec", "--skip-git-repo-check", prompt])
            .current_dir(work.path())
            .env("CODEX_HOME", codex_home)
            .env(TOKEN_ENV, token)
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("codex exec finished within 90 s")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains(REPLY),
        "codex exec failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
}

/// Every file under `dir` (bounded depth: sessions/YYYY/MM/DD/file).
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && depth < 4 {
                dirs.push((path, depth + 1));
            } else if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}
