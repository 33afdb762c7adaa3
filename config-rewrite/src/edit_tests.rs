use super::*;
use crate::provider::ProviderSpec;
use pretty_assertions::assert_eq;

fn proxy() -> ProviderSpec {
    ProviderSpec::new("proxy", "http://127.0.0.1:9/v1").env_key("TOKEN")
}

fn route(target: Target) -> Rewrite {
    Rewrite::route_to(proxy(), target)
}

fn apply(text: Option<&str>, rewrite: &Rewrite) -> Applied {
    apply_to_str(Path::new("config.toml"), text, rewrite).unwrap()
}

fn parsed(text: &str) -> DocumentMut {
    text.trim_start_matches(BOM).parse().unwrap()
}

/// Applies, checks the result by parsing, and checks restore gives back the exact input.
fn roundtrip(original: &str, target: Target) -> String {
    let applied = apply(Some(original), &route(target.clone()));
    let doc = parsed(applied.text());
    let holder: &dyn TableLike = match &target {
        Target::TopLevel => doc.as_table(),
        Target::Profile(name) => doc["profiles"][name.as_str()].as_table_like().unwrap(),
    };
    assert_eq!(
        holder.get("model_provider").and_then(Item::as_str),
        Some("proxy")
    );
    assert_eq!(
        doc["model_providers"]["proxy"]["base_url"].as_str(),
        Some("http://127.0.0.1:9/v1")
    );
    assert_eq!(
        doc["model_providers"]["proxy"]["wire_api"].as_str(),
        Some("responses")
    );
    let again = apply(Some(applied.text()), &route(target));
    assert!(!again.changed(), "second apply changed the text");
    assert_eq!(again.text(), applied.text());
    let restored = restore_str(Some(applied.text()), applied.record()).unwrap();
    assert_eq!(restored.text(), Some(original));
    assert_eq!(restored.outcome(), &RestoreOutcome::Exact);
    applied.text().to_owned()
}

#[test]
fn top_level_key_lands_before_an_array_of_tables_that_comes_first() {
    let out = roundtrip(
        "[[skills.config]]\npath = \"a\"\nenabled = true\n",
        Target::TopLevel,
    );
    assert!(
        out.starts_with("model_provider = \"proxy\"\n[[skills.config]]"),
        "{out}"
    );
    let doc = parsed(&out);
    let skills = doc["skills"]["config"].as_array_of_tables().unwrap();
    assert!(skills.get(0).unwrap().get("model_provider").is_none());
}

#[test]
fn bom_is_kept() {
    let out = roundtrip("\u{feff}model = \"o3\"\n[tui]\nx = 1\n", Target::TopLevel);
    assert!(
        out.starts_with("\u{feff}model = \"o3\"\nmodel_provider = \"proxy\"\n"),
        "{out:?}"
    );
}

#[test]
fn crlf_files_get_crlf_lines() {
    let out = roundtrip(
        "# c\r\nmodel = \"o3\"\r\n\r\n[tui]\r\nx = 1\r\n",
        Target::TopLevel,
    );
    assert!(
        !out.replace("\r\n", "").contains('\n'),
        "lone LF in {out:?}"
    );
    assert!(out.contains("model_provider = \"proxy\"\r\n"));
}

#[test]
fn crlf_inside_multiline_string_is_kept_in_lf_file() {
    let original = "a = 1\nb = \"\"\"x\r\ny\"\"\"\n";
    roundtrip(original, Target::TopLevel);
}

#[test]
fn mixed_line_endings_are_refused_not_normalised() {
    let err = apply_to_str(
        Path::new("c"),
        Some("a = 1\r\nb = 2\n"),
        &route(Target::TopLevel),
    )
    .unwrap_err();
    assert_eq!(err, EditError::NotRoundTrippable { line: 2, column: 6 });
}

