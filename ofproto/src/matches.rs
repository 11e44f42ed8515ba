//! A flow's match: a value and a mask over a [`FlowKey`], plus OVS's
//! prerequisite rules.

use crate::fields::{consts::*, Field, FlowKey, FlowMask, Prereq};
use ct::CtState;

/// A match: packet `k` matches when `k & mask == key` (the key is stored masked).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct Match {
    pub key: FlowKey,
    pub mask: FlowMask,
}

impl Match {
    /// The match-everything match.
    pub fn catchall() -> Match {
        Match::default()
    }

    /// Match `f` against `value` under `mask` (bits of `value` outside `mask`
    /// are dropped). Also sets the bits the field implies (dl_vlan implies a
    /// VLAN header). Later calls for the same field replace earlier ones.
    pub fn set(&mut self, f: Field, value: u128, mask: u128) {
        let ones = f.info().slot.ones();
        let mask = mask & ones;
        self.mask.set(f, mask);
        self.key.set(f, value & mask);
        if let Some((g, bits)) = f.info().implies {
            let m = self.mask.get(g) | bits;
            let v = self.key.get(g) | bits;
            self.mask.set(g, m);
            self.key.set(g, v);
        }
    }

    /// Match `f` exactly.
    pub fn set_exact(&mut self, f: Field, value: u128) {
        self.set(f, value, u128::MAX);
    }

    /// Value and mask of `f` in this match.
    pub fn get(&self, f: Field) -> (u128, u128) {
        (self.key.get(f), self.mask.get(f))
    }

    /// True when `f` is matched on all its bits with value `v`.
    pub fn is_exact(&self, f: Field, v: u128) -> bool {
        let (val, m) = self.get(f);
        m == f.info().slot.ones() && val == v
    }

    /// Does packet metadata `k` satisfy this match?
    #[inline]
    pub fn matches(&self, k: &FlowKey) -> bool {
        (0..crate::fields::WORDS).all(|i| k.w[i] & self.mask.w[i] == self.key.w[i])
    }

    /// True when every packet this match accepts is also accepted by `looser`
    /// (OpenFlow's non-strict modify/delete test).
    pub fn is_within(&self, looser: &Match) -> bool {
        looser.mask.is_subset_of(&self.mask)
            && (0..crate::fields::WORDS)
                .all(|i| self.key.w[i] & looser.mask.w[i] == looser.key.w[i])
    }

    fn dl_type(&self) -> Option<u16> {
        let (v, m) = self.get(Field::DL_TYPE);
        (m == 0xffff).then_some(v as u16)
    }

    fn nw_proto(&self) -> Option<u8> {
        let (v, m) = self.get(Field::NW_PROTO);
        (m == 0xff).then_some(v as u8)
    }

    fn is_ipv4(&self) -> bool {
        self.dl_type() == Some(ETH_IPV4)
    }
    fn is_ipv6(&self) -> bool {
        self.dl_type() == Some(ETH_IPV6)
    }
    fn is_ip(&self) -> bool {
        self.is_ipv4() || self.is_ipv6()
    }
    fn proto_is(&self, p: u8) -> bool {
        self.is_ip() && self.nw_proto() == Some(p)
    }
    fn not_later_fragment(&self) -> bool {
        let (v, m) = self.get(Field::NW_FRAG);
        !(m as u8 & FRAG_LATER != 0 && v as u8 & FRAG_LATER != 0)
    }

    /// A `ct_state` match that implies conntrack produced valid state
    /// (`+new`, `+est`, `+rel`, or `+trk-inv`).
    fn ct_valid(&self) -> bool {
        let (v, m) = self.get(Field::CT_STATE);
        let set = CtState::from_bits_truncate((v & m) as u32);
        let clear = CtState::from_bits_truncate((!v & m) as u32);
        set.intersects(CtState::NEW | CtState::EST | CtState::REL)
            || (set.contains(CtState::TRK) && clear.contains(CtState::INV))
    }

    /// Is prerequisite `p` satisfied by this match?
    pub fn satisfies(&self, p: Prereq) -> bool {
        match p {
            Prereq::None => true,
            Prereq::Vlan => {
                let (v, m) = self.get(Field::VLAN_TCI);
                v as u16 & VLAN_CFI != 0 && m as u16 & VLAN_CFI != 0
            }
            Prereq::Arp => matches!(self.dl_type(), Some(ETH_ARP) | Some(ETH_RARP)),
            Prereq::Ipv4 => self.is_ipv4(),
            Prereq::Ipv6 => self.is_ipv6(),
            Prereq::Ip => self.is_ip(),
            Prereq::Tcp => self.proto_is(PROTO_TCP) && self.not_later_fragment(),
            Prereq::Udp => self.proto_is(PROTO_UDP) && self.not_later_fragment(),
            Prereq::Sctp => self.proto_is(PROTO_SCTP) && self.not_later_fragment(),
            Prereq::L4 => {
                (self.proto_is(PROTO_TCP) || self.proto_is(PROTO_UDP) || self.proto_is(PROTO_SCTP))
                    && self.not_later_fragment()
            }
            Prereq::Icmpv4 => self.is_ipv4() && self.nw_proto() == Some(PROTO_ICMP),
            Prereq::Icmpv6 => self.is_ipv6() && self.nw_proto() == Some(PROTO_ICMPV6),
            Prereq::CtIpv4 => self.is_ipv4() && self.ct_valid(),
            Prereq::CtIpv6 => self.is_ipv6() && self.ct_valid(),
            Prereq::CtIp => self.is_ip() && self.ct_valid(),
            Prereq::CtL4 => {
                self.is_ip() && self.ct_valid() && self.get(Field::CT_NW_PROTO).1 == 0xff
            }
        }
    }

