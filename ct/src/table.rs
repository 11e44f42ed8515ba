//! The connection table: shards of (index, slab, timing wheel).
//!
//! # Layout
//! The table is split into a fixed power-of-two number of shards, each behind
//! its own mutex (cache-line padded, so two threads on two shards share no
//! line). Within a shard:
//! - `conns`: a slab of [`Conn`] records, addressed by slot number;
//! - `index`: a hashbrown `HashTable<u32>` whose entries are `slot << 1 | dir`:
//!   one entry for the original key, one for the reply key. Entries are four
//!   bytes; the key itself is compared against the record in the slab;
//! - `wheel`: the expiry wheel for the shard's connections.
//!
//! # Which shard
//! The shard comes from a *direction-symmetric* hash (the key put in a
//! canonical order first), so a packet and its reply land in the same shard
//! and one lock covers the whole connection. The bucket hash inside the shard
//! adds the direction back, so the two entries of a connection differ.
//! Both are keyed with the tracker's random seed (hash-flood resistance).
//! Each shard's index and slab grow with the number of connections.
//!
//! Connections whose reply tuple is not the reversed original (NAT) keep the
//! reply tuple in `ConnExt`; the NAT stage chooses reply tuples in the same
//! shard or adds a cross-shard entry (the entry's high bit is reserved).

use hashbrown::HashTable;

use crate::conn::Conn;
use crate::expiry::Wheel;
use crate::key::{icmp_is_request, icmp_reply_type, ConnKey, Dir};

/// Where a key lives: shard number and in-shard hash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyHash {
    pub shard: usize,
    pub hash: u64,
}

/// Hash a key for lookup in a table with `shard_mask + 1` shards.
#[inline]
pub fn key_hash(k: &ConnKey, seed: u64, shard_mask: usize) -> KeyHash {
    let mut c = *k;
    let swapped;
    if k.is_icmp() {
        // Both directions share the id; the type differs (request/reply):
        // use the request type in the canonical form.
        let ty = k.icmp_type();
        if !icmp_is_request(k.family, ty) {
            if let Some(req) = icmp_reply_type(k.family, ty) {
                c.dst_port = (req as u16) << 8 | (k.dst_port & 0xff);
            }
        }
        swapped = k.src > k.dst;
        if swapped {
            c.src = k.dst;
            c.dst = k.src;
        }
    } else {
        swapped = (k.src, k.src_port) > (k.dst, k.dst_port);
        if swapped {
            c.src = k.dst;
            c.dst = k.src;
            c.src_port = k.dst_port;
            c.dst_port = k.src_port;
        }
    }
    let h = c.hash(seed);
    let shard = (h >> 40) as usize & shard_mask;
    let hash = if swapped {
        (h ^ 0xa5a5_a5a5_5a5a_5a5a).rotate_left(27)
    } else {
        h
    };
    KeyHash { shard, hash }
}

/// Counters kept per shard under its lock.
#[derive(Clone, Copy, Debug, Default)]
pub struct ShardStats {
    pub inserts: u64,
    pub early_drops: u64,
    pub refused: u64,
    pub expired: u64,
    pub deleted: u64,
}

/// One shard of the connection table.
pub struct Shard {
    index: HashTable<u32>,
    conns: Vec<Option<Conn>>,
    free: Vec<u32>,
    pub(crate) wheel: Wheel,
    pub(crate) evict_cursor: u32,
    next_id: u32,
    pub(crate) stats: ShardStats,
}

#[inline]
fn entry(slot: u32, dir: Dir) -> u32 {
    slot << 1 | dir as u32
}

#[inline]
fn entry_dir(e: u32) -> Dir {
    if e & 1 == 0 {
        Dir::Orig
    } else {
        Dir::Reply
    }
}

impl Shard {
    /// An empty shard; `id_base` makes connection ids unique across shards.
    pub fn new(id_base: u32, now_s: u32) -> Shard {
        Shard {
            index: HashTable::new(),
            conns: Vec::new(),
            free: Vec::new(),
            wheel: Wheel::new(now_s),
            evict_cursor: 0,
            next_id: id_base,
            stats: ShardStats::default(),
        }
    }

