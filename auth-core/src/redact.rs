//! Redaction helpers used across the workspace: emails, URLs, and free text (such as a
//! transport error message) that may embed URLs, emails or tokens.
//!
//! ```
//! use auth_core::redact::{mask_email, redact_text, redact_url};
//!
//! assert_eq!(mask_email("alice@example.com"), "a***@example.com");
//! assert_eq!(
//!     redact_url("https://user:pw@auth.example.com/cb?code=abc&state=xyz#frag"),
//!     "https://REDACTED@auth.example.com/cb?code=REDACTED&state=REDACTED#REDACTED"
//! );
//! assert_eq!(
//!     redact_text("error sending request for url (https://h.example/t?refresh_token=rt)"),
//!     "error sending request for url (https://h.example/t?refresh_token=REDACTED)"
//! );
//! ```

use url::Url;

/// What replaces a secret value.
pub const REDACTED: &str = "REDACTED";

/// Masks an email address for display: first character of the local part, then `***`,
/// then the domain (`alice@example.com` → `a***@example.com`).
///
/// A string without `@` becomes `***` (it might be anything). The email comes from a
/// token or a file, so the kept parts are passed through
/// [`escape_control`](crate::terminal::escape_control): the result is safe to print.
///
/// ```
/// use auth_core::redact::mask_email;
/// assert_eq!(mask_email("bob.smith@example.org"), "b***@example.org");
/// assert_eq!(mask_email("not-an-email"), "***");
/// assert_eq!(mask_email("\x1bx@evil\r\n.example"), "\\x1b***@evil\\x0d\\x0a.example");
/// ```
pub fn mask_email(email: &str) -> String {
    use crate::terminal::escape_control;
    match email.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{}***@{}", escape_control(&first), escape_control(domain))
        }
        None => "***".to_owned(),
    }
}

/// Redacts a URL: userinfo becomes `REDACTED`, every query value becomes `REDACTED`
/// (keys are kept, they help debugging), and a fragment becomes `REDACTED`.
/// Scheme, host, port and path are kept.
///
/// Text that does not parse as a URL is replaced entirely by `[unparseable URL]`.
///
/// ```
/// use auth_core::redact::redact_url;
/// assert_eq!(
///     redact_url("http://localhost:1455/auth/callback?code=abc&state=xyz"),
///     "http://localhost:1455/auth/callback?code=REDACTED&state=REDACTED"
/// );
/// assert_eq!(redact_url("::"), "[unparseable URL]");
/// ```
pub fn redact_url(raw: &str) -> String {
    let Ok(mut url) = Url::parse(raw) else {
        return "[unparseable URL]".to_owned();
    };
    if !url.username().is_empty() || url.password().is_some() {
        // Errors here only mean the URL cannot have userinfo; then there is none.
        let _ = url.set_password(None);
        let _ = url.set_username(REDACTED);
    }
    if url.query().is_some() {
        let keys: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
        if keys.is_empty() {
            url.set_query(Some(REDACTED));
        } else {
            let mut pairs = url.query_pairs_mut();
            pairs.clear();
            for key in &keys {
                pairs.append_pair(key, REDACTED);
            }
        }
    }
    if url.fragment().is_some() {
        url.set_fragment(Some(REDACTED));
    }
    url.to_string()
}

fn is_scheme_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')
}

