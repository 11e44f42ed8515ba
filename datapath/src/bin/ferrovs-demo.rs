//! ferrovs-demo: the main job on the embedded default: a stateful firewall
//! on software ports, no NIC, no root.
//!
//! ```text
//! ferrovs-demo [--flows FILE] [--seconds S] [--conns N] [--pcap FILE] [--pmds N] [--json]
//! ```
//!
//! Ports:
//! 1. `lan`: the traffic generator: TCP connections from 10.0.0.0/8
//!    clients to 172.16.0.1:80 (handshake, data both ways, a new
//!    connection after 64 segments), or the frames of `--pcap FILE`
//!    replayed in a loop;
//! 2. `wan`: a capture, replayed once, of packets from outside that belong to no
//!    connection (port scans, stray replies, an invalid TCP segment);
//! 3. `out`: a null sink counting what the firewall admits.
//!
//! Every packet goes through `ct(table=..,zone=1)`; connections from
//! inside are committed; traffic from outside is admitted only when +est.
//! At the end the demo prints forwarded and dropped counts, the rule
//! counters, the conntrack table and the packet rate achieved.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use datapath::packet::PortNo;
use datapath::pmd::{PmdConfig, PmdSet};
use datapath::port::generator::{client_of, tcp4_frame, GenProto, GeneratorConfig, GeneratorPort};
use datapath::port::pcap::PcapRxPort;
use datapath::port::{NullPort, Port};
use datapath::switch::{PortEntry, Switch};
use ofproto::pipeline::VlanMode;

const DEFAULT_FLOWS: &str = include_str!("../../../scripts/demo/firewall.flows");

