//! Timeout policies: named profiles of per-protocol-state timeouts.
//!
//! A [`TimeoutPolicy`] gives, for each [`TimeoutAttr`] (a protocol state
//! class such as `tcp_established` or `udp_first`), how many seconds an idle
//! connection in that state lives. Defaults equal the Linux kernel's
//! nf_conntrack sysctls. Policies are registered by name in a
//! [`PolicyTable`]; a `ct` action names one (`timeout=NAME`), a zone may have
//! a default one, and a connection remembers the policy it was committed with.
//!
//! The table holds up to 256 policies in atomics, so the per-packet path reads
//! a timeout with one relaxed load and no lock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use parking_lot::Mutex;
use serde::Serialize;

macro_rules! timeout_attrs {
    ($( $variant:ident = $name:literal, $default:literal; )*) => {
        /// One protocol-state class with its own timeout.
        #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
        #[repr(u8)]
        pub enum TimeoutAttr { $( $variant, )* }

        impl TimeoutAttr {
            /// Every attribute in order.
            pub const ALL: &'static [TimeoutAttr] = &[$( TimeoutAttr::$variant, )*];
            /// Name as used in configuration and `timeout-policy` commands.
            pub fn name(self) -> &'static str {
                match self { $( TimeoutAttr::$variant => $name, )* }
            }
            /// Kernel default in seconds.
            pub fn kernel_default(self) -> u32 {
                match self { $( TimeoutAttr::$variant => $default, )* }
            }
        }
    };
}

timeout_attrs! {
    TcpSynSent = "tcp_syn_sent", 120;
    TcpSynRecv = "tcp_syn_recv", 60;
    TcpEstablished = "tcp_established", 432000;
    TcpFinWait = "tcp_fin_wait", 120;
    TcpCloseWait = "tcp_close_wait", 60;
    TcpLastAck = "tcp_last_ack", 30;
    TcpTimeWait = "tcp_time_wait", 120;
    TcpClose = "tcp_close", 10;
    UdpFirst = "udp_first", 30;
    UdpSingle = "udp_single", 30;
    UdpMultiple = "udp_multiple", 120;
    IcmpFirst = "icmp_first", 30;
    IcmpReply = "icmp_reply", 30;
    OtherFirst = "other_first", 600;
    OtherSingle = "other_single", 600;
    OtherMultiple = "other_multiple", 600;
}

/// Number of timeout attributes.
pub const N_ATTRS: usize = 16;

impl TimeoutAttr {
    pub fn by_name(name: &str) -> Option<TimeoutAttr> {
        TimeoutAttr::ALL.iter().copied().find(|a| a.name() == name)
    }
}

/// Seconds per state class.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
pub struct TimeoutPolicy {
    pub secs: [u32; N_ATTRS],
}

impl Default for TimeoutPolicy {
    fn default() -> Self {
        let mut secs = [0; N_ATTRS];
        for a in TimeoutAttr::ALL {
            secs[*a as usize] = a.kernel_default();
        }
        TimeoutPolicy { secs }
    }
}

impl TimeoutPolicy {
    pub fn get(&self, attr: TimeoutAttr) -> u32 {
        self.secs[attr as usize]
    }
    pub fn set(&mut self, attr: TimeoutAttr, secs: u32) {
        self.secs[attr as usize] = secs;
    }
    /// Parse `name=secs` pairs separated by commas or spaces, over defaults.
    /// Errors name the offending token.
    pub fn parse(text: &str) -> Result<TimeoutPolicy, String> {
        let mut p = TimeoutPolicy::default();
        for tok in text.split([',', ' ']).filter(|t| !t.is_empty()) {
            let (name, val) = tok
                .split_once('=')
                .ok_or_else(|| format!("'{tok}': expected NAME=SECONDS"))?;
            let attr = TimeoutAttr::by_name(name)
                .ok_or_else(|| format!("'{name}': unknown timeout attribute"))?;
            let secs = val
                .parse::<u32>()
                .map_err(|_| format!("'{val}': timeout for {name} must be whole seconds"))?;
            p.set(attr, secs);
        }
        Ok(p)
    }
}

/// Index of a policy in the [`PolicyTable`]. 0 is the built-in default.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash, Serialize)]
pub struct PolicyId(pub u8);

/// Maximum number of policies including the default.
pub const MAX_POLICIES: usize = 256;

/// Registered policies: lock-free reads for packets, a mutex for names.
pub struct PolicyTable {
    secs: Box<[[AtomicU32; N_ATTRS]]>,
    names: Mutex<BTreeMap<String, PolicyId>>,
}

