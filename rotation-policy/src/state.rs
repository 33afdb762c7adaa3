//! Shared account state: what a [`Pool`](crate::Pool) exports so another process (or the
//! next run) can pick it up, and the rules for merging what concurrent writers wrote. Pure
//! data and a pure merge; reading and writing the shared file is the caller's job.
//!
//! Several processes (rotation proxies on one machine, say) use the same accounts. Each keeps
//! its own [`Pool`](crate::Pool); what one learns about an account — a 429 cooldown, a
//! revoked login, falling health — should steer the others too, and survive a restart. A
//! [`PolicyState`] carries exactly that, keyed by [`AccountId`], as serde data (JSON in a
//! file, typically). Writers never coordinate: every rule below is a *join* — commutative,
//! associative and idempotent — so any number of writers merging in any order, any number of
//! times, end with the same document.
//!
//! # Merge rules
//!
//! [`PolicyState::merge`] (two documents) and [`Pool::merge_state`](crate::Pool::merge_state)
//! (a document into a live pool) follow one table, per account:
//!
//! | state | the merge keeps | so that |
//! |---|---|---|
//! | `cooldown` (account-wide) | the later `until`, with its `reason` and `since`; equal `until`: the higher reason (`forbidden` > `failure-burst` > `unauthorized`), then the later `since` | cooldowns only extend, never shorten |
//! | `refreshed_at` | the later one; a `cooldown` with reason `unauthorized` and `since` ≤ `refreshed_at` is over | a token refresh after a 401 ends that 401's cooldown for every process (the token is shared) |
//! | `families.<family>` | per family, one with a `since` over one without (whatever their ends), then the later `until`, then the later `since`; `streak` = the larger | a 429 cools that family for everyone, and a cooldown its start bounds replaces one nothing bounds (an older writer's, or junk) |
//! | `disabled` / `enabled_since` | each the later one (equal `disabled.since`: `deactivated` > `login-required` > `unauthorized` > `manual`); the account is disabled when `disabled.since` ≥ `enabled_since` (equal times: disabled) | a disable holds until an explicit *later* enable; a gone login (`login-required`, `deactivated`) is never cleared by an earlier enable |
//! | `health`, `needs_refresh`, `unauthorized_streak`, `burst_streak` | one observation, whole: the one with the later `health_at`; equal `health_at`: the lower health, then `needs_refresh`, then the larger streaks | the latest view of the account wins, ties deterministically |
//! | `usage.<limit>` | per limit, the report with the later `observed_at`, whole; equal times: by content — the primary window, then the secondary (each by use, then length, then reset; a window over none), then the name | every process steers by the latest usage the upstream reported for the account |
//! | what no writer can have written: any time after [`LAST_PLAUSIBLE_TIME`] (year 9999), a cooldown running longer than [`MAX_COOLDOWN_SPAN`] (30 days) from its `since` | nothing: it reads as absent, on either side (a stamp is dropped, an observation reads as none) | junk in a file (`"until": 18446744073709551615`) never wins against the real records written after it |
//! | `version` | [`POLICY_STATE_VERSION`] | a merged document is in this crate's format |
//!
//! The join is over what a document can hold: merging a document with itself or with an
//! empty one drops what no writer can have written, and changes nothing after that.
//!
//! A document merge has no clock, so it cannot tell a record from a clock years ahead (but
//! before year 9999) from a real one: such a record keeps its slot in the document until
//! that time comes, and a real record of the same kind written meanwhile is kept only if it
//! orders after it. Every pool ignores such a record (see *not from the future* below).
//!
//! Merging into a live pool adds guards, because the document may come from a process with
//! a wrong clock, an older run or version, or a hostile writer:
//!
//! - **Capped from its own start**: a cooldown runs at most as long from its `since` as this
//!   pool's own rules would set for it — [`max_cooldown`](crate::PolicyConfig::max_cooldown)
//!   for a family (429) or a failure burst,
//!   [`unauthorized_cooldown`](crate::PolicyConfig::unauthorized_cooldown) for a 401,
//!   [`forbidden_cooldown`](crate::PolicyConfig::forbidden_cooldown) for a 403 — so a file
//!   cannot block an account for years, and a 24 h cooldown written by a process whose
//!   config allows it runs 15 minutes here (by default). Never from `now`: merging the same
//!   document again later must not restart it. A family cooldown without a `since` (from a
//!   writer of the format before it had one, or given to
//!   [`Pool::restore_cooldown`](crate::Pool::restore_cooldown)) is timed from the first time
//!   this pool sees that `until`, and seeing it again does nothing; the pool writes it back
//!   with the start it gave it, which replaces the start-less record in the file (the table
//!   above), so other readers and later runs time it from the same start. (Ignoring such
//!   cooldowns instead would be simpler, but a real 429 an older process saw must still cool
//!   the account.)
//! - **Not from the future**: a record stamped more than `max_cooldown` after `now` (a
//!   `cooldown.since`, `families.<family>.since`, `disabled.since`, `enabled_since`,
//!   `refreshed_at` or `health_at`) is ignored, so a broken clock cannot pin an account's
//!   state; such records are counted in [`MergeReport::ignored_future`].
//! - **Only what is running**: cooldowns that ended (`until` ≤ `now`) are ignored, and so
//!   are those no writer can have written ([`MergeReport::ignored_implausible`]).
//! - **Only families the pool uses**: a family cooldown merges into a model family the pool
//!   tracks; a merge adds a new family only while the pool tracks fewer than
//!   [`max_families`](crate::PolicyConfig::max_families)` / 2` named families, keeping the
//!   rest for the pool's own traffic, and never files a name under the shared family `"*"`
//!   ([`MergeReport::ignored_families`]). A file naming thousands of families therefore
//!   cannot push the families real requests use into `"*"`; a cooldown left out is merged by
//!   the next merge after traffic brought its family.
//! - **Never shorter**: a merge never shortens a cooldown the pool is running, except that a
//!   later `refreshed_at` ends a 401 cooldown, as [`Pool::mark_refreshed`](crate::Pool::mark_refreshed)
//!   does.
//!
//! # Timestamps the pool writes
//!
//! Each event is stamped with the pool's clock (the latest `now` it has seen, so a proxy
//! that merges every few hundred milliseconds keeps it current even when `disable`/`enable`
//! take no `now`), and never earlier than the event it follows on that account, so a later
//! local event always wins a merge against what the pool had merged before, even from a
//! process whose clock runs a little ahead: an `enable` is stamped after the `disabled.since`
//! it clears (so it lifts a disable stamped a little in the future, here and wherever it is
//! merged), a disable no earlier than the last `enabled_since`, a 401 cooldown after the
//! last `refreshed_at`, a refresh no earlier than the 401 cooldown it ends, and a health
//! observation no earlier than the previous one. A family cooldown's `since` is the time of
//! the 429 that set its `until`.
//!
//! # What is not shared
//!
//! Token buckets, in-flight counts, session bindings, outcome counters, the strategy's order
//! (last use, round-robin cursor, stride passes) and the window of recent failures stay in
//! each process: they pace *this* process's traffic or are its bookkeeping, and another
//! process's values would be wrong for it. Two proxies with a bucket of 60 each send up to
//! 120 per account; size buckets per process.
//!
//! A family streak is shared while that family's cooldown runs; afterwards it lives only in
//! the pool that counted it.
//!
//! # Format
//!
//! Field names are snake_case, timestamps are milliseconds since the Unix epoch (use
//! wall-clock [`Timestamp`]s in every process that shares state), and fields at their
//! default are left out: an account with nothing to say is `{}`. Missing fields read as
//! their defaults (health 100; a family cooldown without `since` has an unknown start),
//! unknown fields are ignored, and a reason this version does not know (from a newer writer)
//! reads as the nearest one it does (`manual` for a disable, `failure-burst` for a
//! cooldown), so a newer writer's file still loads. Map keys are [`AccountId`]s and are
//! checked like any other: a document naming an account by email is refused.
//!
//! ```json
//! {
//!   "version": 1,
//!   "accounts": {
//!     "acct-1": {
//!       "cooldown": { "until": 1700000060000, "reason": "forbidden", "since": 1700000000000 },
//!       "families": { "gpt-5": { "until": 1700000030000, "streak": 2, "since": 1700000000000 } },
//!       "health": 45,
//!       "health_at": 1700000000000,
//!       "usage": {
//!         "codex": {
//!           "observed_at": 1700000000000,
//!           "primary": { "used_percent": 97.0, "window_minutes": 300, "resets_at": 1700003600000 },
//!           "secondary": { "used_percent": 40.5, "window_minutes": 10080, "resets_at": 1700400000000 }
//!         }
//!       }
//!     },
//!     "acct-2": { "disabled": { "reason": "login-required", "since": 1700000000000 } }
//!   }
//! }
//! ```

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::IntoDeserializer;
use serde::{Deserialize, Deserializer, Serialize};

