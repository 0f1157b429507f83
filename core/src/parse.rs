//! The one parser: a `RawPacket` (bytes from the IP header on) becomes an
//! `IcmpEvent`, for every source. Built on `pnet_packet` views; every length
//! is checked before a view is made, so bad input is an error, never a panic.

use std::net::IpAddr;

use pnet_packet::icmp::{destination_unreachable::DestinationUnreachablePacket, IcmpPacket};
use pnet_packet::icmpv6::ndp::{NeighborAdvertPacket, NeighborSolicitPacket, RedirectPacket};
use pnet_packet::icmpv6::Icmpv6Packet;
use pnet_packet::ipv4::Ipv4Packet;
use pnet_packet::ipv6::Ipv6Packet;
use pnet_packet::Packet;

use crate::event::{Echo, Family, IcmpEvent, Info, Quoted, RawPacket};

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
/// Every ICMP/ICMPv6 message has at least this much header.
const ICMP_HEADER_LEN: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty packet")]
    Empty,
    #[error("IP version {0} is neither 4 nor 6")]
    NotIp(u8),
    #[error("IP header cut short")]
    ShortIp,
    #[error("IPv4 header length field below 20 bytes")]
    BadIhl,
    #[error("IPv4 total length shorter than its header")]
    BadTotalLength,
    #[error("not ICMP (protocol {0})")]
    NotIcmp(u8),
    #[error("fragment without the ICMP header")]
    Fragment,
    #[error("ICMP header cut short")]
    ShortIcmp,
}

impl ParseError {
    /// A short stable name, for counters and summaries.
    pub fn label(&self) -> &'static str {
        match self {
            ParseError::Empty => "empty",
            ParseError::NotIp(_) => "not-ip",
            ParseError::ShortIp | ParseError::BadIhl | ParseError::BadTotalLength => {
                "bad-ip-header"
            }
            ParseError::NotIcmp(_) => "not-icmp",
            ParseError::Fragment => "fragment",
            ParseError::ShortIcmp => "short-icmp",
        }
    }
}

/// An IP header and where its upper-layer data starts.
struct IpView<'a> {
    family: Family,
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    /// Upper-layer protocol (after IPv6 extension headers).
    proto: u8,
    /// Upper-layer bytes present in the buffer.
    upper: &'a [u8],
    /// Upper-layer length the header claims (on the wire).
    upper_len: u32,
    /// The walk reached the upper layer (not cut short inside extensions).
    complete: bool,
    /// A fragment other than the first: no upper-layer header here.
    later_fragment: bool,
}

fn ip_view(data: &[u8]) -> Result<IpView<'_>, ParseError> {
    let version = data.first().ok_or(ParseError::Empty)? >> 4;
    match version {
        4 => ipv4_view(data),
        6 => ipv6_view(data),
        v => Err(ParseError::NotIp(v)),
    }
}

fn ipv4_view(data: &[u8]) -> Result<IpView<'_>, ParseError> {
    let ip = Ipv4Packet::new(data).ok_or(ParseError::ShortIp)?;
    let ihl = usize::from(ip.get_header_length()) * 4;
    if ihl < Ipv4Packet::minimum_packet_size() {
        return Err(ParseError::BadIhl);
    }
    if data.len() < ihl {
        return Err(ParseError::ShortIp);
    }
    let total = usize::from(ip.get_total_length());
    if total < ihl {
        return Err(ParseError::BadTotalLength);
    }
    let end = total.min(data.len());
    Ok(IpView {
        family: Family::V4,
        src: IpAddr::V4(ip.get_source()),
        dst: IpAddr::V4(ip.get_destination()),
        ttl: ip.get_ttl(),
        proto: ip.get_next_level_protocol().0,
        upper: &data[ihl..end],
        upper_len: (total - ihl) as u32,
        complete: true,
        later_fragment: ip.get_fragment_offset() != 0,
    })
}

