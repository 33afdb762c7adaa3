//! Freeing the port: stop matching holders owned by us, refuse everything else.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::inspect::{Holders, inspect_using};
use crate::sys::{self, Signalled, Stop, StopHandle, Target};
use crate::{
    BindProbe, HolderLookup, HolderMatcher, Inspection, Outcome, ProcessInfo, ProgramMatcher,
    Stopped, default_lookups,
};

/// How [`free`] decides and how long it waits.
///
/// ```
/// use std::time::Duration;
/// use oauth_preflight::{FreePolicy, ProgramMatcher};
///
/// let policy = FreePolicy::default()
///     .with_grace(Duration::from_millis(500))
///     .with_matcher(ProgramMatcher::new("My CLI", ["mycli"]))
///     .dry_run(true);
/// assert_eq!(policy.grace(), Duration::from_millis(500));
/// ```
#[derive(Clone)]
pub struct FreePolicy {
    grace: Duration,
    bind_wait: Duration,
    dry_run: bool,
    matcher: Arc<dyn HolderMatcher>,
    lookups: Vec<Arc<dyn HolderLookup>>,
}

impl Default for FreePolicy {
    /// Codex matcher, 1 s grace between SIGTERM and SIGKILL, 1.5 s wait for the port,
    /// native lookup then `lsof` (Unix).
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(1),
            bind_wait: Duration::from_millis(1500),
            dry_run: false,
            matcher: Arc::new(ProgramMatcher::codex()),
            lookups: default_lookups(),
        }
    }
}

