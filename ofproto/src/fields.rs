//! Match fields: where each lives in a [`FlowKey`], how wide it is, which masks
//! it accepts, what it requires, and how its values are written.
//!
//! A [`FlowKey`] is the packet metadata the pipeline matches on: 32 `u64`
//! words. Every field is a bit range inside those words (128-bit fields take two
//! whole words, high word first). A [`FlowMask`] has the same shape: a 1 bit
//! means "this bit is matched" (or, coming out of a lookup, "this bit was
//! consulted"). Keeping both as plain word arrays makes masking, hashing and
//! mask unions a handful of word operations, which is what the classifier and a
//! megaflow cache need.
//!
//! Several OVS fields are views of one storage: `dl_vlan` and `dl_vlan_pcp` are
//! parts of `vlan_tci` (and imply its CFI bit, "a VLAN header is present");
//! `nw_tos`, `ip_dscp` and `nw_ecn` are parts of the IP TOS byte; `xregN` is
//! `reg(2N)` (high half) joined with `reg(2N+1)` (low half). ICMP type/code,
//! ICMPv6 type/code and the ARP opcode/addresses have their own storage rather
//! than sharing the L4 port and IPv4 address slots, so a printed match never
//! needs the protocol to pick a field name.

use std::fmt;
use std::sync::OnceLock;

/// Number of 64-bit words in a [`FlowKey`].
pub const WORDS: usize = 32;

/// Packet metadata the pipeline matches on (OVS's `struct flow`, flattened).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub w: [u64; WORDS],
}

/// Which bits of a [`FlowKey`] a match uses, or a lookup consulted.
/// Megaflow-ready: a datapath cache entry matches `key & mask`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowMask {
    pub w: [u64; WORDS],
}

impl Default for FlowKey {
    fn default() -> Self {
        FlowKey { w: [0; WORDS] }
    }
}

impl Default for FlowMask {
    fn default() -> Self {
        FlowMask { w: [0; WORDS] }
    }
}

impl fmt::Debug for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FlowKey({})", crate::text::format::format_key(self))
    }
}

impl fmt::Debug for FlowMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FlowMask[")?;
        for (i, w) in self.w.iter().enumerate().filter(|(_, w)| **w != 0) {
            write!(f, " {i}:{w:#x}")?;
        }
        write!(f, " ]")
    }
}

impl FlowKey {
    /// Read field `f`.
    #[inline]
    pub fn get(&self, f: Field) -> u128 {
        f.info().slot.get(&self.w)
    }
    /// Write field `f` (bits outside the field's width are ignored).
    #[inline]
    pub fn set(&mut self, f: Field, v: u128) {
        f.info().slot.set(&mut self.w, v)
    }
    /// Write only the bits of `f` selected by `mask`.
    pub fn set_masked(&mut self, f: Field, v: u128, mask: u128) {
        let old = self.get(f);
        self.set(f, (old & !mask) | (v & mask));
    }
    /// `self & mask`, word by word.
    #[inline]
    pub fn masked(&self, m: &FlowMask) -> FlowKey {
        let mut out = FlowKey::default();
        for i in 0..WORDS {
            out.w[i] = self.w[i] & m.w[i];
        }
        out
    }
}

impl FlowMask {
    /// Mask of field `f` (all ones over its width when `m` is all ones).
    #[inline]
    pub fn get(&self, f: Field) -> u128 {
        f.info().slot.get(&self.w)
    }
    #[inline]
    pub fn set(&mut self, f: Field, m: u128) {
        f.info().slot.set(&mut self.w, m)
    }
    /// Mark every bit of `f` as consulted.
    #[inline]
    pub fn set_exact(&mut self, f: Field) {
        let full = f.info().slot.ones();
        self.set(f, full);
    }
    /// Mark bits `m` of `f` as consulted, keeping the ones already set.
    #[inline]
    pub fn or_field(&mut self, f: Field, m: u128) {
        let old = self.get(f);
        self.set(f, old | m);
    }
    /// Union with another mask.
    #[inline]
    pub fn union(&mut self, o: &FlowMask) {
        for i in 0..WORDS {
            self.w[i] |= o.w[i];
        }
    }
    /// True when every bit of `self` is also set in `o`.
    pub fn is_subset_of(&self, o: &FlowMask) -> bool {
        (0..WORDS).all(|i| self.w[i] & !o.w[i] == 0)
    }
    pub fn is_empty(&self) -> bool {
        self.w.iter().all(|w| *w == 0)
    }
}

