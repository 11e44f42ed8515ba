//! NAT through `Tracker::execute`: bindings, translation of both
//! directions and of ICMP errors, exhaustion, cross-shard reply tuples.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::rewrite::{rewrite_packet, rewrite_related};
use super::*;
use crate::build::{Builder, Tcp};
use crate::flush::FlushFilter;
use crate::packet::{parse, tcp_flags, CtPacket, PktFlags};
use crate::state::CtState;
use crate::tracker::{CtParams, CtResult, Tracker, TrackerConfig};
use crate::Zone;

const S: u64 = 1_000_000_000;
const T0: u64 = 1000 * S;

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}
fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn tracker() -> Tracker {
    Tracker::new(TrackerConfig {
        seed: Some(42),
        ..Default::default()
    })
}

fn fam(l3: &[u8]) -> Family {
    if l3[0] >> 4 == 6 {
        Family::Ipv6
    } else {
        Family::Ipv4
    }
}

fn run(t: &Tracker, l3: &[u8], p: &CtParams) -> CtResult {
    let mut out = [CtResult::default()];
    t.execute(
        &[CtPacket {
            l3,
            family: fam(l3),
            flags: PktFlags::empty(),
        }],
        p,
        T0,
        &mut out,
    );
    out[0]
}

/// Run conntrack and apply its NAT edit to the packet, as the datapath does.
fn run_nat(t: &Tracker, l3: &mut [u8], p: &CtParams) -> CtResult {
    let r = run(t, l3, p);
    match r.nat {
        Some(NatEdit::Packet(k)) => rewrite_packet(l3, &k).unwrap(),
        Some(NatEdit::Related(k)) => rewrite_related(l3, &k).unwrap(),
        Some(NatEdit::Drop) | None => {}
    }
    r
}

fn key_of(l3: &[u8]) -> ConnKey {
    let info = parse(
        &CtPacket {
            l3,
            family: fam(l3),
            flags: PktFlags::empty(),
        },
        Zone(1),
    );
    assert_eq!(info.invalid, None, "translated packet parses clean");
    info.key
}

fn spec(kind: NatKind, lo: &str, hi: &str, ports: Option<(u16, u16)>) -> NatSpec {
    let mut s = NatSpec::new(kind, lo.parse().unwrap(), hi.parse().unwrap()).unwrap();
    s.ports = ports;
    s
}

fn commit_nat(s: NatSpec) -> CtParams {
    CtParams {
        zone: Zone(1),
        commit: true,
        nat: Some(NatAction { spec: Some(s) }),
        ..Default::default()
    }
}

fn bare_nat() -> CtParams {
    CtParams {
        zone: Zone(1),
        nat: Some(NatAction::default()),
        ..Default::default()
    }
}

fn st(s: &str) -> CtState {
    s.split('|')
        .fold(CtState::empty(), |a, n| a | CtState::by_name(n).unwrap())
}

