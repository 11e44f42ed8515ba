use proptest::prelude::*;

use super::*;
use crate::build::{Builder, Ext, Tcp};
use crate::packet::PktFlags;

const MS: u64 = 1_000_000;

fn b4() -> Builder {
    Builder::v4("10.0.0.1".parse().unwrap(), "192.0.2.9".parse().unwrap())
}
fn b6() -> Builder {
    Builder::v6(
        "2001:db8::1".parse().unwrap(),
        "2001:db8::9".parse().unwrap(),
    )
}

fn family_of(l3: &[u8]) -> Family {
    if l3[0] >> 4 == 6 {
        Family::Ipv6
    } else {
        Family::Ipv4
    }
}

fn push(r: &mut Reassembler, zone: u16, l3: &[u8], now: u64) -> Outcome {
    let pkt = CtPacket {
        l3,
        family: family_of(l3),
        flags: PktFlags::empty(),
    };
    r.push(Zone(zone), &pkt, now)
}

/// Fragments of `d` cut at `cuts`.
fn cut(d: &[u8], id: u32, cuts: &[u32]) -> Vec<Vec<u8>> {
    FragLayout::for_datagram(d, id, cuts)
        .unwrap()
        .fragments(d)
        .unwrap()
}

/// Push `frags` in `order`; expects Held for all but the last.
fn reassemble(r: &mut Reassembler, frags: &[Vec<u8>], order: &[usize]) -> Outcome {
    let mut out = Outcome::Pass;
    for (n, &i) in order.iter().enumerate() {
        out = push(r, 0, &frags[i], 0);
        if n + 1 < order.len() {
            assert_eq!(out, Outcome::Held, "fragment {i}");
        }
    }
    out
}

#[test]
fn udp_v4_out_of_order_reassembles_to_the_original() {
    let d = b4().ident(7).udp(5000, 53, &[0xab; 3000]);
    let frags = cut(&d, 7, &[1480, 2960]);
    let mut r = Reassembler::default();
    let Outcome::Complete(got) = reassemble(&mut r, &frags, &[2, 0, 1]) else {
        panic!("not complete");
    };
    assert_eq!(got.datagram, d);
    assert_eq!(got.layout.fragments(&got.datagram).unwrap(), frags);
    assert_eq!((r.datagrams(), r.bytes()), (0, 0));
    let s = r.stats().v4;
    assert_eq!((s.accepted, s.reassembled, s.rejected()), (3, 1, 0));
}

#[test]
fn icmpv6_echo_behind_hop_by_hop_reassembles() {
    let d = b6().ext(Ext::HopByHop).raw(58, &{
        let mut m = vec![128, 0, 0, 0, 0, 1, 0, 1];
        m.extend_from_slice(&[0x11; 2000]);
        m
    });
    let frags = cut(&d, 0xdead_beef, &[1232]);
    assert_eq!(frags[0][40], 44, "fragment header chained from hop-by-hop");
    let mut r = Reassembler::default();
    let Outcome::Complete(got) = reassemble(&mut r, &frags, &[1, 0]) else {
        panic!("not complete");
    };
    assert_eq!(got.datagram, d);
    assert_eq!(got.layout.id, 0xdead_beef);
    assert_eq!(got.layout.fragments(&got.datagram).unwrap(), frags);
}

