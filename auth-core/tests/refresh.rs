//! Token refresh against a real loopback HTTP server (hyper on 127.0.0.1, port 0).
#![cfg(feature = "refresh")]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use auth_core::jwt::{self, IdTokenClaims, PlanType};
use auth_core::refresh::{
    PersistError, RefreshConfig, RefreshError, RefreshStore, RefreshedTokens, Refresher,
};
use auth_core::{AuthDocument, OAuthErrorKind, Secret, Timestamp, TokenData};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Clone)]
struct Reply {
    status: u16,
    body: String,
    delay: Duration,
}

struct Server {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<String>>>,
    reply: Arc<Mutex<Reply>>,
}

impl Server {
    async fn start(reply: Reply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let reply = Arc::new(Mutex::new(reply));
        let (r, b, rep) = (requests.clone(), bodies.clone(), reply.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (r, b, rep) = (r.clone(), b.clone(), rep.clone());
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let (r, b, rep) = (r.clone(), b.clone(), rep.clone());
                            async move {
                                r.fetch_add(1, Ordering::SeqCst);
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                b.lock()
                                    .unwrap()
                                    .push(String::from_utf8_lossy(&body).into_owned());
                                let reply = rep.lock().unwrap().clone();
                                tokio::time::sleep(reply.delay).await;
                                Ok::<_, Infallible>(
                                    Response::builder()
                                        .status(StatusCode::from_u16(reply.status).unwrap())
                                        .header("content-type", "application/json")
                                        .body(Full::new(Bytes::from(reply.body)))
                                        .unwrap(),
                                )
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            requests,
            bodies,
            reply,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/oauth/token", self.addr)
    }

    fn set_reply(&self, reply: Reply) {
        *self.reply.lock().unwrap() = reply;
    }
}

fn id_token(email: &str) -> String {
    jwt::encode_unsigned_for_testing(&IdTokenClaims {
        email: Some(email.into()),
        exp: Some(2_000_000_000),
        chatgpt_plan_type: Some(PlanType::Pro),
        chatgpt_account_id: Some("acc-1".into()),
        ..Default::default()
    })
}

fn current_tokens() -> TokenData {
    TokenData::new(
        id_token("old@example.com").into(),
        "old-access".into(),
        "old-refresh-SECRET".into(),
        Some("acc-1".into()),
    )
    .unwrap()
}

fn success_body() -> String {
    serde_json::json!({
        "id_token": id_token("new@example.com"),
        "access_token": "new-access",
        "refresh_token": "new-refresh",
    })
    .to_string()
}

/// A store holding one auth document in memory and counting saves.
struct CountingStore {
    doc: Mutex<AuthDocument>,
    saves: AtomicUsize,
}

impl CountingStore {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            doc: Mutex::new(AuthDocument::chatgpt(
                current_tokens(),
                "2025-01-01T00:00:00Z".parse().unwrap(),
            )),
            saves: AtomicUsize::new(0),
        })
    }
}

impl RefreshStore for CountingStore {
    fn persist(
        &self,
        _previous: &TokenData,
        refreshed: &RefreshedTokens,
    ) -> Result<TokenData, PersistError> {
        self.saves.fetch_add(1, Ordering::SeqCst);
        let mut doc = self.doc.lock().unwrap();
        refreshed
            .apply_to_document(&mut doc, Timestamp::now())
            .ok_or_else(|| "no tokens stored".into())
    }
}

fn ok_reply(delay_ms: u64) -> Reply {
    Reply {
        status: 200,
        body: success_body(),
        delay: Duration::from_millis(delay_ms),
    }
}

