//! Echo pairing: requests wait in a bounded table keyed by (requester,
//! responder, id, seq) until their reply comes or the timeout passes.
//!
//! One message can be captured twice (on lo, by the kernel hooks when a
//! packet is both sent and received here, and on both interfaces of a
//! router): a copy in another direction is not a new request nor a
//! duplicate reply. A request gives one round trip at most, as tshark's
//! response time does: from its first sighting to its reply's first
//! sighting, on the reply's first row and in the statistics alike; later
//! sightings of the reply are copies.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use foldhash::HashMap;
use serde::Serialize;

use super::addr::Addr;
use super::groups::{GroupPair, Groups};
use super::pending::PendingTable;
use super::recall::Recall;
use super::rtt::{Histogram, RttStats};
use super::slab::SlabLru;
use crate::event::{Direction, Echo, IcmpEvent};

/// Who pinged whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PeerKey {
    pub requester: IpAddr,
    pub responder: IpAddr,
}

/// As two 128-bit words (see `Addr`).
impl Hash for PeerKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(Addr(self.requester).bits());
        state.write_u128(Addr(self.responder).bits());
    }
}

/// One request: who pinged whom, its identifier and sequence number. By
/// address, not by the pair's slot in the peer table: a reply still pairs
/// when a flood of new pairs has pushed its pair out meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct EchoKey {
    peer: PeerKey,
    id: u16,
    seq: u16,
}

#[derive(Debug, Clone)]
struct Pending {
    /// Directions of the request copies seen (bit per `Direction::index`).
    copies: u8,
    /// The first copy on the expiry clock (`Aggregator::expiry_clock`:
    /// monotonic, so a step of the wall clock neither expires a request
    /// nor keeps it).
    since_ns: u64,
    /// The first copy on the round-trip clock.
    first_clock: u64,
    /// Directions of the reply copies seen (bit per `Direction::index`).
    replies: u8,
    payload_len: u32,
    payload_digest: u64,
}

impl Pending {
    fn answered(&self) -> bool {
        self.replies != 0
    }
}

/// Echo counters of one peer pair (kept here, shown as is in snapshots).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PeerCounts {
    pub requests: u64,
    pub replies: u64,
    pub lost: u64,
    pub late: u64,
    pub duplicate_replies: u64,
    pub unsolicited: u64,
}

impl PeerCounts {
    /// Requests with no outcome yet: neither answered nor declared lost.
    pub fn pending(&self) -> u64 {
        // Late replies come after the loss was counted: not in `replies`.
        self.requests.saturating_sub(self.replies + self.lost)
    }

    /// What was counted since `base`, an earlier copy of the same counts
    /// (the echo counters; `duplicate_replies` and `unsolicited` stay 0).
    pub fn since(&self, base: &PeerCounts) -> PeerCounts {
        PeerCounts {
            requests: self.requests.saturating_sub(base.requests),
            replies: self.replies.saturating_sub(base.replies),
            lost: self.lost.saturating_sub(base.lost),
            late: self.late.saturating_sub(base.late),
            ..PeerCounts::default()
        }
    }

    /// Adds another pair's echo counters (those `since` keeps).
    pub fn add(&mut self, other: &PeerCounts) {
        self.requests += other.requests;
        self.replies += other.replies;
        self.lost += other.lost;
        self.late += other.late;
    }

    /// lost / (replies + lost), in percent; `None` before any outcome.
    pub fn loss_pct(&self) -> Option<f64> {
        let decided = self.replies + self.lost;
        (decided > 0).then(|| self.lost as f64 * 100.0 / decided as f64)
    }
}

/// What is kept of one peer pair.
#[derive(Debug, Clone, Default)]
pub struct PeerStats {
    pub counts: PeerCounts,
    /// Which pair this is: pairs entering the table are numbered from 1
    /// (a pair pushed out and back is a new pair). Unlike `first_ns`, it
    /// orders pairs by when the aggregator saw them, not by packet time.
    pub serial: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    /// When last seen on the expiry clock (monotonic in a live run): what
    /// idleness is measured on, whatever the wall clock does.
    pub last_at: u64,
    pub rtt: RttStats,
    /// The groups of requester and responder, found when the pair came.
    pub groups: GroupPair,
}

impl PeerStats {
    /// Makes this a new pair's (numbered `serial`, first seen at
    /// `first_ns`), keeping what the last pair in its slot allocated.
    fn start(&mut self, serial: u64, first_ns: u64, groups: GroupPair) {
        // Every field named: a new one must be started here too.
        let PeerStats {
            counts,
            serial: s,
            first_ns: f,
            last_ns,
            last_at,
            rtt,
            groups: g,
        } = self;
        *counts = PeerCounts::default();
        (*s, *f, *last_ns, *last_at, *g) = (serial, first_ns, 0, 0, groups);
        rtt.clear();
    }
}

/// The echo counters and RTT samples of pairs pushed out of the table, by
/// group pair: with the table's pairs, every group pair's total.
#[derive(Debug, Clone, Default)]
pub struct Departed {
    pub counts: PeerCounts,
    pub rtt: Histogram,
}

