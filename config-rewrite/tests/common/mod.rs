//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use config_rewrite::{ProviderSpec, Rewrite, Target};

/// The corpus of realistic Codex configs, with the target each is rewritten for.
pub fn corpus() -> Vec<(&'static str, String, Target)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut out = Vec::new();
    for name in [
        "basic",
        "skills_first",
        "profiles",
        "crlf",
        "dotted_inline",
        "existing_provider",
        "bom_no_final_newline",
        "comments_only",
    ] {
        let text = std::fs::read_to_string(dir.join(format!("{name}.toml"))).unwrap();
        let target = if name == "profiles" {
            Target::profile("work")
        } else {
            Target::TopLevel
        };
        out.push((name, text, target));
    }
    out
}

/// What a rotation proxy writes.
pub fn proxy_rewrite(port: u16, target: Target) -> Rewrite {
    Rewrite::route_to(
        ProviderSpec::new("rotation-proxy", format!("http://127.0.0.1:{port}/v1"))
            .name("Rotation proxy")
            .env_key("ROTATION_PROXY_TOKEN")
            .requires_openai_auth(false)
            .stream_max_retries(0)
            .request_max_retries(0),
        target,
    )
}

/// The Codex CLI: `CODEX_BIN`, the workspace's npm install, or `codex` on PATH.
pub fn codex_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("CODEX_BIN") {
        let bin = PathBuf::from(bin);
        if bin.is_file() {
            return Some(bin);
        }
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.codex-cli/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex");
    if local.is_file() {
        return Some(local);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("codex"))
        .find(|candidate| candidate.is_file())
}

pub fn skip(test: &str, reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIP: {test}: {reason}");
}
