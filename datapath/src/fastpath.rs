//! Flow-offload fast path: a per-thread table of established connections
//! whose packets skip classification and conntrack (after Linux's
//! netfilter flow table, enabled "by policy" with
//! [`crate::pipeline::PipelineConfig::flow_offload`]).
//!
//! # What is offloaded
//!
//! A packet's pipeline run is offloadable when, exactly:
//!
//! 1. its first pass (recirculation id 0) matched a cached megaflow whose
//!    program is a single `ct(..., table=N)` op (recirculating), without
//!    `force`, without setting `ct_mark`/`ct_label`, and without an ALG
//!    helper (`nat` is allowed: the connection's binding is replayed);
//! 2. conntrack reported `+trk+est` (not `+new`, `+rel`, `+inv`), no ALG
//!    edit, and the connection is one [`ct::Tracker::offload`] accepts
//!    (TCP past the handshake and not closing, or UDP; assured; no helper);
//! 3. its second pass matched a cached megaflow whose program is header
//!    rewrites (`set_field`/`mod_*`) followed by exactly one `output`, and
//!    nothing else (no second `ct`, no `controller`, no VLAN, metadata or
//!    in-port change, no drop).
//!
//! The entry then holds: the NAT edit conntrack asked for, the rewrites,
//! the output port, an [`ct::OffloadHandle`] and the two megaflows (their
//! counters, and so the rules', are credited with the entry's traffic at
//! revalidation). Each direction of a connection gets its own entry.
//!
//! # Key
//!
//! The whole first-pass flow key with the TCP flags cleared, not just the
//! 5-tuple + zone + in_port: the first pass's program may depend on any
//! header (MACs, VLAN, TOS, TTL), and the zone is a consequence of that
//! program, so matching the whole key is what makes replaying it exact.
//!
//! # Hand-back to the classic path
//!
//! - TCP SYN, FIN or RST: the entry is removed and the connection released
//!   (every other fast-path entry of the connection fails its next
//!   [`ct::Tracker::touch`]), the packet goes through the classic path;
//! - IP fragments always take the classic path (reassembly);
//! - the connection is gone (expired, flushed, replaced), its mark/label
//!   changed, or another holder released it: `touch` answers false;
//! - any change to the switch ([`crate::switch::Switch::generation`]
//!   moves: flow-mod, port, timeout policy): the whole table is emptied
//!   with the caches;
//! - idle entries (no packet for `max_idle_ms`) are collected at
//!   revalidation.
//!
//! # Differences from the classic path (on purpose)
//!
//! - Checksums are not verified (the classic path's conntrack would report
//!   a corrupt packet `+inv`); as in Linux's flow table, a corrupt packet of
//!   an offloaded connection is forwarded.
//! - TCP window tracking is liberal while offloaded (see [`ct::offload`]).
//! - Conntrack's counters, expiry and TCP window edges are updated lazily:
//!   an entry accumulates its packets while conntrack's offload epoch
//!   ([`ct::Tracker::offload_epoch`]) stays put, and accounts them in one
//!   touch at the revalidation tick, on hand-back (the other direction's
//!   entry on this thread too), or at its first packet after the epoch
//!   moved (which is also when a flushed, expired, released or re-marked
//!   connection is noticed). `dump-conntrack` counters can therefore lag
//!   by up to `revalidate_ms`, or four times that in a table of more than
//!   [`TICK_MIN_SLICE`] entries (see [`FastPath::tick`]). A touch without packets (revalidating an
//!   entry whose epoch moved) does not refresh the connection's expiry.
//! - Packets are not counted in `ct_packets`, nor in megaflow hits; they
//!   are counted in [`crate::pipeline::PipelineCounters::offload_hits`].
//!
//! # Layout, for speed
//!
//! An entry is split: a 128-byte `Hot` part (the key, the output port,
//! the epoch and the accounting owed to conntrack, including the latest
//! TCP segment) that is all a packet of an entry without edits reads or
//! writes, and a `Cold` part (handle, NAT edit, rewrites, megaflows, idle
//! clock, megaflow credit). The index (`index.rs`) maps key hashes to
//! entry numbers in 64-byte buckets. A batch is looked up in three passes
//! (hash and prefetch buckets; read candidates and prefetch entries;
//! confirm and account), so its cache misses overlap instead of queueing;
//! at the revalidation tick, entries settle with conntrack 32 at a time
//! ([`ct::Tracker::touch_batch`]).
//!
//! `pipeline-bench --offload --cpu-time --runs 5 --packets 3000000`
//! (UDP, 64-byte frames, one thread, the generator's own cost included in
//! both paths, medians of 5): 2.6x the classic path at 1k connections,
//! 4.2x at 100k, 3.3x at 1M (2M entries).
//!
//! # Hardware (rte_flow) offload
//!
//! With `dpdk.hw_offload`, every entry installed or removed here is also
//! reported to a [`crate::hw_offload::HwOffloadSink`] (see
//! [`FastPath::set_hw_offload`]), which pushes it to the ingress DPDK port
//! as an rte_flow rule from its own thread: [`crate::hw_offload`] explains
//! full vs partial offload, what is pushed, and what was tested where.

