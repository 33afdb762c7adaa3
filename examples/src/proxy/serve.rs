//! Accept loop shared by the proxy and the mock upstream: HTTP/1.1 on a bound listener,
//! graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use super::BoxBody;

/// Serves HTTP/1.1 on `listener` with `handle` until `shutdown` resolves, then stops
/// accepting and lets open exchanges (including streams) finish for up to `grace`.
pub async fn serve_http1<F, Fut>(
    listener: TcpListener,
    handle: F,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<BoxBody>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(err) => {
                        // e.g. out of file descriptors: back off instead of spinning.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let handle = handle.clone();
                let service = service_fn(move |req| {
                    let handle = handle.clone();
                    async move { Ok::<_, Infallible>(handle(req).await) }
                });
                let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(err) = conn.await {
                        tracing::debug!(error = %err, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "open connections did not finish in time");
        }
    }
}

/// Resolves when the program is asked to stop: Ctrl-C, or SIGTERM, on Unix; on Windows
/// Ctrl-C, Ctrl-Break, or the console closing, the user logging off or the system shutting
/// down (Windows then lets a console program run a few more seconds before it kills it —
/// Tokio keeps the process alive for that long — enough to restore `config.toml`).
///
/// Every handler is installed when this is called, not when the future is first polled:
/// call it before announcing readiness, so a signal sent right after the announcement is
/// caught instead of killing the process with the config still rewritten. A handler that
/// cannot be installed is left out. Call it from within a Tokio runtime (signal handlers
/// need its driver).
pub fn shutdown_signal() -> impl Future<Output = ()> + Send {
    #[cfg(unix)]
    let (interrupt, terminate) = {
        use tokio::signal::unix::{SignalKind, signal};
        let on = |kind| signal(kind).ok().map(|mut s| async move { s.recv().await });
        (on(SignalKind::interrupt()), on(SignalKind::terminate()))
    };
    #[cfg(windows)]
    let (ctrl_c, ctrl_break, close, logoff, shutdown) = {
        use tokio::signal::windows;
        (
            windows::ctrl_c()
                .ok()
                .map(|mut s| async move { s.recv().await }),
            windows::ctrl_break()
                .ok()
                .map(|mut s| async move { s.recv().await }),
            windows::ctrl_close()
                .ok()
                .map(|mut s| async move { s.recv().await }),
            windows::ctrl_logoff()
                .ok()
                .map(|mut s| async move { s.recv().await }),
            windows::ctrl_shutdown()
                .ok()
                .map(|mut s| async move { s.recv().await }),
        )
    };
    async move {
        #[cfg(unix)]
        tokio::select! {
            _ = or_never(interrupt) => {}
            _ = or_never(terminate) => {}
        }
        #[cfg(windows)]
        tokio::select! {
            _ = or_never(ctrl_c) => {}
            _ = or_never(ctrl_break) => {}
            _ = or_never(close) => {}
            _ = or_never(logoff) => {}
            _ = or_never(shutdown) => {}
        }
        #[cfg(not(any(unix, windows)))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// `future`'s output, or never when there is no future (its handler could not be installed).
#[cfg(any(unix, windows))]
async fn or_never<F: Future>(future: Option<F>) -> F::Output {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}
