//! Property tests: the JWT and auth.json parsers never panic, and round trips hold.

use auth_core::jwt::{self, IdTokenClaims, JwtError, PlanType};
use auth_core::redact::{mask_email, redact_text};
use auth_core::{AuthDocument, Secret, Timestamp, TokenData};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;

fn plan() -> impl Strategy<Value = PlanType> {
    prop_oneof![
        Just(PlanType::Free),
        Just(PlanType::Go),
        Just(PlanType::Plus),
        Just(PlanType::Pro),
        Just(PlanType::Team),
        Just(PlanType::Business),
        Just(PlanType::Enterprise),
        Just(PlanType::Edu),
        // Unknown values that are not aliases of known ones.
        "[a-z]{3,12}_x".prop_map(PlanType::Other),
    ]
}

prop_compose! {
    fn claims()(
        email in proptest::option::of("[a-z0-9._+-]{1,20}@[a-z0-9-]{1,12}\\.[a-z]{2,6}"),
        exp in proptest::option::of(any::<i64>()),
        iat in proptest::option::of(any::<i64>()),
        plan in proptest::option::of(plan()),
        account in proptest::option::of("\\PC{0,40}"),
        user in proptest::option::of("\\PC{0,40}"),
    ) -> IdTokenClaims {
        IdTokenClaims {
            email,
            exp,
            iat,
            chatgpt_plan_type: plan,
            chatgpt_account_id: account,
            chatgpt_user_id: user,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any byte string into the parser: a value or an error, never a panic, and the
    /// error never repeats the input.
    #[test]
    fn jwt_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let text = String::from_utf8_lossy(&bytes);
        if let Err(err) = jwt::parse_id_token(&text) {
            let msg = err.to_string();
            if text.len() >= 8 {
                prop_assert!(!msg.contains(text.as_ref()));
            }
        }
        let _ = jwt::decode_header(&text);
        let _ = jwt::parse_expiry(&text);
    }

    /// Three base64url parts around arbitrary payload bytes: still never a panic.
    #[test]
    fn jwt_parser_handles_arbitrary_payloads(payload in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let token = format!("eyJhbGciOiJub25lIn0.{}.c2ln", URL_SAFE_NO_PAD.encode(&payload));
        match jwt::parse_id_token(&token) {
            Ok(_) => {}
            Err(JwtError::Json { .. } | JwtError::NotAJwt { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
        }
    }

    /// encode_unsigned_for_testing → parse_id_token is the identity.
    #[test]
    fn claims_round_trip(claims in claims()) {
        let token = jwt::encode_unsigned_for_testing(&claims);
        prop_assert_eq!(jwt::parse_id_token(&token).unwrap(), claims);
    }

    /// Any bytes into the auth.json reader: never a panic.
    #[test]
    fn auth_json_reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = AuthDocument::from_json_slice(&bytes);
    }

    /// A document with tokens, timestamps and unknown fields survives write → read →
    /// write byte-for-byte.
    #[test]
    fn auth_document_round_trip(
        claims in claims(),
        access in "\\PC{0,64}",
        refresh in "\\PC{0,64}",
        account in proptest::option::of("[A-Za-z0-9-]{1,36}"),
        key in proptest::option::of("\\PC{1,64}"),
        secs in 0u64..4_000_000_000,
        nanos in 0u32..1_000_000_000,
        extra_key in "[a-z_]{1,12}_extra",
        extra_val in any::<i32>(),
    ) {
        let tokens = TokenData::new(
            jwt::encode_unsigned_for_testing(&claims).into(),
            access.into(),
            refresh.into(),
            account,
        ).unwrap();
        let time = std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
        let mut doc = AuthDocument::chatgpt(tokens, Timestamp::from_system_time(time));
        doc.openai_api_key = key.map(Secret::new);
        doc.extra.insert(extra_key, serde_json::json!({"n": extra_val}));
        let text = doc.to_json_pretty();
        let back = AuthDocument::from_json_str(&text).unwrap();
        prop_assert_eq!(&back, &doc);
        prop_assert_eq!(back.to_json_pretty(), text);
        prop_assert_eq!(back.last_refresh.unwrap().to_system_time(), time);
    }

    /// Redaction keeps the domain and never the local part beyond its first character.
    #[test]
    fn masked_email_hides_local_part(local in "[a-z]{2,20}", domain in "[a-z]{1,10}\\.[a-z]{2,4}") {
        let masked = mask_email(&format!("{local}@{domain}"));
        let expected = format!("{}***@{domain}", &local[..1]);
        prop_assert_eq!(masked, expected);
    }

    /// Free-text redaction never panics and removes query values of embedded URLs.
    #[test]
    fn redact_text_removes_query_values(prefix in "\\PC{0,30}", secret in "[A-Za-z0-9]{12,24}") {
        let text = format!("{prefix} (https://h.example/p?token={secret}) tail");
        let red = redact_text(&text);
        prop_assert!(!red.contains(&secret), "{}", red);
    }

    #[test]
    fn redact_text_never_panics(text in "\\PC{0,200}") {
        let _ = redact_text(&text);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any token-endpoint body classifies without panicking, and a kept code is always
    /// code-shaped (never free text that could carry user data).
    #[test]
    fn oauth_error_classification_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let e = auth_core::OAuthError::from_body(&bytes);
        if let Some(code) = e.code() {
            prop_assert!(code.len() <= 64);
            prop_assert!(code.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)));
        }
    }

    /// Whatever the error text, a JSON error field that is not code-shaped is dropped.
    #[test]
    fn oauth_error_drops_free_text(text in "[a-z]{1,10} [a-z @.]{1,30}") {
        let body = serde_json::json!({"error": text}).to_string();
        let classified = auth_core::OAuthError::from_body(body.as_bytes());
        prop_assert_eq!(classified.code(), None);
    }

    #[test]
    fn redact_url_never_panics(text in "\\PC{0,200}") {
        let _ = auth_core::redact::redact_url(&text);
    }
}
