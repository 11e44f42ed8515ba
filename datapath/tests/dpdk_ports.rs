//! DPDK ports over virtual devices (no NIC, no hugepages): `cargo test -p
//! datapath --features dpdk --test dpdk_ports`.
//!
//! One EAL per test process (`--no-huge -m 256 --no-pci`, a private
//! `--file-prefix`), shared by every test; each test opens its own vdevs so
//! the tests run in parallel. A `net_ring` vdev is a loopback: what is sent
//! on it comes back on its own rx queue, so a test plays the outside world by
//! transmitting on a port (frames go in) and receiving from it (frames that
//! the switch sent out).
#![cfg(feature = "dpdk")]

use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};

use ct::build::{ethernet_with, Builder, Tcp};
use ct::packet::tcp_flags::{ACK, SYN};
use datapath::packet::{Packet, PacketBatch, PacketPool, PortNo};
use datapath::pipeline::{Pipeline, PipelineConfig};
use datapath::port::dpdk::{init_eal, shared_mempool, DpdkPort};
use datapath::port::{LinkState, Port, PortDropReason};
use datapath::switch::{PortEntry, Switch};
use dpdk_bindings::Mempool;
use ofproto::pipeline::VlanMode;

const VDEVS: &[&str] = &[
    "net_ring0",
    "net_ring1",
    "net_ring2",
    "net_ring3",
    "net_ring4",
    "net_null0",
    "net_null1",
];

/// The process-wide EAL and mbuf pool.
fn pool() -> Mempool {
    static POOL: OnceLock<Mempool> = OnceLock::new();
    *POOL.get_or_init(|| {
        let args = dpdk_bindings::eal::vdev_only_args(
            &format!("ferrovs-dpdkports-{}", std::process::id()),
            VDEVS,
        );
        init_eal(&args).expect("EAL init");
        // A second init is a no-op returning the first result.
        init_eal(&["--bogus".to_string()]).expect("later init calls are no-ops");
        shared_mempool(8192).expect("mempool")
    })
}

fn open(name: &str, no: u32, device: &str) -> Arc<DpdkPort> {
    Arc::new(DpdkPort::open(name, PortNo(no), device, 1, 1, pool()).expect("open"))
}

fn mac(n: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0, n]
}

/// Sends `frames` into `port` from outside (heap packets, copied into mbufs).
fn send_in(port: &DpdkPort, frames: &[Vec<u8>], pool: &mut PacketPool) {
    let mut b = PacketBatch::new();
    for f in frames {
        b.push(Packet::from_bytes(f)).unwrap();
    }
    assert_eq!(port.tx_burst(0, &mut b, pool), frames.len());
}

/// Receives everything pending on `port` (what the switch sent out of it,
/// or what was sent into it).
fn drain(port: &DpdkPort, pool: &mut PacketPool) -> Vec<Packet> {
    let mut out = Vec::new();
    loop {
        let mut b = PacketBatch::new();
        if port.rx_burst(0, &mut b, pool) == 0 {
            return out;
        }
        out.extend(b.drain());
    }
}

struct Sw {
    pipeline: Pipeline,
    ports: Vec<Arc<DpdkPort>>,
}

impl Sw {
    fn new(ports: Vec<Arc<DpdkPort>>, flows: &str) -> Sw {
        let sw = Switch::new(ct::TrackerConfig {
            max_conns: 10_000,
            shards: 16,
            seed: Some(7),
            liberal: false,
        });
        for p in &ports {
            sw.add_port(PortEntry {
                port: p.clone(),
                vlan: VlanMode::Access(0),
                kind: "dpdk".into(),
            })
            .unwrap();
        }
        sw.bridge.ofctl("add-flows", flows, 0).expect("flows");
        let pipeline = Pipeline::new(sw, PipelineConfig::default(), 0);
        Sw { pipeline, ports }
    }

    fn port(&self, no: u32) -> &DpdkPort {
        self.ports
            .iter()
            .find(|p| p.port_no() == PortNo(no))
            .unwrap()
    }

