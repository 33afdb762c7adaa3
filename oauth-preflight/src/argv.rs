//! Pure: reads an interpreter's command line the way the interpreter itself reads it, to find
//! the script it runs.
//!
//! Why this matters: `node -r codex.js server.js` runs `server.js` (with `codex.js` preloaded),
//! and `python3 -c '…codex…'` runs no script at all. Taking the first argument that does not
//! start with `-` as the script would call both "codex" and let them be killed. So every
//! option is classified by the interpreter's own grammar: a flag, an option that consumes a
//! value (`-r X`, `--require=X`, `-W arg`, `-Bc CODE`), or an option after which there is no
//! script (`-e`, `-p`, `-c`, `-m`, `-`). An option we do not know could take a value, so an
//! unknown option makes the command line unreadable, and unreadable is never a match.

/// An interpreter whose command line [`ProgramMatcher`](crate::ProgramMatcher) can read to find
/// the script it runs.
///
/// ```
/// use oauth_preflight::Interpreter;
///
/// assert_eq!(Interpreter::from_program("/usr/bin/node"), Some(Interpreter::Node));
/// assert_eq!(Interpreter::from_program("python3.12"), Some(Interpreter::Python));
/// assert_eq!(Interpreter::from_program("nodemon"), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Interpreter {
    /// Node.js: `node`, `nodejs` (`node.exe`).
    Node,
    /// Bun: `bun` (`bun.exe`); `bun [run] script`.
    Bun,
    /// Deno: `deno` (`deno.exe`); `deno run script`, `deno serve script`, `deno script`.
    Deno,
    /// CPython: `python`, `python3`, `python3.12`, … (`.exe`).
    Python,
}

impl Interpreter {
    /// The interpreter a program path or name is, by its basename (a trailing ` (deleted)`
    /// and `.exe` are ignored); `None` for anything else.
    pub fn from_program(path: &str) -> Option<Self> {
        let base = crate::matcher::basename(path);
        let base = base.strip_suffix(".exe").unwrap_or(base);
        match base {
            "node" | "nodejs" => Some(Self::Node),
            "bun" => Some(Self::Bun),
            "deno" => Some(Self::Deno),
            _ => {
                let version = base.strip_prefix("python")?;
                version
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b'.')
                    .then_some(Self::Python)
            }
        }
    }
}

/// What an interpreter's command line runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Launch<'a> {
    /// This script file (as written on the command line).
    Script(&'a str),
    /// No script file: code from an option (`-e`, `-c`), a module (`-m`), stdin (`-`), a REPL,
    /// a test runner or another subcommand.
    NoScript,
    /// An option we do not know (it might take a value) or a missing option value.
    Unreadable,
}

/// Reads `argv` (with `argv[0]` the interpreter) as `interpreter` does.
pub(crate) fn launch(interpreter: Interpreter, argv: &[String]) -> Launch<'_> {
    let args = argv.get(1..).unwrap_or_default();
    match interpreter {
        Interpreter::Node => node(args),
        Interpreter::Bun => bun(args),
        Interpreter::Deno => deno(args),
        Interpreter::Python => python(args),
    }
}

/// How one option of an interpreter is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arity {
    /// Takes no value (`--no-warnings`); `--flag=x` is not valid for it.
    Flag,
    /// Takes a value only in the `--opt=value` form (`--inspect[=port]`).
    OptionalEquals,
    /// Takes a value: the next argument, or after `=`.
    Value,
    /// There is no script after this option (`-e CODE`, `--test`, `--version`).
    NoScript,
}

/// The script that follows `--` (if any).
fn after_double_dash(rest: &[String]) -> Launch<'_> {
    rest.first().map_or(Launch::NoScript, |s| script(s))
}

fn script(arg: &str) -> Launch<'_> {
    if arg == "-" {
        Launch::NoScript // the script is read from stdin
    } else {
        Launch::Script(arg)
    }
}

