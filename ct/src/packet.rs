//! What conntrack reads from a packet: the L3 bytes in, a [`PacketInfo`] out.
//!
//! The datapath hands conntrack the packet from its IP header on
//! ([`CtPacket`]); [`parse`] does one length check per layer and extracts the
//! connection key, the TCP segment fields the window tracker needs, or the
//! embedded header of an ICMP error. It never panics: anything malformed comes
//! back with [`PacketInfo::invalid`] set, and the packet is reported `+inv`.

use bitflags::bitflags;

use crate::key::{icmp_reply_type, ipproto, ConnKey, Family, Zone};

bitflags! {
    /// Per-packet facts the datapath (or NIC) already knows.
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
    pub struct PktFlags: u8 {
        /// The NIC validated the L4 checksum (DPDK `RTE_MBUF_F_RX_L4_CKSUM_GOOD`).
        const L4_CSUM_GOOD = 0x01;
        /// The NIC validated the IPv4 header checksum.
        const IP_CSUM_GOOD = 0x02;
        /// A `notrack` action marked this packet: conntrack leaves it alone.
        const NOTRACK = 0x04;
    }
}

/// One packet as conntrack sees it.
#[derive(Clone, Copy, Debug)]
pub struct CtPacket<'a> {
    /// From the first byte of the IPv4/IPv6 header to the end of the frame.
    pub l3: &'a [u8],
    pub family: Family,
    pub flags: PktFlags,
}

/// TCP flag bits as on the wire.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// The fields of a TCP segment the state machine and window tracker use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpSeg {
    pub seq: u32,
    pub ack: u32,
    /// Raw (unscaled) window field.
    pub win: u16,
    /// Flag byte (see [`tcp_flags`]).
    pub flags: u8,
    /// Payload bytes (IP payload minus TCP header).
    pub payload_len: u32,
    /// Window-scale option value if present (only meaningful on SYNs).
    pub wscale: Option<u8>,
    /// SACK-permitted option present.
    pub sack_perm: bool,
}

/// Why a packet cannot be tracked; reported as `+inv` and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Invalid {
    /// A header is shorter than its length field or the minimum.
    Truncated,
    /// IP version or header length field is wrong.
    BadIpHeader,
    BadIpChecksum,
    BadL4Checksum,
    /// A fragment that reached conntrack whole-datagram reassembly did not
    /// take ([`crate::frag`] is off for its family, or rejected it).
    Fragment,
    /// TCP data offset or flag combination impossible.
    BadTcpHeader,
    /// ICMP message conntrack cannot relate or track.
    BadIcmp,
}

/// What an L4 header says, beyond the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum L4Info {
    /// Protocol without per-segment state (UDP, SCTP, GRE, ...).
    #[default]
    Plain,
    Tcp(TcpSeg),
    /// ICMP/ICMPv6 echo (or other query) request or reply; id/type/code in the key.
    IcmpQuery,
    /// ICMP/ICMPv6 error; `inner` is the key of the embedded (offending) packet
    /// as it was sent, in the same zone.
    IcmpError {
        inner: ConnKey,
    },
}

/// Parse result for one packet.
#[derive(Clone, Copy, Debug, Default)]
pub struct PacketInfo {
    pub key: ConnKey,
    pub l4: L4Info,
    pub invalid: Option<Invalid>,
    /// Whether this parse computed the L4 checksum in software (so the
    /// datapath may set [`PktFlags::L4_CSUM_GOOD`] and not pay again).
    pub l4_csum_checked: bool,
}

/// Parse the packet's L3/L4 headers into a [`PacketInfo`] for `zone`.
///
/// One length check per layer, then fixed-offset reads. Checksums are
/// verified in software unless [`PktFlags`] says the NIC already did. An
/// invalid packet still carries as much of its key as could be read, for
/// counters; [`PacketInfo::invalid`] decides.
///
/// Rules beyond the obvious:
/// - IPv4: trailing bytes past the total length (Ethernet padding) are
///   ignored; any fragment is [`Invalid::Fragment`] (a first fragment still
///   gets its ports in the key). The header checksum is checked before the
///   fragment bits.
/// - IPv6: bytes past the payload length are ignored. At most 8 extension
///   headers (hop-by-hop only first); an atomic fragment header (offset 0,
///   M = 0) is skipped, a real fragment is [`Invalid::Fragment`]. Jumbograms
///   (payload length 0) are not supported.
/// - TCP: data offset < 5 is [`Invalid::BadTcpHeader`], past the segment
///   [`Invalid::Truncated`]; so are impossible flag combinations (SYN with
///   FIN or RST; none of SYN/ACK/RST; FIN or URG without ACK). Options are
///   read on SYNs only; a window scale above 14 is reported as 14.
/// - UDP: the length field must be in `8..=` the IP payload; the checksum
///   covers the UDP length (anything after it is trailer).
/// - ICMP errors: the key is the outer packet's addresses with `src_port` 0
///   and `dst_port` `type << 8 | code` (so are unknown types, for counters);
///   [`L4Info::IcmpError::inner`] is the embedded packet's key. The outer
///   checksum is verified; embedded ones are not. An embedded non-first
///   fragment, an embedded ICMP message other than a query, or fewer than
///   8 embedded L4 bytes is [`Invalid::BadIcmp`].
/// - Protocol numbers ICMP in IPv6 and ICMPv6 in IPv4 are "other protocols".
#[inline]
pub fn parse(pkt: &CtPacket<'_>, zone: Zone) -> PacketInfo {
    let mut info = PacketInfo::default();
    parse_into(pkt, zone, &mut info);
    info
}

/// [`parse`] into a caller's `PacketInfo` (the batch array: no copy).
#[inline]
pub fn parse_into(pkt: &CtPacket<'_>, zone: Zone, info: &mut PacketInfo) {
    *info = PacketInfo {
        key: ConnKey {
            zone,
            family: pkt.family,
            ..Default::default()
        },
        ..Default::default()
    };
    let r = match pkt.family {
        Family::Ipv4 => parse_v4(pkt.l3, pkt.flags, info),
        Family::Ipv6 => parse_v6(pkt.l3, pkt.flags, info),
    };
    if let Err(e) = r {
        info.invalid = Some(e);
    }
}

/// Most IPv6 extension headers walked before giving up.
const MAX_V6_EXT: usize = 8;

const EXT_HOP_BY_HOP: u8 = 0;
const EXT_ROUTING: u8 = 43;
const EXT_FRAGMENT: u8 = 44;
const EXT_AH: u8 = 51;
const EXT_DEST_OPTS: u8 = 60;

#[inline(always)]
fn be16(hi: u8, lo: u8) -> u16 {
    u16::from_be_bytes([hi, lo])
}

#[inline(always)]
fn be32(b: &[u8; 4]) -> u32 {
    u32::from_be_bytes(*b)
}

/// The first `N` bytes of `b` as an array, or `err` if `b` is shorter.
#[inline(always)]
fn head<const N: usize>(b: &[u8], err: Invalid) -> Result<&[u8; N], Invalid> {
    b.first_chunk::<N>().ok_or(err)
}

/// Four bytes at constant offset `at` of a fixed-size header (folds to a
/// plain load; the fallback is unreachable for the offsets used).
#[inline(always)]
fn sub4<const N: usize>(b: &[u8; N], at: usize) -> &[u8; 4] {
    b.get(at..)
        .and_then(|x| x.first_chunk::<4>())
        .unwrap_or(&[0; 4])
}

// ---------------------------------------------------------------------------
// One's-complement checksum.

/// Add `data` (as big-endian 16-bit words, odd tail padded with zero) to the
/// running sum `acc`; reduce with [`csum_fold`].
///
/// The one's-complement sum does not care about byte order (RFC 1071): the
/// data is summed as native-endian 32-bit words into a 64-bit accumulator (a
/// loop the compiler vectorizes; no carries to propagate), folded, and
/// byte-swapped into network order at the end.
#[inline]
pub(crate) fn csum_add(acc: u64, data: &[u8]) -> u64 {
    let mut s = 0u64;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        if let Some(w) = w.first_chunk::<4>() {
            s += u32::from_ne_bytes(*w) as u64;
        }
    }
    let rest = words.remainder();
    if let Some((w, r)) = rest.split_first_chunk::<2>() {
        s += u16::from_ne_bytes(*w) as u64;
        if let Some(&x) = r.first() {
            s += u16::from_ne_bytes([x, 0]) as u64;
        }
    } else if let Some(&x) = rest.first() {
        s += u16::from_ne_bytes([x, 0]) as u64;
    }
    acc + u16::from_be(csum_fold(s)) as u64
}

/// Reduce a 64-bit running sum to 16 bits with end-around carries.
#[inline]
pub(crate) fn csum_fold(acc: u64) -> u16 {
    let mut s = (acc >> 32) + (acc & 0xffff_ffff);
    s = (s >> 32) + (s & 0xffff_ffff);
    s = (s >> 16) + (s & 0xffff);
    s = (s >> 16) + (s & 0xffff);
    s as u16
}