#[test]
fn snat_udp_both_directions() {
    let t = tracker();
    let snat = commit_nat(spec(
        NatKind::Src,
        "10.0.0.100",
        "10.0.0.100",
        Some((5000, 5001)),
    ));
    let client = Builder::v4(v4("192.168.1.5"), v4("8.8.8.8"));
    let mut p = client.udp(40000, 53, b"query");
    // ct(nat) first (no commit): +new, nothing to translate yet.
    let r = run_nat(&t, &mut p, &bare_nat());
    assert_eq!(r.state, st("new|trk"));
    assert_eq!(r.nat, None);
    let r = run_nat(&t, &mut p, &snat);
    assert_eq!(r.state, st("new|trk|snat"));
    let k = key_of(&p);
    assert_eq!(k.src_ip().to_string(), "10.0.0.100");
    assert!((5000..=5001).contains(&k.src_port));
    let port = k.src_port;
    // ct_nw_src etc. keep the original tuple.
    let orig = r.orig.unwrap();
    assert_eq!(
        (orig.src_ip().to_string(), orig.src_port),
        ("192.168.1.5".into(), 40000)
    );
    assert_eq!(
        p,
        Builder::v4(v4("10.0.0.100"), v4("8.8.8.8")).udp(port, 53, b"query")
    );

    // The reply comes back to the public tuple and is un-NATed.
    let mut reply = Builder::v4(v4("8.8.8.8"), v4("10.0.0.100")).udp(53, port, b"answer");
    let r = run_nat(&t, &mut reply, &bare_nat());
    assert_eq!(r.state, st("est|rpl|trk|dnat"));
    assert_eq!(r.orig, Some(orig));
    assert_eq!(
        reply,
        Builder::v4(v4("8.8.8.8"), v4("192.168.1.5")).udp(53, 40000, b"answer")
    );
    // Later original-direction packets with bare nat: translated again.
    let mut p2 = client.udp(40000, 53, b"again");
    let r = run_nat(&t, &mut p2, &bare_nat());
    assert_eq!(r.state, st("est|trk|snat"));
    assert_eq!(
        p2,
        Builder::v4(v4("10.0.0.100"), v4("8.8.8.8")).udp(port, 53, b"again")
    );
    // A ct without nat neither translates nor sets the NAT bits.
    let plain = CtParams {
        zone: Zone(1),
        ..Default::default()
    };
    let r = run(&t, &client.udp(40000, 53, b"x"), &plain);
    assert_eq!((r.state, r.nat), (st("est|trk"), None));
    // The un-NATed reverse tuple is not this connection.
    let r = run(
        &t,
        &Builder::v4(v4("8.8.8.8"), v4("192.168.1.5")).udp(53, 40000, b""),
        &bare_nat(),
    );
    assert_eq!(r.state, st("new|trk"));

    // dump-conntrack shows the translated reply tuple, like OVS.
    let d = t.dump(&FlushFilter::default(), T0);
    assert_eq!(d.len(), 1);
    assert_eq!(
        d[0].to_string(),
        format!(
            "udp,orig=(src=192.168.1.5,dst=8.8.8.8,sport=40000,dport=53),\
             reply=(src=8.8.8.8,dst=10.0.0.100,sport=53,dport={port}),zone=1"
        )
    );
}

#[test]
fn two_port_range_third_client_is_dropped_and_counted() {
    let t = tracker();
    let snat = commit_nat(spec(
        NatKind::Src,
        "10.0.0.100",
        "10.0.0.100",
        Some((5000, 5001)),
    ));
    let mut ports = HashSet::new();
    for (i, client) in ["192.168.1.5", "192.168.1.6", "192.168.1.7"]
        .iter()
        .enumerate()
    {
        let mut p = Builder::v4(v4(client), v4("8.8.8.8")).udp(40000, 53, b"q");
        let r = run_nat(&t, &mut p, &snat);
        if i < 2 {
            assert_eq!(r.state, st("new|trk|snat"));
            assert!(ports.insert(key_of(&p).src_port));
        } else {
            assert_eq!(r.nat, Some(NatEdit::Drop));
            assert!(r.state.contains(CtState::INV));
        }
    }
    assert_eq!(ports, HashSet::from([5000, 5001]));
    let c = t.counters();
    assert_eq!((c.nat_exhausted, c.connections), (1, 2));
    // Once a binding is freed, its port can be handed out again.
    t.flush(&FlushFilter::default(), T0);
    let mut p = Builder::v4(v4("192.168.1.7"), v4("8.8.8.8")).udp(40000, 53, b"q");
    assert_eq!(run_nat(&t, &mut p, &snat).state, st("new|trk|snat"));
}

#[test]
fn a_reply_tuple_in_use_is_never_handed_out() {
    let t = tracker();
    // An ordinary connection from the server to the public address, port
    // 5000: the reply tuple of an SNAT binding to port 5000.
    let plain = CtParams {
        zone: Zone(1),
        commit: true,
        ..Default::default()
    };
    let inbound = Builder::v4(v4("8.8.8.8"), v4("10.0.0.100")).udp(53, 5000, b"");
    assert_eq!(run(&t, &inbound, &plain).state, st("new|trk"));
    let snat = commit_nat(spec(
        NatKind::Src,
        "10.0.0.100",
        "10.0.0.100",
        Some((5000, 5001)),
    ));
    let mut p = Builder::v4(v4("192.168.1.5"), v4("8.8.8.8")).udp(40000, 53, b"q");
    run_nat(&t, &mut p, &snat);
    assert_eq!(key_of(&p).src_port, 5001);
    let mut p = Builder::v4(v4("192.168.1.6"), v4("8.8.8.8")).udp(40000, 53, b"q");
    assert_eq!(run_nat(&t, &mut p, &snat).nat, Some(NatEdit::Drop));
}

