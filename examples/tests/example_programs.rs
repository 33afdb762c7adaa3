//! The example programs as users run them: the demo, and the rotation-proxy binary with
//! stale-rewrite recovery and a graceful stop that restores `config.toml` (SIGTERM and
//! Ctrl-C's SIGINT on Unix; Ctrl-Break on Windows, the console event a test can send to one
//! process). `cargo test` builds examples before running tests; when they are missing (e.g.
//! `cargo test --test …`), the test says SKIP.

mod common;

use std::process::Stdio;
use std::time::Duration;

use auth_storage::PoolStore;
use examples::mock_upstream::{Behavior, MockConfig, MockUpstream, seed_pool};
use examples::proxy::{CodexRoute, TOKEN_ENV};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

#[tokio::test(flavor = "current_thread")]
async fn demo_runs_with_no_arguments_and_exits_zero() {
    let Some(demo) = common::example("demo") else {
        common::skip(
            "demo_runs_with_no_arguments",
            "examples not built (run plain `cargo test`)",
        );
        return;
    };
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(demo)
            .env_remove("RUST_LOG")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the demo finishes within 60 s")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "48/48 answered",
        "found and undid a stale rewrite",
        "pool_exhausted",
        "restored byte for byte",
        "starts rate limited for gpt-5-codex (saved by the first run)",
        "429s from the cooling account: 0",
        "temporary files removed",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("alice@example.com"),
        "full emails never printed"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn rotation_proxy_binary_recovers_a_stale_rewrite_and_restores_when_stopped() {
    let Some(binary) = common::example("rotation-proxy") else {
        common::skip(
            "rotation_proxy_binary",
            "examples not built (run plain `cargo test`)",
        );
        return;
    };
    let mock = MockUpstream::start(MockConfig::default().reply("via the binary"))
        .await
        .unwrap();
    let account = mock.synthetic_account("ws-bin", "binary.user@example.com", false);
    let pool_dir = tempfile::tempdir().unwrap();
    seed_pool(
        &PoolStore::new(pool_dir.path()),
        std::slice::from_ref(&account),
    )
    .unwrap();

    let codex_home = tempfile::tempdir().unwrap();
    let config = codex_home.path().join("config.toml");
    let original = "model = \"o3\" # mine\n";
    std::fs::write(&config, original).unwrap();
    // A run that crashed while the config pointed at it.
    let (_crashed, _) = CodexRoute::apply(codex_home.path(), "http://127.0.0.1:9/v1").unwrap();
    assert_ne!(std::fs::read_to_string(&config).unwrap(), original);

    let token = "test-wrapper-token-0123456789";
    let mut child = common::spawn_proxy(
        &binary,
        pool_dir.path(),
        codex_home.path(),
        &mock,
        Some(token),
    );
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = child.stderr.take().unwrap();
    let stderr_task = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    let mut seen = Vec::new();
    let mut base_url = None;
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(30), stdout.next_line()).await
    {
        if let Some(rest) = line.strip_prefix("rotation-proxy: listening on ") {
            base_url = rest.split_whitespace().next().map(str::to_owned);
        }
        let routed = line.contains("now routes codex");
        seen.push(line);
        if routed {
            break;
        }
    }
    let base_url = base_url.unwrap_or_else(|| panic!("no listening line in {seen:?}"));
    assert!(
        seen.iter().any(|l| l.contains("restored a stale rewrite")),
        "stale rewrite not reported: {seen:?}"
    );
    assert!(
        std::fs::read_to_string(&config)
            .unwrap()
            .contains(&base_url)
    );
    assert!(
        !seen.iter().any(|l| l.contains(token)),
        "a token from the environment is never printed"
    );

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let answer = client
        .post(format!("{base_url}/responses"))
        .bearer_auth(token)
        .body(r#"{"model":"gpt-5","input":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer.text().await.unwrap().contains("via the binary"));

    let graceful = common::stop_or_skip(
        &child,
        common::Stop::Terminate,
        "rotation_proxy_binary_recovers_a_stale_rewrite_and_restores_when_stopped",
    );
    if !graceful {
        child.kill().await.unwrap();
    }
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the proxy exits when asked to stop")
        .unwrap();
    while let Ok(Some(line)) = stdout.next_line().await {
        seen.push(line);
    }
    if graceful {
        assert!(exit.success(), "exit {exit:?}; stdout {seen:?}");
        assert_eq!(
            std::fs::read_to_string(&config).unwrap(),
            original,
            "config restored when asked to stop"
        );
        assert!(
            seen.iter().any(|l| l.contains("1 requests (1 ok")),
            "{seen:?}"
        );
    }
    let logs = stderr_task.await.unwrap();
    assert!(logs.contains("upstream answered"), "{logs}");
    for secret in [
        token,
        account.tokens.access_token.expose(),
        account.tokens.refresh_token.expose(),
        "binary.user@example.com",
    ] {
        assert!(!logs.contains(secret), "a secret leaked into the logs");
    }
    mock.shutdown().await;
}

/// Reads the proxy's stdout until `until` appears (bounded), returning the lines seen.
async fn lines_until(
    stdout: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    until: &str,
) -> Vec<String> {
    let mut seen = Vec::new();
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(30), stdout.next_line()).await
    {
        let done = line.contains(until);
        seen.push(line);
        if done || seen.len() > 100 {
            break;
        }
    }
    seen
}

