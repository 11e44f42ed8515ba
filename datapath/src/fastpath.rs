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
//!   by up to `revalidate_ms`.
//!
//! # Performance (not yet at the 2.5x target)
//!
//! `pipeline-bench --offload` (UDP, 64-byte frames, one thread): about 2x
//! the classic path at 1k connections, but only parity or worse at 100k:
//! the table (two entries per connection, a 96-byte key and a ~250-byte
//! entry each) misses the cache as much as conntrack's own lookup does.
//! Next steps: a compact entry inline in the bucket, one entry for both
//! directions, and prefetching the batch's buckets (needs a table with a
//! hash-first API).
//! - Packets are not counted in `ct_packets`, nor in megaflow hits; they
//!   are counted in [`crate::pipeline::PipelineCounters::offload_hits`].
//!
//! # Hardware (rte_flow) offload
//!
//! With `dpdk.hw_offload`, every entry installed or removed here is also
//! reported to a [`crate::hw_offload::HwOffloadSink`] (see
//! [`FastPath::set_hw_offload`]), which pushes it to the ingress DPDK port
//! as an rte_flow rule from its own thread: [`crate::hw_offload`] explains
//! full vs partial offload, what is pushed, and what was tested where.

use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

use crate::action::{nat, rewrite};
use crate::cache::FlowRef;
use crate::flow::FlowKey;
use crate::hw_offload::{FastRule, HwOffloadSink};
use crate::packet::{Packet, PortNo};
use crate::program::Op;
use crate::BATCH_SIZE;

// One conntrack touch batch covers a whole packet batch.
const _: () = assert!(BATCH_SIZE <= ct::tracker::BATCH);

/// Entries one thread holds at most (both directions count).
pub const DEFAULT_MAX_ENTRIES: usize = 1 << 20;

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
    pub fn of(key: &FlowKey) -> Option<FastKey> {
        let w = key.words();
        let mut k = [0u64; 12];
        for (o, &i) in k.iter_mut().zip(KEY_WORDS.iter()) {
            *o = w[i];
        }
        k[KEY_WORDS.iter().position(|&i| i == TCP_FLAGS_WORD)?] &= !TCP_FLAGS_MASK;
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

impl Hash for FastKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        let mut acc = 0u64;
        for w in self.0 {
            acc = (acc ^ w)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(29);
        }
        h.write_u64(acc);
    }
}

/// Passes the key's own hash through.
#[derive(Default)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        // Mix the high bits down too: hashbrown takes its tag from the top
        // seven bits and its bucket from the low ones.
        self.0 = v ^ (v >> 32);
    }
}

/// One offloaded direction of a connection.
struct Entry {
    handle: ct::OffloadHandle,
    dir: ct::Dir,
    nat: Option<ct::nat::NatEdit>,
    /// `SetHeader` ops of the second pass, in order.
    rewrites: Box<[Op]>,
    out: PortNo,
    /// First- and second-pass megaflows.
    flows: [FlowRef; 2],
    used_ms: u64,
    /// Traffic not yet credited to the megaflows.
    packets: u64,
    bytes: u64,
    /// Conntrack's offload epoch at the last successful touch: while it
    /// has not moved, the entry is valid without touching.
    epoch: u64,
    /// Packets and L3 bytes not yet accounted to conntrack, and the
    /// latest TCP segment among them.
    pend: (u64, u64),
    seg: Option<ct::packet::TcpSeg>,
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
    /// Key -> index into `entries`.
    map: hashbrown::HashMap<FastKey, u32, BuildHasherDefault<PassThrough>>,
    entries: Vec<Option<Entry>>,
    free: Vec<u32>,
    /// (connection's original tuple, direction index) -> entry: finds the
    /// other direction's entry on a hand-back.
    by_conn: hashbrown::HashMap<(ct::ConnKey, usize), u32>,
    max_entries: usize,
    /// By pass slot.
    cands: Box<[Option<Candidate>; BATCH_SIZE]>,
    pub installs: u64,
    pub handbacks: u64,
    /// Told of every entry installed and removed (slot index as id).
    hw: Option<Arc<dyn HwOffloadSink>>,
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

/// An entry leaves: account what it has pending, release the connection.
fn retire(e: &Entry, tracker: &ct::Tracker, now_ns: u64) {
    if e.pend.0 > 0 {
        tracker.touch(&e.handle, e.dir, e.pend, e.seg.as_ref(), now_ns);
    }
    tracker.release_offload(&e.handle);
}

impl FastPath {
    pub fn new(max_entries: usize) -> FastPath {
        FastPath {
            map: Default::default(),
            entries: Vec::new(),
            free: Vec::new(),
            by_conn: Default::default(),
            max_entries,
            cands: Box::new([None; BATCH_SIZE]),
            installs: 0,
            handbacks: 0,
            hw: None,
        }
    }

    /// Report entries to a hardware offloader ([`crate::hw_offload`]).
    pub fn set_hw_offload(&mut self, sink: Option<Arc<dyn HwOffloadSink>>) {
        self.hw = sink;
    }

