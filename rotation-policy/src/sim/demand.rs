//! A diurnal, weekly demand curve for the simulation (pure): when the next request arrives.

use serde::{Deserialize, Serialize};

use crate::PolicyError;
use crate::rng::SplitMix64;

/// Share of the peak rate in each hour of a weekday, in percent (hour 0 = midnight): quiet
/// nights, a morning ramp, two busy blocks around lunch, a long evening tail.
pub const WEEKDAY_SHAPE: [u8; 24] = [
    5, 5, 5, 5, 5, 5, 5, 15, 40, 80, 100, 100, 70, 90, 100, 100, 90, 70, 45, 30, 25, 20, 15, 10,
];

const HOUR_MS: u64 = 60 * 60 * 1000;
const DAY_MS: u64 = 24 * HOUR_MS;

/// Client demand that follows the clock over whole simulated days, instead of a constant
/// rate: the hourly [`WEEKDAY_SHAPE`] scaled to `peak_per_account_hour` × accounts at its
/// busiest hours, Saturday and Sunday (days 5 and 6; the run starts on a Monday at 00:00)
/// at `weekend_percent` of that, and every day's volume multiplied by a seeded factor
/// within ±`day_variation_percent`. Within an hour, gaps between requests are uniform in
/// 0..2×(mean gap), like the constant-rate traffic.
///
/// With the default window model one account sustains about 10 requests an hour over its
/// 5-hour window (150 units at 3 units a request), and 500 a week; the default peak of 10
/// per account and hour makes busy days' peaks exceed what the pool's short windows
/// sustain, nights far below it, and a week's demand 10–20 % above the pool's weekly
/// capacity (≈ 58 peak-hours a week against 50).
///
/// ```
/// use rotation_policy::sim::{Demand, WEEKDAY_SHAPE};
/// let demand = Demand::default();
/// assert_eq!(demand.days, 7);
/// assert_eq!(WEEKDAY_SHAPE.iter().copied().max(), Some(100));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Demand {
    /// Simulated days (1–366): requests arrive from day 0, 00:00 until the end of the last.
    pub days: u32,
    /// Requests per hour per account in the pool at the busiest hours of an average
    /// weekday (≥ 1). Default: 10.
    pub peak_per_account_hour: u32,
    /// A weekend day's volume, in percent of a weekday's (0–100). Default: 30.
    pub weekend_percent: u8,
    /// Each day's volume varies by a seeded factor within ± this many percent (0–90).
    /// Default: 25.
    pub day_variation_percent: u8,
}

impl Default for Demand {
    fn default() -> Self {
        Demand {
            days: 7,
            peak_per_account_hour: 10,
            weekend_percent: 30,
            day_variation_percent: 25,
        }
    }
}

impl Demand {
    /// Checks every field; the error names the first bad one.
    pub(super) fn validate(&self) -> Result<(), PolicyError> {
        let bad = |field: &'static str, reason: &str| {
            Err(PolicyError::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        if !(1..=366).contains(&self.days) {
            return bad("sim.demand.days", "must be from 1 to 366");
        }
        if self.peak_per_account_hour == 0 {
            return bad("sim.demand.peak_per_account_hour", "is 0; use at least 1");
        }
        if self.weekend_percent > 100 {
            return bad("sim.demand.weekend_percent", "must be from 0 to 100");
        }
        if self.day_variation_percent > 90 {
            return bad("sim.demand.day_variation_percent", "must be from 0 to 90");
        }
        Ok(())
    }

    /// When arrivals stop (ms).
    pub(super) fn end_ms(&self) -> u64 {
        u64::from(self.days) * DAY_MS
    }
}

/// The arrival process of one run: the demand, the pool size and the day factors drawn
/// from the workload's seed.
pub(super) struct Arrivals {
    /// Requests per hour at 100 % shape on each day, in thousandths (integer arithmetic
    /// only, so every platform draws the same workload).
    day_peak_milli: Vec<u64>,
    end: u64,
}

impl Arrivals {
    pub(super) fn new(demand: &Demand, accounts: usize, rng: &mut SplitMix64) -> Self {
        let v = u64::from(demand.day_variation_percent);
        let peak = u64::from(demand.peak_per_account_hour).saturating_mul(accounts as u64);
        let day_peak_milli = (0..demand.days)
            .map(|day| {
                let factor = 100 - v + rng.below(2 * v + 1); // percent
                let week = if day % 7 >= 5 {
                    u64::from(demand.weekend_percent)
                } else {
                    100
                };
                // requests/h × 1000 × factor% × week%
                peak.saturating_mul(1000)
                    .saturating_mul(factor)
                    .saturating_mul(week)
                    / 10_000
            })
            .collect();
        Arrivals {
            day_peak_milli,
            end: demand.end_ms(),
        }
    }