/// Where a field lives: `bits` wide, starting `shift` bits into word `word`.
/// 128-bit fields use words `word` (high) and `word + 1` (low).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub word: u8,
    pub shift: u8,
    pub bits: u8,
}

impl Slot {
    const fn new(word: u8, shift: u8, bits: u8) -> Slot {
        Slot { word, shift, bits }
    }
    /// All ones over the field's width.
    #[inline]
    pub fn ones(&self) -> u128 {
        if self.bits >= 128 {
            u128::MAX
        } else {
            (1u128 << self.bits) - 1
        }
    }
    #[inline]
    pub fn get(&self, w: &[u64; WORDS]) -> u128 {
        let i = self.word as usize;
        if self.bits == 128 {
            ((w[i] as u128) << 64) | w[i + 1] as u128
        } else {
            ((w[i] >> self.shift) as u128) & self.ones()
        }
    }
    #[inline]
    pub fn set(&self, w: &mut [u64; WORDS], v: u128) {
        let i = self.word as usize;
        if self.bits == 128 {
            w[i] = (v >> 64) as u64;
            w[i + 1] = v as u64;
        } else {
            let ones = self.ones() as u64;
            let v = (v as u64) & ones;
            w[i] = (w[i] & !(ones << self.shift)) | (v << self.shift);
        }
    }
}

/// How a field's values are written in flow text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fmt {
    Decimal,
    Hex,
    Mac,
    Ipv4,
    Ipv6,
    Port,
    CtState,
    TcpFlags,
    Frag,
}

/// Which masks a field accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Maskable {
    /// Exact values only.
    No,
    /// Arbitrary bitwise masks (IP fields also accept `/prefix`).
    Bitwise,
}

/// What a match must already say before a field may be matched (or written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prereq {
    None,
    /// `vlan_tci=0x1000/0x1000`.
    Vlan,
    Arp,
    Ipv4,
    Ipv6,
    /// IPv4 or IPv6.
    Ip,
    Tcp,
    Udp,
    Sctp,
    /// TCP, UDP or SCTP (not a later fragment).
    L4,
    Icmpv4,
    Icmpv6,
    /// IPv4 plus a valid `ct_state` (`+new`, `+est`, `+rel` or `+trk-inv`).
    CtIpv4,
    /// [`Prereq::CtIp`] plus an exact `ct_nw_proto` (OVS ignores ct_tp_src
    /// and ct_tp_dst without it; ferrovs refuses them instead).
    CtL4,
    CtIpv6,
    CtIp,
}

/// A match field, an index into [`fields()`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct Field(pub u8);

/// Everything ofproto knows about one field.
#[derive(Debug, Clone)]
pub struct FieldInfo {
    /// The ovs-fields name (`nw_src`).
    pub name: &'static str,
    /// Other spellings accepted when parsing (`ip_src`, `NXM_OF_IP_SRC`).
    pub aliases: &'static [&'static str],
    pub slot: Slot,
    pub fmt: Fmt,
    pub maskable: Maskable,
    pub prereq: Prereq,
    pub writable: bool,
    /// Extra bits that a match on this field implies (dl_vlan implies the CFI bit).
    pub implies: Option<(Field, u128)>,
    /// Text values are the stored value shifted left by this much (nw_tos).
    pub text_shift: u8,
}

macro_rules! fid {
    ($($name:ident = $n:expr),* $(,)?) => {
        $(pub const $name: Field = Field($n);)*
    };
}

/// Named field ids.
impl Field {
    /// The conntrack fields a `ct` action sets and `ct_clear` clears, in
    /// the order `ovs-ofctl dump-flows` prints them.
    pub const CT_FIELDS: [Field; 11] = [
        Field::CT_STATE,
        Field::CT_ZONE,
        Field::CT_MARK,
        Field::CT_LABEL,
        Field::CT_NW_SRC,
        Field::CT_NW_DST,
        Field::CT_IPV6_SRC,
        Field::CT_IPV6_DST,
        Field::CT_NW_PROTO,
        Field::CT_TP_SRC,
        Field::CT_TP_DST,
    ];

