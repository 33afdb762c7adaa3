//! Forwarding one `/v1/…` request: where it goes, its body, which account, the retry loop
//! and the 401 → refresh → re-send path.
//!
//! Each attempt ends in one [`Step`]: go round again (the policy chose to retry, perhaps
//! after a wait, or a refreshed token is to be re-sent) or answer the client. What to do
//! with the policy's [`Decision`] is written once, in [`step`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use rotation_policy::usage::UsageReport;
use rotation_policy::{AccountId, Decision, Outcome, Selection};
use serde_json::value::RawValue;

use super::accounts::{AccountCredentials, AfterRejection, GoneMark};
use super::answers::{FORWARDED_METHODS, bad_method, bad_target, busy, json_error, too_large};
use super::budget::{self, BodyRefusal};
use super::continuation::{Owner, TURN_STATE, turn_state_key};
use super::in_flight::{Answer, Pending};
use super::overflow::{self, Outgoing};
use super::stream::stream_back;
use super::{BoxBody, Shared, gone, headers, now, strip_hop_by_hop};

/// The fields of a Responses API body that steer account selection.
///
/// Read without copying the body: keys and the two values are borrowed raw (`RawValue`),
/// every other value is skipped, and only values up to [`PEEK_FIELD_MAX`] bytes are decoded.
/// A derived `Deserialize` would decode each top-level key, and the two values, into fresh
/// buffers, so a body of one huge escaped key or `model` string (`"\nAAAA…"`) would cost as
/// much memory again as the body, outside the body budget.
#[derive(Debug, Default, PartialEq, Eq)]
struct Peek {
    model: Option<String>,
    prompt_cache_key: Option<String>,
    previous_response_id: Option<String>,
}

/// Longest raw `model` or `prompt_cache_key` value that is decoded (longer ones are ignored).
const PEEK_FIELD_MAX: usize = 1024;

impl<'de> serde::Deserialize<'de> for Peek {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = Peek;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Peek, A::Error> {
                let mut peek = Peek::default();
                while let Some(key) = map.next_key::<&'de RawValue>()? {
                    // Raw keys keep their quotes; escaped spellings of the names do not match.
                    match key.get() {
                        r#""model""# => peek.model = small_string(map.next_value()?),
                        r#""prompt_cache_key""# => {
                            peek.prompt_cache_key = small_string(map.next_value()?);
                        }
                        r#""previous_response_id""# => {
                            peek.previous_response_id = small_string(map.next_value()?);
                        }
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(peek)
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// A short JSON string value, decoded; `None` for anything else or anything long.
fn small_string(raw: &RawValue) -> Option<String> {
    let raw = raw.get();
    if raw.len() > PEEK_FIELD_MAX {
        return None;
    }
    serde_json::from_str(raw).ok()
}

/// How one attempt of the retry loop ends.
enum Step {
    /// Go round again: select an account (or re-send on the one just refreshed).
    Next,
    /// Answer the client with this response.
    Answer(Response<BoxBody>),
}

/// Acts on the policy's decision: `Retry` and `Wait` (after the wait) go round again;
/// `ReturnToClient` is answered by `answer`, given the policy's `retry_after`.
///
/// `Decision` is matched exhaustively on purpose: a new kind of decision must be placed
/// here, not fall into a default.
async fn step(
    decision: Decision,
    answer: impl FnOnce(Option<Duration>) -> Response<BoxBody>,
) -> Step {
    match decision {
        Decision::Retry => Step::Next,
        Decision::Wait(wait) => {
            tokio::time::sleep(wait).await;
            Step::Next
        }
        Decision::ReturnToClient { retry_after } => Step::Answer(answer(retry_after)),
    }
}

pub(super) async fn forward(shared: Arc<Shared>, req: Request<Incoming>) -> Response<BoxBody> {
    let started = std::time::Instant::now();
    let (parts, body) = req.into_parts();
    // How and where the request goes is settled before any body byte is read, and refused
    // requests never reach the upstream.
    if !FORWARDED_METHODS.contains(&parts.method) {
        return bad_method(&shared, &parts.method);
    }
    let url = match shared.upstream.resolve(&parts.uri) {
        Ok(url) => url,
        Err(error) => return bad_target(&shared, error),
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // The body's bytes stay counted against the budget as long as any clone of `body` lives
    // (this handler's, or the HTTP client's while it is still uploading).
    let body = match budget::read_body(
        body,
        declared,
        shared.options.body_limit,
        &shared.body_budget,
        shared.options.body_idle_timeout,
    )
    .await
    {
        Ok(read) => read,
        Err(BodyRefusal::TooLarge) => return too_large(&shared),
        Err(BodyRefusal::Busy) => return busy(&shared),
        Err(BodyRefusal::TimedOut) => {
            return json_error(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body stopped arriving; send it without pauses",
                None,
            );
        }
        Err(BodyRefusal::Unreadable) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "could not read the request body",
                None,
            );
        }
    };
    let (mut request, continues) = routing_request(&body, &parts.headers);
    // A continuation goes to whoever created the response it continues (or issued the turn
    // state it carries), if known (rules in `continuation.rs`).
    let owner = {
        let creators = shared.creators();
        continues
            .and_then(|id| creators.creator(&id).cloned())
            .or_else(|| {
                let state = parts.headers.get(TURN_STATE)?;
                creators.creator(&turn_state_key(state.as_bytes())).cloned()
            })
    };
    let pinned = match &owner {
        Some(Owner::Account(id)) => Some(id.clone()),
        _ => None,
    };
    if let Some(owner) = &pinned {
        request = request.with_account(owner.clone());
    }
    let mut fwd_headers = parts.headers.clone();
    strip_hop_by_hop(&mut fwd_headers);
    headers::strip_request_only(&mut fwd_headers);
    // Where no account is usable now, the overflow source (if any) may take the request.
    let outgoing = Outgoing {
        method: &parts.method,
        uri: &parts.uri,
        headers: &fwd_headers,
        body: &body,
    };

