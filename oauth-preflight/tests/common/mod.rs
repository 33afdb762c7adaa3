//! Real port holders for the integration tests: python3 children (optionally copied under
//! another program name) that listen on an ephemeral loopback port.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Listens, optionally ignores SIGTERM and forks, prints the port, then sleeps (bounded).
const HOLDER_PY: &str = r#"
import os, signal, socket, sys, time
v6 = sys.argv[1] in ("6", "6any")
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET)
if v6:
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if sys.argv[1] == "6" else 0)
s.bind(("::" if sys.argv[1] == "6any" else "::1" if v6 else "127.0.0.1", 0))
s.listen(8)
if "drop-uid" in sys.argv:
    os.setgid(65534)
    os.setuid(65534)
if "ignore-term" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if "fork" in sys.argv and os.fork() == 0:
    time.sleep(60)
    sys.exit(0)
print(s.getsockname()[1], flush=True)
time.sleep(60)
"#;

pub fn skip(test: &str, reason: &str) {
    let _ = writeln!(std::io::stderr(), "SKIP: {test}: {reason}");
}

/// A real python3 binary (not a pyenv shim script), so it can be copied under another name.
pub fn python3() -> Option<PathBuf> {
    let system = Path::new("/usr/bin/python3");
    if system.exists() {
        return Some(system.to_owned());
    }
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    path.exists().then_some(path)
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    /// `[::1]` with `IPV6_V6ONLY`.
    V6Only,
    /// `[::]`, dual-stack (also takes the IPv4 port).
    V6Any,
}

pub struct Spec {
    /// Program name to copy python3 to (`None`: run python3 itself).
    pub name: Option<&'static str>,
    pub family: Family,
    pub ignore_term: bool,
    pub fork: bool,
    pub uid: Option<u32>,
    /// Bind as the starting user, then switch to uid/gid 65534 (needs root): the socket's
    /// owner and the process's owner then differ.
    pub drop_uid_after_bind: bool,
}

impl Spec {
    pub fn named(name: &'static str) -> Self {
        Self {
            name: Some(name),
            family: Family::V4,
            ignore_term: false,
            fork: false,
            uid: None,
            drop_uid_after_bind: false,
        }
    }
    pub fn python() -> Self {
        Self {
            name: None,
            ..Self::named("")
        }
    }
}

pub struct Holder {
    pub child: Child,
    pub addr: SocketAddr,
    pub exe: PathBuf,
    _dir: tempfile::TempDir,
}

impl Holder {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the child has not exited.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spawn(spec: Spec) -> Holder {
    let python = python3().expect("python3 is installed by .ci/run");
    let dir = tempfile::tempdir().unwrap();
    // Other users must be able to run the copy.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = match spec.name {
        Some(name) => {
            let copy = dir.path().join(name);
            std::fs::copy(&python, &copy).unwrap();
            copy
        }
        None => python,
    };
    let mut cmd = Command::new(&exe);
    cmd.arg("-c").arg(HOLDER_PY).arg(match spec.family {
        Family::V4 => "4",
        Family::V6Only => "6",
        Family::V6Any => "6any",
    });
    if spec.ignore_term {
        cmd.arg("ignore-term");
    }
    if spec.fork {
        cmd.arg("fork");
    }
    if spec.drop_uid_after_bind {
        cmd.arg("drop-uid");
    }
    if let Some(uid) = spec.uid {
        cmd.uid(uid).gid(uid);
    }
    let (child, port) = start_and_read_port(&mut cmd, None);
    let ip = match spec.family {
        Family::V4 => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Family::V6Only => IpAddr::V6(Ipv6Addr::LOCALHOST),
        Family::V6Any => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    Holder {
        child,
        addr: SocketAddr::new(ip, port),
        exe,
        _dir: dir,
    }
}

/// Starts `cmd` with stdout piped (optionally writing `stdin` to it) and waits, bounded, for
/// the port it prints on its first line. Panics (after killing it) when none comes.
pub fn start_and_read_port(cmd: &mut Command, stdin: Option<&str>) -> (Child, u16) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = start(cmd);
    if let Some(code) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(code.as_bytes()).unwrap();
    }
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(15)).unwrap_or_default();
    let Ok(port) = line.trim().parse::<u16>() else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("holder {cmd:?} did not report its port (got {line:?})");
    };
    (child, port)
}

/// Spawns `cmd`, retrying (bounded) while exec fails with ETXTBSY: a parallel test forking
/// while we wrote a program copy or script can hold its write fd until that child execs.
pub fn start(cmd: &mut Command) -> Child {
    let mut attempts = 0;
    loop {
        match cmd.spawn() {
            Ok(child) => return child,
            Err(e) if e.raw_os_error() == Some(26) && attempts < 100 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("could not start {cmd:?}: {e}"),
        }
    }
}

/// A holder started from any command (node, python3, a script); `dir` lives as long as it.
pub fn holder(child: Child, addr: SocketAddr, exe: PathBuf, dir: tempfile::TempDir) -> Holder {
    Holder {
        child,
        addr,
        exe,
        _dir: dir,
    }
}

/// The IPv4 loopback address on the same port (what a login callback would bind).
pub fn v4(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

pub fn ipv6_available() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

pub fn is_root() -> bool {
    rustix_uid() == 0
}

fn rustix_uid() -> u32 {
    // Read our own real uid from /proc to avoid a dev-dependency just for getuid.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next().and_then(|u| u.parse().ok()))
        })
        .unwrap_or(u32::MAX)
}
