//! Between the datapath's [`FlowKey`] and ofproto's [`ofproto::FlowKey`].
//!
//! The datapath key is what extraction fills, laid out for the fast path;
//! ofproto's key is what flows match, laid out for the classifier. The two
//! differ in a few places, all handled here and nowhere else:
//!
//! * ofproto's `vlan_tci` is the outer tag's TCI with the 0x1000 bit meaning
//!   "a tag is present" (OVS); the datapath keeps raw tags and a count.
//! * ICMP/ICMPv6 type and code, the ARP opcode and ARP addresses have their
//!   own ofproto fields; the datapath reuses the L4 port, `nw_proto` and
//!   IPv4 address slots for them.
//! * ofproto splits the TOS byte into DSCP (`nw_tos`) and ECN.
//! * Registers are not in the datapath key: they are frozen with the
//!   recirculation id ([`super::recirc::Frozen`]), so a megaflow's exact
//!   `recirc_id` already pins them. ofproto's `recirc_id` (table + 1) is the
//!   frozen state's, not the datapath's.
//!
//! [`to_dp_mask`] turns a translation's consulted-field mask into a
//! datapath megaflow mask. It is conservative: every datapath bit an
//! ofproto field is computed from is unmasked, and `in_port`, `recirc_id`,
//! the malformation code, `dl_type` and (for IP and ARP) `nw_proto` are
//! always exact, since the conversion itself depends on them.

use ofproto::fields::consts as of;
use ofproto::{Field as F, FlowKey as OfKey, FlowMask as OfMask};

use super::recirc::Frozen;
use crate::flow::FlowKey;

use of::{ETH_ARP, ETH_IPV4, ETH_IPV6, ETH_RARP, VLAN_CFI as VLAN_PRESENT};

fn is_arp(dl_type: u16) -> bool {
    dl_type == ETH_ARP || dl_type == ETH_RARP
}

/// The ofproto key of a datapath key whose recirculation id stands for
/// `frozen`.
pub fn to_of_key(k: &FlowKey, frozen: &Frozen) -> OfKey {
    let mut o = OfKey::default();
    let dl_type = k.dl_type();
    o.set(F::IN_PORT, k.in_port_raw().into());
    o.set(F::DL_TYPE, dl_type.into());
    if let Some((_, tci)) = k.vlan(0) {
        o.set(F::VLAN_TCI, (tci | VLAN_PRESENT).into());
    }
    o.set(F::DL_SRC, k.dl_src().into());
    o.set(F::DL_DST, k.dl_dst().into());
    let ip = dl_type == ETH_IPV4 || dl_type == ETH_IPV6;
    if ip {
        let proto = k.nw_proto();
        o.set(F::NW_PROTO, proto.into());
        o.set(F::NW_TOS, (k.nw_tos() >> 2).into());
        o.set(F::NW_ECN, (k.nw_tos() & 3).into());
        o.set(F::NW_TTL, k.nw_ttl().into());
        o.set(F::NW_FRAG, k.nw_frag().into());
        if dl_type == ETH_IPV4 {
            o.set(F::NW_SRC, k.nw_src().into());
            o.set(F::NW_DST, k.nw_dst().into());
        } else {
            o.set(F::IPV6_SRC, k.ipv6_src());
            o.set(F::IPV6_DST, k.ipv6_dst());
            o.set(F::IPV6_LABEL, k.ipv6_label().into());
        }
        match (dl_type, proto) {
            (ETH_IPV4, of::PROTO_ICMP) => {
                o.set(F::ICMP_TYPE, k.tp_src().into());
                o.set(F::ICMP_CODE, k.tp_dst().into());
            }
            (ETH_IPV6, of::PROTO_ICMPV6) => {
                o.set(F::ICMPV6_TYPE, k.tp_src().into());
                o.set(F::ICMPV6_CODE, k.tp_dst().into());
            }
            _ => {
                o.set(F::TP_SRC, k.tp_src().into());
                o.set(F::TP_DST, k.tp_dst().into());
                o.set(F::TCP_FLAGS, k.tcp_flags().into());
            }
        }
    } else if is_arp(dl_type) {
        o.set(F::ARP_OP, k.nw_proto().into());
        o.set(F::ARP_SPA, k.nw_src().into());
        o.set(F::ARP_TPA, k.nw_dst().into());
        o.set(F::ARP_SHA, k.arp_sha().into());
        o.set(F::ARP_THA, k.arp_tha().into());
    }
    o.set(F::CT_STATE, k.ct_state().into());
    o.set(F::CT_ZONE, k.ct_zone().into());
    o.set(F::CT_MARK, k.ct_mark().into());
    o.set(F::CT_LABEL, k.ct_label());
    o.set(F::CT_NW_SRC, k.ct_nw_src().into());
    o.set(F::CT_NW_DST, k.ct_nw_dst().into());
    o.set(F::CT_IPV6_SRC, k.ct_ipv6_src());
    o.set(F::CT_IPV6_DST, k.ct_ipv6_dst());
    o.set(F::CT_NW_PROTO, k.ct_nw_proto().into());
    o.set(F::CT_TP_SRC, k.ct_tp_src().into());
    o.set(F::CT_TP_DST, k.ct_tp_dst().into());
    o.set(F::METADATA, k.metadata().into());
    o.set(F::RECIRC_ID, frozen.table_recirc.into());
    for (i, r) in frozen.regs.iter().enumerate() {
        o.set(F::reg(i as u8), (*r).into());
    }
    o
}

