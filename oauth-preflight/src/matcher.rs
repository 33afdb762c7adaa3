//! Deciding whether a port holder is a login helper we may stop.
//!
//! The decision looks at the program's identity only: the basename of the executable (of
//! `argv[0]` where the executable is unknown), and for an interpreter such as `node`, the
//! script it runs, read the way the interpreter reads its command line (see `argv.rs`).
//! Words elsewhere in the command line (`vim codex`, `node -r codex.js server.js`,
//! `python3 -m http.server -d /home/me/codex`) never count.

use std::fmt;

use crate::ProcessInfo;
use crate::argv::{Interpreter, Launch};

/// Decides whether a process holding the callback port is a login helper that may be stopped.
///
/// [`ProgramMatcher::codex`] is the default. Implement this trait (or use a closure) for
/// other CLIs with the same problem.
///
/// ```
/// use oauth_preflight::{HolderMatcher, ProcessInfo};
///
/// // Any closure `Fn(&ProcessInfo) -> bool + Send + Sync` is a matcher.
/// let only_pid_42 = |p: &ProcessInfo| p.pid == 42;
/// assert!(only_pid_42.is_login_helper(&ProcessInfo::new(42, "x")));
/// ```
pub trait HolderMatcher: Send + Sync {
    /// True when `process` is a login helper this matcher allows stopping.
    fn is_login_helper(&self, process: &ProcessInfo) -> bool;

    /// What the matcher accepts, for messages ("a Codex login helper").
    fn description(&self) -> String {
        "a login helper".to_owned()
    }
}

impl<F> HolderMatcher for F
where
    F: Fn(&ProcessInfo) -> bool + Send + Sync,
{
    fn is_login_helper(&self, process: &ProcessInfo) -> bool {
        self(process)
    }
}

/// Matches a program by exact basename, or by the npm package its script lives in.
///
/// ```
/// use oauth_preflight::{HolderMatcher, ProcessInfo, ProgramMatcher};
///
/// let m = ProgramMatcher::codex();
/// let npm = ProcessInfo::new(10, "node").with_argv([
///     "node",
///     "/usr/lib/node_modules/@openai/codex/bin/codex.js",
///     "login",
/// ]);
/// assert!(m.is_login_helper(&npm));
/// let vim = ProcessInfo::new(11, "vim").with_exe("/usr/bin/vim").with_argv(["vim", "codex"]);
/// assert!(!m.is_login_helper(&vim));
///
/// // Another CLI with the same problem:
/// let other = ProgramMatcher::new("My CLI", ["mycli", "mycli.exe"]).with_package("@me/mycli");
/// assert!(!other.is_login_helper(&npm));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramMatcher {
    label: String,
    names: Vec<String>,
    packages: Vec<String>,
    interpreters: Vec<Interpreter>,
}

