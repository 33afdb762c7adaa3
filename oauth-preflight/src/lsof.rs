//! `lsof` fallback, for when the native lookup cannot answer (no `/proc`, sandboxing, ...).

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::Command;

use crate::{Error, HolderLookup, LookupMethod, PortHolder, ProcessInfo};

/// Asks `lsof -nP -iTCP:PORT -sTCP:LISTEN -F…` who listens. Results say
/// [`LookupMethod::Lsof`]. Processes are then described natively where possible.
///
/// ```no_run
/// use oauth_preflight::{HolderLookup, LsofLookup};
/// let holders = LsofLookup::new().find_listeners(1455)?;
/// # Ok::<(), oauth_preflight::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct LsofLookup {
    program: OsString,
}

impl LsofLookup {
    /// Runs `lsof` from `PATH`.
    pub fn new() -> Self {
        Self {
            program: "lsof".into(),
        }
    }

    /// Runs this `lsof` binary instead.
    pub fn with_program(program: impl Into<OsString>) -> Self {
        Self {
            program: program.into(),
        }
    }
}

impl Default for LsofLookup {
    fn default() -> Self {
        Self::new()
    }
}

impl HolderLookup for LsofLookup {
    fn method(&self) -> LookupMethod {
        LookupMethod::Lsof
    }

    fn find_listeners(&self, port: u16) -> Result<Vec<PortHolder>, Error> {
        let output = Command::new(&self.program)
            .args(["-nP", &format!("-iTCP:{port}"), "-sTCP:LISTEN", "-Fpcutn"])
            .output()
            .map_err(|source| Error::LsofSpawn { source })?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        // lsof exits 1 both for "nothing found" (no output) and for real errors.
        if !output.status.success() && !stdout.lines().any(|l| l.starts_with('n')) {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let stderr = stderr.trim();
            if stderr.is_empty() {
                return Ok(Vec::new());
            }
            return Err(Error::LsofFailed {
                status: output.status.to_string(),
                stderr: stderr.to_owned(),
            });
        }
        Ok(parse_lsof_fields(&stdout)
            .into_iter()
            .map(|h| {
                // Richer identity (exe, argv, start time) from the native source when possible.
                let described = h.process.as_ref().and_then(|p| crate::sys::describe(p.pid));
                match described {
                    Some(p) => PortHolder {
                        process: Some(p),
                        ..h
                    },
                    None => h,
                }
            })
            .collect())
    }
}

/// Parses `lsof -F pcutn` output: `p<pid>`, `c<command>`, `u<uid>` start a process set;
/// `t<IPv4|IPv6>` and `n<addr:port>` describe each of its files. Unparseable lines are skipped.
pub(crate) fn parse_lsof_fields(out: &str) -> Vec<PortHolder> {
    let mut holders = Vec::new();
    let mut process: Option<ProcessInfo> = None;
    let mut v6 = false;
    for line in out.lines() {
        let Some(tag) = line.chars().next() else {
            continue;
        };
        let value = &line[tag.len_utf8()..];
        match tag {
            'p' => process = value.parse().ok().map(|pid| ProcessInfo::new(pid, "")),
            'c' => {
                if let Some(p) = process.as_mut() {
                    p.name = value.to_owned();
                }
            }
            'u' => {
                if let Some(p) = process.as_mut() {
                    p.uid = value.parse().ok();
                }
            }
            'f' => v6 = false,
            't' => v6 = value == "IPv6",
            'n' => {
                if let (Some(p), Some(socket)) = (process.as_ref(), parse_lsof_name(value, v6)) {
                    holders.push(PortHolder::new(socket, Some(p.clone())));
                }
            }
            _ => {}
        }
    }
    holders
}

/// `127.0.0.1:1455`, `[::1]:1455`, `*:1455` (wildcard of the file's family).
fn parse_lsof_name(name: &str, v6: bool) -> Option<SocketAddr> {
    let name = name.split("->").next()?;
    let (host, port) = name.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let ip = match host {
        "*" if v6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        "*" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        h => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()?,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_field_output() {
        let out = "p101\ncpython3\nu1000\nf3\ntIPv4\nn127.0.0.1:1455\np202\nccodex\nu0\nf7\ntIPv6\nn*:1455\nf8\ntIPv6\nn[::1]:1455\n";
        let h = parse_lsof_fields(out);
        assert_eq!(h.len(), 3);
        let p0 = h[0].process.as_ref().unwrap();
        assert_eq!(
            (p0.pid, p0.name.as_str(), p0.uid),
            (101, "python3", Some(1000))
        );
        assert_eq!(h[0].socket, "127.0.0.1:1455".parse().unwrap());
        assert_eq!(h[1].socket, "[::]:1455".parse().unwrap());
        assert_eq!(h[2].socket, "[::1]:1455".parse().unwrap());
        assert_eq!(h[2].process.as_ref().unwrap().name, "codex");
    }

    #[test]
    fn empty_output_means_no_holders() {
        assert!(parse_lsof_fields("").is_empty());
    }

    proptest! {
        #[test]
        fn parser_never_panics(out in "([pcutfn][^\n]{0,20}\n){0,10}") {
            let _ = parse_lsof_fields(&out);
        }
    }
}
