//! Table pressure (see `ct::pressure`): early-drop order, assured entries
//! only evicted by explicit policy, embryonic timeouts that shrink near
//! the limit and recover below it, and bounded sweeps.

mod pkts;

use ct::conn::ConnStatus;
use ct::flush::FlushFilter;
use ct::packet::tcp_flags::{ACK, SYN};
use ct::pressure::PressureConfig;
use ct::{
    ConnKey, CtPacket, CtParams, CtResult, CtState, Family, PktFlags, Tracker, TrackerConfig, Zone,
};
use pkts::*;

const S: u64 = 1_000_000_000;
const T0: u64 = 1000 * S;

fn run_at(t: &Tracker, l3: &[u8], now: u64) -> CtState {
    let mut out = [CtResult::default()];
    let params = CtParams {
        zone: Zone(0),
        commit: true,
        ..Default::default()
    };
    t.execute(
        &[CtPacket {
            l3,
            family: Family::Ipv4,
            flags: PktFlags::empty(),
        }],
        &params,
        now,
        &mut out,
    );
    out[0].state
}

fn tracker(max: u32) -> Tracker {
    Tracker::new(TrackerConfig {
        max_conns: max,
        shards: 1,
        ..Default::default()
    })
}

/// A UDP connection seen both ways twice: assured.
fn assured_udp(t: &Tracker, i: u8) {
    let (a, b) = ("10.0.0.1".to_string(), format!("10.0.9.{i}"));
    for _ in 0..2 {
        run_at(t, &udp4(&a, &b, 1000, 53), T0);
        run_at(t, &udp4(&b, &a, 53, 1000), T0);
    }
}

fn keys(t: &Tracker, now: u64) -> Vec<(ConnKey, ConnStatus, u32)> {
    t.dump(&FlushFilter::default(), now)
        .into_iter()
        .map(|d| (d.orig, d.status, d.timeout))
        .collect()
}

fn has_dst(t: &Tracker, dst: &str) -> bool {
    let dst: std::net::IpAddr = dst.parse().unwrap();
    keys(t, T0).iter().any(|(k, _, _)| k.dst_ip() == dst)
}

#[test]
fn early_drop_order_unreplied_then_replied_then_never_assured() {
    let t = tracker(4);
    assured_udp(&t, 1);
    assured_udp(&t, 2);
    // Replied but not assured: a TCP handshake stopped at SYN_RECV.
    run_at(
        &t,
        &tcp4("10.0.0.1", "10.0.8.1", 40000, 80, 100, 0, SYN, 64000, 0),
        T0,
    );
    run_at(
        &t,
        &tcp4(
            "10.0.8.1",
            "10.0.0.1",
            80,
            40000,
            7,
            101,
            SYN | ACK,
            64000,
            0,
        ),
        T0,
    );
    // Unreplied.
    run_at(&t, &udp4("10.0.0.1", "10.0.7.1", 1000, 53), T0);
    assert_eq!(t.len(), 4);
    let st = keys(&t, T0);
    assert_eq!(
        st.iter()
            .filter(|(_, s, _)| s.contains(ConnStatus::ASSURED))
            .count(),
        2
    );

    // 1st new: the unreplied one goes.
    assert!(run_at(&t, &udp4("10.0.0.1", "10.0.6.1", 1, 2), T0).contains(CtState::NEW));
    assert!(!has_dst(&t, "10.0.7.1") && has_dst(&t, "10.0.8.1"));
    // Make the newcomer assured; 2nd new: the replied, unassured TCP goes.
    run_at(&t, &udp4("10.0.6.1", "10.0.0.1", 2, 1), T0);
    run_at(&t, &udp4("10.0.0.1", "10.0.6.1", 1, 2), T0);
    assert!(run_at(&t, &udp4("10.0.0.1", "10.0.6.2", 1, 2), T0).contains(CtState::NEW));
    assert!(!has_dst(&t, "10.0.8.1"));
    run_at(&t, &udp4("10.0.6.2", "10.0.0.1", 2, 1), T0);
    run_at(&t, &udp4("10.0.0.1", "10.0.6.2", 1, 2), T0);
    assert!(keys(&t, T0)
        .iter()
        .all(|(_, s, _)| s.contains(ConnStatus::ASSURED)));

    // All assured: refused by default.
    assert!(run_at(&t, &udp4("10.0.0.1", "10.0.5.1", 1, 2), T0).contains(CtState::INV));
    assert_eq!(t.counters().refused, 1);
    assert_eq!(t.counters().early_drops, 2);
    assert_eq!(t.len(), 4);

    // The zone's policy allows evicting assured entries.
    t.zones.set_evict_assured(Zone(0), true);
    assert!(run_at(&t, &udp4("10.0.0.1", "10.0.5.2", 1, 2), T0).contains(CtState::NEW));
    assert_eq!(t.counters().early_drops, 3);
    t.zones.set_evict_assured(Zone(0), false);
    // The newcomer (unreplied) is the preferred victim again.
    assert!(run_at(&t, &udp4("10.0.0.1", "10.0.5.3", 1, 2), T0).contains(CtState::NEW));
    assert!(!has_dst(&t, "10.0.5.2"));
    run_at(&t, &udp4("10.0.5.3", "10.0.0.1", 2, 1), T0);
    run_at(&t, &udp4("10.0.0.1", "10.0.5.3", 1, 2), T0);
    assert!(run_at(&t, &udp4("10.0.0.1", "10.0.5.4", 1, 2), T0).contains(CtState::INV));

    // The tracker-wide policy too.
    t.set_pressure(&PressureConfig {
        evict_assured: true,
        ..Default::default()
    })
    .unwrap();
    assert!(run_at(&t, &udp4("10.0.0.1", "10.0.5.5", 1, 2), T0).contains(CtState::NEW));
    assert_eq!(t.len(), 4);
}

