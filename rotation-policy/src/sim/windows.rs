//! The synthetic upstream's usage windows (pure): per account a short window that starts at
//! its first use and a weekly window on a fixed, per-account schedule, both metered in
//! usage units; the bookkeeping of capacity that expired unused; and the usage report an
//! answer carries.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::PolicyError;
use crate::Timestamp;
use crate::usage::{DEFAULT_LIMIT, LimitUsage, Percent, UsageReport, UsageWindow};

/// Usage windows of the simulated upstream, as a ChatGPT plan meters Codex.
///
/// Every account has two windows, both metered in abstract **usage units**; a served
/// request costs a whole number of units drawn (seeded) from `cost_min..=cost_max`, the same
/// on every attempt of that request:
///
/// - the **primary** (short, 5 h) window **starts at the first request served after the
///   previous one ended** and lasts `primary_length`. That is how the ChatGPT backend runs
///   its short window, and it matters for the policy: an account nobody used has no running
///   short window, so none of its short-window capacity is expiring. (Fixed windows would
///   make every account's short capacity expire on a clock whether used or not, and would
///   hide the cost of starting windows on many accounts at once.)
/// - the **secondary** (weekly) window runs on a fixed schedule of `secondary_length`,
///   reset at a seeded offset per account, so accounts' weeks end at different times.
///   At the start no short window runs, and each week is already used in proportion to
///   how much of it has gone ([`weekly_used_at_start`](Self::weekly_used_at_start)), as in
///   a pool that was in use before: an account whose week resets soon has little left.
///
/// The upstream answers **429** to a request that would take either window past its
/// capacity, with `retry-after-ms` = time until that window resets (the later one if both
/// would overflow), as the backend's usage-limit answer does; the policy clamps it to
/// [`max_cooldown`](crate::PolicyConfig::max_cooldown). Every 200 and 429 carries the
/// account's usage (used percent, window minutes, reset time of both windows), which the
/// simulation gives to [`Pool::record_usage`](crate::Pool::record_usage) before
/// [`Pool::report`](crate::Pool::report), as a proxy does with the parsed headers.
///
/// The defaults follow the published range of 30–150 Codex messages per 5 hours on a Plus
/// plan: 150 units per 5 h at 1–5 units a request. The weekly capacity (ten full 5-hour
/// windows) is an assumption: OpenAI publishes no number for it.
///
/// ```
/// use rotation_policy::sim::{simulate, SimConfig, WindowModel};
///
/// let mut config = SimConfig::windowed(4, 1); // 4 accounts, 1 day of the default Demand
/// let mut model = WindowModel::default();
/// model.reports_include_request = true; // exact reports instead of one request behind
/// config.windows = Some(model);
/// let report = simulate(&config)?;
/// let windows = report.windows.expect("window model on");
/// assert!(windows.served_units > 0);
/// assert_eq!(windows.window_429s, 0); // the learned margin leaves room for any request
/// # Ok::<(), rotation_policy::PolicyError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct WindowModel {
    /// Units one account may use in one primary window (≥ `cost_max`). Default: 150.
    pub primary_capacity: u32,
    /// Length of the primary window, whole minutes (1 min to 30 days). Default: 5 h.
    pub primary_length: Duration,
    /// Units one account may use in one weekly window (≥ `cost_max`). Default: 1,500.
    pub secondary_capacity: u32,
    /// Length of the weekly window, whole minutes (1 min to 30 days). Default: 7 days.
    pub secondary_length: Duration,
    /// Fewest units one request costs (≥ 1). Default: 1.
    pub cost_min: u32,
    /// Most units one request costs (≥ `cost_min`). Default: 5.
    pub cost_max: u32,
    /// Whether the usage reported with a 200 already counts that request. `false`
    /// (default): it does not, as with the real backend's response headers, which are sent
    /// before the model has run and so before the request's cost is known; the policy
    /// learns a request's cost with the account's next answer. `true`: reports are exact
    /// (as a usage query right after the answer would be).
    pub reports_include_request: bool,
    /// How used each account's weekly window is when the run starts, in percent of the
    /// part of that week already gone (0–100): 100 (default) is a pool that was in full use
    /// before the run (an account whose week ends in a day has used 6/7 of it), 0 a fresh
    /// pool whose every account starts its week unused.
    pub weekly_used_at_start: u8,
    /// Whether the pool knows every account's usage before the first request, as a proxy
    /// that queries the usage endpoint of each account when it starts (or reads usage
    /// shared by an earlier run) would. `false` (default): the pool learns an account's
    /// usage only from answers, so an account never used has no usage known.
    pub usage_known_at_start: bool,
    /// Whether the pool is given the usage the upstream reports (`true`, default). `false`
    /// runs the policy as it was before usage reports: it learns of a full window only
    /// from the upstream's 429 — the baseline quota-aware rotation is measured against.
    pub usage_reports: bool,
}

