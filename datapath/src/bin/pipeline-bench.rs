//! pipeline-bench: the full switch pipeline on one thread, generator port
//! to null sink.
//!
//! ```text
//! pipeline-bench [--conns 1000,100000,1000000] [--caches all,no-emc,none]
//!                [--packets N] [--runs R] [--setup] [--json-out FILE]
//! ```
//!
//! Every packet makes two passes: table 0 sends it to conntrack
//! (`ct(table=1,zone=1)`), table 1 commits new connections and outputs
//! established ones to the null port. The generator emits established UDP
//! request/response traffic (64-byte frames) over `conns` connections;
//! warm-up runs every connection through its handshake first, so the
//! measured packets are all `+est`. The thread doing the work is the
//! measuring thread: rx burst, pipeline, tx burst, as a PMD does, without a
//! thread hop. Each cell is the median of `runs` timed runs.
//!
//! `--setup` measures connection setup instead: TCP connections of a
//! three-way handshake plus one data segment (the shortest connection the
//! generator makes), a fresh connection per slot after that; the figure is
//! new connections committed per second.
//!
//! The generator marks checksums as verified (as a NIC with receive
//! checksum offload does), so conntrack does not recompute them; frame
//! generation itself (about 300 instructions a packet) is inside the
//! measured loop.
//!
//! `--nat` measures each cell twice, without and with NAT, on the same
//! kind of traffic: in the NAT run the generator's requests go to a
//! virtual IP (172.16.0.100) that `ct(commit,nat(dst=172.16.0.1))` maps to
//! the server, and every packet goes through `ct(nat,...)`: requests are
//! DNATed, replies un-DNATed (both directions rewritten, checksums
//! updated). The NAT rows are labelled `CACHES+nat` (JSON case
//! `CACHES-nat`), and a last table gives NAT's cost per cell. The timed
//! runs of the two alternate, so drift on a noisy machine hits both;
//! `--cpu-time` times by thread CPU time instead of the wall clock.
//!
//! `--offload` measures each cell twice, without and with the flow-offload
//! fast path (`PipelineConfig::flow_offload`, see `datapath::fastpath`):
//! established packets then skip classification and conntrack's lookup.
//! The rows are labelled `CACHES+offload` (JSON case `CACHES-offload`), the
//! timed runs alternate as with `--nat` (the two combine), and a last table
//! gives the speed-up per cell.
//!
//! `--quick` (for CI smoke runs): 1k and 100k connections, 500k packets,
//! one run.

use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use datapath::packet::{PacketBatch, PortNo};
use datapath::pipeline::{Pipeline, PipelineConfig};
use datapath::port::generator::{GenProto, GeneratorConfig, GeneratorPort};
use datapath::port::{NullPort, Port};
use datapath::switch::{PortEntry, Switch};
use ofproto::pipeline::VlanMode;

const FLOWS: &str = "\
table=0,priority=10,ip,in_port=1,actions=ct(table=1,zone=1)
table=1,priority=10,ct_state=+trk+new-inv,ip,actions=ct(commit,zone=1),output:2
table=1,priority=10,ct_state=+trk+est-inv,ip,actions=output:2
";

/// `--nat`: requests to the VIP are DNATed to the generator's server.
const NAT_FLOWS: &str = "\
table=0,priority=10,ip,in_port=1,actions=ct(nat,zone=1,table=1)
table=1,priority=10,ct_state=+trk+new-inv,ip,actions=ct(commit,zone=1,nat(dst=172.16.0.1)),output:2
table=1,priority=10,ct_state=+trk+est-inv,ip,actions=output:2
";

/// The virtual IP the generator's requests go to with `--nat`.
const NAT_VIP: [u8; 4] = [172, 16, 0, 100];

