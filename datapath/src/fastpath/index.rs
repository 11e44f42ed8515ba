//! The fast path's index: exact first-pass keys to entry numbers.
//!
//! Built for looking a whole batch up with its cache misses overlapped:
//! a key's 64-bit hash names one cache-line [`Bucket`] (low bits) and a
//! 32-bit signature in it (high bits), so the caller can hash every packet
//! of a batch and [`KeyIndex::prefetch`] its bucket, then read the
//! buckets' [`KeyIndex::candidate`]s and prefetch the entries, and only
//! then compare keys. A bucket holds seven (signature, entry) slots; a
//! key whose bucket is full goes to the next one, and the full bucket is
//! flagged so lookups know to continue. Flags are only cleared by a
//! rebuild, which happens when the index grows or too many buckets are
//! flagged. The index never stores keys: the caller's entries hold them,
//! and a signature match is confirmed by comparing the entry's key.

use super::FastKey;
use crate::packet::prefetch;

const SLOTS: usize = 7;

/// Seven slots and an overflow flag: one cache line.
#[repr(C, align(64))]
#[derive(Clone, Copy, Default)]
struct Bucket {
    /// 0: free slot.
    sig: [u32; SLOTS],
    /// Non-zero when a key was placed past this bucket because it was
    /// full: a lookup that misses here goes on to the next bucket.
    overflow: u32,
    entry: [u32; SLOTS],
    _pad: u32,
}

const _: () = assert!(std::mem::size_of::<Bucket>() == 64);

/// Signature of a hash: its high half, never 0 (0 marks a free slot).
#[inline]
fn sig_of(hash: u64) -> u32 {
    ((hash >> 32) as u32) | 1
}

/// `a * b` as a 128-bit product folded to 64 bits.
#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let m = u128::from(a) * u128::from(b);
    (m as u64) ^ ((m >> 64) as u64)
}

/// Key numbers to entry numbers; see the module docs.
pub struct KeyIndex {
    buckets: Vec<Bucket>,
    mask: usize,
    len: usize,
    /// Buckets whose overflow flag is set.
    overflowed: usize,
    /// Per-index random seed: keys are chosen by whoever sends packets.
    seed: [u64; 12],
}

