//! The datapath action program a megaflow carries.
//!
//! Translation ([`crate::upcall`]) turns ofproto's [`ofproto::DpAction`]s
//! into [`Op`]s once per megaflow, resolving everything that would
//! otherwise cost a lookup per packet: the timeout policy name becomes a
//! [`ct::PolicyId`], the ct action's `table=N` becomes a datapath
//! recirculation id (which also stands for the registers frozen at that
//! point, see [`crate::upcall::recirc`]), and writes to pipeline scratch
//! (registers) that the datapath does not carry disappear.
//!
//! The program is printed in the style of `ovs-appctl dpctl/dump-flows`
//! actions (`ct(commit,zone=1),recirc(0x3)`, `2`, `drop`).

use std::fmt;

use ofproto::Field;

use crate::packet::PortNo;

/// The conntrack parameters of one `ct` op, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtOp {
    pub params: ct::CtParams,
    /// The policy name as written in the flow, for printing.
    pub policy_name: Option<std::sync::Arc<str>>,
    /// Recirculate with this datapath recirculation id after conntrack.
    pub recirc: Option<u32>,
}

/// One step of a datapath program, executed in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Send the packet (a copy, if more steps follow) to a port.
    Output(PortNo),
    /// Rewrite header bits (with incremental checksum updates).
    SetHeader {
        field: Field,
        value: u128,
        mask: u128,
    },
    /// Write the `metadata` field (kept in the key across recirculation).
    SetMetadata {
        value: u64,
        mask: u64,
    },
    /// Change the packet's input port for the rest of the pipeline.
    SetInPort(PortNo),
    PushVlan(u16),
    PopVlan,
    /// Run conntrack; with `recirc` the packet (or a copy, if more steps
    /// follow) is looked up again. Afterwards this pass sees the packet
    /// untracked, as in ofproto.
    Ct(Box<CtOp>),
    CtClear,
    /// Mark the packet so later ct ops report `+trk+untracked`.
    Notrack,
    /// Send a copy to the control channel (ofproto's controller queue).
    Controller(Box<ofproto::action::ControllerSpec>),
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Output(p) => write!(f, "{p}"),
            Op::SetHeader { field, value, mask } => {
                if *mask == field.info().slot.ones() {
                    write!(f, "set({}={value:#x})", field.name())
                } else {
                    write!(f, "set({}={value:#x}/{mask:#x})", field.name())
                }
            }
            Op::SetMetadata { value, mask } => write!(f, "set(metadata={value:#x}/{mask:#x})"),
            Op::SetInPort(p) => write!(f, "set(in_port={p})"),
            Op::PushVlan(tpid) => write!(f, "push_vlan(tpid={tpid:#06x})"),
            Op::PopVlan => f.write_str("pop_vlan"),
            Op::Ct(c) => {
                f.write_str("ct(")?;
                let p = &c.params;
                let mut sep = "";
                let mut item = |f: &mut fmt::Formatter<'_>, s: fmt::Arguments<'_>| {
                    let r = write!(f, "{sep}{s}");
                    sep = ",";
                    r
                };
                if p.commit {
                    item(f, format_args!("commit"))?;
                }
                if p.force {
                    item(f, format_args!("force"))?;
                }
                item(f, format_args!("zone={}", p.zone.0))?;
                if let Some((v, m)) = p.mark {
                    item(f, format_args!("mark={v:#x}/{m:#x}"))?;
                }
                if let Some((v, m)) = p.label {
                    item(f, format_args!("label={v:#x}/{m:#x}"))?;
                }
                if let Some(h) = p.helper {
                    item(f, format_args!("helper={h}"))?;
                }
                if let Some(n) = &c.policy_name {
                    item(f, format_args!("timeout={n}"))?;
                }
                if let Some(n) = &p.nat {
                    item(f, format_args!("{n}"))?;
                }
                f.write_str(")")?;
                if let Some(r) = c.recirc {
                    write!(f, ",recirc({r:#x})")?;
                }
                Ok(())
            }
            Op::CtClear => f.write_str("ct_clear"),
            Op::Notrack => f.write_str("notrack"),
            Op::Controller(c) => write!(
                f,
                "userspace(controller,reason={},max_len={})",
                c.reason, c.max_len
            ),
        }
    }
}

/// Print a program as `dpctl/dump-flows` does (`drop` when empty).
pub struct ProgramDisplay<'a>(pub &'a [Op]);

impl fmt::Display for ProgramDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("drop");
        }
        for (i, op) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{op}")?;
        }
        Ok(())
    }
}