    {
        let mut state = shared.lock();
        state.counters.requests += 1;
        state.counters.in_flight += 1;
    }
    let mut pending = Pending {
        shared: shared.clone(),
        finished: false,
        dispatched: None,
    };
    if owner == Some(Owner::Overflow) {
        // The overflow source created the response: no account can continue it.
        if let Some(served) = overflow::serve(&shared, &mut pending, &request, &outgoing).await {
            return served;
        }
        pending.finish(Answer::NoAccount, None);
        return json_error(
            StatusCode::CONFLICT,
            "continuation_account_unavailable",
            "this request continues a conversation the overflow source created, which is not available now; start a new conversation",
            None,
        );
    }
    // How long this request has waited for an account whose pacing bucket was empty. Such
    // waits are bounded by this time (`max_wait`), not by the rounds below.
    let mut paced = Duration::ZERO;
    // Bounded: the policy hands out each account at most once per request, and at most
    // `max_attempts` of them, except that a 429 from a spent usage window gives an attempt
    // back, so up to every account may be tried; each attempt takes at most a few rounds
    // (a refresh, a re-send). This guards against a policy bug.
    let accounts = u32::try_from(shared.lock().policy.len()).unwrap_or(u32::MAX);
    let max_loops = shared
        .options
        .policy
        .max_attempts
        .saturating_add(accounts)
        .saturating_mul(3)
        .clamp(4, 100_000);
    // Every round, waits included: one more guard, never reached in practice (a wait
    // sleeps at least a millisecond, and waits stop after `max_wait`).
    let max_rounds = max_loops.saturating_add(100_000);
    let mut last_status: Option<StatusCode> = None;
    // Set when an attempt must be re-sent on the same account with its refreshed token.
    let mut resend: Option<AccountId> = None;
    // Whether this attempt already re-sent after a refresh (at most once per attempt).
    let mut resent = false;
    // The last upstream answer saying an account's login is gone, with that account.
    let mut gone_answer: Option<(reqwest::Response, AccountId)> = None;
    let mut next_attempt: u32 = 0;
    let mut rounds: u32 = 0;
    while next_attempt < max_loops && rounds < max_rounds {
        rounds += 1;
        let attempt = next_attempt;
        next_attempt += 1;
        let selected = match resend.take() {
            Some(id) => {
                shared.lock().counters.resends += 1;
                Ok(id)
            }
            None => {
                resent = false;
                select(&shared, &mut request, attempt > 0)
            }
        };
        let account = match selected {
            Ok(id) => {
                pending.dispatched = Some(id.clone());
                id
            }
            // Only pacing (or a cooldown about to end) is in the way: wait for it, as for a
            // retry, rather than refuse or hand the request to the overflow source.
            Err(Some(retry_after))
                if paced.saturating_add(retry_after) <= shared.options.policy.max_wait =>
            {
                // Not an attempt: nothing was handed out.
                next_attempt = attempt;
                let wait = retry_after.max(Duration::from_millis(1));
                paced += wait;
                tokio::time::sleep(wait).await;
                continue;
            }
            Err(Some(retry_after)) if pinned.is_some() => {
                pending.finish(Answer::GaveUp, None);
                tracing::info!(
                    retry_after_ms = retry_after.as_millis() as u64,
                    "the account of a continued conversation is busy"
                );
                return json_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "continuation_account_busy",
                    "this request continues a conversation (previous_response_id or x-codex-turn-state) of an account that is cooling down or out of quota, and no other account can continue it; retry after retry_after_ms",
                    Some(retry_after),
                );
            }
            Err(None) if pinned.is_some() && gone_answer.is_none() && last_status.is_none() => {
                pending.finish(Answer::NoAccount, None);
                return json_error(
                    StatusCode::CONFLICT,
                    "continuation_account_unavailable",
                    "this request continues a conversation (previous_response_id or x-codex-turn-state) of an account that is disabled or no longer in the pool; no other account can continue it, so start a new conversation",
                    None,
                );
            }
            Err(Some(retry_after)) => {
                if let Some(served) =
                    overflow::serve(&shared, &mut pending, &request, &outgoing).await
                {
                    return served;
                }
                pending.finish(Answer::GaveUp, None);
                tracing::info!(
                    retry_after_ms = retry_after.as_millis() as u64,
                    "pool exhausted"
                );
                return json_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "pool_exhausted",
                    "every account is cooling down; retry after retry_after_ms",
                    Some(retry_after),
                );
            }
            Err(None) => {
                if let Some((response, account)) = gone_answer.take() {
                    pending.finish(Answer::UpstreamError, None);
                    return stream_back(&shared, response, account, request.family());
                }
                pending.finish(Answer::NoAccount, None);
                return json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_account",
                    "no account left to try for this request (all disabled or already tried)",
                    None,
                );
            }
        };
        let creds = match shared.accounts.usable_credentials(&shared, &account).await {
            Ok(creds) => creds,
            Err(failure) => {
                // Refresh failed: the account cannot be used; let the policy cool it down.
                let decision = pending.record_outcome(
                    &mut request,
                    &account,
                    refresh_failure_outcome(&failure),
                    Some(failure.message),
                );
                if let Some(served) =
                    overflow::serve_if_out(&shared, &mut pending, &request, &outgoing, &decision)
                        .await
                {
                    return served;
                }
                let next = step(decision, |retry_after| {
                    pending.finish(Answer::GaveUp, None);
                    json_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "refresh_failed",
                        "no account has a usable token right now",
                        retry_after,
                    )
                })
                .await;
                match next {
                    Step::Next => continue,
                    Step::Answer(response) => return response,
                }
            }
        };
        let sent = shared
            .client
            .request(parts.method.clone(), url.clone())
            .headers(account_headers(&fwd_headers, &creds))
            .body(body.clone())
            .send()
            .await;
        let wall = SystemTime::now();
        let response = match sent {
            Ok(response) => response,
            Err(err) => {
                let outcome = if err.is_timeout() {
                    Outcome::Timeout
                } else {
                    Outcome::NetworkError
                };
                let message = format!("upstream request failed for {account}: {}", describe(&err));
                tracing::warn!(account = %account, error = %message, "upstream unreachable");
                let decision =
                    pending.record_outcome(&mut request, &account, outcome, Some(message.clone()));
                if let Some(served) =
                    overflow::serve_if_out(&shared, &mut pending, &request, &outgoing, &decision)
                        .await
                {
                    return served;
                }
                let next = step(decision, |retry_after| {
                    pending.finish(Answer::BadGateway, Some(message));
                    json_error(
                        StatusCode::BAD_GATEWAY,
                        "upstream_unreachable",
                        "the upstream could not be reached",
                        retry_after,
                    )
                })
                .await;
                match next {
                    Step::Next => continue,
                    Step::Answer(response) => return response,
                }
            }
        };
        let status = response.status();
        last_status = Some(status);
        // An error answer may say the login is gone for everyone: read its (small) body.
        let (response, gone) = if matches!(status.as_u16(), 401..=403) {
            read_error_answer(response).await
        } else {
            (response, None)
        };
        if let Some((reason, code)) = gone {
            let message = format!("{account}: {reason} ({code}); sign in to it again");
            tracing::warn!(account = %account, %reason, code = %code, "the upstream says the account's login is gone for everyone; it is no longer used");
            // Out of rotation here at once, the mark written in the background: a pool lock
            // held elsewhere must not hold up this request, which moves on to the next
            // account. A disable, not an outcome: reported as one (a 403), it would start
            // an hour's cooldown, shared with every process and never shortened, that keeps
            // the account out for that hour after someone signs in to it again. When no
            // account is left, the client gets this answer.
            let policy_reason = auth_storage::policy::disabled_reason_for(reason);
            shared.accounts.note_pool_disabled(&account, policy_reason);
            {
                let mut state = shared.lock();
                let _ = state.policy.disable_for(&account, policy_reason);
                // ok: the id was just selected, so it is known.
                let _ = state.policy.refund(&account, now());
                state.last_error = Some(message.clone());
            }
            pending.dispatched = None;
            shared.accounts.note_error(&account, message);
            let (sh, id, used) = (shared.clone(), account.clone(), creds.clone());
            tokio::spawn(async move {
                let (sh2, id2) = (sh.clone(), id.clone());
                let marked = tokio::task::spawn_blocking(move || {
                    sh2.accounts.mark_gone(&id2, &used, reason, Some(&code))
                })
                .await;
                match marked {
                    // The pool holds other tokens for the account now (a new sign-in, or
                    // another process refreshed): the answer was about old ones; back in.
                    Ok(Ok(GoneMark::TokensChanged)) => {
                        sh.accounts.lift_pool_disabled(&id, policy_reason);
                        let mut state = sh.lock();
                        let current = state
                            .policy
                            .export_account(&id)
                            .and_then(|a| a.disabled.map(|d| d.reason));
                        if current == Some(policy_reason) {
                            let _ = state.policy.enable(&id);
                        }
                        tracing::info!(account = %id, "the gone answer was about replaced tokens; the account is back in rotation");
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => {
                        tracing::warn!(account = %id, error = %auth_core::terminal::escape_control(&err.to_string()), "could not mark the account unusable in the pool; out of rotation here only");
                    }
                    Err(_) => {}
                }
            });
            gone_answer = Some((response, account));
            continue;
        }
        let outcome = Outcome::from_response(status.as_u16(), response.headers(), wall);
        let usage = UsageReport::from_headers(response.headers());
        let error = (outcome != Outcome::Success)
            .then(|| format!("upstream answered {} for {account}", status.as_u16()));
        tracing::info!(
            account = %account,
            status = status.as_u16(),
            attempt = attempt + 1,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "upstream answered"
        );
        let decision = if outcome == Outcome::Unauthorized && !resent {
            match after_unauthorized(&shared, &mut pending, &mut request, &account, &creds).await {
                Some(decision) => decision,
                None => {
                    drop(response);
                    tracing::info!(account = %account, "401 answered with a refresh; re-sending with the new token");
                    resend = Some(account);
                    resent = true;
                    continue;
                }
            }
        } else {
            pending.record_answer(&mut request, &account, outcome, error.clone(), &usage)
        };
        if let Some(served) =
            overflow::serve_if_out(&shared, &mut pending, &request, &outgoing, &decision).await
        {
            return served;
        }
        let next = step(decision, |retry_after| match retry_after {
            Some(wait) if outcome != Outcome::Success => {
                pending.finish(Answer::GaveUp, error);
                json_error(
                    status,
                    "upstream_unavailable",
                    "every account failed or is cooling down; retry after retry_after_ms",
                    Some(wait),
                )
            }
            _ => {
                let answer = if status.is_success() {
                    Answer::Ok
                } else {
                    Answer::UpstreamError
                };
                pending.finish(answer, error);
                stream_back(&shared, response, account, request.family())
            }
        })
        .await;
        match next {
            Step::Next => continue,
            Step::Answer(response) => return response,
        }
    }
    pending.finish(Answer::GaveUp, Some("retry loop bound reached".to_owned()));
    json_error(
        last_status.unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        "retries_exhausted",
        "the request could not be served (the proxy's retry bound was reached)",
        None,
    )
}

