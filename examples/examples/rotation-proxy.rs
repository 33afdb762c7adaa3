//! A loopback rotation proxy for the Codex CLI over an `auth-storage` account pool.
//!
//! ```text
//! cargo run --example rotation-proxy -- [--listen 127.0.0.1:PORT] [--pool-dir DIR]
//!     [--codex-home DIR] [--upstream URL] [--no-config-rewrite] [--body-budget BYTES]
//!     [--refresh-margin SECS] [--bucket-capacity N] [--bucket-refill-ms MS]
//!     [--usage-probe [--usage-probe-url URL] [--usage-probe-interval SECS]
//!      [--usage-probe-stale SECS] [--usage-probe-per-minute N] [--usage-probe-timeout SECS]]
//!     [--overflow [--overflow-url URL] [--overflow-key-env NAME | --overflow-key-file PATH]]
//!     [--strategy lru|round-robin|health|quota-aware|sticky] [--usage-threshold PERCENT]
//!     [--max-wait-ms MS]
//! ```
//!
//! On start it points `CODEX_HOME/config.toml` at itself (provider `rotation-proxy`,
//! `env_key = "ROTATION_PROXY_TOKEN"`), undoing first a stale rewrite left by a crashed run;
//! on Ctrl-C or SIGTERM it drains open streams and restores the file. Then
//! `ROTATION_PROXY_TOKEN=… codex exec "…"` goes through the proxy, which picks an account per
//! request with `rotation-policy`, refreshes tokens with `auth-core` and saves them to the pool.
//!
//! Requests are forwarded only under `--upstream`'s path: a target that would leave it
//! (`/v1/../x`, `/v1/%2e%2e/x`, encoded separators, absolute-form URLs, …) is answered `400`
//! and never sent. Request bodies held at once are bounded by `--body-budget` (default
//! 256 MiB; over it → `503` + `Retry-After`).
//!
//! The pool is shared: several proxies, the `accounts` tool and the Codex CLI may use it at
//! once. Refreshes are coordinated across all of them (one token request per expiry; tokens
//! the CLI refreshed in a Codex home the pool handed a login to are adopted, never
//! overwritten), and accounts added, removed, disabled or enabled with `accounts` take
//! effect here within a second, without a restart. An upstream answer saying an account's
//! login is gone for everyone (a revoked token, a deactivated workspace) marks it in the
//! pool, so no process uses it until someone signs in to it again.
//!
//! Two capabilities are off unless asked for. `--usage-probe` asks the backend's usage
//! endpoint about accounts whose usage nobody has seen for a while (at most
//! `--usage-probe-per-minute` queries a minute, never refreshing a token for it), so an
//! account near its limit is left alone before a request finds out. `--overflow` lets an
//! OpenAI API key (read from `$OPENAI_API_KEY`, `--overflow-key-env NAME` or a `chmod 600`
//! `--overflow-key-file`; never from the command line, which other users can read) serve
//! requests while every ChatGPT account is cooling down or out of quota, instead of
//! answering `429`. `/status` shows both (`usage_probe`, `overflow`; never the key).
//!
//! The wrapper token comes from `ROTATION_PROXY_TOKEN`; when unset, one is generated and
//! printed once on stdout. Logs (stderr, `RUST_LOG`) never contain tokens or full emails.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use auth_storage::PoolStore;
use clap::Parser;
use examples::proxy::{
    CHATGPT_CODEX_UPSTREAM, CHATGPT_USAGE_URL, CodexRoute, DEFAULT_BODY_BUDGET, MAX_PER_MINUTE,
    OPENAI_API_BASE, OPENAI_TOKEN_URL, OverflowSource, ProxyOptions, RotationProxy, TOKEN_ENV,
    UsageProbe, WrapperToken, load_pool_accounts, shutdown_signal,
};

