//! Parsing the ovs-ofctl flow syntax: values, matches and whole flows.
//!
//! A flow is a list of `key=value` items and shorthand words (`tcp`,
//! `ip`...) separated by commas or spaces, then `actions=` and the action list
//! (everything after `actions=` belongs to the actions). The statistics that
//! `dump-flows` prints (`duration=`, `n_packets=`, `n_bytes=`, `idle_age=`,
//! `hard_age=`) are accepted and ignored, so dump-flows output reads back in,
//! as ovs-ofctl allows.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::action::{check_actions, parse_actions};
use crate::fields::{consts::*, Field, Fmt, Maskable, PortNo, TableId};
use crate::matches::{prereq_text, Match};
use crate::table::FlowSpec;
use ct::CtState;

/// A parse error: the offending token and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub token: String,
    pub reason: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.token, self.reason)
    }
}

impl std::error::Error for ParseError {}

/// Build a [`ParseError`] (tokens longer than 80 characters are shortened).
pub fn err(token: &str, reason: &str) -> ParseError {
    let mut t: String = token.chars().take(80).collect();
    if token.chars().count() > 80 {
        t.push_str("...");
    }
    ParseError {
        token: t,
        reason: reason.to_string(),
    }
}

/// An unsigned integer in decimal or `0x` hex that fits in `bits` bits.
pub fn parse_uint(s: &str, bits: u32) -> Result<u128, String> {
    let s = s.trim();
    let v = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if h.is_empty() || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("not a hexadecimal number".into());
        }
        let h = h.trim_start_matches('0');
        if h.len() > 32 {
            return Err(format!("does not fit in {bits} bits"));
        }
        u128::from_str_radix(if h.is_empty() { "0" } else { h }, 16).map_err(|e| e.to_string())?
    } else {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err("not a number".into());
        }
        s.parse::<u128>()
            .map_err(|_| format!("does not fit in {bits} bits"))?
    };
    if bits < 128 && v >> bits != 0 {
        return Err(format!("does not fit in {bits} bits"));
    }
    Ok(v)
}

fn parse_mac(s: &str) -> Option<u128> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut v = 0u128;
    for p in parts {
        if p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        v = (v << 8) | u128::from_str_radix(p, 16).ok()?;
    }
    Some(v)
}

/// `ovs-fields` flag syntax: `+trk-new`, or names joined by `|` meaning
/// "exactly these set, mask all". Returns (value, mask).
fn parse_flags(
    s: &str,
    by_name: &dyn Fn(&str) -> Option<u32>,
    all_bits: u32,
) -> Result<(u128, u128), ParseError> {
    if s.starts_with('+') || s.starts_with('-') {
        let (mut v, mut m) = (0u32, 0u32);
        let mut rest = s;
        while !rest.is_empty() {
            let sign = &rest[..1];
            if sign != "+" && sign != "-" {
                return Err(err(rest, "expected `+flag` or `-flag`"));
            }
            let body = &rest[1..];
            let end = body.find(['+', '-']).unwrap_or(body.len());
            let name = &body[..end];
            let bit = by_name(name).ok_or_else(|| err(name, "unknown flag"))?;
            if m & bit != 0 {
                return Err(err(name, "flag given twice"));
            }
            m |= bit;
            if sign == "+" {
                v |= bit;
            }
            rest = &body[end..];
        }
        return Ok((v as u128, m as u128));
    }
    let mut v = 0u32;
    for name in s.split('|') {
        v |= by_name(name).ok_or_else(|| err(name, "unknown flag"))?;
    }
    Ok((v as u128, all_bits as u128))
}

pub(crate) const TCP_FLAG_NAMES: [(&str, u32); 9] = [
    ("fin", 0x1),
    ("syn", 0x2),
    ("rst", 0x4),
    ("psh", 0x8),
    ("ack", 0x10),
    ("urg", 0x20),
    ("ece", 0x40),
    ("cwr", 0x80),
    ("ns", 0x100),
];

