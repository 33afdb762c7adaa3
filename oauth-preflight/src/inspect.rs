//! Who listens on a port: the lookup seam, the bind probe, and [`inspect`].

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::Arc;

use crate::{Error, ProcessInfo};

/// Which mechanism answered a lookup.
///
/// ```
/// use oauth_preflight::LookupMethod;
/// assert!(LookupMethod::Lsof.is_fallback());
/// assert_eq!(LookupMethod::SockDiag.to_string(), "sock_diag + /proc (native)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum LookupMethod {
    /// Linux `NETLINK_SOCK_DIAG` for LISTEN sockets + `/proc/<pid>/fd` (native, default).
    SockDiag,
    /// Linux `/proc/net/tcp{,6}` + `/proc/<pid>/fd` (native).
    Procfs,
    /// macOS libproc socket enumeration via `listeners` (native; type-checked, not run).
    Libproc,
    /// Windows `GetExtendedTcpTable`, LISTEN rows only, + a handle per owner (native).
    TcpTable,
    /// `lsof` (fallback, spawns a process).
    Lsof,
}

impl LookupMethod {
    /// True for the fallback that shells out.
    pub fn is_fallback(self) -> bool {
        matches!(self, Self::Lsof)
    }
}

impl fmt::Display for LookupMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SockDiag => "sock_diag + /proc (native)",
            Self::Procfs => "/proc (native)",
            Self::Libproc => "libproc (native)",
            Self::TcpTable => "TCP table API (native)",
            Self::Lsof => "lsof (fallback)",
        })
    }
}

/// One process holding one LISTEN socket on the port.
///
/// Several processes share a socket after a fork: each appears as its own holder. A socket
/// whose process cannot be seen (another user's, while we are not root) appears once with
/// `process: None`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct PortHolder {
    /// Local address the socket listens on (`[::]`, `0.0.0.0`, `127.0.0.1`, `[::1]`, ...).
    pub socket: SocketAddr,
    /// Owner of the socket per the socket table, when the platform says.
    pub socket_uid: Option<u32>,
    /// The process, or `None` when it cannot be inspected.
    pub process: Option<ProcessInfo>,
}

impl PortHolder {
    /// A holder on `socket`, optionally with its process.
    pub fn new(socket: SocketAddr, process: Option<ProcessInfo>) -> Self {
        Self {
            socket,
            socket_uid: process.as_ref().and_then(|p| p.uid),
            process,
        }
    }
}

/// Finds LISTEN sockets on a TCP port and the processes holding them.
///
/// Implemented by `SockDiagLookup` and `ProcfsLookup` (Linux), `TcpTableLookup` (Windows),
/// the macOS native lookup, and `LsofLookup` (Unix); each exists only on its platform. Implement it to plug in another
/// source (e.g. a remote agent, or a fixed answer in tests).
///
/// ```
/// use oauth_preflight::{Error, HolderLookup, LookupMethod, PortHolder};
///
/// struct Nobody;
/// impl HolderLookup for Nobody {
///     fn method(&self) -> LookupMethod { LookupMethod::Procfs }
///     fn find_listeners(&self, _port: u16) -> Result<Vec<PortHolder>, Error> { Ok(vec![]) }
/// }
/// assert!(Nobody.find_listeners(1455)?.is_empty());
/// # Ok::<(), Error>(())
/// ```
pub trait HolderLookup: Send + Sync {
    /// Which mechanism this is, reported in results.
    fn method(&self) -> LookupMethod;
    /// Every LISTEN socket on `port`, on any local address, with all its holders.
    fn find_listeners(&self, port: u16) -> Result<Vec<PortHolder>, Error>;

    /// Every LISTEN socket on `port` with at least one of its holders (when any is visible):
    /// a lookup may stop at the first holder of each socket, so other processes sharing a
    /// socket (forked children) can be missing. [`free`](crate::free) uses it to refuse
    /// quickly, and calls [`find_listeners`](Self::find_listeners) before it stops anything.
    /// Defaults to `find_listeners`.
    ///
    /// ```
    /// # #[cfg(target_os = "linux")] {
    /// use oauth_preflight::{HolderLookup, SockDiagLookup};
    ///
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let first = SockDiagLookup::new().find_first_holders(listener.local_addr()?.port())?;
    /// assert_eq!(first[0].process.as_ref().map(|p| p.pid), Some(std::process::id()));
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn find_first_holders(&self, port: u16) -> Result<Vec<PortHolder>, Error> {
        self.find_listeners(port)
    }
}

