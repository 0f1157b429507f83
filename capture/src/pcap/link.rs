//! Link layers: where the IP packet starts in a captured frame, and the
//! direction when the link layer records it.

use icmpmon_core::event::Direction;
use pcap_file::DataLink;

/// Ethertypes of IPv4, IPv6 and VLAN tags (802.1Q, 802.1ad, old QinQ).
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const VLAN_TAGS: [u16; 3] = [0x8100, 0x88a8, 0x9100];

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Linux cooked capture packet types: 4 is "sent by us".
fn sll_direction(pkttype: u16) -> Direction {
    if pkttype == 4 {
        Direction::Out
    } else {
        Direction::In
    }
}

/// Where the IP packet starts in a frame, and the direction if the link
/// layer records it. `None` when the frame does not carry IPv4/IPv6.
pub(super) fn strip_link(link: DataLink, frame: &[u8]) -> Result<(usize, Direction), Skip> {
    let ip_at = |ethertype: Option<u16>, at: usize, dir| match ethertype {
        Some(ETH_P_IP | ETH_P_IPV6) => Ok((at, dir)),
        _ => Err(Skip::NotIp),
    };
    match link {
        DataLink::ETHERNET => {
            let mut at = 12;
            let mut ethertype = be16(frame, at);
            while ethertype.is_some_and(|t| VLAN_TAGS.contains(&t)) {
                at += 4;
                ethertype = be16(frame, at);
            }
            ip_at(ethertype, at + 2, Direction::Unknown)
        }
        DataLink::LINUX_SLL => ip_at(
            be16(frame, 14),
            16,
            be16(frame, 0).map_or(Direction::Unknown, sll_direction),
        ),
        DataLink::LINUX_SLL2 => ip_at(
            be16(frame, 0),
            20,
            frame
                .get(10)
                .map_or(Direction::Unknown, |t| sll_direction(u16::from(*t))),
        ),
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => Ok((0, Direction::Unknown)),
        DataLink::NULL | DataLink::LOOP => {
            // A 4-byte address family, in the capturing host's byte order
            // (NULL) or network order (LOOP): accept IPv4/IPv6 values of
            // Linux and the BSDs in either.
            let af = frame.get(..4).ok_or(Skip::NotIp)?;
            let af = [af[0], af[1], af[2], af[3]];
            let ip = |v: u32| matches!(v, 2 | 10 | 24 | 28 | 30);
            if ip(u32::from_le_bytes(af)) || ip(u32::from_be_bytes(af)) {
                Ok((4, Direction::Unknown))
            } else {
                Err(Skip::NotIp)
            }
        }
        _ => Err(Skip::UnknownLink),
    }
}

pub(super) enum Skip {
    NotIp,
    UnknownLink,
}

/// One interface of the file: how to strip its frames, how to read times.
#[derive(Debug, Clone, Copy)]
pub(super) struct Interface {
    pub(super) link: DataLink,
    /// Nanoseconds per timestamp unit (pcapng if_tsresol; pcap: 1).
    pub(super) ns_per_unit: u64,
    /// For binary resolutions (2^-n s): n, else None.
    pub(super) binary_exp: Option<u8>,
}

impl Interface {
    pub(super) fn timestamp_ns(&self, units: u128) -> u64 {
        let ns = match self.binary_exp {
            Some(n) => units.saturating_mul(1_000_000_000) >> n,
            None => units.saturating_mul(u128::from(self.ns_per_unit)),
        };
        u64::try_from(ns).unwrap_or(u64::MAX)
    }
}

/// if_tsresol: bit 7 clear = 10^-n s, set = 2^-n s; default 10^-6.
pub(super) fn interface_from_idb(link: DataLink, tsresol: Option<u8>) -> Interface {
    match tsresol {
        Some(r) if r & 0x80 != 0 => Interface {
            link,
            ns_per_unit: 0,
            binary_exp: Some(r & 0x7f),
        },
        Some(r) => Interface {
            link,
            // Finer than 1 ns rounds down to 1 ns units.
            ns_per_unit: 10u64.pow(9u32.saturating_sub(u32::from(r))),
            binary_exp: None,
        },
        None => Interface {
            link,
            ns_per_unit: 1_000,
            binary_exp: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ethernet_with_two_vlan_tags() {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x88, 0xa8, 0, 1, 0x81, 0x00, 0, 2, 0x86, 0xdd, 0x60]);
        let (at, dir) = strip_link(DataLink::ETHERNET, &f).ok().unwrap();
        assert_eq!((at, dir), (22, Direction::Unknown));
        assert_eq!(f[at], 0x60);
    }

    #[test]
    fn cooked_captures_carry_direction() {
        let mut sll = vec![0, 4];
        sll.extend_from_slice(&[0; 12]);
        sll.extend_from_slice(&[0x08, 0x00, 0x45]);
        assert_eq!(
            strip_link(DataLink::LINUX_SLL, &sll).ok(),
            Some((16, Direction::Out))
        );
        let mut sll2 = vec![0x86, 0xdd, 0, 0, 0, 0, 0, 1, 0, 1, 0, 6];
        sll2.extend_from_slice(&[0; 8]);
        assert_eq!(
            strip_link(DataLink::LINUX_SLL2, &sll2).ok(),
            Some((20, Direction::In))
        );
    }

    #[test]
    fn loopback_families_and_non_ip() {
        assert_eq!(
            strip_link(DataLink::NULL, &[2, 0, 0, 0, 0x45]).ok(),
            Some((4, Direction::Unknown))
        );
        assert_eq!(
            strip_link(DataLink::LOOP, &[0, 0, 0, 30, 0x60]).ok(),
            Some((4, Direction::Unknown))
        );
        assert!(strip_link(DataLink::NULL, &[7, 0, 0, 0]).is_err());
        let arp: Vec<u8> = [vec![0; 12], vec![0x08, 0x06]].concat();
        assert!(matches!(
            strip_link(DataLink::ETHERNET, &arp),
            Err(Skip::NotIp)
        ));
        assert!(matches!(
            strip_link(DataLink::IEEE802_11, &arp),
            Err(Skip::UnknownLink)
        ));
    }
}
