//! The mock's usage windows: how much of an account's limit its answers have used, reported
//! the way the Codex backend reports it (response headers and/or a `codex.rate_limits`
//! event), and the `429` once a window is full.
//!
//! | moment | what happens to a window |
//! | --- | --- |
//! | configured ([`MockConfig::usage`](super::MockConfig::usage), [`MockUpstream::set_usage`](super::MockUpstream::set_usage)) | starts at `used_percent`, resets `resets_in` from then |
//! | a request for the account arrives | a window whose reset has passed starts again at 0 % (next reset one window later) |
//! | any window at 100 % | `429` `usage_limit_reached`, `Retry-After` until that window resets (the latest, if several are full); the usage is reported with it |
//! | otherwise the request is served | every window grows by its `step` (at most 100 %), then the new usage is reported |
//!
//! Only answers that pass authentication and the account's [`Behavior`](super::Behavior)
//! are counted or refused this way; every `/responses` answer for the account reports its
//! usage.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

/// Where the mock reports an account's usage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum UsageChannel {
    /// `x-codex-primary-used-percent` etc. on every answer.
    #[default]
    Headers,
    /// A `codex.rate_limits` event in each streamed answer (right after `response.created`),
    /// no headers; a JSON answer then reports nothing.
    Event,
    /// Both.
    Both,
}

impl UsageChannel {
    fn headers(self) -> bool {
        matches!(self, Self::Headers | Self::Both)
    }

    fn event(self) -> bool {
        matches!(self, Self::Event | Self::Both)
    }
}

/// One usage window as configured.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct MockWindow {
    /// Used at the start, in percent.
    pub used_percent: f64,
    /// Added per served request, in percent.
    pub step: f64,
    /// The window's length in minutes (also the time between resets).
    pub window_minutes: u32,
    /// The first reset, from when the usage is configured (whole seconds, rounded up).
    pub resets_in: Duration,
}

impl MockWindow {
    /// A window used `used_percent`, growing by `step` per served request, `window_minutes`
    /// long, resetting first in `resets_in`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use examples::mock_upstream::MockWindow;
    /// let five_hours = MockWindow::new(90.0, 9.0, 300, Duration::from_secs(3600));
    /// assert_eq!(five_hours.step, 9.0);
    /// ```
    pub fn new(used_percent: f64, step: f64, window_minutes: u32, resets_in: Duration) -> Self {
        MockWindow {
            used_percent,
            step,
            window_minutes,
            resets_in,
        }
    }
}

/// An account's usage as the mock reports it: one limit with a short (primary) and
/// optionally a long (secondary) window.
///
/// ```
/// use std::time::Duration;
/// use examples::mock_upstream::{MockConfig, MockUsage, MockWindow, UsageChannel};
/// let usage = MockUsage::new(MockWindow::new(10.0, 5.0, 300, Duration::from_secs(3600)))
///     .secondary(MockWindow::new(40.0, 1.0, 10_080, Duration::from_secs(86_400)))
///     .via(UsageChannel::Both);
/// let config = MockConfig::default().usage("ws-1", usage);
/// # let _ = config;
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct MockUsage {
    /// The limit (`codex` unless set; another id is sent as `x-<id>-…` headers, `_` as `-`,
    /// and as the event's `metered_limit_name`).
    pub limit_id: String,
    /// Its display name (`x-<id>-limit-name`), if any.
    pub limit_name: Option<String>,
    /// The short window.
    pub primary: MockWindow,
    /// The long window, if any.
    pub secondary: Option<MockWindow>,
    /// Where it is reported.
    pub channel: UsageChannel,
}

impl MockUsage {
    /// The `codex` limit with one window, reported in headers.
    pub fn new(primary: MockWindow) -> Self {
        MockUsage {
            limit_id: "codex".to_owned(),
            limit_name: None,
            primary,
            secondary: None,
            channel: UsageChannel::Headers,
        }
    }

    /// Adds the long window.
    pub fn secondary(mut self, window: MockWindow) -> Self {
        self.secondary = Some(window);
        self
    }

    /// Reports through `channel`.
    pub fn via(mut self, channel: UsageChannel) -> Self {
        self.channel = channel;
        self
    }