#[derive(Parser, Debug)]
#[command(about = "Loopback rotation proxy for the Codex CLI over an account pool")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// Allow a listen address that is not loopback (the proxy spends your accounts).
    #[arg(long)]
    allow_remote: bool,
    /// Pool directory (default: auth-storage's default pool directory).
    #[arg(long)]
    pool_dir: Option<PathBuf>,
    /// Codex home whose config.toml is pointed at the proxy (default: $CODEX_HOME, else ~/.codex).
    #[arg(long)]
    codex_home: Option<PathBuf>,
    /// Upstream base URL; /v1/<path> is forwarded to <upstream>/<path>.
    #[arg(long, default_value = CHATGPT_CODEX_UPSTREAM)]
    upstream: String,
    /// OAuth token endpoint for refreshes.
    #[arg(long, default_value = OPENAI_TOKEN_URL)]
    token_url: String,
    /// Leave config.toml alone.
    #[arg(long)]
    no_config_rewrite: bool,
    /// Bytes of request bodies held in memory at once, across all requests; a request that
    /// would go over is answered 503 with Retry-After (one body is also capped at 64 MiB).
    #[arg(long, default_value_t = DEFAULT_BODY_BUDGET, value_name = "BYTES",
          value_parser = parse_body_budget)]
    body_budget: usize,
    /// Refresh an account's access token this many seconds before it expires.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    refresh_margin: u64,
    /// Requests one account may take back to back in this process (its pacing bucket);
    /// 0 turns pacing off. With several proxies over one pool, each paces on its own.
    #[arg(long, default_value_t = 60, value_name = "N")]
    bucket_capacity: u32,
    /// Milliseconds for one account's bucket to regain one request (at least 1).
    #[arg(long, default_value_t = 1000, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..))]
    bucket_refill_ms: u64,
    /// Query the usage endpoint about accounts whose usage is unknown or stale (off by
    /// default). Uses each account's access token as it is: never refreshes one for it.
    #[arg(long)]
    usage_probe: bool,
    /// The usage endpoint.
    #[arg(long, default_value = CHATGPT_USAGE_URL, value_name = "URL", requires = "usage_probe")]
    usage_probe_url: String,
    /// Seconds between looks for accounts to query.
    #[arg(long, default_value_t = 60, value_name = "SECS", requires = "usage_probe",
          value_parser = clap::value_parser!(u64).range(1..))]
    usage_probe_interval: u64,
    /// Query an account when nothing was heard about its usage for this many seconds.
    #[arg(long, default_value_t = 900, value_name = "SECS", requires = "usage_probe",
          value_parser = clap::value_parser!(u64).range(1..))]
    usage_probe_stale: u64,
    /// Usage queries per minute, all accounts together.
    #[arg(long, default_value_t = 6, value_name = "N", requires = "usage_probe",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_PER_MINUTE)))]
    usage_probe_per_minute: u32,
    /// Seconds one usage query may take.
    #[arg(long, default_value_t = 10, value_name = "SECS", requires = "usage_probe",
          value_parser = clap::value_parser!(u64).range(1..))]
    usage_probe_timeout: u64,
    /// Serve requests with an OpenAI API key while every ChatGPT account is cooling down or
    /// out of quota (off by default). The key never goes on the command line.
    #[arg(long)]
    overflow: bool,
    /// The API the key belongs to; /v1/<path> goes to <URL>/<path>.
    #[arg(long, default_value = OPENAI_API_BASE, value_name = "URL", requires = "overflow")]
    overflow_url: String,
    /// Environment variable holding the overflow key.
    #[arg(
        long,
        default_value = "OPENAI_API_KEY",
        value_name = "NAME",
        requires = "overflow"
    )]
    overflow_key_env: String,
    /// File holding the overflow key (first line; chmod 600); instead of the variable.
    #[arg(long, value_name = "PATH", requires = "overflow")]
    overflow_key_file: Option<PathBuf>,
    /// How an account is picked among those that can serve: least recently used,
    /// round robin, by health, quota-aware (the one whose usage window resets soonest:
    /// spends the capacity that would expire unused), or sticky (the last one while it can
    /// serve: warm prompt caches, weekly windows reset at different times).
    #[arg(long, value_enum, default_value_t = StrategyArg::Lru)]
    strategy: StrategyArg,
    /// A reserve: an account whose reported usage of a window reaches this percentage serves
    /// nothing counted against that window until it resets (1–100). Without one (100), an
    /// account is left when the next requests could overflow a window (a margin learned
    /// from the reports).
    #[arg(long, default_value_t = 100, value_name = "PERCENT",
          value_parser = clap::value_parser!(u8).range(1..=100))]
    usage_threshold: u8,
    /// Longest a request is held for an account about to be usable (its pacing bucket
    /// refills, or its cooldown ends, within this time) before the client is answered 429.
    /// 0 answers at once.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    max_wait_ms: u64,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum StrategyArg {
    Lru,
    RoundRobin,
    Health,
    QuotaAware,
    Sticky,
}

impl From<StrategyArg> for rotation_policy::Strategy {
    fn from(arg: StrategyArg) -> Self {
        match arg {
            StrategyArg::Lru => rotation_policy::Strategy::LeastRecentlyUsed,
            StrategyArg::RoundRobin => rotation_policy::Strategy::RoundRobin,
            StrategyArg::Health => rotation_policy::Strategy::HealthWeighted,
            StrategyArg::QuotaAware => rotation_policy::Strategy::QuotaAware,
            StrategyArg::Sticky => rotation_policy::Strategy::Sticky,
        }
    }
}

/// A budget of 0 would answer every request with a body 413: refuse it at start instead.
fn parse_body_budget(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1 (bytes); the default is 268435456 (256 MiB)".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a number of bytes: {e}")),
    }
}

