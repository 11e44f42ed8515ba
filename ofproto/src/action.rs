//! OpenFlow actions: the representation, and for each action its parse,
//! format and check (consistency with the flow's match and table).
//!
//! Spellings follow `ovs-actions(7)`. Two ferrovs extensions:
//! * `notrack` marks the packet so that conntrack neither looks it up nor
//!   records it: a later `ct` returns it with `ct_state=+trk+untracked`
//!   (`untracked` is bit 0x100, see `ct::CtState`). OVS has `ct_clear` (forget
//!   the ct fields) but nothing that exempts a packet from tracking.
//! * `ct(timeout=POLICY)` names a timeout policy directly on the action. OVS
//!   attaches timeout policies to zones through its database instead.

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use crate::fields::{Field, PortNo, TableId};
use crate::matches::{prereq_text, Match};
use crate::text::format::{format_value, hex_bytes};
use crate::text::parse::{
    err, parse_field_value, parse_hex_bytes, parse_uint, split_top, ParseError,
};

/// A bit range of a field: `reg0[0..15]`, `ct_mark[]`, `NXM_NX_REG1[4]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubField {
    pub field: Field,
    pub ofs: u8,
    pub n_bits: u8,
}

impl SubField {
    /// The whole of `field`.
    pub fn whole(field: Field) -> SubField {
        SubField {
            field,
            ofs: 0,
            n_bits: field.info().slot.bits,
        }
    }
    /// Mask of this range inside the field's value.
    pub fn mask(&self) -> u128 {
        let ones = if self.n_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << self.n_bits) - 1
        };
        ones << self.ofs
    }
    pub fn is_whole(&self) -> bool {
        self.ofs == 0 && self.n_bits == self.field.info().slot.bits
    }

    /// Parse `FIELD[]`, `FIELD[N]`, `FIELD[A..B]` or a bare `FIELD`.
    pub fn parse(s: &str) -> Result<SubField, ParseError> {
        let (name, range) = match s.find('[') {
            Some(i) => {
                if !s.ends_with(']') {
                    return Err(err(s, "subfield is missing its closing `]`"));
                }
                (&s[..i], Some(&s[i + 1..s.len() - 1]))
            }
            None => (s, None),
        };
        let field = Field::by_name(name.trim()).ok_or_else(|| err(name, "unknown field"))?;
        let width = field.info().slot.bits as u32;
        let (ofs, end) = match range {
            None | Some("") => (0, width - 1),
            Some(r) => match r.split_once("..") {
                Some((a, b)) => {
                    let a =
                        parse_uint(a, 8).map_err(|_| err(s, "bad start bit in subfield"))? as u32;
                    let b = parse_uint(b, 8).map_err(|_| err(s, "bad end bit in subfield"))? as u32;
                    (a, b)
                }
                None => {
                    let a =
                        parse_uint(r, 8).map_err(|_| err(s, "bad bit index in subfield"))? as u32;
                    (a, a)
                }
            },
        };
        if ofs > end {
            return Err(err(s, "subfield start bit is after its end bit"));
        }
        if end >= width {
            return Err(err(
                s,
                &format!("bit {end} is beyond the {width}-bit field {}", field.name()),
            ));
        }
        Ok(SubField {
            field,
            ofs: ofs as u8,
            n_bits: (end - ofs + 1) as u8,
        })
    }
}

impl fmt::Display for SubField {
    /// `reg0[0..15]`, `ct_mark[]`, `reg1[4]`, in the modern spelling.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self
            .field
            .info()
            .aliases
            .iter()
            .find(|a| a.starts_with("NXM") || a.starts_with("OXM"));
        let name = name.copied().unwrap_or(self.field.name());
        if self.is_whole() {
            write!(f, "{name}[]")
        } else if self.n_bits == 1 {
            write!(f, "{name}[{}]", self.ofs)
        } else {
            write!(
                f,
                "{name}[{}..{}]",
                self.ofs,
                self.ofs as u32 + self.n_bits as u32 - 1
            )
        }
    }
}

/// `controller(...)`: send the packet to the control channel.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ControllerSpec {
    pub max_len: u16,
    /// `action` (default), `no_match`, `invalid_ttl`, ...
    pub reason: String,
    pub userdata: Vec<u8>,
}

impl Default for ControllerSpec {
    fn default() -> Self {
        ControllerSpec {
            max_len: u16::MAX,
            reason: "action".into(),
            userdata: Vec::new(),
        }
    }
}

/// The `zone=` of a ct action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CtZone {
    Imm(u16),
    /// Read from a 16-bit subfield when the action runs.
    Field(SubField),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CtAlg {
    Ftp,
    Tftp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NatKind {
    Src,
    Dst,
}

/// `nat` or `nat(src|dst=ADDR[-ADDR][:PORT[-PORT]][,persistent][,hash|random])`.
/// Parsed and carried; the NAT engine interprets it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Nat {
    /// None: plain `nat`, apply the NAT recorded in the connection.
    pub kind: Option<NatKind>,
    pub addrs: Option<(IpAddr, IpAddr)>,
    pub ports: Option<(u16, u16)>,
    pub persistent: bool,
    pub hash: bool,
    pub random: bool,
}

/// The `ct` action's parameters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CtAction {
    pub commit: bool,
    pub force: bool,
    pub zone: CtZone,
    /// Recirculate into this table after conntrack ran.
    pub table: Option<TableId>,
    /// Only set_field/load/move to ct_mark and ct_label.
    pub exec: Vec<Action>,
    pub alg: Option<CtAlg>,
    /// ferrovs extension: timeout policy name.
    pub timeout: Option<String>,
    pub nat: Option<Nat>,
}

impl Default for CtAction {
    fn default() -> Self {
        CtAction {
            commit: false,
            force: false,
            zone: CtZone::Imm(0),
            table: None,
            exec: Vec::new(),
            alg: None,
            timeout: None,
            nat: None,
        }
    }
}

