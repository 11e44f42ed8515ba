//! Shared harness of the cross-crate tests.
//!
//! A [`Harness`] is a switch whose ports are in-memory rings: the test
//! holds the far end of each, sends frames in, runs the pipeline on the
//! test's own thread (deterministic: no PMD threads, packets processed in
//! the order sent) and collects what came out of each port.
//!
//! [`netns`] (Linux, root) is the real-traffic harness: network namespaces
//! joined through a real `ferrovsd` over veth pairs and AF_PACKET ports.

#[cfg(target_os = "linux")]
pub mod netns;

use std::sync::Arc;

use datapath::packet::{Packet, PacketBatch, PortNo};
use datapath::pipeline::{Pipeline, PipelineConfig};
use datapath::port::ring::RingPort;
use datapath::port::Port;
use datapath::switch::{PortEntry, Switch};
use ofproto::pipeline::VlanMode;

pub use ct::build::{ethernet_with, Builder, Tcp};

/// MAC of the hosts behind each port: 02:00:00:00:00:NN.
pub fn host_mac(port: u32) -> [u8; 6] {
    [2, 0, 0, 0, 0, port as u8]
}

/// An Ethernet frame from the host behind `from` to the one behind `to`.
pub fn frame(from: u32, to: u32, l3: &[u8]) -> Vec<u8> {
    ethernet_with(host_mac(from), host_mac(to), l3)
}

/// A switch with ring ports and a synchronous pipeline.
pub struct Harness {
    pub sw: Arc<Switch>,
    pub pipeline: Pipeline,
    /// (port number, the test's end of the ring)
    peers: Vec<(u32, RingPort)>,
}

impl Harness {
    /// Ports numbered `ports`, flows `flows` (ovs-ofctl add-flows text).
    pub fn new(ports: &[u32], flows: &str) -> Harness {
        Self::with_config(ports, flows, PipelineConfig::default())
    }

    pub fn with_config(ports: &[u32], flows: &str, cfg: PipelineConfig) -> Harness {
        let sw = Switch::new(ct::TrackerConfig {
            max_conns: 100_000,
            shards: 64,
            seed: Some(7),
            liberal: false,
        });
        let mut peers = Vec::new();
        for &n in ports {
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
        if !flows.trim().is_empty() {
            sw.bridge.ofctl("add-flows", flows, 0).expect("flows parse");
        }
        let pipeline = Pipeline::new(sw.clone(), cfg, 0);
        Harness {
            sw,
            pipeline,
            peers,
        }
    }

    /// Queue `frame` for reception on `port`.
    pub fn send(&mut self, port: u32, frame: &[u8]) {
        let mut b = PacketBatch::new();
        b.push(Packet::from_bytes(frame)).unwrap();
        let peer = &self.peers.iter().find(|(n, _)| *n == port).expect("port").1;
        assert_eq!(
            peer.tx_burst(0, &mut b, &mut self.pipeline.pool),
            1,
            "ring full"
        );
    }

    /// Receive everything pending on every port and run it through the
    /// pipeline, one port at a time, in bursts of up to 32.
    pub fn run(&mut self) {
        let ports = self.sw.ports();
        loop {
            let mut any = false;
            for p in &ports {
                let mut batch = PacketBatch::new();
                if p.rx_burst(0, &mut batch, &mut self.pipeline.pool) > 0 {
                    any = true;
                    self.pipeline.process(&mut batch);
                }
            }
            if !any {
                break;
            }
        }
        self.pipeline.flush();
    }

    /// Send one frame, run the pipeline, return the frames each port sent
    /// (as `(port, frame)`).
    pub fn inject(&mut self, port: u32, frame: &[u8]) -> Vec<(u32, Vec<u8>)> {
        self.send(port, frame);
        self.run();
        self.collect()
    }

    /// Frames the switch sent out of any port since the last collect.
    pub fn collect(&mut self) -> Vec<(u32, Vec<u8>)> {
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

    /// The ports a frame came out of.
    pub fn ports_of(out: &[(u32, Vec<u8>)]) -> Vec<u32> {
        out.iter().map(|(p, _)| *p).collect()
    }

    /// `ovs-ofctl dump-flows`-style text (rule counters are credited first).
    pub fn dump_flows(&mut self) -> String {
        let now = self.sw.clock.now_ms();
        self.pipeline.revalidate(now);
        self.sw.bridge.ofctl("dump-flows", "", now).unwrap()
    }

    /// Run an ofctl command (add-flow, del-flows, mod-flows ...).
    pub fn ofctl(&self, cmd: &str, arg: &str) {
        self.sw
            .bridge
            .ofctl(cmd, arg, self.sw.clock.now_ms())
            .unwrap_or_else(|e| panic!("{cmd} {arg}: {e:?}"));
    }

    /// The conntrack table as `dpctl/dump-conntrack` lines.
    pub fn dump_conntrack(&self) -> Vec<String> {
        self.sw
            .ct
            .dump(&Default::default(), self.sw.clock.now_ns())
            .iter()
            .map(|c| c.to_string())
            .collect()
    }
}

/// The stateful firewall the tests and the demo use: port 1 is the inside,
/// port 2 the outside; inside may open connections (committed in zone 1),
/// outside traffic is admitted only when it belongs to one (`+est`); the
/// rest (new from outside, `+inv`) is dropped.
pub const FIREWALL: &str = "\
table=0,priority=10,ip,in_port=1,actions=ct(table=1,zone=1)
table=0,priority=10,ip,in_port=2,actions=ct(table=2,zone=1)
table=1,priority=10,ct_state=+trk+new-inv,ip,actions=ct(commit,zone=1),output:2
table=1,priority=10,ct_state=+trk+est-inv,ip,actions=output:2
table=2,priority=10,ct_state=+trk+est-inv,ip,actions=output:1
";
