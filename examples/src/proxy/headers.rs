//! Which headers a proxy must not forward (RFC 9110 §7.6.1), in either direction.

use http::HeaderMap;
use http::header::{self, HeaderName};

/// Hop-by-hop headers that are never forwarded, whatever `Connection` says.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop headers, including every header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Request headers that some servers and front ends read as the request's real origin or
/// path (`X-Forwarded-Host: evil`, `X-Original-URL: /admin`). The proxy alone decides where
/// a request goes, so a client's claims about it are never passed on.
const ROUTING_CLAIMS: [&str; 6] = [
    "forwarded",
    "x-original-url",
    "x-rewrite-url",
    "x-host",
    "x-http-host-override",
    "x-real-ip",
];

/// Request headers the proxy replaces or recomputes instead of forwarding: the client's
/// credentials (the wrapper token), the account headers it sets per attempt, `Host` and
/// `Content-Length` (set by the HTTP client for the outgoing request), and every routing
/// claim (`Forwarded`, `X-Forwarded-*`, `X-Original-URL`, …).
pub(crate) fn strip_request_only(headers: &mut HeaderMap) {
    for name in [
        header::AUTHORIZATION.as_str(),
        "x-api-key",
        "chatgpt-account-id",
        header::HOST.as_str(),
        header::CONTENT_LENGTH.as_str(),
        header::COOKIE.as_str(),
    ]
    .into_iter()
    .chain(ROUTING_CLAIMS)
    {
        headers.remove(name);
    }
    let forwarded: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-forwarded-"))
        .cloned()
        .collect();
    for name in forwarded {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn strips_fixed_and_connection_named_headers_only() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Custom-Hop"),
        );
        h.insert("x-custom-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert(
            "openai-beta",
            HeaderValue::from_static("responses=experimental"),
        );
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "openai-beta"]);
    }

    #[test]
    fn request_only_headers_drop_client_credentials_and_routing_claims() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer wrapper"));
        h.insert("x-api-key", HeaderValue::from_static("wrapper"));
        h.insert("session_id", HeaderValue::from_static("abc"));
        for claim in [
            "host",
            "forwarded",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-forwarded-port",
            "x-forwarded-prefix",
            "x-original-url",
            "x-rewrite-url",
        ] {
            h.insert(claim, HeaderValue::from_static("evil.example"));
        }
        strip_request_only(&mut h);
        assert_eq!(
            h.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["session_id"]
        );
    }
}
