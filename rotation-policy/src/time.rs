//! Caller-controlled time: a millisecond count since an epoch the caller picks.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A point in time: whole milliseconds since an epoch chosen by the caller.
///
/// The policy never reads a clock. Every call takes a `Timestamp` and only compares
/// timestamps with each other, so any epoch works as long as one pool sees one epoch:
///
/// - a proxy uses wall-clock time, [`Timestamp::from_system_time`]`(SystemTime::now())`
///   (milliseconds since the Unix epoch), which also lets it turn an HTTP-date
///   `Retry-After` into a wait;
/// - a simulation or a test starts at [`Timestamp::ZERO`] and adds virtual time.
///
/// Used with wall-clock time, a `Timestamp` is milliseconds since the Unix epoch: the
/// [`From`] conversions to and from [`SystemTime`] read it that way. State shared between
/// processes ([`PolicyState`](crate::PolicyState)) compares their timestamps, so every
/// process sharing it must use wall-clock time.
///
/// If a call passes a `now` earlier than one already seen (a wall clock stepped back),
/// the pool keeps using the latest `now` it has seen, so cooldowns never stretch or shrink
/// because of clock jumps backwards.
///
/// ```
/// use std::time::Duration;
/// use rotation_policy::Timestamp;
///
/// let t0 = Timestamp::ZERO;
/// let t1 = t0.saturating_add(Duration::from_millis(1500));
/// assert_eq!(t1.as_millis(), 1500);
/// assert_eq!(t1.saturating_duration_since(t0), Duration::from_millis(1500));
/// assert_eq!(t0.saturating_duration_since(t1), Duration::ZERO);
/// ```
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The epoch itself.
    pub const ZERO: Timestamp = Timestamp(0);

    /// A timestamp `millis` milliseconds after the epoch.
    ///
    /// ```
    /// # use rotation_policy::Timestamp;
    /// assert_eq!(Timestamp::from_millis(42).as_millis(), 42);
    /// ```
    pub const fn from_millis(millis: u64) -> Self {
        Timestamp(millis)
    }

    /// Milliseconds since the epoch.
    ///
    /// ```
    /// # use rotation_policy::Timestamp;
    /// assert_eq!(Timestamp::ZERO.as_millis(), 0);
    /// ```
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Wall-clock time as milliseconds since the Unix epoch (times before 1970 become
    /// [`Timestamp::ZERO`]).
    ///
    /// ```
    /// # use rotation_policy::Timestamp;
    /// use std::time::{Duration, UNIX_EPOCH};
    /// let t = Timestamp::from_system_time(UNIX_EPOCH + Duration::from_secs(2));
    /// assert_eq!(t.as_millis(), 2000);
    /// ```
    pub fn from_system_time(time: SystemTime) -> Self {
        match time.duration_since(UNIX_EPOCH) {
            Ok(since) => Timestamp(u64::try_from(since.as_millis()).unwrap_or(u64::MAX)),
            Err(_) => Timestamp::ZERO,
        }
    }

    /// The wall-clock time this timestamp stands for, read as milliseconds since the Unix
    /// epoch (the epoch [`from_system_time`](Self::from_system_time) uses). Saturates at the
    /// latest time the platform's [`SystemTime`] can hold.
    ///
    /// ```
    /// # use rotation_policy::Timestamp;
    /// use std::time::{Duration, UNIX_EPOCH};
    /// let t = Timestamp::from_millis(1_700_000_000_250);
    /// assert_eq!(t.to_system_time(), UNIX_EPOCH + Duration::from_millis(1_700_000_000_250));
    /// assert_eq!(Timestamp::from_system_time(t.to_system_time()), t);
    /// ```
    pub fn to_system_time(self) -> SystemTime {
        let since = Duration::from_millis(self.0);
        if let Some(time) = UNIX_EPOCH.checked_add(since) {
            return time;
        }
        // Beyond the platform's range (e.g. Windows' 100 ns ticks overflow before u64 ms do):
        // approach the latest representable time by halving steps, at most ~2 × 64 tries.
        // A step below the platform's resolution (Windows: 100 ns) adds nothing and must
        // halve too, or the loop never ends.
        let (mut time, mut step) = (UNIX_EPOCH, since);
        while !step.is_zero() {
            match time.checked_add(step) {
                Some(later) if later > time => time = later,
                _ => step /= 2,
            }
        }
        time
    }

    /// This time plus `d`, rounded up to a whole millisecond, saturating at the far future.
    ///
    /// ```
    /// # use rotation_policy::Timestamp;
    /// # use std::time::Duration;
    /// assert_eq!(Timestamp::ZERO.saturating_add(Duration::from_micros(1)).as_millis(), 1);
    /// ```
    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(ceil_millis(d)))
    }

    /// How long after `earlier` this time is; zero if it is not after it.
    ///
    /// ```
    /// # use rotation_policy::Timestamp;
    /// # use std::time::Duration;
    /// let a = Timestamp::from_millis(10);
    /// assert_eq!(Timestamp::from_millis(25).saturating_duration_since(a), Duration::from_millis(15));
    /// ```
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// Wall-clock time as milliseconds since the Unix epoch; the same as
/// [`Timestamp::from_system_time`] (times before 1970 become [`Timestamp::ZERO`]).
///
/// ```
/// # use rotation_policy::Timestamp;
/// use std::time::{Duration, UNIX_EPOCH};
/// let t: Timestamp = (UNIX_EPOCH + Duration::from_millis(1500)).into();
/// assert_eq!(t, Timestamp::from_millis(1500));
/// ```
impl From<SystemTime> for Timestamp {
    fn from(time: SystemTime) -> Self {
        Timestamp::from_system_time(time)
    }
}

