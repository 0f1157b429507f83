//! One logged packet: parsing an NFULNL_MSG_PACKET message (with
//! `NlasIterator`: netlink-packet-netfilter's packet header and timestamp
//! fields are private, and one bad attribute fails its whole message) and
//! counting the gaps in a group's numbering.

use netlink_packet_core::NlasIterator;

use crate::netlink;
use icmpmon_core::event::{Direction, RawPacket};

pub(super) const MSG_PACKET: u16 =
    ((libc::NFNL_SUBSYS_ULOG as u16) << 8) | libc::NFULNL_MSG_PACKET as u16;
pub(super) const NFULA_PACKET_HDR: u16 = libc::NFULA_PACKET_HDR as u16;
pub(super) const NFULA_TIMESTAMP: u16 = libc::NFULA_TIMESTAMP as u16;
pub(super) const NFULA_IFINDEX_INDEV: u16 = libc::NFULA_IFINDEX_INDEV as u16;
pub(super) const NFULA_IFINDEX_OUTDEV: u16 = libc::NFULA_IFINDEX_OUTDEV as u16;
pub(super) const NFULA_PAYLOAD: u16 = libc::NFULA_PAYLOAD as u16;
pub(super) const NFULA_SEQ: u16 = libc::NFULA_SEQ as u16;
pub(super) const NFULA_SEQ_GLOBAL: u16 = libc::NFULA_SEQ_GLOBAL as u16;
pub(super) const NF_INET_PRE_ROUTING: u8 = libc::NF_INET_PRE_ROUTING as u8;
pub(super) const NF_INET_LOCAL_OUT: u8 = libc::NF_INET_LOCAL_OUT as u8;

/// One logged packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Logged<'a> {
    pub(super) group: u16,
    pub(super) seq: Option<u32>,
    /// The namespace's log sequence, across groups: the hooks' order.
    pub(super) global_seq: Option<u32>,
    pub(super) packet: RawPacket<'a>,
}

/// The packet's length on the wire, from its IP header (NFLOG sends no
/// original length).
pub(super) fn ip_length(data: &[u8]) -> Option<u32> {
    let be16 = |at: usize| {
        Some(u32::from(u16::from_be_bytes([
            *data.get(at)?,
            *data.get(at + 1)?,
        ])))
    };
    match data.first()? >> 4 {
        4 => be16(2),
        6 => Some(40 + be16(4)?),
        _ => None,
    }
}

/// Parses an NFULNL_MSG_PACKET payload (after the netlink header).
pub(super) fn parse_packet(payload: &[u8], received_ns: u64) -> Option<Logged<'_>> {
    let group = u16::from_be_bytes(payload.get(2..4)?.try_into().ok()?);
    let attrs = payload.get(4..)?; // nfgenmsg
    let (mut hook, mut seq, mut global_seq, mut ts_ns) = (None, None, None, None);
    let (mut data, mut indev, mut outdev) = (None, 0, 0);
    let be32 = |v: &[u8]| Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?));
    for nla in NlasIterator::new(attrs) {
        let nla = nla.ok()?;
        let kind = nla.kind() & 0x3fff;
        let v = netlink::nla_value(nla);
        match kind {
            NFULA_PACKET_HDR if v.len() >= 3 => hook = Some(v[2]),
            NFULA_PAYLOAD => data = Some(v),
            NFULA_IFINDEX_INDEV => indev = be32(v).unwrap_or(0),
            NFULA_IFINDEX_OUTDEV => outdev = be32(v).unwrap_or(0),
            NFULA_SEQ => seq = be32(v),
            NFULA_SEQ_GLOBAL => global_seq = be32(v),
            NFULA_TIMESTAMP => ts_ns = netlink::timestamp_ns(v),
            _ => {}
        }
    }
    let (direction, ifindex) = match hook? {
        NF_INET_LOCAL_OUT => (Direction::Out, outdev),
        NF_INET_PRE_ROUTING => (Direction::In, indev),
        _ => (Direction::Unknown, indev.max(outdev)),
    };
    let data = data?;
    Some(Logged {
        group,
        seq,
        global_seq,
        packet: RawPacket {
            drop: None,
            // Output packets carry no timestamp: their group is unbatched,
            // so the receive time is close behind the send time.
            ts_ns: ts_ns.unwrap_or(received_ns),
            mono_ns: None,
            direction,
            ifindex,
            orig_len: ip_length(data).unwrap_or(data.len() as u32),
            data,
        },
    })
}

