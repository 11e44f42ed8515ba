//! VLAN tags: push and pop of the outer 802.1Q/802.1ad tag, and the
//! `vlan_tci` rewrite behind [`super::rewrite::set_field`].
//!
//! The datapath key holds up to [`MAX_VLANS`] tags as they are on the wire,
//! `(tpid, tci)`, outermost first. ofproto's `vlan_tci` is the outer TCI with
//! bit 0x1000 ([`VLAN_PRESENT`]) meaning "a tag is present" (OVS semantics);
//! on the wire that bit is the DEI (formerly CFI) bit. So:
//! - a tag pushed here (by [`push_vlan`] or by a `vlan_tci` write on an
//!   untagged packet) has DEI 0;
//! - a `vlan_tci` write on a tagged packet changes the VID and PCP bits the
//!   mask selects and keeps the wire DEI bit as it was (the mask's 0x1000
//!   bit is about presence, not DEI).
//!
//! After a push or pop the key's tags are read back from the wire (at most
//! two, as extraction reads them), and the packet's L3/L4 offsets move by
//! the tag length. A third tag is pushed on the wire but the key keeps the
//! outer two.
//!
//! A frame with no Ethernet header (under 14 bytes) is
//! [`RewriteError::HeaderAbsent`]; a push without 4 bytes of headroom is
//! [`RewriteError::NoRoom`]. Either way nothing changes.

use super::rewrite::{reparse, RewriteError};
use crate::flow::extract::{ethertype, Malformed};
use crate::flow::key::{FlowKey, MAX_VLANS};
use crate::packet::meta::NO_OFFSET;
use crate::packet::{Packet, PacketMeta};

/// ofproto's `vlan_tci` bit for "a VLAN tag is present" (the DEI bit's
/// position on the wire).
pub const VLAN_PRESENT: u16 = 0x1000;

/// Where the tags start: after the two MAC addresses.
const TAG_OFS: usize = 12;
/// One tag: TPID and TCI.
const TAG_LEN: usize = 4;

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// True for the TPIDs extraction recognises.
#[inline]
fn is_tpid(t: u16) -> bool {
    t == ethertype::VLAN || t == ethertype::QINQ
}

/// The outer tag `(tpid, tci)`, if the frame has a whole one (with the
/// ethertype after it, as extraction requires).
fn outer_tag(frame: &[u8]) -> Option<(u16, u16)> {
    let t = frame.get(TAG_OFS..TAG_OFS + TAG_LEN + 2)?;
    let tpid = be16(t, 0);
    is_tpid(tpid).then(|| (tpid, be16(t, 2)))
}

/// Set the key's tags to the frame's outer tags, as extraction reads them.
fn sync_tags(frame: &[u8], key: &mut FlowKey) {
    for i in 0..MAX_VLANS {
        key.set_vlan(i, 0, 0);
    }
    key.set_n_vlans(0);
    for i in 0..MAX_VLANS {
        match outer_tag(frame.get(TAG_LEN * i..).unwrap_or(&[])) {
            Some((tpid, tci)) => key.set_vlan(i, tpid, tci),
            None => break,
        }
    }
}

/// Move the parsed L3/L4 offsets by `delta` bytes (unset ones stay unset).
fn shift_offsets(meta: &mut PacketMeta, delta: isize) {
    for ofs in [&mut meta.l3_ofs, &mut meta.l4_ofs] {
        if *ofs != NO_OFFSET {
            *ofs = ofs
                .checked_add_signed(delta as i16)
                .filter(|o| *o != NO_OFFSET)
                .unwrap_or(NO_OFFSET);
        }
    }
}

/// Push an outer 802.1Q/802.1ad tag with `tpid` (OVS semantics: the new tag
/// copies VID/PCP of the existing outer tag if any, else 0; its DEI bit is
/// 0). Updates the key (tags shift: the old outer becomes inner; a third tag
/// is not representable in the key, which keeps the outer two while the
/// wire gets all three) and `meta.l3_ofs`/`l4_ofs` (+4).
///
/// ofproto only emits the TPIDs 0x8100 and 0x88a8, which extraction
/// recognises; another TPID is pushed as given.
pub fn push_vlan(pkt: &mut Packet, key: &mut FlowKey, tpid: u16) -> Result<(), RewriteError> {
    if pkt.len() < TAG_OFS + 2 {
        return Err(RewriteError::HeaderAbsent);
    }
    let tci = outer_tag(pkt.data()).map_or(0, |(_, tci)| tci & !VLAN_PRESENT);
    let gap = pkt
        .insert_gap(TAG_OFS, TAG_LEN)
        .map_err(|_| RewriteError::NoRoom)?;
    gap[..2].copy_from_slice(&tpid.to_be_bytes());
    gap[2..].copy_from_slice(&tci.to_be_bytes());
    shift_offsets(&mut pkt.meta, TAG_LEN as isize);
    sync_tags(pkt.data(), key);
    Ok(())
}

