//! `accounts add`: sign in with a browser and store the new account in the pool.
//!
//! 1. Port preflight with `oauth-preflight`: if a stale Codex login helper holds the
//!    callback port it is stopped; any other holder is named and nothing is killed.
//! 2. An `auth_core::login` session: the authorize URL is printed (and opened in a
//!    browser unless `--no-browser`), the loopback callback server waits.
//! 3. The tokens go into the pool (`auth_storage::PoolStore`, a locked atomic
//!    read-modify-write); the same login added twice updates its entry.
//!
//! Diagnostics go to `login.log` in the pool directory (no tokens, codes or bodies).
//!
//! The pool is written once, last, in one locked atomic update: a failure anywhere before
//! it (a refused or expired code, a failed token exchange, a timeout) or in it (a pool that
//! cannot be written) leaves `pool.json` byte for byte as it was. What a failed `add` may
//! leave behind is diagnostic only: the pool directory with `login.log` (and `pool.lock`)
//! in it, and — the one effect outside our files — a stale Codex login helper stopped by
//! the preflight in step 1.

use auth_core::terminal::escape_control;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use auth_core::Timestamp;
use auth_core::login::{
    CALLBACK_PATH, DEFAULT_LISTEN_ADDR, LoginError, LoginOptions, LoginSession,
};
use auth_storage::pool::{Account, Upsert};
use auth_storage::{PoolStore, StorageError};

/// What `accounts add` was asked to do.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AddOptions {
    /// The pool directory (default: `PoolStore::open_default`).
    pub pool_dir: Option<PathBuf>,
    /// Print the URL only; do not try to open a browser.
    pub no_browser: bool,
    /// Another issuer (tests point this at a loopback mock). Default: the Codex CLI's.
    pub issuer: Option<String>,
    /// Another callback address (tests use port 0). Default `127.0.0.1:1455`.
    pub listen: Option<SocketAddr>,
    /// How long to wait for the browser. Default 10 minutes.
    pub timeout: Duration,
}

impl Default for AddOptions {
    fn default() -> Self {
        Self {
            pool_dir: None,
            no_browser: false,
            issuer: None,
            listen: None,
            timeout: Duration::from_secs(600),
        }
    }
}

impl AddOptions {
    /// Options for the pool in `pool_dir`, everything else default.
    pub fn for_pool(pool_dir: impl Into<PathBuf>) -> Self {
        Self {
            pool_dir: Some(pool_dir.into()),
            ..Self::default()
        }
    }

    /// Print the URL only (`--no-browser`).
    pub fn no_browser(mut self, no_browser: bool) -> Self {
        self.no_browser = no_browser;
        self
    }

    /// Another issuer (`None`: the Codex CLI's).
    pub fn issuer(mut self, issuer: Option<String>) -> Self {
        self.issuer = issuer;
        self
    }

    /// Another callback address (`None`: `127.0.0.1:1455`).
    pub fn listen(mut self, listen: Option<SocketAddr>) -> Self {
        self.listen = listen;
        self
    }

    /// Another wait for the browser.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// The account that was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Added {
    /// Its number in `accounts list` (from 1).
    pub number: usize,
    /// False for a new entry, true when the same login was already in the pool.
    pub updated: bool,
    /// The email, masked.
    pub masked_email: String,
    /// The ChatGPT plan, if the id token says.
    pub plan: Option<String>,
}

impl std::fmt::Display for Added {
    /// `added #2 al***@example.com (plus)`, as `accounts import` prints it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} #{} {} ({})",
            if self.updated { "updated" } else { "added" },
            self.number,
            escape_control(&self.masked_email),
            escape_control(self.plan.as_deref().unwrap_or("unknown plan"))
        )
    }
}

/// Why `accounts add` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AddError {
    /// The callback port is held by something we will not stop.
    #[error("{0}")]
    PortHeld(String),
    /// The sign-in failed.
    #[error(transparent)]
    Login(#[from] LoginError),
    /// The pool could not be read or written.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A blocking task did not finish (the runtime is shutting down).
    #[error("a background task ended without a result")]
    Aborted,
}

