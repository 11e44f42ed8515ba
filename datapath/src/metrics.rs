//! A minimal Prometheus endpoint: `GET /metrics` answers the text
//! exposition format (`text/plain; version=0.0.4`), anything else 404.
//! Hand-rolled HTTP/1.1 on a `TcpListener`, one request per connection,
//! served one connection at a time with short timeouts.
//!
//! The listen address must be loopback unless the configuration sets
//! `allow_non_loopback` (checked by [`crate::config::MetricsConfig::addr`]).
//!
//! Metrics (all prefixed `ferrovs_`): per-port packets, bytes, drops by
//! reason and link state; per-PMD packets, cache hits, upcalls, busy and
//! idle time, megaflows; conntrack connections (total and by zone) and the
//! tracker's counters; fragment reassembly (datagrams and bytes in progress,
//! fragments accepted, datagrams reassembled and timed out, rejections by
//! reason, per family).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crate::config::MetricsConfig;
use crate::daemon::Daemon;
use crate::port::LinkState;

/// A bound metrics listener.
pub struct MetricsServer {
    listener: TcpListener,
}

impl MetricsServer {
    /// Bind the configured address (refused when not loopback unless
    /// allowed).
    pub fn bind(cfg: &MetricsConfig) -> Result<MetricsServer, String> {
        let addr = cfg.addr()?;
        let listener =
            TcpListener::bind(addr).map_err(|e| format!("metrics.listen: {addr}: {e}"))?;
        Ok(MetricsServer { listener })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve on a background thread.
    pub fn spawn(self, daemon: Arc<Daemon>) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for conn in self.listener.incoming() {
                    match conn {
                        Ok(s) => {
                            if let Err(e) = handle(s, &daemon) {
                                tracing::debug!("metrics: {e}");
                            }
                        }
                        Err(e) => tracing::warn!("metrics: accept: {e}"),
                    }
                }
            })?;
        Ok(())
    }
}

