//! Text form of a masked [`FlowKey`], for `dpctl/dump-flows`: the fields
//! the mask does not wildcard, as `name(value)` or `name(value/mask)`
//! (in the spirit of OVS's datapath flow syntax, not byte-compatible).

use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::key::{u64_to_mac, FlowKey};

enum Kind {
    Dec,
    Hex,
    Mac,
    Ip4,
    Ip6,
}

fn value(kind: &Kind, v: u128) -> String {
    match kind {
        Kind::Dec => v.to_string(),
        Kind::Hex => format!("{v:#x}"),
        Kind::Mac => {
            let b = u64_to_mac(v as u64);
            format!(
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                b[0], b[1], b[2], b[3], b[4], b[5]
            )
        }
        Kind::Ip4 => Ipv4Addr::from(v as u32).to_string(),
        Kind::Ip6 => Ipv6Addr::from(v).to_string(),
    }
}

/// `key` under `mask`, e.g.
/// `recirc_id(0),in_port(1),eth_type(0x800),nw_proto(17),nw_dst(10.0.0.0/255.255.255.0)`.
pub fn format_masked(key: &FlowKey, mask: &FlowKey) -> String {
    type Get = fn(&FlowKey) -> u128;
    let fields: [(&str, Get, Kind); 33] = [
        ("recirc_id", |k| k.recirc_id().into(), Kind::Hex),
        ("in_port", |k| k.in_port_raw().into(), Kind::Dec),
        ("ct_state", |k| k.ct_state().into(), Kind::Hex),
        ("ct_zone", |k| k.ct_zone().into(), Kind::Dec),
        ("ct_mark", |k| k.ct_mark().into(), Kind::Hex),
        ("ct_label", |k| k.ct_label(), Kind::Hex),
        ("ct_nw_src", |k| k.ct_nw_src().into(), Kind::Ip4),
        ("ct_nw_dst", |k| k.ct_nw_dst().into(), Kind::Ip4),
        ("ct_ipv6_src", |k| k.ct_ipv6_src(), Kind::Ip6),
        ("ct_ipv6_dst", |k| k.ct_ipv6_dst(), Kind::Ip6),
        ("ct_nw_proto", |k| k.ct_nw_proto().into(), Kind::Dec),
        ("ct_tp_src", |k| k.ct_tp_src().into(), Kind::Dec),
        ("ct_tp_dst", |k| k.ct_tp_dst().into(), Kind::Dec),
        ("metadata", |k| k.metadata().into(), Kind::Hex),
        ("malformed", |k| k.malformed_code().into(), Kind::Dec),
        ("eth_src", |k| k.dl_src().into(), Kind::Mac),
        ("eth_dst", |k| k.dl_dst().into(), Kind::Mac),
        ("n_vlans", |k| k.n_vlans().into(), Kind::Dec),
        (
            "vlan_tci",
            |k| (k.words()[8] >> 16 & 0xffff).into(),
            Kind::Hex,
        ),
        ("eth_type", |k| k.dl_type().into(), Kind::Hex),
        ("nw_src", |k| k.nw_src().into(), Kind::Ip4),
        ("nw_dst", |k| k.nw_dst().into(), Kind::Ip4),
        ("ipv6_src", |k| k.ipv6_src(), Kind::Ip6),
        ("ipv6_dst", |k| k.ipv6_dst(), Kind::Ip6),
        ("ipv6_label", |k| k.ipv6_label().into(), Kind::Hex),
        ("nw_proto", |k| k.nw_proto().into(), Kind::Dec),
        ("nw_tos", |k| k.nw_tos().into(), Kind::Hex),
        ("nw_ttl", |k| k.nw_ttl().into(), Kind::Dec),
        ("nw_frag", |k| k.nw_frag().into(), Kind::Hex),
        ("tp_src", |k| k.tp_src().into(), Kind::Dec),
        ("tp_dst", |k| k.tp_dst().into(), Kind::Dec),
        ("tcp_flags", |k| k.tcp_flags().into(), Kind::Hex),
        ("arp_sha", |k| k.arp_sha().into(), Kind::Mac),
    ];
    let mut out = String::new();
    for (name, get, kind) in &fields {
        let m = get(mask);
        if m == 0 {
            continue;
        }
        if !out.is_empty() {
            out.push(',');
        }
        let v = get(key) & m;
        let full = match kind {
            Kind::Mac => 0xffff_ffff_ffff,
            Kind::Ip4 => 0xffff_ffff,
            Kind::Ip6 => u128::MAX,
            _ => m, // integer fields: a partial mask is shown below
        };
        let all_ones = m == full && !matches!(kind, Kind::Dec | Kind::Hex) || is_field_max(m);
        if all_ones {
            let _ = write!(out, "{name}({})", value(kind, v));
        } else {
            let _ = write!(out, "{name}({}/{})", value(kind, v), value(kind, m));
        }
    }
    out
}

/// A mask of all ones over some power-of-two field width.
fn is_field_max(m: u128) -> bool {
    [0xff, 0xffff, 0xffff_ffff, 0xffff_ffff_ffff_ffff, u128::MAX].contains(&m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_only_unwildcarded_fields() {
        let mut k = FlowKey::ZERO;
        k.set_in_port_raw(3);
        k.set_dl_type(0x0800);
        k.set_nw_dst(0x0a00_0105);
        k.set_tp_dst(80);
        let mut m = FlowKey::ZERO;
        m.set_in_port_raw(u32::MAX);
        m.set_dl_type(u16::MAX);
        m.set_nw_dst(0xffff_ff00);
        assert_eq!(
            format_masked(&k, &m),
            "in_port(3),eth_type(0x800),nw_dst(10.0.1.0/255.255.255.0)"
        );
    }
}