fn ipv6_view(data: &[u8]) -> Result<IpView<'_>, ParseError> {
    const FIXED: usize = 40;
    let ip = Ipv6Packet::new(data).ok_or(ParseError::ShortIp)?;
    let payload_len = usize::from(ip.get_payload_length());
    // Payload length 0 means a jumbogram: trust what was captured.
    let end = if payload_len == 0 {
        data.len()
    } else {
        (FIXED + payload_len).min(data.len())
    };
    let claimed_end = if payload_len == 0 {
        data.len()
    } else {
        FIXED + payload_len
    };

    let mut proto = ip.get_next_header().0;
    let mut off = FIXED;
    let mut complete = true;
    let mut later_fragment = false;
    // Skip extension headers: hop-by-hop, routing, fragment, AH, dest opts,
    // mobility, HIP, shim6.
    loop {
        let hdr_len = match proto {
            0 | 43 | 60 | 135 | 139 | 140 => data.get(off + 1).map(|l| (usize::from(*l) + 1) * 8),
            44 => {
                if let Some(b) = data.get(off + 2..off + 4) {
                    later_fragment = u16::from_be_bytes([b[0], b[1]]) >> 3 != 0;
                }
                Some(8)
            }
            51 => data.get(off + 1).map(|l| (usize::from(*l) + 2) * 4),
            _ => break,
        };
        match (hdr_len, data.get(off)) {
            (Some(len), Some(next)) if off + len <= end => {
                proto = *next;
                off += len;
            }
            _ => {
                complete = false;
                break;
            }
        }
        if later_fragment {
            break;
        }
    }
    Ok(IpView {
        family: Family::V6,
        src: IpAddr::V6(ip.get_source()),
        dst: IpAddr::V6(ip.get_destination()),
        ttl: ip.get_hop_limit(),
        proto,
        upper: data.get(off..end).unwrap_or(&[]),
        upper_len: claimed_end.saturating_sub(off) as u32,
        complete,
        later_fragment,
    })
}

/// Protocols whose first four bytes are the source and destination ports.
fn has_ports(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 33 | 132 | 136)
}

/// The packet quoted by an ICMP error, as far as it was captured.
fn quoted(bytes: &[u8]) -> Option<Quoted> {
    let ip = ip_view(bytes).ok()?;
    let ports = if ip.complete && !ip.later_fragment && has_ports(ip.proto) {
        ip.upper.get(..4)
    } else {
        None
    };
    // ICMP type 8 / ICMPv6 128, code 0, checksum, then the identifier.
    let echo_request = match (ip.family, ip.proto) {
        (Family::V4, 1) => 8,
        (Family::V6, 58) => 128,
        _ => 0,
    };
    let echo_id = match ip.upper.get(..6) {
        Some(h) if !ip.later_fragment && echo_request != 0 && h[0] == echo_request => {
            Some(u16::from_be_bytes([h[4], h[5]]))
        }
        _ => None,
    };
    Some(Quoted {
        proto: ip.proto,
        src: ip.src,
        dst: ip.dst,
        sport: ports.map(|p| u16::from_be_bytes([p[0], p[1]])),
        dport: ports.map(|p| u16::from_be_bytes([p[2], p[3]])),
        echo_id,
    })
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// A digest of the captured echo data: enough to tell a reply whose data
/// differs from its request's, without keeping the bytes. foldhash with a
/// fixed seed reads 16 bytes a step (FNV-1a, a byte a step, was a tenth
/// of a flood's parsing and aggregation); not a defence against forgery,
/// which a reply's sender can do anyway.
pub fn digest(bytes: &[u8]) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = foldhash::fast::FixedState::with_seed(0x1c3b_9a0d_e5f7_2468).build_hasher();
    h.write(bytes);
    h.finish()
}

/// Type-specific fields of an ICMPv4 message (`icmp` is at least 8 bytes).
fn icmpv4_details(icmp: &[u8], upper_len: u32) -> (Option<Echo>, Option<Quoted>, Option<Info>) {
    let view = IcmpPacket::new(icmp).expect("length checked by caller");
    let rest = view.payload(); // 4 bytes of header, then the body
    let (t, code) = (view.get_icmp_type().0, view.get_icmp_code().0);
    let echo = matches!(t, 0 | 8).then(|| Echo {
        id: u16::from_be_bytes([rest[0], rest[1]]),
        seq: u16::from_be_bytes([rest[2], rest[3]]),
        payload_len: upper_len.saturating_sub(ICMP_HEADER_LEN as u32),
        payload_digest: digest(&icmp[ICMP_HEADER_LEN..]),
    });
    let quote = matches!(t, 3 | 4 | 5 | 11 | 12)
        .then(|| quoted(&rest[4..]))
        .flatten();
    let info = match (t, code) {
        (3, 4) => DestinationUnreachablePacket::new(icmp)
            .map(|p| Info::Mtu(u32::from(p.get_next_hop_mtu()))),
        (5, _) => Some(Info::Gateway(IpAddr::from([
            rest[0], rest[1], rest[2], rest[3],
        ]))),
        (12, _) => Some(Info::Pointer(u32::from(rest[0]))),
        _ => None,
    };
    (echo, quote, info)
}

