//! The whole browser login against a loopback mock issuer, with an HTTP client playing
//! the browser. Every case checks what the caller gets, what the page says, and that
//! both the `tracing` output and `login.log` hold the expected events and no secret.
//! Servers bind 127.0.0.1 port 0 only (never 1455).
#![cfg(feature = "login")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use auth_core::OAuthErrorKind;
use auth_core::login::mock_issuer::{
    AuthorizeReply, MOCK_ACCOUNT_ID, MOCK_CODE, MockIssuer, TokenReply,
};
use auth_core::login::{LoginError, LoginOptions, LoginSession, LoginSuccess};
use auth_core::pkce::PkceCodes;
use pretty_assertions::assert_eq;

const EMAIL: &str = "user.secret@example.com";

/// Collects everything a `tracing` subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// One test's world: mock issuer, log dir, tracing capture (thread-local default
/// subscriber; `#[tokio::test]` runs every task on this thread).
struct World {
    issuer: MockIssuer,
    dir: tempfile::TempDir,
    trace: Captured,
    _guard: tracing::subscriber::DefaultGuard,
}

impl World {
    async fn new(token: TokenReply) -> Self {
        let trace = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(trace.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        Self {
            issuer: MockIssuer::start(token).await.unwrap(),
            dir: tempfile::tempdir().unwrap(),
            trace,
            _guard: guard,
        }
    }

    fn options(&self) -> LoginOptions {
        LoginOptions::default()
            .with_issuer(self.issuer.url())
            .with_listen_addr("127.0.0.1:0".parse().unwrap())
            .with_timeout(Duration::from_secs(20))
            .with_log_dir(self.dir.path())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("login.log")).unwrap_or_default()
    }

