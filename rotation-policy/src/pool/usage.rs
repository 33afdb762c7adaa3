//! Usage reports in the pool: recording them, which limit a model family counts against,
//! the pool's aggregate usage, and the per-account view for status snapshots. The rule that
//! turns a report into a block is `Rules::usage_blocked_until` (index.rs).

use super::account::{Account, mark_changed};
use super::index::Rules;
use super::{Limit, Pool};
use crate::status::UsageStatus;
use crate::usage::{LimitUsage, MAX_LIMITS, Percent, UsageReport, UsageWindow};
use crate::{AccountId, PolicyError, Timestamp, UsageState};

/// How long a kept usage report stands when later ones bring no news (see
/// [`Pool::record_usage`]).
pub const USAGE_REFRESH: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether `next` (for the same limit) is news against `kept`: see [`Pool::record_usage`].
fn news(kept: &UsageState, next: &UsageState, blocks: impl Fn(f64, usize) -> bool) -> bool {
    let refresh = u64::try_from(USAGE_REFRESH.as_millis()).unwrap_or(u64::MAX);
    let window_news = |a: Option<UsageWindow>, b: Option<UsageWindow>, which: usize| match (a, b) {
        (Some(a), Some(b)) => {
            let (x, y) = (a.used_percent.get(), b.used_percent.get());
            a.resets_at != b.resets_at
                || a.window_minutes != b.window_minutes
                || blocks(x, which) != blocks(y, which)
                || (x >= 100.0) != (y >= 100.0)
                || (x - y).abs() >= 1.0
        }
        (None, None) => false,
        _ => true,
    };
    next.observed_at
        .as_millis()
        .saturating_sub(kept.observed_at.as_millis())
        >= refresh
        || kept.limit_name != next.limit_name
        || window_news(kept.primary, next.primary, 0)
        || window_news(kept.secondary, next.secondary, 1)
}

