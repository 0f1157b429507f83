//! ICMP errors tied to what they report on: counts per reporter (the
//! router or host that sent the error) and per quoted flow (the TCP/UDP/…
//! packet that caused it), in bounded tables, plus the most recent errors
//! with their decoded reason.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::num::NonZeroUsize;

use foldhash::fast::RandomState;
use lru::LruCache;
use serde::Serialize;

use crate::event::{kind_name, Family, IcmpEvent, Info, Quoted};

/// The packet an error quotes, as a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct FlowKey {
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

impl From<&Quoted> for FlowKey {
    fn from(q: &Quoted) -> Self {
        Self {
            proto: q.proto,
            src: q.src,
            dst: q.dst,
            sport: q.sport,
            dport: q.dport,
        }
    }
}

impl std::fmt::Display for FlowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let proto = proto_name(self.proto);
        match (self.sport, self.dport) {
            (Some(s), Some(d)) => {
                let (src, dst) = (self.src, self.dst);
                match (src, dst) {
                    (IpAddr::V6(_), _) => write!(f, "{proto} [{src}]:{s} -> [{dst}]:{d}"),
                    _ => write!(f, "{proto} {src}:{s} → {dst}:{d}"),
                }
            }
            _ => write!(f, "{proto} {} → {}", self.src, self.dst),
        }
    }
}

pub fn proto_name(p: u8) -> Cow<'static, str> {
    Cow::Borrowed(match p {
        1 => "icmp",
        6 => "tcp",
        17 => "udp",
        58 => "icmpv6",
        132 => "sctp",
        33 => "dccp",
        136 => "udplite",
        47 => "gre",
        50 => "esp",
        _ => return Cow::Owned(format!("proto-{p}")),
    })
}

