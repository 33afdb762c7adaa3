//! What [`free`](crate::free) did, as a value and as the sentence a user sees.

use std::fmt;
use std::net::SocketAddr;

use crate::escape::Escaped;
use crate::{LookupMethod, ProcessInfo};

/// One process [`free`](crate::free) stopped, as listed in [`Outcome::Freed`].
///
/// ```
/// use oauth_preflight::Outcome;
/// fn forced(outcome: &Outcome) -> usize {
///     match outcome {
///         Outcome::Freed { stopped, .. } => stopped.iter().filter(|s| s.forced).count(),
///         _ => 0,
///     }
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Stopped {
    /// Its pid.
    pub pid: u32,
    /// Its short name.
    pub name: String,
    /// True when it ignored SIGTERM for the grace period and was SIGKILLed (Windows: when
    /// it was still running after the grace period and `TerminateProcess` was called again).
    pub forced: bool,
    /// True when signals went through a pidfd (or a process handle), false when the start
    /// time was re-verified before each `kill`.
    pub pinned: bool,
}

/// The result of [`free`](crate::free). `Display` is the message to show the user.
///
/// ```
/// use oauth_preflight::{LookupMethod, Outcome};
/// let free = Outcome::Free { addr: "127.0.0.1:1455".parse()?, method: LookupMethod::Procfs };
/// assert!(free.is_ready());
/// assert_eq!(free.to_string(), "Port 127.0.0.1:1455 is free (checked via /proc (native)).");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "outcome", rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Outcome {
    /// Nobody held the port; nothing was done.
    Free {
        /// The address.
        addr: SocketAddr,
        /// Which lookup answered.
        method: LookupMethod,
    },
    /// Matching holders were stopped and the port can be bound again.
    Freed {
        /// The address.
        addr: SocketAddr,
        /// What was stopped.
        stopped: Vec<Stopped>,
        /// What the matcher accepts, e.g. "a Codex login helper".
        helper: String,
        /// Which lookup answered.
        method: LookupMethod,
    },
    /// Dry run: these holders match and would be stopped. Nothing was killed.
    WouldFree {
        /// The address.
        addr: SocketAddr,
        /// The holders that would be stopped.
        holders: Vec<ProcessInfo>,
        /// What the matcher accepts.
        helper: String,
        /// Which lookup answered.
        method: LookupMethod,
    },
    /// Held by a process that is not a login helper. Nothing was killed.
    HeldByForeign {
        /// The address.
        addr: SocketAddr,
        /// The holder.
        holder: ProcessInfo,
        /// What the matcher accepts.
        helper: String,
        /// Which lookup answered.
        method: LookupMethod,
    },
    /// Held by this process itself or one of its ancestors (the program that started it,
    /// e.g. the shell or CLI running the preflight). Never stopped, whatever the matcher
    /// says: that would end the caller. Nothing was killed.
    HeldByCaller {
        /// The address.
        addr: SocketAddr,
        /// The holder.
        holder: ProcessInfo,
        /// 0: this process; 1: its parent; 2: its grandparent; …
        generation: usize,
        /// Which lookup answered.
        method: LookupMethod,
    },
    /// Held by a login helper that belongs to another user. Nothing was killed.
    HeldByOtherUser {
        /// The address.
        addr: SocketAddr,
        /// The holder.
        holder: ProcessInfo,
        /// Our own uid, when the platform has uids.
        our_uid: Option<u32>,
        /// Which lookup answered.
        method: LookupMethod,
    },
    /// Held through a socket whose process we cannot see (another user's, without root).
    HeldByUnknown {
        /// The address.
        addr: SocketAddr,
        /// The listening socket.
        socket: SocketAddr,
        /// The socket owner's uid per the socket table, if known.
        socket_uid: Option<u32>,
        /// Which lookup answered.
        method: LookupMethod,
    },
    /// Binding failed for another reason than "address in use"; the port is neither
    /// known to be held nor free.
    BindFailed {
        /// The address.
        addr: SocketAddr,
        /// `std::io::ErrorKind` name.
        kind: String,
        /// The operating system's message.
        message: String,
    },
    /// We stopped the holders, but the port could not be bound within the wait.
    StillHeld {
        /// The address.
        addr: SocketAddr,
        /// What was stopped.
        stopped: Vec<Stopped>,
        /// How long we waited for the port, in milliseconds.
        waited_ms: u64,
    },
    /// The operating system refused a signal to a verified holder.
    SignalFailed {
        /// The address.
        addr: SocketAddr,
        /// The holder that could not be signalled.
        holder: ProcessInfo,
        /// The operating system's message.
        message: String,
        /// Holders that were stopped before the failure.
        stopped: Vec<Stopped>,
    },
    /// We could not tell who holds the port (every lookup failed, or "address in use"
    /// without a visible listener). Nothing was killed.
    Unknown {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

impl Outcome {
    /// True when the port can be bound now (`Free` or `Freed`).
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Free { .. } | Self::Freed { .. })
    }

    /// The address this outcome is about.
    pub fn addr(&self) -> SocketAddr {
        match self {
            Self::Free { addr, .. }
            | Self::Freed { addr, .. }
            | Self::WouldFree { addr, .. }
            | Self::HeldByForeign { addr, .. }
            | Self::HeldByCaller { addr, .. }
            | Self::HeldByOtherUser { addr, .. }
            | Self::HeldByUnknown { addr, .. }
            | Self::BindFailed { addr, .. }
            | Self::StillHeld { addr, .. }
            | Self::SignalFailed { addr, .. }
            | Self::Unknown { addr, .. } => *addr,
        }
    }
}