    /// Check every matched field's prerequisite; the error names the first
    /// field that lacks one.
    pub fn check_prereqs(&self) -> Result<(), (Field, Prereq)> {
        for f in Field::all() {
            let info = f.info();
            // Views are checked through their own entry only when they are
            // what the mask says; a field is "used" if any of its bits are.
            if self.mask.get(f) == 0 {
                continue;
            }
            if !self.satisfies(info.prereq) {
                return Err((f, info.prereq));
            }
        }
        Ok(())
    }
}

/// Describe a prerequisite the way an error message needs it.
pub fn prereq_text(p: Prereq) -> &'static str {
    match p {
        Prereq::None => "nothing",
        Prereq::Vlan => "a VLAN header (vlan_tci=0x1000/0x1000)",
        Prereq::Arp => "arp (dl_type=0x0806 or 0x8035)",
        Prereq::Ipv4 => "ip (dl_type=0x0800)",
        Prereq::Ipv6 => "ipv6 (dl_type=0x86dd)",
        Prereq::Ip => "ip or ipv6",
        Prereq::Tcp => "tcp or tcp6 (and not nw_frag=later)",
        Prereq::Udp => "udp or udp6 (and not nw_frag=later)",
        Prereq::Sctp => "sctp or sctp6 (and not nw_frag=later)",
        Prereq::L4 => "tcp, udp or sctp (or their v6 forms, and not nw_frag=later)",
        Prereq::Icmpv4 => "icmp",
        Prereq::Icmpv6 => "icmp6",
        Prereq::CtIpv4 => "ip and a valid ct_state (+new, +est, +rel or +trk-inv)",
        Prereq::CtIpv6 => "ipv6 and a valid ct_state (+new, +est, +rel or +trk-inv)",
        Prereq::CtIp => "ip or ipv6 and a valid ct_state (+new, +est, +rel or +trk-inv)",
        Prereq::CtL4 => {
            "ip or ipv6, a valid ct_state (+new, +est, +rel or +trk-inv) and ct_nw_proto \
             (OVS would silently ignore the field without it)"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_masks_value_and_implies_cfi() {
        let mut m = Match::default();
        m.set(Field::DL_VLAN, 10, u128::MAX);
        assert_eq!(m.get(Field::VLAN_TCI), (0x1000 | 10, 0x1fff));
        m.set(Field::NW_SRC, 0x0a00_00ff, 0xffff_ff00);
        assert_eq!(m.get(Field::NW_SRC), (0x0a00_0000, 0xffff_ff00));
    }

    #[test]
    fn matches_and_within() {
        let mut wide = Match::default();
        wide.set_exact(Field::DL_TYPE, 0x0800);
        let mut narrow = wide;
        narrow.set(Field::NW_SRC, 0x0a000000, 0xff000000);
        assert!(narrow.is_within(&wide));
        assert!(!wide.is_within(&narrow));
        let mut k = FlowKey::default();
        k.set(Field::DL_TYPE, 0x0800);
        k.set(Field::NW_SRC, 0x0a010203);
        assert!(narrow.matches(&k));
        k.set(Field::NW_SRC, 0x0b010203);
        assert!(!narrow.matches(&k));
        assert!(wide.matches(&k));
    }

    #[test]
    fn prerequisites() {
        let mut m = Match::default();
        m.set_exact(Field::TP_DST, 80);
        assert_eq!(m.check_prereqs(), Err((Field::TP_DST, Prereq::L4)));
        m.set_exact(Field::DL_TYPE, 0x0800);
        m.set_exact(Field::NW_PROTO, 6);
        assert_eq!(m.check_prereqs(), Ok(()));
        m.set(Field::NW_FRAG, 3, 3); // later fragments carry no L4 header
        assert!(m.check_prereqs().is_err());

        let mut c = Match::default();
        c.set_exact(Field::DL_TYPE, 0x0800);
        c.set_exact(Field::CT_NW_SRC, 1);
        assert!(c.check_prereqs().is_err());
        c.set(Field::CT_STATE, 0x20, 0x20);
        assert!(
            c.check_prereqs().is_err(),
            "+trk alone is not a valid state"
        );
        c.set(Field::CT_STATE, 0x20, 0x30);
        assert!(c.check_prereqs().is_ok(), "+trk-inv is");
    }
}
