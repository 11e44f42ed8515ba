//! Property test of the datapath contract: the mask xlate returns is a valid
//! megaflow. Any packet that agrees with the translated one on every bit of
//! the mask must translate to the same datapath program. Random multi-table
//! pipelines (resubmit, goto_table, register writes and moves, ct with
//! recirculation, dec_ttl, output to in_port...) and random packets.

use ofproto::fields::{Field, FlowKey};
use ofproto::text::parse::{parse_flow, FlowCmd};
use ofproto::xlate::format_program;
use ofproto::Pipeline;
use proptest::prelude::*;

const MATCHES: &[&str] = &[
    "",
    "ip",
    "tcp",
    "udp",
    "in_port=1",
    "in_port=2,ip",
    "tcp,tp_dst=80",
    "tcp,tp_dst=0x0/0xff00",
    "ip,nw_src=10.0.0.0/8",
    "ip,nw_dst=10.1.0.0/16",
    "reg0=0x1/0x1",
    "reg0=0x2",
    "reg1=0x5",
    "metadata=0x1",
    "ct_state=-trk,ip",
    "ct_state=+trk+est,ip",
    "ct_state=+trk+new,tcp",
    "ip,nw_ttl=1",
];

const ACTIONS: &[&str] = &[
    "output:1",
    "output:2",
    "in_port",
    "resubmit(,{next})",
    "resubmit(3,{next})",
    "goto_table:{later}",
    "set_field:0x1->reg0",
    "set_field:0x2/0x2->reg0",
    "load:0x5->NXM_NX_REG1[]",
    "move:NXM_NX_REG0[0..7]->NXM_NX_REG2[0..7]",
    "move:NXM_OF_IN_PORT[0..15]->NXM_NX_REG1[0..15]",
    "set_field:0x1->metadata",
    "ct(table={later},zone=NXM_NX_REG1[0..15])",
    "ct(commit,zone=5)",
    "ct_clear",
    "output:NXM_NX_REG1[0..15]",
    "drop",
];

const IP_ONLY: &[&str] = &[
    "ct(table={later},zone=NXM_NX_REG1[0..15])",
    "ct(commit,zone=5)",
];

fn flow(table: u8, prio: u16, m: usize, acts: &[usize]) -> Option<String> {
    let mut mtch = MATCHES[m].to_string();
    let is_ip = !mtch.is_empty()
        && !mtch.starts_with("in_port=1")
        && !mtch.starts_with("reg")
        && !mtch.starts_with("metadata");
    if !is_ip && acts.iter().any(|a| IP_ONLY.contains(&ACTIONS[*a])) {
        if mtch.is_empty() {
            mtch = "ip".into();
        } else {
            mtch.push_str(",ip");
        }
    }
    let mut list: Vec<String> = Vec::new();
    for (i, a) in acts.iter().enumerate() {
        let a = ACTIONS[*a];
        if a == "drop" {
            continue;
        }
        if a.starts_with("goto_table") && (i + 1 != acts.len() || table >= 3) {
            continue;
        }
        let later = (table + 1).min(3);
        let next = (table + 1) % 4;
        list.push(
            a.replace("{later}", &later.to_string())
                .replace("{next}", &next.to_string()),
        );
    }
    if list.is_empty() {
        list.push("drop".into());
    }
    let sep = if mtch.is_empty() { "" } else { "," };
    let text = format!(
        "table={table},priority={prio}{sep}{mtch} actions={}",
        list.join(",")
    );
    parse_flow(&text, FlowCmd::Add).ok().map(|_| text)
}

fn packet() -> impl Strategy<Value = FlowKey> {
    (
        1u32..4,
        prop_oneof![Just(0x0800u16), Just(0x86dd), Just(0x0806)],
        prop_oneof![Just(6u8), Just(17), Just(1)],
        prop_oneof![Just(0x0a00_0001u32), Just(0x0a01_0001), any::<u32>()],
        prop_oneof![Just(80u16), Just(0x00ff), any::<u16>()],
        0u32..4,
        prop_oneof![Just(0u32), Just(0x22), Just(0x21)],
        0u8..4,
    )
        .prop_map(|(in_port, dl, proto, addr, port, reg0, ct_state, ttl)| {
            let mut k = FlowKey::default();
            k.set(Field::IN_PORT, in_port as u128);
            k.set(Field::DL_TYPE, dl as u128);
            if dl != 0x0806 {
                k.set(Field::NW_PROTO, proto as u128);
                k.set(Field::NW_SRC, addr as u128);
                k.set(Field::NW_DST, addr.rotate_left(8) as u128);
                k.set(Field::TP_DST, port as u128);
                k.set(Field::NW_TTL, ttl as u128);
            }
            k.set(Field::reg(0), reg0 as u128);
            k.set(Field::CT_STATE, ct_state as u128);
            k
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn xlate_mask_is_a_valid_megaflow(
        flows in proptest::collection::vec((0u8..4, 0u16..5, 0..MATCHES.len(), proptest::collection::vec(0..ACTIONS.len(), 1..4)), 1..25),
        pkts in proptest::collection::vec(packet(), 1..12),
        flips in proptest::collection::vec(any::<u64>(), 4),
    ) {
        let mut texts: Vec<String> = flows.iter().filter_map(|(t, p, m, a)| flow(*t, *p, *m, a)).collect();
        // Low-priority fall-throughs so most packets travel several tables.
        texts.push("table=0,priority=0 actions=resubmit(,1),output:3".into());
        texts.push("table=1,priority=0 actions=set_field:0x1->reg0,resubmit(,2)".into());
        texts.push("table=2,priority=0 actions=move:NXM_NX_REG0[0..3]->NXM_NX_REG3[0..3],output:2".into());
        let specs: Vec<_> = texts.iter().map(|t| parse_flow(t, FlowCmd::Add).unwrap()).collect();
        let p = Pipeline::new();
        p.flows.add_many(&specs, 0);
        for k in &pkts {
            let x = p.xlate(k, 0);
            let want = format_program(&x.actions);
            if std::env::var("SHOW_XLATE").is_ok() {
                eprintln!("{} flows of {}; {:?} -> {want}", texts.len(), flows.len(), ofproto::text::format::format_key(k));
            }
            for f in &flips {
                let mut k2 = *k;
                for (i, w) in k2.w.iter_mut().enumerate() {
                    *w ^= f.rotate_left(i as u32) & !x.wc.w[i];
                }
                let y = p.xlate(&k2, 0);
                prop_assert_eq!(format_program(&y.actions), want.clone(), "flows:\n{}\npacket differs only outside the megaflow mask", texts.join("\n"));
            }
        }
    }
}
