//! Translation: packet metadata in, a datapath action program and the
//! consulted-field mask out. This is what the datapath calls on a megaflow
//! miss (an "upcall"); it may allocate, the per-packet path does not.
//!
//! # Semantics
//!
//! * Processing starts in table 0, or, for a recirculated packet
//!   (`recirc_id != 0`), in the table the `ct(table=N)` named: ferrovs encodes
//!   that table directly as `recirc_id = N + 1`, so no recirculation state
//!   needs to be stored. Registers and `metadata` travel with the packet: the
//!   program's [`DpAction::Set`] actions write them too, and the datapath keeps
//!   them in the packet's metadata across recirculation.
//! * A table miss drops (the OpenFlow 1.3 default).
//! * `resubmit` runs another table and comes back; nesting is bounded at
//!   [`MAX_DEPTH`] (64) and the total number of resubmits at
//!   [`MAX_RESUBMITS`]. Re-entering the same rule with identical metadata is a
//!   loop: translation stops, the packet is dropped and the error is reported.
//! * `ct` (OVS semantics, `ovs-actions(7)`): with `table=N` the packet is
//!   forked: a copy goes through conntrack and then through table N with the
//!   ct fields set ([`DpAction::Ct`] with `recirc`); the original carries on
//!   with the remaining actions. Either way, after the ct action the current
//!   pass sees the packet as untracked: its ct fields are cleared.
//! * `notrack` (ferrovs extension) emits [`DpAction::Notrack`]: the datapath
//!   marks the packet so that every later ct (in this pass or after a
//!   recirculation) neither looks it up nor records it and reports
//!   `+trk+untracked`; `ct_clear` removes the mark.
//! * Output to the packet's own input port is skipped unless it is spelled
//!   `in_port`, as OpenFlow requires.

use std::fmt;
use std::sync::Arc;

use crate::action::{Action, ControllerSpec, CtAction, CtAlg, CtZone, Nat};
use crate::fields::{Field, FlowKey, FlowMask, PortNo, TableId};
use crate::pipeline::Pipeline;
use crate::table::{Rule, Tables};
use crate::text::format::{format_key, format_match, format_value, hex};

/// Maximum resubmit nesting.
pub const MAX_DEPTH: usize = 64;
/// Maximum resubmits in one translation (guards against exponential fan-out).
pub const MAX_RESUBMITS: usize = 4096;

/// The ct parameters the datapath hands to conntrack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpCt {
    pub zone: u16,
    pub commit: bool,
    pub force: bool,
    /// (value, mask) to apply to ct_mark on commit.
    pub mark: Option<(u32, u32)>,
    /// (value, mask) to apply to ct_label on commit.
    pub label: Option<(u128, u128)>,
    pub alg: Option<CtAlg>,
    pub timeout: Option<Arc<str>>,
    pub nat: Option<Nat>,
    /// Fork and recirculate with this `recirc_id` (table + 1) after conntrack.
    pub recirc: Option<u32>,
}

/// One step of the datapath program, executed in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DpAction {
    Output(PortNo),
    /// Write `value` into the bits `mask` of `field` (headers or metadata).
    Set {
        field: Field,
        value: u128,
        mask: u128,
    },
    PushVlan {
        tpid: u16,
    },
    PopVlan,
    /// Boxed, like `Controller`, to keep every step at 48 bytes.
    Ct(Box<DpCt>),
    CtClear,
    Notrack,
    /// Queue the packet for the control channel.
    Controller(Box<ControllerSpec>),
}

impl fmt::Display for DpAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DpAction::Output(p) => write!(f, "{p}"),
            DpAction::Set { field, value, mask } => {
                if *mask == field.info().slot.ones() {
                    write!(f, "set({}={})", field.name(), format_value(*field, *value))
                } else {
                    write!(
                        f,
                        "set({}={}/{})",
                        field.name(),
                        format_value(*field, *value),
                        format_value(*field, *mask)
                    )
                }
            }
            DpAction::PushVlan { tpid } => write!(f, "push_vlan(tpid={tpid:#06x})"),
            DpAction::PopVlan => f.write_str("pop_vlan"),
            DpAction::Ct(c) => {
                let mut p = Vec::new();
                if c.commit {
                    p.push("commit".to_string());
                }
                if c.force {
                    p.push("force".to_string());
                }
                p.push(format!("zone={}", c.zone));
                if let Some((v, m)) = c.mark {
                    p.push(format!("mark={}/{}", hex(v as u128), hex(m as u128)));
                }
                if let Some((v, m)) = c.label {
                    p.push(format!("label={}/{}", hex(v), hex(m)));
                }
                if let Some(a) = c.alg {
                    p.push(format!(
                        "helper={}",
                        if a == CtAlg::Ftp { "ftp" } else { "tftp" }
                    ));
                }
                if let Some(t) = &c.timeout {
                    p.push(format!("timeout={t}"));
                }
                if let Some(n) = &c.nat {
                    p.push(n.to_string());
                }
                write!(f, "ct({})", p.join(","))?;
                if let Some(r) = c.recirc {
                    write!(f, ",recirc({r:#x})")?;
                }
                Ok(())
            }
            DpAction::CtClear => f.write_str("ct_clear"),
            DpAction::Notrack => f.write_str("notrack"),
            DpAction::Controller(c) => write!(
                f,
                "userspace(controller,reason={},max_len={})",
                c.reason, c.max_len
            ),
        }
    }
}

