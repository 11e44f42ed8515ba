//! Ports: where packets enter and leave the datapath.
//!
//! A [`Port`] receives and transmits whole batches on numbered queues.
//! Methods take `&self` so that several poll-mode threads can each poll
//! their own receive queue of one port at the same time (as DPDK allows);
//! a port serialises whatever per-queue state it keeps, at most once per
//! burst, never per packet.
//!
//! Every packet a port does not deliver is counted under a
//! [`PortDropReason`].
//!
//! Software ports that need no NIC:
//! - [`ring::RingPort`]: in-memory, lock-free, made in connected pairs
//!   (tests, benchmarks, patch ports);
//! - [`pcap::PcapRxPort`] / [`pcap::PcapTxPort`]: replay a capture as input,
//!   record output to a capture;
//! - [`generator::GeneratorPort`]: deterministic synthetic traffic
//!   (UDP or TCP flows with handshakes and replies) for benchmarks;
//! - [`NullPort`]: a sink that counts and frees;
//! - [`afpacket::AfPacketPort`]: a Linux kernel interface (Linux only).
//!
//! With the `dpdk` cargo feature, `dpdk::DpdkPort` drives a DPDK device
//! (NIC or vdev) with packets kept in their mbufs (zero-copy).

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub mod afpacket;
#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod generator;
pub mod pcap;
pub mod ring;

use std::fmt;

use crate::packet::{PacketBatch, PacketPool, PortNo};
use crate::stats::AtomicCounter;

/// Link state of a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    Up,
    Down,
}

impl fmt::Display for LinkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LinkState::Up => "up",
            LinkState::Down => "down",
        })
    }
}

