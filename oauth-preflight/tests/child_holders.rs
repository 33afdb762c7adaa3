//! Real holders on every platform: this test executable, re-run as a child under another
//! name (`codex`/`codex.exe` to look like the login helper by its executable, `holder`/
//! `holder.exe` for anything else), listens on an ephemeral loopback port; `inspect` must
//! find it with its identity and `free` must stop it or refuse it. Runs natively on Linux
//! and, built for `x86_64-pc-windows-gnu`, under Wine 8 (`.ci/windows-tests`).
//!
//! Wine 8's TCP tables give owner pid 0 for every socket (it keeps the host socket in the
//! `wineserver` process), so there the lookup cannot say which process holds a socket.
//! Under Wine these tests check what the table does say (LISTEN rows, addresses, ports),
//! print `SKIP: <test>: owner pid …` for the rest, and then hand the pid they started to
//! the remaining steps (`ProcessInfo::read`, the matcher, the decision, the verified process
//! handle, `TerminateProcess`, the wait for the port) through [`OwnersFromTheTest`], so
//! those still run for real. On Windows proper (and on Linux) nothing is handed over.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use oauth_preflight::{
    Error, FreePolicy, HolderLookup, LookupMethod, Outcome, PortHolder, ProcessInfo, StartTime,
    default_lookups, free, inspect, inspect_with, investigate_command, native_lookups,
};

/// The child reads the address to listen on from here.
const HOLD_ENV: &str = "OAUTH_PREFLIGHT_TEST_HOLD";
/// How long a child lives at most, and how long we wait for it to report its port (a Wine
/// process start can take seconds on a busy machine).
const CHILD_LIFETIME: Duration = Duration::from_secs(60);
const PORT_REPORT_WAIT: Duration = Duration::from_secs(30);

fn skip(test: &str, reason: &str) {
    let _ = writeln!(std::io::stderr(), "SKIP: {test}: {reason}");
}

/// The child's side: listens on `$OAUTH_PREFLIGHT_TEST_HOLD`, prints `PORT=<port>`, and
/// lives until killed (at most a minute).
#[test]
#[ignore = "child entry: started by the other tests in this file"]
fn child_entry() {
    let Ok(addr) = std::env::var(HOLD_ENV) else {
        skip("child_entry", "only runs as a child of the other tests");
        return;
    };
    let listener = TcpListener::bind(addr.as_str()).expect("the child binds");
    let port = listener.local_addr().unwrap().port();
    let mut out = std::io::stdout();
    writeln!(out, "PORT={port}").unwrap();
    out.flush().unwrap();
    std::thread::sleep(CHILD_LIFETIME);
}

/// A running child holding a listening socket; killed and reaped on drop.
struct Holder {
    child: std::process::Child,
    addr: SocketAddr,
    exe: PathBuf,
    _dir: tempfile::TempDir,
}

impl Holder {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the child has not exited.
    fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits (bounded) for the child to exit and returns how.
    fn exit_status(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // Before `_dir` goes: Windows cannot delete a running executable.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The executable file name for `name` on this platform.
fn program(name: &str) -> String {
    format!("{name}{}", std::env::consts::EXE_SUFFIX)
}

/// Starts this test executable as `name` (a link or copy in a fresh directory), listening
/// on `addr` (port 0: any free port).
fn spawn(name: &str, addr: SocketAddr) -> Holder {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join(program(name));
    let me = std::env::current_exe().unwrap();
    // A hard link is enough for Linux (`/proc/<pid>/exe` names the path it was started by);
    // Wine names the file a link points to, so Windows gets a copy.
    if cfg!(windows) || std::fs::hard_link(&me, &exe).is_err() {
        std::fs::copy(&me, &exe).unwrap();
    }
    let mut cmd = Command::new(&exe);
    cmd.args(["child_entry", "--exact", "--ignored", "--nocapture"])
        .args(["--test-threads=1", "-q"])
        .env(HOLD_ENV, addr.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = start(&mut cmd);
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // libtest prints its own lines first; a bounded number of lines is read.
        for line in BufReader::new(stdout).lines().take(50) {
            let Ok(line) = line else { break };
            if let Some(port) = line.trim().strip_prefix("PORT=") {
                let _ = tx.send(port.parse::<u16>().ok());
                return;
            }
        }
        let _ = tx.send(None);
    });
    let port = rx.recv_timeout(PORT_REPORT_WAIT).ok().flatten();
    let Some(port) = port else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{} did not report a port on {addr}", exe.display());
    };
    Holder {
        child,
        addr: SocketAddr::new(addr.ip(), port),
        exe,
        _dir: dir,
    }
}

