//! NAT header rewriting: pure byte surgery on an L3 buffer.
//!
//! [`rewrite_packet`] gives a packet the addresses and L4 identifiers of a
//! target tuple; [`rewrite_related`] translates an ICMP/ICMPv6 error about
//! a NATed connection (the embedded header and the outer address the NAT
//! owns). Nothing here allocates or does I/O.
//!
//! # Checksums
//!
//! Every checksum is updated incrementally from the old and new bytes of
//! each changed field (RFC 1624), never summed again, so a checksum that
//! was good stays good and one that was bad stays bad (the datapath's
//! "checksum verified" flags remain true):
//! - the IPv4 header checksum for address changes;
//! - TCP, UDP and ICMPv6 checksums for address changes (pseudo header) and
//!   port/identifier changes; ICMPv4 for identifier changes only (no pseudo
//!   header);
//! - a UDP checksum of 0 ("none") stays 0; an update that yields 0 is
//!   written 0xffff;
//! - in an ICMP error, every change inside the embedded packet (addresses,
//!   ports/id and the embedded checksums themselves) also updates the outer
//!   ICMP checksum, which covers the whole message; the embedded IPv4
//!   header checksum and the embedded L4 checksum are updated when their
//!   bytes are present (an error carries only the first 8 L4 bytes at
//!   least, which hold a UDP checksum but not a TCP one).
//!
//! SCTP's CRC32c does not cover the IP addresses, so address translation
//! leaves it valid; SCTP port translation is not done (the allocator keeps
//! SCTP ports, see [`crate::nat`]).
//!
//! # Errors
//!
//! All offsets are checked before the first byte is written: an error
//! leaves the buffer unchanged.

use crate::key::{ipproto, ConnKey, Family};
use crate::packet::walk_v6;

/// Why a packet could not be rewritten (nothing was changed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RewriteError {
    /// A header is shorter than its fields.
    Truncated,
    /// Not the IP version of the target, a fragment, or not a message this
    /// rewrite handles (e.g. an ICMP error passed to [`rewrite_packet`]).
    Unsupported,
}

/// A 16-bit checksum field at `at`; `zero_is_none` for UDP.
#[derive(Clone, Copy)]
struct Csum {
    at: usize,
    zero_is_none: bool,
}

/// A running RFC 1624 difference: the sum of `!old + new` over the 16-bit
/// words that changed. One difference serves every checksum covering
/// those words.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Delta(u64);

impl Delta {
    #[inline]
    fn word(&mut self, old: u16, new: u16) {
        self.0 += (!old) as u64 + new as u64;
    }
}

#[inline]
fn get16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
fn set16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Apply difference `d` to the checksum `c` (RFC 1624 eqn. 3); returns
/// the field's old and new values (equal when nothing was written).
#[inline]
fn apply(b: &mut [u8], c: Csum, d: Delta) -> (u16, u16) {
    let old = get16(b, c.at);
    if d.0 == 0 || (c.zero_is_none && old == 0) {
        return (old, old);
    }
    let mut sum = (!old) as u64 + d.0;
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let mut new = !(sum as u16);
    if c.zero_is_none && new == 0 {
        new = 0xffff;
    }
    set16(b, c.at, new);
    (old, new)
}

/// Write the big-endian words `new` over `b[at..]`, adding the changed
/// ones to `d`. The caller checked the offsets.
#[inline]
fn write_words(b: &mut [u8], at: usize, new: &[u8], d: &mut Delta) {
    for (i, w) in new.chunks_exact(2).enumerate() {
        let o = get16(b, at + 2 * i);
        let n = u16::from_be_bytes([w[0], w[1]]);
        if o != n {
            d.word(o, n);
            set16(b, at + 2 * i, n);
        }
    }
}

/// Where a packet's headers are.
#[derive(Clone, Copy)]
struct Layout {
    family: Family,
    /// Address offsets (source; destination follows at +4 or +16).
    src_at: usize,
    dst_at: usize,
    alen: usize,
    /// IPv4 header checksum offset.
    ip_csum: Option<usize>,
    proto: u8,
    l4: usize,
    /// Bytes present from `l4` on.
    l4_len: usize,
}

