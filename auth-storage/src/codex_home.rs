//! The Codex home directory and the files the Codex CLI keeps in it.
//!
//! Facts (observed with Codex CLI 0.169.0 under `strace`, and in openai/codex
//! `codex-rs/login`):
//!
//! * credentials live in `auth.json`, mode 0600, written through a temporary `.auth-XXXXXX`
//!   file that is fsynced and renamed over `auth.json`;
//! * before saving, the CLI takes a blocking exclusive `flock` on **`auth.lock`** (created
//!   with mode 0666 minus umask, so usually 0644). It is the *commit* lock: it serializes
//!   whole load → decide → save sequences (logins, token refreshes) between processes;
//! * while holding it, the CLI takes an exclusive `flock` on **`auth.json.lock`** (mode 0600)
//!   by polling a non-blocking attempt every 10 ms. It guards the file replacement itself;
//! * both lock files are left in place (empty) and are used in file *and* keyring mode;
//! * reads (`codex login status`) take no lock — the rename makes them safe.
//!
//! [`CodexHome::lock_for_commit`] takes the two locks in the same order, so this crate and
//! the real CLI never interleave their writes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::{Result, StorageError};
use crate::lock::{DEFAULT_LOCK_TIMEOUT, FileLock};

/// File name of the credentials file inside a Codex home.
pub const AUTH_FILE: &str = "auth.json";
/// The commit lock the Codex CLI holds around every credential change.
pub const COMMIT_LOCK_FILE: &str = "auth.lock";
/// The lock the Codex CLI holds while replacing `auth.json`.
pub const FILE_LOCK_FILE: &str = "auth.json.lock";
/// Keyring service name used by the Codex CLI.
pub const KEYRING_SERVICE: &str = "Codex Auth";
/// Prefix of the temporary file the Codex CLI writes before renaming over `auth.json`.
pub(crate) const AUTH_TEMP_PREFIX: &str = ".auth-";

const COMMIT_LOCK_MODE: u32 = 0o644;
const FILE_LOCK_MODE: u32 = 0o600;

/// A Codex home directory (`$CODEX_HOME`, by default `~/.codex`).
///
/// ```
/// use auth_storage::CodexHome;
/// let home = CodexHome::new("/tmp/some-codex-home");
/// assert!(home.auth_file().ends_with("auth.json"));
/// assert!(home.keyring_account().starts_with("cli|"));
/// assert_eq!(home.keyring_account().len(), 4 + 16);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CodexHome {
    dir: PathBuf,
}

