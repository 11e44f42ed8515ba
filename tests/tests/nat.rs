//! `ct(nat)` through the whole switch: OVS-style SNAT and DNAT flows,
//! translated bytes on the output rings (checksums recomputed from scratch
//! by smoltcp, and compared with packets built with the translated tuple),
//! exhaustion, ICMP errors, dump-conntrack and datapath flow printing.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

use ct::packet::tcp_flags::{ACK, SYN};
use ferrovs_tests::{frame, Builder, Harness, Tcp};

/// Inside (port 1, 192.168.1.0/24) is source-NATed to 10.0.0.100 with two
/// ports; outside (port 2) only gets replies and related errors. Replies
/// match on the translated destination and the original tuple.
const SNAT: &str = "\
table=0,priority=10,ip,in_port=1,actions=ct(nat,zone=1,table=1)
table=0,priority=10,ip,in_port=2,actions=ct(nat,zone=1,table=2)
table=0,priority=10,ipv6,in_port=1,actions=ct(nat,zone=1,table=1)
table=0,priority=10,ipv6,in_port=2,actions=ct(nat,zone=1,table=2)
table=1,priority=10,ct_state=+trk+new-inv,ip,actions=ct(commit,zone=1,nat(src=10.0.0.100:5000-5001)),output:2
table=1,priority=10,ct_state=+trk+new-inv,ipv6,actions=ct(commit,zone=1,nat(src=2001:db8::100)),output:2
table=1,priority=10,ct_state=+trk+est-inv,actions=output:2
table=2,priority=10,ct_state=+trk+est+dnat-inv,ip,nw_dst=192.168.1.0/24,actions=output:1
table=2,priority=10,ct_state=+trk+est+dnat-inv,ipv6,actions=output:1
table=2,priority=10,ct_state=+trk+rel-inv,ip,nw_dst=192.168.1.0/24,actions=output:1
";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn b(src: &str, dst: &str) -> Builder {
    Builder::ip(ip(src), ip(dst))
}

/// Every checksum of an Ethernet frame, recomputed by smoltcp.
fn checksums_valid(f: &[u8]) -> bool {
    use smoltcp::wire::*;
    let eth = EthernetFrame::new_checked(f).unwrap();
    match eth.ethertype() {
        EthernetProtocol::Ipv4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
            let (s, d) = (
                IpAddress::Ipv4(ip.src_addr()),
                IpAddress::Ipv4(ip.dst_addr()),
            );
            ip.verify_checksum()
                && match ip.next_header() {
                    IpProtocol::Tcp => TcpPacket::new_checked(ip.payload())
                        .unwrap()
                        .verify_checksum(&s, &d),
                    IpProtocol::Udp => UdpPacket::new_checked(ip.payload())
                        .unwrap()
                        .verify_checksum(&s, &d),
                    IpProtocol::Icmp => Icmpv4Packet::new_checked(ip.payload())
                        .unwrap()
                        .verify_checksum(),
                    _ => true,
                }
        }
        EthernetProtocol::Ipv6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
            let (s, d) = (
                IpAddress::Ipv6(ip.src_addr()),
                IpAddress::Ipv6(ip.dst_addr()),
            );
            match ip.next_header() {
                IpProtocol::Tcp => TcpPacket::new_checked(ip.payload())
                    .unwrap()
                    .verify_checksum(&s, &d),
                IpProtocol::Udp => UdpPacket::new_checked(ip.payload())
                    .unwrap()
                    .verify_checksum(&s, &d),
                IpProtocol::Icmpv6 => Icmpv6Packet::new_checked(ip.payload())
                    .unwrap()
                    .verify_checksum(&ip.src_addr(), &ip.dst_addr()),
                _ => true,
            }
        }
        _ => false,
    }
}

/// UDP source port of an IPv4 frame.
fn udp_sport_v4(f: &[u8]) -> u16 {
    u16::from_be_bytes([f[14 + 20], f[14 + 21]])
}

