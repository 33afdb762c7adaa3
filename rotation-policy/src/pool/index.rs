//! The per-family availability index: where each account sits (usable now, ordered by the
//! strategy, or waiting until a known time) and the rules that decide it.

use std::collections::BTreeMap;

use super::account::Account;
use crate::PolicyConfig;
use crate::config::Strategy;
use crate::status::CooldownReason;
use crate::time::ceil_millis;
use crate::usage::Percent;

/// Ordering key of a usable account within a family; smaller is picked first. The account's
/// insertion order is always part of it, so keys are unique.
pub(super) type Key = (u64, u64, u64);

/// The least a request is taken to use of a window (percentage points) before this process
/// has seen one: an account reported at 99 % is left, one at 98 % gets one more.
pub(super) const MIN_STEP: f64 = 1.0;

/// Quota-aware rotation spends a window past the threshold in the last `1 / SQUEEZE_SHARE`
/// of its length (15 minutes of 5 hours, 8.4 hours of a week).
pub(super) const SQUEEZE_SHARE: u64 = 20;

/// Where an account sits in one family's index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Place {
    /// Disabled: in neither set.
    Absent,
    /// Usable at the pool clock, ordered by this key.
    Ready(Key),
    /// Usable from this time (ms) on.
    Waiting(u64),
}

/// One model family's index over the pool's accounts.
#[derive(Clone, Debug)]
pub(super) struct Family {
    pub(super) name: String,
    pub(super) ready: BTreeMap<Key, u32>,
    /// `(available_at, order) -> slot`.
    pub(super) waiting: BTreeMap<(u64, u64), u32>,
    /// Insertion order of the last account round-robin picked.
    pub(super) cursor: u64,
    /// The usage limit requests of this family count against (index into the pool's
    /// limits; 0 is [`DEFAULT_LIMIT`](crate::usage::DEFAULT_LIMIT)).
    pub(super) limit: usize,
    /// `(slot, generation)` of the account the sticky strategy picked last.
    pub(super) sticky: Option<(u32, u32)>,
    /// `(when, order) -> slot` of ready accounts whose key changes at a known time (the
    /// quota-aware order moves with the clock); see [`Rules::key_changes_at`].
    pub(super) rekey: BTreeMap<(u64, u64), u32>,
}

/// Immutable policy numbers, pre-converted to milliseconds.
#[derive(Clone, Debug)]
pub(super) struct Rules {
    pub(super) strategy: Strategy,
    /// `(capacity, refill_ms)`.
    pub(super) bucket: Option<(u64, u64)>,
    pub(super) session_ttl: Option<u64>,
    pub(super) max_attempts: u32,
    pub(super) max_wait: u64,
    pub(super) min_cooldown: u64,
    pub(super) max_cooldown: u64,
    pub(super) rate_limit_backoff: u64,
    pub(super) failure_burst: usize,
    pub(super) failure_window: u64,
    pub(super) failure_cooldown: u64,
    pub(super) unauthorized_cooldown: u64,
    pub(super) disable_after_unauthorized: u32,
    pub(super) forbidden_cooldown: u64,
    pub(super) jitter_percent: u64,
    pub(super) max_families: usize,
    /// Percent of a usage window at which an account stops being a candidate.
    pub(super) usage_threshold: f64,
}

impl Rules {
    pub(super) fn new(c: &PolicyConfig) -> Self {
        Rules {
            strategy: c.strategy,
            bucket: c
                .bucket
                .map(|b| (u64::from(b.capacity), ceil_millis(b.refill_every))),
            session_ttl: c.session_ttl.map(ceil_millis),
            max_attempts: c.max_attempts,
            max_wait: ceil_millis(c.max_wait),
            min_cooldown: ceil_millis(c.min_cooldown),
            max_cooldown: ceil_millis(c.max_cooldown),
            rate_limit_backoff: ceil_millis(c.rate_limit_backoff),
            failure_burst: usize::try_from(c.failure_burst).unwrap_or(usize::MAX),
            failure_window: ceil_millis(c.failure_window),
            failure_cooldown: ceil_millis(c.failure_cooldown),
            unauthorized_cooldown: ceil_millis(c.unauthorized_cooldown),
            disable_after_unauthorized: c.disable_after_unauthorized,
            forbidden_cooldown: ceil_millis(c.forbidden_cooldown),
            jitter_percent: u64::from(c.jitter_percent),
            max_families: c.max_families,
            usage_threshold: f64::from(c.usage_threshold),
        }
    }

