//! Handles on connections carried by a fast path (flow offload).
//!
//! A switch's fast path forwards the packets of an established connection
//! without running them through conntrack's lookup and state machine; it
//! still owes conntrack the connection's accounting: packet and byte
//! counters, the expiry refresh, and (TCP) the window edges, so that the
//! connection can be handed back to the classic path at any time and its
//! next packets are judged against current sequence numbers.
//!
//! [`Tracker::offload`] looks a connection up once and returns an
//! [`OffloadHandle`] (shard, slot and the original tuple, which detects a
//! slot reused by another connection), marking the connection
//! [`ConnStatus::OFFLOADED`] (`dump-conntrack` shows `[OFFLOAD]`).
//! [`Tracker::touch`] then accounts packets under the shard lock, with
//! no hashing or index walk; it answers false when the connection is gone,
//! expired, no longer marked offloaded (another holder released it: a
//! FIN/RST or a flush on any thread tears down every fast-path entry of the
//! connection), or its mark/label changed, and the caller must then drop
//! its entry and send the packet through the classic path.
//! [`Tracker::release_offload`] clears the mark.
//!
//! A fast path need not touch the connection for every packet:
//! [`Tracker::offload_epoch`] moves whenever an offloaded connection ends
//! (expiry, flush, replacement), is released, or has its mark or label
//! set by a `ct(commit)`. While the epoch has not moved since an entry's
//! last successful touch, the entry is still valid and may accumulate
//! packets and bytes to account later (in one touch); once it moves, the
//! next packet must touch first. Accounting late is safe as long as it
//! happens well within the connection's timeout (the caller's
//! revalidation interval is well under a second; timeouts are seconds).
//!
//! What is offloadable ([`Tracker::offload`] refuses everything else):
//! TCP or UDP connections, assured (traffic seen both ways past the
//! handshake), without an ALG helper or sequence adjustment, whose NAT
//! reply tuple (if any) lives in the connection's own shard, and whose
//! timeout is at least [`MIN_TIMEOUT_S`].
//!
//! TCP window tracking while offloaded is liberal, as Linux does for
//! offloaded flows: a fast-path segment's edges are folded into the window
//! state without the four window checks (the fast path has already
//! decided to forward it), and packets of an offloaded connection that do
//! take the classic path are judged liberally too (the window state lags
//! what fast paths have forwarded but not yet accounted). Known gap: once
//! released, a connection is judged strictly again, while another
//! thread's entry may still hold unaccounted segments of it (until that
//! entry's next packet or revalidation tick): a packet acknowledging them
//! in that window can be found `+inv`. Like Linux's flow table, the fast path does not examine
//! state-changing segments: SYN, FIN and RST are the caller's to hand back.

use crate::conn::ConnStatus;
use crate::key::{ipproto, ConnKey, Dir};
use crate::packet::TcpSeg;
use crate::proto::ProtoState;
use crate::table::REMOTE;
use crate::tracker::Tracker;
use std::sync::atomic::Ordering;

const NS_PER_S: u64 = 1_000_000_000;

/// Connections whose timeout (by their policy and state) is shorter are
/// not offloaded: a fast path may account for its packets only every few
/// seconds, and the connection must not expire in between.
pub const MIN_TIMEOUT_S: u32 = 10;

/// Where an offloaded connection lives, and what it must still be. (The
/// default handle names no connection: every touch of it fails.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffloadHandle {
    shard: u32,
    slot: u32,
    /// Original tuple: a slot reused by another connection fails the check.
    key: ConnKey,
    /// `ct_mark` and `ct_label` when offloaded: the fast path's cached
    /// actions were chosen under them.
    mark: u32,
    label: u128,
}

impl OffloadHandle {
    /// The connection's original tuple.
    pub fn key(&self) -> &ConnKey {
        &self.key
    }
}

impl Tracker {
    /// Mark the connection whose original tuple is `orig` as offloaded and
    /// return a handle on it, if it is offloadable (see the module docs).
    pub fn offload(&self, orig: &ConnKey, now_ns: u64) -> Option<OffloadHandle> {
        if !matches!(orig.proto, ipproto::TCP | ipproto::UDP) {
            return None;
        }
        let now_s = (now_ns / NS_PER_S) as u32;
        let h = self.hash(orig);
        let mut shard = self.lock_shard(h.shard);
        let (slot, dir) = shard.lookup(orig, h.hash)?;
        if slot & REMOTE != 0 || dir != Dir::Orig {
            return None;
        }
        let c = shard.get_mut(slot)?;
        let plain = !matches!(c.ext.as_deref(),
            Some(e) if e.helper.is_some() || e.seqadj.is_active());
        let tcp_open = match &c.proto {
            ProtoState::Tcp(t) => !t.is_closing() && !c.proto.is_embryonic(),
            ProtoState::Udp(_) => true,
            _ => false,
        };
        if !plain
            || !tcp_open
            || !c
                .status
                .contains(ConnStatus::ASSURED | ConnStatus::SEEN_REPLY)
            || c.expired(now_s)
            || self.timeout_secs(c.policy, c.proto.timeout_attr()) < MIN_TIMEOUT_S
        {
            return None;
        }
        c.status |= ConnStatus::OFFLOADED;
        Some(OffloadHandle {
            shard: h.shard as u32,
            slot,
            key: c.key,
            mark: c.mark,
            label: c.label(),
        })
    }