/// `nw_frag` names and their (value, mask).
pub(crate) const FRAG_NAMES: [(&str, u8, u8); 5] = [
    ("no", 0, FRAG_ANY),
    ("yes", FRAG_ANY, FRAG_ANY),
    ("first", FRAG_ANY, FRAG_ANY | FRAG_LATER),
    ("later", FRAG_ANY | FRAG_LATER, FRAG_ANY | FRAG_LATER),
    ("not_later", 0, FRAG_LATER),
];

/// Parse a value (and, when `allow_mask`, a `/mask`) for field `f`.
/// Returns (value, mask) with the mask all-ones when none was given.
pub fn parse_field_value(f: Field, s: &str, allow_mask: bool) -> Result<(u128, u128), ParseError> {
    let info = f.info();
    let ones = info.slot.ones();
    let name = info.name;
    let flag_syntax =
        s.starts_with(['+', '-', '[']) || s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic());
    match info.fmt {
        Fmt::CtState if flag_syntax => {
            return parse_flags(s, &|n| CtState::by_name(n).map(|b| b.bits()), ones as u32);
        }
        Fmt::TcpFlags if flag_syntax => {
            // Named flags, or `[200]`: an unnamed bit in hex, as OVS prints it.
            let by = |n: &str| {
                if let Some(h) = n.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                    return u32::from_str_radix(h, 16)
                        .ok()
                        .filter(|b| b.is_power_of_two() && *b <= 0x800);
                }
                TCP_FLAG_NAMES
                    .iter()
                    .find(|(x, _)| *x == n)
                    .map(|(_, b)| *b)
            };
            return parse_flags(s, &by, 0xfff);
        }
        Fmt::Frag => {
            if let Some((_, v, m)) = FRAG_NAMES.iter().find(|(n, _, _)| *n == s) {
                return Ok((*v as u128, *m as u128));
            }
            if !s.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
                return Err(err(
                    s,
                    "nw_frag must be no, yes, first, later, not_later or a number",
                ));
            }
        }
        _ => {}
    }
    let (vs, ms) = match s.split_once('/') {
        Some((v, m)) => {
            if !allow_mask || info.maskable == Maskable::No {
                return Err(err(s, &format!("{name} does not accept a mask")));
            }
            (v, Some(m))
        }
        None => (s, None),
    };
    let one = |t: &str, is_mask: bool| -> Result<u128, ParseError> {
        let what = if is_mask { "mask" } else { "value" };
        match info.fmt {
            Fmt::Mac => parse_mac(t)
                .ok_or_else(|| err(t, &format!("{name} {what} is not an Ethernet address"))),
            Fmt::Ipv4 => t
                .parse::<Ipv4Addr>()
                .map(|a| u32::from(a) as u128)
                .map_err(|_| err(t, &format!("{name} {what} is not an IPv4 address"))),
            Fmt::Ipv6 => t
                .parse::<Ipv6Addr>()
                .map(u128::from)
                .map_err(|_| err(t, &format!("{name} {what} is not an IPv6 address"))),
            Fmt::Port if !is_mask => PortNo::parse(t)
                .map(|p| p.0 as u128)
                .ok_or_else(|| err(t, &format!("{name} is not a port number or name"))),
            _ => {
                let v = parse_uint(t, 128).map_err(|e| err(t, &format!("{name} {what}: {e}")))?;
                let scaled = if is_mask { v } else { v >> info.text_shift };
                if !is_mask && info.text_shift > 0 && v & ((1 << info.text_shift) - 1) != 0 {
                    return Err(err(
                        t,
                        &format!(
                            "{name} value must have its low {} bits clear",
                            info.text_shift
                        ),
                    ));
                }
                if scaled & !ones != 0 {
                    return Err(err(
                        t,
                        &format!("{name} {what} does not fit in {} bits", info.slot.bits),
                    ));
                }
                Ok(scaled)
            }
        }
    };
    let v = one(vs, false)?;
    if info.fmt == Fmt::CtState && v & !(CtState::all().bits() as u128) != 0 {
        return Err(err(vs, "unknown ct_state flag(s)"));
    }
    let m = match ms {
        None => ones,
        Some(m)
            if matches!(info.fmt, Fmt::Ipv4 | Fmt::Ipv6)
                && m.bytes().all(|b| b.is_ascii_digit())
                && !m.is_empty() =>
        {
            let len: u32 = m.parse().map_err(|_| err(m, "bad prefix length"))?;
            let bits = info.slot.bits as u32;
            if len > bits {
                return Err(err(m, &format!("prefix length exceeds {bits}")));
            }
            if len == 0 {
                0
            } else {
                (ones << (bits - len)) & ones
            }
        }
        Some(m) => one(m, true)?,
    };
    Ok((v & m, m))
}

