//! Lifecycle events through subscriber queues: reliable delivery (the
//! missed-event cache and the dying list) with a tiny queue, and an
//! unreliable subscriber alongside. The clock is injected (no sleeps).

mod pkts;

use std::collections::HashMap;
use std::sync::Arc;

use ct::events::queue::{EventFilter, EventQueue};
use ct::events::{ConnEvent, DestroyCause, EventKind};
use ct::flush::FlushFilter;
use ct::{ConnKey, CtPacket, CtParams, CtResult, Family, PktFlags, Tracker, TrackerConfig, Zone};
use pkts::*;

const S: u64 = 1_000_000_000;
const T0: u64 = 1000 * S;

fn params(zone: u16, commit: bool) -> CtParams {
    CtParams {
        zone: Zone(zone),
        commit,
        ..Default::default()
    }
}

fn run_batch(t: &Tracker, pkts: &[Vec<u8>], params: &CtParams, now: u64) -> Vec<CtResult> {
    let ps: Vec<CtPacket<'_>> = pkts
        .iter()
        .map(|l3| CtPacket {
            l3,
            family: Family::Ipv4,
            flags: PktFlags::empty(),
        })
        .collect();
    let mut out = vec![CtResult::default(); ps.len()];
    t.execute(&ps, params, now, &mut out);
    out
}

fn run_at(t: &Tracker, l3: &[u8], params: &CtParams, now: u64) -> CtResult {
    run_batch(t, &[l3.to_vec()], params, now)[0]
}

fn addr(i: u32) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
}

/// Events one subscriber received, per connection (original tuple).
#[derive(Default)]
struct Seen {
    by_conn: HashMap<ConnKey, Vec<EventKind>>,
    destroys: usize,
}

impl Seen {
    fn drain(&mut self, q: &EventQueue, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            let Some(ev) = q.pop() else { break };
            self.record(&ev);
            n += 1;
        }
        n
    }
    fn record(&mut self, ev: &ConnEvent) {
        let kinds = self.by_conn.entry(ev.conn.orig).or_default();
        assert!(
            !kinds.contains(&EventKind::Destroy),
            "{:?} after DESTROY of {:?}",
            ev.kind,
            ev.conn.orig
        );
        if ev.kind == EventKind::Destroy {
            self.destroys += 1;
            assert!(ev.end_ns.is_some());
        }
        kinds.push(ev.kind);
    }
}

