//! IPv4/IPv6 fragment reassembly in front of conntrack.
//!
//! Conntrack needs a whole datagram to read ports and track state; an IP
//! fragment carries only part of one. The [`Reassembler`] holds fragments
//! until their datagram is complete, then hands back the reassembled
//! datagram and its [`FragLayout`] (the original fragment boundaries), so a
//! datapath can run conntrack and the flow tables on the whole datagram and
//! send out the original fragments ([`FragLayout::fragment_header`]).
//!
//! Pure logic: no I/O, no clock (the caller passes `now` in nanoseconds),
//! no locking (the caller decides; fragments are rare, so one lock off the
//! normal path is the expected use).
//!
//! # Datagrams
//!
//! A datagram in progress is keyed by (zone, family, source, destination,
//! identification, protocol): the IPv4 protocol field, or the next header
//! carried in the IPv6 fragment header (the same in every fragment of a
//! datagram, RFC 8200). The reassembled datagram takes the IP header of the
//! fragment at offset 0 (IPv4: with its options; IPv6: its unfragmentable
//! part) with the lengths fixed, the IPv4 MF bit and offset cleared (DF
//! kept) and the header checksum recomputed; for IPv6 the fragment header is
//! removed and the next-header byte that named it takes the fragment
//! header's next header.
//!
//! # What is rejected
//!
//! Every rejection is counted by reason ([`FragCounters`]) and, unless said
//! otherwise in [`Reject`], discards the datagram the fragment belongs to:
//!
//! - overlapping fragments (RFC 5722 for IPv6; for IPv4 too, as Linux
//!   does since overlaps only serve evasion); an exact duplicate is dropped
//!   alone;
//! - a first fragment that does not hold the whole upper-layer header
//!   (TCP with its options, UDP, ICMP, SCTP), and a later fragment at an
//!   offset inside that header (RFC 1858's TCP "offset 1" attack, RFC 3128,
//!   RFC 7112);
//! - a datagram past 65535 bytes (IPv6: payload past 65535);
//! - a non-last fragment whose payload is not a multiple of 8, an empty
//!   fragment;
//! - a second last fragment with a different end, data past the end;
//! - more than [`FragConfig::max_fragments`] fragments.
//!
//! # Bounds
//!
//! Memory is bounded by [`FragConfig::max_bytes`] (payload plus a fixed
//! per-fragment and per-datagram overhead), the number of datagrams in
//! progress by [`FragConfig::max_datagrams`] and, per zone, by
//! [`FragConfig::max_datagrams_per_zone`]. A datagram that does not
//! complete within its family's timeout (default 30 s for IPv4 and 60 s for
//! IPv6, Linux's `ipfrag_time` / `ip6frag_time`) is discarded; expiry runs
//! on every [`Reassembler::push`] and [`Reassembler::expire`]. A fragment
//! that would exceed a bound is rejected (the datagrams already held are
//! kept: new work is refused rather than old work evicted).

mod header;
mod layout;
mod stats;

use std::collections::BTreeMap;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

pub use layout::{FragLayout, Piece, RefragError};
pub use stats::{DatagramInfo, FragCounters, FragStats, FragStatus, Reject};

use crate::key::{Family, Zone};
use crate::packet::CtPacket;
use header::{min_first_payload, min_later_offset, FragHeader, Parsed};

/// Memory accounted per held fragment beyond its payload.
pub const FRAGMENT_OVERHEAD: usize = 64;
/// Memory accounted per datagram in progress.
pub const DATAGRAM_OVERHEAD: usize = 192;

/// Limits and timeouts of a [`Reassembler`]. Deserializes from a JSON
/// object with any subset of the fields (the rest default; unknown fields
/// are errors).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FragConfig {
    /// Reassemble IPv4 / IPv6 fragments. When off, fragments of that
    /// family are left alone ([`Outcome::Pass`]; conntrack then reports
    /// them `+inv`).
    pub enabled_v4: bool,
    pub enabled_v6: bool,
    /// Memory all datagrams in progress may account for.
    pub max_bytes: usize,
    /// Datagrams in progress, all zones.
    pub max_datagrams: usize,
    /// Datagrams in progress in one zone.
    pub max_datagrams_per_zone: usize,
    /// Fragments one datagram may have.
    pub max_fragments: usize,
    /// How long a datagram may take to complete.
    pub timeout_v4_ms: u64,
    pub timeout_v6_ms: u64,
}

