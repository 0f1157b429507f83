//! The aggregator: the one owner of all live state. The aggregator thread
//! calls `ingest` for every event (in capture order) and `tick` while idle;
//! front ends get `snapshot`s (snapshot.rs). Every table is bounded, so
//! memory does not grow with the number of distinct (possibly spoofed)
//! sources.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::num::NonZeroUsize;

use foldhash::fast::RandomState;
use foldhash::HashMap;
use lru::LruCache;

use super::anomaly::{Anomalies, Flag, FlagKind, Subject, Thresholds, When};
use super::drops::DropTracker;
use super::echo::{Departed, EchoTotals, EchoTracker, PeerKey, PeerStats};
use super::errors::ErrorTracker;
use super::flow::{is_error, FlowKey};
use super::groups::{GroupPair, Groups};
use super::kernel::{KernelSample, KernelWatch, Silence};
use super::mtu::PathMtu;
use super::owners::{Attribution, OwnerTracker};
use super::rates::SecondSeries;
use super::recent::RecentEvent;
use super::rtt::{Histogram, RttStats};
use super::topk::SpaceSaving;
use crate::event::{kind_name, Direction, Family, IcmpEvent, Info};

use super::addr::{ns_to_us, Addr};
use super::config::Config;

/// What the aggregator adds to an event's row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Set on an echo reply paired with its request.
    pub rtt_us: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub(super) struct KindStats {
    pub(super) count: u64,
    /// `count` by `Direction::index`.
    pub(super) by_direction: [u64; Direction::COUNT],
    pub(super) series: SecondSeries,
}

impl KindStats {
    fn add(&mut self, sec: u64, dir: Direction) {
        self.count += 1;
        self.by_direction[dir.index()] += 1;
        self.series.add(sec);
    }
}

/// Messages of one type/code pair seen in each direction, or (`kind`
/// `None`) of every pair beyond the kinds table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageCount {
    pub kind: Option<KindKey>,
    /// By `Direction::index`.
    pub by_direction: [u64; Direction::COUNT],
}

pub type KindKey = (Family, u8, u8);

