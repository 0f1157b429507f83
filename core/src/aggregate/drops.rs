//! ICMP messages the kernel dropped (drop tracing): counts per reason, and
//! per pair of addresses the last reason and function, so that "why no
//! reply" can name what the kernel did with an unanswered peer's packets.
//! Both tables are bounded: reasons past `MAX_REASONS` count as `other`,
//! pairs are kept least recently dropped out.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;

use foldhash::fast::RandomState;
use foldhash::HashMap;
use lru::LruCache;
use serde::Serialize;

use super::addr::Addr;
use crate::event::{IcmpEvent, KernelDrop};

/// Distinct reason names kept; a kernel has about 120.
pub const MAX_REASONS: usize = 256;
/// The reason label of every reason past `MAX_REASONS`.
pub const OTHER_REASON: &str = "other";

/// The drops of one (source, destination) pair of addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PairDrops {
    pub(super) count: u64,
    pub(super) last: KernelDrop,
    pub(super) last_kind: std::borrow::Cow<'static, str>,
    pub(super) last_ns: u64,
}

#[derive(Debug)]
pub(super) struct DropTracker {
    by_reason: HashMap<Arc<str>, u64>,
    other: u64,
    total: u64,
    /// By (src, dst) of the dropped packet.
    pairs: LruCache<(Addr, Addr), PairDrops, RandomState>,
}

/// What the kernel dropped between two addresses, as "why no reply" says
/// it for an unanswered peer pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DropRow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub count: u64,
    /// The last drop's reason, function and message kind.
    pub reason: String,
    pub function: String,
    pub kind: String,
    pub last_ns: u64,
}

impl DropTracker {
    pub(super) fn new(max_pairs: usize) -> Self {
        Self {
            by_reason: HashMap::default(),
            other: 0,
            total: 0,
            pairs: LruCache::with_hasher(
                NonZeroUsize::new(max_pairs.max(1)).expect("max(1)"),
                RandomState::default(),
            ),
        }
    }

    pub(super) fn add(&mut self, ev: &IcmpEvent, d: &KernelDrop) {
        self.total += 1;
        let room = self.by_reason.len() < MAX_REASONS;
        match self.by_reason.get_mut(&d.reason) {
            Some(n) => *n += 1,
            None if room => {
                self.by_reason.insert(Arc::clone(&d.reason), 1);
            }
            None => self.other += 1,
        }
        let key = (Addr(ev.src), Addr(ev.dst));
        let kind = ev.kind();
        match self.pairs.get_mut(&key) {
            Some(p) => {
                p.count += 1;
                p.last.clone_from(d);
                p.last_kind = kind;
                p.last_ns = ev.ts_ns;
            }
            None => {
                self.pairs.put(
                    key,
                    PairDrops {
                        count: 1,
                        last: d.clone(),
                        last_kind: kind,
                        last_ns: ev.ts_ns,
                    },
                );
            }
        }
    }

    pub(super) fn total(&self) -> u64 {
        self.total
    }

    /// Drops per reason, most first (ties by name), then `other`.
    pub(super) fn by_reason(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .by_reason
            .iter()
            .map(|(r, n)| (r.to_string(), *n))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        if self.other > 0 {
            v.push((OTHER_REASON.into(), self.other));
        }
        v
    }

    /// What was dropped from `src` to `dst`, if anything.
    pub(super) fn pair(&self, src: IpAddr, dst: IpAddr) -> Option<DropRow> {
        self.pairs.peek(&(Addr(src), Addr(dst))).map(|p| DropRow {
            src,
            dst,
            count: p.count,
            reason: p.last.reason.to_string(),
            function: p.last.function.to_string(),
            kind: p.last_kind.to_string(),
            last_ns: p.last_ns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Direction, Family};

    fn drop_ev(src: &str, dst: &str, ty: u8) -> IcmpEvent {
        IcmpEvent {
            ts_ns: 5,
            mono_ns: None,
            direction: Direction::Drop,
            ifindex: 0,
            family: Family::V4,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            ttl: 64,
            length: 84,
            icmp_type: ty,
            icmp_code: 0,
            echo: None,
            quoted: None,
            info: None,
            drop: None,
        }
    }

    fn reason(r: &str) -> KernelDrop {
        KernelDrop {
            reason: r.into(),
            function: "nft_do_chain".into(),
        }
    }

    #[test]
    fn counts_by_reason_and_keeps_the_last_per_pair() {
        let mut t = DropTracker::new(2);
        t.add(
            &drop_ev("10.0.0.1", "10.0.0.2", 8),
            &reason("NETFILTER_DROP"),
        );
        t.add(&drop_ev("10.0.0.1", "10.0.0.2", 8), &reason("IP_RPFILTER"));
        t.add(&drop_ev("10.0.0.3", "10.0.0.2", 0), &reason("IP_RPFILTER"));
        assert_eq!(t.total(), 3);
        assert_eq!(
            t.by_reason(),
            vec![("IP_RPFILTER".into(), 2), ("NETFILTER_DROP".into(), 1)]
        );
        let p = t
            .pair("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
            .unwrap();
        assert_eq!((p.count, p.reason.as_str()), (2, "IP_RPFILTER"));
        assert_eq!(p.kind, "echo-request");
        assert!(t
            .pair("10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap())
            .is_none());
        // A third pair pushes the least recent out: the table is bounded.
        t.add(&drop_ev("10.0.0.4", "10.0.0.2", 8), &reason("NO_SOCKET"));
        assert!(t
            .pair("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
            .is_none());
    }

    #[test]
    fn reasons_past_the_bound_are_other() {
        let mut t = DropTracker::new(4);
        for i in 0..MAX_REASONS + 3 {
            t.add(
                &drop_ev("10.0.0.1", "10.0.0.2", 8),
                &reason(&format!("R{i}")),
            );
        }
        let v = t.by_reason();
        assert_eq!(v.len(), MAX_REASONS + 1);
        assert_eq!(v.last().unwrap(), &(OTHER_REASON.to_string(), 3));
    }
}
