//! The slow path: a packet that missed both caches is translated by
//! ofproto, and the result becomes a megaflow (mask + program).
//!
//! [`translate`] reads top to bottom:
//! 1. find the state frozen with the packet's recirculation id;
//! 2. build ofproto's key ([`convert::to_of_key`]) and translate it;
//! 3. turn the consulted-field mask into a datapath mask
//!    ([`convert::to_dp_mask`]);
//! 4. turn ofproto's program into datapath [`Op`]s, resolving timeout
//!    policy names and giving each `ct(table=N)` a datapath recirculation
//!    id that stands for the table and the registers at that point.
//!
//! Translation may allocate and take locks; it runs once per megaflow,
//! not per packet.

pub mod convert;
pub mod recirc;

use std::fmt;
use std::sync::Arc;

use ofproto::action::CtAlg;
use ofproto::xlate::DropReason;
use ofproto::{DpAction, Field};

use crate::flow::FlowKey;
use crate::packet::PortNo;
use crate::program::{CtOp, Op};
use recirc::{Frozen, RecircTable};

/// What translation needs from the switch.
#[derive(Clone, Copy)]
pub struct UpcallContext<'a> {
    pub bridge: &'a ofproto::Pipeline,
    pub ct: &'a ct::Tracker,
    pub recirc: &'a RecircTable,
}

/// A translated packet: everything a megaflow needs.
#[derive(Debug)]
pub struct Translation {
    /// Megaflow mask over the datapath key.
    pub mask: FlowKey,
    /// The program (empty: drop).
    pub ops: Vec<Op>,
    /// The rules used, to credit their counters with the megaflow's.
    pub rules: Vec<Arc<ofproto::Rule>>,
    /// Why the program is empty, if it is.
    pub drop_reason: Option<DropReason>,
    /// Things the datapath ignored or could not honour (unknown timeout
    /// policy, NAT before the NAT engine exists), for the log.
    pub warnings: Vec<String>,
}

/// Why a packet could not be translated (it is dropped and counted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpcallError {
    /// The packet carries a recirculation id the switch never handed out.
    UnknownRecircId(u32),
    /// [`recirc::MAX_FROZEN`] distinct recirculation states are in use.
    RecircTableFull,
}

impl fmt::Display for UpcallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpcallError::UnknownRecircId(id) => write!(f, "unknown recirculation id {id:#x}"),
            UpcallError::RecircTableFull => f.write_str("recirculation table full"),
        }
    }
}