use crate::status::{CooldownReason, DisabledReason};
use crate::usage::{MAX_WINDOW_MINUTES, Percent, UsageWindow, normalize_limit_id, short_text};
use crate::{AccountId, Timestamp};

/// The format version this crate writes (see [`PolicyState::version`]).
pub const POLICY_STATE_VERSION: u32 = 1;

/// The longest cooldown a shared document keeps: one running longer from its start (an
/// account-wide `until − since`, or a family's when it has a `since`) is dropped by every
/// merge. No configuration this crate accepts sets a longer one
/// ([`PolicyConfig::validate`](crate::PolicyConfig::validate) refuses longer 401 and 403
/// cooldowns; 429 and failure-burst cooldowns are at most a day). A constant, because
/// documents are merged without a configuration: 30 days.
pub const MAX_COOLDOWN_SPAN: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// The last time a shared document can name: 9999-12-31T23:59:59.999Z, in milliseconds
/// since the Unix epoch. A record stamped or ending later (`u64::MAX`, say) cannot come
/// from a real clock and every merge treats it as absent.
pub const LAST_PLAUSIBLE_TIME: Timestamp = Timestamp::from_millis(253_402_300_799_999);

/// Health of an account nothing has been observed about.
const FULL_HEALTH: u8 = 100;

/// Per-account state that several processes share, or one process keeps across restarts:
/// from [`Pool::export_state`](crate::Pool::export_state) or
/// [`Pool::take_changes`](crate::Pool::take_changes), into
/// [`Pool::merge_state`](crate::Pool::merge_state). See the [module docs](self) for the merge
/// rules and the format.
///
/// ```
/// use rotation_policy::{AccountId, AccountState, PolicyState};
///
/// let json = r#"{"version": 1, "accounts": {"acct-1": {"health": 40, "health_at": 5}}}"#;
/// let mut file: PolicyState = serde_json::from_str(json)?;
/// let mut other = PolicyState::default();
/// let mut healthier = AccountState::default();
/// healthier.health = 90;
/// healthier.health_at = rotation_policy::Timestamp::from_millis(9);
/// other.accounts.insert(AccountId::new("acct-1")?, healthier);
/// file.merge(&other); // the later observation wins
/// assert_eq!(file.accounts[&AccountId::new("acct-1")?].health, 90);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PolicyState {
    /// The format version: [`POLICY_STATE_VERSION`] for documents this crate makes or
    /// merges. Any version is read (fields this version does not know are ignored).
    #[serde(default = "current_version")]
    pub version: u32,
    /// Every account the document knows something about.
    #[serde(default)]
    pub accounts: BTreeMap<AccountId, AccountState>,
}