/// Find the headers of the IP packet at the start of `b`. `embedded`: the
/// packet is quoted in an ICMP error (cut short; lengths are not checked
/// against its own length fields).
fn layout(b: &[u8], embedded: bool) -> Result<Layout, RewriteError> {
    let v = b.first().ok_or(RewriteError::Truncated)? >> 4;
    match v {
        4 => {
            if b.len() < 20 {
                return Err(RewriteError::Truncated);
            }
            let ihl = (b[0] & 0x0f) as usize * 4;
            let end = if embedded {
                b.len()
            } else {
                (get16(b, 2) as usize).min(b.len())
            };
            if ihl < 20 || ihl > end {
                return Err(RewriteError::Truncated);
            }
            // A non-first fragment holds no L4 header; a first fragment's
            // L4 checksum covers bytes we do not have (fine for
            // incremental updates, but conntrack never NATs fragments).
            if get16(b, 6) & 0x3fff != 0 {
                return Err(RewriteError::Unsupported);
            }
            Ok(Layout {
                family: Family::Ipv4,
                src_at: 12,
                dst_at: 16,
                alen: 4,
                ip_csum: Some(10),
                proto: b[9],
                l4: ihl,
                l4_len: end - ihl,
            })
        }
        6 => {
            if b.len() < 40 {
                return Err(RewriteError::Truncated);
            }
            let end = if embedded {
                b.len()
            } else {
                (40 + get16(b, 4) as usize).min(b.len())
            };
            let w = walk_v6(b, end, b[6]).map_err(|_| RewriteError::Truncated)?;
            if w.frag.is_some() {
                return Err(RewriteError::Unsupported);
            }
            Ok(Layout {
                family: Family::Ipv6,
                src_at: 8,
                dst_at: 24,
                alen: 16,
                ip_csum: None,
                proto: w.proto,
                l4: w.off,
                l4_len: end - w.off,
            })
        }
        _ => Err(RewriteError::Unsupported),
    }
}

/// The L4 checksum field of a layout (absolute offset `base + ..`), if its
/// bytes are present, and whether it covers the pseudo header.
fn l4_csum(l: &Layout, base: usize) -> (Option<Csum>, bool) {
    let (at, need, pseudo, zero_is_none) = match (l.family, l.proto) {
        (_, ipproto::TCP) => (16, 18, true, false),
        (_, ipproto::UDP) => (6, 8, true, true),
        (Family::Ipv4, ipproto::ICMP) => (2, 4, false, false),
        (Family::Ipv6, ipproto::ICMPV6) => (2, 4, true, false),
        _ => return (None, false),
    };
    let c = (l.l4_len >= need).then_some(Csum {
        at: base + l.l4 + at,
        zero_is_none,
    });
    (c, pseudo)
}

fn is_icmp(l: &Layout) -> bool {
    matches!(
        (l.family, l.proto),
        (Family::Ipv4, ipproto::ICMP) | (Family::Ipv6, ipproto::ICMPV6)
    )
}

/// Rewrite the packet at `b[base..]` (layout `l`) to carry `to`'s
/// addresses and ports (ICMP query: `to.src_port` is the id); `outer` is
/// the enclosing ICMP checksum for an embedded packet, which covers every
/// byte changed here, checksum fields included.
fn retarget(b: &mut [u8], base: usize, l: &Layout, to: &ConnKey, outer: Option<Csum>) {
    let mut da = Delta::default();
    write_words(b, base + l.src_at, &to.src[..l.alen], &mut da);
    write_words(b, base + l.dst_at, &to.dst[..l.alen], &mut da);
    let mut dp = Delta::default();
    let l4 = base + l.l4;
    match l.proto {
        ipproto::TCP | ipproto::UDP if l.l4_len >= 4 => {
            write_words(b, l4, &to.src_port.to_be_bytes(), &mut dp);
            write_words(b, l4 + 2, &to.dst_port.to_be_bytes(), &mut dp);
        }
        _ if is_icmp(l) && l.l4_len >= 6 => {
            write_words(b, l4 + 4, &to.src_port.to_be_bytes(), &mut dp);
        }
        _ => {}
    }
    let mut d_outer = Delta(da.0 + dp.0);
    if let Some(at) = l.ip_csum {
        let c = Csum {
            at: base + at,
            zero_is_none: false,
        };
        let (o, n) = apply(b, c, da);
        if o != n {
            d_outer.word(o, n);
        }
    }
    let (l4c, pseudo) = l4_csum(l, base);
    if let Some(c) = l4c {
        let d = Delta(dp.0 + if pseudo { da.0 } else { 0 });
        let (o, n) = apply(b, c, d);
        if o != n {
            d_outer.word(o, n);
        }
    }
    if let Some(c) = outer {
        apply(b, c, d_outer);
    }
}

