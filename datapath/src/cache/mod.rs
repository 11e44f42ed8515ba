//! The two flow caches in front of the slow path, as in OVS's
//! dpif-netdev: an [`emc::ExactMatchCache`] keyed by the whole flow key,
//! then a [`megaflow::MegaflowCache`] of masked keys searched subtable by
//! subtable. Both are per poll-mode thread, so lookups take no locks.
//!
//! A megaflow is identified by a [`FlowRef`]: its slot in the megaflow
//! cache plus the slot's epoch. Removing a megaflow bumps the epoch, so an
//! exact-match entry pointing at it stops matching without being found and
//! deleted.

pub mod emc;
pub mod megaflow;

/// A megaflow's slot and the epoch it was installed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowRef {
    pub slot: u32,
    pub epoch: u32,
}
