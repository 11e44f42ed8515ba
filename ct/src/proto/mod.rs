//! Per-protocol trackers behind one small interface.
//!
//! Each protocol module answers three questions, like the per-protocol
//! function tables of OVS's userspace conntrack and nf_conntrack:
//! - `valid_new`: may this packet create a connection?
//! - `new`: the protocol state of a connection it creates;
//! - `update`: feed a packet of an existing connection (may reject it as
//!   invalid, or ask the caller to reopen the connection).
//!
//! plus which timeout class ([`TimeoutAttr`]) the current state uses.
//! [`ProtoState`] is the per-connection state; dispatch is a `match`, no
//! virtual calls on the packet path.

pub mod icmp;
pub mod other;
pub mod tcp;
pub mod udp;

use crate::key::{ipproto, Dir};
use crate::packet::{L4Info, PacketInfo};
use crate::timeout::TimeoutAttr;

pub use icmp::IcmpState;
pub use other::OtherState;
pub use tcp::{TcpConn, TcpState, TcpVerdict};
pub use udp::UdpState;

/// Directions seen, for protocols without a handshake (UDP, other).
///
/// First: one packet from the originator. Single: more packets, all from the
/// originator. Multiple: the other side answered.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Seen {
    First,
    Single,
    Multiple,
}

impl Seen {
    pub fn update(&mut self, dir: Dir) {
        *self = match (dir, *self) {
            (Dir::Reply, _) | (_, Seen::Multiple) => Seen::Multiple,
            (Dir::Orig, _) => Seen::Single,
        };
    }
}

/// Protocol state stored in a connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ProtoState {
    Tcp(TcpConn),
    Udp(UdpState),
    Icmp(IcmpState),
    Other(OtherState),
}

/// Outcome of [`ProtoState::update`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Update {
    Accept,
    Invalid(&'static str),
    /// Destroy the connection and create a new one from this packet.
    Reopen,
}

impl ProtoState {
    /// Whether the packet may create a connection.
    #[inline]
    pub fn valid_new(info: &PacketInfo) -> bool {
        match info.l4 {
            L4Info::Tcp(seg) => TcpConn::valid_new(&seg),
            L4Info::IcmpQuery => icmp::valid_new(&info.key),
            L4Info::IcmpError { .. } => false,
            L4Info::Plain => true,
        }
    }

    /// The state of a connection the packet creates.
    #[inline]
    pub fn new(info: &PacketInfo) -> ProtoState {
        match info.l4 {
            L4Info::Tcp(seg) => ProtoState::Tcp(TcpConn::new(&seg)),
            L4Info::IcmpQuery => ProtoState::Icmp(IcmpState::First),
            _ if info.key.proto == ipproto::UDP => ProtoState::Udp(UdpState(Seen::First)),
            _ => ProtoState::Other(OtherState(Seen::First)),
        }
    }

    /// Feed a packet of this connection travelling in `dir`.
    #[inline]
    pub fn update(&mut self, dir: Dir, info: &PacketInfo, liberal: bool) -> Update {
        match (self, info.l4) {
            (ProtoState::Tcp(t), L4Info::Tcp(seg)) => match t.update(dir, &seg, liberal) {
                TcpVerdict::Accept => Update::Accept,
                TcpVerdict::Invalid(why) => Update::Invalid(why),
                TcpVerdict::Reopen => Update::Reopen,
            },
            (ProtoState::Udp(UdpState(seen)), _) | (ProtoState::Other(OtherState(seen)), _) => {
                seen.update(dir);
                Update::Accept
            }
            (ProtoState::Icmp(i), _) => {
                i.update(dir);
                Update::Accept
            }
            (ProtoState::Tcp(_), _) => Update::Invalid("non-TCP packet on a TCP connection"),
        }
    }

    /// Timeout class of the current state.
    #[inline]
    pub fn timeout_attr(&self) -> TimeoutAttr {
        match self {
            ProtoState::Tcp(t) => match t.state {
                TcpState::SynSent | TcpState::SynSent2 | TcpState::None => TimeoutAttr::TcpSynSent,
                TcpState::SynRecv => TimeoutAttr::TcpSynRecv,
                TcpState::Established => TimeoutAttr::TcpEstablished,
                TcpState::FinWait => TimeoutAttr::TcpFinWait,
                TcpState::CloseWait => TimeoutAttr::TcpCloseWait,
                TcpState::LastAck => TimeoutAttr::TcpLastAck,
                TcpState::TimeWait => TimeoutAttr::TcpTimeWait,
                TcpState::Close => TimeoutAttr::TcpClose,
            },
            ProtoState::Udp(u) => u.timeout_attr(),
            ProtoState::Icmp(i) => i.timeout_attr(),
            ProtoState::Other(o) => o.timeout_attr(),
        }
    }

    /// TCP state name for `protoinfo=(state=...)`, None for other protocols.
    pub fn tcp_state_name(&self) -> Option<&'static str> {
        match self {
            ProtoState::Tcp(t) => Some(t.state.name()),
            _ => None,
        }
    }

    /// Whether the connection is in an embryonic state (no reply yet / SYN
    /// phase): the class early drop and flood defence act on first.
    pub fn is_embryonic(&self) -> bool {
        crate::pressure::is_embryonic_attr(self.timeout_attr())
    }
}
