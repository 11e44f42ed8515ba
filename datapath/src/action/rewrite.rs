//! Header rewrites: ofproto's `set_field` applied to a packet.
//!
//! [`set_field`] writes the bits `mask` of one writable ofproto
//! [`Field`] into the frame, patches every checksum that covers the changed
//! bytes, and updates the datapath [`FlowKey`] so that it stays what
//! [`extract()`] would produce from the rewritten frame. The packet's L3/L4
//! offsets (from extraction, [`crate::PacketMeta::l3_ofs`]/`l4_ofs`) locate
//! the headers; the key says which headers extraction found.
//!
//! Dispatch is one table, `TARGETS`, from field to the header family that
//! holds it; each family has one function below.
//!
//! # Field views
//!
//! Some ofproto fields are views of a larger storage, and their slots in the
//! ofproto key say where: `nw_tos`/`ip_dscp` are the upper six bits of the
//! IP TOS byte (IPv6 traffic class) and `nw_ecn` its lower two; `dl_vlan` and
//! `dl_vlan_pcp` are the VID and PCP of `vlan_tci` (and imply its present
//! bit). A value/mask pair for a view is shifted into the storage by the
//! difference of the slot shifts, so `Set{nw_tos, 46, 0x3f}` writes TOS byte
//! `46 << 2` and leaves the ECN bits alone.
//!
//! # Checksums
//!
//! Every 16-bit Internet checksum is updated incrementally from the old and
//! new field values (RFC 1624, [`csum::update16`]/[`csum::update32`]/
//! [`csum::update_bytes`]), never summed again:
//! - the IPv4 header checksum, for `nw_src`, `nw_dst`, `nw_tos`/`ip_dscp`,
//!   `nw_ecn` and `nw_ttl`;
//! - the TCP and UDP checksums, for IPv4 and IPv6 address changes (they are
//!   in the pseudo header) and port changes; the ICMPv6 checksum for IPv6
//!   address changes (ICMPv4 has no pseudo header);
//! - the ICMPv4/ICMPv6 checksum for type and code changes.
//!
//! A UDP checksum of 0 means "none" and stays 0 (for IPv6, where 0 is only
//! allowed for tunnels, it is equally left alone); an update that yields 0 is
//! written as 0xffff. Later fragments carry no L4 header, so their L4
//! checksum is never touched; a first fragment's L4 checksum covers the
//! whole datagram, and an incremental update of it is still exact.
//!
//! An IPv6 destination change leaves the L4 checksum alone when a Routing
//! header with segments left precedes L4: the pseudo header then carries the
//! final destination from the Routing header, not the IPv6 destination
//! (RFC 8200 section 8.1).
//!
//! SCTP uses CRC32c over the whole SCTP packet, which cannot be patched from
//! the changed bytes alone, so an SCTP port change recomputes the CRC over
//! the packet (its cost grows with the packet length). In a first fragment
//! the CRC covers bytes this packet does not hold: the ports are rewritten
//! and the CRC is left as it was.
//!
//! The offload flags in [`crate::PacketMeta::offload`] stay valid: a
//! checksum that was good is still good after an exact update.
//!
//! # Errors
//!
//! Every check happens before the first byte is written, so an error leaves
//! the packet, its metadata and the key unchanged. Nothing here allocates.

use std::fmt;

use ofproto::Field;

use crate::flow::extract::{ethertype, extract, ipproto, Malformed, MAX_IPV6_EXT_HEADERS};
use crate::flow::key::{FlowKey, FRAG_ANY, FRAG_LATER};
use crate::packet::{csum, Packet};

use super::vlan;

/// Why a rewrite was refused (nothing was changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewriteError {
    /// The field is not a writable packet-header field: pipeline metadata
    /// (`in_port`, registers, `metadata`, `ct_*`), a read-only field, or an
    /// unknown field id.
    NotAHeaderField,
    /// The packet has no header holding the field (`tp_src` of an ICMP
    /// packet, any L4 field of a later fragment, `nw_src` of IPv6, ...).
    HeaderAbsent,
    /// No headroom for a VLAN tag.
    NoRoom,
}

impl fmt::Display for RewriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RewriteError::NotAHeaderField => "field is not a writable packet header field",
            RewriteError::HeaderAbsent => "packet has no header holding the field",
            RewriteError::NoRoom => "no headroom for the new header",
        })
    }
}

