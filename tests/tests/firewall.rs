//! The stateful firewall through the whole switch: extraction, caches,
//! translation, conntrack, recirculation, output.

use ct::packet::tcp_flags::{ACK, PSH, SYN};
use ferrovs_tests::{frame, Builder, Harness, Tcp, FIREWALL};

fn inside() -> Builder {
    Builder::v4("10.0.0.1".parse().unwrap(), "192.0.2.9".parse().unwrap())
}

fn outside() -> Builder {
    inside().reversed()
}

#[test]
fn tcp_connection_from_inside_is_admitted_both_ways() {
    let mut h = Harness::new(&[1, 2], FIREWALL);
    let syn = frame(
        1,
        2,
        &inside().tcp(&Tcp::new(40000, 80).flags(SYN).seq(100).win(64000)),
    );
    assert_eq!(
        Harness::ports_of(&h.inject(1, &syn)),
        vec![2],
        "SYN goes out"
    );
    let synack = frame(
        2,
        1,
        &outside().tcp(
            &Tcp::new(80, 40000)
                .flags(SYN | ACK)
                .seq(5000)
                .ack(101)
                .win(64000),
        ),
    );
    assert_eq!(
        Harness::ports_of(&h.inject(2, &synack)),
        vec![1],
        "SYN-ACK admitted"
    );
    let ack = frame(
        1,
        2,
        &inside().tcp(&Tcp::new(40000, 80).flags(ACK).seq(101).ack(5001).win(64000)),
    );
    assert_eq!(Harness::ports_of(&h.inject(1, &ack)), vec![2]);
    let data = frame(
        2,
        1,
        &outside().tcp(
            &Tcp::new(80, 40000)
                .flags(ACK | PSH)
                .seq(5001)
                .ack(101)
                .win(64000)
                .payload(b"hello"),
        ),
    );
    let out = h.inject(2, &data);
    assert_eq!(Harness::ports_of(&out), vec![1]);
    assert_eq!(out[0].1, data, "forwarded unchanged");

    let ct = h.dump_conntrack();
    assert_eq!(ct.len(), 1, "{ct:?}");
    assert!(
        ct[0].starts_with("tcp,orig=(src=10.0.0.1,dst=192.0.2.9,sport=40000,dport=80)"),
        "{}",
        ct[0]
    );
    assert!(ct[0].contains("zone=1"), "{}", ct[0]);
    assert!(ct[0].contains("ESTABLISHED"), "{}", ct[0]);
}

#[test]
fn connections_from_outside_are_blocked() {
    let mut h = Harness::new(&[1, 2], FIREWALL);
    let syn = frame(
        2,
        1,
        &outside().tcp(&Tcp::new(80, 40000).flags(SYN).seq(1).win(1000)),
    );
    assert!(h.inject(2, &syn).is_empty(), "unsolicited SYN dropped");
    let udp = frame(2, 1, &outside().udp(53, 5353, b"x"));
    assert!(h.inject(2, &udp).is_empty(), "unsolicited UDP dropped");
    assert!(
        h.dump_conntrack().is_empty(),
        "nothing committed from outside"
    );
    // Once the inside opens the UDP flow, the reply gets through.
    let req = frame(1, 2, &inside().udp(5353, 53, b"q"));
    assert_eq!(Harness::ports_of(&h.inject(1, &req)), vec![2]);
    assert_eq!(Harness::ports_of(&h.inject(2, &udp)), vec![1]);
    assert_eq!(h.pipeline.counters.dropped_by_flow, 2);
}

#[test]
fn out_of_window_injection_is_invalid_and_dropped() {
    let mut h = Harness::new(&[1, 2], FIREWALL);
    let c = Tcp::new(40000, 80);
    let s = Tcp::new(80, 40000);
    h.inject(
        1,
        &frame(
            1,
            2,
            &inside().tcp(&c.clone().flags(SYN).seq(100).win(1000)),
        ),
    );
    h.inject(
        2,
        &frame(
            2,
            1,
            &outside().tcp(&s.clone().flags(SYN | ACK).seq(5000).ack(101).win(1000)),
        ),
    );
    h.inject(
        1,
        &frame(
            1,
            2,
            &inside().tcp(&c.clone().flags(ACK).seq(101).ack(5001).win(1000)),
        ),
    );
    // Data far outside the window the inside host advertised.
    let bad = frame(
        2,
        1,
        &outside().tcp(
            &s.clone()
                .flags(ACK)
                .seq(5001 + 10_000_000)
                .ack(101)
                .win(1000)
                .payload(b"evil"),
        ),
    );
    assert!(
        h.inject(2, &bad).is_empty(),
        "out-of-window segment dropped"
    );
    let good = frame(
        2,
        1,
        &outside().tcp(&s.flags(ACK).seq(5001).ack(101).win(1000).payload(b"ok")),
    );
    assert_eq!(
        Harness::ports_of(&h.inject(2, &good)),
        vec![1],
        "in-window data still admitted"
    );
}

#[test]
fn rule_counters_follow_the_traffic() {
    let mut h = Harness::new(&[1, 2], FIREWALL);
    for i in 0..10u16 {
        h.inject(1, &frame(1, 2, &inside().udp(1000 + i, 53, b"q")));
    }
    for i in 0..10u16 {
        h.inject(2, &frame(2, 1, &outside().udp(53, 1000 + i, b"r")));
    }
    let flows = h.dump_flows();
    let line = |needle: &str| {
        flows
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} not in\n{flows}"))
            .to_string()
    };
    assert!(line("in_port=1").contains("n_packets=10"), "{flows}");
    assert!(line("in_port=2").contains("n_packets=10"), "{flows}");
    assert!(
        line("ct(commit,zone=1)").contains("n_packets=10"),
        "{flows}"
    );
    assert!(line("table=2").contains("n_packets=10"), "{flows}");
}

#[test]
fn icmp_error_for_a_tracked_flow_is_related_and_admitted() {
    let flows =
        format!("{FIREWALL}table=2,priority=10,ct_state=+trk+rel-inv,ip,actions=output:1\n");
    let mut h = Harness::new(&[1, 2], &flows);
    let req = inside().udp(5353, 53, b"q");
    h.inject(1, &frame(1, 2, &req));
    let err = Builder::v4("198.51.100.1".parse().unwrap(), "10.0.0.1".parse().unwrap())
        .icmp_error(3, 3, &req);
    assert_eq!(Harness::ports_of(&h.inject(2, &frame(2, 1, &err))), vec![1]);
    // An ICMP error about a flow nobody opened is dropped.
    let other = inside().udp(7777, 53, b"q");
    let err2 = Builder::v4("198.51.100.1".parse().unwrap(), "10.0.0.1".parse().unwrap())
        .icmp_error(3, 3, &other);
    assert!(h.inject(2, &frame(2, 1, &err2)).is_empty());
}
