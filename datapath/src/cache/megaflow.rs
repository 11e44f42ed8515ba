//! The megaflow cache: masked keys, searched by tuple space (OVS's dpcls).
//!
//! Megaflows with the same mask share a [`Subtable`]: a hash table of
//! masked keys. A lookup visits subtables in order of recent hits, masks
//! the packet's key with the subtable's mask (only the words the mask
//! touches) and probes. Megaflows installed by translation never overlap
//! for a given packet (each is exactly "the packets that would translate
//! the same way"), so the first hit is the answer.
//!
//! Megaflows live in slots; a [`FlowRef`] names one (slot + epoch), and the
//! epoch moves on removal so stale exact-match entries miss.

use std::sync::Arc;

use hashbrown::HashTable;

use super::FlowRef;
use crate::flow::{FlowKey, FLOW_WORDS};
use crate::program::Op;

/// Default bound on megaflows per thread (OVS's `flow-limit` default).
pub const DEFAULT_MAX_MEGAFLOWS: usize = 200_000;

/// One cached translation.
#[derive(Debug)]
pub struct Megaflow {
    /// The key, masked.
    pub key: FlowKey,
    pub mask: FlowKey,
    pub ops: Box<[Op]>,
    /// Rules whose counters this megaflow's traffic feeds.
    pub rules: Vec<Arc<ofproto::Rule>>,
    pub packets: u64,
    pub bytes: u64,
    /// Traffic already credited to the rules.
    pub credited: (u64, u64),
    pub used_ms: u64,
    pub created_ms: u64,
}

struct Slot {
    epoch: u32,
    subtable: u16,
    flow: Option<Megaflow>,
}

/// Megaflows sharing one mask.
struct Subtable {
    mask: FlowKey,
    /// Indices of the mask's non-zero words.
    words: [u8; FLOW_WORDS],
    n_words: u8,
    /// Slots of this subtable's megaflows, by masked-key hash.
    table: HashTable<u32>,
    hits: u64,
}

#[inline(always)]
fn mix(h: u64, w: u64) -> u64 {
    let p = u128::from(h ^ w) * 0x9e37_79b9_7f4a_7c15u128;
    (p as u64) ^ ((p >> 64) as u64)
}

/// Hash of `key & mask` over the mask's non-zero `words`.
#[inline(always)]
fn masked_hash(key: &FlowKey, mask: &FlowKey, words: &[u8]) -> u64 {
    let (k, m) = (key.words(), mask.words());
    let mut h = 0x243f_6a88_85a3_08d3u64;
    for &i in words {
        h = mix(h, k[i as usize] & m[i as usize]);
    }
    h
}

impl Subtable {
    fn new(mask: &FlowKey) -> Subtable {
        let mut words = [0u8; FLOW_WORDS];
        let mut n = 0;
        for (i, w) in mask.words().iter().enumerate() {
            if *w != 0 {
                words[n] = i as u8;
                n += 1;
            }
        }
        Subtable {
            mask: *mask,
            words,
            n_words: n as u8,
            table: HashTable::new(),
            hits: 0,
        }
    }

    /// Hash of `key` under this subtable's mask (`key` need not be masked).
    #[inline(always)]
    fn hash(&self, key: &FlowKey) -> u64 {
        masked_hash(key, &self.mask, &self.words[..self.n_words as usize])
    }

    /// Does `key` under this mask equal the masked key `stored`?
    #[inline(always)]
    fn matches(&self, key: &FlowKey, stored: &FlowKey) -> bool {
        let (k, m, s) = (key.words(), self.mask.words(), stored.words());
        self.words[..self.n_words as usize]
            .iter()
            .all(|&i| k[i as usize] & m[i as usize] == s[i as usize])
    }
}

/// The megaflow cache of one poll-mode thread.
pub struct MegaflowCache {
    slots: Vec<Slot>,
    free: Vec<u32>,
    subtables: Vec<Subtable>,
    len: usize,
    max_flows: usize,
    lookups: u32,
    /// Subtables visited by lookups that hit (for "avg. subtable lookups
    /// per megaflow hit").
    pub subtables_visited: u64,
}

impl MegaflowCache {
    /// An empty cache holding at most `max_flows` megaflows.
    pub fn new(max_flows: usize) -> Self {
        MegaflowCache {
            slots: Vec::new(),
            free: Vec::new(),
            subtables: Vec::new(),
            len: 0,
            max_flows,
            lookups: 0,
            subtables_visited: 0,
        }
    }

    /// Number of megaflows.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// No room for another megaflow.
    pub fn is_full(&self) -> bool {
        self.len >= self.max_flows
    }