#[test]
fn snat_udp_round_trip_rewrites_bytes_with_valid_checksums() {
    let mut h = Harness::new(&[1, 2], SNAT);
    let req = b("192.168.1.5", "8.8.8.8").udp(40000, 53, b"query");
    let out = h.inject(1, &frame(1, 2, &req));
    assert_eq!(Harness::ports_of(&out), vec![2]);
    let sent = &out[0].1;
    assert!(checksums_valid(sent));
    let port = udp_sport_v4(sent);
    assert!((5000..=5001).contains(&port), "{port}");
    assert_eq!(
        *sent,
        frame(1, 2, &b("10.0.0.100", "8.8.8.8").udp(port, 53, b"query")),
        "only the source address and port changed"
    );

    // The reply to the public tuple is un-NATed back to the client.
    let reply = b("8.8.8.8", "10.0.0.100").udp(53, port, b"answer");
    let out = h.inject(2, &frame(2, 1, &reply));
    assert_eq!(Harness::ports_of(&out), vec![1]);
    assert!(checksums_valid(&out[0].1));
    assert_eq!(
        out[0].1,
        frame(2, 1, &b("8.8.8.8", "192.168.1.5").udp(53, 40000, b"answer"))
    );
    // Later packets of the connection (established, bare nat) too.
    let out = h.inject(1, &frame(1, 2, &req));
    assert_eq!(
        out[0].1,
        frame(1, 2, &b("10.0.0.100", "8.8.8.8").udp(port, 53, b"query"))
    );

    let ct = h.dump_conntrack();
    assert_eq!(
        ct,
        vec![format!(
            "udp,orig=(src=192.168.1.5,dst=8.8.8.8,sport=40000,dport=53),\
             reply=(src=8.8.8.8,dst=10.0.0.100,sport=53,dport={port}),zone=1"
        )]
    );
    // The datapath program prints the nat argument like OVS's dpctl.
    let flows = h.pipeline.dump_megaflows().join("\n");
    assert!(
        flows.contains("ct(commit,zone=1,nat(src=10.0.0.100:5000-5001)),2"),
        "{flows}"
    );
    assert!(flows.contains("ct(zone=1,nat),recirc("), "{flows}");
}

#[test]
fn snat_matches_on_the_original_tuple_after_translation() {
    // ct_nw_src/ct_tp_src keep the original tuple while nw_dst is the
    // translated (un-NATed) one: only a flow matching both passes.
    let flows = SNAT.replace(
        "table=2,priority=10,ct_state=+trk+est+dnat-inv,ip,nw_dst=192.168.1.0/24,actions=output:1",
        "table=2,priority=10,ct_state=+trk+est+rpl+dnat-inv,udp,nw_dst=192.168.1.5,tp_dst=40000,ct_nw_proto=17,ct_nw_src=192.168.1.5,ct_nw_dst=8.8.8.8,ct_tp_src=40000,actions=output:1",
    );
    let mut h = Harness::new(&[1, 2], &flows);
    let out = h.inject(
        1,
        &frame(1, 2, &b("192.168.1.5", "8.8.8.8").udp(40000, 53, b"q")),
    );
    let port = udp_sport_v4(&out[0].1);
    let out = h.inject(
        2,
        &frame(2, 1, &b("8.8.8.8", "10.0.0.100").udp(53, port, b"r")),
    );
    assert_eq!(Harness::ports_of(&out), vec![1]);
}

#[test]
fn exhausted_port_range_drops_and_counts() {
    let mut h = Harness::new(&[1, 2], SNAT);
    let mut ports = HashSet::new();
    for client in ["192.168.1.5", "192.168.1.6"] {
        let out = h.inject(1, &frame(1, 2, &b(client, "8.8.8.8").udp(40000, 53, b"q")));
        assert_eq!(Harness::ports_of(&out), vec![2]);
        assert!(checksums_valid(&out[0].1));
        ports.insert(udp_sport_v4(&out[0].1));
    }
    assert_eq!(ports, HashSet::from([5000, 5001]));
    let out = h.inject(
        1,
        &frame(1, 2, &b("192.168.1.7", "8.8.8.8").udp(40000, 53, b"q")),
    );
    assert!(out.is_empty(), "third client dropped: {out:?}");
    assert_eq!(h.sw.ct.counters().nat_exhausted, 1);
    assert_eq!(h.pipeline.counters.nat_dropped, 1);
    assert_eq!(h.dump_conntrack().len(), 2);
    // The first two still work.
    let out = h.inject(
        2,
        &frame(2, 1, &b("8.8.8.8", "10.0.0.100").udp(53, 5000, b"r")),
    );
    assert_eq!(Harness::ports_of(&out), vec![1]);
}

