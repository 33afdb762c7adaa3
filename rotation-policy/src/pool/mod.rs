//! The pool: the public API, session affinity, and the outcome rules. The account record
//! lives in `account`, the per-family availability index in `index`, export and merge of
//! shared state in `shared`.

mod account;
mod index;
mod shared;
mod usage;

pub use usage::USAGE_REFRESH;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use account::{Account, PerFamily, adopt_family, cool, count, mark_changed, refund_token};
use index::{Family, Place, Rules};

use crate::config::Strategy;
use crate::rng::SplitMix64;
use crate::status::{
    AccountStatus, CooldownReason, Counters, DisabledReason, FamilyCooldown, OutcomeCounts,
    PoolStatus,
};
use crate::time::ceil_millis;
use crate::{
    AccountId, Decision, Outcome, PolicyConfig, PolicyError, Request, Selection, Timestamp,
};

/// Health bounds and the change each outcome makes.
const HEALTH_MAX: u8 = 100;
const HEALTH_SUCCESS: u8 = 10;
const HEALTH_RATE_LIMITED: u8 = 15;
const HEALTH_FAILURE: u8 = 20;
const HEALTH_AUTH: u8 = 40;

/// Health-weighted picking is stride scheduling: each hand-out advances the account's pass by
/// `HEALTH_STRIDE / (health + 1)`, and the smallest pass is picked next. Over time each usable
/// account gets a share of picks proportional to `health + 1`, so a failing account gets
/// little traffic but never none (it can earn its health back).
const HEALTH_STRIDE: u64 = 1_000_000;

/// The family name shared by model families beyond `max_families`.
const OVERFLOW_FAMILY: &str = "*";

/// A usage limit the pool has seen reported (index 0 is always the default limit).
#[derive(Clone, Debug)]
struct Limit {
    id: String,
    /// The latest name reported for it: model families of this name count against it.
    name: Option<String>,
    /// When the report that gave `name` was received (ms); see `Pool::limit_index`.
    named_at: u64,
}

#[derive(Clone, Debug)]
struct Binding {
    slot: u32,
    generation: u32,
    expires: u64,
    seq: u64,
}

/// A pool of accounts and the rotation policy over them. See the [crate docs](crate) for the
/// request loop, the rules and their complexity.
///
/// All methods take `&mut self` or `&self` and never block or read a clock; a concurrent
/// proxy keeps the pool behind one `Mutex` and holds it across `select` + `consume` so two
/// requests cannot both take an account's last token.
#[derive(Clone, Debug)]
pub struct Pool {
    config: PolicyConfig,
    rules: Rules,
    rng: SplitMix64,
    /// Latest `now` seen (ms).
    clock: u64,
    slots: Vec<Option<Account>>,
    /// Generation of each slot; bumped when its account is removed.
    generations: Vec<u32>,
    free: Vec<u32>,
    by_id: HashMap<AccountId, u32>,
    families: Vec<Family>,
    family_ids: HashMap<String, usize>,
    /// Usage limits seen, at most [`MAX_LIMITS`](crate::usage::MAX_LIMITS).
    limits: Vec<Limit>,
    sessions: HashMap<String, Binding>,
    /// `(expires, seq) -> session key`, to drop expired bindings in order.
    expiry: BTreeMap<(u64, u64), String>,
    session_seq: u64,
    use_seq: u64,
    order_seq: u64,
    /// Pass of the latest health-weighted pick; accounts behind it catch up to it when picked.
    pass_clock: u64,
    counters: Counters,
    /// Slots whose account's shared state changed since the last `take_changes` (each
    /// account at most once; see `Account::changed`).
    changed: Vec<u32>,
}

impl Pool {
    /// An empty pool. `seed` feeds the jitter generator: the same seed, config and call
    /// sequence always give the same decisions.
    ///
    /// ```
    /// use rotation_policy::{PolicyConfig, Pool};
    /// let pool = Pool::new(PolicyConfig::default(), 7)?;
    /// assert!(pool.is_empty());
    /// # Ok::<(), rotation_policy::PolicyError>(())
    /// ```
    pub fn new(config: PolicyConfig, seed: u64) -> Result<Self, PolicyError> {
        config.validate()?;
        Ok(Pool {
            rules: Rules::new(&config),
            config,
            rng: SplitMix64::new(seed),
            clock: 0,
            slots: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            families: Vec::new(),
            family_ids: HashMap::new(),
            limits: vec![Limit {
                id: crate::usage::DEFAULT_LIMIT.to_owned(),
                name: None,
                named_at: 0,
            }],
            sessions: HashMap::new(),
            expiry: BTreeMap::new(),
            session_seq: 0,
            use_seq: 0,
            order_seq: 0,
            pass_clock: 0,
            counters: Counters::default(),
            changed: Vec::new(),
        })
    }

    /// The configuration the pool runs with.
    ///
    /// ```
    /// # use rotation_policy::{PolicyConfig, Pool};
    /// let pool = Pool::new(PolicyConfig::default(), 0)?;
    /// assert_eq!(pool.config().max_attempts, 3);
    /// # Ok::<(), rotation_policy::PolicyError>(())
    /// ```
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// Number of accounts (enabled or not).
    ///
    /// ```
    /// # use rotation_policy::{AccountId, PolicyConfig, Pool};
    /// let mut pool = Pool::new(PolicyConfig::default(), 0)?;
    /// pool.add(AccountId::new("a")?)?;
    /// assert_eq!(pool.len(), 1);
    /// # Ok::<(), rotation_policy::PolicyError>(())
    /// ```
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether the pool has no accounts.
    ///
    /// ```
    /// # use rotation_policy::{PolicyConfig, Pool};
    /// assert!(Pool::new(PolicyConfig::default(), 0)?.is_empty());
    /// # Ok::<(), rotation_policy::PolicyError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Whether `id` is in the pool.
    ///
    /// ```
    /// # use rotation_policy::{AccountId, PolicyConfig, Pool};
    /// let mut pool = Pool::new(PolicyConfig::default(), 0)?;
    /// let id = AccountId::new("a")?;
    /// pool.add(id.clone())?;
    /// assert!(pool.contains(&id));
    /// # Ok::<(), rotation_policy::PolicyError>(())
    /// ```
    pub fn contains(&self, id: &AccountId) -> bool {
        self.by_id.contains_key(id)
    }

