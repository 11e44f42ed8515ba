//! Classifier lookup throughput on one thread.
//!
//! `cargo run --release -p ofproto --bin classifier-bench [-- --runs N --ms MS --flows 10,1000 --masks 1,8 --flow-mod-flows 1000 --json-out FILE]`
//!
//! For each (flows, masks) pair it builds a classifier whose rules are spread
//! evenly over that many distinct masks (IPv4 source and destination prefixes,
//! L4 ports, in_port), with priorities either drawn at random (so the early
//! exit rarely helps: the worst case) or banded by mask (the common case in
//! ACL pipelines), then looks up a fixed set of 4096 packets,
//! half built to hit a rule and half random. Each cell is the median of
//! `runs` timed runs (lookups per second, millions).
//!
//! `--json-out FILE` also appends one JSON line per cell, in the format of
//! `datapath::bench_result` (suite `classifier`): lookups as cases
//! `random-<M>mask(s)`/`banded-<M>mask(s)` over `x` = flows in Mlookups/s,
//! translations as `xlate-<pipeline>` over its flow count in Mxlate/s, and
//! the add-flow latency as `flow-mod` in us.

use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use ofproto::fields::{Field, FlowKey, FlowMask};
use ofproto::{Classifier, Match};

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn prefix(len: u32) -> u128 {
    if len == 0 {
        0
    } else {
        (u32::MAX << (32 - len)) as u128
    }
}

/// Mask number `i`: distinct for i < 64.
fn mask(i: usize) -> Match {
    let mut m = Match::default();
    m.set_exact(Field::DL_TYPE, 0x0800);
    m.set_exact(Field::NW_PROTO, 6);
    let j = i as u32;
    m.set(Field::NW_SRC, 0, prefix(32 - (j % 8) * 2));
    if j / 8 % 2 == 1 {
        m.set(Field::NW_DST, 0, prefix(24));
    }
    if j / 16 % 2 == 1 {
        m.set_exact(Field::TP_DST, 0);
    }
    if j / 32 % 2 == 1 {
        m.set_exact(Field::IN_PORT, 0);
    }
    m
}

fn random_key(r: &mut Rng) -> FlowKey {
    let mut k = FlowKey::default();
    k.set(Field::DL_TYPE, 0x0800);
    k.set(Field::NW_PROTO, 6);
    k.set(Field::NW_SRC, r.next() as u128);
    k.set(Field::NW_DST, r.next() as u128);
    k.set(Field::TP_SRC, r.next() as u128);
    k.set(Field::TP_DST, r.next() as u128);
    k.set(Field::IN_PORT, (r.next() % 16) as u128);
    k
}

/// How rule priorities relate to masks.
#[derive(Clone, Copy)]
enum Prio {
    /// Drawn at random: every subtable holds high and low priorities, so the
    /// early exit rarely fires (worst case).
    Random,
    /// Each mask gets its own priority band (more specific masks higher), as
    /// in typical ACL pipelines: the early exit stops at the first hit.
    Banded,
}

fn build(
    n_flows: usize,
    n_masks: usize,
    prio: Prio,
    r: &mut Rng,
) -> (Classifier<u32>, Vec<FlowKey>) {
    let mut c = Classifier::new();
    let mut rule_keys = Vec::new();
    let mut i = 0;
    while c.len() < n_flows {
        let m = mask(i % n_masks);
        let k = random_key(r);
        let mm = Match {
            key: k.masked(&m.mask),
            mask: m.mask,
        };
        let priority = match prio {
            Prio::Random => (r.next() % 60000) as u16 + 1,
            // More specific masks (higher numbers here) get higher bands.
            Prio::Banded => (1000 * (i % n_masks) + (r.next() % 1000) as usize) as u16 + 1,
        };
        c.insert(&mm, priority, i as u64, Arc::new(i as u32));
        rule_keys.push(k);
        i += 1;
    }
    let mut pkts = Vec::new();
    for j in 0..4096 {
        if j % 2 == 0 {
            pkts.push(rule_keys[(r.next() as usize) % rule_keys.len()]);
        } else {
            pkts.push(random_key(r));
        }
    }
    (c, pkts)
}

fn run(c: &Classifier<u32>, pkts: &[FlowKey], ms: u64) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    let mut hits = 0u64;
    while start.elapsed().as_millis() < ms as u128 {
        for k in pkts {
            let mut wc = FlowMask::default();
            if let Some(e) = c.lookup(black_box(k), &mut wc) {
                hits += *e.value as u64 & 1;
            }
            black_box(&wc);
        }
        n += pkts.len() as u64;
    }
    black_box(hits);
    n as f64 / start.elapsed().as_secs_f64()
}

/// One measured cell, as `datapath::bench_result::BenchRecord` writes it
/// (ofproto does not depend on datapath, so the fields are repeated here).
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

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    v[v.len() / 2]
}

/// Appends records to the `--json-out` file, if one was given.
struct JsonOut(Option<String>);

