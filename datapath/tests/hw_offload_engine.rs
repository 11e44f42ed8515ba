//! The rte_flow offloader ([`datapath::hw_offload`]) driven by a real
//! pipeline and fast path, against recording devices that implement
//! [`FlowDevice`] in Rust (no EAL: no vdev here can create rte_flow rules,
//! see the module docs' table). What it proves: port probing picks full,
//! partial or none from what validates and whether a trial create works;
//! established connections become rules with the right pattern, actions
//! and queue, off the PMD thread; every hand-back (conntrack flush, flow
//! table change, TCP FIN) removes its rule, so installed == removed and the
//! device is left empty; software-only ports get no create call; a full
//! queue drops requests (counted) without leaking.
//!
//! `cargo test -p datapath --features dpdk --test hw_offload_engine`.
#![cfg(feature = "dpdk")]

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ct::build::{ethernet_with, Builder, Tcp};
use datapath::hw_offload::engine::{
    DeviceLookup, FlowDevice, HwOffload, HwOffloadConfig, RuleHandle, RxqLookup,
};
use datapath::hw_offload::{FastRule, HwOffloader, PortMode};
use datapath::packet::{Packet, PacketBatch, PortNo};
use datapath::pipeline::{Pipeline, PipelineConfig};
use datapath::port::ring::RingPort;
use datapath::port::Port;
use datapath::switch::{PortEntry, Switch};
use dpdk_bindings::flow::{FlowAction, FlowCount, FlowError, FlowItem, FlowRule};
use ofproto::pipeline::VlanMode;
use parking_lot::Mutex;

/// What a fake device accepts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Accepts {
    /// No flow support (ENOSYS on everything), like net_null/net_ring.
    Nothing,
    /// Validates QUEUE-only rules but every create fails, like net_tap
    /// on a kernel without cls_flower.
    QueueValidateOnly,
    /// MARK + QUEUE (and QUEUE) rules.
    MarkQueue,
    /// Everything.
    Full,
}

struct FakeDevice {
    port_id: u16,
    accepts: Accepts,
    live: Mutex<HashMap<u64, FlowRule>>,
    next: AtomicU64,
    creates: AtomicU64,
    validates: AtomicU64,
    /// Held while a create runs (a test can stall the offload thread).
    gate: Mutex<()>,
}

impl FakeDevice {
    fn new(port_id: u16, accepts: Accepts) -> Arc<FakeDevice> {
        Arc::new(FakeDevice {
            port_id,
            accepts,
            live: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            creates: AtomicU64::new(0),
            validates: AtomicU64::new(0),
            gate: Mutex::new(()),
        })
    }

    fn refuse(call: &'static str, errno: i32, kind: u32) -> FlowError {
        FlowError {
            call,
            errno,
            kind,
            message: "refused by the fake device".into(),
        }
    }

    fn check(&self, rule: &FlowRule) -> Result<(), FlowError> {
        let queue_only = rule
            .actions
            .iter()
            .all(|a| matches!(a, FlowAction::Queue(_)));
        let mark_queue = rule
            .actions
            .iter()
            .all(|a| matches!(a, FlowAction::Queue(_) | FlowAction::Mark(_)));
        let ok = match self.accepts {
            Accepts::Nothing => {
                return Err(Self::refuse("rte_flow_validate", libc::ENOSYS, 1));
            }
            Accepts::QueueValidateOnly => queue_only,
            Accepts::MarkQueue => mark_queue,
            Accepts::Full => true,
        };
        if ok {
            Ok(())
        } else {
            Err(Self::refuse("rte_flow_validate", libc::ENOTSUP, 16))
        }
    }

    fn live_rules(&self) -> Vec<FlowRule> {
        self.live.lock().values().cloned().collect()
    }
}

