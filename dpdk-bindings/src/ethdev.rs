//! Ethernet ports (`rte_ethdev`): lookup by device name, configuration with
//! rx/tx queues and RSS, start/stop, promiscuous mode, link, stats and the
//! rx/tx bursts.

use std::cell::Cell;
use std::ffi::{c_char, CStr, CString};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::eal::Eal;
use crate::error::{check, DpdkError, Result};
use crate::ffi;
use crate::mbuf::Mbuf;
use crate::mempool::Mempool;

/// Ports opened through [`EthDev::by_name`] and not yet dropped: one owner each.
static OPEN_PORTS: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// RSS configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RssConf {
    /// `RTE_ETH_RSS_*` hash functions wanted; masked with what the device
    /// supports (like testpmd does).
    pub hash_functions: u64,
    /// Hash key; `None` for the driver's default.
    pub key: Option<Vec<u8>>,
}

impl RssConf {
    /// IP, TCP and UDP hashing with the driver's key.
    pub fn ip_tcp_udp() -> RssConf {
        // SAFETY: the shim functions return constants.
        let hf = unsafe {
            ffi::ferrovs_rss_hf_ip() | ffi::ferrovs_rss_hf_tcp() | ffi::ferrovs_rss_hf_udp()
        };
        RssConf {
            hash_functions: hf,
            key: None,
        }
    }
}

/// Port configuration for [`EthDev::configure`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConf {
    /// Number of rx queues (each polled by one thread).
    pub rx_queues: u16,
    /// Number of tx queues.
    pub tx_queues: u16,
    /// Descriptors per rx queue (adjusted to the device's limits).
    pub rx_desc: u16,
    /// Descriptors per tx queue (adjusted to the device's limits).
    pub tx_desc: u16,
    /// RSS across the rx queues; `None` for no RSS.
    pub rss: Option<RssConf>,
}

impl Default for PortConf {
    fn default() -> Self {
        PortConf {
            rx_queues: 1,
            tx_queues: 1,
            rx_desc: 1024,
            tx_desc: 1024,
            rss: None,
        }
    }
}

/// Link state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkStatus {
    /// Link is up.
    pub up: bool,
    /// Speed in Mbit/s (0 if unknown).
    pub speed_mbps: u32,
    /// Full duplex.
    pub full_duplex: bool,
    /// Autonegotiated.
    pub autoneg: bool,
}

/// Per-queue counters (for the first `RTE_ETHDEV_QUEUE_STAT_CNTRS` queues, if
/// the driver fills them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Packets received on this rx queue.
    pub rx_packets: u64,
    /// Packets sent on this tx queue.
    pub tx_packets: u64,
    /// Bytes received on this rx queue.
    pub rx_bytes: u64,
    /// Bytes sent on this tx queue.
    pub tx_bytes: u64,
    /// Rx errors on this queue.
    pub rx_errors: u64,
}

/// Port counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets the hardware dropped because rx queues were full.
    pub rx_missed: u64,
    /// Erroneous received packets.
    pub rx_errors: u64,
    /// Failed transmissions.
    pub tx_errors: u64,
    /// Rx mbuf allocation failures.
    pub rx_nombuf: u64,
    /// Per-queue counters, one per configured queue up to the stat limit.
    pub queues: Vec<QueueStats>,
}

/// Device facts from `rte_eth_dev_info_get`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevInfo {
    /// PMD name, e.g. `net_ring`.
    pub driver_name: String,
    /// Maximum rx queues.
    pub max_rx_queues: u16,
    /// Maximum tx queues.
    pub max_tx_queues: u16,
    /// RSS hash functions the device supports (`RTE_ETH_RSS_*`).
    pub rss_offloads: u64,
    /// NUMA socket of the device (-1 if unknown).
    pub socket_id: i32,
}