/// Pseudo-header sum for IPv4 (`addrs` are the 8 address bytes).
#[inline]
fn pseudo_v4(addrs: &[u8; 8], proto: u8, len: usize) -> u64 {
    let w = u64::from_be_bytes(*addrs);
    (w >> 32) + (w & 0xffff_ffff) + proto as u64 + len as u64
}

/// Pseudo-header sum for IPv6 (`addrs` are the 32 address bytes).
#[inline]
fn pseudo_v6(addrs: &[u8; 32], proto: u8, len: usize) -> u64 {
    csum_add(proto as u64 + len as u64, addrs)
}

/// Whether `data` with pseudo-header sum `pseudo` sums to all-ones.
#[inline]
fn csum_ok(pseudo: u64, data: &[u8]) -> bool {
    csum_fold(csum_add(pseudo, data)) == 0xffff
}

// ---------------------------------------------------------------------------
// IPv4.

#[inline]
fn parse_v4(b: &[u8], flags: PktFlags, info: &mut PacketInfo) -> Result<(), Invalid> {
    let h = head::<20>(b, Invalid::Truncated)?;
    if h[0] >> 4 != 4 {
        return Err(Invalid::BadIpHeader);
    }
    let key = &mut info.key;
    key.src[..4].copy_from_slice(sub4(h, 12));
    key.dst[..4].copy_from_slice(sub4(h, 16));
    key.proto = h[9];
    let ihl = (h[0] & 0x0f) as usize * 4;
    let total = be16(h[2], h[3]) as usize;
    if ihl < 20 || total < ihl {
        return Err(Invalid::BadIpHeader);
    }
    if total > b.len() {
        return Err(Invalid::Truncated);
    }
    // total <= b.len() and ihl <= total: both slices are in bounds.
    let hdr = &b[..ihl];
    let l4 = &b[ihl..total];
    let frag = be16(h[6], h[7]) & 0x3fff;
    if !flags.contains(PktFlags::IP_CSUM_GOOD) && csum_fold(csum_add(0, hdr)) != 0xffff {
        peek_l4(l4, &mut info.key);
        return Err(Invalid::BadIpChecksum);
    }
    if frag != 0 {
        // A first fragment still shows its ports (for counters).
        if frag & 0x1fff == 0 {
            peek_l4(l4, &mut info.key);
        }
        return Err(Invalid::Fragment);
    }
    let addrs = h[12..20].first_chunk::<8>().unwrap_or(&[0; 8]);
    let pseudo = |proto: u8, len: usize| pseudo_v4(addrs, proto, len);
    parse_l4(l4, h[9], Family::Ipv4, flags, pseudo, info)
}

// ---------------------------------------------------------------------------
// IPv6.

/// Where an IPv6 extension-header walk ended.
pub(crate) struct V6Walk {
    /// Upper-layer protocol.
    pub(crate) proto: u8,
    /// Offset of the upper-layer header.
    pub(crate) off: usize,
    /// A fragment header with offset != 0 or M set was seen;
    /// `Some(first)` where `first` says whether the fragment offset is 0.
    pub(crate) frag: Option<bool>,
}

/// Walk the extension headers of the IPv6 packet `b` (header included),
/// bounded by `end`, starting with next header `nh`.
#[inline]
pub(crate) fn walk_v6(b: &[u8], end: usize, mut nh: u8) -> Result<V6Walk, Invalid> {
    let mut off = 40;
    let mut frag = None;
    for _ in 0..MAX_V6_EXT {
        let len = match nh {
            EXT_HOP_BY_HOP | EXT_ROUTING | EXT_DEST_OPTS | EXT_AH | EXT_FRAGMENT => {
                let e = b
                    .get(off..end)
                    .and_then(|x| x.first_chunk::<8>())
                    .ok_or(Invalid::Truncated)?;
                let len = match nh {
                    EXT_HOP_BY_HOP if off != 40 => return Err(Invalid::BadIpHeader),
                    EXT_FRAGMENT => {
                        let fo = be16(e[2], e[3]);
                        if fo & 0xfff9 != 0 {
                            frag = Some(fo & 0xfff8 == 0);
                        }
                        8
                    }
                    EXT_AH => (e[1] as usize + 2) * 4,
                    _ => (e[1] as usize + 1) * 8,
                };
                nh = e[0];
                len
            }
            _ => {
                return Ok(V6Walk {
                    proto: nh,
                    off,
                    frag,
                })
            }
        };
        off += len;
        if off > end {
            return Err(Invalid::Truncated);
        }
    }
    match nh {
        EXT_HOP_BY_HOP | EXT_ROUTING | EXT_DEST_OPTS | EXT_AH | EXT_FRAGMENT => {
            Err(Invalid::BadIpHeader)
        }
        _ => Ok(V6Walk {
            proto: nh,
            off,
            frag,
        }),
    }
}

#[inline]
fn parse_v6(b: &[u8], flags: PktFlags, info: &mut PacketInfo) -> Result<(), Invalid> {
    let h = head::<40>(b, Invalid::Truncated)?;
    if h[0] >> 4 != 6 {
        return Err(Invalid::BadIpHeader);
    }
    let addrs = h[8..40].first_chunk::<32>().unwrap_or(&[0; 32]);
    info.key.src.copy_from_slice(&addrs[..16]);
    info.key.dst.copy_from_slice(&addrs[16..]);
    info.key.proto = h[6];
    let end = 40 + be16(h[4], h[5]) as usize;
    if end > b.len() {
        return Err(Invalid::Truncated);
    }
    let (proto, off) = match h[6] {
        nh @ (EXT_HOP_BY_HOP | EXT_ROUTING | EXT_FRAGMENT | EXT_AH | EXT_DEST_OPTS) => {
            let w = walk_v6(b, end, nh)?;
            info.key.proto = w.proto;
            if let Some(first) = w.frag {
                if first {
                    if let Some(l4) = b.get(w.off..end) {
                        peek_l4(l4, &mut info.key);
                    }
                }
                return Err(Invalid::Fragment);
            }
            (w.proto, w.off)
        }
        // Fast path: no extension headers.
        p => (p, 40),
    };
    let l4 = b.get(off..end).ok_or(Invalid::Truncated)?;
    let pseudo = |proto: u8, len: usize| pseudo_v6(addrs, proto, len);
    parse_l4(l4, proto, Family::Ipv6, flags, pseudo, info)
}

// ---------------------------------------------------------------------------
// L4.

/// Best-effort ports (or ICMP id/type/code) of an L4 header we will not
/// otherwise parse (fragments, bad IP checksum), for counters.
fn peek_l4(l4: &[u8], key: &mut ConnKey) {
    match key.proto {
        ipproto::TCP | ipproto::UDP | ipproto::SCTP => {
            if let Some(p) = l4.first_chunk::<4>() {
                key.src_port = be16(p[0], p[1]);
                key.dst_port = be16(p[2], p[3]);
            }
        }
        ipproto::ICMP | ipproto::ICMPV6 if key.is_icmp() => {
            if let Some(p) = l4.first_chunk::<8>() {
                key.dst_port = be16(p[0], p[1]);
                if icmp_reply_type(key.family, p[0]).is_some() {
                    key.src_port = be16(p[4], p[5]);
                }
            }
        }
        _ => {}
    }
}