    /// The arrival after one at `now`, or `None` when the demand is over. Bounded: each
    /// turn of the loop moves to the next hour.
    pub(super) fn next(&self, now: u64, rng: &mut SplitMix64) -> Option<u64> {
        let mut t = now;
        while t < self.end {
            let hour = t / HOUR_MS;
            let day = (hour / 24) as usize;
            let shape = u64::from(WEEKDAY_SHAPE[(hour % 24) as usize]);
            let day_peak = self.day_peak_milli.get(day).copied().unwrap_or(0);
            let rate_milli = day_peak.saturating_mul(shape) / 100;
            if rate_milli == 0 {
                t = (hour + 1) * HOUR_MS;
                continue;
            }
            // mean gap (ms) = 3_600_000 / (rate_milli / 1000)
            let mean_gap = (HOUR_MS * 1000 / rate_milli).max(1);
            let at = t.saturating_add(rng.below(2 * mean_gap + 1));
            return (at < self.end).then_some(at);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_follow_the_curve_and_stop_at_the_end() {
        let demand = Demand {
            days: 7,
            day_variation_percent: 0,
            ..Demand::default()
        };
        let mut rng = SplitMix64::new(3);
        let arrivals = Arrivals::new(&demand, 10, &mut rng);
        let mut per_hour = vec![0u64; 7 * 24];
        let mut t = 0;
        let mut n = 0;
        while let Some(at) = arrivals.next(t, &mut rng) {
            assert!(at >= t && at < demand.end_ms());
            per_hour[(at / HOUR_MS) as usize] += 1;
            t = at;
            n += 1;
            assert!(n < 100_000, "bounded");
        }
        // Peak weekday hours ≈ 100/h, nights ≈ 5/h, weekend peaks ≈ 30/h.
        let around = |hour: usize, expected: u64| {
            let got = per_hour[hour];
            assert!(
                got * 10 >= expected * 7 && got * 10 <= expected * 13,
                "hour {hour}: {got}, expected about {expected}"
            );
        };
        around(10, 100);
        around(2 * 24 + 14, 100);
        around(5 * 24 + 10, 30);
        let night: u64 = (0..7).map(|h| per_hour[24 + h]).sum();
        assert!((20..=50).contains(&night), "a night: {night}");
        // About 58 peak-hours a week.
        assert!((5_000..=6_600).contains(&n), "a week: {n}");
    }

    #[test]
    fn the_same_seed_draws_the_same_days() {
        let demand = Demand::default();
        let a = Arrivals::new(&demand, 5, &mut SplitMix64::new(9));
        let b = Arrivals::new(&demand, 5, &mut SplitMix64::new(9));
        let c = Arrivals::new(&demand, 5, &mut SplitMix64::new(10));
        assert_eq!(a.day_peak_milli, b.day_peak_milli);
        assert_ne!(a.day_peak_milli, c.day_peak_milli);
        assert!(
            a.day_peak_milli[..5]
                .iter()
                .all(|&p| (37_500..=62_500).contains(&p))
        );
    }

    #[test]
    fn validation_names_the_bad_field() {
        let field = |demand: Demand| match demand.validate() {
            Err(PolicyError::InvalidConfig { field, .. }) => field,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(Demand::default().validate().is_ok());
        assert_eq!(
            field(Demand {
                days: 0,
                ..Demand::default()
            }),
            "sim.demand.days"
        );
        assert_eq!(
            field(Demand {
                peak_per_account_hour: 0,
                ..Demand::default()
            }),
            "sim.demand.peak_per_account_hour"
        );
        assert_eq!(
            field(Demand {
                weekend_percent: 101,
                ..Demand::default()
            }),
            "sim.demand.weekend_percent"
        );
        assert_eq!(
            field(Demand {
                day_variation_percent: 91,
                ..Demand::default()
            }),
            "sim.demand.day_variation_percent"
        );
    }
}
