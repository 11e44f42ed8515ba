//! The packet pipeline of one poll-mode thread, read top to bottom
//! (OVS's `dp_netdev_input`):
//!
//! 1. **extract** every packet's [`FlowKey`];
//! 2. **classify**: exact-match cache, then megaflow cache, then the slow
//!    path ([`upcall::translate`]) which installs a megaflow;
//! 3. **group** the batch by megaflow, so each program runs once over its
//!    packets (a `ct` op is one conntrack call for the whole group);
//! 4. **execute** the program: rewrites, VLAN push/pop, conntrack (IP
//!    fragments are reassembled first and leave as the original fragments:
//!    [`crate::defrag`]), output into per-port batches;
//! 5. **recirculate**: packets a `ct(table=N)` sent back go through 2-4
//!    again with their updated keys (no re-extraction), up to
//!    [`PipelineConfig::max_recirc_depth`] passes;
//! 6. **flush** the output batches.
//!
//! The caches belong to this thread. A change to the flow tables, the
//! ports, the MAC table or the timeout policies moves [`Switch::generation`];
//! the next batch notices and empties the caches before looking anything up,
//! so a deleted flow stops matching at once. A periodic revalidation pass
//! credits rule counters, refreshes MAC learning for active flows and
//! evicts idle megaflows.

use std::sync::Arc;

use crate::action::{nat, rewrite, vlan};
use crate::cache::emc::ExactMatchCache;
use crate::cache::megaflow::{Megaflow, MegaflowCache, DEFAULT_MAX_MEGAFLOWS};
use crate::cache::FlowRef;
use crate::defrag::{self, Defrag};
use crate::fastpath::{FastPath, Verdict};
use crate::flow::{extract, flow_hash, ExtractStats, FlowKey};
use crate::output::TxPorts;
use crate::packet::{OffloadFlags, Packet, PacketBatch, PacketPool, PortNo, DEFAULT_HEADROOM};
use crate::program::{CtOp, Op};
use crate::switch::Switch;
use crate::upcall::{self, convert};
use crate::BATCH_SIZE;

/// Tuning of one pipeline.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Use the exact-match cache.
    pub emc: bool,
    /// Use the megaflow cache (without it every packet is translated; the
    /// exact-match cache needs it).
    pub megaflow: bool,
    /// Insert one exact-match miss in this many (OVS default 100; 1 = all).
    pub emc_insert_inv_prob: u32,
    pub max_megaflows: usize,
    /// Passes through the caches a packet may make (first + recirculations).
    pub max_recirc_depth: u8,
    /// How often to revalidate megaflows (credit rules, refresh MACs).
    pub revalidate_ms: u64,
    /// Megaflows unused this long are evicted (OVS `max-idle`).
    pub max_idle_ms: u64,
    /// Flow offload by policy: established connections whose pipeline is
    /// offloadable take the fast path ([`crate::fastpath`]). Off by
    /// default.
    pub flow_offload: bool,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            emc: true,
            megaflow: true,
            emc_insert_inv_prob: 100,
            max_megaflows: DEFAULT_MAX_MEGAFLOWS,
            max_recirc_depth: 8,
            revalidate_ms: 500,
            max_idle_ms: 10_000,
            flow_offload: false,
        }
    }
}