/// One DPDK ethernet port, exclusively owned by this handle (a second
/// [`EthDev::by_name`] for the same port fails with `EBUSY` until this one is
/// dropped). Dropping it stops the port (it stays attached and can be opened
/// again).
#[derive(Debug)]
pub struct EthDev {
    port_id: u16,
    name: String,
    rx_queues: u16,
    tx_queues: u16,
    started: bool,
    rss_applied: u64,
    rx_claimed: Vec<AtomicBool>,
    tx_claimed: Vec<AtomicBool>,
}

/// Names of all ports DPDK knows about, as `(port_id, name)`.
pub fn ports(_eal: Eal) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    for port in 0..ffi::RTE_MAX_ETHPORTS as u16 {
        // SAFETY: any port id may be queried; the EAL is initialised.
        if unsafe { ffi::rte_eth_dev_is_valid_port(port) } == 0 {
            continue;
        }
        if let Some(name) = port_name(port) {
            out.push((port, name));
        }
    }
    out
}

fn port_name(port: u16) -> Option<String> {
    let mut buf = [0 as c_char; ffi::RTE_ETH_NAME_MAX_LEN as usize];
    // SAFETY: buf has RTE_ETH_NAME_MAX_LEN bytes, the size DPDK requires.
    let ret = unsafe { ffi::rte_eth_dev_get_name_by_port(port, buf.as_mut_ptr()) };
    if ret != 0 {
        return None;
    }
    // SAFETY: on success DPDK wrote a NUL-terminated name into buf.
    Some(
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    )
}

