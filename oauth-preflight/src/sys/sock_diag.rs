//! Linux `NETLINK_SOCK_DIAG`: ask the kernel for LISTEN sockets only, the way `ss -l` does.
//!
//! Reading `/proc/net/tcp` walks every bucket of the established-connection hash (hundreds
//! of thousands on a large machine), which costs milliseconds; a sock_diag dump restricted
//! to the LISTEN state only walks the listening hash. Messages are built and parsed as plain
//! bytes (no `unsafe`): `nlmsghdr` + `inet_diag_req_v2` out, `nlmsghdr` + `inet_diag_msg` in.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rustix::net::{
    AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, netlink, recv, send, socket_with,
};

use super::linux::SocketRow;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_TCP: u8 = 6;
const TCP_LISTEN: u8 = 10;
const NLMSG_HDR_LEN: usize = 16;
/// `inet_diag_msg`: 4 bytes of family/state/timer/retrans, 48 of `inet_diag_sockid`,
/// then expires, rqueue, wqueue, uid, inode (u32 each).
const DIAG_MSG_LEN: usize = 72;
/// Bound on reply datagrams per dump, so a misbehaving kernel cannot loop us forever.
const MAX_REPLIES: usize = 100_000;

/// LISTEN TCP sockets of both families on `port`.
pub(crate) fn listening_sockets(port: u16) -> io::Result<Vec<SocketRow>> {
    dump(port, Some(port))
}

/// Dumps LISTEN sockets, asking the kernel for `port` only (it compares `idiag_sport` while
/// walking the listening hash, so the reply holds only that port's sockets however many
/// others listen); `keep` filters again on our side (`None`: keep whatever the kernel sent).
fn dump(port: u16, keep: Option<u16>) -> io::Result<Vec<SocketRow>> {
    let fd = socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(netlink::SOCK_DIAG),
    )?;
    let mut rows = Vec::new();
    for (seq, family) in [(1u32, AF_INET), (2u32, AF_INET6)] {
        send(&fd, &request(family, seq, port), SendFlags::empty())?;
        let mut buf = vec![0u8; 32 * 1024];
        let mut done = false;
        for _ in 0..MAX_REPLIES {
            let (_, len) = recv(&fd, &mut buf[..], RecvFlags::empty())?;
            let len = len.min(buf.len());
            done = parse_replies(&buf[..len], seq, keep, &mut rows)?;
            if done {
                break;
            }
        }
        if !done {
            return Err(io::Error::other("sock_diag dump did not finish"));
        }
    }
    Ok(rows)
}

/// `nlmsghdr` + `inet_diag_req_v2` asking for a dump of LISTEN TCP sockets of `family` on
/// local port `port`.
fn request(family: u8, seq: u32, port: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(72);
    m.extend_from_slice(&72u32.to_ne_bytes()); // nlmsg_len
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid
    m.extend_from_slice(&[family, IPPROTO_TCP, 0, 0]); // family, protocol, ext, pad
    m.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes()); // idiag_states
    // inet_diag_sockid: idiag_sport (big-endian) filters listening sockets; the rest zero.
    m.extend_from_slice(&port.to_be_bytes());
    m.resize(72, 0);
    m
}

/// Parses one reply datagram; true once `NLMSG_DONE` was seen.
fn parse_replies(
    mut buf: &[u8],
    seq: u32,
    keep: Option<u16>,
    rows: &mut Vec<SocketRow>,
) -> io::Result<bool> {
    while buf.len() >= NLMSG_HDR_LEN {
        let len = u32_at(buf, 0) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < NLMSG_HDR_LEN || len > buf.len() {
            return Err(io::Error::other("sock_diag reply has a bad length"));
        }
        let body = &buf[NLMSG_HDR_LEN..len];
        if u32_at(buf, 8) == seq {
            match kind {
                NLMSG_DONE => return Ok(true),
                NLMSG_ERROR => {
                    let errno = body
                        .get(..4)
                        .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                    return Err(io::Error::from_raw_os_error(errno.saturating_neg()));
                }
                SOCK_DIAG_BY_FAMILY => {
                    if let Some(row) = parse_diag_msg(body)
                        && keep.is_none_or(|port| row.local.port() == port)
                    {
                        rows.push(row);
                    }
                }
                _ => {}
            }
        }
        // Messages are 4-byte aligned.
        let next = (len + 3) & !3;
        buf = buf.get(next..).unwrap_or_default();
    }
    Ok(false)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// One `inet_diag_msg`; `None` when too short or of an unknown family.
pub(crate) fn parse_diag_msg(m: &[u8]) -> Option<SocketRow> {
    if m.len() < DIAG_MSG_LEN {
        return None;
    }
    let (family, state) = (m[0], m[1]);
    let port = u16::from_be_bytes([m[4], m[5]]); // idiag_sport is big-endian
    let src = &m[8..24];
    let ip = match family {
        AF_INET => IpAddr::V4(Ipv4Addr::new(src[0], src[1], src[2], src[3])),
        AF_INET6 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(src);
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketRow {
        local: SocketAddr::new(ip, port),
        state,
        uid: u32_at(m, 64),
        inode: u64::from(u32_at(m, 68)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn finds_our_own_listeners_in_both_families() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = v4.local_addr().unwrap().port();
        let rows = listening_sockets(port).unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].local, v4.local_addr().unwrap());
        assert_eq!(rows[0].state, TCP_LISTEN);
        assert_ne!(rows[0].inode, 0);
        if let Ok(v6) = std::net::TcpListener::bind("[::1]:0") {
            let rows = listening_sockets(v6.local_addr().unwrap().port()).unwrap();
            assert!(
                rows.iter().any(|r| r.local == v6.local_addr().unwrap()),
                "{rows:?}"
            );
        }
    }

    #[test]
    fn request_is_72_bytes_asking_for_listen_only() {
        let r = request(AF_INET6, 9, 1455);
        assert_eq!(r.len(), 72);
        assert_eq!(u32_at(&r, 0), 72);
        assert_eq!(r[16], AF_INET6);
        assert_eq!(u32_at(&r, 20), 1 << 10);
        assert_eq!(
            r[24..26],
            1455u16.to_be_bytes(),
            "idiag_sport, network order"
        );
        assert!(r[26..].iter().all(|&b| b == 0));
    }

    #[test]
    fn the_kernel_sends_only_the_asked_port() {
        let others: Vec<_> = (0..5)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let wanted = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = wanted.local_addr().unwrap().port();
        // No filtering on our side: what the kernel sent is what we get.
        let rows = dump(port, None).unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].local, wanted.local_addr().unwrap());
        // Without the kernel filter (port 0 = any), all of them come back.
        let all = dump(0, None).unwrap();
        assert!(all.len() > others.len(), "{}", all.len());
    }

    proptest! {
        #[test]
        fn reply_parser_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..400), port: u16) {
            let mut rows = Vec::new();
            let _ = parse_replies(&buf, 1, Some(port), &mut rows);
        }
    }
}
