//! The switch: what every poll-mode thread shares.
//!
//! One [`Switch`] holds the OpenFlow bridge (flow tables, MAC table,
//! controller queue), the connection tracker and its fragment reassembler,
//! the recirculation table, the
//! port set and the clock. Poll-mode threads read it; the control plane
//! changes it. Anything that can make a cached translation wrong moves
//! [`Switch::generation`], which every pipeline checks once per batch.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ofproto::pipeline::{PortConfig, VlanMode};
use parking_lot::{Mutex, RwLock};

use crate::hw_offload::HwOffloader;
use crate::packet::PortNo;
use crate::port::Port;
use crate::upcall::recirc::RecircTable;
use crate::upcall::UpcallContext;

/// Monotonic time since the switch started (conntrack and flow timeouts).
#[derive(Debug)]
pub struct Clock {
    start: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            start: Instant::now(),
        }
    }
}

impl Clock {
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    #[inline]
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

/// A port as the switch knows it.
#[derive(Clone)]
pub struct PortEntry {
    pub port: Arc<dyn Port>,
    /// How NORMAL treats VLANs on it.
    pub vlan: VlanMode,
    /// Kind and arguments as configured (for `show`).
    pub kind: String,
}

/// The shared state of one switch (one bridge).
pub struct Switch {
    pub bridge: ofproto::Pipeline,
    pub ct: ct::Tracker,
    /// IP fragment reassembly before conntrack, shared by the PMD threads
    /// (locked only when a `ct` group holds a fragment; see `crate::defrag`).
    pub defrag: Mutex<ct::frag::Reassembler>,
    pub recirc: RecircTable,
    pub clock: Clock,
    /// Bumped by changes the bridge does not see (timeout policies).
    dp_generation: AtomicU64,
    ports: RwLock<Arc<Vec<PortEntry>>>,
    /// Bumped on every port-set change; PMDs reload their queues.
    port_version: AtomicU64,
    warned: Mutex<HashSet<String>>,
    /// Hardware offload of fast-path entries ([`crate::hw_offload`]), if
    /// enabled; pipelines created after it is set use it.
    hw_offload: RwLock<Option<Arc<dyn HwOffloader>>>,
}

impl Switch {
    /// A switch with no ports and no flows.
    pub fn new(ct_config: ct::TrackerConfig) -> Arc<Switch> {
        Arc::new(Switch {
            bridge: ofproto::Pipeline::new(),
            ct: ct::Tracker::new(ct_config),
            defrag: Mutex::new(ct::frag::Reassembler::default()),
            recirc: RecircTable::default(),
            clock: Clock::default(),
            dp_generation: AtomicU64::new(0),
            ports: RwLock::new(Arc::new(Vec::new())),
            port_version: AtomicU64::new(0),
            warned: Mutex::new(HashSet::new()),
            hw_offload: RwLock::new(None),
        })
    }

    /// Changes whenever a cached translation may have become wrong.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.bridge
            .generation()
            .wrapping_add(self.dp_generation.load(Ordering::Acquire))
    }

    /// What the slow path needs to translate a packet.
    pub fn upcall_context(&self) -> UpcallContext<'_> {
        UpcallContext {
            bridge: &self.bridge,
            ct: &self.ct,
            recirc: &self.recirc,
        }
    }

    /// Invalidate every cached translation (e.g. after a timeout policy
    /// change: programs carry resolved policy ids).
    pub fn invalidate_caches(&self) {
        self.dp_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The ports' transmit/receive handles.
    pub fn ports(&self) -> Vec<Arc<dyn Port>> {
        self.ports.read().iter().map(|e| e.port.clone()).collect()
    }

    /// The ports with their configuration.
    pub fn port_entries(&self) -> Arc<Vec<PortEntry>> {
        self.ports.read().clone()
    }

    /// Changes whenever a port is added or removed.
    #[inline]
    pub fn port_version(&self) -> u64 {
        self.port_version.load(Ordering::Acquire)
    }

    /// The port called `name` or numbered `name`.
    pub fn find_port(&self, name: &str) -> Option<PortEntry> {
        let ports = self.ports.read();
        ports
            .iter()
            .find(|e| e.port.name() == name)
            .or_else(|| {
                let n: u32 = name.parse().ok()?;
                ports.iter().find(|e| e.port.port_no() == PortNo(n))
            })
            .cloned()
    }

    /// Add a port. Refused (and nothing changes) when its name or number is
    /// taken or the number is reserved.
    pub fn add_port(&self, entry: PortEntry) -> Result<(), String> {
        let mut g = self.ports.write();
        let (name, no) = (entry.port.name().to_string(), entry.port.port_no());
        if no.0 == 0 || no.0 >= 0xffff_ff00 {
            return Err(format!("port number {no} is reserved"));
        }
        if let Some(e) = g
            .iter()
            .find(|e| e.port.name() == name || e.port.port_no() == no)
        {
            return Err(format!(
                "port {name} ({no}) clashes with existing port {} ({})",
                e.port.name(),
                e.port.port_no()
            ));
        }
        let mut v = (**g).clone();
        v.push(entry);
        v.sort_by_key(|e| e.port.port_no());
        self.publish_ports(&mut g, v);
        Ok(())
    }

    /// Remove the port called (or numbered) `name`.
    pub fn del_port(&self, name: &str) -> Result<PortEntry, String> {
        let Some(e) = self.find_port(name) else {
            return Err(format!("no port named {name}"));
        };
        let mut g = self.ports.write();
        let v: Vec<PortEntry> = g
            .iter()
            .filter(|x| x.port.port_no() != e.port.port_no())
            .cloned()
            .collect();
        self.publish_ports(&mut g, v);
        Ok(e)
    }

    fn publish_ports(&self, g: &mut Arc<Vec<PortEntry>>, v: Vec<PortEntry>) {
        self.bridge.set_ports(
            v.iter()
                .map(|e| PortConfig {
                    port: ofproto::PortNo(e.port.port_no().0),
                    vlan: e.vlan.clone(),
                    no_flood: false,
                })
                .collect(),
        );
        *g = Arc::new(v);
        self.port_version.fetch_add(1, Ordering::AcqRel);
    }

    /// Enable hardware offload for pipelines created from now on.
    pub fn set_hw_offload(&self, h: Option<Arc<dyn HwOffloader>>) {
        *self.hw_offload.write() = h;
    }

    /// The hardware offloader, if enabled.
    pub fn hw_offload(&self) -> Option<Arc<dyn HwOffloader>> {
        self.hw_offload.read().clone()
    }

    /// Log `msg` as a warning the first time it is seen.
    pub fn warn_once(&self, msg: &str) {
        let mut w = self.warned.lock();
        if w.len() < 1024 && w.insert(msg.to_string()) {
            tracing::warn!("{msg}");
        }
    }
}