impl std::error::Error for RewriteError {}

/// The header family a writable field lives in, with where it sits and
/// which key setter follows it.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// An Ethernet address at this frame offset.
    EthAddr(usize, fn(&mut FlowKey, u64)),
    /// The outer VLAN TCI (`vlan_tci` and its views).
    VlanTci,
    /// An IPv4 address at this offset in the IPv4 header.
    Ipv4Addr(usize, fn(&mut FlowKey, u32)),
    /// The IPv4 TOS byte / IPv6 traffic class (`nw_tos` and its views).
    Tos,
    /// IPv4 TTL / IPv6 hop limit.
    Ttl,
    /// A TCP/UDP/SCTP port at this offset in the L4 header.
    L4Port(usize, fn(&mut FlowKey, u16)),
    /// An IPv6 address at this offset in the IPv6 header.
    Ipv6Addr(usize, fn(&mut FlowKey, u128)),
    /// The IPv6 flow label.
    Ipv6Label,
    /// The ARP opcode.
    ArpOp,
    /// An ARP protocol (IPv4) address at this offset in the ARP packet.
    ArpPa(usize, fn(&mut FlowKey, u32)),
    /// An ARP hardware address at this offset in the ARP packet.
    ArpHa(usize, fn(&mut FlowKey, u64)),
    /// ICMP (`v6 == false`) or ICMPv6 type (`at == 0`) or code (`at == 1`).
    Icmp {
        v6: bool,
        at: usize,
        set: fn(&mut FlowKey, u16),
    },
}

/// Every writable header field of ofproto and where it lives. Writable
/// fields not listed here are metadata.
const TARGETS: &[(Field, Target)] = &[
    (Field::DL_DST, Target::EthAddr(0, FlowKey::set_dl_dst)),
    (Field::DL_SRC, Target::EthAddr(6, FlowKey::set_dl_src)),
    (Field::VLAN_TCI, Target::VlanTci),
    (Field::DL_VLAN, Target::VlanTci),
    (Field::DL_VLAN_PCP, Target::VlanTci),
    (Field::NW_SRC, Target::Ipv4Addr(12, FlowKey::set_nw_src)),
    (Field::NW_DST, Target::Ipv4Addr(16, FlowKey::set_nw_dst)),
    (Field::NW_TOS, Target::Tos),
    (Field::IP_DSCP, Target::Tos),
    (Field::NW_ECN, Target::Tos),
    (Field::NW_TTL, Target::Ttl),
    (Field::TP_SRC, Target::L4Port(0, FlowKey::set_tp_src)),
    (Field::TP_DST, Target::L4Port(2, FlowKey::set_tp_dst)),
    (Field::IPV6_SRC, Target::Ipv6Addr(8, FlowKey::set_ipv6_src)),
    (Field::IPV6_DST, Target::Ipv6Addr(24, FlowKey::set_ipv6_dst)),
    (Field::IPV6_LABEL, Target::Ipv6Label),
    (Field::ARP_OP, Target::ArpOp),
    (Field::ARP_SPA, Target::ArpPa(14, FlowKey::set_nw_src)),
    (Field::ARP_TPA, Target::ArpPa(24, FlowKey::set_nw_dst)),
    (Field::ARP_SHA, Target::ArpHa(8, FlowKey::set_arp_sha)),
    (Field::ARP_THA, Target::ArpHa(18, FlowKey::set_arp_tha)),
    (
        Field::ICMP_TYPE,
        Target::Icmp {
            v6: false,
            at: 0,
            set: FlowKey::set_tp_src,
        },
    ),
    (
        Field::ICMP_CODE,
        Target::Icmp {
            v6: false,
            at: 1,
            set: FlowKey::set_tp_dst,
        },
    ),
    (
        Field::ICMPV6_TYPE,
        Target::Icmp {
            v6: true,
            at: 0,
            set: FlowKey::set_tp_src,
        },
    ),
    (
        Field::ICMPV6_CODE,
        Target::Icmp {
            v6: true,
            at: 1,
            set: FlowKey::set_tp_dst,
        },
    ),
];

