//! The metrics endpoint (`--metrics-listen`): the aggregator thread
//! publishes a copy of what it counts about once a second (`Publisher`);
//! the HTTP thread (`http`) encodes the newest copy on a scrape. Neither
//! waits for the other beyond swapping one pointer, and capture never
//! waits for either.
//!
//! Series are bounded: per-peer labels only for `--metrics-peers` pairs,
//! the rest summed in one `other` pair.

pub(crate) mod http;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use icmpmon_capture::source::{stage_losses, Counters};
use icmpmon_core::aggregate::GroupPair;
use icmpmon_core::aggregate::{error_class, Aggregator, KindKey};
use icmpmon_core::aggregate::{Departed, PeerCounts, PeerKey};
use icmpmon_core::aggregate::{Histogram, BUCKETS_US};
use icmpmon_core::event::{Direction, Family};

/// How often the aggregator publishes (a scrape sees data this old at most,
/// plus one loop of the aggregator).
const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// A peer pair with no echo traffic for this long gives its labels up to
/// another (its series then go stale in Prometheus).
const IDLE_NS: u64 = 300_000_000_000;

/// `--metrics-peers`' default: per-peer series for a few pairs, as a host
/// usually pings a few targets.
pub(crate) const PEERS_DEFAULT: u32 = 10;

