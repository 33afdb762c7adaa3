//! The rotation proxy's two opt-in capabilities against loopback mocks: the idle usage
//! probe (who is queried, how often, what an answer does, what stays out of the logs) and
//! the overflow source (when it serves, when it does not, what `/status` says, where the
//! key goes), in-process and as the `rotation-proxy` program.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use auth_core::Secret;
use auth_storage::PoolStore;
use examples::mock_openai::MockOpenAi;
use examples::mock_upstream::{Behavior, MockConfig, MockUpstream, SyntheticAccount, seed_pool};
use examples::mock_usage::{MockUsageEndpoint, UsageAnswer};
use examples::proxy::{
    Accounts, OverflowSource, ProxyOptions, RotationProxy, StatusReport, UsageProbe, WrapperToken,
    load_pool_accounts,
};
use rotation_policy::usage::UsageReport;
use rotation_policy::{AccountId, PolicyConfig, Pool, Timestamp};

/// Log lines of the test's thread (current-thread runtimes: every task logs here).
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

impl Capture {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

const KEY: &str = "sk-overflow-test-key-0123456789abcdef";

struct Harness {
    upstream: MockUpstream,
    proxy: RotationProxy,
    token: WrapperToken,
    accounts: Vec<SyntheticAccount>,
    client: reqwest::Client,
}

/// A proxy over in-code accounts `ids` (ChatGPT account ids) of a mock upstream.
async fn harness(
    config: MockConfig,
    ids: &[&str],
    expired: &[&str],
    tune: impl FnOnce(&mut ProxyOptions),
) -> Harness {
    let upstream = MockUpstream::start(config).await.unwrap();
    let mut accounts = Accounts::new();
    let mut synthetic = Vec::new();
    for id in ids {
        let s = upstream.synthetic_account(
            id,
            &format!("owner.{id}@example.com"),
            expired.contains(id),
        );
        accounts
            .push(Some(&s.email), Some("pro".into()), s.tokens.clone())
            .unwrap();
        synthetic.push(s);
    }
    let token = WrapperToken::generate().unwrap();
    let mut options = ProxyOptions::new(upstream.base_url(), token.clone());
    options.token_url = upstream.token_url();
    tune(&mut options);
    let proxy = RotationProxy::start(options, accounts).await.unwrap();
    Harness {
        upstream,
        proxy,
        token,
        accounts: synthetic,
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
    }
}

impl Harness {
    async fn post(&self, input: &str) -> (u16, String) {
        let answer = self
            .client
            .post(format!("{}/responses", self.proxy.base_url()))
            .bearer_auth(self.token.secret().expose())
            .header("content-type", "application/json")
            .body(serde_json::json!({"model": "gpt-5", "input": input, "stream": true}).to_string())
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        (status, answer.text().await.unwrap())
    }

