//! Parsing an OpenAI-shaped id token: `auth_core::jwt::parse_id_token` versus the
//! `jsonwebtoken` crate's decode without validation (`dangerous::insecure_decode`, the
//! only decode that needs no crypto backend), measured in the same run. Prints the ratio.
//!
//! Run briefly: `cargo bench --workspace --all-features --bench jwt_parse -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::time::{Duration, Instant};

use auth_core::jwt::{self, IdTokenClaims, PlanType};
use criterion::{Criterion, criterion_group, criterion_main};
use serde::Deserialize;

/// What a user of `jsonwebtoken` would declare to read the same claims.
#[derive(Deserialize)]
#[allow(dead_code)] // fields are read by the deserializer only
struct JwtClaims {
    email: Option<String>,
    exp: Option<i64>,
    iat: Option<i64>,
    #[serde(rename = "https://api.openai.com/auth")]
    auth: Option<JwtAuth>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct JwtAuth {
    chatgpt_plan_type: Option<String>,
    chatgpt_account_id: Option<String>,
    chatgpt_user_id: Option<String>,
}

fn token() -> String {
    jwt::encode_unsigned_for_testing(&IdTokenClaims {
        email: Some("someone.with.a.long.name@example.com".into()),
        exp: Some(1_900_000_000),
        iat: Some(1_899_996_400),
        chatgpt_plan_type: Some(PlanType::Pro),
        chatgpt_account_id: Some("11111111-2222-3333-4444-555555555555".into()),
        chatgpt_user_id: Some("user-AbCdEfGhIjKlMnOpQrStUv".into()),
    })
}

fn ours(token: &str) -> IdTokenClaims {
    jwt::parse_id_token(token).expect("valid token")
}

fn baseline(token: &str) -> JwtClaims {
    jsonwebtoken::dangerous::insecure_decode::<JwtClaims>(token)
        .expect("valid token")
        .claims
}

fn time_per_call(f: impl Fn(), iterations: u32) -> Duration {
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed() / iterations
}

fn bench(c: &mut Criterion) {
    let token = token();
    // Both must read the same claims, or the comparison is meaningless.
    let a = ours(&token);
    let b = baseline(&token);
    assert_eq!(a.email, b.email);
    assert_eq!(a.exp, b.exp);
    assert_eq!(
        a.chatgpt_account_id,
        b.auth.as_ref().and_then(|x| x.chatgpt_account_id.clone())
    );

    let mut group = c.benchmark_group("parse_id_token");
    group.bench_function("auth_core", |bench| bench.iter(|| ours(black_box(&token))));
    group.bench_function("jsonwebtoken_insecure_decode", |bench| {
        bench.iter(|| baseline(black_box(&token)))
    });
    group.finish();

    // Same-run ratio from a manual timing loop (criterion's own estimates are in
    // target/criterion): 9 alternating rounds of 20,000 calls each; the fastest round
    // of each side is kept, so a burst of load from other processes on a shared
    // machine skews neither side.
    let n = 20_000;
    let _ = time_per_call(|| drop(black_box(ours(black_box(&token)))), n / 10);
    let (mut ours_t, mut base_t) = (Duration::MAX, Duration::MAX);
    for _ in 0..9 {
        ours_t = ours_t.min(time_per_call(
            || drop(black_box(ours(black_box(&token)))),
            n,
        ));
        base_t = base_t.min(time_per_call(
            || drop(black_box(baseline(black_box(&token)))),
            n,
        ));
    }
    println!(
        "parse_id_token: auth_core {:?}/call, jsonwebtoken insecure_decode {:?}/call, ratio jsonwebtoken/auth_core = {:.2}x (fastest of 9 alternating rounds of {n} calls)",
        ours_t,
        base_t,
        base_t.as_secs_f64() / ours_t.as_secs_f64().max(f64::MIN_POSITIVE)
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