/// The datapath megaflow mask for a translation that consulted `wc`, for a
/// packet with key `k` (whose `dl_type` decides which slots the ofproto
/// fields came from).
pub fn to_dp_mask(wc: &OfMask, k: &FlowKey) -> FlowKey {
    let mut m = FlowKey::ZERO;
    // Always exact: the lookup identity and what the conversion reads.
    m.set_in_port_raw(u32::MAX);
    m.set_recirc_id(u32::MAX);
    m.set_malformed_code(u8::MAX);
    m.set_dl_type(u16::MAX);
    let dl_type = k.dl_type();
    if dl_type == ETH_IPV4 || dl_type == ETH_IPV6 || is_arp(dl_type) {
        m.set_nw_proto(u8::MAX);
    }
    let g = |f: F| wc.get(f);

    let tci = g(F::VLAN_TCI) as u16;
    if tci != 0 {
        m.set_n_vlans(u8::MAX);
        m.set_vlan(0, 0, tci & !VLAN_PRESENT);
        // set_vlan raised the count to 1; put the exact-count mask back.
        m.set_n_vlans(u8::MAX);
    }
    m.set_dl_src(g(F::DL_SRC) as u64);
    m.set_dl_dst(g(F::DL_DST) as u64);
    let tos = ((g(F::NW_TOS) as u8) << 2) | (g(F::NW_ECN) as u8 & 3);
    m.set_nw_tos(tos);
    m.set_nw_ttl(g(F::NW_TTL) as u8);
    m.set_nw_frag(g(F::NW_FRAG) as u8);
    if g(F::ARP_OP) != 0 {
        m.set_nw_proto(u8::MAX);
    }
    m.set_nw_src((g(F::NW_SRC) | g(F::ARP_SPA)) as u32);
    m.set_nw_dst((g(F::NW_DST) | g(F::ARP_TPA)) as u32);
    m.set_ipv6_src(g(F::IPV6_SRC));
    m.set_ipv6_dst(g(F::IPV6_DST));
    m.set_ipv6_label(g(F::IPV6_LABEL) as u32);
    m.set_tp_src((g(F::TP_SRC) | g(F::ICMP_TYPE) | g(F::ICMPV6_TYPE)) as u16);
    m.set_tp_dst((g(F::TP_DST) | g(F::ICMP_CODE) | g(F::ICMPV6_CODE)) as u16);
    m.set_tcp_flags(g(F::TCP_FLAGS) as u16);
    m.set_arp_sha(g(F::ARP_SHA) as u64);
    m.set_arp_tha(g(F::ARP_THA) as u64);
    m.set_ct_state(g(F::CT_STATE) as u32);
    m.set_ct_zone(g(F::CT_ZONE) as u16);
    m.set_ct_mark(g(F::CT_MARK) as u32);
    m.set_ct_label(g(F::CT_LABEL));
    m.set_ct_nw_src(g(F::CT_NW_SRC) as u32);
    m.set_ct_nw_dst(g(F::CT_NW_DST) as u32);
    m.set_ct_ipv6_src(g(F::CT_IPV6_SRC));
    m.set_ct_ipv6_dst(g(F::CT_IPV6_DST));
    m.set_ct_nw_proto(g(F::CT_NW_PROTO) as u8);
    m.set_ct_tp_src(g(F::CT_TP_SRC) as u16);
    m.set_ct_tp_dst(g(F::CT_TP_DST) as u16);
    m.set_metadata(g(F::METADATA) as u64);
    m
}

