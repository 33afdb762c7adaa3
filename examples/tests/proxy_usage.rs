//! The rotation proxy steering by the usage the upstream reports (loopback mock upstream):
//! an account at or above the usage threshold gets no request before its window resets,
//! whether the usage came in headers or in the stream's `codex.rate_limits` event; clients
//! never see a 429 while an account has headroom; `/status` shows the usage; a restarted
//! proxy remembers it; and clients are told the pool's usage, never one account's.

use std::time::Duration;

use auth_storage::PoolStore;
use examples::mock_upstream::{
    MockConfig, MockUpstream, MockUsage, MockWindow, UsageChannel, seed_pool,
};
use examples::proxy::{Accounts, ProxyOptions, RotationProxy, StatusReport, WrapperToken};
use http::{HeaderMap, StatusCode};

const HOUR: Duration = Duration::from_secs(3600);

/// Longer than the proxy's pool-usage cache (one sync interval, 250 ms), so the next answer
/// carries usage made after everything recorded so far.
const PAST_USAGE_TTL: Duration = Duration::from_millis(400);

struct Setup {
    mock: MockUpstream,
    proxy: RotationProxy,
    token: WrapperToken,
    client: reqwest::Client,
}

/// One answer as the client saw it.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    /// The `data` of every `codex.rate_limits` event in the body.
    fn usage_events(&self) -> Vec<serde_json::Value> {
        self.body
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            .filter(|v| v["type"] == "codex.rate_limits")
            .collect()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Every usage header the client got, sorted, as `name: value`.
    fn usage_headers(&self) -> Vec<String> {
        let mut shown: Vec<String> = self
            .headers
            .iter()
            .filter(|(k, _)| k.as_str().starts_with("x-codex-"))
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
            .collect();
        shown.sort_unstable();
        shown
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A proxy over accounts given in code (no pool file), policy defaults (least recently
/// used first, usage threshold 100 %: the learned margin decides).
async fn start(config: MockConfig, ids: &[&str]) -> Setup {
    let mock = MockUpstream::start(config).await.unwrap();
    let mut accounts = Accounts::new();
    for id in ids {
        let s = mock.synthetic_account(id, &format!("owner.{id}@example.com"), false);
        accounts.push(Some(&s.email), None, s.tokens).unwrap();
    }
    let token = WrapperToken::generate().unwrap();
    let mut options = ProxyOptions::new(mock.base_url(), token.clone());
    options.token_url = mock.token_url();
    assert_eq!(options.policy.usage_threshold, 100);
    let proxy = RotationProxy::start(options, accounts).await.unwrap();
    Setup {
        mock,
        proxy,
        token,
        client: client(),
    }
}

async fn ask(
    client: &reqwest::Client,
    proxy: &RotationProxy,
    token: &WrapperToken,
    stream: bool,
) -> Answer {
    let response = tokio::time::timeout(
        Duration::from_secs(20),
        client
            .post(format!("{}/responses", proxy.base_url()))
            .bearer_auth(token.secret().expose())
            .header("content-type", "application/json")
            .body(
                serde_json::json!({"model": "gpt-5", "input": "hi", "stream": stream}).to_string(),
            )
            .send(),
    )
    .await
    .expect("answered within 20 s")
    .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.text().await.unwrap();
    Answer {
        status,
        headers,
        body,
    }
}

impl Setup {
    async fn ask(&self) -> Answer {
        ask(&self.client, &self.proxy, &self.token, true).await
    }

    async fn ask_json(&self) -> Answer {
        ask(&self.client, &self.proxy, &self.token, false).await
    }

    fn served(&self, id: &str) -> u64 {
        self.mock.stats().accounts.get(id).map_or(0, |c| c.ok)
    }

    async fn stop(self) -> StatusReport {
        let status = self.proxy.status();
        self.proxy.shutdown().await;
        self.mock.shutdown().await;
        status
    }
}

fn ms(unix_secs: i64) -> u64 {
    u64::try_from(unix_secs).unwrap() * 1000
}

/// `ws-a` reports 99 % after its first answer (90 % + 9 per request); `ws-b` has room.
fn one_nearly_full(channel: UsageChannel) -> MockConfig {
    MockConfig::default()
        .usage(
            "ws-a",
            MockUsage::new(MockWindow::new(90.0, 9.0, 300, HOUR)).via(channel),
        )
        .usage(
            "ws-b",
            MockUsage::new(MockWindow::new(10.0, 1.0, 300, 2 * HOUR)).via(channel),
        )
}

/// The account at 99 % (two more requests could overflow its window) is not sent another request before its
/// reset, and `/status` shows why and until when.
async fn an_account_over_the_threshold_rests_until_its_reset(channel: UsageChannel) {
    let s = start(one_nearly_full(channel), &["ws-a", "ws-b"]).await;
    for i in 0..8 {
        let answer = s.ask().await;
        assert_eq!(answer.status, 200, "request {i}: {}", answer.body);
    }
    // Least recently used first: ws-a served the first request, then never again.
    assert_eq!((s.served("ws-a"), s.served("ws-b")), (1, 7), "{channel:?}");
    let a = s.mock.usage("ws-a").unwrap().primary;
    assert_eq!(a.used_percent, 99.0);
    let stats = s.mock.stats();
    assert_eq!(stats.accounts["ws-a"].rate_limited, 0);

    let status = s.stop().await;
    let usage = &status.accounts[0].usage;
    assert_eq!(usage.len(), 1, "{usage:?}");
    assert_eq!(usage[0].limit.limit_id, "codex");
    let primary = usage[0].limit.primary.as_ref().unwrap();
    assert_eq!(primary.used_percent, 99.0);
    assert_eq!(primary.window_minutes, Some(300));
    assert_eq!(primary.resets_at_ms, Some(ms(a.reset_at)));
    assert_eq!(usage[0].blocked_until_ms, Some(ms(a.reset_at)));
    let b = &status.accounts[1].usage[0];
    assert_eq!(b.blocked_until_ms, None);
    assert_eq!(b.limit.primary.as_ref().unwrap().used_percent, 17.0);
    // Nothing was cooled down for it: the usage report alone keeps it out.
    assert_eq!(status.accounts[0].outcomes.rate_limited, 0);
    assert!(status.accounts[0].rate_limited_families.is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn an_account_reported_at_99_percent_in_headers_gets_no_request_before_its_reset() {
    an_account_over_the_threshold_rests_until_its_reset(UsageChannel::Headers).await;
}

#[tokio::test(flavor = "current_thread")]
async fn usage_reported_only_in_the_stream_event_steers_too() {
    an_account_over_the_threshold_rests_until_its_reset(UsageChannel::Event).await;
}

/// Three accounts filling up 10 % per request: 27 requests are answered 200 and the
/// upstream never answers 429 — each account leaves the rotation at 90 %, when two more
/// requests' worth (the policy learned a request uses 10 points, and assumes a report lags
/// one request, as real usage headers do; this mock's are exact) could overflow its window
/// — and only then does the client get the proxy's 429, with the wait until the earliest
/// reset.
#[tokio::test(flavor = "current_thread")]
async fn the_client_sees_no_429_while_any_account_has_headroom() {
    let ids = ["ws-a", "ws-b", "ws-c"];
    let mut config = MockConfig::default();
    for (i, id) in ids.iter().enumerate() {
        let resets_in = HOUR * (u32::try_from(i).unwrap() + 1);
        config = config.usage(
            *id,
            MockUsage::new(MockWindow::new(0.0, 10.0, 300, resets_in)).via(UsageChannel::Both),
        );
    }
    let s = start(config, &ids).await;
    for i in 0..27 {
        let answer = s.ask().await;
        assert_eq!(answer.status, 200, "request {i}: {}", answer.body);
    }
    let stats = s.mock.stats();
    for id in ids {
        assert_eq!(stats.accounts[id].ok, 9, "{id}: {stats:?}");
        assert_eq!(stats.accounts[id].rate_limited, 0, "{id}");
        assert_eq!(s.mock.usage(id).unwrap().primary.used_percent, 90.0);
    }
    let refused = s.ask().await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    let error: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
    assert_eq!(error["error"]["type"], "pool_exhausted");
    let earliest = ms(s.mock.usage("ws-a").unwrap().primary.reset_at);
    let wait = error["error"]["retry_after_ms"].as_u64().unwrap();
    let now_ms = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    assert!(
        wait <= earliest - now_ms + 1000 && wait + 5_000 >= earliest - now_ms,
        "waits until the earliest reset: {wait} ms vs {} ms",
        earliest - now_ms
    );
    // Nothing more reached the upstream.
    assert_eq!(s.mock.stats().responses_requests, 27);
    tokio::time::sleep(PAST_USAGE_TTL).await;
    let status = s.stop().await;
    assert_eq!(status.counters.gave_up, 1);
    // The pool is spent: every account counts as 100 % (what is left cannot be used).
    let pool = &status.pool_usage.limits[0];
    assert_eq!(pool.primary.as_ref().unwrap().used_percent, 100.0);
}

/// Clients are told the pool's usage (mean of the accounts, reset at the earliest), in
/// headers and in the stream's event, never the account that served them.
#[tokio::test(flavor = "current_thread")]
async fn clients_see_the_pools_usage_not_the_serving_accounts() {
    let config = MockConfig::default()
        .usage(
            "ws-hot",
            MockUsage::new(MockWindow::new(80.0, 0.0, 300, HOUR))
                .secondary(MockWindow::new(30.0, 0.0, 10_080, 48 * HOUR))
                .via(UsageChannel::Both),
        )
        .usage(
            "ws-cool",
            MockUsage::new(MockWindow::new(20.0, 0.0, 300, 3 * HOUR))
                .secondary(MockWindow::new(10.0, 0.0, 10_080, 24 * HOUR))
                .via(UsageChannel::Both),
        );
    let s = start(config, &["ws-hot", "ws-cool"]).await;
    // One answer from each, so the pool knows both.
    for _ in 0..2 {
        assert_eq!(s.ask().await.status, 200);
    }
    assert_eq!((s.served("ws-hot"), s.served("ws-cool")), (1, 1));
    tokio::time::sleep(PAST_USAGE_TTL).await;
    let hot = s.mock.usage("ws-hot").unwrap();
    let cool = s.mock.usage("ws-cool").unwrap();
    // Least recently used: ws-hot serves this one.
    let answer = s.ask().await;
    assert_eq!(answer.status, 200);
    assert_eq!(s.served("ws-hot"), 2);
    let primary_reset = hot.primary.reset_at.min(cool.primary.reset_at);
    let secondary_reset = cool.secondary.unwrap().reset_at;
    assert_eq!(
        answer.usage_headers(),
        [
            format!("x-codex-primary-reset-at: {primary_reset}"),
            "x-codex-primary-used-percent: 50".to_owned(),
            "x-codex-primary-window-minutes: 300".to_owned(),
            format!("x-codex-secondary-reset-at: {secondary_reset}"),
            "x-codex-secondary-used-percent: 20".to_owned(),
            "x-codex-secondary-window-minutes: 10080".to_owned(),
        ],
        "the mean of 80 % and 20 % (30 % and 10 %), the earliest resets"
    );
    let events = answer.usage_events();
    assert_eq!(events.len(), 1, "{}", answer.body);
    let limits = &events[0]["rate_limits"];
    assert_eq!(limits["primary"]["used_percent"], 50.0);
    assert_eq!(limits["primary"]["reset_at"], primary_reset);
    assert_eq!(limits["secondary"]["used_percent"], 20.0);
    assert_eq!(limits["secondary"]["reset_at"], secondary_reset);
    assert!(
        !answer.body.contains("80.0") && !answer.body.contains(":30.0"),
        "{}",
        answer.body
    );
    // The rest of the stream is the upstream's, event by event.
    for event in [
        "event: response.created",
        "event: codex.rate_limits",
        "event: response.output_item.done",
        "event: response.completed",
    ] {
        assert!(answer.body.contains(event), "{event}: {}", answer.body);
    }

    // A JSON answer (no stream) carries the pool's headers too.
    let json = s.ask_json().await;
    assert_eq!(json.status, 200);
    assert_eq!(json.header("x-codex-primary-used-percent"), Some("50"));
    assert_eq!(json.header("x-codex-secondary-used-percent"), Some("20"));

    let status = s.stop().await;
    let pool = &status.pool_usage.limits[0];
    assert_eq!(pool.limit_id, "codex");
    assert_eq!(pool.primary.as_ref().unwrap().used_percent, 50.0);
    assert_eq!(
        pool.primary.as_ref().unwrap().resets_at_ms,
        Some(ms(primary_reset))
    );
}

/// The first report of the pool (in the stream only): the client's event already carries
/// the pool's usage — the 99 % account counts as 100 %, the one not heard from as 0 %.
#[tokio::test(flavor = "current_thread")]
async fn the_first_event_of_a_stream_is_rewritten_to_the_pools_usage() {
    let s = start(one_nearly_full(UsageChannel::Event), &["ws-a", "ws-b"]).await;
    let answer = s.ask().await;
    assert_eq!(answer.status, 200);
    assert!(answer.usage_headers().is_empty(), "{:?}", answer.headers);
    let events = answer.usage_events();
    assert_eq!(events.len(), 1, "{}", answer.body);
    assert_eq!(events[0]["rate_limits"]["primary"]["used_percent"], 50.0);
    s.stop().await;
}

/// A proxy that saw an account reach its threshold, stopped, and a new proxy over the same
/// pool keeps that account out until its reset from the first request on.
#[tokio::test(flavor = "current_thread")]
async fn a_restarted_proxy_remembers_an_account_over_the_threshold() {
    let mock = MockUpstream::start(one_nearly_full(UsageChannel::Headers))
        .await
        .unwrap();
    let a = mock.synthetic_account("ws-a", "a.owner@example.com", false);
    let b = mock.synthetic_account("ws-b", "b.owner@example.com", false);
    let pool_dir = tempfile::tempdir().unwrap();
    let store = PoolStore::new(pool_dir.path());
    seed_pool(&store, &[a, b]).unwrap();
    let token = WrapperToken::generate().unwrap();
    let client = client();
    let start = || async {
        let accounts = examples::proxy::load_pool_accounts(store.clone()).unwrap();
        let mut options = ProxyOptions::new(mock.base_url(), token.clone());
        options.token_url = mock.token_url();
        RotationProxy::start(options, accounts).await.unwrap()
    };

    let first = start().await;
    assert_eq!(ask(&client, &first, &token, true).await.status, 200);
    assert_eq!(mock.stats().accounts["ws-a"].ok, 1);
    first.shutdown().await;
    let reset_at = ms(mock.usage("ws-a").unwrap().primary.reset_at);

    let second = start().await;
    let status = second.status();
    assert_eq!(
        status.accounts[0].usage[0].blocked_until_ms,
        Some(reset_at),
        "{:?}",
        status.accounts[0].usage
    );
    for _ in 0..4 {
        assert_eq!(ask(&client, &second, &token, true).await.status, 200);
    }
    let stats = mock.stats();
    assert_eq!(
        stats.accounts["ws-a"].ok, 1,
        "the restarted proxy sent nothing to the account over the threshold"
    );
    assert_eq!(stats.accounts["ws-b"].ok, 4);
    second.shutdown().await;
    mock.shutdown().await;
}

/// `GET /status` over HTTP: per-account usage (limit, windows, reset, blocked until) and
/// the pool's.
#[tokio::test(flavor = "current_thread")]
async fn status_shows_per_account_usage_and_the_pools() {
    let s = start(one_nearly_full(UsageChannel::Headers), &["ws-a", "ws-b"]).await;
    for _ in 0..2 {
        assert_eq!(s.ask().await.status, 200);
    }
    tokio::time::sleep(PAST_USAGE_TTL).await;
    let body = s
        .client
        .get(format!("http://{}/status", s.proxy.addr()))
        .bearer_auth(s.token.secret().expose())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let a = s.mock.usage("ws-a").unwrap().primary;
    let b = s.mock.usage("ws-b").unwrap().primary;
    let shown_a = &status["accounts"][0]["usage"][0];
    assert_eq!(shown_a["limit_id"], "codex", "{status:#}");
    assert_eq!(shown_a["primary"]["used_percent"], 99.0);
    assert_eq!(shown_a["primary"]["window_minutes"], 300);
    assert_eq!(shown_a["primary"]["resets_at_ms"], ms(a.reset_at));
    assert_eq!(shown_a["blocked_until_ms"], ms(a.reset_at));
    assert!(shown_a["observed_at_ms"].as_u64().unwrap() > 0);
    let shown_b = &status["accounts"][1]["usage"][0];
    assert_eq!(shown_b["primary"]["used_percent"], 11.0);
    assert_eq!(shown_b["blocked_until_ms"], serde_json::Value::Null);
    // The pool: (100 + 11) / 2, resetting when ws-a's window does (the earlier one in use).
    let pool = &status["pool_usage"]["limits"][0];
    assert_eq!(pool["primary"]["used_percent"], 55.5, "{status:#}");
    assert_eq!(
        pool["primary"]["resets_at_ms"],
        ms(a.reset_at.min(b.reset_at))
    );
    s.stop().await;
}

/// An account whose window is already full: the upstream answers `429` (with the usage and
/// `Retry-After` until the reset), the request moves on to the other account, and the full
/// one rests until its reset.
#[tokio::test(flavor = "current_thread")]
async fn a_full_window_is_answered_429_and_the_request_moves_on() {
    let config = MockConfig::default().usage(
        "ws-full",
        MockUsage::new(MockWindow::new(100.0, 1.0, 300, HOUR)),
    );
    let s = start(config, &["ws-full", "ws-b"]).await;
    for _ in 0..3 {
        assert_eq!(s.ask().await.status, 200);
    }
    let stats = s.mock.stats();
    assert_eq!(stats.accounts["ws-full"].rate_limited, 1, "{stats:?}");
    assert_eq!(stats.accounts.get("ws-full").map_or(0, |c| c.ok), 0);
    assert_eq!(stats.accounts["ws-b"].ok, 3);
    let reset_at = ms(s.mock.usage("ws-full").unwrap().primary.reset_at);
    let status = s.stop().await;
    assert_eq!(status.counters.retries, 1);
    assert_eq!(status.accounts[0].usage[0].blocked_until_ms, Some(reset_at));
}

/// Three accounts answer `429 usage_limit_reached` with their windows reported full — as
/// many as a request's attempts — and a fourth has headroom: the request is served by the
/// fourth (a spent window does not use up an attempt), never answered with an account's
/// 429.
#[tokio::test(flavor = "current_thread")]
async fn full_accounts_do_not_use_up_a_requests_attempts() {
    let mut config = MockConfig::default();
    for id in ["ws-1", "ws-2", "ws-3"] {
        config = config.usage(id, MockUsage::new(MockWindow::new(100.0, 0.0, 300, HOUR)));
    }
    let s = start(config, &["ws-1", "ws-2", "ws-3", "ws-free"]).await;
    let answer = s.ask().await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let stats = s.mock.stats();
    assert_eq!(stats.accounts["ws-free"].ok, 1, "{stats:?}");
    for id in ["ws-1", "ws-2", "ws-3"] {
        assert_eq!(stats.accounts[id].rate_limited, 1, "{id}: {stats:?}");
    }
    // They are out now: the next request goes straight to the one with headroom.
    assert_eq!(s.ask().await.status, 200);
    assert_eq!(s.mock.stats().accounts["ws-free"].ok, 2);
    s.stop().await;
}
