//! Forward migrations of the pool document.
//!
//! * **v1** (first release; a document without `version` is v1): camelCase keys,
//!   millisecond timestamps, the active account by position, a `disabled` flag and
//!   `rateLimitResetAt` per model family:
//!   `{"version":1,"activeIndex":0,"accounts":[{"accountId":…,"email":…,"plan":…,
//!   "tokens":{…},"addedAt":ms,"lastUsed":ms,"disabled":false,"rateLimitResetAt":{"gpt-5":ms}}]}`
//! * **v2**: snake_case, seconds, `active` by account key (`<account id>|<email>`),
//!   `enabled`, `cooldowns`, `health`, `revision`.
//! * **v3** (current): every account has a stable `id` (`acct-` + 16 hex) and `active` names
//!   it; optional `homes`, `unusable` and `refreshing`. A v2 account gets an id derived
//!   from the document alone (its refresh token and position, hashed), so every process
//!   reading the same v2 file agrees on the ids until the first v3 write stores them.
//!
//! Migrations work on `serde_json::Value` so they never need the old Rust types, and they
//! keep fields they do not know.

use serde_json::{Map, Value};

use super::document::CURRENT_VERSION;

/// Why a document could not be migrated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MigrateError {
    /// The document is from a newer version of this crate.
    Newer(u32),
    /// The document is not a JSON object or has a bad `version`.
    Shape(String),
}

/// The document's schema version (`1` when absent).
pub(crate) fn version_of(doc: &Value) -> Result<u32, MigrateError> {
    let obj = doc
        .as_object()
        .ok_or_else(|| MigrateError::Shape("the top level is not a JSON object".to_owned()))?;
    match obj.get("version") {
        None => Ok(1),
        Some(v) => v
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .filter(|v| *v >= 1)
            .ok_or_else(|| MigrateError::Shape("`version` is not a positive integer".to_owned())),
    }
}

/// Bring `doc` up to [`CURRENT_VERSION`]. Returns the version it started at.
pub(crate) fn migrate(doc: &mut Value) -> Result<u32, MigrateError> {
    let from = version_of(doc)?;
    if from > CURRENT_VERSION {
        return Err(MigrateError::Newer(from));
    }
    if from == 1 {
        v1_to_v2(doc)?;
    }
    if from <= 2 {
        v2_to_v3(doc)?;
    }
    Ok(from)
}

fn ms_to_s(v: Option<Value>) -> Option<Value> {
    v.and_then(|v| v.as_u64()).map(|ms| Value::from(ms / 1000))
}

fn v1_to_v2(doc: &mut Value) -> Result<(), MigrateError> {
    let Some(obj) = doc.as_object_mut() else {
        return Err(MigrateError::Shape(
            "the top level is not a JSON object".to_owned(),
        ));
    };
    let active_index = obj.remove("activeIndex").and_then(|v| v.as_u64());
    let accounts = match obj.remove("accounts") {
        None => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(MigrateError::Shape("`accounts` is not a list".to_owned())),
    };
    let mut migrated = Vec::with_capacity(accounts.len());
    for (i, account) in accounts.into_iter().enumerate() {
        let Value::Object(mut old) = account else {
            return Err(MigrateError::Shape(format!(
                "accounts[{i}] is not an object"
            )));
        };
        let mut new = Map::new();
        if let Some(id) = old.remove("accountId") {
            new.insert("account_id".into(), id);
        }
        for key in ["email", "plan", "tokens"] {
            if let Some(v) = old.remove(key) {
                new.insert(key.into(), v);
            }
        }
        if let Some(v) = old.remove("lastRefresh") {
            new.insert("last_refresh".into(), v);
        }
        new.insert(
            "added_at".into(),
            ms_to_s(old.remove("addedAt")).unwrap_or(Value::from(0)),
        );
        if let Some(v) = ms_to_s(old.remove("lastUsed")) {
            new.insert("last_used_at".into(), v);
        }
        let disabled = old
            .remove("disabled")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        new.insert("enabled".into(), Value::Bool(!disabled));
        if let Some(Value::Object(limits)) = old.remove("rateLimitResetAt") {
            let cooldowns: Map<String, Value> = limits
                .into_iter()
                .filter_map(|(family, until)| ms_to_s(Some(until)).map(|s| (family, s)))
                .collect();
            new.insert("cooldowns".into(), Value::Object(cooldowns));
        }
        // Whatever else v1 had is kept verbatim.
        new.extend(old);
        migrated.push(Value::Object(new));
    }
    obj.insert("version".into(), Value::from(2));
    obj.insert(
        "revision".into(),
        obj.get("revision").cloned().unwrap_or(Value::from(0)),
    );
    let active = active_index
        .and_then(|i| usize::try_from(i).ok())
        .and_then(|i| migrated.get(i))
        .map(active_key_of);
    if let Some(Some(key)) = active {
        obj.insert("active".into(), Value::String(key));
    }
    obj.insert("accounts".into(), Value::Array(migrated));
    Ok(())
}