impl EthDev {
    /// Opens the port DPDK registered under `name`: a vdev name such as
    /// `net_ring0` or `net_null0`, or a PCI address such as `0000:01:00.0`.
    pub fn by_name(eal: Eal, name: &str) -> Result<EthDev> {
        let cname = CString::new(name).map_err(|_| {
            DpdkError::new(
                "rte_eth_dev_get_port_by_name",
                libc::EINVAL,
                "device name contains a NUL byte",
            )
        })?;
        let mut port_id = 0u16;
        // SAFETY: cname is a valid C string, port_id a valid out pointer.
        let ret = unsafe { ffi::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut port_id) };
        if ret != 0 {
            let known: Vec<String> = ports(eal).into_iter().map(|(_, n)| n).collect();
            return Err(DpdkError::new(
                "rte_eth_dev_get_port_by_name",
                libc::ENODEV,
                format!(
                    "no DPDK port named {name:?} (known ports: {}); add it to the EAL arguments, \
                     e.g. --vdev {name} for a virtual device or -a <pci address> for a NIC",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
        let mut open = OPEN_PORTS.lock().unwrap_or_else(|e| e.into_inner());
        if open.contains(&port_id) {
            return Err(DpdkError::new(
                "EthDev::by_name",
                libc::EBUSY,
                format!("port {name:?} (id {port_id}) is already open in this process"),
            ));
        }
        open.push(port_id);
        Ok(EthDev {
            port_id,
            name: name.to_owned(),
            rx_queues: 0,
            tx_queues: 0,
            started: false,
            rss_applied: 0,
            rx_claimed: Vec::new(),
            tx_claimed: Vec::new(),
        })
    }

    /// DPDK's port id.
    pub fn port_id(&self) -> u16 {
        self.port_id
    }

    /// The device name it was opened with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Configured rx queues (0 before [`EthDev::configure`]).
    pub fn rx_queues(&self) -> u16 {
        self.rx_queues
    }

    /// Configured tx queues (0 before [`EthDev::configure`]).
    pub fn tx_queues(&self) -> u16 {
        self.tx_queues
    }

    /// RSS hash functions in effect after configure (0: no RSS).
    pub fn rss_hash_functions(&self) -> u64 {
        self.rss_applied
    }

    /// Whether the port is started.
    pub fn is_started(&self) -> bool {
        self.started
    }

    /// Device facts.
    pub fn info(&self) -> Result<DevInfo> {
        let info = self.raw_info()?;
        let driver_name = if info.driver_name.is_null() {
            String::new()
        } else {
            // SAFETY: driver_name points at the PMD's static NUL-terminated name.
            unsafe { CStr::from_ptr(info.driver_name) }
                .to_string_lossy()
                .into_owned()
        };
        // SAFETY: any port id may be queried.
        let socket_id = unsafe { ffi::rte_eth_dev_socket_id(self.port_id) };
        Ok(DevInfo {
            driver_name,
            max_rx_queues: info.max_rx_queues,
            max_tx_queues: info.max_tx_queues,
            rss_offloads: info.flow_type_rss_offloads,
            socket_id,
        })
    }

    fn raw_info(&self) -> Result<ffi::rte_eth_dev_info> {
        let mut info = ffi::rte_eth_dev_info::default();
        // SAFETY: info is a valid, writable rte_eth_dev_info.
        check("rte_eth_dev_info_get", unsafe {
            ffi::rte_eth_dev_info_get(self.port_id, &mut info)
        })?;
        Ok(info)
    }

    /// Configures the port with `conf.rx_queues` rx queues (allocating from
    /// `pool`) and `conf.tx_queues` tx queues, and sets the queues up. The
    /// port must be stopped.
    pub fn configure(&mut self, conf: &PortConf, pool: Mempool) -> Result<()> {
        if self.started {
            return Err(DpdkError::new(
                "rte_eth_dev_configure",
                libc::EBUSY,
                "stop the port first",
            ));
        }
        if conf.rx_queues == 0 || conf.tx_queues == 0 {
            return Err(DpdkError::new(
                "rte_eth_dev_configure",
                libc::EINVAL,
                "a port needs at least one rx and one tx queue",
            ));
        }
        let info = self.raw_info()?;
        if conf.rx_queues > info.max_rx_queues || conf.tx_queues > info.max_tx_queues {
            return Err(DpdkError::new(
                "rte_eth_dev_configure",
                libc::EINVAL,
                format!(
                    "port {:?} supports at most {} rx / {} tx queues, asked for {} / {}",
                    self.name,
                    info.max_rx_queues,
                    info.max_tx_queues,
                    conf.rx_queues,
                    conf.tx_queues
                ),
            ));
        }
        let mut eth_conf = ffi::rte_eth_conf::default();
        let mut key = conf.rss.as_ref().and_then(|r| r.key.clone());
        let mut rss_applied = 0;
        if let Some(rss) = &conf.rss {
            rss_applied = rss.hash_functions & info.flow_type_rss_offloads;
            if rss_applied != 0 {
                eth_conf.rxmode.mq_mode = ffi::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
                eth_conf.rx_adv_conf.rss_conf.rss_hf = rss_applied;
                if let Some(k) = key.as_mut() {
                    eth_conf.rx_adv_conf.rss_conf.rss_key = k.as_mut_ptr();
                    eth_conf.rx_adv_conf.rss_conf.rss_key_len =
                        u8::try_from(k.len()).map_err(|_| {
                            DpdkError::new(
                                "rte_eth_dev_configure",
                                libc::EINVAL,
                                "RSS key longer than 255 bytes",
                            )
                        })?;
                }
            }
        }
        // SAFETY: eth_conf is a valid configuration; the RSS key (if any)
        // lives in `key` until after the call (DPDK copies it).
        let ret = unsafe {
            ffi::rte_eth_dev_configure(self.port_id, conf.rx_queues, conf.tx_queues, &eth_conf)
        };
        check("rte_eth_dev_configure", ret)
            .map_err(|e| e.context(format_args!("port {:?}", self.name)))?;
        drop(key);

        let mut rx_desc = conf.rx_desc;
        let mut tx_desc = conf.tx_desc;
        // SAFETY: valid port id and writable u16s.
        let ret = unsafe {
            ffi::rte_eth_dev_adjust_nb_rx_tx_desc(self.port_id, &mut rx_desc, &mut tx_desc)
        };
        check("rte_eth_dev_adjust_nb_rx_tx_desc", ret)?;
        // SAFETY: any port id may be queried.
        let socket = unsafe { ffi::rte_eth_dev_socket_id(self.port_id) };
        let socket = if socket < 0 {
            ffi::SOCKET_ID_ANY
        } else {
            socket
        };
        let socket = socket as u32;
        for q in 0..conf.rx_queues {
            // SAFETY: the port is configured with > q rx queues and stopped; a
            // NULL rx_conf selects the driver default; the pool is a live
            // pktmbuf pool that is never freed.
            let ret = unsafe {
                ffi::rte_eth_rx_queue_setup(
                    self.port_id,
                    q,
                    rx_desc,
                    socket,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            };
            check("rte_eth_rx_queue_setup", ret)
                .map_err(|e| e.context(format_args!("port {:?} rx queue {q}", self.name)))?;
        }
        for q in 0..conf.tx_queues {
            // SAFETY: the port is configured with > q tx queues and stopped; a
            // NULL tx_conf selects the driver default.
            let ret = unsafe {
                ffi::rte_eth_tx_queue_setup(self.port_id, q, tx_desc, socket, std::ptr::null())
            };
            check("rte_eth_tx_queue_setup", ret)
                .map_err(|e| e.context(format_args!("port {:?} tx queue {q}", self.name)))?;
        }
        self.rx_queues = conf.rx_queues;
        self.tx_queues = conf.tx_queues;
        self.rss_applied = rss_applied;
        self.rx_claimed = (0..conf.rx_queues)
            .map(|_| AtomicBool::new(false))
            .collect();
        self.tx_claimed = (0..conf.tx_queues)
            .map(|_| AtomicBool::new(false))
            .collect();
        Ok(())
    }

    /// Starts the port (after [`EthDev::configure`]).
    pub fn start(&mut self) -> Result<()> {
        if self.rx_queues == 0 {
            return Err(DpdkError::new(
                "rte_eth_dev_start",
                libc::EINVAL,
                "configure the port first",
            ));
        }
        if self.started {
            return Ok(());
        }
        // SAFETY: the port is configured and its queues are set up.
        let ret = unsafe { ffi::rte_eth_dev_start(self.port_id) };
        check("rte_eth_dev_start", ret)
            .map_err(|e| e.context(format_args!("port {:?}", self.name)))?;
        self.started = true;
        Ok(())
    }

    /// Stops the port. No queue handle can be alive (they borrow the port).
    pub fn stop(&mut self) -> Result<()> {
        if !self.started {
            return Ok(());
        }
        // SAFETY: valid port id; `&mut self` guarantees no rx/tx is in progress
        // through this handle.
        let ret = unsafe { ffi::rte_eth_dev_stop(self.port_id) };
        check("rte_eth_dev_stop", ret)?;
        self.started = false;
        Ok(())
    }

    /// Enables or disables promiscuous mode.
    pub fn set_promiscuous(&mut self, on: bool) -> Result<()> {
        // SAFETY: valid port id.
        let ret = unsafe {
            if on {
                ffi::rte_eth_promiscuous_enable(self.port_id)
            } else {
                ffi::rte_eth_promiscuous_disable(self.port_id)
            }
        };
        check(
            if on {
                "rte_eth_promiscuous_enable"
            } else {
                "rte_eth_promiscuous_disable"
            },
            ret,
        )?;
        Ok(())
    }

    /// Whether promiscuous mode is on.
    pub fn is_promiscuous(&self) -> Result<bool> {
        // SAFETY: valid port id.
        let ret = unsafe { ffi::rte_eth_promiscuous_get(self.port_id) };
        Ok(check("rte_eth_promiscuous_get", ret)? == 1)
    }

    /// Link state, without waiting for autonegotiation.
    pub fn link(&self) -> Result<LinkStatus> {
        let mut link = ffi::rte_eth_link::default();
        // SAFETY: link is a valid, writable rte_eth_link.
        check("rte_eth_link_get_nowait", unsafe {
            ffi::rte_eth_link_get_nowait(self.port_id, &mut link)
        })?;
        Ok(LinkStatus {
            up: u32::from(link.link_status()) == ffi::RTE_ETH_LINK_UP,
            speed_mbps: link.link_speed,
            full_duplex: u32::from(link.link_duplex()) == ffi::RTE_ETH_LINK_FULL_DUPLEX,
            autoneg: u32::from(link.link_autoneg()) == ffi::RTE_ETH_LINK_AUTONEG,
        })
    }

    /// Port counters, with per-queue ones for the configured queues.
    pub fn stats(&self) -> Result<PortStats> {
        let mut s = ffi::rte_eth_stats::default();
        // SAFETY: s is a valid, writable rte_eth_stats.
        check("rte_eth_stats_get", unsafe {
            ffi::rte_eth_stats_get(self.port_id, &mut s)
        })?;
        let nq = (self.rx_queues.max(self.tx_queues) as usize).min(s.q_ipackets.len());
        let queues = (0..nq)
            .map(|q| QueueStats {
                rx_packets: s.q_ipackets[q],
                tx_packets: s.q_opackets[q],
                rx_bytes: s.q_ibytes[q],
                tx_bytes: s.q_obytes[q],
                rx_errors: s.q_errors[q],
            })
            .collect();
        Ok(PortStats {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_bytes: s.ibytes,
            tx_bytes: s.obytes,
            rx_missed: s.imissed,
            rx_errors: s.ierrors,
            tx_errors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
            queues,
        })
    }

    /// Zeroes the port counters.
    pub fn reset_stats(&mut self) -> Result<()> {
        // SAFETY: valid port id.
        check("rte_eth_stats_reset", unsafe {
            ffi::rte_eth_stats_reset(self.port_id)
        })?;
        Ok(())
    }

    /// Receives up to `max` packets from rx `queue`, appending them to `out`;
    /// returns how many arrived. 0 if the port is not started or the queue
    /// does not exist.
    pub fn rx_burst(&mut self, queue: u16, out: &mut Vec<Mbuf>, max: u16) -> usize {
        if !self.started || queue >= self.rx_queues {
            return 0;
        }
        // SAFETY: started port, existing queue, and `&mut self` means no other
        // thread polls it through this handle (queue handles borrow self).
        unsafe { rx_burst_raw(self.port_id, queue, out, max) }
    }

    /// Sends the packets of `pkts` on tx `queue`. The sent ones are removed
    /// from the front of `pkts` (now owned by the driver); the unsent ones stay
    /// in `pkts`, in order, for the caller to retry or drop. Returns the number
    /// sent (0 if the port is not started or the queue does not exist).
    pub fn tx_burst(&mut self, queue: u16, pkts: &mut Vec<Mbuf>) -> usize {
        if !self.started || queue >= self.tx_queues {
            return 0;
        }
        // SAFETY: as in rx_burst.
        unsafe { tx_burst_raw(self.port_id, queue, pkts) }
    }

    /// A handle for polling rx `queue` from one thread (e.g. a PMD thread).
    /// Each queue can be claimed once at a time; the port must be started and
    /// cannot be stopped or reconfigured while handles exist.
    pub fn rx_queue(&self, queue: u16) -> Result<RxQueue<'_>> {
        claim(&self.rx_claimed, queue, self.started, "rx")?;
        Ok(RxQueue {
            dev: self,
            queue,
            _not_sync: PhantomData,
        })
    }

    /// A handle for sending on tx `queue` from one thread; as [`EthDev::rx_queue`].
    pub fn tx_queue(&self, queue: u16) -> Result<TxQueue<'_>> {
        claim(&self.tx_claimed, queue, self.started, "tx")?;
        Ok(TxQueue {
            dev: self,
            queue,
            _not_sync: PhantomData,
        })
    }
}

fn claim(claimed: &[AtomicBool], queue: u16, started: bool, dir: &str) -> Result<()> {
    if !started {
        return Err(DpdkError::new(
            "EthDev::queue",
            libc::EINVAL,
            "start the port first",
        ));
    }
    let slot = claimed.get(queue as usize).ok_or_else(|| {
        DpdkError::new(
            "EthDev::queue",
            libc::EINVAL,
            format!(
                "{dir} queue {queue} does not exist ({} configured)",
                claimed.len()
            ),
        )
    })?;
    if slot.swap(true, Ordering::AcqRel) {
        return Err(DpdkError::new(
            "EthDev::queue",
            libc::EBUSY,
            format!("{dir} queue {queue} already has a handle"),
        ));
    }
    Ok(())
}

impl Drop for EthDev {
    fn drop(&mut self) {
        let _ = self.stop();
        let mut open = OPEN_PORTS.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|&p| p != self.port_id);
    }
}

/// # Safety
/// The port must be started, `queue` must exist, and no other thread may poll
/// the same queue concurrently.
unsafe fn rx_burst_raw(port: u16, queue: u16, out: &mut Vec<Mbuf>, max: u16) -> usize {
    out.reserve(max as usize);
    let len = out.len();
    // SAFETY: `out` has room for `max` more elements; Mbuf is
    // repr(transparent) over a non-null `*mut rte_mbuf`, and the PMD writes n
    // valid, exclusively owned mbuf pointers (direct, refcnt 1). The caller
    // guarantees the queue preconditions.
    let n = unsafe {
        let dst = out.as_mut_ptr().add(len).cast::<*mut ffi::rte_mbuf>();
        ffi::ferrovs_rte_eth_rx_burst(port, queue, dst, max)
    };
    // SAFETY: the PMD initialised elements len..len+n.
    unsafe { out.set_len(len + n as usize) };
    n as usize
}

/// # Safety
/// As for [`rx_burst_raw`], for a tx queue.
unsafe fn tx_burst_raw(port: u16, queue: u16, pkts: &mut Vec<Mbuf>) -> usize {
    let len = pkts.len();
    let n = len.min(u16::MAX as usize) as u16;
    // SAFETY: pkts holds `len` owned mbufs laid out as `*mut rte_mbuf`
    // (repr(transparent)); the caller guarantees the queue preconditions.
    let sent =
        unsafe { ffi::ferrovs_rte_eth_tx_burst(port, queue, pkts.as_mut_ptr().cast(), n) } as usize;
    // SAFETY: the first `sent` mbufs now belong to the driver: shift the rest
    // down over them without dropping anything, then shorten the Vec. Nothing
    // in between can panic.
    unsafe {
        let p = pkts.as_mut_ptr();
        std::ptr::copy(p.add(sent), p, len - sent);
        pkts.set_len(len - sent);
    }
    sent
}

/// Exclusive handle on one rx queue of a started port. `Send` (move it to its
/// polling thread) but not `Sync`.
#[derive(Debug)]
pub struct RxQueue<'a> {
    dev: &'a EthDev,
    queue: u16,
    _not_sync: PhantomData<Cell<()>>,
}