impl Default for FragConfig {
    fn default() -> Self {
        FragConfig {
            enabled_v4: true,
            enabled_v6: true,
            max_bytes: 4 << 20,
            max_datagrams: 1024,
            max_datagrams_per_zone: 256,
            max_fragments: 64,
            timeout_v4_ms: 30_000,
            timeout_v6_ms: 60_000,
        }
    }
}

impl FragConfig {
    /// Check the values; the error names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        let positive: [(&str, u64); 5] = [
            ("max_bytes", self.max_bytes as u64),
            ("max_datagrams", self.max_datagrams as u64),
            ("max_datagrams_per_zone", self.max_datagrams_per_zone as u64),
            ("timeout_v4_ms", self.timeout_v4_ms),
            ("timeout_v6_ms", self.timeout_v6_ms),
        ];
        if let Some((name, v)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name}: {v}: must be at least 1"));
        }
        if !(1..=8192).contains(&self.max_fragments) {
            return Err(format!(
                "max_fragments: {}: must be 1..=8192",
                self.max_fragments
            ));
        }
        Ok(())
    }

    fn timeout_ns(&self, f: Family) -> u64 {
        let ms = match f {
            Family::Ipv4 => self.timeout_v4_ms,
            Family::Ipv6 => self.timeout_v6_ms,
        };
        ms.saturating_mul(1_000_000)
    }

    fn enabled(&self, f: Family) -> bool {
        match f {
            Family::Ipv4 => self.enabled_v4,
            Family::Ipv6 => self.enabled_v6,
        }
    }
}

/// A datagram rebuilt from its fragments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reassembled {
    /// The whole datagram, from its IP header on.
    pub datagram: Vec<u8>,
    /// How it was fragmented.
    pub layout: FragLayout,
}

/// What [`Reassembler::push`] did with a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not a fragment (or reassembly of its family is off): the packet
    /// carries on as it is.
    Pass,
    /// A fragment, held (copied) until its datagram completes: the caller
    /// may free the packet.
    Held,
    /// The fragment completed its datagram.
    Complete(Reassembled),
    /// The fragment was refused (and counted); see [`Reject`] for what
    /// happened to its datagram.
    Rejected(Reject),
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct DatagramKey {
    zone: Zone,
    family: Family,
    src: [u8; 16],
    dst: [u8; 16],
    id: u32,
    proto: u8,
}

struct Held {
    offset: u32,
    data: Box<[u8]>,
}

impl Held {
    fn end(&self) -> u32 {
        self.offset + self.data.len() as u32
    }
}

struct Datagram {
    /// The header of the fragment at offset 0 (IPv4 header, or IPv6
    /// unfragmentable part) once it arrived, and its next-header position.
    first: Option<(Box<[u8]>, usize)>,
    /// Held fragments, by offset, never overlapping.
    pieces: Vec<Held>,
    /// End of the datagram, once the last fragment arrived.
    total: Option<u32>,
    received: u32,
    max_end: u32,
    /// Memory accounted.
    bytes: usize,
    deadline: u64,
    serial: u64,
}

/// The fragment reassembler (see the module docs).
pub struct Reassembler {
    cfg: FragConfig,
    datagrams: HashMap<DatagramKey, Datagram>,
    /// (deadline, serial) of every datagram in progress, oldest first.
    expiry: BTreeMap<(u64, u64), DatagramKey>,
    zones: HashMap<Zone, usize>,
    bytes: usize,
    serial: u64,
    stats: FragStats,
}

impl Default for Reassembler {
    fn default() -> Self {
        Reassembler::new(FragConfig::default())
    }
}

