//! One port of the configuration (also the argument of `add-port`).
//!
//! ```json
//! { "name": "gen0", "number": 1, "type": "generator", "options": { ... }, "vlan": { "access": 10 } }
//! ```
//!
//! Types and their options (all optional unless marked):
//! * `generator`: `flows` (1000), `size` (64, frame bytes), `proto`
//!   (`udp`/`tcp`), `replies` (false), `conn_packets` (0), `seed` (1),
//!   `limit` (packets, then link down; none = forever), `rxqs` (1),
//!   `rate_pps` (0 = unlimited; other values are refused: not implemented).
//! * `null`: a sink; no options. The default type.
//! * `pcap`: either `rx` (file to replay; with `loop`, forever) or `tx`
//!   (file to record; `timestamps`: `wall` or `sequence`).
//! * `afpacket`: `ifname` (required), `rxqs` (1). Linux only.
//! * `dpdk`: `device` (required: a vdev such as `net_ring0`, `net_null0`,
//!   `net_pcap0`, or a NIC's PCI address, as given to the EAL), `rxqs` (1;
//!   more than one enables RSS), `txqs` (1). Needs a build with
//!   `--features dpdk` and the configuration's top-level `dpdk` section.
//!
//! `vlan`: `{"access": VID}` or `{"trunk": [VID, ...]}` (empty: all VLANs).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ofproto::pipeline::VlanMode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::packet::PortNo;
use crate::port::generator::{GenProto, GeneratorConfig, GeneratorPort};
use crate::port::pcap::{PcapRxPort, PcapTxPort, TxTimestamps};
use crate::port::{NullPort, Port};
use crate::switch::PortEntry;

/// Port types.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PortKind {
    Generator,
    #[default]
    Null,
    Pcap,
    Afpacket,
    Dpdk,
}

/// How NORMAL treats VLANs on the port.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum VlanJson {
    Access(u16),
    Trunk(Vec<u16>),
}

