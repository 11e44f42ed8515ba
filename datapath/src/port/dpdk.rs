//! DPDK poll-mode ports (cargo feature `dpdk`).
//!
//! A [`DpdkPort`] is an `rte_ethdev` port (a NIC by PCI address, or a vdev
//! such as `net_ring0`, `net_null0`, `net_pcap0`, `net_memif0`, ...) behind
//! the [`Port`] trait. Packets stay in their mbufs through the whole
//! pipeline: `rx_burst` wraps each received mbuf in a [`Packet`]
//! ([`Packet::from_mbuf`], no copy) and `tx_burst` hands mbuf-backed packets
//! back to the device as they are. Only packets that live on the heap
//! (from software ports, or clones made by the pipeline) are copied into a
//! fresh mbuf from the port's mempool; [`DpdkPort::copies`] counts them.
//!
//! Each rx and tx queue has its own lock, taken once per burst: poll-mode
//! threads that each own their queues never contend. With more than one rx
//! queue the port is configured with RSS (IP/TCP/UDP, masked to what the
//! device supports).
//!
//! The EAL initialises once per process ([`init_eal`]); ports allocate from
//! one shared mempool ([`shared_mempool`]).

use std::sync::{Arc, OnceLock};

use dpdk_bindings::{Eal, EthDev, Mbuf, Mempool, PortConf, RssConf, SharedRxQueue, SharedTxQueue};
use parking_lot::Mutex;

use super::{LinkState, Port, PortCounters, PortDropReason, PortStats};
use crate::packet::{Packet, PacketBatch, PacketPool, PortNo};
use crate::stats::AtomicCounter;

/// Name of the shared mbuf pool.
pub const MEMPOOL_NAME: &str = "ferrovs_mbufs";

/// Default number of mbufs in the shared pool.
pub const DEFAULT_MBUFS: u32 = 8192;

/// Result of the one EAL init of the process.
static EAL_INIT: OnceLock<Result<(), String>> = OnceLock::new();

/// Initialises DPDK's EAL with `args` (as written for `dpdk-testpmd`, before
/// `--`, without the program name). Once per process: later calls return the
/// first call's result and ignore their arguments.
pub fn init_eal(args: &[String]) -> Result<(), String> {
    EAL_INIT
        .get_or_init(|| {
            if Eal::get().is_some() {
                return Ok(());
            }
            Eal::init(args)
                .map(|_| ())
                .map_err(|e| format!("DPDK EAL initialisation failed: {e}"))
        })
        .clone()
}

fn eal() -> Result<Eal, String> {
    Eal::get().ok_or_else(|| {
        "the DPDK EAL is not initialised (add a \"dpdk\" section with \"eal_args\" to the \
         configuration)"
            .to_string()
    })
}

/// Registers the calling thread (a PMD thread) with DPDK's EAL, when the EAL
/// is initialised, so that its mbuf allocations and frees go through a
/// per-lcore mempool cache instead of the shared ring. Keep the guard for
/// the thread's life. `None` without an EAL or when the EAL has no lcore id
/// left (logged: the thread still works, only slower).
pub fn register_pmd_thread() -> Option<dpdk_bindings::ThreadRegistration> {
    let eal = Eal::get()?;
    match eal.register_thread() {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!("PMD thread not registered with DPDK (no mempool cache): {e}");
            None
        }
    }
}

/// The process-wide mbuf pool, created with `n_mbufs` mbufs on first use
/// (later calls return the same pool whatever `n_mbufs` they pass).
pub fn shared_mempool(n_mbufs: u32) -> Result<Mempool, String> {
    static POOL: Mutex<Option<Mempool>> = Mutex::new(None);
    let mut pool = POOL.lock();
    if let Some(p) = *pool {
        return Ok(p);
    }
    let eal = eal()?;
    let cache = (n_mbufs / 8).clamp(0, 256);
    let p = Mempool::create(eal, MEMPOOL_NAME, n_mbufs, cache)
        .map_err(|e| format!("DPDK mbuf pool of {n_mbufs} mbufs: {e}"))?;
    *pool = Some(p);
    Ok(p)
}

struct RxState {
    queue: SharedRxQueue,
    mbufs: Vec<Mbuf>,
}

struct TxState {
    queue: SharedTxQueue,
    mbufs: Vec<Mbuf>,
}

/// A DPDK ethdev port.
pub struct DpdkPort {
    name: String,
    port_no: PortNo,
    device: String,
    dev: Arc<EthDev>,
    mempool: Mempool,
    rxqs: Vec<Mutex<RxState>>,
    txqs: Vec<Mutex<TxState>>,
    counters: PortCounters,
    copies: AtomicCounter,
}

