//! ct-bench: conntrack throughput, connection setup, memory and flush.
//!
//! ```text
//! ct-bench --threads T --packets N --batch B --conns C          # established traffic
//! ct-bench --mode setup  --threads T --packets N                # new connections/s
//! ct-bench --mode memory --conns C                              # bytes per connection
//! ct-bench --mode flush  --conns C                              # selective flush
//! ```
//! Established mode: each thread builds its UDP/IPv4 packets once (valid IPv4
//! header checksum, verified per packet; UDP checksum zero) covering C
//! connections of its own (C=1: every packet of a batch is one connection),
//! primes them (one packet each way, so they are established), then calls
//! `execute` on batches of B in turn with commit, zone 0 and a fixed clock,
//! N packets per thread. No connection is cached between calls: every packet
//! pays parsing, hashing, lookup and update. Last line: `mpps=<value>`.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use ct::flush::{FlushFilter, StateClass};
use ct::{CtPacket, CtParams, CtResult, Family, PktFlags, Tracker, TrackerConfig, Zone};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Established,
    Setup,
    Memory,
    Flush,
}

#[derive(Parser)]
#[command(about = "ferrovs conntrack benchmark")]
struct Args {
    #[arg(long, value_enum, default_value = "established")]
    mode: Mode,
    /// Packet threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Packets per thread (setup: connections per thread and protocol).
    #[arg(long, default_value_t = 10_000_000)]
    packets: usize,
    /// Packets per execute call.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Distinct connections per thread.
    #[arg(long, default_value_t = 1000)]
    conns: usize,
    /// Repeat the measurement and report the median.
    #[arg(long, default_value_t = 1)]
    runs: usize,
}

const NOW: u64 = 100 * 1_000_000_000;
/// Minimum Ethernet payload: 46 bytes of IPv4 + UDP + 18 bytes of data.
const PKT: usize = 46;