/// Format a program as `Datapath actions:` shows it.
pub fn format_program(p: &[DpAction]) -> String {
    if p.is_empty() {
        return "drop".into();
    }
    p.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Why translation stopped early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XlateError {
    TooDeep,
    TooManyResubmits,
    Loop { table: TableId, priority: u16 },
}

impl fmt::Display for XlateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XlateError::TooDeep => write!(f, "resubmit nesting exceeded {MAX_DEPTH}"),
            XlateError::TooManyResubmits => write!(f, "more than {MAX_RESUBMITS} resubmits"),
            XlateError::Loop { table, priority } => {
                write!(f, "resubmit loop: table {table} priority {priority} re-entered with identical metadata")
            }
        }
    }
}

/// Why a translation produced an empty program (for the datapath's drop
/// counters: every drop has a reason).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The last table looked up had no matching rule.
    TableMiss(TableId),
    /// `dec_ttl` on a packet whose TTL/hop limit was 0 or 1.
    TtlExpired,
    /// Translation was aborted.
    Error(XlateError),
    /// The rules ran but sent the packet nowhere (`drop`, or no output).
    NoOutput,
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::TableMiss(t) => write!(f, "table {t} miss"),
            DropReason::TtlExpired => f.write_str("TTL expired"),
            DropReason::Error(e) => write!(f, "{e}"),
            DropReason::NoOutput => f.write_str("no output action"),
        }
    }
}

/// The result of translating one packet.
#[derive(Debug, Default)]
pub struct Xlate {
    /// The program; empty means drop.
    pub actions: Vec<DpAction>,
    /// Every key bit translation depended on (the megaflow mask).
    pub wc: FlowMask,
    /// Rules that matched, for crediting statistics.
    pub rules: Vec<Arc<Rule>>,
    /// Metadata at each forked ct(table=): the packet conntrack will see.
    pub recirc_keys: Vec<(FlowKey, DpCt)>,
    pub error: Option<XlateError>,
    /// Set when `actions` is empty.
    pub drop_reason: Option<DropReason>,
    /// The metadata as the pipeline left it (after writes, with ct fields
    /// cleared by any ct action).
    pub final_key: FlowKey,
    /// Human-readable trace, when asked for.
    pub trace: Vec<String>,
}

impl Xlate {
    /// Credit datapath statistics to every rule this translation used.
    pub fn credit(&self, packets: u64, bytes: u64, now_ms: u64) {
        for r in &self.rules {
            r.credit(packets, bytes, now_ms);
        }
    }
}

struct Ctx<'a> {
    tables: &'a Tables,
    env: &'a Pipeline,
    key: FlowKey,
    out: Xlate,
    depth: usize,
    resubmits: usize,
    /// (rule seq, metadata) on the current resubmit path, for loop detection.
    stack: Vec<(u64, FlowKey)>,
    tracing: bool,
    stop: bool,
    /// The last table that missed, and whether TTL expiry stopped us.
    last_miss: Option<TableId>,
    ttl_expired: bool,
    now_ms: u64,
}

/// Translate `key` through `env`'s tables.
pub fn xlate(env: &Pipeline, tables: &Tables, key: &FlowKey, now_ms: u64, trace: bool) -> Xlate {
    let mut cx = Ctx {
        tables,
        env,
        key: *key,
        out: Xlate::default(),
        depth: 0,
        resubmits: 0,
        stack: Vec::new(),
        tracing: trace,
        stop: false,
        last_miss: None,
        ttl_expired: false,
        now_ms,
    };
    cx.out.wc.set_exact(Field::RECIRC_ID);
    let recirc = key.get(Field::RECIRC_ID) as u32;
    let start = if recirc == 0 {
        TableId(0)
    } else {
        TableId(recirc.saturating_sub(1).min(254) as u8)
    };
    cx.run_table(start);
    if let Some(e) = &cx.out.error {
        cx.note(format!(">>>> {e}: packet dropped <<<<"));
        cx.out.actions.clear();
    }
    // Header and metadata writes after the last action that sends the packet
    // somewhere have no effect: drop them, so a dropped packet's program is empty.
    let keep = cx
        .out
        .actions
        .iter()
        .rposition(|a| {
            matches!(
                a,
                DpAction::Output(_) | DpAction::Ct(_) | DpAction::Controller(_)
            )
        })
        .map_or(0, |i| i + 1);
    cx.out.actions.truncate(keep);
    cx.out.final_key = cx.key;
    if cx.out.actions.is_empty() {
        cx.out.drop_reason = Some(if let Some(e) = &cx.out.error {
            DropReason::Error(e.clone())
        } else if cx.ttl_expired {
            DropReason::TtlExpired
        } else if let Some(t) = cx.last_miss {
            DropReason::TableMiss(t)
        } else {
            DropReason::NoOutput
        });
    }
    cx.out
}