fn url_end(text: &str) -> usize {
    text.find(|c: char| {
        c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`' | ')' | ']' | '}' | ',')
    })
    .unwrap_or(text.len())
}

/// Redacts free text such as an error message: every embedded URL is passed through
/// [`redact_url`], every email-like word through [`mask_email`], and every JWT-like
/// word (`eyJ….….…`) becomes `REDACTED`.
///
/// ```
/// use auth_core::redact::redact_text;
/// assert_eq!(
///     redact_text("login for alice@example.com failed: https://h.example/cb?code=123"),
///     "login for a***@example.com failed: https://h.example/cb?code=REDACTED"
/// );
/// ```
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(idx) = rest.find("://") {
        // Walk back over the scheme.
        let before = &rest[..idx];
        let scheme_start = before
            .char_indices()
            .rev()
            .take_while(|(_, c)| is_scheme_char(*c))
            .last()
            .map(|(i, _)| i)
            .unwrap_or(idx);
        let after = &rest[idx..];
        let end = idx + url_end(after);
        if scheme_start == idx {
            // "://" without a scheme: not a URL; copy and continue past it.
            out.push_str(&redact_words(&rest[..idx + 3]));
            rest = &rest[idx + 3..];
            continue;
        }
        out.push_str(&redact_words(&rest[..scheme_start]));
        let candidate = &rest[scheme_start..end];
        // Trailing sentence punctuation is not part of the URL.
        let trimmed = candidate.trim_end_matches(['.', ';', ':', '!', '?']);
        out.push_str(&redact_url(trimmed));
        out.push_str(&candidate[trimmed.len()..]);
        rest = &rest[end..];
    }
    out.push_str(&redact_words(rest));
    out
}

fn looks_like_jwt(word: &str) -> bool {
    word.starts_with("eyJ")
        && word.split('.').count() == 3
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '='))
}

fn looks_like_email(word: &str) -> bool {
    match word.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.contains('@')
                && local
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._%+-".contains(c))
        }
        None => false,
    }
}

/// Masks emails and JWTs in text that contains no URL.
fn redact_words(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word_start: Option<usize> = None;
    let is_word_char =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-' | '@' | '=');
    let flush = |out: &mut String, word: &str| {
        let core = word.trim_end_matches('.');
        let tail = &word[core.len()..];
        if looks_like_jwt(core) {
            out.push_str(REDACTED);
            out.push_str(tail);
        } else if looks_like_email(core) {
            out.push_str(&mask_email(core));
            out.push_str(tail);
        } else {
            out.push_str(word);
        }
    };
    for (i, c) in text.char_indices() {
        if is_word_char(c) {
            if word_start.is_none() {
                word_start = Some(i);
            }
        } else {
            if let Some(start) = word_start.take() {
                flush(&mut out, &text[start..i]);
            }
            out.push(c);
        }
    }
    if let Some(start) = word_start {
        flush(&mut out, &text[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn emails() {
        assert_eq!(mask_email("a@b.c"), "a***@b.c");
        assert_eq!(mask_email("@b.c"), "***@b.c");
        assert_eq!(mask_email("nobody"), "***");
        assert_eq!(mask_email("élodie@x.fr"), "é***@x.fr");
    }

    #[test]
    fn urls() {
        assert_eq!(
            redact_url("http://localhost:1455/auth/callback?code=c&state=s"),
            "http://localhost:1455/auth/callback?code=REDACTED&state=REDACTED"
        );
        assert_eq!(
            redact_url("https://auth.openai.com/oauth/token"),
            "https://auth.openai.com/oauth/token"
        );
        assert_eq!(redact_url("not a url"), "[unparseable URL]");
        assert_eq!(
            redact_url("https://h.example/?onlysecret"),
            "https://h.example/?onlysecret=REDACTED"
        );
    }

    #[test]
    fn text() {
        let jwt = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1MSJ9.c2ln";
        let msg = format!(
            "user bob@example.com failed: error sending request for url (https://u:p@x.example/cb?code=SECRET). token {jwt}."
        );
        let red = redact_text(&msg);
        assert_eq!(
            red,
            "user b***@example.com failed: error sending request for url (https://REDACTED@x.example/cb?code=REDACTED). token REDACTED."
        );
        assert_eq!(
            redact_text("plain text, nothing here"),
            "plain text, nothing here"
        );
        assert_eq!(redact_text("weird :// thing"), "weird :// thing");
        assert_eq!(
            redact_text("see https://x.example/a?b=c."),
            "see https://x.example/a?b=REDACTED."
        );
    }
}
