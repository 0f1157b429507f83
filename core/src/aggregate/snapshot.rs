//! What front ends see: a self-contained copy of the aggregator's state,
//! sorted and decoded, serialisable for `--summary-json`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;

use serde::Serialize;

use super::aggregator::Aggregator;
use super::anomaly::{Flag, FlagKind};
use super::drops::DropRow;
use super::echo::{EchoTotals, PeerCounts, PeerKey, PeerStats};
use super::flow::FlowKey;
use super::kernel::KernelView;
use super::owners::{AttributionTotals, HurtRow};
use super::rates::WindowRates;
use super::recent::RecentEvent;
use super::rtt::RttSummary;
use crate::event::kind_name;

#[derive(Debug, Clone, Serialize)]
pub struct KindRow {
    pub kind: Cow<'static, str>,
    pub family: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub count: u64,
    pub rates: WindowRates,
}

impl KindRow {
    /// The kind, marked `(v6)` for ICMPv6 (both families share names).
    pub fn label(&self) -> String {
        if self.family == 6 {
            format!("{} (v6)", self.kind)
        } else {
            self.kind.to_string()
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PeerRow {
    pub requester: IpAddr,
    pub responder: IpAddr,
    #[serde(flatten)]
    pub counts: PeerCounts,
    /// `PeerCounts::loss_pct`: over answered and lost requests only.
    pub loss_pct: Option<f64>,
    /// `PeerCounts::pending`: requests without an outcome yet.
    pub pending: u64,
    pub rtt: Option<RttSummary>,
    pub first_ns: u64,
    pub last_ns: u64,
    pub flags: Vec<FlagKind>,
    /// The last RTT samples (µs), oldest first.
    #[serde(skip)]
    pub rtt_history: Vec<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TalkerRow {
    pub addr: IpAddr,
    /// Messages sent: an upper bound, exact to within `error`.
    pub count: u64,
    pub error: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorRow {
    /// The quoted flow (error flows) or the reporter (reporters).
    pub subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<FlowKey>,
    pub count: u64,
    pub kinds: Vec<(Cow<'static, str>, u64)>,
    pub last_reporter: Option<IpAddr>,
    pub last_ns: u64,
    pub last_info: Option<String>,
    /// The local process the flow belongs to (`comm[pid] unit`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// The path MTU towards one destination.
#[derive(Debug, Clone, Serialize)]
pub struct MtuRow {
    pub destination: IpAddr,
    /// The smallest plausible MTU reported (0: none yet), the hop that
    /// reported it, and when.
    pub smallest: u32,
    pub smallest_reporter: IpAddr,
    pub smallest_ns: u64,
    /// The last MTU reported, by whom, and when it (or its hop) changed.
    pub mtu: u32,
    pub reporter: IpAddr,
    pub changed_ns: u64,
    pub last_ns: u64,
    pub reports: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorView {
    pub ts_ns: u64,
    pub kind: Cow<'static, str>,
    pub reporter: IpAddr,
    pub flow: Option<FlowKey>,
    pub reason: String,
}

/// How full each bounded table is (and its bound).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TableSizes {
    pub pending: (usize, usize),
    pub expired: (usize, usize),
    pub peers: (usize, usize),
    pub flows: (usize, usize),
    pub reporters: (usize, usize),
    pub talkers: (usize, usize),
    pub kinds: (usize, usize),
    pub recent: (usize, usize),
}

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub first_ns: Option<u64>,
    pub now_ns: u64,
    pub events: u64,
    pub ipv4: u64,
    pub ipv6: u64,
    pub dir_in: u64,
    pub dir_out: u64,
    pub dir_unknown: u64,
    /// Drop rows (drop tracing): second sightings, in `events` but not in
    /// the rates or types.
    pub dir_drop: u64,
    pub rates: WindowRates,
    /// Messages in each of the last 60 whole seconds, oldest first.
    pub rate_history: Vec<u32>,
    pub kinds: Vec<KindRow>,
    /// Messages of type/code pairs beyond the kinds table.
    pub other_kinds: u64,
    pub echo: EchoTotals,
    pub rtt: Option<RttSummary>,
    /// Those `PeerQuery` asked for, in its order.
    pub peers: Vec<PeerRow>,
    /// Peer pairs in the table, shown or not.
    pub peers_total: usize,
    pub talkers: Vec<TalkerRow>,
    pub errors: u64,
    pub error_flows: Vec<ErrorRow>,
    pub reporters: Vec<ErrorRow>,
    pub recent_errors: Vec<ErrorView>,
    #[serde(skip)]
    pub recent: Vec<RecentEvent>,
    pub flags: Vec<Flag>,
    pub flags_raised: u64,
    /// Errors per local process or unit ("who got hurt"), most first.
    pub hurt: Vec<HurtRow>,
    pub attribution: AttributionTotals,
    /// Path MTUs by destination, most recently reported first.
    pub path_mtu: Vec<MtuRow>,
    /// The kernel's ICMP counters and sysctls (live sources).
    pub kernel: Option<KernelView>,
    /// ICMP messages the kernel dropped (drop tracing), in all and per
    /// reason (most first; `other` last).
    pub drops: u64,
    pub drops_by_reason: Vec<(String, u64)>,
    /// Why no reply, from drop tracing: for each peer pair with requests
    /// unanswered, what the kernel dropped of its requests (requester →
    /// responder) or replies (responder → requester).
    pub unanswered_drops: Vec<DropRow>,
    pub alerts_suppressed: u64,
    pub tables: TableSizes,
}

/// How many rows of each list a snapshot carries.
pub const TOP_ROWS: usize = 20;

/// How peer pairs are ordered; every order but `Peer` puts the largest (or
/// the most recent) first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PeerOrder {
    #[default]
    Requests,
    Loss,
    RttAvg,
    RttP95,
    LastSeen,
    /// By address, requester then responder, ascending (numerically).
    Peer,
}

/// Which peer pairs a snapshot carries: the first `limit` in `order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerQuery {
    pub order: PeerOrder,
    pub limit: usize,
}

impl Aggregator {
    /// See `Snapshot::unanswered_drops`: most drops first.
    fn unanswered_drops(&self) -> Vec<DropRow> {
        if self.drops.total() == 0 {
            return Vec::new();
        }
        let mut v: Vec<DropRow> = self
            .echo
            .peers()
            .filter(|(_, p)| p.counts.lost + p.counts.pending() > 0)
            .flat_map(|(k, _)| {
                [
                    self.drops.pair(k.requester, k.responder),
                    self.drops.pair(k.responder, k.requester),
                ]
            })
            .flatten()
            .collect();
        // Both (A, B) and (B, A) unanswered would name each direction twice.
        v.sort_by_key(|d| (d.src, d.dst));
        v.dedup_by_key(|d| (d.src, d.dst));
        v.sort_by(|a, b| b.count.cmp(&a.count).then(b.last_ns.cmp(&a.last_ns)));
        v.truncate(TOP_ROWS);
        v
    }

    /// Everything, every peer pair (the end-of-run summary).
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot_with(PeerQuery {
            order: PeerOrder::Requests,
            limit: usize::MAX,
        })
    }

    /// The peer pairs in `query.order`, the first `query.limit` only: a
    /// view's cost follows what it shows, not the number of peers (the
    /// others are ordered by numbers, never turned into rows).
    pub fn snapshot_with(&self, query: PeerQuery) -> Snapshot {
        let cfg = &self.cfg;
        let now_sec = self.now_ns / 1_000_000_000;
        let flags = self.anomalies.flags();
        let mut flagged: HashMap<&str, Vec<FlagKind>> = HashMap::new();
        for f in &flags {
            flagged.entry(f.subject.as_str()).or_default().push(f.flag);
        }

        let mut kinds: Vec<KindRow> = self
            .kinds
            .iter()
            .map(|(&(f, t, c), k)| KindRow {
                kind: kind_name(f, t, c),
                family: f.number(),
                icmp_type: t,
                icmp_code: c,
                count: k.count,
                rates: k.series.rates(now_sec),
            })
            .collect();
        kinds.sort_by(|a, b| b.count.cmp(&a.count).then(a.kind.cmp(&b.kind)));

        let peers: Vec<PeerRow> = top_peers(self.echo.peers(), query)
            .into_iter()
            .map(|(k, p)| peer_row(k, p, &flagged))
            .collect();

        let error_row =
            |subject: String, flow: Option<FlowKey>, c: &super::errors::ErrorCounts| ErrorRow {
                subject,
                flow,
                count: c.count,
                kinds: c.kinds.named(),
                last_reporter: c.last_reporter,
                last_ns: c.last_ns,
                last_info: c.last_info.map(|i| i.to_string()),
                owner: c.owner.as_ref().map(|o| o.label()),
            };
        let (pending, expired, npeers) = self.echo.sizes();
        let (flows, reporters, _) = self.errors.sizes();
        Snapshot {
            first_ns: self.first_ns,
            now_ns: self.now_ns,
            events: self.events,
            ipv4: self.by_family[0],
            ipv6: self.by_family[1],
            dir_in: self.by_direction[0],
            dir_out: self.by_direction[1],
            dir_unknown: self.by_direction[2],
            dir_drop: self.by_direction[3],
            rates: self.series.rates(now_sec),
            rate_history: self.series.history(now_sec, 60),
            kinds,
            other_kinds: self.other_kinds,
            echo: self.echo.totals(),
            rtt: self.rtt.summary(),
            peers,
            peers_total: npeers,
            talkers: self
                .talkers
                .top(TOP_ROWS)
                .into_iter()
                .map(|c| TalkerRow {
                    addr: c.key.0,
                    count: c.count,
                    error: c.error,
                })
                .collect(),
            errors: self.errors.total,
            error_flows: self
                .errors
                .top_flows(TOP_ROWS)
                .iter()
                .map(|(k, c)| error_row(k.to_string(), Some(*k), c))
                .collect(),
            reporters: self
                .errors
                .top_reporters(TOP_ROWS)
                .iter()
                .map(|(k, c)| error_row(k.to_string(), None, c))
                .collect(),
            recent_errors: self
                .errors
                .recent()
                .map(|r| ErrorView {
                    ts_ns: r.ts_ns,
                    kind: r.kind(),
                    reporter: r.reporter,
                    flow: r.flow,
                    reason: r.reason(),
                })
                .collect(),
            recent: self.recent.iter().cloned().collect(),
            flags,
            flags_raised: self.anomalies.raised(),
            hurt: self.owners.top(TOP_ROWS),
            attribution: self.owners.totals,
            path_mtu: self
                .path_mtus()
                .take(TOP_ROWS)
                .map(|(d, p)| MtuRow {
                    destination: d,
                    smallest: p.smallest,
                    smallest_reporter: p.smallest_reporter,
                    smallest_ns: p.smallest_ns,
                    mtu: p.mtu,
                    reporter: p.reporter,
                    changed_ns: p.changed_ns,
                    last_ns: p.last_ns,
                    reports: p.reports,
                })
                .collect(),
            kernel: self.kernel.view(),
            drops: self.drops.total(),
            drops_by_reason: self.drops.by_reason(),
            unanswered_drops: self.unanswered_drops(),
            alerts_suppressed: self.anomalies.alerts_suppressed,
            tables: TableSizes {
                pending: (pending, cfg.max_pending),
                expired,
                peers: (npeers, cfg.max_peers),
                flows: (flows, cfg.max_flows),
                reporters: (reporters, cfg.max_reporters),
                talkers: (self.talkers.len(), cfg.top_k.max(1)),
                kinds: (self.kinds.len(), cfg.max_kinds),
                recent: (self.recent.len(), cfg.recent_events),
            },
        }
    }
}

/// The first `q.limit` peers in `q.order`: a partial selection over
/// numbers, then a sort of what is kept.
fn top_peers<'a>(
    all: impl Iterator<Item = (&'a PeerKey, &'a PeerStats)>,
    q: PeerQuery,
) -> Vec<(&'a PeerKey, &'a PeerStats)> {
    use std::cmp::Ordering;
    // Percentiles cost a sort each: computed only when ordering by them.
    let p95 = |p: &PeerStats| match q.order {
        PeerOrder::RttP95 => p.rtt.summary().map(|r| r.p95_us),
        _ => None,
    };
    let mut v: Vec<_> = all.map(|(k, p)| (k, p, p95(p))).collect();
    let f = |o: Option<f64>| o.unwrap_or(-1.0);
    let cmp = |a: &(&PeerKey, &PeerStats, Option<u64>), b: &(&PeerKey, &PeerStats, Option<u64>)| {
        let by = match q.order {
            PeerOrder::Requests => b.1.counts.requests.cmp(&a.1.counts.requests),
            PeerOrder::Loss => f(b.1.counts.loss_pct()).total_cmp(&f(a.1.counts.loss_pct())),
            PeerOrder::RttAvg => f(b.1.rtt.mean_us()).total_cmp(&f(a.1.rtt.mean_us())),
            PeerOrder::RttP95 => b.2.cmp(&a.2),
            PeerOrder::LastSeen => b.1.last_ns.cmp(&a.1.last_ns),
            PeerOrder::Peer => Ordering::Equal,
        };
        by.then_with(|| (a.0.requester, a.0.responder).cmp(&(b.0.requester, b.0.responder)))
    };
    if v.len() > q.limit {
        if q.limit == 0 {
            return Vec::new();
        }
        v.select_nth_unstable_by(q.limit - 1, cmp);
        v.truncate(q.limit);
    }
    v.sort_unstable_by(cmp);
    v.into_iter().map(|(k, p, _)| (k, p)).collect()
}

/// A pair's row. Its flags are those raised about the pair itself; a flag
/// about one host (an echo flood from a source) is the host's, shown once
/// with its subject (alerts, the summary's flags), not on each of its pairs.
fn peer_row(k: &PeerKey, p: &PeerStats, flagged: &HashMap<&str, Vec<FlagKind>>) -> PeerRow {
    let mut flags: Vec<FlagKind> = flagged
        .get(format!("{} → {}", k.requester, k.responder).as_str())
        .cloned()
        .unwrap_or_default();
    flags.sort();
    flags.dedup();
    PeerRow {
        requester: k.requester,
        responder: k.responder,
        counts: p.counts,
        loss_pct: p.counts.loss_pct(),
        pending: p.counts.pending(),
        rtt: p.rtt.summary(),
        first_ns: p.first_ns,
        last_ns: p.last_ns,
        flags,
        rtt_history: p.rtt.history().collect(),
    }
}
