//! flush-bench: a selective conntrack flush at scale, issued from the
//! control socket while the datapath forwards.
//!
//! ```text
//! flush-bench [--entries 1000000] [--conns 1000] [--runs 3] [--quick]
//!             [--baseline-ms 1000] [--report FILE] [--json-out FILE]
//! ```
//!
//! The real daemon runs in-process ([`Daemon::start`] and the control
//! server on a socket in a temporary directory): a generator port sends
//! established UDP request/response traffic over `conns` connections
//! (64-byte frames, no rate limit) through one PMD thread running the
//! conntrack pipeline (table 0 `ct(table=1,zone=1)`, table 1 commits new
//! connections and outputs established ones) to a null port.
//!
//! The table is then filled to `entries` connections through the tracker's
//! own `ct` action (batches of 32 packets, as the datapath calls it; a
//! timeout policy of an hour keeps them all alive for the run):
//!
//! | share | zone | what | flushed |
//! | ---: | ---: | --- | --- |
//! | 50 % | 7 | UDP, no reply seen | yes |
//! | 15 % | 7 | UDP, reply seen | no (state) |
//! | 10 % | 7 | TCP SYN sent, no reply | no (protocol) |
//! | 25 % | 8 | UDP, no reply seen | no (zone) |
//!
//! plus the generator's `conns` established connections in zone 1, so the
//! filter has to select. Each run then sends `flush-conntrack zone=7
//! proto=17 state=unreplied` over the control socket with the client call
//! `ferrovs-ctl` uses ([`protocol::call`]) and measures:
//!
//! - the command's wall time (connect, request, the flush, the reply);
//! - the entries it reports removed; every connection class is counted
//!   before and after ([`ct::Tracker::for_each`]): the flushed class must be
//!   gone and every other class exactly as it was, else the bench exits 1;
//! - the forwarding rate (packets the null port received per second) in
//!   the `baseline_ms` before the flush and during the command (exit 1 if
//!   nothing was forwarded during the flush, twice in a row: one such run
//!   is repeated, as a flush of a few milliseconds can fall inside one
//!   descheduling of the PMD thread on a loaded machine);
//! - the PMD thread's longest poll-loop iteration (`longest_iteration_ns`
//!   of `pmd-stats-show`) in the baseline window and from just before the
//!   flush to 20 ms after it: how long the thread went between two rounds
//!   of receive bursts (a wait on a shard lock the flush holds shows here;
//!   so does the thread being descheduled on a busy machine);
//! - where the PMD thread's time went in the two windows, from the
//!   kernel's `/proc/self/task/TID/schedstat`: on a CPU, runnable but
//!   waiting for one (CPU contention: the flush thread and other processes
//!   compete for the cores), and the rest, asleep (blocked on a lock).
//!
//! Between runs the flushed class is filled again (not timed). The table
//! prints every run and the medians; a JSON summary line is appended to
//! `--report` (default `target/bench-report/flush-bench.jsonl`) and, with
//! `--json-out`, one [`BenchRecord`] per measure (suite `flush`) for
//! `bench-report`.
//!
//! `--quick` (for CI smoke runs): 100k entries, one run.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use ct::build::{Builder, Tcp};
use ct::conn::ConnStatus;
use ct::flush::FlushFilter;
use ct::packet::tcp_flags::SYN;
use ct::{CtPacket, CtParams, CtResult, CtState, Family, PktFlags, PolicyId, Tracker, Zone};
use datapath::bench_result::{append_jsonl, median, BenchRecord};
use datapath::config::DaemonConfig;
use datapath::control::protocol::{call, Request};
use datapath::control::ControlServer;
use datapath::daemon::Daemon;
use datapath::port::Port;
use serde_json::json;

const FLOWS: &str = "\
table=0,priority=10,ip,in_port=1,actions=ct(table=1,zone=1)
table=1,priority=10,ct_state=+trk+new-inv,ip,actions=ct(commit,zone=1),output:2
table=1,priority=10,ct_state=+trk+est-inv,ip,actions=output:2
";

