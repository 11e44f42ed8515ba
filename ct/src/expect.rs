//! Expectations: connections an ALG announced before they start (FTP data,
//! TFTP replies). A new connection that matches one is created `+rel` and
//! stays related. Expectations are zone-scoped, one-shot and time out.
//!
//! The ALGs that fill this table arrive with NAT; the table and the lookup
//! on the new-connection path exist now so the data model has room.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::key::{ConnKey, Family, Zone};

/// What an expected connection's first packet looks like. The source port
/// is a wildcard (FTP active mode uses port 20, passive any port).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ExpectKey {
    pub zone: Zone,
    pub family: Family,
    pub proto: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub dst_port: u16,
}

impl ExpectKey {
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    pub key: ExpectKey,
    /// Original tuple of the master connection.
    pub master: ConnKey,
    pub helper: &'static str,
    /// Seconds (tracker clock) after which it is void.
    pub expire: u32,
}

/// Maximum expectations per master connection.
pub const MAX_PER_MASTER: usize = 8;

#[derive(Default)]
pub struct ExpectTable {
    map: Mutex<HashMap<ExpectKey, Expectation>>,
    /// Number of entries, read without the lock so the new-connection path
    /// skips the table entirely when it is empty.
    len: AtomicUsize,
}

impl ExpectTable {
    /// Register an expectation. Refused beyond [`MAX_PER_MASTER`] per master.
    pub fn add(&self, e: Expectation) -> Result<(), String> {
        let mut map = self.map.lock();
        let per_master = map.values().filter(|x| x.master == e.master).count();
        if per_master >= MAX_PER_MASTER && !map.contains_key(&e.key) {
            return Err(format!(
                "master connection has {per_master} expectations already"
            ));
        }
        map.insert(e.key, e);
        self.len.store(map.len(), Ordering::Relaxed);
        Ok(())
    }

    /// The expectation matching a new connection's key, if any; `consume`
    /// (on commit) removes it, otherwise it stays for the committing pass.
    #[inline]
    pub fn take(&self, key: &ConnKey, now_s: u32, consume: bool) -> Option<Expectation> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut map = self.map.lock();
        let k = ExpectKey::of(key);
        let e = if consume {
            map.remove(&k)
        } else {
            map.get(&k).cloned()
        };
        self.len.store(map.len(), Ordering::Relaxed);
        e.filter(|e| now_s <= e.expire)
    }

    /// Drop timed-out expectations and those of a given master.
    pub fn expire(&self, now_s: u32) {
        let mut map = self.map.lock();
        map.retain(|_, e| now_s <= e.expire);
        self.len.store(map.len(), Ordering::Relaxed);
    }

    pub fn remove_master(&self, master: &ConnKey) {
        let mut map = self.map.lock();
        map.retain(|_, e| e.master != *master);
        self.len.store(map.len(), Ordering::Relaxed);
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
