//! rte_flow hardware offload over vdevs without flow support (`net_ring`,
//! `net_null`, `net_pcap`; no root, no hugepages): the rte_flow wrappers
//! report the driver's refusal (ENOSYS), the offloader's probe marks every
//! port software only, no rule is attempted afterwards, and the software
//! fast path keeps forwarding.
//!
//! `cargo test -p datapath --features dpdk --test dpdk_hw_offload`.
#![cfg(feature = "dpdk")]

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use ct::build::{ethernet_with, Builder};
use datapath::hw_offload::engine::for_switch;
use datapath::hw_offload::{HwOffloader, PortMode};
use datapath::packet::{Packet, PacketBatch, PortNo};
use datapath::pipeline::{Pipeline, PipelineConfig};
use datapath::port::dpdk::{init_eal, shared_mempool, DpdkPort};
use datapath::port::Port;
use datapath::switch::{PortEntry, Switch};
use dpdk_bindings::flow::{self, FlowAction, FlowItem, FlowRule};
use ofproto::pipeline::VlanMode;

const UDP_FW: &str = "\
table=0,priority=10,udp,actions=ct(table=1,zone=1)
table=1,priority=10,ct_state=+trk+new-inv,udp,in_port=1,actions=ct(commit,zone=1),output:2
table=1,priority=10,ct_state=+trk+est-inv,udp,in_port=1,actions=output:2
table=1,priority=10,ct_state=+trk+est-inv,udp,in_port=2,actions=output:1
";

const ENOSYS: i32 = 38;

fn setup() -> dpdk_bindings::Mempool {
    let dir = std::env::temp_dir().join(format!("ferrovs-hwoff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // An empty capture (global header only) for net_pcap's rx side.
    let rx = dir.join("rx.pcap");
    let mut hdr = Vec::new();
    hdr.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    hdr.extend_from_slice(&2u16.to_le_bytes());
    hdr.extend_from_slice(&4u16.to_le_bytes());
    hdr.extend_from_slice(&[0; 8]);
    hdr.extend_from_slice(&65535u32.to_le_bytes());
    hdr.extend_from_slice(&1u32.to_le_bytes());
    std::fs::write(&rx, hdr).unwrap();
    let pcap = format!(
        "net_pcap0,rx_pcap={},tx_pcap={}",
        rx.display(),
        dir.join("tx.pcap").display()
    );
    let args = dpdk_bindings::eal::vdev_only_args(
        &format!("ferrovs-hwoff-{}", std::process::id()),
        &["net_ring0", "net_ring1", "net_null0", &pcap],
    );
    init_eal(&args).expect("EAL init");
    shared_mempool(4096).expect("mempool")
}

fn udp(from: u32, src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let l3 = Builder::v4(src, dst).udp(sport, dport, b"payload");
    ethernet_with([2, 0, 0, 0, 0, from as u8], [2, 0, 0, 0, 0, 9], &l3)
}

/// Send `frame` into ring port `port` (a net_ring is a loopback), run it
/// through the pipeline, return what each ring port sent.
fn inject(
    pipeline: &mut Pipeline,
    rings: &[Arc<DpdkPort>],
    port: usize,
    frame: &[u8],
) -> Vec<(u32, Vec<u8>)> {
    let p = &rings[port];
    let mut b = PacketBatch::new();
    b.push(Packet::from_bytes(frame)).unwrap();
    assert_eq!(p.tx_burst(0, &mut b, &mut pipeline.pool), 1);
    let mut batch = PacketBatch::new();
    assert_eq!(p.rx_burst(0, &mut batch, &mut pipeline.pool), 1);
    pipeline.process(&mut batch);
    pipeline.flush();
    let mut out = Vec::new();
    for r in rings {
        let mut b = PacketBatch::new();
        while r.rx_burst(0, &mut b, &mut pipeline.pool) > 0 {
            for pkt in b.drain() {
                out.push((r.port_no().0, pkt.data().to_vec()));
            }
        }
    }
    out
}

#[test]
fn probe_reports_none_and_software_keeps_forwarding() {
    let pool = setup();
    let open = |name: &str, no: u32, dev: &str| {
        Arc::new(DpdkPort::open(name, PortNo(no), dev, 1, 1, pool).expect("open"))
    };
    let rings = vec![open("r0", 1, "net_ring0"), open("r1", 2, "net_ring1")];
    let null = open("null", 3, "net_null0");
    let pcap = open("pcap", 4, "net_pcap0");

    // The wrappers against a real driver without flow ops.
    let dev = null.dpdk_device().expect("a DPDK port has a device");
    let rule = FlowRule {
        pattern: vec![
            FlowItem::Eth,
            FlowItem::Ipv4 {
                src: [10, 0, 0, 1],
                dst: [10, 0, 0, 2],
            },
            FlowItem::Udp { src: 1, dst: 2 },
        ],
        actions: vec![FlowAction::Queue(0)],
        ..Default::default()
    };
    let e = flow::validate(&dev, &rule).expect_err("net_null has no rte_flow");
    assert_eq!(e.errno, ENOSYS, "{e}");
    assert_eq!(e.call, "rte_flow_validate");
    let e = flow::create(&dev, &rule).expect_err("no create either");
    assert_eq!((e.errno, e.call), (ENOSYS, "rte_flow_create"), "{e}");
    assert!(flow::flush(&dev).is_err());

    let sw = Switch::new(ct::TrackerConfig {
        max_conns: 10_000,
        shards: 16,
        seed: Some(7),
        liberal: false,
    });
    for p in rings.iter().chain([&null, &pcap]) {
        sw.add_port(PortEntry {
            port: p.clone(),
            vlan: VlanMode::Access(0),
            kind: "dpdk".into(),
        })
        .unwrap();
    }
    sw.bridge.ofctl("add-flows", UDP_FW, 0).unwrap();
    let hw = for_switch(&sw, 1, Default::default()).expect("offloader");
    // Probed at start: every port software only, with the driver's reason.
    let s = hw.status();
    assert_eq!(s.ports.len(), 4, "{s:?}");
    for p in &s.ports {
        match &p.mode {
            PortMode::None(why) => assert!(why.contains("errno 38"), "{}: {why}", p.name),
            m => panic!("port {} must be software only, got {m}", p.name),
        }
    }
    sw.set_hw_offload(Some(hw.clone()));
    let mut pipeline = Pipeline::new(
        sw.clone(),
        PipelineConfig {
            flow_offload: true,
            ..Default::default()
        },
        0,
    );
    let (a, b) = (Ipv4Addr::new(192, 168, 1, 10), Ipv4Addr::new(10, 0, 0, 2));
    for i in 0..4u16 {
        let sport = 30_000 + i;
        for _ in 0..3 {
            let o = inject(&mut pipeline, &rings, 0, &udp(1, a, b, sport, 53));
            assert_eq!(o.iter().map(|x| x.0).collect::<Vec<_>>(), vec![2]);
            let o = inject(&mut pipeline, &rings, 1, &udp(2, b, a, 53, sport));
            assert_eq!(o.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1]);
        }
    }
    assert_eq!(pipeline.offload_count(), 8, "software fast path entries");
    assert!(pipeline.counters.offload_hits > 0);
    assert!(hw.wait_idle(Duration::from_secs(10)));
    let s = hw.status();
    assert_eq!(s.not_offloadable, 8, "{s:?}");
    assert_eq!((s.installed, s.create_calls, s.failed), (0, 0, 0), "{s:?}");
    hw.stop();
}