impl Pool {
    /// Records what the upstream reported about `id`'s usage windows: from
    /// [`UsageReport::from_headers`] of every answer (a `429` too), from
    /// [`UsageReport::from_event`] of a stream's `codex.rate_limits` event, or from a usage
    /// query. Call it before [`report`](Self::report)ing the answer's outcome.
    ///
    /// For each limit in the report, the windows it names replace the ones known (a window
    /// it leaves out is kept until that window's end, if it has a reset time). A report that is no news is not
    /// kept: one that moves no window by a whole percentage point, changes no reset, window
    /// length, name or block, and comes within [`USAGE_REFRESH`] of the report kept. A busy
    /// account reports on every answer; this way the pool's shared state (and the file
    /// processes share it through) changes at most once a minute for it, not per answer. An account with a window at or
    /// above [`usage_threshold`](crate::PolicyConfig::usage_threshold), or within the margin
    /// below, serves no request counted against that limit until the window resets: it
    /// waits like a cooling account,
    /// so [`Selection::Exhausted`](crate::Selection::Exhausted) stays exact. A request counts
    /// against the metered limit whose reported `limit_name` is its model family (ASCII
    /// case ignored), else against [`DEFAULT_LIMIT`](crate::usage::DEFAULT_LIMIT).
    ///
    /// | the window | the account waits until |
    /// |---|---|
    /// | within the margin — two more requests' worth, plus this process's requests in flight on it, would overflow it (a request's worth: the largest rise of the window's use between two reports this process saw, 1 to 10 points) — or at or above the threshold | the window's end ([`UsageWindow::ends_at`]): its `resets_at`, but at most `window_minutes` and at most 8 days after the report; with neither reset nor length, the report + [`max_cooldown`](crate::PolicyConfig::max_cooldown), when it is tried again |
    /// | the same, under [`Strategy::QuotaAware`](crate::Strategy::QuotaAware), for the long window in its last twentieth, below the threshold and not full | not at all |
    /// | full: reported at 100 %, or answered 429 while past the threshold or margin (the report is then corrected and re-stamped) | its end; a later report of the same window with less use does not empty it (it was made before the request that filled it) |
    /// | one whose end has passed | nothing: it started over |
    ///
    /// A 429 from an account its usage now keeps out does not use up one of the request's
    /// attempts ([`report`](Self::report)): a request is not turned away while an untried
    /// account has headroom.
    ///
    /// Two requests' worth, because usage headers are sent before the answer is generated:
    /// a report does not count the request it answers yet, and the next request adds as much
    /// again. The margin is learned per process and not shared.
    ///
    /// The report is shared state ([`AccountState::usage`](crate::AccountState::usage)):
    /// other processes and the next run steer by it. At most
    /// [`MAX_LIMITS`] limits are kept per pool; reports of further ones are ignored.
    /// O(L + F log n) for L limits in the report.
    ///
    /// ```
    /// use std::time::Duration;
    /// use http::HeaderMap;
    /// use rotation_policy::usage::{LimitUsage, Percent, UsageReport, UsageWindow};
    /// use rotation_policy::{AccountId, PolicyConfig, Pool, Request, Selection, Timestamp};
    ///
    /// let mut pool = Pool::new(PolicyConfig::default(), 0)?;
    /// let (a, b) = (AccountId::new("a")?, AccountId::new("b")?);
    /// pool.add(a.clone())?;
    /// pool.add(b.clone())?;
    /// let now = Timestamp::from_millis(1_700_000_000_000);
    /// let in_an_hour = now.saturating_add(Duration::from_secs(3600));
    ///
    /// // `a`'s 5-hour window is 99 % used and resets in an hour.
    /// let mut codex = LimitUsage::new("codex").unwrap();
    /// codex.primary = Some(
    ///     UsageWindow::new(Percent::new(99.0).unwrap()).with_window_minutes(300).with_resets_at(in_an_hour),
    /// );
    /// let mut report = UsageReport::default();
    /// report.push(codex);
    /// pool.record_usage(&a, &report, now)?;
    ///
    /// assert_eq!(pool.select(&mut Request::new("gpt-5"), now), Selection::Account(b.clone()));
    /// pool.disable(&b)?;
    /// assert_eq!(
    ///     pool.select(&mut Request::new("gpt-5"), now),
    ///     Selection::Exhausted { retry_after: Duration::from_secs(3600) } // exact: the reset
    /// );
    /// assert_eq!(pool.select(&mut Request::new("gpt-5"), in_an_hour), Selection::Account(a));
    /// # Ok::<(), rotation_policy::PolicyError>(())
    /// ```
    pub fn record_usage(
        &mut self,
        id: &AccountId,
        report: &UsageReport,
        now: Timestamp,
    ) -> Result<(), PolicyError> {
        self.tick(now);
        let slot = self.slot_of(id)?;
        let clock = self.clock;
        let mut changed = false;
        for limit in report.limits.iter().filter(|l| l.has_windows()) {
            let Some(index) = self.limit_index(
                limit.limit_id(),
                limit.limit_name.as_deref().map(|name| (name, clock)),
                MAX_LIMITS,
            ) else {
                continue;
            };
            let Some(account) = self.slots[slot as usize].as_mut() else {
                break;
            };
            let steps = account.steps_mut(index);
            for (which, window) in [limit.primary, limit.secondary].iter().enumerate() {
                if let Some(window) = window {
                    steps.observe(which, window);
                }
            }
            let step = steps.step;
            let known = account.usage_mut(index);
            // Stamped after what it replaces (which may have been merged from a process whose
            // clock runs ahead), so the newer report wins every merge, ties included.
            let observed = known.as_ref().map_or(clock, |k| {
                clock.max(k.observed_at.as_millis().saturating_add(1))
            });
            let previous = known.take();
            // A window the report leaves out is kept while it runs, with the end it had
            // (re-stamped, its cap would move with the new report).
            let reported_at = previous.as_ref().map_or(Timestamp::ZERO, |p| p.observed_at);
            let still_running = |w: Option<UsageWindow>| {
                w.filter(|w| w.resets_at.is_some())
                    .map(|w| w.with_resets_at(w.ends_at(reported_at)))
                    .filter(|w| w.resets_at.is_some_and(|at| at.as_millis() > clock))
            };
            let mut next = UsageState::new(Timestamp::from_millis(observed));
            next.limit_name = limit
                .limit_name
                .clone()
                .or_else(|| previous.as_ref().and_then(|p| p.limit_name.clone()));
            // A window known to be full (reported at 100 %, or answered 429) stays full until
            // its end: a later report of the same window with less use was made before the
            // request that filled it (reports lag their answers).
            let still_full = |new: Option<UsageWindow>, old: Option<UsageWindow>| match (new, old) {
                (Some(mut new), Some(old))
                    if old.used_percent == Percent::FULL
                        && new.resets_at == old.resets_at
                        && old.ends_at(reported_at).as_millis() > clock =>
                {
                    new.used_percent = Percent::FULL;
                    Some(new)
                }
                (new, _) => new,
            };
            let old = |w: fn(&UsageState) -> Option<UsageWindow>| previous.as_ref().and_then(w);
            next.primary = still_full(limit.primary, old(|p| p.primary))
                .or_else(|| still_running(old(|p| p.primary)));
            next.secondary = still_full(limit.secondary, old(|p| p.secondary))
                .or_else(|| still_running(old(|p| p.secondary)));
            let rules = &self.rules;
            let blocks = |used: f64, which: usize| rules.blocks(used, step[which], 0);
            match previous {
                Some(previous) if !news(&previous, &next, blocks) => {
                    *known = Some(previous);
                }
                _ => {
                    changed = true;
                    *known = Some(next);
                }
            }
        }
        if let Some(account) = self.slots[slot as usize].as_mut() {
            if changed {
                mark_changed(&mut self.changed, account, slot);
            }
            self.rules
                .place_everywhere(account, &mut self.families, slot, clock);
        }
        Ok(())
    }

