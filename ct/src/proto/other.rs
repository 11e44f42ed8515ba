//! Protocols conntrack has no specific tracker for (SCTP, GRE, ESP, ...):
//! tracked by addresses and protocol (ports for SCTP) with the same
//! first / single / multiple states as UDP and the `other_*` timeouts.

use crate::key::Dir;
use crate::timeout::TimeoutAttr;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OtherState {
    First,
    Single,
    Multiple,
}

impl OtherState {
    pub fn update(&mut self, dir: Dir) {
        *self = match (dir, *self) {
            (Dir::Reply, _) | (_, OtherState::Multiple) => OtherState::Multiple,
            (Dir::Orig, _) => OtherState::Single,
        };
    }
    pub fn timeout_attr(self) -> TimeoutAttr {
        match self {
            OtherState::First => TimeoutAttr::OtherFirst,
            OtherState::Single => TimeoutAttr::OtherSingle,
            OtherState::Multiple => TimeoutAttr::OtherMultiple,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_makes_multiple() {
        let mut s = OtherState::First;
        s.update(Dir::Orig);
        assert_eq!(s.timeout_attr(), TimeoutAttr::OtherSingle);
        s.update(Dir::Reply);
        assert_eq!(s.timeout_attr(), TimeoutAttr::OtherMultiple);
    }
}
