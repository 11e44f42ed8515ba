//! Conntrack behaviour through `Tracker::execute`, packet by packet, with an
//! injected clock (no sleeps).

mod pkts;

use std::sync::{Arc, Mutex};

use ct::events::{ConnEvent, EventKind, EventSink};
use ct::expect::{ExpectKey, Expectation};
use ct::flush::{Cidr, FlushFilter, StateClass, TupleFilter};
use ct::packet::tcp_flags::{ACK, FIN, PSH, RST, SYN};
use ct::{
    ConnKey, CtPacket, CtParams, CtResult, CtState, Family, PktFlags, TimeoutPolicy, Tracker,
    TrackerConfig, Zone,
};
use pkts::*;

const S: u64 = 1_000_000_000;
const T0: u64 = 1000 * S;

fn st(s: &str) -> CtState {
    s.split('|').fold(CtState::empty(), |acc, n| {
        acc | CtState::by_name(n).unwrap_or_else(|| panic!("bad state {n}"))
    })
}

fn run_at(t: &Tracker, l3: &[u8], params: &CtParams, now: u64) -> CtResult {
    let family = if l3[0] >> 4 == 6 {
        Family::Ipv6
    } else {
        Family::Ipv4
    };
    let mut out = [CtResult::default()];
    t.execute(
        &[CtPacket {
            l3,
            family,
            flags: PktFlags::empty(),
        }],
        params,
        now,
        &mut out,
    );
    out[0]
}

fn commit(zone: u16) -> CtParams {
    CtParams {
        zone: Zone(zone),
        commit: true,
        ..Default::default()
    }
}
fn nocommit(zone: u16) -> CtParams {
    CtParams {
        zone: Zone(zone),
        ..Default::default()
    }
}
fn run(t: &Tracker, l3: &[u8], params: &CtParams) -> CtState {
    run_at(t, l3, params, T0).state
}

#[test]
fn uncommitted_first_packet_is_new_and_leaves_nothing() {
    let t = Tracker::default();
    let p = udp4("10.0.0.1", "10.0.0.2", 1000, 53);
    assert_eq!(run(&t, &p, &nocommit(0)), st("new|trk"));
    assert_eq!(t.len(), 0);
    assert_eq!(run(&t, &p, &nocommit(0)), st("new|trk"));
    let r = udp4("10.0.0.2", "10.0.0.1", 53, 1000);
    assert_eq!(
        run(&t, &r, &nocommit(0)),
        st("new|trk"),
        "reply with no committed conn starts its own"
    );
}

#[test]
fn udp_commit_then_reply_is_established() {
    let t = Tracker::default();
    let p = udp4("10.0.0.1", "10.0.0.2", 1000, 53);
    let r = udp4("10.0.0.2", "10.0.0.1", 53, 1000);
    assert_eq!(run(&t, &p, &commit(0)), st("new|trk"));
    assert_eq!(t.len(), 1);
    assert_eq!(run(&t, &p, &nocommit(0)), st("new|trk"), "no reply yet");
    assert_eq!(run(&t, &r, &nocommit(0)), st("est|rpl|trk"));
    assert_eq!(run(&t, &p, &nocommit(0)), st("est|trk"));
    let res = run_at(&t, &p, &nocommit(0), T0);
    let orig = res.orig.expect("orig tuple");
    assert_eq!(orig.src_ip().to_string(), "10.0.0.1");
    assert_eq!((orig.src_port, orig.dst_port), (1000, 53));
    let res = run_at(&t, &r, &nocommit(0), T0);
    assert_eq!(
        res.orig,
        Some(orig),
        "reply packets report the original tuple"
    );
}

#[test]
fn zones_are_isolated() {
    let t = Tracker::default();
    let p = udp4("10.0.0.1", "10.0.0.2", 1000, 53);
    let r = udp4("10.0.0.2", "10.0.0.1", 53, 1000);
    run(&t, &p, &commit(1));
    assert_eq!(
        run(&t, &r, &nocommit(2)),
        st("new|trk"),
        "reply in another zone must not match"
    );
    assert_eq!(run(&t, &r, &nocommit(1)), st("est|rpl|trk"));
    run(&t, &p, &commit(2));
    assert_eq!(t.len(), 2, "same tuple in two zones is two connections");
    assert_eq!(t.zones.count(Zone(1)), 1);
    assert_eq!(t.zones.count(Zone(2)), 1);
    // Flushing zone 1 leaves zone 2.
    assert_eq!(
        t.flush(
            &FlushFilter {
                zone: Some(Zone(1)),
                ..Default::default()
            },
            T0
        ),
        1
    );
    assert_eq!(run(&t, &p, &nocommit(2)), st("new|trk"));
    assert_eq!(t.len(), 1);
}

