//! Proxy overhead on loopback: the same requests sent straight to the mock upstream
//! (baseline) and through the rotation proxy, measured in the same run.
//!
//! Criterion first measures one request's latency (JSON and SSE, direct and through the
//! proxy). Then a manual pass prints latency p50/p99 for sequential requests and throughput
//! at 16 concurrent clients, for small JSON answers and for SSE streams, the proxy/direct
//! ratios, and the proxy's peak RSS. The proxy runs in a child process (this binary
//! re-executed) so its memory is measured alone.
//! `cargo bench -p examples --bench proxy_overhead` (≈25 s).
//!
//! Target from the issue: < 0.3 ms added p50 on the development machine.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use auth_core::Secret;
use criterion::Criterion;
use examples::mock_upstream::{MockConfig, MockUpstream};
use examples::proxy::{Accounts, ProxyOptions, RotationProxy, WrapperToken};

const CHILD_ENV: &str = "PROXY_BENCH_CHILD_UPSTREAM";
const TOKEN: &str = "bench-wrapper-token-0123456789";
const SEQUENTIAL: usize = 1500;
const WARMUP: usize = 200;
const CONCURRENCY: usize = 16;
const THROUGHPUT_FOR: Duration = Duration::from_millis(1500);

fn main() {
    if let Ok(upstream) = std::env::var(CHILD_ENV) {
        child(upstream);
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let setup = runtime.block_on(start());
    criterion_pass(&runtime, &setup);
    runtime.block_on(report(&setup));
    let Setup {
        mut child, mock, ..
    } = setup;
    drop(child.stdin.take());
    let _ = child.wait();
    runtime.block_on(mock.shutdown());
}

/// Criterion's estimate of one request's latency on each path (the in-run baseline is the
/// direct path); its summary prints per benchmark.
fn criterion_pass(runtime: &tokio::runtime::Runtime, setup: &Setup) {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args();
    let mut group = c.benchmark_group("proxy_overhead");
    for (name, stream) in [("json", false), ("sse", true)] {
        let body = serde_json::json!({"model": "gpt-5", "input": "benchmark", "stream": stream})
            .to_string();
        for (path, url, auth) in [
            ("direct", &setup.direct, None),
            ("proxy", &setup.proxied, Some(TOKEN)),
        ] {
            group.bench_function(format!("{name}/{path}"), |b| {
                b.iter(|| {
                    runtime.block_on(send(
                        setup.client.clone(),
                        url.clone(),
                        body.clone(),
                        auth.map(str::to_owned),
                    ))
                })
            });
        }
    }
    group.finish();
    c.final_summary();
}

/// The proxy process: one account per mock account, no pacing bucket, serves until stdin closes.
fn child(upstream: String) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let mock_accounts: Vec<String> = std::env::var("PROXY_BENCH_ACCOUNTS")
            .unwrap_or_default()
            .split(';')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let mut accounts = Accounts::new();
        for encoded in mock_accounts {
            let tokens: auth_core::TokenData = serde_json::from_str(&encoded).expect("token json");
            accounts.push(None, None, tokens).expect("account");
        }
        let token = WrapperToken::new(Secret::new(TOKEN.into()), "bench").expect("token");
        let mut options = ProxyOptions::new(upstream, token);
        options.policy.bucket = None;
        let proxy = RotationProxy::start(options, accounts)
            .await
            .expect("proxy starts");
        println!("READY {}", proxy.addr());
        std::io::stdout().flush().ok();
        tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin()
                .read_line(&mut sink)
                .map(|n| n > 0)
                .unwrap_or(false)
            {}
        })
        .await
        .ok();
        proxy.shutdown().await;
    });
}

struct Stats {
    p50: Duration,
    p99: Duration,
    per_sec: f64,
}

async fn send(client: reqwest::Client, url: String, body: String, auth: Option<String>) {
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(a) = auth {
        req = req.bearer_auth(a);
    }
    let response = req.send().await.expect("request");
    assert!(
        response.status().is_success(),
        "status {}",
        response.status()
    );
    let bytes = response.bytes().await.expect("body");
    assert!(!bytes.is_empty());
}

