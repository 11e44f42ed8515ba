//! Packet builders: L3 bytes (IP header onward) with correct checksums, for
//! tests, benches, golden traces and the bench binary. Not the hot path.
//!
//! A [`Builder`] holds the IP-level settings (addresses, TTL, fragment
//! fields, IPv6 extension headers, deliberate checksum corruption); its
//! methods produce one packet each:
//!
//! ```
//! use ct::build::{Builder, Tcp};
//! use ct::packet::tcp_flags::SYN;
//!
//! let b = Builder::v4("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
//! let udp = b.udp(1000, 53, b"query");
//! let syn = b.tcp(&Tcp::new(1000, 80).flags(SYN).seq(7).wscale(7));
//! let err = Builder::v4("10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap())
//!     .icmp_error(3, 3, &udp);
//! assert_eq!(udp.len(), 20 + 8 + 5);
//! # let _ = (syn, err);
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::key::{ipproto, Family};
use crate::packet::{csum_add, csum_fold};

/// An IPv6 extension header [`Builder::ext`] inserts (in the order given,
/// between the IPv6 header and the upper-layer header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ext {
    /// 8-byte hop-by-hop options header (one PadN option).
    HopByHop,
    /// 8-byte routing header (type 4, segments left 0: nodes skip it).
    Routing,
    /// 8-byte destination options header (one PadN option).
    DestOpts,
    /// 16-byte authentication header with a 4-byte ICV.
    Ah,
    /// Fragment header; `offset` in bytes (a multiple of 8), `more` the M bit.
    /// Offset 0 and `more == false` is an atomic fragment.
    Fragment { offset: u16, more: bool },
}

