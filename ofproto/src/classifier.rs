//! The flow classifier: tuple-space search with copy-on-write publication.
//!
//! # What it does
//!
//! A classifier holds rules, each a [`Match`] (value and mask over a
//! [`FlowKey`]) with a priority. Given packet metadata it returns the
//! highest-priority rule whose match accepts the packet, and it reports, as a
//! [`FlowMask`], every bit of the key it had to look at to reach that answer.
//! That mask is what a megaflow cache needs: any packet that agrees with this
//! one on the reported bits gets the same answer, so the datapath can install
//! `key & mask -> actions` and skip the classifier for all of them.
//!
//! # How: tuple-space search
//!
//! Rules are grouped by mask. All rules with one mask live in one
//! [`Subtable`], a hash table keyed by the masked key, so finding whether any
//! rule of that mask matches is one hash probe, however many rules it holds.
//! A lookup probes subtables until it can prove no remaining one can win:
//! subtables are kept sorted by the best rule they contain, so once the best
//! match found so far outranks a subtable's best rule, that subtable and all
//! after it are skipped ("early exit"). The cost of a lookup is therefore
//! the number of distinct masks it visits, not the number of rules. Each probe
//! touches only the words its mask uses; a subtable stores those word indices.
//!
//! Before hashing the whole masked key, a lookup asks a small Bloom filter
//! kept per subtable over one word of its mask (the word whose masked values
//! differ most among the subtable's rules, typically the IP addresses; chosen
//! again as the subtable grows): if no rule's masked word can equal the
//! packet's, the subtable is skipped after consulting only that word. This
//! is OVS's prefix-tracking idea in a simple form: it shortens lookups for
//! packets that match few subtables and keeps their megaflows wider.
//!
//! The consulted-field mask is the union of the masks of the subtables the
//! lookup visited, hit or miss (only the filter word for a filtered-out
//! one): a miss in a subtable is information too (a
//! packet differing in those bits might hit there). Subtables skipped by the
//! early exit are not in it: nothing in them could have outranked the answer.
//! This is conservative but exact in the sense that matters: a megaflow built
//! from it never returns a wrong rule. (OVS narrows it further with staged
//! lookups and prefix tries; that is an optimisation left for later.)
//!
//! # Ties
//!
//! OpenFlow leaves overlapping rules of equal priority undefined; ferrovs
//! makes them deterministic: among equal priorities the rule added first
//! wins. Each entry carries a `rank` = priority then reverse insertion
//! sequence, unique per rule, so "best" is a single integer comparison and the
//! early-exit test is exact.
//!
//! # Concurrency: updates never stop readers
//!
//! A `Classifier` is an immutable value once published. Updates build a new
//! version (sharing every untouched subtable through `Arc`, and inside a
//! changed subtable every untouched chunk of 256 buckets) and publish it
//! with [`Published::publish`]; readers keep a [`Reader`] that holds an
//! `Arc` of the version they use and checks one atomic version counter per
//! call to see whether a newer one exists. The per-packet path takes no lock
//! and allocates nothing; a reader takes a short lock (held by anyone only
//! for an `Arc` clone or swap) just to pick up a new version, once per
//! flow-mod, and an old version is freed when its last reader moves on. A
//! poll-mode thread would call `Reader::get` once per batch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hashbrown::HashTable;
use parking_lot::Mutex;

use crate::fields::{FlowKey, FlowMask, WORDS};
use crate::matches::Match;

/// Rank of a rule: higher wins. Priority in the top bits, then earlier
/// insertion (lower `seq`) wins among equal priorities.
#[inline]
pub fn rank(priority: u16, seq: u64) -> u64 {
    const SEQ_BITS: u32 = 47;
    ((priority as u64) << SEQ_BITS) | ((1u64 << SEQ_BITS) - 1 - (seq & ((1u64 << SEQ_BITS) - 1)))
}

/// One rule in the classifier.
#[derive(Debug)]
pub struct Entry<T> {
    pub priority: u16,
    pub seq: u64,
    pub rank: u64,
    pub value: Arc<T>,
}

