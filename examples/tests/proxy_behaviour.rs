//! The rotation proxy against the loopback mock upstream: concurrency and exact counters,
//! wrapper auth, the body cap, hop-by-hop headers, refresh on 401, and secret-free logs.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use examples::mock_upstream::{Behavior, MockConfig, MockUpstream, SyntheticAccount};
use examples::proxy::{Accounts, ProxyOptions, RotationProxy, StatusReport, WrapperToken};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

struct Harness {
    mock: MockUpstream,
    proxy: RotationProxy,
    token: WrapperToken,
    accounts: Vec<SyntheticAccount>,
    client: reqwest::Client,
}

async fn harness(
    config: MockConfig,
    ids: &[&str],
    tune: impl FnOnce(&mut ProxyOptions),
) -> Harness {
    let mock = MockUpstream::start(config).await.unwrap();
    let mut accounts = Accounts::new();
    let mut synthetic = Vec::new();
    for id in ids {
        let s = mock.synthetic_account(id, &format!("owner.{id}@example.com"), false);
        accounts
            .push(Some(&s.email), Some("pro".into()), s.tokens.clone())
            .unwrap();
        synthetic.push(s);
    }
    let token = WrapperToken::generate().unwrap();
    let mut options = ProxyOptions::new(mock.base_url(), token.clone());
    options.token_url = mock.token_url();
    tune(&mut options);
    let proxy = RotationProxy::start(options, accounts).await.unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    Harness {
        mock,
        proxy,
        token,
        accounts: synthetic,
        client,
    }
}

impl Harness {
    fn url(&self) -> String {
        format!("{}/responses", self.proxy.base_url())
    }

    fn post(&self, input: &str) -> reqwest::RequestBuilder {
        self.client
            .post(self.url())
            .bearer_auth(self.token.secret().expose())
            .header("content-type", "application/json")
            .body(serde_json::json!({"model": "gpt-5", "input": input, "stream": true}).to_string())
    }

    async fn stop(self) -> StatusReport {
        let status = self.proxy.status();
        self.proxy.shutdown().await;
        self.mock.shutdown().await;
        status
    }
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
    assert_eq!(
        c.attempts, s.policy.counters.attempts,
        "proxy and policy disagree on attempts"
    );
    let per_account: u64 = s.accounts.iter().map(|a| a.attempts).sum();
    assert_eq!(
        per_account, c.attempts,
        "per-account attempts do not add up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_streams_are_each_answered_once_and_counters_add_up() {
    const CLIENTS: usize = 96;
    let h = harness(
        MockConfig::default()
            .deltas(4)
            .event_delay(Duration::from_millis(5))
            .account(
                "ws-limited",
                Behavior::RateLimited {
                    retry_after: Duration::from_secs(30),
                    times: u32::MAX,
                },
            ),
        &["ws-limited", "ws-b", "ws-c", "ws-d"],
        |o| o.policy.bucket = None,
    )
    .await;
    let h = Arc::new(h);

    // Poll /status while the load runs: every snapshot must satisfy the invariant.
    let poller = {
        let h = h.clone();
        tokio::spawn(async move {
            let mut snapshots = 0;
            for _ in 0..40 {
                let body = h
                    .client
                    .get(format!("http://{}/status", h.proxy.addr()))
                    .header("x-api-key", h.token.secret().expose())
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let c = &v["counters"];
                let n = |k: &str| c[k].as_u64().unwrap();
                assert_eq!(
                    n("requests"),
                    n("in_flight")
                        + n("ok")
                        + n("upstream_errors")
                        + n("gave_up")
                        + n("no_account")
                        + n("bad_gateway")
                        + n("cancelled"),
                    "inconsistent snapshot {c}"
                );
                snapshots += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            snapshots
        })
    };

    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let response = h.post(&format!("client-{i}")).send().await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["content-type"], "text/event-stream");
            let text = response.text().await.unwrap();
            // Exactly this client's answer, exactly once, complete.
            assert_eq!(
                text.matches("\"text\":\"echo: client-").count(),
                1,
                "{text}"
            );
            assert!(
                text.contains(&format!("\"text\":\"echo: client-{i}\"")),
                "{text}"
            );
            assert_eq!(text.matches("event: response.completed").count(), 1);
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(poller.await.unwrap(), 40);

    let h = Arc::into_inner(h).unwrap();
    let mock_stats = h.mock.stats();
    let status = h.stop().await;
    assert_invariant(&status);
    let c = status.counters;
    assert_eq!(c.requests, CLIENTS as u64);
    assert_eq!(c.ok, CLIENTS as u64);
    assert_eq!(c.in_flight, 0);
    assert_eq!(c.streams_open, 0);
    assert_eq!(c.stream_errors, 0);
    assert_eq!(c.attempts, CLIENTS as u64 + c.retries);
    // Upstream saw every attempt once and answered each successful request exactly once.
    assert_eq!(mock_stats.responses_requests, c.attempts);
    let upstream_ok: u64 = mock_stats.accounts.values().map(|a| a.ok).sum();
    assert_eq!(upstream_ok, CLIENTS as u64);
    let limited = mock_stats.accounts["ws-limited"].rate_limited;
    assert!(limited >= 1);
    assert_eq!(limited, c.retries, "every 429 led to exactly one retry");
    assert_eq!(status.accounts[0].outcomes.rate_limited, limited);
    assert_eq!(status.accounts[0].rate_limited_families, ["gpt-5"]);
}

#[tokio::test(flavor = "current_thread")]
async fn wrapper_token_is_required_and_compared_exactly() {
    let h = harness(MockConfig::default(), &["ws-a"], |_| {}).await;
    let url = h.url();
    let body = r#"{"model":"gpt-5","input":"x"}"#;
    let missing = h.client.post(&url).body(body).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    let wrong = h
        .client
        .post(&url)
        .bearer_auth(format!("{}x", h.token.secret().expose()))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let status_without = h
        .client
        .get(format!("http://{}/status", h.proxy.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(status_without.status(), 401);
    let via_api_key = h
        .client
        .post(&url)
        .header("x-api-key", h.token.secret().expose())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(via_api_key.status(), 200);
    assert_eq!(
        h.mock.stats().responses_requests,
        1,
        "rejected requests never reach the upstream"
    );
    let status = h.stop().await;
    assert_eq!(status.counters.rejected_unauthorized, 3);
    assert_eq!(status.counters.requests, 1);
}

async fn raw_request(addr: std::net::SocketAddr, head: String, body: Vec<u8>) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        // The proxy may answer and close before the whole body is sent; that is the point.
        for chunk in body.chunks(64 * 1024) {
            let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
            if write.write_all(&framed).await.is_err() {
                return;
            }
        }
        let _ = write.write_all(b"0\r\n\r\n").await;
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), read.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n")
                    && answer.starts_with(b"HTTP/1.1 413")
                {
                    break;
                }
            }
            Err(_) => panic!("no answer within 20 s"),
        }
    }
    writer.abort();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "current_thread")]
