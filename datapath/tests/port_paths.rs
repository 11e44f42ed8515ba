//! Software ports composed: generator traffic recorded to a capture,
//! replayed, carried over a ring pair and extracted gives the same frames
//! and the same flow keys as extracting the generator's output directly.

use datapath::flow::{extract_batch, ExtractStats, FlowKey};
use datapath::packet::{PacketBatch, PacketPool, PortNo};
use datapath::port::generator::{GenProto, GeneratorConfig, GeneratorPort};
use datapath::port::pcap::{PcapRxPort, PcapTxPort, TxTimestamps};
use datapath::port::ring::RingPort;
use datapath::port::{LinkState, Port};
use datapath::BATCH_SIZE;

fn keys_of(batch: &mut PacketBatch, stats: &mut ExtractStats) -> Vec<FlowKey> {
    let mut keys = [FlowKey::ZERO; BATCH_SIZE];
    extract_batch(batch, &mut keys, stats);
    keys[..batch.len()].to_vec()
}

#[test]
fn generator_to_pcap_to_ring_preserves_frames_and_keys() {
    let dir = std::env::temp_dir().join(format!("ferrovs-paths-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gen.pcap");
    let cfg = GeneratorConfig {
        flows: 20,
        proto: GenProto::Tcp,
        replies: true,
        conn_packets: 4,
        limit: Some(300),
        ..Default::default()
    };
    let gen = GeneratorPort::new("gen", PortNo(1), cfg);
    let rec = PcapTxPort::create("rec", PortNo(2), &path, TxTimestamps::Sequence).unwrap();
    let mut pool = PacketPool::default();
    let mut batch = PacketBatch::new();
    let mut direct_frames = Vec::new();
    let mut direct_keys = Vec::new();
    let mut stats = ExtractStats::default();
    while gen.rx_burst(0, &mut batch, &mut pool) > 0 {
        direct_frames.extend(batch.iter().map(|p| p.data().to_vec()));
        direct_keys.extend(keys_of(&mut batch, &mut stats));
        rec.tx_burst(0, &mut batch, &mut pool);
    }
    assert_eq!(gen.link_state(), LinkState::Down, "limit reached");
    assert_eq!(direct_frames.len(), 300);
    rec.flush().unwrap();

    let replay = PcapRxPort::open("replay", PortNo(1), &path, false).unwrap();
    let (a, b) = RingPort::pair(("a", PortNo(10)), ("b", PortNo(1)), 1, 64);
    let mut frames = Vec::new();
    let mut keys = Vec::new();
    while !replay.is_done() {
        replay.rx_burst(0, &mut batch, &mut pool);
        a.tx_burst(0, &mut batch, &mut pool);
        b.rx_burst(0, &mut batch, &mut pool);
        frames.extend(batch.iter().map(|p| p.data().to_vec()));
        keys.extend(keys_of(&mut batch, &mut stats));
        batch.free_into(&mut pool);
    }
    assert_eq!(frames, direct_frames);
    // in_port is 1 on both paths (generator port 1, ring end b port 1)
    assert_eq!(keys, direct_keys);
    assert_eq!(stats.malformed_total(), 0);
    assert_eq!(a.stats().tx_packets, 300);
    assert_eq!(b.stats().rx_packets, 300);
    let handshakes = keys.iter().filter(|k| k.tcp_flags() == 0x02).count();
    // 20 slots visited round-robin get 15 packets each; a connection is
    // SYN, SYN/ACK, ACK and 4 data segments, so each slot opens 3.
    assert_eq!(handshakes, 20 * 15usize.div_ceil(7));
}