    /// Live connections in this shard.
    pub fn len(&self) -> usize {
        self.conns.len() - self.free.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Find the connection a packet with `key` belongs to, and its direction.
    #[inline]
    pub fn lookup(&self, key: &ConnKey, hash: u64) -> Option<(u32, Dir)> {
        let conns = &self.conns;
        self.index
            .find(hash, |&e| match conns.get((e >> 1) as usize) {
                Some(Some(c)) => match entry_dir(e) {
                    Dir::Orig => c.key == *key,
                    Dir::Reply => c.reply_key() == *key,
                },
                _ => false,
            })
            .map(|&e| (e >> 1, entry_dir(e)))
    }

    #[inline]
    pub fn get(&self, slot: u32) -> Option<&Conn> {
        self.conns.get(slot as usize).and_then(Option::as_ref)
    }
    #[inline]
    pub fn get_mut(&mut self, slot: u32) -> Option<&mut Conn> {
        self.conns.get_mut(slot as usize).and_then(Option::as_mut)
    }

    /// Iterate live connections with their slots.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Conn)> {
        self.conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().map(|c| (i as u32, c)))
    }

    /// Number of slab slots (live or free), for bounded scans.
    pub fn capacity_slots(&self) -> u32 {
        self.conns.len() as u32
    }

    /// Insert a connection whose keys hash into this shard; files it on the
    /// wheel at its expiry and gives it an id. Returns its slot.
    pub fn insert(&mut self, mut conn: Conn, now_s: u32, seed: u64, mask: usize) -> u32 {
        self.wheel.restart(now_s);
        self.next_id = self.next_id.wrapping_add(mask as u32 + 1);
        conn.id = self.next_id;
        let orig = conn.key;
        let reply = conn.reply_key();
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.conns.push(None);
                self.conns.len() as u32 - 1
            }
        };
        conn.sched = self.wheel.file(slot, conn.expire.wrapping_add(1));
        self.conns[slot as usize] = Some(conn);
        let Shard { index, conns, .. } = self;
        let rehash = |e: &u32| match conns.get((*e >> 1) as usize) {
            Some(Some(c)) => key_hash(&c.dir_key(entry_dir(*e)), seed, mask).hash,
            _ => 0,
        };
        index.insert_unique(
            key_hash(&orig, seed, mask).hash,
            entry(slot, Dir::Orig),
            rehash,
        );
        index.insert_unique(
            key_hash(&reply, seed, mask).hash,
            entry(slot, Dir::Reply),
            rehash,
        );
        self.stats.inserts += 1;
        slot
    }

    /// Remove a connection, returning it.
    pub fn remove(&mut self, slot: u32, seed: u64, mask: usize) -> Option<Conn> {
        let conn = self.conns.get_mut(slot as usize)?.take()?;
        for dir in [Dir::Orig, Dir::Reply] {
            let h = key_hash(&conn.dir_key(dir), seed, mask).hash;
            if let Ok(e) = self.index.find_entry(h, |&e| e == entry(slot, dir)) {
                e.remove();
            }
        }
        self.free.push(slot);
        self.stats.deleted += 1;
        // Give memory back when the shard has emptied out a lot.
        if self.free.len() > 1024 && self.free.len() * 2 > self.conns.len() {
            self.compact_tail(seed, mask);
        }
        Some(conn)
    }

    /// Drop trailing free slots from the slab.
    fn compact_tail(&mut self, seed: u64, mask: usize) {
        while matches!(self.conns.last(), Some(None)) {
            self.conns.pop();
        }
        let len = self.conns.len() as u32;
        self.free.retain(|&s| s < len);
        self.conns.shrink_to_fit();
        let Shard { index, conns, .. } = self;
        index.shrink_to_fit(|e| match conns.get((*e >> 1) as usize) {
            Some(Some(c)) => key_hash(&c.dir_key(entry_dir(*e)), seed, mask).hash,
            _ => 0,
        });
    }

    /// File a connection again at its current expiry (after the wheel
    /// reached its old tick, or when its timeout shrank).
    pub fn refile(&mut self, slot: u32) {
        let Some(expire) = self.get(slot).map(|c| c.expire) else {
            return;
        };
        let tick = self.wheel.file(slot, expire.wrapping_add(1));
        if let Some(c) = self.get_mut(slot) {
            c.sched = tick;
        }
    }
}
