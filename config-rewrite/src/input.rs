//! Pure: checks of the text a caller asks us to write into `config.toml` (provider id and
//! fields, keys, values, profile names), each refused with [`EditError::InvalidInput`] naming
//! the field.
//!
//! | text | refused when |
//! |------|--------------|
//! | every string written to `config.toml` | it holds a control (C0, DEL, C1), bidi or line-separator character |
//! | provider id, key, profile name | also: empty |
//! | `env_key`, `env_http_headers` variables | also: not an environment variable name (`[A-Za-z_][A-Za-z0-9_]*`) |
//! | `base_url`, `model_catalog_url` | also: whitespace, or not an absolute `http(s)` URL with a host |
//!
//! Why: TOML can carry any of these characters escaped, so the file stays valid, but Codex
//! and every tool that prints a provider's name, URL or variable would show them raw — an
//! ESC recolours or clears the terminal, CR/LF forge lines, U+202E reorders what the reader
//! sees. None of them has a legitimate use in these fields. The messages never repeat the
//! value (header and query values may be credentials), only where the character is.

use crate::error::{EditError, is_unsafe_char, shown};

fn invalid(field: &str, reason: String) -> EditError {
    EditError::InvalidInput {
        field: field.to_owned(),
        reason,
    }
}

/// Refuses `value` when it holds a control, bidi or line-separator character.
pub(crate) fn plain_text(field: &str, value: &str) -> Result<(), EditError> {
    match value.chars().enumerate().find(|(_, c)| is_unsafe_char(*c)) {
        None => Ok(()),
        Some((index, c)) => Err(invalid(
            field,
            format!(
                "it contains {} (a control, bidi or line-separator character) at character {}; \
                 such characters are not allowed in config.toml",
                shown(c.encode_utf8(&mut [0; 4])),
                index + 1
            ),
        )),
    }
}

/// Refuses an empty `value` and one [`plain_text`] refuses.
pub(crate) fn non_empty(field: &str, value: &str) -> Result<(), EditError> {
    if value.trim().is_empty() {
        return Err(invalid(field, "it is empty".to_owned()));
    }
    plain_text(field, value)
}

/// Codex reads the variable with `std::env::var(name)`; a name that is not a portable
/// environment variable name (POSIX: letters, digits, `_`, not starting with a digit) can
/// never be set from a shell, so Codex would only fail later with "missing variable".
pub(crate) fn env_var_name(field: &str, value: &str) -> Result<(), EditError> {
    plain_text(field, value)?;
    let mut chars = value.chars();
    let plausible = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !plausible {
        return Err(invalid(
            field,
            "it must be an environment variable name: ASCII letters, digits and `_`, not \
             starting with a digit (e.g. ROTATION_PROXY_TOKEN)"
                .to_owned(),
        ));
    }
    Ok(())
}

