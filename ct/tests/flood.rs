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