impl Default for WindowModel {
    fn default() -> Self {
        WindowModel {
            primary_capacity: 150,
            primary_length: Duration::from_secs(5 * 60 * 60),
            secondary_capacity: 1_500,
            secondary_length: Duration::from_secs(7 * 24 * 60 * 60),
            cost_min: 1,
            cost_max: 5,
            reports_include_request: false,
            weekly_used_at_start: 100,
            usage_known_at_start: false,
            usage_reports: true,
        }
    }
}

/// Longest window accepted (a report's reset time must stay plausible; a month is plenty).
const LONGEST_WINDOW: Duration = Duration::from_secs(30 * 24 * 60 * 60);

impl WindowModel {
    /// Checks every field; the error names the first bad one.
    pub(super) fn validate(&self) -> Result<(), PolicyError> {
        let bad = |field: &'static str, reason: &str| {
            Err(PolicyError::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        for (field, length) in [
            ("sim.windows.primary_length", self.primary_length),
            ("sim.windows.secondary_length", self.secondary_length),
        ] {
            if length < Duration::from_secs(60) || length > LONGEST_WINDOW {
                return bad(field, "must be from 1 minute to 30 days");
            }
            if length.as_nanos() % 60_000_000_000 != 0 {
                return bad(field, "must be whole minutes (usage reports count minutes)");
            }
        }
        if self.weekly_used_at_start > 100 {
            return bad("sim.windows.weekly_used_at_start", "must be from 0 to 100");
        }
        if self.cost_min == 0 {
            return bad(
                "sim.windows.cost_min",
                "is 0; a request costs at least 1 unit",
            );
        }
        if self.cost_max < self.cost_min {
            return bad("sim.windows.cost_max", "is below cost_min");
        }
        if self.primary_capacity < self.cost_max {
            return bad(
                "sim.windows.primary_capacity",
                "is below cost_max; some requests could never be served",
            );
        }
        if self.secondary_capacity < self.cost_max {
            return bad(
                "sim.windows.secondary_capacity",
                "is below cost_max; some requests could never be served",
            );
        }
        Ok(())
    }

    fn primary_ms(&self) -> u64 {
        millis(self.primary_length)
    }

    pub(super) fn secondary_ms(&self) -> u64 {
        millis(self.secondary_length)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How the windows of one kind (primary or weekly) were used, over the windows that ended
/// during the run (a window still running at the end is not counted: its headroom has not
/// expired yet).
///
/// ```
/// use rotation_policy::sim::WindowUse;
/// let used = WindowUse { windows_ended: 2, capacity: 300, unused: 30 };
/// assert_eq!(used.unused_percent(), 10.0);
/// assert_eq!(WindowUse::default().unused_percent(), 0.0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowUse {
    /// Windows that reset during the run.
    pub windows_ended: u64,
    /// Their capacity, in units.
    pub capacity: u64,
    /// Units of it nobody used before the reset: capacity left unused.
    pub unused: u64,
}

impl WindowUse {
    /// `unused` as a percentage of `capacity` (0 when no window ended).
    pub fn unused_percent(&self) -> f64 {
        if self.capacity == 0 {
            0.0
        } else {
            100.0 * self.unused as f64 / self.capacity as f64
        }
    }

    fn expire(&mut self, windows: u64, capacity: u32, used: u64) {
        let capacity = u64::from(capacity);
        self.windows_ended = self.windows_ended.saturating_add(windows);
        self.capacity = self
            .capacity
            .saturating_add(windows.saturating_mul(capacity));
        // The first window had `used`; any further ones passed without a request.
        let unused =
            capacity.saturating_sub(used) + windows.saturating_sub(1).saturating_mul(capacity);
        self.unused = self.unused.saturating_add(unused);
    }
}

/// Capacity that expired, per window kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Expiry {
    pub(super) primary: WindowUse,
    pub(super) secondary: WindowUse,
}

/// A running primary window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Running {
    ends: u64,
    used: u64,
}

