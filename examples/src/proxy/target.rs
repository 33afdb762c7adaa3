//! Pure: maps a client's request target to the upstream URL, confined under the upstream's
//! base path.
//!
//! The proxy sends a pool account's bearer token and `ChatGPT-Account-Id` with every request
//! it forwards, so where it forwards must never be the client's choice beyond "some path
//! under `{upstream}/`". The rules, in the order they are applied:
//!
//! | client sends | result |
//! |---|---|
//! | an absolute-form (`http://host/…`) or authority-form (`host:port`) target | refused |
//! | a path not starting with `/v1/` | refused (the proxy answers 404 before this) |
//! | `\` anywhere in the path | refused (some servers read it as `/`) |
//! | `%` not followed by two hex digits | refused (invalid percent-encoding) |
//! | `%2f`/`%2F` or `%5c`/`%5C` (an encoded separator) | refused |
//! | `%00`–`%1f`, `%7f` (control bytes, encoded; raw ones never parse) | refused |
//! | `%25` (a `%` that decodes to `%`: double encoding such as `%252e`) | refused |
//! | a segment that decodes to bytes that are not UTF-8 | refused |
//! | an empty segment (`//`) | dropped (never becomes a scheme-relative `//host`) |
//! | `.` (plain or `%2e`, any case) | dropped |
//! | `..` (plain, `%2e%2e`, `.%2e`, `%2E.` …) | removes the previous segment; refused when there is none (it would leave the base path) |
//! | a segment of only dots and spaces, or dots before `;` (`...`, `. `, `..;x`) | refused (servers disagree on what it means) |
//! | any other segment whose Unicode compatibility normalization (NFKC) breaks one of the rules above: it contains `/` or `\` (`／`, `＼`, `﹨`, `℀` → `a/c`, `℅` → `c/o`), `%` (`％`, `﹪`) or a control byte, or is only dots and spaces or dots before `;` (`．．`, `‥`, `…`, `︰` → `..`, `︙` → `...`, `..;` with U+037E → `..;`) | refused, with the same error as the plain form |
//! | a separator look-alike that NFKC keeps but other foldings map to `/` or `\` (`⁄`, `∕`, `⧵`, `⧸`, `⧹`), as sent or in the NFKC form (`½` → `1⁄2`) | refused |
//! | anything else | decoded, then re-encoded by the `url` crate as one segment |
//! | a trailing `/` | kept |
//! | the query string | appended as it came (the `url` crate encodes what must be); it cannot change the origin or the path |
//!
//! Some servers and frameworks normalize decoded paths with NFKC, so each decoded segment is
//! judged both as sent and in its NFKC form (computed with `icu_normalizer`). What NFKC maps
//! onto structure is left to the normalizer, not to a list of look-alikes, so the class is
//! whole whatever the Unicode version adds; only the five separator confusables NFKC keeps
//! are listed. A unit test walks every `char` to hold this.
//!
//! The result is built from the parsed upstream URL with [`url::Url`]'s segment API, then
//! checked again (scheme, host, port, no credentials, path under the base path, no dot
//! segment) before it is returned: nothing from the client — path, query, headers
//! (`Host`, `X-Forwarded-*` are dropped elsewhere), request-target form — changes the
//! upstream scheme, host or port.

use std::borrow::Cow;

use icu_normalizer::ComposingNormalizerBorrowed;
use url::Url;

/// Why an upstream base URL cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamUrlError {
    /// It does not parse as a URL.
    #[error("the upstream URL does not parse ({0}); pass an http:// or https:// URL")]
    Unparsable(url::ParseError),
    /// Its scheme is not `http` or `https`.
    #[error("the upstream URL must use http or https")]
    Scheme,
    /// It has no host.
    #[error("the upstream URL has no host")]
    NoHost,
    /// It carries a user name or password.
    #[error("the upstream URL must not carry a user name or password")]
    Credentials,
    /// It has a query or fragment (the client's query is appended per request).
    #[error("the upstream URL must not have a query or fragment")]
    QueryOrFragment,
}