#[test]
fn force_replaces_connection_seen_in_reply_direction() {
    let t = Tracker::default();
    let p = udp4("10.0.0.1", "10.0.0.2", 1000, 53);
    let r = udp4("10.0.0.2", "10.0.0.1", 53, 1000);
    run(&t, &p, &commit(0));
    let force = CtParams {
        force: true,
        ..commit(0)
    };
    assert_eq!(
        run(&t, &p, &force),
        st("new|trk"),
        "orig direction: force does nothing"
    );
    assert_eq!(
        run(&t, &r, &force),
        st("new|trk"),
        "reply direction: old conn ended, new one started"
    );
    assert_eq!(t.len(), 1);
    // The new connection's original direction is the former reply.
    assert_eq!(run(&t, &p, &nocommit(0)), st("est|rpl|trk"));
}

#[test]
fn notrack_is_untracked_and_leaves_nothing() {
    let t = Tracker::default();
    let p = udp4("10.0.0.1", "10.0.0.2", 1000, 53);
    let mut out = [CtResult::default()];
    let pkt = CtPacket {
        l3: &p,
        family: Family::Ipv4,
        flags: PktFlags::NOTRACK,
    };
    t.execute(&[pkt], &commit(0), T0, &mut out);
    assert_eq!(out[0].state, st("trk|untracked"));
    assert_eq!(t.len(), 0);
    assert_eq!(t.counters().untracked, 1);
}

#[test]
fn mark_and_label_set_on_commit_with_masks() {
    let t = Tracker::default();
    let p = udp4("10.0.0.1", "10.0.0.2", 1000, 53);
    let r = udp4("10.0.0.2", "10.0.0.1", 53, 1000);
    let set = CtParams {
        mark: Some((0x12, 0xff)),
        label: Some((1 << 100, u128::MAX)),
        ..commit(0)
    };
    let res = run_at(&t, &p, &set, T0);
    assert_eq!((res.mark, res.label), (0x12, 1 << 100));
    let res = run_at(&t, &r, &nocommit(0), T0);
    assert_eq!(
        (res.mark, res.label),
        (0x12, 1 << 100),
        "reply sees the mark and label"
    );
    let upd = CtParams {
        mark: Some((0x300, 0xf00)),
        ..commit(0)
    };
    assert_eq!(run_at(&t, &p, &upd, T0).mark, 0x312);
    let no_commit_set = CtParams {
        mark: Some((0, u32::MAX)),
        ..nocommit(0)
    };
    assert_eq!(
        run_at(&t, &p, &no_commit_set, T0).mark,
        0x312,
        "mark only changes on commit"
    );
}

#[test]
fn tcp_handshake_data_and_close() {
    let t = Tracker::default();
    let c = commit(0);
    let (a, b) = ("10.0.0.1", "10.0.0.2");
    assert_eq!(
        run(&t, &tcp4(a, b, 40000, 80, 100, 0, SYN, 64000, 0), &c),
        st("new|trk")
    );
    assert_eq!(
        run(
            &t,
            &tcp4(b, a, 80, 40000, 5000, 101, SYN | ACK, 64000, 0),
            &c
        ),
        st("est|rpl|trk")
    );
    assert_eq!(
        run(&t, &tcp4(a, b, 40000, 80, 101, 5001, ACK, 64000, 0), &c),
        st("est|trk")
    );
    assert_eq!(
        run(
            &t,
            &tcp4(a, b, 40000, 80, 101, 5001, ACK | PSH, 64000, 100),
            &c
        ),
        st("est|trk")
    );
    assert_eq!(
        run(&t, &tcp4(b, a, 80, 40000, 5001, 201, ACK, 64000, 0), &c),
        st("est|rpl|trk")
    );
    let dump = t.dump(&FlushFilter::default(), T0);
    assert_eq!(dump[0].tcp_state, Some("ESTABLISHED"));
    assert_eq!(
        dump[0].to_string(),
        "tcp,orig=(src=10.0.0.1,dst=10.0.0.2,sport=40000,dport=80),reply=(src=10.0.0.2,dst=10.0.0.1,sport=80,dport=40000),protoinfo=(state=ESTABLISHED)"
    );
    run(
        &t,
        &tcp4(a, b, 40000, 80, 201, 5001, FIN | ACK, 64000, 0),
        &c,
    );
    run(
        &t,
        &tcp4(b, a, 80, 40000, 5001, 202, FIN | ACK, 64000, 0),
        &c,
    );
    run(&t, &tcp4(a, b, 40000, 80, 202, 5002, ACK, 64000, 0), &c);
    assert_eq!(
        t.dump(&FlushFilter::default(), T0)[0].tcp_state,
        Some("TIME_WAIT")
    );
    // A new SYN on the same tuple in TIME_WAIT reopens the connection.
    assert_eq!(
        run(&t, &tcp4(a, b, 40000, 80, 90000, 0, SYN, 64000, 0), &c),
        st("new|trk")
    );
    assert_eq!(
        t.dump(&FlushFilter::default(), T0)[0].tcp_state,
        Some("SYN_SENT")
    );
    assert_eq!(t.len(), 1);
}

