//! Zero-setup demo of the whole workspace: `cargo run --example demo`.
//!
//! Everything happens in a temporary directory and on loopback: no network, no real
//! accounts, nothing outside the temp dir is touched (the port preflight only looks).
//!
//! 1. `oauth-preflight` inspects the Codex OAuth callback port (read-only).
//! 2. `auth-storage` creates a pool of synthetic ChatGPT logins (real-shaped unsigned JWTs
//!    from `auth-core`).
//! 3. An embedded mock upstream speaks the Responses API and misbehaves per account: 429 with
//!    `Retry-After`, a burst of 5xx, 401 until refreshed; one account starts with an expired
//!    access token.
//! 4. `config-rewrite` points a temporary `CODEX_HOME/config.toml` at the proxy (after undoing
//!    a stale rewrite from a simulated crash).
//! 5. The rotation proxy (`rotation-policy` decisions, `auth-core` single-flight refresh)
//!    serves a burst of concurrent streaming clients; then a one-account proxy shows the
//!    exact `retry_after_ms` of an exhausted pool.
//! 6. The config is restored byte for byte; refreshed tokens and running cooldowns are in
//!    the pool file.
//! 7. A restarted proxy over that pool honours the saved cooldown; everything is cleaned up.
//!
//! Set `RUST_LOG=info` to see the proxy's log lines (tokens and emails never appear).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use auth_storage::PoolStore;
use examples::mock_upstream::{Behavior, MockConfig, MockUpstream, SyntheticAccount, seed_pool};
use examples::proxy::{
    Accounts, CodexRoute, ProxyOptions, RotationProxy, WrapperToken, load_pool_accounts,
};
use oauth_preflight::CODEX_CALLBACK_PORT;
use tokio::sync::Semaphore;

const CLIENTS: usize = 48;
const CONCURRENCY: usize = 12;
const MODEL: &str = "gpt-5-codex";

type DemoResult<T> = Result<T, String>;

