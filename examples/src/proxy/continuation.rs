//! Which account created which response, and which issued which turn state (pure,
//! bounded): so a request that continues a conversation goes to the one account (or the
//! overflow source) that can know it.
//!
//! The Responses API keeps a response on the upstream under the account that created it; a
//! request naming it as `previous_response_id` sent with another account's credentials is
//! refused there (the response is not found) or, worse, could be confused with another
//! conversation. Likewise the Codex backend hands out an `x-codex-turn-state` header that
//! the Codex CLI sends back with the next requests of the same turn, for sticky routing on
//! the backend: it belongs to the account that issued it. The proxy learns each response id
//! from the stream that created it (its `response.created`/`response.completed` events; the
//! Codex CLI always streams — the id of a non-streamed answer is not learned) and each turn
//! state from the answer headers that carried it, and pins a continuation to its owner.
//!
//! | a request with `previous_response_id` or `x-codex-turn-state` whose owner is | the proxy |
//! |---|---|
//! | an account, usable | sends it with that account only (never retried elsewhere) |
//! | an account, paced for at most `max_wait` | waits, then sends it with that account |
//! | an account, cooling down or out of usage headroom | answers `429 continuation_account_busy` with `Retry-After` until it is usable |
//! | an account, disabled or removed | answers `409 continuation_account_unavailable`: only a new conversation can go on |
//! | the overflow source (it created the response) | sends it to the overflow source; `409 continuation_account_unavailable` if none is configured |
//! | not known (created before a restart, by another proxy, or evicted) | routes it like any request; the upstream decides |
//!
//! Memory is bounded: at most [`MAX_REMEMBERED`] entries (the oldest learned is forgotten
//! first) of at most [`MAX_RESPONSE_ID_LEN`] bytes each (a turn state is kept as its SHA-256
//! digest); longer ids are never remembered. An id is held once, shared by the table and
//! its eviction queue, and learning it again for the same owner adds nothing: about 15 MB
//! at 100,000 real ids (about 50 bytes), 40 MB at the longest.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use rotation_policy::AccountId;

use super::Shared;
use super::sse::{DataLine, DataObserver};

/// Most ids remembered (see the module docs for the memory this takes).
pub(crate) const MAX_REMEMBERED: usize = 100_000;

/// Longest response id remembered (bytes); real ones (`resp_` + hex) are about 50.
pub(crate) const MAX_RESPONSE_ID_LEN: usize = 256;

/// Who can continue a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// The account that created the response (or issued the turn state).
    Account(AccountId),
    /// The overflow source created the response.
    Overflow,
}

/// Response id (or turn-state digest) → its owner, oldest forgotten first.
#[derive(Debug, Default)]
pub(crate) struct Creators {
    by_response: HashMap<Arc<str>, (Owner, u64)>,
    /// `(id, sequence)` in the order learned; an entry whose sequence no longer matches the
    /// map was re-learned later (for another owner) and is skipped when evicting.
    order: VecDeque<(Arc<str>, u64)>,
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

    /// Remembers that `owner` created `response_id` (ignored if the id is empty, too long
    /// or has control characters).
    pub(crate) fn learn(&mut self, response_id: &str, owner: Owner) {
        if response_id.is_empty()
            || response_id.len() > MAX_RESPONSE_ID_LEN
            || response_id.chars().any(char::is_control)
        {
            return;
        }
        if self
            .by_response
            .get(response_id)
            .is_some_and(|(known, _)| *known == owner)
        {
            return; // the same fact again (`response.completed` after `response.created`)
        }
        self.seq += 1;
        let seq = self.seq;
        let id: Arc<str> = Arc::from(response_id);
        self.by_response.insert(id.clone(), (owner, seq));
        self.order.push_back((id, seq));
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

    /// Who created `response_id`, if remembered.
    pub(crate) fn creator(&self, response_id: &str) -> Option<&Owner> {
        self.by_response.get(response_id).map(|(owner, _)| owner)
    }

    /// How many ids are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_response.len()
    }
}

/// The table key of a turn state: `ts:` and the SHA-256 of the value (turn states are
/// opaque tokens of any length; only equality matters).
pub(crate) fn turn_state_key(value: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write;

    let mut key = String::with_capacity(3 + 64);
    key.push_str("ts:");
    for byte in Sha256::digest(value) {
        // ok: writing to a String cannot fail.
        let _ = write!(key, "{byte:02x}");
    }
    key
}

/// The header the Codex backend issues for routing within a turn.
pub(crate) const TURN_STATE: &str = "x-codex-turn-state";

/// Learns the ids of the responses one stream creates (an SSE tap observer that never
/// changes a line).
pub(crate) struct ResponseIds {
    shared: Arc<Shared>,
    owner: Owner,
}

impl ResponseIds {
    pub(crate) fn new(shared: Arc<Shared>, owner: Owner) -> Self {
        ResponseIds { shared, owner }
    }
}