/// Codex sends requests to `base_url` as is: anything but an absolute `http(s)` URL with a
/// host would only fail later, inside Codex, so it is refused here with the reason. The
/// check is on the text as written: the URL parser silently drops tabs and newlines and
/// percent-encodes other characters, so a parsed URL says nothing about the raw string.
pub(crate) fn http_url(field: &str, value: &str) -> Result<(), EditError> {
    plain_text(field, value)?;
    let url = url::Url::parse(value).map_err(|e| {
        invalid(
            field,
            format!("it is not an absolute URL ({e}); expected e.g. http://127.0.0.1:8080/v1"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(
            field,
            format!(
                "its scheme is `{}`; Codex needs http or https",
                url.scheme()
            ),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(field, "it has no host".to_owned()));
    }
    if value.chars().any(char::is_whitespace) {
        return Err(invalid(
            field,
            "it contains whitespace; percent-encode spaces (%20)".to_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;

    use super::*;
    use crate::{ProviderSpec, Rewrite, Target, apply_to_str};

    /// The field an apply of `rewrite` is refused for.
    fn refused_field(rewrite: &Rewrite) -> Option<String> {
        match apply_to_str(Path::new("config.toml"), Some("model = \"o3\"\n"), rewrite) {
            Err(EditError::InvalidInput { field, .. }) => Some(field),
            _ => None,
        }
    }

    fn spec() -> ProviderSpec {
        ProviderSpec::new("proxy", "http://127.0.0.1:9/v1")
    }

    /// Every caller-supplied text that reaches config.toml, set to `s`, with the field the
    /// refusal must name.
    fn rewrites_with(s: &str) -> Vec<(&'static str, Rewrite)> {
        let up = |spec: ProviderSpec| Rewrite::route_to(spec, Target::TopLevel);
        let host = format!("http://{s}.example/v1");
        let url = format!("http://127.0.0.1:9/v1/{s}");
        let query = format!("http://127.0.0.1:9/v1?x={s}");
        vec![
            (
                "provider id",
                up(ProviderSpec::new(s, "http://127.0.0.1:9/v1")),
            ),
            ("name", up(spec().name(s))),
            ("base_url", up(spec().base_url(host))),
            ("base_url", up(spec().base_url(url.clone()))),
            ("base_url", up(spec().base_url(query))),
            ("env_key", up(spec().env_key(s))),
            ("env_key_instructions", up(spec().env_key_instructions(s))),
            ("model_catalog_url", up(spec().model_catalog_url(url))),
            ("query_params name", up(spec().query_param(s, "1"))),
            ("query_params value", up(spec().query_param("v", s))),
            ("http_headers name", up(spec().http_header(s, "1"))),
            ("http_headers value", up(spec().http_header("X-A", s))),
            (
                "env_http_headers name",
                up(spec().env_http_header(s, "VAR")),
            ),
            (
                "env_http_headers variable",
                up(spec().env_http_header("X-A", s)),
            ),
            (
                "profile name",
                Rewrite::route_to(spec(), Target::profile(s)),
            ),
            ("key", Rewrite::new().set_string(Target::TopLevel, s, "v")),
            (
                "value of `model`",
                Rewrite::new().set_string(Target::TopLevel, "model", s),
            ),
            ("key", Rewrite::new().remove_key(Target::TopLevel, s)),
            ("provider id", Rewrite::new().remove_provider(s)),
        ]
    }

    #[test]
    fn control_and_bidi_characters_are_refused_in_every_field() {
        for bad in [
            "\x1b[2J",
            "a\rb",
            "a\nb",
            "\u{202e}txt",
            "\u{2028}",
            "x\u{7f}",
            "\u{85}",
        ] {
            for (field, rewrite) in rewrites_with(bad) {
                assert_eq!(
                    refused_field(&rewrite).as_deref(),
                    Some(field),
                    "{field} = {bad:?}"
                );
            }
        }
        // The same texts without the character are fine (where the field allows them).
        for (field, rewrite) in rewrites_with("ok_1") {
            assert_eq!(refused_field(&rewrite), None, "{field}");
        }
    }

    #[test]
    fn the_message_names_the_field_and_where_not_the_value() {
        let rewrite = Rewrite::route_to(spec().name("Proxy\x1b]0;pwned\x07"), Target::TopLevel);
        let err = apply_to_str(Path::new("c"), Some(""), &rewrite).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid name: it contains \\x1b (a control, bidi or line-separator character) at \
             character 6; such characters are not allowed in config.toml"
        );
        assert!(!err.to_string().contains("pwned"));
    }

    #[test]
    fn env_key_must_be_a_variable_name() {
        for good in ["ROTATION_PROXY_TOKEN", "_X", "a1", "K"] {
            assert_eq!(env_var_name("env_key", good), Ok(()), "{good}");
        }
        for bad in ["", "1ABC", "A-B", "A B", "A=B", "TÖKEN", "$HOME", " A"] {
            assert!(env_var_name("env_key", bad).is_err(), "{bad:?}");
        }
        let err = refused_field(&Rewrite::route_to(
            spec().env_key("MY-TOKEN"),
            Target::TopLevel,
        ));
        assert_eq!(err.as_deref(), Some("env_key"));
    }

    #[test]
    fn urls_are_checked_as_written() {
        for bad in [
            "http://127.0.0.1:9/v1\t",
            "http://127.0.0.1:9/v\n1",
            " http://127.0.0.1:9/v1",
            "http://127.0.0.1:9/a b",
            "http://127.0.0.1:9/v1?q=\x1b",
            "ftp://127.0.0.1/v1",
            "127.0.0.1:9/v1",
        ] {
            assert!(http_url("base_url", bad).is_err(), "{bad:?}");
        }
        for good in [
            "http://127.0.0.1:9/v1",
            "https://proxy.example/v1?api-version=1",
            "http://[::1]:8080/v1",
        ] {
            assert_eq!(http_url("base_url", good), Ok(()), "{good}");
        }
    }

    fn unsafe_char() -> impl Strategy<Value = char> {
        prop_oneof![
            proptest::char::range('\u{0}', '\u{1f}'),
            proptest::char::range('\u{7f}', '\u{9f}'),
            proptest::char::range('\u{2028}', '\u{202e}'),
            proptest::char::range('\u{2066}', '\u{2069}'),
            Just('\u{61c}'),
            Just('\u{200e}'),
            Just('\u{200f}'),
        ]
    }

    proptest! {
        #[test]
        fn any_text_with_an_unsafe_char_is_refused_for_each_field(
            before in ".{0,8}",
            c in unsafe_char(),
            after in ".{0,8}",
        ) {
            let s = format!("{before}{c}{after}");
            for (field, rewrite) in rewrites_with(&s) {
                let refused = refused_field(&rewrite);
                prop_assert_eq!(refused.as_deref(), Some(field), "{:?}", s);
            }
        }
    }
}
