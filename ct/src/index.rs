//! The hash index of one shard: open addressing over 8-byte entries.
//!
//! An entry is `tag << 32 | (value + 1)` where `tag` is the low 32 bits of
//! the key's hash and `value` the slot reference (`0` marks an empty
//! bucket). Keys live in the slab, not here; a lookup compares a candidate's
//! key only when its tag matches. Linear probing from the tag's home bucket
//! (`tag * buckets >> 32`, so any table size works), growth by half at 3/4
//! load (rehashing from the stored tags, no key is read; growing by half
//! rather than doubling keeps the load, and so the bytes per entry, even),
//! and backward-shift deletion (no tombstones, so probe chains stay short).
//!
//! Why not hashbrown: its control bytes and buckets are separate arrays, so
//! a lookup in a table larger than the cache costs two dependent misses
//! before the record's. Here the first probe is one load at an address the
//! batch can compute up front ([`Index::first`]), so the tracker touches the
//! buckets of a whole batch in one tight loop and the misses overlap.

const EMPTY: u64 = 0;
const MIN_BUCKETS: usize = 8;

pub struct Index {
    buckets: Vec<u64>,
    len: usize,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            buckets: vec![EMPTY; MIN_BUCKETS],
            len: 0,
        }
    }
}

#[inline]
fn tag(hash: u64) -> u32 {
    hash as u32
}

#[inline]
fn pack(tag: u32, value: u32) -> u64 {
    (tag as u64) << 32 | (value as u64 + 1)
}

#[inline]
fn value_of(e: u64) -> u32 {
    (e as u32).wrapping_sub(1)
}

#[inline]
fn tag_of(e: u64) -> u32 {
    (e >> 32) as u32
}

impl Index {
    /// Home bucket of a tag.
    #[inline]
    fn home(&self, tag: u32) -> usize {
        ((tag as u64 * self.buckets.len() as u64) >> 32) as usize
    }

    #[inline]
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.buckets.len() {
            0
        } else {
            i + 1
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Bytes held by the bucket array.
    pub fn bytes(&self) -> usize {
        self.buckets.len() * 8
    }

    /// The first bucket a lookup of `hash` reads. Returns the value of a
    /// tag-matching entry there (the common hit), for the batch to touch
    /// its record ahead of the real lookup.
    #[inline]
    pub fn first(&self, hash: u64) -> Option<u32> {
        let e = self.buckets[self.home(tag(hash))];
        (e != EMPTY && tag_of(e) == tag(hash)).then(|| value_of(e))
    }

    /// The value of the first entry with `hash`'s tag for which `eq` holds.
    #[inline]
    pub fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let t = tag(hash);
        let mut i = self.home(t);
        loop {
            let e = self.buckets[i];
            if e == EMPTY {
                return None;
            }
            if tag_of(e) == t && eq(value_of(e)) {
                return Some(value_of(e));
            }
            i = self.next(i);
        }
    }

    /// Add an entry (the caller guarantees `value` is not already present;
    /// `value < u32::MAX`).
    pub fn insert(&mut self, hash: u64, value: u32) {
        if (self.len + 1) * 4 > self.buckets.len() * 3 {
            self.resize(self.buckets.len() + self.buckets.len() / 2);
        }
        self.place(pack(tag(hash), value));
        self.len += 1;
    }

    fn place(&mut self, e: u64) {
        let mut i = self.home(tag_of(e));
        while self.buckets[i] != EMPTY {
            i = self.next(i);
        }
        self.buckets[i] = e;
    }

    fn resize(&mut self, n: usize) {
        let old = std::mem::replace(&mut self.buckets, vec![EMPTY; n]);
        for e in old.into_iter().filter(|&e| e != EMPTY) {
            self.place(e);
        }
    }

    /// Remove the entry `(hash, value)`; returns whether it was there.
    pub fn remove(&mut self, hash: u64, value: u32) -> bool {
        let want = pack(tag(hash), value);
        let mut i = self.home(tag(hash));
        loop {
            let e = self.buckets[i];
            if e == EMPTY {
                return false;
            }
            if e == want {
                break;
            }
            i = self.next(i);
        }
        // Backward shift: pull later entries of the cluster into the hole
        // when the hole lies on their probe path.
        let mut hole = i;
        let mut j = self.next(i);
        loop {
            let e = self.buckets[j];
            if e == EMPTY {
                break;
            }
            let home = self.home(tag_of(e));
            // Movable if home is not in the cyclic range (hole, j].
            let in_range = if hole <= j {
                home > hole && home <= j
            } else {
                home > hole || home <= j
            };
            if !in_range {
                self.buckets[hole] = e;
                hole = j;
            }
            j = self.next(j);
        }
        self.buckets[hole] = EMPTY;
        self.len -= 1;
        if self.buckets.len() > MIN_BUCKETS && self.len * 8 < self.buckets.len() {
            self.resize((self.buckets.len() / 2).max(MIN_BUCKETS));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn h(x: u64) -> u64 {
        x.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (x >> 7)
    }

    #[test]
    fn insert_find_remove() {
        let mut ix = Index::default();
        for v in 0..1000u32 {
            ix.insert(h(v as u64), v);
        }
        assert_eq!(ix.len(), 1000);
        for v in 0..1000u32 {
            assert_eq!(ix.find(h(v as u64), |x| x == v), Some(v));
        }
        assert_eq!(ix.find(h(5000), |_| true), None);
        for v in (0..1000u32).step_by(2) {
            assert!(ix.remove(h(v as u64), v));
        }
        assert!(!ix.remove(h(0), 0));
        for v in 0..1000u32 {
            assert_eq!(ix.find(h(v as u64), |x| x == v).is_some(), v % 2 == 1);
        }
    }

    #[test]
    fn colliding_tags_are_told_apart_by_eq() {
        let mut ix = Index::default();
        for v in 0..50 {
            ix.insert(42, v);
        }
        for v in 0..50 {
            assert_eq!(ix.find(42, |x| x == v), Some(v));
        }
        assert!(ix.remove(42, 17));
        assert_eq!(ix.find(42, |x| x == 17), None);
        assert_eq!(ix.find(42, |x| x == 49), Some(49));
    }

    proptest! {
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec((0u64..64, any::<bool>()), 1..400)) {
            let mut ix = Index::default();
            let mut model: HashMap<u32, u64> = HashMap::new();
            for (k, add) in ops {
                let v = k as u32;
                // Few distinct hashes: long clusters and wrap-around.
                let hash = (k % 7) * 0x1_0000_0001 + 3;
                if add && !model.contains_key(&v) {
                    ix.insert(hash, v);
                    model.insert(v, hash);
                } else if !add {
                    prop_assert_eq!(ix.remove(hash, v), model.remove(&v).is_some());
                }
                prop_assert_eq!(ix.len(), model.len());
                for (&mv, &mh) in &model {
                    prop_assert_eq!(ix.find(mh, |x| x == mv), Some(mv));
                }
            }
        }
    }
}
