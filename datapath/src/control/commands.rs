//! Command dispatch. Every command checks all of its arguments before it
//! changes anything, so a rejected command leaves the switch as it was; its
//! error names the offending token.

use serde_json::{json, Value};

use super::protocol::Request;
use super::{ct_cmds, frag_cmds, pmd_cmds, pressure_cmds, show, trace};
use crate::config::{build_port, PortConfigJson};
use crate::daemon::Daemon;
use crate::port::Port;

/// A command's result: text in the OVS format, and the same as JSON.
#[derive(Debug, Default)]
pub struct CmdOutput {
    pub text: String,
    pub json: Value,
}

impl CmdOutput {
    pub fn new(text: impl Into<String>, json: Value) -> CmdOutput {
        CmdOutput {
            text: text.into(),
            json,
        }
    }

    /// No text; JSON `{}`.
    pub fn empty() -> CmdOutput {
        CmdOutput::new("", json!({}))
    }
}

/// Every command with its synopsis (for `help` and errors).
pub const COMMANDS: &[(&str, &str)] = &[
    ("add-flow", "FLOW"),
    ("add-flows", "TEXT (ferrovs-ctl: FILE or - for stdin)"),
    ("mod-flows", "[--strict] FLOW"),
    ("del-flows", "[--strict] [MATCH]"),
    ("dump-flows", "[MATCH]"),
    ("dump-conntrack", "[zone=N] [filters]"),
    ("flush-conntrack", "[zone=N] [filters]"),
    ("dump-expectations", "[zone=N[,N]...]"),
    (
        "events",
        "[zone=N] [type=new|update|destroy[,...]] (streams until interrupted)",
    ),
    ("ct-stats-show", "[zone=N]"),
    ("ct-set-limits", "[default=N] [zone=N,limit=M]..."),
    ("ct-get-limits", "[zone=N[,N]...]"),
    ("ct-del-limits", "zone=N[,N]..."),
    ("ct-get-pressure", ""),
    (
        "ct-set-pressure",
        "[high=N] [low=N] [embryonic=SECS] [evict-assured=on|off]",
    ),
    ("timeout-policy", "add NAME SPEC | del NAME | list"),
    ("ipf-get-status", "[-m]"),
    ("ipf-set", "KEY=VALUE..."),
    ("pmd-stats-show", ""),
    ("pmd-stats-clear", ""),
    ("pmd-rxq-show", ""),
    ("dump-dp-flows", ""),
    ("add-port", "JSON-PORT-SPEC"),
    ("del-port", "NAME"),
    ("show", ""),
    ("hw-offload-show", ""),
    ("trace", "'FLOW' [--ct-next STATES]"),
    ("version", ""),
    ("help", ""),
    ("exit", ""),
];

/// Run one request.
pub fn dispatch(d: &Daemon, req: &Request) -> Result<CmdOutput, String> {
    let a = &req.args[..];
    match req.command.as_str() {
        "add-flow" | "add-flows" | "mod-flows" | "del-flows" | "dump-flows" => {
            flow_cmd(d, &req.command, a)
        }
        "dump-conntrack" => ct_cmds::dump(d, a),
        "flush-conntrack" => ct_cmds::flush(d, a),
        "dump-expectations" => ct_cmds::dump_expectations(d, a),
        "ct-stats-show" => ct_cmds::stats(d, a),
        // Served as a stream by the control server (`events_cmd::stream`).
        "events" => Err("'events' streams: send it on a connection of its own".into()),
        "ct-set-limits" => ct_cmds::set_limits(d, a),
        "ct-get-limits" => ct_cmds::get_limits(d, a),
        "ct-del-limits" => ct_cmds::del_limits(d, a),
        "ct-get-pressure" => pressure_cmds::get(d, a),
        "ct-set-pressure" => pressure_cmds::set(d, a),
        "timeout-policy" => ct_cmds::timeout_policy(d, a),
        "ipf-get-status" => frag_cmds::get_status(d, a),
        "ipf-set" => frag_cmds::set(d, a),
        "pmd-stats-show" => no_args(a).and_then(|_| pmd_cmds::stats_show(d)),
        "pmd-stats-clear" => no_args(a).and_then(|_| pmd_cmds::stats_clear(d)),
        "pmd-rxq-show" => no_args(a).and_then(|_| pmd_cmds::rxq_show(d)),
        "dump-dp-flows" => no_args(a).and_then(|_| pmd_cmds::dump_dp_flows(d)),
        "add-port" => add_port(d, a),
        "del-port" => del_port(d, a),
        "show" => no_args(a).and_then(|_| show::show(d)),
        "hw-offload-show" => no_args(a).map(|_| hw_offload_show(d)),
        "trace" => trace::trace(d, a),
        "version" => no_args(a).map(|_| {
            let v = env!("CARGO_PKG_VERSION");
            CmdOutput::new(format!("ferrovsd (ferrovs) {v}\n"), json!({ "version": v }))
        }),
        "help" => Ok(help()),
        "exit" => no_args(a).map(|_| CmdOutput::empty()),
        other => Err(format!("'{other}': unknown command (try 'help')")),
    }
}

