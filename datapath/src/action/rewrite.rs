//! Header rewrites: ofproto's `set_field` applied to a packet.
//!
//! [`set_field`] writes the bits `mask` of one writable ofproto
//! [`Field`] into the frame, patches every checksum that covers the changed
//! bytes, and updates the datapath [`FlowKey`] so that it stays what
//! [`extract()`] would produce from the rewritten frame. The packet's L3/L4
//! offsets (from extraction, [`crate::PacketMeta::l3_ofs`]/`l4_ofs`) locate
//! the headers; the key says which headers extraction found.
//!
//! One rewrite changes how the rest of the frame parses: an ICMPv6 type or
//! code turning a message into or out of neighbour discovery (whose target
//! and link-layer options extraction reads). The key is then extracted
//! again from the frame, keeping its pipeline metadata (in_port, recirc_id,
//! ct_*, metadata).
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
    /// The ICMP type (offset 0) or code (offset 1).
    Icmp(usize, fn(&mut FlowKey, u16)),
    /// The ICMPv6 type (offset 0) or code (offset 1).
    Icmpv6(usize, fn(&mut FlowKey, u16)),
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
    (Field::ICMP_TYPE, Target::Icmp(0, FlowKey::set_tp_src)),
    (Field::ICMP_CODE, Target::Icmp(1, FlowKey::set_tp_dst)),
    (Field::ICMPV6_TYPE, Target::Icmpv6(0, FlowKey::set_tp_src)),
    (Field::ICMPV6_CODE, Target::Icmpv6(1, FlowKey::set_tp_dst)),
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
        Target::Icmp(at, set) => icmp(pkt, key, false, at, set, v as u8, m as u8),
        Target::Icmpv6(at, set) => icmp(pkt, key, true, at, set, v as u8, m as u8),
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
// `&[a..b]` below is a list of byte ranges that holds one range.
#[allow(clippy::single_range_in_vec_init)]
pub(crate) mod tests {
    //! Packets are built with smoltcp's wire views (and by hand where smoltcp
    //! has no builder). After every rewrite, [`assert_consistent`] checks
    //! that each checksum equals a full recomputation and that extraction
    //! of the rewritten frame gives exactly the updated key and offsets.

    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::ops::Range;

    use proptest::prelude::*;
    use smoltcp::wire::{
        ArpOperation, ArpPacket, ArpRepr, EthernetAddress, Icmpv4Packet, Icmpv6Packet, IpAddress,
        IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket,
    };

    use super::*;
    use crate::flow::key::{mac_to_u64, u64_to_mac};
    use crate::packet::{PacketMeta, PortNo};

    pub(crate) const DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
    pub(crate) const SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    pub(crate) const V4_SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    pub(crate) const V4_DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    pub(crate) const V6_SRC: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
    pub(crate) const V6_DST: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
    /// IPv4 TOS / IPv6 traffic class of built packets: DSCP 46 (EF), ECN 1.
    const TOS: u8 = 0xb9;

    /// Ethernet header, VLAN tags `(tpid, tci)`, then `l3`.
    pub(crate) fn eth(ethertype: u16, vlans: &[(u16, u16)], l3: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&DST);
        f.extend_from_slice(&SRC);
        for (tpid, tci) in vlans {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(l3);
        f
    }

    /// An IPv4 header (TOS [`TOS`], TTL 64) before `payload`, with the
    /// fragment fields given.
    fn ipv4_with(
        proto: u8,
        (src, dst): (Ipv4Addr, Ipv4Addr),
        (more, offset): (bool, u16),
        payload: &[u8],
    ) -> Vec<u8> {
        let len = 20 + payload.len();
        let mut b = vec![0u8; len];
        b[20..].copy_from_slice(payload);
        let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
        p.set_version(4);
        p.set_header_len(20);
        p.set_dscp(TOS >> 2);
        p.set_ecn(TOS & 3);
        p.set_total_len(len as u16);
        p.set_ident(0x1234);
        p.set_more_frags(more);
        p.set_frag_offset(offset);
        p.set_hop_limit(64);
        p.set_next_header(IpProtocol::from(proto));
        p.set_src_addr(src);
        p.set_dst_addr(dst);
        p.fill_checksum();
        b
    }

    pub(crate) fn ipv4(proto: u8, payload: &[u8]) -> Vec<u8> {
        ipv4_with(proto, (V4_SRC, V4_DST), (false, 0), payload)
    }

