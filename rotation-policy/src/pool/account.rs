//! One account's state and the small rules that change it.

use std::collections::VecDeque;

use super::index::{Place, Rules};
use crate::status::{CooldownReason, DisabledReason, OutcomeCounts};
use crate::usage::UsageWindow;
use crate::{AccountId, Outcome, Timestamp, UsageState};

/// An account's state for one model family, and where it sits in that family's index.
#[derive(Clone, Debug)]
pub(super) struct PerFamily {
    /// Rate-limit cooldown end (ms).
    pub(super) cooldown_until: u64,
    /// When that cooldown started (ms): the 429, or when this pool first saw a cooldown
    /// whose start was not known.
    pub(super) cooldown_since: u64,
    /// The latest end (ms) of a cooldown without a known start that this pool adopted for
    /// the family (merged from an older writer's document, or restored). One ending no later
    /// is not adopted again, so reading the same document again never restarts it.
    pub(super) unstamped_seen: u64,
    /// Consecutive rate limits.
    pub(super) streak: u32,
    pub(super) place: Place,
    /// When the account's key in this family's ready set changes by itself (its entry in
    /// the family's `rekey` index).
    pub(super) rekey_at: Option<u64>,
}

impl PerFamily {
    pub(super) const NEW: PerFamily = PerFamily {
        cooldown_until: 0,
        cooldown_since: 0,
        unstamped_seen: 0,
        streak: 0,
        place: Place::Absent,
        rekey_at: None,
    };

    /// Takes the cooldown from `since` to `until` if it orders after the one held (later
    /// end, then later start: the order of [`FamilyState`](crate::FamilyState)s with a
    /// start) and raises the streak to `streak`; returns whether anything changed.
    pub(super) fn take(&mut self, until: u64, since: u64, streak: u32) -> bool {
        let mut changed = false;
        if (until, since) > (self.cooldown_until, self.cooldown_since) {
            self.cooldown_until = until;
            self.cooldown_since = since;
            changed = true;
        }
        if streak > self.streak {
            self.streak = streak;
            changed = true;
        }
        changed
    }
}

/// One account in the pool.
///
/// The first group of fields is the account's shared state: what
/// [`AccountState`](crate::AccountState) exports and merges, with the times that order it
/// against other writers. The rest is this process's pacing and bookkeeping.
#[derive(Clone, Debug)]
pub(super) struct Account {
    pub(super) id: AccountId,
    pub(super) disabled: Option<DisabledReason>,
    /// When `disabled` was set (ms); meaningful while it is `Some`.
    pub(super) disabled_since: u64,
    /// Time (ms) of the last explicit enable.
    pub(super) enabled_since: Option<u64>,
    /// Account-wide cooldown end (ms), its reason, and when it was set.
    pub(super) cooldown_until: u64,
    pub(super) cooldown_reason: Option<CooldownReason>,
    pub(super) cooldown_since: u64,
    /// Time (ms) of the last token refresh after a 401.
    pub(super) refreshed_at: Option<u64>,
    pub(super) health: u8,
    pub(super) needs_refresh: bool,
    pub(super) unauthorized_streak: u32,
    pub(super) burst_streak: u32,
    /// When the observation (health, needs_refresh, streaks) last changed (ms).
    pub(super) health_at: u64,
    /// Shared state changed since the last `take_changes` (and the slot is in the pool's
    /// list of changed slots).
    pub(super) changed: bool,

    /// Insertion sequence number (unique, never reused).
    pub(super) order: u64,
    /// Generation of the slot when this account was added.
    pub(super) generation: u32,
    /// Times (ms) of the latest failures, at most `failure_burst` of them.
    pub(super) failures: VecDeque<u64>,
    /// Sequence number of the last hand-out (0 = never).
    pub(super) last_used: u64,
    /// Stride-scheduling pass (health-weighted strategy only).
    pub(super) pass: u64,
    /// Token bucket as GCRA: the time (ms) at which the bucket is full again.
    pub(super) bucket_full_at: u64,
    pub(super) in_flight: u32,
    pub(super) attempts: u64,
    pub(super) outcomes: OutcomeCounts,
    pub(super) families: Vec<PerFamily>,
    /// The latest usage report per limit (indexed like the pool's limits; shorter when
    /// later limits have no report). Shared state.
    pub(super) usage: Vec<Option<UsageState>>,
    /// What this process learned of how much one request uses, per limit (same indexes).
    pub(super) steps: Vec<Steps>,
}