    /// The pool's usage as one report, per limit and window, for clients that show usage
    /// (a proxy sends it as the usage headers of its answers, so a client sees the pool it
    /// is using rather than whichever account served it). O(n · L); compute it now and
    /// then (a proxy: once per sync tick), not per request.
    ///
    /// | field | the pool's value |
    /// |---|---|
    /// | `used_percent` | the mean over enabled accounts: an account's reported use while its window runs, 100 % when the window keeps it out (at or above [`usage_threshold`](crate::PolicyConfig::usage_threshold), or within the margin: what is left cannot be used), 0 % once the window has ended ([`UsageWindow::ends_at`]) or when nothing was reported |
    /// | `resets_at` | the earliest reset of a running window with use in it (when capacity comes back) |
    /// | `window_minutes` | the longest reported |
    /// | `limit_name` | the latest reported |
    ///
    /// A window no enabled account reported is left out, and so is a limit without windows;
    /// credits and plan are not aggregated.
    ///
    /// ```
    /// use rotation_policy::usage::{LimitUsage, Percent, UsageReport, UsageWindow};
    /// use rotation_policy::{AccountId, PolicyConfig, Pool, Timestamp};
    ///
    /// let mut pool = Pool::new(PolicyConfig::default(), 0)?;
    /// for (id, used) in [("a", 99.0), ("b", 40.0)] {
    ///     let id = AccountId::new(id)?;
    ///     pool.add(id.clone())?;
    ///     let mut codex = LimitUsage::new("codex").unwrap();
    ///     codex.primary = Some(UsageWindow::new(Percent::new(used).unwrap()));
    ///     let mut report = UsageReport::default();
    ///     report.push(codex);
    ///     pool.record_usage(&id, &report, Timestamp::ZERO)?;
    /// }
    /// let pool_usage = pool.pool_usage(Timestamp::ZERO);
    /// let primary = pool_usage.limit("codex").and_then(|l| l.primary).unwrap();
    /// assert_eq!(primary.used_percent.get(), 70.0); // (100 + 40) / 2: `a` is kept out
    /// # Ok::<(), rotation_policy::PolicyError>(())
    /// ```
    pub fn pool_usage(&self, now: Timestamp) -> UsageReport {
        let t = self.clock.max(now.as_millis());
        let enabled: Vec<&Account> = self
            .slots
            .iter()
            .flatten()
            .filter(|a| a.disabled.is_none())
            .collect();
        let mut report = UsageReport::default();
        for (index, limit) in self.limits.iter().enumerate() {
            let Some(mut usage) = LimitUsage::new(&limit.id) else {
                continue;
            };
            usage.limit_name = limit.name.clone();
            usage.primary = self.aggregate(&enabled, t, |a| {
                let u = a.usage(index)?;
                Some((u.primary?, u.observed_at, a.steps(index).step[0]))
            });
            usage.secondary = self.aggregate(&enabled, t, |a| {
                let u = a.usage(index)?;
                Some((u.secondary?, u.observed_at, a.steps(index).step[1]))
            });
            if usage.has_windows() {
                report.push(usage);
            }
        }
        report
    }

    /// One window of the pool (see [`pool_usage`](Self::pool_usage)).
    fn aggregate(
        &self,
        accounts: &[&Account],
        t: u64,
        window: impl Fn(&Account) -> Option<(UsageWindow, Timestamp, f64)>,
    ) -> Option<UsageWindow> {
        let mut known = false;
        let mut sum = 0.0;
        let mut minutes: Option<u32> = None;
        let mut resets: Option<Timestamp> = None;
        for account in accounts {
            let Some((w, reported_at, step)) = window(account) else {
                continue;
            };
            known = true;
            minutes = minutes.max(w.window_minutes);
            let end = w.ends_at(reported_at);
            if end.as_millis() <= t {
                continue; // over since: nothing used
            }
            // A window the account is kept out of has nothing usable left.
            let used = if self.rules.blocks(w.used_percent.get(), step, 0) {
                100.0
            } else {
                w.used_percent.get()
            };
            sum += used;
            if used > 0.0 && w.resets_at.is_some() {
                resets = Some(resets.map_or(end, |r| r.min(end)));
            }
        }
        if !known {
            return None;
        }
        // ok: `known` means at least one account, and the mean of values in 0..=100 is one.
        let mean = Percent::new(sum / accounts.len() as f64).unwrap_or(Percent::FULL);
        let mut out = UsageWindow::new(mean);
        if let Some(m) = minutes {
            out = out.with_window_minutes(m);
        }
        if let Some(at) = resets {
            out = out.with_resets_at(at);
        }
        Some(out)
    }