impl RxQueue<'_> {
    /// The queue id.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Receives up to `max` packets, appending them to `out`; returns how many.
    pub fn rx_burst(&mut self, out: &mut Vec<Mbuf>, max: u16) -> usize {
        // SAFETY: the port is started and cannot stop while we borrow it; the
        // queue exists and this handle is its only poller (claimed, !Sync).
        unsafe { rx_burst_raw(self.dev.port_id, self.queue, out, max) }
    }
}

impl Drop for RxQueue<'_> {
    fn drop(&mut self) {
        self.dev.rx_claimed[self.queue as usize].store(false, Ordering::Release);
    }
}

/// Exclusive handle on one tx queue of a started port. `Send` but not `Sync`.
#[derive(Debug)]
pub struct TxQueue<'a> {
    dev: &'a EthDev,
    queue: u16,
    _not_sync: PhantomData<Cell<()>>,
}

impl TxQueue<'_> {
    /// The queue id.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// As [`EthDev::tx_burst`]: unsent packets stay in `pkts`.
    pub fn tx_burst(&mut self, pkts: &mut Vec<Mbuf>) -> usize {
        // SAFETY: as in RxQueue::rx_burst, for the tx queue.
        unsafe { tx_burst_raw(self.dev.port_id, self.queue, pkts) }
    }
}

