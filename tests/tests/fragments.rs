//! IP fragments through the stateful firewall: reassembled before
//! conntrack, tracked like whole datagrams, sent out as the original
//! fragments; attacks dropped and counted.

use ct::build::Ext;
use ct::frag::{FragLayout, Outcome, Reassembler};
use ct::packet::tcp_flags::SYN;
use ct::{CtPacket, Family, PktFlags, Zone};
use ferrovs_tests::{frame, Builder, Harness, Tcp, FIREWALL};

/// The IPv4 firewall plus the same rules for IPv6.
fn firewall() -> String {
    format!(
        "{FIREWALL}\
table=0,priority=10,ipv6,in_port=1,actions=ct(table=1,zone=1)
table=0,priority=10,ipv6,in_port=2,actions=ct(table=2,zone=1)
table=1,priority=10,ct_state=+trk+new-inv,ipv6,actions=ct(commit,zone=1),output:2
table=1,priority=10,ct_state=+trk+est-inv,ipv6,actions=output:2
table=2,priority=10,ct_state=+trk+est-inv,ipv6,actions=output:1
"
    )
}

fn in4() -> Builder {
    Builder::v4("10.0.0.1".parse().unwrap(), "192.0.2.9".parse().unwrap())
}
fn in6() -> Builder {
    Builder::v6(
        "2001:db8:1::1".parse().unwrap(),
        "2001:db8:2::9".parse().unwrap(),
    )
}

/// `d` cut into fragments whose payloads start at 0 and at `cuts`.
fn fragments(d: &[u8], id: u32, cuts: &[u32]) -> Vec<Vec<u8>> {
    FragLayout::for_datagram(d, id, cuts)
        .expect("layout")
        .fragments(d)
        .expect("fragments")
}

/// Send `frags` (L3) from port `from` to `to` in `order`, each in its own
/// batch when `separately`, else all in one run; return what came out.
fn send(
    h: &mut Harness,
    from: u32,
    to: u32,
    frags: &[Vec<u8>],
    order: &[usize],
    separately: bool,
) -> Vec<(u32, Vec<u8>)> {
    for &i in order {
        h.send(from, &frame(from, to, &frags[i]));
        if separately {
            h.run();
        }
    }
    h.run();
    h.collect()
}

/// The frames out of `port` must be exactly the original fragments, in
/// offset order, with the L2 header of the input.
fn assert_original_fragments(out: &[(u32, Vec<u8>)], port: u32, from: u32, frags: &[Vec<u8>]) {
    assert_eq!(
        Harness::ports_of(out),
        vec![port; frags.len()],
        "{} fragments out of port {port}",
        frags.len()
    );
    for (k, ((_, got), want)) in out.iter().zip(frags).enumerate() {
        assert_eq!(
            &got[..14],
            &frame(from, port, want)[..14],
            "L2 of fragment {k}"
        );
        assert_eq!(&got[14..], &want[..], "fragment {k}");
    }
}

#[test]
fn fragmented_udp_out_of_order_is_tracked_and_its_reply_admitted() {
    let mut h = Harness::new(&[1, 2], &firewall());
    let req = in4().ident(0x4242).udp(5353, 53, &[0xa5; 3000]);
    let frags = fragments(&req, 0x4242, &[1480, 2960]);
    assert_eq!(frags.len(), 3);
    let out = send(&mut h, 1, 2, &frags, &[2, 0, 1], false);
    assert_original_fragments(&out, 2, 1, &frags);
    let ct = h.dump_conntrack();
    assert_eq!(ct.len(), 1, "{ct:?}");
    assert!(
        ct[0].starts_with("udp,orig=(src=10.0.0.1,dst=192.0.2.9,sport=5353,dport=53)"),
        "tracked with its ports: {}",
        ct[0]
    );

    // The reply, fragmented too, one fragment per batch: +est, admitted.
    let reply = in4().reversed().ident(7).udp(53, 5353, &[0x5a; 2000]);
    let rfrags = fragments(&reply, 7, &[1000]);
    let out = send(&mut h, 2, 1, &rfrags, &[1, 0], true);
    assert_original_fragments(&out, 1, 2, &rfrags);

    // Unsolicited fragmented UDP from outside: reassembled, +new, dropped.
    let evil = in4().reversed().ident(8).udp(53, 9999, &[0; 2000]);
    let efrags = fragments(&evil, 8, &[1000]);
    assert!(send(&mut h, 2, 1, &efrags, &[0, 1], false).is_empty());
    assert_eq!(
        h.dump_conntrack().len(),
        1,
        "nothing committed from outside"
    );

    let c = h.pipeline.counters;
    assert_eq!((c.frag_held, c.frag_reassembled), (4, 3));
    assert_eq!(
        (c.frag_sent, c.frag_rejected, c.frag_send_errors),
        (5, 0, 0)
    );
    let s = h.sw.defrag.lock().stats().v4;
    assert_eq!((s.accepted, s.reassembled, s.rejected()), (7, 3, 0));
    assert_eq!(h.sw.defrag.lock().datagrams(), 0);
}

