//! `ct_state`: the bits a `ct` action reports for a packet.
//!
//! Values follow Open vSwitch's `ct_state` field (`man ovs-fields`):
//! new 0x01, est 0x02, rel 0x04, rpl 0x08, inv 0x10, trk 0x20, snat 0x40, dnat 0x80.
//!
//! ferrovs adds one bit that OVS lacks: **untracked, 0x100**. A packet that a
//! `notrack` action marked is not looked up or recorded; when it reaches a `ct`
//! action it comes back as `+trk+untracked` (0x120), so a pipeline that sends
//! `ct_state=-trk` traffic to conntrack does not loop, and `+new`/`+est` rules do
//! not match it. The kernel's equivalent is nftables' `ct state untracked`.

use bitflags::bitflags;

bitflags! {
    /// Connection-tracking state bits of one packet (OVS `ct_state`).
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
    pub struct CtState: u32 {
        /// Start of a new connection (not yet confirmed by a reply).
        const NEW = 0x01;
        /// Part of a connection seen in both directions.
        const EST = 0x02;
        /// Related to an existing connection (ICMP error, expectation).
        const REL = 0x04;
        /// Packet travels in the reply direction.
        const RPL = 0x08;
        /// Invalid: conntrack could not make sense of it.
        const INV = 0x10;
        /// Conntrack has processed the packet.
        const TRK = 0x20;
        /// Source NAT was applied.
        const SNAT = 0x40;
        /// Destination NAT was applied.
        const DNAT = 0x80;
        /// ferrovs extension: the packet was marked by `notrack`.
        const UNTRACKED = 0x100;
    }
}

/// Names of the bits in bit order, as `ct-replay` and flow syntax print them.
pub const STATE_NAMES: [(CtState, &str); 9] = [
    (CtState::NEW, "new"),
    (CtState::EST, "est"),
    (CtState::REL, "rel"),
    (CtState::RPL, "rpl"),
    (CtState::INV, "inv"),
    (CtState::TRK, "trk"),
    (CtState::SNAT, "snat"),
    (CtState::DNAT, "dnat"),
    (CtState::UNTRACKED, "untracked"),
];

impl CtState {
    /// `new|est|trk` style: set names joined by `|` in bit order, or `0`.
    pub fn pipe_names(self) -> String {
        let names: Vec<&str> = STATE_NAMES
            .iter()
            .filter(|(bit, _)| self.contains(*bit))
            .map(|(_, name)| *name)
            .collect();
        if names.is_empty() {
            "0".to_string()
        } else {
            names.join("|")
        }
    }

    /// Look up one state name (`new`, `est`, ..., `untracked`).
    pub fn by_name(name: &str) -> Option<CtState> {
        STATE_NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(bit, _)| *bit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_match_ovs_values() {
        assert_eq!(CtState::NEW.bits(), 0x01);
        assert_eq!(CtState::EST.bits(), 0x02);
        assert_eq!(CtState::REL.bits(), 0x04);
        assert_eq!(CtState::RPL.bits(), 0x08);
        assert_eq!(CtState::INV.bits(), 0x10);
        assert_eq!(CtState::TRK.bits(), 0x20);
        assert_eq!(CtState::SNAT.bits(), 0x40);
        assert_eq!(CtState::DNAT.bits(), 0x80);
        assert_eq!(CtState::UNTRACKED.bits(), 0x100);
    }

    #[test]
    fn pipe_names_in_bit_order() {
        assert_eq!(CtState::empty().pipe_names(), "0");
        assert_eq!((CtState::TRK | CtState::NEW).pipe_names(), "new|trk");
        assert_eq!(
            (CtState::TRK | CtState::EST | CtState::RPL).pipe_names(),
            "est|rpl|trk"
        );
        assert_eq!(CtState::by_name("inv"), Some(CtState::INV));
        assert_eq!(CtState::by_name("bogus"), None);
    }
}