/// Write `value` into the bits `mask` of `field` of the packet (bytes) and
/// keep `key` in step.
///
/// Handles every writable header field of ofproto: `dl_src`, `dl_dst`,
/// `vlan_tci` (outer tag; a value that clears the 0x1000 present bit pops
/// the tag, setting it on an untagged packet pushes an 0x8100 tag; see
/// [`vlan`] for the wire DEI bit) and its views `dl_vlan`/`dl_vlan_pcp`,
/// `nw_src`, `nw_dst`, `nw_tos`/`ip_dscp`, `nw_ecn`, `nw_ttl`, `tp_src`,
/// `tp_dst` (TCP, UDP, SCTP), `ipv6_src`, `ipv6_dst`, `ipv6_label`,
/// `arp_op`/`arp_spa`/`arp_tpa`/`arp_sha`/`arp_tha`, `icmp_type`/
/// `icmp_code`, `icmpv6_type`/`icmpv6_code`. Value and mask are the field's
/// ofproto values (bits beyond its width are ignored).
///
/// Metadata-only fields (`in_port`, regs, xregs, `metadata`, `ct_*`) and
/// read-only fields return [`RewriteError::NotAHeaderField`] and change
/// nothing; a field whose header is not in the packet returns
/// [`RewriteError::HeaderAbsent`] and changes nothing.
pub fn set_field(
    pkt: &mut Packet,
    key: &mut FlowKey,
    field: Field,
    value: u128,
    mask: u128,
) -> Result<(), RewriteError> {
    let target = TARGETS
        .iter()
        .find(|(f, _)| *f == field)
        .map(|(_, t)| *t)
        .ok_or(RewriteError::NotAHeaderField)?;
    // Only fields of the table get here, so `info()` has an entry.
    let ones = field.info().slot.ones();
    let (v, m) = (value & mask & ones, mask & ones);
    match target {
        Target::EthAddr(at, set) => eth_addr(pkt, key, at, set, v, m),
        Target::VlanTci => {
            let (v, m) = in_storage(field, Field::VLAN_TCI, v, m);
            vlan::set_vlan_tci(pkt, key, v as u16, m as u16)
        }
        Target::Ipv4Addr(at, set) => ipv4_addr(pkt, key, at, set, v, m),
        Target::Tos => {
            // nw_ecn is the low two bits of the TOS byte: the byte starts at
            // its slot.
            let (v, m) = in_storage(field, Field::NW_ECN, v, m);
            ip_tos(pkt, key, v as u8, m as u8)
        }
        Target::Ttl => ip_ttl(pkt, key, v as u8, m as u8),
        Target::L4Port(at, set) => l4_port(pkt, key, at, set, v as u16, m as u16),
        Target::Ipv6Addr(at, set) => ipv6_addr(pkt, key, at, set, v, m),
        Target::Ipv6Label => ipv6_label(pkt, key, v as u32, m as u32),
        Target::ArpOp => arp_op(pkt, key, v as u8, m as u8),
        Target::ArpPa(at, set) => arp_field(pkt, key, at, 4, v, m, |k, x| set(k, x as u32)),
        Target::ArpHa(at, set) => arp_field(pkt, key, at, 6, v, m, |k, x| set(k, x as u64)),
        Target::Icmp { v6, at, set } => icmp(pkt, key, v6, at, set, v as u8, m as u8),
    }
}

/// Shift a view field's value and mask into its storage (`base` is the
/// field whose slot starts where the storage starts), adding the bits the
/// view implies (`dl_vlan` implies the VLAN present bit).
fn in_storage(field: Field, base: Field, v: u128, m: u128) -> (u128, u128) {
    let info = field.info();
    let rel = u32::from(info.slot.shift - base.info().slot.shift);
    let (mut v, mut m) = (v << rel, m << rel);
    if let Some((f, bits)) = info.implies {
        if f == base {
            v |= bits;
            m |= bits;
        }
    }
    (v, m)
}

// ---------------------------------------------------------------------------
// Byte and layer helpers

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// The big-endian number in `b` (at most 16 bytes).
#[inline]
fn get_be(b: &[u8]) -> u128 {
    b.iter().fold(0, |a, &x| (a << 8) | u128::from(x))
}

/// Write the bits `m` of `v` into the big-endian field `b`; returns the old
/// and new values.
#[inline]
fn write_masked(b: &mut [u8], v: u128, m: u128) -> (u128, u128) {
    let old = get_be(b);
    let new = (old & !m) | (v & m);
    let n = b.len();
    for (i, x) in b.iter_mut().enumerate() {
        *x = (new >> (8 * (n - 1 - i))) as u8;
    }
    (old, new)
}