/// One OpenFlow action (or the goto_table instruction).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// `output:PORT` (also NORMAL, FLOOD, ALL, LOCAL, IN_PORT and bare numbers).
    Output(PortNo),
    /// `output:FIELD[a..b]`: the port number is read from the packet's metadata.
    OutputReg(SubField),
    Controller(ControllerSpec),
    /// `drop`: an empty action list.
    Drop,
    /// `resubmit(PORT,TABLE[,ct])`; None means "this packet's in_port" / "this table".
    Resubmit {
        port: Option<PortNo>,
        table: Option<TableId>,
        ct: bool,
    },
    GotoTable(TableId),
    Ct(CtAction),
    CtClear,
    /// ferrovs extension, see the module docs.
    Notrack,
    /// `set_field:V[/M]->FIELD`.
    SetField {
        field: Field,
        value: u128,
        mask: u128,
    },
    /// `load:V->DST[a..b]`.
    Load {
        dst: SubField,
        value: u128,
    },
    /// `move:SRC[..]->DST[..]`.
    Move {
        src: SubField,
        dst: SubField,
    },
    /// `mod_dl_src`, `mod_nw_tos`, `mod_vlan_vid`...: the legacy setters.
    Mod {
        field: Field,
        value: u128,
    },
    /// `dec_ttl` or `dec_ttl(ID,...)`: the controller ids to notify when the
    /// TTL runs out (carried; ferrovs drops such packets).
    DecTtl(Vec<u16>),
    PushVlan(u16),
    /// `strip_vlan` / `pop_vlan`.
    PopVlan,
    Note(Vec<u8>),
}

const MOD_NAMES: [(&str, Field); 10] = [
    ("mod_dl_src", Field::DL_SRC),
    ("mod_dl_dst", Field::DL_DST),
    ("mod_nw_src", Field::NW_SRC),
    ("mod_nw_dst", Field::NW_DST),
    ("mod_nw_tos", Field::NW_TOS),
    ("mod_nw_ttl", Field::NW_TTL),
    ("mod_tp_src", Field::TP_SRC),
    ("mod_tp_dst", Field::TP_DST),
    ("mod_vlan_vid", Field::DL_VLAN),
    ("mod_vlan_pcp", Field::DL_VLAN_PCP),
];

/// Parse an `actions=` list. `drop` alone (or an empty list) means no actions.
pub fn parse_actions(s: &str) -> Result<Vec<Action>, ParseError> {
    let mut out = Vec::new();
    for tok in split_top(s, ',')? {
        let tok = tok.trim();
        if tok.is_empty() {
            // `actions=` alone is drop, and OVS skips empty list entries.
            continue;
        }
        let a = Action::parse(tok)?;
        if a == Action::Drop {
            continue;
        }
        out.push(a);
    }
    if s.trim().split(',').any(|t| t.trim() == "drop") && !out.is_empty() {
        return Err(err("drop", "`drop` must be the only action"));
    }
    Ok(out)
}

/// Print an action list the way dump-flows does (`drop` when empty).
pub fn format_actions(acts: &[Action]) -> String {
    if acts.is_empty() {
        return "drop".into();
    }
    let mut s = String::new();
    for (i, a) in acts.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{a}");
    }
    s
}

/// Check an action list against the flow it belongs to.
pub fn check_actions(acts: &[Action], m: &Match, table: TableId) -> Result<(), ParseError> {
    for (i, a) in acts.iter().enumerate() {
        if let Action::GotoTable(_) = a {
            if i + 1 != acts.len() {
                return Err(err(&a.to_string(), "goto_table must be the last action"));
            }
        }
        a.check(m, table)?;
    }
    Ok(())
}

/// Split `name:arg`, `name(arg)` or `name=arg`.
fn split_name(tok: &str) -> (&str, Option<&str>, bool) {
    let paren = tok.find('(');
    let colon = tok.find([':', '=']);
    match (paren, colon) {
        (Some(p), c) if c.is_none_or(|c| p < c) => {
            let inner = tok[p + 1..].strip_suffix(')');
            match inner {
                Some(inner) => (&tok[..p], Some(inner), true),
                None => (tok, None, false),
            }
        }
        (_, Some(c)) => (&tok[..c], Some(&tok[c + 1..]), false),
        _ => (tok, None, false),
    }
}