impl<T> Clone for Entry<T> {
    fn clone(&self) -> Self {
        Entry {
            priority: self.priority,
            seq: self.seq,
            rank: self.rank,
            value: self.value.clone(),
        }
    }
}

/// A vector kept in shared chunks of [`CHUNK`] elements: cloning copies one
/// pointer per chunk, and a write copies only the chunk it lands in. This is
/// what keeps a single flow-mod into a 100,000-rule subtable cheap.
#[derive(Debug)]
struct Chunked<V> {
    chunks: Vec<Arc<Vec<V>>>,
    len: usize,
}

const CHUNK: usize = 256;

impl<V> Clone for Chunked<V> {
    fn clone(&self) -> Self {
        Chunked {
            chunks: self.chunks.clone(),
            len: self.len,
        }
    }
}

impl<V: Clone> Chunked<V> {
    fn new() -> Self {
        Chunked {
            chunks: Vec::new(),
            len: 0,
        }
    }
    #[inline(always)]
    fn get(&self, i: usize) -> &V {
        &self.chunks[i / CHUNK][i % CHUNK]
    }
    fn get_mut(&mut self, i: usize) -> &mut V {
        &mut Arc::make_mut(&mut self.chunks[i / CHUNK])[i % CHUNK]
    }
    fn push(&mut self, v: V) {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Arc::new(Vec::with_capacity(CHUNK)));
        }
        let last = self.chunks.len() - 1;
        Arc::make_mut(&mut self.chunks[last]).push(v);
        self.len += 1;
    }
    /// Remove element `i`, moving the last element into its place.
    fn swap_remove(&mut self, i: usize) -> V {
        let last_chunk = self.chunks.len() - 1;
        let tail = Arc::make_mut(&mut self.chunks[last_chunk])
            .pop()
            .expect("non-empty");
        if self.chunks[last_chunk].is_empty() {
            self.chunks.pop();
        }
        self.len -= 1;
        if i == self.len {
            return tail;
        }
        std::mem::replace(self.get_mut(i), tail)
    }
    fn pop(&mut self) -> Option<V> {
        if self.len == 0 {
            return None;
        }
        let last_chunk = self.chunks.len() - 1;
        let v = Arc::make_mut(&mut self.chunks[last_chunk]).pop();
        if self.chunks[last_chunk].is_empty() {
            self.chunks.pop();
        }
        self.len -= 1;
        v
    }
    fn len(&self) -> usize {
        self.len
    }
    fn is_empty(&self) -> bool {
        self.len == 0
    }
    fn iter(&self) -> impl Iterator<Item = &V> + '_ {
        self.chunks.iter().flat_map(|c| c.iter())
    }
}

/// All rules sharing one mask: masked key -> rules, best first.
///
/// Field order is the lookup's access order (`repr(C)` keeps it): the first
/// two cache lines hold everything a probe reads except the key words.
#[derive(Debug)]
#[repr(C)]
pub struct Subtable<T> {
    /// Best rank in this subtable.
    max_rank: u64,
    n_idx: usize,
    /// Position in `idx` of the filter word (see [`Subtable::filter_rejects`]),
    /// or `usize::MAX` when the subtable has a single word (no filter).
    fj: usize,
    /// `idx[fj]` and `mw[fj]`, kept beside `max_rank` so that turning a
    /// subtable away touches one cache line of it (plus the filter's).
    f_word: usize,
    f_mask: u64,
    /// Bloom filter over the masked filter word of every bucket:
    /// `bloom.len() * 64` bits, a power of two.
    bloom: Vec<u64>,
    /// Buckets removed since the filter was last rebuilt.
    stale: usize,
    /// Hash -> index into `hashes`/`keys`/`rules`.
    table: HashTable<u32>,
    /// Masked key words of each bucket, `n_idx` per bucket.
    keys: Chunked<u64>,
    /// Rules of each bucket, sorted by rank, best first.
    rules: Chunked<Vec<Entry<T>>>,
    /// Indices of the mask's non-zero words; only these are hashed and compared.
    idx: [u8; WORDS],
    /// The mask's non-zero words, compacted: `mw[j]` is word `idx[j]`.
    mw: [u64; WORDS],
    hashes: Chunked<u64>,
    mask: FlowMask,
}

