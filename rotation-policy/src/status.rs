//! Serializable snapshots of a pool's counters and accounts.

use serde::{Deserialize, Serialize};

use crate::usage::LimitUsage;
use crate::{AccountId, Timestamp};

/// Pool-wide counters. Taken together with the account list in one [`PoolStatus`] they are
/// consistent: `attempts == requests + retries`, and while no account has been removed,
/// `attempts` is the sum of the accounts' `attempts`, and so on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Counters {
    /// Requests that were handed at least one account.
    pub requests: u64,
    /// Accounts handed out by `select`.
    pub attempts: u64,
    /// Attempts after a request's first.
    pub retries: u64,
    /// Attempts on a different account than the request's previous attempt or its session's
    /// live binding.
    pub rotations: u64,
    /// `Decision::Wait` answers.
    pub waits: u64,
    /// `Selection::Exhausted` and `Selection::NoAccount` answers.
    pub exhausted: u64,
    /// Reported outcomes.
    pub outcomes: OutcomeCounts,
}

/// Reported outcomes by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OutcomeCounts {
    /// `Outcome::Success`.
    pub success: u64,
    /// `Outcome::RateLimited`.
    pub rate_limited: u64,
    /// `Outcome::Unauthorized`.
    pub unauthorized: u64,
    /// `Outcome::Forbidden`.
    pub forbidden: u64,
    /// `Outcome::ServerError`.
    pub server_error: u64,
    /// `Outcome::NetworkError`.
    pub network_error: u64,
    /// `Outcome::Timeout`.
    pub timeout: u64,
}

impl OutcomeCounts {
    /// All reported outcomes.
    ///
    /// ```
    /// # use rotation_policy::OutcomeCounts;
    /// assert_eq!(OutcomeCounts::default().total(), 0);
    /// ```
    pub fn total(&self) -> u64 {
        self.success
            + self.rate_limited
            + self.unauthorized
            + self.forbidden
            + self.server_error
            + self.network_error
            + self.timeout
    }
}

/// Why an account is disabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum DisabledReason {
    /// [`Pool::disable`](crate::Pool::disable) was called.
    Manual,
    /// Too many consecutive 401s.
    Unauthorized,
    /// The account's login is gone for everyone until the person signs in again: its refresh
    /// token was reused or revoked (`refresh_token_reused`, `invalid_grant`). Set with
    /// [`Pool::disable_for`](crate::Pool::disable_for); it replaces any other reason.
    LoginRequired,
    /// The account or its workspace was deactivated upstream: gone for everyone. Set with
    /// [`Pool::disable_for`](crate::Pool::disable_for); it replaces any other reason.
    Deactivated,
}

impl DisabledReason {
    /// Whether the account's login is gone for every process ([`LoginRequired`](Self::LoginRequired),
    /// [`Deactivated`](Self::Deactivated)), as opposed to disabled by a choice or a local count.
    ///
    /// ```
    /// # use rotation_policy::DisabledReason;
    /// assert!(DisabledReason::LoginRequired.is_gone());
    /// assert!(!DisabledReason::Manual.is_gone());
    /// ```
    pub fn is_gone(self) -> bool {
        matches!(
            self,
            DisabledReason::LoginRequired | DisabledReason::Deactivated
        )
    }
}

/// Why an account-wide cooldown is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum CooldownReason {
    /// A 401; ends early with [`Pool::mark_refreshed`](crate::Pool::mark_refreshed).
    Unauthorized,
    /// A 403.
    Forbidden,
    /// A burst of server errors, network errors or timeouts.
    FailureBurst,
}

/// One account's rate-limit cooldown for one model family.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FamilyCooldown {
    /// The model family.
    pub family: String,
    /// When the account may serve the family again.
    pub until: Timestamp,
    /// Consecutive rate limits behind this cooldown.
    pub streak: u32,
}

/// One account's state at the snapshot's `now`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AccountStatus {
    /// The caller's id (never an email).
    pub id: AccountId,
    /// Set while the account is disabled.
    pub disabled: Option<DisabledReason>,
    /// End of the running account-wide cooldown, if any.
    pub cooldown_until: Option<Timestamp>,
    /// Why that cooldown runs.
    pub cooldown_reason: Option<CooldownReason>,
    /// Running per-family rate-limit cooldowns, by family name.
    pub family_cooldowns: Vec<FamilyCooldown>,
    /// A 401 was seen since the last success or `mark_refreshed`.
    pub needs_refresh: bool,
    /// 0 (failing) to 100 (healthy).
    pub health: u8,
    /// Whole tokens in the bucket now (`None` without a bucket).
    pub tokens: Option<u32>,
    /// Dispatches consumed but not yet reported or refunded.
    pub in_flight: u32,
    /// Times handed out by `select`.
    pub attempts: u64,
    /// Reported outcomes.
    pub outcomes: OutcomeCounts,
    /// The latest usage known per limit (reported by the upstream or merged from shared
    /// state), with what it means for selection. Left out of the JSON when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usage: Vec<UsageStatus>,
}

/// One limit's latest known usage of one account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UsageStatus {
    /// The limit and its windows as last reported (windows whose reset has passed are left
    /// out: they start again from 0 %).
    pub limit: LimitUsage,
    /// When that report was received.
    pub observed_at: Timestamp,
    /// Set while a window is at or above
    /// [`usage_threshold`](crate::PolicyConfig::usage_threshold): the account serves no
    /// request counted against this limit before then.
    pub blocked_until: Option<Timestamp>,
}

/// A consistent picture of a pool at one instant, from [`Pool::status`](crate::Pool::status).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PoolStatus {
    /// The time the snapshot describes.
    pub now: Timestamp,
    /// Pool-wide counters.
    pub counters: Counters,
    /// Live session bindings.
    pub sessions: usize,
    /// Every account, in the order they were added.
    pub accounts: Vec<AccountStatus>,
}
