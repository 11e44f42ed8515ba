//! Connection keys: the zone-scoped 5-tuple that identifies one direction of a
//! connection.
//!
//! A [`ConnKey`] is what a packet says about itself (source, destination,
//! protocol, ports or ICMP id/type/code, zone). A connection holds an original
//! key and a reply key; without NAT the reply key is [`ConnKey::reverse`] of the
//! original. The zone is part of the key, so the same addresses in two zones are
//! two different connections and a lookup never crosses zones.
//!
//! Layout: 40 bytes, addresses stored as 16 bytes (IPv4 in the first four,
//! the rest zero), so IPv4 and IPv6 share one table.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

/// A conntrack zone (OVS `ct_zone`): an independent connection context.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, PartialOrd, Ord, Serialize)]
pub struct Zone(pub u16);

/// IP protocol numbers conntrack knows by name.
pub mod ipproto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;
}

/// Address family of a key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, PartialOrd, Ord, Serialize)]
#[repr(u8)]
pub enum Family {
    #[default]
    Ipv4 = 4,
    Ipv6 = 6,
}

/// Direction of a packet relative to its connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Dir {
    /// Same direction as the packet that created the connection.
    Orig = 0,
    /// Opposite direction.
    Reply = 1,
}

impl Dir {
    pub fn index(self) -> usize {
        self as usize
    }
    pub fn other(self) -> Dir {
        match self {
            Dir::Orig => Dir::Reply,
            Dir::Reply => Dir::Orig,
        }
    }
}

/// One direction of a connection: zone, addresses, protocol and L4 identifiers.
///
/// For TCP, UDP, SCTP and other port-based protocols `src_port`/`dst_port` are
/// the ports. For ICMP/ICMPv6 query messages `src_port` is the identifier and
/// `dst_port` is `type << 8 | code`. For protocols without ports both are 0.
#[derive(Clone, Copy, Eq, Debug, Default, PartialOrd, Ord)]
#[repr(C, align(8))]
pub struct ConnKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub zone: Zone,
    pub proto: u8,
    pub family: Family,
}

/// The ICMP query type answering `ty`, or None if `ty` is not a query.
pub fn icmp_reply_type(family: Family, ty: u8) -> Option<u8> {
    match family {
        Family::Ipv4 => match ty {
            8 => Some(0),
            0 => Some(8),
            13 => Some(14),
            14 => Some(13),
            15 => Some(16),
            16 => Some(15),
            17 => Some(18),
            18 => Some(17),
            _ => None,
        },
        Family::Ipv6 => match ty {
            128 => Some(129),
            129 => Some(128),
            _ => None,
        },
    }
}

/// Whether an ICMP query type is the request (connection-opening) side.
pub fn icmp_is_request(family: Family, ty: u8) -> bool {
    match family {
        Family::Ipv4 => matches!(ty, 8 | 13 | 15 | 17),
        Family::Ipv6 => ty == 128,
    }
}

impl ConnKey {
    /// An IPv4 key.
    pub fn v4(zone: Zone, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, sport: u16, dport: u16) -> Self {
        let mut k = ConnKey {
            zone,
            proto,
            family: Family::Ipv4,
            src_port: sport,
            dst_port: dport,
            ..Default::default()
        };
        k.src[..4].copy_from_slice(&src.octets());
        k.dst[..4].copy_from_slice(&dst.octets());
        k
    }

    /// An IPv6 key.
    pub fn v6(zone: Zone, src: Ipv6Addr, dst: Ipv6Addr, proto: u8, sport: u16, dport: u16) -> Self {
        ConnKey {
            zone,
            proto,
            family: Family::Ipv6,
            src_port: sport,
            dst_port: dport,
            src: src.octets(),
            dst: dst.octets(),
        }
    }

    pub fn is_icmp(&self) -> bool {
        matches!(
            (self.family, self.proto),
            (Family::Ipv4, ipproto::ICMP) | (Family::Ipv6, ipproto::ICMPV6)
        )
    }

    /// ICMP type of an ICMP query key.
    pub fn icmp_type(&self) -> u8 {
        (self.dst_port >> 8) as u8
    }
    /// ICMP code of an ICMP query key.
    pub fn icmp_code(&self) -> u8 {
        self.dst_port as u8
    }

    /// The key a packet travelling the other way would carry (no NAT).
    pub fn reverse(&self) -> ConnKey {
        let mut r = *self;
        r.src = self.dst;
        r.dst = self.src;
        if self.is_icmp() {
            let ty = icmp_reply_type(self.family, self.icmp_type()).unwrap_or(self.icmp_type());
            r.dst_port = (ty as u16) << 8 | (self.dst_port & 0xff);
        } else {
            r.src_port = self.dst_port;
            r.dst_port = self.src_port;
        }
        r
    }

