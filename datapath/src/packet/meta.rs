//! Per-packet metadata: what the pipeline knows about a packet besides its
//! bytes.
//!
//! It travels with the packet through recirculation. Extraction fills the
//! parsed offsets ([`PacketMeta::l3_ofs`], [`PacketMeta::l4_ofs`]) so that
//! later stages (conntrack takes the bytes from the L3 header on) do not
//! parse again.

use std::fmt;

use bitflags::bitflags;

/// A datapath port number (OpenFlow's 32-bit port space).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PortNo(pub u32);

impl PortNo {
    /// No port: a packet that came from the control plane or a generator
    /// that was not attached to a port.
    pub const NONE: PortNo = PortNo(u32::MAX);
}

impl fmt::Debug for PortNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PortNo({})", self.0)
    }
}

impl fmt::Display for PortNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

bitflags! {
    /// What the receiving NIC (or a previous stage) already established.
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
    pub struct OffloadFlags: u8 {
        /// The IPv4 header checksum was verified good.
        const IP_CSUM_GOOD = 0x01;
        /// The L4 (TCP/UDP/SCTP/ICMP) checksum was verified good.
        const L4_CSUM_GOOD = 0x02;
        /// A `notrack` action marked this packet: conntrack leaves it alone.
        const NOTRACK = 0x04;
        /// The fragment reassembler refused this fragment: later `ct` ops
        /// hand it straight to conntrack (`+inv`) instead of offering it
        /// again (see `crate::defrag`).
        const FRAG_REJECTED = 0x08;
    }
}

/// Offset value meaning "this layer was not found".
pub const NO_OFFSET: u16 = u16::MAX;

/// The metadata that travels with one packet.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PacketMeta {
    /// The port the packet was received on.
    pub in_port: PortNo,
    /// Recirculation id: 0 on first pass, set by `ct(table=..)` and
    /// `recirc` before the packet is looked up again.
    pub recirc_id: u32,
    /// Conntrack state bits (OVS `ct_state`: new 0x01, est 0x02, ...).
    pub ct_state: u32,
    /// Conntrack zone of the last `ct` action.
    pub ct_zone: u16,
    /// Connection mark.
    pub ct_mark: u32,
    /// Connection label.
    pub ct_label: u128,
    /// OpenFlow registers reg0..reg15 (pipeline scratch, not part of the
    /// datapath flow key).
    pub regs: [u32; 16],
    /// OpenFlow `metadata` field.
    pub metadata: u64,
    /// Offload and marking flags.
    pub offload: OffloadFlags,
    /// Offset of the L3 header from the start of the frame, or
    /// [`NO_OFFSET`]. Filled by flow extraction.
    pub l3_ofs: u16,
    /// Offset of the L4 header from the start of the frame, or
    /// [`NO_OFFSET`]. Filled by flow extraction (also for later fragments,
    /// where it points at the fragment payload).
    pub l4_ofs: u16,
    /// RSS hash from the NIC, or 0.
    pub rss_hash: u32,
    /// A datagram reassembled from fragments: 1 + the index of its
    /// fragment layout in the pipeline's side table (output sends the
    /// original fragments; see `crate::defrag`). 0 for any other packet.
    pub frag_layout: u16,
}

impl Default for PacketMeta {
    fn default() -> Self {
        Self::new(PortNo::NONE)
    }
}

impl PacketMeta {
    /// Fresh metadata for a packet received on `in_port`.
    pub const fn new(in_port: PortNo) -> Self {
        PacketMeta {
            in_port,
            recirc_id: 0,
            ct_state: 0,
            ct_zone: 0,
            ct_mark: 0,
            ct_label: 0,
            regs: [0; 16],
            metadata: 0,
            offload: OffloadFlags::empty(),
            l3_ofs: NO_OFFSET,
            l4_ofs: NO_OFFSET,
            rss_hash: 0,
            frag_layout: 0,
        }
    }

    /// Reset for a packet (re)received on `in_port`.
    #[inline]
    pub fn reset(&mut self, in_port: PortNo) {
        *self = Self::new(in_port);
    }

    /// The L3 offset, if extraction found an L3 header.
    #[inline]
    pub fn l3_offset(&self) -> Option<usize> {
        (self.l3_ofs != NO_OFFSET).then_some(self.l3_ofs as usize)
    }

    /// The L4 offset, if extraction found an L4 header.
    #[inline]
    pub fn l4_offset(&self) -> Option<usize> {
        (self.l4_ofs != NO_OFFSET).then_some(self.l4_ofs as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_clears_everything_but_in_port() {
        let mut m = PacketMeta::new(PortNo(3));
        m.recirc_id = 7;
        m.ct_state = 0x21;
        m.ct_label = 1 << 100;
        m.regs[15] = 9;
        m.l3_ofs = 14;
        m.offload = OffloadFlags::NOTRACK;
        m.reset(PortNo(4));
        assert_eq!(m, PacketMeta::new(PortNo(4)));
        assert_eq!(m.l3_offset(), None);
        assert_eq!(m.l4_offset(), None);
        m.l3_ofs = 14;
        assert_eq!(m.l3_offset(), Some(14));
    }

    #[test]
    fn port_no_formats_as_number() {
        assert_eq!(PortNo(5).to_string(), "5");
        assert_eq!(format!("{:?}", PortNo(5)), "PortNo(5)");
    }
}
