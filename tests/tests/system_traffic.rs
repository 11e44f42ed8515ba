//! Real-traffic conformance suite (needs root): network namespaces joined
//! through a real `ferrovsd` with AF_PACKET ports (harness:
//! `ferrovs_tests::netns`, whose docs also hold the flows of the NAT and
//! ALG scenarios; FTP through SNAT is `ftp_active_and_passive_through_snat_root`).
//!
//! Every test asserts on what the clients actually received (bytes, exit
//! status, ECONNREFUSED, ping loss) and on `ferrovs-ctl dump-conntrack
//! --json` (entries present or absent, zone, mark, labels, state).
//! Without root the tests print SKIP and pass, unless
//! `FERROVS_REQUIRE_ROOT=1` (scripts/test.sh as root), where they fail.
#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use ferrovs_tests::netns::{python, wait_until, CtEntry, Host, Lab, Proc};

const SHORT: Duration = Duration::from_millis(800);
const LONG: Duration = Duration::from_secs(5);

/// Two hosts, `a` on port 1 may open connections to `b` on port 2
/// (committed in zone 1); `b`'s traffic passes only when `+est`.
const FIREWALL: &str = "\
table=0,priority=10,arp,in_port=1,actions=output:2
table=0,priority=10,arp,in_port=2,actions=output:1
table=0,priority=10,ip,in_port=1,actions=ct(table=1,zone=1)
table=0,priority=10,ip,in_port=2,actions=ct(table=2,zone=1)
table=1,priority=10,ip,ct_state=+trk+new-inv,actions=ct(commit,zone=1),output:2
table=1,priority=10,ip,ct_state=+trk+est-inv,actions=output:2
table=2,priority=10,ip,ct_state=+trk+est-inv,actions=output:1
";

