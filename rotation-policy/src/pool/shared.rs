//! The pool's shared account state: export for other processes or the next run, the changes
//! since the last write, and merging what others wrote (pure; the caller does the file I/O).
//! The merge rules are the table in [`crate::state`].

use std::cmp::Reverse;

use super::Pool;
use super::account::{Account, adopt_family, mark_changed};
use crate::state::{cooldown_rank, disabled_rank};
use crate::status::{CooldownReason, DisabledReason};
use crate::usage::{MAX_LIMITS, normalize_limit_id};
use crate::{
    AccountId, AccountState, Cooldown, Disabled, FamilyState, MergeReport, POLICY_STATE_VERSION,
    PolicyState, Timestamp,
};

impl Pool {
    /// Every account's shared state at the pool's clock (cooldowns that ended are left out):
    /// what a process writes when it starts sharing, or saves on shutdown. O(n · F).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use rotation_policy::*;
    /// let mut pool = Pool::new(PolicyConfig::default(), 0)?;
    /// let a = AccountId::new("a")?;
    /// pool.add(a.clone())?;
    /// pool.add(AccountId::new("b")?)?;
    /// let mut request = Request::new("gpt-5");
    /// pool.select(&mut request, Timestamp::ZERO);
    /// let limited = Outcome::RateLimited { retry_after: Some(Duration::from_secs(30)) };
    /// pool.report(&mut request, &a, limited, Timestamp::ZERO);
    ///
    /// let state = pool.export_state();
    /// assert_eq!(state.accounts.len(), 2);
    /// assert_eq!(state.accounts[&a].families["gpt-5"].until, Timestamp::from_millis(30_000));
    /// # Ok::<(), rotation_policy::PolicyError>(())
    /// ```
    pub fn export_state(&self) -> PolicyState {
        PolicyState {
            version: POLICY_STATE_VERSION,
            accounts: self
                .slots
                .iter()
                .flatten()
                .map(|account| (account.id.clone(), self.export(account)))
                .collect(),
        }
    }

    /// One account's part of [`export_state`](Self::export_state), or `None` if it is not in
    /// the pool. O(F).
    ///
    /// ```
    /// # use rotation_policy::*;
    /// let mut pool = Pool::new(PolicyConfig::default(), 0)?;
    /// let a = AccountId::new("a")?;
    /// pool.add(a.clone())?;
    /// pool.disable_for(&a, DisabledReason::Deactivated)?;
    /// let state = pool.export_account(&a).unwrap();
    /// assert_eq!(state.disabled.map(|d| d.reason), Some(DisabledReason::Deactivated));
    /// assert_eq!(pool.export_account(&AccountId::new("b")?), None);
    /// # Ok::<(), rotation_policy::PolicyError>(())
    /// ```
    pub fn export_account(&self, id: &AccountId) -> Option<AccountState> {
        let slot = *self.by_id.get(id)?;
        let account = self.slots.get(slot as usize)?.as_ref()?;
        Some(self.export(account))
    }

    /// The shared state of every account whose shared state changed since the previous
    /// call, as of now; then forgets those changes. A proxy calls this every few hundred
    /// milliseconds and, when it is not empty, merges it into the shared file under the
    /// file's lock ([`PolicyState::merge`]) — so writes are coalesced and only changed
    /// accounts are sent.
    ///
    /// A change is a report or call that altered an account's cooldowns, disable, refresh
    /// time or health observation (a success at full health is none), or a merge that left
    /// the pool knowing more than the merged document (see
    /// [`merge_state`](Self::merge_state)); a cooldown ending by time is none. Accounts
    /// removed since are left out. Recording a change is O(1); this call is
    /// O(k · F log k) for k changed accounts, independent of the pool's size.
    ///
    /// ```
    /// # use rotation_policy::*;
    /// let mut pool = Pool::new(PolicyConfig::default(), 0)?;
    /// let (a, b) = (AccountId::new("a")?, AccountId::new("b")?);
    /// pool.add(a.clone())?;
    /// pool.add(b.clone())?;
    /// assert!(pool.take_changes().accounts.is_empty());
    /// pool.disable(&b)?;
    /// let changes = pool.take_changes();
    /// assert_eq!(changes.accounts.keys().collect::<Vec<_>>(), [&b]);
    /// assert!(pool.take_changes().accounts.is_empty()); // taken
    /// # Ok::<(), rotation_policy::PolicyError>(())
    /// ```
    pub fn take_changes(&mut self) -> PolicyState {
        let mut state = PolicyState::default();
        let mut slots = std::mem::take(&mut self.changed);
        for &slot in &slots {
            // A slot is listed once per change of flag, so a slot whose account was removed
            // (and maybe reused by a newer account) is skipped by the flag.
            match self.slots.get_mut(slot as usize) {
                Some(Some(account)) if account.changed => account.changed = false,
                _ => continue,
            }
            if let Some(Some(account)) = self.slots.get(slot as usize) {
                state
                    .accounts
                    .insert(account.id.clone(), self.export(account));
            }
        }
        slots.clear();
        self.changed = slots; // keep the allocation
        state
    }