#[test]
fn large_ping_v4_and_v6_pass_the_firewall() {
    let mut h = Harness::new(&[1, 2], &firewall());
    for (b, cuts) in [(in4(), vec![1480, 2960]), (in6(), vec![1232, 2464])] {
        let ping = b.clone().ident(0x99).echo_request(77, 1, &[0x3c; 4000]);
        let frags = fragments(&ping, 0x99, &cuts);
        assert_eq!(frags.len(), 3);
        let out = send(&mut h, 1, 2, &frags, &[1, 2, 0], false);
        assert_original_fragments(&out, 2, 1, &frags);
        let pong = b.reversed().ident(0x55).echo_reply(77, 1, &[0x3c; 4000]);
        let pfrags = fragments(&pong, 0x55, &cuts);
        let out = send(&mut h, 2, 1, &pfrags, &[2, 1, 0], true);
        assert_original_fragments(&out, 1, 2, &pfrags);
    }
    let ct = h.dump_conntrack();
    assert_eq!(ct.len(), 2, "{ct:?}");
    assert!(ct.iter().any(|l| l.starts_with("icmp,")), "{ct:?}");
    assert!(ct.iter().any(|l| l.starts_with("icmpv6,")), "{ct:?}");
    let s = h.sw.defrag.lock().stats();
    assert_eq!((s.v4.reassembled, s.v6.reassembled), (2, 2));
}

#[test]
fn rewritten_header_goes_into_every_fragment() {
    // Rewrite the destination after conntrack: every fragment carries the
    // new address, and the fragments reassemble into a datagram whose UDP
    // checksum (fixed incrementally in the first fragment) verifies.
    let flows = "\
table=0,priority=10,ip,in_port=1,actions=ct(commit,zone=3),mod_nw_dst:192.0.2.77,output:2
";
    let mut h = Harness::new(&[1, 2], flows);
    let d = in4().ident(3).udp(1111, 2222, &[0x77; 2500]);
    let frags = fragments(&d, 3, &[800, 1600]);
    let out = send(&mut h, 1, 2, &frags, &[0, 2, 1], false);
    assert_eq!(Harness::ports_of(&out), vec![2, 2, 2]);
    let mut r = Reassembler::default();
    let mut done = None;
    for (k, (_, f)) in out.iter().enumerate() {
        let l3 = &f[14..];
        assert_eq!(&l3[16..20], &[192, 0, 2, 77], "fragment {k} rewritten");
        assert_eq!(l3.len(), frags[k].len(), "fragment {k} keeps its size");
        let pkt = CtPacket {
            l3,
            family: Family::Ipv4,
            flags: PktFlags::empty(),
        };
        if let Outcome::Complete(c) = r.push(Zone(0), &pkt, 0) {
            done = Some(c.datagram);
        }
    }
    let whole = done.expect("output fragments reassemble");
    let info = ct::packet::parse(
        &CtPacket {
            l3: &whole,
            family: Family::Ipv4,
            flags: PktFlags::empty(),
        },
        Zone(0),
    );
    assert_eq!(info.invalid, None, "checksums verify after the rewrite");
    assert_eq!((info.key.src_port, info.key.dst_port), (1111, 2222));
    assert_eq!(h.dump_conntrack().len(), 1);
}

