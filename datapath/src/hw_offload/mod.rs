//! Hardware (rte_flow) offload of fast-path entries, behind the
//! `dpdk.hw_offload` configuration switch (off by default; OVS's
//! `other_config:hw-offload`).
//!
//! The software fast path ([`crate::fastpath`]) tells a [`HwOffloadSink`]
//! when it installs an entry (one established connection direction: exact
//! first-pass key, optional NAT edit, header rewrites, one output port) and
//! when the entry leaves (hand-back, idle expiry, revalidation drop,
//! clear). The sink only queues a request; a dedicated offload thread
//! ([`engine`], DPDK builds) turns it into an `rte_flow` rule on the
//! ingress DPDK port. Rule insertion may sleep and is slow (microseconds to
//! milliseconds), so rte_flow is never called from a PMD thread.
//! Correctness never depends on the hardware: a packet the device does not
//! handle still takes the software fast path or the classic path.
//!
//! # Full and partial offload
//!
//! Each DPDK port is probed once (at daemon start, or at the first rule for
//! a port added later) with `rte_flow_validate`, then one trial
//! `rte_flow_create` + `rte_flow_destroy` of the form chosen (some drivers
//! validate by parsing only; `net_tap` does, see below), on a rule for
//! TEST-NET-1 addresses (192.0.2.1 -> 192.0.2.2, UDP 9 -> 9):
//!
//! - **full**: pattern ETH / IPV4|IPV6 / TCP|UDP (TCP with SYN, FIN and
//!   RST required clear, so those segments still reach software and hand
//!   the connection back), actions SET_IPV4/IPV6_SRC/DST and
//!   SET_TP_SRC/DST (the NAT edit and address/port rewrites), COUNT, and
//!   PORT_ID (or REPRESENTED_PORT) to the output port. The device then
//!   forwards the connection itself. A rule is pushed in full only when
//!   every rewrite has an rte_flow action and the output is a DPDK port;
//!   otherwise it falls back to the partial form (if the port takes it).
//! - **partial** (what OVS does on NICs without full offload): the exact
//!   5-tuple -> MARK(id) + QUEUE(the rx queue the owning PMD thread polls),
//!   or just QUEUE where MARK is refused. Packets still go through the
//!   software fast path; the rule pins the connection to its PMD's queue
//!   and tags it.
//! - **none**: nothing validated (or the trial create failed): the port is
//!   software only and no rte_flow call is made for it again.
//!
//! # What is not pushed, and known gaps
//!
//! - The rule's pattern is the 5-tuple (plus ingress port), not the whole
//!   first-pass key the software entry matches (MACs, VLAN, TOS, TTL): a
//!   full-offload rule is therefore broader than its entry. This is safe
//!   for the partial form (software still decides) and is why the full form
//!   is only for setups whose first-pass program does not look at those
//!   fields; a real deployment would add them to the ETH/IP items.
//! - The MARK is set but not yet read on receive: the fast path still
//!   looks the packet up by its key (reading `RTE_MBUF_F_RX_FDIR_ID` to
//!   index the entry directly is the next step).
//! - Full offload: the periodic COUNT query feeds the packet/byte counters
//!   of [`HwOffloadStatus`] only; it is not yet fed back to conntrack
//!   (`Tracker::touch`) or to the software entry's idle clock, so a
//!   hardware-forwarded connection looks idle to software and is handed
//!   back (its rule removed) after `max_idle_ms`, then re-offloaded on its
//!   next packet.
//! - Ports added with `add-port` are probed at their first rule; rules are
//!   not moved when PMD threads are re-assigned queues.
//!
//! # Requests and counters
//!
//! Requests go through one lock-free FIFO (`crossbeam_queue::SegQueue`)
//! from the PMD threads to the offload thread, so an entry's add and its
//! removal are handled in order. Adds are bounded: at most `queue_depth`
//! (default 4096) may wait; beyond that the add is dropped and counted
//! (`requests_dropped`) and the connection simply stays in software.
//! Removals are never dropped (a missed removal would leak a rule that
//! keeps steering, or in full mode forwarding, a gone connection); their
//! number is bounded by the fast paths' entries. A removal whose add was
//! dropped finds no rule and is ignored.
//!
//! # What was tested where (DPDK 22.11)
//!
//! | vdev | rte_flow | probe result |
//! | --- | --- | --- |
//! | `net_null`, `net_ring`, `net_pcap`, `net_memif` | no flow ops: every call fails `ENOSYS` | none |
//! | `net_tap` | validates ETH/IPV4/IPV6/TCP/UDP with QUEUE, DROP, PASSTHRU; refuses MARK, COUNT, SET_*, PORT_ID, REPRESENTED_PORT (`ENOTSUP`, kind "action"); create installs a TC flower filter, which needs `sch_multiq` and `cls_flower` in the kernel | partial (QUEUE only) where the kernel has them; none otherwise (the trial create fails, e.g. "Kernel too old for flower support") |
//!
//! A real NIC needs: a driver with rte_flow (mlx5, ice, i40e, ...), for
//! full offload the NIC's switch mode (representors, `transfer` rules on
//! the e-switch; not built here, ferrovs makes ingress rules only) and
//! support for the SET_* actions, and enough rule memory (creation fails
//! and is counted when it runs out).