impl Default for PolicyState {
    fn default() -> Self {
        PolicyState {
            version: POLICY_STATE_VERSION,
            accounts: BTreeMap::new(),
        }
    }
}

impl PolicyState {
    /// Merges `other` into `self` by the [merge rules](self#merge-rules): what a file store
    /// does under its lock with the file's document and a process's changes. The merge is a
    /// join — commutative, associative and idempotent — so writers may merge in any order
    /// and any number of times. What no writer can have written (a time after
    /// [`LAST_PLAUSIBLE_TIME`], a cooldown longer than [`MAX_COOLDOWN_SPAN`]) is dropped from
    /// both sides, so it never outlives a merge. O(n · F) for that over the n accounts of
    /// `self`, plus O(k · F log(n + k)) for k accounts in `other`, with F families each.
    ///
    /// ```
    /// use rotation_policy::{AccountId, AccountState, FamilyState, PolicyState, Timestamp};
    ///
    /// let id = AccountId::new("acct-1")?;
    /// let limited = |until, streak| {
    ///     let mut state = PolicyState::default();
    ///     let mut account = AccountState::default();
    ///     account.families.insert("gpt-5".into(), FamilyState::new(Timestamp::from_millis(until), streak));
    ///     state.accounts.insert(id.clone(), account);
    ///     state
    /// };
    /// let (mut a, b) = (limited(30_000, 1), limited(20_000, 3));
    /// a.merge(&b);
    /// assert_eq!(a.accounts[&id].families["gpt-5"], FamilyState::new(Timestamp::from_millis(30_000), 3));
    /// # Ok::<(), rotation_policy::PolicyError>(())
    /// ```
    pub fn merge(&mut self, other: &PolicyState) {
        self.version = POLICY_STATE_VERSION;
        // Every account, not only those in `other`: the result must not depend on which
        // side held a record no writer can have written.
        for ours in self.accounts.values_mut() {
            ours.normalize();
        }
        for (id, theirs) in &other.accounts {
            match self.accounts.get_mut(id) {
                Some(ours) => {
                    ours.join(theirs);
                }
                None => {
                    let mut ours = AccountState::default();
                    ours.join(theirs);
                    self.accounts.insert(id.clone(), ours);
                }
            }
        }
    }
}

/// What a pool's decisions about one account depend on and other processes should know: its
/// cooldowns, whether it is disabled, and its latest health observation. See the
/// [module docs](self) for the merge rules and what is deliberately left out (token buckets,
/// in-flight counts, session bindings, counters and the strategy's order are per-process
/// pacing and bookkeeping).
///
/// `Default` is an account nothing is known about: no cooldown, enabled, health 100.
///
/// ```
/// use rotation_policy::AccountState;
///
/// let state: AccountState = serde_json::from_str("{}")?;
/// assert_eq!(state, AccountState::default());
/// assert_eq!(state.health, 100);
/// assert_eq!(serde_json::to_string(&state)?, "{}");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AccountState {
    /// The account-wide cooldown (after a 401, a 403 or a failure burst), if one runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<Cooldown>,
    /// Running rate-limit cooldowns, by model family.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub families: BTreeMap<String, FamilyState>,
    /// Set when the account was disabled; it *is* disabled unless `enabled_since` is later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<Disabled>,
    /// When the account was last explicitly enabled ([`Pool::enable`](crate::Pool::enable)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled_since: Option<Timestamp>,
    /// When the account's token was last refreshed after a 401
    /// ([`Pool::mark_refreshed`](crate::Pool::mark_refreshed)); ends 401 cooldowns that
    /// started no later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refreshed_at: Option<Timestamp>,
    /// 0 (failing) to 100 (healthy); a larger value reads as 100.
    #[serde(
        default = "full_health",
        deserialize_with = "health_up_to_100",
        skip_serializing_if = "is_full_health"
    )]
    pub health: u8,
    /// When `health`, `needs_refresh` or a streak last changed: the observation's time.
    #[serde(default, skip_serializing_if = "is_epoch")]
    pub health_at: Timestamp,
    /// A 401 was seen since the last success or refresh.
    #[serde(default, skip_serializing_if = "is_false")]
    pub needs_refresh: bool,
    /// Consecutive 401s (the account is disabled after
    /// [`disable_after_unauthorized`](crate::PolicyConfig::disable_after_unauthorized)).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unauthorized_streak: u32,
    /// Consecutive failure bursts (each doubles the next burst's cooldown).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub burst_streak: u32,
    /// The latest usage the upstream reported, by limit id (`codex`, …); see
    /// [`Pool::record_usage`](crate::Pool::record_usage).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub usage: BTreeMap<String, UsageState>,
}