    /// Sends `frames` into port `no`, runs one rx burst of that port through
    /// the pipeline, and returns (data pointers of the received packets, what
    /// came out of each port as (port, packet)).
    fn inject(&mut self, no: u32, frames: &[Vec<u8>]) -> (Vec<usize>, Vec<(u32, Packet)>) {
        let port = self.ports[self.idx(no)].clone();
        send_in(&port, frames, &mut self.pipeline.pool);
        let mut batch = PacketBatch::new();
        assert_eq!(
            port.rx_burst(0, &mut batch, &mut self.pipeline.pool),
            frames.len()
        );
        let ptrs = batch.iter().map(|p| p.data().as_ptr() as usize).collect();
        for (p, f) in batch.iter().zip(frames) {
            assert_eq!(p.storage().kind(), "mbuf", "rx gives mbuf-backed packets");
            assert_eq!(p.meta.in_port, PortNo(no));
            assert_eq!(p.data(), &f[..]);
        }
        self.pipeline.process(&mut batch);
        self.pipeline.flush();
        let mut out = Vec::new();
        for p in self.ports.clone() {
            for pkt in drain(&p, &mut self.pipeline.pool) {
                out.push((p.port_no().0, pkt));
            }
        }
        (ptrs, out)
    }

    fn idx(&self, no: u32) -> usize {
        self.ports
            .iter()
            .position(|p| p.port_no() == PortNo(no))
            .unwrap()
    }
}

const FIREWALL: &str = "\
table=0,priority=10,ip,in_port=1,actions=ct(table=1,zone=1)
table=0,priority=10,ip,in_port=2,actions=ct(table=2,zone=1)
table=1,priority=10,ct_state=+trk+new-inv,ip,actions=ct(commit,zone=1),output:2
table=1,priority=10,ct_state=+trk+est-inv,ip,actions=output:2
table=2,priority=10,ct_state=+trk+est-inv,ip,actions=output:1
";

fn inside() -> Builder {
    Builder::v4("10.0.0.1".parse().unwrap(), "192.0.2.9".parse().unwrap())
}

#[test]
fn stateful_firewall_over_net_ring_is_zero_copy() {
    let mut sw = Sw::new(
        vec![open("p1", 1, "net_ring0"), open("p2", 2, "net_ring1")],
        FIREWALL,
    );
    let synack = |sport: u16| {
        ethernet_with(
            mac(2),
            mac(1),
            &inside().reversed().tcp(
                &Tcp::new(80, sport)
                    .flags(SYN | ACK)
                    .seq(5000)
                    .ack(101)
                    .win(64000),
            ),
        )
    };
    // A reply from outside before the connection exists is dropped.
    let (_, out) = sw.inject(2, &[synack(40000)]);
    assert!(out.is_empty(), "unsolicited reply admitted: {out:?}");

    // Inside opens two connections: both SYNs come out of port 2 unchanged,
    // in the very mbufs they arrived in.
    let syns: Vec<Vec<u8>> = [40000u16, 40001]
        .iter()
        .map(|&sport| {
            ethernet_with(
                mac(1),
                mac(2),
                &inside().tcp(&Tcp::new(sport, 80).flags(SYN).seq(100).win(64000)),
            )
        })
        .collect();
    let copies_before = sw.port(2).copies();
    let (ptrs, out) = sw.inject(1, &syns);
    assert_eq!(out.len(), 2);
    for ((port, pkt), (syn, ptr)) in out.iter().zip(syns.iter().zip(&ptrs)) {
        assert_eq!(*port, 2);
        assert_eq!(pkt.data(), &syn[..], "identical bytes");
        assert_eq!(
            pkt.data().as_ptr() as usize,
            *ptr,
            "the mbuf received on port 1 is the one sent on port 2"
        );
    }
    assert_eq!(
        sw.port(2).copies(),
        copies_before,
        "forwarding mbuf packets copies nothing"
    );

    // Now the reply is admitted, to port 1 only.
    let (_, out) = sw.inject(2, &[synack(40000)]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, 1);
    assert_eq!(out[0].1.data(), &synack(40000)[..]);
    // A reply for a connection never opened is still dropped.
    let (_, out) = sw.inject(2, &[synack(40009)]);
    assert!(out.is_empty());
    // And the inside's ACK keeps flowing out.
    let ack = ethernet_with(
        mac(1),
        mac(2),
        &inside().tcp(&Tcp::new(40000, 80).flags(ACK).seq(101).ack(5001).win(64000)),
    );
    let (_, out) = sw.inject(1, std::slice::from_ref(&ack));
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].0, out[0].1.data()), (2, &ack[..]));

    let s1 = sw.port(1).stats();
    let s2 = sw.port(2).stats();
    // p1: 3 in from outside (tx) + 3 in again as rx (loopback), 1 out.
    assert_eq!(s1.rx_packets, 3 + 1);
    assert_eq!(s2.total_drops(), 0);
    assert_eq!(s1.total_drops(), 0);
    assert_eq!(sw.port(1).link_state(), LinkState::Up);
}

