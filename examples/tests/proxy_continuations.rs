//! A request that continues a conversation (`previous_response_id`) goes to the account
//! that created that response, learned from the stream; when that account cannot serve, the
//! client gets a clear error and no other account is asked (loopback mock upstream).

use std::time::Duration;

use examples::mock_upstream::{Behavior, MockConfig, MockUpstream};
use examples::proxy::{Accounts, ProxyOptions, RotationProxy, WrapperToken};
use http::StatusCode;

struct Setup {
    mock: MockUpstream,
    proxy: RotationProxy,
    token: WrapperToken,
    client: reqwest::Client,
}

struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    body: String,
}

impl Answer {
    /// The id of the response this answer created (its `response.created` event).
    fn response_id(&self) -> String {
        self.body
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            .find(|v| v["type"] == "response.created")
            .and_then(|v| v["response"]["id"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("no response.created in {}", self.body))
    }

    fn error_type(&self) -> String {
        let value: serde_json::Value = serde_json::from_str(&self.body).unwrap_or_default();
        value["error"]["type"].as_str().unwrap_or("").to_owned()
    }
}

async fn start(ids: &[&str]) -> Setup {
    start_with(MockConfig::default(), ids, |_| {}).await
}

impl Setup {
    async fn ask(&self, previous: Option<&str>) -> Answer {
        let mut body = serde_json::json!({"model": "gpt-5", "input": "hi", "stream": true});
        if let Some(previous) = previous {
            body["previous_response_id"] = previous.into();
        }
        let response = tokio::time::timeout(
            Duration::from_secs(20),
            self.client
                .post(format!("{}/responses", self.proxy.base_url()))
                .bearer_auth(self.token.secret().expose())
                .header("content-type", "application/json")
                .body(body.to_string())
                .send(),
        )
        .await
        .expect("answered within 20 s")
        .unwrap();
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.text().await.unwrap();
        Answer {
            status,
            retry_after,
            body,
        }
    }

    /// Requests each account was asked to serve (answered ok, limited or refused).
    fn asked(&self, id: &str) -> u64 {
        self.mock.stats().accounts.get(id).map_or(0, |c| {
            c.ok + c.rate_limited + c.unauthorized + c.server_errors
        })
    }
}

#[tokio::test]
async fn a_continuation_goes_to_the_account_that_created_the_response() {
    let s = start(&["ws-1", "ws-2"]).await;
    let first = s.ask(None).await; // ws-1 (least recently used)
    let second = s.ask(None).await; // ws-2
    assert_eq!(
        (first.status, second.status),
        (StatusCode::OK, StatusCode::OK)
    );
    assert_eq!((s.asked("ws-1"), s.asked("ws-2")), (1, 1));
    // Least recently used would pick ws-1 next; a continuation of ws-2's response goes to
    // ws-2, three times in a row, and one of ws-1's to ws-1.
    for _ in 0..3 {
        assert_eq!(
            s.ask(Some(&second.response_id())).await.status,
            StatusCode::OK
        );
    }
    assert_eq!((s.asked("ws-1"), s.asked("ws-2")), (1, 4));
    assert_eq!(
        s.ask(Some(&first.response_id())).await.status,
        StatusCode::OK
    );
    assert_eq!((s.asked("ws-1"), s.asked("ws-2")), (2, 4));
    // The continued responses are learned too: a chain stays on its account.
    let chained = s.ask(Some(&second.response_id())).await;
    assert_eq!(
        s.ask(Some(&chained.response_id())).await.status,
        StatusCode::OK
    );
    assert_eq!((s.asked("ws-1"), s.asked("ws-2")), (2, 6));
    // An id the proxy never saw (another proxy's, or from before a restart) is routed
    // like any request: the upstream decides.
    assert_eq!(s.ask(Some("resp_unknown")).await.status, StatusCode::OK);
    assert_eq!(s.asked("ws-1") + s.asked("ws-2"), 9);
    s.proxy.shutdown().await;
    s.mock.shutdown().await;
}

#[tokio::test]
async fn a_busy_owner_gets_a_clear_429_and_no_other_account_is_asked() {
    let s = start(&["ws-1", "ws-2"]).await;
    let owned = s.ask(None).await; // ws-1
    assert_eq!(owned.status, StatusCode::OK);
    s.mock.set_account(
        "ws-1",
        Behavior::RateLimited {
            retry_after: Duration::from_secs(30),
            times: u32::MAX,
        },
    );
    // The owner answers 429: the client gets it, the request is not moved to ws-2.
    let limited = s.ask(Some(&owned.response_id())).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!((s.asked("ws-1"), s.asked("ws-2")), (2, 0));
    // While it cools down: a clear error with the exact wait, without asking anyone.
    let busy = s.ask(Some(&owned.response_id())).await;
    assert_eq!(busy.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        busy.error_type(),
        "continuation_account_busy",
        "{}",
        busy.body
    );
    let wait: u64 = busy.retry_after.as_deref().unwrap().parse().unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    assert_eq!((s.asked("ws-1"), s.asked("ws-2")), (2, 0));
    // Other requests are served by ws-2 meanwhile.
    assert_eq!(s.ask(None).await.status, StatusCode::OK);
    assert_eq!(s.asked("ws-2"), 1);
    s.proxy.shutdown().await;
    s.mock.shutdown().await;
}

#[tokio::test]
async fn a_gone_owner_is_a_conflict_not_a_request_to_another_account() {
    let s = start(&["ws-1", "ws-2"]).await;
    let owned = s.ask(None).await; // ws-1
    s.mock.set_account("ws-1", Behavior::TokenInvalidated);
    // The owner's login is revoked: the upstream's own answer reaches the client.
    let revoked = s.ask(Some(&owned.response_id())).await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED, "{}", revoked.body);
    assert_eq!(s.asked("ws-2"), 0);
    // From then on the owner is out of rotation: 409, nothing sent upstream.
    let before = s.asked("ws-1");
    let gone = s.ask(Some(&owned.response_id())).await;
    assert_eq!(gone.status, StatusCode::CONFLICT, "{}", gone.body);
    assert_eq!(gone.error_type(), "continuation_account_unavailable");
    assert!(
        gone.body.contains("start a new conversation"),
        "{}",
        gone.body
    );
    assert_eq!((s.asked("ws-1"), s.asked("ws-2")), (before, 0));
    s.proxy.shutdown().await;
    s.mock.shutdown().await;
}