impl Ctx<'_> {
    fn note(&mut self, s: String) {
        if self.tracing {
            let pad = "    ".repeat(self.depth);
            self.out.trace.push(format!("{pad}{s}"));
        }
    }

    /// Look up `table` and run the matching rule (or report the miss).
    fn run_table(&mut self, table: TableId) {
        if self.stop {
            return;
        }
        let hit = self
            .tables
            .table(table)
            .lookup(&self.key, &mut self.out.wc)
            .map(|e| e.value.clone());
        let Some(rule) = hit else {
            self.last_miss = Some(table);
            self.note(format!("{:2}. No match.", table.0));
            self.note("    drop".to_string());
            return;
        };
        if self
            .stack
            .iter()
            .any(|(seq, k)| *seq == rule.seq && *k == self.key)
        {
            self.out.error = Some(XlateError::Loop {
                table,
                priority: rule.priority,
            });
            self.stop = true;
            return;
        }
        if self.tracing {
            let m = format_match(&rule.mtch);
            let cookie = if rule.cookie != 0 {
                format!(", cookie {:#x}", rule.cookie)
            } else {
                String::new()
            };
            self.note(format!(
                "{:2}. {}{}priority {}{}",
                table.0,
                m,
                if m.is_empty() { "" } else { ", " },
                rule.priority,
                cookie
            ));
        }
        self.out.rules.push(rule.clone());
        self.stack.push((rule.seq, self.key));
        self.run_actions(&rule.actions, table);
        self.stack.pop();
    }

    fn emit(&mut self, a: DpAction) {
        self.out.actions.push(a);
    }

    fn set(&mut self, field: Field, value: u128, mask: u128) {
        self.key.set_masked(field, value, mask);
        self.emit(DpAction::Set {
            field,
            value: value & mask,
            mask,
        });
    }

    fn clear_ct(&mut self) {
        for f in Field::CT_FIELDS {
            self.key.set(f, 0);
        }
    }

    fn run_actions(&mut self, acts: &[Action], table: TableId) {
        for a in acts {
            if self.stop {
                return;
            }
            if self.tracing {
                self.note(format!("    {a}"));
            }
            self.run_action(a, table);
        }
    }

    fn output(&mut self, p: PortNo) {
        let in_port = PortNo(self.key.get(Field::IN_PORT) as u32);
        self.out.wc.set_exact(Field::IN_PORT);
        if p == in_port {
            self.note(format!("    >> skipping output to input port {p}"));
            return;
        }
        self.emit(DpAction::Output(p));
    }

    fn run_action(&mut self, a: &Action, table: TableId) {
        match a {
            Action::Output(p) => match *p {
                PortNo::IN_PORT => {
                    let ip = PortNo(self.key.get(Field::IN_PORT) as u32);
                    self.out.wc.set_exact(Field::IN_PORT);
                    self.emit(DpAction::Output(ip));
                }
                PortNo::NORMAL => self.normal(),
                PortNo::FLOOD | PortNo::ALL => {
                    let in_port = PortNo(self.key.get(Field::IN_PORT) as u32);
                    self.out.wc.set_exact(Field::IN_PORT);
                    let ports = self.env.ports();
                    for pc in ports.iter() {
                        if pc.port != in_port && (*p == PortNo::ALL || !pc.no_flood) {
                            self.emit(DpAction::Output(pc.port));
                        }
                    }
                }
                PortNo::TABLE | PortNo::ANY => {}
                p => self.output(p),
            },
            Action::OutputReg(sf) => {
                self.out.wc.or_field(sf.field, sf.mask());
                let port = ((self.key.get(sf.field) & sf.mask()) >> sf.ofs) as u32;
                self.output(PortNo(port));
            }
            Action::Controller(c) => self.emit(DpAction::Controller(Box::new(c.clone()))),
            Action::Drop | Action::Note(_) => {}
            Action::Resubmit { port, table: t, ct } => {
                self.resubmit(*port, t.unwrap_or(table), *ct)
            }
            Action::GotoTable(t) => self.run_table(*t),
            Action::Ct(c) => self.ct(c),
            Action::CtClear => {
                self.clear_ct();
                self.emit(DpAction::CtClear);
            }
            Action::Notrack => self.emit(DpAction::Notrack),
            Action::SetField { field, value, mask } => self.set_field(*field, *value, *mask),
            Action::Mod { field, value } => {
                self.set_field(*field, *value, field.info().slot.ones())
            }
            Action::Load { dst, value } => self.set(dst.field, *value << dst.ofs, dst.mask()),
            Action::Move { src, dst } => {
                let v = (self.key.get(src.field) & src.mask()) >> src.ofs;
                self.out.wc.or_field(src.field, src.mask());
                self.set(dst.field, v << dst.ofs, dst.mask());
            }
            Action::DecTtl(_) => {
                self.out.wc.set_exact(Field::NW_TTL);
                let ttl = self.key.get(Field::NW_TTL);
                if ttl <= 1 {
                    self.note("    >> TTL expired: packet dropped".to_string());
                    self.ttl_expired = true;
                    self.stop = true;
                    self.out.actions.clear();
                    return;
                }
                self.set(Field::NW_TTL, ttl - 1, 0xff);
            }
            Action::PushVlan(tpid) => {
                self.emit(DpAction::PushVlan { tpid: *tpid });
                self.key.set(Field::VLAN_TCI, 0x1000);
            }
            Action::PopVlan => {
                self.emit(DpAction::PopVlan);
                self.key.set(Field::VLAN_TCI, 0);
            }
        }
    }

    /// set_field and the legacy setters; VLAN setters push a header if needed.
    fn set_field(&mut self, field: Field, value: u128, mask: u128) {
        if matches!(field, Field::DL_VLAN | Field::DL_VLAN_PCP) {
            self.out.wc.or_field(Field::VLAN_TCI, 0x1000);
            if self.key.get(Field::VLAN_TCI) & 0x1000 == 0 {
                self.emit(DpAction::PushVlan { tpid: 0x8100 });
                self.key.set(Field::VLAN_TCI, 0x1000);
            }
            let slot = field.info().slot;
            let shift = slot.shift - Field::VLAN_TCI.info().slot.shift;
            self.set(
                Field::VLAN_TCI,
                (value & mask) << shift,
                (mask & slot.ones()) << shift,
            );
            return;
        }
        self.set(field, value, mask);
    }

    fn resubmit(&mut self, port: Option<PortNo>, table: TableId, ct: bool) {
        if self.depth >= MAX_DEPTH {
            self.out.error = Some(XlateError::TooDeep);
            self.stop = true;
            return;
        }
        self.resubmits += 1;
        if self.resubmits > MAX_RESUBMITS {
            self.out.error = Some(XlateError::TooManyResubmits);
            self.stop = true;
            return;
        }
        let saved_port = self.key.get(Field::IN_PORT);
        if let Some(p) = port {
            self.key.set(Field::IN_PORT, p.0 as u128);
        }
        // resubmit(,T,ct): look up with the conntrack original-direction tuple.
        let swaps = [
            (Field::NW_SRC, Field::CT_NW_SRC),
            (Field::NW_DST, Field::CT_NW_DST),
            (Field::IPV6_SRC, Field::CT_IPV6_SRC),
            (Field::IPV6_DST, Field::CT_IPV6_DST),
            (Field::NW_PROTO, Field::CT_NW_PROTO),
            (Field::TP_SRC, Field::CT_TP_SRC),
            (Field::TP_DST, Field::CT_TP_DST),
        ];
        let saved_key = self.key;
        if ct {
            for (pkt, orig) in swaps {
                let v = self.key.get(orig);
                self.out.wc.set_exact(orig);
                self.key.set(pkt, v);
            }
        }
        self.depth += 1;
        self.run_table(table);
        self.depth -= 1;
        if ct {
            for (pkt, _) in swaps {
                self.key.set(pkt, saved_key.get(pkt));
            }
        }
        self.key.set(Field::IN_PORT, saved_port);
    }

    fn ct(&mut self, c: &CtAction) {
        let zone = match c.zone {
            CtZone::Imm(z) => z,
            CtZone::Field(sf) => {
                self.out.wc.or_field(sf.field, sf.mask());
                ((self.key.get(sf.field) & sf.mask()) >> sf.ofs) as u16
            }
        };
        let mut mark: Option<(u32, u32)> = None;
        let mut label: Option<(u128, u128)> = None;
        for e in &c.exec {
            let (field, v, m) = match e {
                Action::SetField { field, value, mask } => (*field, *value, *mask),
                Action::Load { dst, value } => (dst.field, *value << dst.ofs, dst.mask()),
                Action::Move { src, dst } => {
                    self.out.wc.or_field(src.field, src.mask());
                    let v = (self.key.get(src.field) & src.mask()) >> src.ofs;
                    (dst.field, v << dst.ofs, dst.mask())
                }
                _ => continue,
            };
            if field == Field::CT_MARK {
                let (ov, om) = mark.unwrap_or((0, 0));
                mark = Some(((ov & !(m as u32)) | (v & m) as u32, om | m as u32));
            } else if field == Field::CT_LABEL {
                let (ov, om) = label.unwrap_or((0, 0));
                label = Some(((ov & !m) | (v & m), om | m));
            }
        }
        let dp = DpCt {
            zone,
            commit: c.commit,
            force: c.force,
            mark,
            label,
            alg: c.alg,
            timeout: c.timeout.as_deref().map(Arc::from),
            nat: c.nat.clone(),
            recirc: c.table.map(|t| t.0 as u32 + 1),
        };
        if dp.recirc.is_some() {
            self.out.recirc_keys.push((self.key, dp.clone()));
            self.note(format!(
                "    -> A clone of the packet is forked to recirculate. The forked pipeline will resume at table {}.",
                c.table.map(|t| t.0).unwrap_or(0)
            ));
        }
        self.emit(DpAction::Ct(Box::new(dp)));
        self.clear_ct();
        self.note(
            "    -> Sets the packet to an untracked state, and clears all the conntrack fields."
                .into(),
        );
    }

    /// The NORMAL action: an L2 learning switch with VLANs.
    fn normal(&mut self) {
        for f in [
            Field::IN_PORT,
            Field::DL_SRC,
            Field::DL_DST,
            Field::VLAN_TCI,
        ] {
            self.out.wc.set_exact(f);
        }
        let in_port = PortNo(self.key.get(Field::IN_PORT) as u32);
        let ports = self.env.ports();
        let Some(inp) = ports.iter().find(|p| p.port == in_port) else {
            self.note(format!(
                "    >> NORMAL: input port {in_port} is not a bridge port: drop"
            ));
            return;
        };
        let tci = self.key.get(Field::VLAN_TCI) as u16;
        let Some(vlan) = inp.vlan.input_vlan(tci) else {
            self.note(format!(
                "    >> NORMAL: VLAN {} not allowed on port {in_port}: drop",
                tci & 0xfff
            ));
            return;
        };
        let src = self.key.get(Field::DL_SRC) as u64;
        let dst = self.key.get(Field::DL_DST) as u64;
        // A trace only looks: it must not teach the switch anything.
        if src >> 40 & 1 == 0 && !self.tracing {
            self.env.mac.learn(src, vlan, in_port, self.now_ms);
        }
        let known = if dst >> 40 & 1 == 0 {
            self.env.mac.lookup(dst, vlan, self.now_ms)
        } else {
            None
        };
        let targets: Vec<&crate::pipeline::PortConfig> = match known {
            Some(p) if p == in_port => {
                self.note("    >> NORMAL: destination is on the input port: drop".into());
                Vec::new()
            }
            Some(p) => {
                self.note(format!("    >> NORMAL: forwarding to learned port {p}"));
                ports
                    .iter()
                    .filter(|c| c.port == p && c.vlan.carries(vlan))
                    .collect()
            }
            None => {
                self.note(format!("    >> NORMAL: flooding VLAN {vlan}"));
                ports
                    .iter()
                    .filter(|c| c.port != in_port && !c.no_flood && c.vlan.carries(vlan))
                    .collect()
            }
        };
        for pc in targets {
            let want = pc.vlan.output_tci(vlan);
            let have = self.key.get(Field::VLAN_TCI) as u16;
            match (have & 0x1000 != 0, want) {
                (true, None) => {
                    self.emit(DpAction::PopVlan);
                    self.key.set(Field::VLAN_TCI, 0);
                }
                (false, Some(v)) => {
                    self.emit(DpAction::PushVlan { tpid: 0x8100 });
                    self.set(Field::VLAN_TCI, (0x1000 | v) as u128, 0xffff);
                }
                (true, Some(v)) if have & 0x0fff != v => {
                    self.set(Field::VLAN_TCI, (0x1000 | v) as u128, 0x1fff);
                }
                _ => {}
            }
            self.emit(DpAction::Output(pc.port));
        }
    }
}