#[test]
fn header_rewrite_and_vlan_push_on_mbuf_packets() {
    let flows = "in_port=1,udp,actions=mod_nw_dst:10.9.9.9,mod_dl_dst:02:00:00:00:00:09,mod_vlan_vid:10,output:2\n";
    let mut sw = Sw::new(
        vec![open("r1", 1, "net_ring2"), open("r2", 2, "net_ring3")],
        flows,
    );
    let src: Ipv4Addr = "10.0.0.1".parse().unwrap();
    let frame = ethernet_with(
        mac(1),
        mac(2),
        &Builder::v4(src, "192.0.2.9".parse().unwrap()).udp(1000, 53, b"query"),
    );
    let untagged = ethernet_with(
        mac(1),
        mac(9),
        &Builder::v4(src, "10.9.9.9".parse().unwrap()).udp(1000, 53, b"query"),
    );
    let mut expected = untagged[..12].to_vec();
    expected.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
    expected.extend_from_slice(&untagged[12..]);

    let (ptrs, out) = sw.inject(1, std::slice::from_ref(&frame));
    assert_eq!(out.len(), 1);
    let (port, pkt) = &out[0];
    assert_eq!(*port, 2);
    assert_eq!(pkt.storage().kind(), "mbuf");
    assert_eq!(
        pkt.data(),
        &expected[..],
        "rewritten, tagged, checksums fixed"
    );
    // The tag went into the mbuf's headroom: the frame starts 4 bytes earlier
    // in the same buffer.
    assert_eq!(pkt.data().as_ptr() as usize, ptrs[0] - 4);
    assert_eq!(sw.port(2).copies(), 0);
}