    /// Merges `state` — typically the shared file, as other processes wrote it — into the
    /// pool by the [merge rules](crate::state#merge-rules) and re-indexes the accounts it
    /// changed, so the next [`select`](Self::select) honours what other processes learned.
    ///
    /// Ids not in the pool are listed in [`MergeReport::unknown`] and otherwise ignored.
    /// Cooldowns are capped at this pool's own longest *from their own start*, so merging
    /// the same document again later never restarts one; cooldowns no writer can have set,
    /// records stamped more than [`max_cooldown`](crate::PolicyConfig::max_cooldown) after
    /// `now`, and cooldowns of model families the pool may not add are ignored; a running
    /// cooldown is never shortened (see the guards in [`crate::state`]).
    ///
    /// An account is recorded as changed for [`take_changes`](Self::take_changes) only when
    /// the pool knew something `state` lacks — never merely because the merge changed the
    /// pool — so a process that merges what another wrote does not write it back, and
    /// processes sharing a file settle instead of rewriting it in turn.
    ///
    /// O(k · F log n) for k accounts in `state` with F families; the first mention of a
    /// model family the pool has not seen adds it (O(n log n), once per family, for at most
    /// `max_families / 2` families).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use rotation_policy::*;
    /// let mut pool = Pool::new(PolicyConfig::default(), 0)?;
    /// let (a, b) = (AccountId::new("a")?, AccountId::new("b")?);
    /// pool.add(a.clone())?;
    /// pool.add(b.clone())?;
    ///
    /// // Another process saw `a` rate limited for gpt-5 at t = 2 s, until t = 20 s.
    /// let json = r#"{"version":1,"accounts":{"a":{"families":{"gpt-5":{"until":20000,"since":2000}}}}}"#;
    /// let shared: PolicyState = serde_json::from_str(json)?;
    /// let report = pool.merge_state(&shared, Timestamp::from_millis(5_000));
    /// assert_eq!((report.applied, report.changed), (1, 1));
    ///
    /// let now = Timestamp::from_millis(5_000);
    /// assert_eq!(pool.select(&mut Request::new("gpt-5"), now), Selection::Account(b.clone()));
    /// pool.disable(&b)?;
    /// assert_eq!(
    ///     pool.select(&mut Request::new("gpt-5"), now),
    ///     Selection::Exhausted { retry_after: Duration::from_secs(15) }
    /// );
    /// // Nothing to write back for `a`: the file already says all the pool knows of it.
    /// assert_eq!(pool.take_changes().accounts.keys().collect::<Vec<_>>(), [&b]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// A cooldown longer than this pool's runs this pool's longest from when it started, and
    /// merging the same document later does not start it again:
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use rotation_policy::*;
    /// let mut pool = Pool::new(PolicyConfig::default(), 0)?; // max_cooldown: 15 min
    /// let a = AccountId::new("a")?;
    /// pool.add(a.clone())?;
    /// // A process allowing 24 h cooldowns saw a 429 at t = 0.
    /// let json = r#"{"version":1,"accounts":{"a":{"families":{"gpt-5":{"until":86400000,"since":0}}}}}"#;
    /// let shared: PolicyState = serde_json::from_str(json)?;
    /// let minutes = |m: u64| Timestamp::from_millis(m * 60_000);
    /// pool.merge_state(&shared, minutes(5));
    /// assert_eq!(
    ///     pool.select(&mut Request::new("gpt-5"), minutes(5)),
    ///     Selection::Exhausted { retry_after: Duration::from_secs(10 * 60) }
    /// );
    /// for later in [15, 60, 24 * 60] {
    ///     pool.merge_state(&shared, minutes(later));
    ///     assert_eq!(pool.select(&mut Request::new("gpt-5"), minutes(later)), Selection::Account(a.clone()));
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn merge_state(&mut self, state: &PolicyState, now: Timestamp) -> MergeReport {
        self.tick(now);
        let mut report = MergeReport::default();
        for (id, theirs) in &state.accounts {
            match self.by_id.get(id) {
                Some(&slot) => {
                    report.applied += 1;
                    if self.merge_account(slot, theirs, &mut report) {
                        report.changed += 1;
                    }
                }
                None => report.unknown.push(id.clone()),
            }
        }
        report
    }

