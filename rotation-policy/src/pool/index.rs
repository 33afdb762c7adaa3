//! The per-family availability index: where each account sits (usable now, ordered by the
//! strategy, or waiting until a known time) and the rules that decide it.

use std::collections::BTreeMap;

use super::account::Account;
use crate::PolicyConfig;
use crate::config::Strategy;
use crate::status::CooldownReason;
use crate::time::ceil_millis;
use crate::usage::UsageWindow;

/// Ordering key of a usable account within a family; smaller is picked first. The account's
/// insertion order is always part of it, so keys are unique.
pub(super) type Key = (u64, u64, u64);

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
                // Soonest end first: the long window's (it holds the most capacity, and
                // what it has left when it resets is lost), then the short one's. A window
                // not known, or over by `clock`, sorts last: nothing of it can expire. (The
                // key of an account in the ready set is renewed as its windows end: see
                // `Pool::renew_stale_keys`.)
                match a.usage(limit) {
                    Some(u) => {
                        let end = |w: Option<UsageWindow>| {
                            w.map(|w| w.ends_at(u.observed_at).as_millis())
                                .filter(|&end| end > clock)
                                .unwrap_or(u64::MAX)
                        };
                        (end(u.secondary), end(u.primary), a.order)
                    }
                    None => (u64::MAX, u64::MAX, a.order),
                }
            }
        }
    }

    /// Until when (ms) the account's reported usage of `limit` keeps it out: the latest end
    /// of a window at or above the threshold, 0 if none.
    ///
    /// | the window at or above the threshold has | blocked until |
    /// |---|---|
    /// | `resets_at` or `window_minutes` | its end ([`UsageWindow::ends_at`]): `resets_at`, but at most `window_minutes` (else 8 days) after the report |
    /// | neither | the report + `max_cooldown` (then the account is tried again and reports anew) |
    pub(super) fn usage_blocked_until(&self, a: &Account, limit: usize) -> u64 {
        let Some(usage) = a.usage(limit) else {
            return 0;
        };
        let observed = usage.observed_at;
        [usage.primary, usage.secondary]
            .into_iter()
            .flatten()
            .filter(|w| w.used_percent.get() >= self.usage_threshold)
            .map(|w| {
                if w.resets_at.is_none() && w.window_minutes.is_none() {
                    observed.as_millis().saturating_add(self.max_cooldown)
                } else {
                    w.ends_at(observed).as_millis()
                }
            })
            .max()
            .unwrap_or(0)
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
    pub(super) fn available_at(&self, a: &Account, family: usize, limit: usize) -> u64 {
        a.cooldown_until
            .max(a.families[family].cooldown_until)
            .max(self.bucket_ready_at(a))
            .max(self.usage_blocked_until(a, limit))
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
            let at = self.available_at(a, family, limit);
            if at <= clock {
                Place::Ready(self.key(a, limit, clock))
            } else {
                Place::Waiting(at)
            }
        };
        let current = a.families[family].place;
        if current == desired {
            return;
        }
        let index = &mut families[family];
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
