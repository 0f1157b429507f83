//! Puts the two groups' packets back in the order the hooks logged them.
//!
//! Each group sends its own batches: the `in` group's up to its timeout
//! late, the `out` group's at once (or, under a flood, batched too). So on
//! a host that answers pings the reply (`out`) reaches icmpmon before the
//! request (`in`) it answers, and under a flood of its own pings the
//! replies before the requests: the aggregator would take them for
//! unsolicited, or pair them with an older request of the same key. Both
//! groups stamp each packet with the namespace's global log sequence
//! (NFULA_SEQ_GLOBAL), the order the hooks logged them in. A packet waits
//! here until the other group has shown a packet logged after it (each
//! group's packets come in logged order), or until the other group's
//! packets logged before it should have come (its hold: the other group's
//! timer and then some; see `group::order_holds`), or while too many wait.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use icmpmon_core::batch::Batch;
use icmpmon_core::event::RawPacket;

/// A queue's room is given back once this many of its packets have gone
/// and they are at least a fifth of what it holds (so a queue at its
/// bound holds at most a quarter more).
const COMPACT_AT: usize = 256;

/// At most this many packets wait per group (a long `--nflog-timeout`
/// under a flood one way): beyond, the oldest goes on.
const MOST_WAITING: usize = 1 << 16;

/// One group's packets waiting, oldest first.
#[derive(Debug, Default)]
struct Queue {
    packets: Batch,
    /// The first `gone` of `packets` have been handed on.
    gone: usize,
    /// Per packet waiting: its global sequence number and when it came.
    marks: VecDeque<(u32, Instant)>,
}

impl Queue {
    fn front(&self) -> Option<(u32, Instant)> {
        self.marks.front().copied()
    }

    /// Hands the oldest packet on.
    fn pop_to(&mut self, to: &mut Batch) {
        if self.marks.pop_front().is_none() {
            return;
        }
        if let Some(p) = self.packets.get(self.gone) {
            to.push(p);
        }
        self.gone += 1;
        if self.marks.is_empty() {
            if !self.packets.clear() {
                // Grown past what is worth keeping (a burst): let it go.
                self.packets = Batch::default();
            }
            self.gone = 0;
        } else if self.gone >= COMPACT_AT && self.gone * 4 >= self.marks.len() {
            self.packets.remove_front(self.gone);
            self.gone = 0;
        }
    }
}

/// The two groups' packets (0: `in`, 1: `out`), merged.
#[derive(Debug)]
pub(super) struct Order {
    queues: [Queue; 2],
    /// How long each group's packets wait for the other's.
    holds: [Duration; 2],
}

/// Whether global sequence number `a` was given before `b` (the numbers
/// wrap).
fn before(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) > 0
}

impl Order {
    pub(super) fn new(holds: [Duration; 2]) -> Self {
        Self {
            queues: Default::default(),
            holds,
        }
    }

    /// A packet of group `side` (0 or 1). Without a global sequence number
    /// (a kernel that sent none) it goes at once.
    pub(super) fn push(
        &mut self,
        side: usize,
        p: RawPacket<'_>,
        global_seq: Option<u32>,
        to: &mut Batch,
    ) {
        let Some(seq) = global_seq else {
            to.push(p);
            return;
        };
        let q = &mut self.queues[side & 1];
        q.packets.push(p);
        q.marks.push_back((seq, Instant::now()));
        if q.marks.len() > MOST_WAITING {
            q.pop_to(to);
        }
        self.merge(to);
    }

    /// Hands on, in logged order, what both groups have shown: while both
    /// wait, the older front is settled. Afterwards at most one group waits.
    fn merge(&mut self, to: &mut Batch) {
        let [a, b] = &mut self.queues;
        while let (Some((sa, _)), Some((sb, _))) = (a.front(), b.front()) {
            if before(sb, sa) {
                b.pop_to(to);
            } else {
                a.pop_to(to);
            }
        }
    }

    /// The packets no packet of the other group can come before any more.
    pub(super) fn release_due(&mut self, to: &mut Batch) {
        for (q, &hold) in self.queues.iter_mut().zip(&self.holds) {
            while q.front().is_some_and(|(_, at)| at.elapsed() >= hold) {
                q.pop_to(to);
            }
        }
    }

    /// Everything waiting (at the end).
    pub(super) fn release_all(&mut self, to: &mut Batch) {
        self.merge(to);
        for q in &mut self.queues {
            while q.front().is_some() {
                q.pop_to(to);
            }
        }
    }

    /// How long until the oldest packet waiting is due; `None` with
    /// nothing waiting.
    pub(super) fn due(&self) -> Option<Duration> {
        self.queues
            .iter()
            .zip(&self.holds)
            .filter_map(|(q, hold)| Some(hold.saturating_sub(q.front()?.1.elapsed())))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use icmpmon_core::event::Direction;

    const IN: usize = 0;
    const OUT: usize = 1;

    fn packet(tag: &[u8]) -> RawPacket<'_> {
        RawPacket {
            ts_ns: 0,
            mono_ns: None,
            direction: Direction::In,
            ifindex: 1,
            orig_len: tag.len() as u32,
            data: tag,
            drop: None,
        }
    }

    fn tags(b: &Batch) -> Vec<u8> {
        b.iter().map(|p| p.data[0]).collect()
    }

