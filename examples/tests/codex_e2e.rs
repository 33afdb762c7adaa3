//! End to end with the real Codex CLI: `codex exec` → rotation proxy → loopback mock upstream,
//! with the first pool account rate limited — once with the proxy as a library (logs captured
//! in-process), once as the `rotation-proxy` program a user runs (it rewrites and restores
//! `config.toml` itself).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use auth_storage::PoolStore;
use examples::mock_upstream::{Behavior, MockConfig, MockUpstream, seed_pool};
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
    let Some(codex) = common::codex_bin() else {
        common::skip(
            "codex_exec_through_the_proxy",
            "no Codex CLI (set CODEX_BIN or run .ci/run)",
        );
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

    let work = tempfile::tempdir().unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(&codex)
            .args([
                "exec",
                "--skip-git-repo-check",
                "Say hello through the proxy",
            ])
            .current_dir(work.path())
            .env("CODEX_HOME", codex_home.path())
            .env(TOKEN_ENV, token.secret().expose())
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

#[cfg(unix)]
#[tokio::test(flavor = "current_thread")]
async fn codex_exec_through_the_rotation_proxy_program_with_its_generated_token() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

    let Some(codex) = common::codex_bin() else {
        common::skip(
            "codex_exec_through_the_rotation_proxy_program",
            "no Codex CLI (set CODEX_BIN or run .ci/run)",
        );
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

    let work = tempfile::tempdir().unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(&codex)
            .args([
                "exec",
                "--skip-git-repo-check",
                "Say hello through the proxy",
            ])
            .current_dir(work.path())
            .env("CODEX_HOME", codex_home.path())
            .env(TOKEN_ENV, &token)
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
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && out.contains(REPLY),
        "codex exec failed ({}):\n{out}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );

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

    let pid = proxy.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exit = tokio::time::timeout(Duration::from_secs(20), proxy.wait())
        .await
        .expect("the proxy exits after SIGTERM")
        .unwrap();
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
