//! Space-saving heavy hitters (Metwally et al.): at most `capacity`
//! counters whatever the number of distinct keys. A key whose true count
//! exceeds total/capacity is always present, and `count - error` is a lower
//! bound of its true count.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::Hash;

use foldhash::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted<K> {
    pub key: K,
    /// An upper bound of the key's true count.
    pub count: u64,
    /// How much of `count` may belong to keys it replaced.
    pub error: u64,
}

/// The counters, and a heap that finds the smallest. Raising a counter
/// (the common case: a key already counted) is one lookup and an add: the
/// heap is told lazily. Each slot has one heap entry, whose count is at
/// most the slot's (counts only grow); an entry found stale on top is
/// refreshed and sifted down, so the first fresh one on top is a smallest
/// counter. (The "stream summary" of linked count groups this replaced
/// moved a counter between groups on every add: a sixth of the
/// aggregator's time.)
#[derive(Debug, Clone)]
pub struct SpaceSaving<K> {
    capacity: usize,
    slots: Vec<Counted<K>>,
    /// (count when last told, slot), smallest first.
    heap: BinaryHeap<Reverse<(u64, u32)>>,
    index: HashMap<K, u32>,
}

impl<K: Hash + Eq + Copy> SpaceSaving<K> {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, u32::MAX as usize);
        Self {
            capacity,
            slots: Vec::with_capacity(capacity),
            heap: BinaryHeap::with_capacity(capacity),
            index: HashMap::with_capacity_and_hasher(capacity, Default::default()),
        }
    }

    /// Counts one more `key`; returns its counter after the increment.
    pub fn add(&mut self, key: K) -> Counted<K> {
        if let Some(&s) = self.index.get(&key) {
            let c = &mut self.slots[s as usize];
            c.count += 1;
            return *c;
        }
        if self.slots.len() < self.capacity {
            let s = self.slots.len() as u32;
            let c = Counted {
                key,
                count: 1,
                error: 0,
            };
            self.slots.push(c);
            self.index.insert(key, s);
            self.heap.push(Reverse((1, s)));
            return c;
        }
        // Replace a counter of the smallest count: the newcomer inherits
        // that count as its error bound.
        loop {
            let Some(mut top) = self.heap.peek_mut() else {
                // Never: a full sketch has an entry per slot.
                return Counted {
                    key,
                    count: 1,
                    error: 0,
                };
            };
            let Reverse((told, s)) = *top;
            let c = &mut self.slots[s as usize];
            if c.count != told {
                // Stale: refreshed, and sifted down when `top` goes.
                *top = Reverse((c.count, s));
                continue;
            }
            self.index.remove(&c.key);
            *c = Counted {
                key,
                count: told + 1,
                error: told,
            };
            *top = Reverse((told + 1, s));
            self.index.insert(key, s);
            return *c;
        }
    }

    /// The `n` largest counters, largest first (ties: smaller error, then
    /// key order, so output is deterministic).
    pub fn top(&self, n: usize) -> Vec<Counted<K>>
    where
        K: Ord,
    {
        let mut all = self.slots.clone();
        all.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(a.error.cmp(&b.error))
                .then(a.key.cmp(&b.key))
        });
        all.truncate(n);
        all
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn clear(&mut self) {
        self.slots.clear();
        self.heap.clear();
        self.index.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap as StdMap;

    proptest! {
        #[test]
        fn bounded_and_heavy_hitters_kept(keys in proptest::collection::vec(0u16..500, 0..3000), cap in 1usize..40) {
            let mut ss = SpaceSaving::new(cap);
            let mut truth: StdMap<u16, u64> = StdMap::new();
            for &k in &keys {
                ss.add(k);
                *truth.entry(k).or_default() += 1;
            }
            prop_assert!(ss.len() <= cap);
            let total = keys.len() as u64;
            for c in ss.top(cap) {
                let t = truth[&c.key];
                // count is an upper bound, count - error a lower bound.
                prop_assert!(c.count >= t && c.count - c.error <= t);
            }
            for (k, &t) in &truth {
                if t > total / cap as u64 {
                    prop_assert!(ss.top(cap).iter().any(|c| c.key == *k), "heavy hitter {} lost", k);
                }
            }
        }
    }

    proptest! {
        #[test]
        fn exact_while_everything_fits(keys in proptest::collection::vec(0u8..30, 0..500)) {
            let mut ss = SpaceSaving::new(30);
            let mut truth: StdMap<u8, u64> = StdMap::new();
            for &k in &keys {
                let c = ss.add(k);
                let t = truth.entry(k).or_default();
                *t += 1;
                prop_assert_eq!((c.count, c.error), (*t, 0));
            }
            let mut want: Vec<(u8, u64)> = truth.into_iter().collect();
            want.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let got: Vec<(u8, u64)> = ss.top(30).iter().map(|c| (c.key, c.count)).collect();
            prop_assert_eq!(got, want);
        }
    }

    proptest! {
        /// A newcomer to a full sketch takes a smallest counter's place,
        /// whatever the heap's stale entries; every add raises one counter.
        #[test]
        fn newcomers_replace_a_smallest_counter(keys in proptest::collection::vec(0u16..60, 0..2000), cap in 1usize..20) {
            let mut ss = SpaceSaving::new(cap);
            for (n, &k) in keys.iter().enumerate() {
                let before = ss.top(cap);
                let c = ss.add(k);
                if before.len() == cap && !before.iter().any(|b| b.key == k) {
                    let min = before.iter().map(|b| b.count).min().unwrap();
                    prop_assert_eq!((c.count, c.error), (min + 1, min));
                }
                let total: u64 = ss.top(cap).iter().map(|c| c.count).sum();
                prop_assert_eq!(total, n as u64 + 1);
            }
        }
    }

    #[test]
    fn top_is_sorted() {
        let mut ss = SpaceSaving::new(3);
        for k in [1, 2, 2, 3, 3, 3, 4, 4, 4, 4] {
            ss.add(k);
        }
        let top: Vec<_> = ss.top(2).iter().map(|c| c.key).collect();
        assert_eq!(top, vec![4, 3]);
    }
}
