//! [`PacketBatch`]: up to [`BATCH_SIZE`] packets moving through a stage
//! together, and [`PacketPool`], the free list software ports allocate from.
//!
//! A batch owns its packets in a vector whose capacity is fixed at
//! [`BATCH_SIZE`] when the batch is made; pushing never grows it, so a batch
//! that is reused allocates nothing. Stages keep per-packet side data (flow
//! keys, hashes) in stack arrays indexed like the batch.

use super::buf::{Packet, DEFAULT_BUF_SIZE, DEFAULT_HEADROOM};
use super::meta::PortNo;
use crate::BATCH_SIZE;

/// Up to [`BATCH_SIZE`] packets.
#[derive(Debug)]
pub struct PacketBatch {
    pkts: Vec<Packet>,
}

impl Default for PacketBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl PacketBatch {
    /// An empty batch (the only allocation a batch ever makes).
    pub fn new() -> PacketBatch {
        PacketBatch {
            pkts: Vec::with_capacity(BATCH_SIZE),
        }
    }

    /// Number of packets.
    #[inline]
    pub fn len(&self) -> usize {
        self.pkts.len()
    }

    /// True if the batch holds no packet.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.pkts.is_empty()
    }

    /// True if the batch holds [`BATCH_SIZE`] packets.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.pkts.len() >= BATCH_SIZE
    }

    /// How many more packets fit.
    #[inline]
    pub fn remaining(&self) -> usize {
        BATCH_SIZE - self.pkts.len()
    }

    /// Add a packet at the end; a full batch gives it back.
    #[inline]
    pub fn push(&mut self, pkt: Packet) -> Result<(), Packet> {
        if self.is_full() {
            return Err(pkt);
        }
        self.pkts.push(pkt);
        Ok(())
    }

    /// Remove the last packet.
    #[inline]
    pub fn pop(&mut self) -> Option<Packet> {
        self.pkts.pop()
    }

    /// The packets, in order.
    #[inline]
    pub fn as_slice(&self) -> &[Packet] {
        &self.pkts
    }

    /// The packets, mutably.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [Packet] {
        &mut self.pkts
    }

    /// Iterate over the packets.
    #[inline]
    pub fn iter(&self) -> std::slice::Iter<'_, Packet> {
        self.pkts.iter()
    }

    /// Iterate over the packets mutably.
    #[inline]
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Packet> {
        self.pkts.iter_mut()
    }

    /// Take all packets out, in order, leaving the batch empty (its capacity
    /// stays).
    #[inline]
    pub fn drain(&mut self) -> std::vec::Drain<'_, Packet> {
        self.pkts.drain(..)
    }

    /// Return every packet to `pool`.
    pub fn free_into(&mut self, pool: &mut PacketPool) {
        for p in self.pkts.drain(..) {
            pool.free(p);
        }
    }

    /// Move the packets for which `keep` is false to the end of `other` (as
    /// many as fit; the rest are returned to `pool`), keeping the order of
    /// both groups. `keep` also sees each packet's index before the split,
    /// so it can consult side arrays indexed like the batch. Returns how many
    /// packets were moved out (including those freed).
    pub fn split_off_where<F>(
        &mut self,
        other: &mut PacketBatch,
        pool: &mut PacketPool,
        mut keep: F,
    ) -> usize
    where
        F: FnMut(usize, &Packet) -> bool,
    {
        let n = self.pkts.len();
        let mut kept = 0;
        for i in 0..n {
            if keep(i, &self.pkts[i]) {
                if kept != i {
                    // Moves packet i in front of the removed run, keeping
                    // both runs in order (n <= 32 handles: a short memmove).
                    self.pkts[kept..=i].rotate_right(1);
                }
                kept += 1;
            }
        }
        let moved = n - kept;
        for p in self.pkts.drain(kept..) {
            if let Err(p) = other.push(p) {
                pool.free(p);
            }
        }
        moved
    }
}

impl<'a> IntoIterator for &'a PacketBatch {
    type Item = &'a Packet;
    type IntoIter = std::slice::Iter<'a, Packet>;
    fn into_iter(self) -> Self::IntoIter {
        self.pkts.iter()
    }
}

impl<'a> IntoIterator for &'a mut PacketBatch {
    type Item = &'a mut Packet;
    type IntoIter = std::slice::IterMut<'a, Packet>;
    fn into_iter(self) -> Self::IntoIter {
        self.pkts.iter_mut()
    }
}

