//! Reading the fragment fields of one IPv4 or IPv6 packet.
//!
//! [`parse`] says whether a packet is a fragment and, if so, where its
//! header, its upper-layer protocol, its place in the datagram and its
//! payload are. It checks what it reads (lengths, version, the IPv4 header
//! checksum unless the NIC did) and never panics.

use std::ops::Range;

use crate::key::{ipproto, Family};
use crate::packet::{csum_add, csum_fold, PktFlags};

pub(crate) const EXT_HOP_BY_HOP: u8 = 0;
pub(crate) const EXT_ROUTING: u8 = 43;
pub(crate) const EXT_FRAGMENT: u8 = 44;
pub(crate) const EXT_DEST_OPTS: u8 = 60;

/// Most IPv6 extension headers walked looking for the fragment header.
const MAX_V6_EXT: usize = 8;

/// The fragment fields of one packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FragHeader {
    pub family: Family,
    /// Addresses (IPv4 in the first four bytes).
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// IPv4 identification or IPv6 fragment identification.
    pub id: u32,
    /// Upper-layer protocol: the IPv4 protocol field, or the next header
    /// of the IPv6 fragment header.
    pub proto: u8,
    /// Offset of the payload in the datagram's fragmentable part, in bytes.
    pub offset: u32,
    /// More fragments follow (IPv4 MF, IPv6 M).
    pub more: bool,
    /// IPv4: header length (options included). IPv6: length of the
    /// unfragmentable part, i.e. the offset of the fragment header.
    pub hdr_len: usize,
    /// IPv6: offset of the next-header byte that names the fragment header
    /// (6 for the base header). IPv4: 0.
    pub nh_at: usize,
    /// Where this fragment's share of the fragmentable part lies in the packet.
    pub payload: Range<usize>,
}

/// What [`parse`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// A whole packet (or an IPv6 atomic fragment, RFC 6946).
    NotFragment,
    Fragment(FragHeader),
    /// Too short, wrong version or length fields, bad IPv4 checksum.
    Malformed,
}

fn be16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(&[h, l]) => u16::from_be_bytes([h, l]),
        _ => 0,
    }
}

/// The fragment fields of `l3` (from the IP header to the end of the frame).
pub(crate) fn parse(l3: &[u8], family: Family, flags: PktFlags) -> Parsed {
    match family {
        Family::Ipv4 => parse_v4(l3, flags),
        Family::Ipv6 => parse_v6(l3),
    }
}