/// The policy's view of the request: the model family from the body, and the session (the
/// body's `prompt_cache_key`, else a `session_id`/`conversation_id` header) for affinity;
/// and the `previous_response_id` it continues, if any.
fn routing_request(body: &[u8], headers: &HeaderMap) -> (rotation_policy::Request, Option<String>) {
    let peek: Peek = serde_json::from_slice(body).unwrap_or_default();
    let family = peek
        .model
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "*".to_owned());
    let session = peek.prompt_cache_key.or_else(|| {
        ["session_id", "conversation_id"]
            .iter()
            .find_map(|h| headers.get(*h)?.to_str().ok().map(str::to_owned))
    });
    let request = rotation_policy::Request::new(family);
    let request = match session {
        Some(session) => request.with_session(session_key(session)),
        None => request,
    };
    (request, peek.previous_response_id)
}

/// Longest session key the policy is given as sent; longer ones are replaced by their digest.
const SESSION_KEY_MAX: usize = 128;

/// The key the policy remembers a session by (for its affinity window, 30 minutes by
/// default): the client's value when it is at most [`SESSION_KEY_MAX`] bytes, else
/// `sha256:` and the hex digest of it (71 bytes). A header is limited only by hyper's header
/// buffer, so without this every request could leave hundreds of kilobytes in the policy's
/// session table; the digest keeps affinity (same value, same key) at a bounded size.
fn session_key(session: String) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write;

    if session.len() <= SESSION_KEY_MAX {
        return session;
    }
    let digest = Sha256::digest(session.as_bytes());
    let mut key = String::with_capacity("sha256:".len() + 2 * digest.len());
    key.push_str("sha256:");
    for byte in digest {
        // ok: writing to a String cannot fail.
        let _ = write!(key, "{byte:02x}");
    }
    key
}