#[test]
fn missing_trailing_newline() {
    let out = roundtrip("model = \"o3\"", Target::TopLevel);
    assert!(
        out.starts_with("model = \"o3\"\nmodel_provider = \"proxy\"\n"),
        "{out:?}"
    );
    assert!(
        !out.ends_with('\n'),
        "the file's style (no final newline) is kept: {out:?}"
    );
    roundtrip("[tui]\nx = 1", Target::TopLevel);
    roundtrip("# only a comment", Target::TopLevel);
    roundtrip("", Target::TopLevel);
}

#[test]
fn dotted_keys_and_inline_tables() {
    roundtrip(
        "tui.notifications = true\nmodel_providers.other.name = \"O\"\n",
        Target::TopLevel,
    );
    let out = roundtrip(
        "model_providers = { other = { name = \"O\", base_url = \"http://x\" } }\n[tui]\n",
        Target::TopLevel,
    );
    let doc = parsed(&out);
    assert_eq!(doc["model_providers"]["other"]["name"].as_str(), Some("O"));
    roundtrip(
        "model_providers.proxy.name = \"Mine\" # keep\n",
        Target::TopLevel,
    );
}

#[test]
fn comments_everywhere_survive() {
    let original = "# head\nmodel = \"o3\" # trailing\n# before table\n[mcp_servers.docs] # hdr\n# inside\ncommand = \"npx\"\n# end\n";
    let out = roundtrip(original, Target::TopLevel);
    for line in original.lines() {
        assert!(out.contains(line), "lost {line:?} in {out}");
    }
}

#[test]
fn existing_model_provider_keeps_its_decor_and_comes_back() {
    let original = "model_provider = \"openai\"   # default one\n[model_providers.proxy]\nname = \"Mine\"\nrequest_max_retries = 7\n";
    let out = roundtrip(original, Target::TopLevel);
    assert!(
        out.starts_with("model_provider = \"proxy\"   # default one\n"),
        "{out}"
    );
    // Fields we do not set are the user's and stay.
    assert_eq!(
        parsed(&out)["model_providers"]["proxy"]["request_max_retries"].as_integer(),
        Some(7)
    );
}

#[test]
fn provider_ids_needing_quotes() {
    for id in ["my proxy", "a.b", "ünï", "x\"y", "x'y"] {
        let rewrite = Rewrite::route_to(
            ProviderSpec::new(id, "http://127.0.0.1:9/v1"),
            Target::TopLevel,
        );
        let applied = apply(Some("model = \"o3\"\n"), &rewrite);
        let doc = parsed(applied.text());
        assert_eq!(doc["model_provider"].as_str(), Some(id));
        assert_eq!(
            doc["model_providers"][id]["name"].as_str(),
            Some(id),
            "{}",
            applied.text()
        );
        let restored = restore_str(Some(applied.text()), applied.record()).unwrap();
        assert_eq!(restored.text(), Some("model = \"o3\"\n"));
    }
}

#[test]
fn profiles_existing_and_new() {
    let original =
        "model = \"o3\"\nprofile = \"work\"\n[profiles.work]\nmodel = \"gpt-5\"\n[tui]\n";
    let out = roundtrip(original, Target::profile("work"));
    let doc = parsed(&out);
    assert!(
        doc.get("model_provider").is_none(),
        "top level must stay untouched: {out}"
    );
    roundtrip(original, Target::profile("home"));
    roundtrip("", Target::profile("new one"));
}

#[test]
fn new_profile_tables_are_removed_on_merge_restore() {
    let applied = apply(Some("model = \"o3\"\n"), &route(Target::profile("p")));
    let edited = format!("{}\n# user note\n", applied.text());
    let restored = restore_str(Some(&edited), applied.record()).unwrap();
    let text = restored.text().unwrap();
    assert_eq!(text, "model = \"o3\"\n\n# user note\n");
}