/// Every PacketBuf operation on an mbuf-backed packet, against the same
/// operations on a heap packet.
#[test]
fn packet_ops_on_mbuf_storage_match_heap() {
    let pool = pool();
    let frame: Vec<u8> = (0u8..64).collect();
    let mut m = pool.alloc().unwrap();
    assert!(m.extend_from_slice(&frame));
    let mut p = Packet::from_mbuf(m, PortNo(3)).unwrap();
    let mut h = Packet::from_bytes(&frame);
    let cap = p.capacity();
    let ptr0 = p.data().as_ptr() as usize;
    assert_eq!(p.storage().kind(), "mbuf");
    assert_eq!(p.meta.in_port, PortNo(3));
    assert_eq!(p.headroom(), 128);
    assert_eq!(p.len(), 64);
    assert_eq!(p.headroom() + p.len() + p.tailroom(), cap);

    let check = |p: &Packet, h: &Packet| {
        assert_eq!(p.data(), h.data());
        assert_eq!(p.headroom(), h.headroom());
        assert_eq!(p.len(), h.len());
    };
    p.data_mut()[0] = 0xff;
    h.data_mut()[0] = 0xff;
    check(&p, &h);
    p.insert_gap(12, 4)
        .unwrap()
        .copy_from_slice(&[0x81, 0, 0, 7]);
    h.insert_gap(12, 4)
        .unwrap()
        .copy_from_slice(&[0x81, 0, 0, 7]);
    check(&p, &h);
    assert_eq!(p.data().as_ptr() as usize, ptr0 - 4, "used the headroom");
    assert!(p.remove_range(12, 4));
    assert!(h.remove_range(12, 4));
    check(&p, &h);
    assert!(!p.remove_range(60, 8));
    p.push_front(2).unwrap().copy_from_slice(&[9, 9]);
    h.push_front(2).unwrap().copy_from_slice(&[9, 9]);
    check(&p, &h);
    assert!(p.push_front(1000).is_err());
    assert!(p.pull_front(2) && h.pull_front(2));
    assert!(!p.pull_front(1000));
    check(&p, &h);
    p.truncate(40);
    h.truncate(40);
    p.truncate(100);
    check(&p, &h);
    assert_eq!(p.data_and_meta_mut().0.len(), 40);
    p.append(3).unwrap().copy_from_slice(&[1, 2, 3]);
    assert_eq!(&p.data()[40..], &[1, 2, 3]);
    assert!(p.append(cap).is_err());
    p.set_frame(&[5; 20]).unwrap();
    assert_eq!(p.data(), &[5; 20]);
    assert_eq!(p.headroom(), 128);
    assert_eq!(p.data().as_ptr() as usize, ptr0, "same buffer throughout");
    p.meta.recirc_id = 4;
    p.reset(64, PortNo(8));
    assert!(p.is_empty());
    assert_eq!(
        (p.headroom(), p.meta.in_port, p.meta.recirc_id),
        (64, PortNo(8), 0)
    );
    p.reset(200, PortNo(8));
    assert_eq!(p.headroom(), 200);
    p.reset(100_000, PortNo(8));
    assert_eq!((p.headroom(), p.tailroom()), (cap, 0));
    assert_eq!(p.capacity(), cap);

    // into_mbuf gives the mbuf back; a heap packet is refused.
    let m = p.into_mbuf().unwrap();
    assert_eq!(m.len(), 0);
    assert!(h.into_mbuf().is_err());
    // A PacketPool does not keep mbuf-backed packets (they go back to DPDK).
    let mut pp = PacketPool::new(m.headroom() + m.tailroom(), 128, 0);
    let in_use = pool.in_use_count();
    pp.free(Packet::from_mbuf(m, PortNo(1)).unwrap());
    assert_eq!(pp.available(), 0);
    assert_eq!(pool.in_use_count(), in_use - 1);
}

#[test]
fn net_null_receives_and_counts_tx() {
    let port = open("null", 7, "net_null0");
    let mut pool = PacketPool::default();
    let mut b = PacketBatch::new();
    assert_eq!(port.rx_burst(0, &mut b, &mut pool), 32);
    assert!(b
        .iter()
        .all(|p| p.storage().is_mbuf() && p.meta.in_port == PortNo(7)));
    assert_eq!(port.tx_burst(0, &mut b, &mut pool), 32);
    assert!(b.is_empty());
    assert_eq!(port.copies(), 0);
    // Heap packets are copied into mbufs.
    for _ in 0..5 {
        b.push(Packet::from_bytes(&[0u8; 60])).unwrap();
    }
    assert_eq!(port.tx_burst(0, &mut b, &mut pool), 5);
    assert_eq!(port.copies(), 5);
    let s = port.stats();
    assert_eq!((s.rx_packets, s.tx_packets), (32, 37));
    assert_eq!(s.tx_bytes, 32 * port_rx_len(&s) + 5 * 60);
    assert_eq!(s.total_drops(), 0);
    assert_eq!(port.n_rxq(), 1);
    assert_eq!(port.device(), "net_null0");
}

fn port_rx_len(s: &datapath::PortStats) -> u64 {
    s.rx_bytes / s.rx_packets
}

#[test]
fn full_tx_ring_counts_tx_queue_full() {
    let port = open("ring4", 9, "net_ring4");
    let mut pool = PacketPool::default();
    let frame = vec![0x55u8; 60];
    let mut sent = 0;
    // Fill the loopback ring without draining it.
    for _ in 0..1000 {
        let mut b = PacketBatch::new();
        for _ in 0..32 {
            b.push(Packet::from_bytes(&frame)).unwrap();
        }
        let n = port.tx_burst(0, &mut b, &mut pool);
        assert!(b.is_empty());
        sent += n;
        if n < 32 {
            break;
        }
    }
    let s = port.stats();
    assert_eq!(s.tx_packets, sent as u64);
    assert!(s.drops(PortDropReason::TxQueueFull) > 0, "{s:?}");
    let mbufs_in_ring = sent;
    assert_eq!(drain(&port, &mut pool).len(), mbufs_in_ring);
}