/// One limit's usage of one account as last reported, and when.
///
/// Read leniently: a window whose `used_percent` is not a number from 0 to 1000 reads as
/// absent, a `window_minutes` or `resets_at` out of range as unknown.
///
/// ```
/// use rotation_policy::{Timestamp, UsageState};
/// use rotation_policy::usage::{Percent, UsageWindow};
/// let json = r#"{"observed_at":5,"primary":{"used_percent":97.5,"resets_at":60000},"secondary":{"used_percent":"junk"}}"#;
/// let state: UsageState = serde_json::from_str(json)?;
/// assert_eq!(state.primary.map(|w| w.used_percent.get()), Some(97.5));
/// assert_eq!(state.secondary, None);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UsageState {
    /// When the report was received (anything but a millisecond count reads as none).
    #[serde(default, deserialize_with = "lenient_stamp")]
    pub observed_at: Timestamp,
    /// The limit's name (for a metered limit, the model counted against it).
    #[serde(
        default,
        deserialize_with = "lenient_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub limit_name: Option<String>,
    /// The short window (about 5 hours).
    #[serde(
        default,
        deserialize_with = "lenient_window",
        skip_serializing_if = "Option::is_none"
    )]
    pub primary: Option<UsageWindow>,
    /// The long window (about a week).
    #[serde(
        default,
        deserialize_with = "lenient_window",
        skip_serializing_if = "Option::is_none"
    )]
    pub secondary: Option<UsageWindow>,
}

impl UsageState {
    /// A report received at `observed_at`, without windows yet.
    ///
    /// ```
    /// # use rotation_policy::{Timestamp, UsageState};
    /// assert_eq!(UsageState::new(Timestamp::ZERO).primary, None);
    /// ```
    pub fn new(observed_at: Timestamp) -> Self {
        UsageState {
            observed_at,
            limit_name: None,
            primary: None,
            secondary: None,
        }
    }

    /// Whether the report still says something at `now`: a window of it still runs
    /// ([`UsageWindow::ends_at`] is later). A report that says nothing can be dropped.
    ///
    /// ```
    /// # use rotation_policy::{Timestamp, UsageState};
    /// use rotation_policy::usage::{Percent, UsageWindow};
    /// let mut state = UsageState::new(Timestamp::ZERO);
    /// state.primary = Some(UsageWindow::new(Percent::FULL).with_resets_at(Timestamp::from_millis(60_000)));
    /// assert!(state.is_current(Timestamp::from_millis(59_999)));
    /// assert!(!state.is_current(Timestamp::from_millis(60_000)));
    /// ```
    pub fn is_current(&self, now: Timestamp) -> bool {
        [self.primary, self.secondary]
            .into_iter()
            .flatten()
            .any(|w| w.ends_at(self.observed_at) > now)
    }

    /// The order of reports of one limit: later first; equal times by a total order of the
    /// content, so every writer breaks ties alike.
    pub(crate) fn key(&self) -> UsageKey<'_> {
        (
            self.observed_at,
            self.primary,
            self.secondary,
            self.limit_name.as_deref(),
        )
    }

    pub(crate) fn is_plausible(&self) -> bool {
        plausible(self.observed_at)
    }
}

/// See [`UsageState::key`].
pub(crate) type UsageKey<'a> = (
    Timestamp,
    Option<UsageWindow>,
    Option<UsageWindow>,
    Option<&'a str>,
);

impl Default for AccountState {
    fn default() -> Self {
        AccountState {
            cooldown: None,
            families: BTreeMap::new(),
            disabled: None,
            enabled_since: None,
            refreshed_at: None,
            health: FULL_HEALTH,
            health_at: Timestamp::ZERO,
            needs_refresh: false,
            unauthorized_streak: 0,
            burst_streak: 0,
            usage: BTreeMap::new(),
        }
    }
}

impl AccountState {
    /// Drops what no writer can have written (see [`MAX_COOLDOWN_SPAN`] and
    /// [`LAST_PLAUSIBLE_TIME`]): an implausible cooldown, family cooldown, disable, enable or
    /// refresh time is removed, and an observation stamped after the last plausible time is
    /// reset to none. Returns whether anything was dropped. O(F).
    pub(crate) fn normalize(&mut self) -> bool {
        let mut changed = false;
        if self.cooldown.is_some_and(|c| !c.is_plausible()) {
            self.cooldown = None;
            changed = true;
        }
        let families = self.families.len();
        self.families.retain(|_, f| f.is_plausible());
        changed |= self.families.len() != families;
        if self.disabled.is_some_and(|d| !plausible(d.since)) {
            self.disabled = None;
            changed = true;
        }
        for stamp in [&mut self.enabled_since, &mut self.refreshed_at] {
            if stamp.is_some_and(|t| !plausible(t)) {
                *stamp = None;
                changed = true;
            }
        }
        if !plausible(self.health_at) {
            self.health = FULL_HEALTH;
            self.health_at = Timestamp::ZERO;
            self.needs_refresh = false;
            self.unauthorized_streak = 0;
            self.burst_streak = 0;
            changed = true;
        }
        let reports = self.usage.len();
        self.usage
            .retain(|id, u| u.is_plausible() && normalize_limit_id(id).as_deref() == Some(id));
        changed |= self.usage.len() != reports;
        changed
    }