/// Stopped by Ctrl-C (SIGINT) on Unix, by Ctrl-Break on Windows (see [`common::stop`]).
#[tokio::test(flavor = "current_thread")]
async fn rotation_proxy_binary_prints_a_generated_token_honours_saved_cooldowns_and_restores_on_ctrl_c()
 {
    let Some(binary) = common::example("rotation-proxy") else {
        common::skip(
            "rotation_proxy_binary_ctrl_c",
            "examples not built (run plain `cargo test`)",
        );
        return;
    };
    let mock = MockUpstream::start(MockConfig::default().account(
        "ws-hot",
        Behavior::RateLimited {
            retry_after: Duration::from_secs(30),
            times: u32::MAX,
        },
    ))
    .await
    .unwrap();
    let hot = mock.synthetic_account("ws-hot", "hot.user@example.com", false);
    let cool = mock.synthetic_account("ws-cool", "cool.user@example.com", false);
    let pool_dir = tempfile::tempdir().unwrap();
    let store = PoolStore::new(pool_dir.path());
    seed_pool(&store, &[hot.clone(), cool.clone()]).unwrap();
    // What an earlier run saved on exit: ws-hot is rate limited for gpt-5 for 2 more minutes.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    store
        .update(|pool| {
            pool.accounts[0].cooldowns.insert("gpt-5".into(), now + 120);
        })
        .unwrap();
    let codex_home = tempfile::tempdir().unwrap();
    let config = codex_home.path().join("config.toml");
    let original = "model = \"gpt-5\"\n";
    std::fs::write(&config, original).unwrap();

    let mut child = common::spawn_proxy(&binary, pool_dir.path(), codex_home.path(), &mock, None);
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = child.stderr.take().unwrap();
    let stderr_task = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    let mut seen = lines_until(&mut stdout, "now routes codex").await;
    let base_url = seen
        .iter()
        .find_map(|l| l.strip_prefix("rotation-proxy: listening on "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no listening line in {seen:?}"))
        .to_owned();
    let prefix = format!("rotation-proxy: export {TOKEN_ENV}=");
    let token = seen
        .iter()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no generated token printed: {seen:?}"))
        .to_owned();
    assert!(token.len() >= 40, "a long random token");

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let answer = client
        .post(format!("{base_url}/responses"))
        .header("x-api-key", &token)
        .body(r#"{"model":"gpt-5","input":"after a restart"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(
        answer
            .text()
            .await
            .unwrap()
            .contains("echo: after a restart")
    );
    let stats = mock.stats();
    assert_eq!(
        stats.accounts.get("ws-hot").map_or(0, |a| a.rate_limited),
        0,
        "the saved cooldown kept the request away from ws-hot: {stats:?}"
    );
    assert_eq!(stats.accounts["ws-cool"].ok, 1);
    let status_body = client
        .get(base_url.replace("/v1", "/status"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status_body).unwrap();
    assert_eq!(
        status["accounts"][0]["rate_limited_families"],
        serde_json::json!(["gpt-5"]),
        "{status:#}"
    );

    let graceful = common::stop_or_skip(
        &child,
        common::Stop::Interrupt,
        "rotation_proxy_binary_prints_a_generated_token_honours_saved_cooldowns_and_restores_on_ctrl_c",
    );
    if !graceful {
        child.kill().await.unwrap();
    }
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the proxy exits after Ctrl-C")
        .unwrap();
    while let Ok(Some(line)) = stdout.next_line().await {
        seen.push(line);
    }
    if graceful {
        assert!(exit.success(), "exit {exit:?}; stdout {seen:?}");
        assert_eq!(
            std::fs::read_to_string(&config).unwrap(),
            original,
            "config restored on Ctrl-C"
        );
    }
    let logs = stderr_task.await.unwrap();
    assert!(
        logs.contains("running cooldowns restored from the pool"),
        "{logs}"
    );
    for secret in [
        token.as_str(),
        hot.tokens.access_token.expose(),
        cool.tokens.access_token.expose(),
        "hot.user@example.com",
        "cool.user@example.com",
    ] {
        assert!(!logs.contains(secret), "a secret leaked into the logs");
    }
    // Still cooling down in the pool file for the next run.
    let saved = store.load().unwrap().pool;
    assert_eq!(saved.accounts[0].cooldowns.get("gpt-5"), Some(&(now + 120)));
    mock.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn rotation_proxy_binary_refuses_non_loopback_and_can_leave_the_config_alone() {
    let Some(binary) = common::example("rotation-proxy") else {
        common::skip(
            "rotation_proxy_binary_options",
            "examples not built (run plain `cargo test`)",
        );
        return;
    };
    let refused = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(&binary)
            .args(["--listen", "0.0.0.0:0", "--no-config-rewrite"])
            .env(TOKEN_ENV, "test-wrapper-token-0123456789")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("exits at once")
    .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("--allow-remote"),
        "{stderr}"
    );
    // A zero body budget would refuse every body: refused at start, naming the flag.
    let zero_budget = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(&binary)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--no-config-rewrite",
                "--body-budget",
                "0",
            ])
            .env(TOKEN_ENV, "test-wrapper-token-0123456789")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("exits at once")
    .unwrap();
    assert_eq!(zero_budget.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&zero_budget.stderr);
    assert!(
        stderr.contains("--body-budget") && stderr.contains("at least 1"),
        "{stderr}"
    );

    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let account = mock.synthetic_account("ws-x", "x.user@example.com", false);
    let pool_dir = tempfile::tempdir().unwrap();
    seed_pool(&PoolStore::new(pool_dir.path()), &[account]).unwrap();
    let codex_home = tempfile::tempdir().unwrap();
    let config = codex_home.path().join("config.toml");
    std::fs::write(&config, "model = \"o3\"\n").unwrap();
    let mut cmd = tokio::process::Command::new(&binary);
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--no-config-rewrite",
        "--pool-dir",
    ])
    .arg(pool_dir.path())
    .arg("--codex-home")
    .arg(codex_home.path())
    .args(["--upstream", &mock.base_url()])
    .env(TOKEN_ENV, "test-wrapper-token-0123456789")
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .kill_on_drop(true);
    common::own_process_group(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let seen = lines_until(&mut stdout, "listening on").await;
    assert!(seen.iter().any(|l| l.contains("listening on")), "{seen:?}");
    let graceful = common::stop_or_skip(
        &child,
        common::Stop::Terminate,
        "rotation_proxy_binary_refuses_non_loopback_and_can_leave_the_config_alone",
    );
    if !graceful {
        child.kill().await.unwrap();
    }
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the proxy exits when asked to stop")
        .unwrap();
    assert!(exit.success() || !graceful, "{exit:?}");
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "model = \"o3\"\n"
    );
    let names: Vec<_> = std::fs::read_dir(codex_home.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["config.toml"], "nothing written beside config.toml");
    mock.shutdown().await;
}