/// The commands a user can run to see who holds `port`.
///
/// ```
/// assert!(oauth_preflight::investigate_command(1455).contains("tcp:1455")
///     || oauth_preflight::investigate_command(1455).contains(":1455"));
/// ```
pub fn investigate_command(port: u16) -> String {
    if cfg!(windows) {
        format!("`netstat -ano | findstr :{port}`")
    } else if cfg!(target_os = "linux") {
        format!("`lsof -i tcp:{port}` or `ss -ltnp 'sport = :{port}'`")
    } else {
        format!("`lsof -i tcp:{port}`")
    }
}

/// How a process was stopped, in words true for this platform: Unix sends SIGTERM, then
/// SIGKILL after the grace period; Windows has no polite stop request for another console
/// program, so both levels are `TerminateProcess`.
fn how_stopped(forced: bool) -> &'static str {
    match (cfg!(windows), forced) {
        (false, false) => "SIGTERM",
        (false, true) => "SIGKILL after it ignored SIGTERM",
        (true, false) => "TerminateProcess",
        (true, true) => "a second TerminateProcess after the grace period",
    }
}

fn list_stopped(stopped: &[Stopped]) -> String {
    stopped
        .iter()
        .map(|s| {
            format!(
                "pid {} ({}) with {}",
                s.pid,
                Escaped(&s.name),
                how_stopped(s.forced)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Outcome {
    /// The sentence for the user. Text from processes, the OS and the matcher's label is
    /// escaped (control and bidi characters), so it cannot forge lines or terminal sequences.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let port = self.addr().port();
        match self {
            Self::Free { addr, method } => write!(f, "Port {addr} is free (checked via {method})."),
            Self::Freed {
                addr,
                stopped,
                helper,
                method,
            } => {
                let noun = helper
                    .strip_prefix("a ")
                    .or_else(|| helper.strip_prefix("an "))
                    .unwrap_or(helper);
                let noun = Escaped(noun);
                if stopped.is_empty() {
                    write!(
                        f,
                        "Port {addr} is free: the stale {noun} exited on its own (checked via {method})."
                    )
                } else {
                    let s = list_stopped(stopped);
                    write!(
                        f,
                        "Freed port {addr} by stopping the stale {noun}: {s} (found via {method})."
                    )
                }
            }
            Self::WouldFree {
                addr,
                holders,
                helper,
                method,
            } => {
                let who: Vec<String> = holders.iter().map(ToString::to_string).collect();
                let how = if cfg!(windows) {
                    "with TerminateProcess"
                } else {
                    "SIGTERM, then SIGKILL if it ignores that"
                };
                write!(
                    f,
                    "Dry run: port {addr} is held by {}, {} owned by you (found via {method}); \
                     it would be stopped ({how}). Nothing was killed.",
                    who.join(", "),
                    Escaped(helper),
                )
            }
            Self::HeldByForeign {
                addr,
                holder,
                helper,
                method,
            } => write!(
                f,
                "Port {addr} is held by {holder}, which does NOT look like {} (found via {method}); \
                 nothing was killed. Stop it yourself or pick another port. Investigate with {}.",
                Escaped(helper),
                investigate_command(port)
            ),
            Self::HeldByCaller {
                addr,
                holder,
                generation,
                method,
            } => {
                let who = match generation {
                    0 => "this process itself".to_owned(),
                    1 => "the parent of this process (the program that started it)".to_owned(),
                    n => format!("an ancestor of this process ({n} generations up)"),
                };
                write!(
                    f,
                    "Port {addr} is held by {holder}, which is {who} (found via {method}); \
                     nothing was killed, as stopping it would stop this preflight too. Release the \
                     port from that program or pick another port. Investigate with {}.",
                    investigate_command(port)
                )
            }
            Self::HeldByOtherUser {
                addr,
                holder,
                method,
                ..
            } => {
                let owner = holder
                    .uid
                    .map_or_else(|| "an unknown user".to_owned(), |u| format!("uid {u}"));
                write!(
                    f,
                    "Port {addr} is held by {holder}, owned by {owner}, not by you (found via {method}); \
                     nothing was killed. Ask that user or an administrator to stop it. Investigate with {}.",
                    investigate_command(port)
                )
            }
            Self::HeldByUnknown {
                addr,
                socket,
                socket_uid,
                method,
            } => {
                // Windows sockets have no owning user, only an owning process.
                let owner = match socket_uid {
                    Some(u) => format!(", owned by uid {u}"),
                    None if cfg!(windows) => String::new(),
                    None => ", owned by an unknown user".to_owned(),
                };
                let hint = if cfg!(windows) {
                    " (its last column is the owning pid)"
                } else {
                    " (as root to see other users' processes)"
                };
                write!(
                    f,
                    "Port {addr} is held by a process we cannot inspect (socket {socket}{owner}; \
                     found via {method}); nothing was killed. Investigate with {}{hint}.",
                    investigate_command(port)
                )
            }
            Self::BindFailed { addr, message, .. } => write!(
                f,
                "Cannot bind {addr}: {}. This is not a port conflict, so nothing was killed; \
                 check the address and your permissions.",
                Escaped(message)
            ),
            Self::StillHeld {
                addr,
                stopped,
                waited_ms,
            } => {
                let s = if stopped.is_empty() {
                    "nothing".to_owned()
                } else {
                    list_stopped(stopped)
                };
                write!(
                    f,
                    "Stopped {s}, but port {addr} could still not be bound after {waited_ms} ms; \
                     another process may have taken it. Investigate with {}.",
                    investigate_command(port)
                )
            }
            Self::SignalFailed {
                addr,
                holder,
                message,
                stopped,
            } => {
                let s = if stopped.is_empty() {
                    String::new()
                } else {
                    format!(" (already stopped: {})", list_stopped(stopped))
                };
                let verb = if cfg!(windows) { "terminate" } else { "signal" };
                write!(
                    f,
                    "Could not {verb} {holder}, which holds port {addr}: {}{s}. \
                     Investigate with {}.",
                    Escaped(message),
                    investigate_command(port)
                )
            }
            Self::Unknown { addr, reason } => write!(
                f,
                "Could not tell whether port {addr} can be freed: {}. Nothing was killed. \
                 Investigate with {}.",
                Escaped(reason),
                investigate_command(port)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which wording family this platform's messages use (the snapshot suffix).
    fn platform_words() -> &'static str {
        if cfg!(windows) { "windows" } else { "unix" }
    }

    #[test]
    fn investigate_command_names_this_platforms_tools() {
        let expected = if cfg!(windows) {
            "`netstat -ano | findstr :1455`"
        } else if cfg!(target_os = "linux") {
            "`lsof -i tcp:1455` or `ss -ltnp 'sport = :1455'`"
        } else {
            "`lsof -i tcp:1455`"
        };
        assert_eq!(investigate_command(1455), expected);
    }

    #[test]
    fn freed_and_still_held_messages_list_what_was_stopped() {
        let addr: SocketAddr = "127.0.0.1:1455".parse().unwrap();
        let stopped = vec![
            Stopped {
                pid: 10,
                name: "codex".into(),
                forced: false,
                pinned: true,
            },
            Stopped {
                pid: 11,
                name: "codex".into(),
                forced: true,
                pinned: true,
            },
        ];
        let freed = Outcome::Freed {
            addr,
            stopped: stopped.clone(),
            helper: "a Codex login helper".into(),
            method: LookupMethod::Procfs,
        };
        let still = Outcome::StillHeld {
            addr,
            stopped,
            waited_ms: 1500,
        };
        // The stop words differ by platform (signals on Unix, TerminateProcess on Windows);
        // the investigate hint is pinned by `investigate_command`'s own test.
        let text = format!("{freed}\n{still}").replace(&investigate_command(1455), "<investigate>");
        insta::with_settings!({ snapshot_suffix => platform_words() }, {
            insta::assert_snapshot!(text);
        });
    }
}