    fid! {
        IN_PORT = 0, DL_TYPE = 1, VLAN_TCI = 2, DL_VLAN = 3, DL_VLAN_PCP = 4,
        DL_SRC = 5, DL_DST = 6, NW_PROTO = 7, NW_TOS = 8, IP_DSCP = 9, NW_ECN = 10,
        NW_TTL = 11, NW_FRAG = 12, NW_SRC = 13, NW_DST = 14, TP_SRC = 15, TP_DST = 16,
        TCP_FLAGS = 17, CT_ZONE = 18, CT_STATE = 19, CT_MARK = 20, CT_LABEL = 21,
        CT_NW_SRC = 22, CT_NW_DST = 23, CT_TP_SRC = 24, CT_TP_DST = 25, CT_NW_PROTO = 26,
        IPV6_LABEL = 27, IPV6_SRC = 28, IPV6_DST = 29, CT_IPV6_SRC = 30, CT_IPV6_DST = 31,
        ARP_SHA = 32, ARP_OP = 33, ARP_THA = 34, ICMP_TYPE = 35, ICMP_CODE = 36,
        ARP_SPA = 37, ARP_TPA = 38, ICMPV6_TYPE = 39, ICMPV6_CODE = 40, RECIRC_ID = 41,
        METADATA = 42,
    }
    /// `reg0`..`reg15`.
    pub const fn reg(i: u8) -> Field {
        Field(43 + i)
    }
    /// `xreg0`..`xreg7`.
    pub const fn xreg(i: u8) -> Field {
        Field(59 + i)
    }
    pub fn info(self) -> &'static FieldInfo {
        &fields()[self.0 as usize]
    }
    pub fn name(self) -> &'static str {
        self.info().name
    }
    /// Look a field up by name or alias (case-insensitive for NXM/OXM names).
    pub fn by_name(name: &str) -> Option<Field> {
        fields()
            .iter()
            .position(|f| {
                f.name == name
                    || f.aliases.iter().any(|a| {
                        *a == name
                            || (a.starts_with("NXM") || a.starts_with("OXM"))
                                && a.eq_ignore_ascii_case(name)
                    })
            })
            .map(|i| Field(i as u8))
    }
    /// All fields in table order.
    pub fn all() -> impl Iterator<Item = Field> {
        (0..fields().len()).map(|i| Field(i as u8))
    }
}

const REG_NAMES: [&str; 16] = [
    "reg0", "reg1", "reg2", "reg3", "reg4", "reg5", "reg6", "reg7", "reg8", "reg9", "reg10",
    "reg11", "reg12", "reg13", "reg14", "reg15",
];
const REG_NXM: [&[&str]; 16] = [
    &["NXM_NX_REG0"],
    &["NXM_NX_REG1"],
    &["NXM_NX_REG2"],
    &["NXM_NX_REG3"],
    &["NXM_NX_REG4"],
    &["NXM_NX_REG5"],
    &["NXM_NX_REG6"],
    &["NXM_NX_REG7"],
    &["NXM_NX_REG8"],
    &["NXM_NX_REG9"],
    &["NXM_NX_REG10"],
    &["NXM_NX_REG11"],
    &["NXM_NX_REG12"],
    &["NXM_NX_REG13"],
    &["NXM_NX_REG14"],
    &["NXM_NX_REG15"],
];
const XREG_NAMES: [&str; 8] = [
    "xreg0", "xreg1", "xreg2", "xreg3", "xreg4", "xreg5", "xreg6", "xreg7",
];
const XREG_NXM: [&[&str]; 8] = [
    &["OXM_OF_PKT_REG0"],
    &["OXM_OF_PKT_REG1"],
    &["OXM_OF_PKT_REG2"],
    &["OXM_OF_PKT_REG3"],
    &["OXM_OF_PKT_REG4"],
    &["OXM_OF_PKT_REG5"],
    &["OXM_OF_PKT_REG6"],
    &["OXM_OF_PKT_REG7"],
];

/// The field table, built once.
pub fn fields() -> &'static [FieldInfo] {
    static TABLE: OnceLock<Vec<FieldInfo>> = OnceLock::new();
    TABLE.get_or_init(build_fields)
}

