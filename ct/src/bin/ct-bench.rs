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
//!
//! `--json-out FILE` also appends one JSON line per measured cell, in the
//! format of `datapath::bench_result` (suite `ct`; cases `established-<T>T`
//! in Mpps, `setup-udp`/`setup-tcp` in Mconn/s, `memory` in B/conn,
//! `flush`/`dump`/`expire` in ms and `<pass>-worst-batch` in us; `x` is the
//! connection count per thread). `scripts/bench.sh` collects them for
//! `bench-report`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use ct::build::{Builder, Tcp};
use ct::flush::{FlushFilter, StateClass};
use ct::packet::tcp_flags::SYN;
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
    /// Table shards (power of two).
    #[arg(long, default_value_t = 1024)]
    shards: usize,
    /// Repeat the measurement and report the median.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Also append one JSON line per measured cell to FILE (created if
    /// missing), for `bench-report`.
    #[arg(long, value_name = "FILE")]
    json_out: Option<PathBuf>,
}

/// One measured cell, as `datapath::bench_result::BenchRecord` writes it
/// (ct does not depend on datapath, so the fields are repeated here).
#[derive(serde::Serialize)]
struct Record<'a> {
    suite: &'a str,
    case: &'a str,
    param: &'a str,
    x: usize,
    value: f64,
    unit: &'a str,
    runs: Vec<f64>,
    median: f64,
}

/// Append one record per cell to `path` (one write per line).
fn append_json(path: &Path, case: &str, x: usize, unit: &str, runs: Vec<f64>) {
    let m = median(runs.clone());
    let rec = Record {
        suite: "ct",
        case,
        param: "conns",
        x,
        value: m,
        unit,
        runs,
        median: m,
    };
    let mut line = serde_json::to_string(&rec).expect("record serializes");
    line.push('\n');
    let res = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = res {
        eprintln!("ct-bench: --json-out {}: {e}", path.display());
        std::process::exit(1);
    }
}

const NOW: u64 = 100 * 1_000_000_000;
/// Minimum Ethernet payload: 46 bytes of IPv4 + UDP + 18 bytes of data.
const PKT: usize = 46;

/// A 46-byte UDP/IPv4 packet (18 bytes of payload) with UDP checksum zero.
fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> [u8; PKT] {
    let l3 =
        Builder::v4(src.into(), dst.into())
            .udp_zero_checksum()
            .udp(sport, dport, &[0; PKT - 28]);
    let mut p = [0u8; PKT];
    p.copy_from_slice(&l3);
    p
}

/// A TCP SYN/IPv4 packet with a valid TCP checksum.
fn syn4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    Builder::v4(src.into(), dst.into()).tcp(&Tcp::new(sport, dport).seq(1000).flags(SYN).win(64240))
}

/// Addresses of connection `j` of thread `t`.
fn conn_addrs(t: usize, j: usize) -> ([u8; 4], [u8; 4]) {
    (
        [10 + t as u8, (j >> 16) as u8, (j >> 8) as u8, j as u8],
        [172, 16, (j >> 24) as u8, 1],
    )
}

fn pkt(l3: &[u8]) -> CtPacket<'_> {
    CtPacket {
        l3,
        family: Family::Ipv4,
        flags: PktFlags::empty(),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn tracker(max: usize, shards: usize) -> Tracker {
    Tracker::new(TrackerConfig {
        max_conns: max.min(u32::MAX as usize) as u32,
        shards,
        ..Default::default()
    })
}

/// One thread's prebuilt packets.
type Ring = Vec<[u8; PKT]>;

/// Established traffic: returns Mpps over all threads.
fn established(a: &Args) -> f64 {
    let t = tracker(a.conns * a.threads * 2 + 1024, a.shards);
    let c = a.conns.max(1);
    let ring = c.max(a.batch).div_ceil(a.batch) * a.batch;
    let bufs: Vec<(Ring, Ring)> = (0..a.threads)
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
    let params = CtParams {
        zone: Zone(0),
        commit: true,
        ..Default::default()
    };
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
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .collect()
    });
    let total = (a.packets / a.batch * a.batch * a.threads) as f64;
    let secs = elapsed.iter().max().map_or(1.0, |d| d.as_secs_f64());
    total / secs / 1e6
}