async fn start_with(
    config: MockConfig,
    ids: &[&str],
    tune: impl FnOnce(&mut ProxyOptions),
) -> Setup {
    let mock = MockUpstream::start(config).await.unwrap();
    let mut accounts = Accounts::new();
    for id in ids {
        let s = mock.synthetic_account(id, &format!("owner.{id}@example.com"), false);
        accounts.push(Some(&s.email), None, s.tokens).unwrap();
    }
    let token = WrapperToken::generate().unwrap();
    let mut options = ProxyOptions::new(mock.base_url(), token.clone());
    options.token_url = mock.token_url();
    options.policy.session_ttl = None;
    tune(&mut options);
    let proxy = RotationProxy::start(options, accounts).await.unwrap();
    Setup {
        mock,
        proxy,
        token,
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
    }
}

/// The Codex backend hands out `x-codex-turn-state` and the Codex CLI sends it back with the
/// next requests of the turn: those go to the account that issued it, and the header
/// reaches the client (it is not usage).
#[tokio::test]
async fn a_turn_state_keeps_the_turn_on_the_account_that_issued_it() {
    let s = start_with(
        MockConfig::default().turn_state(),
        &["ws-1", "ws-2"],
        |_| {},
    )
    .await;
    let response = s
        .client
        .post(format!("{}/responses", s.proxy.base_url()))
        .bearer_auth(s.token.secret().expose())
        .body(r#"{"model":"gpt-5","input":"hi","stream":true}"#)
        .send()
        .await
        .unwrap();
    let state = response.headers()["x-codex-turn-state"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(state, "ts-ws-1");
    let _ = response.text().await;
    for _ in 0..3 {
        let next = s
            .client
            .post(format!("{}/responses", s.proxy.base_url()))
            .bearer_auth(s.token.secret().expose())
            .header("x-codex-turn-state", &state)
            .body(r#"{"model":"gpt-5","input":"tool output","stream":true}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(next.status(), StatusCode::OK);
        let _ = next.text().await;
    }
    assert_eq!((s.asked("ws-1"), s.asked("ws-2")), (4, 0));
    // A request without it is rotated as usual.
    assert_eq!(s.ask(None).await.status, StatusCode::OK);
    assert_eq!(s.asked("ws-2"), 1);
    s.proxy.shutdown().await;
    s.mock.shutdown().await;
}

/// A response the overflow source created is continued there, never on an account (which
/// cannot know it), even once the accounts can serve again.
#[tokio::test]
async fn a_continuation_of_an_overflow_response_goes_back_to_the_overflow_source() {
    use examples::mock_openai::MockOpenAi;
    use examples::proxy::OverflowSource;

    let openai = MockOpenAi::start().await.unwrap();
    let limited = || Behavior::RateLimited {
        retry_after: Duration::from_secs(1),
        times: 1,
    };
    let config = MockConfig::default()
        .account("ws-1", limited())
        .account("ws-2", limited());
    let base = openai.base_url();
    let s = start_with(config, &["ws-1", "ws-2"], |o| {
        o.policy.max_wait = Duration::ZERO; // answer at once when every account cools
        o.overflow = Some(OverflowSource::new(
            base,
            auth_core::Secret::new("sk-test-overflow".to_owned()),
        ));
    })
    .await;
    let first = s.ask(None).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(openai.requests().len(), 1);
    let created = first.response_id();
    // The accounts' cooldowns end; the continuation still goes to the overflow source.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before = s.asked("ws-1") + s.asked("ws-2");
    let next = s.ask(Some(&created)).await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.body);
    assert_eq!(openai.requests().len(), 2);
    assert_eq!(s.asked("ws-1") + s.asked("ws-2"), before);
    // And an ordinary request goes to an account again.
    assert_eq!(s.ask(None).await.status, StatusCode::OK);
    assert_eq!(openai.requests().len(), 2);
    s.proxy.shutdown().await;
    s.mock.shutdown().await;
}

/// An account whose pacing bucket is empty for less than `max_wait` is waited for, not
/// refused (and not handed to the overflow source).
#[tokio::test]
async fn pacing_alone_is_waited_for() {
    let s = start_with(MockConfig::default(), &["ws-1"], |o| {
        o.policy.bucket = Some(rotation_policy::TokenBucket::new(
            1,
            Duration::from_millis(800),
        ));
    })
    .await;
    let started = std::time::Instant::now();
    assert_eq!(s.ask(None).await.status, StatusCode::OK);
    let second = s.ask(None).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert!(started.elapsed() >= Duration::from_millis(700));
    assert_eq!(s.asked("ws-1"), 2);
    // A wait is not a retry: each request was sent once.
    let counters = s.proxy.status().counters;
    assert_eq!((counters.attempts, counters.retries), (2, 0));
    s.proxy.shutdown().await;
    s.mock.shutdown().await;
}

/// The proxy's own refusals carry the pool's usage headers too: when the pool is spent, a
/// client's rate-limit display says so.
#[tokio::test]
async fn the_proxys_own_429_carries_the_pools_usage() {
    use examples::mock_upstream::{MockUsage, MockWindow};

    let full = MockUsage::new(MockWindow::new(100.0, 0.0, 300, Duration::from_secs(3600)));
    let config = MockConfig::default()
        .usage("ws-1", full.clone())
        .usage("ws-2", full);
    let s = start_with(config, &["ws-1", "ws-2"], |_| {}).await;
    let mut last = None;
    for _ in 0..3 {
        let response = s
            .client
            .post(format!("{}/responses", s.proxy.base_url()))
            .bearer_auth(s.token.secret().expose())
            .body(r#"{"model":"gpt-5","input":"hi","stream":true}"#)
            .send()
            .await
            .unwrap();
        let headers = response.headers().clone();
        let status = response.status();
        let body = response.text().await.unwrap();
        last = Some((status, headers, body));
        tokio::time::sleep(Duration::from_millis(300)).await; // past the usage cache
    }
    let (status, headers, body) = last.unwrap();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(
        !body.contains("usage_limit_reached"),
        "the proxy's own answer: {body}"
    );
    assert_eq!(
        headers["x-codex-primary-used-percent"], "100",
        "{headers:?}"
    );
    s.proxy.shutdown().await;
    s.mock.shutdown().await;
}
