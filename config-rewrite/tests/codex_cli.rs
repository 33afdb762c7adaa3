//! Interop with the real Codex CLI: it loads every rewritten corpus config without a
//! configuration error, it *does* report broken ones (so these tests can fail), and
//! `codex exec` really talks to the provider we wrote, on a loopback server.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use config_rewrite::{RevertFile, Target, apply, restore};

const TOKEN: &str = "loopback-test-token-7f3a";

/// Runs the CLI with `CODEX_HOME` set, bounded in time; returns (success, stdout+stderr).
fn run_codex(bin: &Path, home: &Path, args: &[&str], timeout: Duration) -> (bool, String) {
    let mut child = Command::new(bin)
        .args(args)
        .env("CODEX_HOME", home)
        .env("ROTATION_PROXY_TOKEN", TOKEN)
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env("NO_COLOR", "1")
        .current_dir(home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn codex");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_thread = thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_thread = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let output = format!(
        "{}{}",
        out_thread.join().unwrap(),
        err_thread.join().unwrap()
    );
    match status {
        Some(status) => (status.success(), output),
        None => (false, format!("TIMED OUT after {timeout:?}\n{output}")),
    }
}

fn config_error(output: &str) -> bool {
    output.contains("Error loading configuration") || output.contains("Error loading config.toml")
}

fn login_status(bin: &Path, home: &Path) -> String {
    run_codex(bin, home, &["login", "status"], Duration::from_secs(30)).1
}

#[test]
fn rewritten_corpus_configs_load_without_a_config_error() {
    let Some(bin) =
        common::codex_bin_or_skip("rewritten_corpus_configs_load_without_a_config_error")
    else {
        return;
    };
    for (name, original, target) in common::corpus() {
        let home = tempfile::tempdir().unwrap();
        let config = home.path().join("config.toml");
        std::fs::write(&config, &original).unwrap();
        let before = login_status(&bin, home.path());
        assert!(
            !config_error(&before),
            "{name}: corpus file itself rejected:\n{before}"
        );

        let record = apply(&config, &common::proxy_rewrite(9, target)).unwrap();
        let after = login_status(&bin, home.path());
        assert!(
            !config_error(&after),
            "{name}: rewritten config rejected:\n{after}"
        );

        restore(&record).unwrap();
        assert_eq!(
            std::fs::read_to_string(&config).unwrap(),
            original,
            "{name}"
        );
    }
}

#[test]
fn codex_does_report_broken_configs() {
    let Some(bin) = common::codex_bin_or_skip("codex_does_report_broken_configs") else {
        return;
    };
    let provider =
        "[model_providers.rotation-proxy]\nname = \"p\"\nbase_url = \"http://127.0.0.1:9/v1\"\n";
    let cases = [
        ("invalid TOML", "model = \"o3\"\n[tui\n".to_owned()),
        (
            "unknown provider selected",
            "model_provider = \"rotation-proxy\"\n".to_owned(),
        ),
        (
            "wire_api chat",
            format!("model_provider = \"rotation-proxy\"\n{provider}wire_api = \"chat\"\n"),
        ),
        (
            "wrong field type",
            format!("model_provider = \"rotation-proxy\"\n{provider}request_max_retries = \"3\"\n"),
        ),
        (
            "reserved id",
            "[model_providers.openai]\nname = \"x\"\n".to_owned(),
        ),
    ];
    for (what, text) in cases {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join("config.toml"), text).unwrap();
        let output = login_status(&bin, home.path());
        assert!(
            config_error(&output),
            "{what}: expected a configuration error, got:\n{output}"
        );
    }
}

