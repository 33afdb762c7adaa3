//! The bounded retry of a rename or removal that Windows refuses while another process has
//! the file open (pure loop; the operation and the sleep are passed in).
//!
//! On Windows a file another process opened without `FILE_SHARE_DELETE` (an anti-virus
//! scanner, an indexer, an editor, the Codex CLI reading `auth.json`) cannot be renamed over
//! or deleted until that handle closes; such holders usually let go within milliseconds. On
//! Unix a rename or unlink never fails because of an open handle, so nothing is retried
//! there.
//!
//! What Windows reports for it (checked under Wine 8, `.ci/windows-tests`):
//!
//! | operation | the other handle | error |
//! |---|---|---|
//! | rename over the file (`MoveFileExW`, `std::fs::rename`) | any share mode, even with `FILE_SHARE_DELETE` | `ERROR_ACCESS_DENIED` (5) |
//! | delete the file | without `FILE_SHARE_DELETE` | `ERROR_SHARING_VIOLATION` (32) |
//! | delete the file | with `FILE_SHARE_DELETE` | succeeds (the name goes when the handle closes) |
//!
//! Wine 8 has no POSIX rename semantics. Windows 10 and later do: there the rename
//! (`std::fs::rename`, which asks for them) replaces a file whose holders opened it with
//! `FILE_SHARE_DELETE`, as Rust's standard library does by default, so only holders without
//! it are waited for. That is not checked here (Wine cannot run it).
//!
//! `ERROR_SHARING_VIOLATION` (32, "being used by another process") and
//! `ERROR_LOCK_VIOLATION` (33, a byte-range lock held by another process) are the codes
//! Windows uses for a file held by someone else; all three are treated as "in use" and
//! retried.

use std::io;
use std::time::Duration;

/// How often, and how patiently, a replacement or removal is retried while Windows reports
/// the file as in use by another process. Attempt `n` that fails is followed by a wait of
/// `backoff × n` (a linear backoff), so the whole retry waits at most
/// [`max_total_wait`](Self::max_total_wait). Unix never retries (it has no such failure).
///
/// ```
/// use atomic_file::InUseRetry;
/// use std::time::Duration;
/// let retry = InUseRetry::default();
/// assert_eq!(retry.attempts(), 10);
/// assert_eq!(retry.max_total_wait(), Duration::from_millis(900)); // 20 + 40 + … + 180 ms
/// assert_eq!(InUseRetry::none().attempts(), 1);
/// // Bounded whatever is asked for.
/// assert_eq!(InUseRetry::new(1_000_000, Duration::from_secs(60)).attempts(), InUseRetry::MAX_ATTEMPTS);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InUseRetry {
    attempts: u32,
    backoff: Duration,
}

impl InUseRetry {
    /// The most attempts [`new`](Self::new) accepts.
    pub const MAX_ATTEMPTS: u32 = 100;
    /// The largest backoff step [`new`](Self::new) accepts.
    pub const MAX_BACKOFF: Duration = Duration::from_secs(1);

    /// `attempts` tries in all (at least 1, at most [`MAX_ATTEMPTS`](Self::MAX_ATTEMPTS)),
    /// waiting `backoff × n` after the `n`-th failed one (`backoff` at most
    /// [`MAX_BACKOFF`](Self::MAX_BACKOFF)).
    ///
    /// ```
    /// let retry = atomic_file::InUseRetry::new(3, std::time::Duration::from_millis(5));
    /// assert_eq!(retry.max_total_wait(), std::time::Duration::from_millis(15)); // 5 + 10
    /// ```
    pub fn new(attempts: u32, backoff: Duration) -> Self {
        Self {
            attempts: attempts.clamp(1, Self::MAX_ATTEMPTS),
            backoff: backoff.min(Self::MAX_BACKOFF),
        }
    }

    /// One attempt, no retry.
    ///
    /// ```
    /// assert_eq!(atomic_file::InUseRetry::none().max_total_wait(), std::time::Duration::ZERO);
    /// ```
    pub fn none() -> Self {
        Self::new(1, Duration::ZERO)
    }