/// The most one request is taken to use of a window (percentage points): a larger rise
/// between two reports comes from traffic of others on the same account (the Codex CLI
/// itself, another proxy), not from one request.
pub(super) const MAX_STEP: f64 = 10.0;

/// How much one request uses of a limit's windows, learned from the reports this process
/// saw: the largest rise of a window's use between two reports of the same window (same
/// reset), at most [`MAX_STEP`]. Per process: it paces this process's requests.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Steps {
    /// The last use seen of the primary and secondary window, with that window's reset.
    seen: [Option<(f64, Option<Timestamp>)>; 2],
    /// The largest rise seen, primary and secondary.
    pub(super) step: [f64; 2],
}

impl Steps {
    /// Learns from a report of window `which` (0: primary, 1: secondary).
    pub(super) fn observe(&mut self, which: usize, window: &UsageWindow) {
        let used = window.used_percent.get();
        if let Some((before, resets)) = self.seen[which]
            && resets == window.resets_at
            && used > before
        {
            self.step[which] = self.step[which].max((used - before).min(MAX_STEP));
        }
        self.seen[which] = Some((used, window.resets_at));
    }
}

/// The part of an account's shared state one health observation consists of.
pub(super) type Observation = (u8, bool, u32, u32);

impl Account {
    /// The latest usage report of `limit`, if any.
    pub(super) fn usage(&self, limit: usize) -> Option<&UsageState> {
        self.usage.get(limit).and_then(Option::as_ref)
    }

    /// What this process learned of one request's use of `limit`'s windows.
    pub(super) fn steps(&self, limit: usize) -> Steps {
        self.steps.get(limit).copied().unwrap_or_default()
    }

    /// The learning slot of `limit`, grown as needed.
    pub(super) fn steps_mut(&mut self, limit: usize) -> &mut Steps {
        if self.steps.len() <= limit {
            self.steps.resize(limit + 1, Steps::default());
        }
        &mut self.steps[limit]
    }

    /// The report slot of `limit`, grown as needed.
    pub(super) fn usage_mut(&mut self, limit: usize) -> &mut Option<UsageState> {
        if self.usage.len() <= limit {
            self.usage.resize(limit + 1, None);
        }
        &mut self.usage[limit]
    }

    pub(super) fn observation(&self) -> Observation {
        (
            self.health,
            self.needs_refresh,
            self.unauthorized_streak,
            self.burst_streak,
        )
    }

    /// Stamps the observation with `clock` if it differs from `before`; returns whether it
    /// did. Never stamps earlier than the previous observation (which may have been merged
    /// from a process whose clock runs ahead), so a local change is never older than what
    /// it changed.
    pub(super) fn observed(&mut self, before: Observation, clock: u64) -> bool {
        if self.observation() == before {
            return false;
        }
        self.health_at = self.health_at.max(clock);
        true
    }

    /// Disables the account for `reason`: a gone login replaces any other reason, any
    /// other reason keeps an existing one. Returns whether anything changed.
    pub(super) fn disable_for(&mut self, reason: DisabledReason, clock: u64) -> bool {
        let after_enable = clock.max(self.enabled_since.unwrap_or(0));
        match self.disabled {
            None => {
                self.disabled = Some(reason);
                self.disabled_since = after_enable;
                true
            }
            Some(current) if reason.is_gone() && current != reason => {
                self.disabled = Some(reason);
                // Strictly later, so this replacement also wins a merge against the reason
                // it replaces.
                self.disabled_since = after_enable.max(self.disabled_since.saturating_add(1));
                true
            }
            Some(_) => false,
        }
    }

