//! From input captures to output captures through PMD threads: pcap replay
//! ports in, pcap record ports out, the stateful firewall in between, and a
//! port added while the threads run.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datapath::packet::PortNo;
use datapath::pmd::{PmdConfig, PmdSet};
use datapath::port::pcap::{PcapRxPort, PcapTxPort, TxTimestamps};
use datapath::port::Port;
use datapath::switch::{PortEntry, Switch};
use ferrovs_tests::{frame, Builder};
use ofproto::pipeline::VlanMode;
use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};

/// 1: inside (capture in), 2: outside (capture in), 11: to outside
/// (capture out), 12: to inside (capture out).
const FLOWS: &str = "\
table=0,ip,in_port=1,actions=ct(table=1,zone=3)
table=0,ip,in_port=2,actions=ct(table=2,zone=3)
table=1,ip,ct_state=+trk+new,actions=ct(commit,zone=3),output:11
table=1,ip,ct_state=+trk+est,actions=output:11
table=2,ip,ct_state=+trk+est,actions=output:12
";

fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let f = std::fs::File::create(path).unwrap();
    let mut w = PcapWriter::new(f).unwrap();
    for (i, fr) in frames.iter().enumerate() {
        w.write_packet(&PcapPacket::new(
            Duration::from_micros(i as u64),
            fr.len() as u32,
            fr,
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

fn udp(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
    Builder::v4(src.parse().unwrap(), dst.parse().unwrap()).udp(sport, dport, b"data")
}

fn add(sw: &Switch, port: Arc<dyn Port>, kind: &str) {
    sw.add_port(PortEntry {
        port,
        vlan: VlanMode::Access(0),
        kind: kind.into(),
    })
    .unwrap();
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn firewall_from_capture_to_capture_with_pmd_threads() {
    let dir = std::env::temp_dir().join(format!("ferrovs-pcap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Inside opens 100 UDP flows; outside answers 50 of them and sends 30
    // packets nobody asked for.
    let inside: Vec<Vec<u8>> = (0..100)
        .map(|i| frame(1, 2, &udp("10.1.0.1", "192.0.2.1", 2000 + i, 53)))
        .collect();
    let mut outside: Vec<Vec<u8>> = (0..50)
        .map(|i| frame(2, 1, &udp("192.0.2.1", "10.1.0.1", 53, 2000 + i * 2)))
        .collect();
    outside.extend((0..30).map(|i| frame(2, 1, &udp("192.0.2.66", "10.1.0.1", 4444, 3000 + i))));
    write_pcap(&dir.join("inside.pcap"), &inside);
    write_pcap(&dir.join("outside.pcap"), &outside);

    let sw = Switch::new(ct::TrackerConfig::default());
    let rx_in =
        Arc::new(PcapRxPort::open("inside", PortNo(1), dir.join("inside.pcap"), false).unwrap());
    let to_out = Arc::new(
        PcapTxPort::create(
            "to-outside",
            PortNo(11),
            dir.join("to-outside.pcap"),
            TxTimestamps::Sequence,
        )
        .unwrap(),
    );
    let to_in = Arc::new(
        PcapTxPort::create(
            "to-inside",
            PortNo(12),
            dir.join("to-inside.pcap"),
            TxTimestamps::Sequence,
        )
        .unwrap(),
    );
    add(&sw, rx_in.clone(), "pcap");
    add(&sw, to_out.clone(), "pcap");
    add(&sw, to_in.clone(), "pcap");
    sw.bridge.ofctl("add-flows", FLOWS, 0).unwrap();

    let mut pmds = PmdSet::start(
        sw.clone(),
        &PmdConfig {
            threads: 2,
            ..Default::default()
        },
    )
    .unwrap();
    wait_until("the inside capture", || {
        rx_in.is_done() && to_out.stats().tx_packets == 100
    });
    // The outside capture joins only now, so every reply follows its request.
    let rx_out =
        Arc::new(PcapRxPort::open("outside", PortNo(2), dir.join("outside.pcap"), false).unwrap());
    add(&sw, rx_out.clone(), "pcap");
    wait_until("the outside capture", || {
        rx_out.is_done() && pmds.stats().iter().map(|s| s.counters.packets).sum::<u64>() == 180
    });
    pmds.stop();
    to_out.flush().unwrap();
    to_in.flush().unwrap();

    let out = read_pcap(&dir.join("to-outside.pcap"));
    let back = read_pcap(&dir.join("to-inside.pcap"));
    assert_eq!(out.len(), 100);
    let mut out_sorted = out.clone();
    out_sorted.sort();
    let mut inside_sorted = inside.clone();
    inside_sorted.sort();
    assert_eq!(
        out_sorted, inside_sorted,
        "every inside packet leaves unchanged"
    );
    let mut expect_back: Vec<Vec<u8>> = outside[..50].to_vec();
    expect_back.sort();
    let mut back_sorted = back.clone();
    back_sorted.sort();
    assert_eq!(back_sorted, expect_back, "only the 50 answers come back");

    let stats = pmds.stats();
    let total: u64 = stats.iter().map(|s| s.counters.packets).sum();
    assert_eq!(total, 180);
    let dropped: u64 = stats.iter().map(|s| s.counters.dropped_by_flow).sum();
    assert_eq!(dropped, 30);
    assert_eq!(
        sw.ct.dump(&Default::default(), sw.clock.now_ns()).len(),
        100
    );
    // Both threads had queues to poll (round-robin over 3 then 4 ports).
    assert!(stats.iter().all(|s| !s.rxqs.is_empty()), "{stats:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