impl Drop for TxQueue<'_> {
    fn drop(&mut self) {
        self.dev.tx_claimed[self.queue as usize].store(false, Ordering::Release);
    }
}

/// An rx queue handle that shares ownership of its port ([`EthDev::shared_rx_queue`]),
/// for structures that keep the port and its queue handles together (the
/// datapath's DPDK port). Same rules as [`RxQueue`]: claimed once, `Send`, not `Sync`.
#[derive(Debug)]
pub struct SharedRxQueue {
    dev: std::sync::Arc<EthDev>,
    queue: u16,
    _not_sync: PhantomData<Cell<()>>,
}

/// A tx queue handle that shares ownership of its port; as [`SharedRxQueue`].
#[derive(Debug)]
pub struct SharedTxQueue {
    dev: std::sync::Arc<EthDev>,
    queue: u16,
    _not_sync: PhantomData<Cell<()>>,
}

impl EthDev {
    /// As [`EthDev::rx_queue`], for a port behind an `Arc`: the handle keeps
    /// the port alive (and started: it cannot be stopped, which needs
    /// `&mut EthDev`, while the `Arc` is shared).
    pub fn shared_rx_queue(self: &std::sync::Arc<Self>, queue: u16) -> Result<SharedRxQueue> {
        claim(&self.rx_claimed, queue, self.started, "rx")?;
        Ok(SharedRxQueue {
            dev: self.clone(),
            queue,
            _not_sync: PhantomData,
        })
    }

