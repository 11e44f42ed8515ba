//! Network address translation: the `nat` argument of the `ct` action.
//!
//! A NAT binding is chosen once, when `ct(commit,nat(src=..)|nat(dst=..))`
//! creates a connection: the connection then keeps its original tuple
//! (`Conn::key`, what `ct_nw_src`, `ct_tp_src`, ... report) and a reply
//! tuple that is not the reversed original (`ConnExt::reply`), with
//! `ConnStatus::SRC_NAT` or `DST_NAT`. Every later `ct` action with `nat`
//! (bare or not) translates the connection's packets: original-direction
//! packets get the translated tuple, reply-direction packets the reverse
//! (un-NAT), and ICMP errors about the connection get their embedded
//! header translated too ([`rewrite::rewrite_related`]). The tracker only
//! says what to write ([`NatEdit`]); the datapath writes the bytes with
//! [`rewrite`].
//!
//! # Choosing the binding
//!
//! Semantics follow Linux nf_nat (which OVS's kernel datapath uses):
//! - **Address**: from the range, starting at a keyed hash of the
//!   connection's source and destination addresses (`persistent`: the
//!   source only, so a client always gets the same address; this is what
//!   spreads DNAT load-balancing over backends). If no port is free on that
//!   address the next addresses are tried (up to [`MAX_ADDRS`]; Linux tries
//!   only one).
//! - **Port** (TCP, UDP; the ICMP/ICMPv6 query id stands for the port):
//!   - with a port range and neither `hash` nor `random`: the original port
//!     if it is in the range and its reply tuple is free, else the range
//!     from a per-connection hash offset;
//!   - `hash`: always the range from a keyed hash of the addresses and
//!     destination port (Linux `--random`);
//!   - `random`: always the range from a pseudo-random offset (Linux
//!     `--random-fully`);
//!   - SNAT without a port range: the original port if its reply tuple is
//!     free, else a port in the original's class, as Linux does: 1-511 for
//!     ports below 512, 600-1023 for 512-1023, 1024-65535 otherwise (ICMP
//!     ids: 0-65535);
//!   - DNAT without a port range: the original port only.
//!   - SCTP ports are never changed (its CRC32c would have to be recomputed
//!     over the whole packet); other protocols have no ports.
//! - A candidate is taken only if its reply tuple is not in use in the zone
//!   (no connection has it as original or reply tuple). Ranges of up to
//!   [`FULL_SCAN`] ports are scanned completely, so exhaustion is exact;
//!   larger ranges get [`MAX_ATTEMPTS`] tries from the offset and then
//!   shrinking rounds at random offsets, like Linux, so a nearly full huge
//!   range can fail early. When nothing is found the packet is dropped
//!   and counted (`nat_exhausted` in `ct-stats-show`) and no connection is
//!   created.
//!
//! # State bits
//!
//! As in OVS, `+snat`/`+dnat` say which address of *this packet* the `ct`
//! action translated: an original-direction packet of a source-NATed
//! connection is `+snat`, its replies (whose destination is un-NATed) are
//! `+dnat`. They are set only by a `ct` action with `nat`, and only when a
//! translation applies.
//!
//! A bare `nat` on the commit that creates a connection sets up no binding
//! (Linux would record a null binding; nothing differs on the wire).

pub mod rewrite;

use std::fmt;
use std::net::IpAddr;

use crate::key::{ipproto, ConnKey, Dir, Family};

/// Ranges of at most this many ports are searched exhaustively.
pub const FULL_SCAN: u32 = 4096;
/// Tries from the first offset in a larger range.
pub const MAX_ATTEMPTS: u32 = 128;
/// Addresses of a range tried before giving up.
pub const MAX_ADDRS: u32 = 8;

/// Which side of the tuple a NAT rule rewrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NatKind {
    /// `nat(src=..)`: the source of original-direction packets.
    Src,
    /// `nat(dst=..)`: the destination of original-direction packets.
    Dst,
}

/// How the port is chosen (`hash` and `random` exclude each other).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum PortPick {
    /// Keep the original port when possible.
    #[default]
    Keep,
    /// `hash`: per-connection hash offset.
    Hash,
    /// `random`: pseudo-random offset.
    Random,
}

/// A NAT rule with addresses: `nat(src|dst=A[-B][:P[-Q]][,persistent][,hash|random])`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NatSpec {
    pub kind: NatKind,
    pub family: Family,
    /// Address range, inclusive (IPv4 in the first four bytes).
    pub addr_min: [u8; 16],
    pub addr_max: [u8; 16],
    /// Port range, inclusive.
    pub ports: Option<(u16, u16)>,
    pub persistent: bool,
    pub pick: PortPick,
}

