//! The tracker: the `ct` action over a batch of packets.
//!
//! [`Tracker::execute`] is the per-packet path, read top to bottom:
//! 1. parse every packet of the batch (`packet::parse`) and hash its key;
//! 2. walk the batch, holding one shard lock across consecutive packets of
//!    the same shard, and for each packet either update its connection,
//!    relate an ICMP error to one, or handle a packet with no connection
//!    (commit creates one, subject to limits and early drop);
//! 3. after the lock is released, hand lifecycle events to subscribers and
//!    fold the batch's counters into the tracker's.
//!
//! NAT (see [`crate::nat`]) adds two things. A packet whose key is a NAT
//! reply tuple kept in another shard (a remote reference) is processed
//! under that home shard's lock, taken with `try_lock` alongside the
//! batch's. Packets that need two shards in a way the batch cannot offer
//! (choosing a binding, a busy home shard, a stale reference) are handled
//! after the batch's locks are released, one or two shard locks at a time
//! in ascending order (`Tracker::process_deferred`). Without `nat` and
//! without NAT connections none of this runs.
//!
//! ALGs under NAT (see [`crate::alg`]): a helper's announcement on a NATed
//! connection is reported as [`CtResult::alg`] for the datapath to rewrite,
//! the resize is kept as the connection's sequence adjustment (reported
//! with every later packet's NAT edit, and used by the TCP window check),
//! and a committing `ct(nat)` packet matching an expectation of a NATed
//! master is given the expectation's translation like a `nat(src|dst=..)`
//! commit (deferred, `Tracker::process_deferred`).
//!
//! Semantics follow OVS's `ct` action (`man ovs-actions`): only `commit`
//! creates entries; `force` ends a connection seen in the reply direction and
//! starts a new one; mark/label are set on commit; an uncommitted first
//! packet is `+trk+new` and leaves nothing behind.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use parking_lot::{Mutex, MutexGuard, RwLock};
use serde::Serialize;

use crate::alg::edit::{AlgEdit, PayloadEdit};
use crate::alg::AlgOutcome;
use crate::conn::{Conn, ConnStatus, DirCounters};
use crate::events::reliable::{self, Reliable};
use crate::events::{ConnEvent, DestroyCause, EventKind, EventSink};
use crate::expect::ExpectTable;
use crate::key::{ConnKey, Dir, Zone};
use crate::nat::{self, NatAction, NatEdit, NatSpec};
use crate::packet::{self, CtPacket, L4Info, PacketInfo, PktFlags};
use crate::pressure::{Pressure, EARLY_DROP_NEIGHBOURS};
use crate::proto::{ProtoState, Update};
use crate::state::CtState;
use crate::table::{key_hash, KeyHash, RemoteRef, Shard, REMOTE};
use crate::timeout::{PolicyId, PolicyTable};
use crate::zone::Zones;

/// Packets processed per inner batch (OVS's NETDEV_MAX_BURST).
pub const BATCH: usize = 32;

const NS_PER_S: u64 = 1_000_000_000;

/// Tracker configuration.
#[derive(Clone, Debug)]
pub struct TrackerConfig {
    /// Global connection limit (live and dying entries count).
    pub max_conns: u32,
    /// Number of shards (rounded up to a power of two).
    pub shards: usize,
    /// Hash seed; None picks a random one.
    pub seed: Option<u64>,
    /// TCP window checks off everywhere.
    pub liberal: bool,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            max_conns: 3_000_000,
            shards: 1024,
            seed: None,
            liberal: false,
        }
    }
}

/// Parameters of one `ct` action.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtParams {
    pub zone: Zone,
    pub commit: bool,
    pub force: bool,
    /// `(value, mask)` to set on `ct_mark` (commit only).
    pub mark: Option<(u32, u32)>,
    /// `(value, mask)` to set on `ct_label` (commit only).
    pub label: Option<(u128, u128)>,
    /// Timeout policy for connections this action commits (else the zone's).
    pub policy: Option<PolicyId>,
    /// ALG helper to attach on commit ("ftp", "tftp"); the connection's
    /// packets then go through [`crate::alg::inspect`].
    pub helper: Option<&'static str>,
    /// `nat` / `nat(src=..)` / `nat(dst=..)`: see [`crate::nat`].
    pub nat: Option<NatAction>,
}

/// What the `ct` action reports for one packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtResult {
    pub state: CtState,
    pub zone: Zone,
    pub mark: u32,
    pub label: u128,
    /// Original-direction tuple of the connection (`ct_nw_src` ...).
    pub orig: Option<ConnKey>,
    /// The L4 checksum was verified in software on this pass.
    pub l4_csum_checked: bool,
    /// What NAT requires of this packet (only with a `nat` argument).
    pub nat: Option<NatEdit>,
    /// What an ALG requires of this packet on top of `nat` (payload
    /// rewrite, sequence adjustment; see [`crate::alg::edit`]), to apply
    /// after it. Only with a `nat` argument, on NATed connections whose
    /// helper rewrote an announcement.
    pub alg: Option<AlgEdit>,
}

/// Bytes held by the connection table, by part.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct TableMemory {
    pub records: usize,
    pub index: usize,
    pub wheel: usize,
}

/// Tracker-wide counters.
#[derive(Default)]
pub(crate) struct Counters {
    invalid: AtomicU64,
    untracked: AtomicU64,
    pub(crate) events_refused: AtomicU64,
    nat_exhausted: AtomicU64,
}

/// Snapshot of counters (`ct-stats-show`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct CtCounters {
    pub connections: u64,
    pub max_connections: u64,
    pub inserts: u64,
    pub early_drops: u64,
    pub refused: u64,
    pub expired: u64,
    pub deleted: u64,
    pub invalid: u64,
    pub untracked: u64,
    pub events_refused: u64,
    /// Packets dropped because no NAT binding was free.
    pub nat_exhausted: u64,
    /// Connections whose NAT reply tuple lives in another shard (remote
    /// references held).
    pub nat_remote_refs: u64,
}

/// The connection tracker.
pub struct Tracker {
    pub(crate) shards: Box<[CachePadded<Mutex<Shard>>]>,
    pub(crate) mask: usize,
    pub(crate) seed: u64,
    pub policies: PolicyTable,
    pub zones: Zones,
    pub expectations: ExpectTable,
    /// Live connections plus dying ones (DESTROY still owed to a reliable
    /// subscriber, see [`crate::events::reliable`]).
    pub(crate) count: AtomicU32,
    max: AtomicU32,
    liberal: AtomicBool,
    pub(crate) counters: Counters,
    pub(crate) sinks: RwLock<Vec<Arc<dyn EventSink>>>,
    pub(crate) has_sinks: AtomicBool,
    /// Dying list of reliable event delivery.
    pub(crate) reliable: Reliable,
    /// Remote references of destroyed NAT connections, removed once no
    /// shard lock is held ([`Tracker::drain_unlinks`]).
    unlinks: Mutex<Vec<Unlink>>,
    unlinks_pending: AtomicBool,
    /// Generation of the next remote reference.
    nat_gen: AtomicU32,
    /// State of the pseudo-random numbers for `nat(..,random)`.
    nat_rng: AtomicU64,
    /// Near-full behaviour: see [`crate::pressure`].
    pub(crate) pressure: Pressure,
    /// Moves whenever an offloaded connection ends, is released or has its
    /// mark/label changed (see [`crate::offload`]).
    pub(crate) offload_epoch: AtomicU64,
}

