//! `trace 'FLOW' [--ct-next STATES]`: `ofproto/trace` against the live
//! flow tables.
//!
//! Without `--ct-next`, the ct_state each recirculation resumes with comes
//! from the live connection table: the packet's 5-tuple is looked up in the
//! zone of the first `ct(table=...)` it reaches; a connection found in the
//! original direction gives `trk|est` (`trk|new` while it has not seen a
//! reply, as conntrack itself reports), in the reply direction
//! `trk|est|rpl`, none `trk|new`. The same state is used for every
//! recirculation of the trace.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ct::conn::ConnStatus;
use ct::flush::{Cidr, FlushFilter, TupleFilter};
use ct::{CtState, Zone};
use ofproto::pipeline::parse_ct_states;
use ofproto::text::parse::parse_match;
use ofproto::{DpAction, Field, FlowKey};
use serde_json::json;

use super::commands::CmdOutput;
use crate::daemon::Daemon;

/// Parsed `trace` arguments.
#[derive(Debug, PartialEq, Eq)]
pub struct TraceArgs {
    pub flow: String,
    pub ct_next: Option<String>,
}

/// Split the flow text from `--ct-next STATES`.
pub fn parse_trace_args(args: &[String]) -> Result<TraceArgs, String> {
    let mut flow = Vec::new();
    let mut ct_next = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--ct-next" | "--ct-state" => {
                let v = it
                    .next()
                    .ok_or_else(|| format!("'{a}': expected STATES, e.g. trk+est"))?;
                ct_next = Some(v.clone());
            }
            s if s.starts_with("--") => return Err(format!("'{s}': unknown trace option")),
            s => flow.push(s),
        }
    }
    if flow.is_empty() {
        return Err(
            "trace: expected a flow, e.g. 'in_port=1,udp,nw_src=10.0.0.1,nw_dst=10.0.0.2'".into(),
        );
    }
    Ok(TraceArgs {
        flow: flow.join(" "),
        ct_next,
    })
}

fn ip_of(key: &FlowKey, v4: Field, v6: Field) -> Option<IpAddr> {
    match key.get(Field::DL_TYPE) {
        0x0800 => Some(IpAddr::V4(Ipv4Addr::from(key.get(v4) as u32))),
        0x86dd => Some(IpAddr::V6(Ipv6Addr::from(key.get(v6)))),
        _ => None,
    }
}

fn exact(ip: IpAddr) -> Option<Cidr> {
    Cidr::parse(&ip.to_string()).ok()
}

/// The zone of the first recirculating `ct` action `key` reaches.
fn ct_zone(d: &Daemon, key: &FlowKey, now_ms: u64) -> Option<u16> {
    let passes = d.sw.bridge.passes(key, &[], now_ms, false);
    passes.first()?.xlate.actions.iter().find_map(|a| match a {
        DpAction::Ct(c) if c.recirc.is_some() => Some(c.zone),
        _ => None,
    })
}

/// Look the packet up in the live conntrack table.
fn live_state(d: &Daemon, key: &FlowKey, zone: u16) -> (CtState, &'static str) {
    let new = (CtState::TRK | CtState::NEW, "no connection");
    let (Some(src), Some(dst)) = (
        ip_of(key, Field::NW_SRC, Field::IPV6_SRC),
        ip_of(key, Field::NW_DST, Field::IPV6_DST),
    ) else {
        return new;
    };
    let proto = key.get(Field::NW_PROTO) as u8;
    let ports = matches!(proto, 6 | 17 | 132);
    let (sp, dp) = (key.get(Field::TP_SRC) as u16, key.get(Field::TP_DST) as u16);
    let tuple = |a: IpAddr, b: IpAddr, pa: u16, pb: u16| TupleFilter {
        src: exact(a),
        dst: exact(b),
        src_port: ports.then_some(pa),
        dst_port: ports.then_some(pb),
    };
    let now = d.sw.clock.now_ns();
    let mut f = FlushFilter {
        zone: Some(Zone(zone)),
        proto: Some(proto),
        orig: tuple(src, dst, sp, dp),
        ..Default::default()
    };
    if let Some(c) = d.sw.ct.dump(&f, now).first() {
        // Conntrack reports +new until the connection has seen a reply.
        return if c.status.contains(ConnStatus::SEEN_REPLY) {
            (
                CtState::TRK | CtState::EST,
                "connection found, original direction",
            )
        } else {
            (
                CtState::TRK | CtState::NEW,
                "connection found, original direction, no reply seen yet",
            )
        };
    }
    f.orig = tuple(dst, src, dp, sp);
    if !d.sw.ct.dump(&f, now).is_empty() {
        return (
            CtState::TRK | CtState::EST | CtState::RPL,
            "connection found, reply direction",
        );
    }
    new
}

/// `trace`.
pub fn trace(d: &Daemon, args: &[String]) -> Result<CmdOutput, String> {
    let a = parse_trace_args(args)?;
    let key = parse_match(&a.flow).map_err(|e| e.to_string())?.key;
    let now = d.sw.clock.now_ms();
    let mut text = String::new();
    let states = match &a.ct_next {
        Some(s) => parse_ct_states(s).map_err(|e| format!("--ct-next: {e}"))?,
        None => match ct_zone(d, &key, now) {
            Some(zone) => {
                let (st, why) = live_state(d, &key, zone);
                text.push_str(&format!(
                    "Conntrack zone {zone}: {why}: resuming with ct_state={}\n\n",
                    st.pipe_names()
                ));
                vec![st; 32]
            }
            None => Vec::new(),
        },
    };
    text.push_str(&d.sw.bridge.trace(&key, &states, now));
    let j = json!({
        "flow": a.flow,
        "ct_states": states.iter().take(1).map(|s| s.pipe_names()).collect::<Vec<_>>(),
        "trace": text,
    });
    Ok(CmdOutput::new(text, j))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_args() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let a = parse_trace_args(&s(&["in_port=1,udp", "--ct-next", "trk+est"])).unwrap();
        assert_eq!(a.flow, "in_port=1,udp");
        assert_eq!(a.ct_next.as_deref(), Some("trk+est"));
        assert!(parse_trace_args(&s(&["--ct-next"]))
            .unwrap_err()
            .contains("--ct-next"));
        assert!(parse_trace_args(&s(&["x", "--bogus"]))
            .unwrap_err()
            .contains("--bogus"));
        assert!(parse_trace_args(&[]).is_err());
    }
}
