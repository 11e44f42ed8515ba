//! `show`: the bridge's ports with their numbers, types, link state, VLAN
//! mode and counters (in the spirit of `ovs-ofctl show` and `dump-ports`).

use ofproto::pipeline::VlanMode;
use serde_json::json;

use super::commands::CmdOutput;
use crate::daemon::Daemon;

fn vlan_text(v: &VlanMode) -> String {
    match v {
        VlanMode::Access(0) => "access (untagged)".into(),
        VlanMode::Access(vid) => format!("access vlan {vid}"),
        VlanMode::Trunk(l) if l.is_empty() => "trunk (all vlans)".into(),
        VlanMode::Trunk(l) => format!(
            "trunk vlans {}",
            l.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
        ),
    }
}

/// `show`.
pub fn show(d: &Daemon) -> Result<CmdOutput, String> {
    let ports = d.sw.port_entries();
    let n_flows = d.sw.bridge.flows.dump(None, d.sw.clock.now_ms()).len();
    let mut text = format!(
        "ferrovs bridge br0: n_ports:{} n_flows:{} n_conns:{} n_pmds:{}\n",
        ports.len(),
        n_flows,
        d.sw.ct.len(),
        d.pmds.lock().threads().len()
    );
    let mut j = Vec::new();
    for e in ports.iter() {
        let p = &e.port;
        let s = p.stats();
        text.push_str(&format!(" {}({}): {}\n", p.port_no(), p.name(), e.kind));
        text.push_str(&format!(
            "     state: {}  vlan: {}  rxqs: {}\n",
            p.link_state(),
            vlan_text(&e.vlan),
            p.n_rxq()
        ));
        text.push_str(&format!(
            "     rx pkts={}, bytes={}; tx pkts={}, bytes={}; drop={}",
            s.rx_packets,
            s.rx_bytes,
            s.tx_packets,
            s.tx_bytes,
            s.total_drops()
        ));
        let reasons: Vec<String> = s.nonzero_drops().map(|(r, n)| format!("{r}={n}")).collect();
        if !reasons.is_empty() {
            text.push_str(&format!(" ({})", reasons.join(", ")));
        }
        text.push('\n');
        let drops: serde_json::Map<String, serde_json::Value> = s
            .nonzero_drops()
            .map(|(r, n)| (r.to_string(), json!(n)))
            .collect();
        j.push(json!({
            "number": p.port_no().0, "name": p.name(), "type": e.kind,
            "link": p.link_state().to_string(), "vlan": vlan_text(&e.vlan),
            "rx_packets": s.rx_packets, "rx_bytes": s.rx_bytes,
            "tx_packets": s.tx_packets, "tx_bytes": s.tx_bytes, "drops": drops,
        }));
    }
    Ok(CmdOutput::new(
        text,
        json!({ "n_flows": n_flows, "n_conns": d.sw.ct.len(), "ports": j }),
    ))
}
