//! A table that survives a SYN flood: spoofed SYNs against a bounded table
//! while real TCP connections carry traffic (see `ct::flood` for the
//! scenario). Debug builds run a scaled-down flood (same ratios: five
//! spoofed sources per table entry, the table full several times over);
//! `--release` and the `ct-flood` binary run the full 1M-against-200k one.

use ct::flood::{run_syn_flood, FloodConfig};

fn config() -> FloodConfig {
    let full = FloodConfig::full();
    if cfg!(debug_assertions) {
        FloodConfig {
            max_conns: 50_000,
            flood_syns: 250_000,
            flood_rate: 25_000,
            ..full
        }
    } else {
        full
    }
}

#[test]
fn syn_flood_spares_real_connections_and_is_reclaimed() {
    let cfg = config();
    let r = run_syn_flood(&cfg);
    eprintln!("{r:#?}");
    assert_eq!(r.flood_sent, cfg.flood_syns);
    // Every real connection opened and none lost a packet or its entry.
    assert_eq!(r.real_open, cfg.real_conns);
    assert_eq!(r.real_bad, 0, "real packets +inv or not +est");
    // Memory bounded: never more entries than the limit.
    assert!(r.max_len <= cfg.max_conns as usize, "{}", r.max_len);
    assert_eq!(
        r.max_len, cfg.max_conns as usize,
        "the flood filled the table"
    );
    // The flood churned through the table: early drop admitted new SYNs
    // (so a real SYN always found room), pressure turned on.
    assert!(r.early_drops > 0 && r.flood_admitted > cfg.max_conns as usize);
    assert!(r.pressure_episodes >= 1);
    // After the flood: shrunken timeouts reclaim it within seconds, back
    // to exactly the real connections.
    assert_eq!(r.len_settled, cfg.real_conns);
    let secs = r.settle_to_real_secs.expect("table never settled");
    assert!(
        secs <= 6,
        "settled after {secs} s (pressure timeout is 5 s)"
    );
    assert!(!r.under_pressure_at_end);
}

/// Selective flush of UNREPLIED UDP in one zone, in shards much larger than
/// one flush slice, while another thread keeps running established traffic
/// in the same shards: exactly the matching entries go, the traffic never
/// sees `+inv` or `+new`.
#[test]
fn selective_flush_across_slices_under_traffic() {
    use ct::build::Builder;
    use ct::flush::{FlushFilter, StateClass, FLUSH_SLICE};
    use ct::{
        CtPacket, CtParams, CtResult, CtState, Family, PktFlags, Tracker, TrackerConfig, Zone,
    };
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

    const NOW: u64 = 1000 * 1_000_000_000;
    let t = Tracker::new(TrackerConfig {
        max_conns: 100_000,
        shards: 4,
        ..Default::default()
    });
    let pkt = |z: u8, i: u32, reply: bool| {
        let a = [10, z, (i >> 8) as u8, i as u8].into();
        let b = [172, 16, (i >> 8) as u8, i as u8].into();
        if reply {
            Builder::v4(b, a).udp(53, 1000, &[])
        } else {
            Builder::v4(a, b).udp(1000, 53, &[])
        }
    };
    let exec = |zone: u16, l3: &[u8]| {
        let mut out = [CtResult::default()];
        let params = CtParams {
            zone: Zone(zone),
            commit: true,
            ..Default::default()
        };
        let p = CtPacket {
            l3,
            family: Family::Ipv4,
            flags: PktFlags::empty(),
        };
        t.execute(&[p], &params, NOW, &mut out);
        out[0].state
    };
    let n = 4000u32; // ~1000 per shard, 4 slices each
    assert!(n / 4 > 3 * FLUSH_SLICE);
    for i in 0..n {
        for z in [1u8, 2] {
            exec(z as u16, &pkt(z, i, false));
            if i % 3 == 0 {
                exec(z as u16, &pkt(z, i, true));
            }
        }
    }
    let traffic: Vec<(Vec<u8>, Vec<u8>)> = (0..256)
        .map(|i| (pkt(3, i, false), pkt(3, i, true)))
        .collect();
    for (o, r) in &traffic {
        exec(3, o);
        exec(3, r);
    }
    let before = t.len();
    let unreplied_z1 = (0..n).filter(|i| i % 3 != 0).count();
    let stop = AtomicBool::new(false);
    let removed = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let mut bad = 0;
            let mut rounds = 0;
            while !stop.load(Relaxed) || rounds == 0 {
                for (o, r) in &traffic {
                    for st in [exec(3, o), exec(3, r)] {
                        if !st.contains(CtState::EST) || st.intersects(CtState::INV | CtState::NEW)
                        {
                            bad += 1;
                        }
                    }
                }
                rounds += 1;
            }
            bad
        });
        let removed = t.flush(
            &FlushFilter {
                zone: Some(Zone(1)),
                proto: Some(17),
                state: StateClass::Unreplied,
                ..Default::default()
            },
            NOW,
        );
        stop.store(true, Relaxed);
        assert_eq!(h.join().unwrap(), 0, "established traffic disturbed");
        removed
    });
    assert_eq!(removed, unreplied_z1);
    assert_eq!(t.len(), before - unreplied_z1);
    assert_eq!(t.zones.count(Zone(2)), n);
    let left_z1 = t.dump(
        &FlushFilter {
            zone: Some(Zone(1)),
            ..Default::default()
        },
        NOW,
    );
    assert_eq!(left_z1.len(), n as usize - unreplied_z1);
    assert!(left_z1
        .iter()
        .all(|d| d.status.contains(ct::conn::ConnStatus::SEEN_REPLY)));
}
