//! The pool on disk: recovery matrix, intentional reset, migrations, round trips.

mod common;

use std::path::Path;

use auth_storage::PoolStore;
use auth_storage::pool::{Account, PoolDocument, RestoreReason};
use common::tokens;
use proptest::prelude::*;

fn account(email: &str, id: &str) -> Account {
    Account::from_login(tokens(email, id, &format!("rt-{id}")), None, 1_700_000_000)
}

/// A pool with three saves (revisions 1..=3): backups hold revisions 1 and 2.
fn seeded(dir: &Path) -> PoolStore {
    let store = PoolStore::new(dir);
    for (email, id) in [
        ("alice@example.com", "acct-a"),
        ("bob@example.com", "acct-b"),
        ("carol@example.com", "acct-c"),
    ] {
        store.update(|p| p.upsert(account(email, id))).unwrap();
    }
    store
}

fn summary(store: &PoolStore) -> String {
    match store.load() {
        Ok(loaded) => {
            let from = loaded
                .recovery
                .as_ref()
                .map(|r| {
                    let backup = r
                        .backup
                        .as_ref()
                        .and_then(|b| b.file_name())
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "none".into());
                    format!("{:?} (backup: {backup})", r.reason)
                })
                .unwrap_or_else(|| "pool.json".into());
            let emails: Vec<String> = loaded
                .pool
                .accounts
                .iter()
                .map(|a| a.masked_email())
                .collect();
            format!(
                "ok: from {from}; revision {}; accounts {emails:?}",
                loaded.pool.revision
            )
        }
        Err(e) => format!(
            "error: {}",
            e.to_string()
                .replace(&store.dir().display().to_string(), "<dir>")
                // One snapshot for every OS: `<dir>\pool.json` on Windows.
                .replace("<dir>\\", "<dir>/")
        ),
    }
}

#[test]
fn corruption_recovery_matrix() {
    type Damage = fn(&Path);
    let cases: Vec<(&str, Damage)> = vec![
        ("intact", |_| {}),
        ("missing", |p| std::fs::remove_file(p).unwrap()),
        ("empty", |p| std::fs::write(p, b"").unwrap()),
        ("whitespace", |p| std::fs::write(p, b" \n\t\n").unwrap()),
        ("truncated", |p| {
            let b = std::fs::read(p).unwrap();
            std::fs::write(p, &b[..b.len() / 2]).unwrap();
        }),
        ("garbage", |p| {
            std::fs::write(p, b"\x00\x01not json at all").unwrap()
        }),
        ("wrong shape", |p| std::fs::write(p, b"[1, 2, 3]").unwrap()),
        ("bad account", |p| {
            std::fs::write(p, br#"{"version": 2, "accounts": [{"email": 5}]}"#).unwrap()
        }),
        // Another tool replacing the file (new inode) rather than writing into it.
        ("replaced", |p| {
            let other = p.with_extension("other");
            std::fs::write(&other, b"{\"accounts\": oops").unwrap();
            std::fs::rename(&other, p).unwrap();
        }),
        ("newer version", |p| {
            std::fs::write(p, br#"{"version": 99, "accounts": []}"#).unwrap()
        }),
    ];
    let mut out = String::new();
    for (name, damage) in cases {
        let dir = tempfile::tempdir().unwrap();
        let store = seeded(dir.path());
        damage(&store.file());
        out.push_str(&format!("{name:>13}: {}\n", summary(&store)));
    }
    // And with every backup gone too.
    for (name, bytes) in [
        ("garbage, no backups", &b"{{{"[..]),
        ("empty, no backups", &b""[..]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = seeded(dir.path());
        for b in store.backups_newest_first().unwrap() {
            std::fs::remove_file(b).unwrap();
        }
        std::fs::write(store.file(), bytes).unwrap();
        out.push_str(&format!("{name:>13}: {}\n", summary(&store)));
    }
    // After the user removed every account: never recovered from the older backups.
    type Empty = fn(&PoolStore);
    let emptied: Vec<(&str, Empty)> = vec![
        ("reset, missing", |s| s.reset().unwrap()),
        ("removed, garbage", |s| {
            s.update(|p| p.accounts.clear()).unwrap();
        }),
    ];
    for (name, empty) in emptied {
        let dir = tempfile::tempdir().unwrap();
        let store = seeded(dir.path());
        empty(&store);
        if name.ends_with("missing") {
            std::fs::remove_file(store.file()).unwrap();
        } else {
            std::fs::write(store.file(), b"\x00garbage").unwrap();
        }
        out.push_str(&format!("{name:>13}: {}\n", summary(&store)));
    }
    insta::assert_snapshot!(out);
}

#[test]
fn a_damaged_file_is_set_aside_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(dir.path());
    std::fs::write(store.file(), b"{\"version\": 2, \"accounts\": [").unwrap();
    store
        .update(|p| p.upsert(account("dave@example.com", "acct-d")))
        .unwrap();
    let loaded = store.load().unwrap();
    assert!(loaded.recovery.is_none());
    // Restored revision 2 (alice, bob) + dave.
    let ids: Vec<_> = loaded
        .pool
        .accounts
        .iter()
        .map(|a| a.account_id.clone().unwrap())
        .collect();
    assert_eq!(ids, ["acct-a", "acct-b", "acct-d"]);
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pool.json.damaged-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read(dir.path().join(&aside[0])).unwrap(),
        b"{\"version\": 2, \"accounts\": ["
    );
}

#[test]
fn a_newer_pool_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(dir.path());
    let newer = br#"{"version": 4, "accounts": [], "future": true}"#;
    std::fs::write(store.file(), newer).unwrap();
    let err = store.update(|p| p.accounts.clear()).unwrap_err();
    assert!(err.to_string().contains("version 4"), "{err}");
    assert_eq!(std::fs::read(store.file()).unwrap(), newer);
}

