//! The end-of-run summary of a headless run: text for people (stderr) and
//! JSON for machines (`--summary-json`), from one final snapshot.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use icmpmon_core::aggregate::kinds_text;
use icmpmon_core::aggregate::RttSummary;
use icmpmon_core::aggregate::Snapshot;

/// Rows of each table in the text summary.
const TEXT_ROWS: usize = 10;

/// Everything `--summary-json` writes.
#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    pub source: &'a str,
    pub stopped: &'a str,
    pub seconds: f64,
    pub rows: u64,
    pub packets: u64,
    /// Packets `--write` saved (absent without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved: Option<u64>,
    pub filtered: u64,
    pub not_icmp: u64,
    pub parse_errors: u64,
    /// Packets lost per pipeline stage (kernel/queue, socket, channel).
    pub lost: BTreeMap<&'static str, u64>,
    pub filter: Option<&'a str>,
    /// Socket lookups made for attribution (none for a capture file), and
    /// the /proc scans they needed.
    pub lookups: u64,
    pub proc_scans: u64,
    pub snapshot: &'a Snapshot,
}

fn ms(us: f64) -> String {
    format!("{:.3}", us / 1000.0)
}

fn rtt_text(r: &RttSummary) -> String {
    format!(
        "rtt min/avg/max {}/{}/{} ms, p50/p95 (last {} replies) {}/{} ms, jitter {} ms",
        ms(r.min_us as f64),
        ms(r.avg_us),
        ms(r.max_us as f64),
        r.samples.min(icmpmon_core::aggregate::HISTORY as u64),
        ms(r.p50_us as f64),
        ms(r.p95_us as f64),
        ms(r.jitter_us)
    )
}

