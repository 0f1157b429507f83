//! Finding the socket of a local flow, in the network namespace icmpmon
//! runs in: sock_diag (`NETLINK_SOCK_DIAG`, inet_diag) for TCP and UDP,
//! /proc/net/icmp{,6} for ping sockets and /proc/net/raw{,6} for raw ones.
//!
//! netlink-packet-sock-diag builds and parses the inet_diag messages. It
//! cannot send raw_diag's INET_DIAG_REQ_PROTOCOL attribute, and the kernel
//! has no diag module for ping sockets, so those two come from /proc/net,
//! which lists every socket of the namespace with its inode.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr as NlAddr};

/// A socket found: its inode (0: the kernel no longer ties it to a file,
/// e.g. TIME_WAIT) and owner uid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Found {
    pub inode: u64,
    pub uid: u32,
}

/// One sock_diag socket, reused for every lookup.
#[derive(Debug)]
pub(crate) struct SockDiag {
    sock: Socket,
    buf: Vec<u8>,
    seq: u32,
}

impl SockDiag {
    pub fn new() -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_SOCK_DIAG)?;
        sock.bind_auto()?;
        sock.connect(&NlAddr::new(0, 0))?;
        // A lookup must not hang the attribution thread.
        nix::sys::socket::setsockopt(
            &sock,
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(0, 500_000),
        )?;
        Ok(Self {
            sock,
            buf: Vec::with_capacity(16384),
            seq: 0,
        })
    }

    /// The TCP or UDP socket that sent `local → remote` (an exact lookup:
    /// inet_diag finds the socket the kernel would deliver to).
    pub fn inet(
        &mut self,
        proto: u8,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> io::Result<Option<Found>> {
        let v6 = local.is_ipv6();
        let mut id = if v6 {
            SocketId::new_v6()
        } else {
            SocketId::new_v4()
        };
        // udp_dump_one looks the socket up as for a packet from `src` to
        // `dst` ("src and dst are swapped for historical reasons"); TCP
        // takes the socket's own addresses.
        let (src, dst) = if proto == 17 {
            (remote, local)
        } else {
            (local, remote)
        };
        id.source_address = src.ip();
        id.source_port = src.port();
        id.destination_address = dst.ip();
        id.destination_port = dst.port();
        // INET_DIAG_NOCOOKIE: any socket.
        id.cookie = [0xff; 8];
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST;
        header.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family: if v6 { AF_INET6 } else { AF_INET },
                protocol: proto,
                extensions: ExtensionFlags::empty(),
                states: StateFlags::all(),
                socket_id: id,
            })
            .into(),
        );
        msg.finalize();
        let mut out = vec![0; msg.buffer_len()];
        msg.serialize(&mut out);
        self.sock.send(&out, 0)?;
        loop {
            self.buf.clear();
            self.sock.recv(&mut self.buf, 0)?;
            let mut off = 0;
            while let Some(bytes) = self.buf.get(off..).filter(|b| b.len() >= 16) {
                let len = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
                if len < 16 || len > bytes.len() {
                    break;
                }
                off += (len + 3) & !3;
                let Ok(m) = NetlinkMessage::<SockDiagMessage>::deserialize(&bytes[..len]) else {
                    continue;
                };
                if m.header.sequence_number != self.seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                        return Ok(Some(Found {
                            inode: u64::from(r.header.inode),
                            uid: r.header.uid,
                        }));
                    }
                    // ENOENT: no such socket; other errors alike for us.
                    NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => return Ok(None),
                    _ => {}
                }
            }
        }
    }
}

/// This host's addresses (of icmpmon's network namespace): a flow whose
/// local end is not one of them is not a local socket's. `None` when they
/// cannot be read (the caller keeps what it had).
pub(crate) fn local_addresses() -> Option<std::collections::HashSet<IpAddr>> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    let set = addrs
        .filter_map(|i| {
            let a = i.address?;
            a.as_sockaddr_in()
                .map(|s| IpAddr::V4(s.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
        })
        .collect();
    Some(set)
}

/// One line of /proc/net/{icmp,icmp6,raw,raw6}: local address, the "port"
/// (a ping socket's echo id; a raw socket's protocol), uid and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcSocket {
    pub local: IpAddr,
    pub port: u16,
    pub uid: u32,
    pub inode: u64,
}

/// Parses a /proc/net socket list (ping and raw sockets share its format).
pub(crate) fn proc_sockets(text: &str) -> Vec<ProcSocket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (addr, port) = f.get(1)?.split_once(':')?;
            Some(ProcSocket {
                local: proc_addr(addr)?,
                port: u16::from_str_radix(port, 16).ok()?,
                uid: f.get(7)?.parse().ok()?,
                inode: f.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// /proc/net's hex address: 32-bit words in host order.
fn proc_addr(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| {
        u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16)
            .ok()
            .map(|w| w.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// The socket an echo request with this id left from: a ping socket bound
/// to the id (and to the address or any), else the only raw socket of the
/// protocol (with several raw sockets the sender cannot be told: none).
pub(crate) fn echo_socket(v6: bool, local: IpAddr, id: u16) -> Option<ProcSocket> {
    let read = |name: &str| {
        let path = format!("/proc/net/{name}{}", if v6 { "6" } else { "" });
        std::fs::read_to_string(path)
            .map(|t| proc_sockets(&t))
            .unwrap_or_default()
    };
    let ping = read("icmp");
    if let Some(s) = ping
        .iter()
        .find(|s| s.port == id && (s.local == local || s.local.is_unspecified()))
    {
        return Some(*s);
    }
    let proto = if v6 { 58 } else { 1 };
    let raw: Vec<ProcSocket> = read("raw")
        .into_iter()
        .filter(|s| s.port == proto)
        .collect();
    match raw.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_lines_give_address_port_uid_and_inode() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                  \x20  5: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 123456 2 0000000000000000 0\n";
        let s = proc_sockets(v4);
        assert_eq!(
            s,
            vec![ProcSocket {
                local: "127.0.0.1".parse().unwrap(),
                port: 0x1f90,
                uid: 1000,
                inode: 123456
            }]
        );
        let v6 = "header\n   0: 00000000000000000000000001000000:0001 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 42 2 0000000000000000 0\n";
        assert_eq!(proc_sockets(v6)[0].local, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(proc_sockets("header\ngarbage line\n"), vec![]);
    }
}