/// What a scrape shows: a copy made by the aggregator thread.
#[derive(Debug, Default)]
pub(crate) struct Data {
    /// Changes with every publication (the HTTP thread caches its encoding).
    pub version: u64,
    /// The exported pairs, then `other` (`key` None).
    peers: Vec<PeerSeries>,
    pending: u64,
    peers_tracked: u64,
    peers_evicted: u64,
    /// (family, direction, type, code) or `None` for the kinds beyond the
    /// aggregator's table.
    messages: Vec<(Option<KindKey>, Direction, u64)>,
    /// (class, kind, direction): both families summed.
    errors: Vec<((&'static str, &'static str, Direction), u64)>,
    /// (destination, reporter, MTU), most recent first.
    path_mtu: Vec<(IpAddr, IpAddr, u32)>,
    flags: Vec<(&'static str, u64)>,
    lost: Vec<(&'static str, u64)>,
    events: u64,
    /// The kernel's ICMP counters and numeric sysctls, as last sampled.
    kernel_counters: Vec<(&'static str, u64)>,
    kernel_sysctls: Vec<(&'static str, i64)>,
    /// Attribution outcomes, by result.
    attribution: Vec<(&'static str, u64)>,
}

#[derive(Debug, Clone)]
struct PeerSeries {
    key: Option<PeerKey>,
    /// Of the requester and the responder (--config's [peer-groups]).
    groups: [Option<String>; 2],
    counts: PeerCounts,
    rtt: Histogram,
}

/// Where the newest `Data` waits for the HTTP thread.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    data: Mutex<Arc<Data>>,
}

impl Shared {
    pub fn current(&self) -> Arc<Data> {
        // A poisoned lock still holds a whole `Arc`: use it.
        self.data.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, d: Data) {
        *self.data.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(d);
    }
}

/// A pair's counters at one moment: when it got its labels, or when they
/// were last added to its group's totals.
#[derive(Debug, Clone, Default)]
struct Baseline {
    serial: u64,
    counts: PeerCounts,
    rtt: Histogram,
}

/// The aggregator thread's side: chooses the labelled pairs and publishes.
///
/// Counters stay monotonic as pairs come and go: a pair's series counts
/// from when it got its labels, and each group pair's `other` is that
/// group pair's total (`Aggregator::group_totals`) minus what its labelled
/// series show, so a pair giving its labels up moves its counts into
/// `other` (which only grows). What no pair holds (a request lost after its
/// pair left the table) goes to the `other` without groups, so the series
/// always sum to the run's totals.
#[derive(Debug)]
pub(crate) struct Publisher {
    shared: Arc<Shared>,
    limit: usize,
    exported: HashMap<PeerKey, Baseline>,
    /// The latest pair serial at the last publication: later pairs never
    /// counted in `other`, so they start from zero. (Not a time: a packet
    /// stamped before a publication may reach the aggregator after it.)
    published_serial: Option<u64>,
    last: Option<Instant>,
    version: u64,
    losses: Option<(Arc<dyn Counters>, Arc<AtomicU64>)>,
}

impl Publisher {
    pub fn new(shared: Arc<Shared>, peers: usize) -> Self {
        Self {
            shared,
            limit: peers,
            exported: HashMap::new(),
            published_serial: None,
            last: None,
            version: 0,
            losses: None,
        }
    }

    /// The capture side's loss counters (known once the run starts).
    pub fn set_losses(&mut self, counters: Arc<dyn Counters>, channel_dropped: Arc<AtomicU64>) {
        self.losses = Some((counters, channel_dropped));
    }

    /// Publishes when a second has passed since the last time, or `force`.
    pub fn publish(&mut self, agg: &Aggregator, force: bool) {
        if !force && self.last.is_some_and(|t| t.elapsed() < PUBLISH_EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        let data = self.collect(agg);
        self.shared.set(data);
    }

    fn choose(&mut self, agg: &Aggregator) {
        let now = agg.now_ns();
        let idle = |last_ns: u64| now.saturating_sub(last_ns) >= IDLE_NS;
        // Gone from the aggregator's table (or replaced by a new pair of the
        // same addresses), or idle: the labels are free.
        self.exported.retain(|k, b| {
            agg.peer(k)
                .is_some_and(|p| p.serial == b.serial && !idle(p.last_ns))
        });
        let room = self.limit.saturating_sub(self.exported.len());
        if room == 0 {
            return;
        }
        let mut candidates: Vec<_> = agg
            .peers()
            .filter(|(k, p)| !self.exported.contains_key(k) && !idle(p.last_ns))
            .collect();
        if candidates.len() > room {
            candidates.select_nth_unstable_by(room - 1, |a, b| {
                b.1.counts.requests.cmp(&a.1.counts.requests)
            });
            candidates.truncate(room);
        }
        for (k, p) in candidates {
            let fresh = self.published_serial.is_none_or(|s| p.serial > s);
            let base = if fresh {
                Baseline {
                    serial: p.serial,
                    counts: PeerCounts::default(),
                    rtt: Histogram::default(),
                }
            } else {
                Baseline {
                    serial: p.serial,
                    counts: p.counts,
                    rtt: *p.rtt.histogram(),
                }
            };
            self.exported.insert(*k, base);
        }
    }

    fn collect(&mut self, agg: &Aggregator) -> Data {
        self.choose(agg);
        self.published_serial = Some(agg.last_peer_serial());
        self.version += 1;
        let totals = agg.echo_totals();
        let groups = agg.groups();
        let names =
            |g: GroupPair| g.map(|id| id.and_then(|id| groups.name(id)).map(str::to_string));
        let mut labelled: Vec<(GroupPair, PeerSeries)> = self
            .exported
            .iter()
            .filter_map(|(k, b)| {
                let p = agg.peer(k)?;
                let series = PeerSeries {
                    groups: names(p.groups),
                    key: Some(*k),
                    counts: p.counts.since(&b.counts),
                    rtt: p.rtt.histogram().since(&b.rtt),
                };
                Some((p.groups, series))
            })
            .collect();
        labelled.sort_by_key(|(_, s)| s.key);
        // Per group pair: its total minus its labelled series. The pair
        // without groups also takes what no pair holds.
        let mut others = agg.group_totals();
        let mut held = Departed::default();
        for t in others.values() {
            held.counts.add(&t.counts);
            held.rtt.merge(&t.rtt);
        }
        let all = PeerCounts {
            requests: totals.requests,
            replies: totals.answered,
            lost: totals.lost,
            late: totals.late,
            ..PeerCounts::default()
        };
        let rest = others.entry([None, None]).or_default();
        rest.counts.add(&all.since(&held.counts));
        rest.rtt.merge(&agg.rtt_histogram().since(&held.rtt));
        for (g, s) in &labelled {
            if let Some(o) = others.get_mut(g) {
                o.counts = o.counts.since(&s.counts);
                o.rtt = o.rtt.since(&s.rtt);
            }
        }
        let mut others: Vec<_> = others.into_iter().collect();
        others.sort_by_key(|(g, _)| *g);
        let peers: Vec<PeerSeries> = labelled
            .into_iter()
            .map(|(_, s)| s)
            .chain(others.into_iter().map(|(g, o)| PeerSeries {
                key: None,
                groups: names(g),
                counts: o.counts,
                rtt: o.rtt,
            }))
            .collect();

        let mut messages = Vec::new();
        for m in agg.message_counts() {
            for d in Direction::ALL {
                let n = m.by_direction[d.index()];
                if n > 0 {
                    messages.push((m.kind, d, n));
                }
            }
        }
        messages.sort_by_key(|&(k, d, _)| (k.map(|(f, t, c)| (f.number(), t, c)), d.index()));
        let mut errors: HashMap<_, u64> = HashMap::new();
        for (&(f, t, kind, d), n) in agg.error_kinds() {
            *errors
                .entry((error_class(f, t, kind), kind, d))
                .or_default() += n;
        }
        let mut errors: Vec<_> = errors.into_iter().collect();
        errors.sort_by_key(|&((c, k, d), _)| (c, k, d.index()));
        let lost = self
            .losses
            .as_ref()
            .map(|(c, d)| stage_losses(&**c, d.load(Relaxed)))
            .unwrap_or_default();
        Data {
            version: self.version,
            peers,
            pending: totals.pending,
            peers_tracked: agg.peers().count() as u64,
            peers_evicted: totals.peers_evicted,
            messages,
            errors,
            path_mtu: agg
                .path_mtus()
                .take(self.limit)
                .map(|(dst, p)| (dst, p.reporter, p.mtu))
                .collect(),
            flags: agg
                .active_flags()
                .iter()
                .map(|(k, n)| (k.name(), *n))
                .collect(),
            lost,
            events: agg.events(),
            kernel_counters: agg
                .kernel()
                .last
                .iter()
                .flat_map(|s| s.counters.iter().map(|(k, v)| (*k, *v)))
                .collect(),
            kernel_sysctls: agg
                .kernel()
                .last
                .iter()
                .flat_map(|s| {
                    s.sysctls
                        .iter()
                        .filter_map(|(k, v)| v.parse().ok().map(|v| (*k, v)))
                })
                .collect(),
            attribution: {
                let a = agg.attribution_totals();
                vec![
                    ("owner", a.owner),
                    ("gone", a.gone),
                    ("hidden", a.hidden),
                    ("no-socket", a.no_socket),
                    ("skipped", a.skipped),
                ]
            },
        }
    }
}

fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::Unknown => "unknown",
        d => d.as_str(),
    }
}

/// The registry a scrape encodes: the published data and the build.
pub(crate) fn registry(
    shared: Arc<Shared>,
    source: &'static str,
    http: Arc<http::Stats>,
) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(DataCollector {
        shared,
        source,
        http,
    }));
    r
}

#[derive(Debug)]
struct DataCollector {
    shared: Arc<Shared>,
    source: &'static str,
    http: Arc<http::Stats>,
}

/// requester and responder, and their groups where they have one.
fn peer_labels(s: &PeerSeries) -> Vec<(&'static str, String)> {
    let mut v = match s.key {
        Some(k) => vec![
            ("requester", k.requester.to_string()),
            ("responder", k.responder.to_string()),
        ],
        None => vec![("requester", "other".into()), ("responder", "other".into())],
    };
    for (name, g) in ["requester_group", "responder_group"]
        .into_iter()
        .zip(&s.groups)
    {
        if let Some(g) = g {
            v.push((name, g.clone()));
        }
    }
    v
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}

/// One metric with one value per label set.
fn family<L: prometheus_client::encoding::EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    ty: MetricType,
    series: impl IntoIterator<Item = (L, Value)>,
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, unit, ty)?;
    for (labels, v) in series {
        v.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One metric without labels.
fn single(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    ty: MetricType,
    v: Value,
) -> std::fmt::Result {
    v.encode(enc.encode_descriptor(name, help, None, ty)?)
}

enum Value {
    Counter(u64),
    Gauge(i64),
    Hist(Histogram),
}

fn gauge(n: u64) -> Value {
    Value::Gauge(i64::try_from(n).unwrap_or(i64::MAX))
}

impl Value {
    fn encode(self, mut e: prometheus_client::encoding::MetricEncoder) -> std::fmt::Result {
        match self {
            Value::Counter(n) => ConstCounter::new(n).encode(e),
            Value::Gauge(n) => ConstGauge::new(n).encode(e),
            Value::Hist(h) => {
                let buckets: Vec<(f64, u64)> = BUCKETS_US
                    .iter()
                    .map(|&b| b as f64 / 1e6)
                    .chain(std::iter::once(f64::INFINITY))
                    .zip(h.buckets)
                    .collect();
                e.encode_histogram::<NoLabelSet>(h.sum_us as f64 / 1e6, h.count, &buckets, None)
            }
        }
    }
}

impl Collector for DataCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let d = self.shared.current();
        let e = &mut enc;
        // Info metrics carry their value in labels.
        let mut m = e.encode_descriptor(
            "icmpmon_build",
            "icmpmon's version, commit, the sources built in and the one running",
            None,
            MetricType::Info,
        )?;
        let sources = icmpmon_capture::open::SourceKind::NAMES.join(", ");
        m.encode_info(&[
            ("version", env!("CARGO_PKG_VERSION")),
            ("commit", env!("ICMPMON_GIT_COMMIT")),
            ("sources", sources.as_str()),
            ("source", self.source),
        ])?;
        let peer = |f: fn(&PeerCounts) -> u64| {
            d.peers
                .iter()
                .map(move |s| (peer_labels(s), Value::Counter(f(&s.counts))))
        };
        family(
            e,
            "icmpmon_echo_requests",
            "Echo requests seen, by requester and responder (top pairs, the rest in other)",
            None,
            MetricType::Counter,
            peer(|c| c.requests),
        )?;
        family(
            e,
            "icmpmon_echo_replies",
            "Echo requests answered within --echo-timeout",
            None,
            MetricType::Counter,
            peer(|c| c.replies),
        )?;
        family(
            e,
            "icmpmon_echo_lost",
            "Echo requests unanswered after --echo-timeout",
            None,
            MetricType::Counter,
            peer(|c| c.lost),
        )?;
        family(
            e,
            "icmpmon_echo_late_replies",
            "Echo replies that came after their request was counted lost",
            None,
            MetricType::Counter,
            peer(|c| c.late),
        )?;
        family(
            e,
            "icmpmon_echo_rtt",
            "Echo round-trip times",
            Some(&Unit::Seconds),
            MetricType::Histogram,
            d.peers.iter().map(|s| (peer_labels(s), Value::Hist(s.rtt))),
        )?;
        single(
            e,
            "icmpmon_echo_pending",
            "Echo requests still within --echo-timeout",
            MetricType::Gauge,
            gauge(d.pending),
        )?;
        single(
            e,
            "icmpmon_peers_tracked",
            "Peer pairs in the aggregator's table (bounded by --max-peers)",
            MetricType::Gauge,
            gauge(d.peers_tracked),
        )?;
        single(
            e,
            "icmpmon_peers_evicted",
            "Peer pairs pushed out of the full table",
            MetricType::Counter,
            Value::Counter(d.peers_evicted),
        )?;
        family(
            e,
            "icmpmon_messages",
            "ICMP and ICMPv6 messages by family, direction, type and code (other: beyond the table of kinds)",
            None,
            MetricType::Counter,
            d.messages.iter().map(|&(k, dir, n)| {
                let (f, t, c) = match k {
                    Some((f, t, c)) => (family_name(f), t.to_string(), c.to_string()),
                    None => ("other", "other".into(), "other".into()),
                };
                let dir = direction_name(dir);
                (
                    [
                        ("family", f.to_string()),
                        ("direction", dir.to_string()),
                        ("type", t),
                        ("code", c),
                    ],
                    Value::Counter(n),
                )
            }),
        )?;
        family(
            e,
            "icmpmon_errors",
            "ICMP error messages by class, kind and direction (both families; a forwarded error seen on two interfaces counts in each)",
            None,
            MetricType::Counter,
            d.errors.iter().map(|&((class, kind, dir), n)| {
                (
                    [("class", class), ("kind", kind), ("direction", direction_name(dir))],
                    Value::Counter(n),
                )
            }),
        )?;
        family(
            e,
            "icmpmon_path_mtu",
            "Path MTU last reported (frag-needed, packet-too-big) towards a destination, by the reporting hop",
            Some(&Unit::Bytes),
            MetricType::Gauge,
            d.path_mtu.iter().map(|(dst, rep, mtu)| {
                (
                    [("destination", dst.to_string()), ("reporter", rep.to_string())],
                    gauge(u64::from(*mtu)),
                )
            }),
        )?;
        family(
            e,
            "icmpmon_anomaly_active",
            "Subjects an anomaly flag is active for (raised or triggered within 30 s)",
            None,
            MetricType::Gauge,
            d.flags.iter().map(|(f, n)| ([("flag", *f)], gauge(*n))),
        )?;
        family(
            e,
            "icmpmon_capture_lost",
            "Packets lost before the aggregator, by pipeline stage",
            None,
            MetricType::Counter,
            d.lost
                .iter()
                .map(|(s, n)| ([("stage", *s)], Value::Counter(*n))),
        )?;
        family(
            e,
            "icmpmon_kernel_icmp",
            "The kernel's own ICMP counters (/proc/net/snmp, snmp6, netstat of icmpmon's \
             network namespace), e.g. counter=\"Icmp.OutRateLimitHost\"",
            None,
            MetricType::Counter,
            d.kernel_counters
                .iter()
                .map(|(c, n)| ([("counter", *c)], Value::Counter(*n))),
        )?;
        family(
            e,
            "icmpmon_kernel_sysctl",
            "Sysctls that silence ICMP (rate limits, echo_ignore_all, rp_filter), as read",
            None,
            MetricType::Gauge,
            d.kernel_sysctls
                .iter()
                .map(|(s, v)| ([("name", *s)], Value::Gauge(*v))),
        )?;
        family(
            e,
            "icmpmon_attribution",
            "Messages whose local process was looked up, by result (owner, gone, hidden, \
             no-socket, skipped)",
            None,
            MetricType::Counter,
            d.attribution
                .iter()
                .map(|(r, n)| ([("result", *r)], Value::Counter(*n))),
        )?;
        single(
            e,
            "icmpmon_events",
            "ICMP messages aggregated (after --filter)",
            MetricType::Counter,
            Value::Counter(d.events),
        )?;
        self.http.encode(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use icmpmon_core::aggregate::Config;
    use icmpmon_core::event::{Echo, IcmpEvent};
    use proptest::prelude::*;

    fn echo(ts_ns: u64, src: IpAddr, dst: IpAddr, icmp_type: u8, seq: u16) -> IcmpEvent {
        IcmpEvent {
            mono_ns: None,
            ts_ns,
            direction: Direction::Unknown,
            ifindex: 0,
            family: Family::V4,
            src,
            dst,
            ttl: 64,
            length: 84,
            icmp_type,
            icmp_code: 0,
            echo: Some(Echo {
                id: 1,
                seq,
                payload_len: 56,
                payload_digest: 0,
            }),
            quoted: None,
            info: None,
        }
    }

    fn host(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    /// Each series' values, and when its pair entered the aggregator's
    /// table (0 for `other`).
    type Series = HashMap<String, ([u64; 4], u64)>;

    fn series(d: &Data, agg: &Aggregator) -> Series {
        d.peers
            .iter()
            .map(|s| {
                let labels = format!("{:?}", peer_labels(s));
                let c = &s.counts;
                let born = s.key.and_then(|k| agg.peer(&k)).map_or(0, |p| p.serial);
                let v = [c.requests, c.replies, c.lost, s.rtt.count];
                (labels, (v, born))
            })
            .collect()
    }

    proptest! {
        /// Whatever the traffic and however pairs come and go, with peer
        /// groups or without: at most `limit` labelled pairs plus an `other`
        /// per group pair; the series sum to the run's totals; and no series goes down (which Prometheus reads as a
        /// restart from zero) unless its pair did: pushed out of the
        /// aggregator's full table and back as a new pair.
        #[test]
        fn series_are_bounded_sum_to_the_totals_and_never_go_down(
            ops in proptest::collection::vec((1u8..30, any::<bool>(), 0u64..400_000), 1..400),
            limit in 0usize..6,
            max_peers in 1usize..12,
            grouped in any::<bool>(),
        ) {
            // Hosts 1–7 in group a, 8–15 in b, the rest in none.
            let groups = if grouped {
                icmpmon_core::aggregate::Groups::new(vec![
                    ("10.0.0.0/29".parse().unwrap(), "a".into()),
                    ("10.0.0.8/29".parse().unwrap(), "b".into()),
                    ("10.0.0.0/31".parse().unwrap(), "me".into()),
                ])
            } else {
                Default::default()
            };
            let mut agg = Aggregator::new(Config {
                max_peers,
                echo_timeout_ns: 2_000_000_000,
                groups,
                ..Config::default()
            });
            let mut p = Publisher::new(Arc::new(Shared::default()), limit);
            let mut t = 1_000_000_000_000u64;
            let mut before: Series = HashMap::new();
            for (i, (peer, answered, dt_ms)) in ops.into_iter().enumerate() {
                // Up to 400 s apart: pairs go idle and give their labels up.
                t += dt_ms * 1_000_000;
                let seq = i as u16;
                agg.ingest(&echo(t, host(0), host(peer), 8, seq));
                if answered {
                    agg.ingest(&echo(t + 1_000_000, host(peer), host(0), 0, seq));
                }
                agg.tick(t + 1_000_000);
                let d = p.collect(&agg);
                // Labelled pairs, then an other per group pair (at most
                // {me} × {me, a, b, none} and the pair without groups).
                let labelled = d.peers.iter().filter(|s| s.key.is_some()).count();
                prop_assert!(labelled <= limit);
                prop_assert!(d.peers.len() <= limit + 5);
                prop_assert!(d.peers[labelled..].iter().all(|s| s.key.is_none()), "others come last");
                prop_assert!(d.peers.iter().any(|s| s.key.is_none() && s.groups == [None, None]));
                let tot = agg.echo_totals();
                let sum = |f: fn(&PeerSeries) -> u64| d.peers.iter().map(f).sum::<u64>();
                prop_assert_eq!(sum(|s| s.counts.requests), tot.requests);
                prop_assert_eq!(sum(|s| s.counts.replies), tot.answered);
                prop_assert_eq!(sum(|s| s.counts.lost), tot.lost);
                prop_assert_eq!(sum(|s| s.rtt.count), agg.rtt_histogram().count);
                let now = series(&d, &agg);
                prop_assert_eq!(now.len(), d.peers.len(), "one series per label set");
                for (k, (v, born)) in &now {
                    if let Some((b, born_before)) = before.get(k) {
                        let up = v.iter().zip(b).all(|(v, b)| v >= b);
                        prop_assert!(up || born != born_before, "{} went down: {:?} -> {:?}", k, b, v);
                    }
                }
                before = now;
            }
        }
    }

    #[test]
    fn the_busiest_pairs_get_labels_first_and_idle_ones_give_them_up() {
        let mut agg = Aggregator::new(Config::default());
        let mut p = Publisher::new(Arc::new(Shared::default()), 2);
        let mut t = 1_000_000_000_000u64;
        for (peer, n) in [(1, 1), (2, 5), (3, 3)] {
            for seq in 0..n {
                t += 1_000_000;
                agg.ingest(&echo(t, host(0), host(peer), 8, seq));
            }
        }
        let d = p.collect(&agg);
        let keys: Vec<_> = d.peers.iter().map(|s| s.key.map(|k| k.responder)).collect();
        assert_eq!(keys, vec![Some(host(2)), Some(host(3)), None]);
        assert_eq!(
            d.peers[2].counts.requests, 1,
            "10.0.0.1's request is in other"
        );
        // 10.0.0.2 goes quiet for 5 minutes; 10.0.0.1 keeps pinging and
        // takes its place, counting from there.
        for s in 0..400u16 {
            t += 1_000_000_000;
            agg.ingest(&echo(t, host(0), host(1), 8, 100 + s));
            agg.ingest(&echo(t, host(0), host(3), 8, 100 + s));
        }
        let d = p.collect(&agg);
        let keys: Vec<_> = d.peers.iter().map(|s| s.key.map(|k| k.responder)).collect();
        assert_eq!(keys, vec![Some(host(1)), Some(host(3)), None]);
        assert_eq!(d.peers[0].counts.requests, 0);
        assert_eq!(d.peers[2].counts.requests, 1 + 400 + 5);
    }

    /// A packet stamped before a publication can reach the aggregator after
    /// it (it waited in the channel while the clock ticked): its pair was
    /// never in `other`, so its series counts every request.
    #[test]
    fn a_pair_stamped_before_a_publication_but_seen_after_counts_from_zero() {
        let mut agg = Aggregator::new(Config::default());
        let mut p = Publisher::new(Arc::new(Shared::default()), 2);
        let t = 1_000_000_000_000u64;
        agg.tick(t + 5_000_000);
        p.collect(&agg);
        for seq in 0..3 {
            agg.ingest(&echo(t + u64::from(seq), host(0), host(1), 8, seq));
        }
        let d = p.collect(&agg);
        assert_eq!(d.peers[0].key.map(|k| k.responder), Some(host(1)));
        assert_eq!(d.peers[0].counts.requests, 3);
    }
}
