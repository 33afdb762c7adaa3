//! Pool `update` latency (locked, atomic, fsynced) at 10 / 1,000 / 10,000 accounts, and the
//! throughput of concurrent updaters — each compared, in the same run, with the naive
//! approach tools use today: read, parse, modify, `fs::write` in place, no lock, no fsync.
//!
//! Run: `cargo bench -p auth-storage --bench pool_update -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use auth_core::jwt::IdTokenClaims;
use auth_core::{Secret, TokenData};
use auth_storage::PoolStore;
use auth_storage::pool::{Account, PoolDocument};
use criterion::{Criterion, criterion_group, criterion_main};

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

fn seeded(dir: &Path, n: usize) -> PoolStore {
    let store = PoolStore::new(dir).with_backups(3);
    store
        .update(|p| {
            for i in 0..n {
                p.accounts.push(account(i));
            }
        })
        .unwrap();
    store
}

/// The baseline: unlocked load-modify-write, truncating the file in place, no fsync.
fn naive_update(path: &Path, change: impl FnOnce(&mut PoolDocument)) {
    let mut pool: PoolDocument = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    change(&mut pool);
    std::fs::write(path, serde_json::to_vec_pretty(&pool).unwrap()).unwrap();
}

fn touch(p: &mut PoolDocument, tick: u64) {
    p.accounts[0].last_used_at = Some(tick);
}

fn mean(iterations: u32, mut f: impl FnMut(u64)) -> Duration {
    let start = Instant::now();
    for i in 0..iterations {
        f(u64::from(i));
    }
    start.elapsed() / iterations
}

fn latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool_update");
    group.sample_size(10);
    for n in [10usize, 1_000, 10_000] {
        let dir = tempfile::tempdir().unwrap();
        let store = seeded(dir.path(), n);
        let mut tick = 0u64;
        group.bench_function(format!("locked_atomic_fsync/{n}"), |b| {
            b.iter(|| {
                tick += 1;
                store.update(|p| touch(p, tick)).unwrap();
            })
        });
        let naive_dir = tempfile::tempdir().unwrap();
        let naive_path = seeded(naive_dir.path(), n).file();
        group.bench_function(format!("naive_unlocked/{n}"), |b| {
            b.iter(|| {
                tick += 1;
                naive_update(black_box(&naive_path), |p| touch(p, tick));
            })
        });
        // The figures, measured again here so the ratio is printed even with --quick runs.
        let iterations = if n >= 10_000 { 5 } else { 30 };
        let ours = mean(iterations, |i| {
            store.update(|p| touch(p, 1_000_000 + i)).unwrap()
        });
        let naive = mean(iterations, |i| {
            naive_update(&naive_path, |p| touch(p, 1_000_000 + i))
        });
        println!(
            "pool_update n={n:>6}: locked+atomic+fsync {ours:>10.2?}  naive {naive:>10.2?}  ratio {:.2}x",
            ours.as_secs_f64() / naive.as_secs_f64()
        );
    }
    group.finish();
}

fn counter(p: &PoolDocument) -> u64 {
    p.extra.get("n").and_then(|v| v.as_u64()).unwrap_or(0)
}

fn increment(p: &mut PoolDocument) {
    let next = counter(p) + 1;
    p.extra.insert("n".into(), next.into());
}

fn concurrent(_c: &mut Criterion) {
    const THREADS: u64 = 4;
    const EACH: u64 = 50;
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(dir.path(), 10);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for _ in 0..EACH {
                    store.update(increment).unwrap();
                }
            });
        }
    });
    let ours = start.elapsed();
    let ours_count = counter(&store.load().unwrap().pool);

    let naive_dir = tempfile::tempdir().unwrap();
    let path = seeded(naive_dir.path(), 10).file();
    let start = Instant::now();
    let mut torn = 0u32;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| {
                    let mut torn = 0u32;
                    for _ in 0..EACH {
                        // A concurrent in-place write can leave a torn file; count and retry.
                        for _ in 0..100 {
                            let ok = std::fs::read(&path)
                                .ok()
                                .and_then(|b| serde_json::from_slice::<PoolDocument>(&b).ok())
                                .map(|mut p| {
                                    increment(&mut p);
                                    std::fs::write(&path, serde_json::to_vec_pretty(&p).unwrap())
                                        .unwrap();
                                })
                                .is_some();
                            if ok {
                                break;
                            }
                            torn += 1;
                        }
                    }
                    torn
                })
            })
            .collect();
        torn = handles.into_iter().map(|h| h.join().unwrap()).sum();
    });
    let naive = start.elapsed();
    let naive_count = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<PoolDocument>(&b).ok())
        .map(|p| counter(&p))
        .unwrap_or(0);
    let total = THREADS * EACH;
    println!(
        "concurrent {THREADS} threads x {EACH}: locked {:.0} updates/s, {ours_count}/{total} kept | naive {:.0} updates/s, {naive_count}/{total} kept, {torn} torn reads",
        total as f64 / ours.as_secs_f64(),
        total as f64 / naive.as_secs_f64(),
    );
    assert_eq!(
        ours_count, total,
        "the locked store must never lose an update"
    );
}

criterion_group!(benches, latency, concurrent);
criterion_main!(benches);