/// A remote reference to remove (its connection was destroyed).
#[derive(Clone, Copy, Debug)]
struct Unlink {
    shard: u32,
    key: ConnKey,
    home: u32,
    gen: u32,
}

/// Whether a packet was handled or must be processed again outside the
/// batch (see [`Tracker::process_deferred`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    Done,
    Defer,
    /// The packet's connection lives in this shard (NAT remote reference).
    Remote(u32),
}

/// Which held guard is a packet's connection's home shard (NAT): one of
/// the batch's own guards, or one taken for remote references.
#[derive(Clone, Copy, Debug)]
enum HomeGuard {
    Main(u8),
    Extra(u8),
}

/// A NAT binding for a connection being created.
#[derive(Clone, Copy, Debug)]
struct Binding {
    reply: ConnKey,
    status: ConnStatus,
    /// Remote reference `(shard, generation)` when the reply tuple hashes
    /// to another shard.
    remote: Option<(u32, u32)>,
}

/// Per-batch tallies folded into the tracker once per batch.
#[derive(Default)]
struct Tally {
    invalid: u64,
    untracked: u64,
    nat_exhausted: u64,
    /// Lifecycle events, delivered once the shard locks are released.
    events: Vec<ConnEvent>,
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x6665_7272_6f76_7321);
    h.finish()
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker::new(TrackerConfig::default())
    }
}

impl Tracker {
    pub fn new(cfg: TrackerConfig) -> Tracker {
        let n = cfg.shards.clamp(1, 1 << 16).next_power_of_two();
        Tracker {
            shards: (0..n)
                .map(|i| CachePadded::new(Mutex::new(Shard::new(i as u32, 0))))
                .collect(),
            mask: n - 1,
            seed: cfg.seed.unwrap_or_else(random_seed),
            policies: PolicyTable::default(),
            zones: Zones::default(),
            expectations: ExpectTable::default(),
            count: AtomicU32::new(0),
            max: AtomicU32::new(cfg.max_conns),
            liberal: AtomicBool::new(cfg.liberal),
            counters: Counters::default(),
            sinks: RwLock::new(Vec::new()),
            has_sinks: AtomicBool::new(false),
            reliable: Reliable::new(cfg.seed.unwrap_or(0x5eed)),
            unlinks: Mutex::new(Vec::new()),
            unlinks_pending: AtomicBool::new(false),
            nat_gen: AtomicU32::new(0),
            nat_rng: AtomicU64::new(0x2545_f491_4f6c_dd1d),
            pressure: Pressure::default(),
            offload_epoch: AtomicU64::new(0),
        }
    }