impl Ext {
    fn code(self) -> u8 {
        match self {
            Ext::HopByHop => 0,
            Ext::Routing => 43,
            Ext::DestOpts => 60,
            Ext::Ah => 51,
            Ext::Fragment { .. } => 44,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Addrs {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

/// IP-level settings shared by the packets it builds. Setters consume and
/// return the builder, so settings chain: `Builder::v4(a, b).ttl(1).udp(..)`.
#[derive(Clone, Debug)]
pub struct Builder {
    addrs: Addrs,
    ttl: u8,
    tos: u8,
    ident: u16,
    dont_frag: bool,
    frag_offset: u16,
    more_frags: bool,
    v4_options: Vec<u8>,
    ext: Vec<Ext>,
    bad_ip_csum: bool,
    bad_l4_csum: bool,
    udp_zero_csum: bool,
}

/// Settings of one TCP segment for [`Builder::tcp`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tcp {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    /// Flag byte (see [`crate::packet::tcp_flags`]); default ACK.
    pub flags: u8,
    pub win: u16,
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    pub sack_perm: bool,
    pub payload: Vec<u8>,
}

impl Tcp {
    /// An ACK segment from `sport` to `dport`, seq/ack 0, window 65535.
    pub fn new(sport: u16, dport: u16) -> Tcp {
        Tcp {
            sport,
            dport,
            flags: crate::packet::tcp_flags::ACK,
            win: 65535,
            ..Default::default()
        }
    }
    pub fn seq(mut self, seq: u32) -> Tcp {
        self.seq = seq;
        self
    }
    pub fn ack(mut self, ack: u32) -> Tcp {
        self.ack = ack;
        self
    }
    pub fn flags(mut self, flags: u8) -> Tcp {
        self.flags = flags;
        self
    }
    pub fn win(mut self, win: u16) -> Tcp {
        self.win = win;
        self
    }
    pub fn mss(mut self, mss: u16) -> Tcp {
        self.mss = Some(mss);
        self
    }
    pub fn wscale(mut self, shift: u8) -> Tcp {
        self.wscale = Some(shift);
        self
    }
    pub fn sack_perm(mut self) -> Tcp {
        self.sack_perm = true;
        self
    }
    pub fn payload(mut self, payload: &[u8]) -> Tcp {
        self.payload = payload.to_vec();
        self
    }
}

/// Store `v` big-endian at `b[at..at + 2]`.
fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// A checksum value that can never verify in place of `c` (not `c`, and not
/// its one's-complement twin 0/0xffff, so UDP never reads it as "none").
fn corrupt(c: u16) -> u16 {
    match c ^ 0x00ff {
        0 | 0xffff => c ^ 0x0f0f,
        x => x,
    }
}

impl Builder {
    fn with(addrs: Addrs) -> Builder {
        Builder {
            addrs,
            ttl: 64,
            tos: 0,
            ident: 0x1234,
            dont_frag: false,
            frag_offset: 0,
            more_frags: false,
            v4_options: Vec::new(),
            ext: Vec::new(),
            bad_ip_csum: false,
            bad_l4_csum: false,
            udp_zero_csum: false,
        }
    }

    /// IPv4 packets from `src` to `dst` (TTL 64, id 0x1234, not fragmented).
    pub fn v4(src: Ipv4Addr, dst: Ipv4Addr) -> Builder {
        Builder::with(Addrs::V4(src, dst))
    }

    /// IPv6 packets from `src` to `dst` (hop limit 64, no extension headers).
    pub fn v6(src: Ipv6Addr, dst: Ipv6Addr) -> Builder {
        Builder::with(Addrs::V6(src, dst))
    }

    /// Addresses of either family (both must be the same family).
    ///
    /// # Panics
    /// If the families differ.
    pub fn ip(src: IpAddr, dst: IpAddr) -> Builder {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Builder::v4(s, d),
            (IpAddr::V6(s), IpAddr::V6(d)) => Builder::v6(s, d),
            _ => panic!("Builder::ip: mixed address families"),
        }
    }

    pub fn family(&self) -> Family {
        match self.addrs {
            Addrs::V4(..) => Family::Ipv4,
            Addrs::V6(..) => Family::Ipv6,
        }
    }

    /// The same settings with source and destination swapped.
    pub fn reversed(&self) -> Builder {
        let mut b = self.clone();
        b.addrs = match self.addrs {
            Addrs::V4(s, d) => Addrs::V4(d, s),
            Addrs::V6(s, d) => Addrs::V6(d, s),
        };
        b
    }

    /// TTL (IPv4) or hop limit (IPv6).
    pub fn ttl(mut self, ttl: u8) -> Builder {
        self.ttl = ttl;
        self
    }
    /// IPv4 TOS / IPv6 traffic class.
    pub fn tos(mut self, tos: u8) -> Builder {
        self.tos = tos;
        self
    }
    /// IPv4 identification (also the low bits of an IPv6 fragment id).
    pub fn ident(mut self, ident: u16) -> Builder {
        self.ident = ident;
        self
    }
    /// Set the IPv4 DF bit.
    pub fn dont_frag(mut self) -> Builder {
        self.dont_frag = true;
        self
    }
    /// IPv4 fragment fields: `offset` in bytes (multiple of 8), MF bit
    /// `more`. (IPv6: use [`Ext::Fragment`].)
    pub fn fragment(mut self, offset: u16, more: bool) -> Builder {
        self.frag_offset = offset;
        self.more_frags = more;
        self
    }
    /// IPv4 options (padded with end-of-list to a multiple of 4 bytes;
    /// at most 40 bytes are used).
    pub fn v4_options(mut self, opts: &[u8]) -> Builder {
        self.v4_options = opts[..opts.len().min(40)].to_vec();
        self
    }
    /// Append an IPv6 extension header (ignored for IPv4).
    pub fn ext(mut self, ext: Ext) -> Builder {
        self.ext.push(ext);
        self
    }
    /// Write a wrong IPv4 header checksum.
    pub fn bad_ip_checksum(mut self) -> Builder {
        self.bad_ip_csum = true;
        self
    }
    /// Write a wrong TCP/UDP/ICMP checksum.
    pub fn bad_l4_checksum(mut self) -> Builder {
        self.bad_l4_csum = true;
        self
    }
    /// UDP: write checksum 0 ("none"; only legal on IPv4).
    pub fn udp_zero_checksum(mut self) -> Builder {
        self.udp_zero_csum = true;
        self
    }

    /// Sum of the pseudo-header for an upper-layer message of `len` bytes.
    fn pseudo(&self, proto: u8, len: usize) -> u64 {
        let acc = proto as u64 + len as u64;
        match self.addrs {
            Addrs::V4(s, d) => csum_add(csum_add(acc, &s.octets()), &d.octets()),
            Addrs::V6(s, d) => csum_add(csum_add(acc, &s.octets()), &d.octets()),
        }
    }

    /// Fill the checksum at `l4[at..at + 2]` (which must be zero), over `l4`
    /// with the pseudo-header when `pseudo` is set.
    fn l4_checksum(&self, proto: u8, l4: &mut [u8], at: usize, pseudo: bool) {
        let acc = if pseudo {
            self.pseudo(proto, l4.len())
        } else {
            0
        };
        let mut c = !csum_fold(csum_add(acc, l4));
        if proto == ipproto::UDP && c == 0 {
            c = 0xffff;
        }
        if self.bad_l4_csum {
            c = corrupt(c);
        }
        put16(l4, at, c);
    }

    /// Wrap an L4 message (taken as is) into the IP header(s): the generic
    /// builder for any protocol, e.g. `raw(132, sctp_bytes)` or GRE.
    pub fn raw(&self, proto: u8, l4: &[u8]) -> Vec<u8> {
        match self.addrs {
            Addrs::V4(s, d) => {
                let mut opts = self.v4_options.clone();
                opts.resize(opts.len().next_multiple_of(4), 0);
                let hl = 20 + opts.len();
                let total = hl + l4.len();
                let mut p = vec![0u8; hl];
                p[0] = 0x40 | (hl / 4) as u8;
                p[1] = self.tos;
                put16(&mut p, 2, total as u16);
                put16(&mut p, 4, self.ident);
                let ff = (self.dont_frag as u16) << 14
                    | (self.more_frags as u16) << 13
                    | (self.frag_offset / 8) & 0x1fff;
                put16(&mut p, 6, ff);
                p[8] = self.ttl;
                p[9] = proto;
                p[12..16].copy_from_slice(&s.octets());
                p[16..20].copy_from_slice(&d.octets());
                p[20..].copy_from_slice(&opts);
                let mut c = !csum_fold(csum_add(0, &p));
                if self.bad_ip_csum {
                    c = corrupt(c);
                }
                put16(&mut p, 10, c);
                p.extend_from_slice(l4);
                p
            }
            Addrs::V6(s, d) => {
                let mut p = vec![0u8; 40];
                p[0] = 0x60 | self.tos >> 4;
                p[1] = self.tos << 4;
                p[6] = self.ext.first().map_or(proto, |e| e.code());
                p[7] = self.ttl;
                p[8..24].copy_from_slice(&s.octets());
                p[24..40].copy_from_slice(&d.octets());
                for (i, e) in self.ext.iter().enumerate() {
                    let nh = self.ext.get(i + 1).map_or(proto, |n| n.code());
                    match *e {
                        Ext::HopByHop | Ext::DestOpts => {
                            p.extend_from_slice(&[nh, 0, 1, 4, 0, 0, 0, 0])
                        }
                        Ext::Routing => p.extend_from_slice(&[nh, 0, 4, 0, 0, 0, 0, 0]),
                        Ext::Ah => {
                            // Payload length in 4-byte units minus 2; SPI 0x100, seq 1, ICV 0.
                            p.extend_from_slice(&[nh, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
                        }
                        Ext::Fragment { offset, more } => {
                            let fo = (offset & 0xfff8) | more as u16;
                            let [a, b] = fo.to_be_bytes();
                            let [i0, i1] = self.ident.to_be_bytes();
                            p.extend_from_slice(&[nh, 0, a, b, 0, 0, i0, i1]);
                        }
                    }
                }
                p.extend_from_slice(l4);
                let plen = (p.len() - 40) as u16;
                put16(&mut p, 4, plen);
                p
            }
        }
    }

    /// A UDP datagram with a correct checksum (or 0, see
    /// [`Builder::udp_zero_checksum`]).
    pub fn udp(&self, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut l4 = vec![0u8; 8];
        put16(&mut l4, 0, sport);
        put16(&mut l4, 2, dport);
        put16(&mut l4, 4, (8 + payload.len()) as u16);
        l4.extend_from_slice(payload);
        if !self.udp_zero_csum || self.bad_l4_csum {
            self.l4_checksum(ipproto::UDP, &mut l4, 6, true);
        }
        self.raw(ipproto::UDP, &l4)
    }

    /// A TCP segment; options MSS, window scale, SACK-permitted as set in
    /// `seg` (NOP-aligned, padded to a multiple of 4 bytes).
    pub fn tcp(&self, seg: &Tcp) -> Vec<u8> {
        let mut opts = Vec::new();
        if let Some(mss) = seg.mss {
            let [a, b] = mss.to_be_bytes();
            opts.extend_from_slice(&[2, 4, a, b]);
        }
        if let Some(ws) = seg.wscale {
            opts.extend_from_slice(&[1, 3, 3, ws]);
        }
        if seg.sack_perm {
            opts.extend_from_slice(&[1, 1, 4, 2]);
        }
        let hl = 20 + opts.len();
        let mut l4 = vec![0u8; 20];
        put16(&mut l4, 0, seg.sport);
        put16(&mut l4, 2, seg.dport);
        l4[4..8].copy_from_slice(&seg.seq.to_be_bytes());
        l4[8..12].copy_from_slice(&seg.ack.to_be_bytes());
        l4[12] = ((hl / 4) as u8) << 4;
        l4[13] = seg.flags;
        put16(&mut l4, 14, seg.win);
        l4.extend_from_slice(&opts);
        l4.extend_from_slice(&seg.payload);
        self.l4_checksum(ipproto::TCP, &mut l4, 16, true);
        self.raw(ipproto::TCP, &l4)
    }

    /// An ICMP (IPv4) or ICMPv6 (IPv6) message: type, code, the 4 bytes after
    /// the checksum (`rest`: id/seq, unused, MTU or pointer) and the body.
    pub fn icmp(&self, ty: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
        let mut l4 = vec![ty, code, 0, 0];
        l4.extend_from_slice(&rest);
        l4.extend_from_slice(body);
        let proto = match self.family() {
            Family::Ipv4 => ipproto::ICMP,
            Family::Ipv6 => ipproto::ICMPV6,
        };
        self.l4_checksum(proto, &mut l4, 2, proto == ipproto::ICMPV6);
        self.raw(proto, &l4)
    }

    fn echo(&self, request: bool, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
        let ty = match (self.family(), request) {
            (Family::Ipv4, true) => 8,
            (Family::Ipv4, false) => 0,
            (Family::Ipv6, true) => 128,
            (Family::Ipv6, false) => 129,
        };
        let [a, b] = id.to_be_bytes();
        let [c, d] = seq.to_be_bytes();
        self.icmp(ty, 0, [a, b, c, d], payload)
    }

    /// ICMP echo request (type 8) or ICMPv6 echo request (128).
    pub fn echo_request(&self, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
        self.echo(true, id, seq, payload)
    }

    /// ICMP echo reply (type 0) or ICMPv6 echo reply (129).
    pub fn echo_reply(&self, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
        self.echo(false, id, seq, payload)
    }

    /// An ICMP/ICMPv6 error of `ty`/`code` about `orig` (L3 bytes of another
    /// built packet), embedding as much of it as a real stack would: up to a
    /// 576-byte (IPv4) or 1280-byte (IPv6) error. For a shorter embedding,
    /// pass a prefix of `orig`; for an MTU or pointer, use [`Builder::icmp`].
    pub fn icmp_error(&self, ty: u8, code: u8, orig: &[u8]) -> Vec<u8> {
        let max = match self.family() {
            Family::Ipv4 => 576,
            Family::Ipv6 => 1280,
        };
        let room = max - (self.raw(0, &[]).len() + 8).min(max);
        self.icmp(ty, code, [0; 4], &orig[..orig.len().min(room)])
    }
}

/// Wrap L3 bytes into an Ethernet II frame (locally administered MACs
/// 02:00:00:00:00:01 -> 02:00:00:00:00:02), padded to the 60-byte minimum.
/// The EtherType follows the IP version nibble.
pub fn ethernet(l3: &[u8]) -> Vec<u8> {
    ethernet_with([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], l3)
}

/// [`ethernet`] with explicit source and destination MACs.
pub fn ethernet_with(src: [u8; 6], dst: [u8; 6], l3: &[u8]) -> Vec<u8> {
    let ethertype: u16 = match l3.first().map(|v| v >> 4) {
        Some(6) => 0x86dd,
        _ => 0x0800,
    };
    let mut f = Vec::with_capacity(14 + l3.len().max(46));
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(l3);
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::tcp_flags::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        EthernetFrame, EthernetProtocol, Icmpv4Message, Icmpv4Packet, Icmpv6Message, Icmpv6Packet,
        IpAddress, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket, TcpRepr, UdpPacket,
    };

    fn a4() -> (Ipv4Addr, Ipv4Addr) {
        (
            "192.0.2.1".parse().unwrap(),
            "198.51.100.7".parse().unwrap(),
        )
    }
    fn a6() -> (Ipv6Addr, Ipv6Addr) {
        (
            "2001:db8::1".parse().unwrap(),
            "2001:db8:1::2".parse().unwrap(),
        )
    }

    #[test]
    fn udp_v4_checks_with_smoltcp() {
        let (s, d) = a4();
        for payload in [&b""[..], b"x", b"hello world", &[0xffu8; 333]] {
            let p = Builder::v4(s, d).udp(1234, 53, payload);
            let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
            assert!(ip.verify_checksum());
            assert_eq!(ip.next_header(), IpProtocol::Udp);
            assert_eq!((ip.src_addr(), ip.dst_addr(), ip.hop_limit()), (s, d, 64));
            assert_eq!(ip.total_len() as usize, p.len());
            let u = UdpPacket::new_checked(ip.payload()).unwrap();
            assert!(u.verify_checksum(&IpAddress::from(s), &IpAddress::from(d)));
            assert_ne!(u.checksum(), 0);
            assert_eq!(
                (u.src_port(), u.dst_port(), u.payload()),
                (1234, 53, payload)
            );
        }
    }

    #[test]
    fn udp_zero_and_bad_checksums() {
        let (s, d) = a4();
        let p = Builder::v4(s, d).udp_zero_checksum().udp(1, 2, b"abc");
        let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert_eq!(UdpPacket::new_checked(ip.payload()).unwrap().checksum(), 0);
        let p = Builder::v4(s, d).bad_l4_checksum().udp(1, 2, b"abc");
        let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert!(ip.verify_checksum());
        let u = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(!u.verify_checksum(&IpAddress::from(s), &IpAddress::from(d)));
        assert_ne!(u.checksum(), 0);
        let p = Builder::v4(s, d).bad_ip_checksum().udp(1, 2, b"abc");
        assert!(!Ipv4Packet::new_checked(&p[..]).unwrap().verify_checksum());
    }

    #[test]
    fn corrupt_never_matches() {
        for c in 0..=0xffffu16 {
            let x = corrupt(c);
            assert_ne!(x, c);
            assert!(x != 0 && x != 0xffff);
        }
    }

    #[test]
    fn tcp_v4_and_v6_check_with_smoltcp() {
        let seg = Tcp::new(40000, 443)
            .flags(SYN)
            .seq(0xdead_beef)
            .win(29200)
            .mss(1460)
            .wscale(7)
            .sack_perm();
        let (s, d) = a4();
        let p = Builder::v4(s, d).tcp(&seg);
        let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert!(ip.verify_checksum());
        let t = TcpPacket::new_checked(ip.payload()).unwrap();
        let (si, di) = (IpAddress::from(s), IpAddress::from(d));
        assert!(t.verify_checksum(&si, &di));
        let r = TcpRepr::parse(&t, &si, &di, &ChecksumCapabilities::default()).unwrap();
        assert_eq!((r.src_port, r.dst_port, r.window_len), (40000, 443, 29200));
        assert_eq!(r.seq_number.0 as u32, 0xdead_beef);
        assert_eq!(
            (r.window_scale, r.sack_permitted, r.max_seg_size),
            (Some(7), true, Some(1460))
        );
        assert!(t.syn() && !t.ack());

        let (s, d) = a6();
        let seg = Tcp::new(5, 6)
            .flags(ACK | PSH)
            .seq(1)
            .ack(2)
            .payload(b"GET / HTTP/1.1\r\n\r\n");
        let p = Builder::v6(s, d).tcp(&seg);
        let ip = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert_eq!(ip.next_header(), IpProtocol::Tcp);
        assert_eq!(ip.total_len(), p.len());
        let t = TcpPacket::new_checked(ip.payload()).unwrap();
        let (si, di) = (IpAddress::from(s), IpAddress::from(d));
        assert!(t.verify_checksum(&si, &di));
        assert_eq!(
            (t.ack_number().0, t.payload()),
            (2, &b"GET / HTTP/1.1\r\n\r\n"[..])
        );
        let p = Builder::v6(s, d).bad_l4_checksum().tcp(&seg);
        let ip = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert!(!TcpPacket::new_checked(ip.payload())
            .unwrap()
            .verify_checksum(&si, &di));
    }

    #[test]
    fn udp_v6_with_extension_headers() {
        let (s, d) = a6();
        let b = Builder::v6(s, d)
            .ext(Ext::HopByHop)
            .ext(Ext::Routing)
            .ext(Ext::Fragment {
                offset: 0,
                more: false,
            })
            .ext(Ext::Ah)
            .ext(Ext::DestOpts);
        let p = b.udp(7, 8, b"payload");
        let ip = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert_eq!(ip.next_header(), IpProtocol::HopByHop);
        assert_eq!(ip.total_len(), p.len());
        // Walk the chain by hand: 8 + 8 + 8 + 16 + 8 bytes of headers.
        let pl = ip.payload();
        assert_eq!((pl[0], pl[8], pl[16], pl[24], pl[40]), (43, 44, 51, 60, 17));
        let u = UdpPacket::new_checked(&pl[48..]).unwrap();
        assert!(u.verify_checksum(&IpAddress::from(s), &IpAddress::from(d)));
        assert_eq!(u.payload(), b"payload");
    }

    #[test]
    fn icmp_echo_v4_v6() {
        let (s, d) = a4();
        let p = Builder::v4(s, d).echo_request(0x77, 3, b"ping");
        let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert_eq!(ip.next_header(), IpProtocol::Icmp);
        let i = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(i.verify_checksum());
        assert_eq!(
            (i.msg_type(), i.echo_ident(), i.echo_seq_no()),
            (Icmpv4Message::EchoRequest, 0x77, 3)
        );
        let p = Builder::v4(d, s).echo_reply(0x77, 3, b"ping");
        let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
        let i = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(i.verify_checksum());
        assert_eq!(i.msg_type(), Icmpv4Message::EchoReply);

        let (s, d) = a6();
        for (req, ty) in [
            (true, Icmpv6Message::EchoRequest),
            (false, Icmpv6Message::EchoReply),
        ] {
            let b = Builder::v6(s, d);
            let p = if req {
                b.echo_request(9, 1, b"x")
            } else {
                b.echo_reply(9, 1, b"x")
            };
            let ip = Ipv6Packet::new_checked(&p[..]).unwrap();
            assert_eq!(ip.next_header(), IpProtocol::Icmpv6);
            let i = Icmpv6Packet::new_checked(ip.payload()).unwrap();
            assert!(i.verify_checksum(&s, &d));
            assert_eq!((i.msg_type(), i.echo_ident()), (ty, 9));
        }
        let p = Builder::v6(s, d).bad_l4_checksum().echo_request(9, 1, b"x");
        let ip = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert!(!Icmpv6Packet::new_checked(ip.payload())
            .unwrap()
            .verify_checksum(&s, &d));
    }

    #[test]
    fn icmp_errors_embed_original() {
        let (s, d) = a4();
        let orig = Builder::v4(s, d).udp(1000, 53, &[7; 1000]);
        let p = Builder::v4("203.0.113.9".parse().unwrap(), s).icmp_error(3, 1, &orig);
        assert_eq!(p.len(), 576);
        let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
        let i = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(i.verify_checksum());
        assert!(matches!(i.msg_type(), Icmpv4Message::DstUnreachable));
        assert_eq!(i.data(), &orig[..548]);

        let (s, d) = a6();
        let orig = Builder::v6(s, d).tcp(&Tcp::new(1, 2));
        let p = Builder::v6(d, s).icmp(2, 0, 1280u32.to_be_bytes(), &orig);
        let ip = Ipv6Packet::new_checked(&p[..]).unwrap();
        let i = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(i.verify_checksum(&d, &s));
        assert_eq!(i.msg_type(), Icmpv6Message::PktTooBig);
        assert_eq!(i.pkt_too_big_mtu(), 1280);
        assert_eq!(i.payload(), &orig[..]);
    }

    #[test]
    fn fragments_and_options_v4() {
        let (s, d) = a4();
        let p = Builder::v4(s, d)
            .ident(77)
            .fragment(1480, true)
            .udp(1, 2, b"x");
        let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(
            (ip.ident(), ip.more_frags(), ip.frag_offset()),
            (77, true, 1480)
        );
        let p = Builder::v4(s, d)
            .dont_frag()
            .v4_options(&[1, 1, 1])
            .udp(1, 2, b"x");
        let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert!(ip.verify_checksum() && ip.dont_frag() && !ip.more_frags());
        assert_eq!(ip.header_len(), 24);
        let u = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(u.verify_checksum(&IpAddress::from(s), &IpAddress::from(d)));
    }

    #[test]
    fn ethernet_frames() {
        let (s, d) = a4();
        let f = ethernet(&Builder::v4(s, d).udp(1, 2, b""));
        assert_eq!(f.len(), 60);
        let e = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(e.ethertype(), EthernetProtocol::Ipv4);
        let (s, d) = a6();
        let l3 = Builder::v6(s, d).udp(1, 2, b"");
        let f = ethernet_with([2, 0, 0, 0, 0, 9], [0xff; 6], &l3);
        let e = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(e.ethertype(), EthernetProtocol::Ipv6);
        assert_eq!(e.payload(), &l3[..]);
        assert_eq!(e.src_addr().as_bytes(), &[2, 0, 0, 0, 0, 9]);
    }
}