fn fail<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let started = Instant::now();
    match run().await {
        Ok(()) => {
            println!(
                "\nDemo finished in {:.1} s; temporary files removed.",
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("\ndemo failed: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> DemoResult<()> {
    println!("codex-auth-plumbing demo — loopback only, temporary files only\n");
    let temp = tempfile::tempdir().map_err(fail("create a temp dir"))?;

    // 1. Port preflight (read-only).
    println!("1. OAuth callback port preflight (oauth-preflight, read-only)");
    let callback = std::net::SocketAddr::from(([127, 0, 0, 1], CODEX_CALLBACK_PORT));
    let held_by_us =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(fail("bind a demo port"))?;
    let ours = held_by_us
        .local_addr()
        .map_err(fail("read the demo port"))?;
    let (callback_seen, ours_seen) = tokio::task::spawn_blocking(move || {
        (
            oauth_preflight::inspect(callback),
            oauth_preflight::inspect(ours),
        )
    })
    .await
    .map_err(fail("preflight task"))?;
    match callback_seen {
        Ok(found) if found.is_free() => println!("   {callback}: free — `codex login` can start"),
        Ok(found) => {
            let who: Vec<String> = found.processes().iter().map(|p| p.to_string()).collect();
            println!(
                "   {callback}: held by {} (left alone)",
                if who.is_empty() {
                    "an unknown owner".to_owned()
                } else {
                    who.join(", ")
                }
            );
        }
        Err(e) => println!("   {callback}: could not inspect ({e})"),
    }
    match ours_seen {
        Ok(found) => {
            let who: Vec<String> = found.processes().iter().map(|p| p.to_string()).collect();
            println!(
                "   {ours} (held by this demo): {} via {}",
                who.join(", "),
                found.method
            );
            if found.holders.is_empty() {
                return Err(format!(
                    "preflight did not find the demo's own listener on {ours}"
                ));
            }
        }
        Err(e) => return Err(format!("preflight of the demo's own port failed: {e}")),
    }
    drop(held_by_us);

    // 2. Mock upstream and the pool.
    let mock = MockUpstream::start(
        MockConfig::default()
            .deltas(4)
            .account(
                "ws-alpha",
                Behavior::RateLimited {
                    retry_after: Duration::from_secs(20),
                    times: u32::MAX,
                },
            )
            .account("ws-bravo", Behavior::ServerErrors { times: 3 })
            .account("ws-charlie", Behavior::NeedsRefresh),
    )
    .await
    .map_err(fail("start the mock upstream"))?;
    let synthetic: Vec<(SyntheticAccount, &str)> = vec![
        (
            mock.synthetic_account("ws-alpha", "alice@example.com", false),
            "429 + Retry-After: 20",
        ),
        (
            mock.synthetic_account("ws-bravo", "bruno@example.com", false),
            "3 × 500, then fine",
        ),
        (
            mock.synthetic_account("ws-charlie", "carol@example.com", false),
            "401 until refreshed",
        ),
        (
            mock.synthetic_account("ws-delta", "dmitri@example.com", true),
            "access token expired",
        ),
        (
            mock.synthetic_account("ws-echo", "eve@example.com", false),
            "healthy",
        ),
    ];
    let pool_dir = temp.path().join("pool");
    let store = PoolStore::new(&pool_dir);
    let seed: Vec<SyntheticAccount> = synthetic.iter().map(|(a, _)| a.clone()).collect();
    let seed_store = store.clone();
    tokio::task::spawn_blocking(move || seed_pool(&seed_store, &seed))
        .await
        .map_err(fail("seed task"))?
        .map_err(fail("write the pool"))?;
    println!(
        "\n2. Account pool (auth-storage): {} synthetic logins, mock upstream on {}",
        synthetic.len(),
        mock.addr()
    );
    for (i, (account, behavior)) in synthetic.iter().enumerate() {
        println!(
            "   acct-{}  {:<20} mock: {behavior}",
            i + 1,
            auth_core::redact::mask_email(&account.email)
        );
    }
    let load_store = store.clone();
    let accounts = tokio::task::spawn_blocking(move || load_pool_accounts(load_store))
        .await
        .map_err(fail("load task"))?
        .map_err(fail("load the pool"))?;

    // 3. Proxy + config rewrite.
    let token = WrapperToken::generate().map_err(fail("generate the wrapper token"))?;
    let mut options = ProxyOptions::new(mock.base_url(), token.clone());
    options.token_url = mock.token_url();
    let proxy = RotationProxy::start(options, accounts)
        .await
        .map_err(fail("start the proxy"))?;

    let codex_home = temp.path().join("codex-home");
    auth_core::regular_file::create_private_dir_all(&codex_home)
        .map_err(fail("create CODEX_HOME"))?;
    let config = codex_home.join("config.toml");
    let original = "# my Codex settings\nmodel = \"gpt-5-codex\"  # keep me\n\n[history]\npersistence = \"none\"\n";
    std::fs::write(&config, original).map_err(fail("write config.toml"))?;
    println!("\n3. Config rewrite (config-rewrite) of a temporary CODEX_HOME/config.toml");
    // Simulate a run that crashed while the file pointed at it…
    let (_crashed, _) = CodexRoute::apply(&codex_home, "http://127.0.0.1:9/v1")
        .map_err(fail("simulate a crash"))?;
    // (dropped without restore: the revert record stays beside config.toml)
    let (route, stale) =
        CodexRoute::apply(&codex_home, &proxy.base_url()).map_err(fail("rewrite config.toml"))?;
    if stale.is_some() {
        println!("   found and undid a stale rewrite left by a crashed run");
    } else {
        return Err("the stale rewrite was not detected".to_owned());
    }
    let text = config_rewrite::read_config(&config)
        .map_err(fail("read config.toml"))?
        .unwrap_or_default();
    let provider =
        config_rewrite::read_string(&text, &config_rewrite::Target::TopLevel, "model_provider")
            .map_err(fail("parse config.toml"))?;
    println!(
        "   model_provider = {:?}, base_url = {} (env_key ROTATION_PROXY_TOKEN)",
        provider.unwrap_or_default(),
        proxy.base_url()
    );

    // 4. Load.
    println!(
        "\n4. Rotation proxy under load: {CLIENTS} streaming requests, {CONCURRENCY} at a time"
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(fail("build the client"))?;
    let url = format!("{}/responses", proxy.base_url());
    let gate = Arc::new(Semaphore::new(CONCURRENCY));
    let load_started = Instant::now();
    let mut tasks = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let (client, url, gate, secret) = (
            client.clone(),
            url.clone(),
            gate.clone(),
            token.secret().clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            let body = serde_json::json!({"model": MODEL, "input": format!("request {i}"), "stream": true});
            let response = client
                .post(&url)
                .bearer_auth(secret.expose())
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .map_err(|e| format!("request {i}: {e}"))?;
            let status = response.status();
            let text = response.text().await.map_err(|e| format!("request {i}: {e}"))?;
            let ok = status.is_success() && text.contains(&format!("\"echo: request {i}\"")) && text.contains("response.completed");
            Ok::<bool, String>(ok)
        }));
    }
    let mut answered = 0;
    for task in tasks {
        if task.await.map_err(fail("client task"))?? {
            answered += 1;
        }
    }
    let load_time = load_started.elapsed();
    let status = proxy.status();
    let upstream_seen = mock.stats();
    let c = status.counters;
    println!(
        "   {answered}/{CLIENTS} answered with their own stream in {:.0} ms",
        load_time.as_secs_f64() * 1000.0
    );
    println!(
        "   proxy: {} requests, {} ok, {} upstream attempts ({} retries), {} rotations, {} token refreshes ({} re-sends after a 401), {} in flight",
        c.requests,
        c.ok,
        c.attempts,
        c.retries,
        status.policy.counters.rotations,
        c.refreshes,
        c.resends,
        c.in_flight
    );
    println!(
        "   accounts after the load (outcomes the policy was told; [n] = 401s the upstream sent —\n   requests racing with one stale token count as one rejected token):"
    );
    for (a, (login, _)) in status.accounts.iter().zip(&synthetic) {
        let rejected = upstream_seen
            .accounts
            .get(&login.account_id)
            .map_or(0, |m| m.unauthorized);
        let o = a.outcomes;
        let mut state = Vec::new();
        if !a.rate_limited_families.is_empty() {
            state.push(format!(
                "rate limited for {}",
                a.rate_limited_families.join(", ")
            ));
        }
        if a.cooldown_until_ms.is_some() {
            state.push("cooling down".to_owned());
        }
        if a.refreshes > 0 {
            state.push(format!("refreshed ×{}", a.refreshes));
        }
        if state.is_empty() {
            state.push("ready".to_owned());
        }
        println!(
            "     {:<7} {:<17} ok {:>2}  429 {:>1}  5xx {:>1}  401 {:>1} [{}]  health {:>3}  {}",
            a.id,
            a.email,
            o.success,
            o.rate_limited,
            o.server_error,
            o.unauthorized,
            rejected,
            a.health,
            state.join(", ")
        );
    }
    if answered != CLIENTS || c.ok != CLIENTS as u64 || c.in_flight != 0 {
        return Err(format!(
            "only {answered} of {CLIENTS} requests were answered correctly"
        ));
    }
    // The token endpoint's count: the proxy's own counter can miss a refresh whose saved
    // result the pool follower adopted first (a race under load).
    if upstream_seen.refreshes < 2 || status.policy.counters.rotations == 0 {
        return Err("expected token refreshes and rotations during the load".to_owned());
    }

    // 5. Exhausted pool: a proxy whose only account is rate limited.
    println!("\n5. Exhausted pool (one-account proxy, account rate limited)");
    let mut lone = Accounts::new();
    lone.push(
        Some("alice@example.com"),
        None,
        synthetic[0].0.tokens.clone(),
    )
    .map_err(fail("build a one-account pool"))?;
    let mut options = ProxyOptions::new(mock.base_url(), token.clone());
    options.token_url = mock.token_url();
    let small = RotationProxy::start(options, lone)
        .await
        .map_err(fail("start the one-account proxy"))?;
    for attempt in 1..=2 {
        let response = client
            .post(format!("{}/responses", small.base_url()))
            .bearer_auth(token.secret().expose())
            .body(serde_json::json!({"model": MODEL, "input": "hi"}).to_string())
            .send()
            .await
            .map_err(fail("exhausted-pool request"))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let body: serde_json::Value =
            serde_json::from_slice(&response.bytes().await.map_err(fail("read the answer"))?)
                .unwrap_or_default();
        println!(
            "   request {attempt}: {status}, Retry-After: {retry_after}, error.type = {}, retry_after_ms = {}",
            body["error"]["type"], body["error"]["retry_after_ms"]
        );
        if status != reqwest::StatusCode::TOO_MANY_REQUESTS
            || body["error"]["retry_after_ms"].as_u64().is_none()
        {
            return Err("the exhausted pool did not answer 429 with retry_after_ms".to_owned());
        }
    }
    small.shutdown().await;

    // 6. Shutdown and restore.
    println!("\n6. Shutdown");
    proxy.shutdown().await;
    route.restore().map_err(fail("restore config.toml"))?;
    let back = config_rewrite::read_config(&config)
        .map_err(fail("read config.toml"))?
        .unwrap_or_default();
    if back != original {
        return Err("config.toml was not restored byte for byte".to_owned());
    }
    println!("   config.toml restored byte for byte; revert record removed");
    let saved = store.load().map_err(fail("reload the pool"))?;
    let rotated = saved
        .pool
        .accounts
        .iter()
        .filter(|a| {
            !synthetic
                .iter()
                .any(|(s, _)| s.tokens.refresh_token == a.tokens.refresh_token)
        })
        .count();
    let cooling: Vec<String> = saved
        .pool
        .accounts
        .iter()
        .filter(|a| !a.cooldowns.is_empty())
        .map(|a| {
            format!(
                "{} ({})",
                a.masked_email(),
                a.cooldowns.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    println!(
        "   pool file: {} accounts, {rotated} with refreshed tokens saved by the proxy",
        saved.pool.accounts.len()
    );
    println!(
        "   cooldowns saved for the next run: {}",
        if cooling.is_empty() {
            "none".to_owned()
        } else {
            cooling.join("; ")
        }
    );
    if cooling.is_empty() {
        return Err("the rate-limited account's cooldown was not saved to the pool".to_owned());
    }
    if rotated as u64 != c.refreshes {
        return Err(format!(
            "{} refreshes but {rotated} saved to the pool",
            c.refreshes
        ));
    }

    // 7. A restarted proxy honours the cooldowns the first run saved.
    println!("\n7. Restart over the saved pool");
    let limited_before = mock
        .stats()
        .accounts
        .get("ws-alpha")
        .map_or(0, |a| a.rate_limited);
    let reload_store = store.clone();
    let accounts = tokio::task::spawn_blocking(move || load_pool_accounts(reload_store))
        .await
        .map_err(fail("load task"))?
        .map_err(fail("reload the pool"))?;
    let mut options = ProxyOptions::new(mock.base_url(), token.clone());
    options.token_url = mock.token_url();
    let restarted = RotationProxy::start(options, accounts)
        .await
        .map_err(fail("restart the proxy"))?;
    let at_start = restarted.status();
    for a in at_start
        .accounts
        .iter()
        .filter(|a| !a.rate_limited_families.is_empty())
    {
        println!(
            "   {} {} starts rate limited for {} (saved by the first run)",
            a.id,
            a.email,
            a.rate_limited_families.join(", ")
        );
    }
    let response = client
        .post(format!("{}/responses", restarted.base_url()))
        .bearer_auth(token.secret().expose())
        .body(serde_json::json!({"model": MODEL, "input": "after restart"}).to_string())
        .send()
        .await
        .map_err(fail("request after the restart"))?;
    let ok = response.status().is_success();
    let _ = response.bytes().await;
    let after = restarted.status();
    restarted.shutdown().await;
    let limited_after = mock
        .stats()
        .accounts
        .get("ws-alpha")
        .map_or(0, |a| a.rate_limited);
    println!(
        "   request after the restart: {}, retries {}, 429s from the cooling account: {}",
        if ok { "answered" } else { "failed" },
        after.counters.retries,
        limited_after - limited_before
    );
    if !ok
        || limited_after != limited_before
        || at_start.accounts[0].rate_limited_families.is_empty()
    {
        return Err("the restarted proxy did not honour the saved cooldown".to_owned());
    }

    mock.shutdown().await;
    temp.close().map_err(fail("remove the temp dir"))?;
    Ok(())
}