impl JsonOut {
    fn cell(&self, case: &str, x: usize, unit: &str, runs: Vec<f64>) {
        let Some(path) = &self.0 else { return };
        let m = median(&runs);
        let rec = Record {
            suite: "classifier",
            case,
            param: "flows",
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
            eprintln!("classifier-bench: --json-out {path}: {e}");
            std::process::exit(1);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let json = JsonOut(
        args.iter()
            .position(|a| a == "--json-out")
            .and_then(|i| args.get(i + 1))
            .cloned(),
    );
    let get = |name: &str, d: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let runs = get("--runs", 5) as usize;
    let ms = get("--ms", 300);
    let list = |name: &str, d: &[usize]| -> Vec<usize> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
            .unwrap_or_else(|| d.to_vec())
    };
    let flows = list("--flows", &[10, 1_000, 100_000]);
    let masks = list("--masks", &[1, 8, 32]);
    println!(
        "classifier lookups per second (millions), median of {runs} runs of {ms} ms, one thread"
    );
    for (prio, name, title) in [
        (
            Prio::Random,
            "random",
            "priorities random (early exit rarely helps)",
        ),
        (
            Prio::Banded,
            "banded",
            "priorities banded by mask (early exit at first hit)",
        ),
    ] {
        println!("\n{title}");
        let mut head = format!("{:>10} |", "flows");
        for &m in &masks {
            let label = format!("{m} mask{}", if m == 1 { "" } else { "s" });
            head.push_str(&format!(" {label:>10}"));
        }
        println!("{head}");
        println!("{:-<10}-+{}", "", "-".repeat(11 * masks.len()));
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        for &f in &flows {
            let mut row = format!("{f:>10} |");
            for &m in &masks {
                let (c, pkts) = build(f, m, prio, &mut r);
                let v: Vec<f64> = (0..runs).map(|_| run(&c, &pkts, ms) / 1e6).collect();
                let med = median(&v);
                let case = format!("{name}-{m}mask{}", if m == 1 { "" } else { "s" });
                json.cell(&case, f, "Mlookups/s", v);
                row.push_str(&format!(" {med:>10.2}"));
                assert_eq!(c.n_subtables(), m.min(f));
            }
            println!("{row}");
        }
    }
    println!("\nxlate (upcall) throughput on the corpus pipelines, first pass, one thread");
    for (name, n_flows, v) in xlate_rates(runs, ms) {
        let rate = median(&v);
        json.cell(&format!("xlate-{name}"), n_flows, "Mxlate/s", v);
        println!("{name:>14}: {rate:>8.2} M translations/s ({n_flows} flows)");
    }
    println!("\nsingle add-flow (copy-on-write publish), one mask");
    for n in list("--flow-mod-flows", &[1_000, 100_000]) {
        let us = flow_mod_latency(n) * 1e6;
        json.cell("flow-mod", n, "us", vec![us]);
        println!("{n:>10} flows present: {us:>8.1} us");
    }
}

/// Latency of one flow-mod (copy-on-write publish) into a table that
/// already holds `n` flows with one mask: the control-plane cost of the
/// lock-free read side.
pub fn flow_mod_latency(n: usize) -> f64 {
    use ofproto::table::{FlowSpec, FlowTables};
    let t = FlowTables::new();
    let mut r = Rng(7);
    let m = mask(0);
    let specs: Vec<FlowSpec> = (0..n)
        .map(|_| {
            let k = random_key(&mut r);
            FlowSpec {
                mtch: Match {
                    key: k.masked(&m.mask),
                    mask: m.mask,
                },
                priority: 5,
                ..Default::default()
            }
        })
        .collect();
    t.add_many(&specs, 0);
    let reps = 20;
    let start = Instant::now();
    for _ in 0..reps {
        let k = random_key(&mut r);
        let spec = FlowSpec {
            mtch: Match {
                key: k.masked(&m.mask),
                mask: m.mask,
            },
            priority: 5,
            ..Default::default()
        };
        t.add(&spec, 0);
    }
    start.elapsed().as_secs_f64() / reps as f64
}

/// Translations per second (millions) for each corpus pipeline, over the
/// packets of its `.expect` file: (name, flows in the pipeline, every run).
fn xlate_rates(runs: usize, ms: u64) -> Vec<(String, usize, Vec<f64>)> {
    use ofproto::pipeline::PortConfig;
    use ofproto::text::parse::{parse_flows_file, parse_match};
    use ofproto::Pipeline;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut out = Vec::new();
    for name in ["firewall", "lb", "ovn_acl"] {
        let Ok(flows) = std::fs::read_to_string(dir.join(format!("{name}.flows"))) else {
            continue;
        };
        let Ok(expect) = std::fs::read_to_string(dir.join(format!("{name}.expect"))) else {
            continue;
        };
        let Ok(specs) = parse_flows_file(&flows) else {
            continue;
        };
        let n_flows = specs.len();
        let p = Pipeline::new();
        p.set_ports((1..=3).map(|i| PortConfig::access(i, 0)).collect());
        p.flows
            .add_many(&specs.into_iter().map(|(_, s)| s).collect::<Vec<_>>(), 0);
        let keys: Vec<FlowKey> = expect
            .lines()
            .filter_map(|l| l.strip_prefix("packet: "))
            .filter_map(|pkt| parse_match(pkt).ok().map(|m| m.key))
            .collect();
        let snap = p.flows.snapshot();
        let v: Vec<f64> = (0..runs)
            .map(|_| {
                let start = Instant::now();
                let mut n = 0u64;
                while start.elapsed().as_millis() < ms as u128 {
                    for k in &keys {
                        let x = ofproto::xlate::xlate(&p, &snap, k, 0, false);
                        black_box(&x);
                    }
                    n += keys.len() as u64;
                }
                n as f64 / start.elapsed().as_secs_f64() / 1e6
            })
            .collect();
        out.push((name.to_string(), n_flows, v));
    }
    out
}
