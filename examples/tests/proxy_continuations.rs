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
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let mut accounts = Accounts::new();
    for id in ids {
        let s = mock.synthetic_account(id, &format!("owner.{id}@example.com"), false);
        accounts.push(Some(&s.email), None, s.tokens).unwrap();
    }
    let token = WrapperToken::generate().unwrap();
    let mut options = ProxyOptions::new(mock.base_url(), token.clone());
    options.token_url = mock.token_url();
    options.policy.session_ttl = None; // least recently used alone decides the rest
    let proxy = RotationProxy::start(options, accounts).await.unwrap();
    Setup {
        mock,
        proxy,
        token,
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
    }
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