impl Action {
    /// Parse one action.
    pub fn parse(tok: &str) -> Result<Action, ParseError> {
        let (name, arg, paren) = split_name(tok);
        let lname = name.to_ascii_lowercase();
        let need = |what: &str| arg.ok_or_else(|| err(tok, &format!("`{name}` needs {what}")));
        let a = match lname.as_str() {
            "drop" if arg.is_none() => Action::Drop,
            "output" => {
                let p = need("a port")?;
                if p.contains('[') {
                    let sf = SubField::parse(p)?;
                    if sf.n_bits > 32 {
                        return Err(err(p, "output port subfield is wider than 32 bits"));
                    }
                    Action::OutputReg(sf)
                } else {
                    let port = PortNo::parse(p)
                        .ok_or_else(|| err(p, "not a port number or reserved port name"))?;
                    Action::port_action(port)
                }
            }
            "normal" | "flood" | "all" | "local" | "in_port" if arg.is_none() => {
                Action::port_action(PortNo::parse(&lname).expect("reserved names parse"))
            }
            "controller" => match arg {
                None => Action::Controller(ControllerSpec::default()),
                Some(a) if !paren => {
                    let n = parse_uint(a, 16)
                        .map_err(|e| err(a, &format!("controller max_len: {e}")))?;
                    Action::Controller(ControllerSpec {
                        max_len: n as u16,
                        ..Default::default()
                    })
                }
                Some(a) => Action::Controller(parse_controller(a)?),
            },
            "resubmit" => parse_resubmit(tok, need("a port or table")?, paren)?,
            "goto_table" => {
                let t = need("a table number")?;
                Action::GotoTable(parse_table(t)?)
            }
            "ct" => Action::Ct(parse_ct(arg.unwrap_or(""))?),
            "ct_clear" if arg.is_none() => Action::CtClear,
            "notrack" if arg.is_none() => Action::Notrack,
            "set_field" => {
                let a = need("`VALUE->FIELD`")?;
                let (v, f) = a
                    .split_once("->")
                    .ok_or_else(|| err(a, "set_field needs `VALUE->FIELD`"))?;
                let field = Field::by_name(f.trim()).ok_or_else(|| err(f, "unknown field"))?;
                let (value, mask) = parse_field_value(field, v.trim(), true)?;
                Action::SetField { field, value, mask }
            }
            "load" => {
                let a = need("`VALUE->DST[]`")?;
                let (v, d) = a
                    .split_once("->")
                    .ok_or_else(|| err(a, "load needs `VALUE->DST[]`"))?;
                let dst = SubField::parse(d.trim())?;
                let value =
                    parse_uint(v.trim(), 128).map_err(|e| err(v, &format!("load value: {e}")))?;
                if dst.n_bits < 128 && value >> dst.n_bits != 0 {
                    return Err(err(
                        v,
                        &format!(
                            "value does not fit in {} bits of {}",
                            dst.n_bits,
                            dst.field.name()
                        ),
                    ));
                }
                Action::Load { dst, value }
            }
            "move" => {
                let a = need("`SRC[]->DST[]`")?;
                let (s, d) = a
                    .split_once("->")
                    .ok_or_else(|| err(a, "move needs `SRC[]->DST[]`"))?;
                let src = SubField::parse(s.trim())?;
                let dst = SubField::parse(d.trim())?;
                if src.n_bits != dst.n_bits {
                    return Err(err(
                        a,
                        &format!(
                            "source is {} bits but destination is {}",
                            src.n_bits, dst.n_bits
                        ),
                    ));
                }
                Action::Move { src, dst }
            }
            "dec_ttl" if arg.is_none() => Action::DecTtl(Vec::new()),
            "dec_ttl" if paren => {
                let ids = arg
                    .unwrap_or("")
                    .split(',')
                    .map(|id| {
                        parse_uint(id.trim(), 16)
                            .map(|v| v as u16)
                            .map_err(|e| err(id, &format!("dec_ttl controller id: {e}")))
                    })
                    .collect::<Result<Vec<u16>, ParseError>>()?;
                Action::DecTtl(ids)
            }
            "push_vlan" => {
                let t = need("an ethertype")?;
                let tpid = parse_uint(t, 16)
                    .map_err(|e| err(t, &format!("push_vlan ethertype: {e}")))?
                    as u16;
                if tpid != 0x8100 && tpid != 0x88a8 {
                    return Err(err(t, "push_vlan ethertype must be 0x8100 or 0x88a8"));
                }
                Action::PushVlan(tpid)
            }
            "pop_vlan" | "strip_vlan" if arg.is_none() => Action::PopVlan,
            "note" => {
                let a = arg.unwrap_or("");
                Action::Note(parse_hex_bytes(a)?)
            }
            _ => {
                if let Some((_, field)) = MOD_NAMES.iter().find(|(n, _)| *n == lname) {
                    let v = need("a value")?;
                    let value = parse_mod_value(*field, v)?;
                    Action::Mod {
                        field: *field,
                        value,
                    }
                } else if arg.is_none()
                    && name.bytes().all(|b| b.is_ascii_digit())
                    && !name.is_empty()
                {
                    // A bare port number is an output action.
                    let p =
                        PortNo::parse(name).ok_or_else(|| err(name, "port number out of range"))?;
                    Action::Output(p)
                } else {
                    return Err(err(tok, "unknown action"));
                }
            }
        };
        Ok(a)
    }

    fn port_action(port: PortNo) -> Action {
        if port == PortNo::CONTROLLER {
            Action::Controller(ControllerSpec::default())
        } else {
            Action::Output(port)
        }
    }