fn show(entries: &[CtEntry]) -> String {
    entries
        .iter()
        .map(|e| format!("{e:?}\n"))
        .collect::<String>()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn ping_through_stateful_firewall_root() {
    let Some(mut lab) = Lab::new("ping", &["ping"]) else {
        return;
    };
    let a = lab.host("a", &["10.1.0.1/24"]);
    let b = lab.host("b", &["10.1.0.2/24"]);
    lab.start(FIREWALL);

    let out = a.run(
        "ping",
        &["-c", "3", "-i", "0.2", "-W", "2", "10.1.0.2"],
        LONG * 2,
    );
    let o = text(&out.stdout);
    assert!(out.status.success(), "ping a->b failed:\n{o}");
    assert!(
        o.contains("3 received") && o.contains(" 0% packet loss"),
        "{o}"
    );

    // b may not open anything towards a: its echo requests are +new,
    // dropped before they reach a's stack.
    let a_in = a.ip_in_receives();
    let out = b.run(
        "ping",
        &["-c", "2", "-i", "0.2", "-W", "1", "10.1.0.1"],
        LONG,
    );
    let o = text(&out.stdout);
    assert!(!out.status.success(), "ping b->a passed the firewall:\n{o}");
    assert!(
        o.contains("0 received") && o.contains("100% packet loss"),
        "{o}"
    );
    assert_eq!(a.ip_in_receives(), a_in, "b's echo requests reached a");

    let ct = lab.conntrack(&["zone=1"]);
    assert_eq!(ct.len(), 1, "one ICMP connection expected:\n{}", show(&ct));
    let e = &ct[0];
    assert_eq!(e.proto, "icmp");
    assert_eq!(
        (e.orig.src.as_str(), e.orig.dst.as_str()),
        ("10.1.0.1", "10.1.0.2")
    );
    assert_eq!(
        (e.reply.src.as_str(), e.reply.dst.as_str()),
        ("10.1.0.2", "10.1.0.1")
    );
    assert_eq!((e.orig.r#type, e.reply.r#type), (Some(8), Some(0)));
    assert_eq!(e.zone, 1);
    assert!(e.seen_reply, "{e:?}");
    // Nothing in any other zone, and nothing from b.
    let all = lab.conntrack(&[]);
    assert_eq!(all.len(), 1, "{}", show(&all));
}

#[test]
fn tcp_allowed_one_way_refused_the_other_root() {
    let Some(mut lab) = Lab::new("tcp", &["curl"]) else {
        return;
    };
    let a = lab.host("a", &["10.1.0.1/24"]);
    let b = lab.host("b", &["10.1.0.2/24"]);
    lab.start(FIREWALL);

    // A real HTTP server in b, a real client in a.
    let www = lab.dir().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let blob: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    std::fs::write(www.join("blob"), &blob).unwrap();
    let www_s = www.to_str().unwrap();
    let server = b.spawn(
        python(),
        &[
            "-u",
            "-m",
            "http.server",
            "8080",
            "--bind",
            "10.1.0.2",
            "--directory",
            www_s,
        ],
    );
    server
        .wait_for_line("Serving HTTP", LONG)
        .expect("http.server started");
    let got = lab.dir().join("got");
    let out = a.run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            "-o",
            got.to_str().unwrap(),
            "http://10.1.0.2:8080/blob",
        ],
        LONG * 3,
    );
    assert!(out.status.success(), "curl a->b: {}", text(&out.stderr));
    let received = std::fs::read(&got).unwrap();
    assert_eq!(received.len(), blob.len());
    assert!(received == blob, "the downloaded file differs");

    // b -> a: a listens, b's SYNs are +new from port 2 and dropped, so
    // curl times out (exit 28), not refused (7: a RST would have come back).
    let mut aa = a.agent();
    aa.tcp_listen("l", "10.1.0.1", 9000);
    let a_in = a.ip_in_receives();
    let out = b.run(
        "curl",
        &["-sS", "--connect-timeout", "1.5", "http://10.1.0.1:9000/"],
        LONG,
    );
    assert_eq!(
        out.status.code(),
        Some(28),
        "curl b->a: {}",
        text(&out.stderr)
    );
    assert_eq!(aa.tcp_accept("c", "l", SHORT), Err("timeout".to_string()));
    assert_eq!(a.ip_in_receives(), a_in, "b's SYNs reached a");

    // The connection a->b ran its whole course: both FINs seen.
    let mut ct = Vec::new();
    let closed = wait_until(LONG, || {
        ct = lab.conntrack(&["zone=1"]);
        ct.iter().any(|e| e.state.as_deref() == Some("TIME_WAIT"))
    });
    assert!(closed, "no TIME_WAIT entry:\n{}", show(&ct));
    assert_eq!(ct.len(), 1, "{}", show(&ct));
    let e = &ct[0];
    assert_eq!(e.proto, "tcp");
    assert_eq!(
        (e.orig.src.as_str(), e.orig.dst.as_str()),
        ("10.1.0.1", "10.1.0.2")
    );
    assert_eq!(e.orig.dport, Some(8080));
    assert!(e.seen_reply && e.assured, "{e:?}");
    assert!(
        !lab.conntrack(&[])
            .iter()
            .any(|e| e.orig.dport == Some(9000)),
        "the refused connection was committed"
    );
}

#[test]
fn udp_request_response_root() {
    let Some(mut lab) = Lab::new("udp", &[]) else {
        return;
    };
    let a = lab.host("a", &["10.1.0.1/24"]);
    let b = lab.host("b", &["10.1.0.2/24"]);
    lab.start(FIREWALL);
    let (mut aa, mut ba) = (a.agent(), b.agent());
    ba.udp_echo_server("10.1.0.2", 7000, "echo:");

    let sport = aa.udp_socket("u", Some(("10.1.0.1", 0)), None);
    for i in 0..3 {
        let msg = format!("request {i}");
        aa.udp_send("u", &msg, Some(("10.1.0.2", 7000)));
        let (data, ip, port) = aa.udp_recv("u", LONG).expect("echo reply");
        assert_eq!(data, format!("echo:{msg}"));
        assert_eq!((ip.as_str(), port), ("10.1.0.2", 7000));
    }

    // b -> a (a new flow from port 2) never reaches a's bound socket.
    aa.udp_socket("srv", Some(("10.1.0.1", 7001)), None);
    ba.udp_socket("c", None, None);
    ba.udp_send("c", "unsolicited", Some(("10.1.0.1", 7001)));
    assert_eq!(aa.udp_recv("srv", SHORT), Err("timeout".to_string()));

    let ct = lab.conntrack(&["zone=1"]);
    assert_eq!(ct.len(), 1, "{}", show(&ct));
    let e = &ct[0];
    assert_eq!(e.proto, "udp");
    assert_eq!(e.orig.src, "10.1.0.1");
    assert_eq!((e.orig.sport, e.orig.dport), (Some(sport), Some(7000)));
    assert_eq!((e.reply.sport, e.reply.dport), (Some(7000), Some(sport)));
    assert!(e.seen_reply, "{e:?}");
}

#[test]
fn icmp_port_unreachable_is_related_root() {
    let Some(mut lab) = Lab::new("icmprel", &[]) else {
        return;
    };
    let a = lab.host("a", &["10.1.0.1/24"]);
    let _b = lab.host("b", &["10.1.0.2/24"]);
    lab.start(FIREWALL);
    let mut aa = a.agent();

    // Without a +rel rule b's port unreachable is dropped: a hears nothing.
    aa.udp_socket("u1", None, Some(("10.1.0.2", 9999)));
    aa.udp_send("u1", "anyone?", None);
    assert_eq!(aa.udp_recv("u1", SHORT), Err("timeout".to_string()));

    // Admit related traffic: the ICMP error now reaches a's socket.
    lab.add_flows("table=2,priority=10,ip,ct_state=+trk+rel-inv,actions=output:1\n");
    let sport = aa.udp_socket("u2", None, Some(("10.1.0.2", 9999)));
    aa.udp_send("u2", "anyone?", None);
    assert_eq!(aa.udp_recv("u2", LONG), Err("ECONNREFUSED".to_string()));
    assert_eq!(
        lab.flow_packets_settled(&["table=2", "ct_state=+rel"], 1),
        1,
        "the ICMP error went through the +rel rule"
    );

    // The UDP connections are committed, unreplied (an ICMP error is not a
    // reply), and the error created no connection of its own.
    let ct = lab.conntrack(&["zone=1"]);
    assert_eq!(ct.len(), 2, "{}", show(&ct));
    assert!(ct
        .iter()
        .all(|e| e.proto == "udp" && e.orig.dport == Some(9999)));
    assert!(ct.iter().any(|e| e.orig.sport == Some(sport)));
    assert!(ct.iter().all(|e| !e.seen_reply), "{}", show(&ct));
}

/// Two tenants with the same addresses: tenant 1 on ports 1 (a) and 2 (b)
/// in zone 1, tenant 2 on ports 3 and 4 in zone 2.
const TENANTS: &str = "\
table=0,priority=10,arp,in_port=1,actions=output:2
table=0,priority=10,arp,in_port=2,actions=output:1
table=0,priority=10,arp,in_port=3,actions=output:4
table=0,priority=10,arp,in_port=4,actions=output:3
table=0,priority=10,ip,in_port=1,actions=ct(table=1,zone=1)
table=0,priority=10,ip,in_port=2,actions=ct(table=2,zone=1)
table=0,priority=10,ip,in_port=3,actions=ct(table=3,zone=2)
table=0,priority=10,ip,in_port=4,actions=ct(table=4,zone=2)
table=1,priority=10,ip,ct_state=+trk+new-inv,actions=ct(commit,zone=1),output:2
table=1,priority=10,ip,ct_state=+trk+est-inv,actions=output:2
table=2,priority=10,ip,ct_state=+trk+est-inv,actions=output:1
table=3,priority=10,ip,ct_state=+trk+new-inv,actions=ct(commit,zone=2),output:4
table=3,priority=10,ip,ct_state=+trk+est-inv,actions=output:4
table=4,priority=10,ip,ct_state=+trk+est-inv,actions=output:3
";

#[test]
fn overlapping_tenants_in_zones_root() {
    let Some(mut lab) = Lab::new("tenants", &[]) else {
        return;
    };
    let a1 = lab.host("a1", &["10.1.0.1/24"]);
    let b1 = lab.host("b1", &["10.1.0.2/24"]);
    let a2 = lab.host("a2", &["10.1.0.1/24"]);
    let b2 = lab.host("b2", &["10.1.0.2/24"]);
    lab.start(TENANTS);
    let (mut a1a, mut b1a, mut a2a, mut b2a) = (a1.agent(), b1.agent(), a2.agent(), b2.agent());
    b1a.tcp_echo_server("10.1.0.2", 80, "tenant1:");
    b2a.tcp_echo_server("10.1.0.2", 80, "tenant2:");
    b1a.udp_echo_server("10.1.0.2", 53, "t1:");
    b2a.udp_echo_server("10.1.0.2", 53, "t2:");

    // The very same 5-tuples in both tenants, at the same time.
    for (ag, who) in [(&mut a1a, "tenant1:"), (&mut a2a, "tenant2:")] {
        ag.tcp_connect("t", "10.1.0.2", 80, Some(40000), LONG)
            .expect("connect");
        ag.tcp_send("t", "hello");
        assert_eq!(
            ag.tcp_recv("t", who.len() + 5, LONG).unwrap(),
            format!("{who}hello")
        );
        ag.udp_socket("u", Some(("10.1.0.1", 40000)), None);
        ag.udp_send("u", "q", Some(("10.1.0.2", 53)));
    }
    assert_eq!(a1a.udp_recv("u", LONG).unwrap().0, "t1:q");
    assert_eq!(a2a.udp_recv("u", LONG).unwrap().0, "t2:q");

    for zone in [1u16, 2] {
        let ct = lab.conntrack(&[&format!("zone={zone}")]);
        assert_eq!(ct.len(), 2, "zone {zone}:\n{}", show(&ct));
        for proto in ["tcp", "udp"] {
            let e = ct.iter().find(|e| e.proto == proto).expect(proto);
            assert_eq!(e.zone, zone);
            assert_eq!(
                (e.orig.src.as_str(), e.orig.dst.as_str()),
                ("10.1.0.1", "10.1.0.2")
            );
            assert_eq!(e.orig.sport, Some(40000));
            assert!(e.seen_reply, "{e:?}");
        }
    }

    // Zone isolation: b2 sends on the reply tuple of tenant 1's UDP flow.
    // In zone 2 that is a new flow from the server side: dropped. The same
    // datagram from b1 is +est in zone 1 and arrives (the control).
    // The flow a1:40001 -> b1:7 exists in zone 1 only.
    b2a.udp_socket("x", Some(("10.1.0.2", 7)), None);
    b1a.udp_socket("x", Some(("10.1.0.2", 7)), None);
    a1a.udp_socket("v", Some(("10.1.0.1", 40001)), None);
    a1a.udp_send("v", "open", Some(("10.1.0.2", 7)));
    b1a.udp_recv("x", LONG).expect("b1 got a1's datagram");
    a2a.udp_socket("v", Some(("10.1.0.1", 40001)), None);
    b2a.udp_send("x", "cross-tenant", Some(("10.1.0.1", 40001)));
    assert_eq!(a2a.udp_recv("v", SHORT), Err("timeout".to_string()));
    b1a.udp_send("x", "same-tenant", Some(("10.1.0.1", 40001)));
    assert_eq!(a1a.udp_recv("v", LONG).unwrap().0, "same-tenant");
    assert_eq!(lab.conntrack(&["zone=1"]).len(), 3);
    assert_eq!(lab.conntrack(&["zone=2"]).len(), 2);
}

#[test]
fn notrack_udp_53_leaves_no_entry_root() {
    let Some(mut lab) = Lab::new("notrack", &[]) else {
        return;
    };
    let a = lab.host("a", &["10.1.0.1/24"]);
    let b = lab.host("b", &["10.1.0.2/24"]);
    let flows = format!(
        "{FIREWALL}\
table=0,priority=20,udp,in_port=1,tp_dst=53,actions=notrack,ct(table=1,zone=1)
table=0,priority=20,udp,in_port=2,tp_src=53,actions=notrack,ct(table=2,zone=1)
table=1,priority=20,ip,ct_state=+trk+untracked,actions=output:2
table=2,priority=20,ip,ct_state=+trk+untracked,actions=output:1
"
    );
    lab.start(&flows);
    let (mut aa, mut ba) = (a.agent(), b.agent());
    ba.udp_echo_server("10.1.0.2", 53, "dns:");
    ba.udp_echo_server("10.1.0.2", 54, "other:");

    aa.udp_socket("d", None, None);
    aa.udp_send("d", "query", Some(("10.1.0.2", 53)));
    assert_eq!(aa.udp_recv("d", LONG).unwrap().0, "dns:query");
    // The control: the same exchange on port 54 is tracked.
    aa.udp_send("d", "query", Some(("10.1.0.2", 54)));
    assert_eq!(aa.udp_recv("d", LONG).unwrap().0, "other:query");

    let ct = lab.conntrack(&[]);
    assert_eq!(ct.len(), 1, "{}", show(&ct));
    assert_eq!(ct[0].orig.dport, Some(54));
    assert!(ct[0].seen_reply);
    // Both directions of the port 53 exchange went through the untracked rules.
    assert_eq!(lab.flow_packets_settled(&["table=1", "+untracked"], 1), 1);
    assert_eq!(lab.flow_packets_settled(&["table=2", "+untracked"], 1), 1);
}

#[test]
fn timeout_policy_expires_idle_udp_root() {
    let Some(mut lab) = Lab::new("timeout", &[]) else {
        return;
    };
    let a = lab.host("a", &["10.1.0.1/24"]);
    let b = lab.host("b", &["10.1.0.2/24"]);
    // Port 7000 is committed with a 2-second policy, the rest with the
    // defaults (30 s unreplied, 180 s replied... see ct::timeout).
    let flows = format!(
        "{FIREWALL}\
table=1,priority=20,udp,tp_dst=7000,ct_state=+trk+new-inv,actions=ct(commit,zone=1,timeout=short),output:2
"
    );
    lab.start(&flows);
    lab.ctl(&[
        "timeout-policy",
        "add",
        "short",
        "udp_first=2,udp_single=2,udp_multiple=2",
    ]);
    let (mut aa, mut ba) = (a.agent(), b.agent());
    ba.udp_socket("s", Some(("10.1.0.2", 7000)), None);
    ba.udp_socket("s2", Some(("10.1.0.2", 7001)), None);
    let p1 = aa.udp_socket("c", Some(("10.1.0.1", 0)), None);
    let p2 = aa.udp_socket("c2", Some(("10.1.0.1", 0)), None);
    aa.udp_send("c", "hi", Some(("10.1.0.2", 7000)));
    aa.udp_send("c2", "hi", Some(("10.1.0.2", 7001)));
    ba.udp_recv("s", LONG).expect("b got a's datagram");
    ba.udp_recv("s2", LONG).expect("b got a's datagram");
    // b answers: +est, delivered. The connection is idle from here.
    let last_packet = Instant::now();
    ba.udp_send("s", "reply", Some(("10.1.0.1", p1)));
    assert_eq!(aa.udp_recv("c", LONG).unwrap().0, "reply");

    let ct = lab.conntrack(&["zone=1"]);
    let short = ct
        .iter()
        .find(|e| e.orig.dport == Some(7000))
        .expect("7000");
    let long = ct
        .iter()
        .find(|e| e.orig.dport == Some(7001))
        .expect("7001");
    assert!(short.timeout <= 2, "{short:?}");
    assert!(long.timeout > 20, "{long:?}");

    // Idle: the short one expires, the default one stays.
    let gone = wait_until(Duration::from_secs(8), || {
        !lab.conntrack(&["zone=1"])
            .iter()
            .any(|e| e.orig.dport == Some(7000))
    });
    assert!(gone, "the 2 s connection did not expire");
    // Timeouts count whole seconds: 2 s means between 1 and 2 s of idleness.
    assert!(
        last_packet.elapsed() >= Duration::from_millis(1000),
        "expired too early: {:?}",
        last_packet.elapsed()
    );
    let ct = lab.conntrack(&["zone=1"]);
    assert_eq!(ct.len(), 1, "{}", show(&ct));
    assert_eq!(ct[0].orig.dport, Some(7001));

    // b's next datagram on the old tuple is +new from port 2: dropped.
    // On the surviving tuple it is +est: delivered.
    ba.udp_send("s", "late", Some(("10.1.0.1", p1)));
    assert_eq!(aa.udp_recv("c", SHORT), Err("timeout".to_string()));
    ba.udp_send("s2", "late", Some(("10.1.0.1", p2)));
    assert_eq!(aa.udp_recv("c2", LONG).unwrap().0, "late");
}

#[test]
fn ct_mark_and_label_set_on_commit_matched_later_root() {
    let Some(mut lab) = Lab::new("mark", &[]) else {
        return;
    };
    let a = lab.host("a", &["10.1.0.1/24"]);
    let b = lab.host("b", &["10.1.0.2/24"]);
    // Port 5000 connections are committed with mark 42 and a label with a
    // high and a low bit, port 5001 with mark 7. b's replies pass only with
    // mark 42 and that label; a's later packets are counted per mark.
    let flows = "\
table=0,priority=10,arp,in_port=1,actions=output:2
table=0,priority=10,arp,in_port=2,actions=output:1
table=0,priority=10,ip,in_port=1,actions=ct(table=1,zone=1)
table=0,priority=10,ip,in_port=2,actions=ct(table=2,zone=1)
table=1,priority=20,udp,tp_dst=5000,ct_state=+trk+new-inv,actions=ct(commit,zone=1,exec(set_field:42->ct_mark,set_field:0x80000000000000000000000000000005->ct_label)),output:2
table=1,priority=20,udp,tp_dst=5001,ct_state=+trk+new-inv,actions=ct(commit,zone=1,exec(set_field:7->ct_mark)),output:2
table=1,priority=10,ip,ct_state=+trk+est-inv,ct_mark=42,actions=output:2
table=1,priority=10,ip,ct_state=+trk+est-inv,ct_mark=7,actions=output:2
table=2,priority=10,ip,ct_state=+trk+est-inv,ct_mark=42,ct_label=0x80000000000000000000000000000005,actions=output:1
table=2,priority=5,ip,ct_state=+trk+est-inv,actions=drop
";
    lab.start(flows);
    let (mut aa, mut ba) = (a.agent(), b.agent());
    ba.udp_echo_server("10.1.0.2", 5000, "m42:");
    ba.udp_echo_server("10.1.0.2", 5001, "m7:");
    aa.udp_socket("x", None, Some(("10.1.0.2", 5000)));
    aa.udp_socket("y", None, Some(("10.1.0.2", 5001)));
    for i in 0..2 {
        aa.udp_send("x", &format!("x{i}"), None);
        assert_eq!(aa.udp_recv("x", LONG).unwrap().0, format!("m42:x{i}"));
        // Committed, +est on the second packet, but b's answers carry
        // mark 7: dropped by the priority 5 rule.
        aa.udp_send("y", &format!("y{i}"), None);
        assert_eq!(aa.udp_recv("y", SHORT), Err("timeout".to_string()));
    }
    assert_eq!(lab.flow_packets_settled(&["table=1", "ct_mark=0x2a"], 1), 1);
    assert_eq!(lab.flow_packets_settled(&["table=1", "ct_mark=0x7"], 1), 1);
    assert_eq!(lab.flow_packets_settled(&["table=2", "ct_label="], 2), 2);
    assert_eq!(lab.flow_packets_settled(&["table=2", "actions=drop"], 2), 2);

    let ct = lab.conntrack(&["zone=1"]);
    assert_eq!(ct.len(), 2, "{}", show(&ct));
    let x = ct
        .iter()
        .find(|e| e.orig.dport == Some(5000))
        .expect("5000");
    let y = ct
        .iter()
        .find(|e| e.orig.dport == Some(5001))
        .expect("5001");
    assert_eq!(x.mark, 42);
    assert_eq!(x.label(), (1u128 << 127) | 5);
    assert_eq!(y.mark, 7);
    assert_eq!(y.label(), 0);
    assert!(x.seen_reply && y.seen_reply, "{}", show(&ct));
    // The dump filter on mark agrees.
    let m = lab.conntrack(&["zone=1", "mark=42"]);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].orig.dport, Some(5000));
}