#[test]
fn invalid_toml_is_refused_with_line_and_column() {
    let err = apply_to_str(
        Path::new("c"),
        Some("a = 1\nb = = 2\n"),
        &route(Target::TopLevel),
    )
    .unwrap_err();
    match err {
        EditError::InvalidToml { line, column, .. } => assert_eq!((line, column), (2, 5)),
        other => panic!("{other:?}"),
    }
    // Duplicate keys are invalid TOML too.
    let err = apply_to_str(
        Path::new("c"),
        Some("[t]\na = 1\n[t]\n"),
        &route(Target::TopLevel),
    )
    .unwrap_err();
    assert!(
        matches!(err, EditError::InvalidToml { line: 3, .. }),
        "{err:?}"
    );
}

#[test]
fn non_table_in_the_way_is_refused() {
    let err = apply_to_str(
        Path::new("c"),
        Some("profiles = \"x\"\n"),
        &route(Target::profile("w")),
    )
    .unwrap_err();
    assert_eq!(
        err,
        EditError::NotATable {
            key_path: "profiles".into(),
            found: "string"
        }
    );
    let err = apply_to_str(
        Path::new("c"),
        Some("[[model_providers]]\n"),
        &route(Target::TopLevel),
    )
    .unwrap_err();
    assert_eq!(
        err,
        EditError::NotATable {
            key_path: "model_providers".into(),
            found: "array of tables"
        }
    );
}

#[test]
fn bad_input_is_refused() {
    for id in [
        "",
        "  ",
        "openai",
        "ollama",
        "lmstudio",
        "amazon-bedrock",
        "a\nb",
    ] {
        let rewrite = Rewrite::route_to(
            ProviderSpec::new(id, "http://127.0.0.1:9/v1"),
            Target::TopLevel,
        );
        let err = apply_to_str(Path::new("c"), Some(""), &rewrite).unwrap_err();
        assert!(
            matches!(err, EditError::InvalidInput { .. }),
            "{id:?}: {err:?}"
        );
    }
    let rewrite = Rewrite::new().upsert_provider(proxy().request_max_retries(u64::MAX));
    assert!(matches!(
        apply_to_str(Path::new("c"), Some(""), &rewrite),
        Err(EditError::InvalidInput { field, .. }) if field == "request_max_retries"
    ));
    let rewrite = Rewrite::new().set_string(Target::profile(""), "k", "v");
    assert!(apply_to_str(Path::new("c"), Some(""), &rewrite).is_err());
}