/// Declares a counters struct of `u64` fields and its field-by-field
/// difference, so the field list is written once.
macro_rules! counters {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident: u64,)* }) => {
        $(#[$m])*
        pub struct $name { $($(#[$fm])* pub $f: u64,)* }

        impl $name {
            /// These counters minus `base`, field by field (saturating).
            pub fn since(&self, base: &$name) -> $name {
                $name { $($f: self.$f.saturating_sub(base.$f),)* }
            }
        }
    };
}

counters! {
/// What the pipeline counted (plain integers: one thread writes them; the
/// PMD publishes snapshots).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineCounters {
    /// Packets received (first passes).
    pub packets: u64,
    pub bytes: u64,
    /// Extra passes caused by recirculation.
    pub recirculations: u64,
    /// Packets that matched the megaflow of the previous packet of their
    /// batch (checked before any cache lookup).
    pub batch_hits: u64,
    pub emc_hits: u64,
    pub megaflow_hits: u64,
    /// Subtables searched by megaflow lookups that hit.
    pub subtables_searched: u64,
    /// Misses translated successfully / not.
    pub upcalls: u64,
    pub upcall_failures: u64,
    /// Packets whose program was empty (the flow tables drop them).
    pub dropped_by_flow: u64,
    /// Packets extraction found malformed (still run through the pipeline).
    pub malformed: u64,
    /// Packets dropped for exceeding the recirculation depth.
    pub recirc_too_deep: u64,
    /// Forks beyond one batch's worth of recirculated packets in one pass.
    pub recirc_overflow: u64,
    /// Packets sent to a port that does not exist (or was removed).
    pub output_no_port: u64,
    /// Header rewrites that could not be applied (header absent).
    pub rewrite_errors: u64,
    /// Packets handed to conntrack.
    pub ct_packets: u64,
    /// Packets dropped because conntrack found no free NAT binding.
    pub nat_dropped: u64,
    /// Packets sent to the controller.
    pub controller: u64,
    /// Megaflows installed / evicted or invalidated.
    pub megaflows_installed: u64,
    pub megaflows_removed: u64,
    /// Times the caches were emptied because the switch changed.
    pub cache_flushes: u64,
    /// Output bursts and the packets in them.
    pub tx_bursts: u64,
    pub tx_packets: u64,
    /// IP fragments held for reassembly before conntrack (not drops).
    pub frag_held: u64,
    /// Datagrams reassembled (each replaced its last fragment).
    pub frag_reassembled: u64,
    /// Fragments the reassembler refused (left to conntrack: `+inv`).
    pub frag_rejected: u64,
    /// Reassembled datagrams dropped: frame too long for extraction.
    pub frag_too_long: u64,
    /// Packets the flow-offload fast path forwarded (no classification,
    /// no conntrack lookup).
    pub offload_hits: u64,
    /// Fast-path entries installed / handed back to the classic path.
    pub offload_installs: u64,
    pub offload_handbacks: u64,
    /// Fragments sent out again by output.
    pub frag_sent: u64,
    /// Reassembled packets that could not be cut into their fragments.
    pub frag_send_errors: u64,
}
}

/// Scratch for one pass over up to [`BATCH_SIZE`] packets.
struct Pass {
    pkts: [Option<Packet>; BATCH_SIZE],
    keys: [FlowKey; BATCH_SIZE],
    /// Set by a `ct` op that was a packet's last: the packet stays in its
    /// slot, key updated in place, and goes round again.
    again: [bool; BATCH_SIZE],
    n: usize,
}

impl Pass {
    fn new() -> Box<Pass> {
        Box::new(Pass {
            pkts: std::array::from_fn(|_| None),
            keys: [FlowKey::ZERO; BATCH_SIZE],
            again: [false; BATCH_SIZE],
            n: 0,
        })
    }
}

/// How one packet was classified.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Cached(FlowRef),
    /// Translated but not cached (cache disabled or full): run `uncached[i]`.
    Uncached(u8),
    Drop,
}

/// The per-thread pipeline.
pub struct Pipeline {
    sw: Arc<Switch>,
    cfg: PipelineConfig,
    emc: ExactMatchCache,
    megaflows: MegaflowCache,
    pub pool: PacketPool,
    pub tx: TxPorts,
    pub counters: PipelineCounters,
    pub extract_stats: ExtractStats,
    generation: u64,
    last_revalidate_ms: u64,
    thread_index: usize,
    pass: Box<Pass>,
    recirc: Box<Pass>,
    /// Translations of this batch that were not cached.
    uncached: Vec<Box<[Op]>>,
    ct_results: Vec<ct::CtResult>,
    defrag: Defrag,
    fastpath: FastPath,
}

impl Pipeline {
    /// A pipeline for poll-mode thread `thread_index` of `sw`.
    pub fn new(sw: Arc<Switch>, cfg: PipelineConfig, thread_index: usize) -> Pipeline {
        let ports = sw.ports();
        let mut fastpath = FastPath::default();
        if let Some(h) = sw.hw_offload() {
            fastpath.set_hw_offload(Some(h.sink(thread_index)));
        }
        let emc_prob = if cfg.emc && cfg.megaflow {
            cfg.emc_insert_inv_prob
        } else {
            0
        };
        Pipeline {
            generation: sw.generation(),
            emc: ExactMatchCache::new(emc_prob),
            megaflows: MegaflowCache::new(cfg.max_megaflows),
            pool: PacketPool::default(),
            tx: TxPorts::new(&ports, thread_index),
            counters: PipelineCounters::default(),
            extract_stats: ExtractStats::default(),
            last_revalidate_ms: 0,
            thread_index,
            pass: Pass::new(),
            recirc: Pass::new(),
            uncached: Vec::new(),
            ct_results: vec![ct::CtResult::default(); BATCH_SIZE],
            defrag: Defrag::default(),
            fastpath,
            sw,
            cfg,
        }
    }

    pub fn config(&self) -> &PipelineConfig {
        &self.cfg
    }

    /// Megaflows cached.
    pub fn megaflow_count(&self) -> usize {
        self.megaflows.len()
    }

    /// Fast-path entries (offloaded connection directions).
    pub fn offload_count(&self) -> usize {
        self.fastpath.len()
    }

    /// Exact-match entries in use.
    pub fn emc_count(&self) -> usize {
        self.emc.len()
    }

    /// Re-read the port set (after add-port/del-port).
    pub fn reload_ports(&mut self) {
        self.tx.flush(&mut self.pool);
        let ports = self.sw.ports();
        self.tx.set_ports(&ports, self.thread_index);
    }

    /// Run a received batch through the pipeline. Every packet ends up
    /// queued for output, recirculated to completion, or freed; the batch
    /// is left empty. Output batches are flushed at the end.
    pub fn process(&mut self, batch: &mut PacketBatch) {
        let now_ns = self.sw.clock.now_ns();
        self.check_generation();
        self.defrag.begin_batch();
        // 1. Extract.
        self.pass.n = 0;
        for mut pkt in batch.drain() {
            let i = self.pass.n;
            let key = &mut self.pass.keys[i];
            let (data, meta) = pkt.data_and_meta_mut();
            let r = extract(data, meta, key);
            self.extract_stats.record(key, r);
            self.counters.malformed += r.is_err() as u64;
            self.counters.packets += 1;
            self.counters.bytes += pkt.len() as u64;
            self.pass.pkts[i] = Some(pkt);
            self.pass.n += 1;
        }
        if self.cfg.flow_offload {
            self.fast_path(now_ns);
        }
        // 2-5. Classify, group, execute; then again for recirculated packets
        // (run_pass leaves them, and only them, in the pass).
        let mut depth = 1;
        loop {
            self.run_pass(now_ns);
            if self.pass.n == 0 {
                break;
            }
            depth += 1;
            if depth > self.cfg.max_recirc_depth as usize {
                self.counters.recirc_too_deep += self.pass.n as u64;
                for p in self.pass.pkts[..self.pass.n].iter_mut() {
                    if let Some(p) = p.take() {
                        self.pool.free(p);
                    }
                }
                self.pass.n = 0;
                break;
            }
            self.counters.recirculations += self.pass.n as u64;
        }
        // 6. Flush.
        self.flush();
        if self.cfg.flow_offload {
            self.sync_offload_counters();
        }
        if now_ns / 1_000_000 >= self.last_revalidate_ms + self.cfg.revalidate_ms {
            self.revalidate(now_ns / 1_000_000);
        }
    }

    /// Send the pending output batches.
    pub fn flush(&mut self) {
        let (b, p) = (self.tx.bursts, self.tx.packets);
        self.tx.flush(&mut self.pool);
        self.counters.tx_bursts += self.tx.bursts - b;
        self.counters.tx_packets += self.tx.packets - p;
    }

    /// Empty the caches if the switch changed since they were filled.
    fn check_generation(&mut self) {
        let g = self.sw.generation();
        if g != self.generation {
            self.generation = g;
            self.flush_caches();
        }
    }

    /// Forget every cached translation (crediting the rules first).
    pub fn flush_caches(&mut self) {
        let now_ms = self.sw.clock.now_ms();
        self.fastpath.clear(&self.sw.ct, self.sw.clock.now_ns());
        self.credit_fast_path();
        self.sync_offload_counters();
        for f in self.megaflows.drain() {
            credit(&f, now_ms);
            self.counters.megaflows_removed += 1;
        }
        self.emc.clear();
        self.counters.cache_flushes += 1;
    }

    /// One pass over `self.pass`: classify, group, execute.
    fn run_pass(&mut self, now_ns: u64) {
        let n = self.pass.n;
        let now_ms = now_ns / 1_000_000;
        let mut classes = [Class::Drop; BATCH_SIZE];
        self.uncached.clear();

        // 2. Classify: the previous packet's megaflow, the exact-match
        // cache, the megaflow cache, then the slow path.
        let use_emc = self.cfg.megaflow && self.cfg.emc;
        let mut prev: Option<FlowRef> = None;
        for (i, class) in classes.iter_mut().enumerate().take(n) {
            let key = &self.pass.keys[i];
            if self.cfg.megaflow {
                // Packets of a batch mostly share a megaflow: try the
                // previous packet's first (one masked compare, no hashing).
                if let Some(r) = prev {
                    if self.megaflows.matches(r, key) {
                        self.counters.batch_hits += 1;
                        *class = Class::Cached(r);
                        continue;
                    }
                }
                let hash = if use_emc { flow_hash(key, 0) } else { 0 };
                if use_emc {
                    if let Some(r) = self.emc.lookup(key, hash) {
                        if self.megaflows.is_live(r) {
                            self.counters.emc_hits += 1;
                            *class = Class::Cached(r);
                            prev = Some(r);
                            continue;
                        }
                    }
                }
                let visited = self.megaflows.subtables_visited;
                if let Some(r) = self.megaflows.lookup(key) {
                    self.counters.megaflow_hits += 1;
                    self.counters.subtables_searched += self.megaflows.subtables_visited - visited;
                    if use_emc {
                        self.emc.insert(key, hash, r);
                    }
                    *class = Class::Cached(r);
                    prev = Some(r);
                    continue;
                }
            }
            *class = self.upcall(i, now_ms);
        }

        // 3-4. Group by megaflow and execute each group. Commonly the whole
        // batch shares one megaflow: then it is one group, no bookkeeping.
        const ALL: [u8; BATCH_SIZE] = {
            let mut a = [0u8; BATCH_SIZE];
            let mut i = 0;
            while i < BATCH_SIZE {
                a[i] = i as u8;
                i += 1;
            }
            a
        };
        let one_group = classes[..n].iter().all(|c| *c == classes[0]);
        let mut done = [false; BATCH_SIZE];
        let mut group = [0u8; BATCH_SIZE];
        for first in 0..n {
            if done[first] {
                continue;
            }
            let class = classes[first];
            let m = if one_group {
                done[..n].fill(true);
                n
            } else {
                let mut m = 0;
                for j in first..n {
                    if !done[j] && classes[j] == class {
                        done[j] = true;
                        group[m] = j as u8;
                        m += 1;
                    }
                }
                m
            };
            let group = if one_group { &ALL[..n] } else { &group[..m] };
            let ops: Box<[Op]> = match class {
                Class::Drop => {
                    self.free_group(group);
                    continue;
                }
                Class::Uncached(u) => std::mem::take(&mut self.uncached[u as usize]),
                Class::Cached(r) => {
                    let bytes: u64 = group
                        .iter()
                        .map(|&i| {
                            self.pass.pkts[i as usize]
                                .as_ref()
                                .map_or(0, |p| p.len() as u64)
                        })
                        .sum();
                    let Some(f) = self.megaflows.get_mut(r) else {
                        self.free_group(group);
                        continue;
                    };
                    f.packets += m as u64;
                    f.bytes += bytes;
                    f.used_ms = now_ms;
                    // The program is shared by the group; take it out for
                    // the duration (the megaflow cannot change meanwhile).
                    std::mem::take(&mut f.ops)
                }
            };
            if ops.is_empty() {
                self.counters.dropped_by_flow += m as u64;
            }
            if self.cfg.flow_offload {
                let flow = match class {
                    Class::Cached(r) => Some(r),
                    _ => None,
                };
                let keys = &self.pass.keys[..];
                self.fastpath
                    .note_group(flow, &ops, group, keys, &self.sw.ct, now_ns);
            }
            self.execute(&ops, group, now_ns);
            self.free_group(group);
            if let Class::Cached(r) = class {
                if let Some(f) = self.megaflows.get_mut(r) {
                    f.ops = ops;
                }
            }
        }
        self.gather_recirculated();
    }

    /// Step 5: keep only the packets going round again, in order: those a
    /// last `ct` op left in place (no key copy when they are all of them),
    /// then the copies forked by `ct` ops that were not last.
    fn gather_recirculated(&mut self) {
        let n = self.pass.n;
        if self.cfg.flow_offload {
            self.fastpath.regather(&self.pass.again[..n]);
        }
        let mut k = 0;
        for i in 0..n {
            if self.pass.again[i] {
                self.pass.again[i] = false;
                if k != i {
                    self.pass.pkts[k] = self.pass.pkts[i].take();
                    self.pass.keys[k] = self.pass.keys[i];
                }
                k += 1;
            }
        }
        for j in 0..self.recirc.n {
            let p = self.recirc.pkts[j].take();
            if k == BATCH_SIZE {
                if let Some(p) = p {
                    self.counters.recirc_overflow += 1;
                    self.pool.free(p);
                }
                continue;
            }
            self.pass.pkts[k] = p;
            self.pass.keys[k] = self.recirc.keys[j];
            k += 1;
        }
        self.recirc.n = 0;
        self.pass.n = k;
    }

    /// Translate packet `i` and cache the result.
    fn upcall(&mut self, i: usize, now_ms: u64) -> Class {
        // An earlier miss in this batch may have installed the megaflow.
        if self.cfg.megaflow {
            if let Some(r) = self.megaflows.lookup(&self.pass.keys[i]) {
                self.counters.megaflow_hits += 1;
                return Class::Cached(r);
            }
        }
        let t = match upcall::translate(self.sw.upcall_context(), &self.pass.keys[i], now_ms) {
            Ok(t) => t,
            Err(_) => {
                self.counters.upcall_failures += 1;
                return Class::Drop;
            }
        };
        self.counters.upcalls += 1;
        for w in &t.warnings {
            self.sw.warn_once(w);
        }
        let ops: Box<[Op]> = t.ops.into_boxed_slice();
        if self.cfg.megaflow && !self.megaflows.is_full() {
            let flow = Megaflow {
                key: self.pass.keys[i],
                mask: t.mask,
                ops,
                rules: t.rules,
                packets: 0,
                bytes: 0,
                credited: (0, 0),
                used_ms: now_ms,
                created_ms: now_ms,
            };
            if let Some(r) = self.megaflows.insert(flow) {
                self.counters.megaflows_installed += 1;
                return Class::Cached(r);
            }
            return Class::Drop;
        }
        // Not cached (caches off, or full): credit the rules now and run
        // the program for this packet alone.
        let len = self.pass.pkts[i].as_ref().map_or(0, |p| p.len() as u64);
        t.rules.iter().for_each(|r| r.credit(1, len, now_ms));
        self.uncached.push(ops);
        Class::Uncached((self.uncached.len() - 1) as u8)
    }

    /// Free whatever packets of `group` are still in the pass.
    #[inline]
    fn free_group(&mut self, group: &[u8]) {
        for &i in group {
            if self.pass.again[i as usize] {
                continue;
            }
            if let Some(p) = self.pass.pkts[i as usize].take() {
                self.pool.free(p);
            }
        }
    }

    /// A copy of packet `i` (for an output or fork that is not the last op).
    #[cold]
    fn clone_packet(&mut self, i: usize) -> Option<Packet> {
        let src = self.pass.pkts[i].as_ref()?;
        let mut p = self.pool.alloc(src.meta.in_port);
        if p.tailroom() < src.len() {
            // A reassembled datagram can be longer than a pool buffer.
            self.pool.free(p);
            p = Packet::with_capacity(DEFAULT_HEADROOM + src.len(), DEFAULT_HEADROOM);
        }
        if p.set_frame(src.data()).is_err() {
            self.pool.free(p);
            return None;
        }
        p.meta = src.meta;
        Some(p)
    }

    /// Packet `i` itself when `last`, else a copy.
    #[inline]
    fn take_or_clone(&mut self, i: usize, last: bool) -> Option<Packet> {
        if last {
            self.pass.pkts[i].take()
        } else {
            self.clone_packet(i)
        }
    }

    /// 4. Run `ops` over the packets `group` of the pass.
    fn execute(&mut self, ops: &[Op], group: &[u8], now_ns: u64) {
        for (j, op) in ops.iter().enumerate() {
            // Is this the last op that needs the packet?
            let last = j + 1 == ops.len();
            match op {
                Op::Output(port) => self.output(*port, group, last),
                Op::SetHeader { field, value, mask } => {
                    for &i in group {
                        let i = i as usize;
                        if let Some(p) = self.pass.pkts[i].as_mut() {
                            if rewrite::set_field(p, &mut self.pass.keys[i], *field, *value, *mask)
                                .is_err()
                            {
                                self.counters.rewrite_errors += 1;
                            }
                        }
                    }
                }
                Op::SetMetadata { value, mask } => {
                    for &i in group {
                        let k = &mut self.pass.keys[i as usize];
                        let v = (k.metadata() & !mask) | (value & mask);
                        k.set_metadata(v);
                        if let Some(p) = self.pass.pkts[i as usize].as_mut() {
                            p.meta.metadata = v;
                        }
                    }
                }
                Op::SetInPort(port) => {
                    for &i in group {
                        self.pass.keys[i as usize].set_in_port(*port);
                        if let Some(p) = self.pass.pkts[i as usize].as_mut() {
                            p.meta.in_port = *port;
                        }
                    }
                }
                Op::PushVlan(tpid) => {
                    for &i in group {
                        let i = i as usize;
                        if let Some(p) = self.pass.pkts[i].as_mut() {
                            if vlan::push_vlan(p, &mut self.pass.keys[i], *tpid).is_err() {
                                self.counters.rewrite_errors += 1;
                            }
                        }
                    }
                }
                Op::PopVlan => {
                    for &i in group {
                        let i = i as usize;
                        if let Some(p) = self.pass.pkts[i].as_mut() {
                            if vlan::pop_vlan(p, &mut self.pass.keys[i]).is_err() {
                                self.counters.rewrite_errors += 1;
                            }
                        }
                    }
                }
                Op::Ct(c) => self.conntrack(c, group, last, now_ns),
                Op::CtClear => {
                    for &i in group {
                        self.pass.keys[i as usize].clear_ct();
                        if let Some(p) = self.pass.pkts[i as usize].as_mut() {
                            clear_meta_ct(p);
                            p.meta.offload.remove(OffloadFlags::NOTRACK);
                        }
                    }
                }
                Op::Notrack => {
                    for &i in group {
                        if let Some(p) = self.pass.pkts[i as usize].as_mut() {
                            p.meta.offload.insert(OffloadFlags::NOTRACK);
                        }
                    }
                }
                Op::Controller(spec) => {
                    for &i in group {
                        let i = i as usize;
                        let Some(p) = self.pass.pkts[i].as_ref() else {
                            continue;
                        };
                        let frozen = self.sw.recirc.state(self.pass.keys[i].recirc_id());
                        let key =
                            convert::to_of_key(&self.pass.keys[i], &frozen.unwrap_or_default());
                        let data = p.data()[..p.len().min(spec.max_len as usize)].to_vec();
                        self.sw.bridge.controller.push(ofproto::pipeline::PacketIn {
                            spec: (**spec).clone(),
                            key,
                            data,
                        });
                        self.counters.controller += 1;
                    }
                }
            }
        }
    }

    fn output(&mut self, port: PortNo, group: &[u8], last: bool) {
        let Some(slot) = self.tx.slot(port) else {
            self.counters.output_no_port += group.len() as u64;
            return;
        };
        for &i in group {
            if let Some(p) = self.take_or_clone(i as usize, last) {
                if p.meta.frag_layout != 0 {
                    let c = &mut self.counters;
                    self.defrag.send(p, slot, &mut self.tx, &mut self.pool, c);
                    continue;
                }
                self.tx.push(slot, p, &mut self.pool);
            }
        }
    }

    /// The `ct` op over a group: one conntrack call for all its packets.
    fn conntrack(&mut self, c: &CtOp, group: &[u8], last: bool, now_ns: u64) {
        // Fragments are reassembled first (crate::defrag): held ones leave
        // the group, a completed datagram takes its last fragment's slot.
        let mut kept = [0u8; BATCH_SIZE];
        let group = if defrag::any_fragment(group, &self.pass.keys) {
            let (sw, pass) = (&*self.sw, &mut *self.pass);
            let (pool, counters) = (&mut self.pool, &mut self.counters);
            let z = c.params.zone;
            let n = self.defrag.gather(
                sw,
                z,
                &mut pass.pkts,
                &mut pass.keys,
                group,
                now_ns,
                pool,
                counters,
                &mut kept,
            );
            &kept[..n]
        } else {
            group
        };
        let m = group.len();
        {
            let mut cts: [ct::CtPacket<'_>; BATCH_SIZE] = [ct::CtPacket {
                l3: &[],
                family: ct::Family::Ipv4,
                flags: ct::PktFlags::empty(),
            }; BATCH_SIZE];
            for (slot, &i) in cts.iter_mut().zip(group) {
                let i = i as usize;
                let Some(p) = self.pass.pkts[i].as_ref() else {
                    continue;
                };
                let k = &self.pass.keys[i];
                let l3 = p
                    .meta
                    .l3_offset()
                    .map_or(&[][..], |o| &p.data()[o.min(p.len())..]);
                let mut flags = ct::PktFlags::empty();
                let off = p.meta.offload;
                flags.set(
                    ct::PktFlags::L4_CSUM_GOOD,
                    off.contains(OffloadFlags::L4_CSUM_GOOD),
                );
                flags.set(
                    ct::PktFlags::IP_CSUM_GOOD,
                    off.contains(OffloadFlags::IP_CSUM_GOOD),
                );
                flags.set(ct::PktFlags::NOTRACK, off.contains(OffloadFlags::NOTRACK));
                *slot = ct::CtPacket {
                    l3,
                    family: if k.dl_type() == 0x86dd {
                        ct::Family::Ipv6
                    } else {
                        ct::Family::Ipv4
                    },
                    flags,
                };
            }
            self.sw
                .ct
                .execute(&cts[..m], &c.params, now_ns, &mut self.ct_results[..m]);
        }
        self.counters.ct_packets += m as u64;
        for (g, &i) in group.iter().enumerate() {
            let i = i as usize;
            let r = self.ct_results[g];
            if self.cfg.flow_offload {
                self.fastpath.note_ct(i, &r, c.recirc, last);
            }
            if let Some(p) = self.pass.pkts[i].as_mut() {
                if r.l4_csum_checked && !r.state.contains(ct::CtState::INV) {
                    p.meta.offload.insert(OffloadFlags::L4_CSUM_GOOD);
                }
            }
            if let Some(edit) = &r.nat {
                if !self.apply_nat(i, edit) {
                    continue;
                }
                if let Some(alg) = &r.alg {
                    if !self.apply_alg(i, alg) {
                        continue;
                    }
                }
            }
            if let (Some(recirc_id), true) = (c.recirc, last) {
                // The packet itself goes round again: update it in place.
                if let Some(p) = self.pass.pkts[i].as_mut() {
                    let key = &mut self.pass.keys[i];
                    convert::set_ct_fields(key, &r);
                    key.set_recirc_id(recirc_id);
                    set_meta_ct(p, recirc_id, &r);
                    self.pass.again[i] = true;
                }
                continue;
            }
            if let Some(recirc_id) = c.recirc {
                // A copy goes round again; the original carries on.
                if let Some(mut p) = self.clone_packet(i) {
                    let slot = self.recirc.n;
                    if slot == BATCH_SIZE {
                        self.counters.recirc_overflow += 1;
                        self.pool.free(p);
                    } else {
                        // The key is written straight into the next pass.
                        let key = &mut self.recirc.keys[slot];
                        *key = self.pass.keys[i];
                        convert::set_ct_fields(key, &r);
                        key.set_recirc_id(recirc_id);
                        set_meta_ct(&mut p, recirc_id, &r);
                        self.recirc.pkts[slot] = Some(p);
                        self.recirc.n += 1;
                    }
                }
            }
            // This pass carries on seeing the packet untracked.
            if let Some(p) = self.pass.pkts[i].as_mut() {
                clear_meta_ct(p);
                self.pass.keys[i].clear_ct();
            }
        }
    }

    /// Write conntrack's NAT verdict into packet `i` and its key (before
    /// any copy goes round again); false if the packet was dropped (no
    /// binding free, or headers that could not be rewritten: an
    /// untranslated packet must not leak).
    #[inline]
    fn apply_nat(&mut self, i: usize, edit: &ct::nat::NatEdit) -> bool {
        let Some(p) = self.pass.pkts[i].as_mut() else {
            return false;
        };
        let outcome = nat::apply(p, &mut self.pass.keys[i], edit);
        if outcome == nat::NatOutcome::Done {
            return true;
        }
        if outcome == nat::NatOutcome::Drop {
            self.counters.nat_dropped += 1;
        } else {
            self.counters.rewrite_errors += 1;
        }
        if let Some(p) = self.pass.pkts[i].take() {
            self.pool.free(p);
        }
        false
    }

    /// Apply an ALG edit (FTP announcement rewrite, TCP sequence shift) to
    /// packet `i` after its NAT rewrite; a packet that cannot take it
    /// (no tailroom for a longer announcement, malformed) is dropped and
    /// counted in `rewrite_errors`, since delivering it unedited would
    /// desynchronise the connection's sequence numbers.
    #[cold]
    fn apply_alg(&mut self, i: usize, edit: &ct::alg::edit::AlgEdit) -> bool {
        let Some(p) = self.pass.pkts[i].as_mut() else {
            return false;
        };
        if nat::apply_alg(p, edit) == nat::NatOutcome::Done {
            return true;
        }
        self.counters.rewrite_errors += 1;
        if let Some(p) = self.pass.pkts[i].take() {
            self.pool.free(p);
        }
        false
    }

    /// Flow offload: forward the extracted packets the fast path holds
    /// entries for ([`crate::fastpath`]), leaving the rest, in order, for
    /// the classic path.
    fn fast_path(&mut self, now_ns: u64) {
        let n = self.pass.n;
        self.fastpath.begin_batch(n);
        if self.fastpath.is_empty() {
            return;
        }
        let mut verdicts = [Verdict::Miss; BATCH_SIZE];
        let (pass, sw) = (&mut *self.pass, &*self.sw);
        self.fastpath.forward_batch(
            &mut pass.pkts[..n],
            &mut pass.keys[..n],
            &sw.ct,
            now_ns,
            &mut verdicts,
        );
        let mut k = 0;
        for (i, v) in verdicts.iter().enumerate().take(n) {
            let Some(p) = self.pass.pkts[i].take() else {
                continue;
            };
            match v {
                Verdict::Forward(port) => {
                    self.counters.offload_hits += 1;
                    match self.tx.slot(*port) {
                        Some(slot) => self.tx.push(slot, p, &mut self.pool),
                        None => {
                            self.counters.output_no_port += 1;
                            self.pool.free(p);
                        }
                    }
                }
                Verdict::Drop => {
                    self.counters.nat_dropped += 1;
                    self.pool.free(p);
                }
                Verdict::Miss | Verdict::HandBack => {
                    if k != i {
                        self.pass.keys[k] = self.pass.keys[i];
                    }
                    self.pass.pkts[k] = Some(p);
                    k += 1;
                }
            }
        }
        self.pass.n = k;
    }

    fn sync_offload_counters(&mut self) {
        self.counters.offload_installs = self.fastpath.installs;
        self.counters.offload_handbacks = self.fastpath.handbacks;
    }

    /// Credit the megaflows (and so, later, their rules) with the traffic
    /// the fast path carried for them.
    fn credit_fast_path(&mut self) {
        let megaflows = &mut self.megaflows;
        self.fastpath.drain_counts(|r, p, b, used_ms| {
            if let Some(f) = megaflows.get_mut(r) {
                f.packets += p;
                f.bytes += b;
                f.used_ms = f.used_ms.max(used_ms);
            }
        });
    }

    /// [`Pipeline::revalidate`] if it is due. The PMD calls this while idle
    /// too, so rule counters catch up and idle megaflows expire without
    /// traffic.
    pub fn revalidate_if_due(&mut self) {
        let now_ms = self.sw.clock.now_ms();
        if now_ms >= self.last_revalidate_ms + self.cfg.revalidate_ms {
            self.revalidate(now_ms);
        }
    }

    /// Credit rule counters, refresh what translation learns (MACs) for
    /// flows that saw traffic, evict idle megaflows.
    pub fn revalidate(&mut self, now_ms: u64) {
        self.last_revalidate_ms = now_ms;
        let (idle, now_ns) = (self.cfg.max_idle_ms, now_ms.saturating_mul(1_000_000));
        self.fastpath.tick(&self.sw.ct, now_ns, idle);
        self.credit_fast_path();
        self.sync_offload_counters();
        self.megaflows.sort_subtables();
        let sw = Arc::clone(&self.sw);
        let cx = sw.upcall_context();
        let mut stale = Vec::new();
        let refresh_macs = !self.sw.bridge.mac.is_empty();
        for r in self.megaflows.refs() {
            let Some(f) = self.megaflows.get_mut(r) else {
                continue;
            };
            credit(f, now_ms);
            f.credited = (f.packets, f.bytes);
            if now_ms.saturating_sub(f.used_ms) > self.cfg.max_idle_ms {
                stale.push(r);
            } else if refresh_macs && f.used_ms + self.cfg.revalidate_ms >= now_ms {
                // Active: translating again refreshes MAC learning (NORMAL),
                // as OVS's revalidators do.
                let _ = upcall::translate(cx, &f.key, now_ms);
            }
        }
        for r in stale {
            if self.megaflows.remove(r).is_some() {
                self.counters.megaflows_removed += 1;
            }
        }
    }

    /// Text lines describing the cached megaflows (`dpctl/dump-flows`).
    pub fn dump_megaflows(&self) -> Vec<String> {
        let now_ms = self.sw.clock.now_ms();
        self.megaflows
            .refs()
            .into_iter()
            .filter_map(|r| self.megaflows.get(r))
            .map(|f| {
                format!(
                    "{}, packets:{}, bytes:{}, used:{:.3}s, actions:{}",
                    crate::flow::format_masked(&f.key, &f.mask),
                    f.packets,
                    f.bytes,
                    now_ms.saturating_sub(f.used_ms) as f64 / 1000.0,
                    crate::program::ProgramDisplay(&f.ops)
                )
            })
            .collect()
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.flush();
        self.fastpath.clear(&self.sw.ct, self.sw.clock.now_ns());
        self.credit_fast_path();
        let now_ms = self.sw.clock.now_ms();
        for f in self.megaflows.drain() {
            credit(&f, now_ms);
        }
    }
}

/// Credit the traffic a megaflow saw since its last credit to its rules.
fn credit(f: &Megaflow, now_ms: u64) {
    let (p, b) = (f.packets - f.credited.0, f.bytes - f.credited.1);
    if p > 0 {
        for r in &f.rules {
            r.credit(p, b, now_ms.max(f.used_ms));
        }
    }
}

fn set_meta_ct(p: &mut Packet, recirc_id: u32, r: &ct::CtResult) {
    p.meta.recirc_id = recirc_id;
    p.meta.ct_state = r.state.bits();
    p.meta.ct_zone = r.zone.0;
    p.meta.ct_mark = r.mark;
    p.meta.ct_label = r.label;
}

fn clear_meta_ct(p: &mut Packet) {
    p.meta.ct_state = 0;
    p.meta.ct_zone = 0;
    p.meta.ct_mark = 0;
    p.meta.ct_label = 0;
}
