//! Linux: socket owners from `/proc/net/tcp{,6}` + `/proc/<pid>/fd`, stopping through pidfds.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::process::{Pid, PidfdFlags, Signal};

use super::{Signalled, Stop, StopHandle};
use crate::{Error, HolderLookup, LookupMethod, PortHolder, ProcessInfo, StartTime};

/// TCP state `LISTEN` in `/proc/net/tcp*` (`TCP_LISTEN` in the kernel's `tcp_states.h`).
const TCP_LISTEN: u8 = 0x0A;

/// Native Linux lookup: LISTEN rows of `/proc/net/tcp` and `/proc/net/tcp6`, matched by
/// socket inode against every readable `/proc/<pid>/fd`.
///
/// Sockets whose owner cannot be read (another user's process while we are not root) are
/// reported with `process: None` and the socket's uid from the table — never guessed.
///
/// ```
/// use oauth_preflight::{HolderLookup, ProcfsLookup};
///
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let port = listener.local_addr()?.port();
/// let holders = ProcfsLookup::new().find_listeners(port)?;
/// assert!(holders.iter().any(|h| h.process.as_ref().is_some_and(|p| p.pid == std::process::id())));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ProcfsLookup {
    root: PathBuf,
}

impl ProcfsLookup {
    /// Reads the live `/proc`.
    pub fn new() -> Self {
        Self {
            root: PathBuf::from("/proc"),
        }
    }
}

impl Default for ProcfsLookup {
    fn default() -> Self {
        Self::new()
    }
}

impl HolderLookup for ProcfsLookup {
    fn method(&self) -> LookupMethod {
        LookupMethod::Procfs
    }

    fn find_listeners(&self, port: u16) -> Result<Vec<PortHolder>, Error> {
        Ok(holders_of(&self.root, self.sockets(port)?, Scan::Complete))
    }

    fn find_first_holders(&self, port: u16) -> Result<Vec<PortHolder>, Error> {
        Ok(holders_of(
            &self.root,
            self.sockets(port)?,
            Scan::FirstHolder,
        ))
    }
}

impl ProcfsLookup {
    fn sockets(&self, port: u16) -> Result<Vec<SocketRow>, Error> {
        let mut sockets = Vec::new();
        for (name, v6) in [("net/tcp", false), ("net/tcp6", true)] {
            let path = self.root.join(name);
            let text = match fs::read_to_string(&path) {
                Ok(t) => t,
                // No IPv6 in this kernel or namespace: nothing listens there.
                Err(e) if v6 && e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(Error::SocketTable { path, source }),
            };
            for (index, line) in text.lines().enumerate().skip(1) {
                let row =
                    parse_socket_row(line, v6).map_err(|reason| Error::MalformedSocketTable {
                        path: path.clone(),
                        line: index + 1,
                        reason,
                    })?;
                if row.state == TCP_LISTEN && row.local.port() == port {
                    sockets.push(row);
                }
            }
        }
        Ok(sockets)
    }
}

/// Native Linux lookup through `NETLINK_SOCK_DIAG` (LISTEN sockets only, like `ss -l`),
/// with owners matched by inode against `/proc/<pid>/fd` as in [`ProcfsLookup`].
///
/// Much cheaper than reading `/proc/net/tcp` on machines with a large connection hash
/// table. Fails (so the next lookup answers) where netlink is filtered, e.g. some sandboxes.
///
/// ```
/// use oauth_preflight::{HolderLookup, SockDiagLookup};
///
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let holders = SockDiagLookup::new().find_listeners(listener.local_addr()?.port())?;
/// assert_eq!(holders.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct SockDiagLookup {
    root: PathBuf,
}

impl SockDiagLookup {
    /// Asks the kernel over netlink; reads owners from the live `/proc`.
    pub fn new() -> Self {
        Self {
            root: PathBuf::from("/proc"),
        }
    }
}

impl Default for SockDiagLookup {
    fn default() -> Self {
        Self::new()
    }
}