#[test]
fn reliable_subscriber_gets_every_destroy_exactly_once() {
    const N: u32 = 100_000;
    let t = Tracker::new(TrackerConfig {
        shards: 64,
        seed: Some(7),
        ..Default::default()
    });
    let reliable = Arc::new(EventQueue::new(64, true));
    let unreliable = Arc::new(EventQueue::new(16, false));
    t.subscribe(reliable.clone());
    t.subscribe(unreliable.clone());
    let mut seen = Seen::default();

    // 100,000 short UDP connections, committed then answered, 32 at a
    // time, with a reader that takes only 16 events per round.
    let mut now = T0;
    for base in (0..N).step_by(32) {
        let ids = base..(base + 32).min(N);
        let fwd: Vec<Vec<u8>> = ids
            .clone()
            .map(|i| udp4(&addr(i), "192.0.2.1", 1024 + (i % 5000) as u16, 53))
            .collect();
        let rev: Vec<Vec<u8>> = ids
            .map(|i| udp4("192.0.2.1", &addr(i), 53, 1024 + (i % 5000) as u16))
            .collect();
        run_batch(&t, &fwd, &params(1, true), now);
        run_batch(&t, &rev, &params(1, false), now);
        seen.drain(&reliable, 16);
        now += S / 1000;
    }
    assert_eq!(t.len(), N as usize);
    assert_eq!(t.dying_len(), 0);
    let refused_before_flush = t.counters().events_refused;
    // The unreliable queue was never drained: it holds its 16 and refused
    // the rest of the 2 events per connection (NEW, then UPDATE on reply).
    assert_eq!(unreliable.len(), 16);
    assert!(refused_before_flush >= 2 * N as u64 - 16);

    // A connection that keeps the clock-driven phase honest: its packets
    // run between the reader's rounds (zone 2, stays alive).
    let keep = udp4("10.200.0.1", "192.0.2.9", 7, 7);
    let keep_r = udp4("192.0.2.9", "10.200.0.1", 7, 7);
    run_at(&t, &keep, &params(2, true), now);
    run_at(&t, &keep_r, &params(2, false), now);

    // Flush zone 1: every DESTROY but the few the queue takes goes dying,
    // still counted against the limit.
    let flush_at = now + S;
    let flushed = t.flush(
        &FlushFilter {
            zone: Some(Zone(1)),
            ..Default::default()
        },
        flush_at,
    );
    assert_eq!(flushed, N as usize);
    assert!(t.dying_len() >= N as usize - 64, "{}", t.dying_len());
    assert_eq!(t.len(), 1 + t.dying_len());

    // The limit counts dying entries: with the limit at the current count
    // a new commit is refused.
    t.set_max_conns(t.len() as u32);
    let refused = t.counters().refused;
    let extra = udp4("10.201.0.1", "192.0.2.9", 8, 8);
    run_at(&t, &extra, &params(3, true), flush_at);
    assert_eq!(t.counters().refused, refused + 1);
    t.set_max_conns(3_000_000);

    // Drain, drive a packet, sweep, advance the clock; the dying list
    // empties as the reader keeps up, every DESTROY arriving once.
    now = flush_at;
    let mut rounds = 0;
    while seen.destroys < N as usize {
        rounds += 1;
        assert!(rounds < 20_000, "stuck at {} destroys", seen.destroys);
        seen.drain(&reliable, usize::MAX);
        run_at(&t, &keep, &params(2, false), now);
        t.sweep(now, 4096);
        assert_eq!(t.len(), 1 + t.dying_len());
        now += S;
    }
    seen.drain(&reliable, usize::MAX);
    assert_eq!(t.dying_len(), 0);
    assert_eq!(t.len(), 1);
    assert_eq!(seen.destroys, N as usize);
    let mut zone1 = 0;
    for (key, kinds) in &seen.by_conn {
        if key.zone != Zone(1) {
            continue;
        }
        zone1 += 1;
        let d = kinds.iter().filter(|&&k| k == EventKind::Destroy).count();
        assert_eq!(d, 1, "{key:?}: {kinds:?}");
        assert_eq!(
            kinds.last(),
            Some(&EventKind::Destroy),
            "{key:?}: {kinds:?}"
        );
    }
    assert_eq!(zone1, N as usize);
    // Retried DESTROYs spread over more than one grace period's worth of
    // sweeps, and never went to the unreliable subscriber.
    assert!(rounds > 15, "{rounds}");
    assert_eq!(unreliable.len(), 16);
}

#[test]
fn missed_new_and_update_are_merged_into_the_next_packet() {
    let t = Tracker::new(TrackerConfig {
        seed: Some(1),
        ..Default::default()
    });
    let q = Arc::new(EventQueue::new(1, true));
    t.subscribe(q.clone());
    let a = udp4("10.0.0.1", "10.0.0.9", 1, 53);
    let b = udp4("10.0.0.2", "10.0.0.9", 2, 53);
    let b_r = udp4("10.0.0.9", "10.0.0.2", 53, 2);
    run_at(&t, &a, &params(0, true), T0);
    run_at(&t, &b, &params(0, true), T0); // NEW b refused: queue full
    assert_eq!(t.counters().events_refused, 1);
    assert_eq!(q.pop().map(|e| e.kind), Some(EventKind::New)); // a's
    assert!(q.is_empty());

    // b's reply: the missed NEW merged with the UPDATE it causes.
    run_at(&t, &b_r, &params(0, false), T0 + S);
    let ev = q.pop().expect("merged event");
    assert_eq!(ev.kind, EventKind::New);
    assert_eq!(ev.conn.orig.src_port, 2);
    assert_eq!(ev.conn.counters[1].packets, 1);
    assert!(ev.conn.status.contains(ct::conn::ConnStatus::SEEN_REPLY));
    assert!(!ev.conn.status.intersects(ct::conn::ConnStatus::MISSED));
    // Nothing missed, nothing changed: no event.
    run_at(&t, &b_r, &params(0, false), T0 + S);
    assert!(q.is_empty());

    // A mark change refused (queue full), then sent with the next packet.
    run_at(&t, &a, &params(0, false), T0 + S); // a: UDP first -> single
    assert_eq!(q.pop().map(|e| e.kind), Some(EventKind::Update));
    let dummy = udp4("10.0.0.3", "10.0.0.9", 3, 53);
    run_at(&t, &dummy, &params(0, true), T0 + S); // fills the queue
    let mut set_mark = params(0, true);
    set_mark.mark = Some((0x42, 0xff));
    run_at(&t, &b, &set_mark, T0 + 2 * S); // UPDATE refused
    assert_eq!(q.pop().map(|e| e.conn.orig.src_port), Some(3));
    run_at(&t, &b, &params(0, false), T0 + 3 * S);
    let ev = q.pop().expect("missed update");
    assert_eq!((ev.kind, ev.conn.mark), (EventKind::Update, 0x42));
}

