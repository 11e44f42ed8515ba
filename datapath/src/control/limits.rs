//! Conntrack zone limits as `ovs-appctl dpctl/ct-set-limits`,
//! `ct-get-limits` and `ct-del-limits` see them: a default limit for every
//! zone without its own, and explicit per-zone limits (0 = unlimited).

use std::collections::BTreeMap;

use ct::{Tracker, Zone};

/// The default and the explicitly set zone limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZoneLimits {
    pub default: u32,
    pub explicit: BTreeMap<u16, u32>,
}

impl ZoneLimits {
    /// Limit `zone` to `limit` connections.
    pub fn set_zone(&mut self, ct: &Tracker, zone: u16, limit: u32) {
        self.explicit.insert(zone, limit);
        ct.zones.set_limit(Zone(zone), limit);
    }

    /// Set the default limit (applied to every zone without its own).
    pub fn set_default(&mut self, ct: &Tracker, limit: u32) {
        self.default = limit;
        for z in 0..=u16::MAX {
            if !self.explicit.contains_key(&z) {
                ct.zones.set_limit(Zone(z), limit);
            }
        }
    }

    /// Drop `zone`'s own limit (it falls back to the default).
    pub fn del_zone(&mut self, ct: &Tracker, zone: u16) {
        self.explicit.remove(&zone);
        ct.zones.set_limit(Zone(zone), self.default);
    }

    /// The limit in force for `zone`.
    pub fn limit(&self, zone: u16) -> u32 {
        self.explicit.get(&zone).copied().unwrap_or(self.default)
    }
}

/// What `ct-set-limits` asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetLimits {
    pub default: Option<u32>,
    pub zones: Vec<(u16, u32)>,
}

fn number<T: std::str::FromStr>(tok: &str, v: &str, what: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("'{tok}': {what} must be a number ('{v}')"))
}

/// Parse `[default=N] [zone=N,limit=M]...`.
pub fn parse_set_limits(args: &[String]) -> Result<SetLimits, String> {
    let mut out = SetLimits::default();
    if args.is_empty() {
        return Err("expected default=N and/or zone=N,limit=M".into());
    }
    for tok in args {
        if let Some(v) = tok.strip_prefix("default=") {
            if v.contains(',') {
                return Err(format!("'{tok}': expected default=N"));
            }
            out.default = Some(number(tok, v, "the default limit")?);
            continue;
        }
        let (mut zone, mut limit) = (None, None);
        for item in tok.split(',') {
            match item.split_once('=') {
                Some(("zone", v)) => zone = Some(number::<u16>(tok, v, "zone (0..=65535)")?),
                Some(("limit", v)) => limit = Some(number::<u32>(tok, v, "limit")?),
                _ => return Err(format!("'{item}': expected default=N or zone=N,limit=M")),
            }
        }
        match (zone, limit) {
            (Some(z), Some(l)) => out.zones.push((z, l)),
            _ => return Err(format!("'{tok}': expected zone=N,limit=M")),
        }
    }
    Ok(out)
}

/// Parse `zone=N[,N]...` (also `zone=N zone=M`, `zone=N,zone=M`).
pub fn parse_zone_list(args: &[String]) -> Result<Vec<u16>, String> {
    let mut zones = Vec::new();
    for tok in args {
        let Some(list) = tok.strip_prefix("zone=") else {
            return Err(format!("'{tok}': expected zone=N[,N]..."));
        };
        for z in list.split(',') {
            let z = z.strip_prefix("zone=").unwrap_or(z);
            zones.push(number::<u16>(tok, z, "zone (0..=65535)")?);
        }
    }
    Ok(zones)
}

/// One line of `ct-get-limits`: `zone=5,limit=1000,count=3`.
pub fn zone_line(zone: u16, limit: u32, count: u32) -> String {
    format!("zone={zone},limit={limit},count={count}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn set_limits_args() {
        let p =
            parse_set_limits(&s(&["default=10", "zone=5,limit=1000", "zone=7,limit=0"])).unwrap();
        assert_eq!(p.default, Some(10));
        assert_eq!(p.zones, vec![(5, 1000), (7, 0)]);
        assert!(parse_set_limits(&s(&["zone=70000,limit=1"]))
            .unwrap_err()
            .contains("70000"));
        assert!(parse_set_limits(&s(&["zone=5"]))
            .unwrap_err()
            .contains("zone=5"));
        assert!(parse_set_limits(&s(&["zone=5,limt=3"]))
            .unwrap_err()
            .contains("limt=3"));
        assert!(parse_set_limits(&s(&["default=x"]))
            .unwrap_err()
            .contains("'x'"));
        assert!(parse_set_limits(&[]).is_err());
    }

    #[test]
    fn zone_lists() {
        assert_eq!(
            parse_zone_list(&s(&["zone=5,7", "zone=9"])).unwrap(),
            vec![5, 7, 9]
        );
        assert_eq!(parse_zone_list(&s(&["zone=5,zone=7"])).unwrap(), vec![5, 7]);
        assert!(parse_zone_list(&s(&["5"])).unwrap_err().contains("'5'"));
        assert!(parse_zone_list(&s(&["zone=a"]))
            .unwrap_err()
            .contains("'a'"));
    }

    #[test]
    fn default_applies_to_zones_without_their_own() {
        let ct = Tracker::new(ct::TrackerConfig {
            shards: 1,
            ..Default::default()
        });
        let mut l = ZoneLimits::default();
        l.set_zone(&ct, 5, 100);
        l.set_default(&ct, 10);
        assert_eq!(ct.zones.limit(Zone(5)), 100);
        assert_eq!(ct.zones.limit(Zone(6)), 10);
        l.del_zone(&ct, 5);
        assert_eq!(ct.zones.limit(Zone(5)), 10);
        assert_eq!(l.limit(5), 10);
    }
}