/// The key printed for a trace header.
pub fn describe_key(k: &FlowKey) -> String {
    format_key(k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::PortConfig;
    use crate::text::parse::{parse_flow, parse_match, FlowCmd};

    fn pipeline(flows: &[&str]) -> Pipeline {
        let p = Pipeline::new();
        let specs: Vec<_> = flows
            .iter()
            .map(|f| parse_flow(f, FlowCmd::Add).unwrap_or_else(|e| panic!("{f}: {e}")))
            .collect();
        p.flows.add_many(&specs, 0);
        p
    }

    fn key(s: &str) -> FlowKey {
        parse_match(s).unwrap().key
    }

    fn run(p: &Pipeline, pkt: &str) -> Xlate {
        p.xlate(&key(pkt), 0)
    }

    #[test]
    fn table_miss_drops_and_resubmit_returns() {
        let p = pipeline(&[
            "table=0,in_port=1 actions=resubmit(,1),output:3",
            "table=1,ip actions=output:2",
        ]);
        assert_eq!(format_program(&run(&p, "in_port=1,ip").actions), "2,3");
        // Miss in table 1: that branch does nothing, the caller carries on.
        assert_eq!(format_program(&run(&p, "in_port=1,arp").actions), "3");
        // Miss in table 0: drop, and the reason says so.
        let x = run(&p, "in_port=2,ip");
        assert_eq!(format_program(&x.actions), "drop");
        assert_eq!(x.drop_reason, Some(DropReason::TableMiss(TableId(0))));
        assert_eq!(run(&p, "in_port=1,ip").drop_reason, None);
        let q = pipeline(&["ip actions=drop", "arp actions=output:1"]);
        assert_eq!(run(&q, "ip").drop_reason, Some(DropReason::NoOutput));
    }

    #[test]
    fn resubmit_to_missing_table_is_fine_and_in_port_is_restored() {
        let p = pipeline(&[
            "table=0,in_port=1 actions=resubmit(5,7),resubmit(,2),output:9",
            "table=2,in_port=1 actions=output:4",
            "table=7,in_port=5 actions=output:6",
        ]);
        assert_eq!(format_program(&run(&p, "in_port=1").actions), "6,4,9");
    }

    #[test]
    fn resubmit_depth_is_bounded() {
        // Each pass changes reg0, so it is not a loop, only deep.
        let p = pipeline(&["table=0 actions=load:0x1->NXM_NX_REG1[0],move:NXM_NX_REG0[0..15]->NXM_NX_REG2[0..15],set_field:0x1->reg3,resubmit(,1)",
            "table=1 actions=move:NXM_NX_REG0[]->NXM_NX_REG4[],load:0x1->NXM_NX_REG5[],resubmit(,2)",
            "table=2 actions=output:1,resubmit(,3)",
            "table=3 actions=move:NXM_NX_REG6[]->NXM_NX_REG7[],resubmit(,4)",
            "table=4 actions=resubmit(,5)",
            "table=5 actions=set_field:0x7->reg8,resubmit(,6)",
            "table=6 actions=resubmit(,7)",
            "table=7 actions=resubmit(,8)",
            "table=8 actions=resubmit(,9)",
            "table=9 actions=resubmit(,10)",
            "table=10 actions=resubmit(,11)",
        ]);
        assert_eq!(run(&p, "in_port=1").error, None);
        // A chain that grows reg0 every time never repeats but goes 65 deep.
        let mut flows = Vec::new();
        for i in 0..70u32 {
            flows.push(format!(
                "table={},reg0={} actions=set_field:{}->reg0,resubmit(,{})",
                i % 200,
                i,
                i + 1,
                (i + 1) % 200
            ));
        }
        let refs: Vec<&str> = flows.iter().map(String::as_str).collect();
        let p = pipeline(&refs);
        let x = run(&p, "in_port=1");
        assert_eq!(x.error, Some(XlateError::TooDeep));
        assert!(x.actions.is_empty(), "an aborted translation drops");
    }

    #[test]
    fn resubmit_loop_is_detected() {
        let p = pipeline(&[
            "table=0 actions=output:1,resubmit(,1)",
            "table=1 actions=resubmit(,0)",
        ]);
        let x = run(&p, "in_port=1");
        assert!(
            matches!(x.error, Some(XlateError::Loop { .. })),
            "{:?}",
            x.error
        );
        assert!(x.actions.is_empty());
        let trace = p.trace(&key("in_port=1"), &[], 0);
        assert!(trace.contains("resubmit loop"), "{trace}");
    }

    #[test]
    fn output_to_a_register() {
        let p = pipeline(&["in_port=1 actions=set_field:0x70003->reg5,output:NXM_NX_REG5[0..15]"]);
        let x = run(&p, "in_port=1");
        assert_eq!(format_program(&x.actions), "set(reg5=0x70003),3");
    }

    #[test]
    fn output_to_input_port_is_skipped_unless_in_port() {
        let p = pipeline(&["in_port=1 actions=output:1,output:2,in_port"]);
        assert_eq!(format_program(&run(&p, "in_port=1").actions), "2,1");
    }

    #[test]
    fn ct_with_table_forks_and_clears_ct_fields() {
        let p = pipeline(&[
            "table=0,priority=10,ct_state=-trk,ip actions=ct(table=1,zone=NXM_NX_REG0[0..15]),resubmit(,2)",
            "table=1,ct_state=+trk+new,tcp actions=ct(commit,zone=3,exec(set_field:0x5->ct_mark,set_field:0x1/0x1->ct_label),timeout=short,alg=ftp),output:2",
            "table=2,ct_state=-trk,ip actions=output:7",
        ]);
        let x = run(&p, "in_port=1,tcp,reg0=3");
        // The original continues after the fork, untracked (table 2 sees -trk).
        assert_eq!(format_program(&x.actions), "ct(zone=3),recirc(0x2),7");
        // The zone came from reg0, so reg0's low bits are in the megaflow.
        assert_eq!(x.wc.get(Field::reg(0)), 0xffff);
        assert_eq!(x.recirc_keys.len(), 1);
        let passes = p.passes(
            &key("in_port=1,tcp,reg0=3"),
            &[ct::CtState::TRK | ct::CtState::NEW],
            0,
            false,
        );
        assert_eq!(passes.len(), 2);
        assert_eq!(passes[1].key.get(Field::CT_ZONE), 3);
        assert_eq!(passes[1].key.get(Field::RECIRC_ID), 2);
        let DpAction::Ct(c) = &passes[1].xlate.actions[0] else {
            panic!("{:?}", passes[1].xlate.actions)
        };
        assert_eq!(
            (c.commit, c.mark, c.label),
            (true, Some((5, 0xffff_ffff)), Some((1, 1)))
        );
        assert_eq!(c.timeout.as_deref(), Some("short"));
        assert_eq!(c.alg, Some(CtAlg::Ftp));
        assert_eq!(c.recirc, None);
    }

    #[test]
    fn ct_without_table_continues_untracked() {
        let p = pipeline(&[
            "table=0,ip actions=ct(commit),resubmit(,1)",
            "table=1,priority=10,ct_state=+trk,ip actions=output:1",
            "table=1,priority=5,ip actions=output:2",
        ]);
        let x = run(&p, "ip,ct_state=trk|est");
        assert_eq!(format_program(&x.actions), "ct(commit,zone=0),2");
    }

    #[test]
    fn notrack_makes_later_ct_untracked() {
        let p = pipeline(&[
            "table=0,priority=10,udp,tp_dst=123 actions=notrack,ct(table=1)",
            "table=0,priority=5,ip actions=ct(table=1)",
            "table=1,ct_state=+trk+untracked,ip actions=output:9",
            "table=1,ct_state=+trk+new,ip actions=output:2",
        ]);
        let states = [ct::CtState::TRK | ct::CtState::NEW];
        let ntp = p.passes(&key("udp,tp_dst=123"), &states, 0, false);
        assert_eq!(
            format_program(&ntp[0].xlate.actions),
            "notrack,ct(zone=0),recirc(0x2)"
        );
        assert_eq!(format_program(&ntp[1].xlate.actions), "9");
        let dns = p.passes(&key("udp,tp_dst=53"), &states, 0, false);
        assert_eq!(format_program(&dns[1].xlate.actions), "2");
    }

    #[test]
    fn field_writes_and_megaflow_of_move() {
        let p = pipeline(&[
            "tcp actions=mod_dl_src:00:00:00:00:00:aa,mod_nw_dst:10.0.0.9,mod_tp_dst:8080,move:NXM_OF_IP_SRC[0..7]->NXM_NX_REG0[8..15],mod_nw_tos:16,dec_ttl,resubmit(,1)",
            "table=1,reg0=0x500/0xff00 actions=output:5",
        ]);
        let x = run(&p, "tcp,nw_src=1.2.3.5,nw_ttl=64");
        assert_eq!(
            format_program(&x.actions),
            "set(dl_src=00:00:00:00:00:aa),set(nw_dst=10.0.0.9),set(tp_dst=8080),set(reg0=0x500/0xff00),set(nw_tos=16),set(nw_ttl=63),5"
        );
        assert_eq!(
            x.wc.get(Field::NW_SRC),
            0xff,
            "move read only the low byte of nw_src"
        );
        assert_eq!(x.wc.get(Field::NW_TTL), 0xff);
        // TTL 1 cannot be decremented: dropped.
        assert_eq!(
            format_program(&run(&p, "tcp,nw_src=1.2.3.5,nw_ttl=1").actions),
            "drop"
        );
    }

    #[test]
    fn vlan_actions() {
        let p = pipeline(&["in_port=1 actions=mod_vlan_vid:10,output:2,strip_vlan,output:3,push_vlan:0x88a8,output:4"]);
        assert_eq!(
            format_program(&run(&p, "in_port=1").actions),
            "push_vlan(tpid=0x8100),set(vlan_tci=0xa/0xfff),2,pop_vlan,3,push_vlan(tpid=0x88a8),4"
        );
    }

    #[test]
    fn flood_all_and_controller() {
        let p = pipeline(&[
            "in_port=1 actions=FLOOD",
            "in_port=2 actions=ALL",
            "in_port=3 actions=controller(reason=no_match,max_len=64)",
        ]);
        let mut ports: Vec<PortConfig> = (1..=4).map(|i| PortConfig::access(i, 0)).collect();
        ports[3].no_flood = true;
        p.set_ports(ports);
        assert_eq!(format_program(&run(&p, "in_port=1").actions), "2,3");
        assert_eq!(format_program(&run(&p, "in_port=2").actions), "1,3,4");
        let x = run(&p, "in_port=3");
        assert_eq!(
            format_program(&x.actions),
            "userspace(controller,reason=no_match,max_len=64)"
        );
    }

    #[test]
    fn normal_learns_and_handles_vlans() {
        let p = pipeline(&["actions=NORMAL"]);
        p.set_ports(vec![
            PortConfig::access(1, 10),
            PortConfig::access(2, 10),
            PortConfig::access(3, 20),
            PortConfig::trunk(4, &[10, 20]),
        ]);
        // Unknown destination: flood within VLAN 10 (access 2 untagged, trunk 4 tagged).
        let x = run(
            &p,
            "in_port=1,dl_src=00:00:00:00:00:01,dl_dst=00:00:00:00:00:02",
        );
        assert_eq!(
            format_program(&x.actions),
            "2,push_vlan(tpid=0x8100),set(vlan_tci=0x100a),4"
        );
        for f in [
            Field::IN_PORT,
            Field::DL_SRC,
            Field::DL_DST,
            Field::VLAN_TCI,
        ] {
            assert_eq!(x.wc.get(f), f.info().slot.ones(), "{} consulted", f.name());
        }
        // The reply from the trunk, tagged 10, goes to the learned port untagged.
        let x = run(
            &p,
            "in_port=4,dl_vlan=10,dl_src=00:00:00:00:00:02,dl_dst=00:00:00:00:00:01",
        );
        assert_eq!(format_program(&x.actions), "pop_vlan,1");
        // Now 00:..:02 is known on port 4 in VLAN 10.
        let x = run(
            &p,
            "in_port=1,dl_src=00:00:00:00:00:01,dl_dst=00:00:00:00:00:02",
        );
        assert_eq!(
            format_program(&x.actions),
            "push_vlan(tpid=0x8100),set(vlan_tci=0x100a),4"
        );
        // A trace does not learn.
        let before = p.mac.len();
        p.trace(
            &key("in_port=2,dl_src=00:00:00:00:00:99,dl_dst=00:00:00:00:00:01"),
            &[],
            0,
        );
        assert_eq!(p.mac.len(), before);
        // VLAN 20 is separate: same MAC unknown there, flood to 3 and 4 only.
        let x = run(
            &p,
            "in_port=4,dl_vlan=20,dl_src=00:00:00:00:00:07,dl_dst=00:00:00:00:00:02",
        );
        assert_eq!(format_program(&x.actions), "pop_vlan,3");
        // A tagged frame on an access port is dropped; unknown port too.
        assert_eq!(
            format_program(&run(&p, "in_port=1,dl_vlan=10").actions),
            "drop"
        );
        assert_eq!(format_program(&run(&p, "in_port=9").actions), "drop");
    }

    #[test]
    fn goto_table_and_stats_credit() {
        let p = pipeline(&[
            "table=0,ip actions=goto_table:3",
            "table=3,ip actions=output:1",
        ]);
        let x = run(&p, "ip");
        assert_eq!(format_program(&x.actions), "1");
        assert_eq!(x.rules.len(), 2);
        x.credit(2, 128, 5);
        let d = p.flows.dump(None, 5);
        assert!(
            d.iter().all(|l| l.contains("n_packets=2, n_bytes=128")),
            "{d:?}"
        );
    }

    #[test]
    fn program_steps_are_small() {
        assert!(std::mem::size_of::<DpAction>() <= 48);
    }

    #[test]
    fn recirculated_packet_starts_in_its_table() {
        let p = pipeline(&["table=0 actions=output:1", "table=4 actions=output:4"]);
        let mut k = key("ip");
        k.set(Field::RECIRC_ID, 5);
        let x = p.xlate(&k, 0);
        assert_eq!(format_program(&x.actions), "4");
        assert_eq!(x.wc.get(Field::RECIRC_ID), 0xffff_ffff);
    }
}