/// New committed connections per second (UDP, then TCP SYNs).
fn setup(a: &Args) -> (f64, f64) {
    let mut rates = [0.0; 2];
    for (i, rate) in rates.iter_mut().enumerate() {
        let t = tracker(a.packets * a.threads + 1024, a.shards);
        let bufs: Vec<Vec<Vec<u8>>> = (0..a.threads)
            .map(|th| {
                (0..a.packets)
                    .map(|j| {
                        let (s, d) = conn_addrs(th, j);
                        if i == 0 {
                            udp4(s, d, 4000, 53).to_vec()
                        } else {
                            syn4(s, d, 4000, 80)
                        }
                    })
                    .collect()
            })
            .collect();
        let params = CtParams {
            commit: true,
            ..Default::default()
        };
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
            hs.into_iter()
                .map(|h| h.join().expect("bench thread"))
                .collect()
        });
        assert_eq!(
            t.len(),
            a.packets * a.threads,
            "every new connection committed"
        );
        *rate = (a.packets * a.threads) as f64 / el.iter().max().map_or(1.0, |d| d.as_secs_f64());
    }
    (rates[0], rates[1])
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Insert C established UDP connections generating packets on the fly.
fn fill(
    t: &Tracker,
    conns: usize,
    zone_of: impl Fn(usize) -> u16,
    reply_of: impl Fn(usize) -> bool,
) {
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
            let params = CtParams {
                zone: Zone(zone_of(j + k)),
                commit: true,
                ..Default::default()
            };
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
    let t = tracker(a.conns + 1024, a.shards);
    let before = rss_bytes();
    fill(&t, a.conns, |_| 0, |_| true);
    let after = rss_bytes();
    assert_eq!(t.len(), a.conns);
    let m = t.memory();
    let per = |b: usize| b as f64 / a.conns as f64;
    println!(
        "held by the table per connection: records {:.1}, index {:.1}, wheel {:.1} (total {:.1})",
        per(m.records),
        per(m.index),
        per(m.wheel),
        per(m.records + m.index + m.wheel)
    );
    (after.saturating_sub(before)) as f64 / a.conns as f64
}

/// Control-plane passes over C UDP connections in zone 1 while a thread
/// forwards established traffic in zone 2, each timed, with the worst batch
/// latency the packet thread saw during it:
/// - flush of the unreplied half (`flush zone=1 udp unreplied`);
/// - dump of the rest;
/// - expiry of the rest by `sweep` once their timeout passed.
///
/// As a baseline: 100 ms with no control pass at all.
///
/// Returns rows of (pass, connections affected, ms, worst batch µs).
fn control(a: &Args) -> Vec<(&'static str, usize, f64, f64)> {
    let t = tracker(a.conns + 4096, a.shards);
    fill(&t, a.conns, |_| 1, |j| j % 2 == 1);
    let traffic: Vec<[u8; PKT]> = (0..1024)
        .map(|j| {
            let (s, d) = conn_addrs(3, j);
            udp4(s, d, 4000, 53)
        })
        .collect();
    // The traffic clock runs in step with the sweep clock, so the packet
    // thread's own connections stay alive while zone 1's expire.
    let clock = std::sync::atomic::AtomicU64::new(NOW);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let worst = std::sync::atomic::AtomicU64::new(0);
    let params = CtParams {
        zone: Zone(2),
        commit: true,
        ..Default::default()
    };
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    std::thread::scope(|s| {
        s.spawn(|| {
            let pkts: Vec<CtPacket> = traffic.iter().map(|p| pkt(p)).collect();
            let mut res = [CtResult::default(); 32];
            let mut k = 0;
            while !stop.load(relaxed) {
                let off = (k % 32) * 32;
                let st = Instant::now();
                t.execute(&pkts[off..off + 32], &params, clock.load(relaxed), &mut res);
                worst.fetch_max(st.elapsed().as_nanos() as u64, relaxed);
                k += 1;
            }
        });
        std::thread::sleep(Duration::from_millis(50));
        let mut rows = Vec::new();
        let mut timed = |name: &'static str, f: &mut dyn FnMut() -> usize| {
            worst.store(0, relaxed);
            let st = Instant::now();
            let n = f();
            let ms = st.elapsed().as_secs_f64() * 1e3;
            std::thread::sleep(Duration::from_millis(5));
            rows.push((name, n, ms, worst.load(relaxed) as f64 / 1e3));
        };
        let unreplied = FlushFilter {
            zone: Some(Zone(1)),
            proto: Some(17),
            state: StateClass::Unreplied,
            ..Default::default()
        };
        // Baseline: the same packet thread with no control pass running
        // (on a shared machine, scheduling alone causes some latency).
        timed("idle", &mut || {
            std::thread::sleep(Duration::from_millis(100));
            0
        });
        timed("flush", &mut || t.flush(&unreplied, NOW));
        let zone1 = FlushFilter {
            zone: Some(Zone(1)),
            ..Default::default()
        };
        timed("dump", &mut || t.dump(&zone1, NOW).len());
        // udp_multiple is 120 s: step the clock past it and sweep.
        let later = NOW + 200 * 1_000_000_000;
        clock.store(later, relaxed);
        std::thread::sleep(Duration::from_millis(20));
        timed("expire", &mut || {
            let mut n = 0;
            loop {
                let k = t.sweep(later, 1 << 16);
                n += k;
                if k == 0 {
                    break n;
                }
            }
        });
        stop.store(true, relaxed);
        rows
    })
}

