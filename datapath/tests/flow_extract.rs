//! Flow-key extraction against packets built independently with smoltcp's
//! wire views (and by hand where smoltcp has no builder): one test per
//! protocol, a malformed corpus (every truncation of a set of valid frames),
//! and a property test on random bytes.

use std::net::{Ipv4Addr, Ipv6Addr};

use datapath::flow::extract::{extract, ExtractStats, Malformed};
use datapath::flow::key::{mac_to_u64, FRAG_ANY, FRAG_LATER};
use datapath::packet::{Packet, PacketBatch, PacketMeta, PortNo};
use datapath::{flow, FlowKey, BATCH_SIZE};
use proptest::prelude::*;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, Icmpv4Packet, Icmpv6Packet, IpAddress,
    IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket,
};

const DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const V4_SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const V4_DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const V6_SRC: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
const V6_DST: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);

/// Ethernet header, VLAN tags (tpid, tci), then `l3`.
fn eth(ethertype: u16, vlans: &[(u16, u16)], l3: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 4 * vlans.len() + l3.len());
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

struct V4 {
    proto: u8,
    opts: usize,
    more_frags: bool,
    frag_offset: u16,
    dscp: u8,
}

impl Default for V4 {
    fn default() -> Self {
        V4 {
            proto: 17,
            opts: 0,
            more_frags: false,
            frag_offset: 0,
            dscp: 0,
        }
    }
}

fn ipv4(h: V4, payload: &[u8]) -> Vec<u8> {
    let hl = 20 + h.opts;
    let mut b = vec![0u8; hl + payload.len()];
    b[20..hl].fill(1); // NOP options
    b[hl..].copy_from_slice(payload);
    let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
    p.set_version(4);
    p.set_header_len(hl as u8);
    p.set_dscp(h.dscp);
    p.set_total_len((hl + payload.len()) as u16);
    p.set_hop_limit(63);
    p.set_next_header(IpProtocol::from(h.proto));
    p.set_more_frags(h.more_frags);
    p.set_frag_offset(h.frag_offset);
    p.set_src_addr(V4_SRC);
    p.set_dst_addr(V4_DST);
    p.fill_checksum();
    b
}

fn ipv6(next: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 40 + payload.len()];
    b[40..].copy_from_slice(payload);
    let mut p = Ipv6Packet::new_unchecked(&mut b[..]);
    p.set_version(6);
    p.set_traffic_class(0xb8);
    p.set_flow_label(0x12345);
    p.set_payload_len(payload.len() as u16);
    p.set_next_header(IpProtocol::from(next));
    p.set_hop_limit(255);
    p.set_src_addr(V6_SRC);
    p.set_dst_addr(V6_DST);
    b
}

/// A 20-byte TCP header (plus `opts` bytes of options) and `data`.
fn tcp(
    sport: u16,
    dport: u16,
    syn: bool,
    ack: bool,
    fin: bool,
    opts: usize,
    data: &[u8],
) -> Vec<u8> {
    let hl = 20 + opts;
    let mut b = vec![0u8; hl + data.len()];
    b[20..hl].fill(1);
    b[hl..].copy_from_slice(data);
    let mut t = TcpPacket::new_unchecked(&mut b[..]);
    t.set_src_port(sport);
    t.set_dst_port(dport);
    t.set_header_len(hl as u8);
    t.set_seq_number(smoltcp::wire::TcpSeqNumber(1000));
    t.set_syn(syn);
    t.set_ack(ack);
    t.set_fin(fin);
    t.set_window_len(65535);
    t.fill_checksum(&IpAddress::Ipv4(V4_SRC), &IpAddress::Ipv4(V4_DST));
    b
}

fn udp(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 8 + data.len()];
    b[8..].copy_from_slice(data);
    let mut u = UdpPacket::new_unchecked(&mut b[..]);
    u.set_src_port(sport);
    u.set_dst_port(dport);
    u.set_len((8 + data.len()) as u16);
    u.fill_checksum(&IpAddress::Ipv4(V4_SRC), &IpAddress::Ipv4(V4_DST));
    b
}

