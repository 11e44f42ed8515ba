//! The offload thread: probes ports, turns [`FastRule`]s into rte_flow
//! rules and installs/removes them off the PMD threads (see the parent
//! module's docs for the modes and the queueing).

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_queue::SegQueue;
use dpdk_bindings::flow::{self, FlowAction, FlowCount, FlowError, FlowItem, FlowRule};
use dpdk_bindings::EthDev;
use parking_lot::Mutex;

use super::{FastRule, HwOffloadSink, HwOffloadStatus, HwOffloader, PortMode, PortStatus};
use crate::packet::PortNo;

/// A rule handle a [`FlowDevice`] hands out.
pub type RuleHandle = Box<dyn Any + Send>;

/// What the offload thread needs from a device: the rte_flow calls, its
/// DPDK port id (the PORT_ID target of rules sending to it) and name.
/// [`EthFlowDevice`] is the real one; tests may supply their own.
pub trait FlowDevice: Send + Sync {
    fn name(&self) -> String;
    fn dpdk_port_id(&self) -> u16;
    fn validate(&self, rule: &FlowRule) -> Result<(), FlowError>;
    fn create(&self, rule: &FlowRule) -> Result<RuleHandle, FlowError>;
    fn destroy(&self, handle: RuleHandle) -> Result<(), FlowError>;
    fn query_count(&self, handle: &RuleHandle) -> Result<FlowCount, FlowError>;
}

/// An rte_ethdev port.
pub struct EthFlowDevice(pub Arc<EthDev>);

impl FlowDevice for EthFlowDevice {
    fn name(&self) -> String {
        self.0.name().to_string()
    }
    fn dpdk_port_id(&self) -> u16 {
        self.0.port_id()
    }
    fn validate(&self, rule: &FlowRule) -> Result<(), FlowError> {
        flow::validate(&self.0, rule)
    }
    fn create(&self, rule: &FlowRule) -> Result<RuleHandle, FlowError> {
        flow::create(&self.0, rule).map(|f| Box::new(f) as RuleHandle)
    }
    fn destroy(&self, handle: RuleHandle) -> Result<(), FlowError> {
        match handle.downcast::<flow::Flow>() {
            Ok(f) => flow::destroy(&self.0, *f),
            Err(_) => Err(foreign_handle("rte_flow_destroy")),
        }
    }
    fn query_count(&self, handle: &RuleHandle) -> Result<FlowCount, FlowError> {
        match handle.downcast_ref::<flow::Flow>() {
            Some(f) => flow::query_count(&self.0, f, true),
            None => Err(foreign_handle("rte_flow_query")),
        }
    }
}

fn foreign_handle(call: &'static str) -> FlowError {
    FlowError {
        call,
        errno: libc::EINVAL,
        kind: 0,
        message: "rule handle of another device".into(),
    }
}

/// The device behind a switch port (None: not a DPDK port).
pub type DeviceLookup = Arc<dyn Fn(PortNo) -> Option<Arc<dyn FlowDevice>> + Send + Sync>;
/// The rx queue of `port` that PMD thread `thread` polls.
pub type RxqLookup = Arc<dyn Fn(PortNo, usize) -> Option<u16> + Send + Sync>;

/// Settings of the offloader.
#[derive(Clone, Debug)]
pub struct HwOffloadConfig {
    /// Add requests queued at most (more are dropped and counted).
    pub queue_depth: usize,
    /// How often full-offload rules' COUNT actions are read.
    pub query_interval: Duration,
}

impl Default for HwOffloadConfig {
    fn default() -> Self {
        HwOffloadConfig {
            queue_depth: 4096,
            query_interval: Duration::from_secs(1),
        }
    }
}

enum Request {
    Add {
        thread: usize,
        id: u64,
        rule: FastRule,
    },
    Del {
        thread: usize,
        id: u64,
    },
}

/// How a probed port takes rules.
#[derive(Clone)]
struct PortCaps {
    name: String,
    dev: Option<Arc<dyn FlowDevice>>,
    mode: PortMode,
    /// Full form's output action uses REPRESENTED_PORT (else PORT_ID).
    represented: bool,
    /// The partial form the port validated (MARK+QUEUE or QUEUE only),
    /// usable as a fallback in full mode.
    partial: Option<bool>,
    rules: u64,
}

struct Installed {
    port: PortNo,
    handle: RuleHandle,
    full: bool,
}

