//! Poll-mode threads.
//!
//! Each PMD thread owns a [`Pipeline`] (its caches, packet pool and output
//! batches) and polls its receive queues in a loop: receive a burst, run it
//! through the pipeline, move on. Receive queues are spread over the
//! threads round-robin in (port number, queue) order, as OVS's
//! `pmd-rxq-assign=roundrobin` does; when ports come or go every thread
//! recomputes its share. A thread can be pinned to a core.
//!
//! Time is measured with the monotonic clock once per iteration (not per
//! packet): an iteration that received packets counts as busy, one that
//! did not as idle. OVS reports TSC cycles; ferrovs reports nanoseconds.
//! After `idle_sleep_after` empty iterations in a row a thread sleeps
//! `idle_sleep_us` between polls (0: never sleep, pure busy polling), so
//! software-port setups do not burn a core while idle.
//!
//! A housekeeping thread expires conntrack entries (`Tracker::sweep`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::packet::PacketBatch;
use crate::pipeline::{Pipeline, PipelineConfig, PipelineCounters};
use crate::port::Port;
use crate::switch::Switch;

/// Configuration of the PMD threads.
#[derive(Clone, Debug)]
pub struct PmdConfig {
    /// Number of threads.
    pub threads: usize,
    /// Cores to pin thread i to (`cores[i]`), if given.
    pub cores: Vec<usize>,
    pub pipeline: PipelineConfig,
    /// Sleep this long between polls once idle (0: busy-poll).
    pub idle_sleep_us: u64,
    /// Empty iterations in a row before sleeping.
    pub idle_sleep_after: u32,
}

impl Default for PmdConfig {
    fn default() -> Self {
        PmdConfig {
            threads: 1,
            cores: Vec::new(),
            pipeline: PipelineConfig::default(),
            idle_sleep_us: 100,
            idle_sleep_after: 1000,
        }
    }
}

/// One receive queue and what its thread measured on it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RxqStats {
    pub port: String,
    pub queue: usize,
    pub packets: u64,
    pub busy_ns: u64,
}

/// A thread's published statistics.
#[derive(Clone, Debug, Default)]
pub struct PmdSnapshot {
    pub id: usize,
    pub core: Option<usize>,
    pub counters: PipelineCounters,
    pub busy_ns: u64,
    pub idle_ns: u64,
    pub iterations: u64,
    pub megaflows: usize,
    pub emc_entries: usize,
    /// Whether this thread runs the flow-offload fast path.
    pub flow_offload: bool,
    /// Fast-path entries (offloaded connection directions) in use.
    pub offload_entries: usize,
    /// The longest single poll-loop iteration since the start or the last
    /// clear: how long the thread went between starting two rounds of
    /// receive bursts (a stall on a lock shows here).
    pub longest_iteration_ns: u64,
    pub rxqs: Vec<RxqStats>,
    /// Counters at the last `pmd-stats-clear`.
    pub cleared: Option<Box<PmdSnapshot>>,
}

impl PmdSnapshot {
    /// These statistics minus those at the last clear.
    pub fn since_clear(&self) -> PmdSnapshot {
        let Some(base) = &self.cleared else {
            return self.clone();
        };
        let mut s = self.clone();
        s.cleared = None;
        s.counters = self.counters.since(&base.counters);
        s.busy_ns -= base.busy_ns.min(s.busy_ns);
        s.idle_ns -= base.idle_ns.min(s.idle_ns);
        s.iterations -= base.iterations.min(s.iterations);
        for q in &mut s.rxqs {
            if let Some(b) = base
                .rxqs
                .iter()
                .find(|b| b.port == q.port && b.queue == q.queue)
            {
                q.packets -= b.packets.min(q.packets);
                q.busy_ns -= b.busy_ns.min(q.busy_ns);
            }
        }
        s
    }
}

/// Requests from the control plane to one thread.
#[derive(Default)]
struct Control {
    stop: AtomicBool,
    flush_caches: AtomicBool,
    dump: Mutex<Option<Vec<String>>>,
    want_dump: AtomicBool,
    /// Restart `longest_iteration_ns` (`pmd-stats-clear`).
    reset_longest: AtomicBool,
}

struct PmdThread {
    id: usize,
    core: Option<usize>,
    control: Arc<Control>,
    stats: Arc<Mutex<PmdSnapshot>>,
    join: Option<JoinHandle<()>>,
}

