//! Property tests: random packet sequences across zones never panic, never
//! leave an entry in a zone they were not committed in, and keep the
//! per-zone counts equal to what a dump finds.

mod pkts;

use ct::flush::FlushFilter;
use ct::packet::tcp_flags::{ACK, FIN, RST, SYN};
use ct::{CtPacket, CtParams, CtResult, Family, PktFlags, Tracker, TrackerConfig, Zone};
use pkts::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Step {
    kind: u8,
    a: u8,
    b: u8,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    zone: u16,
    commit: bool,
    force: bool,
    secs: u8,
    corrupt: Option<(usize, u8)>,
}

fn step() -> impl Strategy<Value = Step> {
    (
        (0u8..5, 0u8..4, 0u8..4, 1u16..4, 1u16..4),
        (any::<u32>(), any::<u32>(), prop_oneof![Just(SYN), Just(SYN | ACK), Just(ACK), Just(FIN | ACK), Just(RST), any::<u8>()]),
        (0u16..3, any::<bool>(), any::<bool>(), 0u8..40, proptest::option::of((0usize..80, any::<u8>()))),
    )
        .prop_map(|((kind, a, b, sport, dport), (seq, ack, flags), (zone, commit, force, secs, corrupt))| Step {
            kind,
            a,
            b,
            sport,
            dport,
            seq,
            ack,
            flags,
            zone,
            commit,
            force,
            secs,
            corrupt,
        })
}

fn build(s: &Step) -> Vec<u8> {
    let ip = |x: u8| format!("10.0.0.{x}");
    let ip6 = |x: u8| format!("fd00::{x}");
    let mut p = match s.kind {
        0 => udp4(&ip(s.a), &ip(s.b), s.sport, s.dport),
        1 => tcp4(&ip(s.a), &ip(s.b), s.sport, s.dport, s.seq % 4096, s.ack % 4096, s.flags, 1000, (s.seq % 3) as usize),
        2 => icmp4_echo(&ip(s.a), &ip(s.b), s.sport, s.flags & 1 == 0),
        3 => icmp4_error(&ip(s.a), &ip(s.b), 3, 1, &udp4(&ip(s.b), &ip(s.a), s.sport, s.dport)),
        _ => udp6(&ip6(s.a), &ip6(s.b), s.sport, s.dport),
    };
    if let Some((i, x)) = s.corrupt {
        if !p.is_empty() {
            let n = p.len();
            p[i % n] ^= x;
            p.truncate(n - (x as usize % 3));
        }
    }
    p
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_keep_zones_apart(steps in proptest::collection::vec(step(), 1..60)) {
        let t = Tracker::new(TrackerConfig { max_conns: 16, shards: 4, ..Default::default() });
        let mut committed_zones = std::collections::BTreeSet::new();
        let mut now = 1_000_000_000_000u64;
        for s in &steps {
            now += s.secs as u64 * 1_000_000_000;
            let l3 = build(s);
            let family = if s.kind == 4 { Family::Ipv6 } else { Family::Ipv4 };
            let params = CtParams { zone: Zone(s.zone), commit: s.commit, force: s.force, ..Default::default() };
            let mut out = [CtResult::default()];
            t.execute(&[CtPacket { l3: &l3, family, flags: PktFlags::empty() }], &params, now, &mut out);
            prop_assert!(out[0].state.contains(ct::CtState::TRK));
            if let Some(o) = out[0].orig {
                prop_assert_eq!(o.zone, Zone(s.zone), "a packet matched a connection of another zone");
            }
            if s.commit {
                committed_zones.insert(s.zone);
            }
            if s.secs % 7 == 0 {
                t.sweep(now, 64);
            }
        }
        let dump = t.dump(&FlushFilter::default(), now);
        prop_assert_eq!(dump.len(), t.len());
        prop_assert!(t.len() <= 16);
        for z in 0..3u16 {
            let n = dump.iter().filter(|d| d.zone == Zone(z)).count();
            prop_assert_eq!(n as u32, t.zones.count(Zone(z)));
            if n > 0 {
                prop_assert!(committed_zones.contains(&z));
            }
        }
        prop_assert!(dump.iter().all(|d| d.orig.zone == d.zone && d.reply.zone == d.zone));
    }
}