    pub fn src_ip(&self) -> IpAddr {
        addr(self.family, &self.src)
    }
    pub fn dst_ip(&self) -> IpAddr {
        addr(self.family, &self.dst)
    }

    /// The key as five 64-bit words (addresses, then ports/zone/proto/family).
    #[inline]
    pub fn words(&self) -> [u64; 5] {
        let w = |b: &[u8]| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        [
            w(&self.src[..8]),
            w(&self.src[8..]),
            w(&self.dst[..8]),
            w(&self.dst[8..]),
            (self.src_port as u64)
                | (self.dst_port as u64) << 16
                | (self.zone.0 as u64) << 32
                | (self.proto as u64) << 48
                | (self.family as u64) << 56,
        ]
    }

    /// Hash of the key under `seed` (the table's secret, against hash floods).
    ///
    /// Five 64-bit words folded with a multiply-rotate mix; cheap enough for
    /// the per-packet path and keyed so an attacker cannot aim at one bucket.
    #[inline]
    pub fn hash(&self, seed: u64) -> u64 {
        let mut h = seed ^ 0x9e37_79b9_7f4a_7c15;
        for v in self.words() {
            h = (h ^ v).wrapping_mul(0xff51_afd7_ed55_8ccd);
            h = h.rotate_left(29);
        }
        h ^= h >> 32;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 29)
    }
}

impl std::hash::Hash for ConnKey {
    /// Consistent with the word-wise equality.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::hash::Hash::hash(&self.words(), state)
    }
}

impl PartialEq for ConnKey {
    /// Word-wise: five 64-bit compares instead of field-by-field byte
    /// arrays (this runs for every lookup).
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        // XOR-OR fold: branch-free, no memcmp call.
        let (a, b) = (self.words(), other.words());
        ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4])) == 0
    }
}

fn addr(family: Family, b: &[u8; 16]) -> IpAddr {
    match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(*b)),
    }
}

impl fmt::Display for ConnKey {
    /// OVS `dump-conntrack` tuple body: `src=..,dst=..,sport=..,dport=..`
    /// (ICMP: `id=..,type=..,code=..`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "src={},dst={}", self.src_ip(), self.dst_ip())?;
        if self.is_icmp() {
            write!(
                f,
                ",id={},type={},code={}",
                self.src_port,
                self.icmp_type(),
                self.icmp_code()
            )
        } else if matches!(self.proto, ipproto::TCP | ipproto::UDP | ipproto::SCTP) {
            write!(f, ",sport={},dport={}", self.src_port, self.dst_port)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_forty_bytes() {
        assert_eq!(std::mem::size_of::<ConnKey>(), 40);
    }

    #[test]
    fn reverse_swaps_ports_and_addresses() {
        let k = ConnKey::v4(
            Zone(3),
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            6,
            1000,
            80,
        );
        let r = k.reverse();
        assert_eq!(r.src_ip().to_string(), "10.0.0.2");
        assert_eq!((r.src_port, r.dst_port, r.zone), (80, 1000, Zone(3)));
        assert_eq!(r.reverse(), k);
    }

    #[test]
    fn reverse_icmp_maps_echo_types() {
        let k = ConnKey::v4(
            Zone(0),
            "1.1.1.1".parse().unwrap(),
            "2.2.2.2".parse().unwrap(),
            1,
            77,
            8 << 8,
        );
        let r = k.reverse();
        assert_eq!((r.src_port, r.icmp_type(), r.icmp_code()), (77, 0, 0));
        let k6 = ConnKey::v6(
            Zone(0),
            "::1".parse().unwrap(),
            "::2".parse().unwrap(),
            58,
            5,
            128 << 8,
        );
        assert_eq!(k6.reverse().icmp_type(), 129);
    }

    #[test]
    fn zone_changes_hash_and_equality() {
        let a = ConnKey::v4(
            Zone(1),
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            17,
            1,
            2,
        );
        let mut b = a;
        b.zone = Zone(2);
        assert_ne!(a, b);
        assert_ne!(a.hash(7), b.hash(7));
        assert_ne!(a.hash(7), a.hash(8));
    }

    #[test]
    fn display_matches_ovs() {
        let k = ConnKey::v4(
            Zone(0),
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            6,
            1000,
            80,
        );
        assert_eq!(
            k.to_string(),
            "src=10.0.0.1,dst=10.0.0.2,sport=1000,dport=80"
        );
        let i = ConnKey::v4(
            Zone(0),
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            1,
            9,
            8 << 8,
        );
        assert_eq!(
            i.to_string(),
            "src=10.0.0.1,dst=10.0.0.2,id=9,type=8,code=0"
        );
    }
}
