//! The aggregator thread's side of the endpoint: which pairs get labels,
//! and the copy of the counts (`Data`) published for the HTTP thread.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::pipeline::stage::{Flow, Record, Stage, Tick};
use icmpmon_capture::source::{stage_losses, Counters};
use icmpmon_core::aggregate::GroupPair;
use icmpmon_core::aggregate::Histogram;
use icmpmon_core::aggregate::{error_class, Aggregator, KindKey};
use icmpmon_core::aggregate::{Departed, PeerCounts, PeerKey};
use icmpmon_core::event::Direction;

/// How often the aggregator publishes (a scrape sees data this old at most,
/// plus one loop of the aggregator).
const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// A peer pair with no echo traffic for this long gives its labels up to
/// another (its series then go stale in Prometheus).
const IDLE_NS: u64 = 300_000_000_000;

/// What a scrape shows: a copy made by the aggregator thread.
#[derive(Debug, Default)]
pub(crate) struct Data {
    /// Changes with every publication (the HTTP thread caches its encoding).
    pub version: u64,
    /// The exported pairs, then `other` (`key` None).
    pub(super) peers: Vec<PeerSeries>,
    pub(super) pending: u64,
    pub(super) peers_tracked: u64,
    pub(super) peers_evicted: u64,
    /// (family, direction, type, code) or `None` for the kinds beyond the
    /// aggregator's table.
    pub(super) messages: Vec<(Option<KindKey>, Direction, u64)>,
    /// (class, kind, direction): both families summed.
    pub(super) errors: Vec<((&'static str, &'static str, Direction), u64)>,
    /// (destination, reporter, MTU), most recent first.
    pub(super) path_mtu: Vec<(IpAddr, IpAddr, u32)>,
    pub(super) flags: Vec<(&'static str, u64)>,
    pub(super) lost: Vec<(&'static str, u64)>,
    pub(super) events: u64,
    /// The kernel's ICMP counters and numeric sysctls, as last sampled.
    pub(super) kernel_counters: Vec<(&'static str, u64)>,
    pub(super) kernel_sysctls: Vec<(&'static str, i64)>,
    /// Attribution outcomes, by result.
    pub(super) attribution: Vec<(&'static str, u64)>,
    /// ICMP messages the kernel dropped, by reason (drop tracing).
    pub(super) drops: Vec<(String, u64)>,
}

#[derive(Debug, Clone)]
pub(super) struct PeerSeries {
    pub(super) key: Option<PeerKey>,
    /// Of the requester and the responder (--config's [peer-groups]).
    pub(super) groups: [Option<String>; 2],
    pub(super) counts: PeerCounts,
    pub(super) rtt: Histogram,
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
pub(super) struct Baseline {
    pub(super) serial: u64,
    pub(super) counts: PeerCounts,
    pub(super) rtt: Histogram,
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
        // On the expiry clock: a step of the wall clock neither idles
        // every pair at once nor keeps idle ones.
        let now = agg.clock_ns();
        let idle = |last_at: u64| now.saturating_sub(last_at) >= IDLE_NS;
        // Gone from the aggregator's table (or replaced by a new pair of the
        // same addresses), or idle: the labels are free.
        self.exported.retain(|k, b| {
            agg.peer(k)
                .is_some_and(|p| p.serial == b.serial && !idle(p.last_at))
        });
        let room = self.limit.saturating_sub(self.exported.len());
        if room == 0 {
            return;
        }
        let mut candidates: Vec<_> = agg
            .peers()
            .filter(|(k, p)| !self.exported.contains_key(k) && !idle(p.last_at))
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
            drops: agg.drops_by_reason(),
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

impl Stage for Publisher {
    fn on_record(&mut self, _: &Record, _: &Aggregator) -> Flow {
        Flow::Go
    }

    fn on_tick(&mut self, _: Tick, agg: &Aggregator) -> Flow {
        self.publish(agg, false);
        Flow::Go
    }

    fn finish(&mut self, agg: &Aggregator) -> Flow {
        self.publish(agg, true);
        Flow::Go
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::encode::peer_labels;
    use icmpmon_core::aggregate::Config;
    use icmpmon_core::event::Family;
    use icmpmon_core::event::{Echo, IcmpEvent};
    use proptest::prelude::*;

    fn echo(ts_ns: u64, src: IpAddr, dst: IpAddr, icmp_type: u8, seq: u16) -> IcmpEvent {
        IcmpEvent {
            drop: None,
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