    /// As [`EthDev::tx_queue`], for a port behind an `Arc`.
    pub fn shared_tx_queue(self: &std::sync::Arc<Self>, queue: u16) -> Result<SharedTxQueue> {
        claim(&self.tx_claimed, queue, self.started, "tx")?;
        Ok(SharedTxQueue {
            dev: self.clone(),
            queue,
            _not_sync: PhantomData,
        })
    }
}

impl SharedRxQueue {
    /// The queue id.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Receives up to `max` packets, appending them to `out`; returns how many.
    pub fn rx_burst(&mut self, out: &mut Vec<Mbuf>, max: u16) -> usize {
        // SAFETY: the port was started when the queue was claimed and cannot
        // be stopped while this handle holds a clone of the Arc; the queue
        // exists and this handle is its only poller (claimed, !Sync).
        unsafe { rx_burst_raw(self.dev.port_id, self.queue, out, max) }
    }
}

impl Drop for SharedRxQueue {
    fn drop(&mut self) {
        self.dev.rx_claimed[self.queue as usize].store(false, Ordering::Release);
    }
}

impl SharedTxQueue {
    /// The queue id.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// As [`EthDev::tx_burst`]: unsent packets stay in `pkts`.
    pub fn tx_burst(&mut self, pkts: &mut Vec<Mbuf>) -> usize {
        // SAFETY: as in SharedRxQueue::rx_burst, for the tx queue.
        unsafe { tx_burst_raw(self.dev.port_id, self.queue, pkts) }
    }
}

impl Drop for SharedTxQueue {
    fn drop(&mut self) {
        self.dev.tx_claimed[self.queue as usize].store(false, Ordering::Release);
    }
}
