//! The Internet checksum (ones' complement sum of 16-bit words): full
//! computation and incremental updates.
//!
//! Header rewrites (set_field on addresses, ports, TTL) patch the existing
//! checksum from the old and new field values instead of summing the whole
//! header or segment again: `HC' = ~(~HC + ~m + m')` for each changed 16-bit
//! word `m -> m'` (RFC 1624, equation 3), which never produces the `-0`
//! pitfall of the older formula. Wider fields are treated as runs of
//! 16-bit words at even offsets.
//!
//! UDP over IPv4 uses checksum 0 for "none": a caller updating a UDP
//! checksum leaves a zero alone, and writes 0xffff if an update yields 0.

/// Ones'-complement sum of `data` as big-endian 16-bit words (an odd final
/// byte is padded with zero), added to `sum`; not folded (it accumulates
/// 32-bit words, which is the same sum once folded). Sums of several slices
/// chain as long as every slice but the last has even length.
#[inline]
pub fn sum(mut sum: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        sum += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        sum += u64::from(u16::from_be_bytes([rest[i], rest[i + 1]]));
        i += 2;
    }
    if i < rest.len() {
        sum += u64::from(rest[i]) << 8;
    }
    sum
}

/// Fold a sum to 16 bits and complement it: the checksum field value.
#[inline]
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The checksum of `data`.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    fold(sum(0, data))
}

/// Sum of the IPv4 pseudo-header for an L4 segment of `l4_len` bytes.
#[inline]
pub fn pseudo_header_v4(src: [u8; 4], dst: [u8; 4], proto: u8, l4_len: u16) -> u64 {
    let s = sum(0, &src);
    let s = sum(s, &dst);
    s + u64::from(proto) + u64::from(l4_len)
}

/// Sum of the IPv6 pseudo-header for an upper-layer packet of `l4_len`
/// bytes.
#[inline]
pub fn pseudo_header_v6(src: [u8; 16], dst: [u8; 16], next_header: u8, l4_len: u32) -> u64 {
    let s = sum(0, &src);
    let s = sum(s, &dst);
    s + u64::from(next_header) + u64::from(l4_len >> 16) + u64::from(l4_len & 0xffff)
}

/// Update checksum `csum` for one 16-bit word changing from `old` to `new`.
#[inline]
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    let s = u64::from(!csum) + u64::from(!old) + u64::from(new);
    fold(s)
}

/// Update `csum` for a 32-bit field (e.g. an IPv4 address) at an even
/// offset changing from `old` to `new`.
#[inline]
pub fn update32(csum: u16, old: u32, new: u32) -> u16 {
    let s = u64::from(!csum)
        + u64::from(!(old >> 16) as u16)
        + u64::from(!(old as u16))
        + u64::from((new >> 16) as u16)
        + u64::from(new as u16);
    fold(s)
}

/// Update `csum` for a field at an even offset changing from `old` to
/// `new` (equal lengths; e.g. an IPv6 address or a MAC-sized field). Does
/// nothing if the lengths differ.
#[inline]
pub fn update_bytes(csum: u16, old: &[u8], new: &[u8]) -> u16 {
    if old.len() != new.len() {
        return csum;
    }
    // ~old summed word by word equals (words * 0xffff) - sum(old); adding
    // the complement of each word keeps everything non-negative.
    let mut s = u64::from(!csum);
    let mut o = old.chunks(2);
    for n in new.chunks(2) {
        let ow = o.next().unwrap_or(&[]);
        let word = |c: &[u8]| match c {
            [a, b] => u16::from_be_bytes([*a, *b]),
            [a] => u16::from(*a) << 8,
            _ => 0,
        };
        s += u64::from(!word(ow)) + u64::from(word(n));
    }
    fold(s)
}