/// Split at `sep` outside parentheses and brackets.
pub fn split_top(s: &str, sep: char) -> Result<Vec<&str>, ParseError> {
    let mut out = Vec::new();
    let mut depth: i32 = 0;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => {
                depth -= 1;
                if depth < 0 {
                    return Err(err(s, &format!("unbalanced `{c}`")));
                }
            }
            c if c == sep && depth == 0 => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(err(s, "unbalanced parentheses or brackets"));
    }
    out.push(&s[start..]);
    Ok(out)
}

/// `01.02.0a` or `01020a` hex bytes (for note and userdata).
pub fn parse_hex_bytes(s: &str) -> Result<Vec<u8>, ParseError> {
    let digits: String = s.chars().filter(|c| *c != '.').collect();
    if !digits.len().is_multiple_of(2) || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err(s, "expected hex bytes like 01.02.ab"));
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).map_err(|_| err(s, "bad hex byte")))
        .collect()
}

/// Protocol shorthands: name, dl_type, nw_proto.
pub(crate) const SHORTHANDS: [(&str, u16, Option<u8>); 13] = [
    ("ip", ETH_IPV4, None),
    ("ipv6", ETH_IPV6, None),
    ("ip6", ETH_IPV6, None),
    ("icmp", ETH_IPV4, Some(PROTO_ICMP)),
    ("icmp6", ETH_IPV6, Some(PROTO_ICMPV6)),
    ("tcp", ETH_IPV4, Some(PROTO_TCP)),
    ("tcp6", ETH_IPV6, Some(PROTO_TCP)),
    ("udp", ETH_IPV4, Some(PROTO_UDP)),
    ("udp6", ETH_IPV6, Some(PROTO_UDP)),
    ("sctp", ETH_IPV4, Some(PROTO_SCTP)),
    ("sctp6", ETH_IPV6, Some(PROTO_SCTP)),
    ("arp", ETH_ARP, None),
    ("rarp", ETH_RARP, None),
];

/// What a flow line is for: which options it may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowCmd {
    /// `add-flow`: actions required, no cookie mask.
    Add,
    /// `mod-flows`: actions required, cookie mask allowed.
    Modify,
    /// `del-flows`: no actions; a missing table means every table.
    Delete,
}

struct MatchBuilder {
    m: Match,
    /// The token that set each field, for error messages.
    origin: Vec<(Field, String)>,
}

impl MatchBuilder {
    fn set(&mut self, f: Field, v: u128, mask: u128, tok: &str) -> Result<(), ParseError> {
        let (ov, om) = self.m.get(f);
        if om != 0 && (om != mask & f.info().slot.ones() || ov != v & mask) {
            let overlaps = |g: Field| {
                let (mut a, mut b) = (
                    crate::fields::FlowMask::default(),
                    crate::fields::FlowMask::default(),
                );
                a.set_exact(f);
                b.set_exact(g);
                a.w.iter().zip(b.w.iter()).any(|(x, y)| x & y != 0)
            };
            let prev = self
                .origin
                .iter()
                .find(|(g, _)| overlaps(*g))
                .map(|(_, t)| t.as_str())
                .unwrap_or("?");
            return Err(err(tok, &format!("conflicts with earlier `{prev}`")));
        }
        self.m.set(f, v, mask);
        self.origin.push((f, tok.to_string()));
        Ok(())
    }
}