impl ProgramMatcher {
    /// Matches programs whose executable basename is exactly one of `names` (`argv[0]` where
    /// the executable is unknown), or a Node.js, Bun or Deno interpreter running a script of
    /// one of those names. `label` names the program in messages ("Codex").
    pub fn new<I, S>(label: impl Into<String>, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            label: label.into(),
            names: names.into_iter().map(Into::into).collect(),
            packages: Vec::new(),
            interpreters: vec![Interpreter::Node, Interpreter::Bun, Interpreter::Deno],
        }
    }

    /// The Codex CLI: `codex`, `codex.js`, `codex.exe`, or a script inside `@openai/codex`.
    pub fn codex() -> Self {
        Self::new("Codex", ["codex", "codex.js", "codex.exe"]).with_package("@openai/codex")
    }

    /// Also accept an interpreter running a script that lives inside this npm package
    /// (`@scope/name` or `name`), matched as whole path components.
    #[must_use]
    pub fn with_package(mut self, package: impl Into<String>) -> Self {
        self.packages.push(package.into());
        self
    }

    /// Also read the command lines of `interpreter` (e.g. [`Interpreter::Python`] for a
    /// Python CLI whose helper runs as `python3 /path/to/mycli`).
    ///
    /// ```
    /// use oauth_preflight::{HolderMatcher, Interpreter, ProcessInfo, ProgramMatcher};
    ///
    /// let m = ProgramMatcher::new("My CLI", ["mycli"]).with_interpreter(Interpreter::Python);
    /// let run = |argv: &[&str]| {
    ///     ProcessInfo::new(7, "python3").with_exe("/usr/bin/python3.12").with_argv(argv.iter().copied())
    /// };
    /// assert!(m.is_login_helper(&run(&["python3", "-u", "/opt/mycli/mycli", "login"])));
    /// // `-c CODE` runs no script, whatever the code or the arguments say.
    /// assert!(!m.is_login_helper(&run(&["python3", "-c", "import mycli", "mycli"])));
    /// ```
    #[must_use]
    pub fn with_interpreter(mut self, interpreter: Interpreter) -> Self {
        if !self.interpreters.contains(&interpreter) {
            self.interpreters.push(interpreter);
        }
        self
    }

    fn name_matches(&self, basename: &str) -> bool {
        self.names.iter().any(|n| n == basename)
    }

    fn in_package(&self, script: &str) -> bool {
        let parts: Vec<&str> = components(script).collect();
        self.packages.iter().any(|package| {
            let want: Vec<&str> = components(package).collect();
            !want.is_empty() && parts.windows(want.len()).any(|w| w == want.as_slice())
        })
    }
}

impl Default for ProgramMatcher {
    fn default() -> Self {
        Self::codex()
    }
}

/// Linux lets us read the command line of every process we can inspect at all, so an empty
/// one means a zombie, a kernel thread or a program that wiped it: not provably a login
/// helper. (macOS and Windows lookups do not read argv; there the executable decides.)
const EMPTY_ARGV_NEVER_MATCHES: bool = cfg!(target_os = "linux");

impl HolderMatcher for ProgramMatcher {
    /// Identity, in order:
    ///
    /// 1. The program is the executable when it is known (`/proc/<pid>/exe` cannot be changed
    ///    by the process), else `argv[0]`. Its basename being one of the names matches.
    /// 2. Otherwise only an interpreter this matcher reads can match, and only when `argv[0]`
    ///    names that same interpreter (a program that rewrote its title, like `npm exec …`
    ///    under `node`, has a command line that is no longer the interpreter's).
    /// 3. The command line is read the way the interpreter reads it: the script is never an
    ///    option's value (`node -r codex.js server.js` runs `server.js`); `-e`/`-p`/`-c`/`-m`
    ///    or stdin mean there is no script; an unknown option makes it unreadable. Only a
    ///    script whose basename is one of the names, or that lives inside one of the
    ///    packages, matches.
    ///
    /// Wrappers (`env`, `sh -c`, `npx`) are never the helper: once they run the helper they
    /// have exec'd into it (or spawned it), so a wrapper still holding the port is refused.
    fn is_login_helper(&self, process: &ProcessInfo) -> bool {
        if EMPTY_ARGV_NEVER_MATCHES && process.argv.iter().all(String::is_empty) {
            return false;
        }
        let argv0 = process.argv.first().map(String::as_str);
        let program = match process.exe.as_deref() {
            Some(exe) => match exe.to_str() {
                Some(exe) => exe,
                // A non-UTF-8 executable path is not one of our names.
                None => return false,
            },
            None => match argv0 {
                Some(a) => a,
                None => return false,
            },
        };
        if self.name_matches(basename(program)) {
            return true;
        }
        let Some(interpreter) = Interpreter::from_program(program) else {
            return false;
        };
        if !self.interpreters.contains(&interpreter)
            || argv0.and_then(Interpreter::from_program) != Some(interpreter)
        {
            return false;
        }
        match crate::argv::launch(interpreter, &process.argv) {
            Launch::Script(script) => {
                self.name_matches(basename(script)) || self.in_package(script)
            }
            Launch::NoScript | Launch::Unreadable => false,
        }
    }