#[test]
fn removing_every_account_is_not_undone_by_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(dir.path());
    store.update(|p| p.accounts.clear()).unwrap();
    let loaded = store.load().unwrap();
    assert!(loaded.pool.accounts.is_empty());
    assert!(loaded.recovery.is_none());
    // Removing the last account is a reset: damage to the (empty) pool afterwards does not
    // bring the removed accounts back from the backups that still hold them.
    std::fs::write(store.file(), b"{\"version\": 2, \"acc").unwrap();
    let loaded = store.load().unwrap();
    assert!(loaded.pool.accounts.is_empty(), "{:?}", loaded.pool);
    assert_eq!(
        loaded.recovery.unwrap().reason,
        RestoreReason::IntentionalReset
    );
    // The damaged file is kept aside when the next update writes.
    store
        .update(|p| p.extra.insert("k".into(), 1.into()))
        .unwrap();
    assert_eq!(damaged_files(dir.path()).len(), 1);

    // An explicit reset, then the file disappears: still empty, and it says why.
    let dir2 = tempfile::tempdir().unwrap();
    let store = seeded(dir2.path());
    store.reset().unwrap();
    assert!(store.load().unwrap().pool.accounts.is_empty());
    std::fs::remove_file(store.file()).unwrap();
    let loaded = store.load().unwrap();
    assert!(loaded.pool.accounts.is_empty());
    assert_eq!(
        loaded.recovery.unwrap().reason,
        RestoreReason::IntentionalReset
    );
    // Adding accounts afterwards clears the reset: a later loss recovers them, the newest
    // change included.
    store
        .update(|p| p.upsert(account("erin@example.com", "acct-e")))
        .unwrap();
    store
        .update(|p| p.upsert(account("fred@example.com", "acct-f")))
        .unwrap();
    std::fs::remove_file(store.file()).unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(
        loaded.recovery.unwrap().reason,
        RestoreReason::MissingStorage
    );
    assert_eq!(loaded.pool.accounts.len(), 2);
}