#[test]
fn tcp_window_violation_is_dropped_as_invalid_root() {
    let Some(mut lab) = Lab::new("window", &["py:scapy"]) else {
        return;
    };
    let a = lab.host("a", &["10.1.0.1/24"]);
    let b = lab.host("b", &["10.1.0.2/24"]);
    let flows = format!(
        "{FIREWALL}\
table=1,priority=30,ct_state=+trk+inv,actions=drop
table=2,priority=30,ct_state=+trk+inv,actions=drop
"
    );
    lab.start(&flows);
    let (mut aa, mut ba) = (a.agent(), b.agent());
    ba.tcp_echo_server("10.1.0.2", 8000, "");
    ba.sniff("evil", "eth0", "EVIL-SEGMENT");
    ba.sniff("good", "eth0", "GOOD-SEGMENT");

    aa.tcp_connect("t", "10.1.0.2", 8000, None, LONG)
        .expect("connect");
    aa.tcp_send("t", "GOOD-SEGMENT 1");
    assert_eq!(aa.tcp_recv("t", 14, LONG).unwrap(), "GOOD-SEGMENT 1");

    let r = aa
        .request(
            serde_json::json!({"op": "tcp_inject_out_of_window", "id": "t",
            "iface": "eth0", "src_mac": a.mac_str(), "dst_mac": b.mac_str(),
            "data": "EVIL-SEGMENT"}),
        )
        .expect("scapy injection");
    assert!(r["seq"].as_u64().is_some(), "{r}");
    // Exactly the injected segment was invalid (the real traffic never).
    assert_eq!(
        lab.flow_packets_settled(&["table=1", "+inv"], 1),
        1,
        "the out-of-window segment hits the +inv rule"
    );

    // The real connection goes on.
    aa.tcp_send("t", "GOOD-SEGMENT 2");
    assert_eq!(aa.tcp_recv("t", 14, LONG).unwrap(), "GOOD-SEGMENT 2");
    assert_eq!(ba.sniff_count("evil"), 0, "the invalid segment reached b");
    assert!(
        ba.sniff_count("good") >= 4,
        "b's sniffer saw the real traffic"
    );

    let ct = lab.conntrack(&["zone=1"]);
    assert_eq!(ct.len(), 1, "{}", show(&ct));
    assert_eq!(ct[0].state.as_deref(), Some("ESTABLISHED"));
    assert_eq!(ct[0].orig.dport, Some(8000));
    let stats = lab.ctl_json(&["ct-stats-show"]);
    assert!(
        stats["counters"]["invalid"].as_u64().unwrap_or(0) >= 1,
        "{stats}"
    );
}

#[test]
fn flush_of_one_zone_leaves_the_other_working_root() {
    let Some(mut lab) = Lab::new("flush", &[]) else {
        return;
    };
    let a1 = lab.host("a1", &["10.1.0.1/24"]);
    let b1 = lab.host("b1", &["10.1.0.2/24"]);
    let a2 = lab.host("a2", &["10.1.0.1/24"]);
    let b2 = lab.host("b2", &["10.1.0.2/24"]);
    lab.start(TENANTS);
    let mut ag = [a1.agent(), b1.agent(), a2.agent(), b2.agent()];
    // Each tenant: a TCP connection a->b and a UDP flow a->b.
    for t in [0, 2] {
        ag[t + 1].tcp_echo_server("10.1.0.2", 80, "");
        ag[t + 1].udp_socket("s", Some(("10.1.0.2", 7000)), None);
        ag[t]
            .tcp_connect("t", "10.1.0.2", 80, None, LONG)
            .expect("connect");
        ag[t].tcp_send("t", "before");
        assert_eq!(ag[t].tcp_recv("t", 6, LONG).unwrap(), "before");
        ag[t].udp_socket("u", Some(("10.1.0.1", 7100)), None);
        ag[t].udp_send("u", "open", Some(("10.1.0.2", 7000)));
        ag[t + 1].udp_recv("s", LONG).expect("b got a's datagram");
    }
    assert_eq!(lab.conntrack(&["zone=1"]).len(), 2);
    let zone2_before = lab.conntrack(&["zone=2"]);
    assert_eq!(zone2_before.len(), 2);

    lab.ctl(&["flush-conntrack", "zone=1"]);
    assert!(lab.conntrack(&["zone=1"]).is_empty());
    let zone2 = lab.conntrack(&["zone=2"]);
    assert_eq!(zone2.len(), 2, "{}", show(&zone2));

    // Tenant 2 goes on: TCP data both ways, b2's UDP answer is +est.
    ag[2].tcp_send("t", "after");
    assert_eq!(ag[2].tcp_recv("t", 5, LONG).unwrap(), "after");
    ag[3].udp_send("s", "reply", Some(("10.1.0.1", 7100)));
    assert_eq!(ag[2].udp_recv("u", LONG).unwrap().0, "reply");
    // Tenant 1 lost its state: b1's answer is now +new from port 2.
    ag[1].udp_send("s", "reply", Some(("10.1.0.1", 7100)));
    assert_eq!(ag[0].udp_recv("u", SHORT), Err("timeout".to_string()));
    // Zone 2's entries are the same connections as before the flush.
    let zone2 = lab.conntrack(&["zone=2"]);
    for e in &zone2_before {
        assert!(
            zone2
                .iter()
                .any(|f| f.proto == e.proto && f.orig.sport == e.orig.sport),
            "{e:?} vanished"
        );
    }
    assert!(zone2.iter().all(|e| e.seen_reply));
}