    /// How many tries in all.
    ///
    /// ```
    /// assert_eq!(atomic_file::InUseRetry::default().attempts(), 10);
    /// ```
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The backoff step: the wait after the `n`-th failed attempt is `backoff × n`.
    ///
    /// ```
    /// assert_eq!(atomic_file::InUseRetry::default().backoff(), std::time::Duration::from_millis(20));
    /// ```
    pub fn backoff(&self) -> Duration {
        self.backoff
    }

    /// The longest the retry sleeps in all (when every attempt fails).
    ///
    /// ```
    /// use std::time::Duration;
    /// assert_eq!(atomic_file::InUseRetry::new(4, Duration::from_millis(10)).max_total_wait(), Duration::from_millis(60));
    /// ```
    pub fn max_total_wait(&self) -> Duration {
        (1..self.attempts).map(|n| self.wait_after(n)).sum()
    }

    fn wait_after(&self, failed_attempts: u32) -> Duration {
        self.backoff * failed_attempts
    }
}

impl Default for InUseRetry {
    /// 10 attempts, 20 ms backoff step: at most 0.9 s of waiting, which outlasts the
    /// scanners and readers that hold a small file open for a moment, and gives up soon
    /// enough to tell a person whose editor keeps the file open.
    fn default() -> Self {
        Self::new(10, Duration::from_millis(20))
    }
}

/// Why [`retry_while_in_use`] gave up.
#[derive(Debug)]
pub(crate) enum RetryFailure {
    /// Every attempt found the file in use; the error of the last one.
    InUse { attempts: u32, source: io::Error },
    /// An error that waiting does not cure; not retried.
    Other(io::Error),
}

/// Whether `err` is what Windows reports for a file another process has open (see the
/// module docs). Pure, so it is tested on every platform; [`is_in_use`] applies it only on
/// Windows.
fn is_windows_in_use_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::PermissionDenied | io::ErrorKind::ResourceBusy
    ) || matches!(err.raw_os_error(), Some(5 | 32 | 33))
}

/// Whether `err`, from renaming over or deleting `path`, means "another process has the
/// file open" on this platform. Windows answers "access denied" for a read-only file too,
/// which waiting does not cure: that is not "in use".
pub(crate) fn is_in_use(err: &io::Error, path: &std::path::Path) -> bool {
    cfg!(windows) && is_windows_in_use_error(err) && !is_read_only(path)
}

/// Whether `path` has the read-only attribute (Windows) or no write bit (Unix).
pub(crate) fn is_read_only(path: &std::path::Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.permissions().readonly())
}

