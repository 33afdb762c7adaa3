//! Several processes × several threads race to refresh one expiring login against a
//! loopback token endpoint that, like OpenAI's, rejects a reused refresh token: exactly one
//! request is made and everybody ends with the new tokens.
#![cfg(feature = "refresh")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use auth_core::refresh::{RefreshConfig, Refresher, TokenEndpoint};
use auth_core::{AuthDocument, Timestamp};
use auth_storage::refresh::{CoordinatedRefresher, LockedRefreshStore, RefreshOutcome};
use auth_storage::{CodexHome, CredentialStore, FileStore};
use common::tokens;

const ROLE: &str = "AUTH_STORAGE_REFRESH_ROLE";
const PROCESSES: usize = 4;
const TASKS: usize = 4;

/// A token endpoint on 127.0.0.1:0 that rotates refresh tokens and answers a reused one
/// with 401 `refresh_token_reused`.
struct TokenServer {
    url: String,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(
            self.url
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap(),
        );
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_token_server() -> TokenServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let current = Arc::new(Mutex::new("rt-0".to_owned()));
    let (req, stp) = (requests.clone(), stop.clone());
    let thread = std::thread::spawn(move || {
        for conn in listener.incoming() {
            if stp.load(Ordering::SeqCst) {
                break;
            }
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let Some(body) = read_request(&mut conn) else {
                continue;
            };
            req.fetch_add(1, Ordering::SeqCst);
            let sent: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let token = sent["refresh_token"].as_str().unwrap_or("").to_owned();
            let mut cur = current.lock().unwrap();
            let (status, reply) = if token == *cur {
                let n: u32 = cur.trim_start_matches("rt-").parse().unwrap();
                *cur = format!("rt-{}", n + 1);
                let fresh = tokens("race@example.com", "acct-race", &cur);
                (
                    "200 OK",
                    serde_json::json!({
                        "id_token": fresh.id_token.expose(),
                        "access_token": format!("at-{}", n + 1),
                        "refresh_token": *cur,
                    }),
                )
            } else {
                (
                    "401 Unauthorized",
                    serde_json::json!({"error": {"code": "refresh_token_reused", "message": "Your refresh token has already been used"}}),
                )
            };
            let text = reply.to_string();
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    TokenServer {
        url: format!("http://{addr}/oauth/token"),
        requests,
        stop,
        thread: Some(thread),
    }
}

fn read_request(conn: &mut TcpStream) -> Option<Vec<u8>> {
    let mut reader = BufReader::new(conn);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; len.min(64 * 1024)];
    reader.read_exact(&mut body).ok()?;
    Some(body)
}

/// Child: TASKS concurrent refreshes of the stale tokens in `seen.json`.
#[test]
fn child_refresher() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    assert_eq!(role, "refresher");
    let home = std::env::var("CODEX_HOME").unwrap();
    let url = std::env::var("TOKEN_URL").unwrap();
    let seen_doc =
        AuthDocument::from_json_slice(&std::fs::read(Path::new(&home).join("seen.json")).unwrap())
            .unwrap();
    let seen = seen_doc.tokens.unwrap();
    let store = Arc::new(FileStore::new(CodexHome::new(&home)));
    let endpoint = TokenEndpoint::new(RefreshConfig::default().with_token_url(url)).unwrap();
    let refresher =
        CoordinatedRefresher::new(endpoint, store).with_lock_timeout(Duration::from_secs(30));
    // Start together: wait (bounded) for the parent's go signal.
    let go = Path::new(&home).join("go");
    let until = Instant::now() + Duration::from_secs(20);
    while !go.exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(2));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(TASKS)
        .enable_all()
        .build()
        .unwrap();
    let results = rt.block_on(async {
        let handles: Vec<_> = (0..TASKS)
            .map(|_| {
                let r = refresher.clone();
                let s = seen.clone();
                tokio::spawn(async move { r.refresh(&s).await })
            })
            .collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    });
    for r in results {
        match r {
            Ok(outcome) => {
                let kind = match &outcome {
                    RefreshOutcome::Refreshed(_) => "refreshed",
                    RefreshOutcome::AlreadyRefreshed(_) => "reused",
                    _ => "other",
                };
                println!("RESULT {kind} {}", outcome.tokens().refresh_token.expose());
            }
            Err(e) => println!("RESULT error {e}"),
        }
    }
}

#[test]
fn processes_and_threads_refresh_once_and_all_get_the_new_tokens() {
    if std::env::var_os(ROLE).is_some() {
        return;
    }
    let server = start_token_server();
    let dir = tempfile::tempdir().unwrap();
    let doc = AuthDocument::chatgpt(
        tokens("race@example.com", "acct-race", "rt-0"),
        Timestamp::now(),
    );
    FileStore::new(CodexHome::new(dir.path()))
        .save(&doc)
        .unwrap();
    std::fs::write(dir.path().join("seen.json"), doc.to_json_pretty()).unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "child_refresher",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(ROLE, "refresher")
                .env("CODEX_HOME", dir.path())
                .env("TOKEN_URL", &server.url)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(dir.path().join("go"), b"").unwrap();
    let mut lines = Vec::new();
    for child in children {
        // Bounded: each child waits at most 20 s for the go signal and 30 s for the lock.
        let (status, text) = common::wait_bounded(child, 90);
        assert!(status.success(), "{status}");
        lines.extend(
            text.split("RESULT ")
                .skip(1)
                .map(|l| l.lines().next().unwrap_or("").to_owned()),
        );
    }
    assert_eq!(lines.len(), PROCESSES * TASKS, "{lines:?}");
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        1,
        "exactly one token request; results {lines:?}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("refreshed ")).count(),
        1,
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| l.ends_with(" rt-1")), "{lines:?}");
    let stored = FileStore::new(CodexHome::new(dir.path()))
        .load()
        .unwrap()
        .unwrap();
    assert_eq!(stored.tokens.unwrap().refresh_token.expose(), "rt-1");
}

#[tokio::test]
async fn auth_core_refresher_persists_through_the_locked_store_and_refuses_to_clobber() {
    let server = start_token_server();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::new(CodexHome::new(dir.path())));
    let initial = tokens("pair@example.com", "acct-pair", "rt-0");
    store
        .save(&AuthDocument::chatgpt(initial.clone(), Timestamp::now()))
        .unwrap();
    let endpoint =
        TokenEndpoint::new(RefreshConfig::default().with_token_url(server.url.clone())).unwrap();
    let refresher = Refresher::with_endpoint(
        endpoint.clone(),
        Arc::new(LockedRefreshStore::new(store.clone())),
    );
    let fresh = refresher.refresh(&initial).await.unwrap();
    assert_eq!(fresh.refresh_token.expose(), "rt-1");
    assert_eq!(
        store
            .load()
            .unwrap()
            .unwrap()
            .tokens
            .unwrap()
            .refresh_token
            .expose(),
        "rt-1"
    );

    // Someone logs in with another account while a refresh of rt-1 runs: not overwritten.
    let other = tokens("other@example.com", "acct-other", "rt-other");
    store
        .save(&AuthDocument::chatgpt(other, Timestamp::now()))
        .unwrap();
    let refresher =
        Refresher::with_endpoint(endpoint, Arc::new(LockedRefreshStore::new(store.clone())));
    let err = refresher.refresh(&fresh).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("changed while the refresh was running"),
        "{err}"
    );
    assert_eq!(
        store
            .load()
            .unwrap()
            .unwrap()
            .tokens
            .unwrap()
            .refresh_token
            .expose(),
        "rt-other"
    );
}
