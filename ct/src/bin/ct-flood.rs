//! ct-flood: the table under load and floods, full scale (build with
//! `--release`).
//!
//! ```text
//! ct-flood                       # both parts
//! ct-flood --part flood          # SYN flood (ct::flood, FloodConfig::full)
//! ct-flood --part flush          # selective flush of 1M entries under traffic
//! ```
//!
//! `flood`: 1M spoofed SYNs at 100k per simulated second against a table of
//! 200k while 1,000 real TCP connections carry traffic (see `ct::flood`);
//! prints the outcome and the flood rate one thread sustained (wall clock;
//! the real connections' packets and the sweeps run on the same thread
//! and are included in the time).
//!
//! `flush`: a table of `--conns` entries (default 1M): zone 1 UDP, half
//! unreplied and half replied; zone 2 UDP unreplied; zone 3 the packet
//! thread's 1,024 established UDP connections. A second thread executes
//! `ct(commit,zone=3)` on batches of 32 of its connections without pause;
//! the main thread flushes zone 1's unreplied UDP entries (one shard lock
//! at a time, `Tracker::flush`). Prints the flush time, what was removed,
//! and the packet thread's rate before and during the flush, and its
//! slowest batch during the flush and, as a baseline, in 150 ms without.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use ct::build::Builder;
use ct::flood::{run_syn_flood, FloodConfig};
use ct::flush::{FlushFilter, StateClass};
use ct::{CtPacket, CtParams, CtResult, Family, PktFlags, Tracker, TrackerConfig, Zone};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    All,
    Flood,
    Flush,
}

#[derive(Parser)]
#[command(about = "ferrovs conntrack under SYN flood and selective flush")]
struct Args {
    #[arg(long, value_enum, default_value = "all")]
    part: Part,
    /// Entries in the table for the flush part.
    #[arg(long, default_value_t = 1_000_000)]
    conns: u32,
}

const NOW: u64 = 1000 * 1_000_000_000;

fn flood() {
    let cfg = FloodConfig::full();
    let r = run_syn_flood(&cfg);
    println!(
        "SYN flood: {} spoofed SYNs, table max {}, {} real TCP connections",
        cfg.flood_syns, cfg.max_conns, cfg.real_conns
    );
    let rows: [(&str, String); 14] = [
        ("flood SYNs admitted (+new)", r.flood_admitted.to_string()),
        ("flood SYNs refused (+inv)", r.flood_refused.to_string()),
        ("early drops", r.early_drops.to_string()),
        ("expired (wheel + pressure reaper)", r.expired.to_string()),
        ("max entries seen", r.max_len.to_string()),
        ("entries at flood end", r.len_at_flood_end.to_string()),
        (
            "entries after settle",
            format!("{} (after {} s)", r.len_settled, cfg.settle_secs),
        ),
        (
            "seconds to <= real conns",
            format!("{:?}", r.settle_to_real_secs),
        ),
        ("real connections opened", r.real_open.to_string()),
        ("real packets", r.real_packets.to_string()),
        ("real packets +inv / not +est", r.real_bad.to_string()),
        ("pressure episodes", r.pressure_episodes.to_string()),
        (
            "flood phase wall time (s)",
            format!("{:.3}", r.flood_wall_secs),
        ),
        (
            "flood rate (SYN/s, 1 thread)",
            format!("{:.0}", r.flood_syns_per_sec),
        ),
    ];
    for (k, v) in rows {
        println!("  {k:<36} {v}");
    }
    println!(
        "flood_syns_per_sec={:.0} real_bad={} max_len={} len_settled={}",
        r.flood_syns_per_sec, r.real_bad, r.max_len, r.len_settled
    );
}

/// UDP packet from 10.z.x.y:sport to 172.16.x.y:53 for connection `i` of
/// zone group `z` (reply: swapped).
fn udp(z: u8, i: u32, reply: bool) -> Vec<u8> {
    let a = [10, z, (i >> 8) as u8, i as u8].into();
    let b = [172, 16 + (i >> 16) as u8, (i >> 8) as u8, i as u8].into();
    let sport = 1024 + (i >> 24) as u16;
    if reply {
        Builder::v4(b, a).udp(53, sport, &[])
    } else {
        Builder::v4(a, b).udp(sport, 53, &[])
    }
}

fn run(t: &Tracker, pkts: &[Vec<u8>], zone: u16) {
    let params = CtParams {
        zone: Zone(zone),
        commit: true,
        ..Default::default()
    };
    let mut out = [CtResult::default(); 32];
    for chunk in pkts.chunks(32) {
        let cp: Vec<CtPacket> = chunk
            .iter()
            .map(|p| CtPacket {
                l3: p,
                family: Family::Ipv4,
                flags: PktFlags::L4_CSUM_GOOD | PktFlags::IP_CSUM_GOOD,
            })
            .collect();
        t.execute(&cp, &params, NOW, &mut out[..cp.len()]);
    }
}