fn build_fields() -> Vec<FieldInfo> {
    use Fmt::*;
    use Maskable::*;
    use Prereq as P;
    #[allow(clippy::too_many_arguments)]
    fn f(
        name: &'static str,
        aliases: &'static [&'static str],
        slot: Slot,
        fmt: Fmt,
        maskable: Maskable,
        prereq: Prereq,
        writable: bool,
    ) -> FieldInfo {
        FieldInfo {
            name,
            aliases,
            slot,
            fmt,
            maskable,
            prereq,
            writable,
            implies: None,
            text_shift: 0,
        }
    }
    let s = Slot::new;
    let mut v = vec![
        f(
            "in_port",
            &["NXM_OF_IN_PORT", "OXM_OF_IN_PORT"],
            s(0, 0, 32),
            Port,
            No,
            P::None,
            true,
        ),
        f(
            "dl_type",
            &["eth_type", "NXM_OF_ETH_TYPE"],
            s(0, 32, 16),
            Hex,
            No,
            P::None,
            false,
        ),
        f(
            "vlan_tci",
            &["NXM_OF_VLAN_TCI"],
            s(0, 48, 16),
            Hex,
            Bitwise,
            P::None,
            true,
        ),
        f(
            "dl_vlan",
            &["vlan_vid"],
            s(0, 48, 12),
            Decimal,
            No,
            P::None,
            true,
        ),
        f(
            "dl_vlan_pcp",
            &["vlan_pcp"],
            s(0, 61, 3),
            Decimal,
            No,
            P::None,
            true,
        ),
        f(
            "dl_src",
            &["eth_src", "NXM_OF_ETH_SRC"],
            s(1, 0, 48),
            Mac,
            Bitwise,
            P::None,
            true,
        ),
        f(
            "dl_dst",
            &["eth_dst", "NXM_OF_ETH_DST"],
            s(2, 0, 48),
            Mac,
            Bitwise,
            P::None,
            true,
        ),
        f(
            "nw_proto",
            &["ip_proto", "NXM_OF_IP_PROTO"],
            s(1, 48, 8),
            Decimal,
            No,
            P::Ip,
            false,
        ),
        f(
            "nw_tos",
            &["NXM_OF_IP_TOS"],
            s(1, 58, 6),
            Decimal,
            No,
            P::Ip,
            true,
        ),
        f(
            "ip_dscp",
            &["OXM_OF_IP_DSCP"],
            s(1, 58, 6),
            Decimal,
            No,
            P::Ip,
            true,
        ),
        f(
            "nw_ecn",
            &["ip_ecn", "NXM_NX_IP_ECN"],
            s(1, 56, 2),
            Decimal,
            No,
            P::Ip,
            true,
        ),
        f(
            "nw_ttl",
            &["NXM_NX_IP_TTL"],
            s(2, 48, 8),
            Decimal,
            No,
            P::Ip,
            true,
        ),
        f(
            "nw_frag",
            &["ip_frag", "NXM_NX_IP_FRAG"],
            s(2, 56, 2),
            Frag,
            Bitwise,
            P::Ip,
            false,
        ),
        f(
            "nw_src",
            &["ip_src", "NXM_OF_IP_SRC"],
            s(3, 32, 32),
            Ipv4,
            Bitwise,
            P::Ipv4,
            true,
        ),
        f(
            "nw_dst",
            &["ip_dst", "NXM_OF_IP_DST"],
            s(3, 0, 32),
            Ipv4,
            Bitwise,
            P::Ipv4,
            true,
        ),
        f(
            "tp_src",
            &[
                "tcp_src",
                "udp_src",
                "sctp_src",
                "NXM_OF_TCP_SRC",
                "NXM_OF_UDP_SRC",
            ],
            s(4, 0, 16),
            Decimal,
            Bitwise,
            P::L4,
            true,
        ),
        f(
            "tp_dst",
            &[
                "tcp_dst",
                "udp_dst",
                "sctp_dst",
                "NXM_OF_TCP_DST",
                "NXM_OF_UDP_DST",
            ],
            s(4, 16, 16),
            Decimal,
            Bitwise,
            P::L4,
            true,
        ),
        f(
            "tcp_flags",
            &["NXM_NX_TCP_FLAGS"],
            s(4, 32, 12),
            TcpFlags,
            Bitwise,
            P::Tcp,
            false,
        ),
        f(
            "ct_zone",
            &["NXM_NX_CT_ZONE"],
            s(4, 48, 16),
            Decimal,
            No,
            P::None,
            false,
        ),
        f(
            "ct_state",
            &["NXM_NX_CT_STATE"],
            s(5, 0, 32),
            CtState,
            Bitwise,
            P::None,
            false,
        ),
        f(
            "ct_mark",
            &["NXM_NX_CT_MARK"],
            s(5, 32, 32),
            Hex,
            Bitwise,
            P::None,
            true,
        ),
        f(
            "ct_label",
            &["NXM_NX_CT_LABEL"],
            s(6, 0, 128),
            Hex,
            Bitwise,
            P::None,
            true,
        ),
        f(
            "ct_nw_src",
            &["NXM_NX_CT_NW_SRC"],
            s(8, 32, 32),
            Ipv4,
            Bitwise,
            P::CtIpv4,
            false,
        ),
        f(
            "ct_nw_dst",
            &["NXM_NX_CT_NW_DST"],
            s(8, 0, 32),
            Ipv4,
            Bitwise,
            P::CtIpv4,
            false,
        ),
        f(
            "ct_tp_src",
            &["NXM_NX_CT_TP_SRC"],
            s(9, 0, 16),
            Decimal,
            Bitwise,
            P::CtL4,
            false,
        ),
        f(
            "ct_tp_dst",
            &["NXM_NX_CT_TP_DST"],
            s(9, 16, 16),
            Decimal,
            Bitwise,
            P::CtL4,
            false,
        ),
        f(
            "ct_nw_proto",
            &["NXM_NX_CT_NW_PROTO"],
            s(9, 32, 8),
            Decimal,
            No,
            P::CtIp,
            false,
        ),
        f(
            "ipv6_label",
            &["NXM_NX_IPV6_LABEL"],
            s(9, 40, 20),
            Hex,
            Bitwise,
            P::Ipv6,
            true,
        ),
        f(
            "ipv6_src",
            &["NXM_NX_IPV6_SRC"],
            s(10, 0, 128),
            Ipv6,
            Bitwise,
            P::Ipv6,
            true,
        ),
        f(
            "ipv6_dst",
            &["NXM_NX_IPV6_DST"],
            s(12, 0, 128),
            Ipv6,
            Bitwise,
            P::Ipv6,
            true,
        ),
        f(
            "ct_ipv6_src",
            &["NXM_NX_CT_IPV6_SRC"],
            s(14, 0, 128),
            Ipv6,
            Bitwise,
            P::CtIpv6,
            false,
        ),
        f(
            "ct_ipv6_dst",
            &["NXM_NX_CT_IPV6_DST"],
            s(16, 0, 128),
            Ipv6,
            Bitwise,
            P::CtIpv6,
            false,
        ),
        f(
            "arp_sha",
            &["NXM_NX_ARP_SHA"],
            s(18, 0, 48),
            Mac,
            Bitwise,
            P::Arp,
            true,
        ),
        f(
            "arp_op",
            &["NXM_OF_ARP_OP"],
            s(18, 48, 8),
            Decimal,
            No,
            P::Arp,
            true,
        ),
        f(
            "arp_tha",
            &["NXM_NX_ARP_THA"],
            s(19, 0, 48),
            Mac,
            Bitwise,
            P::Arp,
            true,
        ),
        f(
            "icmp_type",
            &["icmpv4_type", "NXM_OF_ICMP_TYPE"],
            s(19, 48, 8),
            Decimal,
            No,
            P::Icmpv4,
            true,
        ),
        f(
            "icmp_code",
            &["icmpv4_code", "NXM_OF_ICMP_CODE"],
            s(19, 56, 8),
            Decimal,
            No,
            P::Icmpv4,
            true,
        ),
        f(
            "arp_spa",
            &["NXM_OF_ARP_SPA"],
            s(20, 32, 32),
            Ipv4,
            Bitwise,
            P::Arp,
            true,
        ),
        f(
            "arp_tpa",
            &["NXM_OF_ARP_TPA"],
            s(20, 0, 32),
            Ipv4,
            Bitwise,
            P::Arp,
            true,
        ),
        f(
            "icmpv6_type",
            &["NXM_NX_ICMPV6_TYPE"],
            s(21, 0, 8),
            Decimal,
            No,
            P::Icmpv6,
            true,
        ),
        f(
            "icmpv6_code",
            &["NXM_NX_ICMPV6_CODE"],
            s(21, 8, 8),
            Decimal,
            No,
            P::Icmpv6,
            true,
        ),
        f(
            "recirc_id",
            &["NXM_NX_RECIRC_ID"],
            s(21, 32, 32),
            Hex,
            No,
            P::None,
            false,
        ),
        f(
            "metadata",
            &["OXM_OF_METADATA"],
            s(22, 0, 64),
            Hex,
            Bitwise,
            P::None,
            true,
        ),
    ];
    v[Field::DL_VLAN.0 as usize].implies = Some((Field::VLAN_TCI, 0x1000));
    v[Field::DL_VLAN_PCP.0 as usize].implies = Some((Field::VLAN_TCI, 0x1000));
    v[Field::NW_TOS.0 as usize].text_shift = 2;
    for i in 0..16u8 {
        let word = 23 + i / 2;
        let shift = if i % 2 == 0 { 32 } else { 0 };
        v.push(f(
            REG_NAMES[i as usize],
            REG_NXM[i as usize],
            s(word, shift, 32),
            Hex,
            Bitwise,
            P::None,
            true,
        ));
    }
    for i in 0..8u8 {
        v.push(f(
            XREG_NAMES[i as usize],
            XREG_NXM[i as usize],
            s(23 + i, 0, 64),
            Hex,
            Bitwise,
            P::None,
            true,
        ));
    }
    v
}