    /// Reports a metered limit instead of `codex`.
    pub fn limit(mut self, id: impl Into<String>, name: Option<String>) -> Self {
        self.limit_id = id.into();
        self.limit_name = name;
        self
    }
}

/// One window as the mock reports it now.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct WindowNow {
    /// Used, in percent (0–100).
    pub used_percent: f64,
    /// The window's length in minutes.
    pub window_minutes: u32,
    /// The next reset (Unix seconds).
    pub reset_at: i64,
}

/// An account's usage as the mock last reported it ([`MockUpstream::usage`](super::MockUpstream::usage)).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct UsageNow {
    /// The limit.
    pub limit_id: String,
    /// The short window.
    pub primary: WindowNow,
    /// The long window, if configured.
    pub secondary: Option<WindowNow>,
}

/// A running window.
#[derive(Clone, Copy, Debug)]
struct Window {
    now: WindowNow,
    step: f64,
}

impl Window {
    fn start(config: &MockWindow, now: i64) -> Self {
        let secs = config
            .resets_in
            .as_secs()
            .saturating_add(u64::from(config.resets_in.subsec_nanos() > 0));
        Window {
            now: WindowNow {
                used_percent: config.used_percent.clamp(0.0, 100.0),
                window_minutes: config.window_minutes,
                reset_at: now.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX)),
            },
            step: config.step,
        }
    }

    /// Starts again at 0 % when the reset has passed.
    fn roll(&mut self, now: i64) {
        if now < self.now.reset_at {
            return;
        }
        self.now.used_percent = 0.0;
        let period = i64::from(self.now.window_minutes.max(1)) * 60;
        let missed = (now - self.now.reset_at) / period + 1;
        self.now.reset_at = self
            .now
            .reset_at
            .saturating_add(missed.saturating_mul(period));
    }

    fn full(&self) -> bool {
        self.now.used_percent >= 100.0
    }

    fn serve(&mut self) {
        self.now.used_percent = (self.now.used_percent + self.step).clamp(0.0, 100.0);
    }
}

/// One account's usage while the mock runs.
#[derive(Clone, Debug)]
pub(super) struct UsageState {
    limit_id: String,
    limit_name: Option<String>,
    channel: UsageChannel,
    primary: Window,
    secondary: Option<Window>,
}

impl UsageState {
    pub(super) fn start(config: &MockUsage, now: i64) -> Self {
        UsageState {
            limit_id: config.limit_id.clone(),
            limit_name: config.limit_name.clone(),
            channel: config.channel,
            primary: Window::start(&config.primary, now),
            secondary: config.secondary.as_ref().map(|w| Window::start(w, now)),
        }
    }

    fn windows(&mut self) -> impl Iterator<Item = &mut Window> {
        std::iter::once(&mut self.primary).chain(self.secondary.as_mut())
    }

    /// For a request that may be served: `Some(wait)` when a window is full (refused until
    /// it resets), else `None` after counting the request.
    pub(super) fn admit(&mut self, now: i64) -> Option<Duration> {
        for window in self.windows() {
            window.roll(now);
        }
        let full_until = self
            .windows()
            .filter(|w| w.full())
            .map(|w| w.now.reset_at)
            .max();
        match full_until {
            Some(reset_at) => {
                let secs = reset_at.saturating_sub(now).max(1);
                Some(Duration::from_secs(u64::try_from(secs).unwrap_or(1)))
            }
            None => {
                for window in self.windows() {
                    window.serve();
                }
                None
            }
        }
    }

    pub(super) fn now(&self) -> UsageNow {
        UsageNow {
            limit_id: self.limit_id.clone(),
            primary: self.primary.now,
            secondary: self.secondary.map(|w| w.now),
        }
    }

