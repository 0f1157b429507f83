//! The aggregator thread's side of attribution: rows that need a lookup
//! wait (with the rows behind them, so the output keeps capture order)
//! until the host thread answers or `WAIT` passes; answers are cached by
//! socket key for a while, and lookups of the same key share one answer.
//! Nothing here blocks: asking is a `try_send`, and a full queue, a full
//! row buffer or a late answer makes a counted `Skipped`.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};
use lru::LruCache;

use super::ask::{Ask, LookupKey};
use icmpmon_core::aggregate::Attribution;
use icmpmon_core::event::IcmpEvent;

/// How long a row waits for its answer.
pub(crate) const WAIT: Duration = Duration::from_millis(500);
/// How long answers are kept: an owner, and a miss (a socket may appear).
const TTL_FOUND: Duration = Duration::from_secs(5);
const TTL_MISS: Duration = Duration::from_secs(1);
/// Keys cached, and rows held waiting, at most.
const CACHED: usize = 4096;
const HELD: usize = 16_384;

/// A row waiting to be written.
#[derive(Debug)]
struct Held {
    row: Ready,
    key: Option<LookupKey>,
    /// Known when held (a cached answer, or a skip).
    answer: Option<Attribution>,
    since: Instant,
}

/// A row: the event, its RTT, its number in the aggregator, and, once
/// ready to go out, what was found for it (`None`: it needed no lookup).
#[derive(Debug, Clone)]
pub(crate) struct Ready {
    pub ev: IcmpEvent,
    pub rtt_us: Option<u64>,
    pub seq: u64,
    pub who: Option<Attribution>,
}

#[derive(Debug)]
pub(crate) struct Join {
    asks: Sender<Ask>,
    /// Answers by key, and when they came.
    cache: LruCache<LookupKey, (Attribution, Instant)>,
    /// Keys with rows waiting: how many, and the answer once it came, with
    /// its time (kept here, not only in the cache, which a flood could turn
    /// over first).
    waiting: HashMap<LookupKey, (usize, Option<(Attribution, Instant)>)>,
    held: VecDeque<Held>,
}

impl Join {
    pub fn new(asks: Sender<Ask>) -> Self {
        Self {
            asks,
            cache: LruCache::new(NonZeroUsize::new(CACHED).expect("non-zero")),
            waiting: HashMap::new(),
            held: VecDeque::new(),
        }
    }

    /// Takes a row; asks about its socket unless an answer is known (or a
    /// lookup for the same key is under way). A row that needs no lookup
    /// with none held before it comes back at once: the common case costs
    /// no clock read and no queue.
    #[must_use]
    pub fn push(&mut self, row: Ready) -> Option<Ready> {
        let key = LookupKey::of(&row.ev);
        if key.is_none() && self.held.is_empty() {
            return Some(row);
        }
        let now = Instant::now();
        let answer = key.and_then(|k| self.ask(k, now));
        if let (Some(k), None) = (key, &answer) {
            self.waiting.entry(k).or_default().0 += 1;
        }
        self.held.push_back(Held {
            row,
            key,
            answer,
            since: now,
        });
        None
    }

