//! Protocols conntrack has no specific tracker for (SCTP, GRE, ESP, ...):
//! tracked by addresses and protocol (ports for SCTP) with the same
//! [`Seen`] states as UDP and the `other_*` timeouts.

use super::Seen;
use crate::timeout::TimeoutAttr;

/// State of a connection of another protocol.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct OtherState(pub Seen);

impl OtherState {
    pub fn timeout_attr(self) -> TimeoutAttr {
        match self.0 {
            Seen::First => TimeoutAttr::OtherFirst,
            Seen::Single => TimeoutAttr::OtherSingle,
            Seen::Multiple => TimeoutAttr::OtherMultiple,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Dir;

    #[test]
    fn reply_makes_multiple() {
        let mut s = OtherState(Seen::First);
        s.0.update(Dir::Orig);
        assert_eq!(s.timeout_attr(), TimeoutAttr::OtherSingle);
        s.0.update(Dir::Reply);
        assert_eq!(s.timeout_attr(), TimeoutAttr::OtherMultiple);
    }
}