/// Type-specific fields of an ICMPv6 message (`icmp` is at least 8 bytes).
fn icmpv6_details(icmp: &[u8], upper_len: u32) -> (Option<Echo>, Option<Quoted>, Option<Info>) {
    let view = Icmpv6Packet::new(icmp).expect("length checked by caller");
    let rest = view.payload();
    let t = view.get_icmpv6_type().0;
    let echo = matches!(t, 128 | 129).then(|| Echo {
        id: u16::from_be_bytes([rest[0], rest[1]]),
        seq: u16::from_be_bytes([rest[2], rest[3]]),
        payload_len: upper_len.saturating_sub(ICMP_HEADER_LEN as u32),
        payload_digest: digest(&icmp[ICMP_HEADER_LEN..]),
    });
    let quote = matches!(t, 1..=4).then(|| quoted(&rest[4..])).flatten();
    let info = match t {
        2 => Some(Info::Mtu(be_u32(rest))),
        4 => Some(Info::Pointer(be_u32(rest))),
        135 => NeighborSolicitPacket::new(icmp).map(|p| Info::Target(p.get_target_addr().into())),
        136 => NeighborAdvertPacket::new(icmp).map(|p| Info::Target(p.get_target_addr().into())),
        137 => RedirectPacket::new(icmp).map(|p| Info::Gateway(p.get_target_addr().into())),
        _ => None,
    };
    (echo, quote, info)
}

