//! dpdk-bench: ferrovs over DPDK virtual devices, side by side with
//! `dpdk-testpmd --forward-mode=io` on the same devices (cargo feature
//! `dpdk`; `scripts/bench-dpdk.sh` builds and runs it).
//!
//! ```text
//! dpdk-bench [--seconds S] [--runs R] [--conns N] [--memory no-huge,huge]
//!            [--cells LIST] [--json-out FILE]
//! ```
//!
//! Cells (all by default; `--cells` picks some):
//!
//! | cell | what runs | devices |
//! | --- | --- | --- |
//! | `testpmd-null` | testpmd io, 1 forwarding core, ports paired | net_null0 <-> net_null1 |
//! | `one-rule-null` | ferrovs, 1 PMD, `in_port=1,actions=output:2` and back | same |
//! | `testpmd-pcap` | testpmd io, 1 core, loop topology | net_pcap (infinite replay) |
//! | `one-rule-pcap` | ferrovs, 1 PMD, `actions=in_port` | same |
//! | `ct-pcap` | ferrovs, 1 PMD, stateful ct pipeline, established UDP | same |
//! | `ct-offload-pcap` | as `ct-pcap`, with the flow-offload fast path (`pmd.flow_offload`) | same |
//! | `one-rule-null-2pmd` | ferrovs, 2 PMDs, 2 rx queues per port | as `one-rule-null` |
//! | `ct-pcap-2pmd` | ferrovs, 2 PMDs, 2 rx queues (one capture each) | as `ct-pcap` |
//!
//! net_null's frames carry no headers (all zeros), so the conntrack pipeline
//! runs on a net_pcap device replaying, from memory and forever
//! (`infinite_rx=1`), a capture of established UDP request/response traffic
//! over `--conns` connections made by ferrovs's traffic generator; the
//! one-rule pipeline and testpmd are measured on that device too, so the
//! ct cell has an I/O limit measured on the same traffic. The pcap device
//! drops what it transmits (no `tx_pcap`), as net_null does.
//!
//! Every cell runs in a child process (DPDK's EAL initialises once per
//! process), with `--no-huge` or on hugepages (`--in-memory`; needs free
//! 2 MiB hugepages, which `scripts/bench-dpdk.sh` reserves when root). A
//! ferrovs cell starts the daemon's own code (`Daemon::start`: ports, flows,
//! PMD threads), waits `--warmup` seconds, then counts the packets its ports
//! transmit over `--seconds`. A testpmd cell parses the per-port `Rx-pps`
//! lines of `--stats-period 1` (the sum over ports, median over the
//! window). Rounds are interleaved (every cell once per round, `--runs`
//! rounds) and each figure is the median of its rounds, because this kind of
//! machine is noisy.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use datapath::config::DaemonConfig;
use datapath::daemon::Daemon;
use datapath::packet::{PacketBatch, PacketPool, PortNo};
use datapath::port::generator::{GenProto, GeneratorConfig, GeneratorPort};
use datapath::port::Port;
use serde::{Deserialize, Serialize};

const ALL_CELLS: &[&str] = &[
    "testpmd-null",
    "one-rule-null",
    "testpmd-pcap",
    "one-rule-pcap",
    "ct-pcap",
    "ct-offload-pcap",
    "one-rule-null-2pmd",
    "ct-pcap-2pmd",
];

#[derive(Parser, Debug)]
#[command(about = "ferrovs over DPDK vdevs vs dpdk-testpmd io forwarding")]
struct Args {
    /// Measured seconds per cell.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Seconds of traffic before measuring.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Interleaved rounds; each figure is the median.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Connections in the replayed capture (ct cells).
    #[arg(long, default_value_t = 1000)]
    conns: u32,
    /// Memory modes: no-huge, huge.
    #[arg(long, value_delimiter = ',', default_value = "no-huge,huge")]
    memory: Vec<String>,
    /// Cells to run (see the module docs).
    #[arg(long, value_delimiter = ',')]
    cells: Vec<String>,
    /// Append one JSON line per figure to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Internal: run one cell in this process and print its result.
    #[arg(long, hide = true)]
    cell: Option<String>,
}