    /// Number of distinct masks.
    pub fn n_subtables(&self) -> usize {
        self.subtables.len()
    }

    /// The megaflow matching `key`.
    #[inline]
    pub fn lookup(&mut self, key: &FlowKey) -> Option<FlowRef> {
        self.lookups = self.lookups.wrapping_add(1);
        if self.lookups.is_multiple_of(4096) {
            self.sort_subtables();
        }
        let slots = &self.slots;
        for (n, st) in self.subtables.iter_mut().enumerate() {
            let h = st.hash(key);
            let hit = st.table.find(h, |&s| {
                slots[s as usize]
                    .flow
                    .as_ref()
                    .is_some_and(|f| st.matches(key, &f.key))
            });
            if let Some(&s) = hit {
                st.hits += 1;
                self.subtables_visited += n as u64 + 1;
                return Some(FlowRef {
                    slot: s,
                    epoch: slots[s as usize].epoch,
                });
            }
        }
        None
    }

    /// Busiest subtables first (OVS re-sorts its dpcls every second).
    fn sort_subtables(&mut self) {
        self.subtables.sort_by_key(|st| std::cmp::Reverse(st.hits));
        for st in &mut self.subtables {
            st.hits /= 2;
        }
        for (i, st) in self.subtables.iter().enumerate() {
            for &s in st.table.iter() {
                self.slots[s as usize].subtable = i as u16;
            }
        }
    }

    /// Is `r` still the megaflow it was when looked up?
    #[inline(always)]
    pub fn is_live(&self, r: FlowRef) -> bool {
        self.slots
            .get(r.slot as usize)
            .is_some_and(|s| s.epoch == r.epoch && s.flow.is_some())
    }

    /// The megaflow `r` names, if live.
    #[inline(always)]
    pub fn get(&self, r: FlowRef) -> Option<&Megaflow> {
        let s = self.slots.get(r.slot as usize)?;
        if s.epoch == r.epoch {
            s.flow.as_ref()
        } else {
            None
        }
    }

    /// The megaflow `r` names, mutably.
    #[inline(always)]
    pub fn get_mut(&mut self, r: FlowRef) -> Option<&mut Megaflow> {
        let s = self.slots.get_mut(r.slot as usize)?;
        if s.epoch == r.epoch {
            s.flow.as_mut()
        } else {
            None
        }
    }

