//! Pure decoding of the Windows TCP tables (`GetExtendedTcpTable` with an `*_OWNER_PID_*`
//! class) from the bytes the API fills in. Built on Windows and into every platform's tests,
//! so the layout rules below are checked on Linux too.
//!
//! Layout (Win32 `tcpmib.h`; every field is a little-endian `DWORD` unless said otherwise):
//!
//! | table | header | row |
//! |---|---|---|
//! | `MIB_TCPTABLE_OWNER_PID` (IPv4) | `dwNumEntries` | 24 bytes: `dwState`, `dwLocalAddr` (bytes in network order), `dwLocalPort` (network order in the first two bytes), `dwRemoteAddr`, `dwRemotePort`, `dwOwningPid` |
//! | `MIB_TCP6TABLE_OWNER_PID` (IPv6) | `dwNumEntries` | 56 bytes: `ucLocalAddr[16]`, `dwLocalScopeId`, `dwLocalPort`, `ucRemoteAddr[16]`, `dwRemoteScopeId`, `dwRemotePort`, `dwState`, `dwOwningPid` |
//!
//! Rows are read with bounds checks from the byte slice, never by casting the buffer, and a
//! row count that does not fit the bytes the API reported is an error, not a short read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `MIB_TCP_STATE_LISTEN`.
pub(crate) const STATE_LISTEN: u32 = 2;

const HEADER_LEN: usize = 4;
pub(crate) const V4_ROW_LEN: usize = 24;
pub(crate) const V6_ROW_LEN: usize = 56;

/// One row of a TCP table: the local socket, its TCP state and the owning pid (0 when the
/// system does not say, e.g. `TIME_WAIT` rows on Windows, and every row under Wine 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpRow {
    pub(crate) local: SocketAddr,
    pub(crate) state: u32,
    pub(crate) pid: u32,
}

/// Which table the bytes hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
}

/// Decodes a table of `family` from the first `len` bytes the API wrote.
///
/// Errors name what did not fit, e.g. "the IPv6 TCP table says 3 rows but holds 100 bytes".
pub(crate) fn decode(family: Family, bytes: &[u8]) -> Result<Vec<TcpRow>, String> {
    let name = match family {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    };
    let count = dword(bytes, 0).ok_or_else(|| {
        format!(
            "the {name} TCP table is {} bytes, too short for its row count",
            bytes.len()
        )
    })?;
    let row_len = match family {
        Family::V4 => V4_ROW_LEN,
        Family::V6 => V6_ROW_LEN,
    };
    let rows = usize::try_from(count).ok().filter(|&n| {
        n.checked_mul(row_len)
            .and_then(|len| len.checked_add(HEADER_LEN))
            .is_some_and(|len| len <= bytes.len())
    });
    let Some(rows) = rows else {
        return Err(format!(
            "the {name} TCP table says {count} rows but holds {} bytes",
            bytes.len()
        ));
    };
    let rows = bytes[HEADER_LEN..].chunks_exact(row_len).take(rows);
    Ok(rows
        .filter_map(|row| match family {
            Family::V4 => v4_row(row),
            Family::V6 => v6_row(row),
        })
        .collect())
}

fn v4_row(row: &[u8]) -> Option<TcpRow> {
    let addr: [u8; 4] = row.get(4..8)?.try_into().ok()?;
    Some(TcpRow {
        state: dword(row, 0)?,
        local: SocketAddr::new(IpAddr::V4(Ipv4Addr::from(addr)), port(row, 8)?),
        pid: dword(row, 20)?,
    })
}

fn v6_row(row: &[u8]) -> Option<TcpRow> {
    let addr: [u8; 16] = row.get(0..16)?.try_into().ok()?;
    // The scope id (bytes 16..20) is left out: sockets are compared with the address the
    // caller asked about, which carries none.
    Some(TcpRow {
        local: SocketAddr::new(IpAddr::V6(Ipv6Addr::from(addr)), port(row, 20)?),
        state: dword(row, 48)?,
        pid: dword(row, 52)?,
    })
}