/// `hw-offload-show`: the rte_flow offloader's counters and port modes.
fn hw_offload_show(d: &Daemon) -> CmdOutput {
    match d.sw.hw_offload() {
        Some(h) => {
            let s = h.status();
            CmdOutput::new(s.to_text(), s.to_json())
        }
        None => CmdOutput::new(
            "hw offload: disabled (dpdk.hw_offload is false)\n",
            json!({ "enabled": false }),
        ),
    }
}

fn help() -> CmdOutput {
    let mut text = String::from("commands:\n");
    for (c, s) in COMMANDS {
        text.push_str(&format!("  {c} {s}\n"));
    }
    let list: Vec<&str> = COMMANDS.iter().map(|(c, _)| *c).collect();
    CmdOutput::new(text, json!({ "commands": list }))
}

/// Refuse arguments to a command that takes none.
pub fn no_args(args: &[String]) -> Result<(), String> {
    match args.first() {
        None => Ok(()),
        Some(a) => Err(format!("'{a}': this command takes no arguments")),
    }
}

/// Split a leading `--strict` off the arguments.
pub fn split_strict(args: &[String]) -> (bool, String) {
    match args.split_first() {
        Some((first, rest)) if first == "--strict" => (true, rest.join(" ")),
        _ => (false, args.join(" ")),
    }
}

fn flow_cmd(d: &Daemon, cmd: &str, args: &[String]) -> Result<CmdOutput, String> {
    let (strict, arg) = split_strict(args);
    if strict && !matches!(cmd, "mod-flows" | "del-flows") {
        return Err(format!("'--strict': not an option of {cmd}"));
    }
    if arg.trim().is_empty() && matches!(cmd, "add-flow" | "add-flows" | "mod-flows") {
        return Err(format!("{cmd}: expected a flow"));
    }
    let full = if strict {
        format!("--strict {cmd}")
    } else {
        cmd.to_string()
    };
    let sw = &d.sw;
    let out = sw
        .bridge
        .ofctl(&full, &arg, sw.clock.now_ms())
        .map_err(|e| e.to_string())?;
    let json = if cmd == "dump-flows" {
        json!({ "flows": out.lines().collect::<Vec<_>>() })
    } else {
        json!({})
    };
    Ok(CmdOutput::new(out, json))
}

fn add_port(d: &Daemon, args: &[String]) -> Result<CmdOutput, String> {
    if args.is_empty() {
        return Err("add-port: expected a JSON port spec, e.g. '{\"name\":\"p9\",\"number\":9,\"type\":\"null\"}'".into());
    }
    let spec = PortConfigJson::parse(&args.join(" "))?;
    if let Some(e) =
        d.sw.port_entries()
            .iter()
            .find(|e| e.port.name() == spec.name || e.port.port_no().0 == spec.number)
    {
        return Err(format!(
            "port {} ({}) clashes with existing port {} ({})",
            spec.name,
            spec.number,
            e.port.name(),
            e.port.port_no()
        ));
    }
    let built = build_port(&spec, &d.base_dir)?;
    d.sw.add_port(built.entry)?;
    d.pcap_outputs.lock().extend(built.pcap_tx);
    tracing::info!("added port {} ({})", spec.name, spec.number);
    Ok(CmdOutput::new(
        "",
        json!({ "name": spec.name, "number": spec.number }),
    ))
}

fn del_port(d: &Daemon, args: &[String]) -> Result<CmdOutput, String> {
    let [name] = args else {
        return Err("del-port: expected exactly one port name".into());
    };
    let e =
        d.sw.del_port(name)
            .map_err(|_| format!("'{name}': no such port"))?;
    let mut outs = d.pcap_outputs.lock();
    if let Some(i) = outs.iter().position(|p| p.port_no() == e.port.port_no()) {
        let p = outs.remove(i);
        if let Err(err) = p.flush() {
            tracing::warn!("flushing {}: {err}", p.path().display());
        }
    }
    tracing::info!("deleted port {} ({})", e.port.name(), e.port.port_no());
    Ok(CmdOutput::new(
        "",
        json!({ "name": e.port.name(), "number": e.port.port_no().0 }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_and_args() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            split_strict(&s(&["--strict", "priority=5,ip"])),
            (true, "priority=5,ip".into())
        );
        assert_eq!(
            split_strict(&s(&["ip,", "actions=drop"])),
            (false, "ip, actions=drop".into())
        );
        assert!(no_args(&s(&["x"])).unwrap_err().contains("'x'"));
        assert!(no_args(&[]).is_ok());
    }
}
