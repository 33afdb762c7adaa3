//! Windows (best-effort, not built in CI): hold a process handle, verify the creation time
//! through it, then terminate through the same handle (no pid-reuse race while it is open).
//! Windows has no SIGTERM for console processes, so both stop levels terminate.
#![allow(unsafe_code)]

use std::io;
use std::time::Duration;

use windows_sys::Win32::Foundation::{CloseHandle, FILETIME, HANDLE, WAIT_OBJECT_0};
use windows_sys::Win32::System::Threading::{
    GetProcessTimes, OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_SYNCHRONIZE,
    PROCESS_TERMINATE, TerminateProcess, WaitForSingleObject,
};

use super::{Signalled, Stop, StopHandle};
use crate::{ProcessInfo, StartTime};

/// An owned process handle, closed on drop.
#[derive(Debug)]
struct Handle(HANDLE);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: self.0 is a valid handle returned by OpenProcess and closed only here.
        unsafe {
            CloseHandle(self.0);
        }
    }
}

fn open(pid: u32, access: u32) -> Option<Handle> {
    // SAFETY: OpenProcess has no memory-safety preconditions; null means failure.
    let h = unsafe { OpenProcess(access, 0, pid) };
    (!h.is_null()).then_some(Handle(h))
}

fn creation_time(h: &Handle) -> Option<StartTime> {
    let zero = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
    // SAFETY: h.0 is a live handle with query rights; the four pointers are to locals.
    let ok = unsafe { GetProcessTimes(h.0, &mut created, &mut exited, &mut kernel, &mut user) };
    (ok != 0).then(|| {
        StartTime((u64::from(created.dwHighDateTime) << 32) | u64::from(created.dwLowDateTime))
    })
}

/// Name and path come from the socket table (`listeners`); we add the creation time.
pub(crate) fn describe(pid: u32) -> Option<ProcessInfo> {
    let h = open(pid, PROCESS_QUERY_LIMITED_INFORMATION)?;
    let start = creation_time(&h)?;
    Some(ProcessInfo::new(pid, String::new()).with_start_time(start))
}

/// Windows has no numeric uids; the OS refuses to open other users' processes.
pub(crate) fn current_uid() -> Option<u32> {
    None
}

#[derive(Debug)]
pub(crate) struct WindowsTarget {
    handle: Handle,
}

impl StopHandle for WindowsTarget {
    fn open(expected: &ProcessInfo) -> io::Result<Option<Self>> {
        let access = PROCESS_TERMINATE | PROCESS_QUERY_LIMITED_INFORMATION | PROCESS_SYNCHRONIZE;
        let Some(handle) = open(expected.pid, access) else {
            let err = io::Error::last_os_error();
            // ERROR_INVALID_PARAMETER: no such process any more. Anything else (typically
            // access denied) must surface, not pass for "already gone".
            return if err.raw_os_error() == Some(87) {
                Ok(None)
            } else {
                Err(err)
            };
        };
        let same = expected.start_time.is_some() && creation_time(&handle) == expected.start_time;
        Ok(same.then_some(Self { handle }))
    }

    fn signal(&self, _stop: Stop) -> io::Result<Signalled> {
        // SAFETY: the handle is live and was opened with PROCESS_TERMINATE.
        let ok = unsafe { TerminateProcess(self.handle.0, 1) };
        if ok != 0 {
            Ok(Signalled::Sent)
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn wait_exit(&self, timeout: Duration) -> bool {
        let ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX - 1);
        // SAFETY: the handle is live and was opened with PROCESS_SYNCHRONIZE.
        unsafe { WaitForSingleObject(self.handle.0, ms) == WAIT_OBJECT_0 }
    }

    fn used_pidfd(&self) -> bool {
        true
    }
}
