//! Expectations: connections an ALG announced before they start (FTP data,
//! TFTP replies). A new connection that matches one is created `+rel` and
//! stays related (see [`crate::alg`]). Expectations are zone-scoped,
//! one-shot, time out, and are limited per master connection and in total.
//!
//! Limits follow Linux nf_conntrack: each helper has a per-master maximum
//! (FTP and TFTP: 1); announcing one more evicts the master's oldest
//! expectation instead of failing, since a client issuing a new PORT has
//! given up on the previous one. The table as a whole holds at most
//! [`MAX_EXPECTATIONS`]; beyond that, adding fails.
//!
//! Locking: the table has its own mutex, taken after a shard lock (the
//! per-packet path adds and takes expectations under its shard lock; the
//! sweep takes it alone). A read of an atomic length lets the
//! new-connection path skip the mutex while the table is empty.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::key::{ConnKey, Family, Zone};

/// What an expected connection's first packet looks like. The source port
/// is a wildcard (FTP active mode uses port 20, passive any port; a TFTP
/// server answers from a fresh port).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct ExpectKey {
    pub zone: Zone,
    pub family: Family,
    pub proto: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub dst_port: u16,
}

impl ExpectKey {
    /// The expectation a packet with key `k` would match.
    pub fn of(k: &ConnKey) -> ExpectKey {
        ExpectKey {
            zone: k.zone,
            family: k.family,
            proto: k.proto,
            src: k.src,
            dst: k.dst,
            dst_port: k.dst_port,
        }
    }
}

/// An address of a key as an `IpAddr`.
pub fn ip_of(family: Family, b: &[u8; 16]) -> IpAddr {
    match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(*b)),
    }
}

impl fmt::Display for ExpectKey {
    /// `conntrack -L expect` style: `zone=1 proto=6 src=A dst=B sport=0 dport=P`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "zone={} proto={} src={} dst={} sport=0 dport={}",
            self.zone.0,
            self.proto,
            ip_of(self.family, &self.src),
            ip_of(self.family, &self.dst),
            self.dst_port
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    pub key: ExpectKey,
    /// Original tuple of the master connection.
    pub master: ConnKey,
    /// Helper of the master that announced it (the related connection
    /// itself gets no helper).
    pub helper: &'static str,
    /// Seconds (tracker clock) after which it is void.
    pub expire: u32,
    /// The translation the related connection gets when it is committed
    /// with `nat` (its master is NATed): None without NAT.
    pub nat: Option<ExpectNat>,
}

/// How a related connection follows its NATed master (Linux
/// `nf_nat_follow_master`, OVS userspace conntrack's ALG NAT): the
/// expectation describes the data connection's first packet as it reaches
/// `ct` (the translated address and port the announcement now names, or
/// the receiver's real address), and this says how to map it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpectNat {
    /// `Dst`: the related connection's destination becomes `addr`/`port`
    /// (the announcer's real address, hidden by the master's NAT). `Src`:
    /// its source becomes `addr` (the address the announcer knows the
    /// receiver by), keeping the port when it is free.
    pub kind: crate::nat::NatKind,
    pub addr: [u8; 16],
    pub port: Option<u16>,
}

impl ExpectNat {
    /// The NAT rule that applies this mapping to a connection of `family`.
    pub fn spec(&self, family: Family) -> crate::nat::NatSpec {
        crate::nat::NatSpec {
            kind: self.kind,
            family,
            addr_min: self.addr,
            addr_max: self.addr,
            ports: self.port.map(|p| (p, p)),
            persistent: false,
            pick: crate::nat::PortPick::Keep,
        }
    }
}

impl Expectation {
    /// One `dump-expectations` line, `conntrack -L expect` style:
    /// `300 zone=1 proto=6 src=A dst=B sport=0 dport=P
    /// master=(src=..,dst=..,sport=..,dport=..) helper=ftp`, the first
    /// number being the seconds left at `now_s`; an expectation of a NATed
    /// master ends with ` nat=dst=A:P` or ` nat=src=A`.
    pub fn line(&self, now_s: u32) -> String {
        let mut s = format!(
            "{} {} master=({}) helper={}",
            self.expire.saturating_sub(now_s),
            self.key,
            self.master,
            self.helper
        );
        if let Some(n) = &self.nat {
            let dir = match n.kind {
                crate::nat::NatKind::Src => "src",
                crate::nat::NatKind::Dst => "dst",
            };
            s.push_str(&format!(" nat={dir}={}", ip_of(self.key.family, &n.addr)));
            if let Some(p) = n.port {
                s.push_str(&format!(":{p}"));
            }
        }
        s
    }
}

/// Per-master limit for callers with no helper policy (tests, tools).
pub const MAX_PER_MASTER: usize = 8;

/// Most expectations held at once, all zones (Linux's `nf_ct_expect_max`
/// plays the same role).
pub const MAX_EXPECTATIONS: usize = 4096;