/// One cell of one round, as handed to the child process.
#[derive(Serialize, Deserialize, Debug, Clone)]
struct CellSpec {
    cell: String,
    huge: bool,
    seconds: u64,
    warmup: u64,
    dir: PathBuf,
    prefix: String,
}

/// What a child reports.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
struct CellResult {
    mpps: f64,
    rx: u64,
    tx: u64,
    drops: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(spec) = &args.cell {
        return match serde_json::from_str::<CellSpec>(spec)
            .map_err(|e| format!("--cell: {e}"))
            .and_then(|s| run_ferrovs_cell(&s))
        {
            Ok(r) => {
                println!("RESULT {}", serde_json::to_string(&r).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("dpdk-bench cell: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dpdk-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let cells: Vec<String> = if args.cells.is_empty() {
        ALL_CELLS.iter().map(|s| s.to_string()).collect()
    } else {
        args.cells.clone()
    };
    for c in &cells {
        if !ALL_CELLS.contains(&c.as_str()) {
            return Err(format!(
                "--cells: unknown cell '{c}' (known: {})",
                ALL_CELLS.join(",")
            ));
        }
    }
    let mut memory = Vec::new();
    for m in &args.memory {
        match m.as_str() {
            "no-huge" => memory.push(false),
            "huge" => {
                let free = free_hugepages_mib();
                if free < 600 {
                    println!(
                        "hugepages: skipped ({free} MiB free in 2 MiB pages, 600 needed; as root: \
                         echo 512 > /proc/sys/vm/nr_hugepages and mount hugetlbfs)"
                    );
                } else {
                    memory.push(true);
                }
            }
            other => return Err(format!("--memory: unknown mode '{other}' (no-huge, huge)")),
        }
    }
    let dir = std::env::temp_dir().join(format!("ferrovs-dpdk-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    write_captures(&dir, args.conns)?;
    println!(
        "dpdk-bench: {} s per cell after {} s warm-up, {} rounds, capture of {} established \
         UDP connections (64-byte frames)",
        args.seconds, args.warmup, args.runs, args.conns
    );

    let mut figures: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); cells.len()]; memory.len()];
    let mut n = 0usize;
    for round in 0..args.runs {
        for (mi, &huge) in memory.iter().enumerate() {
            for (ci, cell) in cells.iter().enumerate() {
                n += 1;
                let spec = CellSpec {
                    cell: cell.clone(),
                    huge,
                    seconds: args.seconds,
                    warmup: args.warmup,
                    dir: dir.clone(),
                    prefix: format!("fvsbench{}x{n}", std::process::id()),
                };
                let r = if cell.starts_with("testpmd") {
                    run_testpmd_cell(&spec)
                } else {
                    run_child(&spec)
                };
                match r {
                    Ok(r) => {
                        eprintln!(
                            "  round {} {} {cell}: {:.2} Mpps",
                            round + 1,
                            mem_name(huge),
                            r.mpps
                        );
                        figures[mi][ci].push(r.mpps);
                    }
                    Err(e) => eprintln!(
                        "  round {} {} {cell}: FAILED: {e}",
                        round + 1,
                        mem_name(huge)
                    ),
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

    // The table: one row per cell, one column per memory mode.
    print!("\n| cell |");
    for &huge in &memory {
        print!(" {} Mpps |", mem_name(huge));
    }
    print!("\n| --- |");
    for _ in &memory {
        print!(" ---: |");
    }
    println!();
    let mut json = Vec::new();
    let mut medians = vec![vec![None; cells.len()]; memory.len()];
    for (ci, cell) in cells.iter().enumerate() {
        print!("| {cell} |");
        for (mi, &huge) in memory.iter().enumerate() {
            match median(&figures[mi][ci]) {
                Some(m) => {
                    medians[mi][ci] = Some(m);
                    print!(" {m:.2} |");
                    json.push(serde_json::json!({
                        "bench": "dpdk-bench", "cell": cell, "memory": mem_name(huge),
                        "mpps": m, "runs": figures[mi][ci],
                    }));
                }
                None => print!(" failed |"),
            }
        }
        println!();
    }
    // Ratios the issue asks for, per memory mode.
    let idx = |name: &str| cells.iter().position(|c| c == name);
    for (mi, &huge) in memory.iter().enumerate() {
        let get = |name: &str| idx(name).and_then(|i| medians[mi][i]);
        let mut line = format!("{}:", mem_name(huge));
        if let (Some(t), Some(o)) = (get("testpmd-null"), get("one-rule-null")) {
            line += &format!(" one-rule/testpmd (null) {:.0}%;", 100.0 * o / t);
        }
        if let (Some(t), Some(o)) = (get("testpmd-pcap"), get("one-rule-pcap")) {
            line += &format!(" one-rule/testpmd (pcap) {:.0}%;", 100.0 * o / t);
        }
        if let (Some(t), Some(c)) = (get("testpmd-pcap"), get("ct-pcap")) {
            line += &format!(" ct/testpmd (pcap) {:.0}%;", 100.0 * c / t);
        }
        if let (Some(t), Some(c)) = (get("testpmd-null"), get("ct-pcap")) {
            line += &format!(" ct (pcap)/testpmd (null) {:.0}%;", 100.0 * c / t);
        }
        if let (Some(c), Some(o)) = (get("ct-pcap"), get("ct-offload-pcap")) {
            line += &format!(" ct fast path/classic {:.2}x;", o / c);
        }
        if let (Some(a), Some(b)) = (get("one-rule-null"), get("one-rule-null-2pmd")) {
            line += &format!(" one-rule 2 PMDs/1 PMD {:.2}x;", b / a);
        }
        if let (Some(a), Some(b)) = (get("ct-pcap"), get("ct-pcap-2pmd")) {
            line += &format!(" ct 2 PMDs/1 PMD {:.2}x;", b / a);
        }
        println!("{line}");
    }
    let failed: Vec<&str> = cells
        .iter()
        .enumerate()
        .filter(|(ci, _)| medians.iter().any(|m| m[*ci].is_none()))
        .map(|(_, c)| c.as_str())
        .collect();
    if let Some(path) = &args.json_out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        for j in json {
            writeln!(f, "{j}").map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    if !failed.is_empty() {
        return Err(format!("no figure for: {}", failed.join(", ")));
    }
    Ok(())
}

fn mem_name(huge: bool) -> &'static str {
    if huge {
        "hugepages"
    } else {
        "no-huge"
    }
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}

/// Free hugepage memory (MiB) in the default 2 MiB size.
fn free_hugepages_mib() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let get = |k: &str| {
        meminfo
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get("HugePages_Free:") * get("Hugepagesize:") / 1024
}

/// EAL memory arguments of a cell.
fn mem_args(spec: &CellSpec) -> Vec<String> {
    let v: &[&str] = if spec.huge {
        &["-m", "512", "--in-memory"]
    } else {
        &["--no-huge", "-m", "512", "--no-shconf"]
    };
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.extend(["--file-prefix".into(), spec.prefix.clone()]);
    v.extend(["--no-pci".into(), "--no-telemetry".into()]);
    v
}

fn pcap_vdev(spec: &CellSpec, queues: usize) -> String {
    let mut s = "net_pcap0".to_string();
    for q in 0..queues {
        s += &format!(
            ",rx_pcap={}",
            spec.dir.join(format!("est{q}.pcap")).display()
        );
    }
    s + ",infinite_rx=1"
}

/// Two captures (`est0.pcap`, `est1.pcap`) of established UDP
/// request/response traffic over about `conns` connections each, both
/// directions, about four frames a connection; the two hold disjoint
/// connections (split by client endpoint), as RSS would spread them over
/// two queues.
fn write_captures(dir: &Path, conns: u32) -> Result<(), String> {
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    let gen = GeneratorPort::new(
        "gen",
        PortNo(1),
        GeneratorConfig {
            flows: conns * 2,
            proto: GenProto::Udp,
            replies: true,
            ..GeneratorConfig::default()
        },
    );
    let mut writers = Vec::new();
    for q in 0..2 {
        let path = dir.join(format!("est{q}.pcap"));
        let f = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        writers.push(
            PcapWriter::with_header(std::io::BufWriter::new(f), PcapHeader::default())
                .map_err(|e| format!("{}: {e}", path.display()))?,
        );
    }
    let mut pool = PacketPool::new(2048, 128, 64);
    let mut batch = PacketBatch::new();
    let want = conns as u64 * 8;
    let mut written = 0u64;
    while written < want {
        if gen.rx_burst(0, &mut batch, &mut pool) == 0 {
            return Err("traffic generator stopped".into());
        }
        for p in batch.drain() {
            let f = p.data();
            if written < want && f.len() >= 38 {
                // IPv4 without options: addresses at 26 and 30, ports at 34.
                let server = datapath::port::generator::SERVER_IP;
                let (ip, port) = if f[26..30] == server {
                    (&f[30..34], &f[36..38])
                } else {
                    (&f[26..30], &f[34..36])
                };
                let q = ip
                    .iter()
                    .chain(port)
                    .fold(0u32, |h, &b| h.wrapping_mul(31) ^ b as u32)
                    & 1;
                let pkt = PcapPacket::new(Duration::from_micros(written), f.len() as u32, f);
                writers[q as usize]
                    .write_packet(&pkt)
                    .map_err(|e| format!("capture: {e}"))?;
                written += 1;
            }
            pool.free(p);
        }
    }
    Ok(())
}

/// Re-runs this binary with `--cell` and reads its RESULT line.
fn run_child(spec: &CellSpec) -> Result<CellResult, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let json = serde_json::to_string(spec).map_err(|e| e.to_string())?;
    let out = Command::new(exe)
        .arg("--cell")
        .arg(json)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")) {
        return serde_json::from_str(line).map_err(|e| e.to_string());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(format!(
        "{}; {}",
        out.status,
        stderr.lines().rev().take(3).collect::<Vec<_>>().join(" / ")
    ))
}

/// A ferrovs cell, in this (child) process.
fn run_ferrovs_cell(spec: &CellSpec) -> Result<CellResult, String> {
    let two = spec.cell.ends_with("-2pmd");
    let queues = if two { 2 } else { 1 };
    let (ports, flows) = if spec.cell.starts_with("one-rule-null") {
        let port = |name: &str, dev: &str| {
            serde_json::json!({"name": name, "number": if name == "n0" { 1 } else { 2 }, "type": "dpdk",
                "options": {"device": dev, "rxqs": queues, "txqs": queues}})
        };
        (
            vec![port("n0", "net_null0"), port("n1", "net_null1")],
            "in_port=1,actions=output:2\nin_port=2,actions=output:1\n",
        )
    } else {
        let port = serde_json::json!({"name": "p0", "number": 1, "type": "dpdk",
            "options": {"device": "net_pcap0", "rxqs": queues, "txqs": queues}});
        let flows = if spec.cell.starts_with("one-rule") {
            "in_port=1,actions=in_port\n"
        } else {
            "table=0,priority=10,ip,actions=ct(table=1,zone=1)\n\
             table=1,priority=10,ct_state=+trk+new-inv,ip,actions=ct(commit,zone=1),in_port\n\
             table=1,priority=10,ct_state=+trk+est-inv,ip,actions=in_port\n"
        };
        (vec![port], flows)
    };
    let mut eal = mem_args(spec);
    if spec.cell.contains("null") {
        eal.extend([
            "--vdev".into(),
            "net_null0".into(),
            "--vdev".into(),
            "net_null1".into(),
        ]);
    } else {
        eal.extend(["--vdev".into(), pcap_vdev(spec, queues)]);
    }
    let flows_path = spec.dir.join(format!("{}.flows", spec.prefix));
    std::fs::write(&flows_path, flows).map_err(|e| e.to_string())?;
    let cores: Vec<usize> = if two { vec![0, 1] } else { vec![1] };
    let cfg = serde_json::json!({
        "log_level": "warn",
        "control_socket": spec.dir.join(format!("{}.sock", spec.prefix)),
        "pmd": {"threads": queues, "cores": cores, "idle_sleep_us": 0,
                "flow_offload": spec.cell.contains("offload")},
        "dpdk": {"eal_args": eal, "mbufs": 32768},
        "ports": ports,
        "flows": flows_path,
    });
    let cfg = DaemonConfig::parse(&cfg.to_string())?;
    let (daemon, _shutdown) = Daemon::start(&cfg, &spec.dir)?;
    let totals = || {
        let mut t = CellResult::default();
        for p in daemon.sw.ports() {
            let s = p.stats();
            t.rx += s.rx_packets;
            t.tx += s.tx_packets;
            t.drops += s.drops.iter().sum::<u64>();
        }
        t
    };
    std::thread::sleep(Duration::from_secs(spec.warmup));
    let (a, t0) = (totals(), Instant::now());
    std::thread::sleep(Duration::from_secs(spec.seconds));
    let (b, dt) = (totals(), t0.elapsed().as_secs_f64());
    daemon.stop();
    let tx = b.tx - a.tx;
    Ok(CellResult {
        mpps: tx as f64 / dt / 1e6,
        rx: b.rx - a.rx,
        tx,
        drops: b.drops - a.drops,
    })
}

/// A testpmd cell: io forwarding on one core, stats every second.
fn run_testpmd_cell(spec: &CellSpec) -> Result<CellResult, String> {
    let mut args: Vec<String> = vec!["-l".into(), "0,1".into()];
    args.extend(mem_args(spec));
    let pcap = spec.cell.ends_with("pcap");
    if pcap {
        args.extend(["--vdev".into(), pcap_vdev(spec, 1)]);
    } else {
        args.extend([
            "--vdev".into(),
            "net_null0".into(),
            "--vdev".into(),
            "net_null1".into(),
        ]);
    }
    args.extend(
        [
            "--",
            "--forward-mode=io",
            "--stats-period=1",
            "--nb-cores=1",
            "--total-num-mbufs=32768",
        ]
        .map(String::from),
    );
    if pcap {
        args.push("--port-topology=loop".into());
    }
    let mut child = Command::new("dpdk-testpmd")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("dpdk-testpmd: {e} (Debian package dpdk-dev)"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let n_ports = if pcap { 1 } else { 2 };
    // Generous: EAL start-up and mempool creation come first.
    let deadline = Instant::now() + Duration::from_secs(spec.warmup + spec.seconds + 30);
    // Stats blocks: one "Rx-pps:" line per port per second.
    let mut per_second = Vec::new();
    let mut block = Vec::new();
    let mut seconds = 0u64;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(rest) = line.trim().strip_prefix("Rx-pps:") {
            if let Some(v) = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
            {
                block.push(v);
            }
            if block.len() == n_ports {
                seconds += 1;
                if seconds > spec.warmup {
                    per_second.push(block.iter().sum::<u64>() as f64 / 1e6);
                }
                block.clear();
            }
        }
        if Instant::now() > deadline || per_second.len() as u64 >= spec.seconds {
            break;
        }
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let waited = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if waited.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
        }
    }
    let mpps = median(&per_second).ok_or("testpmd printed no port statistics")?;
    Ok(CellResult {
        mpps,
        ..CellResult::default()
    })
}