/// v2 → v3: ids derived from the document, `active` from the v2 key to the id.
fn v2_to_v3(doc: &mut Value) -> Result<(), MigrateError> {
    let Some(obj) = doc.as_object_mut() else {
        return Err(MigrateError::Shape(
            "the top level is not a JSON object".to_owned(),
        ));
    };
    let active = obj.remove("active");
    let active = active.as_ref().and_then(Value::as_str);
    let mut new_active = None;
    if let Some(Value::Array(accounts)) = obj.get_mut("accounts") {
        for (index, account) in accounts.iter_mut().enumerate() {
            let Value::Object(fields) = account else {
                // Left for the typed parse to report with its position.
                continue;
            };
            let refresh = fields
                .get("tokens")
                .and_then(|t| t.get("refresh_token"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let key = active_key_of(&Value::Object(fields.clone())).or_else(|| {
                // v2 named an account with neither id nor email by its token's fingerprint.
                Some(format!(
                    "token:{}",
                    auth_core::Secret::new(refresh.clone()).fingerprint()
                ))
            });
            let id = match fields.get("id").and_then(Value::as_str) {
                Some(id) if super::document::is_valid_account_id(id) => id.to_owned(),
                _ => super::document::derived_id(&refresh, index, 0),
            };
            if new_active.is_none() && active.is_some() && key.as_deref() == active {
                new_active = Some(id.clone());
            }
            fields.insert("id".into(), Value::String(id));
        }
    }
    if let Some(id) = new_active {
        obj.insert("active".into(), Value::String(id));
    }
    obj.insert("version".into(), Value::from(3));
    Ok(())
}

/// The v2 `active` key of an account (`<account id>|<lower-cased email>`, or whichever of
/// the two is known, `email:<email>` for an email alone), on raw JSON.
fn active_key_of(account: &Value) -> Option<String> {
    let id = account.get("account_id").and_then(Value::as_str);
    let email = account
        .get("email")
        .and_then(Value::as_str)
        .map(str::to_lowercase);
    match (id, email) {
        (Some(id), Some(e)) => Some(format!("{id}|{e}")),
        (Some(id), None) => Some(id.to_owned()),
        (None, Some(e)) => Some(format!("email:{e}")),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn number(n: &serde_json::Number) -> Value {
        Value::Number(n.clone())
    }

    proptest! {
        /// v1 timestamps are numbers from a file: any `u64`, `i64` or `f64` (JSON has no
        /// NaN/inf; those arrive as `null`) migrates without panic or wrap-around.
        #[test]
        fn any_v1_timestamp_migrates_without_wrapping(
            unsigned in any::<u64>(),
            signed in any::<i64>(),
            float in any::<f64>(),
            revision in any::<u64>(),
        ) {
            let values = [
                number(&unsigned.into()),
                number(&signed.into()),
                serde_json::Number::from_f64(float).map_or(Value::Null, Value::Number),
            ];
            for v in values {
                let mut doc = serde_json::json!({
                    "activeIndex": v.clone(),
                    "revision": revision,
                    "accounts": [{"email": "a@b.c", "addedAt": v.clone(), "lastUsed": v.clone(),
                                  "rateLimitResetAt": {"gpt-5": v.clone()}}],
                });
                prop_assert_eq!(migrate(&mut doc), Ok(1));
                let account = &doc["accounts"][0];
                let added = account["added_at"].as_u64().unwrap();
                prop_assert!(added <= v.as_u64().unwrap_or(0) / 1000);
                if let Some(ms) = v.as_u64() {
                    prop_assert_eq!(account["cooldowns"]["gpt-5"].as_u64(), Some(ms / 1000));
                }
                prop_assert_eq!(doc["revision"].as_u64(), Some(revision));
            }
        }

        /// Any `version` value: a typed refusal or a migration, never a panic or a cast
        /// that wraps (2^32 + 1 must not read as version 1).
        #[test]
        fn any_version_number_is_checked_not_cast(version in any::<u64>()) {
            let doc = serde_json::json!({ "version": version });
            match version_of(&doc) {
                Ok(v) => prop_assert_eq!(u64::from(v), version),
                Err(MigrateError::Shape(_)) => {
                    prop_assert!(version == 0 || version > u64::from(u32::MAX));
                }
                Err(other) => prop_assert!(false, "{other:?}"),
            }
        }
    }
}
