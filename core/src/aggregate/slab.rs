//! A bounded table that pushes out its least recently used entry, with its
//! entries in one `Vec` found through one keyed hash map (foldhash, seeded
//! per process: a spoofed flood cannot choose collisions). Unlike the `lru`
//! crate's boxed nodes, an entry keeps its slot for life, so the hot path
//! can hold a slot number instead of looking the key up again.

use std::hash::Hash;

use foldhash::HashMap;

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Entry<K, V> {
    key: K,
    value: V,
    /// Neighbours in recency order (`prev` more recent).
    prev: u32,
    next: u32,
}

#[derive(Debug, Clone)]
pub(super) struct SlabLru<K, V> {
    index: HashMap<K, u32>,
    entries: Vec<Entry<K, V>>,
    /// Most and least recently used.
    head: u32,
    tail: u32,
    cap: usize,
}

impl<K: Hash + Eq + Copy, V> SlabLru<K, V> {
    pub(super) fn new(cap: usize) -> Self {
        let cap = cap.clamp(1, NIL as usize - 1);
        Self {
            index: HashMap::default(),
            entries: Vec::new(),
            head: NIL,
            tail: NIL,
            cap,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    fn unlink(&mut self, s: u32) {
        let (prev, next) = {
            let e = &self.entries[s as usize];
            (e.prev, e.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.entries[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.entries[n as usize].prev = prev,
        }
    }

    fn link_front(&mut self, s: u32) {
        let old = self.head;
        let e = &mut self.entries[s as usize];
        e.prev = NIL;
        e.next = old;
        match old {
            NIL => self.tail = s,
            o => self.entries[o as usize].prev = s,
        }
        self.head = s;
    }

    /// The slot of `key`, made the most recently used, and whether the
    /// key is new there. A new key takes a fresh slot (`V::default()`)
    /// while there is room, else the least recently used key's: `gone` is
    /// handed that key and its value first, to fold it away. The value
    /// stays in the slot for the caller to start again for the new key,
    /// keeping what it allocated: a churn of keys (a spoofed flood)
    /// allocates and frees nothing.
    pub(super) fn slot_or_insert(&mut self, key: K, gone: impl FnOnce(K, &mut V)) -> (u32, bool)
    where
        V: Default,
    {
        if let Some(&s) = self.index.get(&key) {
            if s != self.head {
                self.unlink(s);
                self.link_front(s);
            }
            return (s, false);
        }
        if self.entries.len() < self.cap {
            let s = self.entries.len() as u32;
            self.entries.push(Entry {
                key,
                value: V::default(),
                prev: NIL,
                next: NIL,
            });
            self.index.insert(key, s);
            self.link_front(s);
            return (s, true);
        }
        // Full: the least recently used entry gives its slot.
        let s = self.tail;
        self.unlink(s);
        let old_key = std::mem::replace(&mut self.entries[s as usize].key, key);
        self.index.remove(&old_key);
        self.index.insert(key, s);
        self.link_front(s);
        // The table is whole again before the caller's code runs.
        gone(old_key, &mut self.entries[s as usize].value);
        (s, true)
    }

    /// The entry in slot `s` (a slot from `slot_or_insert`; it may hold
    /// another key since).
    pub(super) fn at_mut(&mut self, s: u32) -> &mut V {
        &mut self.entries[s as usize].value
    }

    /// `key`'s value, without touching its recency.
    pub(super) fn peek(&self, key: &K) -> Option<&V> {
        let s = *self.index.get(key)?;
        Some(&self.entries[s as usize].value)
    }

    /// `key`'s value to change, without touching its recency.
    pub(super) fn peek_mut(&mut self, key: &K) -> Option<&mut V> {
        let s = *self.index.get(key)?;
        Some(&mut self.entries[s as usize].value)
    }

    /// Every entry, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter().map(|e| (&e.key, &e.value))
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.entries.iter_mut().map(|e| (&e.key, &mut e.value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys from most to least recently used, walking the links.
    fn order(t: &SlabLru<u32, u32>) -> Vec<u32> {
        let mut v = Vec::new();
        let mut s = t.head;
        while s != NIL {
            v.push(t.entries[s as usize].key);
            s = t.entries[s as usize].next;
        }
        v
    }

    #[test]
    fn pushes_out_the_least_recently_used() {
        let mut t = SlabLru::new(3);
        for k in [1, 2, 3] {
            let (s, new) = t.slot_or_insert(k, |_, _| unreachable!());
            assert!(new);
            *t.at_mut(s) = k * 10;
        }
        // 1 is used again: 2 is now the oldest.
        let (s1, new) = t.slot_or_insert(1, |_, _| unreachable!());
        assert!(!new);
        assert_eq!(*t.at_mut(s1), 10);
        assert_eq!(order(&t), [1, 3, 2]);
        let mut gone = None;
        let (s4, new) = t.slot_or_insert(4, |k, v| gone = Some((k, *v)));
        assert!(new);
        assert_eq!(gone, Some((2, 20)));
        // The value stays for the caller to start again.
        assert_eq!(*t.at_mut(s4), 20);
        *t.at_mut(s4) = 40;
        assert_eq!(order(&t), [4, 1, 3]);
        assert_eq!(t.peek(&2), None);
        assert_eq!(t.peek(&4), Some(&40));
        // The slot of the pushed-out key is reused.
        assert_eq!(s4, 1);
        assert_eq!(t.len(), 3);
        // `peek` leaves the order alone.
        t.peek(&3);
        let mut gone = None;
        t.slot_or_insert(5, |k, v| gone = Some((k, *v)));
        assert_eq!(gone, Some((3, 30)));
    }

    proptest::proptest! {
        /// Against a model: a list in recency order, cut at the capacity.
        #[test]
        fn behaves_as_a_recency_list(cap in 1usize..8, keys in proptest::collection::vec(0u32..12, 0..200)) {
            let mut t = SlabLru::new(cap);
            let mut model: Vec<u32> = Vec::new();
            for k in keys {
                let mut gone = None;
                let (s, new) = t.slot_or_insert(k, |k, v| gone = Some((k, *v)));
                if new {
                    *t.at_mut(s) = k + 100;
                }
                proptest::prop_assert_eq!(*t.at_mut(s), k + 100);
                let expect_gone = match model.iter().position(|&m| m == k) {
                    Some(i) => { model.remove(i); None }
                    None if model.len() == cap => model.pop().map(|m| (m, m + 100)),
                    None => None,
                };
                model.insert(0, k);
                proptest::prop_assert_eq!(gone, expect_gone);
                proptest::prop_assert_eq!(order(&t), model.clone());
            }
        }
    }
}