/// Why an expectation was not added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExpectError {
    /// The table holds [`MAX_EXPECTATIONS`] already.
    TableFull,
    /// The same expectation is pending for another master connection.
    Clash { other_master: ConnKey },
    /// A per-master limit of 0.
    NotAllowed,
}

impl fmt::Display for ExpectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectError::TableFull => {
                write!(f, "expectation table full ({MAX_EXPECTATIONS} entries)")
            }
            ExpectError::Clash { other_master } => {
                write!(f, "already expected by master {other_master:?}")
            }
            ExpectError::NotAllowed => write!(f, "per-master expectation limit is 0"),
        }
    }
}

impl std::error::Error for ExpectError {}

#[derive(Default)]
struct Inner {
    map: HashMap<ExpectKey, Expectation>,
    /// Each master's expectations, oldest first.
    by_master: HashMap<ConnKey, Vec<ExpectKey>>,
}

impl Inner {
    fn remove(&mut self, k: &ExpectKey) -> Option<Expectation> {
        let e = self.map.remove(k)?;
        if let Some(v) = self.by_master.get_mut(&e.master) {
            v.retain(|x| x != k);
            if v.is_empty() {
                self.by_master.remove(&e.master);
            }
        }
        Some(e)
    }
}

#[derive(Default)]
pub struct ExpectTable {
    inner: Mutex<Inner>,
    /// Number of entries, read without the lock so the new-connection path
    /// skips the table entirely when it is empty.
    len: AtomicUsize,
}

impl ExpectTable {
    /// Register an expectation, allowing its master at most
    /// `max_per_master` pending ones: at the limit the master's oldest is
    /// evicted and returned. Re-announcing a pending expectation of the same
    /// master refreshes it in place (a retransmitted PORT).
    pub fn add(
        &self,
        e: Expectation,
        max_per_master: usize,
    ) -> Result<Option<Expectation>, ExpectError> {
        if max_per_master == 0 {
            return Err(ExpectError::NotAllowed);
        }
        let mut inner = self.inner.lock();
        if let Some(old) = inner.map.get_mut(&e.key) {
            if old.master != e.master {
                return Err(ExpectError::Clash {
                    other_master: old.master,
                });
            }
            *old = e;
            return Ok(None);
        }
        let mut evicted = None;
        let pending = inner.by_master.get(&e.master).map_or(0, Vec::len);
        if pending >= max_per_master {
            let oldest = inner
                .by_master
                .get(&e.master)
                .and_then(|v| v.first().copied());
            if let Some(k) = oldest {
                evicted = inner.remove(&k);
            }
        }
        if inner.map.len() >= MAX_EXPECTATIONS {
            // Whatever was evicted stays evicted: the master asked for a
            // replacement, which is still the newer intent.
            self.len.store(inner.map.len(), Ordering::Relaxed);
            return Err(ExpectError::TableFull);
        }
        inner.by_master.entry(e.master).or_default().push(e.key);
        inner.map.insert(e.key, e);
        self.len.store(inner.map.len(), Ordering::Relaxed);
        Ok(evicted)
    }

