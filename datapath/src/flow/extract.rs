//! Flow-key extraction: one pass over a frame's headers into a [`FlowKey`].
//!
//! Each layer is checked for length once, as a fixed-size array view
//! (`first_chunk::<N>()`), and its fields are then read at constant offsets
//! with no further bounds checks. A layer that is truncated or malformed
//! stops the walk: the key keeps everything parsed before it, the reason is
//! written into the key ([`FlowKey::malformed_code`]) and returned, and
//! [`extract_batch`] counts it in [`ExtractStats`]. Whether such a packet is
//! dropped or passed is the pipeline's decision. Nothing here panics on any
//! input, allocates, locks or formats.
//!
//! Parsed: Ethernet II (and 802.3 LLC/SNAP), up to two 802.1Q/802.1ad tags,
//! ARP/RARP, IPv4 (options skipped, fragments flagged first/later), IPv6
//! (extension headers walked, fragments flagged), TCP (ports and flags),
//! UDP, SCTP, ICMP, ICMPv6 (type/code; neighbour discovery target and
//! link-layer address options).
//!
//! The L3 and L4 offsets go into the packet's [`PacketMeta`] so later stages
//! (conntrack takes the bytes from the L3 header on) need not parse again.
//!
//! Checksums are not verified here: a bad checksum does not change the
//! key, and conntrack verifies them once (or trusts the NIC's offload
//! flags) when it needs to.

use super::key::{mac_to_u64, FlowKey, DL_TYPE_NONE, FRAG_ANY, FRAG_LATER, MAX_VLANS};
use crate::packet::meta::NO_OFFSET;
use crate::packet::{PacketBatch, PacketMeta};
use crate::BATCH_SIZE;

/// Ethernet types the extractor knows.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const RARP: u16 = 0x8035;
    pub const VLAN: u16 = 0x8100;
    pub const QINQ: u16 = 0x88a8;
    pub const IPV6: u16 = 0x86dd;
}

/// IP protocol numbers the extractor knows.
pub mod ipproto {
    pub const HOPOPTS: u8 = 0;
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const ICMPV6: u8 = 58;
    pub const NONE: u8 = 59;
    pub const DSTOPTS: u8 = 60;
    pub const SCTP: u8 = 132;
    pub const MOBILITY: u8 = 135;
    pub const HIP: u8 = 139;
    pub const SHIM6: u8 = 140;
}

/// Most IPv6 extension headers walked before giving up.
pub const MAX_IPV6_EXT_HEADERS: usize = 16;