#[test]
fn tcp_invalid_cases() {
    let t = Tracker::default();
    let c = commit(0);
    let (a, b) = ("10.0.0.1", "10.0.0.2");
    assert_eq!(
        run(&t, &tcp4(a, b, 1, 2, 100, 0, ACK, 64000, 0), &c),
        st("inv|trk"),
        "non-SYN cannot start"
    );
    assert_eq!(
        run(&t, &tcp4(a, b, 1, 2, 100, 0, SYN | ACK, 64000, 0), &c),
        st("inv|trk")
    );
    assert_eq!(
        run(&t, &tcp4(a, b, 1, 2, 100, 0, RST, 64000, 0), &c),
        st("inv|trk")
    );
    assert_eq!(t.len(), 0);
    // Established connection; then an out-of-window injected segment.
    run(&t, &tcp4(a, b, 1, 2, 100, 0, SYN, 64000, 0), &c);
    run(&t, &tcp4(b, a, 2, 1, 5000, 101, SYN | ACK, 64000, 0), &c);
    run(&t, &tcp4(a, b, 1, 2, 101, 5001, ACK, 64000, 0), &c);
    let far = tcp4(
        b,
        a,
        2,
        1,
        5001u32.wrapping_add(2_000_000_000),
        101,
        ACK | PSH,
        64000,
        10,
    );
    assert_eq!(run(&t, &far, &c), st("inv|trk"));
    let rst = tcp4(b, a, 2, 1, 5001u32.wrapping_add(1_000_000), 0, RST, 0, 0);
    assert_eq!(run(&t, &rst, &c), st("inv|trk"), "blind RST out of window");
    assert_eq!(
        t.dump(&FlushFilter::default(), T0)[0].tcp_state,
        Some("ESTABLISHED")
    );
    // The real connection goes on.
    assert_eq!(
        run(&t, &tcp4(b, a, 2, 1, 5001, 101, ACK | PSH, 64000, 10), &c),
        st("est|rpl|trk")
    );
    // Liberal zone: same injection accepted.
    t.zones.set_liberal(Zone(0), true);
    assert_eq!(run(&t, &far, &c), st("est|rpl|trk"));
    assert!(t.counters().invalid >= 5);
}

#[test]
fn icmp_echo_and_related_errors() {
    let t = Tracker::default();
    let c = commit(0);
    let req = icmp4_echo("10.0.0.1", "10.0.0.2", 7, true);
    let rep = icmp4_echo("10.0.0.2", "10.0.0.1", 7, false);
    assert_eq!(
        run(&t, &rep, &c),
        st("inv|trk"),
        "echo reply without request"
    );
    assert_eq!(run(&t, &req, &c), st("new|trk"));
    assert_eq!(run(&t, &rep, &c), st("est|rpl|trk"));
    let d = t.dump(&FlushFilter::default(), T0);
    assert_eq!(d[0].to_string(), "icmp,orig=(src=10.0.0.1,dst=10.0.0.2,id=7,type=8,code=0),reply=(src=10.0.0.2,dst=10.0.0.1,id=7,type=0,code=0)");

    // UDP A->B; B's port unreachable back to A is related, reply direction.
    let u = udp4("10.0.0.1", "10.0.0.2", 1000, 53);
    run(&t, &u, &c);
    let err = icmp4_error("10.0.0.2", "10.0.0.1", 3, 3, &u);
    assert_eq!(run(&t, &err, &c), st("rel|rpl|trk"));
    // An error quoting a packet of no connection is invalid.
    let other = udp4("10.0.0.1", "10.0.0.9", 1000, 53);
    assert_eq!(
        run(&t, &icmp4_error("10.0.0.9", "10.0.0.1", 3, 3, &other), &c),
        st("inv|trk")
    );
    // An error in the original direction (about a reply-direction packet).
    let ur = udp4("10.0.0.2", "10.0.0.1", 53, 1000);
    assert_eq!(
        run(&t, &icmp4_error("10.0.0.1", "10.0.0.2", 3, 3, &ur), &c),
        st("rel|trk")
    );
    assert_eq!(t.len(), 2, "errors create no connections");
}