/// The firewall for both families; IPv6 neighbour discovery passes
/// untracked (it is to IPv6 what the ARP rules are to IPv4).
const FIREWALL_DUAL: &str = "\
table=0,priority=20,icmp6,icmpv6_type=135,in_port=1,actions=output:2
table=0,priority=20,icmp6,icmpv6_type=136,in_port=1,actions=output:2
table=0,priority=20,icmp6,icmpv6_type=135,in_port=2,actions=output:1
table=0,priority=20,icmp6,icmpv6_type=136,in_port=2,actions=output:1
table=0,priority=10,arp,in_port=1,actions=output:2
table=0,priority=10,arp,in_port=2,actions=output:1
table=0,priority=10,ip,in_port=1,actions=ct(table=1,zone=1)
table=0,priority=10,ipv6,in_port=1,actions=ct(table=1,zone=1)
table=0,priority=10,ip,in_port=2,actions=ct(table=2,zone=1)
table=0,priority=10,ipv6,in_port=2,actions=ct(table=2,zone=1)
table=1,priority=10,ip,ct_state=+trk+new-inv,actions=ct(commit,zone=1),output:2
table=1,priority=10,ipv6,ct_state=+trk+new-inv,actions=ct(commit,zone=1),output:2
table=1,priority=10,ct_state=+trk+est-inv,actions=output:2
table=2,priority=10,ct_state=+trk+est-inv,actions=output:1
";

#[test]
fn ipv6_ping_and_udp_through_firewall_root() {
    let Some(mut lab) = Lab::new("ipv6", &["ping"]) else {
        return;
    };
    let a = lab.host("a", &["10.1.0.1/24", "fd00::1/64"]);
    let b = lab.host("b", &["10.1.0.2/24", "fd00::2/64"]);
    lab.start(FIREWALL_DUAL);

    let out = a.run(
        "ping",
        &["-6", "-c", "3", "-i", "0.2", "-W", "2", "fd00::2"],
        LONG * 2,
    );
    let o = text(&out.stdout);
    assert!(out.status.success(), "ping -6 a->b failed:\n{o}");
    assert!(o.contains("3 received"), "{o}");
    let out = b.run(
        "ping",
        &["-6", "-c", "2", "-i", "0.2", "-W", "1", "fd00::1"],
        LONG,
    );
    let o = text(&out.stdout);
    assert!(
        !out.status.success(),
        "ping -6 b->a passed the firewall:\n{o}"
    );
    assert!(o.contains("0 received"), "{o}");

    let (mut aa, mut ba) = (a.agent(), b.agent());
    ba.udp_echo_server("fd00::2", 7000, "v6:");
    let sport = aa.udp_socket("u", Some(("fd00::1", 0)), None);
    aa.udp_send("u", "hello", Some(("fd00::2", 7000)));
    let (data, ip, port) = aa.udp_recv("u", LONG).expect("echo over IPv6");
    assert_eq!(
        (data.as_str(), ip.as_str(), port),
        ("v6:hello", "fd00::2", 7000)
    );
    // IPv4 alongside, same flows.
    ba.udp_echo_server("10.1.0.2", 7000, "v4:");
    aa.udp_socket("u4", Some(("10.1.0.1", 0)), None);
    aa.udp_send("u4", "hello", Some(("10.1.0.2", 7000)));
    assert_eq!(aa.udp_recv("u4", LONG).unwrap().0, "v4:hello");

    let ct = lab.conntrack(&["zone=1"]);
    assert_eq!(ct.len(), 3, "{}", show(&ct));
    let icmp = ct.iter().find(|e| e.proto == "icmpv6").expect("icmpv6");
    assert_eq!(
        (icmp.orig.src.as_str(), icmp.orig.dst.as_str()),
        ("fd00::1", "fd00::2")
    );
    assert_eq!(
        (icmp.orig.r#type, icmp.reply.r#type),
        (Some(128), Some(129))
    );
    let udp6 = ct.iter().find(|e| e.proto == "udp6").expect("udp6");
    assert_eq!(
        (udp6.orig.sport, udp6.orig.dport),
        (Some(sport), Some(7000))
    );
    assert_eq!(udp6.reply.src, "fd00::2");
    assert!(udp6.seen_reply && icmp.seen_reply);
    assert!(ct
        .iter()
        .any(|e| e.proto == "udp" && e.orig.dst == "10.1.0.2"));
}

/// `ping -s 5000` from `host` (`-6` when `dst` is IPv6): every echo and
/// reply is 4 fragments on the 1500-byte links. Its output and whether it
/// succeeded.
fn big_ping(host: &ferrovs_tests::netns::Host, dst: &str, count: u32) -> (bool, String) {
    let count = count.to_string();
    let mut args = vec!["-c", &count, "-i", "0.2", "-W", "2", "-s", "5000", dst];
    if dst.contains(':') {
        args.insert(0, "-6");
    }
    let out = host.run("ping", &args, LONG * 2);
    (out.status.success(), text(&out.stdout))
}

/// A 4000-byte printable payload, different at every position mod 61,
/// so a fragment lost, repeated or misplaced changes it.
fn payload_4000(tag: &str) -> String {
    let mut p: String = (0..4000u32 - tag.len() as u32)
        .map(|i| char::from(b'!' + (i % 61) as u8 + (i / 61 % 3) as u8))
        .collect();
    p.insert_str(0, tag);
    p
}

/// Fragments through the dual-stack firewall: large pings (`-s 5000`) and
/// 4000-byte UDP echoes, IPv4 and IPv6, from `a` arrive whole and are
/// answered; conntrack holds one connection per flow (not one per
/// fragment); `b`'s large pings to `a` are reassembled, found `+new` and
/// dropped, none of their fragments reaching `a` (fragments of a new flow
/// from `b` are not let through for lacking ports); `ipf-get-status`
/// accounts for every fragment. With reassembly off (`conntrack.fragments`
/// `enabled_v4`/`enabled_v6` false) this test fails.
#[test]
fn fragmented_udp_and_large_pings_root() {
    let Some(mut lab) = Lab::new("frag", &["ping"]) else {
        return;
    };
    let a = lab.host("a", &["10.1.0.1/24", "fd00::1/64"]);
    let b = lab.host("b", &["10.1.0.2/24", "fd00::2/64"]);
    lab.start(FIREWALL_DUAL);

    // a -> b: every 5000-byte echo is reassembled, tracked, committed and
    // sent on as fragments; the replies come back +est the same way.
    for dst in ["10.1.0.2", "fd00::2"] {
        let (ok, o) = big_ping(&a, dst, 3);
        assert!(ok, "ping -s 5000 a->{dst} failed:\n{o}");
        assert!(
            o.contains("3 received") && o.contains(" 0% packet loss"),
            "{o}"
        );
        // ping reports the size of the ICMP message it got: the whole reply.
        assert_eq!(
            o.matches(&format!("5008 bytes from {dst}")).count(),
            3,
            "{o}"
        );
    }

    // 4000-byte UDP datagrams both ways, both families: 3 fragments each.
    let (mut aa, mut ba) = (a.agent(), b.agent());
    let mut sports = Vec::new();
    for (src, dst, prefix) in [
        ("10.1.0.1", "10.1.0.2", "v4:"),
        ("fd00::1", "fd00::2", "v6:"),
    ] {
        ba.udp_echo_server(dst, 7000, prefix);
        let id = format!("u{prefix}");
        sports.push(aa.udp_socket(&id, Some((src, 0)), None));
        let msg = payload_4000(prefix);
        assert_eq!(msg.len(), 4000);
        aa.udp_send(&id, &msg, Some((dst, 7000)));
        let (data, ip, port) = aa
            .udp_recv(&id, LONG)
            .unwrap_or_else(|e| panic!("no echo of the 4000-byte datagram to {dst}: {e}"));
        assert_eq!((ip.as_str(), port), (dst, 7000));
        assert_eq!(data.len(), prefix.len() + 4000, "echo from {dst}");
        assert!(
            data == format!("{prefix}{msg}"),
            "the echo from {dst} differs"
        );
    }

    // b -> a: b's large echoes are reassembled too, then +new from port 2:
    // dropped whole. None of their fragments reaches a.
    let (a_in, a_in6) = (a.ip_in_receives(), a.ip6_in_receives_except_nd());
    for dst in ["10.1.0.1", "fd00::1"] {
        let (ok, o) = big_ping(&b, dst, 2);
        assert!(!ok, "ping -s 5000 b->{dst} passed the firewall:\n{o}");
        assert!(
            o.contains("0 received") && o.contains("100% packet loss"),
            "{o}"
        );
    }
    assert_eq!(a.ip_in_receives(), a_in, "b's IPv4 fragments reached a");
    assert_eq!(
        a.ip6_in_receives_except_nd(),
        a_in6,
        "b's IPv6 fragments reached a"
    );

    // One connection per flow, not one per fragment, each replied to.
    let ct = lab.conntrack(&[]);
    assert_eq!(ct.len(), 4, "{}", show(&ct));
    for (proto, src, dst) in [
        ("icmp", "10.1.0.1", "10.1.0.2"),
        ("icmpv6", "fd00::1", "fd00::2"),
        ("udp", "10.1.0.1", "10.1.0.2"),
        ("udp6", "fd00::1", "fd00::2"),
    ] {
        let e = ct
            .iter()
            .find(|e| e.proto == proto)
            .unwrap_or_else(|| panic!("no {proto} connection:\n{}", show(&ct)));
        assert_eq!(e.zone, 1, "{e:?}");
        assert_eq!((e.orig.src.as_str(), e.orig.dst.as_str()), (src, dst));
        assert_eq!((e.reply.src.as_str(), e.reply.dst.as_str()), (dst, src));
        assert!(e.seen_reply, "{e:?}");
        if proto.starts_with("udp") {
            assert_eq!(e.orig.dport, Some(7000), "{e:?}");
            assert!(e.orig.sport.is_some_and(|p| sports.contains(&p)), "{e:?}");
        }
    }

    // The reassembler, per family: a's 3 echoes and b's 3 replies, b's 2
    // dropped echoes (4 fragments each), one UDP datagram each way (3
    // each): 38 fragments made 10 datagrams, all whole: nothing rejected,
    // timed out or left in progress.
    let st = lab.ctl_json(&["ipf-get-status"]);
    assert_eq!(st["datagrams"], 0, "datagrams left in progress: {st}");
    assert_eq!(st["bytes"], 0, "{st}");
    for fam in ["v4", "v6"] {
        let c = st["counters"][fam].as_object().expect("counters");
        for (k, v) in c {
            let want = match k.as_str() {
                "accepted" => 38,
                "reassembled" => 10,
                _ => 0,
            };
            assert_eq!(v, want, "{fam} {k}: {st}");
        }
    }
    // The datapath held every fragment but the last of each datagram and
    // sent the 8 forwarded datagrams of each family on as the 30 fragments
    // they came in as (b's dropped echoes: none).
    let dp = &st["datapath"];
    for (k, want) in [
        ("held", 76 - 20),
        ("reassembled", 20),
        ("fragments_sent", 60),
        ("rejected", 0),
        ("too_long", 0),
        ("send_errors", 0),
    ] {
        assert_eq!(dp[k], want, "datapath {k}: {st}");
    }
}

/// The flows the harness docs give for the NAT and ALG scenarios load into
/// a switch (they stay valid syntax), and the NAT tests here run exactly
/// the documented flows.
#[test]
fn planned_scenario_flows_parse() {
    let src = include_str!("../src/netns.rs");
    let docs = &src[src
        .find("# Flows of the NAT and ALG scenarios")
        .expect("the section")..];
    let mut blocks = 0;
    let mut documented = Vec::new();
    let mut lines = docs.lines().map(|l| l.trim_start_matches("//!").trim());
    while let Some(l) = lines.next() {
        if l != "```text" {
            continue;
        }
        let flows: String = lines
            .by_ref()
            .take_while(|l| *l != "```")
            .map(|l| format!("{l}\n"))
            .collect();
        if !flows.contains("table=") {
            continue;
        }
        let h = ferrovs_tests::Harness::new(&[1, 2, 3], "");
        h.sw.bridge
            .ofctl("add-flows", &flows, 0)
            .unwrap_or_else(|e| panic!("{e:?} in:\n{flows}"));
        assert_eq!(
            h.sw.bridge
                .ofctl("dump-flows", "", 0)
                .unwrap()
                .lines()
                .count(),
            flows.lines().count()
        );
        blocks += 1;
        documented.push(flows);
    }
    assert_eq!(blocks, 4, "SNAT, DNAT, FTP, TFTP");
    for (what, flows) in [
        ("SNAT", snat_flows(SNAT_ON)),
        ("DNAT", DNAT_LB.to_string()),
        ("FTP through SNAT", ftp_snat_flows(",alg=ftp")),
    ] {
        assert!(
            documented.contains(&flows),
            "the {what} test's flows are not the documented ones:\n{flows}"
        );
    }
}

/// FTP through a firewall that lets `a` (port 1) open FTP control
/// connections only; data connections, whichever side opens them, pass
/// only as `+rel`. `{alg}` is `,alg=ftp` or empty (the control case).
fn ftp_firewall(alg: &str) -> String {
    format!(
        "\
table=0,priority=10,arp,in_port=1,actions=output:2
table=0,priority=10,arp,in_port=2,actions=output:1
table=0,priority=10,ip,in_port=1,actions=ct(table=1,zone=1)
table=0,priority=10,ip,in_port=2,actions=ct(table=2,zone=1)
table=1,priority=20,tcp,tp_dst=21,ct_state=+trk+new-inv,actions=ct(commit,zone=1{alg}),output:2
table=1,priority=15,ip,ct_state=+trk+rel-inv,actions=ct(commit,zone=1),output:2
table=1,priority=10,ip,ct_state=+trk+est-inv,actions=output:2
table=2,priority=15,ip,ct_state=+trk+rel-inv,actions=ct(commit,zone=1),output:1
table=2,priority=10,ip,ct_state=+trk+est-inv,actions=output:1
"
    )
}

/// A pyftpdlib server (anonymous, read-only) on 10.1.0.2:21 serving `dir`;
/// prints `ready` once listening.
const FTP_SERVER_PY: &str = "\
import sys
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer
auth = DummyAuthorizer()
auth.add_anonymous(sys.argv[2])
FTPHandler.authorizer = auth
server = FTPServer((sys.argv[1], 21), FTPHandler)
print('ready', flush=True)
server.serve_forever()
";

/// curl options of each FTP mode (curl prefers EPSV/EPRT; the `--disable-`
/// options force PASV/PORT).
const FTP_MODES: &[(&str, &[&str])] = &[
    ("passive EPSV", &[]),
    ("passive PASV", &["--disable-epsv"]),
    ("active EPRT", &["-P", "10.1.0.1"]),
    ("active PORT", &["-P", "10.1.0.1", "--disable-eprt"]),
];

/// Starts the FTP server (pyftpdlib) on `host` at `addr`, serving `file`
/// as `file.bin`, and waits until it listens.
fn ftp_server(lab: &Lab, host: &Host, addr: &str, file: &[u8]) -> Proc {
    let root = lab.dir().join("ftproot");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("file.bin"), file).unwrap();
    let script = lab.dir().join("ftpd.py");
    std::fs::write(&script, FTP_SERVER_PY).unwrap();
    let server = host.spawn(
        python(),
        &["-u", script.to_str().unwrap(), addr, root.to_str().unwrap()],
    );
    server.wait_for_line("ready", LONG).expect("ftp server");
    server
}

