//! The loopback mock as an issuer and backend, over real HTTP: single-use refresh tokens,
//! access-token lifetimes, expired and revoked tokens, deactivated workspaces, and the stall
//! gate crash tests use to cut a client off after the issuer spent its refresh token.

use std::sync::Arc;
use std::time::Duration;

use auth_core::{OAuthError, OAuthErrorKind};
use examples::mock_upstream::{
    Behavior, IssuedVia, MockConfig, MockUpstream, RefreshRejection, SyntheticAccount,
};
use tokio::sync::Notify;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// An answer's status and JSON body (`Null` when the body is not JSON).
async fn answer(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

async fn refresh(mock: &MockUpstream, refresh_token: &str) -> (u16, serde_json::Value) {
    let body = serde_json::json!({
        "client_id": "app_test",
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
    });
    let response = client()
        .post(mock.token_url())
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    answer(response).await
}

async fn ask(
    mock: &MockUpstream,
    account_id: &str,
    access_token: &str,
) -> (u16, serde_json::Value) {
    let response = client()
        .post(format!("{}/responses", mock.base_url()))
        .bearer_auth(access_token)
        .header("chatgpt-account-id", account_id)
        .header("content-type", "application/json")
        .body(r#"{"input":"hi","stream":false}"#)
        .send()
        .await
        .unwrap();
    answer(response).await
}

fn rt(account: &SyntheticAccount) -> String {
    account.tokens.refresh_token.expose().to_owned()
}

fn claims(token: &str) -> serde_json::Value {
    auth_core::jwt::decode_payload(token).unwrap()
}

#[tokio::test]
async fn a_refresh_token_is_accepted_once_then_answered_reused() {
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let login = mock.synthetic_account("ws-a", "a.owner@example.com", false);

    let (status, first) = refresh(&mock, &rt(&login)).await;
    assert_eq!(status, 200, "{first}");
    let next_rt = first["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(next_rt, rt(&login), "a refresh rotates the refresh token");

    let (status, reused) = refresh(&mock, &rt(&login)).await;
    assert_eq!(status, 400);
    assert_eq!(reused["error"], "refresh_token_reused");
    assert!(
        reused["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );
    let parsed = OAuthError::from_body(reused.to_string().as_bytes());
    assert_eq!(parsed.kind(), OAuthErrorKind::RefreshTokenReused);

    // The rotated token works once too; a token this mock never issued is invalid_grant.
    assert_eq!(refresh(&mock, &next_rt).await.0, 200);
    let (status, unknown) = refresh(&mock, "rt-from-somewhere-else").await;
    assert_eq!(
        (status, unknown["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, malformed) = refresh(&mock, "").await;
    assert_eq!(status, 400, "{malformed}");

    let stats = mock.stats();
    assert_eq!(stats.token_requests, 5);
    assert_eq!(stats.refreshes, 2);
    assert_eq!(stats.refresh_reused, 1);
    assert_eq!(stats.refresh_unknown, 2);
    let a = &stats.accounts["ws-a"];
    assert_eq!((a.refresh_calls, a.refreshes, a.refresh_reused), (3, 2, 1));
    let via: Vec<IssuedVia> = a.issued.iter().map(|t| t.via).collect();
    assert_eq!(
        via,
        [
            IssuedVia::SyntheticAccount,
            IssuedVia::Refresh,
            IssuedVia::Refresh
        ]
    );
    assert!(mock.wait_for_token_requests(5, Duration::ZERO).await);
    mock.shutdown().await;
}

#[tokio::test]
async fn reuse_can_be_answered_401_in_openais_nested_layout() {
    let mock =
        MockUpstream::start(MockConfig::default().refresh_rejection(RefreshRejection::Nested401))
            .await
            .unwrap();
    let login = mock.synthetic_account("ws-a", "a.owner@example.com", false);
    assert_eq!(refresh(&mock, &rt(&login)).await.0, 200);
    let (status, body) = refresh(&mock, &rt(&login)).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "refresh_token_reused");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(
        OAuthError::from_body(body.to_string().as_bytes()).kind(),
        OAuthErrorKind::RefreshTokenReused
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn access_ttl_sets_exp_and_expires_in_for_refreshes_and_logins() {
    let mock = MockUpstream::start(MockConfig::default().access_ttl(Duration::from_secs(3)))
        .await
        .unwrap();
    let login = mock.synthetic_account("ws-a", "a.owner@example.com", false);
    let c = claims(login.tokens.access_token.expose());
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 3);

    let (status, body) = refresh(&mock, &rt(&login)).await;
    assert_eq!(status, 200);
    assert_eq!(body["expires_in"], 3);
    let c = claims(body["access_token"].as_str().unwrap());
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 3);
    let id = claims(body["id_token"].as_str().unwrap());
    assert_eq!(id["exp"], c["exp"]);

    let issued = &mock.stats().accounts["ws-a"].issued;
    assert_eq!(issued.len(), 2);
    assert!(issued.iter().all(|t| t.exp - t.iat == 3));
    assert_eq!(issued[1].exp, c["exp"].as_i64().unwrap());
    mock.shutdown().await;

    // Fractions of a second round up: JWT times are whole seconds.
    let mock = MockUpstream::start(MockConfig::default().access_ttl(Duration::from_millis(1500)))
        .await
        .unwrap();
    let login = mock.synthetic_account("ws-a", "a.owner@example.com", false);
    assert_eq!(refresh(&mock, &rt(&login)).await.1["expires_in"], 2);
    mock.shutdown().await;
}

#[tokio::test]
async fn expired_access_tokens_are_refused_with_token_expired() {
    let mock = MockUpstream::start(
        MockConfig::default()
            // Two seconds: JWT times are whole seconds, so a token lives between one and two.
            .access_ttl(Duration::from_secs(2))
            .reject_expired_access(true),
    )
    .await
    .unwrap();
    let stale = mock.synthetic_account("ws-a", "a.owner@example.com", true);
    let (status, body) = ask(&mock, "ws-a", stale.tokens.access_token.expose()).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "token_expired");

    // A fresh token passes, then expires on its own within its two-second lifetime.
    let fresh = mock.synthetic_account("ws-b", "b.owner@example.com", false);
    let (status, _) = ask(&mock, "ws-b", fresh.tokens.access_token.expose()).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, body) = ask(&mock, "ws-b", fresh.tokens.access_token.expose()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("token_expired"))
    );

    // Tokens whose expiry cannot be read are not judged by this rule.
    let odd_exp =
        auth_core::jwt::encode_unsigned_json_for_testing(&serde_json::json!({"exp": "soon"}));
    for garbage in [
        "not-a-jwt",
        "a.b.c",
        "..",
        "x.\u{1F600}.y",
        odd_exp.as_str(),
    ] {
        assert_eq!(ask(&mock, "ws-c", garbage).await.0, 200, "{garbage}");
    }

    let stats = mock.stats();
    assert_eq!(stats.accounts["ws-a"].expired_access, 1);
    assert_eq!(stats.accounts["ws-b"].expired_access, 1);
    assert_eq!(stats.accounts["ws-b"].unauthorized, 1);
    assert_eq!(stats.accounts["ws-c"].ok, 5);
    mock.shutdown().await;
}

#[tokio::test]
async fn an_invalidated_login_is_refused_by_the_backend_and_the_issuer() {
    let mock =
        MockUpstream::start(MockConfig::default().account("ws-x", Behavior::TokenInvalidated))
            .await
            .unwrap();
    let login = mock.synthetic_account("ws-x", "x.owner@example.com", false);
    let (status, body) = ask(&mock, "ws-x", login.tokens.access_token.expose()).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "token_invalidated");
    let (status, body) = refresh(&mock, &rt(&login)).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "refresh_token_invalidated");
    assert_eq!(
        OAuthError::from_body(body.to_string().as_bytes()).kind(),
        OAuthErrorKind::RefreshTokenInvalidated
    );

    // Revoked while in use: the spent and the live refresh token are both invalidated.
    let login = mock.synthetic_account("ws-y", "y.owner@example.com", false);
    let (_, first) = refresh(&mock, &rt(&login)).await;
    let live = first["refresh_token"].as_str().unwrap().to_owned();
    let access = first["access_token"].as_str().unwrap().to_owned();
    assert_eq!(ask(&mock, "ws-y", &access).await.0, 200);
    mock.set_account("ws-y", Behavior::TokenInvalidated);
    assert_eq!(ask(&mock, "ws-y", &access).await.0, 401);
    for token in [rt(&login), live] {
        let (status, body) = refresh(&mock, &token).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("refresh_token_invalidated"))
        );
    }

    let stats = mock.stats();
    assert_eq!(stats.refresh_invalidated, 3);
    assert_eq!(stats.refresh_reused, 0);
    assert_eq!(stats.accounts["ws-y"].refresh_invalidated, 2);
    assert_eq!(stats.accounts["ws-y"].unauthorized, 1);
    mock.shutdown().await;
}

