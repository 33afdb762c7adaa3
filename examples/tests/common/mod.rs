//! Helpers shared by the examples' integration tests.
#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The real Codex CLI: `CODEX_BIN`, else the workspace's npm install, else `codex` on PATH.
pub fn codex_bin() -> Option<PathBuf> {
    find_codex().ok()
}

/// [`codex_bin`], printing a visible SKIP line for `test` (with the reason) when there is
/// none to run.
pub fn codex_bin_or_skip(test: &str) -> Option<PathBuf> {
    find_codex().map_err(|reason| skip(test, &reason)).ok()
}

/// [`codex_bin_or_skip`] for a test that runs `codex exec`: also `None` (after a SKIP line)
/// where `codex exec` cannot run at all. The Windows CLI 0.169 under Wine 8 stops before it
/// reads any configuration ("failed to initialize in-process app-server client: Lock
/// violation (os error 33)", in a home holding only a config of its own), so on Windows this
/// is probed once, in such a home with a loopback provider; elsewhere the test runs it.
pub fn codex_exec_or_skip(test: &str) -> Option<PathBuf> {
    static BLOCKED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let bin = codex_bin_or_skip(test)?;
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
        let mut cmd = std::process::Command::new(&bin);
        cmd.args(["exec", "--skip-git-repo-check", "probe"])
            .current_dir(home.path())
            .env("CODEX_HOME", home.path())
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL");
        let run = run_bounded(cmd, Duration::from_secs(60));
        (run.stdout + &run.stderr)
            .contains("(os error 33)")
            .then(|| {
                "`codex exec` stops here before reading any configuration (Lock violation, os \
             error 33: the Windows CLI under Wine)"
                    .to_owned()
            })
    });
    match blocked {
        Some(reason) => {
            skip(test, reason);
            None
        }
        None => Some(bin),
    }
}

/// The Codex CLI this platform can run, or why there is none. On Windows only a Windows
/// program counts: `CODEX_BIN` naming a `.exe`, or `codex.exe` on PATH (the workspace's npm
/// install holds the Linux binary, which a Windows process cannot start).
fn find_codex() -> Result<PathBuf, String> {
    let windows = cfg!(windows);
    if let Some(bin) = std::env::var_os("CODEX_BIN")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
    {
        let is_exe = bin
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("exe"));
        if windows && !is_exe {
            return Err(format!(
                "CODEX_BIN ({}) is not a Windows program; set it to a Windows codex.exe",
                bin.display()
            ));
        }
        return Ok(bin);
    }
    if !windows {
        let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(
            "../.codex-cli/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex",
        );
        if local.is_file() {
            return Ok(local);
        }
    }
    let name = format!("codex{}", std::env::consts::EXE_SUFFIX);
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(&name))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| {
            if windows {
                "no Windows Codex CLI (set CODEX_BIN to a Windows codex.exe)".to_owned()
            } else {
                "no Codex CLI (set CODEX_BIN or run .ci/run)".to_owned()
            }
        })
}

/// Prints a visible SKIP line (bypassing libtest's capture).
pub fn skip(test: &str, reason: &str) {
    let _ = writeln!(std::io::stderr(), "SKIP: {test}: {reason}");
}

/// A built example program (`target/<profile>/examples/<name>`, `<name>.exe` on Windows),
/// next to the test binary's `deps` directory. Plain `cargo test` builds the examples (also
/// `cargo test --no-run --target …`); `cargo test --test …` may not.
pub fn example(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    let path = exe.parent()?.parent()?.join("examples").join(file);
    path.is_file().then_some(path)
}

/// [`example`], printing a visible SKIP line for `test` when the program is not built.
pub fn example_or_skip(name: &str, test: &str) -> Option<PathBuf> {
    let found = example(name);
    if found.is_none() {
        skip(
            test,
            &format!(
                "example binary {name} not built (run `cargo build --workspace --all-features --examples`)"
            ),
        );
    }
    found
}

