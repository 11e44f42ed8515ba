//! Reliable event delivery: the missed-event cache and the dying list.
//!
//! Events are handed to every subscriber after the shard locks are released
//! ([`Tracker::deliver`]). A refused event is counted (`events_refused`);
//! for an unreliable sink that is all. When a reliable sink
//! ([`EventSink::reliable`]) refuses one:
//!
//! - NEW or UPDATE: the connection's missed-event cache (two bits of
//!   [`ConnStatus`], so the record does not grow) remembers it. The
//!   connection's next accepted packet sends one event merging the missed
//!   ones with whatever that packet changed: NEW if a NEW was missed, else
//!   UPDATE, carrying the connection as it is now. Intermediate states may
//!   be lost, but the subscriber gets back in sync. If the connection ends
//!   first, the missed bits die with it: its DESTROY carries everything.
//! - DESTROY: the event goes to the dying list. The connection is already
//!   off the lookup tables, but it is counted again against the global and
//!   zone limits until every reliable sink that refused it has taken it, so
//!   a subscriber that falls behind eventually makes new commits fail
//!   rather than lose accounting records. [`Tracker::sweep`] retries due
//!   entries, each after a random grace period of up to
//!   [`DESTROY_GRACE_NS`] (settable), so a burst of destroys (a flush) is
//!   spread out instead of retried all at once.
//!
//! Like Linux's reliable ctnetlink delivery, a retried NEW/UPDATE goes to
//! every subscriber (a sink that took the original may see it twice); a
//! DESTROY is retried only to the reliable sinks that refused it, so each
//! gets it exactly once. Only the first 64 subscribers can be reliable;
//! later ones are treated as unreliable.
//!
//! Ordering: events of one connection are delivered in the order they were
//! made by one thread, and a missed NEW is never retried after the DESTROY
//! (the connection is gone). Two packet threads delivering concurrently
//! (one creating, one destroying the same connection within the same
//! microseconds) can still interleave, as with any lock-free delivery.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{ConnEvent, EventKind, EventSink};
use crate::conn::{Conn, ConnStatus};
use crate::tracker::Tracker;

/// Default maximum grace period before a refused DESTROY is retried.
pub const DESTROY_GRACE_NS: u64 = 15_000_000_000;

/// Tracker state for reliable delivery.
pub(crate) struct Reliable {
    /// Subscription indexes left by [`Tracker::unsubscribe`], for reuse.
    vacant: Mutex<Vec<usize>>,
    dying: Mutex<DyingList>,
    dying_len: AtomicUsize,
    grace_ns: AtomicU64,
}

struct DyingList {
    heap: BinaryHeap<Dying>,
    rng: u64,
    seq: u64,
}

/// A destroyed connection whose DESTROY some reliable sinks still owe.
struct Dying {
    due_ns: u64,
    seq: u64,
    /// Reliable sinks (by subscription index) that have not taken it.
    owed: u64,
    ev: ConnEvent,
}

