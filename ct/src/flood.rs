//! SYN-flood scenario for tests and benches (`tests/flood.rs`,
//! `ct-flood`): spoofed SYNs against a bounded table while real TCP
//! connections carry traffic, on an injected clock.
//!
//! The flood sends `flood_syns` SYNs to 192.168.0.1:80, each from a
//! different spoofed source (100.0.0.0/8 address and port drawn from a
//! counter), `flood_rate` per simulated second, in batches of 32, all
//! committed in zone 0 (a firewall that commits every `+new`). Flood
//! packets carry the NIC "checksums good" flags, like a DPDK port would
//! set, so they are patched in place without recomputing checksums (no
//! allocation per packet). Between two flood batches one step of one real
//! connection runs (round robin): `real_conns` clients 10.1.x.y:port open a
//! connection to 192.168.0.1:80 (half before the flood, half during it,
//! each handshake interleaved with flood batches) and then exchange 100-byte
//! segments, client and server in turn, with correct sequence numbers. The
//! table is swept every `sweep_every_ms` simulated ms with `sweep_budget`.
//! After the flood, time advances second by second for `settle_secs` with
//! one data exchange per real connection per second.

use std::net::Ipv4Addr;
use std::time::Instant;

use crate::build::{Builder, Tcp};
use crate::packet::tcp_flags::{ACK, PSH, SYN};
use crate::{
    CtPacket, CtParams, CtResult, CtState, Family, PktFlags, Tracker, TrackerConfig, Zone,
};

const S: u64 = 1_000_000_000;
const T0: u64 = 1000 * S;
const SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
const BURST: usize = 32;

/// Scenario size.
#[derive(Clone, Copy, Debug)]
pub struct FloodConfig {
    pub max_conns: u32,
    pub flood_syns: usize,
    /// Flood SYNs per simulated second.
    pub flood_rate: u64,
    pub real_conns: usize,
    pub sweep_every_ms: u64,
    pub sweep_budget: usize,
    pub settle_secs: u32,
}

impl FloodConfig {
    /// The full-scale scenario: 1M spoofed SYNs (100k per simulated
    /// second) against a table of 200k while 1,000 connections work.
    pub fn full() -> FloodConfig {
        FloodConfig {
            max_conns: 200_000,
            flood_syns: 1_000_000,
            flood_rate: 100_000,
            real_conns: 1000,
            sweep_every_ms: 100,
            sweep_budget: 65_536,
            settle_secs: 10,
        }
    }
}

/// What happened.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FloodReport {
    pub flood_sent: usize,
    /// Flood SYNs that got an entry (`+new`).
    pub flood_admitted: usize,
    /// Flood SYNs refused (`+inv`: no victim found in the shard's window).
    pub flood_refused: usize,
    /// Real-connection packets answered `+inv`, or not `+est` once the
    /// handshake was done (a lost or invalidated connection).
    pub real_bad: usize,
    pub real_packets: usize,
    /// Real connections whose handshake completed.
    pub real_open: usize,
    /// Highest live count seen after any batch.
    pub max_len: usize,
    pub len_at_flood_end: usize,
    /// Live count after `settle_secs` simulated seconds without flood.
    pub len_settled: usize,
    /// Seconds after the flood until the count was at most `real_conns`.
    pub settle_to_real_secs: Option<u32>,
    pub early_drops: u64,
    pub expired: u64,
    pub refused: u64,
    pub pressure_episodes: u64,
    pub under_pressure_at_end: bool,
    /// Wall-clock seconds of the flood phase (flood and real packets,
    /// sweeps included) and the flood SYNs per wall second.
    pub flood_wall_secs: f64,
    pub flood_syns_per_sec: f64,
}

struct RealConn {
    client: Ipv4Addr,
    sport: u16,
    cseq: u32,
    sseq: u32,
    open: bool,
}

impl RealConn {
    fn client(&self) -> Builder {
        Builder::v4(self.client, SERVER)
    }
    fn server(&self) -> Builder {
        Builder::v4(SERVER, self.client)
    }
}