/// One account's windows at the upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct AccountWindows {
    primary: Option<Running>,
    /// When the current weekly window resets.
    secondary_ends: u64,
    secondary_used: u64,
}

/// What the upstream did with a request, window-wise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Charge {
    /// Served; the cost was charged to both windows.
    Served,
    /// Refused: it would have overflowed a window. `resets_at` is the (later) reset of the
    /// window(s) it would overflow.
    Refused {
        /// When the blocking window resets (ms).
        resets_at: u64,
        /// The weekly window would overflow.
        weekly: bool,
    },
}

impl AccountWindows {
    /// An account whose first weekly window resets at `first_weekly_reset` (ms, > 0) and
    /// has `used` units of it used.
    pub(super) fn new(first_weekly_reset: u64, used: u64) -> Self {
        AccountWindows {
            primary: None,
            secondary_ends: first_weekly_reset,
            secondary_used: used,
        }
    }

    /// The units an account whose week resets at `first_weekly_reset` has used at the
    /// start (see [`WindowModel::weekly_used_at_start`]).
    pub(super) fn used_at_start(model: &WindowModel, first_weekly_reset: u64) -> u64 {
        let week = model.secondary_ms().max(1);
        let gone = week.saturating_sub(first_weekly_reset.min(week));
        // u128: capacity × week × 100 overflows u64 for long weeks and large capacities.
        let used = u128::from(model.secondary_capacity)
            * u128::from(gone)
            * u128::from(model.weekly_used_at_start.min(100))
            / (u128::from(week) * 100);
        u64::try_from(used).unwrap_or(u64::MAX)
    }

    /// Ends the windows whose reset is at or before `now`, booking their headroom as
    /// expired. O(1) however long the account was idle.
    pub(super) fn advance(&mut self, now: u64, model: &WindowModel, expiry: &mut Expiry) {
        if let Some(running) = self.primary
            && running.ends <= now
        {
            expiry
                .primary
                .expire(1, model.primary_capacity, running.used);
            self.primary = None;
        }
        if self.secondary_ends <= now {
            let length = model.secondary_ms().max(1);
            let windows = (now - self.secondary_ends) / length + 1;
            expiry
                .secondary
                .expire(windows, model.secondary_capacity, self.secondary_used);
            self.secondary_used = 0;
            self.secondary_ends = self
                .secondary_ends
                .saturating_add(windows.saturating_mul(length));
        }
    }

    /// Serves or refuses a request costing `cost` at `now` (call [`advance`] first).
    pub(super) fn charge(&mut self, now: u64, cost: u32, model: &WindowModel) -> Charge {
        let cost = u64::from(cost);
        let primary_used = self.primary.map_or(0, |r| r.used);
        let primary_over = primary_used + cost > u64::from(model.primary_capacity);
        let weekly_over = self.secondary_used + cost > u64::from(model.secondary_capacity);
        if primary_over || weekly_over {
            // A primary window can only overflow while running (cost_max ≤ capacity).
            let primary_reset = self.primary.filter(|_| primary_over).map_or(0, |r| r.ends);
            let weekly_reset = if weekly_over { self.secondary_ends } else { 0 };
            return Charge::Refused {
                resets_at: primary_reset.max(weekly_reset),
                weekly: weekly_over,
            };
        }
        let running = self.primary.get_or_insert(Running {
            ends: now.saturating_add(model.primary_ms()),
            used: 0,
        });
        running.used += cost;
        self.secondary_used += cost;
        Charge::Served
    }

    /// Units used in the running primary window (0 when none runs).
    pub(super) fn primary_used(&self) -> u64 {
        self.primary.map_or(0, |r| r.used)
    }

    /// When the running primary window resets, if one runs.
    pub(super) fn primary_resets_at(&self) -> Option<u64> {
        self.primary.map(|r| r.ends)
    }

    /// Units used in the current weekly window.
    pub(super) fn secondary_used(&self) -> u64 {
        self.secondary_used
    }

    /// When the current weekly window resets.
    pub(super) fn secondary_resets_at(&self) -> u64 {
        self.secondary_ends
    }

