//! The connection table: shards of (index, slab, timing wheel).
//!
//! # Layout
//! The table is split into a fixed power-of-two number of shards, each behind
//! its own mutex (cache-line padded, so two threads on two shards share no
//! line). Within a shard:
//! - `conns`: a slab of [`Conn`] records, addressed by slot number;
//! - `index`: an open-addressing [`Index`] of 8-byte entries (hash tag and
//!   slot reference); the key itself is compared against the record;
//! - `wheel`: the expiry wheel for the shard's connections.
//!
//! # Which shard
//! Keys are hashed *direction-symmetrically* (the key put in a canonical
//! order first, keyed with the tracker's random seed against hash floods),
//! so a packet and its reply have the same hash: they land in the same
//! shard, one lock covers the whole connection, and **one index entry**
//! (`slot << 1`) finds the connection from either direction; the direction
//! comes from comparing the packet's key with the stored original key.
//! Each shard's index and slab grow with the number of connections.
//!
//! A connection whose reply tuple is not the reversed original (NAT) keeps
//! the reply tuple in `ConnExt` and gets a second entry (`slot << 1 | 1`)
//! under the reply tuple's hash. The reply tuple usually hashes to another
//! shard: that shard then holds a *remote reference* (an index entry with
//! the high bit [`REMOTE`] set, naming a [`RemoteRef`]: the reply tuple and
//! the shard holding the connection). A lookup that lands on one reports
//! the home shard ([`Shard::lookup`] returns `REMOTE | home`); the tracker
//! then looks the packet up again under the home shard's lock, where the
//! connection's own reply entry finds it. Remote references are added when
//! the NAT binding is chosen (both shards locked) and removed after the
//! connection is (see `Tracker::drain_unlinks`); each carries a generation
//! so a late removal never takes a newer reference for the same tuple.

use crate::conn::{Conn, ConnStatus};
use crate::expiry::Wheel;
use crate::index::Index;
use crate::key::{icmp_is_request, icmp_reply_type, ConnKey, Dir};
use crate::slab::Slab;

/// Where a key lives: shard number and in-shard hash (the same for a key
/// and its reverse).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyHash {
    pub shard: usize,
    pub hash: u64,
}

/// Hash a key for lookup in a table with `shard_mask + 1` shards.
#[inline]
pub fn key_hash(k: &ConnKey, seed: u64, shard_mask: usize) -> KeyHash {
    let mut c = *k;
    if k.is_icmp() {
        // Both directions share the id; the type differs (request/reply):
        // use the request type in the canonical form.
        let ty = k.icmp_type();
        if !icmp_is_request(k.family, ty) {
            if let Some(req) = icmp_reply_type(k.family, ty) {
                c.dst_port = (req as u16) << 8 | (k.dst_port & 0xff);
            }
        }
        if u128::from_be_bytes(k.src) > u128::from_be_bytes(k.dst) {
            c.src = k.dst;
            c.dst = k.src;
        }
    } else if (u128::from_be_bytes(k.src), k.src_port) > (u128::from_be_bytes(k.dst), k.dst_port) {
        c.src = k.dst;
        c.dst = k.src;
        c.src_port = k.dst_port;
        c.dst_port = k.src_port;
    }
    let hash = c.hash(seed);
    KeyHash {
        shard: (hash >> 40) as usize & shard_mask,
        hash,
    }
}

/// Index-entry bit of a remote reference; also set in the slot
/// [`Shard::lookup`] returns for one, with the home shard in the low bits.
pub const REMOTE: u32 = 1 << 31;

/// A reply tuple whose connection lives in another shard (NAT).
#[derive(Clone, Copy, Debug)]
pub struct RemoteRef {
    pub key: ConnKey,
    /// Shard holding the connection.
    pub home: u32,
    /// Tells this reference from a later one for the same tuple.
    pub gen: u32,
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
    index: Index,
    conns: Slab,
    pub(crate) wheel: Wheel,
    pub(crate) evict_cursor: u32,
    /// Next slot the pressure reaper looks at (see `crate::pressure`).
    pub(crate) reap_cursor: u32,
    /// This shard's number in the table (part of connection ids).
    shard_no: u32,
    pub(crate) stats: ShardStats,
    /// Remote references (index value `REMOTE | position`); free
    /// positions are `None`.
    remotes: Vec<Option<RemoteRef>>,
    remotes_free: Vec<u32>,
}

/// Index entry of a connection: found from both directions.
#[inline]
fn entry_both(slot: u32) -> u32 {
    slot << 1
}

/// Index entry for a NAT reply tuple (hashes differently from the original).
#[inline]
fn entry_nat_reply(slot: u32) -> u32 {
    slot << 1 | 1
}

