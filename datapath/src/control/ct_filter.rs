//! Conntrack filters on the command line, as `ovs-appctl
//! dpctl/flush-conntrack` writes them:
//!
//! ```text
//! [zone=N] [mark=V[/M]] [state=unreplied|replied|assured] [proto=N]
//! [ct_nw_src=A,ct_nw_dst=B,ct_nw_proto=P,ct_tp_src=X,ct_tp_dst=Y]   (original tuple)
//! [ct_nw_src=...]                                                   (reply tuple)
//! ```
//!
//! Items may be separated by commas or given as separate arguments. The
//! first argument with tuple fields (`ct_nw_*`, `ct_ipv6_*`, `ct_tp_*`)
//! constrains the original direction, the second the reply direction.
//! Addresses take CIDR prefixes. Errors name the offending token.

use ct::flush::{Cidr, FlushFilter, StateClass, TupleFilter};
use ct::Zone;

fn num<T: std::str::FromStr>(item: &str, v: &str) -> Result<T, String> {
    let parsed = match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16)
            .ok()
            .and_then(|n| n.to_string().parse().ok()),
        None => v.parse().ok(),
    };
    parsed.ok_or_else(|| format!("'{item}': '{v}' is not a valid number here"))
}

/// Parse filter arguments.
pub fn parse_ct_filter(args: &[String]) -> Result<FlushFilter, String> {
    let mut f = FlushFilter::default();
    let mut tuples = 0;
    for arg in args {
        let mut t = TupleFilter::default();
        let mut has_tuple = false;
        for item in arg.split(',').filter(|i| !i.is_empty()) {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| format!("'{item}': expected FIELD=VALUE"))?;
            let tuple_field =
                k.starts_with("ct_nw_") || k.starts_with("ct_ipv6_") || k.starts_with("ct_tp_");
            if tuple_field && k != "ct_nw_proto" {
                has_tuple = true;
            }
            match k {
                "zone" => f.zone = Some(Zone(num(item, v)?)),
                "mark" => {
                    let (val, mask) = match v.split_once('/') {
                        Some((a, m)) => (num(item, a)?, num(item, m)?),
                        None => (num(item, v)?, u32::MAX),
                    };
                    f.mark = Some((val, mask));
                }
                "state" => {
                    f.state = match v {
                        "unreplied" => StateClass::Unreplied,
                        "replied" => StateClass::Replied,
                        "assured" => StateClass::Assured,
                        _ => {
                            return Err(format!(
                                "'{item}': state must be unreplied, replied or assured"
                            ))
                        }
                    }
                }
                "proto" | "ct_nw_proto" => {
                    let p: u8 = num(item, v)?;
                    if f.proto.is_some_and(|q| q != p) {
                        return Err(format!("'{item}': conflicts with an earlier protocol"));
                    }
                    f.proto = Some(p);
                }
                "ct_nw_src" | "ct_ipv6_src" => {
                    t.src = Some(Cidr::parse(v).map_err(|e| format!("'{item}': {e}"))?)
                }
                "ct_nw_dst" | "ct_ipv6_dst" => {
                    t.dst = Some(Cidr::parse(v).map_err(|e| format!("'{item}': {e}"))?)
                }
                "ct_tp_src" => t.src_port = Some(num(item, v)?),
                "ct_tp_dst" => t.dst_port = Some(num(item, v)?),
                _ => {
                    return Err(format!(
                        "'{item}': unknown filter field (zone, mark, state, proto, ct_nw_src, ct_nw_dst, ct_ipv6_src, ct_ipv6_dst, ct_nw_proto, ct_tp_src, ct_tp_dst)"
                    ))
                }
            }
        }
        if has_tuple {
            match tuples {
                0 => f.orig = t,
                1 => f.reply = t,
                _ => {
                    return Err(format!(
                        "'{arg}': at most two tuples (original, then reply)"
                    ))
                }
            }
            tuples += 1;
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> Result<FlushFilter, String> {
        parse_ct_filter(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn filters() {
        let f = p(&[
            "zone=5",
            "ct_nw_src=10.0.0.0/8,ct_nw_proto=17,ct_tp_dst=5001",
        ])
        .unwrap();
        assert_eq!(f.zone, Some(Zone(5)));
        assert_eq!(f.proto, Some(17));
        assert_eq!(f.orig.dst_port, Some(5001));
        assert_eq!(f.orig.src.unwrap().prefix, 8);
        assert!(f.reply.is_empty());
        let f = p(&["ct_nw_src=1.1.1.1", "ct_nw_src=2.2.2.2", "mark=0x10/0xf0"]).unwrap();
        assert!(f.reply.src.is_some());
        assert_eq!(f.mark, Some((16, 240)));
        assert_eq!(p(&[]).unwrap(), FlushFilter::default());
        assert_eq!(
            p(&["zone=5,state=unreplied"]).unwrap().state,
            StateClass::Unreplied
        );
    }

    #[test]
    fn errors_name_the_token() {
        assert!(p(&["zone=99999"]).unwrap_err().contains("zone=99999"));
        assert!(p(&["ct_nw_srcc=1.2.3.4"])
            .unwrap_err()
            .contains("ct_nw_srcc"));
        assert!(p(&["ct_nw_src=1.2.3"])
            .unwrap_err()
            .contains("ct_nw_src=1.2.3"));
        assert!(p(&["zone"]).unwrap_err().contains("'zone'"));
        assert!(p(&["state=open"]).unwrap_err().contains("state=open"));
        assert!(p(&[
            "ct_nw_src=1.1.1.1",
            "ct_nw_src=2.2.2.2",
            "ct_nw_src=3.3.3.3"
        ])
        .is_err());
    }
}