    /// Enables the account and resets its 401 streak; the enable is stamped after the
    /// disable it clears. Returns whether anything changed.
    pub(super) fn enable(&mut self, clock: u64) -> bool {
        let before = self.observation();
        let mut since = clock.max(self.enabled_since.unwrap_or(0));
        if self.disabled.is_some() {
            since = since.max(self.disabled_since.saturating_add(1));
        }
        let changed = self.disabled.is_some() || self.enabled_since != Some(since);
        self.enabled_since = Some(since);
        self.disabled = None;
        self.unauthorized_streak = 0;
        self.observed(before, clock) | changed
    }
}

/// Extends the account-wide cooldown to `until` (never shortens it); returns whether it did.
/// A new cooldown is stamped after the last refresh, so that refresh cannot end it.
pub(super) fn cool(account: &mut Account, until: u64, reason: CooldownReason, clock: u64) -> bool {
    if until <= account.cooldown_until {
        return false;
    }
    account.cooldown_until = until;
    account.cooldown_reason = Some(reason);
    account.cooldown_since = clock.max(account.refreshed_at.map_or(0, |r| r.saturating_add(1)));
    true
}

/// What merging one family cooldown into an account did.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Adoption {
    /// The account's state for the family changed.
    pub(super) changed: bool,
    /// The cooldown was cut to `cap` from its start.
    pub(super) capped: bool,
}

/// Merges a family cooldown learned elsewhere — ending at `until` (ms), started at `since`
/// (`None`: unknown), behind `streak` rate limits — into `state`, cut to at most `cap` from
/// its start. Bounding it from its own start, never from `clock`, is what keeps a long
/// cooldown from being restarted by every merge of the same document.
///
/// An unknown start is taken as `clock`: the first time this pool sees that end. The same
/// end (or an earlier one) seen again without a start is ignored, so it is never restarted
/// either; the pool exports the cooldown with the start it gave it, and that record
/// outranks the start-less one in every document it is merged into.
pub(super) fn adopt_family(
    state: &mut PerFamily,
    until: u64,
    since: Option<u64>,
    streak: u32,
    clock: u64,
    cap: u64,
) -> Adoption {
    if until <= clock {
        return Adoption::default(); // over (a streak is shared only while its cooldown runs)
    }
    let since = match since {
        Some(since) => since,
        None if until <= state.unstamped_seen => return Adoption::default(),
        None => {
            state.unstamped_seen = until;
            clock
        }
    };
    let bound = since.saturating_add(cap);
    let capped = until > bound;
    let until = until.min(bound);
    Adoption {
        changed: until > clock && state.take(until, since, streak),
        capped,
    }
}

/// Records `account` as changed for `take_changes`: O(1), once per account between takes.
pub(super) fn mark_changed(changed: &mut Vec<u32>, account: &mut Account, slot: u32) {
    if !account.changed {
        account.changed = true;
        changed.push(slot);
    }
}

/// Gives one token back: the bucket's full-at time moves one refill earlier, but never
/// before `clock` (a full bucket stays full).
pub(super) fn refund_token(rules: &Rules, account: &mut Account, clock: u64) {
    if let Some((_, refill)) = rules.bucket {
        account.bucket_full_at = account.bucket_full_at.saturating_sub(refill).max(clock);
    }
}

pub(super) fn count(counts: &mut OutcomeCounts, outcome: Outcome) {
    let field = match outcome {
        Outcome::Success => &mut counts.success,
        Outcome::RateLimited { .. } => &mut counts.rate_limited,
        Outcome::Unauthorized => &mut counts.unauthorized,
        Outcome::Forbidden => &mut counts.forbidden,
        Outcome::ServerError => &mut counts.server_error,
        Outcome::NetworkError => &mut counts.network_error,
        Outcome::Timeout => &mut counts.timeout,
    };
    *field += 1;
}