fn parse_v4(b: &[u8], flags: PktFlags) -> Parsed {
    let Some(h) = b.first_chunk::<20>() else {
        return Parsed::Malformed;
    };
    if h[0] >> 4 != 4 {
        return Parsed::Malformed;
    }
    let ff = be16(h, 6);
    if ff & 0x3fff == 0 {
        return Parsed::NotFragment;
    }
    let ihl = (h[0] & 0x0f) as usize * 4;
    let total = be16(h, 2) as usize;
    if ihl < 20 || total < ihl || total > b.len() {
        return Parsed::Malformed;
    }
    if !flags.contains(PktFlags::IP_CSUM_GOOD) && csum_fold(csum_add(0, &b[..ihl])) != 0xffff {
        return Parsed::Malformed;
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src[..4].copy_from_slice(&h[12..16]);
    dst[..4].copy_from_slice(&h[16..20]);
    Parsed::Fragment(FragHeader {
        family: Family::Ipv4,
        src,
        dst,
        id: be16(h, 4) as u32,
        proto: h[9],
        offset: (ff & 0x1fff) as u32 * 8,
        more: ff & 0x2000 != 0,
        hdr_len: ihl,
        nh_at: 0,
        payload: ihl..total,
    })
}

fn parse_v6(b: &[u8]) -> Parsed {
    let Some(h) = b.first_chunk::<40>() else {
        return Parsed::Malformed;
    };
    if h[0] >> 4 != 6 {
        return Parsed::Malformed;
    }
    let end = 40 + be16(h, 4) as usize;
    if end > b.len() {
        return Parsed::Malformed;
    }
    let mut nh = h[6];
    let mut nh_at = 6;
    let mut off = 40;
    for _ in 0..MAX_V6_EXT {
        match nh {
            EXT_HOP_BY_HOP | EXT_ROUTING | EXT_DEST_OPTS => {
                if nh == EXT_HOP_BY_HOP && off != 40 {
                    return Parsed::Malformed;
                }
                let Some(e) = b.get(off..end).and_then(|x| x.first_chunk::<2>()) else {
                    return Parsed::Malformed;
                };
                nh_at = off;
                nh = e[0];
                off += (e[1] as usize + 1) * 8;
                if off > end {
                    return Parsed::Malformed;
                }
            }
            EXT_FRAGMENT => {
                let Some(f) = b.get(off..end).and_then(|x| x.first_chunk::<8>()) else {
                    return Parsed::Malformed;
                };
                let fo = be16(f, 2);
                if fo & 0xfff9 == 0 {
                    // Atomic fragment: processed as a whole packet.
                    return Parsed::NotFragment;
                }
                let mut src = [0u8; 16];
                let mut dst = [0u8; 16];
                src.copy_from_slice(&h[8..24]);
                dst.copy_from_slice(&h[24..40]);
                return Parsed::Fragment(FragHeader {
                    family: Family::Ipv6,
                    src,
                    dst,
                    id: u32::from_be_bytes([f[4], f[5], f[6], f[7]]),
                    proto: f[0],
                    offset: (fo & 0xfff8) as u32,
                    more: fo & 1 != 0,
                    hdr_len: off,
                    nh_at,
                    payload: off + 8..end,
                });
            }
            _ => return Parsed::NotFragment,
        }
    }
    Parsed::NotFragment
}

/// Bytes of upper-layer header the first fragment must hold for
/// conntrack to read the whole header (RFC 1858, RFC 3128, RFC 7112); 0 for
/// protocols conntrack does not look into. `l4` is the first fragment's
/// payload (TCP options count: the data offset is read when present).
pub(crate) fn min_first_payload(proto: u8, l4: &[u8]) -> usize {
    match proto {
        ipproto::TCP => match l4.get(12) {
            Some(&doff) => ((doff >> 4) as usize * 4).max(20),
            None => 20,
        },
        ipproto::UDP | ipproto::ICMP | ipproto::ICMPV6 => 8,
        ipproto::SCTP => 12,
        _ => 0,
    }
}

/// The smallest offset a non-first fragment of `proto` may have: anything
/// below would land on the upper-layer header (RFC 1858's "offset 1" TCP
/// attack, generalised).
pub(crate) fn min_later_offset(proto: u8) -> u32 {
    match proto {
        ipproto::TCP => 20,
        ipproto::SCTP => 12,
        ipproto::UDP | ipproto::ICMP | ipproto::ICMPV6 => 8,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{Builder, Ext};

    fn b4() -> Builder {
        Builder::v4("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
    }
    fn b6() -> Builder {
        Builder::v6(
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        )
    }

    #[test]
    fn v4_fields() {
        let p = b4().ident(0xbeef).fragment(16, true).raw(17, &[7; 24]);
        let Parsed::Fragment(f) = parse(&p, Family::Ipv4, PktFlags::empty()) else {
            panic!("not a fragment");
        };
        assert_eq!((f.id, f.proto, f.offset, f.more), (0xbeef, 17, 16, true));
        assert_eq!((f.hdr_len, f.payload), (20, 20..44));
        assert_eq!(&f.src[..4], &[10, 0, 0, 1]);
        let whole = b4().udp(1, 2, b"x");
        assert_eq!(
            parse(&whole, Family::Ipv4, PktFlags::empty()),
            Parsed::NotFragment
        );
        let bad = b4().fragment(8, true).bad_ip_checksum().raw(17, &[0; 8]);
        assert_eq!(
            parse(&bad, Family::Ipv4, PktFlags::empty()),
            Parsed::Malformed
        );
        // The NIC's verdict is trusted.
        assert!(matches!(
            parse(&bad, Family::Ipv4, PktFlags::IP_CSUM_GOOD),
            Parsed::Fragment(_)
        ));
        assert_eq!(
            parse(&p[..30], Family::Ipv4, PktFlags::empty()),
            Parsed::Malformed
        );
    }

    #[test]
    fn v6_fields_behind_extension_headers() {
        let p = b6()
            .ident(0x77)
            .ext(Ext::HopByHop)
            .ext(Ext::DestOpts)
            .ext(Ext::Fragment {
                offset: 24,
                more: false,
            })
            .raw(58, &[1; 10]);
        let Parsed::Fragment(f) = parse(&p, Family::Ipv6, PktFlags::empty()) else {
            panic!("not a fragment");
        };
        assert_eq!((f.id, f.proto, f.offset, f.more), (0x77, 58, 24, false));
        assert_eq!((f.hdr_len, f.nh_at, f.payload), (56, 48, 64..74));
        let atomic = b6()
            .ext(Ext::Fragment {
                offset: 0,
                more: false,
            })
            .udp(1, 2, b"x");
        assert_eq!(
            parse(&atomic, Family::Ipv6, PktFlags::empty()),
            Parsed::NotFragment
        );
        assert_eq!(
            parse(&p[..60], Family::Ipv6, PktFlags::empty()),
            Parsed::Malformed
        );
    }
}