    /// Polls `/status` every 20 ms until `done` holds or 10 s pass; the last snapshot.
    async fn status_until(&self, done: impl Fn(&StatusReport) -> bool) -> StatusReport {
        for _ in 0..500 {
            let status = self.proxy.status();
            if done(&status) {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.proxy.status()
    }

    /// Every secret the proxy holds for the accounts, the wrapper token and `KEY`.
    fn secrets(&self) -> Vec<String> {
        self.accounts
            .iter()
            .flat_map(|a| {
                [
                    a.tokens.access_token.expose().to_owned(),
                    a.tokens.refresh_token.expose().to_owned(),
                    a.tokens.id_token.expose().to_owned(),
                    a.email.clone(),
                ]
            })
            .chain([self.token.secret().expose().to_owned(), KEY.to_owned()])
            .collect()
    }

    async fn stop(self) -> StatusReport {
        let status = self.proxy.status();
        self.proxy.shutdown().await;
        self.upstream.shutdown().await;
        status
    }
}

fn probe(usage: &MockUsageEndpoint, per_minute: u32) -> UsageProbe {
    let mut probe = UsageProbe::new(usage.url());
    probe.interval = Duration::from_millis(20);
    probe.stale_after = Duration::from_secs(3600);
    probe.per_minute = per_minute;
    probe.timeout = Duration::from_millis(500);
    probe
}

fn assert_invariant(s: &StatusReport) {
    let c = s.counters;
    assert_eq!(
        c.requests,
        c.in_flight
            + c.ok
            + c.upstream_errors
            + c.gave_up
            + c.no_account
            + c.bad_gateway
            + c.cancelled,
        "counters do not add up: {c:?}"
    );
}

fn assert_no_secret(text: &str, secrets: &[String], what: &str) {
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "a secret leaked into {what}"
        );
    }
}

/// Accounts whose usage is unknown are queried, once each with their own token; an account
/// whose usage another process saw recently (shared pool state) is not; nobody is queried
/// again while what is known is fresh.
#[tokio::test(flavor = "current_thread")]
async fn stale_accounts_are_queried_once_and_fresh_ones_not() {
    let upstream = MockUpstream::start(MockConfig::default()).await.unwrap();
    let usage = MockUsageEndpoint::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = PoolStore::new(dir.path());
    let logins: Vec<SyntheticAccount> = ["ws-a", "ws-b", "ws-fresh"]
        .iter()
        .map(|id| upstream.synthetic_account(id, &format!("{id}@example.com"), false))
        .collect();
    seed_pool(&store, &logins).unwrap();
    let pool_ids: Vec<(String, String)> = store
        .load()
        .unwrap()
        .pool
        .accounts
        .iter()
        .map(|a| (a.id.clone(), a.tokens.account_id.clone().unwrap()))
        .collect();
    let fresh_id = &pool_ids.iter().find(|(_, ws)| ws == "ws-fresh").unwrap().0;

    // Another process recorded ws-fresh's usage a moment ago, into the shared state.
    let mut other = Pool::new(PolicyConfig::default(), 7).unwrap();
    let fresh = AccountId::new(fresh_id.clone()).unwrap();
    other.add(fresh.clone()).unwrap();
    let body = br#"{"plan_type":"pro","rate_limit":{"allowed":true,"limit_reached":false,
        "primary_window":{"used_percent":20,"limit_window_seconds":18000,
        "reset_after_seconds":3600,"reset_at":4102444800}}}"#;
    let report = UsageReport::from_usage_json(body).expect("the parser reads the fixture");
    let now = Timestamp::from_system_time(std::time::SystemTime::now());
    other.record_usage(&fresh, &report, now).unwrap();
    store.save_policy_state(&other.export_state()).unwrap();

    let accounts = load_pool_accounts(store.clone()).unwrap();
    let token = WrapperToken::generate().unwrap();
    let mut options = ProxyOptions::new(upstream.base_url(), token);
    options.token_url = upstream.token_url();
    options.usage_probe = Some(probe(&usage, 60));
    let proxy = RotationProxy::start(options, accounts).await.unwrap();

    assert!(usage.wait_for_queries(2, Duration::from_secs(10)).await);
    // 25 more rounds of the probe: nothing new to ask.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let queries = usage.queries();
    let mut asked: Vec<&str> = queries
        .iter()
        .map(|q| q.account_id.as_deref().unwrap())
        .collect();
    asked.sort();
    assert_eq!(
        asked,
        ["ws-a", "ws-b"],
        "each stale account once, the fresh one never"
    );
    for q in &queries {
        assert_eq!(q.method, "GET");
        assert_eq!(q.path, "/backend-api/wham/usage");
        let login = logins
            .iter()
            .find(|l| Some(&l.account_id) == q.account_id.as_ref())
            .unwrap();
        assert_eq!(
            q.bearer.as_ref().map(Secret::expose),
            Some(login.tokens.access_token.expose()),
            "each account is asked with its own token"
        );
    }
    let status = proxy.status();
    assert_eq!(status.usage_probe.queries, 2);
    assert_eq!(status.usage_probe.recorded, 2, "{:?}", status.usage_probe);
    assert_eq!(status.usage_probe.in_flight, 0);
    // What the probe learned is the policy's: every account now has usage.
    for account in &status.policy.accounts {
        assert!(!account.usage.is_empty(), "{account:?}");
    }
    assert_eq!(upstream.stats().token_requests, 0, "no refresh for a probe");
    proxy.shutdown().await;
    usage.shutdown().await;
    upstream.shutdown().await;
}