/// Apply `update` to the 16-bit checksum at `at`. A UDP checksum of 0
/// ("none") stays 0, and a UDP result of 0 is written as 0xffff.
#[inline]
fn patch_csum(frame: &mut [u8], at: usize, udp: bool, update: impl FnOnce(u16) -> u16) {
    let old = be16(frame, at);
    if udp && old == 0 {
        return;
    }
    let new = update(old);
    put16(frame, at, if udp && new == 0 { 0xffff } else { new });
}

/// True unless extraction stopped before filling the L3 fields of the key.
fn parsed_l3(key: &FlowKey) -> bool {
    use Malformed::*;
    !matches!(
        Malformed::from_code(key.malformed_code()),
        Some(
            EthTruncated
                | VlanTruncated
                | VlanTooDeep
                | LlcTruncated
                | ArpTruncated
                | Ipv4Truncated
                | Ipv4BadVersion
                | Ipv4BadIhl
                | Ipv4OptionsTruncated
                | Ipv4TotalLenTooShort
                | Ipv4TotalLenTooLong
                | Ipv6Truncated
                | Ipv6BadVersion
                | Ipv6PayloadLenTooLong
        )
    )
}

/// True unless extraction stopped before filling the L4 fields of the key.
fn parsed_l4(key: &FlowKey) -> bool {
    use Malformed::*;
    parsed_l3(key)
        && !matches!(
            Malformed::from_code(key.malformed_code()),
            Some(
                Ipv6ExtTruncated
                    | Ipv6TooManyExt
                    | TcpTruncated
                    | TcpBadDataOffset
                    | UdpTruncated
                    | SctpTruncated
                    | IcmpTruncated
                    | Icmpv6Truncated
            )
        )
}

/// Where an IP header is: its offset, the end of the datagram (Ethernet
/// padding excluded), and its version.
#[derive(Clone, Copy)]
struct Ip {
    ofs: usize,
    end: usize,
    v6: bool,
}

/// The IP header extraction found, if any.
fn ip_layer(pkt: &Packet, key: &FlowKey) -> Option<Ip> {
    let v6 = match key.dl_type() {
        ethertype::IPV4 => false,
        ethertype::IPV6 => true,
        _ => return None,
    };
    let ofs = pkt.meta.l3_offset().filter(|_| parsed_l3(key))?;
    let frame = pkt.data();
    let (hdr, len) = if v6 {
        (40, 40 + usize::from(be16(frame.get(ofs..ofs + 40)?, 4)))
    } else {
        (20, usize::from(be16(frame.get(ofs..ofs + 20)?, 2)))
    };
    let end = (ofs + len).min(frame.len());
    (end >= ofs + hdr).then_some(Ip { ofs, end, v6 })
}

/// The L4 header offset if the packet has one (not a later fragment) with
/// at least `need` bytes before the end of the datagram.
fn l4_layer(pkt: &Packet, key: &FlowKey, ip: &Ip, need: usize) -> Option<usize> {
    let l4 = pkt.meta.l4_offset()?;
    (key.nw_frag() & FRAG_LATER == 0 && l4 >= ip.ofs && l4 + need <= ip.end).then_some(l4)
}

/// The L4 header offset, if extraction parsed an L4 header of protocol
/// `proto` (so the key holds its fields) with `need` bytes.
fn parsed_l4_header(pkt: &Packet, key: &FlowKey, ip: &Ip, proto: u8, need: usize) -> Option<usize> {
    (key.nw_proto() == proto && parsed_l4(key))
        .then(|| l4_layer(pkt, key, ip, need))
        .flatten()
}

/// The offset of the L4 checksum that covers the IP pseudo header, and
/// whether it is UDP's: TCP, UDP, and ICMPv6 over IPv6.
fn pseudo_csum(pkt: &Packet, key: &FlowKey, ip: &Ip) -> Option<(usize, bool)> {
    let (at, udp) = match key.nw_proto() {
        ipproto::TCP => (16, false),
        ipproto::UDP => (6, true),
        ipproto::ICMPV6 if ip.v6 => (2, false),
        _ => return None,
    };
    let l4 = l4_layer(pkt, key, ip, at + 2)?;
    Some((l4 + at, udp))
}

