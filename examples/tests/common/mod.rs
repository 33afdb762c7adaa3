//! Helpers shared by the examples' integration tests.
#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::path::PathBuf;

/// The real Codex CLI: `CODEX_BIN`, else the workspace's npm install, else `codex` on PATH.
pub fn codex_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CODEX_BIN")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
    {
        return Some(p);
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(".codex-cli/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex");
    if local.is_file() {
        return Some(local);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("codex"))
            .find(|p| p.is_file())
    })
}

/// Prints a visible SKIP line (bypassing libtest's capture).
pub fn skip(test: &str, reason: &str) {
    let _ = writeln!(std::io::stderr(), "SKIP: {test}: {reason}");
}

/// A built example program (`target/<profile>/examples/<name>`), next to the test binary's
/// `deps` directory. Plain `cargo test` builds the examples; `cargo test --test …` may not.
pub fn example(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("examples").join(name);
    path.is_file().then_some(path)
}
