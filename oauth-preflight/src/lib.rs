//! Who holds the OAuth callback port? Identify it natively and free it only from a provably
//! stale Codex login helper.
//!
//! `codex login` serves its OAuth callback on `127.0.0.1:1455`. When a login is killed
//! mid-flow, an orphaned helper can keep the port and the next login fails with
//! "Address already in use". This crate answers *who* holds the port ([`inspect`]) and
//! frees it ([`free`]) when — and only when — every holder is a login helper (by program
//! identity, see [`ProgramMatcher`]) owned by the current user. Anything else is refused
//! with a message naming the port, pid and process, and nothing is killed.
//!
//! ```no_run
//! use oauth_preflight::{free, FreePolicy};
//!
//! let outcome = free("127.0.0.1:1455".parse()?, &FreePolicy::default());
//! println!("{outcome}"); // e.g. "Freed port 127.0.0.1:1455: stopped pid 4242 (codex) with SIGTERM, …"
//! if !outcome.is_ready() {
//!     std::process::exit(1);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Inspecting without touching anything:
//!
//! ```
//! let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//! let found = oauth_preflight::inspect(listener.local_addr()?)?;
//! for holder in &found.holders {
//!     println!("{} on {} (via {})", holder.process.as_ref().unwrap(), holder.socket, found.method);
//! }
//! assert_eq!(found.holders.len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # How holders are found
//! Only LISTEN sockets count (a browser still connected to the port is not a holder), on
//! the asked address, a wildcard, or the other `localhost` family (`[::1]` for `127.0.0.1`).
//! Linux asks the kernel for LISTEN sockets over `NETLINK_SOCK_DIAG` (falling back to
//! `/proc/net/tcp{,6}`) and matches socket inodes against `/proc/<pid>/fd` — no process
//! is spawned. Windows reads the LISTEN rows of its TCP table (`GetExtendedTcpTable`;
//! tested under Wine 8, which cannot name socket owners, see the README); macOS reads its
//! socket table through `listeners` (type-checked, not run), which does not tell LISTEN
//! sockets from accepted connections. `lsof` is the fallback on Unix; every result says
//! which [`LookupMethod`] answered. Processes that cannot be inspected (other users' without
//! root, or on Windows ones that cannot be opened) are reported as such, never guessed.
//!
//! [`inspect`] reports every process holding each socket (forked children share it).
//! [`free`] first looks quickly ([`HolderLookup::find_first_holders`]: likely holders
//! first, stopping at the first one), which is enough to refuse; before it stops anything
//! it looks again completely and decides on every holder.
//!
//! # Who is a login helper, and who is never stopped
//! [`ProgramMatcher`] decides by identity: the executable's basename, or for an
//! [`Interpreter`] the script it runs, read the way that interpreter reads its command line
//! (`node -r codex.js server.js` runs `server.js`; `python3 -c …` runs no script; an unknown
//! option makes the command line unreadable, which never matches). The calling process and
//! its ancestors are never stopped ([`Outcome::HeldByCaller`]). Names and command lines in
//! every message are escaped, so a process cannot forge lines or terminal sequences.
//!
//! # Blocking
//! Everything here is synchronous; async callers use `spawn_blocking`.
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod argv;
mod error;
mod escape;
mod free;
mod inspect;
#[cfg(unix)]
mod lsof;
mod matcher;
mod outcome;
mod process;
mod sys;

pub use argv::Interpreter;
pub use error::Error;
pub use free::{FreePolicy, free};
pub use inspect::{
    BindProbe, HolderLookup, Inspection, LookupMethod, PortHolder, blocks, default_lookups,
    inspect, inspect_with, native_lookups,
};
#[cfg(unix)]
pub use lsof::LsofLookup;
pub use matcher::{HolderMatcher, ProgramMatcher};
pub use outcome::{Outcome, Stopped, investigate_command};
pub use process::{ProcessInfo, StartTime};
#[cfg(target_os = "linux")]
pub use sys::linux::{ProcfsLookup, SockDiagLookup};
#[cfg(target_os = "windows")]
pub use sys::windows::TcpTableLookup;

/// The port `codex login` listens on for the OAuth callback.
pub const CODEX_CALLBACK_PORT: u16 = 1455;