/// The wall-clock time of a timestamp read as milliseconds since the Unix epoch; the same as
/// [`Timestamp::to_system_time`] (saturating at the platform's latest time).
///
/// ```
/// # use rotation_policy::Timestamp;
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// let wall: SystemTime = Timestamp::from_millis(1500).into();
/// assert_eq!(wall, UNIX_EPOCH + Duration::from_millis(1500));
/// ```
impl From<Timestamp> for SystemTime {
    fn from(time: Timestamp) -> Self {
        time.to_system_time()
    }
}

/// A duration in whole milliseconds, rounded up so a wait is never shorter than asked.
pub(crate) fn ceil_millis(d: Duration) -> u64 {
    let nanos = d.as_nanos();
    let millis = nanos.div_ceil(1_000_000);
    u64::try_from(millis).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceil_millis_rounds_up_and_saturates() {
        assert_eq!(ceil_millis(Duration::ZERO), 0);
        assert_eq!(ceil_millis(Duration::from_nanos(1)), 1);
        assert_eq!(ceil_millis(Duration::from_millis(7)), 7);
        assert_eq!(ceil_millis(Duration::MAX), u64::MAX);
    }

    #[test]
    fn system_time_before_epoch_is_zero() {
        let before = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(Timestamp::from_system_time(before), Timestamp::ZERO);
    }

    #[test]
    fn system_time_round_trips_and_saturates() {
        for ms in [0, 1, 1_700_000_000_250, 253_402_300_799_999] {
            let t = Timestamp::from_millis(ms);
            assert_eq!(Timestamp::from(SystemTime::from(t)), t);
        }
        // The far future never panics; it is the latest time the platform holds (on Linux
        // every u64 of milliseconds fits, so it round-trips exactly).
        let far = Timestamp::from_millis(u64::MAX).to_system_time();
        assert!(far > UNIX_EPOCH + Duration::from_secs(253_402_300_799));
        assert!(Timestamp::from(far).as_millis() > 253_402_300_799_999);
    }

    #[test]
    fn saturating_add_never_wraps() {
        let far = Timestamp::from_millis(u64::MAX - 1);
        assert_eq!(
            far.saturating_add(Duration::from_secs(10)).as_millis(),
            u64::MAX
        );
    }
}