#[test]
fn overlap_attack_and_tiny_fragment_are_dropped_and_counted() {
    let mut h = Harness::new(&[1, 2], &firewall());
    // Overlap: a genuine first fragment, then one starting inside it.
    let d = in4().ident(0x0bad).udp(4000, 53, &[1; 200]);
    let frags = fragments(&d, 0x0bad, &[96]);
    let overlap = in4().ident(0x0bad).fragment(64, false).raw(17, &[9; 144]);
    let out = send(&mut h, 1, 2, &[frags[0].clone(), overlap], &[0, 1], false);
    assert!(out.is_empty(), "overlapping fragment dropped: {out:?}");
    // The genuine last fragment cannot complete the discarded datagram.
    let out = send(&mut h, 1, 2, &frags, &[1], false);
    assert!(out.is_empty());

    // Tiny first fragment: 8 bytes of a TCP header (flags in the next one).
    let syn = in4()
        .ident(0x7177)
        .tcp(&Tcp::new(1234, 22).flags(SYN).payload(&[0; 64]));
    let tiny = fragments(&syn, 0x7177, &[8]);
    let out = send(&mut h, 1, 2, &tiny, &[0, 1], false);
    assert!(out.is_empty(), "tiny-fragment attack dropped: {out:?}");

    // IPv6 overlap (RFC 5722).
    let d6 = in6().ident(0x600d).udp(4000, 53, &[2; 200]);
    let f6 = fragments(&d6, 0x600d, &[104]);
    let overlap6 = in6()
        .ident(0x600d)
        .ext(Ext::Fragment {
            offset: 96,
            more: false,
        })
        .raw(17, &[3; 112]);
    let out = send(&mut h, 1, 2, &[f6[0].clone(), overlap6], &[0, 1], false);
    assert!(out.is_empty());

    let s = h.sw.defrag.lock().stats();
    assert_eq!((s.v4.overlaps, s.v4.tiny, s.v6.overlaps), (1, 2, 1));
    assert_eq!(s.v4.reassembled + s.v6.reassembled, 0);
    assert_eq!(h.dump_conntrack().len(), 0, "nothing committed");
    let c = h.pipeline.counters;
    // Rejected fragments went on to conntrack (+inv) and the firewall.
    assert_eq!(c.frag_rejected, 4);
    assert_eq!(c.frag_sent, 0);
    assert!(h.sw.ct.counters().invalid >= 4);
}

#[test]
fn fragments_leave_with_the_rewritten_l2_header() {
    // A VLAN pushed after conntrack is on every fragment that leaves.
    let flows = "\
table=0,priority=10,ip,in_port=1,actions=ct(commit,zone=1),push_vlan:0x8100,mod_vlan_vid:5,output:2
";
    let mut h = Harness::new(&[1, 2], flows);
    let d = in4().ident(9).udp(1, 2, &[0x42; 1800]);
    let frags = fragments(&d, 9, &[1000]);
    let out = send(&mut h, 1, 2, &frags, &[1, 0], false);
    assert_eq!(Harness::ports_of(&out), vec![2, 2]);
    for (k, (_, f)) in out.iter().enumerate() {
        assert_eq!(&f[12..14], &[0x81, 0x00], "fragment {k} tagged");
        assert_eq!(u16::from_be_bytes([f[14], f[15]]) & 0x0fff, 5);
        assert_eq!(&f[16..18], &[0x08, 0x00]);
        assert_eq!(&f[18..], &frags[k][..], "fragment {k}");
    }
}

#[test]
fn a_rejected_fragment_is_not_offered_again_by_a_later_ct() {
    // Invalid packets go through a second ct in another zone.
    let flows = "\
table=0,priority=10,ip,in_port=1,actions=ct(table=1,zone=1)
table=1,priority=10,ct_state=+inv,ip,actions=ct(table=2,zone=2)
table=2,priority=10,ct_state=+inv,ip,actions=drop
";
    let mut h = Harness::new(&[1, 2], flows);
    let d = in4().ident(0x0bad).udp(4000, 53, &[1; 200]);
    let frags = fragments(&d, 0x0bad, &[96]);
    let overlap = in4().ident(0x0bad).fragment(64, false).raw(17, &[9; 144]);
    assert!(send(&mut h, 1, 2, &[frags[0].clone(), overlap], &[0, 1], false).is_empty());
    let r = h.sw.defrag.lock();
    assert_eq!(r.stats().v4.overlaps, 1);
    assert_eq!(r.datagrams(), 0, "not held as a new datagram in zone 2");
    assert_eq!(h.pipeline.counters.frag_rejected, 1);
    assert!(h.sw.ct.counters().invalid >= 2, "conntrack saw it twice");
}