/// Whether a connection needs a separate reply entry (NAT).
#[inline]
fn has_nat_reply(c: &Conn) -> bool {
    c.ext.as_deref().is_some_and(|e| e.reply.is_some())
}

impl Shard {
    /// An empty shard, number `shard_no` of the table.
    pub fn new(shard_no: u32, now_s: u32) -> Shard {
        Shard {
            index: Index::default(),
            conns: Slab::default(),
            wheel: Wheel::new(now_s),
            evict_cursor: 0,
            reap_cursor: 0,
            shard_no,
            stats: ShardStats::default(),
            remotes: Vec::new(),
            remotes_free: Vec::new(),
        }
    }

    /// This shard's number in the table.
    pub fn number(&self) -> u32 {
        self.shard_no
    }

    /// Live connections in this shard.
    pub fn len(&self) -> usize {
        self.conns.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by (records, index, wheel).
    pub fn bytes(&self) -> (usize, usize, usize) {
        (
            self.conns.bytes() + self.remotes.capacity() * std::mem::size_of::<Option<RemoteRef>>(),
            self.index.bytes(),
            self.wheel.bytes(),
        )
    }

    /// Find the connection a packet with `key` belongs to, and its direction.
    /// A remote reference answers `(REMOTE | home shard, Dir::Reply)`.
    #[inline]
    pub fn lookup(&self, key: &ConnKey, hash: u64) -> Option<(u32, Dir)> {
        let conns = &self.conns;
        let mut dir = Dir::Orig;
        self.index
            .find(hash, |e| match conns.get(e >> 1) {
                Some(c) if e & 1 == 1 => {
                    dir = Dir::Reply;
                    c.reply_key() == *key
                }
                Some(c) if c.key == *key => {
                    dir = Dir::Orig;
                    true
                }
                Some(c) if !has_nat_reply(c) => {
                    dir = Dir::Reply;
                    c.key.reverse() == *key
                }
                Some(_) => false,
                None => self.remote(e).is_some_and(|r| r.key == *key),
            })
            .map(|e| match self.remote(e) {
                Some(r) => (REMOTE | r.home, Dir::Reply),
                None => (e >> 1, dir),
            })
    }

    /// The remote reference an index value names, if it names one.
    #[inline]
    fn remote(&self, e: u32) -> Option<&RemoteRef> {
        if e & REMOTE == 0 {
            return None;
        }
        self.remotes
            .get((e & !REMOTE) as usize)
            .and_then(|r| r.as_ref())
    }

    /// Find the connection an ICMP error's embedded packet (`key`, as it
    /// was sent) belongs to: `(slot, direction the embedded packet
    /// travelled, translated)` where `translated` says the embedded packet
    /// was seen on the far side of the connection's NAT (its tuple is the
    /// reverse of the other direction's key), so the error must be
    /// translated back. Remote references answer `(REMOTE | home, ..)`.
    pub fn lookup_embedded(&self, key: &ConnKey, hash: u64) -> Option<(u32, Dir, bool)> {
        let conns = &self.conns;
        let mut found = (Dir::Orig, false);
        self.index
            .find(hash, |e| match conns.get(e >> 1) {
                Some(c) if e & 1 == 1 => {
                    let r = c.reply_key();
                    if r == *key {
                        found = (Dir::Reply, false);
                        true
                    } else if r.reverse() == *key {
                        found = (Dir::Orig, true);
                        true
                    } else {
                        false
                    }
                }
                Some(c) if c.key == *key => {
                    found = (Dir::Orig, false);
                    true
                }
                Some(c) if c.key.reverse() == *key => {
                    found = (Dir::Reply, has_nat_reply(c));
                    true
                }
                Some(_) => false,
                None => self
                    .remote(e)
                    .is_some_and(|r| r.key == *key || r.key.reverse() == *key),
            })
            .map(|e| match self.remote(e) {
                Some(r) => (REMOTE | r.home, Dir::Reply, false),
                None => (e >> 1, found.0, found.1),
            })
    }

    /// Add a remote reference for `r.key` (hashing to `hash`, in this
    /// shard); the caller checked the tuple is free here.
    pub fn add_remote(&mut self, r: RemoteRef, hash: u64) {
        let pos = match self.remotes_free.pop() {
            Some(p) => {
                self.remotes[p as usize] = Some(r);
                p
            }
            None => {
                self.remotes.push(Some(r));
                (self.remotes.len() - 1) as u32
            }
        };
        self.index.insert(hash, REMOTE | pos);
    }

    /// Remove the remote reference for `key` if it names `home` (and, with
    /// `gen`, that generation). Returns whether one was removed.
    pub fn remove_remote(&mut self, key: &ConnKey, hash: u64, home: u32, gen: Option<u32>) -> bool {
        let remotes = &self.remotes;
        let hit = self.index.find(hash, |e| {
            e & REMOTE != 0
                && remotes
                    .get((e & !REMOTE) as usize)
                    .and_then(|r| r.as_ref())
                    .is_some_and(|r| {
                        r.key == *key && r.home == home && gen.is_none_or(|g| g == r.gen)
                    })
        });
        let Some(e) = hit else { return false };
        self.index.remove(hash, e);
        let pos = e & !REMOTE;
        self.remotes[pos as usize] = None;
        self.remotes_free.push(pos);
        if self.remotes_free.len() == self.remotes.len() {
            self.remotes.clear();
            self.remotes_free.clear();
        }
        true
    }

    /// Number of remote references held.
    pub fn remote_count(&self) -> usize {
        self.remotes.len() - self.remotes_free.len()
    }

    /// Identifier of the connection in `slot`, unique among live
    /// connections of a table with `mask + 1` shards (below 2^32 records);
    /// reused after the connection ends, like the kernel's conntrack ids.
    #[inline]
    pub fn conn_id(&self, slot: u32, mask: usize) -> u32 {
        slot.wrapping_mul(mask as u32 + 1)
            .wrapping_add(self.shard_no)
    }

    /// Read the index bucket a lookup of `hash` starts at and, on a tag
    /// match, the first bytes of that record; returns a value to feed
    /// `black_box`. Run over a whole batch before the real lookups, it
    /// brings their cache lines in with the misses overlapping.
    #[inline]
    pub fn touch(&self, hash: u64) -> u8 {
        match self.index.first(hash) {
            Some(e) => self.conns.get(e >> 1).map_or(0, |c| {
                let mut t = c.key.proto ^ c.status.bits();
                // A NATed connection's reply tuple is in its extension.
                if c.status
                    .intersects(ConnStatus::SRC_NAT | ConnStatus::DST_NAT)
                {
                    t ^= c
                        .ext
                        .as_deref()
                        .map_or(0, |x| x.reply.map_or(0, |r| r.proto));
                }
                t
            }),
            None => 0,
        }
    }

    #[inline]
    pub fn get(&self, slot: u32) -> Option<&Conn> {
        self.conns.get(slot)
    }
    #[inline]
    pub fn get_mut(&mut self, slot: u32) -> Option<&mut Conn> {
        self.conns.get_mut(slot)
    }

    /// Iterate live connections with their slots.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Conn)> {
        self.conns.iter()
    }