mod index;

use std::sync::Arc;

use index::KeyIndex;

use crate::action::{nat, rewrite};
use crate::cache::FlowRef;
use crate::flow::FlowKey;
use crate::hw_offload::{FastRule, HwOffloadSink};
use crate::packet::{prefetch, Packet, PortNo};
use crate::program::Op;
use crate::BATCH_SIZE;

// One conntrack touch batch covers a whole packet batch.
const _: () = assert!(BATCH_SIZE <= ct::tracker::BATCH);

/// [`FastPath::tick`] visits this fraction of the table per call (but at
/// least [`TICK_MIN_SLICE`] entries): with the default 500 ms
/// revalidation, every entry settles with conntrack at least every 2 s
/// (hence [`ct::offload::MIN_TIMEOUT_S`]), and every tick in a table of
/// up to that many entries.
pub const TICK_SLICES: usize = 4;
pub const TICK_MIN_SLICE: usize = 8192;

/// Entries one thread holds at most (both directions count).
pub const DEFAULT_MAX_ENTRIES: usize = 1 << 22;

/// Words of a [`FlowKey`] an IP packet's extraction fills on its first
/// pass (in_port, dl_type/proto/tos/ttl/frag, MACs, VLANs, addresses,
/// ports, IPv6 label); the others (recirculation, ct fields, metadata, ND,
/// ARP) must be zero for the key to be used.
const KEY_WORDS: [usize; 12] = [0, 2, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
/// Word of the TCP flags (cleared in the key) and their bits in it.
const TCP_FLAGS_WORD: usize = 14;
const TCP_FLAGS_MASK: u64 = 0xffff << 32;

/// A first-pass flow key with the TCP flags cleared: the words of
/// [`KEY_WORDS`].
#[derive(Clone, Copy)]
pub struct FastKey([u64; 12]);

impl PartialEq for FastKey {
    /// Word by word without branches (the derived compare calls `memcmp`).
    #[inline]
    fn eq(&self, o: &FastKey) -> bool {
        self.0
            .iter()
            .zip(o.0.iter())
            .fold(0, |a, (x, y)| a | (x ^ y))
            == 0
    }
}

impl Eq for FastKey {}

impl FastKey {
    /// The key of `key`; None if a word outside [`KEY_WORDS`] is set (not
    /// a first pass, or not an IP packet).
    #[inline]
    pub fn of(key: &FlowKey) -> Option<FastKey> {
        let w = key.words();
        let mut k = [0u64; 12];
        for (o, &i) in k.iter_mut().zip(KEY_WORDS.iter()) {
            *o = w[i];
        }
        k[10] &= !TCP_FLAGS_MASK;
        let rest = w[1] | w[3] | w[4] | w[5] | w[16..].iter().fold(0, |a, b| a | b);
        (rest == 0).then_some(FastKey(k))
    }

    /// The first-pass flow key back (TCP flags cleared).
    pub fn flow_key(&self) -> FlowKey {
        let mut key = FlowKey::ZERO;
        for (&w, &i) in self.0.iter().zip(KEY_WORDS.iter()) {
            key.words_mut()[i] = w;
        }
        key
    }
}

const _: () = assert!(KEY_WORDS[10] == TCP_FLAGS_WORD);

/// [`Hot::flags`]: the entry has a NAT edit or rewrites (in [`Cold`]).
const EDITS: u8 = 1;
/// [`Hot::flags`]: `seg_*` hold the latest unaccounted TCP segment.
const SEG: u8 = 2;

/// What a packet of an offloaded direction needs, in two cache lines: the
/// key to confirm the lookup, the output, and the accounting owed to
/// conntrack since the last touch (see [`FastPath::settle`]).
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Hot {
    key: FastKey,
    /// Low bits of conntrack's offload epoch at the last successful touch
    /// (every entry is touched at least once a revalidation tick, far
    /// less often than 2^32 epoch moves).
    epoch: u32,
    /// Packets and bytes (whole frames) not yet accounted.
    pend_packets: u32,
    pend_bytes: u32,
    out: PortNo,
    /// The latest unaccounted TCP segment (if [`SEG`]).
    seg_seq: u32,
    seg_ack: u32,
    seg_win: u16,
    seg_payload: u16,
    seg_flags: u8,
    flags: u8,
    /// L2 header length of the entry's frames (the key fixes it).
    l3_off: u8,
}

const _: () = assert!(std::mem::size_of::<Hot>() == 128);

impl Hot {
    fn seg(&self) -> Option<ct::packet::TcpSeg> {
        (self.flags & SEG != 0).then_some(ct::packet::TcpSeg {
            seq: self.seg_seq,
            ack: self.seg_ack,
            win: self.seg_win,
            flags: self.seg_flags,
            payload_len: u32::from(self.seg_payload),
            wscale: None,
            sack_perm: false,
        })
    }

    /// Packets and L3 bytes owed to conntrack.
    fn pend(&self) -> (u64, u64) {
        let p = u64::from(self.pend_packets);
        let l2 = p * u64::from(self.l3_off);
        (p, u64::from(self.pend_bytes).saturating_sub(l2))
    }

    /// Add one packet of `frame` bytes (false: a counter would overflow,
    /// settle first).
    #[inline]
    fn add(&mut self, frame: u32, seg: Option<&ct::packet::TcpSeg>) -> bool {
        let (Some(p), Some(b)) = (
            self.pend_packets.checked_add(1),
            self.pend_bytes.checked_add(frame),
        ) else {
            return false;
        };
        self.pend_packets = p;
        self.pend_bytes = b;
        if let Some(s) = seg {
            self.seg_seq = s.seq;
            self.seg_ack = s.ack;
            self.seg_win = s.win;
            self.seg_payload = s.payload_len.min(u32::from(u16::MAX)) as u16;
            self.seg_flags = s.flags;
            self.flags |= SEG;
        }
        true
    }

    fn clear_pend(&mut self) {
        self.pend_packets = 0;
        self.pend_bytes = 0;
        self.flags &= !SEG;
    }
}

/// The rest of an entry: read on install, hand-back and at the
/// revalidation tick, and per packet only if it has edits.
struct Cold {
    hash: u64,
    handle: ct::OffloadHandle,
    dir: ct::Dir,
    nat: Option<ct::nat::NatEdit>,
    /// `SetHeader` ops of the second pass, in order.
    rewrites: Box<[Op]>,
    /// First- and second-pass megaflows.
    flows: [FlowRef; 2],
    /// Last time packets were accounted (idle collection).
    used_ms: u64,
    /// Traffic accounted but not yet credited to the megaflows.
    packets: u64,
    bytes: u64,
}

/// What the fast path did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No entry: classic path.
    Miss,
    /// The entry was dropped (see the module docs): classic path.
    HandBack,
    /// Rewritten, to be sent to this port.
    Forward(PortNo),
    /// Its NAT rewrite failed: drop it (the classic path drops too).
    Drop,
}

