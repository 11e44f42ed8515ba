//! A capture replayed through the stateful firewall over DPDK `net_pcap`
//! vdevs: `cargo test -p datapath --features dpdk --test dpdk_pcap`.
//!
//! Two `net_pcap` vdevs, one per side, each reading frames from an input
//! capture (`rx_pcap`) and writing what the switch sends out of it to an
//! output capture (`tx_pcap`). The input captures are written before the EAL
//! starts (the vdevs open their files when they are probed, at EAL init), in
//! a per-process temporary directory; this test binary is its own process,
//! so it has its own EAL.
#![cfg(feature = "dpdk")]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ct::build::{ethernet_with, Builder, Tcp};
use ct::packet::tcp_flags::{ACK, SYN};
use datapath::packet::{PacketBatch, PortNo};
use datapath::pipeline::{Pipeline, PipelineConfig};
use datapath::port::dpdk::{init_eal, shared_mempool, DpdkPort};
use datapath::port::Port;
use datapath::switch::{PortEntry, Switch};
use ofproto::pipeline::VlanMode;
use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};

/// Port 1 is inside, port 2 outside: inside may open connections, outside
/// may only answer them.
const FIREWALL: &str = "\
table=0,priority=10,ip,in_port=1,actions=ct(table=1,zone=1)
table=0,priority=10,ip,in_port=2,actions=ct(table=2,zone=1)
table=1,priority=10,ct_state=+trk+new-inv,ip,actions=ct(commit,zone=1),output:2
table=1,priority=10,ct_state=+trk+est-inv,ip,actions=output:2
table=2,priority=10,ct_state=+trk+est-inv,ip,actions=output:1
";

fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut w = PcapWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    for (i, f) in frames.iter().enumerate() {
        w.write_packet(&PcapPacket::new(
            Duration::from_micros(i as u64),
            f.len() as u32,
            f,
        ))
        .unwrap();
    }
}

fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let mut r = PcapReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut v = Vec::new();
    while let Some(p) = r.next_packet() {
        v.push(p.unwrap().data.to_vec());
    }
    v
}

fn mac(n: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0, n]
}

fn v4(src: &str, dst: &str) -> Builder {
    Builder::v4(src.parse().unwrap(), dst.parse().unwrap())
}

/// Inside to outside (MACs 1 -> 2).
fn out_frame(ip: Vec<u8>) -> Vec<u8> {
    ethernet_with(mac(1), mac(2), &ip)
}

/// Outside to inside (MACs 2 -> 1).
fn in_frame(ip: Vec<u8>) -> Vec<u8> {
    ethernet_with(mac(2), mac(1), &ip)
}

fn syn(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
    v4(src, dst).tcp(&Tcp::new(sport, dport).flags(SYN).seq(100).win(64000))
}

fn synack(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
    v4(src, dst).tcp(
        &Tcp::new(sport, dport)
            .flags(SYN | ACK)
            .seq(5000)
            .ack(101)
            .win(64000),
    )
}

fn udp(src: &str, dst: &str, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    v4(src, dst).udp(sport, dport, payload)
}

const H1: &str = "10.0.0.1";
const H2: &str = "10.0.0.2";
const SRV: &str = "192.0.2.9";
const OTHER: &str = "198.51.100.7";

struct Captures {
    dir: PathBuf,
    inside_out: Vec<Vec<u8>>,
    outside_in: Vec<Vec<u8>>,
    expected_to_outside: Vec<Vec<u8>>,
    expected_to_inside: Vec<Vec<u8>>,
}

