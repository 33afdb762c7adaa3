//! Properties of the callback server under arbitrary input (loopback, port 0).
#![cfg(feature = "login")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use auth_core::login::mock_issuer::{MockIssuer, TokenReply};
use auth_core::login::{LoginError, LoginOptions, LoginSession};
use proptest::prelude::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn options(issuer: &MockIssuer) -> LoginOptions {
    LoginOptions::default()
        .with_issuer(issuer.url())
        .with_listen_addr("127.0.0.1:0".parse().unwrap())
        .with_timeout(Duration::from_secs(20))
}

fn state_of(url: &str) -> String {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap()
}

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// No query without this session's `state` ends the login or reaches the token
    /// endpoint, whatever else it carries (codes, errors, odd encodings).
    #[test]
    fn callbacks_without_the_state_never_end_the_login(query in "[a-z_=&%0-9A-F+.-]{0,80}") {
        runtime().block_on(async {
            let issuer = MockIssuer::start(TokenReply::tokens_for("p@example.com")).await.unwrap();
            let session = LoginSession::start(options(&issuer)).await.unwrap();
            let port = session.local_addr().port();
            let state = state_of(session.authorize_url());
            prop_assume!(!query.contains(&state));
            let waiting = tokio::spawn(session.wait());
            let (status, _) = get(&format!("http://127.0.0.1:{port}/auth/callback?{query}")).await;
            prop_assert_eq!(status, 400);
            prop_assert!(!waiting.is_finished());
            prop_assert!(issuer.token_requests().is_empty());
            // The real callback still works afterwards.
            let (status, _) = get(&format!("http://127.0.0.1:{port}/cancel")).await;
            prop_assert_eq!(status, 200);
            prop_assert!(matches!(waiting.await.unwrap(), Err(LoginError::Cancelled)));
            Ok(())
        })?;
    }

    /// Whatever the issuer puts in `error_description`, the page has exactly the
    /// template's markup: nothing from the input is interpreted as HTML.
    #[test]
    fn issuer_text_is_always_escaped(description in "([<>\"'&a-z /=]|\\PC){0,40}") {
        runtime().block_on(async {
            let issuer = MockIssuer::start(TokenReply::tokens_for("p@example.com")).await.unwrap();
            let mut pages = Vec::new();
            for text in ["plain", description.as_str()] {
                let session = LoginSession::start(options(&issuer)).await.unwrap();
                let port = session.local_addr().port();
                let query = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("state", &state_of(session.authorize_url()))
                    .append_pair("error", "access_denied")
                    .append_pair("error_description", text)
                    .finish();
                let waiting = tokio::spawn(session.wait());
                let (status, page) =
                    get(&format!("http://127.0.0.1:{port}/auth/callback?{query}")).await;
                prop_assert_eq!(status, 400);
                let is_issuer_error = matches!(waiting.await.unwrap(), Err(LoginError::Issuer { .. }));
                prop_assert!(is_issuer_error);
                pages.push(page);
            }
            let markup = |page: &str| page.chars().filter(|c| matches!(c, '<' | '>' | '"')).count();
            prop_assert_eq!(markup(&pages[0]), markup(&pages[1]), "{}", pages[1]);
            Ok(())
        })?;
    }
}