/// The `nat` argument of a `ct` action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct NatAction {
    /// None: bare `nat` (apply the connection's binding only).
    pub spec: Option<NatSpec>,
}

impl NatSpec {
    /// A rule over the address range `lo..=hi` (same family, `lo <= hi`).
    pub fn new(kind: NatKind, lo: IpAddr, hi: IpAddr) -> Option<NatSpec> {
        let (family, a, b) = match (lo, hi) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mut x = [0u8; 16];
                let mut y = [0u8; 16];
                x[..4].copy_from_slice(&a.octets());
                y[..4].copy_from_slice(&b.octets());
                (Family::Ipv4, x, y)
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => (Family::Ipv6, a.octets(), b.octets()),
            _ => return None,
        };
        if addr_num(family, &a) > addr_num(family, &b) {
            return None;
        }
        Some(NatSpec {
            kind,
            family,
            addr_min: a,
            addr_max: b,
            ports: None,
            persistent: false,
            pick: PortPick::Keep,
        })
    }

    /// Number of addresses in the range (saturating).
    fn addr_count(&self) -> u128 {
        (addr_num(self.family, &self.addr_max) - addr_num(self.family, &self.addr_min))
            .saturating_add(1)
    }

    fn addr_at(&self, i: u128) -> [u8; 16] {
        let n = addr_num(self.family, &self.addr_min) + i;
        num_addr(self.family, n)
    }
}

fn addr_num(family: Family, a: &[u8; 16]) -> u128 {
    match family {
        Family::Ipv4 => u32::from_be_bytes([a[0], a[1], a[2], a[3]]) as u128,
        Family::Ipv6 => u128::from_be_bytes(*a),
    }
}

fn num_addr(family: Family, n: u128) -> [u8; 16] {
    match family {
        Family::Ipv4 => {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&(n as u32).to_be_bytes());
            a
        }
        Family::Ipv6 => n.to_be_bytes(),
    }
}

fn ip_of(family: Family, a: &[u8; 16]) -> IpAddr {
    let k = ConnKey {
        family,
        src: *a,
        ..Default::default()
    };
    k.src_ip()
}

impl fmt::Display for NatAction {
    /// `nat` or `nat(src=10.0.0.1-10.0.0.2:5000-5001,persistent,hash)`, as
    /// OVS prints datapath actions.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(s) = &self.spec else {
            return f.write_str("nat");
        };
        f.write_str(match s.kind {
            NatKind::Src => "nat(src=",
            NatKind::Dst => "nat(dst=",
        })?;
        let br = s.family == Family::Ipv6 && s.ports.is_some();
        let w = |f: &mut fmt::Formatter<'_>, a: &[u8; 16]| {
            let ip = ip_of(s.family, a);
            if br {
                write!(f, "[{ip}]")
            } else {
                write!(f, "{ip}")
            }
        };
        w(f, &s.addr_min)?;
        if s.addr_max != s.addr_min {
            f.write_str("-")?;
            w(f, &s.addr_max)?;
        }
        if let Some((lo, hi)) = s.ports {
            write!(f, ":{lo}")?;
            if hi != lo {
                write!(f, "-{hi}")?;
            }
        }
        if s.persistent {
            f.write_str(",persistent")?;
        }
        match s.pick {
            PortPick::Keep => {}
            PortPick::Hash => f.write_str(",hash")?,
            PortPick::Random => f.write_str(",random")?,
        }
        f.write_str(")")
    }
}

/// What the datapath must do to one packet for NAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatEdit {
    /// Give the packet these addresses and ports/id
    /// ([`rewrite::rewrite_packet`]).
    Packet(ConnKey),
    /// An ICMP error: its embedded packet becomes this tuple
    /// ([`rewrite::rewrite_related`]).
    Related(ConnKey),
    /// No binding could be allocated: drop the packet (counted as
    /// `nat_exhausted`).
    Drop,
}

/// The tuple an original- or reply-direction packet of a NATed connection
/// must carry after translation: the reverse of the other direction's key.
#[inline]
pub fn target(orig: &ConnKey, reply: &ConnKey, dir: Dir) -> ConnKey {
    match dir {
        Dir::Orig => reply.reverse(),
        Dir::Reply => orig.reverse(),
    }
}