/// The native lookups for this platform, best first (empty where there is none).
///
/// ```
/// # #[cfg(target_os = "linux")] {
/// use oauth_preflight::LookupMethod;
/// let methods: Vec<_> = oauth_preflight::native_lookups().iter().map(|l| l.method()).collect();
/// assert_eq!(methods, [LookupMethod::SockDiag, LookupMethod::Procfs]);
/// # }
/// ```
pub fn native_lookups() -> Vec<Arc<dyn HolderLookup>> {
    #[cfg(target_os = "linux")]
    return vec![
        Arc::new(crate::SockDiagLookup::new()),
        Arc::new(crate::ProcfsLookup::new()),
    ];
    #[cfg(target_os = "macos")]
    return vec![Arc::new(crate::sys::ListenersLookup)];
    #[cfg(target_os = "windows")]
    return vec![Arc::new(crate::TcpTableLookup::new())];
    #[allow(unreachable_code)]
    Vec::new()
}

/// The lookups [`inspect`] tries, in order: the native ones, then `lsof` (Unix only).
///
/// ```
/// # #[cfg(unix)] {
/// let lookups = oauth_preflight::default_lookups();
/// assert!(lookups.last().unwrap().method().is_fallback());
/// # }
/// ```
pub fn default_lookups() -> Vec<Arc<dyn HolderLookup>> {
    #[cfg_attr(not(unix), allow(unused_mut))]
    let mut lookups = native_lookups();
    #[cfg(unix)]
    lookups.push(Arc::new(crate::LsofLookup::new()) as Arc<dyn HolderLookup>);
    lookups
}

/// Result of trying to bind the address ourselves.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "result", rename_all = "snake_case"))]
#[non_exhaustive]
pub enum BindProbe {
    /// The bind succeeded (and was released at once).
    Bindable,
    /// `EADDRINUSE`: someone holds it.
    InUse,
    /// Any other error: permission denied, address not available, ... — neither held nor free.
    Failed {
        /// `std::io::ErrorKind` name, e.g. `PermissionDenied`.
        kind: String,
        /// The operating system's message.
        message: String,
    },
}

impl BindProbe {
    /// Binds `addr` once and reports what happened.
    ///
    /// ```
    /// use oauth_preflight::BindProbe;
    /// let held = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// assert_eq!(BindProbe::run(held.local_addr()?), BindProbe::InUse);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn run(addr: SocketAddr) -> Self {
        match TcpListener::bind(addr) {
            Ok(_) => Self::Bindable,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => Self::InUse,
            Err(e) => Self::Failed {
                kind: format!("{:?}", e.kind()),
                message: e.to_string(),
            },
        }
    }
}

/// What [`inspect`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Inspection {
    /// The address that was asked about.
    pub addr: SocketAddr,
    /// Which lookup answered.
    pub method: LookupMethod,
    /// What binding the address ourselves did.
    pub bind: BindProbe,
    /// Holders of LISTEN sockets that block or intercept `addr` (see [`blocks`]).
    pub holders: Vec<PortHolder>,
}

impl Inspection {
    /// True when nobody holds the port and we could bind it.
    pub fn is_free(&self) -> bool {
        self.holders.is_empty() && self.bind == BindProbe::Bindable
    }

    /// Distinct processes among the holders (a process holding two sockets appears once).
    pub fn processes(&self) -> Vec<&ProcessInfo> {
        let mut seen: Vec<&ProcessInfo> = Vec::new();
        for p in self.holders.iter().filter_map(|h| h.process.as_ref()) {
            if !seen.iter().any(|s| s.pid == p.pid) {
                seen.push(p);
            }
        }
        seen
    }
}

/// True when a socket listening on `listening` keeps `wanted` (same port) from working:
/// same address, either side a wildcard (`[::]` blocks an IPv4 bind on dual-stack systems),
/// or both are `localhost` (`127.0.0.1` and `[::1]`: the browser's callback to
/// `localhost:PORT` may reach either). IPv4-mapped IPv6 addresses count as IPv4.
///
/// ```
/// use oauth_preflight::blocks;
/// let ip = |s: &str| s.parse().unwrap();
/// assert!(blocks(ip("::"), ip("127.0.0.1")));
/// assert!(blocks(ip("::1"), ip("127.0.0.1")));
/// assert!(!blocks(ip("192.168.1.5"), ip("127.0.0.1")));
/// ```
pub fn blocks(listening: IpAddr, wanted: IpAddr) -> bool {
    let (l, w) = (listening.to_canonical(), wanted.to_canonical());
    let localhost =
        |ip: IpAddr| ip == IpAddr::V4(Ipv4Addr::LOCALHOST) || ip == IpAddr::V6(Ipv6Addr::LOCALHOST);
    l == w || l.is_unspecified() || w.is_unspecified() || (localhost(l) && localhost(w))
}

