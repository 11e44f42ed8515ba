//! Malformed and hostile frames through the stateful firewall: nothing
//! panics, everything malformed is counted, nothing from outside is
//! admitted, and the switch keeps working for good traffic afterwards.

use ferrovs_tests::{frame, Builder, Harness, FIREWALL};
use proptest::prelude::*;

fn good_udp() -> Vec<u8> {
    Builder::v4("10.0.0.1".parse().unwrap(), "192.0.2.9".parse().unwrap()).udp(1000, 53, b"q")
}

/// Hand-made corpus: each frame is broken in one way.
fn corpus() -> Vec<(&'static str, Vec<u8>)> {
    let udp = frame(1, 2, &good_udp());
    let mut v = Vec::new();
    v.push(("runt", udp[..10].to_vec()));
    v.push(("ip truncated", udp[..14 + 12].to_vec()));
    let mut bad_ver = udp.clone();
    bad_ver[14] = 0x65;
    v.push(("ip version 6 in an ipv4 ethertype", bad_ver));
    let mut bad_ihl = udp.clone();
    bad_ihl[14] = 0x43;
    v.push(("ihl below 5", bad_ihl));
    let mut long_total = udp.clone();
    long_total[16] = 0x05;
    v.push(("total length past the frame", long_total));
    let mut bad_csum = udp.clone();
    bad_csum[24] ^= 0xff;
    v.push(("ip header checksum", bad_csum));
    let mut bad_l4 = udp.clone();
    bad_l4[14 + 20 + 8] ^= 0x55; // the payload (the frame is padded to 60)
    v.push(("udp checksum", bad_l4));
    let tcp = frame(
        1,
        2,
        &Builder::v4("10.0.0.1".parse().unwrap(), "192.0.2.9".parse().unwrap())
            .tcp(&ferrovs_tests::Tcp::new(1, 2).flags(0x02)),
    );
    v.push(("tcp truncated", tcp[..14 + 20 + 10].to_vec()));
    let mut bad_doff = tcp.clone();
    bad_doff[14 + 20 + 12] = 0x20;
    v.push(("tcp data offset below 5", bad_doff));
    let mut flags = tcp.clone();
    flags[14 + 20 + 13] = 0x03; // SYN+FIN
    v.push(("tcp syn+fin", flags));
    let mut vlans = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    for _ in 0..3 {
        vlans.extend_from_slice(&[0x81, 0x00, 0x00, 0x01]);
    }
    vlans.extend_from_slice(&[0x08, 0x00]);
    vlans.extend_from_slice(&good_udp());
    v.push(("three vlan tags", vlans));
    let v6 = Builder::v6(
        "2001:db8::1".parse().unwrap(),
        "2001:db8::2".parse().unwrap(),
    )
    .udp(1, 2, b"x");
    let mut v6f = ferrovs_tests::ethernet_with([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1], &v6);
    v6f.truncate(14 + 30);
    v.push(("ipv6 truncated", v6f));
    let frag = Builder::v4("10.0.0.1".parse().unwrap(), "192.0.2.9".parse().unwrap())
        .fragment(8, false)
        .udp(1, 2, b"later fragment");
    v.push(("later fragment", frame(1, 2, &frag)));
    v
}

#[test]
fn malformed_corpus_is_flagged_and_dropped_from_both_sides() {
    let mut h = Harness::new(&[1, 2], FIREWALL);
    for (what, f) in corpus() {
        for port in [1, 2] {
            let out = h.inject(port, &f);
            assert!(
                out.is_empty(),
                "{what} from port {port} was forwarded: {out:?}"
            );
        }
    }
    let c = h.pipeline.counters;
    assert!(c.malformed >= 16, "{c:?}");
    assert_eq!(c.packets, 2 * corpus().len() as u64);
    assert!(
        h.dump_conntrack().is_empty(),
        "no malformed packet may create state: {:?}",
        h.dump_conntrack()
    );
    // Good traffic still flows.
    assert_eq!(
        Harness::ports_of(&h.inject(1, &frame(1, 2, &good_udp()))),
        vec![2]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Random bytes and damaged good frames from outside: never forwarded,
    /// never a panic, never a connection.
    #[test]
    fn hostile_frames_from_outside_never_pass(
        garbage in proptest::collection::vec(any::<u8>(), 0..200),
        flips in proptest::collection::vec((0usize..80, any::<u8>()), 0..6),
        cut in 0usize..80,
    ) {
        let mut h = Harness::new(&[1, 2], FIREWALL);
        let mut damaged = frame(2, 1, &good_udp());
        for (at, x) in flips {
            if at < damaged.len() {
                damaged[at] ^= x;
            }
        }
        damaged.truncate(damaged.len().saturating_sub(cut).max(1));
        for f in [garbage, damaged] {
            if f.is_empty() {
                continue;
            }
            let out = h.inject(2, &f);
            prop_assert!(out.is_empty());
        }
        prop_assert!(h.dump_conntrack().is_empty());
    }
}