impl HolderLookup for SockDiagLookup {
    fn method(&self) -> LookupMethod {
        LookupMethod::SockDiag
    }

    fn find_listeners(&self, port: u16) -> Result<Vec<PortHolder>, Error> {
        Ok(holders_of(&self.root, Self::sockets(port)?, Scan::Complete))
    }

    fn find_first_holders(&self, port: u16) -> Result<Vec<PortHolder>, Error> {
        Ok(holders_of(
            &self.root,
            Self::sockets(port)?,
            Scan::FirstHolder,
        ))
    }
}

impl SockDiagLookup {
    fn sockets(port: u16) -> Result<Vec<SocketRow>, Error> {
        super::sock_diag::listening_sockets(port).map_err(|e| Error::Platform {
            method: LookupMethod::SockDiag,
            message: e.to_string(),
        })
    }
}

/// How much of `/proc` the owner scan reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scan {
    /// Every process: all holders of every socket (forked processes sharing one socket).
    Complete,
    /// Likely holders first, stopping once every socket has one holder; a socket nobody
    /// visible holds still costs a complete scan (so "owner unknown" is never a guess).
    FirstHolder,
}

/// Attaches the processes holding each socket; sockets nobody visible holds get `None`.
fn holders_of(root: &Path, sockets: Vec<SocketRow>, scan: Scan) -> Vec<PortHolder> {
    if sockets.is_empty() {
        return Vec::new();
    }
    let wanted: Vec<Wanted> = sockets
        .iter()
        .filter(|s| s.inode != 0)
        .map(|s| Wanted {
            inode: s.inode,
            uid: s.uid,
        })
        .collect();
    let owners = pids_holding(root, &wanted, scan);
    let mut holders = Vec::new();
    for s in sockets {
        let pids = owners.get(&s.inode).map(Vec::as_slice).unwrap_or_default();
        let mut described = Vec::new();
        let mut undescribed = false;
        for &pid in pids {
            match describe_in(root, pid) {
                Some(info) => described.push(info),
                // Still there but unreadable: an unknown holder, never silently dropped
                // (dropping it could leave only a codex sibling to decide on).
                None if root.join(pid.to_string()).exists() => undescribed = true,
                None => {} // exited since the scan
            }
        }
        if described.is_empty() || undescribed {
            holders.push(PortHolder {
                socket: s.local,
                socket_uid: Some(s.uid),
                process: None,
            });
        }
        for p in described {
            holders.push(PortHolder {
                socket: s.local,
                socket_uid: Some(s.uid),
                process: Some(p),
            });
        }
    }
    holders
}

/// One row of `/proc/net/tcp*`, the fields we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SocketRow {
    pub(crate) local: SocketAddr,
    pub(crate) state: u8,
    pub(crate) uid: u32,
    pub(crate) inode: u64,
}

/// Parses one data row: `sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...`.
pub(crate) fn parse_socket_row(line: &str, v6: bool) -> Result<SocketRow, String> {
    let mut fields = line.split_whitespace();
    let mut next = |what: &str| {
        fields
            .next()
            .ok_or_else(|| format!("missing the {what} column"))
    };
    next("sl")?;
    let local = next("local_address")?;
    next("rem_address")?;
    let state = next("st")?;
    next("tx_queue:rx_queue")?;
    next("tr:tm->when")?;
    next("retrnsmt")?;
    let uid = next("uid")?;
    next("timeout")?;
    let inode = next("inode")?;
    let (ip, port) = local
        .split_once(':')
        .ok_or_else(|| format!("local address {local:?} has no ':'"))?;
    let port = u16::from_str_radix(port, 16).map_err(|_| format!("port {port:?} is not hex"))?;
    let ip = parse_hex_ip(ip, v6).ok_or_else(|| format!("address {ip:?} is not a hex IP"))?;
    Ok(SocketRow {
        local: SocketAddr::new(ip, port),
        state: u8::from_str_radix(state, 16).map_err(|_| format!("state {state:?} is not hex"))?,
        uid: uid
            .parse()
            .map_err(|_| format!("uid {uid:?} is not a number"))?,
        inode: inode
            .parse()
            .map_err(|_| format!("inode {inode:?} is not a number"))?,
    })
}

