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

use super::flow::{proto_name, FlowKey, KindCounts};
use super::owners::Owner;
use crate::event::{kind_name, Family, IcmpEvent, Info};

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
    pub owner: Option<std::sync::Arc<Owner>>,
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
    pub fn attribute(&mut self, flow: &FlowKey, owner: &std::sync::Arc<Owner>) {
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