    /// The usage an answer reports, the `codex` limit's two windows. `uncounted` units (the
    /// request being answered, when reports do not include it yet) are left out; a primary
    /// window without a running window reads as 0 % with no reset time.
    pub(super) fn report(&self, model: &WindowModel, uncounted: u64) -> UsageReport {
        let window = |used: u64, capacity: u32, length: Duration, resets_at: Option<u64>| {
            let share = 100.0 * used.saturating_sub(uncounted) as f64 / f64::from(capacity);
            let minutes = u32::try_from(length.as_secs() / 60).unwrap_or(u32::MAX);
            let mut window = UsageWindow::new(Percent::new(share).unwrap_or(Percent::FULL))
                .with_window_minutes(minutes);
            if let Some(at) = resets_at {
                window = window.with_resets_at(Timestamp::from_millis(at));
            }
            window
        };
        let mut report = UsageReport::default();
        if let Some(mut limit) = LimitUsage::new(DEFAULT_LIMIT) {
            limit.primary = Some(window(
                self.primary_used(),
                model.primary_capacity,
                model.primary_length,
                self.primary_resets_at(),
            ));
            limit.secondary = Some(window(
                self.secondary_used,
                model.secondary_capacity,
                model.secondary_length,
                Some(self.secondary_ends),
            ));
            report.push(limit);
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> WindowModel {
        WindowModel {
            primary_capacity: 10,
            primary_length: Duration::from_secs(60 * 60),
            secondary_capacity: 25,
            secondary_length: Duration::from_secs(4 * 60 * 60),
            cost_min: 1,
            cost_max: 4,
            reports_include_request: false,
            weekly_used_at_start: 0,
            usage_known_at_start: false,
            usage_reports: true,
        }
    }

    const HOUR: u64 = 3_600_000;

    #[test]
    fn the_primary_window_starts_at_first_use_and_refuses_what_would_overflow() {
        let model = small();
        let mut expiry = Expiry::default();
        let mut account = AccountWindows::new(4 * HOUR, 0);
        assert_eq!(
            account.primary_resets_at(),
            None,
            "unused: no running window"
        );
        account.advance(1_000, &model, &mut expiry);
        assert_eq!(account.charge(1_000, 4, &model), Charge::Served);
        assert_eq!(account.primary_resets_at(), Some(1_000 + HOUR));
        assert_eq!(account.charge(2_000, 4, &model), Charge::Served);
        // 8 used: 2 more fit, 3 do not.
        assert_eq!(
            account.charge(3_000, 3, &model),
            Charge::Refused {
                resets_at: 1_000 + HOUR,
                weekly: false
            }
        );
        assert_eq!(account.charge(3_000, 2, &model), Charge::Served);
        assert_eq!(account.primary_used(), 10);
        // The window ends an hour after its first request, with nothing left unused.
        account.advance(1_000 + HOUR, &model, &mut expiry);
        assert_eq!(account.primary_used(), 0);
        assert_eq!(account.primary_resets_at(), None);
        assert_eq!(
            expiry.primary,
            WindowUse {
                windows_ended: 1,
                capacity: 10,
                unused: 0
            }
        );
    }

    #[test]
    fn the_weekly_window_resets_on_its_schedule_and_books_idle_windows_as_unused() {
        let model = WindowModel {
            secondary_capacity: 12,
            ..small()
        };
        let mut expiry = Expiry::default();
        // The first week ends at 1.5 h, before the second primary window does.
        let mut account = AccountWindows::new(HOUR * 3 / 2, 0);
        account.advance(0, &model, &mut expiry);
        assert_eq!(account.charge(0, 4, &model), Charge::Served);
        account.advance(HOUR, &model, &mut expiry);
        assert_eq!(account.charge(HOUR, 4, &model), Charge::Served);
        assert_eq!(account.charge(HOUR, 4, &model), Charge::Served);
        assert_eq!((account.primary_used(), account.secondary_used()), (8, 12));
        // Only the week would overflow: blocked until the week ends.
        assert_eq!(
            account.charge(HOUR, 2, &model),
            Charge::Refused {
                resets_at: HOUR * 3 / 2,
                weekly: true
            }
        );
        // Both would overflow: the later reset (the primary window's) is the one that matters.
        assert_eq!(
            account.charge(HOUR, 3, &model),
            Charge::Refused {
                resets_at: 2 * HOUR,
                weekly: true
            }
        );
        // The week resets: capacity is back (the primary window still has 2 units).
        account.advance(HOUR * 3 / 2, &model, &mut expiry);
        assert_eq!(account.secondary_used(), 0);
        assert_eq!(account.charge(HOUR * 3 / 2, 2, &model), Charge::Served);
        // Idle for two weekly windows and a bit: two more weeks ended, the second unused.
        account.advance(HOUR * 3 / 2 + 8 * HOUR + 5, &model, &mut expiry);
        assert_eq!(account.secondary_resets_at(), HOUR * 3 / 2 + 12 * HOUR);
        assert_eq!(
            expiry.secondary,
            WindowUse {
                windows_ended: 3,
                capacity: 36,
                unused: 10 + 12
            }
        );
        // Primary windows: [0, 1 h) used 4, [1 h, 2 h) used 10.
        assert_eq!(
            expiry.primary,
            WindowUse {
                windows_ended: 2,
                capacity: 20,
                unused: 6
            }
        );
        assert_eq!(
            (account.primary_used(), account.primary_resets_at()),
            (0, None)
        );
    }

    #[test]
    fn reports_carry_both_windows_and_can_leave_the_last_request_out() {
        let model = small();
        let mut account = AccountWindows::new(2 * HOUR, 0);
        assert_eq!(account.charge(0, 4, &model), Charge::Served);
        let report = account.report(&model, 4);
        let codex = report.limit("codex").expect("codex limit");
        let primary = codex.primary.expect("primary");
        assert_eq!(primary.used_percent.get(), 0.0);
        assert_eq!(primary.window_minutes, Some(60));
        assert_eq!(primary.resets_at, Some(Timestamp::from_millis(HOUR)));
        let report = account.report(&model, 0);
        let codex = report.limit("codex").expect("codex limit");
        assert_eq!(codex.primary.map(|w| w.used_percent.get()), Some(40.0));
        let weekly = codex.secondary.expect("secondary");
        assert_eq!(weekly.used_percent.get(), 16.0);
        assert_eq!(weekly.window_minutes, Some(240));
        assert_eq!(weekly.resets_at, Some(Timestamp::from_millis(2 * HOUR)));
        let idle = AccountWindows::new(HOUR, 0).report(&model, 0);
        let primary = idle.limits[0].primary.expect("primary");
        assert_eq!(
            (primary.used_percent, primary.resets_at),
            (Percent::ZERO, None)
        );
    }

    #[test]
    fn a_pool_in_use_starts_with_its_weeks_used_in_proportion_to_the_time_gone() {
        let mut model = small(); // 25 units over 4 hours
        model.weekly_used_at_start = 100;
        assert_eq!(AccountWindows::used_at_start(&model, 4 * HOUR), 0);
        assert_eq!(AccountWindows::used_at_start(&model, HOUR), 18); // 3/4 of 25, rounded down
        assert_eq!(AccountWindows::used_at_start(&model, 1), 24);
        model.weekly_used_at_start = 40;
        assert_eq!(AccountWindows::used_at_start(&model, 2 * HOUR), 5);
        model.weekly_used_at_start = 0;
        assert_eq!(AccountWindows::used_at_start(&model, 1), 0);
    }

    #[test]
    fn validation_names_the_bad_field() {
        let field = |model: WindowModel| match model.validate() {
            Err(PolicyError::InvalidConfig { field, .. }) => field,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(WindowModel::default().validate().is_ok());
        assert!(small().validate().is_ok());
        let mut m = small();
        m.cost_min = 0;
        assert_eq!(field(m), "sim.windows.cost_min");
        let mut m = small();
        m.cost_max = 0;
        assert_eq!(field(m), "sim.windows.cost_max");
        let mut m = small();
        m.primary_capacity = 3;
        assert_eq!(field(m), "sim.windows.primary_capacity");
        let mut m = small();
        m.secondary_capacity = 3;
        assert_eq!(field(m), "sim.windows.secondary_capacity");
        let mut m = small();
        m.weekly_used_at_start = 101;
        assert_eq!(field(m), "sim.windows.weekly_used_at_start");
        let mut m = small();
        m.primary_length = Duration::from_secs(90);
        assert_eq!(field(m), "sim.windows.primary_length");
        let mut m = small();
        m.secondary_length = Duration::from_secs(31 * 24 * 60 * 60);
        assert_eq!(field(m), "sim.windows.secondary_length");
    }
}
