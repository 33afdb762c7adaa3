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

/// Request headers that some servers and front ends read as the request's real origin,
/// path or method (`X-Forwarded-Host: evil`, `X-Original-URL: /admin`,
/// `X-HTTP-Method-Override: DELETE`). The proxy alone decides where a request goes and with
/// which method, so a client's claims about them are never passed on. Every name starting
/// with `x-forwarded-` is dropped too (see [`is_forwarded_claim`]).
const ROUTING_CLAIMS: [&str; 14] = [
    "forwarded",
    "x-forwarded",
    "x-original-url",
    "x-original-uri",
    "x-original-host",
    "x-rewrite-url",
    "x-envoy-original-path",
    "x-host",
    "x-http-host-override",
    "x-real-ip",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-method",
];

/// `X-Forwarded-For`, `-Host`, `-Proto`, `-Port`, `-Prefix`, `-Server`, …: a family whose
/// members front ends keep adding, so it is matched by prefix.
fn is_forwarded_claim(name: &HeaderName) -> bool {
    name.as_str().starts_with("x-forwarded-")
}

/// Request headers the proxy replaces or recomputes instead of forwarding: the client's
/// credentials (the wrapper token), the account headers it sets per attempt, `Host` and
/// `Content-Length` (set by the HTTP client for the outgoing request), `Expect` (hyper
/// answers `100-continue` to the client itself when the body is read; the upstream gets the
/// body whole), and every routing claim (`Forwarded`, `X-Forwarded*`, `X-Original-URL`,
/// method overrides, …).
pub(crate) fn strip_request_only(headers: &mut HeaderMap) {
    for name in [
        header::AUTHORIZATION.as_str(),
        "x-api-key",
        "chatgpt-account-id",
        header::HOST.as_str(),
        header::CONTENT_LENGTH.as_str(),
        header::COOKIE.as_str(),
        header::EXPECT.as_str(),
    ]
    .into_iter()
    .chain(ROUTING_CLAIMS)
    {
        headers.remove(name);
    }
    let forwarded: Vec<HeaderName> = headers
        .keys()
        .filter(|k| is_forwarded_claim(k))
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
        h.insert(
            "openai-beta",
            HeaderValue::from_static("responses=experimental"),
        );
        for claim in [
            "host",
            "cookie",
            "content-length",
            "expect",
            "chatgpt-account-id",
            "forwarded",
            "x-forwarded",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-forwarded-port",
            "x-forwarded-prefix",
            "x-forwarded-server",
            "x-original-url",
            "x-original-uri",
            "x-original-host",
            "x-rewrite-url",
            "x-envoy-original-path",
            "x-host",
            "x-http-host-override",
            "x-real-ip",
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
            "x-original-method",
        ] {
            h.insert(claim, HeaderValue::from_static("evil.example"));
        }
        // Names that only look like the family are kept.
        h.insert("x-forwardedness", HeaderValue::from_static("1"));
        strip_request_only(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["openai-beta", "session_id", "x-forwardedness"]);
    }
}