    /// Check this action against the flow's match and table.
    pub fn check(&self, m: &Match, table: TableId) -> Result<(), ParseError> {
        let me = || self.to_string();
        match self {
            Action::GotoTable(t) => {
                if *t <= table {
                    return Err(err(
                        &me(),
                        &format!("goto_table must go to a later table than {table}"),
                    ));
                }
                if *t > TableId::MAX {
                    return Err(err(&me(), "table must be 0..254"));
                }
            }
            Action::Resubmit { table: Some(t), .. } if *t > TableId::MAX => {
                return Err(err(&me(), "table must be 0..254"));
            }
            Action::Resubmit { ct: true, .. } if !m.satisfies(crate::fields::Prereq::CtIp) => {
                return Err(err(
                    &me(),
                    "resubmit(...,ct) needs ip or ipv6 and a valid ct_state in the match",
                ));
            }
            Action::SetField { field, .. } | Action::Mod { field, .. } => {
                check_write(&me(), *field, m)?
            }
            Action::Load { dst, .. } => check_write(&me(), dst.field, m)?,
            Action::Move { src, dst } => {
                let p = src.field.info().prereq;
                if !m.satisfies(p) {
                    return Err(err(
                        &me(),
                        &format!(
                            "source {} needs {} in the match",
                            src.field.name(),
                            prereq_text(p)
                        ),
                    ));
                }
                check_write(&me(), dst.field, m)?;
            }
            Action::DecTtl(_) if !m.satisfies(crate::fields::Prereq::Ip) => {
                return Err(err(&me(), "dec_ttl needs ip or ipv6 in the match"));
            }
            Action::Ct(c) => {
                if !m.satisfies(crate::fields::Prereq::Ip) {
                    return Err(err(&me(), "ct needs ip or ipv6 in the match"));
                }
                if c.force && !c.commit {
                    return Err(err("force", "`force` requires `commit`"));
                }
                if !c.exec.is_empty() && !c.commit {
                    return Err(err("exec", "`exec` requires `commit`"));
                }
                if let Some(n) = &c.nat {
                    if n.kind.is_some() && !c.commit {
                        return Err(err("nat", "nat with an address range requires `commit`"));
                    }
                    if let Some((a, _)) = n.addrs {
                        let v4 = m.satisfies(crate::fields::Prereq::Ipv4);
                        if a.is_ipv4() != v4 {
                            return Err(err(
                                &a.to_string(),
                                "nat address family differs from the match's (ip vs ipv6)",
                            ));
                        }
                    }
                }
                match c.alg {
                    Some(CtAlg::Ftp) if !m.satisfies(crate::fields::Prereq::Tcp) => {
                        return Err(err("alg=ftp", "the FTP helper needs tcp in the match"));
                    }
                    Some(CtAlg::Tftp) if !m.satisfies(crate::fields::Prereq::Udp) => {
                        return Err(err("alg=tftp", "the TFTP helper needs udp in the match"));
                    }
                    _ => {}
                }
                if let Some(t) = c.table {
                    if t > TableId::MAX {
                        return Err(err(&me(), "table must be 0..254"));
                    }
                }
                for e in &c.exec {
                    let ok_dst = |f: Field| f == Field::CT_MARK || f == Field::CT_LABEL;
                    let ok = match e {
                        Action::SetField { field, .. } => ok_dst(*field),
                        Action::Load { dst, .. } => ok_dst(dst.field),
                        Action::Move { dst, .. } => ok_dst(dst.field),
                        _ => false,
                    };
                    if !ok {
                        return Err(err(
                            &e.to_string(),
                            "ct exec may only set ct_mark or ct_label",
                        ));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn check_write(tok: &str, f: Field, m: &Match) -> Result<(), ParseError> {
    let info = f.info();
    if !info.writable {
        return Err(err(tok, &format!("field {} is read-only", info.name)));
    }
    if f == Field::CT_MARK || f == Field::CT_LABEL {
        return Err(err(
            tok,
            &format!("{} may only be set inside ct(commit,exec(...))", info.name),
        ));
    }
    // VLAN setters push a header when there is none, so they need nothing.
    if f == Field::DL_VLAN || f == Field::DL_VLAN_PCP || f == Field::VLAN_TCI {
        return Ok(());
    }
    if !m.satisfies(info.prereq) {
        return Err(err(
            tok,
            &format!(
                "writing {} needs {} in the match",
                info.name,
                prereq_text(info.prereq)
            ),
        ));
    }
    Ok(())
}

fn parse_table(t: &str) -> Result<TableId, ParseError> {
    let n = parse_uint(t.trim(), 32).map_err(|e| err(t, &format!("table: {e}")))?;
    if n > 254 {
        return Err(err(t, "table must be 0..254"));
    }
    Ok(TableId(n as u8))
}

fn parse_mod_value(field: Field, v: &str) -> Result<u128, ParseError> {
    if field == Field::NW_TOS {
        let n = parse_uint(v, 8).map_err(|e| err(v, &format!("mod_nw_tos: {e}")))?;
        if n & 3 != 0 {
            return Err(err(v, "mod_nw_tos value must have its two ECN bits clear"));
        }
        return Ok(n >> 2);
    }
    let (val, _) = parse_field_value(field, v, false)?;
    Ok(val)
}

fn parse_resubmit(tok: &str, arg: &str, paren: bool) -> Result<Action, ParseError> {
    if !paren {
        let port = PortNo::parse(arg).ok_or_else(|| err(arg, "resubmit port is not a port"))?;
        return Ok(Action::Resubmit {
            port: Some(port),
            table: None,
            ct: false,
        });
    }
    let parts: Vec<&str> = arg.split(',').map(str::trim).collect();
    if parts.len() > 3 {
        return Err(err(tok, "resubmit takes at most (PORT,TABLE,ct)"));
    }
    let port = match parts[0] {
        "" => None,
        p => Some(PortNo::parse(p).ok_or_else(|| err(p, "resubmit port is not a port"))?),
    };
    let table = match parts.get(1).copied() {
        None | Some("") => None,
        Some(t) => Some(parse_table(t)?),
    };
    let ct = match parts.get(2).copied() {
        None => false,
        Some("ct") => true,
        Some(x) => return Err(err(x, "third resubmit argument may only be `ct`")),
    };
    if port.is_none() && table.is_none() {
        return Err(err(tok, "resubmit needs a port or a table"));
    }
    Ok(Action::Resubmit { port, table, ct })
}

fn parse_controller(a: &str) -> Result<ControllerSpec, ParseError> {
    let mut c = ControllerSpec::default();
    for kv in split_top(a, ',')? {
        let kv = kv.trim();
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "max_len" => {
                c.max_len = parse_uint(v, 16).map_err(|e| err(kv, &format!("max_len: {e}")))? as u16
            }
            "reason" => {
                const REASONS: [&str; 6] = [
                    "action",
                    "no_match",
                    "invalid_ttl",
                    "action_set",
                    "group",
                    "packet_out",
                ];
                if !REASONS.contains(&v) {
                    return Err(err(v, "unknown controller reason"));
                }
                c.reason = v.to_string();
            }
            "userdata" => c.userdata = parse_hex_bytes(v)?,
            "id" => {
                parse_uint(v, 16).map_err(|e| err(kv, &format!("controller id: {e}")))?;
            }
            _ => return Err(err(kv, "unknown controller argument")),
        }
    }
    Ok(c)
}

fn parse_ct(a: &str) -> Result<CtAction, ParseError> {
    let mut c = CtAction::default();
    for kv in split_top(a, ',')? {
        let kv = kv.trim();
        if kv.is_empty() {
            continue;
        }
        let (name, arg, paren) = split_name(kv);
        match (name, arg) {
            ("commit", None) => c.commit = true,
            ("force", None) => c.force = true,
            ("zone", Some(z)) => {
                c.zone = if z.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
                    let n = parse_uint(z, 16).map_err(|e| err(z, &format!("ct zone: {e}")))?;
                    CtZone::Imm(n as u16)
                } else {
                    let sf = SubField::parse(z)?;
                    if sf.n_bits != 16 {
                        return Err(err(z, "ct zone subfield must be 16 bits wide"));
                    }
                    CtZone::Field(sf)
                };
            }
            ("table", Some(t)) => c.table = Some(parse_table(t)?),
            ("exec", Some(e)) if paren => c.exec = parse_actions(e)?,
            ("alg", Some(v)) => {
                c.alg = Some(match v {
                    "ftp" => CtAlg::Ftp,
                    "tftp" => CtAlg::Tftp,
                    _ => return Err(err(v, "ct alg must be ftp or tftp")),
                })
            }
            ("timeout", Some(v)) => {
                if v.is_empty()
                    || !v
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    return Err(err(
                        v,
                        "timeout policy name must be letters, digits, `_` or `-`",
                    ));
                }
                c.timeout = Some(v.to_string());
            }
            ("nat", _) if c.nat.is_some() => {
                return Err(err(
                    kv,
                    "ct takes one nat (OVS would nest the second one oddly)",
                ))
            }
            ("nat", None) => c.nat = Some(Nat::default()),
            ("nat", Some(n)) if paren => c.nat = Some(parse_nat(n)?),
            _ => return Err(err(kv, "unknown ct argument")),
        }
    }
    Ok(c)
}

fn parse_nat(s: &str) -> Result<Nat, ParseError> {
    let mut n = Nat::default();
    for kv in split_top(s, ',')? {
        let kv = kv.trim();
        match kv.split_once('=') {
            Some((k @ ("src" | "dst"), v)) => {
                if n.kind.is_some() {
                    return Err(err(kv, "nat takes only one of src= and dst="));
                }
                n.kind = Some(if k == "src" {
                    NatKind::Src
                } else {
                    NatKind::Dst
                });
                let (addrs, ports) = parse_nat_range(v)?;
                n.addrs = Some(addrs);
                n.ports = ports;
            }
            None if kv == "persistent" => n.persistent = true,
            None if kv == "hash" => n.hash = true,
            None if kv == "random" => n.random = true,
            _ => return Err(err(kv, "unknown nat argument")),
        }
    }
    if n.hash && n.random {
        return Err(err(s, "nat flags hash and random are mutually exclusive"));
    }
    Ok(n)
}

fn parse_ip(s: &str) -> Result<IpAddr, ParseError> {
    s.parse::<IpAddr>().map_err(|_| err(s, "not an IP address"))
}

type NatRange = ((IpAddr, IpAddr), Option<(u16, u16)>);

/// `A[-B][:P[-Q]]`, IPv6 addresses in brackets when ports follow.
fn parse_nat_range(v: &str) -> Result<NatRange, ParseError> {
    let (addr_part, port_part): (String, Option<&str>) = if v.starts_with('[') {
        // `[a]`, `[a]-[b]`, then optionally `:ports`.
        let last = v
            .rfind(']')
            .ok_or_else(|| err(v, "missing `]` in IPv6 nat address"))?;
        let rest = &v[last + 1..];
        let ports = if rest.is_empty() {
            None
        } else {
            Some(
                rest.strip_prefix(':')
                    .ok_or_else(|| err(rest, "unexpected text after nat address"))?,
            )
        };
        (v[..=last].replace(['[', ']'], ""), ports)
    } else if v.matches(':').count() > 1 {
        (v.to_string(), None) // bare IPv6 address(es), no ports
    } else {
        match v.split_once(':') {
            Some((a, p)) => (a.to_string(), Some(p)),
            None => (v.to_string(), None),
        }
    };
    let (a, b) = match addr_part.split_once('-') {
        Some((a, b)) => (parse_ip(a)?, parse_ip(b)?),
        None => {
            let a = parse_ip(&addr_part)?;
            (a, a)
        }
    };
    if a.is_ipv4() != b.is_ipv4() {
        return Err(err(v, "nat range mixes IPv4 and IPv6"));
    }
    if a > b {
        return Err(err(v, "nat address range is backwards"));
    }
    let ports = match port_part {
        None => None,
        Some(p) => {
            let (lo, hi) = p.split_once('-').unwrap_or((p, p));
            let lo = parse_uint(lo, 16).map_err(|e| err(p, &format!("nat port: {e}")))? as u16;
            let hi = parse_uint(hi, 16).map_err(|e| err(p, &format!("nat port: {e}")))? as u16;
            if lo > hi {
                return Err(err(p, "nat port range is backwards"));
            }
            Some((lo, hi))
        }
    };
    Ok(((a, b), ports))
}

impl fmt::Display for Nat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(kind) = self.kind else {
            return f.write_str("nat");
        };
        f.write_str(if kind == NatKind::Src {
            "nat(src="
        } else {
            "nat(dst="
        })?;
        if let Some((a, b)) = self.addrs {
            let br = a.is_ipv6() && self.ports.is_some();
            let w = |f: &mut fmt::Formatter<'_>, ip: IpAddr| {
                if br {
                    write!(f, "[{ip}]")
                } else {
                    write!(f, "{ip}")
                }
            };
            w(f, a)?;
            if b != a {
                f.write_str("-")?;
                w(f, b)?;
            }
        }
        if let Some((lo, hi)) = self.ports {
            write!(f, ":{lo}")?;
            if hi != lo {
                write!(f, "-{hi}")?;
            }
        }
        if self.persistent {
            f.write_str(",persistent")?;
        }
        if self.hash {
            f.write_str(",hash")?;
        }
        if self.random {
            f.write_str(",random")?;
        }
        f.write_str(")")
    }
}

