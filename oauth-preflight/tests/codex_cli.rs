//! The real Codex CLI (its Linux build): `codex login` holds 127.0.0.1:1455, `free` stops
//! it (`tests/linux/codex_cli.rs`).
#[cfg(target_os = "linux")]
mod common;
#[cfg(target_os = "linux")]
#[path = "linux/codex_cli.rs"]
mod linux;

#[cfg(not(target_os = "linux"))]
#[test]
fn linux_only() {
    use std::io::Write as _;
    // Straight to stderr: libtest captures `eprintln!` of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "SKIP: linux_only (tests/codex_cli.rs): runs the Linux Codex CLI binary"
    );
}