    /// Joins `other` into `self` by the merge rules, both treated as
    /// [normalized](Self::normalize); returns whether `self` changed.
    pub(crate) fn join(&mut self, other: &AccountState) -> bool {
        let mut changed = self.normalize();
        if let Some(theirs) = other.cooldown.filter(Cooldown::is_plausible)
            && cooldown_key(Some(&theirs)) > cooldown_key(self.cooldown.as_ref())
        {
            self.cooldown = Some(theirs);
            changed = true;
        }
        changed |= raise(
            &mut self.refreshed_at,
            other.refreshed_at.filter(|&t| plausible(t)),
        );
        for (name, theirs) in other.families.iter().filter(|(_, f)| f.is_plausible()) {
            match self.families.get_mut(name) {
                Some(ours) => {
                    if family_key(theirs) > family_key(ours) {
                        ours.until = theirs.until;
                        ours.since = theirs.since;
                        changed = true;
                    }
                    changed |= raise(&mut ours.streak, theirs.streak);
                }
                None => {
                    self.families.insert(name.clone(), *theirs);
                    changed = true;
                }
            }
        }
        if let Some(theirs) = other.disabled.filter(|d| plausible(d.since))
            && disabled_key(Some(&theirs)) > disabled_key(self.disabled.as_ref())
        {
            self.disabled = Some(theirs);
            changed = true;
        }
        changed |= raise(
            &mut self.enabled_since,
            other.enabled_since.filter(|&t| plausible(t)),
        );
        if plausible(other.health_at) && other.observation_key() > self.observation_key() {
            self.health = other.health.min(FULL_HEALTH);
            self.health_at = other.health_at;
            self.needs_refresh = other.needs_refresh;
            self.unauthorized_streak = other.unauthorized_streak;
            self.burst_streak = other.burst_streak;
            changed = true;
        }
        for (id, theirs) in &other.usage {
            if !theirs.is_plausible() || normalize_limit_id(id).as_deref() != Some(id) {
                continue;
            }
            match self.usage.get_mut(id) {
                Some(ours) if ours.key() >= theirs.key() => {}
                Some(ours) => {
                    *ours = theirs.clone();
                    changed = true;
                }
                None => {
                    self.usage.insert(id.clone(), theirs.clone());
                    changed = true;
                }
            }
        }
        changed
    }

    /// Whether `self` already holds everything `other` does: merging `other` into `self`
    /// would change nothing but drop what [`normalize`](Self::normalize) drops.
    pub(crate) fn covers(&self, other: &AccountState) -> bool {
        let our_cooldown = self.cooldown.filter(Cooldown::is_plausible);
        let our_disabled = self.disabled.filter(|d| plausible(d.since));
        let stamp = |t: Option<Timestamp>| t.filter(|&t| plausible(t));
        other
            .cooldown
            .filter(Cooldown::is_plausible)
            .is_none_or(|c| cooldown_key(Some(&c)) <= cooldown_key(our_cooldown.as_ref()))
            && stamp(other.refreshed_at) <= stamp(self.refreshed_at)
            && other
                .families
                .iter()
                .filter(|(_, f)| f.is_plausible())
                .all(|(name, theirs)| {
                    self.families
                        .get(name)
                        .filter(|ours| ours.is_plausible())
                        .is_some_and(|ours| {
                            family_key(theirs) <= family_key(ours) && theirs.streak <= ours.streak
                        })
                })
            && other
                .disabled
                .filter(|d| plausible(d.since))
                .is_none_or(|d| disabled_key(Some(&d)) <= disabled_key(our_disabled.as_ref()))
            && stamp(other.enabled_since) <= stamp(self.enabled_since)
            && (!plausible(other.health_at)
                || other.observation_key() <= self.plausible_observation_key())
            && other
                .usage
                .iter()
                .filter(|(id, u)| {
                    u.is_plausible() && normalize_limit_id(id).as_deref() == Some(*id)
                })
                .all(|(id, theirs)| {
                    self.usage
                        .get(id)
                        .filter(|ours| ours.is_plausible())
                        .is_some_and(|ours| theirs.key() <= ours.key())
                })
    }

    /// The order of health observations: later first, then lower health, then the more
    /// alarming flags. Total, so ties are decided the same way by every writer.
    pub(crate) fn observation_key(&self) -> (Timestamp, Reverse<u8>, bool, u32, u32) {
        (
            self.health_at,
            Reverse(self.health.min(FULL_HEALTH)),
            self.needs_refresh,
            self.unauthorized_streak,
            self.burst_streak,
        )
    }

    /// [`observation_key`](Self::observation_key) after [`normalize`](Self::normalize).
    fn plausible_observation_key(&self) -> (Timestamp, Reverse<u8>, bool, u32, u32) {
        if plausible(self.health_at) {
            self.observation_key()
        } else {
            AccountState::default().observation_key()
        }
    }
}

/// An account-wide cooldown: the account serves nothing until `until`.
///
/// ```
/// use rotation_policy::{Cooldown, CooldownReason, Timestamp};
/// let c = Cooldown::new(Timestamp::from_millis(60_000), CooldownReason::Forbidden, Timestamp::ZERO);
/// assert_eq!(serde_json::to_string(&c)?, r#"{"until":60000,"reason":"forbidden"}"#);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Cooldown {
    /// When the account is usable again.
    pub until: Timestamp,
    /// Why it cools down.
    #[serde(deserialize_with = "cooldown_reason_or_nearest")]
    pub reason: CooldownReason,
    /// When this cooldown was set (decides whether a later refresh ends a 401 cooldown).
    #[serde(default, skip_serializing_if = "is_epoch")]
    pub since: Timestamp,
}

