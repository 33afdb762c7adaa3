//! What we know about a process that holds a port.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::escape::{Escaped, escape};

/// When a process started, in the platform's finest unit.
///
/// On Linux this is field 22 of `/proc/<pid>/stat` (clock ticks since boot); on macOS
/// microseconds since the epoch; on Windows the creation `FILETIME`. Values are only
/// compared with each other on the same machine, never converted: two processes that
/// share a pid (after the pid was reused) have different start times.
///
/// ```
/// use oauth_preflight::StartTime;
/// assert!(StartTime(10) < StartTime(11));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct StartTime(pub u64);

/// Identity of one process, as far as the operating system lets us see it.
///
/// Fields that could not be read (another user's process, a process that exited while we
/// looked) are `None` or empty rather than guessed.
///
/// ```
/// use oauth_preflight::ProcessInfo;
///
/// let p = ProcessInfo::new(4242, "codex")
///     .with_exe("/usr/local/bin/codex")
///     .with_argv(["codex", "login"]);
/// assert_eq!(p.to_string(), "pid 4242 (codex)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ProcessInfo {
    /// Process id.
    pub pid: u32,
    /// Short name (`/proc/<pid>/comm` on Linux, cut at 15 bytes there).
    pub name: String,
    /// Path of the executable, when readable. The ` (deleted)` the kernel appends to a
    /// deleted executable is kept out. Serialized as text (bytes that are not UTF-8 become
    /// U+FFFD), so a hostile path never makes the JSON fail.
    #[cfg_attr(feature = "serde", serde(serialize_with = "serialize_lossy_path"))]
    pub exe: Option<PathBuf>,
    /// Command line, when readable (may be empty for kernel threads or zombies).
    pub argv: Vec<String>,
    /// Real user id of the process owner, when known (always `None` on Windows).
    pub uid: Option<u32>,
    /// Start time, used to detect pid reuse before signalling.
    pub start_time: Option<StartTime>,
}

#[cfg(feature = "serde")]
fn serialize_lossy_path<S: serde::Serializer>(
    path: &Option<PathBuf>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match path {
        Some(path) => serializer.serialize_some(&path.to_string_lossy()),
        None => serializer.serialize_none(),
    }
}

impl ProcessInfo {
    /// A process known only by pid and name; add more with the `with_*` methods.
    pub fn new(pid: u32, name: impl Into<String>) -> Self {
        Self {
            pid,
            name: name.into(),
            exe: None,
            argv: Vec::new(),
            uid: None,
            start_time: None,
        }
    }

    /// What this platform tells about the running process `pid`: the identity [`free`]
    /// verifies again before it stops anything. `None` when there is no such process (or it
    /// has exited) or it cannot be inspected.
    ///
    /// | platform | name | exe | argv | uid | start time |
    /// |---|---|---|---|---|---|
    /// | Linux | `/proc/<pid>/comm` | `/proc/<pid>/exe` | `/proc/<pid>/cmdline` | `/proc/<pid>/status` | `/proc/<pid>/stat` field 22 |
    /// | macOS | libproc | libproc | not read | libproc | libproc |
    /// | Windows | the executable's file name | `QueryFullProcessImageNameW` | not read | none | `GetProcessTimes` |
    ///
    /// Useful for a [`HolderLookup`](crate::HolderLookup) of your own that knows pids from
    /// elsewhere (a pid file, an agent).
    ///
    /// ```
    /// use oauth_preflight::ProcessInfo;
    ///
    /// let me = ProcessInfo::read(std::process::id()).expect("this process");
    /// assert_eq!(me.pid, std::process::id());
    /// assert!(me.start_time.is_some());
    /// # #[cfg(any(target_os = "linux", windows))]
    /// assert_eq!(me.exe.as_deref(), Some(std::env::current_exe()?.as_path()));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// [`free`]: crate::free
    pub fn read(pid: u32) -> Option<Self> {
        crate::sys::describe(pid)
    }

    /// Sets the executable path.
    #[must_use]
    pub fn with_exe(mut self, exe: impl Into<PathBuf>) -> Self {
        self.exe = Some(exe.into());
        self
    }

