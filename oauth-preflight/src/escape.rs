//! Pure: makes text that came from other processes or the OS (process names, command lines,
//! executable paths, `lsof`'s stderr, OS messages) safe to print on a terminal or in a log line.
//!
//! Any program can name itself `codex\x1b[2J` or put `\r\nFreed port …` in its argv. Written
//! raw, that text could move the cursor, recolour or retitle the terminal, or forge whole lines
//! of our output. So every control character (C0, DEL, C1), the Unicode line and paragraph
//! separators, and the bidirectional overrides, embeddings, isolates and marks (which reorder
//! what is shown) are written as escapes: `\x1b`, `\r`, `\n`, `\t`, `\u{202e}`. Everything else,
//! including non-ASCII letters, is kept. Serialized values (`--json`) keep the raw text; JSON
//! escapes it on its own.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

/// True for a character that must not reach a terminal as is.
pub(crate) fn needs_escape(c: char) -> bool {
    c.is_control() // Cc: U+0000–U+001F, U+007F–U+009F
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `text` with every [`needs_escape`] character escaped; borrowed when there is none.
pub(crate) fn escape(text: &str) -> Cow<'_, str> {
    if text.chars().any(needs_escape) {
        Cow::Owned(Escaped(text).to_string())
    } else {
        Cow::Borrowed(text)
    }
}

/// Displays the text with every [`needs_escape`] character escaped (no allocation).
#[derive(Clone, Copy)]
pub(crate) struct Escaped<'a>(pub(crate) &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if !needs_escape(c) {
                f.write_char(c)?;
                continue;
            }
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if u32::from(c) <= 0xFF => write!(f, "\\x{:02x}", u32::from(c))?,
                c => write!(f, "\\u{{{:04x}}}", u32::from(c))?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_what_could_forge_lines_or_sequences() {
        for (raw, shown) in [
            ("codex", "codex"),
            ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
            ("a\r\nFreed port", "a\\r\\nFreed port"),
            ("tab\there", "tab\\there"),
            ("del\x7f", "del\\x7f"),
            ("c1\u{9b}2J", "c1\\x9b2J"),
            ("\u{202e}gpj.exe", "\\u{202e}gpj.exe"),
            ("iso\u{2066}late\u{2069}", "iso\\u{2066}late\\u{2069}"),
            ("line\u{2028}sep", "line\\u{2028}sep"),
            ("naïve 名前 🙂", "naïve 名前 🙂"),
            ("", ""),
        ] {
            assert_eq!(escape(raw), shown, "{raw:?}");
            assert_eq!(Escaped(raw).to_string(), shown);
        }
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
    }

    proptest! {
        /// Whatever the input, the output holds no character that needs escaping, and text
        /// without such characters is unchanged.
        #[test]
        fn output_is_always_safe(text in any::<String>()) {
            let shown = escape(&text);
            prop_assert!(!shown.chars().any(needs_escape), "{shown:?}");
            if !text.chars().any(needs_escape) {
                prop_assert_eq!(shown.as_ref(), text.as_str());
            }
        }

        /// Escaping is injective on the characters it touches: two different control
        /// characters never print the same.
        #[test]
        fn different_controls_print_differently(a in any::<char>().prop_filter("unsafe", |c| needs_escape(*c)), b in any::<char>().prop_filter("unsafe", |c| needs_escape(*c))) {
            prop_assume!(a != b);
            prop_assert_ne!(Escaped(&a.to_string()).to_string(), Escaped(&b.to_string()).to_string());
        }
    }
}