fn flush(conns: u32) {
    let t = Tracker::new(TrackerConfig {
        max_conns: conns + 8192,
        seed: Some(1),
        ..Default::default()
    });
    let z1 = conns / 2;
    let z2 = conns - z1 - 1024;
    let st = Instant::now();
    // Zone 1: connection i unreplied when even, replied when odd. Built in
    // slices so the packets of 1M connections are never all in memory.
    for base in (0..z1).step_by(65536) {
        let end = (base + 65536).min(z1);
        let orig: Vec<Vec<u8>> = (base..end).map(|i| udp(1, i, false)).collect();
        run(&t, &orig, 1);
        let rep: Vec<Vec<u8>> = (base..end)
            .filter(|i| i % 2 == 1)
            .map(|i| udp(1, i, true))
            .collect();
        run(&t, &rep, 1);
    }
    for base in (0..z2).step_by(65536) {
        let end = (base + 65536).min(z2);
        let orig: Vec<Vec<u8>> = (base..end).map(|i| udp(2, i, false)).collect();
        run(&t, &orig, 2);
    }
    let traffic: Vec<Vec<u8>> = (0..1024).map(|i| udp(3, i, false)).collect();
    let back: Vec<Vec<u8>> = (0..1024).map(|i| udp(3, i, true)).collect();
    run(&t, &traffic, 3);
    run(&t, &back, 3);
    run(&t, &traffic, 3);
    println!(
        "\nselective flush: {} entries (filled in {:.1} s): zone 1 UDP {} ({} unreplied), zone 2 UDP unreplied {}, zone 3 established 1024",
        t.len(),
        st.elapsed().as_secs_f64(),
        z1,
        z1.div_ceil(2),
        z2
    );

    let packets = AtomicU64::new(0);
    let worst_ns = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let (before, during, worst, removed, ms) = std::thread::scope(|s| {
        s.spawn(|| {
            let cp: Vec<CtPacket> = traffic
                .iter()
                .map(|p| CtPacket {
                    l3: p,
                    family: Family::Ipv4,
                    flags: PktFlags::L4_CSUM_GOOD | PktFlags::IP_CSUM_GOOD,
                })
                .collect();
            let params = CtParams {
                zone: Zone(3),
                commit: true,
                ..Default::default()
            };
            let mut out = [CtResult::default(); 32];
            let mut k = 0;
            while !stop.load(Relaxed) {
                let off = (k % 32) * 32;
                let t0 = Instant::now();
                t.execute(&cp[off..off + 32], &params, NOW, &mut out);
                worst_ns.fetch_max(t0.elapsed().as_nanos() as u64, Relaxed);
                packets.fetch_add(32, Relaxed);
                k += 1;
            }
        });
        std::thread::sleep(Duration::from_millis(100));
        let (p0, t0) = (packets.load(Relaxed), Instant::now());
        std::thread::sleep(Duration::from_millis(500));
        let before = (packets.load(Relaxed) - p0) as f64 / t0.elapsed().as_secs_f64();
        // Baseline of the slowest batch with no flush running (on a shared
        // machine, scheduling alone delays some batches).
        worst_ns.store(0, Relaxed);
        std::thread::sleep(Duration::from_millis(150));
        let idle_worst = worst_ns.load(Relaxed);
        worst_ns.store(0, Relaxed);
        let filter = FlushFilter {
            zone: Some(Zone(1)),
            proto: Some(17),
            state: StateClass::Unreplied,
            ..Default::default()
        };
        let (p1, t1) = (packets.load(Relaxed), Instant::now());
        let removed = t.flush(&filter, NOW);
        let el = t1.elapsed();
        let during = (packets.load(Relaxed) - p1) as f64 / el.as_secs_f64();
        let worst = worst_ns.load(Relaxed);
        stop.store(true, Relaxed);
        (
            before,
            during,
            (idle_worst, worst),
            removed,
            el.as_secs_f64() * 1e3,
        )
    });
    let (idle_worst, worst) = worst;
    let rows: [(&str, String); 7] = [
        ("removed (zone 1 UDP unreplied)", removed.to_string()),
        ("entries left", t.len().to_string()),
        ("flush time (ms)", format!("{ms:.1}")),
        ("packet thread before (pkt/s)", format!("{before:.0}")),
        ("packet thread during (pkt/s)", format!("{during:.0}")),
        (
            "slowest batch, 150 ms idle (us)",
            format!("{:.0}", idle_worst as f64 / 1e3),
        ),
        (
            "slowest batch during flush (us)",
            format!("{:.0}", worst as f64 / 1e3),
        ),
    ];
    for (k, v) in rows {
        println!("  {k:<36} {v}");
    }
    println!("flush_ms={ms:.1} removed={removed} before_pps={before:.0} during_pps={during:.0}");
}

fn main() {
    let a = Args::parse();
    if matches!(a.part, Part::All | Part::Flood) {
        flood();
    }
    if matches!(a.part, Part::All | Part::Flush) {
        flush(a.conns.max(4096));
    }
}
