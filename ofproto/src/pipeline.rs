//! A bridge's pipeline: its flow tables, its ports (for NORMAL, FLOOD, ALL),
//! its MAC-learning table, the queue of packets for the controller, and the
//! offline `trace` that `ferrovs-flows trace` and the daemon share.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hashbrown::HashMap;
use parking_lot::{Mutex, RwLock};

use crate::action::ControllerSpec;
use crate::fields::{Field, FlowKey, PortNo};
use crate::table::FlowTables;
use crate::text::format::{format_key, format_match};
use crate::xlate::{format_program, xlate, DpAction, DpCt, Xlate};
use ct::CtState;

/// How a port treats VLANs (for NORMAL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VlanMode {
    /// Untagged frames belong to this VLAN (0: the untagged "VLAN").
    Access(u16),
    /// Tagged frames of these VLANs (empty: all); untagged frames are VLAN 0.
    Trunk(Vec<u16>),
}

impl VlanMode {
    /// The VLAN a frame with this TCI belongs to on input, or None to drop it.
    pub fn input_vlan(&self, tci: u16) -> Option<u16> {
        let tagged = tci & 0x1000 != 0;
        let vid = tci & 0x0fff;
        match self {
            VlanMode::Access(v) => (!tagged || vid == 0).then_some(*v),
            VlanMode::Trunk(list) => {
                let v = if tagged { vid } else { 0 };
                (v == 0 || list.is_empty() || list.contains(&v)).then_some(v)
            }
        }
    }
    /// Does this port carry `vlan`?
    pub fn carries(&self, vlan: u16) -> bool {
        match self {
            VlanMode::Access(v) => *v == vlan,
            VlanMode::Trunk(list) => vlan == 0 || list.is_empty() || list.contains(&vlan),
        }
    }
    /// The tag a frame of `vlan` leaves this port with (None: untagged).
    pub fn output_tci(&self, vlan: u16) -> Option<u16> {
        match self {
            VlanMode::Access(_) => None,
            VlanMode::Trunk(_) => (vlan != 0).then_some(vlan),
        }
    }
}

/// One bridge port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortConfig {
    pub port: PortNo,
    pub vlan: VlanMode,
    /// Excluded from FLOOD and NORMAL flooding (still in ALL).
    pub no_flood: bool,
}

impl PortConfig {
    pub fn access(port: u32, vlan: u16) -> Self {
        PortConfig {
            port: PortNo(port),
            vlan: VlanMode::Access(vlan),
            no_flood: false,
        }
    }
    pub fn trunk(port: u32, vlans: &[u16]) -> Self {
        PortConfig {
            port: PortNo(port),
            vlan: VlanMode::Trunk(vlans.to_vec()),
            no_flood: false,
        }
    }
}

/// MAC learning for NORMAL: (MAC, VLAN) -> port, aged out after `max_age_ms`.
#[derive(Debug)]
pub struct MacTable {
    entries: Mutex<HashMap<(u64, u16), (PortNo, u64)>>,
    /// Bumped when a MAC is learned on a new port or first learned: NORMAL
    /// decisions cached as megaflows may be stale after that.
    generation: AtomicU64,
    pub max_age_ms: u64,
    pub capacity: usize,
}

impl Default for MacTable {
    fn default() -> Self {
        MacTable {
            entries: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            max_age_ms: 300_000,
            capacity: 8192,
        }
    }
}

