//! Usage reports: how much of each usage window an account has used, as the Codex backend
//! reports it. Pure data here; the parsers (response headers, the `codex.rate_limits`
//! stream event, the usage endpoint's JSON) are in `parse`.
//!
//! ChatGPT-plan accounts have usage windows (about 5 hours, the *primary* window, and a
//! week, the *secondary* one) per **limit**: `codex` for most models, and further metered
//! limits (e.g. `codex_bengalfox`) whose `limit_name` says which model counts against them.
//! Every value here is checked when it is made: a percentage is finite and within 0–100, a
//! reset time is a plausible wall-clock time, a limit id is short and plain. What a parser
//! cannot read that way is absent, never an error and never a panic.

mod parse;

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// The limit every request counts against unless a metered limit names its model.
pub const DEFAULT_LIMIT: &str = "codex";

/// Most limits one report (and one pool) keeps; further ones are dropped.
pub const MAX_LIMITS: usize = 16;

/// Longest limit id kept (bytes).
pub const MAX_LIMIT_ID_LEN: usize = 64;

/// Longest limit name or plan type kept (bytes).
pub const MAX_LIMIT_NAME_LEN: usize = 128;

/// How long after a report a window of unknown length is taken to end at the latest: a
/// little over the longest window seen (a week), so a hostile or broken reset time cannot
/// pin an account for long. See [`UsageWindow::ends_at`].
pub const MAX_WINDOW_SPAN: std::time::Duration = std::time::Duration::from_secs(8 * 24 * 60 * 60);

/// Longest window length kept: 400 days, in minutes. Longer reads as unknown.
pub const MAX_WINDOW_MINUTES: u32 = 400 * 24 * 60;

/// Largest JSON document the parsers read (a stream event's `data`, the usage endpoint's
/// answer): 64 KiB. Real ones are well under 2 KiB; a larger one is refused unread, so a
/// hostile upstream cannot make a parse cost more than this.
pub const MAX_JSON_BYTES: usize = 64 * 1024;

/// A share of a usage window, in percent: finite, 0 to 100 inclusive.
///
/// Reports above 100 (an account used past its limit) read as 100; negative, NaN, infinite
/// or absurd values (over [`Percent::LARGEST_READ`]) are refused by [`Percent::new`].
///
/// ```
/// use rotation_policy::usage::Percent;
/// assert_eq!(Percent::new(42.5).map(Percent::get), Some(42.5));
/// assert_eq!(Percent::new(130.0).map(Percent::get), Some(100.0));
/// assert_eq!(Percent::new(f64::NAN), None);
/// assert_eq!(Percent::new(-1.0), None);
/// assert_eq!(Percent::new(1e300), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Percent(f64);

// A `Percent` is never NaN (checked in `new`), so `==` is an equivalence.
impl Eq for Percent {}

// One order for both traits (never NaN, no -0.0: `total_cmp` agrees with `<` on these).
impl PartialOrd for Percent {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Percent {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl Percent {
    /// 0 %.
    pub const ZERO: Percent = Percent(0.0);
    /// 100 %.
    pub const FULL: Percent = Percent(100.0);
    /// The largest reported value read as a percentage (and cut to 100); anything larger is
    /// taken as garbage.
    pub const LARGEST_READ: f64 = 1000.0;

    /// `value` as a percentage, or `None` when it is not a usable one (see the type docs).
    pub fn new(value: f64) -> Option<Percent> {
        if !value.is_finite() || !(0.0..=Self::LARGEST_READ).contains(&value) {
            return None;
        }
        // `+ 0.0` turns -0.0 into 0.0, so equal values have one representation.
        Some(Percent(value.min(100.0) + 0.0))
    }