#[derive(Parser, Debug)]
#[command(about = "Full-pipeline throughput: generator -> classifier + conntrack -> null")]
struct Args {
    /// Connection counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1000,100000,1000000")]
    conns: Vec<u32>,
    /// Cache configurations: all (EMC + megaflow), no-emc, none.
    #[arg(long, value_delimiter = ',', default_value = "all,no-emc,none")]
    caches: Vec<String>,
    /// Packets per timed run.
    #[arg(long, default_value_t = 5_000_000)]
    packets: u64,
    /// Timed runs per cell (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Measure TCP connection setup instead.
    #[arg(long)]
    setup: bool,
    /// Append one JSON line per cell to this file.
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
    /// Smoke-run sizes: conns 1000,100000, 500k packets, one run.
    #[arg(long)]
    quick: bool,
    /// Also measure every cell with NAT (DNAT of a virtual IP, both
    /// directions translated) and report NAT's cost.
    #[arg(long)]
    nat: bool,
    /// Also measure every cell with the flow-offload fast path and report
    /// its speed-up.
    #[arg(long)]
    offload: bool,
    /// Measure only the fast-path bench of each cell (for profiling it).
    #[arg(long)]
    offload_only: bool,
    /// Time runs by the thread's CPU time instead of the wall clock (on a
    /// shared machine, time spent descheduled then does not count).
    #[arg(long)]
    cpu_time: bool,
}

fn pipeline_config(caches: &str) -> Result<PipelineConfig, String> {
    let base = PipelineConfig::default();
    Ok(match caches {
        "all" => base,
        "no-emc" => PipelineConfig { emc: false, ..base },
        "none" => PipelineConfig {
            emc: false,
            megaflow: false,
            ..base
        },
        other => {
            return Err(format!(
                "unknown cache configuration {other:?} (all, no-emc, none)"
            ))
        }
    })
}

struct Bench {
    sw: Arc<Switch>,
    gen: Arc<GeneratorPort>,
    pipeline: Pipeline,
    batch: PacketBatch,
}

impl Bench {
    fn new(gen_cfg: GeneratorConfig, max_conns: u32, cfg: PipelineConfig, flows: &str) -> Bench {
        let sw = Switch::new(ct::TrackerConfig {
            max_conns,
            ..Default::default()
        });
        let gen = Arc::new(GeneratorPort::new("gen", PortNo(1), gen_cfg));
        sw.add_port(PortEntry {
            port: gen.clone(),
            vlan: VlanMode::Access(0),
            kind: "generator".into(),
        })
        .expect("port");
        sw.add_port(PortEntry {
            port: Arc::new(NullPort::new("null", PortNo(2))),
            vlan: VlanMode::Access(0),
            kind: "null".into(),
        })
        .expect("port");
        sw.bridge.ofctl("add-flows", flows, 0).expect("flows");
        let pipeline = Pipeline::new(sw.clone(), cfg, 0);
        Bench {
            sw,
            gen,
            pipeline,
            batch: PacketBatch::new(),
        }
    }