impl FlowDevice for FakeDevice {
    fn name(&self) -> String {
        format!("fake{}", self.port_id)
    }
    fn dpdk_port_id(&self) -> u16 {
        self.port_id
    }
    fn validate(&self, rule: &FlowRule) -> Result<(), FlowError> {
        self.validates.fetch_add(1, Ordering::Relaxed);
        self.check(rule)
    }
    fn create(&self, rule: &FlowRule) -> Result<RuleHandle, FlowError> {
        let _g = self.gate.lock();
        self.creates.fetch_add(1, Ordering::Relaxed);
        self.check(rule)?;
        if self.accepts == Accepts::QueueValidateOnly {
            return Err(Self::refuse("rte_flow_create", libc::EEXIST, 2));
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.live.lock().insert(id, rule.clone());
        Ok(Box::new(id))
    }
    fn destroy(&self, handle: RuleHandle) -> Result<(), FlowError> {
        let id = *handle.downcast::<u64>().expect("our handle");
        match self.live.lock().remove(&id) {
            Some(_) => Ok(()),
            None => Err(Self::refuse("rte_flow_destroy", libc::ENOENT, 2)),
        }
    }
    fn query_count(&self, _: &RuleHandle) -> Result<FlowCount, FlowError> {
        Ok(FlowCount {
            hits: Some(5),
            bytes: Some(500),
        })
    }
}

fn offloader(devs: &[(u32, Arc<FakeDevice>)], cfg: HwOffloadConfig) -> Arc<HwOffload> {
    let map: HashMap<u32, Arc<FakeDevice>> = devs.iter().cloned().collect();
    let lookup: DeviceLookup =
        Arc::new(move |no: PortNo| map.get(&no.0).map(|d| d.clone() as Arc<dyn FlowDevice>));
    let rxq: RxqLookup = Arc::new(|_, thread| Some(thread as u16));
    HwOffload::start(cfg, lookup, rxq).expect("offload thread")
}

fn wait(h: &HwOffload) {
    assert!(h.wait_idle(Duration::from_secs(10)), "offload thread idle");
}

const UDP_FW: &str = "\
table=0,priority=10,udp,actions=ct(table=1,zone=1)
table=1,priority=10,ct_state=+trk+new-inv,udp,in_port=1,actions=ct(commit,zone=1),output:2
table=1,priority=10,ct_state=+trk+est-inv,udp,in_port=1,actions=output:2
table=1,priority=10,ct_state=+trk+est-inv,udp,in_port=2,actions=output:1
";

/// Source NAT to 10.0.0.100 on the way out, un-NAT on the way back.
const SNAT: &str = "\
table=0,priority=10,ip,in_port=1,actions=ct(nat,zone=1,table=1)
table=0,priority=10,ip,in_port=2,actions=ct(nat,zone=1,table=2)
table=1,priority=10,ct_state=+trk+new-inv,ip,actions=ct(commit,zone=1,nat(src=10.0.0.100:5000-5001)),output:2
table=1,priority=10,ct_state=+trk+est-inv,ip,actions=output:2
table=2,priority=10,ct_state=+trk+est+dnat-inv,ip,actions=output:1
";

const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const NAT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);

struct Rig {
    sw: Arc<Switch>,
    pipeline: Pipeline,
    peers: Vec<(u32, RingPort)>,
}

impl Rig {
    fn new(flows: &str, hw: Option<Arc<HwOffload>>) -> Rig {
        let sw = Switch::new(ct::TrackerConfig {
            max_conns: 10_000,
            shards: 16,
            seed: Some(7),
            liberal: false,
        });
        let mut peers = Vec::new();
        for n in [1u32, 2] {
            let (ours, theirs) = RingPort::pair(
                (&format!("p{n}"), PortNo(n)),
                (&format!("peer{n}"), PortNo(n)),
                1,
                4096,
            );
            sw.add_port(PortEntry {
                port: Arc::new(ours),
                vlan: VlanMode::Access(0),
                kind: "ring".into(),
            })
            .unwrap();
            peers.push((n, theirs));
        }
        sw.bridge.ofctl("add-flows", flows, 0).expect("flows");
        sw.set_hw_offload(hw.map(|h| h as Arc<dyn HwOffloader>));
        let pipeline = Pipeline::new(
            sw.clone(),
            PipelineConfig {
                flow_offload: true,
                ..Default::default()
            },
            0,
        );
        Rig {
            sw,
            pipeline,
            peers,
        }
    }

    /// Inject one frame on `port`, run, return (port, frame) sent.
    fn inject(&mut self, port: u32, frame: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let mut b = PacketBatch::new();
        b.push(Packet::from_bytes(frame)).unwrap();
        let peer = &self.peers.iter().find(|(n, _)| *n == port).unwrap().1;
        assert_eq!(peer.tx_burst(0, &mut b, &mut self.pipeline.pool), 1);
        for p in self.sw.ports() {
            let mut batch = PacketBatch::new();
            while p.rx_burst(0, &mut batch, &mut self.pipeline.pool) > 0 {
                self.pipeline.process(&mut batch);
            }
        }
        self.pipeline.flush();
        let mut out = Vec::new();
        for (n, peer) in &self.peers {
            let mut b = PacketBatch::new();
            while peer.rx_burst(0, &mut b, &mut self.pipeline.pool) > 0 {
                for p in b.drain() {
                    out.push((*n, p.data().to_vec()));
                }
            }
        }
        out
    }