    /// The value, 0 to 100.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Percent {
    /// Reads a number and checks it like [`Percent::new`]; a bad value is an error here
    /// (the state module reads bad values in files as absent before this is reached).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = f64::deserialize(deserializer)?;
        Percent::new(value).ok_or_else(|| {
            serde::de::Error::custom("a usage percentage must be a number from 0 to 1000")
        })
    }
}

/// One usage window of one limit, as last reported.
///
/// ```
/// use rotation_policy::Timestamp;
/// use rotation_policy::usage::{Percent, UsageWindow};
/// let window = UsageWindow::new(Percent::new(40.0).unwrap())
///     .with_window_minutes(300)
///     .with_resets_at(Timestamp::from_millis(1_700_000_000_000));
/// assert_eq!(window.used_percent.get(), 40.0);
/// assert_eq!(window.window_minutes, Some(300));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UsageWindow {
    /// How much of the window is used.
    pub used_percent: Percent,
    /// The window's length in minutes (1 to [`MAX_WINDOW_MINUTES`]), if reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_minutes: Option<u32>,
    /// When the window resets (wall clock, Unix epoch), if reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<Timestamp>,
}

impl UsageWindow {
    /// A window used `used_percent`, with unknown length and reset.
    pub fn new(used_percent: Percent) -> Self {
        UsageWindow {
            used_percent,
            window_minutes: None,
            resets_at: None,
        }
    }

    /// When the window ends at the latest, given that it was reported at `reported_at`: its
    /// `resets_at`, but never later than one window length after the report (a window
    /// cannot run longer than itself), nor [`MAX_WINDOW_SPAN`] after it (no window is longer
    /// than a week: a report of a longer one, or of none, is not trusted to keep an account
    /// out for longer). Once that time has passed, the window has started over at 0 %.
    ///
    /// ```
    /// use rotation_policy::Timestamp;
    /// use rotation_policy::usage::{Percent, UsageWindow};
    /// let reported = Timestamp::from_millis(1_000);
    /// let w = UsageWindow::new(Percent::FULL).with_window_minutes(1);
    /// assert_eq!(w.ends_at(reported), Timestamp::from_millis(61_000));
    /// let w = w.with_resets_at(Timestamp::from_millis(30_000));
    /// assert_eq!(w.ends_at(reported), Timestamp::from_millis(30_000));
    /// ```
    pub fn ends_at(&self, reported_at: Timestamp) -> Timestamp {
        let longest = self.window_minutes.map_or(MAX_WINDOW_SPAN, |m| {
            std::time::Duration::from_secs(u64::from(m) * 60).min(MAX_WINDOW_SPAN)
        });
        let cap = reported_at.saturating_add(longest);
        self.resets_at.map_or(cap, |at| at.min(cap))
    }

    /// Sets the window length; a value outside 1..=[`MAX_WINDOW_MINUTES`] reads as unknown.
    pub fn with_window_minutes(mut self, minutes: u32) -> Self {
        self.window_minutes = (1..=MAX_WINDOW_MINUTES)
            .contains(&minutes)
            .then_some(minutes);
        self
    }

    /// Sets the reset time; a time after [`LAST_PLAUSIBLE_TIME`](crate::LAST_PLAUSIBLE_TIME)
    /// reads as unknown.
    pub fn with_resets_at(mut self, at: Timestamp) -> Self {
        self.resets_at = (at <= crate::LAST_PLAUSIBLE_TIME).then_some(at);
        self
    }
}

/// One limit's windows, as reported in one answer.
///
/// ```
/// use rotation_policy::usage::{LimitUsage, Percent, UsageWindow};
/// let mut limit = LimitUsage::new("codex").unwrap();
/// limit.primary = Some(UsageWindow::new(Percent::new(12.5).unwrap()));
/// assert_eq!(limit.limit_id(), "codex");
/// assert!(LimitUsage::new("bad id!").is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LimitUsage {
    limit_id: String,
    /// The limit's display name; for a metered limit, the model that counts against it
    /// (e.g. `gpt-5.2-codex-sonic`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_name: Option<String>,
    /// The short window (about 5 hours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<UsageWindow>,
    /// The long window (about a week).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary: Option<UsageWindow>,
}