#[test]
fn ipv6_udp_and_icmpv6() {
    let t = Tracker::default();
    let c = commit(3);
    let p = udp6("fd00::1", "fd00::2", 1000, 53);
    let r = udp6("fd00::2", "fd00::1", 53, 1000);
    assert_eq!(run(&t, &p, &c), st("new|trk"));
    assert_eq!(run(&t, &r, &c), st("est|rpl|trk"));
    let err = icmp6_error("fd00::2", "fd00::1", 1, 4, &p);
    assert_eq!(run(&t, &err, &c), st("rel|rpl|trk"));
    let dump = t.dump(&FlushFilter::default(), T0);
    assert_eq!(dump[0].to_string(), "udp6,orig=(src=fd00::1,dst=fd00::2,sport=1000,dport=53),reply=(src=fd00::2,dst=fd00::1,sport=53,dport=1000),zone=3");
}

#[test]
fn bad_checksums_are_invalid_unless_nic_validated() {
    let t = Tracker::default();
    let mut p = udp4_csum("10.0.0.1", "10.0.0.2", 1000, 53);
    let n = p.len();
    p[n - 1] ^= 0xff; // corrupt payload → bad UDP checksum
    assert_eq!(run(&t, &p, &commit(0)), st("inv|trk"));
    let mut out = [CtResult::default()];
    let good = CtPacket {
        l3: &p,
        family: Family::Ipv4,
        flags: PktFlags::L4_CSUM_GOOD,
    };
    t.execute(&[good], &commit(0), T0, &mut out);
    assert_eq!(out[0].state, st("new|trk"));
    let mut h = udp4("10.0.0.1", "10.0.0.3", 1000, 53);
    h[10] ^= 0x55; // IPv4 header checksum
    assert_eq!(run(&t, &h, &commit(0)), st("inv|trk"));
}

#[test]
fn timeout_policy_expiry_with_injected_clock() {
    let t = Tracker::default();
    let short = t
        .policies
        .set(
            "short",
            &TimeoutPolicy::parse("udp_first=3,udp_single=3,udp_multiple=5").unwrap(),
        )
        .unwrap();
    let p = udp4("10.0.0.1", "10.0.0.2", 1000, 53);
    let r = udp4("10.0.0.2", "10.0.0.1", 53, 1000);
    let c = CtParams {
        policy: Some(short),
        ..commit(0)
    };
    run_at(&t, &p, &c, T0);
    assert_eq!(
        run_at(&t, &r, &nocommit(0), T0 + 2 * S).state,
        st("est|rpl|trk")
    );
    // Now udp_multiple=5 from T0+2.
    assert_eq!(
        run_at(&t, &p, &nocommit(0), T0 + 6 * S).state,
        st("est|trk")
    );
    assert_eq!(
        t.sweep(T0 + 10 * S, 1 << 20),
        0,
        "refreshed at +6s, lives until +11s"
    );
    assert_eq!(t.sweep(T0 + 13 * S, 1 << 20), 1);
    assert_eq!(t.len(), 0);
    assert_eq!(
        run_at(&t, &r, &nocommit(0), T0 + 13 * S).state,
        st("new|trk")
    );

    // Default policy: kernel's udp 30 s; zone default policy overrides.
    run_at(&t, &p, &commit(0), T0);
    assert_eq!(t.sweep(T0 + 29 * S, 1 << 20), 0);
    assert_eq!(t.sweep(T0 + 32 * S, 1 << 20), 1);
    t.zones.set_policy(Zone(4), short);
    run_at(&t, &p, &commit(4), T0 + 40 * S);
    assert_eq!(t.sweep(T0 + 43 * S, 1 << 20), 0);
    assert_eq!(
        t.sweep(T0 + 45 * S, 1 << 20),
        1,
        "zone 4's default policy: udp_first=3"
    );
}