#[tokio::test]
async fn a_deactivated_workspace_answers_402_but_still_refreshes() {
    let mock = MockUpstream::start(MockConfig::default().account("ws-d", Behavior::Deactivated))
        .await
        .unwrap();
    let login = mock.synthetic_account("ws-d", "d.owner@example.com", false);
    let (status, body) = ask(&mock, "ws-d", login.tokens.access_token.expose()).await;
    assert_eq!(status, 402);
    assert_eq!(
        body,
        serde_json::json!({"detail": {"code": "deactivated_workspace"}})
    );
    let (status, fresh) = refresh(&mock, &rt(&login)).await;
    assert_eq!(status, 200);
    assert_eq!(
        ask(&mock, "ws-d", fresh["access_token"].as_str().unwrap())
            .await
            .0,
        402
    );
    let stats = mock.stats();
    assert_eq!(stats.accounts["ws-d"].deactivated, 2);
    assert_eq!(stats.accounts["ws-d"].ok, 0);
    assert_eq!(mock.recorded()[0].status, 402);
    mock.shutdown().await;
}

#[tokio::test]
async fn a_stalled_answer_has_already_spent_the_refresh_token() {
    let gate = Arc::new(Notify::new());
    let mock = Arc::new(
        MockUpstream::start(MockConfig::default().stall_token_answers(gate.clone()))
            .await
            .unwrap(),
    );
    let login = mock.synthetic_account("ws-s", "s.owner@example.com", false);

    // A client asks and is held; the test "kills" it once the issuer has spent the token.
    let victim = {
        let mock = mock.clone();
        let token = rt(&login);
        tokio::spawn(async move { refresh(&mock, &token).await })
    };
    assert!(
        mock.wait_for_token_requests(1, Duration::from_secs(10))
            .await
    );
    let stats = mock.stats();
    assert_eq!((stats.token_requests, stats.refreshes), (1, 1));
    assert_eq!(stats.accounts["ws-s"].issued.len(), 2);
    victim.abort();
    assert!(victim.await.unwrap_err().is_cancelled());

    // The survivor re-tries with the same token: reused, answered at once (refusals are
    // never held).
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), refresh(&mock, &rt(&login)))
        .await
        .expect("a refusal is not stalled");
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("refresh_token_reused"))
    );
    assert!(
        !mock
            .wait_for_token_requests(3, Duration::from_millis(50))
            .await
    );

    // A held answer is delivered when the gate opens.
    let other = mock.synthetic_account("ws-t", "t.owner@example.com", false);
    let waiting = {
        let mock = mock.clone();
        let token = rt(&other);
        tokio::spawn(async move { refresh(&mock, &token).await })
    };
    assert!(
        mock.wait_for_token_requests(3, Duration::from_secs(10))
            .await
    );
    // The killed client's answer may still be held too: release every held answer.
    gate.notify_waiters();
    let (status, _) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);

    let stats = mock.stats();
    assert_eq!(stats.refreshes, 2);
    assert_eq!(stats.refresh_reused, 1);
    Arc::into_inner(mock).unwrap().shutdown().await;
}