#[test]
fn icmp_error_about_a_snat_flow_reaches_the_client_translated() {
    let mut h = Harness::new(&[1, 2], SNAT);
    let req = b("192.168.1.5", "8.8.8.8").udp(40000, 53, b"query");
    let out = h.inject(1, &frame(1, 2, &req));
    // The IP datagram without the Ethernet padding.
    let sent_l3 = out[0].1[14..14 + req.len()].to_vec();
    let err = b("192.0.2.254", "10.0.0.100").icmp_error(3, 3, &sent_l3);
    let out = h.inject(2, &frame(2, 1, &err));
    assert_eq!(Harness::ports_of(&out), vec![1]);
    assert!(checksums_valid(&out[0].1));
    assert_eq!(
        out[0].1,
        frame(
            2,
            1,
            &b("192.0.2.254", "192.168.1.5").icmp_error(3, 3, &req)
        ),
        "embedded header, its checksums and the outer destination translated"
    );
}

#[test]
fn snat_ipv6_tcp() {
    let mut h = Harness::new(&[1, 2], SNAT);
    let syn = Tcp::new(40000, 443).flags(SYN).seq(10).win(1000);
    let out = h.inject(1, &frame(1, 2, &b("fd00::5", "2001:db8:9::9").tcp(&syn)));
    assert_eq!(Harness::ports_of(&out), vec![2]);
    assert!(checksums_valid(&out[0].1));
    assert_eq!(
        out[0].1,
        frame(1, 2, &b("2001:db8::100", "2001:db8:9::9").tcp(&syn)),
        "free source port kept"
    );
    let synack = Tcp::new(443, 40000)
        .flags(SYN | ACK)
        .seq(99)
        .ack(11)
        .win(1000);
    let out = h.inject(
        2,
        &frame(2, 1, &b("2001:db8:9::9", "2001:db8::100").tcp(&synack)),
    );
    assert_eq!(Harness::ports_of(&out), vec![1]);
    assert!(checksums_valid(&out[0].1));
    assert_eq!(
        out[0].1,
        frame(2, 1, &b("2001:db8:9::9", "fd00::5").tcp(&synack))
    );
}

/// Clients on port 1 reach the VIP 198.51.100.10:80, spread by hash over
/// two backends on port 2 listening on 8080.
const DNAT: &str = "\
table=0,priority=10,ip,in_port=1,actions=ct(nat,zone=2,table=1)
table=0,priority=10,ip,in_port=2,actions=ct(nat,zone=2,table=2)
table=1,priority=10,ct_state=+trk+new-inv,tcp,nw_dst=198.51.100.10,tp_dst=80,actions=ct(commit,zone=2,nat(dst=10.1.0.1-10.1.0.2:8080,hash)),output:2
table=1,priority=10,ct_state=+trk+est-inv,tcp,actions=output:2
table=2,priority=10,ct_state=+trk+est+snat-inv,tcp,nw_src=198.51.100.10,tp_src=80,actions=output:1
";

#[test]
fn dnat_load_balances_a_vip_over_two_backends() {
    let mut h = Harness::new(&[1, 2], DNAT);
    let mut used = HashSet::new();
    for i in 1..=32u8 {
        let client = Ipv4Addr::new(192, 0, 2, i);
        let syn = Tcp::new(33000 + i as u16, 80).flags(SYN).seq(1).win(1000);
        let l3 = Builder::v4(client, "198.51.100.10".parse().unwrap()).tcp(&syn);
        let out = h.inject(1, &frame(1, 2, &l3));
        assert_eq!(Harness::ports_of(&out), vec![2]);
        let f = &out[0].1;
        assert!(checksums_valid(f));
        let backend = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
        assert!(
            backend == Ipv4Addr::new(10, 1, 0, 1) || backend == Ipv4Addr::new(10, 1, 0, 2),
            "{backend}"
        );
        used.insert(backend);
        let mut to_backend = syn.clone();
        to_backend.dport = 8080;
        assert_eq!(
            *f,
            frame(1, 2, &Builder::v4(client, backend).tcp(&to_backend))
        );

        // The backend answers from 8080; the client sees the VIP.
        let sa = Tcp::new(8080, 33000 + i as u16)
            .flags(SYN | ACK)
            .seq(500)
            .ack(2)
            .win(1000);
        let out = h.inject(2, &frame(2, 1, &Builder::v4(backend, client).tcp(&sa)));
        assert_eq!(Harness::ports_of(&out), vec![1]);
        assert!(checksums_valid(&out[0].1));
        let mut from_vip = sa.clone();
        from_vip.sport = 80;
        assert_eq!(
            out[0].1,
            frame(
                2,
                1,
                &Builder::v4("198.51.100.10".parse().unwrap(), client).tcp(&from_vip)
            )
        );
    }
    assert_eq!(used.len(), 2, "both backends get clients");
    assert_eq!(h.dump_conntrack().len(), 32);
}
