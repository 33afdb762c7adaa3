//! One account's state and the small rules that change it.

use std::collections::VecDeque;

use super::index::{Place, Rules};
use crate::status::{CooldownReason, DisabledReason, OutcomeCounts};
use crate::{AccountId, Outcome};

/// An account's state for one model family, and where it sits in that family's index.
#[derive(Clone, Debug)]
pub(super) struct PerFamily {
    /// Rate-limit cooldown end (ms).
    pub(super) cooldown_until: u64,
    /// Consecutive rate limits.
    pub(super) streak: u32,
    pub(super) place: Place,
}

impl PerFamily {
    pub(super) const NEW: PerFamily = PerFamily {
        cooldown_until: 0,
        streak: 0,
        place: Place::Absent,
    };
}

/// One account in the pool.
#[derive(Clone, Debug)]
pub(super) struct Account {
    pub(super) id: AccountId,
    /// Insertion sequence number (unique, never reused).
    pub(super) order: u64,
    /// Generation of the slot when this account was added.
    pub(super) generation: u32,
    pub(super) disabled: Option<DisabledReason>,
    /// Account-wide cooldown end (ms) and its reason.
    pub(super) cooldown_until: u64,
    pub(super) cooldown_reason: Option<CooldownReason>,
    pub(super) needs_refresh: bool,
    pub(super) unauthorized_streak: u32,
    pub(super) burst_streak: u32,
    /// Times (ms) of the latest failures, at most `failure_burst` of them.
    pub(super) failures: VecDeque<u64>,
    pub(super) health: u8,
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
}

/// Extends the account-wide cooldown to `until` (never shortens it).
pub(super) fn cool(account: &mut Account, until: u64, reason: CooldownReason) {
    if until > account.cooldown_until {
        account.cooldown_until = until;
        account.cooldown_reason = Some(reason);
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