#[test]
fn whole_packets_and_atomic_fragments_pass() {
    let mut r = Reassembler::default();
    assert_eq!(push(&mut r, 0, &b4().udp(1, 2, b"x"), 0), Outcome::Pass);
    let atomic = b6()
        .ext(Ext::Fragment {
            offset: 0,
            more: false,
        })
        .udp(1, 2, b"x");
    assert_eq!(push(&mut r, 0, &atomic, 0), Outcome::Pass);
    let frag = b4().fragment(0, true).raw(17, &[0; 16]);
    r.set_config(FragConfig {
        enabled_v4: false,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(push(&mut r, 0, &frag, 0), Outcome::Pass, "v4 off");
    assert_eq!(r.stats(), FragStats::default());
}

#[test]
fn overlap_discards_the_datagram() {
    let d = b4().udp(1, 2, &[1; 200]);
    let frags = cut(&d, 0x1234, &[96]);
    let mut r = Reassembler::default();
    assert_eq!(push(&mut r, 0, &frags[0], 0), Outcome::Held);
    // A later fragment starting inside the first one (offset 64).
    let evil = b4().fragment(64, false).raw(17, &[9; 144]);
    assert_eq!(
        push(&mut r, 0, &evil, 0),
        Outcome::Rejected(Reject::Overlap)
    );
    assert_eq!(r.datagrams(), 0, "whole datagram dropped");
    // The genuine rest now starts a new datagram that never completes.
    assert_eq!(push(&mut r, 0, &frags[1], 0), Outcome::Held);
    let s = r.stats().v4;
    assert_eq!(
        (s.overlaps, s.discarded_fragments, s.reassembled),
        (1, 1, 0)
    );
}

#[test]
fn v6_overlap_rfc5722() {
    let d = b6().udp(1, 2, &[1; 100]);
    let frags = cut(&d, 5, &[56]);
    let mut r = Reassembler::default();
    assert_eq!(push(&mut r, 3, &frags[1], 0), Outcome::Held);
    let evil = b6()
        .ident(5)
        .ext(Ext::Fragment {
            offset: 48,
            more: true,
        })
        .raw(17, &[0; 16]);
    assert_eq!(
        push(&mut r, 3, &evil, 0),
        Outcome::Rejected(Reject::Overlap)
    );
    assert_eq!(r.datagrams(), 0);
    assert_eq!(r.stats().v6.overlaps, 1);
}

#[test]
fn exact_duplicate_is_dropped_alone() {
    let d = b4().udp(1, 2, &[1; 100]);
    let frags = cut(&d, 0x1234, &[56]);
    let mut r = Reassembler::default();
    assert_eq!(push(&mut r, 0, &frags[0], 0), Outcome::Held);
    assert_eq!(
        push(&mut r, 0, &frags[0], 0),
        Outcome::Rejected(Reject::Duplicate)
    );
    assert!(matches!(
        push(&mut r, 0, &frags[1], 0),
        Outcome::Complete(_)
    ));
    assert_eq!(r.stats().v4.duplicates, 1);
}

#[test]
fn tiny_fragments_are_attacks() {
    let mut r = Reassembler::default();
    // A first fragment with only 8 bytes of a TCP header.
    let seg = b4().tcp(&Tcp::new(1000, 80).payload(&[0; 40]));
    let tiny_first = cut(&seg, 0x1234, &[8]);
    assert_eq!(
        push(&mut r, 0, &tiny_first[0], 0),
        Outcome::Rejected(Reject::Tiny)
    );
    // RFC 1858: a TCP fragment at offset 8 rewriting the flags.
    let offset1 = b4().fragment(8, false).raw(6, &[0x12; 24]);
    assert_eq!(
        push(&mut r, 0, &offset1, 0),
        Outcome::Rejected(Reject::Tiny)
    );
    // A UDP first fragment holding its header is fine.
    let udp = b4().udp(1, 2, &[0; 40]);
    assert_eq!(push(&mut r, 0, &cut(&udp, 9, &[8])[0], 0), Outcome::Held);
    assert_eq!(r.stats().v4.tiny, 2);
}

#[test]
fn length_and_size_rules() {
    let mut r = Reassembler::default();
    let odd = b4().fragment(0, true).raw(17, &[0; 12]);
    assert_eq!(
        push(&mut r, 0, &odd, 0),
        Outcome::Rejected(Reject::BadLength)
    );
    let empty = b4().fragment(16, false).raw(17, &[]);
    assert_eq!(
        push(&mut r, 0, &empty, 0),
        Outcome::Rejected(Reject::BadLength)
    );
    let past = b4().fragment(65528, false).raw(17, &[0; 16]);
    assert_eq!(push(&mut r, 0, &past, 0), Outcome::Rejected(Reject::TooBig));
    let past6 = b6()
        .ext(Ext::Fragment {
            offset: 65528,
            more: false,
        })
        .raw(17, &[0; 16]);
    assert_eq!(
        push(&mut r, 0, &past6, 0),
        Outcome::Rejected(Reject::TooBig)
    );
    let garbage = [0x45, 0, 0];
    assert_eq!(
        push(&mut r, 0, &garbage, 0),
        Outcome::Rejected(Reject::Malformed)
    );
    let s = r.stats();
    assert_eq!(
        (s.v4.bad_length, s.v4.too_big, s.v6.too_big, s.v4.malformed),
        (2, 1, 1, 1)
    );
}

#[test]
fn conflicting_last_fragments() {
    let mut r = Reassembler::default();
    let last = b4().fragment(64, false).raw(17, &[0; 16]);
    assert_eq!(push(&mut r, 0, &last, 0), Outcome::Held);
    let other_end = b4().fragment(64, false).raw(17, &[0; 24]);
    assert_eq!(
        push(&mut r, 0, &other_end, 0),
        Outcome::Rejected(Reject::ConflictingLast)
    );
    assert_eq!(r.datagrams(), 0);
    assert_eq!(push(&mut r, 0, &last, 0), Outcome::Held);
    let beyond = b4().fragment(80, true).raw(17, &[0; 16]);
    assert_eq!(
        push(&mut r, 0, &beyond, 0),
        Outcome::Rejected(Reject::ConflictingLast)
    );
    assert_eq!(r.stats().v4.conflicting_last, 2);
}

#[test]
fn too_many_fragments() {
    let mut r = Reassembler::new(FragConfig {
        max_fragments: 4,
        ..Default::default()
    });
    let d = b4().udp(1, 2, &[7; 100]);
    let frags = cut(&d, 1, &[16, 32, 48, 64]);
    for f in &frags[..4] {
        assert_eq!(push(&mut r, 0, f, 0), Outcome::Held);
    }
    assert_eq!(
        push(&mut r, 0, &frags[4], 0),
        Outcome::Rejected(Reject::TooManyFragments)
    );
    assert_eq!(r.stats().v4.discarded_fragments, 4);
    assert_eq!((r.datagrams(), r.bytes()), (0, 0));
}

#[test]
fn timeouts_per_family() {
    let mut r = Reassembler::default();
    let f4 = cut(&b4().udp(1, 2, &[0; 40]), 1, &[16]);
    let f6 = cut(&b6().udp(1, 2, &[0; 40]), 1, &[16]);
    assert_eq!(push(&mut r, 0, &f4[0], 0), Outcome::Held);
    assert_eq!(push(&mut r, 0, &f6[0], 0), Outcome::Held);
    assert_eq!(r.expire(30_000 * MS - 1), 0);
    assert_eq!(r.dump(29_000 * MS)[0].expires_in_ms, 1_000);
    assert_eq!(r.expire(30_000 * MS), 1, "IPv4 after 30 s");
    assert_eq!(r.datagrams(), 1);
    // The late v4 fragment starts over instead of completing.
    assert_eq!(push(&mut r, 0, &f4[1], 40_000 * MS), Outcome::Held);
    assert_eq!(r.expire(60_000 * MS), 1, "IPv6 after 60 s");
    let s = r.stats();
    assert_eq!((s.v4.timed_out, s.v6.timed_out), (1, 1));
    assert_eq!(s.v6.discarded_fragments, 1);
}

#[test]
fn limits_global_per_zone_and_memory() {
    let mut r = Reassembler::new(FragConfig {
        max_datagrams: 3,
        max_datagrams_per_zone: 2,
        ..Default::default()
    });
    let first = |id: u16| b4().ident(id).fragment(0, true).raw(17, &[0; 16]);
    assert_eq!(push(&mut r, 1, &first(1), 0), Outcome::Held);
    assert_eq!(push(&mut r, 1, &first(2), 0), Outcome::Held);
    assert_eq!(
        push(&mut r, 1, &first(3), 0),
        Outcome::Rejected(Reject::ZoneLimit)
    );
    assert_eq!(push(&mut r, 2, &first(3), 0), Outcome::Held, "another zone");
    assert_eq!(
        push(&mut r, 3, &first(4), 0),
        Outcome::Rejected(Reject::DatagramLimit)
    );
    assert_eq!(r.status().zones, vec![(Zone(1), 2), (Zone(2), 1)]);
    // The same fragment in another zone is another datagram.
    assert_eq!(r.datagrams(), 3);

    let mut r = Reassembler::new(FragConfig {
        max_bytes: DATAGRAM_OVERHEAD + FRAGMENT_OVERHEAD + 20 + 1000,
        ..Default::default()
    });
    let d = b4().udp(1, 2, &[0; 2000]);
    let frags = cut(&d, 1, &[992]);
    assert_eq!(push(&mut r, 0, &frags[0], 0), Outcome::Held);
    assert_eq!(
        push(&mut r, 0, &frags[1], 0),
        Outcome::Rejected(Reject::MemoryLimit)
    );
    assert_eq!((r.datagrams(), r.bytes()), (0, 0), "memory given back");
    assert_eq!(r.stats().v4.memory_limit, 1);
}

#[test]
fn config_validation_names_the_field() {
    let mut r = Reassembler::default();
    let e = r
        .set_config(FragConfig {
            max_fragments: 0,
            ..Default::default()
        })
        .unwrap_err();
    assert!(e.contains("max_fragments"), "{e}");
    let e = r
        .set_config(FragConfig {
            timeout_v6_ms: 0,
            ..Default::default()
        })
        .unwrap_err();
    assert!(e.contains("timeout_v6_ms"), "{e}");
}

#[test]
fn v4_options_of_the_first_fragment_make_the_header() {
    let d = b4().v4_options(&[0x94, 4, 0, 0]).udp(1, 2, &[5; 64]);
    let frags = cut(&d, 0x1234, &[32]);
    let mut r = Reassembler::default();
    let Outcome::Complete(got) = reassemble(&mut r, &frags, &[1, 0]) else {
        panic!("not complete");
    };
    assert_eq!(got.datagram, d);
    assert_eq!(got.layout.hdr_len, 24);
}

/// A datagram of either family with a random UDP, ICMP or raw payload.
fn datagram() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<bool>(),
        0u8..3,
        proptest::collection::vec(any::<u8>(), 1..3000),
        any::<bool>(),
    )
        .prop_map(|(v6, kind, payload, hbh)| {
            let b = if v6 {
                let b = b6();
                if hbh {
                    b.ext(Ext::HopByHop)
                } else {
                    b
                }
            } else {
                b4()
            };
            match kind {
                0 => b.udp(4000, 53, &payload),
                1 => b.raw(if v6 { 58 } else { 1 }, &{
                    let mut m = vec![if v6 { 128 } else { 8 }, 0, 0, 0, 0, 1, 0, 2];
                    m.extend_from_slice(&payload);
                    m
                }),
                _ => b.raw(253, &payload),
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_fragmentations_in_random_order_reassemble(
        d in datagram(),
        cut_seed in proptest::collection::vec(1u32..400, 0..20),
        order_seed in any::<u64>(),
        id in any::<u32>(),
    ) {
        let hdr = FragLayout::for_datagram(&d, id, &[]).unwrap().hdr_len;
        let payload = (d.len() - hdr) as u32;
        // Increasing multiples of 8, leaving at least 8 bytes for the
        // first fragment (the upper-layer header).
        let mut cuts = Vec::new();
        let mut at = 0u32;
        for c in cut_seed {
            at += c * 8;
            if at >= payload {
                break;
            }
            cuts.push(at);
        }
        let frags = cut(&d, id, &cuts);
        let mut order: Vec<usize> = (0..frags.len()).collect();
        let mut s = order_seed;
        for i in (1..order.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            order.swap(i, (s >> 33) as usize % (i + 1));
        }
        let mut r = Reassembler::default();
        let out = if frags.len() == 1 {
            push(&mut r, 0, &frags[0], 0)
        } else {
            reassemble(&mut r, &frags, &order)
        };
        if frags.len() == 1 {
            // One piece: a whole packet (IPv4) or an atomic fragment (IPv6).
            prop_assert_eq!(out, Outcome::Pass);
        } else {
            let Outcome::Complete(got) = out else {
                return Err(TestCaseError::fail(format!("{out:?}")));
            };
            prop_assert_eq!(&got.datagram, &d);
            prop_assert_eq!(got.layout.fragments(&got.datagram).unwrap(), frags);
            prop_assert_eq!((r.datagrams(), r.bytes()), (0, 0));
        }
    }

    #[test]
    fn garbage_never_panics(
        pkts in proptest::collection::vec(
            (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..200), any::<u8>()),
            1..40),
    ) {
        let mut r = Reassembler::new(FragConfig {
            max_bytes: 4096,
            max_datagrams: 8,
            max_datagrams_per_zone: 4,
            max_fragments: 4,
            ..Default::default()
        });
        for (n, (v6, mut b, zone)) in pkts.into_iter().enumerate() {
            // Bias towards fragments: a plausible header, random rest.
            if b.len() >= 8 {
                b[0] = if v6 { 0x60 } else { 0x45 };
                if !v6 { b[6] |= 0x20; } else if b.len() > 6 { b[6] = 44; }
            }
            let pkt = CtPacket {
                l3: &b,
                family: if v6 { Family::Ipv6 } else { Family::Ipv4 },
                flags: PktFlags::IP_CSUM_GOOD,
            };
            if let Outcome::Complete(c) = r.push(Zone((zone % 3) as u16), &pkt, n as u64 * 1000 * MS) {
                prop_assert!(c.layout.check(&c.datagram).is_ok());
            }
            prop_assert!(r.bytes() <= 4096);
            prop_assert!(r.datagrams() <= 8);
        }
    }
}
