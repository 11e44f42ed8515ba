//! The `ferrovs-flows` binary: `check` and `trace` as operators use them.

use std::path::Path;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferrovs-flows"))
}

fn corpus(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn check_prints_each_flow_in_dump_flows_syntax() {
    let out = bin()
        .args(["check", &corpus("firewall.flows")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let n_flows = std::fs::read_to_string(corpus("firewall.flows"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .count();
    assert_eq!(text.lines().count(), n_flows);
    assert!(
        text.lines()
            .all(|l| l.starts_with(" cookie=0x0, duration=0.000s, table=")),
        "{text}"
    );
    assert!(
        text.contains(
            "table=0, n_packets=0, n_bytes=0, priority=100,ip,in_port=1 actions=ct(table=1,zone=1)"
        ),
        "{text}"
    );
}

#[test]
fn check_reports_the_first_bad_line() {
    let dir = std::env::temp_dir().join(format!("ferrovs-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.flows");
    std::fs::write(&f, "# comment\nip actions=drop\n\ntcp,tp_dst=80 actions=output:1\nip,tp_dst=80 actions=drop\nip,nw_src=1.2.3.4/40 actions=drop\n").unwrap();
    let out = bin().args(["check", f.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim(), "line 5: `tp_dst=80`: missing prerequisite: tp_dst needs tcp, udp or sctp (or their v6 forms, and not nw_frag=later)");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn trace_follows_recirculation_with_given_ct_states() {
    let out = bin()
        .args([
            "trace",
            &corpus("firewall.flows"),
            "in_port=2,tcp,nw_src=93.184.216.34,nw_dst=10.0.0.5,tp_src=80,tp_dst=40000",
            "--ct-state",
            "trk+est+rpl",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let t = String::from_utf8(out.stdout).unwrap();
    assert!(t.contains(" 0. ip,in_port=2, priority 100"), "{t}");
    assert!(
        t.contains("Datapath actions: ct(zone=1),recirc(0x2)"),
        "{t}"
    );
    assert!(
        t.contains("recirc(0x2) - resume conntrack with ct_state=est|rpl|trk"),
        "{t}"
    );
    assert!(
        t.contains(" 1. ct_state=+est+rpl+trk,ip,in_port=2, priority 200"),
        "{t}"
    );
    assert!(t.contains("Datapath actions: 1"), "{t}");
}

#[test]
fn trace_reports_table_miss_and_normal() {
    let out = bin()
        .args([
            "trace",
            &corpus("firewall.flows"),
            "in_port=2,arp,dl_dst=ff:ff:ff:ff:ff:ff",
            "--ports",
            "1,2,3:vlan=5",
        ])
        .output()
        .unwrap();
    let t = String::from_utf8(out.stdout).unwrap();
    assert!(t.contains("NORMAL: flooding VLAN 0"), "{t}");
    assert!(
        t.contains("Datapath actions: 1\n"),
        "port 3 is in another VLAN: {t}"
    );
    let out = bin()
        .args(["trace", &corpus("lb.flows"), "in_port=9,ipv6"])
        .output()
        .unwrap();
    let t = String::from_utf8(out.stdout).unwrap();
    assert!(t.contains(" 0. priority 0"), "{t}");
    assert!(
        t.contains("Datapath actions: drop\nDrop reason: no output action"),
        "{t}"
    );
}

#[test]
fn bad_arguments_are_reported() {
    let out = bin()
        .args(["trace", &corpus("lb.flows"), "in_port=1,tp_dst=x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`x`"));
    let out = bin()
        .args([
            "trace",
            &corpus("lb.flows"),
            "ip",
            "--ct-state",
            "trk+bogus",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));
    let out = bin().args(["frobnicate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = bin().args(["--help"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ferrovs-flows trace FILE"));
}