/// The `+snat`/`+dnat` bits for a packet travelling in `dir` of a
/// connection NATed by `src`/`dst` rules.
#[inline]
pub fn state_bits(src_nat: bool, dst_nat: bool, dir: Dir) -> crate::state::CtState {
    use crate::state::CtState;
    let mut s = CtState::empty();
    let (snat_bit, dnat_bit) = match dir {
        Dir::Orig => (CtState::SNAT, CtState::DNAT),
        Dir::Reply => (CtState::DNAT, CtState::SNAT),
    };
    if src_nat {
        s |= snat_bit;
    }
    if dst_nat {
        s |= dnat_bit;
    }
    s
}

/// Mix for keyed hashes (not cryptographic; keyed with the tracker seed so
/// clients cannot aim at one port).
#[inline]
fn mix(mut h: u64, v: u64) -> u64 {
    h = (h ^ v).wrapping_mul(0xff51_afd7_ed55_8ccd);
    h = h.rotate_left(31);
    h ^ (h >> 29)
}

fn hash_addr(h: u64, a: &[u8; 16]) -> u64 {
    let lo = u64::from_le_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
    let hi = u64::from_le_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]);
    mix(mix(h, lo), hi)
}

/// Whether the protocol's ports (or ICMP query id) are translated.
fn has_ports(k: &ConnKey) -> bool {
    k.is_icmp() || matches!(k.proto, ipproto::TCP | ipproto::UDP)
}

/// The port (or id) field of `k` a rule of `kind` rewrites.
fn port_of(k: &ConnKey, kind: NatKind) -> u16 {
    if k.is_icmp() {
        return k.src_port;
    }
    match kind {
        NatKind::Src => k.src_port,
        NatKind::Dst => k.dst_port,
    }
}

fn set_port(k: &mut ConnKey, kind: NatKind, p: u16) {
    if k.is_icmp() {
        k.src_port = p;
        return;
    }
    match kind {
        NatKind::Src => k.src_port = p,
        NatKind::Dst => k.dst_port = p,
    }
}

/// Inclusive port range searched when the port must change, and whether
/// the original port may be kept.
fn port_range(spec: &NatSpec, orig: &ConnKey) -> Option<((u16, u16), bool)> {
    if !has_ports(orig) {
        return None;
    }
    let p = port_of(orig, spec.kind);
    match spec.ports {
        Some((lo, hi)) => Some((
            (lo, hi),
            spec.pick == PortPick::Keep && (lo..=hi).contains(&p),
        )),
        None if spec.kind == NatKind::Dst => None,
        None if orig.is_icmp() => Some(((0, u16::MAX), spec.pick == PortPick::Keep)),
        None => {
            let class = match p {
                0..=511 => (1, 511),
                512..=1023 => (600, 1023),
                _ => (1024, u16::MAX),
            };
            Some((class, spec.pick == PortPick::Keep))
        }
    }
}