use std::sync::Arc;

use crate::packet::PortNo;
use crate::program::Op;

#[cfg(feature = "dpdk")]
pub mod engine;

/// An offloaded fast-path entry as plain data: what a hardware rule needs.
/// Addresses are network-order bytes (IPv4 in the first four).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FastRule {
    pub in_port: PortNo,
    pub ipv6: bool,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// 6 (TCP) or 17 (UDP).
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    /// Header values after the NAT edit and rewrites, where they change.
    pub set_src: Option<[u8; 16]>,
    pub set_dst: Option<[u8; 16]>,
    pub set_sport: Option<u16>,
    pub set_dport: Option<u16>,
    /// The entry also rewrites something no rte_flow SET action above
    /// covers (MACs, TOS, a masked write, an ICMP-error NAT edit): it cannot
    /// be offloaded in full.
    pub other_rewrites: bool,
    pub out: PortNo,
}

const TCP: u8 = 6;
const UDP: u8 = 17;

impl FastRule {
    /// The rule of an entry with first-pass key `key`, NAT edit `nat`,
    /// second-pass rewrites `rewrites` (`SetHeader` ops) and output `out`;
    /// None unless the key is TCP or UDP over IPv4 or IPv6.
    pub fn new(
        key: &crate::flow::FlowKey,
        nat: Option<&ct::nat::NatEdit>,
        rewrites: &[Op],
        out: PortNo,
    ) -> Option<FastRule> {
        let proto = key.nw_proto();
        if proto != TCP && proto != UDP {
            return None;
        }
        let (ipv6, src, dst) = match key.dl_type() {
            0x0800 => {
                let mut s = [0u8; 16];
                let mut d = [0u8; 16];
                s[..4].copy_from_slice(&key.nw_src().to_be_bytes());
                d[..4].copy_from_slice(&key.nw_dst().to_be_bytes());
                (false, s, d)
            }
            0x86dd => (
                true,
                key.ipv6_src().to_be_bytes(),
                key.ipv6_dst().to_be_bytes(),
            ),
            _ => return None,
        };
        let mut r = FastRule {
            in_port: key.in_port(),
            ipv6,
            src,
            dst,
            proto,
            sport: key.tp_src(),
            dport: key.tp_dst(),
            set_src: None,
            set_dst: None,
            set_sport: None,
            set_dport: None,
            other_rewrites: false,
            out,
        };
        match nat {
            None => {}
            Some(ct::nat::NatEdit::Packet(t)) => {
                r.set_src = Some(t.src);
                r.set_dst = Some(t.dst);
                r.set_sport = Some(t.src_port);
                r.set_dport = Some(t.dst_port);
            }
            Some(_) => r.other_rewrites = true,
        }
        use ofproto::Field as F;
        for op in rewrites {
            let Op::SetHeader { field, value, mask } = *op else {
                r.other_rewrites = true;
                continue;
            };
            if mask != field.info().slot.ones() {
                r.other_rewrites = true;
                continue;
            }
            let v4 = |v: u128| {
                let mut a = [0u8; 16];
                a[..4].copy_from_slice(&(v as u32).to_be_bytes());
                a
            };
            match field {
                F::NW_SRC if !ipv6 => r.set_src = Some(v4(value)),
                F::NW_DST if !ipv6 => r.set_dst = Some(v4(value)),
                F::IPV6_SRC if ipv6 => r.set_src = Some(value.to_be_bytes()),
                F::IPV6_DST if ipv6 => r.set_dst = Some(value.to_be_bytes()),
                F::TP_SRC => r.set_sport = Some(value as u16),
                F::TP_DST => r.set_dport = Some(value as u16),
                _ => r.other_rewrites = true,
            }
        }
        // Writes that leave a value as it was are no edits.
        if r.set_src == Some(r.src) {
            r.set_src = None;
        }
        if r.set_dst == Some(r.dst) {
            r.set_dst = None;
        }
        if r.set_sport == Some(r.sport) {
            r.set_sport = None;
        }
        if r.set_dport == Some(r.dport) {
            r.set_dport = None;
        }
        Some(r)
    }
}