/// Translate the packet with datapath key `key`.
pub fn translate(
    cx: UpcallContext<'_>,
    key: &FlowKey,
    now_ms: u64,
) -> Result<Translation, UpcallError> {
    let frozen = cx
        .recirc
        .state(key.recirc_id())
        .ok_or(UpcallError::UnknownRecircId(key.recirc_id()))?;
    let of_key = convert::to_of_key(key, &frozen);
    let x = cx.bridge.xlate(&of_key, now_ms);
    let mask = convert::to_dp_mask(&x.wc, key);

    let mut warnings = Vec::new();
    let mut ops = Vec::with_capacity(x.actions.len());
    let mut forks = x.recirc_keys.iter();
    for a in &x.actions {
        match a {
            DpAction::Output(p) => ops.push(Op::Output(PortNo(p.0))),
            DpAction::Set { field, value, mask } => {
                if let Some(op) = set_op(*field, *value, *mask) {
                    ops.push(op);
                }
            }
            DpAction::PushVlan { tpid } => ops.push(Op::PushVlan(*tpid)),
            DpAction::PopVlan => ops.push(Op::PopVlan),
            DpAction::CtClear => ops.push(Op::CtClear),
            DpAction::Notrack => ops.push(Op::Notrack),
            DpAction::Controller(c) => ops.push(Op::Controller(c.clone())),
            DpAction::Ct(c) => {
                let policy = match &c.timeout {
                    Some(name) => {
                        let id = cx.ct.policies.id(name);
                        if id.is_none() {
                            warnings.push(format!(
                                "ct timeout policy \"{name}\" does not exist: the zone's policy applies"
                            ));
                        }
                        id
                    }
                    None => None,
                };
                let nat = c.nat.as_ref().and_then(|n| {
                    let r = nat_action(n);
                    if r.is_none() {
                        warnings.push(format!("ct {n}: unusable nat range, nat ignored"));
                    }
                    r
                });
                let recirc = match c.recirc {
                    Some(table_recirc) => {
                        // The i-th forked ct corresponds to the i-th recirc key.
                        let mut state = Frozen {
                            table_recirc,
                            regs: [0; 16],
                        };
                        if let Some((k, _)) = forks.next() {
                            for (i, r) in state.regs.iter_mut().enumerate() {
                                *r = k.get(Field::reg(i as u8)) as u32;
                            }
                        }
                        Some(
                            cx.recirc
                                .id_for(&state)
                                .ok_or(UpcallError::RecircTableFull)?,
                        )
                    }
                    None => None,
                };
                ops.push(Op::Ct(Box::new(CtOp {
                    params: ct::CtParams {
                        zone: ct::Zone(c.zone),
                        commit: c.commit,
                        force: c.force,
                        mark: c.mark,
                        label: c.label,
                        policy,
                        helper: c.alg.map(|a| match a {
                            CtAlg::Ftp => "ftp",
                            CtAlg::Tftp => "tftp",
                        }),
                        nat,
                    },
                    policy_name: c.timeout.clone(),
                    recirc,
                })));
            }
        }
    }
    Ok(Translation {
        mask,
        ops,
        rules: x.rules,
        drop_reason: x.drop_reason,
        warnings,
    })
}

/// Conntrack's form of ofproto's `nat` argument; None for a range
/// conntrack cannot use (mixed families or backwards: ofproto's parser
/// already refuses those).
fn nat_action(n: &ofproto::action::Nat) -> Option<ct::nat::NatAction> {
    use ct::nat::{NatAction, NatKind, NatSpec, PortPick};
    let Some(kind) = n.kind else {
        return Some(NatAction::default());
    };
    let kind = match kind {
        ofproto::action::NatKind::Src => NatKind::Src,
        ofproto::action::NatKind::Dst => NatKind::Dst,
    };
    let (lo, hi) = n.addrs?;
    let mut spec = NatSpec::new(kind, lo, hi)?;
    spec.ports = n.ports;
    spec.persistent = n.persistent;
    spec.pick = if n.hash {
        PortPick::Hash
    } else if n.random {
        PortPick::Random
    } else {
        PortPick::Keep
    };
    Some(NatAction { spec: Some(spec) })
}