impl std::fmt::Debug for DpdkPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpdkPort")
            .field("name", &self.name)
            .field("port_no", &self.port_no)
            .field("device", &self.device)
            .field("rxqs", &self.rxqs.len())
            .field("txqs", &self.txqs.len())
            .finish()
    }
}

impl DpdkPort {
    /// Opens DPDK device `device` (a vdev name or PCI address the EAL knows)
    /// with `rxqs` rx and `txqs` tx queues (RSS when `rxqs > 1`), receiving
    /// into `mempool`, and starts it in promiscuous mode. The EAL must be
    /// initialised ([`init_eal`]).
    pub fn open(
        name: impl Into<String>,
        port_no: PortNo,
        device: &str,
        rxqs: usize,
        txqs: usize,
        mempool: Mempool,
    ) -> Result<DpdkPort, String> {
        let name = name.into();
        let err = |e: String| format!("dpdk port {name} (device {device}): {e}");
        let q = |n: usize, what: &str| {
            u16::try_from(n)
                .ok()
                .filter(|&n| (1..=1024).contains(&n))
                .ok_or_else(|| err(format!("{what}: {n}: must be 1..=1024")))
        };
        let (rx_queues, tx_queues) = (q(rxqs, "rxqs")?, q(txqs, "txqs")?);
        let eal = eal().map_err(err)?;
        let mut dev = EthDev::by_name(eal, device).map_err(|e| err(e.to_string()))?;
        let conf = PortConf {
            rx_queues,
            tx_queues,
            rss: (rx_queues > 1).then(RssConf::ip_tcp_udp),
            ..PortConf::default()
        };
        dev.configure(&conf, mempool)
            .map_err(|e| err(e.to_string()))?;
        dev.start().map_err(|e| err(e.to_string()))?;
        if let Err(e) = dev.set_promiscuous(true) {
            tracing::warn!("dpdk port {name} (device {device}): no promiscuous mode: {e}");
        }
        let dev = Arc::new(dev);
        let rxqs = (0..rx_queues)
            .map(|q| {
                Ok(Mutex::new(RxState {
                    queue: dev.shared_rx_queue(q).map_err(|e| err(e.to_string()))?,
                    mbufs: Vec::with_capacity(crate::BATCH_SIZE),
                }))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let txqs = (0..tx_queues)
            .map(|q| {
                Ok(Mutex::new(TxState {
                    queue: dev.shared_tx_queue(q).map_err(|e| err(e.to_string()))?,
                    mbufs: Vec::with_capacity(crate::BATCH_SIZE),
                }))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(DpdkPort {
            name,
            port_no,
            device: device.to_string(),
            dev,
            mempool,
            rxqs,
            txqs,
            counters: PortCounters::default(),
            copies: AtomicCounter::default(),
        })
    }

    /// The DPDK device name.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// DPDK's port id.
    pub fn dpdk_port_id(&self) -> u16 {
        self.dev.port_id()
    }

    /// Heap packets copied into a fresh mbuf on transmit (mbuf-backed
    /// packets are handed over without a copy and not counted).
    pub fn copies(&self) -> u64 {
        self.copies.get()
    }

    /// The device's own counters, with per-queue ones.
    pub fn device_stats(&self) -> Result<dpdk_bindings::PortStats, String> {
        self.dev.stats().map_err(|e| e.to_string())
    }

    /// Copies a heap packet's frame into a fresh mbuf.
    fn copy_to_mbuf(&self, pkt: &Packet) -> Result<Mbuf, PortDropReason> {
        let mut m = self.mempool.alloc().map_err(|_| PortDropReason::TxError)?;
        if !m.extend_from_slice(pkt.data()) {
            return Err(PortDropReason::TooLarge);
        }
        self.copies.add(1);
        Ok(m)
    }
}

/// A copy of a multi-segment frame in one heap packet from `pool`, with the
/// device's verdicts dropped (software verifies checksums again); `None` if
/// it does not fit a pool buffer.
fn linearize(m: &Mbuf, pool: &mut PacketPool, port: PortNo) -> Option<Packet> {
    let mut p = pool.alloc(port);
    if p.tailroom() < m.len() {
        pool.free(p);
        return None;
    }
    let mut at = 0;
    let dst = p.append(m.len()).ok()?;
    for seg in m.segments() {
        let end = (at + seg.len()).min(dst.len());
        dst[at..end].copy_from_slice(&seg[..end - at]);
        at = end;
    }
    if at != m.len() {
        // An inconsistent chain (segment lengths do not add up): drop it.
        pool.free(p);
        return None;
    }
    Some(p)
}

impl Port for DpdkPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn dpdk_device(&self) -> Option<Arc<EthDev>> {
        Some(self.dev.clone())
    }

    fn port_no(&self) -> PortNo {
        self.port_no
    }

    fn n_rxq(&self) -> usize {
        self.rxqs.len()
    }

    fn n_txq(&self) -> usize {
        self.txqs.len()
    }

    fn rx_burst(&self, rxq: usize, batch: &mut PacketBatch, pool: &mut PacketPool) -> usize {
        let Some(state) = self.rxqs.get(rxq) else {
            return 0;
        };
        let max = batch.remaining().min(u16::MAX as usize) as u16;
        if max == 0 {
            return 0;
        }
        let mut guard = state.lock();
        let RxState { queue, mbufs } = &mut *guard;
        if queue.rx_burst(mbufs, max) == 0 {
            return 0;
        }
        let (mut n, mut bytes, mut runts, mut bad) = (0u64, 0u64, 0u64, 0u64);
        let mut too_large = 0u64;
        for m in mbufs.drain(..) {
            if m.len() < 14 {
                runts += 1;
                continue; // dropping the mbuf frees it
            }
            let len = m.len() as u64;
            match pool.wrap_mbuf(m, self.port_no) {
                Ok(p) => {
                    if batch.push(p).is_err() {
                        bad += 1; // cannot happen: at most `remaining` arrive
                        continue;
                    }
                    n += 1;
                    bytes += len;
                }
                // A multi-segment (scattered) frame is copied into one heap
                // buffer: the pipeline sees a frame as one slice.
                Err(m) => match linearize(&m, pool, self.port_no) {
                    Some(p) => {
                        self.copies.add(1);
                        if batch.push(p).is_err() {
                            bad += 1;
                            continue;
                        }
                        n += 1;
                        bytes += len;
                    }
                    None => too_large += 1,
                },
            }
        }
        drop(guard);
        self.counters.rx(n, bytes);
        if runts > 0 {
            self.counters.drop(PortDropReason::RxRunt, runts);
        }
        if bad > 0 {
            self.counters.drop(PortDropReason::RxError, bad);
        }
        if too_large > 0 {
            self.counters.drop(PortDropReason::TooLarge, too_large);
        }
        n as usize
    }

    fn tx_burst(&self, txq: usize, batch: &mut PacketBatch, pool: &mut PacketPool) -> usize {
        if batch.is_empty() {
            return 0;
        }
        let state = &self.txqs[txq % self.txqs.len()];
        let mut guard = state.lock();
        let TxState { queue, mbufs } = &mut *guard;
        let mut too_large = 0u64;
        let mut errors = 0u64;
        for p in batch.drain() {
            match pool.unwrap_mbuf(p) {
                Ok(m) => mbufs.push(m),
                Err(p) => {
                    match self.copy_to_mbuf(&p) {
                        Ok(m) => mbufs.push(m),
                        Err(PortDropReason::TooLarge) => too_large += 1,
                        Err(_) => errors += 1,
                    }
                    pool.free(p);
                }
            }
        }
        let total_bytes: u64 = mbufs.iter().map(|m| m.len() as u64).sum();
        let sent = queue.tx_burst(mbufs);
        let unsent = mbufs.len() as u64;
        let unsent_bytes: u64 = mbufs.iter().map(|m| m.len() as u64).sum();
        mbufs.clear(); // frees what the device did not take
        drop(guard);
        self.counters.tx(sent as u64, total_bytes - unsent_bytes);
        if unsent > 0 {
            self.counters.drop(PortDropReason::TxQueueFull, unsent);
        }
        if too_large > 0 {
            self.counters.drop(PortDropReason::TooLarge, too_large);
        }
        if errors > 0 {
            self.counters.drop(PortDropReason::TxError, errors);
        }
        sent
    }

    fn stats(&self) -> PortStats {
        let mut s = self.counters.snapshot();
        // Packets the device dropped before we polled (rx ring full, no mbuf).
        if let Ok(d) = self.dev.stats() {
            s.drops[PortDropReason::RxOverflow as usize] += d.rx_missed + d.rx_nombuf;
        }
        s
    }

    fn link_state(&self) -> LinkState {
        match self.dev.link() {
            Ok(l) if l.up => LinkState::Up,
            _ => LinkState::Down,
        }
    }
}