    /// Current offload epoch (see the module docs). Read it before a touch
    /// whose success is to vouch for the entry until the epoch moves.
    pub fn offload_epoch(&self) -> u64 {
        self.offload_epoch.load(Ordering::Acquire)
    }

    /// Account `packets` fast-path packets of `bytes` in all (L3 lengths,
    /// as conntrack counts) travelling `dir` on the handle's connection:
    /// counters, expiry, and for TCP the window edges of `seg` (the latest
    /// segment). The traffic is accounted whenever the handle's connection
    /// still exists; the answer is false when the
    /// connection can no longer be carried (see the module docs): nothing
    /// was accounted, the caller drops its entry.
    pub fn touch(
        &self,
        h: &OffloadHandle,
        dir: Dir,
        (packets, bytes): (u64, u64),
        seg: Option<&TcpSeg>,
        now_ns: u64,
    ) -> bool {
        let now_s = (now_ns / NS_PER_S) as u32;
        let mut shard = self.lock_shard(h.shard as usize);
        self.touch_locked(&mut shard, h, dir, (packets, bytes), seg, now_s)
    }

    #[inline]
    fn touch_locked(
        &self,
        shard: &mut crate::table::Shard,
        h: &OffloadHandle,
        dir: Dir,
        (packets, bytes): (u64, u64),
        seg: Option<&TcpSeg>,
        now_s: u32,
    ) -> bool {
        let Some(c) = shard.get_mut(h.slot) else {
            return false;
        };
        if c.key != h.key || c.expired(now_s) {
            return false;
        }
        // Still the handle's connection: account what was forwarded even
        // if it can be carried no further.
        if let (ProtoState::Tcp(t), Some(seg)) = (&mut c.proto, seg) {
            t.record_offloaded(dir, seg);
        }
        let ctr = &mut c.counters[dir.index()];
        ctr.packets += packets;
        ctr.bytes += bytes;
        // A touch with no packets (revalidating a handle) must not keep an
        // idle connection alive.
        let mut shrank = false;
        if packets > 0 {
            let (policy, attr) = (c.policy, c.proto.timeout_attr());
            let expire = now_s.saturating_add(self.timeout_secs(policy, attr));
            shrank = expire < c.expire;
            c.expire = expire;
        }
        let carried =
            c.status.contains(ConnStatus::OFFLOADED) && c.mark == h.mark && c.label() == h.label;
        if shrank {
            shard.refile(h.slot);
        }
        carried
    }