fn main() {
    let a = Args::parse();
    let runs = a.runs.max(1);
    match a.mode {
        Mode::Established => {
            let v: Vec<f64> = (0..runs).map(|_| established(&a)).collect();
            if let Some(p) = &a.json_out {
                let case = format!("established-{}T", a.threads);
                append_json(p, &case, a.conns, "Mpps", v.clone());
            }
            println!("threads  batch  conns      packets/thread  mpps (median of {runs})");
            let m = median(v);
            println!(
                "{:<8} {:<6} {:<10} {:<15} {:.2}",
                a.threads, a.batch, a.conns, a.packets, m
            );
            println!("mpps={m:.2}");
        }
        Mode::Setup => {
            let v: Vec<(f64, f64)> = (0..runs).map(|_| setup(&a)).collect();
            let udp = median(v.iter().map(|x| x.0).collect());
            let tcp = median(v.iter().map(|x| x.1).collect());
            if let Some(p) = &a.json_out {
                for (case, rates) in [
                    ("setup-udp", v.iter().map(|x| x.0 / 1e6).collect()),
                    ("setup-tcp", v.iter().map(|x| x.1 / 1e6).collect()),
                ] {
                    append_json(p, case, a.packets, "Mconn/s", rates);
                }
            }
            println!("threads  conns/thread  udp_conns_per_s  tcp_conns_per_s");
            println!(
                "{:<8} {:<13} {:<16.0} {:.0}",
                a.threads, a.packets, udp, tcp
            );
            println!("udp_setup_per_s={udp:.0} tcp_setup_per_s={tcp:.0}");
        }
        Mode::Memory => {
            let v: Vec<f64> = (0..runs).map(|_| memory(&a)).collect();
            if let Some(p) = &a.json_out {
                append_json(p, "memory", a.conns, "B/conn", v.clone());
            }
            let m = median(v);
            println!("conns      bytes_per_conn");
            println!("{:<10} {:.1}", a.conns, m);
            println!("bytes_per_conn={m:.1}");
        }
        Mode::Flush => {
            let v: Vec<_> = (0..runs).map(|_| control(&a)).collect();
            println!(
                "pass     conns      ms (median of {runs})  worst packet batch during it (us)"
            );
            let mut summary = Vec::new();
            for (i, (name, n, _, _)) in v[0].iter().enumerate() {
                let ms_runs: Vec<f64> = v.iter().map(|r| r[i].2).collect();
                let worst_runs: Vec<f64> = v.iter().map(|r| r[i].3).collect();
                if let Some(p) = &a.json_out {
                    // "idle" is a fixed sleep: only its worst batch means anything.
                    if *name != "idle" {
                        append_json(p, name, a.conns, "ms", ms_runs.clone());
                    }
                    let case = format!("{name}-worst-batch");
                    append_json(p, &case, a.conns, "us", worst_runs.clone());
                }
                let ms = median(ms_runs);
                let worst = median(worst_runs);
                println!("{name:<8} {n:<10} {ms:<20.1} {worst:.0}");
                summary.push(format!(
                    "{name}_ms={ms:.1} {name}_worst_batch_us={worst:.0}"
                ));
            }
            println!("{}", summary.join(" "));
        }
    }
}
