//! The overflow source (opt-in): an OpenAI API key, with its own base URL, that serves a
//! request only when no ChatGPT account of the pool can serve it now.
//!
//! The request goes to `{overflow base}/<path>` by the same mapping as to the upstream
//! (`/v1/responses` → `https://api.openai.com/v1/responses`, with every rule of the target
//! module), with the client's forwardable headers, `Authorization: Bearer <key>` and no
//! `ChatGPT-Account-Id`. The Codex CLI sends the same Responses API body to
//! `api.openai.com` when it is signed in with an API key, so the body goes unchanged.
//!
//! The rules (when it serves, the key, the status) are on [`OverflowSource`], with an
//! end-to-end example.

use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use auth_core::Secret;
use auth_core::Timestamp as WallTimestamp;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, Uri, header};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use rotation_policy::Decision;
use serde::Serialize;

use super::continuation::{IdWatch, Owner, ResponseIds};
use super::in_flight::{Answer, Pending};
use super::target::{UpstreamBase, UpstreamUrlError};
use super::{BoxBody, BoxError, Shared, strip_hop_by_hop};

/// The OpenAI API (`/v1/responses` goes to `{base}/responses`).
pub const OPENAI_API_BASE: &str = "https://api.openai.com/v1";

/// Longest key accepted (bytes); OpenAI keys are far shorter.
const KEY_MAX: usize = 4096;

/// An OpenAI API key and where to use it ([`ProxyOptions::overflow`](super::ProxyOptions::overflow)).
///
/// A request it serves goes to `{base_url}/<path>` by the same mapping (and refusals) as to
/// the upstream, with the client's forwardable headers, `Authorization: Bearer <key>` and no
/// `ChatGPT-Account-Id`; the body goes unchanged (the Codex CLI sends the same Responses API
/// body to `api.openai.com` when it is signed in with an API key). `Debug` shows the base
/// URL only.
///
/// ```
/// use examples::proxy::{OPENAI_API_BASE, OverflowSource};
///
/// let source = OverflowSource::new(OPENAI_API_BASE, auth_core::Secret::new("sk-123".into()));
/// assert!(!format!("{source:?}").contains("sk-123"));
/// ```
///
/// # When the overflow source serves
///
/// | the pool, for this request | without overflow | with overflow |
/// |---|---|---|
/// | an account is usable now | it serves | it serves; the overflow source gets nothing |
/// | every enabled account is cooling down or out of usage headroom ([`Selection::Exhausted`](rotation_policy::Selection::Exhausted)) | `429 pool_exhausted` + `retry_after_ms` | the overflow source serves |
/// | the last attempt failed (429, 401, 403, 5xx, network, refresh) and no account is usable now (the policy returns the answer *with* a `retry_after`) | that failure + `retry_after_ms` | the overflow source serves |
/// | the last attempt failed, another account is usable but the request's attempts are spent | the upstream's answer | the same: the pool is not out of capacity |
/// | the policy says wait a moment (`max_wait`) for an account | waits, then that account | the same |
/// | no account enabled (all disabled by hand, logins gone) or all tried | `503 no_account` | the same: disabled accounts are the user's decision, not a shortage |
/// | the request is pinned to one account | as the pool answers | the same: another source cannot continue that account's conversation |
///
/// | the overflow source | the client gets |
/// |---|---|
/// | answers (any status) | that answer, streamed as it comes (counted in `requests_served`) |
/// | cannot be reached, or times out before answering | the answer the proxy would have given without it (counted in `failures`) |
///
/// **The key** is read from an environment variable or a file ([`OverflowSource::key_from_env`],
/// [`OverflowSource::key_from_file`]), never from the command line (another user can read a
/// process's arguments), and held as an [`auth_core::Secret`]: it reaches only the
/// `Authorization` header (marked sensitive) and is never in a log, an error, `Debug`
/// output or `/status`.
///
/// **Status.** `/status` shows `overflow` ([`OverflowStatus`]): whether it is configured,
/// its base URL, whether it is serving (`active_now`: a request is with it, or it served the
/// latest request that found no account and no account was dispatched since), and counts.
/// A request it answers also counts in the proxy's `ok` or `upstream_errors` (so the
/// counters still add up), never in `attempts`: no account was dispatched for it. Its
/// answers are not usage of any account and are not reported to the policy.
///
/// ```
/// use examples::mock_openai::MockOpenAi;
/// use examples::mock_upstream::{Behavior, MockConfig, MockUpstream};
/// use examples::proxy::{Accounts, OverflowSource, ProxyOptions, RotationProxy, WrapperToken};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // The only ChatGPT account is rate limited; an API key stands by.
/// let limited = Behavior::RateLimited { retry_after: std::time::Duration::from_secs(60), times: u32::MAX };
/// let upstream = MockUpstream::start(MockConfig::default().account("ws-1", limited)).await?;
/// let openai = MockOpenAi::start().await?;
/// let mut accounts = Accounts::new();
/// let login = upstream.synthetic_account("ws-1", "one@example.com", false);
/// accounts.push(Some(&login.email), None, login.tokens)?;
///
/// let token = WrapperToken::generate()?;
/// let mut options = ProxyOptions::new(upstream.base_url(), token.clone());
/// // In a program: OverflowSource::key_from_env("OPENAI_API_KEY")?
/// let key = auth_core::Secret::new("sk-test-overflow".to_owned());
/// options.overflow = Some(OverflowSource::new(openai.base_url(), key));
/// let proxy = RotationProxy::start(options, accounts).await?;
///
/// let answer = reqwest::Client::builder().no_proxy().build()?
///     .post(format!("{}/responses", proxy.base_url()))
///     .bearer_auth(token.secret().expose())
///     .body(r#"{"model":"gpt-5","input":"hi"}"#)
///     .send()
///     .await?;
/// assert_eq!(answer.status(), 200);
/// let status = proxy.status();
/// assert!(status.overflow.active_now);
/// assert_eq!(status.overflow.requests_served, 1);
/// let sent = openai.requests();
/// assert_eq!(sent[0].bearer.as_ref().map(|k| k.expose()), Some("sk-test-overflow"));
/// assert!(!sent[0].chatgpt_account_id);
/// proxy.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct OverflowSource {
    /// Base URL (`http` or `https`, no credentials, query or fragment); `/v1/<path>` goes to
    /// `{base_url}/<path>`.
    pub base_url: String,
    /// The API key, sent as `Authorization: Bearer`.
    pub api_key: Secret,
}