    /// Entries (offloaded connection directions).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Forward the packets of `pkts[..n]` (keys `keys`, as extracted) that
    /// belong to entries: account them to conntrack (one
    /// [`ct::Tracker::touch_batch`]), apply the NAT edit and rewrites.
    /// `out[i]` says what became of packet `i` (a packet told
    /// [`Verdict::Forward`] or [`Verdict::Drop`] is still in its slot for
    /// the caller to send or free).
    pub fn forward_batch(
        &mut self,
        pkts: &mut [Option<Packet>],
        keys: &mut [FlowKey],
        tracker: &ct::Tracker,
        now_ns: u64,
        out: &mut [Verdict],
    ) {
        let n = pkts.len().min(keys.len()).min(out.len()).min(BATCH_SIZE);
        // 1. Look the packets up (independent lookups: their misses
        // overlap) and account them in their entries.
        let epoch = tracker.offload_epoch();
        let mut fwd = [(0u32, 0u32); BATCH_SIZE];
        let mut nfwd = 0;
        let mut check = [(0u32, 0u32, 0u64, None::<ct::packet::TcpSeg>); BATCH_SIZE];
        let mut ncheck = 0;
        let mut fks = [None::<FastKey>; BATCH_SIZE];
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
            let Some(&idx) = self.map.get(&fk) else {
                continue;
            };
            let Some(e) = self.entries.get_mut(idx as usize).and_then(Option::as_mut) else {
                continue;
            };
            fks[i] = Some(fk);
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
            let l3 = p.meta.l3_offset().map_or(0, |o| p.len().saturating_sub(o)) as u64;
            if e.epoch == epoch {
                e.pend.0 += 1;
                e.pend.1 += l3;
                if seg.is_some() {
                    e.seg = seg;
                }
                fwd[nfwd] = (i as u32, idx);
                nfwd += 1;
            } else {
                // Checked first; the packet itself is accounted once it is
                // known to stay on the fast path (else conntrack counts it).
                check[ncheck] = (i as u32, idx, l3, seg);
                ncheck += 1;
            }
        }
        // 2. Entries the epoch no longer vouches for touch conntrack first
        // (with what they have pending).
        if ncheck > 0 {
            let mut ok = [false; BATCH_SIZE];
            {
                let entries = &self.entries;
                let req = |k: usize| {
                    let e = entries[check[k].1 as usize].as_ref().expect("mapped entry");
                    (&e.handle, e.dir, e.pend, e.seg)
                };
                tracker.touch_batch(ncheck, req, now_ns, &mut ok);
            }
            for k in 0..ncheck {
                let (i, idx, l3, seg) = check[k];
                let Some(Some(e)) = self.entries.get_mut(idx as usize) else {
                    continue;
                };
                // Accounted by the touch, carried on or not.
                e.pend = (0, 0);
                e.seg = None;
                if !ok[k] {
                    out[i as usize] = Verdict::HandBack;
                    continue;
                }
                e.epoch = epoch;
                e.pend = (1, l3);
                e.seg = seg;
                fwd[nfwd] = (i, idx);
                nfwd += 1;
            }
        }
        // 3. Rewrite.
        let now_ms = now_ns / 1_000_000;
        for &(i, idx) in &fwd[..nfwd] {
            let i = i as usize;
            let (Some(p), Some(Some(e))) = (pkts[i].as_mut(), self.entries.get_mut(idx as usize))
            else {
                continue;
            };
            let key = &mut keys[i];
            if let Some(edit) = &e.nat {
                if nat::apply(p, key, edit) != nat::NatOutcome::Done {
                    out[i] = Verdict::Drop;
                    continue;
                }
            }
            for op in e.rewrites.iter() {
                if let Op::SetHeader { field, value, mask } = op {
                    // The classic path carries on after a failed rewrite too.
                    let _ = rewrite::set_field(p, key, *field, *value, *mask);
                }
            }
            e.packets += 1;
            e.bytes += p.len() as u64;
            e.used_ms = now_ms;
            out[i] = Verdict::Forward(e.out);
        }
        // Hand-backs drop their entries.
        for i in 0..n {
            if out[i] == Verdict::HandBack {
                if let Some(fk) = fks[i] {
                    self.remove(&fk, tracker, now_ns);
                }
            }
        }
    }

    fn remove(&mut self, fk: &FastKey, tracker: &ct::Tracker, now_ns: u64) {
        if let Some(idx) = self.map.remove(fk) {
            if let Some(e) = self.entries.get_mut(idx as usize).and_then(Option::take) {
                let key = *e.handle.key();
                self.by_conn.remove(&(key, e.dir.index()));
                // The other direction's unaccounted segments first, so the
                // classic path sees current TCP windows from now on.
                let other = 1 - e.dir.index();
                if let Some(&o) = self.by_conn.get(&(key, other)) {
                    if let Some(Some(s)) = self.entries.get_mut(o as usize) {
                        if s.pend.0 > 0 {
                            tracker.touch(&s.handle, s.dir, s.pend, s.seg.as_ref(), now_ns);
                            s.pend = (0, 0);
                            s.seg = None;
                        }
                    }
                }
                retire(&e, tracker, now_ns);
                if let Some(h) = &self.hw {
                    h.removed(u64::from(idx));
                }
                self.handbacks += 1;
            }
            self.free.push(idx);
        }
    }