#[tokio::test]
async fn success_sends_codex_request_and_persists() {
    let server = Server::start(ok_reply(0)).await;
    let store = CountingStore::new();
    let refresher = Refresher::new(
        RefreshConfig::default().with_token_url(server.url()),
        store.clone(),
    )
    .unwrap();

    let fresh = refresher.refresh(&current_tokens()).await.unwrap();
    assert_eq!(fresh.access_token.expose(), "new-access");
    assert_eq!(fresh.refresh_token.expose(), "new-refresh");
    assert_eq!(fresh.account_id.as_deref(), Some("acc-1"));
    assert_eq!(
        fresh.id_token_claims().unwrap().email.as_deref(),
        Some("new@example.com")
    );

    let sent: serde_json::Value = serde_json::from_str(&server.bodies.lock().unwrap()[0]).unwrap();
    assert_eq!(
        sent,
        serde_json::json!({
            "client_id": "app_EMoamEEZ73f0CkXaXp7hrann",
            "grant_type": "refresh_token",
            "refresh_token": "old-refresh-SECRET",
        })
    );
    assert_eq!(store.saves.load(Ordering::SeqCst), 1);
    {
        let doc = store.doc.lock().unwrap();
        assert_eq!(doc.tokens.as_ref().unwrap(), &fresh);
        assert_ne!(
            doc.last_refresh.as_ref().unwrap().as_str(),
            "2025-01-01T00:00:00Z"
        );
    }

    // A later caller still holding the spent refresh token gets the same result, no request.
    let again = refresher.refresh(&current_tokens()).await.unwrap();
    assert_eq!(again, fresh);
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
    assert_eq!(store.saves.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_callers_make_one_request_and_one_save() {
    // The delay keeps the request in flight while all callers arrive.
    let server = Server::start(ok_reply(300)).await;
    let store = CountingStore::new();
    let refresher = Refresher::new(
        RefreshConfig::default().with_token_url(server.url()),
        store.clone(),
    )
    .unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let refresher = refresher.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            refresher.refresh(&current_tokens()).await
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .unwrap()
                .unwrap()
                .unwrap(),
        );
    }
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
    assert_eq!(store.saves.load(Ordering::SeqCst), 1);
    assert!(
        results
            .iter()
            .all(|t| t.access_token.expose() == "new-access")
    );
}