impl Cooldown {
    /// A cooldown until `until` for `reason`, set at `since`.
    ///
    /// ```
    /// # use rotation_policy::{Cooldown, CooldownReason, Timestamp};
    /// let c = Cooldown::new(Timestamp::from_millis(9), CooldownReason::FailureBurst, Timestamp::from_millis(1));
    /// assert_eq!(c.until, Timestamp::from_millis(9));
    /// ```
    pub fn new(until: Timestamp, reason: CooldownReason, since: Timestamp) -> Self {
        Cooldown {
            until,
            reason,
            since,
        }
    }

    /// Whether some writer can have set this cooldown (see [`MAX_COOLDOWN_SPAN`] and
    /// [`LAST_PLAUSIBLE_TIME`]); merges treat any other as absent.
    pub(crate) fn is_plausible(&self) -> bool {
        plausible(self.until) && plausible(self.since) && within_span(self.since, self.until)
    }
}

/// A rate-limit cooldown of one account for one model family.
///
/// ```
/// use rotation_policy::{FamilyState, Timestamp};
/// let f = FamilyState::new(Timestamp::from_millis(30_000), 2).with_since(Timestamp::from_millis(1));
/// assert_eq!(serde_json::to_string(&f)?, r#"{"until":30000,"streak":2,"since":1}"#);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FamilyState {
    /// When the account may serve the family again.
    pub until: Timestamp,
    /// Consecutive rate limits behind it (doubles the next backoff).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub streak: u32,
    /// When the cooldown started (the 429 was seen); `None` when unknown (documents written
    /// before this field existed). A merged cooldown is bounded from its start, so knowing
    /// it keeps a long cooldown from being restarted by every merge; see the
    /// [merge rules](self#merge-rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
}

impl FamilyState {
    /// A family cooldown until `until` after `streak` rate limits in a row, start unknown
    /// (add it with [`with_since`](Self::with_since)).
    ///
    /// ```
    /// # use rotation_policy::{FamilyState, Timestamp};
    /// let f = FamilyState::new(Timestamp::ZERO, 1);
    /// assert_eq!((f.streak, f.since), (1, None));
    /// ```
    pub fn new(until: Timestamp, streak: u32) -> Self {
        FamilyState {
            until,
            streak,
            since: None,
        }
    }

    /// The same cooldown, started at `since`.
    ///
    /// ```
    /// # use rotation_policy::{FamilyState, Timestamp};
    /// let f = FamilyState::new(Timestamp::from_millis(9), 1).with_since(Timestamp::from_millis(2));
    /// assert_eq!(f.since, Some(Timestamp::from_millis(2)));
    /// ```
    #[must_use]
    pub fn with_since(mut self, since: Timestamp) -> Self {
        self.since = Some(since);
        self
    }

    /// Whether some writer can have set this cooldown (see [`MAX_COOLDOWN_SPAN`] and
    /// [`LAST_PLAUSIBLE_TIME`]); merges treat any other as absent.
    pub(crate) fn is_plausible(&self) -> bool {
        plausible(self.until)
            && self
                .since
                .is_none_or(|since| plausible(since) && within_span(since, self.until))
    }
}

/// Why and since when an account is disabled.
///
/// ```
/// use rotation_policy::{Disabled, DisabledReason, Timestamp};
/// let d = Disabled::new(DisabledReason::LoginRequired, Timestamp::from_millis(7));
/// assert_eq!(serde_json::to_string(&d)?, r#"{"reason":"login-required","since":7}"#);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Disabled {
    /// Why.
    #[serde(deserialize_with = "disabled_reason_or_nearest")]
    pub reason: DisabledReason,
    /// When the account was disabled (for this reason).
    #[serde(default, skip_serializing_if = "is_epoch")]
    pub since: Timestamp,
}

impl Disabled {
    /// Disabled for `reason` at `since`.
    ///
    /// ```
    /// # use rotation_policy::{Disabled, DisabledReason, Timestamp};
    /// assert_eq!(Disabled::new(DisabledReason::Manual, Timestamp::ZERO).reason, DisabledReason::Manual);
    /// ```
    pub fn new(reason: DisabledReason, since: Timestamp) -> Self {
        Disabled { reason, since }
    }
}

/// What [`Pool::merge_state`](crate::Pool::merge_state) did.
///
/// ```
/// use rotation_policy::{AccountId, AccountState, PolicyConfig, PolicyState, Pool, Timestamp};
///
/// let mut pool = Pool::new(PolicyConfig::default(), 0)?;
/// pool.add(AccountId::new("a")?)?;
/// let mut state = PolicyState::default();
/// state.accounts.insert(AccountId::new("a")?, AccountState::default());
/// state.accounts.insert(AccountId::new("gone")?, AccountState::default());
/// let report = pool.merge_state(&state, Timestamp::ZERO);
/// assert_eq!((report.applied, report.changed), (1, 0));
/// assert_eq!(report.unknown, vec![AccountId::new("gone")?]);
/// # Ok::<(), rotation_policy::PolicyError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MergeReport {
    /// Accounts of the document that are in the pool (merged, changed or not).
    pub applied: usize,
    /// Accounts whose state in the pool the merge changed (their selection may differ now).
    pub changed: usize,
    /// Accounts of the document that are not in the pool: ignored.
    pub unknown: Vec<AccountId>,
    /// Cooldowns that were cut to this pool's longest from their start (see the merge
    /// guards).
    pub capped: usize,
    /// Records ignored because they were stamped more than `max_cooldown` after `now`.
    pub ignored_future: usize,
    /// Running cooldowns ignored because no writer can have set them: ending after
    /// [`LAST_PLAUSIBLE_TIME`] or running longer than [`MAX_COOLDOWN_SPAN`] from their start.
    pub ignored_implausible: usize,
    /// Running family cooldowns ignored because the pool does not track that model family
    /// and merged state may not add it (see the merge guards and
    /// [`max_families`](crate::PolicyConfig::max_families)).
    pub ignored_families: usize,
}

