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
//! An ALG's share of the translation ([`ct::alg::edit::AlgEdit`]: an FTP
//! announcement rewritten, TCP sequence numbers shifted) is applied after
//! the header rewrite by [`apply_alg`]: the frame grows into the buffer's
//! tailroom or shrinks in place; IP length, IPv4 header checksum and TCP
//! checksum are fixed (the TCP checksum is recomputed in full for a
//! rewritten payload, so `L4_CSUM_GOOD` stays true).
//!
//! Nothing here allocates. An error leaves the packet and key unchanged.

use ct::alg::edit::AlgEdit;
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

/// Apply an ALG edit to packet `p` (after [`apply`]). The flow key does
/// not change: addresses and ports stay as NAT set them.
pub fn apply_alg(p: &mut Packet, edit: &AlgEdit) -> NatOutcome {
    let Some(l3) = p.meta.l3_offset() else {
        return NatOutcome::Failed;
    };
    let len = p.len();
    if l3 > len {
        return NatOutcome::Failed;
    }
    let grow = edit.growth();
    // Grow into the tailroom, else (a buffer filled to its end) move the
    // frame into the headroom to open the room at its end.
    if grow > 0 && p.append(grow).is_err() && p.insert_gap(len, grow).is_err() {
        return NatOutcome::Failed;
    }
    let res = ct::alg::edit::apply(&mut p.data_mut()[l3..], len - l3, edit);
    match res {
        Ok(n) => {
            p.truncate(l3 + n);
            NatOutcome::Done
        }
        Err(_) => {
            p.truncate(len);
            NatOutcome::Failed
        }
    }
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

    fn port_edit(l3: &[u8], to: &str, adj: ct::seqadj::SeqAdj) -> AlgEdit {
        let payload_off = 40;
        let cmd = ct::alg::ftp::find(&l3[payload_off..], true).unwrap();
        AlgEdit {
            dir: ct::Dir::Orig,
            seqadj: adj,
            payload: ct::alg::edit::PayloadEdit::new(&cmd, payload_off, to.parse().unwrap(), 5001),
        }
    }

    fn port_segment(text: &[u8], seq: u32) -> Vec<u8> {
        use ct::build::Tcp;
        use ct::packet::tcp_flags::{ACK, PSH};
        Builder::v4(
            "192.0.2.100".parse().unwrap(),
            "203.0.113.7".parse().unwrap(),
        )
        .tcp(
            &Tcp::new(40000, 21)
                .seq(seq)
                .ack(77)
                .flags(ACK | PSH)
                .payload(text),
        )
    }

    #[test]
    fn alg_edit_grows_a_full_buffer_and_shrinks_in_place() {
        // Grows by 3: the frame from `from_bytes` has no tailroom, so it
        // moves into the headroom.
        let before = port_segment(b"PORT 10,0,0,5,19,137\r\n", 1000);
        let (mut p, k) = pkt(&before);
        assert_eq!(p.tailroom(), 0);
        let mut adj = ct::seqadj::SeqAdj::default();
        adj.record(ct::Dir::Orig, 1000, 3);
        let edit = port_edit(&before, "192.0.2.100", adj);
        assert_eq!(apply_alg(&mut p, &edit), NatOutcome::Done);
        let want = port_segment(b"PORT 192,0,2,100,19,137\r\n", 1000);
        assert_eq!(p.data(), &ethernet(&want)[..]);
        let (_, k2) = pkt(&want);
        assert_eq!(k, k2, "the key does not change");

        // Shrinks by 3, and a later segment's seq moves by the offset.
        let before = port_segment(b"PORT 192,0,2,100,19,137\r\n", 2000);
        let (mut p, _) = pkt(&before);
        let mut adj = ct::seqadj::SeqAdj::default();
        adj.record(ct::Dir::Orig, 1000, 7);
        let edit = port_edit(&before, "10.0.0.5", adj);
        assert_eq!(apply_alg(&mut p, &edit), NatOutcome::Done);
        let want = port_segment(b"PORT 10,0,0,5,19,137\r\n", 2007);
        assert_eq!(p.data(), &ethernet(&want)[..]);
    }

    #[test]
    fn alg_edit_that_does_not_fit_leaves_the_packet_alone() {
        let before = port_segment(b"PORT 10,0,0,5,19,137\r\n", 1000);
        let mut p = Packet::from_bytes(&ethernet(&before));
        let mut k = FlowKey::default();
        let (data, meta) = p.data_and_meta_mut();
        extract(data, meta, &mut k).unwrap();
        // No headroom and no tailroom left.
        let frame = p.data().to_vec();
        let mut tight = Packet::with_capacity(frame.len(), 0);
        tight.set_frame(&frame).unwrap();
        tight.meta = p.meta;
        let edit = port_edit(&before, "192.0.2.100", Default::default());
        assert_eq!(apply_alg(&mut tight, &edit), NatOutcome::Failed);
        assert_eq!(tight.data(), &frame[..]);
    }
}