/// Read the request head (up to 8 KiB) and answer it.
fn handle(mut s: TcpStream, d: &Daemon) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body) = if method == "GET" && path == "/metrics" {
        ("200 OK", "text/plain; version=0.0.4", render(d))
    } else {
        (
            "404 Not Found",
            "text/plain",
            "not found; try /metrics\n".to_string(),
        )
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(resp.as_bytes())
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Accumulates samples grouped by metric, with HELP and TYPE lines.
#[derive(Default)]
struct Exposition {
    out: String,
}

impl Exposition {
    fn metric(&mut self, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
        let _ = writeln!(self.out, "# HELP ferrovs_{name} {help}");
        let _ = writeln!(self.out, "# TYPE ferrovs_{name} {kind}");
        for (labels, v) in samples {
            if labels.is_empty() {
                let _ = writeln!(self.out, "ferrovs_{name} {v}");
            } else {
                let _ = writeln!(self.out, "ferrovs_{name}{{{labels}}} {v}");
            }
        }
    }
}

/// The exposition text.
pub fn render(d: &Daemon) -> String {
    let mut e = Exposition::default();
    let ports = d.sw.port_entries();
    let plabel = |p: &dyn crate::port::Port| {
        format!("port=\"{}\",number=\"{}\"", escape(p.name()), p.port_no().0)
    };
    let stats: Vec<_> = ports
        .iter()
        .map(|p| (plabel(&*p.port), p.port.stats(), p.port.link_state()))
        .collect();
    type PortField = fn(&crate::port::PortStats) -> u64;
    let port_metrics: [(&str, &str, PortField); 4] = [
        (
            "port_rx_packets_total",
            "Packets received by the port.",
            |s| s.rx_packets,
        ),
        ("port_rx_bytes_total", "Bytes received by the port.", |s| {
            s.rx_bytes
        }),
        ("port_tx_packets_total", "Packets sent by the port.", |s| {
            s.tx_packets
        }),
        ("port_tx_bytes_total", "Bytes sent by the port.", |s| {
            s.tx_bytes
        }),
    ];
    for (name, help, f) in port_metrics {
        let v: Vec<_> = stats.iter().map(|(l, s, _)| (l.clone(), f(s))).collect();
        e.metric(name, "counter", help, &v);
    }
    let mut drops = Vec::new();
    for (l, s, _) in &stats {
        for r in crate::port::PortDropReason::ALL {
            drops.push((format!("{l},reason=\"{}\"", r.label()), s.drops(*r)));
        }
    }
    e.metric(
        "port_drops_total",
        "counter",
        "Packets the port dropped, by reason.",
        &drops,
    );
    let link: Vec<_> = stats
        .iter()
        .map(|(l, _, st)| (l.clone(), u64::from(*st == LinkState::Up)))
        .collect();
    e.metric(
        "port_link_up",
        "gauge",
        "1 when the port's link is up.",
        &link,
    );

    let pmds = d.pmds.lock().stats();
    type PmdField = fn(&crate::pmd::PmdSnapshot) -> u64;
    let pmd_metrics: [(&str, &str, &str, PmdField); 10] = [
        (
            "pmd_packets_total",
            "counter",
            "Packets received by the PMD thread.",
            |s| s.counters.packets,
        ),
        (
            "pmd_recirculations_total",
            "counter",
            "Extra passes caused by recirculation.",
            |s| s.counters.recirculations,
        ),
        (
            "pmd_batch_hits_total",
            "counter",
            "Packets that matched the previous packet's megaflow in their batch.",
            |s| s.counters.batch_hits,
        ),
        (
            "pmd_emc_hits_total",
            "counter",
            "Exact-match cache hits.",
            |s| s.counters.emc_hits,
        ),
        (
            "pmd_megaflow_hits_total",
            "counter",
            "Megaflow cache hits.",
            |s| s.counters.megaflow_hits,
        ),
        (
            "pmd_upcalls_total",
            "counter",
            "Cache misses translated by the slow path.",
            |s| s.counters.upcalls,
        ),
        (
            "pmd_upcall_failures_total",
            "counter",
            "Cache misses the slow path could not translate.",
            |s| s.counters.upcall_failures,
        ),
        (
            "pmd_busy_ns_total",
            "counter",
            "Nanoseconds spent on iterations that received packets.",
            |s| s.busy_ns,
        ),
        (
            "pmd_idle_ns_total",
            "counter",
            "Nanoseconds spent on iterations that received nothing.",
            |s| s.idle_ns,
        ),
        (
            "pmd_megaflows",
            "gauge",
            "Megaflows installed in the PMD thread's cache.",
            |s| s.megaflows as u64,
        ),
    ];
    for (name, kind, help, f) in pmd_metrics {
        let v: Vec<_> = pmds
            .iter()
            .map(|s| (format!("pmd=\"{}\"", s.id), f(s)))
            .collect();
        e.metric(name, kind, help, &v);
    }
    let total_mf: u64 = pmds.iter().map(|s| s.megaflows as u64).sum();
    e.metric(
        "megaflows",
        "gauge",
        "Megaflows installed over all PMD threads.",
        &[(String::new(), total_mf)],
    );

    // Counters only: a scrape must not walk the connection table.
    e.metric(
        "ct_connections",
        "gauge",
        "Connections in the tracker.",
        &[(String::new(), d.sw.ct.len() as u64)],
    );
    let by_zone: Vec<_> =
        d.sw.ct
            .zones
            .active()
            .into_iter()
            .filter(|(_, _, count)| *count > 0)
            .map(|(z, _, count)| (format!("zone=\"{}\"", z.0), u64::from(count)))
            .collect();
    e.metric(
        "ct_zone_connections",
        "gauge",
        "Connections in the tracker, by zone.",
        &by_zone,
    );
    let c = d.sw.ct.counters();
    e.metric(
        "ct_max_connections",
        "gauge",
        "The tracker's global connection limit.",
        &[(String::new(), c.max_connections)],
    );
    for (name, help, v) in [
        ("ct_inserts_total", "Connections committed.", c.inserts),
        (
            "ct_early_drops_total",
            "Connections evicted to make room.",
            c.early_drops,
        ),
        (
            "ct_refused_total",
            "Commits refused by a connection limit.",
            c.refused,
        ),
        ("ct_expired_total", "Connections that timed out.", c.expired),
        (
            "ct_deleted_total",
            "Connections deleted (flush, ct_clear, replaced).",
            c.deleted,
        ),
        (
            "ct_invalid_total",
            "Packets conntrack found invalid.",
            c.invalid,
        ),
        (
            "ct_untracked_total",
            "Packets conntrack left untracked.",
            c.untracked,
        ),
    ] {
        e.metric(name, "counter", help, &[(String::new(), v)]);
    }
    fragment_metrics(&mut e, d);
    e.out
}

/// The reassembler's occupancy and counters (one short lock).
fn fragment_metrics(e: &mut Exposition, d: &Daemon) {
    let status = d.sw.defrag.lock().status();
    e.metric(
        "ipf_datagrams",
        "gauge",
        "Datagrams being reassembled.",
        &[(String::new(), status.datagrams as u64)],
    );
    e.metric(
        "ipf_bytes",
        "gauge",
        "Memory held by datagrams being reassembled.",
        &[(String::new(), status.bytes as u64)],
    );
    let fams = [("ipv4", &status.counters.v4), ("ipv6", &status.counters.v6)];
    type FragField = fn(&ct::frag::FragCounters) -> u64;
    let plain: [(&str, &str, FragField); 4] = [
        (
            "ipf_accepted_total",
            "Fragments taken for reassembly.",
            |c| c.accepted,
        ),
        ("ipf_reassembled_total", "Datagrams reassembled.", |c| {
            c.reassembled
        }),
        (
            "ipf_timed_out_total",
            "Datagrams discarded incomplete after their timeout.",
            |c| c.timed_out,
        ),
        (
            "ipf_discarded_fragments_total",
            "Held fragments freed with a discarded datagram.",
            |c| c.discarded_fragments,
        ),
    ];
    for (name, help, f) in plain {
        let v: Vec<_> = fams
            .iter()
            .map(|(fam, c)| (format!("family=\"{fam}\""), f(c)))
            .collect();
        e.metric(name, "counter", help, &v);
    }
    let mut rejected = Vec::new();
    for (fam, c) in fams {
        for (reason, v) in crate::control::frag_cmds::reject_rows(c) {
            rejected.push((format!("family=\"{fam}\",reason=\"{reason}\""), v));
        }
    }
    e.metric(
        "ipf_rejected_total",
        "counter",
        "Fragments the reassembler refused, by reason.",
        &rejected,
    );
}