fn ftp_get(
    lab: &Lab,
    a: &ferrovs_tests::netns::Host,
    opts: &[&str],
    max_time: &str,
) -> (std::process::Output, Vec<u8>) {
    ftp_get_from(lab, a, opts, max_time, "ftp://10.1.0.2/file.bin")
}

fn ftp_get_from(
    lab: &Lab,
    a: &ferrovs_tests::netns::Host,
    opts: &[&str],
    max_time: &str,
    url: &str,
) -> (std::process::Output, Vec<u8>) {
    let got = lab.dir().join("got");
    let _ = std::fs::remove_file(&got);
    let mut args = vec!["-sS", "--max-time", max_time, "-o", got.to_str().unwrap()];
    args.extend_from_slice(opts);
    args.push(url);
    let out = a.run("curl", &args, LONG * 3);
    (out, std::fs::read(&got).unwrap_or_default())
}

#[test]
fn ftp_active_and_passive_through_the_helper_root() {
    let Some(mut lab) = Lab::new("ftp", &["curl", "py:pyftpdlib"]) else {
        return;
    };
    let a = lab.host("a", &["10.1.0.1/24"]);
    let b = lab.host("b", &["10.1.0.2/24"]);
    lab.start(&ftp_firewall(",alg=ftp"));
    let blob: Vec<u8> = (0..200_000u32).map(|i| (i * 13 + i / 97) as u8).collect();
    let server = ftp_server(&lab, &b, "10.1.0.2", &blob);

    for (mode, opts) in FTP_MODES {
        let (out, got) = ftp_get(&lab, &a, opts, "10");
        assert!(
            out.status.success(),
            "{mode}: curl failed: {}",
            text(&out.stderr)
        );
        assert!(
            got == blob,
            "{mode}: downloaded {} bytes, differ",
            got.len()
        );
    }

    let ct = lab.conntrack(&["zone=1"]);
    let controls: Vec<&CtEntry> = ct.iter().filter(|e| e.orig.dport == Some(21)).collect();
    assert_eq!(controls.len(), FTP_MODES.len(), "{}", show(&ct));
    assert!(
        controls.iter().all(|e| e.helper.as_deref() == Some("ftp")),
        "{}",
        show(&ct)
    );
    let data: Vec<&CtEntry> = ct.iter().filter(|e| e.master.is_some()).collect();
    assert_eq!(data.len(), FTP_MODES.len(), "{}", show(&ct));
    // Passive: a -> b; active: b -> a; each names a control connection
    // of this lab as its master.
    let passive = data.iter().filter(|e| e.orig.src == "10.1.0.1").count();
    let active = data.iter().filter(|e| e.orig.src == "10.1.0.2").count();
    assert_eq!((passive, active), (2, 2), "{}", show(&ct));
    for d in &data {
        let m = d.master.as_ref().unwrap();
        assert!(
            controls
                .iter()
                .any(|c| c.orig.sport == m.sport && m.dport == Some(21)),
            "{d:?}"
        );
        assert!(d.helper.is_none(), "{d:?}");
    }
    // Every announcement was used: nothing pending.
    assert_eq!(lab.ctl(&["dump-expectations"]), "");
    drop(server);
}

#[test]
fn ftp_without_the_helper_fails_root() {
    let Some(mut lab) = Lab::new("ftpnoalg", &["curl", "py:pyftpdlib"]) else {
        return;
    };
    let a = lab.host("a", &["10.1.0.1/24"]);
    let b = lab.host("b", &["10.1.0.2/24"]);
    lab.start(&ftp_firewall(""));
    let server = ftp_server(&lab, &b, "10.1.0.2", b"never arrives");
    for (mode, opts) in [FTP_MODES[1], FTP_MODES[3]] {
        let (out, got) = ftp_get(&lab, &a, opts, "3");
        assert!(
            !out.status.success() && got.is_empty(),
            "{mode}: the transfer passed without the helper"
        );
    }
    // The control connections themselves were admitted.
    let ct = lab.conntrack(&["zone=1"]);
    assert!(
        ct.iter()
            .any(|e| e.orig.dport == Some(21) && e.helper.is_none()),
        "{}",
        show(&ct)
    );
    assert!(ct.iter().all(|e| e.master.is_none()), "{}", show(&ct));
    drop(server);
}

