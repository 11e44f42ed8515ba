//! The daemon's configuration file (JSON).
//!
//! A full example (every key shown; only `ports` is required):
//!
//! ```json
//! { "log_level": "info",
//!   "control_socket": "/tmp/ferrovs/ferrovsd.sock",
//!   "metrics": { "listen": "127.0.0.1:9464", "allow_non_loopback": false },
//!   "pmd": { "threads": 1, "cores": [], "idle_sleep_us": 100, "emc": true,
//!            "megaflow": true, "emc_insert_inv_prob": 100, "flow_offload": false },
//!   "conntrack": { "max_conns": 3000000, "shards": 1024, "liberal": false,
//!                  "zone_limits": { "5": 1000 },
//!                  "timeout_policies": { "short": "udp_first=3,udp_single=3" },
//!                  "pressure": { "high_pct": 90, "low_pct": 80, "embryonic_secs": 5,
//!                                "evict_assured": false },
//!                  "fragments": { "enabled_v4": true, "enabled_v6": true,
//!                                 "max_bytes": 4194304, "max_datagrams": 1024,
//!                                 "max_datagrams_per_zone": 256, "max_fragments": 64,
//!                                 "timeout_v4_ms": 30000, "timeout_v6_ms": 60000 } },
//!   "ports": [
//!     { "name": "gen0", "number": 1, "type": "generator",
//!       "options": { "flows": 1000, "size": 64, "rate_pps": 0, "proto": "udp",
//!                    "replies": false, "conn_packets": 0, "seed": 1,
//!                    "limit": 100000, "rxqs": 1, "csum_offload": true } },
//!     { "name": "sink", "number": 2, "type": "null" },
//!     { "name": "in", "number": 3, "type": "pcap", "options": { "rx": "in.pcap", "loop": false } },
//!     { "name": "out", "number": 4, "type": "pcap", "options": { "tx": "out.pcap", "timestamps": "wall" } },
//!     { "name": "veth0", "number": 5, "type": "afpacket", "options": { "ifname": "veth0", "rxqs": 1 } },
//!     { "name": "p6", "number": 6, "vlan": { "access": 10 } },
//!     { "name": "p7", "number": 7, "type": "null", "vlan": { "trunk": [10, 20] } } ],
//!   "flows": "firewall.flows" }
//! ```
//!
//! With DPDK (a binary built with `cargo build --features dpdk`), a `dpdk`
//! section initialises DPDK's EAL once at start (the arguments as written
//! for `dpdk-testpmd`) and sizes the shared mbuf pool; ports of type `dpdk`
//! name a device the EAL knows (a vdev given with `--vdev`, or a PCI
//! address):
//!
//! ```json
//! { "dpdk": { "eal_args": ["--no-huge", "-m", "256", "--no-pci", "--vdev", "net_ring0"],
//!             "mbufs": 8192 },
//!   "ports": [ { "name": "dp0", "number": 1, "type": "dpdk",
//!                "options": { "device": "net_ring0", "rxqs": 1, "txqs": 1 } } ] }
//! ```
//!
//! Without the feature, a `dpdk` section or a `dpdk` port is an error
//! ([`NO_DPDK`]).
//!
//! * `log_level`: `error`, `warn`, `info`, `debug` or `trace` (default `info`).
//! * `control_socket`: the control socket path (default
//!   [`DEFAULT_SOCKET`]).
//! * `metrics`: optional Prometheus endpoint; `listen` must be a loopback
//!   address unless `allow_non_loopback` is true.
//! * `pmd`: poll-mode threads (defaults as shown; `emc_insert_inv_prob` >= 1).
//!   `flow_offload` switches on the flow-offload fast path
//!   (`PipelineConfig::flow_offload`, see `crate::fastpath`): established
//!   connections skip classification and conntrack's lookup; off by
//!   default. `pmd-stats-show` then reports its counters.
//! * `conntrack`: tracker size, TCP liberal mode, per-zone connection limits
//!   (zone numbers as strings), named timeout policies (`ct(timeout=NAME)`),
//!   fragment reassembly limits and timeouts (`fragments`, defaults as
//!   shown; see `ct::frag`; `ferrovs-ctl ipf-set` changes them at run time),
//!   table pressure (`pressure`, defaults as shown, see `ct::pressure`:
//!   `high_pct` 1..=100, `low_pct` at most `high_pct`, `embryonic_secs` at
//!   least 1; `ferrovs-ctl ct-set-pressure` changes them at run time).
//! * `ports`: see [`port`] for the types and their options. A port without
//!   `type` is a `null` port. `vlan` defaults to access VLAN 0.
//! * `flows`: an `ovs-ofctl add-flows` file loaded at start.
//! * `dpdk`: optional; `eal_args` (required) and `mbufs` (8192, at least
//!   256) as above. Needed by `dpdk` ports. `hw_offload` (false): push
//!   the fast path's connections to the DPDK ports as rte_flow rules
//!   ([`crate::hw_offload`]; OVS's `other_config:hw-offload`); needs
//!   `pmd.flow_offload`.
//! * `pmd.flow_offload` (false): the flow-offload fast path
//!   ([`crate::fastpath`]).
//!
//! Relative paths (flows file, pcap files) are relative to the directory of
//! the configuration file. Unknown keys are errors naming the key; every
//! validation error names the offending field and value.

