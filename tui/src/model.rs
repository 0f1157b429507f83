//! The dashboard's own view model. The icmpmon crate fills it from its
//! aggregator snapshots; nothing here knows about capture or parsing.

use std::net::{IpAddr, Ipv4Addr};

/// Everything one frame shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    /// Where packets come from, e.g. `nfqueue (queue 7707, xtables …)`.
    pub source: String,
    /// The network namespace watched, e.g. `mon` or `net:[4026531840]`;
    /// empty for a capture file (it says nothing about this host, nor do
    /// the kernel's counters then).
    pub namespace: String,
    /// What the source's figures cannot tell, e.g. why its RTTs read short.
    pub caveat: Option<String>,
    pub uptime_s: u64,
    /// ICMP messages seen (after the filter).
    pub total: u64,
    /// Messages per second over the last whole second.
    pub rate_per_s: f64,
    /// Messages per second, one value per second, oldest first.
    pub rate_history: Vec<u64>,
    /// Packets lost per pipeline stage (`kernel`, `socket`, `channel`, …).
    pub lost: Vec<(String, u64)>,
    /// The filter in force ("" for none).
    pub filter: String,
    /// Echo totals, e.g. answered / lost / pending.
    pub echo: EchoTotals,
    /// Messages per type, largest first.
    pub types: Vec<TypeCount>,
    /// The first peer pairs in the order the dashboard asked for (see
    /// `Controls::request_peers`), not all of them.
    pub peers: Vec<PeerView>,
    /// Peer pairs known, shown or not.
    pub peers_total: usize,
    /// Oldest first.
    pub events: Vec<EventView>,
    /// Oldest first.
    pub alerts: Vec<AlertView>,
    /// Set once the capture has ended (a file read to its end, an error).
    pub ended: Option<String>,
    /// The kernel's ICMP counters that moved in the last second, and the
    /// sysctls that silence ICMP when set, e.g. `("OutRateLimitHost",
    /// "+87/s")`, `("icmp_echo_ignore_all", "1")` (live sources).
    pub kernel: Vec<(String, String)>,
    /// Who got hurt: errors per local process or unit, most first.
    pub hurt: Vec<HurtView>,
    /// Path MTU by destination, most recently reported first.
    pub mtus: Vec<MtuView>,
}

/// Errors that hit one local process or unit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HurtView {
    /// The unit or container ("" when there is none).
    pub who: String,
    /// `comm[pid]`.
    pub process: String,
    pub errors: u64,
    /// e.g. `frag-needed 3, port-unreachable 1`.
    pub kinds: String,
    /// The last flow hit, and who reported it.
    pub last: String,
}

/// The smallest MTU reported towards a destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MtuView {
    pub destination: String,
    pub mtu: u32,
    pub reporter: String,
    /// `HH:MM:SS.mmm` when that MTU was reported.
    pub changed: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EchoTotals {
    pub requests: u64,
    pub answered: u64,
    pub lost: u64,
    pub pending: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeCount {
    pub name: String,
    pub count: u64,
}

/// One peer pair: who pinged whom, and how it went.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerView {
    pub requester: IpAddr,
    pub responder: IpAddr,
    /// Groups of the addresses (--config's [peer-groups]).
    pub requester_group: Option<String>,
    pub responder_group: Option<String>,
    pub requests: u64,
    pub replies: u64,
    pub lost: u64,
    /// Requests still waiting for a reply (neither answered nor lost yet).
    pub pending: u64,
    pub loss_pct: Option<f64>,
    pub rtt_min_us: Option<u64>,
    pub rtt_avg_us: Option<f64>,
    pub rtt_p95_us: Option<u64>,
    pub rtt_max_us: Option<u64>,
    pub jitter_us: Option<f64>,
    /// Seconds since its last message.
    pub last_seen_s: f64,
    pub flags: Vec<String>,
    /// The last RTT samples (µs), oldest first.
    pub rtt_history: Vec<u32>,
}

impl PeerView {
    /// "requester → responder", each with its group if it has one.
    pub fn pair_label(&self) -> String {
        let side = |a: &IpAddr, g: &Option<String>| match g {
            Some(g) => format!("{a} [{g}]"),
            None => a.to_string(),
        };
        format!(
            "{} → {}",
            side(&self.requester, &self.requester_group),
            side(&self.responder, &self.responder_group)
        )
    }
}

impl Default for PeerView {
    fn default() -> Self {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        Self {
            requester: any,
            responder: any,
            requester_group: None,
            responder_group: None,
            requests: 0,
            replies: 0,
            lost: 0,
            pending: 0,
            loss_pct: None,
            rtt_min_us: None,
            rtt_avg_us: None,
            rtt_p95_us: None,
            rtt_max_us: None,
            jitter_us: None,
            last_seen_s: 0.0,
            flags: Vec::new(),
            rtt_history: Vec::new(),
        }
    }
}

/// One recent ICMP message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventView {
    /// `HH:MM:SS.mmm` (UTC).
    pub time: String,
    pub direction: String,
    pub kind: String,
    pub src: String,
    pub dst: String,
    /// Echo id/seq and RTT, or the flow an error quotes, MTU, gateway…
    pub detail: String,
    /// An ICMP error (drawn in the warning colour).
    pub error: bool,
    /// The local process of the flow an error quotes or of the socket an
    /// echo request left from (`comm[pid]` and its unit), or why there is
    /// none ("gone"): short, for the events line.
    pub process: Option<String>,
    /// The same in full (uid, cgroup), for the event's detail.
    pub process_detail: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertView {
    pub time: String,
    pub flag: String,
    pub subject: String,
    pub detail: String,
    pub count: u64,
}
