//! The exact-match cache: whole flow key to megaflow, direct-mapped with
//! two candidate slots per key (OVS's EMC).
//!
//! A hit costs one hash, at most two key compares and an epoch check
//! against the megaflow cache (done by the caller). Entries are inserted
//! with probability `1 / insert_inv_prob` (OVS's `emc-insert-inv-prob`,
//! default 100): when there are far more flows than entries, inserting
//! every miss would only evict entries that are still hot.

use super::FlowRef;
use crate::flow::FlowKey;

/// Entries in the cache (OVS's `EM_FLOW_HASH_ENTRIES`).
pub const EMC_ENTRIES: usize = 8192;

const EMPTY: u32 = u32::MAX;

#[derive(Clone)]
struct Entry {
    hash: u32,
    flow: FlowRef,
    key: FlowKey,
}

/// The exact-match cache of one poll-mode thread.
pub struct ExactMatchCache {
    entries: Box<[Entry]>,
    insert_inv_prob: u32,
    /// xorshift state for the insertion coin.
    coin: u32,
}

impl ExactMatchCache {
    /// A cache of [`EMC_ENTRIES`] entries inserting one miss in
    /// `insert_inv_prob` (1: every miss; 0: never).
    pub fn new(insert_inv_prob: u32) -> Self {
        let empty = Entry {
            hash: 0,
            flow: FlowRef {
                slot: EMPTY,
                epoch: 0,
            },
            key: FlowKey::ZERO,
        };
        ExactMatchCache {
            entries: vec![empty; EMC_ENTRIES].into_boxed_slice(),
            insert_inv_prob,
            coin: 0x2545_f491,
        }
    }

    #[inline(always)]
    fn slots(hash: u32) -> (usize, usize) {
        let m = EMC_ENTRIES - 1;
        (hash as usize & m, (hash >> 13) as usize & m)
    }

    /// The megaflow cached for `key` (whose hash is `hash`), if any. The
    /// caller checks that the megaflow is still live.
    #[inline]
    pub fn lookup(&self, key: &FlowKey, hash: u32) -> Option<FlowRef> {
        let (a, b) = Self::slots(hash);
        for i in [a, b] {
            let e = &self.entries[i];
            if e.hash == hash && e.flow.slot != EMPTY && e.key == *key {
                return Some(e.flow);
            }
        }
        None
    }

    /// Maybe remember that `key` maps to `flow`.
    #[inline]
    pub fn insert(&mut self, key: &FlowKey, hash: u32, flow: FlowRef) {
        match self.insert_inv_prob {
            0 => return,
            1 => {}
            n => {
                let mut x = self.coin;
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                self.coin = x;
                if !x.is_multiple_of(n) {
                    return;
                }
            }
        }
        let (a, b) = Self::slots(hash);
        // Prefer an empty slot or the one already holding this key; else
        // evict one of the two, chosen by a hash bit.
        let i = if self.entries[a].flow.slot == EMPTY || self.entries[a].key == *key {
            a
        } else if self.entries[b].flow.slot == EMPTY || self.entries[b].key == *key {
            b
        } else if hash & (1 << 31) == 0 {
            a
        } else {
            b
        };
        let e = &mut self.entries[i];
        e.hash = hash;
        e.flow = flow;
        e.key = *key;
    }

    /// Forget every entry.
    pub fn clear(&mut self) {
        for e in self.entries.iter_mut() {
            e.flow.slot = EMPTY;
        }
    }

    /// Entries in use (for stats; walks the table).
    pub fn len(&self) -> usize {
        self.entries.iter().filter(|e| e.flow.slot != EMPTY).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> FlowKey {
        let mut k = FlowKey::ZERO;
        k.set_nw_src(n);
        k
    }

    #[test]
    fn hit_after_insert_miss_for_other_keys() {
        let mut c = ExactMatchCache::new(1);
        let f = FlowRef { slot: 3, epoch: 1 };
        c.insert(&key(1), 77, f);
        assert_eq!(c.lookup(&key(1), 77), Some(f));
        assert_eq!(c.lookup(&key(2), 77), None, "same hash, other key");
        assert_eq!(c.lookup(&key(1), 78), None);
        c.clear();
        assert_eq!(c.lookup(&key(1), 77), None);
    }

    #[test]
    fn two_keys_share_a_bucket_pair() {
        let mut c = ExactMatchCache::new(1);
        let (f1, f2) = (FlowRef { slot: 1, epoch: 0 }, FlowRef { slot: 2, epoch: 0 });
        // Same primary slot, different secondary.
        c.insert(&key(1), 5, f1);
        c.insert(&key(2), 5 | (9 << 13), f2);
        assert_eq!(c.lookup(&key(1), 5), Some(f1));
        assert_eq!(c.lookup(&key(2), 5 | (9 << 13)), Some(f2));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn never_inserts_with_zero_probability_and_sometimes_with_100() {
        let mut c = ExactMatchCache::new(0);
        c.insert(&key(1), 1, FlowRef { slot: 0, epoch: 0 });
        assert!(c.is_empty());
        let mut c = ExactMatchCache::new(100);
        for i in 0..10_000u32 {
            c.insert(
                &key(i),
                i.wrapping_mul(2_654_435_761),
                FlowRef { slot: 0, epoch: 0 },
            );
        }
        let n = c.len();
        assert!((40..200).contains(&n), "{n} inserted of 10000 at 1/100");
    }
}