/// The datapath op for ofproto's write of `field`, or None for a write
/// the datapath does not carry (registers live in the frozen state; the
/// ct fields are written by the ct op itself).
fn set_op(field: Field, value: u128, mask: u128) -> Option<Op> {
    let is_reg = (Field::reg(0).0..Field::xreg(7).0 + 1).contains(&field.0);
    if is_reg || Field::CT_FIELDS.contains(&field) {
        return None;
    }
    Some(match field {
        Field::METADATA => Op::SetMetadata {
            value: value as u64,
            mask: mask as u64,
        },
        Field::IN_PORT => Op::SetInPort(PortNo(value as u32)),
        _ => Op::SetHeader { field, value, mask },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bridge(flows: &str) -> ofproto::Pipeline {
        let p = ofproto::Pipeline::new();
        p.ofctl("add-flows", flows, 0).unwrap();
        p
    }

    fn tracker() -> ct::Tracker {
        ct::Tracker::new(ct::TrackerConfig::default())
    }

    fn context<'a>(
        bridge: &'a ofproto::Pipeline,
        ct: &'a ct::Tracker,
        recirc: &'a RecircTable,
    ) -> UpcallContext<'a> {
        UpcallContext { bridge, ct, recirc }
    }

    fn udp_key(in_port: u32) -> FlowKey {
        let mut k = FlowKey::ZERO;
        k.set_in_port_raw(in_port);
        k.set_dl_type(0x0800);
        k.set_nw_proto(17);
        k.set_nw_src(0x0a00_0001);
        k.set_nw_dst(0x0a00_0002);
        k.set_tp_src(1000);
        k.set_tp_dst(53);
        k
    }

    #[test]
    fn stateful_firewall_first_pass_forks_into_conntrack() {
        let b = bridge(
            "table=0,priority=10,ip,in_port=1,actions=ct(table=1,zone=5)\n\
             table=1,ct_state=+trk+new,in_port=1,ip,actions=ct(commit,zone=5),output:2\n",
        );
        let (ct, recirc) = (tracker(), RecircTable::default());
        let cx = context(&b, &ct, &recirc);
        let t = translate(cx, &udp_key(1), 0).unwrap();
        assert_eq!(t.ops.len(), 1);
        let Op::Ct(c) = &t.ops[0] else {
            panic!("{:?}", t.ops)
        };
        assert_eq!(c.params.zone, ct::Zone(5));
        let id = c.recirc.expect("forks");
        assert_eq!(recirc.state(id).unwrap().table_recirc, 2);
        // The mask pins the identity fields and what table 0 looked at.
        assert_eq!(t.mask.recirc_id(), u32::MAX);
        assert_eq!(t.mask.nw_src(), 0);

        // Second pass: the recirculated key, +trk+new.
        let mut k = udp_key(1);
        k.set_recirc_id(id);
        k.set_ct_state((ct::CtState::TRK | ct::CtState::NEW).bits());
        k.set_ct_zone(5);
        let t2 = translate(cx, &k, 0).unwrap();
        assert_eq!(
            crate::program::ProgramDisplay(&t2.ops).to_string(),
            "ct(commit,zone=5),2"
        );
        assert_ne!(t2.mask.ct_state(), 0);
    }

    #[test]
    fn registers_at_the_fork_get_their_own_recirculation_id() {
        let b = bridge(
            "table=0,in_port=1,ip,actions=load:7->NXM_NX_REG0[],ct(table=1)\n\
             table=0,in_port=2,ip,actions=load:9->NXM_NX_REG0[],ct(table=1)\n\
             table=1,reg0=7,actions=output:2\n\
             table=1,reg0=9,actions=output:1\n",
        );
        let (ct, recirc) = (tracker(), RecircTable::default());
        let cx = context(&b, &ct, &recirc);
        let id_of = |port| {
            let t = translate(cx, &udp_key(port), 0).unwrap();
            match t.ops.last() {
                Some(Op::Ct(c)) => c.recirc.unwrap(),
                other => panic!("{other:?}"),
            }
        };
        let (a, b2) = (id_of(1), id_of(2));
        assert_ne!(a, b2);
        let mut k = udp_key(3); // neither output port: not skipped as in_port
        k.set_recirc_id(a);
        let t = translate(cx, &k, 0).unwrap();
        assert_eq!(t.ops, vec![Op::Output(PortNo(2))]);
        k.set_recirc_id(b2);
        let t = translate(cx, &k, 0).unwrap();
        assert_eq!(t.ops, vec![Op::Output(PortNo(1))]);
    }

    #[test]
    fn unknown_recirculation_id_is_an_error() {
        let b = bridge("actions=drop\n");
        let (ct, recirc) = (tracker(), RecircTable::default());
        let cx = context(&b, &ct, &recirc);
        let mut k = udp_key(1);
        k.set_recirc_id(42);
        assert_eq!(
            translate(cx, &k, 0).unwrap_err(),
            UpcallError::UnknownRecircId(42)
        );
    }
}