/// The kernel prints each 32-bit word of the address with `%08X` in host byte order.
fn parse_hex_ip(hex: &str, v6: bool) -> Option<IpAddr> {
    let want = if v6 { 32 } else { 8 };
    if hex.len() != want || !hex.is_ascii() {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, chunk) in hex.as_bytes().chunks(8).enumerate() {
        let word = u32::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
        bytes[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
    }
    Some(if v6 {
        IpAddr::V6(Ipv6Addr::from(bytes))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    })
}

/// A socket whose holders we look for: its inode and its owner's uid (from the socket table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Wanted {
    inode: u64,
    uid: u32,
}

/// Programs a stale login helper (or a server blocking the callback port) usually is, by
/// `/proc/<pid>/comm` (cut at 15 bytes): the Codex binary and the interpreters it or a
/// look-alike runs under. Only an ordering hint for [`Scan::FirstHolder`], never a verdict:
/// every other process is still scanned when these hold nothing.
pub(crate) fn is_likely_holder_name(comm: &[u8]) -> bool {
    let comm = comm.strip_suffix(b"\n").unwrap_or(comm);
    matches!(comm, b"codex" | b"node" | b"nodejs" | b"bun" | b"deno") || comm.starts_with(b"python")
}

/// Maps socket inode → pids whose fd table holds it. Unreadable processes are skipped.
///
/// This scan dominates the lookup's cost (one directory open and listing per process, one
/// `readlinkat` per descriptor), so it stays lean: `/proc` is opened once and each
/// `<pid>/fd` is opened relative to it, the listing reads through that same descriptor
/// (no reopen per process), links are read relative to it into a reused buffer, and nothing
/// else of a process (cmdline, exe, status) is read unless it holds a wanted socket.
/// `readlinkat` rather than `fstatat`: following a descriptor's link could block on a hung
/// network filesystem, reading the link text never touches the target.
///
/// [`Scan::FirstHolder`] orders the work so the holder is usually met early: processes owned
/// by a socket's uid whose name is a likely holder ([`is_likely_holder_name`]) first, newest
/// pid first (pids grow until they wrap, so recent processes come first), then everyone else
/// in the same order; it stops once every socket has a holder. Reading a process's owner
/// (`fstatat` on `/proc/<pid>`) and `comm` costs less than listing and reading its fd table,
/// which is what it saves. A complete pass is only needed to find every process sharing a
/// socket, which [`free`](crate::free) asks for before it stops anything.
fn pids_holding(root: &Path, wanted: &[Wanted], scan: Scan) -> HashMap<u64, Vec<u32>> {
    use rustix::fs::{AtFlags, CWD, Dir, Mode, OFlags, openat, statat};

    let mut found: HashMap<u64, Vec<u32>> = HashMap::new();
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let Ok(proc_fd) = openat(CWD, root, flags, Mode::empty()) else {
        return found;
    };
    let mut pids: Vec<u32> = Vec::with_capacity(512);
    {
        let Ok(mut processes) = Dir::read_from(&proc_fd) else {
            return found;
        };
        while let Some(Ok(entry)) = processes.read() {
            if let Some(pid) = parse_pid(entry.file_name().to_bytes()) {
                pids.push(pid);
            }
        }
    }
    // Newest first: a holder started recently is met before the long-running rest.
    pids.sort_unstable_by(|a, b| b.cmp(a));
    let mut scanner = FdScanner::default();
    let all_held =
        |found: &HashMap<u64, Vec<u32>>| wanted.iter().all(|w| found.contains_key(&w.inode));
    match scan {
        Scan::Complete => {
            for &pid in &pids {
                scanner.scan(&proc_fd, pid, wanted, &mut found);
            }
        }
        Scan::FirstHolder => {
            let mut later: Vec<u32> = Vec::with_capacity(pids.len());
            let mut comm = [0u8; 64];
            for &pid in &pids {
                let owner_matches = {
                    scanner.set_path(format_args!("{pid}"));
                    statat(&proc_fd, scanner.path.as_str(), AtFlags::empty())
                        .is_ok_and(|st| wanted.iter().any(|w| w.uid == st.st_uid))
                };
                let likely = owner_matches && {
                    scanner.set_path(format_args!("{pid}/comm"));
                    read_small(&proc_fd, scanner.path.as_str(), &mut comm)
                        .is_some_and(is_likely_holder_name)
                };
                if !likely {
                    later.push(pid);
                    continue;
                }
                scanner.scan(&proc_fd, pid, wanted, &mut found);
                if all_held(&found) {
                    return found;
                }
            }
            for &pid in &later {
                scanner.scan(&proc_fd, pid, wanted, &mut found);
                if all_held(&found) {
                    return found;
                }
            }
        }
    }
    found
}