/// (family, type, kind name, direction) of an error message.
pub type ErrorKindKey = (Family, u8, &'static str, Direction);

#[derive(Debug)]
pub struct Aggregator {
    pub(super) cfg: Config,
    pub(super) echo: EchoTracker,
    pub(super) errors: ErrorTracker,
    pub(super) anomalies: Anomalies,
    pub(super) talkers: SpaceSaving<Addr>,
    pub(super) series: SecondSeries,
    pub(super) kinds: HashMap<KindKey, KindStats>,
    pub(super) other_kinds: u64,
    pub(super) other_kinds_by_direction: [u64; Direction::COUNT],
    /// By the destination of the quoted packet.
    pub(super) path_mtu: LruCache<Addr, PathMtu, RandomState>,
    /// Error messages by family, type, kind and direction: error types have
    /// a few dozen names, so this stays small whatever the codes.
    pub(super) error_kinds: HashMap<ErrorKindKey, u64>,
    pub(super) rtt: RttStats,
    pub(super) recent: VecDeque<RecentEvent>,
    pub(super) owners: OwnerTracker,
    pub(super) kernel: KernelWatch,
    /// What the kernel dropped (drop tracing).
    pub(super) drops: DropTracker,
    /// Echo requests seen arriving and replies seen leaving, by family
    /// (`[v4, v6]`), and their values at the last kernel sample.
    pub(super) echo_in: [u64; 2],
    pub(super) replies_out: [u64; 2],
    pub(super) echo_at_sample: [(u64, u64); 2],
    pub(super) events: u64,
    pub(super) by_family: [u64; 2],
    pub(super) by_direction: [u64; Direction::COUNT],
    pub(super) first_ns: Option<u64>,
    pub(super) now_ns: u64,
    /// The expiry clock's newest reading (see `expiry_clock`).
    pub(super) clock_ns: u64,
    /// Wall clock minus monotonic clock, and the monotonic clock, as last
    /// read by a live run (0 and unknown: time is the events' own, as in a
    /// capture file).
    pub(super) wall_offset_ns: u64,
    pub(super) mono_now_ns: u64,
}

impl Aggregator {
    pub fn new(cfg: Config) -> Self {
        let mut echo = EchoTracker::new(cfg.echo_timeout_ns, cfg.max_pending, cfg.max_peers);
        echo.set_groups(cfg.groups.clone());
        Self {
            echo,
            errors: ErrorTracker::new(cfg.max_flows, cfg.max_reporters, cfg.recent_errors),
            anomalies: Anomalies::new(cfg.thresholds),
            talkers: SpaceSaving::new(cfg.top_k),
            series: SecondSeries::default(),
            kinds: HashMap::default(),
            other_kinds: 0,
            other_kinds_by_direction: [0; Direction::COUNT],
            path_mtu: LruCache::with_hasher(
                NonZeroUsize::new(cfg.max_flows.max(1)).expect("max(1)"),
                RandomState::default(),
            ),
            error_kinds: HashMap::default(),
            rtt: RttStats::default(),
            recent: VecDeque::with_capacity(cfg.recent_events.min(4096)),
            owners: OwnerTracker::new(cfg.max_reporters),
            kernel: KernelWatch::default(),
            drops: DropTracker::new(cfg.max_flows),
            echo_in: [0; 2],
            replies_out: [0; 2],
            echo_at_sample: [(0, 0); 2],
            events: 0,
            by_family: [0; 2],
            by_direction: [0; Direction::COUNT],
            first_ns: None,
            now_ns: 0,
            clock_ns: 0,
            wall_offset_ns: 0,
            mono_now_ns: u64::MAX,
            cfg,
        }
    }

    /// The aggregator's clock: the newest event's or tick's time.
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// Events ingested so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// A live run's clocks, read anew before each batch and tick: the wall
    /// clock less the monotonic clock, and the monotonic clock now. Echo
    /// timeouts then run on the monotonic clock, and a step of the wall
    /// clock (NTP, an administrator) neither expires waiting requests nor
    /// keeps them.
    pub fn set_clocks(&mut self, wall_offset_ns: u64, mono_now_ns: u64) {
        self.wall_offset_ns = wall_offset_ns;
        self.mono_now_ns = mono_now_ns;
    }

    /// The expiry clock now (monotonic in a live run, the packets' own
    /// time in a file): what timeouts and idleness are measured on.
    pub fn clock_ns(&self) -> u64 {
        self.clock_ns
    }

    /// What `set_clocks` was last given.
    pub fn clocks(&self) -> (u64, u64) {
        (self.wall_offset_ns, self.mono_now_ns)
    }

    /// The clock echo timeouts run on, at an event: the source's monotonic
    /// timestamp (module, BPF), else its wall-clock one less the offset
    /// (the packets' own time in a file, where the offset is 0), kept
    /// between the clock so far and now: a packet stamped before a step
    /// but read after it would otherwise land an hour off.
    fn expiry_clock(&self, ev: &IcmpEvent) -> u64 {
        ev.mono_ns.unwrap_or_else(|| {
            let at = ev.ts_ns.saturating_sub(self.wall_offset_ns);
            at.clamp(self.clock_ns, self.mono_now_ns.max(self.clock_ns))
        })
    }

    /// Takes one event (in capture order) and says what it adds to the row.
    pub fn ingest(&mut self, ev: &IcmpEvent) -> Outcome {
        let ts = ev.ts_ns;
        self.now_ns = self.now_ns.max(ts);
        self.first_ns.get_or_insert(ts);
        let at = self.expiry_clock(ev);
        self.clock_ns = self.clock_ns.max(at);
        self.echo.expire(self.clock_ns);
        // Every row counts as an event of its family and direction.
        self.events += 1;
        self.by_family[usize::from(ev.family == Family::V6)] += 1;
        self.by_direction[ev.direction.index()] += 1;
        let mut out = Outcome::default();
        match (ev.direction, &ev.drop) {
            // A drop is a second sighting of a message (the hooks saw it
            // pass, or it never reached them): it feeds the drop tables,
            // not the rates, types, echo pairing, errors or talkers.
            (Direction::Drop, Some(d)) => self.drops.add(ev, d),
            (Direction::Drop, None) => {}
            _ => out = self.message(ev, at),
        }
        if self.cfg.recent_events > 0 {
            if self.recent.len() == self.cfg.recent_events {
                self.recent.pop_front();
            }
            self.recent.push_back(RecentEvent::new(ev, out.rtt_us));
        }
        out
    }

    /// A message seen passing (not a drop), at `at` on the expiry clock.
    fn message(&mut self, ev: &IcmpEvent, at: u64) -> Outcome {
        let sec = ev.ts_ns / 1_000_000_000;
        self.series.add(sec);
        let key = (ev.family, ev.icmp_type, ev.icmp_code);
        let room = self.kinds.len() < self.cfg.max_kinds;
        match self.kinds.get_mut(&key) {
            Some(k) => k.add(sec, ev.direction),
            None if room => self.kinds.entry(key).or_default().add(sec, ev.direction),
            None => {
                self.other_kinds += 1;
                self.other_kinds_by_direction[ev.direction.index()] += 1;
            }
        }
        self.talkers.add(Addr(ev.src));
        let mut out = Outcome::default();
        let v4 = ev.family == Family::V4;
        let fam = usize::from(!v4);
        match (ev.icmp_type, ev.direction, v4) {
            (8, Direction::In, true) | (128, Direction::In, false) => self.echo_in[fam] += 1,
            (0, Direction::Out, true) | (129, Direction::Out, false) => self.replies_out[fam] += 1,
            _ => {}
        }
        match (ev.icmp_type, ev.echo) {
            (8, Some(e)) if v4 => self.request(ev, &e, at),
            (128, Some(e)) if !v4 => self.request(ev, &e, at),
            (0, Some(e)) if v4 => out.rtt_us = self.reply(ev, &e, at),
            (129, Some(e)) if !v4 => out.rtt_us = self.reply(ev, &e, at),
            (t, _) if is_error(ev.family, t) => self.error(ev, at),
            _ => {}
        }
        out
    }

    fn request(&mut self, ev: &IcmpEvent, e: &crate::event::Echo, at: u64) {
        self.echo.request(ev, e, at);
        let when = When::new(ev.ts_ns, at);
        self.anomalies.echo_request(ev.src, e.payload_len, when);
    }

    /// A reply's round trip: on its first sighting only (its copies get
    /// none), so the RTT column and the statistics count each once.
    fn reply(&mut self, ev: &IcmpEvent, e: &crate::event::Echo, at: u64) -> Option<u64> {
        let p = self.echo.reply(ev, e, at)?;
        let us = ns_to_us(p.rtt_ns?);
        if p.mismatch {
            let when = When::new(ev.ts_ns, at);
            self.anomalies.payload_mismatch(ev.dst, ev.src, when);
        }
        self.rtt.add(us);
        Some(us)
    }

    fn error(&mut self, ev: &IcmpEvent, at: u64) {
        self.errors.ingest(ev);
        let kind = match kind_name(ev.family, ev.icmp_type, ev.icmp_code) {
            Cow::Borrowed(k) => k,
            Cow::Owned(_) => "other",
        };
        *self
            .error_kinds
            .entry((ev.family, ev.icmp_type, kind, ev.direction))
            .or_default() += 1;
        if let (Some(Info::Mtu(mtu)), Some(q)) = (ev.info, &ev.quoted) {
            super::mtu::reported(&mut self.path_mtu, q.dst, mtu, ev.src, ev.ts_ns);
        }
        let v4 = ev.family == Family::V4;
        let when = When::new(ev.ts_ns, at);
        match ev.icmp_type {
            3 if v4 => self.anomalies.unreachable(when),
            1 if !v4 => self.anomalies.unreachable(when),
            5 if v4 => self.redirect(ev, when),
            137 if !v4 => self.redirect(ev, when),
            // Code 0: the hop limit ran out in transit (traceroute's answer);
            // the error goes back to the prober.
            11 if v4 && ev.icmp_code == 0 => self.anomalies.ttl_exceeded(ev.dst, when),
            3 if !v4 && ev.icmp_code == 0 => self.anomalies.ttl_exceeded(ev.dst, when),
            _ => {}
        }
    }

    fn redirect(&mut self, ev: &IcmpEvent, when: When) {
        let gw = match ev.info {
            Some(Info::Gateway(g) | Info::Target(g)) => Some(g),
            _ => None,
        };
        self.anomalies.redirect(ev.src, gw, when);
    }

    /// Moves the clock on without an event (a live source while idle):
    /// requests past their timeout become lost. `now_ns` is wall-clock
    /// time; the expiry clock is it less the offset.
    pub fn tick(&mut self, now_ns: u64) {
        self.now_ns = self.now_ns.max(now_ns);
        let at = now_ns.saturating_sub(self.wall_offset_ns);
        self.clock_ns = self.clock_ns.max(at.min(self.mono_now_ns));
        self.echo.expire(self.clock_ns);
    }

    /// Peer groups (`--config`'s `[peer-groups]`), from the next pair on;
    /// the table's pairs are grouped again.
    pub fn set_groups(&mut self, groups: Groups) {
        self.cfg.groups = groups.clone();
        self.echo.set_groups(groups);
    }

    pub fn groups(&self) -> &Groups {
        self.echo.groups()
    }

    /// Every group pair's echo counters and RTT samples: those of the pairs
    /// pushed out of the table, plus those of the table's pairs.
    pub fn group_totals(&self) -> HashMap<GroupPair, Departed> {
        let mut t: HashMap<GroupPair, Departed> = HashMap::default();
        for (g, d) in self.echo.departed() {
            t.insert(*g, d.clone());
        }
        for (_, p) in self.echo.peers() {
            let e = t.entry(p.groups).or_default();
            e.counts.add(&p.counts);
            e.rtt.merge(p.rtt.histogram());
        }
        t
    }

    /// Echo counters of every peer pair in the table (not in any order).
    pub fn peers(&self) -> impl Iterator<Item = (&PeerKey, &PeerStats)> {
        self.echo.peers()
    }

    pub fn peer(&self, key: &PeerKey) -> Option<&PeerStats> {
        self.echo.peer_stats(key)
    }

    /// `PeerStats::serial` of the latest pair to enter the table.
    pub fn last_peer_serial(&self) -> u64 {
        self.echo.last_serial()
    }

    pub fn echo_totals(&self) -> EchoTotals {
        self.echo.totals()
    }

    /// Every RTT sample of the run.
    pub fn rtt_histogram(&self) -> &Histogram {
        self.rtt.histogram()
    }

    /// Messages by type/code and direction: every pair of the kinds table,
    /// then the rest as one.
    pub fn message_counts(&self) -> impl Iterator<Item = MessageCount> + '_ {
        let other = MessageCount {
            kind: None,
            by_direction: self.other_kinds_by_direction,
        };
        self.kinds
            .iter()
            .map(|(k, s)| MessageCount {
                kind: Some(*k),
                by_direction: s.by_direction,
            })
            .chain(std::iter::once(other))
    }

    /// Error messages by family, type, kind and direction.
    pub fn error_kinds(&self) -> impl Iterator<Item = (&ErrorKindKey, u64)> {
        self.error_kinds.iter().map(|(k, n)| (k, *n))
    }

    /// Path MTUs by destination, most recently reported first.
    pub fn path_mtus(&self) -> impl Iterator<Item = (IpAddr, &PathMtu)> {
        self.path_mtu.iter().map(|(a, p)| (a.0, p))
    }

    /// How many subjects each kind of flag is active for now (raised or
    /// triggered within `super::anomaly::QUIET_NS`), every kind listed.
    pub fn active_flags(&self) -> [(FlagKind, u64); FlagKind::ALL.len()] {
        let mut n = FlagKind::ALL.map(|k| (k, 0));
        for f in self.anomalies.flags() {
            if self.clock_ns.saturating_sub(f.last_at) < super::anomaly::QUIET_NS {
                if let Some(slot) = n.iter_mut().find(|(k, _)| *k == f.flag) {
                    slot.1 += 1;
                }
            }
        }
        n
    }

    /// New anomaly thresholds (a reload), from the next event on.
    pub fn set_thresholds(&mut self, t: Thresholds) {
        self.cfg.thresholds = t;
        self.anomalies.thresholds = t;
    }

    /// What the attribution thread found for `ev` (an error quoting a
    /// local flow, or an echo request sent from here): counted per owner,
    /// and shown with the event and its error flow.
    ///
    /// `seq`: the event's number here (`events()` right after its
    /// `ingest`), which finds it among the recent events at once; without
    /// it (another aggregator's number), the last events are searched.
    pub fn attributed(&mut self, ev: &IcmpEvent, seq: Option<u64>, a: &Attribution) {
        let error = is_error(ev.family, ev.icmp_type);
        self.owners.attributed(ev, a, error);
        if let (true, Attribution::Owner(o), Some(q)) = (error, a, &ev.quoted) {
            self.errors.attribute(&FlowKey::from(q), o);
        }
        let first = self.events - self.recent.len() as u64 + 1;
        let r = match seq {
            Some(n) => n
                .checked_sub(first)
                .and_then(|i| self.recent.get_mut(usize::try_from(i).ok()?)),
            None => self.recent.iter_mut().rev().take(64).find(|r| {
                r.attribution.is_none()
                    && (r.ts_ns, r.src, r.dst, r.icmp_type)
                        == (ev.ts_ns, ev.src, ev.dst, ev.icmp_type)
            }),
        };
        if let Some(r) = r {
            r.attribution = Some(a.clone());
        }
    }

    /// A reading of the kernel's ICMP counters and sysctls: with what
    /// icmpmon saw since the last one, it may explain unanswered requests.
    pub fn kernel_sample(&mut self, s: KernelSample) {
        let ts = self.now_ns.max(s.ts_ns);
        self.kernel.push(s);
        for fam in 0..2 {
            let (req0, rep0) = self.echo_at_sample[fam];
            let (req, rep) = (self.echo_in[fam], self.replies_out[fam]);
            self.echo_at_sample[fam] = (req, rep);
            let silence = Silence {
                v6: fam == 1,
                unanswered: (req - req0).saturating_sub(rep - rep0),
            };
            let subject = if fam == 0 {
                "this host (ipv4)"
            } else {
                "this host (ipv6)"
            };
            if let Some((flag, detail)) = self.kernel.why(silence) {
                let when = When::new(ts, self.clock_ns);
                let subject = Subject::Named(subject);
                self.anomalies.raise(flag, subject, when, |d| *d = detail);
            }
        }
    }

    /// The kernel's counters and sysctls, as last sampled.
    pub fn kernel(&self) -> &KernelWatch {
        &self.kernel
    }

    /// ICMP messages the kernel dropped, per reason (bounded: see
    /// `MAX_REASONS`), most first.
    pub fn drops_by_reason(&self) -> Vec<(String, u64)> {
        self.drops.by_reason()
    }

    pub fn attribution_totals(&self) -> super::owners::AttributionTotals {
        self.owners.totals
    }

    /// Flags raised since the last call (for `--alerts`).
    pub fn take_alerts(&mut self) -> Vec<Flag> {
        self.anomalies.take_alerts()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::snapshot::{PeerOrder, PeerQuery, Snapshot};
    use crate::event::{Echo, KernelDrop, Quoted};
    use proptest::prelude::*;
    use std::collections::HashMap as StdMap;

    fn ev(
        ts_ns: u64,
        dir: Direction,
        src: IpAddr,
        dst: IpAddr,
        t: u8,
        echo: Option<(u16, u16)>,
    ) -> IcmpEvent {
        IcmpEvent {
            drop: None,
            mono_ns: None,
            ts_ns,
            direction: dir,
            ifindex: 0,
            family: Family::V4,
            src,
            dst,
            ttl: 64,
            length: 84,
            icmp_type: t,
            icmp_code: 0,
            echo: echo.map(|(id, seq)| Echo {
                id,
                seq,
                payload_len: 56,
                payload_digest: 1,
            }),
            quoted: None::<Quoted>,
            info: None,
        }
    }

    fn host(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn a_drop_is_counted_apart_and_explains_an_unanswered_peer() {
        let mut agg = Aggregator::new(Config::default());
        let t = 1_000_000_000;
        let request = ev(t, Direction::In, host(1), host(2), 8, Some((7, 1)));
        agg.ingest(&request);
        let mut dropped = ev(t + 1000, Direction::Drop, host(1), host(2), 8, Some((7, 1)));
        dropped.drop = Some(KernelDrop {
            reason: "NETFILTER_DROP".into(),
            function: "nft_do_chain".into(),
        });
        agg.ingest(&dropped);
        agg.tick(t + 10_000_000_000);
        let s = agg.snapshot();
        // One row each, but one message: the drop is in no rate or type.
        assert_eq!((s.events, s.dir_in, s.dir_drop), (2, 1, 1));
        assert_eq!(s.kinds.iter().map(|k| k.count).sum::<u64>(), 1);
        assert_eq!(s.echo.requests, 1);
        assert_eq!(s.drops, 1);
        assert_eq!(s.drops_by_reason, vec![("NETFILTER_DROP".to_string(), 1)]);
        let why = &s.unanswered_drops;
        assert_eq!(why.len(), 1);
        assert_eq!((why[0].src, why[0].dst), (host(1), host(2)));
        assert_eq!(
            (why[0].reason.as_str(), why[0].function.as_str()),
            ("NETFILTER_DROP", "nft_do_chain")
        );
        // An answered pair has nothing to explain.
        agg.ingest(&ev(
            t + 11_000_000_000,
            Direction::In,
            host(3),
            host(2),
            8,
            Some((8, 1)),
        ));
        agg.ingest(&ev(
            t + 11_000_000_100,
            Direction::Out,
            host(2),
            host(3),
            0,
            Some((8, 1)),
        ));
        let mut d2 = ev(
            t + 11_000_000_200,
            Direction::Drop,
            host(2),
            host(3),
            0,
            Some((8, 1)),
        );
        d2.drop = dropped.drop.clone();
        agg.ingest(&d2);
        assert_eq!(agg.snapshot().unanswered_drops.len(), 1);
    }

    proptest::proptest! {
        /// A view's top N peers are the first N of the whole ordered list,
        /// for every order; addresses order numerically (10.0.0.2 before
        /// 10.0.0.10).
        #[test]
        fn top_peers_are_the_head_of_the_full_order(
            pings in proptest::collection::vec((1u8..40, 0u8..4, 1u64..5000), 1..120),
            limit in 0usize..50,
        ) {
            let mut agg = Aggregator::new(Config::default());
            let mut t = 1_000_000_000u64;
            for (i, (peer, replies, rtt_us)) in pings.iter().enumerate() {
                let seq = i as u16;
                t += 1_000_000;
                agg.ingest(&ev(t, Direction::Out, host(1), host(*peer), 8, Some((1, seq))));
                if *replies > 0 {
                    let r = ev(t + rtt_us * 1000, Direction::In, host(*peer), host(1), 0, Some((1, seq)));
                    agg.ingest(&r);
                }
            }
            agg.tick(t + 10_000_000_000);
            for order in [PeerOrder::Requests, PeerOrder::Loss, PeerOrder::RttAvg,
                          PeerOrder::RttP95, PeerOrder::LastSeen, PeerOrder::Peer] {
                let key = |s: &Snapshot| -> Vec<(IpAddr, IpAddr)> {
                    s.peers.iter().map(|p| (p.requester, p.responder)).collect()
                };
                let all = agg.snapshot_with(PeerQuery { order, limit: usize::MAX });
                let top = agg.snapshot_with(PeerQuery { order, limit });
                let want: Vec<_> = key(&all).into_iter().take(limit).collect();
                proptest::prop_assert_eq!(key(&top), want, "{:?}", order);
                proptest::prop_assert_eq!(top.peers_total, all.peers.len());
                if order == PeerOrder::Peer {
                    let k = key(&all);
                    let mut sorted = k.clone();
                    sorted.sort();
                    proptest::prop_assert_eq!(k, sorted);
                }
            }
        }
    }

    #[test]
    fn round_trips_use_the_monotonic_clock_when_the_source_has_one() {
        // The wall clock steps back a second between request and reply; the
        // monotonic clock says 500 µs passed.
        let mut agg = Aggregator::new(Config::default());
        let req = IcmpEvent {
            mono_ns: Some(7_000_000),
            ..ev(
                10_000_000_000,
                Direction::Out,
                host(1),
                host(2),
                8,
                Some((1, 1)),
            )
        };
        let rep = IcmpEvent {
            mono_ns: Some(7_500_000),
            ..ev(
                9_000_000_000,
                Direction::In,
                host(2),
                host(1),
                0,
                Some((1, 1)),
            )
        };
        agg.ingest(&req);
        assert_eq!(agg.ingest(&rep).rtt_us, Some(500));
        // Without it (capture files), the wall clock.
        let mut agg = Aggregator::new(Config::default());
        agg.ingest(&ev(
            1_000,
            Direction::Out,
            host(1),
            host(2),
            8,
            Some((1, 2)),
        ));
        let out = agg.ingest(&ev(
            251_000,
            Direction::In,
            host(2),
            host(1),
            0,
            Some((1, 2)),
        ));
        assert_eq!(out.rtt_us, Some(250));
    }

    /// A flood of new pairs pushes a pair out of the peer table while its
    /// request waits: the reply still pairs, with its round trip.
    #[test]
    fn a_reply_pairs_after_its_pair_left_the_peer_table() {
        let mut agg = Aggregator::new(Config {
            max_peers: 16,
            ..Config::default()
        });
        let t = 1_000_000_000;
        agg.ingest(&ev(t, Direction::Out, host(1), host(2), 8, Some((1, 1))));
        for n in 0..64u8 {
            let e = ev(
                t + 1000,
                Direction::In,
                host(100 + n),
                host(1),
                8,
                Some((9, 1)),
            );
            agg.ingest(&e);
        }
        let out = agg.ingest(&ev(
            t + 500_000,
            Direction::In,
            host(2),
            host(1),
            0,
            Some((1, 1)),
        ));
        assert_eq!(out.rtt_us, Some(500));
        let e = agg.echo_totals();
        assert!(e.peers_evicted >= 48, "{e:?}");
        assert_eq!((e.answered, e.unsolicited, e.lost), (1, 0, 0), "{e:?}");
    }

    /// `ping -f` sends tens of thousands of requests a second: its 16-bit
    /// sequence wraps within the echo timeout. A request whose key was
    /// already answered starts a new exchange (its reply gets its own round
    /// trip), while a copy seen in another direction and a repeat of an
    /// unanswered request stay what they were.
    #[test]
    fn a_sequence_number_used_again_starts_a_new_exchange() {
        let mut agg = Aggregator::new(Config::default());
        let t = 1_000_000_000;
        let (me, peer) = (host(1), host(2));
        for round in 0..3u64 {
            let at = t + round * 1_000_000;
            agg.ingest(&ev(at, Direction::Out, me, peer, 8, Some((7, 1))));
            // The same request seen coming in (lo): a copy.
            agg.ingest(&ev(at + 10, Direction::In, me, peer, 8, Some((7, 1))));
            let out = agg.ingest(&ev(at + 300_000, Direction::In, peer, me, 0, Some((7, 1))));
            assert_eq!(out.rtt_us, Some(300), "round {round}");
        }
        // Sent again before any answer: a duplicate, its reply pairs once.
        let at = t + 10_000_000;
        agg.ingest(&ev(at, Direction::Out, me, peer, 8, Some((7, 2))));
        agg.ingest(&ev(at + 100, Direction::Out, me, peer, 8, Some((7, 2))));
        let out = agg.ingest(&ev(at + 200_000, Direction::In, peer, me, 0, Some((7, 2))));
        assert_eq!(out.rtt_us, Some(200));
        let e = agg.echo_totals();
        assert_eq!(
            (
                e.requests,
                e.answered,
                e.copies,
                e.duplicate_requests,
                e.duplicate_replies
            ),
            (4, 4, 3, 1, 0),
            "{e:?}"
        );
        assert_eq!(e.pending, 0, "{e:?}");
    }

    /// Echo timeouts count on the monotonic clock: a step of the wall clock
    /// (NTP, an administrator) neither expires waiting requests nor keeps
    /// them, for sources with a monotonic timestamp (module, BPF) and
    /// without (AF_PACKET, NFLOG: their wall time less the offset), even
    /// for packets stamped before a step and read after it.
    #[test]
    fn a_wall_clock_step_neither_expires_nor_keeps_requests() {
        const S: u64 = 1_000_000_000;
        const HOUR: u64 = 3600 * S;
        let (wall0, mono0) = (1_800_000_000 * S, 50 * S);
        for with_mono in [true, false] {
            let at = |wall: u64, mono: u64, e: IcmpEvent| IcmpEvent {
                ts_ns: wall,
                mono_ns: with_mono.then_some(mono),
                ..e
            };
            let req = |seq| ev(0, Direction::Out, host(1), host(2), 8, Some((1, seq)));
            let rep = |seq| ev(0, Direction::In, host(2), host(1), 0, Some((1, seq)));
            let mut agg = Aggregator::new(Config::default());
            agg.set_clocks(wall0 - mono0, mono0);
            agg.ingest(&at(wall0, mono0, req(1)));
            // An hour forward, half a second later.
            agg.set_clocks(wall0 - mono0 + HOUR, mono0 + S / 2);
            agg.tick(wall0 + HOUR + S / 2);
            let t = agg.echo_totals();
            assert_eq!((t.lost, t.pending), (0, 1), "mono {with_mono}");
            // Its reply, a second after it; the round trip is the same
            // second on either clock once the offset is known.
            agg.set_clocks(wall0 - mono0 + HOUR, mono0 + S);
            let out = agg.ingest(&at(wall0 + HOUR + S, mono0 + S, rep(1)));
            if with_mono {
                assert_eq!(out.rtt_us, Some(1_000_000));
            }
            assert_eq!(agg.echo_totals().answered, 1);
            // An hour back, read with a packet stamped before it: nothing
            // expires early, and a request still expires 2 s later.
            agg.set_clocks(wall0 - mono0 + HOUR, mono0 + 2 * S);
            agg.ingest(&at(wall0 + HOUR + 2 * S, mono0 + 2 * S, req(2)));
            agg.set_clocks(wall0 - mono0 - HOUR, mono0 + 2 * S + S / 10);
            agg.ingest(&at(
                wall0 + HOUR + 2 * S + S / 20,
                mono0 + 2 * S + S / 20,
                req(3),
            ));
            let t = agg.echo_totals();
            assert_eq!((t.lost, t.pending), (0, 2), "mono {with_mono}");
            agg.set_clocks(wall0 - mono0 - HOUR, mono0 + 4 * S + S / 10);
            agg.tick(wall0 - HOUR + 4 * S + S / 10);
            let t = agg.echo_totals();
            assert_eq!((t.lost, t.pending), (2, 0), "mono {with_mono}");
        }
    }

    /// The anomaly flags' quiet period and a peer pair's idleness count on
    /// the expiry clock too: an hour's step forward does not end a quiet
    /// period (a second alert) or age a pair; an hour back does not keep a
    /// flag quiet for an hour.
    #[test]
    fn a_wall_clock_step_neither_ends_nor_stretches_a_quiet_period() {
        const S: u64 = 1_000_000_000;
        const HOUR: u64 = 3600 * S;
        let (wall0, mono0) = (1_800_000_000 * S, 50 * S);
        let redirect = |wall: u64| ev(wall, Direction::In, host(9), host(1), 5, None);
        let mut agg = Aggregator::new(Config::default());
        agg.set_clocks(wall0 - mono0, mono0);
        agg.ingest(&redirect(wall0));
        agg.ingest(&ev(
            wall0,
            Direction::Out,
            host(1),
            host(2),
            8,
            Some((1, 1)),
        ));
        assert_eq!(agg.take_alerts().len(), 1);
        // An hour forward, a second later: the same flag, still quiet.
        agg.set_clocks(wall0 - mono0 + HOUR, mono0 + S);
        agg.ingest(&redirect(wall0 + HOUR + S));
        assert!(agg.take_alerts().is_empty(), "a step forward ended it");
        let active = |agg: &Aggregator| {
            agg.active_flags()
                .iter()
                .find(|(k, _)| *k == FlagKind::Redirect)
                .map_or(0, |(_, n)| *n)
        };
        assert_eq!(active(&agg), 1);
        let pair = PeerKey {
            requester: host(1),
            responder: host(2),
        };
        let last_at = agg.peer(&pair).expect("the pair").last_at;
        assert_eq!(agg.clock_ns() - last_at, S, "the pair aged by the step");
        // Then an hour back, 31 s on: the quiet period is over.
        agg.set_clocks(wall0 - mono0 - HOUR, mono0 + 32 * S);
        agg.ingest(&redirect(wall0 - HOUR + 32 * S));
        assert_eq!(agg.take_alerts().len(), 1, "a step back kept it quiet");
    }

    /// (reply?, pair, id, seq, direction, µs since the previous event)
    type Op = (bool, u8, u16, u16, u8, u64);

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        proptest::collection::vec(
            (
                any::<bool>(),
                0u8..3,
                0u16..2,
                0u16..6,
                0u8..3,
                0u64..1_500_000,
            ),
            0..300,
        )
    }

    proptest! {
        #[test]
        fn echo_accounting_holds(ops in ops()) {
            let timeout = 2_000_000_000;
            let mut agg = Aggregator::new(Config { echo_timeout_ns: timeout, ..Config::default() });
            let mut t = 1_000_000_000_000u64;
            let mut requests_of: StdMap<(u8, u16, u16), u64> = StdMap::new();
            let mut firsts_of: StdMap<(u8, u16, u16), u64> = StdMap::new();
            for (reply, pair, id, seq, dir, dt) in ops {
                t += dt * 1000;
                let dir = [Direction::In, Direction::Out, Direction::Unknown][usize::from(dir)];
                let (a, b) = (host(2 * pair + 1), host(2 * pair + 2));
                let before = agg.echo.totals();
                let out = if reply {
                    agg.ingest(&ev(t, dir, b, a, 0, Some((id, seq))))
                } else {
                    agg.ingest(&ev(t, dir, a, b, 8, Some((id, seq))))
                };
                let after = agg.echo.totals();
                let key = (pair, id, seq);
                *requests_of.entry(key).or_default() += after.requests - before.requests;
                let first = after.answered - before.answered;
                *firsts_of.entry(key).or_default() += first;
                // A reply answers one request at most once.
                prop_assert!(firsts_of[&key] <= requests_of[&key]);
                prop_assert!(first <= 1 && (first == 0 || out.rtt_us.is_some()));
                prop_assert_eq!(after.requests, after.answered + after.lost + after.pending);
            }
            agg.tick(t + timeout);
            let e = agg.echo.totals();
            prop_assert_eq!(e.pending, 0);
            prop_assert_eq!(e.requests, e.answered + e.lost);
            let peers: u64 = agg.snapshot().peers.iter().map(|p| p.counts.requests).sum();
            prop_assert_eq!(peers, e.requests);
        }

        #[test]
        fn tables_stay_bounded(srcs in proptest::collection::vec((any::<u32>(), 0u8..4, any::<u16>()), 0..2000)) {
            let cfg = Config {
                max_pending: 32,
                max_peers: 16,
                max_flows: 8,
                max_reporters: 8,
                top_k: 8,
                max_kinds: 4,
                recent_events: 10,
                recent_errors: 5,
                ..Config::default()
            };
            let mut agg = Aggregator::new(cfg);
            for (i, (src, what, n)) in srcs.into_iter().enumerate() {
                let src = IpAddr::from(src.to_be_bytes());
                let ts = 1_000_000_000 + i as u64 * 1000;
                let mut e = match what {
                    0 => ev(ts, Direction::In, src, host(1), 8, Some((n, n))),
                    1 => ev(ts, Direction::In, host(1), src, 0, Some((n, n))),
                    2 => ev(ts, Direction::In, src, host(1), 3, None),
                    _ => ev(ts, Direction::In, src, host(1), (n % 40) as u8, None),
                };
                e.quoted = (what == 2).then_some(Quoted { proto: 17, src: host(1), dst: src, sport: Some(n), dport: Some(53), echo_id: None });
                agg.ingest(&e);
            }
            let t = agg.snapshot().tables;
            for (name, (len, cap)) in [
                ("pending", t.pending), ("expired", t.expired), ("peers", t.peers),
                ("flows", t.flows), ("reporters", t.reporters), ("talkers", t.talkers),
                ("kinds", t.kinds), ("recent", t.recent),
            ] {
                prop_assert!(len <= cap, "{} holds {} > {}", name, len, cap);
            }
            prop_assert!(agg.snapshot().recent_errors.len() <= 5);
        }
    }
}