/// Asks the policy for an account and takes one dispatch from it (`retry`: an account was
/// handed out for this request before). `Err(Some(wait))`: every account is cooling down;
/// `Err(None)`: none left to try.
fn select(
    shared: &Shared,
    request: &mut rotation_policy::Request,
    retry: bool,
) -> Result<AccountId, Option<Duration>> {
    let mut state = shared.lock();
    let t = now();
    match state.policy.select(request, t) {
        Selection::Account(id) => {
            // ok to ignore: `consume` only fails for an unknown id, just selected.
            let _ = state.policy.consume(&id, t);
            state.counters.attempts += 1;
            if retry {
                state.counters.retries += 1;
            }
            Ok(id)
        }
        Selection::Exhausted { retry_after } => Err(Some(retry_after)),
        Selection::NoAccount => Err(None),
    }
}

/// The client's forwardable headers plus the account's `Authorization` (marked sensitive,
/// so it is never logged) and `ChatGPT-Account-Id`.
pub(super) fn account_headers(forwarded: &HeaderMap, creds: &AccountCredentials) -> HeaderMap {
    let mut headers = forwarded.clone();
    if let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {}", creds.access_token.expose())) {
        v.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, v);
    }
    if let Some(id) = creds
        .chatgpt_account_id
        .as_deref()
        .and_then(|id| HeaderValue::from_str(id).ok())
    {
        headers.insert("chatgpt-account-id", id);
    }
    headers
}