#[test]
fn expired_connection_found_by_a_packet_is_replaced() {
    let t = Tracker::default();
    let p = udp4("10.0.0.1", "10.0.0.2", 1000, 53);
    let r = udp4("10.0.0.2", "10.0.0.1", 53, 1000);
    run_at(&t, &p, &commit(0), T0);
    // No sweep ran; the reply arrives after udp_first (30 s) expired.
    assert_eq!(
        run_at(&t, &r, &nocommit(0), T0 + 40 * S).state,
        st("new|trk")
    );
    assert_eq!(t.len(), 0);
}

#[test]
fn limits_early_drop_unreplied_then_refuse() {
    let t = Tracker::new(TrackerConfig {
        max_conns: 4,
        shards: 1,
        ..Default::default()
    });
    for i in 0..4 {
        let p = udp4("10.0.0.1", &format!("10.0.1.{i}"), 1000, 53);
        run(&t, &p, &commit(0));
    }
    assert_eq!(t.len(), 4);
    // Table full of unreplied entries: the 5th early-drops one.
    assert_eq!(
        run(&t, &udp4("10.0.0.1", "10.0.2.1", 1, 2), &commit(0)),
        st("new|trk")
    );
    assert_eq!(t.len(), 4);
    assert_eq!(t.counters().early_drops, 1);
    // Make all replied: nothing can be early-dropped, the next is refused.
    for d in t.dump(&FlushFilter::default(), T0) {
        let r = udp4(
            &d.reply.src_ip().to_string(),
            &d.reply.dst_ip().to_string(),
            d.reply.src_port,
            d.reply.dst_port,
        );
        run(&t, &r, &commit(0));
    }
    assert_eq!(
        run(&t, &udp4("10.0.0.1", "10.0.3.1", 1, 2), &commit(0)),
        st("inv|trk")
    );
    assert_eq!(t.counters().refused, 1);
    assert_eq!(t.len(), 4);
    // Uncommitted traffic is unaffected by the limit.
    assert_eq!(
        run(&t, &udp4("10.0.0.1", "10.0.3.1", 1, 2), &nocommit(0)),
        st("new|trk")
    );
}

#[test]
fn zone_limit_counts_only_its_zone() {
    let t = Tracker::default();
    t.zones.set_limit(Zone(7), 2);
    for i in 0..2 {
        run(
            &t,
            &udp4("10.0.0.1", &format!("10.0.1.{i}"), 1000, 53),
            &commit(7),
        );
        let r = udp4(&format!("10.0.1.{i}"), "10.0.0.1", 53, 1000);
        run(&t, &r, &commit(7));
    }
    assert_eq!(
        run(&t, &udp4("10.0.0.1", "10.0.9.9", 1, 2), &commit(7)),
        st("inv|trk")
    );
    assert_eq!(
        run(&t, &udp4("10.0.0.1", "10.0.9.9", 1, 2), &commit(8)),
        st("new|trk")
    );
    assert_eq!(t.zones.count(Zone(7)), 2);
}

