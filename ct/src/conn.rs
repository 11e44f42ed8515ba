//! One tracked connection.
//!
//! The record is kept small (about 144 bytes) because a switch holds millions:
//! everything rare (a reply tuple that differs from the reversed original,
//! i.e. NAT; a non-zero label; the master of a related connection) lives in an
//! optional boxed [`ConnExt`]. Times are seconds since the tracker's clock
//! origin (`now` is passed in by the caller; conntrack never reads a clock),
//! except the start timestamp, kept in nanoseconds for flow accounting.

use bitflags::bitflags;
use serde::Serialize;

use crate::key::{ConnKey, Dir};
use crate::proto::ProtoState;
use crate::seqadj::SeqAdj;
use crate::timeout::PolicyId;

bitflags! {
    /// Lifecycle and property flags of a connection.
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
    pub struct ConnStatus: u8 {
        /// A packet was seen in the reply direction (the connection is +est).
        const SEEN_REPLY = 0x01;
        /// Created from an expectation: its packets are +rel.
        const RELATED = 0x02;
        /// Source NAT applies.
        const SRC_NAT = 0x04;
        /// Destination NAT applies.
        const DST_NAT = 0x08;
        /// Carried by a fast-path (flow offload) entry.
        const OFFLOADED = 0x10;
        /// Assured: saw traffic both ways past the handshake; early drop
        /// spares it.
        const ASSURED = 0x20;
        /// Missed-event cache (reliable delivery, see
        /// [`crate::events::reliable`]): a NEW a reliable subscriber
        /// refused, to be retried (merged) on the connection's next packet.
        const MISSED_NEW = 0x40;
        /// Missed-event cache: a refused UPDATE, retried likewise.
        const MISSED_UPDATE = 0x80;
        /// Both missed-event bits.
        const MISSED = 0xc0;
    }
}

/// Per-direction traffic counters.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize)]
pub struct DirCounters {
    pub packets: u64,
    pub bytes: u64,
}

/// The rarely-needed part of a connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnExt {
    /// Reply tuple when it is not `orig.reverse()` (NAT).
    pub reply: Option<ConnKey>,
    /// `ct_label`, when non-zero.
    pub label: u128,
    /// Original tuple of the master connection, for related connections.
    pub master: Option<ConnKey>,
    /// ALG helper name (e.g. "ftp").
    pub helper: Option<&'static str>,
    /// Where the NAT reply tuple's remote reference lives, when the reply
    /// tuple hashes to another shard: `(shard, generation)`.
    pub reply_remote: Option<(u32, u32)>,
    /// TCP sequence shifts left by an ALG that resized segments of this
    /// (NATed) connection; inactive otherwise.
    pub seqadj: SeqAdj,
}

/// A connection.
///
/// Field order is the cache layout (`repr(C)`): the first 64-byte line holds
/// what every packet reads and the UDP/ICMP state (key compare, expiry,
/// mark, status, protocol-state tag), the second TCP's window state and the
/// counters; the start timestamp comes last. The connection's id is not
/// stored: it is derived from where the record lives.
#[derive(Clone, Debug)]
#[repr(C)]
pub struct Conn {
    /// Original-direction key (what the first packet carried).
    pub key: ConnKey,
    pub ext: Option<Box<ConnExt>>,
    /// The connection expires once `now` (seconds) passes this.
    pub expire: u32,
    pub mark: u32,
    pub status: ConnStatus,
    pub policy: PolicyId,
    /// Low 16 bits of the wheel tick this connection is filed under (see
    /// `expiry.rs`).
    pub sched: u16,
    pub proto: ProtoState,
    /// Counters by direction ([`Dir::index`]).
    pub counters: [DirCounters; 2],
    /// Creation time, nanoseconds on the caller's clock.
    pub start_ns: u64,
}

impl Conn {
    /// The reply-direction key.
    #[inline]
    pub fn reply_key(&self) -> ConnKey {
        match self.ext.as_deref().and_then(|e| e.reply) {
            Some(r) => r,
            None => self.key.reverse(),
        }
    }

    /// Key for a direction.
    #[inline]
    pub fn dir_key(&self, dir: Dir) -> ConnKey {
        match dir {
            Dir::Orig => self.key,
            Dir::Reply => self.reply_key(),
        }
    }

    pub fn label(&self) -> u128 {
        self.ext.as_deref().map_or(0, |e| e.label)
    }

    pub fn set_label(&mut self, label: u128) {
        if label == 0 && self.ext.is_none() {
            return;
        }
        self.ext_mut().label = label;
    }

    pub fn ext_mut(&mut self) -> &mut ConnExt {
        self.ext.get_or_insert_with(Default::default)
    }

    pub fn seen_reply(&self) -> bool {
        self.status.contains(ConnStatus::SEEN_REPLY)
    }

    /// Whether `now_s` is past this connection's lifetime.
    #[inline]
    pub fn expired(&self, now_s: u32) -> bool {
        now_s > self.expire
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_fields_share_the_first_line() {
        assert_eq!(std::mem::offset_of!(Conn, key), 0);
        assert!(std::mem::offset_of!(Conn, expire) < 64);
        assert!(std::mem::offset_of!(Conn, mark) < 64);
        assert!(std::mem::offset_of!(Conn, status) < 64);
        assert!(std::mem::offset_of!(Conn, proto) < 64);
        assert!(std::mem::offset_of!(Conn, counters) + 32 <= 128);
    }

    #[test]
    fn conn_stays_small() {
        // Memory per connection is a benchmark target (<= 160 bytes all in);
        // the record itself must stay at or under 144.
        assert!(
            std::mem::size_of::<Conn>() <= 144,
            "{}",
            std::mem::size_of::<Conn>()
        );
    }
}