/// Totals over every peer (kept even for peers evicted from the table).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EchoTotals {
    pub requests: u64,
    /// Requests with at least one reply within the timeout.
    pub answered: u64,
    /// Requests unanswered after the timeout (or pushed out of a full
    /// table: `evicted` of them).
    pub lost: u64,
    /// Requests still inside their timeout.
    pub pending: u64,
    /// Replies to requests already counted lost.
    pub late: u64,
    /// A second reply in the same direction to one request.
    pub duplicate_replies: u64,
    /// A request seen again in the same direction while it waits.
    pub duplicate_requests: u64,
    /// Replies to requests never seen.
    pub unsolicited: u64,
    /// Second sightings of one message in another direction.
    pub copies: u64,
    pub evicted: u64,
    /// Peer pairs dropped from the bounded peer table.
    pub peers_evicted: u64,
}

/// What a reply paired to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paired {
    /// The round trip, on the reply's first sighting only (see the module
    /// comment); `None` on its copies.
    pub rtt_ns: Option<u64>,
    /// The request's echo data differs from the reply's.
    pub mismatch: bool,
}

/// Requests waiting beyond which the pending table is sized for its bound.
const GROW_AT: usize = 4096;

#[derive(Debug)]
pub struct EchoTracker {
    timeout_ns: u64,
    max_pending: usize,
    /// Requests inside their timeout (answered ones too, to recognise
    /// copies and duplicate replies), in arrival order.
    pending: PendingTable<EchoKey, Pending>,
    /// Recently lost requests, to tell a late reply from an unsolicited one.
    expired: Recall,
    /// Found once per event (a lost request's pair, once more).
    peers: SlabLru<PeerKey, PeerStats>,
    totals: EchoTotals,
    groups: Groups,
    departed: HashMap<GroupPair, Departed>,
    /// Pairs that have entered the table (the last `PeerStats::serial`).
    serials: u64,
}

impl EchoTracker {
    pub fn new(timeout_ns: u64, max_pending: usize, max_peers: usize) -> Self {
        Self {
            timeout_ns,
            max_pending: max_pending.max(1),
            // Grown as needed, not sized for the bound: a table sized for a
            // flood spreads a calm host's few requests over megabytes, a
            // cache miss (and a TLB miss) per probe.
            pending: PendingTable::default(),
            expired: Recall::new(max_pending / 4),
            peers: SlabLru::new(max_peers),
            totals: EchoTotals::default(),
            groups: Groups::default(),
            departed: HashMap::default(),
            serials: 0,
        }
    }

    /// The pair's slot, the pair made the most recently used (entered,
    /// pushing the least recently used out, if new).
    fn peer(&mut self, key: PeerKey, ts_ns: u64, at: u64) -> u32 {
        let (totals, departed) = (&mut self.totals, &mut self.departed);
        let (slot, new) = self.peers.slot_or_insert(key, |_, gone| {
            totals.peers_evicted += 1;
            let d = departed.entry(gone.groups).or_default();
            d.counts.add(&gone.counts);
            d.rtt.merge(gone.rtt.histogram());
        });
        let p = self.peers.at_mut(slot);
        if new {
            self.serials += 1;
            let groups = self.groups.pair(key.requester, key.responder);
            p.start(self.serials, ts_ns, groups);
        }
        p.last_ns = p.last_ns.max(ts_ns);
        p.last_at = p.last_at.max(at);
        slot
    }

    /// The pair's slot (see `peer`) and the request's key, for an echo
    /// message between `requester` and `responder` seen at `ts_ns`.
    fn lookup(
        &mut self,
        requester: IpAddr,
        responder: IpAddr,
        echo: &Echo,
        (ts_ns, at): (u64, u64),
    ) -> (u32, EchoKey) {
        let peer = PeerKey {
            requester,
            responder,
        };
        let key = EchoKey {
            peer,
            id: echo.id,
            seq: echo.seq,
        };
        (self.peer(peer, ts_ns, at), key)
    }

    /// Counts `key` lost (timeout or eviction) and remembers it for late
    /// replies.
    fn lose(&mut self, key: EchoKey, p: &Pending) {
        if p.answered() {
            return;
        }
        self.totals.lost += 1;
        self.totals.pending -= 1;
        if let Some(peer) = self.peers.peek_mut(&key.peer) {
            peer.counts.lost += 1;
        }
        self.expired.insert(&key);
    }

    /// Ends the wait of every request older than the timeout at `now_ns`
    /// on the expiry clock.
    pub fn expire(&mut self, now_ns: u64) {
        while let Some(p) = self.pending.oldest() {
            if p.since_ns.saturating_add(self.timeout_ns) > now_ns {
                break;
            }
            self.pop_oldest();
        }
    }

    /// Ends the wait of the oldest request.
    fn pop_oldest(&mut self) {
        if let Some((k, p)) = self.pending.pop_front() {
            self.lose(k, &p);
        }
    }