impl MacTable {
    pub fn learn(&self, mac: u64, vlan: u16, port: PortNo, now_ms: u64) {
        let mut e = self.entries.lock();
        if e.len() >= self.capacity && !e.contains_key(&(mac, vlan)) {
            let max_age = self.max_age_ms;
            e.retain(|_, (_, t)| now_ms.saturating_sub(*t) < max_age);
            if e.len() >= self.capacity {
                return;
            }
        }
        if e.insert((mac, vlan), (port, now_ms))
            .is_none_or(|(old, _)| old != port)
        {
            self.generation.fetch_add(1, Ordering::Release);
        }
    }
    /// See the field docs; compare across calls to detect changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
    pub fn lookup(&self, mac: u64, vlan: u16, now_ms: u64) -> Option<PortNo> {
        let e = self.entries.lock();
        e.get(&(mac, vlan))
            .filter(|(_, t)| now_ms.saturating_sub(*t) < self.max_age_ms)
            .map(|(p, _)| *p)
    }
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A packet queued for the control channel by a `controller` action.
#[derive(Clone, Debug)]
pub struct PacketIn {
    pub spec: ControllerSpec,
    pub key: FlowKey,
    pub data: Vec<u8>,
}

/// Bounded queue of packet-ins; overflow is dropped and counted.
#[derive(Debug)]
pub struct ControllerQueue {
    q: Mutex<VecDeque<PacketIn>>,
    pub capacity: usize,
    pub dropped: AtomicU64,
}

impl Default for ControllerQueue {
    fn default() -> Self {
        ControllerQueue {
            q: Mutex::new(VecDeque::new()),
            capacity: 1024,
            dropped: AtomicU64::new(0),
        }
    }
}

impl ControllerQueue {
    /// Queue a packet (the datapath calls this for [`DpAction::Controller`]).
    /// Returns false if the queue was full.
    pub fn push(&self, p: PacketIn) -> bool {
        let mut q = self.q.lock();
        if q.len() >= self.capacity {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let max = p.spec.max_len as usize;
        let mut p = p;
        p.data.truncate(max);
        q.push_back(p);
        true
    }
    pub fn pop(&self) -> Option<PacketIn> {
        self.q.lock().pop_front()
    }
    pub fn len(&self) -> usize {
        self.q.lock().len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One bridge's pipeline.
#[derive(Debug, Default)]
pub struct Pipeline {
    pub flows: FlowTables,
    ports: RwLock<Arc<Vec<PortConfig>>>,
    port_generation: AtomicU64,
    pub mac: MacTable,
    pub controller: ControllerQueue,
}

impl Pipeline {
    pub fn new() -> Self {
        Self::default()
    }
    /// Changes whenever a cached translation may have become wrong: a
    /// flow-mod, a port change, or a MAC learned on a new port. A datapath
    /// compares it before trusting its megaflows.
    pub fn generation(&self) -> u64 {
        self.flows
            .version()
            .wrapping_add(self.mac.generation())
            .wrapping_add(self.port_generation.load(Ordering::Acquire))
    }
    pub fn set_ports(&self, ports: Vec<PortConfig>) {
        self.port_generation.fetch_add(1, Ordering::Release);
        *self.ports.write() = Arc::new(ports);
    }
    pub fn ports(&self) -> Arc<Vec<PortConfig>> {
        self.ports.read().clone()
    }

    /// Run an `ovs-ofctl`-style flow command, as the control channel will:
    /// `add-flow FLOW`, `add-flows TEXT` (one flow a line), `mod-flows FLOW`,
    /// `del-flows [MATCH]`, `dump-flows [MATCH]`; `--strict` before the
    /// command name makes mod/del strict. Returns what ovs-ofctl would print
    /// (dump-flows lines; nothing for the others).
    pub fn ofctl(
        &self,
        command: &str,
        arg: &str,
        now_ms: u64,
    ) -> Result<String, crate::text::parse::ParseError> {
        use crate::text::parse::{err, parse_flow, parse_flows_file, FlowCmd};
        let (strict, cmd) = match command.strip_prefix("--strict ") {
            Some(c) => (true, c.trim()),
            None => (false, command.trim()),
        };
        match cmd {
            "add-flow" => {
                self.flows.add(&parse_flow(arg, FlowCmd::Add)?, now_ms);
            }
            "add-flows" => {
                let specs = parse_flows_file(arg)
                    .map_err(|(n, e)| err(&format!("line {n}: {}", e.token), &e.reason))?;
                let specs: Vec<_> = specs.into_iter().map(|(_, s)| s).collect();
                self.flows.add_many(&specs, now_ms);
            }
            "mod-flows" => {
                self.flows
                    .modify(&parse_flow(arg, FlowCmd::Modify)?, strict, now_ms);
            }
            "del-flows" => {
                self.flows
                    .delete(&parse_flow(arg, FlowCmd::Delete)?, strict);
            }
            "dump-flows" => {
                let filter = if arg.trim().is_empty() {
                    None
                } else {
                    Some(parse_flow(arg, FlowCmd::Delete)?)
                };
                let mut out = String::new();
                for line in self.flows.dump(filter.as_ref(), now_ms) {
                    out.push_str(&line);
                    out.push('\n');
                }
                return Ok(out);
            }
            other => {
                return Err(err(
                    other,
                    "unknown command (add-flow, add-flows, mod-flows, del-flows, dump-flows)",
                ))
            }
        }
        Ok(String::new())
    }

    /// The datapath's entry point on a cache miss.
    pub fn xlate(&self, key: &FlowKey, now_ms: u64) -> Xlate {
        let snap = self.flows.snapshot();
        xlate(self, &snap, key, now_ms, false)
    }

    /// Translate `key` and every ct recirculation it leads to, assuming the
    /// i-th recirculation returns `ct_states[i]` (default `trk|new`; a packet
    /// marked by `notrack` always comes back `trk|untracked`). Returns each
    /// pass: the ct_state it was resumed with (None for the first), the
    /// metadata it started with, and its translation. At most 32 passes.
    pub fn passes(
        &self,
        key: &FlowKey,
        ct_states: &[CtState],
        now_ms: u64,
        trace: bool,
    ) -> Vec<Pass> {
        let snap = self.flows.snapshot();
        let mut out = Vec::new();
        let mut queue: VecDeque<Pending> = VecDeque::new();
        queue.push_back((*key, None, false));
        let mut n_recirc = 0usize;
        while let Some((k, via, notrack)) = queue.pop_front() {
            if out.len() >= 32 {
                break;
            }
            let x = xlate(self, &snap, &k, now_ms, trace);
            let mut marked = notrack;
            let mut fork_marks = Vec::new();
            for a in &x.actions {
                match a {
                    DpAction::Notrack => marked = true,
                    DpAction::CtClear => marked = false,
                    DpAction::Ct(c) if c.recirc.is_some() => fork_marks.push(marked),
                    _ => {}
                }
            }
            for ((rk, ct), untracked) in x.recirc_keys.iter().cloned().zip(fork_marks) {
                let state = if untracked {
                    CtState::TRK | CtState::UNTRACKED
                } else {
                    ct_states
                        .get(n_recirc)
                        .copied()
                        .unwrap_or(CtState::TRK | CtState::NEW)
                };
                n_recirc += 1;
                queue.push_back((recirc_key(&rk, &ct, state), Some((state, ct)), untracked));
            }
            out.push(Pass {
                resumed: via,
                key: k,
                xlate: x,
            });
        }
        out
    }

    /// `ofproto/trace`: [`Pipeline::passes`] as a report.
    pub fn trace(&self, key: &FlowKey, ct_states: &[CtState], now_ms: u64) -> String {
        let mut out = String::new();
        let passes = self.passes(key, ct_states, now_ms, true);
        let truncated = passes.len() >= 32;
        for p in passes {
            if let Some((state, ct)) = &p.resumed {
                out.push_str(&format!(
                    "\n{}\nrecirc({:#x}) - resume conntrack with ct_state={}\n{}\n",
                    "=".repeat(76),
                    ct.recirc.unwrap_or(0),
                    state_text(*state),
                    "=".repeat(76)
                ));
            }
            let x = &p.xlate;
            out.push_str(&format!(
                "Flow: {}\n\nbridge(\"br0\")\n-------------\n",
                format_key(&p.key)
            ));
            for l in &x.trace {
                out.push_str(&format!(" {l}\n"));
            }
            let m = crate::matches::Match {
                key: p.key.masked(&x.wc),
                mask: x.wc,
            };
            out.push_str(&format!("\nFinal flow: {}\n", format_key(&x.final_key)));
            out.push_str(&format!("Megaflow: {}\n", format_match(&m)));
            out.push_str(&format!(
                "Datapath actions: {}\n",
                format_program(&x.actions)
            ));
            if let Some(r) = &x.drop_reason {
                out.push_str(&format!("Drop reason: {r}\n"));
            }
        }
        if truncated {
            out.push_str("\n>>>> too many recirculations, trace stopped after 32 passes <<<<\n");
        }
        out
    }
}

/// A pass waiting to run: metadata, how it resumed, and the notrack mark.
type Pending = (FlowKey, Option<(CtState, DpCt)>, bool);

/// One translation pass of [`Pipeline::passes`].
#[derive(Debug)]
pub struct Pass {
    /// The ct_state and ct action this pass resumed from (None: the first pass).
    pub resumed: Option<(CtState, DpCt)>,
    pub key: FlowKey,
    pub xlate: Xlate,
}

fn state_text(s: CtState) -> String {
    let mut v = Vec::new();
    for (bit, name) in ct::state::STATE_NAMES {
        if s.contains(bit) {
            v.push(name);
        }
    }
    if v.is_empty() {
        "0".into()
    } else {
        v.join("|")
    }
}

/// The metadata a recirculated packet carries: ct fields as conntrack would
/// set them for `state` (original-direction tuple from the packet, swapped
/// for replies; mark/label from a committing exec).
pub fn recirc_key(k: &FlowKey, ct: &DpCt, state: CtState) -> FlowKey {
    let mut r = *k;
    r.set(Field::RECIRC_ID, ct.recirc.unwrap_or(0) as u128);
    r.set(Field::CT_STATE, state.bits() as u128);
    if state.contains(CtState::UNTRACKED) || !state.contains(CtState::TRK) {
        return r;
    }
    r.set(Field::CT_ZONE, ct.zone as u128);
    if ct.commit {
        if let Some((v, m)) = ct.mark {
            r.set_masked(Field::CT_MARK, v as u128, m as u128);
        }
        if let Some((v, m)) = ct.label {
            r.set_masked(Field::CT_LABEL, v, m);
        }
    }
    if state.contains(CtState::INV) {
        return r;
    }
    let rpl = state.contains(CtState::RPL);
    let pairs = [
        (
            Field::NW_SRC,
            Field::NW_DST,
            Field::CT_NW_SRC,
            Field::CT_NW_DST,
        ),
        (
            Field::IPV6_SRC,
            Field::IPV6_DST,
            Field::CT_IPV6_SRC,
            Field::CT_IPV6_DST,
        ),
        (
            Field::TP_SRC,
            Field::TP_DST,
            Field::CT_TP_SRC,
            Field::CT_TP_DST,
        ),
    ];
    for (s, d, cs, cd) in pairs {
        let (a, b) = if rpl {
            (k.get(d), k.get(s))
        } else {
            (k.get(s), k.get(d))
        };
        r.set(cs, a);
        r.set(cd, b);
    }
    r.set(Field::CT_NW_PROTO, k.get(Field::NW_PROTO));
    r
}

/// Parse `--ct-state trk+new,trk+est` (one state per recirculation; `+` or
/// `|` between flags).
pub fn parse_ct_states(s: &str) -> Result<Vec<CtState>, crate::text::parse::ParseError> {
    s.split(',')
        .map(|one| {
            let mut st = CtState::empty();
            for name in one.split(['+', '|']).filter(|n| !n.is_empty()) {
                st |= CtState::by_name(name)
                    .ok_or_else(|| crate::text::parse::err(name, "unknown ct_state flag"))?;
            }
            Ok(st)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ofctl_commands() {
        let p = Pipeline::new();
        p.ofctl("add-flows", "# fw\ntable=0,priority=10,ip actions=output:1\ntable=0,priority=5,arp actions=NORMAL\n", 0).unwrap();
        p.ofctl("add-flow", "table=1,tcp,tp_dst=80 actions=output:2", 0)
            .unwrap();
        assert_eq!(p.flows.snapshot().len(), 3);
        let d = p.ofctl("dump-flows", "table=1", 0).unwrap();
        assert_eq!(d, " cookie=0x0, duration=0.000s, table=1, n_packets=0, n_bytes=0, tcp,tp_dst=80 actions=output:2\n");
        p.ofctl("mod-flows", "ip actions=output:9", 0).unwrap();
        assert!(p
            .ofctl("dump-flows", "", 0)
            .unwrap()
            .contains("priority=10,ip actions=output:9"));
        // Strict delete needs the priority; loose delete does not.
        p.ofctl("--strict del-flows", "table=0,ip", 0).unwrap();
        assert_eq!(p.flows.snapshot().len(), 3);
        p.ofctl("--strict del-flows", "table=0,priority=10,ip", 0)
            .unwrap();
        assert_eq!(p.flows.snapshot().len(), 2);
        p.ofctl("del-flows", "", 0).unwrap();
        assert!(p.flows.snapshot().is_empty());
        let e = p
            .ofctl("add-flows", "ip actions=drop\nbogus=1 actions=drop\n", 0)
            .unwrap_err();
        assert!(e.token.starts_with("line 2: bogus"), "{e}");
        assert!(p
            .ofctl("frob-flows", "", 0)
            .unwrap_err()
            .to_string()
            .contains("unknown command"));
    }

    #[test]
    fn controller_queue_is_bounded_and_truncates() {
        let q = ControllerQueue {
            capacity: 2,
            ..Default::default()
        };
        let spec = ControllerSpec {
            max_len: 4,
            ..Default::default()
        };
        let pkt = || PacketIn {
            spec: spec.clone(),
            key: FlowKey::default(),
            data: vec![1, 2, 3, 4, 5, 6],
        };
        assert!(q.push(pkt()));
        assert!(q.push(pkt()));
        assert!(!q.push(pkt()));
        assert_eq!(q.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(q.pop().unwrap().data, vec![1, 2, 3, 4]);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn mac_table_ages_and_respects_capacity() {
        let t = MacTable {
            max_age_ms: 1000,
            capacity: 2,
            ..Default::default()
        };
        t.learn(1, 0, PortNo(1), 0);
        t.learn(2, 0, PortNo(2), 0);
        assert_eq!(t.lookup(1, 0, 999), Some(PortNo(1)));
        assert_eq!(t.lookup(1, 5, 999), None, "VLANs are separate");
        assert_eq!(t.lookup(1, 0, 1000), None, "aged out");
        // Full of live entries: a new MAC is not learned.
        t.learn(1, 0, PortNo(1), 500);
        t.learn(2, 0, PortNo(2), 500);
        t.learn(3, 0, PortNo(3), 600);
        assert_eq!(t.lookup(3, 0, 600), None);
        // Once the old ones age out there is room again.
        t.learn(3, 0, PortNo(3), 1600);
        assert_eq!(t.lookup(3, 0, 1600), Some(PortNo(3)));
    }

    #[test]
    fn generation_moves_on_every_change_that_can_stale_a_megaflow() {
        let p = Pipeline::new();
        let g0 = p.generation();
        p.flows.add(
            &crate::text::parse::parse_flow("ip actions=drop", crate::text::parse::FlowCmd::Add)
                .unwrap(),
            0,
        );
        let g1 = p.generation();
        assert_ne!(g0, g1, "flow-mod");
        p.set_ports(vec![PortConfig::access(1, 0)]);
        let g2 = p.generation();
        assert_ne!(g1, g2, "ports");
        p.mac.learn(5, 0, PortNo(1), 0);
        let g3 = p.generation();
        assert_ne!(g2, g3, "new MAC");
        p.mac.learn(5, 0, PortNo(1), 10);
        assert_eq!(g3, p.generation(), "refreshing a MAC changes nothing");
        p.mac.learn(5, 0, PortNo(2), 20);
        assert_ne!(g3, p.generation(), "MAC moved");
    }

    #[test]
    fn vlan_modes() {
        let a = VlanMode::Access(10);
        assert_eq!(a.input_vlan(0), Some(10));
        assert_eq!(
            a.input_vlan(0x1000 | 10),
            None,
            "tagged frame on an access port"
        );
        assert_eq!(a.output_tci(10), None);
        let t = VlanMode::Trunk(vec![10]);
        assert_eq!(t.input_vlan(0x1000 | 10), Some(10));
        assert_eq!(t.input_vlan(0x1000 | 11), None);
        assert_eq!(t.input_vlan(0), Some(0));
        assert_eq!(t.output_tci(10), Some(10));
        assert!(!t.carries(11));
    }

    #[test]
    fn ct_state_sequences_parse() {
        let v = parse_ct_states("trk+new,trk|est|rpl").unwrap();
        assert_eq!(
            v,
            vec![
                CtState::TRK | CtState::NEW,
                CtState::TRK | CtState::EST | CtState::RPL
            ]
        );
        assert_eq!(parse_ct_states("trk+nope").unwrap_err().token, "nope");
    }

    #[test]
    fn recirc_key_sets_ct_fields_from_state() {
        let mut k = FlowKey::default();
        k.set(Field::DL_TYPE, 0x0800);
        k.set(Field::NW_PROTO, 6);
        k.set(Field::NW_SRC, 1);
        k.set(Field::NW_DST, 2);
        k.set(Field::TP_SRC, 3);
        k.set(Field::TP_DST, 4);
        let ct = DpCt {
            zone: 9,
            commit: true,
            force: false,
            mark: Some((5, 0xff)),
            label: None,
            alg: None,
            timeout: None,
            nat: None,
            recirc: Some(3),
        };
        let r = recirc_key(&k, &ct, CtState::TRK | CtState::EST | CtState::RPL);
        assert_eq!(r.get(Field::RECIRC_ID), 3);
        assert_eq!(r.get(Field::CT_ZONE), 9);
        assert_eq!(r.get(Field::CT_MARK), 5);
        // A reply's original direction is the reverse of the packet.
        assert_eq!((r.get(Field::CT_NW_SRC), r.get(Field::CT_NW_DST)), (2, 1));
        assert_eq!((r.get(Field::CT_TP_SRC), r.get(Field::CT_TP_DST)), (4, 3));
        let u = recirc_key(&k, &ct, CtState::TRK | CtState::UNTRACKED);
        assert_eq!(
            u.get(Field::CT_ZONE),
            0,
            "untracked packets get no conntrack fields"
        );
        assert_eq!(u.get(Field::CT_STATE), 0x120);
    }
}