/// The order of account-wide cooldowns: later end, then the reason's rank, then later start.
pub(crate) fn cooldown_key(c: Option<&Cooldown>) -> Option<(Timestamp, u8, Timestamp)> {
    c.map(|c| (c.until, cooldown_rank(c.reason), c.since))
}

/// The order of family cooldowns: one with a known start first (so a cooldown bounded by
/// its start wins over one nothing bounds, whatever their ends), then the later end, then
/// the later start.
pub(crate) fn family_key(f: &FamilyState) -> (bool, Timestamp, Option<Timestamp>) {
    (f.since.is_some(), f.until, f.since)
}

/// Whether `t` can be a real time (no later than [`LAST_PLAUSIBLE_TIME`]).
pub(crate) fn plausible(t: Timestamp) -> bool {
    t <= LAST_PLAUSIBLE_TIME
}

/// Whether a cooldown from `since` to `until` runs no longer than [`MAX_COOLDOWN_SPAN`].
fn within_span(since: Timestamp, until: Timestamp) -> bool {
    until.saturating_duration_since(since) <= MAX_COOLDOWN_SPAN
}

/// The order of disables: later first, then the reason's rank.
pub(crate) fn disabled_key(d: Option<&Disabled>) -> Option<(Timestamp, u8)> {
    d.map(|d| (d.since, disabled_rank(d.reason)))
}

/// Equal-time tie-break between cooldown reasons: the one a refresh cannot end ranks higher.
pub(crate) fn cooldown_rank(reason: CooldownReason) -> u8 {
    match reason {
        CooldownReason::Unauthorized => 0,
        CooldownReason::FailureBurst => 1,
        CooldownReason::Forbidden => 2,
    }
}

/// Equal-time tie-break between disable reasons: a gone login ranks highest.
pub(crate) fn disabled_rank(reason: DisabledReason) -> u8 {
    match reason {
        DisabledReason::Manual => 0,
        DisabledReason::Unauthorized => 1,
        DisabledReason::LoginRequired => 2,
        DisabledReason::Deactivated => 3,
    }
}

/// Raises `ours` to `theirs` if that is larger; returns whether it did.
fn raise<T: Ord + Copy>(ours: &mut T, theirs: T) -> bool {
    if theirs > *ours {
        *ours = theirs;
        true
    } else {
        false
    }
}

fn current_version() -> u32 {
    POLICY_STATE_VERSION
}

fn full_health() -> u8 {
    FULL_HEALTH
}

fn is_full_health(health: &u8) -> bool {
    *health == FULL_HEALTH
}

fn is_epoch(t: &Timestamp) -> bool {
    *t == Timestamp::ZERO
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A usage window, or `None` for anything that is not one (see [`UsageState`]). Read from
/// the raw text field by field, so a number no `f64` holds (`1e999`) is an absent field,
/// not a document that cannot be read.
fn lenient_window<'de, D: Deserializer<'de>>(d: D) -> Result<Option<UsageWindow>, D::Error> {
    let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
    let Ok(fields) =
        serde_json::from_str::<BTreeMap<String, Box<serde_json::value::RawValue>>>(raw.get())
    else {
        return Ok(None);
    };
    let field = |name: &str| fields.get(name).map(|raw| raw.get());
    let Some(used) = field("used_percent")
        .and_then(|raw| serde_json::from_str::<f64>(raw).ok())
        .and_then(Percent::new)
    else {
        return Ok(None);
    };
    let mut window = UsageWindow::new(used);
    if let Some(minutes) = field("window_minutes")
        .and_then(|raw| serde_json::from_str::<u32>(raw).ok())
        .filter(|m| *m <= MAX_WINDOW_MINUTES)
    {
        window = window.with_window_minutes(minutes);
    }
    if let Some(at) = field("resets_at").and_then(|raw| serde_json::from_str::<u64>(raw).ok()) {
        window = window.with_resets_at(Timestamp::from_millis(at));
    }
    Ok(Some(window))
}

/// A short printable text, or `None` for anything else.
fn lenient_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
    Ok(serde_json::from_str::<String>(raw.get())
        .ok()
        .and_then(|text| short_text(&text)))
}

/// A time, or [`Timestamp::ZERO`] (none) for anything that is not a millisecond count.
fn lenient_stamp<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
    let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
    Ok(serde_json::from_str::<u64>(raw.get()).map_or(Timestamp::ZERO, Timestamp::from_millis))
}

fn health_up_to_100<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    Ok(u8::deserialize(d)?.min(FULL_HEALTH))
}

/// A reason by name; one this version does not know reads as `unknown` (a newer writer's).
fn reason_or<'de, D: Deserializer<'de>, R: Deserialize<'de>>(
    d: D,
    unknown: R,
) -> Result<R, D::Error> {
    let name = String::deserialize(d)?;
    let known: Result<R, serde::de::value::Error> = R::deserialize(name.into_deserializer());
    Ok(known.unwrap_or(unknown))
}

fn disabled_reason_or_nearest<'de, D: Deserializer<'de>>(d: D) -> Result<DisabledReason, D::Error> {
    reason_or(d, DisabledReason::Manual)
}

