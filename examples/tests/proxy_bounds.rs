//! The proxy's bounds are the policy's: a request reaches an account with headroom past
//! any number of spent ones, waits for pacing within `max_wait` without using up its
//! rounds, and no header of the serving account's usage or plan reaches the client
//! (loopback mocks).

use std::time::Duration;

use examples::mock_upstream::{MockConfig, MockUpstream, MockUsage, MockWindow};
use examples::proxy::{Accounts, ProxyOptions, RotationProxy, WrapperToken};
use rotation_policy::TokenBucket;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn proxy_for(
    mock: &MockUpstream,
    upstream: String,
    ids: &[String],
    tune: impl FnOnce(&mut ProxyOptions),
) -> (RotationProxy, WrapperToken) {
    let mut accounts = Accounts::new();
    for id in ids {
        let s = mock.synthetic_account(id, &format!("owner.{id}@example.com"), false);
        accounts.push(Some(&s.email), None, s.tokens).unwrap();
    }
    let token = WrapperToken::generate().unwrap();
    let mut options = ProxyOptions::new(upstream, token.clone());
    options.token_url = mock.token_url();
    options.policy.session_ttl = None;
    tune(&mut options);
    (
        RotationProxy::start(options, accounts).await.unwrap(),
        token,
    )
}

/// 13 accounts whose 5-hour window is spent (the pool does not know yet: first run) and one
/// with headroom. Each spent account answers 429 with its usage at 100 %, which gives the
/// request its attempt back, so the policy keeps the request going until the fresh account
/// serves it; the proxy's own loop guard must not end it first (it did at `max_attempts * 4`).
#[tokio::test]
async fn a_request_reaches_the_account_with_headroom_past_many_spent_ones() {
    let spent = MockUsage::new(MockWindow::new(100.0, 1.0, 300, Duration::from_secs(3600)));
    let mut config = MockConfig::default();
    let mut ids = Vec::new();
    for i in 1..=13 {
        let id = format!("ws-{i:02}");
        config = config.usage(id.clone(), spent.clone());
        ids.push(id);
    }
    ids.push("ws-14".to_owned());
    let mock = MockUpstream::start(config).await.unwrap();
    let (proxy, token) = proxy_for(&mock, mock.base_url(), &ids, |_| {}).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let answer = client
        .post(format!("{}/responses", proxy.base_url()))
        .bearer_auth(token.secret().expose())
        .body(r#"{"model":"gpt-5","input":"hi","stream":true}"#)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let body = answer.text().await.unwrap();
    let served_by_14 = mock.stats().accounts.get("ws-14").map_or(0, |c| c.ok);
    let asked: u64 = mock
        .stats()
        .accounts
        .values()
        .map(|c| c.ok + c.rate_limited)
        .sum();
    eprintln!(
        "status {status}, accounts asked {asked}, ws-14 served {served_by_14}, body {}",
        &body[..body.len().min(300)]
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(served_by_14, 1);
    proxy.shutdown().await;
    mock.shutdown().await;
}

/// One account paced at one dispatch per 20 ms, 16 requests at once, max_wait 5 s: each
/// request needs at most 15 × 20 ms = 300 ms of waiting, well within max_wait, and no
/// upstream answer fails. Every request is served: waits do not use up the request's rounds
/// (they did, and the last ones got a 502 without being sent).
#[tokio::test]
async fn paced_requests_within_max_wait_are_served_not_502() {
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let (proxy, token) = proxy_for(&mock, mock.base_url(), &["ws-1".to_owned()], |o| {
        o.policy.bucket = Some(TokenBucket::new(1, Duration::from_millis(20)));
        o.policy.max_wait = Duration::from_secs(5);
    })
    .await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let client = client.clone();
        let url = format!("{}/responses", proxy.base_url());
        let secret = token.secret().expose().to_owned();
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(secret)
                .body(r#"{"model":"gpt-5","input":"hi","stream":true}"#)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            (status, body)
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        if status != 200 {
            eprintln!("{status}: {}", &body[..body.len().min(200)]);
        }
        statuses.push(status);
    }
    statuses.sort();
    eprintln!("statuses {statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    proxy.shutdown().await;
    mock.shutdown().await;
}

/// A raw upstream answering like the Codex backend, with per-account headers beyond the
/// usage families (reset-after seconds, plan type).
async fn raw_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                // Read headers and a small body.
                loop {
                    let n = sock.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                    if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if got.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let body = r#"{"id":"resp_1","object":"response","status":"completed"}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     x-codex-primary-used-percent: 42\r\n\
                     x-codex-primary-window-minutes: 300\r\n\
                     x-codex-primary-reset-after-seconds: 1234\r\n\
                     x-codex-secondary-used-percent: 77\r\n\
                     x-codex-secondary-reset-after-seconds: 98765\r\n\
                     x-codex-plan-type: pro\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{}",
                    body.len(),
                    body
                );
                let _ = sock.write_all(answer.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    format!("http://{addr}/backend-api/codex")
}

/// The account's own usage headers must not reach the client (the pool's replace them).
#[tokio::test]
async fn no_account_usage_header_reaches_the_client() {
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let upstream = raw_upstream().await;
    let (proxy, token) = proxy_for(&mock, upstream, &["ws-1".to_owned()], |_| {}).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let answer = client
        .post(format!("{}/responses", proxy.base_url()))
        .bearer_auth(token.secret().expose())
        .body(r#"{"model":"gpt-5","input":"hi"}"#)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let leaked: Vec<String> = answer
        .headers()
        .iter()
        .filter(|(n, _)| n.as_str().starts_with("x-codex-"))
        .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap_or("?")))
        .collect();
    eprintln!("status {status}; x-codex-* headers at the client: {leaked:#?}");
    for name in [
        "x-codex-primary-reset-after-seconds",
        "x-codex-secondary-reset-after-seconds",
        "x-codex-plan-type",
    ] {
        assert!(
            answer.headers().get(name).is_none(),
            "{name} of the account leaked to the client: {leaked:?}"
        );
    }
    proxy.shutdown().await;
}
