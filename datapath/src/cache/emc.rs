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

/// The exact-match cache of one poll-mode thread.
///
/// Entries are split in three arrays: the 4-byte hashes (32 KiB for 8192
/// entries: they stay in the L1/L2 cache, so most misses are decided
/// without touching a key), the megaflow references, and the keys, which
/// are only read when the hash matches. [`ExactMatchCache::prefetch`] lets
/// a batch issue those key loads before comparing any of them.
pub struct ExactMatchCache {
    hashes: Box<[u32]>,
    flows: Box<[FlowRef]>,
    keys: Box<[FlowKey]>,
    insert_inv_prob: u32,
    /// xorshift state for the insertion coin.
    coin: u32,
}

impl ExactMatchCache {
    /// A cache of [`EMC_ENTRIES`] entries inserting one miss in
    /// `insert_inv_prob` (1: every miss; 0: never).
    pub fn new(insert_inv_prob: u32) -> Self {
        let empty = FlowRef {
            slot: EMPTY,
            epoch: 0,
        };
        ExactMatchCache {
            hashes: vec![0; EMC_ENTRIES].into_boxed_slice(),
            flows: vec![empty; EMC_ENTRIES].into_boxed_slice(),
            keys: vec![FlowKey::ZERO; EMC_ENTRIES].into_boxed_slice(),
            insert_inv_prob,
            coin: 0x2545_f491,
        }
    }

    /// Is this cache inserting anything at all?
    pub fn enabled(&self) -> bool {
        self.insert_inv_prob != 0
    }

    #[inline(always)]
    fn slots(hash: u32) -> (usize, usize) {
        let m = EMC_ENTRIES - 1;
        (hash as usize & m, (hash >> 13) as usize & m)
    }

    /// Start loading the key a lookup of `hash` will compare, if any (the
    /// loads of a whole batch then overlap instead of stalling one by one).
    #[inline(always)]
    pub fn prefetch(&self, hash: u32) {
        let (a, b) = Self::slots(hash);
        for i in [a, b] {
            if self.hashes[i] == hash {
                let k = &self.keys[i];
                crate::packet::prefetch(k);
                crate::packet::prefetch(&k.words()[8]);
                crate::packet::prefetch(&k.words()[16]);
                crate::packet::prefetch(&k.words()[24]);
            }
        }
    }

    /// The megaflow cached for `key` (whose hash is `hash`), if any. The
    /// caller checks that the megaflow is still live.
    #[inline]
    pub fn lookup(&self, key: &FlowKey, hash: u32) -> Option<FlowRef> {
        let (a, b) = Self::slots(hash);
        for i in [a, b] {
            if self.hashes[i] == hash && self.flows[i].slot != EMPTY && self.keys[i] == *key {
                return Some(self.flows[i]);
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
        let free_or_same = |i: usize| {
            self.flows[i].slot == EMPTY || (self.hashes[i] == hash && self.keys[i] == *key)
        };
        // Prefer an empty slot or the one already holding this key; else
        // evict one of the two, chosen by a hash bit.
        let i = if free_or_same(a) {
            a
        } else if free_or_same(b) || hash & (1 << 31) != 0 {
            b
        } else {
            a
        };
        self.hashes[i] = hash;
        self.flows[i] = flow;
        self.keys[i] = *key;
    }

    /// Forget every entry.
    pub fn clear(&mut self) {
        for f in self.flows.iter_mut() {
            f.slot = EMPTY;
        }
    }

    /// Entries in use (for stats; walks the table).
    pub fn len(&self) -> usize {
        self.flows.iter().filter(|f| f.slot != EMPTY).count()
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