#[derive(Parser, Debug)]
#[command(about = "ferrovs stateful-firewall demo on software ports (no NIC, no root)")]
struct Args {
    /// Flow table (ovs-ofctl add-flows syntax); default: the built-in firewall.
    #[arg(long)]
    flows: Option<PathBuf>,
    /// How long to run.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Concurrent generator connections.
    #[arg(long, default_value_t = 1000)]
    conns: u32,
    /// Replay this capture as the inside traffic instead of the generator.
    #[arg(long)]
    pcap: Option<PathBuf>,
    /// PMD threads.
    #[arg(long, default_value_t = 1)]
    pmds: usize,
    /// Where to write the outside capture.
    #[arg(long, default_value = "target/demo")]
    workdir: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// Packets from outside that belong to no connection.
fn write_outside_capture(path: &Path) -> std::io::Result<()> {
    use pcap_file::pcap::{PcapPacket, PcapWriter};
    let scanner = datapath::port::generator::Endpoint {
        mac: [2, 0, 0, 0, 0, 0x66],
        ip: [198, 51, 100, 7],
        port: 40000,
    };
    let mut frames = Vec::new();
    for c in 0..64u64 {
        let victim = client_of(c * 7 + 3);
        // A SYN scan of inside hosts.
        frames.push(tcp4_frame(60, &scanner, &victim, 1000 + c as u32, 0, 0x02));
        // A "reply" from the server for a connection that never existed.
        let server = datapath::port::generator::Endpoint {
            mac: datapath::port::generator::SERVER_MAC,
            ip: datapath::port::generator::SERVER_IP,
            port: 80,
        };
        let stranger = client_of(5_000_000 + c);
        frames.push(tcp4_frame(64, &server, &stranger, 77, 1, 0x18));
        // SYN+FIN: invalid whatever the state.
        frames.push(tcp4_frame(60, &scanner, &victim, 5, 0, 0x03));
    }
    let f = std::fs::File::create(path)?;
    let mut w = PcapWriter::new(f).map_err(std::io::Error::other)?;
    for (i, fr) in frames.iter().enumerate() {
        w.write_packet(&PcapPacket::new(
            Duration::from_micros(i as u64),
            fr.len() as u32,
            fr,
        ))
        .map_err(std::io::Error::other)?;
    }
    Ok(())
}

fn add(sw: &Switch, port: Arc<dyn Port>, kind: &str) -> Result<(), String> {
    sw.add_port(PortEntry {
        port,
        vlan: VlanMode::Access(0),
        kind: kind.into(),
    })
}

fn run(args: &Args) -> Result<(), String> {
    let flows = match &args.flows {
        Some(p) => std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?,
        None => DEFAULT_FLOWS.to_string(),
    };
    std::fs::create_dir_all(&args.workdir)
        .map_err(|e| format!("{}: {e}", args.workdir.display()))?;
    let outside = args.workdir.join("outside.pcap");
    write_outside_capture(&outside).map_err(|e| format!("{}: {e}", outside.display()))?;

    let sw = Switch::new(ct::TrackerConfig::default());
    let lan: Arc<dyn Port> = match &args.pcap {
        Some(p) => {
            Arc::new(PcapRxPort::open("lan", PortNo(1), p, true).map_err(|e| e.to_string())?)
        }
        None => Arc::new(GeneratorPort::new(
            "lan",
            PortNo(1),
            GeneratorConfig {
                flows: args.conns.max(1),
                packet_size: 64,
                proto: GenProto::Tcp,
                replies: true,
                conn_packets: 64,
                ..Default::default()
            },
        )),
    };
    let wan =
        Arc::new(PcapRxPort::open("wan", PortNo(2), &outside, false).map_err(|e| e.to_string())?);
    let out = Arc::new(NullPort::new("out", PortNo(3)));
    add(
        &sw,
        lan.clone(),
        if args.pcap.is_some() {
            "pcap"
        } else {
            "generator"
        },
    )?;
    add(&sw, wan.clone(), "pcap")?;
    add(&sw, out.clone(), "null")?;
    sw.bridge
        .ofctl("add-flows", &flows, 0)
        .map_err(|e| format!("flows: {}: {}", e.token, e.reason))?;

    if !args.json {
        println!(
            "ferrovs demo: stateful firewall, {} PMD thread(s), {:.0} s",
            args.pmds, args.seconds
        );
        println!(
            "  port 1 lan  ({}), port 2 wan (unsolicited traffic), port 3 out (sink)",
            lan_desc(args)
        );
    }
    let mut pmds = PmdSet::start(
        sw.clone(),
        &PmdConfig {
            threads: args.pmds.max(1),
            idle_sleep_us: 0,
            ..Default::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let mut last = (t0, 0u64);
    while t0.elapsed().as_secs_f64() < args.seconds {
        std::thread::sleep(Duration::from_millis(250).min(Duration::from_secs_f64(args.seconds)));
        let pk: u64 = pmds.stats().iter().map(|s| s.counters.packets).sum();
        let now = Instant::now();
        if !args.json && now.duration_since(last.0) >= Duration::from_secs(1) {
            let rate = (pk - last.1) as f64 / now.duration_since(last.0).as_secs_f64() / 1e6;
            println!(
                "  {:>4.1} s  {:>6.2} Mpps  {:>8} connections",
                t0.elapsed().as_secs_f64(),
                rate,
                sw.ct.len()
            );
            last = (now, pk);
        }
    }
    pmds.stop();
    let elapsed = t0.elapsed().as_secs_f64();
    report(&sw, &pmds, out.stats().tx_packets, elapsed, args.json);
    Ok(())
}

fn lan_desc(args: &Args) -> String {
    match &args.pcap {
        Some(p) => format!("replaying {}", p.display()),
        None => format!("generator, {} TCP connections", args.conns),
    }
}

fn report(sw: &Switch, pmds: &PmdSet, forwarded: u64, secs: f64, json: bool) {
    let stats = pmds.stats();
    let sum = |f: fn(&datapath::pipeline::PipelineCounters) -> u64| -> u64 {
        stats.iter().map(|s| f(&s.counters)).sum()
    };
    let packets = sum(|c| c.packets);
    let dropped = sum(|c| c.dropped_by_flow);
    let now_ns = sw.clock.now_ns();
    let conns = sw.ct.dump(&Default::default(), now_ns);
    let flows = sw
        .bridge
        .ofctl("dump-flows", "", sw.clock.now_ms())
        .unwrap_or_default();
    let mpps = packets as f64 / secs / 1e6;
    if json {
        let v = format!(
            "{{\"packets\":{packets},\"forwarded\":{forwarded},\"dropped\":{dropped},\"seconds\":{secs:.3},\"mpps\":{mpps:.3},\"connections\":{}}}",
            conns.len()
        );
        println!("{v}");
        return;
    }
    println!();
    println!("packets      {packets:>12}");
    println!("forwarded    {forwarded:>12}   (to port 3)");
    println!("dropped      {dropped:>12}   (new from outside, invalid, no rule)");
    println!(
        "rate         {mpps:>12.2}   Mpps over {secs:.1} s on {} PMD thread(s)",
        stats.len()
    );
    println!();
    println!("flow table (ovs-ofctl dump-flows):");
    for l in flows.lines() {
        println!("  {l}");
    }
    println!();
    let est = conns
        .iter()
        .filter(|c| c.to_string().contains("ESTABLISHED"))
        .count();
    println!(
        "conntrack: {} connections ({} ESTABLISHED); first entries (dpctl/dump-conntrack):",
        conns.len(),
        est
    );
    for c in conns.iter().take(5) {
        println!("  {c}");
    }
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("ferrovs-demo: {e}");
        std::process::exit(1);
    }
}