/// Parse one match item (`tcp`, `nw_src=10.0.0.0/8`) into `b`.
fn match_item(
    b: &mut MatchBuilder,
    key: &str,
    val: Option<&str>,
    tok: &str,
) -> Result<(), ParseError> {
    if let Some((_, dl, proto)) = SHORTHANDS.iter().find(|(n, _, _)| *n == key) {
        if val.is_some() {
            return Err(err(
                tok,
                &format!("`{key}` is a protocol shorthand and takes no value"),
            ));
        }
        b.set(Field::DL_TYPE, *dl as u128, u128::MAX, tok)?;
        if let Some(p) = proto {
            b.set(Field::NW_PROTO, *p as u128, u128::MAX, tok)?;
        }
        return Ok(());
    }
    let f = Field::by_name(key).ok_or_else(|| err(key, "unknown field or keyword"))?;
    let val = val.ok_or_else(|| err(tok, &format!("field {key} needs `={}`", "VALUE")))?;
    if f == Field::DL_VLAN && (val == "0xffff" || val == "65535") {
        // OpenFlow 1.0: "no VLAN header".
        return b.set(Field::VLAN_TCI, 0, 0xffff, tok);
    }
    let (v, m) = parse_field_value(f, val, true)?;
    if f == Field::DL_VLAN || f == Field::DL_VLAN_PCP {
        // Views imply the CFI bit; compare against the combined vlan_tci.
        let (tv, tm) = b.m.get(Field::VLAN_TCI);
        let mut probe = Match::default();
        probe.set(Field::VLAN_TCI, tv, tm);
        probe.set(f, v, m);
        let (nv, nm) = probe.get(Field::VLAN_TCI);
        if tm & 0x1000 != 0 && tv & 0x1000 == 0 {
            return Err(err(
                tok,
                "conflicts with an earlier match for no VLAN header",
            ));
        }
        b.m.set(Field::VLAN_TCI, nv, nm);
        b.origin.push((Field::VLAN_TCI, tok.to_string()));
        return Ok(());
    }
    b.set(f, v, m, tok)
}

