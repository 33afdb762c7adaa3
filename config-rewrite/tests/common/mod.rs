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

/// The Codex CLI (`CODEX_BIN`, the workspace's npm install, or `codex` on PATH), printing a
/// visible SKIP line for `test` (with the reason) when there is none to run.
pub fn codex_bin_or_skip(test: &str) -> Option<PathBuf> {
    find_codex().map_err(|reason| skip(test, &reason)).ok()
}

/// The Codex CLI this platform can run, or why there is none. On Windows only a Windows
/// program counts: `CODEX_BIN` naming a `.exe`, or `codex.exe` on PATH (the workspace's npm
/// install holds the Linux binary, which a Windows process cannot start).
fn find_codex() -> Result<PathBuf, String> {
    let windows = cfg!(windows);
    if let Some(bin) = std::env::var_os("CODEX_BIN")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
    {
        let is_exe = bin
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("exe"));
        if windows && !is_exe {
            return Err(format!(
                "CODEX_BIN ({}) is not a Windows program; set it to a Windows codex.exe",
                bin.display()
            ));
        }
        return Ok(bin);
    }
    if !windows {
        let local = Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "../.codex-cli/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex",
        );
        if local.is_file() {
            return Ok(local);
        }
    }
    let name = format!("codex{}", std::env::consts::EXE_SUFFIX);
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(&name))
                .find(|candidate| candidate.is_file())
        })
        .ok_or_else(|| {
            if windows {
                "no Windows Codex CLI (set CODEX_BIN to a Windows codex.exe)".to_owned()
            } else {
                "Codex CLI not found (set CODEX_BIN)".to_owned()
            }
        })
}

pub fn skip(test: &str, reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIP: {test}: {reason}");
}
