//! Real processes holding real ephemeral loopback ports on Linux (`tests/linux/holders.rs`):
//! python3 holders found by sock_diag, `/proc` and `lsof`, freed or refused by identity, uid
//! and lineage. What does not need Linux (found with identity, freed, refused, the caller,
//! accepted connections, both loopback families, pid reuse) is tested on every platform,
//! with this crate's own test executable as the holder, in `child_holders.rs`.
#[cfg(target_os = "linux")]
mod common;
#[cfg(target_os = "linux")]
#[path = "linux/holders.rs"]
mod linux;

#[cfg(not(target_os = "linux"))]
#[test]
fn linux_only() {
    use std::io::Write as _;
    // Straight to stderr: libtest captures `eprintln!` of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "SKIP: linux_only (tests/holders.rs): python3 holders, /proc, lsof and uids are Linux-only here; the portable holder tests are in child_holders.rs"
    );
}