    /// Adds the usage headers, if this account reports in headers.
    pub(super) fn write_headers(&self, headers: &mut HeaderMap) {
        if !self.channel.headers() {
            return;
        }
        let prefix = format!("x-{}", self.limit_id.replace('_', "-"));
        let mut put = |name: String, value: String| {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                headers.insert(name, value);
            }
        };
        for (kind, window) in [
            ("primary", Some(self.primary)),
            ("secondary", self.secondary),
        ] {
            let Some(w) = window else { continue };
            put(
                format!("{prefix}-{kind}-used-percent"),
                w.now.used_percent.to_string(),
            );
            put(
                format!("{prefix}-{kind}-window-minutes"),
                w.now.window_minutes.to_string(),
            );
            put(
                format!("{prefix}-{kind}-reset-at"),
                w.now.reset_at.to_string(),
            );
        }
        if let Some(name) = &self.limit_name {
            put(format!("{prefix}-limit-name"), name.clone());
        }
    }

    /// The `codex.rate_limits` event, if this account reports in the stream.
    pub(super) fn event(&self) -> Option<Bytes> {
        if !self.channel.event() {
            return None;
        }
        let window = |w: &Window| {
            serde_json::json!({
                "used_percent": w.now.used_percent,
                "window_minutes": w.now.window_minutes,
                "reset_at": w.now.reset_at,
            })
        };
        let mut limits = serde_json::json!({ "primary": window(&self.primary) });
        if let Some(w) = &self.secondary {
            limits["secondary"] = window(w);
        }
        let mut event = serde_json::json!({
            "type": "codex.rate_limits",
            "plan_type": "pro",
            "rate_limits": limits,
        });
        if self.limit_id != "codex" {
            event["metered_limit_name"] = self.limit_id.as_str().into();
        }
        Some(Bytes::from(format!(
            "event: codex.rate_limits\ndata: {event}\n\n"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_grow_fill_refuse_and_reset() {
        let t0 = 1_700_000_000;
        let usage = MockUsage::new(MockWindow::new(80.0, 10.0, 60, Duration::from_millis(1500)))
            .secondary(MockWindow::new(0.0, 1.0, 600, Duration::from_secs(7200)));
        let mut state = UsageState::start(&usage, t0);
        assert_eq!(state.now().primary.reset_at, t0 + 2);
        assert_eq!(state.admit(t0), None);
        assert_eq!(state.admit(t0), None);
        assert_eq!(state.now().primary.used_percent, 100.0);
        assert_eq!(state.now().secondary.unwrap().used_percent, 2.0);
        // Full: refused until the reset, and nothing counted.
        assert_eq!(state.admit(t0 + 1), Some(Duration::from_secs(1)));
        assert_eq!(state.now().secondary.unwrap().used_percent, 2.0);
        // Past the reset (two windows later): 0 % again, counted, next reset one window on.
        assert_eq!(state.admit(t0 + 2 + 3600 + 5), None);
        let now = state.now();
        assert_eq!(now.primary.used_percent, 10.0);
        assert_eq!(now.primary.reset_at, t0 + 2 + 2 * 3600);
        assert_eq!(now.secondary.unwrap().used_percent, 3.0);
    }

    #[test]
    fn reports_as_the_backend_names_them() {
        let usage = MockUsage::new(MockWindow::new(12.5, 0.0, 300, Duration::from_secs(60)))
            .limit("codex_bengalfox", Some("gpt-5.2-codex-sonic".into()))
            .via(UsageChannel::Both);
        let state = UsageState::start(&usage, 1_000);
        let mut h = HeaderMap::new();
        state.write_headers(&mut h);
        let mut shown: Vec<String> = h
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
            .collect();
        shown.sort_unstable();
        assert_eq!(
            shown,
            [
                "x-codex-bengalfox-limit-name: gpt-5.2-codex-sonic",
                "x-codex-bengalfox-primary-reset-at: 1060",
                "x-codex-bengalfox-primary-used-percent: 12.5",
                "x-codex-bengalfox-primary-window-minutes: 300",
            ]
        );
        let event = state.event().unwrap();
        assert_eq!(
            std::str::from_utf8(&event).unwrap(),
            "event: codex.rate_limits\ndata: {\"type\":\"codex.rate_limits\",\"plan_type\":\"pro\",\"rate_limits\":{\"primary\":{\"used_percent\":12.5,\"window_minutes\":300,\"reset_at\":1060}},\"metered_limit_name\":\"codex_bengalfox\"}\n\n"
        );
        let headers_only = UsageState::start(&MockUsage::new(usage.primary), 0);
        assert!(headers_only.event().is_none());
        let event_only = UsageState::start(&usage.clone().via(UsageChannel::Event), 0);
        let mut h = HeaderMap::new();
        event_only.write_headers(&mut h);
        assert!(h.is_empty());
    }
}
