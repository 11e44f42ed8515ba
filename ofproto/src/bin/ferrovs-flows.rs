//! `ferrovs-flows`: offline flow tools for operators and tests.
//!
//! ```text
//! ferrovs-flows check FILE
//!     Parse a flows file (ovs-ofctl add-flows syntax), print every flow
//!     normalized in dump-flows syntax; on the first bad flow print
//!     `line N: <error>` and exit 1.
//! ferrovs-flows trace FILE 'FLOW' [--ct-state SEQ] [--ports LIST]
//!     Like `ovs-appctl ofproto/trace`: the tables visited, the rule matched
//!     or the miss, the actions run, each ct recirculation with the ct_state
//!     assumed for it, and the datapath actions of each pass.
//!     SEQ: ct_state per recirculation, e.g. `trk+new,trk+est` (default trk+new).
//!     LIST: bridge ports for NORMAL/FLOOD/ALL, e.g. `1,2,3` or `1:vlan=10,2:trunk`.
//! ```

use std::process::ExitCode;

use ofproto::pipeline::{parse_ct_states, PortConfig};
use ofproto::text::parse::{parse_flows_file, parse_match};
use ofproto::Pipeline;

fn usage() -> ExitCode {
    eprintln!(
        "usage:\n  ferrovs-flows check FILE\n  ferrovs-flows trace FILE 'FLOW' [--ct-state trk+new,trk+est] [--ports 1,2:vlan=10,3:trunk]"
    );
    ExitCode::from(2)
}

fn load(path: &str) -> Result<Vec<ofproto::FlowSpec>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    parse_flows_file(&text)
        .map(|v| v.into_iter().map(|(_, s)| s).collect())
        .map_err(|(n, e)| format!("line {n}: {e}"))
}

fn parse_ports(s: &str) -> Result<Vec<PortConfig>, String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (num, mode) = p.split_once(':').unwrap_or((p, ""));
            let n: u32 = num
                .parse()
                .map_err(|_| format!("`{num}`: port must be a number"))?;
            match mode {
                "" => Ok(PortConfig::access(n, 0)),
                "trunk" => Ok(PortConfig::trunk(n, &[])),
                m => {
                    let v = m
                        .strip_prefix("vlan=")
                        .ok_or_else(|| format!("`{m}`: expected vlan=N or trunk"))?;
                    let v: u16 = v
                        .parse()
                        .ok()
                        .filter(|v| *v < 4096)
                        .ok_or_else(|| format!("`{v}`: bad VLAN"))?;
                    Ok(PortConfig::access(n, v))
                }
            }
        })
        .collect()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("-h" | "--help" | "help") => {
            usage();
            ExitCode::SUCCESS
        }
        Some("check") if args.len() == 2 => match load(&args[1]) {
            Ok(specs) => {
                let p = Pipeline::new();
                p.flows.add_many(&specs, 0);
                for line in p.flows.dump(None, 0) {
                    println!("{line}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Some("trace") if args.len() >= 3 => {
            let specs = match load(&args[1]) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let key = match parse_match(&args[2]) {
                Ok(m) => m.key,
                Err(e) => {
                    eprintln!("flow: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let mut states = Vec::new();
            let mut ports = Vec::new();
            let mut i = 3;
            while i < args.len() {
                let val = args.get(i + 1);
                match (args[i].as_str(), val) {
                    ("--ct-state", Some(v)) => match parse_ct_states(v) {
                        Ok(s) => states = s,
                        Err(e) => {
                            eprintln!("--ct-state: {e}");
                            return ExitCode::FAILURE;
                        }
                    },
                    ("--ports", Some(v)) => match parse_ports(v) {
                        Ok(p) => ports = p,
                        Err(e) => {
                            eprintln!("--ports: {e}");
                            return ExitCode::FAILURE;
                        }
                    },
                    _ => return usage(),
                }
                i += 2;
            }
            let p = Pipeline::new();
            p.set_ports(ports);
            p.flows.add_many(&specs, 0);
            print!("{}", p.trace(&key, &states, 0));
            ExitCode::SUCCESS
        }
        _ => usage(),
    }
}
