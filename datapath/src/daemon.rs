//! The running daemon: a [`Switch`] built from a [`DaemonConfig`], its PMD
//! threads, and the state the control commands share (pcap recordings to
//! flush at exit, conntrack zone limits, the shutdown channel).
//!
//! Startup order: tracker settings, ports, flows (a bad flow line fails the
//! start with its line number), then the PMD threads. Shutdown: stop the
//! PMDs (their output is flushed), then flush every pcap recording.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::config::{build_port, DaemonConfig};
use crate::control::limits::ZoneLimits;
use crate::pmd::PmdSet;
use crate::port::pcap::PcapTxPort;
use crate::switch::Switch;

/// Why the daemon is stopping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// The `exit` control command.
    Exit,
    /// A signal (its name).
    Signal(String),
}

/// Everything the control plane reaches.
pub struct Daemon {
    pub sw: Arc<Switch>,
    pub pmds: Mutex<PmdSet>,
    /// Relative paths in `add-port` specs are relative to this.
    pub base_dir: PathBuf,
    pub pcap_outputs: Mutex<Vec<Arc<PcapTxPort>>>,
    pub limits: Mutex<ZoneLimits>,
    shutdown: Mutex<Sender<Shutdown>>,
}

impl Daemon {
    /// Build the switch, its ports and flows, and start the PMD threads.
    /// Returns the daemon and the channel that reports a shutdown request.
    pub fn start(
        cfg: &DaemonConfig,
        base_dir: &Path,
    ) -> Result<(Arc<Daemon>, Receiver<Shutdown>), String> {
        cfg.validate()?;
        let sw = Switch::new(cfg.conntrack.tracker_config());
        sw.defrag
            .lock()
            .set_config(cfg.conntrack.fragments.clone())
            .map_err(|e| format!("conntrack.fragments.{e}"))?;
        sw.ct.set_pressure(&cfg.conntrack.pressure.to_config()?)?;
        let mut limits = ZoneLimits::default();
        for (zone, limit) in cfg.conntrack.zone_limits()? {
            limits.set_zone(&sw.ct, zone, limit);
        }
        for (name, policy) in cfg.conntrack.timeout_policies()? {
            sw.ct
                .policies
                .set(&name, &policy)
                .map_err(|e| format!("conntrack.timeout_policies.{name}: {e}"))?;
        }
        cfg.init_dpdk()?;
        let mut outputs = Vec::new();
        for (i, p) in cfg.ports.iter().enumerate() {
            let built = build_port(p, base_dir).map_err(|e| format!("ports[{i}]: {e}"))?;
            sw.add_port(built.entry)
                .map_err(|e| format!("ports[{i}] ({}): {e}", p.name))?;
            outputs.extend(built.pcap_tx);
        }
        if let Some(path) = cfg.flows_path(base_dir) {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("flows: {}: {e}", path.display()))?;
            sw.bridge
                .ofctl("add-flows", &text, sw.clock.now_ms())
                .map_err(|e| format!("flows: {}: {e}", path.display()))?;
        }
        if cfg.dpdk.as_ref().is_some_and(|d| d.hw_offload) {
            start_hw_offload(&sw, cfg.pmd.threads)?;
        }
        let pmds = PmdSet::start(sw.clone(), &cfg.pmd.to_pmd_config())
            .map_err(|e| format!("starting PMD threads: {e}"))?;
        let (tx, rx) = channel();
        let d = Daemon {
            sw,
            pmds: Mutex::new(pmds),
            base_dir: base_dir.to_path_buf(),
            pcap_outputs: Mutex::new(outputs),
            limits: Mutex::new(limits),
            shutdown: Mutex::new(tx),
        };
        Ok((Arc::new(d), rx))
    }

    /// Ask the main thread to shut the daemon down.
    pub fn request_shutdown(&self, why: Shutdown) {
        let _ = self.shutdown.lock().send(why);
    }

    /// A sender for shutdown requests (for the signal thread).
    pub fn shutdown_sender(&self) -> Sender<Shutdown> {
        self.shutdown.lock().clone()
    }

    /// Stop the PMD threads (then the hardware offloader: its rules are
    /// removed) and flush every pcap recording.
    pub fn stop(&self) {
        self.pmds.lock().stop();
        if let Some(h) = self.sw.hw_offload() {
            h.stop();
        }
        for p in self.pcap_outputs.lock().iter() {
            if let Err(e) = p.flush() {
                tracing::error!("flushing {}: {e}", p.path().display());
            }
        }
    }
}

/// Start the rte_flow offloader (`dpdk.hw_offload`) and hand it to the
/// switch before the PMD threads start.
#[cfg(feature = "dpdk")]
fn start_hw_offload(sw: &Arc<Switch>, threads: usize) -> Result<(), String> {
    let h = crate::hw_offload::engine::for_switch(sw, threads, Default::default())
        .map_err(|e| format!("dpdk.hw_offload: starting the offload thread: {e}"))?;
    sw.set_hw_offload(Some(h));
    Ok(())
}

#[cfg(not(feature = "dpdk"))]
fn start_hw_offload(_: &Arc<Switch>, _: usize) -> Result<(), String> {
    Err(format!("dpdk.hw_offload: {}", crate::config::NO_DPDK))
}
