//! Windows: who listens, from the LISTEN rows of the TCP tables; identity and termination
//! through one process handle.
//!
//! - Lookup: `GetExtendedTcpTable` with `TCP_TABLE_OWNER_PID_LISTENER`, for IPv4 and IPv6:
//!   the system keeps only LISTEN sockets, so an accepted connection or a `TIME_WAIT` row on
//!   the port is never a holder (the same rule as on Linux). A row whose owner pid is 0, or
//!   whose process cannot be opened, is a holder we cannot inspect, never a guess.
//! - Identity: one `PROCESS_QUERY_LIMITED_INFORMATION` handle gives the creation time
//!   (`GetProcessTimes`) and the executable (`QueryFullProcessImageNameW`); a process that
//!   has exited is not described, even while some handle keeps its pid alive. The command
//!   line is not read, so the executable decides what the process is.
//! - Stopping: a handle with `PROCESS_TERMINATE` is opened first, the identity is re-read
//!   through it and compared, and `TerminateProcess` goes through that same handle, so a
//!   reused pid is never terminated. There is no polite stop request for another console
//!   program, so both stop levels terminate.
//!
//! What was run: the `x86_64-pc-windows-gnu` build of the tests under Wine 8 (Debian's
//! `wine64`), see the crate README. Wine 8 implements every call used here, with one gap:
//! its TCP tables report owner pid 0 for every socket (Wine keeps the host socket in the
//! `wineserver` process, where its owner lookup does not look), so under Wine 8 every holder
//! is "cannot inspect" and the pid the table would give is supplied by the tests instead.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::windows::ffi::OsStringExt as _;
use std::path::PathBuf;
use std::time::Duration;

use windows_sys::Win32::Foundation::{
    CloseHandle, ERROR_INSUFFICIENT_BUFFER, ERROR_INVALID_PARAMETER, FILETIME, HANDLE, NO_ERROR,
    STILL_ACTIVE, WAIT_OBJECT_0,
};
use windows_sys::Win32::NetworkManagement::IpHelper::{
    GetExtendedTcpTable, TCP_TABLE_OWNER_PID_LISTENER,
};
use windows_sys::Win32::System::Threading::{
    GetExitCodeProcess, GetProcessTimes, OpenProcess, PROCESS_NAME_WIN32,
    PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_SYNCHRONIZE, PROCESS_TERMINATE,
    QueryFullProcessImageNameW, TerminateProcess, WaitForSingleObject,
};

use super::tcp_table::{self, Family, STATE_LISTEN};
use super::{Signalled, Stop, StopHandle};
use crate::{Error, HolderLookup, LookupMethod, PortHolder, ProcessInfo, StartTime};

/// `AF_INET` and `AF_INET6` as `GetExtendedTcpTable` takes them (`ws2def.h`).
const AF_INET: u32 = 2;
const AF_INET6: u32 = 23;
/// Bound on "buffer too small, here is the new size" rounds: the table can grow between two
/// calls, but not forever.
const TABLE_ATTEMPTS: usize = 8;
/// `QueryFullProcessImageNameW` takes at most this many UTF-16 units (the long-path limit).
const MAX_PATH_UNITS: u32 = 32_768;

/// The native lookup on Windows: the LISTEN rows of the IPv4 and IPv6 TCP tables
/// (`GetExtendedTcpTable` with `TCP_TABLE_OWNER_PID_LISTENER`), each owner described through
/// a process handle (creation time, executable).
///
/// ```
/// use oauth_preflight::{HolderLookup, LookupMethod, TcpTableLookup};
///
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let found = TcpTableLookup::new().find_listeners(listener.local_addr()?.port())?;
/// assert_eq!(found[0].socket, listener.local_addr()?);
/// assert_eq!(TcpTableLookup::new().method(), LookupMethod::TcpTable);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpTableLookup {
    _private: (),
}

impl TcpTableLookup {
    /// The lookup (it holds nothing; each call reads the tables afresh).
    pub fn new() -> Self {
        Self::default()
    }
}

impl HolderLookup for TcpTableLookup {
    fn method(&self) -> LookupMethod {
        LookupMethod::TcpTable
    }

