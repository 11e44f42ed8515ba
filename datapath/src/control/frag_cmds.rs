//! Fragment reassembly commands (OVS's `dpctl/ipf-get-status` and
//! `dpctl/ipf-set-*`, folded into one `ipf-set`):
//!
//! - `ipf-get-status [-m]`: configuration, datagrams in progress (per
//!   zone), the reassembler's counters per family and the datapath's
//!   fragment counters summed over the PMD threads; `-m` also lists each
//!   datagram in progress.
//! - `ipf-set KEY=VALUE...`: change the limits and timeouts (keys as in
//!   the `conntrack.fragments` configuration section). Every pair is
//!   checked before anything changes.

use serde_json::{json, Value};

use super::commands::CmdOutput;
use super::pmd_cmds;
use crate::daemon::Daemon;
use crate::pipeline::PipelineCounters;
use ct::frag::{FragConfig, FragCounters};

/// `ipf-get-status [-m]`.
pub fn get_status(d: &Daemon, args: &[String]) -> Result<CmdOutput, String> {
    let more = match args {
        [] => false,
        [m] if m == "-m" || m == "--more" => true,
        [a, ..] => return Err(format!("'{a}': expected nothing or -m")),
    };
    let now = d.sw.clock.now_ns();
    let (status, dump) = {
        let mut r = d.sw.defrag.lock();
        r.expire(now);
        (r.status(), more.then(|| r.dump(now)))
    };
    let mut dp = PipelineCounters::default();
    for s in pmd_cmds::snapshots(d) {
        let c = s.counters;
        dp.frag_held += c.frag_held;
        dp.frag_reassembled += c.frag_reassembled;
        dp.frag_rejected += c.frag_rejected;
        dp.frag_too_long += c.frag_too_long;
        dp.frag_sent += c.frag_sent;
        dp.frag_send_errors += c.frag_send_errors;
    }
    let c = &status.config;
    let yes = |b: bool| if b { "yes" } else { "no" };
    let mut text = String::from("Fragment reassembly:\n");
    text.push_str(&format!(
        "  v4 enabled: {}, timeout: {} ms\n  v6 enabled: {}, timeout: {} ms\n",
        yes(c.enabled_v4),
        c.timeout_v4_ms,
        yes(c.enabled_v6),
        c.timeout_v6_ms
    ));
    text.push_str(&format!(
        "  limits: max_bytes={} max_datagrams={} max_datagrams_per_zone={} max_fragments={}\n",
        c.max_bytes, c.max_datagrams, c.max_datagrams_per_zone, c.max_fragments
    ));
    text.push_str(&format!(
        "  in progress: datagrams={} bytes={}\n",
        status.datagrams, status.bytes
    ));
    for (z, n) in &status.zones {
        text.push_str(&format!("    zone {}: {n} datagrams\n", z.0));
    }
    for (name, f) in [("IPv4", &status.counters.v4), ("IPv6", &status.counters.v6)] {
        text.push_str(&format!("{name} counters:\n"));
        for (k, v) in counter_rows(f) {
            text.push_str(&format!("  {k}: {v}\n"));
        }
    }
    let dp_rows = [
        ("held", dp.frag_held),
        ("reassembled", dp.frag_reassembled),
        ("rejected", dp.frag_rejected),
        ("too_long", dp.frag_too_long),
        ("fragments_sent", dp.frag_sent),
        ("send_errors", dp.frag_send_errors),
    ];
    text.push_str("Datapath:\n");
    for (k, v) in dp_rows {
        text.push_str(&format!("  {k}: {v}\n"));
    }
    let mut json = json!({
        "config": status.config,
        "datagrams": status.datagrams,
        "bytes": status.bytes,
        "zones": status.zones.iter().map(|(z, n)| json!({ "zone": z.0, "datagrams": n })).collect::<Vec<_>>(),
        "counters": status.counters,
        "datapath": dp_rows.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect::<serde_json::Map<_, _>>(),
    });
    if let Some(list) = dump {
        text.push_str("Datagrams in progress:\n");
        for g in &list {
            text.push_str(&format!(
                "  zone={} src={} dst={} id={:#x} proto={} fragments={} bytes={} first={} last={} expires_in={}ms\n",
                g.zone.0, g.src, g.dst, g.id, g.proto, g.fragments, g.bytes,
                yes(g.have_first), yes(g.have_last), g.expires_in_ms
            ));
        }
        json["in_progress"] = serde_json::to_value(&list).map_err(|e| e.to_string())?;
    }
    Ok(CmdOutput::new(text, json))
}