impl Reassembler {
    /// A reassembler with `cfg` (not validated: see [`FragConfig::validate`]).
    pub fn new(cfg: FragConfig) -> Reassembler {
        Reassembler {
            cfg,
            datagrams: HashMap::new(),
            expiry: BTreeMap::new(),
            zones: HashMap::new(),
            bytes: 0,
            serial: 0,
            stats: FragStats::default(),
        }
    }

    pub fn config(&self) -> &FragConfig {
        &self.cfg
    }

    /// Replace the configuration. Datagrams in progress are kept (even if
    /// they exceed new, lower limits) and keep their deadlines.
    pub fn set_config(&mut self, cfg: FragConfig) -> Result<(), String> {
        cfg.validate()?;
        self.cfg = cfg;
        Ok(())
    }

    /// Counters.
    pub fn stats(&self) -> FragStats {
        self.stats
    }

    /// Datagrams in progress.
    pub fn datagrams(&self) -> usize {
        self.datagrams.len()
    }

    /// Memory the datagrams in progress account for.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Take the packet `pkt` of conntrack zone `zone`, at time `now_ns`.
    pub fn push(&mut self, zone: Zone, pkt: &CtPacket<'_>, now_ns: u64) -> Outcome {
        if !self.cfg.enabled(pkt.family) {
            return Outcome::Pass;
        }
        self.expire(now_ns);
        let h = match header::parse(pkt.l3, pkt.family, pkt.flags) {
            Parsed::NotFragment => return Outcome::Pass,
            Parsed::Malformed => {
                self.stats
                    .family_mut(pkt.family)
                    .count_reject(Reject::Malformed);
                return Outcome::Rejected(Reject::Malformed);
            }
            Parsed::Fragment(h) => h,
        };
        let key = DatagramKey {
            zone,
            family: h.family,
            src: h.src,
            dst: h.dst,
            id: h.id,
            proto: h.proto,
        };
        let payload = pkt.l3.get(h.payload.clone()).unwrap_or(&[]);
        if let Err(r) = self.check_alone(&h, payload) {
            return self.reject(&key, r);
        }
        if !self.datagrams.contains_key(&key) {
            if let Err(r) = self.start(key, now_ns) {
                return self.reject(&key, r);
            }
        }
        match self.add(&key, &h, pkt.l3, payload) {
            Err(r) => self.reject(&key, r),
            Ok(false) => {
                self.stats.family_mut(h.family).accepted += 1;
                Outcome::Held
            }
            Ok(true) => {
                self.stats.family_mut(h.family).accepted += 1;
                match self.finish(&key) {
                    Ok(r) => {
                        self.stats.family_mut(h.family).reassembled += 1;
                        Outcome::Complete(r)
                    }
                    Err(r) => {
                        self.stats.family_mut(h.family).count_reject(r);
                        Outcome::Rejected(r)
                    }
                }
            }
        }
    }

    /// Checks a fragment passes on its own, before any datagram is looked at.
    fn check_alone(&self, h: &FragHeader, payload: &[u8]) -> Result<(), Reject> {
        let len = payload.len() as u32;
        let end = h.offset + len;
        if len == 0 || (h.more && len & 7 != 0) {
            return Err(Reject::BadLength);
        }
        let max_end = match h.family {
            Family::Ipv4 => 65535 - 20,
            Family::Ipv6 => 65535,
        };
        if end > max_end {
            return Err(Reject::TooBig);
        }
        if h.offset == 0 {
            if payload.len() < min_first_payload(h.proto, payload) {
                return Err(Reject::Tiny);
            }
        } else if h.offset < min_later_offset(h.proto) {
            return Err(Reject::Tiny);
        }
        Ok(())
    }

