//! Which account created which response (pure, bounded): so a request that continues a
//! conversation with `previous_response_id` goes to the one account that can know it.
//!
//! The Responses API keeps a response on the upstream under the account that created it; a
//! request naming it as `previous_response_id` sent with another account's credentials is
//! refused there (the response is not found) or, worse, could be confused with another
//! conversation. The proxy learns each response id from the answer that created it (the
//! stream's `response.created`/`response.completed` events, or a JSON body's `id`) and pins
//! a continuation to that account.
//!
//! | a request with `previous_response_id` whose creator is | the proxy |
//! |---|---|
//! | known and usable | sends it with that account only (never retried elsewhere) |
//! | known, cooling down or over its usage threshold | answers `429 continuation_account_busy` with `Retry-After` until it is usable |
//! | known, disabled or removed | answers `409 continuation_account_unavailable`: only a new conversation can go on |
//! | not known (created before a restart, by another proxy, or evicted) | routes it like any request; the upstream decides |
//!
//! Memory is bounded: at most [`MAX_REMEMBERED`] ids (the oldest learned is forgotten first)
//! of at most [`MAX_RESPONSE_ID_LEN`] bytes each; longer ids are never remembered.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use rotation_policy::AccountId;

use super::Shared;
use super::sse::{DataLine, DataObserver};

/// Most response ids remembered (about 30 MB at the longest ids; ~10 MB for real ones).
pub(crate) const MAX_REMEMBERED: usize = 100_000;

/// Longest response id remembered (bytes); real ones (`resp_` + hex) are about 50.
pub(crate) const MAX_RESPONSE_ID_LEN: usize = 256;

/// Response id → the account that created it, oldest forgotten first.
#[derive(Debug, Default)]
pub(crate) struct Creators {
    by_response: HashMap<String, (AccountId, u64)>,
    /// `(response id, sequence)` in the order learned; an entry whose sequence no longer
    /// matches the map was re-learned later and is skipped when evicting.
    order: VecDeque<(String, u64)>,
    seq: u64,
    capacity: usize,
}

impl Creators {
    /// A table remembering at most `capacity` ids.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Creators {
            capacity: capacity.max(1),
            ..Creators::default()
        }
    }

    /// Remembers that `account` created `response_id` (ignored if the id is empty, too long
    /// or has control characters).
    pub(crate) fn learn(&mut self, response_id: &str, account: &AccountId) {
        if response_id.is_empty()
            || response_id.len() > MAX_RESPONSE_ID_LEN
            || response_id.chars().any(char::is_control)
        {
            return;
        }
        self.seq += 1;
        let seq = self.seq;
        self.by_response
            .insert(response_id.to_owned(), (account.clone(), seq));
        self.order.push_back((response_id.to_owned(), seq));
        // Bounded: each pass removes one queue entry; the queue holds at most one entry per
        // `learn` call, so this loop ends.
        while self.by_response.len() > self.capacity
            || self.order.len() > self.capacity.saturating_mul(2)
        {
            let Some((id, seq)) = self.order.pop_front() else {
                break;
            };
            if self.by_response.get(&id).is_some_and(|(_, s)| *s == seq) {
                self.by_response.remove(&id);
            }
        }
    }

    /// The account that created `response_id`, if remembered.
    pub(crate) fn creator(&self, response_id: &str) -> Option<&AccountId> {
        self.by_response
            .get(response_id)
            .map(|(account, _)| account)
    }

    /// How many ids are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_response.len()
    }
}

/// Learns the ids of the responses one account's stream creates (an SSE tap observer that
/// never changes a line).
pub(crate) struct ResponseIds {
    shared: Arc<Shared>,
    account: AccountId,
}

impl ResponseIds {
    pub(crate) fn new(shared: Arc<Shared>, account: AccountId) -> Self {
        ResponseIds { shared, account }
    }
}

impl DataObserver for ResponseIds {
    fn data(&mut self, value: &[u8]) -> DataLine {
        // Most events are text deltas: only the few that name the response are parsed.
        let names_response = |kind: &[u8]| value.windows(kind.len()).any(|w| w == kind);
        if (names_response(b"\"response.created\"") || names_response(b"\"response.completed\""))
            && let Some(id) = created_response_id(value)
        {
            self.shared.creators().learn(&id, &self.account);
        }
        DataLine::Keep
    }
}