#[test]
fn embryonic_timeouts_shrink_near_full_and_recover() {
    let t = tracker(10);
    assured_udp(&t, 1);
    // 8 unreplied: count 9 of 10 after them; the 8th was admitted at 8/10
    // (below 90 %) with the normal 30 s.
    for i in 0..8 {
        run_at(&t, &udp4("10.0.0.1", &format!("10.0.1.{i}"), 1000, 53), T0);
    }
    assert!(!t.pressure_status().under_pressure);
    assert!(keys(&t, T0)
        .iter()
        .all(|(_, s, to)| s.contains(ConnStatus::ASSURED) || *to == 30));
    // The 10th is committed at 9/10 = 90 %: pressure, 5 s.
    run_at(&t, &udp4("10.0.0.1", "10.0.2.1", 1000, 53), T0);
    assert!(t.pressure_status().under_pressure);
    let to = |dst: &str| {
        let d: std::net::IpAddr = dst.parse().unwrap();
        keys(&t, T0)
            .iter()
            .find(|(k, _, _)| k.dst_ip() == d)
            .map(|x| x.2)
    };
    assert_eq!(to("10.0.2.1"), Some(5));
    // A TCP SYN in a full table: early drop makes room, and it gets 5 s
    // instead of 120 s; after its SYN-ACK (SYN_RECV) still 5 s, not 60 s.
    run_at(
        &t,
        &tcp4("10.0.0.1", "10.0.3.1", 40000, 80, 100, 0, SYN, 64000, 0),
        T0,
    );
    assert_eq!(to("10.0.3.1"), Some(5));
    run_at(
        &t,
        &tcp4(
            "10.0.3.1",
            "10.0.0.1",
            80,
            40000,
            7,
            101,
            SYN | ACK,
            64000,
            0,
        ),
        T0,
    );
    assert_eq!(to("10.0.3.1"), Some(5));
    // Established: never shortened.
    run_at(
        &t,
        &tcp4("10.0.0.1", "10.0.3.1", 40000, 80, 101, 8, ACK, 64000, 0),
        T0,
    );
    assert_eq!(to("10.0.3.1"), Some(432000));
    assert_eq!(t.len(), 10);

    // 4 s later nothing is due yet.
    t.sweep(T0 + 4 * S, 1 << 20);
    assert_eq!(t.len(), 10);
    // 6 s later: the 5 s entries expire on the wheel, and the reaper takes
    // the unreplied ones that got 30 s before pressure (idle 6 s > 5 s).
    t.sweep(T0 + 6 * S, 1 << 20);
    let left = keys(&t, T0 + 6 * S);
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().all(|(_, s, _)| s.contains(ConnStatus::ASSURED)));
    // 2/10 < 80 %: pressure over, normal timeouts again.
    assert!(!t.pressure_status().under_pressure);
    assert_eq!(t.pressure_status().episodes, 1);
    run_at(&t, &udp4("10.0.0.1", "10.0.4.1", 1000, 53), T0 + 6 * S);
    let d: std::net::IpAddr = "10.0.4.1".parse().unwrap();
    let k = keys(&t, T0 + 6 * S);
    assert_eq!(
        k.iter().find(|(k, _, _)| k.dst_ip() == d).map(|x| x.2),
        Some(30)
    );
}

