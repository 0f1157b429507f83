//! Echo requests waiting for their replies, in arrival order (which is
//! expiry order), found by key through a compact index.
//!
//! The requests live in a ring, oldest first; the index holds only their
//! arrival numbers (8 bytes a slot) under their keys' hashes, each hash
//! kept beside its request. Expiring the oldest request, once per request
//! under a flood, then reads the ring's front (memory read in order) and
//! removes one number from the index by that kept hash: no key hashed or
//! compared again. Before, a map of whole entries (80 bytes a slot) was
//! probed by key for every expiry: a cache miss and a tenth of the
//! aggregator thread.
//!
//! A request can be retired before its turn (its key is used again by a
//! new exchange): it stays in the ring, out of the index, until it reaches
//! the front, and counts toward the ring's size, which bounds memory.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;

/// A request in the ring.
#[derive(Debug)]
struct Waiting<K, V> {
    key: K,
    hash: u64,
    value: V,
    /// Cleared when retired: no longer in the index.
    live: bool,
}

#[derive(Debug)]
pub(crate) struct PendingTable<K, V> {
    ring: VecDeque<Waiting<K, V>>,
    /// The arrival number of `ring`'s front.
    first: u64,
    /// Arrival numbers, by their keys' hashes.
    index: HashTable<u64>,
    /// Seeded per process: a spoofed flood cannot choose collisions.
    hasher: foldhash::fast::RandomState,
}

impl<K, V> Default for PendingTable<K, V> {
    fn default() -> Self {
        Self {
            ring: VecDeque::new(),
            first: 0,
            index: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }
}

impl<K: Hash + Eq, V> PendingTable<K, V> {
    /// Requests waiting (not retired): those in the index.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.index.len()
    }

    /// Entries in the ring, retired ones too: what memory holds.
    pub fn slots(&self) -> usize {
        self.ring.len()
    }

    /// Where arrival number `n` is in the ring.
    fn at(first: u64, n: u64) -> usize {
        (n - first) as usize
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let hash = self.hasher.hash_one(key);
        let (ring, first) = (&self.ring, self.first);
        let n = *self
            .index
            .find(hash, |&n| ring[Self::at(first, n)].key == *key)?;
        Some(&mut self.ring[Self::at(first, n)].value)
    }

    /// Takes the request under `key` out of the index before its turn; it
    /// leaves the ring when it reaches the front.
    pub fn retire(&mut self, key: &K) {
        let hash = self.hasher.hash_one(key);
        let (ring, first) = (&self.ring, self.first);
        if let Ok(e) = self
            .index
            .find_entry(hash, |&n| ring[Self::at(first, n)].key == *key)
        {
            let (n, _) = e.remove();
            self.ring[Self::at(first, n)].live = false;
        }
    }

    /// Adds a request not in the table (`get_mut` found none) as the
    /// newest.
    pub fn push(&mut self, key: K, value: V) {
        let hash = self.hasher.hash_one(&key);
        let n = self.first + self.ring.len() as u64;
        let (ring, first) = (&self.ring, self.first);
        self.index
            .insert_unique(hash, n, |&n| ring[Self::at(first, n)].hash);
        self.ring.push_back(Waiting {
            key,
            hash,
            value,
            live: true,
        });
    }

    /// The oldest request's value (retired ones at the front leave).
    pub fn oldest(&mut self) -> Option<&V> {
        while self.ring.front().is_some_and(|w| !w.live) {
            self.ring.pop_front();
            self.first += 1;
        }
        self.ring.front().map(|w| &w.value)
    }

    /// Takes the front of the ring out: the oldest request, or `None` for
    /// a retired one (or an empty ring).
    pub fn pop_front(&mut self) -> Option<(K, V)> {
        let w = self.ring.pop_front()?;
        let n = self.first;
        self.first += 1;
        if !w.live {
            return None;
        }
        if let Ok(e) = self.index.find_entry(w.hash, |&m| m == n) {
            e.remove();
        }
        Some((w.key, w.value))
    }

    /// Room for `additional` more requests without growing.
    pub fn reserve(&mut self, additional: usize) {
        self.ring.reserve(additional);
        let (ring, first) = (&self.ring, self.first);
        self.index
            .reserve(additional, |&n| ring[Self::at(first, n)].hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        /// The table behaves as a map plus a queue of its keys in arrival
        /// order (what it replaced), whose keys can be taken out early.
        #[test]
        fn table_is_a_map_with_arrival_order(ops in prop::collection::vec((0u8..3, 0u16..64), 0..400)) {
            let mut t = PendingTable::default();
            let mut map: HashMap<u16, u32> = HashMap::new();
            let mut order: VecDeque<u16> = VecDeque::new();
            for (i, (op, key)) in ops.into_iter().enumerate() {
                match op {
                    0 => {
                        let got = t.get_mut(&key).map(|v| { *v += 1; *v });
                        let want = map.get_mut(&key).map(|v| { *v += 1; *v });
                        prop_assert_eq!(got, want);
                    }
                    1 if !map.contains_key(&key) => {
                        t.push(key, i as u32);
                        map.insert(key, i as u32);
                        order.push_back(key);
                        if t.len() == 32 {
                            t.reserve(100);
                        }
                    }
                    1 => {
                        // A key used again: the old request is retired.
                        t.retire(&key);
                        map.remove(&key);
                        order.retain(|k| *k != key);
                    }
                    _ => {
                        prop_assert_eq!(t.oldest().copied(), order.front().map(|k| map[k]));
                        let got = t.pop_front();
                        let want = order.pop_front().map(|k| (k, map.remove(&k).unwrap()));
                        prop_assert_eq!(got, want);
                    }
                }
                prop_assert_eq!(t.len(), map.len());
                prop_assert!(t.slots() >= t.len());
            }
        }
    }
}
