//! Pure: the part of macOS's `<sys/proc_info.h>` that `macos.rs` reads — the
//! `struct proc_bsdinfo` record `proc_pidinfo(PROC_PIDTBSDINFO)` fills, and the buffer
//! `proc_pidpath` fills — and turning their fixed-size C buffers into Rust values.
//!
//! No calls into the OS here, so the module is also built into the tests on Linux (any
//! Unix): the layout assertions and the decoding are checked by Linux CI, not only by the
//! macOS type-check (which never runs anything).
//!
//! The layout is written from the public header (field order and C types) and asserted
//! below; `macos.rs` accepts a record only when the kernel wrote exactly its size. Every
//! field is an integer or a byte array, so any bytes the kernel writes are a valid value
//! and an all-zero record is a valid starting point.

use std::ffi::{OsStr, c_int};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::StartTime;

/// `MAXCOMLEN` (`<sys/param.h>`): the length of a process's command name.
const MAXCOMLEN: usize = 16;
/// `MAXPATHLEN` (`<sys/param.h>`).
const MAXPATHLEN: usize = 1024;

/// `PROC_PIDTBSDINFO_SIZE`: what `proc_pidinfo` returns when it filled the whole record.
pub(crate) const PROC_PIDTBSDINFO_SIZE: c_int = 136;
/// `PROC_PIDPATHINFO_MAXSIZE`: the largest buffer `proc_pidpath` accepts (and the one to
/// pass: it writes at most this many bytes, the terminating NUL included).
pub(crate) const PROC_PIDPATHINFO_MAXSIZE: usize = 4 * MAXPATHLEN;

/// `struct proc_bsdinfo`, field for field. `char` arrays are `u8` here (same size and
/// alignment as C's `char`, signed or not); `uid_t` and `gid_t` are `u32` on macOS.
/// Only the real uid, the names and the start time are read; the rest is layout.
#[repr(C)]
#[derive(Clone, Default)]
#[allow(dead_code)] // every field must exist for the layout; only a few are read
pub(crate) struct ProcBsdInfo {
    pub(crate) pbi_flags: u32,
    pub(crate) pbi_status: u32,
    pub(crate) pbi_xstatus: u32,
    pub(crate) pbi_pid: u32,
    pub(crate) pbi_ppid: u32,
    pub(crate) pbi_uid: u32,
    pub(crate) pbi_gid: u32,
    pub(crate) pbi_ruid: u32,
    pub(crate) pbi_rgid: u32,
    pub(crate) pbi_svuid: u32,
    pub(crate) pbi_svgid: u32,
    pub(crate) rfu_1: u32,
    /// The executable's name, truncated to 16 bytes; NUL-terminated when shorter.
    pub(crate) pbi_comm: [u8; MAXCOMLEN],
    /// The name the process registered (up to 32 bytes), empty when it registered none.
    pub(crate) pbi_name: [u8; 2 * MAXCOMLEN],
    pub(crate) pbi_nfiles: u32,
    pub(crate) pbi_pgid: u32,
    pub(crate) pbi_pjobc: u32,
    pub(crate) e_tdev: u32,
    pub(crate) e_tpgid: u32,
    pub(crate) pbi_nice: i32,
    /// Start time: seconds since the epoch, and the microseconds within that second.
    pub(crate) pbi_start_tvsec: u64,
    pub(crate) pbi_start_tvusec: u64,
}

// The kernel writes exactly PROC_PIDTBSDINFO_SIZE bytes at these offsets; a field out of
// place would silently read another field, so the layout is checked at compile time (on
// every target this module is built for, Linux tests included).
const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    assert!(size_of::<ProcBsdInfo>() == PROC_PIDTBSDINFO_SIZE as usize);
    assert!(align_of::<ProcBsdInfo>() <= 8);
    assert!(offset_of!(ProcBsdInfo, pbi_pid) == 12);
    assert!(offset_of!(ProcBsdInfo, pbi_ruid) == 28);
    assert!(offset_of!(ProcBsdInfo, pbi_comm) == 48);
    assert!(offset_of!(ProcBsdInfo, pbi_name) == 64);
    assert!(offset_of!(ProcBsdInfo, pbi_nfiles) == 96);
    assert!(offset_of!(ProcBsdInfo, pbi_start_tvsec) == 120);
    assert!(offset_of!(ProcBsdInfo, pbi_start_tvusec) == 128);
};

impl ProcBsdInfo {
    /// The process name libproc's `proc_name` reports: the registered name when there is one, else
    /// the command name. Bytes that are not UTF-8 are replaced (never dropped), so a
    /// non-UTF-8 name still names a holder.
    pub(crate) fn name(&self) -> String {
        let registered = until_nul(&self.pbi_name);
        let name = if registered.is_empty() {
            until_nul(&self.pbi_comm)
        } else {
            registered
        };
        String::from_utf8_lossy(name).into_owned()
    }