/// Walks options of a `--long[=v]` / `-s` grammar (node, bun, deno options) until the first
/// positional argument, which is returned with the arguments after it.
fn options<'a>(
    args: &'a [String],
    arity: impl Fn(&str) -> Option<Arity>,
) -> Result<Option<(&'a str, &'a [String])>, Launch<'a>> {
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        i += 1;
        if arg == "--" {
            return match args.get(i) {
                Some(s) => Ok(Some((s.as_str(), &args[i + 1..]))),
                None => Err(Launch::NoScript),
            };
        }
        if arg == "-" || !arg.starts_with('-') {
            return Ok(Some((arg.as_str(), &args[i..])));
        }
        let (name, inline_value) = match arg.split_once('=') {
            Some((name, _)) => (name, true),
            None => (arg.as_str(), false),
        };
        match arity(name) {
            None => return Err(Launch::Unreadable),
            Some(Arity::NoScript) => return Err(Launch::NoScript),
            Some(Arity::Flag) if inline_value => return Err(Launch::Unreadable),
            Some(Arity::Flag | Arity::OptionalEquals) => {}
            Some(Arity::Value) if inline_value => {}
            Some(Arity::Value) => {
                if args.get(i).is_none() {
                    return Err(Launch::Unreadable);
                }
                i += 1;
            }
        }
    }
    Ok(None)
}

/// `node [options] [script | -] [arguments]` (Node.js 18–24 `node --help`).
fn node(args: &[String]) -> Launch<'_> {
    match options(args, node_arity) {
        Ok(Some((first, _))) => script(first),
        Ok(None) => Launch::NoScript, // REPL
        Err(launch) => launch,
    }
}

/// `--snapshot-blob BLOB` is deliberately absent from every list: node then runs the
/// snapshot's own main function, and the next argument is only an argument, not a script.
/// Unknown means unreadable, so such a command line never matches.
fn node_arity(name: &str) -> Option<Arity> {
    const VALUE: &[&str] = &[
        "-r",
        "--require",
        "--import",
        "--loader",
        "--experimental-loader",
        "--input-type",
        "-C",
        "--conditions",
        "--env-file",
        "--env-file-if-exists",
        "--inspect-port",
        "--debug-port",
        "--inspect-publish-uid",
        "--title",
        "--max-http-header-size",
        "--dns-result-order",
        "--experimental-policy",
        "--policy-integrity",
        "--experimental-default-type",
        "--experimental-sea-config",
        "--build-snapshot-config",
        "--icu-data-dir",
        "--openssl-config",
        "--redirect-warnings",
        "--report-dir",
        "--report-directory",
        "--report-filename",
        "--report-signal",
        "--secure-heap",
        "--secure-heap-min",
        "--tls-cipher-list",
        "--tls-keylog",
        "--unhandled-rejections",
        "--use-largepages",
        "--watch-path",
        "--diagnostic-dir",
        "--disable-proto",
        "--disable-warning",
        "--heapsnapshot-signal",
        "--heapsnapshot-near-heap-limit",
        "--cpu-prof-dir",
        "--cpu-prof-name",
        "--cpu-prof-interval",
        "--heap-prof-dir",
        "--heap-prof-name",
        "--heap-prof-interval",
        "--trace-event-categories",
        "--trace-event-file-pattern",
        "--trace-require-module",
        "--v8-pool-size",
        "--network-family-autoselection-attempt-timeout",
        "--allow-fs-read",
        "--allow-fs-write",
        "--localstorage-file",
        "--max-old-space-size",
        "--max-semi-space-size",
        "--stack-size",
        "--stack-trace-limit",
    ];
    const NO_SCRIPT: &[&str] = &[
        "-e",
        "--eval",
        "-p",
        "--print",
        "-pe",
        "-c",
        "--check",
        "-i",
        "--interactive",
        "--test",
        "--run",
        "-h",
        "--help",
        "-v",
        "--version",
        "--v8-options",
        "--completion-bash",
        "--prof-process",
        "--build-snapshot",
    ];
    const OPTIONAL_EQUALS: &[&str] = &["--inspect", "--inspect-brk", "--inspect-wait", "--watch"];
    const FLAG: &[&str] = &[
        "--abort-on-uncaught-exception",
        "--allow-addons",
        "--allow-child-process",
        "--allow-wasi",
        "--allow-worker",
        "--cpu-prof",
        "--disable-wasm-trap-handler",
        "--disallow-code-generation-from-strings",
        "--enable-etw-stack-walking",
        "--enable-fips",
        "--enable-source-maps",
        "--enable-network-family-autoselection",
        "--experimental-eventsource",
        "--experimental-import-meta-resolve",
        "--experimental-network-imports",
        "--experimental-network-inspection",
        "--experimental-permission",
        "--permission",
        "--experimental-print-required-tla",
        "--experimental-require-module",
        "--experimental-detect-module",
        "--experimental-strip-types",
        "--experimental-transform-types",
        "--experimental-test-coverage",
        "--experimental-test-module-mocks",
        "--experimental-vm-modules",
        "--experimental-wasm-modules",
        "--experimental-websocket",
        "--experimental-modules",
        "--experimental-json-modules",
        "--experimental-sqlite",
        "--expose-gc",
        "--force-context-aware",
        "--force-fips",
        "--force-node-api-uncaught-exceptions-policy",
        "--frozen-intrinsics",
        "--heap-prof",
        "--huge-max-old-generation-size",
        "--insecure-http-parser",
        "--interpreted-frames-native-stack",
        "--jitless",
        "--node-memory-debug",
        "--openssl-legacy-provider",
        "--openssl-shared-config",
        "--pending-deprecation",
        "--preserve-symlinks",
        "--preserve-symlinks-main",
        "--prof",
        "--report-compact",
        "--report-exclude-network",
        "--report-on-fatalerror",
        "--report-on-signal",
        "--report-uncaught-exception",
        "--test-force-exit",
        "--test-only",
        "--throw-deprecation",
        "--tls-max-v1.2",
        "--tls-max-v1.3",
        "--tls-min-v1.0",
        "--tls-min-v1.1",
        "--tls-min-v1.2",
        "--tls-min-v1.3",
        "--trace-atomics-wait",
        "--trace-deprecation",
        "--trace-exit",
        "--trace-promises",
        "--trace-sigint",
        "--trace-sync-io",
        "--trace-tls",
        "--trace-uncaught",
        "--trace-warnings",
        "--track-heap-objects",
        "--use-bundled-ca",
        "--use-openssl-ca",
        "--use-system-ca",
        "--watch-preserve-output",
        "--zero-fill-buffers",
        "--expose-internals",
        "--harmony",
    ];
    if VALUE.contains(&name) {
        Some(Arity::Value)
    } else if NO_SCRIPT.contains(&name) {
        Some(Arity::NoScript)
    } else if OPTIONAL_EQUALS.contains(&name) {
        Some(Arity::OptionalEquals)
    } else if FLAG.contains(&name) || is_negated_flag(name) {
        Some(Arity::Flag)
    } else {
        None
    }
}