impl<T> Clone for Subtable<T> {
    fn clone(&self) -> Self {
        Subtable {
            mask: self.mask,
            mw: self.mw,
            fj: self.fj,
            f_word: self.f_word,
            f_mask: self.f_mask,
            bloom: self.bloom.clone(),
            stale: self.stale,
            idx: self.idx,
            n_idx: self.n_idx,
            max_rank: self.max_rank,
            table: self.table.clone(),
            hashes: self.hashes.clone(),
            keys: self.keys.clone(),
            rules: self.rules.clone(),
        }
    }
}

#[inline(always)]
fn mix(h: u64, w: u64) -> u64 {
    // One 64x64->128 multiply, folded: cheap and mixes into both halves
    // (hashbrown uses the top bits as tags and the low bits as the index).
    let x = ((h ^ w) as u128) * (0x9e37_79b9_7f4a_7c15u64 as u128);
    (x as u64) ^ ((x >> 64) as u64)
}

impl<T> Subtable<T> {
    fn new(mask: FlowMask) -> Self {
        let mut idx = [0u8; WORDS];
        let mut mw = [0u64; WORDS];
        let mut n = 0;
        for (i, w) in mask.w.iter().enumerate() {
            if *w != 0 {
                idx[n] = i as u8;
                mw[n] = *w;
                n += 1;
            }
        }
        // Filter word: until there are rules to compare, the last word (L3/L4
        // and metadata live late in the key; word 0 is dl_type and in_port).
        let fj = if n >= 2 { n - 1 } else { usize::MAX };
        Subtable {
            mask,
            mw,
            fj,
            f_word: if n >= 2 { idx[n - 1] as usize } else { 0 },
            f_mask: if n >= 2 { mw[n - 1] } else { 0 },
            bloom: if n >= 2 { vec![0; 1] } else { Vec::new() },
            stale: 0,
            idx,
            n_idx: n,
            max_rank: 0,
            table: HashTable::new(),
            hashes: Chunked::new(),
            keys: Chunked::new(),
            rules: Chunked::new(),
        }
    }

    #[inline(always)]
    fn bloom_bit(&self, w: u64) -> (usize, u64) {
        let h = mix(0x1319_8a2e_0370_7344, w);
        let nbits = self.bloom.len() * 64;
        let bit = (h >> 20) as usize & (nbits - 1);
        (bit / 64, 1u64 << (bit % 64))
    }

    /// True when no rule here can match `k`, judged from the filter word
    /// alone. Then only that word's mask bits were consulted: any packet that
    /// agrees with `k` on them is rejected too (a Bloom filter has no false
    /// negatives), which keeps megaflows wide as well as lookups short.
    #[inline(always)]
    fn filter_rejects(&self, k: &FlowKey) -> bool {
        if self.fj == usize::MAX {
            return false;
        }
        let w = k.w[self.f_word] & self.f_mask;
        let (i, b) = self.bloom_bit(w);
        self.bloom[i] & b == 0
    }

    fn bloom_add(&mut self, w: u64) {
        let (i, b) = self.bloom_bit(w);
        self.bloom[i] |= b;
    }

    /// Rebuild the filter sized for the current buckets (about 16 bits each,
    /// so roughly 6% false positives with one hash), on the word whose masked
    /// values differ most among the rules (ties: the later word).
    fn bloom_rebuild(&mut self) {
        if self.fj == usize::MAX {
            return;
        }
        let n = self.n_idx;
        if self.rules.len() >= 2 {
            let mut best = (0usize, self.fj);
            for j in 0..n {
                let distinct: hashbrown::HashSet<u64> = (0..self.rules.len())
                    .map(|b| *self.keys.get(b * n + j))
                    .collect();
                if (distinct.len(), j) > best {
                    best = (distinct.len(), j);
                }
            }
            self.fj = best.1;
            self.f_word = self.idx[self.fj] as usize;
            self.f_mask = self.mw[self.fj];
        }
        let words = (self.rules.len() * 16)
            .div_ceil(64)
            .next_power_of_two()
            .max(1);
        self.bloom = vec![0; words];
        self.stale = 0;
        for b in 0..self.rules.len() {
            let w = *self.keys.get(b * n + self.fj);
            self.bloom_add(w);
        }
    }