#[inline]
fn parse_l4(
    l4: &[u8],
    proto: u8,
    family: Family,
    flags: PktFlags,
    pseudo: impl Fn(u8, usize) -> u64,
    info: &mut PacketInfo,
) -> Result<(), Invalid> {
    let verify = !flags.contains(PktFlags::L4_CSUM_GOOD);
    match (proto, family) {
        (ipproto::TCP, _) => {
            let h = head::<20>(l4, Invalid::Truncated)?;
            info.key.src_port = be16(h[0], h[1]);
            info.key.dst_port = be16(h[2], h[3]);
            let doff = (h[12] >> 4) as usize * 4;
            if doff < 20 {
                return Err(Invalid::BadTcpHeader);
            }
            if doff > l4.len() {
                return Err(Invalid::Truncated);
            }
            let fl = h[13];
            let mut seg = TcpSeg {
                seq: be32(sub4(h, 4)),
                ack: be32(sub4(h, 8)),
                win: be16(h[14], h[15]),
                flags: fl,
                payload_len: (l4.len() - doff) as u32,
                wscale: None,
                sack_perm: false,
            };
            if fl & tcp_flags::SYN != 0 && doff > 20 {
                tcp_syn_options(l4.get(20..doff).unwrap_or(&[]), &mut seg);
            }
            info.l4 = L4Info::Tcp(seg);
            if tcp_flags_impossible(fl) {
                return Err(Invalid::BadTcpHeader);
            }
            if verify {
                info.l4_csum_checked = true;
                if !csum_ok(pseudo(proto, l4.len()), l4) {
                    return Err(Invalid::BadL4Checksum);
                }
            }
            Ok(())
        }
        (ipproto::UDP, _) => {
            let h = head::<8>(l4, Invalid::Truncated)?;
            info.key.src_port = be16(h[0], h[1]);
            info.key.dst_port = be16(h[2], h[3]);
            let ulen = be16(h[4], h[5]) as usize;
            if ulen < 8 || ulen > l4.len() {
                return Err(Invalid::Truncated);
            }
            let csum = be16(h[6], h[7]);
            if verify {
                if csum == 0 {
                    // No checksum: allowed on IPv4, forbidden on IPv6.
                    if family == Family::Ipv6 {
                        return Err(Invalid::BadL4Checksum);
                    }
                } else {
                    let dgram = l4.get(..ulen).unwrap_or(l4);
                    info.l4_csum_checked = true;
                    if !csum_ok(pseudo(proto, ulen), dgram) {
                        return Err(Invalid::BadL4Checksum);
                    }
                }
            }
            Ok(())
        }
        (ipproto::SCTP, _) => {
            let h = head::<12>(l4, Invalid::Truncated)?;
            info.key.src_port = be16(h[0], h[1]);
            info.key.dst_port = be16(h[2], h[3]);
            Ok(())
        }
        (ipproto::ICMP, Family::Ipv4) => {
            let h = head::<8>(l4, Invalid::Truncated)?;
            let (ty, code) = (h[0], h[1]);
            info.key.dst_port = be16(ty, code);
            let query = match ty {
                0 | 8 | 13..=18 => true,
                3 | 4 | 5 | 11 | 12 => false,
                _ => return Err(Invalid::BadIcmp),
            };
            if verify {
                info.l4_csum_checked = true;
                if !csum_ok(0, l4) {
                    return Err(Invalid::BadL4Checksum);
                }
            }
            if query {
                info.key.src_port = be16(h[4], h[5]);
                info.l4 = L4Info::IcmpQuery;
            } else {
                let inner = icmp_inner_v4(l4.get(8..).unwrap_or(&[]), info.key.zone)?;
                info.l4 = L4Info::IcmpError { inner };
            }
            Ok(())
        }
        (ipproto::ICMPV6, Family::Ipv6) => {
            let h = head::<8>(l4, Invalid::Truncated)?;
            let (ty, code) = (h[0], h[1]);
            info.key.dst_port = be16(ty, code);
            let query = match ty {
                128 | 129 => true,
                1..=4 => false,
                _ => return Err(Invalid::BadIcmp),
            };
            if verify {
                info.l4_csum_checked = true;
                if !csum_ok(pseudo(proto, l4.len()), l4) {
                    return Err(Invalid::BadL4Checksum);
                }
            }
            if query {
                info.key.src_port = be16(h[4], h[5]);
                info.l4 = L4Info::IcmpQuery;
            } else {
                let inner = icmp_inner_v6(l4.get(8..).unwrap_or(&[]), info.key.zone)?;
                info.l4 = L4Info::IcmpError { inner };
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Flag combinations no TCP stack sends: SYN with FIN or RST; none of
/// SYN/ACK/RST (null scan, bare FIN, ...); FIN or URG without ACK.
#[inline]
fn tcp_flags_impossible(fl: u8) -> bool {
    use tcp_flags::*;
    (fl & SYN != 0 && fl & (FIN | RST) != 0)
        || fl & (SYN | ACK | RST) == 0
        || (fl & ACK == 0 && fl & (FIN | URG) != 0)
}

/// Window scale (kind 3) and SACK-permitted (kind 4) from SYN options. Stops
/// at end-of-list or at the first option whose length is impossible.
fn tcp_syn_options(opts: &[u8], seg: &mut TcpSeg) {
    for opt in options(opts) {
        match (opt[0], opt.len()) {
            // RFC 7323: a shift above 14 is used as 14.
            (3, 3) => seg.wscale = Some(opt[2].min(14)),
            (4, 2) => seg.sack_perm = true,
            _ => {}
        }
    }
}

/// The options of an IPv4 header or TCP header (both kind-length-value,
/// with end-of-list 0 and one-byte no-op 1), each as its whole bytes from
/// the kind on; no-ops are skipped. Stops at end-of-list or at the first
/// option whose length is impossible (under 2 or past the end).
pub(crate) fn options(opts: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut i = 0;
    std::iter::from_fn(move || loop {
        match *opts.get(i)? {
            0 => return None,
            1 => i += 1,
            _ => {
                let len = *opts.get(i + 1)? as usize;
                if len < 2 || i + len > opts.len() {
                    return None;
                }
                let opt = &opts[i..i + len];
                i += len;
                return Some(opt);
            }
        }
    })
}

/// Key of an L4 header embedded in an ICMP error (`l4` holds at least the
/// 8 bytes the caller checked). `family` is the embedded packet's.
#[inline]
fn inner_ports(l4: &[u8; 8], key: &mut ConnKey) -> Result<(), Invalid> {
    match key.proto {
        ipproto::TCP | ipproto::UDP | ipproto::SCTP => {
            key.src_port = be16(l4[0], l4[1]);
            key.dst_port = be16(l4[2], l4[3]);
        }
        ipproto::ICMP | ipproto::ICMPV6 if key.is_icmp() => {
            // Only queries can be related; errors are never sent about
            // errors, and other types carry no id to match.
            if icmp_reply_type(key.family, l4[0]).is_none() {
                return Err(Invalid::BadIcmp);
            }
            key.src_port = be16(l4[4], l4[5]);
            key.dst_port = be16(l4[0], l4[1]);
        }
        _ => {}
    }
    Ok(())
}

/// The key of the IPv4 packet embedded in an ICMP error.
fn icmp_inner_v4(b: &[u8], zone: Zone) -> Result<ConnKey, Invalid> {
    let h = head::<20>(b, Invalid::BadIcmp)?;
    let ihl = (h[0] & 0x0f) as usize * 4;
    if h[0] >> 4 != 4 || ihl < 20 {
        return Err(Invalid::BadIcmp);
    }
    // A non-first fragment has no L4 header to relate.
    if be16(h[6], h[7]) & 0x1fff != 0 {
        return Err(Invalid::BadIcmp);
    }
    let l4 = b
        .get(ihl..)
        .and_then(|x| x.first_chunk::<8>())
        .ok_or(Invalid::BadIcmp)?;
    let mut key = ConnKey {
        zone,
        family: Family::Ipv4,
        proto: h[9],
        ..Default::default()
    };
    key.src[..4].copy_from_slice(sub4(h, 12));
    key.dst[..4].copy_from_slice(sub4(h, 16));
    inner_ports(l4, &mut key)?;
    Ok(key)
}

/// The key of the IPv6 packet embedded in an ICMPv6 error.
fn icmp_inner_v6(b: &[u8], zone: Zone) -> Result<ConnKey, Invalid> {
    let h = head::<40>(b, Invalid::BadIcmp)?;
    if h[0] >> 4 != 6 {
        return Err(Invalid::BadIcmp);
    }
    // The embedded packet is cut short: walk what is there, not its length.
    let w = walk_v6(b, b.len(), h[6]).map_err(|_| Invalid::BadIcmp)?;
    if w.frag == Some(false) {
        return Err(Invalid::BadIcmp);
    }
    let l4 = b
        .get(w.off..)
        .and_then(|x| x.first_chunk::<8>())
        .ok_or(Invalid::BadIcmp)?;
    let mut key = ConnKey {
        zone,
        family: Family::Ipv6,
        proto: w.proto,
        ..Default::default()
    };
    key.src.copy_from_slice(&h[8..24]);
    key.dst.copy_from_slice(&h[24..40]);
    inner_ports(l4, &mut key)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::tcp_flags::*;
    use super::*;
    use crate::build::{ethernet, Builder, Ext, Tcp};
    use std::net::{Ipv4Addr, Ipv6Addr};

    const Z: Zone = Zone(5);
    const ALL_GOOD: PktFlags = PktFlags::L4_CSUM_GOOD.union(PktFlags::IP_CSUM_GOOD);

    fn s4() -> Ipv4Addr {
        "10.1.0.1".parse().unwrap()
    }
    fn d4() -> Ipv4Addr {
        "10.2.0.2".parse().unwrap()
    }
    fn s6() -> Ipv6Addr {
        "fd00::1".parse().unwrap()
    }
    fn d6() -> Ipv6Addr {
        "fd00:2::2".parse().unwrap()
    }
    fn b4() -> Builder {
        Builder::v4(s4(), d4())
    }
    fn b6() -> Builder {
        Builder::v6(s6(), d6())
    }
    fn k4(proto: u8, sp: u16, dp: u16) -> ConnKey {
        ConnKey::v4(Z, s4(), d4(), proto, sp, dp)
    }
    fn k6(proto: u8, sp: u16, dp: u16) -> ConnKey {
        ConnKey::v6(Z, s6(), d6(), proto, sp, dp)
    }
    fn pf(l3: &[u8], family: Family, flags: PktFlags) -> PacketInfo {
        parse(&CtPacket { l3, family, flags }, Z)
    }
    fn p4(l3: &[u8]) -> PacketInfo {
        pf(l3, Family::Ipv4, PktFlags::empty())
    }
    fn p6(l3: &[u8]) -> PacketInfo {
        pf(l3, Family::Ipv6, PktFlags::empty())
    }
    fn p4f(l3: &[u8], flags: PktFlags) -> PacketInfo {
        pf(l3, Family::Ipv4, flags)
    }
    fn p6f(l3: &[u8], flags: PktFlags) -> PacketInfo {
        pf(l3, Family::Ipv6, flags)
    }
    fn tcp_seg(i: &PacketInfo) -> TcpSeg {
        match i.l4 {
            L4Info::Tcp(s) => s,
            other => panic!("not TCP: {other:?}"),
        }
    }
    fn inner(i: &PacketInfo) -> ConnKey {
        match i.l4 {
            L4Info::IcmpError { inner } => inner,
            other => panic!("not an ICMP error: {other:?} ({:?})", i.invalid),
        }
    }
    /// Raw TCP header bytes (checksum left 0; parse with L4_CSUM_GOOD).
    fn raw_tcp(doff_words: u8, flags: u8, opts: &[u8]) -> Vec<u8> {
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&1111u16.to_be_bytes());
        t[2..4].copy_from_slice(&80u16.to_be_bytes());
        t[12] = doff_words << 4;
        t[13] = flags;
        t.extend_from_slice(opts);
        t
    }

    // ---- checksum primitive -------------------------------------------------

    fn naive_sum(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            s += w as u32;
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn csum_matches_naive_sum_at_all_lengths() {
        let data: Vec<u8> = (0..300u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 0x80)
            .collect();
        for len in 0..data.len() {
            let got = csum_fold(csum_add(0, &data[..len]));
            let want = naive_sum(&data[..len]);
            // 0 and 0xffff are the same one's-complement value.
            assert!(
                got == want || (got | want) == 0xffff && (got & want) == 0,
                "len {len}: {got:#x} vs {want:#x}"
            );
        }
        assert_eq!(csum_fold(csum_add(0, &[0xff; 64])), 0xffff);
        assert_eq!(csum_fold(u64::MAX), 0xffff);
    }

    // ---- IPv4 ---------------------------------------------------------------

    #[test]
    fn v4_udp_key() {
        let i = p4(&b4().udp(1000, 53, b"hello"));
        assert_eq!(i.invalid, None);
        assert_eq!(i.key, k4(17, 1000, 53));
        assert_eq!(i.l4, L4Info::Plain);
        assert!(i.l4_csum_checked);
    }

    #[test]
    fn v4_header_checks() {
        let p = b4().udp(1, 2, b"x");
        assert_eq!(p4(&[]).invalid, Some(Invalid::Truncated));
        assert_eq!(p4(&p[..19]).invalid, Some(Invalid::Truncated));
        let mut bad = p.clone();
        bad[0] = 0x55;
        assert_eq!(p4f(&bad, ALL_GOOD).invalid, Some(Invalid::BadIpHeader));
        bad[0] = 0x44; // IHL 4
        assert_eq!(p4f(&bad, ALL_GOOD).invalid, Some(Invalid::BadIpHeader));
        bad[0] = 0x4f; // IHL 15: 60 bytes > total length 29
        assert_eq!(p4f(&bad, ALL_GOOD).invalid, Some(Invalid::BadIpHeader));
        let mut bad = p.clone();
        bad[2..4].copy_from_slice(&19u16.to_be_bytes()); // total < IHL
        assert_eq!(p4f(&bad, ALL_GOOD).invalid, Some(Invalid::BadIpHeader));
        bad[2..4].copy_from_slice(&(p.len() as u16 + 1).to_be_bytes()); // total > buffer
        assert_eq!(p4f(&bad, ALL_GOOD).invalid, Some(Invalid::Truncated));
        // The family decides: IPv6 bytes handed in as IPv4 are a bad header.
        assert_eq!(
            p4(&b6().udp(1, 2, b"x")).invalid,
            Some(Invalid::BadIpHeader)
        );
    }

    #[test]
    fn v4_options_are_skipped() {
        let p = b4().v4_options(&[1, 1, 1, 1, 1, 0]).udp(7, 9, b"opt");
        assert_eq!(p[0], 0x47);
        let i = p4(&p);
        assert_eq!((i.invalid, i.key), (None, k4(17, 7, 9)));
    }

    #[test]
    fn v4_trailing_padding_is_ignored() {
        let l3 = b4().tcp(&Tcp::new(1, 2));
        let frame = ethernet(&l3);
        assert!(frame.len() - 14 > l3.len());
        let i = p4(&frame[14..]);
        assert_eq!(i.invalid, None);
        assert_eq!(tcp_seg(&i).payload_len, 0);
        let i = p4(&ethernet(&b4().udp(1, 2, b""))[14..]);
        assert_eq!(i.invalid, None);
    }

    #[test]
    fn v4_ip_checksum() {
        let p = b4().bad_ip_checksum().udp(1000, 53, b"x");
        let i = p4(&p);
        assert_eq!(i.invalid, Some(Invalid::BadIpChecksum));
        assert_eq!(i.key, k4(17, 1000, 53), "key still read for counters");
        let i = p4f(&p, PktFlags::IP_CSUM_GOOD);
        assert_eq!(i.invalid, None);
    }

    #[test]
    fn v4_fragments() {
        let first = b4().fragment(0, true).udp(1000, 53, b"x");
        let i = p4(&first);
        assert_eq!(i.invalid, Some(Invalid::Fragment));
        assert_eq!(i.key, k4(17, 1000, 53));
        assert!(!i.l4_csum_checked);
        let later = b4().fragment(1480, false).udp(1000, 53, b"x");
        let i = p4(&later);
        assert_eq!(i.invalid, Some(Invalid::Fragment));
        assert_eq!(i.key, k4(17, 0, 0));
        let middle = b4().fragment(8, true).raw(17, &[0xaa; 16]);
        assert_eq!(p4f(&middle, ALL_GOOD).invalid, Some(Invalid::Fragment));
        let df = b4().dont_frag().udp(1000, 53, b"x");
        assert_eq!(p4(&df).invalid, None);
    }

    #[test]
    fn other_protocols_have_no_ports() {
        let i = p4(&b4().raw(47, &[0, 0, 0x08, 0, 1, 2, 3, 4]));
        assert_eq!(
            (i.invalid, i.key, i.l4),
            (None, k4(47, 0, 0), L4Info::Plain)
        );
        assert!(!i.l4_csum_checked);
        // ICMPv6 over IPv4 is just an unknown protocol.
        let i = p4(&b4().raw(58, &[128, 0, 0, 0, 0, 1, 0, 1]));
        assert_eq!((i.invalid, i.key), (None, k4(58, 0, 0)));
        let i = p6(&b6().raw(1, &[8, 0, 0, 0, 0, 1, 0, 1]));
        assert_eq!((i.invalid, i.key), (None, k6(1, 0, 0)));
    }

    #[test]
    fn sctp_ports() {
        let mut sctp = vec![0u8; 12];
        sctp[0..2].copy_from_slice(&5000u16.to_be_bytes());
        sctp[2..4].copy_from_slice(&5001u16.to_be_bytes());
        let i = p4(&b4().raw(132, &sctp));
        assert_eq!(
            (i.invalid, i.key, i.l4),
            (None, k4(132, 5000, 5001), L4Info::Plain)
        );
        let i = p6(&b6().raw(132, &sctp));
        assert_eq!((i.invalid, i.key), (None, k6(132, 5000, 5001)));
        assert_eq!(
            p4(&b4().raw(132, &sctp[..11])).invalid,
            Some(Invalid::Truncated)
        );
    }

    // ---- UDP ----------------------------------------------------------------

    #[test]
    fn udp_lengths() {
        assert_eq!(
            p4f(&b4().raw(17, &[0, 1, 0, 2, 0, 8, 0]), ALL_GOOD).invalid,
            Some(Invalid::Truncated)
        );
        // Length field beyond the IP payload.
        let l4 = [0, 1, 0, 2, 0, 20, 0, 0, 1, 2, 3, 4];
        let i = p4f(&b4().raw(17, &l4), ALL_GOOD);
        assert_eq!((i.invalid, i.key), (Some(Invalid::Truncated), k4(17, 1, 2)));
        // Length field below the header size.
        let l4 = [0, 1, 0, 2, 0, 7, 0, 0];
        assert_eq!(
            p4f(&b4().raw(17, &l4), ALL_GOOD).invalid,
            Some(Invalid::Truncated)
        );
        // Shorter than the IP payload: the rest is trailer, not covered.
        let mut p = b4().udp(1, 2, b"abcd");
        p.extend_from_slice(&[9, 9, 9]);
        let tot = p.len() as u16;
        p[2..4].copy_from_slice(&tot.to_be_bytes());
        let i = p4f(&p, PktFlags::IP_CSUM_GOOD);
        assert_eq!((i.invalid, i.l4_csum_checked), (None, true));
    }

    #[test]
    fn udp_checksums() {
        let i = p4(&b4().bad_l4_checksum().udp(1, 2, b"abc"));
        assert_eq!(
            (i.invalid, i.key, i.l4_csum_checked),
            (Some(Invalid::BadL4Checksum), k4(17, 1, 2), true)
        );
        let i = p4f(
            &b4().bad_l4_checksum().udp(1, 2, b"abc"),
            PktFlags::L4_CSUM_GOOD,
        );
        assert_eq!((i.invalid, i.l4_csum_checked), (None, false));
        // Zero = no checksum on IPv4 ...
        let i = p4(&b4().udp_zero_checksum().udp(1, 2, b"abc"));
        assert_eq!((i.invalid, i.l4_csum_checked), (None, false));
        // ... but invalid on IPv6.
        let i = p6(&b6().udp_zero_checksum().udp(1, 2, b"abc"));
        assert_eq!(
            (i.invalid, i.key),
            (Some(Invalid::BadL4Checksum), k6(17, 1, 2))
        );
        assert_eq!(
            p6f(
                &b6().udp_zero_checksum().udp(1, 2, b"abc"),
                PktFlags::L4_CSUM_GOOD
            )
            .invalid,
            None
        );
        let i = p6(&b6().udp(1, 2, b"abc"));
        assert_eq!(
            (i.invalid, i.key, i.l4_csum_checked),
            (None, k6(17, 1, 2), true)
        );
        assert_eq!(
            p6(&b6().bad_l4_checksum().udp(1, 2, b"abc")).invalid,
            Some(Invalid::BadL4Checksum)
        );
        // A corrupted payload byte breaks the checksum.
        let mut p = b4().udp(1, 2, b"abcdefgh");
        *p.last_mut().unwrap() ^= 1;
        assert_eq!(p4(&p).invalid, Some(Invalid::BadL4Checksum));
    }

    // ---- TCP ----------------------------------------------------------------

    #[test]
    fn tcp_segment_fields() {
        let seg = Tcp::new(40000, 80)
            .flags(ACK | PSH)
            .seq(1_000_000)
            .ack(7)
            .win(512)
            .payload(b"0123456789");
        for (p, fam) in [
            (b4().tcp(&seg), Family::Ipv4),
            (b6().tcp(&seg), Family::Ipv6),
        ] {
            let i = pf(&p, fam, PktFlags::empty());
            assert_eq!(i.invalid, None);
            assert!(i.l4_csum_checked);
            let want = if fam == Family::Ipv4 {
                k4(6, 40000, 80)
            } else {
                k6(6, 40000, 80)
            };
            assert_eq!(i.key, want);
            assert_eq!(
                tcp_seg(&i),
                TcpSeg {
                    seq: 1_000_000,
                    ack: 7,
                    win: 512,
                    flags: ACK | PSH,
                    payload_len: 10,
                    wscale: None,
                    sack_perm: false
                }
            );
        }
    }

    #[test]
    fn tcp_syn_options() {
        let syn = Tcp::new(1, 2).flags(SYN).mss(1460).wscale(7).sack_perm();
        let s = tcp_seg(&p4(&b4().tcp(&syn)));
        assert_eq!((s.wscale, s.sack_perm, s.payload_len), (Some(7), true, 0));
        let s = tcp_seg(&p6(&b6().tcp(&syn.clone().flags(SYN | ACK))));
        assert_eq!((s.wscale, s.sack_perm), (Some(7), true));
        // Shift above 14 is taken as 14.
        let s = tcp_seg(&p4(&b4().tcp(&Tcp::new(1, 2).flags(SYN).wscale(20))));
        assert_eq!(s.wscale, Some(14));
        // Options on a non-SYN are not parsed.
        let s = tcp_seg(&p4(&b4().tcp(&syn.clone().flags(ACK))));
        assert_eq!((s.wscale, s.sack_perm), (None, false));
        // No options.
        let s = tcp_seg(&p4(&b4().tcp(&Tcp::new(1, 2).flags(SYN))));
        assert_eq!((s.wscale, s.sack_perm), (None, false));
    }

    #[test]
    fn tcp_bad_options_are_survived() {
        let cases: &[(&[u8], Option<u8>, bool)] = &[
            (&[0, 3, 3, 7], None, false), // EOL first
            (&[1, 1, 3, 3, 7, 1, 4, 2, 0, 0, 0, 0], Some(7), true),
            (&[3, 0, 3, 3, 7, 0, 0, 0], None, false), // zero length
            (&[3, 1, 3, 3, 7, 0, 0, 0], None, false), // length 1
            (&[4, 2, 3, 9, 7, 0, 0, 0], None, true),  // length runs past the end
            (&[3, 4, 7, 0, 4, 2, 0, 0], None, true),  // wrong wscale length skipped
            (&[2, 4, 5, 180, 4, 2, 1, 3], None, true), // kind with no length byte at the end
            (&[8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 3, 3], None, false), // wscale cut short
            (&[1, 1, 1, 1], None, false),
        ];
        for (opts, ws, sack) in cases {
            let l4 = raw_tcp(5 + opts.len() as u8 / 4, SYN, opts);
            let i = p4f(&b4().raw(6, &l4), ALL_GOOD);
            assert_eq!(i.invalid, None, "{opts:?}");
            let s = tcp_seg(&i);
            assert_eq!((s.wscale, s.sack_perm), (*ws, *sack), "{opts:?}");
        }
    }

    #[test]
    fn tcp_header_checks() {
        assert_eq!(
            p4f(&b4().raw(6, &raw_tcp(5, ACK, &[])[..19]), ALL_GOOD).invalid,
            Some(Invalid::Truncated)
        );
        let i = p4f(&b4().raw(6, &raw_tcp(4, ACK, &[])), ALL_GOOD);
        assert_eq!(
            (i.invalid, i.key),
            (Some(Invalid::BadTcpHeader), k4(6, 1111, 80))
        );
        assert_eq!(
            p4f(&b4().raw(6, &raw_tcp(0, ACK, &[])), ALL_GOOD).invalid,
            Some(Invalid::BadTcpHeader)
        );
        // Data offset past the segment.
        let i = p4f(&b4().raw(6, &raw_tcp(6, ACK, &[])), ALL_GOOD);
        assert_eq!(
            (i.invalid, i.key),
            (Some(Invalid::Truncated), k4(6, 1111, 80))
        );
        // Exactly the data offset: fine.
        let i = p4f(&b4().raw(6, &raw_tcp(6, ACK, &[1, 1, 1, 1])), ALL_GOOD);
        assert_eq!(i.invalid, None);
        assert_eq!(tcp_seg(&i).payload_len, 0);
    }

    #[test]
    fn tcp_impossible_flags() {
        for fl in [
            SYN | FIN,
            SYN | RST,
            SYN | ACK | RST,
            0,
            FIN,
            PSH,
            URG,
            FIN | PSH | URG,
            RST | FIN,
        ] {
            let i = p4(&b4().tcp(&Tcp::new(1, 2).flags(fl)));
            assert_eq!(i.invalid, Some(Invalid::BadTcpHeader), "flags {fl:#x}");
            assert_eq!(i.key, k4(6, 1, 2));
        }
        for fl in [
            SYN,
            SYN | ACK,
            SYN | ECE | CWR,
            ACK,
            ACK | PSH,
            FIN | ACK,
            RST,
            RST | ACK,
            ACK | URG,
        ] {
            assert_eq!(
                p4(&b4().tcp(&Tcp::new(1, 2).flags(fl))).invalid,
                None,
                "flags {fl:#x}"
            );
        }
    }

    #[test]
    fn tcp_checksums() {
        let seg = Tcp::new(1, 2).payload(b"odd");
        assert_eq!(
            p4(&b4().bad_l4_checksum().tcp(&seg)).invalid,
            Some(Invalid::BadL4Checksum)
        );
        assert_eq!(
            p6(&b6().bad_l4_checksum().tcp(&seg)).invalid,
            Some(Invalid::BadL4Checksum)
        );
        let i = p6f(&b6().bad_l4_checksum().tcp(&seg), PktFlags::L4_CSUM_GOOD);
        assert_eq!((i.invalid, i.l4_csum_checked), (None, false));
        // Pseudo-header covers the addresses.
        let mut p = b4().tcp(&seg);
        p[19] ^= 1;
        assert_eq!(
            p4f(&p, PktFlags::IP_CSUM_GOOD).invalid,
            Some(Invalid::BadL4Checksum)
        );
    }

    // ---- IPv6 ---------------------------------------------------------------

    #[test]
    fn v6_header_checks() {
        let p = b6().udp(1, 2, b"abc");
        assert_eq!(p6(&p[..39]).invalid, Some(Invalid::Truncated));
        let mut bad = p.clone();
        bad[0] = 0x40;
        assert_eq!(p6(&bad).invalid, Some(Invalid::BadIpHeader));
        assert_eq!(
            p6(&b4().udp(1, 2, &[0; 20])).invalid,
            Some(Invalid::BadIpHeader)
        );
        // Payload length beyond the buffer.
        let i = p6(&p[..p.len() - 1]);
        assert_eq!(
            (i.invalid, i.key.src, i.key.proto),
            (Some(Invalid::Truncated), s6().octets(), 17)
        );
        // Trailing bytes beyond the payload length are ignored.
        let mut padded = p.clone();
        padded.extend_from_slice(&[0; 7]);
        assert_eq!(p6(&padded).invalid, None);
    }

    #[test]
    fn v6_extension_headers() {
        let b = b6()
            .ext(Ext::HopByHop)
            .ext(Ext::DestOpts)
            .ext(Ext::Routing)
            .ext(Ext::Fragment {
                offset: 0,
                more: false,
            })
            .ext(Ext::Ah)
            .ext(Ext::DestOpts);
        let i = p6(&b.udp(10, 20, b"data"));
        assert_eq!((i.invalid, i.key), (None, k6(17, 10, 20)));
        let i = p6(&b.tcp(&Tcp::new(10, 20).payload(b"x")));
        assert_eq!((i.invalid, i.key), (None, k6(6, 10, 20)));
        assert_eq!(tcp_seg(&i).payload_len, 1);
        let i = p6(&b.echo_request(3, 4, b""));
        assert_eq!(
            (i.invalid, i.key, i.l4),
            (None, k6(58, 3, 128 << 8), L4Info::IcmpQuery)
        );
    }

    #[test]
    fn v6_extension_header_limits() {
        let mut b = b6();
        for _ in 0..MAX_V6_EXT {
            b = b.ext(Ext::DestOpts);
        }
        assert_eq!(p6(&b.udp(1, 2, b"")).invalid, None);
        let b = b.ext(Ext::DestOpts);
        assert_eq!(p6(&b.udp(1, 2, b"")).invalid, Some(Invalid::BadIpHeader));
        // Hop-by-hop only directly after the IPv6 header.
        let b = b6().ext(Ext::DestOpts).ext(Ext::HopByHop);
        assert_eq!(p6(&b.udp(1, 2, b"")).invalid, Some(Invalid::BadIpHeader));
        // An extension header cut by the payload length.
        let mut p = b6().ext(Ext::Routing).udp(1, 2, b"");
        p[41] = 3; // claims 32 bytes
        assert_eq!(p6f(&p, ALL_GOOD).invalid, Some(Invalid::Truncated));
        let p = b6().ext(Ext::Ah).udp(1, 2, b"");
        assert_eq!(p6(&p[..50]).invalid, Some(Invalid::Truncated));
        let mut p = b6().raw(60, &[17, 0, 1, 4, 0, 0]);
        assert_eq!(p6(&p).invalid, Some(Invalid::Truncated));
        p[6] = 0;
        assert_eq!(p6(&p).invalid, Some(Invalid::Truncated));
    }

    #[test]
    fn v6_fragments() {
        let first = b6()
            .ext(Ext::Fragment {
                offset: 0,
                more: true,
            })
            .udp(1000, 53, b"x");
        let i = p6(&first);
        assert_eq!(
            (i.invalid, i.key),
            (Some(Invalid::Fragment), k6(17, 1000, 53))
        );
        let later = b6()
            .ext(Ext::Fragment {
                offset: 1448,
                more: false,
            })
            .raw(17, &[1; 16]);
        let i = p6(&later);
        assert_eq!((i.invalid, i.key), (Some(Invalid::Fragment), k6(17, 0, 0)));
        let atomic = b6()
            .ext(Ext::HopByHop)
            .ext(Ext::Fragment {
                offset: 0,
                more: false,
            })
            .udp(1000, 53, b"x");
        assert_eq!(p6(&atomic).invalid, None);
    }

    #[test]
    fn v6_no_next_header() {
        let i = p6(&b6().raw(59, &[]));
        assert_eq!(
            (i.invalid, i.key, i.l4),
            (None, k6(59, 0, 0), L4Info::Plain)
        );
        let i = p6(&b6().ext(Ext::DestOpts).raw(59, &[1, 2, 3]));
        assert_eq!((i.invalid, i.key), (None, k6(59, 0, 0)));
    }

    // ---- ICMPv4 -------------------------------------------------------------

    #[test]
    fn icmp4_queries() {
        let i = p4(&b4().echo_request(0x4242, 1, b"ping"));
        assert_eq!(
            (i.invalid, i.key, i.l4),
            (None, k4(1, 0x4242, 8 << 8), L4Info::IcmpQuery)
        );
        assert!(i.l4_csum_checked);
        let i = p4(&b4().reversed().echo_reply(0x4242, 1, b"ping"));
        assert_eq!(i.key, k4(1, 0x4242, 8 << 8).reverse());
        for ty in [13u8, 14, 15, 16, 17, 18] {
            let i = p4(&b4().icmp(ty, 0, [0, 9, 0, 1], &[0; 12]));
            assert_eq!(
                (i.invalid, i.key, i.l4),
                (None, k4(1, 9, (ty as u16) << 8), L4Info::IcmpQuery)
            );
        }
        let i = p4(&b4().icmp(8, 3, [0, 9, 0, 1], &[]));
        assert_eq!(i.key.dst_port, 8 << 8 | 3);
    }

    #[test]
    fn icmp4_header_and_checksum() {
        assert_eq!(
            p4f(&b4().raw(1, &[8, 0, 0, 0, 0, 1, 0]), ALL_GOOD).invalid,
            Some(Invalid::Truncated)
        );
        let i = p4(&b4().bad_l4_checksum().echo_request(1, 1, b"x"));
        assert_eq!(
            (i.invalid, i.l4_csum_checked),
            (Some(Invalid::BadL4Checksum), true)
        );
        let i = p4f(
            &b4().bad_l4_checksum().echo_request(1, 1, b"x"),
            PktFlags::L4_CSUM_GOOD,
        );
        assert_eq!((i.invalid, i.l4_csum_checked), (None, false));
        let orig = b4().udp(1, 2, b"");
        let i = p4(&b4().reversed().bad_l4_checksum().icmp_error(3, 3, &orig));
        assert_eq!(i.invalid, Some(Invalid::BadL4Checksum));
    }

    #[test]
    fn icmp4_unknown_types() {
        for ty in [1u8, 2, 6, 7, 9, 10, 19, 30, 40, 42, 43, 255] {
            let i = p4(&b4().icmp(ty, 0, [0; 4], &[0; 28]));
            assert_eq!(i.invalid, Some(Invalid::BadIcmp), "type {ty}");
            assert_eq!(i.key.dst_port, (ty as u16) << 8);
        }
    }

    #[test]
    fn icmp4_errors_relate_embedded_packets() {
        let router = Builder::v4("192.0.2.254".parse().unwrap(), s4());
        let originals = [
            (b4().udp(1000, 53, b"query"), k4(17, 1000, 53)),
            (
                b4().tcp(&Tcp::new(40000, 443).flags(SYN).wscale(7)),
                k4(6, 40000, 443),
            ),
            (b4().echo_request(77, 1, &[0; 56]), k4(1, 77, 8 << 8)),
            (b4().echo_reply(77, 1, &[0; 56]), k4(1, 77, 0)),
            (b4().icmp(13, 0, [0, 5, 0, 0], &[0; 12]), k4(1, 5, 13 << 8)),
            (
                b4().raw(132, &[0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0]),
                k4(132, 1, 2),
            ),
            (b4().raw(47, &[0; 8]), k4(47, 0, 0)),
            (b4().v4_options(&[1, 1, 1, 1]).udp(5, 6, b""), k4(17, 5, 6)),
            (b4().fragment(0, true).udp(5, 6, b"first"), k4(17, 5, 6)),
        ];
        for (orig, want) in &originals {
            assert_eq!(p4f(orig, ALL_GOOD).key.src_port, want.src_port);
            for (ty, code) in [(3u8, 3u8), (3, 4), (4, 0), (5, 1), (11, 0), (12, 0)] {
                let err = router.icmp_error(ty, code, orig);
                let i = p4(&err);
                assert_eq!(i.invalid, None, "type {ty} about {want}");
                assert_eq!(inner(&i), *want);
                assert_eq!(i.key.proto, 1);
                assert_eq!(i.key.dst_port, (ty as u16) << 8 | code as u16);
                assert_eq!(i.key.src_port, 0);
                assert!(i.l4_csum_checked);
            }
        }
        // The minimum embedding: IP header + 8 bytes of L4.
        let orig = b4().tcp(&Tcp::new(1, 2));
        let i = p4(&router.icmp_error(3, 1, &orig[..28]));
        assert_eq!((i.invalid, inner(&i)), (None, k4(6, 1, 2)));
        // Embedded checksums are not verified.
        let orig = b4().bad_ip_checksum().bad_l4_checksum().udp(1, 2, b"");
        assert_eq!(inner(&p4(&router.icmp_error(3, 3, &orig))), k4(17, 1, 2));
        // Zone is the outer packet's.
        let i = parse(
            &CtPacket {
                l3: &router.icmp_error(3, 3, &orig),
                family: Family::Ipv4,
                flags: PktFlags::empty(),
            },
            Zone(9),
        );
        assert_eq!(inner(&i).zone, Zone(9));
    }

    #[test]
    fn icmp4_bad_errors() {
        let router = Builder::v4("192.0.2.254".parse().unwrap(), s4());
        let orig = b4().tcp(&Tcp::new(1, 2));
        for n in [0, 1, 19, 20, 27] {
            let i = p4(&router.icmp_error(3, 1, &orig[..n]));
            assert_eq!(i.invalid, Some(Invalid::BadIcmp), "embedded {n} bytes");
            assert_eq!(i.key.dst_port, 3 << 8 | 1);
        }
        // IHL pointing past the embedded bytes.
        let mut o = orig[..28].to_vec();
        o[0] = 0x46;
        assert_eq!(
            p4(&router.icmp_error(3, 1, &o)).invalid,
            Some(Invalid::BadIcmp)
        );
        o[0] = 0x44;
        assert_eq!(
            p4(&router.icmp_error(3, 1, &o)).invalid,
            Some(Invalid::BadIcmp)
        );
        o[0] = 0x65;
        assert_eq!(
            p4(&router.icmp_error(3, 1, &o)).invalid,
            Some(Invalid::BadIcmp)
        );
        // An error about an error.
        let e1 = router.icmp_error(3, 1, &orig);
        let i = p4(&b4().icmp_error(11, 0, &e1));
        assert_eq!(i.invalid, Some(Invalid::BadIcmp));
        // An error about an unknown ICMP type.
        let odd = b4().icmp(42, 0, [0; 4], &[]);
        assert_eq!(
            p4(&router.icmp_error(3, 1, &odd)).invalid,
            Some(Invalid::BadIcmp)
        );
        // An error about a non-first fragment.
        let frag = b4().fragment(8, false).raw(17, &[0; 8]);
        assert_eq!(
            p4(&router.icmp_error(3, 1, &frag)).invalid,
            Some(Invalid::BadIcmp)
        );
        // An IPv6 packet embedded in an ICMPv4 error.
        assert_eq!(
            p4(&router.icmp_error(3, 1, &b6().udp(1, 2, b""))).invalid,
            Some(Invalid::BadIcmp)
        );
    }

    // ---- ICMPv6 -------------------------------------------------------------

    #[test]
    fn icmp6_queries_and_unknown_types() {
        let i = p6(&b6().echo_request(0x99, 1, b"ping"));
        assert_eq!(
            (i.invalid, i.key, i.l4),
            (None, k6(58, 0x99, 128 << 8), L4Info::IcmpQuery)
        );
        assert!(i.l4_csum_checked);
        let i = p6(&b6().reversed().echo_reply(0x99, 1, b"ping"));
        assert_eq!((i.invalid, i.key), (None, k6(58, 0x99, 128 << 8).reverse()));
        for ty in [0u8, 5, 127, 130, 133, 134, 135, 136, 137, 143, 200] {
            let i = p6(&b6().icmp(ty, 0, [0; 4], &[0; 24]));
            assert_eq!(i.invalid, Some(Invalid::BadIcmp), "type {ty}");
        }
        assert_eq!(
            p6(&b6().bad_l4_checksum().echo_request(1, 1, b"")).invalid,
            Some(Invalid::BadL4Checksum)
        );
        assert_eq!(
            p6f(&b6().raw(58, &[128, 0, 0, 0, 0, 0, 0]), ALL_GOOD).invalid,
            Some(Invalid::Truncated)
        );
        // Checksum covers the pseudo-header (ICMPv4-style sum fails).
        let mut p = b6().echo_request(1, 1, b"");
        p[8] ^= 0x80;
        assert_eq!(p6(&p).invalid, Some(Invalid::BadL4Checksum));
    }

    #[test]
    fn icmp6_errors_relate_embedded_packets() {
        let router = Builder::v6("fd00:ff::1".parse().unwrap(), s6());
        let originals = [
            (b6().udp(1000, 53, b"query"), k6(17, 1000, 53)),
            (
                b6().tcp(&Tcp::new(40000, 443).flags(SYN)),
                k6(6, 40000, 443),
            ),
            (b6().echo_request(77, 1, &[0; 56]), k6(58, 77, 128 << 8)),
            (
                b6().ext(Ext::HopByHop).ext(Ext::Routing).udp(7, 8, b""),
                k6(17, 7, 8),
            ),
            (
                b6().ext(Ext::Fragment {
                    offset: 0,
                    more: true,
                })
                .udp(7, 8, b""),
                k6(17, 7, 8),
            ),
            (b6().raw(59, &[0; 8]), k6(59, 0, 0)),
        ];
        for (orig, want) in &originals {
            for (ty, code) in [(1u8, 4u8), (2, 0), (3, 0), (4, 1)] {
                let i = p6(&router.icmp_error(ty, code, orig));
                assert_eq!(i.invalid, None, "type {ty} about {want}");
                assert_eq!(inner(&i), *want);
                assert_eq!(i.key.dst_port, (ty as u16) << 8 | code as u16);
            }
        }
        let orig = b6().udp(1, 2, b"");
        let i = p6(&router.icmp(2, 0, 1280u32.to_be_bytes(), &orig[..48]));
        assert_eq!((i.invalid, inner(&i)), (None, k6(17, 1, 2)));
    }

    #[test]
    fn icmp6_bad_errors() {
        let router = Builder::v6("fd00:ff::1".parse().unwrap(), s6());
        let orig = b6().ext(Ext::DestOpts).udp(1, 2, b"");
        for n in [0, 8, 39, 40, 47, 48, 55] {
            let i = p6(&router.icmp_error(1, 0, &orig[..n]));
            assert_eq!(i.invalid, Some(Invalid::BadIcmp), "embedded {n} bytes");
        }
        assert_eq!(p6(&router.icmp_error(1, 0, &orig[..56])).invalid, None);
        // Nested errors, errors about ND, about non-first fragments, about IPv4.
        let e1 = router.icmp_error(1, 0, &orig);
        assert_eq!(
            p6(&b6().icmp_error(3, 0, &e1)).invalid,
            Some(Invalid::BadIcmp)
        );
        let ns = b6().icmp(135, 0, [0; 4], &[0; 16]);
        assert_eq!(
            p6(&router.icmp_error(1, 0, &ns)).invalid,
            Some(Invalid::BadIcmp)
        );
        let frag = b6()
            .ext(Ext::Fragment {
                offset: 8,
                more: true,
            })
            .raw(17, &[0; 8]);
        assert_eq!(
            p6(&router.icmp_error(1, 0, &frag)).invalid,
            Some(Invalid::BadIcmp)
        );
        assert_eq!(
            p6(&router.icmp_error(1, 0, &b4().udp(1, 2, b""))).invalid,
            Some(Invalid::BadIcmp)
        );
        let mut deep = b6();
        for _ in 0..=MAX_V6_EXT {
            deep = deep.ext(Ext::DestOpts);
        }
        assert_eq!(
            p6(&router.icmp_error(1, 0, &deep.udp(1, 2, b""))).invalid,
            Some(Invalid::BadIcmp)
        );
    }

    #[test]
    fn nic_flags_skip_all_verification() {
        let p = b4().bad_ip_checksum().bad_l4_checksum().udp(1, 2, b"x");
        assert_eq!(p4(&p).invalid, Some(Invalid::BadIpChecksum));
        assert_eq!(
            p4f(&p, PktFlags::IP_CSUM_GOOD).invalid,
            Some(Invalid::BadL4Checksum)
        );
        assert_eq!(
            p4f(&p, PktFlags::L4_CSUM_GOOD).invalid,
            Some(Invalid::BadIpChecksum)
        );
        let i = p4f(&p, ALL_GOOD | PktFlags::NOTRACK);
        assert_eq!(
            (i.invalid, i.key, i.l4_csum_checked),
            (None, k4(17, 1, 2), false)
        );
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::build::{Builder, Ext, Tcp};
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn all_flags() -> impl Strategy<Value = PktFlags> {
        (0u8..8).prop_map(PktFlags::from_bits_truncate)
    }

    fn family() -> impl Strategy<Value = Family> {
        prop_oneof![Just(Family::Ipv4), Just(Family::Ipv6)]
    }

    /// A valid packet and the key it must parse to.
    #[derive(Debug, Clone)]
    struct Valid {
        family: Family,
        bytes: Vec<u8>,
        key: ConnKey,
        /// The answer a peer would send (must parse to `key.reverse()`).
        reply: Vec<u8>,
    }

    fn valid_packet() -> impl Strategy<Value = Valid> {
        (
            family(),
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            0u8..6,
            any::<u16>(),
            any::<u16>(),
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..200),
            0usize..4,
            any::<u16>(),
        )
            .prop_map(|(family, s, d, kind, sp, dp, seq, payload, n_ext, zone)| {
                let zone = Zone(zone);
                let (b, mut key) = match family {
                    Family::Ipv4 => {
                        let (s4, d4) = (
                            Ipv4Addr::new(s[0], s[1], s[2], s[3]),
                            Ipv4Addr::new(d[0], d[1], d[2], d[3]),
                        );
                        (Builder::v4(s4, d4), ConnKey::v4(zone, s4, d4, 0, 0, 0))
                    }
                    Family::Ipv6 => {
                        let (s6, d6) = (Ipv6Addr::from(s), Ipv6Addr::from(d));
                        let mut b = Builder::v6(s6, d6);
                        for e in [Ext::HopByHop, Ext::Routing, Ext::DestOpts]
                            .iter()
                            .take(n_ext)
                        {
                            b = b.ext(*e);
                        }
                        (b, ConnKey::v6(zone, s6, d6, 0, 0, 0))
                    }
                };
                let icmp = if family == Family::Ipv4 {
                    ipproto::ICMP
                } else {
                    ipproto::ICMPV6
                };
                let r = b.reversed();
                let (bytes, reply, proto, ports) = match kind {
                    0 => (
                        b.udp(sp, dp, &payload),
                        r.udp(dp, sp, b""),
                        ipproto::UDP,
                        (sp, dp),
                    ),
                    1 => {
                        let seg = Tcp::new(sp, dp)
                            .seq(seq)
                            .flags(tcp_flags::ACK | tcp_flags::PSH)
                            .payload(&payload);
                        let ack = Tcp::new(dp, sp).ack(seq.wrapping_add(payload.len() as u32));
                        (b.tcp(&seg), r.tcp(&ack), ipproto::TCP, (sp, dp))
                    }
                    2 => (
                        b.tcp(&Tcp::new(sp, dp).flags(tcp_flags::SYN).wscale(3).sack_perm()),
                        r.tcp(
                            &Tcp::new(dp, sp)
                                .flags(tcp_flags::SYN | tcp_flags::ACK)
                                .wscale(9),
                        ),
                        ipproto::TCP,
                        (sp, dp),
                    ),
                    3 => {
                        let ty = if family == Family::Ipv4 { 8 } else { 128 };
                        let reply = r.echo_reply(sp, dp, &payload);
                        (b.echo_request(sp, dp, &payload), reply, icmp, (sp, ty << 8))
                    }
                    4 => {
                        let ty = if family == Family::Ipv4 { 0 } else { 129 };
                        let reply = r.echo_request(sp, dp, &payload);
                        (b.echo_reply(sp, dp, &payload), reply, icmp, (sp, ty << 8))
                    }
                    _ => {
                        // At least the 8 bytes an ICMP error must embed.
                        let mut gre = payload.clone();
                        gre.resize(gre.len().max(8), 0);
                        (b.raw(47, &gre), r.raw(47, &gre), 47, (0, 0))
                    }
                };
                key.proto = proto;
                (key.src_port, key.dst_port) = ports;
                Valid {
                    family,
                    bytes,
                    key,
                    reply,
                }
            })
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        Flip(usize, u8),
        Truncate(usize),
        Extend(Vec<u8>),
        Set(usize, u8),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<usize>(), 1u8..).prop_map(|(i, x)| Mutation::Flip(i, x)),
            any::<usize>().prop_map(Mutation::Truncate),
            proptest::collection::vec(any::<u8>(), 1..16).prop_map(Mutation::Extend),
            (any::<usize>(), any::<u8>()).prop_map(|(i, x)| Mutation::Set(i, x)),
        ]
    }

    fn apply(bytes: &mut Vec<u8>, muts: &[Mutation]) {
        for m in muts {
            match m {
                Mutation::Flip(i, x) if !bytes.is_empty() => {
                    let n = bytes.len();
                    bytes[i % n] ^= x;
                }
                Mutation::Set(i, x) if !bytes.is_empty() => {
                    let n = bytes.len();
                    bytes[i % n] = *x;
                }
                Mutation::Truncate(i) => {
                    let n = bytes.len() + 1;
                    bytes.truncate(i % n);
                }
                Mutation::Extend(v) => bytes.extend_from_slice(v),
                _ => {}
            }
        }
    }

    fn check_invariants(info: &PacketInfo, family: Family, zone: Zone) {
        assert_eq!(info.key.zone, zone);
        assert_eq!(info.key.family, family);
        if let L4Info::IcmpError { inner } = info.l4 {
            assert_eq!(inner.zone, zone);
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
            head in 0u8..4,
            fam in family(),
            flags in all_flags(),
        ) {
            // Bias the first byte toward plausible versions so deeper layers get exercised.
            let mut bytes = bytes;
            if let Some(b0) = bytes.first_mut() {
                *b0 = match head { 0 => 0x45, 1 => 0x60, _ => *b0 };
            }
            let info = parse(&CtPacket { l3: &bytes, family: fam, flags }, Zone(3));
            check_invariants(&info, fam, Zone(3));
        }

        #[test]
        fn valid_packets_round_trip(v in valid_packet(), flags in all_flags()) {
            let info = parse(&CtPacket { l3: &v.bytes, family: v.family, flags }, v.key.zone);
            prop_assert_eq!(info.invalid, None);
            prop_assert_eq!(info.key, v.key);
            let csum_expected = !flags.contains(PktFlags::L4_CSUM_GOOD) && v.key.proto != 47;
            prop_assert_eq!(info.l4_csum_checked, csum_expected);
            let back = parse(&CtPacket { l3: &v.reply, family: v.family, flags }, v.key.zone);
            prop_assert_eq!(back.invalid, None);
            prop_assert_eq!(back.key, v.key.reverse());
            prop_assert_eq!(back.key.reverse(), v.key);
        }

        #[test]
        fn mutated_packets_never_panic(
            v in valid_packet(),
            muts in proptest::collection::vec(mutation(), 1..4),
            flags in all_flags(),
        ) {
            let mut bytes = v.bytes.clone();
            apply(&mut bytes, &muts);
            for fam in [Family::Ipv4, Family::Ipv6] {
                let info = parse(&CtPacket { l3: &bytes, family: fam, flags }, v.key.zone);
                check_invariants(&info, fam, v.key.zone);
            }
        }

        #[test]
        fn errors_about_valid_packets_relate(v in valid_packet(), cut in 0usize..64) {
            let router = match v.family {
                Family::Ipv4 => Builder::v4(Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(10, 0, 0, 1)),
                Family::Ipv6 => Builder::v6("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap()),
            };
            let ty = if v.family == Family::Ipv4 { 3 } else { 1 };
            let err = router.icmp_error(ty, 0, &v.bytes);
            let info = parse(&CtPacket { l3: &err, family: v.family, flags: PktFlags::empty() }, v.key.zone);
            prop_assert_eq!(info.invalid, None);
            prop_assert_eq!(info.l4, L4Info::IcmpError { inner: v.key });
            // Cutting the embedded packet short of header + 8 bytes is BadIcmp.
            let need = l4_offset(&v) + 8;
            let n = need.saturating_sub(1 + cut % need.max(1));
            let err = router.icmp_error(ty, 0, &v.bytes[..n]);
            let info = parse(&CtPacket { l3: &err, family: v.family, flags: PktFlags::empty() }, v.key.zone);
            prop_assert_eq!(info.invalid, Some(Invalid::BadIcmp));
        }
    }

    /// Offset of the upper-layer header in a built valid packet.
    fn l4_offset(v: &Valid) -> usize {
        match v.family {
            Family::Ipv4 => (v.bytes[0] & 0xf) as usize * 4,
            Family::Ipv6 => {
                let mut off = 40;
                let mut nh = v.bytes[6];
                while matches!(nh, 0 | 43 | 60) {
                    nh = v.bytes[off];
                    off += (v.bytes[off + 1] as usize + 1) * 8;
                }
                off
            }
        }
    }
}