/// What was learnt about a packet of the batch on its way through the
/// classic path (see the module docs for the conditions).
#[derive(Clone, Copy)]
struct Candidate {
    key: FastKey,
    flow: FlowRef,
    recirc: u32,
    /// Set by conntrack's verdict: (original tuple, direction, NAT edit).
    ct: Option<(ct::ConnKey, ct::Dir, Option<ct::nat::NatEdit>)>,
}

/// The fast-path table of one poll-mode thread.
pub struct FastPath {
    index: KeyIndex,
    /// Entry number -> entry (both `None`/free together).
    hot: Vec<Hot>,
    cold: Vec<Option<Cold>>,
    free: Vec<u32>,
    /// (connection's original tuple, direction index) -> entry: finds the
    /// other direction's entry on a hand-back.
    by_conn: hashbrown::HashMap<(ct::ConnKey, usize), u32>,
    /// Megaflow credit of removed entries: (megaflows, packets, bytes,
    /// used_ms).
    removed_credit: Vec<([FlowRef; 2], u64, u64, u64)>,
    /// Entries with megaflow credit to hand out.
    owed: Vec<u32>,
    /// Where the next [`FastPath::tick`] starts.
    tick_cursor: usize,
    max_entries: usize,
    /// By pass slot.
    cands: Box<[Option<Candidate>; BATCH_SIZE]>,
    pub installs: u64,
    pub handbacks: u64,
    /// Told of every entry installed and removed (entry number as id).
    hw: Option<Arc<dyn HwOffloadSink>>,
    /// The settlement buffer, kept between uses (no allocation per batch).
    scratch: Option<Box<Settlements>>,
}