async fn bodies_over_the_cap_get_413_declared_or_streamed() {
    // The default cap (64 MiB), announced by Content-Length: refused before any byte of body.
    let h = harness(MockConfig::default(), &["ws-a"], |_| {}).await;
    assert_eq!(examples::proxy::DEFAULT_BODY_LIMIT, 64 * 1024 * 1024);
    let head = format!(
        "POST /v1/responses HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-length: {}\r\n\r\n",
        h.token.secret().expose(),
        64 * 1024 * 1024 + 1
    );
    let mut stream = tokio::net::TcpStream::connect(h.proxy.addr())
        .await
        .unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("request_too_large"), "{answer}");
    assert_eq!(h.mock.stats().responses_requests, 0);
    let status = h.stop().await;
    assert_eq!(status.counters.rejected_too_large, 1);

    // A chunked body without length: cut off once it passes the cap (1 MiB here).
    let h = harness(MockConfig::default(), &["ws-a"], |o| {
        o.body_limit = 1024 * 1024
    })
    .await;
    let head = format!(
        "POST /v1/responses HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ntransfer-encoding: chunked\r\n\r\n",
        h.token.secret().expose()
    );
    let answer = raw_request(h.proxy.addr(), head.clone(), vec![b' '; 2 * 1024 * 1024]).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Exactly at the cap is fine (valid JSON padded with spaces to 1 MiB).
    let mut exact = br#"{"model":"gpt-5","input":"exact","stream":false}"#.to_vec();
    exact.resize(1024 * 1024, b' ');
    let ok = h
        .client
        .post(h.url())
        .bearer_auth(h.token.secret().expose())
        .body(exact)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.text().await.unwrap().contains("echo: exact"));
    let status = h.stop().await;
    assert_eq!(status.counters.rejected_too_large, 1);
    assert_eq!(status.counters.ok, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn hop_by_hop_headers_are_dropped_both_ways_and_account_headers_swapped() {
    let h = harness(MockConfig::default(), &["ws-a"], |_| {}).await;
    let response = h
        .post("hop")
        .header("connection", "keep-alive, x-hop-secret")
        .header("x-hop-secret", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("te", "trailers")
        .header("x-api-key", "client-side-key-never-forwarded")
        .header("chatgpt-account-id", "spoofed")
        .header("openai-beta", "responses=experimental")
        .header("session_id", "s-1")
        .header("x-mock-send-hop-headers", "1")
        .header("expect", "100-continue")
        .header("x-forwarded", "for=evil.example")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-real-ip", "203.0.113.9")
        .header("x-original-uri", "/oauth/token")
        .header("x-envoy-original-path", "/oauth/token")
        .header("x-http-method-override", "DELETE")
        .header("x-method-override", "DELETE")
        .header("x-http-method", "DELETE")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for name in ["x-mock-hop", "keep-alive", "proxy-authenticate"] {
        assert!(
            !response.headers().contains_key(name),
            "{name} came back to the client"
        );
    }
    let _ = response.text().await.unwrap();
    let recorded = h.mock.recorded();
    assert_eq!(recorded.len(), 1);
    let seen = &recorded[0];
    for name in [
        "x-hop-secret",
        "keep-alive",
        "proxy-authorization",
        "te",
        "x-api-key",
        "expect",
        "x-forwarded",
        "x-forwarded-for",
        "x-real-ip",
        "x-original-uri",
        "x-envoy-original-path",
        "x-http-method-override",
        "x-method-override",
        "x-http-method",
    ] {
        assert!(
            !seen.header_names.iter().any(|h| h == name),
            "{name} reached the upstream: {seen:?}"
        );
    }
    for name in [
        "openai-beta",
        "session_id",
        "authorization",
        "chatgpt-account-id",
    ] {
        assert!(
            seen.header_names.iter().any(|h| h == name),
            "{name} was not forwarded: {seen:?}"
        );
    }
    assert_eq!(
        seen.account_id.as_deref(),
        Some("ws-a"),
        "the account id header is the pool's, not the client's"
    );
    h.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_401_triggers_one_refresh_then_succeeds_and_logs_hold_no_secret() {
    let logs = Capture::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    // One account, rejected until refreshed: the proxy refreshes, the policy retries it.
    let h = harness(
        MockConfig::default().account("ws-a", Behavior::NeedsRefresh),
        &["ws-a", "ws-b"],
        |_| {},
    )
    .await;
    let mut answered = 0;
    for i in 0..6 {
        let r = h.post(&format!("r{i}")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let _ = r.text().await.unwrap();
        answered += 1;
    }
    // A wrong wrapper token also produces a log line to search (failed refreshes: below).
    let _ = h
        .client
        .post(h.url())
        .bearer_auth("definitely-not-the-token")
        .send()
        .await
        .unwrap();
    let stats = h.mock.stats();
    let secrets: Vec<String> = h
        .accounts
        .iter()
        .flat_map(|a| {
            [
                a.tokens.access_token.expose().to_owned(),
                a.tokens.refresh_token.expose().to_owned(),
                a.tokens.id_token.expose().to_owned(),
                a.email.clone(),
            ]
        })
        .chain([h.token.secret().expose().to_owned()])
        .collect();
    let status = h.stop().await;
    assert_eq!(answered, 6);
    assert_eq!(
        stats.accounts["ws-a"].refreshes, 1,
        "exactly one refresh for the rejected account"
    );
    assert_eq!(status.counters.refreshes, 1);
    assert_eq!(status.accounts[0].refreshes, 1);
    // The policy saw the rejection and every answer after it (the re-send included).
    let o = status.accounts[0].outcomes;
    assert_eq!(o.unauthorized, 1, "{status:?}");
    assert_eq!(o.success, stats.accounts["ws-a"].ok, "{status:?}");
    assert!(!status.accounts[0].needs_refresh);
    assert!(status.policy.accounts[0].cooldown_until.is_none());
    assert!(
        stats.accounts["ws-a"].ok >= 1,
        "the refreshed account serves again: {stats:?}"
    );
    assert_invariant(&status);

    let logs = logs.text();
    assert!(logs.contains("token refreshed"), "logs captured:\n{logs}");
    assert!(logs.contains("rejected: missing or wrong wrapper token"));
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret leaked into the logs"
        );
    }
    // Nothing secret in the status document either.
    let status_json = serde_json::to_string(&status).unwrap();
    for secret in &secrets {
        assert!(
            !status_json.contains(secret.as_str()),
            "a secret leaked into /status"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn sse_events_reach_the_client_before_the_upstream_finishes() {
    // The mock sends `response.created`, then waits for the gate before the rest. If the
    // proxy buffered the response, the client would never see the first event before the
    // gate opens (the timeout below only bounds a broken proxy; nothing is timed).
    let gate = Arc::new(tokio::sync::Notify::new());
    let h = harness(
        MockConfig::default()
            .deltas(2)
            .pause_after_first_event(gate.clone()),
        &["ws-a"],
        |_| {},
    )
    .await;
    let mut response = h.post("streamed").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut first = String::new();
    while !first.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(20), response.chunk())
            .await
            .expect("the first event arrives while the upstream is still paused")
            .unwrap()
            .expect("stream still open");
        first.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(first.starts_with("event: response.created\n"), "{first}");
    assert!(
        !first.contains("response.completed"),
        "the rest was held back upstream: {first}"
    );
    assert_eq!(h.proxy.status().counters.streams_open, 1);
    gate.notify_one();
    let mut rest = String::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        rest.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(rest.contains("\"delta\""), "{rest}");
    assert!(
        rest.trim_end().ends_with('}') && rest.contains("event: response.completed"),
        "{rest}"
    );
    let status = h.stop().await;
    assert_eq!(status.counters.streams_open, 0);
    assert_eq!(status.counters.stream_errors, 0);
}

#[tokio::test(flavor = "current_thread")]
async fn a_client_leaving_mid_stream_closes_the_stream_bookkeeping() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let h = harness(
        MockConfig::default().pause_after_first_event(gate.clone()),
        &["ws-a"],
        |_| {},
    )
    .await;
    let mut response = h.post("abandoned").send().await.unwrap();
    let _first = response.chunk().await.unwrap();
    assert_eq!(h.proxy.status().counters.streams_open, 1);
    drop(response); // the client goes away while the upstream is still streaming
    gate.notify_one();
    let mut open = 1;
    for _ in 0..200 {
        open = h.proxy.status().counters.streams_open;
        if open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(open, 0, "the abandoned stream was released");
    let status = h.stop().await;
    assert_eq!(status.counters.ok, 1);
    assert_invariant(&status);
}

#[tokio::test(flavor = "current_thread")]
async fn a_client_leaving_before_the_answer_is_counted_cancelled_and_refunded() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let h = harness(
        MockConfig::default().stall_before_answer(gate.clone()),
        &["ws-a"],
        |_| {},
    )
    .await;
    // The upstream holds the request; the client gives up after 300 ms.
    let abandoned = h
        .post("abandoned")
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(abandoned.is_err());
    let mut c = h.proxy.status().counters;
    for _ in 0..300 {
        c = h.proxy.status().counters;
        if c.cancelled == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!((c.cancelled, c.in_flight, c.requests), (1, 0, 1), "{c:?}");
    let status = h.proxy.status();
    assert_eq!(
        status.policy.accounts[0].in_flight, 0,
        "the dispatch was handed back to the policy"
    );
    assert_invariant(&status);
    gate.notify_one();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_401s_with_one_stale_token_cause_one_refresh_and_no_disable() {
    // A single account whose token the upstream rejects: every concurrent request may see a
    // 401, but only one refresh happens, each such attempt is re-sent with the new token, the
    // policy is told of the rejected token once (not once per racing request, which would
    // disable the account after N in a row), and every request is answered on that account.
    const CLIENTS: usize = 16;
    let h = Arc::new(
        harness(
            MockConfig::default().account("ws-a", Behavior::NeedsRefresh),
            &["ws-a"],
            |_| {},
        )
        .await,
    );
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let r = h.post(&format!("c{i}")).send().await.unwrap();
            assert_eq!(r.status(), 200);
            assert!(r.text().await.unwrap().contains(&format!("echo: c{i}\"")));
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .unwrap()
            .unwrap();
    }
    let h = Arc::into_inner(h).unwrap();
    let stats = h.mock.stats();
    let status = h.stop().await;
    let c = status.counters;
    assert_eq!(stats.accounts["ws-a"].refreshes, 1);
    assert_eq!(c.refreshes, 1);
    assert_eq!(c.ok, CLIENTS as u64);
    let outcomes = status.accounts[0].outcomes;
    assert_eq!(
        outcomes.unauthorized, 1,
        "one rejected token, one report: {status:?}"
    );
    assert_eq!(
        outcomes.success, CLIENTS as u64,
        "every re-send reported too"
    );
    assert!(c.resends >= 1);
    assert!(status.policy.accounts[0].disabled.is_none());
    assert_eq!(stats.responses_requests, c.attempts + c.resends);
    assert_eq!(stats.accounts["ws-a"].unauthorized, c.resends);
    assert_invariant(&status);
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_refresh_is_reported_and_the_request_moves_to_another_account() {
    // ws-a is rejected until refreshed, but its refresh token is unknown to the token
    // endpoint (it was issued by another "server"): the refresh fails, the 401 is reported,
    // and the request is answered by ws-b. The failure is logged without any secret.
    let logs = Capture::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let other_issuer = MockUpstream::start(MockConfig::default()).await.unwrap();
    let foreign = other_issuer.synthetic_account("ws-a", "foreign.owner@example.com", false);
    let mock = MockUpstream::start(MockConfig::default().account("ws-a", Behavior::NeedsRefresh))
        .await
        .unwrap();
    let b = mock.synthetic_account("ws-b", "b.owner@example.com", false);
    let mut accounts = Accounts::new();
    accounts
        .push(Some(&foreign.email), None, foreign.tokens.clone())
        .unwrap();
    accounts
        .push(Some(&b.email), None, b.tokens.clone())
        .unwrap();
    let token = WrapperToken::generate().unwrap();
    let mut options = ProxyOptions::new(mock.base_url(), token.clone());
    options.token_url = mock.token_url();
    let proxy = RotationProxy::start(options, accounts).await.unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = client
        .post(format!("{}/responses", proxy.base_url()))
        .bearer_auth(token.secret().expose())
        .body(r#"{"model":"gpt-5","input":"after a failed refresh"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("echo: after a failed refresh")
    );
    let status = proxy.status();
    assert_eq!(status.counters.refresh_failures, 1);
    assert_eq!(status.counters.refreshes, 0);
    assert_eq!(status.accounts[0].outcomes.unauthorized, 1);
    assert!(status.accounts[0].needs_refresh);
    let last = status.accounts[0].last_error.clone().unwrap();
    assert!(last.contains("refresh failed for acct-1"), "{last}");
    assert!(!last.contains(foreign.tokens.refresh_token.expose()));
    assert_eq!(status.accounts[1].outcomes.success, 1);
    assert_invariant(&status);
    proxy.shutdown().await;
    mock.shutdown().await;
    other_issuer.shutdown().await;
    let logs = logs.text();
    assert!(logs.contains("token refresh failed"), "{logs}");
    for secret in [
        foreign.tokens.refresh_token.expose(),
        foreign.tokens.access_token.expose(),
        foreign.tokens.id_token.expose(),
        b.tokens.access_token.expose(),
        token.secret().expose(),
        "foreign.owner@example.com",
        "b.owner@example.com",
    ] {
        assert!(!logs.contains(secret), "a secret leaked into the logs");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_restarted_proxy_honours_cooldowns_saved_by_the_previous_run() {
    // Run 1: ws-a answers 429 (Retry-After 30 s), the request moves to ws-b, and shutdown
    // saves ws-a's cooldown to the pool file. Run 2, over the same pool: ws-a is cooling down
    // from the start, so the upstream never sees it again, and no outcome is invented.
    let mock = MockUpstream::start(MockConfig::default().account(
        "ws-a",
        Behavior::RateLimited {
            retry_after: Duration::from_secs(30),
            times: u32::MAX,
        },
    ))
    .await
    .unwrap();
    let a = mock.synthetic_account("ws-a", "a.owner@example.com", false);
    let b = mock.synthetic_account("ws-b", "b.owner@example.com", false);
    let pool_dir = tempfile::tempdir().unwrap();
    let store = auth_storage::PoolStore::new(pool_dir.path());
    examples::mock_upstream::seed_pool(&store, &[a, b]).unwrap();
    // An ended cooldown of ws-b for another family: neither reloaded nor kept.
    store
        .update(|pool| {
            pool.accounts[1].cooldowns.insert("o3".into(), 1_000);
        })
        .unwrap();
    let token = WrapperToken::generate().unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let start = || async {
        let accounts = examples::proxy::load_pool_accounts(store.clone()).unwrap();
        let mut options = ProxyOptions::new(mock.base_url(), token.clone());
        options.token_url = mock.token_url();
        RotationProxy::start(options, accounts).await.unwrap()
    };
    let ask = |proxy: &RotationProxy, input: &str| {
        client
            .post(format!("{}/responses", proxy.base_url()))
            .bearer_auth(token.secret().expose())
            .body(serde_json::json!({"model": "gpt-5", "input": input}).to_string())
            .send()
    };

    let first = start().await;
    assert!(first.status().accounts[0].rate_limited_families.is_empty());
    let r = ask(&first, "run 1").await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("echo: run 1"));
    assert_eq!(mock.stats().accounts["ws-a"].rate_limited, 1);
    let learned_health = first.status().accounts[0].health;
    assert!(learned_health < 100, "the 429 lowered ws-a's health");
    first.shutdown().await;
    let saved = store.load().unwrap().pool;
    assert_eq!(
        saved.accounts[0].cooldowns.keys().collect::<Vec<_>>(),
        ["gpt-5"]
    );
    assert!(
        saved.accounts[1].cooldowns.is_empty(),
        "ended cooldowns are dropped: {:?}",
        saved.accounts[1].cooldowns
    );

    let second = start().await;
    let status = second.status();
    assert_eq!(status.accounts[0].rate_limited_families, ["gpt-5"]);
    assert_eq!(
        status.policy.counters.outcomes.total(),
        0,
        "a restored cooldown is not an outcome"
    );
    // What the first run learned was shared at its shutdown (pool-state.json): the
    // health is carried over, not re-earned.
    assert_eq!(status.accounts[0].health, learned_health);
    let r = ask(&second, "run 2").await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("echo: run 2"));
    let stats = mock.stats();
    assert_eq!(
        stats.accounts["ws-a"].rate_limited, 1,
        "the restarted proxy did not send to the account still cooling down"
    );
    assert_eq!(stats.accounts["ws-b"].ok, 2);
    let status = second.status();
    assert_eq!(status.counters.retries, 0);
    assert_eq!(status.accounts[0].attempts, 0);
    assert_invariant(&status);
    second.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_stream_broken_mid_way_is_reported_to_the_policy() {
    // The upstream answers 200, sends `response.created`, then cuts the connection: the client
    // sees the first event and then an error, and the policy hears of the failure (after the
    // success it was told when the status line arrived).
    let gate = Arc::new(tokio::sync::Notify::new());
    let h = harness(
        MockConfig::default()
            .pause_after_first_event(gate.clone())
            .break_streams_after_first_event(),
        &["ws-a"],
        |_| {},
    )
    .await;
    let mut response = h.post("broken").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut got = String::from_utf8_lossy(&response.chunk().await.unwrap().unwrap()).into_owned();
    gate.notify_one(); // now the upstream cuts the stream
    let mut failed = false;
    for _ in 0..100 {
        match tokio::time::timeout(Duration::from_secs(20), response.chunk())
            .await
            .expect("the broken stream ends within 20 s")
        {
            Ok(Some(chunk)) => got.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(None) => break,
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(got.starts_with("event: response.created"), "{got}");
    assert!(!got.contains("response.completed"), "{got}");
    assert!(failed, "the client sees the stream fail, not a clean end");
    let status = h.stop().await;
    let c = status.counters;
    assert_eq!((c.ok, c.stream_errors, c.streams_open), (1, 1, 0), "{c:?}");
    let o = status.accounts[0].outcomes;
    assert_eq!((o.success, o.network_error), (1, 1), "{o:?}");
    assert!(status.accounts[0].health < 100);
    let last = status.accounts[0].last_error.clone().unwrap_or_default();
    assert!(last.contains("stream broke for acct-1"), "{last}");
    assert_invariant(&status);
}

#[tokio::test(flavor = "current_thread")]
async fn other_v1_endpoints_are_forwarded_with_method_query_and_account_headers() {
    // `/v1/<path>?<query>` → `{upstream}/<path>?<query>`, any method, with the account's
    // credentials; unknown upstream paths come back as the upstream's own answer.
    let h = harness(MockConfig::default(), &["ws-a"], |_| {}).await;
    let models = h
        .client
        .get(format!(
            "{}/models?client_version=0.169.0",
            h.proxy.base_url()
        ))
        .bearer_auth(h.token.secret().expose())
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    assert_eq!(models.text().await.unwrap(), r#"{"models":[]}"#);
    let missing = h
        .client
        .get(format!("{}/no-such-endpoint", h.proxy.base_url()))
        .bearer_auth(h.token.secret().expose())
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404, "the upstream's 404, passed through");
    let recorded = h.mock.recorded();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(
        (
            recorded[0].method.as_str(),
            recorded[0].path.as_str(),
            recorded[0].query.as_deref()
        ),
        ("GET", "/models", Some("client_version=0.169.0"))
    );
    assert_eq!(recorded[0].account_id.as_deref(), Some("ws-a"));
    assert!(
        recorded[0]
            .header_names
            .iter()
            .any(|n| n == "authorization")
    );
    let status = h.stop().await;
    assert_eq!(
        (
            status.counters.requests,
            status.counters.ok,
            status.counters.upstream_errors
        ),
        (2, 1, 1)
    );
    assert_invariant(&status);
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "current_thread")]
async fn an_exhausted_pool_answers_with_the_policys_exact_retry_after() {
    let h = harness(
        MockConfig::default().account(
            "ws-a",
            Behavior::RateLimited {
                retry_after: Duration::from_secs(20),
                times: u32::MAX,
            },
        ),
        &["ws-a"],
        |_| {},
    )
    .await;
    let json = |r: reqwest::Response| async move {
        let retry = r.headers()["retry-after"].to_str().unwrap().to_owned();
        let status = r.status();
        let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        (status, retry, v)
    };
    // The upstream's 429 (Retry-After: 20) on the only account: the answer carries the wait
    // the policy derived from it.
    let (status, retry, v) = json(h.post("first").send().await.unwrap()).await;
    assert_eq!(status, 429);
    assert_eq!(v["error"]["type"], "upstream_unavailable");
    assert_eq!(v["error"]["retry_after_ms"], 20_000);
    assert_eq!(retry, "20");
    // Now the pool is exhausted before any upstream call: the wait is the policy's, to the
    // millisecond — the time left until the cooldown it reports in /status ends.
    let until = h.proxy.status().policy.accounts[0].family_cooldowns[0]
        .until
        .as_millis();
    let before = unix_ms();
    let (status, retry, v) = json(h.post("second").send().await.unwrap()).await;
    let after = unix_ms();
    assert_eq!(status, 429);
    assert_eq!(v["error"]["type"], "pool_exhausted");
    let ms = v["error"]["retry_after_ms"].as_u64().unwrap();
    assert!(
        until - after <= ms && ms <= until - before,
        "{ms} not within [{}, {}]",
        until - after,
        until - before
    );
    assert_eq!(retry, ms.div_ceil(1000).to_string());
    assert_eq!(h.mock.stats().responses_requests, 1, "no upstream call");
    let status = h.stop().await;
    assert_eq!(status.counters.gave_up, 2);
    assert_invariant(&status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_access_token_is_refreshed_once_before_sending_and_saved_to_the_pool() {
    // The mock rejects any access token it did not issue through its token endpoint, and the
    // pool's token has expired: the proxy must refresh first (one exchange for 8 concurrent
    // requests), never send the expired token, and save the new tokens to the pool file.
    const CLIENTS: usize = 8;
    let mock = MockUpstream::start(MockConfig::default().account("ws-a", Behavior::NeedsRefresh))
        .await
        .unwrap();
    let expired = mock.synthetic_account("ws-a", "expired.owner@example.com", true);
    let pool_dir = tempfile::tempdir().unwrap();
    let store = auth_storage::PoolStore::new(pool_dir.path());
    examples::mock_upstream::seed_pool(&store, std::slice::from_ref(&expired)).unwrap();
    let token = WrapperToken::generate().unwrap();
    let mut options = ProxyOptions::new(mock.base_url(), token.clone());
    options.token_url = mock.token_url();
    let accounts = examples::proxy::load_pool_accounts(store.clone()).unwrap();
    let proxy = Arc::new(RotationProxy::start(options, accounts).await.unwrap());
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let (proxy, client, token) = (proxy.clone(), client.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(format!("{}/responses", proxy.base_url()))
                .bearer_auth(token.secret().expose())
                .body(serde_json::json!({"model": "gpt-5", "input": format!("e{i}")}).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert!(r.text().await.unwrap().contains(&format!("echo: e{i}\"")));
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .unwrap()
            .unwrap();
    }
    let proxy = Arc::into_inner(proxy).unwrap();
    let status = proxy.status();
    proxy.shutdown().await;
    let stats = mock.stats();
    assert_eq!(stats.accounts["ws-a"].refreshes, 1, "single-flight");
    assert_eq!(
        stats.accounts["ws-a"].unauthorized, 0,
        "the expired token was never sent"
    );
    assert_eq!(stats.accounts["ws-a"].ok, CLIENTS as u64);
    assert_eq!(status.counters.refreshes, 1);
    assert_eq!(status.counters.resends, 0);
    assert_eq!(status.accounts[0].outcomes.unauthorized, 0);
    let saved = store.load().unwrap().pool;
    assert_ne!(
        saved.accounts[0].tokens.access_token.expose(),
        expired.tokens.access_token.expose(),
        "the refreshed tokens were saved to the pool"
    );
    assert_invariant(&status);
    mock.shutdown().await;
}

const BASE_PATH: &str = "/backend-api/codex";

#[tokio::test(flavor = "current_thread")]
async fn request_targets_that_leave_the_upstream_base_path_get_400_and_are_never_sent() {
    let h = harness(
        MockConfig::default().base_path(BASE_PATH),
        &["ws-a"],
        |_| {},
    )
    .await;
    let auth = format!("authorization: Bearer {}", h.token.secret().expose());
    let mock = h.mock.addr();
    // (request line, whether the proxy's handler sees it; the rest hyper refuses itself).
    let hostile = [
        "POST /v1/../../x HTTP/1.1",
        "POST /v1/../oauth/token HTTP/1.1",
        "POST /v1/a/../../../oauth/token HTTP/1.1",
        "POST /v1/%2e%2e/%2e%2e/x HTTP/1.1",
        "POST /v1/%2E%2e/%2e%2E/oauth/token HTTP/1.1",
        "POST /v1/.%2e/.%2E/oauth/token HTTP/1.1",
        "POST /v1/%2e./%2E./oauth/token HTTP/1.1",
        "GET /v1/.. HTTP/1.1",
        "GET /v1/%2e%2e HTTP/1.1",
        "POST /v1/..%2f..%2foauth%2ftoken HTTP/1.1",
        "POST /v1/%2E%2E%2F%2E%2E%2Foauth%2Ftoken HTTP/1.1",
        "POST /v1/..%5c..%5coauth%5ctoken HTTP/1.1",
        "POST /v1/..%5C..%5Coauth HTTP/1.1",
        "POST /v1/%252e%252e/%252e%252e/oauth/token HTTP/1.1",
        "POST /v1/%252E%252E%252Foauth HTTP/1.1",
        "POST /v1/responses%00.json HTTP/1.1",
        "POST /v1/x%0d%0aHost:%20evil.example HTTP/1.1",
        "POST /v1/%1b[2J HTTP/1.1",
        "POST /v1/%zz HTTP/1.1",
        "POST /v1/%2 HTTP/1.1",
        "POST /v1/%ff%fe HTTP/1.1",
        "POST /v1/..;/..;/oauth/token HTTP/1.1",
        "POST /v1/.../oauth/token HTTP/1.1",
        "POST /v1/..%20/..%20/oauth/token HTTP/1.1",
        "POST /v1/%EF%BC%8E%EF%BC%8E/%EF%BC%8E%EF%BC%8E/oauth/token HTTP/1.1",
        "POST /v1/..%EF%BC%8F..%EF%BC%8Foauth%EF%BC%8Ftoken HTTP/1.1",
        "POST /v1/%E2%80%A5/%E2%80%A5/oauth/token HTTP/1.1",
        // NFKC look-alikes found by walking every character, not by a list.
        "POST /v1/%EF%B8%B0/%EF%B8%B0/oauth/token HTTP/1.1", // ︰ → ..
        "POST /v1/%EF%B8%99/oauth/token HTTP/1.1",           // ︙ → ...
        "POST /v1/..%CD%BE/..%CD%BE/oauth/token HTTP/1.1",   // ..; (U+037E → ;)
        "POST /v1/x%E2%84%85..%E2%84%85oauth HTTP/1.1",      // ℅ → c/o
        "POST /v1/%EF%BC%852e%EF%BC%852e/oauth/token HTTP/1.1", // ％2e → %2e
        "POST /v1/../../oauth/token?x=1 HTTP/1.1",
        "POST http://evil.example/v1/responses HTTP/1.1",
        "POST http://evil.example:8080/v1/../x HTTP/1.1",
        &format!("POST http://{mock}/oauth/token HTTP/1.1"),
        &format!("POST http://{mock}/v1/responses HTTP/1.1"),
        "POST https://evil.example/v1/responses HTTP/1.1",
        "CONNECT evil.example:443 HTTP/1.1",
        &format!("CONNECT {mock} HTTP/1.1"),
        // Refused by the HTTP parser before the proxy sees them; still never sent.
        "POST /v1/..\\..\\oauth\\token HTTP/1.1",
        "POST /v1/a b HTTP/1.1",
    ];
    let mut handled = 0;
    for line in hostile {
        let (code, text) = common::raw_exchange(
            h.proxy.addr(),
            &format!("{line}\r\nhost: evil.example\r\n{auth}"),
        )
        .await;
        assert_eq!(code, 400, "{line} → {text}");
        if text.contains("bad_request_target") {
            handled += 1;
            assert!(text.contains("application/json"), "{text}");
        }
    }
    // `:authority` is no HTTP/1.1 header name; the parser refuses it.
    let (code, _) = common::raw_exchange(
        h.proxy.addr(),
        &format!("POST /v1/responses HTTP/1.1\r\n:authority: evil.example\r\n{auth}"),
    )
    .await;
    assert_eq!(code, 400);
    assert!(
        h.mock.seen().is_empty(),
        "nothing reached the upstream: {:?}",
        h.mock.seen()
    );
    let c = h.proxy.status().counters;
    assert_eq!(c.rejected_bad_target, handled, "{c:?}");
    assert!(handled >= 30, "only {handled} reached the proxy's check");
    assert_eq!((c.requests, c.attempts), (0, 0), "{c:?}");

    // Targets that stay under the base path are forwarded there, normalized, whatever the
    // client claims about host, origin or path in its headers.
    for (target, expected) in [
        ("/v1/responses", "/backend-api/codex/responses"),
        ("/v1/a/../responses", "/backend-api/codex/responses"),
        ("/v1/./%2e/responses", "/backend-api/codex/responses"),
        ("/v1//responses", "/backend-api/codex/responses"),
        (
            "/v1/models?next=//evil.example/&a=%2e%2e",
            "/backend-api/codex/models?next=//evil.example/&a=%2e%2e",
        ),
        (
            "/v1/user@evil.example/x",
            "/backend-api/codex/user@evil.example/x",
        ),
        (
            "/v1/%40evil.example%3A1",
            "/backend-api/codex/@evil.example:1",
        ),
        // The HTTP parser drops a fragment; what is left stays under the base path.
        ("/v1/x#@evil.example/../..", "/backend-api/codex/x"),
    ] {
        let method = if target.starts_with("/v1/models") {
            "GET"
        } else {
            "POST"
        };
        let before = h.mock.seen().len();
        let (code, text) = common::raw_exchange_with_body(
            h.proxy.addr(),
            &format!(
                "{method} {target} HTTP/1.1\r\nhost: evil.example\r\n{auth}\r\n\
                 x-forwarded-host: evil.example\r\nx-forwarded-proto: http\r\n\
                 forwarded: host=evil.example\r\nx-original-url: /oauth/token\r\n\
                 x-rewrite-url: /oauth/token\r\ncontent-type: application/json"
            ),
            b"{}",
        )
        .await;
        assert!(code == 200 || code == 404, "{target} → {text}");
        let seen = h.mock.seen();
        assert_eq!(seen.len(), before + 1, "{target}: {seen:?}");
        let got = &seen[before];
        assert_eq!(got.target, expected, "{target}");
        assert_eq!(
            got.host.as_deref(),
            Some(mock.to_string().as_str()),
            "{target}: Host is the upstream's"
        );
    }
    let recorded = h.mock.recorded();
    for r in &recorded {
        for claim in [
            "x-forwarded-host",
            "x-forwarded-proto",
            "forwarded",
            "x-original-url",
            "x-rewrite-url",
        ] {
            assert!(
                !r.header_names.iter().any(|n| n == claim),
                "{claim} forwarded: {r:?}"
            );
        }
    }
    // The account's credentials went nowhere but under the base path.
    for seen in h.mock.seen() {
        if seen.authorization || seen.account_id.is_some() {
            assert!(
                seen.target.starts_with("/backend-api/codex/"),
                "credentials sent to {seen:?}"
            );
        }
    }
    let status = h.stop().await;
    assert_invariant(&status);
}

#[tokio::test(flavor = "current_thread")]
async fn methods_the_proxy_does_not_forward_get_405_and_are_never_sent() {
    let h = harness(
        MockConfig::default().base_path(BASE_PATH),
        &["ws-a"],
        |_| {},
    )
    .await;
    let auth = format!("authorization: Bearer {}", h.token.secret().expose());
    // A path target with CONNECT would become `CONNECT host:port` in the HTTP client: a
    // tunnel request carrying the account's credentials outside the base path.
    let refused = [
        "CONNECT /v1/x HTTP/1.1",
        "CONNECT /v1/responses HTTP/1.1",
        "CONNECT /v1/../x HTTP/1.1",
        "TRACE /v1/responses HTTP/1.1",
        "OPTIONS /v1/responses HTTP/1.1",
        "PROPFIND /v1/responses HTTP/1.1",
        "MKCOL /v1/x HTTP/1.1",
        "BREW /v1/responses HTTP/1.1",
        "post /v1/responses HTTP/1.1",
    ];
    for line in refused {
        let (code, text) = common::raw_exchange_with_body(
            h.proxy.addr(),
            &format!("{line}\r\nhost: evil.example\r\n{auth}\r\ncontent-type: application/json"),
            b"{}",
        )
        .await;
        assert_eq!(code, 405, "{line} → {text}");
        let lower = text.to_ascii_lowercase();
        assert!(
            lower.contains("\r\nallow: get, head, post, put, patch, delete\r\n"),
            "{line} → {text}"
        );
        assert!(lower.contains("application/json"), "{text}");
        assert!(text.contains(r#""type":"method_not_allowed""#), "{text}");
    }
    assert!(
        h.mock.seen().is_empty(),
        "nothing reached the upstream: {:?}",
        h.mock.seen()
    );
    let c = h.proxy.status().counters;
    assert_eq!(c.rejected_method, refused.len() as u64, "{c:?}");
    assert_eq!((c.requests, c.attempts), (0, 0), "{c:?}");

    // The methods of an HTTP API are forwarded as they came, under the base path.
    for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] {
        let before = h.mock.seen().len();
        let (code, text) = common::raw_exchange_with_body(
            h.proxy.addr(),
            &format!("{method} /v1/models HTTP/1.1\r\nhost: evil.example\r\n{auth}"),
            b"",
        )
        .await;
        assert_ne!(code, 405, "{method} → {text}");
        let seen = h.mock.seen();
        assert_eq!(seen.len(), before + 1, "{method}: {seen:?}");
        assert_eq!(seen[before].method, method);
        assert_eq!(seen[before].target, "/backend-api/codex/models");
    }
    let status = h.stop().await;
    assert_eq!(status.counters.rejected_method, refused.len() as u64);
    assert_eq!(status.counters.requests, 6);
    assert_invariant(&status);
}

/// Polls `/status` until `done` holds (bounded: 5 s), returning the last counters.
async fn counters_until(
    proxy: &RotationProxy,
    done: impl Fn(&examples::proxy::ProxyCounters) -> bool,
) -> examples::proxy::ProxyCounters {
    let mut c = proxy.status().counters;
    for _ in 0..500 {
        c = proxy.status().counters;
        if done(&c) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_share_one_budget_over_budget_is_503_and_bytes_come_back() {
    const MIB: usize = 1024 * 1024;
    let gate = Arc::new(tokio::sync::Notify::new());
    let h = harness(
        MockConfig::default().stall_before_answer(gate.clone()),
        &["ws-a"],
        |o| {
            o.body_limit = 2 * MIB;
            o.body_budget = 3 * MIB;
        },
    )
    .await;
    let token = h.token.secret().expose().to_owned();
    let addr = h.proxy.addr();

    // A: 1.5 MiB, held by the stalled upstream (and so by the proxy).
    let a = tokio::spawn({
        let token = token.clone();
        async move { common::upload(addr, &token, 3 * MIB / 2, false, common::Shape::Padded).await }
    });
    let c = counters_until(&h.proxy, |c| c.attempts == 1).await;
    assert_eq!(c.attempts, 1, "A reached the upstream: {c:?}");
    assert_eq!(c.body_bytes_held, (3 * MIB / 2) as u64, "{c:?}");

    // B: 2 MiB declared, within the cap but over what is left → 503 up front.
    let (code, text) = common::upload(addr, &token, 2 * MIB, false, common::Shape::Padded).await;
    assert_eq!(code, 503, "{text}");
    assert!(text.contains("retry-after: 1\r\n"), "{text}");
    assert!(text.contains("\"proxy_busy\""), "{text}");
    // C: the same without a length → 503 once it grows past what is left.
    let (code, text) = common::upload(addr, &token, 2 * MIB, true, common::Shape::Padded).await;
    assert_eq!(code, 503, "{text}");
    // D: a declared length over the cap → 413 up front, whatever the budget holds; without
    // a length the budget runs out first here → 503.
    let (code, _) = common::upload(addr, &token, 2 * MIB + 1, false, common::Shape::Padded).await;
    assert_eq!(code, 413);
    let (code, _) = common::upload(addr, &token, 2 * MIB + 1, true, common::Shape::Padded).await;
    assert_eq!(code, 503);
    let c = h.proxy.status().counters;
    assert_eq!(
        (c.attempts, c.requests),
        (1, 1),
        "refusals never reach the upstream"
    );

    // A is answered; its bytes come back, and B now fits.
    gate.notify_one();
    let (code, text) = a.await.unwrap();
    assert_eq!(code, 200, "{text}");
    let c = counters_until(&h.proxy, |c| c.body_bytes_held == 0).await;
    assert_eq!(c.body_bytes_held, 0, "{c:?}");
    // With the budget free, a streamed body is cut at the cap.
    let (code, _) = common::upload(addr, &token, 2 * MIB + 1, true, common::Shape::Padded).await;
    assert_eq!(code, 413);
    gate.notify_one();
    let (code, text) = common::upload(addr, &token, 2 * MIB, true, common::Shape::Padded).await;
    assert_eq!(code, 200, "{text}");

    // A client that goes away while its body is held gives the bytes back.
    let abandoned = tokio::spawn({
        let token = token.clone();
        async move { common::upload(addr, &token, 2 * MIB, false, common::Shape::Padded).await }
    });
    let c = counters_until(&h.proxy, |c| c.attempts == 3).await;
    assert_eq!(c.body_bytes_held, (2 * MIB) as u64, "{c:?}");
    abandoned.abort();
    let c = counters_until(&h.proxy, |c| c.cancelled == 1 && c.body_bytes_held == 0).await;
    assert_eq!((c.cancelled, c.body_bytes_held), (1, 0), "{c:?}");
    gate.notify_one();

    let bodies: Vec<u64> = h.mock.recorded().iter().map(|r| r.body_len).collect();
    assert_eq!(
        bodies[..2],
        [(3 * MIB / 2) as u64, (2 * MIB) as u64],
        "accepted bodies reached the upstream whole"
    );
    let status = h.stop().await;
    let c = status.counters;
    assert_eq!(
        (c.rejected_busy, c.rejected_too_large, c.ok, c.requests),
        (3, 2, 2, 3),
        "{c:?}"
    );
    assert_invariant(&status);
}

#[tokio::test(flavor = "current_thread")]
async fn upstream_redirects_go_back_to_the_client_and_are_never_followed() {
    let h = harness(
        MockConfig::default().base_path(BASE_PATH),
        &["ws-a"],
        |_| {},
    )
    .await;
    let mock = h.mock.addr();
    for to in [
        "/oauth/token".to_owned(),
        format!("http://{mock}/oauth/token"),
        "http://127.0.0.1:9/elsewhere".to_owned(),
    ] {
        let (code, text) = common::raw_exchange(
            h.proxy.addr(),
            &format!(
                "POST /v1/redirect?to={to} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}",
                h.token.secret().expose()
            ),
        )
        .await;
        assert_eq!(code, 307, "{text}");
        assert!(text.contains(&format!("location: {to}\r\n")), "{text}");
    }
    let seen = h.mock.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(
        seen.iter()
            .all(|s| s.target.starts_with("/backend-api/codex/redirect?")),
        "a redirect was followed: {seen:?}"
    );
    let status = h.stop().await;
    assert_invariant(&status);
}

/// A loopback upstream that reads only the request head, answers `200 {}` at once and then
/// keeps each connection open without reading the body until `release` is notified: the
/// proxy's HTTP client is then still uploading the body after the answer went back.
async fn early_answering_upstream(
    release: Arc<tokio::sync::Notify>,
) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((mut socket, _)) = accepted else { return };
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    // Bounded: a request head is far below 64 KiB.
                    while head.len() < 65_536 && !head.ends_with(b"\r\n\r\n") {
                        if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                            break;
                        }
                        head.push(byte[0]);
                    }
                    let _ = socket
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                              content-length: 2\r\n\r\n{}",
                        )
                        .await;
                    held.push(socket);
                }
                () = release.notified() => {
                    drop(std::mem::take(&mut held));
                }
            }
        }
    });
    (base, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_bytes_stay_counted_while_the_upload_outlives_the_request() {
    const MIB: usize = 1024 * 1024;
    // Bodies far larger than what loopback socket buffers absorb (a few MiB), so most of
    // each one is still in the proxy's HTTP client when the answer comes back.
    const BODY: usize = 40 * MIB;
    let release = Arc::new(tokio::sync::Notify::new());
    let (upstream, task) = early_answering_upstream(release.clone()).await;
    let mut accounts = Accounts::new();
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let s = mock.synthetic_account("ws-a", "owner.a@example.com", false);
    accounts
        .push(Some(&s.email), None, s.tokens.clone())
        .unwrap();
    let token = WrapperToken::generate().unwrap();
    let mut options = ProxyOptions::new(upstream, token.clone());
    options.body_limit = 64 * MIB;
    options.body_budget = 64 * MIB;
    let proxy = RotationProxy::start(options, accounts).await.unwrap();
    let addr = proxy.addr();
    let secret = token.secret().expose().to_owned();

    // The upstream answers before reading: the client gets its 200, the upload goes on.
    let (code, text) = common::upload(addr, &secret, BODY, false, common::Shape::Padded).await;
    assert_eq!(code, 200, "{text}");
    let held = proxy.status().counters.body_bytes_held;
    assert!(
        held > (BODY - 16 * MIB) as u64,
        "the answered request's body is still in memory, so still counted: {held}"
    );
    // So a second body of the same size does not fit: 503, not another 40 MiB in memory.
    let (code, text) = common::upload(addr, &secret, BODY, false, common::Shape::Padded).await;
    assert_eq!(code, 503, "{text}");

    // Once the upstream lets go, the memory and its budget come back (bounded wait).
    release.notify_one();
    let c = counters_until(&proxy, |c| c.body_bytes_held == 0).await;
    assert_eq!(c.body_bytes_held, 0, "{c:?}");
    proxy.shutdown().await;
    mock.shutdown().await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_declares_the_budget_and_stalls_holds_nothing_and_times_out() {
    const MIB: usize = 1024 * 1024;
    let h = harness(MockConfig::default(), &["ws-a"], |o| {
        o.body_limit = 8 * MIB;
        o.body_budget = 8 * MIB;
        o.body_idle_timeout = Duration::from_secs(2);
    })
    .await;
    let token = h.token.secret().expose().to_owned();
    let addr = h.proxy.addr();
    // Headers declaring the whole budget, then silence.
    let mut pinned = tokio::net::TcpStream::connect(addr).await.unwrap();
    pinned
        .write_all(
            format!(
                "POST /v1/responses HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
                 content-type: application/json\r\ncontent-length: {}\r\n\r\n",
                8 * MIB
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Everyone else still gets through.
    let r = h.post("hello").send().await.unwrap();
    assert_eq!(r.status(), 200, "the stalled declaration pinned the budget");
    let _ = r.bytes().await;
    assert!(h.proxy.status().counters.body_bytes_held < MIB as u64);
    // The stalled request is answered 408 after the idle timeout (bounded read).
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = pinned.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer to the stalled request");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let c = counters_until(&h.proxy, |c| c.body_bytes_held == 0).await;
    assert_eq!(c.body_bytes_held, 0);
    h.stop().await;
}