impl fmt::Display for CtAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if self.commit {
            parts.push("commit".into());
        }
        if self.force {
            parts.push("force".into());
        }
        if let Some(t) = self.table {
            parts.push(format!("table={t}"));
        }
        match self.zone {
            CtZone::Imm(0) => {}
            CtZone::Imm(z) => parts.push(format!("zone={z}")),
            CtZone::Field(sf) => parts.push(format!("zone={sf}")),
        }
        if !self.exec.is_empty() {
            parts.push(format!("exec({})", format_actions(&self.exec)));
        }
        if let Some(n) = &self.nat {
            parts.push(n.to_string());
        }
        match self.alg {
            Some(CtAlg::Ftp) => parts.push("alg=ftp".into()),
            Some(CtAlg::Tftp) => parts.push("alg=tftp".into()),
            None => {}
        }
        if let Some(t) = &self.timeout {
            parts.push(format!("timeout={t}"));
        }
        write!(f, "ct({})", parts.join(","))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Output(p) => match p.reserved_name() {
                Some(n) if *p != PortNo::ANY && *p != PortNo::TABLE => f.write_str(n),
                _ => write!(f, "output:{}", p.0),
            },
            Action::OutputReg(sf) => write!(f, "output:{sf}"),
            Action::Controller(c) => {
                if c.reason == "action" && c.userdata.is_empty() {
                    write!(f, "CONTROLLER:{}", c.max_len)
                } else {
                    write!(f, "controller(reason={}", c.reason)?;
                    if c.max_len != u16::MAX {
                        write!(f, ",max_len={}", c.max_len)?;
                    }
                    if !c.userdata.is_empty() {
                        write!(f, ",userdata={}", hex_bytes(&c.userdata))?;
                    }
                    f.write_str(")")
                }
            }
            Action::Drop => f.write_str("drop"),
            Action::Resubmit { port, table, ct } => {
                if let (Some(p), None, false) = (port, table, ct) {
                    return write!(f, "resubmit:{p}");
                }
                f.write_str("resubmit(")?;
                if let Some(p) = port {
                    write!(f, "{p}")?;
                }
                f.write_str(",")?;
                if let Some(t) = table {
                    write!(f, "{t}")?;
                }
                if *ct {
                    f.write_str(",ct")?;
                }
                f.write_str(")")
            }
            Action::GotoTable(t) => write!(f, "goto_table:{t}"),
            Action::Ct(c) => write!(f, "{c}"),
            Action::CtClear => f.write_str("ct_clear"),
            Action::Notrack => f.write_str("notrack"),
            Action::SetField { field, value, mask } => {
                let ones = field.info().slot.ones();
                let v = format_value(*field, *value);
                if *mask == ones {
                    write!(f, "set_field:{v}->{}", field.name())
                } else {
                    write!(
                        f,
                        "set_field:{v}/{}->{}",
                        format_value(*field, *mask),
                        field.name()
                    )
                }
            }
            Action::Load { dst, value } => {
                write!(f, "load:{}->{dst}", crate::text::format::hex(*value))
            }
            Action::Move { src, dst } => write!(f, "move:{src}->{dst}"),
            Action::Mod { field, value } => {
                let name = MOD_NAMES
                    .iter()
                    .find(|(_, fl)| fl == field)
                    .map(|(n, _)| *n)
                    .unwrap_or("mod");
                if *field == Field::NW_TOS {
                    write!(f, "{name}:{}", value << 2)
                } else {
                    write!(f, "{name}:{}", format_value(*field, *value))
                }
            }
            Action::DecTtl(ids) if ids.is_empty() => f.write_str("dec_ttl"),
            Action::DecTtl(ids) => {
                let ids: Vec<String> = ids.iter().map(u16::to_string).collect();
                write!(f, "dec_ttl({})", ids.join(","))
            }
            Action::PushVlan(t) => write!(f, "push_vlan:{t:#06x}"),
            Action::PopVlan => f.write_str("strip_vlan"),
            Action::Note(b) => write!(f, "note:{}", hex_bytes(b)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(s: &str) -> String {
        let a = parse_actions(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        let printed = format_actions(&a);
        let again = parse_actions(&printed).unwrap_or_else(|e| panic!("reparse {printed}: {e}"));
        assert_eq!(a, again, "round trip of {s} via {printed}");
        printed
    }

    #[test]
    fn output_family() {
        assert_eq!(rt("output:3"), "output:3");
        assert_eq!(rt("3"), "output:3");
        assert_eq!(
            rt("normal,FLOOD,all,LOCAL,in_port"),
            "NORMAL,FLOOD,ALL,LOCAL,IN_PORT"
        );
        assert_eq!(rt("output:controller"), "CONTROLLER:65535");
        assert_eq!(rt("drop"), "drop");
        assert_eq!(rt("output:reg0[0..15]"), "output:NXM_NX_REG0[0..15]");
        assert!(parse_actions("output:xreg0[]")
            .unwrap_err()
            .to_string()
            .contains("32 bits"));
        assert!(parse_actions("drop,output:1").is_err());
        assert_eq!(rt(""), "drop");
        assert_eq!(rt("drop,drop"), "drop");
        assert_eq!(rt("output:1,,output:2"), "output:1,output:2");
        assert!(parse_actions("output:eth0")
            .unwrap_err()
            .to_string()
            .contains("eth0"));
    }

    #[test]
    fn controller() {
        assert_eq!(rt("controller"), "CONTROLLER:65535");
        assert_eq!(rt("controller:100"), "CONTROLLER:100");
        assert_eq!(
            rt("controller(reason=no_match,userdata=01.02,max_len=123)"),
            "controller(reason=no_match,max_len=123,userdata=01.02)"
        );
        assert!(parse_actions("controller(reason=bogus)")
            .unwrap_err()
            .to_string()
            .contains("bogus"));
    }

    #[test]
    fn resubmit_forms() {
        assert_eq!(rt("resubmit(,2)"), "resubmit(,2)");
        assert_eq!(rt("resubmit(1,3)"), "resubmit(1,3)");
        assert_eq!(rt("resubmit:4"), "resubmit:4");
        assert_eq!(rt("resubmit(4)"), "resubmit:4");
        assert_eq!(rt("resubmit(,2,ct)"), "resubmit(,2,ct)");
        assert!(parse_actions("resubmit(,300)")
            .unwrap_err()
            .to_string()
            .contains("300"));
        assert!(parse_actions("resubmit(,)").is_err());
        assert!(
            parse_actions("resubmit(x,1)")
                .unwrap_err()
                .to_string()
                .contains("`x`")
                || parse_actions("resubmit(x,1)").is_err()
        );
        assert!(parse_actions("resubmit(1,2,foo)")
            .unwrap_err()
            .to_string()
            .contains("foo"));
    }

    #[test]
    fn ct_forms() {
        assert_eq!(rt("ct(table=1,zone=5)"), "ct(table=1,zone=5)");
        assert_eq!(rt("ct(zone=5,table=1)"), "ct(table=1,zone=5)");
        assert_eq!(
            rt("ct(commit,zone=NXM_NX_REG0[0..15],exec(set_field:0x1->ct_mark,load:0x1->NXM_NX_CT_LABEL[0..3]),alg=ftp,timeout=tp1)"),
            "ct(commit,zone=NXM_NX_REG0[0..15],exec(set_field:0x1->ct_mark,load:0x1->NXM_NX_CT_LABEL[0..3]),alg=ftp,timeout=tp1)"
        );
        assert_eq!(rt("ct(nat)"), "ct(nat)");
        assert_eq!(
            rt("ct(commit,nat(src=10.0.0.1-10.0.0.5:1000-2000,random))"),
            "ct(commit,nat(src=10.0.0.1-10.0.0.5:1000-2000,random))"
        );
        assert_eq!(
            rt("ct(commit,nat(dst=[fe80::1]-[fe80::5]:80-90,hash,persistent))"),
            "ct(commit,nat(dst=[fe80::1]-[fe80::5]:80-90,persistent,hash))"
        );
        assert_eq!(
            rt("ct(commit,nat(dst=fe80::1))"),
            "ct(commit,nat(dst=fe80::1))"
        );
        assert!(parse_actions("ct(zone=70000)")
            .unwrap_err()
            .to_string()
            .contains("70000"));
        assert!(parse_actions("ct(zone=reg0[0..7])")
            .unwrap_err()
            .to_string()
            .contains("16 bits"));
        assert!(parse_actions("ct(alg=sip)")
            .unwrap_err()
            .to_string()
            .contains("sip"));
        assert!(parse_actions("ct(bogus)")
            .unwrap_err()
            .to_string()
            .contains("bogus"));
        assert!(parse_actions("ct(nat(src=10.0.0.5-10.0.0.1))")
            .unwrap_err()
            .to_string()
            .contains("backwards"));
        assert!(parse_actions("ct(nat(src=10.0.0.1,hash,random))").is_err());
        assert!(
            parse_actions("ct(commit,nat(src=10.0.0.1),nat(dst=10.0.0.2))")
                .unwrap_err()
                .to_string()
                .contains("one nat")
        );
    }

    #[test]
    fn ct_checks() {
        let mut ip = Match::default();
        ip.set_exact(Field::DL_TYPE, 0x0800);
        let t0 = TableId(0);
        let chk = |s: &str, m: &Match| check_actions(&parse_actions(s).unwrap(), m, t0);
        assert!(chk("ct(commit)", &ip).is_ok());
        assert!(chk("ct(commit)", &Match::default())
            .unwrap_err()
            .to_string()
            .contains("ip"));
        assert!(chk("ct(force)", &ip)
            .unwrap_err()
            .to_string()
            .contains("commit"));
        assert!(chk("ct(exec(set_field:1->ct_mark))", &ip).is_err());
        assert!(chk("ct(commit,exec(set_field:1->reg0))", &ip)
            .unwrap_err()
            .to_string()
            .contains("ct_mark"));
        assert!(chk("ct(nat(src=10.0.0.1))", &ip).is_err());
        assert!(chk("ct(commit,nat(src=fe80::1))", &ip)
            .unwrap_err()
            .to_string()
            .contains("family"));
        assert!(chk("ct(nat)", &ip).is_ok());
        let mut tcp = ip;
        tcp.set_exact(Field::NW_PROTO, 6);
        let mut udp = ip;
        udp.set_exact(Field::NW_PROTO, 17);
        assert!(chk("ct(commit,alg=ftp)", &ip)
            .unwrap_err()
            .to_string()
            .contains("tcp"));
        assert!(chk("ct(commit,alg=ftp)", &tcp).is_ok());
        assert!(chk("ct(commit,alg=tftp)", &tcp)
            .unwrap_err()
            .to_string()
            .contains("udp"));
        assert!(chk("ct(commit,alg=tftp)", &udp).is_ok());
    }

    #[test]
    fn field_writers() {
        assert_eq!(
            rt("set_field:10.0.0.1->nw_dst"),
            "set_field:10.0.0.1->nw_dst"
        );
        assert_eq!(rt("set_field:0x1/0xf->reg1"), "set_field:0x1/0xf->reg1");
        assert_eq!(rt("load:5->reg2[0..7]"), "load:0x5->NXM_NX_REG2[0..7]");
        assert_eq!(rt("load:1->reg2[3]"), "load:0x1->NXM_NX_REG2[3]");
        assert_eq!(
            rt("move:reg0[0..3]->NXM_NX_REG1[4..7]"),
            "move:NXM_NX_REG0[0..3]->NXM_NX_REG1[4..7]"
        );
        assert!(parse_actions("load:0x100->reg0[0..7]")
            .unwrap_err()
            .to_string()
            .contains("fit"));
        assert!(parse_actions("move:reg0[0..3]->reg1[0..4]")
            .unwrap_err()
            .to_string()
            .contains("bits"));
        assert!(parse_actions("load:1->reg0[5..40]")
            .unwrap_err()
            .to_string()
            .contains("beyond"));
        assert!(parse_actions("load:1->nosuch[]")
            .unwrap_err()
            .to_string()
            .contains("nosuch"));
        assert!(parse_actions("set_field:1->bogus")
            .unwrap_err()
            .to_string()
            .contains("bogus"));
    }

    #[test]
    fn legacy_setters_and_vlan() {
        assert_eq!(
            rt("mod_dl_src:00:00:00:00:00:01,mod_nw_src:1.2.3.4,mod_nw_tos:8,mod_tp_dst:5,dec_ttl"),
            "mod_dl_src:00:00:00:00:00:01,mod_nw_src:1.2.3.4,mod_nw_tos:8,mod_tp_dst:5,dec_ttl"
        );
        assert_eq!(
            rt("push_vlan:0x8100,mod_vlan_vid:5,mod_vlan_pcp:3,pop_vlan"),
            "push_vlan:0x8100,mod_vlan_vid:5,mod_vlan_pcp:3,strip_vlan"
        );
        assert!(parse_actions("mod_nw_tos:3")
            .unwrap_err()
            .to_string()
            .contains("ECN"));
        assert!(parse_actions("mod_vlan_vid:5000").is_err());
        assert!(parse_actions("push_vlan:0x800")
            .unwrap_err()
            .to_string()
            .contains("0x800"));
        assert_eq!(rt("note:01.02.03"), "note:01.02.03");
        assert_eq!(
            rt("dec_ttl(1,2),dec_ttl(5),dec_ttl"),
            "dec_ttl(1,2),dec_ttl(5),dec_ttl"
        );
        assert!(parse_actions("dec_ttl(x)")
            .unwrap_err()
            .to_string()
            .contains("`x`"));
        assert_eq!(rt("mod_nw_ttl:5"), "mod_nw_ttl:5");
        assert!(parse_actions("mod_nw_ttl:256").is_err());
        assert_eq!(rt("ct_clear,notrack"), "ct_clear,notrack");
    }

    #[test]
    fn write_checks() {
        let mut ip = Match::default();
        ip.set_exact(Field::DL_TYPE, 0x0800);
        let chk =
            |s: &str, m: &Match, t: u8| check_actions(&parse_actions(s).unwrap(), m, TableId(t));
        assert!(chk("mod_tp_dst:5", &ip, 0)
            .unwrap_err()
            .to_string()
            .contains("tp_dst"));
        let mut tcp = ip;
        tcp.set_exact(Field::NW_PROTO, 6);
        assert!(chk("mod_tp_dst:5", &tcp, 0).is_ok());
        assert!(chk("set_field:1->ct_state", &tcp, 0)
            .unwrap_err()
            .to_string()
            .contains("read-only"));
        assert!(chk("goto_table:1", &ip, 1)
            .unwrap_err()
            .to_string()
            .contains("later"));
        assert!(chk("goto_table:2,output:1", &ip, 1)
            .unwrap_err()
            .to_string()
            .contains("last"));
        assert!(chk("output:1,goto_table:2", &ip, 1).is_ok());
        assert!(chk("dec_ttl", &Match::default(), 0).is_err());
        assert!(chk("mod_vlan_vid:5", &Match::default(), 0).is_ok());
        assert!(chk("set_field:1->ct_mark", &ip, 0)
            .unwrap_err()
            .to_string()
            .contains("inside ct"));
        assert!(chk("load:1->NXM_NX_CT_LABEL[0]", &ip, 0).is_err());
        assert!(
            chk("move:NXM_OF_IP_SRC[]->NXM_NX_REG0[]", &Match::default(), 0)
                .unwrap_err()
                .to_string()
                .contains("source nw_src")
        );
    }

    #[test]
    fn every_action_variant_parses_prints_and_round_trips() {
        let examples = [
            "output:7",
            "output:NXM_NX_REG1[0..15]",
            "controller(reason=invalid_ttl,max_len=64,userdata=aa)",
            "resubmit(3,4,ct)",
            "goto_table:9",
            "ct(commit,force,table=3,zone=NXM_NX_REG5[16..31],exec(move:NXM_NX_REG0[]->NXM_NX_CT_MARK[]),nat(src=10.0.0.1:1-2),alg=tftp,timeout=t1)",
            "ct_clear",
            "notrack",
            "set_field:fe80::1->ipv6_src",
            "load:0x3->NXM_NX_CT_LABEL[126..127]",
            "move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[]",
            "mod_tp_src:1",
            "dec_ttl(1)",
            "push_vlan:0x88a8",
            "strip_vlan",
            "note:00",
        ];
        let mut seen = std::collections::BTreeSet::new();
        for ex in examples {
            let printed = rt(ex);
            assert_eq!(printed, ex, "printing is the canonical spelling");
            let a = parse_actions(ex).unwrap().remove(0);
            // Exhaustive on purpose: a new variant must get an example here.
            let kind = match a {
                Action::Output(_) => "output",
                Action::OutputReg(_) => "output_reg",
                Action::Controller(_) => "controller",
                Action::Drop => "drop",
                Action::Resubmit { .. } => "resubmit",
                Action::GotoTable(_) => "goto_table",
                Action::Ct(_) => "ct",
                Action::CtClear => "ct_clear",
                Action::Notrack => "notrack",
                Action::SetField { .. } => "set_field",
                Action::Load { .. } => "load",
                Action::Move { .. } => "move",
                Action::Mod { .. } => "mod",
                Action::DecTtl(_) => "dec_ttl",
                Action::PushVlan(_) => "push_vlan",
                Action::PopVlan => "pop_vlan",
                Action::Note(_) => "note",
            };
            seen.insert(kind);
        }
        // `drop` is the empty list, printed as such.
        assert_eq!(rt("drop"), "drop");
        assert_eq!(seen.len(), 16, "{seen:?}");
    }

    #[test]
    fn unknown_action_names_token() {
        let e = parse_actions("output:1,frobnicate").unwrap_err();
        assert!(e.to_string().contains("frobnicate"), "{e}");
        assert!(e.to_string().contains("unknown action"), "{e}");
    }
}