fn pool_store(dir: Option<PathBuf>) -> Result<PoolStore, StorageError> {
    match dir {
        Some(dir) => Ok(PoolStore::new(dir)),
        None => PoolStore::open_default(),
    }
}

/// Runs the login and stores the account; `present` is called once with the authorize
/// URL (print it, open a browser).
///
/// # Errors
/// [`AddError`]: a held port, a failed sign-in, or a pool that cannot be written.
pub async fn add_account_with(
    options: &AddOptions,
    present: impl FnOnce(&str),
) -> Result<Added, AddError> {
    add_account_presenting(options, |url, _| present(url)).await
}

/// [`add_account_with`], but `present` also gets the address the callback server listens
/// on (useful when `listen` asked for port 0).
///
/// # Errors
/// As [`add_account_with`].
pub async fn add_account_presenting(
    options: &AddOptions,
    present: impl FnOnce(&str, SocketAddr),
) -> Result<Added, AddError> {
    let pool = pool_store(options.pool_dir.clone())?;
    let listen = options.listen.unwrap_or(DEFAULT_LISTEN_ADDR);
    if listen.port() != 0 {
        let outcome = tokio::task::spawn_blocking(move || {
            oauth_preflight::free(listen, &oauth_preflight::FreePolicy::default())
        })
        .await
        .map_err(|_| AddError::Aborted)?;
        if !outcome.is_ready() {
            // Process names and command lines are the holder's own text.
            return Err(AddError::PortHeld(
                escape_control(&outcome.to_string()).to_string(),
            ));
        }
        if matches!(outcome, oauth_preflight::Outcome::Freed { .. }) {
            eprintln!("{}", escape_control(&outcome.to_string()));
        }
    }

    let mut login = LoginOptions::default()
        .with_listen_addr(listen)
        .with_timeout(options.timeout)
        .with_log_dir(pool.dir());
    if let Some(issuer) = &options.issuer {
        login = login.with_issuer(issuer.clone());
    }
    let session = LoginSession::start(login).await?;
    present(session.authorize_url(), session.local_addr());
    let success = session.wait().await?;

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let account = Account::from_login(success.tokens, Some(Timestamp::now()), now);
    let masked_email = account.masked_email();
    let plan = account.plan.clone();
    let upsert = tokio::task::spawn_blocking(move || pool.update(|p| p.upsert(account)))
        .await
        .map_err(|_| AddError::Aborted)??;
    let (index, updated) = match upsert {
        Upsert::Added(i) => (i, false),
        Upsert::Updated(i) => (i, true),
        // `Upsert` is non-exhaustive; a future variant still names an entry.
        _ => (0, true),
    };
    Ok(Added {
        number: index + 1,
        updated,
        masked_email,
        plan,
    })
}

/// [`add_account_with`] for the command line: prints the URL and, unless
/// `no_browser`, tries to open it in the default browser.
///
/// # Errors
/// As [`add_account_with`].
pub async fn add_account(options: &AddOptions) -> Result<Added, AddError> {
    let no_browser = options.no_browser;
    add_account_presenting(options, |url, callback| {
        println!("Sign in with your ChatGPT account in a browser:\n\n  {url}\n");
        if !no_browser && !open_browser(url) {
            println!("(could not start a browser; open the link above yourself)");
        }
        println!(
            "Waiting for the browser to come back to http://{callback}{CALLBACK_PATH} \
             (Ctrl-C to stop)..."
        );
    })
    .await
}

/// [`add_account`] on a fresh tokio runtime, for synchronous `main`s.
///
/// # Errors
/// As [`add_account_with`], or [`AddError::Aborted`] if no runtime can be started.
pub fn add_account_blocking(options: &AddOptions) -> Result<Added, AddError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|_| AddError::Aborted)?;
    runtime.block_on(add_account(options))
}

