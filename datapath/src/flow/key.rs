//! [`FlowKey`]: the packet's fields as the datapath matches them.
//!
//! Like OVS's `struct flow`/miniflow the key is a flat run of 64-bit words,
//! so that equality, masking (megaflow lookups AND the key with a mask that
//! is itself a `FlowKey`) and hashing are loops over [`FLOW_WORDS`] words
//! with no per-field branches. Fields are packed into words by the layout
//! in the private `layout` module; each has a getter and a setter, and the
//! values are host-order numbers (an IPv4 address is the `u32` of its four
//! bytes in network order, a MAC the `u64` of its six bytes).
//!
//! Field conventions borrowed from OpenFlow: for ICMP/ICMPv6 `tp_src` is the
//! type and `tp_dst` the code; for ARP `nw_src`/`nw_dst` are the sender and
//! target protocol addresses and `nw_proto` is the low byte of the opcode.
//!
//! Registers are not in the key: they are pipeline scratch (as in OVS, whose
//! datapath flows do not carry them).

use std::fmt;

use crate::packet::PortNo;

/// Number of 64-bit words in a [`FlowKey`].
pub const FLOW_WORDS: usize = 26;

/// `nw_frag` bit: the packet is an IP fragment (first or later).
pub const FRAG_ANY: u8 = 0x01;
/// `nw_frag` bit: the packet is a non-first fragment (no L4 header).
pub const FRAG_LATER: u8 = 0x02;

/// `dl_type` of an 802.3 frame with no Ethernet type (OVS's
/// `FLOW_DL_TYPE_NONE`).
pub const DL_TYPE_NONE: u16 = 0x05ff;

/// The most VLAN tags the key holds.
pub const MAX_VLANS: usize = 2;

/// Field positions: `(word, shift, bits)`.
mod layout {
    pub type Pos = (usize, u32, u32);
    pub const IN_PORT: Pos = (0, 0, 32);
    pub const RECIRC_ID: Pos = (0, 32, 32);
    pub const CT_STATE: Pos = (1, 0, 32);
    pub const CT_MARK: Pos = (1, 32, 32);
    pub const CT_ZONE: Pos = (2, 0, 16);
    pub const DL_TYPE: Pos = (2, 16, 16);
    pub const NW_FRAG: Pos = (2, 32, 8);
    pub const NW_PROTO: Pos = (2, 40, 8);
    pub const NW_TOS: Pos = (2, 48, 8);
    pub const NW_TTL: Pos = (2, 56, 8);
    pub const METADATA: usize = 3;
    pub const CT_LABEL: usize = 4; // two words, high first
    pub const DL_DST: Pos = (6, 0, 48);
    pub const MALFORMED: Pos = (6, 48, 8);
    pub const N_VLANS: Pos = (6, 56, 8);
    pub const DL_SRC: Pos = (7, 0, 48);
    pub const VLAN_WORD: usize = 8; // tag i: tpid at 32*i, tci at 32*i+16
    pub const NW_SRC: Pos = (9, 0, 32);
    pub const NW_DST: Pos = (9, 32, 32);
    pub const IPV6_SRC: usize = 10; // two words
    pub const IPV6_DST: usize = 12; // two words
    pub const TP_SRC: Pos = (14, 0, 16);
    pub const TP_DST: Pos = (14, 16, 16);
    pub const TCP_FLAGS: Pos = (14, 32, 16);
    pub const IPV6_LABEL: Pos = (15, 0, 20);
    pub const ND_TARGET: usize = 16; // two words
    pub const ARP_SHA: Pos = (18, 0, 48);
    pub const ARP_THA: Pos = (19, 0, 48);
    // The connection's original-direction tuple, set by the `ct` action.
    pub const CT_NW_SRC: Pos = (20, 0, 32);
    pub const CT_NW_DST: Pos = (20, 32, 32);
    pub const CT_TP_SRC: Pos = (21, 0, 16);
    pub const CT_TP_DST: Pos = (21, 16, 16);
    pub const CT_NW_PROTO: Pos = (21, 32, 8);
    pub const CT_IPV6_SRC: usize = 22; // two words
    pub const CT_IPV6_DST: usize = 24; // two words
}

