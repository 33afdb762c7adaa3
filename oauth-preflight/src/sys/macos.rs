//! macOS (best-effort, not built in CI): identity from libproc, signals via `kill(2)` after
//! re-verifying the start time (macOS has no pidfd).

use std::io;
use std::time::{Duration, Instant};

use libproc::bsd_info::BSDInfo;
use libproc::proc_pid::{name, pidinfo, pidpath};
use rustix::process::{Pid, Signal};

use super::{Signalled, Stop, StopHandle};
use crate::{ProcessInfo, StartTime};

/// Name, executable, real uid and start time (µs since the epoch) from libproc.
/// argv is not read (it needs `KERN_PROCARGS2`); the matcher then uses the executable.
pub(crate) fn describe(pid: u32) -> Option<ProcessInfo> {
    let raw = i32::try_from(pid).ok()?;
    let info = pidinfo::<BSDInfo>(raw, 0).ok()?;
    let start = u64::from(info.pbi_start_tvsec)
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(info.pbi_start_tvusec));
    let mut p = ProcessInfo::new(pid, name(raw).unwrap_or_default())
        .with_uid(u32::from(info.pbi_ruid))
        .with_start_time(StartTime(start));
    if let Ok(path) = pidpath(raw) {
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