/// Check that a packet's own ICMP message is a query (echo etc.).
fn icmp_type(b: &[u8], l: &Layout) -> Result<u8, RewriteError> {
    if l.l4_len < 8 {
        return Err(RewriteError::Truncated);
    }
    Ok(b[l.l4])
}

/// Give the packet in `l3` the addresses and L4 identifiers of `to`
/// (source/destination address, TCP/UDP ports, ICMP/ICMPv6 query id in
/// `to.src_port`; `to`'s protocol and ICMP type are not written).
pub fn rewrite_packet(l3: &mut [u8], to: &ConnKey) -> Result<(), RewriteError> {
    let l = layout(l3, false)?;
    if l.family != to.family {
        return Err(RewriteError::Unsupported);
    }
    match l.proto {
        ipproto::TCP if l.l4_len < 20 => return Err(RewriteError::Truncated),
        ipproto::UDP if l.l4_len < 8 => return Err(RewriteError::Truncated),
        _ if is_icmp(&l) => {
            let ty = icmp_type(l3, &l)?;
            if crate::key::icmp_reply_type(l.family, ty).is_none() {
                return Err(RewriteError::Unsupported);
            }
        }
        _ => {}
    }
    retarget(l3, 0, &l, to, None);
    Ok(())
}

/// Translate an ICMP/ICMPv6 error in `l3` whose embedded packet must become
/// `inner` (the tuple it would carry on the far side of the NAT).
///
/// The embedded addresses and ports (ICMP query: id) are rewritten with
/// their checksums, and the outer header follows the translation as OVS's
/// userspace datapath does: the outer destination becomes `inner`'s source
/// when the embedded source changed, and the outer source becomes
/// `inner`'s destination when the embedded destination changed (an error
/// from a router behind a destination NAT then appears to come from the
/// public address).
pub fn rewrite_related(l3: &mut [u8], inner: &ConnKey) -> Result<(), RewriteError> {
    let l = layout(l3, false)?;
    if l.family != inner.family || !is_icmp(&l) {
        return Err(RewriteError::Unsupported);
    }
    if l.l4_len < 8 {
        return Err(RewriteError::Truncated);
    }
    let base = l.l4 + 8;
    let end = l.l4 + l.l4_len;
    let emb_bytes = l3.get(base..end).ok_or(RewriteError::Truncated)?;
    let e = layout(emb_bytes, true)?;
    if e.family != l.family {
        return Err(RewriteError::Unsupported);
    }
    if e.l4_len < 8 {
        return Err(RewriteError::Truncated);
    }
    let alen = l.alen;
    let src_changed = emb_bytes[e.src_at..e.src_at + alen] != inner.src[..alen];
    let dst_changed = emb_bytes[e.dst_at..e.dst_at + alen] != inner.dst[..alen];

    // The outer ICMP checksum covers the embedded packet.
    let outer = Some(Csum {
        at: l.l4 + 2,
        zero_is_none: false,
    });
    retarget(l3, base, &e, inner, outer);

    // Outer header: the address the NAT owns.
    let ip = l.ip_csum.map(|at| Csum {
        at,
        zero_is_none: false,
    });
    let mut d = Delta::default();
    if dst_changed {
        write_words(l3, l.src_at, &inner.dst[..alen], &mut d);
    }
    if src_changed {
        write_words(l3, l.dst_at, &inner.src[..alen], &mut d);
    }
    if let Some(ip) = ip {
        apply(l3, ip, d);
    }
    // ICMPv6's checksum covers the outer addresses; ICMPv4's does not.
    if let (Family::Ipv6, Some(c)) = (l.family, outer) {
        apply(l3, c, d);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{Builder, Tcp};
    use crate::key::Zone;
    use crate::packet::{parse, tcp_flags, CtPacket, L4Info, PktFlags};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn key_of(l3: &[u8]) -> ConnKey {
        let fam = if l3[0] >> 4 == 4 {
            Family::Ipv4
        } else {
            Family::Ipv6
        };
        let info = parse(
            &CtPacket {
                l3,
                family: fam,
                flags: PktFlags::empty(),
            },
            Zone(0),
        );
        assert_eq!(info.invalid, None, "rewritten packet must parse clean");
        info.key
    }

    /// Checksums recomputed from scratch by smoltcp.
    fn smoltcp_valid(l3: &[u8]) -> bool {
        use smoltcp::phy::ChecksumCapabilities as C;
        use smoltcp::wire::*;
        let caps = C::default();
        if l3[0] >> 4 == 4 {
            let ip = Ipv4Packet::new_checked(l3).unwrap();
            if !ip.verify_checksum() {
                return false;
            }
            let (s, d) = (
                IpAddress::Ipv4(ip.src_addr()),
                IpAddress::Ipv4(ip.dst_addr()),
            );
            match ip.next_header() {
                IpProtocol::Tcp => TcpPacket::new_checked(ip.payload())
                    .unwrap()
                    .verify_checksum(&s, &d),
                IpProtocol::Udp => UdpPacket::new_checked(ip.payload())
                    .unwrap()
                    .verify_checksum(&s, &d),
                IpProtocol::Icmp => Icmpv4Packet::new_checked(ip.payload())
                    .unwrap()
                    .verify_checksum(),
                _ => {
                    let _ = caps;
                    true
                }
            }
        } else {
            let ip = Ipv6Packet::new_checked(l3).unwrap();
            let (s, d) = (
                IpAddress::Ipv6(ip.src_addr()),
                IpAddress::Ipv6(ip.dst_addr()),
            );
            match ip.next_header() {
                IpProtocol::Tcp => TcpPacket::new_checked(ip.payload())
                    .unwrap()
                    .verify_checksum(&s, &d),
                IpProtocol::Udp => UdpPacket::new_checked(ip.payload())
                    .unwrap()
                    .verify_checksum(&s, &d),
                IpProtocol::Icmpv6 => Icmpv6Packet::new_checked(ip.payload())
                    .unwrap()
                    .verify_checksum(&ip.src_addr(), &ip.dst_addr()),
                _ => true,
            }
        }
    }

    #[test]
    fn udp_v4_snat_matches_a_packet_built_with_the_new_tuple() {
        let mut p = Builder::v4(v4("10.0.0.5"), v4("8.8.8.8")).udp(4000, 53, b"query!");
        let to = ConnKey::v4(Zone(0), v4("203.0.113.1"), v4("8.8.8.8"), 17, 5001, 53);
        rewrite_packet(&mut p, &to).unwrap();
        let want = Builder::v4(v4("203.0.113.1"), v4("8.8.8.8")).udp(5001, 53, b"query!");
        assert_eq!(p, want);
        assert!(smoltcp_valid(&p));
        assert_eq!(key_of(&p), to);
    }

    #[test]
    fn udp_zero_checksum_stays_zero() {
        let b = Builder::v4(v4("10.0.0.5"), v4("8.8.8.8")).udp_zero_checksum();
        let mut p = b.udp(4000, 53, b"x");
        let to = ConnKey::v4(Zone(0), v4("203.0.113.1"), v4("8.8.8.8"), 17, 4000, 53);
        rewrite_packet(&mut p, &to).unwrap();
        assert_eq!(get16(&p, 20 + 6), 0);
        let want = Builder::v4(v4("203.0.113.1"), v4("8.8.8.8"))
            .udp_zero_checksum()
            .udp(4000, 53, b"x");
        assert_eq!(p, want);
    }

    #[test]
    fn tcp_v4_and_v6_dnat() {
        let seg = Tcp::new(40000, 80)
            .flags(tcp_flags::SYN)
            .seq(99)
            .mss(1460)
            .payload(b"abc");
        let mut p = Builder::v4(v4("192.0.2.7"), v4("198.51.100.10")).tcp(&seg);
        let to = ConnKey::v4(Zone(0), v4("192.0.2.7"), v4("10.1.0.2"), 6, 40000, 8080);
        rewrite_packet(&mut p, &to).unwrap();
        let mut seg2 = seg.clone();
        seg2.dport = 8080;
        assert_eq!(p, Builder::v4(v4("192.0.2.7"), v4("10.1.0.2")).tcp(&seg2));
        assert!(smoltcp_valid(&p));

        let mut p6 = Builder::v6(v6("2001:db8::7"), v6("2001:db8:1::10")).tcp(&seg);
        let to6 = ConnKey::v6(Zone(0), v6("2001:db8::7"), v6("fd00::2"), 6, 40000, 8080);
        rewrite_packet(&mut p6, &to6).unwrap();
        assert_eq!(p6, Builder::v6(v6("2001:db8::7"), v6("fd00::2")).tcp(&seg2));
        assert!(smoltcp_valid(&p6));
        assert_eq!(key_of(&p6), to6);
    }

    #[test]
    fn udp_v6_behind_extension_headers() {
        use crate::build::Ext;
        let b = Builder::v6(v6("fd00::5"), v6("2001:db8::53"))
            .ext(Ext::HopByHop)
            .ext(Ext::DestOpts);
        let mut p = b.udp(1000, 53, b"q");
        let to = ConnKey::v6(Zone(0), v6("2001:db8::1"), v6("2001:db8::53"), 17, 1024, 53);
        rewrite_packet(&mut p, &to).unwrap();
        let want = Builder::v6(v6("2001:db8::1"), v6("2001:db8::53"))
            .ext(Ext::HopByHop)
            .ext(Ext::DestOpts)
            .udp(1024, 53, b"q");
        assert_eq!(p, want);
    }

    #[test]
    fn icmp_echo_id_is_the_port_v4_and_v6() {
        let mut p = Builder::v4(v4("10.0.0.5"), v4("1.1.1.1")).echo_request(7, 1, b"ping");
        let to = ConnKey::v4(Zone(0), v4("203.0.113.1"), v4("1.1.1.1"), 1, 5000, 8 << 8);
        rewrite_packet(&mut p, &to).unwrap();
        assert_eq!(
            p,
            Builder::v4(v4("203.0.113.1"), v4("1.1.1.1")).echo_request(5000, 1, b"ping")
        );
        assert!(smoltcp_valid(&p));

        // ICMPv6: the pseudo header covers the addresses.
        let mut p6 = Builder::v6(v6("fd00::5"), v6("2001:db8::1")).echo_reply(9, 2, b"pong");
        let to6 = ConnKey::v6(Zone(0), v6("fd00::5"), v6("fd00::99"), 58, 10, 129 << 8);
        rewrite_packet(&mut p6, &to6).unwrap();
        assert_eq!(
            p6,
            Builder::v6(v6("fd00::5"), v6("fd00::99")).echo_reply(10, 2, b"pong")
        );
        assert!(smoltcp_valid(&p6));
    }

    #[test]
    fn errors_leave_the_packet_unchanged() {
        let p0 = Builder::v4(v4("10.0.0.5"), v4("8.8.8.8")).udp(4000, 53, b"q");
        let to = ConnKey::v4(Zone(0), v4("1.2.3.4"), v4("8.8.8.8"), 17, 1, 53);
        for cut in [0, 10, 19, 20, 27] {
            let mut p = p0[..cut].to_vec();
            let before = p.clone();
            assert!(rewrite_packet(&mut p, &to).is_err(), "cut {cut}");
            assert_eq!(p, before);
        }
        // A fragment is not rewritten.
        let mut f = Builder::v4(v4("10.0.0.5"), v4("8.8.8.8"))
            .fragment(8, false)
            .raw(17, &[0; 8]);
        let before = f.clone();
        assert_eq!(rewrite_packet(&mut f, &to), Err(RewriteError::Unsupported));
        assert_eq!(f, before);
        // Family mismatch.
        let to6 = ConnKey::v6(Zone(0), v6("::1"), v6("::2"), 17, 1, 2);
        let mut p = p0.clone();
        assert_eq!(rewrite_packet(&mut p, &to6), Err(RewriteError::Unsupported));
        assert_eq!(p, p0);
    }

    #[test]
    fn icmp_error_about_snat_udp_is_translated_back_to_the_client() {
        // Client 10.0.0.5:4000 SNATed to 203.0.113.1:5001; a router on the
        // far side reports the post-NAT datagram as unreachable.
        let sent = Builder::v4(v4("203.0.113.1"), v4("8.8.8.8")).udp(5001, 53, b"query");
        let mut err = Builder::v4(v4("192.0.2.254"), v4("203.0.113.1")).icmp_error(3, 3, &sent);
        let orig = ConnKey::v4(Zone(0), v4("10.0.0.5"), v4("8.8.8.8"), 17, 4000, 53);
        rewrite_related(&mut err, &orig).unwrap();
        let want_inner = Builder::v4(v4("10.0.0.5"), v4("8.8.8.8")).udp(4000, 53, b"query");
        let want = Builder::v4(v4("192.0.2.254"), v4("10.0.0.5")).icmp_error(3, 3, &want_inner);
        assert_eq!(err, want);
        assert!(smoltcp_valid(&err));
        let info = parse(
            &CtPacket {
                l3: &err,
                family: Family::Ipv4,
                flags: PktFlags::empty(),
            },
            Zone(0),
        );
        assert_eq!(info.invalid, None);
        assert_eq!(info.l4, L4Info::IcmpError { inner: orig });
    }

    #[test]
    fn icmp_error_with_short_tcp_quote_and_dnat_outer_source() {
        // DNAT VIP 198.51.100.10:80 -> backend 10.1.0.2:8080; a router near
        // the backend reports the client's (post-DNAT) segment. Only 8 L4
        // bytes are quoted: no TCP checksum to update.
        let seg = Tcp::new(40000, 8080).flags(tcp_flags::SYN);
        let sent = Builder::v4(v4("192.0.2.7"), v4("10.1.0.2")).tcp(&seg);
        let mut err = Builder::v4(v4("10.1.0.254"), v4("192.0.2.7")).icmp_error(3, 1, &sent[..28]);
        let orig = ConnKey::v4(Zone(0), v4("192.0.2.7"), v4("198.51.100.10"), 6, 40000, 80);
        rewrite_related(&mut err, &orig).unwrap();
        let seg0 = Tcp::new(40000, 80).flags(tcp_flags::SYN);
        let want_inner = Builder::v4(v4("192.0.2.7"), v4("198.51.100.10")).tcp(&seg0);
        // Embedded IPv4 header checksum recomputed from scratch matches.
        assert_eq!(err[28..48], want_inner[..20]);
        assert_eq!(err[48..56], want_inner[20..28]);
        // Outer source: the public address; outer checksums valid.
        let want =
            Builder::v4(v4("198.51.100.10"), v4("192.0.2.7")).icmp_error(3, 1, &want_inner[..28]);
        assert_eq!(err, want);
        assert!(smoltcp_valid(&err));
    }

    #[test]
    fn icmpv6_error_about_snat_echo() {
        let sent = Builder::v6(v6("2001:db8::1"), v6("2001:db8:9::9")).echo_request(5000, 3, b"hi");
        let mut err = Builder::v6(v6("2001:db8:9::1"), v6("2001:db8::1")).icmp_error(1, 0, &sent);
        let orig = ConnKey::v6(Zone(0), v6("fd00::5"), v6("2001:db8:9::9"), 58, 7, 128 << 8);
        rewrite_related(&mut err, &orig).unwrap();
        let want_inner = Builder::v6(v6("fd00::5"), v6("2001:db8:9::9")).echo_request(7, 3, b"hi");
        let want = Builder::v6(v6("2001:db8:9::1"), v6("fd00::5")).icmp_error(1, 0, &want_inner);
        assert_eq!(err, want);
        assert!(smoltcp_valid(&err));
    }

    #[test]
    fn related_rejects_non_errors_and_short_quotes() {
        let mut p = Builder::v4(v4("10.0.0.5"), v4("8.8.8.8")).udp(1, 2, b"");
        let k = ConnKey::v4(Zone(0), v4("1.1.1.1"), v4("8.8.8.8"), 17, 1, 2);
        assert_eq!(rewrite_related(&mut p, &k), Err(RewriteError::Unsupported));
        let sent = Builder::v4(v4("1.1.1.1"), v4("8.8.8.8")).udp(1, 2, b"");
        let mut err = Builder::v4(v4("8.8.8.8"), v4("1.1.1.1")).icmp_error(3, 3, &sent[..24]);
        let before = err.clone();
        assert_eq!(rewrite_related(&mut err, &k), Err(RewriteError::Truncated));
        assert_eq!(err, before);
    }
}
