//! The bridge to the `icmpmon-tui` crate: maps aggregator snapshots into
//! its view model. The TUI crate knows nothing of capture; this module
//! knows nothing of ratatui.

use std::os::unix::fs::MetadataExt;
use std::time::Instant;

use icmpmon_tui::model::{
    AlertView, EchoTotals, EventView, HurtView, MtuView, PeerView, TypeCount,
};
use icmpmon_tui::View;

use crate::outputs::rfc3339_nanos;
use icmpmon_core::aggregate::Attribution;
use icmpmon_core::aggregate::FlowKey;
use icmpmon_core::aggregate::{PeerOrder, Snapshot};
use icmpmon_core::event::{kind_name, Family};
use icmpmon_tui::state::SortKey;

/// What the snapshot does not know about the run.
#[derive(Debug, Clone)]
pub struct Meta {
    pub source: String,
    /// Empty for a capture file.
    pub namespace: String,
    /// The source's caveat (`Source::caveat`).
    pub caveat: Option<String>,
    pub started: Instant,
    pub filter: String,
    /// `[peer-groups]` of --config, shown beside addresses.
    pub groups: crate::config::Groups,
}

/// The aggregator's order for the dashboard's sort key.
pub fn peer_order(key: SortKey) -> PeerOrder {
    match key {
        SortKey::Requests => PeerOrder::Requests,
        SortKey::Loss => PeerOrder::Loss,
        SortKey::RttAvg => PeerOrder::RttAvg,
        SortKey::RttP95 => PeerOrder::RttP95,
        SortKey::LastSeen => PeerOrder::LastSeen,
        SortKey::Peer => PeerOrder::Peer,
    }
}

/// The network namespace we run in: its `ip netns` name, `init` for the
/// host's, else `net:[INODE]`.
pub fn namespace_name() -> String {
    let ino = |p: &str| std::fs::metadata(p).map(|m| m.ino()).ok();
    let Some(me) = ino("/proc/self/ns/net") else {
        return "?".into();
    };
    let named = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .find(|e| e.metadata().is_ok_and(|m| m.ino() == me));
    match named {
        Some(e) => e.file_name().to_string_lossy().into_owned(),
        // pid 1's may be unreadable (containers): then the inode it is.
        None if ino("/proc/1/ns/net") == Some(me) => "init".into(),
        None => format!("net:[{me}]"),
    }
}

/// `HH:MM:SS.mmm` of an RFC 3339 timestamp.
fn clock(ts_ns: u64) -> String {
    let t = rfc3339_nanos(ts_ns);
    t.get(11..23).unwrap_or("").to_string()
}

fn flow_text(f: &FlowKey) -> String {
    f.to_string()
}

/// What attribution found, short: the events line keeps room for the flow.
fn process_label(a: &Attribution) -> String {
    match a {
        Attribution::Owner(o) => o.label(),
        Attribution::Gone => "process gone".into(),
        Attribution::Hidden => "process hidden".into(),
        Attribution::NoSocket => "no local socket".into(),
        Attribution::Skipped => "not looked up".into(),
    }
}

/// What attribution found, in full, for an event's detail.
fn process_text(a: &Attribution) -> String {
    match a {
        Attribution::Owner(o) => format!("{} uid {} cgroup {}", o.label(), o.uid, o.cgroup),
        Attribution::Gone => "process gone (its socket has no process left)".into(),
        Attribution::Hidden => {
            "process hidden (needs CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH)".into()
        }
        Attribution::NoSocket => "no local socket".into(),
        Attribution::Skipped => "not looked up (lookups busy, late or failed)".into(),
    }
}

/// Counters that moved in the last second, and sysctls set to silence
/// ICMP: what the header shows.
fn kernel_lines(snap: &Snapshot) -> Vec<(String, String)> {
    let Some(k) = &snap.kernel else {
        return Vec::new();
    };
    let short = |n: &str| n.rsplit('.').next().unwrap_or(n).to_string();
    let mut v: Vec<(String, String)> = k
        .counters
        .iter()
        .filter(|c| c.last > 0 && !c.name.ends_with("InMsgs"))
        .map(|c| (short(c.name), format!("+{}/s", c.last)))
        .collect();
    for (name, value) in k.silencing() {
        v.push((short(name), value.clone()));
    }
    // What the kernel dropped (drop tracing), the commonest reasons.
    for (reason, n) in snap.drops_by_reason.iter().take(3) {
        v.push((format!("dropped {reason}"), n.to_string()));
    }
    v
}

