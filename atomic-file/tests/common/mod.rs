//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::io::Write as _;
use std::path::Path;

/// Prints the visible skip line a test that cannot run on this platform must leave
/// (straight to stderr, past the test harness's capture).
pub fn skip(test: &str, reason: &str) {
    let _ = writeln!(std::io::stderr(), "SKIP: {test}: {reason}");
}

/// The names in `dir`, sorted.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