    /// The longest account-wide cooldown these rules set for `reason` (ms): how far from
    /// its own start a merged cooldown may reach.
    pub(super) fn cooldown_cap(&self, reason: CooldownReason) -> u64 {
        match reason {
            CooldownReason::Unauthorized => self.unauthorized_cooldown,
            CooldownReason::Forbidden => self.forbidden_cooldown,
            CooldownReason::FailureBurst => self.max_cooldown,
        }
    }

    /// The account's key at `clock` in the ready set of a family counting against `limit`.
    pub(super) fn key(&self, a: &Account, limit: usize, clock: u64) -> Key {
        match self.strategy {
            Strategy::LeastRecentlyUsed | Strategy::Sticky => (a.last_used, a.order, 0),
            Strategy::RoundRobin => (a.order, 0, 0),
            Strategy::HealthWeighted => (a.pass, a.order, 0),
            Strategy::QuotaAware => {
                // The long window's end, when it is in its last twentieth (what it has left
                // expires soon: spend it first, soonest end first); else least recently
                // used, which keeps every account's short window rolling. (The key is
                // renewed as time moves an account into its last twentieth: see
                // `Rules::key_changes_at` and `Pool::renew_keys`.)
                match self.expiring_end(a, limit, clock) {
                    Some(end) => (0, end, a.order),
                    None => (1, a.last_used, a.order),
                }
            }
        }
    }

    /// The next time after `clock` at which [`key`](Self::key) of `a` changes by itself
    /// (without a report): when the quota-aware order moves the account into its long
    /// window's last twentieth, and when that window ends.
    pub(super) fn key_changes_at(&self, a: &Account, limit: usize, clock: u64) -> Option<u64> {
        if self.strategy != Strategy::QuotaAware {
            return None;
        }
        let usage = a.usage(limit)?;
        let long = usage.secondary.or(usage.primary)?;
        let minutes = long.window_minutes?;
        let end = long.ends_at(usage.observed_at).as_millis();
        let from = end.saturating_sub(u64::from(minutes).saturating_mul(60_000) / SQUEEZE_SHARE);
        [from, end].into_iter().find(|&t| t > clock)
    }

    /// The end of `limit`'s long window when `clock` is in its last twentieth (and it has
    /// not ended), for the quota-aware order.
    pub(super) fn expiring_end(&self, a: &Account, limit: usize, clock: u64) -> Option<u64> {
        let usage = a.usage(limit)?;
        let long = usage.secondary.or(usage.primary)?;
        let minutes = long.window_minutes?;
        let end = long.ends_at(usage.observed_at).as_millis();
        let last = u64::from(minutes).saturating_mul(60_000) / SQUEEZE_SHARE;
        (end > clock && end.saturating_sub(last) <= clock).then_some(end)
    }

    /// Until when (ms) the account's reported usage of `limit` keeps it out: the latest end
    /// of a window at or above the threshold, 0 if none.
    ///
    /// | the window at or above the threshold has | blocked until |
    /// |---|---|
    /// | `resets_at` or `window_minutes` | its end ([`UsageWindow::ends_at`]): `resets_at`, but at most `window_minutes` and at most 8 days after the report |
    /// | neither | the report + `max_cooldown` (then the account is tried again and reports anew) |
    pub(super) fn usage_blocked_until(&self, a: &Account, limit: usize, clock: u64) -> u64 {
        let Some(usage) = a.usage(limit) else {
            return 0;
        };
        let observed = usage.observed_at;
        let steps = a.steps(limit);
        // The long window (the secondary one when reported) is the one whose leftover
        // expires for good; what a short window has left comes back with the next one.
        let long = if usage.secondary.is_some() { 1 } else { 0 };
        [usage.primary, usage.secondary]
            .into_iter()
            .zip(steps.step)
            .enumerate()
            .filter_map(|(which, (w, step))| {
                w.filter(|w| self.blocks(w.used_percent.get(), step, a.in_flight))
                    .map(|w| (which, w))
            })
            .map(|(which, w)| {
                if w.resets_at.is_none() && w.window_minutes.is_none() {
                    return observed.as_millis().saturating_add(self.max_cooldown);
                }
                let end = w.ends_at(observed).as_millis();
                match (self.strategy, w.window_minutes) {
                    // Quota-aware spends what the long window has left in its last
                    // twentieth: it would expire unused. Only a full window (or a 429)
                    // stops that — and the threshold, a reserve kept for others.
                    (Strategy::QuotaAware, Some(minutes))
                        if which == long
                            && w.used_percent < Percent::FULL
                            && w.used_percent.get() < self.usage_threshold =>
                    {
                        let last = u64::from(minutes).saturating_mul(60_000) / SQUEEZE_SHARE;
                        let from = end.saturating_sub(last);
                        if from <= clock { 0 } else { from }
                    }
                    _ => end,
                }
            })
            .max()
            .unwrap_or(0)
    }