    /// Run `n` packets through; returns seconds taken.
    fn run(&mut self, n: u64) -> f64 {
        let t = Instant::now();
        let mut done = 0;
        while done < n {
            let k = self
                .gen
                .rx_burst(0, &mut self.batch, &mut self.pipeline.pool);
            if k == 0 {
                break;
            }
            self.pipeline.process(&mut self.batch);
            done += k as u64;
        }
        t.elapsed().as_secs_f64()
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn json_line(case: &str, x: u64, unit: &str, runs: &[f64], med: f64) -> String {
    let runs: Vec<String> = runs.iter().map(|r| format!("{r:.4}")).collect();
    format!(
        "{{\"suite\":\"pipeline\",\"case\":\"{case}\",\"param\":\"conns\",\"x\":{x},\"value\":{med:.4},\"unit\":\"{unit}\",\"runs\":[{}],\"median\":{med:.4}}}",
        runs.join(",")
    )
}

fn append(path: &Option<std::path::PathBuf>, line: &str) {
    use std::io::Write;
    if let Some(p) = path {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p);
        match f {
            Ok(mut f) => {
                let _ = writeln!(f, "{line}");
            }
            Err(e) => eprintln!("pipeline-bench: cannot write {}: {e}", p.display()),
        }
    }
}

/// The established-traffic bench of one cell, warmed up.
fn established_bench(cfg: &PipelineConfig, conns: u32, nat: bool, offload: bool) -> Bench {
    let gen_cfg = GeneratorConfig {
        flows: conns,
        packet_size: 64,
        proto: GenProto::Udp,
        replies: true,
        request_dst: nat.then_some(NAT_VIP),
        ..Default::default()
    };
    let flows = if nat { NAT_FLOWS } else { FLOWS };
    let cfg = PipelineConfig {
        flow_offload: offload,
        ..cfg.clone()
    };
    let mut b = Bench::new(gen_cfg, conns.saturating_mul(2).max(1000), cfg, flows);
    // Warm-up: every connection sees a request and a reply (+est from
    // then on) and the caches fill.
    b.run(4 * conns as u64 + 200_000);
    b
}

/// Seconds the calling thread has run (not waited): `CLOCK_THREAD_CPUTIME_ID`.
fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Time one run of `n` packets: wall-clock seconds, or with `cpu` the
/// thread's CPU seconds.
fn timed_run(b: &mut Bench, n: u64, cpu: bool) -> f64 {
    if cpu {
        let t0 = thread_cpu_s();
        b.run(n);
        thread_cpu_s() - t0
    } else {
        b.run(n)
    }
}

/// One cell of the established-traffic table (with `--nat` / `--offload`:
/// one bench per combination, their timed runs alternating so that a
/// noisy machine hits them alike). Prints a row per bench; returns the
/// medians by `(nat, offload)`.
fn established_cell(
    args: &Args,
    caches: &str,
    cfg: &PipelineConfig,
    conns: u32,
) -> Vec<((bool, bool), f64)> {
    let nats: &[bool] = if args.nat { &[false, true] } else { &[false] };
    let offloads: &[bool] = if args.offload_only {
        &[true]
    } else if args.offload {
        &[false, true]
    } else {
        &[false]
    };
    let modes: Vec<(bool, bool)> = nats
        .iter()
        .flat_map(|&n| offloads.iter().map(move |&o| (n, o)))
        .collect();
    let mut benches: Vec<Bench> = modes
        .iter()
        .map(|&(nat, offload)| established_bench(cfg, conns, nat, offload))
        .collect();
    let before: Vec<_> = benches.iter().map(|b| b.pipeline.counters).collect();
    let mut runs = vec![Vec::new(); benches.len()];
    for _ in 0..args.runs {
        for (b, r) in benches.iter_mut().zip(runs.iter_mut()) {
            let s = timed_run(b, args.packets, args.cpu_time);
            r.push(args.packets as f64 / s / 1e6);
        }
    }
    let mut medians = Vec::new();
    for (k, &(nat, offload)) in modes.iter().enumerate() {
        let b = &benches[k];
        let (before, runs) = (&before[k], &runs[k]);
        let c = b.pipeline.counters;
        let passes = (c.packets - before.packets) + (c.recirculations - before.recirculations);
        let emc = 100.0 * (c.emc_hits - before.emc_hits) as f64 / passes.max(1) as f64;
        let med = median(&mut runs.clone());
        let shown: Vec<String> = runs.iter().map(|r| format!("{r:.2}")).collect();
        let suffix = match (nat, offload) {
            (false, false) => "",
            (true, false) => "+nat",
            (false, true) => "+offload",
            (true, true) => "+nat+offload",
        };
        let label = format!("{caches}{suffix}");
        println!(
            "| {label} | {conns} | **{med:.2}** | {} | {} | {emc:.0} |",
            shown.join(" "),
            b.pipeline.megaflow_count()
        );
        let ct = b.sw.ct.counters();
        if nat && ct.nat_remote_refs == 0 && conns >= 100 {
            eprintln!("  note: no NAT binding spans shards: is NAT in effect?");
        }
        if ct.invalid > 0 || c.dropped_by_flow > before.dropped_by_flow || c.nat_dropped > 0 {
            eprintln!(
                "  note: {} invalid, {} dropped by flow, {} NAT drops during the runs",
                ct.invalid,
                c.dropped_by_flow - before.dropped_by_flow,
                c.nat_dropped
            );
        }
        if offload {
            let hits = c.offload_hits - before.offload_hits;
            let pkts = c.packets - before.packets;
            eprintln!(
                "  {label} {conns}: {:.1}% of packets took the fast path ({} entries, {} installs and {} hand-backs during the runs)",
                100.0 * hits as f64 / pkts.max(1) as f64,
                b.pipeline.offload_count(),
                c.offload_installs - before.offload_installs,
                c.offload_handbacks - before.offload_handbacks,
            );
        }
        let case = format!("{caches}{}", suffix.replace('+', "-"));
        append(
            &args.json_out,
            &json_line(&case, conns as u64, "Mpps", runs, med),
        );
        medians.push(((nat, offload), med));
    }
    medians
}

fn established(args: &Args) -> Result<(), String> {
    println!(
        "| caches | conns | Mpps (median of {}) | runs | megaflows | EMC hit % |",
        args.runs
    );
    println!("| --- | ---: | ---: | --- | ---: | ---: |");
    let mut costs = Vec::new();
    let mut speedups = Vec::new();
    for caches in &args.caches {
        let cfg = pipeline_config(caches)?;
        for &conns in &args.conns {
            let m = established_cell(args, caches, &cfg, conns);
            let get = |mode| m.iter().find(|(k, _)| *k == mode).map(|(_, v)| *v);
            if let (Some(p), Some(n)) = (get((false, false)), get((true, false))) {
                costs.push((caches.clone(), conns, p, n));
            }
            for nat in [false, true] {
                if let (Some(c), Some(o)) = (get((nat, false)), get((nat, true))) {
                    speedups.push((caches.clone(), nat, conns, c, o));
                }
            }
        }
    }
    if !speedups.is_empty() {
        println!();
        println!("| caches | conns | Mpps classic | Mpps offload | speed-up |");
        println!("| --- | ---: | ---: | ---: | ---: |");
        for (caches, nat, conns, c, o) in speedups {
            let caches = if nat { format!("{caches}+nat") } else { caches };
            println!("| {caches} | {conns} | {c:.2} | {o:.2} | {:.2}x |", o / c);
        }
    }
    if !costs.is_empty() {
        println!();
        println!("| caches | conns | Mpps without NAT | Mpps with NAT | NAT cost |");
        println!("| --- | ---: | ---: | ---: | ---: |");
        for (caches, conns, p, n) in costs {
            println!(
                "| {caches} | {conns} | {p:.2} | {n:.2} | {:.1}% |",
                100.0 * (1.0 - n / p)
            );
        }
    }
    Ok(())
}

fn setup(args: &Args) -> Result<(), String> {
    println!(
        "| caches | slots | new connections/s (M, median of {}) | runs |",
        args.runs
    );
    println!("| --- | ---: | ---: | --- |");
    for caches in &args.caches {
        let cfg = pipeline_config(caches)?;
        let slots = 1000;
        let gen_cfg = GeneratorConfig {
            flows: slots,
            packet_size: 64,
            proto: GenProto::Tcp,
            replies: true,
            conn_packets: 1,
            ..Default::default()
        };
        let mut runs = Vec::new();
        for _ in 0..args.runs {
            let mut b = Bench::new(gen_cfg.clone(), 8_000_000, cfg.clone(), FLOWS);
            b.run(20_000);
            let before = b.sw.ct.counters().inserts;
            let s = b.run(args.packets);
            let conns = b.sw.ct.counters().inserts - before;
            runs.push(conns as f64 / s / 1e6);
        }
        let med = median(&mut runs.clone());
        let shown: Vec<String> = runs.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "| {caches} | {slots} | **{med:.2}** | {} |",
            shown.join(" ")
        );
        append(
            &args.json_out,
            &json_line(
                &format!("setup-tcp-{caches}"),
                slots as u64,
                "Mconn/s",
                &runs,
                med,
            ),
        );
    }
    Ok(())
}

fn main() {
    let mut args = Args::parse();
    if args.quick {
        args.conns = vec![1000, 100_000];
        args.packets = 500_000;
        args.runs = 1;
    }
    let r = if args.setup {
        setup(&args)
    } else {
        established(&args)
    };
    if let Err(e) = r {
        eprintln!("pipeline-bench: {e}");
        std::process::exit(2);
    }
}