/// Spawns `cmd`, retrying (bounded) while exec fails with ETXTBSY: on Linux a parallel test
/// forking while we linked the program can hold a write descriptor until that child execs.
fn start(cmd: &mut Command) -> std::process::Child {
    for _ in 0..100 {
        match cmd.spawn() {
            Ok(child) => return child,
            Err(e) if cfg!(unix) && e.raw_os_error() == Some(26) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("could not start {cmd:?}: {e}"),
        }
    }
    panic!("could not start {cmd:?}: still ETXTBSY after 100 attempts")
}

fn v4(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

fn v6(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port)
}

fn ipv6_available() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

/// True when running under Wine rather than Windows (ntdll exports `wine_get_version`).
#[cfg(windows)]
#[allow(unsafe_code)]
fn under_wine() -> bool {
    use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleA, GetProcAddress};
    // SAFETY: both calls take NUL-terminated strings that live for the call; ntdll is
    // loaded in every process, and a null handle is checked before use.
    unsafe {
        let ntdll = GetModuleHandleA(c"ntdll.dll".as_ptr().cast());
        !ntdll.is_null() && GetProcAddress(ntdll, c"wine_get_version".as_ptr().cast()).is_some()
    }
}

#[cfg(not(windows))]
fn under_wine() -> bool {
    false
}

const WINE_OWNER: &str = "owner pid: Wine 8's TCP table reports pid 0 for every socket; the \
                          rows are checked and the test supplies the pid it started";

/// [`skip`], once per test however often the owner is missing in it.
fn skip_owner_once(test: &str) {
    static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if !said.iter().any(|t| t == test) {
        said.push(test.to_owned());
        skip(test, WINE_OWNER);
    }
}

/// The native lookup, with the owners Wine 8 cannot report filled in by the test: a LISTEN
/// row whose owner is unknown and whose socket the test itself opened gets the process the
/// test knows holds it, read with [`ProcessInfo::read`]. Rows the test did not open stay
/// unknown (and refuse). Used only under Wine; prints a `SKIP:` line when it fills one in.
struct OwnersFromTheTest {
    test: &'static str,
    native: Arc<dyn HolderLookup>,
    known: Vec<(SocketAddr, u32)>,
}

impl HolderLookup for OwnersFromTheTest {
    fn method(&self) -> LookupMethod {
        self.native.method()
    }

    fn find_listeners(&self, port: u16) -> Result<Vec<PortHolder>, Error> {
        let mut holders = self.native.find_listeners(port)?;
        for h in holders.iter_mut().filter(|h| h.process.is_none()) {
            if let Some(&(_, pid)) = self.known.iter().find(|(addr, _)| *addr == h.socket) {
                skip_owner_once(self.test);
                h.process = ProcessInfo::read(pid);
            }
        }
        Ok(holders)
    }
}

/// The lookups a test's `free` uses: the defaults, or under Wine the native lookup with the
/// owners in `known` filled in.
fn lookups(test: &'static str, known: &[(SocketAddr, u32)]) -> Vec<Arc<dyn HolderLookup>> {
    if under_wine() {
        vec![Arc::new(OwnersFromTheTest {
            test,
            native: native_lookups().remove(0),
            known: known.to_vec(),
        })]
    } else {
        default_lookups()
    }
}

fn quick(test: &'static str, known: &[(SocketAddr, u32)]) -> FreePolicy {
    FreePolicy::default()
        .with_grace(Duration::from_millis(500))
        .with_lookups(lookups(test, known))
}

