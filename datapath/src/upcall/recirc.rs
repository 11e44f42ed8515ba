//! Recirculation ids and the state frozen with them.
//!
//! ofproto resumes a recirculated packet in the table its `ct(table=N)`
//! named, with the registers as they were at that point. The datapath key
//! does not carry registers (they are pipeline scratch, as in OVS), so the
//! datapath gives each distinct (table, registers) pair its own
//! recirculation id and remembers the pair here. A megaflow matches
//! `recirc_id` exactly, so the registers it was translated with are pinned
//! without costing key space, and a packet pays nothing per recirculation
//! beyond writing the id (the lookup happens at translation time).
//!
//! Ids are never reused while the switch runs; the table is bounded by
//! [`MAX_FROZEN`] (a pipeline that keeps inventing register values at ct
//! time, e.g. copying a packet field into a register, could otherwise grow
//! it without bound); past it translation fails and the packet is dropped
//! and counted.

use std::collections::HashMap;

use parking_lot::RwLock;

/// The most recirculation ids handed out.
pub const MAX_FROZEN: usize = 1 << 20;

/// What a recirculation id stands for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Frozen {
    /// ofproto's recirculation id: the table to resume in, plus one (0 for
    /// a packet's first pass).
    pub table_recirc: u32,
    /// reg0..reg15 at the `ct` action.
    pub regs: [u32; 16],
}

/// Datapath recirculation id 0 is the first pass (all registers zero).
#[derive(Default)]
pub struct RecircTable {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    by_state: HashMap<Frozen, u32>,
    /// `states[id - 1]`.
    states: Vec<Frozen>,
}

impl RecircTable {
    /// The id for `state`, allocated on first use; None when the table is
    /// full.
    pub fn id_for(&self, state: &Frozen) -> Option<u32> {
        if *state == Frozen::default() {
            return Some(0);
        }
        if let Some(id) = self.inner.read().by_state.get(state) {
            return Some(*id);
        }
        let mut g = self.inner.write();
        if let Some(id) = g.by_state.get(state) {
            return Some(*id);
        }
        if g.states.len() >= MAX_FROZEN {
            return None;
        }
        g.states.push(*state);
        let id = g.states.len() as u32;
        g.by_state.insert(*state, id);
        Some(id)
    }

    /// The state an id stands for (None for an id never handed out).
    pub fn state(&self, id: u32) -> Option<Frozen> {
        if id == 0 {
            return Some(Frozen::default());
        }
        self.inner.read().states.get(id as usize - 1).copied()
    }

    /// Ids handed out so far.
    pub fn len(&self) -> usize {
        self.inner.read().states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_state_same_id_and_back() {
        let t = RecircTable::default();
        let a = Frozen {
            table_recirc: 2,
            regs: [0; 16],
        };
        let mut b = a;
        b.regs[3] = 1;
        let ia = t.id_for(&a).unwrap();
        let ib = t.id_for(&b).unwrap();
        assert_ne!(ia, ib);
        assert_ne!(ia, 0);
        assert_eq!(t.id_for(&a), Some(ia));
        assert_eq!(t.state(ib), Some(b));
        assert_eq!(t.state(0), Some(Frozen::default()));
        assert_eq!(t.state(999), None);
        assert_eq!(t.len(), 2);
    }
}
