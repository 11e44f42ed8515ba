//! Output batching: packets headed for a port collect in that port's batch
//! and leave in one `tx_burst` when the batch fills or the poll iteration
//! ends (OVS's per-port output batches).
//!
//! Each poll-mode thread owns one [`TxPorts`]: its own batch per port and
//! its own transmit queue on each port (thread index modulo the port's
//! queue count), so sending takes no locks beyond what a port does once per
//! burst.

use std::sync::Arc;

use crate::packet::{Packet, PacketBatch, PacketPool, PortNo};
use crate::port::Port;

struct TxPort {
    port_no: PortNo,
    port: Arc<dyn Port>,
    txq: usize,
    batch: PacketBatch,
}

/// The output side of one poll-mode thread.
#[derive(Default)]
pub struct TxPorts {
    ports: Vec<TxPort>,
    /// Bursts sent and packets in them (for "avg. packets per output batch").
    pub bursts: u64,
    pub packets: u64,
}

impl TxPorts {
    /// Output to `ports`, using transmit queue `thread_index % n_txq`.
    pub fn new(ports: &[Arc<dyn Port>], thread_index: usize) -> TxPorts {
        let mut t = TxPorts::default();
        t.set_ports(ports, thread_index);
        t
    }

    /// Replace the port set (after add-port/del-port). Pending packets for
    /// ports that remain are kept; the caller flushes first.
    pub fn set_ports(&mut self, ports: &[Arc<dyn Port>], thread_index: usize) {
        self.ports = ports
            .iter()
            .map(|p| TxPort {
                port_no: p.port_no(),
                port: p.clone(),
                txq: thread_index % p.n_txq().max(1),
                batch: PacketBatch::new(),
            })
            .collect();
    }

    /// Index of `port_no`'s output slot (resolve once per group of packets).
    #[inline]
    pub fn slot(&self, port_no: PortNo) -> Option<usize> {
        self.ports.iter().position(|p| p.port_no == port_no)
    }

    /// Queue `pkt` on slot `slot`, sending the batch first if it is full.
    #[inline]
    pub fn push(&mut self, slot: usize, pkt: Packet, pool: &mut PacketPool) {
        let tp = &mut self.ports[slot];
        if tp.batch.is_full() {
            self.bursts += 1;
            self.packets += tp.batch.len() as u64;
            tp.port.tx_burst(tp.txq, &mut tp.batch, pool);
        }
        if let Err(p) = tp.batch.push(pkt) {
            pool.free(p);
        }
    }

    /// Send every pending batch.
    pub fn flush(&mut self, pool: &mut PacketPool) {
        for tp in &mut self.ports {
            if !tp.batch.is_empty() {
                self.bursts += 1;
                self.packets += tp.batch.len() as u64;
                tp.port.tx_burst(tp.txq, &mut tp.batch, pool);
            }
        }
    }
}