/// Where the fast path reports its entries (one sink per fast path, i.e.
/// per PMD thread).
///
/// Contract: `id` identifies a live entry of this fast path (it may be
/// reused once the entry is removed); every `installed(id)` is followed by
/// exactly one `removed(id)` before `id` is installed again; calls come
/// from the fast path's own thread. `removed` may be called for an id
/// never reported installed (an entry that is not TCP/UDP): ignored. Both
/// must be cheap and never block (they queue a request).
pub trait HwOffloadSink: Send + Sync {
    fn installed(&self, id: u64, rule: &FastRule);
    fn removed(&self, id: u64);
}

/// The hardware offloader a switch holds: hands out one sink per PMD
/// thread and reports its state.
pub trait HwOffloader: Send + Sync {
    /// The sink of PMD thread `thread`.
    fn sink(&self, thread: usize) -> Arc<dyn HwOffloadSink>;
    fn status(&self) -> HwOffloadStatus;
    /// Handle what is queued, remove every rule, stop (after the PMD
    /// threads stopped).
    fn stop(&self);
}

/// What a port's probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortMode {
    /// Rewrites + output + COUNT in hardware.
    Full,
    /// 5-tuple -> MARK + QUEUE (`mark`), or QUEUE only.
    Partial { mark: bool },
    /// Software only, with the reason.
    None(String),
}

impl std::fmt::Display for PortMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortMode::Full => f.write_str("full"),
            PortMode::Partial { mark: true } => f.write_str("partial (mark+queue)"),
            PortMode::Partial { mark: false } => f.write_str("partial (queue)"),
            PortMode::None(_) => f.write_str("none"),
        }
    }
}

/// One probed port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortStatus {
    pub port: PortNo,
    pub name: String,
    pub mode: PortMode,
    /// Rules installed on it now.
    pub rules: u64,
}

/// Counters of the offloader (since start).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HwOffloadStatus {
    /// Rules created (`rte_flow_create` succeeded).
    pub installed: u64,
    /// Rules destroyed.
    pub removed: u64,
    /// `rte_flow_create` calls that failed (the connection stays in
    /// software).
    pub failed: u64,
    /// `rte_flow_destroy` calls that failed.
    pub remove_failed: u64,
    /// Add requests dropped because the queue was full.
    pub requests_dropped: u64,
    /// Add requests for ports in mode none, or rules the port's mode
    /// cannot express (no rte_flow call made).
    pub not_offloadable: u64,
    /// `rte_flow_create` calls made (after the probes).
    pub create_calls: u64,
    /// Packets and bytes full-offload rules counted (COUNT queries).
    pub hw_packets: u64,
    pub hw_bytes: u64,
    /// Rules in place now.
    pub active: u64,
    pub ports: Vec<PortStatus>,
}

