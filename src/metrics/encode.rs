//! Encoding the published `Data` as OpenMetrics: one collector over the
//! newest copy, registered with the build's info.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use icmpmon_core::aggregate::PeerCounts;
use icmpmon_core::aggregate::{Histogram, BUCKETS_US};
use icmpmon_core::event::{Direction, Family};

use super::publish::{PeerSeries, Shared};

pub(super) fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::Unknown => "unknown",
        d => d.as_str(),
    }
}

/// The endpoint's own counters, exported beside the data.
#[derive(Debug, Default)]
pub(super) struct Stats {
    /// Answers by status: 200, 400, 404, 405, 431.
    answers: [AtomicU64; 5],
    /// Connections closed before an answer: deadline passed, or closed to
    /// make room.
    pub(super) timed_out: AtomicU64,
    pub(super) evicted: AtomicU64,
}

const STATUSES: [u16; 5] = [200, 400, 404, 405, 431];

impl Stats {
    pub(super) fn answered(&self, status: u16) {
        if let Some(i) = STATUSES.iter().position(|&s| s == status) {
            self.answers[i].fetch_add(1, Relaxed);
        }
    }

    pub(super) fn encode(&self, enc: &mut DescriptorEncoder) -> std::fmt::Result {
        use Value::Counter;
        let n = |a: &AtomicU64| Counter(a.load(Relaxed));
        family(
            enc,
            "icmpmon_http_answers",
            "Answers of the metrics endpoint by HTTP status",
            None,
            MetricType::Counter,
            STATUSES
                .iter()
                .zip(&self.answers)
                .map(|(s, a)| ([("code", s.to_string())], n(a))),
        )?;
        family(
            enc,
            "icmpmon_http_dropped",
            "Connections to the metrics endpoint closed without an answer",
            None,
            MetricType::Counter,
            [("deadline", &self.timed_out), ("full", &self.evicted)]
                .map(|(r, a)| ([("reason", r)], n(a))),
        )
    }
}

/// The registry a scrape encodes: the published data and the build.
pub(crate) fn registry(shared: Arc<Shared>, source: &'static str, http: Arc<Stats>) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(DataCollector {
        shared,
        source,
        http,
    }));
    r
}

#[derive(Debug)]
pub(super) struct DataCollector {
    shared: Arc<Shared>,
    source: &'static str,
    http: Arc<Stats>,
}

/// requester and responder, and their groups where they have one.
pub(super) fn peer_labels(s: &PeerSeries) -> Vec<(&'static str, String)> {
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

pub(super) fn family_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}

/// One metric with one value per label set.
pub(super) fn family<L: prometheus_client::encoding::EncodeLabelSet>(
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
pub(super) fn single(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    ty: MetricType,
    v: Value,
) -> std::fmt::Result {
    v.encode(enc.encode_descriptor(name, help, None, ty)?)
}

pub(super) enum Value {
    Counter(u64),
    Gauge(i64),
    Hist(Histogram),
}

pub(super) fn gauge(n: u64) -> Value {
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
            "icmpmon_drops",
            "ICMP messages the kernel dropped (drop tracing: --source bpf or --drops), by the \
             kernel's reason, e.g. reason=\"NETFILTER_DROP\"; reasons past 256 are \"other\"",
            None,
            MetricType::Counter,
            d.drops
                .iter()
                .map(|(r, n)| ([("reason", r.as_str())], Value::Counter(*n))),
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
