//! Platform seams. Every platform implements the same two things: a [`HolderLookup`]
//! (who listens on a port) and a [`StopHandle`] (verify a process, then signal it without
//! a pid-reuse race). Linux is tested natively; Windows is tested under Wine 8 (which
//! cannot name socket owners, see `windows.rs`); macOS is type-checked, not run.
//!
//! [`HolderLookup`]: crate::HolderLookup

use std::io;
use std::time::Duration;

use crate::ProcessInfo;

#[cfg(target_os = "linux")]
pub(crate) mod linux;
#[cfg(target_os = "macos")]
mod listeners_lookup;
#[cfg(target_os = "macos")]
pub(crate) mod macos;
// Pure layout and decoding for `macos`; also built into the tests on Linux.
#[cfg(any(target_os = "macos", all(test, unix)))]
mod proc_info;
#[cfg(target_os = "linux")]
mod sock_diag;
// Pure decoding for `windows`; also built into every platform's tests.
#[cfg(any(target_os = "windows", test))]
mod tcp_table;
#[cfg(target_os = "windows")]
pub(crate) mod windows;
#[cfg(target_os = "macos")]
pub(crate) use listeners_lookup::ListenersLookup;

#[cfg(target_os = "linux")]
pub(crate) use linux::{LinuxTarget as Target, caller_lineage, current_uid, describe};

/// This process only: where the parent chain is not read (macOS, Windows), only the calling
/// process itself is protected from being stopped.
#[cfg(not(target_os = "linux"))]
pub(crate) fn caller_lineage() -> Vec<u32> {
    vec![std::process::id()]
}
#[cfg(target_os = "macos")]
pub(crate) use macos::{MacTarget as Target, current_uid, describe};
#[cfg(target_os = "windows")]
pub(crate) use windows::{WindowsTarget as Target, current_uid, describe};

/// How hard to ask a process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// SIGTERM (Windows: `TerminateProcess`; there is no polite request for another
    /// console program).
    Terminate,
    /// SIGKILL (Windows: `TerminateProcess` again, for a process still running after the
    /// grace period).
    Kill,
}

/// Whether a signal reached the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signalled {
    Sent,
    AlreadyGone,
}

/// A process that was verified to be the one we inspected and can be signalled safely.
pub(crate) trait StopHandle: Sized {
    /// Opens a handle to `expected.pid` and verifies it is still that process (start time,
    /// executable, argv). `Ok(None)`: it is gone or the pid now belongs to someone else.
    fn open(expected: &ProcessInfo) -> io::Result<Option<Self>>;
    /// Sends the signal; re-verifies identity first where the handle cannot pin the process.
    fn signal(&self, stop: Stop) -> io::Result<Signalled>;
    /// Waits up to `timeout` for the process to exit; true if it did.
    fn wait_exit(&self, timeout: Duration) -> bool;
    /// True when signals go through a handle that pins the process (pidfd, process handle).
    fn used_pidfd(&self) -> bool;
}

#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
mod unsupported {
    use super::*;

    /// Other platforms: nothing can be verified, so nothing is ever signalled.
    #[derive(Debug)]
    pub(crate) struct Target;

    impl StopHandle for Target {
        fn open(_: &ProcessInfo) -> io::Result<Option<Self>> {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "stopping processes is not supported on this platform",
            ))
        }
        fn signal(&self, _: Stop) -> io::Result<Signalled> {
            Ok(Signalled::AlreadyGone)
        }
        fn wait_exit(&self, _: Duration) -> bool {
            false
        }
        fn used_pidfd(&self) -> bool {
            false
        }
    }

    pub(crate) fn describe(_: u32) -> Option<ProcessInfo> {
        None
    }

    pub(crate) fn current_uid() -> Option<u32> {
        None
    }
}
#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
pub(crate) use unsupported::{Target, current_uid, describe};