/// Starts the platform's URL opener; true if it could be started.
fn open_browser(url: &str) -> bool {
    let mut command = if cfg!(target_os = "macos") {
        std::process::Command::new("open")
    } else if cfg!(windows) {
        let mut c = std::process::Command::new("rundll32");
        c.arg("url.dll,FileProtocolHandler");
        c
    } else {
        std::process::Command::new("xdg-open")
    };
    command
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use auth_core::login::mock_issuer::{AuthorizeReply, MockIssuer, TokenReply};

    fn options(issuer: &MockIssuer, dir: &std::path::Path) -> AddOptions {
        AddOptions::for_pool(dir)
            .no_browser(true)
            .issuer(Some(issuer.url()))
            .listen(Some("127.0.0.1:0".parse().unwrap()))
            .timeout(Duration::from_secs(20))
    }

    /// The "browser": follows the authorize URL to the callback.
    fn browse(url: &str) {
        let url = url.to_owned();
        tokio::spawn(async move {
            let _ = reqwest::get(url).await;
        });
    }

    #[tokio::test]
    async fn adds_then_updates_the_same_login_in_the_pool() {
        let issuer = MockIssuer::start(TokenReply::tokens_for("alice@example.com"))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let added = add_account_with(&options(&issuer, dir.path()), browse)
            .await
            .unwrap();
        assert_eq!(added.number, 1);
        assert!(!added.updated);
        // Masked as the pool masks it, never in full.
        let masked = auth_core::redact::mask_email("alice@example.com");
        assert_eq!(added.masked_email, masked);
        assert!(!masked.contains("alice@"));
        assert_eq!(added.plan.as_deref(), Some("plus"));
        assert_eq!(added.to_string(), format!("added #1 {masked} (plus)"));

        let pool = PoolStore::new(dir.path()).load().unwrap().pool;
        assert_eq!(pool.accounts.len(), 1);
        let account = &pool.accounts[0];
        assert_eq!(account.email.as_deref(), Some("alice@example.com"));
        assert_eq!(account.tokens.access_token.expose(), "mock-access-token");
        assert_eq!(
            account.account_id.as_deref(),
            Some(auth_core::login::mock_issuer::MOCK_ACCOUNT_ID)
        );

        // The same login again refreshes its entry instead of adding a second one.
        let again = add_account_with(&options(&issuer, dir.path()), browse)
            .await
            .unwrap();
        assert_eq!((again.number, again.updated), (1, true));
        assert_eq!(
            PoolStore::new(dir.path())
                .load()
                .unwrap()
                .pool
                .accounts
                .len(),
            1
        );

        // Diagnostics landed beside the pool, without secrets.
        let log = std::fs::read_to_string(dir.path().join("login.log")).unwrap();
        assert!(log.contains("token_exchange_succeeded"), "{log}");
        for secret in [
            "mock-access-token",
            "mock-refresh-token",
            "alice@example.com",
        ] {
            assert!(!log.contains(secret), "{log}");
        }
    }

    #[tokio::test]
    async fn a_failed_sign_in_leaves_the_pool_untouched() {
        let issuer = MockIssuer::start(TokenReply::tokens_for("bob@example.com"))
            .await
            .unwrap();
        issuer.set_authorize_reply(AuthorizeReply::Error {
            error: "access_denied".into(),
            description: "no".into(),
        });
        let dir = tempfile::tempdir().unwrap();
        let err = add_account_with(&options(&issuer, dir.path()), browse)
            .await
            .unwrap_err();
        assert!(
            matches!(err, AddError::Login(LoginError::Issuer { .. })),
            "{err}"
        );
        assert!(
            PoolStore::new(dir.path())
                .load()
                .unwrap()
                .pool
                .accounts
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_port_held_by_another_program_is_named_and_left_alone() {
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let issuer = MockIssuer::start(TokenReply::tokens_for("c@example.com"))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(&issuer, dir.path());
        opts.listen = Some(holder.local_addr().unwrap());
        let err = add_account_with(&opts, browse).await.unwrap_err();
        let AddError::PortHeld(message) = &err else {
            panic!("expected PortHeld, got {err:?}");
        };
        assert!(
            message.contains(&holder.local_addr().unwrap().port().to_string()),
            "{message}"
        );
        // Still ours: nothing was killed.
        assert!(holder.local_addr().is_ok());
    }
}
