//! ICMP and ICMPv6 queries (echo, timestamp, ...) tracked by identifier.
//!
//! Only a request may open a connection (an echo reply with no matching
//! request is invalid, as in nf_conntrack). ICMP errors never create
//! connections: the tracker relates them to the connection of their embedded
//! header (see `tracker.rs`).

use crate::key::{icmp_is_request, ConnKey, Dir};
use crate::timeout::TimeoutAttr;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IcmpState {
    /// Request(s) seen, no reply yet.
    First,
    /// A reply was seen.
    Reply,
}

/// Whether an ICMP query with this key may open a connection.
pub fn valid_new(key: &ConnKey) -> bool {
    icmp_is_request(key.family, key.icmp_type())
}

impl IcmpState {
    pub fn update(&mut self, dir: Dir) {
        if dir == Dir::Reply {
            *self = IcmpState::Reply;
        }
    }
    pub fn timeout_attr(self) -> TimeoutAttr {
        match self {
            IcmpState::First => TimeoutAttr::IcmpFirst,
            IcmpState::Reply => TimeoutAttr::IcmpReply,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Zone;

    #[test]
    fn only_requests_open() {
        let a = "10.0.0.1".parse().unwrap();
        let b = "10.0.0.2".parse().unwrap();
        assert!(valid_new(&ConnKey::v4(Zone(0), a, b, 1, 1, 8 << 8)));
        assert!(!valid_new(&ConnKey::v4(Zone(0), a, b, 1, 1, 0)));
        let mut s = IcmpState::First;
        s.update(Dir::Orig);
        assert_eq!(s, IcmpState::First);
        s.update(Dir::Reply);
        assert_eq!(s.timeout_attr(), TimeoutAttr::IcmpReply);
    }
}
