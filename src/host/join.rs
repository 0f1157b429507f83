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

use super::{Ask, LookupKey};
use icmpmon_core::aggregate::owners::Attribution;
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
    ev: IcmpEvent,
    rtt_us: Option<u64>,
    /// The aggregator's number for the event (`Aggregator::events` after it).
    seq: u64,
    key: Option<LookupKey>,
    /// Known when held (a cached answer, or a skip).
    answer: Option<Attribution>,
    since: Instant,
}

/// A row ready to go out: the event, its RTT, its number in the
/// aggregator, and what was found for it (`None`: it needed no lookup).
#[derive(Debug)]
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
    /// Keys with rows waiting: how many, and the answer once it came (kept
    /// here, not only in the cache, which a flood could turn over first).
    waiting: HashMap<LookupKey, (usize, Option<Attribution>)>,
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

    /// Takes a row; asks about its socket unless the cache knows (or a row
    /// already waits for the same key).
    pub fn push(&mut self, ev: IcmpEvent, rtt_us: Option<u64>, seq: u64) {
        let key = LookupKey::of(&ev);
        let now = Instant::now();
        let answer = key.and_then(|k| self.ask(k, now));
        if let (Some(k), None) = (key, &answer) {
            self.waiting.entry(k).or_default().0 += 1;
        }
        self.held.push_back(Held {
            ev,
            rtt_us,
            seq,
            key,
            answer,
            since: now,
        });
    }

    /// The cached answer; else `None` after asking (or when a lookup is
    /// under way), or `Skipped` when the queue is full.
    fn ask(&mut self, k: LookupKey, now: Instant) -> Option<Attribution> {
        if let Some((a, at)) = self.cache.get(&k) {
            let ttl = match a {
                Attribution::Owner(_) => TTL_FOUND,
                _ => TTL_MISS,
            };
            if now.duration_since(*at) < ttl {
                return Some(a.clone());
            }
        }
        if self.waiting.get(&k).is_some_and(|(_, a)| a.is_none()) {
            return None;
        }
        match self.asks.try_send(Ask { key: k, at: now }) {
            Ok(()) => None,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                Some(Attribution::Skipped)
            }
        }
    }

    /// An answer from the host thread.
    pub fn answer(&mut self, k: LookupKey, a: Attribution) {
        if let Some(w) = self.waiting.get_mut(&k) {
            w.1 = Some(a.clone());
        }
        self.cache.put(k, (a, Instant::now()));
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
                (Some(k), None) => match self.waiting.get(&k).and_then(|w| w.1.clone()) {
                    Some(a) => Some(a),
                    None if late => Some(Attribution::Skipped),
                    None => break,
                },
            };
            let h = self.held.pop_front().expect("front exists");
            if let (Some(k), None) = (h.key, &h.answer) {
                if let Some(w) = self.waiting.get_mut(&k) {
                    w.0 -= 1;
                    if w.0 == 0 {
                        self.waiting.remove(&k);
                    }
                }
            }
            out.push(Ready {
                ev: h.ev,
                rtt_us: h.rtt_us,
                seq: h.seq,
                who,
            });
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
            }),
            info: None,
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
        j.push(error(1000), None, 1);
        j.push(echo_reply(), Some(5), 2);
        j.push(error(1000), None, 3);
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

    #[test]
    fn a_full_queue_skips_without_waiting_and_the_end_lets_everything_go() {
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let mut j = Join::new(tx);
        j.push(error(1), None, 1);
        j.push(error(2), None, 2);
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
        j.push(error(1), None, 1);
        let k = rx.try_recv().unwrap().key;
        j.answer(k, Attribution::Gone);
        for port in 0..(CACHED as u16 + 10) {
            let other = LookupKey::of(&error(10_000 + port)).unwrap();
            j.answer(other, Attribution::NoSocket);
        }
        let out = j.ready(false);
        assert_eq!(out[0].who, Some(Attribution::Gone));
    }
}