/// Finish an L4 checksum a sender left partial (Linux `CHECKSUM_PARTIAL`:
/// the TCP/UDP checksum field holds the folded pseudo-header sum and the
/// device is to sum the segment and store the complement). Handles Ethernet
/// with up to two VLAN tags, IPv4 (not fragments) and IPv6 without
/// extension headers, TCP and UDP. Returns whether a checksum was written.
pub fn complete_partial_l4(frame: &mut [u8]) -> bool {
    let be16 = |f: &[u8], at: usize| u16::from_be_bytes([f[at], f[at + 1]]);
    if frame.len() < 14 {
        return false;
    }
    let mut ofs = 14;
    let mut ethertype = be16(frame, 12);
    for _ in 0..2 {
        if (ethertype == 0x8100 || ethertype == 0x88a8) && frame.len() >= ofs + 4 {
            ethertype = be16(frame, ofs + 2);
            ofs += 4;
        }
    }
    let (proto, l4, end) = match ethertype {
        0x0800 if frame.len() >= ofs + 20 => {
            let ihl = usize::from(frame[ofs] & 0x0f) * 4;
            let total = usize::from(be16(frame, ofs + 2));
            let frag = be16(frame, ofs + 6) & 0x3fff;
            if ihl < 20 || total < ihl || frag != 0 {
                return false;
            }
            (frame[ofs + 9], ofs + ihl, ofs + total)
        }
        0x86dd if frame.len() >= ofs + 40 => (
            frame[ofs + 6],
            ofs + 40,
            ofs + 40 + usize::from(be16(frame, ofs + 4)),
        ),
        _ => return false,
    };
    let field = match proto {
        6 => 16,
        17 => 6,
        _ => return false,
    };
    if end > frame.len() || l4 + field + 2 > end {
        return false;
    }
    let mut c = checksum(&frame[l4..end]);
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    frame[l4 + field..l4 + field + 2].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {

    /// A frame whose L4 checksum field holds only the folded pseudo-header
    /// sum, as Linux leaves it with transmit offload.
    fn partial(frame: &[u8], l4: usize, field: usize, pseudo: u64) -> Vec<u8> {
        let mut f = frame.to_vec();
        let folded = !fold(pseudo);
        f[l4 + field..l4 + field + 2].copy_from_slice(&folded.to_be_bytes());
        f
    }

    #[test]
    fn partial_checksums_are_completed_like_a_nic_would() {
        use crate::port::generator::{client_of, tcp4_frame, udp4_frame, Endpoint};
        let srv = Endpoint {
            mac: [2, 0, 0, 0, 0, 2],
            ip: [172, 16, 0, 1],
            port: 80,
        };
        for (frame, proto, field) in [
            (udp4_frame(90, &client_of(7), &srv), 17u8, 6usize),
            (tcp4_frame(120, &client_of(9), &srv, 1000, 5, 0x18), 6, 16),
        ] {
            let l4_len = u16::from_be_bytes([frame[16], frame[17]]) - 20;
            let src: [u8; 4] = frame[26..30].try_into().unwrap();
            let dst: [u8; 4] = frame[30..34].try_into().unwrap();
            let mut f = partial(&frame, 34, field, pseudo_header_v4(src, dst, proto, l4_len));
            assert_ne!(f, frame);
            assert!(complete_partial_l4(&mut f));
            assert_eq!(
                f, frame,
                "proto {proto}: completed checksum equals the full one"
            );
        }
        // Not IP, fragments, other protocols, truncation: left alone.
        let mut arp = vec![0u8; 60];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(!complete_partial_l4(&mut arp));
        let mut frag = udp4_frame(90, &client_of(7), &srv);
        frag[20] = 0x20; // more fragments
        assert!(!complete_partial_l4(&mut frag));
        let mut short = udp4_frame(90, &client_of(7), &srv);
        short.truncate(40);
        assert!(!complete_partial_l4(&mut short));
    }

    use super::*;
    use proptest::prelude::*;

    /// An IPv4 header with a valid checksum (verified with smoltcp).
    fn ipv4_header(src: [u8; 4], dst: [u8; 4], ttl: u8) -> [u8; 20] {
        let mut h = [0u8; 20];
        h[0] = 0x45;
        h[2..4].copy_from_slice(&20u16.to_be_bytes());
        h[8] = ttl;
        h[9] = 6;
        h[12..16].copy_from_slice(&src);
        h[16..20].copy_from_slice(&dst);
        let c = checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h
    }

    #[test]
    fn full_checksum_matches_smoltcp_and_verifies_to_zero() {
        let h = ipv4_header([10, 0, 0, 1], [172, 16, 0, 1], 64);
        let p = smoltcp::wire::Ipv4Packet::new_checked(&h[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(fold(sum(0, &h)), 0, "a valid header sums to 0xffff");
    }

    #[test]
    fn odd_lengths_pad_the_last_byte() {
        // Sums are compared folded: wider accumulation is equivalent
        // modulo 0xffff.
        assert_eq!(checksum(&[0x12]), !0x1200);
        assert_eq!(checksum(&[0x12, 0x34, 0x56]), !(0x1234 + 0x5600));
        assert_eq!(checksum(&[1, 2, 3, 4, 5, 6]), !(0x0102 + 0x0304 + 0x0506));
        assert_eq!(
            checksum(&[0xff, 0xff, 0x00, 0x01]),
            !0x0001,
            "end-around carry"
        );
    }

    #[test]
    fn pseudo_header_sums_build_valid_l4_checksums() {
        use smoltcp::wire::{IpAddress, Ipv4Address, Ipv6Address, UdpPacket};
        let mut udp = [0u8; 12];
        udp[0..2].copy_from_slice(&1234u16.to_be_bytes());
        udp[2..4].copy_from_slice(&53u16.to_be_bytes());
        udp[4..6].copy_from_slice(&12u16.to_be_bytes());
        udp[8..12].copy_from_slice(b"abcd");
        let (s4, d4) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let c = fold(sum(pseudo_header_v4(s4, d4, 17, 12), &udp));
        udp[6..8].copy_from_slice(&c.to_be_bytes());
        let p = UdpPacket::new_checked(&udp[..]).unwrap();
        assert!(p.verify_checksum(
            &IpAddress::Ipv4(Ipv4Address::from(s4)),
            &IpAddress::Ipv4(Ipv4Address::from(d4))
        ));
        let (s6, d6) = ([0xfd; 16], [0x20; 16]);
        udp[6..8].fill(0);
        let c = fold(sum(pseudo_header_v6(s6, d6, 17, 12), &udp));
        udp[6..8].copy_from_slice(&c.to_be_bytes());
        let p = UdpPacket::new_checked(&udp[..]).unwrap();
        assert!(p.verify_checksum(
            &IpAddress::Ipv6(Ipv6Address::from(s6)),
            &IpAddress::Ipv6(Ipv6Address::from(d6))
        ));
    }

    proptest! {
        /// Incremental updates agree with recomputing the whole header.
        #[test]
        fn incremental_equals_full_recompute(
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), ttl in any::<u8>(),
            new_src in any::<[u8; 4]>(), new_ttl in any::<u8>(),
        ) {
            let h = ipv4_header(src, dst, ttl);
            let csum = u16::from_be_bytes([h[10], h[11]]);

            // TTL lives in the word (ttl, proto).
            let c1 = update16(csum, u16::from_be_bytes([ttl, 6]), u16::from_be_bytes([new_ttl, 6]));
            let c2 = update32(c1, u32::from_be_bytes(src), u32::from_be_bytes(new_src));
            let want = ipv4_header(new_src, dst, new_ttl);
            prop_assert_eq!(c2, u16::from_be_bytes([want[10], want[11]]));

            let c3 = update_bytes(csum, &src, &new_src);
            let want = ipv4_header(new_src, dst, ttl);
            prop_assert_eq!(c3, u16::from_be_bytes([want[10], want[11]]));
        }

        /// Updating an IPv6-address-sized field in a buffer agrees with a
        /// full recompute of that buffer.
        #[test]
        fn incremental_bytes_over_wide_fields(
            mut buf in proptest::collection::vec(any::<u8>(), 40..41),
            new in any::<[u8; 16]>(),
        ) {
            let csum = checksum(&buf);
            let old: Vec<u8> = buf[8..24].to_vec();
            buf[8..24].copy_from_slice(&new);
            let got = update_bytes(csum, &old, &new);
            // 0x0000 and 0xffff are the same ones'-complement value.
            let want = checksum(&buf);
            prop_assert!(got == want || (got, want) == (0xffff, 0) || (got, want) == (0, 0xffff),
                "got {:#x} want {:#x}", got, want);
        }
    }
}