impl std::fmt::Debug for OverflowSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverflowSource")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// Why an overflow key could not be read (never holds the key).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OverflowKeyError {
    /// The environment variable is unset or empty.
    #[error("the environment variable {0} holds no key; export the API key in it")]
    EnvUnset(String),
    /// The key file could not be read.
    #[error("could not read the key file {path}: {source}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The key file can be read or written by other users.
    #[error(
        "the key file {0} is readable or writable by other users; restrict it with `chmod 600`"
    )]
    FileOpen(std::path::PathBuf),
    /// The key is not one line of printable ASCII without spaces, at most 4096 bytes.
    #[error("the key from {0} is not an API key (one line of printable characters without spaces)")]
    Malformed(String),
}

impl OverflowSource {
    /// A source at `base_url` (a trailing `/` is ignored) using `api_key`.
    pub fn new(base_url: impl Into<String>, api_key: Secret) -> Self {
        Self {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            api_key,
        }
    }

    /// Reads the key from the environment variable `name` (surrounding whitespace ignored).
    ///
    /// ```
    /// use examples::proxy::{OverflowKeyError, OverflowSource};
    ///
    /// let missing = OverflowSource::key_from_env("NO_SUCH_VARIABLE_FOR_THIS_DOCTEST");
    /// assert!(matches!(missing, Err(OverflowKeyError::EnvUnset(_))));
    /// ```
    pub fn key_from_env(name: &str) -> Result<Secret, OverflowKeyError> {
        let value = match std::env::var(name) {
            Ok(value) => Secret::new(value),
            Err(std::env::VarError::NotPresent) => {
                return Err(OverflowKeyError::EnvUnset(name.to_owned()));
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(OverflowKeyError::Malformed(name.to_owned()));
            }
        };
        if value.expose().trim().is_empty() {
            return Err(OverflowKeyError::EnvUnset(name.to_owned()));
        }
        checked_key(value.expose(), name)
    }