/// The fields of one packet, packed into [`FLOW_WORDS`] words.
#[derive(Clone, Copy, Default)]
pub struct FlowKey {
    words: [u64; FLOW_WORDS],
}

impl PartialEq for FlowKey {
    /// An XOR-OR fold over the words (vectorised, no memcmp call): the
    /// exact-match cache compares whole keys on every hit.
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        let mut diff = 0u64;
        for i in 0..FLOW_WORDS {
            diff |= self.words[i] ^ other.words[i];
        }
        diff == 0
    }
}

impl Eq for FlowKey {}

impl std::hash::Hash for FlowKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.words.hash(state);
    }
}

#[inline(always)]
const fn low_mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

macro_rules! scalar_field {
    ($(#[$doc:meta])* $get:ident, $set:ident, $ty:ty, $pos:expr) => {
        $(#[$doc])*
        #[inline(always)]
        pub fn $get(&self) -> $ty {
            let (w, shift, bits) = $pos;
            ((self.words[w] >> shift) & low_mask(bits)) as $ty
        }

        #[doc = concat!("Set the field read by [`FlowKey::", stringify!($get), "`].")]
        #[inline(always)]
        pub fn $set(&mut self, v: $ty) {
            let (w, shift, bits) = $pos;
            let m = low_mask(bits) << shift;
            self.words[w] = (self.words[w] & !m) | (((v as u64) << shift) & m);
        }
    };
}

macro_rules! wide_field {
    ($(#[$doc:meta])* $get:ident, $set:ident, $word:expr) => {
        $(#[$doc])*
        #[inline(always)]
        pub fn $get(&self) -> u128 {
            ((self.words[$word] as u128) << 64) | self.words[$word + 1] as u128
        }

        #[doc = concat!("Set the field read by [`FlowKey::", stringify!($get), "`].")]
        #[inline(always)]
        pub fn $set(&mut self, v: u128) {
            self.words[$word] = (v >> 64) as u64;
            self.words[$word + 1] = v as u64;
        }
    };
}

impl FlowKey {
    /// The all-zero key.
    pub const ZERO: FlowKey = FlowKey {
        words: [0; FLOW_WORDS],
    };

    /// The raw words (for hashing and masking).
    #[inline(always)]
    pub fn words(&self) -> &[u64; FLOW_WORDS] {
        &self.words
    }

    /// The raw words, mutably.
    #[inline(always)]
    pub fn words_mut(&mut self) -> &mut [u64; FLOW_WORDS] {
        &mut self.words
    }

    /// Zero every field.
    #[inline(always)]
    pub fn clear(&mut self) {
        self.words = [0; FLOW_WORDS];
    }

    /// This key with every bit that is clear in `mask` cleared.
    #[inline]
    pub fn masked(&self, mask: &FlowKey) -> FlowKey {
        let mut out = FlowKey::ZERO;
        for i in 0..FLOW_WORDS {
            out.words[i] = self.words[i] & mask.words[i];
        }
        out
    }

    /// True if `self` and `other` agree on every bit set in `mask`.
    #[inline]
    pub fn eq_masked(&self, other: &FlowKey, mask: &FlowKey) -> bool {
        let mut diff = 0u64;
        for i in 0..FLOW_WORDS {
            diff |= (self.words[i] ^ other.words[i]) & mask.words[i];
        }
        diff == 0
    }

    /// Bitmap of the non-zero words (bit `i` for word `i`), as in a
    /// miniflow's map.
    #[inline]
    pub fn nonzero_map(&self) -> u32 {
        let mut map = 0u32;
        for (i, w) in self.words.iter().enumerate() {
            map |= u32::from(*w != 0) << i;
        }
        map
    }

    /// The ingress port.
    #[inline(always)]
    pub fn in_port(&self) -> PortNo {
        PortNo(self.in_port_raw())
    }

    /// Set the ingress port.
    #[inline(always)]
    pub fn set_in_port(&mut self, p: PortNo) {
        self.set_in_port_raw(p.0)
    }

    scalar_field!(
        /// The ingress port number.
        in_port_raw, set_in_port_raw, u32, layout::IN_PORT);
    scalar_field!(
        /// Recirculation id (0 on first pass).
        recirc_id, set_recirc_id, u32, layout::RECIRC_ID);
    scalar_field!(
        /// Conntrack state bits.
        ct_state, set_ct_state, u32, layout::CT_STATE);
    scalar_field!(
        /// Connection mark.
        ct_mark, set_ct_mark, u32, layout::CT_MARK);
    scalar_field!(
        /// Conntrack zone.
        ct_zone, set_ct_zone, u16, layout::CT_ZONE);
    scalar_field!(
        /// Ethernet type after the VLAN tags (or [`DL_TYPE_NONE`]).
        dl_type, set_dl_type, u16, layout::DL_TYPE);
    scalar_field!(
        /// Fragment bits ([`FRAG_ANY`], [`FRAG_LATER`]).
        nw_frag, set_nw_frag, u8, layout::NW_FRAG);
    scalar_field!(
        /// IP protocol / IPv6 final next header; ARP opcode low byte.
        nw_proto, set_nw_proto, u8, layout::NW_PROTO);
    scalar_field!(
        /// IPv4 TOS byte / IPv6 traffic class (DSCP and ECN).
        nw_tos, set_nw_tos, u8, layout::NW_TOS);
    scalar_field!(
        /// IPv4 TTL / IPv6 hop limit.
        nw_ttl, set_nw_ttl, u8, layout::NW_TTL);
    scalar_field!(
        /// Destination MAC (the six bytes as a big-endian number).
        dl_dst, set_dl_dst, u64, layout::DL_DST);
    scalar_field!(
        /// Source MAC.
        dl_src, set_dl_src, u64, layout::DL_SRC);
    scalar_field!(
        /// Why extraction stopped early: a [`crate::Malformed`] code, or 0.
        malformed_code, set_malformed_code, u8, layout::MALFORMED);
    scalar_field!(
        /// Number of VLAN tags parsed (0..=2).
        n_vlans, set_n_vlans, u8, layout::N_VLANS);
    scalar_field!(
        /// IPv4 source (ARP: sender protocol address).
        nw_src, set_nw_src, u32, layout::NW_SRC);
    scalar_field!(
        /// IPv4 destination (ARP: target protocol address).
        nw_dst, set_nw_dst, u32, layout::NW_DST);
    scalar_field!(
        /// L4 source port; ICMP/ICMPv6 type.
        tp_src, set_tp_src, u16, layout::TP_SRC);
    scalar_field!(
        /// L4 destination port; ICMP/ICMPv6 code.
        tp_dst, set_tp_dst, u16, layout::TP_DST);
    scalar_field!(
        /// TCP flags (12 bits: NS in bit 8, FIN in bit 0).
        tcp_flags, set_tcp_flags, u16, layout::TCP_FLAGS);
    scalar_field!(
        /// IPv6 flow label (20 bits).
        ipv6_label, set_ipv6_label, u32, layout::IPV6_LABEL);
    scalar_field!(
        /// ARP sender hardware address / ND source link-layer address.
        arp_sha, set_arp_sha, u64, layout::ARP_SHA);
    scalar_field!(
        /// ARP target hardware address / ND target link-layer address.
        arp_tha, set_arp_tha, u64, layout::ARP_THA);
    wide_field!(
        /// Connection label.
        ct_label, set_ct_label, layout::CT_LABEL);
    scalar_field!(
        /// Original-direction IPv4 source of the tracked connection.
        ct_nw_src, set_ct_nw_src, u32, layout::CT_NW_SRC);
    scalar_field!(
        /// Original-direction IPv4 destination of the tracked connection.
        ct_nw_dst, set_ct_nw_dst, u32, layout::CT_NW_DST);
    scalar_field!(
        /// Original-direction L4 source port (ICMP: id) of the connection.
        ct_tp_src, set_ct_tp_src, u16, layout::CT_TP_SRC);
    scalar_field!(
        /// Original-direction L4 destination port (ICMP: type/code).
        ct_tp_dst, set_ct_tp_dst, u16, layout::CT_TP_DST);
    scalar_field!(
        /// IP protocol of the tracked connection.
        ct_nw_proto, set_ct_nw_proto, u8, layout::CT_NW_PROTO);
    wide_field!(
        /// Original-direction IPv6 source of the tracked connection.
        ct_ipv6_src, set_ct_ipv6_src, layout::CT_IPV6_SRC);
    wide_field!(
        /// Original-direction IPv6 destination of the tracked connection.
        ct_ipv6_dst, set_ct_ipv6_dst, layout::CT_IPV6_DST);

    /// Clear every conntrack field (state, zone, mark, label, tuple), as
    /// `ct_clear` and the end of a `ct` action do.
    #[inline]
    pub fn clear_ct(&mut self) {
        self.set_ct_state(0);
        self.set_ct_zone(0);
        self.set_ct_mark(0);
        self.set_ct_label(0);
        for w in &mut self.words[20..26] {
            *w = 0;
        }
    }
    wide_field!(
        /// IPv6 source address (the 16 bytes as a big-endian number).
        ipv6_src, set_ipv6_src, layout::IPV6_SRC);
    wide_field!(
        /// IPv6 destination address.
        ipv6_dst, set_ipv6_dst, layout::IPV6_DST);
    wide_field!(
        /// IPv6 neighbour discovery target.
        nd_target, set_nd_target, layout::ND_TARGET);

    /// OpenFlow `metadata`.
    #[inline(always)]
    pub fn metadata(&self) -> u64 {
        self.words[layout::METADATA]
    }

    /// Set OpenFlow `metadata`.
    #[inline(always)]
    pub fn set_metadata(&mut self, v: u64) {
        self.words[layout::METADATA] = v;
    }

    /// VLAN tag `i` (0 = outermost) as `(tpid, tci)`, if present.
    #[inline]
    pub fn vlan(&self, i: usize) -> Option<(u16, u16)> {
        if i >= self.n_vlans() as usize || i >= MAX_VLANS {
            return None;
        }
        let w = self.words[layout::VLAN_WORD] >> (32 * i);
        Some((w as u16, (w >> 16) as u16))
    }

    /// Set VLAN tag `i` (0 or 1) and raise the tag count to cover it.
    #[inline]
    pub fn set_vlan(&mut self, i: usize, tpid: u16, tci: u16) {
        if i >= MAX_VLANS {
            return;
        }
        let shift = 32 * i as u32;
        let m = 0xffff_ffffu64 << shift;
        let v = (u64::from(tpid) | (u64::from(tci) << 16)) << shift;
        self.words[layout::VLAN_WORD] = (self.words[layout::VLAN_WORD] & !m) | v;
        if self.n_vlans() as usize <= i {
            self.set_n_vlans(i as u8 + 1);
        }
    }
}

/// Six MAC bytes as the key's number.
#[inline(always)]
pub fn mac_to_u64(b: &[u8; 6]) -> u64 {
    u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
}

/// The key's number back to six MAC bytes.
#[inline]
pub fn u64_to_mac(v: u64) -> [u8; 6] {
    let b = v.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

impl fmt::Debug for FlowKey {
    /// Prints only the fields that are set, in an `ovs-ofctl`-like form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        let mac = |v: u64| {
            let b = u64_to_mac(v);
            format!(
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                b[0], b[1], b[2], b[3], b[4], b[5]
            )
        };
        let v4 = |v: u32| std::net::Ipv4Addr::from(v).to_string();
        let v6 = |v: u128| std::net::Ipv6Addr::from(v).to_string();
        parts.push(format!("in_port={}", self.in_port_raw()));
        if self.recirc_id() != 0 {
            parts.push(format!("recirc_id={:#x}", self.recirc_id()));
        }
        if self.ct_state() != 0 {
            parts.push(format!("ct_state={:#x}", self.ct_state()));
        }
        if self.ct_zone() != 0 {
            parts.push(format!("ct_zone={}", self.ct_zone()));
        }
        if self.ct_mark() != 0 {
            parts.push(format!("ct_mark={:#x}", self.ct_mark()));
        }
        if self.ct_label() != 0 {
            parts.push(format!("ct_label={:#x}", self.ct_label()));
        }
        if self.metadata() != 0 {
            parts.push(format!("metadata={:#x}", self.metadata()));
        }
        parts.push(format!("dl_src={}", mac(self.dl_src())));
        parts.push(format!("dl_dst={}", mac(self.dl_dst())));
        for i in 0..MAX_VLANS {
            if let Some((tpid, tci)) = self.vlan(i) {
                parts.push(format!("vlan{i}=({tpid:#06x},{tci:#06x})"));
            }
        }
        parts.push(format!("dl_type={:#06x}", self.dl_type()));
        match self.dl_type() {
            0x0800 | 0x0806 | 0x8035 => {
                parts.push(format!("nw_src={}", v4(self.nw_src())));
                parts.push(format!("nw_dst={}", v4(self.nw_dst())));
            }
            0x86dd => {
                parts.push(format!("ipv6_src={}", v6(self.ipv6_src())));
                parts.push(format!("ipv6_dst={}", v6(self.ipv6_dst())));
                if self.ipv6_label() != 0 {
                    parts.push(format!("ipv6_label={:#x}", self.ipv6_label()));
                }
                if self.nd_target() != 0 {
                    parts.push(format!("nd_target={}", v6(self.nd_target())));
                }
            }
            _ => {}
        }
        if self.arp_sha() != 0 || self.arp_tha() != 0 {
            parts.push(format!("sha/sll={}", mac(self.arp_sha())));
            parts.push(format!("tha/tll={}", mac(self.arp_tha())));
        }
        if self.nw_proto() != 0 {
            parts.push(format!("nw_proto={}", self.nw_proto()));
            parts.push(format!("nw_tos={}", self.nw_tos()));
            parts.push(format!("nw_ttl={}", self.nw_ttl()));
        }
        if self.nw_frag() != 0 {
            let frag = if self.nw_frag() & FRAG_LATER != 0 {
                "later"
            } else {
                "first"
            };
            parts.push(format!("nw_frag={frag}"));
        }
        if self.tp_src() != 0 || self.tp_dst() != 0 {
            parts.push(format!("tp_src={}", self.tp_src()));
            parts.push(format!("tp_dst={}", self.tp_dst()));
        }
        if self.tcp_flags() != 0 {
            parts.push(format!("tcp_flags={:#05x}", self.tcp_flags()));
        }
        if self.malformed_code() != 0 {
            parts.push(format!("malformed={}", self.malformed_code()));
        }
        write!(f, "FlowKey({})", parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_do_not_overlap() {
        // Setting every field to all-ones then reading each back shows that
        // no setter clobbers a neighbour.
        let mut k = FlowKey::ZERO;
        k.set_in_port(PortNo(0xffff_fffe));
        k.set_recirc_id(0x1234_5678);
        k.set_ct_state(0x21);
        k.set_ct_mark(0xdead_beef);
        k.set_ct_zone(0xfffe);
        k.set_dl_type(0x86dd);
        k.set_nw_frag(FRAG_ANY | FRAG_LATER);
        k.set_nw_proto(58);
        k.set_nw_tos(0xb8);
        k.set_nw_ttl(64);
        k.set_metadata(u64::MAX - 1);
        k.set_ct_label(u128::MAX - 2);
        k.set_dl_dst(0xffff_ffff_fffe);
        k.set_malformed_code(7);
        k.set_dl_src(0x0200_0000_0001);
        k.set_vlan(0, 0x88a8, 0xffff);
        k.set_vlan(1, 0x8100, 0x0064);
        k.set_nw_src(0x0a00_0001);
        k.set_nw_dst(0xffff_fffe);
        k.set_ipv6_src(1);
        k.set_ipv6_dst(u128::MAX);
        k.set_tp_src(0xfffe);
        k.set_tp_dst(443);
        k.set_tcp_flags(0x1ff);
        k.set_ipv6_label(0xfffff);
        k.set_nd_target(3 << 100);
        k.set_arp_sha(0xffff_ffff_ffff);
        k.set_arp_tha(0x0000_0000_0001);

        assert_eq!(k.in_port(), PortNo(0xffff_fffe));
        assert_eq!(k.recirc_id(), 0x1234_5678);
        assert_eq!(k.ct_state(), 0x21);
        assert_eq!(k.ct_mark(), 0xdead_beef);
        assert_eq!(k.ct_zone(), 0xfffe);
        assert_eq!(k.dl_type(), 0x86dd);
        assert_eq!(k.nw_frag(), 3);
        assert_eq!(k.nw_proto(), 58);
        assert_eq!(k.nw_tos(), 0xb8);
        assert_eq!(k.nw_ttl(), 64);
        assert_eq!(k.metadata(), u64::MAX - 1);
        assert_eq!(k.ct_label(), u128::MAX - 2);
        assert_eq!(k.dl_dst(), 0xffff_ffff_fffe);
        assert_eq!(k.malformed_code(), 7);
        assert_eq!(k.n_vlans(), 2);
        assert_eq!(k.dl_src(), 0x0200_0000_0001);
        assert_eq!(k.vlan(0), Some((0x88a8, 0xffff)));
        assert_eq!(k.vlan(1), Some((0x8100, 0x0064)));
        assert_eq!(k.vlan(2), None);
        assert_eq!(k.nw_src(), 0x0a00_0001);
        assert_eq!(k.nw_dst(), 0xffff_fffe);
        assert_eq!(k.ipv6_src(), 1);
        assert_eq!(k.ipv6_dst(), u128::MAX);
        assert_eq!(k.tp_src(), 0xfffe);
        assert_eq!(k.tp_dst(), 443);
        assert_eq!(k.tcp_flags(), 0x1ff);
        assert_eq!(k.ipv6_label(), 0xfffff);
        assert_eq!(k.nd_target(), 3 << 100);
        assert_eq!(k.arp_sha(), 0xffff_ffff_ffff);
        assert_eq!(k.arp_tha(), 1);
    }

    #[test]
    fn setters_truncate_to_field_width() {
        let mut k = FlowKey::ZERO;
        k.set_ipv6_label(0xfff_ffff);
        assert_eq!(k.ipv6_label(), 0xfffff);
        assert_eq!(k.words()[15] >> 20, 0, "no bits past the label");
        k.set_dl_src(u64::MAX);
        assert_eq!(k.dl_src(), 0xffff_ffff_ffff);
        assert_eq!(k.words()[7] >> 48, 0);
    }

    #[test]
    fn masking_and_masked_equality() {
        let mut a = FlowKey::ZERO;
        a.set_nw_src(0x0a00_0001);
        a.set_tp_dst(80);
        let mut b = a;
        b.set_tp_dst(81);
        let mut mask = FlowKey::ZERO;
        mask.set_nw_src(u32::MAX);
        assert!(a.eq_masked(&b, &mask));
        mask.set_tp_dst(u16::MAX);
        assert!(!a.eq_masked(&b, &mask));
        let m = b.masked(&mask);
        assert_eq!(m.tp_dst(), 81);
        assert_eq!(m.nw_src(), 0x0a00_0001);
        let mut only_src = FlowKey::ZERO;
        only_src.set_nw_src(0xffff_ff00);
        assert_eq!(b.masked(&only_src).nw_src(), 0x0a00_0000);
        assert_eq!(b.masked(&only_src).tp_dst(), 0);
    }

    #[test]
    fn nonzero_map_marks_words() {
        let mut k = FlowKey::ZERO;
        assert_eq!(k.nonzero_map(), 0);
        k.set_recirc_id(1);
        k.set_tp_src(1);
        assert_eq!(k.nonzero_map(), (1 << 0) | (1 << 14));
    }

    #[test]
    fn mac_round_trip_and_debug_names_fields() {
        let mac = [0x02, 0x00, 0x5e, 0x10, 0x00, 0xff];
        assert_eq!(u64_to_mac(mac_to_u64(&mac)), mac);
        let mut k = FlowKey::ZERO;
        k.set_dl_type(0x0800);
        k.set_nw_src(0x0a000001);
        k.set_nw_proto(17);
        k.set_tp_dst(53);
        let s = format!("{k:?}");
        assert!(s.contains("nw_src=10.0.0.1"), "{s}");
        assert!(s.contains("tp_dst=53"), "{s}");
        assert!(s.contains("dl_type=0x0800"), "{s}");
    }
}