/// What a finished child printed, and its exit code (`None` when a signal ended it).
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to completion with stdin closed, draining stdout and stderr on threads (so a
/// chatty child never blocks on a full pipe), and kills it and panics after `limit`.
pub fn run_bounded(mut cmd: std::process::Command, limit: std::time::Duration) -> Run {
    use std::io::Read;
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        code,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// Starts the built `rotation-proxy` program on an ephemeral loopback port over `pool_dir`
/// and `codex_home`, forwarding to `mock` (upstream and token endpoint), with debug logs and
/// both output streams piped. `token` is the wrapper token in `ROTATION_PROXY_TOKEN`; `None`
/// removes the variable so the program generates one. Killed when dropped.
pub fn spawn_proxy(
    binary: &std::path::Path,
    pool_dir: &std::path::Path,
    codex_home: &std::path::Path,
    mock: &examples::mock_upstream::MockUpstream,
    token: Option<&str>,
) -> tokio::process::Child {
    spawn_proxy_with(binary, pool_dir, codex_home, mock, token, &[])
}

/// [`spawn_proxy`] with `extra` arguments after the usual ones (e.g. `--body-budget N`).
pub fn spawn_proxy_with(
    binary: &std::path::Path,
    pool_dir: &std::path::Path,
    codex_home: &std::path::Path,
    mock: &examples::mock_upstream::MockUpstream,
    token: Option<&str>,
    extra: &[&str],
) -> tokio::process::Child {
    use examples::proxy::TOKEN_ENV;
    use std::process::Stdio;

    let mut cmd = tokio::process::Command::new(binary);
    cmd.args(["--listen", "127.0.0.1:0", "--pool-dir"])
        .arg(pool_dir)
        .arg("--codex-home")
        .arg(codex_home)
        .args([
            "--upstream",
            &mock.base_url(),
            "--token-url",
            &mock.token_url(),
        ])
        .args(extra);
    match token {
        Some(token) => cmd.env(TOKEN_ENV, token),
        None => cmd.env_remove(TOKEN_ENV),
    };
    cmd.env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    own_process_group(&mut cmd);
    cmd.spawn().unwrap()
}

/// On Windows, starts the program in a process group of its own, so that [`stop`] can send
/// it a console event without sending it to every process on the console (the tests too).
/// Console events reach only processes on the sender's console: a test process without one
/// (run from a pipe, as under CI) first gets one, which the program then shares. Nothing to
/// do on Unix, where a signal goes to one process.
pub fn own_process_group(cmd: &mut tokio::process::Command) {
    #[cfg(windows)]
    {
        // SAFETY: no arguments; fails harmlessly when this process has a console already.
        #[allow(unsafe_code)]
        unsafe {
            windows_sys::Win32::System::Console::AllocConsole()
        };
        cmd.creation_flags(windows_sys::Win32::System::Threading::CREATE_NEW_PROCESS_GROUP);
    }
    #[cfg(not(windows))]
    let _ = cmd;
}

/// How a user asks a running program to stop.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// SIGTERM (a service manager, `kill`).
    Terminate,
    /// Ctrl-C in its terminal (SIGINT).
    Interrupt,
}

/// Asks `child` to stop as a user would; `false`, after a SKIP line for `test`, where that
/// cannot be done here (the caller then checks no more than the program's work so far and
/// lets the child be killed). On Unix the signal `how` names; on Windows both are
/// Ctrl-Break, sent to the child's own process group (see [`own_process_group`]): Windows
/// has no signals, and a Ctrl-C cannot be sent to one process group. Wine 8's console
/// refuses to send it (the program's handler for it is in place all the same).
#[must_use]
pub fn stop_or_skip(child: &tokio::process::Child, how: Stop, test: &str) -> bool {
    let pid = child.id().expect("the child is still running");
    #[cfg(unix)]
    {
        let _ = test;
        let signal = match how {
            Stop::Terminate => "-TERM",
            Stop::Interrupt => "-INT",
        };
        let sent = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill {signal} {pid}");
        true
    }
    #[cfg(windows)]
    {
        let _ = how;
        use windows_sys::Win32::System::Console::{CTRL_BREAK_EVENT, GenerateConsoleCtrlEvent};
        // SAFETY: a plain call with two integers; it reads and writes no memory of ours.
        #[allow(unsafe_code)]
        let sent = unsafe { GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, pid) };
        if sent == 0 {
            skip(
                test,
                &format!(
                    "Ctrl-Break cannot be sent to a program here ({}; Wine's console), so \
                     its graceful stop is not checked",
                    std::io::Error::last_os_error()
                ),
            );
        }
        sent != 0
    }
}

/// Sends `head` (a request line and headers, without the final blank line) plus
/// `connection: close` over a raw socket — no client library normalizes the target — and
/// returns the status code and the whole answer (bounded: 10 s).
pub async fn raw_exchange(addr: std::net::SocketAddr, head: &str) -> (u16, String) {
    raw_exchange_with_body(addr, head, b"").await
}

