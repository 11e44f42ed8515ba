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
mod tests {}