/// After an upstream `401` on a first send: refresh the account's token (single-flight) and
/// tell the policy. `None`: re-send on the same account with the new token; `Some`: the
/// policy's decision, when the refresh failed or that 401 disabled the account.
///
/// The 401 is reported once per rejected token (by the first request to see it), together
/// with the refresh under one lock, so the policy counts it but never cools the account down
/// for a token that is already replaced. Requests racing with the same stale token add no
/// new fact and are not reported again (each would count towards "disable after N 401s in a
/// row"). The re-send is a new dispatch whose outcome is reported like any other; a 401 on a
/// re-sent attempt is reported by the caller and decides the next step.
async fn after_unauthorized(
    shared: &Arc<Shared>,
    pending: &mut Pending,
    request: &mut rotation_policy::Request,
    account: &AccountId,
    creds: &AccountCredentials,
) -> Option<Decision> {
    let first = shared.accounts.first_rejection(account, creds.generation);
    match shared
        .accounts
        .refresh_after_rejection(shared, account, creds)
        .await
    {
        // The refresh already recorded the more useful error ("refresh failed…").
        AfterRejection::Failed(failure) => {
            Some(pending.record_outcome(request, account, refresh_failure_outcome(&failure), None))
        }
        AfterRejection::AlreadyRefreshed | AfterRejection::RefreshedHere => {
            if !first {
                return None;
            }
            let mut state = shared.lock();
            let t = now();
            let decision = state
                .policy
                .report(request, account, Outcome::Unauthorized, t);
            pending.dispatched = None;
            let disabled = state
                .policy
                .account_status(account, t)
                .is_some_and(|s| s.disabled.is_some());
            if disabled {
                // That 401 was the last straw: the policy disabled the account.
                return Some(decision);
            }
            // ok to ignore: the id was just selected, so it is known.
            let _ = state.policy.mark_refreshed(account, t);
            if state.policy.consume(account, t).is_ok() {
                pending.dispatched = Some(account.clone());
            }
            None
        }
    }
}