/// [`raw_exchange`] with a body (sent with its `content-length`, unless `head` has one).
pub async fn raw_exchange_with_body(
    addr: std::net::SocketAddr,
    head: &str,
    body: &[u8],
) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let length = if head.contains("content-length:") {
        String::new()
    } else {
        format!("content-length: {}\r\n", body.len())
    };
    let request = [
        format!("{head}\r\nconnection: close\r\n{length}\r\n").as_bytes(),
        body,
    ]
    .concat();
    // ok: the proxy may answer (400) and close before reading a body.
    let _ = stream.write_all(&request).await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // Until the proxy closes (or resets) the connection; bounded by the timeout and count.
    for _ in 0..10_000 {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("an answer within 10 s")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let code = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (code, text)
}

/// How [`upload`] fills its JSON body of a given length.
#[derive(Clone, Copy, Debug)]
pub enum Shape {
    /// `{"model":"gpt-5","input":"upload","stream":false}` padded with spaces.
    Padded,
    /// `{"input":"upload","stream":false,"model":"\nAAAA…"}`: one huge `model` string with an
    /// escape up front (a naive parser copies it whole).
    LongModel,
    /// `{"input":"upload","stream":false,"\nAAAA…":0}`: one huge escaped key.
    LongKey,
}

impl Shape {
    fn parts(self) -> (&'static [u8], u8, &'static [u8]) {
        match self {
            Shape::Padded => (
                br#"{"model":"gpt-5","input":"upload","stream":false}"#,
                b' ',
                b"",
            ),
            Shape::LongModel => (
                br#"{"input":"upload","stream":false,"model":"\n"#,
                b'A',
                br#""}"#,
            ),
            Shape::LongKey => (br#"{"input":"upload","stream":false,"\n"#, b'A', br#"":0}"#),
        }
    }
}

/// Uploads a JSON body of `len` bytes (at least its fixed parts) shaped by `shape` to
/// `/v1/responses` over a raw socket, with `content-length` or chunked, generating it piece
/// by piece and reading the answer while it writes (the proxy may answer before the body is
/// sent). Returns the status and the answer's head (and body, when it has a length).
pub async fn upload(
    addr: std::net::SocketAddr,
    token: &str,
    len: usize,
    chunked: bool,
    shape: Shape,
) -> (u16, String) {
    let (prefix, filler, suffix) = shape.parts();
    let len = len.max(prefix.len() + suffix.len());
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let framing = if chunked {
        "transfer-encoding: chunked".to_owned()
    } else {
        format!("content-length: {len}")
    };
    let head = format!(
        "POST /v1/responses HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\n{framing}\r\n\r\n"
    );
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        write.write_all(head.as_bytes()).await?;
        // Generated piece by piece: sixteen 60 MB uploads must not cost the test 1 GB.
        let fill = vec![filler; 256 * 1024];
        let mut left = len - prefix.len() - suffix.len();
        write_piece(&mut write, prefix, chunked).await?;
        while left > 0 {
            let n = left.min(fill.len());
            left -= n;
            write_piece(&mut write, &fill[..n], chunked).await?;
        }
        write_piece(&mut write, suffix, chunked).await?;
        if chunked {
            write.write_all(b"0\r\n\r\n").await?;
        }
        Ok::<_, std::io::Error>(write)
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    // Until the head and (for small answers) the JSON body are in; bounded in time.
    for _ in 0..10_000 {
        match tokio::time::timeout(Duration::from_secs(60), read.read(&mut buf))
            .await
            .expect("an answer within 60 s")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let want = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if want.is_some_and(|w| rest.len() >= w) {
                break;
            }
        }
    }
    writer.abort();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let code = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (code, text)
}

async fn write_piece(
    write: &mut tokio::net::tcp::OwnedWriteHalf,
    piece: &[u8],
    chunked: bool,
) -> std::io::Result<()> {
    if piece.is_empty() {
        return Ok(());
    }
    if chunked {
        write
            .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
            .await?;
        write.write_all(piece).await?;
        write.write_all(b"\r\n").await
    } else {
        write.write_all(piece).await
    }
}

/// Asserts that `text` (a program's stdout or stderr) holds no raw control, bidi or
/// line-separator character besides the newlines between its lines.
pub fn assert_terminal_safe(what: &str, text: &str) {
    let raw: Vec<char> = text
        .chars()
        .filter(|&c| c != '\n' && auth_core::terminal::is_unsafe_char(c))
        .collect();
    assert!(
        raw.is_empty(),
        "{what}: raw {raw:?} reach the terminal:\n{text}"
    );
}