/// Why a client's request target was refused (answered `400`, never sent upstream).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TargetError {
    /// The target is an absolute URL or an authority, not a path.
    #[error("send a path (origin-form request target), not an absolute URL or authority")]
    NotOriginForm,
    /// The path does not start with `/v1/`.
    #[error("the path must start with /v1/")]
    NotUnderV1,
    /// The path holds a backslash.
    #[error("the path holds a backslash; use / between segments")]
    Backslash,
    /// A `%` is not followed by two hex digits.
    #[error("the path has invalid percent-encoding (a % not followed by two hex digits)")]
    InvalidPercentEncoding,
    /// A segment encodes `/` or `\`, or holds a character that normalizes to one.
    #[error(
        "the path encodes a separator (%2F, %5C, or a look-alike such as U+FF0F); send segments unencoded"
    )]
    EncodedSeparator,
    /// A segment encodes a control byte (or holds a character that normalizes to one).
    #[error("the path encodes a control byte (%00-%1F or %7F)")]
    ControlByte,
    /// A segment decodes to `%` (double encoding), or holds a character that normalizes
    /// to one.
    #[error(
        "the path is double-encoded (%25, or a look-alike of % such as U+FF05); send it encoded once"
    )]
    DoubleEncoding,
    /// A segment decodes to bytes that are not UTF-8.
    #[error("the path decodes to bytes that are not UTF-8")]
    NotUtf8,
    /// A segment of dots that servers read differently (`...`, `..;x`, `. `), as sent or
    /// once normalized (`‥`, `︰`).
    #[error("the path has an ambiguous dot segment (dots with spaces or ;parameters)")]
    AmbiguousDotSegment,
    /// `..` would leave the upstream base path.
    #[error("the path climbs out of the upstream base path with ..")]
    Escapes,
}

/// A validated upstream base URL (`http(s)://host[:port][/base/path]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UpstreamBase {
    url: Url,
    /// The base path without a trailing `/` (empty for the root).
    path: String,
}

impl UpstreamBase {
    /// Parses and checks `upstream` (a trailing `/` is ignored).
    pub(crate) fn parse(upstream: &str) -> Result<Self, UpstreamUrlError> {
        let url = Url::parse(upstream).map_err(UpstreamUrlError::Unparsable)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UpstreamUrlError::Scheme);
        }
        if url.host_str().is_none_or(str::is_empty) || url.cannot_be_a_base() {
            return Err(UpstreamUrlError::NoHost);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UpstreamUrlError::Credentials);
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(UpstreamUrlError::QueryOrFragment);
        }
        let path = url.path().trim_end_matches('/').to_owned();
        Ok(Self { url, path })
    }

    /// The upstream URL for a client's request target, or why it is refused.
    ///
    /// `uri` is the request target as received (see the module docs for the rules).
    pub(crate) fn resolve(&self, uri: &http::Uri) -> Result<Url, TargetError> {
        if uri.scheme().is_some() || uri.authority().is_some() {
            return Err(TargetError::NotOriginForm);
        }
        self.resolve_parts(uri.path(), uri.query())
    }

    /// [`resolve`](Self::resolve) on an origin-form path and query.
    pub(crate) fn resolve_parts(
        &self,
        path: &str,
        query: Option<&str>,
    ) -> Result<Url, TargetError> {
        let rest = path.strip_prefix("/v1/").ok_or(TargetError::NotUnderV1)?;
        if rest.contains('\\') {
            return Err(TargetError::Backslash);
        }
        let mut segments: Vec<String> = Vec::new();
        for raw in rest.split('/').filter(|s| !s.is_empty()) {
            match classify(raw)? {
                Segment::Current => {}
                Segment::Parent => {
                    segments.pop().ok_or(TargetError::Escapes)?;
                }
                Segment::Name(name) => segments.push(name),
            }
        }
        let mut url = self.url.clone();
        {
            // ok: the base was checked to be a base URL (not `cannot_be_a_base`) in `parse`.
            let Ok(mut path) = url.path_segments_mut() else {
                return Err(TargetError::Escapes);
            };
            path.pop_if_empty();
            path.extend(&segments);
            if rest.ends_with('/') && !segments.is_empty() {
                path.push("");
            }
        }
        url.set_query(query);
        self.check_confined(&url)?;
        Ok(url)
    }

    /// The last line of defence: whatever the code above did, the URL sent has the
    /// upstream's origin, no credentials, no fragment, and a path under the base path
    /// without dot segments.
    fn check_confined(&self, url: &Url) -> Result<(), TargetError> {
        let same_origin = url.scheme() == self.url.scheme()
            && url.host() == self.url.host()
            && url.port_or_known_default() == self.url.port_or_known_default()
            && url.username().is_empty()
            && url.password().is_none()
            && url.fragment().is_none();
        let p = url.path();
        let under_base = p == self.path
            || p.strip_prefix(self.path.as_str())
                .is_some_and(|tail| tail.starts_with('/'));
        // Every segment sent must pass the same rules and be no dot segment.
        let dotted = p
            .split('/')
            .skip(1)
            .any(|s| !matches!(classify(s), Ok(Segment::Name(_))));
        if same_origin && under_base && !dotted {
            Ok(())
        } else {
            Err(TargetError::Escapes)
        }
    }
}

