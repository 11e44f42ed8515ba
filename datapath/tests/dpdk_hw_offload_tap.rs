//! rte_flow on DPDK's `net_tap` (a kernel tap device; rules become TC
//! flower filters): which rules it validates, and what the offloader's
//! probe makes of it. Needs root and /dev/net/tun; without them the test
//! prints a SKIP line and passes, unless `FERROVS_REQUIRE_ROOT=1`, where it
//! fails (scripts/test.sh sets that when it runs as root).
//!
//! The outcome of creating a rule depends on the kernel: net_tap needs the
//! `multiq` qdisc and the `flower` classifier. The test checks for them
//! itself (with `tc` on a scratch veth pair) and asserts the matching
//! result: partial (QUEUE only) offload with a rule created and removed, or
//! a software-only port whose probe names the failed create.
//!
//! `cargo test -p datapath --features dpdk --test dpdk_hw_offload_tap`.
#![cfg(all(feature = "dpdk", target_os = "linux"))]

use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use datapath::hw_offload::engine::for_switch;
use datapath::hw_offload::{FastRule, HwOffloader, PortMode};
use datapath::packet::PortNo;
use datapath::port::dpdk::{init_eal, shared_mempool, DpdkPort};
use datapath::port::Port;
use datapath::switch::{PortEntry, Switch};
use dpdk_bindings::flow::{self, FlowAction, FlowItem, FlowRule};
use ofproto::pipeline::VlanMode;

const IFACE: &str = "fvhwtap0";
const ENOTSUP: i32 = 95;

fn skip_or_fail(reason: &str) {
    if std::env::var("FERROVS_REQUIRE_ROOT").as_deref() == Ok("1") {
        panic!("hw offload tap test cannot run and FERROVS_REQUIRE_ROOT=1: {reason}");
    }
    let _ = writeln!(std::io::stderr(), "SKIP dpdk_hw_offload_tap: {reason}");
}

fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Whether the kernel has what net_tap's rte_flow needs (`multiq` qdisc,
/// `flower` classifier), tried on a scratch veth pair.
fn kernel_has_tc_flower() -> bool {
    let (a, b) = ("fvhwtcA", "fvhwtcB");
    let _ = sh(&["ip", "link", "del", a]);
    assert!(
        sh(&["ip", "link", "add", a, "type", "veth", "peer", "name", b]),
        "creating a veth pair for the tc check"
    );
    let ok = sh(&[
        "tc", "qdisc", "add", "dev", a, "root", "handle", "1:", "multiq",
    ]) && sh(&["tc", "qdisc", "add", "dev", a, "ingress"])
        && sh(&[
            "tc", "filter", "add", "dev", a, "parent", "ffff:", "protocol", "ip", "flower",
            "ip_proto", "udp", "classid", "1:1",
        ]);
    let _ = sh(&["ip", "link", "del", a]);
    ok
}

fn rule(actions: Vec<FlowAction>) -> FlowRule {
    FlowRule {
        pattern: vec![
            FlowItem::Eth,
            FlowItem::Ipv4 {
                src: [10, 0, 0, 1],
                dst: [10, 0, 0, 2],
            },
            FlowItem::Udp { src: 1, dst: 2 },
        ],
        actions,
        ..Default::default()
    }
}