    #[inline(always)]
    fn hash_key(&self, k: &FlowKey) -> u64 {
        let mut h = 0x243f_6a88_85a3_08d3u64;
        for j in 0..self.n_idx {
            let i = self.idx[j] as usize;
            h = mix(h, k.w[i] & self.mw[j]);
        }
        h
    }

    /// The bucket whose masked key equals `k & mask`.
    #[inline(always)]
    fn bucket(&self, k: &FlowKey) -> Option<usize> {
        let h = self.hash_key(k);
        let n = self.n_idx;
        let (keys, idx, mw) = (&self.keys, &self.idx, &self.mw);
        self.table
            .find(h, |&b| {
                let base = b as usize * n;
                (0..n).all(|j| {
                    let i = idx[j] as usize;
                    *keys.get(base + j) == k.w[i] & mw[j]
                })
            })
            .map(|b| *b as usize)
    }

    /// Best rule matching `k`, if any.
    #[inline(always)]
    pub fn find(&self, k: &FlowKey) -> Option<&Entry<T>> {
        self.bucket(k).and_then(|b| self.rules.get(b).first())
    }

    fn recompute_max(&mut self) {
        self.max_rank = self
            .rules
            .iter()
            .filter_map(|r| r.first())
            .map(|e| e.rank)
            .max()
            .unwrap_or(0);
    }

    /// Insert; returns the entry it replaced (same masked key and priority).
    fn insert(&mut self, key: &FlowKey, e: Entry<T>) -> Option<Entry<T>> {
        let b = match self.bucket(key) {
            Some(b) => b,
            None => {
                let h = self.hash_key(key);
                let b = self.rules.len();
                for j in 0..self.n_idx {
                    let i = self.idx[j] as usize;
                    self.keys.push(key.w[i] & self.mw[j]);
                }
                self.hashes.push(h);
                self.rules.push(Vec::new());
                let hashes = &self.hashes;
                self.table
                    .insert_unique(h, b as u32, |&x| *hashes.get(x as usize));
                if self.fj != usize::MAX {
                    // Re-pick the word and re-size at each power of two:
                    // between rebuilds the filter keeps >= 8 bits a bucket.
                    if self.rules.len().is_power_of_two() {
                        self.bloom_rebuild();
                    } else {
                        let w = key.w[self.idx[self.fj] as usize] & self.mw[self.fj];
                        self.bloom_add(w);
                    }
                }
                b
            }
        };
        let list = self.rules.get_mut(b);
        let old = list
            .iter()
            .position(|x| x.priority == e.priority)
            .map(|p| list.remove(p));
        let e = match &old {
            // A replacement keeps its place among equal priorities.
            Some(o) => Entry {
                seq: o.seq,
                rank: o.rank,
                ..e
            },
            None => e,
        };
        let pos = list.partition_point(|x| x.rank > e.rank);
        list.insert(pos, e);
        self.max_rank = self.max_rank.max(list[0].rank);
        if old.is_some() {
            self.recompute_max();
        }
        old
    }

    fn remove(&mut self, key: &FlowKey, priority: u16) -> Option<Entry<T>> {
        let b = self.bucket(key)?;
        let pos = self
            .rules
            .get(b)
            .iter()
            .position(|x| x.priority == priority)?;
        let e = self.rules.get_mut(b).remove(pos);
        if self.rules.get(b).is_empty() {
            self.remove_bucket(b);
            // Stale filter bits only cost speed (a false "maybe"), never a
            // wrong answer, so rebuild only once a quarter of it is stale.
            self.stale += 1;
            if self.stale * 4 > self.rules.len() {
                self.bloom_rebuild();
            }
        }
        if e.rank == self.max_rank {
            self.recompute_max();
        }
        Some(e)
    }