/// Starts the built `rotation-proxy` with `extra` arguments in front of `mock`, leaves
/// `config.toml` alone, drains its stderr, and returns it with its base URL.
async fn start_binary(
    binary: &std::path::Path,
    mock: &MockUpstream,
    token: &str,
    extra: &[&str],
) -> (tokio::process::Child, String, Vec<tempfile::TempDir>) {
    let account = mock.synthetic_account("ws-bin", "binary.user@example.com", false);
    let pool_dir = tempfile::tempdir().unwrap();
    seed_pool(&PoolStore::new(pool_dir.path()), &[account]).unwrap();
    let codex_home = tempfile::tempdir().unwrap();
    let mut args = vec!["--no-config-rewrite"];
    args.extend_from_slice(extra);
    let mut child = common::spawn_proxy_with(
        binary,
        pool_dir.path(),
        codex_home.path(),
        mock,
        Some(token),
        &args,
    );
    let mut stderr = child.stderr.take().unwrap();
    tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = stderr.read_to_end(&mut sink).await;
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let seen = lines_until(&mut stdout, "listening on").await;
    let base_url = seen
        .iter()
        .find_map(|l| l.strip_prefix("rotation-proxy: listening on "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no listening line in {seen:?}"))
        .to_owned();
    tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
    (child, base_url, vec![pool_dir, codex_home])
}

fn addr_of(base_url: &str) -> std::net::SocketAddr {
    base_url
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn rotation_proxy_binary_never_forwards_outside_the_upstream_base_path() {
    let Some(binary) = common::example_or_skip(
        "rotation-proxy",
        "rotation_proxy_binary_never_forwards_outside_the_upstream_base_path",
    ) else {
        return;
    };
    let mock = MockUpstream::start(MockConfig::default().base_path("/backend-api/codex"))
        .await
        .unwrap();
    let token = "test-wrapper-token-0123456789";
    let (mut child, base_url, _dirs) = start_binary(&binary, &mock, token, &[]).await;
    let addr = addr_of(&base_url);
    for line in [
        "POST /v1/../../oauth/token HTTP/1.1",
        "POST /v1/%2e%2E/%2E%2e/oauth/token HTTP/1.1",
        "POST /v1/..%2f..%2foauth%2ftoken HTTP/1.1",
        "POST /v1/%252e%252e/x HTTP/1.1",
        "POST http://evil.example/v1/responses HTTP/1.1",
    ] {
        let (code, text) = common::raw_exchange(
            addr,
            &format!("{line}\r\nhost: evil.example\r\nauthorization: Bearer {token}"),
        )
        .await;
        assert_eq!(code, 400, "{line} → {text}");
        assert!(text.contains("bad_request_target"), "{text}");
    }
    assert!(mock.seen().is_empty(), "{:?}", mock.seen());
    let (code, text) = common::raw_exchange_with_body(
        addr,
        &format!(
            "POST /v1/a/%2e%2e/responses HTTP/1.1\r\nhost: evil.example\r\n\
             authorization: Bearer {token}\r\nx-forwarded-host: evil.example"
        ),
        br#"{"model":"gpt-5","input":"inside","stream":false}"#,
    )
    .await;
    assert_eq!(code, 200, "{text}");
    let seen = mock.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].target, "/backend-api/codex/responses");
    assert_eq!(
        seen[0].host.as_deref(),
        Some(mock.addr().to_string().as_str())
    );
    if common::stop_or_skip(
        &child,
        common::Stop::Terminate,
        "rotation_proxy_binary_never_forwards_outside_the_upstream_base_path",
    ) {
        let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .expect("the proxy exits when asked to stop")
            .unwrap();
        assert!(exit.success());
    }
    mock.shutdown().await;
}

/// The peak resident set (`VmHWM`) of a running process, in bytes.
#[cfg(target_os = "linux")]
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .unwrap_or_else(|| panic!("no VmHWM in {status}"))
}