/// `lost`: packets lost per stage, from the source's counters and the
/// channel.
pub fn view(snap: &Snapshot, meta: &Meta, lost: Vec<(String, u64)>) -> View {
    let now = snap.now_ns;
    View {
        source: meta.source.clone(),
        namespace: meta.namespace.clone(),
        caveat: meta.caveat.clone(),
        uptime_s: meta.started.elapsed().as_secs(),
        total: snap.events,
        rate_per_s: snap.rates.per_s_1s,
        rate_history: snap.rate_history.iter().map(|&n| u64::from(n)).collect(),
        lost,
        filter: meta.filter.clone(),
        echo: EchoTotals {
            requests: snap.echo.requests,
            answered: snap.echo.answered,
            lost: snap.echo.lost,
            pending: snap.echo.pending,
        },
        types: snap
            .kinds
            .iter()
            .map(|k| TypeCount {
                name: k.label(),
                count: k.count,
            })
            .collect(),
        peers_total: snap.peers_total,
        peers: snap
            .peers
            .iter()
            .map(|p| PeerView {
                requester: p.requester,
                responder: p.responder,
                requester_group: meta.groups.of(p.requester).map(str::to_string),
                responder_group: meta.groups.of(p.responder).map(str::to_string),
                requests: p.counts.requests,
                replies: p.counts.replies,
                lost: p.counts.lost,
                pending: p.counts.pending(),
                loss_pct: p.loss_pct,
                rtt_min_us: p.rtt.as_ref().map(|r| r.min_us),
                rtt_avg_us: p.rtt.as_ref().map(|r| r.avg_us),
                rtt_p95_us: p.rtt.as_ref().map(|r| r.p95_us),
                rtt_max_us: p.rtt.as_ref().map(|r| r.max_us),
                jitter_us: p.rtt.as_ref().map(|r| r.jitter_us),
                last_seen_s: now.saturating_sub(p.last_ns) as f64 / 1e9,
                flags: p.flags.iter().map(|f| f.name().to_string()).collect(),
                rtt_history: p.rtt_history.clone(),
            })
            .collect(),
        events: snap
            .recent
            .iter()
            .map(|e| {
                let mut detail = match (e.echo, &e.flow) {
                    (Some((id, seq)), _) => format!("id {id} seq {seq}"),
                    (None, Some(f)) => flow_text(f),
                    (None, None) => String::new(),
                };
                if let Some(us) = e.rtt_us {
                    detail.push_str(&format!(
                        " rtt {}",
                        icmpmon_tui::render::duration_us(us as f64)
                    ));
                }
                if let Some(info) = e.info {
                    detail.push_str(&format!(" {info}"));
                }
                if let Some(d) = &e.drop {
                    detail.push_str(&format!(" dropped: {} in {}", d.reason, d.function));
                }
                EventView {
                    time: clock(e.ts_ns),
                    direction: e.direction.as_str().to_string(),
                    kind: kind_name(e.family, e.icmp_type, e.icmp_code).into_owned(),
                    src: e.src.to_string(),
                    dst: e.dst.to_string(),
                    detail: detail.trim().to_string(),
                    error: e.drop.is_some()
                        || (icmpmon_core::aggregate::is_error(e.family, e.icmp_type)
                            && !(e.family == Family::V6 && e.icmp_type == 137)),
                    process: e.attribution.as_ref().map(process_label),
                    process_detail: e.attribution.as_ref().map(process_text),
                }
            })
            .collect(),
        alerts: snap
            .flags
            .iter()
            .map(|f| AlertView {
                time: clock(f.first_ns),
                flag: f.flag.name().to_string(),
                subject: f.subject.clone(),
                detail: f.detail.clone(),
                count: f.count,
            })
            .collect(),
        ended: None,
        kernel: kernel_lines(snap),
        hurt: snap
            .hurt
            .iter()
            .map(|h| HurtView {
                // A unit or container; the command alone says it twice.
                who: if h.who == h.comm {
                    String::new()
                } else {
                    h.who.clone()
                },
                process: format!("{}[{}]", h.comm, h.pid),
                errors: h.errors,
                kinds: icmpmon_core::aggregate::kinds_text(&h.kinds),
                last: match (&h.last_flow, h.last_reporter) {
                    (Some(f), Some(r)) => format!("{f} from {r}"),
                    (Some(f), None) => f.to_string(),
                    _ => String::new(),
                },
            })
            .collect(),
        mtus: snap
            .path_mtu
            .iter()
            .map(|m| MtuView {
                destination: m.destination.to_string(),
                mtu: m.smallest,
                reporter: m.smallest_reporter.to_string(),
                changed: clock(m.smallest_ns),
            })
            .collect(),
    }
}