impl PartialEq for Dying {
    fn eq(&self, o: &Self) -> bool {
        (self.due_ns, self.seq) == (o.due_ns, o.seq)
    }
}
impl Eq for Dying {}
impl PartialOrd for Dying {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Dying {
    /// Earliest due first out of the (max-)heap.
    fn cmp(&self, o: &Self) -> CmpOrdering {
        (o.due_ns, o.seq).cmp(&(self.due_ns, self.seq))
    }
}

impl DyingList {
    fn next_rand(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn push(&mut self, ev: ConnEvent, owed: u64, now_ns: u64, grace_ns: u64) {
        let due_ns = now_ns.saturating_add(self.grace(grace_ns));
        self.seq += 1;
        let seq = self.seq;
        self.heap.push(Dying {
            due_ns,
            seq,
            owed,
            ev,
        });
    }

    fn grace(&mut self, grace_ns: u64) -> u64 {
        if grace_ns == 0 {
            0
        } else {
            self.next_rand() % grace_ns
        }
    }
}

impl Reliable {
    pub(crate) fn new(seed: u64) -> Reliable {
        Reliable {
            vacant: Mutex::new(Vec::new()),
            dying: Mutex::new(DyingList {
                heap: BinaryHeap::new(),
                rng: seed ^ 0x6479_696e_6721,
                seq: 0,
            }),
            dying_len: AtomicUsize::new(0),
            grace_ns: AtomicU64::new(DESTROY_GRACE_NS),
        }
    }
}

/// The event a connection's packet must send, if any: the missed events
/// (cleared here) merged with a change this packet made.
#[inline]
pub(crate) fn take_due(c: &mut Conn, changed: bool) -> Option<EventKind> {
    let missed = c.status & ConnStatus::MISSED;
    if missed.is_empty() {
        return changed.then_some(EventKind::Update);
    }
    c.status -= ConnStatus::MISSED;
    Some(if missed.contains(ConnStatus::MISSED_NEW) {
        EventKind::New
    } else {
        EventKind::Update
    })
}

/// Subscription indexes of the reliable sinks, as a mask.
fn reliable_mask(sinks: &[Arc<dyn EventSink>]) -> u64 {
    sinks
        .iter()
        .take(64)
        .enumerate()
        .filter(|(_, s)| s.reliable())
        .fold(0, |m, (i, _)| m | 1 << i)
}

/// A subscription slot whose subscriber left.
struct Vacant;

impl EventSink for Vacant {
    fn deliver(&self, _: &ConnEvent) -> bool {
        true
    }
}

impl Tracker {
    /// Subscribe to lifecycle events. A slot left by an unsubscribed sink
    /// is reused, so subscribers may come and go (a control client).
    pub fn subscribe(&self, sink: Arc<dyn EventSink>) {
        let mut sinks = self.sinks.write();
        match self.reliable.vacant.lock().pop() {
            Some(i) if i < sinks.len() => sinks[i] = sink,
            _ => sinks.push(sink),
        }
        self.has_sinks.store(true, Ordering::Release);
    }

    /// Stop delivering to `sink` (the same `Arc` that was subscribed).
    /// DESTROY events still owed to it are forgotten, releasing dying
    /// connections only it held. Returns whether it was subscribed.
    pub fn unsubscribe(&self, sink: &Arc<dyn EventSink>) -> bool {
        let mut sinks = self.sinks.write();
        let Some(i) = sinks
            .iter()
            .position(|s| std::ptr::addr_eq(Arc::as_ptr(s), Arc::as_ptr(sink)))
        else {
            return false;
        };
        sinks[i] = Arc::new(Vacant);
        let mut vacant = self.reliable.vacant.lock();
        vacant.push(i);
        self.has_sinks
            .store(vacant.len() < sinks.len(), Ordering::Release);
        drop(vacant);
        if i < 64 {
            self.forget_owed(1 << i);
        }
        true
    }

    /// Drop the sinks in `mask` from every dying entry (with the sinks
    /// write-locked, so no new subscriber takes their indexes meanwhile).
    fn forget_owed(&self, mask: u64) {
        let mut list = self.reliable.dying.lock();
        let entries = std::mem::take(&mut list.heap).into_vec();
        for mut d in entries {
            d.owed &= !mask;
            if d.owed == 0 {
                self.release_counts(d.ev.conn.zone);
            } else {
                list.heap.push(d);
            }
        }
        self.reliable
            .dying_len
            .store(list.heap.len(), Ordering::Relaxed);
    }

    /// Hand events to every subscriber; keep what reliable ones refused.
    /// Called with no shard lock held.
    pub(crate) fn deliver(&self, events: &[ConnEvent]) {
        let sinks = self.sinks.read();
        let mut refused = 0;
        for ev in events {
            let mut owed = 0u64;
            for (i, s) in sinks.iter().enumerate() {
                if !s.deliver(ev) {
                    refused += 1;
                    if i < 64 && s.reliable() {
                        owed |= 1 << i;
                    }
                }
            }
            if owed != 0 {
                self.keep_missed(ev, owed);
            }
        }
        if refused != 0 {
            self.counters
                .events_refused
                .fetch_add(refused, Ordering::Relaxed);
        }
    }

