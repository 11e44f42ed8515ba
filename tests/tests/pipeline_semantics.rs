//! Zones, recirculation chains, registers across recirculation, cache
//! invalidation on flow changes, and the same answers with the caches off.

use datapath::pipeline::PipelineConfig;
use ferrovs_tests::{frame, Builder, Harness, FIREWALL};

fn udp(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
    Builder::v4(src.parse().unwrap(), dst.parse().unwrap()).udp(sport, dport, b"payload")
}

#[test]
fn zones_with_overlapping_addresses_stay_apart() {
    // Tenant A: ports 1 (inside) / 2 (outside) in zone 1.
    // Tenant B: ports 3 / 4 in zone 2, the very same addresses.
    let flows = "\
table=0,ip,in_port=1,actions=ct(table=1,zone=1)
table=0,ip,in_port=2,actions=ct(table=2,zone=1)
table=0,ip,in_port=3,actions=ct(table=3,zone=2)
table=0,ip,in_port=4,actions=ct(table=4,zone=2)
table=1,ip,ct_state=+trk+new,actions=ct(commit,zone=1),output:2
table=1,ip,ct_state=+trk+est,actions=output:2
table=2,ip,ct_state=+trk+est,actions=output:1
table=3,ip,ct_state=+trk+new,actions=ct(commit,zone=2),output:4
table=3,ip,ct_state=+trk+est,actions=output:4
table=4,ip,ct_state=+trk+est,actions=output:3
";
    let mut h = Harness::new(&[1, 2, 3, 4], flows);
    let req = udp("10.0.0.1", "10.0.0.2", 1000, 53);
    let rep = udp("10.0.0.2", "10.0.0.1", 53, 1000);
    assert_eq!(Harness::ports_of(&h.inject(1, &frame(1, 2, &req))), vec![2]);
    // Tenant B's reply for the same tuple: zone 2 has no such connection.
    assert!(
        h.inject(4, &frame(4, 3, &rep)).is_empty(),
        "zone 1's entry must not admit zone 2's reply"
    );
    assert_eq!(Harness::ports_of(&h.inject(2, &frame(2, 1, &rep))), vec![1]);
    // Now tenant B opens the same tuple in its own zone.
    assert_eq!(Harness::ports_of(&h.inject(3, &frame(3, 4, &req))), vec![4]);
    assert_eq!(Harness::ports_of(&h.inject(4, &frame(4, 3, &rep))), vec![3]);
    let ct = h.dump_conntrack();
    assert_eq!(ct.len(), 2, "{ct:?}");
    assert!(ct.iter().any(|l| l.contains("zone=1")) && ct.iter().any(|l| l.contains("zone=2")));
}

#[test]
fn recirculation_chain_through_two_zones_keeps_registers() {
    let flows = "\
table=0,ip,in_port=1,actions=load:0x2a->NXM_NX_REG3[],ct(table=1,zone=7)
table=1,ip,ct_state=+trk,ct_zone=7,reg3=0x2a,actions=load:0x63->NXM_NX_REG4[],ct(table=2,zone=8,commit)
table=2,ct_state=+trk+new,ct_zone=8,reg3=0x2a,reg4=0x63,actions=output:2
";
    let mut h = Harness::new(&[1, 2], flows);
    let out = h.inject(1, &frame(1, 2, &udp("10.0.0.1", "10.0.0.2", 1, 2)));
    assert_eq!(Harness::ports_of(&out), vec![2]);
    assert_eq!(h.pipeline.counters.recirculations, 2);
    // Second packet of the flow: all three passes hit the caches.
    let upcalls = h.pipeline.counters.upcalls;
    let out = h.inject(1, &frame(1, 2, &udp("10.0.0.1", "10.0.0.2", 1, 2)));
    // Unreplied UDP stays +new (as in the kernel), so the same three passes
    // run again, all from the caches.
    assert_eq!(Harness::ports_of(&out), vec![2]);
    assert_eq!(
        h.pipeline.counters.upcalls, upcalls,
        "no translation for a repeat"
    );
    assert_eq!(h.pipeline.counters.recirculations, 4);
    let ct = h.dump_conntrack();
    assert_eq!(ct.len(), 1, "only zone 8 committed: {ct:?}");
    assert!(ct[0].contains("zone=8"));
}