#[test]
fn user_edits_after_apply_are_respected() {
    let original = "model = \"o3\"\n[tui]\nx = 1\n";
    let applied = apply(Some(original), &route(Target::TopLevel));
    // The user changed our model_provider and base_url, and added a key of their own.
    let edited = applied
        .text()
        .replace("model_provider = \"proxy\"", "model_provider = \"mine\"")
        .replace("http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1")
        .replace("x = 1", "x = 2");
    let restored = restore_str(Some(&edited), applied.record()).unwrap();
    let text = restored.text().unwrap();
    let doc = parsed(text);
    assert_eq!(doc["model_provider"].as_str(), Some("mine"));
    assert_eq!(doc["tui"]["x"].as_integer(), Some(2));
    assert_eq!(
        doc["model_providers"]["proxy"]["base_url"].as_str(),
        Some("http://127.0.0.1:10/v1")
    );
    // Our other fields are gone; the table survives because it still holds the user's value.
    assert!(doc["model_providers"]["proxy"].get("env_key").is_none());
    match restored.outcome() {
        RestoreOutcome::Merged { undone, kept } => {
            assert_eq!(kept, &["model_providers.proxy.base_url", "model_provider"]);
            assert_eq!(
                undone,
                &[
                    "model_providers.proxy.name",
                    "model_providers.proxy.env_key",
                    "model_providers.proxy.wire_api"
                ]
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn merge_restore_puts_back_previous_values_with_their_comments() {
    let original =
        "model_provider = \"mine\" # note\n[model_providers.proxy]\nname = \"Old\"\n[tui]\nx = 1\n";
    let applied = apply(Some(original), &route(Target::TopLevel));
    let edited = applied.text().replace("x = 1", "x = 2");
    let restored = restore_str(Some(&edited), applied.record()).unwrap();
    assert_eq!(
        restored.text(),
        Some(original.replace("x = 1", "x = 2").as_str())
    );
}

#[test]
fn remove_key_and_remove_provider_are_reversible() {
    let original = "model_provider = \"old\"\n\n[model_providers.old]\nname = \"Old\" # c\nbase_url = \"http://127.0.0.1:1/v1\"\n\n[model_providers.old.http_headers]\nX-A = \"b\"\n\n[tui]\nx = 1\n";
    let rewrite = Rewrite::new()
        .remove_key(Target::TopLevel, "model_provider")
        .remove_provider("old");
    let applied = apply(Some(original), &rewrite);
    let doc = parsed(applied.text());
    assert!(doc.get("model_provider").is_none());
    assert!(
        doc.get("model_providers")
            .and_then(|m| m.get("old"))
            .is_none(),
        "{}",
        applied.text()
    );
    assert_eq!(
        restore_str(Some(applied.text()), applied.record())
            .unwrap()
            .text(),
        Some(original)
    );
    // With an unrelated user edit, the merge path puts the table back too.
    let edited = applied.text().replace("x = 1", "x = 2");
    let text = restore_str(Some(&edited), applied.record())
        .unwrap()
        .text()
        .unwrap()
        .to_owned();
    let doc = parsed(&text);
    assert_eq!(doc["model_provider"].as_str(), Some("old"));
    assert_eq!(
        doc["model_providers"]["old"]["http_headers"]["X-A"].as_str(),
        Some("b")
    );
    assert_eq!(doc["tui"]["x"].as_integer(), Some(2));
}

#[test]
fn all_provider_fields_are_written_with_codex_types() {
    let spec = ProviderSpec::new("p", "http://127.0.0.1:9/v1")
        .name("P")
        .env_key("K")
        .env_key_instructions("set K")
        .requires_openai_auth(false)
        .supports_websockets(false)
        .supports_standalone_web_search(false)
        .model_catalog_url("http://127.0.0.1:9/v1/models")
        .query_param("api-version", "1")
        .http_header("X-A", "b")
        .env_http_header("X-B", "VAR")
        .request_max_retries(1)
        .stream_max_retries(2)
        .stream_idle_timeout_ms(3)
        .websocket_connect_timeout_ms(4);
    let applied = apply(None, &Rewrite::new().upsert_provider(spec));
    insta::assert_snapshot!(applied.text());
}

#[test]
fn base_urls_that_codex_could_not_use_are_refused() {
    for (url, reason) in [
        ("not a url", "not an absolute URL"),
        ("127.0.0.1:8080/v1", "not an absolute URL"),
        ("localhost:8080/v1", "scheme is `localhost`"),
        ("/v1", "not an absolute URL"),
        ("ftp://127.0.0.1/v1", "scheme is `ftp`"),
        ("file:///tmp/x", "scheme is `file`"),
        ("http://", "not an absolute URL"),
        ("", "not an absolute URL"),
    ] {
        let spec = ProviderSpec::new("p", url);
        let err = apply_to_str(
            Path::new("config.toml"),
            Some("a = 1\n"),
            &Rewrite::route_to(spec, Target::TopLevel),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("base_url") && text.contains(reason),
            "{url:?}: {text}"
        );
    }
    for url in [
        "http://127.0.0.1:8080/v1",
        "https://proxy.example/v1",
        "http://[::1]:9/v1",
        "HTTP://LOCALHOST:1/v1",
    ] {
        let spec = ProviderSpec::new("p", url);
        assert!(
            apply_to_str(
                Path::new("config.toml"),
                Some("a = 1\n"),
                &Rewrite::route_to(spec, Target::TopLevel)
            )
            .is_ok(),
            "{url}"
        );
    }
}

#[test]
fn missing_file_is_created_and_removed_again() {
    let applied = apply(None, &route(Target::TopLevel));
    assert!(applied.changed());
    assert!(applied.record().created_file());
    let restored = restore_str(Some(applied.text()), applied.record()).unwrap();
    assert_eq!(restored.text(), None);
    // Even when the user added a comment-free key meanwhile, their key keeps the file alive.
    let edited = format!("{}[tui]\nx = 1\n", applied.text());
    let restored = restore_str(Some(&edited), applied.record()).unwrap();
    assert_eq!(restored.text(), Some("[tui]\nx = 1\n"));
    // Deleted meanwhile and created by us: nothing to do.
    let restored = restore_str(None, applied.record()).unwrap();
    assert_eq!(
        (restored.text(), restored.outcome()),
        (None, &RestoreOutcome::AlreadyRestored)
    );
}

#[test]
fn deleted_file_is_recreated_from_the_record() {
    let applied = apply(Some("model = \"o3\"\n"), &route(Target::TopLevel));
    let restored = restore_str(None, applied.record()).unwrap();
    assert_eq!(restored.text(), Some("model = \"o3\"\n"));
    assert_eq!(restored.outcome(), &RestoreOutcome::Recreated);
}

#[test]
fn restoring_twice_is_harmless() {
    let applied = apply(Some("model = \"o3\"\n"), &route(Target::TopLevel));
    let once = restore_str(Some(applied.text()), applied.record()).unwrap();
    let twice = restore_str(once.text(), applied.record()).unwrap();
    assert_eq!(twice.text(), Some("model = \"o3\"\n"));
    assert_eq!(twice.outcome(), &RestoreOutcome::AlreadyRestored);
}

#[test]
fn invalid_text_at_restore_is_refused() {
    let applied = apply(Some("model = \"o3\"\n"), &route(Target::TopLevel));
    let broken = format!("{}oops =\n", applied.text());
    assert!(matches!(
        restore_str(Some(&broken), applied.record()),
        Err(EditError::InvalidToml { .. })
    ));
}

#[test]
fn record_serializes_and_debug_hides_content() {
    let applied = apply(
        Some("[mcp_servers.x.env]\nTOKEN = \"sk-secret-value\"\n"),
        &route(Target::TopLevel),
    );
    let json = serde_json::to_string(applied.record()).unwrap();
    let back: RevertRecord = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, applied.record());
    let debug = format!("{:?}", applied.record());
    assert!(!debug.contains("sk-secret-value"), "{debug}");
    let debug = format!("{applied:?}");
    assert!(!debug.contains("sk-secret-value"), "{debug}");
    let restored = restore_str(Some(applied.text()), applied.record()).unwrap();
    let debug = format!("{restored:?}");
    assert!(!debug.contains("sk-secret-value"), "{debug}");
    let mut wrong = back;
    wrong.format = 99;
    assert!(matches!(
        restore_str(Some(""), &wrong),
        Err(EditError::InvalidRecord { .. })
    ));
}

#[test]
fn read_string_reports_non_strings() {
    assert_eq!(
        read_string("\u{feff}m = \"x\"\n", &Target::TopLevel, "m")
            .unwrap()
            .as_deref(),
        Some("x")
    );
    assert!(matches!(
        read_string("m = 3\n", &Target::TopLevel, "m"),
        Err(EditError::InvalidInput { .. })
    ));
    assert!(matches!(
        read_string("m = \n", &Target::TopLevel, "m"),
        Err(EditError::InvalidToml { .. })
    ));
}

#[test]
fn model_provider_in_a_wrong_table_is_not_mistaken_for_the_top_level_one() {
    let original = "[tui]\nmodel_provider = \"stray\"\n";
    let out = roundtrip(original, Target::TopLevel);
    let doc = parsed(&out);
    assert_eq!(doc["tui"]["model_provider"].as_str(), Some("stray"));
    assert_eq!(doc["model_provider"].as_str(), Some("proxy"));
}

#[test]
fn set_string_refuses_to_replace_a_table() {
    let rewrite = Rewrite::new().set_string(Target::TopLevel, "tui", "x");
    let err = apply_to_str(Path::new("c"), Some("[tui]\nx = 1\n"), &rewrite).unwrap_err();
    assert!(
        matches!(err, EditError::InvalidInput { ref field, .. } if field == "tui"),
        "{err:?}"
    );
}
