//! Expiry: a hierarchical timing wheel per shard.
//!
//! Every connection has one live wheel entry: its slot, filed under the
//! second at which it must be looked at again. The packet path never touches
//! the wheel; it only moves the connection's `expire` forward. When the wheel
//! reaches an entry, the owner checks the connection: expired → destroyed;
//! still alive → filed again at its current expiry. So an entry is revisited
//! at most once per timeout period, and expiry never scans the table.
//!
//! Four levels of 64 slots cover ticks 1 s, 64 s, 68 min and 3 days apart;
//! entries further out than the last level are clamped and re-filed when
//! reached.
//!
//! Entries are four bytes (the slot): an entry's tick is implied by where it
//! sits, and when a higher-level slot is cascaded down the tick is rebuilt
//! from the low 16 bits the connection keeps in `sched`. An entry is stale
//! (and dropped) when its connection is gone or `sched` names another tick
//! (it was re-filed, or the slot reused). Rebuilding a tick more than 65,536
//! seconds out can only come out early, never late: the owner then finds
//! the connection alive and files it again.

const LEVELS: usize = 4;
const BITS: u32 = 6;
const SLOTS: usize = 1 << BITS;
const MASK: u32 = SLOTS as u32 - 1;
/// Furthest distance an entry can be filed at (beyond: clamped).
const SPAN: u32 = 1 << (BITS * LEVELS as u32);

/// A due entry: connection slot and the tick it came due on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub slot: u32,
    pub tick: u32,
}

/// Hierarchical timing wheel keyed by second.
pub struct Wheel {
    levels: Vec<Vec<Vec<u32>>>,
    /// Last tick fully processed.
    cur: u32,
    /// Highest tick whose higher-level slots were cascaded down.
    cascaded: u32,
    len: usize,
}

impl Wheel {
    /// A wheel whose clock starts at `now` seconds.
    pub fn new(now: u32) -> Wheel {
        Wheel {
            levels: (0..LEVELS)
                .map(|_| (0..SLOTS).map(|_| Vec::new()).collect())
                .collect(),
            cur: now,
            cascaded: now,
            len: 0,
        }
    }

    /// Move an empty wheel's clock to `now` (a clock far ahead of the
    /// wheel's would otherwise be walked tick by tick).
    pub fn restart(&mut self, now: u32) {
        if self.len == 0 && (now.wrapping_sub(self.cur) as i32) > 0 {
            self.cur = now;
            self.cascaded = now;
        }
    }

    /// Bytes held by the wheel's entry vectors.
    pub fn bytes(&self) -> usize {
        self.levels.iter().flatten().map(|v| v.capacity() * 4).sum()
    }

    /// Entries filed (including stale ones not yet dropped).
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Last tick fully processed.
    pub fn current(&self) -> u32 {
        self.cur
    }

    /// File `slot` to be looked at on `tick`; returns the tick actually used
    /// (never in the past, clamped to the wheel's span), whose low 16 bits
    /// the caller stores in the connection's `sched`.
    pub fn file(&mut self, slot: u32, tick: u32) -> u32 {
        let tick = tick.max(self.cur.wrapping_add(1));
        let tick = tick.min(self.cur.wrapping_add(SPAN - 1));
        self.push(slot, tick);
        tick
    }

    /// Level: the highest 6-bit digit in which the tick differs from the
    /// next tick to process. Its slot is cascaded exactly when the clock
    /// reaches the tick rounded down to that level, never earlier.
    fn push(&mut self, slot: u32, tick: u32) {
        let next = self.cur.wrapping_add(1);
        let mut level = 0;
        while level + 1 < LEVELS
            && tick >> (BITS * (level as u32 + 1)) != next >> (BITS * (level as u32 + 1))
        {
            level += 1;
        }
        let idx = ((tick >> (BITS * level as u32)) & MASK) as usize;
        self.levels[level][idx].push(slot);
        self.len += 1;
    }