    /// The live expectation matching a new connection's key, if any;
    /// `consume` (on commit) removes it, otherwise it stays for the
    /// committing pass. A timed-out one is never returned (and is dropped
    /// when consumed).
    #[inline]
    pub fn take(&self, key: &ConnKey, now_s: u32, consume: bool) -> Option<Expectation> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut inner = self.inner.lock();
        let k = ExpectKey::of(key);
        let e = if consume {
            let e = inner.remove(&k);
            self.len.store(inner.map.len(), Ordering::Relaxed);
            e
        } else {
            inner.map.get(&k).cloned()
        };
        e.filter(|e| now_s <= e.expire)
    }

    /// The NAT mapping of the live expectation matching `key`, if it has
    /// one (the expectation stays).
    pub fn nat_of(&self, key: &ConnKey, now_s: u32) -> Option<ExpectNat> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let inner = self.inner.lock();
        inner
            .map
            .get(&ExpectKey::of(key))
            .filter(|e| now_s <= e.expire)
            .and_then(|e| e.nat)
    }

    /// Remove one expectation (e.g. to re-register it under NAT-translated
    /// addresses).
    pub fn remove(&self, key: &ExpectKey) -> Option<Expectation> {
        let mut inner = self.inner.lock();
        let e = inner.remove(key);
        self.len.store(inner.map.len(), Ordering::Relaxed);
        e
    }

    /// Drop timed-out expectations.
    pub fn expire(&self, now_s: u32) {
        if self.is_empty() {
            return;
        }
        let mut inner = self.inner.lock();
        let dead: Vec<ExpectKey> = inner
            .map
            .values()
            .filter(|e| now_s > e.expire)
            .map(|e| e.key)
            .collect();
        for k in &dead {
            inner.remove(k);
        }
        self.len.store(inner.map.len(), Ordering::Relaxed);
    }

    /// Drop the expectations of a master connection (it was destroyed).
    pub fn remove_master(&self, master: &ConnKey) {
        let mut inner = self.inner.lock();
        if let Some(keys) = inner.by_master.remove(master) {
            for k in keys {
                inner.map.remove(&k);
            }
        }
        self.len.store(inner.map.len(), Ordering::Relaxed);
    }

    /// Pending expectations of one master.
    pub fn count_for(&self, master: &ConnKey) -> usize {
        self.inner.lock().by_master.get(master).map_or(0, Vec::len)
    }

    /// All pending expectations (timed-out ones the sweep has not dropped
    /// yet included), ordered by key.
    pub fn list(&self) -> Vec<Expectation> {
        let mut v: Vec<Expectation> = self.inner.lock().map.values().cloned().collect();
        v.sort_by_key(|e| e.key);
        v
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::ipproto;

    fn master(port: u16) -> ConnKey {
        ConnKey::v4(
            Zone(1),
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            ipproto::TCP,
            port,
            21,
        )
    }

    fn data(zone: u16, dport: u16) -> ConnKey {
        ConnKey::v4(
            Zone(zone),
            "10.0.0.2".parse().unwrap(),
            "10.0.0.1".parse().unwrap(),
            ipproto::TCP,
            20,
            dport,
        )
    }

    fn exp(m: u16, dport: u16, expire: u32) -> Expectation {
        Expectation {
            key: ExpectKey::of(&data(1, dport)),
            master: master(m),
            helper: "ftp",
            expire,
            nat: None,
        }
    }

    #[test]
    fn per_master_limit_evicts_the_oldest() {
        let t = ExpectTable::default();
        assert_eq!(t.add(exp(4000, 5001, 100), 2), Ok(None));
        assert_eq!(t.add(exp(4000, 5002, 100), 2), Ok(None));
        let ev = t.add(exp(4000, 5003, 100), 2).unwrap();
        assert_eq!(ev.map(|e| e.key.dst_port), Some(5001));
        assert_eq!(t.count_for(&master(4000)), 2);
        // Another master has its own budget.
        assert_eq!(t.add(exp(4001, 6001, 100), 2), Ok(None));
        assert_eq!(t.len(), 3);
        assert!(t.take(&data(1, 5001), 10, true).is_none());
        assert!(t.take(&data(1, 5003), 10, true).is_some());
        assert_eq!(t.count_for(&master(4000)), 1);
        let k = ExpectKey::of(&data(1, 6001));
        assert_eq!(t.remove(&k).map(|e| e.master), Some(master(4001)));
        assert_eq!(t.remove(&k), None);
        assert_eq!(
            (t.len(), t.count_for(&master(4001))),
            (1, 0),
            "5002 of master 4000 is left"
        );
    }

    #[test]
    fn same_key_refreshes_or_clashes() {
        let t = ExpectTable::default();
        t.add(exp(4000, 5001, 100), 1).unwrap();
        assert_eq!(t.add(exp(4000, 5001, 200), 1), Ok(None));
        assert_eq!(t.list()[0].expire, 200);
        assert_eq!(t.len(), 1);
        assert_eq!(
            t.add(exp(4001, 5001, 200), 1),
            Err(ExpectError::Clash {
                other_master: master(4000)
            })
        );
        assert_eq!(t.add(exp(4000, 5002, 1), 0), Err(ExpectError::NotAllowed));
    }

    #[test]
    fn zone_is_part_of_the_match() {
        let t = ExpectTable::default();
        t.add(exp(4000, 5001, 100), 1).unwrap();
        assert!(t.take(&data(2, 5001), 10, false).is_none());
        assert!(t.take(&data(1, 5001), 10, false).is_some());
    }

    #[test]
    fn expiry_and_master_removal() {
        let t = ExpectTable::default();
        t.add(exp(4000, 5001, 100), 1).unwrap();
        t.add(exp(4001, 5002, 50), 1).unwrap();
        assert!(t.take(&data(1, 5002), 51, false).is_none(), "timed out");
        t.expire(51);
        assert_eq!(t.len(), 1);
        assert_eq!(t.count_for(&master(4001)), 0);
        t.remove_master(&master(4000));
        assert!(t.is_empty());
        assert!(t.list().is_empty());
    }

    #[test]
    fn table_is_bounded() {
        let t = ExpectTable::default();
        for i in 0..MAX_EXPECTATIONS {
            t.add(exp(i as u16, 10_000 + i as u16, 100), 1).unwrap();
        }
        assert_eq!(
            t.add(exp(u16::MAX, 60_000, 100), 1),
            Err(ExpectError::TableFull)
        );
        assert_eq!(t.len(), MAX_EXPECTATIONS);
    }

    #[test]
    fn display_is_conntrack_style() {
        let k = ExpectKey::of(&data(3, 5001));
        assert_eq!(
            k.to_string(),
            "zone=3 proto=6 src=10.0.0.2 dst=10.0.0.1 sport=0 dport=5001"
        );
        assert_eq!(
            exp(4000, 5001, 300).line(100),
            "200 zone=1 proto=6 src=10.0.0.2 dst=10.0.0.1 sport=0 dport=5001 \
             master=(src=10.0.0.1,dst=10.0.0.2,sport=4000,dport=21) helper=ftp"
        );
    }
}
