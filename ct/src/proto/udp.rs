//! UDP: no handshake, so the state only records which directions were seen.
//!
//! First: one packet from the originator. Single: more packets, all from the
//! originator. Multiple: the other side answered (the connection is then
//! established from conntrack's point of view).

use crate::key::Dir;
use crate::timeout::TimeoutAttr;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum UdpState {
    First,
    Single,
    Multiple,
}

impl UdpState {
    pub fn update(&mut self, dir: Dir) {
        *self = match (dir, *self) {
            (Dir::Reply, _) | (_, UdpState::Multiple) => UdpState::Multiple,
            (Dir::Orig, _) => UdpState::Single,
        };
    }
    pub fn timeout_attr(self) -> TimeoutAttr {
        match self {
            UdpState::First => TimeoutAttr::UdpFirst,
            UdpState::Single => TimeoutAttr::UdpSingle,
            UdpState::Multiple => TimeoutAttr::UdpMultiple,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_single_multiple() {
        let mut s = UdpState::First;
        assert_eq!(s.timeout_attr(), TimeoutAttr::UdpFirst);
        s.update(Dir::Orig);
        assert_eq!(s, UdpState::Single);
        s.update(Dir::Reply);
        assert_eq!(s, UdpState::Multiple);
        s.update(Dir::Orig);
        assert_eq!(s, UdpState::Multiple);
        assert_eq!(s.timeout_attr(), TimeoutAttr::UdpMultiple);
    }
}
