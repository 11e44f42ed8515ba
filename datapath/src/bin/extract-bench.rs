//! Flow-key extraction throughput on one core.
//!
//! Builds `--flows` distinct 64-byte frames per packet kind, puts them in
//! batches of 32, and times `flow::extract_batch` over them: `--runs` runs
//! of `--packets` packets each, reporting the median.
//!
//! A second table times the software-port path on one thread: generator
//! port rx burst, extraction, null-port tx burst (packets recycled through
//! one pool), for UDP flows and for TCP connections with handshakes.
//!
//!     cargo run --release -p datapath --bin extract-bench

use std::hint::black_box;
use std::time::Instant;

use clap::Parser;
use datapath::flow::hash::flow_hash;
use datapath::flow::{extract_batch, ExtractStats, FlowKey};
use datapath::packet::{Packet, PacketBatch, PacketPool, PortNo};
use datapath::port::generator::{
    client_of, tcp4_frame, tcp_flags, udp4_frame, Endpoint, GenProto, GeneratorConfig,
    GeneratorPort,
};
use datapath::port::{NullPort, Port};
use datapath::BATCH_SIZE;

#[derive(Parser)]
#[command(about = "flow-key extraction ns/packet and Mpps")]
struct Args {
    /// Distinct frames (flows) per packet kind.
    #[arg(long, default_value_t = 1024)]
    flows: u32,
    /// Packets per run.
    #[arg(long, default_value_t = 4_000_000)]
    packets: u64,
    /// Runs per packet kind (the median is reported).
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Frame size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Packets per run of the port-path table (0 skips it).
    #[arg(long, default_value_t = 2_000_000)]
    port_packets: u64,
}

fn server(port: u16) -> Endpoint {
    Endpoint {
        mac: [2, 0, 0, 0, 0, 2],
        ip: [172, 16, 0, 1],
        port,
    }
}

/// A UDP/IPv6 frame of `size` bytes (at least 62) from flow `c`.
fn udp6_frame(size: usize, c: u64) -> Vec<u8> {
    let size = size.max(62);
    let mut f = vec![0u8; size];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    let ip = &mut f[14..54];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&((size - 54) as u16).to_be_bytes());
    ip[6] = 17;
    ip[7] = 64;
    ip[8..24].copy_from_slice(&(0xfd00_u128 << 112 | u128::from(c)).to_be_bytes());
    ip[24..40].copy_from_slice(&(0xfd00_u128 << 112 | 1 << 64).to_be_bytes());
    let udp = &mut f[54..];
    udp[0..2].copy_from_slice(&(1024 + (c & 0x3fff) as u16).to_be_bytes());
    udp[2..4].copy_from_slice(&5001u16.to_be_bytes());
    udp[4..6].copy_from_slice(&((size - 54) as u16).to_be_bytes());
    f
}

fn batches(frames: impl Iterator<Item = Vec<u8>>) -> Vec<PacketBatch> {
    let mut out = vec![PacketBatch::new()];
    for f in frames {
        if out.last().is_some_and(PacketBatch::is_full) {
            out.push(PacketBatch::new());
        }
        let mut p = Packet::with_capacity(f.len() + 64, 64);
        p.set_frame(&f).expect("sized for the frame");
        p.meta.in_port = PortNo(1);
        let _ = out.last_mut().expect("one batch at least").push(p);
    }
    out
}

/// Median ns/packet over `runs` runs of `packets` packets; with `hash`,
/// each key is also hashed (as the exact-match cache will).
fn measure(
    batches: &mut [PacketBatch],
    packets: u64,
    runs: usize,
    hash: bool,
) -> (f64, ExtractStats) {
    let mut keys = [FlowKey::ZERO; BATCH_SIZE];
    let mut stats = ExtractStats::default();
    let per_pass: u64 = batches.iter().map(|b| b.len() as u64).sum();
    let passes = packets.div_ceil(per_pass).max(1);
    // warm-up pass
    for b in batches.iter_mut() {
        extract_batch(b, &mut keys, &mut stats);
    }
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        for _ in 0..passes {
            for b in batches.iter_mut() {
                extract_batch(black_box(b), &mut keys, &mut stats);
                if hash {
                    let mut hashes = [0u32; BATCH_SIZE];
                    for (h, k) in hashes.iter_mut().zip(keys.iter()).take(b.len()) {
                        *h = flow_hash(k, 0);
                    }
                    black_box(&hashes);
                }
                black_box(&keys);
            }
        }
        let ns = t.elapsed().as_nanos() as f64;
        samples.push(ns / (passes * per_pass) as f64);
    }
    samples.sort_by(f64::total_cmp);
    (samples[samples.len() / 2], stats)
}

