//! [`RingPort`]: an in-memory port, made in connected pairs.
//!
//! What one end transmits on queue `q` the other end receives on its queue
//! `q % n_rxq`. Each receive queue is a bounded lock-free MPMC ring
//! (`crossbeam_queue::ArrayQueue`), so the two ends can live on different
//! threads and several threads may transmit into the same ring. Packets move
//! through the ring as they are (no copy); a received packet's metadata is
//! reset for its new port. A full ring drops with
//! [`PortDropReason::TxQueueFull`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use super::{LinkState, Port, PortCounters, PortDropReason, PortStats};
use crate::packet::{Packet, PacketBatch, PacketPool, PortNo};

/// The receive rings of one end, shared with the peer that fills them.
#[derive(Debug)]
struct Rings {
    queues: Box<[ArrayQueue<Packet>]>,
}

impl Rings {
    fn new(n_queues: usize, capacity: usize) -> Arc<Rings> {
        Arc::new(Rings {
            queues: (0..n_queues.max(1))
                .map(|_| ArrayQueue::new(capacity.max(1)))
                .collect(),
        })
    }
}

/// One end of an in-memory link.
#[derive(Debug)]
pub struct RingPort {
    name: String,
    port_no: PortNo,
    rx: Arc<Rings>,
    peer_rx: Arc<Rings>,
    up: AtomicBool,
    counters: PortCounters,
}

impl RingPort {
    /// Two connected ends with `n_queues` queues each and `capacity` packets
    /// per receive ring.
    pub fn pair(
        a: (&str, PortNo),
        b: (&str, PortNo),
        n_queues: usize,
        capacity: usize,
    ) -> (RingPort, RingPort) {
        let ra = Rings::new(n_queues, capacity);
        let rb = Rings::new(n_queues, capacity);
        let end =
            |(name, port_no): (&str, PortNo), rx: &Arc<Rings>, peer_rx: &Arc<Rings>| RingPort {
                name: name.to_string(),
                port_no,
                rx: rx.clone(),
                peer_rx: peer_rx.clone(),
                up: AtomicBool::new(true),
                counters: PortCounters::default(),
            };
        (end(a, &ra, &rb), end(b, &rb, &ra))
    }

    /// Set the administrative link state. A down port receives nothing and
    /// drops what it is asked to send ([`PortDropReason::LinkDown`]).
    pub fn set_link_state(&self, state: LinkState) {
        self.up.store(state == LinkState::Up, Ordering::Relaxed);
    }

    /// Packets waiting in receive queue `rxq`.
    pub fn pending(&self, rxq: usize) -> usize {
        self.rx.queues.get(rxq).map_or(0, ArrayQueue::len)
    }

    /// Free every packet still waiting in this end's receive rings.
    pub fn drain_into(&self, pool: &mut PacketPool) {
        for q in self.rx.queues.iter() {
            while let Some(p) = q.pop() {
                pool.free(p);
            }
        }
    }
}

