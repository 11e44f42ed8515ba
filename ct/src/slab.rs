//! Connection storage of one shard: fixed-size chunks of slots.
//!
//! Chunks of 64 records never move once allocated, so growing the table
//! never copies connections (a doubling `Vec` would copy every record and
//! briefly hold twice the memory) and unused capacity is at most one chunk
//! per shard. Freed slots are reused first; trailing free chunks are
//! returned when a shard empties out.

use crate::conn::Conn;

/// Records per chunk: 60 × 136 bytes fills an 8 KiB allocation, a size the
/// growing index leaves behind, so the allocator can reuse those buffers.
const CHUNK: usize = 60;

#[inline]
fn split(slot: u32) -> (usize, usize) {
    (slot as usize / CHUNK, slot as usize % CHUNK)
}

#[derive(Default)]
pub struct Slab {
    chunks: Vec<Box<[Option<Conn>]>>,
    /// Slots handed out so far (live or free); the next fresh slot.
    high: u32,
    free: Vec<u32>,
}

impl Slab {
    /// Live records.
    pub fn len(&self) -> usize {
        self.high as usize - self.free.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Slots handed out (live or free): the bound for scans.
    pub fn high(&self) -> u32 {
        self.high
    }

    /// Bytes held by records and the free list.
    pub fn bytes(&self) -> usize {
        self.chunks.len() * CHUNK * std::mem::size_of::<Option<Conn>>() + self.free.capacity() * 4
    }

    #[inline]
    pub fn get(&self, slot: u32) -> Option<&Conn> {
        let (c, i) = split(slot);
        self.chunks.get(c)?.get(i)?.as_ref()
    }

    #[inline]
    pub fn get_mut(&mut self, slot: u32) -> Option<&mut Conn> {
        let (c, i) = split(slot);
        self.chunks.get_mut(c)?.get_mut(i)?.as_mut()
    }

    /// Store a record in a free slot; returns the slot.
    pub fn insert(&mut self, conn: Conn) -> u32 {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                let s = self.high;
                if s as usize >= self.chunks.len() * CHUNK {
                    self.chunks.push((0..CHUNK).map(|_| None).collect());
                }
                self.high += 1;
                s
            }
        };
        let (c, i) = split(slot);
        self.chunks[c][i] = Some(conn);
        slot
    }

    /// Take a record out, freeing its slot.
    pub fn remove(&mut self, slot: u32) -> Option<Conn> {
        let (ci, i) = split(slot);
        let c = self.chunks.get_mut(ci)?.get_mut(i)?.take()?;
        self.free.push(slot);
        Some(c)
    }

    /// Live records with their slots.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Conn)> {
        self.chunks
            .iter()
            .flat_map(|ch| ch.iter())
            .take(self.high as usize)
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().map(|c| (i as u32, c)))
    }

    /// Free slots are more than half: drop trailing free chunks. Returns
    /// whether anything was released.
    pub fn compact_tail(&mut self) -> bool {
        if self.free.len() <= CHUNK * 4 || self.free.len() * 2 <= self.high as usize {
            return false;
        }
        while self.high > 0 && self.get(self.high - 1).is_none() {
            self.high -= 1;
        }
        let keep = (self.high as usize).div_ceil(CHUNK);
        if keep == self.chunks.len() {
            return false;
        }
        self.chunks.truncate(keep);
        self.chunks.shrink_to_fit();
        let high = self.high;
        self.free.retain(|&s| s < high);
        self.free.shrink_to_fit();
        true
    }
}
