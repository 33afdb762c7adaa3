//! Policy configuration.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::PolicyError;

/// How the pool orders the accounts that are usable right now.
///
/// Session affinity ([`PolicyConfig::session_ttl`]) is layered on top of any strategy: a
/// request with a session key goes back to its bound account while that account is usable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Strategy {
    /// The usable account that was handed out longest ago (never-used first, then the order
    /// accounts were added). Spreads load evenly and lets buckets refill.
    #[default]
    LeastRecentlyUsed,
    /// The next usable account after the one picked last for the same model family, in the
    /// order accounts were added, wrapping around.
    RoundRobin,
    /// Usable accounts share the traffic in proportion to their health score + 1 (health is
    /// 0–100; failures lower it, successes raise it): deterministic stride scheduling, so an
    /// account at health 100 gets about 101 picks for every one of an account at health 0.
    /// Keeps most traffic off accounts that recently failed without starving them (they can
    /// earn their health back) and without waiting for them to be cooled down.
    HealthWeighted,
    /// Spends the capacity that would expire unused: an account whose long usage window
    /// (the weekly one) is in its last twentieth (8.4 hours of a week) goes first, soonest
    /// end first, and is spent past the usage margin until the window is full or answers
    /// 429 (what it has left is lost at the reset anyway; a
    /// [`usage_threshold`](PolicyConfig::usage_threshold) below 100 is a reserve and is
    /// kept); otherwise the least recently used, which keeps every account's short window
    /// rolling. Needs usage reports ([`Pool::record_usage`](crate::Pool::record_usage));
    /// without them it is least recently used.
    ///
    /// Why not always the soonest reset: windows start at first use, and concentrating
    /// traffic on a few accounts leaves the others' short windows unstarted until a peak,
    /// when they all start and end together; in the simulator a first version ordered that
    /// way served 8 % fewer requests than least recently used. This one serves the most on
    /// average over 20 seeds (`policy-sim --windows --compare --seeds 20`), at the cost of
    /// about one 429 per account and week where it spends a week to its end; on a single
    /// seed the strategies that use usage reports are within a percent of each other.
    QuotaAware,
    /// Stays on the account it picked last for the model family while that account is
    /// usable (not cooling down, below the usage threshold, with a token in its bucket), then
    /// moves to the least recently used one. Keeps a prompt cache warm and makes accounts'
    /// weekly windows start (and so reset) at different times.
    Sticky,
}

/// A per-account token bucket that paces dispatches: up to `capacity` back to back, then one
/// more every `refill_every`.
///
/// ```
/// use std::time::Duration;
/// use rotation_policy::TokenBucket;
/// let bucket = TokenBucket::new(10, Duration::from_secs(6)); // 10 per minute, bursts of 10
/// assert_eq!(bucket.capacity, 10);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TokenBucket {
    /// Most tokens the bucket holds (≥ 1).
    pub capacity: u32,
    /// Time to regain one token (≥ 1 ms; millisecond resolution).
    pub refill_every: Duration,
}

impl TokenBucket {
    /// A bucket of `capacity` tokens regaining one every `refill_every`.
    pub fn new(capacity: u32, refill_every: Duration) -> Self {
        TokenBucket {
            capacity,
            refill_every,
        }
    }
}