/// `--no-<flag>` negates a boolean option (node and V8); it never takes a value.
fn is_negated_flag(name: &str) -> bool {
    name.strip_prefix("--no-").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    })
}

/// `bun [options] [run] [options] <script>`; `bun <subcommand>` otherwise.
fn bun(args: &[String]) -> Launch<'_> {
    const VALUE: &[&str] = &[
        "--cwd",
        "-r",
        "--preload",
        "--require",
        "--import",
        "-d",
        "--define",
        "-l",
        "--loader",
        "--env-file",
        "-c",
        "--config",
        "--tsconfig-override",
        "--port",
        "--main-fields",
        "--conditions",
        "--console-depth",
        "--elide-lines",
        "-F",
        "--filter",
        "--shell",
        "--title",
    ];
    const NO_SCRIPT: &[&str] = &[
        "-e",
        "--eval",
        "-p",
        "--print",
        "-h",
        "--help",
        "-v",
        "--version",
        "--revision",
    ];
    const OPTIONAL_EQUALS: &[&str] = &["--inspect", "--inspect-brk", "--inspect-wait", "--install"];
    const FLAG: &[&str] = &[
        "--watch",
        "--hot",
        "--no-clear-screen",
        "--smol",
        "-b",
        "--bun",
        "--silent",
        "-i",
        "--prefer-offline",
        "--prefer-latest",
        "--if-present",
        "--no-install",
        "--no-deprecation",
        "--throw-deprecation",
        "--no-addons",
        "--no-macros",
        "--expose-gc",
        "--zero-fill-buffers",
        "--no-env-file",
    ];
    const SUBCOMMANDS: &[&str] = &[
        "test",
        "x",
        "repl",
        "exec",
        "install",
        "i",
        "add",
        "a",
        "remove",
        "rm",
        "update",
        "outdated",
        "link",
        "unlink",
        "pm",
        "build",
        "init",
        "create",
        "c",
        "upgrade",
        "publish",
        "patch",
        "patch-commit",
        "audit",
        "info",
        "why",
        "completions",
        "discord",
        "help",
    ];
    let arity = |name: &str| {
        if VALUE.contains(&name) {
            Some(Arity::Value)
        } else if NO_SCRIPT.contains(&name) {
            Some(Arity::NoScript)
        } else if OPTIONAL_EQUALS.contains(&name) {
            Some(Arity::OptionalEquals)
        } else if FLAG.contains(&name) {
            Some(Arity::Flag)
        } else {
            None
        }
    };
    match options(args, arity) {
        Ok(Some(("run", rest))) => match options(rest, arity) {
            Ok(Some((first, _))) => script(first),
            Ok(None) => Launch::NoScript,
            Err(launch) => launch,
        },
        Ok(Some((first, _))) if SUBCOMMANDS.contains(&first) => Launch::NoScript,
        Ok(Some((first, _))) => script(first),
        Ok(None) => Launch::NoScript,
        Err(launch) => launch,
    }
}