/// Reads an error answer's body (at most [`gone::CLASSIFIED_BODY_MAX`] bytes, the rest is
/// dropped: error bodies are small) and classifies it; returns an equivalent response to
/// pass on.
async fn read_error_answer(
    mut response: reqwest::Response,
) -> (
    reqwest::Response,
    Option<(auth_storage::pool::UnusableReason, String)>,
) {
    let status = response.status();
    let headers = response.headers().clone();
    let mut body = Vec::new();
    // Bounded: stops at the cap, at the end of the body, or at an error.
    while body.len() < gone::CLASSIFIED_BODY_MAX {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = gone::CLASSIFIED_BODY_MAX - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            _ => break,
        }
    }
    let verdict = gone::gone(status.as_u16(), &body);
    let mut rebuilt = http::Response::new(body);
    *rebuilt.status_mut() = status;
    *rebuilt.headers_mut() = headers;
    // The length may have changed (a body over the cap); let the client's side recompute.
    rebuilt.headers_mut().remove(header::CONTENT_LENGTH);
    rebuilt.headers_mut().remove(header::TRANSFER_ENCODING);
    (reqwest::Response::from(rebuilt), verdict)
}

/// How a failed refresh is told to the policy: a 401-like failure of the account, or (the
/// new tokens are with another process that is saving them) a transient one that never
/// counts towards "disable after N 401s".
fn refresh_failure_outcome(failure: &super::accounts::RefreshFailure) -> Outcome {
    if failure.transient {
        Outcome::NetworkError
    } else {
        Outcome::Unauthorized
    }
}

/// A reqwest error without its URL (which could carry query secrets).
fn describe(err: &reqwest::Error) -> String {
    error_kind(err).to_owned()
}

