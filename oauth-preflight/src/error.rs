//! The crate's error type.

use std::io;
use std::path::PathBuf;

use crate::escape::Escaped;

/// What went wrong while looking up port holders.
///
/// Display texts escape control and bidi characters in text that came from the OS or from
/// `lsof` (`\x1b`, `\n`), so an error cannot forge lines or terminal sequences.
///
/// [`free`](crate::free) never returns these: it folds them into
/// [`Outcome::Unknown`](crate::Outcome::Unknown) so the caller always has a message to show.
///
/// ```
/// let err = oauth_preflight::inspect("127.0.0.1:0".parse()?).unwrap_err();
/// assert!(matches!(err, oauth_preflight::Error::PortZero));
/// assert!(err.to_string().contains("1455"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Port 0 means "any port" to the OS; there is nothing to inspect.
    #[error("port 0 cannot be inspected or freed; pass the callback port (e.g. 1455)")]
    PortZero,
    /// A socket table could not be read.
    #[error("could not read the socket table {}: {source}", Escaped(&path.to_string_lossy()))]
    SocketTable {
        /// The file, e.g. `/proc/net/tcp6`.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A socket table line did not have the expected shape.
    #[error("line {line} of {} is not a socket row the kernel would write: {}", Escaped(&path.to_string_lossy()), Escaped(reason))]
    MalformedSocketTable {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        reason: String,
    },
    /// `lsof` could not be started.
    #[error("could not run `lsof` ({source}); install lsof to use the fallback lookup")]
    LsofSpawn {
        /// The underlying error.
        source: io::Error,
    },
    /// `lsof` ran and failed.
    #[error("`lsof` failed ({status}): {}", Escaped(stderr))]
    LsofFailed {
        /// Exit status as text.
        status: String,
        /// What lsof printed on stderr.
        stderr: String,
    },
    /// A platform lookup reported an error.
    #[error("the {method} lookup failed: {}", Escaped(message))]
    Platform {
        /// Which lookup.
        method: crate::LookupMethod,
        /// Its message.
        message: String,
    },
    /// Every lookup failed.
    #[error("could not find out who listens on port {port}: {}", Escaped(failures))]
    NoLookup {
        /// The port.
        port: u16,
        /// Each lookup's failure, `method: reason; …` (empty when none was available).
        failures: String,
    },
}
