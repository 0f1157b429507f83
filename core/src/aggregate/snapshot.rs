//! What front ends see: a self-contained copy of the aggregator's state,
//! sorted and decoded, serialisable for `--summary-json`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;

use serde::Serialize;

use super::anomaly::{Flag, FlagKind};
use super::echo::{EchoTotals, PeerCounts, PeerKey};
use super::errors::FlowKey;
use super::rates::WindowRates;
use super::rtt::RttSummary;
use super::{Aggregator, RecentEvent};
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
    /// `PeerCounts::loss_pct`.
    pub loss_pct: Option<f64>,
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
    pub rates: WindowRates,
    /// Messages in each of the last 60 whole seconds, oldest first.
    pub rate_history: Vec<u32>,
    pub kinds: Vec<KindRow>,
    /// Messages of type/code pairs beyond the kinds table.
    pub other_kinds: u64,
    pub echo: EchoTotals,
    pub rtt: Option<RttSummary>,
    pub peers: Vec<PeerRow>,
    pub talkers: Vec<TalkerRow>,
    pub errors: u64,
    pub error_flows: Vec<ErrorRow>,
    pub reporters: Vec<ErrorRow>,
    pub recent_errors: Vec<ErrorView>,
    #[serde(skip)]
    pub recent: Vec<RecentEvent>,
    pub flags: Vec<Flag>,
    pub flags_raised: u64,
    pub alerts_suppressed: u64,
    pub tables: TableSizes,
}

/// How many rows of each list a snapshot carries.
pub const TOP_ROWS: usize = 20;

impl Aggregator {
    pub fn snapshot(&self) -> Snapshot {
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

        let mut peers: Vec<PeerRow> = self
            .echo
            .peers()
            .map(|(k, p)| peer_row(k, p, &flagged))
            .collect();
        peers.sort_by(|a, b| {
            b.counts
                .requests
                .cmp(&a.counts.requests)
                .then((a.requester, a.responder).cmp(&(b.requester, b.responder)))
        });

        let error_row =
            |subject: String, flow: Option<FlowKey>, c: &super::errors::ErrorCounts| ErrorRow {
                subject,
                flow,
                count: c.count,
                kinds: c.kinds.named(),
                last_reporter: c.last_reporter,
                last_ns: c.last_ns,
                last_info: c.last_info.map(|i| i.to_string()),
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
            rates: self.series.rates(now_sec),
            rate_history: self.series.history(now_sec, 60),
            kinds,
            other_kinds: self.other_kinds,
            echo: self.echo.totals(),
            rtt: self.rtt.summary(),
            peers,
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
            recent: self.recent.iter().copied().collect(),
            flags,
            flags_raised: self.anomalies.raised(),
            alerts_suppressed: self.anomalies.alerts_suppressed,
            tables: TableSizes {
                pending: (pending, cfg.max_pending),
                expired: (expired, (cfg.max_pending / 4).max(1)),
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

fn peer_row(
    k: &PeerKey,
    p: &super::echo::PeerStats,
    flagged: &HashMap<&str, Vec<FlagKind>>,
) -> PeerRow {
    let mut flags: Vec<FlagKind> = [
        k.requester.to_string(),
        format!("{} → {}", k.requester, k.responder),
    ]
    .iter()
    .filter_map(|s| flagged.get(s.as_str()))
    .flatten()
    .copied()
    .collect();
    flags.sort();
    flags.dedup();
    PeerRow {
        requester: k.requester,
        responder: k.responder,
        counts: p.counts,
        loss_pct: p.counts.loss_pct(),
        rtt: p.rtt.summary(),
        first_ns: p.first_ns,
        last_ns: p.last_ns,
        flags,
        rtt_history: p.rtt.history().collect(),
    }
}