    /// Move up to `budget` entries that are due at or before `now` into
    /// `out`. `sched_of(slot)` gives the low 16 bits of the tick a live
    /// connection is filed under (None: the slot is free), used to re-file
    /// entries when a higher-level slot is cascaded. Returns true when the
    /// wheel has caught up with `now`.
    ///
    /// The caller checks each entry against its connection (stale, expired,
    /// or to be filed again).
    pub fn take_due(
        &mut self,
        now: u32,
        budget: usize,
        out: &mut Vec<Entry>,
        sched_of: impl Fn(u32) -> Option<u16>,
    ) -> bool {
        if self.len == 0 {
            // Nothing filed: jump instead of walking every empty tick.
            self.restart(now);
            return true;
        }
        while self.cur != now && (now.wrapping_sub(self.cur) as i32) > 0 {
            let next = self.cur.wrapping_add(1);
            if self.cascaded != next {
                // Entering `next`: pull down any higher-level slot that starts here.
                for level in 1..LEVELS {
                    let shift = BITS * level as u32;
                    if next & ((1 << shift) - 1) != 0 {
                        break;
                    }
                    let idx = ((next >> shift) & MASK) as usize;
                    let moved = std::mem::take(&mut self.levels[level][idx]);
                    self.len -= moved.len();
                    for slot in moved {
                        // The first tick at or after `next` with those low
                        // bits. `cur` is still `next - 1`, so it lands below
                        // `level`.
                        if let Some(lo) = sched_of(slot) {
                            let tick = next.wrapping_add(lo.wrapping_sub(next as u16) as u32);
                            self.push(slot, tick);
                        }
                    }
                }
                self.cascaded = next;
            }
            let bucket = &mut self.levels[0][(next & MASK) as usize];
            while let Some(slot) = bucket.pop() {
                if out.len() >= budget {
                    bucket.push(slot);
                    return false;
                }
                self.len -= 1;
                out.push(Entry { slot, tick: next });
            }
            self.cur = next;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A model owner: slot → the tick it wants, and the tick it is filed at.
    #[derive(Default)]
    struct Owner {
        want: HashMap<u32, u32>,
        filed: HashMap<u32, u32>,
    }

    impl Owner {
        fn file(&mut self, w: &mut Wheel, slot: u32, tick: u32) -> u32 {
            let t = w.file(slot, tick);
            self.want.insert(slot, tick);
            self.filed.insert(slot, t);
            t
        }
        /// Drain to `now` as the tracker does: stale entries dropped, early
        /// ones filed again; returns (slot, tick) of the real firings.
        fn drain(&mut self, w: &mut Wheel, now: u32) -> Vec<(u32, u32)> {
            let mut out = Vec::new();
            let filed = self.filed.clone();
            assert!(w.take_due(now, usize::MAX, &mut out, |s| filed
                .get(&s)
                .map(|t| *t as u16)));
            let mut fired = Vec::new();
            for e in out {
                if self.filed.get(&e.slot).map(|t| *t as u16) != Some(e.tick as u16) {
                    continue; // stale
                }
                let want = self.want[&e.slot];
                if e.tick < want {
                    let t = w.file(e.slot, want);
                    self.filed.insert(e.slot, t);
                } else {
                    self.filed.remove(&e.slot);
                    self.want.remove(&e.slot);
                    fired.push((e.slot, e.tick));
                }
            }
            fired
        }
    }

    #[test]
    fn entries_come_due_on_their_tick_not_before() {
        let mut w = Wheel::new(100);
        let mut o = Owner::default();
        assert_eq!(o.file(&mut w, 1, 105), 105);
        assert_eq!(o.file(&mut w, 2, 100 + 70), 170); // level 1
        assert_eq!(o.file(&mut w, 3, 100 + 5000), 5100); // level 2
        assert_eq!(o.file(&mut w, 4, 50), 101); // past: next tick
        assert!(o.drain(&mut w, 100).is_empty());
        assert_eq!(o.drain(&mut w, 101), vec![(4, 101)]);
        assert!(o.drain(&mut w, 104).is_empty());
        assert_eq!(o.drain(&mut w, 105), vec![(1, 105)]);
        assert!(o.drain(&mut w, 169).is_empty());
        assert_eq!(o.drain(&mut w, 170), vec![(2, 170)]);
        assert!(o.drain(&mut w, 5099).is_empty());
        assert_eq!(o.drain(&mut w, 5100), vec![(3, 5100)]);
        assert!(w.is_empty());
    }

    #[test]
    fn empty_wheel_jumps_to_now() {
        let mut w = Wheel::new(0);
        let mut out = Vec::new();
        assert!(w.take_due(3_000_000, 1, &mut out, |_| None));
        assert_eq!(w.current(), 3_000_000);
        w.file(1, 3_000_010);
        assert!(w.take_due(3_000_010, 1, &mut out, |_| Some(3_000_010u32 as u16)));
        assert_eq!(
            out,
            vec![Entry {
                slot: 1,
                tick: 3_000_010
            }]
        );
    }

    #[test]
    fn budget_bounds_work_and_resumes() {
        let mut w = Wheel::new(0);
        for s in 0..10 {
            w.file(s, 3);
        }
        let mut out = Vec::new();
        assert!(!w.take_due(10, 4, &mut out, |_| Some(3)));
        assert_eq!(out.len(), 4);
        out.clear();
        assert!(w.take_due(10, 100, &mut out, |_| Some(3)));
        assert_eq!(out.len(), 6);
        assert_eq!(w.current(), 10);
    }

    #[test]
    fn freed_slots_are_dropped_on_cascade() {
        let mut w = Wheel::new(0);
        w.file(7, 200); // level 2
        let mut out = Vec::new();
        assert!(w.take_due(300, usize::MAX, &mut out, |_| None));
        assert!(out.is_empty());
        assert!(w.is_empty());
    }

    #[test]
    fn far_entries_fire_once_never_late() {
        let mut w = Wheel::new(0);
        let mut o = Owner::default();
        let far = o.file(&mut w, 9, u32::MAX / 2);
        assert_eq!(far, SPAN - 1);
        // The owner wants it at SPAN - 1 (what the wheel could file).
        o.want.insert(9, far);
        let mut fired = Vec::new();
        for t in (0..SPAN).step_by(997).chain([SPAN]) {
            fired.extend(o.drain(&mut w, t));
        }
        assert_eq!(fired, vec![(9, SPAN - 1)]);
    }

    #[test]
    fn random_ticks_all_fire_once_on_time() {
        let mut w = Wheel::new(7);
        let mut o = Owner::default();
        let mut x: u64 = 12345;
        let mut ticks = Vec::new();
        for s in 0..2000u32 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let t = 8 + (x >> 40) as u32 % 300_000;
            assert_eq!(o.file(&mut w, s, t), t);
            ticks.push(t);
        }
        let mut fired = vec![0u32; 2000];
        let (mut prev, mut now) = (7, 7);
        while now < 310_000 {
            now += 1 + (now % 13);
            for (slot, tick) in o.drain(&mut w, now) {
                assert!(
                    tick == ticks[slot as usize] && tick > prev && tick <= now,
                    "{slot} at {tick}, window ({prev}, {now}]"
                );
                fired[slot as usize] += 1;
            }
            prev = now;
        }
        assert!(fired.iter().all(|&f| f == 1));
        assert!(w.is_empty());
    }
}