fn damaged_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pool.json.damaged-"))
        .collect()
}

#[test]
fn reset_refuses_a_newer_pool_and_keeps_a_damaged_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(dir.path());
    let newer = br#"{"version": 4, "accounts": [], "future": true}"#;
    std::fs::write(store.file(), newer).unwrap();
    let err = store.reset().unwrap_err();
    assert!(err.to_string().contains("version 4"), "{err}");
    assert_eq!(std::fs::read(store.file()).unwrap(), newer);
    assert!(!dir.path().join("pool.reset").exists());

    // Damaged with no backup left: reset still works, and the damaged bytes are kept.
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(dir.path());
    for b in store.backups_newest_first().unwrap() {
        std::fs::remove_file(b).unwrap();
    }
    std::fs::write(store.file(), b"{{{ damaged").unwrap();
    store.reset().unwrap();
    assert!(store.load().unwrap().pool.accounts.is_empty());
    let aside = damaged_files(dir.path());
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read(dir.path().join(&aside[0])).unwrap(),
        b"{{{ damaged"
    );
    // A second damaged file in the same second does not overwrite the first.
    std::fs::write(store.file(), b"{{{ damaged again").unwrap();
    store.reset().unwrap();
    assert_eq!(damaged_files(dir.path()).len(), 2);
}

#[cfg(unix)]
#[test]
fn pool_files_and_a_new_pool_directory_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let base = tempfile::tempdir().unwrap();
    let store = seeded(&base.path().join("nested").join("pool"));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(store.dir()), 0o700);
    assert_eq!(mode(&store.file()), 0o600);
    for backup in store.backups_newest_first().unwrap() {
        assert_eq!(mode(&backup), 0o600);
    }
}

#[test]
fn backups_rotate_and_keep_the_last_n() {
    let dir = tempfile::tempdir().unwrap();
    let store = PoolStore::new(dir.path()).with_backups(3);
    for i in 0..10 {
        store
            .update(|p| p.upsert(account(&format!("u{i}@example.com"), &format!("acct-{i}"))))
            .unwrap();
    }
    let names: Vec<_> = store
        .backups_newest_first()
        .unwrap()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "pool.json.bak-000000000010",
            "pool.json.bak-000000000009",
            "pool.json.bak-000000000008"
        ]
    );
    // The newest backup is the current file itself (a hard link, not a copy).
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let main = std::fs::metadata(store.file()).unwrap();
        let newest = std::fs::metadata(&store.backups_newest_first().unwrap()[0]).unwrap();
        assert_eq!((main.dev(), main.ino()), (newest.dev(), newest.ino()));
    }
    // An unchanged update writes nothing.
    let before = std::fs::read(store.file()).unwrap();
    store.update(|_| ()).unwrap();
    assert_eq!(std::fs::read(store.file()).unwrap(), before);
}

const V1_FIXTURE: &str = r#"{
  "version": 1,
  "activeIndex": 1,
  "accounts": [
    {"accountId": "acct-a", "email": "alice@example.com", "plan": "plus", "tokens": TOKENS_A,
     "addedAt": 1700000000123, "lastUsed": 1700000500999, "disabled": false},
    {"accountId": "acct-b", "email": "Bob@Example.com", "tokens": TOKENS_B,
     "addedAt": 1700000100000, "disabled": true,
     "rateLimitResetAt": {"gpt-5": 1700003600000}, "nickname": "work"}
  ],
  "theme": "dark"
}"#;

fn tokens_json(email: &str, id: &str) -> String {
    serde_json::to_string(&tokens(email, id, &format!("rt-{id}"))).unwrap()
}