    fn remove_bucket(&mut self, b: usize) {
        let n = self.n_idx;
        let last = self.rules.len() - 1;
        let hb = *self.hashes.get(b);
        if let Ok(ent) = self.table.find_entry(hb, |&x| x as usize == b) {
            ent.remove();
        }
        if b != last {
            let hl = *self.hashes.get(last);
            if let Ok(mut ent) = self.table.find_entry(hl, |&x| x as usize == last) {
                *ent.get_mut() = b as u32;
            }
            for j in 0..n {
                let w = *self.keys.get(last * n + j);
                *self.keys.get_mut(b * n + j) = w;
            }
        }
        for _ in 0..n {
            self.keys.pop();
        }
        self.hashes.swap_remove(b);
        self.rules.swap_remove(b);
    }

    pub fn mask(&self) -> &FlowMask {
        &self.mask
    }
    pub fn len(&self) -> usize {
        self.rules.iter().map(Vec::len).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// A set of prioritized rules; see the module docs.
#[derive(Debug)]
pub struct Classifier<T> {
    /// Sorted by `max_rank`, best first.
    subtables: Vec<Arc<Subtable<T>>>,
    n_rules: usize,
}

impl<T> Clone for Classifier<T> {
    fn clone(&self) -> Self {
        Classifier {
            subtables: self.subtables.clone(),
            n_rules: self.n_rules,
        }
    }
}

impl<T> Default for Classifier<T> {
    fn default() -> Self {
        Classifier {
            subtables: Vec::new(),
            n_rules: 0,
        }
    }
}

impl<T> Classifier<T> {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn len(&self) -> usize {
        self.n_rules
    }
    pub fn is_empty(&self) -> bool {
        self.n_rules == 0
    }
    pub fn n_subtables(&self) -> usize {
        self.subtables.len()
    }

    /// The best rule matching `k`; ORs the bits consulted into `wc`.
    /// No allocation, no lock.
    #[inline]
    pub fn lookup(&self, k: &FlowKey, wc: &mut FlowMask) -> Option<&Entry<T>> {
        let mut best: Option<&Entry<T>> = None;
        for st in &self.subtables {
            if let Some(b) = best {
                if st.max_rank <= b.rank {
                    break;
                }
            }
            if st.filter_rejects(k) {
                wc.w[st.f_word] |= st.f_mask;
                continue;
            }
            for j in 0..st.n_idx {
                let i = st.idx[j] as usize;
                wc.w[i] |= st.mw[j];
            }
            if let Some(e) = st.find(k) {
                if best.is_none_or(|b| e.rank > b.rank) {
                    best = Some(e);
                }
            }
        }
        best
    }

    fn sort(&mut self) {
        self.subtables
            .sort_by_key(|s| std::cmp::Reverse(s.max_rank));
    }

    /// Add a rule; a rule with the same match and priority is replaced (and
    /// returned). Copy-on-write: only the affected subtable is cloned, and
    /// only if another version still shares it.
    pub fn insert(&mut self, m: &Match, priority: u16, seq: u64, value: Arc<T>) -> Option<Arc<T>> {
        let e = Entry {
            priority,
            seq,
            rank: rank(priority, seq),
            value,
        };
        let pos = match self.subtables.iter().position(|s| s.mask == m.mask) {
            Some(p) => p,
            None => {
                self.subtables.push(Arc::new(Subtable::new(m.mask)));
                self.subtables.len() - 1
            }
        };
        let st = Arc::make_mut_clone(&mut self.subtables[pos]);
        let old = st.insert(&m.key, e);
        if old.is_none() {
            self.n_rules += 1;
        }
        self.sort();
        old.map(|e| e.value)
    }

    /// Remove the rule with exactly this match and priority.
    pub fn remove(&mut self, m: &Match, priority: u16) -> Option<Arc<T>> {
        let pos = self.subtables.iter().position(|s| s.mask == m.mask)?;
        self.subtables[pos].bucket(&m.key)?;
        let st = Arc::make_mut_clone(&mut self.subtables[pos]);
        let old = st.remove(&m.key, priority)?;
        self.n_rules -= 1;
        if st.is_empty() {
            self.subtables.remove(pos);
        }
        self.sort();
        Some(old.value)
    }

    /// The rule with exactly this match and priority.
    pub fn find_exact(&self, m: &Match, priority: u16) -> Option<&Entry<T>> {
        let st = self.subtables.iter().find(|s| s.mask == m.mask)?;
        let b = st.bucket(&m.key)?;
        st.rules.get(b).iter().find(|e| e.priority == priority)
    }

    /// Every rule with its match, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Match, &Entry<T>)> + '_ {
        self.subtables.iter().flat_map(|st| {
            let n = st.n_idx;
            st.rules.iter().enumerate().flat_map(move |(b, list)| {
                let mut key = FlowKey::default();
                for j in 0..n {
                    key.w[st.idx[j] as usize] = *st.keys.get(b * n + j);
                }
                let m = Match { key, mask: st.mask };
                list.iter().map(move |e| (m, e))
            })
        })
    }
}

/// `Arc::make_mut` for types that are `Clone` by hand (no `T: Clone` bound).
trait MakeMutClone<S> {
    fn make_mut_clone(this: &mut Arc<S>) -> &mut S;
}

impl<T> MakeMutClone<Subtable<T>> for Arc<Subtable<T>> {
    fn make_mut_clone(this: &mut Arc<Subtable<T>>) -> &mut Subtable<T> {
        if Arc::get_mut(this).is_none() {
            *this = Arc::new((**this).clone());
        }
        Arc::get_mut(this).expect("unique after clone")
    }
}

/// A value published to many readers; see the module docs.
#[derive(Debug)]
pub struct Published<T> {
    version: AtomicU64,
    current: Mutex<Arc<T>>,
}

impl<T> Published<T> {
    pub fn new(v: T) -> Arc<Self> {
        Arc::new(Published {
            version: AtomicU64::new(1),
            current: Mutex::new(Arc::new(v)),
        })
    }
    /// The current version (a writer's starting point).
    pub fn load(&self) -> Arc<T> {
        self.current.lock().clone()
    }
    /// Make `v` the current version. Readers pick it up on their next `get`.
    pub fn publish(&self, v: Arc<T>) {
        let mut cur = self.current.lock();
        *cur = v;
        self.version.fetch_add(1, Ordering::Release);
    }
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }
    /// A reader for one thread.
    pub fn reader(self: &Arc<Self>) -> Reader<T> {
        let version = self.version();
        Reader {
            snap: self.load(),
            shared: self.clone(),
            version,
        }
    }
}

