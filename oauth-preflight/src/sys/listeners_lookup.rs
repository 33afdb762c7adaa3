//! macOS and Windows (built in CI for both; never run on macOS): LISTEN sockets from the
//! native socket tables through the `listeners` crate (libproc on macOS,
//! `GetExtendedTcpTable` on Windows).

use crate::{Error, HolderLookup, LookupMethod, PortHolder, ProcessInfo};

/// Native lookup on macOS (libproc) and Windows (TCP table API), via `listeners`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ListenersLookup;

impl HolderLookup for ListenersLookup {
    fn method(&self) -> LookupMethod {
        if cfg!(windows) {
            LookupMethod::TcpTable
        } else {
            LookupMethod::Libproc
        }
    }

    fn find_listeners(&self, port: u16) -> Result<Vec<PortHolder>, Error> {
        let all = listeners::get_all().map_err(|e| Error::Platform {
            method: self.method(),
            message: e.to_string(),
        })?;
        Ok(all
            .into_iter()
            // `listeners` 0.5 does not report a socket's TCP state (on Windows it reads the
            // table of every TCP socket), so sockets accepted on the port count too: their
            // owner holds the port as well. Pid 0 (Windows' TIME_WAIT rows) owns nothing.
            .filter(|l| {
                l.protocol == listeners::Protocol::TCP
                    && l.socket.port() == port
                    && l.process.pid != 0
            })
            .map(|l| {
                let mut p = super::describe(l.process.pid)
                    .unwrap_or_else(|| ProcessInfo::new(l.process.pid, String::new()));
                if p.name.is_empty() {
                    p.name = l.process.name.clone();
                }
                if p.exe.is_none() && !l.process.path.is_empty() {
                    p.exe = Some(l.process.path.clone().into());
                }
                PortHolder::new(l.socket, Some(p))
            })
            .collect())
    }
}