/// Re-extract the key from the frame, keeping the key's pipeline metadata
/// (in_port, recirc_id, ct_*, metadata), and refresh the packet's offsets.
/// For the rare rewrites that change how the rest of the frame parses (an
/// ICMPv6 type turning into or out of neighbour discovery, a pop that
/// brings a too-deep tag stack within reach).
pub(crate) fn reparse(pkt: &mut Packet, key: &mut FlowKey) {
    let mut meta = pkt.meta;
    let mut fresh = FlowKey::ZERO;
    // The outcome is recorded in the key's malformed code.
    let _ = extract(pkt.data(), &mut meta, &mut fresh);
    fresh.set_in_port_raw(key.in_port_raw());
    fresh.set_recirc_id(key.recirc_id());
    fresh.set_ct_state(key.ct_state());
    fresh.set_ct_mark(key.ct_mark());
    fresh.set_ct_zone(key.ct_zone());
    fresh.set_ct_label(key.ct_label());
    fresh.set_metadata(key.metadata());
    *key = fresh;
    pkt.meta.l3_ofs = meta.l3_ofs;
    pkt.meta.l4_ofs = meta.l4_ofs;
}

// ---------------------------------------------------------------------------
// One function per field family

/// `dl_src`, `dl_dst`.
fn eth_addr(
    pkt: &mut Packet,
    key: &mut FlowKey,
    at: usize,
    set: fn(&mut FlowKey, u64),
    v: u128,
    m: u128,
) -> Result<(), RewriteError> {
    let frame = pkt.data_mut();
    if frame.len() < 14 {
        return Err(RewriteError::HeaderAbsent);
    }
    let (_, new) = write_masked(&mut frame[at..at + 6], v, m);
    set(key, new as u64);
    Ok(())
}

/// `nw_src`, `nw_dst` (IPv4): IPv4 header checksum, TCP/UDP pseudo header.
fn ipv4_addr(
    pkt: &mut Packet,
    key: &mut FlowKey,
    at: usize,
    set: fn(&mut FlowKey, u32),
    v: u128,
    m: u128,
) -> Result<(), RewriteError> {
    let ip = ip_layer(pkt, key)
        .filter(|ip| !ip.v6)
        .ok_or(RewriteError::HeaderAbsent)?;
    let l4_csum = pseudo_csum(pkt, key, &ip);
    let frame = pkt.data_mut();
    let (old, new) = write_masked(&mut frame[ip.ofs + at..ip.ofs + at + 4], v, m);
    let (old, new) = (old as u32, new as u32);
    patch_csum(frame, ip.ofs + 10, false, |c| csum::update32(c, old, new));
    if let Some((c, udp)) = l4_csum {
        patch_csum(frame, c, udp, |c| csum::update32(c, old, new));
    }
    set(key, new);
    Ok(())
}

/// `nw_tos`, `ip_dscp`, `nw_ecn`, given as the whole TOS byte (IPv6:
/// traffic class) and a mask of it.
fn ip_tos(pkt: &mut Packet, key: &mut FlowKey, v: u8, m: u8) -> Result<(), RewriteError> {
    let ip = ip_layer(pkt, key).ok_or(RewriteError::HeaderAbsent)?;
    let frame = pkt.data_mut();
    let h = ip.ofs;
    let new = if ip.v6 {
        // Version (4 bits), traffic class (8), flow label (20).
        let tc = (frame[h] << 4) | (frame[h + 1] >> 4);
        let new = (tc & !m) | (v & m);
        frame[h] = (frame[h] & 0xf0) | (new >> 4);
        frame[h + 1] = (frame[h + 1] & 0x0f) | (new << 4);
        new
    } else {
        let old_word = be16(frame, h);
        let new = (frame[h + 1] & !m) | (v & m);
        frame[h + 1] = new;
        let new_word = be16(frame, h);
        patch_csum(frame, h + 10, false, |c| {
            csum::update16(c, old_word, new_word)
        });
        new
    };
    key.set_nw_tos(new);
    Ok(())
}