/// The response id an SSE event's `data` or a JSON answer names as created: `response.id`
/// of a `response.created`/`response.in_progress`/`response.completed` event, or the `id` of
/// a non-streamed response object (`"object": "response"`). Reads only those few fields.
pub(crate) fn created_response_id(json: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Response {
        id: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Event {
        #[serde(rename = "type")]
        kind: Option<String>,
        response: Option<Response>,
        id: Option<String>,
        object: Option<String>,
    }
    if json.len() > 1024 * 1024 {
        return None;
    }
    let event: Event = serde_json::from_slice(json).ok()?;
    match event.kind.as_deref() {
        Some("response.created" | "response.in_progress" | "response.completed") => {
            event.response?.id
        }
        None if event.object.as_deref() == Some("response") => event.id,
        _ => None,
    }
    .filter(|id| !id.is_empty() && id.len() <= MAX_RESPONSE_ID_LEN)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn account(name: &str) -> AccountId {
        AccountId::new(name).unwrap()
    }

    #[test]
    fn creators_are_learned_and_looked_up() {
        let mut creators = Creators::with_capacity(10);
        creators.learn("resp_1", &account("a"));
        creators.learn("resp_2", &account("b"));
        assert_eq!(creators.creator("resp_1"), Some(&account("a")));
        assert_eq!(creators.creator("resp_2"), Some(&account("b")));
        assert_eq!(creators.creator("resp_3"), None);
        // Ids that cannot be real are not remembered.
        for bad in ["", "x\ny", &"r".repeat(MAX_RESPONSE_ID_LEN + 1)] {
            creators.learn(bad, &account("a"));
            assert_eq!(creators.creator(bad), None);
        }
        assert_eq!(creators.len(), 2);
    }

    #[test]
    fn the_oldest_is_forgotten_first_and_relearning_refreshes() {
        let mut creators = Creators::with_capacity(3);
        for i in 0..3 {
            creators.learn(&format!("r{i}"), &account("a"));
        }
        creators.learn("r0", &account("b")); // learned again: now the newest
        creators.learn("r3", &account("a"));
        assert_eq!(creators.creator("r1"), None); // the oldest went
        assert_eq!(creators.creator("r0"), Some(&account("b")));
        assert_eq!(creators.len(), 3);
    }

    proptest! {
        /// Whatever is learned, the table holds at most its capacity (and its queue at most
        /// twice that), and the latest creator of a remembered id is the one returned.
        #[test]
        fn memory_stays_bounded(ops in proptest::collection::vec((0u8..20, 0u8..3), 0..400)) {
            let mut creators = Creators::with_capacity(8);
            let mut latest = std::collections::HashMap::new();
            for (id, who) in ops {
                let (id, who) = (format!("r{id}"), account(&format!("a{who}")));
                creators.learn(&id, &who);
                latest.insert(id, who);
                prop_assert!(creators.len() <= 8);
                prop_assert!(creators.order.len() <= 16);
            }
            for (id, who) in &latest {
                if let Some(found) = creators.creator(id) {
                    prop_assert_eq!(found, who);
                }
            }
        }

        #[test]
        fn reading_ids_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = created_response_id(&bytes);
        }
    }

    #[test]
    fn response_ids_are_read_from_events_and_bodies() {
        let created =
            br#"{"type":"response.created","response":{"id":"resp_abc","status":"in_progress"}}"#;
        assert_eq!(created_response_id(created).as_deref(), Some("resp_abc"));
        let completed = br#"{"type":"response.completed","response":{"id":"resp_abc","usage":{}}}"#;
        assert_eq!(created_response_id(completed).as_deref(), Some("resp_abc"));
        let body = br#"{"id":"resp_x","object":"response","output":[]}"#;
        assert_eq!(created_response_id(body).as_deref(), Some("resp_x"));
        for other in [
            &br#"{"type":"response.output_item.done","item":{"id":"msg_1"}}"#[..],
            br#"{"id":"msg_1","object":"message"}"#,
            br#"{"type":"response.created","response":{"id":""}}"#,
            b"not json",
        ] {
            assert_eq!(created_response_id(other), None);
        }
    }
}