impl fmt::Debug for FreePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FreePolicy")
            .field("grace", &self.grace)
            .field("bind_wait", &self.bind_wait)
            .field("dry_run", &self.dry_run)
            .field("matcher", &self.matcher.description())
            .field(
                "lookups",
                &self.lookups.iter().map(|l| l.method()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl FreePolicy {
    /// Time between SIGTERM and SIGKILL (Windows: how long a terminated process may take to
    /// exit before `TerminateProcess` is called again).
    #[must_use]
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// How long to wait, after the holders exit, for the port to become bindable.
    #[must_use]
    pub fn with_bind_wait(mut self, wait: Duration) -> Self {
        self.bind_wait = wait;
        self
    }

    /// Report what would be stopped without signalling anything.
    #[must_use]
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Replace the matcher (default: [`ProgramMatcher::codex`]).
    #[must_use]
    pub fn with_matcher(mut self, matcher: impl HolderMatcher + 'static) -> Self {
        self.matcher = Arc::new(matcher);
        self
    }

    /// Replace the lookups, tried in order (default: [`default_lookups`]).
    #[must_use]
    pub fn with_lookups(mut self, lookups: Vec<Arc<dyn HolderLookup>>) -> Self {
        self.lookups = lookups;
        self
    }

    /// The grace period.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// The bind wait.
    pub fn bind_wait(&self) -> Duration {
        self.bind_wait
    }

    /// The matcher.
    pub fn matcher(&self) -> &dyn HolderMatcher {
        &*self.matcher
    }
}

/// Frees `addr` when — and only when — every holder is a login helper (per the policy's
/// matcher) owned by the current user; otherwise refuses and kills nothing.
///
/// Holders get SIGTERM, then SIGKILL after the grace period; then `free` waits until the
/// port can actually be bound. On Linux each holder is pinned with a pidfd *before* its
/// identity (start time, executable, argv) is re-checked, so a reused pid is never
/// signalled; without pidfds the start time is re-checked right before each `kill`. On
/// Windows a process handle pins the holder, its creation time and executable are re-read
/// through it, and `TerminateProcess` goes through it (Windows has no polite stop request
/// for another console program, so there is no SIGTERM step).
///
/// Blocking (up to grace + 2 × bind wait); from async code call it in `spawn_blocking`.
///
/// ```
/// use oauth_preflight::{free, FreePolicy, Outcome};
///
/// // Held by this very process: reported, never stopped, whatever the matcher says.
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let outcome = free(listener.local_addr()?, &FreePolicy::default());
/// assert!(matches!(outcome, Outcome::HeldByCaller { generation: 0, .. }), "{outcome}");
/// assert!(outcome.to_string().contains("nothing was killed"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn free(addr: SocketAddr, policy: &FreePolicy) -> Outcome {
    let our_uid = sys::current_uid();
    let caller = sys::caller_lineage();
    // First the quick look (one holder per socket, likely holders first): any holder that
    // must not be stopped refuses the whole port, so a refusal needs no more. Only when that
    // holder may be stopped are all processes sharing the socket looked up, and the decision
    // is made again on the complete set before anything is signalled.
    let mut decided = None;
    for wanted in [Holders::First, Holders::All] {
        let inspection = match inspect_using(addr, &policy.lookups, wanted) {
            Ok(inspection) => inspection,
            Err(e) => {
                return Outcome::Unknown {
                    addr,
                    reason: e.to_string(),
                };
            }
        };
        match decide(&inspection, policy, our_uid, &caller) {
            Ok(targets) => decided = Some((inspection, targets)),
            Err(refusal) => return *refusal,
        }
    }
    let Some((found, targets)) = decided else {
        return Outcome::Unknown {
            addr,
            reason: "no lookup ran".to_owned(),
        };
    };
    let helper = policy.matcher.description();
    if policy.dry_run {
        return Outcome::WouldFree {
            addr,
            holders: targets,
            helper,
            method: found.method,
        };
    }
    stop_and_wait(addr, policy, &targets, helper, found)
}

/// The pure decision: which processes to stop, or the refusal. `Err` boxes the outcome to
/// keep the happy path small. `caller` is this process's pid followed by its ancestors'
/// (parent first): none of them is ever a target, whatever the matcher says.
pub(crate) fn decide(
    found: &Inspection,
    policy: &FreePolicy,
    our_uid: Option<u32>,
    caller: &[u32],
) -> Result<Vec<ProcessInfo>, Box<Outcome>> {
    let addr = found.addr;
    let method = found.method;
    if found.holders.is_empty() {
        return Err(Box::new(match &found.bind {
            BindProbe::Bindable => Outcome::Free { addr, method },
            BindProbe::InUse => Outcome::Unknown {
                addr,
                reason: format!(
                    "binding failed with \"address in use\" but {method} shows no listening socket on \
                     port {} (the holder may live in another network namespace or container)",
                    addr.port()
                ),
            },
            BindProbe::Failed { kind, message } => Outcome::BindFailed {
                addr,
                kind: kind.clone(),
                message: message.clone(),
            },
        }));
    }
    if let Some(h) = found.holders.iter().find(|h| h.process.is_none()) {
        return Err(Box::new(Outcome::HeldByUnknown {
            addr,
            socket: h.socket,
            socket_uid: h.socket_uid,
            method,
        }));
    }
    let processes: Vec<ProcessInfo> = found.processes().into_iter().cloned().collect();
    // Stopping ourselves or the program that started us (a shell, a CLI wrapping the
    // login) would end this very call; report it instead.
    if let Some((p, generation)) = processes.iter().find_map(|p| {
        caller
            .iter()
            .position(|&pid| pid == p.pid)
            .map(|generation| (p, generation))
    }) {
        return Err(Box::new(Outcome::HeldByCaller {
            addr,
            holder: p.clone(),
            generation,
            method,
        }));
    }
    let helper = policy.matcher.description();
    if let Some(p) = processes
        .iter()
        .find(|p| !policy.matcher.is_login_helper(p))
    {
        return Err(Box::new(Outcome::HeldByForeign {
            addr,
            holder: p.clone(),
            helper,
            method,
        }));
    }
    let ours = |p: &ProcessInfo| match (our_uid, p.uid) {
        (Some(me), Some(them)) => me == them,
        // Platforms without uids (Windows): the OS refuses to open others' processes.
        (None, None) => true,
        _ => false,
    };
    if let Some(p) = processes.iter().find(|p| !ours(p)) {
        return Err(Box::new(Outcome::HeldByOtherUser {
            addr,
            holder: p.clone(),
            our_uid,
            method,
        }));
    }
    // A socket another user created may also be held by that user's processes, whose
    // descriptor tables only root can read: without root, such a port is never freed on the
    // strength of the holders we happen to see.
    if let Some(me) = our_uid.filter(|&me| me != 0)
        && let Some(h) = found
            .holders
            .iter()
            .find(|h| h.socket_uid.is_some_and(|owner| owner != me))
    {
        return Err(Box::new(Outcome::HeldByUnknown {
            addr,
            socket: h.socket,
            socket_uid: h.socket_uid,
            method,
        }));
    }
    Ok(processes)
}

fn stop_and_wait(
    addr: SocketAddr,
    policy: &FreePolicy,
    holders: &[ProcessInfo],
    helper: String,
    found: Inspection,
) -> Outcome {
    let mut open = Vec::new();
    for p in holders {
        match Target::open(p) {
            Ok(Some(t)) => open.push((p, t)),
            Ok(None) => {} // already gone (or the pid was reused): nothing to stop
            Err(e) => {
                return Outcome::SignalFailed {
                    addr,
                    holder: p.clone(),
                    message: e.to_string(),
                    stopped: Vec::new(),
                };
            }
        }
    }
    let mut stopped: Vec<Stopped> = Vec::new();
    let mut pending = Vec::new();
    for (p, t) in open {
        match t.signal(Stop::Terminate) {
            Ok(Signalled::Sent) => pending.push((p, t)),
            Ok(Signalled::AlreadyGone) => {}
            Err(e) => {
                return Outcome::SignalFailed {
                    addr,
                    holder: p.clone(),
                    message: e.to_string(),
                    stopped,
                };
            }
        }
    }
    let grace_end = Instant::now() + policy.grace;
    let mut survivors = Vec::new();
    for (p, t) in pending {
        let left = grace_end.saturating_duration_since(Instant::now());
        if t.wait_exit(left) {
            stopped.push(Stopped {
                pid: p.pid,
                name: p.name.clone(),
                forced: false,
                pinned: t.used_pidfd(),
            });
        } else {
            survivors.push((p, t));
        }
    }
    for (p, t) in &survivors {
        match t.signal(Stop::Kill) {
            Ok(_) => stopped.push(Stopped {
                pid: p.pid,
                name: p.name.clone(),
                forced: true,
                pinned: t.used_pidfd(),
            }),
            Err(e) => {
                return Outcome::SignalFailed {
                    addr,
                    holder: (*p).clone(),
                    message: e.to_string(),
                    stopped,
                };
            }
        }
    }
    let kill_end = Instant::now() + policy.bind_wait;
    for (_, t) in &survivors {
        t.wait_exit(kill_end.saturating_duration_since(Instant::now()));
    }

    // The holders are gone; wait until the port can really be bound and nothing listens.
    let start = Instant::now();
    let deadline = start + policy.bind_wait;
    loop {
        // One holder is enough to know the port is still taken.
        if let Ok(again) = inspect_using(addr, &policy.lookups, Holders::First)
            && again.is_free()
        {
            return Outcome::Freed {
                addr,
                stopped,
                helper,
                method: found.method,
            };
        }
        let now = Instant::now();
        if now >= deadline {
            return Outcome::StillHeld {
                addr,
                stopped,
                waited_ms: u64::try_from(now.duration_since(start).as_millis()).unwrap_or(u64::MAX),
            };
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(20)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LookupMethod, PortHolder};

    fn found(holders: Vec<PortHolder>, bind: BindProbe) -> Inspection {
        Inspection {
            addr: "127.0.0.1:1455".parse().unwrap(),
            method: LookupMethod::Procfs,
            bind,
            holders,
        }
    }

    fn codex(pid: u32, uid: u32) -> ProcessInfo {
        ProcessInfo::new(pid, "codex")
            .with_exe("/usr/bin/codex")
            .with_argv(["codex", "login"])
            .with_uid(uid)
    }

    fn on_v4(p: ProcessInfo) -> PortHolder {
        PortHolder::new("127.0.0.1:1455".parse().unwrap(), Some(p))
    }

    #[test]
    fn decides_free_bindfailed_and_unknown_without_holders() {
        let p = FreePolicy::default();
        let d = |bind| decide(&found(vec![], bind), &p, Some(0), &[1]).unwrap_err();
        assert!(matches!(*d(BindProbe::Bindable), Outcome::Free { .. }));
        assert!(matches!(*d(BindProbe::InUse), Outcome::Unknown { .. }));
        let failed = BindProbe::Failed {
            kind: "PermissionDenied".into(),
            message: "denied".into(),
        };
        assert!(matches!(*d(failed), Outcome::BindFailed { .. }));
    }

    #[test]
    fn only_our_own_codex_holders_are_targets() {
        let p = FreePolicy::default();
        let ok = decide(
            &found(
                vec![on_v4(codex(10, 1000)), on_v4(codex(11, 1000))],
                BindProbe::InUse,
            ),
            &p,
            Some(1000),
            &[1],
        )
        .unwrap();
        assert_eq!(ok.iter().map(|p| p.pid).collect::<Vec<_>>(), [10, 11]);

        let other_user = decide(
            &found(vec![on_v4(codex(10, 1001))], BindProbe::InUse),
            &p,
            Some(1000),
            &[1],
        )
        .unwrap_err();
        assert!(matches!(*other_user, Outcome::HeldByOtherUser { .. }));

        // One foreign holder among codex holders (a forked child that is not codex) refuses all.
        let python = ProcessInfo::new(12, "python3")
            .with_exe("/usr/bin/python3")
            .with_argv(["python3"])
            .with_uid(1000);
        let mixed = decide(
            &found(
                vec![on_v4(codex(10, 1000)), on_v4(python)],
                BindProbe::InUse,
            ),
            &p,
            Some(1000),
            &[1],
        )
        .unwrap_err();
        assert!(matches!(*mixed, Outcome::HeldByForeign { ref holder, .. } if holder.pid == 12));

        // Without root, a socket another user created may have holders we cannot see.
        let mut theirs = on_v4(codex(10, 1000));
        theirs.socket_uid = Some(0);
        let hidden = decide(
            &found(vec![theirs.clone()], BindProbe::InUse),
            &p,
            Some(1000),
            &[1],
        )
        .unwrap_err();
        assert!(matches!(
            *hidden,
            Outcome::HeldByUnknown {
                socket_uid: Some(0),
                ..
            }
        ));
        // Root sees every holder; the visible codex is then ours to decide on by its uid.
        let as_root =
            decide(&found(vec![theirs], BindProbe::InUse), &p, Some(0), &[1]).unwrap_err();
        assert!(matches!(*as_root, Outcome::HeldByOtherUser { .. }));

        let unseen = PortHolder {
            socket: "[::]:1455".parse().unwrap(),
            socket_uid: Some(7),
            process: None,
        };
        let unknown = decide(
            &found(vec![on_v4(codex(10, 1000)), unseen], BindProbe::InUse),
            &p,
            Some(1000),
            &[1],
        )
        .unwrap_err();
        assert!(matches!(
            *unknown,
            Outcome::HeldByUnknown {
                socket_uid: Some(7),
                ..
            }
        ));

        // Never ourselves nor an ancestor, whatever the matcher says, and whatever else
        // holds the port too.
        let lineage = [40, 30, 20, 1];
        for (generation, &pid) in lineage.iter().enumerate() {
            let r = decide(
                &found(
                    vec![on_v4(codex(99, 1000)), on_v4(codex(pid, 1000))],
                    BindProbe::InUse,
                ),
                &p,
                Some(1000),
                &lineage,
            )
            .unwrap_err();
            assert!(
                matches!(*r, Outcome::HeldByCaller { ref holder, generation: g, .. } if holder.pid == pid && g == generation),
                "{r}"
            );
        }
        assert!(
            decide(
                &found(vec![on_v4(codex(99, 1000))], BindProbe::InUse),
                &p,
                Some(1000),
                &lineage,
            )
            .is_ok(),
            "a holder outside the lineage is still freed"
        );

        // Unknown owner uid is not "ours".
        let mut no_uid = codex(10, 0);
        no_uid.uid = None;
        let r = decide(
            &found(vec![on_v4(no_uid)], BindProbe::InUse),
            &p,
            Some(1000),
            &[1],
        )
        .unwrap_err();
        assert!(matches!(*r, Outcome::HeldByOtherUser { .. }));
    }

    proptest::proptest! {
        /// Whatever the holders, every process `decide` would stop matches the matcher, is
        /// owned by us and is not us; and a refusal never comes with targets.
        #[test]
        fn targets_are_always_our_own_matching_processes(
            holders in proptest::collection::vec(
                (1u32..6, proptest::option::of(0u32..3), proptest::sample::select(vec!["codex", "vscodex", "python3", "codex.js"]), proptest::bool::ANY),
                0..5,
            ),
        ) {
            let policy = FreePolicy::default();
            let hs: Vec<PortHolder> = holders
                .iter()
                .map(|(pid, uid, name, visible)| {
                    let mut p = ProcessInfo::new(*pid, *name).with_argv([*name]);
                    p.uid = *uid;
                    PortHolder::new("[::1]:1455".parse().unwrap(), visible.then_some(p))
                })
                .collect();
            if let Ok(targets) = decide(&found(hs.clone(), BindProbe::InUse), &policy, Some(1), &[1, 3]) {
                proptest::prop_assert!(!targets.is_empty());
                proptest::prop_assert!(hs.iter().all(|h| h.process.is_some()));
                for t in &targets {
                    proptest::prop_assert!(policy.matcher().is_login_helper(t));
                    proptest::prop_assert_eq!(t.uid, Some(1));
                    proptest::prop_assert!(t.pid != 1 && t.pid != 3, "never us nor our parent");
                }
            }
        }
    }

    #[test]
    fn the_matcher_is_replaceable() {
        let p = FreePolicy::default().with_matcher(|p: &ProcessInfo| p.name == "python3");
        let python = ProcessInfo::new(12, "python3").with_uid(1000);
        assert!(
            decide(
                &found(vec![on_v4(python)], BindProbe::InUse),
                &p,
                Some(1000),
                &[1]
            )
            .is_ok()
        );
        let r = decide(
            &found(vec![on_v4(codex(10, 1000))], BindProbe::InUse),
            &p,
            Some(1000),
            &[1],
        )
        .unwrap_err();
        assert!(matches!(*r, Outcome::HeldByForeign { .. }));
    }
}