    #[cold]
    fn keep_missed(&self, ev: &ConnEvent, owed: u64) {
        match ev.kind {
            EventKind::Destroy => {
                // Count it against the limits again until delivered.
                self.count.fetch_add(1, Ordering::Relaxed);
                self.zones
                    .slot(ev.conn.zone)
                    .count
                    .fetch_add(1, Ordering::Relaxed);
                let now_ns = ev.end_ns.unwrap_or(ev.conn.start_ns);
                let grace = self.reliable.grace_ns.load(Ordering::Relaxed);
                self.reliable
                    .dying
                    .lock()
                    .push(ev.clone(), owed, now_ns, grace);
                self.reliable.dying_len.fetch_add(1, Ordering::Relaxed);
            }
            EventKind::New | EventKind::Update => {
                let bit = if ev.kind == EventKind::New {
                    ConnStatus::MISSED_NEW
                } else {
                    ConnStatus::MISSED_UPDATE
                };
                // The id names the slot; key and start time make sure it
                // is still the same connection.
                let n = self.mask as u64 + 1;
                let id = ev.conn.id as u64;
                let (shard, slot) = ((id % n) as usize, (id / n) as u32);
                let mut sh = self.lock_shard(shard);
                if let Some(c) = sh.get_mut(slot) {
                    if c.key == ev.conn.orig && c.start_ns == ev.conn.start_ns {
                        c.status |= bit;
                    }
                }
            }
        }
    }

    /// Destroyed connections whose DESTROY event is still owed to a
    /// reliable subscriber (counted in [`Tracker::len`]).
    pub fn dying_len(&self) -> usize {
        self.reliable.dying_len.load(Ordering::Relaxed)
    }

    /// Maximum random grace before a refused DESTROY is retried (default
    /// [`DESTROY_GRACE_NS`]); 0 retries at every sweep.
    pub fn set_destroy_grace(&self, grace_ns: u64) {
        self.reliable.grace_ns.store(grace_ns, Ordering::Relaxed);
    }

    /// Retry the DESTROY events that are due (called by
    /// [`Tracker::sweep`]). Stops early once every reliable sink has
    /// refused in this pass; those left keep their turn for the next.
    /// Returns how many dying connections were finally released.
    pub(crate) fn retry_dying(&self, now_ns: u64) -> usize {
        if self.reliable.dying_len.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        let sinks = self.sinks.read();
        let all = reliable_mask(&sinks);
        let grace = self.reliable.grace_ns.load(Ordering::Relaxed);
        let mut list = self.reliable.dying.lock();
        let mut full = 0u64;
        let mut later = Vec::new();
        let mut released = 0;
        let mut refused = 0;
        while list.heap.peek().is_some_and(|d| d.due_ns <= now_ns) && full & all != all {
            let Some(mut d) = list.heap.pop() else { break };
            // A sink that is no longer reliable (cannot happen today:
            // subscriptions are never removed) owes nothing.
            d.owed &= all;
            let try_now = d.owed & !full;
            if try_now == 0 && d.owed != 0 {
                later.push(d); // still due; its sinks are full this pass
                continue;
            }
            let mut bits = try_now;
            while bits != 0 {
                let i = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                match sinks.get(i) {
                    Some(s) if !s.deliver(&d.ev) => {
                        full |= 1 << i;
                        refused += 1;
                    }
                    _ => d.owed &= !(1 << i),
                }
            }
            if d.owed == 0 {
                self.release_counts(d.ev.conn.zone);
                released += 1;
            } else {
                if d.owed & try_now != 0 {
                    d.due_ns = now_ns.saturating_add(list.grace(grace));
                }
                later.push(d);
            }
        }
        for d in later {
            list.heap.push(d);
        }
        self.reliable
            .dying_len
            .store(list.heap.len(), Ordering::Relaxed);
        drop(list);
        if refused != 0 {
            self.counters
                .events_refused
                .fetch_add(refused, Ordering::Relaxed);
        }
        released
    }
}