/// `deno run [options] <script>`, `deno serve …`, or `deno <script>` (Deno 2); options that
/// take an optional value only take it with `=` (Deno's argument parser requires it).
fn deno(args: &[String]) -> Launch<'_> {
    const VALUE: &[&str] = &[
        "-c",
        "--config",
        "--import-map",
        "--cert",
        "--location",
        "--seed",
        "-L",
        "--log-level",
        "--ext",
        "--preload",
        "--port",
        "--host",
        "--v8-flags",
    ];
    const NO_SCRIPT: &[&str] = &["-h", "--help", "-V", "--version"];
    const OPTIONAL_EQUALS: &[&str] = &[
        "-r",
        "--reload",
        "--lock",
        "--inspect",
        "--inspect-brk",
        "--inspect-wait",
        "--watch",
        "--watch-hmr",
        "--env-file",
        "--env",
        "--check",
        "--no-check",
        "--node-modules-dir",
        "--vendor",
        "--frozen",
        "--allow-all",
        "-A",
        "-R",
        "-W",
        "-N",
        "-E",
        "-S",
        "-P",
        "--permission-set",
    ];
    const FLAG: &[&str] = &[
        "-q",
        "--quiet",
        "--no-remote",
        "--no-npm",
        "--no-config",
        "--no-lock",
        "--no-prompt",
        "--cached-only",
        "--unstable",
        "--no-clear-screen",
        "--no-code-cache",
        "--parallel",
    ];
    const SUBCOMMANDS: &[&str] = &[
        "bench",
        "bundle",
        "cache",
        "check",
        "clean",
        "compile",
        "completions",
        "coverage",
        "doc",
        "eval",
        "fmt",
        "help",
        "info",
        "init",
        "install",
        "add",
        "remove",
        "jupyter",
        "lint",
        "lsp",
        "outdated",
        "publish",
        "repl",
        "task",
        "test",
        "types",
        "uninstall",
        "upgrade",
        "vendor",
        "x",
    ];
    let arity = |name: &str| {
        let permission = ["--allow-", "--deny-", "--unstable-"]
            .iter()
            .any(|p| name.strip_prefix(p).is_some_and(|r| !r.is_empty()));
        if VALUE.contains(&name) {
            Some(Arity::Value)
        } else if NO_SCRIPT.contains(&name) {
            Some(Arity::NoScript)
        } else if OPTIONAL_EQUALS.contains(&name) || permission {
            Some(Arity::OptionalEquals)
        } else if FLAG.contains(&name) {
            Some(Arity::Flag)
        } else {
            None
        }
    };
    match options(args, arity) {
        Ok(Some(("run" | "serve", rest))) => match options(rest, arity) {
            Ok(Some((first, _))) => script(first),
            Ok(None) => Launch::Unreadable, // `deno run` without a script is an error
            Err(launch) => launch,
        },
        Ok(Some((first, _))) if SUBCOMMANDS.contains(&first) => Launch::NoScript,
        Ok(Some((first, _))) => script(first),
        Ok(None) => Launch::NoScript, // REPL
        Err(launch) => launch,
    }
}