    fn revalidate(&mut self) {
        let now = self.sw.clock.now_ms();
        self.pipeline.revalidate(now);
    }
}

fn mac(n: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0, n]
}

fn udp_c2s(sport: u16) -> Vec<u8> {
    ethernet_with(
        mac(1),
        mac(2),
        &Builder::v4(CLIENT, SERVER).udp(sport, 53, b"query"),
    )
}

fn udp_s2c(dport: u16, from_nat: Option<Ipv4Addr>) -> Vec<u8> {
    let dst = from_nat.unwrap_or(CLIENT);
    ethernet_with(
        mac(2),
        mac(1),
        &Builder::v4(SERVER, dst).udp(53, dport, b"answer"),
    )
}

/// Run `n` UDP conversations through the firewall until both directions
/// of each are on the fast path.
fn establish_udp(rig: &mut Rig, n: u16) {
    for i in 0..n {
        let sport = 20_000 + i;
        for _ in 0..3 {
            assert_eq!(rig.inject(1, &udp_c2s(sport)).len(), 1, "c2s forwarded");
            assert_eq!(
                rig.inject(2, &udp_s2c(sport, None)).len(),
                1,
                "s2c forwarded"
            );
        }
    }
}

fn l4_of(rule: &FlowRule) -> (u16, u16) {
    rule.pattern
        .iter()
        .find_map(|it| match *it {
            FlowItem::Udp { src, dst } => Some((src, dst)),
            FlowItem::Tcp { src, dst, .. } => Some((src, dst)),
            _ => None,
        })
        .expect("an L4 item")
}

#[test]
fn probe_picks_the_best_form_that_validates_and_creates() {
    let devs = [
        (1, FakeDevice::new(11, Accepts::Nothing)),
        (2, FakeDevice::new(12, Accepts::QueueValidateOnly)),
        (3, FakeDevice::new(13, Accepts::MarkQueue)),
        (4, FakeDevice::new(14, Accepts::Full)),
    ];
    let h = offloader(&devs, HwOffloadConfig::default());
    match h.probe(PortNo(1)) {
        PortMode::None(why) => assert!(why.contains("errno 38"), "{why}"),
        m => panic!("no flow support must be none, got {m}"),
    }
    // Validates, but the trial create fails: software only.
    match h.probe(PortNo(2)) {
        PortMode::None(why) => assert!(why.contains("validated but create failed"), "{why}"),
        m => panic!("queue-validate-only must be none, got {m}"),
    }
    assert_eq!(
        devs[1].1.creates.load(Ordering::Relaxed),
        1,
        "one trial create"
    );
    assert_eq!(h.probe(PortNo(3)), PortMode::Partial { mark: true });
    assert_eq!(h.probe(PortNo(4)), PortMode::Full);
    assert!(
        matches!(h.probe(PortNo(9)), PortMode::None(_)),
        "not a DPDK port"
    );
    // Trial rules are gone, and probing is once per port.
    for (_, d) in &devs {
        assert!(d.live.lock().is_empty());
    }
    let v = devs[0].1.validates.load(Ordering::Relaxed);
    h.probe(PortNo(1));
    assert_eq!(devs[0].1.validates.load(Ordering::Relaxed), v);
    let s = h.status();
    assert_eq!(s.ports.len(), 5);
    assert_eq!(s.create_calls, 0, "probes are not counted as rule creates");
    h.stop();
}