impl LimitUsage {
    /// A limit without windows, or `None` when `limit_id` is not a usable id. The id is
    /// normalized as the Codex CLI does (trimmed, ASCII lower case, `-` → `_`); it must then
    /// be 1 to [`MAX_LIMIT_ID_LEN`] bytes of `a-z`, `0-9` and `_`.
    pub fn new(limit_id: &str) -> Option<Self> {
        Some(LimitUsage {
            limit_id: normalize_limit_id(limit_id)?,
            limit_name: None,
            primary: None,
            secondary: None,
        })
    }

    /// The normalized limit id (`codex`, `codex_bengalfox`, …).
    pub fn limit_id(&self) -> &str {
        &self.limit_id
    }

    /// Whether any window is known.
    pub fn has_windows(&self) -> bool {
        self.primary.is_some() || self.secondary.is_some()
    }
}

/// A limit id as the Codex CLI normalizes it, or `None` if it is not a plain short id.
///
/// ```
/// use rotation_policy::usage::normalize_limit_id;
/// assert_eq!(normalize_limit_id(" Codex-BengalFox ").as_deref(), Some("codex_bengalfox"));
/// assert_eq!(normalize_limit_id(""), None);
/// assert_eq!(normalize_limit_id("a/b"), None);
/// ```
pub fn normalize_limit_id(raw: &str) -> Option<String> {
    let id = raw.trim().to_ascii_lowercase().replace('-', "_");
    let plain = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
    (!id.is_empty() && id.len() <= MAX_LIMIT_ID_LEN && id.bytes().all(plain)).then_some(id)
}

/// Credits of the account, as reported (`x-codex-credits-*` or the event's `credits`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Credits {
    /// Whether the account has credits.
    pub has_credits: bool,
    /// Whether its credits are unlimited.
    pub unlimited: bool,
    /// The balance as the backend wrote it (a decimal string), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<String>,
}

/// Everything one upstream answer (or one usage query) said about an account's usage.
///
/// Build one with the parsers ([`UsageReport::from_headers`], [`UsageReport::from_event`],
/// [`UsageReport::from_usage_json`]) and give it to
/// [`Pool::record_usage`](crate::Pool::record_usage). A proxy that shows its clients the
/// pool's usage writes a report back in the same wire forms:
/// [`UsageReport::write_headers`] / [`UsageReport::to_headers`] and
/// [`UsageReport::to_event_json`]; what the header parser produced, it reads back unchanged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UsageReport {
    /// The limits reported, each at most once, at most [`MAX_LIMITS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<LimitUsage>,
    /// Credits, if reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credits: Option<Credits>,
    /// The plan (`plus`, `pro`, …), if reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_type: Option<String>,
}

impl UsageReport {
    /// Whether the report says nothing about any window (nothing for the policy to use).
    ///
    /// ```
    /// # use rotation_policy::usage::UsageReport;
    /// assert!(UsageReport::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        !self.limits.iter().any(LimitUsage::has_windows)
    }

    /// The report of `limit_id` (already normalized), if present.
    pub fn limit(&self, limit_id: &str) -> Option<&LimitUsage> {
        self.limits.iter().find(|l| l.limit_id == limit_id)
    }

    /// Adds or replaces one limit's usage, keeping ids unique and at most [`MAX_LIMITS`];
    /// returns whether it was kept.
    pub fn push(&mut self, limit: LimitUsage) -> bool {
        if let Some(existing) = self
            .limits
            .iter_mut()
            .find(|l| l.limit_id == limit.limit_id)
        {
            *existing = limit;
            return true;
        }
        if self.limits.len() >= MAX_LIMITS {
            return false;
        }
        self.limits.push(limit);
        true
    }
}

/// A short printable text (no control characters, at most [`MAX_LIMIT_NAME_LEN`] bytes after
/// trimming), or `None`.
pub(crate) fn short_text(raw: &str) -> Option<String> {
    let text = raw.trim();
    (!text.is_empty() && text.len() <= MAX_LIMIT_NAME_LEN && !text.chars().any(char::is_control))
        .then(|| text.to_owned())
}