pub mod port;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::pipeline::PipelineConfig;
use crate::pmd::PmdConfig;
pub use port::{build_port, port_from_config, BuiltPort, PortConfigJson, VlanJson};

/// The control socket used when neither the config nor the command line
/// names one.
pub const DEFAULT_SOCKET: &str = "/tmp/ferrovs/ferrovsd.sock";

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    #[serde(default = "default_log_level")]
    pub log_level: String,
    #[serde(default = "default_socket")]
    pub control_socket: PathBuf,
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    #[serde(default)]
    pub pmd: PmdJson,
    #[serde(default)]
    pub conntrack: ConntrackJson,
    pub ports: Vec<PortConfigJson>,
    #[serde(default)]
    pub flows: Option<PathBuf>,
    #[serde(default)]
    pub dpdk: Option<DpdkJson>,
}

/// The error for DPDK configuration in a build without DPDK.
pub const NO_DPDK: &str = "ferrovs was built without the dpdk feature: cargo build --features dpdk";

/// The `dpdk` section: EAL arguments and the shared mbuf pool size.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpdkJson {
    pub eal_args: Vec<String>,
    #[serde(default = "default_mbufs")]
    pub mbufs: u32,
    /// Push fast-path entries to DPDK ports as rte_flow rules
    /// ([`crate::hw_offload`]); needs `pmd.flow_offload`. Off by default.
    #[serde(default)]
    pub hw_offload: bool,
}

fn default_mbufs() -> u32 {
    8192
}

fn default_log_level() -> String {
    "info".into()
}

fn default_socket() -> PathBuf {
    PathBuf::from(DEFAULT_SOCKET)
}

/// The Prometheus endpoint.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    pub listen: String,
    #[serde(default)]
    pub allow_non_loopback: bool,
}

impl MetricsConfig {
    /// The address to bind, refused when it is not loopback and
    /// `allow_non_loopback` is not set.
    pub fn addr(&self) -> Result<SocketAddr, String> {
        let addr: SocketAddr = self.listen.parse().map_err(|_| {
            format!(
                "metrics.listen: '{}': expected IP:PORT (e.g. 127.0.0.1:9464)",
                self.listen
            )
        })?;
        if !addr.ip().is_loopback() && !self.allow_non_loopback {
            return Err(format!(
                "metrics.listen: '{}' is not a loopback address; set \"allow_non_loopback\": true to expose metrics beyond this host",
                self.listen
            ));
        }
        Ok(addr)
    }
}