#[test]
fn migrates_v1_documents_forward() {
    let dir = tempfile::tempdir().unwrap();
    let store = PoolStore::new(dir.path());
    let v1 = V1_FIXTURE
        .replace("TOKENS_A", &tokens_json("alice@example.com", "acct-a"))
        .replace("TOKENS_B", &tokens_json("Bob@Example.com", "acct-b"));
    std::fs::write(store.file(), v1).unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(loaded.migrated_from, Some(1));
    assert_eq!(loaded.pool.active_index(), Some(1));
    // The first write stores it as v2; the v1 file stays as a backup.
    store.update(|_| ()).unwrap();
    let mut on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.file()).unwrap()).unwrap();
    for a in on_disk["accounts"].as_array_mut().unwrap() {
        a["tokens"] = "<tokens>".into();
    }
    insta::assert_json_snapshot!(on_disk);
    assert!(store.load().unwrap().migrated_from.is_none());
    // Backups: the v1 file as it was (revision 0) and the migrated one (revision 1).
    let backups = store.backups_newest_first().unwrap();
    assert_eq!(backups.len(), 2, "{backups:?}");
    let oldest = std::fs::read_to_string(&backups[1]).unwrap();
    assert!(oldest.contains("\"activeIndex\": 1"), "{oldest}");
}

#[test]
fn debug_output_masks_emails_and_redacts_tokens() {
    let mut pool = PoolDocument::default();
    pool.upsert(account("alice@example.com", "acct-a"));
    pool.set_active(0, 5);
    let text = format!("{pool:?}");
    assert!(!text.contains("alice@"), "{text}");
    assert!(!text.contains("rt-acct-a"), "{text}");
    assert!(text.contains("a***@example.com"), "{text}");
}

