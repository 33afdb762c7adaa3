//! Pure: does an upstream error answer say the account's login is gone for everyone?
//!
//! | status | error code (any of `error.code`, `error.type`, `code`, `detail.code`, or `error` as a string) | meaning |
//! |---|---|---|
//! | 401 | `token_invalidated`, `token_revoked`, `refresh_token_reused`, `refresh_token_invalidated`, `refresh_token_expired`, `invalid_grant`, `account_deactivated` → (deactivated) | [`UnusableReason::LoginRequired`] (or `Deactivated`) |
//! | 401, 402, 403 | `deactivated_workspace`, `workspace_deactivated`, `account_deactivated`, `deactivated_account`, `user_deactivated` | [`UnusableReason::Deactivated`] |
//! | anything else | | not gone: a `401` is answered with a refresh, a `403` with a cooldown |
//!
//! An expired access token (`401`, `token_expired` or no code) is not "gone": a refresh
//! fixes it. Only the code is read, never a message, and only when it looks like a code
//! (short, `[A-Za-z0-9_.-]`).

use auth_storage::pool::UnusableReason;

/// Bytes of an error body read to classify it (error bodies are small JSON documents).
pub(crate) const CLASSIFIED_BODY_MAX: usize = 64 * 1024;

/// `Some((reason, code))` when `status` and `body` say the login is gone for everyone.
pub(crate) fn gone(status: u16, body: &[u8]) -> Option<(UnusableReason, String)> {
    if !matches!(status, 401..=403) {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let codes = codes(&value);
    for code in &codes {
        let lower = code.to_ascii_lowercase();
        // An exact list: a code that merely contains the word could be text the upstream
        // took from the request.
        if matches!(
            lower.as_str(),
            "deactivated_workspace"
                | "workspace_deactivated"
                | "account_deactivated"
                | "deactivated_account"
                | "user_deactivated"
        ) {
            return Some((UnusableReason::Deactivated, lower));
        }
        if status == 401
            && matches!(
                lower.as_str(),
                "token_invalidated"
                    | "token_revoked"
                    | "refresh_token_reused"
                    | "refresh_token_invalidated"
                    | "refresh_token_expired"
                    | "invalid_grant"
            )
        {
            return Some((UnusableReason::LoginRequired, lower));
        }
    }
    None
}

/// The code-like strings at the places error bodies put them.
fn codes(value: &serde_json::Value) -> Vec<&str> {
    let candidates = [
        value.pointer("/error/code"),
        value.pointer("/error/type"),
        value.pointer("/code"),
        value.pointer("/detail/code"),
        value.get("error"),
    ];
    candidates
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .filter(|c| {
            !c.is_empty()
                && c.len() <= 64
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_table() {
        let cases: &[(u16, &str, Option<UnusableReason>)] = &[
            (
                401,
                r#"{"error":{"code":"token_invalidated","message":"x"}}"#,
                Some(UnusableReason::LoginRequired),
            ),
            (
                401,
                r#"{"error":{"code":"token_revoked"}}"#,
                Some(UnusableReason::LoginRequired),
            ),
            (
                401,
                r#"{"error":"refresh_token_reused"}"#,
                Some(UnusableReason::LoginRequired),
            ),
            (
                401,
                r#"{"detail":{"code":"refresh_token_invalidated"}}"#,
                Some(UnusableReason::LoginRequired),
            ),
            (401, r#"{"error":{"code":"token_expired"}}"#, None),
            (401, r#"{"error":{"message":"expired"}}"#, None),
            (401, "not json", None),
            (
                402,
                r#"{"detail":{"code":"deactivated_workspace"}}"#,
                Some(UnusableReason::Deactivated),
            ),
            (
                403,
                r#"{"error":{"code":"account_deactivated"}}"#,
                Some(UnusableReason::Deactivated),
            ),
            (
                401,
                r#"{"error":{"code":"account_deactivated"}}"#,
                Some(UnusableReason::Deactivated),
            ),
            (403, r#"{"error":{"code":"token_invalidated"}}"#, None),
            (403, r#"{"error":{"code":"forbidden"}}"#, None),
            (429, r#"{"error":{"code":"deactivated_workspace"}}"#, None),
            // Only exact codes: text that merely contains the word (possibly echoed from
            // the request) marks nothing.
            (403, r#"{"error":{"code":"model_deactivated"}}"#, None),
            (403, r#"{"error":{"code":"deactivated_workspace_x"}}"#, None),
            (500, r#"{"error":"token_invalidated"}"#, None),
            // A message is never read as a code.
            (401, r#"{"error":{"message":"token_invalidated"}}"#, None),
            (
                401,
                r#"{"error":{"code":"token invalidated because"}}"#,
                None,
            ),
        ];
        for (status, body, expected) in cases {
            assert_eq!(
                gone(*status, body.as_bytes()).map(|g| g.0),
                *expected,
                "{status} {body}"
            );
        }
        assert_eq!(
            gone(402, br#"{"detail":{"code":"Deactivated_Workspace"}}"#).map(|g| g.1),
            Some("deactivated_workspace".to_owned())
        );
    }

    proptest! {
        #[test]
        fn any_body_is_classified_without_panic(status in 0u16..1000, body in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Some((_, code)) = gone(status, &body) {
                prop_assert!(code.len() <= 64);
                prop_assert!((401..=403).contains(&status));
            }
        }
    }
}