/// What one segment of the client's path is, once decoded and checked.
#[derive(Debug, PartialEq, Eq)]
enum Segment {
    /// `.` (plain or encoded): dropped.
    Current,
    /// `..` (plain or encoded): removes the previous segment.
    Parent,
    /// A name to forward, decoded.
    Name(String),
}

/// Decodes one path segment (between two `/`) and applies the segment rules of the module
/// docs, to the segment as sent and to its NFKC form.
fn classify(raw: &str) -> Result<Segment, TargetError> {
    let decoded = decode_segment(raw)?;
    match decoded.as_str() {
        "." => return Ok(Segment::Current),
        ".." => return Ok(Segment::Parent),
        _ => {}
    }
    // Both forms: the plain rules must hold whether or not the upstream normalizes.
    for form in [Cow::Borrowed(decoded.as_str()), nfkc(&decoded)] {
        check_decoded(&form)?;
    }
    Ok(Segment::Name(decoded))
}

/// The rules on a decoded segment (or its normalized form) that decoding alone does not
/// enforce: no separator, no `%`, no control byte, not dot-like.
fn check_decoded(segment: &str) -> Result<(), TargetError> {
    if segment.contains(['/', '\\']) || segment.contains(SEPARATOR_CONFUSABLES) {
        return Err(TargetError::EncodedSeparator);
    }
    if segment.contains('%') {
        return Err(TargetError::DoubleEncoding);
    }
    if segment.chars().any(|c| c.is_ascii_control()) {
        return Err(TargetError::ControlByte);
    }
    if is_dot_like(segment) {
        return Err(TargetError::AmbiguousDotSegment);
    }
    Ok(())
}

/// Separator look-alikes that NFKC leaves alone but other foldings turn into `/` or `\`
/// (Windows "best fit" code-page conversion, confusable skeletons): refused like the
/// separators themselves, as sent and in the NFKC form (`½` is `1⁄2` there).
const SEPARATOR_CONFUSABLES: [char; 5] = [
    '\u{2044}', // FRACTION SLASH
    '\u{2215}', // DIVISION SLASH
    '\u{29F5}', // REVERSE SOLIDUS OPERATOR
    '\u{29F8}', // BIG SOLIDUS
    '\u{29F9}', // BIG REVERSE SOLIDUS
];

/// The Unicode compatibility normalization (NFKC) of `text`, borrowed when it is already
/// normalized (all ASCII is).
fn nfkc(text: &str) -> Cow<'_, str> {
    ComposingNormalizerBorrowed::new_nfkc().normalize(text)
}

/// Percent-decodes one path segment strictly and refuses what an upstream could read as
/// structure: separators, control bytes, a second layer of encoding, non-UTF-8.
fn decode_segment(raw: &str) -> Result<String, TargetError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = |j: usize| bytes.get(j).and_then(|c| (*c as char).to_digit(16));
            let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
                return Err(TargetError::InvalidPercentEncoding);
            };
            // ok: two hex digits are at most 0xff.
            let decoded = (hi * 16 + lo) as u8;
            match decoded {
                b'/' | b'\\' => return Err(TargetError::EncodedSeparator),
                b'%' => return Err(TargetError::DoubleEncoding),
                _ => {}
            }
            out.push(decoded);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    if out.iter().any(|b| b.is_ascii_control()) {
        return Err(TargetError::ControlByte);
    }
    String::from_utf8(out).map_err(|_| TargetError::NotUtf8)
}

