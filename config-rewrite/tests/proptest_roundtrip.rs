//! Property tests over generated TOML documents: apply/restore round trips byte for byte,
//! bytes outside our edits are kept, and `model_provider` always ends up at the top level.

use config_rewrite::{
    ProviderSpec, RestoreOutcome, Rewrite, Target, apply_to_str, read_string, restore_str,
};
use proptest::prelude::*;

/// A generated document plus facts the properties need.
#[derive(Debug, Clone)]
struct Doc {
    text: String,
    /// The document mentions `model_provider`/`model_providers` itself.
    touches_ours: bool,
    /// An existing top-level `model_provider` value.
    existing_top: Option<String>,
}

fn value(le: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1".to_owned()),
        Just("\"s\"".to_owned()),
        Just("'lit # not a comment'".to_owned()),
        Just("[1, 2 ,3]".to_owned()),
        Just("{ a = 1, \"b c\" = \"d\" }".to_owned()),
        Just("true".to_owned()),
        Just("1979-05-27T07:32:00Z".to_owned()),
        Just(format!("\"\"\"ml{le}x\"\"\"")),
        Just(format!("[{le}  1,{le}  2,{le}]")),
    ]
}

fn kv_line(key: String, le: &'static str) -> impl Strategy<Value = String> {
    (
        value(le),
        prop::option::of(Just(" # trailing")),
        prop::bool::ANY,
    )
        .prop_map(move |(v, comment, tight)| {
            let eq = if tight { "=" } else { " = " };
            format!("{key}{eq}{v}{}", comment.unwrap_or(""))
        })
}

#[derive(Debug, Clone)]
enum Piece {
    Kv,
    Dotted,
    Comment,
    Blank,
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        3 => Just(Piece::Kv),
        1 => Just(Piece::Dotted),
        2 => Just(Piece::Comment),
        2 => Just(Piece::Blank),
    ]
}

fn body(prefix: String, le: &'static str, n: usize) -> BoxedStrategy<Vec<String>> {
    prop::collection::vec(piece(), 0..n)
        .prop_flat_map(move |pieces| {
            let lines: Vec<BoxedStrategy<String>> = pieces
                .into_iter()
                .enumerate()
                .map(|(i, p)| match p {
                    Piece::Kv => kv_line(format!("{prefix}k{i}"), le).boxed(),
                    Piece::Dotted => kv_line(format!("{prefix}d{i}.x"), le).boxed(),
                    Piece::Comment => Just(format!("# comment {i}")).boxed(),
                    Piece::Blank => Just(String::new()).boxed(),
                })
                .collect();
            lines
        })
        .boxed()
}

#[derive(Debug, Clone)]
enum Header {
    Table,
    Nested,
    ArrayOfTables,
    Providers,
}

fn header() -> impl Strategy<Value = Header> {
    prop_oneof![
        3 => Just(Header::Table),
        2 => Just(Header::Nested),
        2 => Just(Header::ArrayOfTables),
        1 => Just(Header::Providers),
    ]
}

fn doc() -> impl Strategy<Value = Doc> {
    (
        prop::bool::ANY,
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.8),
        prop::option::weighted(0.3, Just("mine")),
    )
        .prop_flat_map(|(crlf, bom, final_newline, existing)| {
            let le: &'static str = if crlf { "\r\n" } else { "\n" };
            let top = body(String::new(), le, 6);
            let sections = prop::collection::vec((header(), body(String::new(), le, 4)), 0..5);
            (top, sections).prop_map(move |(top, sections)| {
                let mut lines = Vec::new();
                if let Some(existing) = existing {
                    lines.push(format!("model_provider = \"{existing}\" # user's"));
                }
                lines.extend(top);
                let mut touches = existing.is_some();
                for (i, (h, body)) in sections.into_iter().enumerate() {
                    match h {
                        Header::Table => lines.push(format!("[t{i}]")),
                        Header::Nested => lines.push(format!("[n{i}.inner] # header comment")),
                        Header::ArrayOfTables => lines.push("[[aot]]".to_owned()),
                        Header::Providers => {
                            touches = true;
                            lines.push(format!("[model_providers.other{i}]"));
                        }
                    }
                    lines.extend(body);
                }
                let mut text = lines.join(le);
                if final_newline && !text.is_empty() {
                    text.push_str(le);
                }
                if bom {
                    text.insert(0, '\u{feff}');
                }
                Doc {
                    text,
                    touches_ours: touches,
                    existing_top: existing.map(str::to_owned),
                }
            })
        })
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        3 => Just(Target::TopLevel),
        1 => Just(Target::profile("work")),
    ]
}

