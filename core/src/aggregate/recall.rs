//! Which requests were lost lately (echo pairing's memory of them).

use std::hash::Hash;

use foldhash::fast::RandomState;

/// Ways of a `Recall` set.
const WAYS: usize = 4;

/// Requests recently counted lost, to tell a late reply from an
/// unsolicited one: a 64-bit fingerprint per request (a keyed hash, so a
/// spoofed flood cannot aim at one set) in sets of four, the oldest of a
/// full set forgotten. Under a flood every request may be lost: this costs
/// one cache line per loss, where an LRU map cost a node and two hash
/// operations.
#[derive(Debug)]
pub(super) struct Recall {
    sets: Vec<[u64; WAYS]>,
    hasher: RandomState,
    /// Fingerprints held (the snapshot's table size).
    pub(super) len: usize,
}

impl Recall {
    /// Room for at least `n` requests.
    pub(super) fn new(n: usize) -> Self {
        let sets = n.div_ceil(WAYS).max(1).next_power_of_two();
        Self {
            sets: vec![[0; WAYS]; sets],
            hasher: RandomState::default(),
            len: 0,
        }
    }

    pub(super) fn capacity(&self) -> usize {
        self.sets.len() * WAYS
    }

    /// The set and the fingerprint (never 0, which marks an empty way).
    fn place<K: Hash>(&mut self, key: &K) -> (&mut [u64; WAYS], u64) {
        use std::hash::BuildHasher as _;
        let h = self.hasher.hash_one(key);
        let mask = self.sets.len() - 1;
        (&mut self.sets[h as usize & mask], h | 1)
    }

    pub(super) fn insert<K: Hash>(&mut self, key: &K) {
        let (set, fp) = self.place(key);
        if set.contains(&fp) {
            return;
        }
        let full = set[WAYS - 1] != 0;
        set.rotate_right(1);
        set[0] = fp;
        if !full {
            self.len += 1;
        }
    }

    pub(super) fn contains<K: Hash>(&mut self, key: &K) -> bool {
        let (set, fp) = self.place(key);
        set.contains(&fp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lost(seq: u16) -> (u16, u16) {
        (7, seq)
    }

    #[test]
    fn recall_forgets_the_oldest_of_a_full_set() {
        // Room for 4: one set, which every key shares.
        let mut r = Recall::new(4);
        assert_eq!(r.capacity(), 4);
        assert!(!r.contains(&lost(0)));
        for seq in 0..4 {
            r.insert(&lost(seq));
        }
        r.insert(&lost(3));
        assert_eq!(r.len, 4);
        assert!((0..4).all(|s| r.contains(&lost(s))));
        r.insert(&lost(4));
        assert_eq!(r.len, 4);
        assert!(!r.contains(&lost(0)));
        assert!((1..5).all(|s| r.contains(&lost(s))));
    }
}
