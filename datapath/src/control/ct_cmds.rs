//! Conntrack commands: `dump-conntrack`, `flush-conntrack`,
//! `dump-expectations`,
//! `ct-stats-show`, `ct-set-limits`, `ct-get-limits`, `ct-del-limits`,
//! `timeout-policy`, in the `ovs-appctl dpctl/...` formats.

use std::collections::BTreeMap;

use ct::timeout::TimeoutAttr;
use ct::{TimeoutPolicy, Zone};
use serde_json::json;

use super::commands::CmdOutput;
use super::ct_filter::parse_ct_filter;
use super::limits::{parse_set_limits, parse_zone_list, zone_line};
use crate::daemon::Daemon;

/// `dump-conntrack [zone=N] [filters]`: one connection a line.
pub fn dump(d: &Daemon, args: &[String]) -> Result<CmdOutput, String> {
    let f = parse_ct_filter(args)?;
    let conns = d.sw.ct.dump(&f, d.sw.clock.now_ns());
    let text: String = conns.iter().map(|c| format!("{c}\n")).collect();
    let json = serde_json::to_value(&conns).map_err(|e| e.to_string())?;
    Ok(CmdOutput::new(text, json))
}

/// `dump-expectations [zone=N[,N]...]`: pending ALG expectations, one a
/// line (`conntrack -L expect` style, see `ct::expect::Expectation::line`).
pub fn dump_expectations(d: &Daemon, args: &[String]) -> Result<CmdOutput, String> {
    let zones = parse_zone_list(args)?;
    let now_s = (d.sw.clock.now_ns() / 1_000_000_000) as u32;
    let list: Vec<_> =
        d.sw.ct
            .expectations
            .list()
            .into_iter()
            .filter(|e| zones.is_empty() || zones.contains(&e.key.zone.0))
            .collect();
    let text: String = list.iter().map(|e| e.line(now_s) + "\n").collect();
    let json: Vec<_> = list
        .iter()
        .map(|e| {
            json!({
                "zone": e.key.zone.0,
                "proto": e.key.proto,
                "src": ct::expect::ip_of(e.key.family, &e.key.src).to_string(),
                "dst": ct::expect::ip_of(e.key.family, &e.key.dst).to_string(),
                "dport": e.key.dst_port,
                "timeout": e.expire.saturating_sub(now_s),
                "master": e.master.to_string(),
                "helper": e.helper,
            })
        })
        .collect();
    Ok(CmdOutput::new(text, json!(json)))
}

/// `flush-conntrack [zone=N] [filters]`: prints nothing, like OVS.
pub fn flush(d: &Daemon, args: &[String]) -> Result<CmdOutput, String> {
    let f = parse_ct_filter(args)?;
    let n = d.sw.ct.flush(&f, d.sw.clock.now_ns());
    tracing::info!("flushed {n} connections");
    Ok(CmdOutput::new("", json!({ "flushed": n })))
}

/// `ct-stats-show [zone=N]`: connection counts by protocol, then the
/// tracker's counters and memory.
pub fn stats(d: &Daemon, args: &[String]) -> Result<CmdOutput, String> {
    let zone = match parse_zone_list(args)?.as_slice() {
        [] => None,
        [z] => Some(*z),
        _ => return Err(format!("'{}': give at most one zone", args.join(" "))),
    };
    let counts = d.sw.ct.counts();
    let mut by_proto: BTreeMap<String, u64> = BTreeMap::new();
    for (z, protos) in &counts.by_zone {
        if zone.is_some_and(|want| want != *z) {
            continue;
        }
        for (p, n) in protos {
            *by_proto.entry(p.to_uppercase()).or_default() += n;
        }
    }
    let total: u64 = by_proto.values().sum();
    let mut text = String::from("Connections Stats:\n");
    text.push_str(&format!("    Total: {total}\n"));
    for (p, n) in &by_proto {
        text.push_str(&format!("      {p}: {n}\n"));
    }
    let c = d.sw.ct.counters();
    let m = d.sw.ct.memory();
    text.push_str("Tracker counters:\n");
    for (name, v) in [
        ("connections", c.connections),
        ("max connections", c.max_connections),
        ("inserts", c.inserts),
        ("early drops", c.early_drops),
        ("refused (limit)", c.refused),
        ("expired", c.expired),
        ("deleted", c.deleted),
        ("invalid", c.invalid),
        ("untracked", c.untracked),
        ("events refused", c.events_refused),
        ("nat exhausted (dropped)", c.nat_exhausted),
        ("nat remote references", c.nat_remote_refs),
    ] {
        text.push_str(&format!("    {name}: {v}\n"));
    }
    text.push_str(&format!(
        "Memory: records={} index={} wheel={} bytes\n",
        m.records, m.index, m.wheel
    ));
    let json = json!({
        "zone": zone,
        "total": total,
        "by_protocol": by_proto,
        "by_zone": if zone.is_none() { serde_json::to_value(&counts.by_zone).unwrap_or_default() } else { serde_json::Value::Null },
        "counters": c,
        "memory": m,
    });
    Ok(CmdOutput::new(text, json))
}