    /// Open a datagram for `key`, if the limits allow.
    fn start(&mut self, key: DatagramKey, now_ns: u64) -> Result<(), Reject> {
        if self.datagrams.len() >= self.cfg.max_datagrams {
            return Err(Reject::DatagramLimit);
        }
        let in_zone = self.zones.get(&key.zone).copied().unwrap_or(0);
        if in_zone >= self.cfg.max_datagrams_per_zone {
            return Err(Reject::ZoneLimit);
        }
        if self.bytes + DATAGRAM_OVERHEAD > self.cfg.max_bytes {
            return Err(Reject::MemoryLimit);
        }
        self.serial += 1;
        let deadline = now_ns.saturating_add(self.cfg.timeout_ns(key.family));
        self.expiry.insert((deadline, self.serial), key);
        *self.zones.entry(key.zone).or_insert(0) += 1;
        self.bytes += DATAGRAM_OVERHEAD;
        self.datagrams.insert(
            key,
            Datagram {
                first: None,
                pieces: Vec::new(),
                total: None,
                received: 0,
                max_end: 0,
                bytes: DATAGRAM_OVERHEAD,
                deadline,
                serial: self.serial,
            },
        );
        Ok(())
    }

    /// Add the fragment to its (existing) datagram; true if it completed it.
    fn add(
        &mut self,
        key: &DatagramKey,
        h: &FragHeader,
        l3: &[u8],
        payload: &[u8],
    ) -> Result<bool, Reject> {
        let max_fragments = self.cfg.max_fragments;
        let room = self.cfg.max_bytes.saturating_sub(self.bytes);
        let d = self.datagrams.get_mut(key).ok_or(Reject::DatagramLimit)?;
        let (off, len) = (h.offset, payload.len() as u32);
        let end = off + len;
        if d.pieces.len() >= max_fragments {
            return Err(Reject::TooManyFragments);
        }
        match (h.more, d.total) {
            (false, Some(t)) if t != end => return Err(Reject::ConflictingLast),
            (false, None) if d.max_end > end => return Err(Reject::ConflictingLast),
            (true, Some(t)) if end >= t => return Err(Reject::ConflictingLast),
            _ => {}
        }
        let at = d.pieces.partition_point(|p| p.offset < off);
        if at > 0 && d.pieces[at - 1].end() > off {
            return Err(Reject::Overlap);
        }
        if let Some(next) = d.pieces.get(at) {
            if next.offset == off && *next.data == *payload {
                return Err(Reject::Duplicate);
            }
            if next.offset < end {
                return Err(Reject::Overlap);
            }
        }
        let first_hdr = (off == 0).then(|| l3.get(..h.hdr_len).unwrap_or(&[]));
        let cost = payload.len() + FRAGMENT_OVERHEAD + first_hdr.map_or(0, <[u8]>::len);
        if cost > room {
            return Err(Reject::MemoryLimit);
        }
        if let Some(hdr) = first_hdr {
            d.first = Some((hdr.into(), h.nh_at));
        }
        d.pieces.insert(
            at,
            Held {
                offset: off,
                data: payload.into(),
            },
        );
        d.received += len;
        d.max_end = d.max_end.max(end);
        if !h.more {
            d.total = Some(end);
        }
        d.bytes += cost;
        self.bytes += cost;
        Ok(d.first.is_some() && d.total == Some(d.received))
    }

    /// Remove the datagram of `key`; returns it for the caller to use.
    fn remove(&mut self, key: &DatagramKey) -> Option<Datagram> {
        let d = self.datagrams.remove(key)?;
        self.expiry.remove(&(d.deadline, d.serial));
        if let Some(n) = self.zones.get_mut(&key.zone) {
            *n -= 1;
            if *n == 0 {
                self.zones.remove(&key.zone);
            }
        }
        self.bytes -= d.bytes;
        Some(d)
    }

    /// Count `r` and, where the reason calls for it, discard the datagram.
    fn reject(&mut self, key: &DatagramKey, r: Reject) -> Outcome {
        let c = self.stats.family_mut(key.family);
        c.count_reject(r);
        let keeps = matches!(
            r,
            Reject::Malformed | Reject::Duplicate | Reject::DatagramLimit | Reject::ZoneLimit
        );
        if !keeps {
            if let Some(d) = self.remove(key) {
                self.stats.family_mut(key.family).discarded_fragments += d.pieces.len() as u64;
            }
        }
        Outcome::Rejected(r)
    }