fn default_codex_home() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CODEX_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(home));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".codex"))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // The message can name pool files and carry token-endpoint text: one escaped line.
            eprintln!(
                "rotation-proxy: {}",
                auth_core::terminal::escape_control(&message)
            );
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    if !args.listen.ip().is_loopback() && !args.allow_remote {
        return Err(format!(
            "{} is not a loopback address; pass --allow-remote to listen there anyway",
            args.listen
        ));
    }
    // Installed before anything is announced, so an early Ctrl-C/SIGTERM still restores.
    let signal = shutdown_signal();
    let (token, generated) = WrapperToken::from_env_or_generate().map_err(|e| e.to_string())?;
    let store = match &args.pool_dir {
        Some(dir) => PoolStore::new(dir),
        None => PoolStore::open_default().map_err(|e| e.to_string())?,
    };
    let accounts = tokio::task::spawn_blocking(move || load_pool_accounts(store))
        .await
        .map_err(|_| "loading the pool was cancelled".to_owned())?
        .map_err(|e| e.to_string())?;
    let mut options = ProxyOptions::new(args.upstream.clone(), token.clone());
    options.listen = args.listen;
    options.token_url = args.token_url.clone();
    options.body_budget = args.body_budget;
    options.refresh_margin = std::time::Duration::from_secs(args.refresh_margin);
    options.policy.bucket = (args.bucket_capacity > 0).then(|| {
        rotation_policy::TokenBucket::new(
            args.bucket_capacity,
            std::time::Duration::from_millis(args.bucket_refill_ms),
        )
    });
    if args.usage_probe {
        let mut probe = UsageProbe::new(args.usage_probe_url.clone());
        probe.interval = Duration::from_secs(args.usage_probe_interval);
        probe.stale_after = Duration::from_secs(args.usage_probe_stale);
        probe.per_minute = args.usage_probe_per_minute;
        probe.timeout = Duration::from_secs(args.usage_probe_timeout);
        options.usage_probe = Some(probe);
    }
    if args.overflow {
        let key = match &args.overflow_key_file {
            Some(path) => OverflowSource::key_from_file(path),
            None => OverflowSource::key_from_env(&args.overflow_key_env),
        }
        .map_err(|e| format!("--overflow: {e}"))?;
        options.overflow = Some(OverflowSource::new(args.overflow_url.clone(), key));
    }
    options.policy.strategy = args.strategy.into();
    options.policy.usage_threshold = args.usage_threshold;
    options.policy.max_wait = std::time::Duration::from_millis(args.max_wait_ms);
    let proxy = RotationProxy::start(options, accounts)
        .await
        .map_err(|e| e.to_string())?;
    let base_url = proxy.base_url();
    println!(
        "rotation-proxy: listening on {base_url} ({} accounts)",
        proxy.status().accounts.len()
    );
    let status = proxy.status();
    if status.usage_probe.configured {
        println!(
            "rotation-proxy: usage probe on (at most {} queries a minute)",
            args.usage_probe_per_minute
        );
    }
    if let Some(url) = &status.overflow.base_url {
        println!(
            "rotation-proxy: overflow source {url} serves while every account is cooling down or out of quota"
        );
    }
    if generated {
        // Shown once, on stdout, so the user can export it; never logged.
        println!(
            "rotation-proxy: export {TOKEN_ENV}={}",
            token.secret().expose()
        );
    }

    let route = match (
        &args.no_config_rewrite,
        args.codex_home.clone().or_else(default_codex_home),
    ) {
        (false, Some(home)) => {
            let url = base_url.clone();
            let applied = tokio::task::spawn_blocking(move || CodexRoute::apply(&home, &url))
                .await
                .map_err(|_| "config rewrite was cancelled".to_owned())?;
            match applied {
                Ok((route, stale)) => {
                    if let Some(report) = stale {
                        println!(
                            "rotation-proxy: restored a stale rewrite of {} left by an earlier run",
                            report.config.display()
                        );
                    }
                    println!(
                        "rotation-proxy: {} now routes codex through the proxy",
                        route.config().display()
                    );
                    Some(route)
                }
                Err(err) => {
                    proxy.shutdown().await;
                    return Err(format!("could not rewrite the Codex config: {err}"));
                }
            }
        }
        _ => None,
    };

    signal.await;
    println!("rotation-proxy: shutting down (draining open streams)");
    let status = proxy.status();
    proxy.shutdown().await;
    let mut result = Ok(());
    if let Some(route) = route {
        let config = route.config().to_path_buf();
        match tokio::task::spawn_blocking(move || route.restore()).await {
            Ok(Ok(_)) => println!("rotation-proxy: restored {}", config.display()),
            Ok(Err(err)) => result = Err(format!("could not restore {}: {err}", config.display())),
            Err(_) => result = Err("config restore was cancelled".to_owned()),
        }
    }
    let c = status.counters;
    println!(
        "rotation-proxy: {} requests ({} ok, {} upstream errors, {} gave up), {} attempts, {} refreshes",
        c.requests, c.ok, c.upstream_errors, c.gave_up, c.attempts, c.refreshes
    );
    if status.overflow.configured {
        println!(
            "rotation-proxy: {} requests served by the overflow source",
            status.overflow.requests_served
        );
    }
    result
}
