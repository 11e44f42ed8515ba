//! Expiry: a hierarchical timing wheel per shard.
//!
//! Every connection has exactly one live wheel entry `(slot, tick)`: the
//! second at which it must be looked at again. The packet path never touches
//! the wheel; it only moves the connection's `expire` forward. When the wheel
//! reaches an entry, the owner checks the connection: expired → destroyed;
//! still alive → filed again at its current expiry. So an entry is revisited
//! at most once per timeout period, and expiry never scans the table.
//!
//! Four levels of 64 slots cover ticks 1 s, 64 s, 68 min and 3 days apart;
//! entries further out than the last level are clamped and re-filed when
//! reached. An entry is stale (and dropped) when the connection's `sched`
//! no longer equals the entry's tick (it was re-filed or its slot reused).

const LEVELS: usize = 4;
const BITS: u32 = 6;
const SLOTS: usize = 1 << BITS;
const MASK: u32 = SLOTS as u32 - 1;
/// Furthest distance an entry can be filed at (beyond: clamped).
const SPAN: u32 = 1 << (BITS * LEVELS as u32);

/// A wheel entry: connection slot and the tick it was filed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub slot: u32,
    pub tick: u32,
}

/// Hierarchical timing wheel keyed by second.
pub struct Wheel {
    levels: Vec<Vec<Vec<Entry>>>,
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
        self.levels
            .iter()
            .flatten()
            .map(|v| v.capacity() * std::mem::size_of::<Entry>())
            .sum()
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
    /// (never in the past, clamped to the wheel's span), which the caller
    /// stores in the connection's `sched`.
    pub fn file(&mut self, slot: u32, tick: u32) -> u32 {
        let tick = tick.max(self.cur.wrapping_add(1));
        let tick = tick.min(self.cur.wrapping_add(SPAN - 1));
        self.push(Entry { slot, tick });
        tick
    }

    fn push(&mut self, e: Entry) {
        // Level: the highest 6-bit digit in which the tick differs from the
        // next tick to process. Its slot is cascaded exactly when the clock
        // reaches the tick rounded down to that level, never earlier.
        let next = self.cur.wrapping_add(1);
        let mut level = 0;
        while level + 1 < LEVELS
            && e.tick >> (BITS * (level as u32 + 1)) != next >> (BITS * (level as u32 + 1))
        {
            level += 1;
        }
        let idx = ((e.tick >> (BITS * level as u32)) & MASK) as usize;
        self.levels[level][idx].push(e);
        self.len += 1;
    }

    /// Move up to `budget` entries that are due at or before `now` into
    /// `out`. Returns true when the wheel has caught up with `now`.
    ///
    /// The caller checks each entry against its connection (stale, expired,
    /// or to be filed again).
    pub fn take_due(&mut self, now: u32, budget: usize, out: &mut Vec<Entry>) -> bool {
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
                    for e in moved {
                        // `cur` is still `next - 1`, so these land below `level`.
                        self.push(e);
                    }
                }
                self.cascaded = next;
            }
            let bucket = &mut self.levels[0][(next & MASK) as usize];
            while let Some(e) = bucket.pop() {
                if out.len() >= budget {
                    bucket.push(e);
                    return false;
                }
                self.len -= 1;
                out.push(e);
            }
            self.cur = next;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(w: &mut Wheel, now: u32) -> Vec<Entry> {
        let mut out = Vec::new();
        assert!(w.take_due(now, usize::MAX, &mut out));
        out
    }

    #[test]
    fn entries_come_due_on_their_tick_not_before() {
        let mut w = Wheel::new(100);
        assert_eq!(w.file(1, 105), 105);
        assert_eq!(w.file(2, 100 + 70), 170); // level 1
        assert_eq!(w.file(3, 100 + 5000), 5100); // level 2
        assert_eq!(w.file(4, 50), 101); // past: next tick
        assert!(drain(&mut w, 100).is_empty());
        assert_eq!(drain(&mut w, 101), vec![Entry { slot: 4, tick: 101 }]);
        assert!(drain(&mut w, 104).is_empty());
        assert_eq!(drain(&mut w, 105)[0].slot, 1);
        assert!(drain(&mut w, 169).is_empty());
        assert_eq!(drain(&mut w, 170)[0].slot, 2);
        assert!(drain(&mut w, 5099).is_empty());
        assert_eq!(drain(&mut w, 5100)[0].slot, 3);
        assert!(w.is_empty());
    }

    #[test]
    fn empty_wheel_jumps_to_now() {
        let mut w = Wheel::new(0);
        let mut out = Vec::new();
        assert!(w.take_due(3_000_000, 1, &mut out));
        assert_eq!(w.current(), 3_000_000);
        w.file(1, 3_000_010);
        assert!(w.take_due(3_000_010, 1, &mut out));
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn budget_bounds_work_and_resumes() {
        let mut w = Wheel::new(0);
        for s in 0..10 {
            w.file(s, 3);
        }
        let mut out = Vec::new();
        assert!(!w.take_due(10, 4, &mut out));
        assert_eq!(out.len(), 4);
        out.clear();
        assert!(w.take_due(10, 100, &mut out));
        assert_eq!(out.len(), 6);
        assert_eq!(w.current(), 10);
    }

    #[test]
    fn far_entries_are_clamped_and_every_entry_seen_once() {
        let mut w = Wheel::new(0);
        let far = w.file(9, u32::MAX / 2);
        assert_eq!(far, SPAN - 1);
        let mut seen = 0;
        for t in (0..SPAN).step_by(997).chain([SPAN]) {
            seen += drain(&mut w, t).len();
        }
        assert_eq!(seen, 1);
    }

    #[test]
    fn random_ticks_all_fire_exactly_at_tick() {
        let mut w = Wheel::new(7);
        let mut x: u64 = 12345;
        let mut ticks = Vec::new();
        for s in 0..2000u32 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let t = 8 + (x >> 40) as u32 % 300_000;
            assert_eq!(w.file(s, t), t);
            ticks.push(t);
        }
        let mut fired = vec![0u32; 2000];
        let (mut prev, mut now) = (7, 7);
        while now < 310_000 {
            now += 1 + (now % 13);
            for e in drain(&mut w, now) {
                assert!(
                    e.tick <= now && e.tick > prev,
                    "{e:?} fired in ({prev}, {now}]"
                );
                assert_eq!(e.tick, ticks[e.slot as usize]);
                fired[e.slot as usize] += 1;
            }
            prev = now;
        }
        assert!(fired.iter().all(|&f| f == 1));
    }
}