/// OVS ethertypes and IP protocols used by prerequisites and shorthands.
pub mod consts {
    pub const ETH_IPV4: u16 = 0x0800;
    pub const ETH_IPV6: u16 = 0x86dd;
    pub const ETH_ARP: u16 = 0x0806;
    pub const ETH_RARP: u16 = 0x8035;
    pub const VLAN_CFI: u16 = 0x1000;
    pub const PROTO_ICMP: u8 = 1;
    pub const PROTO_TCP: u8 = 6;
    pub const PROTO_UDP: u8 = 17;
    pub const PROTO_ICMPV6: u8 = 58;
    pub const PROTO_SCTP: u8 = 132;
    /// `nw_frag` bits: the packet is a fragment; it is not the first one.
    pub const FRAG_ANY: u8 = 1;
    pub const FRAG_LATER: u8 = 2;
}

/// An OpenFlow port number (OpenFlow 1.1+ numbering for the reserved ports).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct PortNo(pub u32);

impl PortNo {
    pub const IN_PORT: PortNo = PortNo(0xffff_fff8);
    pub const TABLE: PortNo = PortNo(0xffff_fff9);
    pub const NORMAL: PortNo = PortNo(0xffff_fffa);
    pub const FLOOD: PortNo = PortNo(0xffff_fffb);
    pub const ALL: PortNo = PortNo(0xffff_fffc);
    pub const CONTROLLER: PortNo = PortNo(0xffff_fffd);
    pub const LOCAL: PortNo = PortNo(0xffff_fffe);
    pub const ANY: PortNo = PortNo(0xffff_ffff);