fn arb_account() -> impl Strategy<Value = Account> {
    (
        "[a-z]{1,8}",
        proptest::option::of("acct-[a-z0-9]{1,6}"),
        any::<bool>(),
        proptest::collection::btree_map("[a-z0-9.-]{1,8}", any::<u64>(), 0..3),
        0u32..10,
        any::<u64>(),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(|(user, id, enabled, cooldowns, failures, added, used)| {
            let id_for_token = id.clone().unwrap_or_else(|| "none".into());
            let mut a = Account::from_login(
                tokens(
                    &format!("{user}@example.com"),
                    &id_for_token,
                    &format!("rt-{user}"),
                ),
                None,
                added,
            );
            a.account_id = id;
            a.enabled = enabled;
            a.cooldowns = cooldowns;
            a.health.consecutive_failures = failures;
            a.last_used_at = used;
            a
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn pool_documents_round_trip(accounts in proptest::collection::vec(arb_account(), 0..5), active in any::<proptest::sample::Index>()) {
        let mut pool = PoolDocument::default();
        for a in accounts { pool.upsert(a); }
        if !pool.accounts.is_empty() {
            let i = active.index(pool.accounts.len());
            pool.set_active(i, 7);
        }
        let text = serde_json::to_string_pretty(&pool).unwrap();
        let back: PoolDocument = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(&back, &pool);

        // Through the store too: what update writes, load returns (revision bumped once).
        prop_assume!(pool != PoolDocument::default());
        let dir = tempfile::tempdir().unwrap();
        let store = PoolStore::new(dir.path()).with_backups(0);
        let written = pool.clone();
        store.update(move |p| *p = written).unwrap();
        let loaded = store.load().unwrap().pool;
        prop_assert_eq!(loaded.revision, pool.revision + 1);
        let mut expected = pool;
        expected.revision += 1;
        prop_assert_eq!(loaded, expected);
    }
}

/// One v1 account: (has account id, disabled, addedAt ms, lastUsed ms, rate limits ms).
type V1Account = (
    bool,
    bool,
    u64,
    Option<u64>,
    std::collections::BTreeMap<String, u64>,
);

fn arb_v1_account() -> impl Strategy<Value = V1Account> {
    (
        any::<bool>(),
        any::<bool>(),
        0u64..4_000_000_000_000,
        proptest::option::of(0u64..4_000_000_000_000),
        proptest::collection::btree_map("[a-z0-9.-]{1,8}", 0u64..4_000_000_000_000, 0..3),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any v1 document (with or without its `version` field) migrates to the same accounts,
    /// times in seconds, `disabled` inverted, the same active account, a valid unique id per
    /// account that two loads agree on; and a write stores exactly that as the current
    /// version.
    #[test]
    fn any_v1_document_migrates_faithfully(
        accounts in proptest::collection::vec(arb_v1_account(), 1..5),
        active in proptest::option::of(any::<proptest::sample::Index>()),
        with_version in any::<bool>(),
    ) {
        let active = active.map(|i| i.index(accounts.len()));
        let mut v1_accounts = Vec::new();
        for (i, (has_id, disabled, added, used, limits)) in accounts.iter().enumerate() {
            let email = format!("user{i}@example.com");
            let id = format!("acct-{i}");
            let mut a = serde_json::json!({
                "email": email,
                "tokens": serde_json::from_str::<serde_json::Value>(&tokens_json(&email, &id)).unwrap(),
                "addedAt": added,
                "disabled": disabled,
                "rateLimitResetAt": limits,
            });
            if *has_id {
                a["accountId"] = id.into();
            }
            if let Some(used) = used {
                a["lastUsed"] = (*used).into();
            }
            v1_accounts.push(a);
        }
        let mut doc = serde_json::json!({ "accounts": v1_accounts });
        if with_version {
            doc["version"] = 1.into();
        }
        if let Some(i) = active {
            doc["activeIndex"] = i.into();
        }
        let dir = tempfile::tempdir().unwrap();
        let store = PoolStore::new(dir.path());
        std::fs::write(store.file(), serde_json::to_vec(&doc).unwrap()).unwrap();

        let loaded = store.load().unwrap();
        prop_assert_eq!(loaded.migrated_from, Some(1));
        let pool = loaded.pool;
        prop_assert_eq!(pool.accounts.len(), accounts.len());
        for (i, (a, (has_id, disabled, added, used, limits))) in
            pool.accounts.iter().zip(&accounts).enumerate()
        {
            let email = format!("user{i}@example.com");
            prop_assert_eq!(a.email.as_deref(), Some(email.as_str()));
            // The account id is the one v1 stored (none when it had none).
            prop_assert_eq!(a.account_id.is_some(), *has_id);
            prop_assert_eq!(a.added_at, added / 1000);
            prop_assert_eq!(a.last_used_at, used.map(|u| u / 1000));
            prop_assert_eq!(a.enabled, !disabled);
            let expected: std::collections::BTreeMap<String, u64> =
                limits.iter().map(|(k, v)| (k.clone(), v / 1000)).collect();
            prop_assert_eq!(&a.cooldowns, &expected);
        }
        prop_assert_eq!(pool.active_index(), active);
        let ids: std::collections::BTreeSet<&str> = pool.accounts.iter().map(|a| a.id.as_str()).collect();
        prop_assert_eq!(ids.len(), accounts.len());
        prop_assert!(ids.iter().all(|id| auth_storage::pool::is_valid_account_id(id)));
        // A second reader of the same file derives the same ids.
        prop_assert_eq!(&store.load().unwrap().pool, &pool);

        // The first write stores the migrated pool in the current version, unchanged.
        store.update(|_| ()).unwrap();
        let again = store.load().unwrap();
        prop_assert_eq!(again.migrated_from, None);
        let raw: serde_json::Value =
            serde_json::from_slice(&std::fs::read(store.file()).unwrap()).unwrap();
        prop_assert_eq!(&raw["version"], &serde_json::Value::from(auth_storage::pool::CURRENT_VERSION));
        let mut expected = pool;
        expected.revision = again.pool.revision;
        prop_assert_eq!(again.pool, expected);
    }
}