/// Pop the outer tag (no-op `Ok` if none). Updates the key and the offsets
/// (-4). A tag cut short by the end of the frame is
/// [`RewriteError::HeaderAbsent`].
pub fn pop_vlan(pkt: &mut Packet, key: &mut FlowKey) -> Result<(), RewriteError> {
    let frame = pkt.data();
    if frame.len() < TAG_OFS + 2 || !is_tpid(be16(frame, TAG_OFS)) {
        return Ok(());
    }
    if outer_tag(frame).is_none() || !pkt.remove_range(TAG_OFS, TAG_LEN) {
        return Err(RewriteError::HeaderAbsent);
    }
    shift_offsets(&mut pkt.meta, -(TAG_LEN as isize));
    if key.malformed_code() == Malformed::VlanTooDeep as u8 {
        // Extraction stopped at the third tag; now the headers behind the
        // tags may be within reach.
        reparse(pkt, key);
    } else {
        sync_tags(pkt.data(), key);
    }
    Ok(())
}

/// Write ofproto's `vlan_tci` (`v` in the bits `m`): clearing
/// [`VLAN_PRESENT`] pops the outer tag, setting it on an untagged packet
/// pushes an 0x8100 tag, otherwise the outer TCI's VID/PCP bits under the
/// mask change (the wire DEI bit is kept).
pub(crate) fn set_vlan_tci(
    pkt: &mut Packet,
    key: &mut FlowKey,
    v: u16,
    m: u16,
) -> Result<(), RewriteError> {
    if pkt.len() < TAG_OFS + 2 {
        return Err(RewriteError::HeaderAbsent);
    }
    let outer = outer_tag(pkt.data());
    let cur = outer.map_or(0, |(_, tci)| tci | VLAN_PRESENT);
    let new = (cur & !m) | (v & m);
    let wire_tci = match (outer, new & VLAN_PRESENT != 0) {
        (None, false) => return Ok(()),
        (Some(_), false) => return pop_vlan(pkt, key),
        (None, true) => {
            push_vlan(pkt, key, ethertype::VLAN)?;
            new & !VLAN_PRESENT
        }
        (Some((_, tci)), true) => (tci & VLAN_PRESENT) | (new & !VLAN_PRESENT),
    };
    let frame = pkt.data_mut();
    frame[TAG_OFS + 2..TAG_OFS + 4].copy_from_slice(&wire_tci.to_be_bytes());
    let tpid = be16(frame, TAG_OFS);
    key.set_vlan(0, tpid, wire_tci);
    Ok(())
}

#[cfg(test)]
mod tests {
    use ofproto::Field;

    use super::*;
    use crate::action::rewrite::set_field;
    use crate::action::rewrite::tests::{
        assert_consistent, assert_key_in_step, parse, v4_frame, v6_frame, L4,
    };
    use crate::flow::extract::extract;