    /// Connections counted against the limit (all zones): live ones and
    /// dying ones ([`Tracker::dying_len`]).
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed) as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn max_conns(&self) -> u32 {
        self.max.load(Ordering::Relaxed)
    }
    pub fn set_max_conns(&self, max: u32) {
        self.max.store(max, Ordering::Relaxed);
    }
    pub fn set_liberal(&self, on: bool) {
        self.liberal.store(on, Ordering::Relaxed);
    }

    /// Hash of a key in this table.
    #[inline]
    pub(crate) fn hash(&self, key: &ConnKey) -> KeyHash {
        key_hash(key, self.seed, self.mask)
    }

    pub(crate) fn lock_shard(&self, i: usize) -> MutexGuard<'_, Shard> {
        self.shards[i].lock()
    }

    /// Run the `ct` action on `pkts`, writing one result per packet into
    /// `out` (which must be at least as long; extra packets are not
    /// processed). `now_ns` is the caller's monotonic clock.
    pub fn execute(
        &self,
        pkts: &[CtPacket<'_>],
        params: &CtParams,
        now_ns: u64,
        out: &mut [CtResult],
    ) {
        let n = pkts.len().min(out.len());
        for (p, o) in pkts[..n].chunks(BATCH).zip(out[..n].chunks_mut(BATCH)) {
            self.execute_batch(p, params, now_ns, o);
        }
    }

    fn execute_batch(
        &self,
        pkts: &[CtPacket<'_>],
        params: &CtParams,
        now_ns: u64,
        out: &mut [CtResult],
    ) {
        let now_s = (now_ns / NS_PER_S) as u32;
        let liberal = self.liberal.load(Ordering::Relaxed) || self.zones.liberal(params.zone);
        let want_events = self.has_sinks.load(Ordering::Relaxed);
        let mut tally = Tally::default();

        // Stage 1: parse every packet in place, then hash the live ones in
        // a second pass (reading a key right after its bytes were stored
        // would stall on store forwarding).
        let mut infos = [PacketInfo::default(); BATCH];
        let mut hashes = [KeyHash::default(); BATCH];
        let mut live = [false; BATCH];
        for (i, pkt) in pkts.iter().enumerate() {
            if pkt.flags.contains(PktFlags::NOTRACK) {
                out[i] = CtResult {
                    state: CtState::TRK | CtState::UNTRACKED,
                    ..Default::default()
                };
                tally.untracked += 1;
                continue;
            }
            packet::parse_into(pkt, params.zone, &mut infos[i]);
            if infos[i].invalid.is_some() {
                out[i] = invalid(params.zone, infos[i].l4_csum_checked);
                tally.invalid += 1;
                continue;
            }
            live[i] = true;
        }
        for i in 0..pkts.len() {
            if live[i] {
                hashes[i] = self.hash(lookup_key(&infos[i]));
            }
        }

        // Stage 2: take the lock of every shard the batch touches, in
        // ascending shard order, trying only (see `lock_batch_shards`).
        // Holding them all lets the lookups below run back to back with no
        // atomic instruction in between, so their cache misses overlap.
        let n = pkts.len();
        let mut guards: [Option<MutexGuard<'_, Shard>>; BATCH] = std::array::from_fn(|_| None);
        let mut guard_of = [0u8; BATCH];
        self.lock_batch_shards(&live[..n], &hashes[..n], &mut guards, &mut guard_of);

        // Stage 3: look every packet up (ICMP errors: their embedded key).
        // A first pass only touches each packet's index bucket and record
        // (independent loads the CPU overlaps); the lookups then hit cache.
        let mut touched = 0u8;
        for i in 0..n {
            if let (true, Some(shard)) = (live[i], guards[guard_of[i] as usize].as_deref()) {
                touched ^= shard.touch(hashes[i].hash);
            }
        }
        std::hint::black_box(touched);
        let mut found: [Option<(u32, Dir)>; BATCH] = [None; BATCH];
        let mut any_remote = false;
        for i in 0..n {
            if let (true, Some(shard)) = (live[i], guards[guard_of[i] as usize].as_deref()) {
                found[i] = shard.lookup(lookup_key(&infos[i]), hashes[i].hash);
                any_remote |= found[i].is_some_and(|(s, _)| s & REMOTE != 0);
            }
        }

        // Stage 3b (NAT): a packet whose lookup met a remote reference is
        // processed under its connection's home shard. Take those locks
        // too, trying only (so still no thread waits holding locks), and
        // touch the connections there so their misses overlap as well.
        let mut home_guard: [Option<HomeGuard>; BATCH] = [None; BATCH];
        // Only initialised (and dropped) in a batch that needs it.
        let mut extra_store: [Option<MutexGuard<'_, Shard>>; BATCH];
        let extra: &mut [Option<MutexGuard<'_, Shard>>] = if any_remote {
            extra_store = std::array::from_fn(|_| None);
            &mut extra_store
        } else {
            &mut []
        };
        if any_remote {
            let mut extra_shard = [usize::MAX; BATCH];
            let mut ne = 0;
            for i in 0..n {
                let Some((s, _)) = found[i].filter(|(s, _)| s & REMOTE != 0) else {
                    continue;
                };
                let home = (s & !REMOTE) as usize;
                let main = (0..n).find(|&j| live[j] && hashes[j].shard == home);
                home_guard[i] = match main {
                    Some(j) => guards[guard_of[j] as usize]
                        .is_some()
                        .then_some(HomeGuard::Main(guard_of[j])),
                    None => match extra_shard[..ne].iter().position(|&x| x == home) {
                        Some(k) => extra[k].is_some().then_some(HomeGuard::Extra(k as u8)),
                        None => {
                            extra_shard[ne] = home;
                            extra[ne] = self.shards[home].try_lock();
                            ne += 1;
                            extra[ne - 1]
                                .is_some()
                                .then_some(HomeGuard::Extra(ne as u8 - 1))
                        }
                    },
                };
            }
            let mut touched = 0u8;
            for i in 0..n {
                let shard = match home_guard[i] {
                    Some(HomeGuard::Main(k)) => guards[k as usize].as_deref(),
                    Some(HomeGuard::Extra(k)) => extra[k as usize].as_deref(),
                    None => None,
                };
                if let Some(shard) = shard {
                    touched ^= shard.touch(hashes[i].hash);
                }
            }
            std::hint::black_box(touched);
        }

        // Stage 4: update, relate or create, in packet order. A packet that
        // inserted or removed a connection makes later lookups in its shard
        // stale: those packets look up again.
        let mut changed = [false; BATCH];
        let mut deferred = [Step::Done; BATCH];
        let ctx = Ctx {
            params,
            now_ns,
            now_s,
            liberal,
            want_events,
        };
        for i in 0..n {
            if let Some(h) = home_guard[i] {
                // NAT: the connection's home shard (looked up again: the
                // first lookup was in the packet's own shard).
                let (shard, g) = match h {
                    HomeGuard::Main(k) => (guards[k as usize].as_deref_mut(), Some(k as usize)),
                    HomeGuard::Extra(k) => (extra[k as usize].as_deref_mut(), None),
                };
                let Some(shard) = shard else { continue };
                let kh = hashes[i];
                let hit = shard
                    .lookup(lookup_key(&infos[i]), kh.hash)
                    .filter(|(s, _)| s & REMOTE == 0);
                let before = (shard.stats.inserts, shard.stats.deleted);
                deferred[i] = match hit {
                    None => Step::Defer,
                    Some(_) => self.process(
                        shard,
                        &pkts[i],
                        &infos[i],
                        hit,
                        kh.hash,
                        false,
                        &ctx,
                        &mut tally,
                        &mut out[i],
                    ),
                };
                if let Some(g) = g {
                    changed[g] |= before != (shard.stats.inserts, shard.stats.deleted);
                }
                continue;
            }
            let g = guard_of[i] as usize;
            let (true, Some(shard)) = (live[i], guards[g].as_deref_mut()) else {
                continue;
            };
            let kh = hashes[i];
            let hit = if changed[g] {
                shard.lookup(lookup_key(&infos[i]), kh.hash)
            } else {
                found[i]
            };
            let before = (shard.stats.inserts, shard.stats.deleted);
            let step = self.process(
                shard,
                &pkts[i],
                &infos[i],
                hit,
                kh.hash,
                true,
                &ctx,
                &mut tally,
                &mut out[i],
            );
            deferred[i] = step;
            changed[g] |= before != (shard.stats.inserts, shard.stats.deleted);
        }
        // Packets whose shard was busy: one shard lock at a time, in
        // packet order (a connection's packets share a shard, so their
        // order is kept).
        let busy: [bool; BATCH] =
            std::array::from_fn(|i| i < n && live[i] && guards[guard_of[i] as usize].is_none());
        drop(guards);
        extra.iter_mut().for_each(|g| *g = None);
        if busy.contains(&true) {
            let mut held: Option<(usize, MutexGuard<'_, Shard>)> = None;
            for i in (0..n).filter(|&i| busy[i]) {
                let kh = hashes[i];
                let shard = match &mut held {
                    Some((s, g)) if *s == kh.shard => g,
                    _ => {
                        held = None;
                        &mut held.insert((kh.shard, self.lock_shard(kh.shard))).1
                    }
                };
                let hit = shard.lookup(lookup_key(&infos[i]), kh.hash);
                let step = self.process(
                    shard,
                    &pkts[i],
                    &infos[i],
                    hit,
                    kh.hash,
                    true,
                    &ctx,
                    &mut tally,
                    &mut out[i],
                );
                deferred[i] = step;
            }
        }
        // Packets that need two shards (NAT), one at a time, no lock held.
        if deferred[..n].iter().any(|&s| s != Step::Done) {
            for i in (0..n).filter(|&i| deferred[i] != Step::Done) {
                self.process_deferred(
                    &pkts[i],
                    &infos[i],
                    hashes[i],
                    deferred[i],
                    &ctx,
                    &mut tally,
                    &mut out[i],
                );
            }
        }

        // Stage 5: events and counters.
        if !tally.events.is_empty() {
            self.deliver(&tally.events);
        }
        if tally.invalid != 0 {
            self.counters
                .invalid
                .fetch_add(tally.invalid, Ordering::Relaxed);
        }
        if tally.untracked != 0 {
            self.counters
                .untracked
                .fetch_add(tally.untracked, Ordering::Relaxed);
        }
        if tally.nat_exhausted != 0 {
            self.counters
                .nat_exhausted
                .fetch_add(tally.nat_exhausted, Ordering::Relaxed);
        }
        self.drain_unlinks();
    }

    /// Lock the shards of a batch's live packets in ascending shard order;
    /// `guard_of[i]` tells which guard covers packet `i`. Locks are only
    /// tried: a shard another thread holds gets no guard (its packets are
    /// processed after this batch's locks are released), so a packet thread
    /// never waits while holding locks.
    pub(crate) fn lock_batch_shards<'a>(
        &'a self,
        live: &[bool],
        hashes: &[KeyHash],
        guards: &mut [Option<MutexGuard<'a, Shard>>; BATCH],
        guard_of: &mut [u8; BATCH],
    ) {
        const WORDS: usize = 64; // bitmap covers up to 4096 shards
        let nshards = self.mask + 1;
        if nshards <= WORDS * 64 {
            // Mark the shards in a bitmap, lock them in bit order, and give
            // each packet the rank of its shard's bit.
            let words = nshards.div_ceil(64);
            let mut bits = [0u64; WORDS];
            for (i, h) in hashes.iter().enumerate() {
                if live[i] {
                    bits[h.shard / 64] |= 1 << (h.shard % 64);
                }
            }
            let mut rank_base = [0u8; WORDS];
            let mut ng = 0usize;
            for w in 0..words {
                rank_base[w] = ng as u8;
                let mut b = bits[w];
                while b != 0 {
                    let shard = w * 64 + b.trailing_zeros() as usize;
                    guards[ng] = self.shards[shard].try_lock();
                    ng += 1;
                    b &= b - 1;
                }
            }
            for (i, h) in hashes.iter().enumerate() {
                if live[i] {
                    let (w, bit) = (h.shard / 64, h.shard % 64);
                    let below = bits[w] & ((1u64 << bit) - 1);
                    guard_of[i] = rank_base[w] + below.count_ones() as u8;
                }
            }
        } else {
            let mut order = [0u8; BATCH];
            let mut nlive = 0;
            for (i, &l) in live.iter().enumerate() {
                if l {
                    order[nlive] = i as u8;
                    nlive += 1;
                }
            }
            order[..nlive].sort_unstable_by_key(|&i| hashes[i as usize].shard);
            let (mut ng, mut last) = (0usize, usize::MAX);
            for &i in &order[..nlive] {
                let shard = hashes[i as usize].shard;
                if shard != last {
                    guards[ng] = self.shards[shard].try_lock();
                    ng += 1;
                    last = shard;
                }
                guard_of[i as usize] = (ng - 1) as u8;
            }
        }
    }

    /// One packet under its shard's lock (`hit`: its lookup result, `hash`
    /// its lookup key's hash); writes the packet's result, or asks for the
    /// packet to be processed again by [`Tracker::process_deferred`]: when
    /// its connection lives in another shard (NAT remote reference), when a
    /// NAT binding must be chosen, or (`at_home` false: the shard is the
    /// connection's, not the packet key's) when a new connection would be
    /// created here.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn process(
        &self,
        shard: &mut Shard,
        pkt: &CtPacket<'_>,
        info: &PacketInfo,
        hit: Option<(u32, Dir)>,
        hash: u64,
        at_home: bool,
        ctx: &Ctx<'_>,
        tally: &mut Tally,
        out: &mut CtResult,
    ) -> Step {
        let params = ctx.params;
        let bytes = pkt.l3.len() as u64;
        if let L4Info::IcmpError { inner } = &info.l4 {
            return self.relate_error(shard, inner, hash, at_home, ctx, tally, out, info);
        }
        let events = &mut tally.events;

        if let Some((slot, dir)) = hit {
            let id = shard.conn_id(slot, self.mask);
            let Some(c) = shard.get_mut(slot) else {
                if slot & REMOTE != 0 {
                    return Step::Remote(slot & !REMOTE);
                }
                *out = invalid(params.zone, info.l4_csum_checked);
                return Step::Done;
            };
            if c.expired(ctx.now_s) {
                self.destroy(shard, slot, DestroyCause::Expired, ctx, events);
            } else if params.force && params.commit && dir == Dir::Reply {
                self.destroy(shard, slot, DestroyCause::Replaced, ctx, events);
            } else {
                let before = ctx
                    .want_events
                    .then(|| (c.proto, c.status - ConnStatus::MISSED, c.mark, c.label()));
                let verdict = match c.ext.as_deref() {
                    Some(e) if e.seqadj.is_active() => update_adjusted(c, dir, info, ctx.liberal),
                    // An offloaded connection's window state lags what its
                    // fast path forwarded: judge it liberally (as Linux
                    // does), see crate::offload.
                    _ => c.proto.update(
                        dir,
                        info,
                        ctx.liberal || c.status.contains(ConnStatus::OFFLOADED),
                    ),
                };
                match verdict {
                    Update::Invalid(_) => {
                        tally.invalid += 1;
                        *out = invalid(params.zone, info.l4_csum_checked);
                        return Step::Done;
                    }
                    Update::Reopen => {
                        self.destroy(shard, slot, DestroyCause::Replaced, ctx, events);
                    }
                    Update::Accept => {
                        let ctr = &mut c.counters[dir.index()];
                        ctr.packets += 1;
                        ctr.bytes += bytes;
                        if dir == Dir::Reply {
                            c.status |= ConnStatus::SEEN_REPLY;
                        }
                        if c.seen_reply() && !c.proto.is_embryonic() {
                            c.status |= ConnStatus::ASSURED;
                        }
                        if params.commit {
                            if c.status.contains(ConnStatus::OFFLOADED)
                                && (params.mark.is_some() || params.label.is_some())
                            {
                                self.offload_epoch.fetch_add(1, Ordering::Release);
                            }
                            apply_mark_label(c, params);
                        }
                        let timeout = self.timeout_secs(c.policy, c.proto.timeout_attr());
                        let expire = ctx.now_s.saturating_add(timeout);
                        // A shorter timeout (e.g. TCP closing): file it
                        // earlier too; the old entry goes stale.
                        let shrank = expire < c.expire;
                        c.expire = expire;
                        // Field by field: no temporary to copy (store forwarding).
                        out.state = conn_state(c, dir);
                        out.zone = c.key.zone;
                        out.mark = c.mark;
                        out.label = c.label();
                        out.orig = Some(c.key);
                        out.l4_csum_checked = info.l4_csum_checked;
                        out.nat = None;
                        out.alg = None;
                        if params.nat.is_some() {
                            apply_nat(c, dir, out);
                        }
                        let changed = before.is_some_and(|b| {
                            b != (c.proto, c.status - ConnStatus::MISSED, c.mark, c.label())
                        });
                        // Missed events (reliable delivery) ride along.
                        if let Some(kind) = reliable::take_due(c, changed) {
                            events.push(ConnEvent::of(kind, c, id, ctx.now_s));
                        }
                        if let Some(h) = c.ext.as_deref().and_then(|e| e.helper) {
                            let found = crate::alg::inspect(
                                h,
                                c,
                                dir,
                                pkt,
                                info,
                                ctx.now_s,
                                &self.expectations,
                            );
                            if params.nat.is_some() {
                                alg_rewrite(c, dir, info, &found, out);
                            }
                        }
                        if shrank {
                            shard.refile(slot);
                        }
                        return Step::Done;
                    }
                }
            }
        }

        // No connection (or it just ended).
        if !at_home
            || (params.commit && params.nat.is_some_and(|n| n.spec.is_some()))
            || (params.commit && params.nat.is_some() && self.expected_nat(info, ctx).is_some())
        {
            return Step::Defer;
        }
        self.create(shard, pkt, info, None, ctx, tally, out);
        Step::Done
    }

    /// An ICMP error: relate it to the connection of the packet it quotes
    /// (and, with `nat`, say how to translate it).
    #[allow(clippy::too_many_arguments)]
    #[cold]
    fn relate_error(
        &self,
        shard: &Shard,
        inner: &ConnKey,
        hash: u64,
        at_home: bool,
        ctx: &Ctx<'_>,
        tally: &mut Tally,
        out: &mut CtResult,
        info: &PacketInfo,
    ) -> Step {
        let params = ctx.params;
        *out = match shard.lookup_embedded(inner, hash) {
            Some((slot, _, _)) if slot & REMOTE != 0 && at_home => {
                return Step::Remote(slot & !REMOTE)
            }
            Some((slot, dir, translated)) => match shard.get(slot) {
                Some(c) if !c.expired(ctx.now_s) => {
                    // The error travels opposite to the packet it quotes.
                    let mut state = CtState::TRK | CtState::REL;
                    if dir == Dir::Orig {
                        state |= CtState::RPL;
                    }
                    let mut r = conn_result(c, state, info.l4_csum_checked);
                    if translated && params.nat.is_some() {
                        r.state |= nat::state_bits(
                            c.status.contains(ConnStatus::SRC_NAT),
                            c.status.contains(ConnStatus::DST_NAT),
                            dir.other(),
                        );
                        r.nat = Some(NatEdit::Related(c.dir_key(dir)));
                    }
                    r
                }
                _ => {
                    tally.invalid += 1;
                    invalid(params.zone, info.l4_csum_checked)
                }
            },
            None => {
                tally.invalid += 1;
                invalid(params.zone, info.l4_csum_checked)
            }
        };
        Step::Done
    }

    /// Create a connection for a packet that has none (commit), or report
    /// it `+new` (no commit); `binding`: its NAT binding.
    #[allow(clippy::too_many_arguments)]
    fn create(
        &self,
        shard: &mut Shard,
        pkt: &CtPacket<'_>,
        info: &PacketInfo,
        binding: Option<&Binding>,
        ctx: &Ctx<'_>,
        tally: &mut Tally,
        out: &mut CtResult,
    ) -> bool {
        let bytes = pkt.l3.len() as u64;
        let params = ctx.params;
        let events = &mut tally.events;
        if !ProtoState::valid_new(info) {
            tally.invalid += 1;
            *out = invalid(params.zone, info.l4_csum_checked);
            return false;
        }
        let expected = self.expectations.take(&info.key, ctx.now_s, params.commit);
        let mut state = CtState::TRK | CtState::NEW;
        if expected.is_some() {
            state |= CtState::REL;
        }
        if !params.commit {
            *out = CtResult {
                state,
                zone: params.zone,
                orig: Some(info.key),
                l4_csum_checked: info.l4_csum_checked,
                ..Default::default()
            };
            return false;
        }
        if !self.reserve(shard, params.zone, ctx, events) {
            shard.stats.refused += 1;
            tally.invalid += 1;
            *out = invalid(params.zone, info.l4_csum_checked);
            return false;
        }
        let proto = ProtoState::new(info);
        let policy = params
            .policy
            .unwrap_or_else(|| self.zones.policy(params.zone));
        let timeout = self.timeout_secs(policy, proto.timeout_attr());
        let mut conn = Conn {
            key: info.key,
            ext: None,
            counters: [DirCounters { packets: 1, bytes }, DirCounters::default()],
            start_ns: ctx.now_ns,
            proto,
            mark: 0,
            expire: ctx.now_s.saturating_add(timeout),
            sched: 0,
            status: ConnStatus::empty(),
            policy,
        };
        if let Some(e) = &expected {
            // Related: records its master; gets no helper of its own.
            conn.status |= ConnStatus::RELATED;
            conn.ext_mut().master = Some(e.master);
        }
        if let Some(h) = params.helper {
            conn.ext_mut().helper = Some(h);
        }
        if let Some(b) = binding {
            conn.status |= b.status;
            let ext = conn.ext_mut();
            ext.reply = Some(b.reply);
            ext.reply_remote = b.remote;
        }
        apply_mark_label(&mut conn, params);
        let slot = shard.insert(conn, ctx.now_s, self.seed, self.mask);
        *out = match shard.get(slot) {
            Some(c) => {
                if ctx.want_events {
                    events.push(ConnEvent::of(
                        EventKind::New,
                        c,
                        shard.conn_id(slot, self.mask),
                        ctx.now_s,
                    ));
                }
                let mut r = conn_result(c, state, info.l4_csum_checked);
                if params.nat.is_some() {
                    apply_nat(c, Dir::Orig, &mut r);
                }
                if let Some(h) = params.helper {
                    let found = crate::alg::inspect(
                        h,
                        c,
                        Dir::Orig,
                        pkt,
                        info,
                        ctx.now_s,
                        &self.expectations,
                    );
                    if params.nat.is_some()
                        && matches!(
                            found,
                            AlgOutcome::Expected {
                                rewrite: Some(_),
                                ..
                            }
                        )
                    {
                        if let Some(c) = shard.get_mut(slot) {
                            alg_rewrite(c, Dir::Orig, info, &found, &mut r);
                        }
                    }
                }
                r
            }
            None => invalid(params.zone, info.l4_csum_checked),
        };
        true
    }

    /// The NAT mapping of a pending expectation a committing `ct(nat)`
    /// packet with no connection matches (the related connection follows
    /// its NATed master).
    #[inline]
    fn expected_nat(&self, info: &PacketInfo, ctx: &Ctx<'_>) -> Option<crate::expect::ExpectNat> {
        if self.expectations.is_empty() || !ctx.params.commit || ctx.params.nat.is_none() {
            return None;
        }
        self.expectations.nat_of(&info.key, ctx.now_s)
    }

    /// A packet [`Tracker::process`] deferred, with no lock held on entry:
    /// follows a remote reference to the connection's shard, removes a
    /// stale one, or chooses a NAT binding. Takes at most two shard locks,
    /// the second only in ascending shard order or by `try_lock`. `why`
    /// is what `process` said: a remote reference's home shard is visited
    /// straight away, without looking the packet up in its own shard again.
    #[allow(clippy::too_many_arguments)]
    fn process_deferred(
        &self,
        pkt: &CtPacket<'_>,
        info: &PacketInfo,
        kh: KeyHash,
        why: Step,
        ctx: &Ctx<'_>,
        tally: &mut Tally,
        out: &mut CtResult,
    ) {
        let key = lookup_key(info);
        let is_error = matches!(info.l4, L4Info::IcmpError { .. });
        let mut home = match why {
            Step::Remote(h) => Some(h as usize),
            _ => None,
        };
        for _ in 0..4 {
            if let Some(a) = home.take() {
                if self.process_at_home(a, pkt, info, kh, ctx, tally, out) {
                    return;
                }
                continue;
            }
            let mut g = self.lock_shard(kh.shard);
            let hit = if is_error {
                None // relate_error looks the embedded packet up itself
            } else {
                g.lookup(key, kh.hash)
            };
            match self.process(&mut g, pkt, info, hit, kh.hash, true, ctx, tally, out) {
                Step::Done => return,
                Step::Remote(h) => home = Some(h as usize),
                Step::Defer => match ctx.params.nat.and_then(|n| n.spec).or_else(|| {
                    self.expected_nat(info, ctx)
                        .map(|n| n.spec(info.key.family))
                }) {
                    Some(spec) => {
                        if self.nat_commit(g, kh, &spec, pkt, info, ctx, tally, out) {
                            return;
                        }
                    }
                    None => break,
                },
            }
        }
        tally.invalid += 1;
        *out = invalid(ctx.params.zone, info.l4_csum_checked);
    }

    /// Process a packet in shard `a`, the home of the connection a remote
    /// reference named. False: start again from the packet's own shard
    /// (the connection ended, or the reference was stale: it is removed
    /// here, with both shards locked).
    #[allow(clippy::too_many_arguments)]
    fn process_at_home(
        &self,
        a: usize,
        pkt: &CtPacket<'_>,
        info: &PacketInfo,
        kh: KeyHash,
        ctx: &Ctx<'_>,
        tally: &mut Tally,
        out: &mut CtResult,
    ) -> bool {
        let key = lookup_key(info);
        let is_error = matches!(info.l4, L4Info::IcmpError { .. });
        let mut g = self.lock_shard(a);
        let hit = if is_error {
            None
        } else {
            g.lookup(key, kh.hash)
        };
        if is_error || hit.is_some_and(|(s, _)| s & REMOTE == 0) {
            return self.process(&mut g, pkt, info, hit, kh.hash, false, ctx, tally, out)
                == Step::Done;
        }
        drop(g);
        if a != kh.shard {
            let (ga, mut gb) = self.lock_two(a, kh.shard);
            if ga.lookup(key, kh.hash).is_none_or(|(s, _)| s & REMOTE != 0) {
                gb.remove_remote(key, kh.hash, a as u32, None);
            }
        }
        false
    }

    /// Lock shards `a` and `b` (different) in ascending order; returns
    /// their guards as `(a, b)`.
    fn lock_two(&self, a: usize, b: usize) -> (MutexGuard<'_, Shard>, MutexGuard<'_, Shard>) {
        if a < b {
            let ga = self.lock_shard(a);
            (ga, self.lock_shard(b))
        } else {
            let gb = self.lock_shard(b);
            (self.lock_shard(a), gb)
        }
    }

    /// Choose a NAT binding for a new connection and create it, with the
    /// packet's home shard `home` (guard `g`) locked. Each candidate reply
    /// tuple is checked under its own shard's lock, which stays held for
    /// the chosen one until its remote reference is in. Returns false when
    /// the home shard had to be unlocked and someone created the
    /// connection meanwhile (the caller looks it up again).
    #[allow(clippy::too_many_arguments)]
    #[cold]
    fn nat_commit<'a>(
        &'a self,
        g: MutexGuard<'a, Shard>,
        kh: KeyHash,
        spec: &NatSpec,
        pkt: &CtPacket<'_>,
        info: &PacketInfo,
        ctx: &Ctx<'_>,
        tally: &mut Tally,
        out: &mut CtResult,
    ) -> bool {
        let orig = info.key;
        if !ProtoState::valid_new(info) {
            tally.invalid += 1;
            *out = invalid(ctx.params.zone, info.l4_csum_checked);
            return true;
        }
        let random = self
            .nat_rng
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_mul(0xd6e8_feb8_6659_fd93);
        let mut home: Option<MutexGuard<'a, Shard>> = Some(g);
        let mut other: Option<(usize, MutexGuard<'a, Shard>)> = None;
        let mut relocked = false;
        let chosen = nat::choose(spec, &orig, self.seed, random, |r| {
            let rh = self.hash(r);
            if rh.shard == kh.shard {
                other = None;
                return home
                    .as_deref()
                    .is_some_and(|h| h.lookup(r, rh.hash).is_none());
            }
            if other.as_ref().is_none_or(|(s, _)| *s != rh.shard) {
                other = None;
                let guard = if rh.shard > kh.shard {
                    self.lock_shard(rh.shard)
                } else if let Some(gt) = self.shards[rh.shard].try_lock() {
                    gt
                } else {
                    // Keep the lock order: let go of the home shard.
                    home = None;
                    let gt = self.lock_shard(rh.shard);
                    home = Some(self.lock_shard(kh.shard));
                    relocked = true;
                    gt
                };
                other = Some((rh.shard, guard));
            }
            other
                .as_ref()
                .is_some_and(|(_, gt)| gt.lookup(r, rh.hash).is_none())
        });
        let Some(mut g) = home else {
            return false;
        };
        if relocked && g.lookup(&orig, kh.hash).is_some() {
            return false;
        }
        let Some(reply) = chosen else {
            tally.nat_exhausted += 1;
            *out = invalid(ctx.params.zone, info.l4_csum_checked);
            out.nat = Some(NatEdit::Drop);
            return true;
        };
        if reply == orig.reverse() {
            // The binding changes nothing: an ordinary connection.
            self.create(&mut g, pkt, info, None, ctx, tally, out);
            return true;
        }
        let rh = self.hash(&reply);
        let remote = (rh.shard != kh.shard).then(|| {
            (
                rh.shard as u32,
                self.nat_gen.fetch_add(1, Ordering::Relaxed),
            )
        });
        let status = match spec.kind {
            nat::NatKind::Src => ConnStatus::SRC_NAT,
            nat::NatKind::Dst => ConnStatus::DST_NAT,
        };
        let binding = Binding {
            reply,
            status,
            remote,
        };
        if self.create(&mut g, pkt, info, Some(&binding), ctx, tally, out) {
            if let (Some((_, gen)), Some((_, gt))) = (remote, other.as_mut()) {
                gt.add_remote(
                    RemoteRef {
                        key: reply,
                        home: kh.shard as u32,
                        gen,
                    },
                    rh.hash,
                );
            }
        }
        true
    }

    /// Count a new connection against the global and zone limits, early
    /// dropping an unreplied connection of this shard if a limit is reached.
    fn reserve(
        &self,
        shard: &mut Shard,
        zone: Zone,
        ctx: &Ctx<'_>,
        events: &mut Vec<ConnEvent>,
    ) -> bool {
        let zslot = self.zones.slot(zone);
        for attempt in 0..2 {
            let (count, max) = (
                self.count.load(Ordering::Relaxed),
                self.max.load(Ordering::Relaxed),
            );
            self.pressure.update(count, max);
            let global_full = count >= max;
            let zlimit = zslot.limit.load(Ordering::Relaxed);
            let zone_full = zlimit != 0 && zslot.count.load(Ordering::Relaxed) >= zlimit;
            if !global_full && !zone_full {
                self.count.fetch_add(1, Ordering::Relaxed);
                zslot.count.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            if attempt == 1 || !self.early_drop(shard, zone_full.then_some(zone), ctx, events) {
                return false;
            }
        }
        false
    }

    /// Evict one connection of this shard (in `zone` when given), chosen
    /// by [`Tracker::early_drop_victim`]: unreplied first, assured only by
    /// explicit policy (see [`crate::pressure`]).
    ///
    /// If this shard has no victim, the next [`EARLY_DROP_NEIGHBOURS`]
    /// shards are tried, each only if its lock is free (`try_lock`: no
    /// waiting, and no deadlock with the shards this thread already
    /// holds, which `try_lock` reports as taken).
    fn early_drop(
        &self,
        shard: &mut Shard,
        zone: Option<Zone>,
        ctx: &Ctx<'_>,
        events: &mut Vec<ConnEvent>,
    ) -> bool {
        if let Some(slot) = self.early_drop_victim(shard, zone) {
            shard.stats.early_drops += 1;
            self.destroy(shard, slot, DestroyCause::EarlyDrop, ctx, events);
            return true;
        }
        let home = shard.number() as usize;
        for k in 1..=EARLY_DROP_NEIGHBOURS.min(self.mask) {
            let Some(mut other) = self.shards[(home + k) & self.mask].try_lock() else {
                continue;
            };
            if let Some(slot) = self.early_drop_victim(&mut other, zone) {
                other.stats.early_drops += 1;
                self.destroy(&mut other, slot, DestroyCause::EarlyDrop, ctx, events);
                return true;
            }
        }
        false
    }

    /// Remove a connection from its shard, release its counts, queue DESTROY.
    fn destroy(
        &self,
        shard: &mut Shard,
        slot: u32,
        cause: DestroyCause,
        ctx: &Ctx<'_>,
        events: &mut Vec<ConnEvent>,
    ) {
        let id = shard.conn_id(slot, self.mask);
        if let Some(c) = shard.remove(slot, self.seed, self.mask) {
            if let Some((t, gen)) = c.ext.as_deref().and_then(|e| e.reply_remote) {
                self.unlinks.lock().push(Unlink {
                    shard: t,
                    key: c.reply_key(),
                    home: shard.number(),
                    gen,
                });
                self.unlinks_pending.store(true, Ordering::Release);
            }
            self.release(&c);
            if ctx.want_events {
                let mut ev = ConnEvent::of(EventKind::Destroy, &c, id, ctx.now_s);
                ev.end_ns = Some(ctx.now_ns);
                ev.cause = Some(cause);
                events.push(ev);
            }
        }
    }

    /// Give back one connection's place under the global and zone limits.
    pub(crate) fn release_counts(&self, zone: Zone) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        self.zones.slot(zone).count.fetch_sub(1, Ordering::Relaxed);
    }

    /// Give back a removed connection's counts.
    pub(crate) fn release(&self, c: &Conn) {
        if c.status.contains(ConnStatus::OFFLOADED) {
            self.offload_epoch.fetch_add(1, Ordering::Release);
        }
        self.release_counts(c.key.zone);
        if !self.expectations.is_empty() {
            self.expectations.remove_master(&c.key);
        }
    }

    /// Remove the remote references of destroyed NAT connections. Called
    /// with no shard lock held (end of a batch, a sweep, a flush).
    pub(crate) fn drain_unlinks(&self) {
        if !self.unlinks_pending.load(Ordering::Acquire) {
            return;
        }
        let todo = {
            let mut u = self.unlinks.lock();
            self.unlinks_pending.store(false, Ordering::Release);
            std::mem::take(&mut *u)
        };
        for u in todo {
            let h = self.hash(&u.key);
            debug_assert_eq!(h.shard, u.shard as usize);
            self.lock_shard(u.shard as usize)
                .remove_remote(&u.key, h.hash, u.home, Some(u.gen));
        }
    }

    pub(crate) fn events_wanted(&self) -> bool {
        self.has_sinks.load(Ordering::Relaxed)
    }

    /// Expire idle connections: advance each shard's wheel to `now_ns`,
    /// examining at most `budget` wheel entries in all (at least 16 per
    /// shard). Locks one shard at a time. Then retries the DESTROY events
    /// of dying connections that are due (reliable delivery). Returns
    /// connections expired.
    ///
    /// Work is bounded per call, never a table scan: per shard, at most
    /// `max(budget / shards, 16)` due entries are examined (the rest stay
    /// due for the next call), plus, when the wheel's clock enters a new
    /// 64 s / 68 min / 3-day period, the re-filing of that one higher-level
    /// slot's entries (on average the shard's connections filed that far
    /// out divided by 64), plus under pressure a reaping window of the
    /// same per-shard size ([`crate::pressure`]). A shard lock is held for
    /// one shard's share only.
    pub fn sweep(&self, now_ns: u64, budget: usize) -> usize {
        let now_s = (now_ns / NS_PER_S) as u32;
        let per_shard = (budget / self.shards.len()).max(16);
        let want_events = self.events_wanted();
        let params = CtParams::default();
        let ctx = Ctx {
            params: &params,
            now_ns,
            now_s,
            liberal: false,
            want_events,
        };
        let mut due = Vec::new();
        let mut events = Vec::new();
        let mut expired = 0;
        for i in 0..self.shards.len() {
            let mut shard = self.lock_shard(i);
            due.clear();
            shard.take_due(now_s, per_shard, &mut due);
            for e in &due {
                let Some(c) = shard.get(e.slot) else { continue };
                if c.sched != e.tick as u16 {
                    continue; // stale: re-filed or slot reused
                }
                if c.expired(now_s) {
                    shard.stats.expired += 1;
                    self.destroy(&mut shard, e.slot, DestroyCause::Expired, &ctx, &mut events);
                    expired += 1;
                } else {
                    shard.refile(e.slot);
                }
            }
            expired += self.reap_embryonic(&mut shard, now_ns, now_s, per_shard, &mut events);
            drop(shard);
            if !events.is_empty() {
                self.deliver(&events);
                events.clear();
            }
        }
        self.expectations.expire(now_s);
        self.drain_unlinks();
        self.retry_dying(now_ns);
        self.pressure.update(self.len() as u32, self.max_conns());
        expired
    }

    /// Memory held by the table, by part (one shard locked at a time).
    pub fn memory(&self) -> TableMemory {
        let mut m = TableMemory::default();
        for s in self.shards.iter() {
            let (r, i, w) = s.lock().bytes();
            m.records += r;
            m.index += i;
            m.wheel += w;
        }
        m
    }

    /// Counters summed over all shards.
    pub fn counters(&self) -> CtCounters {
        let mut c = CtCounters {
            connections: self.len() as u64,
            max_connections: self.max_conns() as u64,
            invalid: self.counters.invalid.load(Ordering::Relaxed),
            untracked: self.counters.untracked.load(Ordering::Relaxed),
            events_refused: self.counters.events_refused.load(Ordering::Relaxed),
            nat_exhausted: self.counters.nat_exhausted.load(Ordering::Relaxed),
            ..Default::default()
        };
        for s in self.shards.iter() {
            let g = s.lock();
            c.nat_remote_refs += g.remote_count() as u64;
            let st = g.stats;
            c.inserts += st.inserts;
            c.early_drops += st.early_drops;
            c.refused += st.refused;
            c.expired += st.expired;
            c.deleted += st.deleted;
        }
        c
    }

    pub(crate) fn destroy_slot(
        &self,
        shard: &mut Shard,
        slot: u32,
        cause: DestroyCause,
        now_ns: u64,
        events: &mut Vec<ConnEvent>,
    ) {
        let params = CtParams::default();
        let ctx = Ctx {
            params: &params,
            now_ns,
            now_s: (now_ns / NS_PER_S) as u32,
            liberal: false,
            want_events: self.events_wanted(),
        };
        self.destroy(shard, slot, cause, &ctx, events);
    }
}

/// Per-batch context of the `ct` action.
struct Ctx<'a> {
    params: &'a CtParams,
    now_ns: u64,
    now_s: u32,
    liberal: bool,
    want_events: bool,
}

/// The key a packet is looked up by: its own, or for an ICMP error the
/// embedded packet's.
#[inline]
fn lookup_key(info: &PacketInfo) -> &ConnKey {
    match &info.l4 {
        L4Info::IcmpError { inner } => inner,
        _ => &info.key,
    }
}

#[inline]
fn invalid(zone: Zone, l4_csum_checked: bool) -> CtResult {
    CtResult {
        state: CtState::TRK | CtState::INV,
        zone,
        l4_csum_checked,
        ..Default::default()
    }
}

/// State bits of a packet of an existing connection travelling in `dir`.
#[inline]
fn conn_state(c: &Conn, dir: Dir) -> CtState {
    let mut s = CtState::TRK;
    s |= if c.seen_reply() {
        CtState::EST
    } else {
        CtState::NEW
    };
    if dir == Dir::Reply {
        s |= CtState::RPL;
    }
    if c.status.contains(ConnStatus::RELATED) {
        s |= CtState::REL;
    }
    s
}

/// A `ct` action with `nat` on a packet of `c` travelling in `dir`: the
/// translation (if the connection has one) and the `+snat`/`+dnat` bits.
#[inline]
fn apply_nat(c: &Conn, dir: Dir, out: &mut CtResult) {
    let (src, dst) = (
        c.status.contains(ConnStatus::SRC_NAT),
        c.status.contains(ConnStatus::DST_NAT),
    );
    if !(src || dst) {
        return;
    }
    out.state |= nat::state_bits(src, dst, dir);
    out.nat = Some(NatEdit::Packet(nat::target(&c.key, &c.reply_key(), dir)));
    if let Some(e) = c.ext.as_deref().filter(|e| e.seqadj.is_active()) {
        out.alg = Some(AlgEdit {
            dir,
            seqadj: e.seqadj,
            payload: None,
        });
    }
}

/// The TCP tracker on a packet of a connection with sequence adjustment:
/// its acknowledgement refers to the other direction's stream as shifted
/// on the wire, so it is mapped back to the sender's numbering first (as
/// Linux's `tcp_in_window` subtracts the receiver's seqadj offset).
#[cold]
fn update_adjusted(c: &mut Conn, dir: Dir, info: &PacketInfo, liberal: bool) -> Update {
    let adj = c.ext.as_deref().map(|e| e.seqadj).unwrap_or_default();
    let mut info = *info;
    if let L4Info::Tcp(seg) = &mut info.l4 {
        if seg.flags & packet::tcp_flags::ACK != 0 {
            seg.ack = adj.ack(dir, seg.ack);
        }
    }
    c.proto.update(dir, &info, liberal)
}

/// The helper found an announcement that NAT must rewrite (`found`): record
/// the resize in the connection's sequence adjustment and ask the datapath
/// for the rewrite (the packet itself keeps its sequence number; its
/// acknowledgement is adjusted like any other).
#[cold]
fn alg_rewrite(c: &mut Conn, dir: Dir, info: &PacketInfo, found: &AlgOutcome, out: &mut CtResult) {
    let AlgOutcome::Expected {
        rewrite: Some(pe), ..
    } = found
    else {
        return;
    };
    let (L4Info::Tcp(seg), Ok(delta)) = (info.l4, pe.delta()) else {
        return;
    };
    if out.nat.is_none() {
        return; // the connection is not NATed after all
    }
    let ext = c.ext_mut();
    ext.seqadj.record(dir, seg.seq, delta);
    out.alg = Some(AlgEdit {
        dir,
        seqadj: ext.seqadj,
        payload: Some(*pe as PayloadEdit),
    });
}

#[inline]
fn conn_result(c: &Conn, state: CtState, l4_csum_checked: bool) -> CtResult {
    CtResult {
        state,
        zone: c.key.zone,
        mark: c.mark,
        label: c.label(),
        orig: Some(c.key),
        l4_csum_checked,
        nat: None,
        alg: None,
    }
}

#[inline]
fn apply_mark_label(c: &mut Conn, params: &CtParams) {
    if let Some((v, m)) = params.mark {
        c.mark = (c.mark & !m) | (v & m);
    }
    if let Some((v, m)) = params.label {
        let l = (c.label() & !m) | (v & m);
        c.set_label(l);
    }
}