#[test]
fn snat_keeps_the_port_when_free_else_same_class() {
    let t = tracker();
    let snat = commit_nat(spec(NatKind::Src, "10.0.0.100", "10.0.0.100", None));
    let mut a = Builder::v4(v4("192.168.1.5"), v4("8.8.8.8")).udp(40000, 53, b"q");
    run_nat(&t, &mut a, &snat);
    assert_eq!(key_of(&a).src_port, 40000);
    // A second client with the same source port gets another unprivileged one.
    let mut b = Builder::v4(v4("192.168.1.6"), v4("8.8.8.8")).udp(40000, 53, b"q");
    run_nat(&t, &mut b, &snat);
    let pb = key_of(&b).src_port;
    assert!(pb >= 1024 && pb != 40000, "{pb}");
    // Privileged ports stay privileged.
    let mut c = Builder::v4(v4("192.168.1.5"), v4("8.8.8.8")).udp(700, 53, b"q");
    let mut d = Builder::v4(v4("192.168.1.6"), v4("8.8.8.8")).udp(700, 53, b"q");
    run_nat(&t, &mut c, &snat);
    run_nat(&t, &mut d, &snat);
    assert_eq!(key_of(&c).src_port, 700);
    assert!((600..=1023).contains(&key_of(&d).src_port));
}

#[test]
fn many_bindings_across_shards_find_their_replies_and_clean_up() {
    let t = tracker();
    let mut s = spec(
        NatKind::Src,
        "10.0.0.100",
        "10.0.0.101",
        Some((1024, 65535)),
    );
    s.pick = PortPick::Random;
    let snat = commit_nat(s);
    let mut seen = HashSet::new();
    let mut pairs = Vec::new();
    for i in 0..500u16 {
        let client = Ipv4Addr::new(192, 168, (i >> 8) as u8, i as u8);
        let mut p = Builder::v4(client, v4("8.8.8.8")).udp(40000, 53, b"q");
        assert_eq!(run_nat(&t, &mut p, &snat).state, st("new|trk|snat"));
        let k = key_of(&p);
        assert!(seen.insert(k), "binding handed out twice: {k:?}");
        pairs.push((client, k));
    }
    assert!(
        t.counters().nat_remote_refs > 400,
        "most reply tuples hash to another shard"
    );
    for (client, k) in &pairs {
        let mut r = Builder::v4(v4("8.8.8.8"), k.src_ip().to_string().parse().unwrap())
            .udp(53, k.src_port, b"a");
        assert_eq!(
            run_nat(&t, &mut r, &bare_nat()).state,
            st("est|rpl|trk|dnat")
        );
        assert_eq!(r, Builder::v4(v4("8.8.8.8"), *client).udp(53, 40000, b"a"));
    }
    // Expiry and flush take the remote references with the connections.
    assert_eq!(t.sweep(T0 + 3600 * S, usize::MAX), 500);
    assert_eq!(t.counters().nat_remote_refs, 0);
    assert!(t.is_empty());
}

#[test]
fn flush_removes_remote_references() {
    let t = tracker();
    let snat = commit_nat(spec(
        NatKind::Src,
        "10.0.0.100",
        "10.0.0.100",
        Some((2000, 2999)),
    ));
    for i in 0..50u8 {
        let mut p = Builder::v4(Ipv4Addr::new(192, 168, 0, i), v4("8.8.8.8")).udp(1, 53, b"");
        run_nat(&t, &mut p, &snat);
    }
    assert!(t.counters().nat_remote_refs > 0);
    assert_eq!(t.flush(&FlushFilter::default(), T0), 50);
    assert_eq!(t.counters().nat_remote_refs, 0);
}

#[test]
fn dnat_load_balancing_with_hash() {
    let t = tracker();
    let mut s = spec(NatKind::Dst, "10.1.0.1", "10.1.0.2", None);
    s.pick = PortPick::Hash;
    let dnat = commit_nat(s);
    let mut backends = HashSet::new();
    for i in 1..=40u8 {
        let client = Ipv4Addr::new(192, 0, 2, i);
        let seg = Tcp::new(33000, 80).flags(tcp_flags::SYN).seq(1);
        let mut syn = Builder::v4(client, v4("198.51.100.10")).tcp(&seg);
        let r = run_nat(&t, &mut syn, &dnat);
        assert_eq!(r.state, st("new|trk|dnat"));
        let k = key_of(&syn);
        assert_eq!(k.dst_port, 80);
        backends.insert(k.dst);
        // The backend's SYN-ACK is un-DNATed: it comes from the VIP.
        let sa = Tcp::new(80, 33000)
            .flags(tcp_flags::SYN | tcp_flags::ACK)
            .seq(500)
            .ack(2);
        let mut synack = Builder::v4(k.dst_ip().to_string().parse().unwrap(), client).tcp(&sa);
        let r = run_nat(&t, &mut synack, &bare_nat());
        assert_eq!(r.state, st("est|rpl|trk|snat"));
        assert_eq!(synack, Builder::v4(v4("198.51.100.10"), client).tcp(&sa));
    }
    assert_eq!(backends.len(), 2, "both backends used");
}