/// FTP through source NAT (the harness docs' "FTP active and passive
/// through NAT"): `a` (10.1.0.1) is SNATed to 192.0.2.1 towards the
/// pyftpdlib server `b` (192.0.2.2). The server insists that PORT/EPRT
/// name the control connection's peer and that passive data connections
/// come from it (pyftpdlib's default, `permit_foreign_addresses` off), so
/// the transfer works only if the announcements are rewritten (PORT grows
/// by 2 bytes, EPRT by 1 — 10.1.0.1 is 8 characters, 192.0.2.1 is 9; the
/// sequence numbers shift for the rest of the session) and the data
/// connections follow the master's NAT.
fn ftp_snat_flows(alg: &str) -> String {
    format!(
        "\
table=0,priority=10,ip,in_port=1,actions=ct(table=1,zone=1,nat)
table=0,priority=10,ip,in_port=2,actions=ct(table=2,zone=1,nat)
table=1,priority=20,tcp,tp_dst=21,ct_state=+trk+new,actions=ct(commit,zone=1{alg},nat(src=192.0.2.1)),output:2
table=1,priority=10,ip,ct_state=+trk+new+rel,actions=ct(commit,zone=1,nat),output:2
table=1,priority=10,ip,ct_state=+trk+est,actions=output:2
table=2,priority=10,ip,ct_state=+trk+new+rel,actions=ct(commit,zone=1,nat),output:1
table=2,priority=10,ip,ct_state=+trk+est,actions=output:1
table=2,priority=10,ip,ct_state=+trk+rel,actions=output:1
"
    )
}

#[test]
fn ftp_active_and_passive_through_snat_root() {
    let Some(mut lab) = Lab::new("ftpsnat", &["curl", "py:pyftpdlib"]) else {
        return;
    };
    let a = lab.host("a", &["10.1.0.1/24"]);
    let b = lab.host("b", &["192.0.2.2/24"]);
    a.neigh("10.1.0.254", &b.mac);
    a.route("192.0.2.0/24", "10.1.0.254");
    b.neigh("192.0.2.1", &a.mac);
    lab.start(&ftp_snat_flows(",alg=ftp"));
    let blob: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let server = ftp_server(&lab, &b, "192.0.2.2", &blob);

    for (mode, opts) in FTP_MODES {
        let (out, got) = ftp_get_from(&lab, &a, opts, "10", "ftp://192.0.2.2/file.bin");
        assert!(
            out.status.success(),
            "{mode}: curl failed: {}\n{}",
            text(&out.stderr),
            lab.daemon_log()
        );
        assert!(
            got == blob,
            "{mode}: downloaded {} bytes, differ",
            got.len()
        );
    }

    let ct = lab.conntrack(&["zone=1"]);
    let controls: Vec<&CtEntry> = ct.iter().filter(|e| e.orig.dport == Some(21)).collect();
    assert_eq!(controls.len(), FTP_MODES.len(), "{}", show(&ct));
    assert!(
        controls
            .iter()
            .all(|e| e.orig.src == "10.1.0.1" && e.reply.dst == "192.0.2.1"),
        "{}",
        show(&ct)
    );
    let data: Vec<&CtEntry> = ct.iter().filter(|e| e.master.is_some()).collect();
    assert_eq!(data.len(), FTP_MODES.len(), "{}", show(&ct));
    // Passive: a's data connection leaves as 192.0.2.1. Active: the
    // server's, to 192.0.2.1, is delivered to 10.1.0.1.
    let passive = data
        .iter()
        .filter(|e| e.orig.src == "10.1.0.1" && e.reply.dst == "192.0.2.1")
        .count();
    let active = data
        .iter()
        .filter(|e| {
            e.orig.src == "192.0.2.2" && e.orig.dst == "192.0.2.1" && e.reply.src == "10.1.0.1"
        })
        .count();
    assert_eq!((passive, active), (2, 2), "{}", show(&ct));
    assert_eq!(lab.ctl(&["dump-expectations"]), "");
    drop(server);
}

/// The control of [`ftp_active_and_passive_through_snat_root`]: the same
/// NAT without the helper carries no transfer in either mode.
#[test]
fn ftp_through_snat_without_the_helper_fails_root() {
    let Some(mut lab) = Lab::new("ftpsnatnoalg", &["curl", "py:pyftpdlib"]) else {
        return;
    };
    let a = lab.host("a", &["10.1.0.1/24"]);
    let b = lab.host("b", &["192.0.2.2/24"]);
    a.neigh("10.1.0.254", &b.mac);
    a.route("192.0.2.0/24", "10.1.0.254");
    b.neigh("192.0.2.1", &a.mac);
    lab.start(&ftp_snat_flows(""));
    let server = ftp_server(&lab, &b, "192.0.2.2", b"never arrives");
    for (mode, opts) in [FTP_MODES[1], FTP_MODES[3]] {
        let (out, got) = ftp_get_from(&lab, &a, opts, "3", "ftp://192.0.2.2/file.bin");
        assert!(
            !out.status.success() && got.is_empty(),
            "{mode}: the transfer passed without the helper"
        );
    }
    drop(server);
}

/// A minimal TFTP server (RFC 1350, read requests, options ignored) on
/// `argv[1]:69` serving `argv[2]`: each transfer runs from a new socket,
/// i.e. a new server port, as real servers do. Prints `ready`, then
/// `sent NAME` or `gave up NAME` per transfer.
const TFTP_SERVER_PY: &str = "\
import os, socket, sys
ip, root = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((ip, 69))
print('ready', flush=True)
while True:
    pkt, peer = s.recvfrom(2048)
    if pkt[:2] != b'\\x00\\x01':
        continue
    name = pkt[2:].split(b'\\x00')[0].decode()
    data = open(os.path.join(root, os.path.basename(name)), 'rb').read()
    t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    t.bind((ip, 0))
    t.settimeout(0.4)
    block, off, ok = 1, 0, True
    while ok:
        chunk = data[off:off + 512]
        for attempt in range(5):
            t.sendto(b'\\x00\\x03' + block.to_bytes(2, 'big') + chunk, peer)
            try:
                while True:
                    a, frm = t.recvfrom(2048)
                    if frm == peer and a[:2] == b'\\x00\\x04' and int.from_bytes(a[2:4], 'big') == block:
                        break
                break
            except socket.timeout:
                continue
        else:
            ok = False
            print('gave up', name, flush=True)
        if ok and len(chunk) < 512:
            print('sent', name, flush=True)
            break
        block, off = (block + 1) % 65536, off + 512
    t.close()
";

/// The TFTP flows of the harness docs; `{alg}` is `,alg=tftp` or empty.
fn tftp_firewall(alg: &str) -> String {
    format!(
        "\
table=0,priority=10,arp,in_port=1,actions=output:2
table=0,priority=10,arp,in_port=2,actions=output:1
table=0,priority=10,ip,in_port=1,actions=ct(table=1,zone=1)
table=0,priority=10,ip,in_port=2,actions=ct(table=2,zone=1)
table=1,priority=20,udp,tp_dst=69,ct_state=+trk+new,actions=ct(commit,zone=1{alg}),output:2
table=1,priority=10,ip,ct_state=+trk+new-inv,actions=ct(commit,zone=1),output:2
table=1,priority=10,ip,ct_state=+trk+est,actions=output:2
table=2,priority=10,ip,ct_state=+trk+new+rel,actions=ct(commit,zone=1),output:1
table=2,priority=10,ip,ct_state=+trk+est,actions=output:1
"
    )
}

#[test]
fn tftp_through_the_helper_and_not_without_root() {
    let blob: Vec<u8> = (0..5000u32).map(|i| (i * 31 + i / 7) as u8).collect();
    for with_alg in [true, false] {
        let Some(mut lab) = Lab::new("tftp", &["curl"]) else {
            return;
        };
        let a = lab.host("a", &["10.1.0.1/24"]);
        let b = lab.host("b", &["10.1.0.2/24"]);
        lab.start(&tftp_firewall(if with_alg { ",alg=tftp" } else { "" }));
        let root = lab.dir().join("tftproot");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("file.bin"), &blob).unwrap();
        let script = lab.dir().join("tftpd.py");
        std::fs::write(&script, TFTP_SERVER_PY).unwrap();
        let server = b.spawn(
            python(),
            &[
                "-u",
                script.to_str().unwrap(),
                "10.1.0.2",
                root.to_str().unwrap(),
            ],
        );
        server.wait_for_line("ready", LONG).expect("tftp server");
        let got = lab.dir().join("got");
        let max = if with_alg { "10" } else { "3" };
        let out = a.run(
            "curl",
            &[
                "-sS",
                "--max-time",
                max,
                "-o",
                got.to_str().unwrap(),
                "tftp://10.1.0.2/file.bin",
            ],
            LONG * 3,
        );
        let received = std::fs::read(&got).unwrap_or_default();
        let ct = lab.conntrack(&["zone=1"]);
        if with_alg {
            assert!(out.status.success(), "curl: {}", text(&out.stderr));
            assert!(
                received == blob,
                "downloaded {} bytes, differ",
                received.len()
            );
            server
                .wait_for_line("sent file.bin", LONG)
                .expect("server finished");
            let req = ct
                .iter()
                .find(|e| e.orig.dport == Some(69))
                .unwrap_or_else(|| panic!("{}", show(&ct)));
            assert_eq!(req.helper.as_deref(), Some("tftp"));
            let xfer = ct
                .iter()
                .find(|e| e.master.is_some())
                .unwrap_or_else(|| panic!("{}", show(&ct)));
            assert_eq!(xfer.orig.src, "10.1.0.2", "{xfer:?}");
            assert_ne!(xfer.orig.sport, Some(69), "a new server port");
            assert_eq!(xfer.orig.dport, req.orig.sport, "{xfer:?}");
        } else {
            assert!(
                !out.status.success() && received.is_empty(),
                "passed without the helper"
            );
            assert!(ct.iter().all(|e| e.master.is_none()), "{}", show(&ct));
        }
        drop(server);
    }
}

