//! macOS: LISTEN sockets from the native socket table through the `listeners` crate
//! (libproc). Type-checked for aarch64/x86_64-apple-darwin, not run.
//!
//! `listeners` 0.5 does not report a socket's TCP state, so every TCP socket on the port
//! counts, accepted connections of a listener too: a refusal here can be stricter than on
//! Linux, and a process holding only a connection accepted on the port counts as a holder.
//! (Windows used this crate too; it now reads the LISTEN-only TCP table itself, see
//! `windows.rs`, because of exactly that.)

use crate::{Error, HolderLookup, LookupMethod, PortHolder, ProcessInfo};

/// Native lookup on macOS (libproc), via `listeners`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ListenersLookup;

impl HolderLookup for ListenersLookup {
    fn method(&self) -> LookupMethod {
        LookupMethod::Libproc
    }

    fn find_listeners(&self, port: u16) -> Result<Vec<PortHolder>, Error> {
        let all = listeners::get_all().map_err(|e| Error::Platform {
            method: self.method(),
            message: e.to_string(),
        })?;
        Ok(all
            .into_iter()
            // `listeners` 0.5 does not report a socket's TCP state, so sockets accepted on
            // the port count too: their owner holds the port as well.
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
