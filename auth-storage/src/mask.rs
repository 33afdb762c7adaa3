//! Email masking for anything this crate prints.

/// `alice@example.com` → `al***@example.com`; short local parts keep one character; a
/// string without `@` is masked the same way.
///
/// ```
/// assert_eq!(auth_storage::mask_email("alice@example.com"), "al***@example.com");
/// assert_eq!(auth_storage::mask_email("a@b.io"), "a***@b.io");
/// assert_eq!(auth_storage::mask_email("nonsense"), "no***");
/// ```
pub fn mask_email(email: &str) -> String {
    let (local, domain) = match email.rsplit_once('@') {
        Some((l, d)) => (l, Some(d)),
        None => (email, None),
    };
    let keep = if local.chars().count() > 4 { 2 } else { 1 };
    let shown: String = local.chars().take(keep).collect();
    match domain {
        Some(d) => format!("{shown}***@{d}"),
        None => format!("{shown}***"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn never_shows_more_than_two_chars_of_the_local_part(local in "[a-z0-9._]{0,30}", domain in "[a-z]{1,10}\\.[a-z]{2,4}") {
            let masked = mask_email(&format!("{local}@{domain}"));
            let suffix = format!("***@{domain}");
            prop_assert!(masked.ends_with(&suffix));
            let shown = masked.split("***").next().unwrap();
            prop_assert!(shown.chars().count() <= 2);
            if local.len() > 2 { prop_assert!(!masked.contains(&local)); }
        }
    }
}
