//! Who is a Codex login helper, decided on real Linux processes (node, python3, copies of them
//! under other names) holding real loopback ports, by how each interpreter reads its command
//! line (`tests/linux/identity.rs`). Elsewhere argv is not read and the executable decides.
#[cfg(target_os = "linux")]
mod common;
#[cfg(target_os = "linux")]
#[path = "linux/identity.rs"]
mod linux;

#[cfg(not(target_os = "linux"))]
#[test]
fn linux_only() {
    use std::io::Write as _;
    // Straight to stderr: libtest captures `eprintln!` of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "SKIP: linux_only (tests/identity.rs): node and python3 command lines are read from /proc/<pid>/cmdline on Linux only (Windows and macOS do not read argv; the executable decides, tested in child_holders.rs)"
    );
}
