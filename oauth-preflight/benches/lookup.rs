//! Holder lookup: native `/proc` vs `lsof -ti tcp:PORT` (what a user would otherwise run),
//! measured in the same run on a busy machine: 200 extra processes and 200 extra listening
//! sockets alive, plus the holders (child processes): a `python3` started after the crowd
//! (a likely name, the newest pid: the quick scan's good case) and a python3 copy named
//! `zz-holder` started before it (an unlikely name, older than the crowd: its worst case).
//! The quick lookup (`find_first_holders`, what `free` decides a refusal on) and the
//! complete one (`find_listeners`, every process sharing the socket) are both printed.
//!
//! `cargo bench -p oauth-preflight --bench lookup -- --warm-up-time 1 --measurement-time 2`
//!
//! Linux only: it compares lookups that exist only there (`/proc`, `NETLINK_SOCK_DIAG`) and
//! runs `lsof`. Elsewhere it prints why it measured nothing.

#[cfg(target_os = "linux")]
#[path = "lookup_linux/bench.rs"]
mod linux;

fn main() {
    #[cfg(target_os = "linux")]
    linux::main();
    #[cfg(not(target_os = "linux"))]
    println!("SKIP: the lookup bench compares Linux lookups (/proc, sock_diag, lsof)");
}