#[test]
fn a_recirculation_loop_is_cut_at_the_depth_limit() {
    let flows = "table=0,ip,actions=ct(table=0,zone=1)\n";
    let mut h = Harness::new(&[1, 2], flows);
    assert!(h
        .inject(1, &frame(1, 2, &udp("10.0.0.1", "10.0.0.2", 1, 2)))
        .is_empty());
    assert_eq!(h.pipeline.counters.recirc_too_deep, 1);
}

#[test]
fn deleted_flow_stops_matching_at_once_and_new_flows_take_effect() {
    let mut h = Harness::new(
        &[1, 2, 3],
        "table=0,priority=10,in_port=1,ip,actions=output:2\n",
    );
    let pkt = frame(1, 2, &udp("10.0.0.1", "10.0.0.2", 1, 2));
    for _ in 0..5 {
        assert_eq!(Harness::ports_of(&h.inject(1, &pkt)), vec![2]);
    }
    assert!(h.pipeline.megaflow_count() >= 1, "cached");
    h.ofctl("del-flows", "in_port=1");
    assert!(
        h.inject(1, &pkt).is_empty(),
        "the cached megaflow must not survive del-flows"
    );
    h.ofctl(
        "add-flow",
        "table=0,priority=10,in_port=1,ip,actions=output:3",
    );
    assert_eq!(Harness::ports_of(&h.inject(1, &pkt)), vec![3]);
    h.ofctl(
        "add-flow",
        "table=0,priority=20,in_port=1,ip,nw_dst=10.0.0.2,actions=output:2,output:3",
    );
    assert_eq!(Harness::ports_of(&h.inject(1, &pkt)), vec![2, 3]);
    h.ofctl(
        "mod-flows",
        "table=0,in_port=1,ip,nw_dst=10.0.0.2,actions=drop",
    );
    assert!(h.inject(1, &pkt).is_empty(), "mod-flows applies at once");
    assert!(h.pipeline.counters.cache_flushes >= 4);
}

#[test]
fn timeout_policy_change_invalidates_cached_programs() {
    let flows = "table=0,ip,in_port=1,actions=ct(commit,zone=1,timeout=short),output:2\n";
    let mut h = Harness::new(&[1, 2], flows);
    let pkt = frame(1, 2, &udp("10.0.0.1", "10.0.0.2", 1, 2));
    assert_eq!(Harness::ports_of(&h.inject(1, &pkt)), vec![2]);
    let flushes = h.pipeline.counters.cache_flushes;
    h.sw.ct
        .policies
        .set("short", &ct::TimeoutPolicy::parse("udp_first=3").unwrap())
        .unwrap();
    h.sw.invalidate_caches();
    assert_eq!(Harness::ports_of(&h.inject(1, &pkt)), vec![2]);
    assert_eq!(h.pipeline.counters.cache_flushes, flushes + 1);
}

/// A mixed workload, for comparing cache configurations.
fn workload() -> Vec<(u32, Vec<u8>)> {
    let mut v = Vec::new();
    for i in 0..40u16 {
        // 12 distinct flows, each seen several times; replies for some
        // flows before they were opened; strangers.
        let src = format!("10.0.0.{}", 1 + i % 4);
        v.push((1, frame(1, 2, &udp(&src, "192.0.2.1", 1000 + i % 3, 53))));
        v.push((
            2,
            frame(2, 1, &udp("192.0.2.1", &src, 53, 1000 + (i + 1) % 3)),
        ));
        v.push((2, frame(2, 1, &udp("192.0.2.7", &src, 99, 1000 + i % 3))));
    }
    v
}