#[tokio::test]
async fn unauthorized_is_classified_and_permanent() {
    let server = Server::start(Reply {
        status: 401,
        body: r#"{"error":{"code":"refresh_token_expired","message":"token old-refresh-SECRET expired for old@example.com"}}"#.into(),
        delay: Duration::ZERO,
    })
    .await;
    let store = CountingStore::new();
    let refresher = Refresher::new(
        RefreshConfig::default().with_token_url(server.url()),
        store.clone(),
    )
    .unwrap();
    let err = refresher.refresh(&current_tokens()).await.unwrap_err();
    assert!(err.is_permanent());
    assert!(matches!(err, RefreshError::Rejected { status: 401, .. }));
    assert_eq!(
        err.oauth_error().unwrap().kind(),
        OAuthErrorKind::RefreshTokenExpired
    );
    let text = format!("{err} {err:?}");
    assert!(
        !text.contains("SECRET") && !text.contains("old@example.com"),
        "{text}"
    );
    assert_eq!(store.saves.load(Ordering::SeqCst), 0);

    // Permanent failures are remembered for that refresh token: no second request.
    let again = refresher.refresh(&current_tokens()).await.unwrap_err();
    assert!(again.is_permanent());
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn plain_401_and_invalid_grant_are_permanent() {
    for (status, body, kind) in [
        (401, "", OAuthErrorKind::Other),
        (
            400,
            r#"{"error":"invalid_grant","error_description":"nope"}"#,
            OAuthErrorKind::InvalidGrant,
        ),
        (
            400,
            r#"{"error":"refresh_token_reused"}"#,
            OAuthErrorKind::RefreshTokenReused,
        ),
    ] {
        let server = Server::start(Reply {
            status,
            body: body.into(),
            delay: Duration::ZERO,
        })
        .await;
        let refresher = Refresher::new(
            RefreshConfig::default().with_token_url(server.url()),
            CountingStore::new(),
        )
        .unwrap();
        let err = refresher.refresh(&current_tokens()).await.unwrap_err();
        assert!(err.is_permanent(), "{status} {body}: {err}");
        assert_eq!(err.oauth_error().unwrap().kind(), kind);
    }
}

#[tokio::test]
async fn server_error_is_transient_and_retried() {
    let server = Server::start(Reply {
        status: 503,
        body: "<html>busy</html>".into(),
        delay: Duration::ZERO,
    })
    .await;
    let store = CountingStore::new();
    let refresher = Refresher::new(
        RefreshConfig::default().with_token_url(server.url()),
        store.clone(),
    )
    .unwrap();
    let err = refresher.refresh(&current_tokens()).await.unwrap_err();
    assert!(!err.is_permanent());
    assert!(matches!(err, RefreshError::Endpoint { status: 503, .. }));

    server.set_reply(ok_reply(0));
    let fresh = refresher.refresh(&current_tokens()).await.unwrap();
    assert_eq!(fresh.access_token.expose(), "new-access");
    assert_eq!(server.requests.load(Ordering::SeqCst), 2);
    assert_eq!(store.saves.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn bad_success_bodies_are_rejected_without_saving() {
    for body in [
        "not json".to_owned(),
        serde_json::json!({"id_token": "not-a-jwt", "access_token": "a"}).to_string(),
    ] {
        let server = Server::start(Reply {
            status: 200,
            body,
            delay: Duration::ZERO,
        })
        .await;
        let store = CountingStore::new();
        let refresher = Refresher::new(
            RefreshConfig::default().with_token_url(server.url()),
            store.clone(),
        )
        .unwrap();
        let err = refresher.refresh(&current_tokens()).await.unwrap_err();
        assert!(matches!(err, RefreshError::InvalidResponse { .. }), "{err}");
        assert!(!err.to_string().contains("not-a-jwt"));
        assert_eq!(store.saves.load(Ordering::SeqCst), 0);
    }
}

#[tokio::test]
async fn unreachable_endpoint_is_a_redacted_transport_error() {
    // Bind then drop to get a closed loopback port.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let refresher = Refresher::new(
        RefreshConfig::default()
            .with_token_url(format!("http://127.0.0.1:{port}/oauth/token?key=SECRETQ"))
            .with_timeout(Duration::from_secs(5)),
        CountingStore::new(),
    )
    .unwrap();
    let err = refresher.refresh(&current_tokens()).await.unwrap_err();
    assert!(matches!(err, RefreshError::Transport { .. }), "{err}");
    assert!(!err.to_string().contains("SECRETQ"), "{err}");
}

#[tokio::test]
async fn persist_failure_returns_new_tokens() {
    struct Failing;
    impl RefreshStore for Failing {
        fn persist(&self, _: &TokenData, _: &RefreshedTokens) -> Result<TokenData, PersistError> {
            Err("disk full".into())
        }
    }
    let server = Server::start(ok_reply(0)).await;
    let refresher = Refresher::new(
        RefreshConfig::default().with_token_url(server.url()),
        Arc::new(Failing),
    )
    .unwrap();
    let err = refresher.refresh(&current_tokens()).await.unwrap_err();
    match err {
        RefreshError::Persist { message, tokens } => {
            assert_eq!(message, "disk full");
            assert_eq!(tokens.access_token, Secret::from("new-access"));
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn bad_config_is_rejected() {
    let err = Refresher::new(
        RefreshConfig::default().with_token_url("not a url"),
        CountingStore::new(),
    )
    .unwrap_err();
    assert!(matches!(err, RefreshError::Config { .. }));
}

/// Collects everything a `tracing` fmt subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Keeps a second `tracing` dispatcher registered for the rest of the process.
///
/// While exactly one dispatcher is registered, tracing-core (0.1.36) decides whether an
/// event macro is enabled from the default subscriber of whichever thread reaches it first,
/// and caches that for the whole process. This test installs a subscriber on its own
/// thread while the other tests of this binary run in parallel without one: when one of
/// them reached `refresh_succeeded` first, the event was cached as never wanted and this
/// test saw no trace of it (seen under Wine, where the threads interleave differently;
/// tokio-rs/tracing#3611). With two dispatchers registered, tracing asks each thread's
/// subscriber at every event.
fn keep_a_second_dispatcher_registered() {
    static INERT: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
    INERT.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
}

#[tokio::test]
async fn logs_carry_lifecycle_events_but_no_tokens_or_bodies() {
    keep_a_second_dispatcher_registered();
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    // One success, one classified failure, one transport failure.
    let server = Server::start(ok_reply(0)).await;
    let refresher = Refresher::new(
        RefreshConfig::default().with_token_url(format!("{}?client_secret=QSECRET", server.url())),
        CountingStore::new(),
    )
    .unwrap();
    refresher.refresh(&current_tokens()).await.unwrap();
    refresher.refresh(&current_tokens()).await.unwrap(); // coalesced
    server.set_reply(Reply {
        status: 401,
        body: r#"{"error":{"code":"refresh_token_reused","message":"BODY-SECRET for old@example.com"}}"#.into(),
        delay: Duration::ZERO,
    });
    let mut other = current_tokens();
    other.refresh_token = Secret::from("second-refresh-SECRET");
    refresher.refresh(&other).await.unwrap_err();

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for event in [
        "refresh_started",
        "refresh_succeeded",
        "refresh_coalesced",
        "token_endpoint_error",
        "refresh_token_reused",
        "status=401",
    ] {
        assert!(logs.contains(event), "missing {event} in logs:\n{logs}");
    }
    for secret in [
        "SECRET",
        "old-refresh",
        "new-access",
        "new-refresh",
        "old@example.com",
        "eyJ",
    ] {
        assert!(!logs.contains(secret), "{secret} leaked into logs:\n{logs}");
    }
}