/// Poll-mode thread settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PmdJson {
    pub threads: usize,
    pub cores: Vec<usize>,
    pub idle_sleep_us: u64,
    pub emc: bool,
    pub megaflow: bool,
    pub emc_insert_inv_prob: u32,
    /// The flow-offload fast path ([`PipelineConfig::flow_offload`]).
    pub flow_offload: bool,
}

impl Default for PmdJson {
    fn default() -> Self {
        let p = PmdConfig::default();
        PmdJson {
            threads: p.threads,
            cores: p.cores,
            idle_sleep_us: p.idle_sleep_us,
            emc: p.pipeline.emc,
            megaflow: p.pipeline.megaflow,
            emc_insert_inv_prob: p.pipeline.emc_insert_inv_prob,
            flow_offload: p.pipeline.flow_offload,
        }
    }
}

impl PmdJson {
    /// The PMD configuration this describes.
    pub fn to_pmd_config(&self) -> PmdConfig {
        PmdConfig {
            threads: self.threads,
            cores: self.cores.clone(),
            idle_sleep_us: self.idle_sleep_us,
            pipeline: PipelineConfig {
                emc: self.emc,
                megaflow: self.megaflow,
                emc_insert_inv_prob: self.emc_insert_inv_prob,
                flow_offload: self.flow_offload,
                ..PipelineConfig::default()
            },
            ..PmdConfig::default()
        }
    }
}

/// Connection tracker settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConntrackJson {
    pub max_conns: u32,
    pub shards: usize,
    pub liberal: bool,
    /// Zone number (as a string) to connection limit.
    pub zone_limits: BTreeMap<String, u32>,
    /// Policy name to `attr=secs,...`.
    pub timeout_policies: BTreeMap<String, String>,
    /// Fragment reassembly limits and timeouts ([`ct::frag::FragConfig`]).
    pub fragments: ct::frag::FragConfig,
    /// Table pressure thresholds ([`ct::pressure::PressureConfig`]).
    pub pressure: PressureJson,
}

/// `conntrack.pressure`: signed and wide so that an out-of-range number is
/// reported by [`PressureJson::to_config`] with its key, not by the JSON
/// parser without one.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PressureJson {
    pub high_pct: i64,
    pub low_pct: i64,
    pub embryonic_secs: i64,
    pub evict_assured: bool,
}

impl Default for PressureJson {
    fn default() -> Self {
        let p = ct::pressure::PressureConfig::default();
        PressureJson {
            high_pct: p.high_pct.into(),
            low_pct: p.low_pct.into(),
            embryonic_secs: p.embryonic_secs.into(),
            evict_assured: p.evict_assured,
        }
    }
}

impl PressureJson {
    /// The validated tracker setting; errors name the key and value.
    pub fn to_config(&self) -> Result<ct::pressure::PressureConfig, String> {
        let pct = |key: &str, v: i64| {
            u8::try_from(v)
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| format!("conntrack.pressure.{key}: {v}: must be 0..=100"))
        };
        let cfg = ct::pressure::PressureConfig {
            high_pct: pct("high_pct", self.high_pct)?,
            low_pct: pct("low_pct", self.low_pct)?,
            embryonic_secs: u32::try_from(self.embryonic_secs).map_err(|_| {
                format!(
                    "conntrack.pressure.embryonic_secs: {}: must be 1..=4294967295",
                    self.embryonic_secs
                )
            })?,
            evict_assured: self.evict_assured,
        };
        cfg.validate()
            .map_err(|e| format!("conntrack.pressure.{e}"))?;
        Ok(cfg)
    }
}

impl Default for ConntrackJson {
    fn default() -> Self {
        let t = ct::TrackerConfig::default();
        ConntrackJson {
            max_conns: t.max_conns,
            shards: t.shards,
            liberal: t.liberal,
            zone_limits: BTreeMap::new(),
            timeout_policies: BTreeMap::new(),
            fragments: ct::frag::FragConfig::default(),
            pressure: PressureJson::default(),
        }
    }
}