/// Named counts as text: `frag-needed 3, port-unreachable 1`.
pub fn kinds_text(kinds: &[(Cow<'static, str>, u64)]) -> String {
    kinds
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether this type is an ICMP error (it quotes the offending packet).
pub fn is_error(family: Family, icmp_type: u8) -> bool {
    match family {
        Family::V4 => matches!(icmp_type, 3 | 4 | 5 | 11 | 12),
        Family::V6 => matches!(icmp_type, 1..=4 | 137),
    }
}

/// Error counts by kind, a handful of kinds at most per row.
#[derive(Debug, Clone, Default)]
pub struct KindCounts(Vec<((Family, u8, u8), u64)>);

const KINDS_PER_ROW: usize = 6;

impl KindCounts {
    pub(crate) fn add(&mut self, k: (Family, u8, u8)) {
        if let Some(e) = self.0.iter_mut().find(|(x, _)| *x == k) {
            e.1 += 1;
        } else if self.0.len() < KINDS_PER_ROW {
            self.0.push((k, 1));
        }
    }

    pub fn named(&self) -> Vec<(Cow<'static, str>, u64)> {
        let mut v: Vec<_> = self
            .0
            .iter()
            .map(|&((f, t, c), n)| (kind_name(f, t, c), n))
            .collect();
        v.sort_by_key(|k| std::cmp::Reverse(k.1));
        v
    }
}

#[derive(Debug, Clone, Default)]
pub struct ErrorCounts {
    pub count: u64,
    pub last_ns: u64,
    pub kinds: KindCounts,
    /// Who reported it last (flows) / the flow last reported (reporters).
    pub last_reporter: Option<IpAddr>,
    pub last_flow: Option<FlowKey>,
    pub last_info: Option<Info>,
    /// The local process of the flow (flows only), once attributed.
    pub owner: Option<std::sync::Arc<super::owners::Owner>>,
}

impl ErrorCounts {
    fn add(&mut self, ev: &IcmpEvent) {
        self.count += 1;
        self.last_ns = self.last_ns.max(ev.ts_ns);
        self.kinds.add((ev.family, ev.icmp_type, ev.icmp_code));
        self.last_reporter = Some(ev.src);
        self.last_flow = ev.quoted.as_ref().map(FlowKey::from);
        if ev.info.is_some() {
            self.last_info = ev.info;
        }
    }
}

/// One recent error; decoded only when a snapshot asks (`reason`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrorRecord {
    pub ts_ns: u64,
    pub family: Family,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub reporter: IpAddr,
    pub flow: Option<FlowKey>,
    pub info: Option<Info>,
}

impl ErrorRecord {
    fn new(ev: &IcmpEvent) -> Self {
        Self {
            ts_ns: ev.ts_ns,
            family: ev.family,
            icmp_type: ev.icmp_type,
            icmp_code: ev.icmp_code,
            reporter: ev.src,
            flow: ev.quoted.as_ref().map(FlowKey::from),
            info: ev.info,
        }
    }

    pub fn kind(&self) -> Cow<'static, str> {
        kind_name(self.family, self.icmp_type, self.icmp_code)
    }

    /// A sentence: who reported what about which flow.
    pub fn reason(&self) -> String {
        let by = self.reporter;
        let target = match &self.flow {
            Some(f) => match f.dport {
                Some(p) => format!("{} port {p}/{}", f.dst, proto_name(f.proto)),
                None => format!("{} ({})", f.dst, proto_name(f.proto)),
            },
            None => "an unquoted packet".into(),
        };
        match self.info {
            Some(Info::Mtu(m)) => format!("{by}: {target} needs MTU {m}"),
            Some(Info::Gateway(g)) => format!("{by}: use gateway {g} for {target}"),
            Some(Info::Pointer(p)) => format!("{by}: {} at octet {p} of {target}", self.kind()),
            _ => format!("{by}: {} for {target}", self.kind()),
        }
    }
}

#[derive(Debug)]
pub struct ErrorTracker {
    flows: LruCache<FlowKey, ErrorCounts, RandomState>,
    reporters: LruCache<IpAddr, ErrorCounts, RandomState>,
    recent: VecDeque<ErrorRecord>,
    recent_cap: usize,
    pub total: u64,
}

impl ErrorTracker {
    pub fn new(max_flows: usize, max_reporters: usize, recent_cap: usize) -> Self {
        let cap = |n: usize| NonZeroUsize::new(n.max(1)).expect("max(1)");
        Self {
            flows: LruCache::with_hasher(cap(max_flows), RandomState::default()),
            reporters: LruCache::with_hasher(cap(max_reporters), RandomState::default()),
            recent: VecDeque::with_capacity(recent_cap.min(4096)),
            recent_cap,
            total: 0,
        }
    }

    pub fn ingest(&mut self, ev: &IcmpEvent) {
        self.total += 1;
        if let Some(q) = &ev.quoted {
            self.flows
                .get_or_insert_mut(FlowKey::from(q), ErrorCounts::default)
                .add(ev);
        }
        self.reporters
            .get_or_insert_mut(ev.src, ErrorCounts::default)
            .add(ev);
        if self.recent_cap > 0 {
            if self.recent.len() == self.recent_cap {
                self.recent.pop_front();
            }
            self.recent.push_back(ErrorRecord::new(ev));
        }
    }

    /// The flow's local owner, as the attribution thread found it.
    pub fn attribute(&mut self, flow: &FlowKey, owner: &std::sync::Arc<super::owners::Owner>) {
        if let Some(c) = self.flows.peek_mut(flow) {
            c.owner = Some(owner.clone());
        }
    }

    /// The `n` flows with the most errors.
    pub fn top_flows(&self, n: usize) -> Vec<(FlowKey, ErrorCounts)> {
        top(self.flows.iter(), n)
    }

    pub fn top_reporters(&self, n: usize) -> Vec<(IpAddr, ErrorCounts)> {
        top(self.reporters.iter(), n)
    }

    /// Most recent last.
    pub fn recent(&self) -> impl Iterator<Item = &ErrorRecord> {
        self.recent.iter()
    }

    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.flows.len(), self.reporters.len(), self.recent.len())
    }
}

fn top<'a, K: Copy + 'a>(
    it: impl Iterator<Item = (&'a K, &'a ErrorCounts)>,
    n: usize,
) -> Vec<(K, ErrorCounts)> {
    let mut v: Vec<_> = it.map(|(k, c)| (*k, c.clone())).collect();
    v.sort_by(|a, b| {
        b.1.count
            .cmp(&a.1.count)
            .then(b.1.last_ns.cmp(&a.1.last_ns))
    });
    v.truncate(n);
    v
}
