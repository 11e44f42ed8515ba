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
    /// A fragment (reassembly happens before conntrack; see the NAT issue).
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
#[inline]
pub fn parse(pkt: &CtPacket<'_>, zone: Zone) -> PacketInfo {
    let mut info = PacketInfo {
        key: ConnKey {
            zone,
            family: pkt.family,
            ..Default::default()
        },
        ..Default::default()
    };
    let r = match pkt.family {
        Family::Ipv4 => parse_v4(pkt.l3, pkt.flags, &mut info),
        Family::Ipv6 => parse_v6(pkt.l3, pkt.flags, &mut info),
    };
    if let Err(e) = r {
        info.invalid = Some(e);
    }
    info
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

#[inline(always)]
fn sub4(b: &[u8], at: usize) -> &[u8; 4] {
    // Callers pass a constant offset inside a fixed-size header.
    b[at..].first_chunk::<4>().unwrap_or(&[0; 4])
}

// ---------------------------------------------------------------------------
// One's-complement checksum.

/// Add `data` (as big-endian 16-bit words, odd tail padded with zero) to the
/// running sum `acc`. Works on 64-bit words with end-around carry; reduce with
/// [`csum_fold`].
#[inline]
pub(crate) fn csum_add(mut acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        if let Some(w) = c.first_chunk::<8>() {
            let (s, carry) = acc.overflowing_add(u64::from_be_bytes(*w));
            acc = s + carry as u64;
        }
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 8];
    tail[..rest.len()].copy_from_slice(rest);
    let (s, carry) = acc.overflowing_add(u64::from_be_bytes(tail));
    s + carry as u64
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
struct V6Walk {
    /// Upper-layer protocol.
    proto: u8,
    /// Offset of the upper-layer header.
    off: usize,
    /// A fragment header with offset != 0 or M set was seen;
    /// `Some(first)` where `first` says whether the fragment offset is 0.
    frag: Option<bool>,
}

/// Walk the extension headers of the IPv6 packet `b` (header included),
/// bounded by `end`, starting with next header `nh`.
#[inline]
fn walk_v6(b: &[u8], end: usize, mut nh: u8) -> Result<V6Walk, Invalid> {
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
    let mut i = 0;
    while let Some(&kind) = opts.get(i) {
        match kind {
            0 => break,
            1 => i += 1,
            _ => {
                let Some(&len) = opts.get(i + 1) else { break };
                let len = len as usize;
                if len < 2 || i + len > opts.len() {
                    break;
                }
                match (kind, len) {
                    // RFC 7323: a shift above 14 is used as 14.
                    (3, 3) => seg.wscale = Some(opts[i + 2].min(14)),
                    (4, 2) => seg.sack_perm = true,
                    _ => {}
                }
                i += len;
            }
        }
    }
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