/// `ct-set-limits [default=N] [zone=N,limit=M]...`.
pub fn set_limits(d: &Daemon, args: &[String]) -> Result<CmdOutput, String> {
    let req = parse_set_limits(args)?;
    let mut l = d.limits.lock();
    if let Some(def) = req.default {
        l.set_default(&d.sw.ct, def);
    }
    for (z, lim) in req.zones {
        l.set_zone(&d.sw.ct, z, lim);
    }
    Ok(CmdOutput::empty())
}

/// `ct-get-limits [zone=N[,N]...]`: the default, then each zone asked for
/// (else each zone with its own limit) with its connection count.
pub fn get_limits(d: &Daemon, args: &[String]) -> Result<CmdOutput, String> {
    let asked = parse_zone_list(args)?;
    let l = d.limits.lock();
    let zones: Vec<u16> = if asked.is_empty() {
        l.explicit.keys().copied().collect()
    } else {
        asked
    };
    let mut text = format!("default limit={}\n", l.default);
    let mut rows = Vec::new();
    for z in zones {
        let (limit, count) = (l.limit(z), d.sw.ct.zones.count(Zone(z)));
        text.push_str(&zone_line(z, limit, count));
        text.push('\n');
        rows.push(json!({ "zone": z, "limit": limit, "count": count }));
    }
    Ok(CmdOutput::new(
        text,
        json!({ "default": l.default, "zones": rows }),
    ))
}

/// `ct-del-limits zone=N[,N]...`: the zones fall back to the default.
pub fn del_limits(d: &Daemon, args: &[String]) -> Result<CmdOutput, String> {
    let zones = parse_zone_list(args)?;
    if zones.is_empty() {
        return Err("ct-del-limits: expected zone=N[,N]...".into());
    }
    let mut l = d.limits.lock();
    for z in zones {
        l.del_zone(&d.sw.ct, z);
    }
    Ok(CmdOutput::empty())
}

/// `attr=secs` pairs that differ from the kernel defaults.
fn policy_text(p: &TimeoutPolicy) -> String {
    let def = TimeoutPolicy::default();
    let v: Vec<String> = TimeoutAttr::ALL
        .iter()
        .filter(|a| p.get(**a) != def.get(**a))
        .map(|a| format!("{}={}", a.name(), p.get(*a)))
        .collect();
    if v.is_empty() {
        "(kernel defaults)".into()
    } else {
        v.join(",")
    }
}

/// `timeout-policy add NAME SPEC | del NAME | list`.
pub fn timeout_policy(d: &Daemon, args: &[String]) -> Result<CmdOutput, String> {
    let pol = &d.sw.ct.policies;
    match args.first().map(String::as_str) {
        Some("add") => {
            let (Some(name), true) = (args.get(1), args.len() > 2) else {
                return Err(
                    "timeout-policy add: expected NAME SPEC (e.g. short udp_first=3,udp_single=3)"
                        .into(),
                );
            };
            if name == "default" {
                return Err("'default': the default policy cannot be replaced".into());
            }
            let p = TimeoutPolicy::parse(&args[2..].join(","))?;
            pol.set(name, &p)?;
            d.sw.invalidate_caches();
            tracing::info!("timeout policy {name}: {}", policy_text(&p));
            Ok(CmdOutput::empty())
        }
        Some("del") => {
            let [_, name] = args else {
                return Err("timeout-policy del: expected NAME".into());
            };
            pol.remove(name)?;
            d.sw.invalidate_caches();
            Ok(CmdOutput::empty())
        }
        Some("list") if args.len() == 1 => {
            let mut text = String::new();
            let mut j = serde_json::Map::new();
            for (name, p) in pol.list() {
                text.push_str(&format!("{name}: {}\n", policy_text(&p)));
                let m: BTreeMap<&str, u32> = TimeoutAttr::ALL
                    .iter()
                    .map(|a| (a.name(), p.get(*a)))
                    .collect();
                j.insert(name, json!(m));
            }
            Ok(CmdOutput::new(text, serde_json::Value::Object(j)))
        }
        Some(other) => Err(format!(
            "'{other}': expected timeout-policy add NAME SPEC | del NAME | list"
        )),
        None => Err("timeout-policy: expected add, del or list".into()),
    }
}