    /// A known answer still fresh; else `None` after asking (or while a
    /// lookup is under way), or `Skipped` when the queue is full.
    fn ask(&mut self, k: LookupKey, now: Instant) -> Option<Attribution> {
        let fresh = |(a, at): &(Attribution, Instant)| {
            let ttl = match a {
                Attribution::Owner(_) => TTL_FOUND,
                Attribution::Skipped => Duration::ZERO,
                _ => TTL_MISS,
            };
            (now.duration_since(*at) < ttl).then(|| a.clone())
        };
        if let Some(a) = self.cache.get(&k).and_then(fresh) {
            return Some(a);
        }
        if let Some(w) = self.waiting.get_mut(&k) {
            match &w.1 {
                None => return None,
                Some(known) => {
                    if let Some(a) = fresh(known) {
                        return Some(a);
                    }
                    // Stale or skipped: asked again, rows wait for the new one.
                    w.1 = None;
                }
            }
        }
        match self.asks.try_send(Ask { key: k, at: now }) {
            Ok(()) => None,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                if let Some(w) = self.waiting.get_mut(&k) {
                    w.1 = Some((Attribution::Skipped, now));
                }
                Some(Attribution::Skipped)
            }
        }
    }

    /// An answer from the host thread (`Skipped` when it dropped a stale
    /// ask: the rows waiting go, the next row asks again).
    pub fn answer(&mut self, k: LookupKey, a: Attribution) {
        let now = Instant::now();
        if let Some(w) = self.waiting.get_mut(&k) {
            w.1 = Some((a.clone(), now));
        }
        if a != Attribution::Skipped {
            self.cache.put(k, (a, now));
        }
    }

    /// The rows at the front that can go now, in order: answered, needing
    /// none, waited too long, or pushed out by a full buffer (`all`: the
    /// end of the run, everything goes).
    pub fn ready(&mut self, all: bool) -> Vec<Ready> {
        let mut out = Vec::new();
        while let Some(h) = self.held.front() {
            let late = all || self.held.len() > HELD || h.since.elapsed() >= WAIT;
            let who = match (h.key, &h.answer) {
                (None, _) => None,
                (Some(_), Some(a)) => Some(a.clone()),
                (Some(k), None) => match self.waiting.get(&k).and_then(|w| w.1.as_ref()) {
                    Some((a, _)) => Some(a.clone()),
                    None if late => Some(Attribution::Skipped),
                    None => break,
                },
            };
            let mut h = self.held.pop_front().expect("front exists");
            if let (Some(k), None) = (h.key, &h.answer) {
                if let Some(w) = self.waiting.get_mut(&k) {
                    w.0 -= 1;
                    if w.0 == 0 {
                        self.waiting.remove(&k);
                    }
                }
            }
            h.row.who = who;
            out.push(h.row);
        }
        out
    }

    /// The time when the first waiting row goes anyway.
    pub fn deadline(&self) -> Option<Instant> {
        self.held.front().map(|h| h.since + WAIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use icmpmon_core::event::{Direction, Family, Quoted};

    fn error(sport: u16) -> IcmpEvent {
        IcmpEvent {
            drop: None,
            mono_ns: None,
            ts_ns: 1,
            direction: Direction::In,
            ifindex: 1,
            family: Family::V4,
            src: "10.0.0.2".parse().unwrap(),
            dst: "10.0.0.1".parse().unwrap(),
            ttl: 64,
            length: 56,
            icmp_type: 3,
            icmp_code: 3,
            echo: None,
            quoted: Some(Quoted {
                proto: 17,
                src: "10.0.0.1".parse().unwrap(),
                dst: "10.0.0.2".parse().unwrap(),
                sport: Some(sport),
                dport: Some(9),
                echo_id: None,
            }),
            info: None,
        }
    }

    fn row(ev: IcmpEvent, seq: u64) -> Ready {
        Ready {
            ev,
            rtt_us: None,
            seq,
            who: None,
        }
    }

    fn echo_reply() -> IcmpEvent {
        IcmpEvent {
            icmp_type: 0,
            icmp_code: 0,
            quoted: None,
            ..error(0)
        }
    }

    #[test]
    fn rows_keep_their_order_and_wait_for_their_answer_once_per_key() {
        let (tx, rx) = crossbeam_channel::bounded(2);
        let mut j = Join::new(tx);
        assert!(j.push(row(error(1000), 1)).is_none());
        assert!(j.push(row(echo_reply(), 2)).is_none());
        assert!(j.push(row(error(1000), 3)).is_none());
        assert!(
            j.ready(false).is_empty(),
            "the first row waits, and all behind it"
        );
        let asked: Vec<_> = rx.try_iter().collect();
        assert_eq!(asked.len(), 1, "one lookup for one key: {asked:?}");
        j.answer(asked[0].key, Attribution::NoSocket);
        let out = j.ready(false);
        let kinds: Vec<_> = out
            .iter()
            .map(|r| (r.ev.icmp_type, r.who.clone()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (3, Some(Attribution::NoSocket)),
                (0, None),
                (3, Some(Attribution::NoSocket))
            ]
        );
        assert_eq!(j.deadline(), None, "nothing waits");
    }

    /// A row that needs no lookup goes straight through while nothing
    /// waits, and queues behind a row that does.
    #[test]
    fn rows_without_lookups_pass_unless_one_waits() {
        let (tx, _rx) = crossbeam_channel::bounded(2);
        let mut j = Join::new(tx);
        let back = j.push(row(echo_reply(), 1)).expect("passes through");
        assert_eq!((back.seq, back.who), (1, None));
        assert!(j.push(row(error(5), 2)).is_none());
        assert!(
            j.push(row(echo_reply(), 3)).is_none(),
            "behind a waiting row"
        );
        assert_eq!(j.ready(true).len(), 2);
        assert!(j.push(row(echo_reply(), 4)).is_some());
    }

    #[test]
    fn a_full_queue_skips_without_waiting_and_the_end_lets_everything_go() {
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let mut j = Join::new(tx);
        assert!(j.push(row(error(1), 1)).is_none());
        assert!(j.push(row(error(2), 2)).is_none());
        assert!(j.ready(false).is_empty(), "the first waits for its answer");
        let out = j.ready(true);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].who, Some(Attribution::Skipped), "late at the end");
        assert_eq!(out[1].who, Some(Attribution::Skipped), "queue full");
        assert!(j.waiting.is_empty(), "nothing left waiting");
    }

    /// A flood turns the cache over before a waiting row's answer is read:
    /// the row still gets it.
    #[test]
    fn an_answer_outlives_the_cache_for_the_rows_that_wait_for_it() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let mut j = Join::new(tx);
        assert!(j.push(row(error(1), 1)).is_none());
        let k = rx.try_recv().unwrap().key;
        j.answer(k, Attribution::Gone);
        for port in 0..(CACHED as u16 + 10) {
            let other = LookupKey::of(&error(10_000 + port)).unwrap();
            j.answer(other, Attribution::NoSocket);
        }
        let out = j.ready(false);
        assert_eq!(out[0].who, Some(Attribution::Gone));
    }

    /// A lookup the host thread dropped as stale is answered `Skipped`:
    /// the flow's next row asks again, and the rows still waiting get the
    /// new answer (a flow erroring all the time is not skipped for good).
    #[test]
    fn a_skipped_lookup_is_asked_again_by_the_next_row() {
        let (tx, rx) = crossbeam_channel::bounded(4);
        let mut j = Join::new(tx);
        assert!(j.push(row(error(7), 1)).is_none());
        assert!(j.push(row(error(7), 2)).is_none());
        let k = rx.try_recv().unwrap().key;
        j.answer(k, Attribution::Skipped);
        assert!(j.push(row(error(7), 3)).is_none());
        assert_eq!(rx.try_recv().map(|a| a.key), Ok(k), "asked again");
        assert!(j.ready(false).is_empty(), "all wait for the new answer");
        j.answer(k, Attribution::NoSocket);
        let out = j.ready(false);
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|r| r.who == Some(Attribution::NoSocket)));
    }
}