fn dword(bytes: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

/// A port `DWORD` holds the port in network byte order in its first two bytes.
fn port(bytes: &[u8], at: usize) -> Option<u16> {
    let b: [u8; 2] = bytes.get(at..at.checked_add(2)?)?.try_into().ok()?;
    Some(u16::from_be_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(state: u32, addr: [u8; 4], port: u16, pid: u32) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&state.to_le_bytes());
        r.extend_from_slice(&addr);
        r.extend_from_slice(&port.to_be_bytes());
        r.extend_from_slice(&[0, 0]);
        r.extend_from_slice(&[93, 184, 216, 34]); // remote address: ignored
        r.extend_from_slice(&[0x1f, 0x90, 0, 0]); // remote port: ignored
        r.extend_from_slice(&pid.to_le_bytes());
        r
    }

    fn v6(state: u32, addr: Ipv6Addr, port: u16, pid: u32) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&addr.octets());
        r.extend_from_slice(&4096u32.to_le_bytes()); // scope id: dropped
        r.extend_from_slice(&port.to_be_bytes());
        r.extend_from_slice(&[0, 0]);
        r.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        r.extend_from_slice(&0u32.to_le_bytes());
        r.extend_from_slice(&[0x1f, 0x90, 0, 0]);
        r.extend_from_slice(&state.to_le_bytes());
        r.extend_from_slice(&pid.to_le_bytes());
        r
    }

    fn table(rows: &[Vec<u8>]) -> Vec<u8> {
        let mut t = u32::try_from(rows.len()).unwrap().to_le_bytes().to_vec();
        for r in rows {
            t.extend_from_slice(r);
        }
        t
    }

    #[test]
    fn rows_decode_with_their_state_address_port_and_pid() {
        assert_eq!(v4(0, [0; 4], 0, 0).len(), V4_ROW_LEN);
        assert_eq!(v6(0, Ipv6Addr::UNSPECIFIED, 0, 0).len(), V6_ROW_LEN);
        let t = table(&[
            v4(STATE_LISTEN, [127, 0, 0, 1], 1455, 4242),
            v4(5, [10, 1, 2, 3], 50_000, 0),
        ]);
        assert_eq!(
            decode(Family::V4, &t).unwrap(),
            [
                TcpRow {
                    local: "127.0.0.1:1455".parse().unwrap(),
                    state: STATE_LISTEN,
                    pid: 4242
                },
                TcpRow {
                    local: "10.1.2.3:50000".parse().unwrap(),
                    state: 5,
                    pid: 0
                },
            ]
        );
        let t = table(&[v6(STATE_LISTEN, Ipv6Addr::LOCALHOST, 1455, 7)]);
        assert_eq!(
            decode(Family::V6, &t).unwrap(),
            [TcpRow {
                local: "[::1]:1455".parse().unwrap(),
                state: STATE_LISTEN,
                pid: 7
            }]
        );
    }

    #[test]
    fn an_empty_table_is_no_rows_and_extra_bytes_are_ignored() {
        assert_eq!(decode(Family::V4, &table(&[])).unwrap(), []);
        // The API may hand back a buffer larger than the rows it holds.
        let mut t = table(&[v4(STATE_LISTEN, [127, 0, 0, 1], 80, 1)]);
        t.extend_from_slice(&[0xff; 30]);
        assert_eq!(decode(Family::V4, &t).unwrap().len(), 1);
    }

    #[test]
    fn a_row_count_that_does_not_fit_is_an_error() {
        let mut t = table(&[v6(STATE_LISTEN, Ipv6Addr::LOCALHOST, 80, 1)]);
        t[0] = 2;
        let err = decode(Family::V6, &t).unwrap_err();
        assert_eq!(err, "the IPv6 TCP table says 2 rows but holds 60 bytes");
        assert!(
            decode(Family::V4, &[1, 0])
                .unwrap_err()
                .contains("too short")
        );
        let huge = u32::MAX.to_le_bytes();
        assert!(decode(Family::V4, &huge).is_err());
    }

    proptest! {
        /// Whatever the bytes, decoding never panics and never yields more rows than fit.
        #[test]
        fn never_panics_nor_reads_past_the_buffer(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            for (family, len) in [(Family::V4, V4_ROW_LEN), (Family::V6, V6_ROW_LEN)] {
                if let Ok(rows) = decode(family, &bytes) {
                    prop_assert!(HEADER_LEN + rows.len() * len <= bytes.len());
                }
            }
        }

        /// Encoding then decoding gives the rows back (scope ids aside).
        #[test]
        fn round_trips(rows in proptest::collection::vec((any::<u32>(), any::<[u8; 4]>(), any::<[u8; 16]>(), any::<u16>(), any::<u32>()), 0..8)) {
            let t4 = table(&rows.iter().map(|&(s, a, _, p, pid)| v4(s, a, p, pid)).collect::<Vec<_>>());
            let t6 = table(&rows.iter().map(|&(s, _, a, p, pid)| v6(s, Ipv6Addr::from(a), p, pid)).collect::<Vec<_>>());
            let d4 = decode(Family::V4, &t4).unwrap();
            let d6 = decode(Family::V6, &t6).unwrap();
            for (i, &(state, a4, a6, port, pid)) in rows.iter().enumerate() {
                prop_assert_eq!(d4[i], TcpRow { local: SocketAddr::new(IpAddr::from(a4), port), state, pid });
                prop_assert_eq!(d6[i], TcpRow { local: SocketAddr::new(IpAddr::from(a6), port), state, pid });
            }
        }
    }
}