    /// Build the completed datagram of `key` (and forget it).
    fn finish(&mut self, key: &DatagramKey) -> Result<Reassembled, Reject> {
        let d = self.remove(key).ok_or(Reject::Malformed)?;
        let (hdr, nh_at) = d.first.ok_or(Reject::Malformed)?;
        let total = d.received as usize;
        let mut out = Vec::with_capacity(hdr.len() + total);
        out.extend_from_slice(&hdr);
        let pieces: Vec<Piece> = d
            .pieces
            .iter()
            .map(|p| Piece {
                offset: p.offset,
                len: p.data.len() as u32,
            })
            .collect();
        for p in &d.pieces {
            out.extend_from_slice(&p.data);
        }
        match key.family {
            Family::Ipv4 => {
                if out.len() > 65535 {
                    self.stats.v4.discarded_fragments += pieces.len() as u64;
                    return Err(Reject::TooBig);
                }
                let ff = u16::from_be_bytes([out[6], out[7]]) & 0x4000;
                let len = out.len() as u16;
                out[2..4].copy_from_slice(&len.to_be_bytes());
                out[6..8].copy_from_slice(&ff.to_be_bytes());
                out[10..12].fill(0);
                let c = !crate::packet::csum_fold(crate::packet::csum_add(0, &out[..hdr.len()]));
                out[10..12].copy_from_slice(&c.to_be_bytes());
            }
            Family::Ipv6 => {
                let plen = out.len() - 40;
                if plen > 65535 {
                    self.stats.v6.discarded_fragments += pieces.len() as u64;
                    return Err(Reject::TooBig);
                }
                out[nh_at] = key.proto;
                out[4..6].copy_from_slice(&(plen as u16).to_be_bytes());
            }
        }
        Ok(Reassembled {
            datagram: out,
            layout: FragLayout {
                family: key.family,
                id: key.id,
                hdr_len: hdr.len(),
                nh_at,
                pieces,
            },
        })
    }

    /// Discard the datagrams whose time ran out by `now_ns`; returns how
    /// many.
    pub fn expire(&mut self, now_ns: u64) -> usize {
        let mut n = 0;
        while let Some((&(deadline, _), &key)) = self.expiry.first_key_value() {
            if deadline > now_ns {
                break;
            }
            match self.remove(&key) {
                Some(d) => {
                    let c = self.stats.family_mut(key.family);
                    c.timed_out += 1;
                    c.discarded_fragments += d.pieces.len() as u64;
                    n += 1;
                }
                // Not reachable (remove drops the expiry entry), but never
                // loop on a stale entry.
                None => {
                    self.expiry.pop_first();
                }
            }
        }
        n
    }

    /// Discard every datagram in progress (not counted as timed out).
    pub fn clear(&mut self) {
        self.datagrams.clear();
        self.expiry.clear();
        self.zones.clear();
        self.bytes = 0;
    }

    /// The datagrams in progress, oldest first.
    pub fn dump(&self, now_ns: u64) -> Vec<DatagramInfo> {
        self.expiry
            .values()
            .filter_map(|k| Some((k, self.datagrams.get(k)?)))
            .map(|(k, d)| DatagramInfo {
                zone: k.zone,
                family: k.family,
                src: addr(k.family, &k.src),
                dst: addr(k.family, &k.dst),
                id: k.id,
                proto: k.proto,
                fragments: d.pieces.len(),
                bytes: d.received as usize,
                have_first: d.first.is_some(),
                have_last: d.total.is_some(),
                expires_in_ms: d.deadline.saturating_sub(now_ns) / 1_000_000,
            })
            .collect()
    }

    /// Configuration, occupancy and counters.
    pub fn status(&self) -> FragStatus {
        let mut zones: Vec<(Zone, usize)> = self.zones.iter().map(|(z, n)| (*z, *n)).collect();
        zones.sort();
        FragStatus {
            config: self.cfg.clone(),
            datagrams: self.datagrams.len(),
            bytes: self.bytes,
            zones,
            counters: self.stats,
        }
    }
}

fn addr(f: Family, a: &[u8; 16]) -> std::net::IpAddr {
    match f {
        Family::Ipv4 => std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]).into(),
        Family::Ipv6 => std::net::Ipv6Addr::from(*a).into(),
    }
}

#[cfg(test)]
mod tests;