    /// Reads the key from the first line of `path`. On Unix the file must not be readable
    /// or writable by group or others (`chmod 600`), as for an SSH key.
    ///
    /// ```
    /// use examples::proxy::OverflowSource;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("openai.key");
    /// std::fs::write(&path, "sk-from-a-file\n")?;
    /// #[cfg(unix)]
    /// {
    ///     use std::os::unix::fs::PermissionsExt;
    ///     std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    /// }
    /// assert_eq!(OverflowSource::key_from_file(&path)?.expose(), "sk-from-a-file");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn key_from_file(path: &Path) -> Result<Secret, OverflowKeyError> {
        use std::io::Read;

        let file_error = |source| OverflowKeyError::File {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(file_error)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = file.metadata().map_err(file_error)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(OverflowKeyError::FileOpen(path.to_path_buf()));
            }
        }
        // One byte more than a key may have, so an over-long file is refused, not cut.
        let mut raw = Vec::new();
        file.take(KEY_MAX as u64 + 2)
            .read_to_end(&mut raw)
            .map_err(file_error)?;
        let text = Secret::new(String::from_utf8(raw).unwrap_or_default());
        let origin = path.display().to_string();
        let first = text.expose().lines().next().unwrap_or_default();
        checked_key(first, &origin)
    }
}

/// `raw` trimmed, if it is a plausible key (it must fit in a header value).
fn checked_key(raw: &str, origin: &str) -> Result<Secret, OverflowKeyError> {
    let key = raw.trim();
    let plain = |c: char| c.is_ascii_graphic();
    if key.is_empty() || key.len() > KEY_MAX || !key.chars().all(plain) {
        return Err(OverflowKeyError::Malformed(origin.to_owned()));
    }
    Ok(Secret::new(key.to_owned()))
}

/// The overflow part of `GET /status` (never the key).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct OverflowStatus {
    /// Whether an overflow source is configured.
    pub configured: bool,
    /// Its base URL.
    pub base_url: Option<String>,
    /// Whether it is serving now: a request is with it, or it served the latest request
    /// that found no account and no ChatGPT account was dispatched since.
    pub active_now: bool,
    /// Requests it answered (any status).
    pub requests_served: u64,
    /// Of those, answered `2xx`.
    pub ok: u64,
    /// Requests sent to it that it did not answer (unreachable, timed out); the client got
    /// the pool's own answer.
    pub failures: u64,
    /// Requests with it now (until their answer's body has been passed on).
    pub in_flight: u64,
    /// Its answers whose body broke mid-way.
    pub stream_errors: u64,
    /// When it last answered (RFC 3339).
    pub last_served_at: Option<String>,
}

/// A configured overflow source at run time.
pub(crate) struct Overflow {
    base: UpstreamBase,
    base_url: String,
    key: Secret,
    stats: Mutex<Stats>,
}

#[derive(Default)]
struct Stats {
    status: OverflowStatus,
    /// The proxy's `attempts` counter when the overflow source took the latest request it
    /// answered: while it has not moved, no ChatGPT account was dispatched since.
    attempts_at_last_take: Option<u64>,
}

impl Overflow {
    pub(crate) fn new(source: &OverflowSource) -> Result<Self, UpstreamUrlError> {
        Ok(Self {
            base: UpstreamBase::parse(&source.base_url)?,
            base_url: source.base_url.clone(),
            key: source.api_key.clone(),
            stats: Mutex::new(Stats::default()),
        })
    }