impl Default for PolicyTable {
    fn default() -> Self {
        let def = TimeoutPolicy::default();
        let secs: Vec<[AtomicU32; N_ATTRS]> = (0..MAX_POLICIES)
            .map(|_| std::array::from_fn(|i| AtomicU32::new(def.secs[i])))
            .collect();
        let mut names = BTreeMap::new();
        names.insert("default".to_string(), PolicyId(0));
        PolicyTable {
            secs: secs.into_boxed_slice(),
            names: Mutex::new(names),
        }
    }
}

impl PolicyTable {
    /// Timeout for `attr` under policy `id` (hot path).
    #[inline]
    pub fn secs(&self, id: PolicyId, attr: TimeoutAttr) -> u32 {
        self.secs[id.0 as usize][attr as usize].load(Ordering::Relaxed)
    }

    /// Add or replace a named policy; returns its id.
    pub fn set(&self, name: &str, policy: &TimeoutPolicy) -> Result<PolicyId, String> {
        if name.is_empty() {
            return Err("policy name must not be empty".into());
        }
        let mut names = self.names.lock();
        let id = match names.get(name) {
            Some(id) => *id,
            None => {
                let used: std::collections::BTreeSet<u8> = names.values().map(|i| i.0).collect();
                let free = (1..MAX_POLICIES as u16)
                    .map(|i| i as u8)
                    .find(|i| !used.contains(i))
                    .ok_or_else(|| {
                        format!("'{name}': too many timeout policies (max {MAX_POLICIES})")
                    })?;
                names.insert(name.to_string(), PolicyId(free));
                PolicyId(free)
            }
        };
        for (i, s) in policy.secs.iter().enumerate() {
            self.secs[id.0 as usize][i].store(*s, Ordering::Relaxed);
        }
        Ok(id)
    }

    /// Remove a named policy. Connections that used it fall back to the
    /// default values (its slot is reset).
    pub fn remove(&self, name: &str) -> Result<(), String> {
        if name == "default" {
            return Err("'default': the default policy cannot be removed".into());
        }
        let id = self
            .names
            .lock()
            .remove(name)
            .ok_or_else(|| format!("'{name}': no such timeout policy"))?;
        let def = TimeoutPolicy::default();
        for (i, s) in def.secs.iter().enumerate() {
            self.secs[id.0 as usize][i].store(*s, Ordering::Relaxed);
        }
        Ok(())
    }

    pub fn id(&self, name: &str) -> Option<PolicyId> {
        self.names.lock().get(name).copied()
    }

    pub fn get(&self, id: PolicyId) -> TimeoutPolicy {
        let mut p = TimeoutPolicy::default();
        for a in TimeoutAttr::ALL {
            p.set(*a, self.secs(id, *a));
        }
        p
    }

    /// All named policies.
    pub fn list(&self) -> Vec<(String, TimeoutPolicy)> {
        let names = self.names.lock().clone();
        names.into_iter().map(|(n, id)| (n, self.get(id))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_kernel() {
        let p = TimeoutPolicy::default();
        assert_eq!(p.get(TimeoutAttr::TcpEstablished), 432000);
        assert_eq!(p.get(TimeoutAttr::UdpFirst), 30);
        assert_eq!(p.get(TimeoutAttr::UdpMultiple), 120);
        assert_eq!(p.get(TimeoutAttr::TcpTimeWait), 120);
        assert_eq!(TimeoutAttr::ALL.len(), N_ATTRS);
    }

    #[test]
    fn parse_and_register() {
        let p = TimeoutPolicy::parse("udp_first=3, udp_single=4").unwrap();
        assert_eq!(p.get(TimeoutAttr::UdpFirst), 3);
        assert_eq!(p.get(TimeoutAttr::TcpClose), 10);
        let err = TimeoutPolicy::parse("udp_frist=3").unwrap_err();
        assert!(err.contains("udp_frist"), "{err}");
        assert!(TimeoutPolicy::parse("udp_first=x")
            .unwrap_err()
            .contains("'x'"));

        let t = PolicyTable::default();
        let id = t.set("short", &p).unwrap();
        assert_ne!(id, PolicyId(0));
        assert_eq!(t.secs(id, TimeoutAttr::UdpFirst), 3);
        assert_eq!(t.secs(PolicyId(0), TimeoutAttr::UdpFirst), 30);
        assert_eq!(t.set("short", &TimeoutPolicy::default()).unwrap(), id);
        t.remove("short").unwrap();
        assert!(t.remove("short").is_err());
        assert!(t.remove("default").is_err());
    }
}