    /// Microseconds since the epoch (saturating: a nonsense record cannot overflow).
    pub(crate) fn start_time(&self) -> StartTime {
        StartTime(
            self.pbi_start_tvsec
                .saturating_mul(1_000_000)
                .saturating_add(self.pbi_start_tvusec),
        )
    }
}

/// The bytes before the first NUL, or all of them when the buffer is full (no NUL).
fn until_nul(buf: &[u8]) -> &[u8] {
    buf.iter()
        .position(|&b| b == 0)
        .map_or(buf, |end| &buf[..end])
}

/// The path `proc_pidpath` wrote into `buf`, given what it returned (the path's length;
/// 0 or less on failure). Stays within `buf` whatever `returned` says and stops at a NUL;
/// the bytes are kept exactly (a path need not be UTF-8). `None` when there is no path.
pub(crate) fn path_from_buffer(buf: &[u8], returned: c_int) -> Option<PathBuf> {
    let len = usize::try_from(returned).ok()?.min(buf.len());
    let path = until_nul(&buf[..len]);
    (!path.is_empty()).then(|| OsStr::from_bytes(path).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info_named(comm: &[u8], name: &[u8]) -> ProcBsdInfo {
        let mut info = ProcBsdInfo::default();
        info.pbi_comm[..comm.len()].copy_from_slice(comm);
        info.pbi_name[..name.len()].copy_from_slice(name);
        info
    }

    #[test]
    fn the_registered_name_wins_over_the_command_name() {
        assert_eq!(info_named(b"node", b"codex").name(), "codex");
        assert_eq!(info_named(b"node", b"").name(), "node");
        assert_eq!(info_named(b"", b"").name(), "");
    }

    #[test]
    fn names_end_at_the_first_nul_or_at_the_end_of_a_full_buffer() {
        assert_eq!(info_named(b"ab\0cd", b"").name(), "ab");
        let full_comm = [b'c'; MAXCOMLEN];
        assert_eq!(info_named(&full_comm, b"").name(), "c".repeat(MAXCOMLEN));
        let full_name = [b'n'; 2 * MAXCOMLEN];
        assert_eq!(
            info_named(b"x", &full_name).name(),
            "n".repeat(2 * MAXCOMLEN)
        );
    }

    #[test]
    fn names_that_are_not_utf8_are_read_lossily_not_dropped() {
        assert_eq!(info_named(b"co\xffdex", b"").name(), "co\u{fffd}dex");
        assert_eq!(info_named(b"x", b"\x1b[2J\xc3").name(), "\x1b[2J\u{fffd}");
    }

    #[test]
    fn start_time_is_microseconds_since_the_epoch_and_saturates() {
        let mut info = ProcBsdInfo {
            pbi_start_tvsec: 1_700_000_000,
            pbi_start_tvusec: 123_456,
            ..ProcBsdInfo::default()
        };
        assert_eq!(info.start_time(), StartTime(1_700_000_000_123_456));
        info.pbi_start_tvsec = u64::MAX / 1_000;
        assert_eq!(info.start_time(), StartTime(u64::MAX));
        info.pbi_start_tvsec = u64::MAX / 1_000_000;
        info.pbi_start_tvusec = u64::MAX;
        assert_eq!(info.start_time(), StartTime(u64::MAX));
    }

    #[test]
    fn paths_are_bounded_by_the_buffer_and_the_returned_length() {
        let mut buf = [0u8; PROC_PIDPATHINFO_MAXSIZE];
        let path = b"/usr/local/bin/codex";
        buf[..path.len()].copy_from_slice(path);
        let len = c_int::try_from(path.len()).unwrap();
        assert_eq!(
            path_from_buffer(&buf, len),
            Some(PathBuf::from("/usr/local/bin/codex"))
        );
        // Failure (0, -1) and an empty path are no path.
        assert_eq!(path_from_buffer(&buf, 0), None);
        assert_eq!(path_from_buffer(&buf, -1), None);
        assert_eq!(path_from_buffer(&[0u8; 8], 8), None);
        // A length past the buffer stays within it; a shorter one cuts the path there.
        assert_eq!(
            path_from_buffer(&buf[..4], c_int::MAX),
            Some(PathBuf::from("/usr"))
        );
        assert_eq!(path_from_buffer(&buf, 4), Some(PathBuf::from("/usr")));
        // A NUL before the returned length ends the path.
        assert_eq!(
            path_from_buffer(b"/bin\0junk", 9),
            Some(PathBuf::from("/bin"))
        );
        // No NUL at all: the whole buffer.
        assert_eq!(
            path_from_buffer(b"/bin/sh", 7),
            Some(PathBuf::from("/bin/sh"))
        );
        // Not UTF-8: the bytes are kept exactly.
        let raw = b"/tmp/co\xffdex";
        let got = path_from_buffer(raw, 11).unwrap();
        assert_eq!(got.as_os_str().as_bytes(), raw);
    }
}