    /// An account's shared state at the pool clock.
    fn export(&self, a: &Account) -> AccountState {
        let t = self.clock;
        AccountState {
            cooldown: match a.cooldown_reason {
                Some(reason) if a.cooldown_until > t => Some(Cooldown {
                    until: Timestamp::from_millis(a.cooldown_until),
                    reason,
                    since: Timestamp::from_millis(a.cooldown_since),
                }),
                _ => None,
            },
            families: a
                .families
                .iter()
                .zip(&self.families)
                .filter(|(ours, _)| ours.cooldown_until > t)
                .map(|(ours, family)| {
                    let until = Timestamp::from_millis(ours.cooldown_until);
                    let since = Timestamp::from_millis(ours.cooldown_since);
                    let state = FamilyState::new(until, ours.streak).with_since(since);
                    (family.name.clone(), state)
                })
                .collect(),
            disabled: a.disabled.map(|reason| Disabled {
                reason,
                since: Timestamp::from_millis(a.disabled_since),
            }),
            enabled_since: a.enabled_since.map(Timestamp::from_millis),
            refreshed_at: a.refreshed_at.map(Timestamp::from_millis),
            health: a.health,
            health_at: Timestamp::from_millis(a.health_at),
            needs_refresh: a.needs_refresh,
            unauthorized_streak: a.unauthorized_streak,
            burst_streak: a.burst_streak,
            usage: self
                .limits
                .iter()
                .enumerate()
                .filter_map(|(index, limit)| {
                    let usage = a.usage(index)?;
                    usage
                        .is_current(Timestamp::from_millis(t))
                        .then(|| (limit.id.clone(), usage.clone()))
                })
                .collect(),
        }
    }

    /// Merges `theirs` into the account in `slot`; returns whether the account changed.
    fn merge_account(
        &mut self,
        slot: u32,
        theirs: &AccountState,
        report: &mut MergeReport,
    ) -> bool {
        let clock = self.clock;
        // Records stamped after this are from a broken clock or a hostile writer.
        let horizon = clock.saturating_add(self.rules.max_cooldown);
        let mut ignored = 0;
        let mut fresh = |at: Timestamp| {
            let fresh = at.as_millis() <= horizon;
            ignored += usize::from(!fresh);
            fresh
        };

        // Family indexes first: adding a family re-indexes every account.
        let mut families = Vec::new();
        for (name, family) in &theirs.families {
            if family.until.as_millis() <= clock {
                continue; // over
            }
            if !family.is_plausible() {
                report.ignored_implausible += 1;
                continue;
            }
            if family.since.is_some_and(|since| !fresh(since)) {
                continue;
            }
            match self.merged_family_index(name) {
                Some(index) => families.push((index, family)),
                None => report.ignored_families += 1,
            }
        }

        let Some(account) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) else {
            return false;
        };
        let mut changed = false;
        for (index, family) in families {
            let adopted = adopt_family(
                &mut account.families[index],
                family.until.as_millis(),
                family.since.map(Timestamp::as_millis),
                family.streak,
                clock,
                self.rules.max_cooldown,
            );
            report.capped += usize::from(adopted.capped);
            changed |= adopted.changed;
        }

        // The refresh time first: it may end our 401 cooldown and voids theirs.
        if let Some(at) = theirs.refreshed_at.filter(|&at| fresh(at))
            && Some(at.as_millis()) > account.refreshed_at
        {
            account.refreshed_at = Some(at.as_millis());
            changed = true;
        }
        if account.cooldown_reason == Some(CooldownReason::Unauthorized)
            && account.cooldown_until > clock
            && refreshed_since(account.refreshed_at, account.cooldown_since)
        {
            account.cooldown_until = 0;
            account.cooldown_reason = None;
            changed = true;
        }
        let cooldown = theirs.cooldown.filter(|c| c.until.as_millis() > clock);
        if cooldown.is_some_and(|c| !c.is_plausible()) {
            report.ignored_implausible += 1;
        } else if let Some(cooldown) = cooldown.filter(|c| fresh(c.since))
            && !(cooldown.reason == CooldownReason::Unauthorized
                && refreshed_since(account.refreshed_at, cooldown.since.as_millis()))
        {
            // Bounded from its own start, never from now: merging it again later must not
            // restart it.
            let since = cooldown.since.as_millis();
            let cap = since.saturating_add(self.rules.cooldown_cap(cooldown.reason));
            if cooldown.until.as_millis() > cap {
                report.capped += 1;
            }
            let until = cooldown.until.as_millis().min(cap);
            let ours = (
                account.cooldown_until,
                account.cooldown_reason.map_or(0, cooldown_rank),
                account.cooldown_since,
            );
            if until > clock && (until, cooldown_rank(cooldown.reason), since) > ours {
                account.cooldown_until = until;
                account.cooldown_reason = Some(cooldown.reason);
                account.cooldown_since = since;
                changed = true;
            }
        }