#[test]
fn hysteresis_keeps_pressure_until_below_low_mark() {
    let t = tracker(100);
    t.set_pressure(&PressureConfig {
        high_pct: 50,
        low_pct: 20,
        embryonic_secs: 2,
        evict_assured: false,
    })
    .unwrap();
    for i in 0..51u32 {
        let dst = format!("10.{}.{}.1", i / 200, i % 200);
        run_at(&t, &udp4("10.9.0.1", &dst, 1000, 53), T0);
    }
    assert!(t.pressure_status().under_pressure);
    // Flush down to 35 (above the low mark of 20): still under pressure.
    let flush_dst = |cidr: &str| {
        let mut f = FlushFilter::default();
        f.orig.dst = Some(ct::flush::Cidr::parse(cidr).unwrap());
        t.flush(&f, T0)
    };
    assert_eq!(flush_dst("10.0.0.0/20"), 16);
    t.sweep(T0, 1024);
    assert_eq!(t.len(), 35);
    assert!(t.pressure_status().under_pressure);
    // Below 20: pressure ends.
    assert_eq!(flush_dst("10.0.0.0/19"), 16);
    t.sweep(T0, 1024);
    assert_eq!(t.len(), 19);
    assert!(!t.pressure_status().under_pressure);
    assert!(t
        .set_pressure(&PressureConfig {
            low_pct: 60,
            high_pct: 50,
            ..Default::default()
        })
        .unwrap_err()
        .contains("low_pct=60"));
}

#[test]
fn sweep_work_is_bounded_per_call() {
    let shards = 64;
    let t = Tracker::new(TrackerConfig {
        max_conns: 1 << 20,
        shards,
        ..Default::default()
    });
    let n = 20_000u32;
    for i in 0..n {
        let dst = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
        run_at(&t, &udp4("172.16.0.1", &dst, 1000, 53), T0);
    }
    // All due on the same second: each call examines at most
    // max(budget, 16 per shard) entries.
    let now = T0 + 31 * S;
    let budget = 2048;
    let mut calls = 0;
    let mut total = 0;
    while !t.is_empty() {
        let e = t.sweep(now, budget);
        assert!(e <= budget.max(16 * shards), "{e} in one call");
        total += e;
        calls += 1;
        assert!(calls < 100);
    }
    assert_eq!(total, n as usize);
    assert!(calls >= n as usize / budget);
}

/// A full table of assured connections and one unreplied one: every new
/// connection evicts the one unreplied entry, whichever of the two shards
/// either lands in (early drop looks in the neighbouring shards when its
/// own has no victim). Without that, about half of the newcomers would be
/// refused.
#[test]
fn early_drop_finds_a_victim_in_a_neighbouring_shard() {
    let t = Tracker::new(TrackerConfig {
        max_conns: 8,
        shards: 2,
        seed: Some(3),
        ..Default::default()
    });
    for i in 1..=7 {
        assured_udp(&t, i);
    }
    run_at(&t, &udp4("10.0.0.1", "10.0.7.1", 1000, 53), T0);
    assert_eq!(t.len(), 8);
    for i in 0..20u16 {
        let st = run_at(&t, &udp4("10.0.0.2", "10.0.7.2", 2000 + i, 53), T0);
        assert!(st.contains(CtState::NEW), "newcomer {i}: {st:?}");
        assert_eq!(t.len(), 8);
    }
    assert_eq!(t.counters().refused, 0);
    assert_eq!(t.counters().early_drops, 20);
    // The assured ones all survived.
    assert_eq!(
        keys(&t, T0)
            .iter()
            .filter(|(_, s, _)| s.contains(ConnStatus::ASSURED))
            .count(),
        7
    );
}