    fn description(&self) -> String {
        format!("a {} login helper", self.label)
    }
}

impl fmt::Display for ProgramMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&HolderMatcher::description(self))
    }
}

/// Path components, split on both separators so Windows paths work on any host.
fn components(path: &str) -> impl Iterator<Item = &str> {
    path.split(['/', '\\']).filter(|c| !c.is_empty())
}

/// Last path component, as written. (The ` (deleted)` Linux appends to a deleted
/// executable is removed where the executable is read, never from argv: the kernel does
/// not add it there, so in a command line it is part of the name.)
pub(crate) fn basename(path: &str) -> &str {
    components(path).last().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn proc_(exe: Option<&str>, argv: &[&str]) -> ProcessInfo {
        let mut p = ProcessInfo::new(1, "x").with_argv(argv.iter().copied());
        if let Some(e) = exe {
            p = p.with_exe(e);
        }
        p
    }

    #[test]
    fn accepts_codex_programs() {
        let m = ProgramMatcher::codex();
        let ok = [
            proc_(
                Some("/usr/local/bin/codex"),
                &["/usr/local/bin/codex", "login"],
            ),
            proc_(
                Some(
                    "/usr/lib/node_modules/@openai/codex/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex",
                ),
                &["codex", "login"],
            ),
            proc_(
                Some("/usr/bin/node"),
                &[
                    "node",
                    "/usr/lib/node_modules/@openai/codex/bin/codex.js",
                    "login",
                ],
            ),
            proc_(
                None,
                &[
                    "node",
                    "--no-warnings",
                    "/x/@openai/codex/bin/run.js",
                    "login",
                ],
            ),
            proc_(None, &["C:\\Users\\me\\AppData\\codex.exe", "login"]),
            // The npm global shim: `#!/usr/bin/env node` runs the linked script.
            proc_(
                Some("/usr/bin/node"),
                &["node", "/usr/local/bin/codex", "login"],
            ),
            proc_(
                Some("/usr/bin/node"),
                &["/usr/bin/node", "--", "/opt/codex.js"],
            ),
            proc_(
                Some("/usr/bin/node"),
                &[
                    "node",
                    "--inspect=9229",
                    "--no-warnings",
                    "/x/@openai/codex/bin/codex.js",
                ],
            ),
        ];
        for p in ok {
            assert!(m.is_login_helper(&p), "should match: {p:?}");
        }
    }

    #[test]
    fn rejects_lookalikes_and_mentions() {
        let m = ProgramMatcher::codex();
        let bad = [
            proc_(Some("/usr/bin/vscodex"), &["vscodex"]),
            proc_(Some("/usr/bin/not-codex-tool"), &["not-codex-tool"]),
            proc_(Some("/usr/bin/codex-helper"), &["codex-helper", "login"]),
            // " (deleted)" is removed only where the kernel adds it (reading `exe`): in a
            // name or a command line it is part of the name.
            proc_(
                Some("/opt/codex/codex (deleted)"),
                &["codex (deleted)", "login"],
            ),
            proc_(Some("/usr/bin/node"), &["node", "codex.js (deleted)"]),
            proc_(None, &["codex (deleted)", "login"]),
            proc_(None, &[]),
            proc_(None, &[""]),
            proc_(
                Some("/usr/bin/python3.11"),
                &["python3", "-m", "http.server", "-d", "/home/me/codex"],
            ),
            proc_(Some("/usr/bin/vim"), &["vim", "codex"]),
            proc_(Some("/home/codex/bin/server"), &["/home/codex/bin/server"]),
            proc_(Some("/usr/bin/python3"), &["python3", "codex"]),
            proc_(
                Some("/usr/bin/node"),
                &["node", "/x/@openai/codex-tools/run.js"],
            ),
            proc_(Some("/usr/bin/node"), &["node"]),
            // An option's value is never the script.
            proc_(
                Some("/usr/bin/node"),
                &["node", "-r", "codex.js", "server.js"],
            ),
            proc_(
                Some("/usr/bin/node"),
                &["node", "--require", "./codex", "server.js"],
            ),
            proc_(
                Some("/usr/bin/node"),
                &["node", "--import=/x/@openai/codex/bin/codex.js", "s.mjs"],
            ),
            proc_(
                Some("/usr/bin/node"),
                &["node", "-e", "require('codex')", "codex.js"],
            ),
            proc_(Some("/usr/bin/node"), &["node", "-", "codex.js"]),
            proc_(
                Some("/usr/bin/node"),
                &["node", "--unknown-opt", "codex.js"],
            ),
            // `argv[0]` cannot override a known executable.
            proc_(Some("/usr/bin/python3.11"), &["/tmp/t/codex", "-c", "pass"]),
            proc_(Some("/usr/bin/node"), &["codex", "server.js"]),
            // A rewritten title under node (`npm exec …`) is not node's command line.
            proc_(Some("/usr/bin/node"), &["npm", "exec", "codex.js"]),
            // Python is not read for Codex; and wrappers are never the helper.
            proc_(Some("/usr/bin/python3"), &["python3", "codex.js"]),
            proc_(Some("/usr/bin/env"), &["env", "node", "codex.js"]),
            proc_(Some("/bin/sh"), &["sh", "-c", "codex login"]),
            proc_(
                Some("/usr/bin/node"),
                &["node", "/usr/lib/node_modules/npm/bin/npx-cli.js", "codex"],
            ),
        ];
        for p in bad {
            assert!(!m.is_login_helper(&p), "should not match: {p:?}");
        }
    }

    #[test]
    fn description_names_the_program() {
        assert_eq!(ProgramMatcher::codex().to_string(), "a Codex login helper");
    }

    proptest! {
        #[test]
        fn never_panics(exe in proptest::option::of(".{0,40}"), argv in proptest::collection::vec(".{0,30}", 0..5)) {
            let p = proc_(exe.as_deref(), &argv.iter().map(String::as_str).collect::<Vec<_>>());
            let _ = ProgramMatcher::codex().is_login_helper(&p);
        }

        /// "codex" embedded in a longer name is never enough.
        #[test]
        fn substrings_never_match(prefix in "[a-z_.-]{0,6}", suffix in "[a-z_-]{0,6}", dir in "[a-z/]{0,12}") {
            prop_assume!(!(prefix.is_empty() && (suffix.is_empty())));
            let name = format!("{prefix}codex{suffix}");
            prop_assume!(!["codex.js", "codex.exe"].contains(&name.as_str()));
            let path = format!("/{dir}/{name}");
            let p = proc_(Some(&path), &[path.as_str(), "login"]);
            prop_assert!(!ProgramMatcher::codex().is_login_helper(&p));
        }

        /// An empty command line is never enough, whatever the executable (Linux reads argv).
        #[test]
        fn empty_argv_never_matches(exe in proptest::option::of("(/[a-z@.]{0,8}){0,3}/codex(\\.js|\\.exe)?"), blanks in 0usize..3) {
            let p = proc_(exe.as_deref(), &vec![""; blanks]);
            prop_assert_eq!(ProgramMatcher::codex().is_login_helper(&p), !cfg!(target_os = "linux") && exe.is_some());
        }

        /// Mentions of codex in arguments or directories never match a non-codex program.
        #[test]
        fn mentions_never_match(args in proptest::collection::vec("[a-z/@]{0,8}codex[a-z/]{0,8}", 0..4)) {
            let mut argv = vec!["/usr/bin/python3".to_owned()];
            argv.extend(args);
            let p = proc_(Some("/usr/bin/python3.11"), &argv.iter().map(String::as_str).collect::<Vec<_>>());
            prop_assert!(!ProgramMatcher::codex().is_login_helper(&p));
        }
    }
}