/// However many accounts are due, no more than `per_minute` queries go out in a minute.
#[tokio::test(flavor = "current_thread")]
async fn the_probe_keeps_to_its_queries_per_minute() {
    let usage = MockUsageEndpoint::start().await.unwrap();
    let ids = ["w1", "w2", "w3", "w4", "w5", "w6", "w7", "w8"];
    let h = harness(MockConfig::default(), &ids, &[], |o| {
        o.usage_probe = Some(probe(&usage, 3));
    })
    .await;
    assert!(usage.wait_for_queries(3, Duration::from_secs(10)).await);
    // 75 rounds of the probe with 5 accounts still due: the budget holds.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let queries = usage.queries();
    assert_eq!(queries.len(), 3, "{queries:?}");
    let mut asked: Vec<&str> = queries
        .iter()
        .map(|q| q.account_id.as_deref().unwrap())
        .collect();
    asked.dedup();
    assert_eq!(asked.len(), 3, "three different accounts");
    assert_eq!(h.proxy.status().usage_probe.queries, 3);
    h.stop().await;
    usage.shutdown().await;
}

/// An account the usage endpoint reports at 99 % of a window (over the 95 % threshold) is
/// sent nothing; the other serves every request.
#[tokio::test(flavor = "current_thread")]
async fn a_probe_answer_at_99_percent_keeps_the_account_out() {
    let usage = MockUsageEndpoint::start().await.unwrap();
    usage.set("ws-full", UsageAnswer::used(99, 40));
    usage.set("ws-free", UsageAnswer::used(10, 5));
    let h = harness(MockConfig::default(), &["ws-full", "ws-free"], &[], |o| {
        o.usage_probe = Some(probe(&usage, 60));
    })
    .await;
    let status = h.status_until(|s| s.usage_probe.recorded == 2).await;
    assert_eq!(status.usage_probe.recorded, 2, "{:?}", status.usage_probe);
    let full = &status.policy.accounts[0];
    assert!(
        full.usage.iter().any(|u| u.blocked_until.is_some()),
        "{full:?}"
    );
    for i in 0..6 {
        let (code, _) = h.post(&format!("r{i}")).await;
        assert_eq!(code, 200);
    }
    let stats = h.upstream.stats();
    assert_eq!(
        stats
            .accounts
            .get("ws-full")
            .map_or(0, |c| c.ok + c.rate_limited),
        0,
        "{stats:?}"
    );
    assert_eq!(stats.accounts["ws-free"].ok, 6);
    let status = h.stop().await;
    assert_invariant(&status);
    usage.shutdown().await;
}

/// Garbage, refusals, errors and silence from the usage endpoint change nothing: no account
/// is disabled or cooled down, no token refreshed, every account still serves; an account
/// whose token has expired is not queried at all; no token, key or email reaches the logs
/// or `/status`.
#[tokio::test(flavor = "current_thread")]
async fn bad_answers_are_harmless_and_no_secret_is_logged() {
    let logs = Capture::default();
    let _guard = logs.install();
    let usage = MockUsageEndpoint::start().await.unwrap();
    usage.set(
        "ws-garbage",
        UsageAnswer::Body(b"<html>\x00\xff not json".to_vec()),
    );
    usage.set("ws-refused", UsageAnswer::Status(401));
    usage.set("ws-error", UsageAnswer::Status(500));
    usage.set("ws-silent", UsageAnswer::Stall);
    usage.set("ws-ok", UsageAnswer::used(30, 10));
    let ids = [
        "ws-garbage",
        "ws-refused",
        "ws-error",
        "ws-silent",
        "ws-ok",
        "ws-expired",
    ];
    let h = harness(MockConfig::default(), &ids, &["ws-expired"], |o| {
        let mut p = probe(&usage, 60);
        p.timeout = Duration::from_millis(300);
        o.usage_probe = Some(p);
    })
    .await;
    let status = h
        .status_until(|s| {
            let p = &s.usage_probe;
            p.recorded + p.refused + p.unreadable + p.failed == 5 && p.in_flight == 0
        })
        .await;
    let p = &status.usage_probe;
    assert_eq!(
        (p.queries, p.recorded, p.refused, p.unreadable, p.failed),
        (5, 1, 1, 1, 2),
        "{p:?}"
    );
    assert_eq!(p.skipped_expired, 1, "{p:?}");
    assert!(
        usage
            .queries()
            .iter()
            .all(|q| q.account_id.as_deref() != Some("ws-expired")),
        "an expired token is never sent to the usage endpoint"
    );
    for account in &status.policy.accounts {
        assert!(account.disabled.is_none(), "{account:?}");
        assert!(account.cooldown_until.is_none(), "{account:?}");
        assert!(!account.needs_refresh, "{account:?}");
    }
    assert_eq!(status.counters.refreshes, 0);
    assert_eq!(
        h.upstream.stats().token_requests,
        0,
        "no refresh for a probe"
    );
    // Every account still serves (round robin over six: each at least once in twelve).
    for i in 0..12 {
        let (code, _) = h.post(&format!("r{i}")).await;
        assert_eq!(code, 200);
    }
    let stats = h.upstream.stats();
    for id in ids {
        assert!(stats.accounts[id].ok >= 1, "{id}: {stats:?}");
    }
    let secrets = h.secrets();
    let status = h.stop().await;
    assert_invariant(&status);
    usage.shutdown().await;
    let logs = logs.text();
    assert!(
        logs.contains("usage probe: the usage endpoint refused the token"),
        "{logs}"
    );
    assert!(
        logs.contains("usage probe: no answer within the timeout"),
        "{logs}"
    );
    assert_no_secret(&logs, &secrets, "the logs");
    assert_no_secret(
        &serde_json::to_string(&status).unwrap(),
        &secrets,
        "/status",
    );
}