/// The running PMD threads of a switch, plus housekeeping.
pub struct PmdSet {
    sw: Arc<Switch>,
    threads: Vec<PmdThread>,
    housekeeping: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl PmdSet {
    /// Start `cfg.threads` PMD threads (at least one) polling `sw`'s ports.
    pub fn start(sw: Arc<Switch>, cfg: &PmdConfig) -> std::io::Result<PmdSet> {
        let n = cfg.threads.max(1);
        let mut threads = Vec::with_capacity(n);
        for id in 0..n {
            let core = cfg.cores.get(id).copied();
            let control = Arc::new(Control::default());
            let stats = Arc::new(Mutex::new(PmdSnapshot {
                id,
                core,
                flow_offload: cfg.pipeline.flow_offload,
                ..Default::default()
            }));
            let (sw2, c2, s2, cfg2) = (sw.clone(), control.clone(), stats.clone(), cfg.clone());
            let join = std::thread::Builder::new()
                .name(format!("pmd-{id}"))
                .spawn(move || run(sw2, cfg2, id, n, core, c2, s2))?;
            threads.push(PmdThread {
                id,
                core,
                control,
                stats,
                join: Some(join),
            });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (sw2, stop2) = (sw.clone(), stop.clone());
        let hk = std::thread::Builder::new()
            .name("ct-sweep".into())
            .spawn(move || {
                while !stop2.load(Ordering::Acquire) {
                    sw2.ct.sweep(sw2.clock.now_ns(), 65_536);
                    std::thread::sleep(Duration::from_millis(50));
                }
            })?;
        Ok(PmdSet {
            sw,
            threads,
            housekeeping: Some((stop, hk)),
        })
    }

    /// The switch these threads serve.
    pub fn switch(&self) -> &Arc<Switch> {
        &self.sw
    }

    /// Each thread's latest statistics (published every few milliseconds).
    pub fn stats(&self) -> Vec<PmdSnapshot> {
        self.threads
            .iter()
            .map(|t| t.stats.lock().clone())
            .collect()
    }

    /// Start counting from zero (`pmd-stats-clear`).
    pub fn clear_stats(&self) {
        for t in &self.threads {
            let mut s = t.stats.lock();
            let mut base = s.clone();
            base.cleared = None;
            s.cleared = Some(Box::new(base));
            // A maximum cannot be subtracted: the thread restarts it.
            s.longest_iteration_ns = 0;
            t.control.reset_longest.store(true, Ordering::Release);
        }
    }

    /// Ask every thread to empty its caches.
    pub fn flush_caches(&self) {
        for t in &self.threads {
            t.control.flush_caches.store(true, Ordering::Release);
        }
    }

    /// Each thread's megaflows, as text (`dpctl/dump-flows`). Waits up to
    /// a second for the threads to answer.
    pub fn dump_megaflows(&self) -> Vec<(usize, Vec<String>)> {
        for t in &self.threads {
            *t.control.dump.lock() = None;
            t.control.want_dump.store(true, Ordering::Release);
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut out = Vec::new();
        for t in &self.threads {
            loop {
                if let Some(d) = t.control.dump.lock().take() {
                    out.push((t.id, d));
                    break;
                }
                if Instant::now() > deadline {
                    out.push((t.id, vec!["(thread did not answer)".into()]));
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        out
    }

    /// Stop and join every thread (their pending output is flushed).
    pub fn stop(&mut self) {
        for t in &self.threads {
            t.control.stop.store(true, Ordering::Release);
        }
        for t in &mut self.threads {
            if let Some(j) = t.join.take() {
                let _ = j.join();
            }
        }
        if let Some((stop, j)) = self.housekeeping.take() {
            stop.store(true, Ordering::Release);
            let _ = j.join();
        }
    }

    /// Thread ids and cores.
    pub fn threads(&self) -> Vec<(usize, Option<usize>)> {
        self.threads.iter().map(|t| (t.id, t.core)).collect()
    }
}

impl Drop for PmdSet {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Thread `id` of `n`'s share of the receive queues.
pub fn assign_rxqs(ports: &[Arc<dyn Port>], id: usize, n: usize) -> Vec<(Arc<dyn Port>, usize)> {
    let mut all: Vec<(Arc<dyn Port>, usize)> = Vec::new();
    let mut sorted: Vec<&Arc<dyn Port>> = ports.iter().collect();
    sorted.sort_by_key(|p| p.port_no());
    for p in sorted {
        for q in 0..p.n_rxq() {
            all.push((p.clone(), q));
        }
    }
    all.into_iter()
        .enumerate()
        .filter(|(i, _)| i % n == id)
        .map(|(_, x)| x)
        .collect()
}

#[cfg(target_os = "linux")]
fn pin(core: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(core).is_ok() {
        if let Err(e) = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set) {
            tracing::warn!("could not pin PMD thread to core {core}: {e}");
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn pin(_core: usize) {}

/// The poll loop.
fn run(
    sw: Arc<Switch>,
    cfg: PmdConfig,
    id: usize,
    n: usize,
    core: Option<usize>,
    control: Arc<Control>,
    stats: Arc<Mutex<PmdSnapshot>>,
) {
    if let Some(c) = core {
        pin(c);
    }
    // An lcore id gives this thread DPDK's per-lcore mempool cache.
    #[cfg(feature = "dpdk")]
    let _lcore = crate::port::dpdk::register_pmd_thread();
    let mut pipeline = Pipeline::new(sw.clone(), cfg.pipeline.clone(), id);
    let mut port_version = sw.port_version();
    let mut rxqs = assign_rxqs(&sw.ports(), id, n);
    let mut rxq_stats: Vec<RxqStats> = rxq_list(&rxqs);
    let mut batch = PacketBatch::new();
    let (mut busy_ns, mut idle_ns, mut iterations) = (0u64, 0u64, 0u64);
    let mut longest_ns = 0u64;
    let mut empty_run = 0u32;
    let mut last = Instant::now();
    let mut last_publish = last;
    while !control.stop.load(Ordering::Acquire) {
        let v = sw.port_version();
        if v != port_version {
            port_version = v;
            pipeline.reload_ports();
            rxqs = assign_rxqs(&sw.ports(), id, n);
            rxq_stats = rxq_list(&rxqs);
        }
        if control.flush_caches.swap(false, Ordering::AcqRel) {
            pipeline.flush_caches();
        }
        if control.want_dump.swap(false, Ordering::AcqRel) {
            *control.dump.lock() = Some(pipeline.dump_megaflows());
        }
        if control.reset_longest.swap(false, Ordering::AcqRel) {
            longest_ns = 0;
        }
        let mut got = 0;
        for (q, (port, queue)) in rxqs.iter().enumerate() {
            let k = port.rx_burst(*queue, &mut batch, &mut pipeline.pool);
            if k > 0 {
                let t0 = Instant::now();
                pipeline.process(&mut batch);
                rxq_stats[q].packets += k as u64;
                rxq_stats[q].busy_ns += t0.elapsed().as_nanos() as u64;
                got += k;
            }
        }
        iterations += 1;
        let now = Instant::now();
        let dt = now.duration_since(last).as_nanos() as u64;
        last = now;
        longest_ns = longest_ns.max(dt);
        if got > 0 {
            busy_ns += dt;
            empty_run = 0;
        } else {
            idle_ns += dt;
            empty_run = empty_run.saturating_add(1);
            pipeline.revalidate_if_due();
            if cfg.idle_sleep_us > 0 && empty_run >= cfg.idle_sleep_after {
                pipeline.flush();
                std::thread::sleep(Duration::from_micros(cfg.idle_sleep_us));
            }
        }
        if now.duration_since(last_publish) >= Duration::from_millis(5) {
            last_publish = now;
            let mut s = stats.lock();
            s.counters = pipeline.counters;
            s.busy_ns = busy_ns;
            s.idle_ns = idle_ns;
            s.iterations = iterations;
            s.megaflows = pipeline.megaflow_count();
            s.emc_entries = pipeline.emc_count();
            s.offload_entries = pipeline.offload_count();
            s.longest_iteration_ns = longest_ns;
            s.rxqs.clone_from(&rxq_stats);
        }
    }
    pipeline.flush();
    let mut s = stats.lock();
    s.counters = pipeline.counters;
    s.busy_ns = busy_ns;
    s.idle_ns = idle_ns;
    s.iterations = iterations;
    s.offload_entries = pipeline.offload_count();
    s.longest_iteration_ns = longest_ns;
    s.rxqs = rxq_stats;
}

fn rxq_list(rxqs: &[(Arc<dyn Port>, usize)]) -> Vec<RxqStats> {
    rxqs.iter()
        .map(|(p, q)| RxqStats {
            port: p.name().to_string(),
            queue: *q,
            packets: 0,
            busy_ns: 0,
        })
        .collect()
}