#[test]
fn caches_do_not_change_what_the_switch_does() {
    let run = |cfg: PipelineConfig| {
        let mut h = Harness::with_config(&[1, 2], FIREWALL, cfg);
        let mut out = Vec::new();
        for (port, f) in workload() {
            out.extend(h.inject(port, &f));
        }
        (out, h.pipeline.counters)
    };
    let (all, c_all) = run(PipelineConfig {
        emc_insert_inv_prob: 1,
        ..Default::default()
    });
    let (no_emc, c_no_emc) = run(PipelineConfig {
        emc: false,
        ..Default::default()
    });
    let (none, c_none) = run(PipelineConfig {
        emc: false,
        megaflow: false,
        ..Default::default()
    });
    assert!(!all.is_empty());
    assert_eq!(all, no_emc);
    assert_eq!(all, none);
    assert!(c_all.emc_hits > 0, "{c_all:?}");
    assert_eq!(c_no_emc.emc_hits, 0);
    assert!(c_no_emc.megaflow_hits > 0);
    assert_eq!(c_none.emc_hits + c_none.megaflow_hits, 0);
    assert_eq!(c_none.upcalls, c_none.packets + c_none.recirculations);
}

#[test]
fn normal_learns_macs_through_the_datapath() {
    let mut h = Harness::new(&[1, 2, 3], "actions=NORMAL\n");
    let a_to_b = frame(1, 2, &udp("10.0.0.1", "10.0.0.2", 1, 2));
    let b_to_a = frame(2, 1, &udp("10.0.0.2", "10.0.0.1", 2, 1));
    let mut flood = Harness::ports_of(&h.inject(1, &a_to_b));
    flood.sort();
    assert_eq!(flood, vec![2, 3], "unknown destination floods");
    assert_eq!(
        Harness::ports_of(&h.inject(2, &b_to_a)),
        vec![1],
        "host 1 was learned on port 1"
    );
    assert_eq!(
        Harness::ports_of(&h.inject(1, &a_to_b)),
        vec![2],
        "host 2 was learned on port 2"
    );
    // Host 2 moves to port 3: learning follows, the cached decision does not stick.
    let b_from_3 = frame(2, 1, &udp("10.0.0.2", "10.0.0.1", 2, 1));
    assert_eq!(Harness::ports_of(&h.inject(3, &b_from_3)), vec![1]);
    assert_eq!(Harness::ports_of(&h.inject(1, &a_to_b)), vec![3]);
}

#[test]
fn rewrites_in_the_pipeline_keep_checksums_right() {
    use smoltcp::wire::{EthernetFrame, IpAddress, Ipv4Address, Ipv4Packet, UdpPacket};
    let flows = "in_port=1,udp,actions=mod_nw_dst:10.9.9.9,mod_tp_dst:5353,mod_dl_dst:02:00:00:00:00:09,dec_ttl,output:2\n";
    let mut h = Harness::new(&[1, 2], flows);
    let out = h.inject(1, &frame(1, 2, &udp("10.0.0.1", "10.0.0.2", 1000, 53)));
    assert_eq!(Harness::ports_of(&out), vec![2]);
    let eth = EthernetFrame::new_checked(&out[0].1[..]).unwrap();
    assert_eq!(eth.dst_addr().as_bytes(), &[2, 0, 0, 0, 0, 9]);
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ip.verify_checksum(), "IPv4 header checksum");
    assert_eq!(ip.dst_addr(), Ipv4Address::new(10, 9, 9, 9));
    assert_eq!(ip.hop_limit(), 63);
    let udp_pkt = UdpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!(udp_pkt.dst_port(), 5353);
    let (src, dst) = (
        IpAddress::Ipv4(ip.src_addr()),
        IpAddress::Ipv4(ip.dst_addr()),
    );
    assert!(
        udp_pkt.verify_checksum(&src, &dst),
        "UDP checksum after address and port rewrites"
    );
    // A second packet of the flow takes the cached program: same result.
    let again = h.inject(1, &frame(1, 2, &udp("10.0.0.1", "10.0.0.2", 1000, 53)));
    assert_eq!(again, out);
    assert!(
        h.pipeline.counters.batch_hits
            + h.pipeline.counters.emc_hits
            + h.pipeline.counters.megaflow_hits
            >= 1
    );
}