fn rate_limited() -> Behavior {
    Behavior::RateLimited {
        retry_after: Duration::from_secs(60),
        times: u32::MAX,
    }
}

/// With every account rate limited, requests are served by the overflow source with its
/// key and no account id, the client gets `200`, and `/status` says so; the key is in no
/// log and not in `/status`.
#[tokio::test(flavor = "current_thread")]
async fn with_every_account_rate_limited_the_overflow_source_serves() {
    let logs = Capture::default();
    let _guard = logs.install();
    let openai = MockOpenAi::start().await.unwrap();
    let base = openai.base_url();
    let h = harness(
        MockConfig::default()
            .account("ws-a", rate_limited())
            .account("ws-b", rate_limited()),
        &["ws-a", "ws-b"],
        &[],
        |o| o.overflow = Some(OverflowSource::new(base, Secret::new(KEY.to_owned()))),
    )
    .await;
    let before = h.proxy.status();
    assert!(before.overflow.configured && !before.overflow.active_now);
    assert_eq!(before.overflow.requests_served, 0);

    // First request: both accounts answer 429, then the overflow source serves.
    let (code, body) = h.post("first").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("answered by the overflow source"), "{body}");
    // Second: the pool is exhausted before any upstream call; straight to the overflow.
    let (code, body) = h.post("second").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        h.upstream.stats().responses_requests,
        2,
        "no upstream call for the second"
    );

    let requests = openai.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/v1/responses")
        );
        assert_eq!(r.bearer.as_ref().map(Secret::expose), Some(KEY));
        assert!(!r.chatgpt_account_id, "no ChatGPT-Account-Id to the API");
        assert_eq!(r.model.as_deref(), Some("gpt-5"), "the body goes unchanged");
    }
    let status = h.proxy.status();
    let o = &status.overflow;
    assert!(o.configured && o.active_now, "{o:?}");
    assert_eq!(
        (o.requests_served, o.ok, o.failures, o.in_flight),
        (2, 2, 0, 0)
    );
    assert_eq!(o.base_url.as_deref(), Some(openai.base_url().as_str()));
    assert_eq!((status.counters.ok, status.counters.gave_up), (2, 0));
    assert_invariant(&status);
    let secrets = h.secrets();
    h.stop().await;
    openai.shutdown().await;
    let logs = logs.text();
    assert!(logs.contains("served by the overflow source"), "{logs}");
    assert_no_secret(&logs, &secrets, "the logs");
    assert_no_secret(
        &serde_json::to_string(&status).unwrap(),
        &secrets,
        "/status",
    );
}

/// While any account is usable, the overflow source gets nothing.
#[tokio::test(flavor = "current_thread")]
async fn with_an_account_usable_the_overflow_source_gets_nothing() {
    let openai = MockOpenAi::start().await.unwrap();
    let base = openai.base_url();
    let h = harness(
        MockConfig::default().account("ws-a", rate_limited()),
        &["ws-a", "ws-b"],
        &[],
        |o| o.overflow = Some(OverflowSource::new(base, Secret::new(KEY.to_owned()))),
    )
    .await;
    for i in 0..5 {
        let (code, body) = h.post(&format!("r{i}")).await;
        assert_eq!(code, 200);
        assert!(!body.contains("overflow"), "{body}");
    }
    assert!(openai.requests().is_empty());
    let status = h.stop().await;
    assert_eq!(status.counters.ok, 5);
    let o = &status.overflow;
    assert!(o.configured && !o.active_now, "{o:?}");
    assert_eq!(o.requests_served, 0);
    openai.shutdown().await;
}

