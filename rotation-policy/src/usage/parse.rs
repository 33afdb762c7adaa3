//! Parsers of usage reports (pure): response headers, the `codex.rate_limits` stream event,
//! and the usage endpoint's JSON. Total on any input: what cannot be read is absent.

use super::UsageReport;

impl UsageReport {
    /// Reads every usage header family of an upstream answer. Placeholder until the
    /// parser lands.
    pub fn from_headers(_headers: &http::HeaderMap) -> UsageReport {
        UsageReport::default()
    }

    /// Reads one server-sent event's `data` (a `codex.rate_limits` event), or `None` for
    /// any other event. Placeholder until the parser lands.
    pub fn from_event(_data: &[u8]) -> Option<UsageReport> {
        None
    }

    /// Reads the usage endpoint's answer (`GET {chatgpt backend}/wham/usage`). Placeholder
    /// until the parser lands.
    pub fn from_usage_json(_body: &[u8]) -> Option<UsageReport> {
        None
    }
}