impl ConntrackJson {
    /// The tracker configuration this describes.
    pub fn tracker_config(&self) -> ct::TrackerConfig {
        ct::TrackerConfig {
            max_conns: self.max_conns,
            shards: self.shards,
            liberal: self.liberal,
            seed: None,
        }
    }

    /// The zone limits with parsed zone numbers.
    pub fn zone_limits(&self) -> Result<Vec<(u16, u32)>, String> {
        self.zone_limits
            .iter()
            .map(|(z, l)| {
                z.parse::<u16>()
                    .map(|z| (z, *l))
                    .map_err(|_| format!("conntrack.zone_limits: '{z}': zone must be 0..=65535"))
            })
            .collect()
    }

    /// The timeout policies, parsed.
    pub fn timeout_policies(&self) -> Result<Vec<(String, ct::TimeoutPolicy)>, String> {
        self.timeout_policies
            .iter()
            .map(|(name, spec)| {
                if name.is_empty() || name == "default" {
                    return Err(format!(
                        "conntrack.timeout_policies: '{name}': policy name must be non-empty and not 'default'"
                    ));
                }
                ct::TimeoutPolicy::parse(spec)
                    .map(|p| (name.clone(), p))
                    .map_err(|e| format!("conntrack.timeout_policies.{name}: {e}"))
            })
            .collect()
    }
}

const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// Check that `level` is a log level name.
pub fn check_log_level(level: &str) -> Result<(), String> {
    if LOG_LEVELS.contains(&level) {
        Ok(())
    } else {
        Err(format!(
            "log_level: '{level}': expected one of {}",
            LOG_LEVELS.join(", ")
        ))
    }
}

impl DaemonConfig {
    /// Parse and validate configuration text.
    pub fn parse(text: &str) -> Result<DaemonConfig, String> {
        let cfg: DaemonConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read, parse and validate `path`; also returns the directory that
    /// relative paths in it are relative to.
    pub fn load(path: &Path) -> Result<(DaemonConfig, PathBuf), String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let cfg = DaemonConfig::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        Ok((cfg, base))
    }

    /// Every check that does not touch the file system.
    pub fn validate(&self) -> Result<(), String> {
        check_log_level(&self.log_level)?;
        if self.control_socket.as_os_str().is_empty() {
            return Err("control_socket: must not be empty".into());
        }
        if let Some(m) = &self.metrics {
            m.addr()?;
        }
        let p = &self.pmd;
        if p.threads == 0 || p.threads > 256 {
            return Err(format!("pmd.threads: {}: must be 1..=256", p.threads));
        }
        if p.emc_insert_inv_prob == 0 {
            return Err("pmd.emc_insert_inv_prob: 0: must be at least 1".into());
        }
        if p.emc && !p.megaflow {
            return Err("pmd.emc: true: the exact-match cache needs \"megaflow\": true".into());
        }
        let c = &self.conntrack;
        if c.max_conns == 0 {
            return Err("conntrack.max_conns: 0: must be at least 1".into());
        }
        if c.shards == 0 || c.shards > 65_536 {
            return Err(format!("conntrack.shards: {}: must be 1..=65536", c.shards));
        }
        c.zone_limits()?;
        c.timeout_policies()?;
        c.fragments
            .validate()
            .map_err(|e| format!("conntrack.fragments.{e}"))?;
        c.pressure.to_config()?;
        for (i, port) in self.ports.iter().enumerate() {
            port.validate()
                .map_err(|e| format!("ports[{i}] ({}): {e}", port.name))?;
            if let Some(j) = self.ports[..i].iter().position(|q| q.name == port.name) {
                return Err(format!(
                    "ports[{i}]: name '{}' is already used by ports[{j}]",
                    port.name
                ));
            }
            if let Some(j) = self.ports[..i].iter().position(|q| q.number == port.number) {
                return Err(format!(
                    "ports[{i}] ({}): number {} is already used by ports[{j}] ({})",
                    port.name, port.number, self.ports[j].name
                ));
            }
        }
        if let Some(f) = &self.flows {
            if f.as_os_str().is_empty() {
                return Err("flows: must not be empty".into());
            }
        }
        if let Some(d) = &self.dpdk {
            if !cfg!(feature = "dpdk") {
                return Err(format!("dpdk: {NO_DPDK}"));
            }
            if d.mbufs < 256 {
                return Err(format!("dpdk.mbufs: {}: must be at least 256", d.mbufs));
            }
            if d.hw_offload && !self.pmd.flow_offload {
                return Err(
                    "dpdk.hw_offload: true needs \"pmd\": {\"flow_offload\": true} \
                     (hardware rules mirror the fast path's entries)"
                        .into(),
                );
            }
        } else if let Some((i, p)) = self
            .ports
            .iter()
            .enumerate()
            .find(|(_, p)| p.kind == port::PortKind::Dpdk)
        {
            return Err(format!(
                "ports[{i}] ({}): a dpdk port needs a top-level \"dpdk\" section with \"eal_args\"",
                p.name
            ));
        }
        Ok(())
    }