impl DataObserver for ResponseIds {
    fn data(&mut self, value: &[u8]) -> DataLine {
        // Most events are text deltas: only the few that name the response are parsed.
        let names_response = |kind: &[u8]| value.windows(kind.len()).any(|w| w == kind);
        if (names_response(b"\"response.created\"") || names_response(b"\"response.completed\""))
            && let Some(id) = created_response_id(value)
        {
            self.shared.creators().learn(&id, self.owner.clone());
        }
        DataLine::Keep
    }
}

/// Watches a stream's bytes for the `data:` lines that name a created response, without
/// holding or changing any byte (for answers the proxy passes on as they are: the overflow
/// source's). Keeps at most [`WATCHED_LINE`] bytes of the current line; a longer line is
/// not read.
pub(crate) struct IdWatch {
    observer: ResponseIds,
    line: Vec<u8>,
    /// The current line is too long: skip to its end.
    skipping: bool,
}

/// Longest line [`IdWatch`] reads.
const WATCHED_LINE: usize = 64 * 1024;

impl IdWatch {
    pub(crate) fn new(observer: ResponseIds) -> Self {
        IdWatch {
            observer,
            line: Vec::new(),
            skipping: false,
        }
    }

    /// Looks at the next chunk of the stream.
    pub(crate) fn watch(&mut self, mut chunk: &[u8]) {
        // Bounded: each round consumes the chunk up to and including a line end, or all.
        while !chunk.is_empty() {
            let end = chunk.iter().position(|&b| b == b'\n' || b == b'\r');
            let (piece, rest) = match end {
                Some(at) => (&chunk[..at], &chunk[at + 1..]),
                None => (chunk, &chunk[chunk.len()..]),
            };
            if !self.skipping {
                if self.line.len() + piece.len() > WATCHED_LINE {
                    self.skipping = true;
                    self.line.clear();
                } else {
                    self.line.extend_from_slice(piece);
                }
            }
            if end.is_some() {
                if !self.skipping
                    && let Some(value) = self.line.strip_prefix(b"data:")
                {
                    let value = value.strip_prefix(b" ").unwrap_or(value);
                    let _ = self.observer.data(value);
                }
                self.line.clear();
                self.skipping = false;
            }
            chunk = rest;
        }
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
        creators.learn("resp_1", Owner::Account(account("a")));
        creators.learn("resp_2", Owner::Account(account("b")));
        assert_eq!(
            creators.creator("resp_1"),
            Some(&Owner::Account(account("a")))
        );
        assert_eq!(
            creators.creator("resp_2"),
            Some(&Owner::Account(account("b")))
        );
        assert_eq!(creators.creator("resp_3"), None);
        // Ids that cannot be real are not remembered.
        for bad in ["", "x\ny", &"r".repeat(MAX_RESPONSE_ID_LEN + 1)] {
            creators.learn(bad, Owner::Account(account("a")));
            assert_eq!(creators.creator(bad), None);
        }
        assert_eq!(creators.len(), 2);
    }

    #[test]
    fn the_oldest_is_forgotten_first_and_relearning_refreshes() {
        let mut creators = Creators::with_capacity(3);
        for i in 0..3 {
            creators.learn(&format!("r{i}"), Owner::Account(account("a")));
        }
        creators.learn("r0", Owner::Account(account("b"))); // another owner: now the newest
        creators.learn("r3", Owner::Account(account("a")));
        assert_eq!(creators.creator("r1"), None); // the oldest went
        assert_eq!(creators.creator("r0"), Some(&Owner::Account(account("b"))));
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
                let (id, who) = (format!("r{id}"), Owner::Account(account(&format!("a{who}"))));
                creators.learn(&id, who.clone());
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

    /// The watcher learns the same ids however the stream is cut, reads `\r\n` and `\r`
    /// line ends, and skips over-long lines without losing the next one.
    #[test]
    fn the_watcher_learns_ids_across_any_chunking() {
        let stream = format!(
            "event: response.created\r\ndata: {}\r\n\r\ndata: {}\n\ndata: {}\rdata: {}\n\n",
            r#"{"type":"response.created","response":{"id":"resp_a"}}"#,
            "x".repeat(70 * 1024),
            r#"{"type":"response.completed","response":{"id":"resp_b"}}"#,
            r#"{"type":"response.created","response":{"id":"resp_c"}}"#,
        );
        for cut in [1, 2, 7, 64, 1000, stream.len()] {
            let pool =
                rotation_policy::Pool::new(rotation_policy::PolicyConfig::default(), 1).unwrap();
            let shared = Arc::new(Shared::for_tests(pool));
            let mut watch = IdWatch::new(ResponseIds::new(shared.clone(), Owner::Overflow));
            for chunk in stream.as_bytes().chunks(cut) {
                watch.watch(chunk);
            }
            let creators = shared.creators();
            for id in ["resp_a", "resp_b", "resp_c"] {
                assert_eq!(
                    creators.creator(id),
                    Some(&Owner::Overflow),
                    "{id} cut {cut}"
                );
            }
            assert_eq!(creators.len(), 3);
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