/// A loopback Responses API: answers `POST …/responses` with a minimal SSE stream and
/// records each request line and whether it carried our bearer token.
struct Upstream {
    port: u16,
    seen: Arc<Mutex<Vec<(String, bool)>>>,
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Upstream {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let handle = thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut served = 0;
            while !stop2.load(Ordering::SeqCst) && Instant::now() < deadline && served < 50 {
                match listener.accept() {
                    Ok((stream, _)) => {
                        served += 1;
                        let _ = handle_conn(stream, &seen2);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Upstream {
            port,
            seen,
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn handle_conn(stream: TcpStream, seen: &Mutex<Vec<(String, bool)>>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut content_length = 0usize;
    let mut authorized = false;
    for _ in 0..200 {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("authorization:")
            && line.trim_end().ends_with(&format!("Bearer {TOKEN}"))
        {
            authorized = true;
        }
    }
    let mut body = vec![0u8; content_length.min(16 << 20)];
    reader.read_exact(&mut body)?;
    let request_line = request_line.trim().to_owned();
    seen.lock()
        .unwrap()
        .push((request_line.clone(), authorized));
    let mut stream = stream;
    if request_line.starts_with("POST ") && request_line.contains("/v1/responses") {
        let events = [
            (
                "response.created",
                r#"{"type":"response.created","response":{"id":"resp_1"}}"#,
            ),
            (
                "response.output_item.done",
                r#"{"type":"response.output_item.done","item":{"type":"message","role":"assistant","id":"msg_1","content":[{"type":"output_text","text":"hello from the loopback provider"}]}}"#,
            ),
            (
                "response.completed",
                r#"{"type":"response.completed","response":{"id":"resp_1","usage":{"input_tokens":1,"input_tokens_details":null,"output_tokens":1,"output_tokens_details":null,"total_tokens":2}}}"#,
            ),
        ];
        let mut sse = String::new();
        for (event, data) in events {
            sse.push_str(&format!("event: {event}\ndata: {data}\n\n"));
        }
        write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{sse}",
            sse.len()
        )?;
    } else {
        stream.write_all(
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )?;
    }
    stream.flush()
}

/// Whether `codex exec` can run here at all; prints a SKIP line for `test` when not. The
/// Windows CLI 0.169 under Wine 8 stops before it reads any configuration ("failed to
/// initialize in-process app-server client: Lock violation (os error 33)", in a home holding
/// only a config without any file of ours), so on Windows this is probed once, in such a
/// home with a loopback provider; elsewhere `codex exec` is simply run.
fn exec_runs_or_skip(bin: &Path, test: &str) -> bool {
    static BLOCKED: OnceLock<Option<String>> = OnceLock::new();
    let blocked = BLOCKED.get_or_init(|| {
        if !cfg!(windows) {
            return None;
        }
        let home = tempfile::tempdir().unwrap();
        std::fs::write(
            home.path().join("config.toml"),
            "model_provider = \"probe\"\n[model_providers.probe]\nname = \"probe\"\n\
             base_url = \"http://127.0.0.1:9/v1\"\nwire_api = \"responses\"\n\
             request_max_retries = 0\nstream_max_retries = 0\n",
        )
        .unwrap();
        let args = ["exec", "--skip-git-repo-check", "probe"];
        let (_, output) = run_codex(bin, home.path(), &args, Duration::from_secs(60));
        output.contains("(os error 33)").then(|| {
            "`codex exec` stops here before reading any configuration (Lock violation, os \
             error 33: the Windows CLI under Wine)"
                .to_owned()
        })
    });
    if let Some(reason) = blocked {
        common::skip(test, reason);
    }
    blocked.is_none()
}

fn exec_through(bin: &Path, home: &Path, upstream: &Upstream, extra: &[&str]) -> String {
    let mut args = vec!["exec", "--skip-git-repo-check"];
    args.extend_from_slice(extra);
    args.push("say hi");
    let (ok, output) = run_codex(bin, home, &args, Duration::from_secs(90));
    let seen = upstream.seen.lock().unwrap().clone();
    assert!(ok, "codex exec failed:\n{output}\nrequests: {seen:?}");
    assert!(
        seen.iter()
            .any(|(line, auth)| line.starts_with("POST /v1/responses") && *auth),
        "no authorized POST /v1/responses reached the provider we wrote: {seen:?}\n{output}"
    );
    assert!(
        output.contains("hello from the loopback provider"),
        "{output}"
    );
    output
}

#[test]
fn codex_exec_uses_the_provider_we_wrote() {
    let Some(bin) = common::codex_bin_or_skip("codex_exec_uses_the_provider_we_wrote") else {
        return;
    };
    if !exec_runs_or_skip(&bin, "codex_exec_uses_the_provider_we_wrote") {
        return;
    }
    let upstream = Upstream::start();
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config.toml");
    // The hardest corpus case for placement: an array of tables comes first.
    let original = common::corpus()
        .into_iter()
        .find(|(n, ..)| *n == "skills_first")
        .unwrap()
        .1;
    std::fs::write(&config, &original).unwrap();

    let revert = RevertFile::beside(&config);
    revert
        .apply(
            &config,
            &common::proxy_rewrite(upstream.port, Target::TopLevel),
        )
        .unwrap();
    exec_through(&bin, home.path(), &upstream, &[]);
    revert.restore().unwrap();
    assert_eq!(std::fs::read_to_string(&config).unwrap(), original);
}

#[test]
fn codex_exec_with_a_profile_file() {
    // Codex 0.169 profiles are layered files: `--profile work` reads `$CODEX_HOME/work.config.toml`.
    let Some(bin) = common::codex_bin_or_skip("codex_exec_with_a_profile_file") else {
        return;
    };
    if !exec_runs_or_skip(&bin, "codex_exec_with_a_profile_file") {
        return;
    }
    let upstream = Upstream::start();
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("config.toml"), "model = \"gpt-5\"\n").unwrap();
    let profile =
        config_rewrite::profile_config_path(&home.path().join("config.toml"), "work").unwrap();
    let record = apply(
        &profile,
        &common::proxy_rewrite(upstream.port, Target::TopLevel),
    )
    .unwrap();
    exec_through(&bin, home.path(), &upstream, &["--profile", "work"]);
    restore(&record).unwrap();
    assert!(!profile.exists());
}

#[test]
fn restore_keeps_what_codex_itself_wrote_meanwhile() {
    // The CLI rewrites config.toml itself (here `codex mcp add`) while our rewrite is in place;
    // restore must undo only our keys and keep the CLI's addition. It does so while another
    // of our programs holds the edit lock: the CLI neither takes nor waits for it, and the
    // lock file stands between it and none of its files (a Windows lock is mandatory).
    let Some(bin) = common::codex_bin_or_skip("restore_keeps_what_codex_itself_wrote_meanwhile")
    else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config.toml");
    let original = common::corpus()
        .into_iter()
        .find(|(n, ..)| *n == "basic")
        .unwrap()
        .1;
    std::fs::write(&config, &original).unwrap();
    let revert = RevertFile::beside(&config);
    revert
        .apply(&config, &common::proxy_rewrite(9, Target::TopLevel))
        .unwrap();

    let held = std::fs::File::open(home.path().join(config_rewrite::EDIT_LOCK_FILE)).unwrap();
    fs4::FileExt::try_lock(&held).unwrap();
    let status = login_status(&bin, home.path());
    assert!(!config_error(&status), "{status}");
    let (ok, output) = run_codex(
        &bin,
        home.path(),
        &["mcp", "add", "extra", "--", "echo", "hi"],
        Duration::from_secs(30),
    );
    assert!(ok, "codex mcp add failed:\n{output}");
    let during = std::fs::read_to_string(&config).unwrap();
    assert!(during.contains("[mcp_servers.extra]"), "{during}");
    drop(held);

    let report = revert.restore().unwrap().unwrap();
    match &report.outcome {
        config_rewrite::RestoreOutcome::Merged { undone, kept } => {
            assert!(kept.is_empty(), "{kept:?}");
            assert_eq!(undone.len(), 8, "{undone:?}");
        }
        other => panic!("expected a merged restore, got {other:?}"),
    }
    let text = std::fs::read_to_string(&config).unwrap();
    let doc: toml_edit::DocumentMut = text.parse().unwrap();
    assert!(doc.get("model_provider").is_none(), "{text}");
    assert!(doc.get("model_providers").is_none(), "{text}");
    assert_eq!(
        doc["mcp_servers"]["extra"]["command"].as_str(),
        Some("echo")
    );
    assert_eq!(doc["model"].as_str(), Some("gpt-5-codex"));
    assert!(!config_error(&login_status(&bin, home.path())));
}

#[test]
fn codex_reads_every_provider_field_we_can_write() {
    // Each field we write is one Codex reads: with all of them the config loads, and a wrong
    // type in any one of them is reported *at that field* — which Codex only does for
    // fields it deserializes (unknown keys are silently ignored), so a misspelt field name
    // here would fail this test.
    let Some(bin) = common::codex_bin_or_skip("codex_reads_every_provider_field_we_can_write")
    else {
        return;
    };
    use config_rewrite::{ProviderSpec, Rewrite, WireApi};
    let spec = ProviderSpec::new("all-fields", "http://127.0.0.1:9/v1")
        .name("All fields")
        .env_key("ROTATION_PROXY_TOKEN")
        .env_key_instructions("start the proxy")
        .wire_api(Some(WireApi::Responses))
        .requires_openai_auth(false)
        .supports_websockets(false)
        .supports_standalone_web_search(false)
        .model_catalog_url("http://127.0.0.1:9/v1/models")
        .query_param("api-version", "1")
        .http_header("X-Extra", "1")
        .env_http_header("X-Env", "SOME_VAR")
        .request_max_retries(1)
        .stream_max_retries(1)
        .stream_idle_timeout_ms(1000)
        .websocket_connect_timeout_ms(1000);
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config.toml");
    apply(&config, &Rewrite::route_to(spec, Target::TopLevel)).unwrap();
    let written = std::fs::read_to_string(&config).unwrap();
    let out = login_status(&bin, home.path());
    assert!(!config_error(&out), "{written}\n{out}");

    let fields: Vec<(usize, String)> = written
        .lines()
        .enumerate()
        .skip_while(|(_, l)| !l.starts_with("[model_providers."))
        .skip(1)
        .filter_map(|(i, l)| l.split_once(" = ").map(|(k, _)| (i, k.to_owned())))
        .collect();
    assert_eq!(fields.len(), 16, "{written}");
    for (line, field) in &fields {
        let broken: String = written
            .lines()
            .enumerate()
            .map(|(i, l)| {
                if i == *line {
                    format!("{field} = [[1]]\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(&config, &broken).unwrap();
        let out = login_status(&bin, home.path());
        assert!(
            config_error(&out) && out.contains(&format!("config.toml:{}:", line + 1)),
            "Codex did not read `{field}` (a wrong type there went unnoticed):\n{out}"
        );
    }
}

#[test]
fn codex_profiles_are_layer_files_and_legacy_tables_are_refused() {
    // The facts the crate docs state about Codex 0.169 profiles.
    let Some(bin) =
        common::codex_bin_or_skip("codex_profiles_are_layer_files_and_legacy_tables_are_refused")
    else {
        return;
    };
    let mcp_list = |home: &Path, profile: Option<&str>| {
        let mut args = Vec::new();
        if let Some(p) = profile {
            args.extend(["--profile", p]);
        }
        args.extend(["mcp", "list"]);
        run_codex(&bin, home, &args, Duration::from_secs(30))
    };
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config.toml");

    // A `[profiles.work]` table: accepted without --profile, refused with --profile work.
    let legacy = "model = \"o3\"\n\n[profiles.work]\nmodel = \"gpt-5\"\n";
    std::fs::write(&config, legacy).unwrap();
    assert_eq!(
        config_rewrite::legacy_profile_items(legacy, "work").unwrap(),
        ["profiles.work"]
    );
    let (ok, out) = mcp_list(home.path(), None);
    assert!(ok, "{out}");
    let (ok, out) = mcp_list(home.path(), Some("work"));
    assert!(!ok && out.contains("legacy"), "{out}");
    assert!(out.contains("work.config.toml"), "{out}");

    // A top-level `profile = "work"` selector: refused even without --profile.
    let selector = "profile = \"work\"\nmodel = \"o3\"\n";
    std::fs::write(&config, selector).unwrap();
    assert_eq!(
        config_rewrite::legacy_profile_items(selector, "work").unwrap(),
        ["profile"]
    );
    let (ok, out) = mcp_list(home.path(), None);
    assert!(!ok && out.contains("legacy"), "{out}");

    // The layer file: --profile work reads it; a missing one is fine.
    std::fs::write(&config, "model = \"o3\"\n").unwrap();
    let layer = config_rewrite::profile_config_path(&config, "work").unwrap();
    std::fs::write(&layer, "model = \"gpt-5\"\n").unwrap();
    let (ok, out) = mcp_list(home.path(), Some("work"));
    assert!(ok, "{out}");
    let (ok, out) = mcp_list(home.path(), Some("absent"));
    assert!(ok, "{out}");
    // ... and really reads it: a broken layer is reported with its own path.
    std::fs::write(&layer, "model = [\n").unwrap();
    let (ok, out) = mcp_list(home.path(), Some("work"));
    assert!(!ok && out.contains("work.config.toml"), "{out}");
}

#[test]
fn codex_ignores_model_provider_in_a_legacy_profile_table() {
    // Without --profile, Codex 0.169 accepts `[profiles.*]` tables but does not use them: a
    // provider named only there (and unknown) does not stop `codex exec` from using the
    // top-level one.
    let Some(bin) =
        common::codex_bin_or_skip("codex_ignores_model_provider_in_a_legacy_profile_table")
    else {
        return;
    };
    if !exec_runs_or_skip(
        &bin,
        "codex_ignores_model_provider_in_a_legacy_profile_table",
    ) {
        return;
    }
    let upstream = Upstream::start();
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config.toml");
    std::fs::write(
        &config,
        "model = \"gpt-5\"\n\n[profiles.work]\nmodel_provider = \"no-such-provider\"\n",
    )
    .unwrap();
    let record = apply(
        &config,
        &common::proxy_rewrite(upstream.port, Target::TopLevel),
    )
    .unwrap();
    exec_through(&bin, home.path(), &upstream, &[]);
    restore(&record).unwrap();
}