/// Median ns/packet of generator rx + extract + null tx.
fn measure_port_path(cfg: &GeneratorConfig, packets: u64, runs: usize) -> f64 {
    let gen = GeneratorPort::new("gen", PortNo(1), cfg.clone());
    let sink = NullPort::new("null", PortNo(2));
    let mut pool = PacketPool::new(2048, 128, 256);
    let mut batch = PacketBatch::new();
    let mut keys = [FlowKey::ZERO; BATCH_SIZE];
    let mut stats = ExtractStats::default();
    let mut samples = Vec::with_capacity(runs);
    for run in 0..=runs {
        let t = Instant::now();
        let mut done = 0u64;
        while done < packets {
            done += gen.rx_burst(0, &mut batch, &mut pool) as u64;
            extract_batch(&mut batch, &mut keys, &mut stats);
            black_box(&keys);
            sink.tx_burst(0, &mut batch, &mut pool);
        }
        // run 0 warms up (first visit of every flow creates its state)
        if run > 0 {
            samples.push(t.elapsed().as_nanos() as f64 / done as f64);
        }
    }
    assert_eq!(stats.malformed_total(), 0, "generated frames must parse");
    assert_eq!(
        pool.stats().heap_allocs,
        0,
        "steady state allocates nothing"
    );
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let args = Args::parse();
    let flows = u64::from(args.flows.max(1));
    let runs = args.runs.max(1);
    let kinds: Vec<(&str, Vec<PacketBatch>)> =
        vec![
            (
                "UDP/IPv4",
                batches((0..flows).map(|c| udp4_frame(args.size, &client_of(c), &server(5001)))),
            ),
            (
                "TCP/IPv4",
                batches((0..flows).map(|c| {
                    tcp4_frame(args.size, &client_of(c), &server(80), 1, 1, tcp_flags::ACK)
                })),
            ),
            (
                "UDP/IPv6",
                batches((0..flows).map(|c| udp6_frame(args.size, c))),
            ),
        ];
    println!(
        "flow-key extraction: {} flows, {}-byte frames, batches of {}, median of {} runs x {} packets",
        flows, args.size, BATCH_SIZE, runs, args.packets
    );
    println!();
    println!("| packet    | ns/packet |   Mpps | with key hash: ns/packet |   Mpps |");
    println!("|-----------|----------:|-------:|-------------------------:|-------:|");
    for (name, mut b) in kinds {
        let (ns, stats) = measure(&mut b, args.packets, runs, false);
        assert_eq!(
            stats.malformed_total(),
            0,
            "{name}: benchmark frames must parse"
        );
        let (hns, _) = measure(&mut b, args.packets, runs, true);
        println!(
            "| {name:<9} | {ns:>9.2} | {:>6.1} | {hns:>24.2} | {:>6.1} |",
            1000.0 / ns,
            1000.0 / hns
        );
    }
    if args.port_packets == 0 {
        return;
    }
    println!();
    println!(
        "port path (generator rx + extract + null tx, one thread): {} flows, median of {} runs x {} packets",
        flows, runs, args.port_packets
    );
    println!();
    println!("| traffic                                | ns/packet |   Mpps |");
    println!("|----------------------------------------|----------:|-------:|");
    let base = GeneratorConfig {
        flows: flows as u32,
        packet_size: args.size,
        ..GeneratorConfig::default()
    };
    let cases = [
        ("UDP/IPv4, requests only", base.clone()),
        (
            "UDP/IPv4, requests and replies",
            GeneratorConfig {
                replies: true,
                ..base.clone()
            },
        ),
        (
            "TCP/IPv4, handshake + 16 data, replies",
            GeneratorConfig {
                proto: GenProto::Tcp,
                replies: true,
                conn_packets: 16,
                ..base
            },
        ),
    ];
    for (name, cfg) in cases {
        let ns = measure_port_path(&cfg, args.port_packets, runs);
        println!("| {name:<38} | {ns:>9.2} | {:>6.1} |", 1000.0 / ns);
    }
}