/// `nw_ttl`: IPv4 TTL (header checksum) or IPv6 hop limit.
fn ip_ttl(pkt: &mut Packet, key: &mut FlowKey, v: u8, m: u8) -> Result<(), RewriteError> {
    let ip = ip_layer(pkt, key).ok_or(RewriteError::HeaderAbsent)?;
    let frame = pkt.data_mut();
    let h = ip.ofs;
    let new = if ip.v6 {
        let new = (frame[h + 7] & !m) | (v & m);
        frame[h + 7] = new;
        new
    } else {
        // TTL shares a checksum word with the protocol.
        let old_word = be16(frame, h + 8);
        let new = (frame[h + 8] & !m) | (v & m);
        frame[h + 8] = new;
        let new_word = be16(frame, h + 8);
        patch_csum(frame, h + 10, false, |c| {
            csum::update16(c, old_word, new_word)
        });
        new
    };
    key.set_nw_ttl(new);
    Ok(())
}

/// `tp_src`, `tp_dst` of TCP, UDP (Internet checksum) and SCTP (CRC32c,
/// recomputed over the packet).
fn l4_port(
    pkt: &mut Packet,
    key: &mut FlowKey,
    at: usize,
    set: fn(&mut FlowKey, u16),
    v: u16,
    m: u16,
) -> Result<(), RewriteError> {
    let ip = ip_layer(pkt, key).ok_or(RewriteError::HeaderAbsent)?;
    let proto = key.nw_proto();
    let (need, csum_at) = match proto {
        ipproto::TCP => (20, 16),
        ipproto::UDP => (8, 6),
        ipproto::SCTP => (12, 8),
        _ => return Err(RewriteError::HeaderAbsent),
    };
    let l4 = parsed_l4_header(pkt, key, &ip, proto, need).ok_or(RewriteError::HeaderAbsent)?;
    let frame = pkt.data_mut();
    let old = be16(frame, l4 + at);
    let new = (old & !m) | (v & m);
    put16(frame, l4 + at, new);
    if proto == ipproto::SCTP {
        if key.nw_frag() & FRAG_ANY == 0 {
            let sctp = &mut frame[l4..ip.end];
            sctp[8..12].fill(0);
            let crc = crc32c(sctp);
            // SCTP stores the CRC32c least significant byte first.
            sctp[8..12].copy_from_slice(&crc.to_le_bytes());
        }
    } else {
        let udp = proto == ipproto::UDP;
        patch_csum(frame, l4 + csum_at, udp, |c| csum::update16(c, old, new));
    }
    set(key, new);
    Ok(())
}

/// `ipv6_src`, `ipv6_dst`: TCP/UDP/ICMPv6 pseudo header.
fn ipv6_addr(
    pkt: &mut Packet,
    key: &mut FlowKey,
    at: usize,
    set: fn(&mut FlowKey, u128),
    v: u128,
    m: u128,
) -> Result<(), RewriteError> {
    let ip = ip_layer(pkt, key)
        .filter(|ip| ip.v6)
        .ok_or(RewriteError::HeaderAbsent)?;
    let mut l4_csum = pseudo_csum(pkt, key, &ip);
    if at == 24 && routing_pending(pkt.data(), ip.ofs, pkt.meta.l4_offset()) {
        l4_csum = None;
    }
    let frame = pkt.data_mut();
    let (old, new) = write_masked(&mut frame[ip.ofs + at..ip.ofs + at + 16], v, m);
    if let Some((c, udp)) = l4_csum {
        let (o, n) = (old.to_be_bytes(), new.to_be_bytes());
        patch_csum(frame, c, udp, |c| csum::update_bytes(c, &o, &n));
    }
    set(key, new);
    Ok(())
}

/// True if a Routing header with segments left lies between the IPv6
/// header at `l3` and the L4 header: the L4 pseudo header then holds the
/// final destination, not the IPv6 destination.
fn routing_pending(frame: &[u8], l3: usize, l4: Option<usize>) -> bool {
    let Some(l4) = l4 else { return false };
    let Some(mut next) = frame.get(l3 + 6).copied() else {
        return false;
    };
    let mut at = l3 + 40;
    for _ in 0..=MAX_IPV6_EXT_HEADERS {
        if at >= l4 {
            return false;
        }
        let Some(h) = frame.get(at..at + 4) else {
            return false;
        };
        let len = match next {
            ipproto::ROUTING if h[3] != 0 => return true,
            ipproto::AH => (usize::from(h[1]) + 2) * 4,
            ipproto::FRAGMENT => 8,
            _ => (usize::from(h[1]) + 1) * 8,
        };
        next = h[0];
        at += len;
    }
    false
}

