//! What every source delivers (`RawPacket`) and what the parser makes of it
//! (`IcmpEvent`). Sources, parser, aggregator and exporters meet here.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

/// Which way the packet went, as the capture point saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Received (kernel PRE_ROUTING, so forwarded packets too).
    In,
    /// Sent by this host (kernel LOCAL_OUT).
    Out,
    /// The source cannot tell (e.g. most capture files).
    Unknown,
    /// The kernel dropped it (drop tracing): `RawPacket::drop` says why.
    Drop,
}

impl Direction {
    /// In `index` order.
    pub const ALL: [Direction; 4] = [
        Direction::In,
        Direction::Out,
        Direction::Unknown,
        Direction::Drop,
    ];
    /// Entries of a per-direction counter array.
    pub const COUNT: usize = Self::ALL.len();

    /// For per-direction counter arrays.
    pub fn index(self) -> usize {
        match self {
            Direction::In => 0,
            Direction::Out => 1,
            Direction::Unknown => 2,
            Direction::Drop => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
            Direction::Unknown => "-",
            Direction::Drop => "drop",
        }
    }
}

/// Why the kernel dropped a packet (`Direction::Drop`). Shared strings: a
/// source names each reason and function once, not per packet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KernelDrop {
    /// The kernel's name for the reason, without `SKB_DROP_REASON_`
    /// (`NETFILTER_DROP`, `IP_RPFILTER`, …).
    pub reason: Arc<str>,
    /// The kernel function that dropped it (`nft_do_chain`), or its
    /// address when it has no symbol.
    pub function: Arc<str>,
}

/// One captured packet, from its IP header on, as every source yields it:
/// borrowed from where the source read it, or from the `Batch` that
/// carries it to the parser (no allocation per packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawPacket<'a> {
    /// Wall-clock time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// The same instant on CLOCK_MONOTONIC, where the source has it: round
    /// trips measured on it survive wall-clock steps.
    pub mono_ns: Option<u64>,
    pub direction: Direction,
    /// Interface index, 0 when unknown.
    pub ifindex: u32,
    /// Length of the whole packet on the wire, from the IP header.
    pub orig_len: u32,
    /// The first bytes of the packet (at most the snap length).
    pub data: &'a [u8],
    /// Set on `Direction::Drop` packets.
    pub drop: Option<&'a KernelDrop>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn number(self) -> u8 {
        match self {
            Family::V4 => 4,
            Family::V6 => 6,
        }
    }
}

/// Identifier and sequence number of an echo request or reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo {
    pub id: u16,
    pub seq: u16,
    /// Bytes of echo data after the 8-byte ICMP header, on the wire.
    pub payload_len: u32,
    /// A digest of the captured echo data (see `parse`), to compare a
    /// reply's data with its request's.
    pub payload_digest: u64,
}

/// The packet an ICMP error message quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quoted {
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Ports of TCP, UDP, SCTP, DCCP and UDP-Lite, when quoted.
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// The identifier of a quoted echo request (an error about a ping):
    /// with `src`, it names the pinging socket.
    pub echo_id: Option<u16>,
}

/// Type-specific detail carried in the ICMP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Info {
    /// Next-hop MTU of frag-needed / packet-too-big.
    Mtu(u32),
    /// Better first hop of a redirect.
    Gateway(IpAddr),
    /// Target address of neighbour solicitation / advertisement.
    Target(IpAddr),
    /// Offending octet of a parameter problem.
    Pointer(u32),
}

impl std::fmt::Display for Info {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Info::Mtu(m) => write!(f, "mtu={m}"),
            Info::Gateway(a) => write!(f, "gateway={a}"),
            Info::Target(a) => write!(f, "target={a}"),
            Info::Pointer(p) => write!(f, "pointer={p}"),
        }
    }
}

