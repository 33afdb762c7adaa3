//! Escaping untrusted text before it reaches a terminal or a log line (pure).
//!
//! Email addresses, plan names and account ids come from id tokens; `error_description`
//! comes from the issuer; file names and process command lines come from whoever
//! created them. Printed raw, a carriage return or line feed forges extra lines in the
//! output, an ESC starts a terminal control sequence (recolouring, moving the cursor,
//! setting the window title), and a bidi override reorders what the reader sees.
//! [`escape_control`] wraps such text so that its `Display` output contains none of
//! those characters.
//!
//! # The escaped set and the form
//!
//! | characters | written as |
//! |---|---|
//! | C0 controls U+0000–U+001F (incl. TAB, LF, CR, ESC) and DEL U+007F | `\x1b`, `\x0a`, … (two lower-case hex digits) |
//! | C1 controls U+0080–U+009F | `\u{9b}`, … |
//! | bidi controls U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069 | `\u{202e}`, … |
//! | line and paragraph separators U+2028, U+2029 | `\u{2028}`, `\u{2029}` |
//!
//! Every other character, including a backslash and all printable non-ASCII text, is
//! written unchanged, so ordinary text (`a***@example.com`, `Zoë`, `東京`, a Windows
//! path) reads exactly as before. The escaping is for display only: it is not
//! reversible (a literal `\x1b` in the input reads the same as an escaped ESC). For
//! machine-readable output use JSON, whose serializer escapes control characters itself.
//!
//! ```
//! use auth_core::terminal::escape_control;
//!
//! let hostile = "denied\r\nauth-status: all good\x1b[2J\u{202e}";
//! let shown = escape_control(hostile).to_string();
//! assert_eq!(shown, "denied\\x0d\\x0aauth-status: all good\\x1b[2J\\u{202e}");
//! assert!(!shown.chars().any(auth_core::terminal::is_unsafe_char));
//! assert_eq!(escape_control("Zoë <a***@example.com>").to_string(), "Zoë <a***@example.com>");
//! ```

use std::fmt;

/// Whether `c` is escaped by [`escape_control`]: a C0 or C1 control character, DEL, a
/// bidi control, or a Unicode line/paragraph separator.
///
/// ```
/// use auth_core::terminal::is_unsafe_char;
/// assert!(is_unsafe_char('\x1b') && is_unsafe_char('\u{202e}') && is_unsafe_char('\u{85}'));
/// assert!(!is_unsafe_char('a') && !is_unsafe_char('é') && !is_unsafe_char('\\'));
/// ```
pub fn is_unsafe_char(c: char) -> bool {
    matches!(
        c,
        '\u{0}'..='\u{1f}'
            | '\u{7f}'..='\u{9f}'
            | '\u{61c}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
    )
}

/// Text whose `Display` escapes every [`is_unsafe_char`] character (see the
/// [module docs](self) for the form). Build it with [`escape_control`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EscapedText<'a> {
    text: &'a str,
}

/// Wraps `text` so that displaying it escapes control, bidi and line-separator
/// characters (`\x1b`, `\u{202e}`); everything else is shown unchanged.
///
/// Use it wherever text that came from a token, an issuer, a file or another process is
/// printed or logged: `println!("email: {}", escape_control(&masked))`.
///
/// ```
/// use auth_core::terminal::escape_control;
/// assert_eq!(format!("[{}]", escape_control("a\tb")), "[a\\x09b]");
/// assert_eq!(escape_control("plain").to_string(), "plain");
/// ```
pub fn escape_control(text: &str) -> EscapedText<'_> {
    EscapedText { text }
}

