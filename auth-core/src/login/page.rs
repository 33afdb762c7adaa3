//! The HTML pages the browser sees after the redirect. Every inserted text is escaped.

/// A page: HTTP status and HTML body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Page {
    pub(crate) status: u16,
    pub(crate) html: String,
}

/// Escapes text for HTML element content and attribute values.
pub(crate) fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn render(status: u16, title: &str, message: &str, hint: &str) -> Page {
    let (title, message, hint) = (html_escape(title), html_escape(message), html_escape(hint));
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n\
         <style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;line-height:1.5}}\
         h1{{font-size:1.5rem}}p.hint{{color:#555}}</style>\n\
         </head>\n<body>\n<h1>{title}</h1>\n<p>{message}</p>\n<p class=\"hint\">{hint}</p>\n</body>\n</html>\n"
    );
    Page { status, html }
}

/// The login succeeded.
pub(crate) fn success(masked_email: Option<&str>) -> Page {
    let message = match masked_email {
        Some(email) => format!("You are signed in as {email}."),
        None => "You are signed in.".to_owned(),
    };
    render(
        200,
        "Signed in",
        &message,
        "You can close this tab and return to the terminal.",
    )
}

/// The login failed; `message` is the error's `Display` (no secrets).
pub(crate) fn failure(message: &str) -> Page {
    render(
        400,
        "Sign-in failed",
        message,
        "Close this tab and start the sign-in again from the terminal.",
    )
}

/// A callback whose `state` is not this session's.
pub(crate) fn state_mismatch() -> Page {
    render(
        400,
        "Sign-in link does not match",
        "This page was opened from a sign-in that is not the one in progress (the state parameter does not match), so it was ignored.",
        "Use the link printed by the login that is running now, or start the sign-in again.",
    )
}

/// A callback after the first one.
pub(crate) fn already_handled() -> Page {
    render(
        409,
        "Sign-in already handled",
        "This login already received its sign-in callback; this one was ignored.",
        "You can close this tab.",
    )
}

/// `/cancel`.
pub(crate) fn cancelled(was_running: bool) -> Page {
    let message = if was_running {
        "The login in progress was cancelled."
    } else {
        "The login had already finished; nothing was cancelled."
    };
    render(200, "Login cancelled", message, "You can close this tab.")
}

/// The login was cancelled or timed out while this callback was being handled.
pub(crate) fn ended_meanwhile() -> Page {
    render(
        409,
        "Login ended",
        "The login was cancelled or timed out before this sign-in completed.",
        "Start the sign-in again from the terminal.",
    )
}

/// Any other path.
pub(crate) fn not_found() -> Page {
    render(
        404,
        "Not found",
        "This is a sign-in callback server; there is nothing here.",
        "Return to the terminal.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_inserted_is_escaped() {
        let page = failure("<script>alert('x')</script> & \"q\"");
        assert!(!page.html.contains("<script>"), "{}", page.html);
        assert!(
            page.html
                .contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;")
        );
        assert_eq!(page.status, 400);
    }
}