#[test]
fn ipv6_snat_of_icmpv6_echo_translates_the_id() {
    let t = tracker();
    let snat = commit_nat(spec(
        NatKind::Src,
        "2001:db8::1",
        "2001:db8::1",
        Some((100, 100)),
    ));
    let c1 = Builder::v6(v6("fd00::5"), v6("2001:db8:9::9"));
    let mut p = c1.echo_request(7, 1, b"ping");
    assert_eq!(run_nat(&t, &mut p, &snat).state, st("new|trk|snat"));
    assert_eq!(
        p,
        Builder::v6(v6("2001:db8::1"), v6("2001:db8:9::9")).echo_request(100, 1, b"ping")
    );
    let mut r = Builder::v6(v6("2001:db8:9::9"), v6("2001:db8::1")).echo_reply(100, 1, b"ping");
    assert_eq!(
        run_nat(&t, &mut r, &bare_nat()).state,
        st("est|rpl|trk|dnat")
    );
    assert_eq!(
        r,
        Builder::v6(v6("2001:db8:9::9"), v6("fd00::5")).echo_reply(7, 1, b"ping")
    );
    // The only id is taken: a second pinger is dropped.
    let mut p2 = Builder::v6(v6("fd00::6"), v6("2001:db8:9::9")).echo_request(7, 1, b"");
    assert_eq!(run_nat(&t, &mut p2, &snat).nat, Some(NatEdit::Drop));
}

#[test]
fn icmp_errors_about_nat_connections_are_translated() {
    let t = tracker();
    let snat = commit_nat(spec(
        NatKind::Src,
        "10.0.0.100",
        "10.0.0.100",
        Some((5000, 5000)),
    ));
    let client = Builder::v4(v4("192.168.1.5"), v4("8.8.8.8"));
    let mut p = client.udp(40000, 53, b"query");
    run_nat(&t, &mut p, &snat);
    // A far-side router reports the translated datagram to the public address.
    let mut err = Builder::v4(v4("192.0.2.254"), v4("10.0.0.100")).icmp_error(3, 3, &p);
    let r = run_nat(&t, &mut err, &bare_nat());
    assert_eq!(r.state, st("rel|rpl|trk|dnat"));
    let want = Builder::v4(v4("192.0.2.254"), v4("192.168.1.5")).icmp_error(
        3,
        3,
        &client.udp(40000, 53, b"query"),
    );
    assert_eq!(err, want);
    // The client reports the server's (un-NATed) reply as unreachable:
    // the embedded reply and the outer source get the public tuple.
    let un_natted = Builder::v4(v4("8.8.8.8"), v4("192.168.1.5")).udp(53, 40000, b"a");
    let mut err2 = Builder::v4(v4("192.168.1.5"), v4("8.8.8.8")).icmp_error(3, 3, &un_natted);
    let r = run_nat(&t, &mut err2, &bare_nat());
    assert_eq!(r.state, st("rel|trk|snat"));
    let natted = Builder::v4(v4("8.8.8.8"), v4("10.0.0.100")).udp(53, 5000, b"a");
    assert_eq!(
        err2,
        Builder::v4(v4("10.0.0.100"), v4("8.8.8.8")).icmp_error(3, 3, &natted)
    );
    // Without nat in the ct action the error is related but untouched.
    let mut err3 = Builder::v4(v4("192.0.2.254"), v4("10.0.0.100")).icmp_error(3, 3, &p);
    let plain = CtParams {
        zone: Zone(1),
        ..Default::default()
    };
    let r = run(&t, &err3, &plain);
    assert_eq!((r.state, r.nat), (st("rel|rpl|trk"), None));
    let before = err3.clone();
    run_nat(&t, &mut err3, &plain);
    assert_eq!(err3, before);
}