macro_rules! drop_reasons {
    ($($(#[$doc:meta])* $name:ident, $label:expr;)*) => {
        /// Why a port dropped a packet.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum PortDropReason {
            $($(#[$doc])* $name,)*
        }

        impl PortDropReason {
            /// Every reason, in index order.
            pub const ALL: &'static [PortDropReason] = &[$(PortDropReason::$name,)*];

            /// A short snake_case name for counters and logs.
            pub const fn label(self) -> &'static str {
                match self {
                    $(PortDropReason::$name => $label,)*
                }
            }
        }
    };
}

drop_reasons! {
    /// The peer's receive ring was full.
    TxQueueFull, "tx_queue_full";
    /// The link is down.
    LinkDown, "link_down";
    /// The frame exceeds what the port can carry or the buffer can hold.
    TooLarge, "too_large";
    /// The device or file reported an error while sending, or the port
    /// cannot send at all (a capture being replayed).
    TxError, "tx_error";
    /// The device or file reported an error while receiving.
    RxError, "rx_error";
    /// A received frame was shorter than an Ethernet header.
    RxRunt, "rx_runt";
    /// A replayed capture record of a link type other than Ethernet.
    NotEthernet, "not_ethernet";
    /// The receive queue overflowed before the port polled it (the
    /// kernel's socket queue, for AF_PACKET).
    RxOverflow, "rx_overflow";
}

/// Number of [`PortDropReason`]s.
pub const DROP_REASONS: usize = 8;

/// A snapshot of a port's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Drops indexed like [`PortDropReason::ALL`].
    pub drops: [u64; DROP_REASONS],
}

impl PortStats {
    /// Drops for one reason.
    pub fn drops(&self, reason: PortDropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// Drops of every reason.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// `(label, count)` for each reason with a non-zero count.
    pub fn nonzero_drops(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        PortDropReason::ALL
            .iter()
            .map(|r| (r.label(), self.drops(*r)))
            .filter(|(_, n)| *n != 0)
    }
}

/// The live counters a port embeds; bumped once per burst.
#[derive(Debug, Default)]
pub struct PortCounters {
    rx_packets: AtomicCounter,
    rx_bytes: AtomicCounter,
    tx_packets: AtomicCounter,
    tx_bytes: AtomicCounter,
    drops: [AtomicCounter; DROP_REASONS],
}

impl PortCounters {
    /// Count `packets` received totalling `bytes`.
    #[inline]
    pub fn rx(&self, packets: u64, bytes: u64) {
        self.rx_packets.add(packets);
        self.rx_bytes.add(bytes);
    }

    /// Count `packets` sent totalling `bytes`.
    #[inline]
    pub fn tx(&self, packets: u64, bytes: u64) {
        self.tx_packets.add(packets);
        self.tx_bytes.add(bytes);
    }

    /// Count `n` drops for `reason`.
    #[inline]
    pub fn drop(&self, reason: PortDropReason, n: u64) {
        self.drops[reason as usize].add(n);
    }

    /// A snapshot.
    pub fn snapshot(&self) -> PortStats {
        let mut drops = [0; DROP_REASONS];
        for (d, c) in drops.iter_mut().zip(self.drops.iter()) {
            *d = c.get();
        }
        PortStats {
            rx_packets: self.rx_packets.get(),
            rx_bytes: self.rx_bytes.get(),
            tx_packets: self.tx_packets.get(),
            tx_bytes: self.tx_bytes.get(),
            drops,
        }
    }
}

/// A port of the datapath.
pub trait Port: Send + Sync {
    /// The port's name (interface name, file name, ...).
    fn name(&self) -> &str;

    /// The port's number in the datapath.
    fn port_no(&self) -> PortNo;

    /// Number of receive queues.
    fn n_rxq(&self) -> usize {
        1
    }

    /// Number of transmit queues.
    fn n_txq(&self) -> usize {
        1
    }

    /// Receive up to `batch.remaining()` packets from queue `rxq` into the
    /// end of `batch`, taking buffers from `pool`. Each received packet's
    /// metadata is fresh, with `in_port` set to this port. Returns the
    /// number received (0 when nothing is pending; never blocks).
    fn rx_burst(&self, rxq: usize, batch: &mut PacketBatch, pool: &mut PacketPool) -> usize;

    /// Send every packet of `batch` on queue `txq`, leaving `batch` empty.
    /// Packets that are not sent are counted under a [`PortDropReason`] and
    /// their buffers are returned to `pool`. Returns the number sent.
    fn tx_burst(&self, txq: usize, batch: &mut PacketBatch, pool: &mut PacketPool) -> usize;

    /// A snapshot of the counters.
    fn stats(&self) -> PortStats;

    /// The link state.
    fn link_state(&self) -> LinkState {
        LinkState::Up
    }

    /// The DPDK device behind the port, for rte_flow offload
    /// ([`crate::hw_offload`]); None for every other kind of port.
    #[cfg(feature = "dpdk")]
    fn dpdk_device(&self) -> Option<std::sync::Arc<dpdk_bindings::EthDev>> {
        None
    }
}

/// A sink: counts what it is given and frees it. Receives nothing.
#[derive(Debug)]
pub struct NullPort {
    name: String,
    port_no: PortNo,
    counters: PortCounters,
}

impl NullPort {
    /// A null port.
    pub fn new(name: impl Into<String>, port_no: PortNo) -> NullPort {
        NullPort {
            name: name.into(),
            port_no,
            counters: PortCounters::default(),
        }
    }
}

impl Port for NullPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn port_no(&self) -> PortNo {
        self.port_no
    }

    fn rx_burst(&self, _rxq: usize, _batch: &mut PacketBatch, _pool: &mut PacketPool) -> usize {
        0
    }

    fn tx_burst(&self, _txq: usize, batch: &mut PacketBatch, pool: &mut PacketPool) -> usize {
        let n = batch.len();
        let bytes: usize = batch.iter().map(|p| p.len()).sum();
        batch.free_into(pool);
        self.counters.tx(n as u64, bytes as u64);
        n
    }

    fn stats(&self) -> PortStats {
        self.counters.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Packet;

    #[test]
    fn null_port_counts_and_frees() {
        let port = NullPort::new("null0", PortNo(9));
        let mut pool = PacketPool::new(128, 0, 0);
        let mut batch = PacketBatch::new();
        for n in [60usize, 100, 1] {
            batch.push(Packet::from_bytes(&vec![0u8; n])).unwrap();
        }
        assert_eq!(port.tx_burst(0, &mut batch, &mut pool), 3);
        assert!(batch.is_empty());
        let s = port.stats();
        assert_eq!((s.tx_packets, s.tx_bytes), (3, 161));
        assert_eq!(pool.stats().frees, 3);
        assert_eq!(port.rx_burst(0, &mut batch, &mut pool), 0);
        assert_eq!(port.link_state(), LinkState::Up);
        assert_eq!(port.name(), "null0");
    }

    #[test]
    fn ports_are_shared_trait_objects_polled_from_another_thread() {
        use std::sync::Arc;
        let (r1, r2) = ring::RingPort::pair(("r1", PortNo(1)), ("r2", PortNo(2)), 1, 64);
        let gen = generator::GeneratorPort::new(
            "gen",
            PortNo(3),
            generator::GeneratorConfig {
                flows: 4,
                ..Default::default()
            },
        );
        let ports: Vec<Arc<dyn Port>> = vec![
            Arc::new(gen),
            Arc::new(r1),
            Arc::new(r2),
            Arc::new(NullPort::new("null", PortNo(4))),
        ];
        let worker = {
            let ports = ports.clone();
            std::thread::spawn(move || {
                // gen -> r1 (arrives at r2) -> null
                let mut pool = PacketPool::new(2048, 128, 64);
                let mut batch = PacketBatch::new();
                assert_eq!(ports[0].rx_burst(0, &mut batch, &mut pool), 32);
                assert_eq!(ports[1].tx_burst(0, &mut batch, &mut pool), 32);
                assert_eq!(ports[2].rx_burst(0, &mut batch, &mut pool), 32);
                assert!(batch.iter().all(|p| p.meta.in_port == PortNo(2)));
                assert_eq!(ports[3].tx_burst(0, &mut batch, &mut pool), 32);
            })
        };
        worker.join().unwrap();
        let names: Vec<&str> = ports.iter().map(|p| p.name()).collect();
        assert_eq!(names, ["gen", "r1", "r2", "null"]);
        assert_eq!(ports[3].stats().tx_packets, 32);
        assert_eq!(ports[2].stats().rx_packets, 32);
    }

    #[test]
    fn drop_reasons_index_their_counters() {
        assert_eq!(PortDropReason::ALL.len(), DROP_REASONS);
        let c = PortCounters::default();
        for (i, r) in PortDropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            c.drop(*r, i as u64 + 1);
        }
        let s = c.snapshot();
        assert_eq!(s.nonzero_drops().count(), DROP_REASONS);
        assert_eq!(s.nonzero_drops().next(), Some(("tx_queue_full", 1)));
        assert_eq!(s.drops(PortDropReason::RxRunt), 6);
        assert_eq!(s.drops(PortDropReason::NotEthernet), 7);
        assert_eq!(s.drops(PortDropReason::RxOverflow), 8);
        assert_eq!(s.total_drops(), 36);
    }
}
