//! Dump and statistics: snapshots of connections in the OVS text format
//! (`ovs-appctl dpctl/dump-conntrack`) and as JSON, and counts by zone and
//! protocol. Each shard is copied out under its lock and formatted after.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::conn::{Conn, ConnStatus, DirCounters};
use crate::flush::FlushFilter;
use crate::key::{ipproto, ConnKey, Family, Zone};
use crate::tracker::Tracker;

/// One connection as `dump-conntrack` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnSnapshot {
    pub id: u32,
    pub orig: ConnKey,
    pub reply: ConnKey,
    pub zone: Zone,
    pub mark: u32,
    pub label: u128,
    pub tcp_state: Option<&'static str>,
    pub counters: [DirCounters; 2],
    pub start_ns: u64,
    /// Seconds left before expiry.
    pub timeout: u32,
    pub status: ConnStatus,
    /// ALG helper attached on commit (`helper=ftp`).
    pub helper: Option<&'static str>,
    /// Original tuple of the master, for a related connection.
    pub master: Option<ConnKey>,
}

impl ConnSnapshot {
    pub fn of(c: &Conn, id: u32, now_s: u32) -> ConnSnapshot {
        ConnSnapshot {
            id,
            orig: c.key,
            reply: c.reply_key(),
            zone: c.key.zone,
            mark: c.mark,
            label: c.label(),
            tcp_state: c.proto.tcp_state_name(),
            counters: c.counters,
            start_ns: c.start_ns,
            timeout: c.expire.saturating_sub(now_s),
            status: c.status - ConnStatus::MISSED,
            helper: c.ext.as_deref().and_then(|e| e.helper),
            master: c.ext.as_deref().and_then(|e| e.master),
        }
    }

    /// Protocol name as OVS prints it (`tcp`, `udp6`, `icmp`, `icmpv6`, ...).
    pub fn proto_name(&self) -> String {
        let v6 = self.orig.family == Family::Ipv6;
        match self.orig.proto {
            ipproto::TCP => if v6 { "tcp6" } else { "tcp" }.to_string(),
            ipproto::UDP => if v6 { "udp6" } else { "udp" }.to_string(),
            ipproto::SCTP => if v6 { "sctp6" } else { "sctp" }.to_string(),
            ipproto::ICMP => "icmp".to_string(),
            ipproto::ICMPV6 => "icmpv6".to_string(),
            p => format!(
                "{}{}",
                if v6 { "ipv6" } else { "ip" },
                if p == 0 {
                    String::new()
                } else {
                    format!(",proto={p}")
                }
            ),
        }
    }
}

impl fmt::Display for ConnSnapshot {
    /// `tcp,orig=(src=...,dst=...,sport=...,dport=...),reply=(...),zone=5,mark=1,labels=0x2,protoinfo=(state=ESTABLISHED)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{},orig=({}),reply=({})",
            self.proto_name(),
            self.orig,
            self.reply
        )?;
        if self.zone.0 != 0 {
            write!(f, ",zone={}", self.zone.0)?;
        }
        if self.mark != 0 {
            write!(f, ",mark={}", self.mark)?;
        }
        if self.label != 0 {
            write!(f, ",labels={:#x}", self.label)?;
        }
        if let Some(s) = self.tcp_state {
            write!(f, ",protoinfo=(state={s})")?;
        }
        if let Some(h) = self.helper {
            write!(f, ",helper={h}")?;
        }
        if let Some(m) = &self.master {
            write!(f, ",master=({m})")?;
        }
        if self.status.contains(ConnStatus::OFFLOADED) {
            write!(f, " [OFFLOAD]")?;
        }
        Ok(())
    }
}

#[derive(Serialize)]
struct TupleJson {
    src: String,
    dst: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    sport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    r#type: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u8>,
}

fn tuple_json(k: &ConnKey) -> TupleJson {
    let icmp = k.is_icmp();
    let ports = matches!(k.proto, ipproto::TCP | ipproto::UDP | ipproto::SCTP);
    TupleJson {
        src: k.src_ip().to_string(),
        dst: k.dst_ip().to_string(),
        sport: ports.then_some(k.src_port),
        dport: ports.then_some(k.dst_port),
        id: icmp.then_some(k.src_port),
        r#type: icmp.then_some(k.icmp_type()),
        code: icmp.then_some(k.icmp_code()),
    }
}

impl Serialize for ConnSnapshot {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct J<'a> {
            id: u32,
            proto: String,
            orig: TupleJson,
            reply: TupleJson,
            zone: u16,
            mark: u32,
            labels: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            state: Option<&'a str>,
            counters: &'a [DirCounters; 2],
            start_ns: u64,
            timeout: u32,
            seen_reply: bool,
            assured: bool,
            offloaded: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            helper: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            master: Option<TupleJson>,
        }
        J {
            id: self.id,
            proto: self.proto_name(),
            orig: tuple_json(&self.orig),
            reply: tuple_json(&self.reply),
            zone: self.zone.0,
            mark: self.mark,
            labels: format!("{:#x}", self.label),
            state: self.tcp_state,
            counters: &self.counters,
            start_ns: self.start_ns,
            timeout: self.timeout,
            seen_reply: self.status.contains(ConnStatus::SEEN_REPLY),
            assured: self.status.contains(ConnStatus::ASSURED),
            offloaded: self.status.contains(ConnStatus::OFFLOADED),
            helper: self.helper,
            master: self.master.as_ref().map(tuple_json),
        }
        .serialize(s)
    }
}

/// Count of connections per zone and protocol.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ConnCounts {
    pub total: u64,
    /// zone → protocol name → count.
    pub by_zone: BTreeMap<u16, BTreeMap<String, u64>>,
}

impl Tracker {
    /// Snapshot every connection matching `filter`, shard by shard.
    pub fn dump(&self, filter: &FlushFilter, now_ns: u64) -> Vec<ConnSnapshot> {
        let now_s = (now_ns / 1_000_000_000) as u32;
        let mut out = Vec::new();
        for i in 0..self.shards.len() {
            let shard = self.lock_shard(i);
            out.extend(
                shard
                    .iter()
                    .filter(|(_, c)| filter.matches(c))
                    .map(|(slot, c)| ConnSnapshot::of(c, shard.conn_id(slot, self.mask), now_s)),
            );
        }
        out
    }

    /// Visit every connection matching `filter` without collecting them all.
    pub fn for_each(&self, filter: &FlushFilter, now_ns: u64, mut f: impl FnMut(&ConnSnapshot)) {
        let now_s = (now_ns / 1_000_000_000) as u32;
        let mut chunk = Vec::new();
        for i in 0..self.shards.len() {
            chunk.clear();
            {
                let shard = self.lock_shard(i);
                chunk.extend(
                    shard
                        .iter()
                        .filter(|(_, c)| filter.matches(c))
                        .map(|(slot, c)| {
                            ConnSnapshot::of(c, shard.conn_id(slot, self.mask), now_s)
                        }),
                );
            }
            chunk.iter().for_each(&mut f);
        }
    }

    /// Connections counted by zone and protocol.
    pub fn counts(&self) -> ConnCounts {
        let mut counts = ConnCounts::default();
        self.for_each(&FlushFilter::default(), 0, |s| {
            counts.total += 1;
            *counts
                .by_zone
                .entry(s.zone.0)
                .or_default()
                .entry(s.proto_name())
                .or_default() += 1;
        });
        counts
    }
}