    /// Takes a request seen at `since_ns` on the expiry clock, which
    /// orders expiry; wall-clock time (`ts_ns`) says when a peer was last
    /// seen, and round trips are measured on `IcmpEvent::rtt_clock_ns`.
    pub fn request(&mut self, ev: &IcmpEvent, echo: &Echo, since_ns: u64) {
        let (dir, clock_ns) = (ev.direction, ev.rtt_clock_ns());
        let (slot, key) = self.lookup(ev.src, ev.dst, echo, (ev.ts_ns, since_ns));
        if let Some(p) = self.pending.get_mut(&key) {
            let bit = 1 << dir.index();
            let seen_here = p.copies & bit != 0 || dir == Direction::Unknown;
            if !seen_here {
                p.copies |= bit;
                self.totals.copies += 1;
                return;
            }
            if !p.answered() {
                self.totals.duplicate_requests += 1;
                return;
            }
            // Its exchange is over: the key is used again (`ping -f`'s
            // 16-bit sequence wraps within a second), a new request.
            self.pending.retire(&key);
        }
        let entry = Pending {
            copies: 1 << dir.index(),
            since_ns,
            first_clock: clock_ns.max(1),
            replies: 0,
            payload_len: echo.payload_len,
            payload_digest: echo.payload_digest,
        };
        self.totals.requests += 1;
        self.totals.pending += 1;
        self.peers.at_mut(slot).counts.requests += 1;
        // Full: the oldest request makes room (counted lost if unanswered).
        let lost = self.totals.lost;
        while self.pending.slots() >= self.max_pending {
            self.pop_oldest();
        }
        self.totals.evicted += self.totals.lost - lost;
        if self.pending.slots() == GROW_AT {
            // Busy: the table goes to its bound at once, one rehash instead
            // of a doubling every few thousand requests.
            self.pending
                .reserve(self.max_pending.saturating_sub(GROW_AT));
        }
        self.pending.push(key, entry);
    }

    /// Pairs a reply (from `ev.src` to `ev.dst`), seen at `at` on the
    /// expiry clock; `None` when it answers nothing waiting (late,
    /// unsolicited or duplicate).
    pub fn reply(&mut self, ev: &IcmpEvent, echo: &Echo, at: u64) -> Option<Paired> {
        let (dir, clock_ns) = (ev.direction, ev.rtt_clock_ns());
        let (slot, key) = self.lookup(ev.dst, ev.src, echo, (ev.ts_ns, at));
        let Some(p) = self.pending.get_mut(&key) else {
            let counts = &mut self.peers.at_mut(slot).counts;
            if self.expired.contains(&key) {
                self.totals.late += 1;
                counts.late += 1;
            } else {
                self.totals.unsolicited += 1;
                counts.unsolicited += 1;
            }
            return None;
        };
        let bit = 1 << dir.index();
        if p.replies & bit != 0 || (dir == Direction::Unknown && p.answered()) {
            self.totals.duplicate_replies += 1;
            self.peers.at_mut(slot).counts.duplicate_replies += 1;
            return None;
        }
        let first = !p.answered();
        p.replies |= bit;
        let rtt_ns = first.then(|| clock_ns.saturating_sub(p.first_clock));
        let mismatch = p.payload_len != echo.payload_len || p.payload_digest != echo.payload_digest;
        if first {
            self.totals.answered += 1;
            self.totals.pending -= 1;
        } else {
            self.totals.copies += 1;
        }
        if let Some(rtt_ns) = rtt_ns {
            let stats = self.peers.at_mut(slot);
            stats.counts.replies += 1;
            stats.rtt.add(super::addr::ns_to_us(rtt_ns));
        }
        Some(Paired { rtt_ns, mismatch })
    }

    pub fn totals(&self) -> EchoTotals {
        self.totals
    }

    pub fn peers(&self) -> impl Iterator<Item = (&PeerKey, &PeerStats)> {
        self.peers.iter()
    }

    /// The serial of the latest pair to enter the table (0: none yet).
    pub fn last_serial(&self) -> u64 {
        self.serials
    }

    /// New peer groups: the table's pairs are grouped again, and the
    /// departed pairs' totals (kept by the old groups) start again.
    pub fn set_groups(&mut self, groups: Groups) {
        for (k, p) in self.peers.iter_mut() {
            p.groups = groups.pair(k.requester, k.responder);
        }
        self.groups = groups;
        self.departed.clear();
    }

    pub fn groups(&self) -> &Groups {
        &self.groups
    }

    /// What pairs pushed out of the table counted, by group pair.
    pub fn departed(&self) -> impl Iterator<Item = (&GroupPair, &Departed)> {
        self.departed.iter()
    }

    /// One pair's counters, without touching the table's recency.
    pub fn peer_stats(&self, key: &PeerKey) -> Option<&PeerStats> {
        self.peers.peek(key)
    }

    /// Requests waiting, lost requests remembered (and room for them),
    /// peer pairs.
    pub fn sizes(&self) -> (usize, (usize, usize), usize) {
        let expired = (self.expired.len, self.expired.capacity());
        (self.pending.slots(), expired, self.peers.len())
    }
}