#[test]
fn ftp_over_ipv6_eprt_and_epsv_root() {
    let Some(mut lab) = Lab::new("ftp6", &["curl", "py:pyftpdlib"]) else {
        return;
    };
    let a = lab.host("a", &["fd00::1/64"]);
    let b = lab.host("b", &["fd00::2/64"]);
    lab.start(
        "\
table=0,priority=20,icmp6,icmpv6_type=135,in_port=1,actions=output:2
table=0,priority=20,icmp6,icmpv6_type=135,in_port=2,actions=output:1
table=0,priority=20,icmp6,icmpv6_type=136,in_port=1,actions=output:2
table=0,priority=20,icmp6,icmpv6_type=136,in_port=2,actions=output:1
table=0,priority=10,ipv6,in_port=1,actions=ct(table=1,zone=1)
table=0,priority=10,ipv6,in_port=2,actions=ct(table=2,zone=1)
table=1,priority=20,tcp6,tp_dst=21,ct_state=+trk+new-inv,actions=ct(commit,zone=1,alg=ftp),output:2
table=1,priority=15,ipv6,ct_state=+trk+rel-inv,actions=ct(commit,zone=1),output:2
table=1,priority=10,ipv6,ct_state=+trk+est-inv,actions=output:2
table=2,priority=15,ipv6,ct_state=+trk+rel-inv,actions=ct(commit,zone=1),output:1
table=2,priority=10,ipv6,ct_state=+trk+est-inv,actions=output:1
",
    );
    let blob: Vec<u8> = (0..100_000u32).map(|i| (i * 29 + i / 11) as u8).collect();
    let server = ftp_server(&lab, &b, "fd00::2", &blob);
    let got = lab.dir().join("got");
    for (mode, opts) in [("EPSV", &[][..]), ("EPRT", &["-P", "-"][..])] {
        let _ = std::fs::remove_file(&got);
        let mut args = vec!["-sS", "-g", "--max-time", "10", "-o", got.to_str().unwrap()];
        args.extend_from_slice(opts);
        args.push("ftp://[fd00::2]/file.bin");
        let out = a.run("curl", &args, LONG * 3);
        assert!(
            out.status.success(),
            "{mode}: curl failed: {}",
            text(&out.stderr)
        );
        assert!(std::fs::read(&got).unwrap() == blob, "{mode}: file differs");
    }
    let ct = lab.conntrack(&["zone=1"]);
    let data: Vec<&CtEntry> = ct.iter().filter(|e| e.master.is_some()).collect();
    assert_eq!(data.len(), 2, "{}", show(&ct));
    assert!(data.iter().all(|e| e.proto == "tcp6"), "{}", show(&ct));
    assert!(
        data.iter().any(|e| e.orig.src == "fd00::1")
            && data.iter().any(|e| e.orig.src == "fd00::2"),
        "one passive (a->b), one active (b->a):\n{}",
        show(&ct)
    );
    drop(server);
}

/// The SNAT flows of the harness docs: `a` (10.1.0.1, port 1) reaches
/// `b` (192.0.2.2, port 2) as 192.0.2.1; `b` may only answer. `{nat}` is
/// `,nat(src=192.0.2.1)`, or empty for the control (no translation).
fn snat_flows(nat: &str) -> String {
    format!(
        "\
table=0,priority=10,ip,in_port=1,actions=ct(table=1,zone=1,nat)
table=0,priority=10,ip,in_port=2,actions=ct(table=2,zone=1,nat)
table=1,priority=10,ip,ct_state=+trk+new,actions=ct(commit,zone=1{nat}),output:2
table=1,priority=10,ip,ct_state=+trk+est,actions=output:2
table=2,priority=10,ip,ct_state=+trk+est,actions=output:1
table=2,priority=10,ip,ct_state=+trk+rel,actions=output:1
"
    )
}

const SNAT_ON: &str = ",nat(src=192.0.2.1)";

/// The SNAT topology of the harness docs (no ARP crosses the switch: `a`
/// routes 192.0.2.0/24 via 10.1.0.254, a static neighbour at `b`'s MAC;
/// `b` knows 192.0.2.1 at `a`'s MAC), started with `flows`. `a` gets the
/// extra addresses `a_extra` too.
fn snat_lab(
    tag: &str,
    tools: &[&str],
    a_extra: &[&str],
    flows: &str,
) -> Option<(Lab, ferrovs_tests::netns::Host, ferrovs_tests::netns::Host)> {
    let mut lab = Lab::new(tag, tools)?;
    let mut addrs = vec!["10.1.0.1/24"];
    addrs.extend_from_slice(a_extra);
    let a = lab.host("a", &addrs);
    let b = lab.host("b", &["192.0.2.2/24"]);
    a.route("192.0.2.0/24", "10.1.0.254");
    a.neigh("10.1.0.254", &b.mac);
    b.neigh("192.0.2.1", &a.mac);
    lab.start(flows);
    Some((lab, a, b))
}

/// The one entry of `ct` with protocol `proto` and original source `src`.
fn entry<'a>(ct: &'a [CtEntry], proto: &str, src: &str) -> &'a CtEntry {
    let found: Vec<&CtEntry> = ct
        .iter()
        .filter(|e| e.proto == proto && e.orig.src == src)
        .collect();
    let [e] = found.as_slice() else {
        panic!("{} {proto} entries from {src}:\n{}", found.len(), show(ct));
    };
    e
}

/// SNAT, TCP and UDP: `b`'s servers see 192.0.2.1 (with the client's own
/// port: it was free), `a` gets their answers; an HTTP download (many
/// segments, each rewritten both ways) arrives intact and the HTTP server
/// logs 192.0.2.1 as its client. Conntrack keeps the private address in the
/// original tuple and the public one in the reply tuple, in zone 1. `b`
/// cannot open a connection to 192.0.2.1. With the commit's `nat` removed
/// nothing gets through (`b` has no route back to 10.1.0.1), and `b`'s
/// servers see no connection at all.
#[test]
fn snat_tcp_udp_and_http_root() {
    let Some((lab, a, b)) = snat_lab("snat", &["curl"], &[], &snat_flows(SNAT_ON)) else {
        return;
    };
    let (mut aa, mut ba) = (a.agent(), b.agent());
    ba.tcp_echo_server("192.0.2.2", 80, "b saw {peer}:");
    ba.udp_echo_server("192.0.2.2", 7000, "b saw {peer}:");

    // TCP: the server reports the peer it accepted.
    let tport = aa
        .tcp_connect("t", "192.0.2.2", 80, None, LONG)
        .expect("connect through SNAT");
    aa.tcp_send("t", "hello");
    let want = format!("b saw 192.0.2.1:{tport}:hello");
    assert_eq!(aa.tcp_recv("t", want.len(), LONG).unwrap(), want);

    // UDP: the echo comes back from b's address and port to a's socket.
    let uport = aa.udp_socket("u", Some(("10.1.0.1", 0)), None);
    for i in 0..3 {
        let msg = format!("datagram {i}");
        aa.udp_send("u", &msg, Some(("192.0.2.2", 7000)));
        let (data, ip, port) = aa.udp_recv("u", LONG).expect("UDP echo through SNAT");
        assert_eq!(data, format!("b saw 192.0.2.1:{uport}:{msg}"));
        assert_eq!((ip.as_str(), port), ("192.0.2.2", 7000));
    }

    // HTTP: a real server and client; the server logs its client address.
    let www = lab.dir().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let blob: Vec<u8> = (0..200_000u32).map(|i| (i * 13 + i / 257) as u8).collect();
    std::fs::write(www.join("blob"), &blob).unwrap();
    let server = b.spawn(
        "sh",
        &[
            "-c",
            &format!(
                "exec {} -u -m http.server 8080 --bind 192.0.2.2 --directory {} 2>&1",
                python(),
                www.display()
            ),
        ],
    );
    server
        .wait_for_line("Serving HTTP", LONG)
        .expect("http.server started");
    let got = lab.dir().join("got");
    let out = a.run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            "-o",
            got.to_str().unwrap(),
            "http://192.0.2.2:8080/blob",
        ],
        LONG * 3,
    );
    assert!(
        out.status.success(),
        "curl through SNAT: {}",
        text(&out.stderr)
    );
    assert!(std::fs::read(&got).unwrap() == blob, "the download differs");
    let log = server
        .wait_for_line("GET /blob", LONG)
        .expect("the server logged the request");
    assert!(log.starts_with("192.0.2.1 "), "server saw: {log}");

    let ct = lab.conntrack(&[]);
    assert!(ct.iter().all(|e| e.zone == 1), "{}", show(&ct));
    let tcp: Vec<&CtEntry> = ct.iter().filter(|e| e.proto == "tcp").collect();
    assert_eq!(
        tcp.len(),
        2,
        "the echo and the HTTP connection:\n{}",
        show(&ct)
    );
    for e in &tcp {
        assert_eq!(
            (e.orig.src.as_str(), e.orig.dst.as_str()),
            ("10.1.0.1", "192.0.2.2"),
            "{e:?}"
        );
        assert_eq!(
            (e.reply.src.as_str(), e.reply.dst.as_str()),
            ("192.0.2.2", "192.0.2.1"),
            "{e:?}"
        );
        assert_eq!(e.reply.sport, e.orig.dport, "{e:?}");
        assert_eq!(e.reply.dport, e.orig.sport, "the port was free: kept");
        assert!(e.seen_reply, "{e:?}");
    }
    assert!(tcp.iter().any(|e| e.orig.sport == Some(tport)));
    let u = entry(&ct, "udp", "10.1.0.1");
    assert_eq!((u.orig.sport, u.orig.dport), (Some(uport), Some(7000)));
    assert_eq!(
        (u.reply.src.as_str(), u.reply.dst.as_str()),
        ("192.0.2.2", "192.0.2.1")
    );
    assert_eq!((u.reply.sport, u.reply.dport), (Some(7000), Some(uport)));

    // b cannot open anything towards the public address (or through it).
    aa.tcp_listen("l", "10.1.0.1", 9000);
    let a_in = a.ip_in_receives();
    assert_eq!(
        ba.tcp_connect("x", "192.0.2.1", 9000, None, Duration::from_millis(1500)),
        Err("timeout".to_string())
    );
    assert_eq!(aa.tcp_accept("c", "l", SHORT), Err("timeout".to_string()));
    assert_eq!(a.ip_in_receives(), a_in, "b's SYNs reached a");
    assert_eq!(
        lab.conntrack(&[]).len(),
        ct.len(),
        "b's attempt was committed"
    );
    drop(server);
}

