//! One client request's journey through the pool, and the values exchanged on the way.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::AccountId;

/// A client request being served: its model family, optional session key, and the accounts
/// it has been tried on so far. Create one per client request and pass it to every
/// [`Pool::select`](crate::Pool::select) and [`Pool::report`](crate::Pool::report) for it.
///
/// ```
/// use rotation_policy::Request;
/// let request = Request::new("gpt-5").with_session("conversation-42");
/// assert_eq!(request.family(), "gpt-5");
/// assert_eq!(request.attempts(), 0);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub(crate) family: String,
    pub(crate) session: Option<String>,
    pub(crate) account: Option<AccountId>,
    pub(crate) attempts: u32,
    /// `(slot, generation)` of every account handed out for this request.
    pub(crate) tried: Vec<(u32, u32)>,
}

impl Request {
    /// A request for `family`: the upstream limit bucket it counts against, usually the
    /// model name or its family (e.g. `gpt-5` for `gpt-5-2025-08-07`). Rate-limit cooldowns
    /// are kept per (account, family).
    pub fn new(family: impl Into<String>) -> Self {
        Request {
            family: family.into(),
            session: None,
            account: None,
            attempts: 0,
            tried: Vec::new(),
        }
    }

    /// Adds a session key (e.g. a conversation id): with
    /// [`session_ttl`](crate::PolicyConfig::session_ttl) set, requests of one session stick
    /// to one account while it is usable.
    pub fn with_session(mut self, session: impl Into<String>) -> Self {
        self.session = Some(session.into());
        self
    }

    /// Pins the request to one account: only `account` may serve it. For a request that
    /// continues a conversation only that account knows (a Responses API
    /// `previous_response_id`). While the account is cooling down, out of tokens or over
    /// the usage threshold, [`Pool::select`](crate::Pool::select) answers
    /// [`Selection::Exhausted`] with the exact time until it is usable; when it is disabled,
    /// removed or already tried by this request, [`Selection::NoAccount`]. Session affinity
    /// does not apply.
    ///
    /// ```
    /// use rotation_policy::{AccountId, PolicyConfig, Pool, Request, Selection, Timestamp};
    /// let mut pool = Pool::new(PolicyConfig::default(), 0)?;
    /// let (a, b) = (AccountId::new("a")?, AccountId::new("b")?);
    /// pool.add(a.clone())?;
    /// pool.add(b.clone())?;
    /// let mut request = Request::new("gpt-5").with_account(b.clone());
    /// assert_eq!(pool.select(&mut request, Timestamp::ZERO), Selection::Account(b));
    /// # Ok::<(), rotation_policy::PolicyError>(())
    /// ```
    pub fn with_account(mut self, account: AccountId) -> Self {
        self.account = Some(account);
        self
    }

    /// The account the request is pinned to, if any.
    pub fn account(&self) -> Option<&AccountId> {
        self.account.as_ref()
    }

    /// The model family.
    pub fn family(&self) -> &str {
        &self.family
    }

    /// The session key, if any.
    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    /// How many accounts have been handed out for this request.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

/// What [`Pool::select`](crate::Pool::select) found.
///
/// Deliberately exhaustive (like [`Decision`]): these are the only answers a selection can
/// have, and callers should handle each one explicitly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Send the request with this account's credentials (after
    /// [`Pool::consume`](crate::Pool::consume)).
    Account(AccountId),
    /// Every enabled account this request has not tried is cooling down or out of tokens
    /// for its family. `retry_after` is exact: the earliest of their next-usable times minus
    /// `now`, so a proxy can answer `429` with `Retry-After`/`retry_after_ms` from it.
    Exhausted {
        /// Time until the first of them becomes usable.
        retry_after: Duration,
    },
    /// No enabled account is left that this request may try (the pool is empty, every
    /// account is disabled or already tried, or the request used up its
    /// [`max_attempts`](crate::PolicyConfig::max_attempts)); no wait would help.
    NoAccount,
}

/// What happened when a request was sent with an account, as passed to
/// [`Pool::report`](crate::Pool::report).
///
/// Map responses as: 2xx and client errors that are not the account's fault (400, 404, 413,
/// …) → `Success`; 429 → `RateLimited` with
/// [`RetryAfter::from_headers`](crate::RetryAfter::from_headers); 401 → `Unauthorized`;
/// 403 → `Forbidden`; 5xx → `ServerError`; connect/reset errors → `NetworkError`; no answer
/// in time → `Timeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
#[non_exhaustive]
pub enum Outcome {
    /// The upstream served the request.
    Success,
    /// 429: the account hit a limit for this model family.
    RateLimited {
        /// The parsed upstream wait, if any; `None` uses the exponential backoff.
        retry_after: Option<Duration>,
    },
    /// 401: the token needs a refresh.
    Unauthorized,
    /// 403: the account may not use this upstream.
    Forbidden,
    /// 5xx from the upstream.
    ServerError,
    /// The connection failed or broke.
    NetworkError,
    /// No response in time.
    Timeout,
}

/// What to do after [`Pool::report`](crate::Pool::report).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Call [`Pool::select`](crate::Pool::select) again now: an untried account is usable.
    Retry,
    /// Hold the request for this long, then call `select` again (an untried account becomes
    /// usable then; at most [`max_wait`](crate::PolicyConfig::max_wait)).
    Wait(Duration),
    /// Answer the client with the last upstream response. When no account in the pool is
    /// usable now, `retry_after` is the exact time until one is (for a `Retry-After` header
    /// on a 429/503); `None` on success or when an account is usable now.
    ReturnToClient {
        /// Time until any enabled account is usable for the family again.
        retry_after: Option<Duration>,
    },
}

impl Outcome {
    /// Classifies an upstream HTTP response: 429 → `RateLimited` (wait from
    /// [`RetryAfter::from_headers`](crate::RetryAfter::from_headers); a missing or garbage
    /// header means the default backoff), 401 → `Unauthorized`, 403 → `Forbidden`, 5xx →
    /// `ServerError`, anything else → `Success` (other 4xx are the request's fault, not the
    /// account's). `wall_now` is the wall-clock time the response arrived.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use http::HeaderMap;
    /// use rotation_policy::Outcome;
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert("retry-after", "3".parse().unwrap());
    /// let now = SystemTime::now();
    /// assert_eq!(Outcome::from_response(429, &headers, now),
    ///            Outcome::RateLimited { retry_after: Some(Duration::from_secs(3)) });
    /// assert_eq!(Outcome::from_response(502, &headers, now), Outcome::ServerError);
    /// assert_eq!(Outcome::from_response(400, &headers, now), Outcome::Success);
    /// ```
    pub fn from_response(
        status: u16,
        headers: &http::HeaderMap,
        wall_now: std::time::SystemTime,
    ) -> Outcome {
        match status {
            429 => Outcome::RateLimited {
                retry_after: crate::RetryAfter::from_headers(headers, wall_now)
                    .ok()
                    .flatten()
                    .map(|hint| hint.wait),
            },
            401 => Outcome::Unauthorized,
            403 => Outcome::Forbidden,
            500..=599 => Outcome::ServerError,
            _ => Outcome::Success,
        }
    }
}