fn spec() -> impl Strategy<Value = ProviderSpec> {
    prop_oneof![Just("proxy"), Just("my proxy"), Just("a.b"), Just("ü")].prop_map(|id| {
        ProviderSpec::new(id, "http://127.0.0.1:8080/v1").env_key("ROTATION_PROXY_TOKEN")
    })
}

/// Lines of `applied` that are not a subsequence match of `original`'s lines. Lines are
/// compared byte for byte (CR and all; the BOM must stay first); only the original's last line may gain the line
/// break it lacked when the file had no final newline.
fn extra_lines(original: &str, applied: &str) -> Result<Vec<String>, String> {
    let (original, applied) = match original.strip_prefix('\u{feff}') {
        Some(rest) => (
            rest,
            applied
                .strip_prefix('\u{feff}')
                .ok_or("the byte-order mark was lost")?,
        ),
        None => (original, applied),
    };
    let orig: Vec<&str> = original.split('\n').collect();
    let last = orig.len() - 1;
    let mut extra = Vec::new();
    let mut i = 0;
    for line in applied.split('\n') {
        let matches = i < orig.len()
            && (line == orig[i] || (i == last && line.strip_suffix('\r') == Some(orig[i])));
        if matches {
            i += 1;
        } else {
            extra.push(line.trim_end_matches('\r').to_owned());
        }
    }
    if i == orig.len() || (i == last && orig[i].is_empty()) {
        Ok(extra)
    } else {
        Err(format!("original line {:?} missing from output", orig[i]))
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn apply_then_restore_is_identity(doc in doc(), spec in spec(), target in target()) {
        let id = spec.id().to_owned();
        let rewrite = Rewrite::route_to(spec, target.clone());
        let applied = apply_to_str("c.toml".as_ref(), Some(&doc.text), &rewrite)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{}", doc.text)))?;
        let out = applied.text();

        // Parses, and model_provider is where it was asked to be (checked by parsing).
        prop_assert_eq!(read_string(out, &target, "model_provider").unwrap(), Some(id.clone()));
        if target != Target::TopLevel {
            prop_assert_eq!(read_string(out, &Target::TopLevel, "model_provider").unwrap(), doc.existing_top.clone());
        }

        // Idempotent.
        let again = apply_to_str("c.toml".as_ref(), Some(out), &rewrite).unwrap();
        prop_assert!(!again.changed());

        // Byte-for-byte restore.
        let restored = restore_str(Some(out), applied.record()).unwrap();
        prop_assert_eq!(restored.outcome(), &RestoreOutcome::Exact);
        prop_assert_eq!(restored.text(), Some(doc.text.as_str()));

        // Nothing outside our items changed: the original's lines survive in order, and
        // every added line is one of ours.
        if !doc.touches_ours {
            let extra = extra_lines(&doc.text, out).map_err(TestCaseError::fail)?;
            for line in extra {
                let ours = line.is_empty()
                    || line.starts_with("model_provider = ")
                    || line.starts_with("[model_providers.")
                    || line.starts_with("[profiles.work]")
                    || ["name = ", "base_url = ", "env_key = ", "wire_api = "].iter().any(|p| line.starts_with(p));
                prop_assert!(ours, "unexpected line {:?} in\n{}", line, out);
            }
        }
    }

    #[test]
    fn user_edits_after_apply_survive_restore(doc in doc(), spec in spec(), target in target()) {
        let rewrite = Rewrite::route_to(spec, target);
        let applied = apply_to_str("c.toml".as_ref(), Some(&doc.text), &rewrite).unwrap();
        let le = if doc.text.contains("\r\n") { "\r\n" } else { "\n" };
        let sep = if applied.text().is_empty() || applied.text().ends_with('\n') { "" } else { le };
        let edited = format!("{}{sep}[user_added]{le}x = 1{le}", applied.text());
        let restored = restore_str(Some(&edited), applied.record()).unwrap();
        let text = restored.text().unwrap();
        let parsed: toml_edit::DocumentMut = text.trim_start_matches('\u{feff}').parse().unwrap();
        prop_assert_eq!(parsed["user_added"]["x"].as_integer(), Some(1));
        prop_assert_eq!(
            read_string(text, &Target::TopLevel, "model_provider").unwrap(),
            doc.existing_top.clone()
        );
        prop_assert!(read_string(text, &Target::profile("work"), "model_provider").unwrap().is_none());
        if !doc.touches_ours {
            prop_assert!(parsed.get("model_providers").is_none(), "left behind:\n{}", text);
            // Everything of the user's is there, in order.
            extra_lines(&doc.text, text).map_err(TestCaseError::fail)?;
        }
    }
}
