//! Space-saving heavy hitters (Metwally et al.): at most `capacity`
//! counters whatever the number of distinct keys. A key whose true count
//! exceeds total/capacity is always present, and `count - error` is a lower
//! bound of its true count.

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

/// The counters are a binary min-heap on `count`, indexed by key, so an
/// increment or a replacement costs O(log capacity).
#[derive(Debug, Clone)]
pub struct SpaceSaving<K> {
    capacity: usize,
    heap: Vec<Counted<K>>,
    index: HashMap<K, usize>,
}

impl<K: Hash + Eq + Copy> SpaceSaving<K> {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            heap: Vec::with_capacity(capacity),
            index: HashMap::with_capacity_and_hasher(capacity, Default::default()),
        }
    }

    /// Counts one more `key`; returns its counter after the increment.
    pub fn add(&mut self, key: K) -> Counted<K> {
        let at = if let Some(&i) = self.index.get(&key) {
            self.heap[i].count += 1;
            i
        } else if self.heap.len() < self.capacity {
            self.heap.push(Counted {
                key,
                count: 1,
                error: 0,
            });
            self.index.insert(key, self.heap.len() - 1);
            self.heap.len() - 1
        } else {
            // Replace the smallest counter: the newcomer inherits its count
            // as the error bound.
            let min = &mut self.heap[0];
            self.index.remove(&min.key);
            *min = Counted {
                key,
                count: min.count + 1,
                error: min.count,
            };
            self.index.insert(key, 0);
            0
        };
        let at = self.sift_down(at);
        self.heap[at]
    }

    fn sift_down(&mut self, mut i: usize) -> usize {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut smallest = i;
            if l < self.heap.len() && self.heap[l].count < self.heap[smallest].count {
                smallest = l;
            }
            if r < self.heap.len() && self.heap[r].count < self.heap[smallest].count {
                smallest = r;
            }
            if smallest == i {
                return i;
            }
            self.heap.swap(i, smallest);
            self.index.insert(self.heap[i].key, i);
            self.index.insert(self.heap[smallest].key, smallest);
            i = smallest;
        }
    }

    /// The `n` largest counters, largest first.
    pub fn top(&self, n: usize) -> Vec<Counted<K>> {
        let mut all = self.heap.clone();
        all.sort_by(|a, b| b.count.cmp(&a.count).then(a.error.cmp(&b.error)));
        all.truncate(n);
        all
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    pub fn clear(&mut self) {
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