fn icmp4(ty: u8, code: u8) -> Vec<u8> {
    let mut b = vec![0u8; 8];
    let mut p = Icmpv4Packet::new_unchecked(&mut b[..]);
    p.set_msg_type(ty.into());
    p.set_msg_code(code);
    p.set_echo_ident(7);
    p.fill_checksum();
    b
}

fn icmp6(ty: u8, code: u8, body: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 4 + body.len()];
    b[4..].copy_from_slice(body);
    let mut p = Icmpv6Packet::new_unchecked(&mut b[..]);
    p.set_msg_type(ty.into());
    p.set_msg_code(code);
    p.fill_checksum(&V6_SRC, &V6_DST);
    b
}

/// A neighbour solicitation for `target` with the given options.
fn nd_ns(target: Ipv6Addr, opts: &[(u8, &[u8])]) -> Vec<u8> {
    let mut body = vec![0u8; 4];
    body.extend_from_slice(&target.octets());
    for (ty, data) in opts {
        let len = 2 + data.len();
        assert_eq!(len % 8, 0);
        body.push(*ty);
        body.push((len / 8) as u8);
        body.extend_from_slice(data);
    }
    icmp6(135, 0, &body)
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

fn run(frame: &[u8]) -> (FlowKey, PacketMeta, Result<(), Malformed>) {
    let mut meta = PacketMeta::new(PortNo(3));
    let mut key = FlowKey::ZERO;
    let r = extract(frame, &mut meta, &mut key);
    (key, meta, r)
}

fn ok(frame: &[u8]) -> (FlowKey, PacketMeta) {
    let (k, m, r) = run(frame);
    assert_eq!(r, Ok(()), "{k:?}");
    assert_eq!(k.malformed_code(), 0);
    (k, m)
}

fn bad(frame: &[u8], want: Malformed) -> FlowKey {
    let (k, _, r) = run(frame);
    assert_eq!(r, Err(want), "{k:?}");
    assert_eq!(Malformed::from_code(k.malformed_code()), Some(want));
    k
}

#[test]
fn ethernet_fields_and_metadata_are_in_the_key() {
    let f = eth(0x88cc, &[], &[0u8; 46]);
    let mut meta = PacketMeta::new(PortNo(4));
    meta.recirc_id = 9;
    meta.ct_state = 0x22;
    meta.ct_zone = 5;
    meta.ct_mark = 0xabc;
    meta.ct_label = 1 << 70;
    meta.metadata = 0xfeed;
    meta.regs[0] = 77; // registers are not part of the key
    let mut key = FlowKey::ZERO;
    assert_eq!(extract(&f, &mut meta, &mut key), Ok(()));
    assert_eq!(key.in_port(), PortNo(4));
    assert_eq!(key.recirc_id(), 9);
    assert_eq!(key.ct_state(), 0x22);
    assert_eq!(key.ct_zone(), 5);
    assert_eq!(key.ct_mark(), 0xabc);
    assert_eq!(key.ct_label(), 1 << 70);
    assert_eq!(key.metadata(), 0xfeed);
    assert_eq!(key.dl_dst(), mac_to_u64(&DST));
    assert_eq!(key.dl_src(), mac_to_u64(&SRC));
    assert_eq!(key.dl_type(), 0x88cc);
    assert_eq!(key.n_vlans(), 0);
    assert_eq!(meta.l3_offset(), None, "no L3 for an unknown ethertype");
    let mut meta2 = meta;
    meta2.regs[0] = 78;
    let mut key2 = FlowKey::ZERO;
    extract(&f, &mut meta2, &mut key2).unwrap();
    assert_eq!(key, key2);
}

#[test]
fn udp_ipv4() {
    let f = eth(
        0x0800,
        &[],
        &ipv4(
            V4 {
                dscp: 46,
                ..V4::default()
            },
            &udp(5353, 53, b"q"),
        ),
    );
    let (k, m) = ok(&f);
    assert_eq!(k.dl_type(), 0x0800);
    assert_eq!(k.nw_src(), u32::from(V4_SRC));
    assert_eq!(k.nw_dst(), u32::from(V4_DST));
    assert_eq!(k.nw_proto(), 17);
    assert_eq!(k.nw_tos(), 46 << 2);
    assert_eq!(k.nw_ttl(), 63);
    assert_eq!(k.nw_frag(), 0);
    assert_eq!((k.tp_src(), k.tp_dst()), (5353, 53));
    assert_eq!((m.l3_offset(), m.l4_offset()), (Some(14), Some(34)));
}

#[test]
fn tcp_ipv4_flags_and_options() {
    let seg = tcp(40000, 443, true, true, false, 12, b"");
    let f = eth(
        0x0800,
        &[],
        &ipv4(
            V4 {
                proto: 6,
                opts: 8,
                ..V4::default()
            },
            &seg,
        ),
    );
    let (k, m) = ok(&f);
    assert_eq!(k.nw_proto(), 6);
    assert_eq!((k.tp_src(), k.tp_dst()), (40000, 443));
    assert_eq!(k.tcp_flags(), 0x012, "SYN|ACK");
    assert_eq!(m.l4_offset(), Some(14 + 28), "IPv4 options skipped");
    let mut f2 = f.clone();
    f2[14 + 28 + 12] |= 0x01; // NS bit
    f2[14 + 28 + 13] = 0x01; // FIN only
    let (k2, _) = ok(&f2);
    assert_eq!(k2.tcp_flags(), 0x101);
}

#[test]
fn ethernet_padding_is_not_l4() {
    // A TCP header with options that the IP total length cuts off, but the
    // frame continues with padding: the data offset must be checked against
    // the datagram, not the frame.
    let mut ip = ipv4(
        V4 {
            proto: 6,
            ..V4::default()
        },
        &tcp(1, 2, true, false, false, 0, b""),
    );
    ip[20 + 12] = 0x80; // data offset 32 bytes: past the datagram
    let mut f = eth(0x0800, &[], &ip);
    f.extend_from_slice(&[0u8; 20]);
    bad(&f, Malformed::TcpBadDataOffset);
}

#[test]
fn vlan_and_qinq() {
    let l3 = ipv4(V4::default(), &udp(1, 2, b""));
    let (k, m) = ok(&eth(0x0800, &[(0x8100, 0x2064)], &l3));
    assert_eq!(k.n_vlans(), 1);
    assert_eq!(k.vlan(0), Some((0x8100, 0x2064)));
    assert_eq!(k.dl_type(), 0x0800);
    assert_eq!(m.l3_offset(), Some(18));
    assert_eq!(k.tp_dst(), 2);

    let (k, m) = ok(&eth(0x0800, &[(0x88a8, 100), (0x8100, 200)], &l3));
    assert_eq!(k.n_vlans(), 2);
    assert_eq!(k.vlan(0), Some((0x88a8, 100)));
    assert_eq!(k.vlan(1), Some((0x8100, 200)));
    assert_eq!(m.l3_offset(), Some(22));
    assert_eq!(k.nw_src(), u32::from(V4_SRC));

    let k = bad(
        &eth(0x0800, &[(0x88a8, 1), (0x8100, 2), (0x8100, 3)], &l3),
        Malformed::VlanTooDeep,
    );
    assert_eq!(k.n_vlans(), 2);
    assert_eq!(k.dl_type(), 0x8100);
    assert_eq!(k.nw_src(), 0);
}

#[test]
fn llc_snap_and_plain_802_3() {
    let l3 = ipv4(V4::default(), &udp(7, 8, b""));
    let mut snap = vec![0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00];
    snap.extend_from_slice(&l3);
    let (k, m) = ok(&eth(snap.len() as u16, &[], &snap));
    assert_eq!(k.dl_type(), 0x0800);
    assert_eq!(m.l3_offset(), Some(22));
    assert_eq!(k.tp_src(), 7);

    let (k, _) = ok(&eth(40, &[], &[0x42, 0x42, 0x03, 0, 0, 0, 0, 0]));
    assert_eq!(k.dl_type(), 0x05ff);
}

#[test]
fn arp_request_and_reply() {
    let (k, m) = ok(&eth(0x0806, &[], &arp(ArpOperation::Request)));
    assert_eq!(k.dl_type(), 0x0806);
    assert_eq!(k.nw_proto(), 1);
    assert_eq!(k.nw_src(), u32::from(V4_SRC));
    assert_eq!(k.nw_dst(), u32::from(V4_DST));
    assert_eq!(k.arp_sha(), mac_to_u64(&SRC));
    assert_eq!(k.arp_tha(), 0);
    assert_eq!(m.l3_offset(), Some(14));
    let (k, _) = ok(&eth(0x0806, &[], &arp(ArpOperation::Reply)));
    assert_eq!(k.nw_proto(), 2);
    bad(
        &eth(0x0806, &[], &arp(ArpOperation::Reply)[..27]),
        Malformed::ArpTruncated,
    );
}

#[test]
fn ipv4_fragments_first_and_later() {
    let payload = udp(1000, 2000, &[0u8; 16]);
    let first = eth(
        0x0800,
        &[],
        &ipv4(
            V4 {
                more_frags: true,
                ..V4::default()
            },
            &payload,
        ),
    );
    let (k, m) = ok(&first);
    assert_eq!(k.nw_frag(), FRAG_ANY);
    assert_eq!(k.tp_src(), 1000, "first fragment has ports");
    assert_eq!(m.l4_offset(), Some(34));

    let later = eth(
        0x0800,
        &[],
        &ipv4(
            V4 {
                frag_offset: 24,
                ..V4::default()
            },
            &payload,
        ),
    );
    let (k, m) = ok(&later);
    assert_eq!(k.nw_frag(), FRAG_ANY | FRAG_LATER);
    assert_eq!((k.tp_src(), k.tp_dst()), (0, 0), "later fragment has no L4");
    assert_eq!(k.nw_proto(), 17);
    assert_eq!(m.l4_offset(), Some(34));
}

#[test]
fn ipv4_header_errors() {
    let good = eth(0x0800, &[], &ipv4(V4::default(), &udp(1, 2, b"")));
    let mut f = good.clone();
    f[14] = 0x65; // version 6 in an IPv4 ethertype
    bad(&f, Malformed::Ipv4BadVersion);
    let mut f = good.clone();
    f[14] = 0x44; // IHL 4
    bad(&f, Malformed::Ipv4BadIhl);
    let mut f = good.clone();
    f[14] = 0x4f; // IHL 60 > frame
    bad(&f, Malformed::Ipv4OptionsTruncated);
    let mut f = good.clone();
    f[16..18].copy_from_slice(&19u16.to_be_bytes());
    bad(&f, Malformed::Ipv4TotalLenTooShort);
    let mut f = good.clone();
    f[16..18].copy_from_slice(&1000u16.to_be_bytes());
    bad(&f, Malformed::Ipv4TotalLenTooLong);
    bad(&good[..14 + 19], Malformed::Ipv4Truncated);
}

#[test]
fn icmpv4_type_and_code() {
    let f = eth(
        0x0800,
        &[],
        &ipv4(
            V4 {
                proto: 1,
                ..V4::default()
            },
            &icmp4(3, 1),
        ),
    );
    let (k, _) = ok(&f);
    assert_eq!((k.nw_proto(), k.tp_src(), k.tp_dst()), (1, 3, 1));
    let f = eth(
        0x0800,
        &[],
        &ipv4(
            V4 {
                proto: 1,
                ..V4::default()
            },
            &icmp4(8, 0)[..7],
        ),
    );
    bad(&f, Malformed::IcmpTruncated);
}

#[test]
fn sctp_ports() {
    let mut sctp = vec![0u8; 12];
    sctp[0..2].copy_from_slice(&3868u16.to_be_bytes());
    sctp[2..4].copy_from_slice(&2905u16.to_be_bytes());
    let (k, _) = ok(&eth(
        0x0800,
        &[],
        &ipv4(
            V4 {
                proto: 132,
                ..V4::default()
            },
            &sctp,
        ),
    ));
    assert_eq!((k.nw_proto(), k.tp_src(), k.tp_dst()), (132, 3868, 2905));
    let (k, _) = ok(&eth(0x86dd, &[], &ipv6(132, &sctp)));
    assert_eq!((k.nw_proto(), k.tp_src(), k.tp_dst()), (132, 3868, 2905));
    bad(
        &eth(
            0x0800,
            &[],
            &ipv4(
                V4 {
                    proto: 132,
                    ..V4::default()
                },
                &sctp[..11],
            ),
        ),
        Malformed::SctpTruncated,
    );
}

#[test]
fn udp_ipv6() {
    let (k, m) = ok(&eth(0x86dd, &[], &ipv6(17, &udp(546, 547, b"x"))));
    assert_eq!(k.dl_type(), 0x86dd);
    assert_eq!(k.ipv6_src(), u128::from(V6_SRC));
    assert_eq!(k.ipv6_dst(), u128::from(V6_DST));
    assert_eq!(k.nw_tos(), 0xb8);
    assert_eq!(k.ipv6_label(), 0x12345);
    assert_eq!(k.nw_ttl(), 255);
    assert_eq!((k.nw_proto(), k.tp_src(), k.tp_dst()), (17, 546, 547));
    assert_eq!((m.l3_offset(), m.l4_offset()), (Some(14), Some(54)));
}

/// An extension header of type-generic layout: next header, length in
/// 8-byte units beyond the first 8, then padding.
fn ext(next: u8, units: u8) -> Vec<u8> {
    let mut h = vec![0u8; (usize::from(units) + 1) * 8];
    h[0] = next;
    h[1] = units;
    h
}

fn frag6(next: u8, offset_units: u16, more: bool) -> Vec<u8> {
    let mut h = vec![0u8; 8];
    h[0] = next;
    h[2..4].copy_from_slice(&((offset_units << 3) | u16::from(more)).to_be_bytes());
    h
}

#[test]
fn ipv6_extension_headers_are_walked() {
    let mut p = ext(43, 0); // hop-by-hop -> routing
    p.extend(ext(60, 1)); // routing (16 bytes) -> dest opts
    p.extend(ext(6, 0)); // dest opts -> TCP
    p.extend(tcp(5000, 22, false, true, false, 0, b"data"));
    let (k, m) = ok(&eth(0x86dd, &[], &ipv6(0, &p)));
    assert_eq!(k.nw_proto(), 6);
    assert_eq!((k.tp_src(), k.tp_dst(), k.tcp_flags()), (5000, 22, 0x10));
    assert_eq!(m.l4_offset(), Some(14 + 40 + 8 + 16 + 8));

    // AH counts its length in 4-byte units (+2)
    let mut ah = vec![0u8; 16];
    ah[0] = 17;
    ah[1] = 2;
    ah.extend(udp(1, 2, b""));
    let (k, _) = ok(&eth(0x86dd, &[], &ipv6(51, &ah)));
    assert_eq!((k.nw_proto(), k.tp_dst()), (17, 2));

    // ESP: stop, nothing beyond it is readable
    let (k, _) = ok(&eth(0x86dd, &[], &ipv6(50, &[0u8; 16])));
    assert_eq!((k.nw_proto(), k.tp_src()), (50, 0));

    // an extension header that claims more than the payload
    let mut p = ext(17, 4);
    p.truncate(16);
    bad(&eth(0x86dd, &[], &ipv6(0, &p)), Malformed::Ipv6ExtTruncated);

    // a chain longer than the walker accepts
    let mut p = Vec::new();
    for _ in 0..20 {
        p.extend(ext(60, 0));
    }
    bad(&eth(0x86dd, &[], &ipv6(60, &p)), Malformed::Ipv6TooManyExt);
}

#[test]
fn ipv6_fragments_first_later_and_atomic() {
    let mut p = frag6(17, 0, true);
    p.extend(udp(53, 1234, b"first"));
    let (k, _) = ok(&eth(0x86dd, &[], &ipv6(44, &p)));
    assert_eq!(k.nw_frag(), FRAG_ANY);
    assert_eq!((k.nw_proto(), k.tp_src()), (17, 53));

    let mut p = frag6(17, 3, false);
    p.extend(udp(53, 1234, b"later"));
    let (k, m) = ok(&eth(0x86dd, &[], &ipv6(44, &p)));
    assert_eq!(k.nw_frag(), FRAG_ANY | FRAG_LATER);
    assert_eq!((k.nw_proto(), k.tp_src()), (17, 0));
    assert_eq!(m.l4_offset(), Some(14 + 40 + 8));

    let mut p = frag6(17, 0, false);
    p.extend(udp(53, 1234, b"atomic"));
    let (k, _) = ok(&eth(0x86dd, &[], &ipv6(44, &p)));
    assert_eq!(k.nw_frag(), 0, "an atomic fragment is a whole packet");
    assert_eq!(k.tp_src(), 53);
}

#[test]
fn ipv6_header_errors() {
    let good = eth(0x86dd, &[], &ipv6(17, &udp(1, 2, b"")));
    let mut f = good.clone();
    f[14] = 0x40;
    bad(&f, Malformed::Ipv6BadVersion);
    let mut f = good.clone();
    f[18..20].copy_from_slice(&9u16.to_be_bytes());
    bad(&f, Malformed::Ipv6PayloadLenTooLong);
    bad(&good[..14 + 39], Malformed::Ipv6Truncated);
    // payload length shorter than the UDP header: UDP is cut by it
    let mut f = good.clone();
    f[18..20].copy_from_slice(&4u16.to_be_bytes());
    bad(&f, Malformed::UdpTruncated);
}

#[test]
fn icmpv6_and_neighbour_discovery() {
    let (k, _) = ok(&eth(0x86dd, &[], &ipv6(58, &icmp6(128, 0, &[0, 1, 0, 1]))));
    assert_eq!((k.nw_proto(), k.tp_src(), k.tp_dst()), (58, 128, 0));
    assert_eq!(k.nd_target(), 0);

    let target: Ipv6Addr = "fd00::99".parse().unwrap();
    let sll = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
    let f = eth(0x86dd, &[], &ipv6(58, &nd_ns(target, &[(1, &sll)])));
    let (k, _) = ok(&f);
    assert_eq!((k.tp_src(), k.tp_dst()), (135, 0));
    assert_eq!(k.nd_target(), u128::from(target));
    assert_eq!(k.arp_sha(), mac_to_u64(&sll));
    assert_eq!(k.arp_tha(), 0);

    // neighbour advertisement with a target link-layer address
    let mut body = vec![0x60, 0, 0, 0];
    body.extend_from_slice(&target.octets());
    body.extend_from_slice(&[2, 1]);
    body.extend_from_slice(&sll);
    let (k, _) = ok(&eth(0x86dd, &[], &ipv6(58, &icmp6(136, 0, &body))));
    assert_eq!(k.arp_tha(), mac_to_u64(&sll));
    assert_eq!(k.arp_sha(), 0);

    // an unknown option of 16 bytes is skipped
    let (k, _) = ok(&eth(
        0x86dd,
        &[],
        &ipv6(58, &nd_ns(target, &[(14, &[0u8; 14]), (1, &sll)])),
    ));
    assert_eq!(k.arp_sha(), mac_to_u64(&sll));

    // zero-length option, repeated SLL, option past the end, short NS
    let mut zero = nd_ns(target, &[]);
    zero.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
    bad(&eth(0x86dd, &[], &ipv6(58, &zero)), Malformed::NdBadOption);
    let twice = nd_ns(target, &[(1, &sll), (1, &sll)]);
    bad(&eth(0x86dd, &[], &ipv6(58, &twice)), Malformed::NdBadOption);
    let mut past = nd_ns(target, &[]);
    past.extend_from_slice(&[1, 2, 0, 0, 0, 0, 0, 0]);
    bad(&eth(0x86dd, &[], &ipv6(58, &past)), Malformed::NdBadOption);
    bad(
        &eth(0x86dd, &[], &ipv6(58, &nd_ns(target, &[])[..20])),
        Malformed::NdTruncated,
    );
    bad(
        &eth(0x86dd, &[], &ipv6(58, &icmp6(128, 0, &[])[..3])),
        Malformed::Icmpv6Truncated,
    );
}

#[test]
fn truncated_l4_keeps_l3_fields() {
    let f = eth(
        0x0800,
        &[],
        &ipv4(
            V4 {
                proto: 6,
                ..V4::default()
            },
            &[0u8; 10],
        ),
    );
    let k = bad(&f, Malformed::TcpTruncated);
    assert_eq!(k.nw_src(), u32::from(V4_SRC));
    assert_eq!(k.nw_proto(), 6);
    assert_eq!(k.tp_src(), 0);
    let mut seg = tcp(1, 2, true, false, false, 0, b"");
    seg[12] = 0x40; // data offset 16
    bad(
        &eth(
            0x0800,
            &[],
            &ipv4(
                V4 {
                    proto: 6,
                    ..V4::default()
                },
                &seg,
            ),
        ),
        Malformed::TcpBadDataOffset,
    );
}

/// Valid frames of every kind the extractor parses.
fn corpus() -> Vec<Vec<u8>> {
    let target: Ipv6Addr = "fd00::1".parse().unwrap();
    let sll = [2, 0, 0, 0, 0, 9];
    let mut v6ext = ext(44, 0);
    v6ext.extend(frag6(6, 0, true));
    v6ext.extend(tcp(1, 2, true, false, false, 4, b"x"));
    let l3 = ipv4(V4::default(), &udp(1, 2, b"abc"));
    let mut snap = vec![0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00];
    snap.extend_from_slice(&l3);
    vec![
        eth(0x0800, &[], &l3),
        eth(
            0x0800,
            &[(0x88a8, 1), (0x8100, 2)],
            &ipv4(
                V4 {
                    proto: 6,
                    opts: 12,
                    ..V4::default()
                },
                &tcp(3, 4, true, true, false, 8, b"hi"),
            ),
        ),
        eth(
            0x0800,
            &[],
            &ipv4(
                V4 {
                    proto: 1,
                    ..V4::default()
                },
                &icmp4(0, 0),
            ),
        ),
        eth(
            0x0800,
            &[],
            &ipv4(
                V4 {
                    proto: 132,
                    more_frags: true,
                    ..V4::default()
                },
                &[0u8; 16],
            ),
        ),
        eth(0x0806, &[(0x8100, 5)], &arp(ArpOperation::Request)),
        eth(0x86dd, &[], &ipv6(0, &v6ext)),
        eth(0x86dd, &[], &ipv6(58, &nd_ns(target, &[(1, &sll)]))),
        eth(0x86dd, &[], &ipv6(17, &udp(9, 10, b""))),
        eth(snap.len() as u16, &[], &snap),
    ]
}

#[test]
fn malformed_corpus_every_truncation_is_flagged_never_panics() {
    let mut stats = ExtractStats::default();
    for (i, frame) in corpus().iter().enumerate() {
        let (full, _, r) = run(frame);
        assert_eq!(r, Ok(()), "corpus frame {i} must parse: {full:?}");
        for cut in 0..frame.len() {
            let (k, m, r) = run(&frame[..cut]);
            stats.record(&k, r);
            // Offsets recorded always lie inside the truncated frame.
            if let Some(o) = m.l3_offset() {
                assert!(o <= cut, "frame {i} cut {cut}: l3 {o}");
            }
            if let Some(o) = m.l4_offset() {
                assert!(o <= cut, "frame {i} cut {cut}: l4 {o}");
            }
            // Whatever parsed, the key never invents fields the full frame
            // does not have: masked by the full key's nonzero words it is a
            // prefix of the full parse (except the malformed code).
            let mut k2 = k;
            k2.set_malformed_code(0);
            assert_eq!(
                k2.nonzero_map() & !full.nonzero_map(),
                0,
                "frame {i} cut {cut}: {k:?}"
            );
        }
        // the header checks fire before the final byte for every frame
        let (_, _, r) = run(&frame[..13]);
        assert_eq!(r, Err(Malformed::EthTruncated));
    }
    assert!(stats.malformed_total() > 0);
    assert!(stats.count(Malformed::EthTruncated) >= 9 * 14);
    assert!(stats.count(Malformed::Ipv4TotalLenTooLong) > 0);
    assert!(stats.count(Malformed::Ipv6PayloadLenTooLong) > 0);
    assert!(stats.count(Malformed::VlanTruncated) > 0);
}

#[test]
fn extract_batch_fills_keys_offsets_and_counters() {
    let mut batch = PacketBatch::new();
    let frames = corpus();
    for f in &frames {
        let mut p = Packet::from_bytes(f);
        p.meta.in_port = PortNo(2);
        batch.push(p).unwrap();
    }
    batch.push(Packet::from_bytes(&frames[0][..20])).unwrap();
    let mut keys = [FlowKey::ZERO; BATCH_SIZE];
    let mut stats = ExtractStats::default();
    flow::extract_batch(&mut batch, &mut keys, &mut stats);
    assert_eq!(stats.packets, frames.len() as u64 + 1);
    assert_eq!(stats.malformed_total(), 1);
    assert_eq!(stats.count(Malformed::Ipv4Truncated), 1);
    assert_eq!(stats.fragments, 2);
    assert_eq!(keys[0].tp_dst(), 2);
    assert_eq!(keys[0].in_port(), PortNo(2));
    assert_eq!(batch.as_slice()[0].meta.l4_offset(), Some(34));
    assert_eq!(
        stats.nonzero().collect::<Vec<_>>(),
        vec![("ipv4_truncated", 1)]
    );
}

#[test]
fn every_malformed_code_round_trips() {
    for (i, m) in Malformed::ALL.iter().enumerate() {
        assert_eq!(*m as usize, i + 1);
        assert_eq!(Malformed::from_code(*m as u8), Some(*m));
    }
    assert_eq!(
        Malformed::ALL.len(),
        datapath::flow::extract::MALFORMED_COUNT
    );
    assert_eq!(Malformed::from_code(0), None);
}

#[test]
fn oversized_frames_are_parsed_as_far_as_offsets_reach() {
    // 70 000 bytes: longer than a u16 offset can describe. The headers at
    // the front still parse; nothing panics; offsets stay in range.
    let mut f = eth(0x0800, &[], &ipv4(V4::default(), &udp(1, 2, &[0u8; 1000])));
    f.resize(70_000, 0);
    let (k, m) = ok(&f);
    assert_eq!(k.tp_dst(), 2);
    assert_eq!(m.l4_offset(), Some(34));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Valid frames with a few bytes overwritten at random: never panics,
    /// offsets in range, and a clean result means no malformed code.
    #[test]
    fn mutated_corpus_frames_never_panic(
        which in 0usize..9,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let corpus = corpus();
        let mut frame = corpus[which % corpus.len()].clone();
        for (at, byte) in edits {
            let i = at.index(frame.len());
            frame[i] = byte;
        }
        let len = frame.len();
        frame.truncate(len - cut.index(len / 4 + 1));
        let (k, m, r) = run(&frame);
        prop_assert!(m.l3_offset().is_none_or(|o| o <= frame.len()));
        prop_assert!(m.l4_offset().is_none_or(|o| o <= frame.len()));
        prop_assert_eq!(r.is_ok(), k.malformed_code() == 0);
    }

    /// Random bytes never panic, and offsets stay inside the frame.
    #[test]
    fn random_bytes_never_panic(frame in proptest::collection::vec(any::<u8>(), 0..200)) {
        let (_, m, _) = run(&frame);
        prop_assert!(m.l3_offset().is_none_or(|o| o <= frame.len()));
        prop_assert!(m.l4_offset().is_none_or(|o| o <= frame.len()));
    }

    /// Random bytes behind a valid Ethernet/IP prefix (so the deep layers are
    /// reached), with the IP length fields patched to fit.
    #[test]
    fn random_l4_behind_valid_l3_never_panics(
        proto in prop::sample::select(vec![0u8, 1, 6, 17, 43, 44, 51, 58, 60, 132, 135]),
        v6 in any::<bool>(),
        tail in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        let frame = if v6 {
            eth(0x86dd, &[], &ipv6(proto, &tail))
        } else {
            eth(0x0800, &[], &ipv4(V4 { proto, ..V4::default() }, &tail))
        };
        let (k, m, _) = run(&frame);
        prop_assert_eq!(m.l3_offset(), Some(14));
        prop_assert!(m.l4_offset().is_none_or(|o| o <= frame.len()));
        prop_assert_eq!(k.dl_type(), if v6 { 0x86dd } else { 0x0800 });
    }
}