    const NAMES: [(PortNo, &'static str); 8] = [
        (PortNo::IN_PORT, "IN_PORT"),
        (PortNo::TABLE, "TABLE"),
        (PortNo::NORMAL, "NORMAL"),
        (PortNo::FLOOD, "FLOOD"),
        (PortNo::ALL, "ALL"),
        (PortNo::CONTROLLER, "CONTROLLER"),
        (PortNo::LOCAL, "LOCAL"),
        (PortNo::ANY, "ANY"),
    ];

    /// A reserved port's name (`LOCAL`), if this is one.
    pub fn reserved_name(self) -> Option<&'static str> {
        Self::NAMES
            .iter()
            .find(|(p, _)| *p == self)
            .map(|(_, n)| *n)
    }
    /// Parse a port: a number, or a reserved name in any case (`LOCAL`, `local`,
    /// `NONE` is a synonym of `ANY`).
    pub fn parse(s: &str) -> Option<PortNo> {
        if s.eq_ignore_ascii_case("none") {
            return Some(PortNo::ANY);
        }
        if let Some((p, _)) = Self::NAMES.iter().find(|(_, n)| n.eq_ignore_ascii_case(s)) {
            return Some(*p);
        }
        // OpenFlow 1.0 numbers ports in 16 bits with 0xff00.. reserved; those
        // map to the OpenFlow 1.1+ reserved range 0xffffff00... Numbers in
        // between are not ports (as in OVS).
        let n = crate::text::parse::parse_uint(s, 32).ok()? as u32;
        match n {
            0..=0xfeff => Some(PortNo(n)),
            0xff00..=0xffff => Some(PortNo(n | 0xffff_0000)),
            0xffff_ff00.. => Some(PortNo(n)),
            _ => None,
        }
    }
}