fn parse_pid(name: &[u8]) -> Option<u32> {
    if name.is_empty() || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(name).ok()?.parse().ok()
}

/// Reads a small file relative to `dir` into `buf` (no allocation); the bytes read.
fn read_small<'b>(dir: &OwnedFd, path: &str, buf: &'b mut [u8]) -> Option<&'b [u8]> {
    use rustix::fs::{Mode, OFlags, openat};
    let fd = openat(dir, path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ok()?;
    let n = rustix::io::read(&fd, &mut *buf).ok()?;
    buf.get(..n)
}

/// Reusable buffers for reading fd tables: no allocation per process or descriptor.
#[derive(Default)]
struct FdScanner {
    path: String,
    link: Vec<u8>,
    fds: Vec<u32>,
}

impl FdScanner {
    fn set_path(&mut self, args: std::fmt::Arguments<'_>) {
        use std::fmt::Write as _;
        self.path.clear();
        let _ = self.path.write_fmt(args); // ok: writing to a String cannot fail
    }

    /// Records `pid` under every wanted inode its fd table holds. Unreadable: skipped.
    fn scan(
        &mut self,
        proc_fd: &OwnedFd,
        pid: u32,
        wanted: &[Wanted],
        found: &mut HashMap<u64, Vec<u32>>,
    ) {
        use rustix::fs::{Dir, Mode, OFlags, openat, readlinkat};

        self.set_path(format_args!("{pid}/fd"));
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        // Fails for another user's process (without root) or one that just exited.
        let Ok(fd_dir) = openat(proc_fd, self.path.as_str(), flags, Mode::empty()) else {
            return;
        };
        // Reads through `fd_dir` itself (`Dir::read_from` would reopen it).
        let Ok(mut listing) = Dir::new(fd_dir) else {
            return;
        };
        self.fds.clear();
        while let Some(Ok(fd)) = listing.read() {
            if let Some(n) = parse_pid(fd.file_name().to_bytes()) {
                self.fds.push(n);
            }
        }
        let Ok(dir_fd) = listing.fd() else { return };
        for i in 0..self.fds.len() {
            let fd = self.fds[i];
            self.set_path(format_args!("{fd}"));
            let target =
                match readlinkat(dir_fd, self.path.as_str(), std::mem::take(&mut self.link)) {
                    Ok(target) => target,
                    // Listing allowed but links not (ptrace rules, e.g. another user namespace):
                    // every fd of this process will fail the same way.
                    Err(rustix::io::Errno::ACCESS) => break,
                    Err(_) => continue, // closed since the listing
                };
            let inode = socket_inode_bytes(target.as_bytes());
            self.link = target.into_bytes();
            if let Some(inode) = inode
                && wanted.iter().any(|w| w.inode == inode)
            {
                let pids = found.entry(inode).or_default();
                if !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
        }
    }
}

/// `socket:[12345]` → 12345.
fn socket_inode_bytes(link: &[u8]) -> Option<u64> {
    let digits = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Reads a process's identity from `/proc/<pid>`; `None` when it no longer exists.
pub(crate) fn describe(pid: u32) -> Option<ProcessInfo> {
    describe_in(Path::new("/proc"), pid)
}

fn describe_in(root: &Path, pid: u32) -> Option<ProcessInfo> {
    let dir = root.join(pid.to_string());
    // A process name is any bytes (`prctl(PR_SET_NAME)`): read `/proc` text lossily, so a
    // name that is not UTF-8 never hides a holder.
    let stat = read_lossy(&dir.join("stat")).ok()?;
    let parsed = parse_stat(&stat)?;
    let name = read_lossy(&dir.join("comm"))
        .map(|s| s.trim_end_matches('\n').to_owned())
        .unwrap_or(parsed.comm);
    let mut info = ProcessInfo::new(pid, name).with_start_time(StartTime(parsed.start_ticks));
    if let Some(exe) = executable(&dir) {
        info = info.with_exe(exe);
    }
    if let Ok(cmdline) = fs::read(dir.join("cmdline")) {
        info.argv = split_cmdline(&cmdline);
    }
    if let Ok(status) = read_lossy(&dir.join("status")) {
        info.uid = parse_status_uid(&status);
    }
    Some(info)
}

/// A `/proc` text file, with bytes that are not UTF-8 replaced (U+FFFD).
fn read_lossy(path: &Path) -> io::Result<String> {
    fs::read(path).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// The process's executable. Linux appends ` (deleted)` to the link of an executable that was
/// deleted (or replaced) while running; that suffix is dropped — unless the file with the
/// literal name is the running executable itself (same device and inode as `exe`), i.e. a
/// program really named `… (deleted)`.
fn executable(dir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt as _;
    let link = dir.join("exe");
    let exe = fs::read_link(&link).ok()?;
    let Some(stripped) = exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) else {
        return Some(exe);
    };
    let literal_is_running = match (fs::metadata(&link), fs::metadata(&exe)) {
        (Ok(running), Ok(named)) => running.dev() == named.dev() && running.ino() == named.ino(),
        _ => false,
    };
    Some(if literal_is_running {
        exe
    } else {
        PathBuf::from(stripped)
    })
}

fn split_cmdline(raw: &[u8]) -> Vec<String> {
    raw.split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .skip_while(String::is_empty)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect()
}

/// Fields of `/proc/<pid>/stat` we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stat {
    pub(crate) comm: String,
    pub(crate) state: char,
    pub(crate) ppid: u32,
    pub(crate) start_ticks: u64,
}

/// Parses `/proc/<pid>/stat`. `comm` may hold spaces and parentheses, so fields are
/// counted after the *last* `)`; start time is field 22.
pub(crate) fn parse_stat(stat: &str) -> Option<Stat> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    // rest now starts at field 5; field 22 is 17 further on.
    let start_ticks = rest.nth(17)?.parse().ok()?;
    Some(Stat {
        comm,
        state,
        ppid,
        start_ticks,
    })
}