fn exec_one(t: &Tracker, l3: &[u8], now: u64) -> CtResult {
    let params = CtParams {
        zone: Zone(0),
        commit: true,
        ..Default::default()
    };
    let mut out = [CtResult::default()];
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
    out[0]
}

/// Spoofed SYN packets patched in place.
struct FloodGen {
    bufs: Vec<Vec<u8>>,
    next: u32,
}

impl FloodGen {
    fn new() -> FloodGen {
        let tmpl = Builder::v4(Ipv4Addr::new(100, 0, 0, 1), SERVER)
            .tcp(&Tcp::new(1024, 80).flags(SYN).seq(1).win(64240));
        FloodGen {
            bufs: vec![tmpl; BURST],
            next: 0,
        }
    }
    /// Fill `n` packets with the next spoofed sources.
    fn fill(&mut self, n: usize) {
        for b in &mut self.bufs[..n] {
            let i = self.next;
            self.next = self.next.wrapping_add(1);
            // 100.x.y.z from the counter's low 24 bits, port from the rest.
            let a = 0x6400_0000 | (i & 0x00ff_ffff);
            b[12..16].copy_from_slice(&a.to_be_bytes());
            let port = 1024 + (i >> 24) as u16;
            b[20..22].copy_from_slice(&port.to_be_bytes());
            b[24..28].copy_from_slice(&i.to_be_bytes());
        }
    }
}

