//! Snapshots of realistic Codex configs before and after apply, and exact restore.

mod common;

use config_rewrite::{RestoreOutcome, Target, apply_to_str, read_string, restore_str};
use pretty_assertions::assert_eq;

/// Makes CR and BOM visible in snapshots.
fn visible(text: &str) -> String {
    text.replace('\u{feff}', "<BOM>").replace('\r', "<CR>")
}

#[test]
fn corpus_before_and_after_apply() {
    for (name, original, target) in common::corpus() {
        let rewrite = common::proxy_rewrite(8080, target.clone());
        let applied = apply_to_str(format!("{name}.toml").as_ref(), Some(&original), &rewrite)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        insta::assert_snapshot!(
            format!("{name}"),
            format!(
                "--- before\n{}\n--- after\n{}",
                visible(&original),
                visible(applied.text())
            )
        );

        // Placement checked by parsing, not by looking at text.
        assert_eq!(
            read_string(applied.text(), &target, "model_provider")
                .unwrap()
                .as_deref(),
            Some("rotation-proxy"),
            "{name}"
        );
        if target != Target::TopLevel {
            let top = read_string(applied.text(), &Target::TopLevel, "model_provider").unwrap();
            let orig_top = read_string(&original, &Target::TopLevel, "model_provider").unwrap();
            assert_eq!(top, orig_top, "{name}: top level must be untouched");
        }

        let restored = restore_str(Some(applied.text()), applied.record()).unwrap();
        assert_eq!(restored.outcome(), &RestoreOutcome::Exact, "{name}");
        assert_eq!(restored.text(), Some(original.as_str()), "{name}");
    }
}

#[test]
fn corpus_line_endings_and_bom_survive() {
    for (name, original, target) in common::corpus() {
        let applied = apply_to_str(
            "c.toml".as_ref(),
            Some(&original),
            &common::proxy_rewrite(1, target),
        )
        .unwrap();
        let out = applied.text();
        assert_eq!(
            out.starts_with('\u{feff}'),
            original.starts_with('\u{feff}'),
            "{name}"
        );
        assert_eq!(out.ends_with('\n'), original.ends_with('\n'), "{name}");
        if original.contains("\r\n") {
            assert!(!out.replace("\r\n", "").contains('\n'), "{name}: lone LF");
        } else {
            assert!(!out.contains('\r'), "{name}: stray CR");
        }
    }
}