#[test]
fn flush_filters() {
    let t = Tracker::default();
    // zone 1: 10 UDP unreplied, 10 UDP replied (mark 1); zone 2: 5 TCP.
    for i in 0..10 {
        run(
            &t,
            &udp4("10.1.0.1", &format!("10.2.0.{i}"), 1000, 53),
            &commit(1),
        );
        let p = udp4("10.1.0.2", &format!("10.3.0.{i}"), 2000, 53);
        run(
            &t,
            &p,
            &CtParams {
                mark: Some((1, 1)),
                ..commit(1)
            },
        );
        run(
            &t,
            &udp4(&format!("10.3.0.{i}"), "10.1.0.2", 53, 2000),
            &commit(1),
        );
    }
    for i in 0..5 {
        run(
            &t,
            &tcp4(
                "10.1.0.1",
                &format!("10.4.0.{i}"),
                3000,
                80,
                1,
                0,
                SYN,
                1000,
                0,
            ),
            &commit(2),
        );
    }
    assert_eq!(t.len(), 25);
    let unreplied_udp = FlushFilter {
        zone: Some(Zone(1)),
        proto: Some(17),
        state: StateClass::Unreplied,
        ..Default::default()
    };
    assert_eq!(t.dump(&unreplied_udp, T0).len(), 10);
    let by_reply = FlushFilter {
        reply: TupleFilter {
            src: Some(Cidr::parse("10.3.0.0/29").unwrap()),
            ..Default::default()
        },
        ..Default::default()
    };
    assert_eq!(t.flush(&by_reply, T0), 8);
    let by_mark = FlushFilter {
        mark: Some((1, 1)),
        ..Default::default()
    };
    assert_eq!(t.flush(&by_mark, T0), 2);
    let by_orig = FlushFilter {
        orig: TupleFilter {
            dst_port: Some(80),
            ..Default::default()
        },
        ..Default::default()
    };
    assert_eq!(t.flush(&by_orig, T0), 5);
    assert_eq!(t.flush(&unreplied_udp, T0), 10);
    assert_eq!(t.len(), 0);
    assert_eq!(t.flush(&FlushFilter::default(), T0), 0);
}

#[derive(Default)]
struct Sink(Mutex<Vec<ConnEvent>>);
impl EventSink for Sink {
    fn deliver(&self, ev: &ConnEvent) -> bool {
        self.0.lock().unwrap().push(ev.clone());
        true
    }
}

#[test]
fn lifecycle_events_carry_tuples_and_counters() {
    let t = Tracker::default();
    let sink = Arc::new(Sink::default());
    t.subscribe(sink.clone());
    let p = udp4("10.0.0.1", "10.0.0.2", 1000, 53);
    let r = udp4("10.0.0.2", "10.0.0.1", 53, 1000);
    run_at(&t, &p, &commit(9), T0);
    run_at(&t, &r, &commit(9), T0);
    run_at(&t, &r, &commit(9), T0); // no change → no event
    t.flush(&FlushFilter::default(), T0 + 5 * S);
    let evs = sink.0.lock().unwrap().clone();
    let kinds: Vec<EventKind> = evs.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![EventKind::New, EventKind::Update, EventKind::Destroy]
    );
    let d = &evs[2];
    assert_eq!(d.conn.zone, Zone(9));
    assert_eq!(d.conn.counters[0].packets, 1);
    assert_eq!(d.conn.counters[1].packets, 2);
    assert_eq!(d.conn.counters[0].bytes, p.len() as u64);
    assert_eq!((d.conn.start_ns, d.end_ns), (T0, Some(T0 + 5 * S)));
    assert_eq!(d.conn.reply, d.conn.orig.reverse());
}

#[test]
fn expected_connection_is_related() {
    let t = Tracker::default();
    let data = udp4("10.0.0.2", "10.0.0.1", 20, 5001);
    let key = ConnKey::v4(
        Zone(0),
        "10.0.0.2".parse().unwrap(),
        "10.0.0.1".parse().unwrap(),
        17,
        0,
        5001,
    );
    let master = ConnKey::v4(
        Zone(0),
        "10.0.0.1".parse().unwrap(),
        "10.0.0.2".parse().unwrap(),
        6,
        4000,
        21,
    );
    t.expectations
        .add(
            Expectation {
                key: ExpectKey::of(&key),
                master,
                helper: "ftp",
                expire: 2000,
                nat: None,
            },
            ct::expect::MAX_PER_MASTER,
        )
        .unwrap();
    assert_eq!(
        run(&t, &data, &nocommit(0)),
        st("new|rel|trk"),
        "peek does not consume"
    );
    assert_eq!(run(&t, &data, &commit(0)), st("new|rel|trk"));
    let back = udp4("10.0.0.1", "10.0.0.2", 5001, 20);
    assert_eq!(run(&t, &back, &commit(0)), st("est|rel|rpl|trk"));
    assert!(t.expectations.is_empty(), "one-shot");
    let other_zone = udp4("10.0.0.2", "10.0.0.1", 20, 5002);
    assert_eq!(run(&t, &other_zone, &commit(0)), st("new|trk"));
}