/// Accounts whose login is gone (disabled for everyone) are no shortage the overflow source
/// covers: the client gets the upstream's answer, then `503 no_account`.
#[tokio::test(flavor = "current_thread")]
async fn accounts_out_of_rotation_are_not_covered_by_the_overflow_source() {
    let openai = MockOpenAi::start().await.unwrap();
    let base = openai.base_url();
    let h = harness(
        MockConfig::default().account("ws-a", Behavior::TokenInvalidated),
        &["ws-a"],
        &[],
        |o| o.overflow = Some(OverflowSource::new(base, Secret::new(KEY.to_owned()))),
    )
    .await;
    let (code, _) = h.post("first").await;
    assert_eq!(code, 401, "the upstream's word on the gone login");
    let (code, body) = h.post("second").await;
    assert_eq!(code, 503);
    assert!(body.contains("no_account"), "{body}");
    assert!(openai.requests().is_empty());
    let status = h.stop().await;
    assert_eq!(status.overflow.requests_served, 0);
    assert_invariant(&status);
    openai.shutdown().await;
}

/// An overflow source that cannot be reached changes nothing for the client: it gets the
/// pool's own answer (429 with the exact wait), and the failure is counted.
#[tokio::test(flavor = "current_thread")]
async fn an_unreachable_overflow_source_leaves_the_pools_answer() {
    // A port that was just free: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    let h = harness(
        MockConfig::default().account("ws-a", rate_limited()),
        &["ws-a"],
        &[],
        |o| o.overflow = Some(OverflowSource::new(base, Secret::new(KEY.to_owned()))),
    )
    .await;
    let (code, body) = h.post("first").await;
    assert_eq!(code, 429);
    assert!(body.contains("upstream_unavailable"), "{body}");
    let (code, body) = h.post("second").await;
    assert_eq!(code, 429);
    assert!(
        body.contains("pool_exhausted") && body.contains("retry_after_ms"),
        "{body}"
    );
    let status = h.stop().await;
    let o = &status.overflow;
    assert_eq!(
        (o.requests_served, o.failures, o.in_flight),
        (0, 2, 0),
        "{o:?}"
    );
    assert!(!o.active_now, "it served nothing: {o:?}");
    assert_eq!(status.counters.gave_up, 2);
    assert_invariant(&status);
}

