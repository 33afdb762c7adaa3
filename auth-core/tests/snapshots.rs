//! insta snapshots of the on-disk `auth.json` forms and of every user-facing error
//! message. Review changes to these files like changes to a file format or to UI text.

use auth_core::jwt::{self, IdTokenClaims, JwtError, PlanType};
use auth_core::{AuthDocument, OAuthError, Secret, Timestamp, TimestampError, TokenData};

fn id_token() -> String {
    jwt::encode_unsigned_for_testing(&IdTokenClaims {
        email: Some("user@example.com".into()),
        exp: Some(1_900_000_000),
        iat: Some(1_899_996_400),
        chatgpt_plan_type: Some(PlanType::Plus),
        chatgpt_account_id: Some("11111111-2222-3333-4444-555555555555".into()),
        chatgpt_user_id: Some("user-abc".into()),
    })
}

fn tokens() -> TokenData {
    TokenData::new(
        id_token().into(),
        "access-token-value".into(),
        "refresh-token-value".into(),
        Some("11111111-2222-3333-4444-555555555555".into()),
    )
    .unwrap()
}

#[test]
fn auth_json_api_key() {
    insta::assert_snapshot!(
        AuthDocument::api_key(Secret::from("sk-proj-example")).to_json_pretty()
    );
}

#[test]
fn auth_json_chatgpt() {
    let doc = AuthDocument::chatgpt(tokens(), "2025-08-06T20:41:36.232376Z".parse().unwrap());
    insta::assert_snapshot!(doc.to_json_pretty());
}

#[test]
fn auth_json_chatgpt_without_account_id_and_with_key() {
    let mut t = tokens();
    t.account_id = None;
    let mut doc = AuthDocument::chatgpt(t, Timestamp::from_system_time(std::time::UNIX_EPOCH));
    doc.openai_api_key = Some(Secret::from("sk-from-token-exchange"));
    insta::assert_snapshot!(doc.to_json_pretty());
}

#[test]
fn auth_json_empty() {
    insta::assert_snapshot!(AuthDocument::default().to_json_pretty());
}

#[test]
fn auth_json_all_fields_and_unknown() {
    let text = format!(
        r#"{{"some_future_field": [1, "two"], "auth_mode": "agentIdentity", "OPENAI_API_KEY": null,
            "tokens": {{"id_token": "{}", "access_token": "a", "refresh_token": "r", "account_id": "acc"}},
            "last_refresh": "2025-01-01T00:00:00+00:00", "agent_identity": "agent-jwt",
            "personal_access_token": "pat", "z_last": {{"nested": true}}}}"#,
        id_token()
    );
    insta::assert_snapshot!(AuthDocument::from_json_str(&text).unwrap().to_json_pretty());
}

#[test]
fn debug_output_of_document_has_no_secrets() {
    let mut doc = AuthDocument::chatgpt(tokens(), "2025-01-01T00:00:00Z".parse().unwrap());
    doc.openai_api_key = Some(Secret::from("sk-secret"));
    doc.extra
        .insert("x_secret_holder".into(), serde_json::json!("hidden-value"));
    let dbg = format!("{doc:#?}");
    for secret in [
        "access-token-value",
        "refresh-token-value",
        "sk-secret",
        "hidden-value",
        "eyJ",
    ] {
        assert!(!dbg.contains(secret), "{secret} leaked: {dbg}");
    }
    insta::assert_snapshot!(dbg);
}

fn errors_of<T: std::fmt::Debug, E: std::fmt::Display>(cases: &[(&str, Result<T, E>)]) -> String {
    cases
        .iter()
        .map(|(input, r)| match r {
            Ok(v) => format!("{input}\n  => unexpectedly OK: {v:?}\n"),
            Err(e) => format!("{input}\n  => {e}\n"),
        })
        .collect()
}

#[test]
fn jwt_error_messages() {
    let payload = |json: &str| {
        use base64::Engine as _;
        format!(
            "eyJhbGciOiJub25lIn0.{}.c2ln",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
        )
    };
    let big = "a".repeat(jwt::MAX_JWT_LEN + 1);
    let cases = [
        ("<65537 bytes>", jwt::parse_id_token(&big)),
        ("", jwt::parse_id_token("")),
        ("abc", jwt::parse_id_token("abc")),
        ("a..c", jwt::parse_id_token("a..c")),
        ("a.b.c.d", jwt::parse_id_token("a.b.c.d")),
        ("aaa.b!b.ccc", jwt::parse_id_token("aaa.b!b.ccc")),
        ("aaa.abcde.ccc", jwt::parse_id_token("aaa.abcde.ccc")),
        (
            "payload: {\"email\":",
            jwt::parse_id_token(&payload("{\"email\":")),
        ),
        (
            "payload: {\"email\":42}",
            jwt::parse_id_token(&payload("{\"email\":42}")),
        ),
        (
            "payload: not json",
            jwt::parse_id_token(&payload("not json")),
        ),
    ];
    insta::assert_snapshot!(errors_of(&cases));
    let _: Option<JwtError> = None;
}