/// The process the table says holds `holder`, which must be `pid`; under Wine, where the
/// table names no owner, prints the skip and says so with `false`.
fn owner_is(test: &str, holder: &PortHolder, pid: u32) -> bool {
    match &holder.process {
        Some(p) => {
            assert_eq!(p.pid, pid, "{holder:?}");
            true
        }
        None => {
            assert!(
                under_wine(),
                "the lookup named no owner for {} on {}: {holder:?}",
                std::env::consts::OS,
                holder.socket
            );
            skip_owner_once(test);
            false
        }
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    // Windows paths compare without regard to case.
    if cfg!(windows) {
        a.to_string_lossy().to_lowercase() == b.to_string_lossy().to_lowercase()
    } else {
        a == b
    }
}

fn assert_identity(p: &ProcessInfo, h: &Holder, name: &str) {
    assert_eq!(p.pid, h.pid());
    assert!(
        p.exe.as_deref().is_some_and(|e| same_file(e, &h.exe)),
        "exe {:?}, expected {}",
        p.exe,
        h.exe.display()
    );
    // Linux: `/proc/<pid>/comm`; Windows: the executable's file name.
    assert_eq!(p.name, program(name));
    let me = ProcessInfo::read(std::process::id()).unwrap();
    assert!(
        p.start_time.is_some() && p.start_time >= me.start_time,
        "the child started after us: {:?} vs {:?}",
        p.start_time,
        me.start_time
    );
    assert_eq!(p.uid, me.uid, "same user (none on Windows)");
}

#[test]
fn a_holder_is_found_with_its_pid_name_executable_and_start_time() {
    const TEST: &str = "a_holder_is_found_with_its_pid_name_executable_and_start_time";
    let h = spawn("holder", v4(0));
    let found = inspect(h.addr).unwrap();
    assert_eq!(
        found.method,
        native_lookups()[0].method(),
        "native, no fallback"
    );
    assert!(!found.is_free());
    assert_eq!(found.holders.len(), 1, "{found:?}");
    assert_eq!(found.holders[0].socket, h.addr);
    if owner_is(TEST, &found.holders[0], h.pid()) {
        assert_identity(found.holders[0].process.as_ref().unwrap(), &h, "holder");
    }
    // What the lookup adds to a pid, read directly: the same on every platform.
    let read = ProcessInfo::read(h.pid()).expect("the running child");
    assert_identity(&read, &h, "holder");
    assert!(read.is_same_process(&ProcessInfo::read(h.pid()).unwrap()));
}

#[test]
fn a_port_nobody_holds_has_no_holders_and_is_free() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for lookup in native_lookups() {
        assert_eq!(
            lookup.find_listeners(port).unwrap(),
            [],
            "{}",
            lookup.method()
        );
    }
    let found = inspect(v4(port)).unwrap();
    assert!(found.is_free(), "{found:?}");
    let outcome = free(v4(port), &FreePolicy::default());
    assert!(matches!(outcome, Outcome::Free { .. }), "{outcome}");
}

#[test]
fn a_connection_accepted_on_the_port_is_not_a_holder() {
    const TEST: &str = "a_connection_accepted_on_the_port_is_not_a_holder";
    if cfg!(target_os = "macos") {
        // README: `listeners` 0.5 gives no TCP state on macOS, so accepted sockets count.
        skip(TEST, "macOS's lookup counts every TCP socket on the port");
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = TcpStream::connect(addr).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    // The accepted socket has the listener's local address and port, the client's has the
    // port as its remote one: neither is a second holder.
    let found = native_lookups()[0].find_listeners(addr.port()).unwrap();
    assert_eq!(found.len(), 1, "only the LISTEN socket: {found:?}");
    assert_eq!(found[0].socket, addr);
    drop(listener);
    // A connection left over from a closed listener holds nothing a login would bind.
    let found = native_lookups()[0].find_listeners(addr.port()).unwrap();
    assert_eq!(found, [], "the accepted connection is not a holder");
    assert!(inspect(addr).unwrap().holders.is_empty());
    drop((client, accepted));
}

#[test]
fn an_ipv6_loopback_holder_blocks_the_ipv4_callback() {
    const TEST: &str = "an_ipv6_loopback_holder_blocks_the_ipv4_callback";
    if !ipv6_available() {
        skip(TEST, "no IPv6 loopback here");
        return;
    }
    let h = spawn("holder", v6(0));
    // The browser's callback to `localhost` may reach [::1]: a holder there counts even
    // though 127.0.0.1 on the same port can be bound.
    let found = inspect(v4(h.addr.port())).unwrap();
    assert_eq!(found.holders.len(), 1, "{found:?}");
    assert_eq!(found.holders[0].socket, h.addr);
    owner_is(TEST, &found.holders[0], h.pid());
    assert!(!found.is_free());
}

#[test]
fn a_codex_holder_is_terminated_and_the_port_becomes_bindable() {
    const TEST: &str = "a_codex_holder_is_terminated_and_the_port_becomes_bindable";
    let mut h = spawn("codex", v4(0));
    let outcome = free(h.addr, &quick(TEST, &[(h.addr, h.pid())]));
    let Outcome::Freed { stopped, .. } = &outcome else {
        panic!("expected Freed, got {outcome}")
    };
    assert_eq!(stopped.len(), 1);
    assert_eq!(stopped[0].pid, h.pid());
    assert!(!stopped[0].forced, "exited within the grace period");
    assert!(
        stopped[0].pinned,
        "stopped through a pidfd or process handle"
    );
    let how = if cfg!(windows) {
        "with TerminateProcess"
    } else {
        "with SIGTERM"
    };
    let expected = format!("pid {} ({}) {how}", h.pid(), program("codex"));
    assert!(outcome.to_string().contains(&expected), "{outcome}");
    TcpListener::bind(h.addr).expect("the port is bindable after free");
    let status = h
        .exit_status(Duration::from_secs(5))
        .expect("the holder exited");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(status.signal(), Some(15), "stopped by SIGTERM: {status}");
    }
    #[cfg(windows)]
    assert_eq!(
        status.code(),
        Some(1),
        "TerminateProcess(handle, 1): {status}"
    );
}