    /// Install a megaflow (its key is masked here). None when the cache is
    /// full: the caller executes the translation once without caching it.
    pub fn insert(&mut self, mut flow: Megaflow) -> Option<FlowRef> {
        if self.len >= self.max_flows {
            return None;
        }
        flow.key = flow.key.masked(&flow.mask);
        let st_idx = match self.subtables.iter().position(|s| s.mask == flow.mask) {
            Some(i) => i,
            None => {
                self.subtables.push(Subtable::new(&flow.mask));
                self.subtables.len() - 1
            }
        };
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot {
                    epoch: 0,
                    subtable: 0,
                    flow: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let st = &mut self.subtables[st_idx];
        let h = st.hash(&flow.key);
        let s = &mut self.slots[slot as usize];
        s.subtable = st_idx as u16;
        s.flow = Some(flow);
        let slots = &self.slots;
        let (mask, words) = (&st.mask, &st.words[..st.n_words as usize]);
        st.table.insert_unique(h, slot, |&x| {
            slots[x as usize]
                .flow
                .as_ref()
                .map_or(0, |f| masked_hash(&f.key, mask, words))
        });
        self.len += 1;
        Some(FlowRef {
            slot,
            epoch: self.slots[slot as usize].epoch,
        })
    }

    /// Remove a megaflow; returns it (for its final statistics).
    pub fn remove(&mut self, r: FlowRef) -> Option<Megaflow> {
        let s = self.slots.get_mut(r.slot as usize)?;
        if s.epoch != r.epoch {
            return None;
        }
        let flow = s.flow.take()?;
        s.epoch = s.epoch.wrapping_add(1);
        let st_idx = s.subtable as usize;
        let st = &mut self.subtables[st_idx];
        let h = st.hash(&flow.key);
        if let Ok(e) = st.table.find_entry(h, |&x| x == r.slot) {
            e.remove();
        }
        if st.table.is_empty() {
            self.subtables.swap_remove(st_idx);
            if let Some(moved) = self.subtables.get(st_idx) {
                for &x in moved.table.iter() {
                    self.slots[x as usize].subtable = st_idx as u16;
                }
            }
        }
        self.free.push(r.slot);
        self.len -= 1;
        Some(flow)
    }

    /// Every live megaflow's reference.
    pub fn refs(&self) -> Vec<FlowRef> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.flow.is_some())
            .map(|(i, s)| FlowRef {
                slot: i as u32,
                epoch: s.epoch,
            })
            .collect()
    }

    /// Remove everything, returning the megaflows (for their statistics).
    pub fn drain(&mut self) -> Vec<Megaflow> {
        let refs = self.refs();
        refs.into_iter().filter_map(|r| self.remove(r)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::PortNo;

    fn flow(key: FlowKey, mask: FlowKey, port: u32) -> Megaflow {
        Megaflow {
            key,
            mask,
            ops: vec![Op::Output(PortNo(port))].into_boxed_slice(),
            rules: Vec::new(),
            packets: 0,
            bytes: 0,
            credited: (0, 0),
            used_ms: 0,
            created_ms: 0,
        }
    }

    fn key(src: u32, dst: u32, port: u16) -> FlowKey {
        let mut k = FlowKey::ZERO;
        k.set_dl_type(0x0800);
        k.set_nw_src(src);
        k.set_nw_dst(dst);
        k.set_tp_dst(port);
        k
    }

    fn mask_dst() -> FlowKey {
        let mut m = FlowKey::ZERO;
        m.set_dl_type(0xffff);
        m.set_nw_dst(0xffff_ff00);
        m
    }

    fn mask_port() -> FlowKey {
        let mut m = FlowKey::ZERO;
        m.set_dl_type(0xffff);
        m.set_tp_dst(0xffff);
        m
    }

    #[test]
    fn masked_lookup_hits_any_key_agreeing_on_the_mask() {
        let mut c = MegaflowCache::new(10);
        let r = c
            .insert(flow(key(1, 0x0a000005, 80), mask_dst(), 2))
            .unwrap();
        assert_eq!(c.lookup(&key(9, 0x0a0000ff, 443)), Some(r));
        assert_eq!(c.lookup(&key(9, 0x0a0001ff, 443)), None);
        assert_eq!(c.get(r).unwrap().key.nw_dst(), 0x0a000000, "stored masked");
    }

    #[test]
    fn several_masks_and_removal_invalidates_the_ref() {
        let mut c = MegaflowCache::new(10);
        let a = c
            .insert(flow(key(0, 0x0a000000, 0), mask_dst(), 2))
            .unwrap();
        let b = c.insert(flow(key(0, 0, 53), mask_port(), 3)).unwrap();
        assert_eq!(c.n_subtables(), 2);
        assert_eq!(c.lookup(&key(1, 0x0b000000, 53)), Some(b));
        assert!(c.remove(a).is_some());
        assert!(!c.is_live(a));
        assert!(c.get(a).is_none());
        assert_eq!(c.n_subtables(), 1);
        assert_eq!(c.lookup(&key(1, 0x0a000001, 1)), None);
        assert_eq!(c.lookup(&key(1, 0x0a000001, 53)), Some(b));
        // The freed slot is reused with a new epoch: the old ref stays dead.
        let a2 = c
            .insert(flow(key(0, 0x0c000000, 0), mask_dst(), 4))
            .unwrap();
        assert_eq!(a2.slot, a.slot);
        assert_ne!(a2.epoch, a.epoch);
        assert!(!c.is_live(a));
        assert!(c.remove(a).is_none());
    }

    #[test]
    fn full_cache_refuses() {
        let mut c = MegaflowCache::new(2);
        for i in 0..2 {
            assert!(c.insert(flow(key(0, 0, i), mask_port(), 1)).is_some());
        }
        assert!(c.insert(flow(key(0, 0, 9), mask_port(), 1)).is_none());
        assert_eq!(c.len(), 2);
        assert_eq!(c.drain().len(), 2);
        assert!(c.is_empty());
        assert_eq!(c.n_subtables(), 0);
    }

    #[test]
    fn many_flows_one_mask_all_found_after_sorting() {
        let mut c = MegaflowCache::new(100_000);
        let mut m = FlowKey::ZERO;
        m.set_nw_src(u32::MAX);
        let refs: Vec<_> = (0..5000u32)
            .map(|i| c.insert(flow(key(i, 0, 0), m, 1)).unwrap())
            .collect();
        c.insert(flow(key(0, 0, 7), mask_port(), 1)).unwrap();
        for _ in 0..2 {
            for (i, r) in refs.iter().enumerate() {
                assert_eq!(c.lookup(&key(i as u32, 5, 5)), Some(*r));
            }
        }
    }
}