    /// Whether a window used `used` percent keeps the account out, given that one request
    /// was seen to use up to `step` points of it and `in_flight` requests of this process
    /// are on their way: at or above the threshold, or when two more requests' worth plus
    /// those in flight (each at least [`MIN_STEP`]) would overflow it. Two, because a report
    /// does not count the answer it came with yet (usage headers come before the answer is
    /// generated), and the next request adds as much again: an account is left before the
    /// upstream's 429, not at it.
    pub(super) fn blocks(&self, used: f64, step: f64, in_flight: u32) -> bool {
        let requests = 2.0 + f64::from(in_flight);
        used >= self.usage_threshold || used + requests * step.max(MIN_STEP) > 100.0
    }

    /// When the bucket next holds a whole token.
    pub(super) fn bucket_ready_at(&self, a: &Account) -> u64 {
        match self.bucket {
            Some((capacity, refill)) => a
                .bucket_full_at
                .saturating_sub((capacity - 1).saturating_mul(refill)),
            None => 0,
        }
    }

    /// When the account is usable for `family` (which counts against `limit`).
    pub(super) fn available_at(&self, a: &Account, family: usize, limit: usize, clock: u64) -> u64 {
        a.cooldown_until
            .max(a.families[family].cooldown_until)
            .max(self.bucket_ready_at(a))
            .max(self.usage_blocked_until(a, limit, clock))
    }

    /// Puts account `a` (in `slot`) where it belongs in `family`'s index at `clock`.
    pub(super) fn place(
        &self,
        a: &mut Account,
        families: &mut [Family],
        slot: u32,
        family: usize,
        clock: u64,
    ) {
        let limit = families[family].limit;
        let desired = if a.disabled.is_some() {
            Place::Absent
        } else {
            let at = self.available_at(a, family, limit, clock);
            if at <= clock {
                Place::Ready(self.key(a, limit, clock))
            } else {
                Place::Waiting(at)
            }
        };
        let rekey_at = match desired {
            Place::Ready(_) => self.key_changes_at(a, limit, clock),
            _ => None,
        };
        let index = &mut families[family];
        let state = &mut a.families[family];
        if state.rekey_at != rekey_at {
            if let Some(at) = state.rekey_at {
                index.rekey.remove(&(at, a.order));
            }
            if let Some(at) = rekey_at {
                index.rekey.insert((at, a.order), slot);
            }
            state.rekey_at = rekey_at;
        }
        let current = state.place;
        if current == desired {
            return;
        }
        match current {
            Place::Absent => {}
            Place::Ready(key) => {
                index.ready.remove(&key);
            }
            Place::Waiting(at) => {
                index.waiting.remove(&(at, a.order));
            }
        }
        match desired {
            Place::Absent => {}
            Place::Ready(key) => {
                index.ready.insert(key, slot);
            }
            Place::Waiting(at) => {
                index.waiting.insert((at, a.order), slot);
            }
        }
        a.families[family].place = desired;
    }

    pub(super) fn place_everywhere(
        &self,
        a: &mut Account,
        families: &mut [Family],
        slot: u32,
        clock: u64,
    ) {
        for family in 0..families.len() {
            self.place(a, families, slot, family, clock);
        }
    }
}