/// Counters of a [`PacketPool`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Buffers allocated from the heap (the pool was empty). Flat in the
    /// steady state.
    pub heap_allocs: u64,
    /// Packets handed out.
    pub allocs: u64,
    /// Packets returned.
    pub frees: u64,
    /// Returned packets dropped because the free list was at its limit or
    /// the buffer had another size.
    pub discarded: u64,
}

/// A per-thread free list of packet buffers of one size.
///
/// Not shared between threads: each poll-mode thread owns one. A packet
/// received on one thread and freed on another lands in the second thread's
/// pool; the pool keeps at most `max_free` buffers, so such an imbalance
/// costs heap allocations on one side, never unbounded memory on the other.
#[derive(Debug)]
pub struct PacketPool {
    free: Vec<Packet>,
    /// Empty packet handles for wrapping received mbufs (DPDK ports), so
    /// neither receive nor transmit allocates.
    #[cfg(feature = "dpdk")]
    shells: Vec<Packet>,
    buf_size: usize,
    headroom: usize,
    max_free: usize,
    stats: PoolStats,
}

impl Default for PacketPool {
    fn default() -> Self {
        PacketPool::new(DEFAULT_BUF_SIZE, DEFAULT_HEADROOM, 1024)
    }
}

impl PacketPool {
    /// A pool of `prealloc` buffers of `buf_size` bytes with `headroom`
    /// bytes in front of each frame. It keeps up to `2 * prealloc` free
    /// buffers (at least [`BATCH_SIZE`]).
    pub fn new(buf_size: usize, headroom: usize, prealloc: usize) -> PacketPool {
        let max_free = (prealloc * 2).max(BATCH_SIZE);
        let mut free = Vec::with_capacity(max_free);
        free.extend((0..prealloc).map(|_| Packet::with_capacity(buf_size, headroom)));
        PacketPool {
            free,
            #[cfg(feature = "dpdk")]
            shells: Vec::with_capacity(max_free),
            buf_size,
            headroom,
            max_free,
            stats: PoolStats::default(),
        }
    }

    /// Buffer size of this pool's packets.
    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// Headroom of a freshly allocated packet.
    pub fn headroom(&self) -> usize {
        self.headroom
    }

    /// Free buffers on hand.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Counters.
    pub fn stats(&self) -> PoolStats {
        self.stats
    }

    /// An empty packet with fresh metadata for `in_port`; from the free list
    /// when it has one, else from the heap (counted in
    /// [`PoolStats::heap_allocs`]).
    #[inline]
    pub fn alloc(&mut self, in_port: PortNo) -> Packet {
        self.stats.allocs += 1;
        match self.free.pop() {
            Some(mut p) => {
                p.reset(self.headroom, in_port);
                p
            }
            None => {
                self.stats.heap_allocs += 1;
                let mut p = Packet::with_capacity(self.buf_size, self.headroom);
                p.meta.in_port = in_port;
                p
            }
        }
    }

    /// Return a packet. Only heap buffers of this pool's size are kept; any
    /// other packet (an mbuf-backed one goes back to its DPDK mempool) is
    /// dropped.
    #[inline]
    pub fn free(&mut self, pkt: Packet) {
        self.stats.frees += 1;
        #[cfg(feature = "dpdk")]
        let pkt = {
            let mut pkt = pkt;
            if let Some(m) = pkt.take_mbuf() {
                drop(m); // back to its DPDK mempool
                self.keep_shell(pkt);
                return;
            }
            pkt
        };
        if self.free.len() < self.max_free
            && pkt.storage().is_heap()
            && pkt.capacity() == self.buf_size
        {
            self.free.push(pkt);
        } else {
            self.stats.discarded += 1;
        }
    }
}

#[cfg(feature = "dpdk")]
impl PacketPool {
    /// Wraps a received mbuf in a packet (see [`Packet::from_mbuf`]),
    /// reusing a kept handle when there is one.
    #[inline]
    pub fn wrap_mbuf(
        &mut self,
        mbuf: dpdk_bindings::Mbuf,
        in_port: PortNo,
    ) -> Result<Packet, dpdk_bindings::Mbuf> {
        match self.shells.pop() {
            Some(mut p) => match p.fill_with_mbuf(mbuf, in_port) {
                Ok(()) => Ok(p),
                Err(m) => {
                    self.shells.push(p);
                    Err(m)
                }
            },
            None => {
                self.stats.heap_allocs += 1;
                Packet::from_mbuf(mbuf, in_port)
            }
        }
    }