impl fmt::Display for PortNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reserved_name() {
            Some(n) => f.write_str(n),
            None => write!(f, "{}", self.0),
        }
    }
}

/// An OpenFlow table number, 0..=254.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord, Default)]
pub struct TableId(pub u8);

impl TableId {
    /// Highest usable table (255 is "all tables" in OpenFlow).
    pub const MAX: TableId = TableId(254);
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_resolve() {
        let mut seen = std::collections::HashSet::new();
        for f in Field::all() {
            assert!(seen.insert(f.name()), "duplicate field {}", f.name());
            assert_eq!(Field::by_name(f.name()), Some(f));
            for a in f.info().aliases {
                assert_eq!(Field::by_name(a), Some(f), "alias {a}");
            }
        }
        assert_eq!(Field::by_name("reg7"), Some(Field::reg(7)));
        assert_eq!(Field::by_name("xreg3"), Some(Field::xreg(3)));
        assert_eq!(Field::by_name("nxm_nx_reg3"), Some(Field::reg(3)));
        assert_eq!(Field::by_name("bogus"), None);
    }

    #[test]
    fn storage_does_not_overlap_except_documented_views() {
        // Fields that are views of one storage may overlap each other, and
        // nothing else may overlap anything.
        let group = |f: Field| -> Option<u8> {
            match f {
                Field::VLAN_TCI | Field::DL_VLAN | Field::DL_VLAN_PCP => Some(1),
                Field::NW_TOS | Field::IP_DSCP | Field::NW_ECN => Some(2),
                f if f >= Field::reg(0) => Some(3), // regs and the xregs over them
                _ => None,
            }
        };
        let is_view = |a: Field, b: Field| group(a).is_some() && group(a) == group(b);
        for a in Field::all() {
            for b in Field::all() {
                if a >= b {
                    continue;
                }
                let mut ma = FlowMask::default();
                ma.set_exact(a);
                let mut mb = FlowMask::default();
                mb.set_exact(b);
                let overlap = (0..WORDS).any(|i| ma.w[i] & mb.w[i] != 0);
                if overlap {
                    assert!(is_view(a, b), "{} overlaps {}", a.name(), b.name());
                }
            }
        }
    }

    #[test]
    fn get_set_round_trip_every_field() {
        for f in Field::all() {
            let mut k = FlowKey::default();
            let ones = f.info().slot.ones();
            let v = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210u128 & ones;
            k.set(f, v);
            assert_eq!(k.get(f), v, "{}", f.name());
            k.set(f, u128::MAX);
            assert_eq!(k.get(f), ones, "{} masks to width", f.name());
        }
    }

    #[test]
    fn xreg_overlays_two_regs_high_first() {
        let mut k = FlowKey::default();
        k.set(Field::xreg(1), 0x1111_2222_3333_4444);
        assert_eq!(k.get(Field::reg(2)), 0x1111_2222);
        assert_eq!(k.get(Field::reg(3)), 0x3333_4444);
    }

    #[test]
    fn vlan_and_tos_views() {
        let mut k = FlowKey::default();
        k.set(Field::VLAN_TCI, 0x1000 | (5 << 13) | 42);
        assert_eq!(k.get(Field::DL_VLAN), 42);
        assert_eq!(k.get(Field::DL_VLAN_PCP), 5);
        k.set(Field::NW_TOS, 0x2e); // DSCP 46 (EF)
        k.set(Field::NW_ECN, 3);
        assert_eq!(k.get(Field::IP_DSCP), 46);
        assert_eq!(k.get(Field::NW_ECN), 3);
    }

    #[test]
    fn ports_parse_and_print() {
        assert_eq!(PortNo::parse("local"), Some(PortNo::LOCAL));
        assert_eq!(PortNo::parse("7"), Some(PortNo(7)));
        assert_eq!(PortNo::parse("0x10"), Some(PortNo(16)));
        assert_eq!(PortNo::parse("eth0"), None);
        assert_eq!(
            PortNo::parse("65534"),
            Some(PortNo::LOCAL),
            "OpenFlow 1.0 LOCAL"
        );
        assert_eq!(PortNo::parse("0xfffffffe"), Some(PortNo::LOCAL));
        assert_eq!(PortNo::parse("65536"), None, "outside both ranges");
        assert_eq!(PortNo::parse("4028575858"), None);
        assert_eq!(PortNo::NORMAL.to_string(), "NORMAL");
        assert_eq!(PortNo(3).to_string(), "3");
    }
}