    /// The log with timestamps and ports replaced, for snapshots.
    fn normalized_log(&self, session_port: u16) -> String {
        let issuer_port = self.issuer.url().rsplit(':').next().unwrap().to_owned();
        self.log()
            .lines()
            .map(|line| {
                // Each line starts with a 24-character UTC timestamp.
                assert_eq!(&line[10..11], "T", "{line}");
                assert_eq!(&line[23..24], "Z", "{line}");
                format!("[ts]{}", &line[24..])
                    .replace(&format!(":{session_port}"), ":[callback-port]")
                    .replace(&format!(":{issuer_port}"), ":[issuer-port]")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Asserts that neither log contains any of `secrets` (nor the full email).
    fn assert_no_secrets(&self, secrets: &[&str]) {
        let (log, trace) = (self.log(), self.trace.text());
        assert!(!log.is_empty() && !trace.is_empty());
        for secret in secrets.iter().chain([&EMAIL, &MOCK_CODE]) {
            assert!(!secret.is_empty());
            assert!(!log.contains(secret), "login.log leaks {secret:?}:\n{log}");
            assert!(
                !trace.contains(secret),
                "tracing leaks {secret:?}:\n{trace}"
            );
        }
    }

    /// Event names in login.log, in order.
    fn events(&self) -> Vec<String> {
        self.log()
            .lines()
            .map(|l| l.split_whitespace().nth(3).unwrap_or_default().to_owned())
            .collect()
    }
}

/// The "browser": GET `url`, following redirects; returns status and page.
async fn browse(url: &str) -> (u16, String) {
    let response = reqwest::Client::new().get(url).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn query_value(url: &str, key: &str) -> String {
    let url = url::Url::parse(url).unwrap();
    url.query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .unwrap()
}

/// What one browser round trip produced.
struct Flow {
    result: Result<LoginSuccess, LoginError>,
    status: u16,
    page: String,
    port: u16,
    state: String,
}

/// Starts a session, lets the browser follow the authorize URL, waits for both.
async fn run_browser_flow(options: LoginOptions) -> Flow {
    let session = LoginSession::start(options).await.unwrap();
    let url = session.authorize_url().to_owned();
    let state = query_value(&url, "state");
    let port = session.local_addr().port();
    let browser = tokio::spawn(async move { browse(&url).await });
    let result = session.wait().await;
    let (status, page) = browser.await.unwrap();
    Flow {
        result,
        status,
        page,
        port,
        state,
    }
}

#[tokio::test]
async fn success_returns_tokens_and_logs_nothing_secret() {
    let world = World::new(TokenReply::tokens_for(EMAIL)).await;
    let session = LoginSession::start(world.options().with_extra_param("prompt", "login"))
        .await
        .unwrap();
    let url = session.authorize_url().to_owned();
    assert!(
        url.ends_with("&originator=codex_cli_rs&prompt=login"),
        "{url}"
    );
    let redirect_uri = session.redirect_uri().to_owned();
    let port = session.local_addr().port();
    assert_eq!(
        redirect_uri,
        format!("http://localhost:{port}/auth/callback")
    );
    assert_eq!(query_value(&url, "redirect_uri"), redirect_uri);
    assert_eq!(query_value(&url, "id_token_add_organizations"), "true");
    assert_eq!(query_value(&url, "codex_cli_simplified_flow"), "true");
    let state = query_value(&url, "state");
    let challenge = query_value(&url, "code_challenge");

    let browser = tokio::spawn({
        let url = url.clone();
        async move { browse(&url).await }
    });
    let login = session.wait().await.unwrap();
    let (status, page) = browser.await.unwrap();

    // What the caller gets.
    let TokenReply::Tokens {
        id_token,
        access_token,
        refresh_token,
    } = TokenReply::tokens_for(EMAIL)
    else {
        unreachable!()
    };
    assert_eq!(login.tokens.id_token.expose(), id_token);
    assert_eq!(login.tokens.access_token.expose(), access_token);
    assert_eq!(login.tokens.refresh_token.expose(), refresh_token);
    assert_eq!(login.tokens.account_id.as_deref(), Some(MOCK_ACCOUNT_ID));
    assert_eq!(login.claims.email.as_deref(), Some(EMAIL));
    assert_eq!(login.masked_email().as_deref(), Some("u***@example.com"));
    let debug = format!("{login:?}");
    assert!(
        !debug.contains(EMAIL) && !debug.contains(&access_token),
        "{debug}"
    );

    // What the token endpoint got: the Codex CLI's form, with the PKCE verifier.
    let requests = world.issuer.token_requests();
    assert_eq!(requests.len(), 1);
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(requests[0].as_bytes())
            .into_owned()
            .collect();
    assert_eq!(form["grant_type"], "authorization_code");
    assert_eq!(form["code"], MOCK_CODE);
    assert_eq!(form["redirect_uri"], redirect_uri);
    assert_eq!(form["client_id"], auth_core::codex::CLIENT_ID);
    let verifier = form["code_verifier"].clone();
    assert_eq!(
        PkceCodes::from_verifier(verifier.clone().into()).challenge,
        challenge
    );
    assert!(!url.contains(&verifier));

    // What the browser sees.
    assert_eq!(status, 200);
    assert!(
        page.contains("You are signed in as u***@example.com."),
        "{page}"
    );
    assert!(!page.contains(EMAIL));
    insta::assert_snapshot!("page_success", page);

    // What the logs say.
    assert_eq!(
        world.events(),
        [
            "listening",
            "request",
            "callback_received",
            "token_exchange_started",
            "token_exchange_succeeded",
            "finished"
        ]
    );
    world.assert_no_secrets(&[&state, &verifier, &id_token, &access_token, &refresh_token]);
    insta::assert_snapshot!("log_success", world.normalized_log(port));
    let trace = world.trace.text();
    assert!(trace.contains("auth_core::login::session"), "{trace}");
    assert!(trace.contains("auth_core::login:"), "{trace}");
    assert!(trace.contains("state_valid=true"), "{trace}");
    // The callback event names the path it came in on, never its query.
    assert!(
        world
            .log()
            .contains("callback_received path=/auth/callback has_code=true"),
        "{}",
        world.log()
    );
    assert!(trace.contains("path=/auth/callback"), "{trace}");

    // The server is gone once `wait` returned: a late callback cannot reach it.
    assert_server_stops(port).await;
}

/// The callback port refuses connections soon after the session ended (bounded poll).
async fn assert_server_stops(port: u16) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("callback server on port {port} still accepts connections");
}

#[tokio::test]
async fn issuer_error_is_reported_without_its_description_in_logs() {
    let world = World::new(TokenReply::tokens_for(EMAIL)).await;
    world.issuer.set_authorize_reply(AuthorizeReply::Error {
        error: "access_denied".into(),
        description: "DESC-SECRET <b>no Codex for this workspace</b>".into(),
    });
    let flow = run_browser_flow(world.options()).await;

    match &flow.result {
        Err(LoginError::Issuer { code, description }) => {
            assert_eq!(code.as_deref(), Some("access_denied"));
            assert!(description.as_deref().unwrap().contains("no Codex"));
        }
        other => panic!("expected an issuer error, got {other:?}"),
    }
    assert_eq!(flow.status, 400);
    assert!(flow.page.contains("(access_denied)"), "{}", flow.page);
    // The issuer's text reaches the user, escaped.
    assert!(flow.page.contains("&lt;b&gt;no Codex"), "{}", flow.page);
    insta::assert_snapshot!("page_issuer_error", flow.page);

    assert!(
        world.issuer.token_requests().is_empty(),
        "no exchange after an issuer error"
    );
    assert_eq!(
        world.events(),
        [
            "listening",
            "request",
            "callback_received",
            "issuer_error",
            "finished"
        ]
    );
    assert!(world.log().contains("error_code=access_denied"));
    world.assert_no_secrets(&[&flow.state, "DESC-SECRET", "no Codex"]);
    insta::assert_snapshot!("log_issuer_error", world.normalized_log(flow.port));
}

#[tokio::test]
async fn state_mismatch_is_answered_and_the_login_keeps_waiting() {
    let world = World::new(TokenReply::tokens_for(EMAIL)).await;
    world
        .issuer
        .set_authorize_reply(AuthorizeReply::WrongState("FORGED-STATE".into()));
    let session = LoginSession::start(world.options()).await.unwrap();
    let url = session.authorize_url().to_owned();
    let state = query_value(&url, "state");
    let port = session.local_addr().port();
    let waiting = tokio::spawn(session.wait());

    // A forged or stale callback: rejected page, no exchange, the session goes on.
    let (status, page) = browse(&url).await;
    assert_eq!(status, 400);
    assert!(page.contains("state parameter does not match"), "{page}");
    insta::assert_snapshot!("page_state_mismatch", page);
    assert!(world.issuer.token_requests().is_empty());
    assert!(!waiting.is_finished());

    // The real callback still completes the login.
    world.issuer.set_authorize_reply(AuthorizeReply::default());
    let (status, _) = browse(&url).await;
    assert_eq!(status, 200);
    let login = waiting.await.unwrap().unwrap();
    assert_eq!(login.tokens.account_id.as_deref(), Some(MOCK_ACCOUNT_ID));

    assert!(world.log().contains("state_valid=false"));
    assert!(
        world
            .log()
            .contains("callback_ignored reason=state_mismatch")
    );
    world.assert_no_secrets(&[&state, "FORGED-STATE", "mock-access-token"]);
    insta::assert_snapshot!("log_state_mismatch", world.normalized_log(port));
}

#[tokio::test]
async fn token_endpoint_400_json_error_keeps_only_the_code() {
    let body = r#"{"error":"invalid_grant","error_description":"DESC-SECRET code already used"}"#;
    let world = World::new(TokenReply::raw(400, "application/json", body)).await;
    let flow = run_browser_flow(world.options()).await;

    match &flow.result {
        Err(LoginError::TokenEndpoint { status, error }) => {
            assert_eq!(*status, 400);
            assert_eq!(error.kind(), OAuthErrorKind::InvalidGrant);
            assert_eq!(error.code(), Some("invalid_grant"));
        }
        other => panic!("expected a token endpoint error, got {other:?}"),
    }
    let message = flow.result.as_ref().unwrap_err().to_string();
    assert!(!message.contains("DESC-SECRET"), "{message}");
    assert_eq!(flow.status, 400);
    assert!(flow.page.contains("HTTP 400"), "{}", flow.page);
    assert!(flow.page.contains("invalid_grant"), "{}", flow.page);
    assert!(!flow.page.contains("DESC-SECRET"));
    insta::assert_snapshot!("page_token_400", flow.page);

    let verifier = verifier_sent(&world);
    assert!(
        world
            .log()
            .contains("token_endpoint_error status=400 error_code=invalid_grant")
    );
    world.assert_no_secrets(&[&flow.state, &verifier, "DESC-SECRET", body]);
    insta::assert_snapshot!("log_token_400", world.normalized_log(flow.port));
}

#[tokio::test]
async fn token_endpoint_500_html_body_never_reaches_logs_or_page() {
    let body = "<html><body>BODY-SECRET upstream exploded</body></html>";
    let world = World::new(TokenReply::raw(500, "text/html", body)).await;
    let flow = run_browser_flow(world.options()).await;

    match &flow.result {
        Err(LoginError::TokenEndpoint { status, error }) => {
            assert_eq!(*status, 500);
            assert_eq!(error.code(), None);
        }
        other => panic!("expected a token endpoint error, got {other:?}"),
    }
    assert!(flow.page.contains("HTTP 500"), "{}", flow.page);
    assert!(!flow.page.contains("BODY-SECRET"));
    insta::assert_snapshot!("page_token_500", flow.page);
    let verifier = verifier_sent(&world);
    assert!(
        world
            .log()
            .contains("token_endpoint_error status=500 error_code=none")
    );
    world.assert_no_secrets(&[&flow.state, &verifier, "BODY-SECRET"]);
    insta::assert_snapshot!("log_token_500", world.normalized_log(flow.port));
}

#[tokio::test]
async fn token_endpoint_connection_refused_is_a_redacted_transport_error() {
    let world = World::new(TokenReply::tokens_for(EMAIL)).await;
    // A port that was just free: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut options = world.options();
    options.token_url = Some(format!(
        "http://127.0.0.1:{}/oauth/token?client_secret=QUERY-SECRET",
        closed.port()
    ));
    let flow = run_browser_flow(options).await;

    let Err(LoginError::Transport { message }) = &flow.result else {
        panic!("expected a transport error, got {:?}", flow.result);
    };
    assert!(!message.contains("QUERY-SECRET"), "{message}");
    assert_eq!(flow.status, 400);
    assert!(
        flow.page.contains("could not reach the token endpoint"),
        "{}",
        flow.page
    );
    assert!(!flow.page.contains("QUERY-SECRET"));
    assert_eq!(
        world.events(),
        [
            "listening",
            "request",
            "callback_received",
            "token_exchange_started",
            "transport_error",
            "finished"
        ]
    );
    let log = world.log();
    assert!(log.contains("outcome=transport_error"), "{log}");
    // The logged message names the endpoint with its query value redacted.
    assert!(
        log.lines()
            .any(|l| l.contains("transport_error message=") && l.contains("client_secret=")),
        "{log}"
    );
    world.assert_no_secrets(&[&flow.state, "QUERY-SECRET"]);
    // The page ends with the OS's own words for the refusal ("Connection refused (os error
    // 111)" on Linux, WSAECONNREFUSED's text and 10061 on Windows): the same words a plain
    // connect to the closed port gets here stand in for it, so one snapshot fits every OS.
    let refused = std::net::TcpStream::connect(closed)
        .expect_err("nothing listens on the closed port")
        .to_string();
    assert!(flow.page.contains(&refused), "{refused:?} in {}", flow.page);
    let page = flow
        .page
        .replace(&refused, "[connection refused, as the OS words it]")
        .replace(&closed.port().to_string(), "[port]");
    insta::assert_snapshot!("page_connection_refused", page);
}

#[tokio::test]
async fn no_callback_times_out_and_stops_the_server() {
    let world = World::new(TokenReply::tokens_for(EMAIL)).await;
    let session = LoginSession::start(world.options().with_timeout(Duration::from_millis(300)))
        .await
        .unwrap();
    let port = session.local_addr().port();
    let state = query_value(session.authorize_url(), "state");
    let result = session.wait().await;
    assert!(
        matches!(result, Err(LoginError::TimedOut { after }) if after == Duration::from_millis(300)),
        "{result:?}"
    );
    assert_eq!(world.events(), ["listening", "finished"]);
    assert!(world.log().contains("outcome=timed_out"));
    world.assert_no_secrets(&[&state]);
    insta::assert_snapshot!("log_timed_out", world.normalized_log(port));
    assert_server_stops(port).await;
}

#[tokio::test]
async fn cancel_path_ends_the_login() {
    let world = World::new(TokenReply::tokens_for(EMAIL)).await;
    let session = LoginSession::start(world.options()).await.unwrap();
    let port = session.local_addr().port();
    let state = query_value(session.authorize_url(), "state");
    let waiting = tokio::spawn(session.wait());

    let (status, page) = browse(&format!("http://127.0.0.1:{port}/cancel")).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("The login in progress was cancelled."),
        "{page}"
    );
    insta::assert_snapshot!("page_cancelled", page);
    assert!(matches!(waiting.await.unwrap(), Err(LoginError::Cancelled)));
    assert_eq!(world.events(), ["listening", "request", "finished"]);
    world.assert_no_secrets(&[&state]);
    insta::assert_snapshot!("log_cancelled", world.normalized_log(port));
    assert_server_stops(port).await;
}

#[tokio::test]
async fn cancel_handle_and_cancel_previous_stop_a_running_login() {
    let world = World::new(TokenReply::tokens_for(EMAIL)).await;
    let first = LoginSession::start(world.options()).await.unwrap();
    let handle = first.cancel_handle();
    let waiting = tokio::spawn(first.wait());
    assert!(handle.cancel());
    assert!(!handle.cancel(), "only the first outcome counts");
    assert!(matches!(waiting.await.unwrap(), Err(LoginError::Cancelled)));

    // A second login on the same port asks the first to stop, then takes the port.
    let first = LoginSession::start(world.options()).await.unwrap();
    let addr = first.local_addr();
    let waiting = tokio::spawn(first.wait());
    let second = LoginSession::start(
        world
            .options()
            .with_listen_addr(addr)
            .with_cancel_previous(true),
    )
    .await
    .unwrap();
    assert_eq!(second.local_addr(), addr);
    assert!(matches!(waiting.await.unwrap(), Err(LoginError::Cancelled)));
    drop(second);
}

#[tokio::test]
async fn second_callback_is_ignored_while_the_first_is_exchanged() {
    let world = World::new(TokenReply::tokens_for(EMAIL)).await;
    world.issuer.hold_token_endpoint();
    let session = LoginSession::start(world.options()).await.unwrap();
    let url = session.authorize_url().to_owned();
    let state = query_value(&url, "state");
    let port = session.local_addr().port();
    let waiting = tokio::spawn(session.wait());
    let first = tokio::spawn({
        let url = url.clone();
        async move { browse(&url).await }
    });
    tokio::time::timeout(
        Duration::from_secs(10),
        world.issuer.token_request_arrived(),
    )
    .await
    .expect("the first callback reaches the token endpoint");

    // Same state, same code, while the first is still being exchanged.
    let (status, page) = browse(&url).await;
    assert_eq!(status, 409);
    assert!(
        page.contains("already received its sign-in callback"),
        "{page}"
    );
    insta::assert_snapshot!("page_already_handled", page);

    world.issuer.release_token_endpoint();
    let (status, page) = first.await.unwrap();
    assert_eq!(status, 200, "{page}");
    let login = waiting.await.unwrap().unwrap();
    assert_eq!(login.tokens.refresh_token.expose(), "mock-refresh-token");
    assert_eq!(
        world.issuer.token_requests().len(),
        1,
        "exactly one exchange"
    );
    assert!(
        world
            .log()
            .contains("callback_ignored reason=already_handled")
    );
    let verifier = verifier_sent(&world);
    world.assert_no_secrets(&[&state, &verifier, "mock-access-token", "mock-refresh-token"]);
    insta::assert_snapshot!("log_already_handled", world.normalized_log(port));

    // After the login finished, a third callback cannot reach anything.
    assert_server_stops(port).await;
}

#[tokio::test]
async fn callback_without_code_fails_and_unknown_paths_are_404() {
    let world = World::new(TokenReply::tokens_for(EMAIL)).await;
    let session = LoginSession::start(world.options()).await.unwrap();
    let port = session.local_addr().port();
    let state = query_value(session.authorize_url(), "state");
    let waiting = tokio::spawn(session.wait());
    let (status, page) = browse(&format!("http://127.0.0.1:{port}/favicon.ico")).await;
    assert_eq!(status, 404);
    insta::assert_snapshot!("page_not_found", page);
    let (status, page) = browse(&format!(
        "http://127.0.0.1:{port}/auth/callback?state={state}"
    ))
    .await;
    assert_eq!(status, 400);
    assert!(page.contains("without an authorization code"), "{page}");
    assert!(matches!(
        waiting.await.unwrap(),
        Err(LoginError::MissingCode)
    ));
    world.assert_no_secrets(&[&state]);
}

#[tokio::test]
async fn bad_options_are_refused_before_binding() {
    let err = LoginSession::start(
        LoginOptions::default().with_listen_addr("0.0.0.0:0".parse::<SocketAddr>().unwrap()),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, LoginError::Config { .. }), "{err}");
    assert!(err.to_string().contains("loopback"), "{err}");
    let err = LoginSession::start(
        LoginOptions::default()
            .with_issuer("ftp://user:pw@example.com")
            .with_listen_addr("127.0.0.1:0".parse().unwrap()),
    )
    .await
    .unwrap_err();
    assert!(!err.to_string().contains("pw"), "{err}");
}

#[cfg(feature = "preflight")]
#[tokio::test]
async fn taken_port_names_its_holder() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap();
    let err = LoginSession::start(LoginOptions::default().with_listen_addr(addr))
        .await
        .unwrap_err();
    let LoginError::PortInUse { holders, .. } = &err else {
        panic!("expected PortInUse, got {err:?}");
    };
    let holders = holders.as_ref().expect("preflight names holders");
    let me = format!("pid {} (", std::process::id());
    if holders.is_empty() {
        // The lookup may be unavailable in a sandbox; the message still says so.
        let _ = writeln!(
            std::io::stderr(),
            "SKIP: taken_port_names_its_holder: no holder lookup answered here"
        );
        assert!(err.to_string().contains("could not be identified"), "{err}");
        return;
    }
    if cfg!(windows) && !holders.iter().any(|h| h.starts_with("pid ")) {
        // Wine's TCP table names no socket owner (pid 0 for every row): the holder is found
        // but cannot be inspected. Windows proper names it, and the check below applies.
        let _ = writeln!(
            std::io::stderr(),
            "SKIP: taken_port_names_its_holder: the TCP table named no owner pid (Wine): {holders:?}"
        );
        assert!(err.to_string().contains(&format!("{addr}")), "{err}");
        return;
    }
    assert!(holders.iter().any(|h| h.starts_with(&me)), "{holders:?}");
    let message = err.to_string();
    assert!(message.contains("already in use by pid"), "{message}");
    assert!(message.contains(&format!("{addr}")), "{message}");
}

