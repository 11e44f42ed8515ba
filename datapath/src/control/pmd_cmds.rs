//! PMD commands in the `ovs-appctl dpif-netdev/...` formats:
//! `pmd-stats-show`, `pmd-stats-clear`, `pmd-rxq-show`, and
//! `dump-dp-flows` (`dpctl/dump-flows`: the megaflows of each thread).
//! ferrovs measures time in nanoseconds where OVS counts TSC cycles; the
//! output says so. `pmd-stats-show` adds lines OVS does not have: batch
//! hits, and on threads running the flow-offload fast path its hits,
//! installs, handbacks and entries; its JSON also carries
//! `longest_iteration_ns` (the longest poll-loop iteration since the last
//! clear).

use serde_json::json;

use super::commands::CmdOutput;
use crate::daemon::Daemon;
use crate::pmd::PmdSnapshot;

/// The note every timing report starts with.
pub const NS_NOTE: &str = "(ferrovs reports nanoseconds where OVS reports cycles)";

fn header(s: &PmdSnapshot) -> String {
    match s.core {
        Some(c) => format!("pmd thread numa_id 0 core_id {c} (pmd-{}):", s.id),
        None => format!("pmd thread numa_id 0 core_id unpinned (pmd-{}):", s.id),
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn pct(a: u64, total: u64) -> f64 {
    100.0 * ratio(a, total)
}

/// Format one thread's statistics (since the last clear).
pub fn format_stats(s: &PmdSnapshot) -> String {
    let c = &s.counters;
    let total = s.busy_ns + s.idle_ns;
    let mut t = format!("{}\n", header(s));
    let mut line = |k: &str, v: String| t.push_str(&format!("  {k}: {v}\n"));
    line("packets received", c.packets.to_string());
    line("packet recirculations", c.recirculations.to_string());
    line(
        "avg. datapath passes per packet",
        format!("{:.2}", ratio(c.packets + c.recirculations, c.packets)),
    );
    // ferrovs: packets that matched the previous packet's megaflow in
    // their batch (checked before the EMC; OVS has no such layer).
    line("batch hits", c.batch_hits.to_string());
    line("emc hits", c.emc_hits.to_string());
    line("megaflow hits", c.megaflow_hits.to_string());
    line(
        "avg. subtable lookups per megaflow hit",
        format!("{:.2}", ratio(c.subtables_searched, c.megaflow_hits)),
    );
    line("miss with success upcall", c.upcalls.to_string());
    line("miss with failed upcall", c.upcall_failures.to_string());
    line(
        "avg. packets per output batch",
        format!("{:.2}", ratio(c.tx_packets, c.tx_bursts)),
    );
    line("dropped by flow", c.dropped_by_flow.to_string());
    line("megaflows", s.megaflows.to_string());
    // ferrovs: the flow-offload fast path (`pmd.flow_offload`), shown only
    // on threads that run it.
    if s.flow_offload {
        line("offload hits", c.offload_hits.to_string());
        line("offload installs", c.offload_installs.to_string());
        line("offload handbacks", c.offload_handbacks.to_string());
        line("offload entries", s.offload_entries.to_string());
    }
    line(
        "idle ns",
        format!("{} ({:.2}%)", s.idle_ns, pct(s.idle_ns, total)),
    );
    line(
        "processing ns",
        format!("{} ({:.2}%)", s.busy_ns, pct(s.busy_ns, total)),
    );
    if c.packets > 0 {
        line(
            "avg ns per packet",
            format!("{:.2} ({}/{})", ratio(total, c.packets), total, c.packets),
        );
        line(
            "avg processing ns per packet",
            format!(
                "{:.2} ({}/{})",
                ratio(s.busy_ns, c.packets),
                s.busy_ns,
                c.packets
            ),
        );
    }
    t
}

fn snapshot_json(s: &PmdSnapshot) -> serde_json::Value {
    let c = &s.counters;
    json!({
        "id": s.id, "core": s.core,
        "packets": c.packets, "bytes": c.bytes, "recirculations": c.recirculations,
        "batch_hits": c.batch_hits, "emc_hits": c.emc_hits, "megaflow_hits": c.megaflow_hits,
        "subtables_searched": c.subtables_searched,
        "upcalls": c.upcalls, "upcall_failures": c.upcall_failures,
        "dropped_by_flow": c.dropped_by_flow, "malformed": c.malformed,
        "ct_packets": c.ct_packets, "tx_bursts": c.tx_bursts, "tx_packets": c.tx_packets,
        "busy_ns": s.busy_ns, "idle_ns": s.idle_ns, "iterations": s.iterations,
        "megaflows": s.megaflows, "emc_entries": s.emc_entries,
        "flow_offload": s.flow_offload, "offload_hits": c.offload_hits,
        "offload_installs": c.offload_installs, "offload_handbacks": c.offload_handbacks,
        "offload_entries": s.offload_entries,
        "longest_iteration_ns": s.longest_iteration_ns,
    })
}

/// Every thread's statistics since the last `pmd-stats-clear`.
pub(crate) fn snapshots(d: &Daemon) -> Vec<PmdSnapshot> {
    d.pmds
        .lock()
        .stats()
        .iter()
        .map(|s| s.since_clear())
        .collect()
}

/// `pmd-stats-show`.
pub fn stats_show(d: &Daemon) -> Result<CmdOutput, String> {
    let snaps = snapshots(d);
    let mut text = format!("{NS_NOTE}\n");
    for s in &snaps {
        text.push_str(&format_stats(s));
    }
    let json = json!({ "unit": "ns", "pmds": snaps.iter().map(snapshot_json).collect::<Vec<_>>() });
    Ok(CmdOutput::new(text, json))
}

/// `pmd-stats-clear`.
pub fn stats_clear(d: &Daemon) -> Result<CmdOutput, String> {
    d.pmds.lock().clear_stats();
    Ok(CmdOutput::empty())
}

/// `pmd-rxq-show`: each thread's receive queues and their share of its time.
pub fn rxq_show(d: &Daemon) -> Result<CmdOutput, String> {
    let snaps = snapshots(d);
    let mut text = format!("{NS_NOTE}\n");
    let mut pmds = Vec::new();
    for s in &snaps {
        let total = s.busy_ns + s.idle_ns;
        text.push_str(&format!("{}\n  isolated : false\n", header(s)));
        let mut queues = Vec::new();
        let mut queue_ns = 0;
        for q in &s.rxqs {
            let usage = pct(q.busy_ns, total).round() as u64;
            queue_ns += q.busy_ns;
            text.push_str(&format!(
                "  port: {:<16} queue-id: {:>2} (enabled)   pmd usage: {:>2} %\n",
                q.port, q.queue, usage
            ));
            queues.push(
                json!({ "port": q.port, "queue": q.queue, "packets": q.packets,
                                "busy_ns": q.busy_ns, "usage_pct": usage }),
            );
        }
        let overhead = pct(s.busy_ns.saturating_sub(queue_ns), total).round() as u64;
        text.push_str(&format!("  overhead: {overhead:>2} %\n"));
        pmds.push(json!({ "id": s.id, "core": s.core, "rxqs": queues, "overhead_pct": overhead }));
    }
    Ok(CmdOutput::new(text, json!({ "pmds": pmds })))
}

/// `dump-dp-flows`: every thread's megaflows.
pub fn dump_dp_flows(d: &Daemon) -> Result<CmdOutput, String> {
    let dumps = d.pmds.lock().dump_megaflows();
    let threads = d.pmds.lock().threads();
    let mut text = String::new();
    let mut j = Vec::new();
    for (id, flows) in dumps {
        let core = threads.iter().find(|(t, _)| *t == id).and_then(|(_, c)| *c);
        match core {
            Some(c) => text.push_str(&format!("flow-dump from pmd on cpu core: {c} (pmd-{id})\n")),
            None => text.push_str(&format!("flow-dump from pmd-{id} (unpinned)\n")),
        }
        for f in &flows {
            text.push_str(f);
            text.push('\n');
        }
        j.push(json!({ "pmd": id, "core": core, "flows": flows }));
    }
    Ok(CmdOutput::new(text, json!({ "pmds": j })))
}