    /// [`Tracker::touch`] for up to [`crate::tracker::BATCH`] packets at
    /// once: `req(k)` describes touch `k < n` (handle, direction, packets
    /// and L3 bytes, latest TCP segment); `ok[k]` receives its answer. The shards are
    /// locked together first (ascending order, try-lock), so the
    /// connection records' cache misses overlap instead of each waiting
    /// behind a lock's atomic; a shard another thread holds is locked on
    /// its own afterwards.
    pub fn touch_batch<'h>(
        &self,
        n: usize,
        req: impl Fn(usize) -> (&'h OffloadHandle, Dir, (u64, u64), Option<TcpSeg>),
        now_ns: u64,
        ok: &mut [bool],
    ) {
        use crate::table::KeyHash;
        use crate::tracker::BATCH;
        let n = n.min(BATCH).min(ok.len());
        let mut hashes = [KeyHash::default(); BATCH];
        let mut live = [false; BATCH];
        for k in 0..n {
            hashes[k].shard = req(k).0.shard as usize & self.mask;
            live[k] = true;
        }
        let mut retry = [false; BATCH];
        {
            let mut guards: [Option<parking_lot::MutexGuard<'_, crate::table::Shard>>; BATCH] =
                Default::default();
            let mut guard_of = [0u8; BATCH];
            self.lock_batch_shards(&live[..n], &hashes[..n], &mut guards, &mut guard_of);
            let now_s = (now_ns / NS_PER_S) as u32;
            // Load every record once first: independent loads, so their
            // cache misses overlap (what a prefetch would do, without
            // unsafe code).
            let mut warm = 0u32;
            for k in 0..n {
                if let Some(shard) = guards[guard_of[k] as usize].as_ref() {
                    if let Some(c) = shard.get(req(k).0.slot) {
                        // The lines touch reads: key, expiry, counters.
                        warm ^= c.expire ^ u32::from(c.key.src_port) ^ c.counters[1].packets as u32;
                    }
                }
            }
            std::hint::black_box(warm);
            for k in 0..n {
                let (h, dir, bytes, seg) = req(k);
                match guards[guard_of[k] as usize].as_mut() {
                    Some(shard) => {
                        ok[k] = self.touch_locked(shard, h, dir, bytes, seg.as_ref(), now_s)
                    }
                    None => retry[k] = true,
                }
            }
        }
        for k in 0..n {
            if retry[k] {
                let (h, dir, bytes, seg) = req(k);
                ok[k] = self.touch(h, dir, bytes, seg.as_ref(), now_ns);
            }
        }
    }

    /// The connection is no longer carried by a fast path (hand-back):
    /// clear its [`ConnStatus::OFFLOADED`] mark, if it is still the
    /// handle's connection.
    pub fn release_offload(&self, h: &OffloadHandle) {
        let mut shard = self.lock_shard(h.shard as usize);
        if let Some(c) = shard.get_mut(h.slot) {
            if c.key == h.key && c.status.contains(ConnStatus::OFFLOADED) {
                c.status.remove(ConnStatus::OFFLOADED);
                self.offload_epoch.fetch_add(1, Ordering::Release);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::build::Builder;
    use crate::dump::ConnSnapshot;
    use crate::{CtPacket, CtParams, CtResult, Family, PktFlags, TrackerConfig};

    const S: u64 = 1_000_000_000;

    fn run(t: &Tracker, l3: &[u8], commit: bool, now_ns: u64) -> CtResult {
        let p = CtPacket {
            l3,
            family: Family::Ipv4,
            flags: PktFlags::empty(),
        };
        let params = CtParams {
            commit,
            ..Default::default()
        };
        let mut out = [CtResult::default()];
        t.execute(&[p], &params, now_ns, &mut out);
        out[0]
    }

    fn only(t: &Tracker, now_ns: u64) -> ConnSnapshot {
        let d = t.dump(&Default::default(), now_ns);
        assert_eq!(d.len(), 1);
        d[0].clone()
    }

    #[test]
    fn short_timeouts_are_not_offloaded() {
        let t = Tracker::new(TrackerConfig {
            seed: Some(1),
            shards: 4,
            ..Default::default()
        });
        let short = crate::timeout::TimeoutPolicy::parse("udp_multiple=5").expect("policy");
        let id = t.policies.set("short", &short).expect("registered");
        t.zones.set_policy(crate::Zone(0), id);
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let orig = run(&t, &Builder::v4(a, b).udp(1000, 53, b"q"), true, S)
            .orig
            .expect("tracked");
        run(&t, &Builder::v4(b, a).udp(53, 1000, b"a"), false, S);
        // Assured UDP, but a fast path accounting every few seconds could
        // let a 5 s connection expire.
        assert!(t.offload(&orig, S).is_none());
        let long = crate::timeout::TimeoutPolicy::parse("udp_multiple=60").expect("policy");
        t.policies.set("short", &long).expect("replaced");
        assert!(t.offload(&orig, S).is_some());
    }

    #[test]
    fn touch_accounts_and_release_or_flush_hand_back() {
        let t = Tracker::new(TrackerConfig {
            seed: Some(1),
            shards: 4,
            ..Default::default()
        });
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let req = Builder::v4(a, b).udp(1000, 53, b"q");
        let rep = Builder::v4(b, a).udp(53, 1000, b"answer");
        let r = run(&t, &req, true, S);
        let orig = r.orig.expect("tracked");
        // Not offloadable before a reply (not assured).
        assert!(t.offload(&orig, S).is_none());
        run(&t, &rep, false, S);
        let h = t.offload(&orig, S).expect("assured UDP is offloadable");
        assert!(only(&t, S).to_string().ends_with(" [OFFLOAD]"));
        let before = only(&t, S);
        let e0 = t.offload_epoch();
        assert!(t.touch(&h, Dir::Reply, (3, 300), None, 20 * S));
        let after = only(&t, 20 * S);
        assert_eq!(after.counters[1].packets, before.counters[1].packets + 3);
        assert_eq!(after.counters[1].bytes, before.counters[1].bytes + 300);
        // The expiry moved with the touch's time.
        assert!(after.timeout >= before.timeout);
        // A touch without packets keeps the handle valid but does not
        // keep the connection alive.
        assert!(t.touch(&h, Dir::Reply, (0, 0), None, 25 * S));
        assert_eq!(only(&t, 25 * S).timeout + 5, after.timeout);
        // Release: no longer carried, the epoch moved, no [OFFLOAD].
        t.release_offload(&h);
        assert!(t.offload_epoch() > e0);
        assert!(!only(&t, 20 * S).to_string().contains("OFFLOAD"));
        assert!(!t.touch(&h, Dir::Orig, (1, 10), None, 20 * S));
        // Offload again, then flush: the handle's connection is gone.
        let h = t.offload(&orig, 20 * S).expect("offloadable again");
        let e1 = t.offload_epoch();
        t.flush(&Default::default(), 20 * S);
        assert!(
            t.offload_epoch() > e1,
            "ending an offloaded conn moves the epoch"
        );
        assert!(!t.touch(&h, Dir::Orig, (1, 10), None, 20 * S));
        assert!(t.is_empty());
    }
}