    /// Account what the entries have pending to conntrack (the
    /// revalidation tick); entries whose connection can no longer be
    /// carried are dropped.
    pub fn sync(&mut self, tracker: &ct::Tracker, now_ns: u64) {
        let epoch = tracker.offload_epoch();
        let mut gone = 0;
        let (entries, free, by_conn, hw) = (
            &mut self.entries,
            &mut self.free,
            &mut self.by_conn,
            &self.hw,
        );
        self.map.retain(|_, idx| {
            let slot = &mut entries[*idx as usize];
            let Some(e) = slot.as_mut() else {
                free.push(*idx);
                return false;
            };
            if e.pend.0 == 0 && e.epoch == epoch {
                return true;
            }
            let carried = tracker.touch(&e.handle, e.dir, e.pend, e.seg.as_ref(), now_ns);
            e.pend = (0, 0);
            e.seg = None;
            if carried {
                e.epoch = epoch;
                return true;
            }
            tracker.release_offload(&e.handle);
            if let Some(h) = hw {
                h.removed(u64::from(*idx));
            }
            by_conn.remove(&(*e.handle.key(), e.dir.index()));
            *slot = None;
            free.push(*idx);
            gone += 1;
            false
        });
        self.handbacks += gone;
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
            if key.recirc_id() != recirc || self.map.len() >= self.max_entries {
                continue;
            }
            let Some((Op::Output(out), rewrites)) = ops.split_last() else {
                continue;
            };
            if !rewrites.iter().all(|o| matches!(o, Op::SetHeader { .. })) {
                continue;
            }
            let epoch = tracker.offload_epoch();
            let Some(handle) = tracker.offload(&orig, now_ns) else {
                continue;
            };
            let e = Entry {
                handle,
                dir,
                nat,
                rewrites: rewrites.into(),
                out: *out,
                flows: [first, flow],
                used_ms: now_ns / 1_000_000,
                packets: 0,
                bytes: 0,
                // Vouched for by the offload just made; a later move of
                // the epoch makes the next packet touch first.
                epoch,
                pend: (0, 0),
                seg: None,
            };
            let conn = (*handle.key(), dir.index());
            let idx = if let Some(&idx) = self.map.get(&fk) {
                // The same direction learnt twice in one batch: keep the
                // newer.
                if let Some(h) = &self.hw {
                    h.removed(u64::from(idx));
                }
                self.entries[idx as usize] = Some(e);
                self.by_conn.insert(conn, idx);
                idx
            } else {
                let idx = match self.free.pop() {
                    Some(idx) => {
                        self.entries[idx as usize] = Some(e);
                        idx
                    }
                    None => {
                        self.entries.push(Some(e));
                        (self.entries.len() - 1) as u32
                    }
                };
                self.map.insert(fk, idx);
                self.by_conn.insert(conn, idx);
                idx
            };
            if let Some(h) = &self.hw {
                if let Some(r) = FastRule::new(&fk.flow_key(), nat.as_ref(), rewrites, *out) {
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
    /// bytes, used_ms)` for both of each entry's megaflows.
    pub fn drain_counts(&mut self, mut credit: impl FnMut(FlowRef, u64, u64, u64)) {
        for e in self.entries.iter_mut().flatten() {
            if e.packets > 0 {
                for f in e.flows {
                    credit(f, e.packets, e.bytes, e.used_ms);
                }
                e.packets = 0;
                e.bytes = 0;
            }
        }
    }

    /// Collect entries idle longer than `max_idle_ms`.
    pub fn expire_idle(&mut self, now_ns: u64, max_idle_ms: u64, tracker: &ct::Tracker) {
        let now_ms = now_ns / 1_000_000;
        let mut gone = 0;
        let (entries, free, by_conn, hw) = (
            &mut self.entries,
            &mut self.free,
            &mut self.by_conn,
            &self.hw,
        );
        self.map.retain(|_, idx| {
            let slot = &mut entries[*idx as usize];
            let keep = slot
                .as_ref()
                .is_some_and(|e| now_ms.saturating_sub(e.used_ms) <= max_idle_ms);
            if !keep {
                if let Some(e) = slot.take() {
                    by_conn.remove(&(*e.handle.key(), e.dir.index()));
                    retire(&e, tracker, now_ns);
                    if let Some(h) = hw {
                        h.removed(u64::from(*idx));
                    }
                    gone += 1;
                }
                free.push(*idx);
            }
            keep
        });
        self.handbacks += gone;
    }

    /// Hand everything back (the switch changed). Credit first
    /// ([`FastPath::drain_counts`]).
    pub fn clear(&mut self, tracker: &ct::Tracker, now_ns: u64) {
        self.map.clear();
        self.free.clear();
        self.by_conn.clear();
        for (idx, e) in self.entries.drain(..).enumerate() {
            let Some(e) = e else { continue };
            retire(&e, tracker, now_ns);
            if let Some(h) = &self.hw {
                h.removed(idx as u64);
            }
            self.handbacks += 1;
        }
        self.cands.fill(None);
    }
}