/// Bound on the parent chain walked by [`caller_lineage`]: real chains are a few dozen
/// deep; the bound only guards against a cycle read from a racing `/proc`.
const MAX_ANCESTORS: usize = 4096;

/// This process, then its parent, grandparent, … up to pid 1, from field 4 (ppid) of
/// `/proc/<pid>/stat`. Stops at ppid 0 (the top of this pid namespace), at a pid that cannot
/// be read, at a repeated pid, or after [`MAX_ANCESTORS`] steps.
pub(crate) fn caller_lineage() -> Vec<u32> {
    lineage_in(Path::new("/proc"), std::process::id())
}

fn lineage_in(root: &Path, pid: u32) -> Vec<u32> {
    let mut chain = vec![pid];
    let mut current = pid;
    while chain.len() < MAX_ANCESTORS {
        let Some(stat) = read_lossy(&root.join(current.to_string()).join("stat"))
            .ok()
            .as_deref()
            .and_then(parse_stat)
        else {
            break;
        };
        if stat.ppid == 0 || chain.contains(&stat.ppid) {
            break;
        }
        chain.push(stat.ppid);
        current = stat.ppid;
    }
    chain
}

/// Real uid from the `Uid:` line of `/proc/<pid>/status`.
fn parse_status_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// True when the process `pid` with this start time has exited (gone, zombie or pid reused).
fn has_exited_by_stat(pid: u32, start: Option<StartTime>) -> bool {
    match read_lossy(Path::new(&format!("/proc/{pid}/stat")))
        .ok()
        .as_deref()
        .and_then(parse_stat)
    {
        None => true,
        Some(s) => Some(StartTime(s.start_ticks)) != start || matches!(s.state, 'Z' | 'X' | 'x'),
    }
}

