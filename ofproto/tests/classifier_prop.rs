//! Property tests: the tuple-space classifier agrees with a brute-force linear
//! scan, and its consulted-field mask is sound for a megaflow cache (any
//! packet that agrees on the consulted bits gets the same rule).

use std::sync::Arc;

use ofproto::fields::{Field, FlowKey, FlowMask};
use ofproto::{Classifier, Match};
use proptest::prelude::*;

/// Small value domains so that rules overlap and packets hit them.
#[derive(Clone, Debug)]
struct RuleDesc {
    in_port: Option<u32>,
    nw_src: Option<(u32, u32)>, // value, prefix length
    nw_proto: Option<u8>,
    tp_dst: Option<(u16, u16)>, // value, mask
    reg0: Option<(u32, u32)>,
    priority: u16,
}

fn prefix(len: u32) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len)
    }
}

impl RuleDesc {
    fn to_match(&self) -> Match {
        let mut m = Match::default();
        m.set_exact(Field::DL_TYPE, 0x0800);
        if let Some(p) = self.in_port {
            m.set_exact(Field::IN_PORT, p as u128);
        }
        if let Some((v, len)) = self.nw_src {
            m.set(Field::NW_SRC, v as u128, prefix(len) as u128);
        }
        if let Some(p) = self.nw_proto {
            m.set_exact(Field::NW_PROTO, p as u128);
        }
        if let Some((v, mask)) = self.tp_dst {
            m.set(Field::TP_DST, v as u128, mask as u128);
        }
        if let Some((v, mask)) = self.reg0 {
            m.set(Field::reg(0), v as u128, mask as u128);
        }
        m
    }
}

fn rule() -> impl Strategy<Value = RuleDesc> {
    (
        proptest::option::of(1u32..4),
        proptest::option::of((
            prop_oneof![
                Just(0x0a00_0000u32),
                Just(0x0a01_0000),
                Just(0x0a01_0203),
                Just(0x0b00_0000)
            ],
            prop_oneof![Just(8u32), Just(16), Just(24), Just(32)],
        )),
        proptest::option::of(prop_oneof![Just(6u8), Just(17)]),
        proptest::option::of((0u16..4, prop_oneof![Just(0xffffu16), Just(0x3), Just(0x1)])),
        proptest::option::of((
            0u32..4,
            prop_oneof![Just(0xffff_ffffu32), Just(0x1), Just(0x2)],
        )),
        prop_oneof![0u16..8, 0u16..=u16::MAX],
    )
        .prop_map(
            |(in_port, nw_src, nw_proto, tp_dst, reg0, priority)| RuleDesc {
                in_port,
                nw_src,
                nw_proto,
                tp_dst,
                reg0,
                priority,
            },
        )
}

fn packet() -> impl Strategy<Value = FlowKey> {
    (
        0u32..5,
        prop_oneof![
            Just(0x0a01_0203u32),
            Just(0x0a01_0999),
            Just(0x0a02_0000),
            Just(0x0b00_0001),
            any::<u32>()
        ],
        prop_oneof![Just(6u8), Just(17), Just(1)],
        0u16..5,
        0u32..5,
        any::<u64>(),
    )
        .prop_map(|(in_port, nw_src, proto, tp_dst, reg0, noise)| {
            let mut k = FlowKey::default();
            k.set(Field::DL_TYPE, 0x0800);
            k.set(Field::IN_PORT, in_port as u128);
            k.set(Field::NW_SRC, nw_src as u128);
            k.set(Field::NW_PROTO, proto as u128);
            k.set(Field::TP_DST, tp_dst as u128);
            k.set(Field::reg(0), reg0 as u128);
            // Fields no rule looks at.
            k.set(Field::NW_DST, noise as u32 as u128);
            k.set(Field::TP_SRC, (noise >> 32) as u16 as u128);
            k
        })
}

#[derive(Clone, Debug)]
enum Op {
    Add(RuleDesc),
    /// Remove the n-th live rule (mod the count).
    Remove(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![4 => rule().prop_map(Op::Add), 1 => any::<usize>().prop_map(Op::Remove)]
}

/// Reference: live rules as (match, priority, seq, id).
fn linear(rules: &[(Match, u16, u64, u32)], k: &FlowKey) -> Option<u32> {
    rules
        .iter()
        .filter(|(m, ..)| m.matches(k))
        .max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)))
        .map(|r| r.3)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn classifier_matches_linear_scan(ops in proptest::collection::vec(op(), 1..80), pkts in proptest::collection::vec(packet(), 1..40)) {
        let mut c: Classifier<u32> = Classifier::new();
        let mut live: Vec<(Match, u16, u64, u32)> = Vec::new();
        for (i, o) in ops.iter().enumerate() {
            match o {
                Op::Add(r) => {
                    let m = r.to_match();
                    let id = i as u32;
                    let replaced = c.insert(&m, r.priority, i as u64, Arc::new(id)).map(|v| *v);
                    if let Some(pos) = live.iter().position(|(lm, lp, ..)| *lm == m && *lp == r.priority) {
                        prop_assert_eq!(replaced, Some(live[pos].3));
                        // A replacement keeps its original sequence (tie order).
                        live[pos].3 = id;
                    } else {
                        prop_assert!(replaced.is_none());
                        live.push((m, r.priority, i as u64, id));
                    }
                }
                Op::Remove(n) => {
                    if live.is_empty() { continue; }
                    let (m, p, _, id) = live.remove(n % live.len());
                    let removed = c.remove(&m, p).map(|v| *v);
                    prop_assert_eq!(removed, Some(id));
                }
            }
            prop_assert_eq!(c.len(), live.len());
        }
        prop_assert_eq!(c.iter().count(), live.len());
        for k in &pkts {
            let mut wc = FlowMask::default();
            let got = c.lookup(k, &mut wc).map(|e| *e.value);
            prop_assert_eq!(got, linear(&live, k));
            // Megaflow soundness: flip bits outside the consulted mask.
            for flip in [0x5555_5555_5555_5555u64, u64::MAX, 0x0f0f_0f0f_0f0f_0f0f] {
                let mut k2 = *k;
                for i in 0..k2.w.len() {
                    k2.w[i] ^= flip & !wc.w[i];
                }
                prop_assert_eq!(linear(&live, &k2), got, "packet differing only outside the megaflow mask got another rule");
            }
        }
    }
}