    /// Sets the command line.
    #[must_use]
    pub fn with_argv<I, S>(mut self, argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.argv = argv.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the owner's user id.
    #[must_use]
    pub fn with_uid(mut self, uid: u32) -> Self {
        self.uid = Some(uid);
        self
    }

    /// Sets the start time.
    #[must_use]
    pub fn with_start_time(mut self, start: StartTime) -> Self {
        self.start_time = Some(start);
        self
    }

    /// The executable path, if known.
    pub fn exe(&self) -> Option<&Path> {
        self.exe.as_deref()
    }

    /// The command line joined with spaces, for display only: control characters (C0, DEL,
    /// C1) and Unicode bidi controls in the arguments are escaped (`\x1b`, `\n`,
    /// `\u{202e}`), so a process cannot forge lines or terminal sequences in our output.
    ///
    /// ```
    /// use oauth_preflight::ProcessInfo;
    /// let p = ProcessInfo::new(1, "x").with_argv(["sh", "-c", "echo \x1b[2J\r\nok"]);
    /// assert_eq!(p.command_line(), "sh -c echo \\x1b[2J\\r\\nok");
    /// ```
    pub fn command_line(&self) -> String {
        self.argv
            .iter()
            .map(|a| escape(a))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The executable path for display, escaped like [`command_line`](Self::command_line);
    /// `None` when unknown.
    ///
    /// ```
    /// use oauth_preflight::ProcessInfo;
    /// let p = ProcessInfo::new(1, "x").with_exe("/tmp/evil\rcodex");
    /// assert_eq!(p.exe_display().as_deref(), Some("/tmp/evil\\rcodex"));
    /// ```
    pub fn exe_display(&self) -> Option<String> {
        self.exe
            .as_deref()
            .map(|e| escape(&e.to_string_lossy()).into_owned())
    }

    /// True when `other` is provably the same process: same pid, a known and equal start
    /// time, and no disagreement about the executable or command line.
    pub fn is_same_process(&self, other: &ProcessInfo) -> bool {
        self.pid == other.pid
            && self.start_time.is_some()
            && self.start_time == other.start_time
            && (self.exe.is_none() || other.exe.is_none() || self.exe == other.exe)
            && (self.argv.is_empty() || other.argv.is_empty() || self.argv == other.argv)
    }
}

/// `pid 4242 (codex)`, with control characters in the name escaped.
impl fmt::Display for ProcessInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} ({})", self.pid, Escaped(&self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(unix, feature = "serde"))]
    #[test]
    fn an_executable_path_that_is_not_utf8_still_serializes() {
        use std::os::unix::ffi::OsStrExt as _;
        let exe = PathBuf::from(std::ffi::OsStr::from_bytes(b"/srv/\x85web/server"));
        let p = ProcessInfo::new(7, "server").with_exe(exe);
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["exe"], "/srv/\u{fffd}web/server");
        assert_eq!(json["pid"], 7);
    }

    #[test]
    fn same_process_needs_a_known_equal_start_time() {
        let a = ProcessInfo::new(7, "codex").with_argv(["codex", "login"]);
        assert!(!a.is_same_process(&a), "unknown start time proves nothing");
        let a = a.with_start_time(StartTime(100));
        assert!(a.is_same_process(&a.clone()));
        let reused = a.clone().with_start_time(StartTime(101));
        assert!(!a.is_same_process(&reused));
        let other_cmd = a.clone().with_argv(["python3"]);
        assert!(!a.is_same_process(&other_cmd));
        let other_pid = ProcessInfo {
            pid: 8,
            ..a.clone()
        };
        assert!(!a.is_same_process(&other_pid));
    }

    #[test]
    fn display_texts_escape_control_characters() {
        let p = ProcessInfo::new(9, "x\x1b]0;pwned\x07\r\n")
            .with_exe("/tmp/\u{202e}gpj")
            .with_argv(["a\nb", "\x1b[2J"]);
        assert_eq!(p.to_string(), "pid 9 (x\\x1b]0;pwned\\x07\\r\\n)");
        assert_eq!(p.command_line(), "a\\nb \\x1b[2J");
        assert_eq!(p.exe_display().as_deref(), Some("/tmp/\\u{202e}gpj"));
        // The value itself is kept for programs (and JSON).
        assert_eq!(p.argv[1], "\x1b[2J");
    }
}
