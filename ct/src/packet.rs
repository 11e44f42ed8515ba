//! What conntrack reads from a packet: the L3 bytes in, a [`PacketInfo`] out.
//!
//! The datapath hands conntrack the packet from its IP header on
//! ([`CtPacket`]); [`parse`] does one length check per layer and extracts the
//! connection key, the TCP segment fields the window tracker needs, or the
//! embedded header of an ICMP error. It never panics: anything malformed comes
//! back with [`PacketInfo::invalid`] set, and the packet is reported `+inv`.

use bitflags::bitflags;

use crate::key::{ConnKey, Family, Zone};

bitflags! {
    /// Per-packet facts the datapath (or NIC) already knows.
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
    pub struct PktFlags: u8 {
        /// The NIC validated the L4 checksum (DPDK `RTE_MBUF_F_RX_L4_CKSUM_GOOD`).
        const L4_CSUM_GOOD = 0x01;
        /// The NIC validated the IPv4 header checksum.
        const IP_CSUM_GOOD = 0x02;
        /// A `notrack` action marked this packet: conntrack leaves it alone.
        const NOTRACK = 0x04;
    }
}

/// One packet as conntrack sees it.
#[derive(Clone, Copy, Debug)]
pub struct CtPacket<'a> {
    /// From the first byte of the IPv4/IPv6 header to the end of the frame.
    pub l3: &'a [u8],
    pub family: Family,
    pub flags: PktFlags,
}

/// TCP flag bits as on the wire.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// The fields of a TCP segment the state machine and window tracker use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpSeg {
    pub seq: u32,
    pub ack: u32,
    /// Raw (unscaled) window field.
    pub win: u16,
    /// Flag byte (see [`tcp_flags`]).
    pub flags: u8,
    /// Payload bytes (IP payload minus TCP header).
    pub payload_len: u32,
    /// Window-scale option value if present (only meaningful on SYNs).
    pub wscale: Option<u8>,
    /// SACK-permitted option present.
    pub sack_perm: bool,
}

/// Why a packet cannot be tracked; reported as `+inv` and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Invalid {
    /// A header is shorter than its length field or the minimum.
    Truncated,
    /// IP version or header length field is wrong.
    BadIpHeader,
    BadIpChecksum,
    BadL4Checksum,
    /// A fragment (reassembly happens before conntrack; see the NAT issue).
    Fragment,
    /// TCP data offset or flag combination impossible.
    BadTcpHeader,
    /// ICMP message conntrack cannot relate or track.
    BadIcmp,
}

/// What an L4 header says, beyond the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum L4Info {
    /// Protocol without per-segment state (UDP, SCTP, GRE, ...).
    #[default]
    Plain,
    Tcp(TcpSeg),
    /// ICMP/ICMPv6 echo (or other query) request or reply; id/type/code in the key.
    IcmpQuery,
    /// ICMP/ICMPv6 error; `inner` is the key of the embedded (offending) packet
    /// as it was sent, in the same zone.
    IcmpError { inner: ConnKey },
}

/// Parse result for one packet.
#[derive(Clone, Copy, Debug, Default)]
pub struct PacketInfo {
    pub key: ConnKey,
    pub l4: L4Info,
    pub invalid: Option<Invalid>,
    /// Whether this parse computed the L4 checksum in software (so the
    /// datapath may set [`PktFlags::L4_CSUM_GOOD`] and not pay again).
    pub l4_csum_checked: bool,
}

/// Parse the packet's L3/L4 headers into a [`PacketInfo`] for `zone`.
pub fn parse(pkt: &CtPacket<'_>, zone: Zone) -> PacketInfo {
    let _ = (pkt, zone);
    PacketInfo {
        invalid: Some(Invalid::Truncated),
        ..Default::default()
    }
}
