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
//! - Packets are not counted in `ct_packets`, nor in megaflow hits; they
//!   are counted in [`crate::pipeline::PipelineCounters::offload_hits`].
//!
//! # Hardware (rte_flow) offload, not implemented
//!
//! An entry is almost an rte_flow rule: pattern ETH/IPV4|IPV6/TCP|UDP on
//! the exact key (plus `in_port` as the ingress port), actions
//! SET_IPV4_SRC/DST, SET_TP_SRC/DST (the NAT edit and rewrites),
//! PORT_ID (the output), and a COUNT action. What it would take: a
//! per-port capability probe (`rte_flow_validate`), installing from a
//! control thread (rule insertion is slow and may sleep), TCP flag
//! matching so SYN/FIN/RST still reach software (a higher-priority rule
//! sending them to the normal queue), periodic `rte_flow_query` of the
//! COUNT action to feed [`ct::Tracker::touch`] in bulk (counters and
//! expiry; window tracking would have to be fully liberal), and removal on
//! the same hand-back events as here. Packets keep taking this software
//! path until the hardware rule is in.

use std::hash::{BuildHasherDefault, Hash, Hasher};

use crate::action::{nat, rewrite};
use crate::cache::FlowRef;
use crate::flow::{flow_hash, FlowKey};
use crate::packet::{Packet, PortNo};
use crate::program::Op;
use crate::BATCH_SIZE;

/// Entries one thread holds at most (both directions count).
pub const DEFAULT_MAX_ENTRIES: usize = 1 << 20;

/// A first-pass flow key with the TCP flags cleared.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FastKey(FlowKey);

impl FastKey {
    pub fn of(key: &FlowKey) -> FastKey {
        let mut k = *key;
        k.set_tcp_flags(0);
        FastKey(k)
    }
}

impl Hash for FastKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u32(flow_hash(&self.0, 0));
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
    fn write_u32(&mut self, v: u32) {
        // Spread the 32-bit hash over the 64 bits hashbrown uses (top 7
        // bits for its tags).
        self.0 = u64::from(v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
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
    map: hashbrown::HashMap<FastKey, Entry, BuildHasherDefault<PassThrough>>,
    max_entries: usize,
    /// By pass slot.
    cands: Box<[Option<Candidate>; BATCH_SIZE]>,
    pub installs: u64,
    pub handbacks: u64,
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

impl FastPath {
    pub fn new(max_entries: usize) -> FastPath {
        FastPath {
            map: Default::default(),
            max_entries,
            cands: Box::new([None; BATCH_SIZE]),
            installs: 0,
            handbacks: 0,
        }
    }

    /// Entries (offloaded connection directions).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Forward `p` (key `key`, as extracted) if it belongs to an entry:
    /// account it to conntrack, apply the NAT edit and rewrites.
    pub fn forward(
        &mut self,
        p: &mut Packet,
        key: &mut FlowKey,
        tracker: &ct::Tracker,
        now_ns: u64,
    ) -> Verdict {
        if key.nw_frag() != 0 || p.meta.frag_layout != 0 {
            return Verdict::Miss;
        }
        let fk = FastKey::of(key);
        let Some(e) = self.map.get_mut(&fk) else {
            return Verdict::Miss;
        };
        let ipv6 = key.dl_type() == 0x86dd;
        let seg = if key.nw_proto() == ct::key::ipproto::TCP {
            use ct::packet::tcp_flags::{FIN, RST, SYN};
            match tcp_seg(p, ipv6) {
                Some(s) if s.flags & (SYN | FIN | RST) == 0 => Some(s),
                _ => {
                    self.remove(&fk, tracker);
                    return Verdict::HandBack;
                }
            }
        } else {
            None
        };
        let l3_len = p
            .meta
            .l3_offset()
            .map_or(0, |o| p.len().saturating_sub(o)) as u64;
        if !tracker.touch(&e.handle, e.dir, l3_len, seg.as_ref(), now_ns) {
            self.remove(&fk, tracker);
            return Verdict::HandBack;
        }
        if let Some(edit) = &e.nat {
            if nat::apply(p, key, edit) != nat::NatOutcome::Done {
                return Verdict::Drop;
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
        e.used_ms = now_ns / 1_000_000;
        Verdict::Forward(e.out)
    }

    fn remove(&mut self, fk: &FastKey, tracker: &ct::Tracker) {
        if let Some(e) = self.map.remove(fk) {
            tracker.release_offload(&e.handle);
            self.handbacks += 1;
        }
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
                        self.cands[i] = Some(Candidate {
                            key: FastKey::of(key),
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
            };
            if let Some(old) = self.map.insert(fk, e) {
                // The same direction learnt twice in one batch: keep one.
                let _ = old;
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
        for e in self.map.values_mut() {
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
    pub fn expire_idle(&mut self, now_ms: u64, max_idle_ms: u64, tracker: &ct::Tracker) {
        let mut gone = 0;
        self.map.retain(|_, e| {
            let keep = now_ms.saturating_sub(e.used_ms) <= max_idle_ms;
            if !keep {
                tracker.release_offload(&e.handle);
                gone += 1;
            }
            keep
        });
        self.handbacks += gone;
    }

    /// Hand everything back (the switch changed). Credit first
    /// ([`FastPath::drain_counts`]).
    pub fn clear(&mut self, tracker: &ct::Tracker) {
        for (_, e) in self.map.drain() {
            tracker.release_offload(&e.handle);
            self.handbacks += 1;
        }
        self.cands.fill(None);
    }
}