fn counter_rows(f: &FragCounters) -> Vec<(&'static str, u64)> {
    let mut rows = vec![
        ("accepted", f.accepted),
        ("reassembled", f.reassembled),
        ("timed_out", f.timed_out),
        ("discarded_fragments", f.discarded_fragments),
    ];
    rows.extend(reject_rows(f));
    rows
}

/// The rejection counters, by reason (as named in the JSON output).
pub fn reject_rows(f: &FragCounters) -> [(&'static str, u64); 11] {
    [
        ("malformed", f.malformed),
        ("overlaps", f.overlaps),
        ("duplicates", f.duplicates),
        ("tiny", f.tiny),
        ("too_big", f.too_big),
        ("bad_length", f.bad_length),
        ("conflicting_last", f.conflicting_last),
        ("too_many_fragments", f.too_many_fragments),
        ("memory_limit", f.memory_limit),
        ("datagram_limit", f.datagram_limit),
        ("zone_limit", f.zone_limit),
    ]
}

/// Apply `KEY=VALUE` pairs to `cfg`; the error names the offending token.
pub fn apply_settings(cfg: &mut FragConfig, args: &[String]) -> Result<(), String> {
    if args.is_empty() {
        return Err("ipf-set: expected KEY=VALUE (e.g. max_fragments=32)".into());
    }
    for a in args {
        let Some((k, v)) = a.split_once('=') else {
            return Err(format!("'{a}': expected KEY=VALUE"));
        };
        let num = || -> Result<u64, String> {
            v.parse::<u64>()
                .map_err(|_| format!("'{a}': {v} is not a non-negative integer"))
        };
        let flag = || -> Result<bool, String> {
            match v {
                "1" | "true" | "yes" => Ok(true),
                "0" | "false" | "no" => Ok(false),
                _ => Err(format!("'{a}': expected 0 or 1")),
            }
        };
        let size =
            || num().and_then(|n| usize::try_from(n).map_err(|_| format!("'{a}': too large")));
        match k {
            "enabled_v4" => cfg.enabled_v4 = flag()?,
            "enabled_v6" => cfg.enabled_v6 = flag()?,
            "max_bytes" => cfg.max_bytes = size()?,
            "max_datagrams" => cfg.max_datagrams = size()?,
            "max_datagrams_per_zone" => cfg.max_datagrams_per_zone = size()?,
            "max_fragments" => cfg.max_fragments = size()?,
            "timeout_v4_ms" => cfg.timeout_v4_ms = num()?,
            "timeout_v6_ms" => cfg.timeout_v6_ms = num()?,
            _ => return Err(format!("'{k}': unknown setting (enabled_v4, enabled_v6, max_bytes, max_datagrams, max_datagrams_per_zone, max_fragments, timeout_v4_ms, timeout_v6_ms)")),
        }
    }
    cfg.validate()
}

/// `ipf-set KEY=VALUE...`.
pub fn set(d: &Daemon, args: &[String]) -> Result<CmdOutput, String> {
    let mut r = d.sw.defrag.lock();
    let mut cfg = r.config().clone();
    apply_settings(&mut cfg, args)?;
    r.set_config(cfg.clone())?;
    Ok(CmdOutput::new("", json!({ "config": cfg })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn settings_are_checked_and_errors_name_the_token() {
        let mut c = FragConfig::default();
        apply_settings(
            &mut c,
            &s(&["max_fragments=16", "enabled_v6=0", "timeout_v4_ms=5000"]),
        )
        .unwrap();
        assert_eq!(
            (c.max_fragments, c.enabled_v6, c.timeout_v4_ms),
            (16, false, 5000)
        );
        let e = apply_settings(&mut c, &s(&["bogus=1"])).unwrap_err();
        assert!(e.starts_with("'bogus'"), "{e}");
        let e = apply_settings(&mut c, &s(&["max_bytes=lots"])).unwrap_err();
        assert!(e.contains("max_bytes=lots"), "{e}");
        let e = apply_settings(&mut c, &s(&["enabled_v4=2"])).unwrap_err();
        assert!(e.contains("enabled_v4=2"), "{e}");
        let e = apply_settings(&mut FragConfig::default(), &s(&["max_fragments=0"])).unwrap_err();
        assert!(e.contains("max_fragments"), "{e}");
        assert!(apply_settings(&mut c, &[]).is_err());
    }
}