macro_rules! malformed_reasons {
    ($($(#[$doc:meta])* $name:ident = $code:expr, $label:expr;)*) => {
        /// Why extraction stopped before the end of the headers.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Malformed {
            $($(#[$doc])* $name = $code,)*
        }

        impl Malformed {
            /// Every reason, in code order.
            pub const ALL: &'static [Malformed] = &[$(Malformed::$name,)*];

            /// A short snake_case name for counters and logs.
            pub const fn label(self) -> &'static str {
                match self {
                    $(Malformed::$name => $label,)*
                }
            }

            /// The reason for a code stored in a key (0 is "none").
            pub const fn from_code(code: u8) -> Option<Malformed> {
                match code {
                    $($code => Some(Malformed::$name),)*
                    _ => None,
                }
            }
        }
    };
}

malformed_reasons! {
    /// Shorter than an Ethernet header (14 bytes).
    EthTruncated = 1, "eth_truncated";
    /// A VLAN tag cut short.
    VlanTruncated = 2, "vlan_truncated";
    /// More VLAN tags than [`MAX_VLANS`]; the key stops at the third tag.
    VlanTooDeep = 3, "vlan_too_deep";
    /// An 802.3 frame whose LLC/SNAP header is cut short.
    LlcTruncated = 4, "llc_truncated";
    /// ARP shorter than its fixed part or its addresses.
    ArpTruncated = 5, "arp_truncated";
    /// Shorter than a 20-byte IPv4 header.
    Ipv4Truncated = 6, "ipv4_truncated";
    /// IPv4 version field is not 4.
    Ipv4BadVersion = 7, "ipv4_bad_version";
    /// IPv4 IHL below 5.
    Ipv4BadIhl = 8, "ipv4_bad_ihl";
    /// IPv4 options run past the frame.
    Ipv4OptionsTruncated = 9, "ipv4_options_truncated";
    /// IPv4 total length shorter than the header.
    Ipv4TotalLenTooShort = 10, "ipv4_total_len_too_short";
    /// IPv4 total length longer than the frame.
    Ipv4TotalLenTooLong = 11, "ipv4_total_len_too_long";
    /// Shorter than a 40-byte IPv6 header.
    Ipv6Truncated = 12, "ipv6_truncated";
    /// IPv6 version field is not 6.
    Ipv6BadVersion = 13, "ipv6_bad_version";
    /// IPv6 payload length longer than the frame.
    Ipv6PayloadLenTooLong = 14, "ipv6_payload_len_too_long";
    /// An IPv6 extension header runs past the payload.
    Ipv6ExtTruncated = 15, "ipv6_ext_truncated";
    /// More than [`MAX_IPV6_EXT_HEADERS`] extension headers.
    Ipv6TooManyExt = 16, "ipv6_too_many_ext";
    /// Shorter than a 20-byte TCP header.
    TcpTruncated = 17, "tcp_truncated";
    /// TCP data offset below 5 or past the segment.
    TcpBadDataOffset = 18, "tcp_bad_data_offset";
    /// Shorter than an 8-byte UDP header.
    UdpTruncated = 19, "udp_truncated";
    /// Shorter than a 12-byte SCTP common header.
    SctpTruncated = 20, "sctp_truncated";
    /// Shorter than an 8-byte ICMP header.
    IcmpTruncated = 21, "icmp_truncated";
    /// Shorter than an 8-byte ICMPv6 header.
    Icmpv6Truncated = 22, "icmpv6_truncated";
    /// Neighbour solicitation/advertisement shorter than its target.
    NdTruncated = 23, "nd_truncated";
    /// A neighbour discovery option of length 0 or past the message, or
    /// a repeated link-layer address option.
    NdBadOption = 24, "nd_bad_option";
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Number of [`Malformed`] reasons (codes run 1..=COUNT).
pub const MALFORMED_COUNT: usize = 24;

/// Extraction counters of one thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtractStats {
    /// Packets extracted.
    pub packets: u64,
    /// IP fragments seen (first and later).
    pub fragments: u64,
    /// Count per [`Malformed`] reason, indexed by `code - 1`.
    pub malformed: [u64; MALFORMED_COUNT],
}

impl Default for ExtractStats {
    fn default() -> Self {
        ExtractStats {
            packets: 0,
            fragments: 0,
            malformed: [0; MALFORMED_COUNT],
        }
    }
}

impl ExtractStats {
    /// Count one packet with the outcome of [`extract`].
    #[inline]
    pub fn record(&mut self, key: &FlowKey, outcome: Result<(), Malformed>) {
        self.packets += 1;
        self.fragments += u64::from(key.nw_frag() & FRAG_ANY != 0);
        if let Err(m) = outcome {
            self.malformed[m as usize - 1] += 1;
        }
    }

    /// The count for one reason.
    pub fn count(&self, reason: Malformed) -> u64 {
        self.malformed[reason as usize - 1]
    }

    /// Malformed packets of every reason.
    pub fn malformed_total(&self) -> u64 {
        self.malformed.iter().sum()
    }

    /// Add another thread's counters.
    pub fn merge(&mut self, other: &ExtractStats) {
        self.packets += other.packets;
        self.fragments += other.fragments;
        for (a, b) in self.malformed.iter_mut().zip(other.malformed.iter()) {
            *a += b;
        }
    }

    /// `(label, count)` for each reason with a non-zero count.
    pub fn nonzero(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Malformed::ALL
            .iter()
            .map(|m| (m.label(), self.count(*m)))
            .filter(|(_, n)| *n != 0)
    }
}

/// A fixed-size view of `N` bytes at `ofs`, or `None` if the frame is
/// shorter. This is the one length check of a layer.
#[inline(always)]
fn view<const N: usize>(frame: &[u8], ofs: usize) -> Option<&[u8; N]> {
    frame.get(ofs..)?.first_chunk::<N>()
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

#[inline(always)]
fn be32(b: [u8; 4]) -> u32 {
    u32::from_be_bytes(b)
}

#[inline(always)]
fn be128(b: &[u8; 16]) -> u128 {
    u128::from_be_bytes(*b)
}

/// The MAC address at `at` in a header view, as the key's number. When
/// eight bytes are readable it is one big-endian load and a shift (`at` and
/// `N` are constants at every call, so the choice folds away).
#[inline(always)]
fn mac_at<const N: usize>(h: &[u8; N], at: usize) -> u64 {
    if at + 8 <= N {
        let mut w = [0u8; 8];
        w.copy_from_slice(&h[at..at + 8]);
        u64::from_be_bytes(w) >> 16
    } else {
        let mut m = [0u8; 6];
        m.copy_from_slice(&h[at..at + 6]);
        mac_to_u64(&m)
    }
}

/// Fill `key` from `frame` and `meta`, and set `meta.l3_ofs`/`l4_ofs`.
///
/// The metadata fields that belong in the key (in_port, recirc_id, ct_*,
/// metadata) are copied first. On a truncated or malformed header the key
/// holds what was parsed before it, its malformed code is set and the reason
/// is returned.
#[inline]
pub fn extract(frame: &[u8], meta: &mut PacketMeta, key: &mut FlowKey) -> Result<(), Malformed> {
    key.clear();
    key.set_in_port(meta.in_port);
    key.set_recirc_id(meta.recirc_id);
    key.set_ct_state(meta.ct_state);
    key.set_ct_mark(meta.ct_mark);
    key.set_ct_zone(meta.ct_zone);
    key.set_ct_label(meta.ct_label);
    key.set_metadata(meta.metadata);
    meta.l3_ofs = NO_OFFSET;
    meta.l4_ofs = NO_OFFSET;
    let r = extract_headers(frame, meta, key);
    if let Err(m) = r {
        key.set_malformed_code(m as u8);
    }
    r
}

#[inline(always)]
fn extract_headers(
    frame: &[u8],
    meta: &mut PacketMeta,
    key: &mut FlowKey,
) -> Result<(), Malformed> {
    // Offsets are stored as u16; longer frames are parsed only as far as
    // a u16 reaches (jumbo frames of 64 KiB+ do not occur on the ports).
    let frame = &frame[..frame.len().min(NO_OFFSET as usize - 1)];

    // --- Ethernet -----------------------------------------------------
    let eth = view::<14>(frame, 0).ok_or(Malformed::EthTruncated)?;
    key.set_dl_dst(mac_at(eth, 0));
    key.set_dl_src(mac_at(eth, 6));
    let mut ofs = 14;
    let mut dl_type = be16([eth[12], eth[13]]);

    // --- VLAN tags ----------------------------------------------------
    let mut n_vlans = 0;
    while dl_type == ethertype::VLAN || dl_type == ethertype::QINQ {
        if n_vlans == MAX_VLANS {
            key.set_dl_type(dl_type);
            return Err(Malformed::VlanTooDeep);
        }
        let tag = view::<4>(frame, ofs).ok_or(Malformed::VlanTruncated)?;
        key.set_vlan(n_vlans, dl_type, be16([tag[0], tag[1]]));
        dl_type = be16([tag[2], tag[3]]);
        n_vlans += 1;
        ofs += 4;
    }

    // --- 802.3 length field: LLC, maybe SNAP ----------------------------
    if dl_type < 0x0600 {
        let llc = view::<3>(frame, ofs).ok_or(Malformed::LlcTruncated)?;
        if llc == &[0xaa, 0xaa, 0x03] {
            let snap = view::<8>(frame, ofs).ok_or(Malformed::LlcTruncated)?;
            if snap[3..6] == [0, 0, 0] {
                dl_type = be16([snap[6], snap[7]]);
                ofs += 8;
            } else {
                dl_type = DL_TYPE_NONE;
            }
        } else {
            dl_type = DL_TYPE_NONE;
        }
        if dl_type < 0x0600 {
            dl_type = DL_TYPE_NONE;
        }
    }
    key.set_dl_type(dl_type);

    match dl_type {
        ethertype::IPV4 => {
            meta.l3_ofs = ofs as u16;
            extract_ipv4(frame, ofs, meta, key)
        }
        ethertype::IPV6 => {
            meta.l3_ofs = ofs as u16;
            extract_ipv6(frame, ofs, meta, key)
        }
        ethertype::ARP | ethertype::RARP => {
            meta.l3_ofs = ofs as u16;
            extract_arp(frame, ofs, key)
        }
        _ => Ok(()),
    }
}

#[inline(always)]
fn extract_arp(frame: &[u8], ofs: usize, key: &mut FlowKey) -> Result<(), Malformed> {
    let fixed = view::<8>(frame, ofs).ok_or(Malformed::ArpTruncated)?;
    let op = be16([fixed[6], fixed[7]]);
    let eth_ipv4 = be16([fixed[0], fixed[1]]) == 1
        && be16([fixed[2], fixed[3]]) == 0x0800
        && fixed[4] == 6
        && fixed[5] == 4;
    if !eth_ipv4 {
        // Another hardware/protocol pair: nothing more the key can hold.
        return Ok(());
    }
    let arp = view::<28>(frame, ofs).ok_or(Malformed::ArpTruncated)?;
    if op <= 0xff {
        key.set_nw_proto(op as u8);
    }
    key.set_arp_sha(mac_at(arp, 8));
    key.set_nw_src(be32([arp[14], arp[15], arp[16], arp[17]]));
    key.set_arp_tha(mac_at(arp, 18));
    key.set_nw_dst(be32([arp[24], arp[25], arp[26], arp[27]]));
    Ok(())
}

#[inline(always)]
fn extract_ipv4(
    frame: &[u8],
    ofs: usize,
    meta: &mut PacketMeta,
    key: &mut FlowKey,
) -> Result<(), Malformed> {
    let ip = view::<20>(frame, ofs).ok_or(Malformed::Ipv4Truncated)?;
    if ip[0] >> 4 != 4 {
        return Err(Malformed::Ipv4BadVersion);
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(Malformed::Ipv4BadIhl);
    }
    let avail = frame.len() - ofs;
    if ihl > avail {
        return Err(Malformed::Ipv4OptionsTruncated);
    }
    let total_len = usize::from(be16([ip[2], ip[3]]));
    if total_len < ihl {
        return Err(Malformed::Ipv4TotalLenTooShort);
    }
    if total_len > avail {
        return Err(Malformed::Ipv4TotalLenTooLong);
    }
    key.set_nw_tos(ip[1]);
    key.set_nw_ttl(ip[8]);
    key.set_nw_proto(ip[9]);
    key.set_nw_src(be32([ip[12], ip[13], ip[14], ip[15]]));
    key.set_nw_dst(be32([ip[16], ip[17], ip[18], ip[19]]));

    let frag = be16([ip[6], ip[7]]);
    let more_fragments = frag & 0x2000 != 0;
    let frag_offset = frag & 0x1fff;
    let l4 = ofs + ihl;
    meta.l4_ofs = l4 as u16;
    if more_fragments || frag_offset != 0 {
        if frag_offset != 0 {
            key.set_nw_frag(FRAG_ANY | FRAG_LATER);
            return Ok(());
        }
        key.set_nw_frag(FRAG_ANY);
    }
    // Ethernet padding after the datagram is not L4 payload.
    let l3 = &frame[..ofs + total_len];
    match ip[9] {
        ipproto::TCP => extract_tcp(l3, l4, key),
        ipproto::UDP => extract_udp(l3, l4, key),
        ipproto::SCTP => extract_sctp(l3, l4, key),
        ipproto::ICMP => {
            let h = view::<8>(l3, l4).ok_or(Malformed::IcmpTruncated)?;
            key.set_tp_src(u16::from(h[0]));
            key.set_tp_dst(u16::from(h[1]));
            Ok(())
        }
        _ => Ok(()),
    }
}

#[inline(always)]
fn extract_ipv6(
    frame: &[u8],
    ofs: usize,
    meta: &mut PacketMeta,
    key: &mut FlowKey,
) -> Result<(), Malformed> {
    let ip = view::<40>(frame, ofs).ok_or(Malformed::Ipv6Truncated)?;
    if ip[0] >> 4 != 6 {
        return Err(Malformed::Ipv6BadVersion);
    }
    let payload_len = usize::from(be16([ip[4], ip[5]]));
    let end = ofs + 40 + payload_len;
    if end > frame.len() {
        return Err(Malformed::Ipv6PayloadLenTooLong);
    }
    key.set_nw_tos((ip[0] << 4) | (ip[1] >> 4));
    key.set_ipv6_label(be32([0, ip[1] & 0x0f, ip[2], ip[3]]));
    key.set_nw_ttl(ip[7]);
    let mut src = [0u8; 16];
    src.copy_from_slice(&ip[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&ip[24..40]);
    key.set_ipv6_src(u128::from_be_bytes(src));
    key.set_ipv6_dst(u128::from_be_bytes(dst));

    let l3 = &frame[..end];
    let mut next = ip[6];
    let mut at = ofs + 40;
    let mut walked = 0;
    loop {
        match next {
            ipproto::HOPOPTS
            | ipproto::ROUTING
            | ipproto::DSTOPTS
            | ipproto::MOBILITY
            | ipproto::HIP
            | ipproto::SHIM6 => {
                let h = view::<2>(l3, at).ok_or(Malformed::Ipv6ExtTruncated)?;
                let len = (usize::from(h[1]) + 1) * 8;
                if at + len > l3.len() {
                    return Err(Malformed::Ipv6ExtTruncated);
                }
                next = h[0];
                at += len;
            }
            ipproto::AH => {
                let h = view::<2>(l3, at).ok_or(Malformed::Ipv6ExtTruncated)?;
                let len = (usize::from(h[1]) + 2) * 4;
                if at + len > l3.len() {
                    return Err(Malformed::Ipv6ExtTruncated);
                }
                next = h[0];
                at += len;
            }
            ipproto::FRAGMENT => {
                let h = view::<8>(l3, at).ok_or(Malformed::Ipv6ExtTruncated)?;
                next = h[0];
                at += 8;
                let frag = be16([h[2], h[3]]);
                let offset = frag >> 3;
                let more = frag & 1 != 0;
                if offset != 0 {
                    key.set_nw_proto(next);
                    key.set_nw_frag(FRAG_ANY | FRAG_LATER);
                    meta.l4_ofs = at as u16;
                    return Ok(());
                }
                if more {
                    key.set_nw_frag(FRAG_ANY);
                }
                // An atomic fragment (offset 0, no M flag) is a whole packet.
            }
            _ => break,
        }
        walked += 1;
        if walked > MAX_IPV6_EXT_HEADERS {
            return Err(Malformed::Ipv6TooManyExt);
        }
    }
    key.set_nw_proto(next);
    meta.l4_ofs = at as u16;
    match next {
        ipproto::TCP => extract_tcp(l3, at, key),
        ipproto::UDP => extract_udp(l3, at, key),
        ipproto::SCTP => extract_sctp(l3, at, key),
        ipproto::ICMPV6 => extract_icmpv6(l3, at, key),
        _ => Ok(()),
    }
}

#[inline(always)]
fn extract_tcp(l3: &[u8], at: usize, key: &mut FlowKey) -> Result<(), Malformed> {
    let h = view::<20>(l3, at).ok_or(Malformed::TcpTruncated)?;
    let data_ofs = usize::from(h[12] >> 4) * 4;
    if data_ofs < 20 || at + data_ofs > l3.len() {
        return Err(Malformed::TcpBadDataOffset);
    }
    key.set_tp_src(be16([h[0], h[1]]));
    key.set_tp_dst(be16([h[2], h[3]]));
    key.set_tcp_flags(be16([h[12] & 0x01, h[13]]));
    Ok(())
}

#[inline(always)]
fn extract_udp(l3: &[u8], at: usize, key: &mut FlowKey) -> Result<(), Malformed> {
    let h = view::<8>(l3, at).ok_or(Malformed::UdpTruncated)?;
    key.set_tp_src(be16([h[0], h[1]]));
    key.set_tp_dst(be16([h[2], h[3]]));
    Ok(())
}

#[inline(always)]
fn extract_sctp(l3: &[u8], at: usize, key: &mut FlowKey) -> Result<(), Malformed> {
    let h = view::<12>(l3, at).ok_or(Malformed::SctpTruncated)?;
    key.set_tp_src(be16([h[0], h[1]]));
    key.set_tp_dst(be16([h[2], h[3]]));
    Ok(())
}

/// ICMPv6 neighbour solicitation / advertisement types.
const ND_NEIGHBOR_SOLICIT: u8 = 135;
const ND_NEIGHBOR_ADVERT: u8 = 136;
/// ND option types: source and target link-layer address.
const ND_OPT_SLL: u8 = 1;
const ND_OPT_TLL: u8 = 2;

#[inline(always)]
fn extract_icmpv6(l3: &[u8], at: usize, key: &mut FlowKey) -> Result<(), Malformed> {
    let h = view::<8>(l3, at).ok_or(Malformed::Icmpv6Truncated)?;
    key.set_tp_src(u16::from(h[0]));
    key.set_tp_dst(u16::from(h[1]));
    if h[1] != 0 || (h[0] != ND_NEIGHBOR_SOLICIT && h[0] != ND_NEIGHBOR_ADVERT) {
        return Ok(());
    }
    // NS/NA: 4-byte header, 4 bytes reserved/flags, 16-byte target.
    let nd = view::<24>(l3, at).ok_or(Malformed::NdTruncated)?;
    let mut target = [0u8; 16];
    target.copy_from_slice(&nd[8..24]);
    key.set_nd_target(be128(&target));

    let mut opt = at + 24;
    let (mut sll, mut tll) = (None, None);
    while opt < l3.len() {
        let o = view::<2>(l3, opt).ok_or(Malformed::NdBadOption)?;
        let len = usize::from(o[1]) * 8;
        if len == 0 || opt + len > l3.len() {
            return Err(Malformed::NdBadOption);
        }
        if len == 8 {
            // view::<8> cannot fail: opt + 8 <= l3.len() was checked above.
            let o8 = view::<8>(l3, opt).ok_or(Malformed::NdBadOption)?;
            let lla = mac_at(o8, 2);
            let slot = match (o[0], h[0]) {
                (ND_OPT_SLL, ND_NEIGHBOR_SOLICIT) => Some(&mut sll),
                (ND_OPT_TLL, ND_NEIGHBOR_ADVERT) => Some(&mut tll),
                _ => None,
            };
            if let Some(slot) = slot {
                if slot.replace(lla).is_some() {
                    return Err(Malformed::NdBadOption);
                }
            }
        }
        opt += len;
    }
    if let Some(v) = sll {
        key.set_arp_sha(v);
    }
    if let Some(v) = tll {
        key.set_arp_tha(v);
    }
    Ok(())
}

/// Extract the key of every packet in `batch` into `keys` (indexed like the
/// batch) and count the outcomes in `stats`.
#[inline]
pub fn extract_batch(
    batch: &mut PacketBatch,
    keys: &mut [FlowKey; BATCH_SIZE],
    stats: &mut ExtractStats,
) {
    for (pkt, key) in batch.iter_mut().zip(keys.iter_mut()) {
        let (data, meta) = pkt.data_and_meta_mut();
        let r = extract(data, meta, key);
        stats.record(key, r);
    }
}