#[test]
fn a_foreign_holder_is_refused_with_its_pid_and_name_and_left_alive() {
    const TEST: &str = "a_foreign_holder_is_refused_with_its_pid_and_name_and_left_alive";
    let mut h = spawn("holder", v4(0));
    let outcome = free(h.addr, &quick(TEST, &[(h.addr, h.pid())]));
    let Outcome::HeldByForeign { holder, .. } = &outcome else {
        panic!("expected HeldByForeign, got {outcome}")
    };
    assert_eq!(holder.pid, h.pid());
    let msg = outcome.to_string();
    for needle in [
        format!(
            "Port {} is held by pid {} ({})",
            h.addr,
            h.pid(),
            program("holder")
        ),
        "does NOT look like a Codex login helper".to_owned(),
        "nothing was killed".to_owned(),
        investigate_command(h.addr.port()),
    ] {
        assert!(msg.contains(&needle), "{needle:?} missing from {msg}");
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(h.is_alive(), "a refused holder is left alone");
}

#[test]
fn our_own_listener_is_held_by_the_caller_and_never_stopped() {
    const TEST: &str = "our_own_listener_is_held_by_the_caller_and_never_stopped";
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let found = inspect(addr).unwrap();
    assert_eq!(found.holders.len(), 1, "{found:?}");
    owner_is(TEST, &found.holders[0], std::process::id());
    // Even a matcher that accepts everything does not make `free` stop its own caller.
    let policy = quick(TEST, &[(addr, std::process::id())]).with_matcher(|_: &ProcessInfo| true);
    let outcome = free(addr, &policy);
    let Outcome::HeldByCaller {
        holder, generation, ..
    } = &outcome
    else {
        panic!("expected HeldByCaller, got {outcome}")
    };
    assert_eq!((holder.pid, *generation), (std::process::id(), 0));
    assert!(
        outcome.to_string().contains("nothing was killed"),
        "{outcome}"
    );
    drop(listener);
}

#[test]
fn two_processes_on_both_loopback_families_are_both_reported_and_decided_on() {
    const TEST: &str = "two_processes_on_both_loopback_families_are_both_reported_and_decided_on";
    if !ipv6_available() {
        skip(TEST, "no IPv6 loopback here");
        return;
    }
    let mut a = spawn("codex", v4(0));
    let port = a.addr.port();
    let mut b = spawn("holder", v6(port));
    let found = inspect(v4(port)).unwrap();
    let mut sockets: Vec<SocketAddr> = found.holders.iter().map(|h| h.socket).collect();
    sockets.sort();
    assert_eq!(sockets, [v4(port), v6(port)], "{found:?}");
    for (holder, pid) in found.holders.iter().map(|x| {
        let pid = if x.socket == a.addr { a.pid() } else { b.pid() };
        (x, pid)
    }) {
        owner_is(TEST, holder, pid);
    }

    // One of them is not a login helper: the whole port is refused, nobody is stopped.
    let known = [(a.addr, a.pid()), (b.addr, b.pid())];
    let outcome = free(v4(port), &quick(TEST, &known));
    let Outcome::HeldByForeign { holder, .. } = &outcome else {
        panic!("expected HeldByForeign, got {outcome}")
    };
    assert_eq!(holder.pid, b.pid(), "{outcome}");
    std::thread::sleep(Duration::from_millis(100));
    assert!(a.is_alive() && b.is_alive(), "nothing was stopped");

    // Both are login helpers: both are stopped, and both families can be bound again.
    drop(b);
    let c = spawn("codex", v6(port));
    let known = [(a.addr, a.pid()), (c.addr, c.pid())];
    let outcome = free(v4(port), &quick(TEST, &known));
    let Outcome::Freed { stopped, .. } = &outcome else {
        panic!("expected Freed, got {outcome}")
    };
    let mut pids: Vec<u32> = stopped.iter().map(|s| s.pid).collect();
    pids.sort_unstable();
    let mut expected = vec![a.pid(), c.pid()];
    expected.sort_unstable();
    assert_eq!(pids, expected, "{outcome}");
    TcpListener::bind(v4(port)).expect("IPv4 bindable");
    TcpListener::bind(v6(port)).expect("IPv6 bindable");
    assert!(a.exit_status(Duration::from_secs(5)).is_some());
}

/// A fixed answer: the holder as the test describes it.
struct Reports(Vec<PortHolder>);

impl HolderLookup for Reports {
    fn method(&self) -> LookupMethod {
        native_lookups()[0].method()
    }
    fn find_listeners(&self, _port: u16) -> Result<Vec<PortHolder>, Error> {
        Ok(self.0.clone())
    }
}

#[test]
fn a_holder_whose_identity_no_longer_matches_is_never_stopped() {
    let mut h = spawn("codex", v4(0));
    let real = ProcessInfo::read(h.pid()).unwrap();
    let start = real.start_time.unwrap();
    // What a lookup would have seen if the pid had belonged to another process before (pid
    // reuse): same pid, same name, another start time; or another `codex` executable.
    let earlier = real.clone().with_start_time(StartTime(start.0 - 1));
    let elsewhere = h
        .exe
        .parent()
        .unwrap()
        .join("elsewhere")
        .join(program("codex"));
    let other_exe = real.clone().with_exe(elsewhere);
    for (what, seen) in [("start time", earlier), ("executable", other_exe)] {
        assert!(!seen.is_same_process(&real), "{what}");
        let policy = FreePolicy::default()
            .with_grace(Duration::from_millis(200))
            .with_bind_wait(Duration::from_millis(300))
            .with_lookups(vec![Arc::new(Reports(vec![PortHolder::new(
                h.addr,
                Some(seen),
            )]))]);
        let outcome = free(h.addr, &policy);
        // The decision accepts the codex holder, the verification refuses to stop it.
        let Outcome::StillHeld { stopped, .. } = &outcome else {
            panic!("{what}: expected StillHeld, got {outcome}")
        };
        assert!(stopped.is_empty(), "{what}: nothing was stopped: {outcome}");
        assert!(h.is_alive(), "{what}: the process was not touched");
    }
    assert!(!inspect_with(h.addr, &default_lookups()).unwrap().is_free());
}

#[test]
fn a_process_is_read_only_while_it_runs_and_only_as_itself() {
    let mut a = spawn("codex", v4(0));
    let b = spawn("codex", v4(0));
    let (ra, rb) = (
        ProcessInfo::read(a.pid()).unwrap(),
        ProcessInfo::read(b.pid()).unwrap(),
    );
    // Same name and executable name, different processes: never "the same" even when the
    // pid is made to agree (what a reused pid would look like).
    assert_eq!(ra.name, rb.name);
    let mut b_on_a_pid = rb.clone();
    b_on_a_pid.pid = a.pid();
    assert!(!ra.is_same_process(&b_on_a_pid));
    assert!(ra.is_same_process(&ProcessInfo::read(a.pid()).unwrap()));
    // Gone: not read, even while this process still holds the child's handle (Windows).
    let pid = a.pid();
    a.child.kill().unwrap();
    a.exit_status(Duration::from_secs(5)).expect("killed");
    assert_eq!(ProcessInfo::read(pid), None);
}