fn cooldown_reason_or_nearest<'de, D: Deserializer<'de>>(d: D) -> Result<CooldownReason, D::Error> {
    reason_or(d, CooldownReason::FailureBurst)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Small times (ties are common), plus a span just past [`MAX_COOLDOWN_SPAN`] from them
    /// and a time past [`LAST_PLAUSIBLE_TIME`]: what normalizing drops.
    fn t() -> impl Strategy<Value = Timestamp> {
        let span = u64::try_from(MAX_COOLDOWN_SPAN.as_millis()).unwrap_or(u64::MAX);
        prop_oneof![
            8 => (0u64..4).prop_map(Timestamp::from_millis),
            1 => Just(Timestamp::from_millis(span + 2)),
            1 => Just(Timestamp::from_millis(u64::MAX)),
        ]
    }

    /// A usage window: few percentages, lengths and resets, so equal windows are common.
    fn window() -> impl Strategy<Value = UsageWindow> {
        (
            prop_oneof![Just(0.0), Just(50.0), Just(95.0), Just(100.0)],
            proptest::option::of(prop_oneof![Just(5u32), Just(300)]),
            proptest::option::of(t()),
        )
            .prop_map(|(used, minutes, resets)| {
                let mut w = UsageWindow::new(Percent::new(used).unwrap_or(Percent::ZERO));
                if let Some(m) = minutes {
                    w = w.with_window_minutes(m);
                }
                if let Some(at) = resets {
                    w = w.with_resets_at(at);
                }
                w
            })
    }

    /// Usage reports by limit id (one not normalized, which every merge ignores), with
    /// small `observed_at`s so that ties between reports are common, one report often
    /// repeated, so that both sides often hold the same one, and its copy from the future.
    fn usage() -> impl Strategy<Value = BTreeMap<String, UsageState>> {
        let report = (
            t(),
            proptest::option::of(prop_oneof![Just("a"), Just("b")]),
            proptest::option::of(window()),
            proptest::option::of(window()),
        )
            .prop_map(|(observed_at, name, primary, secondary)| {
                let mut u = UsageState::new(observed_at);
                u.limit_name = name.map(str::to_owned);
                u.primary = primary;
                u.secondary = secondary;
                u
            });
        let mut usual = UsageState::new(Timestamp::from_millis(1));
        usual.primary = Percent::new(95.0).map(UsageWindow::new);
        // Stamped after year 9999: what normalizing drops, on either side.
        let mut junk = usual.clone();
        junk.observed_at = Timestamp::from_millis(u64::MAX);
        proptest::collection::btree_map(
            prop_oneof![Just("codex"), Just("codex_x"), Just("Codex")].prop_map(str::to_owned),
            prop_oneof![6 => report, 2 => Just(usual), 1 => Just(junk)],
            0..3,
        )
    }

    /// Any account state; one in four holds usage reports only, so that the other side
    /// often covers all else and the usage rules alone decide.
    fn account() -> impl Strategy<Value = AccountState> {
        let usage_only = usage().prop_map(|usage| AccountState {
            usage,
            ..AccountState::default()
        });
        prop_oneof![3 => any_account(), 1 => usage_only]
    }

    fn any_account() -> impl Strategy<Value = AccountState> {
        (
            proptest::option::of((t(), any::<bool>(), t())),
            proptest::collection::btree_map(
                "[ab]",
                (t(), 0u32..2, proptest::option::of(t())),
                0..2,
            ),
            proptest::option::of((any::<bool>(), t())),
            (proptest::option::of(t()), proptest::option::of(t())),
            (0u8..=100, t(), any::<bool>(), 0u32..2, 0u32..2),
            usage(),
        )
            .prop_map(
                |(cooldown, families, disabled, (enabled, refreshed), obs, usage)| {
                    let (health, health_at, needs_refresh, unauthorized_streak, burst_streak) = obs;
                    AccountState {
                        cooldown: cooldown.map(|(until, forbidden, since)| {
                            let reason = if forbidden {
                                CooldownReason::Forbidden
                            } else {
                                CooldownReason::Unauthorized
                            };
                            Cooldown::new(until, reason, since)
                        }),
                        families: families
                            .into_iter()
                            .map(|(name, (until, streak, since))| {
                                (
                                    name,
                                    FamilyState {
                                        until,
                                        streak,
                                        since,
                                    },
                                )
                            })
                            .collect(),
                        disabled: disabled.map(|(gone, since)| {
                            let reason = if gone {
                                DisabledReason::LoginRequired
                            } else {
                                DisabledReason::Manual
                            };
                            Disabled::new(reason, since)
                        }),
                        enabled_since: enabled,
                        refreshed_at: refreshed,
                        health,
                        health_at,
                        needs_refresh,
                        unauthorized_streak,
                        burst_streak,
                        usage,
                    }
                },
            )
    }

    proptest! {
        /// `covers` (used to decide whether a merge must be written back) says exactly
        /// whether joining would change more than normalizing does; `join` says whether it
        /// changed anything.
        #[test]
        fn covers_is_join_changes_nothing(a in account(), b in account()) {
            let mut normal = a.clone();
            normal.normalize();
            let mut joined = normal.clone();
            let changed = joined.join(&b);
            prop_assert_eq!(a.covers(&b), !changed);
            prop_assert_eq!(changed, joined != normal);
            prop_assert!(joined.covers(&a) && joined.covers(&b));
            let mut direct = a.clone();
            prop_assert_eq!(direct.join(&b), direct != a);
            prop_assert_eq!(direct, joined);
        }
    }
}