impl CodexHome {
    /// A Codex home at `dir` (it need not exist yet).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The Codex home the CLI would use: `$CODEX_HOME` if set and non-empty, else `.codex` in
    /// the user's home directory, found as the CLI finds it: on Unix `$HOME` (when set and
    /// non-empty) or else the user's entry in the password database; on Windows the user's
    /// profile folder as the shell knows it (`FOLDERID_Profile`, normally what
    /// `%USERPROFILE%` says — the CLI ignores `USERPROFILE` and `HOME` there, and so does
    /// this). `None` when neither that variable nor a home directory is known.
    ///
    /// ```
    /// // With CODEX_HOME unset this is <home>/.codex; either way it names a directory.
    /// if let Some(home) = auth_storage::CodexHome::from_env() {
    ///     assert!(home.auth_file().ends_with("auth.json"));
    /// }
    /// ```
    pub fn from_env() -> Option<Self> {
        if let Some(dir) = std::env::var_os("CODEX_HOME").filter(|v| !v.is_empty()) {
            return Some(Self::new(dir));
        }
        user_home().map(|home| Self::new(home.join(".codex")))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/auth.json`.
    pub fn auth_file(&self) -> PathBuf {
        self.dir.join(AUTH_FILE)
    }

    /// `<dir>/auth.lock`.
    pub fn commit_lock_file(&self) -> PathBuf {
        self.dir.join(COMMIT_LOCK_FILE)
    }

    /// `<dir>/auth.json.lock`. (When `auth.json` is a symlink, the Codex CLI — and
    /// [`lock_for_commit`](Self::lock_for_commit) — lock `<link target>.lock` instead, beside
    /// the file that is really written.)
    pub fn file_lock_file(&self) -> PathBuf {
        self.dir.join(FILE_LOCK_FILE)
    }

    /// The file lock the Codex CLI takes for this home: `<auth.json's final target>.lock`
    /// (observed with Codex CLI 0.169.0 on a symlinked `auth.json`), which is
    /// [`file_lock_file`](Self::file_lock_file) when `auth.json` is not a symlink.
    fn file_lock_target(&self) -> Result<PathBuf> {
        let auth = self.auth_file();
        let target = auth_core::regular_file::resolve_symlinks(&auth)?;
        if target == auth {
            return Ok(self.file_lock_file());
        }
        let mut lock = target.into_os_string();
        lock.push(".lock");
        Ok(PathBuf::from(lock))
    }

    /// `auth.json`, `auth.lock` and the file lock are each a regular file or missing
    /// (following symlinks); the error names the path as configured.
    pub(crate) fn check_files(&self) -> Result<()> {
        use auth_core::regular_file::ensure_regular_or_missing;
        ensure_regular_or_missing(&self.auth_file())?;
        ensure_regular_or_missing(&self.commit_lock_file())?;
        ensure_regular_or_missing(&self.file_lock_target()?)?;
        Ok(())
    }

    /// The keyring account the Codex CLI uses for this home: `cli|` followed by the first 16
    /// hex digits of SHA-256 of the canonical path (the path as given if it cannot be
    /// canonicalized, e.g. because it does not exist yet).
    pub fn keyring_account(&self) -> String {
        let canonical = self.dir.canonicalize().unwrap_or_else(|_| self.dir.clone());
        let digest = Sha256::digest(canonical.to_string_lossy().as_bytes());
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("cli|{hex}")
    }

    /// Take the Codex CLI's commit lock (`auth.lock`) and then its file lock
    /// (`auth.json.lock`), waiting at most `timeout` for each. Hold the returned guard for the
    /// whole load → decide → save sequence.
    pub fn lock_for_commit(&self, timeout: Duration) -> Result<CommitGuard> {
        // Refuse a home whose login or lock files are not regular files before creating
        // anything: a symlinked `auth.json` puts its file lock beside the link's target, and
        // that must never create `/dev/full.lock` or leave lock files behind a refusal.
        self.check_files()?;
        // A Codex home holds credentials: one we create is private (0700), parents too.
        auth_core::regular_file::create_private_dir_all(&self.dir)
            .map_err(|e| StorageError::io("create the directory", &self.dir, e))?;
        let commit = FileLock::acquire(&self.commit_lock_file(), COMMIT_LOCK_MODE, timeout)?;
        let file = FileLock::acquire(&self.file_lock_target()?, FILE_LOCK_MODE, timeout)?;
        Ok(CommitGuard {
            _file: file,
            _commit: commit,
        })
    }

    /// [`lock_for_commit`](Self::lock_for_commit) with [`DEFAULT_LOCK_TIMEOUT`].
    pub fn lock(&self) -> Result<CommitGuard> {
        self.lock_for_commit(DEFAULT_LOCK_TIMEOUT)
    }
}

/// Both Codex credential locks; released (inner first) when dropped.
#[derive(Debug)]
#[must_use = "the locks are released as soon as the guard is dropped"]
pub struct CommitGuard {
    // Field order is drop order: the file lock is released before the commit lock, the
    // reverse of acquisition, as the CLI does.
    _file: FileLock,
    _commit: FileLock,
}

/// The user's home directory by the rule the Codex CLI follows (the `dirs` crate's): see
/// [`CodexHome::from_env`].
pub(crate) fn user_home() -> Option<PathBuf> {
    #[cfg(windows)]
    {
        profile_folder::get()
    }
    #[cfg(not(windows))]
    {
        // std reads $HOME first and the password database when it is unset.
        std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(std::env::home_dir)
            .filter(|p| !p.as_os_str().is_empty())
    }
}

/// The user's profile folder from the shell (`SHGetKnownFolderPath(FOLDERID_Profile)`), the
/// directory the Codex CLI puts `.codex` in on Windows.
#[cfg(windows)]
#[allow(unsafe_code)]
mod profile_folder {
    use std::ffi::OsString;
    use std::os::windows::ffi::OsStringExt as _;
    use std::path::PathBuf;

    use windows_sys::Win32::System::Com::CoTaskMemFree;
    use windows_sys::Win32::UI::Shell::{FOLDERID_Profile, KF_FLAG_DEFAULT, SHGetKnownFolderPath};

    pub(super) fn get() -> Option<PathBuf> {
        let mut raw: windows_sys::core::PWSTR = std::ptr::null_mut();
        // SAFETY: the GUID and the out pointer are valid for the call; a null token means
        // the current user. On return `raw` is null or a buffer we must free.
        let hr = unsafe {
            SHGetKnownFolderPath(
                &FOLDERID_Profile,
                KF_FLAG_DEFAULT as u32,
                std::ptr::null_mut(),
                &mut raw,
            )
        };
        let path = (hr == 0 && !raw.is_null()).then(|| {
            // SAFETY: on success `raw` is a NUL-terminated UTF-16 string owned by us until
            // it is freed below; we read up to (not including) its terminator.
            let wide = unsafe {
                let len = (0..).take_while(|&i| *raw.add(i) != 0).count();
                std::slice::from_raw_parts(raw, len)
            };
            PathBuf::from(OsString::from_wide(wide))
        });
        // SAFETY: `raw` came from SHGetKnownFolderPath (which requires this even on
        // failure) and is freed exactly once; null is allowed.
        unsafe { CoTaskMemFree(raw.cast_const().cast()) };
        path.filter(|p| !p.as_os_str().is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyring_account_matches_codex_formula() {
        // sha256("/nonexistent/codex-home") computed independently:
        // printf %s /nonexistent/codex-home | sha256sum
        let home = CodexHome::new("/nonexistent/codex-home");
        let expected = {
            let d = Sha256::digest(b"/nonexistent/codex-home");
            format!("cli|{}", &format!("{d:x}")[..16])
        };
        assert_eq!(home.keyring_account(), expected);
    }

    #[cfg(unix)]
    #[test]
    fn lock_files_have_the_cli_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let home = CodexHome::new(dir.path());
        drop(home.lock().unwrap());
        let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(home.file_lock_file()), 0o600);
        // 0644 requested; a stricter umask may only remove bits.
        assert_eq!(mode(home.commit_lock_file()) & !0o644, 0);
    }
}