    /// An IPv6 header (traffic class [`TOS`], label 0x12345, hop limit 64).
    fn ipv6_with(next: u8, (src, dst): (Ipv6Addr, Ipv6Addr), payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 40 + payload.len()];
        b[40..].copy_from_slice(payload);
        let mut p = Ipv6Packet::new_unchecked(&mut b[..]);
        p.set_version(6);
        p.set_traffic_class(TOS);
        p.set_flow_label(0x12345);
        p.set_payload_len(payload.len() as u16);
        p.set_next_header(IpProtocol::from(next));
        p.set_hop_limit(64);
        p.set_src_addr(src);
        p.set_dst_addr(dst);
        b
    }

    pub(crate) fn ipv6(next: u8, payload: &[u8]) -> Vec<u8> {
        ipv6_with(next, (V6_SRC, V6_DST), payload)
    }

    fn tcp(addrs: (IpAddress, IpAddress), sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 20 + data.len()];
        b[20..].copy_from_slice(data);
        let mut t = TcpPacket::new_unchecked(&mut b[..]);
        t.set_src_port(sport);
        t.set_dst_port(dport);
        t.set_header_len(20);
        t.set_seq_number(smoltcp::wire::TcpSeqNumber(1000));
        t.set_ack(true);
        t.set_window_len(65535);
        t.fill_checksum(&addrs.0, &addrs.1);
        b
    }

    fn udp(addrs: (IpAddress, IpAddress), sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
        let len = 8 + data.len();
        let mut b = vec![0u8; len];
        b[8..].copy_from_slice(data);
        let mut u = UdpPacket::new_unchecked(&mut b[..]);
        u.set_src_port(sport);
        u.set_dst_port(dport);
        u.set_len(len as u16);
        u.fill_checksum(&addrs.0, &addrs.1);
        b
    }

    /// CRC32c bit by bit, as an independent reference for the table.
    fn crc32c_reference(data: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = (c >> 1) ^ (0x82f6_3b78 & (c & 1).wrapping_neg());
            }
        }
        !c
    }

    /// An SCTP common header and one DATA-like chunk, with its CRC32c.
    fn sctp(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 12];
        b[0..2].copy_from_slice(&sport.to_be_bytes());
        b[2..4].copy_from_slice(&dport.to_be_bytes());
        b[4..8].copy_from_slice(&0xdead_beefu32.to_be_bytes());
        b.extend_from_slice(data);
        let crc = crc32c_reference(&b);
        b[8..12].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn icmp4(ty: u8, code: u8) -> Vec<u8> {
        let mut b = vec![0u8; 16];
        b[8..].copy_from_slice(b"pingpong");
        let mut p = Icmpv4Packet::new_unchecked(&mut b[..]);
        p.set_msg_type(ty.into());
        p.set_msg_code(code);
        p.set_echo_ident(7);
        p.fill_checksum();
        b
    }

    pub(crate) fn icmp6(ty: u8, code: u8, body: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 4 + body.len()];
        b[4..].copy_from_slice(body);
        let mut p = Icmpv6Packet::new_unchecked(&mut b[..]);
        p.set_msg_type(ty.into());
        p.set_msg_code(code);
        p.fill_checksum(&V6_SRC, &V6_DST);
        b
    }

    /// A neighbour-solicitation body: reserved, target, SLL option.
    fn ns_body() -> Vec<u8> {
        let mut body = vec![0u8; 4];
        body.extend_from_slice(&V6_DST.octets());
        body.extend_from_slice(&[1, 1]);
        body.extend_from_slice(&SRC);
        body
    }

    fn arp(op: ArpOperation) -> Vec<u8> {
        let repr = ArpRepr::EthernetIpv4 {
            operation: op,
            source_hardware_addr: EthernetAddress(SRC),
            source_protocol_addr: V4_SRC,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: V4_DST,
        };
        let mut b = vec![0u8; repr.buffer_len()];
        repr.emit(&mut ArpPacket::new_unchecked(&mut b[..]));
        b
    }

    /// The L4 protocols of built packets.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum L4 {
        Tcp,
        Udp,
        /// UDP with checksum 0 ("none").
        UdpNoCsum,
        Sctp,
        /// ICMP echo request over IPv4, ICMPv6 echo request over IPv6.
        Icmp,
    }

    fn v4_addrs() -> (IpAddress, IpAddress) {
        (IpAddress::Ipv4(V4_SRC), IpAddress::Ipv4(V4_DST))
    }

    fn v6_addrs() -> (IpAddress, IpAddress) {
        (IpAddress::Ipv6(V6_SRC), IpAddress::Ipv6(V6_DST))
    }

    fn l4_bytes(l4: L4, addrs: (IpAddress, IpAddress), v6: bool) -> (u8, Vec<u8>) {
        let data = b"0123456789abcdefghi";
        match l4 {
            L4::Tcp => (ipproto::TCP, tcp(addrs, 1234, 80, data)),
            L4::Udp => (ipproto::UDP, udp(addrs, 5353, 53, data)),
            L4::UdpNoCsum => {
                let mut u = udp(addrs, 5353, 53, data);
                u[6..8].fill(0);
                (ipproto::UDP, u)
            }
            L4::Sctp => (ipproto::SCTP, sctp(2905, 2906, data)),
            L4::Icmp if v6 => (ipproto::ICMPV6, icmp6(128, 0, &[0, 7, 0, 1])),
            L4::Icmp => (ipproto::ICMP, icmp4(8, 0)),
        }
    }

    /// An untagged IPv4 frame carrying `l4` (L3 at 14, L4 at 34).
    pub(crate) fn v4_frame(l4: L4) -> Vec<u8> {
        let (proto, seg) = l4_bytes(l4, v4_addrs(), false);
        eth(ethertype::IPV4, &[], &ipv4(proto, &seg))
    }

    /// An untagged IPv6 frame carrying `l4` (L3 at 14, L4 at 54).
    pub(crate) fn v6_frame(l4: L4) -> Vec<u8> {
        let (proto, seg) = l4_bytes(l4, v6_addrs(), true);
        eth(ethertype::IPV6, &[], &ipv6(proto, &seg))
    }

    /// The frame in a packet (received on port 1) and its extracted key.
    pub(crate) fn parse(frame: &[u8]) -> (Packet, FlowKey) {
        let mut pkt = Packet::from_bytes(frame);
        pkt.meta = PacketMeta::new(PortNo(1));
        let mut key = FlowKey::ZERO;
        let (data, meta) = pkt.data_and_meta_mut();
        let _ = extract(data, meta, &mut key);
        (pkt, key)
    }

    /// Extraction of the packet's frame gives exactly `key` and the packet's
    /// offsets.
    pub(crate) fn assert_key_in_step(pkt: &Packet, key: &FlowKey) {
        let mut meta = pkt.meta;
        let mut fresh = FlowKey::ZERO;
        let _ = extract(pkt.data(), &mut meta, &mut fresh);
        assert_eq!(fresh, *key, "key out of step with the frame");
        assert_eq!(
            (meta.l3_ofs, meta.l4_ofs),
            (pkt.meta.l3_ofs, pkt.meta.l4_ofs),
            "offsets out of step with the frame"
        );
    }

    /// Checksums and re-extraction both agree with the rewritten frame.
    pub(crate) fn assert_consistent(pkt: &Packet, key: &FlowKey) {
        assert_key_in_step(pkt, key);
        assert_checksums(pkt.data(), key, &pkt.meta);
    }

    /// 0x0000 and 0xffff are the same ones'-complement number.
    fn same_csum(a: u16, b: u16) -> bool {
        a == b || (a | b == 0xffff && a & b == 0)
    }

    /// The checksum of `data` with its checksum field at `at` zeroed,
    /// starting from the pseudo-header sum `pseudo`.
    fn full(data: &[u8], at: usize, pseudo: u64) -> u16 {
        let mut d = data.to_vec();
        d[at..at + 2].fill(0);
        csum::fold(csum::sum(pseudo, &d))
    }

    /// Every checksum in the frame equals a full recomputation (and
    /// smoltcp's verification agrees). L4 checksums of fragments are not
    /// checked: they cover bytes the packet does not hold.
    pub(crate) fn assert_checksums(frame: &[u8], key: &FlowKey, meta: &PacketMeta) {
        let (Some(l3), Some(l4)) = (meta.l3_offset(), meta.l4_offset()) else {
            return;
        };
        let proto = key.nw_proto();
        let (seg, pseudo, src, dst) = match key.dl_type() {
            ethertype::IPV4 => {
                let ip = &frame[l3..l3 + usize::from(be16(frame, l3 + 2))];
                assert!(Ipv4Packet::new_checked(ip).unwrap().verify_checksum());
                let stored = be16(ip, 10);
                assert!(same_csum(stored, full(&ip[..l4 - l3], 10, 0)));
                let seg = &ip[l4 - l3..];
                let (s, d) = (key.nw_src().to_be_bytes(), key.nw_dst().to_be_bytes());
                let pseudo = csum::pseudo_header_v4(s, d, proto, seg.len() as u16);
                let (s, d) = (Ipv4Addr::from(s), Ipv4Addr::from(d));
                (seg, pseudo, IpAddress::Ipv4(s), IpAddress::Ipv4(d))
            }
            ethertype::IPV6 => {
                let seg = &frame[l4..l3 + 40 + usize::from(be16(frame, l3 + 4))];
                let (s, d) = (key.ipv6_src().to_be_bytes(), key.ipv6_dst().to_be_bytes());
                let pseudo = csum::pseudo_header_v6(s, d, proto, seg.len() as u32);
                let (s, d) = (Ipv6Addr::from(s), Ipv6Addr::from(d));
                (seg, pseudo, IpAddress::Ipv6(s), IpAddress::Ipv6(d))
            }
            _ => return,
        };
        if key.nw_frag() != 0 {
            return;
        }
        match proto {
            ipproto::TCP => {
                assert!(TcpPacket::new_checked(seg)
                    .unwrap()
                    .verify_checksum(&src, &dst));
                assert!(same_csum(be16(seg, 16), full(seg, 16, pseudo)));
            }
            ipproto::UDP if be16(seg, 6) != 0 => {
                assert!(UdpPacket::new_checked(seg)
                    .unwrap()
                    .verify_checksum(&src, &dst));
                let want = match full(seg, 6, pseudo) {
                    0 => 0xffff,
                    c => c,
                };
                assert_eq!(be16(seg, 6), want, "UDP checksum");
            }
            ipproto::SCTP => {
                let mut s = seg.to_vec();
                s[8..12].fill(0);
                let want = crc32c_reference(&s).to_le_bytes();
                assert_eq!(&seg[8..12], &want, "SCTP CRC32c");
            }
            ipproto::ICMP if key.dl_type() == ethertype::IPV4 => {
                assert!(Icmpv4Packet::new_checked(seg).unwrap().verify_checksum());
                assert!(same_csum(be16(seg, 2), full(seg, 2, 0)));
            }
            ipproto::ICMPV6 if key.dl_type() == ethertype::IPV6 => {
                let (IpAddress::Ipv6(s), IpAddress::Ipv6(d)) = (src, dst) else {
                    unreachable!()
                };
                assert!(Icmpv6Packet::new_checked(seg)
                    .unwrap()
                    .verify_checksum(&s, &d));
                assert!(same_csum(be16(seg, 2), full(seg, 2, pseudo)));
            }
            _ => {}
        }
    }

    /// Only bytes in `allowed` differ between the frames (same length).
    pub(crate) fn assert_changed_only(before: &[u8], after: &[u8], allowed: &[Range<usize>]) {
        assert_eq!(before.len(), after.len());
        for (i, (a, b)) in before.iter().zip(after).enumerate() {
            if a != b {
                assert!(
                    allowed.iter().any(|r| r.contains(&i)),
                    "byte {i} changed: {a:#04x} -> {b:#04x}"
                );
            }
        }
    }

    /// Parse `frame`, rewrite, check consistency and that only `allowed`
    /// bytes changed; return the packet and key.
    fn rw(
        frame: &[u8],
        field: Field,
        value: u128,
        mask: u128,
        allowed: &[Range<usize>],
    ) -> (Packet, FlowKey) {
        let (mut pkt, mut key) = parse(frame);
        assert_eq!(key.malformed_code(), 0, "test frame must parse: {key:?}");
        set_field(&mut pkt, &mut key, field, value, mask).unwrap();
        assert_consistent(&pkt, &key);
        assert_changed_only(frame, pkt.data(), allowed);
        (pkt, key)
    }

    fn ones(f: Field) -> u128 {
        f.info().slot.ones()
    }

    /// Untagged frame offsets.
    const L3: usize = 14;
    const L4V4: usize = 34;
    const L4V6: usize = 54;

    #[test]
    fn crc32c_matches_known_vector_and_reference() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c_reference(b"123456789"), 0xe306_9283);
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        assert_eq!(crc32c(&data), crc32c_reference(&data));
    }

    #[test]
    fn every_writable_field_is_a_header_field_or_metadata() {
        let metadata = |f: Field| {
            matches!(
                f,
                Field::IN_PORT | Field::METADATA | Field::CT_MARK | Field::CT_LABEL
            ) || f >= Field::reg(0)
        };
        for f in Field::all() {
            let listed = TARGETS.iter().any(|(t, _)| *t == f);
            let info = f.info();
            assert!(!listed || info.writable, "{} is read-only", info.name);
            if info.writable {
                assert!(listed != metadata(f), "{}", info.name);
            }
        }
    }

    #[test]
    fn eth_addresses() {
        let f = v4_frame(L4::Tcp);
        let new = [0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f];
        let v = u128::from(mac_to_u64(&new));
        let (p, k) = rw(&f, Field::DL_SRC, v, ones(Field::DL_SRC), &[6..12]);
        assert_eq!(&p.data()[6..12], &new);
        assert_eq!(k.dl_src(), mac_to_u64(&new));
        // A mask writes only its bits: the OUI of dl_dst.
        let (p, k) = rw(&f, Field::DL_DST, v, 0xffff_ff00_0000, &[0..3]);
        assert_eq!(&p.data()[0..6], &[0x0a, 0x0b, 0x0c, 0, 0, 0x02]);
        assert_eq!(u64_to_mac(k.dl_dst()), [0x0a, 0x0b, 0x0c, 0, 0, 0x02]);
    }

    #[test]
    fn ipv4_addresses_patch_ip_and_pseudo_header_checksums() {
        let new = u128::from(u32::from(Ipv4Addr::new(192, 168, 7, 77)));
        for (l4, l4_csum) in [
            (L4::Tcp, Some(16)),
            (L4::Udp, Some(6)),
            (L4::Sctp, None),
            (L4::Icmp, None),
        ] {
            let f = v4_frame(l4);
            let mut allowed = vec![L3 + 10..L3 + 12, L3 + 12..L3 + 16];
            allowed.extend(l4_csum.map(|c| L4V4 + c..L4V4 + c + 2));
            let (p, k) = rw(&f, Field::NW_SRC, new, u128::from(u32::MAX), &allowed);
            assert_eq!(&p.data()[L3 + 12..L3 + 16], &[192, 168, 7, 77], "{l4:?}");
            assert_eq!(k.nw_src(), new as u32);
            if let Some(c) = l4_csum {
                assert_ne!(be16(p.data(), L4V4 + c), be16(&f, L4V4 + c));
            }
            // nw_dst with a /24 mask keeps the host byte.
            allowed[1] = L3 + 16..L3 + 19;
            let (p, k) = rw(&f, Field::NW_DST, new, 0xffff_ff00, &allowed);
            assert_eq!(&p.data()[L3 + 16..L3 + 20], &[192, 168, 7, 2], "{l4:?}");
            assert_eq!(k.nw_dst(), u32::from(Ipv4Addr::new(192, 168, 7, 2)));
        }
    }

    #[test]
    fn udp_checksum_zero_stays_zero() {
        let f = v4_frame(L4::UdpNoCsum);
        for (field, v) in [
            (Field::NW_SRC, 0x0101_0101),
            (Field::NW_DST, 0x0202_0202),
            (Field::TP_SRC, 1),
            (Field::TP_DST, 2),
        ] {
            let (p, _) = rw(&f, field, v, ones(field), &[L3..L4V4 + 4]);
            assert_eq!(be16(p.data(), L4V4 + 6), 0, "{}", field.name());
        }
        // The same over IPv6 (0 is only legal for tunnels there, but a
        // rewrite does not invent a checksum).
        let f = v6_frame(L4::UdpNoCsum);
        let (p, _) = rw(&f, Field::IPV6_SRC, 5, u128::MAX, &[L3 + 8..L3 + 24]);
        assert_eq!(be16(p.data(), L4V6 + 6), 0);
    }

    #[test]
    fn udp_update_that_yields_zero_writes_ffff() {
        // Choose a payload word so that, after tp_src 5353 -> 7, the UDP
        // checksum computes to 0 (sent as 0xffff).
        let (src, dst) = v4_addrs();
        let with = |sport: u16, word: u16| {
            let mut data = *b"0123456789";
            data[0..2].copy_from_slice(&word.to_be_bytes());
            udp((src, dst), sport, 53, &data)
        };
        let c0 = be16(&with(7, 0), 6);
        let target = with(7, c0);
        assert_eq!(be16(&target, 6), 0xffff, "the target sums to zero");
        let f = eth(ethertype::IPV4, &[], &ipv4(ipproto::UDP, &with(5353, c0)));
        let (p, k) = rw(
            &f,
            Field::TP_SRC,
            7,
            0xffff,
            &[L4V4..L4V4 + 2, L4V4 + 6..L4V4 + 8],
        );
        assert_eq!(k.tp_src(), 7);
        assert_eq!(be16(p.data(), L4V4 + 6), 0xffff);
    }

    #[test]
    fn fragments_patch_l4_only_when_it_is_there() {
        let (src, dst) = v4_addrs();
        let seg = tcp((src, dst), 1234, 80, &[0x5a; 60]); // 80 bytes
                                                          // First fragment: the first 40 bytes of the segment.
        let first = eth(
            ethertype::IPV4,
            &[],
            &ipv4_with(ipproto::TCP, (V4_SRC, V4_DST), (true, 0), &seg[..40]),
        );
        let (mut p, mut k) = parse(&first);
        assert_eq!(k.nw_frag(), FRAG_ANY);
        set_field(&mut p, &mut k, Field::TP_SRC, 4321, 0xffff).unwrap();
        set_field(&mut p, &mut k, Field::NW_DST, 0x0a09_0807, u128::MAX).unwrap();
        assert_consistent(&p, &k);
        // The incremental update is exact for the whole segment.
        let mut whole = p.data()[L4V4..].to_vec();
        whole.extend_from_slice(&seg[40..]);
        let new_dst = IpAddress::Ipv4(Ipv4Addr::from(0x0a09_0807u32));
        assert!(TcpPacket::new_checked(&whole[..])
            .unwrap()
            .verify_checksum(&src, &new_dst));

        // Later fragment: no L4 header, so L4 fields are absent and address
        // changes leave the payload alone.
        let later = eth(
            ethertype::IPV4,
            &[],
            &ipv4_with(ipproto::TCP, (V4_SRC, V4_DST), (false, 40), &seg[40..]),
        );
        let (p, k) = rw(&later, Field::NW_SRC, 7, u128::MAX, &[L3 + 10..L3 + 16]);
        assert_eq!(k.nw_frag(), FRAG_ANY | FRAG_LATER);
        assert_eq!(&p.data()[L4V4..], &seg[40..]);
        let (mut p, mut k) = parse(&later);
        assert_eq!(
            set_field(&mut p, &mut k, Field::TP_SRC, 1, 0xffff),
            Err(RewriteError::HeaderAbsent)
        );
    }

    #[test]
    fn tos_views_write_exactly_their_bits() {
        // TOS 0xb9 = DSCP 46 | ECN 1.
        for (field, v, m, want) in [
            (Field::NW_TOS, 10, 0x3f, 0x29),  // DSCP 10, ECN kept
            (Field::IP_DSCP, 10, 0x3f, 0x29), // same storage
            (Field::NW_TOS, 0, 0x20, 0x39),   // one DSCP bit
            (Field::NW_ECN, 2, 3, 0xba),      // ECN only
            (Field::NW_ECN, 3, 0x3ff, 0xbb),  // bits past the width ignored
        ] {
            let f = v4_frame(L4::Tcp);
            let (p, k) = rw(&f, field, v, m, &[L3..L3 + 2, L3 + 10..L3 + 12]);
            assert_eq!(p.data()[L3 + 1], want, "{} v4", field.name());
            assert_eq!(k.nw_tos(), want);

            let f = v6_frame(L4::Tcp);
            let (p, k) = rw(&f, field, v, m, &[L3..L3 + 2]);
            let d = p.data();
            assert_eq!((d[L3] << 4) | (d[L3 + 1] >> 4), want, "{} v6", field.name());
            assert_eq!(d[L3] >> 4, 6, "version kept");
            assert_eq!(d[L3 + 1] & 0x0f, 0x1, "flow label kept");
            assert_eq!(k.nw_tos(), want);
            assert_eq!(k.ipv6_label(), 0x12345);
        }
    }

    #[test]
    fn ttl_and_hop_limit() {
        let (p, k) = rw(
            &v4_frame(L4::Udp),
            Field::NW_TTL,
            9,
            0xff,
            &[L3 + 8..L3 + 12],
        );
        assert_eq!((p.data()[L3 + 8], k.nw_ttl()), (9, 9));
        let (p, k) = rw(
            &v6_frame(L4::Udp),
            Field::NW_TTL,
            9,
            0xff,
            &[L3 + 7..L3 + 8],
        );
        assert_eq!((p.data()[L3 + 7], k.nw_ttl()), (9, 9));
    }

    #[test]
    fn tcp_udp_ports_over_v4_and_v6() {
        for (frame, l4) in [
            (v4_frame(L4::Tcp), L4V4),
            (v4_frame(L4::Udp), L4V4),
            (v6_frame(L4::Tcp), L4V6),
            (v6_frame(L4::Udp), L4V6),
        ] {
            let c = if frame[L3 + 9] == ipproto::TCP || frame[L3 + 6] == ipproto::TCP {
                l4 + 16
            } else {
                l4 + 6
            };
            let (p, k) = rw(
                &frame,
                Field::TP_SRC,
                40000,
                0xffff,
                &[l4..l4 + 2, c..c + 2],
            );
            assert_eq!((be16(p.data(), l4), k.tp_src()), (40000, 40000));
            let (p, k) = rw(
                &frame,
                Field::TP_DST,
                0x1f00,
                0xff00,
                &[l4 + 2..l4 + 3, c..c + 2],
            );
            let want = (be16(&frame, l4 + 2) & 0xff) | 0x1f00;
            assert_eq!((be16(p.data(), l4 + 2), k.tp_dst()), (want, want));
        }
    }

    #[test]
    fn sctp_ports_recompute_the_crc() {
        for (frame, l4) in [(v4_frame(L4::Sctp), L4V4), (v6_frame(L4::Sctp), L4V6)] {
            let (p, k) = rw(
                &frame,
                Field::TP_SRC,
                5,
                0xffff,
                &[l4..l4 + 2, l4 + 8..l4 + 12],
            );
            assert_eq!((be16(p.data(), l4), k.tp_src()), (5, 5));
            let (p, k) = rw(
                &frame,
                Field::TP_DST,
                6,
                0xffff,
                &[l4 + 2..l4 + 4, l4 + 8..l4 + 12],
            );
            assert_eq!((be16(p.data(), l4 + 2), k.tp_dst()), (6, 6));
        }
    }

    #[test]
    fn ipv6_addresses_patch_tcp_udp_icmpv6() {
        let new: u128 = 0x2001_0db8_0000_0000_0000_0000_0000_0042;
        for (l4, c) in [(L4::Tcp, 16), (L4::Udp, 6), (L4::Icmp, 2), (L4::Sctp, 99)] {
            let f = v6_frame(l4);
            let mut allowed = vec![L3 + 8..L3 + 24];
            if c != 99 {
                allowed.push(L4V6 + c..L4V6 + c + 2);
            }
            let (p, k) = rw(&f, Field::IPV6_SRC, new, u128::MAX, &allowed);
            assert_eq!(&p.data()[L3 + 8..L3 + 24], &new.to_be_bytes());
            assert_eq!(k.ipv6_src(), new);
            // A /64 prefix rewrite of the destination keeps the interface id.
            allowed[0] = L3 + 24..L3 + 32;
            let (p, k) = rw(&f, Field::IPV6_DST, new, !0u128 << 64, &allowed);
            let want = (new & (!0u128 << 64)) | 2;
            assert_eq!(&p.data()[L3 + 24..L3 + 40], &want.to_be_bytes());
            assert_eq!(k.ipv6_dst(), want);
        }
    }

    #[test]
    fn ipv6_dst_behind_a_routing_header_leaves_l4_alone() {
        let final_dst = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x99);
        for segments_left in [1u8, 0] {
            // The pseudo header carries the final destination while segments
            // are left, else the IPv6 destination.
            let pseudo_dst = if segments_left > 0 { final_dst } else { V6_DST };
            let seg = udp(
                (IpAddress::Ipv6(V6_SRC), IpAddress::Ipv6(pseudo_dst)),
                1,
                2,
                b"data",
            );
            let mut rh = vec![ipproto::UDP, 2, 0, segments_left, 0, 0, 0, 0];
            rh.extend_from_slice(&final_dst.octets());
            rh.extend_from_slice(&seg);
            let f = eth(ethertype::IPV6, &[], &ipv6(ipproto::ROUTING, &rh));
            let (mut p, mut k) = parse(&f);
            let l4 = L4V6 + 24;
            assert_eq!(p.meta.l4_offset(), Some(l4));
            let new_dst: u128 = 0xfd00_0000_0000_0000_0000_0000_0000_0077;
            set_field(&mut p, &mut k, Field::IPV6_DST, new_dst, u128::MAX).unwrap();
            set_field(&mut p, &mut k, Field::IPV6_SRC, 0x55, u128::MAX).unwrap();
            assert_key_in_step(&p, &k);
            let pseudo_dst = if segments_left > 0 {
                final_dst
            } else {
                Ipv6Addr::from(new_dst)
            };
            let udp_seg = &p.data()[l4..];
            assert!(UdpPacket::new_checked(udp_seg).unwrap().verify_checksum(
                &IpAddress::Ipv6(Ipv6Addr::from(0x55u128)),
                &IpAddress::Ipv6(pseudo_dst)
            ));
        }
    }

    #[test]
    fn ipv6_flow_label() {
        let f = v6_frame(L4::Tcp);
        let (p, k) = rw(&f, Field::IPV6_LABEL, 0xabcde, 0xfffff, &[L3 + 1..L3 + 4]);
        assert_eq!(&p.data()[L3..L3 + 4], &[0x6b, 0x9a, 0xbc, 0xde]);
        assert_eq!(k.ipv6_label(), 0xabcde);
        let (_, k) = rw(&f, Field::IPV6_LABEL, 0xfff00, 0x00f00, &[L3 + 2..L3 + 3]);
        assert_eq!(k.ipv6_label(), 0x12f45);
    }

    #[test]
    fn arp_fields() {
        let f = eth(ethertype::ARP, &[], &arp(ArpOperation::Request));
        let a = L3;
        let (p, k) = rw(&f, Field::ARP_OP, 2, 0xff, &[a + 7..a + 8]);
        assert_eq!((be16(p.data(), a + 6), k.nw_proto()), (2, 2));
        let (p, k) = rw(
            &f,
            Field::ARP_SPA,
            0x0a00_00fe,
            0xffff_ffff,
            &[a + 17..a + 18],
        );
        assert_eq!(
            (&p.data()[a + 14..a + 18], k.nw_src()),
            (&[10, 0, 0, 254][..], 0x0a00_00fe)
        );
        let (p, k) = rw(
            &f,
            Field::ARP_TPA,
            0x0a00_0003,
            0xffff_ffff,
            &[a + 27..a + 28],
        );
        assert_eq!(
            (&p.data()[a + 24..a + 28], k.nw_dst()),
            (&[10, 0, 0, 3][..], 0x0a00_0003)
        );
        let mac = mac_to_u64(&[2, 2, 2, 2, 2, 2]);
        let (p, k) = rw(&f, Field::ARP_SHA, mac.into(), u128::MAX, &[a + 8..a + 14]);
        assert_eq!(
            (&p.data()[a + 8..a + 14], k.arp_sha()),
            (&[2u8; 6][..], mac)
        );
        let (p, k) = rw(&f, Field::ARP_THA, mac.into(), u128::MAX, &[a + 18..a + 24]);
        assert_eq!(
            (&p.data()[a + 18..a + 24], k.arp_tha()),
            (&[2u8; 6][..], mac)
        );
        // An opcode above 255 is not in the key; writing arp_op gives one
        // that is.
        let mut odd = f.clone();
        odd[a + 6] = 1;
        let (p, k) = rw(&odd, Field::ARP_OP, 3, 0xff, &[a + 6..a + 8]);
        assert_eq!((be16(p.data(), a + 6), k.nw_proto()), (3, 3));
    }

    #[test]
    fn icmp_type_and_code() {
        let f = v4_frame(L4::Icmp);
        let c = L4V4 + 2..L4V4 + 4;
        let (p, k) = rw(&f, Field::ICMP_TYPE, 0, 0xff, &[L4V4..L4V4 + 1, c.clone()]);
        assert_eq!((p.data()[L4V4], k.tp_src()), (0, 0));
        let (p, k) = rw(&f, Field::ICMP_CODE, 3, 0xff, &[L4V4 + 1..L4V4 + 2, c]);
        assert_eq!((p.data()[L4V4 + 1], k.tp_dst()), (3, 3));

        let f = v6_frame(L4::Icmp);
        let c = L4V6 + 2..L4V6 + 4;
        let (p, k) = rw(
            &f,
            Field::ICMPV6_TYPE,
            129,
            0xff,
            &[L4V6..L4V6 + 1, c.clone()],
        );
        assert_eq!((p.data()[L4V6], k.tp_src()), (129, 129));
        let (p, k) = rw(&f, Field::ICMPV6_CODE, 1, 0xff, &[L4V6 + 1..L4V6 + 2, c]);
        assert_eq!((p.data()[L4V6 + 1], k.tp_dst()), (1, 1));
    }

    #[test]
    fn icmpv6_type_change_into_and_out_of_neighbour_discovery() {
        let ns = eth(
            ethertype::IPV6,
            &[],
            &ipv6(ipproto::ICMPV6, &icmp6(135, 0, &ns_body())),
        );
        let (_, k) = parse(&ns);
        assert_eq!(k.nd_target(), u128::from(V6_DST));
        assert_eq!(k.arp_sha(), mac_to_u64(&SRC));
        // NS -> echo request: no target, no link-layer address any more.
        let c = L4V6 + 2..L4V6 + 4;
        let (_, k) = rw(
            &ns,
            Field::ICMPV6_TYPE,
            128,
            0xff,
            &[L4V6..L4V6 + 1, c.clone()],
        );
        assert_eq!((k.nd_target(), k.arp_sha()), (0, 0));
        // Code 1 is not ND either.
        let (_, k) = rw(
            &ns,
            Field::ICMPV6_CODE,
            1,
            0xff,
            &[L4V6 + 1..L4V6 + 2, c.clone()],
        );
        assert_eq!((k.nd_target(), k.arp_sha()), (0, 0));
        // NS -> NA: the SLL option is not read in an advertisement.
        let (_, k) = rw(
            &ns,
            Field::ICMPV6_TYPE,
            136,
            0xff,
            &[L4V6..L4V6 + 1, c.clone()],
        );
        assert_eq!((k.nd_target(), k.arp_sha()), (u128::from(V6_DST), 0));
        // Echo with an NS-shaped body -> NS: now parsed as ND.
        let echo = eth(
            ethertype::IPV6,
            &[],
            &ipv6(ipproto::ICMPV6, &icmp6(128, 0, &ns_body())),
        );
        let (_, k) = rw(&echo, Field::ICMPV6_TYPE, 135, 0xff, &[L4V6..L4V6 + 1, c]);
        assert_eq!(k.nd_target(), u128::from(V6_DST));
        assert_eq!(k.arp_sha(), mac_to_u64(&SRC));
    }

    #[test]
    fn pipeline_metadata_in_the_key_survives_a_reparse() {
        let ns = eth(
            ethertype::IPV6,
            &[],
            &ipv6(ipproto::ICMPV6, &icmp6(135, 0, &ns_body())),
        );
        let (mut p, mut k) = parse(&ns);
        k.set_recirc_id(7);
        k.set_ct_state(0x21);
        k.set_metadata(0xfeed);
        set_field(&mut p, &mut k, Field::ICMPV6_TYPE, 128, 0xff).unwrap();
        assert_eq!(
            (k.recirc_id(), k.ct_state(), k.metadata()),
            (7, 0x21, 0xfeed)
        );
        assert_eq!(k.in_port(), PortNo(1));
    }

    /// Run a rewrite that must fail and check it changed nothing.
    fn refused(frame: &[u8], field: Field, value: u128, want: RewriteError) {
        let (mut p, mut k) = parse(frame);
        let (meta, key) = (p.meta, k);
        let r = set_field(&mut p, &mut k, field, value, u128::MAX);
        assert_eq!(r, Err(want), "{} on {key:?}", field.0);
        assert_eq!(p.data(), frame);
        assert_eq!((p.meta, k), (meta, key));
    }

    #[test]
    fn metadata_and_read_only_fields_are_not_header_fields() {
        let f = v4_frame(L4::Tcp);
        for field in [
            Field::IN_PORT,
            Field::reg(0),
            Field::reg(15),
            Field::xreg(3),
            Field::METADATA,
            Field::CT_MARK,
            Field::CT_LABEL,
            Field::CT_STATE,
            Field::CT_ZONE,
            Field::CT_NW_SRC,
            Field::RECIRC_ID,
            Field::DL_TYPE,
            Field::NW_PROTO,
            Field::NW_FRAG,
            Field::TCP_FLAGS,
            Field(200), // no such field
        ] {
            refused(&f, field, 1, RewriteError::NotAHeaderField);
        }
    }

    #[test]
    fn absent_headers_are_refused_and_change_nothing() {
        let v4_tcp = v4_frame(L4::Tcp);
        let v6_tcp = v6_frame(L4::Tcp);
        let v4_icmp = v4_frame(L4::Icmp);
        let arp_f = eth(ethertype::ARP, &[], &arp(ArpOperation::Reply));
        let mut tcp_cut = v4_tcp.clone();
        tcp_cut.truncate(L4V4 + 10);
        tcp_cut[L3 + 2..L3 + 4].copy_from_slice(&30u16.to_be_bytes());
        let runt = vec![0u8; 10];
        let other = eth(0x88b5, &[], &[0; 46]);
        for (frame, field) in [
            (&v6_tcp, Field::NW_SRC),
            (&v6_tcp, Field::ICMP_TYPE),
            (&v4_tcp, Field::IPV6_SRC),
            (&v4_tcp, Field::IPV6_LABEL),
            (&v4_tcp, Field::ICMP_TYPE),
            (&v4_tcp, Field::ICMPV6_CODE),
            (&v4_tcp, Field::ARP_OP),
            (&v4_tcp, Field::ARP_SHA),
            (&v4_icmp, Field::TP_SRC),
            (&v4_icmp, Field::ICMPV6_TYPE),
            (&arp_f, Field::NW_TTL),
            (&arp_f, Field::NW_SRC),
            (&arp_f, Field::TP_DST),
            (&other, Field::NW_TOS),
            (&tcp_cut, Field::TP_SRC),
            (&runt, Field::DL_SRC),
            (&runt, Field::VLAN_TCI),
            (&runt, Field::NW_DST),
        ] {
            refused(frame, field, 1, RewriteError::HeaderAbsent);
        }
    }

    #[test]
    fn errors_display() {
        assert_eq!(
            RewriteError::HeaderAbsent.to_string(),
            "packet has no header holding the field"
        );
        let e: Box<dyn std::error::Error> = Box::new(RewriteError::NoRoom);
        assert!(e.to_string().contains("headroom"));
    }

    // -----------------------------------------------------------------------
    // Property tests

    /// A random IPv4/IPv6 TCP/UDP frame with up to two VLAN tags.
    #[derive(Clone, Debug)]
    struct Spec {
        v6: bool,
        l4: L4,
        vlans: Vec<(u16, u16)>,
        src: u128,
        dst: u128,
        ports: (u16, u16),
        tos: u8,
        ttl: u8,
        label: u32,
        payload: Vec<u8>,
    }

    fn spec() -> impl Strategy<Value = Spec> {
        (
            any::<bool>(),
            prop_oneof![Just(L4::Tcp), Just(L4::Udp), Just(L4::UdpNoCsum)],
            proptest::collection::vec(
                (prop_oneof![Just(0x8100u16), Just(0x88a8)], any::<u16>()),
                0..=2,
            ),
            (any::<u128>(), any::<u128>(), any::<(u16, u16)>()),
            (any::<u8>(), any::<u8>(), 0u32..0x10_0000),
            proptest::collection::vec(any::<u8>(), 0..40),
        )
            .prop_map(
                |(v6, l4, vlans, (src, dst, ports), (tos, ttl, label), payload)| Spec {
                    v6,
                    l4,
                    vlans,
                    src,
                    dst,
                    ports,
                    tos,
                    ttl,
                    label,
                    payload,
                },
            )
    }

    fn build(s: &Spec) -> Vec<u8> {
        let (addrs, v4, v6) = if s.v6 {
            let (a, b) = (Ipv6Addr::from(s.src), Ipv6Addr::from(s.dst));
            ((IpAddress::Ipv6(a), IpAddress::Ipv6(b)), None, Some((a, b)))
        } else {
            let (a, b) = (Ipv4Addr::from(s.src as u32), Ipv4Addr::from(s.dst as u32));
            ((IpAddress::Ipv4(a), IpAddress::Ipv4(b)), Some((a, b)), None)
        };
        let (proto, seg) = match s.l4 {
            L4::Tcp => (ipproto::TCP, tcp(addrs, s.ports.0, s.ports.1, &s.payload)),
            _ => {
                let mut u = udp(addrs, s.ports.0, s.ports.1, &s.payload);
                if s.l4 == L4::UdpNoCsum {
                    u[6..8].fill(0);
                }
                (ipproto::UDP, u)
            }
        };
        let (et, mut l3) = match (v4, v6) {
            (Some(a), _) => (ethertype::IPV4, ipv4_with(proto, a, (false, 0), &seg)),
            (_, Some(a)) => (ethertype::IPV6, ipv6_with(proto, a, &seg)),
            _ => unreachable!(),
        };
        if s.v6 {
            let mut p = Ipv6Packet::new_unchecked(&mut l3[..]);
            p.set_traffic_class(s.tos);
            p.set_flow_label(s.label);
            p.set_hop_limit(s.ttl);
        } else {
            let mut p = Ipv4Packet::new_unchecked(&mut l3[..]);
            p.set_dscp(s.tos >> 2);
            p.set_ecn(s.tos & 3);
            p.set_hop_limit(s.ttl);
            p.fill_checksum();
        }
        eth(et, &s.vlans, &l3)
    }

    /// Fields the property test writes: every IP/L2 header field a TCP/UDP
    /// packet can have, some that it cannot, and metadata.
    const PROP_FIELDS: [Field; 20] = [
        Field::DL_SRC,
        Field::DL_DST,
        Field::VLAN_TCI,
        Field::DL_VLAN,
        Field::DL_VLAN_PCP,
        Field::NW_SRC,
        Field::NW_DST,
        Field::NW_TOS,
        Field::IP_DSCP,
        Field::NW_ECN,
        Field::NW_TTL,
        Field::TP_SRC,
        Field::TP_DST,
        Field::IPV6_SRC,
        Field::IPV6_DST,
        Field::IPV6_LABEL,
        Field::ICMP_TYPE,
        Field::ARP_SPA,
        Field::IN_PORT,
        Field::xreg(1),
    ];

    /// ofproto's value of `field` as the datapath key holds it.
    fn ofproto_view(key: &FlowKey, field: Field) -> u128 {
        let tos_shift = |f: Field| f.info().slot.shift - Field::NW_ECN.info().slot.shift;
        let vlan_shift = |f: Field| f.info().slot.shift - Field::VLAN_TCI.info().slot.shift;
        match field {
            Field::DL_SRC => key.dl_src().into(),
            Field::DL_DST => key.dl_dst().into(),
            Field::VLAN_TCI | Field::DL_VLAN | Field::DL_VLAN_PCP => {
                let tci = key.vlan(0).map_or(0, |(_, tci)| tci | 0x1000);
                (u128::from(tci) >> vlan_shift(field)) & ones(field)
            }
            Field::NW_SRC => key.nw_src().into(),
            Field::NW_DST => key.nw_dst().into(),
            Field::NW_TOS | Field::IP_DSCP | Field::NW_ECN => {
                (u128::from(key.nw_tos()) >> tos_shift(field)) & ones(field)
            }
            Field::NW_TTL => key.nw_ttl().into(),
            Field::TP_SRC => key.tp_src().into(),
            Field::TP_DST => key.tp_dst().into(),
            Field::IPV6_SRC => key.ipv6_src(),
            Field::IPV6_DST => key.ipv6_dst(),
            Field::IPV6_LABEL => key.ipv6_label().into(),
            _ => 0,
        }
    }

    /// Valid frames of every kind the rewrites know, for damaging.
    fn damaged_bases() -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = [L4::Tcp, L4::Udp, L4::UdpNoCsum, L4::Sctp, L4::Icmp]
            .iter()
            .flat_map(|l4| [v4_frame(*l4), v6_frame(*l4)])
            .collect();
        v.push(eth(ethertype::ARP, &[], &arp(ArpOperation::Request)));
        let ns = icmp6(135, 0, &ns_body());
        v.push(eth(
            ethertype::IPV6,
            &[(0x8100, 5)],
            &ipv6(ipproto::ICMPV6, &ns),
        ));
        v
    }

    proptest! {
        /// Random rewrites of random TCP/UDP packets: every checksum equals
        /// a full recomputation, re-extraction gives the updated key, the
        /// field reads back as written, and refusals change nothing.
        #[test]
        fn rewrites_keep_checksums_and_key_exact(
            s in spec(),
            ops in proptest::collection::vec(
                (0..PROP_FIELDS.len(), any::<u128>(),
                 prop_oneof![Just(u128::MAX), any::<u128>(), Just(0u128)]),
                1..6,
            ),
        ) {
            let frame = build(&s);
            let (mut p, mut k) = parse(&frame);
            prop_assert_eq!(k.malformed_code(), 0);
            assert_consistent(&p, &k);
            for (i, v, m) in ops {
                let field = PROP_FIELDS[i];
                let (before, meta, key) = (p.data().to_vec(), p.meta, k);
                match set_field(&mut p, &mut k, field, v, m) {
                    Ok(()) => {
                        assert_consistent(&p, &k);
                        let want = (ofproto_view(&key, field) & !m | v & m) & ones(field);
                        let vlan = matches!(
                            field, Field::VLAN_TCI | Field::DL_VLAN | Field::DL_VLAN_PCP);
                        // A vlan_tci write that clears the present bit pops;
                        // the view is then the next tag's.
                        let popped = field == Field::VLAN_TCI && want & 0x1000 == 0;
                        if !popped {
                            prop_assert_eq!(ofproto_view(&k, field), want, "{}", field.name());
                        }
                        if !vlan {
                            prop_assert_eq!(p.len(), before.len());
                        }
                    }
                    Err(e) => {
                        prop_assert!(e != RewriteError::NoRoom);
                        prop_assert_eq!(p.data(), &before[..]);
                        prop_assert_eq!((p.meta, k), (meta, key));
                    }
                }
            }
        }

        /// Arbitrary bytes, and valid frames of every kind cut short and
        /// with one byte changed: no rewrite panics, refusals change
        /// nothing, and successful ones keep the key in step (unless the
        /// frame has more tags than the key holds).
        #[test]
        fn arbitrary_frames_never_panic(
            frame in prop_oneof![
                (proptest::collection::vec(any::<u8>(), 0..120),
                 prop_oneof![Just(0x0800u16), Just(0x86dd), Just(0x0806), Just(0x8100),
                             any::<u16>()],
                 any::<u8>())
                    .prop_map(|(mut f, ethertype, first)| {
                        if f.len() >= 15 {
                            f[12..14].copy_from_slice(&ethertype.to_be_bytes());
                            f[14] = first;
                        }
                        f
                    }),
                (0..damaged_bases().len(), any::<Option<prop::sample::Index>>(),
                 any::<prop::sample::Index>(), any::<u8>())
                    .prop_map(|(base, cut, at, byte)| {
                        let mut f = damaged_bases().swap_remove(base);
                        if let Some(cut) = cut {
                            f.truncate(cut.index(f.len()).max(1));
                        }
                        let i = at.index(f.len());
                        f[i] = byte;
                        f
                    }),
            ],
            field in prop_oneof![
                3 => (0..TARGETS.len()).prop_map(|i| TARGETS[i].0),
                1 => (0u8..70).prop_map(Field),
            ],
            v in any::<u128>(),
            m in prop_oneof![Just(u128::MAX), any::<u128>()],
        ) {
            let (mut p, mut k) = parse(&frame);
            let (meta, key) = (p.meta, k);
            match set_field(&mut p, &mut k, field, v, m) {
                Ok(()) => {
                    let d = p.data();
                    let deep = d.len() >= 22 && [12, 16, 20].iter().all(|&o| {
                        matches!(be16(d, o), 0x8100 | 0x88a8)
                    });
                    if !deep {
                        assert_key_in_step(&p, &k);
                    }
                }
                Err(_) => {
                    prop_assert_eq!(p.data(), &frame[..]);
                    prop_assert_eq!((p.meta, k), (meta, key));
                }
            }
        }
    }
}