    fn stats(&self) -> MutexGuard<'_, Stats> {
        // Updates are a few field writes that cannot panic half-way.
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `/status`'s view, given the proxy's current `attempts` counter.
    pub(crate) fn status(&self, attempts: u64) -> OverflowStatus {
        let stats = self.stats();
        let mut status = stats.status.clone();
        status.configured = true;
        status.base_url = Some(self.base_url.clone());
        status.active_now = status.in_flight > 0 || stats.attempts_at_last_take == Some(attempts);
        status
    }
}

/// `/status`'s view of `overflow`, configured or not.
pub(crate) fn status(shared: &Shared, attempts: u64) -> OverflowStatus {
    shared
        .overflow
        .as_ref()
        .map(|o| o.status(attempts))
        .unwrap_or_default()
}

/// The client's request, as the forwarding loop holds it.
pub(crate) struct Outgoing<'a> {
    pub(crate) method: &'a Method,
    pub(crate) uri: &'a Uri,
    /// Forwardable headers: hop-by-hop, credentials and routing claims already dropped.
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: &'a Bytes,
}

/// Serves the request from the overflow source, when one is configured and the request
/// may go there (see the module's table); the caller calls this only where it would
/// otherwise answer that no account is usable now. `None`: the caller gives its own answer.
pub(crate) async fn serve(
    shared: &Arc<Shared>,
    pending: &mut Pending,
    request: &rotation_policy::Request,
    outgoing: &Outgoing<'_>,
) -> Option<Response<BoxBody>> {
    let overflow = shared.overflow.as_ref()?;
    if request.account().is_some() {
        return None;
    }
    // The same mapping and rules as for the upstream; the forwarding loop already resolved
    // this target against the upstream, so a refusal here is not expected.
    let url = overflow.base.resolve(outgoing.uri).ok()?;
    // Read before sending: an account dispatched while this request is with the overflow
    // source ends `active_now`.
    let attempts = shared.lock().counters.attempts;
    overflow.stats().status.in_flight += 1;
    let mut taken = Taken {
        overflow_of: shared.clone(),
        answered: false,
    };
    let sent = shared
        .client
        .request(outgoing.method.clone(), url)
        .headers(key_headers(outgoing.headers, &overflow.key))
        .body(outgoing.body.clone())
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(err) => {
            let kind = super::forward::error_kind(&err);
            overflow.stats().status.failures += 1;
            tracing::warn!(
                error = kind,
                "overflow source unreachable; answering from the pool"
            );
            return None;
        }
    };
    let status = response.status();
    {
        let mut stats = overflow.stats();
        stats.status.requests_served += 1;
        if status.is_success() {
            stats.status.ok += 1;
        }
        stats.status.last_served_at = Some(WallTimestamp::now().to_string());
        stats.attempts_at_last_take = Some(attempts);
    }
    taken.answered = true;
    tracing::info!(
        status = status.as_u16(),
        family = request.family(),
        "no ChatGPT account usable now; served by the overflow source"
    );
    let answer = if status.is_success() {
        Answer::Ok
    } else {
        Answer::UpstreamError
    };
    pending.finish(answer, None);
    let mut headers = response.headers().clone();
    strip_hop_by_hop(&mut headers);
    let upstream: http::Response<reqwest::Body> = response.into();
    let body = OverflowBody {
        inner: upstream.into_body(),
        taken,
        failed: false,
        ids: IdWatch::new(ResponseIds::new(shared.clone(), Owner::Overflow)),
    };
    let mut out = Response::new(BodyExt::boxed_unsync(body));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Some(out)
}

/// [`serve`] where the policy's `decision` means that no account is usable now (it returns
/// the answer to the client with a `retry_after`); `None` otherwise.
pub(crate) async fn serve_if_out(
    shared: &Arc<Shared>,
    pending: &mut Pending,
    request: &rotation_policy::Request,
    outgoing: &Outgoing<'_>,
    decision: &Decision,
) -> Option<Response<BoxBody>> {
    match decision {
        Decision::ReturnToClient {
            retry_after: Some(_),
        } => serve(shared, pending, request, outgoing).await,
        _ => None,
    }
}