/// Runs `op` until it succeeds, fails with an error `in_use` does not accept, or has been
/// tried `retry.attempts()` times, sleeping with `sleep` in between. `op` gets its input back
/// with its error (e.g. the temporary file to rename; dropping it on the final failure
/// removes it). Returns how many attempts it took.
pub(crate) fn retry_while_in_use<T>(
    mut item: T,
    retry: InUseRetry,
    in_use: impl Fn(&io::Error) -> bool,
    mut op: impl FnMut(T) -> Result<(), (T, io::Error)>,
    mut sleep: impl FnMut(Duration),
) -> Result<u32, RetryFailure> {
    let mut attempt = 1;
    loop {
        match op(item) {
            Ok(()) => return Ok(attempt),
            Err((_, source)) if !in_use(&source) => return Err(RetryFailure::Other(source)),
            Err((_, source)) if attempt >= retry.attempts => {
                return Err(RetryFailure::InUse {
                    attempts: attempt,
                    source,
                });
            }
            Err((back, _)) => {
                item = back;
                sleep(retry.wait_after(attempt));
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_use_error() -> io::Error {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            "Access is denied. (os error 5)",
        )
    }

    #[test]
    fn an_in_use_failure_is_retried_until_it_succeeds_with_a_growing_wait() {
        let mut calls = 0;
        let mut slept = Vec::new();
        let attempts = retry_while_in_use(
            "temp",
            InUseRetry::default(),
            |e| e.kind() == io::ErrorKind::PermissionDenied,
            |t| {
                calls += 1;
                if calls < 4 {
                    Err((t, in_use_error()))
                } else {
                    Ok(())
                }
            },
            |d| slept.push(d),
        )
        .unwrap();
        assert_eq!((attempts, calls), (4, 4));
        let ms = |n| Duration::from_millis(n);
        assert_eq!(slept, [ms(20), ms(40), ms(60)]);
    }

    #[test]
    fn giving_up_is_bounded_and_keeps_the_last_cause() {
        let mut calls = 0;
        let mut slept = Duration::ZERO;
        let retry = InUseRetry::new(4, Duration::from_millis(10));
        let failure = retry_while_in_use(
            (),
            retry,
            |_| true,
            |()| {
                calls += 1;
                Err(((), io::Error::other(format!("attempt {calls}"))))
            },
            |d| slept += d,
        )
        .unwrap_err();
        assert_eq!(calls, 4, "bounded");
        assert_eq!(slept, retry.max_total_wait());
        match failure {
            RetryFailure::InUse { attempts, source } => {
                assert_eq!(attempts, 4);
                assert_eq!(source.to_string(), "attempt 4");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_lasting_failure_is_not_retried() {
        let mut calls = 0;
        let failure = retry_while_in_use(
            (),
            InUseRetry::default(),
            |_| false,
            |()| {
                calls += 1;
                Err(((), io::Error::other("read-only file system")))
            },
            |_| panic!("no wait for an error that waiting does not cure"),
        )
        .unwrap_err();
        assert_eq!(calls, 1);
        assert!(
            matches!(failure, RetryFailure::Other(e) if e.to_string() == "read-only file system")
        );
    }

    #[test]
    fn none_tries_once() {
        let mut calls = 0;
        let failure = retry_while_in_use(
            (),
            InUseRetry::none(),
            |_| true,
            |()| {
                calls += 1;
                Err(((), in_use_error()))
            },
            |_| panic!("no wait"),
        )
        .unwrap_err();
        assert_eq!(calls, 1);
        assert!(matches!(failure, RetryFailure::InUse { attempts: 1, .. }));
    }

    #[test]
    fn what_counts_as_in_use() {
        for code in [5, 32, 33] {
            assert!(is_windows_in_use_error(&io::Error::from_raw_os_error(code)));
        }
        assert!(is_windows_in_use_error(&io::Error::from(
            io::ErrorKind::PermissionDenied
        )));
        assert!(!is_windows_in_use_error(&io::Error::from(
            io::ErrorKind::NotFound
        )));
        assert!(!is_windows_in_use_error(&io::Error::other("disk full")));
        // Only Windows has the failure at all, and a read-only file is not "in use".
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        assert_eq!(is_in_use(&denied, &path), cfg!(windows));
        let mut permissions = std::fs::metadata(&path).unwrap().permissions();
        permissions.set_readonly(true);
        std::fs::set_permissions(&path, permissions).unwrap();
        assert!(!is_in_use(&denied, &path));
    }

    proptest::proptest! {
        #[test]
        fn the_bounds_hold_for_any_request(attempts in proptest::prelude::any::<u32>(), backoff_ms in 0u64..1_000_000) {
            let retry = InUseRetry::new(attempts, Duration::from_millis(backoff_ms));
            proptest::prop_assert!((1..=InUseRetry::MAX_ATTEMPTS).contains(&retry.attempts()));
            proptest::prop_assert!(retry.backoff() <= InUseRetry::MAX_BACKOFF);
            let mut calls = 0u32;
            let mut slept = Duration::ZERO;
            let _ = retry_while_in_use((), retry, |_| true, |()| { calls += 1; Err(((), in_use_error())) }, |d| slept += d);
            proptest::prop_assert_eq!(calls, retry.attempts());
            proptest::prop_assert_eq!(slept, retry.max_total_wait());
        }
    }
}