/// The flush under test, as given to `ferrovs-ctl flush-conntrack`.
const FILTER: [&str; 3] = ["zone=7", "proto=17", "state=unreplied"];

/// Keeps the filled connections alive for the whole bench.
const POLICY: &str = "udp_first=3600,udp_single=3600,udp_multiple=3600,tcp_syn_sent=3600";

#[derive(Parser, Debug)]
#[command(about = "Selective conntrack flush from the control socket while the datapath forwards")]
struct Args {
    /// Connections in the table before each flush (plus the generator's).
    #[arg(long, default_value_t = 1_000_000)]
    entries: u32,
    /// Established connections the generator forwards in zone 1.
    #[arg(long, default_value_t = 1000)]
    conns: u32,
    /// Flushes (the medians are reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Length of the forwarding baseline before each flush, ms.
    #[arg(long, default_value_t = 1000)]
    baseline_ms: u64,
    /// Smoke-run sizes: 100k entries, one run.
    #[arg(long)]
    quick: bool,
    /// Append the JSON summary line here.
    #[arg(long, default_value = "target/bench-report/flush-bench.jsonl")]
    report: PathBuf,
    /// Also append one bench-report record per measure here.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

/// How the filled entries are split (see the module docs).
#[derive(Clone, Copy, Debug)]
struct Fill {
    /// Zone 7, UDP, unreplied: the flush's target.
    unreplied7: u32,
    /// Zone 7, UDP, replied.
    replied7: u32,
    /// Zone 7, TCP SYN sent.
    tcp7: u32,
    /// Zone 8, UDP, unreplied.
    unreplied8: u32,
}

impl Fill {
    fn of(entries: u32) -> Fill {
        let unreplied7 = entries / 2;
        let replied7 = (entries as u64 * 15 / 100) as u32;
        let tcp7 = entries / 10;
        Fill {
            unreplied7,
            replied7,
            tcp7,
            unreplied8: entries - unreplied7 - replied7 - tcp7,
        }
    }
}

const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

/// The client address of filled connection `i` (all distinct).
fn client(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + i)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Udp,
    UdpReply,
    TcpSyn,
}

/// Run the `ct` action on the packets of connections `range` (commit, in
/// `zone`, under `policy`); returns how many packets came out `+inv` or
/// untracked (none should).
fn commit(
    ct: &Tracker,
    now_ns: u64,
    zone: u16,
    policy: PolicyId,
    kind: Kind,
    range: std::ops::Range<u32>,
) -> usize {
    const BURST: usize = 32;
    let params = CtParams {
        zone: Zone(zone),
        commit: true,
        policy: Some(policy),
        ..Default::default()
    };
    let mut bad = 0;
    let mut bufs: Vec<Vec<u8>> = Vec::with_capacity(BURST);
    let mut i = range.start;
    while i < range.end {
        bufs.clear();
        let end = range.end.min(i + BURST as u32);
        for c in i..end {
            bufs.push(match kind {
                Kind::Udp => Builder::v4(client(c), SERVER).udp(40000, 53, &[]),
                Kind::UdpReply => Builder::v4(SERVER, client(c)).udp(53, 40000, &[]),
                Kind::TcpSyn => {
                    Builder::v4(client(c), SERVER).tcp(&Tcp::new(40000, 80).flags(SYN).seq(1))
                }
            });
        }
        let pkts: Vec<CtPacket<'_>> = bufs
            .iter()
            .map(|b| CtPacket {
                l3: b,
                family: Family::Ipv4,
                flags: PktFlags::L4_CSUM_GOOD | PktFlags::IP_CSUM_GOOD,
            })
            .collect();
        let mut out = [CtResult::default(); BURST];
        let n = pkts.len();
        ct.execute(&pkts, &params, now_ns, &mut out[..n]);
        bad += out[..n]
            .iter()
            .filter(|o| o.state.contains(CtState::INV) || !o.state.contains(CtState::TRK))
            .count();
        i = end;
    }
    bad
}