impl Default for FastPath {
    fn default() -> Self {
        FastPath::new(DEFAULT_MAX_ENTRIES)
    }
}

/// Read a TCP segment's window-tracking fields from a packet whose L3/L4
/// offsets extraction set; None if the headers are not all there.
fn tcp_seg(p: &Packet, ipv6: bool) -> Option<ct::packet::TcpSeg> {
    let l3 = p.meta.l3_offset()?;
    let l4 = p.meta.l4_offset()?;
    let d = p.data();
    let ip_end = if ipv6 {
        let plen = u16::from_be_bytes([*d.get(l3 + 4)?, *d.get(l3 + 5)?]) as usize;
        l3 + 40 + plen
    } else {
        let tot = u16::from_be_bytes([*d.get(l3 + 2)?, *d.get(l3 + 3)?]) as usize;
        l3 + tot
    };
    let t = d.get(l4..l4 + 20)?;
    let doff = usize::from(t[12] >> 4) * 4;
    let payload = ip_end.checked_sub(l4 + doff)?;
    if ip_end > d.len() {
        return None;
    }
    Some(ct::packet::TcpSeg {
        seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        ack: u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
        win: u16::from_be_bytes([t[14], t[15]]),
        flags: t[13],
        payload_len: payload as u32,
        wscale: None,
        sack_perm: false,
    })
}

/// One settlement: the connection, the direction, packets and L3 bytes,
/// the latest TCP segment.
type Settlement = (
    ct::OffloadHandle,
    ct::Dir,
    (u64, u64),
    Option<ct::packet::TcpSeg>,
);

/// Entries whose accounting [`FastPath::settle_batch`] owes conntrack.
struct Settlements {
    idx: [u32; BATCH_SIZE],
    req: [Settlement; BATCH_SIZE],
    ok: [bool; BATCH_SIZE],
    n: usize,
}

impl Settlements {
    fn new() -> Box<Settlements> {
        Box::new(Settlements {
            idx: [0; BATCH_SIZE],
            req: [(ct::OffloadHandle::default(), ct::Dir::Orig, (0, 0), None); BATCH_SIZE],
            ok: [false; BATCH_SIZE],
            n: 0,
        })
    }
}

impl FastPath {
    pub fn new(max_entries: usize) -> FastPath {
        FastPath {
            index: KeyIndex::new(),
            hot: Vec::new(),
            cold: Vec::new(),
            free: Vec::new(),
            by_conn: Default::default(),
            removed_credit: Vec::new(),
            owed: Vec::new(),
            tick_cursor: 0,
            max_entries,
            cands: Box::new([None; BATCH_SIZE]),
            installs: 0,
            handbacks: 0,
            hw: None,
            scratch: Some(Settlements::new()),
        }
    }

    /// Report entries to a hardware offloader ([`crate::hw_offload`]).
    pub fn set_hw_offload(&mut self, sink: Option<Arc<dyn HwOffloadSink>>) {
        self.hw = sink;
    }

    /// Entries (offloaded connection directions).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Move entry `idx`'s pending traffic out of its hot part: into the
    /// megaflow credit (and the idle clock) now, and into `st` for one
    /// [`ct::Tracker::touch_batch`] (which must follow before `st` fills).
    fn settle(&mut self, idx: u32, now_ms: u64, st: &mut Settlements) {
        let (Some(h), Some(Some(c))) = (
            self.hot.get_mut(idx as usize),
            self.cold.get_mut(idx as usize),
        ) else {
            return;
        };
        let pend = h.pend();
        if pend.0 > 0 {
            if c.packets == 0 {
                self.owed.push(idx);
            }
            c.packets += pend.0;
            c.bytes += u64::from(h.pend_bytes);
            c.used_ms = now_ms;
        }
        st.idx[st.n] = idx;
        st.req[st.n] = (c.handle, c.dir, pend, h.seg());
        st.n += 1;
        h.clear_pend();
    }

    /// Touch conntrack for the settlements of `st` (answers in `st.ok`).
    fn settle_batch(&self, st: &mut Settlements, tracker: &ct::Tracker, now_ns: u64) {
        let req = &st.req;
        let handle = |k: usize| (&req[k].0, req[k].1, req[k].2, req[k].3);
        tracker.touch_batch(st.n, handle, now_ns, &mut st.ok);
    }