    #[test]
    fn a_reply_sent_goes_after_the_request_it_answers() {
        let mut o = Order::new([Duration::from_secs(60); 2]);
        let mut to = Batch::default();
        // Logged: request in (10), reply out (11), next request in (12);
        // the reply comes first, the `in` batch later.
        o.push(OUT, packet(&[11]), Some(11), &mut to);
        assert!(to.is_empty(), "held");
        assert!(o.due().is_some());
        o.push(IN, packet(&[10]), Some(10), &mut to);
        o.push(IN, packet(&[12]), Some(12), &mut to);
        assert_eq!(tags(&to), [10, 11]);
        // 12 waits for an `out` packet logged after it, or its time.
        o.push(OUT, packet(&[13]), Some(13), &mut to);
        assert_eq!(tags(&to), [10, 11, 12]);
        o.release_all(&mut to);
        assert_eq!(tags(&to), [10, 11, 12, 13]);
        assert_eq!(o.due(), None);
    }

    /// Under a flood of its own pings both groups batch: the replies
    /// (`in`) may come before the requests (`out`).
    #[test]
    fn a_reply_received_goes_after_the_request_sent() {
        let mut o = Order::new([Duration::from_secs(60); 2]);
        let mut to = Batch::default();
        o.push(IN, packet(&[2]), Some(2), &mut to);
        o.push(IN, packet(&[4]), Some(4), &mut to);
        assert!(to.is_empty(), "held");
        o.push(OUT, packet(&[1]), Some(1), &mut to);
        o.push(OUT, packet(&[3]), Some(3), &mut to);
        o.push(OUT, packet(&[5]), Some(5), &mut to);
        assert_eq!(tags(&to), [1, 2, 3, 4]);
    }

    #[test]
    fn packets_go_when_due_and_at_the_end() {
        let mut o = Order::new([Duration::ZERO; 2]);
        let mut to = Batch::default();
        o.push(OUT, packet(&[1]), Some(1), &mut to);
        o.push(OUT, packet(&[2]), Some(2), &mut to);
        assert_eq!(o.due(), Some(Duration::ZERO));
        o.release_due(&mut to);
        assert_eq!(tags(&to), [1, 2]);
        let mut o = Order::new([Duration::from_secs(60); 2]);
        o.push(IN, packet(&[3]), Some(3), &mut to);
        o.release_due(&mut to);
        assert_eq!(tags(&to), [1, 2], "not yet due");
        o.release_all(&mut to);
        assert_eq!(tags(&to), [1, 2, 3]);
        // Without a global number: at once.
        o.push(OUT, packet(&[4]), None, &mut to);
        assert_eq!(tags(&to), [1, 2, 3, 4]);
    }

    /// Each group waits as long as the other may be late; and never with
    /// more than `MOST_WAITING` packets.
    #[test]
    fn each_group_has_its_hold_and_a_bound() {
        let mut o = Order::new([Duration::ZERO, Duration::from_secs(60)]);
        let mut to = Batch::default();
        o.push(OUT, packet(&[1]), Some(1), &mut to);
        o.release_due(&mut to);
        assert!(to.is_empty(), "out waits for in");
        o.release_all(&mut to);
        o.push(IN, packet(&[2]), Some(2), &mut to);
        o.release_due(&mut to);
        assert_eq!(tags(&to), [1, 2], "in is due at once");
        let mut o = Order::new([Duration::from_secs(60); 2]);
        let mut to = Batch::default();
        for s in 0..MOST_WAITING as u32 + 3 {
            o.push(IN, packet(&[s as u8]), Some(s), &mut to);
        }
        assert_eq!(to.len(), 3, "the oldest beyond the bound go on");
        assert_eq!(o.queues[IN].marks.len(), MOST_WAITING);
    }

    #[test]
    fn numbers_wrap() {
        assert!(before(u32::MAX, 0));
        assert!(!before(0, u32::MAX));
        assert!(!before(5, 5));
        let mut o = Order::new([Duration::from_secs(60); 2]);
        let mut to = Batch::default();
        o.push(IN, packet(&[2]), Some(1), &mut to);
        o.push(OUT, packet(&[1]), Some(u32::MAX), &mut to);
        assert_eq!(tags(&to), [1]);
        o.release_all(&mut to);
        assert_eq!(tags(&to), [1, 2]);
    }

    /// A flood: one group is always ahead, so its queue never empties; it
    /// must not grow without bound, and every packet goes on once, in
    /// logged order.
    #[test]
    fn a_steady_flood_keeps_its_order_in_bounded_room() {
        let mut o = Order::new([Duration::from_secs(60); 2]);
        let mut to = Batch::default();
        let mut seq = 1000u32;
        let mut most = 0;
        for _round in 0..200 {
            // Ten `out` packets come; then the `in` batch logged between
            // the ten before them, which wait until it.
            for _ in 0..10 {
                o.push(OUT, packet(&seq.to_be_bytes()), Some(seq), &mut to);
                seq += 2;
            }
            for i in 0..10u32 {
                let s = seq - 39 + 2 * i;
                o.push(IN, packet(&s.to_be_bytes()), Some(s), &mut to);
            }
            most = most.max(o.queues[OUT].packets.len());
        }
        o.release_all(&mut to);
        let got: Vec<u32> = to
            .iter()
            .map(|p| u32::from_be_bytes(p.data.try_into().unwrap()))
            .collect();
        assert_eq!(got.len(), 4000);
        assert!(got.windows(2).all(|w| w[0] < w[1]), "in logged order");
        assert!(most <= COMPACT_AT + 20, "held {most}");
    }
}
