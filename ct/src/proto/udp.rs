//! UDP: no handshake, so the state only records which directions were seen
//! ([`Seen`]); timeouts are the `udp_*` class.

use super::Seen;
use crate::timeout::TimeoutAttr;

/// UDP connection state.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct UdpState(pub Seen);

impl UdpState {
    pub fn timeout_attr(self) -> TimeoutAttr {
        match self.0 {
            Seen::First => TimeoutAttr::UdpFirst,
            Seen::Single => TimeoutAttr::UdpSingle,
            Seen::Multiple => TimeoutAttr::UdpMultiple,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Dir;

    #[test]
    fn first_single_multiple() {
        let mut s = UdpState(Seen::First);
        assert_eq!(s.timeout_attr(), TimeoutAttr::UdpFirst);
        s.0.update(Dir::Orig);
        assert_eq!(s.0, Seen::Single);
        s.0.update(Dir::Reply);
        assert_eq!(s.0, Seen::Multiple);
        s.0.update(Dir::Orig);
        assert_eq!(s.timeout_attr(), TimeoutAttr::UdpMultiple);
    }
}
