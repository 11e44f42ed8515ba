//! Per-zone configuration and counts: connection limit, default timeout
//! policy, TCP liberal mode, whether early drop may evict assured entries.
//! One slot per possible zone (65,536), read with relaxed atomics on the
//! packet path.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};

use crate::key::Zone;
use crate::timeout::PolicyId;

/// No limit configured.
pub const UNLIMITED: u32 = 0;

#[derive(Default)]
pub struct ZoneSlot {
    /// Maximum connections in this zone, 0 = only the global limit applies.
    pub limit: AtomicU32,
    /// Connections currently counted against this zone (live and dying).
    pub count: AtomicU32,
    /// Default timeout policy for connections committed in this zone.
    pub policy: AtomicU8,
    /// TCP window checks off for this zone.
    pub liberal: AtomicBool,
    /// Early drop may evict this zone's assured connections (last resort,
    /// see [`crate::pressure`]).
    pub evict_assured: AtomicBool,
}

/// Configuration and counters of all zones.
pub struct Zones {
    slots: Box<[ZoneSlot]>,
}

impl Default for Zones {
    fn default() -> Self {
        Zones {
            slots: (0..=u16::MAX as usize)
                .map(|_| ZoneSlot::default())
                .collect(),
        }
    }
}

impl Zones {
    #[inline]
    pub fn slot(&self, zone: Zone) -> &ZoneSlot {
        &self.slots[zone.0 as usize]
    }
    pub fn set_limit(&self, zone: Zone, limit: u32) {
        self.slot(zone).limit.store(limit, Ordering::Relaxed);
    }
    pub fn limit(&self, zone: Zone) -> u32 {
        self.slot(zone).limit.load(Ordering::Relaxed)
    }
    pub fn count(&self, zone: Zone) -> u32 {
        self.slot(zone).count.load(Ordering::Relaxed)
    }
    pub fn set_policy(&self, zone: Zone, policy: PolicyId) {
        self.slot(zone).policy.store(policy.0, Ordering::Relaxed);
    }
    pub fn policy(&self, zone: Zone) -> PolicyId {
        PolicyId(self.slot(zone).policy.load(Ordering::Relaxed))
    }
    pub fn set_liberal(&self, zone: Zone, liberal: bool) {
        self.slot(zone).liberal.store(liberal, Ordering::Relaxed);
    }
    pub fn liberal(&self, zone: Zone) -> bool {
        self.slot(zone).liberal.load(Ordering::Relaxed)
    }
    pub fn set_evict_assured(&self, zone: Zone, on: bool) {
        self.slot(zone).evict_assured.store(on, Ordering::Relaxed);
    }
    pub fn evict_assured(&self, zone: Zone) -> bool {
        self.slot(zone).evict_assured.load(Ordering::Relaxed)
    }
    /// Zones with a limit or a non-zero count, for `ct-get-limits`.
    pub fn active(&self) -> Vec<(Zone, u32, u32)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let (l, c) = (
                    s.limit.load(Ordering::Relaxed),
                    s.count.load(Ordering::Relaxed),
                );
                (l != 0 || c != 0).then_some((Zone(i as u16), l, c))
            })
            .collect()
    }
}
