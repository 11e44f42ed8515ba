//! What the reassembler counts and reports.

use serde::Serialize;

use crate::key::{Family, Zone};

/// Why a fragment was not taken (the [`super::Outcome::Rejected`] reason).
///
/// Except for [`Reject::Malformed`], [`Reject::Duplicate`] and the
/// limits hit by a fragment that would start a datagram, a rejected
/// fragment also discards the datagram it belongs to: one bad fragment
/// poisons the whole datagram (RFC 5722 for IPv6 overlaps; applied to IPv4
/// and to the other attacks too, as Linux does for overlaps).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reject {
    /// Header too short, bad lengths or IPv4 header checksum.
    Malformed,
    /// Overlaps a fragment already held (not an exact duplicate).
    Overlap,
    /// The same bytes at the same offset as a fragment already held: only
    /// this copy is dropped, the datagram stays.
    Duplicate,
    /// A first fragment too short for the upper-layer header, or a later
    /// fragment at an offset inside it (RFC 1858, 3128, 7112).
    Tiny,
    /// The datagram would be larger than 65535 bytes (IPv6: payload).
    TooBig,
    /// A non-last fragment whose payload is not a multiple of 8, or an
    /// empty fragment.
    BadLength,
    /// A second last fragment with another end, or data past the end.
    ConflictingLast,
    /// More fragments than [`super::FragConfig::max_fragments`].
    TooManyFragments,
    /// Holding it would exceed [`super::FragConfig::max_bytes`].
    MemoryLimit,
    /// [`super::FragConfig::max_datagrams`] datagrams already in progress.
    DatagramLimit,
    /// The zone has [`super::FragConfig::max_datagrams_per_zone`] in progress.
    ZoneLimit,
}

/// Counters of one address family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FragCounters {
    /// Fragments taken into a datagram in progress.
    pub accepted: u64,
    /// Datagrams completed and handed on.
    pub reassembled: u64,
    /// Datagrams discarded because they did not complete in time.
    pub timed_out: u64,
    /// Rejected fragments, by reason (see [`Reject`]).
    pub malformed: u64,
    pub overlaps: u64,
    pub duplicates: u64,
    pub tiny: u64,
    pub too_big: u64,
    pub bad_length: u64,
    pub conflicting_last: u64,
    pub too_many_fragments: u64,
    pub memory_limit: u64,
    pub datagram_limit: u64,
    pub zone_limit: u64,
    /// Held fragments freed with a datagram that was discarded (timed out
    /// or poisoned by a rejected fragment).
    pub discarded_fragments: u64,
}

impl FragCounters {
    pub(crate) fn count_reject(&mut self, r: Reject) {
        let c = match r {
            Reject::Malformed => &mut self.malformed,
            Reject::Overlap => &mut self.overlaps,
            Reject::Duplicate => &mut self.duplicates,
            Reject::Tiny => &mut self.tiny,
            Reject::TooBig => &mut self.too_big,
            Reject::BadLength => &mut self.bad_length,
            Reject::ConflictingLast => &mut self.conflicting_last,
            Reject::TooManyFragments => &mut self.too_many_fragments,
            Reject::MemoryLimit => &mut self.memory_limit,
            Reject::DatagramLimit => &mut self.datagram_limit,
            Reject::ZoneLimit => &mut self.zone_limit,
        };
        *c += 1;
    }

    /// Rejected fragments of every reason.
    pub fn rejected(&self) -> u64 {
        self.malformed
            + self.overlaps
            + self.duplicates
            + self.tiny
            + self.too_big
            + self.bad_length
            + self.conflicting_last
            + self.too_many_fragments
            + self.memory_limit
            + self.datagram_limit
            + self.zone_limit
    }
}

/// Counters of both families.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FragStats {
    pub v4: FragCounters,
    pub v6: FragCounters,
}

impl FragStats {
    pub fn family(&self, f: Family) -> &FragCounters {
        match f {
            Family::Ipv4 => &self.v4,
            Family::Ipv6 => &self.v6,
        }
    }

    pub(crate) fn family_mut(&mut self, f: Family) -> &mut FragCounters {
        match f {
            Family::Ipv4 => &mut self.v4,
            Family::Ipv6 => &mut self.v6,
        }
    }
}

/// One datagram in progress (for status dumps).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DatagramInfo {
    pub zone: Zone,
    pub family: Family,
    pub src: std::net::IpAddr,
    pub dst: std::net::IpAddr,
    pub id: u32,
    pub proto: u8,
    /// Fragments held.
    pub fragments: usize,
    /// Payload bytes held.
    pub bytes: usize,
    /// Whether the first and the last fragment arrived.
    pub have_first: bool,
    pub have_last: bool,
    /// Milliseconds until it is discarded.
    pub expires_in_ms: u64,
}

/// A snapshot of the reassembler: configuration, occupancy, counters.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FragStatus {
    pub config: super::FragConfig,
    /// Datagrams in progress and the memory they account for.
    pub datagrams: usize,
    pub bytes: usize,
    /// Datagrams in progress per zone (zones with none are left out),
    /// ordered by zone.
    pub zones: Vec<(Zone, usize)>,
    pub counters: FragStats,
}