/// The program: `--usage-probe …` and `--overflow --overflow-key-file` turn both on; the
/// key comes from a `chmod 600` file (or `$OPENAI_API_KEY`), never from argv, and reaches
/// neither stdout, stderr (at debug level) nor `/status`. Missing or exposed keys and
/// out-of-range settings are refused at start.
#[cfg(not(unix))]
#[test]
fn rotation_proxy_binary_takes_both_from_its_flags_and_keeps_the_key_out_of_sight() {
    common::skip(
        "rotation_proxy_binary_takes_both_from_its_flags_and_keeps_the_key_out_of_sight",
        "the key file is checked for its Unix mode (chmod 600)",
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "current_thread")]
async fn rotation_proxy_binary_takes_both_from_its_flags_and_keeps_the_key_out_of_sight() {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Stdio;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

    const TEST: &str =
        "rotation_proxy_binary_takes_both_from_its_flags_and_keeps_the_key_out_of_sight";
    let Some(binary) = common::example_or_skip("rotation-proxy", TEST) else {
        return;
    };
    let wrapper = "test-wrapper-token-0123456789";
    let upstream = MockUpstream::start(MockConfig::default().account("ws-bin", rate_limited()))
        .await
        .unwrap();
    let usage = MockUsageEndpoint::start().await.unwrap();
    let openai = MockOpenAi::start().await.unwrap();
    let login = upstream.synthetic_account("ws-bin", "binary.user@example.com", false);
    let pool_dir = tempfile::tempdir().unwrap();
    seed_pool(
        &PoolStore::new(pool_dir.path()),
        std::slice::from_ref(&login),
    )
    .unwrap();
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("openai.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    let command = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(&binary);
        cmd.args([
            "--listen",
            "127.0.0.1:0",
            "--no-config-rewrite",
            "--pool-dir",
        ])
        .arg(pool_dir.path())
        .args(["--upstream", &upstream.base_url()])
        .args(["--token-url", &upstream.token_url()])
        .args(extra)
        .env(examples::proxy::TOKEN_ENV, wrapper)
        .env_remove("OPENAI_API_KEY")
        .env("RUST_LOG", "debug");
        cmd
    };
    let key_path = key_file.to_str().unwrap().to_owned();
    let mut child = tokio::process::Command::from(command(&[
        "--usage-probe",
        "--usage-probe-url",
        &usage.url(),
        "--usage-probe-interval",
        "1",
        "--overflow",
        "--overflow-url",
        &openai.base_url(),
        "--overflow-key-file",
        &key_path,
    ]))
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true)
    .spawn()
    .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let stderr_text = tokio::spawn(async move {
        let mut all = Vec::new();
        let _ = stderr.read_to_end(&mut all).await;
        String::from_utf8_lossy(&all).into_owned()
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(30), stdout.next_line()).await
    {
        let done = line.contains("overflow source");
        seen.push(line);
        if done || seen.len() > 20 {
            break;
        }
    }
    let base_url = seen
        .iter()
        .find_map(|l| l.strip_prefix("rotation-proxy: listening on "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no listening line in {seen:?}"))
        .to_owned();
    assert!(
        seen.iter()
            .any(|l| l.contains("usage probe on (at most 6 queries a minute)")),
        "{seen:?}"
    );
    let stdout_rest = tokio::spawn(async move {
        let mut rest = Vec::new();
        while let Ok(Ok(Some(line))) =
            tokio::time::timeout(Duration::from_secs(60), stdout.next_line()).await
        {
            rest.push(line);
        }
        rest
    });

    assert!(usage.wait_for_queries(1, Duration::from_secs(10)).await);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let answer = client
        .post(format!("{base_url}/responses"))
        .bearer_auth(wrapper)
        .body(r#"{"model":"gpt-5","input":"hi"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer.text().await.unwrap().contains("overflow source"));
    let status_url = format!("{}/status", base_url.trim_end_matches("/v1"));
    let status = client
        .get(status_url)
        .bearer_auth(wrapper)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(json["overflow"]["configured"], true, "{json:#}");
    assert_eq!(json["overflow"]["active_now"], true, "{json:#}");
    assert_eq!(json["overflow"]["requests_served"], 1, "{json:#}");
    assert_eq!(json["usage_probe"]["configured"], true, "{json:#}");
    assert!(
        json["usage_probe"]["queries"].as_u64() >= Some(1),
        "{json:#}"
    );
    assert_eq!(
        openai.requests()[0].bearer.as_ref().map(Secret::expose),
        Some(KEY)
    );

    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the proxy exits after SIGTERM")
        .unwrap();
    assert!(exit.success());
    let stderr = stderr_text.await.unwrap();
    let rest = stdout_rest.await.unwrap().join("\n");
    assert!(
        rest.contains("1 requests served by the overflow source"),
        "{rest}"
    );
    let secrets = [
        KEY.to_owned(),
        login.tokens.access_token.expose().to_owned(),
        login.tokens.refresh_token.expose().to_owned(),
        login.email.clone(),
    ];
    let printed = format!("{}\n{rest}\n{stderr}\n{status}", seen.join("\n"));
    assert_no_secret(&printed, &secrets, "the program's output or /status");

    // Refused at start, with a message saying what to do and no key in it.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    for (extra, expected) in [
        (&["--overflow"][..], "OPENAI_API_KEY"),
        (
            &["--overflow", "--overflow-key-file", &key_path][..],
            "chmod 600",
        ),
        (
            &["--overflow", "--overflow-url", "ftp://api.example/v1"][..],
            "must use http or https",
        ),
        (
            &["--usage-probe", "--usage-probe-per-minute", "0"][..],
            "--usage-probe-per-minute",
        ),
        (
            &["--usage-probe-url", "http://127.0.0.1:1/x"][..],
            "--usage-probe",
        ),
    ] {
        let mut cmd = command(extra);
        if extra.contains(&"ftp://api.example/v1") {
            cmd.env("OPENAI_API_KEY", KEY);
        }
        let run = common::run_bounded(cmd, Duration::from_secs(20));
        assert_ne!(run.code, Some(0), "{extra:?}: {}", run.stderr);
        assert!(run.stderr.contains(expected), "{extra:?}: {}", run.stderr);
        assert!(!run.stderr.contains(KEY) && !run.stdout.contains(KEY));
    }
    usage.shutdown().await;
    openai.shutdown().await;
    upstream.shutdown().await;
}