/// Everything that shapes the policy. Start from [`PolicyConfig::default`] and change
/// fields; [`Pool::new`](crate::Pool::new) validates it.
///
/// ```
/// use std::time::Duration;
/// use rotation_policy::{PolicyConfig, Strategy, TokenBucket};
///
/// let mut config = PolicyConfig::default();
/// config.strategy = Strategy::HealthWeighted;
/// config.session_ttl = Some(Duration::from_secs(600));
/// config.bucket = Some(TokenBucket::new(20, Duration::from_secs(3)));
/// config.max_attempts = 4;
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct PolicyConfig {
    /// Ordering of usable accounts. Default: least recently used.
    pub strategy: Strategy,
    /// Session affinity: a session key stays on its account for this long after its last
    /// request, while the account is usable. `None` disables affinity. Default: 30 minutes.
    pub session_ttl: Option<Duration>,
    /// Per-account pacing; `None` means unlimited. Default: 60 tokens, one back per second.
    pub bucket: Option<TokenBucket>,
    /// Most accounts one request may be tried on (≥ 1). Default: 3.
    pub max_attempts: u32,
    /// When a failed request could be retried but every untried account is cooling down,
    /// the longest wait the policy asks the caller to hold the request for
    /// ([`Decision::Wait`](crate::Decision::Wait)) instead of returning it. Default: 5 s.
    pub max_wait: Duration,
    /// Shortest cooldown a rate limit causes, even if `Retry-After` says less. Default: 1 s.
    pub min_cooldown: Duration,
    /// Longest cooldown a rate limit or failure burst causes (bounds `Retry-After` and every
    /// computed backoff; the fixed 401/403 cooldowns below are not bounded by it).
    /// Default: 15 minutes.
    pub max_cooldown: Duration,
    /// First cooldown after a rate limit without a usable `Retry-After`; doubles with each
    /// consecutive rate limit of the same account and model family. Default: 2 s.
    pub rate_limit_backoff: Duration,
    /// Server errors, network errors and timeouts of one account count as a burst when this
    /// many happen within [`failure_window`](Self::failure_window) (≥ 1). Default: 3.
    pub failure_burst: u32,
    /// The window for [`failure_burst`](Self::failure_burst). Default: 30 s.
    pub failure_window: Duration,
    /// Account-wide cooldown after a failure burst; doubles with each consecutive burst.
    /// Default: 10 s.
    pub failure_cooldown: Duration,
    /// Account-wide cooldown after a 401, giving the caller time to refresh the token (call
    /// [`Pool::mark_refreshed`](crate::Pool::mark_refreshed) to end it early); at most
    /// [`MAX_COOLDOWN_SPAN`](crate::MAX_COOLDOWN_SPAN) (30 days). Default: 60 s.
    pub unauthorized_cooldown: Duration,
    /// Disable an account after this many consecutive 401s (≥ 1). Default: 3.
    pub disable_after_unauthorized: u32,
    /// Account-wide cooldown after a 403; at most
    /// [`MAX_COOLDOWN_SPAN`](crate::MAX_COOLDOWN_SPAN) (30 days). Default: 1 hour.
    pub forbidden_cooldown: Duration,
    /// Computed backoffs (not upstream `Retry-After` values) are lengthened by a random
    /// 0..=`jitter_percent`% drawn from the pool's seeded generator, so accounts cooled
    /// together do not all come back in the same millisecond (0–100). Default: 10.
    pub jitter_percent: u8,
    /// Most distinct model families tracked (≥ 1); further names share the family `"*"`.
    /// Default: 64.
    pub max_families: usize,
    /// Usage threshold in percent (1–100): an account that reported a usage window of a
    /// limit at or above it serves no request counted against that limit until the window
    /// resets (see [`Pool::record_usage`](crate::Pool::record_usage)). Independently of it,
    /// an account is left when the requests it may still get would overflow a window (a
    /// margin learned from the reports); below 100 the threshold keeps a reserve on top
    /// (for other users of the accounts, or traffic the reports do not show).
    /// Default: 100 (no reserve: the margin decides).
    pub usage_threshold: u8,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            strategy: Strategy::LeastRecentlyUsed,
            session_ttl: Some(Duration::from_secs(30 * 60)),
            bucket: Some(TokenBucket::new(60, Duration::from_secs(1))),
            max_attempts: 3,
            max_wait: Duration::from_secs(5),
            min_cooldown: Duration::from_secs(1),
            max_cooldown: Duration::from_secs(15 * 60),
            rate_limit_backoff: Duration::from_secs(2),
            failure_burst: 3,
            failure_window: Duration::from_secs(30),
            failure_cooldown: Duration::from_secs(10),
            unauthorized_cooldown: Duration::from_secs(60),
            disable_after_unauthorized: 3,
            forbidden_cooldown: Duration::from_secs(60 * 60),
            jitter_percent: 10,
            max_families: 64,
            usage_threshold: 100,
        }
    }
}

impl PolicyConfig {
    /// Checks every field; the error names the first bad one.
    ///
    /// ```
    /// use rotation_policy::{PolicyConfig, PolicyError};
    /// let mut config = PolicyConfig::default();
    /// config.max_attempts = 0;
    /// assert!(matches!(config.validate(), Err(PolicyError::InvalidConfig { field: "max_attempts", .. })));
    /// ```
    pub fn validate(&self) -> Result<(), PolicyError> {
        let bad = |field: &'static str, reason: &str| {
            Err(PolicyError::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        if let Some(bucket) = &self.bucket {
            if bucket.capacity == 0 {
                return bad("bucket.capacity", "is 0; use at least 1 (or no bucket)");
            }
            if bucket.refill_every < Duration::from_millis(1) {
                return bad("bucket.refill_every", "is under 1 ms; use at least 1 ms");
            }
        }
        if self.session_ttl == Some(Duration::ZERO) {
            return bad("session_ttl", "is 0; use None to disable affinity");
        }
        if self.max_attempts == 0 {
            return bad("max_attempts", "is 0; a request needs at least 1 attempt");
        }
        if self.min_cooldown > self.max_cooldown {
            return bad(
                "min_cooldown",
                "is longer than max_cooldown; make it shorter or equal",
            );
        }
        if self.max_cooldown > crate::RetryAfter::CEILING {
            return bad("max_cooldown", "is longer than one day; use at most 24 h");
        }
        if self.unauthorized_cooldown > crate::MAX_COOLDOWN_SPAN {
            return bad(
                "unauthorized_cooldown",
                "is longer than 30 days (the longest cooldown shared state keeps); use at most 30 days",
            );
        }
        if self.forbidden_cooldown > crate::MAX_COOLDOWN_SPAN {
            return bad(
                "forbidden_cooldown",
                "is longer than 30 days (the longest cooldown shared state keeps); use at most 30 days",
            );
        }
        if self.failure_burst == 0 {
            return bad("failure_burst", "is 0; use at least 1");
        }
        if self.disable_after_unauthorized == 0 {
            return bad("disable_after_unauthorized", "is 0; use at least 1");
        }
        if self.jitter_percent > 100 {
            return bad("jitter_percent", "is over 100; use 0 to 100");
        }
        if !(1..=100).contains(&self.usage_threshold) {
            return bad("usage_threshold", "must be a percentage from 1 to 100");
        }
        if self.max_families == 0 {
            return bad("max_families", "is 0; use at least 1");
        }
        Ok(())
    }
}