    fn find_listeners(&self, port: u16) -> Result<Vec<PortHolder>, Error> {
        let mut rows = Vec::new();
        for (family, af) in [(Family::V4, AF_INET), (Family::V6, AF_INET6)] {
            let bytes = listener_table(af).map_err(|message| Error::Platform {
                method: LookupMethod::TcpTable,
                message,
            })?;
            let decoded = tcp_table::decode(family, &bytes).map_err(|message| Error::Platform {
                method: LookupMethod::TcpTable,
                message,
            })?;
            rows.extend(decoded);
        }
        // One description per pid, so a process holding two sockets is described once.
        let mut described: HashMap<u32, Option<ProcessInfo>> = HashMap::new();
        Ok(rows
            .into_iter()
            .filter(|r| r.state == STATE_LISTEN && r.local.port() == port)
            .map(|r| {
                let process = match r.pid {
                    0 => None,
                    pid => described
                        .entry(pid)
                        .or_insert_with(|| describe(pid))
                        .clone(),
                };
                PortHolder::new(r.local, process)
            })
            .collect())
    }
}

/// The bytes of the LISTEN-only TCP table of address family `af`.
fn listener_table(af: u32) -> Result<Vec<u8>, String> {
    let mut size: u32 = 0;
    // u32 elements: the table's rows are DWORD-aligned.
    let mut buf: Vec<u32> = Vec::new();
    for _ in 0..TABLE_ATTEMPTS {
        let mut bytes = u32::try_from(buf.len() * 4).unwrap_or(u32::MAX);
        let table = if buf.is_empty() {
            std::ptr::null_mut()
        } else {
            buf.as_mut_ptr().cast()
        };
        // SAFETY: `table` has room for `bytes` bytes (null with size 0 on the first call,
        // which only asks for the size); the API writes at most `bytes` bytes and updates
        // `bytes`.
        let status = unsafe {
            GetExtendedTcpTable(table, &mut bytes, 0, af, TCP_TABLE_OWNER_PID_LISTENER, 0)
        };
        match status {
            NO_ERROR => {
                let len = (bytes as usize).min(buf.len() * 4);
                return Ok(buf.iter().flat_map(|w| w.to_le_bytes()).take(len).collect());
            }
            ERROR_INSUFFICIENT_BUFFER => {
                // The table may grow before the next call: ask for a little more.
                size = bytes.max(size).saturating_add(1024);
                buf = vec![0u32; (size as usize).div_ceil(4)];
            }
            code => {
                return Err(format!(
                    "GetExtendedTcpTable failed: {}",
                    io::Error::from_raw_os_error(code.cast_signed())
                ));
            }
        }
    }
    Err(format!(
        "the TCP table kept growing: still too small after {TABLE_ATTEMPTS} attempts"
    ))
}

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