/// One thread's view of a [`Published`] value.
#[derive(Debug)]
pub struct Reader<T> {
    shared: Arc<Published<T>>,
    version: u64,
    snap: Arc<T>,
}

impl<T> Reader<T> {
    /// The newest version: one atomic load when nothing changed.
    #[inline]
    pub fn get(&mut self) -> &Arc<T> {
        let v = self.shared.version.load(Ordering::Acquire);
        if v != self.version {
            self.snap = self.shared.load();
            self.version = v;
        }
        &self.snap
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::Field;
    use crate::text::parse::parse_match;

    fn m(s: &str) -> Match {
        parse_match(s).unwrap()
    }

    fn key(s: &str) -> FlowKey {
        m(s).key
    }

    #[test]
    fn highest_priority_wins_and_wildcards_grow_only_as_needed() {
        let mut c: Classifier<&str> = Classifier::new();
        c.insert(&m("ip"), 10, 1, Arc::new("ip"));
        c.insert(&m("tcp,tp_dst=80"), 100, 2, Arc::new("web"));
        c.insert(&m("ip,nw_src=10.0.0.0/8"), 50, 3, Arc::new("ten"));
        assert_eq!(c.n_subtables(), 3);

        let mut wc = FlowMask::default();
        let k = key("tcp,nw_src=10.1.1.1,tp_dst=80");
        assert_eq!(*c.lookup(&k, &mut wc).unwrap().value, "web");
        // Only the best subtable was needed: others cannot beat priority 100.
        assert_eq!(wc.get(Field::TP_DST), 0xffff);
        assert_eq!(wc.get(Field::NW_SRC), 0);

        let mut wc = FlowMask::default();
        let k = key("tcp,nw_src=10.1.1.1,tp_dst=22");
        assert_eq!(*c.lookup(&k, &mut wc).unwrap().value, "ten");
        assert_eq!(
            wc.get(Field::TP_DST),
            0xffff,
            "the miss on tp_dst is part of the answer"
        );
        assert_eq!(wc.get(Field::NW_SRC), 0xff00_0000);

        let mut wc = FlowMask::default();
        assert!(c.lookup(&key("arp"), &mut wc).is_none());
        assert_eq!(wc.get(Field::DL_TYPE), 0xffff);
    }

    #[test]
    fn filtered_subtables_consult_only_their_filter_word() {
        let mut c: Classifier<&str> = Classifier::new();
        for (i, (net, name)) in [("10", "ten"), ("11", "eleven"), ("13", "thirteen")]
            .iter()
            .enumerate()
        {
            c.insert(
                &m(&format!("tcp,nw_src={net}.0.0.0/8,tp_dst=80")),
                10,
                i as u64,
                Arc::new(*name),
            );
        }
        // The rules differ only in nw_src, so that is the filter word, and a
        // packet from elsewhere is turned away after consulting only the /8.
        let mut rejected = 0;
        for net in 20..60u32 {
            let mut wc = FlowMask::default();
            let k = key(&format!("tcp,nw_src={net}.1.1.1,tp_dst=80"));
            assert!(c.lookup(&k, &mut wc).is_none());
            if wc.get(Field::TP_DST) == 0 {
                assert_eq!(wc.get(Field::NW_SRC), 0xff00_0000);
                assert_eq!(wc.get(Field::DL_TYPE), 0, "nor dl_type");
                rejected += 1;
            }
        }
        assert!(
            rejected >= 30,
            "the filter turned away only {rejected} of 40"
        );
        let mut wc = FlowMask::default();
        assert_eq!(
            *c.lookup(&key("tcp,nw_src=10.1.1.1,tp_dst=80"), &mut wc)
                .unwrap()
                .value,
            "ten"
        );
        assert_eq!(wc.get(Field::TP_DST), 0xffff);
        // After a removal the filter is rebuilt and forgets the value.
        c.remove(&m("tcp,nw_src=10.0.0.0/8,tp_dst=80"), 10);
        let st = &c.subtables[0];
        assert!(
            st.filter_rejects(&key("tcp,nw_src=10.1.1.1,tp_dst=80")) || {
                // Unless 10/8 collides with a remaining value in the filter.
                let (i, b) = st.bloom_bit(0x0a00_0000u64 << 32);
                st.bloom[i] & b != 0
            }
        );
        assert_eq!(
            *c.lookup(&key("tcp,nw_src=13.1.1.1,tp_dst=80"), &mut wc)
                .unwrap()
                .value,
            "thirteen"
        );
    }

    #[test]
    fn replace_same_match_and_priority_then_remove() {
        let mut c: Classifier<u32> = Classifier::new();
        assert!(c.insert(&m("ip"), 5, 1, Arc::new(1)).is_none());
        assert_eq!(c.insert(&m("ip"), 5, 2, Arc::new(2)).as_deref(), Some(&1));
        assert_eq!(c.len(), 1);
        c.insert(&m("ip"), 6, 3, Arc::new(3));
        assert_eq!(c.len(), 2);
        let mut wc = FlowMask::default();
        assert_eq!(*c.lookup(&key("ip"), &mut wc).unwrap().value, 3);
        assert_eq!(c.remove(&m("ip"), 6).as_deref(), Some(&3));
        assert_eq!(*c.lookup(&key("ip"), &mut wc).unwrap().value, 2);
        assert!(c.remove(&m("ip"), 6).is_none());
        assert_eq!(c.remove(&m("ip"), 5).as_deref(), Some(&2));
        assert!(c.is_empty());
        assert_eq!(c.n_subtables(), 0);
    }

    #[test]
    fn large_subtables_across_chunks_stay_consistent_and_copy_on_write() {
        // 700 buckets span three chunks; removals move buckets across them.
        let rule = |i: u32| m(&format!("ip,nw_src=10.{}.{}.0/24", i / 256, i % 256));
        let pkt = |i: u32| key(&format!("ip,nw_src=10.{}.{}.7", i / 256, i % 256));
        let mut c: Classifier<u32> = Classifier::new();
        for i in 0..700u32 {
            c.insert(&rule(i), 1, i as u64, Arc::new(i));
        }
        let before = c.clone();
        for i in (0..700u32).filter(|i| i % 7 == 3 || *i >= 650) {
            assert_eq!(c.remove(&rule(i), 1).map(|v| *v), Some(i));
        }
        c.insert(&rule(3), 9, 1000, Arc::new(3000));
        for i in 0..700u32 {
            let mut wc = FlowMask::default();
            let got = c.lookup(&pkt(i), &mut wc).map(|e| *e.value);
            let want = if i == 3 {
                Some(3000)
            } else if i % 7 == 3 || i >= 650 {
                None
            } else {
                Some(i)
            };
            assert_eq!(got, want, "rule {i}");
            // The earlier version is untouched by all of that.
            assert_eq!(before.lookup(&pkt(i), &mut wc).map(|e| *e.value), Some(i));
        }
        assert_eq!(c.iter().count(), c.len());
    }

    #[test]
    fn equal_priority_first_added_wins() {
        let mut c: Classifier<u32> = Classifier::new();
        c.insert(&m("ip,nw_src=1.1.1.1"), 5, 10, Arc::new(10));
        c.insert(&m("ip,nw_dst=2.2.2.2"), 5, 11, Arc::new(11));
        let mut wc = FlowMask::default();
        assert_eq!(
            *c.lookup(&key("ip,nw_src=1.1.1.1,nw_dst=2.2.2.2"), &mut wc)
                .unwrap()
                .value,
            10
        );
    }

    #[test]
    fn bucket_removal_keeps_other_buckets_reachable() {
        let mut c: Classifier<u32> = Classifier::new();
        for i in 0..50u32 {
            c.insert(
                &m(&format!("ip,nw_src=10.0.0.{i}")),
                1,
                i as u64,
                Arc::new(i),
            );
        }
        for i in (0..50u32).step_by(3) {
            assert!(c.remove(&m(&format!("ip,nw_src=10.0.0.{i}")), 1).is_some());
        }
        for i in 0..50u32 {
            let mut wc = FlowMask::default();
            let r = c
                .lookup(&key(&format!("ip,nw_src=10.0.0.{i}")), &mut wc)
                .map(|e| *e.value);
            assert_eq!(r, if i % 3 == 0 { None } else { Some(i) });
        }
        assert_eq!(c.iter().count(), c.len());
    }

    #[test]
    fn old_versions_stay_valid_while_new_ones_publish() {
        let mut c: Classifier<u32> = Classifier::new();
        c.insert(&m("ip"), 1, 1, Arc::new(1));
        let p = Published::new(c.clone());
        let mut r = p.reader();
        let old = r.get().clone();
        c.insert(&m("ip"), 2, 2, Arc::new(2));
        p.publish(Arc::new(c));
        let mut wc = FlowMask::default();
        assert_eq!(
            *old.lookup(&key("ip"), &mut wc).unwrap().value,
            1,
            "old snapshot unchanged"
        );
        assert_eq!(
            *r.get().lookup(&key("ip"), &mut wc).unwrap().value,
            2,
            "reader sees the new one"
        );
    }

    #[test]
    fn readers_run_while_a_writer_publishes() {
        // Readers spin on lookups while the writer publishes 200 versions;
        // each reader must see versions only move forward and must reach the
        // last one without the writer ever waiting for it.
        let p = Published::new(Classifier::<u32>::new());
        let mut handles = Vec::new();
        for _ in 0..2 {
            let mut r = p.reader();
            handles.push(std::thread::spawn(move || {
                let mut seen_max = 0u32;
                let mut lookups = 0u64;
                let k = key("ip");
                while seen_max < 200 {
                    let mut wc = FlowMask::default();
                    if let Some(e) = r.get().lookup(&k, &mut wc) {
                        assert!(*e.value >= seen_max, "versions never go backwards");
                        seen_max = *e.value;
                    }
                    lookups += 1;
                }
                lookups
            }));
        }
        let mut c = Classifier::new();
        for i in 1..=200u32 {
            c.insert(&m("ip"), i as u16, i as u64, Arc::new(i));
            p.publish(Arc::new(c.clone()));
        }
        for h in handles {
            assert!(h.join().unwrap() >= 1);
        }
    }
}