#[cfg(not(target_os = "linux"))]
#[test]
fn rotation_proxy_binary_keeps_sixteen_60_mb_bodies_within_its_body_budget() {
    common::skip(
        "rotation_proxy_binary_keeps_sixteen_60_mb_bodies_within_its_body_budget",
        "the peak memory is read from Linux's /proc",
    );
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_proxy_binary_keeps_sixteen_60_mb_bodies_within_its_body_budget() {
    const CLIENTS: usize = 16;
    const BODY: usize = 60_000_000;
    const BUDGET: usize = 128 * 1024 * 1024;
    const MARGIN: u64 = 64 * 1024 * 1024;
    let Some(binary) = common::example_or_skip(
        "rotation-proxy",
        "rotation_proxy_binary_keeps_sixteen_60_mb_bodies_within_its_body_budget",
    ) else {
        return;
    };
    // The upstream holds every request it gets until told to answer, so the bodies the
    // proxy accepted stay in its memory while the others arrive.
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let mock = MockUpstream::start(MockConfig::default().stall_before_answer(gate.clone()))
        .await
        .unwrap();
    let token = "test-wrapper-token-0123456789";
    let budget = BUDGET.to_string();
    let (mut child, base_url, _dirs) =
        start_binary(&binary, &mock, token, &["--body-budget", &budget]).await;
    let pid = child.id().unwrap();
    let addr = addr_of(&base_url);
    let before = peak_rss(pid);

    // Bodies whose one huge `model` string or key a naive JSON peek would copy whole
    // (memory outside the budget); plain padded bodies are the easy case.
    let shapes = [common::Shape::LongModel, common::Shape::LongKey];
    let uploads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let shape = shapes[i % shapes.len()];
            tokio::spawn(async move { common::upload(addr, token, BODY, false, shape).await })
        })
        .collect();
    // Bytes are reserved as they arrive, so which uploads fit depends on timing: wait
    // (bounded) until every upload is either answered (503 when the budget ran out under
    // it) or held by the upstream, which holds what it got until the gate opens.
    let fits = BUDGET / BODY;
    let mut held = 0;
    for _ in 0..1200 {
        held = mock.seen().len();
        let answered = uploads.iter().filter(|u| u.is_finished()).count();
        if held + answered >= CLIENTS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        held <= fits,
        "{held} bodies of {BODY} bytes reached the upstream at once within a {BUDGET}-byte budget"
    );
    let peak_while_held = peak_rss(pid);
    // A `Notify` keeps at most one permit, and a held request may still be reading its body
    // at the mock: keep opening the gate until every upload is answered (bounded).
    let open_gate = |gate: std::sync::Arc<tokio::sync::Notify>| {
        tokio::spawn(async move {
            for _ in 0..6000 {
                gate.notify_one();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let releaser = open_gate(gate.clone());
    let mut codes = Vec::new();
    for u in uploads {
        let (code, _) = tokio::time::timeout(Duration::from_secs(120), u)
            .await
            .expect("every upload is answered")
            .unwrap();
        codes.push(code);
    }
    releaser.abort();
    let peak = peak_rss(pid);
    eprintln!(
        "rotation-proxy peak RSS: {} MiB before the load, {} MiB while {held} bodies were held, {} MiB in all",
        before >> 20,
        peak_while_held >> 20,
        peak >> 20
    );
    let ok = codes.iter().filter(|c| **c == 200).count();
    let busy = codes.iter().filter(|c| **c == 503).count();
    assert_eq!(
        ok + busy,
        CLIENTS,
        "every upload is answered 200 or 503: {codes:?}"
    );
    assert!(busy >= CLIENTS - fits, "{codes:?}");
    assert!(
        peak <= BUDGET as u64 + MARGIN,
        "peak RSS {} MiB over the {} MiB budget + {} MiB (before the load: {} MiB, while held: {} MiB)",
        peak >> 20,
        BUDGET >> 20,
        MARGIN >> 20,
        before >> 20,
        peak_while_held >> 20,
    );
    let bodies: Vec<u64> = mock.recorded().iter().map(|r| r.body_len).collect();
    assert_eq!(
        bodies,
        vec![BODY as u64; ok],
        "accepted bodies arrived whole"
    );

    // The same without lengths (chunked): bytes are reserved as the bodies grow, so which
    // and how many fit depends on timing; every upload is answered and the peak holds.
    let releaser = open_gate(gate.clone());
    let uploads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let shape = shapes[i % shapes.len()];
            tokio::spawn(async move { common::upload(addr, token, BODY, true, shape).await })
        })
        .collect();
    let mut codes = Vec::new();
    for u in uploads {
        let (code, _) = tokio::time::timeout(Duration::from_secs(120), u)
            .await
            .expect("every chunked upload is answered")
            .unwrap();
        codes.push(code);
    }
    releaser.abort();
    let peak = peak_rss(pid);
    eprintln!(
        "rotation-proxy peak RSS after the chunked uploads: {} MiB",
        peak >> 20
    );
    assert!(
        codes.iter().all(|c| *c == 200 || *c == 503) && codes.contains(&503),
        "{codes:?}"
    );
    assert!(
        peak <= BUDGET as u64 + MARGIN,
        "peak RSS {} MiB over the {} MiB budget + {} MiB after chunked uploads",
        peak >> 20,
        BUDGET >> 20,
        MARGIN >> 20,
    );
    assert!(common::stop_or_skip(
        &child,
        common::Stop::Terminate,
        "rotation_proxy_binary_keeps_sixteen_60_mb_bodies_within_its_body_budget"
    ));
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the proxy exits when asked to stop")
        .unwrap();
    assert!(exit.success());
    mock.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn rotation_proxy_binary_refuses_an_unusable_upstream_url_without_echoing_it() {
    let Some(binary) = common::example_or_skip(
        "rotation-proxy",
        "rotation_proxy_binary_refuses_an_unusable_upstream_url_without_echoing_it",
    ) else {
        return;
    };
    let pool_dir = tempfile::tempdir().unwrap();
    for (upstream, expected) in [
        (
            "https://user:pa55word-secret@chatgpt.example/backend-api/codex",
            "must not carry a user name or password",
        ),
        (
            "ftp://chatgpt.example/pa55word-secret",
            "must use http or https",
        ),
        (
            "https://chatgpt.example/x?key=pa55word-secret",
            "must not have a query or fragment",
        ),
        ("pa55word-secret", "does not parse"),
    ] {
        let mut cmd = std::process::Command::new(&binary);
        cmd.args([
            "--listen",
            "127.0.0.1:0",
            "--no-config-rewrite",
            "--pool-dir",
        ])
        .arg(pool_dir.path())
        .args(["--upstream", upstream])
        .env(TOKEN_ENV, "test-wrapper-token-0123456789");
        let run = common::run_bounded(cmd, Duration::from_secs(20));
        assert_eq!(run.code, Some(1), "{upstream}: {}", run.stderr);
        assert!(run.stderr.contains(expected), "{upstream}: {}", run.stderr);
        assert!(
            !run.stderr.contains("pa55word") && !run.stdout.contains("pa55word"),
            "the URL was echoed: {}",
            run.stderr
        );
    }
}

/// `--bucket-capacity N --bucket-refill-ms MS` set the per-account pacing of the program:
/// with a bucket of 2 that refills once a minute, one account serves 2 requests and the
/// third is a clear 429; `--bucket-capacity 0` turns pacing off (12 in a row served).
#[tokio::test(flavor = "current_thread")]
async fn rotation_proxy_binary_takes_its_pacing_from_the_bucket_flags() {
    let Some(binary) = common::example_or_skip(
        "rotation-proxy",
        "rotation_proxy_binary_takes_its_pacing_from_the_bucket_flags",
    ) else {
        return;
    };
    let token = "test-wrapper-token-0123456789";
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let send = |base: String| {
        let client = client.clone();
        async move {
            client
                .post(format!("{base}/responses"))
                .bearer_auth(token)
                .body(r#"{"model":"gpt-5","input":"hi"}"#)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for (flags, expected) in [
        (
            &["--bucket-capacity", "2", "--bucket-refill-ms", "60000"][..],
            vec![200, 200, 429],
        ),
        (&["--bucket-capacity", "0"][..], vec![200; 12]),
    ] {
        let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
        let (mut child, base_url, _dirs) = start_binary(&binary, &mock, token, flags).await;
        let mut got = Vec::new();
        for _ in 0..expected.len() {
            got.push(send(base_url.clone()).await);
        }
        assert_eq!(got, expected, "{flags:?}");
        let _ = child.kill().await;
        mock.shutdown().await;
    }
    // A bucket that never refills is refused at start, naming the flag.
    let refused = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(&binary)
            .args(["--no-config-rewrite", "--bucket-refill-ms", "0"])
            .env(TOKEN_ENV, token)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("exits at once")
    .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--bucket-refill-ms"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
