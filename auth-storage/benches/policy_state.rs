//! The per-event state write: one account's state changes (a 429 cooldown) and is written
//! with `PoolStore::save_policy_state` (locked, merged, atomic, fsynced) at 1,000 and 10,000
//! accounts — the state file seeded with every account's state, the pool file with
//! real-sized accounts — compared, in the same run, with what tools do today: read
//! `pool.json`, parse, set that account's `cooldowns`, `fs::write` the whole file back (no
//! lock, no fsync). A second baseline, for honesty: the same naive unlocked rewrite of the
//! state file itself (what ours costs over that is the lock, the merge and the fsyncs).
//!
//! Run: `cargo bench -p auth-storage --features policy --bench policy_state -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use auth_core::jwt::IdTokenClaims;
use auth_core::{Secret, TokenData};
use auth_storage::PoolStore;
use auth_storage::pool::{Account, PoolDocument};
use criterion::{Criterion, criterion_group, criterion_main};
use rotation_policy::{AccountId, AccountState, FamilyState, PolicyState, Timestamp};

/// Wall-clock-like millisecond timestamps (the state file's unit).
const NOW_MS: u64 = 1_700_000_000_000;

/// A real-sized account, as in the `pool_update` bench.
fn account(i: usize) -> Account {
    let claims = IdTokenClaims {
        email: Some(format!("user{i}@example.com")),
        exp: Some(4_000_000_000),
        chatgpt_account_id: Some(format!("acct-{i}")),
        ..IdTokenClaims::default()
    };
    let id = auth_core::jwt::encode_unsigned_for_testing(&claims);
    let tokens = TokenData::new(
        Secret::new(id),
        Secret::new(format!("access-{i}-{}", "a".repeat(700))),
        Secret::new(format!("rt-{i}")),
        Some(format!("acct-{i}")),
    )
    .unwrap();
    Account::from_login(tokens, None, 1_700_000_000)
}

/// A pool of `n` accounts in `dir` and their stable ids.
fn seeded_pool(dir: &Path, n: usize) -> (PoolStore, Vec<AccountId>) {
    let store = PoolStore::new(dir).with_backups(3);
    store
        .update(|p| {
            for i in 0..n {
                p.accounts.push(account(i));
            }
        })
        .unwrap();
    let ids = store
        .load()
        .unwrap()
        .pool
        .accounts
        .iter()
        .map(|a| AccountId::new(a.id.clone()).unwrap())
        .collect();
    (store, ids)
}

/// What the policy writes for an account after a 429 at `tick`: a family cooldown and the
/// health observation that came with it.
fn rate_limited(tick: u64) -> AccountState {
    let mut state = AccountState::default();
    state.families.insert(
        "gpt-5".into(),
        FamilyState::new(Timestamp::from_millis(NOW_MS + 60_000 + tick), 1),
    );
    state.health = 85;
    state.health_at = Timestamp::from_millis(NOW_MS + tick);
    state
}

fn one(id: &AccountId, tick: u64) -> PolicyState {
    let mut state = PolicyState::default();
    state.accounts.insert(id.clone(), rate_limited(tick));
    state
}

/// The state file seeded with every account's state.
fn seed_state(store: &PoolStore, ids: &[AccountId]) {
    let mut all = PolicyState::default();
    for (i, id) in ids.iter().enumerate() {
        all.accounts.insert(id.clone(), rate_limited(i as u64));
    }
    store.save_policy_state(&all).unwrap();
}

/// Baseline 1, what tools do today: unlocked read-modify-write of the whole pool file, in
/// place, no fsync.
fn naive_pool_write(path: &Path, index: usize, tick: u64) {
    let mut pool: PoolDocument = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    pool.accounts[index]
        .cooldowns
        .insert("gpt-5".into(), (NOW_MS + 60_000 + tick) / 1000);
    std::fs::write(path, serde_json::to_vec_pretty(&pool).unwrap()).unwrap();
}

/// Baseline 2: the same naive rewrite of the state file (no lock, no fsync, in place).
fn naive_state_write(path: &Path, change: &PolicyState) {
    let mut state: PolicyState = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    state.merge(change);
    std::fs::write(path, serde_json::to_vec(&state).unwrap()).unwrap();
}

fn mean(iterations: u32, mut f: impl FnMut(u64)) -> Duration {
    let start = Instant::now();
    for i in 0..iterations {
        f(u64::from(i));
    }
    start.elapsed() / iterations
}

fn per_event_write(c: &mut Criterion) {
    let mut group = c.benchmark_group("policy_state_write");
    group.sample_size(10);
    for n in [1_000usize, 10_000] {
        let dir = tempfile::tempdir().unwrap();
        let (store, ids) = seeded_pool(dir.path(), n);
        seed_state(&store, &ids);
        // The naive baselines work on copies, so every variant starts from the same files.
        let naive_dir = tempfile::tempdir().unwrap();
        let naive_pool = naive_dir.path().join("pool.json");
        let naive_state = naive_dir.path().join("pool-state.json");
        std::fs::copy(store.file(), &naive_pool).unwrap();
        std::fs::copy(store.state_file(), &naive_state).unwrap();

        let mut tick = 0u64;
        group.bench_function(format!("ours_locked_merged_atomic_fsync/{n}"), |b| {
            b.iter(|| {
                tick += 1;
                let i = (tick as usize * 7) % n;
                store
                    .save_policy_state(black_box(&one(&ids[i], tick)))
                    .unwrap();
            })
        });
        group.bench_function(format!("naive_pool_json_rewrite/{n}"), |b| {
            b.iter(|| {
                tick += 1;
                naive_pool_write(black_box(&naive_pool), (tick as usize * 7) % n, tick);
            })
        });
        group.bench_function(format!("naive_state_file_rewrite/{n}"), |b| {
            b.iter(|| {
                tick += 1;
                let i = (tick as usize * 7) % n;
                naive_state_write(black_box(&naive_state), &one(&ids[i], tick));
            })
        });

        // The figures, measured again here so the ratios are printed even with --quick runs.
        let iterations = if n >= 10_000 { 10 } else { 40 };
        let base = 1_000_000;
        let ours = mean(iterations, |k| {
            let i = (k as usize * 13) % n;
            store.save_policy_state(&one(&ids[i], base + k)).unwrap();
        });
        let naive = mean(iterations, |k| {
            naive_pool_write(&naive_pool, (k as usize * 13) % n, base + k)
        });
        let naive_state_file = mean(iterations, |k| {
            let i = (k as usize * 13) % n;
            naive_state_write(&naive_state, &one(&ids[i], base + k));
        });
        let pool_bytes = std::fs::metadata(store.file()).unwrap().len();
        let state_bytes = std::fs::metadata(store.state_file()).unwrap().len();
        println!(
            "policy_state n={n:>6}: ours {ours:>10.2?}  naive {naive:>10.2?}  ratio (ours / naive) {:.3}x  \
             | naive state-file rewrite {naive_state_file:>10.2?}  ratio (ours / that) {:.2}x  \
             | pool.json {} KiB, pool-state.json {} KiB",
            ours.as_secs_f64() / naive.as_secs_f64(),
            ours.as_secs_f64() / naive_state_file.as_secs_f64(),
            pool_bytes / 1024,
            state_bytes / 1024,
        );
    }
    group.finish();
}

criterion_group!(benches, per_event_write);
criterion_main!(benches);