    /// The mbuf of an mbuf-backed packet, for transmit; the packet's handle
    /// is kept for [`PacketPool::wrap_mbuf`]. A heap packet is given back.
    #[inline]
    pub fn unwrap_mbuf(&mut self, mut pkt: Packet) -> Result<dpdk_bindings::Mbuf, Packet> {
        match pkt.take_mbuf() {
            Some(m) => {
                self.keep_shell(pkt);
                Ok(m)
            }
            None => Err(pkt),
        }
    }

    #[inline]
    fn keep_shell(&mut self, shell: Packet) {
        if self.shells.len() < self.max_free {
            self.shells.push(shell);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(tag: u8) -> Packet {
        Packet::from_bytes(&[tag])
    }

    fn tags(b: &PacketBatch) -> Vec<u8> {
        b.iter().map(|p| p.data()[0]).collect()
    }

    #[test]
    fn batch_holds_at_most_batch_size_and_never_grows() {
        let mut b = PacketBatch::new();
        let cap = b.pkts.capacity();
        for i in 0..BATCH_SIZE {
            assert!(b.push(pkt(i as u8)).is_ok());
        }
        assert!(b.is_full());
        assert_eq!(b.remaining(), 0);
        let back = b.push(pkt(99)).unwrap_err();
        assert_eq!(back.data(), &[99]);
        assert_eq!(b.len(), BATCH_SIZE);
        assert_eq!(b.pkts.capacity(), cap);
        assert_eq!(b.drain().count(), BATCH_SIZE);
        assert!(b.is_empty());
        assert_eq!(b.pkts.capacity(), cap);
    }

    #[test]
    fn split_off_where_keeps_order_of_both_groups() {
        let mut pool = PacketPool::new(64, 0, 0);
        let mut b = PacketBatch::new();
        for i in 0..10 {
            b.push(pkt(i)).unwrap();
        }
        let mut misses = PacketBatch::new();
        let moved = b.split_off_where(&mut misses, &mut pool, |i, p| {
            assert_eq!(p.data()[0] as usize, i, "index is the pre-split index");
            i % 3 != 0
        });
        assert_eq!(moved, 4);
        assert_eq!(tags(&b), vec![1, 2, 4, 5, 7, 8]);
        assert_eq!(tags(&misses), vec![0, 3, 6, 9]);
    }

    #[test]
    fn split_off_where_frees_what_does_not_fit() {
        let mut pool = PacketPool::new(64, 0, 0);
        let mut b = PacketBatch::new();
        let mut other = PacketBatch::new();
        for i in 0..30 {
            other.push(pkt(i)).unwrap();
        }
        for i in 0..5 {
            b.push(pkt(100 + i)).unwrap();
        }
        assert_eq!(b.split_off_where(&mut other, &mut pool, |_, _| false), 5);
        assert!(b.is_empty());
        assert_eq!(other.len(), BATCH_SIZE);
        assert_eq!(&tags(&other)[30..], &[100, 101]);
        assert_eq!(pool.stats().frees, 3);
    }

    #[test]
    fn pool_recycles_and_steady_state_does_not_allocate() {
        let mut pool = PacketPool::new(256, 32, 64);
        assert_eq!(pool.available(), 64);
        let mut b = PacketBatch::new();
        for _round in 0..100 {
            while !b.is_full() {
                let mut p = pool.alloc(PortNo(1));
                assert_eq!(p.headroom(), 32);
                assert!(p.is_empty());
                p.append(60).unwrap();
                p.meta.recirc_id = 9;
                b.push(p).unwrap();
            }
            b.free_into(&mut pool);
        }
        assert_eq!(pool.stats().heap_allocs, 0);
        assert_eq!(pool.stats().allocs, 3200);
        assert_eq!(pool.stats().frees, 3200);
        // a recycled packet comes back reset
        let p = pool.alloc(PortNo(7));
        assert_eq!(p.meta.recirc_id, 0);
        assert_eq!(p.meta.in_port, PortNo(7));
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn pool_grows_on_demand_and_bounds_its_free_list() {
        let mut pool = PacketPool::new(128, 0, 0);
        let pkts: Vec<Packet> = (0..100).map(|_| pool.alloc(PortNo(0))).collect();
        assert_eq!(pool.stats().heap_allocs, 100);
        for p in pkts {
            pool.free(p);
        }
        assert_eq!(pool.available(), BATCH_SIZE);
        assert_eq!(pool.stats().discarded, 100 - BATCH_SIZE as u64);
        // a foreign-size buffer is not kept, even with room on the list
        let _ = pool.alloc(PortNo(0));
        assert_eq!(pool.available(), BATCH_SIZE - 1);
        pool.free(Packet::with_capacity(64, 0));
        assert_eq!(pool.available(), BATCH_SIZE - 1);
    }
}
