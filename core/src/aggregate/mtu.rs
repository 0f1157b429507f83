//! The path-MTU map: per destination, what frag-needed / packet-too-big
//! reported (the aggregator keeps it in a bounded LRU table).

use std::net::IpAddr;

use foldhash::fast::RandomState;
use lru::LruCache;

use super::addr::Addr;

/// The path MTU reported towards one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathMtu {
    /// The last MTU reported, and the hop that reported it.
    pub mtu: u32,
    pub reporter: IpAddr,
    /// The smallest plausible MTU reported (IPv4 at least 68, IPv6 1280:
    /// an old router's 0 or a spoofed tiny value does not pin it), by
    /// which hop, and when.
    pub smallest: u32,
    pub smallest_reporter: IpAddr,
    pub smallest_ns: u64,
    pub reports: u64,
    /// When the MTU (or the reporting hop) last changed, and when it was
    /// last reported.
    pub changed_ns: u64,
    pub last_ns: u64,
}

/// A frag-needed / packet-too-big towards `dst` saying `mtu`, from `reporter`.
pub(super) fn reported(
    table: &mut LruCache<Addr, PathMtu, RandomState>,
    dst: IpAddr,
    mtu: u32,
    reporter: IpAddr,
    ts_ns: u64,
) {
    let plausible = mtu >= if dst.is_ipv4() { 68 } else { 1280 };
    match table.get_mut(&Addr(dst)) {
        Some(p) => {
            if (p.mtu, p.reporter) != (mtu, reporter) {
                (p.mtu, p.reporter, p.changed_ns) = (mtu, reporter, ts_ns);
            }
            if plausible && (mtu < p.smallest || p.smallest == 0) {
                (p.smallest, p.smallest_reporter, p.smallest_ns) = (mtu, reporter, ts_ns);
            }
            p.last_ns = p.last_ns.max(ts_ns);
            p.reports += 1;
        }
        None => {
            table.put(
                Addr(dst),
                PathMtu {
                    mtu,
                    reporter,
                    smallest: if plausible { mtu } else { 0 },
                    smallest_reporter: reporter,
                    smallest_ns: ts_ns,
                    reports: 1,
                    changed_ns: ts_ns,
                    last_ns: ts_ns,
                },
            );
        }
    }
}
