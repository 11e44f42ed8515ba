//! NAT: conntrack's verdict ([`ct::nat::NatEdit`]) applied to a packet.
//!
//! Conntrack decides the translation; this module writes it: the header
//! bytes (with [`ct::nat::rewrite`], which updates every covering
//! checksum incrementally) and the datapath [`FlowKey`] (`nw_src`/`nw_dst`
//! or `ipv6_src`/`ipv6_dst`, and TCP/UDP `tp_src`/`tp_dst`), so that a
//! recirculated lookup and later actions see the translated headers. The
//! ICMP query id is not part of the key (ICMP's `tp_src`/`tp_dst` are type
//! and code), so an echo translation changes only addresses there.
//!
//! The offload flags stay honest: an incremental update keeps a good
//! checksum good (and a bad one bad), so `IP_CSUM_GOOD`/`L4_CSUM_GOOD`
//! remain true statements about the rewritten packet.
//!
//! Nothing here allocates. An error leaves the packet and key unchanged.

use ct::nat::rewrite::{rewrite_packet, rewrite_related};
use ct::nat::NatEdit;

use crate::flow::extract::ipproto;
use crate::flow::key::FlowKey;
use crate::packet::Packet;

/// What happened to a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatOutcome {
    /// Headers rewritten (or nothing to change).
    Done,
    /// No NAT binding was free: the caller drops the packet.
    Drop,
    /// The headers could not be rewritten (truncated or unexpected
    /// packet); nothing was changed.
    Failed,
}

/// Apply `edit` to packet `p` and its key.
pub fn apply(p: &mut Packet, key: &mut FlowKey, edit: &NatEdit) -> NatOutcome {
    let Some(l3) = p.meta.l3_offset() else {
        return NatOutcome::Failed;
    };
    let l4 = p.meta.l4_offset().map(|o| o.saturating_sub(l3));
    let data = p.data_mut();
    let Some(hdr) = data.get_mut(l3..) else {
        return NatOutcome::Failed;
    };
    let res = match edit {
        NatEdit::Packet(to) => rewrite_packet(hdr, to),
        NatEdit::Related(inner) => rewrite_related(hdr, inner),
        NatEdit::Drop => return NatOutcome::Drop,
    };
    if res.is_err() {
        return NatOutcome::Failed;
    }
    refresh_key(hdr, l4, key);
    NatOutcome::Done
}

/// Copy the (possibly translated) addresses and ports from the headers at
/// the start of `hdr` into the key; `l4` is the L4 offset within `hdr`.
fn refresh_key(hdr: &[u8], l4: Option<usize>, key: &mut FlowKey) {
    match hdr.first().map(|b| b >> 4) {
        Some(4) if hdr.len() >= 20 => {
            key.set_nw_src(u32::from_be_bytes([hdr[12], hdr[13], hdr[14], hdr[15]]));
            key.set_nw_dst(u32::from_be_bytes([hdr[16], hdr[17], hdr[18], hdr[19]]));
        }
        Some(6) if hdr.len() >= 40 => {
            let a = |o: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&hdr[o..o + 16]);
                u128::from_be_bytes(b)
            };
            key.set_ipv6_src(a(8));
            key.set_ipv6_dst(a(24));
        }
        _ => return,
    }
    if matches!(key.nw_proto(), ipproto::TCP | ipproto::UDP) {
        if let Some(ports) = l4.and_then(|o| hdr.get(o..o + 4)) {
            key.set_tp_src(u16::from_be_bytes([ports[0], ports[1]]));
            key.set_tp_dst(u16::from_be_bytes([ports[2], ports[3]]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::extract::extract;
    use crate::packet::PortNo;
    use ct::build::{ethernet, Builder};
    use ct::{ConnKey, Zone};

    fn pkt(l3: &[u8]) -> (Packet, FlowKey) {
        let mut p = Packet::from_bytes(&ethernet(l3));
        p.meta.in_port = PortNo(1);
        let mut k = FlowKey::default();
        let (data, meta) = p.data_and_meta_mut();
        extract(data, meta, &mut k).unwrap();
        (p, k)
    }

    #[test]
    fn packet_and_key_follow_the_translation() {
        let b = Builder::v4("192.168.1.5".parse().unwrap(), "8.8.8.8".parse().unwrap());
        let (mut p, mut k) = pkt(&b.udp(40000, 53, b"q"));
        let to = ConnKey::v4(
            Zone(0),
            "10.0.0.100".parse().unwrap(),
            "8.8.8.8".parse().unwrap(),
            17,
            5000,
            53,
        );
        assert_eq!(
            apply(&mut p, &mut k, &NatEdit::Packet(to)),
            NatOutcome::Done
        );
        let want = Builder::v4("10.0.0.100".parse().unwrap(), "8.8.8.8".parse().unwrap())
            .udp(5000, 53, b"q");
        assert_eq!(p.data(), &ethernet(&want)[..]);
        // The key is what extraction gives for the rewritten frame.
        let (_, k2) = pkt(&want);
        assert_eq!(k, k2);
    }

    #[test]
    fn ipv6_icmp_echo_updates_addresses_only() {
        let b = Builder::v6("fd00::5".parse().unwrap(), "2001:db8::9".parse().unwrap());
        let (mut p, mut k) = pkt(&b.echo_request(7, 1, b"x"));
        let to = ConnKey::v6(
            Zone(0),
            "2001:db8::1".parse().unwrap(),
            "2001:db8::9".parse().unwrap(),
            58,
            100,
            128 << 8,
        );
        assert_eq!(
            apply(&mut p, &mut k, &NatEdit::Packet(to)),
            NatOutcome::Done
        );
        let want = Builder::v6(
            "2001:db8::1".parse().unwrap(),
            "2001:db8::9".parse().unwrap(),
        )
        .echo_request(100, 1, b"x");
        let (_, k2) = pkt(&want);
        assert_eq!(k, k2);
        assert_eq!(p.data(), &ethernet(&want)[..]);
    }

    #[test]
    fn drop_and_failure_leave_the_packet_alone() {
        let b = Builder::v4("192.168.1.5".parse().unwrap(), "8.8.8.8".parse().unwrap());
        let (mut p, mut k) = pkt(&b.udp(1, 2, b""));
        let before = (p.data().to_vec(), k);
        assert_eq!(apply(&mut p, &mut k, &NatEdit::Drop), NatOutcome::Drop);
        let v6 = ConnKey::v6(
            Zone(0),
            "::1".parse().unwrap(),
            "::2".parse().unwrap(),
            17,
            1,
            2,
        );
        assert_eq!(
            apply(&mut p, &mut k, &NatEdit::Packet(v6)),
            NatOutcome::Failed
        );
        assert_eq!((p.data().to_vec(), k), before);
    }
}