impl HwOffloadStatus {
    /// `ferrovs-ctl hw-offload-show` text.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "hw offload: installed={} removed={} active={} failed={} remove_failed={} \
             requests_dropped={} not_offloadable={} create_calls={} hw_packets={} hw_bytes={}\n",
            self.installed,
            self.removed,
            self.active,
            self.failed,
            self.remove_failed,
            self.requests_dropped,
            self.not_offloadable,
            self.create_calls,
            self.hw_packets,
            self.hw_bytes
        );
        for p in &self.ports {
            s.push_str(&format!(
                "  port {} ({}): mode {} rules={}",
                p.port, p.name, p.mode, p.rules
            ));
            if let PortMode::None(why) = &p.mode {
                s.push_str(&format!(" ({why})"));
            }
            s.push('\n');
        }
        s
    }

    /// The same as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let ports: Vec<serde_json::Value> = self
            .ports
            .iter()
            .map(|p| {
                let (mode, reason) = match &p.mode {
                    PortMode::Full => ("full", None),
                    PortMode::Partial { mark: true } => ("partial", None),
                    PortMode::Partial { mark: false } => ("partial-queue", None),
                    PortMode::None(r) => ("none", Some(r.clone())),
                };
                serde_json::json!({
                    "port": p.port.0, "name": p.name, "mode": mode,
                    "reason": reason, "rules": p.rules,
                })
            })
            .collect();
        serde_json::json!({
            "enabled": true,
            "installed": self.installed, "removed": self.removed, "active": self.active,
            "failed": self.failed, "remove_failed": self.remove_failed,
            "requests_dropped": self.requests_dropped,
            "not_offloadable": self.not_offloadable, "create_calls": self.create_calls,
            "hw_packets": self.hw_packets, "hw_bytes": self.hw_bytes, "ports": ports,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::FlowKey;
    use ofproto::Field;

    fn udp_key() -> FlowKey {
        let mut k = FlowKey::ZERO;
        k.set_in_port(PortNo(3));
        k.set_dl_type(0x0800);
        k.set_nw_proto(UDP);
        k.set_nw_src(0x0a00_0001);
        k.set_nw_dst(0x0a00_0002);
        k.set_tp_src(1000);
        k.set_tp_dst(53);
        k
    }

    #[test]
    fn plain_udp_entry() {
        let r = FastRule::new(&udp_key(), None, &[], PortNo(4)).unwrap();
        assert_eq!(r.in_port, PortNo(3));
        assert!(!r.ipv6);
        assert_eq!(&r.src[..4], &[10, 0, 0, 1]);
        assert_eq!(&r.dst[..4], &[10, 0, 0, 2]);
        assert_eq!((r.proto, r.sport, r.dport), (UDP, 1000, 53));
        assert_eq!(
            (r.set_src, r.set_dst, r.set_sport, r.set_dport),
            (None, None, None, None)
        );
        assert!(!r.other_rewrites);
        assert_eq!(r.out, PortNo(4));
    }

    #[test]
    fn nat_edit_and_rewrites() {
        let t = ct::ConnKey::v4(
            Default::default(),
            std::net::Ipv4Addr::new(10, 0, 0, 100),
            std::net::Ipv4Addr::new(10, 0, 0, 2),
            UDP,
            5000,
            53,
        );
        let nat = ct::nat::NatEdit::Packet(t);
        let ops = [Op::SetHeader {
            field: Field::TP_DST,
            value: 5353,
            mask: Field::TP_DST.info().slot.ones(),
        }];
        let r = FastRule::new(&udp_key(), Some(&nat), &ops, PortNo(4)).unwrap();
        let mut want = [0u8; 16];
        want[..4].copy_from_slice(&[10, 0, 0, 100]);
        assert_eq!(r.set_src, Some(want));
        // Unchanged destination address: no edit.
        assert_eq!(r.set_dst, None);
        assert_eq!(r.set_sport, Some(5000));
        // The rewrite comes after the NAT edit.
        assert_eq!(r.set_dport, Some(5353));
        assert!(!r.other_rewrites);
        // A MAC rewrite has no rte_flow SET action here.
        let mac = [Op::SetHeader {
            field: Field::DL_DST,
            value: 0x0200_0000_00aa,
            mask: Field::DL_DST.info().slot.ones(),
        }];
        assert!(
            FastRule::new(&udp_key(), None, &mac, PortNo(4))
                .unwrap()
                .other_rewrites
        );
        // A masked port write neither.
        let masked = [Op::SetHeader {
            field: Field::TP_SRC,
            value: 1,
            mask: 1,
        }];
        assert!(
            FastRule::new(&udp_key(), None, &masked, PortNo(4))
                .unwrap()
                .other_rewrites
        );
    }

    #[test]
    fn non_tcp_udp_is_not_a_rule() {
        let mut k = udp_key();
        k.set_nw_proto(1);
        assert!(FastRule::new(&k, None, &[], PortNo(4)).is_none());
        let mut k = udp_key();
        k.set_dl_type(0x0806);
        assert!(FastRule::new(&k, None, &[], PortNo(4)).is_none());
    }

    #[test]
    fn ipv6_addresses() {
        let mut k = FlowKey::ZERO;
        k.set_dl_type(0x86dd);
        k.set_nw_proto(TCP);
        k.set_ipv6_src(0x2001_0db8_0000_0000_0000_0000_0000_0001);
        k.set_ipv6_dst(0x2001_0db8_0000_0000_0000_0000_0000_0002);
        let r = FastRule::new(&k, None, &[], PortNo(1)).unwrap();
        assert!(r.ipv6);
        assert_eq!(r.src[..2], [0x20, 0x01]);
        assert_eq!(r.src[15], 1);
        assert_eq!(r.dst[15], 2);
    }

    #[test]
    fn status_text_and_json() {
        let s = HwOffloadStatus {
            installed: 3,
            removed: 2,
            active: 1,
            ports: vec![PortStatus {
                port: PortNo(1),
                name: "dp0".into(),
                mode: PortMode::None("rte_flow_validate: Function not implemented".into()),
                rules: 0,
            }],
            ..Default::default()
        };
        let t = s.to_text();
        assert!(t.contains("installed=3 removed=2 active=1"), "{t}");
        assert!(
            t.contains("port 1 (dp0): mode none rules=0 (rte_flow_validate"),
            "{t}"
        );
        let j = s.to_json();
        assert_eq!(j["installed"], 3);
        assert_eq!(j["ports"][0]["mode"], "none");
    }
}