/// What kind of failure a reqwest error is, for logs and messages: never its text, which
/// can carry the URL (and a query's secrets).
pub(super) fn error_kind(err: &reqwest::Error) -> &'static str {
    if err.is_connect() {
        "connection failed"
    } else if err.is_timeout() {
        "timed out"
    } else if err.is_body() || err.is_decode() {
        "body error"
    } else {
        "request error"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peek(body: &str) -> Peek {
        serde_json::from_str(body).unwrap_or_default()
    }

    #[test]
    fn the_routing_fields_are_read_and_everything_else_skipped() {
        let body = r#"{"input":[{"role":"user","content":"a \"quoted\" {x}"}],"model":"gpt-5","stream":true,"prompt_cache_key":"s-1","tools":{"model":"nested"}}"#;
        assert_eq!(
            peek(body),
            Peek {
                model: Some("gpt-5".into()),
                prompt_cache_key: Some("s-1".into()),
                previous_response_id: None,
            }
        );
        assert_eq!(
            peek(r#"{"previous_response_id":"resp_1","model":"m"}"#)
                .previous_response_id
                .as_deref(),
            Some("resp_1")
        );
        // Escapes in short values are decoded.
        assert_eq!(
            peek(r#"{"model":"gpt\u002d5"}"#).model.as_deref(),
            Some("gpt-5")
        );
        for not_an_object in ["", "[]", "\"model\"", "{\"model\":", "{} x", "null"] {
            assert_eq!(peek(not_an_object), Peek::default(), "{not_an_object}");
        }
        assert_eq!(
            peek(r#"{"model":5,"prompt_cache_key":null}"#),
            Peek::default()
        );
    }

    #[test]
    fn long_values_and_escaped_keys_are_ignored_not_decoded() {
        let long = format!(
            r#"{{"model":"\n{}","prompt_cache_key":"k"}}"#,
            "A".repeat(PEEK_FIELD_MAX)
        );
        assert_eq!(
            peek(&long),
            Peek {
                model: None,
                prompt_cache_key: Some("k".into()),
                previous_response_id: None,
            }
        );
        let escaped_key = format!(r#"{{"\n{}":0,"model":"m"}}"#, "A".repeat(100_000));
        assert_eq!(peek(&escaped_key).model.as_deref(), Some("m"));
        // A key spelled with escapes is not the field (Codex never escapes its keys).
        assert_eq!(peek(r#"{"mod\u0065l":"m"}"#), Peek::default());
    }

    #[test]
    fn the_routing_request_falls_back_to_star_and_session_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("session_id", HeaderValue::from_static("h-1"));
        let (r, _) = routing_request(br#"{"model":"gpt-5","prompt_cache_key":"p-1"}"#, &headers);
        assert_eq!((r.family(), r.session()), ("gpt-5", Some("p-1")));
        let (r, _) = routing_request(b"not json", &headers);
        assert_eq!((r.family(), r.session()), ("*", Some("h-1")));
        let (r, _) = routing_request(br#"{"model":""}"#, &HeaderMap::new());
        assert_eq!((r.family(), r.session()), ("*", None));
    }

    #[test]
    fn long_session_keys_are_replaced_by_a_fixed_size_digest() {
        // Up to the limit, the key is the client's value.
        let short = "s".repeat(SESSION_KEY_MAX);
        assert_eq!(session_key(short.clone()), short);
        // Past it, a digest: the same size whatever the input, the same for the same
        // input (affinity holds), different for different inputs.
        let long = "s".repeat(SESSION_KEY_MAX + 1);
        let huge = "s".repeat(300 * 1024);
        for key in [session_key(long.clone()), session_key(huge.clone())] {
            assert_eq!(key.len(), "sha256:".len() + 64, "{key}");
            assert!(key.starts_with("sha256:"), "{key}");
            assert!(key.len() <= SESSION_KEY_MAX);
        }
        assert_eq!(session_key(huge.clone()), session_key(huge.clone()));
        assert_ne!(session_key(long), session_key(huge.clone()));
        // A known answer (`printf 'x%.0s' {1..200} | sha256sum`): lower-case hex of the bytes.
        assert_eq!(
            session_key("x".repeat(200)),
            "sha256:aa20c23e3201834050679e1d88941b9a6fed0557c9a705cb2c315e2e63fd486d"
        );

        // Both sources of a session go through it: a 300 KB `session_id` header...
        let mut headers = HeaderMap::new();
        headers.insert("session_id", HeaderValue::from_str(&huge).unwrap());
        let (r, _) = routing_request(b"{}", &headers);
        assert_eq!(r.session(), Some(session_key(huge.clone()).as_str()));
        // ...and a body's `prompt_cache_key` (decoded up to PEEK_FIELD_MAX).
        let key = "k".repeat(PEEK_FIELD_MAX - 2);
        let body = format!(r#"{{"prompt_cache_key":"{key}"}}"#);
        let (r, _) = routing_request(body.as_bytes(), &HeaderMap::new());
        assert_eq!(r.session(), Some(session_key(key).as_str()));
    }
}