/// Is `addr` free, and if not, who holds it? Uses the native lookup, then `lsof`.
///
/// Blocking; from async code call it in `spawn_blocking`.
///
/// ```
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let addr = listener.local_addr()?;
/// let found = oauth_preflight::inspect(addr)?;
/// assert!(!found.is_free());
/// assert_eq!(found.processes()[0].pid, std::process::id());
/// drop(listener);
/// assert!(oauth_preflight::inspect(addr)?.is_free());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`Error::PortZero`] for port 0, or [`Error::NoLookup`] when every lookup failed.
pub fn inspect(addr: SocketAddr) -> Result<Inspection, Error> {
    inspect_with(addr, &default_lookups())
}

/// [`inspect`] with an explicit list of lookups, tried in order until one answers.
///
/// ```
/// # #[cfg(unix)] {
/// use std::sync::Arc;
/// use oauth_preflight::{inspect_with, LookupMethod, LsofLookup};
///
/// // Force the lsof fallback (e.g. to compare with the native answer).
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// if let Ok(found) = inspect_with(listener.local_addr()?, &[Arc::new(LsofLookup::new())]) {
///     assert_eq!(found.method, LookupMethod::Lsof);
/// }
/// # }
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
/// As [`inspect`].
pub fn inspect_with(
    addr: SocketAddr,
    lookups: &[Arc<dyn HolderLookup>],
) -> Result<Inspection, Error> {
    inspect_using(addr, lookups, Holders::All)
}

/// How many holders per socket an inspection needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holders {
    /// Every process holding each socket ([`HolderLookup::find_listeners`]).
    All,
    /// At least one per socket ([`HolderLookup::find_first_holders`]).
    First,
}

pub(crate) fn inspect_using(
    addr: SocketAddr,
    lookups: &[Arc<dyn HolderLookup>],
    wanted: Holders,
) -> Result<Inspection, Error> {
    if addr.port() == 0 {
        return Err(Error::PortZero);
    }
    let bind = BindProbe::run(addr);
    let mut failures = Vec::new();
    for lookup in lookups {
        let answer = match wanted {
            Holders::All => lookup.find_listeners(addr.port()),
            Holders::First => lookup.find_first_holders(addr.port()),
        };
        match answer {
            Ok(all) => {
                let holders = all
                    .into_iter()
                    .filter(|h| blocks(h.socket.ip(), addr.ip()))
                    .collect();
                return Ok(Inspection {
                    addr,
                    method: lookup.method(),
                    bind,
                    holders,
                });
            }
            Err(e) => failures.push(format!("{}: {e}", lookup.method())),
        }
    }
    Err(Error::NoLookup {
        port: addr.port(),
        failures: failures.join("; "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn both_loopback_families_block() {
        assert!(blocks(ip("127.0.0.1"), ip("127.0.0.1")));
        assert!(blocks(ip("::1"), ip("127.0.0.1")));
        assert!(blocks(ip("::"), ip("127.0.0.1")));
        assert!(blocks(ip("0.0.0.0"), ip("127.0.0.1")));
        assert!(blocks(ip("::ffff:127.0.0.1"), ip("127.0.0.1")));
        assert!(blocks(ip("127.0.0.1"), ip("::1")));
        assert!(!blocks(ip("10.0.0.1"), ip("127.0.0.1")));
        assert!(!blocks(ip("127.0.0.2"), ip("127.0.0.1")));
    }

    #[test]
    fn port_zero_is_rejected() {
        let err = inspect_with("127.0.0.1:0".parse().unwrap(), &[]).unwrap_err();
        assert!(matches!(err, Error::PortZero));
    }

    #[test]
    fn no_lookups_is_an_error_naming_the_port() {
        let err = inspect_with("127.0.0.1:1".parse().unwrap(), &[]).unwrap_err();
        assert!(err.to_string().contains("port 1"), "{err}");
    }

    proptest! {
        #[test]
        fn wildcards_block_everything(a: [u8; 4], b: [u8; 16]) {
            prop_assert!(blocks(ip("::"), IpAddr::from(a)));
            prop_assert!(blocks(ip("0.0.0.0"), IpAddr::from(b)));
            prop_assert!(blocks(IpAddr::from(a), IpAddr::from(a)));
        }
    }
}