/// Fill the table (all classes, or only the flushed one); seconds taken.
fn fill(d: &Daemon, f: &Fill, policy: PolicyId, only_flushed: bool) -> Result<f64, String> {
    let t = Instant::now();
    let ct = &d.sw.ct;
    let now = || d.sw.clock.now_ns();
    let a = f.unreplied7;
    let b = a + f.replied7;
    let c = b + f.tcp7;
    let e = c + f.unreplied8;
    let mut bad = commit(ct, now(), 7, policy, Kind::Udp, 0..a);
    if !only_flushed {
        bad += commit(ct, now(), 7, policy, Kind::Udp, a..b);
        bad += commit(ct, now(), 7, policy, Kind::UdpReply, a..b);
        bad += commit(ct, now(), 7, policy, Kind::TcpSyn, b..c);
        bad += commit(ct, now(), 8, policy, Kind::Udp, c..e);
    }
    if bad > 0 {
        return Err(format!(
            "filling the table: {bad} packets were +inv or untracked"
        ));
    }
    Ok(t.elapsed().as_secs_f64())
}

/// (zone, protocol, reply seen) -> connections.
type Census = BTreeMap<(u16, u8, bool), u64>;

fn census(ct: &Tracker) -> Census {
    let mut m = Census::new();
    ct.for_each(&FlushFilter::default(), 0, |s| {
        let replied = s.status.contains(ConnStatus::SEEN_REPLY);
        *m.entry((s.zone.0, s.orig.proto, replied)).or_default() += 1;
    });
    m
}

/// The flushed class's key in a [`Census`].
const FLUSHED: (u16, u8, bool) = (7, 17, false);

fn check_filled(c: &Census, f: &Fill) -> Result<(), String> {
    let want = [
        ((7, 17, false), f.unreplied7),
        ((7, 17, true), f.replied7),
        ((7, 6, false), f.tcp7),
        ((8, 17, false), f.unreplied8),
    ];
    for (k, n) in want {
        let got = c.get(&k).copied().unwrap_or(0);
        if got != n as u64 {
            return Err(format!(
                "after filling: zone {} proto {} replied={}: {got} connections, expected {n}",
                k.0, k.1, k.2
            ));
        }
    }
    Ok(())
}

/// One flush's measures.
#[derive(Clone, Copy, Debug)]
struct RunResult {
    removed: u64,
    flush_ms: f64,
    mpps_before: f64,
    mpps_during: f64,
    longest_before_us: f64,
    longest_during_us: f64,
    /// Shares of the PMD thread's wall time (percent) before / during.
    pmd_before: ThreadShare,
    pmd_during: ThreadShare,
}

/// How a thread spent a window, percent of its wall time.
#[derive(Clone, Copy, Debug, Default)]
struct ThreadShare {
    on_cpu: f64,
    runnable: f64,
}

impl ThreadShare {
    fn asleep(&self) -> f64 {
        (100.0 - self.on_cpu - self.runnable).max(0.0)
    }
}

/// The thread id of the PMD thread (named `pmd-0`).
fn pmd_tid() -> Option<String> {
    std::fs::read_dir("/proc/self/task").ok()?.find_map(|e| {
        let e = e.ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim() == "pmd-0").then(|| e.file_name().to_string_lossy().into_owned())
    })
}

/// Nanoseconds a thread has spent on a CPU and runnable waiting for one
/// (zeros where the kernel does not say).
fn schedstat(tid: Option<&str>) -> (u64, u64) {
    let Some(tid) = tid else { return (0, 0) };
    let text =
        std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).unwrap_or_default();
    let mut f = text
        .split_whitespace()
        .map(|v| v.parse::<u64>().unwrap_or(0));
    (f.next().unwrap_or(0), f.next().unwrap_or(0))
}