#[derive(Default)]
struct Counters {
    installed: AtomicU64,
    removed: AtomicU64,
    failed: AtomicU64,
    remove_failed: AtomicU64,
    dropped: AtomicU64,
    not_offloadable: AtomicU64,
    create_calls: AtomicU64,
    hw_packets: AtomicU64,
    hw_bytes: AtomicU64,
    active: AtomicU64,
}

struct Shared {
    cfg: HwOffloadConfig,
    queue: SegQueue<Request>,
    /// Add requests in the queue.
    pending_adds: AtomicUsize,
    /// Requests taken off the queue but not finished.
    busy: AtomicUsize,
    stop: AtomicBool,
    counters: Counters,
    ports: Mutex<HashMap<PortNo, PortCaps>>,
    lookup: DeviceLookup,
    rxq_of: RxqLookup,
}

/// The offloader: a thread and its request queue.
pub struct HwOffload {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The per-PMD sink.
struct PmdSink {
    shared: Arc<Shared>,
    thread: usize,
}

impl HwOffloadSink for PmdSink {
    fn installed(&self, id: u64, rule: &FastRule) {
        let s = &self.shared;
        if s.pending_adds.fetch_add(1, Ordering::AcqRel) >= s.cfg.queue_depth {
            s.pending_adds.fetch_sub(1, Ordering::AcqRel);
            s.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        s.queue.push(Request::Add {
            thread: self.thread,
            id,
            rule: *rule,
        });
    }

    fn removed(&self, id: u64) {
        self.shared.queue.push(Request::Del {
            thread: self.thread,
            id,
        });
    }
}

/// Documentation addresses (TEST-NET-1) and the discard port of the
/// probe rule.
const PROBE_SRC: [u8; 4] = [192, 0, 2, 1];
const PROBE_DST: [u8; 4] = [192, 0, 2, 2];
const PROBE_PORT: u16 = 9;

/// TCP flags a full-offload rule requires clear (they hand the
/// connection back to software).
const FIN_SYN_RST: u8 = 0x07;

fn probe_pattern() -> Vec<FlowItem> {
    vec![
        FlowItem::Eth,
        FlowItem::Ipv4 {
            src: PROBE_SRC,
            dst: PROBE_DST,
        },
        FlowItem::Udp {
            src: PROBE_PORT,
            dst: PROBE_PORT,
        },
    ]
}

/// The full form's probe: a source rewrite, COUNT, and output back to the
/// port itself.
fn probe_full(port_id: u16, represented: bool) -> FlowRule {
    let out = if represented {
        FlowAction::RepresentedPort(port_id)
    } else {
        FlowAction::PortId(u32::from(port_id))
    };
    FlowRule {
        pattern: probe_pattern(),
        actions: vec![
            FlowAction::SetIpv4Src([192, 0, 2, 3]),
            FlowAction::SetTpSrc(PROBE_PORT),
            FlowAction::Count,
            out,
        ],
        ..Default::default()
    }
}

fn probe_partial(mark: bool) -> FlowRule {
    let mut actions = Vec::new();
    if mark {
        actions.push(FlowAction::Mark(1));
    }
    actions.push(FlowAction::Queue(0));
    FlowRule {
        pattern: probe_pattern(),
        actions,
        ..Default::default()
    }
}

/// Probe `dev`: which forms validate, then one trial create + destroy of
/// the best. Returns (mode, represented, partial).
fn probe_device(dev: &dyn FlowDevice) -> (PortMode, bool, Option<bool>) {
    let id = dev.dpdk_port_id();
    let mut full = None;
    let mut why = Vec::new();
    for represented in [false, true] {
        match dev.validate(&probe_full(id, represented)) {
            Ok(()) => {
                full = Some(represented);
                break;
            }
            Err(e) => why.push(format!("full: {e}")),
        }
    }
    let mut partial = None;
    for mark in [true, false] {
        match dev.validate(&probe_partial(mark)) {
            Ok(()) => {
                partial = Some(mark);
                break;
            }
            Err(e) => why.push(format!(
                "{}: {e}",
                if mark { "mark+queue" } else { "queue" }
            )),
        }
    }
    let trial = |rule: FlowRule| -> Result<(), FlowError> {
        let h = dev.create(&rule)?;
        dev.destroy(h)
    };
    if let Some(represented) = full {
        match trial(probe_full(id, represented)) {
            Ok(()) => return (PortMode::Full, represented, partial),
            Err(e) => why.push(format!("full validated but create failed: {e}")),
        }
    }
    if let Some(mark) = partial {
        match trial(probe_partial(mark)) {
            Ok(()) => return (PortMode::Partial { mark }, false, Some(mark)),
            Err(e) => why.push(format!(
                "{} validated but create failed: {e}",
                if mark { "mark+queue" } else { "queue" }
            )),
        }
    }
    // The last reason is the most telling (the weakest form's).
    let reason = why.pop().unwrap_or_else(|| "no form validated".into());
    (PortMode::None(reason), false, None)
}

impl Shared {
    /// The port's capabilities, probing it the first time.
    fn caps(&self, port: PortNo) -> PortCaps {
        if let Some(c) = self.ports.lock().get(&port) {
            return c.clone();
        }
        let caps = match (self.lookup)(port) {
            None => PortCaps {
                name: format!("{port}"),
                dev: None,
                mode: PortMode::None("not a DPDK port".into()),
                represented: false,
                partial: None,
                rules: 0,
            },
            Some(dev) => {
                let (mode, represented, partial) = probe_device(&*dev);
                match &mode {
                    PortMode::None(why) => tracing::info!(
                        "hw offload: port {port} ({}): software only: {why}",
                        dev.name()
                    ),
                    m => tracing::info!("hw offload: port {port} ({}): {m}", dev.name()),
                }
                PortCaps {
                    name: dev.name(),
                    dev: Some(dev),
                    mode,
                    represented,
                    partial,
                    rules: 0,
                }
            }
        };
        self.ports.lock().entry(port).or_insert(caps).clone()
    }

