//! Whether the process that left a refresh mark in the pool may still be running (a thin
//! I/O shell over the OS's process table; the decision what to do with the answer lives in
//! `pool_refresh`).
//!
//! A mark names the process by pid and says when it was written (Unix seconds). The answer
//! errs towards "running" whenever the OS cannot tell, because a wrong "running" only delays
//! the next refresh (at most `IN_FLIGHT_HOLD`), while a wrong "gone" can send a refresh token
//! that the marking process may still save the answer of.
//!
//! | platform | gone when | running when |
//! |----------|-----------|--------------|
//! | Unix (Linux, macOS, BSD) | `kill(pid, 0)` fails with `ESRCH` | it succeeds, or fails with `EPERM` (another user's process) |
//! | Windows | `OpenProcess` says there is no such pid; the process has exited; or it was created after the mark (the pid was reused — Windows hands out freed pids again soon) | it runs and is older than the mark, or it cannot be opened for another reason (access denied) |
//!
//! Pid 0 (and on Unix any pid beyond `i32::MAX`) names no process a mark can come from:
//! gone. On Unix a pid that was reused is not detected; the hold bounds that case.

/// Whether process `pid`, which wrote a mark at `marked_at` (Unix seconds), may still run.
pub(crate) fn may_still_run(pid: u32, marked_at: u64) -> bool {
    if pid == 0 {
        return false;
    }
    sys::may_still_run(pid, marked_at)
}

#[cfg(unix)]
mod sys {
    use rustix::io::Errno;
    use rustix::process::{Pid, test_kill_process};

    pub(super) fn may_still_run(pid: u32, _marked_at: u64) -> bool {
        let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
            return false;
        };
        // Signal 0 checks that the pid exists and could be signalled; nothing is sent.
        match test_kill_process(pid) {
            Ok(()) => true,
            Err(e) => e != Errno::SRCH,
        }
    }
}

#[cfg(windows)]
#[allow(unsafe_code)]
mod sys {
    use windows_sys::Win32::Foundation::{
        CloseHandle, ERROR_INVALID_PARAMETER, FILETIME, GetLastError, HANDLE, STILL_ACTIVE,
    };
    use windows_sys::Win32::System::Threading::{
        GetExitCodeProcess, GetProcessTimes, OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION,
    };

    /// Seconds from 1601-01-01 (the FILETIME epoch) to 1970-01-01.
    const FILETIME_UNIX_OFFSET_S: u64 = 11_644_473_600;

    /// An owned process handle, closed on drop.
    struct Handle(HANDLE);

    impl Drop for Handle {
        fn drop(&mut self) {
            // SAFETY: self.0 came from a successful OpenProcess and is closed only here.
            unsafe {
                CloseHandle(self.0);
            }
        }
    }

    pub(super) fn may_still_run(pid: u32, marked_at: u64) -> bool {
        // SAFETY: OpenProcess has no memory-safety preconditions; null means failure.
        let raw = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
        if raw.is_null() {
            // SAFETY: reads this thread's last-error value, set by the failed call above.
            let error = unsafe { GetLastError() };
            // No such process; anything else (access denied) means it exists.
            return error != ERROR_INVALID_PARAMETER;
        }
        let process = Handle(raw);
        let mut code = 0u32;
        // SAFETY: the handle is live with query rights; `code` is a local.
        let ok = unsafe { GetExitCodeProcess(process.0, &mut code) };
        // A process that exited lingers while someone holds a handle on it. (One that
        // exited with the code 259 itself reads as running; the hold bounds that.)
        if ok != 0 && code != STILL_ACTIVE as u32 {
            return false;
        }
        match created_at(&process) {
            // The FILETIME is cut to whole seconds like the mark, so the same second counts
            // as older.
            Some(created) => created <= marked_at,
            None => true,
        }
    }

    /// When the process was created, in Unix seconds.
    fn created_at(process: &Handle) -> Option<u64> {
        let zero = FILETIME {
            dwLowDateTime: 0,
            dwHighDateTime: 0,
        };
        let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
        // SAFETY: the handle is live with query rights; the four pointers are to locals.
        let ok = unsafe {
            GetProcessTimes(process.0, &mut created, &mut exited, &mut kernel, &mut user)
        };
        if ok == 0 {
            return None;
        }
        let ticks = (u64::from(created.dwHighDateTime) << 32) | u64::from(created.dwLowDateTime);
        (ticks / 10_000_000).checked_sub(FILETIME_UNIX_OFFSET_S)
    }
}

#[cfg(not(any(unix, windows)))]
mod sys {
    /// No process table known here: assume running (the hold bounds the wait).
    pub(super) fn may_still_run(_pid: u32, _marked_at: u64) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix_now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    #[test]
    fn this_process_runs() {
        assert!(may_still_run(std::process::id(), unix_now()));
    }

    #[test]
    fn pid_zero_is_no_marking_process() {
        assert!(!may_still_run(0, unix_now()));
    }

    const CHILD_ENV: &str = "AUTH_STORAGE_PROCESS_CHILD";

    /// Child: stays alive (at most 30 s) until the parent kills it.
    #[test]
    fn child_that_waits_to_be_killed() {
        if std::env::var_os(CHILD_ENV).is_some() {
            std::thread::sleep(std::time::Duration::from_secs(30));
        }
    }

    #[test]
    fn a_child_runs_until_it_is_killed_and_reaped() {
        if std::env::var_os(CHILD_ENV).is_some() {
            return;
        }
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "process::tests::child_that_waits_to_be_killed",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, "1")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let marked = unix_now();
        let running = may_still_run(pid, marked);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(running, "a live child (pid {pid}) reads as gone");
        // Reaped (Unix) and its last handle closed (Windows): the pid names nobody now (a
        // pid handed out again this soon would be a process created after the mark, which
        // reads as gone on Windows; Unix hands pids out in order).
        assert!(
            !may_still_run(pid, marked),
            "pid {pid} of a killed child reads as running"
        );
    }

    #[cfg(windows)]
    #[test]
    fn a_process_created_after_the_mark_is_not_the_one_that_wrote_it() {
        // This process started before now: with a mark from long before it started, its pid
        // must read as reused.
        assert!(!may_still_run(std::process::id(), 1_000_000_000));
        assert!(may_still_run(std::process::id(), unix_now()));
    }

    #[cfg(unix)]
    #[test]
    fn pids_beyond_the_unix_range_name_no_process() {
        assert!(!may_still_run(u32::MAX, unix_now()));
    }
}
