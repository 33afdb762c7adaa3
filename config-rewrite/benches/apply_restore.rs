//! apply + restore on a ~1 MB config, against `toml_edit` parse + print alone (the least any
//! format-preserving editor must do) measured in the same run. Prints the ratio.
//!
//! Run: `cargo bench -p config-rewrite --bench apply_restore -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::time::{Duration, Instant};

use config_rewrite::{ProviderSpec, Rewrite, Target, apply_to_str, restore_str};
use criterion::{Criterion, criterion_group};

/// A realistic but large config: comments, MCP servers with env tables, arrays of tables.
fn big_config(target_bytes: usize) -> String {
    let mut s = String::from(
        "# generated benchmark config\nmodel = \"gpt-5\"\napproval_policy = \"on-request\"\n\n",
    );
    let mut i = 0;
    while s.len() < target_bytes {
        s.push_str(&format!(
            "# server {i}\n[mcp_servers.server{i}]\ncommand = \"npx\"   # launcher\nargs = [\"-y\", \"@acme/mcp-{i}\", \"--port\", \"{port}\"]\nstartup_timeout_sec = 20\n\n[mcp_servers.server{i}.env]\nROOT = \"/srv/data/{i}\"\nMODE = 'fast'\n\n[[skills.config]]\npath = \"/home/me/skills/s{i}\"\nenabled = {enabled}\n\n",
            port = 1000 + i % 60000,
            enabled = i % 2 == 0,
        ));
        i += 1;
    }
    s
}

fn rewrite() -> Rewrite {
    Rewrite::route_to(
        ProviderSpec::new("rotation-proxy", "http://127.0.0.1:8080/v1")
            .env_key("ROTATION_PROXY_TOKEN"),
        Target::TopLevel,
    )
}

fn baseline(text: &str) -> String {
    let doc: toml_edit::DocumentMut = text.parse().unwrap();
    doc.to_string()
}

fn apply_restore(text: &str, rewrite: &Rewrite) -> Option<String> {
    let applied = apply_to_str("config.toml".as_ref(), Some(text), rewrite).unwrap();
    let restored = restore_str(Some(applied.text()), applied.record()).unwrap();
    restored.text().map(str::to_owned)
}

fn apply_restore_after_user_edit(text: &str, rewrite: &Rewrite) -> Option<String> {
    let applied = apply_to_str("config.toml".as_ref(), Some(text), rewrite).unwrap();
    let edited = format!("{}[user]\nx = 1\n", applied.text());
    let restored = restore_str(Some(&edited), applied.record()).unwrap();
    restored.text().map(str::to_owned)
}

fn bench(c: &mut Criterion) {
    let text = big_config(1 << 20);
    let rewrite = rewrite();
    assert_eq!(
        apply_restore(&text, &rewrite).as_deref(),
        Some(text.as_str())
    );
    let mut group = c.benchmark_group("config_1mb");
    group.sample_size(10);
    group.bench_function("baseline_toml_edit_parse_print", |b| {
        b.iter(|| baseline(black_box(&text)))
    });
    group.bench_function("apply_then_restore_exact", |b| {
        b.iter(|| apply_restore(black_box(&text), &rewrite))
    });
    group.bench_function("apply_then_restore_after_user_edit", |b| {
        b.iter(|| apply_restore_after_user_edit(black_box(&text), &rewrite))
    });
    group.finish();
}

/// Median of a few timed runs (small, bounded loop) for the printed ratio.
fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn ratio() {
    let text = big_config(1 << 20);
    let rewrite = rewrite();
    let base = median(7, || {
        black_box(baseline(black_box(&text)));
    });
    let ours = median(7, || {
        black_box(apply_restore(black_box(&text), &rewrite));
    });
    let merged = median(7, || {
        black_box(apply_restore_after_user_edit(black_box(&text), &rewrite));
    });
    println!(
        "config_1mb ({} bytes): toml_edit parse+print {:.1} ms | apply+restore {:.1} ms ({:.2}x) | apply+restore after a user edit {:.1} ms ({:.2}x)",
        text.len(),
        base.as_secs_f64() * 1e3,
        ours.as_secs_f64() * 1e3,
        ours.as_secs_f64() / base.as_secs_f64(),
        merged.as_secs_f64() * 1e3,
        merged.as_secs_f64() / base.as_secs_f64(),
    );
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    ratio();
}