#[test]
fn two_threads_share_one_table() {
    let t = Tracker::default();
    std::thread::scope(|s| {
        for th in 0..2u16 {
            let t = &t;
            s.spawn(move || {
                for i in 0..2000u32 {
                    let src = format!("10.{th}.{}.{}", i >> 8, i & 255);
                    run(t, &udp4(&src, "10.9.9.9", 1000, 53), &commit(th));
                    run(t, &udp4("10.9.9.9", &src, 53, 1000), &commit(th));
                }
            });
        }
    });
    assert_eq!(t.len(), 4000);
    assert_eq!(t.zones.count(Zone(0)), 2000);
    assert_eq!(t.zones.count(Zone(1)), 2000);
    let counts = t.counts();
    assert_eq!(counts.by_zone[&0]["udp"], 2000);
    assert!(t
        .dump(&FlushFilter::default(), T0)
        .iter()
        .all(|d| d.status.contains(ct::conn::ConnStatus::SEEN_REPLY)));
}

#[test]
fn dump_json_is_valid() {
    let t = Tracker::default();
    run(
        &t,
        &udp4("10.0.0.1", "10.0.0.2", 1000, 53),
        &CtParams {
            mark: Some((5, !0)),
            ..commit(2)
        },
    );
    let d = t.dump(&FlushFilter::default(), T0);
    let v: serde_json::Value = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
    assert_eq!(v[0]["proto"], "udp");
    assert_eq!(v[0]["orig"]["dport"], 53);
    assert_eq!(v[0]["zone"], 2);
    assert_eq!(v[0]["mark"], 5);
}

#[test]
fn batches_spanning_many_shards_keep_packet_order() {
    // 8192 shards takes the sort path of batch locking; 1024 the bitmap.
    for shards in [1, 1024, 8192] {
        let t = Tracker::new(TrackerConfig {
            shards,
            ..Default::default()
        });
        let mut batch = Vec::new();
        for i in 0..16u8 {
            let a = format!("10.0.{i}.1");
            batch.push(udp4(&a, "10.9.0.1", 1000, 53));
            batch.push(udp4("10.9.0.1", &a, 53, 1000));
        }
        let pkts: Vec<CtPacket> = batch
            .iter()
            .map(|l3| CtPacket {
                l3,
                family: Family::Ipv4,
                flags: PktFlags::empty(),
            })
            .collect();
        let mut out = vec![CtResult::default(); pkts.len()];
        t.execute(&pkts, &commit(0), T0, &mut out);
        for (i, r) in out.iter().enumerate() {
            let want = if i % 2 == 0 {
                st("new|trk")
            } else {
                st("est|rpl|trk")
            };
            assert_eq!(r.state, want, "shards={shards} packet {i}");
        }
        assert_eq!(t.len(), 16);
        // Same batch again: all established now.
        t.execute(&pkts, &commit(0), T0, &mut out);
        assert!(
            out.iter().all(|r| r.state.contains(CtState::EST)),
            "shards={shards}"
        );
    }
}

#[test]
fn two_threads_on_the_same_connections_lose_no_update() {
    // Both threads send batches over the same 16 connections, so their
    // batches want the same shards at the same time: busy shards are
    // deferred, never skipped.
    let t = Tracker::new(TrackerConfig {
        shards: 8,
        ..Default::default()
    });
    let mut batch = Vec::new();
    for i in 0..16u8 {
        let a = format!("10.1.{i}.1");
        batch.push(udp4(&a, "10.9.0.1", 1000, 53));
        batch.push(udp4("10.9.0.1", &a, 53, 1000));
    }
    let rounds = 3000u64;
    std::thread::scope(|s| {
        for _ in 0..2 {
            let (t, batch) = (&t, &batch);
            s.spawn(move || {
                let pkts: Vec<CtPacket> = batch
                    .iter()
                    .map(|l3| CtPacket {
                        l3,
                        family: Family::Ipv4,
                        flags: PktFlags::empty(),
                    })
                    .collect();
                let mut out = vec![CtResult::default(); pkts.len()];
                for _ in 0..rounds {
                    t.execute(&pkts, &commit(0), T0, &mut out);
                    assert!(
                        out.iter()
                            .all(|r| r.state.contains(CtState::TRK)
                                && !r.state.contains(CtState::INV))
                    );
                }
            });
        }
    });
    let dump = t.dump(&FlushFilter::default(), T0);
    assert_eq!(dump.len(), 16);
    for d in dump {
        assert_eq!(
            d.counters[0].packets + d.counters[1].packets,
            2 * 2 * rounds,
            "{d}"
        );
    }
}