fn open(pid: u32, access: u32) -> io::Result<Handle> {
    // SAFETY: OpenProcess has no memory-safety preconditions; null means failure.
    let h = unsafe { OpenProcess(access, 0, pid) };
    if h.is_null() {
        Err(io::Error::last_os_error())
    } else {
        Ok(Handle(h))
    }
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

/// True while the process has not exited. (A process that exits with code 259 looks
/// running here; its creation time still tells it from any later process on that pid.)
fn running(h: &Handle) -> bool {
    let mut code = 0u32;
    // SAFETY: h.0 is a live handle with query rights; `code` is a local.
    let ok = unsafe { GetExitCodeProcess(h.0, &mut code) };
    ok != 0 && code == STILL_ACTIVE.cast_unsigned()
}

/// The executable's full Win32 path (`C:\…\codex.exe`).
fn image_path(h: &Handle) -> Option<PathBuf> {
    let mut units = 512u32;
    loop {
        let mut buf = vec![0u16; units as usize];
        let mut len = units;
        // SAFETY: h.0 is a live handle with query rights; `buf` holds `len` UTF-16 units and
        // the API writes at most that many, then stores how many it wrote in `len`.
        let ok = unsafe {
            QueryFullProcessImageNameW(h.0, PROCESS_NAME_WIN32, buf.as_mut_ptr(), &mut len)
        };
        if ok != 0 {
            buf.truncate(len as usize);
            return Some(OsString::from_wide(&buf).into());
        }
        if io::Error::last_os_error().raw_os_error()
            != Some(ERROR_INSUFFICIENT_BUFFER.cast_signed())
            || units >= MAX_PATH_UNITS
        {
            return None;
        }
        units = (units * 4).min(MAX_PATH_UNITS);
    }
}

/// Identity read through `h`: creation time and executable (the name is the executable's
/// file name). `None` once the process has exited or when its creation time is unreadable.
fn identity(h: &Handle, pid: u32) -> Option<ProcessInfo> {
    if !running(h) {
        return None;
    }
    let start = creation_time(h)?;
    let exe = image_path(h);
    let name = exe
        .as_deref()
        .and_then(|e| e.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut info = ProcessInfo::new(pid, name).with_start_time(start);
    info.exe = exe;
    Some(info)
}

/// Pid, name and executable, creation time; no uid (Windows has none) and no argv.
pub(crate) fn describe(pid: u32) -> Option<ProcessInfo> {
    identity(&open(pid, PROCESS_QUERY_LIMITED_INFORMATION).ok()?, pid)
}

/// Windows has no numeric uids; the OS refuses to open other users' processes.
pub(crate) fn current_uid() -> Option<u32> {
    None
}

#[derive(Debug)]
pub(crate) struct WindowsTarget {
    handle: Handle,
}

impl WindowsTarget {
    fn exited(&self) -> bool {
        // SAFETY: the handle is live and was opened with PROCESS_SYNCHRONIZE.
        unsafe { WaitForSingleObject(self.handle.0, 0) == WAIT_OBJECT_0 }
    }
}

impl StopHandle for WindowsTarget {
    fn open(expected: &ProcessInfo) -> io::Result<Option<Self>> {
        let access = PROCESS_TERMINATE | PROCESS_QUERY_LIMITED_INFORMATION | PROCESS_SYNCHRONIZE;
        let handle = match open(expected.pid, access) {
            Ok(handle) => handle,
            // No such process any more. Anything else (typically access denied) must
            // surface, not pass for "already gone".
            Err(e) if e.raw_os_error() == Some(ERROR_INVALID_PARAMETER.cast_signed()) => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        // Pinned by the handle from here on: the identity read through it is the identity
        // of the process TerminateProcess will reach.
        let same =
            identity(&handle, expected.pid).is_some_and(|now| expected.is_same_process(&now));
        Ok(same.then_some(Self { handle }))
    }

    fn signal(&self, _stop: Stop) -> io::Result<Signalled> {
        if self.exited() {
            return Ok(Signalled::AlreadyGone);
        }
        // SAFETY: the handle is live and was opened with PROCESS_TERMINATE.
        let ok = unsafe { TerminateProcess(self.handle.0, 1) };
        if ok != 0 {
            Ok(Signalled::Sent)
        } else if self.exited() {
            // Terminating a process that is already exiting fails (access denied).
            Ok(Signalled::AlreadyGone)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_described_with_its_executable_and_creation_time() {
        let me = describe(std::process::id()).expect("our own process");
        let exe = std::env::current_exe().unwrap();
        assert_eq!(me.exe.as_deref(), Some(exe.as_path()));
        assert_eq!(
            me.name,
            exe.file_name().unwrap().to_string_lossy(),
            "the name is the executable's file name"
        );
        assert!(me.start_time.is_some());
        assert_eq!((me.uid, me.argv.len()), (None, 0));
        assert!(me.is_same_process(&describe(std::process::id()).unwrap()));
    }

    #[test]
    fn a_pid_that_does_not_exist_is_not_described_nor_opened() {
        // Far above any pid Windows (or Wine) hands out.
        let nobody = ProcessInfo::new(0xffff_fff0, "codex.exe").with_start_time(StartTime(1));
        assert!(describe(nobody.pid).is_none());
        assert!(WindowsTarget::open(&nobody).unwrap().is_none());
    }

    #[test]
    fn our_own_process_with_another_creation_time_is_not_opened_for_termination() {
        let mut me = describe(std::process::id()).unwrap();
        let real = me.start_time.unwrap();
        me.start_time = Some(StartTime(real.0 + 1));
        assert!(WindowsTarget::open(&me).unwrap().is_none(), "a reused pid");
        me.start_time = None;
        assert!(
            WindowsTarget::open(&me).unwrap().is_none(),
            "unknown start time"
        );
    }
}