#[test]
fn missing_device_is_a_clear_error() {
    let err = DpdkPort::open("x", PortNo(1), "net_ring9", 1, 1, pool()).unwrap_err();
    assert!(err.contains("net_ring9"), "{err}");
    assert!(err.contains("no DPDK port named"), "{err}");
    let err = DpdkPort::open("x", PortNo(1), "net_null0", 0, 1, pool()).unwrap_err();
    assert!(err.contains("rxqs: 0"), "{err}");
}

#[test]
fn dpdk_port_from_config() {
    pool();
    let cfg = datapath::config::PortConfigJson::parse(
        r#"{"name": "dp", "number": 5, "type": "dpdk",
            "options": {"device": "net_null1", "rxqs": 2, "txqs": 2}}"#,
    )
    .unwrap();
    let e = datapath::config::port_from_config(&cfg, std::path::Path::new(".")).unwrap();
    assert_eq!(e.kind, "dpdk device=net_null1 rxqs=2 txqs=2");
    assert_eq!((e.port.n_rxq(), e.port.n_txq()), (2, 2));
    let mut pool = PacketPool::default();
    let mut b = PacketBatch::new();
    assert_eq!(
        e.port.rx_burst(1, &mut b, &mut pool),
        32,
        "rx queue 1 (RSS)"
    );
    assert_eq!(e.port.tx_burst(1, &mut b, &mut pool), 32);
    assert!(port_config_err("net_null1", 0).contains("options.rxqs: 0"));
}

fn port_config_err(device: &str, rxqs: usize) -> String {
    datapath::config::PortConfigJson::parse(&format!(
        r#"{{"name": "dp", "number": 5, "type": "dpdk",
            "options": {{"device": "{device}", "rxqs": {rxqs}}}}}"#
    ))
    .unwrap_err()
}

/// Wrapping received mbufs reuses packet handles: after the first round
/// trip (wrap on receive, unwrap on transmit or free), neither direction
/// allocates from the heap, and the frames are the mbufs' own bytes.
#[test]
fn mbuf_packet_handles_are_reused_without_heap_allocation() {
    let mp = pool();
    let mut pkts = PacketPool::new(2048, 128, 0);
    let frame: Vec<u8> = (0..60u8).collect();
    for round in 0..3 {
        let mut held = Vec::new();
        for _ in 0..8 {
            let mut m = mp.alloc().expect("mbuf");
            assert!(m.extend_from_slice(&frame));
            let p = pkts.wrap_mbuf(m, PortNo(7)).expect("single segment");
            assert_eq!(p.data(), &frame[..]);
            assert_eq!(p.meta.in_port, PortNo(7));
            assert!(p.storage().is_mbuf());
            held.push(p);
        }
        let heap_after_wrap = pkts.stats().heap_allocs;
        // Half go out (unwrapped to their mbufs), half are freed.
        for (i, p) in held.into_iter().enumerate() {
            if i % 2 == 0 {
                let m = pkts.unwrap_mbuf(p).expect("mbuf-backed");
                assert_eq!(m.data(), &frame[..]);
            } else {
                pkts.free(p);
            }
        }
        // Round 0 allocates the 8 handles; later rounds reuse them.
        assert_eq!(heap_after_wrap, 8, "heap allocations after round {round}");
    }
    // A heap packet is given back by unwrap_mbuf, untouched.
    let h = Packet::from_bytes(&frame);
    let back = pkts.unwrap_mbuf(h).expect_err("heap packet");
    assert_eq!(back.data(), &frame[..]);
}

/// A PMD-style thread registered with the EAL gets an lcore id (and so a
/// mempool cache); the registration ends with the guard.
#[test]
fn pmd_thread_registration_gives_an_lcore_id() {
    let _ = pool();
    std::thread::spawn(|| {
        let eal = dpdk_bindings::Eal::get().expect("EAL up");
        assert_eq!(eal.lcore_id(), None, "a plain thread has no lcore id");
        let guard = datapath::port::dpdk::register_pmd_thread().expect("registered");
        assert!(eal.lcore_id().is_some());
        drop(guard);
        assert_eq!(eal.lcore_id(), None, "unregistered when the guard drops");
    })
    .join()
    .expect("thread");
}