    /// Forward the packets of `pkts[..n]` (keys `keys`, as extracted) that
    /// belong to entries: account them in their entries, apply the NAT
    /// edit and rewrites. `out[i]` says what became of packet `i` (a packet
    /// told [`Verdict::Forward`] or [`Verdict::Drop`] is still in its slot
    /// for the caller to send or free).
    ///
    /// Three passes over the batch so that its cache misses overlap: hash
    /// every key and prefetch its index bucket; read the buckets and
    /// prefetch the entries; then confirm keys and forward.
    pub fn forward_batch(
        &mut self,
        pkts: &mut [Option<Packet>],
        keys: &mut [FlowKey],
        tracker: &ct::Tracker,
        now_ns: u64,
        out: &mut [Verdict],
    ) {
        let n = pkts.len().min(keys.len()).min(out.len()).min(BATCH_SIZE);
        // 1. Hash, prefetch buckets.
        // (The keys themselves are gathered again in step 3: cheaper than
        // keeping a batch of them.)
        let mut keyed = [false; BATCH_SIZE];
        let mut hashes = [0u64; BATCH_SIZE];
        for i in 0..n {
            out[i] = Verdict::Miss;
            let Some(p) = pkts[i].as_ref() else {
                continue;
            };
            let key = &keys[i];
            if key.nw_frag() != 0 || p.meta.frag_layout != 0 {
                continue;
            }
            let Some(fk) = FastKey::of(key) else {
                continue;
            };
            hashes[i] = self.index.hash(&fk);
            self.index.prefetch(hashes[i]);
            keyed[i] = true;
        }
        // 2. Candidates from the buckets, prefetch their entries.
        let mut cand = [u32::MAX; BATCH_SIZE];
        for i in 0..n {
            if keyed[i] {
                if let Some(idx) = self.index.candidate(hashes[i]) {
                    if let Some(h) = self.hot.get(idx as usize) {
                        prefetch(h);
                        prefetch(&h.seg_seq);
                    }
                    cand[i] = idx;
                }
            }
        }
        // 3. Confirm, account.
        let epoch = tracker.offload_epoch() as u32;
        let now_ms = now_ns / 1_000_000;
        let mut found = [u32::MAX; BATCH_SIZE];
        let mut fwd = [0u8; BATCH_SIZE];
        let mut nfwd = 0;
        let mut check = self.take_scratch();
        let mut check_pkt = [(0u8, 0u32, None::<ct::packet::TcpSeg>); BATCH_SIZE];
        for i in 0..n {
            if !keyed[i] {
                continue;
            }
            let Some(fk) = &FastKey::of(&keys[i]) else {
                continue;
            };
            let hot = &self.hot;
            let idx = match hot.get(cand[i] as usize) {
                Some(h) if h.key == *fk => cand[i],
                _ => match self.index.find(hashes[i], |e| {
                    hot.get(e as usize).is_some_and(|h| h.key == *fk)
                }) {
                    Some(e) => e,
                    None => continue,
                },
            };
            let Some(p) = pkts[i].as_ref() else {
                continue;
            };
            found[i] = idx;
            let key = &keys[i];
            let seg = if key.nw_proto() == ct::key::ipproto::TCP {
                use ct::packet::tcp_flags::{FIN, RST, SYN};
                match tcp_seg(p, key.dl_type() == 0x86dd) {
                    Some(s) if s.flags & (SYN | FIN | RST) == 0 => Some(s),
                    _ => {
                        out[i] = Verdict::HandBack;
                        continue;
                    }
                }
            } else {
                None
            };
            let frame = p.len() as u32;
            let h = &mut self.hot[idx as usize];
            h.l3_off = p.meta.l3_offset().unwrap_or(0).min(255) as u8;
            if h.epoch == epoch && h.add(frame, seg.as_ref()) {
                fwd[nfwd] = i as u8;
                nfwd += 1;
            } else {
                // Touch first (with what the entry has pending); the
                // packet itself is accounted once it is known to stay on
                // the fast path (else conntrack counts it).
                check_pkt[check.n] = (i as u8, frame, seg);
                self.settle(idx, now_ms, &mut check);
            }
        }
        // 4. Entries the epoch no longer vouches for touch conntrack.
        if check.n > 0 {
            self.settle_batch(&mut check, tracker, now_ns);
            for (k, &(i, frame, seg)) in check_pkt[..check.n].iter().enumerate() {
                let idx = check.idx[k];
                if !check.ok[k] {
                    out[i as usize] = Verdict::HandBack;
                    continue;
                }
                let h = &mut self.hot[idx as usize];
                h.epoch = epoch;
                h.add(frame, seg.as_ref());
                fwd[nfwd] = i;
                nfwd += 1;
            }
        }
        self.scratch = Some(check);
        // 5. Rewrite.
        for &i in &fwd[..nfwd] {
            let i = i as usize;
            let idx = found[i] as usize;
            let (Some(p), Some(h)) = (pkts[i].as_mut(), self.hot.get(idx)) else {
                continue;
            };
            out[i] = Verdict::Forward(h.out);
            if h.flags & EDITS == 0 {
                continue;
            }
            let Some(Some(c)) = self.cold.get(idx) else {
                continue;
            };
            let key = &mut keys[i];
            if let Some(edit) = &c.nat {
                if nat::apply(p, key, edit) != nat::NatOutcome::Done {
                    out[i] = Verdict::Drop;
                    continue;
                }
            }
            for op in c.rewrites.iter() {
                if let Op::SetHeader { field, value, mask } = op {
                    // The classic path carries on after a failed rewrite too.
                    let _ = rewrite::set_field(p, key, *field, *value, *mask);
                }
            }
        }
        // Hand-backs drop their entries.
        for i in 0..n {
            if out[i] == Verdict::HandBack && found[i] != u32::MAX {
                self.remove(found[i], tracker, now_ns);
            }
        }
    }