/// One ICMP or ICMPv6 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcmpEvent {
    pub ts_ns: u64,
    /// See `RawPacket::mono_ns`.
    pub mono_ns: Option<u64>,
    pub direction: Direction,
    pub ifindex: u32,
    pub family: Family,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// Packet length from the IP header, on the wire.
    pub length: u32,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub echo: Option<Echo>,
    pub quoted: Option<Quoted>,
    pub info: Option<Info>,
    /// Why the kernel dropped it (`Direction::Drop`).
    pub drop: Option<KernelDrop>,
}

impl IcmpEvent {
    /// The clock round trips are measured on: monotonic where the source
    /// gives it (every packet of a run comes from one source), else the
    /// wall clock.
    pub fn rtt_clock_ns(&self) -> u64 {
        self.mono_ns.unwrap_or(self.ts_ns)
    }

    /// The stable name of this message's type and code (CSV `kind`).
    pub fn kind(&self) -> Cow<'static, str> {
        kind_name(self.family, self.icmp_type, self.icmp_code)
    }
}

/// Stable names for ICMP types and codes; unknown ones get a numeric name.
pub fn kind_name(family: Family, icmp_type: u8, code: u8) -> Cow<'static, str> {
    let name = match family {
        Family::V4 => match (icmp_type, code) {
            (0, _) => "echo-reply",
            (3, 0) => "net-unreachable",
            (3, 1) => "host-unreachable",
            (3, 2) => "protocol-unreachable",
            (3, 3) => "port-unreachable",
            (3, 4) => "frag-needed",
            (3, 5) => "source-route-failed",
            (3, 6) => "net-unknown",
            (3, 7) => "host-unknown",
            (3, 8) => "source-host-isolated",
            (3, 9) => "net-prohibited",
            (3, 10) => "host-prohibited",
            (3, 11) => "net-tos-unreachable",
            (3, 12) => "host-tos-unreachable",
            (3, 13) => "admin-prohibited",
            (3, 14) => "host-precedence-violation",
            (3, 15) => "precedence-cutoff",
            (3, _) => "dest-unreachable",
            (4, _) => "source-quench",
            (5, _) => "redirect",
            (8, _) => "echo-request",
            (9, _) => "router-advertisement",
            (10, _) => "router-solicitation",
            (11, 0) => "ttl-exceeded",
            (11, 1) => "reassembly-timeout",
            (11, _) => "time-exceeded",
            (12, _) => "parameter-problem",
            (13, _) => "timestamp-request",
            (14, _) => "timestamp-reply",
            (17, _) => "address-mask-request",
            (18, _) => "address-mask-reply",
            _ => return Cow::Owned(format!("icmp-type-{icmp_type}")),
        },
        Family::V6 => match (icmp_type, code) {
            (1, 0) => "no-route",
            (1, 1) => "admin-prohibited",
            (1, 2) => "beyond-scope",
            (1, 3) => "address-unreachable",
            (1, 4) => "port-unreachable",
            (1, 5) => "source-policy-failed",
            (1, 6) => "reject-route",
            (1, _) => "dest-unreachable",
            (2, _) => "packet-too-big",
            (3, 0) => "ttl-exceeded",
            (3, 1) => "reassembly-timeout",
            (3, _) => "time-exceeded",
            (4, _) => "parameter-problem",
            (128, _) => "echo-request",
            (129, _) => "echo-reply",
            (130, _) => "mld-query",
            (131, _) => "mld-report",
            (132, _) => "mld-done",
            (133, _) => "router-solicitation",
            (134, _) => "router-advertisement",
            (135, _) => "neighbor-solicitation",
            (136, _) => "neighbor-advertisement",
            (137, _) => "redirect",
            (143, _) => "mldv2-report",
            _ => return Cow::Owned(format!("icmpv6-type-{icmp_type}")),
        },
    };
    Cow::Borrowed(name)
}

/// The wall clock now, in nanoseconds since the epoch: the time of live
/// packets the kernel did not stamp, and of the aggregator's ticks.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