async fn measure(client: &reqwest::Client, url: &str, auth: Option<&str>, stream: bool) -> Stats {
    let body =
        serde_json::json!({"model": "gpt-5", "input": "benchmark", "stream": stream}).to_string();
    let auth = auth.map(str::to_owned);
    for _ in 0..WARMUP {
        send(client.clone(), url.to_owned(), body.clone(), auth.clone()).await;
    }
    let mut samples = Vec::with_capacity(SEQUENTIAL);
    for _ in 0..SEQUENTIAL {
        let t = Instant::now();
        send(client.clone(), url.to_owned(), body.clone(), auth.clone()).await;
        samples.push(t.elapsed());
    }
    samples.sort_unstable();
    let p50 = samples[samples.len() / 2];
    let p99 = samples[samples.len() * 99 / 100];

    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + THROUGHPUT_FOR;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, url, body, auth, done) = (
            client.clone(),
            url.to_owned(),
            body.clone(),
            auth.clone(),
            done.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                send(client.clone(), url.clone(), body.clone(), auth.clone()).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    let per_sec = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    Stats { p50, p99, per_sec }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

struct Setup {
    mock: MockUpstream,
    child: std::process::Child,
    pid: u32,
    client: reqwest::Client,
    direct: String,
    proxied: String,
}

async fn start() -> Setup {
    let mock = MockUpstream::start(MockConfig::default().deltas(16))
        .await
        .expect("mock");
    let accounts: Vec<String> = ["ws-1", "ws-2", "ws-3"]
        .iter()
        .map(|id| {
            let a = mock.synthetic_account(id, &format!("{id}@example.com"), false);
            serde_json::to_string(&a.tokens).expect("token json")
        })
        .collect();
    let mut child = Command::new(std::env::current_exe().expect("current exe"))
        .env(CHILD_ENV, mock.base_url())
        .env("PROXY_BENCH_ACCOUNTS", accounts.join(";"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the proxy child");
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("child stdout"))
        .read_line(&mut line)
        .expect("child says READY");
    let addr = line
        .trim()
        .strip_prefix("READY ")
        .expect("READY line")
        .to_owned();

    let client = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .build()
        .expect("client");
    let direct = format!("{}/responses", mock.base_url());
    let proxied = format!("http://{addr}/v1/responses");

    Setup {
        mock,
        child,
        pid,
        client,
        direct,
        proxied,
    }
}

async fn report(setup: &Setup) {
    let Setup {
        pid,
        client,
        direct,
        proxied,
        ..
    } = setup;
    let pid = *pid;
    println!(
        "proxy overhead on loopback ({SEQUENTIAL} sequential requests after {WARMUP} warm-up; throughput with {CONCURRENCY} clients for {:.1} s)",
        THROUGHPUT_FOR.as_secs_f64()
    );
    println!(
        "{:<10} {:<8} {:>9} {:>9} {:>10}",
        "payload", "path", "p50 ms", "p99 ms", "req/s"
    );
    for (name, stream) in [("json", false), ("sse", true)] {
        let d = measure(client, direct, None, stream).await;
        let p = measure(client, proxied, Some(TOKEN), stream).await;
        for (path, s) in [("direct", &d), ("proxy", &p)] {
            println!(
                "{:<10} {:<8} {:>9.3} {:>9.3} {:>10.0}",
                name,
                path,
                ms(s.p50),
                ms(s.p99),
                s.per_sec
            );
        }
        println!(
            "{:<10} ratio    p50 ×{:.2} (+{:.3} ms)  p99 ×{:.2}  throughput ×{:.2}",
            name,
            ms(p.p50) / ms(d.p50),
            ms(p.p50) - ms(d.p50),
            ms(p.p99) / ms(d.p99),
            p.per_sec / d.per_sec
        );
    }
    match peak_rss_kib(pid) {
        Some(kib) => println!(
            "proxy peak RSS (VmHWM of the proxy process): {:.1} MiB",
            kib as f64 / 1024.0
        ),
        None => println!("proxy peak RSS: unavailable (no /proc)"),
    }
}