/// Choose the reply tuple of a new connection with original tuple `orig`
/// under `spec`. `free(reply)` says whether a candidate reply tuple is
/// unused in the zone (it may also reserve it: the first candidate for
/// which it returns true is the answer). `seed` keys the hashes, `random`
/// is a fresh pseudo-random number (used by [`PortPick::Random`] and the
/// later rounds of large ranges). None: exhausted.
pub fn choose(
    spec: &NatSpec,
    orig: &ConnKey,
    seed: u64,
    random: u64,
    mut free: impl FnMut(&ConnKey) -> bool,
) -> Option<ConnKey> {
    if spec.family != orig.family {
        return None;
    }
    // Address: hash of the source (and destination unless persistent).
    let mut h = hash_addr(seed ^ 0x6e61_7420_6164_6472, &orig.src);
    if !spec.persistent {
        h = hash_addr(h, &orig.dst);
    }
    let naddrs = spec.addr_count();
    let first = (h as u128) % naddrs;
    let ports = port_range(spec, orig);
    // Port offset: per-connection hash (addresses, destination port) or random.
    let port_off = match spec.pick {
        PortPick::Random => random,
        _ => mix(
            hash_addr(hash_addr(seed ^ 0x706f_7274, &orig.src), &orig.dst),
            (orig.dst_port as u64) << 8 | orig.proto as u64,
        ),
    };
    let mut rng = random | 1;
    for a in 0..(MAX_ADDRS as u128).min(naddrs) {
        let addr = spec.addr_at((first + a) % naddrs);
        let mut t = *orig;
        match spec.kind {
            NatKind::Src => t.src = addr,
            NatKind::Dst => t.dst = addr,
        }
        let Some(((lo, hi), keep)) = ports else {
            if free(&t.reverse()) {
                return Some(t.reverse());
            }
            continue;
        };
        if keep && free(&t.reverse()) {
            return Some(t.reverse());
        }
        let size = hi as u32 - lo as u32 + 1;
        let mut try_from = |off: u64, n: u32, free: &mut dyn FnMut(&ConnKey) -> bool| {
            for i in 0..n {
                let p = lo as u32 + ((off + i as u64) % size as u64) as u32;
                set_port(&mut t, spec.kind, p as u16);
                if free(&t.reverse()) {
                    return Some(t.reverse());
                }
            }
            None
        };
        if size <= FULL_SCAN {
            if let Some(r) = try_from(port_off, size, &mut free) {
                return Some(r);
            }
            continue;
        }
        let mut attempts = MAX_ATTEMPTS;
        let mut off = port_off;
        loop {
            if let Some(r) = try_from(off, attempts, &mut free) {
                return Some(r);
            }
            if attempts < 16 {
                break;
            }
            attempts /= 2;
            rng = mix(rng, 0x9e37_79b9_7f4a_7c15);
            off = rng;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Zone;
    use std::collections::HashSet;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn snat(lo: &str, hi: &str, ports: Option<(u16, u16)>) -> NatSpec {
        let mut s = NatSpec::new(NatKind::Src, lo.parse().unwrap(), hi.parse().unwrap()).unwrap();
        s.ports = ports;
        s
    }

    fn client(sport: u16) -> ConnKey {
        ConnKey::v4(Zone(1), v4("10.0.0.5"), v4("8.8.8.8"), 17, sport, 53)
    }

    #[test]
    fn keeps_the_source_port_when_free() {
        let s = snat("203.0.113.1", "203.0.113.1", None);
        let r = choose(&s, &client(40000), 1, 2, |_| true).unwrap();
        assert_eq!(
            r,
            ConnKey::v4(Zone(1), v4("8.8.8.8"), v4("203.0.113.1"), 17, 53, 40000)
        );
    }

    #[test]
    fn moves_to_a_port_of_the_same_class() {
        let s = snat("203.0.113.1", "203.0.113.1", None);
        for (sport, lo, hi) in [(40000, 1024, 65535), (700, 600, 1023), (100, 1, 511)] {
            let orig = client(sport);
            let taken = orig;
            let r = choose(&s, &orig, 1, 2, |r| r.dst_port != taken.src_port).unwrap();
            assert!(
                (lo..=hi).contains(&r.dst_port) && r.dst_port != sport,
                "{sport} -> {}",
                r.dst_port
            );
        }
    }

    #[test]
    fn two_port_range_is_exhausted_by_a_third_client() {
        let s = snat("10.0.0.100", "10.0.0.100", Some((5000, 5001)));
        let mut used = HashSet::new();
        for sport in [40001, 40002] {
            let r = choose(&s, &client(sport), 7, 0, |r| !used.contains(r)).unwrap();
            assert!((5000..=5001).contains(&r.dst_port));
            assert!(used.insert(r));
        }
        assert_eq!(
            choose(&s, &client(40003), 7, 0, |r| !used.contains(r)),
            None
        );
        // Every candidate was looked at: exhaustion is exact.
        let mut seen = 0;
        choose(&s, &client(40003), 7, 0, |_| {
            seen += 1;
            false
        });
        assert_eq!(seen, 2);
    }

    #[test]
    fn hash_is_deterministic_random_is_not() {
        let mut s = snat("10.0.0.100", "10.0.0.100", Some((1000, 60000)));
        s.pick = PortPick::Hash;
        let a = choose(&s, &client(4000), 3, 11, |_| true).unwrap();
        let b = choose(&s, &client(4000), 3, 99, |_| true).unwrap();
        assert_eq!(a, b, "hash ignores the random input");
        // hash never keeps the original port just because it is in range.
        let ports: HashSet<u16> = (0..50u16)
            .map(|i| {
                let mut k = client(4000);
                k.dst = ConnKey::v4(Zone(1), v4("1.1.1.1"), v4("9.9.9.9"), 17, 0, 0).dst;
                k.dst[3] = i as u8;
                choose(&s, &k, 3, 0, |_| true).unwrap().dst_port
            })
            .collect();
        assert!(
            ports.len() > 40,
            "hash spreads over the range: {}",
            ports.len()
        );
        s.pick = PortPick::Random;
        let ports: HashSet<u16> = (0..50u64)
            .map(|r| {
                choose(&s, &client(4000), 3, r * 7919, |_| true)
                    .unwrap()
                    .dst_port
            })
            .collect();
        assert!(ports.len() > 40, "random varies per call: {}", ports.len());
    }

    #[test]
    fn persistent_address_depends_on_the_source_only() {
        let mut s = NatSpec::new(
            NatKind::Dst,
            "10.1.0.1".parse().unwrap(),
            "10.1.0.8".parse().unwrap(),
        )
        .unwrap();
        s.persistent = true;
        let backends: HashSet<[u8; 16]> = (0..64u8)
            .map(|i| {
                let k = ConnKey::v4(
                    Zone(0),
                    v4("192.0.2.7"),
                    Ipv4Addr::new(198, 51, 100, i),
                    6,
                    1000,
                    80,
                );
                choose(&s, &k, 5, 0, |_| true).unwrap().src
            })
            .collect();
        assert_eq!(backends.len(), 1, "one client, one backend");
        s.persistent = false;
        let spread: HashSet<[u8; 16]> = (0..64u8)
            .map(|i| {
                let k = ConnKey::v4(
                    Zone(0),
                    Ipv4Addr::new(192, 0, 2, i),
                    v4("198.51.100.10"),
                    6,
                    1000,
                    80,
                );
                choose(&s, &k, 5, 0, |_| true).unwrap().src
            })
            .collect();
        assert!(
            spread.len() >= 6,
            "clients spread over backends: {}",
            spread.len()
        );
    }

    #[test]
    fn dnat_without_ports_keeps_the_port_and_tries_other_addresses() {
        let s = NatSpec::new(
            NatKind::Dst,
            "10.1.0.1".parse().unwrap(),
            "10.1.0.2".parse().unwrap(),
        )
        .unwrap();
        let k = ConnKey::v4(Zone(0), v4("192.0.2.7"), v4("198.51.100.10"), 6, 1000, 80);
        let first = choose(&s, &k, 5, 0, |_| true).unwrap();
        assert_eq!((first.src_port, first.dst_port), (80, 1000));
        let second = choose(&s, &k, 5, 0, |r| *r != first).unwrap();
        assert_ne!(second.src, first.src);
        assert_eq!(choose(&s, &k, 5, 0, |_| false), None);
    }

    #[test]
    fn ipv6_and_icmp_id() {
        let s = NatSpec::new(
            NatKind::Src,
            "2001:db8::1".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
        )
        .unwrap();
        let k = ConnKey::v6(
            Zone(0),
            "fd00::5".parse::<Ipv6Addr>().unwrap(),
            "2001:db8:9::9".parse().unwrap(),
            58,
            7,
            128 << 8,
        );
        let r = choose(&s, &k, 1, 1, |r| r.src_port != 7).unwrap();
        assert_eq!(r.dst_ip().to_string(), "2001:db8::1");
        assert_eq!(r.icmp_type(), 129);
        assert_ne!(r.src_port, 7, "id moved");
        // Family mismatch never matches.
        assert_eq!(choose(&s, &client(1), 1, 1, |_| true), None);
    }

    #[test]
    fn state_bits_follow_the_rewritten_field() {
        use crate::state::CtState;
        assert_eq!(state_bits(true, false, Dir::Orig), CtState::SNAT);
        assert_eq!(state_bits(true, false, Dir::Reply), CtState::DNAT);
        assert_eq!(state_bits(false, true, Dir::Orig), CtState::DNAT);
        assert_eq!(state_bits(false, true, Dir::Reply), CtState::SNAT);
    }

    #[test]
    fn display_like_ovs() {
        let mut s = snat("10.0.0.1", "10.0.0.5", Some((1000, 2000)));
        s.pick = PortPick::Random;
        assert_eq!(
            NatAction { spec: Some(s) }.to_string(),
            "nat(src=10.0.0.1-10.0.0.5:1000-2000,random)"
        );
        let mut d = NatSpec::new(
            NatKind::Dst,
            "fe80::1".parse().unwrap(),
            "fe80::1".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(NatAction { spec: Some(d) }.to_string(), "nat(dst=fe80::1)");
        d.ports = Some((80, 80));
        d.persistent = true;
        assert_eq!(
            NatAction { spec: Some(d) }.to_string(),
            "nat(dst=[fe80::1]:80,persistent)"
        );
        assert_eq!(NatAction::default().to_string(), "nat");
    }
}

#[cfg(test)]
mod tracker_tests;