/// The control of the SNAT tests: the same lab with `nat` left out of the
/// commit. `a`'s packets reach `b` from 10.1.0.1, which `b` cannot answer
/// (no route): `a` gets nothing back, and the connection in conntrack is
/// untranslated.
#[test]
fn snat_control_without_nat_gets_no_answer_root() {
    let Some((lab, a, b)) = snat_lab("snat0", &[], &[], &snat_flows("")) else {
        return;
    };
    let (mut aa, mut ba) = (a.agent(), b.agent());
    ba.udp_echo_server("192.0.2.2", 7000, "b saw {peer}:");
    ba.tcp_echo_server("192.0.2.2", 80, "b saw {peer}:");
    aa.udp_socket("u", Some(("10.1.0.1", 0)), None);
    aa.udp_send("u", "hi", Some(("192.0.2.2", 7000)));
    assert_eq!(aa.udp_recv("u", SHORT), Err("timeout".to_string()));
    assert_eq!(
        aa.tcp_connect("t", "192.0.2.2", 80, None, Duration::from_millis(1500)),
        Err("timeout".to_string())
    );
    let ct = lab.conntrack(&["zone=1"]);
    let u = entry(&ct, "udp", "10.1.0.1");
    assert_eq!(u.reply.dst, "10.1.0.1", "{u:?}");
    assert!(!u.seen_reply, "{u:?}");
}

/// `ping -c 3 -e ID -I SRC 192.0.2.2` from `host`: success and output.
fn ping_with_id(host: &ferrovs_tests::netns::Host, src: &str, id: &str) -> (bool, String) {
    let out = host.run(
        "ping",
        &[
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "2",
            "-e",
            id,
            "-I",
            src,
            "192.0.2.2",
        ],
        LONG * 2,
    );
    let o = text(&out.stdout) + &text(&out.stderr);
    (out.status.success() && o.contains(" 0% packet loss"), o)
}

/// SNAT of ICMP echo, with the query id translated: `a` pings `b` with id
/// 4242 from 10.1.0.1 and then, with the same id, from its second address
/// 10.1.0.3. Both map to 192.0.2.1, so the second connection cannot keep
/// id 4242 (its reply tuple is the first one's): it gets another id, and
/// its replies must be translated back to 4242 and to 10.1.0.3 for ping
/// to count them (a reply left at the other id, or left untranslated,
/// would be lost or un-NATed to the first connection).
#[test]
fn snat_ping_translates_the_icmp_id_root() {
    let Some((lab, a, _b)) = snat_lab(
        "snatping",
        &["ping"],
        &["10.1.0.3/24"],
        &snat_flows(SNAT_ON),
    ) else {
        return;
    };
    for src in ["10.1.0.1", "10.1.0.3"] {
        let (ok, o) = ping_with_id(&a, src, "4242");
        assert!(ok, "ping from {src} through SNAT:\n{o}");
    }
    let ct = lab.conntrack(&["zone=1"]);
    assert_eq!(ct.len(), 2, "{}", show(&ct));
    let first = entry(&ct, "icmp", "10.1.0.1");
    let second = entry(&ct, "icmp", "10.1.0.3");
    for e in [first, second] {
        assert_eq!(e.orig.id, Some(4242), "{e:?}");
        assert_eq!((e.orig.r#type, e.reply.r#type), (Some(8), Some(0)));
        assert_eq!(
            (e.reply.src.as_str(), e.reply.dst.as_str()),
            ("192.0.2.2", "192.0.2.1"),
            "{e:?}"
        );
        assert!(e.seen_reply, "{e:?}");
    }
    assert_eq!(first.reply.id, Some(4242), "the first keeps its id");
    assert!(
        second.reply.id.is_some() && second.reply.id != Some(4242),
        "the second needs another id: {second:?}"
    );
}

/// An ICMP error about a source-NATed connection comes back translated:
/// `b` answers a's datagram to a closed port with port unreachable,
/// addressed to 192.0.2.1 and quoting 192.0.2.1 as the source. It is
/// `+rel`; the `ct(nat)` rewrites the outer destination and the quoted
/// source (address, port and checksums), so a's kernel finds the socket
/// and reports ECONNREFUSED.
#[test]
fn snat_icmp_error_is_related_and_translated_root() {
    let Some((lab, a, _b)) = snat_lab("snaticmp", &[], &[], &snat_flows(SNAT_ON)) else {
        return;
    };
    let mut aa = a.agent();
    let sport = aa.udp_socket("u", None, Some(("192.0.2.2", 9999)));
    aa.udp_send("u", "anyone?", None);
    assert_eq!(aa.udp_recv("u", LONG), Err("ECONNREFUSED".to_string()));
    assert_eq!(
        lab.flow_packets_settled(&["table=2", "ct_state=+rel"], 1),
        1,
        "the ICMP error went through the +rel rule"
    );
    let ct = lab.conntrack(&["zone=1"]);
    assert_eq!(
        ct.len(),
        1,
        "the error created no connection:\n{}",
        show(&ct)
    );
    let e = entry(&ct, "udp", "10.1.0.1");
    assert_eq!((e.orig.sport, e.orig.dport), (Some(sport), Some(9999)));
    assert_eq!(e.reply.dst, "192.0.2.1", "{e:?}");
    assert!(!e.seen_reply, "an ICMP error is not a reply: {e:?}");
}

/// The DNAT load-balancing flows of the harness docs: the VIP 10.1.0.100:80
/// goes to `b1` 10.1.0.11:8080 (port 2) for even client ports and to `b2`
/// 10.1.0.12:8080 (port 3) for odd ones.
const DNAT_LB: &str = "\
table=0,priority=10,arp,in_port=1,actions=output:2,output:3
table=0,priority=10,arp,in_port=2,actions=output:1
table=0,priority=10,arp,in_port=3,actions=output:1
table=0,priority=10,ip,in_port=1,actions=ct(table=1,zone=1,nat)
table=0,priority=10,ip,in_port=2,actions=ct(table=2,zone=1,nat)
table=0,priority=10,ip,in_port=3,actions=ct(table=2,zone=1,nat)
table=1,priority=20,tcp,ct_state=+trk+new,nw_dst=10.1.0.100,tp_src=0/1,actions=ct(commit,zone=1,nat(dst=10.1.0.11:8080)),mod_dl_dst:02:00:00:00:00:02,output:2
table=1,priority=20,tcp,ct_state=+trk+new,nw_dst=10.1.0.100,tp_src=1/1,actions=ct(commit,zone=1,nat(dst=10.1.0.12:8080)),mod_dl_dst:02:00:00:00:00:03,output:3
table=1,priority=10,tcp,ct_state=+trk+est,ct_nw_dst=10.1.0.100,nw_dst=10.1.0.11,actions=mod_dl_dst:02:00:00:00:00:02,output:2
table=1,priority=10,tcp,ct_state=+trk+est,ct_nw_dst=10.1.0.100,nw_dst=10.1.0.12,actions=mod_dl_dst:02:00:00:00:00:03,output:3
table=2,priority=10,ip,ct_state=+trk+est,actions=output:1
";

/// DNAT load balancing: a dozen connections from `a` to the VIP, from
/// source ports 41000-41011 (chosen, not ephemeral: Linux's connect()
/// prefers even ephemeral ports, which would all go to one backend). Each
/// backend's echo server names itself and the client it saw: even ports
/// are served by `b1`, odd ones by `b2`, each seeing the client's real
/// address and port. `a`'s sockets are connected to 10.1.0.100:80, so
/// every reply reached them with the VIP as its source (the kernel takes
/// no SYN-ACK from anyone else). Conntrack keeps the VIP in each original
/// tuple and the chosen backend in its reply tuple.
#[test]
fn dnat_load_balancing_over_two_backends_root() {
    let Some(mut lab) = Lab::new("dnat", &[]) else {
        return;
    };
    let a = lab.host("a", &["10.1.0.1/24"]);
    let b1 = lab.host("b1", &["10.1.0.11/24"]);
    let b2 = lab.host("b2", &["10.1.0.12/24"]);
    assert_eq!((b1.port, b2.port), (2, 3), "the ports the flows name");
    a.neigh("10.1.0.100", &[2, 0, 0, 0, 0, 0x64]);
    lab.start(DNAT_LB);
    let (mut aa, mut b1a, mut b2a) = (a.agent(), b1.agent(), b2.agent());
    b1a.tcp_echo_server("10.1.0.11", 8080, "b1 saw {peer}:");
    b2a.tcp_echo_server("10.1.0.12", 8080, "b2 saw {peer}:");

    let sports: Vec<u16> = (41000..41012).collect();
    for &sport in &sports {
        let id = format!("c{sport}");
        let got = aa
            .tcp_connect(&id, "10.1.0.100", 80, Some(sport), LONG)
            .unwrap_or_else(|e| panic!("connect from port {sport} to the VIP: {e}"));
        assert_eq!(got, sport);
        aa.tcp_send(&id, "hi");
        let backend = if sport % 2 == 0 { "b1" } else { "b2" };
        let want = format!("{backend} saw 10.1.0.1:{sport}:hi");
        assert_eq!(aa.tcp_recv(&id, want.len(), LONG).unwrap(), want);
    }

    let ct = lab.conntrack(&[]);
    assert_eq!(ct.len(), sports.len(), "{}", show(&ct));
    for e in &ct {
        assert_eq!((e.proto.as_str(), e.zone), ("tcp", 1), "{e:?}");
        assert_eq!(
            (e.orig.src.as_str(), e.orig.dst.as_str(), e.orig.dport),
            ("10.1.0.1", "10.1.0.100", Some(80)),
            "{e:?}"
        );
        let sport = e.orig.sport.expect("sport");
        assert!(sports.contains(&sport), "{e:?}");
        let backend = if sport % 2 == 0 {
            "10.1.0.11"
        } else {
            "10.1.0.12"
        };
        assert_eq!(
            (e.reply.src.as_str(), e.reply.sport),
            (backend, Some(8080)),
            "{e:?}"
        );
        assert_eq!(
            (e.reply.dst.as_str(), e.reply.dport),
            ("10.1.0.1", Some(sport)),
            "{e:?}"
        );
        assert!(e.seen_reply, "{e:?}");
    }
}