    /// Number of slab slots (live or free), for bounded scans.
    pub fn capacity_slots(&self) -> u32 {
        self.conns.high()
    }

    /// Insert a connection whose keys hash into this shard; files it on the
    /// wheel at its expiry and gives it an id. Returns its slot.
    pub fn insert(&mut self, conn: Conn, now_s: u32, seed: u64, mask: usize) -> u32 {
        self.wheel.restart(now_s);
        let orig = conn.key;
        let nat_reply = has_nat_reply(&conn).then(|| conn.reply_key());
        let expire = conn.expire;
        let slot = self.conns.insert(conn);
        let tick = self.wheel.file(slot, expire.wrapping_add(1));
        if let Some(c) = self.conns.get_mut(slot) {
            c.sched = tick as u16;
        }
        self.index
            .insert(key_hash(&orig, seed, mask).hash, entry_both(slot));
        if let Some(reply) = nat_reply {
            self.index
                .insert(key_hash(&reply, seed, mask).hash, entry_nat_reply(slot));
        }
        self.stats.inserts += 1;
        slot
    }

    /// Remove a connection, returning it.
    pub fn remove(&mut self, slot: u32, seed: u64, mask: usize) -> Option<Conn> {
        let conn = self.conns.remove(slot)?;
        self.index
            .remove(key_hash(&conn.key, seed, mask).hash, entry_both(slot));
        if has_nat_reply(&conn) {
            self.index.remove(
                key_hash(&conn.reply_key(), seed, mask).hash,
                entry_nat_reply(slot),
            );
        }
        self.stats.deleted += 1;
        // Give memory back when the shard has emptied out a lot.
        self.conns.compact_tail();
        Some(conn)
    }

    /// Wheel entries due by `now_s` (see [`Wheel::take_due`]).
    pub fn take_due(
        &mut self,
        now_s: u32,
        budget: usize,
        out: &mut Vec<crate::expiry::Entry>,
    ) -> bool {
        let Shard { wheel, conns, .. } = self;
        wheel.take_due(now_s, budget, out, |s| conns.get(s).map(|c| c.sched))
    }