    /// Adds an enabled account with a full bucket and full health, usable at once.
    /// O(F log n) for F model families seen so far.
    ///
    /// ```
    /// # use rotation_policy::{AccountId, PolicyConfig, PolicyError, Pool};
    /// let mut pool = Pool::new(PolicyConfig::default(), 0)?;
    /// pool.add(AccountId::new("a")?)?;
    /// assert!(matches!(pool.add(AccountId::new("a")?), Err(PolicyError::DuplicateAccount { .. })));
    /// # Ok::<(), rotation_policy::PolicyError>(())
    /// ```
    pub fn add(&mut self, id: AccountId) -> Result<(), PolicyError> {
        if self.by_id.contains_key(&id) {
            return Err(PolicyError::DuplicateAccount { id });
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let slot =
                    u32::try_from(self.slots.len()).map_err(|_| PolicyError::InvalidConfig {
                        field: "accounts",
                        reason: "would exceed 4,294,967,295 accounts".to_owned(),
                    })?;
                self.slots.push(None);
                self.generations.push(0);
                slot
            }
        };
        self.order_seq += 1;
        let mut account = Account {
            id: id.clone(),
            order: self.order_seq,
            generation: self.generations[slot as usize],
            disabled: None,
            disabled_since: 0,
            enabled_since: None,
            cooldown_until: 0,
            cooldown_reason: None,
            cooldown_since: 0,
            refreshed_at: None,
            health: HEALTH_MAX,
            needs_refresh: false,
            unauthorized_streak: 0,
            burst_streak: 0,
            health_at: 0,
            // A new account's state is the default, which every shared document already
            // implies: nothing to write.
            changed: false,
            failures: VecDeque::new(),
            last_used: 0,
            pass: 0,
            bucket_full_at: 0,
            in_flight: 0,
            attempts: 0,
            outcomes: OutcomeCounts::default(),
            families: vec![PerFamily::NEW; self.families.len()],
            usage: Vec::new(),
            steps: Vec::new(),
        };
        self.rules
            .place_everywhere(&mut account, &mut self.families, slot, self.clock);
        self.slots[slot as usize] = Some(account);
        self.by_id.insert(id, slot);
        Ok(())
    }

    /// Removes an account and everything known about it. Session bindings to it lapse.
    ///
    /// ```
    /// # use rotation_policy::{AccountId, PolicyConfig, Pool};
    /// let mut pool = Pool::new(PolicyConfig::default(), 0)?;
    /// let id = AccountId::new("a")?;
    /// pool.add(id.clone())?;
    /// pool.remove(&id)?;
    /// assert!(pool.remove(&id).is_err());
    /// # Ok::<(), rotation_policy::PolicyError>(())
    /// ```
    pub fn remove(&mut self, id: &AccountId) -> Result<(), PolicyError> {
        let slot = self.slot_of(id)?;
        if let Some(mut account) = self.slots[slot as usize].take() {
            account.disabled = Some(DisabledReason::Manual);
            self.rules
                .place_everywhere(&mut account, &mut self.families, slot, self.clock);
        }
        self.by_id.remove(id);
        let generation = &mut self.generations[slot as usize];
        *generation = generation.wrapping_add(1);
        self.free.push(slot);
        Ok(())
    }

    /// Takes an account out of selection until [`enable`](Self::enable); its state is kept.
    /// The same as [`disable_for`](Self::disable_for) with [`DisabledReason::Manual`]: an
    /// account already disabled keeps its reason.
    ///
    /// ```
    /// # use rotation_policy::{AccountId, PolicyConfig, Pool, Request, Selection, Timestamp};
    /// let mut pool = Pool::new(PolicyConfig::default(), 0)?;
    /// let id = AccountId::new("a")?;
    /// pool.add(id.clone())?;
    /// pool.disable(&id)?;
    /// assert_eq!(pool.select(&mut Request::new("gpt-5"), Timestamp::ZERO), Selection::NoAccount);
    /// # Ok::<(), rotation_policy::PolicyError>(())
    /// ```
    pub fn disable(&mut self, id: &AccountId) -> Result<(), PolicyError> {
        self.disable_for(id, DisabledReason::Manual)
    }

    /// Takes an account out of selection for `reason` until [`enable`](Self::enable).
    ///
    /// A gone login ([`DisabledReason::LoginRequired`], [`DisabledReason::Deactivated`] —
    /// e.g. the refresh token was reused or revoked) replaces any other reason, because it
    /// is news every process must act on; any other reason keeps the reason of an account
    /// already disabled. The disable is stamped with the pool's clock (the latest `now` it
    /// has seen, never before the last [`enable`](Self::enable)), which orders it against
    /// enables from other processes in [`merge_state`](Self::merge_state).
    ///
    /// ```
    /// # use rotation_policy::{AccountId, DisabledReason, PolicyConfig, Pool, Timestamp};
    /// let mut pool = Pool::new(PolicyConfig::default(), 0)?;
    /// let id = AccountId::new("a")?;
    /// pool.add(id.clone())?;
    /// pool.disable(&id)?;
    /// pool.disable_for(&id, DisabledReason::LoginRequired)?; // replaces Manual
    /// pool.disable_for(&id, DisabledReason::Manual)?; // kept: LoginRequired
    /// let status = pool.account_status(&id, Timestamp::ZERO).unwrap();
    /// assert_eq!(status.disabled, Some(DisabledReason::LoginRequired));
    /// # Ok::<(), rotation_policy::PolicyError>(())
    /// ```
    pub fn disable_for(
        &mut self,
        id: &AccountId,
        reason: DisabledReason,
    ) -> Result<(), PolicyError> {
        self.update(id, |account, clock| account.disable_for(reason, clock))
    }

    /// Makes a disabled account selectable again, whatever the reason (running cooldowns
    /// still apply), and resets its count of consecutive 401s. The enable is stamped with the
    /// pool's clock and after the disable it clears, so it wins a merge against that disable.
    ///
    /// ```
    /// # use rotation_policy::{AccountId, PolicyConfig, Pool, Request, Selection, Timestamp};
    /// let mut pool = Pool::new(PolicyConfig::default(), 0)?;
    /// let id = AccountId::new("a")?;
    /// pool.add(id.clone())?;
    /// pool.disable(&id)?;
    /// pool.enable(&id)?;
    /// assert_eq!(pool.select(&mut Request::new("gpt-5"), Timestamp::ZERO), Selection::Account(id));
    /// # Ok::<(), rotation_policy::PolicyError>(())
    /// ```
    pub fn enable(&mut self, id: &AccountId) -> Result<(), PolicyError> {
        self.update(id, |account, clock| account.enable(clock))
    }

    /// Tells the pool the account's token was refreshed after a 401: clears `needs_refresh`
    /// and ends a running 401 cooldown (other cooldowns stay). The refresh time is shared
    /// state: merged into other pools it ends their 401 cooldowns that started no later.
    ///
    /// ```
    /// # use rotation_policy::{AccountId, Outcome, PolicyConfig, Pool, Request, Selection, Timestamp};
    /// let mut pool = Pool::new(PolicyConfig::default(), 0)?;
    /// let id = AccountId::new("a")?;
    /// pool.add(id.clone())?;
    /// let mut request = Request::new("gpt-5");
    /// pool.select(&mut request, Timestamp::ZERO);
    /// pool.report(&mut request, &id, Outcome::Unauthorized, Timestamp::ZERO);
    /// assert!(matches!(pool.select(&mut Request::new("gpt-5"), Timestamp::ZERO), Selection::Exhausted { .. }));
    /// pool.mark_refreshed(&id, Timestamp::ZERO)?;
    /// assert_eq!(pool.select(&mut Request::new("gpt-5"), Timestamp::ZERO), Selection::Account(id));
    /// # Ok::<(), rotation_policy::PolicyError>(())
    /// ```
    pub fn mark_refreshed(&mut self, id: &AccountId, now: Timestamp) -> Result<(), PolicyError> {
        self.tick(now);
        self.update(id, |account, clock| {
            let before = account.observation();
            account.needs_refresh = false;
            let mut refreshed_at = clock.max(account.refreshed_at.unwrap_or(0));
            let mut changed = false;
            if account.cooldown_reason == Some(CooldownReason::Unauthorized) {
                // Never before the cooldown it ends, or a merge elsewhere would keep it.
                refreshed_at = refreshed_at.max(account.cooldown_since);
                account.cooldown_until = 0;
                account.cooldown_reason = None;
                changed = true;
            }
            changed |= account.refreshed_at != Some(refreshed_at);
            account.refreshed_at = Some(refreshed_at);
            account.observed(before, clock) | changed
        })
    }

    /// Starts a rate-limit cooldown of `id` for `family` that ends at `until`; a running
    /// cooldown is never shortened. Unlike [`report`](Self::report) it counts no outcome and
    /// changes no health or streak: it is for cooldowns learned elsewhere, e.g. saved by an
    /// earlier run, whose start is not known.
    ///
    /// Such a cooldown is treated like a merged family cooldown without a `since` (see the
    /// [merge rules](crate::state#merge-rules)): it starts at `now` and runs at most
    /// [`max_cooldown`](PolicyConfig::max_cooldown), and restoring the same end (or an
    /// earlier one) again does nothing, so calling this again later never restarts it.
    ///
    /// ```
    /// # use rotation_policy::{AccountId, PolicyConfig, Pool, Request, Selection, Timestamp};
    /// let mut pool = Pool::new(PolicyConfig::default(), 0)?;
    /// let (a, b) = (AccountId::new("a")?, AccountId::new("b")?);
    /// pool.add(a.clone())?;
    /// pool.add(b.clone())?;
    /// pool.restore_cooldown(&a, "gpt-5", Timestamp::from_millis(30_000), Timestamp::ZERO)?;
    /// assert_eq!(pool.select(&mut Request::new("gpt-5"), Timestamp::ZERO), Selection::Account(b));
    /// assert_eq!(pool.status(Timestamp::ZERO).counters.outcomes.total(), 0);
    /// # Ok::<(), rotation_policy::PolicyError>(())
    /// ```
    pub fn restore_cooldown(
        &mut self,
        id: &AccountId,
        family: &str,
        until: Timestamp,
        now: Timestamp,
    ) -> Result<(), PolicyError> {
        self.tick(now);
        let slot = self.slot_of(id)?;
        let family = self.family_index(family);
        let clock = self.clock;
        if let Some(account) = self.slots[slot as usize].as_mut() {
            let state = &mut account.families[family];
            if adopt_family(
                state,
                until.as_millis(),
                None,
                0,
                clock,
                self.rules.max_cooldown,
            )
            .changed
            {
                mark_changed(&mut self.changed, account, slot);
            }
            self.rules
                .place(account, &mut self.families, slot, family, clock);
        }
        Ok(())
    }

    /// Picks the account for the next attempt of `request`, or says why there is none.
    ///
    /// Only enabled accounts that are out of every cooldown for the request's family, have
    /// a whole token, and have not been tried for this request are candidates. A session's
    /// bound account wins while it is a candidate; otherwise the [`Strategy`] picks and the
    /// session is (re)bound. The pick counts as an attempt of `request`; once the request
    /// has used [`max_attempts`](PolicyConfig::max_attempts), the answer is
    /// [`Selection::NoAccount`].
    /// O(log n + F log n) amortized; see the crate docs.
    ///
    /// ```
    /// # use rotation_policy::{AccountId, PolicyConfig, Pool, Request, Selection, Timestamp};
    /// let mut pool = Pool::new(PolicyConfig::default(), 0)?;
    /// let a = AccountId::new("a")?;
    /// pool.add(a.clone())?;
    /// let mut request = Request::new("gpt-5");
    /// assert_eq!(pool.select(&mut request, Timestamp::ZERO), Selection::Account(a));
    /// assert_eq!(request.attempts(), 1);
    /// // The only account was tried by this request already:
    /// assert_eq!(pool.select(&mut request, Timestamp::ZERO), Selection::NoAccount);
    /// # Ok::<(), rotation_policy::PolicyError>(())
    /// ```
    pub fn select(&mut self, request: &mut Request, now: Timestamp) -> Selection {
        self.tick(now);
        if request.attempts >= self.rules.max_attempts {
            // The budget holds even for a caller that ignores `report`'s decision.
            self.counters.exhausted += 1;
            return Selection::NoAccount;
        }
        let family = self.family_index(&request.family);
        self.promote(family);
        self.prune_sessions();

        if let Some(pinned) = &request.account {
            return match self.pinned_place(family, request, pinned) {
                Ok(slot) => self.hand_out(request, family, slot, false, false),
                Err(answer) => {
                    self.counters.exhausted += 1;
                    answer
                }
            };
        }

        let mut bound_live = false;
        let mut chosen = None;
        if let (Some(_), Some(session)) = (self.rules.session_ttl, request.session.as_ref())
            && let Some(binding) = self.sessions.get(session)
        {
            bound_live = true;
            if let Some(Some(account)) = self.slots.get(binding.slot as usize)
                && account.generation == binding.generation
                && matches!(account.families[family].place, Place::Ready(_))
                && !request.tried.contains(&(binding.slot, binding.generation))
            {
                chosen = Some(binding.slot);
            }
        }
        let by_affinity = chosen.is_some();
        if chosen.is_none() {
            self.renew_keys(family);
        }
        let Some(slot) = chosen.or_else(|| self.pick(family, request)) else {
            self.counters.exhausted += 1;
            return match self.earliest(family, Some(request)) {
                Some(at) => Selection::Exhausted {
                    retry_after: Duration::from_millis(at.saturating_sub(self.clock)),
                },
                None => Selection::NoAccount,
            };
        };
        self.hand_out(request, family, slot, by_affinity, bound_live)
    }

    /// Where the account a request is pinned to stands: `Ok(slot)` when it may serve now,
    /// else the answer to give.
    fn pinned_place(
        &self,
        family: usize,
        request: &Request,
        pinned: &AccountId,
    ) -> Result<u32, Selection> {
        let Some(&slot) = self.by_id.get(pinned) else {
            return Err(Selection::NoAccount);
        };
        if !self.is_untried(request, slot) {
            return Err(Selection::NoAccount);
        }
        match self.slots[slot as usize]
            .as_ref()
            .map(|a| a.families[family].place)
        {
            Some(Place::Ready(_)) => Ok(slot),
            Some(Place::Waiting(at)) => Err(Selection::Exhausted {
                retry_after: Duration::from_millis(at.saturating_sub(self.clock)),
            }),
            Some(Place::Absent) | None => Err(Selection::NoAccount),
        }
    }

    /// Hands the account in `slot` out for the next attempt of `request`: the strategy's
    /// bookkeeping, the request's attempts, counters and the session binding.
    fn hand_out(
        &mut self,
        request: &mut Request,
        family: usize,
        slot: u32,
        by_affinity: bool,
        bound_live: bool,
    ) -> Selection {
        let rotated = !request.tried.is_empty() || (bound_live && !by_affinity);
        self.use_seq += 1;
        let Some(account) = self.slots[slot as usize].as_mut() else {
            // ok: indexed slots always hold an account; answer conservatively if not.
            return Selection::NoAccount;
        };
        // The strategy's own picks move its order; a session's bound account and a pinned
        // request's account are not its picks.
        if !by_affinity && request.account.is_none() {
            match self.rules.strategy {
                Strategy::RoundRobin => self.families[family].cursor = account.order,
                Strategy::Sticky => {
                    self.families[family].sticky = Some((slot, account.generation));
                }
                _ => {}
            }
        }
        account.last_used = self.use_seq;
        if self.rules.strategy == Strategy::HealthWeighted {
            // An account that sat out (cooling, disabled, new) re-enters at the current pass
            // instead of claiming every pick until it caught up.
            let base = account.pass.max(self.pass_clock);
            self.pass_clock = base;
            account.pass = base.saturating_add(HEALTH_STRIDE / (u64::from(account.health) + 1));
        }
        account.attempts += 1;
        let generation = account.generation;
        let id = account.id.clone();
        self.rules
            .place_everywhere(account, &mut self.families, slot, self.clock);

        request.attempts = request.attempts.saturating_add(1);
        request.tried.push((slot, generation));
        self.counters.attempts += 1;
        if request.tried.len() == 1 {
            self.counters.requests += 1;
        } else {
            self.counters.retries += 1;
        }
        if rotated {
            self.counters.rotations += 1;
        }
        if request.account.is_none()
            && let (Some(ttl), Some(session)) = (self.rules.session_ttl, request.session.as_ref())
        {
            self.bind(session, slot, generation, self.clock.saturating_add(ttl));
        }
        Selection::Account(id)
    }

    /// Takes one token from the account's bucket as the request is dispatched.
    ///
    /// Fails with [`PolicyError::NoToken`] if the bucket is empty (only possible when the
    /// caller did not `select` under the same lock) and [`PolicyError::UnknownAccount`] for
    /// an id not in the pool. The token is given back by [`report`](Self::report) for
    /// every outcome except [`Outcome::Success`], or by [`refund`](Self::refund).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use rotation_policy::{AccountId, PolicyConfig, PolicyError, Pool, Timestamp, TokenBucket};
    /// let mut config = PolicyConfig::default();
    /// config.bucket = Some(TokenBucket::new(1, Duration::from_secs(1)));
    /// let mut pool = Pool::new(config, 0)?;
    /// let a = AccountId::new("a")?;
    /// pool.add(a.clone())?;
    /// pool.consume(&a, Timestamp::ZERO)?;
    /// let err = pool.consume(&a, Timestamp::from_millis(400)).unwrap_err();
    /// assert_eq!(err, PolicyError::NoToken { id: a.clone(), ready_in: Duration::from_millis(600) });
    /// pool.consume(&a, Timestamp::from_millis(1000))?;
    /// # Ok::<(), rotation_policy::PolicyError>(())
    /// ```
    pub fn consume(&mut self, id: &AccountId, now: Timestamp) -> Result<(), PolicyError> {
        self.tick(now);
        let slot = self.slot_of(id)?;
        let clock = self.clock;
        let rules = &self.rules;
        let Some(account) = self.slots[slot as usize].as_mut() else {
            return Err(PolicyError::UnknownAccount { id: id.clone() });
        };
        if let Some((_, refill)) = rules.bucket {
            let ready = rules.bucket_ready_at(account);
            if ready > clock {
                return Err(PolicyError::NoToken {
                    id: id.clone(),
                    ready_in: Duration::from_millis(ready - clock),
                });
            }
            account.bucket_full_at = account.bucket_full_at.max(clock).saturating_add(refill);
        }
        account.in_flight = account.in_flight.saturating_add(1);
        rules.place_everywhere(account, &mut self.families, slot, clock);
        Ok(())
    }

    /// Gives back the token of a dispatch that will not be reported (e.g. the client went
    /// away before the upstream call). Returns whether a token was outstanding; never fills
    /// the bucket above capacity.
    ///
    /// ```
    /// # use rotation_policy::{AccountId, PolicyConfig, Pool, Timestamp};
    /// let mut pool = Pool::new(PolicyConfig::default(), 0)?;
    /// let a = AccountId::new("a")?;
    /// pool.add(a.clone())?;
    /// pool.consume(&a, Timestamp::ZERO)?;
    /// assert!(pool.refund(&a, Timestamp::ZERO)?);
    /// assert!(!pool.refund(&a, Timestamp::ZERO)?); // nothing outstanding
    /// # Ok::<(), rotation_policy::PolicyError>(())
    /// ```
    pub fn refund(&mut self, id: &AccountId, now: Timestamp) -> Result<bool, PolicyError> {
        self.tick(now);
        let slot = self.slot_of(id)?;
        let clock = self.clock;
        let rules = &self.rules;
        let Some(account) = self.slots[slot as usize].as_mut() else {
            return Err(PolicyError::UnknownAccount { id: id.clone() });
        };
        if account.in_flight == 0 {
            return Ok(false);
        }
        account.in_flight -= 1;
        refund_token(rules, account, clock);
        rules.place_everywhere(account, &mut self.families, slot, clock);
        Ok(true)
    }

    /// Records what happened on `account` for `request` and says what to do next.
    ///
    /// Applies the outcome's rule (see the crate docs: cooldowns, health, refund), then:
    /// success → [`Decision::ReturnToClient`]; a failure with attempts left and an untried
    /// account usable now → [`Decision::Retry`]; usable within `max_wait` →
    /// [`Decision::Wait`]; otherwise [`Decision::ReturnToClient`] with the exact time until
    /// any account is usable for the family (when none is now). An `account` no longer in
    /// the pool only affects the decision. O(F log n + attempts).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use rotation_policy::*;
    /// let mut pool = Pool::new(PolicyConfig::default(), 0)?;
    /// let (a, b) = (AccountId::new("a")?, AccountId::new("b")?);
    /// pool.add(a.clone())?;
    /// pool.add(b.clone())?;
    /// let mut request = Request::new("gpt-5");
    /// let now = Timestamp::ZERO;
    /// assert_eq!(pool.select(&mut request, now), Selection::Account(a.clone()));
    /// let limited = Outcome::RateLimited { retry_after: Some(Duration::from_secs(20)) };
    /// assert_eq!(pool.report(&mut request, &a, limited, now), Decision::Retry);
    /// assert_eq!(pool.select(&mut request, now), Selection::Account(b.clone()));
    /// assert_eq!(pool.report(&mut request, &b, limited, now),
    ///            Decision::ReturnToClient { retry_after: Some(Duration::from_secs(20)) });
    /// # Ok::<(), rotation_policy::PolicyError>(())
    /// ```
    pub fn report(
        &mut self,
        request: &mut Request,
        account: &AccountId,
        outcome: Outcome,
        now: Timestamp,
    ) -> Decision {
        self.tick(now);
        let family = self.family_index(&request.family);
        if let Some(&slot) = self.by_id.get(account) {
            self.apply(slot, family, outcome);
        }
        self.promote(family);
        if outcome == Outcome::Success {
            return Decision::ReturnToClient { retry_after: None };
        }
        if matches!(outcome, Outcome::RateLimited { .. }) && self.out_of_quota(account, family) {
            // The account's usage window is spent: its condition, not the request's. It does
            // not use up one of the request's attempts (each account is still tried at most
            // once), so a request is not turned away while an untried account has headroom.
            request.attempts = request.attempts.saturating_sub(1);
        }
        if let Some(pinned) = &request.account {
            // Only that account may serve the request, and it was tried: nothing to retry
            // on. The wait is until it is usable again.
            let retry_after = self.by_id.get(pinned).and_then(|&slot| {
                match self.slots[slot as usize].as_ref()?.families[family].place {
                    Place::Waiting(at) if at > self.clock => {
                        Some(Duration::from_millis(at - self.clock))
                    }
                    _ => None,
                }
            });
            return Decision::ReturnToClient { retry_after };
        }
        if request.attempts < self.rules.max_attempts {
            match self.earliest(family, Some(request)) {
                Some(at) if at <= self.clock => return Decision::Retry,
                Some(at) if at - self.clock <= self.rules.max_wait => {
                    self.counters.waits += 1;
                    return Decision::Wait(Duration::from_millis(at - self.clock));
                }
                _ => {}
            }
        }
        let retry_after = self
            .earliest(family, None)
            .filter(|&at| at > self.clock)
            .map(|at| Duration::from_millis(at - self.clock));
        Decision::ReturnToClient { retry_after }
    }

    /// A consistent snapshot of counters and every account at `now` (or the latest time
    /// the pool has seen, if later). O(n log n); meant for status endpoints, not per request.
    ///
    /// ```
    /// # use rotation_policy::{AccountId, PolicyConfig, Pool, Timestamp};
    /// let mut pool = Pool::new(PolicyConfig::default(), 0)?;
    /// pool.add(AccountId::new("a")?)?;
    /// let status = pool.status(Timestamp::ZERO);
    /// assert_eq!(status.accounts.len(), 1);
    /// assert_eq!(status.accounts[0].health, 100);
    /// # Ok::<(), rotation_policy::PolicyError>(())
    /// ```
    pub fn status(&self, now: Timestamp) -> PoolStatus {
        let t = self.clock.max(now.as_millis());
        let mut accounts: Vec<&Account> = self.slots.iter().flatten().collect();
        accounts.sort_by_key(|a| a.order);
        PoolStatus {
            now: Timestamp::from_millis(t),
            counters: self.counters.clone(),
            sessions: self.sessions.values().filter(|b| b.expires > t).count(),
            accounts: accounts.into_iter().map(|a| self.describe(a, t)).collect(),
        }
    }

    /// One account's part of [`status`](Self::status), or `None` if it is not in the pool.
    /// O(F).
    ///
    /// ```
    /// # use rotation_policy::{AccountId, PolicyConfig, Pool, Timestamp};
    /// let mut pool = Pool::new(PolicyConfig::default(), 0)?;
    /// let a = AccountId::new("a")?;
    /// pool.add(a.clone())?;
    /// assert_eq!(pool.account_status(&a, Timestamp::ZERO).map(|s| s.tokens), Some(Some(60)));
    /// # Ok::<(), rotation_policy::PolicyError>(())
    /// ```
    pub fn account_status(&self, id: &AccountId, now: Timestamp) -> Option<AccountStatus> {
        let t = self.clock.max(now.as_millis());
        let slot = *self.by_id.get(id)?;
        let account = self.slots.get(slot as usize)?.as_ref()?;
        Some(self.describe(account, t))
    }

    fn describe(&self, a: &Account, t: u64) -> AccountStatus {
        let tokens = self.rules.bucket.map(|(capacity, refill)| {
            let missing = a.bucket_full_at.saturating_sub(t).div_ceil(refill);
            u32::try_from(capacity.saturating_sub(missing)).unwrap_or(u32::MAX)
        });
        AccountStatus {
            id: a.id.clone(),
            disabled: a.disabled,
            cooldown_until: (a.cooldown_until > t)
                .then_some(Timestamp::from_millis(a.cooldown_until)),
            cooldown_reason: if a.cooldown_until > t {
                a.cooldown_reason
            } else {
                None
            },
            family_cooldowns: a
                .families
                .iter()
                .zip(&self.families)
                .filter(|(slot, _)| slot.cooldown_until > t)
                .map(|(slot, family)| FamilyCooldown {
                    family: family.name.clone(),
                    until: Timestamp::from_millis(slot.cooldown_until),
                    streak: slot.streak,
                })
                .collect(),
            needs_refresh: a.needs_refresh,
            health: a.health,
            tokens,
            in_flight: a.in_flight,
            attempts: a.attempts,
            outcomes: a.outcomes,
            usage: self.usage_status(a, t),
        }
    }

    fn tick(&mut self, now: Timestamp) {
        self.clock = self.clock.max(now.as_millis());
    }

    fn slot_of(&self, id: &AccountId) -> Result<u32, PolicyError> {
        self.by_id
            .get(id)
            .copied()
            .ok_or_else(|| PolicyError::UnknownAccount { id: id.clone() })
    }

    /// Applies `change` (given the pool clock; returns whether shared state changed) to
    /// `id`'s account and re-indexes it.
    fn update(
        &mut self,
        id: &AccountId,
        change: impl FnOnce(&mut Account, u64) -> bool,
    ) -> Result<(), PolicyError> {
        let slot = self.slot_of(id)?;
        if let Some(account) = self.slots[slot as usize].as_mut() {
            if change(account, self.clock) {
                mark_changed(&mut self.changed, account, slot);
            }
            self.rules
                .place_everywhere(account, &mut self.families, slot, self.clock);
        }
        Ok(())
    }

    /// The index of `name`'s family, creating it (O(n log n), once per family) if new. Past
    /// `max_families` named families, new names share the family `"*"`.
    fn family_index(&mut self, name: &str) -> usize {
        if let Some(&index) = self.family_ids.get(name) {
            return index;
        }
        // `max_families` named families, plus the shared one: a document listing the shared
        // family by name (exported from a full pool) then fits a pool of the same config.
        let named =
            self.families.len() - usize::from(self.family_ids.contains_key(OVERFLOW_FAMILY));
        let name = if name != OVERFLOW_FAMILY && named >= self.rules.max_families {
            if let Some(&index) = self.family_ids.get(OVERFLOW_FAMILY) {
                return index;
            }
            OVERFLOW_FAMILY
        } else {
            name
        };
        let index = self.families.len();
        self.families.push(Family {
            name: name.to_owned(),
            ready: BTreeMap::new(),
            waiting: BTreeMap::new(),
            cursor: 0,
            limit: self.limit_of_family(name),
            sticky: None,
            rekey: BTreeMap::new(),
        });
        for (slot, account) in self.slots.iter_mut().enumerate() {
            if let Some(account) = account {
                account.families.push(PerFamily::NEW);
                // ok: slots.len() fits in u32, checked in `add`.
                self.rules
                    .place(account, &mut self.families, slot as u32, index, self.clock);
            }
        }
        self.family_ids.insert(name.to_owned(), index);
        index
    }

    /// The index of `name`'s family for merged state, or `None` when merged state may not
    /// add it. A merge uses a family the pool tracks, and adds a new one only while the pool
    /// tracks fewer than `max_families / 2` named families: the other half is kept for the
    /// pool's own traffic, so a document naming thousands of families (a hostile writer, or
    /// one with a larger `max_families`) cannot push the families real requests use into
    /// the shared family `"*"`. A merge never creates `"*"`, nor files a name under it.
    fn merged_family_index(&mut self, name: &str) -> Option<usize> {
        if let Some(&index) = self.family_ids.get(name) {
            return Some(index);
        }
        let named =
            self.families.len() - usize::from(self.family_ids.contains_key(OVERFLOW_FAMILY));
        if name == OVERFLOW_FAMILY || named >= self.rules.max_families / 2 {
            return None;
        }
        Some(self.family_index(name))
    }

    /// Moves every account of `family` whose wait is over into the ready set. Each move
    /// undoes one earlier move to waiting, so this is amortized O(log n) per state change.
    fn promote(&mut self, family: usize) {
        // Bounded: each round removes one waiting entry; `place` puts the account in the
        // ready set (its time has come), or back to waiting at a later time.
        while let Some((&(at, _), &slot)) = self.families[family].waiting.first_key_value() {
            if at > self.clock {
                break;
            }
            self.families[family].waiting.pop_first();
            if let Some(Some(account)) = self.slots.get_mut(slot as usize) {
                // The entry is gone: forget it, so `place` does not look for it.
                account.families[family].place = Place::Absent;
                self.rules
                    .place(account, &mut self.families, slot, family, self.clock);
            }
        }
    }

    /// Whether `id`'s reported usage keeps it out of `family` now.
    fn out_of_quota(&self, id: &AccountId, family: usize) -> bool {
        let limit = self.families[family].limit;
        self.by_id
            .get(id)
            .and_then(|&slot| self.slots.get(slot as usize)?.as_ref())
            .is_some_and(|a| self.rules.usage_blocked_until(a, limit, self.clock) > self.clock)
    }

    /// Re-keys the ready accounts of `family` whose key changed with the clock (the
    /// quota-aware order), so a pick sees the order at `now`. Each entry was put there by a
    /// placement and is taken once: amortized O(log n) per state change.
    fn renew_keys(&mut self, family: usize) {
        while let Some((&entry, &slot)) = self.families[family].rekey.first_key_value() {
            if entry.0 > self.clock {
                break;
            }
            if let Some(Some(account)) = self.slots.get_mut(slot as usize) {
                // `place` removes the entry (the account's `rekey_at`) and adds the next
                // one, if any, later than the clock.
                self.rules
                    .place(account, &mut self.families, slot, family, self.clock);
            }
            // Bounded: an entry `place` did not take (none should remain) goes now.
            if self.families[family]
                .rekey
                .first_key_value()
                .map(|(k, _)| *k)
                == Some(entry)
            {
                self.families[family].rekey.pop_first();
            }
        }
    }

    fn is_untried(&self, request: &Request, slot: u32) -> bool {
        match self.slots.get(slot as usize) {
            Some(Some(account)) => !request.tried.contains(&(slot, account.generation)),
            _ => false,
        }
    }

    /// The best ready, untried account by strategy: skips at most `request.tried.len()`
    /// entries.
    fn pick(&self, family: usize, request: &Request) -> Option<u32> {
        let index = &self.families[family];
        let untried = |slot: &u32| self.is_untried(request, *slot);
        if self.rules.strategy == Strategy::Sticky
            && let Some((slot, generation)) = index.sticky
            && let Some(Some(account)) = self.slots.get(slot as usize)
            && account.generation == generation
            && matches!(account.families[family].place, Place::Ready(_))
            && untried(&slot)
        {
            return Some(slot);
        }
        if self.rules.strategy == Strategy::RoundRobin {
            let start = (index.cursor.saturating_add(1), 0, 0);
            index
                .ready
                .range(start..)
                .chain(index.ready.range(..start))
                .map(|(_, slot)| *slot)
                .find(untried)
        } else {
            index.ready.values().copied().find(untried)
        }
    }

    /// Earliest time (ms) an enabled account (untried by `request`, if given) is usable for
    /// `family`; the pool clock if one is usable now. Assumes `promote(family)` ran.
    fn earliest(&self, family: usize, request: Option<&Request>) -> Option<u64> {
        let index = &self.families[family];
        let ok = |slot: &u32| request.is_none_or(|r| self.is_untried(r, *slot));
        if index.ready.values().any(ok) {
            return Some(self.clock);
        }
        index
            .waiting
            .iter()
            .find(|(_, slot)| ok(slot))
            .map(|(&(at, _), _)| at)
    }

    fn bind(&mut self, session: &str, slot: u32, generation: u32, expires: u64) {
        self.session_seq += 1;
        let seq = self.session_seq;
        if let Some(binding) = self.sessions.get_mut(session) {
            self.expiry.remove(&(binding.expires, binding.seq));
            *binding = Binding {
                slot,
                generation,
                expires,
                seq,
            };
        } else {
            self.sessions.insert(
                session.to_owned(),
                Binding {
                    slot,
                    generation,
                    expires,
                    seq,
                },
            );
        }
        self.expiry.insert((expires, seq), session.to_owned());
    }

    fn prune_sessions(&mut self) {
        while let Some((&(expires, seq), _)) = self.expiry.first_key_value() {
            if expires > self.clock {
                break;
            }
            if let Some((_, session)) = self.expiry.pop_first()
                && self.sessions.get(&session).is_some_and(|b| b.seq == seq)
            {
                self.sessions.remove(&session);
            }
        }
    }

    /// Backoff `base * 2^(streak-1)` plus seeded jitter, capped at `max_cooldown` (ms).
    fn backoff(&mut self, base: u64, streak: u32) -> u64 {
        let factor = 1u64
            .checked_shl(streak.saturating_sub(1))
            .unwrap_or(u64::MAX);
        let mut wait = base.saturating_mul(factor);
        if self.rules.jitter_percent > 0 {
            let spread = wait.saturating_mul(self.rules.jitter_percent) / 100;
            wait = wait.saturating_add(self.rng.below(spread.saturating_add(1)));
        }
        wait.min(self.rules.max_cooldown)
    }

    fn apply(&mut self, slot: u32, family: usize, outcome: Outcome) {
        let clock = self.clock;
        // Compute any backoff first: it needs `&mut self` for the generator.
        let (streak, burst) = match self.slots[slot as usize].as_ref() {
            Some(a) => (
                a.families[family].streak.saturating_add(1),
                a.burst_streak.saturating_add(1),
            ),
            None => return,
        };
        let rate_limit_wait = match outcome {
            Outcome::RateLimited { retry_after } => Some(match retry_after {
                Some(hint) => ceil_millis(hint).min(self.rules.max_cooldown),
                None => self.backoff(self.rules.rate_limit_backoff, streak),
            }),
            _ => None,
        };
        let is_failure = matches!(
            outcome,
            Outcome::ServerError | Outcome::NetworkError | Outcome::Timeout
        );
        let bursting = match self.slots[slot as usize].as_mut() {
            Some(account) if is_failure => {
                account.failures.push_back(clock);
                while account.failures.len() > self.rules.failure_burst {
                    account.failures.pop_front();
                }
                let burst = account.failures.len() >= self.rules.failure_burst
                    && account
                        .failures
                        .front()
                        .is_some_and(|&first| clock - first <= self.rules.failure_window);
                if burst {
                    account.failures.clear();
                }
                burst
            }
            _ => false,
        };
        let burst_wait = bursting.then(|| self.backoff(self.rules.failure_cooldown, burst));
        let rules = &self.rules;
        let limit = self.families[family].limit;
        let Some(account) = self.slots[slot as usize].as_mut() else {
            return;
        };

        if account.in_flight > 0 {
            account.in_flight -= 1;
            if outcome != Outcome::Success {
                refund_token(rules, account, clock);
            }
        }
        count(&mut self.counters.outcomes, outcome);
        count(&mut account.outcomes, outcome);

        // What shared state looked like, to stamp and record a change in O(1).
        let observation = account.observation();
        let family_before = (
            account.families[family].cooldown_until,
            account.families[family].streak,
        );
        let mut changed = false;
        match outcome {
            Outcome::Success => {
                account.health = account
                    .health
                    .saturating_add(HEALTH_SUCCESS)
                    .min(HEALTH_MAX);
                account.unauthorized_streak = 0;
                account.burst_streak = 0;
                account.needs_refresh = false;
                account.families[family].streak = 0;
            }
            Outcome::RateLimited { .. } => {
                account.health = account.health.saturating_sub(HEALTH_RATE_LIMITED);
                let wait = rate_limit_wait
                    .unwrap_or(rules.min_cooldown)
                    .max(rules.min_cooldown);
                let slot_state = &mut account.families[family];
                slot_state.streak = streak;
                let until = clock.saturating_add(wait);
                if until > slot_state.cooldown_until {
                    slot_state.cooldown_until = until;
                    slot_state.cooldown_since = clock;
                }
                // A 429 on a window already past the threshold or margin (quota-aware
                // spends such windows near their end) says the window is full: it stays out
                // until its end, not only for the cooldown.
                changed |= usage::fill_windows_past_threshold(rules, account, limit, clock);
            }
            Outcome::Unauthorized => {
                account.health = account.health.saturating_sub(HEALTH_AUTH);
                account.needs_refresh = true;
                account.unauthorized_streak = account.unauthorized_streak.saturating_add(1);
                if account.unauthorized_streak >= rules.disable_after_unauthorized {
                    changed |= account.disable_for(DisabledReason::Unauthorized, clock);
                } else {
                    changed |= cool(
                        account,
                        clock.saturating_add(rules.unauthorized_cooldown),
                        CooldownReason::Unauthorized,
                        clock,
                    );
                }
            }
            Outcome::Forbidden => {
                account.health = account.health.saturating_sub(HEALTH_AUTH);
                changed |= cool(
                    account,
                    clock.saturating_add(rules.forbidden_cooldown),
                    CooldownReason::Forbidden,
                    clock,
                );
            }
            Outcome::ServerError | Outcome::NetworkError | Outcome::Timeout => {
                account.health = account.health.saturating_sub(HEALTH_FAILURE);
                if let Some(wait) = burst_wait {
                    account.burst_streak = burst;
                    changed |= cool(
                        account,
                        clock.saturating_add(wait),
                        CooldownReason::FailureBurst,
                        clock,
                    );
                }
            }
        }
        changed |= account.observed(observation, clock);
        changed |= family_before
            != (
                account.families[family].cooldown_until,
                account.families[family].streak,
            );
        if changed {
            mark_changed(&mut self.changed, account, slot);
        }
        rules.place_everywhere(account, &mut self.families, slot, clock);
    }
}