impl Port for RingPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn port_no(&self) -> PortNo {
        self.port_no
    }

    fn n_rxq(&self) -> usize {
        self.rx.queues.len()
    }

    fn n_txq(&self) -> usize {
        self.peer_rx.queues.len()
    }

    fn rx_burst(&self, rxq: usize, batch: &mut PacketBatch, _pool: &mut PacketPool) -> usize {
        let Some(q) = self.rx.queues.get(rxq) else {
            return 0;
        };
        if !self.up.load(Ordering::Relaxed) {
            return 0;
        }
        let (mut n, mut bytes) = (0usize, 0usize);
        while !batch.is_full() {
            let Some(mut p) = q.pop() else { break };
            p.meta.reset(self.port_no);
            bytes += p.len();
            n += 1;
            // Cannot fail: the loop checked that the batch has room.
            let _ = batch.push(p);
        }
        self.counters.rx(n as u64, bytes as u64);
        n
    }

    fn tx_burst(&self, txq: usize, batch: &mut PacketBatch, pool: &mut PacketPool) -> usize {
        if !self.up.load(Ordering::Relaxed) {
            self.counters
                .drop(PortDropReason::LinkDown, batch.len() as u64);
            batch.free_into(pool);
            return 0;
        }
        let queues = &self.peer_rx.queues;
        let q = &queues[txq % queues.len()];
        let (mut sent, mut bytes, mut full) = (0usize, 0usize, 0u64);
        for p in batch.drain() {
            let len = p.len();
            match q.push(p) {
                Ok(()) => {
                    sent += 1;
                    bytes += len;
                }
                Err(p) => {
                    full += 1;
                    pool.free(p);
                }
            }
        }
        self.counters.tx(sent as u64, bytes as u64);
        self.counters.drop(PortDropReason::TxQueueFull, full);
        sent
    }

    fn stats(&self) -> PortStats {
        self.counters.snapshot()
    }

    fn link_state(&self) -> LinkState {
        if self.up.load(Ordering::Relaxed) {
            LinkState::Up
        } else {
            LinkState::Down
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BATCH_SIZE;

    fn batch_of(n: usize, pool: &mut PacketPool, tag: u8) -> PacketBatch {
        let mut b = PacketBatch::new();
        for i in 0..n {
            let mut p = pool.alloc(PortNo(0));
            p.append(60).unwrap().fill(tag);
            p.data_mut()[0] = i as u8;
            p.meta.recirc_id = 42;
            b.push(p).unwrap();
        }
        b
    }

    #[test]
    fn pair_delivers_in_order_with_fresh_metadata() {
        let (a, b) = RingPort::pair(("a", PortNo(1)), ("b", PortNo(2)), 1, 64);
        let mut pool = PacketPool::new(256, 16, 64);
        let mut out = batch_of(10, &mut pool, 0xab);
        assert_eq!(a.tx_burst(0, &mut out, &mut pool), 10);
        assert!(out.is_empty());
        assert_eq!(b.pending(0), 10);
        let mut got = PacketBatch::new();
        assert_eq!(b.rx_burst(0, &mut got, &mut pool), 10);
        for (i, p) in got.iter().enumerate() {
            assert_eq!(p.data()[0], i as u8);
            assert_eq!(p.data()[1], 0xab);
            assert_eq!(p.meta.in_port, PortNo(2));
            assert_eq!(p.meta.recirc_id, 0, "metadata reset on receive");
        }
        assert_eq!(a.stats().tx_packets, 10);
        assert_eq!(a.stats().tx_bytes, 600);
        assert_eq!(b.stats().rx_packets, 10);
        assert_eq!(b.stats().rx_bytes, 600);
        // and back the other way
        assert_eq!(b.tx_burst(0, &mut got, &mut pool), 10);
        let mut back = PacketBatch::new();
        assert_eq!(a.rx_burst(0, &mut back, &mut pool), 10);
        assert_eq!(back.as_slice()[0].meta.in_port, PortNo(1));
    }

    #[test]
    fn full_ring_drops_and_counts() {
        let (a, b) = RingPort::pair(("a", PortNo(1)), ("b", PortNo(2)), 1, 20);
        let mut pool = PacketPool::new(256, 16, 64);
        let mut out = batch_of(BATCH_SIZE, &mut pool, 1);
        assert_eq!(a.tx_burst(0, &mut out, &mut pool), 20);
        assert_eq!(a.stats().drops(PortDropReason::TxQueueFull), 12);
        assert_eq!(a.stats().tx_packets, 20);
        assert_eq!(b.pending(0), 20);
        // rx takes at most what the batch can hold
        let mut got = batch_of(BATCH_SIZE - 5, &mut pool, 2);
        assert_eq!(b.rx_burst(0, &mut got, &mut pool), 5);
        assert_eq!(b.pending(0), 15);
        got.free_into(&mut pool);
        b.drain_into(&mut pool);
        assert_eq!(b.pending(0), 0);
    }

    #[test]
    fn queues_map_modulo_and_bad_queue_receives_nothing() {
        let (a, b) = RingPort::pair(("a", PortNo(1)), ("b", PortNo(2)), 2, 8);
        assert_eq!((a.n_rxq(), a.n_txq()), (2, 2));
        let mut pool = PacketPool::new(256, 16, 16);
        let mut out = batch_of(3, &mut pool, 0);
        a.tx_burst(3, &mut out, &mut pool);
        assert_eq!((b.pending(0), b.pending(1)), (0, 3));
        let mut got = PacketBatch::new();
        assert_eq!(b.rx_burst(7, &mut got, &mut pool), 0);
        assert_eq!(b.rx_burst(1, &mut got, &mut pool), 3);
    }

    #[test]
    fn link_down_drops_and_receives_nothing() {
        let (a, b) = RingPort::pair(("a", PortNo(1)), ("b", PortNo(2)), 1, 8);
        let mut pool = PacketPool::new(256, 16, 16);
        a.set_link_state(LinkState::Down);
        assert_eq!(a.link_state(), LinkState::Down);
        let mut out = batch_of(4, &mut pool, 0);
        assert_eq!(a.tx_burst(0, &mut out, &mut pool), 0);
        assert_eq!(a.stats().drops(PortDropReason::LinkDown), 4);
        assert_eq!(b.pending(0), 0);
        let mut out = batch_of(2, &mut pool, 0);
        b.tx_burst(0, &mut out, &mut pool);
        let mut got = PacketBatch::new();
        assert_eq!(a.rx_burst(0, &mut got, &mut pool), 0);
        a.set_link_state(LinkState::Up);
        assert_eq!(a.rx_burst(0, &mut got, &mut pool), 2);
    }

    #[test]
    fn ends_on_two_threads_move_every_packet() {
        const RING: usize = 256;
        const TOTAL: u32 = 100_000;
        let (a, b) = RingPort::pair(("a", PortNo(1)), ("b", PortNo(2)), 1, RING);
        let sender = std::thread::spawn(move || {
            let mut pool = PacketPool::new(128, 0, 512);
            let mut batch = PacketBatch::new();
            let mut seq = 0u32;
            while seq < TOTAL {
                // Only this thread fills the ring, so the room seen here can
                // only grow before the burst: nothing is refused.
                let room = RING - peer_pending(&a);
                let n = room.min(BATCH_SIZE).min((TOTAL - seq) as usize);
                if n == 0 {
                    std::thread::yield_now();
                    continue;
                }
                for _ in 0..n {
                    let mut p = pool.alloc(PortNo(1));
                    p.append(4).unwrap().copy_from_slice(&seq.to_be_bytes());
                    batch.push(p).unwrap();
                    seq += 1;
                }
                assert_eq!(a.tx_burst(0, &mut batch, &mut pool), n);
            }
            a
        });
        let mut pool = PacketPool::new(128, 0, 512);
        let mut expect = 0u32;
        let mut got = PacketBatch::new();
        while expect < TOTAL {
            if b.rx_burst(0, &mut got, &mut pool) == 0 {
                std::thread::yield_now();
            }
            for p in got.drain() {
                let v = u32::from_be_bytes(p.data()[..4].try_into().unwrap());
                assert_eq!(v, expect, "in order, none lost");
                expect += 1;
                pool.free(p);
            }
        }
        let a = sender.join().unwrap();
        assert_eq!(a.stats().tx_packets, u64::from(TOTAL));
        assert_eq!(a.stats().drops(PortDropReason::TxQueueFull), 0);
        assert_eq!(b.stats().rx_packets, u64::from(TOTAL));
    }

    /// How full the peer's ring is, seen from the sending end.
    fn peer_pending(a: &RingPort) -> usize {
        a.peer_rx.queues[0].len()
    }
}