/// Run the scenario on a fresh tracker.
pub fn run_syn_flood(cfg: &FloodConfig) -> FloodReport {
    let t = Tracker::new(TrackerConfig {
        max_conns: cfg.max_conns,
        seed: Some(0x5eed),
        ..Default::default()
    });
    let mut rep = FloodReport::default();
    let mut now = T0;
    let mut real: Vec<RealConn> = (0..cfg.real_conns)
        .map(|i| RealConn {
            client: Ipv4Addr::new(10, 1, (i / 250) as u8, (i % 250) as u8 + 1),
            sport: 20000 + (i % 40000) as u16,
            cseq: 1000 + i as u32 * 7,
            sseq: 500_000 + i as u32 * 11,
            open: false,
        })
        .collect();
    let mut check = |rep: &mut FloodReport, r: CtResult, must_est: bool| {
        rep.real_packets += 1;
        if r.state.contains(CtState::INV)
            || r.state.is_empty()
            || (must_est && !r.state.contains(CtState::EST))
        {
            rep.real_bad += 1;
        }
    };
    let mut gen = FloodGen::new();
    let mut flood_batch = |t: &Tracker, rep: &mut FloodReport, now: u64| {
        let n = BURST.min(cfg.flood_syns - rep.flood_sent);
        if n == 0 {
            return;
        }
        gen.fill(n);
        let pkts: [CtPacket<'_>; BURST] = std::array::from_fn(|k| CtPacket {
            l3: &gen.bufs[k],
            family: Family::Ipv4,
            flags: PktFlags::L4_CSUM_GOOD | PktFlags::IP_CSUM_GOOD,
        });
        let mut out = [CtResult::default(); BURST];
        let params = CtParams {
            zone: Zone(0),
            commit: true,
            ..Default::default()
        };
        t.execute(&pkts[..n], &params, now, &mut out[..n]);
        for o in &out[..n] {
            if o.state.contains(CtState::INV) {
                rep.flood_refused += 1;
            } else if o.state.contains(CtState::NEW) {
                rep.flood_admitted += 1;
            }
        }
        rep.flood_sent += n;
        rep.max_len = rep.max_len.max(t.len());
    };
    // One step of a real connection: the whole handshake (each segment
    // followed by a flood batch), or one data segment each way.
    let real_step = |t: &Tracker,
                     rep: &mut FloodReport,
                     c: &mut RealConn,
                     now: u64,
                     flood: &mut dyn FnMut(&Tracker, &mut FloodReport, u64),
                     check: &mut dyn FnMut(&mut FloodReport, CtResult, bool)| {
        if !c.open {
            let syn = c
                .client()
                .tcp(&Tcp::new(c.sport, 80).flags(SYN).seq(c.cseq).win(64000));
            check(rep, exec_one(t, &syn, now), false);
            flood(t, rep, now);
            let synack = c.server().tcp(
                &Tcp::new(80, c.sport)
                    .flags(SYN | ACK)
                    .seq(c.sseq)
                    .ack(c.cseq + 1)
                    .win(64000),
            );
            check(rep, exec_one(t, &synack, now), true);
            flood(t, rep, now);
            c.cseq += 1;
            c.sseq += 1;
            let ack = c
                .client()
                .tcp(&Tcp::new(c.sport, 80).seq(c.cseq).ack(c.sseq).win(64000));
            check(rep, exec_one(t, &ack, now), true);
            c.open = true;
            rep.real_open += 1;
            return;
        }
        let data = [0x5au8; 100];
        let up = c.client().tcp(
            &Tcp::new(c.sport, 80)
                .flags(ACK | PSH)
                .seq(c.cseq)
                .ack(c.sseq)
                .win(64000)
                .payload(&data),
        );
        c.cseq += 100;
        check(rep, exec_one(t, &up, now), true);
        let down = c.server().tcp(
            &Tcp::new(80, c.sport)
                .flags(ACK | PSH)
                .seq(c.sseq)
                .ack(c.cseq)
                .win(64000)
                .payload(&data),
        );
        c.sseq += 100;
        check(rep, exec_one(t, &down, now), true);
    };
    let mut noflood = |_: &Tracker, _: &mut FloodReport, _: u64| {};

    // Half the real connections open before the flood.
    for c in real.iter_mut().take(cfg.real_conns / 2) {
        real_step(&t, &mut rep, c, now, &mut noflood, &mut check);
    }

    let start = Instant::now();
    let ns_per_batch = (BURST as u64 * S / cfg.flood_rate.max(1)).max(1);
    let sweep_every = cfg.sweep_every_ms * 1_000_000;
    let mut next_sweep = now + sweep_every;
    let mut turn = 0usize;
    while rep.flood_sent < cfg.flood_syns {
        flood_batch(&t, &mut rep, now);
        if !real.is_empty() {
            let i = turn % real.len();
            turn += 1;
            real_step(
                &t,
                &mut rep,
                &mut real[i],
                now,
                &mut flood_batch,
                &mut check,
            );
        }
        now += ns_per_batch;
        if now >= next_sweep {
            t.sweep(now, cfg.sweep_budget);
            next_sweep += sweep_every;
        }
    }
    rep.flood_wall_secs = start.elapsed().as_secs_f64();
    rep.flood_syns_per_sec = rep.flood_sent as f64 / rep.flood_wall_secs.max(1e-9);
    rep.len_at_flood_end = t.len();

    // Connections the flood did not reach yet open now.
    for c in real.iter_mut().filter(|c| !c.open) {
        real_step(&t, &mut rep, c, now, &mut noflood, &mut check);
    }
    for s in 1..=cfg.settle_secs {
        now += S;
        for c in real.iter_mut() {
            real_step(&t, &mut rep, c, now, &mut noflood, &mut check);
        }
        // Sweep at the same pace as during the flood.
        for k in 0..(1000 / cfg.sweep_every_ms.max(1)).max(1) {
            t.sweep(now + k * sweep_every, cfg.sweep_budget);
        }
        if rep.settle_to_real_secs.is_none() && t.len() <= cfg.real_conns {
            rep.settle_to_real_secs = Some(s);
        }
    }
    rep.len_settled = t.len();
    let c = t.counters();
    rep.early_drops = c.early_drops;
    rep.expired = c.expired;
    rep.refused = c.refused;
    let p = t.pressure_status();
    rep.pressure_episodes = p.episodes;
    rep.under_pressure_at_end = p.under_pressure;
    rep
}