fn csum(data: &[u8], init: u32) -> u16 {
    let mut s = init;
    for c in data.chunks(2) {
        s += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// IPv4 header for `proto` carrying `l4_len` bytes, checksummed.
fn ipv4(buf: &mut [u8], src: [u8; 4], dst: [u8; 4], proto: u8, l4_len: usize) {
    let total = (20 + l4_len) as u16;
    buf[..20].copy_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    buf[2..4].copy_from_slice(&total.to_be_bytes());
    buf[12..16].copy_from_slice(&src);
    buf[16..20].copy_from_slice(&dst);
    let c = csum(&buf[..20], 0);
    buf[10..12].copy_from_slice(&c.to_be_bytes());
}

/// A 46-byte UDP/IPv4 packet with UDP checksum zero.
fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> [u8; PKT] {
    let mut p = [0u8; PKT];
    ipv4(&mut p, src, dst, 17, PKT - 20);
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..26].copy_from_slice(&((PKT - 20) as u16).to_be_bytes());
    p
}

/// A TCP SYN/IPv4 packet with a valid TCP checksum.
fn syn4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> [u8; 40] {
    let mut p = [0u8; 40];
    ipv4(&mut p, src, dst, 6, 20);
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..28].copy_from_slice(&1000u32.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = 0x02;
    p[34..36].copy_from_slice(&64240u16.to_be_bytes());
    let mut pseudo = 0u32;
    for c in [&src[..], &dst[..]] {
        for w in c.chunks(2) {
            pseudo += u16::from_be_bytes([w[0], w[1]]) as u32;
        }
    }
    pseudo += 6 + 20;
    let c = csum(&p[20..40], pseudo);
    p[36..38].copy_from_slice(&c.to_be_bytes());
    p
}

/// Addresses of connection `j` of thread `t`.
fn conn_addrs(t: usize, j: usize) -> ([u8; 4], [u8; 4]) {
    ([10 + t as u8, (j >> 16) as u8, (j >> 8) as u8, j as u8], [172, 16, (j >> 24) as u8, 1])
}

fn pkt(l3: &[u8]) -> CtPacket<'_> {
    CtPacket { l3, family: Family::Ipv4, flags: PktFlags::empty() }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn tracker(max: usize) -> Tracker {
    Tracker::new(TrackerConfig { max_conns: max.min(u32::MAX as usize) as u32, ..Default::default() })
}

/// Established traffic: returns Mpps over all threads.
fn established(a: &Args) -> f64 {
    let t = tracker(a.conns * a.threads * 2 + 1024);
    let c = a.conns.max(1);
    let ring = c.max(a.batch).div_ceil(a.batch) * a.batch;
    let bufs: Vec<(Vec<[u8; PKT]>, Vec<[u8; PKT]>)> = (0..a.threads)
        .map(|th| {
            let fwd = (0..ring)
                .map(|i| {
                    let (s, d) = conn_addrs(th, i % c);
                    udp4(s, d, 4000, 53)
                })
                .collect::<Vec<_>>();
            let rev = (0..c)
                .map(|j| {
                    let (s, d) = conn_addrs(th, j);
                    udp4(d, s, 53, 4000)
                })
                .collect::<Vec<_>>();
            (fwd, rev)
        })
        .collect();
    let params = CtParams { zone: Zone(0), commit: true, ..Default::default() };
    let barrier = Barrier::new(a.threads);
    let elapsed: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = bufs
            .iter()
            .map(|(fwd, rev)| {
                let (t, barrier, params) = (&t, &barrier, &params);
                s.spawn(move || {
                    let fwd_pkts: Vec<CtPacket> = fwd.iter().map(|p| pkt(p)).collect();
                    let rev_pkts: Vec<CtPacket> = rev.iter().map(|p| pkt(p)).collect();
                    let mut res = vec![CtResult::default(); a.batch];
                    // Prime: one packet each way per connection.
                    for ch in fwd_pkts[..c].chunks(a.batch).zip(rev_pkts.chunks(a.batch)) {
                        t.execute(ch.0, params, NOW, &mut res);
                        t.execute(ch.1, params, NOW, &mut res);
                    }
                    barrier.wait();
                    let start = Instant::now();
                    let batches = a.packets / a.batch;
                    let per_ring = ring / a.batch;
                    let mut est = 0usize;
                    for k in 0..batches {
                        let off = (k % per_ring) * a.batch;
                        t.execute(&fwd_pkts[off..off + a.batch], params, NOW, &mut res);
                        est += res[0].state.contains(ct::CtState::EST) as usize;
                    }
                    let el = start.elapsed();
                    assert_eq!(est, batches, "primed connections must be established");
                    el
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("bench thread")).collect()
    });
    let total = (a.packets / a.batch * a.batch * a.threads) as f64;
    let secs = elapsed.iter().max().map_or(1.0, |d| d.as_secs_f64());
    total / secs / 1e6
}

/// New committed connections per second (UDP, then TCP SYNs).
fn setup(a: &Args) -> (f64, f64) {
    let mut rates = [0.0; 2];
    for (i, rate) in rates.iter_mut().enumerate() {
        let t = tracker(a.packets * a.threads + 1024);
        let bufs: Vec<Vec<Vec<u8>>> = (0..a.threads)
            .map(|th| {
                (0..a.packets)
                    .map(|j| {
                        let (s, d) = conn_addrs(th, j);
                        if i == 0 {
                            udp4(s, d, 4000, 53).to_vec()
                        } else {
                            syn4(s, d, 4000, 80).to_vec()
                        }
                    })
                    .collect()
            })
            .collect();
        let params = CtParams { commit: true, ..Default::default() };
        let barrier = Barrier::new(a.threads);
        let el: Vec<Duration> = std::thread::scope(|s| {
            let hs: Vec<_> = bufs
                .iter()
                .map(|b| {
                    let (t, barrier, params) = (&t, &barrier, &params);
                    s.spawn(move || {
                        let pkts: Vec<CtPacket> = b.iter().map(|p| pkt(p)).collect();
                        let mut res = vec![CtResult::default(); a.batch];
                        barrier.wait();
                        let start = Instant::now();
                        for ch in pkts.chunks(a.batch) {
                            t.execute(ch, params, NOW, &mut res);
                        }
                        start.elapsed()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().expect("bench thread")).collect()
        });
        assert_eq!(t.len(), a.packets * a.threads, "every new connection committed");
        *rate = (a.packets * a.threads) as f64 / el.iter().max().map_or(1.0, |d| d.as_secs_f64());
    }
    (rates[0], rates[1])
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// Insert C established UDP connections generating packets on the fly.
fn fill(t: &Tracker, conns: usize, zone_of: impl Fn(usize) -> u16, reply_of: impl Fn(usize) -> bool) {
    let mut res = [CtResult::default(); 32];
    let mut j = 0;
    while j < conns {
        let n = 32.min(conns - j);
        let fwd: Vec<[u8; PKT]> = (j..j + n)
            .map(|k| {
                let (s, d) = conn_addrs(0, k);
                udp4(s, d, 4000, 53)
            })
            .collect();
        for (k, p) in fwd.iter().enumerate() {
            let params = CtParams { zone: Zone(zone_of(j + k)), commit: true, ..Default::default() };
            t.execute(&[pkt(p)], &params, NOW, &mut res);
            if reply_of(j + k) {
                let (s, d) = conn_addrs(0, j + k);
                let r = udp4(d, s, 53, 4000);
                t.execute(&[pkt(&r)], &params, NOW, &mut res);
            }
        }
        j += n;
    }
}

fn memory(a: &Args) -> f64 {
    let t = tracker(a.conns + 1024);
    let before = rss_bytes();
    fill(&t, a.conns, |_| 0, |_| true);
    let after = rss_bytes();
    assert_eq!(t.len(), a.conns);
    (after.saturating_sub(before)) as f64 / a.conns as f64
}

/// Flush the unreplied half of C UDP connections in zone 1 while a thread
/// forwards established traffic in zone 2; returns (flush ms, removed,
/// worst batch latency in µs seen by the packet thread during the flush).
fn flush(a: &Args) -> (f64, usize, f64) {
    let t = tracker(a.conns + 4096);
    fill(&t, a.conns, |_| 1, |j| j % 2 == 1);
    let traffic: Vec<[u8; PKT]> = (0..1024)
        .map(|j| {
            let (s, d) = conn_addrs(3, j);
            udp4(s, d, 4000, 53)
        })
        .collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let params = CtParams { zone: Zone(2), commit: true, ..Default::default() };
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            let pkts: Vec<CtPacket> = traffic.iter().map(|p| pkt(p)).collect();
            let mut res = [CtResult::default(); 32];
            let mut worst = Duration::ZERO;
            let mut k = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let off = (k % 32) * 32;
                let st = Instant::now();
                t.execute(&pkts[off..off + 32], &params, NOW, &mut res);
                worst = worst.max(st.elapsed());
                k += 1;
            }
            worst
        });
        std::thread::sleep(Duration::from_millis(50));
        let filter = FlushFilter {
            zone: Some(Zone(1)),
            proto: Some(17),
            state: StateClass::Unreplied,
            ..Default::default()
        };
        let st = Instant::now();
        let removed = t.flush(&filter, NOW);
        let ms = st.elapsed().as_secs_f64() * 1e3;
        std::thread::sleep(Duration::from_millis(10));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let worst = h.join().expect("traffic thread");
        (ms, removed, worst.as_secs_f64() * 1e6)
    })
}

fn main() {
    let a = Args::parse();
    let runs = a.runs.max(1);
    match a.mode {
        Mode::Established => {
            let v: Vec<f64> = (0..runs).map(|_| established(&a)).collect();
            println!("threads  batch  conns      packets/thread  mpps (median of {runs})");
            let m = median(v);
            println!("{:<8} {:<6} {:<10} {:<15} {:.2}", a.threads, a.batch, a.conns, a.packets, m);
            println!("mpps={m:.2}");
        }
        Mode::Setup => {
            let v: Vec<(f64, f64)> = (0..runs).map(|_| setup(&a)).collect();
            let udp = median(v.iter().map(|x| x.0).collect());
            let tcp = median(v.iter().map(|x| x.1).collect());
            println!("threads  conns/thread  udp_conns_per_s  tcp_conns_per_s");
            println!("{:<8} {:<13} {:<16.0} {:.0}", a.threads, a.packets, udp, tcp);
            println!("udp_setup_per_s={udp:.0} tcp_setup_per_s={tcp:.0}");
        }
        Mode::Memory => {
            let v: Vec<f64> = (0..runs).map(|_| memory(&a)).collect();
            let m = median(v);
            println!("conns      bytes_per_conn");
            println!("{:<10} {:.1}", a.conns, m);
            println!("bytes_per_conn={m:.1}");
        }
        Mode::Flush => {
            let v: Vec<(f64, usize, f64)> = (0..runs).map(|_| flush(&a)).collect();
            let ms = median(v.iter().map(|x| x.0).collect());
            let stall = median(v.iter().map(|x| x.2).collect());
            println!("conns      removed    flush_ms  worst_batch_us_during_flush");
            println!("{:<10} {:<10} {:<9.1} {:.0}", a.conns, v[0].1, ms, stall);
            println!("flush_ms={ms:.1} worst_batch_us={stall:.0}");
        }
    }
}