/// `python [-bBdEhiIOPqsSuvVWx?] [-c cmd | -m mod | script | -] [args]` (CPython 3.8–3.14):
/// short options combine (`-Bc CODE`, `-BcCODE`), `-W`/`-X` take a value (attached or the next
/// argument), `-c` and `-m` end the options and leave no script.
fn python(args: &[String]) -> Launch<'_> {
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        i += 1;
        if arg == "--" {
            return after_double_dash(&args[i..]);
        }
        if arg == "-" || !arg.starts_with('-') {
            return script(arg);
        }
        if let Some(long) = arg.strip_prefix("--") {
            let name = long.split_once('=').map_or(long, |(n, _)| n);
            match name {
                "check-hash-based-pycs" if !long.contains('=') => {
                    if args.get(i).is_none() {
                        return Launch::Unreadable;
                    }
                    i += 1;
                }
                "check-hash-based-pycs" => {}
                "help" | "help-env" | "help-xoptions" | "help-all" | "version" => {
                    return Launch::NoScript;
                }
                _ => return Launch::Unreadable,
            }
            continue;
        }
        let cluster = &arg[1..];
        for (at, c) in cluster.char_indices() {
            match c {
                'b' | 'B' | 'd' | 'E' | 'i' | 'I' | 'O' | 'P' | 'q' | 's' | 'S' | 'u' | 'v'
                | 'x' | 'R' | '3' | 't' => {}
                'h' | '?' | 'V' | 'c' | 'm' => return Launch::NoScript,
                'W' | 'X' => {
                    // The value is the rest of this argument, or the next argument.
                    if cluster[at + c.len_utf8()..].is_empty() {
                        if args.get(i).is_none() {
                            return Launch::Unreadable;
                        }
                        i += 1;
                    }
                    break;
                }
                _ => return Launch::Unreadable,
            }
        }
    }
    Launch::NoScript // REPL
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read(interpreter: Interpreter, line: &[&str]) -> Launch<'static> {
        let argv: Vec<String> = line.iter().map(|s| (*s).to_owned()).collect();
        // Leak in tests only, so the borrowed answer can be compared in a table.
        let argv: &'static [String] = Box::leak(argv.into_boxed_slice());
        launch(interpreter, argv)
    }

    use Interpreter::{Bun, Deno, Node, Python};
    use Launch::{NoScript, Script, Unreadable};

    /// The table: command line → what the interpreter runs.
    const TABLE: &[(Interpreter, &[&str], Launch<'static>)] = &[
        // node: the script, not an option's value.
        (Node, &["node", "codex.js", "login"], Script("codex.js")),
        // A startup snapshot runs its own main: `codex.js` is only an argument.
        (
            Node,
            &["node", "--snapshot-blob", "snap.blob", "codex.js"],
            Unreadable,
        ),
        (
            Node,
            &["node", "--snapshot-blob=snap.blob", "codex.js"],
            Unreadable,
        ),
        (
            Node,
            &["node", "-r", "codex.js", "server.js"],
            Script("server.js"),
        ),
        (
            Node,
            &["node", "--require", "./codex", "server.js"],
            Script("server.js"),
        ),
        (
            Node,
            &["node", "--require=./codex.js", "server.js"],
            Script("server.js"),
        ),
        (
            Node,
            &["node", "--import", "codex.js", "server.mjs"],
            Script("server.mjs"),
        ),
        (
            Node,
            &["node", "--loader", "codex.js", "s.js"],
            Script("s.js"),
        ),
        (
            Node,
            &["node", "--experimental-loader", "codex.js", "s.js"],
            Script("s.js"),
        ),
        (
            Node,
            &["node", "--input-type", "module", "s.js"],
            Script("s.js"),
        ),
        (Node, &["node", "-C", "codex", "s.js"], Script("s.js")),
        (
            Node,
            &["node", "--inspect=127.0.0.1:9229", "codex.js"],
            Script("codex.js"),
        ),
        (Node, &["node", "--inspect", "codex.js"], Script("codex.js")),
        (
            Node,
            &["node", "--no-warnings", "codex.js"],
            Script("codex.js"),
        ),
        (
            Node,
            &["node", "--max-old-space-size=4096", "codex.js"],
            Script("codex.js"),
        ),
        (
            Node,
            &["node", "--max-old-space-size", "4096", "codex.js"],
            Script("codex.js"),
        ),
        (Node, &["node", "--", "codex.js"], Script("codex.js")),
        (Node, &["node", "--", "-weird.js"], Script("-weird.js")),
        (Node, &["node", "--"], NoScript),
        (Node, &["node"], NoScript),
        (Node, &["node", "-"], NoScript),
        (Node, &["node", "-", "codex.js"], NoScript),
        (Node, &["node", "-e", "require('codex.js')"], NoScript),
        (Node, &["node", "--eval", "x", "codex.js"], NoScript),
        (Node, &["node", "--eval=x", "codex.js"], NoScript),
        (Node, &["node", "-p", "1", "codex.js"], NoScript),
        (Node, &["node", "-pe", "1", "codex.js"], NoScript),
        (Node, &["node", "--print", "1"], NoScript),
        (Node, &["node", "--test", "codex.js"], NoScript),
        (Node, &["node", "--run", "codex"], NoScript),
        (Node, &["node", "-i", "codex.js"], NoScript),
        // Unknown or malformed: never read.
        (Node, &["node", "--frobnicate", "x", "codex.js"], Unreadable),
        (Node, &["node", "-rcodex.js", "s.js"], Unreadable),
        (Node, &["node", "--no-warnings=1", "codex.js"], Unreadable),
        (Node, &["node", "-r"], Unreadable),
        (Node, &["node", "--no-", "codex.js"], Unreadable),
        // bun / deno.
        (Bun, &["bun", "codex.js"], Script("codex.js")),
        (
            Bun,
            &["bun", "run", "--watch", "codex.js"],
            Script("codex.js"),
        ),
        (
            Bun,
            &["bun", "--preload", "codex.js", "run", "s.ts"],
            Script("s.ts"),
        ),
        (Bun, &["bun", "-e", "1", "codex.js"], NoScript),
        (Bun, &["bun", "x", "codex"], NoScript),
        (Bun, &["bun", "--weird", "codex.js"], Unreadable),
        (Deno, &["deno", "run", "-A", "codex.js"], Script("codex.js")),
        (
            Deno,
            &["deno", "run", "--allow-net=127.0.0.1", "codex.ts"],
            Script("codex.ts"),
        ),
        (
            Deno,
            &["deno", "run", "--config", "codex.js", "s.ts"],
            Script("s.ts"),
        ),
        (Deno, &["deno", "serve", "codex.ts"], Script("codex.ts")),
        (Deno, &["deno", "codex.ts"], Script("codex.ts")),
        (Deno, &["deno", "eval", "codex"], NoScript),
        (Deno, &["deno", "run"], Unreadable),
        (Deno, &["deno", "run", "--what", "codex.ts"], Unreadable),
        // python.
        (Python, &["python3", "codex.py"], Script("codex.py")),
        (Python, &["python3", "-u", "codex.py"], Script("codex.py")),
        (
            Python,
            &["python3", "-c", "import codex", "codex.py"],
            NoScript,
        ),
        (
            Python,
            &["python3", "-Bc", "import codex", "codex.py"],
            NoScript,
        ),
        (
            Python,
            &["python3", "-Bcimport codex", "codex.py"],
            NoScript,
        ),
        (Python, &["python3", "-m", "codex_thing"], NoScript),
        (Python, &["python3", "-mcodex"], NoScript),
        (
            Python,
            &["python3", "-W", "ignore", "codex.py"],
            Script("codex.py"),
        ),
        (
            Python,
            &["python3", "-Wignore", "codex.py"],
            Script("codex.py"),
        ),
        (
            Python,
            &["python3", "-X", "dev", "codex.py"],
            Script("codex.py"),
        ),
        (
            Python,
            &["python3", "-BX", "dev", "codex.py"],
            Script("codex.py"),
        ),
        (
            Python,
            &["python3", "-X", "codex.py", "s.py"],
            Script("s.py"),
        ),
        (
            Python,
            &["python3", "--check-hash-based-pycs", "always", "s.py"],
            Script("s.py"),
        ),
        (Python, &["python3", "-", "codex.py"], NoScript),
        (Python, &["python3", "--", "codex.py"], Script("codex.py")),
        (Python, &["python3"], NoScript),
        (Python, &["python3", "-W"], Unreadable),
        (Python, &["python3", "-Z", "codex.py"], Unreadable),
        (Python, &["python3", "--frob", "codex.py"], Unreadable),
    ];

    #[test]
    fn reads_command_lines_the_way_the_interpreter_does() {
        for (interpreter, line, want) in TABLE {
            assert_eq!(read(*interpreter, line), *want, "{interpreter:?} {line:?}");
        }
    }

    #[test]
    fn recognises_interpreters_by_basename() {
        for (path, want) in [
            ("/usr/bin/node", Some(Node)),
            ("nodejs", Some(Node)),
            ("C:\\Program Files\\nodejs\\node.exe", Some(Node)),
            ("/usr/bin/python3.11", Some(Python)),
            ("python", Some(Python)),
            ("/root/.bun/bin/bun", Some(Bun)),
            ("deno", Some(Deno)),
            ("/usr/bin/node (deleted)", None),
            ("pythonista", None),
            ("nodemon", None),
            ("codex", None),
            ("", None),
        ] {
            assert_eq!(Interpreter::from_program(path), want, "{path}");
        }
    }

    fn arg() -> impl Strategy<Value = String> {
        prop_oneof![
            "-{0,2}[a-zA-Z0-9=.-]{0,12}",
            Just("--".to_owned()),
            Just("-".to_owned()),
            Just("-r".to_owned()),
            Just("-c".to_owned()),
            Just("-e".to_owned()),
            Just("-W".to_owned()),
            ".{0,10}",
        ]
    }

    fn interpreter() -> impl Strategy<Value = Interpreter> {
        prop_oneof![Just(Node), Just(Bun), Just(Deno), Just(Python)]
    }

    proptest! {
        /// Never panics, and a script is always one of the arguments, never `argv[0]`.
        #[test]
        fn script_is_an_argument(interpreter in interpreter(), args in proptest::collection::vec(arg(), 0..8)) {
            let mut argv = vec!["interp".to_owned()];
            argv.extend(args);
            if let Launch::Script(s) = launch(interpreter, &argv) {
                prop_assert!(argv[1..].iter().any(|a| std::ptr::eq(a.as_str(), s)));
            }
        }

        /// The value of a value-taking option is never the script, whatever follows.
        #[test]
        fn option_values_are_never_the_script(
            (interpreter, option) in prop_oneof![
                proptest::sample::select(vec!["-r", "--require", "--import", "--loader", "--experimental-loader", "--input-type", "-C"]).prop_map(|o| (Node, o)),
                proptest::sample::select(vec!["-W", "-X", "--check-hash-based-pycs"]).prop_map(|o| (Python, o)),
                proptest::sample::select(vec!["--preload", "-r", "--cwd"]).prop_map(|o| (Bun, o)),
            ],
            value in "[a-z./]{1,10}",
            rest in proptest::collection::vec("[a-z/]{1,8}[.]js", 0..3),
        ) {
            let mut argv = vec!["interp".to_owned(), option.to_owned(), value];
            argv.extend(rest.iter().cloned());
            let answer = launch(interpreter, &argv);
            match rest.first() {
                Some(first) => prop_assert_eq!(answer, Launch::Script(first.as_str())),
                None => prop_assert_ne!(answer, Launch::Script(argv[2].as_str())),
            }
            if let Launch::Script(s) = answer {
                prop_assert!(!std::ptr::eq(s, argv[2].as_str()));
            }
        }

        /// After an option that leaves no script, nothing is ever a script.
        #[test]
        fn eval_options_leave_no_script(
            (interpreter, option) in prop_oneof![
                proptest::sample::select(vec!["-e", "--eval", "-p", "--print", "-pe"]).prop_map(|o| (Node, o)),
                proptest::sample::select(vec!["-c", "-m", "-Bc", "-Ic", "-sm"]).prop_map(|o| (Python, o)),
                proptest::sample::select(vec!["-e", "--eval", "-p"]).prop_map(|o| (Bun, o)),
            ],
            rest in proptest::collection::vec("[a-z./-]{0,10}", 0..4),
        ) {
            let mut argv = vec!["interp".to_owned(), option.to_owned()];
            argv.extend(rest);
            prop_assert_eq!(launch(interpreter, &argv), Launch::NoScript);
        }
    }
}