/// The human summary, a line per fact, each prefixed `icmpmon: `.
pub fn text(s: &Snapshot) -> String {
    let mut o = String::new();
    let e = &s.echo;
    let _ = writeln!(
        o,
        "icmpmon: echo: {} requests, {} answered, {} lost ({} evicted), {} pending, {} late, \
         {} duplicate replies, {} unsolicited",
        e.requests,
        e.answered,
        e.lost,
        e.evicted,
        e.pending,
        e.late,
        e.duplicate_replies,
        e.unsolicited
    );
    if let Some(r) = &s.rtt {
        let _ = writeln!(o, "icmpmon: echo {}", rtt_text(r));
    }
    if !s.peers.is_empty() {
        let _ = writeln!(o, "icmpmon: peers (requester → responder):");
        for p in s.peers.iter().take(TEXT_ROWS) {
            let loss = p.loss_pct.map_or("-".into(), |l| format!("{l:.1}%"));
            let rtt = p.rtt.as_ref().map_or("no rtt".into(), rtt_text);
            let flags: Vec<&str> = p.flags.iter().map(|f| f.name()).collect();
            let _ = writeln!(
                o,
                "icmpmon:   {} → {}: {} req, {} rep, {} lost ({loss}), {} pending, {} late; {rtt}{}",
                p.requester,
                p.responder,
                p.counts.requests,
                p.counts.replies,
                p.counts.lost,
                p.pending,
                p.counts.late,
                if flags.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", flags.join(","))
                }
            );
        }
        if s.peers.len() > TEXT_ROWS {
            let _ = writeln!(
                o,
                "icmpmon:   ... {} more peer pairs",
                s.peers.len() - TEXT_ROWS
            );
        }
    }
    if !s.kinds.is_empty() {
        let top: Vec<String> = s
            .kinds
            .iter()
            .take(TEXT_ROWS)
            .map(|k| format!("{} {}", k.label(), k.count))
            .collect();
        let _ = writeln!(o, "icmpmon: top types: {}", top.join(", "));
    }
    if !s.talkers.is_empty() {
        let top: Vec<String> = s
            .talkers
            .iter()
            .take(5)
            .map(|t| format!("{} {}", t.addr, t.count))
            .collect();
        let _ = writeln!(o, "icmpmon: top talkers: {}", top.join(", "));
    }
    if !s.error_flows.is_empty() {
        let _ = writeln!(o, "icmpmon: errors per quoted flow:");
        for f in s.error_flows.iter().take(TEXT_ROWS) {
            let by = f
                .last_reporter
                .map_or(String::new(), |r| format!(" (last from {r})"));
            let info = f
                .last_info
                .as_deref()
                .map_or(String::new(), |i| format!(" {i}"));
            let _ = writeln!(
                o,
                "icmpmon:   {}: {}{info}{by}",
                f.subject,
                kinds_text(&f.kinds)
            );
        }
    }
    if !s.hurt.is_empty() {
        let _ = writeln!(
            o,
            "icmpmon: who got hurt (errors per local process or unit):"
        );
        for h in s.hurt.iter().take(TEXT_ROWS) {
            let flow = h.last_flow.map_or(String::new(), |f| format!(", last {f}"));
            let by = h
                .last_reporter
                .map_or(String::new(), |r| format!(" from {r}"));
            let _ = writeln!(
                o,
                "icmpmon:   {}: {} errors ({}); {}[{}] uid {} cgroup {}{flow}{by}",
                h.who,
                h.errors,
                kinds_text(&h.kinds),
                h.comm,
                h.pid,
                h.uid,
                if h.cgroup.is_empty() { "?" } else { &h.cgroup },
            );
        }
    }
    let a = &s.attribution;
    if a.asked > 0 {
        let _ = writeln!(
            o,
            "icmpmon: attribution: {} messages asked about: {} to a process, {} to a socket whose \
             process has gone, {} hidden (no permission), {} with no local socket, {} skipped \
             (lookups too busy, late or failed)",
            a.asked, a.owner, a.gone, a.hidden, a.no_socket, a.skipped
        );
    }
    if !s.path_mtu.is_empty() {
        let _ = writeln!(o, "icmpmon: path MTU by destination (smallest reported):");
        for m in s.path_mtu.iter().take(TEXT_ROWS) {
            let last = if (m.mtu, m.reporter) == (m.smallest, m.smallest_reporter) {
                String::new()
            } else {
                format!(
                    "; last {} from {} (since {})",
                    m.mtu,
                    m.reporter,
                    crate::outputs::rfc3339_nanos(m.changed_ns)
                )
            };
            let _ = writeln!(
                o,
                "icmpmon:   {}: {} from {} at {}{last}; {} reports",
                m.destination,
                m.smallest,
                m.smallest_reporter,
                crate::outputs::rfc3339_nanos(m.smallest_ns),
                m.reports,
            );
        }
    }
    if let Some(k) = &s.kernel {
        let moved: Vec<String> = k
            .counters
            .iter()
            .filter(|c| c.run > 0)
            .map(|c| format!("{} +{}", c.name, c.run))
            .collect();
        let _ = writeln!(
            o,
            "icmpmon: kernel counters during the run: {}",
            if moved.is_empty() {
                "none moved".into()
            } else {
                moved.join(", ")
            }
        );
        let sysctls: Vec<String> = k.sysctls.iter().map(|(n, v)| format!("{n}={v}")).collect();
        let _ = writeln!(o, "icmpmon: kernel sysctls: {}", sysctls.join(" "));
    }
    if s.drops > 0 {
        let reasons: Vec<String> = s
            .drops_by_reason
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        let _ = writeln!(
            o,
            "icmpmon: ICMP messages the kernel dropped: {} ({})",
            s.drops,
            reasons.join(", ")
        );
    }
    if !s.unanswered_drops.is_empty() {
        let _ = writeln!(
            o,
            "icmpmon: why no reply: what the kernel dropped between peers with requests unanswered:"
        );
        for d in &s.unanswered_drops {
            let _ = writeln!(
                o,
                "icmpmon:   {} → {}: {} dropped by the kernel; last: {}, {} in {}, at {}",
                d.src,
                d.dst,
                d.count,
                d.kind,
                d.reason,
                d.function,
                crate::outputs::rfc3339_nanos(d.last_ns)
            );
        }
    }
    for f in &s.flags {
        let _ = writeln!(
            o,
            "icmpmon: flag {} {}: {} ({}x)",
            f.flag.name(),
            f.subject,
            f.detail,
            f.count
        );
    }
    o
}
