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

const NIL: u32 = u32::MAX;

/// Counters with one count, in a doubly linked list of such groups kept in
/// ascending count order ("stream summary"): an increment moves a counter
/// to the next group (or, alone in its group, raises the group's count),
/// so every operation is O(1).
#[derive(Debug, Clone)]
struct Group {
    count: u64,
    first: u32,
    prev: u32,
    next: u32,
}

#[derive(Debug, Clone)]
struct Slot<K> {
    c: Counted<K>,
    group: u32,
    prev: u32,
    next: u32,
}

#[derive(Debug, Clone)]
pub struct SpaceSaving<K> {
    capacity: usize,
    slots: Vec<Slot<K>>,
    groups: Vec<Group>,
    free_groups: Vec<u32>,
    /// The group with the smallest count.
    min_group: u32,
    index: HashMap<K, u32>,
}

impl<K: Hash + Eq + Copy> SpaceSaving<K> {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, NIL as usize - 1);
        Self {
            capacity,
            slots: Vec::with_capacity(capacity),
            groups: Vec::new(),
            free_groups: Vec::new(),
            min_group: NIL,
            index: HashMap::with_capacity_and_hasher(capacity, Default::default()),
        }
    }

    fn new_group(&mut self, count: u64, prev: u32, next: u32) -> u32 {
        let g = Group {
            count,
            first: NIL,
            prev,
            next,
        };
        let id = match self.free_groups.pop() {
            Some(id) => {
                self.groups[id as usize] = g;
                id
            }
            None => {
                self.groups.push(g);
                (self.groups.len() - 1) as u32
            }
        };
        match prev {
            NIL => self.min_group = id,
            p => self.groups[p as usize].next = id,
        }
        if next != NIL {
            self.groups[next as usize].prev = id;
        }
        id
    }

    fn unlink_slot(&mut self, s: u32) {
        let Slot {
            group, prev, next, ..
        } = self.slots[s as usize];
        match prev {
            NIL => self.groups[group as usize].first = next,
            p => self.slots[p as usize].next = next,
        }
        if next != NIL {
            self.slots[next as usize].prev = prev;
        }
        if self.groups[group as usize].first == NIL {
            let Group { prev, next, .. } = self.groups[group as usize];
            match prev {
                NIL => self.min_group = next,
                p => self.groups[p as usize].next = next,
            }
            if next != NIL {
                self.groups[next as usize].prev = prev;
            }
            self.free_groups.push(group);
        }
    }

    fn link_slot(&mut self, s: u32, group: u32) {
        let first = self.groups[group as usize].first;
        let slot = &mut self.slots[s as usize];
        slot.group = group;
        slot.prev = NIL;
        slot.next = first;
        if first != NIL {
            self.slots[first as usize].prev = s;
        }
        self.groups[group as usize].first = s;
    }

    /// Moves slot `s` (count already raised to `count`) from its group to
    /// the group of `count`, which follows it or is created; a slot alone
    /// in its group takes its group along.
    fn promote(&mut self, s: u32, count: u64) {
        let old = self.slots[s as usize].group;
        let next = self.groups[old as usize].next;
        // Alone in its group and no group of `count` next: the group takes
        // the new count in place (a key well ahead of the rest, the common
        // case under a flood, moves nothing).
        let slot = &self.slots[s as usize];
        let alone = slot.prev == NIL && slot.next == NIL;
        if alone && (next == NIL || self.groups[next as usize].count != count) {
            self.groups[old as usize].count = count;
            return;
        }
        let target = if next != NIL && self.groups[next as usize].count == count {
            next
        } else {
            self.new_group(count, old, next)
        };
        self.unlink_slot(s);
        self.link_slot(s, target);
    }

    /// Counts one more `key`; returns its counter after the increment.
    pub fn add(&mut self, key: K) -> Counted<K> {
        let s = if let Some(&s) = self.index.get(&key) {
            self.slots[s as usize].c.count += 1;
            s
        } else if self.slots.len() < self.capacity {
            let s = self.slots.len() as u32;
            self.slots.push(Slot {
                c: Counted {
                    key,
                    count: 0,
                    error: 0,
                },
                group: NIL,
                prev: NIL,
                next: NIL,
            });
            self.index.insert(key, s);
            // Count 0 never has a group of its own: link into count 1's.
            let g = match self.min_group {
                m if m != NIL && self.groups[m as usize].count == 1 => m,
                m => self.new_group(1, NIL, m),
            };
            self.slots[s as usize].c.count = 1;
            self.link_slot(s, g);
            return self.slots[s as usize].c;
        } else {
            // Replace a counter of the smallest count: the newcomer
            // inherits that count as its error bound.
            let s = self.groups[self.min_group as usize].first;
            let c = &mut self.slots[s as usize].c;
            self.index.remove(&c.key);
            *c = Counted {
                key,
                count: c.count + 1,
                error: c.count,
            };
            self.index.insert(key, s);
            s
        };
        let count = self.slots[s as usize].c.count;
        self.promote(s, count);
        self.slots[s as usize].c
    }

    /// The `n` largest counters, largest first (ties: smaller error, then
    /// key order, so output is deterministic).
    pub fn top(&self, n: usize) -> Vec<Counted<K>>
    where
        K: Ord,
    {
        let mut all: Vec<Counted<K>> = self.slots.iter().map(|s| s.c).collect();
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
        self.groups.clear();
        self.free_groups.clear();
        self.min_group = NIL;
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