/// Packets missing before `logged` in its group's numbering, which count
/// up from 0 per group (`next`: the number expected per group, in and out
/// of the pair from `base`).
pub(super) fn count_gap(next: &mut [Option<u32>; 2], base: u16, logged: &Logged) -> u64 {
    let Some(seq) = logged.seq else { return 0 };
    let slot = match logged.group.wrapping_sub(base) {
        0 => 0,
        1 => 1,
        _ => return 0,
    };
    let gap = seq.wrapping_sub(next[slot].unwrap_or(0));
    next[slot] = Some(seq.wrapping_add(1));
    // A number before the expected one (reordered) is no gap.
    if gap < u32::MAX / 2 {
        u64::from(gap)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nflog::group::out_threshold;
    use proptest::prelude::*;

    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize(out.len().next_multiple_of(4), 0);
        out
    }

    fn packet_msg(group: u16, hook: u8, seq: u32, ts: bool) -> Vec<u8> {
        let mut m = vec![2, 0];
        m.extend_from_slice(&group.to_be_bytes());
        m.extend(nla(NFULA_PACKET_HDR, &[0x08, 0x00, hook, 0]));
        m.extend(nla(NFULA_IFINDEX_INDEV, &3u32.to_be_bytes()));
        m.extend(nla(NFULA_IFINDEX_OUTDEV, &5u32.to_be_bytes()));
        m.extend(nla(NFULA_PAYLOAD, &[0x45, 0, 0x05, 0xdc, 0, 0]));
        m.extend(nla(NFULA_SEQ, &seq.to_be_bytes()));
        m.extend(nla(NFULA_SEQ_GLOBAL, &(seq + 1000).to_be_bytes()));
        if ts {
            let mut t = 5u64.to_be_bytes().to_vec();
            t.extend_from_slice(&7u64.to_be_bytes());
            m.extend(nla(NFULA_TIMESTAMP, &t));
        }
        m
    }

    #[test]
    fn in_packets_carry_the_kernel_time_and_in_device() {
        let m = packet_msg(40, NF_INET_PRE_ROUTING, 9, true);
        let l = parse_packet(&m, 99).unwrap();
        assert_eq!(l.group, 40);
        assert_eq!(l.seq, Some(9));
        assert_eq!(l.global_seq, Some(1009));
        assert_eq!(l.packet.direction, Direction::In);
        assert_eq!(l.packet.ifindex, 3);
        assert_eq!(l.packet.ts_ns, 5_000_007_000);
        // From the IP header's total length, not the copied bytes.
        assert_eq!(l.packet.orig_len, 1500);
    }

    #[test]
    fn out_packets_take_the_receive_time_and_out_device() {
        let m = packet_msg(41, NF_INET_LOCAL_OUT, 0, false);
        let l = parse_packet(&m, 99).unwrap();
        assert_eq!(l.packet.direction, Direction::Out);
        assert_eq!(l.packet.ifindex, 5);
        assert_eq!(l.packet.ts_ns, 99);
    }

    #[test]
    fn sequence_gaps_per_group() {
        let mut next = [None; 2];
        let mut gap = |group, seq| {
            let m = packet_msg(group, 0, seq, true);
            count_gap(&mut next, 40, &parse_packet(&m, 0).unwrap())
        };
        assert_eq!(gap(40, 0), 0);
        assert_eq!(gap(41, 0), 0);
        assert_eq!(gap(40, 1), 0);
        assert_eq!(gap(40, 5), 3);
        assert_eq!(gap(41, 2), 1);
        // Another pair's group, and a number from the past.
        assert_eq!(gap(50, 9), 0);
        assert_eq!(gap(40, 2), 0);
    }

    #[test]
    fn out_batches_follow_the_rate() {
        assert_eq!(out_threshold(0.0, 64), 1);
        assert_eq!(out_threshold(7_000.0, 64), 1);
        assert_eq!(out_threshold(140_000.0, 64), 35);
        assert_eq!(out_threshold(5e6, 64), 64);
        assert_eq!(out_threshold(5e6, 0), 1);
    }

    #[test]
    fn ip_lengths() {
        assert_eq!(ip_length(&[0x45, 0, 0, 84]), Some(84));
        let mut v6 = vec![0x60, 0, 0, 0, 0, 64];
        assert_eq!(ip_length(&v6), Some(104));
        v6.truncate(5);
        assert_eq!(ip_length(&v6), None);
        assert_eq!(ip_length(&[]), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        #[test]
        fn arbitrary_messages_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_packet(&bytes, 0);
        }

        #[test]
        fn mutated_messages_never_panic(pos in 0usize..100, val in any::<u8>(), cut in 0usize..100) {
            let mut m = packet_msg(1, 0, 0, true);
            let p = pos % m.len();
            m[p] = val;
            m.truncate(m.len() - cut.min(m.len()));
            let _ = parse_packet(&m, 0);
        }
    }
}