/// `ipv6_label` (no checksum covers it).
fn ipv6_label(pkt: &mut Packet, key: &mut FlowKey, v: u32, m: u32) -> Result<(), RewriteError> {
    let ip = ip_layer(pkt, key)
        .filter(|ip| ip.v6)
        .ok_or(RewriteError::HeaderAbsent)?;
    let frame = pkt.data_mut();
    // The label is the low 20 bits of the first word.
    let (_, new) = write_masked(
        &mut frame[ip.ofs..ip.ofs + 4],
        u128::from(v),
        u128::from(m & 0xf_ffff),
    );
    key.set_ipv6_label(new as u32 & 0xf_ffff);
    Ok(())
}

/// The offset of an Ethernet/IPv4 ARP packet, the only kind whose fields
/// the key holds.
fn arp_layer(pkt: &Packet, key: &FlowKey) -> Option<usize> {
    if !matches!(key.dl_type(), ethertype::ARP | ethertype::RARP) || !parsed_l3(key) {
        return None;
    }
    let ofs = pkt.meta.l3_offset()?;
    let a = pkt.data().get(ofs..ofs + 28)?;
    (a[..6] == [0, 1, 8, 0, 6, 4]).then_some(ofs)
}

/// `arp_op`. ofproto holds the opcode's low byte; the written opcode is
/// that byte (the high byte is cleared).
fn arp_op(pkt: &mut Packet, key: &mut FlowKey, v: u8, m: u8) -> Result<(), RewriteError> {
    let a = arp_layer(pkt, key).ok_or(RewriteError::HeaderAbsent)?;
    let frame = pkt.data_mut();
    let new = (frame[a + 7] & !m) | (v & m);
    put16(frame, a + 6, u16::from(new));
    key.set_nw_proto(new);
    Ok(())
}

/// `arp_spa`, `arp_tpa`, `arp_sha`, `arp_tha`: `len` bytes at `at`.
fn arp_field(
    pkt: &mut Packet,
    key: &mut FlowKey,
    at: usize,
    len: usize,
    v: u128,
    m: u128,
    set: impl FnOnce(&mut FlowKey, u128),
) -> Result<(), RewriteError> {
    let a = arp_layer(pkt, key).ok_or(RewriteError::HeaderAbsent)?;
    let frame = pkt.data_mut();
    let (_, new) = write_masked(&mut frame[a + at..a + at + len], v, m);
    set(key, new);
    Ok(())
}

/// ICMPv6 neighbour solicitation and advertisement (with code 0) are
/// parsed further by extraction.
fn is_nd(type_code: u16) -> bool {
    matches!(type_code, 0x8700 | 0x8800)
}

/// `icmp_type`/`icmp_code` (`v6 == false`), `icmpv6_type`/`icmpv6_code`:
/// one byte at `at` in the ICMP header, and the ICMP checksum.
fn icmp(
    pkt: &mut Packet,
    key: &mut FlowKey,
    v6: bool,
    at: usize,
    set: fn(&mut FlowKey, u16),
    v: u8,
    m: u8,
) -> Result<(), RewriteError> {
    let ip = ip_layer(pkt, key)
        .filter(|ip| ip.v6 == v6)
        .ok_or(RewriteError::HeaderAbsent)?;
    let proto = if v6 { ipproto::ICMPV6 } else { ipproto::ICMP };
    let l4 = parsed_l4_header(pkt, key, &ip, proto, 4).ok_or(RewriteError::HeaderAbsent)?;
    let frame = pkt.data_mut();
    let old_word = be16(frame, l4);
    let new = (frame[l4 + at] & !m) | (v & m);
    frame[l4 + at] = new;
    let new_word = be16(frame, l4);
    patch_csum(frame, l4 + 2, false, |c| {
        csum::update16(c, old_word, new_word)
    });
    set(key, u16::from(new));
    if v6 && old_word != new_word && (is_nd(old_word) || is_nd(new_word)) {
        // The ND target and link-layer options are parsed, or no longer.
        reparse(pkt, key);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// CRC32c (Castagnoli), for SCTP

/// Byte-wise table of the reflected CRC32c polynomial 0x82f63b78.
const CRC32C_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82f6_3b78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// The CRC32c of `data` (RFC 9260 appendix A).
fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC32C_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
pub(crate) mod tests {}
