//! The answers the proxy writes itself (not the upstream's): the JSON error shape shared by
//! every refusal, and the refusals counted apart from account selection (`413`, `503` for a
//! spent body budget, `400` for a request target outside the upstream base path, `405` for a
//! method the proxy does not forward).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use super::{BoxBody, Shared, target};

pub(super) fn full(body: impl Into<Bytes>) -> BoxBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub(super) fn json_error(
    status: StatusCode,
    kind: &str,
    message: &str,
    retry_after: Option<Duration>,
) -> Response<BoxBody> {
    let mut error = serde_json::json!({"type": kind, "message": message});
    if let Some(wait) = retry_after {
        error["retry_after_ms"] =
            serde_json::json!(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
    }
    let mut response = Response::new(full(serde_json::json!({ "error": error }).to_string()));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(wait) = retry_after {
        let secs = wait.as_millis().div_ceil(1000).max(1);
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            h.insert(header::RETRY_AFTER, v);
        }
    }
    response
}

pub(super) fn too_large(shared: &Shared) -> Response<BoxBody> {
    shared.lock().counters.rejected_too_large += 1;
    json_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_too_large",
        &format!(
            "request body over the proxy's limit of {} bytes",
            shared.options.body_limit.min(shared.options.body_budget)
        ),
        None,
    )
}

/// How long a client is told to wait when the body budget is spent: bodies in flight
/// are usually sent on within a second.
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

pub(super) fn busy(shared: &Shared) -> Response<BoxBody> {
    shared.lock().counters.rejected_busy += 1;
    tracing::warn!(
        budget = shared.options.body_budget,
        "request body refused: the body budget is spent"
    );
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "proxy_busy",
        &format!(
            "the proxy already holds its budget of {} bytes of request bodies; retry after retry_after_ms",
            shared.options.body_budget
        ),
        Some(BUSY_RETRY_AFTER),
    )
}

pub(super) fn bad_target(shared: &Shared, error: target::TargetError) -> Response<BoxBody> {
    shared.lock().counters.rejected_bad_target += 1;
    // The path itself is not logged or echoed: it is the attacker's text.
    tracing::warn!(reason = %error, "rejected: request target outside the upstream base path");
    json_error(
        StatusCode::BAD_REQUEST,
        "bad_request_target",
        &error.to_string(),
        None,
    )
}

/// The methods the proxy forwards. Anything else is answered `405` and never sent: `CONNECT`
/// (the HTTP client would turn `CONNECT /v1/x` into `CONNECT host:port`, a tunnel carrying the
/// account's credentials to a target outside the base path), `TRACE` (echoes the request,
/// credentials included), `OPTIONS` and extension methods (no Responses API endpoint uses
/// them, and their meaning to an upstream or a front end is unknown).
pub(super) const FORWARDED_METHODS: [Method; 6] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// The `Allow` header of a `405`: [`FORWARDED_METHODS`].
const ALLOW: &str = "GET, HEAD, POST, PUT, PATCH, DELETE";

pub(super) fn bad_method(shared: &Shared, method: &Method) -> Response<BoxBody> {
    shared.lock().counters.rejected_method += 1;
    // A method is a token (no spaces or control characters), safe to log.
    tracing::warn!(%method, "rejected: a method the proxy does not forward");
    let mut response = json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("the proxy forwards only {ALLOW}"),
        None,
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(ALLOW));
    response
}