/// The client's forwardable headers plus `Authorization: Bearer <key>` (marked sensitive,
/// so it is never logged); no `ChatGPT-Account-Id` (dropped with the client's credentials).
fn key_headers(forwarded: &HeaderMap, key: &Secret) -> HeaderMap {
    let mut headers = forwarded.clone();
    headers.remove("chatgpt-account-id");
    if let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {}", key.expose())) {
        v.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, v);
    }
    headers
}

/// One request with the overflow source: `in_flight` until its answer's body is passed on
/// or dropped (and, unanswered, that is all: the failure is counted where it is known).
struct Taken {
    overflow_of: Arc<Shared>,
    answered: bool,
}

impl Drop for Taken {
    fn drop(&mut self) {
        if let Some(overflow) = &self.overflow_of.overflow {
            let mut stats = overflow.stats();
            stats.status.in_flight = stats.status.in_flight.saturating_sub(1);
        }
    }
}

/// The overflow source's answer body, passed on frame by frame (no buffering), with the
/// ids of the responses it creates learned on the way (their continuations come back here).
struct OverflowBody {
    inner: reqwest::Body,
    taken: Taken,
    failed: bool,
    ids: IdWatch,
}

impl Body for OverflowBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(err))) => {
                if !self.failed {
                    self.failed = true;
                    if let Some(overflow) = &self.taken.overflow_of.overflow {
                        overflow.stats().status.stream_errors += 1;
                    }
                    tracing::warn!(
                        answered = self.taken.answered,
                        "the overflow source's answer broke mid-way"
                    );
                }
                Poll::Ready(Some(Err(Box::new(err))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.ids.watch(data);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other.map(|o| o.map(|r| r.map_err(|e| Box::new(e) as BoxError))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_printable_line_and_never_echoed() {
        assert_eq!(checked_key("  sk-abc\t", "X").unwrap().expose(), "sk-abc");
        for bad in [
            "",
            "   ",
            "sk abc",
            "sk-\u{7f}",
            "sk-é",
            &"k".repeat(KEY_MAX + 1),
        ] {
            let err = checked_key(bad, "OPENAI_API_KEY").unwrap_err();
            assert_eq!(
                err.to_string(),
                "the key from OPENAI_API_KEY is not an API key (one line of printable characters without spaces)"
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn key_files_open_to_others_are_refused_and_the_first_line_is_the_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "sk-secret-value\nsecond line\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = OverflowSource::key_from_file(&path).unwrap_err();
        assert!(matches!(err, OverflowKeyError::FileOpen(_)), "{err}");
        assert!(!err.to_string().contains("sk-secret-value"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            OverflowSource::key_from_file(&path).unwrap().expose(),
            "sk-secret-value"
        );
        // Over-long files are refused whole, not cut to a key-sized prefix.
        std::fs::write(&path, "k".repeat(KEY_MAX + 1)).unwrap();
        assert!(matches!(
            OverflowSource::key_from_file(&path),
            Err(OverflowKeyError::Malformed(_))
        ));
        let gone = dir.path().join("absent");
        assert!(matches!(
            OverflowSource::key_from_file(&gone),
            Err(OverflowKeyError::File { .. })
        ));
    }

    #[test]
    fn the_key_replaces_the_clients_credentials_and_no_account_id_is_sent() {
        let mut forwarded = HeaderMap::new();
        forwarded.insert("chatgpt-account-id", HeaderValue::from_static("ws-1"));
        forwarded.insert("session_id", HeaderValue::from_static("s-1"));
        let headers = key_headers(&forwarded, &Secret::new("sk-x".into()));
        assert_eq!(headers[header::AUTHORIZATION], "Bearer sk-x");
        assert!(headers[header::AUTHORIZATION].is_sensitive());
        assert!(headers.get("chatgpt-account-id").is_none());
        assert_eq!(headers["session_id"], "s-1");
        let source = OverflowSource::new("https://api.openai.com/v1/", Secret::new("sk-x".into()));
        assert_eq!(source.base_url, OPENAI_API_BASE);
        assert!(!format!("{source:?}").contains("sk-x"));
    }
}