/// A verified process we may signal: through a pidfd when the kernel gives us one.
#[derive(Debug)]
pub(crate) struct LinuxTarget {
    expected: ProcessInfo,
    pid: Pid,
    pidfd: Option<OwnedFd>,
}

impl StopHandle for LinuxTarget {
    fn open(expected: &ProcessInfo) -> io::Result<Option<Self>> {
        let Some(pid) = i32::try_from(expected.pid).ok().and_then(Pid::from_raw) else {
            return Ok(None);
        };
        // Open first, verify second: if the identity still matches after the pidfd exists,
        // the pidfd refers to the process we inspected and can never hit a reused pid.
        let pidfd = match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
            Ok(fd) => Some(fd),
            Err(rustix::io::Errno::SRCH) => return Ok(None),
            // Old kernel (ENOSYS) or a seccomp filter (EPERM): fall back to re-verifying
            // the start time right before each signal.
            Err(_) => None,
        };
        match describe(expected.pid) {
            Some(now) if expected.is_same_process(&now) => Ok(Some(Self {
                expected: expected.clone(),
                pid,
                pidfd,
            })),
            _ => Ok(None),
        }
    }

    fn signal(&self, stop: Stop) -> io::Result<Signalled> {
        let sig = match stop {
            Stop::Terminate => Signal::TERM,
            Stop::Kill => Signal::KILL,
        };
        let result = match &self.pidfd {
            Some(fd) => rustix::process::pidfd_send_signal(fd, sig),
            None => {
                match describe(self.expected.pid) {
                    Some(now) if self.expected.is_same_process(&now) => {}
                    _ => return Ok(Signalled::AlreadyGone),
                }
                rustix::process::kill_process(self.pid, sig)
            }
        };
        match result {
            Ok(()) => Ok(Signalled::Sent),
            Err(rustix::io::Errno::SRCH) => Ok(Signalled::AlreadyGone),
            Err(e) => Err(e.into()),
        }
    }

    fn wait_exit(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        if let Some(fd) = &self.pidfd {
            // A pidfd becomes readable when the process exits (zombies included).
            let mut fds = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
            let ts = rustix::event::Timespec {
                tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(timeout.subsec_nanos()),
            };
            // Interrupted polls fall through to the bounded /proc check below.
            if let Ok(n) = rustix::event::poll(&mut fds, Some(&ts))
                && n > 0
            {
                return true;
            }
        }
        loop {
            if has_exited_by_stat(self.expected.pid, self.expected.start_time) {
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
        self.pidfd.is_some()
    }
}

/// The current user's real uid.
pub(crate) fn current_uid() -> Option<u32> {
    Some(rustix::process::getuid().as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_ipv4_listen_row() {
        let line = "   1: 0100007F:05AF 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 123456 1 0000000000000000 100 0 0 10 0";
        let row = parse_socket_row(line, false).unwrap();
        assert_eq!(row.local, "127.0.0.1:1455".parse().unwrap());
        assert_eq!(row.state, TCP_LISTEN);
        assert_eq!(row.uid, 1000);
        assert_eq!(row.inode, 123456);
    }

    #[test]
    fn parses_ipv6_rows() {
        let loopback = "   0: 00000000000000000000000001000000:05AF 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 999 1 0000000000000000 100 0 0 10 0";
        let row = parse_socket_row(loopback, true).unwrap();
        assert_eq!(row.local, "[::1]:1455".parse().unwrap());
        let mapped = "   0: 0000000000000000FFFF00000100007F:05AF 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5 1 0 100 0 0 10 0";
        let row = parse_socket_row(mapped, true).unwrap();
        assert_eq!(row.local, "[::ffff:127.0.0.1]:1455".parse().unwrap());
    }

    #[test]
    fn time_wait_rows_have_inode_zero_and_are_not_listen() {
        let line = "   3: 0100007F:05AF 0100007F:C350 06 00000000:00000000 03:00001234 00000000     0        0 0 3 0000000000000000";
        let row = parse_socket_row(line, false).unwrap();
        assert_ne!(row.state, TCP_LISTEN);
        assert_eq!(row.inode, 0);
    }

    #[test]
    fn rejects_malformed_rows_with_a_reason() {
        assert!(parse_socket_row("", false).unwrap_err().contains("sl"));
        let bad = "0: XYZ:05AF 0:0 0A 0:0 0:0 0 0 0 1";
        assert!(parse_socket_row(bad, false).unwrap_err().contains("hex IP"));
    }

    #[test]
    fn stat_with_spaces_and_parens_in_comm() {
        let stat = "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000000 100 18446744073709551615";
        let s = parse_stat(stat).unwrap();
        assert_eq!(s.comm, "my (odd) prog");
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.start_ticks, 987_654);
    }

    #[test]
    fn own_stat_parses() {
        let me = describe(std::process::id()).unwrap();
        assert!(me.start_time.is_some());
        assert_eq!(me.uid, current_uid());
        assert!(me.exe.is_some());
    }

    #[test]
    fn lineage_walks_up_to_the_top_of_the_namespace() {
        let chain = caller_lineage();
        assert_eq!(chain[0], std::process::id());
        let parent = parse_stat(&fs::read_to_string("/proc/self/stat").unwrap())
            .unwrap()
            .ppid;
        assert_eq!(chain.get(1), Some(&parent));
        // Every step is the parent of the one before, and the chain ends at the top.
        for pair in chain.windows(2) {
            let stat = parse_stat(&fs::read_to_string(format!("/proc/{}/stat", pair[0])).unwrap());
            assert_eq!(stat.map(|s| s.ppid), Some(pair[1]));
        }
        let last = chain[chain.len() - 1];
        let top = parse_stat(&fs::read_to_string(format!("/proc/{last}/stat")).unwrap()).unwrap();
        assert_eq!(top.ppid, 0, "{chain:?}");
    }

    #[test]
    fn lineage_stops_on_a_cycle_and_on_unreadable_pids() {
        let root = tempfile::tempdir().unwrap();
        let stat = |pid: u32, ppid: u32| {
            let dir = root.path().join(pid.to_string());
            fs::create_dir_all(&dir).unwrap();
            let line = format!("{pid} (x) S {ppid} 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 555 0 0");
            fs::write(dir.join("stat"), line).unwrap();
        };
        stat(10, 11);
        stat(11, 12);
        stat(12, 10); // a cycle, as a racing /proc with reused pids could show
        assert_eq!(lineage_in(root.path(), 10), [10, 11, 12]);
        stat(20, 21); // 21 does not exist
        assert_eq!(lineage_in(root.path(), 20), [20, 21]);
        assert_eq!(lineage_in(root.path(), 99), [99]);
    }

    #[test]
    fn likely_holder_names_are_the_codex_binary_and_interpreters() {
        for comm in [
            &b"codex\n"[..],
            b"node",
            b"nodejs\n",
            b"bun",
            b"deno",
            b"python3",
            b"python3.12\n",
        ] {
            assert!(
                is_likely_holder_name(comm),
                "{:?}",
                String::from_utf8_lossy(comm)
            );
        }
        for comm in [
            &b"sleep\n"[..],
            b"vscodex",
            b"codex-helper",
            b"",
            b"\n",
            b"nod",
            b"rustc",
        ] {
            assert!(
                !is_likely_holder_name(comm),
                "{:?}",
                String::from_utf8_lossy(comm)
            );
        }
    }

    #[test]
    fn socket_links_parse_only_sockets() {
        assert_eq!(socket_inode_bytes(b"socket:[12345]"), Some(12345));
        assert_eq!(socket_inode_bytes(b"pipe:[12345]"), None);
        assert_eq!(socket_inode_bytes(b"/dev/null"), None);
        assert_eq!(socket_inode_bytes(b"socket:[]"), None);
    }

    #[test]
    fn cmdline_split_drops_only_the_trailing_nul() {
        assert_eq!(split_cmdline(b"a\0\0b\0"), vec!["a", "", "b"]);
        assert!(split_cmdline(b"").is_empty());
    }

    fn sleeper() -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap()
    }

    #[test]
    fn a_reused_pid_is_never_opened() {
        let mut child = sleeper();
        let real = describe(child.id()).unwrap();
        // Same pid, different start time: what a reused pid looks like.
        let mut stale = real.clone();
        stale.start_time = real.start_time.map(|StartTime(t)| StartTime(t + 1));
        assert!(LinuxTarget::open(&stale).unwrap().is_none());
        let mut other_exe = real.clone();
        other_exe.exe = Some("/usr/bin/codex".into());
        assert!(LinuxTarget::open(&other_exe).unwrap().is_none());
        assert!(
            matches!(child.try_wait(), Ok(None)),
            "nothing was signalled"
        );

        let target = LinuxTarget::open(&real).unwrap().unwrap();
        assert!(target.used_pidfd());
        assert_eq!(target.signal(Stop::Terminate).unwrap(), Signalled::Sent);
        assert!(target.wait_exit(Duration::from_secs(5)));
        let _ = child.wait();
    }

    #[test]
    fn without_a_pidfd_the_start_time_is_rechecked_before_each_signal() {
        let mut child = sleeper();
        let real = describe(child.id()).unwrap();
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
        let mut stale = real.clone();
        stale.start_time = real.start_time.map(|StartTime(t)| StartTime(t + 1));
        // As if the pid had been reused between open and signal.
        let reused = LinuxTarget {
            expected: stale,
            pid,
            pidfd: None,
        };
        assert_eq!(reused.signal(Stop::Kill).unwrap(), Signalled::AlreadyGone);
        assert!(
            matches!(child.try_wait(), Ok(None)),
            "the new process was not signalled"
        );

        let target = LinuxTarget {
            expected: real,
            pid,
            pidfd: None,
        };
        assert!(!target.used_pidfd());
        assert_eq!(target.signal(Stop::Kill).unwrap(), Signalled::Sent);
        assert!(
            target.wait_exit(Duration::from_secs(5)),
            "a zombie counts as exited"
        );
        let _ = child.wait();
    }

    proptest! {
        #[test]
        fn socket_row_parser_never_panics(line in ".{0,200}", v6: bool) {
            let _ = parse_socket_row(&line, v6);
        }

        #[test]
        fn stat_parser_never_panics(stat in ".{0,200}") {
            let _ = parse_stat(&stat);
        }

        #[test]
        fn ipv4_round_trip(a: u8, b: u8, c: u8, d: u8, port: u16) {
            let word = u32::from_ne_bytes([a, b, c, d]);
            let line = format!("0: {word:08X}:{port:04X} 00000000:0000 0A 0:0 0:0 0 0 0 7");
            let row = parse_socket_row(&line, false).unwrap();
            prop_assert_eq!(row.local, SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port));
        }
    }
}