    /// The usage part of an account's status at `t`.
    pub(super) fn usage_status(&self, a: &Account, t: u64) -> Vec<UsageStatus> {
        let running = |w: Option<UsageWindow>, reported_at: Timestamp| {
            w.filter(|w| w.ends_at(reported_at).as_millis() > t)
        };
        self.limits
            .iter()
            .enumerate()
            .filter_map(|(index, limit)| {
                let usage = a.usage(index)?;
                let mut shown = LimitUsage::new(&limit.id)?;
                shown.limit_name = usage.limit_name.clone().or_else(|| limit.name.clone());
                shown.primary = running(usage.primary, usage.observed_at);
                shown.secondary = running(usage.secondary, usage.observed_at);
                let blocked = self.rules.usage_blocked_until(a, index, t);
                Some(UsageStatus {
                    limit: shown,
                    observed_at: usage.observed_at,
                    blocked_until: (blocked > t).then_some(Timestamp::from_millis(blocked)),
                })
            })
            .collect()
    }

    /// The index of limit `id` (normalized), adding it while the pool has fewer than `cap`
    /// limits; a new `name` is remembered and re-maps model families to limits.
    ///
    /// A name comes with the time of the report that carries it (`named_at`, ms): it replaces
    /// the limit's name only when that report is at least [`USAGE_REFRESH`] newer than the
    /// one that named it, so a stale report (merged from a file, or an old answer) never
    /// renames a limit, and accounts reporting different names cannot make every report
    /// re-map model families (at most once a minute per limit).
    pub(super) fn limit_index(
        &mut self,
        id: &str,
        name: Option<(&str, u64)>,
        cap: usize,
    ) -> Option<usize> {
        let index = match self.limits.iter().position(|l| l.id == id) {
            Some(index) => index,
            None if self.limits.len() < cap.min(MAX_LIMITS) => {
                self.limits.push(Limit {
                    id: id.to_owned(),
                    name: None,
                    named_at: 0,
                });
                self.limits.len() - 1
            }
            None => return None,
        };
        let refresh = u64::try_from(USAGE_REFRESH.as_millis()).unwrap_or(u64::MAX);
        let limit = &mut self.limits[index];
        if let Some((name, at)) = name
            && limit.name.as_deref() != Some(name)
            && (limit.name.is_none() || at >= limit.named_at.saturating_add(refresh))
        {
            limit.name = Some(name.to_owned());
            limit.named_at = at;
            self.remap_families();
        } else if let Some((name, at)) = name
            && limit.name.as_deref() == Some(name)
        {
            limit.named_at = limit.named_at.max(at);
        }
        Some(index)
    }

    /// The limit requests of model family `name` count against: the metered limit that
    /// names it, else the default one (index 0).
    pub(super) fn limit_of_family(&self, name: &str) -> usize {
        self.limits
            .iter()
            .position(|l| {
                l.name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
            .filter(|&index| index != 0)
            .unwrap_or(0)
    }

    /// Points every family at the limit it counts against now, re-indexing the accounts of
    /// those that changed (O(n log n) each; it happens when a limit's name is first
    /// reported or changes, at most a few times).
    fn remap_families(&mut self) {
        for family in 0..self.families.len() {
            let limit = self.limit_of_family(&self.families[family].name);
            if self.families[family].limit == limit {
                continue;
            }
            self.families[family].limit = limit;
            for (slot, account) in self.slots.iter_mut().enumerate() {
                if let Some(account) = account {
                    // ok: slots.len() fits in u32, checked in `add`.
                    self.rules
                        .place(account, &mut self.families, slot as u32, family, self.clock);
                }
            }
        }
    }
}

/// Marks every window of `limit` that is past the threshold or margin as full (see the
/// 429 rule in `apply`); returns whether one changed.
pub(super) fn fill_windows_past_threshold(
    rules: &Rules,
    account: &mut Account,
    limit: usize,
    clock: u64,
) -> bool {
    let step = account.steps(limit).step;
    let Some(Some(usage)) = account.usage.get_mut(limit) else {
        return false;
    };
    let mut changed = false;
    for (window, step) in [&mut usage.primary, &mut usage.secondary]
        .into_iter()
        .zip(step)
    {
        if let Some(w) = window
            && w.used_percent < crate::usage::Percent::FULL
            && rules.blocks(w.used_percent.get(), step, 0)
        {
            w.used_percent = crate::usage::Percent::FULL;
            changed = true;
        }
    }
    if changed {
        // A new report of this account's usage (the 429's): it wins merges over the one it
        // corrects, here and in every process the change is shared with.
        let stamp = clock.max(usage.observed_at.as_millis().saturating_add(1));
        usage.observed_at = crate::Timestamp::from_millis(stamp);
    }
    changed
}