#[test]
fn partial_rules_follow_fast_path_entries_and_leave_with_them() {
    let d1 = FakeDevice::new(0, Accepts::MarkQueue);
    let d2 = FakeDevice::new(1, Accepts::MarkQueue);
    let h = offloader(
        &[(1, d1.clone()), (2, d2.clone())],
        HwOffloadConfig::default(),
    );
    let mut rig = Rig::new(UDP_FW, Some(h.clone()));
    establish_udp(&mut rig, 4);
    assert_eq!(
        rig.pipeline.offload_count(),
        8,
        "both directions of 4 conns"
    );
    wait(&h);
    let s = h.status();
    assert_eq!(s.installed, 8, "{s:?}");
    assert_eq!((s.failed, s.requests_dropped, s.active), (0, 0, 8));
    // Each port holds its ingress direction's rules: exact 5-tuple, MARK,
    // QUEUE of the polling thread (0).
    let r1 = d1.live_rules();
    let r2 = d2.live_rules();
    assert_eq!((r1.len(), r2.len()), (4, 4));
    for r in &r1 {
        assert!(r.pattern.contains(&FlowItem::Ipv4 {
            src: CLIENT.octets(),
            dst: SERVER.octets()
        }));
        let (sp, dp) = l4_of(r);
        assert!((20_000..20_004).contains(&sp) && dp == 53, "{r:?}");
        assert!(matches!(r.actions[..], [FlowAction::Mark(m), FlowAction::Queue(0)] if m != 0));
    }
    for r in &r2 {
        assert!(r.pattern.contains(&FlowItem::Ipv4 {
            src: SERVER.octets(),
            dst: CLIENT.octets()
        }));
        assert_eq!(l4_of(r).0, 53);
    }
    assert_eq!(
        s.ports.iter().map(|p| p.rules).sum::<u64>(),
        8,
        "per-port rule counts"
    );
    // Packets keep flowing (software still forwards them).
    assert_eq!(rig.inject(1, &udp_c2s(20_000)).len(), 1);
    // Conntrack flush: the entries go at the next revalidation, and so do
    // their rules.
    rig.sw.ct.flush(&Default::default(), rig.sw.clock.now_ns());
    rig.revalidate();
    assert_eq!(rig.pipeline.offload_count(), 0);
    wait(&h);
    let s = h.status();
    assert_eq!((s.installed, s.removed, s.active), (8, 8, 0), "{s:?}");
    assert!(d1.live.lock().is_empty() && d2.live.lock().is_empty());
    // Re-established, then a flow-mod empties the fast path: removed again.
    establish_udp(&mut rig, 2);
    rig.sw
        .bridge
        .ofctl("add-flow", "table=1,priority=5,udp,actions=drop", 0)
        .unwrap();
    // The next batch sees the new generation and clears.
    rig.inject(1, &udp_c2s(30_000));
    wait(&h);
    let s = h.status();
    assert_eq!(s.installed, 12, "{s:?}");
    assert_eq!(s.removed, s.installed, "no leak: {s:?}");
    assert!(d1.live.lock().is_empty() && d2.live.lock().is_empty());
    h.stop();
}

#[test]
fn software_only_ports_get_no_rule_calls() {
    let d1 = FakeDevice::new(0, Accepts::Nothing);
    let d2 = FakeDevice::new(1, Accepts::QueueValidateOnly);
    let h = offloader(
        &[(1, d1.clone()), (2, d2.clone())],
        HwOffloadConfig::default(),
    );
    assert!(matches!(h.probe(PortNo(1)), PortMode::None(_)));
    assert!(matches!(h.probe(PortNo(2)), PortMode::None(_)));
    let (v1, v2, c2) = (
        d1.validates.load(Ordering::Relaxed),
        d2.validates.load(Ordering::Relaxed),
        d2.creates.load(Ordering::Relaxed),
    );
    let mut rig = Rig::new(UDP_FW, Some(h.clone()));
    establish_udp(&mut rig, 3);
    assert_eq!(rig.pipeline.offload_count(), 6, "software fast path works");
    wait(&h);
    let s = h.status();
    assert_eq!((s.installed, s.create_calls, s.failed), (0, 0, 0), "{s:?}");
    assert_eq!(s.not_offloadable, 6);
    assert_eq!(
        d1.validates.load(Ordering::Relaxed),
        v1,
        "no call after the probe"
    );
    assert_eq!(d2.validates.load(Ordering::Relaxed), v2);
    assert_eq!(d2.creates.load(Ordering::Relaxed), c2);
    h.stop();
}