/// Parse a flow line for `cmd`.
pub fn parse_flow(line: &str, cmd: FlowCmd) -> Result<FlowSpec, ParseError> {
    let (head, actions) = split_actions(line);
    let mut spec = FlowSpec::default();
    if cmd == FlowCmd::Delete {
        spec.table = None;
    }
    let mut b = MatchBuilder {
        m: Match::default(),
        origin: Vec::new(),
    };
    for tok in split_top(head, ',')?
        .into_iter()
        .flat_map(|t| t.split_whitespace())
    {
        if tok.is_empty() {
            continue;
        }
        let (key, val) = match tok.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (tok, None),
        };
        let num = |bits: u32| -> Result<u128, ParseError> {
            let v = val.ok_or_else(|| err(tok, &format!("`{key}` needs a value")))?;
            parse_uint(v, bits).map_err(|e| err(tok, &format!("{key}: {e}")))
        };
        match key {
            "table" => {
                let v = val.ok_or_else(|| err(tok, "`table` needs a value"))?;
                spec.table = if v == "255" && cmd != FlowCmd::Add {
                    None
                } else {
                    let t = num(8)?;
                    if t > 254 {
                        return Err(err(tok, "table must be 0..254"));
                    }
                    Some(TableId(t as u8))
                };
            }
            "priority" => spec.priority = num(16)? as u16,
            "idle_timeout" => spec.idle_timeout = num(16)? as u16,
            "hard_timeout" => spec.hard_timeout = num(16)? as u16,
            "importance" => {
                num(16)?;
            }
            "cookie" => {
                let v = val.ok_or_else(|| err(tok, "`cookie` needs a value"))?;
                let (c, m) = match v.split_once('/') {
                    Some((c, m)) => {
                        if cmd == FlowCmd::Add {
                            return Err(err(tok, "flow additions cannot use a cookie mask"));
                        }
                        (
                            c,
                            parse_uint(m, 64).map_err(|e| err(tok, &format!("cookie mask: {e}")))?
                                as u64,
                        )
                    }
                    None => (v, if cmd == FlowCmd::Add { 0 } else { u64::MAX }),
                };
                spec.cookie =
                    parse_uint(c, 64).map_err(|e| err(tok, &format!("cookie: {e}")))? as u64;
                spec.cookie_mask = m;
            }
            "out_port" => {
                let v = val.ok_or_else(|| err(tok, "`out_port` needs a value"))?;
                spec.out_port =
                    Some(PortNo::parse(v).ok_or_else(|| err(tok, "out_port is not a port"))?);
            }
            "send_flow_rem" | "check_overlap" | "reset_counts" | "no_packet_counts"
            | "no_byte_counts"
                if val.is_none() => {}
            "duration" | "n_packets" | "n_bytes" | "idle_age" | "hard_age" => {}
            _ => match_item(&mut b, key, val, tok)?,
        }
    }
    // Check each item as written, so the error names the user's token (a
    // view such as ip_dscp shares storage with nw_tos).
    for (f, tok) in &b.origin {
        let p = f.info().prereq;
        if !b.m.satisfies(p) {
            return Err(err(
                tok,
                &format!(
                    "missing prerequisite: {} needs {}",
                    f.name(),
                    prereq_text(p)
                ),
            ));
        }
    }
    if let Err((f, p)) = b.m.check_prereqs() {
        return Err(err(
            f.name(),
            &format!(
                "missing prerequisite: {} needs {}",
                f.name(),
                prereq_text(p)
            ),
        ));
    }
    spec.mtch = b.m;
    match (cmd, actions) {
        (FlowCmd::Delete, Some(_)) => return Err(err(line, "del-flows takes no actions")),
        (FlowCmd::Delete, None) => {}
        (_, None) => return Err(err(line, "flow has no `actions=`")),
        (_, Some(a)) => {
            spec.actions = parse_actions(a)?;
            check_actions(&spec.actions, &spec.mtch, spec.table.unwrap_or_default())?;
        }
    }
    Ok(spec)
}

/// Split a flow line into (match part, actions) at `actions=` / `action=`.
fn split_actions(line: &str) -> (&str, Option<&str>) {
    let bytes = line.as_bytes();
    for kw in ["actions=", "action="] {
        let mut from = 0;
        while let Some(i) = line[from..].find(kw) {
            let at = from + i;
            let boundary = at == 0 || matches!(bytes[at - 1], b',' | b' ' | b'\t');
            if boundary {
                return (&line[..at], Some(line[at + kw.len()..].trim()));
            }
            from = at + kw.len();
        }
    }
    (line, None)
}

/// Parse a match alone (`del-flows` style, or the packet of a trace).
pub fn parse_match(s: &str) -> Result<Match, ParseError> {
    let mut b = MatchBuilder {
        m: Match::default(),
        origin: Vec::new(),
    };
    for tok in split_top(s, ',')?
        .into_iter()
        .flat_map(|t| t.split_whitespace())
    {
        let (key, val) = match tok.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (tok, None),
        };
        match_item(&mut b, key, val, tok)?;
    }
    Ok(b.m)
}