impl KeyIndex {
    pub fn new() -> KeyIndex {
        // Seeded from std's per-process random keys.
        use std::hash::{BuildHasher, Hasher};
        let rs = std::collections::hash_map::RandomState::new();
        let mut seed = [0u64; 12];
        for (i, s) in seed.iter_mut().enumerate() {
            let mut h = rs.build_hasher();
            h.write_usize(i);
            *s = h.finish();
        }
        KeyIndex {
            buckets: vec![Bucket::default(); 16],
            mask: 15,
            len: 0,
            overflowed: 0,
            seed,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The key's hash (six independent multiplies: short latency).
    #[inline]
    pub fn hash(&self, k: &FastKey) -> u64 {
        let w = &k.0;
        let s = &self.seed;
        let mut acc = 0u64;
        for j in 0..6 {
            acc = acc.wrapping_add(fold_mul(w[2 * j] ^ s[2 * j], w[2 * j + 1] ^ s[2 * j + 1]));
        }
        fold_mul(acc ^ s[0], 0x9e37_79b9_7f4a_7c15)
    }

    /// Start loading the bucket `hash` lives in.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        prefetch(&self.buckets[hash as usize & self.mask]);
    }

    /// The first entry in `hash`'s probe sequence whose signature matches
    /// (to prefetch; [`KeyIndex::find`] confirms).
    #[inline]
    pub fn candidate(&self, hash: u64) -> Option<u32> {
        self.find(hash, |_| true)
    }

    /// The entry stored under `hash` for which `is_key` holds.
    #[inline]
    pub fn find(&self, hash: u64, mut is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        let sig = sig_of(hash);
        let mut b = hash as usize & self.mask;
        for _ in 0..self.buckets.len() {
            let bucket = &self.buckets[b];
            for j in 0..SLOTS {
                if bucket.sig[j] == sig && is_key(bucket.entry[j]) {
                    return Some(bucket.entry[j]);
                }
            }
            if bucket.overflow == 0 {
                return None;
            }
            b = (b + 1) & self.mask;
        }
        None
    }

    /// Store `entry` under `hash` (the caller has checked the key is not
    /// there yet). `hash_of(e)` gives the hash of any stored entry, for a
    /// rebuild.
    pub fn insert(&mut self, hash: u64, entry: u32, hash_of: impl Fn(u32) -> u64) {
        // Grow at half load (a rebuild also drops stale overflow flags).
        if (self.len + 1) * 2 > self.buckets.len() * SLOTS {
            self.rebuild(self.buckets.len() * 2, &hash_of);
        } else if self.overflowed * 4 > self.buckets.len() {
            self.rebuild(self.buckets.len(), &hash_of);
        }
        self.place(hash, entry);
        self.len += 1;
    }

    fn place(&mut self, hash: u64, entry: u32) {
        let sig = sig_of(hash);
        let mut b = hash as usize & self.mask;
        // At most half full: a free slot exists within the table.
        loop {
            let bucket = &mut self.buckets[b];
            if let Some(j) = bucket.sig.iter().position(|&s| s == 0) {
                bucket.sig[j] = sig;
                bucket.entry[j] = entry;
                return;
            }
            if bucket.overflow == 0 {
                bucket.overflow = 1;
                self.overflowed += 1;
            }
            b = (b + 1) & self.mask;
        }
    }

    fn rebuild(&mut self, nbuckets: usize, hash_of: &impl Fn(u32) -> u64) {
        let old = std::mem::replace(&mut self.buckets, vec![Bucket::default(); nbuckets]);
        self.mask = nbuckets - 1;
        self.overflowed = 0;
        for b in &old {
            for j in 0..SLOTS {
                if b.sig[j] != 0 {
                    self.place(hash_of(b.entry[j]), b.entry[j]);
                }
            }
        }
    }

    /// Forget `entry`, stored under `hash`; false if it was not there.
    pub fn remove(&mut self, hash: u64, entry: u32) -> bool {
        let sig = sig_of(hash);
        let mut b = hash as usize & self.mask;
        for _ in 0..self.buckets.len() {
            let bucket = &mut self.buckets[b];
            for j in 0..SLOTS {
                if bucket.sig[j] == sig && bucket.entry[j] == entry {
                    bucket.sig[j] = 0;
                    self.len -= 1;
                    return true;
                }
            }
            if bucket.overflow == 0 {
                return false;
            }
            b = (b + 1) & self.mask;
        }
        false
    }

    pub fn clear(&mut self) {
        self.buckets = vec![Bucket::default(); 16];
        self.mask = 15;
        self.len = 0;
        self.overflowed = 0;
    }
}

impl Default for KeyIndex {
    fn default() -> Self {
        KeyIndex::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> FastKey {
        let mut k = [0u64; 12];
        k[0] = 1;
        k[7] = i;
        k[9] = i.rotate_left(17);
        FastKey(k)
    }

    /// Insert, find, remove against a model, through growth and with many
    /// keys forced into one bucket (overflow chains).
    #[test]
    fn behaves_like_a_map() {
        let mut idx = KeyIndex::new();
        let keys: Vec<FastKey> = (0..5000).map(key).collect();
        let hashes: Vec<u64> = keys.iter().map(|k| idx.hash(k)).collect();
        for (i, &h) in hashes.iter().enumerate() {
            assert_eq!(idx.find(h, |e| keys[e as usize] == keys[i]), None);
            idx.insert(h, i as u32, |e| hashes[e as usize]);
        }
        assert_eq!(idx.len(), 5000);
        for (i, &h) in hashes.iter().enumerate() {
            assert_eq!(idx.find(h, |e| keys[e as usize] == keys[i]), Some(i as u32));
        }
        for i in (0..5000).step_by(2) {
            assert!(idx.remove(hashes[i], i as u32));
            assert!(!idx.remove(hashes[i], i as u32));
        }
        assert_eq!(idx.len(), 2500);
        for (i, &h) in hashes.iter().enumerate() {
            let want = (i % 2 == 1).then_some(i as u32);
            assert_eq!(idx.find(h, |e| keys[e as usize] == keys[i]), want);
        }
        // Colliding hashes: 40 entries with one home bucket chain through
        // overflow flags and are all found, then removed.
        let mut idx = KeyIndex::new();
        let same: Vec<u64> = (0..40u64).map(|i| (i << 40) | 3).collect();
        for (i, &h) in same.iter().enumerate() {
            idx.insert(h, i as u32, |e| same[e as usize]);
        }
        for (i, &h) in same.iter().enumerate() {
            assert_eq!(idx.candidate(h), Some(i as u32));
            assert_eq!(idx.find(h, |e| e == i as u32), Some(i as u32));
        }
        for (i, &h) in same.iter().enumerate() {
            assert!(idx.remove(h, i as u32));
        }
        assert!(idx.is_empty());
    }

    #[test]
    fn hash_spreads_keys_that_differ_in_one_word() {
        let idx = KeyIndex::new();
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000u64 {
            let mut k = key(0);
            k.0[(i % 12) as usize] ^= i;
            seen.insert(idx.hash(&k) & 0xffff);
        }
        // 10k keys into 65536 buckets: a good hash leaves few collisions.
        assert!(seen.len() > 9000, "{} distinct", seen.len());
    }
}