    /// Drop entry `idx`: settle it and the other direction's entry (so
    /// the classic path sees current TCP windows from now on), release the
    /// connection.
    fn remove(&mut self, idx: u32, tracker: &ct::Tracker, now_ns: u64) {
        let Some(Some(c)) = self.cold.get(idx as usize) else {
            return;
        };
        let (key, dir) = (*c.handle.key(), c.dir);
        let now_ms = now_ns / 1_000_000;
        let mut st = self.take_scratch();
        self.settle(idx, now_ms, &mut st);
        if let Some(&o) = self.by_conn.get(&(key, 1 - dir.index())) {
            self.settle(o, now_ms, &mut st);
        }
        self.settle_batch(&mut st, tracker, now_ns);
        self.scratch = Some(st);
        self.drop_entry(idx, tracker);
    }

    /// The settlement buffer, emptied (put it back in `scratch` after).
    fn take_scratch(&mut self) -> Box<Settlements> {
        let mut st = self.scratch.take().unwrap_or_else(Settlements::new);
        st.n = 0;
        st
    }

    /// Megaflow credit of removed entries, handed out by the next
    /// [`FastPath::drain_counts`].
    fn credit_on_removal(&mut self, c: Cold) {
        if c.packets > 0 {
            self.removed_credit
                .push((c.flows, c.packets, c.bytes, c.used_ms));
        }
    }

    /// Account what every entry has pending to conntrack, in batches;
    /// entries whose connection can no longer be carried are dropped.
    /// Entries with nothing pending and a current epoch are skipped.
    pub fn sync(&mut self, tracker: &ct::Tracker, now_ns: u64) {
        self.walk(0..self.cold.len(), tracker, now_ns, None);
    }

    /// The revalidation tick: [`FastPath::sync`] and idle collection
    /// (`max_idle_ms` without a packet) over the next slice of the table
    /// (see [`TICK_SLICES`]), so that a large table's settling is spread
    /// over several ticks.
    pub fn tick(&mut self, tracker: &ct::Tracker, now_ns: u64, max_idle_ms: u64) {
        let len = self.cold.len();
        if len == 0 {
            return;
        }
        let start = self.tick_cursor.min(len);
        let slice = len.div_ceil(TICK_SLICES).max(TICK_MIN_SLICE);
        let end = (start + slice).min(len);
        self.tick_cursor = if end >= len { 0 } else { end };
        self.walk(start..end, tracker, now_ns, Some(max_idle_ms));
    }

    fn walk(
        &mut self,
        range: std::ops::Range<usize>,
        tracker: &ct::Tracker,
        now_ns: u64,
        max_idle_ms: Option<u64>,
    ) {
        let epoch = tracker.offload_epoch() as u32;
        let now_ms = now_ns / 1_000_000;
        let mut st = self.take_scratch();
        let mut gone = Vec::new();
        for idx in range {
            let Some(c) = &self.cold[idx] else {
                continue;
            };
            let h = &self.hot[idx];
            if h.pend_packets == 0 && h.epoch == epoch {
                if max_idle_ms.is_some_and(|m| now_ms.saturating_sub(c.used_ms) > m) {
                    gone.push(idx as u32);
                }
                continue;
            }
            self.settle(idx as u32, now_ms, &mut st);
            if st.n == BATCH_SIZE {
                self.finish_sync_batch(&mut st, epoch, tracker, now_ns, &mut gone);
            }
        }
        if st.n > 0 {
            self.finish_sync_batch(&mut st, epoch, tracker, now_ns, &mut gone);
        }
        self.scratch = Some(st);
        for idx in gone {
            self.drop_entry(idx, tracker);
        }
    }