fn share(a: (u64, u64), b: (u64, u64), wall: Duration) -> ThreadShare {
    let w = wall.as_nanos().max(1) as f64;
    ThreadShare {
        on_cpu: 100.0 * b.0.saturating_sub(a.0) as f64 / w,
        runnable: 100.0 * b.1.saturating_sub(a.1) as f64 / w,
    }
}

impl RunResult {
    fn ratio(&self) -> f64 {
        if self.mpps_before > 0.0 {
            self.mpps_during / self.mpps_before
        } else {
            0.0
        }
    }
}

fn longest_iteration_ns(d: &Daemon) -> u64 {
    d.pmds
        .lock()
        .stats()
        .iter()
        .map(|s| s.longest_iteration_ns)
        .max()
        .unwrap_or(0)
}

fn one_run(
    d: &Daemon,
    socket: &Path,
    sink: &Arc<dyn Port>,
    f: &Fill,
    baseline: Duration,
    tid: Option<&str>,
) -> Result<RunResult, String> {
    let before = census(&d.sw.ct);
    check_filled(&before, f)?;
    let tx = || sink.stats().tx_packets;

    d.pmds.lock().clear_stats();
    let (t0, tx0, s0) = (Instant::now(), tx(), schedstat(tid));
    std::thread::sleep(baseline);
    let (t1, tx1, s1) = (Instant::now(), tx(), schedstat(tid));
    let longest_before = longest_iteration_ns(d);

    d.pmds.lock().clear_stats();
    let req = Request {
        command: "flush-conntrack".into(),
        args: FILTER.iter().map(|s| s.to_string()).collect(),
        json: true,
    };
    let (t2, tx2, s2) = (Instant::now(), tx(), schedstat(tid));
    let reply = call(socket, &req, Duration::from_secs(600));
    let (t3, tx3, s3) = (Instant::now(), tx(), schedstat(tid));
    // Let the PMD publish (every 5 ms) an iteration maximum that covers
    // the whole flush.
    std::thread::sleep(Duration::from_millis(20));
    let longest_during = longest_iteration_ns(d);

    let reply = reply.map_err(|e| format!("flush-conntrack: {e}"))?;
    if !reply.ok {
        return Err(format!(
            "flush-conntrack failed: {}",
            reply.error.unwrap_or_default()
        ));
    }
    let removed = reply
        .json
        .as_ref()
        .and_then(|j| j["flushed"].as_u64())
        .ok_or("flush-conntrack: no 'flushed' count in the reply")?;

    let after = census(&d.sw.ct);
    let mut expected = before.clone();
    let flushed_before = expected.remove(&FLUSHED).unwrap_or(0);
    if removed != flushed_before || removed != f.unreplied7 as u64 {
        return Err(format!(
            "flush removed {removed} connections, expected {flushed_before} (filled {})",
            f.unreplied7
        ));
    }
    if after != expected {
        return Err(format!(
            "after the flush the other connections changed:\n  expected {expected:?}\n  found    {after:?}"
        ));
    }

    let rate = |n: u64, a: Instant, b: Instant| n as f64 / b.duration_since(a).as_secs_f64() / 1e6;
    Ok(RunResult {
        removed,
        flush_ms: t3.duration_since(t2).as_secs_f64() * 1e3,
        mpps_before: rate(tx1 - tx0, t0, t1),
        mpps_during: rate(tx3 - tx2, t2, t3),
        longest_before_us: longest_before as f64 / 1e3,
        longest_during_us: longest_during as f64 / 1e3,
        pmd_before: share(s0, s1, t1.duration_since(t0)),
        pmd_during: share(s2, s3, t3.duration_since(t2)),
    })
}

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("flush-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Start the daemon in-process with its control socket; waits until every
/// generator connection is established and forwarding.
fn start_daemon(args: &Args, dir: &Path) -> Result<(Arc<Daemon>, PathBuf), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::write(dir.join("bench.flows"), FLOWS).map_err(|e| e.to_string())?;
    let socket = dir.join("run/ferrovsd.sock");
    let max_conns = args
        .entries
        .saturating_mul(2)
        .saturating_add(args.conns.saturating_mul(4))
        .max(10_000);
    let cfg = json!({
        "control_socket": socket,
        "pmd": { "threads": 1 },
        "conntrack": { "max_conns": max_conns,
                       "timeout_policies": { "bench": POLICY } },
        "ports": [
            { "name": "gen0", "number": 1, "type": "generator",
              "options": { "flows": args.conns, "size": 64, "proto": "udp", "replies": true } },
            { "name": "sink", "number": 2, "type": "null" } ],
        "flows": "bench.flows",
    });
    let cfg = DaemonConfig::parse(&cfg.to_string())?;
    let server = ControlServer::bind(&socket)?;
    let (d, _shutdown) = Daemon::start(&cfg, dir)?;
    server
        .spawn(d.clone())
        .map_err(|e| format!("control thread: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while d.sw.ct.zones.count(Zone(1)) < args.conns {
        if Instant::now() > deadline {
            return Err(format!(
                "the generator's {} connections did not all appear in zone 1",
                args.conns
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    Ok((d, socket))
}

fn stats(v: &[f64]) -> serde_json::Value {
    json!({ "runs": v, "median": median(v) })
}

fn run(args: &Args) -> Result<(), String> {
    let f = Fill::of(args.entries);
    let dir = temp_dir();
    let (d, socket) = start_daemon(args, &dir)?;
    let result = measure(args, &d, &socket, &f);
    d.stop();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(args: &Args, d: &Arc<Daemon>, socket: &Path, f: &Fill) -> Result<(), String> {
    let policy =
        d.sw.ct
            .policies
            .id("bench")
            .ok_or("timeout policy 'bench' missing")?;
    let sink =
        d.sw.port_entries()
            .iter()
            .find(|e| e.port.name() == "sink")
            .map(|e| e.port.clone())
            .ok_or("no sink port")?;
    let fill_s = fill(d, f, policy, false)?;
    println!(
        "filled {} connections in {fill_s:.2} s ({} unreplied UDP in zone 7 to flush; table: {})",
        args.entries,
        f.unreplied7,
        d.sw.ct.len()
    );
    println!(
        "flush-conntrack {} while {} connections forward in zone 1",
        FILTER.join(" "),
        args.conns
    );
    println!();
    let tid = pmd_tid();
    if tid.is_none() {
        eprintln!("note: PMD thread not found in /proc/self/task: no CPU shares");
    }
    println!("| run | removed | flush ms | Mpps before | Mpps during | during/before | longest PMD iteration before (us) | during (us) | PMD on CPU / runnable / asleep % before | during |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut results = Vec::new();
    let mut stalls = 0;
    while results.len() < args.runs {
        if results.len() + stalls > 0 {
            fill(d, f, policy, true)?;
            std::thread::sleep(Duration::from_millis(200));
        }
        let x = one_run(
            d,
            socket,
            &sink,
            f,
            Duration::from_millis(args.baseline_ms),
            tid.as_deref(),
        )?;
        let sh =
            |s: &ThreadShare| format!("{:.0} / {:.0} / {:.0}", s.on_cpu, s.runnable, s.asleep());
        println!(
            "| {} | {} | {:.1} | {:.3} | {:.3} | {:.2} | {:.0} | {:.0} | {} | {} |",
            results.len() + 1,
            x.removed,
            x.flush_ms,
            x.mpps_before,
            x.mpps_during,
            x.ratio(),
            x.longest_before_us,
            x.longest_during_us,
            sh(&x.pmd_before),
            sh(&x.pmd_during),
        );
        if x.mpps_before <= 0.0 {
            return Err("nothing was forwarded before the flush".into());
        }
        if x.mpps_during <= 0.0 {
            // A flush of a few ms can fall inside one descheduling of the
            // PMD on a loaded machine: repeat it once; twice in a row is a
            // stop.
            stalls += 1;
            if stalls > 1 {
                return Err(format!(
                    "forwarding stopped during the flush ({:.1} ms, no packet reached the sink), twice",
                    x.flush_ms
                ));
            }
            eprintln!("note: nothing forwarded during this flush; repeating it once");
            continue;
        }
        stalls = 0;
        results.push(x);
    }
    let col = |g: fn(&RunResult) -> f64| results.iter().map(g).collect::<Vec<f64>>();
    let flush_ms = col(|x| x.flush_ms);
    let before = col(|x| x.mpps_before);
    let during = col(|x| x.mpps_during);
    let ratio = col(RunResult::ratio);
    let lb = col(|x| x.longest_before_us);
    let ld = col(|x| x.longest_during_us);
    let cpu_b = col(|x| x.pmd_before.on_cpu);
    let cpu_d = col(|x| x.pmd_during.on_cpu);
    let run_b = col(|x| x.pmd_before.runnable);
    let run_d = col(|x| x.pmd_during.runnable);
    let med_share = |c: &[f64], r: &[f64]| {
        let (c, r) = (median(c), median(r));
        format!("{c:.0} / {r:.0} / {:.0}", (100.0 - c - r).max(0.0))
    };
    println!(
        "| median | {} | **{:.1}** | {:.3} | {:.3} | **{:.2}** | {:.0} | **{:.0}** | {} | {} |",
        f.unreplied7,
        median(&flush_ms),
        median(&before),
        median(&during),
        median(&ratio),
        median(&lb),
        median(&ld),
        med_share(&cpu_b, &run_b),
        med_share(&cpu_d, &run_d),
    );

    let summary = json!({
        "bench": "flush",
        "entries": args.entries,
        "conns": args.conns,
        "filter": FILTER.join(" "),
        "removed": f.unreplied7,
        "fill_s": fill_s,
        "runs": results.len(),
        "flush_ms": stats(&flush_ms),
        "mpps_before": stats(&before),
        "mpps_during": stats(&during),
        "during_over_before": stats(&ratio),
        "longest_pmd_iteration_before_us": stats(&lb),
        "longest_pmd_iteration_during_us": stats(&ld),
        "pmd_on_cpu_pct_before": stats(&cpu_b),
        "pmd_on_cpu_pct_during": stats(&cpu_d),
        "pmd_runnable_pct_before": stats(&run_b),
        "pmd_runnable_pct_during": stats(&run_d),
    });
    if let Some(dir) = args.report.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    append_line(&args.report, &summary.to_string())?;
    println!();
    println!("summary appended to {}", args.report.display());
    // The last line, key=value, is what scripts/bench.sh shows.
    println!(
        "removed={} flush_ms={:.1} mpps_before={:.3} mpps_during={:.3} during_over_before={:.2}",
        f.unreplied7,
        median(&flush_ms),
        median(&before),
        median(&during),
        median(&ratio)
    );
    if let Some(p) = &args.json_out {
        let x = args.entries as f64;
        for (case, unit, v) in [
            ("flush-command", "ms", flush_ms),
            ("forwarding-before", "Mpps", before),
            ("forwarding-during", "Mpps", during),
            ("longest-pmd-iteration-during", "us", ld),
        ] {
            let rec = BenchRecord::from_runs("flush", case, "entries", x, unit, v);
            append_jsonl(p, &rec).map_err(|e| format!("{}: {e}", p.display()))?;
        }
    }
    Ok(())
}

fn append_line(path: &Path, line: &str) -> Result<(), String> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    writeln!(f, "{line}").map_err(|e| format!("{}: {e}", path.display()))
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.quick {
        args.entries = 100_000;
        args.runs = 1;
    }
    if args.runs == 0 || args.entries < 10 {
        eprintln!("flush-bench: --runs must be at least 1 and --entries at least 10");
        return ExitCode::from(2);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flush-bench: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
