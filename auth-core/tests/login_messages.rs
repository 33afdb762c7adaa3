//! Every `LoginError` message as the user reads it (insta snapshot).
#![cfg(feature = "login")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use auth_core::OAuthError;
use auth_core::login::LoginError;

#[test]
fn login_error_messages() {
    let addr = "127.0.0.1:1455".parse().unwrap();
    let errors = [
        LoginError::PortInUse {
            addr,
            holders: Some(vec!["pid 4242 (codex) /usr/local/bin/codex".into()]),
        },
        LoginError::PortInUse {
            addr,
            holders: Some(vec![]),
        },
        LoginError::PortInUse {
            addr,
            holders: None,
        },
        LoginError::Bind {
            addr,
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        },
        LoginError::Config {
            detail: "the callback must listen on a loopback address, not 0.0.0.0".into(),
        },
        LoginError::LogFile {
            path: "/home/me/.codex/log/login.log".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        },
        LoginError::Issuer {
            code: Some("access_denied".into()),
            description: Some("missing_codex_entitlement".into()),
        },
        LoginError::Issuer {
            code: Some("server_error".into()),
            description: Some("try later".into()),
        },
        LoginError::Issuer {
            code: None,
            description: None,
        },
        LoginError::MissingCode,
        LoginError::TokenEndpoint {
            status: 400,
            error: OAuthError::from_body(br#"{"error":"invalid_grant"}"#),
        },
        LoginError::TokenEndpoint {
            status: 502,
            error: OAuthError::from_body(b"<html>bad gateway</html>"),
        },
        LoginError::Transport {
            message: "error sending request for url (https://auth.openai.com/oauth/token)".into(),
        },
        LoginError::InvalidTokenResponse {
            detail: "missing field `refresh_token`".into(),
        },
        LoginError::TimedOut {
            after: Duration::from_secs(600),
        },
        LoginError::Cancelled,
        LoginError::Aborted,
    ];
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    insta::assert_snapshot!(text.join("\n"));
}