    /// `frame` (untagged) with `tags` inserted after the MAC addresses.
    fn tagged(frame: &[u8], tags: &[(u16, u16)]) -> Vec<u8> {
        let mut f = frame[..TAG_OFS].to_vec();
        for (tpid, tci) in tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&frame[TAG_OFS..]);
        f
    }

    /// The key and offsets extraction gives for `frame` on port 1.
    fn key_of(frame: &[u8]) -> (FlowKey, u16, u16) {
        let (p, k) = parse(frame);
        (k, p.meta.l3_ofs, p.meta.l4_ofs)
    }

    /// After an operation the packet must look exactly like `frame` parsed.
    fn assert_is(pkt: &Packet, key: &FlowKey, frame: &[u8]) {
        assert_eq!(pkt.data(), frame);
        assert_eq!((*key, pkt.meta.l3_ofs, pkt.meta.l4_ofs), key_of(frame));
        assert_consistent(pkt, key);
    }

    #[test]
    fn push_on_untagged() {
        for plain in [v4_frame(L4::Tcp), v6_frame(L4::Udp)] {
            let (mut p, mut k) = parse(&plain);
            push_vlan(&mut p, &mut k, 0x8100).unwrap();
            assert_is(&p, &k, &tagged(&plain, &[(0x8100, 0)]));
            assert_eq!(k.vlan(0), Some((0x8100, 0)));
            assert_eq!(p.meta.l3_offset(), Some(18));
        }
    }

    #[test]
    fn push_on_tagged_copies_vid_and_pcp() {
        let plain = v4_frame(L4::Tcp);
        // PCP 1, DEI set, VID 100.
        let one = tagged(&plain, &[(0x8100, 0x3064)]);
        let (mut p, mut k) = parse(&one);
        push_vlan(&mut p, &mut k, 0x88a8).unwrap();
        assert_is(
            &p,
            &k,
            &tagged(&plain, &[(0x88a8, 0x2064), (0x8100, 0x3064)]),
        );
        assert_eq!(k.n_vlans(), 2);
        assert_eq!((p.meta.l3_ofs, p.meta.l4_ofs), (22, 42));
    }

    #[test]
    fn a_third_tag_is_on_the_wire_but_not_in_the_key() {
        let plain = v4_frame(L4::Udp);
        let two = tagged(&plain, &[(0x88a8, 0x0005), (0x8100, 0x0006)]);
        let (mut p, mut k) = parse(&two);
        let before = k;
        push_vlan(&mut p, &mut k, 0x88a8).unwrap();
        let three = tagged(&plain, &[(0x88a8, 5), (0x88a8, 5), (0x8100, 6)]);
        assert_eq!(p.data(), &three[..]);
        assert_eq!(k.n_vlans(), 2);
        assert_eq!(
            (k.vlan(0), k.vlan(1)),
            (Some((0x88a8, 5)), Some((0x88a8, 5)))
        );
        // Everything behind the tags is still known, at the new offsets.
        assert_eq!((k.nw_src(), k.tp_dst()), (before.nw_src(), before.tp_dst()));
        assert_eq!((p.meta.l3_ofs, p.meta.l4_ofs), (26, 46));
        // (Extraction stops at the third tag.)
        let mut m = p.meta;
        let mut fresh = FlowKey::ZERO;
        assert_eq!(
            extract(p.data(), &mut m, &mut fresh),
            Err(Malformed::VlanTooDeep)
        );
        // Popping it again restores the two-tag packet exactly.
        pop_vlan(&mut p, &mut k).unwrap();
        assert_is(&p, &k, &two);
        assert_eq!(k, before);
    }

    #[test]
    fn pop_outer_tag() {
        let plain = v6_frame(L4::Tcp);
        let two = tagged(&plain, &[(0x88a8, 0x0007), (0x8100, 0xe00a)]);
        let (mut p, mut k) = parse(&two);
        pop_vlan(&mut p, &mut k).unwrap();
        assert_is(&p, &k, &tagged(&plain, &[(0x8100, 0xe00a)]));
        assert_eq!((p.meta.l3_ofs, p.meta.l4_ofs), (18, 58));
        pop_vlan(&mut p, &mut k).unwrap();
        assert_is(&p, &k, &plain);
        assert_eq!(k.n_vlans(), 0);
    }

    #[test]
    fn pop_on_untagged_is_a_no_op() {
        for frame in [v4_frame(L4::Icmp), vec![0u8; 10], vec![]] {
            let (mut p, mut k) = parse(&frame);
            let (meta, key) = (p.meta, k);
            pop_vlan(&mut p, &mut k).unwrap();
            assert_eq!(p.data(), &frame[..]);
            assert_eq!((p.meta, k), (meta, key));
        }
    }

    #[test]
    fn pop_below_a_too_deep_stack_parses_what_is_behind() {
        let plain = v4_frame(L4::Tcp);
        let three = tagged(&plain, &[(0x88a8, 1), (0x8100, 2), (0x8100, 3)]);
        let (mut p, mut k) = parse(&three);
        assert_eq!(k.malformed_code(), Malformed::VlanTooDeep as u8);
        k.set_metadata(42); // pipeline state in the key survives
        pop_vlan(&mut p, &mut k).unwrap();
        assert_eq!(k.malformed_code(), 0);
        assert_eq!(k.tp_dst(), 80);
        assert_eq!(k.metadata(), 42);
        k.set_metadata(0);
        assert_is(&p, &k, &tagged(&plain, &[(0x8100, 2), (0x8100, 3)]));
    }

    #[test]
    fn refusals_change_nothing() {
        // A tag cut short.
        let cut = tagged(&v4_frame(L4::Tcp), &[(0x8100, 5)])[..16].to_vec();
        let (mut p, mut k) = parse(&cut);
        let (meta, key) = (p.meta, k);
        assert_eq!(pop_vlan(&mut p, &mut k), Err(RewriteError::HeaderAbsent));
        assert_eq!((p.data(), p.meta, k), (&cut[..], meta, key));
        // No Ethernet header.
        let (mut p, mut k) = parse(&[0u8; 13]);
        let key = k;
        assert_eq!(
            push_vlan(&mut p, &mut k, 0x8100),
            Err(RewriteError::HeaderAbsent)
        );
        assert_eq!((p.data(), k), (&[0u8; 13][..], key));
        // No headroom.
        let frame = v4_frame(L4::Udp);
        let mut p = Packet::with_capacity(frame.len(), 0);
        p.set_frame(&frame).unwrap();
        let mut k = FlowKey::ZERO;
        let (data, meta) = p.data_and_meta_mut();
        extract(data, meta, &mut k).unwrap();
        let (meta, key) = (p.meta, k);
        for r in [
            push_vlan(&mut p, &mut k, 0x8100),
            set_field(&mut p, &mut k, Field::DL_VLAN, 3, 0xfff),
        ] {
            assert_eq!(r, Err(RewriteError::NoRoom));
            assert_eq!((p.data(), p.meta, k), (&frame[..], meta, key));
        }
    }

    /// `set_field` of a VLAN field on `frame`; returns the packet and key.
    fn set(frame: &[u8], field: Field, v: u128, m: u128) -> (Packet, FlowKey) {
        let (mut p, mut k) = parse(frame);
        set_field(&mut p, &mut k, field, v, m).unwrap();
        assert_consistent(&p, &k);
        (p, k)
    }

    #[test]
    fn vlan_tci_pushes_writes_and_pops() {
        let plain = v4_frame(L4::Tcp);
        let one = tagged(&plain, &[(0x8100, 0xb064)]); // PCP 5, DEI, VID 100

        // Present bit on an untagged packet: push an 0x8100 tag.
        let (p, _) = set(&plain, Field::VLAN_TCI, 0x1000 | 0x4005, 0xffff);
        assert_is(&p, &parse(p.data()).1, &tagged(&plain, &[(0x8100, 0x4005)]));
        // dl_vlan and dl_vlan_pcp imply the present bit, so they push too.
        let (p, k) = set(&plain, Field::DL_VLAN, 10, 0xfff);
        assert_eq!(p.data(), &tagged(&plain, &[(0x8100, 10)])[..]);
        assert_eq!(k.vlan(0), Some((0x8100, 10)));
        let (p, _) = set(&plain, Field::DL_VLAN_PCP, 6, 7);
        assert_eq!(p.data(), &tagged(&plain, &[(0x8100, 0xc000)])[..]);

        // On a tagged packet the masked bits change, DEI stays on the wire.
        let (p, k) = set(&one, Field::DL_VLAN, 7, 0xfff);
        assert_eq!(p.data(), &tagged(&plain, &[(0x8100, 0xb007)])[..]);
        assert_eq!(k.vlan(0), Some((0x8100, 0xb007)));
        let (p, _) = set(&one, Field::DL_VLAN_PCP, 2, 7);
        assert_eq!(p.data(), &tagged(&plain, &[(0x8100, 0x5064)])[..]);
        let (p, _) = set(&one, Field::VLAN_TCI, 0x1000 | 0x0123, 0xffff);
        assert_eq!(p.data(), &tagged(&plain, &[(0x8100, 0x1123)])[..]);
        let (p, _) = set(&one, Field::VLAN_TCI, 0x00ff, 0x00ff);
        assert_eq!(p.data(), &tagged(&plain, &[(0x8100, 0xb0ff)])[..]);

        // Clearing the present bit pops; on an untagged packet it is a no-op.
        for m in [0xffff, 0x1000] {
            let (p, k) = set(&one, Field::VLAN_TCI, 0, m);
            assert_is(&p, &k, &plain);
        }
        let (p, k) = set(&plain, Field::VLAN_TCI, 0, 0xffff);
        assert_is(&p, &k, &plain);

        // QinQ: only the outer tag is vlan_tci.
        let two = tagged(&plain, &[(0x88a8, 0x0001), (0x8100, 0x0002)]);
        let (p, _) = set(&two, Field::DL_VLAN, 0x0fff, 0xfff);
        assert_eq!(
            p.data(),
            &tagged(&plain, &[(0x88a8, 0x0fff), (0x8100, 2)])[..]
        );
        let (p, k) = set(&two, Field::VLAN_TCI, 0, 0x1000);
        assert_is(&p, &k, &tagged(&plain, &[(0x8100, 2)]));
    }

    #[test]
    fn l4_checksums_survive_push_and_pop() {
        for plain in [v4_frame(L4::Udp), v6_frame(L4::Icmp), v4_frame(L4::Sctp)] {
            let (mut p, mut k) = parse(&plain);
            push_vlan(&mut p, &mut k, 0x8100).unwrap();
            set_field(&mut p, &mut k, Field::DL_VLAN, 9, 0xfff).unwrap();
            push_vlan(&mut p, &mut k, 0x88a8).unwrap();
            assert_consistent(&p, &k);
            set_field(&mut p, &mut k, Field::NW_TTL, 3, 0xff).unwrap();
            assert_consistent(&p, &k);
            pop_vlan(&mut p, &mut k).unwrap();
            pop_vlan(&mut p, &mut k).unwrap();
            assert_key_in_step(&p, &k);
            assert_eq!(&p.data()[..14], &plain[..14]);
            assert_eq!(p.meta.l3_offset(), Some(14));
        }
    }
}