#[test]
fn missed_new_is_never_sent_after_its_destroy() {
    let t = Tracker::new(TrackerConfig {
        seed: Some(2),
        ..Default::default()
    });
    let q = Arc::new(EventQueue::new(1, true));
    t.subscribe(q.clone());
    let fill = udp4("10.0.0.1", "10.0.0.9", 1, 53);
    let c = udp4("10.0.0.2", "10.0.0.9", 2, 53);
    run_at(&t, &fill, &params(0, true), T0);
    run_at(&t, &c, &params(5, true), T0); // NEW refused, kept as missed
    let flushed = t.flush(
        &FlushFilter {
            zone: Some(Zone(5)),
            ..Default::default()
        },
        T0 + S,
    );
    assert_eq!(flushed, 1);
    assert_eq!((t.dying_len(), t.len()), (1, 2));
    assert_eq!(q.pop().map(|e| e.conn.zone), Some(Zone(0)));
    // Not due yet at the flush time... eventually (grace < 15 s) it is.
    let mut got = Vec::new();
    for s in 1..=16 {
        t.sweep(T0 + s * S, 1024);
        got.extend(std::iter::from_fn(|| q.pop()));
    }
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].kind, EventKind::Destroy);
    assert_eq!(got[0].cause, Some(DestroyCause::Flushed));
    assert_eq!(got[0].conn.zone, Zone(5));
    assert_eq!((t.dying_len(), t.len()), (0, 1));
    // A new connection with the same tuple is new (the old one is gone).
    run_at(&t, &c, &params(5, true), T0 + 20 * S);
    assert_eq!(q.pop().map(|e| e.kind), Some(EventKind::New));
}

#[test]
fn filtered_queue_sees_only_its_zone_and_kinds() {
    let t = Tracker::default();
    let q = Arc::new(EventQueue::with_filter(
        8,
        false,
        EventFilter {
            zone: Some(Zone(4)),
            kinds: Some([EventKind::Destroy].into_iter().collect()),
        },
    ));
    t.subscribe(q.clone());
    run_at(
        &t,
        &udp4("10.0.0.1", "10.0.0.9", 1, 53),
        &params(4, true),
        T0,
    );
    run_at(
        &t,
        &udp4("10.0.0.2", "10.0.0.9", 1, 53),
        &params(3, true),
        T0,
    );
    assert!(q.is_empty());
    t.flush(&FlushFilter::default(), T0 + S);
    let ev = q.pop().expect("destroy of zone 4");
    assert_eq!((ev.kind, ev.conn.zone), (EventKind::Destroy, Zone(4)));
    assert_eq!(ev.conn.counters[0].packets, 1);
    assert_eq!((ev.conn.start_ns, ev.end_ns), (T0, Some(T0 + S)));
    assert!(q.is_empty());
    assert_eq!(t.counters().events_refused, 0);
}

#[test]
fn unsubscribing_a_reliable_sink_releases_what_only_it_held() {
    let t = Tracker::new(TrackerConfig {
        seed: Some(3),
        ..Default::default()
    });
    let q = Arc::new(EventQueue::new(1, true));
    let sink: Arc<dyn ct::events::EventSink> = q.clone();
    t.subscribe(sink.clone());
    run_at(
        &t,
        &udp4("10.0.0.1", "10.0.0.9", 1, 53),
        &params(0, true),
        T0,
    );
    run_at(
        &t,
        &udp4("10.0.0.2", "10.0.0.9", 2, 53),
        &params(0, true),
        T0,
    );
    t.flush(&FlushFilter::default(), T0 + S);
    // The queue is full of the first NEW: both DESTROYs are dying.
    assert_eq!((t.dying_len(), t.len()), (2, 2));
    assert!(t.unsubscribe(&sink));
    assert!(!t.unsubscribe(&sink));
    assert_eq!((t.dying_len(), t.len()), (0, 0));
    // The slot is reused; the new subscriber gets nothing stale.
    let q2 = Arc::new(EventQueue::new(8, true));
    t.subscribe(q2.clone());
    t.sweep(T0 + 30 * S, 1024);
    assert!(q2.is_empty());
    run_at(
        &t,
        &udp4("10.0.0.3", "10.0.0.9", 3, 53),
        &params(0, true),
        T0 + 30 * S,
    );
    assert_eq!(q2.pop().map(|e| e.kind), Some(EventKind::New));
    assert_eq!(q.len(), 1);
}