    /// The rte_flow rule for `r` on a port with `caps` (PMD `thread`), and
    /// whether it is the full form; None if the port's mode cannot express
    /// it.
    fn build(&self, r: &FastRule, caps: &PortCaps, thread: usize) -> Option<(FlowRule, bool)> {
        let mut pattern = vec![FlowItem::Eth];
        let (mut s4, mut d4) = ([0u8; 4], [0u8; 4]);
        s4.copy_from_slice(&r.src[..4]);
        d4.copy_from_slice(&r.dst[..4]);
        pattern.push(if r.ipv6 {
            FlowItem::Ipv6 {
                src: r.src,
                dst: r.dst,
            }
        } else {
            FlowItem::Ipv4 { src: s4, dst: d4 }
        });
        let l4 = |flags_clear| {
            if r.proto == 6 {
                FlowItem::Tcp {
                    src: r.sport,
                    dst: r.dport,
                    flags_clear,
                }
            } else {
                FlowItem::Udp {
                    src: r.sport,
                    dst: r.dport,
                }
            }
        };
        if caps.mode == PortMode::Full && !r.other_rewrites {
            let out = (self.lookup)(r.out).map(|d| d.dpdk_port_id());
            if let Some(out) = out {
                let mut p = pattern.clone();
                p.push(l4(FIN_SYN_RST));
                let mut a = Vec::new();
                let v4 = |x: &[u8; 16]| {
                    let mut b = [0u8; 4];
                    b.copy_from_slice(&x[..4]);
                    b
                };
                if let Some(x) = &r.set_src {
                    a.push(if r.ipv6 {
                        FlowAction::SetIpv6Src(*x)
                    } else {
                        FlowAction::SetIpv4Src(v4(x))
                    });
                }
                if let Some(x) = &r.set_dst {
                    a.push(if r.ipv6 {
                        FlowAction::SetIpv6Dst(*x)
                    } else {
                        FlowAction::SetIpv4Dst(v4(x))
                    });
                }
                if let Some(p) = r.set_sport {
                    a.push(FlowAction::SetTpSrc(p));
                }
                if let Some(p) = r.set_dport {
                    a.push(FlowAction::SetTpDst(p));
                }
                a.push(FlowAction::Count);
                a.push(if caps.represented {
                    FlowAction::RepresentedPort(out)
                } else {
                    FlowAction::PortId(u32::from(out))
                });
                return Some((
                    FlowRule {
                        pattern: p,
                        actions: a,
                        ..Default::default()
                    },
                    true,
                ));
            }
        }
        let mark = match caps.mode {
            PortMode::Partial { mark } => mark,
            PortMode::Full => caps.partial?,
            PortMode::None(_) => return None,
        };
        let queue = (self.rxq_of)(r.in_port, thread)?;
        pattern.push(l4(0));
        let mut actions = Vec::new();
        if mark {
            actions.push(FlowAction::Mark(mark_of(thread, r)));
        }
        actions.push(FlowAction::Queue(queue));
        Some((
            FlowRule {
                pattern,
                actions,
                ..Default::default()
            },
            false,
        ))
    }
}

/// The MARK of a partial rule: a 24-bit hash of the tuple and thread, not
/// guaranteed unique (the rx side does not read marks yet; see the module
/// docs; reading them would need a mark -> entry table).
fn mark_of(thread: usize, r: &FastRule) -> u32 {
    let mut h: u32 = 0x811c_9dc5 ^ thread as u32;
    for b in r
        .src
        .iter()
        .chain(r.dst.iter())
        .chain(r.sport.to_be_bytes().iter())
        .chain(r.dport.to_be_bytes().iter())
    {
        h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
    }
    // MARK ids are often limited to 24 bits; 0 means "no mark".
    (h & 0x00ff_ffff).max(1)
}

/// The offload thread's own state.
struct Worker {
    shared: Arc<Shared>,
    rules: HashMap<(usize, u64), Installed>,
    last_query: Instant,
}

impl Worker {
    fn run(mut self) {
        loop {
            let mut did = false;
            loop {
                // Busy before the pop, so that an empty queue and no busy
                // worker mean everything was handled (`wait_idle`).
                self.shared.busy.fetch_add(1, Ordering::AcqRel);
                let Some(req) = self.shared.queue.pop() else {
                    self.shared.busy.fetch_sub(1, Ordering::AcqRel);
                    break;
                };
                self.handle(req);
                self.shared.busy.fetch_sub(1, Ordering::AcqRel);
                did = true;
            }
            if self.last_query.elapsed() >= self.shared.cfg.query_interval {
                self.query_counts();
                self.last_query = Instant::now();
            }
            if self.shared.stop.load(Ordering::Acquire) && self.shared.queue.is_empty() {
                break;
            }
            if !did {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // Nothing stays in hardware after the offloader stops.
        let keys: Vec<(usize, u64)> = self.rules.keys().copied().collect();
        for k in keys {
            self.remove(k);
        }
    }

    fn handle(&mut self, req: Request) {
        match req {
            Request::Add { thread, id, rule } => {
                self.shared.pending_adds.fetch_sub(1, Ordering::AcqRel);
                // A reused id whose removal was not seen (should not
                // happen; the contract pairs them): replace.
                self.remove((thread, id));
                self.add(thread, id, &rule);
            }
            Request::Del { thread, id } => self.remove((thread, id)),
        }
    }

    fn add(&mut self, thread: usize, id: u64, r: &FastRule) {
        let c = &self.shared.counters;
        let caps = self.shared.caps(r.in_port);
        let (Some(dev), Some((rule, full))) =
            (caps.dev.clone(), self.shared.build(r, &caps, thread))
        else {
            c.not_offloadable.fetch_add(1, Ordering::Relaxed);
            return;
        };
        c.create_calls.fetch_add(1, Ordering::Relaxed);
        match dev.create(&rule) {
            Ok(handle) => {
                c.installed.fetch_add(1, Ordering::Relaxed);
                c.active.fetch_add(1, Ordering::Relaxed);
                if let Some(p) = self.shared.ports.lock().get_mut(&r.in_port) {
                    p.rules += 1;
                }
                self.rules.insert(
                    (thread, id),
                    Installed {
                        port: r.in_port,
                        handle,
                        full,
                    },
                );
            }
            Err(e) => {
                c.failed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("hw offload: port {}: {e}", r.in_port);
            }
        }
    }

    fn remove(&mut self, key: (usize, u64)) {
        let Some(inst) = self.rules.remove(&key) else {
            return;
        };
        let c = &self.shared.counters;
        c.active.fetch_sub(1, Ordering::Relaxed);
        let dev = self.shared.ports.lock().get_mut(&inst.port).and_then(|p| {
            p.rules = p.rules.saturating_sub(1);
            p.dev.clone()
        });
        let res = match dev {
            Some(d) => d.destroy(inst.handle),
            None => Err(foreign_handle("rte_flow_destroy")),
        };
        match res {
            Ok(()) => {
                c.removed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                c.remove_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("hw offload: port {}: {e}", inst.port);
            }
        }
    }

    fn query_counts(&mut self) {
        let c = &self.shared.counters;
        for inst in self.rules.values().filter(|i| i.full) {
            let dev = self
                .shared
                .ports
                .lock()
                .get(&inst.port)
                .and_then(|p| p.dev.clone());
            if let Some(d) = dev {
                if let Ok(n) = d.query_count(&inst.handle) {
                    c.hw_packets
                        .fetch_add(n.hits.unwrap_or(0), Ordering::Relaxed);
                    c.hw_bytes
                        .fetch_add(n.bytes.unwrap_or(0), Ordering::Relaxed);
                }
            }
        }
    }
}

impl HwOffload {
    /// Start the offload thread.
    pub fn start(
        cfg: HwOffloadConfig,
        lookup: DeviceLookup,
        rxq_of: RxqLookup,
    ) -> std::io::Result<Arc<HwOffload>> {
        let shared = Arc::new(Shared {
            cfg,
            queue: SegQueue::new(),
            pending_adds: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            counters: Counters::default(),
            ports: Mutex::new(HashMap::new()),
            lookup,
            rxq_of,
        });
        let worker = Worker {
            shared: shared.clone(),
            rules: HashMap::new(),
            last_query: Instant::now(),
        };
        let t = std::thread::Builder::new()
            .name("hw-offload".into())
            .spawn(move || worker.run())?;
        Ok(Arc::new(HwOffload {
            shared,
            thread: Mutex::new(Some(t)),
        }))
    }

    /// Probe `port` now (a no-op if it was probed) and return its mode.
    pub fn probe(&self, port: PortNo) -> PortMode {
        self.shared.caps(port).mode
    }

    /// True once every queued request has been handled (tests), waiting up
    /// to `timeout`.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if self.shared.queue.is_empty() && self.shared.busy.load(Ordering::Acquire) == 0 {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Handle what is queued, destroy every rule still installed, and stop
    /// the thread.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl Drop for HwOffload {
    fn drop(&mut self) {
        self.stop();
    }
}

impl HwOffloader for HwOffload {
    fn sink(&self, thread: usize) -> Arc<dyn HwOffloadSink> {
        Arc::new(PmdSink {
            shared: self.shared.clone(),
            thread,
        })
    }

    fn status(&self) -> HwOffloadStatus {
        let c = &self.shared.counters;
        let mut ports: Vec<PortStatus> = self
            .shared
            .ports
            .lock()
            .iter()
            .map(|(no, p)| PortStatus {
                port: *no,
                name: p.name.clone(),
                mode: p.mode.clone(),
                rules: p.rules,
            })
            .collect();
        ports.sort_by_key(|p| p.port);
        HwOffloadStatus {
            installed: c.installed.load(Ordering::Relaxed),
            removed: c.removed.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            remove_failed: c.remove_failed.load(Ordering::Relaxed),
            requests_dropped: c.dropped.load(Ordering::Relaxed),
            not_offloadable: c.not_offloadable.load(Ordering::Relaxed),
            create_calls: c.create_calls.load(Ordering::Relaxed),
            hw_packets: c.hw_packets.load(Ordering::Relaxed),
            hw_bytes: c.hw_bytes.load(Ordering::Relaxed),
            active: c.active.load(Ordering::Relaxed),
            ports,
        }
    }

    fn stop(&self) {
        HwOffload::stop(self);
    }
}

/// An offloader for the DPDK ports of `sw` whose PMD threads number
/// `threads`: devices are found through [`crate::port::Port::dpdk_device`],
/// a partial rule's queue is the first rx queue of the ingress port the
/// owning thread polls (round-robin assignment, [`crate::pmd::assign_rxqs`]).
/// The ports present now are probed before it returns.
pub fn for_switch(
    sw: &Arc<crate::switch::Switch>,
    threads: usize,
    cfg: HwOffloadConfig,
) -> std::io::Result<Arc<HwOffload>> {
    let weak = Arc::downgrade(sw);
    let lookup: DeviceLookup = Arc::new(move |no| {
        let sw = weak.upgrade()?;
        let dev = sw
            .ports()
            .into_iter()
            .find(|p| p.port_no() == no)?
            .dpdk_device()?;
        Some(Arc::new(EthFlowDevice(dev)) as Arc<dyn FlowDevice>)
    });
    let weak = Arc::downgrade(sw);
    let n = threads.max(1);
    let rxq_of: RxqLookup = Arc::new(move |no, thread| {
        let sw = weak.upgrade()?;
        crate::pmd::assign_rxqs(&sw.ports(), thread, n)
            .into_iter()
            .find(|(p, _)| p.port_no() == no)
            .and_then(|(_, q)| u16::try_from(q).ok())
    });
    let h = HwOffload::start(cfg, lookup, rxq_of)?;
    for p in sw.ports() {
        if p.dpdk_device().is_some() {
            h.probe(p.port_no());
        }
    }
    Ok(h)
}