        // Disabled unless enabled later: each side's latest event, then compare.
        let their_disable = theirs
            .disabled
            .filter(|d| fresh(d.since))
            .map(|d| (d.since.as_millis(), d.reason));
        let their_enable = theirs
            .enabled_since
            .filter(|&at| fresh(at))
            .map(Timestamp::as_millis);
        let our_disable = account
            .disabled
            .map(|reason| (account.disabled_since, reason));
        let key = |(since, reason): (u64, DisabledReason)| (since, disabled_rank(reason));
        let disable = match (our_disable, their_disable) {
            (Some(ours), Some(their)) if key(their) > key(ours) => Some(their),
            (ours, their) => ours.or(their),
        };
        let enable = account.enabled_since.max(their_enable);
        let disable = disable.filter(|&(since, _)| enable.is_none_or(|at| since >= at));
        if enable != account.enabled_since {
            account.enabled_since = enable;
            changed = true;
        }
        if disable != our_disable {
            account.disabled = disable.map(|(_, reason)| reason);
            if let Some((since, _)) = disable {
                account.disabled_since = since;
            }
            changed = true;
        }

        // The later health observation, whole.
        if fresh(theirs.health_at) && theirs.observation_key() > observation_key(account) {
            account.health = theirs.health.min(super::HEALTH_MAX);
            account.health_at = theirs.health_at.as_millis();
            account.needs_refresh = theirs.needs_refresh;
            account.unauthorized_streak = theirs.unauthorized_streak;
            account.burst_streak = theirs.burst_streak;
            changed = true;
        }

        // Usage: per limit, the later report. A report's limit name is taken only with the
        // report (a name re-maps model families; one from a report that lost is stale).
        let mut reports = Vec::new();
        for (id, usage) in &theirs.usage {
            if !usage.is_plausible() || normalize_limit_id(id).as_deref() != Some(id.as_str()) {
                report.ignored_implausible += 1;
                continue;
            }
            if !fresh(usage.observed_at) {
                continue;
            }
            // Merged state may add at most half the limits, like families.
            if let Some(index) = self.limit_index(id, None, MAX_LIMITS / 2) {
                reports.push((index, id, usage));
            }
        }
        let Some(account) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) else {
            return changed;
        };
        let mut names = Vec::new();
        for (index, id, theirs) in reports {
            let ours = account.usage_mut(index);
            if ours.as_ref().is_none_or(|ours| theirs.key() > ours.key()) {
                *ours = Some(theirs.clone());
                changed = true;
                if let Some(name) = theirs.limit_name.as_deref() {
                    names.push((id, name, theirs.observed_at.as_millis()));
                }
            }
        }
        for (id, name, at) in names {
            self.limit_index(id, Some((name, at)), MAX_LIMITS / 2);
        }
        let Some(account) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) else {
            return changed;
        };

        report.ignored_future += ignored;
        if changed {
            self.rules
                .place_everywhere(account, &mut self.families, slot, clock);
        }
        // Does the result hold something `theirs` lacks (what the pool knew, or a family
        // name this pool files under "*")? Only then must it be written back. (An account
        // already marked changed will be written anyway.)
        let knows_more = match self.slots.get(slot as usize) {
            Some(Some(ours)) if !ours.changed => !theirs.covers(&self.export(ours)),
            _ => false,
        };
        if knows_more && let Some(Some(account)) = self.slots.get_mut(slot as usize) {
            mark_changed(&mut self.changed, account, slot);
        }
        changed
    }
}

/// Whether a refresh at `refreshed_at` came no earlier than a 401 cooldown set at `since`
/// (and so ends it).
fn refreshed_since(refreshed_at: Option<u64>, since: u64) -> bool {
    refreshed_at.is_some_and(|at| at >= since)
}

/// The pool account's health observation in [`AccountState::observation_key`]'s order.
fn observation_key(a: &Account) -> (Timestamp, Reverse<u8>, bool, u32, u32) {
    (
        Timestamp::from_millis(a.health_at),
        Reverse(a.health),
        a.needs_refresh,
        a.unauthorized_streak,
        a.burst_streak,
    )
}