#[test]
fn full_rules_carry_nat_rewrites_count_and_output() {
    let d1 = FakeDevice::new(7, Accepts::Full);
    let d2 = FakeDevice::new(8, Accepts::Full);
    let h = offloader(
        &[(1, d1.clone()), (2, d2.clone())],
        HwOffloadConfig {
            query_interval: Duration::from_millis(20),
            ..Default::default()
        },
    );
    let mut rig = Rig::new(SNAT, Some(h.clone()));
    // TCP through source NAT: handshake, then data both ways.
    let (mut cseq, mut sseq) = (1000u32, 50_000u32);
    let c2s = |rig: &mut Rig, flags, seq, ack, payload: &[u8]| {
        let seg = Tcp::new(40_000, 80)
            .seq(seq)
            .ack(ack)
            .flags(flags)
            .payload(payload);
        rig.inject(
            1,
            &ethernet_with(mac(1), mac(2), &Builder::v4(CLIENT, SERVER).tcp(&seg)),
        )
    };
    use ct::packet::tcp_flags::{ACK, SYN};
    let syn = c2s(&mut rig, SYN, cseq, 0, b"");
    assert_eq!(syn.len(), 1);
    let nat_port = u16::from_be_bytes([syn[0].1[34], syn[0].1[35]]);
    cseq += 1;
    let s2c = |rig: &mut Rig, flags, seq, ack, payload: &[u8]| {
        let seg = Tcp::new(80, nat_port)
            .seq(seq)
            .ack(ack)
            .flags(flags)
            .payload(payload);
        rig.inject(
            2,
            &ethernet_with(mac(2), mac(1), &Builder::v4(SERVER, NAT_IP).tcp(&seg)),
        )
    };
    assert_eq!(s2c(&mut rig, SYN | ACK, sseq, cseq, b"").len(), 1);
    sseq += 1;
    for _ in 0..3 {
        assert_eq!(c2s(&mut rig, ACK, cseq, sseq, b"x").len(), 1);
        cseq += 1;
        assert_eq!(s2c(&mut rig, ACK, sseq, cseq, b"y").len(), 1);
        sseq += 1;
    }
    assert_eq!(rig.pipeline.offload_count(), 2);
    wait(&h);
    let out = d1.live_rules();
    assert_eq!(out.len(), 1, "client side rule");
    let r = &out[0];
    assert!(r.pattern.contains(&FlowItem::Tcp {
        src: 40_000,
        dst: 80,
        flags_clear: 0x07
    }));
    assert!(r.actions.contains(&FlowAction::SetIpv4Src(NAT_IP.octets())));
    assert!(r.actions.contains(&FlowAction::SetTpSrc(nat_port)) || nat_port == 40_000);
    assert!(!r
        .actions
        .iter()
        .any(|a| matches!(a, FlowAction::SetIpv4Dst(_))));
    assert_eq!(
        r.actions[r.actions.len() - 2..],
        [FlowAction::Count, FlowAction::PortId(8)]
    );
    let back = d2.live_rules();
    assert_eq!(back.len(), 1);
    assert!(back[0]
        .actions
        .contains(&FlowAction::SetIpv4Dst(CLIENT.octets())));
    assert_eq!(back[0].actions.last(), Some(&FlowAction::PortId(7)));
    // COUNT queries feed the hardware counters.
    std::thread::sleep(Duration::from_millis(100));
    let s = h.status();
    assert!(s.hw_packets >= 10 && s.hw_bytes >= 1000, "{s:?}");
    // Stopping removes what is left.
    h.stop();
    let s = h.status();
    assert_eq!((s.installed, s.removed, s.active), (2, 2, 0));
    assert!(d1.live.lock().is_empty() && d2.live.lock().is_empty());
}

#[test]
fn full_queue_drops_adds_never_removals() {
    let d = FakeDevice::new(0, Accepts::MarkQueue);
    let h = offloader(
        &[(1, d.clone())],
        HwOffloadConfig {
            queue_depth: 1,
            ..Default::default()
        },
    );
    assert_eq!(h.probe(PortNo(1)), PortMode::Partial { mark: true });
    let sink = h.sink(0);
    let rule = |sport| FastRule {
        in_port: PortNo(1),
        ipv6: false,
        src: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        dst: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        proto: 17,
        sport,
        dport: 53,
        set_src: None,
        set_dst: None,
        set_sport: None,
        set_dport: None,
        other_rewrites: false,
        out: PortNo(2),
    };
    // Stall the offload thread inside its first create (it counts the
    // call, then blocks on the gate).
    let gate = d.gate.lock();
    sink.installed(1, &rule(1));
    let t0 = std::time::Instant::now();
    while h.status().create_calls == 0 {
        assert!(t0.elapsed() < Duration::from_secs(5), "worker took the add");
        std::thread::sleep(Duration::from_millis(2));
    }
    // One add fits in the queue, the next is dropped.
    sink.installed(2, &rule(2));
    sink.installed(3, &rule(3));
    let s = h.status();
    assert_eq!(s.requests_dropped, 1, "{s:?}");
    // Removals are always queued, even now.
    for id in 1..=3 {
        sink.removed(id);
    }
    drop(gate);
    wait(&h);
    let s = h.status();
    assert_eq!((s.installed, s.requests_dropped), (2, 1), "{s:?}");
    assert_eq!(s.removed, s.installed, "{s:?}");
    assert!(d.live.lock().is_empty());
    h.stop();
}