    /// File a connection again at its current expiry (after the wheel
    /// reached its old tick, or when its timeout shrank).
    pub fn refile(&mut self, slot: u32) {
        let Some(expire) = self.get(slot).map(|c| c.expire) else {
            return;
        };
        let tick = self.wheel.file(slot, expire.wrapping_add(1));
        if let Some(c) = self.get_mut(slot) {
            c.sched = tick as u16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::{ConnExt, DirCounters};
    use crate::key::Zone;
    use crate::proto::{ProtoState, Seen, UdpState};
    use crate::timeout::PolicyId;

    fn conn(key: ConnKey, reply: Option<ConnKey>) -> Conn {
        Conn {
            key,
            ext: reply.map(|r| {
                Box::new(ConnExt {
                    reply: Some(r),
                    ..Default::default()
                })
            }),
            counters: [DirCounters::default(); 2],
            start_ns: 0,
            proto: ProtoState::Udp(UdpState(Seen::First)),
            mark: 0,
            expire: 100,
            sched: 0,
            status: ConnStatus::empty(),
            policy: PolicyId(0),
        }
    }

    fn k(src: &str, dst: &str, sp: u16, dp: u16) -> ConnKey {
        ConnKey::v4(
            Zone(1),
            src.parse().unwrap(),
            dst.parse().unwrap(),
            17,
            sp,
            dp,
        )
    }

    #[test]
    fn key_and_reverse_hash_alike() {
        let a = k("10.0.0.1", "10.0.0.2", 1000, 53);
        assert_eq!(key_hash(&a, 9, 1023), key_hash(&a.reverse(), 9, 1023));
        let icmp = ConnKey::v4(
            Zone(1),
            "1.1.1.1".parse().unwrap(),
            "2.2.2.2".parse().unwrap(),
            1,
            5,
            8 << 8,
        );
        assert_eq!(key_hash(&icmp, 9, 1023), key_hash(&icmp.reverse(), 9, 1023));
        assert_ne!(
            key_hash(&a, 9, 1023),
            key_hash(&k("10.0.0.1", "10.0.0.2", 1001, 53), 9, 1023)
        );
    }

    #[test]
    fn one_entry_finds_both_directions() {
        let mut s = Shard::new(0, 0);
        let a = k("10.0.0.1", "10.0.0.2", 1000, 53);
        let slot = s.insert(conn(a, None), 0, 1, 0);
        assert_eq!(s.index.len(), 1);
        assert_eq!(
            s.lookup(&a, key_hash(&a, 1, 0).hash),
            Some((slot, Dir::Orig))
        );
        let r = a.reverse();
        assert_eq!(
            s.lookup(&r, key_hash(&r, 1, 0).hash),
            Some((slot, Dir::Reply))
        );
        let other = k("10.0.0.1", "10.0.0.2", 1000, 54);
        assert_eq!(s.lookup(&other, key_hash(&other, 1, 0).hash), None);
        assert!(s.remove(slot, 1, 0).is_some());
        assert_eq!(s.index.len(), 0);
        assert_eq!(s.lookup(&a, key_hash(&a, 1, 0).hash), None);
    }

    #[test]
    fn nat_reply_tuple_gets_its_own_entry() {
        let mut s = Shard::new(0, 0);
        let a = k("192.168.0.5", "8.8.8.8", 1000, 53);
        // SNAT: replies come back to the public address and port.
        let reply = k("8.8.8.8", "203.0.113.1", 53, 40000);
        let slot = s.insert(conn(a, Some(reply)), 0, 1, 0);
        assert_eq!(s.index.len(), 2);
        assert_eq!(
            s.lookup(&a, key_hash(&a, 1, 0).hash),
            Some((slot, Dir::Orig))
        );
        assert_eq!(
            s.lookup(&reply, key_hash(&reply, 1, 0).hash),
            Some((slot, Dir::Reply))
        );
        // The un-NATed reverse is not a valid reply for this connection.
        let rev = a.reverse();
        assert_eq!(s.lookup(&rev, key_hash(&rev, 1, 0).hash), None);
        s.remove(slot, 1, 0);
        assert_eq!(s.index.len(), 0);
    }

    #[test]
    fn slots_are_reused_and_tail_compacted() {
        let mut s = Shard::new(0, 0);
        let keys: Vec<ConnKey> = (0..3000u16)
            .map(|i| k("10.0.0.1", "10.0.0.2", i, 53))
            .collect();
        let slots: Vec<u32> = keys
            .iter()
            .map(|&key| s.insert(conn(key, None), 0, 7, 0))
            .collect();
        for &slot in &slots[1..] {
            s.remove(slot, 7, 0);
        }
        assert_eq!(s.len(), 1);
        assert!(s.capacity_slots() < 3000, "tail compacted");
        let key = keys[0];
        assert_eq!(
            s.lookup(&key, key_hash(&key, 7, 0).hash).map(|x| x.0),
            Some(slots[0])
        );
        let again = s.insert(conn(k("10.0.0.9", "10.0.0.2", 1, 53), None), 0, 7, 0);
        assert!(again < 3000);
    }
}