    fn finish_sync_batch(
        &mut self,
        st: &mut Settlements,
        epoch: u32,
        tracker: &ct::Tracker,
        now_ns: u64,
        gone: &mut Vec<u32>,
    ) {
        self.settle_batch(st, tracker, now_ns);
        for k in 0..st.n {
            if st.ok[k] {
                self.hot[st.idx[k] as usize].epoch = epoch;
            } else {
                gone.push(st.idx[k]);
            }
        }
        st.n = 0;
    }

    /// Drop entry `idx` (already settled): release its connection.
    fn drop_entry(&mut self, idx: u32, tracker: &ct::Tracker) {
        let Some(c) = self.cold.get_mut(idx as usize).and_then(Option::take) else {
            return;
        };
        self.index.remove(c.hash, idx);
        self.by_conn.remove(&(*c.handle.key(), c.dir.index()));
        tracker.release_offload(&c.handle);
        self.credit_on_removal(c);
        if let Some(h) = &self.hw {
            h.removed(u64::from(idx));
        }
        self.free.push(idx);
        self.handbacks += 1;
    }

    /// Forget what was learnt about the previous batch.
    pub fn begin_batch(&mut self, n: usize) {
        self.cands[..n].fill(None);
    }

    /// Before a group of the pass runs `ops` (`flow`: its megaflow, None
    /// if uncached): note first-pass candidates, install second-pass ones.
    pub fn note_group(
        &mut self,
        flow: Option<FlowRef>,
        ops: &[Op],
        group: &[u8],
        keys: &[FlowKey],
        tracker: &ct::Tracker,
        now_ns: u64,
    ) {
        for &i in group {
            let i = i as usize;
            let key = &keys[i];
            let cand = self.cands[i].take();
            let Some(flow) = flow else {
                continue;
            };
            if key.recirc_id() == 0 {
                if let [Op::Ct(c)] = ops {
                    let p = &c.params;
                    if let (Some(recirc), false, None, None, None) =
                        (c.recirc, p.force, p.mark, p.label, p.helper)
                    {
                        let Some(fk) = FastKey::of(key) else {
                            continue;
                        };
                        self.cands[i] = Some(Candidate {
                            key: fk,
                            flow,
                            recirc,
                            ct: None,
                        });
                    }
                }
                continue;
            }
            let Some(Candidate {
                key: fk,
                flow: first,
                recirc,
                ct: Some((orig, dir, nat)),
            }) = cand
            else {
                continue;
            };
            if key.recirc_id() != recirc || self.index.len() >= self.max_entries {
                continue;
            }
            let Some((Op::Output(out), rewrites)) = ops.split_last() else {
                continue;
            };
            if !rewrites.iter().all(|o| matches!(o, Op::SetHeader { .. })) {
                continue;
            }
            let hash = self.index.hash(&fk);
            let hot = &self.hot;
            if self
                .index
                .find(hash, |e| hot.get(e as usize).is_some_and(|h| h.key == fk))
                .is_some()
            {
                // The same direction learnt twice in one batch.
                continue;
            }
            let epoch = tracker.offload_epoch() as u32;
            let Some(handle) = tracker.offload(&orig, now_ns) else {
                continue;
            };
            let h = Hot {
                key: fk,
                // Vouched for by the offload just made; a later move of
                // the epoch makes the next packet touch first.
                epoch,
                pend_packets: 0,
                pend_bytes: 0,
                out: *out,
                seg_seq: 0,
                seg_ack: 0,
                seg_win: 0,
                seg_payload: 0,
                seg_flags: 0,
                flags: if nat.is_some() || !rewrites.is_empty() {
                    EDITS
                } else {
                    0
                },
                l3_off: 0,
            };
            let c = Cold {
                hash,
                handle,
                dir,
                nat,
                rewrites: rewrites.into(),
                flows: [first, flow],
                used_ms: now_ns / 1_000_000,
                packets: 0,
                bytes: 0,
            };
            let conn = (*handle.key(), dir.index());
            let idx = match self.free.pop() {
                Some(idx) => {
                    self.hot[idx as usize] = h;
                    self.cold[idx as usize] = Some(c);
                    idx
                }
                None => {
                    self.hot.push(h);
                    self.cold.push(Some(c));
                    (self.hot.len() - 1) as u32
                }
            };
            let cold = &self.cold;
            self.index.insert(hash, idx, |e| {
                cold.get(e as usize)
                    .and_then(Option::as_ref)
                    .map_or(0, |c| c.hash)
            });
            self.by_conn.insert(conn, idx);
            if let (Some(h), Some(Some(c))) = (&self.hw, self.cold.get(idx as usize)) {
                if let Some(r) = FastRule::new(&fk.flow_key(), c.nat.as_ref(), &c.rewrites, *out) {
                    h.installed(u64::from(idx), &r);
                }
            }
            self.installs += 1;
        }
    }