#[test]
fn hw_offload_tap_root() {
    if !nix::unistd::geteuid().is_root() {
        return skip_or_fail("needs root (creates a tap interface)");
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return skip_or_fail("no /dev/net/tun");
    }
    if !sh(&["tc", "-V"]) || !sh(&["ip", "-V"]) {
        return skip_or_fail("needs the ip and tc tools (iproute2)");
    }
    let flower = kernel_has_tc_flower();
    let args = dpdk_bindings::eal::vdev_only_args(
        &format!("ferrovs-hwtap-{}", std::process::id()),
        &[&format!("net_tap0,iface={IFACE}")],
    );
    init_eal(&args).expect("EAL init with net_tap");
    let pool = shared_mempool(2048).expect("mempool");
    let tap = Arc::new(DpdkPort::open("tap", PortNo(1), "net_tap0", 1, 1, pool).expect("open"));
    let dev = tap.dpdk_device().unwrap();

    // What net_tap validates (parsing only: the same on every kernel).
    for (what, r) in [
        ("udp queue", rule(vec![FlowAction::Queue(0)])),
        ("drop", rule(vec![FlowAction::Drop])),
        ("passthru", rule(vec![FlowAction::Passthru])),
        (
            "tcp queue",
            FlowRule {
                pattern: vec![
                    FlowItem::Eth,
                    FlowItem::Ipv4 {
                        src: [10, 0, 0, 1],
                        dst: [10, 0, 0, 2],
                    },
                    FlowItem::Tcp {
                        src: 1,
                        dst: 2,
                        flags_clear: 0,
                    },
                ],
                actions: vec![FlowAction::Queue(0)],
                ..Default::default()
            },
        ),
        (
            "ipv6 queue",
            FlowRule {
                pattern: vec![
                    FlowItem::Eth,
                    FlowItem::Ipv6 {
                        src: [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                        dst: [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                    },
                    FlowItem::Udp { src: 1, dst: 2 },
                ],
                actions: vec![FlowAction::Queue(0)],
                ..Default::default()
            },
        ),
    ] {
        if let Err(e) = flow::validate(&dev, &r) {
            panic!("net_tap must validate {what}: {e}");
        }
    }
    for (what, actions) in [
        ("mark", vec![FlowAction::Mark(7), FlowAction::Queue(0)]),
        ("count", vec![FlowAction::Count, FlowAction::Queue(0)]),
        (
            "set_ipv4_src",
            vec![FlowAction::SetIpv4Src([10, 9, 9, 9]), FlowAction::Queue(0)],
        ),
        (
            "set_tp_dst",
            vec![FlowAction::SetTpDst(99), FlowAction::Queue(0)],
        ),
        ("port_id", vec![FlowAction::PortId(0)]),
        ("represented_port", vec![FlowAction::RepresentedPort(0)]),
    ] {
        let e = flow::validate(&dev, &rule(actions)).expect_err(what);
        assert_eq!(e.errno, ENOTSUP, "{what}: {e}");
        assert_eq!(e.kind_name(), "action", "{what}: {e}");
    }

    // The offloader's probe.
    let sw = Switch::new(Default::default());
    sw.add_port(PortEntry {
        port: tap.clone(),
        vlan: VlanMode::Access(0),
        kind: "dpdk".into(),
    })
    .unwrap();
    let hw = for_switch(&sw, 1, Default::default()).expect("offloader");
    let mode = hw.probe(PortNo(1));
    let sink = hw.sink(0);
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&[10, 1, 1, 1]);
    let mut dst = [0u8; 16];
    dst[..4].copy_from_slice(&[10, 1, 1, 2]);
    let r = FastRule {
        in_port: PortNo(1),
        ipv6: false,
        src,
        dst,
        proto: 17,
        sport: 4000,
        dport: 53,
        set_src: None,
        set_dst: None,
        set_sport: None,
        set_dport: None,
        other_rewrites: false,
        out: PortNo(1),
    };
    sink.installed(1, &r);
    assert!(hw.wait_idle(Duration::from_secs(10)));
    let s = hw.status();
    if flower {
        assert_eq!(mode, PortMode::Partial { mark: false }, "kernel has flower");
        assert_eq!((s.installed, s.failed, s.active), (1, 0, 1), "{s:?}");
        sink.removed(1);
        assert!(hw.wait_idle(Duration::from_secs(10)));
        let s = hw.status();
        assert_eq!((s.installed, s.removed, s.active), (1, 1, 0), "{s:?}");
    } else {
        match &mode {
            PortMode::None(why) => assert!(
                why.contains("queue validated but create failed"),
                "no flower in the kernel: the trial create must fail: {why}"
            ),
            m => panic!("kernel without multiq/flower: expected none, got {m}"),
        }
        assert_eq!((s.create_calls, s.not_offloadable), (0, 1), "{s:?}");
        let _ = writeln!(
            std::io::stderr(),
            "dpdk_hw_offload_tap: kernel lacks multiq/flower: net_tap is software only ({})",
            s.to_text().trim_end()
        );
    }
    hw.stop();
    drop(tap);
}