impl Captures {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The traffic: inside hosts open TCP and UDP flows; outside answers some of
/// them and sends unsolicited packets.
fn captures() -> Captures {
    let inside_out = vec![
        out_frame(syn(H1, SRV, 40000, 80)),              // answered
        out_frame(syn(H1, SRV, 40001, 443)),             // never answered
        out_frame(udp(H1, SRV, 5000, 53, b"query-a")),   // answered
        out_frame(udp(H1, SRV, 5001, 123, b"ntp")),      // never answered
        out_frame(udp(H2, SRV, 5002, 53, b"query-b")),   // answered
        out_frame(udp(H2, OTHER, 6000, 9999, b"hello")), // answered by OTHER
    ];
    let answers = [
        in_frame(synack(SRV, H1, 80, 40000)),
        in_frame(udp(SRV, H1, 53, 5000, b"answer-a")),
        in_frame(udp(SRV, H2, 53, 5002, b"answer-b")),
        in_frame(udp(OTHER, H2, 9999, 6000, b"hi")),
    ];
    let unsolicited = [
        // A SYN-ACK for a connection nobody opened.
        in_frame(synack(SRV, H1, 80, 40009)),
        // A new connection from outside.
        in_frame(syn(OTHER, H1, 50000, 22)),
        // UDP to a port no inside host used.
        in_frame(udp(SRV, H1, 53, 5009, b"spoof")),
        // The right ports, but from a host the flow was not opened to.
        in_frame(udp(OTHER, H1, 53, 5000, b"spoof")),
        // A reply to H1's flow addressed to H2.
        in_frame(udp(SRV, H2, 53, 5000, b"spoof")),
    ];
    let outside_in = vec![
        unsolicited[0].clone(),
        answers[0].clone(),
        unsolicited[1].clone(),
        answers[1].clone(),
        unsolicited[2].clone(),
        unsolicited[3].clone(),
        answers[2].clone(),
        unsolicited[4].clone(),
        answers[3].clone(),
    ];
    let dir = std::env::temp_dir().join(format!("ferrovs-dpdkpcap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let c = Captures {
        dir,
        expected_to_outside: inside_out.clone(),
        expected_to_inside: answers.to_vec(),
        inside_out,
        outside_in,
    };
    write_pcap(&c.path("inside-rx.pcap"), &c.inside_out);
    write_pcap(&c.path("outside-rx.pcap"), &c.outside_in);
    c
}

fn eal(c: &Captures) {
    let vdev = |n: u32, side: &str| {
        format!(
            "net_pcap{n},rx_pcap={},tx_pcap={}",
            c.path(&format!("{side}-rx.pcap")).display(),
            c.path(&format!("{side}-tx.pcap")).display()
        )
    };
    let (inside, outside) = (vdev(0, "inside"), vdev(1, "outside"));
    let args = dpdk_bindings::eal::vdev_only_args(
        &format!("ferrovs-dpdkpcap-{}", std::process::id()),
        &[&inside, &outside],
    );
    init_eal(&args).expect("EAL init");
}

/// Polls `port` through the pipeline until its capture is consumed; returns
/// the number of frames received.
fn run_until_consumed(pipeline: &mut Pipeline, port: &DpdkPort) -> usize {
    let mut total = 0;
    loop {
        let mut batch = PacketBatch::new();
        let n = port.rx_burst(0, &mut batch, &mut pipeline.pool);
        if n == 0 {
            // net_pcap reads the file synchronously: nothing more means EOF.
            return total;
        }
        assert!(batch.iter().all(|p| p.storage().is_mbuf()));
        total += n;
        pipeline.process(&mut batch);
        pipeline.flush();
    }
}

#[test]
fn pcap_replay_through_stateful_firewall() {
    let c = captures();
    eal(&c);
    let pool = shared_mempool(8192).expect("mempool");
    let inside = Arc::new(DpdkPort::open("inside", PortNo(1), "net_pcap0", 1, 1, pool).unwrap());
    let outside = Arc::new(DpdkPort::open("outside", PortNo(2), "net_pcap1", 1, 1, pool).unwrap());

    let sw = Switch::new(ct::TrackerConfig {
        max_conns: 10_000,
        shards: 16,
        seed: Some(7),
        liberal: false,
    });
    for p in [&inside, &outside] {
        sw.add_port(PortEntry {
            port: p.clone(),
            vlan: VlanMode::Access(0),
            kind: "dpdk".into(),
        })
        .unwrap();
    }
    sw.bridge.ofctl("add-flows", FIREWALL, 0).expect("flows");
    let mut pipeline = Pipeline::new(sw, PipelineConfig::default(), 0);

    // The inside speaks first, then the outside answers.
    assert_eq!(
        run_until_consumed(&mut pipeline, &inside),
        c.inside_out.len()
    );
    assert_eq!(
        run_until_consumed(&mut pipeline, &outside),
        c.outside_in.len()
    );
    // Nothing more arrives once the captures are consumed.
    assert_eq!(run_until_consumed(&mut pipeline, &inside), 0);

    let (si, so) = (inside.stats(), outside.stats());
    assert_eq!(
        (si.rx_packets, si.tx_packets),
        (c.inside_out.len() as u64, c.expected_to_inside.len() as u64)
    );
    assert_eq!(
        (so.rx_packets, so.tx_packets),
        (
            c.outside_in.len() as u64,
            c.expected_to_outside.len() as u64
        )
    );
    assert_eq!(si.total_drops() + so.total_drops(), 0);
    assert_eq!(
        inside.copies() + outside.copies(),
        0,
        "mbufs forwarded as is"
    );

    // Stop and close the devices (the last handles go with the switch) so
    // the output captures are complete.
    drop(pipeline);
    drop((inside, outside));

    let to_outside = read_pcap(&c.path("outside-tx.pcap"));
    let to_inside = read_pcap(&c.path("inside-tx.pcap"));
    assert_eq!(
        to_outside, c.expected_to_outside,
        "everything the inside sent, unchanged and in order"
    );
    assert_eq!(
        to_inside, c.expected_to_inside,
        "exactly the answers to flows the inside opened, none of the unsolicited packets"
    );
    let _ = std::fs::remove_dir_all(&c.dir);
}