/// A port as configured.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfigJson {
    pub name: String,
    pub number: u32,
    #[serde(rename = "type", default)]
    pub kind: PortKind,
    #[serde(default)]
    pub options: Map<String, Value>,
    #[serde(default)]
    pub vlan: Option<VlanJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct GeneratorOptions {
    flows: u32,
    size: usize,
    rate_pps: u64,
    proto: GenProtoJson,
    replies: bool,
    conn_packets: u32,
    seed: u64,
    limit: Option<u64>,
    rxqs: usize,
    csum_offload: bool,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum GenProtoJson {
    #[default]
    Udp,
    Tcp,
}

impl Default for GeneratorOptions {
    fn default() -> Self {
        let g = GeneratorConfig::default();
        GeneratorOptions {
            flows: g.flows,
            size: g.packet_size,
            rate_pps: 0,
            proto: GenProtoJson::Udp,
            replies: g.replies,
            conn_packets: g.conn_packets,
            seed: g.seed,
            limit: g.limit,
            rxqs: g.n_rxq,
            csum_offload: g.csum_offload,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NullOptions {}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct PcapOptions {
    rx: Option<PathBuf>,
    #[serde(rename = "loop")]
    repeat: bool,
    tx: Option<PathBuf>,
    timestamps: Option<TimestampsJson>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum TimestampsJson {
    Wall,
    Sequence,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AfPacketOptions {
    ifname: String,
    #[serde(default = "one")]
    rxqs: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DpdkOptions {
    device: String,
    #[serde(default = "one")]
    rxqs: usize,
    #[serde(default = "one")]
    txqs: usize,
}

fn one() -> usize {
    1
}

fn options<T: DeserializeOwned>(map: &Map<String, Value>) -> Result<T, String> {
    serde_json::from_value(Value::Object(map.clone())).map_err(|e| format!("options: {e}"))
}

impl PortConfigJson {
    /// Parse one port from JSON text (the `add-port` argument).
    pub fn parse(text: &str) -> Result<PortConfigJson, String> {
        let p: PortConfigJson = serde_json::from_str(text).map_err(|e| e.to_string())?;
        p.validate().map_err(|e| format!("port {}: {e}", p.name))?;
        Ok(p)
    }

    /// Every check that does not open anything.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("name: must not be empty".into());
        }
        if self.name.len() > 64 || self.name.chars().any(|c| c.is_whitespace() || c == ',') {
            return Err(format!(
                "name: '{}': at most 64 characters, no spaces or commas",
                self.name
            ));
        }
        if self.number == 0 || self.number >= 0xffff_ff00 {
            return Err(format!(
                "number: {}: must be 1..=4294967039 (0 and the OpenFlow reserved ports are not allowed)",
                self.number
            ));
        }
        match &self.vlan {
            Some(VlanJson::Access(v)) if *v >= 4096 => {
                return Err(format!("vlan.access: {v}: VLAN ids are 0..=4095"));
            }
            Some(VlanJson::Trunk(list)) => {
                if let Some(v) = list.iter().find(|v| **v >= 4096) {
                    return Err(format!("vlan.trunk: {v}: VLAN ids are 0..=4095"));
                }
            }
            _ => {}
        }
        match self.kind {
            PortKind::Generator => {
                let o: GeneratorOptions = options(&self.options)?;
                if o.rate_pps != 0 {
                    return Err(format!(
                        "options.rate_pps: {}: rate limiting is not implemented (use 0 = unlimited, or \"limit\")",
                        o.rate_pps
                    ));
                }
                if o.flows == 0 {
                    return Err("options.flows: 0: must be at least 1".into());
                }
                if o.rxqs == 0 || o.rxqs > 64 {
                    return Err(format!("options.rxqs: {}: must be 1..=64", o.rxqs));
                }
            }
            PortKind::Null => {
                options::<NullOptions>(&self.options)?;
            }
            PortKind::Pcap => {
                let o: PcapOptions = options(&self.options)?;
                match (&o.rx, &o.tx) {
                    (Some(_), Some(_)) | (None, None) => {
                        return Err(
                            "options: a pcap port needs exactly one of \"rx\" (replay) or \"tx\" (record)"
                                .into(),
                        )
                    }
                    (None, Some(_)) if o.repeat => {
                        return Err("options.loop: only applies to \"rx\" ports".into())
                    }
                    (Some(_), None) if o.timestamps.is_some() => {
                        return Err("options.timestamps: only applies to \"tx\" ports".into())
                    }
                    _ => {}
                }
            }
            PortKind::Afpacket => {
                let o: AfPacketOptions = options(&self.options)?;
                if o.ifname.is_empty() {
                    return Err("options.ifname: must not be empty".into());
                }
                if o.rxqs == 0 || o.rxqs > 64 {
                    return Err(format!("options.rxqs: {}: must be 1..=64", o.rxqs));
                }
            }
            PortKind::Dpdk => {
                if !cfg!(feature = "dpdk") {
                    return Err(super::NO_DPDK.into());
                }
                let o: DpdkOptions = options(&self.options)?;
                if o.device.is_empty() {
                    return Err("options.device: must not be empty".into());
                }
                if o.rxqs == 0 || o.rxqs > 64 {
                    return Err(format!("options.rxqs: {}: must be 1..=64", o.rxqs));
                }
                if o.txqs == 0 || o.txqs > 64 {
                    return Err(format!("options.txqs: {}: must be 1..=64", o.txqs));
                }
            }
        }
        Ok(())
    }

    fn vlan_mode(&self) -> VlanMode {
        match &self.vlan {
            None => VlanMode::Access(0),
            Some(VlanJson::Access(v)) => VlanMode::Access(*v),
            Some(VlanJson::Trunk(l)) => VlanMode::Trunk(l.clone()),
        }
    }
}

/// A constructed port, with the recording handle to flush at shutdown.
pub struct BuiltPort {
    pub entry: PortEntry,
    pub pcap_tx: Option<Arc<PcapTxPort>>,
}

/// Build the port `cfg` describes (relative paths are relative to `base`).
pub fn port_from_config(cfg: &PortConfigJson, base: &Path) -> Result<PortEntry, String> {
    build_port(cfg, base).map(|b| b.entry)
}

/// [`port_from_config`], also returning a pcap recording handle.
pub fn build_port(cfg: &PortConfigJson, base: &Path) -> Result<BuiltPort, String> {
    cfg.validate()
        .map_err(|e| format!("port {}: {e}", cfg.name))?;
    let (name, no) = (cfg.name.clone(), PortNo(cfg.number));
    let mut pcap_tx = None;
    let (port, kind): (Arc<dyn Port>, String) = match cfg.kind {
        PortKind::Generator => {
            let o: GeneratorOptions = options(&cfg.options)?;
            let g = GeneratorPort::new(
                name,
                no,
                GeneratorConfig {
                    flows: o.flows,
                    packet_size: o.size,
                    proto: match o.proto {
                        GenProtoJson::Udp => GenProto::Udp,
                        GenProtoJson::Tcp => GenProto::Tcp,
                    },
                    replies: o.replies,
                    conn_packets: o.conn_packets,
                    seed: o.seed,
                    limit: o.limit,
                    n_rxq: o.rxqs,
                    csum_offload: o.csum_offload,
                    request_dst: None,
                },
            );
            let c = g.config();
            let kind = format!(
                "generator flows={} size={} proto={} rxqs={}{}",
                c.flows,
                c.packet_size,
                if c.proto == GenProto::Tcp {
                    "tcp"
                } else {
                    "udp"
                },
                c.n_rxq,
                c.limit.map(|l| format!(" limit={l}")).unwrap_or_default()
            );
            (Arc::new(g), kind)
        }
        PortKind::Null => (Arc::new(NullPort::new(name, no)), "null".to_string()),
        PortKind::Pcap => {
            let o: PcapOptions = options(&cfg.options)?;
            if let Some(rx) = o.rx {
                let path = base.join(rx);
                let p = PcapRxPort::open(name, no, &path, o.repeat)
                    .map_err(|e| format!("port {}: {e}", cfg.name))?;
                let kind = format!("pcap rx={} loop={}", path.display(), o.repeat);
                (Arc::new(p), kind)
            } else {
                let path = base.join(o.tx.unwrap_or_default());
                let stamps = match o.timestamps {
                    Some(TimestampsJson::Sequence) => TxTimestamps::Sequence,
                    _ => TxTimestamps::Wall,
                };
                let p = Arc::new(
                    PcapTxPort::create(name, no, &path, stamps)
                        .map_err(|e| format!("port {}: {e}", cfg.name))?,
                );
                pcap_tx = Some(p.clone());
                (p, format!("pcap tx={}", path.display()))
            }
        }
        PortKind::Afpacket => afpacket(cfg, name, no)?,
        PortKind::Dpdk => dpdk(cfg, name, no)?,
    };
    Ok(BuiltPort {
        entry: PortEntry {
            port,
            vlan: cfg.vlan_mode(),
            kind,
        },
        pcap_tx,
    })
}

#[cfg(target_os = "linux")]
fn afpacket(
    cfg: &PortConfigJson,
    name: String,
    no: PortNo,
) -> Result<(Arc<dyn Port>, String), String> {
    let o: AfPacketOptions = options(&cfg.options)?;
    let p = crate::port::afpacket::AfPacketPort::open_with_queues(name, no, &o.ifname, o.rxqs)
        .map_err(|e| format!("port {}: {e}", cfg.name))?;
    Ok((
        Arc::new(p),
        format!("afpacket ifname={} rxqs={}", o.ifname, o.rxqs),
    ))
}

#[cfg(not(target_os = "linux"))]
fn afpacket(cfg: &PortConfigJson, _: String, _: PortNo) -> Result<(Arc<dyn Port>, String), String> {
    Err(format!("port {}: afpacket ports need Linux", cfg.name))
}

#[cfg(feature = "dpdk")]
fn dpdk(cfg: &PortConfigJson, name: String, no: PortNo) -> Result<(Arc<dyn Port>, String), String> {
    use crate::port::dpdk::{shared_mempool, DpdkPort, DEFAULT_MBUFS};
    let o: DpdkOptions = options(&cfg.options)?;
    let pool = shared_mempool(DEFAULT_MBUFS).map_err(|e| format!("port {}: {e}", cfg.name))?;
    let p = DpdkPort::open(name, no, &o.device, o.rxqs, o.txqs, pool)?;
    Ok((
        Arc::new(p),
        format!("dpdk device={} rxqs={} txqs={}", o.device, o.rxqs, o.txqs),
    ))
}

#[cfg(not(feature = "dpdk"))]
fn dpdk(_: &PortConfigJson, _: String, _: PortNo) -> Result<(Arc<dyn Port>, String), String> {
    Err(super::NO_DPDK.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_options_map_onto_generator_config() {
        let p = PortConfigJson::parse(
            r#"{"name": "g", "number": 3, "type": "generator",
                "options": {"flows": 7, "size": 100, "proto": "tcp", "limit": 50, "rxqs": 2}}"#,
        )
        .unwrap();
        let e = port_from_config(&p, Path::new(".")).unwrap();
        assert_eq!(e.port.name(), "g");
        assert_eq!(e.port.port_no(), PortNo(3));
        assert_eq!(e.port.n_rxq(), 2);
        assert!(
            e.kind.contains("flows=7") && e.kind.contains("proto=tcp"),
            "{}",
            e.kind
        );
        assert_eq!(e.vlan, VlanMode::Access(0));
    }

    #[test]
    fn vlan_and_default_type() {
        let p =
            PortConfigJson::parse(r#"{"name": "p6", "number": 6, "vlan": {"trunk": [10, 20]}}"#)
                .unwrap();
        assert_eq!(p.kind, PortKind::Null);
        let e = port_from_config(&p, Path::new(".")).unwrap();
        assert_eq!(e.vlan, VlanMode::Trunk(vec![10, 20]));
        let err = PortConfigJson::parse(r#"{"name": "p", "number": 6, "vlan": {"access": 5000}}"#)
            .unwrap_err();
        assert!(err.contains("5000"), "{err}");
    }

    #[test]
    fn bad_options_are_named() {
        let e = PortConfigJson::parse(r#"{"name": "n", "number": 1, "options": {"x": 1}}"#)
            .unwrap_err();
        assert!(e.contains("`x`"), "{e}");
        let e = PortConfigJson::parse(
            r#"{"name": "c", "number": 1, "type": "pcap", "options": {"rx": "a", "tx": "b"}}"#,
        )
        .unwrap_err();
        assert!(e.contains("exactly one"), "{e}");
        let e = PortConfigJson::parse(
            r#"{"name": "g", "number": 1, "type": "generator", "options": {"rate_pps": 10}}"#,
        )
        .unwrap_err();
        assert!(e.contains("rate_pps"), "{e}");
        let e = PortConfigJson::parse(r#"{"name": "g", "number": 0}"#).unwrap_err();
        assert!(e.contains("number: 0"), "{e}");
        let e = PortConfigJson::parse(
            r#"{"name": "c", "number": 1, "type": "pcap", "options": {"rx": "/nonexistent/x.pcap"}}"#,
        )
        .unwrap();
        let err = port_from_config(&e, Path::new("."))
            .err()
            .expect("missing file");
        assert!(err.contains("/nonexistent/x.pcap"), "{err}");
    }

    #[test]
    fn pcap_paths_are_relative_to_base() {
        let dir = std::env::temp_dir().join(format!("ferrovs-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = PortConfigJson::parse(
            r#"{"name": "o", "number": 4, "type": "pcap", "options": {"tx": "out.pcap"}}"#,
        )
        .unwrap();
        let b = build_port(&p, &dir).unwrap();
        assert!(b.pcap_tx.is_some());
        assert!(dir.join("out.pcap").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