/// Makes JSON text (as `serde_json` writes it) safe to print on a terminal without changing
/// what it means: every unsafe character that `serde_json` leaves raw inside strings — DEL,
/// C1 controls, bidi controls, U+2028/U+2029 — becomes a JSON `\uXXXX` escape. A JSON
/// reader gets exactly the same values back; C0 controls inside strings are already escaped
/// by `serde_json`, and the raw newlines and spaces of pretty-printed JSON are kept.
///
/// ```
/// use auth_core::terminal::{is_unsafe_char, json_for_terminal};
///
/// let value = serde_json::json!({ "plan": "pro\u{9b}2J\u{202e}\x7f" });
/// let text = json_for_terminal(&serde_json::to_string_pretty(&value).unwrap());
/// assert!(!text.chars().any(|c| is_unsafe_char(c) && c != '\n'));
/// let back: serde_json::Value = serde_json::from_str(&text).unwrap();
/// assert_eq!(back, value);
/// ```
pub fn json_for_terminal(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if is_unsafe_char(c) && u32::from(c) >= 0x7f {
            // Every unsafe character at or above DEL is in the Basic Multilingual Plane, so
            // one `\uXXXX` escape spells it.
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

impl EscapedText<'_> {
    /// Whether displaying the text changes anything (it holds an unsafe character).
    ///
    /// ```
    /// use auth_core::terminal::escape_control;
    /// assert!(escape_control("a\nb").changes_anything());
    /// assert!(!escape_control("ab").changes_anything());
    /// ```
    pub fn changes_anything(&self) -> bool {
        self.text.chars().any(is_unsafe_char)
    }
}

impl fmt::Display for EscapedText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.text;
        while let Some((idx, c)) = rest.char_indices().find(|(_, c)| is_unsafe_char(*c)) {
            f.write_str(&rest[..idx])?;
            let code = u32::from(c);
            if code < 0x80 {
                write!(f, "\\x{code:02x}")?;
            } else {
                write!(f, "\\u{{{code:x}}}")?;
            }
            rest = &rest[idx + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

impl fmt::Debug for EscapedText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.text, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use proptest::prelude::*;

    #[test]
    fn every_class_is_escaped_in_its_form() {
        let cases = [
            ("\0", "\\x00"),
            ("\t", "\\x09"),
            ("\n", "\\x0a"),
            ("\r", "\\x0d"),
            ("\x1b[31m", "\\x1b[31m"),
            ("\x7f", "\\x7f"),
            ("\u{80}", "\\u{80}"),
            ("\u{9b}", "\\u{9b}"),
            ("\u{9f}", "\\u{9f}"),
            ("\u{61c}", "\\u{61c}"),
            ("\u{200e}\u{200f}", "\\u{200e}\\u{200f}"),
            ("\u{2028}\u{2029}", "\\u{2028}\\u{2029}"),
            ("\u{202a}\u{202e}", "\\u{202a}\\u{202e}"),
            ("\u{2066}\u{2069}", "\\u{2066}\\u{2069}"),
            ("a\u{202e}b\nc", "a\\u{202e}b\\x0ac"),
        ];
        for (raw, shown) in cases {
            assert_eq!(escape_control(raw).to_string(), shown, "{raw:?}");
        }
    }

    #[test]
    fn neighbours_of_the_escaped_ranges_are_kept() {
        for c in [
            ' ', '~', '\u{a0}', '\u{a1}', '\u{61b}', '\u{200d}', '\u{2027}', '\u{202f}',
            '\u{2065}', '\u{206a}', '\\', 'é', '東',
        ] {
            let s = c.to_string();
            assert_eq!(escape_control(&s).to_string(), s, "{c:?}");
        }
    }

    proptest! {
        #[test]
        fn escaped_output_never_holds_an_unsafe_char(text in any::<String>()) {
            let shown = escape_control(&text).to_string();
            prop_assert!(!shown.chars().any(is_unsafe_char), "{shown:?}");
            prop_assert_eq!(escape_control(&text).changes_anything(), shown != text);
        }

        #[test]
        fn text_without_unsafe_chars_is_unchanged(
            text in any::<String>().prop_map(|s| s.chars().filter(|c| !is_unsafe_char(*c)).collect::<String>())
        ) {
            prop_assert_eq!(escape_control(&text).to_string(), text);
        }

        #[test]
        fn json_for_terminal_keeps_the_values_and_shows_no_unsafe_char(
            texts in proptest::collection::vec(any::<String>(), 0..4),
        ) {
            let value = serde_json::json!({ "texts": texts, "n": 1 });
            for json in [
                serde_json::to_string(&value).unwrap(),
                serde_json::to_string_pretty(&value).unwrap(),
            ] {
                let safe = json_for_terminal(&json);
                prop_assert!(
                    !safe.chars().any(|c| is_unsafe_char(c) && c != '\n'),
                    "{safe:?}"
                );
                let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
                prop_assert_eq!(&back, &value);
            }
        }

        #[test]
        fn hostile_lines_stay_one_line(
            parts in proptest::collection::vec("[a-z]{0,4}", 1..6),
            seps in proptest::collection::vec(prop_oneof![Just('\n'), Just('\r'), Just('\x1b'), Just('\u{85}'), Just('\u{2028}')], 1..6),
        ) {
            let mut text = String::new();
            for (p, s) in parts.iter().zip(seps.iter().cycle()) {
                text.push_str(p);
                text.push(*s);
            }
            let shown = escape_control(&text).to_string();
            prop_assert_eq!(shown.lines().count(), 1);
        }
    }
}