    /// Initialises DPDK (EAL and the shared mbuf pool) if the configuration
    /// has a `dpdk` section; a no-op otherwise. Once per process.
    pub fn init_dpdk(&self) -> Result<(), String> {
        let Some(d) = &self.dpdk else {
            return Ok(());
        };
        #[cfg(feature = "dpdk")]
        {
            crate::port::dpdk::init_eal(&d.eal_args).map_err(|e| format!("dpdk: {e}"))?;
            crate::port::dpdk::shared_mempool(d.mbufs).map_err(|e| format!("dpdk: {e}"))?;
            Ok(())
        }
        #[cfg(not(feature = "dpdk"))]
        {
            let _ = d;
            Err(format!("dpdk: {NO_DPDK}"))
        }
    }

    /// The flows file, resolved against `base`.
    pub fn flows_path(&self, base: &Path) -> Option<PathBuf> {
        self.flows.as_ref().map(|f| base.join(f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{ "log_level": "debug",
      "control_socket": "/tmp/x/ferrovsd.sock",
      "metrics": { "listen": "127.0.0.1:9464" },
      "pmd": { "threads": 2, "cores": [0, 1], "idle_sleep_us": 50, "emc": true, "megaflow": true, "emc_insert_inv_prob": 1, "flow_offload": true },
      "conntrack": { "max_conns": 1000, "shards": 16, "liberal": true,
                     "zone_limits": { "5": 1000 }, "timeout_policies": { "short": "udp_first=3,udp_single=3" } },
      "ports": [ { "name": "gen0", "number": 1, "type": "generator", "options": { "flows": 10, "size": 128, "rate_pps": 0 } },
                 { "name": "sink", "number": 2, "type": "null" },
                 { "name": "p6", "number": 6, "vlan": { "trunk": [10, 20] } } ],
      "flows": "firewall.flows" }"#;

    #[test]
    fn full_example_parses() {
        let c = DaemonConfig::parse(FULL).unwrap();
        assert_eq!(c.log_level, "debug");
        assert_eq!(c.pmd.threads, 2);
        assert_eq!(c.pmd.to_pmd_config().pipeline.emc_insert_inv_prob, 1);
        assert!(c.pmd.to_pmd_config().pipeline.flow_offload);
        assert_eq!(c.conntrack.zone_limits().unwrap(), vec![(5, 1000)]);
        assert_eq!(c.conntrack.timeout_policies().unwrap()[0].0, "short");
        assert_eq!(c.ports.len(), 3);
        assert_eq!(
            c.flows_path(Path::new("/etc/ferrovs")).unwrap(),
            PathBuf::from("/etc/ferrovs/firewall.flows")
        );
        assert!(c.metrics.unwrap().addr().unwrap().ip().is_loopback());
    }

    #[test]
    fn flow_offload_and_hw_offload_switches() {
        let c = DaemonConfig::parse(r#"{"pmd": {"flow_offload": true}, "ports": []}"#).unwrap();
        assert!(c.pmd.to_pmd_config().pipeline.flow_offload);
        let c = DaemonConfig::parse(r#"{"ports": []}"#).unwrap();
        assert!(
            !c.pmd.to_pmd_config().pipeline.flow_offload,
            "off by default"
        );
        let text = r#"{ "dpdk": { "eal_args": [], "hw_offload": true }, "ports": [] }"#;
        if cfg!(feature = "dpdk") {
            let e = err(text);
            assert!(
                e.contains("dpdk.hw_offload") && e.contains("flow_offload"),
                "{e}"
            );
            let ok = r#"{ "dpdk": { "eal_args": [], "hw_offload": true },
                          "pmd": { "flow_offload": true }, "ports": [] }"#;
            let c = DaemonConfig::parse(ok).unwrap();
            c.validate().unwrap();
            assert!(c.dpdk.unwrap().hw_offload);
        } else {
            assert!(err(text).contains(NO_DPDK));
        }
    }

    #[test]
    fn dpdk_section_and_ports() {
        let text = r#"{ "dpdk": { "eal_args": ["--no-huge", "--vdev", "net_ring0"] },
          "ports": [ { "name": "d", "number": 1, "type": "dpdk",
                       "options": { "device": "net_ring0", "rxqs": 2 } } ] }"#;
        if cfg!(feature = "dpdk") {
            let c = DaemonConfig::parse(text).unwrap();
            assert_eq!(c.dpdk.unwrap().mbufs, 8192);
        } else {
            let e = err(text);
            assert!(e.contains(NO_DPDK), "{e}");
        }
        let e = err(r#"{"ports": [ { "name": "d", "number": 1, "type": "dpdk",
                "options": { "device": "net_ring0" } } ]}"#);
        assert!(
            e.contains(NO_DPDK) || e.contains("needs a top-level \"dpdk\" section"),
            "{e}"
        );
        let e = err(r#"{"dpdk": {"eal_args": [], "mbufs": 10}, "ports": []}"#);
        assert!(e.contains(NO_DPDK) || e.contains("dpdk.mbufs: 10"), "{e}");
        assert!(err(r#"{"dpdk": {"eal": []}, "ports": []}"#).contains("unknown field"));
    }

    #[test]
    fn defaults_fill_missing_sections() {
        let c = DaemonConfig::parse(r#"{"ports": []}"#).unwrap();
        assert_eq!(c.control_socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.pmd.threads, 1);
        assert!(
            !c.pmd.to_pmd_config().pipeline.flow_offload,
            "off by default"
        );
        assert_eq!(c.conntrack.max_conns, 3_000_000);
        assert!(c.metrics.is_none() && c.flows.is_none());
    }

    fn err(text: &str) -> String {
        DaemonConfig::parse(text).unwrap_err()
    }

    #[test]
    fn unknown_keys_are_named() {
        assert!(err(r#"{"ports": [], "pmdd": {}}"#).contains("pmdd"));
        assert!(err(r#"{"ports": [], "pmd": {"thread": 1}}"#).contains("thread"));
        assert!(err(r#"{"ports": [], "conntrack": {"maxconns": 1}}"#).contains("maxconns"));
        assert!(err(r#"{"ports": [{"name": "a", "number": 1, "typ": "null"}]}"#).contains("typ"));
        let e = err(
            r#"{"ports": [{"name": "g", "number": 1, "type": "generator", "options": {"flws": 1}}]}"#,
        );
        assert!(e.contains("flws") && e.contains("ports[0] (g)"), "{e}");
    }

    #[test]
    fn fragment_settings() {
        let c = DaemonConfig::parse(
            r#"{"ports": [], "conntrack": {"fragments": {"max_fragments": 16, "enabled_v6": false}}}"#,
        )
        .unwrap();
        let f = &c.conntrack.fragments;
        assert_eq!((f.max_fragments, f.enabled_v6), (16, false));
        assert_eq!(f.timeout_v4_ms, 30_000, "unset fields default");
        let e = err(r#"{"ports": [], "conntrack": {"fragments": {"max_frags": 1}}}"#);
        assert!(e.contains("max_frags"), "{e}");
        let e = err(r#"{"ports": [], "conntrack": {"fragments": {"timeout_v6_ms": 0}}}"#);
        assert!(e.contains("conntrack.fragments.timeout_v6_ms: 0"), "{e}");
    }

    #[test]
    fn pressure_settings() {
        let c = DaemonConfig::parse(
            r#"{"ports": [], "conntrack": {"pressure": {"high_pct": 85, "evict_assured": true}}}"#,
        )
        .unwrap();
        let p = c.conntrack.pressure.to_config().unwrap();
        assert_eq!((p.high_pct, p.low_pct, p.embryonic_secs), (85, 80, 5));
        assert!(p.evict_assured);
        let d = DaemonConfig::parse(r#"{"ports": []}"#).unwrap();
        assert_eq!(
            d.conntrack.pressure.to_config().unwrap(),
            ct::pressure::PressureConfig::default()
        );
        let e = err(r#"{"ports": [], "conntrack": {"pressure": {"high_pct": 70}}}"#);
        assert!(e.contains("low_pct=80: must not exceed high_pct=70"), "{e}");
        let e = err(r#"{"ports": [], "conntrack": {"pressure": {"high": 70}}}"#);
        assert!(e.contains("high"), "{e}");
        for (json, want) in [
            (r#"{"high_pct": 0}"#, "conntrack.pressure.high_pct=0"),
            (r#"{"high_pct": 300}"#, "conntrack.pressure.high_pct: 300"),
            (r#"{"low_pct": -1}"#, "conntrack.pressure.low_pct: -1"),
            (r#"{"low_pct": 95}"#, "conntrack.pressure.low_pct=95"),
            (
                r#"{"embryonic_secs": 0}"#,
                "conntrack.pressure.embryonic_secs=0",
            ),
            (
                r#"{"embryonic_secs": 5000000000}"#,
                "conntrack.pressure.embryonic_secs: 5000000000",
            ),
        ] {
            let e = err(&format!(
                r#"{{"ports": [], "conntrack": {{"pressure": {json}}}}}"#
            ));
            assert!(e.contains(want), "{json}: {e}");
        }
    }

    #[test]
    fn bad_values_are_named() {
        assert!(err(r#"{"ports": [], "log_level": "loud"}"#).contains("'loud'"));
        assert!(err(r#"{"ports": [], "pmd": {"threads": 0}}"#).contains("pmd.threads"));
        let e = err(r#"{"ports": [], "conntrack": {"zone_limits": {"70000": 1}}}"#);
        assert!(e.contains("'70000'"), "{e}");
        let e = err(r#"{"ports": [], "conntrack": {"timeout_policies": {"x": "udp_frist=3"}}}"#);
        assert!(
            e.contains("udp_frist") && e.contains("timeout_policies.x"),
            "{e}"
        );
        let e = err(r#"{"ports": [], "metrics": {"listen": "0.0.0.0:9464"}}"#);
        assert!(e.contains("0.0.0.0:9464") && e.contains("loopback"), "{e}");
        let ok =
            r#"{"ports": [], "metrics": {"listen": "0.0.0.0:9464", "allow_non_loopback": true}}"#;
        assert!(DaemonConfig::parse(ok).is_ok());
        let e = err(r#"{"ports": [{"name": "a", "number": 1}, {"name": "b", "number": 1}]}"#);
        assert!(e.contains("number 1") && e.contains("ports[1]"), "{e}");
        let e = err(r#"{"ports": [{"name": "a", "number": 1}, {"name": "a", "number": 2}]}"#);
        assert!(e.contains("'a'"), "{e}");
        let e = err(r#"{"ports": [{"name": "a", "number": 1, "type": "tap"}]}"#);
        assert!(e.contains("tap"), "{e}");
    }
}