/// A flows file: one flow a line, `#` comments and blank lines skipped.
/// Errors carry the 1-based line number.
pub fn parse_flows_file(text: &str) -> Result<Vec<(usize, FlowSpec)>, (usize, ParseError)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let spec = parse_flow(line, FlowCmd::Add).map_err(|e| (i + 1, e))?;
        out.push((i + 1, spec));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(f: Field, s: &str) -> (u128, u128) {
        parse_field_value(f, s, true).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn integers() {
        assert_eq!(parse_uint("0x1f", 8), Ok(31));
        assert_eq!(parse_uint("255", 8), Ok(255));
        assert!(parse_uint("256", 8).is_err());
        assert!(parse_uint("0x", 8).is_err());
        assert!(parse_uint("-1", 8).is_err());
        assert!(parse_uint("12a", 8).is_err());
        assert!(parse_uint("0x1ffffffffffffffffffffffffffffffff", 128).is_err());
    }

    #[test]
    fn masks_each_kind() {
        assert_eq!(pv(Field::NW_SRC, "10.0.0.0/8"), (0x0a00_0000, 0xff00_0000));
        assert_eq!(
            pv(Field::NW_SRC, "10.1.2.3/255.0.255.0"),
            (0x0a00_0200, 0xff00_ff00)
        );
        assert_eq!(pv(Field::NW_SRC, "10.1.2.3/0"), (0, 0));
        assert_eq!(pv(Field::IPV6_SRC, "fe80::1/16").1, 0xffffu128 << 112);
        assert_eq!(
            pv(Field::DL_DST, "01:00:00:00:00:00/01:00:00:00:00:00"),
            (1 << 40, 1 << 40)
        );
        assert_eq!(pv(Field::TP_DST, "0x50/0xfff0"), (0x50, 0xfff0));
        assert_eq!(pv(Field::reg(0), "5/0xff"), (5, 0xff));
        assert_eq!(pv(Field::CT_LABEL, "0x1/0x1"), (1, 1));
        assert_eq!(pv(Field::CT_STATE, "+trk-new+est"), (0x22, 0x23));
        assert_eq!(pv(Field::CT_STATE, "0x22/0x3f"), (0x22, 0x3f));
        assert_eq!(pv(Field::CT_STATE, "+trk+untracked"), (0x120, 0x120));
        assert_eq!(pv(Field::CT_STATE, "new|trk"), (0x21, 0xffff_ffff));
        assert!(parse_field_value(Field::CT_STATE, "0x200", true)
            .unwrap_err()
            .reason
            .contains("unknown ct_state"));
        assert_eq!(pv(Field::TCP_FLAGS, "+syn-ack"), (0x2, 0x12));
        assert_eq!(pv(Field::TCP_FLAGS, "syn"), (0x2, 0xfff));
        assert_eq!(pv(Field::NW_FRAG, "later"), (3, 3));
        assert_eq!(pv(Field::NW_TOS, "16"), (4, 0x3f));
        assert_eq!(pv(Field::IN_PORT, "LOCAL").0, 0xffff_fffe);
    }

    #[test]
    fn bad_values_name_token() {
        let e = parse_field_value(Field::NW_SRC, "10.0.0.300", true).unwrap_err();
        assert_eq!(e.token, "10.0.0.300");
        let e = parse_field_value(Field::NW_SRC, "10.0.0.0/33", true).unwrap_err();
        assert_eq!(e.token, "33");
        assert!(e.reason.contains("prefix"));
        let e = parse_field_value(Field::NW_PROTO, "6/0xff", true).unwrap_err();
        assert!(e.reason.contains("does not accept a mask"));
        let e = parse_field_value(Field::CT_STATE, "+trk+bogus", true).unwrap_err();
        assert_eq!(e.token, "bogus");
        let e = parse_field_value(Field::CT_STATE, "+trk+trk", true).unwrap_err();
        assert!(e.reason.contains("twice"));
        let e = parse_field_value(Field::DL_SRC, "00:11:22:33:44", true).unwrap_err();
        assert!(e.reason.contains("Ethernet"));
        let e = parse_field_value(Field::NW_TOS, "3", true).unwrap_err();
        assert!(e.reason.contains("low 2 bits"));
        let e = parse_field_value(Field::DL_VLAN, "4096", true).unwrap_err();
        assert!(e.reason.contains("12 bits"));
        let e = parse_field_value(Field::NW_FRAG, "maybe", true).unwrap_err();
        assert_eq!(e.token, "maybe");
    }

    #[test]
    fn flow_errors() {
        let e = parse_flow("tp_dst=80 actions=drop", FlowCmd::Add).unwrap_err();
        assert_eq!(e.token, "tp_dst=80");
        assert!(e.reason.contains("prerequisite"), "{e}");
        let e = parse_flow("ip,frob=1 actions=drop", FlowCmd::Add).unwrap_err();
        assert_eq!(e.token, "frob");
        assert!(e.reason.contains("unknown field"));
        let e = parse_flow("ip", FlowCmd::Add).unwrap_err();
        assert!(e.reason.contains("actions"));
        let e = parse_flow("ip,ipv6 actions=drop", FlowCmd::Add).unwrap_err();
        assert!(e.reason.contains("conflicts with earlier `ip`"), "{e}");
        let e = parse_flow("ip,nw_tos=16,ip_dscp=5 actions=drop", FlowCmd::Add).unwrap_err();
        assert_eq!(e.token, "ip_dscp=5");
        assert!(
            e.reason.contains("conflicts with earlier `nw_tos=16`"),
            "{e}"
        );
        let e = parse_flow("table=255 actions=drop", FlowCmd::Add).unwrap_err();
        assert!(e.reason.contains("0..254"));
        let e = parse_flow("cookie=1/1 actions=drop", FlowCmd::Add).unwrap_err();
        assert!(e.reason.contains("cookie mask"));
        let e = parse_flow("ip actions=resubmit(,2", FlowCmd::Add).unwrap_err();
        assert!(e.reason.contains("unbalanced"));
        let e = parse_flow("ip actions=drop", FlowCmd::Delete).unwrap_err();
        assert!(e.reason.contains("no actions"));
        assert!(
            parse_flow("tcp,tcp actions=drop", FlowCmd::Add).is_ok(),
            "repeating a shorthand is consistent"
        );
    }

    #[test]
    fn flow_options_and_stats_ignored() {
        let s = parse_flow(
            " cookie=0x5, duration=1.234s, table=3, n_packets=3, n_bytes=180, idle_timeout=10, idle_age=2, priority=100,ct_state=-trk,ip actions=ct(table=4,zone=5)",
            FlowCmd::Add,
        )
        .unwrap();
        assert_eq!(s.cookie, 5);
        assert_eq!(s.table, Some(TableId(3)));
        assert_eq!(s.priority, 100);
        assert_eq!(s.idle_timeout, 10);
        assert!(s.mtch.is_exact(Field::DL_TYPE, 0x800));
        assert_eq!(s.actions.len(), 1);
        let d = parse_flow("cookie=0x5/0xf,table=255,tcp", FlowCmd::Delete).unwrap();
        assert_eq!((d.cookie, d.cookie_mask, d.table), (5, 0xf, None));
    }

    #[test]
    fn dl_vlan_none_and_views() {
        let s = parse_flow("dl_vlan=0xffff actions=drop", FlowCmd::Add).unwrap();
        assert_eq!(s.mtch.get(Field::VLAN_TCI), (0, 0xffff));
        let s = parse_flow("dl_vlan=5,dl_vlan_pcp=3 actions=drop", FlowCmd::Add).unwrap();
        assert_eq!(
            s.mtch.get(Field::VLAN_TCI),
            (0x1000 | (3 << 13) | 5, 0xffff)
        );
    }

    #[test]
    fn split_top_respects_nesting() {
        assert_eq!(
            split_top("a,b(c,d),e[1,2]", ',').unwrap(),
            vec!["a", "b(c,d)", "e[1,2]"]
        );
        assert!(split_top("a)", ',').is_err());
    }
}