/// The `code_verifier` the token endpoint received.
fn verifier_sent(world: &World) -> String {
    let requests = world.issuer.token_requests();
    let form = requests.first().expect("a token request");
    url::form_urlencoded::parse(form.as_bytes())
        .find(|(k, _)| k == "code_verifier")
        .map(|(_, v)| v.into_owned())
        .expect("code_verifier sent")
}

#[tokio::test]
async fn unusable_success_bodies_are_named_without_values() {
    let cases = [
        (
            r#"{"id_token":"not-a-jwt","access_token":"AT-SECRET","refresh_token":"RT-SECRET"}"#,
            "id_token is not a usable JWT",
        ),
        (
            r#"{"id_token":"x","access_token":"AT-SECRET"}"#,
            "missing field `refresh_token`",
        ),
        (r#"{"id_token":["AT-SECRET"]}"#, "unexpected type or shape"),
        ("<html>AT-SECRET</html>", "not JSON"),
    ];
    for (body, expected) in cases {
        let world = World::new(TokenReply::raw(200, "application/json", body)).await;
        let flow = run_browser_flow(world.options()).await;
        let Err(err @ LoginError::InvalidTokenResponse { .. }) = &flow.result else {
            panic!(
                "{body}: expected InvalidTokenResponse, got {:?}",
                flow.result
            );
        };
        let message = err.to_string();
        assert!(message.contains(expected), "{body}: {message}");
        assert!(!message.contains("SECRET"), "{message}");
        assert!(!flow.page.contains("SECRET"), "{}", flow.page);
        assert!(world.log().contains("outcome=invalid_token_response"));
        world.assert_no_secrets(&[&flow.state, "AT-SECRET", "RT-SECRET"]);
    }
}

#[tokio::test]
async fn login_log_is_private_and_appended() {
    let world = World::new(TokenReply::tokens_for(EMAIL)).await;
    for _ in 0..2 {
        let flow = run_browser_flow(world.options()).await;
        assert!(flow.result.is_ok());
    }
    let path = world.dir.path().join("login.log");
    // Unix permission bits; Windows has none (the file gets its directory's ACL).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    assert!(path.is_file());
    let finished = world.log().matches("finished outcome=success").count();
    assert_eq!(finished, 2, "the second session appends");
}