/// Fill the key's conntrack fields from a `ct` result.
#[inline]
pub fn set_ct_fields(k: &mut FlowKey, r: &ct::CtResult) {
    k.set_ct_state(r.state.bits());
    k.set_ct_zone(r.zone.0);
    k.set_ct_mark(r.mark);
    k.set_ct_label(r.label);
    match &r.orig {
        Some(o) => {
            if o.family == ct::Family::Ipv4 {
                k.set_ct_nw_src(u32::from_be_bytes([o.src[0], o.src[1], o.src[2], o.src[3]]));
                k.set_ct_nw_dst(u32::from_be_bytes([o.dst[0], o.dst[1], o.dst[2], o.dst[3]]));
                k.set_ct_ipv6_src(0);
                k.set_ct_ipv6_dst(0);
            } else {
                k.set_ct_nw_src(0);
                k.set_ct_nw_dst(0);
                k.set_ct_ipv6_src(u128::from_be_bytes(o.src));
                k.set_ct_ipv6_dst(u128::from_be_bytes(o.dst));
            }
            k.set_ct_nw_proto(o.proto);
            if o.is_icmp() {
                // OVS reports ICMP's type and code as ct_tp_src/ct_tp_dst.
                k.set_ct_tp_src(o.icmp_type().into());
                k.set_ct_tp_dst(o.icmp_code().into());
            } else {
                k.set_ct_tp_src(o.src_port);
                k.set_ct_tp_dst(o.dst_port);
            }
        }
        None => {
            k.set_ct_nw_src(0);
            k.set_ct_nw_dst(0);
            k.set_ct_ipv6_src(0);
            k.set_ct_ipv6_dst(0);
            k.set_ct_nw_proto(0);
            k.set_ct_tp_src(0);
            k.set_ct_tp_dst(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp_key() -> FlowKey {
        let mut k = FlowKey::ZERO;
        k.set_in_port_raw(1);
        k.set_dl_type(ETH_IPV4);
        k.set_nw_proto(17);
        k.set_nw_src(0x0a00_0001);
        k.set_nw_dst(0x0a00_0002);
        k.set_tp_src(1234);
        k.set_tp_dst(53);
        k.set_nw_tos(0xb9);
        k
    }

    #[test]
    fn ipv4_udp_fields_land_in_their_ofproto_slots() {
        let o = to_of_key(&udp_key(), &Frozen::default());
        assert_eq!(o.get(F::IN_PORT), 1);
        assert_eq!(o.get(F::NW_SRC), 0x0a00_0001);
        assert_eq!(o.get(F::TP_DST), 53);
        assert_eq!(o.get(F::NW_TOS), 0xb9 >> 2);
        assert_eq!(o.get(F::NW_ECN), 1);
        assert_eq!(o.get(F::ICMP_TYPE), 0);
    }

    #[test]
    fn icmp_type_comes_from_tp_src_and_masks_back() {
        let mut k = udp_key();
        k.set_nw_proto(1);
        k.set_tp_src(8);
        let o = to_of_key(&k, &Frozen::default());
        assert_eq!(o.get(F::ICMP_TYPE), 8);
        assert_eq!(o.get(F::TP_SRC), 0);
        let mut wc = OfMask::default();
        wc.set_exact(F::ICMP_TYPE);
        let m = to_dp_mask(&wc, &k);
        assert_eq!(m.tp_src(), 0xff);
        assert_eq!(m.nw_proto(), 0xff);
        assert_eq!(m.tp_dst(), 0);
    }

    #[test]
    fn vlan_present_bit_is_synthesised() {
        let mut k = udp_key();
        k.set_vlan(0, 0x8100, 0x0064);
        let o = to_of_key(&k, &Frozen::default());
        assert_eq!(o.get(F::VLAN_TCI), 0x1064);
        let mut wc = OfMask::default();
        wc.set(F::VLAN_TCI, 0x1fff);
        let m = to_dp_mask(&wc, &k);
        assert_eq!(m.n_vlans(), 0xff);
        assert_eq!(m.vlan(0).map(|v| v.1), Some(0x0fff));
    }

    #[test]
    fn registers_and_table_come_from_the_frozen_state() {
        let mut f = Frozen {
            table_recirc: 3,
            ..Default::default()
        };
        f.regs[5] = 77;
        let mut k = udp_key();
        k.set_recirc_id(9); // the datapath's id: not what ofproto sees
        let o = to_of_key(&k, &f);
        assert_eq!(o.get(F::RECIRC_ID), 3);
        assert_eq!(o.get(F::reg(5)), 77);
    }

    #[test]
    fn mask_is_exact_on_identity_fields_even_when_nothing_was_consulted() {
        let m = to_dp_mask(&OfMask::default(), &udp_key());
        assert_eq!(m.in_port_raw(), u32::MAX);
        assert_eq!(m.recirc_id(), u32::MAX);
        assert_eq!(m.dl_type(), u16::MAX);
        assert_eq!(m.nw_proto(), u8::MAX);
        assert_eq!(m.nw_src(), 0);
        assert_eq!(m.tp_dst(), 0);
    }
}