#[test]
fn batches_mixing_nat_and_plain_packets() {
    // One execute call with several new NAT connections and replies in one
    // batch (some deferred): every packet gets its own correct result.
    let t = tracker();
    let snat = commit_nat(spec(
        NatKind::Src,
        "10.0.0.100",
        "10.0.0.100",
        Some((6000, 6015)),
    ));
    let pkts: Vec<Vec<u8>> = (0..16u8)
        .map(|i| Builder::v4(Ipv4Addr::new(192, 168, 2, i), v4("8.8.8.8")).udp(1000, 53, b"q"))
        .collect();
    let cts: Vec<CtPacket<'_>> = pkts
        .iter()
        .map(|l3| CtPacket {
            l3,
            family: Family::Ipv4,
            flags: PktFlags::empty(),
        })
        .collect();
    let mut out = vec![CtResult::default(); 16];
    t.execute(&cts, &snat, T0, &mut out);
    let mut ports = HashSet::new();
    for r in &out {
        assert_eq!(r.state, st("new|trk|snat"));
        let Some(NatEdit::Packet(k)) = r.nat else {
            panic!("{r:?}")
        };
        assert!(ports.insert(k.src_port));
    }
    assert_eq!(ports.len(), 16);
    // The same packets again in one batch: all established-direction hits.
    t.execute(&cts, &bare_nat(), T0, &mut out);
    assert!(out.iter().all(|r| r.state == st("new|trk|snat")));
}

#[test]
fn concurrent_bindings_replies_and_expiry_stay_consistent() {
    // Threads commit SNAT connections from a small port pool, answer them,
    // and a sweeper expires them meanwhile: no deadlock, no binding handed
    // out twice, and no remote reference left behind.
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let t = Arc::new(Tracker::new(TrackerConfig {
        seed: Some(9),
        shards: 16,
        ..Default::default()
    }));
    let snat = commit_nat(spec(
        NatKind::Src,
        "10.0.0.100",
        "10.0.0.101",
        Some((7000, 7063)),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let sweeper = {
        let (t, stop) = (t.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut now = T0;
            while !stop.load(Ordering::Relaxed) {
                now += 40 * S;
                t.sweep(now, 1000);
                std::thread::yield_now();
            }
        })
    };
    let replied_own = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let workers: Vec<_> = (0..4u8)
        .map(|w| {
            let t = t.clone();
            let replied_own = replied_own.clone();
            std::thread::spawn(move || {
                for round in 0..40u64 {
                    for i in 0..32u8 {
                        let client = Ipv4Addr::new(192, 168, w, i);
                        let now = T0 + round * 35 * S;
                        let mut p = Builder::v4(client, v4("8.8.8.8")).udp(1000, 53, b"q");
                        let mut out = [CtResult::default()];
                        let pkt = [CtPacket {
                            l3: &p,
                            family: Family::Ipv4,
                            flags: PktFlags::empty(),
                        }];
                        t.execute(&pkt, &snat, now, &mut out);
                        let Some(NatEdit::Packet(k)) = out[0].nat else {
                            continue; // exhausted, or expired meanwhile
                        };
                        rewrite_packet(&mut p, &k).unwrap();
                        let mut r =
                            Builder::v4(v4("8.8.8.8"), k.src_ip().to_string().parse().unwrap())
                                .udp(53, k.src_port, b"a");
                        let pkt = [CtPacket {
                            l3: &r,
                            family: Family::Ipv4,
                            flags: PktFlags::empty(),
                        }];
                        t.execute(&pkt, &bare_nat(), now, &mut out);
                        if let Some(NatEdit::Packet(back)) = out[0].nat {
                            // Un-NATed to the connection that owns the
                            // binding now (the sweeper may have ended ours
                            // and another client may hold it since).
                            rewrite_packet(&mut r, &back).unwrap();
                            let owner = out[0].orig.unwrap();
                            assert_eq!(key_of(&r).dst_ip(), owner.src_ip());
                            assert_eq!(key_of(&r).dst_port, owner.src_port);
                            if owner.src_ip() == IpAddr::V4(client) {
                                replied_own.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    sweeper.join().unwrap();
    assert!(
        replied_own.load(Ordering::Relaxed) > 100,
        "replies reach their own client: {}",
        replied_own.load(Ordering::Relaxed)
    );
    let d = t.dump(&FlushFilter::default(), T0);
    let replies: HashSet<ConnKey> = d.iter().map(|c| c.reply).collect();
    assert_eq!(replies.len(), d.len(), "a reply tuple is used twice");
    assert!(
        d.len() <= 128,
        "at most 2 addresses x 64 ports: {}",
        d.len()
    );
    t.flush(&FlushFilter::default(), T0);
    assert_eq!(t.counters().nat_remote_refs, 0);
    assert!(t.is_empty());
}
