//! macOS: identity from libproc (`proc_pidinfo`, `proc_pidpath`), signals via `kill(2)`
//! after re-verifying the start time (macOS has no pidfd). Type-checked and linted for
//! `aarch64-apple-darwin` and `x86_64-apple-darwin` in CI (`.ci/macos-check`), never run
//! there; the record layout and its decoding (`proc_info.rs`) are unit-tested on Linux.
//!
//! The two libproc calls are declared here rather than through a bindings crate: generated
//! bindings need the macOS SDK at build time, which only a Mac has, and then nothing here
//! could be type-checked elsewhere. All `unsafe` of the macOS port is in this file.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_void};
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use super::proc_info::{
    PROC_PIDPATHINFO_MAXSIZE, PROC_PIDTBSDINFO_SIZE, ProcBsdInfo, path_from_buffer,
};
use super::{Signalled, Stop, StopHandle};
use crate::ProcessInfo;

/// `PROC_PIDTBSDINFO`: the `proc_pidinfo` flavor that fills a `struct proc_bsdinfo`.
const PROC_PIDTBSDINFO: c_int = 3;

// libproc is part of libSystem, which every macOS program links (Rust's std included);
// naming it here states where the symbols come from and adds no library.
#[link(name = "System", kind = "dylib")]
unsafe extern "C" {
    /// Fills `buffer` with the record `flavor` selects for `pid`; returns the number of
    /// bytes written, 0 or less on failure (no such process, not permitted).
    fn proc_pidinfo(
        pid: c_int,
        flavor: c_int,
        arg: u64,
        buffer: *mut c_void,
        buffersize: c_int,
    ) -> c_int;
    /// Writes the executable's path, NUL-terminated, into `buffer` (at most `buffersize`
    /// bytes); returns the path's length, 0 or less on failure.
    fn proc_pidpath(pid: c_int, buffer: *mut c_void, buffersize: u32) -> c_int;
}

/// The BSD record of `pid`, or `None` when it cannot be read (gone, a zombie, not ours
/// to see) or came back short.
fn bsd_info(pid: c_int) -> Option<ProcBsdInfo> {
    let mut info = ProcBsdInfo::default();
    // SAFETY: `info` is a live, writable `#[repr(C)]` record whose layout and size
    // (PROC_PIDTBSDINFO_SIZE bytes) are asserted to match `struct proc_bsdinfo` at compile
    // time; the size passed bounds what the kernel writes. Every field is an integer or a
    // byte array, so whatever bytes it writes are a valid value.
    let written = unsafe {
        proc_pidinfo(
            pid,
            PROC_PIDTBSDINFO,
            0,
            (&raw mut info).cast::<c_void>(),
            PROC_PIDTBSDINFO_SIZE,
        )
    };
    (written == PROC_PIDTBSDINFO_SIZE).then_some(info)
}

/// The executable's path, bytes kept exactly; `None` when it cannot be read.
fn executable_path(pid: c_int) -> Option<PathBuf> {
    let mut buf = [0u8; PROC_PIDPATHINFO_MAXSIZE];
    let size = u32::try_from(buf.len()).ok()?;
    // SAFETY: `buf` is writable for its full length, which is the size passed, so the
    // call writes within it; `path_from_buffer` reads only within `buf` too.
    let returned = unsafe { proc_pidpath(pid, buf.as_mut_ptr().cast::<c_void>(), size) };
    path_from_buffer(&buf, returned)
}

/// Name, executable, real uid and start time (µs since the epoch) from libproc. The name
/// is the one `proc_name` reports, taken from the same record as the start time.
/// argv is not read (it needs `KERN_PROCARGS2`); the matcher then uses the executable.
pub(crate) fn describe(pid: u32) -> Option<ProcessInfo> {
    let raw = c_int::try_from(pid).ok()?;
    let info = bsd_info(raw)?;
    // A record of another pid is not this process (defensive: the kernel fills the one asked).
    if info.pbi_pid != pid {
        return None;
    }
    let mut p = ProcessInfo::new(pid, info.name())
        .with_uid(info.pbi_ruid)
        .with_start_time(info.start_time());
    if let Some(path) = executable_path(raw) {
        p = p.with_exe(path);
    }
    Some(p)
}

pub(crate) fn current_uid() -> Option<u32> {
    Some(rustix::process::getuid().as_raw())
}

fn still_same(expected: &ProcessInfo) -> bool {
    describe(expected.pid).is_some_and(|now| expected.is_same_process(&now))
}

#[derive(Debug)]
pub(crate) struct MacTarget {
    expected: ProcessInfo,
    pid: Pid,
}

impl StopHandle for MacTarget {
    fn open(expected: &ProcessInfo) -> io::Result<Option<Self>> {
        let Some(pid) = i32::try_from(expected.pid).ok().and_then(Pid::from_raw) else {
            return Ok(None);
        };
        Ok(still_same(expected).then(|| Self {
            expected: expected.clone(),
            pid,
        }))
    }

    fn signal(&self, stop: Stop) -> io::Result<Signalled> {
        // No pidfd on macOS: re-verify the start time immediately before each signal.
        if !still_same(&self.expected) {
            return Ok(Signalled::AlreadyGone);
        }
        let sig = match stop {
            Stop::Terminate => Signal::TERM,
            Stop::Kill => Signal::KILL,
        };
        match rustix::process::kill_process(self.pid, sig) {
            Ok(()) => Ok(Signalled::Sent),
            Err(rustix::io::Errno::SRCH) => Ok(Signalled::AlreadyGone),
            Err(e) => Err(e.into()),
        }
    }

    fn wait_exit(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            // A zombie keeps its pid but libproc no longer reports BSD info for it.
            if !still_same(&self.expected) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(10)));
        }
    }

    fn used_pidfd(&self) -> bool {
        false
    }
}