/// Parses one packet into an ICMP event.
pub fn parse(raw: &RawPacket) -> Result<IcmpEvent, ParseError> {
    let ip = ip_view(raw.data)?;
    let want = match ip.family {
        Family::V4 => IPPROTO_ICMP,
        Family::V6 => IPPROTO_ICMPV6,
    };
    if ip.later_fragment {
        return Err(ParseError::Fragment);
    }
    if !ip.complete {
        return Err(ParseError::ShortIp);
    }
    if ip.proto != want {
        return Err(ParseError::NotIcmp(ip.proto));
    }
    if ip.upper.len() < ICMP_HEADER_LEN {
        return Err(ParseError::ShortIcmp);
    }
    let (echo, quoted, info) = match ip.family {
        Family::V4 => icmpv4_details(ip.upper, ip.upper_len),
        Family::V6 => icmpv6_details(ip.upper, ip.upper_len),
    };
    Ok(IcmpEvent {
        ts_ns: raw.ts_ns,
        mono_ns: raw.mono_ns,
        direction: raw.direction,
        ifindex: raw.ifindex,
        family: ip.family,
        src: ip.src,
        dst: ip.dst,
        ttl: ip.ttl,
        length: raw.orig_len,
        icmp_type: ip.upper[0],
        icmp_code: ip.upper[1],
        echo,
        quoted,
        info,
        drop: raw.drop.cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Direction;
    use proptest::prelude::*;

    /// The parser on `data` as a source would hand it on.
    fn parse_bytes(data: &[u8]) -> Result<IcmpEvent, ParseError> {
        parse(&RawPacket {
            drop: None,
            mono_ns: None,
            ts_ns: 1,
            direction: Direction::In,
            ifindex: 1,
            orig_len: data.len() as u32,
            data,
        })
    }

    fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let total = (20 + payload.len()) as u16;
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(payload);
        p
    }

    fn ipv6(next: u8, src: [u8; 16], dst: [u8; 16], payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        p.extend_from_slice(&[next, 64]);
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(payload);
        p
    }

    const LO6: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

    #[test]
    fn ipv4_echo_request() {
        let icmp = [8, 0, 0, 0, 0x12, 0x34, 0, 7, b'a', b'b'];
        let ev = parse_bytes(&ipv4(1, [127, 0, 0, 1], [127, 0, 0, 2], &icmp)).unwrap();
        assert_eq!(ev.kind(), "echo-request");
        assert_eq!(ev.family, Family::V4);
        assert_eq!(ev.src, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(ev.dst, IpAddr::from([127, 0, 0, 2]));
        assert_eq!(ev.ttl, 64);
        assert_eq!(
            ev.echo,
            Some(Echo {
                id: 0x1234,
                seq: 7,
                payload_len: 2,
                payload_digest: digest(b"ab"),
            })
        );
        assert_eq!(ev.quoted, None);
    }

    #[test]
    fn ipv4_port_unreachable_quotes_udp() {
        let udp = [0x9c, 0x40, 0x82, 0x35, 0, 8, 0, 0];
        let inner = ipv4(17, [10, 0, 0, 1], [10, 0, 0, 2], &udp);
        let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&inner);
        let ev = parse_bytes(&ipv4(1, [10, 0, 0, 2], [10, 0, 0, 1], &icmp)).unwrap();
        assert_eq!(ev.kind(), "port-unreachable");
        let q = ev.quoted.unwrap();
        assert_eq!(q.proto, 17);
        assert_eq!(q.src, IpAddr::from([10, 0, 0, 1]));
        assert_eq!(q.sport, Some(40000));
        assert_eq!(q.dport, Some(33333));
    }

    #[test]
    fn ipv4_frag_needed_and_redirect_info() {
        let inner = ipv4(6, [1, 1, 1, 1], [2, 2, 2, 2], &[0, 80, 1, 187, 0, 0, 0, 0]);
        let mut icmp = vec![3, 4, 0, 0, 0, 0, 0x05, 0x78];
        icmp.extend_from_slice(&inner);
        let ev = parse_bytes(&ipv4(1, [3, 3, 3, 3], [1, 1, 1, 1], &icmp)).unwrap();
        assert_eq!(ev.kind(), "frag-needed");
        assert_eq!(ev.info.unwrap().to_string(), "mtu=1400");
        assert_eq!(ev.quoted.unwrap().dport, Some(443));

        let mut icmp = vec![5, 1, 0, 0, 192, 0, 2, 1];
        icmp.extend_from_slice(&inner);
        let ev = parse_bytes(&ipv4(1, [3, 3, 3, 3], [1, 1, 1, 1], &icmp)).unwrap();
        assert_eq!(ev.kind(), "redirect");
        assert_eq!(ev.info.unwrap().to_string(), "gateway=192.0.2.1");
    }

    #[test]
    fn ipv6_echo_behind_extension_header() {
        // Hop-by-hop (8 bytes) then ICMPv6 echo reply.
        let mut payload = vec![58, 0, 1, 4, 0, 0, 0, 0];
        payload.extend_from_slice(&[129, 0, 0, 0, 0, 5, 0, 9]);
        let ev = parse_bytes(&ipv6(0, LO6, LO6, &payload)).unwrap();
        assert_eq!(ev.kind(), "echo-reply");
        assert_eq!(ev.echo.unwrap().id, 5);
        assert_eq!(ev.echo.unwrap().seq, 9);
    }

    #[test]
    fn ipv6_packet_too_big_quotes_tcp() {
        let inner = ipv6(6, LO6, LO6, &[0x1f, 0x90, 0, 22, 0, 0, 0, 0]);
        let mut icmp = vec![2, 0, 0, 0, 0, 0, 0x05, 0xdc];
        icmp.extend_from_slice(&inner);
        let ev = parse_bytes(&ipv6(58, LO6, LO6, &icmp)).unwrap();
        assert_eq!(ev.kind(), "packet-too-big");
        assert_eq!(ev.info, Some(Info::Mtu(1500)));
        let q = ev.quoted.unwrap();
        assert_eq!((q.proto, q.sport, q.dport), (6, Some(8080), Some(22)));
    }

    #[test]
    fn ipv6_neighbor_solicitation_target() {
        let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&LO6);
        let ev = parse_bytes(&ipv6(58, LO6, LO6, &icmp)).unwrap();
        assert_eq!(ev.kind(), "neighbor-solicitation");
        assert_eq!(ev.info.unwrap().to_string(), "target=::1");
    }

    #[test]
    fn errors_are_classified() {
        assert_eq!(parse_bytes(&[]), Err(ParseError::Empty));
        assert_eq!(parse_bytes(&[0x20; 30]), Err(ParseError::NotIp(2)));
        assert_eq!(parse_bytes(&[0x45; 10]), Err(ParseError::ShortIp));
        let mut bad_ihl = ipv4(1, [1; 4], [2; 4], &[8, 0, 0, 0, 0, 0, 0, 0]);
        bad_ihl[0] = 0x43;
        assert_eq!(parse_bytes(&bad_ihl), Err(ParseError::BadIhl));
        let udp = ipv4(17, [1; 4], [2; 4], &[0; 8]);
        assert_eq!(parse_bytes(&udp), Err(ParseError::NotIcmp(17)));
        let short = ipv4(1, [1; 4], [2; 4], &[8, 0, 0]);
        assert_eq!(parse_bytes(&short), Err(ParseError::ShortIcmp));
        let mut frag = ipv4(1, [1; 4], [2; 4], &[0; 8]);
        frag[7] = 10;
        assert_eq!(parse_bytes(&frag), Err(ParseError::Fragment));
    }

    /// An error about a ping quotes the echo request: its identifier
    /// names the pinging socket. Other quoted ICMP (a reply) has none.
    #[test]
    fn a_quoted_echo_request_gives_its_identifier() {
        let ping = ipv4(
            1,
            [10, 0, 0, 1],
            [10, 0, 0, 9],
            &[8, 0, 0, 0, 0x12, 0x34, 0, 1],
        );
        let mut icmp = vec![3, 1, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&ping);
        let ev = parse_bytes(&ipv4(1, [10, 0, 0, 254], [10, 0, 0, 1], &icmp)).unwrap();
        let q = ev.quoted.unwrap();
        assert_eq!((q.proto, q.echo_id, q.sport), (1, Some(0x1234), None));

        let ping6 = ipv6(58, LO6, LO6, &[128, 0, 0, 0, 0, 7, 0, 1]);
        let mut icmp = vec![1, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&ping6);
        let ev = parse_bytes(&ipv6(58, LO6, LO6, &icmp)).unwrap();
        assert_eq!(ev.quoted.unwrap().echo_id, Some(7));

        let reply = ipv4(
            1,
            [10, 0, 0, 1],
            [10, 0, 0, 9],
            &[0, 0, 0, 0, 0x12, 0x34, 0, 1],
        );
        let mut icmp = vec![3, 1, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&reply);
        let ev = parse_bytes(&ipv4(1, [10, 0, 0, 254], [10, 0, 0, 1], &icmp)).unwrap();
        assert_eq!(ev.quoted.unwrap().echo_id, None);
    }

    #[test]
    fn truncated_quote_keeps_addresses() {
        // The quoted IPv4 header is complete but its UDP header is cut.
        let inner = ipv4(17, [10, 0, 0, 1], [10, 0, 0, 2], &[0x9c, 0x40]);
        let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&inner);
        let ev = parse_bytes(&ipv4(1, [10, 0, 0, 2], [10, 0, 0, 1], &icmp)).unwrap();
        let q = ev.quoted.unwrap();
        assert_eq!((q.proto, q.sport, q.dport), (17, None, None));
    }

    #[test]
    fn digests_tell_different_data_apart() {
        assert_eq!(digest(b"abcdefgh"), digest(b"abcdefgh"));
        assert_ne!(digest(b"abcdefgh"), digest(b"abcdefgi"));
        assert_ne!(digest(b"ab"), digest(b"ba"));
        let long: Vec<u8> = (0..=255).collect();
        let mut flipped = long.clone();
        flipped[200] ^= 1;
        assert_ne!(digest(&long), digest(&flipped));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        #[test]
        fn never_panics_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_bytes(&data);
        }

        #[test]
        fn never_panics_on_mutated_icmp(
            v6 in any::<bool>(),
            body in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            let pkt = if v6 { ipv6(58, LO6, LO6, &body) } else { ipv4(1, [1; 4], [2; 4], &body) };
            if let Ok(ev) = parse_bytes(&pkt) {
                prop_assert!(body.len() >= ICMP_HEADER_LEN);
                prop_assert_eq!(ev.icmp_type, body[0]);
            }
        }
    }
}