    /// Conntrack's verdict for pass slot `i` (`last`: the packet itself
    /// goes round again to `recirc`).
    pub fn note_ct(&mut self, i: usize, r: &ct::CtResult, recirc: Option<u32>, last: bool) {
        let Some(c) = self.cands[i].as_mut() else {
            return;
        };
        use ct::CtState as S;
        let ok = last
            && recirc == Some(c.recirc)
            && r.state.contains(S::TRK | S::EST)
            && !r.state.intersects(S::NEW | S::REL | S::INV | S::UNTRACKED)
            && r.alg.is_none();
        match (ok, r.orig) {
            (true, Some(orig)) => {
                let dir = if r.state.contains(S::RPL) {
                    ct::Dir::Reply
                } else {
                    ct::Dir::Orig
                };
                c.ct = Some((orig, dir, r.nat));
            }
            _ => self.cands[i] = None,
        }
    }

    /// Step 5 of the pipeline keeps the slots flagged in `again` (in
    /// order, packed to the front): keep their candidates with them.
    pub fn regather(&mut self, again: &[bool]) {
        let mut k = 0;
        for (i, &a) in again.iter().enumerate() {
            let c = self.cands[i].take();
            if a {
                self.cands[k] = c;
                k += 1;
            }
        }
    }

    /// Hand the traffic not yet credited to `credit(megaflow, packets,
    /// bytes, used_ms)` for both of each entry's megaflows (only entries
    /// that settled traffic since the last call are visited).
    pub fn drain_counts(&mut self, mut credit: impl FnMut(FlowRef, u64, u64, u64)) {
        for (flows, p, b, used) in self.removed_credit.drain(..) {
            for f in flows {
                credit(f, p, b, used);
            }
        }
        for idx in self.owed.drain(..) {
            // An entry removed since is in `removed_credit`; a reused slot
            // may be listed twice (the second visit finds nothing).
            let Some(Some(c)) = self.cold.get_mut(idx as usize) else {
                continue;
            };
            if c.packets > 0 {
                for f in c.flows {
                    credit(f, c.packets, c.bytes, c.used_ms);
                }
                c.packets = 0;
                c.bytes = 0;
            }
        }
    }

    /// Hand everything back (the switch changed). Credit the megaflows
    /// after, before they go ([`FastPath::drain_counts`]).
    pub fn clear(&mut self, tracker: &ct::Tracker, now_ns: u64) {
        self.sync(tracker, now_ns);
        for idx in 0..self.cold.len() as u32 {
            self.drop_entry(idx, tracker);
        }
        self.index.clear();
        self.hot.clear();
        self.cold.clear();
        self.free.clear();
        self.by_conn.clear();
        self.owed.clear();
        self.tick_cursor = 0;
        self.cands.fill(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hot() -> Hot {
        Hot {
            key: FastKey([0; 12]),
            epoch: 0,
            pend_packets: 0,
            pend_bytes: 0,
            out: PortNo(2),
            seg_seq: 0,
            seg_ack: 0,
            seg_win: 0,
            seg_payload: 0,
            seg_flags: 0,
            flags: 0,
            l3_off: 14,
        }
    }

    #[test]
    fn hot_accounting_owes_l3_bytes_and_the_latest_segment() {
        let mut h = hot();
        assert!(h.add(64, None));
        let seg = ct::packet::TcpSeg {
            seq: 7,
            ack: 9,
            win: 100,
            flags: ct::packet::tcp_flags::ACK,
            payload_len: 10,
            wscale: None,
            sack_perm: false,
        };
        assert!(h.add(100, Some(&seg)));
        // Frames of 64 and 100 bytes behind a 14-byte Ethernet header.
        assert_eq!(h.pend(), (2, 164 - 28));
        assert_eq!(h.seg(), Some(seg));
        h.clear_pend();
        assert_eq!(h.pend(), (0, 0));
        assert_eq!(h.seg(), None);
    }

    #[test]
    fn hot_counters_refuse_to_overflow() {
        let mut h = hot();
        h.pend_bytes = u32::MAX - 10;
        // Would wrap: refused, nothing changed (the caller settles first).
        assert!(!h.add(64, None));
        assert_eq!(h.pend_packets, 0);
        assert_eq!(h.pend_bytes, u32::MAX - 10);
        assert!(h.add(10, None));
        h.pend_packets = u32::MAX;
        assert!(!h.add(1, None));
    }
}