/// The header-part messages (`decode_header`) and `parse_expiry` on an access token.
#[test]
fn jwt_header_and_expiry_error_messages() {
    use base64::Engine as _;
    let b64 = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
    let bad_header_json = format!("{}.e30.c2ln", b64("{\"alg\":"));
    let header_not_object = format!("{}.e30.c2ln", b64("[1]"));
    let exp_not_number = format!("eyJhbGciOiJub25lIn0.{}.c2ln", b64("{\"exp\":\"soon\"}"));
    let mut text = errors_of(&[
        ("header: h!h", jwt::decode_header("h!h.e30.c2ln")),
        ("header: {\"alg\":", jwt::decode_header(&bad_header_json)),
        ("header: [1]", jwt::decode_header(&header_not_object)),
        ("header: not a JWT", jwt::decode_header("only-one-part")),
    ]);
    text.push_str(&errors_of(&[
        (
            "expiry: exp is a string",
            jwt::parse_expiry(&exp_not_number),
        ),
        ("expiry: payload a!a", jwt::parse_expiry("e30.a!a.c2ln")),
    ]));
    insta::assert_snapshot!(text);
}

#[test]
fn auth_json_error_messages() {
    let big = vec![b' '; auth_core::MAX_AUTH_JSON_LEN + 1];
    let cases: Vec<(&str, Result<AuthDocument, _>)> = vec![
        ("<too large>", AuthDocument::from_json_slice(&big)),
        ("<empty>", AuthDocument::from_json_str("")),
        (
            "{\"auth_mode\": \"api",
            AuthDocument::from_json_str("{\"auth_mode\": \"api"),
        ),
        (
            "{\"OPENAI_API_KEY\": sk-unquoted}",
            AuthDocument::from_json_str("{\"OPENAI_API_KEY\": sk-unquoted}"),
        ),
        ("{} {}", AuthDocument::from_json_str("{} {}")),
        ("[]", AuthDocument::from_json_str("[]")),
        (
            "{\"OPENAI_API_KEY\": 42}",
            AuthDocument::from_json_str("{\"OPENAI_API_KEY\": 42}"),
        ),
        (
            "{\"tokens\": \"sk-secret\"}",
            AuthDocument::from_json_str("{\"tokens\": \"sk-secret\"}"),
        ),
        (
            "tokens.id_token not a JWT",
            AuthDocument::from_json_str(
                r#"{"tokens": {"id_token": "secret-value", "access_token": "a", "refresh_token": "r"}}"#,
            ),
        ),
        (
            "tokens missing refresh_token",
            AuthDocument::from_json_str(&format!(
                r#"{{"tokens": {{"id_token": "{}", "access_token": "a"}}}}"#,
                id_token()
            )),
        ),
        (
            "last_refresh not a date",
            AuthDocument::from_json_str(r#"{"last_refresh": "yesterday"}"#),
        ),
    ];
    let messages: String = cases
        .iter()
        .filter_map(|(_, r)| r.as_ref().err().map(|e| e.to_string()))
        .collect();
    for secret in ["sk-secret", "secret-value", "sk-unquoted"] {
        assert!(!messages.contains(secret), "{secret} leaked:\n{messages}");
    }
    let text = errors_of(&cases);
    insta::assert_snapshot!(text);
}

#[test]
fn other_error_messages() {
    let ts: Result<Timestamp, TimestampError> = "nope".parse();
    let mut text = errors_of(&[("timestamp \"nope\"", ts)]);
    for body in [
        r#"{"error":"refresh_token_expired"}"#,
        r#"{"error":{"code":"refresh_token_reused","message":"m"}}"#,
        r#"{"error":"refresh_token_invalidated"}"#,
        r#"{"error":"invalid_grant","error_description":"d"}"#,
        r#"{"error":"temporarily_unavailable"}"#,
        r#"{"error":"bob@example.com is not allowed"}"#,
        "<html>bad gateway</html>",
    ] {
        let e = OAuthError::from_body(body.as_bytes());
        text.push_str(&format!("{body}\n  => [{}] {e}\n", e.kind()));
    }
    text.push_str(&format!(
        "TokenData::new with bad id token\n  => {}\n",
        TokenData::new("x".into(), "a".into(), "r".into(), None).unwrap_err()
    ));
    insta::assert_snapshot!(text);
}

#[cfg(feature = "refresh")]
#[test]
fn refresh_error_messages() {
    use auth_core::refresh::RefreshError;
    let oauth = |b: &str| OAuthError::from_body(b.as_bytes());
    let errors = [
        RefreshError::Rejected { status: 401, error: oauth(r#"{"error":"refresh_token_expired"}"#) },
        RefreshError::Rejected { status: 400, error: oauth(r#"{"error":"invalid_grant"}"#) },
        RefreshError::Rejected { status: 401, error: oauth("") },
        RefreshError::Endpoint { status: 503, error: oauth("") },
        RefreshError::Endpoint { status: 400, error: oauth(r#"{"error":"temporarily_unavailable"}"#) },
        RefreshError::Transport {
            message: "error sending request for url (http://127.0.0.1:9/oauth/token): client error (Connect): tcp connect error: Connection refused (os error 111)".into(),
            timeout: false,
        },
        RefreshError::InvalidResponse { detail: "not the expected JSON object (syntax error at line 1, column 2)".into() },
        RefreshError::Persist { message: "disk full".into(), tokens: Box::new(tokens()) },
        RefreshError::Config { detail: "token URL [unparseable URL] is not a valid absolute URL".into() },
        RefreshError::Aborted,
    ];
    let text: String = errors.iter().map(|e| format!("{e}\n")).collect();
    insta::assert_snapshot!(text);
}