/// A segment that is neither `.` nor `..` but that some server could still take for one:
/// only dots and whitespace (`...`, `. `, ` ..`), or dots followed by `;parameters`.
fn is_dot_like(segment: &str) -> bool {
    let name = segment.split(';').next().unwrap_or(segment);
    let core = name.trim_matches(|c: char| c.is_whitespace());
    !core.is_empty() && core.chars().all(|c| c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn base(s: &str) -> UpstreamBase {
        UpstreamBase::parse(s).unwrap()
    }

    fn resolve(b: &UpstreamBase, target: &str) -> Result<String, TargetError> {
        let uri: http::Uri = target.parse().unwrap();
        b.resolve(&uri).map(|u| u.to_string())
    }

    #[test]
    fn ordinary_paths_map_under_the_base_path_with_their_query() {
        let b = base("https://chatgpt.com/backend-api/codex");
        for (target, want) in [
            (
                "/v1/responses",
                "https://chatgpt.com/backend-api/codex/responses",
            ),
            (
                "/v1/models?client_version=0.169.0",
                "https://chatgpt.com/backend-api/codex/models?client_version=0.169.0",
            ),
            ("/v1/", "https://chatgpt.com/backend-api/codex"),
            ("/v1/a/", "https://chatgpt.com/backend-api/codex/a/"),
            ("/v1/a//b", "https://chatgpt.com/backend-api/codex/a/b"),
            ("/v1/a/./b", "https://chatgpt.com/backend-api/codex/a/b"),
            ("/v1/a/../b", "https://chatgpt.com/backend-api/codex/b"),
            ("/v1/a/%2E%2e/b", "https://chatgpt.com/backend-api/codex/b"),
            ("/v1/a/.%2E/b", "https://chatgpt.com/backend-api/codex/b"),
            ("/v1/a/%2e./b", "https://chatgpt.com/backend-api/codex/b"),
            ("/v1/a/..", "https://chatgpt.com/backend-api/codex"),
            (
                "/v1/user@evil.example/x",
                "https://chatgpt.com/backend-api/codex/user@evil.example/x",
            ),
            (
                "/v1/a%23b%3Fc",
                "https://chatgpt.com/backend-api/codex/a%23b%3Fc",
            ),
            (
                "/v1/files/%E2%9C%93",
                "https://chatgpt.com/backend-api/codex/files/%E2%9C%93",
            ),
            (
                "/v1//evil.example/x",
                "https://chatgpt.com/backend-api/codex/evil.example/x",
            ),
            (
                "/v1/x?next=//evil.example/&u=http://evil.example",
                "https://chatgpt.com/backend-api/codex/x?next=//evil.example/&u=http://evil.example",
            ),
            (
                "/v1/x?a=%2e%2e/%2e%2e",
                "https://chatgpt.com/backend-api/codex/x?a=%2e%2e/%2e%2e",
            ),
        ] {
            assert_eq!(resolve(&b, target).as_deref(), Ok(want), "{target}");
        }
        let root = base("http://127.0.0.1:8080/");
        assert_eq!(
            resolve(&root, "/v1/responses").as_deref(),
            Ok("http://127.0.0.1:8080/responses")
        );
        assert_eq!(
            resolve(&root, "/v1//x").as_deref(),
            Ok("http://127.0.0.1:8080/x")
        );
        assert_eq!(
            resolve(&root, "/v1/").as_deref(),
            Ok("http://127.0.0.1:8080/")
        );
    }

    #[test]
    fn every_way_out_of_the_base_path_is_refused() {
        let b = base("https://chatgpt.com/backend-api/codex");
        use TargetError::*;
        for (target, want) in [
            ("/v1/../x", Escapes),
            ("/v1/../../x", Escapes),
            ("/v1/a/../../x", Escapes),
            ("/v1/%2e%2e/%2e%2e/x", Escapes),
            ("/v1/%2E%2E/x", Escapes),
            ("/v1/.%2e/x", Escapes),
            ("/v1/%2e./x", Escapes),
            ("/v1/./../x", Escapes),
            ("/v1/..", Escapes),
            ("/v1/..%2fx", EncodedSeparator),
            ("/v1/%2e%2e%2fx", EncodedSeparator),
            ("/v1/%2E%2E%2F%2E%2E%2Fx", EncodedSeparator),
            ("/v1/..%5cx", EncodedSeparator),
            ("/v1/..%5Cx", EncodedSeparator),
            ("/v1/a%2fb", EncodedSeparator),
            ("/v1/%252e%252e/x", DoubleEncoding),
            ("/v1/%25", DoubleEncoding),
            ("/v1/%2", InvalidPercentEncoding),
            ("/v1/%zz", InvalidPercentEncoding),
            ("/v1/%", InvalidPercentEncoding),
            ("/v1/%g0", InvalidPercentEncoding),
            ("/v1/a%00b", ControlByte),
            ("/v1/a%0d%0aHost:%20evil", ControlByte),
            ("/v1/a%1b[31m", ControlByte),
            ("/v1/a%7f", ControlByte),
            ("/v1/%ff", NotUtf8),
            ("/v1/...", AmbiguousDotSegment),
            ("/v1/..;x/y", AmbiguousDotSegment),
            ("/v1/.;/y", AmbiguousDotSegment),
            ("/v1/..%20/y", AmbiguousDotSegment),
            ("/v1/%20../y", AmbiguousDotSegment),
            ("/v1/%09../y", ControlByte),
            ("/v1/%EF%BC%8E%EF%BC%8E/x", AmbiguousDotSegment), // fullwidth ．．
            ("/v1/%E2%80%A5/x", AmbiguousDotSegment),          // ‥
            ("/v1/.%EF%BC%8E/x", AmbiguousDotSegment),
            ("/v1/%E2%80%A6/x", AmbiguousDotSegment), // …
            ("/v1/..%EF%BC%8Fx", EncodedSeparator),   // ..／x
            ("/v1/..%EF%BC%BCx", EncodedSeparator),   // ..＼x
            ("/v1/a%E2%88%95b", EncodedSeparator),    // ∕
            ("/v1/a%E2%81%84b", EncodedSeparator),    // ⁄
            ("/v1/%EF%B8%B0/x", AmbiguousDotSegment), // ︰ (NFKC: ..)
            ("/v1/%EF%B8%99/x", AmbiguousDotSegment), // ︙ (NFKC: ...)
            ("/v1/..%CD%BEx/y", AmbiguousDotSegment), // ..; with GREEK QUESTION MARK (NFKC: ;)
            ("/v1/%E2%84%80", EncodedSeparator),      // ℀ (NFKC: a/c)
            ("/v1/%E2%84%81", EncodedSeparator),      // ℁ (a/s)
            ("/v1/x%E2%84%85y", EncodedSeparator),    // ℅ (c/o)
            ("/v1/%E2%84%86", EncodedSeparator),      // ℆ (c/u)
            ("/v1/%EF%BC%852e%EF%BC%852e", DoubleEncoding), // ％2e％2e (NFKC: %2e%2e)
            ("/v1/a%EF%B9%AAb", DoubleEncoding),      // ﹪
            ("/responses", NotUnderV1),
            ("/v1", NotUnderV1),
            ("/v2/x", NotUnderV1),
            ("http://evil.example/v1/x", NotOriginForm),
            ("https://chatgpt.com/v1/x", NotOriginForm),
            ("evil.example:443", NotOriginForm),
        ] {
            assert_eq!(resolve(&b, target), Err(want), "{target}");
        }
        // A backslash cannot come through `http::Uri` parsing unencoded on every version;
        // check the rule on the decoded form too.
        assert_eq!(
            b.resolve_parts("/v1/..\\..\\x", None),
            Err(TargetError::Backslash)
        );
        assert_eq!(
            b.resolve_parts("/v1/a\\b", None),
            Err(TargetError::Backslash)
        );
        // Raw (unencoded) look-alikes, should a parser let them through.
        assert_eq!(
            b.resolve_parts("/v1/\u{FF0E}\u{FF0E}/x", None),
            Err(TargetError::AmbiguousDotSegment)
        );
        assert_eq!(
            b.resolve_parts("/v1/..\u{FF0F}x", None),
            Err(TargetError::EncodedSeparator)
        );
    }

    /// Every `char` (not only known look-alikes): a segment holding it is refused exactly
    /// when its NFKC form breaks a plain rule — no character that normalizes to a
    /// separator, `%`, or dots is ever forwarded, and every other one is.
    #[test]
    fn every_character_that_normalizes_onto_structure_is_refused_and_no_other() {
        let encode = |text: &str| -> String { text.bytes().map(|b| format!("%{b:02X}")).collect() };
        let separator = |t: &str| t.contains(['/', '\\']) || t.contains(SEPARATOR_CONFUSABLES);
        let dots_only = |t: &str| {
            let core = t.trim_matches(char::is_whitespace);
            !core.is_empty() && core.chars().all(|c| c == '.')
        };
        let (mut refused, mut checked) = (0u32, 0u32);
        for c in (0..=u32::from(char::MAX)).filter_map(char::from_u32) {
            if c.is_ascii_control() || c == '.' {
                continue; // refused as control bytes / the plain dot segment: tested above
            }
            let alone = c.to_string();
            let form = nfkc(&alone);
            checked += 1;
            // Inside a name: refused iff the normalized form holds structure.
            let inside = format!("a{c}b");
            let breaks = {
                let n = nfkc(&inside);
                separator(&n) || n.contains('%') || n.chars().any(|c| c.is_ascii_control())
            };
            match classify(&encode(&inside)) {
                Ok(Segment::Name(name)) => {
                    assert!(!breaks, "U+{:04X} accepted inside a name", u32::from(c));
                    assert_eq!(name, inside);
                }
                Ok(other) => panic!("U+{:04X} inside a name gave {other:?}", u32::from(c)),
                Err(_) => {
                    assert!(breaks, "U+{:04X} refused inside a name", u32::from(c));
                    refused += 1;
                }
            }
            // Alone, doubled, after a dot, before `;`: refused when it normalizes to dots.
            if dots_only(&form) {
                for segment in [
                    alone.clone(),
                    format!("{c}{c}"),
                    format!(".{c}"),
                    format!("{c};x"),
                ] {
                    assert!(
                        classify(&encode(&segment)).is_err(),
                        "U+{:04X} accepted in {segment:?}",
                        u32::from(c)
                    );
                }
            }
            // A character that normalizes to `;` makes `..` before it ambiguous.
            if form == ";" {
                assert_eq!(
                    classify(&encode(&format!("..{c}x"))),
                    Err(TargetError::AmbiguousDotSegment),
                    "U+{:04X}",
                    u32::from(c)
                );
            }
        }
        // The walk saw the whole range and found the known members of the class.
        assert!(checked > 1_100_000, "{checked}");
        // `/ \ %`, 5 confusables, 9 NFKC look-alikes (`／ ＼ ﹨ ％ ﹪ ℀ ℁ ℅ ℆`) at least,
        // plus the characters whose NFKC holds a confusable (`½`, `⅓`, …).
        assert!(refused >= 17, "{refused}");
        for c in [
            '\u{FE30}', '\u{FE19}', '\u{2024}', '\u{2025}', '\u{2026}', '\u{FF0E}',
        ] {
            assert_eq!(
                classify(&encode(&c.to_string())),
                Err(TargetError::AmbiguousDotSegment),
                "U+{:04X}",
                u32::from(c)
            );
        }
        for c in [
            '\u{2100}', '\u{2101}', '\u{2105}', '\u{2106}', '\u{FF0F}', '\u{FF3C}',
        ] {
            assert_eq!(
                classify(&encode(&c.to_string())),
                Err(TargetError::EncodedSeparator),
                "U+{:04X}",
                u32::from(c)
            );
        }
    }

    #[test]
    fn upstream_base_urls_are_checked() {
        assert_eq!(
            UpstreamBase::parse("ftp://x/"),
            Err(UpstreamUrlError::Scheme)
        );
        assert_eq!(
            UpstreamBase::parse("https://user:pw@x/"),
            Err(UpstreamUrlError::Credentials)
        );
        assert_eq!(
            UpstreamBase::parse("https://x/a?b=c"),
            Err(UpstreamUrlError::QueryOrFragment)
        );
        assert_eq!(
            UpstreamBase::parse("https://x/a#f"),
            Err(UpstreamUrlError::QueryOrFragment)
        );
        assert!(matches!(
            UpstreamBase::parse("not a url"),
            Err(UpstreamUrlError::Unparsable(_))
        ));
        assert!(matches!(
            UpstreamBase::parse("mailto:a@b"),
            Err(UpstreamUrlError::Scheme)
        ));
        let b = base("https://x/a/b/");
        assert_eq!(b.path, "/a/b");
        // The base's own dot segments are resolved by the parser, before any client input.
        assert_eq!(base("https://x/a/../b").path, "/b");
    }

    #[test]
    fn error_messages_never_echo_the_path() {
        let b = base("https://chatgpt.com/backend-api/codex");
        let e = b
            .resolve_parts("/v1/%2e%2e/secret-looking-path", None)
            .unwrap_err();
        assert!(!e.to_string().contains("secret-looking-path"));
        insta::assert_snapshot!(e.to_string(), @"the path climbs out of the upstream base path with ..");
    }

    /// Characters a path may hold, weighted towards the ones that matter here.
    fn path_piece() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("/".to_owned()),
            Just("..".to_owned()),
            Just(".".to_owned()),
            Just("%2e".to_owned()),
            Just("%2E".to_owned()),
            Just("%2f".to_owned()),
            Just("%5c".to_owned()),
            Just("%25".to_owned()),
            Just("%00".to_owned()),
            Just("\\".to_owned()),
            Just(";".to_owned()),
            Just("@".to_owned()),
            Just("%EF%BC%8E".to_owned()),
            Just("%EF%BC%8F".to_owned()),
            Just("\u{FF0E}".to_owned()),
            Just("\u{2025}".to_owned()),
            Just("\u{FE30}".to_owned()),
            Just("\u{2100}".to_owned()),
            Just("\u{037E}".to_owned()),
            Just("%EF%B8%B0".to_owned()),
            Just("%E2%84%85".to_owned()),
            Just("%EF%BC%85".to_owned()),
            Just("%40".to_owned()),
            Just(":".to_owned()),
            Just("?".to_owned()),
            Just("#".to_owned()),
            Just("%".to_owned()),
            "[a-z]{1,3}",
            "%[0-9a-fA-F]{2}",
            any::<char>().prop_map(String::from),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// For any path and query, the result is an error or a URL with the upstream's
        /// scheme, host and port, no credentials or fragment, under the base path, and
        /// without dot segments.
        #[test]
        fn any_target_is_refused_or_confined(
            pieces in proptest::collection::vec(path_piece(), 0..24),
            query in proptest::option::of(proptest::collection::vec(path_piece(), 0..6)),
            base_path in prop_oneof![Just(""), Just("/"), Just("/backend-api/codex"), Just("/a/")],
        ) {
            let b = base(&format!("https://chatgpt.com:8443{base_path}"));
            let path = format!("/v1/{}", pieces.concat());
            let query = query.map(|q| q.concat());
            if let Ok(url) = b.resolve_parts(&path, query.as_deref()) {
                prop_assert_eq!(url.scheme(), "https");
                prop_assert_eq!(url.host_str(), Some("chatgpt.com"));
                prop_assert_eq!(url.port(), Some(8443));
                prop_assert!(url.username().is_empty() && url.password().is_none());
                prop_assert!(url.fragment().is_none());
                let base_path = base_path.trim_end_matches('/');
                let p = url.path();
                prop_assert!(
                    p == base_path || p.starts_with(&format!("{base_path}/")),
                    "{} left {}", p, base_path
                );
                // Parsing what is sent gives the same URL (nothing is re-resolved later).
                let reparsed = Url::parse(url.as_str()).unwrap();
                prop_assert_eq!(reparsed.path(), p);
                prop_assert_eq!(reparsed.host_str(), Some("chatgpt.com"));
            }
            // The same input through `http::Uri`, as the server sees it, when it parses.
            let target = match &query {
                Some(q) => format!("{path}?{q}"),
                None => path.clone(),
            };
            if let Ok(uri) = target.parse::<http::Uri>()
                && let Ok(url) = b.resolve(&uri)
            {
                prop_assert_eq!(url.host_str(), Some("chatgpt.com"));
                prop_assert_eq!(url.port(), Some(8443));
            }
        }

        /// Any decoded segment sequence that stays under the base is forwarded with exactly
        /// those segments (no over-refusal of ordinary names).
        #[test]
        fn ordinary_segments_round_trip(segments in proptest::collection::vec("[A-Za-z0-9_~-][A-Za-z0-9._~@:-]{0,8}", 1..6)) {
            let b = base("https://chatgpt.com/backend-api/codex");
            let path = format!("/v1/{}", segments.join("/"));
            let url = b.resolve_parts(&path, None).unwrap();
            let got: Vec<&str> = url.path_segments().unwrap().skip(2).collect();
            prop_assert_eq!(got, segments.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }
}
